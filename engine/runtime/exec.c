/* exec — running calls against an actor's SQLite connection (worker).
 *
 * Divisions: the sandbox (authorizer, pragma allow-list, lexical checks);
 * opening and closing; the statement cache; binding; running statements;
 * request transactions and LSNs; the operations; the entry point.
 *
 * Outside an explicit transaction every request runs in a transaction of
 * its own, BEGIN ... COMMIT, so a multi-statement `sql` or an atomic batch
 * is all or nothing, as a Durable Object's writes between awaits are.
 * Inside an explicit transaction requests are not wrapped (the client's
 * savepoints must outlive them). A commit that wrote anything
 * also advances the LSN in the same transaction (store.c). User SQL cannot
 * begin, commit or roll back on its own: the authorizer refuses it, so the
 * engine always knows where commits happen. The one exception is a lone
 * VACUUM, which SQLite runs only outside a transaction.
 *
 * Isolation. Writes are serializable: one transaction at a time, on the
 * actor's connection. Reads never wait for a writer: while a client's
 * explicit transaction is open, other clients' requests run on the last
 * commit through a second connection on a view of the store (the same
 * views time travel uses), and one that turns out to write waits for the
 * transaction to end (dsq__actor_repost). A read-only transaction
 * (beginTransaction readOnly) is such a view held across requests. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <zstd.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "engine/runtime/engine_int.h"
#include "engine/storage/disk.h"
#include "engine/storage/journal.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/vfs.h"
#include "engine/tier/warm.h"

/* ---- the sandbox ----------------------------------------------------------- */

/* PRAGMAs a client may run. Introspection takes any argument; read-only
 * ones none; the last group may also be set (they live in the database
 * file or in the current transaction, never in the shared connection). */
static const char *const pragma_introspect[] = {
    "table_info",   "table_xinfo",       "table_list",   "index_list",    "index_info",
    "index_xinfo",  "foreign_key_list",  "foreign_key_check", "integrity_check", "quick_check",
    "collation_list", "function_list",   "module_list",  "pragma_list",   "compile_options",
    "optimize",     NULL};
static const char *const pragma_readonly[] = {
    "page_count",   "page_size",         "freelist_count", "schema_version", "data_version",
    "encoding",     "auto_vacuum",       "foreign_keys", "max_page_count", "journal_mode",
    "synchronous",  NULL};
static const char *const pragma_settable[] = {"user_version", "application_id",
                                              "defer_foreign_keys", NULL};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcasecmp(*list, s) == 0)
            return true;
    return false;
}

static int deny(actor_open *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int deny(actor_open *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->deny, sizeof o->deny, fmt, ap);
    va_end(ap);
    return SQLITE_DENY;
}

static int authorizer(void *ud, int action, const char *a1, const char *a2, const char *a3,
                      const char *a4)
{
    actor_open *o = ud;
    /* A plain VACUUM (VACUUM INTO is refused before it runs) rebuilds the
     * database with statements of its own: BEGIN, a scratch ATTACH, reads
     * and writes of every table. They are SQLite's, not the client's. */
    if (o->internal || o->vacuum)
        return SQLITE_OK;
    switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        return deny(o, "ATTACH and DETACH are not allowed");
    case SQLITE_TRANSACTION:
        return deny(o, "%s is not allowed in SQL: use beginTransaction, commit and rollback",
                    a1 ? a1 : "transaction control");
    case SQLITE_SAVEPOINT:
        /* Beside another client's transaction it would be a no-op on the
         * view's connection, not the client's savepoint. */
        if (!o->in_txn || o->on_view)
            return deny(o, "SAVEPOINT, RELEASE and ROLLBACK TO need an open transaction "
                           "(beginTransaction)");
        dsq_strlcpy(o->sp_op, a1 ? a1 : "", sizeof o->sp_op);
        dsq_strlcpy(o->sp_name, a2 ? a2 : "", sizeof o->sp_name);
        return SQLITE_OK;
    case SQLITE_CREATE_TABLE:
        if (a1 && a2 && strcmp(a2, "main") == 0)
            dsq_strlcpy(o->stmt_created, a1, sizeof o->stmt_created);
        o->stmt_ddl = true;
        return SQLITE_OK;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_ALTER_TABLE:
        o->stmt_ddl = true;
        return SQLITE_OK;
    case SQLITE_ANALYZE:
    case SQLITE_REINDEX:
        o->stmt_writes = true; /* they write the database, whatever sqlite3_stmt_readonly() says */
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (a1 == NULL)
            return deny(o, "PRAGMA is not allowed");
        if (strcasecmp(a1, "optimize") == 0)
            o->stmt_writes = true; /* it may run ANALYZE (sqlite3_stmt_readonly() says no) */
        if (in_list(pragma_introspect, a1) || in_list(pragma_settable, a1))
            return SQLITE_OK;
        if (in_list(pragma_readonly, a1)) {
            if (a2 == NULL)
                return SQLITE_OK;
            return deny(o, "PRAGMA %s may be read, not set", a1);
        }
        return deny(o, "PRAGMA %s is not allowed", a1);
    case SQLITE_FUNCTION:
        if (a2 && (strcasecmp(a2, "load_extension") == 0 || strcasecmp(a2, "fts3_tokenizer") == 0))
            return deny(o, "%s() is not allowed", a2);
        return SQLITE_OK;
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
        return deny(o, "temporary tables, views, indexes and triggers are not allowed "
                       "(every client of a database shares its connection)");
    default:
        return SQLITE_OK;
    }
}

/* Skip white space and comments. */
static const char *skip_space(const char *p, const char *end)
{
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f') {
            p++;
        } else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < end && !(p[0] == '*' && p[1] == '/'))
                p++;
            p = p + 1 < end ? p + 2 : end;
        } else {
            break;
        }
    }
    return p;
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (unsigned char)c >= 0x80;
}

/* Does the statement text start with keyword `kw`? */
static bool starts_with_word(const char *sql, size_t len, const char *kw)
{
    const char *end = sql + len;
    const char *p = skip_space(sql, end);
    size_t k = strlen(kw);
    return (size_t)(end - p) >= k && strncasecmp(p, kw, k) == 0 &&
           (p + k == end || !is_word_char(p[k]));
}

/* Does keyword `kw` appear as a token (outside quotes and comments)? */
static bool has_word(const char *sql, size_t len, const char *kw)
{
    const char *end = sql + len, *p = sql;
    size_t k = strlen(kw);
    while (p < end) {
        p = skip_space(p, end);
        if (p >= end)
            break;
        char q = *p;
        if (q == '\'' || q == '"' || q == '`' || q == '[') {
            char close = q == '[' ? ']' : q;
            for (p++; p < end; p++) {
                if (*p == close) {
                    if (close != ']' && p + 1 < end && p[1] == close) {
                        p++; /* doubled quote */
                        continue;
                    }
                    p++;
                    break;
                }
            }
            continue;
        }
        if (is_word_char(q)) {
            const char *w = p;
            while (p < end && is_word_char(*p))
                p++;
            if ((size_t)(p - w) == k && strncasecmp(w, kw, k) == 0)
                return true;
            continue;
        }
        p++;
    }
    return false;
}

/* Is there nothing but white space, comments and one ';' after the first
 * statement? (The first ';' outside quotes and comments ends it; SQL's
 * only other use of ';' is inside CREATE TRIGGER, which VACUUM is not.) */
static bool lone_statement(const char *sql, size_t len)
{
    const char *end = sql + len, *p = sql;
    while (p < end) {
        p = skip_space(p, end);
        if (p >= end)
            return true;
        char q = *p;
        if (q == '\'' || q == '"' || q == '`' || q == '[') {
            char close = q == '[' ? ']' : q;
            for (p++; p < end && *p != close; p++)
                ;
            p++;
            continue;
        }
        if (q == ';')
            return skip_space(p + 1, end) == end;
        p++;
    }
    return true;
}

/* ---- opening and closing ------------------------------------------------------ */

static int progress(void *ud)
{
    actor_open *o = ud;
    if (o->running != NULL && dsq__cancelled(o->running))
        return 1;
    return o->deadline_ns != 0 && dsq_now_ns() > o->deadline_ns;
}

/* Limits, settings and the authorizer every connection of an actor gets. */
static void sandbox(actor_open *o, sqlite3 *db, const dsq_engine_cfg *cfg)
{
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    /* No value can be larger than a whole result may be. */
    size_t length = cfg->max_value_size < cfg->max_result_size ? cfg->max_value_size : cfg->max_result_size;
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, length > INT32_MAX ? INT32_MAX : (int)length);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, (int)cfg->max_sql_length);
    sqlite3_limit(db, SQLITE_LIMIT_COLUMN, cfg->max_columns);
    sqlite3_limit(db, SQLITE_LIMIT_EXPR_DEPTH, cfg->max_expr_depth);
    sqlite3_limit(db, SQLITE_LIMIT_VARIABLE_NUMBER, cfg->max_params);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 1); /* VACUUM's scratch database; the authorizer refuses users' */
    sqlite3_limit(db, SQLITE_LIMIT_TRIGGER_DEPTH, 100);
    sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0);
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size=%d", cfg->cache_pages);
    sqlite3_exec(db, pragma, NULL, NULL, NULL);
    sqlite3_set_authorizer(db, authorizer, o);
    sqlite3_progress_handler(db, 1000, progress, o);
    /* Builtins that can work for long inside one call, between two looks
     * of the progress handler, replaced by bounded ones (sqlfn.c) that ask
     * it themselves. */
    o->fn_stop = (dsq_sqlfn_stop){progress, o};
    if (dsq__sqlfn_register(db, &o->fn_stop) != SQLITE_OK)
        DSQ_ERROR("sql_functions_failed", "error=%s", dsq_log_q(sqlite3_errmsg(db)));
}

static void offer_files(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t closed_lsn);
static void pins_release(dsq_engine *e, dsq_actor *a);

