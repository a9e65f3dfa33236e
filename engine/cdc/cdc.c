/* cdc — change data capture (see cdc.h).
 *
 * Divisions: the encoding; the capture; reading. */
/* The system SQLite is built with the pre-update hook (configure checks
 * for it); its declarations need this. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "engine/cdc/cdc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/storage/disk.h"

/* ---- the encoding ------------------------------------------------------------------------
 *
 * "DSQC" | version u8 (1) | 0 u8 | tables u16 | events u32
 * table:  name_len u16 | name | flags u8 (1: WITHOUT ROWID) | ncols u16 |
 *         ncols x (name_len u16 | name | pk u8)
 * event:  op u8; DDL: sql_len u32 | sql; else table u16 | rowid i64 |
 *         (UPDATE) new rowid i64 | (UPDATE, DELETE) ncols values before |
 *         (INSERT, UPDATE) ncols values after
 * value:  type u8 (0 NULL, 1 INTEGER i64, 2 REAL f64, 3 TEXT u32 + bytes,
 *         4 BLOB u32 + bytes)
 * Little-endian throughout. */

#define MAGIC "DSQC"
#define VERSION 1
#define HDR 12
enum { V_NULL, V_INT, V_REAL, V_TEXT, V_BLOB };

static int put8(dsq_buf *b, uint8_t v) { return dsq_buf_append(b, &v, 1); }

static int put16(dsq_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return dsq_buf_append(b, x, 2);
}

static int put32(dsq_buf *b, uint32_t v)
{
    uint8_t x[4];
    dsq_put32(x, v);
    return dsq_buf_append(b, x, 4);
}

static int put64(dsq_buf *b, uint64_t v)
{
    uint8_t x[8];
    dsq_put64(x, v);
    return dsq_buf_append(b, x, 8);
}

static int put_str16(dsq_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT16_MAX)
        n = UINT16_MAX;
    return put16(b, (uint16_t)n) | dsq_buf_append(b, s, n);
}

static int put_value(dsq_buf *b, sqlite3_value *v)
{
    switch (v ? sqlite3_value_type(v) : SQLITE_NULL) {
    case SQLITE_INTEGER:
        return put8(b, V_INT) | put64(b, (uint64_t)sqlite3_value_int64(v));
    case SQLITE_FLOAT: {
        double d = sqlite3_value_double(v);
        uint64_t u;
        memcpy(&u, &d, 8);
        return put8(b, V_REAL) | put64(b, u);
    }
    case SQLITE_TEXT: {
        const unsigned char *t = sqlite3_value_text(v);
        int n = sqlite3_value_bytes(v);
        return put8(b, V_TEXT) | put32(b, (uint32_t)n) | dsq_buf_append(b, t, (size_t)n);
    }
    case SQLITE_BLOB: {
        int n = sqlite3_value_bytes(v);
        const void *p = sqlite3_value_blob(v);
        return put8(b, V_BLOB) | put32(b, (uint32_t)n) | (n > 0 ? dsq_buf_append(b, p, (size_t)n) : 0);
    }
    default:
        return put8(b, V_NULL);
    }
}

/* ---- the capture ------------------------------------------------------------------------- */

typedef struct table {
    char *name;
    bool current;       /* names the table as the schema is now */
    bool resolved;      /* its columns are named */
    bool without_rowid;
    bool stored_only;   /* the hook gave the stored columns alone (a table with VIRTUAL generated
                           columns: SQLite counts them, and gives the values of the others) */
    uint16_t ncols;
    char **cols;
    uint8_t *pk;
} table;

typedef struct savepoint {
    char *name;
    dsq_cdc_mark at;
} savepoint;

struct dsq_cdc_cap {
    sqlite3 *db;
    table *known;       /* tables resolved under the current schema, across */
    uint32_t nknown, kcap; /* transactions (forgotten at DDL and rollbacks) */
    dsq_buf ev;         /* the events, encoded */
    uint32_t nevents;
    table *tables;      /* the transaction's dictionary */
    uint32_t ntables, tcap;
    savepoint *sps;
    size_t nsps, spcap;
    bool failed;        /* a change could not be captured */
    dsq_buf out;        /* the last encoding */
    sqlite3_stmt *q_cols, *q_wr;
};

