/* schema — what getSchema and getStats answer, as the engine's structs
 * (engine.h; the protocols encode them) (worker, actor open).
 *
 * getSchema reads sqlite_schema and the table/index pragmas as the engine
 * (past the sandbox), leaving out SQLite's own objects and dosqld's
 * reserved table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/runtime/engine_int.h"
#include "engine/storage/pagestore.h"

/* A column's text, copied (NULL when it is NULL); *oom on a failed copy. */
static char *text_dup(sqlite3_stmt *st, int col, bool *oom)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    if (t == NULL)
        return NULL;
    char *s = strdup((const char *)t);
    if (s == NULL)
        *oom = true;
    return s;
}

/* Room for one more element of an array of `size`-byte elements. */
static void *grow(void *v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return v;
    size_t ncap = *cap ? 2 * *cap : 8;
    void *g = realloc(v, ncap * size);
    if (g != NULL)
        *cap = ncap;
    return g;
}

static void columns_free(dsq_schema_column *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].type);
        free(c[i].dflt);
    }
    free(c);
}

static void list_free(dsq_schema_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        dsq_schema_object *o = &l->v[i];
        free(o->name);
        free(o->table);
        free(o->sql);
        columns_free(o->columns, o->ncolumns);
    }
    free(l->v);
    *l = (dsq_schema_list){0};
}

void dsq_schema_free(dsq_schema *s)
{
    if (s == NULL)
        return;
    list_free(&s->tables);
    list_free(&s->indexes);
    list_free(&s->views);
    list_free(&s->triggers);
    free(s);
}

/* A table's or view's columns (a virtual table's hidden ones left out). */
static int table_columns(sqlite3 *db, const char *table, dsq_schema_object *o)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT name, type, \"notnull\", dflt_value, pk, hidden "
                           "FROM pragma_table_xinfo(?1) ORDER BY cid",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    size_t cap = 0;
    bool oom = false;
    while (!oom && sqlite3_step(st) == SQLITE_ROW) {
        int hidden = sqlite3_column_int(st, 5);
        if (hidden == 1) /* a virtual table's hidden column */
            continue;
        dsq_schema_column *g = grow(o->columns, o->ncolumns, &cap, sizeof *g);
        if (g == NULL) {
            oom = true;
            break;
        }
        o->columns = g;
        dsq_schema_column *c = &o->columns[o->ncolumns++];
        *c = (dsq_schema_column){
            .name = text_dup(st, 0, &oom),
            .type = text_dup(st, 1, &oom),
            .not_null = sqlite3_column_int(st, 2) != 0,
            .dflt = text_dup(st, 3, &oom),
            .pk = sqlite3_column_int(st, 4),
            .generated = hidden == 2 || hidden == 3,
        };
        if (c->type == NULL && !oom)
            oom = (c->type = strdup("")) == NULL;
    }
    sqlite3_finalize(st);
    return oom ? -1 : 0;
}

static void table_flags(sqlite3 *db, const char *table, dsq_schema_object *o)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT wr, strict FROM pragma_table_list(?1) WHERE schema = 'main'",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        o->has_flags = true;
        o->without_rowid = sqlite3_column_int(st, 0) != 0;
        o->strict = sqlite3_column_int(st, 1) != 0;
    }
    sqlite3_finalize(st);
}

/* An index's columns (their names; NULL for an expression) and whether it
 * is unique. */
static int index_details(sqlite3 *db, dsq_schema_object *o)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    bool oom = false;
    if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_index_info(?1) ORDER BY seqno", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, o->name, -1, SQLITE_STATIC);
        while (!oom && sqlite3_step(st) == SQLITE_ROW) {
            dsq_schema_column *g = grow(o->columns, o->ncolumns, &cap, sizeof *g);
            if (g == NULL) {
                oom = true;
                break;
            }
            o->columns = g;
            o->columns[o->ncolumns] = (dsq_schema_column){.name = text_dup(st, 0, &oom)};
            o->ncolumns++;
        }
        sqlite3_finalize(st);
    }
    if (sqlite3_prepare_v2(db, "SELECT \"unique\" FROM pragma_index_list(?1) WHERE name = ?2", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, o->table, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, o->name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            o->unique = sqlite3_column_int(st, 0) != 0;
        sqlite3_finalize(st);
    }
    return oom ? -1 : 0;
}

