/* gate — output gates and group commit (DESIGN D5).
 *
 * A commit is appended to its database's log without waiting; the actor
 * goes on with its next message. Every reply an actor produces while its
 * log holds records not yet durable is parked at the actor's gate with the
 * LSN it must wait for (the newest the actor has written), in order. The
 * syncer threads take gates with parked replies, fsync their logs (one
 * fsync covers every record appended before it, however many commits
 * that is) and release the replies the fsync covered. A failed fsync
 * fails every parked reply, and the actor restarts from its durable state
 * before it runs anything else (exec.c: dsq__gate_failed).
 *
 * sync = normal: replies leave at once and the log is synced right behind
 * them. sync = off: no fsync at all.
 *
 * sync_to_object_store = commit (with sync = full): after the fsync the
 * gate stays busy while the records it covered go to the object store as
 * one tail object (tier.h); the replies leave when it is there. If the
 * store fails them they end with TIMEOUT (the commit is durable here and
 * goes up later); the next sync tries again from the same place.
 *
 * Locks: syncer.mu guards the list of gates to sync and each gate's
 * `queued`; a gate's mu guards the rest of it. The only nesting is
 * syncer.mu then gate.mu (the syncer taking a gate). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/runtime/engine_int.h"
#include "engine/storage/pagestore.h"

/* ---- the syncer's list ------------------------------------------------------------------ */