static void table_clear(table *t)
{
    free(t->name);
    for (uint16_t i = 0; t->cols && i < t->ncols; i++)
        free(t->cols[i]);
    free(t->cols);
    free(t->pk);
    memset(t, 0, sizeof *t);
}

/* The dictionary entry for table `name` as the schema is now; a new,
 * unresolved one the first time. -1 when out of memory. */
static int table_index(dsq_cdc_cap *c, const char *name, int ncols)
{
    for (uint32_t i = c->ntables; i-- > 0;)
        if (c->tables[i].current && strcmp(c->tables[i].name, name) == 0)
            return (int)i;
    if (c->ntables == UINT16_MAX || ncols < 0 || ncols > UINT16_MAX)
        return -1;
    if (c->ntables == c->tcap) {
        uint32_t cap = c->tcap ? c->tcap * 2 : 8;
        table *n = realloc(c->tables, cap * sizeof *n);
        if (n == NULL)
            return -1;
        c->tables = n;
        c->tcap = cap;
    }
    table *t = &c->tables[c->ntables];
    memset(t, 0, sizeof *t);
    if ((t->name = strdup(name)) == NULL)
        return -1;
    t->current = true;
    t->ncols = (uint16_t)ncols;
    return (int)c->ntables++;
}

static void preupdate(void *ud, sqlite3 *db, int op, const char *zdb, const char *zname, sqlite3_int64 k1,
                      sqlite3_int64 k2)
{
    dsq_cdc_cap *c = ud;
    if (c->failed || strcmp(zdb, "main") != 0 || strncmp(zname, "sqlite_", 7) == 0 ||
        strncasecmp(zname, "_dsq_", 5) == 0)
        return;
    int ncols = sqlite3_preupdate_count(db);
    int t = table_index(c, zname, ncols);
    if (t < 0 || c->tables[t].ncols != ncols) {
        c->failed = true; /* out of memory, or a table's width changed under one name */
        return;
    }
    int code = op == SQLITE_INSERT ? DSQ_CDC_INSERT : op == SQLITE_UPDATE ? DSQ_CDC_UPDATE : DSQ_CDC_DELETE;
    dsq_buf *b = &c->ev;
    int rc = put8(b, (uint8_t)code) | put16(b, (uint16_t)t) |
             put64(b, (uint64_t)(code == DSQ_CDC_INSERT ? k2 : k1));
    if (code == DSQ_CDC_UPDATE)
        rc |= put64(b, (uint64_t)k2);
    /* Past the stored columns (SQLITE_RANGE: the table has VIRTUAL
     * generated columns, which the count includes and the row does not
     * hold): NULL, the column unnamed (left out of the event). */
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        if ((pass == 0 && code == DSQ_CDC_INSERT) || (pass == 1 && code == DSQ_CDC_DELETE))
            continue;
        for (int i = 0; i < ncols && rc == 0; i++) {
            sqlite3_value *v = NULL;
            int prc = pass == 0 ? sqlite3_preupdate_old(db, i, &v) : sqlite3_preupdate_new(db, i, &v);
            if (prc == SQLITE_RANGE) {
                c->tables[t].stored_only = true;
                v = NULL;
            } else if (prc != SQLITE_OK) {
                rc = -1;
                break;
            }
            rc = put_value(b, v);
        }
    }
    if (rc != 0)
        c->failed = true;
    else
        c->nevents++;
}

static void drop_savepoints(dsq_cdc_cap *c, size_t keep)
{
    while (c->nsps > keep)
        free(c->sps[--c->nsps].name);
}

/* Forget the resolved tables (the schema may have changed). */
static void forget_known(dsq_cdc_cap *c)
{
    while (c->nknown > 0)
        table_clear(&c->known[--c->nknown]);
}

static void rolled_back(void *ud)
{
    dsq_cdc_cap *c = ud;
    dsq_cdc_cap_reset(c);
    forget_known(c); /* a rolled-back DDL is undone */
}

