/* txn — transactions (worker): each request's own, the client's explicit
 * ones, read-only ones, and the LSN a commit takes.
 *
 * Divisions: request transactions and LSNs; beginTransaction, commit and
 * rollback; the idle clock, and transactions that expire.
 *
 * Outside an explicit transaction every request runs in a transaction of
 * its own, BEGIN ... COMMIT, so a multi-statement `sql` or an atomic batch
 * is all or nothing, as a Durable Object's writes between awaits are.
 * Inside an explicit transaction requests are not wrapped (the client's
 * savepoints must outlive them). A commit that wrote anything
 * also advances the LSN in the same transaction (store.c). User SQL cannot
 * begin, commit or roll back on its own: the authorizer refuses it
 * (sandbox.c), so the engine always knows where commits happen. The one
 * exception is a lone VACUUM, which SQLite runs only outside a
 * transaction (exec.c: op_query).
 *
 * A read-only transaction (beginTransaction readOnly) is a view of the
 * last commit held across requests, on a connection of its own
 * (conn.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/pagestore.h"

/* ---- request transactions and LSNs ------------------------------------------------ */

static void append_msg(dsq_call *c, const char *more)
{
    size_t n = strlen(c->msg);
    snprintf(c->msg + n, sizeof c->msg - n, "%s", more);
}

/* Foreign keys off on the writing connection for a call that asks
 * (dsq_call.fk_off), back on at the end of its request or transaction.
 * SQLite takes the setting only outside a transaction. */
static void fk_off(actor_open *o, const dsq_call *c)
{
    if (c->fk_off && !o->fk_off && sqlite3_get_autocommit(o->db)) {
        sqlite3_db_config(o->db, SQLITE_DBCONFIG_ENABLE_FKEY, 0, NULL);
        o->fk_off = true;
    }
}

static void fk_on(actor_open *o)
{
    if (o->fk_off && sqlite3_get_autocommit(o->db)) {
        sqlite3_db_config(o->db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, NULL);
        o->fk_off = false;
    }
}

void dsq__end_txn(run_ctx *x)
{
    dsq_actor *a = x->a;
    if (!x->o->in_txn)
        return;
    x->o->in_txn = false;
    fk_on(x->o);
    x->o->txn_prepared = false;
    dsq__beside_close(x->o); /* the last commit moves on, or stays the one it had */
    pthread_mutex_lock(&a->mu);
    a->txn[0] = '\0';
    a->txn_session = 0;
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_sub(&x->e->txns_open, 1);
}


/* After SQLite may have committed: the store's LSN is the connection's.
 * The reply waits at the output gate until it is durable (gate.c). */
int dsq__took_commit(run_ctx *x, const void *changes, size_t nchanges)
{
    actor_open *o = x->o;
    uint64_t lsn = dsq_ps_lsn(o->ps);
    dsq_feed *feed = atomic_load(&x->a->feed);
    if (lsn != o->lsn)
        dsq__beside_close(o);
    if (feed != NULL && lsn > o->lsn) {
        dsq_feed_commit(feed, lsn, dsq_ps_lsn_time(o->ps), changes, nchanges);
        if (x->e->cfg.sync == DSQ_SYNC_OFF) /* no syncs: as durable as it gets */
            dsq_feed_durable(&x->e->feeds, feed, lsn);
    }
    o->lsn = lsn;
    if (dsq_ps_checkpoint_due(o->ps) && !o->in_txn && dsq_now_ms() >= o->ckpt_after_ms)
        dsq__checkpoint(x->a, o);
    else if (x->e->tier != NULL && dsq_now_ms() - o->offered_ms >= x->e->cfg.tier_interval_ms)
        dsq__offer_files(x->e, x->a, o, 0);
    return 0;
}

