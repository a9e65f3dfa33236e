/* cli_cluster — `dosqld cluster status` (cli_cluster.h).
 *
 *   dosqld cluster status [--url URL | -c FILE] [--token TOKEN]
 *                         [--database NAME] [--json]
 *
 * It asks one node (GET /v1/cluster) and prints what that node knows:
 * the nodes, whether it reaches each, with [cluster] etcd whether etcd
 * shows each alive and what each holds, how far each is behind on the
 * databases that node is the primary of, and the failovers it made.
 * Another node may know otherwise (a node cut off from the others sees
 * them unreachable): ask several when they disagree.
 *
 * The node is the one --url names, else the first listener of the
 * configuration file -c gives (the same file the node runs with, read
 * for server.listen only), else http://127.0.0.1:8787, dosqld's default.
 *
 * Divisions: the URL; rendering (pure); one GET; main. */
#include "server/cli_cluster.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cluster/cluster.h"
#include "common/net.h"
#include "common/util.h"
#include "server/config.h"

#define DEFAULT_BASE "http://127.0.0.1:8787"
#define ANSWER_MAX (64u << 20) /* bytes of an answer read at most (64 nodes' are a few KiB) */

/* ---- the URL ----------------------------------------------------------------------- */

int dsq_cli_listen_base(const char *listen, bool tls, char *out, size_t cap, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (dsq_parse_addr(listen, &ss) != 0) {
        snprintf(err, errlen, "'%s' is not HOST:PORT", listen);
        return -1;
    }
    const char *colon = strrchr(listen, ':'); /* (there is one: it parsed) */
    uint64_t port = 0;
    if (dsq_parse_u64(colon + 1, &port) != 0 || port == 0) {
        snprintf(err, errlen, "'%s' listens on a port chosen at start: give --url", listen);
        return -1;
    }
    /* A wildcard listener takes connections to loopback too. */
    size_t hl = (size_t)(colon - listen);
    const char *host = listen;
    if (hl == 7 && strncmp(listen, "0.0.0.0", 7) == 0)
        host = "127.0.0.1", hl = 9;
    else if (ss.ss_family == AF_INET6 && hl == 4 && strncmp(listen, "[::]", 4) == 0)
        host = "[::1]", hl = 5;
    if (snprintf(out, cap, "%s://%.*s%s", tls ? "https" : "http", (int)hl, host, colon) >= (int)cap) {
        snprintf(err, errlen, "'%s' is too long", listen);
        return -1;
    }
    return 0;
}

int dsq_cli_cluster_url(const char *base, const char *db, char *out, size_t cap, char *err, size_t errlen)
{
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
        snprintf(err, errlen, "'%s' is not an http:// or https:// URL", base);
        return -1;
    }
    const char *auth = strstr(base, "://") + 3;
    if (*auth == '\0' || *auth == '/' || strpbrk(base, "?#") != NULL) {
        snprintf(err, errlen, "'%s': the form is http://HOST:PORT (no query string or fragment)", base);
        return -1;
    }
    if (db != NULL && !dsq_db_name_valid(db)) {
        snprintf(err, errlen, "'%s' is not a database name", db);
        return -1;
    }
    /* The node's address, or the route itself: both name the same. */
    size_t n = strlen(base);
    for (int i = 0; i < 64 && n > 0 && base[n - 1] == '/'; i++)
        n--;
    const char *route = "/v1/cluster";
    if (n >= strlen(route) && strncmp(base + n - strlen(route), route, strlen(route)) == 0)
        route = "";
    else if (strchr(auth, '/') != NULL && strchr(auth, '/') < base + n) {
        snprintf(err, errlen, "'%s': the form is http://HOST:PORT (or .../v1/cluster)", base);
        return -1;
    }
    if (snprintf(out, cap, "%.*s%s%s%s", (int)n, base, route, db != NULL ? "?database=" : "", db != NULL ? db : "") >=
        (int)cap) {
        snprintf(err, errlen, "the URL is too long");
        return -1;
    }
    return 0;
}

/* ---- rendering ----------------------------------------------------------------------- */

/* A table of text cells, printed with each column as wide as its widest
 * cell. Nodes are at most DSQ_NODES_MAX, plus the header. */
#define TABLE_ROWS (DSQ_NODES_MAX + 1)
#define TABLE_COLS 8
#define CELL 96 /* a node's address is under 80 bytes */

