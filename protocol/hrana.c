/* hrana — libSQL's Hrana streams on the engine (see hrana.h).
 *
 * Divisions: stored SQL texts; values and results in Hrana's JSON;
 * reading a statement's kind (transaction control, PRAGMA foreign_keys);
 * splitting a sequence; streams and their request queue; statements as
 * engine calls; the requests (execute, batch, sequence, ...). */
#include "protocol/hrana.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base64.h"
#include "common/buf.h"
#include "common/list.h"
#include "common/util.h"
#include "protocol/value.h"

/* ---- stored SQL texts ------------------------------------------------------------- */

struct dsq_hrana_sqls {
    json_t *map; /* decimal id -> its SQL (a JSON string) */
};

dsq_hrana_sqls *dsq_hrana_sqls_new(void)
{
    dsq_hrana_sqls *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->map = json_object();
    if (q->map == NULL) {
        free(q);
        return NULL;
    }
    return q;
}

void dsq_hrana_sqls_free(dsq_hrana_sqls *q)
{
    if (q == NULL)
        return;
    json_decref(q->map);
    free(q);
}

/* A member holding a 32-bit signed integer, as Hrana's ids are. */
static int int32_member(json_t *obj, const char *key, char idtext[16], char *why, size_t n)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
        return dsq_errf(why, n, "\"%s\" must be a 32-bit integer", key);
    snprintf(idtext, 16, "%lld", (long long)json_integer_value(v));
    return 0;
}

int dsq_hrana_sqls_store(dsq_hrana_sqls *q, json_t *req, size_t max, char *why, size_t n)
{
    char id[16];
    if (int32_member(req, "sql_id", id, why, n) != 0)
        return -1;
    json_t *sql = json_object_get(req, "sql");
    if (!json_is_string(sql))
        return dsq_errf(why, n, "store_sql: \"sql\" must be a string");
    if (json_object_get(q->map, id) != NULL)
        return dsq_errf(why, n, "SQL text id %s is in use (close_sql it first)", id);
    if (json_object_size(q->map) >= max)
        return dsq_errf(why, n, "too many stored SQL texts (at most %zu); close_sql some", max);
    if (json_object_set(q->map, id, sql) != 0)
        return dsq_errf(why, n, "out of memory");
    return 0;
}

int dsq_hrana_sqls_close(dsq_hrana_sqls *q, json_t *req, char *why, size_t n)
{
    char id[16];
    if (int32_member(req, "sql_id", id, why, n) != 0)
        return -1;
    json_object_del(q->map, id); /* closing an unused id is no error */
    return 0;
}

/* One statement object {sql | sql_id, ...}: its "sql" made whole. */
static int resolve_stmt(const dsq_hrana_sqls *q, json_t *stmt, char *why, size_t n)
{
    if (!json_is_object(stmt))
        return dsq_errf(why, n, "a statement must be an object");
    json_t *sql = json_object_get(stmt, "sql"), *id = json_object_get(stmt, "sql_id");
    bool has_sql = sql != NULL && !json_is_null(sql), has_id = id != NULL && !json_is_null(id);
    if (has_sql == has_id)
        return dsq_errf(why, n, "a statement needs exactly one of \"sql\" and \"sql_id\"");
    if (has_sql)
        return json_is_string(sql) ? 0 : dsq_errf(why, n, "\"sql\" must be a string");
    char idtext[16];
    if (int32_member(stmt, "sql_id", idtext, why, n) != 0)
        return -1;
    json_t *text = q != NULL ? json_object_get(q->map, idtext) : NULL;
    if (text == NULL)
        return dsq_errf(why, n, "SQL text id %s is not stored (store_sql)", idtext);
    if (json_object_set(stmt, "sql", text) != 0)
        return dsq_errf(why, n, "out of memory");
    json_object_del(stmt, "sql_id");
    return 0;
}