int dsq__actor_open(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    if (a->open)
        return 0;
    actor_open *o = calloc(1, sizeof *o);
    char err[512];
    if (o == NULL) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    if (e->tier != NULL && !dsq_tier_ready(e->tier) && !dsq__store_exists(e, a->name) &&
        !dsq_tier_tombstoned(e->tier, a->name)) {
        /* Not here, and the store may have it: making it new now would
         * hide (and its first upload replace) the store's copy. */
        free(o);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "database %s is not on this node and the object store, which may have it, cannot be reached "
                  "yet (it is tried again in the background); try again later",
                  a->name);
        return -1;
    }
    dsq_evict_opening(e->evict, a->name); /* its files stay as they are while it is open */
    if (dsq__store_open(e, a->name, a->closed_durable, &o->ps, &o->db, err, sizeof err) != 0) {
        int eno = errno;
        dsq_evict_closed(e->evict, a->name);
        free(o);
        if (e->warm != NULL && dsq_warm_missed()) /* not a failure: it opens again once the page is here */
            DSQ_DEBUG("database_open_cold", "db=%s reason=%s", a->name, dsq_log_q(err));
        else
            DSQ_ERROR("database_open_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
        /* The message names the server's files: the log has it, the
         * client gets what it can act on. */
        if (eno == EMFILE || eno == ENFILE)
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                      "cannot open database %s: too many open files on the server; try again later", a->name);
        else
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot open database %s's storage (the server's log has the details)",
                      a->name);
        return -1;
    }
    if ((o->cap = dsq_cdc_cap_new(o->db)) == NULL) {
        sqlite3_close(o->db);
        dsq_ps_close(o->ps);
        dsq_evict_closed(e->evict, a->name);
        free(o);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    o->lsn = dsq_ps_lsn(o->ps);
    dsq__gate_init(&o->gate, e, dsq_ps_wal(o->ps), o->lsn, a->name, &a->feed);
    if (e->tier != NULL && e->cfg.tier_commit)
        dsq_wal_tee(dsq_ps_wal(o->ps), true); /* the tails come from memory */
    sandbox(o, o->db, &e->cfg);
    o->engine = e;
    a->open = o;
    atomic_fetch_add(&e->nopen_real, 1);
    /* What a crash or restart left not uploaded (recovered, so durable):
     * once per start; later opens follow closes that offered it all. */
    if (!a->offered && o->lsn > 0)
        offer_files(e, a, o, 0);
    return 0;
}

/* Offer the database's durable files to the object store (tier.h): up
 * to the durable end of its log while open (o), or whole once closed. */
static void offer_files(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t closed_lsn)
{
    if (e->tier == NULL)
        return;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/db/%s", e->data_dir, a->name);
    uint32_t seq = 0;
    uint64_t size = 0, lsn = closed_lsn;
    if (o != NULL) {
        /* While it is open, its last segment goes up in whole chunks only
         * (each chunk is written once); the rest when it closes. */
        lsn = dsq_wal_durable_end(dsq_ps_wal(o->ps), &seq, &size);
        if (!e->cfg.tier_commit) /* with it, the records are in tails already */
            size -= size % e->cfg.tier_chunk_bytes;
        /* But never less than its header (durable since the segment was
         * made): one offered shorter is left out, and the manifest would
         * stop naming a segment it holds whole from the last close, or
         * one evicted since, and its objects would be deleted. */
        if (seq > 0 && size < DSQ_WAL_SEG_HDR)
            size = DSQ_WAL_SEG_HDR;
        o->offered_ms = dsq_now_ms();
    }
    a->offered = true;
    dsq_tier_file *files;
    size_t n;
    if (dsq_tier_list_files(dir, o == NULL, seq, size, &files, &n) != 0) {
        DSQ_WARN("upload_skipped", "db=%s reason=%s", a->name, dsq_log_q(strerror(errno)));
        return;
    }
    if (n > 0)
        dsq_tier_offer(e->tier, a->name, lsn, files, n);
    free(files);
}

void dsq__actor_close(dsq_actor *a)
{
    actor_open *o = a->open;
    if (o == NULL)
        return;
    o->internal = true;
    if (o->stream_stmt)
        sqlite3_finalize(o->stream_stmt);
    o->stream_stmt = NULL;
    dsq__sstreams_close(a, NULL);
    dsq__snaps_close_all(o->engine, a);
    dsq__beside_close(o);
    if (!sqlite3_get_autocommit(o->db))
        sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(o->cache[i].stmt);
        free(o->cache[i].sql);
    }
    for (size_t i = 0; i < sizeof o->ctl / sizeof o->ctl[0]; i++)
        sqlite3_finalize(o->ctl[i]);
    dsq_cdc_cap_free(o->cap);
    int rc = sqlite3_close(o->db);
    if (rc != SQLITE_OK)
        DSQ_ERROR("database_close_failed", "db=%s error=%s", a->name, dsq_log_q(sqlite3_errstr(rc)));
    /* Everything appended becomes durable and the replies waiting for it
     * go; if the disk refused, what is not durable is cut from the log, so
     * the next open starts from the last durable commit. */
    a->closed_durable = false;
    if (dsq__gate_close(o->engine, &o->gate) == 0) {
        a->closed_durable = true;
    } else {
        char err[400];
        if (dsq_wal_rewind(dsq_ps_wal(o->ps), err, sizeof err) != 0)
            DSQ_ERROR("log_rewind_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
        else
            DSQ_WARN("database_restarted", "db=%s lsn=%llu reason=log_sync_failed", a->name,
                     (unsigned long long)dsq_wal_durable(dsq_ps_wal(o->ps)));
    }
    uint64_t durable = dsq_wal_durable(dsq_ps_wal(o->ps));
    dsq_ps_close(o->ps);
    if (a->npins > 0)
        pins_release(o->engine, a);
    atomic_fetch_sub(&o->engine->nopen_real, 1);
    dsq_engine *e = o->engine;
    free(o);
    a->open = NULL;
    if (a->closed_durable)
        offer_files(e, a, NULL, durable); /* all of it is durable now */
    dsq_evict_closed(e->evict, a->name);
    atomic_fetch_add(&e->closes, 1); /* (the tick has the heap trimmed after many: dsq__heap_trim) */
}

/* ---- connections on views: reads beside a transaction, read-only transactions ---- */

/* A connection on the database as of `lsn`, with the actor's sandbox. -1
 * when there is no such view (the LSN is out of the history kept), -2
 * when the connection cannot open; the reason in err either way (a page
 * may be in the object store: cold). */
static int view_conn(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t lsn, dsq_ps_view **vp,
                     sqlite3 **dbp, char *err, size_t errlen)
{
    *vp = NULL;
    *dbp = NULL;
    if (dsq_ps_view_open(o->ps, lsn, vp, err, errlen) != 0)
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/db/%s/db", e->data_dir, a->name);
    if (dsq__vfs_open_view(*vp, path, dbp, err, errlen) != 0) {
        dsq_ps_view_close(*vp);
        *vp = NULL;
        return -2;
    }
    sandbox(o, *dbp, &e->cfg);
    return 0;
}

void dsq__beside_close(actor_open *o)
{
    if (o->snap_db != NULL)
        sqlite3_close(o->snap_db);
    dsq_ps_view_close(o->snap_view);
    o->snap_db = NULL;
    o->snap_view = NULL;
}

/* Remove read-only transaction i: its connection and view close. Worker. */
static void snap_remove(dsq_engine *e, dsq_actor *a, size_t i)
{
    /* Only this worker adds or removes entries, but the loop thread
     * writes their deadlines: entries are copied and moved under mu. */
    pthread_mutex_lock(&a->mu);
    sqlite3 *db = a->snaps[i].db;
    pthread_mutex_unlock(&a->mu);
    dsq__sstreams_close(a, db); /* its streams end with it */
    pthread_mutex_lock(&a->mu);
    snap_txn t = a->snaps[i];
    a->snaps[i] = a->snaps[--a->nsnaps];
    pthread_mutex_unlock(&a->mu);
    sqlite3_close(t.db);
    dsq_ps_view_close(t.view);
    atomic_fetch_sub(&e->txns_open, 1);
}

void dsq__snaps_close_all(dsq_engine *e, dsq_actor *a)
{
    while (a->nsnaps > 0)
        snap_remove(e, a, a->nsnaps - 1);
}

/* ---- the statement cache ------------------------------------------------------ */

/* The cache is keyed by the whole text that remains of a request from the
 * statement on (so "SELECT 1; " and "SELECT 1;" are different keys, each
 * always found again); a slot remembers how much of it the statement used. */
static sqlite3_stmt *cache_get(actor_open *o, const char *rest, size_t len, size_t *consumed)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        stmt_slot *s = &o->cache[i];
        if (s->stmt && s->len == len && memcmp(s->sql, rest, len) == 0) {
            s->used = ++o->clock;
            o->cache_hits++;
            *consumed = s->consumed;
            return s->stmt;
        }
    }
    o->cache_misses++;
    return NULL;
}

/* Keep `st` for `rest`. On failure (out of memory) st is finalized. */
static int cache_put(actor_open *o, const char *rest, size_t len, size_t consumed, sqlite3_stmt *st)
{
    stmt_slot *victim = &o->cache[0];
    for (int i = 0; i < STMT_CACHE; i++) {
        if (o->cache[i].stmt == NULL) {
            victim = &o->cache[i];
            break;
        }
        if (o->cache[i].used < victim->used)
            victim = &o->cache[i];
    }
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        sqlite3_finalize(st);
        return -1;
    }
    memcpy(copy, rest, len);
    sqlite3_finalize(victim->stmt);
    free(victim->sql);
    victim->stmt = st;
    victim->sql = copy;
    victim->len = len;
    victim->consumed = consumed;
    victim->used = ++o->clock;
    return 0;
}

/* ---- binding -------------------------------------------------------------------- */

static int bind_value(sqlite3_stmt *st, int i, const dsq_value *v)
{
    switch (v->type) {
    case DSQ_V_INT: return sqlite3_bind_int64(st, i, v->i);
    case DSQ_V_REAL: return sqlite3_bind_double(st, i, v->d);
    case DSQ_V_TEXT: return sqlite3_bind_text64(st, i, v->p, v->n, SQLITE_STATIC, SQLITE_UTF8);
    case DSQ_V_BLOB: return sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_STATIC);
    default: return sqlite3_bind_null(st, i);
    }
}

/* Bind the request's parameters to `st`, marking which were used. */
static int bind_params(dsq_call *c, sqlite3_stmt *st, const dsq_stmt_req *r, unsigned char *used)
{
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (r->named) {
            if (name == NULL || name[0] == '?') {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses positional parameters (?) but params is an object");
                return -1;
            }
            size_t k;
            for (k = 0; k < r->nparams; k++)
                if (strcmp(r->params[k].name, name + 1) == 0)
                    break;
            if (k == r->nparams) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "missing parameter %s", name);
                return -1;
            }
            used[k] = 1;
            if (bind_value(st, i, &r->params[k].v) != SQLITE_OK) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "cannot bind parameter %s", name);
                return -1;
            }
        } else {
            if (name != NULL && name[0] != '?') {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses named parameter %s but params is an array", name);
                return -1;
            }
            if ((size_t)i > r->nparams) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses %d parameter%s but params has %zu", n, n == 1 ? "" : "s",
                          r->nparams);
                return -1;
            }
            used[i - 1] = 1;
            if (bind_value(st, i, &r->params[i - 1].v) != SQLITE_OK) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "cannot bind parameter ?%d", i);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- running statements -------------------------------------------------------- */

typedef struct run_ctx {
    dsq_engine *e;
    dsq_actor *a;
    actor_open *o;
    dsq_call *c;
    size_t bytes_before; /* result bytes of earlier statements kept by the call */
    sqlite3 *db;         /* the connection statements run on: o->db, or a time-travel one */
    sqlite3_stmt *scratch; /* the time-travel connection's statement in hand */
    bool past;           /* a time-travel query: statements may only read */
    bool beside;         /* reads beside another client's open transaction: a statement
                            that writes makes the call wait for it (park) */
    bool park;           /* so it did: the call goes back to the mailbox, to run later */
    snap_txn *snap;      /* the read-only transaction the call names, or NULL */
    size_t start_off;    /* run_sql: begin at this byte of the SQL (a run after a cold page) */
    bool retry;          /* a page was in the object store: run the call again once it is here */
} run_ctx;

