/* sqlfn — bounded replacements of SQLite builtins that run long inside
 * one call, where the progress handler never sees them.
 *
 * Divisions: the deadline; printf/format; replace; instr; trim.
 *
 * SQLite checks its progress handler between VDBE instructions only; a
 * builtin that works for seconds inside one call (SQLite 3.40's printf
 * pads '%.*c' one doubling at a time long after its length limit failed;
 * replace, instr and trim compare every position against every pattern
 * byte) holds its worker past query_timeout. Each function here keeps the
 * builtin's results for the same arguments, but
 *   - printf/format refuses, before producing it, a conversion whose
 *     output (width, precision, argument) would pass SQLITE_LIMIT_LENGTH,
 *     and delegates each conversion to sqlite3_str_appendf with the
 *     argument converted as SQLite's SQL printf converts it;
 *   - every function asks, while it works, whether the statement should
 *     stop (the progress handler's question: past its deadline, or its
 *     client went away) and then fails with SQLITE_INTERRUPT.
 * One deviation: where the builtin printf returns NULL because its
 * output would pass the length limit, this one fails with SQLITE_TOOBIG.
 * Registered with the builtins' names, they replace them on the connection
 * (sqlite3_create_function overrides a builtin of the same name). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "engine/runtime/engine_int.h"

/* ---- the deadline --------------------------------------------------------------- */

/* Bytes of work between two questions (well under a millisecond). */
#define WORK_SLICE (1u << 20)

typedef struct budget {
    sqlite3_context *ctx;
    const dsq_sqlfn_stop *stop; /* whether to stop; may be NULL */
    uint64_t work;              /* bytes of work since the last question */
} budget;

static budget budget_of(sqlite3_context *ctx)
{
    return (budget){ctx, sqlite3_user_data(ctx), 0};
}

/* Whether the statement should stop, asked once per WORK_SLICE. */
static bool late(budget *b, uint64_t work)
{
    b->work += work;
    if (b->work < WORK_SLICE)
        return false;
    b->work = 0;
    return b->stop != NULL && b->stop->fn(b->stop->arg) != 0;
}

static bool late_now(budget *b) { return late(b, WORK_SLICE); }

static void fail_late(sqlite3_context *ctx) { sqlite3_result_error_code(ctx, SQLITE_INTERRUPT); }

/* Finish `out` as the function's text result, or its error: rc (0, or
 * SQLITE_INTERRUPT past the deadline), else the builder's own (too big,
 * out of memory). An empty result is '' with empty_text, else NULL (as
 * SQLite's printf('') is). */
static void str_result(sqlite3_context *ctx, sqlite3_str *out, int rc, bool empty_text)
{
    if (rc == 0 && sqlite3_str_errcode(out) != SQLITE_OK)
        rc = sqlite3_str_errcode(out);
    int n = sqlite3_str_length(out);
    char *z = sqlite3_str_finish(out);
    if (rc != 0) {
        sqlite3_free(z);
        if (rc == SQLITE_TOOBIG)
            sqlite3_result_error_toobig(ctx);
        else if (rc == SQLITE_NOMEM)
            sqlite3_result_error_nomem(ctx);
        else
            fail_late(ctx);
        return;
    }
    if (z == NULL && empty_text)
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
    else
        sqlite3_result_text(ctx, z, n, sqlite3_free);
}

static size_t length_limit(sqlite3_context *ctx)
{
    return (size_t)sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1);
}

/* ---- printf/format ------------------------------------------------------------------ */

/* The SQL function's arguments as SQLite's printf takes them: in order,
 * a missing one is 0, 0.0 or NULL. */
typedef struct pf_args {
    sqlite3_value **v;
    int n, used;
} pf_args;

static int64_t arg_int(pf_args *a) { return a->used < a->n ? sqlite3_value_int64(a->v[a->used++]) : 0; }
static double arg_double(pf_args *a) { return a->used < a->n ? sqlite3_value_double(a->v[a->used++]) : 0.0; }
static const char *arg_text(pf_args *a, size_t *len)
{
    *len = 0;
    if (a->used >= a->n)
        return NULL;
    sqlite3_value *v = a->v[a->used++];
    const char *s = (const char *)sqlite3_value_text(v);
    if (s != NULL)
        *len = (size_t)sqlite3_value_bytes(v);
    return s;
}

