/* actor — a database's mailbox and its turn on a worker.
 *
 * Divisions: which message may run now (the hold rule); posting; a turn;
 * completion.
 *
 * The hold rule. An actor runs one message at a time, in arrival order,
 * except while something holds it:
 *   - an open transaction: messages that name it run, and so do other
 *     clients' reads (queries, batches, getSchema, ping, getStats, CDC
 *     reads, read-only transactions): exec.c runs them on the last commit,
 *     through a connection of their own, so nobody sees uncommitted data
 *     and no reader waits for a writer. A read that turns out to write
 *     comes back marked wait_writer (dsq__actor_repost) and waits, in its
 *     place, for the transaction to end. A message that names another
 *     transaction runs at once: a read-only one, or to fail.
 *   - one connection's messages run in the order they came: a message
 *     waits while an earlier one of its connection waits (those that name
 *     a transaction excepted: the transaction must be able to end; and a
 *     stream's continuation: what its connection sent since waits for it).
 *   - an open stream: only its own continuation (or its end) runs.
 *   - a call waiting for a page from the object store (cold_wait): nothing
 *     runs until it is back (dsq__actor_cold_back), so calls keep their
 *     order; the worker meanwhile runs other actors.
 * Engine messages that end a hold (expiry, shutdown) belong to it, so they
 * always run. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "engine/runtime/engine_int.h"

static bool sstream_open(const dsq_actor *a, uint64_t id)
{
    for (size_t i = 0; i < a->nsstreams; i++)
        if (a->sstreams[i].id == id)
            return true;
    return false;
}

/* Operations that only read, and so run beside another client's open
 * transaction (on the last commit). */
static bool reads_beside_txn(const dsq_call *c)
{
    switch (c->op) {
    case DSQ_OP_QUERY:
    case DSQ_OP_BATCH:
    case DSQ_OP_SCHEMA:
    case DSQ_OP_STATS:
    case DSQ_OP_PING:
    case DSQ_OP_CDC_READ:
    case DSQ_OP_STREAM: /* a new stream: a snapshot of its own */
        return c->state == DSQ__CALL_NEW;
    case DSQ_OP_BEGIN:
        return c->read_only;
    default:
        return false;
    }
}

static bool belongs_to_hold(const dsq_actor *a, const dsq_call *c)
{
    if (op_of(c) == DSQ__OP_SHUTDOWN)
        return true;
    if (op_of(c) < DSQ__OP_HIBERNATE && c->state == DSQ__CALL_NEW && (dsq__cancelled(c) || c->wait_expired))
        return true; /* it fails at once, touching nothing */
    if (a->cold_wait)
        return false; /* in order: what came after the waiting call runs after it */
    if (c->wait_lsn && c->min_lsn > a->lsn_seen)
        return false; /* not yet: this copy has not reached its LSN */
    if (c->stream_id != 0 && c->state != DSQ__CALL_NEW && sstream_open(a, c->stream_id))
        return true; /* a snapshot stream's continuation: its own connection */
    if (a->stream_id != 0) {
        if (c->stream_id == a->stream_id)
            return true; /* its continuation, cancel, or STREAM_END */
        /* The transaction a stream runs in may expire under it; so may a
         * read-only one (its expiry must not wait behind the stream). */
        if (op_of(c) == DSQ__OP_TXN_EXPIRE &&
            ((a->txn[0] && strcmp(c->txn, a->txn) == 0) || dsq__snap_find((dsq_actor *)a, c->txn) != NULL))
            return true;
        /* Other clients' reads run beside the transaction and its stream. */
        return c->txn[0] == '\0' && !c->wait_writer && reads_beside_txn(c);
    }
    if (a->txn[0] != '\0')
        return c->txn[0] != '\0' || (!c->wait_writer && reads_beside_txn(c));
    return true;
}

/* The first message that may run now (and the link of the one before
 * it, NULL if it is the first), or NULL. Caller holds mu. */
static dsq_call *first_runnable(const dsq_actor *a, dsq_qnode **prevp)
{
    DSQ_ASSERT_HELD(&a->mu);
    uint64_t waiting[8]; /* connections with a message that waits */
    size_t nwaiting = 0;
    bool many = false;   /* more than that: look through the messages before */
    dsq_qnode *prev = NULL;
    for (dsq_qnode *n = dsq_queue_first(&a->mail); n; prev = n, n = n->next) {
        dsq_call *c = dsq_container_of(n, dsq_call, link);
        bool ok = belongs_to_hold(a, c);
        /* (A stream's continuation is no new request: it goes on with one
         * that already ran, ahead of what its connection sent since.) */
        if (ok && c->session != 0 && c->txn[0] == '\0' && op_of(c) < DSQ__OP_HIBERNATE &&
            c->state == DSQ__CALL_NEW && !dsq__cancelled(c) && !c->wait_expired) {
            for (size_t i = 0; ok && i < nwaiting; i++)
                ok = waiting[i] != c->session;
            /* Every message before c waits (else it would be the one). */
            for (const dsq_qnode *m = dsq_queue_first(&a->mail); ok && many && m != n; m = m->next)
                ok = dsq_container_of(m, dsq_call, link)->session != c->session;
        }
        if (ok) {
            if (prevp)
                *prevp = prev;
            return (dsq_call *)c;
        }
        if (c->session != 0 && nwaiting < sizeof waiting / sizeof waiting[0])
            waiting[nwaiting++] = c->session;
        else if (c->session != 0)
            many = true;
    }
    return NULL;
}