/* Whether what just failed read a page that is in the object store, not
 * in the warm cache yet (warm.h): then the call runs again later. */
static bool cold(const run_ctx *x) { return x->e->warm != NULL && dsq_warm_missed(); }

dsq_code dsq__sqlite_code(int rc, const char *msg)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_DATATYPE)
            return DSQ_CODE_TYPE_MISMATCH;
        return DSQ_CODE_CONSTRAINT_VIOLATION;
    case SQLITE_MISMATCH: return DSQ_CODE_TYPE_MISMATCH;
    case SQLITE_INTERRUPT: return DSQ_CODE_TIMEOUT;
    case SQLITE_AUTH: return DSQ_CODE_FORBIDDEN;
    case SQLITE_TOOBIG: return DSQ_CODE_RESOURCE_EXHAUSTED;
    case SQLITE_NOMEM:
    case SQLITE_FULL: return DSQ_CODE_RESOURCE_EXHAUSTED;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return DSQ_CODE_SERIALIZATION_FAILURE;
    case SQLITE_RANGE: return DSQ_CODE_INVALID_REQUEST;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_INTERNAL:
    case SQLITE_PROTOCOL: return DSQ_CODE_INTERNAL_ERROR;
    case SQLITE_ERROR:
        if (msg) {
            if (strncmp(msg, "no such table", 13) == 0)
                return DSQ_CODE_TABLE_NOT_FOUND;
            if (strncmp(msg, "no such column", 14) == 0)
                return DSQ_CODE_COLUMN_NOT_FOUND;
            if (strstr(msg, "syntax error") || strncmp(msg, "incomplete input", 16) == 0 ||
                strncmp(msg, "unrecognized token", 18) == 0)
                return DSQ_CODE_SYNTAX_ERROR;
        }
        return DSQ_CODE_INVALID_REQUEST;
    default: return DSQ_CODE_UNKNOWN;
    }
}

/* Fail `c` with the connection's current error. */
static void fail_sqlite(run_ctx *x, int rc)
{
    actor_open *o = x->o;
    const char *msg = sqlite3_errmsg(x->db ? x->db : o->db);
    /* A denied function comes back as SQLITE_ERROR, other denials as
     * SQLITE_AUTH: whenever the authorizer said no, say why. */
    if (o->deny[0])
        dsq__fail(x->c, DSQ_CODE_FORBIDDEN, "%s", o->deny);
    else if ((rc & 0xff) == SQLITE_INTERRUPT && dsq__cancelled(x->c))
        dsq__fail(x->c, DSQ_CODE_TIMEOUT, "the request was cancelled");
    else if ((rc & 0xff) == SQLITE_INTERRUPT)
        dsq__fail(x->c, DSQ_CODE_TIMEOUT, "the statement ran past query_timeout (%llu ms)",
                  (unsigned long long)x->e->cfg.query_timeout_ms);
    else if ((rc & 0xff) == SQLITE_IOERR && (sqlite3_system_errno(x->db ? x->db : o->db) == EMFILE ||
                                             sqlite3_system_errno(x->db ? x->db : o->db) == ENFILE))
        /* The store could not open a file (a new log segment, a page's
         * file): the server's limit, not the database's fault. */
        dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "too many open files on the server; try again later");
    else
        dsq__fail(x->c, dsq__sqlite_code(rc, msg), "%s", msg);
}

/* Run our own SQL (not subject to the sandbox). */
/* The transaction-control statements every request runs: prepared once
 * per connection instead of parsed each time. */
static const char *const ctl_sql[] = {"BEGIN", "COMMIT", "ROLLBACK", "BEGIN IMMEDIATE",
                                      "BEGIN DEFERRED"};
_Static_assert(sizeof ctl_sql / sizeof ctl_sql[0] == sizeof ((actor_open *)0)->ctl /
                                                         sizeof(sqlite3_stmt *),
               "one prepared slot per control statement");

/* Run our own SQL (the authorizer lets it pass). Returns SQLITE_OK or the
 * error. */
static int internal_exec(actor_open *o, const char *sql)
{
    int rc = SQLITE_OK;
    size_t i = 0;
    while (i < sizeof ctl_sql / sizeof ctl_sql[0] && strcmp(ctl_sql[i], sql) != 0)
        i++;
    o->internal = true;
    if (i == sizeof ctl_sql / sizeof ctl_sql[0]) {
        rc = sqlite3_exec(o->db, sql, NULL, NULL, NULL);
    } else {
        if (o->ctl[i] == NULL)
            rc = sqlite3_prepare_v3(o->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &o->ctl[i], NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(o->ctl[i]);
            int rc2 = sqlite3_reset(o->ctl[i]);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc2 != SQLITE_OK ? rc2 : rc;
        }
    }
    o->internal = false;
    return rc;
}

/* The shared budget is charged in steps of this much (and at the end of
 * each statement), not at every row; each row only reads it. */
#define BUDGET_STEP (64u << 10)

/* The call holds `holding` bytes of rows now: within max_result_bytes,
 * alone and with what the request's other calls hold (c->budget)? The
 * budget is charged up to the call's high-water mark (c->result_bytes;
 * dsq__exec settles it when the call ends). 0, or -1 with the call
 * failed. */
static int budget_check(run_ctx *x, size_t holding, bool final)
{
    dsq_call *c = x->c;
    dsq_budget *b = c->budget;
    size_t limit = x->e->cfg.max_result_size;
    if (holding > limit) {
        if (b != NULL)
            atomic_store(&b->over, true);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "the result is larger than max_result_bytes (%zu bytes)", limit);
        return -1;
    }
    if (b == NULL || holding <= c->result_bytes)
        return 0;
    uint64_t more = holding - c->result_bytes;
    if (!final && more < BUDGET_STEP && atomic_load(&b->used) + more <= limit)
        return 0;
    uint64_t used = atomic_fetch_add(&b->used, more) + more;
    c->result_bytes = holding;
    if (used > limit) {
        atomic_store(&b->over, true);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "the request's results are larger than max_result_bytes (%zu bytes) together",
                  limit);
        return -1;
    }
    return 0;
}

/* A QUERY or BATCH call of a request whose results already went past the
 * budget fails before it runs: 1 when so. */
static int budget_spent(run_ctx *x)
{
    dsq_call *c = x->c;
    if (c->budget == NULL || c->cold_retry || !atomic_load(&c->budget->over))
        return 0;
    dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
              "not run: the request's results went past max_result_bytes (%zu bytes)",
              x->e->cfg.max_result_size);
    return 1;
}

/* The call is over: its budget holds what its results hold (nothing when
 * it failed), no longer its high-water mark. */
static void budget_settle(dsq_call *c)
{
    if (c->op != DSQ_OP_QUERY && c->op != DSQ_OP_BATCH)
        return;
    uint64_t hold = 0;
    for (size_t i = 0; c->err == 0 && i < c->nresults; i++)
        hold += c->results[i].rows.len;
    if (c->budget != NULL && hold > c->result_bytes)
        atomic_fetch_add(&c->budget->used, hold - c->result_bytes);
    else if (c->budget != NULL && hold < c->result_bytes)
        atomic_fetch_sub(&c->budget->used, c->result_bytes - hold);
    c->result_bytes = hold;
}

/* Step `st` to the end, keeping its rows in `res`. */
static int step_all(run_ctx *x, sqlite3_stmt *st, dsq_result *res)
{
    actor_open *o = x->o;
    sqlite3 *db = x->db ? x->db : o->db;
    int ncols = sqlite3_column_count(st);
    int64_t before = sqlite3_total_changes64(db);
    if (dsq__result_columns(res, st) != 0) {
        dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    o->statements++;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (dsq__result_add(res, st, ncols) != 0) {
                dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
                return -1;
            }
            if (budget_check(x, x->bytes_before + res->rows.len, false) != 0)
                return -1;
            continue;
        }
        if (rc == SQLITE_DONE) {
            if (budget_check(x, x->bytes_before + res->rows.len, true) != 0)
                return -1;
            break;
        }
        fail_sqlite(x, rc);
        return -1;
    }
    /* sqlite3_changes() still counts the last DML when this was DDL; the
     * total tells whether this statement changed rows at all. */
    res->rows_affected = sqlite3_total_changes64(db) != before ? sqlite3_changes64(db) : 0;
    res->last_insert_rowid = sqlite3_last_insert_rowid(db);
    return 0;
}