/* One conversion, as SQLite's printf parses it. */
typedef struct pf_spec {
    bool left, alt, alt2, zero, thousands;
    char prefix;   /* '+', ' ' or 0 */
    int width;     /* 0: none */
    int precision; /* -1: none */
    char conv;     /* the conversion character, 0 at the end of the format */
} pf_spec;

/* Parse the conversion after a '%' at *pp (which points past the '%'),
 * mirroring sqlite3_str_vappendf: flags, width (digits or '*'), precision
 * ('.' digits or '.*'), 'l'/'ll' (ignored: SQL arguments are 64-bit), the
 * conversion. Leaves *pp at the conversion character. */
static void pf_parse(const char **pp, pf_args *a, pf_spec *s)
{
    const char *p = *pp;
    char c = *p;
    bool done = false;
    *s = (pf_spec){.precision = -1};
    do {
        switch (c) {
        case '-': s->left = true; break;
        case '+': s->prefix = '+'; break;
        case ' ': s->prefix = ' '; break;
        case '#': s->alt = true; break;
        case '!': s->alt2 = true; break;
        case '0': s->zero = true; break;
        case ',': s->thousands = true; break;
        case 'l':
            c = *++p;
            if (c == 'l')
                c = *++p;
            done = true;
            break;
        case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9': {
            unsigned wx = (unsigned)(c - '0');
            while ((c = *++p) >= '0' && c <= '9')
                wx = wx * 10 + (unsigned)(c - '0');
            s->width = (int)(wx & 0x7fffffff);
            if (c != '.' && c != 'l')
                done = true;
            else
                p--;
            break;
        }
        case '*':
            s->width = (int)arg_int(a);
            if (s->width < 0) {
                s->left = true;
                s->width = s->width >= -2147483647 ? -s->width : 0;
            }
            if ((c = p[1]) != '.' && c != 'l') {
                c = *++p;
                done = true;
            }
            break;
        case '.':
            c = *++p;
            if (c == '*') {
                s->precision = (int)arg_int(a);
                if (s->precision < 0)
                    s->precision = s->precision >= -2147483647 ? -s->precision : -1;
                c = *++p;
            } else {
                unsigned px = 0;
                while (c >= '0' && c <= '9') {
                    px = px * 10 + (unsigned)(c - '0');
                    c = *++p;
                }
                s->precision = (int)(px & 0x7fffffff);
            }
            if (c == 'l')
                --p;
            else
                done = true;
            break;
        default: done = true; break;
        }
    } while (!done && (c = *++p) != 0);
    s->conv = c;
    *pp = p;
}

/* The conversion again as a C format for sqlite3_str_appendf; `ll` for the
 * integer ones, whose C argument is then an int64_t. */
static void pf_format(const pf_spec *s, char conv, bool ll, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%%%s%s%s%s%s%s", s->left ? "-" : "",
                     s->prefix == '+' ? "+" : s->prefix == ' ' ? " " : "", s->alt ? "#" : "",
                     s->alt2 ? "!" : "", s->zero ? "0" : "", s->thousands ? "," : "");
    if (s->width > 0)
        n += snprintf(out + n, cap - (size_t)n, "%d", s->width);
    if (s->precision >= 0)
        n += snprintf(out + n, cap - (size_t)n, ".%d", s->precision);
    snprintf(out + n, cap - (size_t)n, "%s%c", ll ? "ll" : "", conv);
}

/* %c: the first character of the argument's text (up to 4 bytes, as the
 * builtin copies it), max(precision, 1) times, padded with spaces to
 * `width` characters. Done here: the C-mode %c takes a code point and
 * would re-encode invalid UTF-8 differently. Returns 0 or an SQLite code. */
static int pf_char(sqlite3_str *out, pf_args *a, const pf_spec *s, size_t room, budget *b)
{
    size_t tlen;
    const unsigned char *t = (const unsigned char *)arg_text(a, &tlen);
    char ch[4] = {0};
    size_t len = 1;
    if (t != NULL) {
        ch[0] = (char)t[0];
        if ((t[0] & 0xc0) == 0xc0) {
            const unsigned char *q = t + 1;
            while (len < 4 && (*q & 0xc0) == 0x80)
                ch[len++] = (char)*q++;
        }
    }
    uint64_t copies = s->precision > 1 ? (uint64_t)s->precision : 1;
    uint64_t pad = (uint64_t)s->width > copies ? (uint64_t)s->width - copies : 0;
    if (copies * len + pad > room)
        return SQLITE_TOOBIG;
    if (!s->left && pad > 0)
        sqlite3_str_appendchar(out, (int)pad, ' ');
    if (len == 1) {
        sqlite3_str_appendchar(out, (int)copies, ch[0]);
    } else {
        for (uint64_t i = 0; i < copies; i++) {
            sqlite3_str_append(out, ch, (int)len);
            if (late(b, len))
                return SQLITE_INTERRUPT;
        }
    }
    if (s->left && pad > 0)
        sqlite3_str_appendchar(out, (int)pad, ' ');
    return 0;
}