uint32_t dsq__prepared_count(actor_open *o)
{
    if (o->prepared_known)
        return o->prepared;
    sqlite3_stmt *st = NULL;
    uint32_t n = 0;
    o->internal = true;
    if (sqlite3_prepare_v2(o->db, "SELECT count(*) FROM _dsq_prepared", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (uint32_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st); /* (no such table: none) */
    o->internal = false;
    o->prepared = n;
    o->prepared_known = true;
    return n;
}

static int commit(run_ctx *x);

/* A cross-shard transaction's id: 32 hex digits (the router's). */
static bool prepare_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

/* The record of prepared transaction c->prepare_id, committed on its own
 * (the reply waits for it to be durable, as any commit's). 0, or -1
 * with the call failed. */
static int record_prepared(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (!c->internal_tables || c->read_only || !prepare_id_ok(c->prepare_id) || c->target_db == NULL ||
        !dsq_db_name_valid(c->target_db)) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "a prepared transaction needs its id and its coordinator");
        return -1;
    }
    /* Another transaction's record (one a crash left undecided, or
     * decided and not applied here yet): this one waits for it to be
     * resolved, or it would run between that one's parts. */
    sqlite3_stmt *st = NULL;
    int others = 0;
    o->internal = true;
    if (sqlite3_prepare_v2(o->db, "SELECT count(*) FROM _dsq_prepared WHERE txid <> ?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, c->prepare_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            others = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st); /* (no such table: none) */
    o->internal = false;
    if (others > 0) {
        dsq__fail(c, DSQ_CODE_SERIALIZATION_FAILURE,
                  "another cross-shard transaction prepared on this database awaits its resolution; retry");
        return -1;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS _dsq_prepared(txid TEXT PRIMARY KEY, coordinator TEXT NOT NULL, "
             "created INTEGER NOT NULL); INSERT OR IGNORE INTO _dsq_prepared VALUES ('%s', '%s', %llu)",
             c->prepare_id, c->target_db, (unsigned long long)dsq_wall_ms());
    if (dsq__begin_request(x) != 0)
        return -1;
    int rc = dsq__internal_exec(o, sql);
    if (rc != SQLITE_OK) {
        dsq__fail_sqlite(x, rc);
        dsq__internal_exec(o, "ROLLBACK");
        return -1;
    }
    if (commit(x) != 0)
        return -1;
    o->prepared_known = false;
    return 0;
}

/* The record of prepared transaction c->prepare_id gone: in the open
 * transaction (COMMIT), or in one of its own (after a ROLLBACK). */
static int drop_prepared(run_ctx *x, bool own)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (!prepare_id_ok(c->prepare_id)) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "not a prepared transaction's id");
        return -1;
    }
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM _dsq_prepared WHERE txid = '%s'", c->prepare_id);
    if (own && dsq__begin_request(x) != 0)
        return -1;
    int rc = dsq__internal_exec(o, sql);
    if (rc != SQLITE_OK && !(rc == SQLITE_ERROR && strstr(sqlite3_errmsg(o->db), "no such table"))) {
        dsq__fail_sqlite(x, rc);
        if (own)
            dsq__internal_exec(o, "ROLLBACK");
        return -1;
    }
    o->prepared_known = false;
    return own ? commit(x) : 0;
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
        dsq__internal_exec(o, "ROLLBACK");
        return -1;
    }
    dsq_ps_set_extra(o->ps, changes, nchanges);
    int rc = dsq__internal_exec(o, "COMMIT");
    dsq_ps_set_extra(o->ps, NULL, 0);
    if (rc != SQLITE_OK) {
        dsq__fail_sqlite(x, rc); /* e.g. a deferred foreign key, or the log refused the record */
        bool open = !sqlite3_get_autocommit(o->db);
        if (dsq__cold(x) && (!o->in_txn || open)) {
            /* (A deferred foreign key check read a page that is in the
             * object store.) Outside a transaction the request runs again
             * whole; an explicit one stays open for its COMMIT to run again. */
            x->retry = true;
            x->c->resume_off = 0;
            if (o->in_txn)
                return -1;
        }
        if (open)
            dsq__internal_exec(o, "ROLLBACK");
        return -1;
    }
    dsq__took_commit(x, changes, nchanges);
    dsq_cdc_cap_reset(o->cap);
    return 0;
}

/* Outside an explicit transaction a request is a transaction of its own.
 * Inside one it is not wrapped: a savepoint around it would swallow the
 * client's own savepoints at its end. There a failing statement undoes
 * itself (SQLite's statement rollback) and the client decides the rest. */
int dsq__begin_request(run_ctx *x)
{
    if (x->o->in_txn)
        return 0;
    fk_off(x->o, x->c);
    int rc = dsq__internal_exec(x->o, "BEGIN");
    if (rc != SQLITE_OK) {
        fk_on(x->o);
        dsq__fail_sqlite(x, rc);
        return -1;
    }
    return 0;
}

static int end_request(run_ctx *x, bool ok);

/* Keep the request's work if ok, else undo it. Returns 0 when kept. */
int dsq__end_request(run_ctx *x, bool ok)
{
    int rc = end_request(x, ok);
    if (!x->o->in_txn)
        fk_on(x->o);
    return rc;
}