/* t's columns as a table resolved before under the same schema: copied. */
static int from_known(dsq_cdc_cap *c, table *t)
{
    for (uint32_t i = 0; i < c->nknown; i++) {
        table *k = &c->known[i];
        if (k->ncols != t->ncols || strcmp(k->name, t->name) != 0)
            continue;
        t->cols = calloc(t->ncols ? t->ncols : 1, sizeof *t->cols);
        t->pk = calloc(t->ncols ? t->ncols : 1, 1);
        if (t->cols == NULL || t->pk == NULL)
            return -1;
        for (uint16_t j = 0; j < t->ncols; j++)
            if ((t->cols[j] = strdup(k->cols[j])) == NULL)
                return -1;
        memcpy(t->pk, k->pk, t->ncols);
        t->without_rowid = k->without_rowid;
        t->resolved = true;
        return 1;
    }
    return 0;
}

/* Remember resolved t for later transactions (best effort). */
static void remember(dsq_cdc_cap *c, const table *t)
{
    if (c->nknown == c->kcap) {
        uint32_t cap = c->kcap ? 2 * c->kcap : 8;
        table *n = realloc(c->known, cap * sizeof *n);
        if (n == NULL)
            return;
        c->known = n;
        c->kcap = cap;
    }
    table *k = &c->known[c->nknown];
    memset(k, 0, sizeof *k);
    k->ncols = t->ncols;
    k->without_rowid = t->without_rowid;
    k->name = strdup(t->name);
    k->cols = calloc(t->ncols ? t->ncols : 1, sizeof *k->cols);
    k->pk = malloc(t->ncols ? t->ncols : 1);
    bool ok = k->name && k->cols && k->pk;
    for (uint16_t j = 0; ok && j < t->ncols; j++)
        ok = (k->cols[j] = strdup(t->cols[j])) != NULL;
    if (!ok) {
        table_clear(k);
        return;
    }
    memcpy(k->pk, t->pk, t->ncols);
    c->nknown++;
}

dsq_cdc_cap *dsq_cdc_cap_new(sqlite3 *db)
{
    dsq_cdc_cap *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->db = db;
    sqlite3_preupdate_hook(db, preupdate, c);
    sqlite3_rollback_hook(db, rolled_back, c);
    return c;
}

void dsq_cdc_cap_free(dsq_cdc_cap *c)
{
    if (c == NULL)
        return;
    sqlite3_preupdate_hook(c->db, NULL, NULL);
    sqlite3_rollback_hook(c->db, NULL, NULL);
    dsq_cdc_cap_reset(c);
    forget_known(c);
    free(c->known);
    sqlite3_finalize(c->q_cols);
    sqlite3_finalize(c->q_wr);
    free(c->tables);
    free(c->sps);
    dsq_buf_free(&c->ev);
    dsq_buf_free(&c->out);
    free(c);
}

dsq_cdc_mark dsq_cdc_cap_mark(const dsq_cdc_cap *c)
{
    return (dsq_cdc_mark){c->ev.len, c->nevents, c->ntables};
}

void dsq_cdc_cap_rewind(dsq_cdc_cap *c, dsq_cdc_mark m)
{
    if (m.bytes > c->ev.len || m.tables > c->ntables)
        return; /* the transaction ended (rolled back) since the mark */
    c->ev.len = m.bytes;
    c->nevents = m.events;
    while (c->ntables > m.tables)
        table_clear(&c->tables[--c->ntables]);
}

/* Name the columns of table t (and learn whether it has a rowid): as
 * known, or from the schema. */
