/* value — JSON ↔ SQL values.
 *
 * Divisions: the arena; decoding; writing (strings, numbers,
 * values, results); redaction for logs. Writing is hand-made, not jansson: results are written
 * on the engine's workers straight into one buffer, without a tree, and
 * with control over number formats. */
#include "protocol/value.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/util.h"

/* ---- the arena ------------------------------------------------------------------ */

struct arena_block {
    struct arena_block *next;
    max_align_t data[];
};

void *dsq_arena_alloc(dsq_arena *a, size_t n)
{
    struct arena_block *b = malloc(sizeof *b + (n ? n : 1));
    if (b == NULL)
        return NULL;
    b->next = a->head;
    a->head = b;
    return b->data;
}

char *dsq_arena_strndup(dsq_arena *a, const char *s, size_t n)
{
    char *p = dsq_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void dsq_arena_free(dsq_arena *a)
{
    while (a->head) {
        struct arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ---- decoding ---------------------------------------------------------------------- */

#define MAX_SAFE 9007199254740991ll /* 2^53 - 1 */

static int parse_bigint(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p == '\0')
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    if (p[0] == '0' && p[1] != '\0') /* no leading zeros */
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int dsq_value_from_json(json_t *j, dsq_value *out, dsq_arena *a, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    switch (json_typeof(j)) {
    case JSON_NULL:
        out->type = DSQ_V_NULL;
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = DSQ_V_INT;
        out->i = json_is_true(j);
        return 0;
    case JSON_INTEGER:
        out->type = DSQ_V_INT;
        out->i = json_integer_value(j);
        return 0;
    case JSON_REAL: {
        double d = json_real_value(j);
        if (!isfinite(d)) {
            snprintf(err, errlen, "a parameter is not a finite number");
            return -1;
        }
        out->type = DSQ_V_REAL;
        out->d = d;
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        out->type = DSQ_V_TEXT;
        out->p = dsq_arena_strndup(a, json_string_value(j), n);
        out->n = n;
        if (out->p == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    case JSON_OBJECT: {
        json_t *big = json_object_get(j, "$bigint");
        json_t *bytes = json_object_get(j, "$bytes");
        if (json_object_size(j) == 1 && json_is_string(big)) {
            out->type = DSQ_V_INT;
            if (parse_bigint(json_string_value(big), &out->i) != 0) {
                snprintf(err, errlen, "$bigint must be a decimal integer within 64 bits");
                return -1;
            }
            return 0;
        }
        if (json_object_size(j) == 1 && json_is_string(bytes)) {
            size_t n = json_string_length(bytes);
            unsigned char *buf = dsq_arena_alloc(a, n / 4 * 3 + 2);
            long got = buf ? dsq_base64_decode(json_string_value(bytes), n, buf) : -1;
            if (got < 0) {
                snprintf(err, errlen, "$bytes must be padded base64");
                return -1;
            }
            out->type = DSQ_V_BLOB;
            out->p = (const char *)buf;
            out->n = (size_t)got;
            return 0;
        }
        snprintf(err, errlen, "an object parameter must be {\"$bigint\": \"...\"} or {\"$bytes\": \"...\"}");
        return -1;
    }
    default:
        snprintf(err, errlen, "a parameter cannot be an array");
        return -1;
    }
}

int dsq_params_from_json(json_t *params, dsq_stmt_req *r, dsq_arena *a, size_t max_params,
                         char *err, size_t errlen)
{
    r->params = NULL;
    r->nparams = 0;
    r->named = false;
    if (params == NULL || json_is_null(params))
        return 0;
    size_t n;
    if (json_is_array(params)) {
        n = json_array_size(params);
    } else if (json_is_object(params)) {
        n = json_object_size(params);
        r->named = true;
    } else {
        snprintf(err, errlen, "params must be an array or an object");
        return -1;
    }
    if (n > max_params) {
        snprintf(err, errlen, "too many params: %zu (at most %zu)", n, max_params);
        return -1;
    }
    if (n == 0)
        return 0;
    r->params = dsq_arena_alloc(a, n * sizeof *r->params);
    if (r->params == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[200];
    if (!r->named) {
        for (size_t i = 0; i < n; i++) {
            r->params[i].name = NULL;
            if (dsq_value_from_json(json_array_get(params, i), &r->params[i].v, a, why, sizeof why) != 0) {
                snprintf(err, errlen, "params[%zu]: %s", i, why);
                return -1;
            }
        }
    } else {
        const char *key;
        json_t *v;
        size_t i = 0;
        json_object_foreach(params, key, v) {
            const char *name = key;
            if (name[0] == ':' || name[0] == '@' || name[0] == '$')
                name++;
            if (name[0] == '\0') {
                snprintf(err, errlen, "a parameter name is empty");
                return -1;
            }
            for (size_t k = 0; k < i; k++) {
                if (strcmp(r->params[k].name, name) == 0) {
                    snprintf(err, errlen, "parameter %.100s is given twice", name);
                    return -1;
                }
            }
            r->params[i].name = dsq_arena_strndup(a, name, strlen(name));
            if (dsq_value_from_json(v, &r->params[i].v, a, why, sizeof why) != 0) {
                snprintf(err, errlen, "params.%.100s: %s", key, why);
                return -1;
            }
            i++;
        }
    }
    r->nparams = n;
    return 0;
}

/* ---- writing --------------------------------------------------------------------------- */

/* Escape for JSON; invalid UTF-8 becomes U+FFFD, so the text is always
 * valid JSON (SQLite TEXT may hold any bytes). */
void dsq_json_string(dsq_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (dsq_buf_reserve(out, n + 2) != 0)
        return;
    dsq_buf_append(out, "\"", 1);
    size_t i = 0, run = 0; /* run: start of bytes to copy as they are */
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = dsq_utf8_seq(p + i, n - i);
            if (len > 0) {
                i += len;
                continue;
            }
            dsq_buf_append(out, s + run, i - run);
            dsq_buf_append(out, "\xef\xbf\xbd", 3);
            i++;
            run = i;
            continue;
        }
        dsq_buf_append(out, s + run, i - run);
        char e[7];
        switch (c) {
        case '"': dsq_buf_append(out, "\\\"", 2); break;
        case '\\': dsq_buf_append(out, "\\\\", 2); break;
        case '\n': dsq_buf_append(out, "\\n", 2); break;
        case '\r': dsq_buf_append(out, "\\r", 2); break;
        case '\t': dsq_buf_append(out, "\\t", 2); break;
        default:
            e[0] = '\\';
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            dsq_buf_append(out, e, 6);
            break;
        }
        i++;
        run = i;
    }
    dsq_buf_append(out, s + run, n - run);
    dsq_buf_append(out, "\"", 1);
}

/* The shortest text that reads back as the same double. */
static void write_double(dsq_buf *out, double d)
{
    if (isinf(d)) {
        dsq_buf_puts(out, d > 0 ? "1e999" : "-1e999");
        return;
    }
    if (isnan(d)) { /* SQLite stores NaN as NULL; never here, but valid JSON regardless */
        dsq_buf_puts(out, "null");
        return;
    }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    dsq_buf_puts(out, buf);
    if (strpbrk(buf, ".eE") == NULL)
        dsq_buf_puts(out, ".0"); /* keep REAL visible as REAL */
}

/* The two ways of writing values, rows and column lists: DoSQL's JSON, or
 * Cap'n Web's expressions (escaped arrays, its own bigint and bytes, and
 * non-finite numbers it can carry). */
typedef struct flavour {
    const char *open, *close;          /* an array's brackets */
    const char *big_open, *big_close;  /* around a bigint's decimal digits */
    const char *bytes_open, *bytes_close; /* around a BLOB's base64 */
    bool nonfinite;                    /* ["nan"], ["inf"], ["-inf"] */
} flavour;

static const flavour json_flavour = {"[", "]", "{\"$bigint\":\"", "\"}", "{\"$bytes\":\"", "\"}", false};
static const flavour cw_flavour = {"[[", "]]", "[\"bigint\",\"", "\"]", "[\"bytes\",\"", "\"]", true};

static void put_value(dsq_buf *out, const dsq_value *v, const flavour *f)
{
    switch (v->type) {
    case DSQ_V_INT:
        if (v->i > MAX_SAFE || v->i < -MAX_SAFE) {
            dsq_buf_puts(out, f->big_open);
            dsq_buf_put_i64(out, v->i);
            dsq_buf_puts(out, f->big_close);
        } else {
            dsq_buf_put_i64(out, v->i);
        }
        break;
    case DSQ_V_REAL:
        if (f->nonfinite && isnan(v->d))
            dsq_buf_puts(out, "[\"nan\"]");
        else if (f->nonfinite && isinf(v->d))
            dsq_buf_puts(out, v->d > 0 ? "[\"inf\"]" : "[\"-inf\"]");
        else
            write_double(out, v->d);
        break;
    case DSQ_V_TEXT:
        dsq_json_string(out, v->p, v->n);
        break;
    case DSQ_V_BLOB:
        dsq_buf_puts(out, f->bytes_open);
        dsq_base64_encode(out, v->p, v->n);
        dsq_buf_puts(out, f->bytes_close);
        break;
    default:
        dsq_buf_puts(out, "null");
        break;
    }
}

void dsq_json_value(dsq_buf *out, const dsq_value *v) { put_value(out, v, &json_flavour); }

void dsq_cw_value(dsq_buf *out, const dsq_value *v) { put_value(out, v, &cw_flavour); }

static void put_rows(dsq_buf *out, const dsq_result *r, const flavour *f)
{
    size_t pos = 0;
    dsq_value v;
    dsq_buf_puts(out, f->open);
    for (size_t row = 0; row < r->nrows; row++) {
        if (row)
            dsq_buf_puts(out, ",");
        dsq_buf_puts(out, f->open);
        for (int c = 0; c < r->ncols; c++) {
            if (c)
                dsq_buf_puts(out, ",");
            if (dsq_result_next(r, &pos, &v))
                put_value(out, &v, f);
            else
                dsq_buf_puts(out, "null");
        }
        dsq_buf_puts(out, f->close);
    }
    dsq_buf_puts(out, f->close);
}

static void put_columns(dsq_buf *out, const dsq_result *r, const flavour *f)
{
    dsq_buf_puts(out, "\"columns\":");
    dsq_buf_puts(out, f->open);
    for (int c = 0; c < r->ncols; c++) {
        if (c)
            dsq_buf_puts(out, ",");
        dsq_json_string(out, r->names[c], strlen(r->names[c]));
    }
    dsq_buf_puts(out, f->close);
    dsq_buf_puts(out, ",\"columnTypes\":");
    dsq_buf_puts(out, f->open);
    for (int c = 0; c < r->ncols; c++) {
        if (c)
            dsq_buf_puts(out, ",");
        if (r->decltypes[c])
            dsq_json_string(out, r->decltypes[c], strlen(r->decltypes[c]));
        else
            dsq_buf_puts(out, "null");
    }
    dsq_buf_puts(out, f->close);
}

void dsq_json_rows(dsq_buf *out, const dsq_result *r) { put_rows(out, r, &json_flavour); }

void dsq_json_columns(dsq_buf *out, const dsq_result *r) { put_columns(out, r, &json_flavour); }

static void write_int(dsq_buf *out, int64_t i)
{
    dsq_value v = {.type = DSQ_V_INT, .i = i};
    dsq_json_value(out, &v);
}

void dsq_json_result(dsq_buf *out, const dsq_result *r)
{
    dsq_buf_puts(out, "{");
    dsq_json_columns(out, r);
    dsq_buf_puts(out, ",\"rows\":");
    dsq_json_rows(out, r);
    dsq_buf_puts(out, ",\"rowsAffected\":");
    write_int(out, r->rows_affected);
    dsq_buf_puts(out, ",\"lastInsertRowid\":");
    write_int(out, r->last_insert_rowid);
    dsq_buf_puts(out, ",\"lsn\":");
    write_int(out, (int64_t)r->lsn);
    dsq_buf_puts(out, "}");
}

/* ---- Cap'n Web expressions ------------------------------------------------------- */

void dsq_cw_bigint(dsq_buf *out, int64_t i)
{
    dsq_buf_append(out, "[\"bigint\",\"", 11);
    dsq_buf_put_i64(out, i);
    dsq_buf_append(out, "\"]", 2);
}


void dsq_cw_rows(dsq_buf *out, const dsq_result *r) { put_rows(out, r, &cw_flavour); }

void dsq_cw_columns(dsq_buf *out, const dsq_result *r) { put_columns(out, r, &cw_flavour); }

void dsq_cw_result(dsq_buf *out, const dsq_result *r)
{
    dsq_buf_puts(out, "{");
    dsq_cw_columns(out, r);
    dsq_buf_puts(out, ",\"rows\":");
    dsq_cw_rows(out, r);
    dsq_value v = {.type = DSQ_V_INT, .i = r->rows_affected};
    dsq_buf_puts(out, ",\"rowsAffected\":");
    dsq_cw_value(out, &v);
    v.i = r->last_insert_rowid;
    dsq_buf_puts(out, ",\"lastInsertRowid\":");
    dsq_cw_value(out, &v);
    dsq_buf_puts(out, ",\"lsn\":");
    dsq_cw_bigint(out, (int64_t)r->lsn);
    dsq_buf_puts(out, "}");
}

/* `key` is the member name holding j, or NULL. */
static int cw_doc(dsq_buf *out, json_t *j, const char *key, int depth)
{
    if (depth > 64)
        return -1;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        bool first = true;
        dsq_buf_puts(out, "{");
        json_object_foreach(j, k, v) {
            if (!first)
                dsq_buf_puts(out, ",");
            first = false;
            dsq_json_string(out, k, strlen(k));
            dsq_buf_puts(out, ":");
            if (cw_doc(out, v, k, depth + 1) != 0)
                return -1;
        }
        dsq_buf_puts(out, "}");
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        dsq_buf_puts(out, "[[");
        json_array_foreach(j, i, v) {
            if (i)
                dsq_buf_puts(out, ",");
            if (cw_doc(out, v, NULL, depth + 1) != 0)
                return -1;
        }
        dsq_buf_puts(out, "]]");
        return 0;
    }
    case JSON_INTEGER:
        if (key && strcmp(key, "lsn") == 0) { /* LSNs are BigInts on Cap'n Web */
            dsq_cw_bigint(out, json_integer_value(j));
        } else {
            dsq_value v = {.type = DSQ_V_INT, .i = json_integer_value(j)};
            dsq_cw_value(out, &v);
        }
        return 0;
    case JSON_REAL: {
        dsq_value v = {.type = DSQ_V_REAL, .d = json_real_value(j)};
        dsq_cw_value(out, &v);
        return 0;
    }
    case JSON_STRING:
        dsq_json_string(out, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_TRUE: dsq_buf_puts(out, "true"); return 0;
    case JSON_FALSE: dsq_buf_puts(out, "false"); return 0;
    default: dsq_buf_puts(out, "null"); return 0;
    }
}

int dsq_cw_doc(dsq_buf *out, json_t *doc) { return cw_doc(out, doc, NULL, 0); }

/* ---- redaction for logs ------------------------------------------------------------------ */

static bool secret_key(const char *k)
{
    return strcmp(k, "params") == 0 || strcmp(k, "rows") == 0 || strcmp(k, "before") == 0 ||
           strcmp(k, "after") == 0;
}

/* A copy of `j` with every scalar under a secret member (`secret`: j is
 * under one) as "?". `envelope`: j may be a JSON-RPC message, whose
 * "params" is the request (walked into, not hidden: its "sql" stays).
 * Past 64 levels the rest is "..." whatever it holds. New reference, or
 * NULL. */
static json_t *redacted(json_t *j, bool secret, int depth, bool envelope)
{
    if (depth > 64)
        return json_string("...");
    if (json_is_object(j)) {
        bool rpc = envelope && json_object_get(j, "method") != NULL;
        json_t *o = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            bool hide = secret || (secret_key(k) && !(rpc && strcmp(k, "params") == 0));
            if (o != NULL && json_object_set_new(o, k, redacted(v, hide, depth + 1, false)) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        return o;
    }
    if (json_is_array(j)) {
        /* A JSON-RPC batch is an array of messages (Cap'n Web's messages
         * are arrays too, but start with their type). */
        bool batch = envelope && json_is_object(json_array_get(j, 0));
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (a != NULL && json_array_append_new(a, redacted(v, secret, depth + 1, batch)) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    return secret ? json_string("?") : json_incref(j);
}

char *dsq_redact_json(const char *msg, size_t len)
{
    json_error_t je;
    json_t *j = len <= (64u << 10) ? json_loadb(msg, len, JSON_DECODE_ANY, &je) : NULL;
    json_t *r = j ? redacted(j, false, 0, true) : NULL;
    char *text = r ? json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    json_decref(r);
    if (text == NULL && (text = malloc(32)) != NULL)
        snprintf(text, 32, "<%zu bytes>", len);
    return text;
}