/* One row of sqlite_schema (type, name, tbl_name, sql) into its list. */
static int schema_row(sqlite3 *db, sqlite3_stmt *st, dsq_schema *s, size_t caps[4])
{
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    if (type == NULL || name == NULL)
        return 0;
    dsq_schema_list *lists[4] = {&s->tables, &s->indexes, &s->views, &s->triggers};
    static const char *const types[4] = {"table", "index", "view", "trigger"};
    int k = 0;
    while (k < 4 && strcmp(type, types[k]) != 0)
        k++;
    if (k == 4)
        return 0;
    dsq_schema_list *l = lists[k];
    dsq_schema_object *g = grow(l->v, l->n, &caps[k], sizeof *g);
    if (g == NULL)
        return -1;
    l->v = g;
    dsq_schema_object *o = &l->v[l->n++];
    bool oom = false;
    *o = (dsq_schema_object){.name = text_dup(st, 1, &oom), .sql = text_dup(st, 3, &oom)};
    if (k == 1 || k == 3) { /* an index's or a trigger's table */
        o->table = text_dup(st, 2, &oom);
        if (o->table == NULL && !oom)
            oom = (o->table = strdup("")) == NULL;
    }
    if (oom)
        return -1;
    switch (k) {
    case 0:
        table_flags(db, name, o);
        return table_columns(db, name, o);
    case 1: return index_details(db, o);
    case 2: return table_columns(db, name, o);
    default: return 0;
    }
}

dsq_schema *dsq__schema(actor_open *o, sqlite3 *db, char *err, size_t errlen)
{
    dsq_schema *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    o->internal = true;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                                "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND tbl_name NOT LIKE '\\_dsq\\_%' ESCAPE '\\' "
                                "ORDER BY type, name",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        o->internal = false;
        free(s);
        return NULL;
    }
    size_t caps[4] = {0};
    bool oom = false;
    while (!oom && (rc = sqlite3_step(st)) == SQLITE_ROW)
        oom = schema_row(db, st, s, caps) != 0;
    if (!oom && rc != SQLITE_DONE)
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    else if (oom)
        snprintf(err, errlen, "out of memory");
    sqlite3_finalize(st);
    o->internal = false;
    if (oom || rc != SQLITE_DONE) {
        dsq_schema_free(s);
        return NULL;
    }
    return s;
}

static int64_t pragma_int(actor_open *o, sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    o->internal = true;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    o->internal = false;
    return v;
}

void dsq_db_stats_free(dsq_db_stats *s)
{
    if (s == NULL)
        return;
    free(s->subs);
    free(s->copies);
    free(s);
}

dsq_db_stats *dsq__stats(dsq_engine *e, dsq_actor *a, sqlite3 *conn)
{
    actor_open *o = a->open;
    dsq_db_stats *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    int hi;
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_HIT, &s->page_cache_hits, &hi, 0);
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_MISS, &s->page_cache_misses, &hi, 0);
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_USED, &s->page_cache_bytes, &hi, 0);
    snprintf(s->name, sizeof s->name, "%s", a->name);
    s->lsn = o->lsn;
    s->pages = pragma_int(o, conn, "PRAGMA page_count");
    s->page_size = pragma_int(o, conn, "PRAGMA page_size");
    s->free_pages = pragma_int(o, conn, "PRAGMA freelist_count");
    s->statements = o->statements;
    s->cache_hits = o->cache_hits;
    s->cache_misses = o->cache_misses;
    s->txn_open = o->in_txn;
    dsq_engine_stats_get(e, &s->server);
    dsq_ps_usage_t u;
    dsq_ps_usage(o->ps, &u);
    s->log_segments = u.segments;
    s->log_bytes = u.log_bytes;
    s->checkpoints = u.checkpoints;
    s->checkpoint_bytes = u.checkpoint_bytes;
    s->oldest_lsn = u.oldest_lsn;
    s->durable_lsn = dsq_wal_durable(dsq_ps_wal(o->ps));
    uint64_t durable = e->cfg.sync == DSQ_SYNC_OFF ? o->lsn : s->durable_lsn;
    if (dsq_feed_stats(atomic_load(&a->feed), durable, &s->subs, &s->nsubs) != 0) {
        dsq_db_stats_free(s);
        return NULL;
    }
    const dsq_repl_hooks *h = e->cfg.repl;
    if (h != NULL) {
        char primary[32];
        s->role = h->role(h->ud, a->name, primary, sizeof primary);
        s->replicated = true;
        if (h->copies != NULL && (s->copies = calloc(64, sizeof *s->copies)) != NULL)
            s->ncopies = h->copies(h->ud, a->name, s->copies, 64, &s->epoch);
    }
    return s;
}