int dsq_hrana_sqls_resolve(const dsq_hrana_sqls *q, json_t *req, char *why, size_t n)
{
    const char *type = json_string_value(json_object_get(req, "type"));
    if (type == NULL)
        return 0;
    if (strcmp(type, "execute") == 0)
        return resolve_stmt(q, json_object_get(req, "stmt"), why, n);
    if (strcmp(type, "sequence") == 0 || strcmp(type, "describe") == 0)
        return json_object_get(req, "sql_id") == NULL ? 0 : resolve_stmt(q, req, why, n);
    if (strcmp(type, "batch") == 0) {
        json_t *steps = json_object_get(json_object_get(req, "batch"), "steps");
        size_t i;
        json_t *step;
        json_array_foreach(steps, i, step) {
            if (resolve_stmt(q, json_object_get(step, "stmt"), why, n) != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- values and results in Hrana's JSON ------------------------------------------------ */

/* A Hrana value ({"type": ..., ...}) into v; text and bytes into the arena. */
static int value_in(json_t *j, dsq_value *v, dsq_arena *a, char *why, size_t n)
{
    const char *type = json_string_value(json_object_get(j, "type"));
    json_t *val = json_object_get(j, "value");
    memset(v, 0, sizeof *v);
    if (type == NULL)
        return dsq_errf(why, n, "a value needs a \"type\"");
    if (strcmp(type, "null") == 0) {
        v->type = DSQ_V_NULL;
    } else if (strcmp(type, "integer") == 0) {
        v->type = DSQ_V_INT;
        if (json_is_integer(val)) {
            v->i = (int64_t)json_integer_value(val);
        } else {
            const char *s = json_string_value(val);
            char *end = NULL;
            errno = 0;
            long long x = s != NULL && *s ? strtoll(s, &end, 10) : 0;
            if (s == NULL || *s == '\0' || *end != '\0' || errno != 0)
                return dsq_errf(why, n, "an integer's \"value\" must be a decimal string of a 64-bit integer");
            v->i = x;
        }
    } else if (strcmp(type, "float") == 0) {
        if (!json_is_number(val))
            return dsq_errf(why, n, "a float's \"value\" must be a number");
        v->type = DSQ_V_REAL;
        v->d = json_number_value(val);
    } else if (strcmp(type, "text") == 0) {
        if (!json_is_string(val))
            return dsq_errf(why, n, "a text's \"value\" must be a string");
        v->type = DSQ_V_TEXT;
        v->n = json_string_length(val);
        v->p = dsq_arena_strndup(a, json_string_value(val), v->n);
        if (v->p == NULL)
            return dsq_errf(why, n, "out of memory");
    } else if (strcmp(type, "blob") == 0) {
        json_t *b = json_object_get(j, "base64");
        if (!json_is_string(b))
            return dsq_errf(why, n, "a blob needs \"base64\", a string");
        size_t len = json_string_length(b);
        unsigned char *out = dsq_arena_alloc(a, len / 4 * 3 + 3);
        if (out == NULL)
            return dsq_errf(why, n, "out of memory");
        long got = dsq_base64_decode(json_string_value(b), len, out);
        if (got < 0)
            return dsq_errf(why, n, "a blob's \"base64\" is not base64");
        v->type = DSQ_V_BLOB;
        v->p = (const char *)out;
        v->n = (size_t)got;
    } else {
        return dsq_errf(why, n, "unknown value type \"%.32s\"", type);
    }
    return 0;
}

static void value_out(dsq_buf *b, const dsq_value *v)
{
    switch (v->type) {
    case DSQ_V_NULL: dsq_buf_puts(b, "{\"type\":\"null\"}"); break;
    case DSQ_V_INT: dsq_buf_printf(b, "{\"type\":\"integer\",\"value\":\"%lld\"}", (long long)v->i); break;
    case DSQ_V_REAL:
        dsq_buf_puts(b, "{\"type\":\"float\",\"value\":");
        dsq_json_value(b, v);
        dsq_buf_puts(b, "}");
        break;
    case DSQ_V_TEXT:
        dsq_buf_puts(b, "{\"type\":\"text\",\"value\":");
        dsq_json_string(b, v->p, v->n);
        dsq_buf_puts(b, "}");
        break;
    case DSQ_V_BLOB:
        dsq_buf_puts(b, "{\"type\":\"blob\",\"base64\":\"");
        dsq_base64_encode(b, v->p, v->n);
        dsq_buf_puts(b, "\"}");
        break;
    }
}

/* A StmtResult. r NULL: a statement with no result of its own (BEGIN). */
static void result_out(dsq_buf *b, const dsq_result *r, bool want_rows)
{
    dsq_buf_puts(b, "{\"cols\":[");
    for (int c = 0; r != NULL && c < r->ncols; c++) {
        dsq_buf_puts(b, c ? ",{\"name\":" : "{\"name\":");
        dsq_json_string(b, r->names[c], strlen(r->names[c]));
        dsq_buf_puts(b, ",\"decltype\":");
        if (r->decltypes[c] != NULL)
            dsq_json_string(b, r->decltypes[c], strlen(r->decltypes[c]));
        else
            dsq_buf_puts(b, "null");
        dsq_buf_puts(b, "}");
    }
    dsq_buf_puts(b, "],\"rows\":[");
    if (r != NULL && want_rows) {
        size_t pos = 0;
        dsq_value v;
        for (size_t row = 0; row < r->nrows; row++) {
            dsq_buf_puts(b, row ? ",[" : "[");
            for (int c = 0; c < r->ncols; c++) {
                if (c)
                    dsq_buf_puts(b, ",");
                if (dsq_result_next(r, &pos, &v))
                    value_out(b, &v);
                else
                    dsq_buf_puts(b, "{\"type\":\"null\"}");
            }
            dsq_buf_puts(b, "]");
        }
    }
    dsq_buf_printf(b, "],\"affected_row_count\":%lld,\"last_insert_rowid\":",
                   r != NULL ? (long long)r->rows_affected : 0LL);
    if (r != NULL && r->last_insert_rowid != 0)
        dsq_buf_printf(b, "\"%lld\"", (long long)r->last_insert_rowid);
    else
        dsq_buf_puts(b, "null");
    dsq_buf_puts(b, "}");
}

void dsq_hrana_error_json(dsq_buf *out, dsq_code code, const char *msg)
{
    const char *name;
    switch (code) {
    case DSQ_CODE_SYNTAX_ERROR:
    case DSQ_CODE_TABLE_NOT_FOUND:
    case DSQ_CODE_COLUMN_NOT_FOUND: name = "SQLITE_ERROR"; break;
    case DSQ_CODE_CONSTRAINT_VIOLATION: name = "SQLITE_CONSTRAINT"; break;
    case DSQ_CODE_TYPE_MISMATCH: name = "SQLITE_MISMATCH"; break;
    case DSQ_CODE_SERIALIZATION_FAILURE: name = "SQLITE_BUSY"; break;
    default: name = dsq_code_name(code); break;
    }
    dsq_buf_puts(out, "{\"message\":");
    dsq_json_string(out, msg, strlen(msg));
    dsq_buf_printf(out, ",\"code\":\"%s\"}", name);
}

/* ---- a statement's kind ------------------------------------------------------------ */

typedef enum {
    K_OTHER = 0,
    K_BEGIN,        /* BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION [name]] [READONLY] */
    K_COMMIT,       /* COMMIT|END [TRANSACTION [name]] */
    K_ROLLBACK,     /* ROLLBACK [TRANSACTION [name]] (not ROLLBACK [TRANSACTION] TO) */
    K_FK,           /* PRAGMA foreign_keys = value (setting it) */
} kind;

typedef struct lexer {
    const char *p, *end;
} lexer;

/* Past white space and comments. */
static void skip_space(lexer *l)
{
    while (l->p < l->end) {
        char c = *l->p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            l->p++;
        } else if (c == '-' && l->p + 1 < l->end && l->p[1] == '-') {
            while (l->p < l->end && *l->p != '\n')
                l->p++;
        } else if (c == '/' && l->p + 1 < l->end && l->p[1] == '*') {
            const char *e = l->p + 2;
            while (e + 1 < l->end && !(e[0] == '*' && e[1] == '/'))
                e++;
            l->p = e + 1 < l->end ? e + 2 : l->end;
        } else {
            break;
        }
    }
}

/* The next word (letters, digits, _) into w (lower case); "" at anything else. */
static void word(lexer *l, char *w, size_t n)
{
    skip_space(l);
    size_t k = 0;
    while (l->p < l->end) {
        char c = *l->p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!ok)
            break;
        if (k + 1 < n)
            w[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        l->p++;
    }
    w[k] = '\0';
}

/* Only white space, comments and semicolons left. */
static bool at_end(lexer *l)
{
    for (;;) {
        skip_space(l);
        if (l->p < l->end && *l->p == ';')
            l->p++;
        else
            return l->p == l->end;
    }
}

/* BEGIN's options into *immediate and *read_only. */
static kind read_kind(const char *sql, size_t len, bool *immediate, bool *read_only, bool *fk_on)
{
    lexer l = {sql, sql + len};
    char w[32];
    word(&l, w, sizeof w);
    *immediate = *read_only = false;
    if (strcmp(w, "begin") == 0) {
        word(&l, w, sizeof w);
        if (strcmp(w, "deferred") == 0 || strcmp(w, "immediate") == 0 || strcmp(w, "exclusive") == 0) {
            *immediate = w[0] != 'd';
            word(&l, w, sizeof w);
        }
        if (strcmp(w, "transaction") == 0) {
            word(&l, w, sizeof w);
            if (w[0] != '\0' && strcmp(w, "readonly") != 0)
                word(&l, w, sizeof w); /* its name (SQLite takes one, and ignores it) */
        }
        if (strcmp(w, "readonly") == 0) { /* libSQL's read transactions */
            *read_only = true;
            word(&l, w, sizeof w);
        }
        return w[0] == '\0' && at_end(&l) ? K_BEGIN : K_OTHER;
    }
    if (strcmp(w, "commit") == 0 || strcmp(w, "end") == 0 || strcmp(w, "rollback") == 0) {
        kind k = w[0] == 'r' ? K_ROLLBACK : K_COMMIT;
        word(&l, w, sizeof w);
        if (strcmp(w, "transaction") == 0) {
            word(&l, w, sizeof w);
            if (w[0] != '\0' && !(k == K_ROLLBACK && strcmp(w, "to") == 0))
                word(&l, w, sizeof w); /* its name */
        }
        return w[0] == '\0' && at_end(&l) ? k : K_OTHER;
    }
    if (strcmp(w, "pragma") == 0) {
        word(&l, w, sizeof w);
        if (strcmp(w, "main") == 0) {
            skip_space(&l);
            if (l.p >= l.end || *l.p != '.')
                return K_OTHER;
            l.p++;
            word(&l, w, sizeof w);
        }
        if (strcmp(w, "foreign_keys") != 0)
            return K_OTHER;
        skip_space(&l);
        bool paren = l.p < l.end && *l.p == '(';
        if (l.p >= l.end || (*l.p != '=' && !paren))
            return K_OTHER; /* reading it: the engine answers */
        l.p++;
        skip_space(&l);
        bool quoted = l.p < l.end && (*l.p == '\'' || *l.p == '"');
        if (quoted)
            l.p++;
        word(&l, w, sizeof w);
        if (quoted) {
            if (l.p >= l.end || (*l.p != '\'' && *l.p != '"'))
                return K_OTHER;
            l.p++;
        }
        if (paren) {
            skip_space(&l);
            if (l.p >= l.end || *l.p != ')')
                return K_OTHER;
            l.p++;
        }
        if (!at_end(&l))
            return K_OTHER;
        if (strcmp(w, "on") == 0 || strcmp(w, "1") == 0 || strcmp(w, "true") == 0 || strcmp(w, "yes") == 0)
            *fk_on = true;
        else if (strcmp(w, "off") == 0 || strcmp(w, "0") == 0 || strcmp(w, "false") == 0 || strcmp(w, "no") == 0)
            *fk_on = false;
        else
            return K_OTHER;
        return K_FK;
    }
    return K_OTHER;
}

/* ---- splitting a sequence --------------------------------------------------------------- */

typedef struct piece {
    size_t off, len;
} piece;

/* sqlite3_complete()'s automaton: its tokens and transitions (SQLite's
 * complete.c), run here once over the whole text. (Calling it on the
 * text so far at every semicolon read a trigger's body again at each of
 * its statements: quadratic, on the loop thread.) */
enum { T_SEMI, T_WS, T_OTHER, T_EXPLAIN, T_CREATE, T_TEMP, T_TRIGGER, T_END };

static const unsigned char complete_trans[8][8] = {
    /*              SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END */
    /* 0 INVALID */ {1, 0, 2, 3, 4, 2, 2, 2},
    /* 1 START   */ {1, 1, 2, 3, 4, 2, 2, 2},
    /* 2 NORMAL  */ {1, 2, 2, 2, 2, 2, 2, 2},
    /* 3 EXPLAIN */ {1, 3, 3, 2, 4, 2, 2, 2},
    /* 4 CREATE  */ {1, 4, 2, 2, 2, 4, 5, 2},
    /* 5 TRIGGER */ {6, 5, 5, 5, 5, 5, 5, 5},
    /* 6 SEMI    */ {6, 6, 5, 5, 5, 5, 5, 7},
    /* 7 END     */ {1, 7, 5, 5, 5, 5, 5, 5},
};

/* SQLite's IdChar(): letters, digits, _, $ and every byte of a UTF-8
 * sequence. */
static bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           c >= 0x80;
}

static int word_token(const char *w, size_t n)
{
    static const struct {
        const char *w;
        int token;
    } kw[] = {{"create", T_CREATE}, {"trigger", T_TRIGGER}, {"temp", T_TEMP}, {"temporary", T_TEMP},
              {"end", T_END},       {"explain", T_EXPLAIN}};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
        if (strlen(kw[i].w) == n && strncasecmp(w, kw[i].w, n) == 0)
            return kw[i].token;
    return T_OTHER;
}

/* Piece [start, end) of sql, unless it is only white space, comments and
 * semicolons. 0, or -1 past max. */
static int add_piece(const char *sql, size_t start, size_t end, piece *out, long *n, size_t max)
{
    lexer l = {sql + start, sql + end};
    if (at_end(&l))
        return 0;
    if ((size_t)*n == max)
        return -1;
    out[*n].off = start;
    out[*n].len = end - start;
    (*n)++;
    return 0;
}

/* The statements of `sql`, each ending at a semicolon that SQLite takes
 * as the end of a whole statement (sqlite3_complete(): not one inside a
 * string, a comment or a trigger's body), the last perhaps without one,
 * and perhaps with a string, quoted name or comment left open (it goes to
 * SQLite as it is, which says what it makes of it). Pieces of only white
 * space and comments are left out. Returns the count (at most max), or -1
 * when there are more. */
static long split_sql(const char *sql, size_t len, piece *out, size_t max)
{
    long n = 0;
    size_t start = 0, i = 0;
    int state = 0;
    while (i < len) {
        char c = sql[i];
        int token;
        if (c == ';') {
            token = T_SEMI;
            i++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            token = T_WS;
            i++;
        } else if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
            i += 2;
            while (i + 1 < len && !(sql[i] == '*' && sql[i + 1] == '/'))
                i++;
            i = i + 1 < len ? i + 2 : len;
            token = T_WS;
        } else if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
            token = T_WS;
        } else if (c == '\'' || c == '"' || c == '`' || c == '[') {
            char close = c == '[' ? ']' : c;
            i++;
            while (i < len && sql[i] != close)
                i++;
            i = i < len ? i + 1 : len;
            token = T_OTHER;
        } else if (id_char((unsigned char)c)) {
            size_t w = i;
            while (i < len && id_char((unsigned char)sql[i]))
                i++;
            token = word_token(sql + w, i - w);
        } else {
            token = T_OTHER;
            i++;
        }
        state = complete_trans[state][token];
        if (token == T_SEMI && state == 1) {
            if (add_piece(sql, start, i, out, &n, max) != 0)
                return -1;
            start = i;
            state = 0;
        }
    }
    if (start < len && add_piece(sql, start, len, out, &n, max) != 0)
        return -1;
    return n;
}

