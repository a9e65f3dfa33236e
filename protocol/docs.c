/* docs — the engine's answers as JSON documents (docs.h). */
#include "protocol/docs.h"

#include "common/heap.h"

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *columns_doc(const dsq_schema_object *o)
{
    json_t *cols = json_array();
    for (size_t i = 0; cols && i < o->ncolumns; i++) {
        const dsq_schema_column *c = &o->columns[i];
        json_t *col = json_pack("{s:o,s:s,s:b,s:o,s:i}", "name", str_or_null(c->name), "type", c->type,
                                "notNull", c->not_null, "default", str_or_null(c->dflt), "primaryKey", c->pk);
        if (col != NULL && c->generated)
            json_object_set_new(col, "generated", json_true());
        if (json_array_append_new(cols, col) != 0) {
            json_decref(cols);
            return NULL;
        }
    }
    return cols;
}

static json_t *table_doc(const dsq_schema_object *o)
{
    json_t *t = json_pack("{s:s,s:o,s:o}", "name", o->name, "columns", columns_doc(o), "sql", str_or_null(o->sql));
    if (t != NULL && o->has_flags) {
        json_object_set_new(t, "withoutRowid", json_boolean(o->without_rowid));
        json_object_set_new(t, "strict", json_boolean(o->strict));
    }
    return t;
}

static json_t *index_doc(const dsq_schema_object *o)
{
    json_t *cols = json_array();
    for (size_t i = 0; cols && i < o->ncolumns; i++)
        json_array_append_new(cols, str_or_null(o->columns[i].name)); /* NULL for an expression */
    return json_pack("{s:s,s:s,s:o,s:o,s:b}", "name", o->name, "table", o->table, "sql", str_or_null(o->sql),
                     "columns", cols, "unique", o->unique);
}

static json_t *view_doc(const dsq_schema_object *o)
{
    return json_pack("{s:s,s:o,s:o}", "name", o->name, "columns", columns_doc(o), "sql", str_or_null(o->sql));
}

static json_t *trigger_doc(const dsq_schema_object *o)
{
    return json_pack("{s:s,s:s,s:o}", "name", o->name, "table", o->table, "sql", str_or_null(o->sql));
}

static json_t *list_doc(const dsq_schema_list *l, json_t *(*one)(const dsq_schema_object *))
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < l->n; i++) {
        if (json_array_append_new(a, one(&l->v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *schema_doc(const dsq_schema *s)
{
    return json_pack("{s:o,s:o,s:o,s:o}", "tables", list_doc(&s->tables, table_doc), "indexes",
                     list_doc(&s->indexes, index_doc), "views", list_doc(&s->views, view_doc), "triggers",
                     list_doc(&s->triggers, trigger_doc));
}

json_t *dsq_doc_server_stats(const dsq_engine_stats *s)
{
    json_t *srv = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "actors", (json_int_t)s->actors,
                            "actorsOpen", (json_int_t)s->actors_open, "actorsHibernated",
                            (json_int_t)s->actors_hibernated, "queuedMessages", (json_int_t)s->queued,
                            "transactionsOpen", (json_int_t)s->txns_open, "calls", (json_int_t)s->calls,
                            "logSyncs", (json_int_t)s->fsyncs, "gatedReplies", (json_int_t)s->gated,
                            "subscriptions", (json_int_t)s->subscriptions, "cdcCoalesced",
                            (json_int_t)s->cdc_coalesced);
    if (srv == NULL)
        return NULL;
    dsq_heap_usage h = dsq_heap_usage_get();
    json_object_set_new(srv, "heap",
                        json_pack("{s:I,s:I}", "inUse", (json_int_t)h.in_use, "free", (json_int_t)h.free_bytes));
    json_object_set_new(srv, "journal",
                        s->journal ? json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "syncs",
                                               (json_int_t)s->journal_syncs, "flushes",
                                               (json_int_t)s->journal_flushes, "bytes",
                                               (json_int_t)s->journal_bytes, "files",
                                               (json_int_t)s->journal_files, "liveFiles",
                                               (json_int_t)s->journal_live, "held", (json_int_t)s->journal_held,
                                               "bulkSyncs", (json_int_t)s->journal_bulk_syncs, "zeroedBytes",
                                               (json_int_t)s->journal_zeroed, "zeroWaits",
                                               (json_int_t)s->journal_zero_waits)
                                   : json_null());
    if (!s->tier) {
        json_object_set_new(srv, "objectStore", json_null());
        return srv;
    }
    const dsq_tier_counts *t = &s->tier_counts;
    const dsq_evict_counts *v = &s->evict_counts;
    const dsq_warm_counts *w = &s->warm_counts;
    json_t *os = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "uploads", (json_int_t)t->uploads, "uploadedBytes",
                           (json_int_t)t->bytes, "manifests", (json_int_t)t->manifests, "deletes",
                           (json_int_t)t->deletes, "errors", (json_int_t)t->errors, "pending",
                           (json_int_t)t->pending, "restored", (json_int_t)t->restored, "lastError", t->last_error);
    if (os != NULL) {
        json_object_set_new(os, "hotTier",
                            json_pack("{s:I,s:I,s:I,s:I,s:I}", "localBytes", (json_int_t)v->local_bytes, "coldFiles",
                                      (json_int_t)v->cold_files, "evictions", (json_int_t)v->evictions,
                                      "evictedBytes", (json_int_t)v->evicted_bytes, "errors", (json_int_t)v->errors));
        json_object_set_new(os, "warmCache",
                            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "hits", (json_int_t)w->hits, "misses",
                                      (json_int_t)w->misses, "fetches", (json_int_t)w->fetches, "fetchedBytes",
                                      (json_int_t)w->fetch_bytes, "errors", (json_int_t)w->errors, "timeouts",
                                      (json_int_t)w->timeouts, "bytes", (json_int_t)w->bytes, "chunks",
                                      (json_int_t)w->chunks));
    }
    json_object_set_new(srv, "objectStore", os ? os : json_null());
    return srv;
}