typedef struct table {
    char cell[TABLE_ROWS][TABLE_COLS][CELL];
    size_t rows, cols;
} table;

static void cell_set(table *t, size_t col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Set cell col of the last row. */
static void cell_set(table *t, size_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->cell[t->rows - 1][col], CELL, fmt, ap);
    va_end(ap);
}

/* Each row indented by two spaces, columns two spaces apart, no
 * trailing blanks. */
static void table_print(const table *t, dsq_buf *out)
{
    size_t w[TABLE_COLS] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols; c++)
            if (strlen(t->cell[r][c]) > w[c])
                w[c] = strlen(t->cell[r][c]);
    for (size_t r = 0; r < t->rows; r++) {
        dsq_buf_puts(out, " ");
        for (size_t c = 0; c < t->cols; c++) {
            if (c + 1 == t->cols)
                dsq_buf_printf(out, " %s", t->cell[r][c]);
            else
                dsq_buf_printf(out, " %-*s", (int)w[c] + 1, t->cell[r][c]);
        }
        dsq_buf_puts(out, "\n");
    }
}

/* The string at key, or dflt (absent, null, not a string). */
static const char *str_at(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : dflt;
}

/* The non-negative integer at key, or 0 with *ok false. */
static unsigned long long num_at(const json_t *o, const char *key, bool *ok)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        if (ok != NULL)
            *ok = false;
        return 0;
    }
    return (unsigned long long)json_integer_value(v);
}

static bool bool_at(const json_t *o, const char *key) { return json_is_true(json_object_get(o, key)); }

/* 512 B, 12.0 KiB, 3.4 MiB, ... */
static void human_bytes(unsigned long long n, char *out, size_t cap)
{
    static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (n < 1024) {
        snprintf(out, cap, "%llu B", n);
        return;
    }
    double v = (double)n / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof unit / sizeof unit[0])
        v /= 1024, u++;
    snprintf(out, cap, "%.1f %s", v, unit[u]);
}

/* The nodes' table; `self` gets the id of the node that answered. */
static void render_nodes(const json_t *nodes, bool with_etcd, table *t, const char **self)
{
    static const char *const head_etcd[] = {"NODE", "ADDRESS", "REACHABLE", "ETCD",
                                            "LOAD", "COPIES",  "PRIMARIES", "LAG"};
    static const char *const head[] = {"NODE", "ADDRESS", "REACHABLE", "LAG"};
    t->cols = with_etcd ? 8 : 4;
    t->rows = 1;
    for (size_t c = 0; c < t->cols; c++)
        cell_set(t, c, "%s", with_etcd ? head_etcd[c] : head[c]);
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        if (t->rows == TABLE_ROWS)
            break;
        t->rows++;
        size_t c = 0;
        bool is_self = bool_at(n, "self");
        if (is_self)
            *self = str_at(n, "id", "?");
        cell_set(t, c++, "%s", str_at(n, "id", "?"));
        cell_set(t, c++, "%s", str_at(n, "address", "-"));
        cell_set(t, c++, "%s", is_self ? "self" : bool_at(n, "reachable") ? "yes" : "no");
        if (with_etcd) {
            json_t *e = json_object_get(n, "etcd");
            json_t *load = json_object_get(e, "load");
            bool ok = json_is_object(e) && json_is_object(load);
            unsigned long long dbs = num_at(load, "dbs", &ok), bytes = num_at(load, "bytes", &ok);
            unsigned long long copies = num_at(e, "copies", &ok), primaries = num_at(e, "primaries", &ok);
            char hb[32];
            human_bytes(bytes, hb, sizeof hb);
            cell_set(t, c++, "%s", !json_is_object(e) ? "?" : bool_at(e, "alive") ? "alive" : "gone");
            if (ok) {
                cell_set(t, c++, "%llu db%s, %s", dbs, dbs == 1 ? "" : "s", hb);
                cell_set(t, c++, "%llu", copies);
                cell_set(t, c++, "%llu", primaries);
            } else {
                for (int k = 0; k < 3; k++)
                    cell_set(t, c++, "?");
            }
        }
        bool ok = true;
        unsigned long long lsn = num_at(n, "lagLSN", &ok), ms = num_at(n, "lagMs", &ok);
        if (is_self)
            cell_set(t, c, "-");
        else if (!ok)
            cell_set(t, c, "?");
        else if (lsn == 0 && ms == 0)
            cell_set(t, c, "0");
        else
            cell_set(t, c, "%llu commit%s, %llu ms", lsn, lsn == 1 ? "" : "s", ms);
    }
}