static int end_request(run_ctx *x, bool ok)
{
    actor_open *o = x->o;
    if (o->in_txn) {
        if (sqlite3_get_autocommit(o->db)) {
            /* Some errors (disk full, out of memory) make SQLite roll back
             * the whole transaction. */
            dsq__end_txn(x);
            append_msg(x->c, " (the transaction was rolled back)");
            return -1;
        }
        if (!ok && dsq__cold(x))
            x->retry = true; /* SQLite undid the statement; it runs again (resume_off) */
        /* The key's record joins the transaction: it commits or goes with
         * the work. (If it cannot be written the call fails, and its work
         * stays in the transaction, for the client to decide: running it
         * again would do it twice.) */
        return ok ? dsq__idem_record(x) : -1;
    }
    if (ok && !(x->c->scope & DSQ_SCOPE_W) && sqlite3_txn_state(o->db, "main") == SQLITE_TXN_WRITE) {
        /* A read-scope request commits nothing, whatever it ran: the
         * statements were refused if they write (dsq__run_sql), and this holds
         * for what that check could not see. */
        dsq__fail(x->c, DSQ_CODE_FORBIDDEN, "the request wrote; the token has read scope only");
        ok = false;
    }
    if (ok && dsq__idem_record(x) != 0)
        ok = false; /* (undone whole; with a page in the object store, run again) */
    if (ok)
        return commit(x);
    if (!sqlite3_get_autocommit(o->db))
        dsq__internal_exec(o, "ROLLBACK");
    if (dsq__cold(x)) {
        x->retry = true; /* all of it was undone: it runs again from the start */
        x->c->resume_off = 0;
    }
    return -1;
}

/* A call that names a transaction must name the open one. */
int dsq__check_txn(run_ctx *x)
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

/* ---- beginTransaction, commit and rollback ------------------------------------------ */

/* beginTransaction readOnly: a view of the last commit, kept until the
 * transaction ends; the actor's connection stays free for everyone. */
