/* run — running a request's SQL on a connection (worker): its statements
 * one after another, each prepared (or found in the cache), checked,
 * bound, stepped, and its row changes captured.
 *
 * Divisions: errors (SQLite's codes to DESIGN's, and why the authorizer
 * said no); the result budget (max_result_bytes, for a call and for its
 * request); running statements. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cdc/cdc.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/vfs.h"

/* ---- errors ------------------------------------------------------------------------ */

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

dsq_code dsq_code_of_sqlite(int rc, const char *msg) { return dsq__sqlite_code(rc, msg); }

/* Fail `c` with the connection's current error. */
void dsq__fail_sqlite(run_ctx *x, int rc)
{
    actor_open *o = x->o;
    const char *msg = sqlite3_errmsg(x->db ? x->db : o->db);
    /* Taken whatever the failure, so that none is left for a later one. */
    int store_errno = dsq__vfs_take_errno();
    if (store_errno == 0)
        store_errno = sqlite3_system_errno(x->db ? x->db : o->db);
    /* A denied function comes back as SQLITE_ERROR, other denials as
     * SQLITE_AUTH: whenever the authorizer said no, say why. */
    if (o->deny[0])
        dsq__fail(x->c, DSQ_CODE_FORBIDDEN, "%s", o->deny);
    else if ((rc & 0xff) == SQLITE_INTERRUPT && dsq__cancelled(x->c))
        dsq__fail(x->c, DSQ_CODE_TIMEOUT, "the request was cancelled");
    else if ((rc & 0xff) == SQLITE_INTERRUPT)
        dsq__fail(x->c, DSQ_CODE_TIMEOUT, "the statement ran past query_timeout (%llu ms)",
                  (unsigned long long)x->e->cfg.query_timeout_ms);
    else if ((rc & 0xff) == SQLITE_IOERR && (store_errno == EMFILE || store_errno == ENFILE))
        /* The store could not open a file (a new log segment, a page's
         * file): the server's limit, not the database's fault. */
        dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "too many open files on the server; try again later");
    else
        dsq__fail(x->c, dsq__sqlite_code(rc, msg), "%s", msg);
}

/* ---- the result budget --------------------------------------------------------------- */

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
int dsq__budget_spent(run_ctx *x)
{
    dsq_call *c = x->c;
    if (c->budget == NULL || c->cold_retry || !atomic_load(&c->budget->over))
        return 0;
    dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
              "not run: the request's results went past max_result_bytes (%zu bytes)",
              x->e->cfg.max_result_size);
    return 1;
}

/* A QUERY or BATCH call is over: its budget holds what its results hold
 * (nothing when it failed), no longer its high-water mark. */
void dsq__budget_settle(dsq_call *c)
{
    uint64_t hold = 0;
    for (size_t i = 0; c->err == 0 && i < c->nresults; i++)
        hold += c->results[i].rows.len;
    if (c->budget != NULL && hold > c->result_bytes)
        atomic_fetch_add(&c->budget->used, hold - c->result_bytes);
    else if (c->budget != NULL && hold < c->result_bytes)
        atomic_fetch_sub(&c->budget->used, c->result_bytes - hold);
    c->result_bytes = hold;
}

/* ---- running statements ---------------------------------------------------------------- */

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
        dsq__fail_sqlite(x, rc);
        return -1;
    }
    /* sqlite3_changes() still counts the last DML when this was DDL; the
     * total tells whether this statement changed rows at all. */
    res->rows_affected = sqlite3_total_changes64(db) != before ? sqlite3_changes64(db) : 0;
    res->last_insert_rowid = sqlite3_last_insert_rowid(db);
    return 0;
}

/* The statement at p: from the cache, or prepared now (and kept unless
 * `special`: it changes the schema, writes, or is a savepoint; what the
 * authorizer says of such a statement while it is prepared is what the
 * change capture needs, each time). *st is NULL when only white space
 * or comments are left. */