/* ---- streams ------------------------------------------------------------------------------ */

typedef struct hreq {
    json_t *req;
    dsq_hrana_done_fn done;
    void *ud;
    dsq_qnode link;
} hreq;

typedef struct hop hop;

struct dsq_hrana_stream {
    dsq_engine *e;
    dsq_hrana_limits lim;
    char db[129];
    unsigned scope;
    uint64_t session;
    dsq_hrana_sqls *sqls;     /* borrowed, or own_sqls */
    dsq_hrana_sqls *own_sqls; /* owned (HTTP) */
    char txn[33];             /* the transaction open on it, or "" */
    bool fk_off;              /* PRAGMA foreign_keys = OFF */
    dsq_queue q;              /* hreq, oldest first */
    hreq *cur;                /* the request running */
    hop *call;                /* its call with the engine, or NULL */
    bool pumping, closed, ended;
    int in_done;              /* answers being given (their callbacks may close it), or
                                 steps taken (steps_go) */
    bool stepping, stepped;   /* steps_go is taking a step; the step ended at once */
    dsq_budget budget;        /* the results of a request, or of a pipeline's requests
                                 (shared_budget), as engine.max_result_bytes bounds them */
    bool shared_budget;       /* dsq_hrana_stream_share_budget: not a new one per request */
    /* the running request's progress */
    json_t *steps;            /* batch: its steps */
    size_t step, nsteps;
    signed char *outcome;     /* batch: per step 1 ok, 0 failed, -1 not run */
    piece *pieces;            /* sequence: its statements */
    const char *seq_sql;
    dsq_buf res, errs;        /* batch: step_results, step_errors so far */
};