/* Run every statement in r->sql in order; `res` keeps the last one's. */
static int run_sql(run_ctx *x, const dsq_stmt_req *r, dsq_result *res)
{
    actor_open *o = x->o;
    dsq_call *c = x->c;
    const char *p = r->sql + x->start_off, *end = r->sql + r->sql_len;
    bool resumed = x->start_off > 0;
    x->start_off = 0;
    unsigned char *used = calloc(r->nparams ? r->nparams : 1, 1);
    int nstmts = 0, rv = -1;
    if (used == NULL) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    /* A time-travel connection lives for one request: no cache. */
    bool cached = x->db == NULL || x->db == o->db;
    sqlite3_stmt *temp = NULL; /* a statement not kept: finalized after its run */
    sqlite3 *db = x->db ? x->db : o->db;
    while (p < end) {
        size_t take = 0;
        sqlite3_stmt *st = cached ? cache_get(o, p, (size_t)(end - p), &take) : NULL;
        const char *tail;
        /* A statement that changes the schema or is a savepoint is not
         * kept: what the authorizer says of it while it is prepared is
         * what the change capture needs, each time. */
        bool special = false;
        o->stmt_ddl = o->stmt_writes = false;
        o->stmt_created[0] = o->sp_op[0] = '\0';
        if (st != NULL) {
            tail = p + take;
        } else {
            o->deny[0] = '\0';
            int rc = sqlite3_prepare_v3(db, p, (int)(end - p), cached ? SQLITE_PREPARE_PERSISTENT : 0,
                                        &st, &tail);
            if (rc != SQLITE_OK) {
                fail_sqlite(x, rc);
                goto out;
            }
            if (st == NULL) { /* only white space or comments left */
                p = tail;
                continue;
            }
            const char *text = sqlite3_sql(st);
            if (text && starts_with_word(text, strlen(text), "VACUUM") &&
                has_word(text, strlen(text), "INTO")) {
                sqlite3_finalize(st);
                dsq__fail(c, DSQ_CODE_FORBIDDEN, "VACUUM INTO writes a file; it is not allowed");
                goto out;
            }
            special = o->stmt_ddl || o->stmt_writes || o->sp_op[0] != '\0';
            if (cached && !special && cache_put(o, p, (size_t)(end - p), (size_t)(tail - p), st) != 0) {
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
        }
        if (cached && special)
            temp = st;
        if (!cached && x->scratch != NULL)
            sqlite3_finalize(x->scratch);
        if (!cached)
            x->scratch = st; /* finalized with the connection's request */
        bool ddl = o->stmt_ddl;
        char created[sizeof o->stmt_created], sp_op[sizeof o->sp_op], sp_name[sizeof o->sp_name];
        memcpy(created, o->stmt_created, sizeof created);
        memcpy(sp_op, o->sp_op, sizeof sp_op);
        memcpy(sp_name, o->sp_name, sizeof sp_name);
        nstmts++;
        /* (A cached statement is never one of stmt_writes': not special.) */
        bool reads = sqlite3_stmt_readonly(st) && !o->stmt_writes;
        if (x->snap && !reads) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "transaction %.40s is read-only", c->txn);
            goto out;
        }
        if (x->past && !reads) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "a query with asOf only reads");
            goto out;
        }
        if (!(c->scope & DSQ_SCOPE_W) && !reads) {
            dsq__fail(c, DSQ_CODE_FORBIDDEN, "this statement writes; the token has read scope only");
            goto out;
        }
        if (x->beside && !reads) {
            x->park = true; /* it runs once the open transaction ends (if it may write) */
            dsq__fail(c, DSQ_CODE_SERIALIZATION_FAILURE, "it writes while a transaction is open");
            goto out;
        }
        int brc = bind_params(c, st, r, used);
        const char *text = sqlite3_sql(st);
        o->vacuum = text && starts_with_word(text, strlen(text), "VACUUM");
        bool capture = db == o->db; /* not a time-travel connection */
        dsq_cdc_mark mark = dsq_cdc_cap_mark(o->cap);
        if (brc == 0)
            brc = step_all(x, st, res);
        if (brc == 0 && cold(x) && sqlite3_stmt_readonly(st)) {
            /* It read past a page on its way from the object store and went
             * on (PRAGMA integrity_check reports such a page in its rows):
             * its result is not the database's. It runs again. */
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "a page is on its way from the object store");
            brc = -1;
        }
        o->vacuum = false;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (capture && brc != 0) {
            dsq_cdc_cap_rewind(o->cap, mark); /* SQLite undid the statement */
        } else if (capture) {
            if (sp_op[0])
                dsq_cdc_cap_savepoint(o->cap, sp_op, sp_name, mark);
            o->internal = true; /* the capture's own queries */
            int crc = dsq_cdc_cap_statement_done(o->cap, mark, ddl ? text : NULL,
                                                 created[0] ? created : NULL);
            o->internal = false;
            if (crc != 0) {
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                          "out of memory capturing the statement's row changes");
                brc = -1;
            }
        }
        if (temp != NULL) {
            sqlite3_finalize(temp);
            temp = NULL;
        }
        if (brc != 0)
            goto out;
        p = tail;
    }
    if (nstmts == 0 && !resumed) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "sql holds no statement");
        goto out;
    }
    /* (A run that goes on after a cold page did not see the parameters
     * the statements before used.) */
    for (size_t k = 0; k < r->nparams && !resumed; k++) {
        if (!used[k]) {
            if (r->named)
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "parameter %s is not used by the SQL",
                          r->params[k].name);
            else
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "params has %zu values; the SQL uses fewer", r->nparams);
            goto out;
        }
    }
    rv = 0;
out:
    if (rv != 0 && cold(x))
        c->resume_off = (size_t)(p - r->sql); /* where the statement that waits begins */
    sqlite3_finalize(temp); /* a refusal left it unrun */
    free(used);
    return rv;
}

/* ---- request transactions and LSNs ------------------------------------------------ */

static void append_msg(dsq_call *c, const char *more)
{
    size_t n = strlen(c->msg);
    snprintf(c->msg + n, sizeof c->msg - n, "%s", more);
}

static void end_txn(run_ctx *x)
{
    dsq_actor *a = x->a;
    if (!x->o->in_txn)
        return;
    x->o->in_txn = false;
    dsq__beside_close(x->o); /* the last commit moves on, or stays the one it had */
    pthread_mutex_lock(&a->mu);
    a->txn[0] = '\0';
    a->txn_session = 0;
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_sub(&x->e->txns_open, 1);
}

/* Write a checkpoint and apply the retention window (between requests). */
static void checkpoint(dsq_actor *a, actor_open *o)
{
    char err[600];
    uint64_t t0 = dsq_now_ns();
    /* Read-only transactions read the history through their views: it
     * stays (no retention, no merge) until they end. */
    bool keep = a->nsnaps > 0 || a->nsstreams > 0 || o->snap_db != NULL;
    if (dsq_ps_checkpoint(o->ps, err, sizeof err) != 0 ||
        (!keep && dsq_ps_maintain(o->ps, dsq_wall_ms() * 1000, err, sizeof err) != 0)) {
        /* Commits go on from the log; try again in a while, not at every
         * commit (a full disk would make each one pay for a failed write). */
        o->ckpt_after_ms = dsq_now_ms() + 5000;
        DSQ_ERROR("checkpoint_failed", "db=%s reason=%s retry_in_ms=5000", a->name, dsq_log_q(err));
        return;
    }
    DSQ_DEBUG("checkpoint", "db=%s lsn=%llu ms=%.1f", a->name, (unsigned long long)o->lsn,
              (double)(dsq_now_ns() - t0) / 1e6);
    offer_files(o->engine, a, o, 0);
}

/* A database that closes (hibernation, shutdown) with a megabyte or more
 * of log after its newest checkpoint gets one first, so that its next
 * open replays little; any closing database applies history_retention. */
static void checkpoint_before_close(dsq_actor *a)
{
    actor_open *o = a->open;
    if (o == NULL || o->in_txn || dsq__gate_failed(&o->gate))
        return;
    if (dsq_ps_log_since(o->ps) >= (1u << 20)) {
        checkpoint(a, o); /* applies the retention window too */
        return;
    }
    /* History that aged out while the database was quiet goes now. */
    char err[600];
    if (a->nsnaps == 0 && a->nsstreams == 0 && o->snap_db == NULL && dsq_ps_maintain(o->ps, dsq_wall_ms() * 1000, err, sizeof err) != 0)
        DSQ_ERROR("retention_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
}

/* After SQLite may have committed: the store's LSN is the connection's.
 * The reply waits at the output gate until it is durable (gate.c). */
static int took_commit(run_ctx *x, const void *changes, size_t nchanges)
{
    actor_open *o = x->o;
    uint64_t lsn = dsq_ps_lsn(o->ps);
    dsq_feed *feed = atomic_load(&x->a->feed);
    if (lsn != o->lsn)
        dsq__beside_close(o);
    if (feed != NULL && lsn > o->lsn) {
        dsq__feed_commit(feed, lsn, dsq_ps_lsn_time(o->ps), changes, nchanges);
        if (x->e->cfg.sync == DSQ_SYNC_OFF) /* no syncs: as durable as it gets */
            dsq__feed_durable(x->e, feed, lsn);
    }
    o->lsn = lsn;
    if (dsq_ps_checkpoint_due(o->ps) && !o->in_txn && dsq_now_ms() >= o->ckpt_after_ms)
        checkpoint(x->a, o);
    else if (x->e->tier != NULL && dsq_now_ms() - o->offered_ms >= x->e->cfg.tier_interval_ms)
        offer_files(x->e, x->a, o, 0);
    return 0;
}

/* Commit what is open; if it wrote, the log gave it the next LSN. */
static int commit(run_ctx *x)
{
    actor_open *o = x->o;
    /* The row changes go into the commit's log record (cdc.h). */
    const void *changes;
    size_t nchanges;
    if (dsq_cdc_cap_encode(o->cap, &changes, &nchanges) != 0) {
        dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory capturing the row changes");
        internal_exec(o, "ROLLBACK");
        return -1;
    }
    dsq_ps_set_extra(o->ps, changes, nchanges);
    int rc = internal_exec(o, "COMMIT");
    dsq_ps_set_extra(o->ps, NULL, 0);
    if (rc != SQLITE_OK) {
        fail_sqlite(x, rc); /* e.g. a deferred foreign key, or the log refused the record */
        bool open = !sqlite3_get_autocommit(o->db);
        if (cold(x) && (!o->in_txn || open)) {
            /* (A deferred foreign key check read a page that is in the
             * object store.) Outside a transaction the request runs again
             * whole; an explicit one stays open for its COMMIT to run again. */
            x->retry = true;
            x->c->resume_off = 0;
            if (o->in_txn)
                return -1;
        }
        if (open)
            internal_exec(o, "ROLLBACK");
        return -1;
    }
    took_commit(x, changes, nchanges);
    dsq_cdc_cap_reset(o->cap);
    return 0;
}

/* Outside an explicit transaction a request is a transaction of its own.
 * Inside one it is not wrapped: a savepoint around it would swallow the
 * client's own savepoints at its end. There a failing statement undoes
 * itself (SQLite's statement rollback) and the client decides the rest. */
static int begin_request(run_ctx *x)
{
    if (x->o->in_txn)
        return 0;
    int rc = internal_exec(x->o, "BEGIN");
    if (rc != SQLITE_OK) {
        fail_sqlite(x, rc);
        return -1;
    }
    return 0;
}

/* Keep the request's work if ok, else undo it. Returns 0 when kept. */
static int end_request(run_ctx *x, bool ok)
{
    actor_open *o = x->o;
    if (o->in_txn) {
        if (sqlite3_get_autocommit(o->db)) {
            /* Some errors (disk full, out of memory) make SQLite roll back
             * the whole transaction. */
            end_txn(x);
            append_msg(x->c, " (the transaction was rolled back)");
            return -1;
        }
        if (!ok && cold(x))
            x->retry = true; /* SQLite undid the statement; it runs again (resume_off) */
        return ok ? 0 : -1;
    }
    if (ok && !(x->c->scope & DSQ_SCOPE_W) && sqlite3_txn_state(o->db, "main") == SQLITE_TXN_WRITE) {
        /* A read-scope request commits nothing, whatever it ran: the
         * statements were refused if they write (run_sql), and this holds
         * for what that check could not see. */
        dsq__fail(x->c, DSQ_CODE_FORBIDDEN, "the request wrote; the token has read scope only");
        ok = false;
    }
    if (ok)
        return commit(x);
    if (!sqlite3_get_autocommit(o->db))
        internal_exec(o, "ROLLBACK");
    if (cold(x)) {
        x->retry = true; /* all of it was undone: it runs again from the start */
        x->c->resume_off = 0;
    }
    return -1;
}

/* A call that names a transaction must name the open one. */
static int check_txn(run_ctx *x)
{
    dsq_call *c = x->c;
    if (c->txn[0] == '\0')
        return 0;
    pthread_mutex_lock(&x->a->mu);
    bool ok = x->a->txn[0] != '\0' && strcmp(x->a->txn, c->txn) == 0;
    x->snap = ok ? NULL : dsq__snap_find(x->a, c->txn);
    pthread_mutex_unlock(&x->a->mu);
    if (x->snap != NULL)
        return 0; /* (only this worker changes the list: the pointer holds for the call) */
    if (!ok || !x->o->in_txn) {
        dsq__fail(c, DSQ_CODE_TRANSACTION_NOT_FOUND,
                  "transaction %.40s is not open (committed, rolled back or expired)", c->txn);
        return -1;
    }
    return 0;
}

/* ---- the operations --------------------------------------------------------------- */

static int alloc_results(dsq_call *c, size_t n)
{
    for (size_t i = 0; i < c->nresults; i++) /* a run after a cold page starts over */
        dsq__result_free(&c->results[i]);
    free(c->results);
    c->results = calloc(n ? n : 1, sizeof *c->results);
    if (c->results == NULL) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    c->nresults = n;
    return 0;
}

/* The connection a call that reads beside the open transaction, or in a
 * read-only transaction, runs on; NULL when it runs on the actor's own
 * (or it failed: c->err, or x->retry when a page is in the object store). */
static sqlite3 *view_db(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (x->snap != NULL)
        return x->snap->db;
    if (c->txn[0] != '\0' || !o->in_txn)
        return NULL;
    x->beside = true;
    if (o->snap_db == NULL) {
        char err[600];
        if (view_conn(x->e, x->a, o, o->lsn, &o->snap_view, &o->snap_db, err, sizeof err) != 0) {
            if (cold(x) && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
                /* (A non-atomic batch, which cold_failed lets on.) The page
                 * it waited for to open the view did not come. */
                dsq__fail(c, c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR, "%s",
                          c->cold_msg);
            } else if (cold(x)) {
                x->retry = true;
                c->resume_off = 0;
            } else {
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
            }
            return NULL;
        }
    }
    return o->snap_db;
}

/* Run r on connection db (a view's): it only reads, and runs whole again
 * after a cold page. */
static int run_on(run_ctx *x, sqlite3 *db, const dsq_stmt_req *r, dsq_result *res)
{
    x->db = db;
    x->start_off = 0;
    x->o->on_view = true;
    int rc = run_sql(x, r, res);
    x->o->on_view = false;
    if (rc != 0 && cold(x)) {
        x->retry = true;
        x->c->resume_off = 0;
    }
    if (x->scratch)
        sqlite3_finalize(x->scratch);
    x->scratch = NULL;
    x->db = NULL;
    return rc;
}

/* A read-only query on the database as it was at an LSN or a time
 * (DESIGN 3.3 asOf), through a connection on a view of the store. */
static void op_query_as_of(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (c->txn[0]) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "asOf reads a past state; it is not part of a transaction");
        return;
    }
    char err[600];
    uint64_t lsn = c->as_of_lsn;
    dsq_ps_view *v = NULL;
    sqlite3 *vdb = NULL;
    if (c->as_of == DSQ_AS_OF_TIME && dsq_ps_lsn_at(o->ps, c->as_of_time_us, &lsn, err, sizeof err) != 0) {
        if (cold(x)) { /* the log it reads was evicted: again once it is here */
            x->retry = true;
            c->resume_off = 0;
            return;
        }
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "%s", err);
        return;
    }
    int vrc = view_conn(x->e, x->a, o, lsn, &v, &vdb, err, sizeof err);
    if (vrc != 0) {
        if (cold(x)) { /* it read the log or the schema from an evicted file */
            x->retry = true;
            c->resume_off = 0;
            return;
        }
        dsq__fail(c, vrc == -1 ? DSQ_CODE_INVALID_LSN : DSQ_CODE_INTERNAL_ERROR, "%s", err);
        return;
    }
    x->db = vdb;
    x->past = true;
    if (run_sql(x, &c->stmts[0], &c->results[0]) != 0 && cold(x)) {
        x->retry = true; /* it only reads: it runs again from the start */
        c->resume_off = 0;
    }
    x->past = false;
    if (x->scratch)
        sqlite3_finalize(x->scratch);
    x->scratch = NULL;
    x->db = NULL;
    sqlite3_close(vdb);
    dsq_ps_view_close(v);
    c->results[0].lsn = c->lsn = lsn;
}