static int resolve(dsq_cdc_cap *c, table *t)
{
    int k = from_known(c, t);
    if (k != 0)
        return k < 0 ? -1 : 0;
    t->cols = calloc(t->ncols ? t->ncols : 1, sizeof *t->cols);
    t->pk = calloc(t->ncols ? t->ncols : 1, 1);
    if (t->cols == NULL || t->pk == NULL)
        return -1;
    if (c->q_cols == NULL &&
        sqlite3_prepare_v3(c->db,
                           "SELECT name, pk FROM pragma_table_xinfo(?1, 'main') WHERE hidden <> 1 AND "
                           "(?2 = 0 OR hidden <> 2)",
                           -1, SQLITE_PREPARE_PERSISTENT, &c->q_cols, NULL) != SQLITE_OK)
        return -1;
    if (c->q_wr == NULL &&
        sqlite3_prepare_v3(c->db, "SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'", -1,
                           SQLITE_PREPARE_PERSISTENT, &c->q_wr, NULL) != SQLITE_OK)
        return -1;
    uint16_t i = 0;
    sqlite3_bind_text(c->q_cols, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(c->q_cols, 2, t->stored_only);
    while (sqlite3_step(c->q_cols) == SQLITE_ROW && i < t->ncols) {
        const char *name = (const char *)sqlite3_column_text(c->q_cols, 0);
        int pk = sqlite3_column_int(c->q_cols, 1);
        if ((t->cols[i] = strdup(name ? name : "")) == NULL)
            break;
        t->pk[i++] = (uint8_t)(pk > 0 && pk < 256 ? pk : 0);
    }
    sqlite3_reset(c->q_cols);
    sqlite3_clear_bindings(c->q_cols);
    /* Columns the schema no longer shows (cannot happen within one
     * statement): named by position; with the stored columns alone, the
     * count's VIRTUAL ones: no name (left out). */
    for (; i < t->ncols; i++) {
        char name[16] = "";
        if (!t->stored_only)
            snprintf(name, sizeof name, "$%u", (unsigned)i);
        if ((t->cols[i] = strdup(name)) == NULL)
            return -1;
    }
    sqlite3_bind_text(c->q_wr, 1, t->name, -1, SQLITE_STATIC);
    if (sqlite3_step(c->q_wr) == SQLITE_ROW)
        t->without_rowid = sqlite3_column_int(c->q_wr, 0) != 0;
    sqlite3_reset(c->q_wr);
    sqlite3_clear_bindings(c->q_wr);
    t->resolved = true;
    remember(c, t);
    return 0;
}

/* CREATE TABLE ... AS SELECT fills its table without telling the
 * pre-update hook: its rows become INSERT events here, read back from the
 * new table (which holds exactly them). */
static int created_rows(dsq_cdc_cap *c, const char *name)
{
    char *sql = sqlite3_mprintf("SELECT rowid, * FROM main.\"%w\"", name);
    sqlite3_stmt *st = NULL;
    int rc = sql && sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK ? 0 : -1;
    sqlite3_free(sql);
    int ncols = st ? sqlite3_column_count(st) - 1 : 0;
    int t = -1;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (t < 0 && ((t = table_index(c, name, ncols)) < 0 || c->tables[t].ncols != ncols)) {
            rc = -1;
            break;
        }
        dsq_buf *b = &c->ev;
        rc = put8(b, DSQ_CDC_INSERT) | put16(b, (uint16_t)t) | put64(b, (uint64_t)sqlite3_column_int64(st, 0));
        for (int i = 0; i < ncols && rc == 0; i++)
            rc = put_value(b, sqlite3_column_value(st, i + 1));
        if (rc == 0)
            c->nevents++;
    }
    sqlite3_finalize(st);
    return rc;
}

int dsq_cdc_cap_statement_done(dsq_cdc_cap *c, dsq_cdc_mark m, const char *ddl, const char *created)
{
    if (created != NULL && !c->failed && created_rows(c, created) != 0)
        c->failed = true;
    for (uint32_t i = 0; i < c->ntables && !c->failed; i++)
        if (!c->tables[i].resolved && resolve(c, &c->tables[i]) != 0)
            c->failed = true;
    if (ddl != NULL && !c->failed && m.bytes <= c->ev.len) {
        /* The schema event goes before the rows the statement itself wrote
         * (CREATE TABLE ... AS SELECT). */
        size_t n = strlen(ddl);
        size_t add = 1 + 4 + n;
        if (n > UINT32_MAX || dsq_buf_reserve(&c->ev, add) != 0) {
            c->failed = true;
        } else {
            uint8_t *at = (uint8_t *)c->ev.data + m.bytes;
            memmove(at + add, at, c->ev.len - m.bytes);
            at[0] = DSQ_CDC_DDL;
            dsq_put32(at + 1, (uint32_t)n);
            memcpy(at + 5, ddl, n);
            c->ev.len += add;
            c->nevents++;
        }
        /* Later changes name tables as the new schema has them. */
        for (uint32_t i = 0; i < c->ntables; i++)
            c->tables[i].current = false;
        forget_known(c);
    }
    return c->failed ? -1 : 0;
}