/* printf(FORMAT, ...) and format(FORMAT, ...), as SQLite documents them. */
static void fn_printf(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    if (argc < 1)
        return;
    const char *p = (const char *)sqlite3_value_text(argv[0]);
    if (p == NULL)
        return;
    budget b = budget_of(ctx);
    size_t limit = length_limit(ctx);
    sqlite3_str *out = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    pf_args a = {argv + 1, argc - 1, 0};
    int rc = 0;
    while (*p && rc == 0) {
        if (*p != '%') {
            const char *q = p;
            while (*q && *q != '%')
                q++;
            sqlite3_str_append(out, p, (int)(q - p));
            p = q;
            continue;
        }
        if (*++p == 0) {
            sqlite3_str_append(out, "%", 1);
            break;
        }
        if (late_now(&b)) {
            rc = SQLITE_INTERRUPT;
            break;
        }
        pf_spec s;
        pf_parse(&p, &a, &s);
        size_t have = (size_t)sqlite3_str_length(out);
        size_t room = have < limit ? limit - have : 0;
        /* The most a conversion of a number writes: its width, its
         * precision (digits, with thousands separators), and the digits
         * of the largest double. */
        uint64_t w = (uint64_t)s.width, pr = s.precision > 0 ? (uint64_t)s.precision : 0;
        uint64_t num = w + pr + pr / 3 + 400;
        char f[64];
        switch (s.conv) {
        case 'd': case 'i': case 'u': case 'o': case 'x': case 'X': case 'p': case 'r':
            if (num > room) {
                rc = SQLITE_TOOBIG;
                break;
            }
            pf_format(&s, s.conv, true, f, sizeof f);
            sqlite3_str_appendf(out, f, (long long)arg_int(&a));
            break;
        case 'f': case 'e': case 'E': case 'g': case 'G':
            if (num > room) {
                rc = SQLITE_TOOBIG;
                break;
            }
            pf_format(&s, s.conv, false, f, sizeof f);
            sqlite3_str_appendf(out, f, arg_double(&a));
            break;
        case 'c':
            rc = pf_char(out, &a, &s, room, &b);
            break;
        case 's': case 'z': case 'q': case 'Q': case 'w': {
            size_t len;
            const char *t = arg_text(&a, &len);
            /* A precision takes at most that many characters of the text;
             * escaping at most doubles them and adds quotes. */
            uint64_t src = len;
            if (s.precision >= 0 && 4 * (uint64_t)s.precision < src)
                src = 4 * (uint64_t)s.precision;
            uint64_t most = w + (s.conv == 's' || s.conv == 'z' ? src : 2 * src + 4);
            if (most > room) {
                rc = SQLITE_TOOBIG;
                break;
            }
            pf_format(&s, s.conv == 'z' ? 's' : s.conv, false, f, sizeof f); /* %z would free it */
            sqlite3_str_appendf(out, f, t);
            if (late(&b, len))
                rc = SQLITE_INTERRUPT;
            break;
        }
        case '%':
            if (w + 1 > room) {
                rc = SQLITE_TOOBIG;
                break;
            }
            pf_format(&s, '%', false, f, sizeof f);
            sqlite3_str_appendf(out, f);
            break;
        case 'n': /* the builtin appends nothing (so the result is '', not NULL) and takes no argument */
            sqlite3_str_append(out, "", 0);
            break;
        default:
            /* Not a conversion (or SQLite's internal %T and %S): the
             * builtin stops there, keeping what it wrote. */
            p = "";
            continue;
        }
        if (rc == 0 && sqlite3_str_errcode(out) != SQLITE_OK)
            rc = sqlite3_str_errcode(out);
        p++;
    }
    str_result(ctx, out, rc, false);
}