static void op_query(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (alloc_results(c, 1) != 0)
        return;
    if (c->as_of != DSQ_AS_OF_NONE) {
        op_query_as_of(x);
        return;
    }
    if (check_txn(x) != 0)
        return;
    const dsq_stmt_req *r = &c->stmts[0];
    dsq_result *res = &c->results[0];
    sqlite3 *vdb = view_db(x);
    if (vdb != NULL || c->err != 0 || x->retry) {
        if (vdb != NULL)
            run_on(x, vdb, r, res);
        res->lsn = c->lsn = x->snap ? x->snap->lsn : o->lsn;
        return;
    }
    if (!o->in_txn && starts_with_word(r->sql, r->sql_len, "VACUUM")) {
        /* SQLite runs VACUUM only outside a transaction: so it must be the
         * request's only statement; the LSN then advances in a
         * transaction of its own. */
        if (!lone_statement(r->sql, r->sql_len)) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "VACUUM must be the only statement of its request");
        } else if (run_sql(x, r, res) == 0) {
            took_commit(x, NULL, 0); /* VACUUM commits on its own */
        } else if (cold(x)) {
            x->retry = true;
            c->resume_off = 0;
        }
    } else if (begin_request(x) == 0) {
        x->start_off = o->in_txn ? c->resume_off : 0;
        int rc = run_sql(x, r, res);
        end_request(x, rc == 0);
    }
    res->lsn = c->lsn = o->lsn;
}

/* A non-atomic batch's statement failed: the failure goes into its
 * result (c->code and c->msg), and the call goes on. */
static void keep_failure(dsq_call *c, dsq_result *res)
{
    dsq__result_free(res);
    res->code = c->code;
    res->error = strdup(c->msg);
    c->err = 0;
    c->msg[0] = '\0';
}

/* A batch on a view's connection (view_db): it only reads, and atomic or
 * not differ only in how a failure ends it. After a cold page it goes on
 * with statement `from` (the view is the same: nothing ends a transaction
 * while a call waits for a page); a statement that writes sends it back
 * to run whole once the transaction ends. */
static void batch_on(run_ctx *x, sqlite3 *db, size_t from)
{
    dsq_call *c = x->c;
    uint64_t lsn = x->snap ? x->snap->lsn : x->o->lsn;
    c->resume_stmt = 0;
    x->bytes_before = 0;
    for (size_t i = 0; i < from; i++)
        x->bytes_before += c->results[i].rows.len;
    for (size_t i = from; i < c->nstmts; i++) {
        dsq_result *res = &c->results[i];
        if (i == from && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
            /* (Non-atomic: cold_failed ended an atomic one.) Its page did
             * not come: this statement fails, the rest run. */
            res->code = c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR;
            res->error = strdup(c->cold_msg);
            res->lsn = lsn;
            continue;
        }
        int rc = run_on(x, db, &c->stmts[i], res);
        if (x->park)
            return;
        if (x->retry) {
            c->resume_stmt = i;
            return;
        }
        if (rc != 0 && c->atomic) {
            char first[sizeof c->msg];
            snprintf(first, sizeof first, "%s", c->msg);
            snprintf(c->msg, sizeof c->msg, "statement %zu: %.470s", i, first);
            return;
        }
        if (rc != 0)
            keep_failure(c, res);
        x->bytes_before += res->rows.len;
        res->lsn = lsn;
    }
    c->lsn = lsn;
}

static void op_batch(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    /* After a cold page it goes on with statement resume_stmt: the ones
     * before it are done (kept), except in an atomic batch outside a
     * transaction, which was undone whole. */
    size_t from = c->resume_stmt;
    if (c->atomic && !o->in_txn)
        from = 0;
    if (c->results == NULL || from == 0) {
        if (alloc_results(c, c->nstmts) != 0)
            return;
    } else {
        for (size_t i = from; i < c->nresults; i++) {
            dsq__result_free(&c->results[i]);
            memset(&c->results[i], 0, sizeof c->results[i]);
        }
    }
    if (check_txn(x) != 0)
        return;
    sqlite3 *vdb = view_db(x);
    if (vdb != NULL || c->err != 0 || x->retry) {
        if (vdb != NULL)
            batch_on(x, vdb, from);
        return;
    }
    for (size_t i = 0; i < from; i++)
        x->bytes_before += c->results[i].rows.len;
    if (c->atomic) {
        if (begin_request(x) != 0)
            return;
        bool ok = true;
        for (size_t i = from; i < c->nstmts && ok; i++) {
            x->start_off = o->in_txn && i == from ? c->resume_off : 0;
            if (run_sql(x, &c->stmts[i], &c->results[i]) != 0) {
                c->resume_stmt = i;
                char first[sizeof c->msg];
                snprintf(first, sizeof first, "%s", c->msg);
                snprintf(c->msg, sizeof c->msg, "statement %zu: %.470s", i, first);
                ok = false;
            }
            x->bytes_before += c->results[i].rows.len;
        }
        end_request(x, ok);
        if (x->retry && !o->in_txn)
            c->resume_stmt = 0;
    } else {
        /* Each statement commits (or fails) on its own; a failure is kept
         * in its result and the batch goes on. */
        for (size_t i = from; i < c->nstmts; i++) {
            dsq_result *res = &c->results[i];
            if (i == from && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
                /* Its page did not come: this statement fails, the rest run. */
                res->code = c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR;
                res->error = strdup(c->cold_msg);
                res->lsn = o->lsn;
                continue;
            }
            if (c->txn[0] && !o->in_txn) {
                res->code = DSQ_CODE_TRANSACTION_NOT_FOUND;
                res->error = strdup("the transaction was rolled back by an earlier statement");
                continue;
            }
            int rc = begin_request(x);
            if (rc == 0) {
                x->start_off = o->in_txn && i == from ? c->resume_off : 0;
                rc = run_sql(x, &c->stmts[i], res);
                int kept = end_request(x, rc == 0); /* commit failures land in c->msg */
                if (rc == 0)
                    rc = kept;
            }
            if (x->retry) {
                c->resume_stmt = i;
                return;
            }
            if (rc != 0)
                keep_failure(c, res);
            x->bytes_before += res->rows.len;
            res->lsn = o->lsn;
        }
    }
    c->lsn = o->lsn;
    for (size_t i = 0; i < c->nresults; i++)
        if (c->atomic)
            c->results[i].lsn = o->lsn;
}

/* A new transaction id: 32 hex digits. */
static int txn_id(char out[33])
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", rnd[i]);
    return 0;
}

/* beginTransaction readOnly: a view of the last commit, kept until the
 * transaction ends; the actor's connection stays free for everyone. */