static void enqueue(dsq_engine *e, dsq_gate *g)
{
    dsq_syncer *s = &e->syncer;
    pthread_mutex_lock(&s->mu);
    if (!g->queued && !s->stopping) {
        g->queued = true;
        dsq_queue_push(&s->gates, &g->link);
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

static void unqueue(dsq_engine *e, dsq_gate *g)
{
    dsq_syncer *s = &e->syncer;
    pthread_mutex_lock(&s->mu);
    if (g->queued) {
        dsq_queue_remove(&s->gates, &g->link);
        g->queued = false;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Hand released replies to the loop, in order. */
void dsq__complete_all(dsq_engine *e, dsq_queue *out)
{
    dsq_qnode *n;
    while ((n = dsq_queue_pop(out)) != NULL)
        dsq__complete(e, dsq_container_of(n, dsq_call, link));
}

/* Take the parked replies an fsync up to `durable` covers (all of them
 * when failing). Caller holds g->mu. */
static dsq_queue take_released(dsq_gate *g, uint64_t durable, bool all)
{
    DSQ_ASSERT_HELD(&g->mu);
    dsq_queue out = {0};
    dsq_call *c;
    while ((c = dsq_container_of(dsq_queue_first(&g->parked), dsq_call, link)) != NULL &&
           (all || c->gate_lsn <= durable))
        dsq_queue_push(&out, dsq_queue_pop(&g->parked));
    return out;
}

static void fail_each(dsq_queue *out, dsq_code code, const char *msg)
{
    dsq_call *c;
    dsq_queue_foreach(c, out, link)
        dsq__fail(c, code, "%s", msg);
}

static void fail_calls(dsq_queue *out, const char *why, int eno)
{
    char msg[480];
    bool full = eno == ENOSPC || eno == EDQUOT;
    snprintf(msg, sizeof msg,
             "%s: the commit could not be made durable (%.300s); the database restarts from its last durable "
             "commit",
             full ? "the disk is full" : "disk I/O error", why);
    fail_each(out, full ? DSQ_CODE_RESOURCE_EXHAUSTED : DSQ_CODE_INTERNAL_ERROR, msg);
}

/* Replies of committed, locally durable work that the object store did
 * not take. */
static void fail_tail(dsq_queue *out, const char *why)
{
    char msg[480];
    snprintf(msg, sizeof msg,
             "the commit is durable on this node but the object store did not take it (%.250s); it goes up later",
             why);
    fail_each(out, DSQ_CODE_TIMEOUT, msg);
}

/* Replies of commits durable here that not enough other copies
 * acknowledged in time (replication). */
static void fail_unreplicated(dsq_queue *out, const char *why)
{
    char msg[480];
    snprintf(msg, sizeof msg,
             "the commit is durable on this node but not yet on enough of the database's copies (%.250s); it may "
             "still reach them",
             why);
    fail_each(out, DSQ_CODE_TIMEOUT, msg);
}

/* Whether replies may leave at all (with replication, a primary that is
 * not sure it still is one holds them). */
static bool answering(const dsq_gate *g)
{
    return g->repl == NULL || g->repl->answering == NULL || g->repl->answering(g->repl->ud, g->name);
}

/* How far replies may go with the log durable up to `durable`: that far
 * alone; with replication, as far as the hooks say (never back). Caller
 * holds g->mu. */
static uint64_t release_point(dsq_gate *g, uint64_t durable)
{
    uint64_t r = g->repl != NULL ? g->repl->released(g->repl->ud, g->name, durable) : durable;
    return r > g->released ? r : g->released;
}

/* ---- the syncer threads ------------------------------------------------------------------ */

static bool tail_mode(const dsq_engine *e) { return e->tier != NULL && e->cfg.tier_commit; }

static void tail_done(void *ud, bool ok, uint64_t upto, const char *why);

/* After a sync of g (rc: 0, or the sync's negated errno): release what
 * it covered (with tails: send them first), or fail everything parked
 * when it failed; take g again when more is waiting. */
static void sync_finished(dsq_engine *e, dsq_gate *g, int rc, uint64_t durable, const char *err)
{
    pthread_mutex_lock(&g->mu);
    dsq_queue out;
    if (rc != 0) {
        if (!g->failed) {
            g->failed = true;
            g->why_errno = -rc;
            snprintf(g->why, sizeof g->why, "%.290s", err);
            DSQ_ERROR("log_sync_failed", "db=%s reason=%s", g->name, dsq_log_q(err));
        }
        out = take_released(g, 0, true);
        fail_calls(&out, g->why, g->why_errno);
    } else if (tail_mode(e) && durable > g->released) {
        /* Durable here; the replies wait for the object store too. g
         * stays busy (its owner's close waits) until tail_done. */
        g->durable = durable;
        uint64_t after = g->released;
        dsq_feed *feed = g->feedp ? atomic_load(g->feedp) : NULL;
        pthread_mutex_unlock(&g->mu);
        dsq_feed_durable(&e->feeds, feed, durable);
        dsq_tier_tail(e->tier, g->name, g->wal, after, durable, tail_done, g);
        return;
    } else {
        g->durable = durable;
        g->released = release_point(g, durable);
        out = answering(g) ? take_released(g, g->released, false) : (dsq_queue){0};
    }
    dsq_feed *feed = g->feedp ? atomic_load(g->feedp) : NULL;
    /* Again when more was appended meanwhile (a reply that waits for other
     * copies, not for the disk, is no reason to sync). */
    bool more = !g->failed && rc == 0 && dsq_wal_appended(g->wal) > g->durable;
    uint64_t told = g->released;
    g->busy = false;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    dsq__complete_all(e, &out);
    if (rc == 0)
        dsq_feed_durable(&e->feeds, feed, told); /* (subscribers see what the replies may) */
    if (more)
        enqueue(e, g);
}

/* The tail a sync of g sent to the object store is there (or not). */
static void tail_done(void *ud, bool ok, uint64_t upto, const char *why)
{
    dsq_gate *g = ud;
    dsq_engine *e = g->engine;
    pthread_mutex_lock(&g->mu);
    dsq_queue out = take_released(g, upto, false);
    if (ok)
        g->released = upto;
    else
        fail_tail(&out, why);
    /* Not more when the store failed and nobody waits: the next commit
     * (or the close) tries again, not a loop against a store that is down. */
    bool more = !g->failed && (!dsq_queue_empty(&g->parked) || (ok && dsq_wal_appended(g->wal) > g->released));
    g->busy = false;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    dsq__complete_all(e, &out);
    if (more)
        enqueue(e, g);
}

#define GROUP_MAX 64

static void *syncer_main(void *arg)
{
    dsq_thread_name("dsq-syncer");
    dsq_engine *e = arg;
    dsq_syncer *s = &e->syncer;
    dsq_gate *grp[GROUP_MAX];
    dsq_wal *wals[GROUP_MAX];
    uint64_t durables[GROUP_MAX];
    int rcs[GROUP_MAX];
    static __thread char errs[GROUP_MAX][400];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (dsq_queue_empty(&s->gates) && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (dsq_queue_empty(&s->gates) && s->stopping)
            break;
        /* The first waiting log, and every other one that one sync can
         * cover with it: all of them with the journal (one fdatasync of
         * the journal), with group_sync those on its file system (one
         * syncfs). */
        size_t n = 0;
        dev_t dev = 0;
        dsq_gate *g;
        while (n < GROUP_MAX && (g = dsq_container_of(dsq_queue_first(&s->gates), dsq_gate, link)) != NULL) {
            if (n > 0 && !e->jnl && (!e->cfg.group_sync || dsq_wal_device(g->wal) != dev))
                break;
            dsq_queue_pop(&s->gates);
            g->queued = false;
            pthread_mutex_lock(&g->mu);
            if (g->closing || g->busy) {
                /* Closing: its owner syncs it. Busy: another syncer thread
                 * is in its fsync and takes it again when done, covering
                 * whatever was appended meanwhile in one more sync. */
                pthread_mutex_unlock(&g->mu);
                continue;
            }
            g->busy = true;
            rcs[n] = g->failed ? -1 : 0;
            pthread_mutex_unlock(&g->mu);
            dev = dsq_wal_device(g->wal);
            grp[n++] = g;
        }
        if (n == 0)
            continue;
        pthread_mutex_unlock(&s->mu);

        size_t m = 0; /* the ones to sync: not failed */
        for (size_t i = 0; i < n; i++) {
            errs[i][0] = '\0';
            if (rcs[i] == 0)
                wals[m++] = grp[i]->wal;
        }
        int mrcs[GROUP_MAX];
        uint64_t mdur[GROUP_MAX];
        static __thread char merrs[GROUP_MAX][400];
        if (m == 1) {
            mrcs[0] = dsq_wal_sync(wals[0], &mdur[0], merrs[0], sizeof merrs[0]);
            if (mrcs[0] == 0)
                atomic_fetch_add(&e->fsyncs, 1);
        } else if (m > 1) {
            dsq_wal_sync_many(wals, m, mdur, mrcs, merrs[0], sizeof merrs[0]);
            atomic_fetch_add(&e->fsyncs, 1);
        }
        for (size_t i = 0, k = 0; i < n; i++) {
            if (rcs[i] == 0) {
                rcs[i] = mrcs[k];
                durables[i] = mdur[k];
                memcpy(errs[i], merrs[k], sizeof errs[i]);
                k++;
            }
            sync_finished(e, grp[i], rcs[i], durables[i], errs[i]);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int dsq__syncer_start(dsq_engine *e, char *err, size_t errlen)
{
    dsq_syncer *s = &e->syncer;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    unsigned n = e->cfg.sync == DSQ_SYNC_OFF ? 0 : e->cfg.sync_threads;
    int rv = dsq_threads_start(&s->threads, n, syncer_main, e);
    if (rv != 0) {
        snprintf(err, errlen, rv == -ENOMEM ? "out of memory" : "cannot start a syncer thread");
        dsq__syncer_stop(e); /* the ones started */
        return -1;
    }
    return 0;
}

void dsq__syncer_stop(dsq_engine *e)
{
    dsq_syncer *s = &e->syncer;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    dsq_threads_join(&s->threads);
}

/* ---- an actor's gate --------------------------------------------------------------------- */

void dsq__gate_init(dsq_gate *g, dsq_engine *e, dsq_wal *wal, uint64_t durable, const char *name,
                    _Atomic(dsq_feed *) *feedp)
{
    memset(g, 0, sizeof *g);
    g->engine = e;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->wal = wal;
    g->durable = g->released = durable;
    g->name = name;
    g->feedp = feedp;
    g->repl = e->cfg.repl;
    if (g->repl != NULL) { /* what the hooks allow of what is durable already (a primary's log may
                              hold commits that no other copy acknowledged before a crash) */
        uint64_t r = g->repl->released(g->repl->ud, name, durable);
        g->released = r < durable ? r : durable;
    }
}

void dsq__reply(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    actor_open *o = a->open;
    if (o == NULL || e->cfg.sync == DSQ_SYNC_OFF) {
        dsq__complete(e, c);
        return;
    }
    dsq_gate *g = &o->gate;
    if (e->cfg.sync == DSQ_SYNC_NORMAL) {
        pthread_mutex_lock(&g->mu);
        bool behind = o->lsn > g->durable && !g->failed;
        pthread_mutex_unlock(&g->mu);
        dsq__complete(e, c);
        if (behind)
            enqueue(e, g);
        return;
    }
    pthread_mutex_lock(&g->mu);
    if (c->ran_as_primary && c->repl_gen != atomic_load(&a->repl_gen)) {
        /* It ran as primary, and this copy stepped down since (the
         * replies parked then failed): what it committed may be cut from
         * the log, and the LSNs it would wait for come to mean the new
         * primary's commits. (Checked under g->mu, which the step-down's
         * sweep of the parked replies takes after bumping repl_gen: a
         * reply parked before that is swept, one parked after fails here.) */
        pthread_mutex_unlock(&g->mu);
        dsq__fail(c, DSQ_CODE_NOT_PRIMARY,
                  "this node stopped being the primary of database %s while the call ran: what it committed was "
                  "not acknowledged here, and whether it survives is not known (read it back from the new primary)",
                  c->db);
        c->more = false;
        dsq__complete(e, c);
        return;
    }
    if (dsq_queue_empty(&g->parked) && o->lsn <= g->released && answering(g)) {
        pthread_mutex_unlock(&g->mu);
        dsq__complete(e, c); /* nothing of this actor's is waiting for the disk */
        return;
    }
    if (g->failed) { /* the actor restarts at its next message; this one fails */
        pthread_mutex_unlock(&g->mu);
        dsq_queue one = {0};
        dsq_queue_push(&one, &c->link);
        fail_calls(&one, g->why, g->why_errno);
        dsq__complete(e, c);
        return;
    }
    c->gate_lsn = o->lsn;
    c->parked_ms = dsq_now_ms();
    /* In LSN order: take_released stops at the first not yet durable. */
    DSQ_ASSERT(g->parked.tail == NULL ||
               dsq_container_of(g->parked.tail, dsq_call, link)->gate_lsn <= c->gate_lsn);
    dsq_queue_push(&g->parked, &c->link);
    /* A sync unless what it waits for is durable already (then it waits
     * for other copies). */
    bool sync = o->lsn > g->durable;
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&e->gated, 1);
    if (sync)
        enqueue(e, g);
}

void dsq__gate_kick(dsq_engine *e, dsq_gate *g)
{
    if (e->cfg.sync == DSQ_SYNC_OFF)
        return;
    pthread_mutex_lock(&g->mu);
    bool behind = !g->failed && dsq_wal_appended(g->wal) > g->durable;
    pthread_mutex_unlock(&g->mu);
    if (behind)
        enqueue(e, g);
}

void dsq__gate_repoll(dsq_gate *g, uint64_t now_ms, uint64_t expire_ms, bool all, dsq_code code, const char *why,
                      dsq_queue *out)
{
    *out = (dsq_queue){0};
    pthread_mutex_lock(&g->mu);
    if (g->failed || g->repl == NULL) {
        pthread_mutex_unlock(&g->mu);
        return;
    }
    if (!g->closing && !g->busy)
        g->released = release_point(g, g->durable);
    if (answering(g))
        *out = take_released(g, g->released, false);
    /* Those that waited too long for the other copies (or every one left,
     * `all`) fail, in order: the first of them is the oldest. (now_ms may
     * be older than a call parked since the caller read it.) */
    dsq_queue late = {0};
    dsq_call *c;
    /* (Abandoned: every one, durable here or not: what this copy committed
     * as primary and no quorum acknowledged must never be answered as
     * done, and the LSNs it waits for may come to mean another primary's
     * commits.) */
    bool abandon = all && why != NULL;
    while ((c = dsq_container_of(dsq_queue_first(&g->parked), dsq_call, link)) != NULL &&
           (abandon ||
            (c->gate_lsn <= g->durable && (all || (expire_ms > 0 && now_ms >= c->parked_ms + expire_ms)))))
        dsq_queue_push(&late, dsq_queue_pop(&g->parked));
    dsq_feed *feed = g->feedp ? atomic_load(g->feedp) : NULL;
    uint64_t told = g->released;
    struct dsq_engine *e = g->engine;
    pthread_mutex_unlock(&g->mu);
    if (!dsq_queue_empty(&late) && why != NULL) {
        fail_each(&late, code, why);
    } else if (!dsq_queue_empty(&late)) {
        fail_unreplicated(&late, all ? "the server is stopping" : "cluster.commit_timeout passed");
    }
    if (!dsq_queue_empty(&late)) {
        dsq_qnode *n;
        while ((n = dsq_queue_pop(&late)) != NULL)
            dsq_queue_push(out, n);
    }
    dsq_feed_durable(&e->feeds, feed, told);
}

typedef struct tail_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, ok;
    char why[256];
} tail_wait;

static void tail_waited(void *ud, bool ok, uint64_t upto, const char *why)
{
    tail_wait *tw = ud;
    pthread_mutex_lock(&tw->mu);
    tw->done = true;
    tw->ok = ok;
    snprintf(tw->why, sizeof tw->why, "%s", why);
    pthread_cond_signal(&tw->cv);
    pthread_mutex_unlock(&tw->mu);
}

int dsq__gate_close(dsq_engine *e, dsq_gate *g)
{
    /* The syncer must be done with it, and never take it again. */
    pthread_mutex_lock(&g->mu);
    g->closing = true;
    while (g->busy)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    unqueue(e, g);
    /* Whatever is appended becomes durable now, on this thread, and the
     * replies waiting for it go. */
    int rc = 0;
    char err[400] = "";
    uint64_t durable = g->durable;
    if (!g->failed && e->cfg.sync != DSQ_SYNC_OFF && dsq_wal_appended(g->wal) > g->durable) {
        rc = dsq_wal_sync(g->wal, &durable, err, sizeof err);
        if (rc != 0) {
            g->failed = true;
            g->why_errno = -rc;
            snprintf(g->why, sizeof g->why, "%s", err);
            DSQ_ERROR("log_sync_failed", "db=%s reason=%s", g->name, dsq_log_q(err));
        }
    }
    /* With sync_to_object_store = commit, what became durable goes to the
     * object store before the replies do. */
    tail_wait tw = {.done = false};
    if (!g->failed && tail_mode(e) && durable > g->released) {
        pthread_mutex_init(&tw.mu, NULL);
        pthread_cond_init(&tw.cv, NULL);
        dsq_tier_tail(e->tier, g->name, g->wal, g->released, durable, tail_waited, &tw);
        pthread_mutex_lock(&tw.mu);
        while (!tw.done)
            pthread_cond_wait(&tw.cv, &tw.mu);
        pthread_mutex_unlock(&tw.mu);
        pthread_cond_destroy(&tw.cv);
        pthread_mutex_destroy(&tw.mu);
    }
    pthread_mutex_lock(&g->mu);
    dsq_queue out, late = {0};
    if (g->failed) {
        out = take_released(g, durable, true);
        fail_calls(&out, g->why, g->why_errno);
    } else if (g->repl != NULL) {
        /* Replies go as far as the other copies acknowledged; the rest fail
         * (the database closes: nothing would let them go). */
        g->durable = durable;
        g->released = release_point(g, durable);
        out = answering(g) ? take_released(g, g->released, false) : (dsq_queue){0};
        late = take_released(g, 0, true);
        fail_unreplicated(&late, "the database closed first");
    } else {
        out = take_released(g, durable, true);
        g->durable = durable;
        if (tw.done && !tw.ok)
            fail_tail(&out, tw.why);
        else
            g->released = durable;
    }
    bool ok = !g->failed;
    uint64_t told = g->released;
    pthread_mutex_unlock(&g->mu);
    dsq__complete_all(e, &out);
    dsq__complete_all(e, &late);
    if (ok && g->feedp)
        dsq_feed_durable(&e->feeds, atomic_load(g->feedp), told);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    return g->failed ? -1 : rc;
}

bool dsq__gate_failed(dsq_gate *g)
{
    pthread_mutex_lock(&g->mu);
    bool f = g->failed;
    pthread_mutex_unlock(&g->mu);
    return f;
}
