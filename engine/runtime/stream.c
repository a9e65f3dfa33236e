/* stream — queryStream (worker): one read-only statement's rows, handed
 * out a chunk per call.
 *
 * Divisions: the statement; the stream in the open write transaction
 * (on the actor's connection, which it holds until its last chunk);
 * streams outside it (a connection of their own on a view of the last
 * commit, or a read-only transaction's, holding back no one); chunks and
 * the operation; ending streams. */
#include <stdlib.h>

#include "common/util.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/pagestore.h"

/* ---- the statement ------------------------------------------------------------------ */

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
        dsq__fail_sqlite(x, rc);
        x->db = NULL;
        return NULL;
    }
    if (st == NULL) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "sql holds no statement");
        return NULL;
    }
    const char *end = r->sql + r->sql_len, *rest = dsq__sql_skip_space(tail, end);
    if (rest != end && !(*rest == ';' && dsq__sql_skip_space(rest + 1, end) == end)) {
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
    int brc = used ? dsq__bind_params(c, st, r, used) : -1;
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

/* ---- the stream in the write transaction ------------------------------------------ */

void dsq__stream_finish(run_ctx *x)
{
    actor_open *o = x->o;
    dsq__pins_release(x->e, x->a);
    if (o->stream_stmt) {
        sqlite3_finalize(o->stream_stmt);
        o->stream_stmt = NULL;
    }
    pthread_mutex_lock(&x->a->mu);
    x->a->stream_id = 0;
    x->a->stream_session = 0;
    pthread_mutex_unlock(&x->a->mu);
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

/* ---- streams outside the write transaction ------------------------------------------ */

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
    unsigned max = x->e->cfg.max_snapshots;
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
        if (dsq__view_conn(x->e, a, o, o->lsn, &t.view, &t.db, err, sizeof err) != 0) {
            if (!dsq__cold(x))
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

/* ---- chunks and the operation -------------------------------------------------------- */

/* A page of the stream's was evicted: the statement starts again (the
 * rows handed out so far are stepped over next time, and `res`, when
 * given, drops this chunk's rows), and the call runs again once the page
 * is here. Returns false: the stream is not done. */
static bool cold_again(run_ctx *x, sqlite3_stmt *st, uint64_t *skip, uint64_t rows, dsq_result *res)
{
    sqlite3_reset(st);
    *skip = rows;
    if (res != NULL) {
        dsq_buf_reset(&res->rows);
        res->nrows = 0;
    }
    x->c->state = DSQ__CALL_STREAM_MORE;
    x->retry = true;
    x->db = NULL;
    return false;
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
    x->db = sqlite3_db_handle(st); /* for dsq__fail_sqlite's message */
    while (*skip > 0) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            (*skip)--;
            continue;
        }
        if (dsq__cold(x))
            return cold_again(x, st, skip, *rows, NULL);
        if (rc != SQLITE_DONE)
            dsq__fail_sqlite(x, rc);
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
        if (rc != SQLITE_DONE && dsq__cold(x))
            return cold_again(x, st, skip, *rows, res);
        if (rc != SQLITE_DONE)
            dsq__fail_sqlite(x, rc);
        done = true;
        break;
    }
    x->db = NULL;
    *rows += res->nrows;
    return done || c->err != 0;
}

/* Start, continue or cancel a stream; hands one chunk to the loop. */
void dsq__op_stream(run_ctx *x)
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
            dsq__stream_finish(x);
        else if (ss != NULL)
            sstream_remove(a, (size_t)(ss - a->sstreams));
        c->more = false;
        return;
    }
    if (c->state == DSQ__CALL_NEW) {
        if (dsq__alloc_results(c, 1) != 0 || dsq__check_txn(x) != 0) {
            c->more = false;
            return;
        }
        bool in_txn = c->txn[0] != '\0' && x->snap == NULL;
        if ((in_txn ? stream_start_in_txn(x) : sstream_start(x)) != 0) {
            if (dsq__cold(x))
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
            dsq__stream_finish(x);
        else
            sstream_remove(a, (size_t)(ss - a->sstreams));
        c->more = false;
    } else {
        c->more = true;
    }
    res->lsn = c->lsn = lsn;
}

/* ---- ending streams ------------------------------------------------------------------ */

/* DSQ__OP_STREAM_END: end stream c->stream_id (its client went, or it
 * idled past transaction_timeout). */
void dsq__op_stream_end(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    pthread_mutex_lock(&a->mu);
    snap_stream *ss = sstream_find(a, c->stream_id);
    if (ss != NULL) {
        bool late = c->session != 0 || dsq_now_ms() >= ss->deadline_ms;
        size_t i = (size_t)(ss - a->sstreams);
        pthread_mutex_unlock(&a->mu);
        if (late && x->o != NULL)
            sstream_remove(a, i);
        return;
    }
    bool held = a->stream_id == c->stream_id;
    /* As for transactions: an idle end loses to a continuation that
     * came in meanwhile. */
    if (held && c->session == 0 && dsq_now_ms() < a->stream_deadline_ms)
        held = false;
    pthread_mutex_unlock(&a->mu);
    if (held && x->o)
        dsq__stream_finish(x);
}

/* The stream's call failed before it ran (the page it waited for did
 * not come): what it holds is let go, and it ends. */
void dsq__stream_abandon(run_ctx *x)
{
    dsq_call *c = x->c;
    if (c->nresults == 0)
        dsq__alloc_results(c, 1);
    if (x->o && x->o->stream_stmt && c->state != DSQ__CALL_NEW && x->a->stream_id == c->stream_id)
        dsq__stream_finish(x);
    snap_stream *ss = x->o && c->state != DSQ__CALL_NEW ? sstream_find(x->a, c->stream_id) : NULL;
    if (ss != NULL)
        sstream_remove(x->a, (size_t)(ss - x->a->sstreams));
    c->more = false;
}