void dsq_cdc_cap_savepoint(dsq_cdc_cap *c, const char *op, const char *name, dsq_cdc_mark m)
{
    if (op == NULL || name == NULL)
        return;
    if (strcmp(op, "BEGIN") == 0) {
        if (c->nsps == c->spcap) {
            size_t cap = c->spcap ? c->spcap * 2 : 4;
            savepoint *n = realloc(c->sps, cap * sizeof *n);
            if (n == NULL) {
                c->failed = true;
                return;
            }
            c->sps = n;
            c->spcap = cap;
        }
        char *copy = strdup(name);
        if (copy == NULL) {
            c->failed = true;
            return;
        }
        c->sps[c->nsps++] = (savepoint){copy, m};
        return;
    }
    /* The newest savepoint of that name (SQLite compares them without
     * regard to case). */
    size_t i = c->nsps;
    while (i > 0 && sqlite3_stricmp(c->sps[i - 1].name, name) != 0)
        i--;
    if (i == 0)
        return;
    if (strcmp(op, "RELEASE") == 0) {
        drop_savepoints(c, i - 1);
    } else if (strcmp(op, "ROLLBACK") == 0) {
        dsq_cdc_cap_rewind(c, c->sps[i - 1].at);
        drop_savepoints(c, i); /* the savepoint itself stays */
    }
}

int dsq_cdc_cap_encode(dsq_cdc_cap *c, const void **p, size_t *n)
{
    *p = NULL;
    *n = 0;
    if (c->failed)
        return -1;
    if (c->nevents == 0)
        return 0;
    dsq_buf *b = &c->out;
    dsq_buf_reset(b);
    int rc = dsq_buf_append(b, MAGIC, 4) | put8(b, VERSION) | put8(b, 0) | put16(b, (uint16_t)c->ntables) |
             put32(b, c->nevents);
    for (uint32_t i = 0; i < c->ntables && rc == 0; i++) {
        table *t = &c->tables[i];
        rc |= put_str16(b, t->name) | put8(b, t->without_rowid ? 1 : 0) | put16(b, t->ncols);
        for (uint16_t k = 0; k < t->ncols && rc == 0; k++)
            rc |= put_str16(b, t->cols && t->cols[k] ? t->cols[k] : "") | put8(b, t->pk ? t->pk[k] : 0);
    }
    rc |= dsq_buf_append(b, c->ev.data, c->ev.len);
    if (rc != 0)
        return -1;
    *p = b->data;
    *n = b->len;
    return 0;
}

void dsq_cdc_cap_reset(dsq_cdc_cap *c)
{
    dsq_buf_reset(&c->ev);
    c->nevents = 0;
    while (c->ntables > 0)
        table_clear(&c->tables[--c->ntables]);
    drop_savepoints(c, 0);
    c->failed = false;
}

uint32_t dsq_cdc_cap_events(const dsq_cdc_cap *c) { return c->nevents; }

/* ---- reading ----------------------------------------------------------------------------- */