/* A statement with the engine. */
struct hop {
    dsq_call call;            /* call.ud = this */
    dsq_hrana_stream *s;
    dsq_arena arena;
    dsq_stmt_req stmt;
    bool want_rows;
    kind k;
};

static void pump(dsq_hrana_stream *s);
static void run_request(dsq_hrana_stream *s);
static void free_if_idle(dsq_hrana_stream *s);

dsq_hrana_stream *dsq_hrana_stream_new(dsq_engine *e, const dsq_hrana_limits *lim, const char *db,
                                       unsigned scope, uint64_t session, dsq_hrana_sqls *sqls)
{
    dsq_hrana_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->e = e;
    s->lim = *lim;
    dsq_strlcpy(s->db, db, sizeof s->db);
    s->scope = scope;
    s->session = session;
    if (sqls == NULL) {
        s->own_sqls = dsq_hrana_sqls_new();
        if (s->own_sqls == NULL) {
            free(s);
            return NULL;
        }
        sqls = s->own_sqls;
    }
    s->sqls = sqls;
    dsq_budget_init(&s->budget);
    return s;
}

void dsq_hrana_stream_share_budget(dsq_hrana_stream *s)
{
    s->shared_budget = true;
    dsq_budget_init(&s->budget); /* idle: no call uses it */
}