static void op_begin_read_only(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    snap_txn t = {.lsn = o->lsn, .session = c->session};
    t.timeout_ms = c->txn_timeout_ms ? c->txn_timeout_ms : x->e->cfg.txn_timeout_ms;
    unsigned max = x->e->cfg.max_snapshots;
    if (a->nsstreams + a->nsnaps >= max) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "%u streams and read-only transactions are open on this database (max_snapshots)", max);
        return;
    }
    char err[600];
    if (dsq_random_id(t.id) != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "no randomness for a transaction id");
        return;
    }
    if (dsq__view_conn(x->e, a, o, t.lsn, &t.view, &t.db, err, sizeof err) != 0) {
        if (dsq__cold(x))
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

void dsq__op_begin(run_ctx *x)
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
    if (!c->read_only && x->role == DSQ_ROLE_FOLLOWER) {
        dsq__fail_not_primary(x, "transactions that may write (beginTransaction readOnly: true reads here)");
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
    if (c->prepare_id[0] != '\0' && record_prepared(x) != 0)
        return;
    fk_off(o, c);
    int rc = dsq__internal_exec(o, c->immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
    if (rc != SQLITE_OK) {
        fk_on(o);
        dsq__fail_sqlite(x, rc);
        return;
    }
    if (dsq_random_id(c->txn_out) != 0) {
        dsq__internal_exec(o, "ROLLBACK");
        fk_on(o);
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "no randomness for a transaction id");
        return;
    }
    o->in_txn = true;
    o->txn_prepared = c->prepare_id[0] != '\0';
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

/* The connection that reads the last commit for a keyed COMMIT's
 * lookup: the actor's, unless another client's transaction holds it (then
 * the one beside it). NULL when that one failed to open (c failed, or
 * x->retry). */
static sqlite3 *commit_lookup_db(run_ctx *x)
{
    dsq_actor *a = x->a;
    if (!x->o->in_txn)
        return x->o->db;
    pthread_mutex_lock(&a->mu);
    bool mine = strcmp(a->txn, x->c->txn) == 0;
    pthread_mutex_unlock(&a->mu);
    return mine ? x->o->db : dsq__beside_db(x);
}

static void op_end_txn(run_ctx *x, bool do_commit)
{
    dsq_call *c = x->c;
    if (c->txn[0] == '\0') {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "transactionId is required");
        return;
    }
    /* A COMMIT sent again after its answer was lost finds its transaction
     * gone, and its key's record there. */
    if (do_commit && dsq__idem_keyed(x)) {
        sqlite3 *db = commit_lookup_db(x);
        if (db == NULL || dsq__idem_replay(x, db) != 0)
            return;
    }
    if (dsq__check_txn(x) != 0)
        return;
    if (x->snap != NULL) { /* read-only: it only ends */
        c->lsn = x->snap->lsn;
        dsq__snap_remove(x->e, x->a, (size_t)(x->snap - x->a->snaps));
        x->snap = NULL;
        return;
    }
    if (do_commit) {
        /* A prepared one's record goes with its commit. */
        if (c->prepare_id[0] != '\0' && drop_prepared(x, false) != 0) {
            dsq__internal_exec(x->o, "ROLLBACK");
            dsq__end_txn(x);
            append_msg(c, " (the transaction was rolled back)");
            return;
        }
        /* The key's record commits with the transaction. */
        if (dsq__idem_record(x) != 0) {
            if (!sqlite3_get_autocommit(x->o->db)) {
                if (dsq__cold(x))
                    x->retry = true; /* the COMMIT runs again once the page is here */
                else
                    append_msg(c, " (the transaction is still open)");
                return;
            }
            dsq__end_txn(x); /* (SQLite rolled it back: disk full, out of memory) */
            append_msg(c, " (the transaction was rolled back)");
            return;
        }
        if (commit(x) != 0) {
            if (x->retry)
                return; /* still open: the COMMIT runs again */
            append_msg(c, " (the transaction was rolled back)");
        }
    } else {
        dsq__internal_exec(x->o, "ROLLBACK");
    }
    dsq__end_txn(x);
    if (!do_commit && c->prepare_id[0] != '\0')
        drop_prepared(x, true);
    c->lsn = x->o->lsn;
}

void dsq__op_commit(run_ctx *x) { op_end_txn(x, true); }

void dsq__op_rollback(run_ctx *x) { op_end_txn(x, false); }

/* ---- the idle clock and expiry -------------------------------------------------------- */

/* A call ran: the idle clock of the transaction it named (not another
 * client's, when it named a read-only one) restarts. */
void dsq__txn_touch(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    if (c->txn[0] == '\0')
        return;
    pthread_mutex_lock(&a->mu);
    snap_txn *t = dsq__snap_find(a, c->txn);
    if (t != NULL)
        t->deadline_ms = dsq_now_ms() + t->timeout_ms;
    else if (x->o->in_txn && strcmp(a->txn, c->txn) == 0)
        a->txn_deadline_ms = dsq_now_ms() + a->txn_timeout_ms;
    pthread_mutex_unlock(&a->mu);
}

/* DSQ__OP_TXN_EXPIRE: roll back transaction c->txn (its client went, or
 * it idled past its timeout). */
void dsq__op_txn_expire(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    pthread_mutex_lock(&a->mu);
    snap_txn *t = dsq__snap_find(a, c->txn);
    if (t != NULL) {
        bool late = c->session != 0 || dsq_now_ms() >= t->deadline_ms;
        size_t i = (size_t)(t - a->snaps);
        pthread_mutex_unlock(&a->mu);
        if (late && x->o != NULL) {
            if (x->o->stream_stmt && sqlite3_db_handle(x->o->stream_stmt) == a->snaps[i].db)
                dsq__stream_finish(x); /* its stream ends with it */
            dsq__snap_remove(x->e, a, i);
            DSQ_INFO("transaction_rolled_back", "db=%s reason=%s read_only=1", a->name,
                     c->session ? "client_disconnected" : "idle_timeout");
        }
        return;
    }
    bool match = a->txn[0] != '\0' && strcmp(a->txn, c->txn) == 0;
    /* An idle expiry loses to activity that came in meanwhile. */
    if (match && c->session == 0 && dsq_now_ms() < a->txn_deadline_ms)
        match = false;
    pthread_mutex_unlock(&a->mu);
    if (!match || x->o == NULL)
        return;
    /* A stream in it ends with it; one in a read-only transaction
     * (on that one's connection) goes on. */
    if (x->o->stream_stmt && sqlite3_db_handle(x->o->stream_stmt) == x->o->db)
        dsq__stream_finish(x);
    dsq__internal_exec(x->o, "ROLLBACK");
    dsq__end_txn(x);
    DSQ_INFO("transaction_rolled_back", "db=%s reason=%s", a->name,
             c->session ? "client_disconnected" : "idle_timeout");
}