/* ---- replace ------------------------------------------------------------------------ */

/* replace(X, Y, Z): SQLite's algorithm, with the deadline checked. */
static void fn_replace(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    budget b = budget_of(ctx);
    const unsigned char *str = sqlite3_value_text(argv[0]);
    if (str == NULL)
        return;
    size_t nstr = (size_t)sqlite3_value_bytes(argv[0]);
    const unsigned char *pat = sqlite3_value_text(argv[1]);
    if (pat == NULL)
        return;
    if (pat[0] == 0) {
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    size_t npat = (size_t)sqlite3_value_bytes(argv[1]);
    const unsigned char *rep = sqlite3_value_text(argv[2]);
    if (rep == NULL)
        return;
    size_t nrep = (size_t)sqlite3_value_bytes(argv[2]);
    size_t limit = length_limit(ctx);
    sqlite3_str *out = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    size_t i = 0, from = 0;
    int rc = 0;
    while (nstr >= npat && i <= nstr - npat) {
        if (str[i] != pat[0]) {
            if (late(&b, 1)) {
                rc = SQLITE_INTERRUPT;
                break;
            }
            i++;
            continue;
        }
        if (late(&b, npat)) {
            rc = SQLITE_INTERRUPT;
            break;
        }
        if (memcmp(str + i, pat, npat) != 0) {
            i++;
            continue;
        }
        sqlite3_str_append(out, (const char *)str + from, (int)(i - from));
        sqlite3_str_append(out, (const char *)rep, (int)nrep);
        if ((size_t)sqlite3_str_length(out) + (nstr - i - npat) > limit) {
            rc = SQLITE_TOOBIG;
            break;
        }
        i += npat;
        from = i;
    }
    if (rc == 0)
        sqlite3_str_append(out, (const char *)str + from, (int)(nstr - from));
    str_result(ctx, out, rc, true);
}

/* ---- instr -------------------------------------------------------------------------- */

/* instr(X, Y): SQLite's algorithm (characters for text, bytes when both
 * are blobs), with the deadline checked. */
static void fn_instr(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    budget b = budget_of(ctx);
    int th = sqlite3_value_type(argv[0]), tn = sqlite3_value_type(argv[1]);
    if (th == SQLITE_NULL || tn == SQLITE_NULL)
        return;
    sqlite3_value *c1 = NULL, *c2 = NULL;
    const unsigned char *hay, *needle;
    int nhay = sqlite3_value_bytes(argv[0]), nneedle = sqlite3_value_bytes(argv[1]);
    int n = 1;
    bool text;
    if (nneedle > 0) {
        if (th == SQLITE_BLOB && tn == SQLITE_BLOB) {
            hay = sqlite3_value_blob(argv[0]);
            needle = sqlite3_value_blob(argv[1]);
            text = false;
        } else if (th != SQLITE_BLOB && tn != SQLITE_BLOB) {
            hay = sqlite3_value_text(argv[0]);
            needle = sqlite3_value_text(argv[1]);
            text = true;
        } else {
            c1 = sqlite3_value_dup(argv[0]);
            hay = sqlite3_value_text(c1);
            if (hay == NULL)
                goto out;
            nhay = sqlite3_value_bytes(c1);
            c2 = sqlite3_value_dup(argv[1]);
            needle = sqlite3_value_text(c2);
            if (needle == NULL)
                goto out;
            nneedle = sqlite3_value_bytes(c2);
            text = true;
        }
        if (needle == NULL || (nhay && hay == NULL)) {
            sqlite3_result_error_nomem(ctx);
            goto out;
        }
        unsigned char first = needle[0];
        while (nneedle <= nhay && (hay[0] != first || memcmp(hay, needle, (size_t)nneedle) != 0)) {
            if (late(&b, hay[0] == first ? (uint64_t)nneedle : 1)) {
                fail_late(ctx);
                goto out;
            }
            n++;
            do {
                nhay--;
                hay++;
            } while (text && (hay[0] & 0xc0) == 0x80);
        }
        if (nneedle > nhay)
            n = 0;
    }
    sqlite3_result_int(ctx, n);
out:
    sqlite3_value_free(c1);
    sqlite3_value_free(c2);
}

/* ---- trim --------------------------------------------------------------------------- */

/* The first of the nchars characters chars (lens bytes each) that begins
 * (or, from_end, ends) in[0..nin); nchars when none does, *len its length. */
static size_t trim_match(const unsigned char *in, size_t nin, const unsigned char **chars,
                         const size_t *lens, size_t nchars, bool from_end, size_t *len)
{
    size_t i;
    for (i = 0; i < nchars; i++) {
        *len = lens[i];
        if (*len <= nin && memcmp(from_end ? in + nin - *len : in, chars[i], *len) == 0)
            break;
    }
    return i;
}

/* trim, ltrim, rtrim (flags: 1 left, 2 right): SQLite's algorithm, with
 * the deadline checked. */
static void trim(sqlite3_context *ctx, int argc, sqlite3_value **argv, int flags)
{
    budget b = budget_of(ctx);
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        return;
    const unsigned char *in = sqlite3_value_text(argv[0]);
    if (in == NULL)
        return;
    size_t nin = (size_t)sqlite3_value_bytes(argv[0]);
    static const unsigned char space[] = " ";
    const unsigned char *one[1] = {space};
    size_t onelen[1] = {1};
    const unsigned char **chars = one;
    size_t *lens = onelen;
    size_t nchars = 1;
    void *mem = NULL;
    if (argc > 1) {
        const unsigned char *set = sqlite3_value_text(argv[1]);
        if (set == NULL)
            return;
        nchars = 0;
        for (const unsigned char *z = set; *z; nchars++) {
            if (*z++ >= 0xc0)
                while ((*z & 0xc0) == 0x80)
                    z++;
        }
        if (nchars > 0) {
            mem = sqlite3_malloc64(nchars * (sizeof *chars + sizeof *lens));
            if (mem == NULL) {
                sqlite3_result_error_nomem(ctx);
                return;
            }
            chars = mem;
            lens = (size_t *)(chars + nchars);
            size_t k = 0;
            for (const unsigned char *z = set; *z; k++) {
                chars[k] = z;
                if (*z++ >= 0xc0)
                    while ((*z & 0xc0) == 0x80)
                        z++;
                lens[k] = (size_t)(z - chars[k]) & 0xff; /* SQLite keeps it in a byte */
            }
        }
    }
    if (nchars > 0) {
        if (flags & 1) {
            while (nin > 0) {
                size_t len = 0, i = trim_match(in, nin, chars, lens, nchars, false, &len);
                if (late(&b, i + 1)) {
                    sqlite3_free(mem);
                    fail_late(ctx);
                    return;
                }
                if (i >= nchars)
                    break;
                in += len;
                nin -= len;
            }
        }
        if (flags & 2) {
            while (nin > 0) {
                size_t len = 0, i = trim_match(in, nin, chars, lens, nchars, true, &len);
                if (late(&b, i + 1)) {
                    sqlite3_free(mem);
                    fail_late(ctx);
                    return;
                }
                if (i >= nchars)
                    break;
                nin -= len;
            }
        }
    }
    sqlite3_free(mem);
    sqlite3_result_text(ctx, (const char *)in, (int)nin, SQLITE_TRANSIENT);
}

static void fn_trim(sqlite3_context *ctx, int argc, sqlite3_value **argv) { trim(ctx, argc, argv, 3); }
static void fn_ltrim(sqlite3_context *ctx, int argc, sqlite3_value **argv) { trim(ctx, argc, argv, 1); }
static void fn_rtrim(sqlite3_context *ctx, int argc, sqlite3_value **argv) { trim(ctx, argc, argv, 2); }

/* ---- registration ------------------------------------------------------------------- */

/* Register the replacements on `db`; `stop` outlives it. Returns
 * SQLITE_OK or an error. */
int dsq__sqlfn_register(sqlite3 *db, const dsq_sqlfn_stop *stop)
{
    static const struct {
        const char *name;
        int nargs;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
    } fns[] = {
        {"printf", -1, fn_printf}, {"format", -1, fn_printf}, {"replace", 3, fn_replace},
        {"instr", 2, fn_instr},    {"trim", 1, fn_trim},      {"trim", 2, fn_trim},
        {"ltrim", 1, fn_ltrim},    {"ltrim", 2, fn_ltrim},    {"rtrim", 1, fn_rtrim},
        {"rtrim", 2, fn_rtrim},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        int rc = sqlite3_create_function(db, fns[i].name, fns[i].nargs,
                                         SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
                                         (void *)stop, fns[i].fn, NULL, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}