void dsq_hrana_stream_set_scope(dsq_hrana_stream *s, unsigned scope) { s->scope = scope; }
bool dsq_hrana_stream_busy(const dsq_hrana_stream *s) { return s->cur != NULL || !dsq_queue_empty(&s->q); }
bool dsq_hrana_stream_ended(const dsq_hrana_stream *s) { return s->ended; }
bool dsq_hrana_stream_in_txn(const dsq_hrana_stream *s) { return s->txn[0] != '\0'; }

static void progress_free(dsq_hrana_stream *s)
{
    s->steps = NULL;
    free(s->outcome);
    s->outcome = NULL;
    free(s->pieces);
    s->pieces = NULL;
    dsq_buf_free(&s->res);
    dsq_buf_free(&s->errs);
    s->step = s->nsteps = 0;
}

static void stream_free(dsq_hrana_stream *s)
{
    progress_free(s);
    dsq_hrana_sqls_free(s->own_sqls);
    free(s);
}

/* Its transaction (if any) rolls back: the engine ends the session's. */
static void end_session(dsq_hrana_stream *s)
{
    if (s->txn[0] != '\0' || s->session != 0)
        dsq_engine_session_closed(s->e, s->session);
    s->txn[0] = '\0';
}

/* Free a closed stream once nothing here is using it: no call with the
 * engine, no pump or answer under way further up the stack. */
static void free_if_idle(dsq_hrana_stream *s)
{
    if (s->closed && s->call == NULL && !s->pumping && s->in_done == 0)
        stream_free(s);
}

void dsq_hrana_stream_close(dsq_hrana_stream *s)
{
    if (s == NULL || s->closed)
        return;
    s->closed = true;
    s->in_done++; /* the callbacks may close other streams, not free this one */
    if (s->cur != NULL) { /* running: its call is with the engine */
        hreq *r = s->cur;
        s->cur = NULL;
        r->done(r->ud, false, NULL, 0);
        json_decref(r->req);
        free(r);
    }
    for (dsq_qnode *n; (n = dsq_queue_pop(&s->q)) != NULL;) {
        hreq *r = dsq_container_of(n, hreq, link);
        r->done(r->ud, false, NULL, 0);
        json_decref(r->req);
        free(r);
    }
    s->in_done--;
    if (!s->ended)
        end_session(s);
    if (s->call != NULL)
        dsq_engine_cancel(s->e, &s->call->call); /* its done frees the stream */
    free_if_idle(s);
}

void dsq_hrana_stream_request(dsq_hrana_stream *s, json_t *req, dsq_hrana_done_fn done, void *ud)
{
    hreq *r = calloc(1, sizeof *r);
    if (r == NULL) {
        static const char oom[] = "{\"message\":\"out of memory\",\"code\":\"RESOURCE_EXHAUSTED\"}";
        done(ud, false, oom, sizeof oom - 1);
        return;
    }
    r->req = json_incref(req);
    r->done = done;
    r->ud = ud;
    dsq_queue_push(&s->q, &r->link);
    pump(s);
}

/* The running request's answer; the next one starts. */
static void finish(dsq_hrana_stream *s, bool ok, const char *json, size_t len)
{
    hreq *r = s->cur;
    s->cur = NULL;
    progress_free(s);
    s->in_done++;
    r->done(r->ud, ok, json, len);
    s->in_done--;
    json_decref(r->req);
    free(r);
    if (s->closed)
        free_if_idle(s);
    else
        pump(s);
}