static void op_begin_read_only(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    snap_txn t = {.lsn = o->lsn, .session = c->session};
    t.timeout_ms = c->txn_timeout_ms ? c->txn_timeout_ms : x->e->cfg.txn_timeout_ms;
    unsigned max = x->e->cfg.max_snapshots ? x->e->cfg.max_snapshots : 64;
    if (a->nsstreams + a->nsnaps >= max) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "%u streams and read-only transactions are open on this database (max_snapshots)", max);
        return;
    }
    char err[600];
    if (txn_id(t.id) != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "no randomness for a transaction id");
        return;
    }
    if (view_conn(x->e, a, o, t.lsn, &t.view, &t.db, err, sizeof err) != 0) {
        if (cold(x))
            x->retry = true;
        else
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
        return;
    }
    pthread_mutex_lock(&a->mu);
    if (a->nsnaps == a->snaps_cap) {
        size_t cap = a->snaps_cap ? a->snaps_cap * 2 : 4;
        snap_txn *p = realloc(a->snaps, cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&a->mu);
            sqlite3_close(t.db);
            dsq_ps_view_close(t.view);
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        a->snaps = p;
        a->snaps_cap = cap;
    }
    t.deadline_ms = dsq_now_ms() + t.timeout_ms;
    a->snaps[a->nsnaps++] = t;
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_add(&x->e->txns_open, 1);
    memcpy(c->txn_out, t.id, sizeof c->txn_out);
    c->lsn = t.lsn;
}

static void op_begin(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    if (c->txn[0] != '\0') {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "beginTransaction takes no transactionId");
        return;
    }
    /* A transaction holds the database (or, read-only, a view of it) until
     * it ends: no longer than the operator allows. */
    if (x->e->cfg.max_txn_timeout_ms != 0 && c->txn_timeout_ms > x->e->cfg.max_txn_timeout_ms) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "timeoutMs %llu is above max_transaction_timeout (%llu ms)",
                  (unsigned long long)c->txn_timeout_ms, (unsigned long long)x->e->cfg.max_txn_timeout_ms);
        return;
    }
    /* One that may write takes the write lock (at its first write, or at
     * once): it needs write scope. */
    if (!c->read_only && !(c->scope & DSQ_SCOPE_W)) {
        dsq__fail(c, DSQ_CODE_FORBIDDEN,
                  "a transaction that may write needs write scope; the token has read scope only "
                  "(beginTransaction readOnly: true reads a snapshot)");
        return;
    }
    if (c->read_only) {
        op_begin_read_only(x);
        return;
    }
    int rc = internal_exec(o, c->immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
    if (rc != SQLITE_OK) {
        fail_sqlite(x, rc);
        return;
    }
    if (txn_id(c->txn_out) != 0) {
        internal_exec(o, "ROLLBACK");
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "no randomness for a transaction id");
        return;
    }
    o->in_txn = true;
    uint64_t timeout = c->txn_timeout_ms ? c->txn_timeout_ms : x->e->cfg.txn_timeout_ms;
    pthread_mutex_lock(&a->mu);
    memcpy(a->txn, c->txn_out, sizeof a->txn);
    a->txn_session = c->session;
    a->txn_timeout_ms = timeout;
    a->txn_deadline_ms = dsq_now_ms() + timeout;
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_add(&x->e->txns_open, 1);
    c->lsn = o->lsn;
}

static void op_end_txn(run_ctx *x, bool do_commit)
{
    dsq_call *c = x->c;
    if (c->txn[0] == '\0') {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "transactionId is required");
        return;
    }
    if (check_txn(x) != 0)
        return;
    if (x->snap != NULL) { /* read-only: it only ends */
        c->lsn = x->snap->lsn;
        snap_remove(x->e, x->a, (size_t)(x->snap - x->a->snaps));
        x->snap = NULL;
        return;
    }
    if (do_commit) {
        if (commit(x) != 0) {
            if (x->retry)
                return; /* still open: the COMMIT runs again */
            append_msg(c, " (the transaction was rolled back)");
        }
    } else {
        internal_exec(x->o, "ROLLBACK");
    }
    end_txn(x);
    c->lsn = x->o->lsn;
}

/* The running call (or the stream) ended: the chunks it waited for may
 * leave the warm cache again. */
static void pins_release(dsq_engine *e, dsq_actor *a)
{
    for (size_t i = 0; i < a->npins; i++)
        dsq_warm_release(e->warm, a->pins[i]);
    free(a->pins);
    a->pins = NULL;
    a->npins = a->pins_cap = 0;
}

static void stream_finish(run_ctx *x)
{
    actor_open *o = x->o;
    pins_release(x->e, x->a);
    if (o->stream_stmt) {
        sqlite3_finalize(o->stream_stmt);
        o->stream_stmt = NULL;
    }
    pthread_mutex_lock(&x->a->mu);
    x->a->stream_id = 0;
    x->a->stream_session = 0;
    pthread_mutex_unlock(&x->a->mu);
}

/* Prepare a stream's one read-only statement on db, bind it and fill the
 * result's columns. NULL with c failed. */
static sqlite3_stmt *stream_prepare(run_ctx *x, sqlite3 *db)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    const dsq_stmt_req *r = &c->stmts[0];
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    o->deny[0] = '\0';
    o->stmt_writes = false;
    int rc = sqlite3_prepare_v3(db, r->sql, (int)r->sql_len, 0, &st, &tail);
    if (rc != SQLITE_OK) {
        x->db = db;
        fail_sqlite(x, rc);
        x->db = NULL;
        return NULL;
    }
    if (st == NULL) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "sql holds no statement");
        return NULL;
    }
    const char *end = r->sql + r->sql_len;
    if (skip_space(tail, end) != end && !(*skip_space(tail, end) == ';' &&
                                          skip_space(skip_space(tail, end) + 1, end) == end)) {
        sqlite3_finalize(st);
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "queryStream takes exactly one statement");
        return NULL;
    }
    if (!sqlite3_stmt_readonly(st) || o->stmt_writes) {
        sqlite3_finalize(st);
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "queryStream runs read-only statements; use query");
        return NULL;
    }
    unsigned char *used = calloc(r->nparams ? r->nparams : 1, 1);
    int brc = used ? bind_params(c, st, r, used) : -1;
    for (size_t k = 0; brc == 0 && k < r->nparams; k++) {
        if (!used[k]) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "params has values the SQL does not use");
            brc = -1;
        }
    }
    free(used);
    if (brc != 0 || dsq__result_columns(&c->results[0], st) != 0) {
        if (c->err == 0)
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        sqlite3_finalize(st);
        return NULL;
    }
    o->statements++;
    return st;
}

/* A stream in the open write transaction: its statement runs on the
 * actor's connection, and holds the actor until its last chunk. */
static int stream_start_in_txn(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    o->stream_rows = o->stream_skip = 0;
    sqlite3_stmt *st = stream_prepare(x, o->db);
    if (st == NULL)
        return -1;
    o->stream_stmt = st;
    c->stream_id = atomic_fetch_add(&x->e->next_stream, 1) + 1;
    pthread_mutex_lock(&x->a->mu);
    x->a->stream_id = c->stream_id;
    x->a->stream_session = c->session;
    x->a->stream_deadline_ms = dsq_now_ms() + x->e->cfg.txn_timeout_ms;
    pthread_mutex_unlock(&x->a->mu);
    return 0;
}

/* Remove snapshot stream i: its statement, connection and view close. */
static void sstream_remove(dsq_actor *a, size_t i)
{
    pthread_mutex_lock(&a->mu); /* (the loop thread writes deadlines under it) */
    snap_stream t = a->sstreams[i];
    a->sstreams[i] = a->sstreams[--a->nsstreams];
    pthread_mutex_unlock(&a->mu);
    sqlite3_finalize(t.stmt);
    if (t.view != NULL) {
        sqlite3_close(t.db);
        dsq_ps_view_close(t.view);
    }
}

void dsq__sstreams_close(dsq_actor *a, sqlite3 *on)
{
    for (size_t i = a->nsstreams; i-- > 0;)
        if (on == NULL || (a->sstreams[i].view == NULL && a->sstreams[i].db == on))
            sstream_remove(a, i);
}

static snap_stream *sstream_find(dsq_actor *a, uint64_t id)
{
    for (size_t i = 0; id != 0 && i < a->nsstreams; i++)
        if (a->sstreams[i].id == id)
            return &a->sstreams[i];
    return NULL;
}

/* A stream outside the write transaction: a connection of its own on a
 * view of the last commit (or a read-only transaction's connection), so
 * it holds back no one. At most max_snapshots per database, with the
 * read-only transactions. */
static int sstream_start(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    unsigned max = x->e->cfg.max_snapshots ? x->e->cfg.max_snapshots : 64;
    if (a->nsstreams + a->nsnaps >= max) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "%u streams and read-only transactions are open on this database (max_snapshots)", max);
        return -1;
    }
    snap_stream t = {.session = c->session, .lsn = o->lsn};
    if (x->snap != NULL) {
        t.db = x->snap->db;
        t.lsn = x->snap->lsn;
    } else {
        char err[600];
        if (view_conn(x->e, a, o, o->lsn, &t.view, &t.db, err, sizeof err) != 0) {
            if (!cold(x))
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
            return -1;
        }
    }
    if ((t.stmt = stream_prepare(x, t.db)) == NULL)
        goto fail;
    pthread_mutex_lock(&a->mu);
    if (a->nsstreams == a->sstreams_cap) {
        size_t cap = a->sstreams_cap ? a->sstreams_cap * 2 : 4;
        snap_stream *p = realloc(a->sstreams, cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&a->mu);
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        a->sstreams = p;
        a->sstreams_cap = cap;
    }
    t.id = c->stream_id = atomic_fetch_add(&x->e->next_stream, 1) + 1;
    t.deadline_ms = dsq_now_ms() + x->e->cfg.txn_timeout_ms;
    a->sstreams[a->nsstreams++] = t;
    pthread_mutex_unlock(&a->mu);
    return 0;
fail:
    sqlite3_finalize(t.stmt);
    if (t.view != NULL) {
        sqlite3_close(t.db);
        dsq_ps_view_close(t.view);
    }
    return -1;
}

/* Step a stream's statement for one chunk into results[0]. *rows counts
 * the rows handed out, *skip those to step over first (it starts again
 * after a cold page: the same snapshot, so the same rows). Returns true
 * when the stream is done (its end or a failure); sets x->retry when a
 * page is in the object store (the chunk is made again once it is here). */