static int next_stmt(run_ctx *x, const char *p, const char *end, bool cached, sqlite3_stmt **st,
                     const char **tail, bool *special)
{
    actor_open *o = x->o;
    sqlite3 *db = x->db ? x->db : o->db;
    size_t take = 0;
    *special = false;
    *st = cached ? dsq__cache_get(o, p, (size_t)(end - p), &take) : NULL;
    o->stmt_ddl = o->stmt_writes = o->stmt_own = false;
    o->stmt_created[0] = o->sp_op[0] = '\0';
    if (*st != NULL) {
        *tail = p + take;
        return 0;
    }
    o->deny[0] = '\0';
    int rc = sqlite3_prepare_v3(db, p, (int)(end - p), cached ? SQLITE_PREPARE_PERSISTENT : 0, st, tail);
    if (rc != SQLITE_OK) {
        dsq__fail_sqlite(x, rc);
        return -1;
    }
    if (*st == NULL)
        return 0;
    const char *text = sqlite3_sql(*st);
    if (text && dsq__sql_vacuum_into(text, strlen(text))) {
        sqlite3_finalize(*st);
        *st = NULL;
        dsq__fail(x->c, DSQ_CODE_FORBIDDEN, "VACUUM INTO writes a file; it is not allowed");
        return -1;
    }
    *special = o->stmt_ddl || o->stmt_writes || o->stmt_own || o->sp_op[0] != '\0';
    if (cached && !*special && dsq__cache_put(o, p, (size_t)(end - p), (size_t)(*tail - p), *st) != 0) {
        dsq__fail(x->c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    return 0;
}

/* A statement that writes where writing is not allowed fails before it
 * runs: on a follower copy, in a read-only transaction or a time-travel
 * query, with a read-scope token, or beside another client's open
 * transaction (then the call waits for it: x->park). */
static int refuse_write(run_ctx *x, sqlite3_stmt *st)
{
    dsq_call *c = x->c;
    /* (A cached statement is never one of stmt_writes': not special.) */
    if (sqlite3_stmt_readonly(st) && !x->o->stmt_writes)
        return 0;
    if (x->role == DSQ_ROLE_FOLLOWER) {
        dsq__fail_not_primary(x, "writes");
    } else if (x->snap) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "transaction %.40s is read-only", c->txn);
    } else if (x->past) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "a query with asOf only reads");
    } else if (!(c->scope & DSQ_SCOPE_W)) {
        dsq__fail(c, DSQ_CODE_FORBIDDEN, "this statement writes; the token has read scope only");
    } else if (x->beside) {
        x->park = true; /* it runs once the open transaction ends (if it may write) */
        dsq__fail(c, DSQ_CODE_SERIALIZATION_FAILURE, "it writes while a transaction is open");
    } else if (!c->internal_tables && !(x->o->in_txn && x->o->txn_prepared) && dsq__prepared_count(x->o) > 0) {
        dsq__fail(c, DSQ_CODE_SERIALIZATION_FAILURE,
                  "%u cross-shard transaction%s prepared on this database await%s the decision of its "
                  "keyspace's router: writes are refused until then (retry)",
                  x->o->prepared, x->o->prepared == 1 ? "" : "s", x->o->prepared == 1 ? "s" : "");
    } else {
        return 0;
    }
    return -1;
}

/* Bind and run one prepared statement, and hand its row changes to the
 * change capture (or take them back when it failed: SQLite undid it). */
static int run_stmt(run_ctx *x, sqlite3_stmt *st, const dsq_stmt_req *r, unsigned char *used, dsq_result *res)
{
    actor_open *o = x->o;
    dsq_call *c = x->c;
    bool ddl = o->stmt_ddl;
    char created[sizeof o->stmt_created], sp_op[sizeof o->sp_op], sp_name[sizeof o->sp_name];
    memcpy(created, o->stmt_created, sizeof created);
    memcpy(sp_op, o->sp_op, sizeof sp_op);
    memcpy(sp_name, o->sp_name, sizeof sp_name);
    int brc = dsq__bind_params(c, st, r, used);
    const char *text = sqlite3_sql(st);
    o->vacuum = text && dsq__sql_starts_with(text, strlen(text), "VACUUM");
    bool capture = x->db == NULL || x->db == o->db; /* not a time-travel connection */
    dsq_cdc_mark mark = dsq_cdc_cap_mark(o->cap);
    if (brc == 0)
        brc = step_all(x, st, res);
    if (brc == 0 && dsq__cold(x) && sqlite3_stmt_readonly(st)) {
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
        int crc = dsq_cdc_cap_statement_done(o->cap, mark, ddl ? text : NULL, created[0] ? created : NULL);
        o->internal = false;
        if (crc != 0) {
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory capturing the statement's row changes");
            brc = -1;
        }
    }
    return brc;
}

/* A parameter the statements did not use is an error (a count or name
 * the client got wrong). */
static int params_unused(dsq_call *c, const dsq_stmt_req *r, const unsigned char *used)
{
    for (size_t k = 0; k < r->nparams; k++) {
        if (used[k])
            continue;
        if (r->named)
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "parameter %s is not used by the SQL", r->params[k].name);
        else
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "params has %zu values; the SQL uses fewer", r->nparams);
        return -1;
    }
    return 0;
}

/* Run every statement in r->sql in order; `res` keeps the last one's. */
int dsq__run_sql(run_ctx *x, const dsq_stmt_req *r, dsq_result *res)
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
    while (p < end) {
        sqlite3_stmt *st;
        const char *tail;
        bool special;
        if (next_stmt(x, p, end, cached, &st, &tail, &special) != 0)
            goto out;
        if (st == NULL) { /* only white space or comments left */
            p = tail;
            continue;
        }
        if (cached && special)
            temp = st;
        if (!cached && x->scratch != NULL)
            sqlite3_finalize(x->scratch);
        if (!cached)
            x->scratch = st; /* finalized with the connection's request */
        nstmts++;
        if (refuse_write(x, st) != 0)
            goto out;
        int brc = run_stmt(x, st, r, used, res);
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
    if (!resumed && params_unused(c, r, used) != 0)
        goto out;
    rv = 0;
out:
    if (rv != 0 && dsq__cold(x))
        c->resume_off = (size_t)(p - r->sql); /* where the statement that waits begins */
    sqlite3_finalize(temp); /* a refusal left it unrun */
    free(used);
    return rv;
}