static void finish_error(dsq_hrana_stream *s, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish_error(dsq_hrana_stream *s, dsq_code code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dsq_buf b = {0};
    dsq_hrana_error_json(&b, code, msg);
    finish(s, false, b.data ? b.data : "{}", b.len);
    dsq_buf_free(&b);
}

static void finish_ok(dsq_hrana_stream *s, const char *json)
{
    finish(s, true, json, strlen(json));
}

/* Start queued requests while none is running. Guarded: a request that
 * finishes at once (store_sql, an error) does not recurse. */
static void pump(dsq_hrana_stream *s)
{
    if (s->pumping)
        return;
    s->pumping = true;
    while (!s->closed && s->cur == NULL && !dsq_queue_empty(&s->q)) {
        s->cur = dsq_container_of(dsq_queue_pop(&s->q), hreq, link);
        if (s->ended) {
            finish_error(s, DSQ_CODE_INVALID_REQUEST, "the stream is closed");
            continue;
        }
        run_request(s);
    }
    s->pumping = false;
    free_if_idle(s);
}

/* ---- statements as engine calls ------------------------------------------------------------ */

/* What a statement's outcome goes on to: the request that ran it. */
static void stmt_done(dsq_hrana_stream *s, bool ok, const char *json, size_t len);

static const char empty_result[] =
    "{\"cols\":[],\"rows\":[],\"affected_row_count\":0,\"last_insert_rowid\":null}";

/* Encode on the worker: the StmtResult. */
static void hop_encode(dsq_call *c)
{
    hop *h = c->ud;
    if (c->err != 0)
        return;
    result_out(&c->out, c->nresults > 0 ? &c->results[0] : NULL, h->want_rows);
    dsq_call_free_results(c);
}

static void hop_free(hop *h)
{
    dsq_call_reset(&h->call);
    dsq_arena_free(&h->arena);
    free(h);
}

static void hop_done(dsq_call *c)
{
    hop *h = c->ud;
    dsq_hrana_stream *s = h->s;
    s->call = NULL;
    if (c->op == DSQ_OP_BEGIN && c->err == 0) {
        memcpy(s->txn, c->txn_out, sizeof s->txn);
        if (s->closed) /* it began after the close looked for it */
            dsq_engine_session_closed(s->e, s->session);
    }
    if (c->op == DSQ_OP_COMMIT || c->op == DSQ_OP_ROLLBACK ||
        (c->err != 0 && (c->code == DSQ_CODE_TRANSACTION_NOT_FOUND ||
                         strstr(c->msg, "(the transaction was rolled back)") != NULL)))
        s->txn[0] = '\0'; /* ended, or ended already (expired, or undone by the error) */
    if (s->closed) {
        hop_free(h);
        free_if_idle(s);
        return;
    }
    if (c->err != 0) {
        dsq_buf b = {0};
        dsq_hrana_error_json(&b, c->code, c->msg);
        hop_free(h);
        stmt_done(s, false, b.data ? b.data : "{}", b.len);
        dsq_buf_free(&b);
        return;
    }
    dsq_buf out = c->out;
    memset(&c->out, 0, sizeof c->out);
    hop_free(h);
    if (out.len == 0) /* BEGIN, COMMIT, ROLLBACK: no rows, nothing changed */
        stmt_done(s, true, empty_result, sizeof empty_result - 1);
    else
        stmt_done(s, true, out.data, out.len);
    dsq_buf_free(&out);
}

static void stmt_fail(dsq_hrana_stream *s, dsq_code code, const char *msg)
{
    dsq_buf b = {0};
    dsq_hrana_error_json(&b, code, msg);
    stmt_done(s, false, b.data ? b.data : "{}", b.len);
    dsq_buf_free(&b);
}

/* A statement's arguments: args (by position) or named_args (by name). */
static int args_in(hop *h, json_t *stmt, size_t max, char *why, size_t n)
{
    json_t *args = json_object_get(stmt, "args"), *named = json_object_get(stmt, "named_args");
    if (args != NULL && !json_is_null(args) && !json_is_array(args))
        return dsq_errf(why, n, "\"args\" must be an array");
    if (named != NULL && !json_is_null(named) && !json_is_array(named))
        return dsq_errf(why, n, "\"named_args\" must be an array");
    size_t na = json_array_size(args), nn = json_array_size(named);
    if (na > 0 && nn > 0)
        return dsq_errf(why, n, "positional and named arguments together are not supported; use one kind");
    size_t count = na + nn;
    if (count > max)
        return dsq_errf(why, n, "too many arguments (at most %zu)", max);
    if (count == 0)
        return 0;
    h->stmt.params = dsq_arena_alloc(&h->arena, count * sizeof *h->stmt.params);
    if (h->stmt.params == NULL)
        return dsq_errf(why, n, "out of memory");
    h->stmt.nparams = count;
    h->stmt.named = nn > 0;
    for (size_t i = 0; i < count; i++) {
        json_t *item = nn > 0 ? json_array_get(named, i) : json_array_get(args, i);
        json_t *val = item;
        dsq_param *p = &h->stmt.params[i];
        if (nn > 0) {
            const char *name = json_string_value(json_object_get(item, "name"));
            if (name == NULL || name[0] == '\0')
                return dsq_errf(why, n, "a named argument needs a \"name\"");
            if (name[0] == ':' || name[0] == '@' || name[0] == '$')
                name++;
            p->name = dsq_arena_strndup(&h->arena, name, strlen(name));
            if (p->name == NULL)
                return dsq_errf(why, n, "out of memory");
            val = json_object_get(item, "value");
        }
        if (!json_is_object(val))
            return dsq_errf(why, n, "an argument must be a value object");
        if (value_in(val, &p->v, &h->arena, why, n) != 0)
            return -1;
    }
    return 0;
}

/* Run one statement (sql[0..len), arguments from stmt or none) on the
 * stream; its outcome goes to stmt_done. */
static void run_stmt(dsq_hrana_stream *s, const char *sql, size_t len, json_t *stmt, bool want_rows)
{
    bool immediate = false, read_only = false, fk_on = true;
    kind k = read_kind(sql, len, &immediate, &read_only, &fk_on);
    switch (k) {
    case K_BEGIN:
        if (s->txn[0] != '\0') {
            stmt_fail(s, DSQ_CODE_SYNTAX_ERROR, "cannot start a transaction within a transaction");
            return;
        }
        break;
    case K_COMMIT:
    case K_ROLLBACK:
        if (s->txn[0] == '\0') {
            stmt_fail(s, DSQ_CODE_SYNTAX_ERROR, k == K_COMMIT ? "cannot commit - no transaction is active"
                                                              : "cannot rollback - no transaction is active");
            return;
        }
        break;
    case K_FK:
        if (s->txn[0] == '\0') /* inside a transaction SQLite ignores it too */
            s->fk_off = !fk_on;
        stmt_done(s, true, empty_result, sizeof empty_result - 1);
        return;
    case K_OTHER: break;
    }
    hop *h = calloc(1, sizeof *h);
    if (h == NULL) {
        stmt_fail(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    h->s = s;
    h->k = k;
    h->want_rows = want_rows;
    dsq_call *c = &h->call;
    c->ud = h;
    c->scope = s->scope;
    c->session = s->session;
    c->atomic = true;
    c->fk_off = s->fk_off;
    /* Rows kept for the answer count against the request's budget (a
     * sequence's are not kept). */
    c->budget = want_rows ? &s->budget : NULL;
    c->done = hop_done;
    char why[256];
    switch (k) {
    case K_BEGIN:
        c->op = DSQ_OP_BEGIN;
        c->immediate = immediate;
        c->read_only = read_only;
        break;
    case K_COMMIT:
    case K_ROLLBACK:
        c->op = k == K_COMMIT ? DSQ_OP_COMMIT : DSQ_OP_ROLLBACK;
        memcpy(c->txn, s->txn, sizeof c->txn);
        break;
    default:
        c->op = DSQ_OP_QUERY;
        c->encode = hop_encode;
        memcpy(c->txn, s->txn, sizeof c->txn);
        if (len == 0) {
            hop_free(h);
            stmt_fail(s, DSQ_CODE_INVALID_REQUEST, "the SQL text is empty");
            return;
        }
        h->stmt.sql = dsq_arena_strndup(&h->arena, sql, len);
        h->stmt.sql_len = len;
        if (h->stmt.sql == NULL)
            snprintf(why, sizeof why, "out of memory");
        if (h->stmt.sql == NULL || (stmt != NULL && args_in(h, stmt, s->lim.max_params, why, sizeof why) != 0)) {
            hop_free(h);
            stmt_fail(s, DSQ_CODE_INVALID_REQUEST, why);
            return;
        }
        c->stmts = &h->stmt;
        c->nstmts = 1;
        break;
    }
    if (dsq_engine_submit(s->e, s->db, c) != 0) {
        dsq_code code = c->code;
        char msg[sizeof c->msg];
        memcpy(msg, c->msg, sizeof msg);
        hop_free(h);
        stmt_fail(s, code, msg);
        return;
    }
    s->call = h;
}

/* A Stmt object: its SQL and arguments. */
static void run_stmt_obj(dsq_hrana_stream *s, json_t *stmt)
{
    char why[256];
    if (resolve_stmt(s->sqls, stmt, why, sizeof why) != 0) {
        stmt_fail(s, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    json_t *sql = json_object_get(stmt, "sql");
    json_t *wr = json_object_get(stmt, "want_rows");
    run_stmt(s, json_string_value(sql), json_string_length(sql), stmt, wr == NULL || !json_is_false(wr));
}

/* ---- the requests ------------------------------------------------------------------------- */

typedef enum { R_EXECUTE = 1, R_BATCH, R_SEQUENCE } running;

static running req_kind(const dsq_hrana_stream *s)
{
    const char *t = json_string_value(json_object_get(s->cur->req, "type"));
    if (strcmp(t, "execute") == 0)
        return R_EXECUTE;
    return strcmp(t, "batch") == 0 ? R_BATCH : R_SEQUENCE;
}

/* batch: does step `cond` hold, given the steps run so far? -1: malformed. */
static int cond_eval(const dsq_hrana_stream *s, json_t *cond, int depth)
{
    if (cond == NULL || json_is_null(cond))
        return 1;
    const char *t = json_string_value(json_object_get(cond, "type"));
    if (t == NULL || depth > 32)
        return -1;
    if (strcmp(t, "ok") == 0 || strcmp(t, "error") == 0) {
        json_t *st = json_object_get(cond, "step");
        if (!json_is_integer(st) || json_integer_value(st) < 0 || (size_t)json_integer_value(st) >= s->step)
            return -1; /* only earlier steps */
        signed char o = s->outcome[json_integer_value(st)];
        return t[0] == 'o' ? o == 1 : o == 0;
    }
    if (strcmp(t, "not") == 0) {
        int v = cond_eval(s, json_object_get(cond, "cond"), depth + 1);
        return v < 0 ? -1 : !v;
    }
    if (strcmp(t, "and") == 0 || strcmp(t, "or") == 0) {
        json_t *conds = json_object_get(cond, "conds");
        if (!json_is_array(conds))
            return -1;
        bool and = t[0] == 'a';
        int acc = and ? 1 : 0;
        size_t i;
        json_t *c;
        json_array_foreach(conds, i, c) {
            int v = cond_eval(s, c, depth + 1);
            if (v < 0)
                return -1;
            acc = and ? (acc && v) : (acc || v);
        }
        return acc;
    }
    if (strcmp(t, "is_autocommit") == 0)
        return s->txn[0] == '\0';
    return -1;
}

/* Go on with the running batch or sequence after a step (see steps_go). */
static void go_on(dsq_hrana_stream *s);

static void batch_record(dsq_hrana_stream *s, bool ok, const char *json, size_t len)
{
    const char *sep = s->step > 0 ? "," : "";
    dsq_buf_puts(&s->res, sep);
    dsq_buf_puts(&s->errs, sep);
    if (ok) {
        dsq_buf_append(&s->res, json, len);
        dsq_buf_puts(&s->errs, "null");
    } else {
        dsq_buf_puts(&s->res, "null");
        dsq_buf_append(&s->errs, json, len);
    }
    s->outcome[s->step] = ok ? 1 : 0;
    s->step++;
}

/* One step of a batch: its statement, or its skipping, or the answer. */
static void batch_step(dsq_hrana_stream *s)
{
    if (s->step < s->nsteps) {
        json_t *step = json_array_get(s->steps, s->step);
        int go = cond_eval(s, json_object_get(step, "condition"), 0);
        if (go < 0) {
            finish_error(s, DSQ_CODE_INVALID_REQUEST, "batch step %zu: malformed condition", s->step);
            return;
        }
        if (go) {
            run_stmt_obj(s, json_object_get(step, "stmt"));
            return; /* stmt_done goes on */
        }
        const char *sep = s->step > 0 ? "," : "";
        dsq_buf_printf(&s->res, "%snull", sep);
        dsq_buf_printf(&s->errs, "%snull", sep);
        s->outcome[s->step++] = -1;
        go_on(s);
        return;
    }
    dsq_buf b = {0};
    dsq_buf_puts(&b, "{\"type\":\"batch\",\"result\":{\"step_results\":[");
    dsq_buf_append(&b, s->res.data, s->res.len);
    dsq_buf_puts(&b, "],\"step_errors\":[");
    dsq_buf_append(&b, s->errs.data, s->errs.len);
    dsq_buf_puts(&b, "]}}");
    finish(s, true, b.data, b.len);
    dsq_buf_free(&b);
}

static void sequence_step(dsq_hrana_stream *s)
{
    if (s->step == s->nsteps) {
        finish_ok(s, "{\"type\":\"sequence\"}");
        return;
    }
    const piece *p = &s->pieces[s->step];
    run_stmt(s, s->seq_sql + p->off, p->len, NULL, false);
}

static void stmt_done(dsq_hrana_stream *s, bool ok, const char *json, size_t len)
{
    switch (req_kind(s)) {
    case R_EXECUTE:
        if (!ok) {
            finish(s, false, json, len);
        } else {
            dsq_buf b = {0};
            dsq_buf_puts(&b, "{\"type\":\"execute\",\"result\":");
            dsq_buf_append(&b, json, len);
            dsq_buf_puts(&b, "}");
            finish(s, true, b.data, b.len);
            dsq_buf_free(&b);
        }
        break;
    case R_BATCH:
        batch_record(s, ok, json, len);
        go_on(s);
        break;
    case R_SEQUENCE:
        if (!ok) { /* a sequence stops at its first error */
            finish(s, false, json, len);
            return;
        }
        s->step++;
        go_on(s);
        break;
    }
}

/* Take the running batch's or sequence's steps until one is with the
 * engine or the request is answered. A step that ends at once (a PRAGMA
 * foreign_keys, a malformed statement, a skipped step) comes back here
 * (go_on) rather than into the next step's call: a sequence of 100000
 * of them does not recurse 100000 deep. The stream is held (in_done)
 * meanwhile: an answer's callback may close it. */
static void steps_go(dsq_hrana_stream *s)
{
    running r = req_kind(s);
    s->in_done++;
    do {
        s->stepped = false;
        s->stepping = true;
        if (r == R_BATCH)
            batch_step(s);
        else
            sequence_step(s);
        s->stepping = false;
    } while (s->stepped);
    s->in_done--;
    free_if_idle(s);
}

static void go_on(dsq_hrana_stream *s)
{
    if (s->stepping)
        s->stepped = true; /* steps_go takes the next */
    else
        steps_go(s);
}

static void start_batch(dsq_hrana_stream *s, json_t *req)
{
    json_t *steps = json_object_get(json_object_get(req, "batch"), "steps");
    if (!json_is_array(steps)) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "batch: \"batch\" must be an object with \"steps\", an array");
        return;
    }
    s->nsteps = json_array_size(steps);
    if (s->nsteps > s->lim.max_steps) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "batch: %zu steps; at most %zu", s->nsteps, s->lim.max_steps);
        return;
    }
    s->outcome = calloc(s->nsteps + 1, 1);
    if (s->outcome == NULL) {
        finish_error(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->steps = steps;
    s->step = 0;
    steps_go(s);
}

static void start_sequence(dsq_hrana_stream *s, json_t *req)
{
    char why[256];
    if (dsq_hrana_sqls_resolve(s->sqls, req, why, sizeof why) != 0) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "sequence: %s", why);
        return;
    }
    json_t *sql = json_object_get(req, "sql");
    if (!json_is_string(sql)) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "sequence: \"sql\" (or \"sql_id\") is required");
        return;
    }
    s->pieces = calloc(s->lim.max_steps + 1, sizeof *s->pieces);
    if (s->pieces == NULL) {
        finish_error(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    long n = split_sql(json_string_value(sql), json_string_length(sql), s->pieces, s->lim.max_steps);
    if (n < 0) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "sequence: more than %zu statements", s->lim.max_steps);
        return;
    }
    s->seq_sql = json_string_value(sql);
    s->nsteps = (size_t)n;
    s->step = 0;
    steps_go(s);
}

