/* schema — the getSchema and getStats documents (worker, actor open).
 *
 * getSchema reads sqlite_schema and the table/index pragmas as the engine
 * (past the sandbox), leaving out SQLite's own objects and dosqld's
 * reserved table. */
#include <stdio.h>
#include <string.h>

#include "engine/runtime/engine_int.h"
#include "engine/storage/pagestore.h"

static json_t *text_or_null(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? json_string((const char *)t) : json_null();
}

static json_t *table_columns(sqlite3 *db, const char *table)
{
    sqlite3_stmt *st = NULL;
    json_t *cols = json_array();
    if (sqlite3_prepare_v2(db,
                           "SELECT name, type, \"notnull\", dflt_value, pk, hidden "
                           "FROM pragma_table_xinfo(?1) ORDER BY cid",
                           -1, &st, NULL) != SQLITE_OK)
        return cols;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int hidden = sqlite3_column_int(st, 5);
        if (hidden == 1) /* a virtual table's hidden column */
            continue;
        json_t *col = json_pack("{s:o,s:s,s:b,s:o,s:i}", "name", text_or_null(st, 0), "type",
                                sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "",
                                "notNull", sqlite3_column_int(st, 2) != 0, "default",
                                text_or_null(st, 3), "primaryKey", sqlite3_column_int(st, 4));
        if (hidden == 2 || hidden == 3)
            json_object_set_new(col, "generated", json_true());
        json_array_append_new(cols, col);
    }
    sqlite3_finalize(st);
    return cols;
}

static void table_flags(sqlite3 *db, const char *table, json_t *t)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT wr, strict FROM pragma_table_list(?1) WHERE schema = 'main'",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_object_set_new(t, "withoutRowid", json_boolean(sqlite3_column_int(st, 0)));
        json_object_set_new(t, "strict", json_boolean(sqlite3_column_int(st, 1)));
    }
    sqlite3_finalize(st);
}

static void index_details(sqlite3 *db, const char *index, const char *table, json_t *ix)
{
    sqlite3_stmt *st = NULL;
    json_t *cols = json_array();
    if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_index_info(?1) ORDER BY seqno", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, index, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(cols, text_or_null(st, 0)); /* NULL for an expression */
        sqlite3_finalize(st);
    }
    json_object_set_new(ix, "columns", cols);
    bool unique = false;
    if (sqlite3_prepare_v2(db, "SELECT \"unique\" FROM pragma_index_list(?1) WHERE name = ?2", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, index, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            unique = sqlite3_column_int(st, 0) != 0;
        sqlite3_finalize(st);
    }
    json_object_set_new(ix, "unique", json_boolean(unique));
}

json_t *dsq__schema(actor_open *o, sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    o->internal = true;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                                "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        o->internal = false;
        return NULL;
    }
    json_t *tables = json_array(), *indexes = json_array(), *views = json_array(),
           *triggers = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *tbl = (const char *)sqlite3_column_text(st, 2);
        if (type == NULL || name == NULL)
            continue;
        if (strcmp(type, "table") == 0) {
            json_t *t = json_pack("{s:s,s:o,s:o}", "name", name, "columns", table_columns(db, name),
                                  "sql", text_or_null(st, 3));
            table_flags(db, name, t);
            json_array_append_new(tables, t);
        } else if (strcmp(type, "index") == 0) {
            json_t *ix = json_pack("{s:s,s:s,s:o}", "name", name, "table", tbl ? tbl : "", "sql",
                                   text_or_null(st, 3));
            index_details(db, name, tbl ? tbl : "", ix);
            json_array_append_new(indexes, ix);
        } else if (strcmp(type, "view") == 0) {
            json_array_append_new(views, json_pack("{s:s,s:o,s:o}", "name", name, "columns",
                                                   table_columns(db, name), "sql",
                                                   text_or_null(st, 3)));
        } else if (strcmp(type, "trigger") == 0) {
            json_array_append_new(triggers, json_pack("{s:s,s:s,s:o}", "name", name, "table",
                                                      tbl ? tbl : "", "sql", text_or_null(st, 3)));
        }
    }
    sqlite3_finalize(st);
    o->internal = false;
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        json_decref(tables);
        json_decref(indexes);
        json_decref(views);
        json_decref(triggers);
        return NULL;
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tables", tables, "indexes", indexes, "views", views,
                     "triggers", triggers);
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

json_t *dsq__stats(dsq_engine *e, dsq_actor *a, sqlite3 *conn)
{
    actor_open *o = a->open;
    int hit = 0, miss = 0, used = 0, hi;
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_HIT, &hit, &hi, 0);
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_MISS, &miss, &hi, 0);
    sqlite3_db_status(o->db, SQLITE_DBSTATUS_CACHE_USED, &used, &hi, 0);
    int64_t pages = pragma_int(o, conn, "PRAGMA page_count");
    int64_t page_size = pragma_int(o, conn, "PRAGMA page_size");
    int64_t free_pages = pragma_int(o, conn, "PRAGMA freelist_count");
    dsq_engine_stats s;
    dsq_engine_stats_get(e, &s);
    json_t *db = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "name", a->name,
                           "lsn", (json_int_t)o->lsn, "pages", (json_int_t)pages, "pageSize",
                           (json_int_t)page_size, "bytes", (json_int_t)(pages * page_size),
                           "freePages", (json_int_t)free_pages, "statements",
                           (json_int_t)o->statements, "statementCacheHits",
                           (json_int_t)o->cache_hits, "statementCacheMisses",
                           (json_int_t)o->cache_misses, "pageCacheHits", (json_int_t)hit,
                           "pageCacheMisses", (json_int_t)miss, "pageCacheBytes", (json_int_t)used,
                           "transactionOpen", o->in_txn);
    json_t *srv = dsq_engine_stats_json(&s);
    dsq_ps_usage_t u;
    dsq_ps_usage(o->ps, &u);
    json_t *st = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "logSegments", (json_int_t)u.segments,
                           "logBytes", (json_int_t)u.log_bytes, "checkpoints",
                           (json_int_t)u.checkpoints, "checkpointBytes",
                           (json_int_t)u.checkpoint_bytes, "oldestLsn", (json_int_t)u.oldest_lsn,
                           "durableLsn", (json_int_t)dsq_wal_durable(dsq_ps_wal(o->ps)),
                           "fsyncs", (json_int_t)s.fsyncs);
    json_object_set_new(db, "storage", st);
    uint64_t durable = e->cfg.sync == DSQ_SYNC_OFF ? o->lsn : dsq_wal_durable(dsq_ps_wal(o->ps));
    json_t *subs = dsq__feed_stats(atomic_load(&a->feed), durable);
    json_object_set_new(db, "cdc", json_pack("{s:I,s:o}", "subscriptions", (json_int_t)json_array_size(subs),
                                             "subscribers", subs));

    return json_pack("{s:o,s:o}", "database", db, "server", srv);
}