static json_t *subs_doc(const dsq_db_stats *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->nsubs; i++) {
        const dsq_sub_stats *x = &s->subs[i];
        json_array_append_new(a, json_pack("{s:I,s:I,s:I,s:b}", "lsn", (json_int_t)x->lsn, "lagLsn",
                                           (json_int_t)x->lag_lsn, "lagBytes", (json_int_t)x->lag_bytes,
                                           "readingLog", x->reading_log));
    }
    return a;
}

static json_t *stats_doc(const dsq_db_stats *s)
{
    json_t *db = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "name", s->name, "lsn",
                           (json_int_t)s->lsn, "pages", (json_int_t)s->pages, "pageSize", (json_int_t)s->page_size,
                           "bytes", (json_int_t)(s->pages * s->page_size), "freePages", (json_int_t)s->free_pages,
                           "statements", (json_int_t)s->statements, "statementCacheHits",
                           (json_int_t)s->cache_hits, "statementCacheMisses", (json_int_t)s->cache_misses,
                           "pageCacheHits", (json_int_t)s->page_cache_hits, "pageCacheMisses",
                           (json_int_t)s->page_cache_misses, "pageCacheBytes", (json_int_t)s->page_cache_bytes,
                           "transactionOpen", s->txn_open);
    if (db == NULL)
        return NULL;
    json_object_set_new(db, "storage",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "logSegments", (json_int_t)s->log_segments,
                                  "logBytes", (json_int_t)s->log_bytes, "checkpoints", (json_int_t)s->checkpoints,
                                  "checkpointBytes", (json_int_t)s->checkpoint_bytes, "oldestLsn",
                                  (json_int_t)s->oldest_lsn, "durableLsn", (json_int_t)s->durable_lsn, "fsyncs",
                                  (json_int_t)s->server.fsyncs));
    if (s->replicated) {
        static const char *const roles[] = {[DSQ_ROLE_ALONE] = "alone", [DSQ_ROLE_PRIMARY] = "primary",
                                            [DSQ_ROLE_FOLLOWER] = "follower", [DSQ_ROLE_ELSEWHERE] = "none"};
        json_t *copies = json_array();
        for (size_t i = 0; i < s->ncopies; i++) {
            const dsq_copy_stats *c = &s->copies[i];
            json_array_append_new(copies, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "node", c->node, "role",
                                                    c->primary ? "primary" : "follower", "durableLSN",
                                                    (json_int_t)c->durable, "appliedLSN", (json_int_t)c->applied,
                                                    "lagLSN", (json_int_t)c->lag_lsn, "lagMs", (json_int_t)c->lag_ms));
        }
        json_object_set_new(db, "replication", json_pack("{s:s,s:I,s:o}", "role", roles[s->role], "epoch",
                                                         (json_int_t)s->epoch, "copies", copies));
    }
    json_t *subs = subs_doc(s);
    json_object_set_new(db, "cdc", json_pack("{s:I,s:o}", "subscriptions", (json_int_t)s->nsubs, "subscribers",
                                             subs ? subs : json_array()));
    return json_pack("{s:o,s:o}", "database", db, "server", dsq_doc_server_stats(&s->server));
}

static json_t *names_doc(const dsq_call *c)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < c->nnames; i++) {
        if (json_array_append_new(a, json_string(c->names[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *dsq_doc_of(const dsq_call *c)
{
    if (c->err != 0)
        return NULL;
    switch (c->op) {
    case DSQ_OP_SCHEMA: return c->schema ? schema_doc(c->schema) : NULL;
    case DSQ_OP_STATS: return c->stats ? stats_doc(c->stats) : NULL;
    case DSQ_OP_PING:
        return json_pack("{s:b,s:I,s:I}", "pong", 1, "lsn", (json_int_t)c->lsn, "time", (json_int_t)c->time_ms);
    case DSQ_OP_LIST: return names_doc(c);
    case DSQ_OP_DROP: return json_pack("{s:b,s:s}", "dropped", 1, "database", c->db);
    default: return NULL;
    }
}