static void render_etcd(const json_t *doc, dsq_buf *out)
{
    json_t *e = json_object_get(doc, "etcd");
    bool ok = true;
    unsigned long long assignments = num_at(e, "assignments", &ok);
    dsq_buf_printf(out, "etcd: %s, %s, %s, %llu assignment%s%s\n", bool_at(e, "up") ? "up" : "not answering",
                   bool_at(e, "registered") ? "registered" : "not registered",
                   bool_at(e, "viewWhole") ? "every node seen" : "the nodes not all seen yet", assignments,
                   assignments == 1 ? "" : "s",
                   bool_at(e, "assignmentsLoaded") ? "" : " (not all read yet)");
    json_t *f = json_object_get(e, "failover");
    dsq_buf_printf(out, "failovers by this node: %llu attempted, %llu won, %llu lost, %llu promoted, %llu failed\n",
                   num_at(f, "attempts", NULL), num_at(f, "won", NULL), num_at(f, "lost", NULL),
                   num_at(f, "promoted", NULL), num_at(f, "failed", NULL));
    json_t *list = json_object_get(doc, "failovers");
    if (json_array_size(list) == 0) {
        dsq_buf_puts(out, "recent failovers by this node: none\n");
        return;
    }
    dsq_buf_puts(out, "recent failovers by this node, newest first:\n");
    size_t i;
    json_t *r;
    json_array_foreach(list, i, r) {
        if (i == DSQ_FAILOVER_RECENT)
            break;
        dsq_buf_printf(out, "  %s  %s  %s -> %s  epoch %llu  took %llu ms\n", str_at(r, "at", "?"),
                       str_at(r, "database", "?"), str_at(r, "from", "-"), str_at(r, "to", "?"),
                       num_at(r, "epoch", NULL), num_at(r, "tookMs", NULL));
    }
}

static void render_database(const json_t *d, table *t, dsq_buf *out)
{
    const char *primary = str_at(d, "primary", NULL);
    if (primary != NULL)
        dsq_buf_printf(out, "database %s: primary %s, epoch %llu\n", str_at(d, "name", "?"), primary,
                       num_at(d, "epoch", NULL));
    else
        dsq_buf_printf(out, "database %s: no primary known here\n", str_at(d, "name", "?"));
    json_t *copies = json_object_get(d, "copies");
    if (json_array_size(copies) == 0) {
        dsq_buf_puts(out, "  no copies known here\n");
        return;
    }
    static const char *const head[] = {"NODE", "ROLE", "DURABLE LSN", "APPLIED LSN"};
    t->cols = 4;
    t->rows = 1;
    for (size_t c = 0; c < t->cols; c++)
        cell_set(t, c, "%s", head[c]);
    size_t i;
    json_t *cp;
    json_array_foreach(copies, i, cp) {
        if (t->rows == TABLE_ROWS)
            break;
        t->rows++;
        cell_set(t, 0, "%s", str_at(cp, "node", "?"));
        cell_set(t, 1, "%s", str_at(cp, "role", "?"));
        cell_set(t, 2, "%llu", num_at(cp, "durableLSN", NULL));
        cell_set(t, 3, "%llu", num_at(cp, "appliedLSN", NULL));
    }
    table_print(t, out);
}