static bool stream_chunk(run_ctx *x, sqlite3_stmt *st, uint64_t *rows, uint64_t *skip)
{
    dsq_call *c = x->c;
    dsq_result *res = &c->results[0];
    dsq_buf_reset(&res->rows);
    res->nrows = 0;
    int ncols = sqlite3_column_count(st);
    bool done = false;
    x->db = sqlite3_db_handle(st); /* for fail_sqlite's message */
    while (*skip > 0) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            (*skip)--;
            continue;
        }
        if (cold(x)) {
            sqlite3_reset(st);
            *skip = *rows;
            c->state = DSQ__CALL_STREAM_MORE;
            x->retry = true;
            x->db = NULL;
            return false;
        }
        if (rc != SQLITE_DONE)
            fail_sqlite(x, rc);
        *skip = 0;
        done = true;
    }
    for (size_t n = 0; n < c->chunk_rows && !done && c->err == 0; n++) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (dsq__result_add(res, st, ncols) != 0) {
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
                break;
            }
            if (res->rows.len > x->e->cfg.max_result_size) {
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                          "one chunk is larger than max_result_bytes (%zu bytes); use a smaller chunkSize",
                          x->e->cfg.max_result_size);
                break;
            }
            continue;
        }
        if (rc != SQLITE_DONE && cold(x)) {
            sqlite3_reset(st);
            *skip = *rows;
            dsq_buf_reset(&res->rows);
            res->nrows = 0;
            c->state = DSQ__CALL_STREAM_MORE;
            x->retry = true;
            x->db = NULL;
            return false;
        }
        if (rc != SQLITE_DONE)
            fail_sqlite(x, rc);
        done = true;
        break;
    }
    x->db = NULL;
    *rows += res->nrows;
    return done || c->err != 0;
}

/* Start, continue or cancel a stream; hands one chunk to the loop. */
static void op_stream(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    bool ours;
    pthread_mutex_lock(&a->mu);
    ours = c->stream_id != 0 && a->stream_id == c->stream_id;
    snap_stream *ss = ours ? NULL : sstream_find(a, c->stream_id);
    if (ours)
        a->stream_deadline_ms = dsq_now_ms() + x->e->cfg.txn_timeout_ms;
    if (ss != NULL)
        ss->deadline_ms = dsq_now_ms() + x->e->cfg.txn_timeout_ms;
    pthread_mutex_unlock(&a->mu);

    if (c->state == DSQ__CALL_STREAM_CANCEL) {
        if (ours)
            stream_finish(x);
        else if (ss != NULL)
            sstream_remove(a, (size_t)(ss - a->sstreams));
        c->more = false;
        return;
    }
    if (c->state == DSQ__CALL_NEW) {
        if (alloc_results(c, 1) != 0 || check_txn(x) != 0) {
            c->more = false;
            return;
        }
        bool in_txn = c->txn[0] != '\0' && x->snap == NULL;
        if ((in_txn ? stream_start_in_txn(x) : sstream_start(x)) != 0) {
            if (cold(x))
                x->retry = true; /* nothing is open yet: it starts again */
            c->more = false;
            return;
        }
        ours = in_txn;
        pthread_mutex_lock(&a->mu);
        ss = in_txn ? NULL : sstream_find(a, c->stream_id);
        pthread_mutex_unlock(&a->mu);
    } else if (!(ours && o->stream_stmt != NULL) && ss == NULL) {
        dsq__fail(c, DSQ_CODE_TIMEOUT, "the stream was ended: idle past transaction_timeout");
        c->more = false;
        return;
    }
    bool done = ours ? stream_chunk(x, o->stream_stmt, &o->stream_rows, &o->stream_skip)
                     : stream_chunk(x, ss->stmt, &ss->rows, &ss->skip);
    if (x->retry)
        return;
    dsq_result *res = &c->results[0];
    uint64_t lsn = ours ? o->lsn : ss->lsn;
    if (done) {
        if (ours)
            stream_finish(x);
        else
            sstream_remove(a, (size_t)(ss - a->sstreams));
        c->more = false;
    } else {
        c->more = true;
    }
    res->lsn = c->lsn = lsn;
}

static void op_ping(run_ctx *x)
{
    x->c->lsn = x->snap ? x->snap->lsn : x->o->lsn; /* (a read-only transaction's: its commit) */
    x->c->time_ms = dsq_wall_ms();
}

/* CDC catch-up: the durable commits after c->as_of_lsn, read from the log,
 * as a CDC batch (engine.h) of at most about c->chunk_rows bytes. */
typedef struct cdc_scan {
    dsq_buf *out;
    size_t max;
    uint64_t last;
    bool full;
    ZSTD_DCtx *dctx;       /* for row changes stored compressed */
} cdc_scan;

static int cdc_visit(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err,
                     size_t errlen)
{
    (void)loc;
    cdc_scan *s = ud;
    if (s->out->len > 0 && s->out->len + 20 + r->extra_len > s->max) {
        s->full = true;
        snprintf(err, errlen, "full");
        return -1; /* stop here: the caller reads on from s->last */
    }
    /* The batch entry's header, then the changes as they were captured. */
    size_t at = s->out->len;
    if (dsq_cdc_batch_put(s->out, r->lsn, r->time_us, NULL, 0) != 0 ||
        dsq_wal_rec_extra_get(rec, r, s->dctx, s->out) != 0) {
        snprintf(err, errlen, "the row changes of LSN %llu cannot be read", (unsigned long long)r->lsn);
        return -1;
    }
    size_t n = s->out->len - at - 20;
    dsq_put32((uint8_t *)s->out->data + at + 16, (uint32_t)n);
    s->last = r->lsn;
    return 0;
}

/* The same, from the log files alone, on the system actor: catch-up
 * reads do not take the database's own actor from its writers. */
static void op_cdc_read_files(dsq_engine *e, dsq_call *c, bool *retry)
{
    char dir[4200];
    dsq_buf_reset(&c->out); /* (a run again after a cold segment starts over) */
    c->lsn = c->as_of_lsn;
    c->more = false;
    if (c->target_db == NULL || !dsq_db_name_valid(c->target_db)) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "no database to read");
        return;
    }
    if (c->as_of_lsn >= c->upto_lsn)
        return;
    snprintf(dir, sizeof dir, "%s/db/%s/wal", e->data_dir, c->target_db);
    /* Its log may keep its newest records in memory (journal.h): written
     * now, since what follows reads the files. */
    if (e->jnl != NULL)
        dsq_jnl_write_held(e->jnl, c->target_db, false);
    cdc_scan s = {.out = &c->out, .max = c->chunk_rows ? c->chunk_rows : 256u << 10, .last = c->as_of_lsn,
                  .dctx = ZSTD_createDCtx()};
    char err[400];
    uint64_t oldest;
    int rc = s.dctx ? dsq_wal_scan_files(dir, e->warm, c->as_of_lsn, c->upto_lsn, cdc_visit, &s, &oldest, err,
                                         sizeof err)
                    : (snprintf(err, sizeof err, "out of memory"), -1);
    ZSTD_freeDCtx(s.dctx);
    if (rc == 1) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "the changes after LSN %llu are no longer in the log; the oldest available LSN is %llu",
                  (unsigned long long)c->as_of_lsn, (unsigned long long)oldest);
        return;
    }
    if (rc != 0 && !s.full) {
        /* An evicted segment's chunk on its way: again once it is here. */
        *retry = e->warm != NULL && dsq_warm_missed();
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot read the log: %s", err);
        return;
    }
    c->lsn = s.last;
    c->more = s.last < c->upto_lsn;
}

static void op_cdc_read(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_wal *w = dsq_ps_wal(o->ps);
    uint64_t durable = x->e->cfg.sync == DSQ_SYNC_OFF ? o->lsn : dsq_wal_durable(w);
    if (durable > o->lsn)
        durable = o->lsn;
    uint64_t after = c->as_of == DSQ_AS_OF_NONE ? durable : c->as_of_lsn;
    uint32_t segs;
    uint64_t bytes, first;
    dsq_wal_usage(w, &segs, &bytes, &first);
    uint64_t oldest = first ? first - 1 : o->lsn; /* the log holds the commits after it */
    c->lsn = after;
    c->more = false;
    if (after > o->lsn) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "LSN %llu is after the last commit (%llu)",
                  (unsigned long long)after, (unsigned long long)o->lsn);
        return;
    }
    if (after < oldest) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "the changes after LSN %llu are no longer in the log; the oldest available LSN is %llu",
                  (unsigned long long)after, (unsigned long long)oldest);
        return;
    }
    c->upto_lsn = durable; /* the caller learns where the durable log ends */
    if (after >= durable)
        return;
    dsq_buf_reset(&c->out); /* (a run again after a cold segment starts over) */
    cdc_scan s = {.out = &c->out, .max = c->chunk_rows ? c->chunk_rows : 256u << 10, .last = after,
                  .dctx = ZSTD_createDCtx()};
    char err[400];
    int rc = s.dctx ? dsq_wal_scan(w, after, durable, cdc_visit, &s, err, sizeof err)
                    : (snprintf(err, sizeof err, "out of memory"), -1);
    ZSTD_freeDCtx(s.dctx);
    if (rc != 0 && !s.full && cold(x)) {
        x->retry = true;
        return;
    }
    if (rc != 0 && !s.full) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot read the log: %s", err);
        return;
    }
    c->lsn = s.last;
    c->more = s.last < durable;
}

/* ---- the entry point ---------------------------------------------------------------- */

static void exec_internal(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    bool held;
    switch (op_of(c)) {
    case DSQ__OP_HIBERNATE:
        pthread_mutex_lock(&a->mu);
        held = a->txn[0] != '\0' || a->stream_id != 0 || a->nsnaps > 0 || a->nsstreams > 0;
        pthread_mutex_unlock(&a->mu);
        if (!held) {
            checkpoint_before_close(a);
            dsq__actor_close(a);
        }
        break;
    case DSQ__OP_TXN_EXPIRE: {
        pthread_mutex_lock(&a->mu);
        snap_txn *t = dsq__snap_find(a, c->txn);
        if (t != NULL) {
            bool late = c->session != 0 || dsq_now_ms() >= t->deadline_ms;
            size_t i = (size_t)(t - a->snaps);
            pthread_mutex_unlock(&a->mu);
            if (late && x->o != NULL) {
                if (x->o->stream_stmt && sqlite3_db_handle(x->o->stream_stmt) == a->snaps[i].db)
                    stream_finish(x); /* its stream ends with it */
                snap_remove(x->e, a, i);
                DSQ_INFO("transaction_rolled_back", "db=%s reason=%s read_only=1", a->name,
                         c->session ? "client_disconnected" : "idle_timeout");
            }
            break;
        }
        bool match = a->txn[0] != '\0' && strcmp(a->txn, c->txn) == 0;
        /* An idle expiry loses to activity that came in meanwhile. */
        if (match && c->session == 0 && dsq_now_ms() < a->txn_deadline_ms)
            match = false;
        pthread_mutex_unlock(&a->mu);
        if (!match || x->o == NULL)
            break;
        /* A stream in it ends with it; one in a read-only transaction
         * (on that one's connection) goes on. */
        if (x->o->stream_stmt && sqlite3_db_handle(x->o->stream_stmt) == x->o->db)
            stream_finish(x);
        internal_exec(x->o, "ROLLBACK");
        end_txn(x);
        DSQ_INFO("transaction_rolled_back", "db=%s reason=%s", a->name,
                 c->session ? "client_disconnected" : "idle_timeout");
        break;
    }
    case DSQ__OP_STREAM_END: {
        pthread_mutex_lock(&a->mu);
        snap_stream *ss = sstream_find(a, c->stream_id);
        if (ss != NULL) {
            bool late = c->session != 0 || dsq_now_ms() >= ss->deadline_ms;
            size_t i = (size_t)(ss - a->sstreams);
            pthread_mutex_unlock(&a->mu);
            if (late && x->o != NULL)
                sstream_remove(a, i);
            break;
        }
        held = a->stream_id == c->stream_id;
        /* As for transactions: an idle end loses to a continuation that
         * came in meanwhile. */
        if (held && c->session == 0 && dsq_now_ms() < a->stream_deadline_ms)
            held = false;
        pthread_mutex_unlock(&a->mu);
        if (held && x->o)
            stream_finish(x);
        break;
    }
    case DSQ__OP_HEAP_TRIM:
        dsq__heap_trim(x->e);
        break;
    case DSQ__OP_SHUTDOWN:
        if (x->o) {
            if (x->o->stream_stmt)
                stream_finish(x);
            if (x->o->in_txn) {
                internal_exec(x->o, "ROLLBACK");
                end_txn(x);
            }
            checkpoint_before_close(a);
            dsq__actor_close(a);
        }
        pthread_mutex_lock(&a->mu);
        a->shut = true;
        pthread_mutex_unlock(&a->mu);
        break;
    }
}

