/* dosql — the command-line shell for dosqld.
 *
 *   dosql [URL] [-c SQL]... [-f FILE] [--json|--csv] [--token TOKEN]
 *
 * Divisions: usage and arguments; SIGINT; input sources (a FILE, -c text,
 * the terminal through libedit with history); main.
 *
 * Exit status: 0 success, 1 a statement failed, 2 usage error, 3 the
 * server could not be reached. Scripts (stdin that is not a terminal,
 * -f, -c) stop at the first error. */
#include <editline/readline.h>
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "client/complete.h"
#include "client/format.h"
#include "client/http.h"
#include "client/shell.h"

#define DEFAULT_URL "http://127.0.0.1:8787/v1/db/main"
#define HISTORY_FILE ".dosql_history"
#define HISTORY_MAX 1000

/* ---- usage and arguments ----------------------------------------------------------- */

static const char usage_text[] =
    "usage: dosql [URL] [-c SQL]... [-f FILE] [--json|--csv] [--token TOKEN]\n"
    "\n"
    "The SQL shell for dosqld. URL is http://HOST:PORT/v1/db/NAME (default\n"
    "$DOSQL_URL, else " DEFAULT_URL ").\n"
    "\n"
    "  -c SQL          run SQL (several statements, dot commands) and exit; repeatable\n"
    "  -f FILE         run the statements in FILE and exit\n"
    "      --json      print rows as JSON lines, one object per row\n"
    "      --csv       print rows as CSV (RFC 4180) with a header row (.headers on)\n"
    "      --token T   bearer token (default $DOSQL_TOKEN)\n"
    "  -h, --help      show this help\n"
    "      --version   show the version\n"
    "\n"
    "Without -c or -f, statements come from the terminal (with line editing and\n"
    "history in ~/" HISTORY_FILE "), or from stdin when it is not a terminal.\n"
    "Scripts stop at the first error. Exit status: 0 success, 1 a statement\n"
    "failed, 2 usage error, 3 the server could not be reached. Type .help in\n"
    "the shell for its commands.\n";

/* What the command line asked for. */
typedef struct options {
    const char *url;   /* positional URL, or NULL */
    const char *token; /* --token, or NULL */
    const char *file;  /* -f FILE, or NULL */
    const char **cmds; /* owned array (not the strings): each -c in order */
    size_t ncmds;      /* entries in cmds */
    dosql_mode mode;   /* --json, --csv, or the table */
} options;

/* "dosql: <message>" and a pointer to --help on stderr; returns 2. */
static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "dosql: %s%s%s\nTry 'dosql --help'.\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* Fill o from argv. Returns -1 to go on, or an exit status (0 after
 * --help/--version, 2 for a usage error). */
static int parse_args(int argc, char **argv, options *o)
{
    enum { OPT_JSON = 256, OPT_CSV, OPT_TOKEN, OPT_VERSION };
    static const struct option longopts[] = {
        {"command", required_argument, NULL, 'c'}, {"file", required_argument, NULL, 'f'},
        {"json", no_argument, NULL, OPT_JSON},     {"csv", no_argument, NULL, OPT_CSV},
        {"token", required_argument, NULL, OPT_TOKEN}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION}, {NULL, 0, NULL, 0},
    };
    bool json = false, csv = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': {
            const char **cmds = realloc(o->cmds, (o->ncmds + 1) * sizeof *cmds);
            if (cmds == NULL)
                return usage_error("out of memory", NULL);
            o->cmds = cmds;
            o->cmds[o->ncmds++] = optarg;
            break;
        }
        case 'f':
            if (o->file != NULL)
                return usage_error("-f may be given once", NULL);
            o->file = optarg;
            break;
        case OPT_JSON: json = true; break;
        case OPT_CSV: csv = true; break;
        case OPT_TOKEN: o->token = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("dosql %s\n", DSQ_VERSION); return 0;
        case ':': return usage_error("option needs an argument", argv[optind - 1]);
        default: {
            char opt[3] = {'-', (char)optopt, '\0'};
            return usage_error("unknown option", optopt ? opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        o->url = argv[optind++];
    if (optind < argc)
        return usage_error("unexpected argument", argv[optind]);
    if (json && csv)
        return usage_error("--json and --csv exclude each other", NULL);
    if (o->file != NULL && o->ncmds > 0)
        return usage_error("-c and -f exclude each other", NULL);
    o->mode = json ? DOSQL_MODE_JSON : csv ? DOSQL_MODE_CSV : DOSQL_MODE_TABLE;
    return -1;
}

/* A token must be printable ASCII without blanks (it goes in a header). */
static bool token_ok(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
            return false;
    return true;
}

/* ---- SIGINT ------------------------------------------------------------------------ */

/* Set by SIGINT; the transport aborts a request in flight when it is set. */
static volatile sig_atomic_t interrupted;
/* In a script, a second SIGINT ends the process (it may be blocked
 * reading input, where the first one is not noticed). */
static volatile sig_atomic_t in_script;

/* Record the interrupt; a repeated one in a script kills the process. */
static void on_sigint(int sig)
{
    if (in_script && interrupted) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    interrupted = 1;
}

/* Catch SIGINT with SA_RESTART: reads and the line editor carry on, and
 * the request in flight (if any) is abandoned. */
static void catch_sigint(bool script)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    in_script = script;
    sigaction(SIGINT, &sa, NULL);
}