/* Unlink and return the first message that may run now. Caller holds mu. */
static dsq_call *take_runnable(dsq_actor *a)
{
    DSQ_ASSERT_HELD(&a->mu);
    dsq_qnode *prev = NULL;
    dsq_call *c = first_runnable(a, &prev);
    if (c != NULL) {
        dsq_queue_remove_after(&a->mail, prev);
        a->nmail--;
    }
    return c;
}

static bool has_runnable(const dsq_actor *a) { return first_runnable(a, NULL) != NULL; }

int dsq__actor_post(dsq_engine *e, dsq_actor *a, dsq_call *c, bool front)
{
    bool internal = op_of(c) >= DSQ__OP_HIBERNATE || c->state != DSQ__CALL_NEW;
    pthread_mutex_lock(&a->mu);
    if (a->life == ACTOR_SHUT && op_of(c) != DSQ__OP_SHUTDOWN) {
        pthread_mutex_unlock(&a->mu);
        return -1;
    }
    /* A call for the open write transaction is never refused: refusing
     * its COMMIT or ROLLBACK would leave everyone waiting for the timeout.
     * (A read-only transaction holds no one: its calls count like any.) */
    bool for_hold = a->txn[0] != '\0' && strcmp(c->txn, a->txn) == 0;
    snap_txn *snap = c->txn[0] ? dsq__snap_find(a, c->txn) : NULL;
    if (!internal && !for_hold && a->nmail >= e->cfg.max_queue) {
        pthread_mutex_unlock(&a->mu);
        return -1;
    }
    /* The holder is active: its idle clock restarts now, not when the call
     * gets a worker (a busy pool must not expire a client that is asking). */
    uint64_t now = dsq_now_ms();
    if (snap != NULL && op_of(c) < DSQ__OP_HIBERNATE)
        snap->deadline_ms = now + snap->timeout_ms;
    else if (for_hold && op_of(c) < DSQ__OP_HIBERNATE)
        a->txn_deadline_ms = now + a->txn_timeout_ms;
    if (c->seq == 0) {
        c->seq = ++a->mail_seq;
        c->posted_ms = now;
    }
    if (a->stream_id != 0 && c->stream_id == a->stream_id && op_of(c) == DSQ_OP_STREAM)
        a->stream_deadline_ms = now + e->cfg.txn_timeout_ms;
    for (size_t i = 0; c->stream_id != 0 && op_of(c) == DSQ_OP_STREAM && i < a->nsstreams; i++)
        if (a->sstreams[i].id == c->stream_id)
            a->sstreams[i].deadline_ms = now + e->cfg.txn_timeout_ms;
    if (front)
        dsq_queue_insert_after(&a->mail, NULL, &c->link);
    else
        dsq_queue_push(&a->mail, &c->link);
    a->nmail++;
    atomic_fetch_add(&e->queued, 1);
    bool push = a->sched == ACTOR_IDLE && belongs_to_hold(a, c);
    if (push)
        dsq__actor_sched(a, ACTOR_QUEUED);
    pthread_mutex_unlock(&a->mu);
    /* Outside a->mu: the worker this wakes may run at once on this CPU,
     * and must not find the lock still held. */
    if (push)
        dsq__pool_push(e, a, false); /* the loop thread: woken by the next kick */
    return 0;
}

void dsq__actor_repost(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    pthread_mutex_lock(&a->mu);
    /* Back in its place by arrival: after every message that came before it. */
    dsq_qnode *prev = NULL;
    for (dsq_qnode *at = dsq_queue_first(&a->mail); at != NULL; at = at->next) {
        if (dsq_container_of(at, dsq_call, link)->seq >= c->seq)
            break;
        prev = at;
    }
    if (c->wait_since_ms == 0)
        c->wait_since_ms = dsq_now_ms();
    dsq_queue_insert_after(&a->mail, prev, &c->link);
    a->nmail++;
    atomic_fetch_add(&e->queued, 1);
    pthread_mutex_unlock(&a->mu);
    /* The actor is running (this is its turn): its run loop finds c. */
}