/* ---- calls that wait for a page from the object store ------------------------------------ */

typedef struct cold_wait {
    dsq_engine *e;
    dsq_call *c;
} cold_wait;

static void cold_back(void *ud, int how, const char *msg)
{
    cold_wait *w = ud;
    dsq_call *c = w->c;
    dsq_engine *e = w->e;
    free(w);
    c->cold_how = how;
    snprintf(c->cold_msg, sizeof c->cold_msg, "database %.40s: %.200s", c->db, msg);
    dsq__actor_cold_back(e, c->actor, c);
}

/* Set c aside until chunk k is in the warm cache; the actor runs nothing
 * else meanwhile, and its worker goes on with other actors. */
static void cold_park(dsq_engine *e, dsq_actor *a, dsq_call *c, dsq_warm_chunk *k)
{
    cold_wait *w = malloc(sizeof *w);
    if (a->npins == a->pins_cap) {
        size_t cap = a->pins_cap ? a->pins_cap * 2 : 8;
        struct dsq_warm_chunk **p = realloc(a->pins, cap * sizeof *p);
        if (p != NULL) {
            a->pins = p;
            a->pins_cap = cap;
        }
    }
    if (w == NULL || a->npins == a->pins_cap) {
        free(w);
        dsq_warm_release(e->warm, k);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        budget_settle(c);
        dsq__reply(e, a, c);
        return;
    }
    *w = (cold_wait){e, c};
    a->pins[a->npins++] = k; /* until the call ends */
    c->err = 0;
    c->msg[0] = '\0';
    c->cold_retry = true;
    c->cold_how = DSQ_WARM_READY;
    pthread_mutex_lock(&a->mu);
    a->cold_wait = true;
    pthread_mutex_unlock(&a->mu);
    dsq_warm_wait(e->warm, k, cold_back, w);
}

/* A second run whose page did not come (timeout, or the store failed):
 * the call fails with why; 1 when so. A batch of independent statements
 * fails only that statement (op_batch); a stream ends. */
static int cold_failed(run_ctx *x)
{
    dsq_call *c = x->c;
    if (!c->cold_retry || c->cold_how == DSQ_WARM_READY ||
        (c->op == DSQ_OP_BATCH && !c->atomic && x->a->open != NULL))
        return 0;
    dsq__fail(c, c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR, "%s", c->cold_msg);
    if (c->op == DSQ_OP_STREAM) {
        if (c->nresults == 0)
            alloc_results(c, 1);
        if (x->o && x->o->stream_stmt && c->state != DSQ__CALL_NEW && x->a->stream_id == c->stream_id)
            stream_finish(x);
        snap_stream *ss = x->o && c->state != DSQ__CALL_NEW ? sstream_find(x->a, c->stream_id) : NULL;
        if (ss != NULL)
            sstream_remove(x->a, (size_t)(ss - x->a->sstreams));
        c->more = false;
    }
    c->cold_retry = false;
    return 1;
}

void dsq__exec(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    run_ctx x = {.e = e, .a = a, .o = a->open, .c = c};
    c->err = 0;
    c->not_found = false;
    c->msg[0] = '\0';
    c->wait_writer = false;
    if (e->warm != NULL)
        dsq_warm_miss_clear();
    if (op_of(c) >= DSQ__OP_HIBERNATE) {
        exec_internal(&x);
        dsq__complete(e, c);
        return;
    }
    pthread_mutex_lock(&a->mu);
    bool shut = a->shut;
    pthread_mutex_unlock(&a->mu);
    if (a->open && dsq__gate_failed(&a->open->gate)) {
        /* An fsync failed: start again from what is durable. */
        if (a->open->in_txn) {
            x.o = a->open;
            end_txn(&x);
        }
        dsq__actor_close(a);
        x.o = NULL;
    }
    if (shut) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "the server is shutting down");
    } else if (c->wait_expired) {
        dsq__fail(c, DSQ_CODE_TIMEOUT,
                  "it waited %llu ms for another client's transaction to end (write_wait_timeout)",
                  (unsigned long long)(dsq_now_ms() - (c->wait_since_ms ? c->wait_since_ms : c->posted_ms)));
    } else if (c->state == DSQ__CALL_NEW && dsq__cancellable(c) && dsq__cancelled(c)) {
        dsq__fail(c, DSQ_CODE_TIMEOUT, "the request was cancelled");
        if (c->op == DSQ_OP_STREAM) {
            alloc_results(c, 1);
            c->more = false;
        }
    } else if (c->op == DSQ_OP_CDC_READ && c->target_db != NULL && cold_failed(&x)) {
        /* its log chunk did not come: failed (a batch of the system actor) */
    } else if (c->op == DSQ_OP_CDC_READ && c->target_db != NULL) {
        op_cdc_read_files(e, c, &x.retry);
    } else if (c->op == DSQ_OP_LIST) {
        if (dsq__store_list(e->data_dir, &c->names, &c->nnames) != 0)
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot list databases");
    } else if (c->op == DSQ_OP_DROP) {
        char err[512];
        if (c->txn[0]) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "dropping a database is not part of a transaction");
        } else {
            dsq__actor_close(a);
            int rc = dsq__store_drop(e, a->name, err, sizeof err);
            if (rc == 1) {
                c->not_found = true;
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "no such database: %s", a->name);
            } else if (rc == 2) {
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "cannot drop %s: %s", a->name, err);
            } else if (rc != 0) {
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot drop %s: %s", a->name, err);
            } else {
                dsq__feed_dropped(e, atomic_load(&a->feed)); /* its subscribers end */
            }
        }
    } else if (cold_failed(&x) == 0 && dsq__actor_open(e, a, c) == 0) {
        x.o = a->open;
        x.o->deadline_ns = dsq_now_ns() + e->cfg.query_timeout_ms * 1000000u;
        x.o->running = c;
        switch (c->op) {
        case DSQ_OP_QUERY:
            if (budget_spent(&x) == 0)
                op_query(&x);
            break;
        case DSQ_OP_BATCH:
            if (budget_spent(&x) == 0)
                op_batch(&x);
            break;
        case DSQ_OP_STREAM: op_stream(&x); break;
        case DSQ_OP_BEGIN: op_begin(&x); break;
        case DSQ_OP_COMMIT: op_end_txn(&x, true); break;
        case DSQ_OP_ROLLBACK: op_end_txn(&x, false); break;
        case DSQ_OP_CDC_READ: op_cdc_read(&x); break;
        case DSQ_OP_SCHEMA: {
            char err[256];
            sqlite3 *vdb = check_txn(&x) == 0 ? view_db(&x) : NULL;
            if (c->err == 0 && !x.retry &&
                (c->schema = dsq__schema(x.o, vdb ? vdb : x.o->db, err, sizeof err)) == NULL)
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
            c->lsn = x.snap ? x.snap->lsn : x.o->lsn;
            break;
        }
        case DSQ_OP_STATS: {
            /* Beside another client's transaction: the last commit's size. */
            sqlite3 *vdb = c->txn[0] == '\0' ? view_db(&x) : NULL;
            if (c->err == 0 && !x.retry && (c->stats = dsq__stats(e, a, vdb ? vdb : x.o->db)) == NULL)
                dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            c->lsn = x.o->lsn;
            break;
        }
        case DSQ_OP_PING:
            if (check_txn(&x) == 0)
                op_ping(&x);
            break;
        default:
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "unknown operation %d", op_of(c));
            break;
        }
        x.o->deadline_ns = 0;
        x.o->running = NULL;
        if (c->err != 0 && cold(&x) && (c->op == DSQ_OP_SCHEMA || c->op == DSQ_OP_STATS || c->op == DSQ_OP_PING))
            x.retry = true; /* they only read */
        if (c->txn[0]) {
            /* The idle clock of the transaction it named (not another
             * client's, when it named a read-only one) restarts. */
            pthread_mutex_lock(&a->mu);
            snap_txn *t = dsq__snap_find(a, c->txn);
            if (t != NULL)
                t->deadline_ms = dsq_now_ms() + t->timeout_ms;
            else if (x.o->in_txn && strcmp(a->txn, c->txn) == 0)
                a->txn_deadline_ms = dsq_now_ms() + a->txn_timeout_ms;
            pthread_mutex_unlock(&a->mu);
        }
    } else if (a->open == NULL && cold(&x)) {
        x.retry = true; /* opening read a page that is in the object store */
    } else if (c->op == DSQ_OP_STREAM) {
        c->more = false;
    }
    if (e->warm != NULL) {
        dsq_warm_chunk *k = dsq_warm_miss_take();
        if (k != NULL && x.retry) {
            cold_park(e, a, c, k);
            return;
        }
        if (k != NULL)
            dsq_warm_release(e->warm, k);
        pthread_mutex_lock(&a->mu);
        bool other_waits = a->cold_wait; /* (a cancelled call ran while another waits for its page) */
        pthread_mutex_unlock(&a->mu);
        if (a->npins > 0 && !other_waits && (a->open == NULL || (a->open->stream_stmt == NULL && a->nsstreams == 0)))
            pins_release(e, a);
    }
    if (x.park) { /* it writes: it waits, in its place, for the open transaction to end */
        c->err = 0;
        c->msg[0] = '\0';
        c->cold_retry = false; /* it runs whole again: no page it waited for is owed to it */
        c->wait_writer = true;
        dsq__actor_repost(e, a, c);
        return;
    }
    c->cold_retry = false;
    budget_settle(c);
    if (c->op == DSQ_OP_STREAM) {
        if (c->err != 0)
            c->more = false;
        if (c->chunk)
            c->chunk(c);
    } else if (c->encode) {
        c->encode(c);
    }
    dsq__reply(e, a, c);
}