/* ---- input sources ----------------------------------------------------------------- */

/* Feed every line of f to the shell, then the end. Returns 0, or -1 when
 * the shell stopped. */
static int run_stream(dosql_shell *sh, FILE *f, const char *name)
{
    int rc = dosql_shell_feed(sh, f);
    if (rc == -2) {
        fprintf(stderr, "Error: cannot read %s: %s\n", name, strerror(errno));
        sh->status = 1;
        rc = -1;
    }
    return rc == 0 ? dosql_shell_end(sh) : rc;
}

/* Feed the text of one -c, line by line, then the end. */
static int run_text(dosql_shell *sh, const char *text)
{
    int rc = 0;
    while (rc == 0 && *text != '\0') {
        size_t n = strcspn(text, "\n");
        size_t len = n > 0 && text[n - 1] == '\r' ? n - 1 : n;
        rc = dosql_shell_line(sh, text, len);
        text += n + (text[n] == '\n');
    }
    return rc == 0 ? dosql_shell_end(sh) : rc;
}

/* ~/.dosql_history (malloc'd), or NULL without a home directory. */
static char *history_path(void)
{
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0') {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    char *path = NULL;
    if (home == NULL || asprintf(&path, "%s/%s", home, HISTORY_FILE) < 0)
        return NULL;
    return path;
}

/* Tab completion: libedit's readline calls on_complete with the word
 * before the cursor; the choices are made at once (dosql_complete) and
 * handed out one at a time by next_choice. */
static dosql_shell *completing;   /* the shell Tab completes for */
static dosql_completion choices;  /* the last Tab's */
static size_t next_choice_at;

static char *next_choice(const char *text, int state)
{
    (void)text;
    if (state == 0)
        next_choice_at = 0;
    return next_choice_at < choices.n ? strdup(choices.items[next_choice_at++]) : NULL;
}

static char **on_complete(const char *text, int start, int end)
{
    dosql_completion_free(&choices);
    rl_attempted_completion_over = 1; /* (nothing else than what is offered here) */
    if (start < 0 || end < start || rl_line_buffer == NULL)
        return NULL;
    const dosql_names *names = dosql_shell_names(completing);
    if (dosql_complete(rl_line_buffer, (size_t)start, (size_t)end, dosql_shell_continuing(completing), names,
                       &choices) != 0)
        return NULL;
    if (choices.files) {
        rl_attempted_completion_over = 0; /* the line editor's file names */
        return NULL;
    }
    return choices.n > 0 ? rl_completion_matches(text, next_choice) : NULL;
}

/* The terminal: prompts, libedit line editing, history kept in
 * ~/.dosql_history (created private: statements may hold secrets), Tab
 * completion. */