static void run_request(dsq_hrana_stream *s)
{
    json_t *req = s->cur->req;
    if (!s->shared_budget) /* no call is with the engine between requests */
        dsq_budget_init(&s->budget);
    const char *type = json_string_value(json_object_get(req, "type"));
    char why[256];
    if (!json_is_object(req)) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "a request must be an object");
    } else if (type == NULL) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "a request needs a \"type\"");
    } else if (strcmp(type, "execute") == 0) {
        json_t *stmt = json_object_get(req, "stmt");
        if (!json_is_object(stmt)) {
            finish_error(s, DSQ_CODE_INVALID_REQUEST, "execute: \"stmt\" must be an object");
            return;
        }
        run_stmt_obj(s, stmt);
    } else if (strcmp(type, "batch") == 0) {
        start_batch(s, req);
    } else if (strcmp(type, "sequence") == 0) {
        start_sequence(s, req);
    } else if (strcmp(type, "store_sql") == 0) {
        if (dsq_hrana_sqls_store(s->sqls, req, s->lim.max_sqls, why, sizeof why) != 0)
            finish_error(s, DSQ_CODE_INVALID_REQUEST, "%s", why);
        else
            finish_ok(s, "{\"type\":\"store_sql\"}");
    } else if (strcmp(type, "close_sql") == 0) {
        if (dsq_hrana_sqls_close(s->sqls, req, why, sizeof why) != 0)
            finish_error(s, DSQ_CODE_INVALID_REQUEST, "%s", why);
        else
            finish_ok(s, "{\"type\":\"close_sql\"}");
    } else if (strcmp(type, "get_autocommit") == 0) {
        finish_ok(s, s->txn[0] ? "{\"type\":\"get_autocommit\",\"is_autocommit\":false}"
                               : "{\"type\":\"get_autocommit\",\"is_autocommit\":true}");
    } else if (strcmp(type, "close") == 0) {
        end_session(s);
        s->ended = true;
        finish_ok(s, "{\"type\":\"close\"}");
    } else if (strcmp(type, "describe") == 0) {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "describe is not supported by dosqld");
    } else {
        finish_error(s, DSQ_CODE_INVALID_REQUEST, "unknown request type \"%.40s\"", type);
    }
}