void dsq__actor_expire_writers(dsq_engine *e, dsq_actor *a, uint64_t now)
{
    uint64_t limit = e->cfg.write_wait_ms;
    uint64_t lsn_limit = e->cfg.repl_timeout_ms ? e->cfg.repl_timeout_ms : e->cfg.write_wait_ms;
    pthread_mutex_lock(&a->mu);
    bool any = false;
    dsq_call *m;
    dsq_queue_foreach(m, &a->mail, link) {
        if (m->wait_lsn) { /* a read waiting for this copy to reach its LSN */
            if (!m->wait_expired && now >= m->wait_since_ms && now - m->wait_since_ms >= lsn_limit) {
                m->wait_expired = true;
                any = true;
            }
            continue;
        }
        /* Writes sent back to wait, and what waits for the transaction
         * from the start: another beginTransaction, a drop. (now was read
         * before: a call may have begun to wait since.) */
        bool waits = m->wait_writer || (m->state == DSQ__CALL_NEW && m->txn[0] == '\0' &&
                                        ((m->op == DSQ_OP_BEGIN && !m->read_only) || m->op == DSQ_OP_DROP));
        uint64_t since = m->wait_writer ? m->wait_since_ms : m->posted_ms;
        if (waits && !m->wait_expired && now >= since && now - since >= limit) {
            m->wait_expired = true;
            any = true;
        }
    }
    bool push = any && a->sched == ACTOR_IDLE;
    if (push)
        dsq__actor_sched(a, ACTOR_QUEUED);
    pthread_mutex_unlock(&a->mu);
    if (push)
        dsq__pool_push(e, a, false);
}

void dsq__actor_cancel(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    pthread_mutex_lock(&a->mu);
    bool waiting = false;
    for (const dsq_qnode *m = dsq_queue_first(&a->mail); m && !waiting; m = m->next)
        waiting = m == &c->link;
    bool push = waiting && a->sched == ACTOR_IDLE;
    if (push)
        dsq__actor_sched(a, ACTOR_QUEUED);
    pthread_mutex_unlock(&a->mu);
    if (push)
        dsq__pool_push(e, a, false); /* the loop thread: woken by the next kick */
}

snap_txn *dsq__snap_find(dsq_actor *a, const char *id)
{
    DSQ_ASSERT_HELD(&a->mu);
    for (size_t i = 0; i < a->nsnaps; i++)
        if (strcmp(a->snaps[i].id, id) == 0)
            return &a->snaps[i];
    return NULL;
}

void dsq__actor_cold_back(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    pthread_mutex_lock(&a->mu);
    a->cold_wait = false;
    dsq_queue_insert_after(&a->mail, NULL, &c->link);
    a->nmail++;
    atomic_fetch_add(&e->queued, 1);
    bool push = a->sched == ACTOR_IDLE;
    if (push)
        dsq__actor_sched(a, ACTOR_QUEUED);
    pthread_mutex_unlock(&a->mu);
    if (push)
        dsq__pool_push(e, a, true);
}

/* A turn: at most batch_per_turn messages, then back of the queue if more
 * can run, so one busy database cannot keep a worker to itself. */
void dsq__actor_run(dsq_engine *e, dsq_actor *a)
{
    for (unsigned k = 0; k < e->cfg.batch_per_turn; k++) {
        pthread_mutex_lock(&a->mu);
        dsq_call *c = take_runnable(a);
        if (c == NULL) {
            dsq__actor_sched(a, ACTOR_IDLE);
            pthread_mutex_unlock(&a->mu);
            return;
        }
        dsq__actor_sched(a, ACTOR_RUNNING);
        pthread_mutex_unlock(&a->mu);
        atomic_fetch_sub(&e->queued, 1);
        dsq__exec(e, a, c); /* completes c (or parks a stream); c is gone */
    }
    pthread_mutex_lock(&a->mu);
    bool again = has_runnable(a);
    dsq__actor_sched(a, again ? ACTOR_QUEUED : ACTOR_IDLE);
    pthread_mutex_unlock(&a->mu);
    if (again)
        dsq__pool_push(e, a, true); /* a worker: wake another now */
}

void dsq__complete(dsq_engine *e, dsq_call *c)
{
    pthread_mutex_lock(&e->cmu);
    dsq_queue_push(&e->done, &c->link);
    pthread_cond_broadcast(&e->ccv);
    pthread_mutex_unlock(&e->cmu);
    if (e->cfg.wake)
        e->cfg.wake(e->cfg.wake_arg);
}

void dsq__fail(dsq_call *c, dsq_code code, const char *fmt, ...)
{
    va_list ap;
    c->err = -1;
    c->code = code;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
}