static bool need(const dsq_cdc_reader *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint16_t get16(dsq_cdc_reader *r)
{
    uint16_t v = (uint16_t)(r->p[0] | r->p[1] << 8);
    r->p += 2;
    return v;
}

static int get_str16(dsq_cdc_reader *r, const char **s, uint16_t *len)
{
    if (!need(r, 2))
        return -1;
    *len = get16(r);
    if (!need(r, *len))
        return -1;
    *s = (const char *)r->p;
    r->p += *len;
    return 0;
}

int dsq_cdc_read_begin(dsq_cdc_reader *r, const void *p, size_t n)
{
    memset(r, 0, sizeof *r);
    r->p = p;
    r->end = r->p + n;
    if (n == 0)
        return 0;
    if (n < HDR || memcmp(p, MAGIC, 4) != 0 || r->p[4] != VERSION)
        return -1;
    r->p += 6;
    r->ntables = get16(r);
    r->left = dsq_get32(r->p);
    r->p += 4;
    r->tables = calloc(r->ntables ? r->ntables : 1, sizeof *r->tables);
    if (r->tables == NULL)
        return -1;
    uint16_t widest = 0;
    for (uint16_t i = 0; i < r->ntables; i++) {
        dsq_cdc_table *t = &r->tables[i];
        if (get_str16(r, &t->name, &t->len) != 0 || !need(r, 3))
            goto bad;
        t->without_rowid = (*r->p++ & 1) != 0;
        t->ncols = get16(r);
        if ((t->cols = calloc(t->ncols ? t->ncols : 1, sizeof *t->cols)) == NULL)
            goto bad;
        for (uint16_t k = 0; k < t->ncols; k++) {
            if (get_str16(r, &t->cols[k].name, &t->cols[k].len) != 0 || !need(r, 1))
                goto bad;
            t->cols[k].pk = *r->p++;
        }
        if (t->ncols > widest)
            widest = t->ncols;
    }
    if ((r->vals = calloc(2 * (size_t)widest + 1, sizeof *r->vals)) == NULL)
        goto bad;
    return 0;
bad:
    dsq_cdc_read_end(r);
    return -1;
}

static int get_value(dsq_cdc_reader *r, dsq_cdc_value *v)
{
    if (!need(r, 1))
        return -1;
    memset(v, 0, sizeof *v);
    switch (*r->p++) {
    case V_NULL:
        v->type = SQLITE_NULL;
        return 0;
    case V_INT:
        if (!need(r, 8))
            return -1;
        v->type = SQLITE_INTEGER;
        v->i = (int64_t)dsq_get64(r->p);
        r->p += 8;
        return 0;
    case V_REAL: {
        if (!need(r, 8))
            return -1;
        uint64_t u = dsq_get64(r->p);
        memcpy(&v->r, &u, 8);
        v->type = SQLITE_FLOAT;
        r->p += 8;
        return 0;
    }
    case V_TEXT:
    case V_BLOB:
        if (!need(r, 4))
            return -1;
        v->type = r->p[-1] == V_TEXT ? SQLITE_TEXT : SQLITE_BLOB;
        v->n = dsq_get32(r->p);
        r->p += 4;
        if (!need(r, v->n))
            return -1;
        v->p = r->p;
        r->p += v->n;
        return 0;
    default:
        return -1;
    }
}

int dsq_cdc_read_next(dsq_cdc_reader *r, dsq_cdc_event *ev)
{
    if (r->left == 0)
        return r->p == r->end ? 0 : -1;
    memset(ev, 0, sizeof *ev);
    if (!need(r, 1))
        return -1;
    ev->op = *r->p++;
    if (ev->op == DSQ_CDC_DDL) {
        if (!need(r, 4))
            return -1;
        ev->sql_len = dsq_get32(r->p);
        r->p += 4;
        if (!need(r, ev->sql_len))
            return -1;
        ev->sql = (const char *)r->p;
        r->p += ev->sql_len;
        r->left--;
        return 1;
    }
    if (ev->op < DSQ_CDC_INSERT || ev->op > DSQ_CDC_DELETE || !need(r, 2 + 8))
        return -1;
    uint16_t ti = get16(r);
    if (ti >= r->ntables)
        return -1;
    const dsq_cdc_table *t = &r->tables[ti];
    ev->table = t->name;
    ev->table_len = t->len;
    ev->without_rowid = t->without_rowid;
    ev->ncols = t->ncols;
    ev->cols = t->cols;
    ev->rowid = (int64_t)dsq_get64(r->p);
    r->p += 8;
    if (ev->op == DSQ_CDC_UPDATE) {
        if (!need(r, 8))
            return -1;
        ev->new_rowid = (int64_t)dsq_get64(r->p);
        r->p += 8;
    }
    dsq_cdc_value *v = r->vals;
    if (ev->op != DSQ_CDC_INSERT) {
        ev->before = v;
        for (uint16_t k = 0; k < t->ncols; k++)
            if (get_value(r, v++) != 0)
                return -1;
    }
    if (ev->op != DSQ_CDC_DELETE) {
        ev->after = v;
        for (uint16_t k = 0; k < t->ncols; k++)
            if (get_value(r, v++) != 0)
                return -1;
    }
    r->left--;
    return 1;
}

void dsq_cdc_read_end(dsq_cdc_reader *r)
{
    for (uint16_t i = 0; r->tables && i < r->ntables; i++)
        free(r->tables[i].cols);
    free(r->tables);
    free(r->vals);
    memset(r, 0, sizeof *r);
}