int dsq_cli_cluster_render(const json_t *doc, dsq_buf *out, char *err, size_t errlen)
{
    json_t *nodes = json_object_get(doc, "nodes");
    if (!json_is_array(nodes)) {
        snprintf(err, errlen, "the answer has no \"nodes\" array: not GET /v1/cluster's");
        return -1;
    }
    table *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t before = out->len;
    json_t *first = json_array_get(nodes, 0);
    bool alone = json_array_size(nodes) == 1 && json_is_null(json_object_get(first, "address"));
    bool with_etcd = json_is_object(json_object_get(doc, "etcd"));
    if (alone) {
        /* (what a node without [cluster] peers answers) */
        dsq_buf_puts(out, "not part of a cluster (no [cluster] peers): one node\n");
    } else {
        const char *self = "?";
        render_nodes(nodes, with_etcd, t, &self);
        size_t total = json_array_size(nodes);
        dsq_buf_printf(out, "%zu node%s, as %s sees %s:\n", total, total == 1 ? "" : "s", self,
                       total == 1 ? "it" : "them");
        table_print(t, out);
        if (total > TABLE_ROWS - 1)
            dsq_buf_printf(out, "  ... and %zu more\n", total - (TABLE_ROWS - 1));
        dsq_buf_printf(out, "  (LAG: what the databases %s is the primary of lack on that node at most: commits, "
                            "and for how long)\n", self);
        if (with_etcd)
            render_etcd(doc, out);
        else
            dsq_buf_puts(out, "etcd: not used (no [cluster] etcd)\n");
    }
    json_t *d = json_object_get(doc, "database");
    if (json_is_object(d))
        render_database(d, t, out);
    free(t);
    /* (each append either fits or leaves the buffer as it was: a shorter
     * text than asked means memory ran out) */
    if (out->len == before || out->data == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- one GET ------------------------------------------------------------------------- */

/* libcurl's write callback: append to the buffer, up to ANSWER_MAX. */
static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    dsq_buf *b = ud;
    if (b->len + size * n > ANSWER_MAX)
        return 0;
    return dsq_buf_append(b, p, size * n) == 0 ? size * n : 0;
}

/* GET url (POST `post` as JSON when not NULL) with the token (NULL or
 * "": none); the answer's status in *status and its body in body. 0, or
 * -1 with the reason in err when there was no answer. */
static long req_timeout_ms = 15000L; /* a node that does not answer within seconds is as good as down */

static int http_req(const char *url, const char *post, const char *token, long *status, dsq_buf *body, char *err,
                    size_t errlen)
{
    CURL *c = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    char *auth = NULL, cerr[CURL_ERROR_SIZE] = "";
    if (c != NULL && headers != NULL && token != NULL && token[0] != '\0') {
        int made = asprintf(&auth, "Authorization: Bearer %s", token);
        struct curl_slist *l = made >= 0 ? curl_slist_append(headers, auth) : NULL;
        if (made >= 0)
            free(auth); /* (the list holds a copy) */
        if (l == NULL) {
            curl_slist_free_all(headers);
            headers = NULL;
        }
    }
    if (c == NULL || headers == NULL) {
        snprintf(err, errlen, "out of memory");
        curl_slist_free_all(headers);
        curl_easy_cleanup(c);
        return -1;
    }
    struct curl_slist *with_type = post != NULL ? curl_slist_append(headers, "Content-Type: application/json") : headers;
    if (with_type == NULL) {
        snprintf(err, errlen, "out of memory");
        curl_slist_free_all(headers);
        curl_easy_cleanup(c);
        return -1;
    }
    headers = with_type;
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (post != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dosqld-cluster/" DSQ_VERSION);
    /* A node that does not answer within seconds is as good as down for
     * someone looking at the cluster. */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req_timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    else
        snprintf(err, errlen, "%s", rc == CURLE_WRITE_ERROR ? "the answer is too large"
                                    : cerr[0] ? cerr : curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: dosqld cluster status [--url URL | -c FILE] [--token TOKEN] [--database NAME] [--json]\n"
            "       dosqld cluster drain NODE [--url URL | -c FILE] [--token TOKEN] [--undo] [--wait SECONDS]\n"
            "       dosqld cluster move DATABASE --to NODE [--from NODE] [--primary] [--url URL | -c FILE]\n"
            "                           [--token TOKEN]\n"
            "\n"
            "Ask a running node what it knows of the cluster (GET /v1/cluster) and print it:\n"
            "the nodes, whether that node reaches each, and with [cluster] etcd whether etcd\n"
            "shows each alive, their load, copies, primaries and lag, etcd's state and the\n"
            "failovers that node made.\n"
            "\n"
            "drain (with [cluster] etcd): ask node NODE (found through the node at --url) to\n"
            "hand every database it is the primary of to another copy and take no new one,\n"
            "then wait until it is the primary of none (--wait, default 120 s; 0: do not\n"
            "wait). --undo: stop draining it.\n"
            "\n"
            "move (with [cluster] etcd): the copy of DATABASE on node --from (default: its\n"
            "primary's node) goes to node --to, which holds none: the new copy is made from\n"
            "the primary, then takes the old one's place in a new epoch. When --from is the\n"
            "primary's node, another copy takes over first. --primary: then --to becomes\n"
            "the primary. Waits for each step (up to about 5 minutes for the copy).\n"
            "\n"
            "      --url URL        the node, http://HOST:PORT (default: the first listen\n"
            "                       address of -c FILE, else " DEFAULT_BASE ")\n"
            "  -c, --config FILE    the node's configuration file (read for server.listen)\n"
            "      --token TOKEN    a token with read scope (default $DOSQL_TOKEN)\n"
            "      --database NAME  also that database's primary, epoch and copies\n"
            "      --json           print the node's answer as it came (JSON)\n"
            "      --undo           drain: stop draining NODE\n"
            "      --wait SECONDS   drain: how long to wait for its primaries to go (0: not)\n"
            "      --from NODE      move: the node whose copy goes (default: the primary's)\n"
            "      --to NODE        move: the node to hold it\n"
            "      --primary        move: make --to the primary after\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit status: 0 the node answered (drain: and its primaries went in time), 1 it\n"
            "could not be reached, answered with an error or (drain) still had primaries\n"
            "after --wait, 2 a usage error.\n");
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "dosqld cluster: %s%s%s\nTry 'dosqld cluster --help'.\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* The node's address from the configuration file: its first plain
 * listener, else its first TLS one. 0, or 1 with the reason on stderr. */
static int base_from_config(const char *path, char *out, size_t cap)
{
    dsq_config *cfg = malloc(sizeof *cfg);
    dsq_buf errs = DSQ_BUF_INIT;
    char err[512];
    if (cfg == NULL)
        return 1;
    dsq_config_init(cfg);
    int rc = 0;
    int problems = dsq_config_load_file(cfg, path, &errs);
    if (problems > 0) {
        fprintf(stderr, "dosqld cluster: configuration has %d problem%s:\n%s", problems, problems == 1 ? "" : "s",
                errs.data ? errs.data : "");
        rc = 1;
    } else if (cfg->listen.n == 0 && cfg->tls_listen.n == 0) {
        fprintf(stderr, "dosqld cluster: %s has no listen address: give --url\n", path);
        rc = 1;
    } else {
        bool tls = cfg->listen.n == 0;
        const char *listen = tls ? cfg->tls_listen.items[0] : cfg->listen.items[0];
        if (dsq_cli_listen_base(listen, tls, out, cap, err, sizeof err) != 0) {
            fprintf(stderr, "dosqld cluster: %s: %s\n", path, err);
            rc = 1;
        }
    }
    dsq_buf_free(&errs);
    dsq_config_free(cfg);
    free(cfg);
    return rc;
}

/* The error's message from an answer that is not 200 ({"error":
 * {"code", "message"}}), or the start of its text. */
static void print_refusal(const char *url, long status, const dsq_buf *body)
{
    json_t *doc = body->len > 0 ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    if (json_is_object(e))
        fprintf(stderr, "dosqld cluster: %s answered %ld: %s: %s\n", url, status, str_at(e, "code", "?"),
                str_at(e, "message", ""));
    else
        fprintf(stderr, "dosqld cluster: %s answered %ld%s%.*s\n", url, status, body->len > 0 ? ": " : "",
                (int)(body->len < 200 ? body->len : 200), body->len > 0 ? body->data : "");
    json_decref(doc);
}

/* GET /v1/cluster at base, parsed; NULL with the reason on stderr. */
static json_t *get_cluster(const char *base, const char *token, const char *db)
{
    char url[1024], err[512];
    dsq_buf body = DSQ_BUF_INIT;
    long status = 0;
    json_t *doc = NULL;
    if (dsq_cli_cluster_url(base, db, url, sizeof url, err, sizeof err) != 0)
        fprintf(stderr, "dosqld cluster: %s\n", err);
    else if (http_req(url, NULL, token, &status, &body, err, sizeof err) != 0)
        fprintf(stderr, "dosqld cluster: cannot reach %s: %s\n", url, err);
    else if (status != 200)
        print_refusal(url, status, &body);
    else if ((doc = json_loadb(body.data ? body.data : "", body.len, 0, NULL)) == NULL)
        fprintf(stderr, "dosqld cluster: %s answered 200 but not with JSON\n", url);
    dsq_buf_free(&body);
    return doc;
}

/* Node `id` in a GET /v1/cluster answer, or NULL. */
static json_t *node_named(json_t *doc, const char *id)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(doc, "nodes"), i, n) {
        if (strcmp(str_at(n, "id", ""), id) == 0)
            return n;
    }
    return NULL;
}

/* The primaries node `id` holds by the assignments, as the node at base
 * says; -1 when it cannot tell. */
static long long primaries_of(const char *base, const char *token, const char *id)
{
    json_t *doc = get_cluster(base, token, NULL);
    json_t *n = doc != NULL ? json_object_get(node_named(doc, id), "etcd") : NULL;
    bool ok = n != NULL; /* (num_at only clears it) */
    unsigned long long v = n != NULL ? num_at(n, "primaries", &ok) : 0;
    json_decref(doc);
    return ok ? (long long)v : -1;
}

/* Node `id`'s address for clients, as the node at base knows it (its own
 * when it is that node), into out; false with the reason on stderr. */
static bool client_base(json_t *doc, const char *base, const char *id, char *out, size_t cap)
{
    json_t *n = node_named(doc, id);
    if (n == NULL) {
        fprintf(stderr, "dosqld cluster: %s does not know node %s\n", base, id);
        return false;
    }
    if (bool_at(n, "self"))
        snprintf(out, cap, "%s", base);
    else if (str_at(n, "client", "")[0] != '\0')
        snprintf(out, cap, "http://%s", str_at(n, "client", ""));
    else {
        fprintf(stderr, "dosqld cluster: %s does not know where node %s takes clients\n", base, id);
        return false;
    }
    size_t l = strlen(out);
    while (l > 0 && out[l - 1] == '/')
        out[--l] = '\0';
    return true;
}

/* `dosqld cluster drain NODE`: find NODE's client address through the
 * node at base, ask NODE, wait for its primaries to go. */
static int drain(const char *base, const char *token, const char *id, bool undo, long wait_s)
{
    json_t *doc = get_cluster(base, token, NULL);
    if (doc == NULL)
        return 1;
    char target[512];
    bool found = client_base(doc, base, id, target, sizeof target);
    json_decref(doc);
    if (!found)
        return 1;
    char url[1024], body_text[200], err[512];
    snprintf(url, sizeof url, "%s/v1/admin/drain", target);
    snprintf(body_text, sizeof body_text, "{\"node\":\"%s\",\"drain\":%s}", id, undo ? "false" : "true");
    dsq_buf body = DSQ_BUF_INIT;
    long status = 0;
    int rc = 1;
    if (http_req(url, body_text, token, &status, &body, err, sizeof err) != 0)
        fprintf(stderr, "dosqld cluster: cannot reach %s: %s\n", url, err);
    else if (status != 200)
        print_refusal(url, status, &body);
    else
        rc = 0;
    dsq_buf_free(&body);
    if (rc != 0)
        return rc;
    if (undo) {
        printf("node %s: no longer draining\n", id);
        return 0;
    }
    long long left = primaries_of(target, token, id), said = -2;
    uint64_t until = dsq_now_ms() + (uint64_t)wait_s * 1000;
    for (;;) {
        if (left != said) {
            printf("node %s: draining, primary of %lld database%s\n", id, left, left == 1 ? "" : "s");
            fflush(stdout);
            said = left;
        }
        if (left == 0 || wait_s == 0 || dsq_now_ms() >= until)
            break;
        usleep(500 * 1000);
        left = primaries_of(target, token, id);
    }
    if (left != 0 && wait_s > 0) {
        fprintf(stderr, "dosqld cluster: node %s is still the primary of %lld database%s after %ld s\n", id, left,
                left == 1 ? "" : "s", wait_s);
        return 1;
    }
    return 0;
}

/* ---- move ---------------------------------------------------------------------------- */

/* POST path with body at node `id` (found through base); the answer's
 * epoch into *epoch. A conflict that passes (409: another step under way
 * there, or its view of the copies a moment behind) is asked again, up to
 * 20 times 250 ms apart. 0, or 1 with the reason on stderr. */
static int admin_post(const char *base, const char *token, const char *id, const char *path, const char *body_text,
                      unsigned long long *epoch)
{
    json_t *doc = get_cluster(base, token, NULL);
    char target[512], url[1024], err[512];
    bool found = doc != NULL && client_base(doc, base, id, target, sizeof target);
    json_decref(doc);
    if (!found)
        return 1;
    snprintf(url, sizeof url, "%s%s", target, path);
    dsq_buf body = DSQ_BUF_INIT;
    long status = 0;
    int rc = 1;
    for (int tries = 1;; tries++) {
        status = 0;
        dsq_buf_reset(&body);
        if (http_req(url, body_text, token, &status, &body, err, sizeof err) != 0 || status != 409 || tries == 20)
            break;
        usleep(250 * 1000);
    }
    if (status == 0) {
        fprintf(stderr, "dosqld cluster: cannot reach %s: %s\n", url, err);
    } else if (status != 200) {
        print_refusal(url, status, &body);
    } else {
        json_t *a = json_loadb(body.data ? body.data : "", body.len, 0, NULL);
        bool ok = true;
        *epoch = num_at(a, "epoch", &ok);
        json_decref(a);
        rc = 0;
    }
    dsq_buf_free(&body);
    return rc;
}

/* `dosqld cluster move DATABASE --to NODE [--from NODE] [--primary]`:
 * the copy on `from` (default: the primary's node) goes to `to`. When
 * `from` is the primary, another copy is promoted first (a copy is moved
 * from a follower only); with `primary`, `to` is promoted after. */
static int move(const char *base, const char *token, const char *db, const char *from, const char *to,
                bool primary)
{
    char body_text[600];
    json_t *doc = get_cluster(base, token, db);
    json_t *d = json_object_get(doc, "database");
    char cur[DSQ_NODE_ID_MAX], other[DSQ_NODE_ID_MAX] = "";
    snprintf(cur, sizeof cur, "%s", str_at(d, "primary", ""));
    size_t i;
    json_t *cp;
    json_array_foreach(json_object_get(d, "copies"), i, cp) {
        const char *id = str_at(cp, "node", "");
        if (other[0] == '\0' && strcmp(id, cur) != 0 && (from == NULL || strcmp(id, from) != 0) &&
            strcmp(id, to) != 0)
            snprintf(other, sizeof other, "%s", id);
    }
    json_decref(doc);
    if (cur[0] == '\0') {
        fprintf(stderr, "dosqld cluster: %s does not know the primary of database %s\n", base, db);
        return 1;
    }
    char from_id[DSQ_NODE_ID_MAX];
    snprintf(from_id, sizeof from_id, "%s", from != NULL ? from : cur);
    from = from_id;
    unsigned long long epoch = 0;
    snprintf(body_text, sizeof body_text, "{\"database\":\"%s\"}", db);
    if (strcmp(from, cur) == 0) {
        /* The primary's copy moves: another copy takes over first. */
        if (other[0] == '\0') {
            fprintf(stderr, "dosqld cluster: database %s has no other copy to take over from %s\n", db, cur);
            return 1;
        }
        if (admin_post(base, token, other, "/v1/admin/promote", body_text, &epoch) != 0)
            return 1;
        printf("database %s: primary handed from %s to %s (epoch %llu)\n", db, cur, other, epoch);
        fflush(stdout);
        snprintf(cur, sizeof cur, "%s", other);
    }
    snprintf(body_text, sizeof body_text, "{\"database\":\"%s\",\"from\":\"%s\",\"to\":\"%s\"}", db, from, to);
    if (admin_post(base, token, cur, "/v1/admin/move", body_text, &epoch) != 0)
        return 1;
    printf("database %s: copy moved from %s to %s (epoch %llu)\n", db, from, to, epoch);
    fflush(stdout);
    if (primary) {
        snprintf(body_text, sizeof body_text, "{\"database\":\"%s\"}", db);
        if (admin_post(base, token, to, "/v1/admin/promote", body_text, &epoch) != 0)
            return 1;
        printf("database %s: primary handed from %s to %s (epoch %llu)\n", db, cur, to, epoch);
    }
    return 0;
}

int dsq_cli_cluster_main(int argc, char **argv)
{
    enum { OPT_URL = 256, OPT_TOKEN, OPT_DATABASE, OPT_JSON, OPT_UNDO, OPT_WAIT, OPT_FROM, OPT_TO, OPT_PRIMARY };
    static const struct option opts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"config", required_argument, NULL, 'c'},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"database", required_argument, NULL, OPT_DATABASE},
        {"json", no_argument, NULL, OPT_JSON},
        {"undo", no_argument, NULL, OPT_UNDO},
        {"wait", required_argument, NULL, OPT_WAIT},
        {"from", required_argument, NULL, OPT_FROM},
        {"to", required_argument, NULL, OPT_TO},
        {"primary", no_argument, NULL, OPT_PRIMARY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url_arg = NULL, *config = NULL, *token = NULL, *db = NULL, *from = NULL, *to = NULL;
    bool raw = false, undo = false, primary = false;
    long wait_s = 120;
    int opt;
    opterr = 0; /* (our messages, not getopt's under the name "cluster") */
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_URL: url_arg = optarg; break;
        case 'c': config = optarg; break;
        case OPT_TOKEN: token = optarg; break;
        case OPT_DATABASE: db = optarg; break;
        case OPT_JSON: raw = true; break;
        case OPT_UNDO: undo = true; break;
        case OPT_FROM: from = optarg; break;
        case OPT_TO: to = optarg; break;
        case OPT_PRIMARY: primary = true; break;
        case OPT_WAIT: {
            char *end;
            wait_s = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || wait_s < 0 || wait_s > 86400)
                return usage_error("--wait takes seconds from 0 to 86400", optarg);
            break;
        }
        case 'h': usage(stdout); return 0;
        default: return usage_error("unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("what of the cluster? (status, drain, move)", NULL);
    bool draining = strcmp(argv[optind], "drain") == 0, moving = strcmp(argv[optind], "move") == 0;
    if (!draining && !moving && strcmp(argv[optind], "status") != 0)
        return usage_error("unknown command", argv[optind]);
    const char *node = NULL;
    if (draining) {
        if (optind + 1 >= argc)
            return usage_error("drain: which node?", NULL);
        node = argv[++optind];
    }
    if (moving) {
        if (optind + 1 >= argc)
            return usage_error("move: which database?", NULL);
        db = argv[++optind];
        if (to == NULL)
            return usage_error("move: to which node? (--to NODE)", NULL);
    }
    if (optind + 1 < argc)
        return usage_error("unexpected argument", argv[optind + 1]);
    if (url_arg != NULL && config != NULL)
        return usage_error("--url and --config both name the node: give one", NULL);
    if (db != NULL && !dsq_db_name_valid(db))
        return usage_error("not a database name", db);
    if (token == NULL)
        token = getenv("DOSQL_TOKEN");

    char base[512], url[1024], err[512];
    snprintf(base, sizeof base, "%s", url_arg != NULL ? url_arg : DEFAULT_BASE);
    if (config != NULL && base_from_config(config, base, sizeof base) != 0)
        return 1;
    if (dsq_cli_cluster_url(base, db, url, sizeof url, err, sizeof err) != 0)
        return usage_error(err, NULL);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "dosqld cluster: cannot initialise libcurl\n");
        return 1;
    }
    if (draining) {
        int drc = drain(base, token, node, undo, wait_s);
        curl_global_cleanup();
        return drc;
    }
    if (moving) {
        req_timeout_ms = 330000L; /* (a copy is made before the answer comes: up to about 5 minutes) */
        int mrc = move(base, token, db, from, to, primary);
        curl_global_cleanup();
        return mrc;
    }
    dsq_buf body = DSQ_BUF_INIT, text = DSQ_BUF_INIT;
    long status = 0;
    int rc = 1;
    json_t *doc = NULL;
    if (http_req(url, NULL, token, &status, &body, err, sizeof err) != 0) {
        fprintf(stderr, "dosqld cluster: cannot reach %s: %s\n", url, err);
    } else if (status != 200) {
        print_refusal(url, status, &body);
    } else if ((doc = json_loadb(body.data ? body.data : "", body.len, 0, NULL)) == NULL) {
        fprintf(stderr, "dosqld cluster: %s answered 200 but not with JSON\n", url);
    } else if (raw) {
        /* as it came, one line */
        fwrite(body.data, 1, body.len, stdout);
        if (body.data[body.len - 1] != '\n')
            fputc('\n', stdout);
        rc = 0;
    } else if (dsq_cli_cluster_render(doc, &text, err, sizeof err) != 0) {
        fprintf(stderr, "dosqld cluster: %s: %s\n", url, err);
    } else {
        fwrite(text.data, 1, text.len, stdout);
        rc = 0;
    }
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "dosqld cluster: cannot write the output\n");
        rc = 1;
    }
    json_decref(doc);
    dsq_buf_free(&body);
    dsq_buf_free(&text);
    curl_global_cleanup();
    return rc;
}
