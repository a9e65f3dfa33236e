/* plan — how one statement on a keyspace is answered (plan.h). */
#include "sharding/plan.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "sharding/sqlparse.h"

/* b's text NUL-terminated (its length unchanged): 0, or -1. */
static int buf_cstr(dsq_buf *b)
{
    if (dsq_buf_reserve(b, 1) != 0)
        return -1;
    b->data[b->len] = '\0';
    return 0;
}

/* ---- the keyspace's schema at the router ---------------------------------------------------- */

int dsq_ks_schema_new(const char *const *ddl, size_t n, dsq_ks_schema **out, char *err, size_t errlen)
{
    dsq_ks_schema *s = calloc(1, sizeof *s);
    if (s == NULL || sqlite3_open_v2(":memory:", &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "out of memory");
        if (s)
            sqlite3_close(s->db);
        free(s);
        return -1;
    }
    s->ddl = calloc(n ? n : 1, sizeof *s->ddl);
    if (s->ddl == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_ks_schema_free(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, ddl[i], NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "the schema's statement \"%.80s\" fails at the router: %s", ddl[i],
                     msg ? msg : "out of memory");
            sqlite3_free(msg);
            dsq_ks_schema_free(s);
            return -1;
        }
        s->ddl[s->nddl] = strdup(ddl[i]);
        if (s->ddl[s->nddl] == NULL) {
            snprintf(err, errlen, "out of memory");
            dsq_ks_schema_free(s);
            return -1;
        }
        s->nddl++;
    }
    /* A row to apply a column affinity to a value (key_value). */
    if (sqlite3_exec(s->db, "CREATE TEMP TABLE _dsq_aff(i INTEGER, r REAL, n NUMERIC, t TEXT, b BLOB);"
                            "INSERT INTO temp._dsq_aff VALUES (NULL, NULL, NULL, NULL, NULL)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "out of memory");
        dsq_ks_schema_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void dsq_ks_schema_free(dsq_ks_schema *s)
{
    if (s == NULL)
        return;
    sqlite3_finalize(s->view_q);
    sqlite3_close(s->db);
    for (size_t i = 0; i < s->nddl; i++)
        free(s->ddl[i]);
    free(s->ddl);
    free(s);
}

const char *dsq_plan_kind_name(dsq_plan_kind k)
{
    switch (k) {
    case DSQ_PLAN_ONE: return "one";
    case DSQ_PLAN_SCATTER: return "scatter";
    case DSQ_PLAN_FETCH: return "fetch";
    case DSQ_PLAN_ALL: return "all";
    case DSQ_PLAN_REFUSE: return "refuse";
    case DSQ_PLAN_ERROR: return "error";
    case DSQ_PLAN_MULTI: return "multi";
    case DSQ_PLAN_SEQUENCE: return "sequence";
    case DSQ_PLAN_LOOKUP: return "lookup";
    }
    return "?";
}

/* ---- planning state ------------------------------------------------------------------------ */

#define MAX_TABS 64

/* A table the statement reads or writes (the authorizer's report). */
typedef struct tab {
    char name[DSQ_SQL_NAME];
    bool read, written, rowid;
    char cols[64][DSQ_SQL_NAME];
    size_t ncols;
    bool cols_over;                 /* more than 64 columns read: fetch them all */
    bool view;                      /* a view: what it reads is reported on its own */
    const dsq_vs_table *vs;         /* NULL: a table of SQLite's own (reference-like) */
} tab;

/* One occurrence of a table in a simple SELECT's FROM. */
typedef struct occ {
    const dsq_from_table *ft;
    const dsq_vs_table *vs;
    bool *allowed;                  /* sharded and restricted: the shards it may be on */
    int group;                      /* union-find parent (co-sharded occurrences) */
} occ;

typedef struct pctx {
    dsq_ks_schema *s;
    const dsq_vs_keyspace *ks;
    const dsq_stmt_req *req;
    dsq_plan *out;
    const char *sql;
    dsq_tok *t;
    size_t nt;
    int *pidx;                      /* per token: its parameter's index (1-based), 0 if not one */
    tab tabs[MAX_TABS];
    size_t ntabs;
    bool tabs_over;
    char other[64];                 /* an action the router does not route (PRAGMA, ATTACH, ...) */
    bool ddl;
    bool quiet;                     /* the planner's own statement: not the client's */
    char volatile_fn[64];           /* a function whose value differs each time it runs (random()), or "" */
    const dsq_plan_hints *hints;    /* the answers to the lookups, or NULL */
    size_t nlook;                   /* lookups met so far (their order is the hints') */
    bool look_needed;               /* a lookup would restrict an occurrence nothing else does */
} pctx;

static void set_msg(dsq_plan *p, dsq_plan_kind k, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_msg(dsq_plan *p, dsq_plan_kind k, dsq_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    p->kind = k;
    p->code = code;
}

#define refuse(x, ...) set_msg((x)->out, DSQ_PLAN_REFUSE, DSQ_CODE_INVALID_REQUEST, __VA_ARGS__)

static tab *tab_get(pctx *x, const char *name)
{
    for (size_t i = 0; i < x->ntabs; i++)
        if (strcasecmp(x->tabs[i].name, name) == 0)
            return &x->tabs[i];
    if (x->ntabs == MAX_TABS) {
        x->tabs_over = true;
        return NULL;
    }
    tab *t = &x->tabs[x->ntabs++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* Is col a column table declares (not its rowid)? */
static bool declared(pctx *x, const char *table, const char *col)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    x->quiet = true; /* (called from the authorizer) */
    if (sqlite3_prepare_v2(x->s->db, "SELECT 1 FROM pragma_table_xinfo(?1) WHERE name = ?2 COLLATE NOCASE", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, col, -1, SQLITE_TRANSIENT);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    x->quiet = false;
    return found;
}

static int authorize(void *ud, int action, const char *a1, const char *a2, const char *db, const char *trig)
{
    pctx *x = ud;
    (void)trig;
    if (x->quiet || (db != NULL && strcmp(db, "temp") == 0))
        return SQLITE_OK;
    switch (action) {
    case SQLITE_READ: {
        tab *t = a1 ? tab_get(x, a1) : NULL;
        if (t == NULL)
            break;
        t->read = true;
        if (a2 == NULL || a2[0] == '\0')
            break;
        /* The column, once; ROWID when it is no declared column of the
         * table (SQLite's metadata knows rowid, oid and _rowid_ too). */
        if (sqlite3_table_column_metadata(x->s->db, "main", a1, a2, NULL, NULL, NULL, NULL, NULL) != SQLITE_OK ||
            ((strcasecmp(a2, "rowid") == 0 || strcasecmp(a2, "oid") == 0 || strcasecmp(a2, "_rowid_") == 0) &&
             !declared(x, a1, a2))) {
            t->rowid = true;
            break;
        }
        for (size_t i = 0; i < t->ncols; i++)
            if (strcasecmp(t->cols[i], a2) == 0)
                return SQLITE_OK;
        if (t->ncols == 64)
            t->cols_over = true;
        else
            snprintf(t->cols[t->ncols++], DSQ_SQL_NAME, "%s", a2);
        break;
    }
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE: {
        if (a1 != NULL && strncmp(a1, "sqlite_", 7) == 0) /* DDL's own writes */
            break;
        tab *t = a1 ? tab_get(x, a1) : NULL;
        if (t != NULL)
            t->written = true;
        break;
    }
    case SQLITE_FUNCTION: {
        static const char *const volatile_fns[] = {"random", "randomblob", "date", "time", "datetime", "julianday",
                                                   "unixepoch", "strftime", "timediff", "current_date",
                                                   "current_time", "current_timestamp", "changes",
                                                   "total_changes", "last_insert_rowid", NULL};
        for (size_t i = 0; a2 != NULL && volatile_fns[i]; i++)
            if (strcasecmp(a2, volatile_fns[i]) == 0 && x->volatile_fn[0] == '\0')
                snprintf(x->volatile_fn, sizeof x->volatile_fn, "%s", a2);
        break;
    }
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
        break;
    case SQLITE_CREATE_INDEX: case SQLITE_CREATE_TABLE: case SQLITE_CREATE_TRIGGER: case SQLITE_CREATE_VIEW:
    case SQLITE_DROP_INDEX: case SQLITE_DROP_TABLE: case SQLITE_DROP_TRIGGER: case SQLITE_DROP_VIEW:
    case SQLITE_ALTER_TABLE:
        x->ddl = true;
        break;
    default:
        if (x->other[0] == '\0')
            snprintf(x->other, sizeof x->other, "action %d", action);
        break;
    }
    return SQLITE_OK;
}

/* The decimal number in p[0..n) (digits only; saturated): the text is
 * the client's, not NUL-terminated. */
static long digits(const char *p, size_t n)
{
    long v = 0;
    for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        v = v > 100000000 ? v : v * 10 + (p[i] - '0');
    return v;
}

/* SQLite's parameter numbering: ? takes the largest index so far + 1,
 * ?N is N, a name keeps the index it got first. */
static int number_params(pctx *x)
{
    x->pidx = calloc(x->nt ? x->nt : 1, sizeof *x->pidx);
    if (x->pidx == NULL)
        return -1;
    int max = 0;
    for (size_t i = 0; i < x->nt; i++) {
        const dsq_tok *t = &x->t[i];
        if (t->type != DSQ_TK_PARAM)
            continue;
        const char *p = x->sql + t->off;
        if (p[0] == '?') {
            int k = t->len == 1 ? max + 1 : (int)digits(p + 1, t->len - 1);
            x->pidx[i] = k;
            if (k > max)
                max = k;
            continue;
        }
        int k = 0;
        for (size_t j = 0; j < i && k == 0; j++)
            if (x->pidx[j] && x->t[j].len == t->len && memcmp(x->sql + x->t[j].off, p, t->len) == 0)
                k = x->pidx[j];
        x->pidx[i] = k ? k : ++max;
    }
    return 0;
}

/* The request's value of parameter token i, or NULL. */
static const dsq_value *param_value(pctx *x, size_t i)
{
    const dsq_stmt_req *r = x->req;
    const dsq_tok *t = &x->t[i];
    const char *p = x->sql + t->off;
    if (p[0] == '?') {
        if (r->named || x->pidx[i] < 1 || (size_t)x->pidx[i] > r->nparams)
            return NULL;
        return &r->params[x->pidx[i] - 1].v;
    }
    if (!r->named)
        return NULL;
    for (size_t k = 0; k < r->nparams; k++)
        if (strlen(r->params[k].name) == t->len - 1 && memcmp(r->params[k].name, p + 1, t->len - 1) == 0)
            return &r->params[k].v;
    return NULL;
}

/* ---- emitting SQL ----------------------------------------------------------------------------- */

typedef struct emit {
    dsq_buf b;
    size_t npos;
    bool *named;
} emit;

static int emit_init(pctx *x, emit *e)
{
    memset(e, 0, sizeof *e);
    if (x->req->named && x->req->nparams > 0) {
        e->named = calloc(x->req->nparams, sizeof *e->named);
        if (e->named == NULL)
            return -1;
    }
    return 0;
}

static void emit_tok(pctx *x, emit *e, size_t i)
{
    const dsq_tok *t = &x->t[i];
    if (e->b.len > 0)
        dsq_buf_puts(&e->b, " ");
    if (t->type == DSQ_TK_PARAM && x->sql[t->off] == '?') {
        dsq_buf_printf(&e->b, "?%d", x->pidx[i]);
        if ((size_t)x->pidx[i] > e->npos)
            e->npos = (size_t)x->pidx[i];
        return;
    }
    if (t->type == DSQ_TK_PARAM && e->named != NULL) {
        for (size_t k = 0; k < x->req->nparams; k++)
            if (strlen(x->req->params[k].name) == t->len - 1 &&
                memcmp(x->req->params[k].name, x->sql + t->off + 1, t->len - 1) == 0)
                e->named[k] = true;
    }
    dsq_buf_append(&e->b, x->sql + t->off, t->len);
}

static void emit_span(pctx *x, emit *e, dsq_span s)
{
    for (size_t i = s.b; i < s.e; i++)
        emit_tok(x, e, i);
}

static void emit_str(emit *e, const char *s)
{
    if (e->b.len > 0 && s[0] != ' ')
        dsq_buf_puts(&e->b, " ");
    dsq_buf_puts(&e->b, s);
}

static void emit_name(emit *e, const char *name)
{
    if (e->b.len > 0)
        dsq_buf_puts(&e->b, " ");
    dsq_buf_puts(&e->b, "\"");
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            dsq_buf_puts(&e->b, "\"");
        dsq_buf_append(&e->b, p, 1);
    }
    dsq_buf_puts(&e->b, "\"");
}

static int emit_take(emit *e, dsq_plan_sql *q)
{
    if (buf_cstr(&e->b) != 0 || e->b.data == NULL) {
        dsq_buf_free(&e->b);
        free(e->named);
        return -1;
    }
    q->sql = e->b.data;
    q->npos = e->npos;
    q->named = e->named;
    memset(e, 0, sizeof *e);
    return 0;
}

static void emit_free(emit *e)
{
    dsq_buf_free(&e->b);
    free(e->named);
    memset(e, 0, sizeof *e);
}

static void sql_free(dsq_plan_sql *q)
{
    free(q->sql);
    free(q->named);
    memset(q, 0, sizeof *q);
}

/* ---- schema questions ------------------------------------------------------------------------ */

static bool has_triggers(pctx *x, const char *table)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(x->s->db, "SELECT 1 FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 "
                                     "COLLATE NOCASE", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_TRANSIENT);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static bool is_view(pctx *x, const char *name)
{
    /* (prepared once per schema: every statement asks) */
    if (x->s->view_q == NULL &&
        sqlite3_prepare_v3(x->s->db, "SELECT 1 FROM sqlite_schema WHERE type = 'view' AND name = ?1 COLLATE NOCASE",
                           -1, SQLITE_PREPARE_PERSISTENT, &x->s->view_q, NULL) != SQLITE_OK)
        return false;
    sqlite3_stmt *st = x->s->view_q;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    bool view = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return view;
}

static bool has_column(pctx *x, const char *table, const char *col)
{
    return sqlite3_table_column_metadata(x->s->db, "main", table, col, NULL, NULL, NULL, NULL, NULL) == SQLITE_OK;
}

/* The place of column col among table's (pragma table_info order), or -1. */
static long column_pos(pctx *x, const char *table, const char *col)
{
    long pos = -1;
    sqlite3_stmt *ci = NULL;
    if (sqlite3_prepare_v2(x->s->db, "SELECT name FROM pragma_table_info(?1)", -1, &ci, NULL) == SQLITE_OK) {
        sqlite3_bind_text(ci, 1, table, -1, SQLITE_TRANSIENT);
        for (long k = 0; sqlite3_step(ci) == SQLITE_ROW && pos < 0; k++)
            if (strcasecmp((const char *)sqlite3_column_text(ci, 0), col) == 0)
                pos = k;
    }
    sqlite3_finalize(ci);
    return pos;
}

/* The declared collation of table.col ("BINARY" when none or unknown). */
static const char *collation(pctx *x, const char *table, const char *col)
{
    const char *coll = NULL;
    if (table == NULL || col == NULL ||
        sqlite3_table_column_metadata(x->s->db, "main", table, col, NULL, &coll, NULL, NULL, NULL) != SQLITE_OK ||
        coll == NULL)
        return "BINARY";
    return coll;
}

static const char *decltype_of(pctx *x, const char *table, const char *col)
{
    const char *type = NULL;
    if (sqlite3_table_column_metadata(x->s->db, "main", table, col, &type, NULL, NULL, NULL, NULL) != SQLITE_OK ||
        type == NULL)
        return "";
    return type;
}

/* The affinity of a column declared `type`, by SQLite's rules
 * (datatype3.html 3.1): 0 INTEGER, 1 REAL, 2 NUMERIC, 3 TEXT, 4 BLOB. */
static int affinity_of(const char *type)
{
    char up[64];
    size_t n = strlen(type);
    if (n >= sizeof up)
        n = sizeof up - 1;
    for (size_t i = 0; i < n; i++)
        up[i] = (char)((type[i] >= 'a' && type[i] <= 'z') ? type[i] - 32 : type[i]);
    up[n] = '\0';
    return strstr(up, "INT") ? 0 : (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT")) ? 3
           : (strstr(up, "BLOB") || n == 0) ? 4
           : (strstr(up, "REAL") || strstr(up, "FLOA") || strstr(up, "DOUB")) ? 1 : 2;
}

/* v with the affinity of a column declared `type` applied, as SQLite
 * would store or compare it: 0 and *out (text in buf), or -1. */
static int apply_affinity(pctx *x, const char *type, const dsq_value *v, dsq_value *out, char *buf, size_t buflen)
{
    int col = affinity_of(type);
    static const char *const set[] = {"UPDATE temp._dsq_aff SET i = ?1", "UPDATE temp._dsq_aff SET r = ?1",
                                      "UPDATE temp._dsq_aff SET n = ?1", "UPDATE temp._dsq_aff SET t = ?1",
                                      "UPDATE temp._dsq_aff SET b = ?1"};
    static const char *const get[] = {"SELECT i FROM temp._dsq_aff", "SELECT r FROM temp._dsq_aff",
                                      "SELECT n FROM temp._dsq_aff", "SELECT t FROM temp._dsq_aff",
                                      "SELECT b FROM temp._dsq_aff"};
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(x->s->db, set[col], -1, &st, NULL) != SQLITE_OK)
        return -1;
    switch (v->type) {
    case DSQ_V_INT: sqlite3_bind_int64(st, 1, v->i); break;
    case DSQ_V_REAL: sqlite3_bind_double(st, 1, v->d); break;
    case DSQ_V_TEXT: sqlite3_bind_text(st, 1, v->p, (int)v->n, SQLITE_STATIC); break;
    case DSQ_V_BLOB: sqlite3_bind_blob(st, 1, v->p, (int)v->n, SQLITE_STATIC); break;
    default: sqlite3_bind_null(st, 1); break;
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || sqlite3_prepare_v2(x->s->db, get[col], -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return -1;
    }
    memset(out, 0, sizeof *out);
    switch (sqlite3_column_type(st, 0)) {
    case SQLITE_INTEGER: out->type = DSQ_V_INT; out->i = sqlite3_column_int64(st, 0); break;
    case SQLITE_FLOAT: out->type = DSQ_V_REAL; out->d = sqlite3_column_double(st, 0); break;
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        const void *p = sqlite3_column_type(st, 0) == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, 0)
                                                                   : sqlite3_column_blob(st, 0);
        if (len > buflen) {
            sqlite3_finalize(st);
            return -1;
        }
        if (len)
            memcpy(buf, p, len);
        out->type = sqlite3_column_type(st, 0) == SQLITE_TEXT ? DSQ_V_TEXT : DSQ_V_BLOB;
        out->p = buf;
        out->n = len;
        break;
    }
    default: out->type = DSQ_V_NULL; break;
    }
    sqlite3_finalize(st);
    return 0;
}

/* The value of the literal or parameter at tokens [b, e) (an optional
 * sign, then a number; a string, a blob, NULL or a parameter): 0 and *v
 * (text borrowed from the SQL or the request), or -1. */
static int literal_value(pctx *x, size_t b, size_t e, dsq_value *v, char *buf, size_t buflen)
{
    memset(v, 0, sizeof *v);
    bool neg = false;
    if (e - b == 2 && x->t[b].type == DSQ_TK_OP && (x->sql[x->t[b].off] == '-' || x->sql[x->t[b].off] == '+') &&
        x->t[b].len == 1 && x->t[b + 1].type == DSQ_TK_NUMBER) {
        neg = x->sql[x->t[b].off] == '-';
        b++;
    }
    if (e - b != 1)
        return -1;
    const dsq_tok *t = &x->t[b];
    const char *p = x->sql + t->off;
    if (!neg && dsq_tok_is(x->sql, t, "NULL")) {
        v->type = DSQ_V_NULL;
        return 0;
    }
    switch (t->type) {
    case DSQ_TK_PARAM: {
        if (neg)
            return -1;
        const dsq_value *pv = param_value(x, b);
        if (pv == NULL)
            return -1;
        *v = *pv;
        return 0;
    }
    case DSQ_TK_NUMBER: {
        /* A plain decimal integer that fits: read here. */
        if (t->len < 19) {
            bool digits_only = true;
            int64_t n = 0;
            for (size_t i = 0; i < t->len && digits_only; i++) {
                digits_only = p[i] >= '0' && p[i] <= '9';
                n = n * 10 + (p[i] - '0');
            }
            if (digits_only) {
                v->type = DSQ_V_INT;
                v->i = neg ? -n : n;
                return 0;
            }
        }
        /* Else SQLite reads it: exact, whatever its form. */
        char text[80];
        if (t->len + 2 > sizeof text)
            return -1;
        snprintf(text, sizeof text, "SELECT %s%.*s", neg ? "-" : "", (int)t->len, p);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(x->s->db, text, -1, &st, NULL) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_finalize(st);
            return -1;
        }
        if (sqlite3_column_type(st, 0) == SQLITE_INTEGER) {
            v->type = DSQ_V_INT;
            v->i = sqlite3_column_int64(st, 0);
        } else {
            v->type = DSQ_V_REAL;
            v->d = sqlite3_column_double(st, 0);
        }
        sqlite3_finalize(st);
        return 0;
    }
    case DSQ_TK_STRING: {
        if (neg)
            return -1;
        size_t k = 0;
        for (size_t i = 1; i + 1 < t->len; i++) {
            if (p[i] == '\'')
                i++;
            if (k >= buflen)
                return -1;
            buf[k++] = p[i];
        }
        v->type = DSQ_V_TEXT;
        v->p = buf;
        v->n = k;
        return 0;
    }
    case DSQ_TK_BLOB: {
        if (neg)
            return -1;
        size_t hex = t->len - 3, k = 0;
        if (hex / 2 > buflen)
            return -1;
        for (size_t i = 0; i < hex; i += 2) {
            char h[3] = {p[2 + i], p[3 + i], 0};
            buf[k++] = (char)strtol(h, NULL, 16);
        }
        v->type = DSQ_V_BLOB;
        v->p = buf;
        v->n = k;
        return 0;
    }
    default:
        return -1;
    }
}

/* The shard of `v` for table tb's key (its column's affinity applied):
 * 0 and *shard, or -1 (no shard: NULL, or a value the vindex cannot place). */
static int shard_of(pctx *x, const dsq_vs_table *tb, const dsq_value *v, size_t *shard)
{
    char buf[4096];
    dsq_value a;
    /* The affinity changes nothing of an integer in a numeric column, of
     * text in a TEXT column, of anything in a BLOB one: no SQL for those
     * (a point read's common case). */
    int aff = affinity_of(decltype_of(x, tb->name, tb->column));
    if ((v->type == DSQ_V_INT && (aff == 0 || aff == 2)) || (v->type == DSQ_V_TEXT && aff == 3) || aff == 4 ||
        v->type == DSQ_V_BLOB) {
        a = *v;
    } else if (apply_affinity(x, decltype_of(x, tb->name, tb->column), v, &a, buf, sizeof buf) != 0) {
        return -1;
    }
    dsq_skey k = {0};
    switch (a.type) {
    case DSQ_V_INT: k.kind = DSQ_SKEY_INT; k.i = a.i; break;
    case DSQ_V_REAL: k.kind = DSQ_SKEY_REAL; k.r = a.d; break;
    case DSQ_V_TEXT: k.kind = DSQ_SKEY_TEXT; k.p = a.p; k.n = a.n; break;
    case DSQ_V_BLOB: k.kind = DSQ_SKEY_BLOB; k.p = a.p; k.n = a.n; break;
    default: return -1;
    }
    char err[128];
    return dsq_vindex_shard(x->ks->vindexes[tb->vindex].v, &k, shard, err, sizeof err);
}

/* ---- column references in a simple SELECT ------------------------------------------------------ */

/* The FROM occurrence a reference `[q.]col` at tokens [b, e) names: its
 * index, or -1 (not a plain column reference, or not resolved). */
static long column_ref(pctx *x, const dsq_select *sel, size_t b, size_t e, char *col)
{
    const dsq_tok *t = x->t;
    char q[DSQ_SQL_NAME];
    if (e - b == 1 && (t[b].type == DSQ_TK_IDENT || t[b].type == DSQ_TK_QIDENT)) {
        if (dsq_tok_name(x->sql, &t[b], col, DSQ_SQL_NAME) != 0)
            return -1;
        long found = -1;
        for (size_t i = 0; i < sel->ntables; i++) {
            if (has_column(x, sel->tables[i].table, col)) {
                if (found >= 0)
                    return -1; /* ambiguous */
                found = (long)i;
            }
        }
        return found;
    }
    if (e - b == 3 && (t[b].type == DSQ_TK_IDENT || t[b].type == DSQ_TK_QIDENT) && t[b + 1].type == DSQ_TK_DOT &&
        (t[b + 2].type == DSQ_TK_IDENT || t[b + 2].type == DSQ_TK_QIDENT)) {
        if (dsq_tok_name(x->sql, &t[b], q, sizeof q) != 0 || dsq_tok_name(x->sql, &t[b + 2], col, DSQ_SQL_NAME) != 0)
            return -1;
        for (size_t i = 0; i < sel->ntables; i++) {
            const dsq_from_table *ft = &sel->tables[i];
            const char *nm = ft->alias[0] ? ft->alias : ft->table;
            if (strcasecmp(nm, q) == 0)
                return has_column(x, ft->table, col) ? (long)i : -1;
        }
    }
    return -1;
}

static int uf_find(occ *o, int i)
{
    while (o[i].group != i)
        i = o[i].group = o[o[i].group].group;
    return i;
}

/* Is the key of occurrence i (sharded) this column? Key columns with a
 * collation other than BINARY never route: values it holds equal hash
 * apart. */
static bool is_key(pctx *x, occ *o, long i, const char *col)
{
    return i >= 0 && o[i].vs != NULL && o[i].vs->type == DSQ_VS_SHARDED && strcasecmp(o[i].vs->column, col) == 0 &&
           strcasecmp(collation(x, o[i].vs->name, o[i].vs->column), "BINARY") == 0;
}

/* Restrict occurrence i to the shards of the values at tokens: each
 * value in [b, e) separated by commas at depth 0. */
static void restrict_to(pctx *x, occ *o, long i, size_t b, size_t e, size_t nshards)
{
    bool *set = calloc(nshards, sizeof *set);
    if (set == NULL)
        return;
    size_t vb = b;
    for (size_t k = b; k <= e; k++) {
        if (k < e && x->t[k].type != DSQ_TK_COMMA)
            continue;
        dsq_value v;
        char buf[4096];
        size_t shard;
        if (literal_value(x, vb, k, &v, buf, sizeof buf) != 0 || v.type == DSQ_V_NULL ||
            shard_of(x, o[i].vs, &v, &shard) != 0) {
            free(set); /* a value not placed: no restriction from this term */
            return;
        }
        set[shard] = true;
        vb = k + 1;
    }
    if (o[i].allowed == NULL) {
        o[i].allowed = set;
        return;
    }
    for (size_t s = 0; s < nshards; s++)
        o[i].allowed[s] = o[i].allowed[s] && set[s];
    free(set);
}

/* Restrict occurrence i to `set` (nshards flags; taken). */
static void restrict_set(occ *o, long i, bool *set, size_t nshards)
{
    if (o[i].allowed == NULL) {
        o[i].allowed = set;
        return;
    }
    for (size_t s = 0; s < nshards; s++)
        o[i].allowed[s] = o[i].allowed[s] && set[s];
    free(set);
}

/* Occurrence i's lookup vindex on column col (the vindex's index), or -1. */
static long lookup_of(const occ *o, long i, const char *col)
{
    if (i < 0 || o[i].vs == NULL || o[i].vs->type != DSQ_VS_SHARDED)
        return -1;
    for (size_t k = 0; k < o[i].vs->nlookups; k++)
        if (strcasecmp(o[i].vs->lookups[k].column, col) == 0)
            return (long)o[i].vs->lookups[k].vindex;
    return -1;
}

/* lookup_of, for a column that compares as bytes (BINARY): values a
 * NOCASE column holds equal would be looked up apart. */
static long lookup_usable(pctx *x, const occ *o, long i, const char *col)
{
    long v = lookup_of(o, i, col);
    return v >= 0 && strcasecmp(collation(x, o[i].vs->name, col), "BINARY") == 0 ? v : -1;
}

/* `col = value` or `col IN (values)` on a lookup column of occurrence i:
 * each value is a lookup (its answer in the hints, in the order met), and
 * with the answers the occurrence is restricted to their shards. */
static void lookup_restrict(pctx *x, occ *o, long i, long vindex, size_t b, size_t e)
{
    size_t nshards = x->ks->nshards;
    bool *set = calloc(nshards, sizeof *set);
    bool ok = set != NULL;
    size_t vb = b;
    for (size_t k = b; k <= e && ok; k++) {
        if (k < e && x->t[k].type != DSQ_TK_COMMA)
            continue;
        dsq_value v;
        char buf[4096];
        if (literal_value(x, vb, k, &v, buf, sizeof buf) != 0 || v.type == DSQ_V_NULL) {
            ok = false;
            break;
        }
        size_t n = x->nlook++;
        if (x->hints == NULL) { /* asked for */
            dsq_plan *p = x->out;
            dsq_plan_lookup *nl = realloc(p->lookups, (p->nlookups + 1) * sizeof *nl);
            if (nl == NULL) {
                ok = false;
                break;
            }
            p->lookups = nl;
            dsq_plan_lookup *l = &p->lookups[p->nlookups++];
            memset(l, 0, sizeof *l);
            l->vindex = (size_t)vindex;
            l->owner = (size_t)(o[i].vs - x->ks->tables);
            l->value = v;
            if (v.type == DSQ_V_TEXT || v.type == DSQ_V_BLOB) {
                l->bytes = malloc(v.n ? v.n : 1);
                if (l->bytes == NULL) {
                    ok = false;
                    break;
                }
                memcpy(l->bytes, v.p, v.n);
                l->value.p = l->bytes;
            }
            if (o[i].allowed == NULL)
                x->look_needed = true;
        } else if (n < x->hints->n && x->hints->shard[n] >= 0 && (size_t)x->hints->shard[n] < nshards) {
            set[x->hints->shard[n]] = true;
        }
        vb = k + 1;
    }
    if (!ok || x->hints == NULL) {
        free(set);
        return;
    }
    restrict_set(o, i, set, nshards); /* (no value with an owner: no shard; any answers) */
}

/* What one conjunct says: `a = b` joins two keys (co-sharded), `key =
 * value` and `key IN (values)` restrict. */
static void conjunct(pctx *x, const dsq_select *sel, occ *o, dsq_span c, bool restricts)
{
    const dsq_tok *t = x->t;
    size_t nshards = x->ks->nshards;
    /* Find a top-level = or ==, or IN. */
    size_t eq = 0;
    bool found = false, in = false;
    for (size_t i = c.b; i < c.e && !found; i++) {
        if (t[i].type == DSQ_TK_LP)
            return; /* a parenthesis before the operator: not a plain term */
        if (t[i].type == DSQ_TK_OP && ((t[i].len == 1 && x->sql[t[i].off] == '=') ||
                                       (t[i].len == 2 && memcmp(x->sql + t[i].off, "==", 2) == 0))) {
            eq = i;
            found = true;
        } else if (dsq_tok_is(x->sql, &t[i], "IN")) {
            eq = i;
            found = in = true;
        }
    }
    if (!found || eq == c.b)
        return;
    char lcol[DSQ_SQL_NAME], rcol[DSQ_SQL_NAME];
    long l = column_ref(x, sel, c.b, eq, lcol);
    if (in) {
        /* key IN ( v, ... ) */
        long lk = lookup_usable(x, o, l, lcol);
        if (!restricts || !(is_key(x, o, l, lcol) || lk >= 0) || eq + 2 >= c.e || t[eq + 1].type != DSQ_TK_LP ||
            t[c.e - 1].type != DSQ_TK_RP)
            return;
        for (size_t i = eq + 2; i + 1 < c.e; i++)
            if (t[i].type == DSQ_TK_LP || t[i].type == DSQ_TK_RP)
                return;
        if (eq + 2 < c.e - 1) {
            if (is_key(x, o, l, lcol))
                restrict_to(x, o, l, eq + 2, c.e - 1, nshards);
            else
                lookup_restrict(x, o, l, lk, eq + 2, c.e - 1);
        }
        return;
    }
    long r = column_ref(x, sel, eq + 1, c.e, rcol);
    if (l >= 0 && r >= 0) {
        /* Keys of one vindex and one affinity: equal values are equal
         * bytes (7 = '7' holds between an INTEGER and a TEXT column, whose
         * values hash apart). */
        if (is_key(x, o, l, lcol) && is_key(x, o, r, rcol) && o[l].vs->vindex == o[r].vs->vindex &&
            affinity_of(decltype_of(x, o[l].vs->name, lcol)) == affinity_of(decltype_of(x, o[r].vs->name, rcol)))
            o[uf_find(o, (int)l)].group = uf_find(o, (int)r);
        return;
    }
    if (!restricts)
        return;
    if (is_key(x, o, l, lcol))
        restrict_to(x, o, l, eq + 1, c.e, nshards);
    else if (is_key(x, o, r, rcol))
        restrict_to(x, o, r, c.b, eq, nshards);
    else if (lookup_usable(x, o, l, lcol) >= 0)
        lookup_restrict(x, o, l, lookup_usable(x, o, l, lcol), eq + 1, c.e);
    else if (lookup_usable(x, o, r, rcol) >= 0)
        lookup_restrict(x, o, r, lookup_usable(x, o, r, rcol), c.b, eq);
}

/* ---- SCATTER: the rewrite ------------------------------------------------------------------------ */

/* An aggregate function's name (bare or quoted: "count"(*) is count), in
 * upper case into up (16 bytes), or false. */
static bool agg_name(const char *sql, const dsq_tok *t, char *up)
{
    static const char *const names[] = {"COUNT", "SUM", "TOTAL", "AVG", "MIN", "MAX", "GROUP_CONCAT",
                                        "STRING_AGG", "JSON_GROUP_ARRAY", "JSON_GROUP_OBJECT",
                                        "JSONB_GROUP_ARRAY", "JSONB_GROUP_OBJECT", NULL};
    char nm[32];
    if (dsq_tok_name(sql, t, nm, sizeof nm) != 0)
        return false;
    for (size_t i = 0; names[i]; i++)
        if (strcasecmp(nm, names[i]) == 0) {
            if (up != NULL)
                snprintf(up, 16, "%s", names[i]);
            return true;
        }
    return false;
}

static bool is_agg_name(const char *sql, const dsq_tok *t) { return agg_name(sql, t, NULL); }

/* The parenthesis closing the one at l (or n). */
static size_t close_paren(const dsq_tok *t, size_t l, size_t n)
{
    int depth = 0;
    for (size_t i = l; i < n; i++) {
        if (t[i].type == DSQ_TK_LP)
            depth++;
        else if (t[i].type == DSQ_TK_RP && --depth == 0)
            return i;
    }
    return n;
}

static bool top_comma(const dsq_tok *t, size_t b, size_t e)
{
    int depth = 0;
    for (size_t i = b; i < e; i++) {
        if (t[i].type == DSQ_TK_LP)
            depth++;
        else if (t[i].type == DSQ_TK_RP)
            depth--;
        else if (depth == 0 && t[i].type == DSQ_TK_COMMA)
            return true;
    }
    return false;
}

typedef struct rewrite {
    pctx *x;
    const dsq_select *sel;
    emit shard;             /* the shard's select list so far (partials) */
    size_t npartials;
    bool failed;            /* something only FETCH can answer */
    char why[128];
    /* group columns: (occurrence, name) */
    long gocc[DSQ_SEL_MAX];
    char gcol[DSQ_SEL_MAX][DSQ_SQL_NAME];
    size_t ngroup;
    dsq_buf ddl;            /* the partial columns' definitions */
} rewrite;

static void rw_fail(rewrite *w, const char *why)
{
    if (!w->failed)
        snprintf(w->why, sizeof w->why, "%s", why);
    w->failed = true;
}

/* A partial column: `fn(args)` on the shards, its definition at the router. */
static size_t partial(rewrite *w, const char *fn, dsq_span args, const char *coll)
{
    size_t k = ++w->npartials;
    if (w->shard.b.len > 0)
        dsq_buf_puts(&w->shard.b, ",");
    emit_str(&w->shard, fn);
    dsq_buf_puts(&w->shard.b, "(");
    if (args.b == args.e)
        dsq_buf_puts(&w->shard.b, "*");
    else
        emit_span(w->x, &w->shard, args);
    dsq_buf_puts(&w->shard.b, ")");
    dsq_buf_printf(&w->ddl, ", \"_dsq_a%zu\"%s%s", k, coll ? " COLLATE " : "", coll ? coll : "");
    return k;
}

static size_t collate_at(pctx *x, dsq_span s);
static int expr_collation(pctx *x, const dsq_select *sel, dsq_span s, char *buf, size_t n);

/* Router text for span s: aggregates replaced by their combination of
 * partials, qualifiers of grouped columns left off. */
static void router_text(rewrite *w, emit *out, dsq_span s)
{
    pctx *x = w->x;
    const dsq_tok *t = x->t;
    for (size_t i = s.b; i < s.e; i++) {
        if (is_agg_name(x->sql, &t[i]) && i + 1 < s.e && t[i + 1].type == DSQ_TK_LP) {
            size_t r = close_paren(t, i + 1, s.e);
            dsq_span args = {i + 2, r};
            bool minmax = dsq_tok_is(x->sql, &t[i], "MIN") || dsq_tok_is(x->sql, &t[i], "MAX");
            if (minmax && top_comma(t, args.b, args.e))
                goto plain; /* min(a, b): the scalar function */
            if (r >= s.e) {
                rw_fail(w, "unbalanced parentheses");
                return;
            }
            if (args.b < args.e && (dsq_tok_is(x->sql, &t[args.b], "DISTINCT") || dsq_tok_is(x->sql, &t[args.b], "ALL"))) {
                rw_fail(w, "an aggregate of DISTINCT values");
                return;
            }
            bool star = args.b == args.e ||
                        (args.e - args.b == 1 && t[args.b].type == DSQ_TK_OP && x->sql[t[args.b].off] == '*');
            if (star)
                args.e = args.b;
            char fn[16];
            agg_name(x->sql, &t[i], fn);
            if (star && strcmp(fn, "COUNT") != 0) {
                rw_fail(w, "an aggregate of *");
                return;
            }
            /* The collation MIN and MAX compare with: the argument's, when
             * it is a column. */
            const char *coll = NULL;
            char cbuf[DSQ_SQL_NAME];
            if (minmax) {
                if (expr_collation(x, w->sel, args, cbuf, sizeof cbuf) != 0) {
                    rw_fail(w, "MIN or MAX of an expression whose collation the router cannot tell");
                    return;
                }
                coll = cbuf;
            }
            if (strcmp(fn, "COUNT") == 0) {
                size_t k = partial(w, "count", args, NULL);
                char text[64];
                snprintf(text, sizeof text, "coalesce(sum(\"_dsq_a%zu\"), 0)", k);
                emit_str(out, text);
            } else if (strcmp(fn, "SUM") == 0 || strcmp(fn, "TOTAL") == 0 || minmax) {
                size_t k = partial(w, fn, args, coll);
                char text[64];
                snprintf(text, sizeof text, "%s(\"_dsq_a%zu\")", fn, k);
                emit_str(out, text);
            } else if (strcmp(fn, "AVG") == 0) {
                /* (total, not sum: avg() never overflows, and sum() would) */
                size_t ks = partial(w, "total", args, NULL);
                size_t kc = partial(w, "count", args, NULL);
                char text[96];
                snprintf(text, sizeof text, "(total(\"_dsq_a%zu\") / sum(\"_dsq_a%zu\"))", ks, kc);
                emit_str(out, text);
            } else {
                rw_fail(w, "an aggregate the router cannot combine from partials");
                return;
            }
            i = r;
            continue;
        }
    plain:
        /* q.col of a grouped column: col. */
        if (i + 2 < s.e && (t[i].type == DSQ_TK_IDENT || t[i].type == DSQ_TK_QIDENT) && t[i + 1].type == DSQ_TK_DOT) {
            char col[DSQ_SQL_NAME];
            long oc = column_ref(x, w->sel, i, i + 3, col);
            bool grouped = false;
            for (size_t g = 0; g < w->ngroup && oc >= 0; g++)
                grouped |= w->gocc[g] == oc && strcasecmp(w->gcol[g], col) == 0;
            if (grouped) {
                emit_name(out, col);
                i += 2;
                continue;
            }
        }
        /* A bare column that is not grouped: one database reads it from
         * some row of the group; at the router the name would mean
         * something else (a result's alias, or nothing). */
        if ((t[i].type == DSQ_TK_IDENT || t[i].type == DSQ_TK_QIDENT) &&
            !(i + 1 < s.e && (t[i + 1].type == DSQ_TK_LP || t[i + 1].type == DSQ_TK_DOT)) &&
            !(i > s.b && t[i - 1].type == DSQ_TK_DOT)) {
            char col[DSQ_SQL_NAME];
            long oc = column_ref(x, w->sel, i, i + 1, col);
            bool grouped = false;
            for (size_t g = 0; g < w->ngroup && oc >= 0; g++)
                grouped |= w->gocc[g] == oc && strcasecmp(w->gcol[g], col) == 0;
            if (oc >= 0 && !grouped) {
                rw_fail(w, "a column neither grouped nor in an aggregate");
                return;
            }
        }
        emit_tok(x, out, i);
    }
}

/* Does the term at span s end in COLLATE name? Its start then. */
static size_t collate_at(pctx *x, dsq_span s)
{
    if (s.e - s.b >= 3 && dsq_tok_is(x->sql, &x->t[s.e - 2], "COLLATE"))
        return s.e - 2;
    return s.e;
}

static bool same_tokens(pctx *x, dsq_span a, dsq_span b)
{
    if (a.e - a.b != b.e - b.b)
        return false;
    for (size_t i = 0; i < a.e - a.b; i++) {
        const dsq_tok *p = &x->t[a.b + i], *q = &x->t[b.b + i];
        if (p->type != q->type || p->len != q->len)
            return false;
        bool word = p->type == DSQ_TK_IDENT;
        if (word ? strncasecmp(x->sql + p->off, x->sql + q->off, p->len) != 0
                 : memcmp(x->sql + p->off, x->sql + q->off, p->len) != 0)
            return false;
    }
    return true;
}

/* The collation an expression compares and sorts with, by SQLite's rules:
 * a trailing COLLATE's; else, through parentheses, unary + and CAST, a
 * column's own; else BINARY. 0 and the name in buf, or -1 when it is
 * not known here (a COLLATE inside). */
static int expr_collation(pctx *x, const dsq_select *sel, dsq_span s, char *buf, size_t n)
{
    const dsq_tok *t = x->t;
    size_t ce = collate_at(x, s);
    if (ce < s.e) {
        char nm[DSQ_SQL_NAME];
        if (dsq_tok_name(x->sql, &t[s.e - 1], nm, sizeof nm) != 0)
            return -1;
        snprintf(buf, n, "%s", nm);
        return 0;
    }
    for (size_t i = s.b; i < s.e; i++)
        if (dsq_tok_is(x->sql, &t[i], "COLLATE"))
            return -1;
    for (;;) {
        if (s.e - s.b >= 2 && t[s.b].type == DSQ_TK_LP && close_paren(t, s.b, s.e) == s.e - 1) {
            s = (dsq_span){s.b + 1, s.e - 1};
        } else if (s.e - s.b >= 2 && t[s.b].type == DSQ_TK_OP && t[s.b].len == 1 && x->sql[t[s.b].off] == '+') {
            s.b++;
        } else if (s.e - s.b >= 6 && dsq_tok_is(x->sql, &t[s.b], "CAST") && t[s.b + 1].type == DSQ_TK_LP &&
                   close_paren(t, s.b + 1, s.e) == s.e - 1) {
            /* CAST ( X AS type ): X, up to its AS at depth 0 */
            size_t as = s.e;
            int depth = 0;
            for (size_t i = s.b + 2; i < s.e - 1 && as == s.e; i++) {
                if (t[i].type == DSQ_TK_LP)
                    depth++;
                else if (t[i].type == DSQ_TK_RP)
                    depth--;
                else if (depth == 0 && dsq_tok_is(x->sql, &t[i], "AS"))
                    as = i;
            }
            if (as == s.e)
                return -1;
            s = (dsq_span){s.b + 2, as};
        } else {
            break;
        }
    }
    char col[DSQ_SQL_NAME];
    long oc = column_ref(x, sel, s.b, s.e, col);
    snprintf(buf, n, "%s", oc >= 0 ? collation(x, sel->tables[oc].table, col) : "BINARY");
    return 0;
}

/* LIMIT and OFFSET's values (the request's parameters bound): 0, or -1
 * when they are not integers. */
static int limit_values(pctx *x, const dsq_select *sel, int64_t *lim, int64_t *off)
{
    *lim = -1;
    *off = 0;
    if (sel->limit.b == sel->limit.e)
        return 0;
    dsq_buf q = {0};
    dsq_buf_printf(&q, "SELECT (%.*s), (%.*s)", (int)dsq_span_len(x->t, sel->limit),
                   x->sql + dsq_span_off(x->t, sel->limit),
                   sel->offset.b == sel->offset.e ? 1 : (int)dsq_span_len(x->t, sel->offset),
                   sel->offset.b == sel->offset.e ? "0" : x->sql + dsq_span_off(x->t, sel->offset));
    buf_cstr(&q);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (q.data && sqlite3_prepare_v2(x->s->db, q.data, -1, &st, NULL) == SQLITE_OK) {
        bool ok = true;
        for (int i = 1; i <= sqlite3_bind_parameter_count(st) && ok; i++) {
            /* The same numbering as the statement's (it is a part of it). */
            const char *name = sqlite3_bind_parameter_name(st, i);
            const dsq_value *v = NULL;
            for (size_t k = 0; k < x->nt && v == NULL; k++) {
                if (x->t[k].type != DSQ_TK_PARAM || k < sel->limit.b)
                    continue;
                if (name == NULL ? false
                                 : (strlen(name) == x->t[k].len && memcmp(name, x->sql + x->t[k].off, x->t[k].len) == 0))
                    v = param_value(x, k);
            }
            if (name == NULL) { /* a bare ?: count them from the LIMIT on */
                size_t seen = 0;
                for (size_t k = sel->limit.b; k < x->nt && v == NULL; k++)
                    if (x->t[k].type == DSQ_TK_PARAM && ++seen == (size_t)i)
                        v = param_value(x, k);
            }
            if (v == NULL) {
                ok = false;
                break;
            }
            switch (v->type) {
            case DSQ_V_INT: sqlite3_bind_int64(st, i, v->i); break;
            case DSQ_V_REAL: sqlite3_bind_double(st, i, v->d); break;
            case DSQ_V_TEXT: sqlite3_bind_text(st, i, v->p, (int)v->n, SQLITE_STATIC); break;
            case DSQ_V_BLOB: sqlite3_bind_blob(st, i, v->p, (int)v->n, SQLITE_STATIC); break;
            default: sqlite3_bind_null(st, i); break;
            }
        }
        if (ok && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER &&
            sqlite3_column_type(st, 1) == SQLITE_INTEGER) {
            *lim = sqlite3_column_int64(st, 0);
            *off = sqlite3_column_int64(st, 1);
            rc = 0;
        }
    }
    sqlite3_finalize(st);
    dsq_buf_free(&q);
    return rc;
}

static bool has_agg(pctx *x, dsq_span s)
{
    for (size_t i = s.b; i + 1 < s.e; i++)
        if (is_agg_name(x->sql, &x->t[i]) && x->t[i + 1].type == DSQ_TK_LP)
            return true;
    return false;
}

/* Build the SCATTER plan of a simple SELECT: 0, or -1 (FETCH answers it;
 * the reason in x->out->msg). `st` is the statement prepared at the router. */
static int scatter(pctx *x, const dsq_select *sel, sqlite3_stmt *st)
{
    dsq_plan *p = x->out;
    size_t ncols = (size_t)sqlite3_column_count(st);
    bool agg = sel->ngroup > 0;
    for (size_t i = 0; i < sel->nitems; i++)
        agg |= has_agg(x, sel->items[i].expr);
    if (sel->having.b != sel->having.e)
        agg = true;
    for (size_t i = 0; i < sel->norder && !agg; i++)
        agg |= has_agg(x, sel->order[i].expr);

    /* Nothing to merge: the shards' rows, one after another. */
    if (!agg && !sel->distinct && sel->norder == 0 && sel->limit.b == sel->limit.e) {
        emit e;
        if (emit_init(x, &e) != 0)
            return -1;
        emit_span(x, &e, (dsq_span){0, sel->end});
        if (emit_take(&e, &p->shard_q) != 0)
            return -1;
        p->shard_cols = ncols;
        snprintf(p->msg, sizeof p->msg, "scatter: rows concatenated");
        return 0;
    }

    rewrite w = {.x = x, .sel = sel};
    emit shard, merge;
    if (emit_init(x, &w.shard) != 0 || emit_init(x, &shard) != 0 || emit_init(x, &merge) != 0)
        return -1;
    dsq_buf ddl = {0};
    int rc = -1;

    if (agg) {
        /* Grouped columns: plain column references, distinct names. */
        for (size_t g = 0; g < sel->ngroup; g++) {
            char col[DSQ_SQL_NAME];
            long oc = column_ref(x, sel, sel->group[g].b, sel->group[g].e, col);
            if (oc < 0) {
                rw_fail(&w, "GROUP BY a term that is not a column");
                goto out;
            }
            for (size_t h = 0; h < w.ngroup; h++)
                if (strcasecmp(w.gcol[h], col) == 0) {
                    rw_fail(&w, "GROUP BY two columns of one name");
                    goto out;
                }
            w.gocc[w.ngroup] = oc;
            snprintf(w.gcol[w.ngroup++], DSQ_SQL_NAME, "%s", col);
        }
        /* The router's statement; the partials fill w.shard meanwhile. */
        emit_str(&merge, "SELECT");
        if (sel->distinct)
            emit_str(&merge, "DISTINCT");
        for (size_t i = 0; i < sel->nitems; i++) {
            if (sel->items[i].star) {
                rw_fail(&w, "* in an aggregate query");
                goto out;
            }
            if (i)
                dsq_buf_puts(&merge.b, ",");
            router_text(&w, &merge, sel->items[i].expr);
            if (sel->items[i].alias[0]) {
                emit_str(&merge, "AS");
                emit_name(&merge, sel->items[i].alias);
            }
        }
        emit_str(&merge, "FROM _dsq_p");
        if (w.ngroup) {
            emit_str(&merge, "GROUP BY");
            for (size_t g = 0; g < w.ngroup; g++) {
                if (g)
                    dsq_buf_puts(&merge.b, ",");
                emit_name(&merge, w.gcol[g]);
            }
        }
        if (sel->having.b != sel->having.e) {
            emit_str(&merge, "HAVING");
            router_text(&w, &merge, sel->having);
        }
        if (sel->norder) {
            emit_str(&merge, "ORDER BY");
            for (size_t i = 0; i < sel->norder; i++) {
                if (i)
                    dsq_buf_puts(&merge.b, ",");
                router_text(&w, &merge, sel->order[i].expr);
                emit_span(x, &merge, sel->order[i].suffix);
            }
        }
        if (sel->limit.b != sel->limit.e) {
            emit_str(&merge, "LIMIT");
            emit_span(x, &merge, sel->limit);
            if (sel->offset.b != sel->offset.e) {
                emit_str(&merge, "OFFSET");
                emit_span(x, &merge, sel->offset);
            }
        }
        if (w.failed)
            goto out;
        /* The shard's statement: grouped columns, then the partials. */
        emit_str(&shard, "SELECT");
        for (size_t g = 0; g < w.ngroup; g++) {
            if (g)
                dsq_buf_puts(&shard.b, ",");
            emit_span(x, &shard, sel->group[g]);
        }
        if (w.npartials) {
            if (w.ngroup)
                dsq_buf_puts(&shard.b, ",");
            dsq_buf_append(&shard.b, " ", 1);
            dsq_buf_append(&shard.b, w.shard.b.data, w.shard.b.len);
            shard.npos = shard.npos > w.shard.npos ? shard.npos : w.shard.npos;
            for (size_t k = 0; w.shard.named && k < x->req->nparams; k++)
                shard.named[k] |= w.shard.named[k];
        }
        if (w.ngroup == 0 && w.npartials == 0) {
            rw_fail(&w, "nothing to compute");
            goto out;
        }
        emit_str(&shard, "FROM");
        emit_span(x, &shard, sel->from);
        if (sel->where.b != sel->where.e) {
            emit_str(&shard, "WHERE");
            emit_span(x, &shard, sel->where);
        }
        if (w.ngroup) {
            emit_str(&shard, "GROUP BY");
            for (size_t g = 0; g < w.ngroup; g++) {
                if (g)
                    dsq_buf_puts(&shard.b, ",");
                emit_span(x, &shard, sel->group[g]);
            }
        }
        dsq_buf_puts(&ddl, "CREATE TABLE _dsq_p(");
        for (size_t g = 0; g < w.ngroup; g++) {
            dsq_buf_printf(&ddl, "%s\"", g ? ", " : "");
            for (const char *c = w.gcol[g]; *c; c++)
                dsq_buf_printf(&ddl, *c == '"' ? "\"\"" : "%c", *c);
            /* Its declared type too: its affinity applies in comparisons at the router. */
            const char *gt = decltype_of(x, sel->tables[w.gocc[g]].table, w.gcol[g]);
            dsq_buf_puts(&ddl, "\" ");
            for (const char *c = gt; *c; c++)
                if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == ' ' ||
                    *c == '(' || *c == ')' || *c == ',')
                    dsq_buf_append(&ddl, c, 1);
            dsq_buf_printf(&ddl, " COLLATE %s", collation(x, sel->tables[w.gocc[g]].table, w.gcol[g]));
        }
        if (w.ngroup == 0 && w.ddl.len > 2)
            dsq_buf_append(&ddl, w.ddl.data + 2, w.ddl.len - 2);
        else
            dsq_buf_append(&ddl, w.ddl.data, w.ddl.len);
        dsq_buf_puts(&ddl, ")");
        p->shard_cols = w.ngroup + w.npartials;
        snprintf(p->msg, sizeof p->msg, "scatter: %zu partial aggregate%s, %zu grouped column%s", w.npartials,
                 w.npartials == 1 ? "" : "s", w.ngroup, w.ngroup == 1 ? "" : "s");
    } else {
        /* Rows, sorted and cut at the router: c1..cN, then the ORDER BY
         * terms that are no result column (_dsq_oK). */
        int64_t lim, off;
        if (limit_values(x, sel, &lim, &off) != 0) {
            rw_fail(&w, "LIMIT or OFFSET not an integer");
            goto out;
        }
        long map[DSQ_SEL_MAX];
        size_t hidden = 0;
        /* With a * among the items, an item's place is not its column's. */
        bool stars = false;
        for (size_t k = 0; k < sel->nitems; k++)
            stars |= sel->items[k].star;
        for (size_t i = 0; i < sel->norder; i++) {
            dsq_span term = {sel->order[i].expr.b, collate_at(x, sel->order[i].expr)};
            map[i] = -1;
            const dsq_tok *t0 = &x->t[term.b];
            if (term.e - term.b == 1 && t0->type == DSQ_TK_NUMBER) {
                long k = digits(x->sql + t0->off, t0->len);
                if (k >= 1 && (size_t)k <= ncols)
                    map[i] = k - 1;
            } else if (term.e - term.b == 1 && (t0->type == DSQ_TK_IDENT || t0->type == DSQ_TK_QIDENT)) {
                char nm[DSQ_SQL_NAME];
                if (dsq_tok_name(x->sql, t0, nm, sizeof nm) == 0)
                    for (size_t k = 0; k < sel->nitems && map[i] < 0 && !stars; k++)
                        if (strcasecmp(sel->items[k].alias, nm) == 0)
                            map[i] = (long)k;
            }
            for (size_t k = 0; k < sel->nitems && map[i] < 0 && !stars; k++)
                if (same_tokens(x, term, sel->items[k].expr))
                    map[i] = (long)k;
            if (map[i] < 0) {
                if (sel->distinct) {
                    rw_fail(&w, "DISTINCT ordered by a term not selected");
                    goto out;
                }
                map[i] = -2 - (long)hidden++;
            }
        }
        emit_str(&shard, "SELECT");
        if (sel->distinct)
            emit_str(&shard, "DISTINCT");
        for (size_t i = 0; i < sel->nitems; i++) {
            if (i)
                dsq_buf_puts(&shard.b, ",");
            emit_span(x, &shard, sel->items[i].expr);
            if (sel->items[i].alias[0]) {
                emit_str(&shard, "AS");
                emit_name(&shard, sel->items[i].alias);
            }
        }
        for (size_t i = 0; i < sel->norder; i++) {
            if (map[i] >= -1)
                continue;
            dsq_buf_puts(&shard.b, ",");
            emit_span(x, &shard, (dsq_span){sel->order[i].expr.b, collate_at(x, sel->order[i].expr)});
            dsq_buf_printf(&shard.b, " AS \"_dsq_o%ld\"", -2 - map[i]);
        }
        emit_str(&shard, "FROM");
        emit_span(x, &shard, sel->from);
        if (sel->where.b != sel->where.e) {
            emit_str(&shard, "WHERE");
            emit_span(x, &shard, sel->where);
        }
        if (sel->norder) {
            emit_str(&shard, "ORDER BY");
            for (size_t i = 0; i < sel->norder; i++) {
                if (i)
                    dsq_buf_puts(&shard.b, ",");
                emit_span(x, &shard, sel->order[i].expr);
                emit_span(x, &shard, sel->order[i].suffix);
            }
        }
        if (lim >= 0)
            dsq_buf_printf(&shard.b, " LIMIT %lld", (long long)(lim + (off > 0 ? off : 0)));
        /* The table at the router, with each column's collation. */
        dsq_buf_puts(&ddl, "CREATE TABLE _dsq_r(");
        for (size_t c = 0; c < ncols; c++) {
            /* Each result column's collation: its item's, by SQLite's rules
             * (with a * among the items, the origin of each column, and
             * then the other items must sort as BINARY). */
            char buf[DSQ_SQL_NAME];
            const char *coll = "BINARY";
            if (!stars) {
                if (expr_collation(x, sel, sel->items[c].expr, buf, sizeof buf) != 0) {
                    rw_fail(&w, "a result column whose collation the router cannot tell");
                    goto out;
                }
                coll = buf;
            } else if (sqlite3_column_table_name(st, (int)c) != NULL) {
                coll = collation(x, sqlite3_column_table_name(st, (int)c), sqlite3_column_origin_name(st, (int)c));
            }
            dsq_buf_printf(&ddl, "%s_dsq_c%zu COLLATE %s", c ? ", " : "", c + 1, coll);
        }
        for (size_t k = 0; stars && k < sel->nitems; k++) {
            char buf[DSQ_SQL_NAME];
            if (!sel->items[k].star &&
                (expr_collation(x, sel, sel->items[k].expr, buf, sizeof buf) != 0 || strcmp(buf, "BINARY") != 0) &&
                column_ref(x, sel, sel->items[k].expr.b, sel->items[k].expr.e, buf) < 0) {
                rw_fail(&w, "a result column beside * whose collation is not BINARY");
                goto out;
            }
        }
        for (size_t i = 0; i < sel->norder; i++) {
            if (map[i] >= -1)
                continue;
            char buf[DSQ_SQL_NAME];
            if (expr_collation(x, sel, sel->order[i].expr, buf, sizeof buf) != 0) {
                rw_fail(&w, "an ORDER BY term whose collation the router cannot tell");
                goto out;
            }
            /* (an explicit COLLATE is applied at the router's ORDER BY) */
            dsq_buf_printf(&ddl, ", _dsq_o%ld COLLATE %s", -2 - map[i], buf);
        }
        dsq_buf_puts(&ddl, ")");
        emit_str(&merge, "SELECT");
        if (sel->distinct)
            emit_str(&merge, "DISTINCT");
        for (size_t c = 0; c < ncols; c++)
            dsq_buf_printf(&merge.b, "%s_dsq_c%zu", c ? ", " : " ", c + 1);
        emit_str(&merge, "FROM _dsq_r");
        if (sel->norder) {
            emit_str(&merge, "ORDER BY");
            for (size_t i = 0; i < sel->norder; i++) {
                if (i)
                    dsq_buf_puts(&merge.b, ",");
                if (map[i] >= 0)
                    dsq_buf_printf(&merge.b, " _dsq_c%ld", map[i] + 1);
                else
                    dsq_buf_printf(&merge.b, " _dsq_o%ld", -2 - map[i]);
                size_t ce = collate_at(x, sel->order[i].expr);
                emit_span(x, &merge, (dsq_span){ce, sel->order[i].expr.e});
                emit_span(x, &merge, sel->order[i].suffix);
            }
        }
        if (lim >= 0 || off > 0) /* (LIMIT -1: no limit, but the offset holds) */
            dsq_buf_printf(&merge.b, " LIMIT %lld OFFSET %lld", (long long)(lim >= 0 ? lim : -1),
                           (long long)(off > 0 ? off : 0));
        p->shard_cols = ncols + hidden;
        snprintf(p->msg, sizeof p->msg, "scatter: rows merged%s%s%s", sel->distinct ? ", distinct" : "",
                 sel->norder ? ", sorted" : "", lim >= 0 ? ", cut" : "");
    }
    /* Both statements must prepare at the router: else FETCH answers. */
    buf_cstr(&ddl);
    if (emit_take(&shard, &p->shard_q) != 0 || emit_take(&merge, &p->merge_q) != 0 || ddl.data == NULL)
        goto out;
    sqlite3_stmt *chk = NULL;
    if (sqlite3_prepare_v2(x->s->db, p->shard_q.sql, -1, &chk, NULL) != SQLITE_OK ||
        (size_t)sqlite3_column_count(chk) != p->shard_cols) {
        sqlite3_finalize(chk);
        rw_fail(&w, "the shards' statement does not prepare");
        goto out;
    }
    sqlite3_finalize(chk);
    if (sqlite3_exec(x->s->db, "SAVEPOINT dsq_chk", NULL, NULL, NULL) != SQLITE_OK) {
        rw_fail(&w, "out of memory");
        goto out;
    }
    bool ok = sqlite3_exec(x->s->db, ddl.data, NULL, NULL, NULL) == SQLITE_OK &&
              sqlite3_prepare_v2(x->s->db, p->merge_q.sql, -1, &chk, NULL) == SQLITE_OK &&
              (size_t)sqlite3_column_count(chk) == ncols;
    sqlite3_finalize(chk);
    sqlite3_exec(x->s->db, "ROLLBACK TO dsq_chk; RELEASE dsq_chk", NULL, NULL, NULL);
    if (!ok) {
        rw_fail(&w, "the router's statement does not prepare");
        goto out;
    }
    p->merge_ddl = ddl.data;
    ddl.data = NULL;
    rc = 0;
out:
    if (rc != 0) {
        snprintf(p->msg, sizeof p->msg, "%s", w.failed ? w.why : "out of memory");
        sql_free(&p->shard_q);
        sql_free(&p->merge_q);
    }
    emit_free(&w.shard);
    emit_free(&shard);
    emit_free(&merge);
    dsq_buf_free(&w.ddl);
    dsq_buf_free(&ddl);
    return rc;
}

/* ---- FETCH ---------------------------------------------------------------------------------------- */

/* Every table of the schema with its columns' types and collations and no
 * constraint (rows of many shards may repeat keys), then the views. */
static int fetch_ddl(pctx *x, dsq_buf *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(x->s->db,
                           "SELECT type, name, sql FROM sqlite_schema WHERE type IN ('table', 'view') AND "
                           "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type = 'view', rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *sql = (const char *)sqlite3_column_text(st, 2);
        if (strcmp(type, "view") == 0) {
            dsq_buf_printf(out, "%s;\n", sql);
            continue;
        }
        dsq_buf_puts(out, "CREATE TABLE ");
        emit e = {0};
        emit_name(&e, name);
        dsq_buf_append(out, e.b.data, e.b.len);
        dsq_buf_puts(out, "(");
        dsq_buf_free(&e.b);
        char q[400];
        snprintf(q, sizeof q, "SELECT name, type FROM pragma_table_xinfo(?1)");
        sqlite3_stmt *ci = NULL;
        if (sqlite3_prepare_v2(x->s->db, q, -1, &ci, NULL) != SQLITE_OK) {
            sqlite3_finalize(st);
            return -1;
        }
        sqlite3_bind_text(ci, 1, name, -1, SQLITE_TRANSIENT);
        bool first = true;
        while (sqlite3_step(ci) == SQLITE_ROW) {
            const char *cn = (const char *)sqlite3_column_text(ci, 0);
            const char *ct = (const char *)sqlite3_column_text(ci, 1);
            emit c = {0};
            emit_name(&c, cn);
            dsq_buf_printf(out, "%s%.*s %s COLLATE %s", first ? "" : ", ", (int)c.b.len, c.b.data, ct ? ct : "",
                           collation(x, name, cn));
            dsq_buf_free(&c.b);
            first = false;
        }
        sqlite3_finalize(ci);
        dsq_buf_puts(out, ");\n");
    }
    sqlite3_finalize(st);
    return buf_cstr(out);
}

/* An authorizer that notes a read of any table but `table`. */
typedef struct only_one {
    const char *table;
    bool other;
} only_one;

static int only_one_auth(void *ud, int action, const char *a1, const char *a2, const char *db, const char *trig)
{
    only_one *o = ud;
    (void)a2;
    (void)db;
    (void)trig;
    if (action == SQLITE_READ && a1 != NULL && strcasecmp(a1, o->table) != 0)
        o->other = true;
    return SQLITE_OK;
}

/* Conjuncts of the WHERE clause that concern occurrence `oc` alone, when
 * filtering its rows before the join changes nothing: only inner joins,
 * the table once in FROM, the conjunct prepared on that table alone. */
static void fetch_filter(pctx *x, const dsq_select *sel, size_t oc, emit *e)
{
    if (sel == NULL || sel->where.b == sel->where.e)
        return;
    for (size_t i = 0; i < sel->ntables; i++) {
        if (sel->tables[i].join == DSQ_JOIN_LEFT || sel->tables[i].join == DSQ_JOIN_OUTER)
            return;
        if (i != oc && strcasecmp(sel->tables[i].table, sel->tables[oc].table) == 0)
            return;
        if (is_view(x, sel->tables[i].table))
            return; /* (a view may read the table too, unfiltered) */
    }
    const dsq_from_table *ft = &sel->tables[oc];
    dsq_span cj[64];
    size_t n = dsq_sql_conjuncts(x->sql, x->t, sel->where, cj, 64);
    if (n > 64)
        n = 64;
    bool any = false;
    for (size_t k = 0; k < n; k++) {
        bool quoted = false;
        for (size_t i = cj[k].b; i < cj[k].e; i++)
            quoted |= x->t[i].type == DSQ_TK_QIDENT && !(i + 1 < cj[k].e && x->t[i + 1].type == DSQ_TK_DOT) &&
                      !(i > cj[k].b && x->t[i - 1].type == DSQ_TK_DOT);
        if (quoted)
            continue; /* "x" may be a string alone, a column of another table in the join */
        emit t;
        if (emit_init(x, &t) != 0)
            return;
        emit_str(&t, "SELECT 1 FROM");
        emit_name(&t, ft->table);
        emit_str(&t, "AS");
        emit_name(&t, ft->alias[0] ? ft->alias : ft->table);
        emit_str(&t, "WHERE");
        emit_span(x, &t, cj[k]);
        buf_cstr(&t.b);
        sqlite3_stmt *st = NULL;
        /* It prepares on that table alone, and reads no other (`x IN t`). */
        only_one one = {ft->table, false};
        sqlite3_set_authorizer(x->s->db, only_one_auth, &one);
        bool ok = t.b.data && sqlite3_prepare_v2(x->s->db, t.b.data, -1, &st, NULL) == SQLITE_OK && !one.other;
        sqlite3_set_authorizer(x->s->db, NULL, NULL);
        sqlite3_finalize(st);
        emit_free(&t);
        if (!ok)
            continue;
        emit_str(e, any ? "AND (" : "WHERE (");
        emit_span(x, e, cj[k]);
        emit_str(e, ")");
        any = true;
    }
}

static int fetch(pctx *x, const dsq_select *sel)
{
    dsq_plan *p = x->out;
    p->kind = DSQ_PLAN_FETCH;
    p->fetch = calloc(x->ntabs ? x->ntabs : 1, sizeof *p->fetch);
    if (p->fetch == NULL)
        return -1;
    for (size_t i = 0; i < x->ntabs; i++) {
        tab *tb = &x->tabs[i];
        if (!tb->read)
            continue;
        if (tb->rowid) {
            refuse(x, "the statement reads the rowid of table '%s', which the router does not carry when it "
                      "evaluates a statement itself (name an INTEGER PRIMARY KEY column instead)", tb->name);
            return 0;
        }
        dsq_plan_fetch *f = &p->fetch[p->nfetch++];
        snprintf(f->table, sizeof f->table, "%s", tb->name);
        f->shard = tb->vs == NULL || tb->vs->type == DSQ_VS_REFERENCE ? 0
                   : tb->vs->type == DSQ_VS_UNSHARDED              ? (long)tb->vs->shard
                                                                   : -1;
        /* The columns read (all of them when the authorizer said more
         * than it can keep). */
        sqlite3_stmt *ci = NULL;
        if (sqlite3_prepare_v2(x->s->db, "SELECT name FROM pragma_table_xinfo(?1)", -1, &ci, NULL) != SQLITE_OK)
            return -1;
        sqlite3_bind_text(ci, 1, tb->name, -1, SQLITE_TRANSIENT);
        size_t all = 0;
        while (sqlite3_step(ci) == SQLITE_ROW)
            all++;
        sqlite3_reset(ci);
        f->cols = calloc(all ? all : 1, sizeof *f->cols);
        if (f->cols == NULL) {
            sqlite3_finalize(ci);
            return -1;
        }
        /* In the table's order: the ones read (all of them when the
         * authorizer named more than it keeps). */
        while (sqlite3_step(ci) == SQLITE_ROW && f->ncols < all) {
            const char *cn = (const char *)sqlite3_column_text(ci, 0);
            bool want = tb->cols_over;
            for (size_t c = 0; c < tb->ncols && !want; c++)
                want = strcasecmp(tb->cols[c], cn) == 0;
            if (!want)
                continue;
            if ((f->cols[f->ncols] = strdup(cn)) == NULL) {
                sqlite3_finalize(ci);
                return -1;
            }
            f->ncols++;
        }
        sqlite3_finalize(ci);
        emit e;
        if (emit_init(x, &e) != 0)
            return -1;
        emit_str(&e, "SELECT");
        for (size_t c = 0; c < f->ncols; c++) {
            if (c)
                dsq_buf_puts(&e.b, ",");
            emit_name(&e, f->cols[c]);
        }
        if (f->ncols == 0)
            emit_str(&e, "NULL");
        emit_str(&e, "FROM");
        emit_name(&e, tb->name);
        /* Its own filters, when the statement is a simple SELECT. */
        for (size_t oc = 0; sel != NULL && oc < sel->ntables; oc++)
            if (strcasecmp(sel->tables[oc].table, tb->name) == 0) {
                if (sel->tables[oc].alias[0]) {
                    emit_str(&e, "AS");
                    emit_name(&e, sel->tables[oc].alias);
                }
                fetch_filter(x, sel, oc, &e);
                break;
            }
        if (emit_take(&e, &f->q) != 0)
            return -1;
    }
    dsq_buf ddl = {0};
    if (fetch_ddl(x, &ddl) != 0) {
        dsq_buf_free(&ddl);
        return -1;
    }
    p->fetch_ddl = ddl.data;
    return 0;
}

/* ---- writes ------------------------------------------------------------------------------------------ */

/* A MULTI plan's participant: shard s runs the statement made of the
 * token spans v[0..n) (in order); with `rows`, v[1..n-1) are rows of
 * VALUES, a comma between each two. 0, or -1 (out of memory). */
/* Room for one more participant's statement in the plan: 0, or -1. */
static int writes_room(dsq_plan *p)
{
    if (p->nwrites < p->wcap)
        return 0;
    size_t cap = p->wcap ? 2 * p->wcap : 8;
    dsq_plan_sql *w = realloc(p->writes, cap * sizeof *w);
    if (w == NULL)
        return -1;
    p->writes = w;
    size_t *ws = realloc(p->write_shard, cap * sizeof *ws);
    if (ws == NULL)
        return -1;
    p->write_shard = ws;
    bool *wa = realloc(p->write_aux, cap * sizeof *wa);
    if (wa == NULL)
        return -1;
    p->write_aux = wa;
    for (size_t i = p->wcap; i < cap; i++)
        wa[i] = false;
    p->wcap = cap;
    return 0;
}

static int add_write_spans(pctx *x, size_t s, const dsq_span *v, size_t n, bool rows)
{
    dsq_plan *p = x->out;
    if (writes_room(p) != 0)
        return -1;
    emit e;
    if (emit_init(x, &e) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (rows && i >= 2 && i + 1 < n)
            dsq_buf_puts(&e.b, ",");
        emit_span(x, &e, v[i]);
    }
    if (emit_take(&e, &p->writes[p->nwrites]) != 0)
        return -1;
    p->write_shard[p->nwrites++] = s;
    p->kind = DSQ_PLAN_MULTI;
    return 0;
}

static int add_write(pctx *x, size_t s, const dsq_span *v, size_t n) { return add_write_spans(x, s, v, n, false); }

static int add_write_rows(pctx *x, size_t s, const dsq_span *v, size_t n)
{
    return add_write_spans(x, s, v, n, true);
}

/* The whole statement on each shard of `targets` (NULL: every shard). */
static int write_everywhere(pctx *x, const bool *targets)
{
    size_t n = x->nt;
    while (n > 0 && x->t[n - 1].type == DSQ_TK_SEMI)
        n--;
    dsq_span all = {0, n};
    for (size_t s = 0; s < x->ks->nshards; s++)
        if ((targets == NULL || targets[s]) && add_write(x, s, &all, 1) != 0)
            return -1;
    return 0;
}

/* The shard an INSERT of sharded table tb writes to: 0; or 1 when its
 * rows go to several shards (x->out is then the MULTI plan of each
 * shard's rows); or -1 after refusing. Every row of VALUES must name its
 * key as a literal or a parameter. */
static int insert_shard(pctx *x, const dsq_vs_table *tb, size_t *shard)
{
    size_t *row_shard = NULL;
    dsq_span *row_span = NULL;
    size_t values_at = 0, tail_at = 0;
    bool several = false;
    const dsq_tok *t = x->t;
    size_t i = 0, n = x->nt;
    while (i < n && t[i].type == DSQ_TK_SEMI)
        i++;
    /* INSERT [OR x] INTO name [AS alias] [(cols)] VALUES (...), ... */
    while (i < n && !dsq_tok_is(x->sql, &t[i], "INTO"))
        i++;
    i += 2; /* INTO name */
    if (i < n && t[i].type == DSQ_TK_DOT) {
        refuse(x, "INSERT into a table named with its schema");
        return -1;
    }
    if (i < n && dsq_tok_is(x->sql, &t[i], "AS"))
        i += 2;
    long keypos = -1;
    if (i < n && t[i].type == DSQ_TK_LP) {
        size_t r = close_paren(t, i, n);
        long pos = 0;
        for (size_t k = i + 1; k < r; k++) {
            if (t[k].type == DSQ_TK_COMMA) {
                pos++;
                continue;
            }
            char nm[DSQ_SQL_NAME];
            if (dsq_tok_name(x->sql, &t[k], nm, sizeof nm) == 0 && strcasecmp(nm, tb->column) == 0)
                keypos = pos;
        }
        i = r + 1;
    } else {
        keypos = column_pos(x, tb->name, tb->column);
    }
    if (keypos < 0) {
        refuse(x, "an INSERT into sharded table '%s' must give its key column '%s'", tb->name, tb->column);
        return -1;
    }
    if (!(i < n && dsq_tok_is(x->sql, &t[i], "VALUES"))) {
        refuse(x, "an INSERT into sharded table '%s' must list its rows in VALUES (not SELECT or DEFAULT VALUES)",
               tb->name);
        return -1;
    }
    values_at = i;
    i++;
    bool have = false;
    size_t rows = 0;
    row_shard = calloc(n, sizeof *row_shard);
    row_span = calloc(n, sizeof *row_span);
    if (row_shard == NULL || row_span == NULL) {
        free(row_shard);
        free(row_span);
        set_msg(x->out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return -1;
    }
#define INSERT_FAIL       \
    do {                  \
        free(row_shard);  \
        free(row_span);   \
        return -1;        \
    } while (0)
    while (i < n && t[i].type == DSQ_TK_LP) {
        size_t r = close_paren(t, i, n);
        long pos = 0;
        size_t vb = i + 1;
        bool got = false;
        for (size_t k = i + 1; k <= r && r < n; k++) {
            if (k < r && (t[k].type == DSQ_TK_LP)) {
                k = close_paren(t, k, r);
                continue;
            }
            if (k < r && t[k].type != DSQ_TK_COMMA)
                continue;
            if (pos == keypos) {
                dsq_value v;
                char buf[4096];
                size_t s;
                if (literal_value(x, vb, k, &v, buf, sizeof buf) != 0) {
                    refuse(x, "the key '%s' of each row inserted into sharded table '%s' must be a literal or "
                              "a parameter", tb->column, tb->name);
                    INSERT_FAIL;
                }
                if (v.type == DSQ_V_NULL || shard_of(x, tb, &v, &s) != 0) {
                    refuse(x, "row %zu inserted into sharded table '%s' has no shard: its key '%s' is NULL or "
                              "not a value vindex '%s' places", rows + 1, tb->name, tb->column,
                           x->ks->vindexes[tb->vindex].name);
                    INSERT_FAIL;
                }
                if (have && s != *shard)
                    several = true;
                if (!have)
                    *shard = s;
                row_shard[rows] = s;
                row_span[rows] = (dsq_span){i, r + 1};
                have = got = true;
            }
            pos++;
            vb = k + 1;
        }
        if (!got) {
            refuse(x, "a row inserted into sharded table '%s' lacks its key '%s'", tb->name, tb->column);
            INSERT_FAIL;
        }
        rows++;
        i = r + 1;
        if (i < n && t[i].type == DSQ_TK_COMMA)
            i++;
        else
            break;
    }
    tail_at = i;
    if (!have) {
        refuse(x, "an INSERT into sharded table '%s' must list its rows in VALUES", tb->name);
        INSERT_FAIL;
    }
    /* An upsert that sets the key would move the row: `key = ...`, or
     * the key in a row-value target `(a, key) = (...)`. */
    for (; i < n; i++)
        if (dsq_tok_is(x->sql, &t[i], "SET")) {
            for (size_t k = i + 1; k < n; k++) {
                char nm[DSQ_SQL_NAME];
                if (!((t[k].type == DSQ_TK_IDENT || t[k].type == DSQ_TK_QIDENT) &&
                      dsq_tok_name(x->sql, &t[k], nm, sizeof nm) == 0 && strcasecmp(nm, tb->column) == 0))
                    continue;
                bool target = k + 1 < n && t[k + 1].type == DSQ_TK_OP && x->sql[t[k + 1].off] == '=' &&
                              t[k + 1].len == 1;
                /* inside a parenthesized list followed by '=' */
                for (size_t l = k; !target && l > i; l--) {
                    if (t[l - 1].type != DSQ_TK_LP)
                        continue;
                    size_t r = close_paren(t, l - 1, n);
                    target = r > k && r + 1 < n && t[r + 1].type == DSQ_TK_OP && x->sql[t[r + 1].off] == '=' &&
                             t[r + 1].len == 1;
                    break;
                }
                if (target) {
                    refuse(x, "this upsert sets the key '%s' of sharded table '%s': moving a row to another "
                              "shard is not supported", tb->column, tb->name);
                    INSERT_FAIL;
                }
            }
            break;
        }
    if (!several) {
        free(row_shard);
        free(row_span);
        return 0;
    }
    /* Each shard its rows: INSERT ... VALUES <its rows> <the rest>. */
    size_t end = n;
    while (end > tail_at && t[end - 1].type == DSQ_TK_SEMI)
        end--;
    dsq_span *parts = calloc(rows + 2, sizeof *parts);
    if (parts == NULL) {
        set_msg(x->out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        INSERT_FAIL;
    }
    for (size_t s = 0; s < x->ks->nshards; s++) {
        size_t np = 0;
        parts[np++] = (dsq_span){0, values_at + 1};
        for (size_t k = 0; k < rows; k++)
            if (row_shard[k] == s)
                parts[np++] = row_span[k];
        if (np == 1)
            continue;
        parts[np++] = (dsq_span){tail_at, end};
        if (add_write_rows(x, s, parts, np) != 0) {
            free(parts);
            set_msg(x->out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
            INSERT_FAIL;
        }
    }
    free(parts);
    free(row_shard);
    free(row_span);
    return 1;
#undef INSERT_FAIL
}

/* Has table.col a DEFAULT other than NULL, or is it generated? */
static bool column_has_default(pctx *x, const char *table, const char *col)
{
    sqlite3_stmt *st = NULL;
    bool d = false;
    if (sqlite3_prepare_v2(x->s->db, "SELECT dflt_value IS NOT NULL AND upper(dflt_value) <> 'NULL' OR hidden IN (2, 3) "
                                     "FROM pragma_table_xinfo(?1) WHERE name = ?2 COLLATE NOCASE",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, col, -1, SQLITE_TRANSIENT);
        d = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
    }
    sqlite3_finalize(st);
    return d;
}

/* The value each row of an INSERT ... VALUES gives column col: spans
 * into out (b == e: the row leaves it out); the number of rows, or -1
 * (not VALUES, too many rows). */
static long row_values(pctx *x, const char *table, const char *col, dsq_span *out, size_t max)
{
    const dsq_tok *t = x->t;
    size_t n = x->nt, i = 0;
    while (n > 0 && t[n - 1].type == DSQ_TK_SEMI)
        n--;
    while (i < n && !dsq_tok_is(x->sql, &t[i], "INTO"))
        i++;
    i += 2;
    if (i < n && dsq_tok_is(x->sql, &t[i], "AS"))
        i += 2;
    long pos = -1;
    if (i < n && t[i].type == DSQ_TK_LP) {
        size_t r = close_paren(t, i, n);
        long k = 0;
        for (size_t j = i + 1; j < r; j++) {
            char nm[DSQ_SQL_NAME];
            if (t[j].type == DSQ_TK_COMMA)
                k++;
            else if (dsq_tok_name(x->sql, &t[j], nm, sizeof nm) == 0 && strcasecmp(nm, col) == 0)
                pos = k;
        }
        i = r + 1;
    } else {
        pos = column_pos(x, table, col);
    }
    if (!(i < n && dsq_tok_is(x->sql, &t[i], "VALUES")))
        return -1;
    size_t rows = 0;
    for (i++; i < n && t[i].type == DSQ_TK_LP && rows < max;) {
        size_t r = close_paren(t, i, n);
        out[rows] = (dsq_span){0, 0};
        long k = 0;
        size_t vb = i + 1;
        for (size_t j = i + 1; j <= r && r < n; j++) {
            if (j < r && t[j].type == DSQ_TK_LP) {
                j = close_paren(t, j, r);
                continue;
            }
            if (j < r && t[j].type != DSQ_TK_COMMA)
                continue;
            if (k == pos)
                out[rows] = (dsq_span){vb, j};
            k++;
            vb = j + 1;
        }
        rows++;
        i = r + 1;
        if (i < n && t[i].type == DSQ_TK_COMMA)
            i++;
        else
            break;
    }
    return i < n && t[i].type == DSQ_TK_LP ? -1 : (long)rows;
}

/* The writes that keep table tb's lookup tables in step with a write to
 * it, added to the plan (made MULTI: a plan that was ONE on `one` gets
 * the statement there first). INSERT: a row (value, key) in each lookup
 * table, on the shard of the value; DELETE by key only: the rows of
 * those keys in each lookup table, on every shard. 0, or -1 after
 * refusing. */
static int lookup_writes(pctx *x, const dsq_vs_table *tb, const char *verb, bool was_one, size_t one)
{
    dsq_plan *p = x->out;
    const dsq_tok *t = x->t;
    size_t n = x->nt;
    while (n > 0 && t[n - 1].type == DSQ_TK_SEMI)
        n--;
    bool insert = strcmp(verb, "INSERT") == 0 || strcmp(verb, "REPLACE") == 0;
    if (insert) {
        for (size_t i = 0; i < n; i++)
            if (dsq_tok_is(x->sql, &t[i], "REPLACE") || dsq_tok_is(x->sql, &t[i], "CONFLICT") ||
                (dsq_tok_is(x->sql, &t[i], "OR") && i == 1)) {
                refuse(x, "table '%s' has a lookup vindex: upserts, REPLACE and INSERT OR ... on it are not "
                          "supported (its lookup rows would not follow)", tb->name);
                return -1;
            }
    }
    if (was_one) {
        dsq_span all = {0, n};
        if (add_write(x, one, &all, 1) != 0)
            goto oom;
    }
    for (size_t l = 0; l < tb->nlookups; l++) {
        const dsq_vs_vindex *vx = &x->ks->vindexes[tb->lookups[l].vindex];
        const dsq_vs_table *lt = &x->ks->tables[vx->table_idx];
        if (insert) {
            dsq_span vals[256], keys[256];
            long rows = row_values(x, tb->name, tb->lookups[l].column, vals, 256);
            long krows = row_values(x, tb->name, tb->column, keys, 256);
            if (rows < 0 || krows != rows) {
                refuse(x, "an INSERT into '%s' (it has a lookup vindex) lists its rows in VALUES, 256 at most",
                       tb->name);
                return -1;
            }
            for (long r = 0; r < rows; r++) {
                if (vals[r].b == vals[r].e && column_has_default(x, tb->name, tb->lookups[l].column)) {
                    refuse(x, "an INSERT into '%s' leaves out lookup column '%s', which has a default or is "
                              "generated: give its value", tb->name, tb->lookups[l].column);
                    return -1;
                }
                if (vals[r].b == vals[r].e)
                    continue; /* (left out, no default: NULL, no lookup row) */
                dsq_value v;
                char buf[4096];
                size_t s;
                if (literal_value(x, vals[r].b, vals[r].e, &v, buf, sizeof buf) != 0) {
                    refuse(x, "the value of lookup column '%s' in each row inserted into '%s' must be a literal or "
                              "a parameter", tb->lookups[l].column, tb->name);
                    return -1;
                }
                if (v.type == DSQ_V_NULL)
                    continue;
                if (shard_of(x, lt, &v, &s) != 0) {
                    refuse(x, "a value of lookup column '%s' has no shard in lookup table '%s'",
                           tb->lookups[l].column, lt->name);
                    return -1;
                }
                emit e;
                if (emit_init(x, &e) != 0)
                    goto oom;
                emit_str(&e, "INSERT INTO");
                emit_name(&e, lt->name);
                emit_str(&e, "(");
                emit_name(&e, vx->from);
                emit_str(&e, ",");
                emit_name(&e, vx->to);
                emit_str(&e, ") VALUES (");
                emit_span(x, &e, vals[r]);
                emit_str(&e, ",");
                emit_span(x, &e, keys[r]);
                emit_str(&e, ")");
                if (writes_room(p) != 0 || emit_take(&e, &p->writes[p->nwrites]) != 0) {
                    emit_free(&e);
                    goto oom;
                }
                p->write_aux[p->nwrites] = true;
                p->write_shard[p->nwrites++] = s;
            }
        } else {
            /* DELETE: WHERE is the key alone (`key = v`, `key IN (...)`). */
            size_t w = 0;
            while (w < n && !dsq_tok_is(x->sql, &t[w], "WHERE"))
                w++;
            dsq_span cj[4];
            size_t nc = w < n ? dsq_sql_conjuncts(x->sql, t, (dsq_span){w + 1, n}, cj, 4) : 0;
            size_t op = 0;
            bool ok = nc == 1;
            if (ok) {
                for (op = cj[0].b; op < cj[0].e; op++)
                    if ((t[op].type == DSQ_TK_OP && x->sql[t[op].off] == '=') || dsq_tok_is(x->sql, &t[op], "IN"))
                        break;
                char nm[DSQ_SQL_NAME];
                ok = op < cj[0].e && op - cj[0].b >= 1 &&
                     dsq_tok_name(x->sql, &t[op - 1], nm, sizeof nm) == 0 && strcasecmp(nm, tb->column) == 0;
                for (size_t k = op + 1; ok && k < cj[0].e; k++)
                    ok = t[k].type != DSQ_TK_IDENT || dsq_tok_is(x->sql, &t[k], "NULL");
            }
            if (!ok) {
                refuse(x, "a DELETE from '%s' (it has a lookup vindex) must name its rows by their key alone "
                          "(WHERE %s = value or %s IN (values)), so that their lookup rows go with them",
                       tb->name, tb->column, tb->column);
                return -1;
            }
            for (size_t s = 0; s < x->ks->nshards; s++) {
                emit e;
                if (emit_init(x, &e) != 0)
                    goto oom;
                emit_str(&e, "DELETE FROM");
                emit_name(&e, lt->name);
                emit_str(&e, "WHERE");
                emit_name(&e, vx->to);
                emit_span(x, &e, (dsq_span){op, cj[0].e});
                if (writes_room(p) != 0 || emit_take(&e, &p->writes[p->nwrites]) != 0) {
                    emit_free(&e);
                    goto oom;
                }
                p->write_aux[p->nwrites] = true;
                p->write_shard[p->nwrites++] = s;
            }
        }
    }
    p->kind = DSQ_PLAN_MULTI;
    snprintf(p->msg, sizeof p->msg, "multi: %zu statements with the lookup tables'", p->nwrites);
    return 0;
oom:
    set_msg(p, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
    return -1;
}

/* Does this UPDATE set a lookup column of tb (`col =`, or in a row-value
 * target)? Then it refuses (the lookup row would not follow) and says so. */
static bool sets_lookup_column(pctx *x, const dsq_vs_table *tb)
{
    const dsq_tok *t = x->t;
    size_t n = x->nt, set = 0;
    while (set < n && !dsq_tok_is(x->sql, &t[set], "SET"))
        set++;
    for (size_t k = set + 1; k < n && !dsq_tok_is(x->sql, &t[k], "WHERE"); k++) {
        char nm[DSQ_SQL_NAME];
        if (!((t[k].type == DSQ_TK_IDENT || t[k].type == DSQ_TK_QIDENT) && dsq_tok_name(x->sql, &t[k], nm, sizeof nm) == 0))
            continue;
        bool lookup = false;
        for (size_t l = 0; l < tb->nlookups && !lookup; l++)
            lookup = strcasecmp(tb->lookups[l].column, nm) == 0;
        if (!lookup)
            continue;
        bool target = k + 1 < n && t[k + 1].type == DSQ_TK_OP && t[k + 1].len == 1 && x->sql[t[k + 1].off] == '=';
        for (size_t l = k; !target && l > set + 1; l--) {
            if (t[l - 1].type != DSQ_TK_LP)
                continue;
            size_t r = close_paren(t, l - 1, n);
            target = r > k && r + 1 < n && t[r + 1].type == DSQ_TK_OP && t[r + 1].len == 1 &&
                     x->sql[t[r + 1].off] == '=';
            break;
        }
        if (target) {
            refuse(x, "this UPDATE sets lookup column '%s' of '%s': change it with a DELETE and an INSERT (its "
                      "lookup row would not follow)", nm, tb->name);
            return true;
        }
    }
    return false;
}

/* UPDATE or DELETE of sharded table tb: the one shard its WHERE clause
 * restricts it to: 0, or -1 after refusing. */
static int update_shard(pctx *x, const dsq_vs_table *tb, bool update, size_t *shard)
{
    const dsq_tok *t = x->t;
    size_t n = x->nt;
    while (n > 0 && t[n - 1].type == DSQ_TK_SEMI)
        n--;
    size_t i = 0;
    while (i < n && !dsq_tok_is(x->sql, &t[i], update ? "UPDATE" : "FROM"))
        i++;
    i++;
    if (update && i < n && dsq_tok_is(x->sql, &t[i], "OR"))
        i += 2;
    dsq_select sel;
    memset(&sel, 0, sizeof sel);
    sel.ntables = 1;
    if (i >= n || dsq_tok_name(x->sql, &t[i], sel.tables[0].table, DSQ_SQL_NAME) != 0) {
        refuse(x, "an UPDATE or DELETE not understood");
        return -1;
    }
    i++;
    if (i < n && dsq_tok_is(x->sql, &t[i], "AS") && i + 1 < n) {
        dsq_tok_name(x->sql, &t[i + 1], sel.tables[0].alias, DSQ_SQL_NAME);
        i += 2;
    }
    /* Find WHERE at depth 0, and in an UPDATE the columns set before it. */
    size_t where = n, wend = n;
    int depth = 0;
    for (size_t k = i; k < n; k++) {
        if (t[k].type == DSQ_TK_LP)
            depth++;
        else if (t[k].type == DSQ_TK_RP)
            depth--;
        else if (depth == 0 && where == n && dsq_tok_is(x->sql, &t[k], "FROM") && update) {
            refuse(x, "UPDATE ... FROM on a keyspace is not supported");
            return -1;
        } else if (depth == 0 && where == n && dsq_tok_is(x->sql, &t[k], "WHERE")) {
            where = k;
        } else if (depth == 0 && where < n && wend == n &&
                   (dsq_tok_is(x->sql, &t[k], "RETURNING") || dsq_tok_is(x->sql, &t[k], "ORDER") ||
                    dsq_tok_is(x->sql, &t[k], "LIMIT"))) {
            wend = k;
        }
        if (update && where == n && (t[k].type == DSQ_TK_IDENT || t[k].type == DSQ_TK_QIDENT)) {
            char nm[DSQ_SQL_NAME];
            bool assigned = k + 1 < n && t[k + 1].type == DSQ_TK_OP && x->sql[t[k + 1].off] == '=' &&
                            t[k + 1].len == 1 && (t[k - 1].type == DSQ_TK_COMMA || t[k - 1].type == DSQ_TK_LP ||
                                                  dsq_tok_is(x->sql, &t[k - 1], "SET"));
            bool in_list = depth > 0 && (t[k - 1].type == DSQ_TK_COMMA || t[k - 1].type == DSQ_TK_LP);
            if ((assigned || in_list) && dsq_tok_name(x->sql, &t[k], nm, sizeof nm) == 0 &&
                strcasecmp(nm, tb->column) == 0) {
                refuse(x, "this UPDATE sets the key '%s' of sharded table '%s': moving a row to another shard "
                          "is not supported", tb->column, tb->name);
                return -1;
            }
        }
    }
    occ o[1] = {{.ft = &sel.tables[0], .vs = tb, .group = 0}};
    if (where < n) {
        dsq_span cj[64];
        size_t nc = dsq_sql_conjuncts(x->sql, t, (dsq_span){where + 1, wend}, cj, 64);
        for (size_t k = 0; k < nc && k < 64; k++)
            conjunct(x, &sel, o, cj[k], true);
    }
    if (x->hints == NULL && x->look_needed && o[0].allowed == NULL) {
        x->out->kind = DSQ_PLAN_LOOKUP; /* its shard by a lookup first */
        snprintf(x->out->msg, sizeof x->out->msg, "lookup: %zu value%s first", x->out->nlookups,
                 x->out->nlookups == 1 ? "" : "s");
        return 2;
    }
    size_t count = 0;
    for (size_t s = 0; o[0].allowed && s < x->ks->nshards; s++)
        if (o[0].allowed[s]) {
            *shard = s;
            count++;
        }
    if (o[0].allowed == NULL || count > 1) {
        /* Every shard it may touch runs it, in one cross-shard transaction. */
        int rc = write_everywhere(x, o[0].allowed);
        free(o[0].allowed);
        if (rc != 0) {
            set_msg(x->out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
            return -1;
        }
        return 1;
    }
    free(o[0].allowed);
    if (count == 0)
        *shard = 0; /* no row can match: any shard answers */
    return 0;
}

/* ---- the plan ---------------------------------------------------------------------------------------- */

static void plan_read(pctx *x, sqlite3_stmt *st)
{
    dsq_plan *p = x->out;
    const dsq_vs_keyspace *ks = x->ks;
    size_t nsharded = 0, unsharded_shard = 0, nunsharded = 0;
    bool split_unsharded = false;
    for (size_t i = 0; i < x->ntabs; i++) {
        const dsq_vs_table *vs = x->tabs[i].vs;
        if (vs == NULL || vs->type == DSQ_VS_REFERENCE)
            continue;
        if (vs->type == DSQ_VS_SHARDED) {
            nsharded++;
        } else {
            if (nunsharded && vs->shard != unsharded_shard)
                split_unsharded = true;
            unsharded_shard = vs->shard;
            nunsharded++;
        }
    }
    if (nsharded == 0 && !split_unsharded) {
        p->kind = DSQ_PLAN_ONE;
        p->shard = unsharded_shard;
        snprintf(p->msg, sizeof p->msg, "one: %s", nunsharded ? "unsharded tables" : "reference tables only");
        return;
    }
    dsq_select *sel = calloc(1, sizeof *sel);
    char why[128] = "";
    if (sel == NULL)
        goto oom;
    if (nsharded == 0 || dsq_select_parse(x->sql, x->t, x->nt, sel, why, sizeof why) != 0) {
        if (nsharded == 0)
            snprintf(why, sizeof why, "unsharded tables on different shards");
        free(sel);
        sel = NULL;
        goto fetch;
    }
    if (nunsharded > 0) {
        snprintf(why, sizeof why, "sharded and unsharded tables together");
        goto fetch;
    }
    for (size_t i = 0; i < sel->ntables; i++)
        if (is_view(x, sel->tables[i].table)) {
            snprintf(why, sizeof why, "a view over sharded tables");
            goto fetch;
        }
    /* Every table it reads is in FROM (not: `x IN t`, which reads t
     * without naming it there). */
    for (size_t k = 0; k < x->ntabs; k++) {
        const tab *tb = &x->tabs[k];
        bool in_from = !tb->read || tb->vs == NULL;
        for (size_t i = 0; i < sel->ntables && !in_from; i++)
            in_from = strcasecmp(sel->tables[i].table, tb->name) == 0;
        if (!in_from) {
            snprintf(why, sizeof why, "a table read outside FROM");
            goto fetch;
        }
    }
    /* Outer joins: each shard's rows must be its own. A RIGHT or FULL
     * join keeps rows of its left side that another shard may join; a
     * LEFT join of a sharded table to rows every shard has (only
     * reference tables so far) makes each shard null-extend all of them. */
    {
        const dsq_vs_table *v0 = dsq_vs_table_find(ks, sel->tables[0].table);
        bool partitioned = v0 != NULL && v0->type == DSQ_VS_SHARDED;
        for (size_t i = 1; i < sel->ntables; i++) {
            const dsq_vs_table *vi = dsq_vs_table_find(ks, sel->tables[i].table);
            bool sharded = vi != NULL && vi->type == DSQ_VS_SHARDED;
            if (sel->tables[i].join == DSQ_JOIN_OUTER) {
                snprintf(why, sizeof why, "a RIGHT or FULL join with sharded tables");
                goto fetch;
            }
            if (sel->tables[i].join == DSQ_JOIN_LEFT) {
                if (sharded && !partitioned) {
                    snprintf(why, sizeof why, "a LEFT join of a sharded table to rows every shard has");
                    goto fetch;
                }
            } else {
                partitioned = partitioned || sharded;
            }
        }
    }
    /* The occurrences, their co-sharded groups and restrictions. */
    occ o[DSQ_SEL_MAX];
    memset(o, 0, sizeof o);
    for (size_t i = 0; i < sel->ntables; i++) {
        o[i].ft = &sel->tables[i];
        o[i].vs = dsq_vs_table_find(ks, sel->tables[i].table);
        o[i].group = (int)i;
    }
    for (size_t i = 0; i < sel->ntables; i++) {
        const dsq_from_table *ft = &sel->tables[i];
        bool inner = ft->join == DSQ_JOIN_FIRST || ft->join == DSQ_JOIN_INNER || ft->join == DSQ_JOIN_CROSS;
        if (ft->on.b != ft->on.e) {
            dsq_span cj[64];
            size_t n = dsq_sql_conjuncts(x->sql, x->t, ft->on, cj, 64);
            for (size_t k = 0; k < n && k < 64; k++)
                conjunct(x, sel, o, cj[k], inner);
        }
        if (ft->using_.b != ft->using_.e) {
            /* USING (col, ...): the key of this table and of an earlier one. */
            for (size_t k = ft->using_.b; k < ft->using_.e; k++) {
                char col[DSQ_SQL_NAME];
                if (dsq_tok_name(x->sql, &x->t[k], col, sizeof col) != 0 || !is_key(x, o, (long)i, col))
                    continue;
                for (size_t j = 0; j < i; j++)
                    if (is_key(x, o, (long)j, col) && o[j].vs->vindex == o[i].vs->vindex &&
                        affinity_of(decltype_of(x, o[j].vs->name, col)) ==
                            affinity_of(decltype_of(x, o[i].vs->name, col)))
                        o[uf_find(o, (int)i)].group = uf_find(o, (int)j);
            }
        }
    }
    if (sel->where.b != sel->where.e) {
        dsq_span cj[64];
        size_t n = dsq_sql_conjuncts(x->sql, x->t, sel->where, cj, 64);
        for (size_t k = 0; k < n && k < 64; k++)
            conjunct(x, sel, o, cj[k], true);
    }
    /* Values of lookup columns to look up first: the plan is the lookups;
     * with their answers the statement is planned again. */
    if (x->hints == NULL && x->look_needed) {
        for (size_t i = 0; i < sel->ntables; i++)
            free(o[i].allowed);
        free(sel);
        p->kind = DSQ_PLAN_LOOKUP;
        snprintf(p->msg, sizeof p->msg, "lookup: %zu value%s first", p->nlookups, p->nlookups == 1 ? "" : "s");
        return;
    }
    int group = -1;
    bool cosharded = true;
    bool *set = calloc(ks->nshards, sizeof *set);
    if (set == NULL)
        goto oom;
    for (size_t s = 0; s < ks->nshards; s++)
        set[s] = true;
    for (size_t i = 0; i < sel->ntables; i++) {
        if (o[i].vs == NULL || o[i].vs->type != DSQ_VS_SHARDED)
            continue;
        int g = uf_find(o, (int)i);
        if (group >= 0 && g != group)
            cosharded = false;
        group = g;
        for (size_t s = 0; o[i].allowed && s < ks->nshards; s++)
            set[s] = set[s] && o[i].allowed[s];
    }
    for (size_t i = 0; i < sel->ntables; i++)
        free(o[i].allowed);
    if (!cosharded) {
        free(set);
        snprintf(why, sizeof why, "a join of sharded tables not on their shard keys");
        goto fetch;
    }
    size_t count = 0, one = 0;
    for (size_t s = 0; s < ks->nshards; s++)
        if (set[s]) {
            count++;
            if (count == 1)
                one = s;
        }
    if (count <= 1) {
        free(set);
        free(sel);
        p->kind = DSQ_PLAN_ONE;
        p->shard = one; /* (none: the restrictions exclude each other; any shard answers) */
        snprintf(p->msg, sizeof p->msg, "one: restricted by shard key");
        return;
    }
    p->kind = DSQ_PLAN_SCATTER;
    p->targets = set;
    p->nshards = ks->nshards;
    if (scatter(x, sel, st) == 0) {
        free(sel);
        return;
    }
    snprintf(why, sizeof why, "%.120s", p->msg);
    free(p->targets);
    p->targets = NULL;
fetch:
    if (fetch(x, sel) != 0) {
        free(sel);
        goto oom;
    }
    free(sel);
    if (p->kind == DSQ_PLAN_FETCH)
        snprintf(p->msg, sizeof p->msg, "fetch: %s", why);
    return;
oom:
    set_msg(p, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
}

/* An INSERT into a table with auto_increment: the rows that leave its
 * column out, or give it NULL, get a new parameter for a sequence value
 * each. 0 when none needs one; 1 with the SEQUENCE plan; -1 after
 * refusing. */
static int auto_fill(pctx *x, const dsq_vs_table *tb)
{
    const dsq_tok *t = x->t;
    size_t n = x->nt;
    while (n > 0 && t[n - 1].type == DSQ_TK_SEMI)
        n--;
    size_t i = 0;
    while (i < n && !dsq_tok_is(x->sql, &t[i], "INTO"))
        i++;
    i += 2;
    if (i < n && t[i].type == DSQ_TK_DOT) {
        refuse(x, "an INSERT into '%s' (its column '%s' takes values from a sequence) names its table without "
                  "a schema", tb->name, tb->auto_column);
        return -1;
    }
    if (i < n && dsq_tok_is(x->sql, &t[i], "AS"))
        i += 2;
    long pos = -1;          /* the column's place in the rows */
    size_t list_end = 0;    /* the column list's ')' when the column is not in it */
    bool listed = i < n && t[i].type == DSQ_TK_LP;
    if (listed) {
        size_t r = close_paren(t, i, n);
        long k = 0;
        for (size_t j = i + 1; j < r; j++) {
            if (t[j].type == DSQ_TK_COMMA) {
                k++;
                continue;
            }
            char nm[DSQ_SQL_NAME];
            if (dsq_tok_name(x->sql, &t[j], nm, sizeof nm) == 0 && strcasecmp(nm, tb->auto_column) == 0)
                pos = k;
        }
        if (pos < 0)
            list_end = r;
        i = r + 1;
    } else {
        pos = column_pos(x, tb->name, tb->auto_column);
        if (pos < 0)
            return 0; /* (no such column: SQLite said so at prepare, or will) */
    }
    if (!(i < n && dsq_tok_is(x->sql, &t[i], "VALUES"))) {
        /* (SQLite would number such rows itself, beside the sequence) */
        refuse(x, "an INSERT into '%s' (its column '%s' takes values from a sequence) lists its rows in VALUES "
                  "(not SELECT or DEFAULT VALUES)", tb->name, tb->auto_column);
        return -1;
    }
    /* Each row that needs a value: where it goes (a NULL to replace, or
     * the row's ')' to add it before), in the order of the text. */
    size_t *at = calloc(n, sizeof *at);
    bool *replace = calloc(n, sizeof *replace);
    if (at == NULL || replace == NULL) {
        free(at);
        free(replace);
        set_msg(x->out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return -1;
    }
    size_t rows = 0, need = 0;
    for (i++; i < n && t[i].type == DSQ_TK_LP;) {
        size_t r = close_paren(t, i, n);
        if (pos >= 0 && list_end == 0) {
            long k = 0;
            size_t vb = i + 1;
            for (size_t j = i + 1; j <= r; j++) {
                if (j < r && t[j].type == DSQ_TK_LP) {
                    j = close_paren(t, j, r);
                    continue;
                }
                if (j < r && t[j].type != DSQ_TK_COMMA)
                    continue;
                const dsq_value *pv = t[vb].type == DSQ_TK_PARAM ? param_value(x, vb) : NULL;
                if (k == pos && j == vb + 1 &&
                    (dsq_tok_is(x->sql, &t[vb], "NULL") || (pv != NULL && pv->type == DSQ_V_NULL))) {
                    at[need] = vb;
                    replace[need] = true;
                    need++;
                }
                k++;
                vb = j + 1;
            }
        } else {
            at[need] = r; /* added before the row's ')' */
            need++;
        }
        rows++;
        i = r + 1;
        if (i < n && t[i].type == DSQ_TK_COMMA)
            i++;
        else
            break;
    }
    if (need == 0) {
        free(at);
        free(replace);
        return 0;
    }
    /* The INSERT again, with the new parameters. */
    int max = 0;
    for (size_t k = 0; k < x->nt; k++)
        if (x->pidx[k] > max)
            max = x->pidx[k];
    dsq_plan *p = x->out;
    emit e;
    if (emit_init(x, &e) != 0) {
        free(at);
        free(replace);
        set_msg(p, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return -1;
    }
    size_t next = 0, added = 0;
    bool named = x->req->named;
    for (size_t k = 0; k < n; k++) {
        bool fill = next < need && at[next] == k;
        if (fill && replace[next]) { /* NULL: the value in its place */
            added++;
            if (named)
                dsq_buf_printf(&e.b, " :_dsq_seq%zu", added);
            else
                dsq_buf_printf(&e.b, " ?%zu", (size_t)max + added);
            next++;
            continue;
        }
        if (list_end != 0 && k == list_end) { /* the column, last in the list */
            dsq_buf_puts(&e.b, ",");
            emit_name(&e, tb->auto_column);
        }
        if (fill) { /* a row's ')': its value last in the row */
            added++;
            if (named)
                dsq_buf_printf(&e.b, ", :_dsq_seq%zu", added);
            else
                dsq_buf_printf(&e.b, ", ?%zu", (size_t)max + added);
            next++;
        }
        emit_tok(x, &e, k);
    }
    free(at);
    free(replace);
    if (emit_take(&e, &p->seq_q) != 0) {
        set_msg(p, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return -1;
    }
    p->kind = DSQ_PLAN_SEQUENCE;
    p->seq_table = tb->auto_seq;
    p->seq_count = need;
    p->seq_first = (size_t)max + 1;
    snprintf(p->msg, sizeof p->msg, "sequence: %zu value%s of %s", need, need == 1 ? "" : "s",
             x->ks->tables[tb->auto_seq].name);
    return 1;
}

static void plan_write(pctx *x)
{
    dsq_plan *p = x->out;
    const tab *w = NULL;
    for (size_t i = 0; i < x->ntabs; i++)
        if (x->tabs[i].written) {
            if (w != NULL) {
                refuse(x, "the statement writes more than one table");
                return;
            }
            w = &x->tabs[i];
        }
    if (w == NULL || w->vs == NULL) {
        refuse(x, "a write the router cannot place");
        return;
    }
    /* A trigger's writes happen on the shard that fired it, unrouted. */
    if (has_triggers(x, w->name)) {
        refuse(x, "table '%s' has triggers: their writes would land on whatever shard fired them, not where the "
                  "router would place them; writes to it through the keyspace are not supported",
               w->name);
        return;
    }
    /* What it reads besides must be where it writes. */
    for (size_t i = 0; i < x->ntabs; i++) {
        const tab *tb = &x->tabs[i];
        if (tb == w || tb->vs == NULL || tb->vs->type == DSQ_VS_REFERENCE)
            continue;
        if (tb->vs->type == DSQ_VS_SHARDED || w->vs->type != DSQ_VS_UNSHARDED || tb->vs->shard != w->vs->shard) {
            refuse(x, "a write to '%s' that reads table '%s' of another shard: not supported", w->name, tb->name);
            return;
        }
    }
    p->write = true;
    if (w->vs->type == DSQ_VS_SHARDED)
        for (size_t i = 1; i < x->nt; i++)
            if (dsq_tok_is(x->sql, &x->t[i], "SELECT")) {
                refuse(x, "a write to sharded table '%s' with a subquery: the subquery would see one shard's "
                          "rows only; not supported", w->name);
                return;
            }
    char verb[16];
    dsq_sql_verb(x->sql, x->t, x->nt, verb, sizeof verb);
    if ((w->vs->auto_column[0] || w->vs->nlookups > 0) && strcmp(verb, "WITH") == 0) {
        refuse(x, "WITH ... INSERT into '%s' (it has %s) is not supported: write the INSERT on its own", w->name,
               w->vs->auto_column[0] ? "a column taking values from a sequence" : "a lookup vindex");
        return;
    }
    if (w->vs->auto_column[0] && (strcmp(verb, "INSERT") == 0 || strcmp(verb, "REPLACE") == 0)) {
        int rc = auto_fill(x, w->vs);
        if (rc != 0)
            return; /* the SEQUENCE plan, or refused */
    }
    switch (w->vs->type) {
    case DSQ_VS_REFERENCE:
        /* Every shard holds it: all of them, in one cross-shard transaction
         * — each computing the same values. */
        if (x->volatile_fn[0]) {
            refuse(x, "a write to reference table '%s' calls %s(), which would give each shard's copy another "
                      "value: compute it first and pass it as a parameter",
                   w->name, x->volatile_fn);
            return;
        }
        if (write_everywhere(x, NULL) != 0) {
            set_msg(p, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
            return;
        }
        snprintf(p->msg, sizeof p->msg, "multi: a reference table on every shard");
        return;
    case DSQ_VS_UNSHARDED:
        p->kind = DSQ_PLAN_ONE;
        p->shard = w->vs->shard;
        snprintf(p->msg, sizeof p->msg, "one: unsharded table");
        return;
    case DSQ_VS_SEQUENCE:
        refuse(x, "'%s' is a sequence of the keyspace, not a table", w->name);
        return;
    case DSQ_VS_SHARDED: {
        size_t shard = 0;
        if (w->vs->nlookups > 0 && strcmp(verb, "UPDATE") == 0 && sets_lookup_column(x, w->vs))
            return;
        int rc = strcmp(verb, "INSERT") == 0 || strcmp(verb, "REPLACE") == 0 ? insert_shard(x, w->vs, &shard)
                 : strcmp(verb, "UPDATE") == 0                               ? update_shard(x, w->vs, true, &shard)
                 : strcmp(verb, "DELETE") == 0                               ? update_shard(x, w->vs, false, &shard)
                                                                             : (refuse(x, "a write not understood"), -1);
        if (rc < 0 || rc == 2)
            return;
        /* Its lookup tables' rows go with it, in the same transaction. */
        if (w->vs->nlookups > 0 && strcmp(verb, "UPDATE") != 0) {
            lookup_writes(x, w->vs, verb, rc == 0, shard);
            return;
        }
        if (rc > 0) {
            snprintf(p->msg, sizeof p->msg, "multi: %zu shards in one cross-shard transaction", p->nwrites);
            return;
        }
        p->kind = DSQ_PLAN_ONE;
        p->shard = shard;
        snprintf(p->msg, sizeof p->msg, "one: written by shard key");
        return;
    }
    }
}

void dsq_plan_make(dsq_ks_schema *s, const dsq_vs_keyspace *ks, const dsq_stmt_req *req, dsq_plan *out)
{
    dsq_plan_make_hinted(s, ks, req, NULL, out);
}

int dsq_plan_shard_of(dsq_ks_schema *s, const dsq_vs_keyspace *ks, size_t table, const dsq_value *v, size_t *shard)
{
    pctx x = {.s = s, .ks = ks};
    if (table >= ks->ntables || ks->tables[table].type != DSQ_VS_SHARDED)
        return -1;
    return shard_of(&x, &ks->tables[table], v, shard);
}

void dsq_plan_make_hinted(dsq_ks_schema *s, const dsq_vs_keyspace *ks, const dsq_stmt_req *req,
                          const dsq_plan_hints *hints, dsq_plan *out)
{
    memset(out, 0, sizeof *out);
    pctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        set_msg(out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    x->s = s;
    x->ks = ks;
    x->req = req;
    x->out = out;
    x->sql = req->sql;
    x->hints = hints;
    char err[256];
    sqlite3_stmt *st = NULL;
    if (dsq_sql_tokenize(req->sql, req->sql_len, &x->t, &x->nt, err, sizeof err) != 0) {
        set_msg(out, DSQ_PLAN_ERROR, DSQ_CODE_SYNTAX_ERROR, "%s", err);
        goto done;
    }
    if (number_params(x) != 0) {
        set_msg(out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        goto done;
    }
    char verb[16];
    dsq_sql_verb(x->sql, x->t, x->nt, verb, sizeof verb);
    if (strcmp(verb, "CREATE") == 0)
        for (size_t i = 1; i < x->nt && i < 4; i++)
            if (dsq_tok_is(x->sql, &x->t[i], "TRIGGER")) {
                refuse(x, "CREATE TRIGGER on a keyspace is not supported: a trigger's writes land on the shard "
                          "that fired it, not where the router places rows");
                goto done;
            }
    if (strcmp(verb, "CREATE") == 0 || strcmp(verb, "DROP") == 0 || strcmp(verb, "ALTER") == 0) {
        for (size_t i = 1; i < x->nt; i++)
            if (dsq_tok_is(x->sql, &x->t[i], "SELECT") && strcmp(verb, "CREATE") == 0 &&
                !dsq_tok_is(x->sql, &x->t[1], "VIEW") && !dsq_tok_is(x->sql, &x->t[1], "TRIGGER") &&
                !(x->nt > 2 && dsq_tok_is(x->sql, &x->t[2], "VIEW"))) {
                refuse(x, "CREATE TABLE ... AS SELECT on a keyspace is not supported: create the table, then "
                          "insert");
                goto done;
            }
        out->kind = DSQ_PLAN_ALL;
        out->write = true;
        snprintf(out->msg, sizeof out->msg, "all: schema change on every shard");
        goto done;
    }
    if (strcmp(verb, "SELECT") != 0 && strcmp(verb, "WITH") != 0 && strcmp(verb, "VALUES") != 0 &&
        strcmp(verb, "INSERT") != 0 && strcmp(verb, "REPLACE") != 0 && strcmp(verb, "UPDATE") != 0 &&
        strcmp(verb, "DELETE") != 0) {
        refuse(x, "%s statements are not run on a keyspace (queries, INSERT, UPDATE, DELETE and schema changes "
                  "are)", verb[0] ? verb : "such");
        goto done;
    }
    sqlite3_set_authorizer(s->db, authorize, x);
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(s->db, req->sql, (int)req->sql_len, &st, &tail);
    sqlite3_set_authorizer(s->db, NULL, NULL);
    if (rc != SQLITE_OK) {
        const char *msg = sqlite3_errmsg(s->db);
        set_msg(out, DSQ_PLAN_ERROR, dsq_code_of_sqlite(rc, msg), "%s", msg);
        goto done;
    }
    for (const char *p = tail; p && p < req->sql + req->sql_len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';') {
            refuse(x, "one statement at a time on a keyspace");
            goto done;
        }
    if (st == NULL) {
        refuse(x, "no statement");
        goto done;
    }
    if (x->tabs_over) {
        refuse(x, "the statement uses more than %d tables", MAX_TABS);
        goto done;
    }
    if (x->other[0] || x->ddl) {
        refuse(x, "the statement does what the router does not route (%s)", x->ddl ? "a schema change" : x->other);
        goto done;
    }
    for (size_t i = 0; i < x->ntabs; i++) {
        tab *tb = &x->tabs[i];
        if (strncasecmp(tb->name, "sqlite_", 7) == 0)
            continue;
        if (is_view(x, tb->name)) { /* its tables are reported too */
            tb->view = true;
            if (tb->written) {
                refuse(x, "writes through view '%s' on a keyspace are not supported", tb->name);
                goto done;
            }
            tb->read = false;
            continue;
        }
        tb->vs = dsq_vs_table_find(ks, tb->name);
        if (tb->vs != NULL && tb->vs->type == DSQ_VS_SHARDED && tb->rowid) {
            refuse(x, "the statement reads the rowid of sharded table '%s': each shard numbers its rows on its "
                      "own (declare an INTEGER PRIMARY KEY and name it)",
                   tb->name);
            goto done;
        }
        if (tb->vs != NULL && tb->vs->type == DSQ_VS_SEQUENCE) {
            refuse(x, "'%s' is a sequence of keyspace '%s', not a table", tb->name, ks->name);
            goto done;
        }
        if (tb->vs == NULL) {
            refuse(x, "table '%s' is not in keyspace '%s' of the VSchema: add it (sharded, reference or "
                      "unsharded) to query it here", tb->name, ks->name);
            goto done;
        }
    }
    out->ncols = (size_t)sqlite3_column_count(st);
    if (out->ncols) {
        out->names = calloc(out->ncols, sizeof *out->names);
        out->decltypes = calloc(out->ncols, sizeof *out->decltypes);
        if (out->names == NULL || out->decltypes == NULL) {
            set_msg(out, DSQ_PLAN_ERROR, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
            goto done;
        }
        for (size_t i = 0; i < out->ncols; i++) {
            const char *nm = sqlite3_column_name(st, (int)i);
            out->names[i] = strdup(nm ? nm : "");
            const char *dt = sqlite3_column_decltype(st, (int)i);
            out->decltypes[i] = dt ? strdup(dt) : NULL;
        }
    }
    bool writes = false;
    for (size_t i = 0; i < x->ntabs; i++)
        writes |= x->tabs[i].written;
    if (writes)
        plan_write(x);
    else
        plan_read(x, st);
done:
    sqlite3_finalize(st);
    free(x->t);
    free(x->pidx);
    free(x);
}

void dsq_plan_free(dsq_plan *p)
{
    free(p->targets);
    sql_free(&p->shard_q);
    sql_free(&p->merge_q);
    free(p->merge_ddl);
    for (size_t i = 0; i < p->ncols && p->names; i++)
        free(p->names[i]);
    for (size_t i = 0; i < p->ncols && p->decltypes; i++)
        free(p->decltypes[i]);
    free(p->names);
    free(p->decltypes);
    for (size_t i = 0; i < p->nfetch; i++) {
        sql_free(&p->fetch[i].q);
        for (size_t c = 0; c < p->fetch[i].ncols; c++)
            free(p->fetch[i].cols[c]);
        free(p->fetch[i].cols);
    }
    free(p->fetch);
    free(p->fetch_ddl);
    for (size_t i = 0; i < p->nwrites; i++)
        sql_free(&p->writes[i]);
    free(p->writes);
    free(p->write_shard);
    free(p->write_aux);
    sql_free(&p->seq_q);
    for (size_t i = 0; i < p->nlookups; i++)
        free(p->lookups[i].bytes);
    free(p->lookups);
    memset(p, 0, sizeof *p);
}