static void run_terminal(dosql_shell *sh, const char *base)
{
    printf("dosql %s on %s\nStatements end with ';'. Enter .help for the commands.\n",
           DSQ_VERSION, base);
    char *hist = history_path();
    rl_readline_name = "dosql";
    completing = sh;
    rl_attempted_completion_function = on_complete;
    using_history();
    stifle_history(HISTORY_MAX);
    if (hist != NULL)
        read_history(hist);
    for (;;) {
        const char *prompt = dosql_shell_continuing(sh) ? "   ...> "
                             : dosql_shell_in_txn(sh) ? "dosql*> "
                                                      : "dosql> ";
        char *line = readline(prompt);
        if (line == NULL && interrupted) {
            /* Ctrl-C at the prompt: drop the input typed so far. */
            interrupted = 0;
            dosql_shell_discard(sh);
            putchar('\n');
            continue;
        }
        if (line == NULL) {
            putchar('\n');
            break;
        }
        interrupted = 0;
        if (line[strspn(line, " \t")] != '\0')
            add_history(line);
        int rc = dosql_shell_line(sh, line, strlen(line));
        free(line);
        if (rc != 0)
            break;
    }
    if (hist != NULL) {
        int fd = open(hist, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
        write_history(hist);
        free(hist);
    }
    clear_history();
    dosql_completion_free(&choices);
}

/* ---- main -------------------------------------------------------------------------- */

/* Arguments, the URL and token, then one input source through the shell;
 * the exit status is the shell's (0 for an interactive session). */
int main(int argc, char **argv)
{
    options o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) {
        free(o.cmds);
        return rc;
    }
    const char *url = o.url;
    if (url == NULL)
        url = getenv("DOSQL_URL");
    if (url == NULL || url[0] == '\0')
        url = DEFAULT_URL;
    const char *token = o.token ? o.token : getenv("DOSQL_TOKEN");
    char why[256];
    char *base = dosql_http_parse_url(url, why, sizeof why);
    if (base == NULL || (token != NULL && !token_ok(token))) {
        free(base);
        free(o.cmds);
        if (base == NULL)
            fprintf(stderr, "dosql: bad URL '%s': %s\nTry 'dosql --help'.\n", url, why);
        return base ? usage_error("the token holds blanks or control characters", NULL) : 2;
    }
    FILE *in = stdin;
    if (o.file != NULL && strcmp(o.file, "-") != 0 && (in = fopen(o.file, "r")) == NULL) {
        fprintf(stderr, "dosql: cannot open %s: %s\n", o.file, strerror(errno));
        free(base);
        free(o.cmds);
        return 2;
    }
    bool interactive = o.ncmds == 0 && o.file == NULL && isatty(STDIN_FILENO);

    dosql_http http;
    dosql_shell sh;
    int status = 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "dosql: cannot initialize libcurl\n");
        status = 1;
        goto err_after_file;
    }
    if (dosql_http_open(&http, base, token, &interrupted) != 0) {
        fprintf(stderr, "dosql: out of memory\n");
        status = 1;
        goto err_after_http;
    }
    catch_sigint(!interactive);
    dosql_shell_init(&sh, &http, stdout, o.mode, !interactive);
    /* --csv has always written the header row (CSV that .import reads
     * back); .mode csv in the shell starts without one, as in sqlite3. */
    sh.headers = o.mode == DOSQL_MODE_CSV;
    if (o.ncmds > 0) {
        for (size_t i = 0; i < o.ncmds && run_text(&sh, o.cmds[i]) == 0; i++)
            ;
    } else if (interactive) {
        run_terminal(&sh, base);
    } else {
        run_stream(&sh, in, o.file ? o.file : "stdin");
    }
    interrupted = 0; /* let the rollback of an open transaction through */
    dosql_shell_close(&sh);
    status = interactive ? 0 : sh.status;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "dosql: cannot write the output: %s\n", strerror(errno));
        status = status ? status : 1;
    }
err_after_http:
    dosql_http_close(&http);
    curl_global_cleanup();
err_after_file:
    if (in != stdin)
        fclose(in);
    free(base);
    free(o.cmds);
    return status;
}
