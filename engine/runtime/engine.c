/* engine — the public face: the registry of actors, the LRU of open ones,
 * submission, completions, housekeeping, shutdown.
 *
 * Divisions: the registry (a hash of names, loop thread only); the LRU and
 * hibernation; submitting; completions; the tick; sessions and streams;
 * start and stop.
 *
 * Life of an actor (the loop's view; the worker's `open` follows it):
 *
 *   (absent) ──first call──► open ──idle_timeout or LRU──► hibernated
 *                             ▲   (HIBERNATE: connection closed,  │
 *                             └───────── next call ───────────────┘
 *
 * Only actors with no call in flight and no transaction or stream are
 * hibernated, so a hibernation never races a caller. A hibernated actor is
 * its name, a mutex and a few counters. */
#include <ctype.h>
#include <errno.h>
#include <malloc.h> /* malloc_trim */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/runtime/engine_int.h"
#include "engine/storage/journal.h"

#define SYSTEM_ACTOR ".system" /* not a valid database name: never collides */

/* ---- the registry -------------------------------------------------------------------- */

static dsq_actor *lookup(dsq_engine *e, const char *name, bool create);

dsq_actor *dsq__actor_get(dsq_engine *e, const char *name) { return lookup(e, name, true); }

/* Actors live until the engine ends: they are carved from 256 KiB
 * blocks of their own (malloc serves those from mmap), not from the heap
 * the databases' connections use. Interleaved there, each small actor kept
 * a page of freed connection memory from going back to the system: about
 * 2.7 KB of resident memory per hibernated database instead of its size. */
struct actor_slab {
    struct actor_slab *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

static void *actor_alloc(dsq_engine *e, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct actor_slab *s = e->slabs;
    if (s == NULL || s->cap - s->used < n) {
        size_t cap = n > (256u << 10) ? n : 256u << 10;
        if ((s = calloc(1, sizeof *s + cap)) == NULL)
            return NULL;
        s->cap = cap;
        s->next = e->slabs;
        e->slabs = s;
    }
    void *p = s->mem + s->used;
    s->used += n;
    return p; /* zeroed: calloc'd and never reused */
}

static dsq_actor *lookup(dsq_engine *e, const char *name, bool create)
{
    dsq_actor *a = dsq_container_of(dsq_htab_find(&e->actors, name), dsq_actor, hlink);
    if (a != NULL || !create)
        return a;
    size_t len = strlen(name);
    a = actor_alloc(e, sizeof *a + len + 1);
    if (a == NULL)
        return NULL;
    memcpy(a->name, name, len + 1);
    pthread_mutex_init(&a->mu, NULL);
    (void)dsq_htab_add(&e->actors, &a->hlink, a->name); /* (its buckets were reserved at the start) */
    if (strcmp(name, SYSTEM_ACTOR) != 0) /* counted as a database */
        atomic_fetch_add(&e->nactors, 1);
    return a;
}

/* ---- the LRU and hibernation ---------------------------------------------------------- */

static bool held(dsq_actor *a)
{
    pthread_mutex_lock(&a->mu);
    bool h = a->txn[0] != '\0' || a->stream_id != 0 || a->nmail > 0 || a->cold_wait || a->nsnaps > 0 ||
             a->nsstreams > 0;
    pthread_mutex_unlock(&a->mu);
    return h;
}

/* Post an engine message (freed by dsq_engine_poll). */
static int post_internal(dsq_engine *e, dsq_actor *a, int op, const char *txn, uint64_t session,
                         uint64_t stream_id)
{
    dsq_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->op = (dsq_op)op;
    c->actor = a;
    c->session = session;
    c->stream_id = stream_id;
    if (txn)
        dsq_strlcpy(c->txn, txn, sizeof c->txn);
    if (dsq__actor_post(e, a, c, false) != 0) {
        free(c);
        return -1;
    }
    a->inflight++;
    e->inflight++;
    return 0;
}

static void hibernate(dsq_engine *e, dsq_actor *a)
{
    if (post_internal(e, a, DSQ__OP_HIBERNATE, NULL, 0, 0) != 0)
        return;
    a->open_intent = false;
    dsq_list_remove(&e->lru, &a->lru);
    atomic_fetch_sub(&e->nopen, 1);
}

/* Bring the open count under max_open_actors by hibernating the least
 * recently used actors that are free; `keep` is never chosen. When none is
 * free the limit is exceeded for now and the tick tries again. */
static void evict(dsq_engine *e, dsq_actor *keep)
{
    dsq_actor *a, *next;
    dsq_list_foreach_safe(a, next, &e->lru, lru) {
        if (atomic_load(&e->nopen) <= e->cfg.max_open_actors)
            break;
        if (a != keep && a->inflight == 0 && !held(a))
            hibernate(e, a);
    }
}

/* ---- submitting ------------------------------------------------------------------------ */

static int submit_to(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    c->err = 0;
    c->msg[0] = '\0';
    c->state = DSQ__CALL_NEW;
    c->cold_retry = false;
    c->cold_how = 0;
    c->resume_stmt = c->resume_off = 0;
    c->more = false;
    c->actor = a;
    dsq_strlcpy(c->db, a->name, sizeof c->db);
    if (!a->open_intent && strcmp(a->name, SYSTEM_ACTOR) != 0) {
        a->open_intent = true;
        dsq_list_push(&e->lru, &a->lru);
        atomic_fetch_add(&e->nopen, 1);
        evict(e, a);
    } else if (a->open_intent) {
        dsq_list_remove(&e->lru, &a->lru);
        dsq_list_push(&e->lru, &a->lru);
    }
    a->last_used_ms = dsq_now_ms();
    if (dsq__actor_post(e, a, c, false) != 0) {
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "database %s has %zu calls waiting (max_queue); try again later",
                 a->name, e->cfg.max_queue);
        return -1;
    }
    a->inflight++;
    e->inflight++;
    return 0;
}

int dsq_engine_submit(dsq_engine *e, const char *db, dsq_call *c)
{
    if (e->stopping) {
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "the server is shutting down");
        return -1;
    }
    if (!dsq_db_name_valid(db)) {
        c->err = -1;
        c->code = DSQ_CODE_INVALID_REQUEST;
        snprintf(c->msg, sizeof c->msg, "invalid database name");
        return -1;
    }
    dsq_actor *a = lookup(e, db, true);
    if (a == NULL) {
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return -1;
    }
    return submit_to(e, a, c);
}

int dsq_engine_submit_system(dsq_engine *e, dsq_call *c)
{
    if (e->stopping) {
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "the server is shutting down");
        return -1;
    }
    dsq_actor *a = lookup(e, SYSTEM_ACTOR, true);
    if (a == NULL) {
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return -1;
    }
    return submit_to(e, a, c);
}

/* ---- completions ------------------------------------------------------------------------- */

void dsq_engine_kick(dsq_engine *e) { dsq__pool_kick(e); }

void dsq_engine_poll(dsq_engine *e)
{
    dsq_engine_poll_calls(e);
    dsq_engine_feed_poll(e);
}

void dsq_engine_feed_poll(dsq_engine *e)
{
    dsq_feed_poll(&e->feeds);
    dsq__pool_kick(e); /* for calls the subscribers submitted (log reads) */
}

/* ---- errors to clients ------------------------------------------------------------------- */

/* Whether msg names a file under dir: dir, at the start or after a
 * character that cannot be part of a name, followed by '/'. */
static bool names_file_in(const char *msg, const char *dir)
{
    size_t n = dir ? strlen(dir) : 0;
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n < 2)
        return false;
    for (const char *p = msg; (p = strstr(p, dir)) != NULL; p++) {
        bool start = p == msg || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '-' || p[-1] == '.');
        if (start && p[n] == '/')
            return true;
    }
    return false;
}

/* A failed call's message is about to reach a client, which must not
 * learn where the server keeps its files: the engine's messages name
 * them for the log. A message naming a file under the data directory is
 * logged here whole and replaced by a generic one (the code stays); one
 * saying the process ran out of descriptors becomes RESOURCE_EXHAUSTED
 * (503), a condition that passes, not an internal error. Loop thread. */
static void withhold_paths(dsq_engine *e, dsq_call *c)
{
    if (c->err == 0 || c->msg[0] == '\0')
        return;
    bool emfile = strstr(c->msg, strerror(EMFILE)) != NULL; /* ENFILE's text starts with it */
    bool path = names_file_in(c->msg, e->data_dir) || names_file_in(c->msg, e->data_dir_real);
    if (!emfile && !path)
        return;
    DSQ_WARN("error_detail_withheld", "db=%s code=%s reason=%s", c->db, dsq_code_name(c->code), dsq_log_q(c->msg));
    if (emfile) {
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "too many open files on the server; try again later");
    } else {
        snprintf(c->msg, sizeof c->msg, "a storage error on the server (its log has the details)");
    }
}

void dsq_engine_poll_calls(dsq_engine *e)
{
    dsq__pool_kick(e);
    pthread_mutex_lock(&e->cmu);
    dsq_queue list = dsq_queue_take(&e->done);
    pthread_mutex_unlock(&e->cmu);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&list)) != NULL) {
        dsq_call *c = dsq_container_of(n, dsq_call, link);
        dsq_actor *a = c->actor;
        bool last = !(c->op == DSQ_OP_STREAM && c->more);
        if (last) {
            a->inflight--;
            e->inflight--;
            atomic_fetch_add(&e->calls, 1);
        }
        if (op_of(c) >= DSQ__OP_HIBERNATE) {
            if (op_of(c) == DSQ__OP_TXN_EXPIRE || op_of(c) == DSQ__OP_STREAM_END)
                a->expire_sent = false;
            free(c);
            continue;
        }
        if (c->op == DSQ_OP_DROP && c->err == 0 && a->inflight == 0 && a->open_intent) {
            /* Dropped and nothing queued behind: no longer open. */
            a->open_intent = false;
            dsq_list_remove(&e->lru, &a->lru);
            atomic_fetch_sub(&e->nopen, 1);
        }
        withhold_paths(e, c);
        if (e->stopping && c->op == DSQ_OP_BEGIN && c->err == 0 && !c->read_only && c->txn_out[0])
            /* Stopping: a transaction a queued beginTransaction opened is
             * rolled back too (what is queued behind it would wait for it
             * for ever, and so would dsq_engine_free). */
            post_internal(e, a, DSQ__OP_TXN_EXPIRE, c->txn_out, (uint64_t)-1, 0);
        if (c->done)
            c->done(c);
    }
    dsq__pool_kick(e); /* for calls the done hooks submitted */
}

/* ---- replication -------------------------------------------------------------------------- */

/* Replies at a's gate that wait for other copies: let go of what the
 * hooks allow now; fail those parked longer than expire_ms (0: none), or
 * with `all` every one. Loop thread. */
static void repoll(dsq_engine *e, dsq_actor *a, uint64_t now, uint64_t expire_ms, bool all, dsq_code code,
                   const char *why)
{
    dsq_queue out = {0};
    pthread_mutex_lock(&a->mu);
    dsq_gate *g = a->gate_live;
    if (g != NULL)
        dsq__gate_repoll(g, now, expire_ms, all, code, why, &out);
    pthread_mutex_unlock(&a->mu);
    dsq__complete_all(e, &out);
}

void dsq_engine_repl_poke(dsq_engine *e, const char *db)
{
    dsq_actor *a = e->cfg.repl != NULL ? lookup(e, db, false) : NULL;
    if (a != NULL)
        repoll(e, a, 0, 0, false, DSQ_CODE_TIMEOUT, NULL);
}

void dsq_engine_repl_abandon(dsq_engine *e, const char *db, dsq_code code, const char *msg)
{
    dsq_actor *a = e->cfg.repl != NULL ? lookup(e, db, false) : NULL;
    if (a == NULL)
        return;
    /* Before the parked replies are failed: a call a worker runs as
     * primary now parks its reply after this, and fails then (dsq__reply). */
    atomic_fetch_add(&a->repl_gen, 1);
    repoll(e, a, 0, 0, true, code, msg);
}

/* ---- the tick ------------------------------------------------------------------------------ */

void dsq_engine_tick(dsq_engine *e)
{
    uint64_t now = dsq_now_ms();
    dsq_actor *a, *next;
    dsq_list_foreach_safe(a, next, &e->lru, lru) {
        pthread_mutex_lock(&a->mu);
        bool txn_late = a->txn[0] != '\0' && now >= a->txn_deadline_ms;
        bool stream_late = a->stream_id != 0 && now >= a->stream_deadline_ms;
        bool idle = a->txn[0] == '\0' && a->stream_id == 0 && a->nmail == 0 && a->nsnaps == 0 &&
                    a->nsstreams == 0;
        char txn[33];
        memcpy(txn, a->txn, sizeof txn);
        for (size_t i = 0; !txn_late && i < a->nsnaps; i++) {
            if (now >= a->snaps[i].deadline_ms) { /* a read-only transaction idle too long */
                txn_late = true;
                memcpy(txn, a->snaps[i].id, sizeof txn);
            }
        }
        uint64_t stream_id = a->stream_id;
        for (size_t i = 0; !stream_late && i < a->nsstreams; i++) {
            if (now >= a->sstreams[i].deadline_ms) { /* a snapshot stream idle too long */
                stream_late = true;
                stream_id = a->sstreams[i].id;
            }
        }
        /* (also reads waiting for this copy to reach their LSN) */
        bool writers = a->nmail > 0;
        pthread_mutex_unlock(&a->mu);
        if (writers)
            dsq__actor_expire_writers(e, a, now);
        if ((txn_late || stream_late) && !a->expire_sent) {
            /* A stream inside the transaction ends with it. */
            if (txn_late && post_internal(e, a, DSQ__OP_TXN_EXPIRE, txn, 0, 0) == 0)
                a->expire_sent = true;
            else if (stream_late && post_internal(e, a, DSQ__OP_STREAM_END, NULL, 0, stream_id) == 0)
                a->expire_sent = true;
            continue;
        }
        if (e->cfg.repl != NULL)
            repoll(e, a, now, e->cfg.repl_timeout_ms, false, DSQ_CODE_TIMEOUT, NULL);
        if (idle && a->inflight == 0 && now - a->last_used_ms >= e->cfg.idle_timeout_ms)
            hibernate(e, a);
    }
    evict(e, NULL);
    /* Memory of closed databases back to the system, on a worker. */
    if (atomic_load(&e->closes) - atomic_load(&e->trimmed_at_closes) >= 64 &&
        now - atomic_load(&e->trimmed_ms) >= 2000 && !atomic_load(&e->trim_posted)) {
        dsq_actor *sys = lookup(e, SYSTEM_ACTOR, true);
        atomic_store(&e->trim_posted, true);
        if (sys == NULL || post_internal(e, sys, DSQ__OP_HEAP_TRIM, NULL, 0, 0) != 0)
            atomic_store(&e->trim_posted, false);
    }
    dsq__pool_kick(e); /* for what the tick posted */
}

void dsq__heap_trim(dsq_engine *e)
{
    uint64_t closes = atomic_load(&e->closes), at = atomic_load(&e->trimmed_at_closes);
    uint64_t t0 = dsq_now_ns();
    malloc_trim(0);
    DSQ_DEBUG("heap_trimmed", "closes=%llu ms=%.2f", (unsigned long long)(closes - at),
              (double)(dsq_now_ns() - t0) / 1e6);
    atomic_store(&e->trimmed_at_closes, closes);
    atomic_store(&e->trimmed_ms, dsq_now_ms());
    atomic_store(&e->trim_posted, false);
}

/* ---- sessions and streams ------------------------------------------------------------------ */

void dsq_engine_cancel(dsq_engine *e, dsq_call *c)
{
    if (!dsq__cancellable(c) || c->actor == NULL)
        return;
    atomic_store(&c->cancelled, true);
    dsq__actor_cancel(e, c->actor, c);
    dsq__pool_kick(e);
}

void dsq_engine_session_closed(dsq_engine *e, uint64_t session)
{
    if (session == 0)
        return;
    dsq_actor *a, *next;
    dsq_list_foreach_safe(a, next, &e->lru, lru) {
        pthread_mutex_lock(&a->mu);
        bool txn = a->txn[0] != '\0' && a->txn_session == session;
        bool stream = a->stream_id != 0 && a->stream_session == session;
        char id[33];
        memcpy(id, a->txn, sizeof id);
        uint64_t stream_id = a->stream_id;
        size_t nro = 0; /* its read-only transactions */
        char (*ro)[33] = NULL;
        for (size_t i = 0; i < a->nsnaps; i++)
            nro += a->snaps[i].session == session;
        if (nro > 0 && (ro = malloc(nro * sizeof *ro)) != NULL) {
            size_t k = 0;
            for (size_t i = 0; i < a->nsnaps; i++)
                if (a->snaps[i].session == session)
                    memcpy(ro[k++], a->snaps[i].id, sizeof ro[0]);
        }
        size_t nss = 0; /* its snapshot streams */
        uint64_t *ss = NULL;
        for (size_t i = 0; i < a->nsstreams; i++)
            nss += a->sstreams[i].session == session;
        if (nss > 0 && (ss = malloc(nss * sizeof *ss)) != NULL) {
            size_t k = 0;
            for (size_t i = 0; i < a->nsstreams; i++)
                if (a->sstreams[i].session == session)
                    ss[k++] = a->sstreams[i].id;
        }
        pthread_mutex_unlock(&a->mu);
        if (stream)
            post_internal(e, a, DSQ__OP_STREAM_END, NULL, session, stream_id);
        for (size_t i = 0; ss != NULL && i < nss; i++) /* (out of memory: they end when idle) */
            post_internal(e, a, DSQ__OP_STREAM_END, NULL, session, ss[i]);
        free(ss);
        if (txn)
            post_internal(e, a, DSQ__OP_TXN_EXPIRE, id, session, 0);
        for (size_t i = 0; ro != NULL && i < nro; i++) /* (out of memory: they expire when idle) */
            post_internal(e, a, DSQ__OP_TXN_EXPIRE, ro[i], session, 0);
        free(ro);
    }
    dsq__pool_kick(e);
}

void dsq_engine_stream_more(dsq_engine *e, dsq_call *c, bool cancel)
{
    dsq_actor *a = c->actor;
    c->state = cancel ? DSQ__CALL_STREAM_CANCEL : DSQ__CALL_STREAM_MORE;
    c->err = 0;
    c->msg[0] = '\0';
    a->last_used_ms = dsq_now_ms();
    if (dsq__actor_post(e, a, c, false) != 0) {
        /* Shut down under it: finish the stream here. */
        c->err = -1;
        c->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "the server is shutting down");
        c->more = false;
        dsq__complete(e, c);
    }
}

/* ---- change data capture: the engine's face of the feeds (engine/cdc/feed.h) ---- */

dsq_feed_sub *dsq_engine_feed_subscribe(dsq_engine *e, const char *db, dsq_feed_fn fn, void *ud)
{
    dsq_actor *a = dsq__actor_get(e, db);
    return a ? dsq_feed_subscribe(&e->feeds, &a->feed, fn, ud) : NULL;
}

void dsq_engine_feed_unsubscribe(dsq_engine *e, dsq_feed_sub *s) { dsq_feed_unsubscribe(&e->feeds, s); }

bool dsq_engine_busy(dsq_engine *e) { return dsq_feeds_busy(&e->feeds); }

bool dsq_engine_feed_pending(dsq_engine *e) { return dsq_feeds_pending(&e->feeds); }

int64_t dsq_engine_feed_due_ms(dsq_engine *e) { return dsq_feeds_due_ms(&e->feeds); }

/* ---- statistics ------------------------------------------------------------------------------ */

void dsq_engine_stats_get(dsq_engine *e, dsq_engine_stats *out)
{
    size_t actors = atomic_load(&e->nactors);
    size_t open = atomic_load(&e->nopen_real);
    out->actors = actors;
    out->actors_open = open;
    out->actors_hibernated = out->actors > open ? out->actors - open : 0;
    out->queued = atomic_load(&e->queued);
    out->calls = atomic_load(&e->calls);
    out->txns_open = atomic_load(&e->txns_open);
    out->fsyncs = atomic_load(&e->fsyncs);
    out->gated = atomic_load(&e->gated);
    out->idem_replays = atomic_load(&e->idem_replays);
    out->subscriptions = atomic_load(&e->feeds.subscriptions);
    out->cdc_coalesced = atomic_load(&e->feeds.held);
    out->tier = e->tier != NULL;
    if (e->tier)
        dsq_tier_counts_get(e->tier, &out->tier_counts);
    dsq_evict_counts_get(e->evict, &out->evict_counts);
    dsq_warm_counts_get(e->warm, &out->warm_counts);
    out->journal = e->jnl != NULL;
    if (e->jnl != NULL) {
        dsq_jnl_stats js;
        dsq_jnl_stats_get(e->jnl, &js);
        out->journal_syncs = js.syncs;
        out->journal_flushes = js.flushes;
        out->journal_bytes = js.bytes;
        out->journal_files = js.files;
        out->journal_live = js.live;
        out->journal_held = js.held;
        out->journal_bulk_syncs = js.bulk_syncs;
        out->journal_zeroed = js.zeroed;
        out->journal_zero_waits = js.zero_waits;
    }
}

/* ---- start and stop ---------------------------------------------------------------------------- */

/* With replication: whether this node holds a copy of db (a database the
 * object store has, restored at start only where a copy belongs). */
static bool holds_copy(void *ud, const char *db)
{
    const dsq_repl_hooks *h = ((dsq_engine *)ud)->cfg.repl;
    char primary[32];
    return h->role(h->ud, db, primary, sizeof primary) != DSQ_ROLE_ELSEWHERE;
}

/* The first setting the caller left at 0 that must not be (the engine has
 * no defaults of its own: dsq_config_engine gives the configuration's),
 * or NULL. */
static const char *missing_setting(const dsq_engine_cfg *c)
{
    if (c->data_dir == NULL)
        return "data_dir";
    if (c->max_open_actors == 0)
        return "max_open_actors";
    if (c->max_queue == 0)
        return "max_queue";
    if (c->batch_per_turn == 0)
        return "batch_per_turn";
    if (c->write_wait_ms == 0)
        return "write_wait_ms";
    if (c->max_snapshots == 0)
        return "max_snapshots";
    if (c->page_size == 0)
        return "page_size";
    if (c->segment_bytes == 0)
        return "segment_bytes";
    if (c->max_txn_bytes == 0)
        return "max_txn_bytes";
    if (c->checkpoint_bytes == 0)
        return "checkpoint_bytes";
    if (c->max_open_files == 0)
        return "max_open_files";
    if (c->sync != DSQ_SYNC_OFF && c->sync_threads == 0)
        return "sync_threads";
    if (c->journal && c->journal_bytes == 0)
        return "journal_bytes";
    if (c->cdc_buffer_bytes == 0)
        return "cdc_buffer_bytes";
    if (c->objects != NULL && c->tier_chunk_bytes == 0)
        return "tier_chunk_bytes";
    if (c->objects != NULL && c->tier_interval_ms == 0)
        return "tier_interval_ms";
    if (c->objects != NULL && c->tier_drain_ms == 0)
        return "tier_drain_ms";
    if (c->objects != NULL && c->warm_cache_bytes == 0)
        return "warm_cache_bytes";
    if (c->repl != NULL && c->repl_timeout_ms == 0)
        return "repl_timeout_ms";
    return NULL;
}

dsq_engine *dsq_engine_new(const dsq_engine_cfg *cfg, char *err, size_t errlen)
{
    /* Page caches start empty and grow a page at a time: SQLite's
     * default (SQLITE_DEFAULT_PCACHE_INITSZ, 20 pages allocated at a
     * cache's first use) cost every open database about 80 KiB however
     * small it is. Only possible before SQLite initializes (the first
     * engine of a process); MISUSE after is harmless. */
    sqlite3_config(SQLITE_CONFIG_PAGECACHE, (void *)0, 0, 0);
    const char *missing = missing_setting(cfg);
    if (missing != NULL) {
        snprintf(err, errlen, "the engine's setting %s is not set", missing);
        return NULL;
    }
    if (cfg->repl != NULL && cfg->tier_commit) {
        snprintf(err, errlen, "replication and sync_to_object_store = commit do not go together");
        return NULL;
    }
    dsq_engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->cfg = *cfg;
    /* Before anything reads or writes the directory (the journal's
     * replay first): another process with it open would have its logs
     * rewritten under it, and two writers give two histories of one LSN. */
    if ((e->lock_fd = dsq_engine_lock_dir(cfg->data_dir, err, errlen)) < 0) {
        free(e);
        return NULL;
    }
    /* The CPUs this process may run on (taskset, cgroups' cpusets and CPU
     * quotas), not every CPU online. */
    e->ncpu = dsq_usable_cpus();
    if (e->cfg.workers == 0) {
        e->cfg.workers = e->ncpu;
    }
    e->data_dir = strdup(cfg->data_dir);
    if (e->data_dir == NULL || dsq_htab_reserve(&e->actors, 1024) != 0) {
        snprintf(err, errlen, "out of memory");
        free(e->data_dir);
        dsq_htab_free(&e->actors);
        dsq_engine_unlock_dir(e->lock_fd);
        free(e);
        return NULL;
    }
    pthread_mutex_init(&e->cmu, NULL);
    pthread_mutex_init(&e->holds_mu, NULL);
    pthread_cond_init(&e->ccv, NULL);
    dsq_feeds_init(&e->feeds);
    e->feeds.buffer_bytes = e->cfg.cdc_buffer_bytes;
    e->feeds.coalesce_ms = e->cfg.cdc_coalesce_ms;
    e->feeds.coalesce_cpu = e->cfg.cdc_coalesce_cpu;
    e->feeds.slice_ns = e->cfg.cdc_slice_ns;
    e->feeds.ncpu = e->ncpu;
    e->feeds.wake = e->cfg.wake;
    e->feeds.wake_arg = e->cfg.wake_arg;
    if (sqlite3_threadsafe() == 0) {
        snprintf(err, errlen, "this SQLite was built without thread support");
        goto fail;
    }
    if (dsq__store_init(e->data_dir, err, errlen) != 0 || dsq__store_journal_start(e, err, errlen) != 0 ||
        (e->cfg.objects == NULL && dsq__store_sweep_dropped(e, err, errlen) != 0))
        goto fail;
    e->data_dir_real = realpath(e->data_dir, NULL); /* for withhold_paths; NULL: the name as given only */
    if (e->cfg.objects != NULL) {
        /* Databases the store has and this node has not come back first;
         * each database's files go up as it opens, commits and closes. */
        dsq_tier_cfg tc = {.obj = e->cfg.objects,
                           .data_dir = e->data_dir,
                           .chunk_bytes = e->cfg.tier_chunk_bytes,
                           .tails = e->cfg.tier_commit,
                           .segment_bytes = e->cfg.segment_bytes,
                           .holds = e->cfg.repl != NULL ? holds_copy : NULL,
                           .holds_ud = e};
        if ((e->tier = dsq_tier_start(&tc, err, errlen)) == NULL || dsq__store_sweep_dropped(e, err, errlen) != 0)
            goto fail;
        long n = dsq_tier_restore_missing(e->tier, err, errlen);
        if (n == -2) {
            /* Unreachable: the local databases are served meanwhile; the
             * ones only the store has come back once it answers. */
            DSQ_WARN("object_store_unreachable", "reason=%s", dsq_log_q(err));
            if (dsq_tier_catch_up(e->tier, err, errlen) != 0)
                goto fail;
        } else if (n < 0) {
            goto fail;
        }
        if (n > 0)
            DSQ_INFO("databases_restored", "count=%ld", n);
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/warm", e->data_dir);
        if ((e->warm = dsq_warm_open(e->cfg.objects, dir, e->cfg.warm_cache_bytes,
                                     e->cfg.cold_read_timeout_ms, err, errlen)) == NULL)
            goto fail;
        e->cold_src = dsq_warm_source(e->warm);
        dsq_evict_cfg vc = {.tier = e->tier,
                            .data_dir = e->data_dir,
                            .max_bytes = e->cfg.hot_tier_max_bytes,
                            .max_age_ms = e->cfg.hot_tier_max_age_ms};
        if ((e->evict = dsq_evict_start(&vc, err, errlen)) == NULL)
            goto fail;
    }
    if (dsq__syncer_start(e, err, errlen) != 0)
        goto fail;
    if (dsq__pool_start(e, e->cfg.workers, err, errlen) != 0) {
        dsq__syncer_stop(e);
        goto fail;
    }
    return e;
fail:
    dsq_evict_stop(e->evict);
    dsq_warm_close(e->warm);
    dsq_tier_stop(e->tier);
    dsq_jnl_close(e->jnl);
    pthread_cond_destroy(&e->ccv);
    dsq_feeds_destroy(&e->feeds);
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->holds_mu);
    free(e->holds);
    dsq_htab_free(&e->actors);
    free(e->data_dir);
    free(e->data_dir_real);
    dsq_engine_unlock_dir(e->lock_fd);
    free(e);
    return NULL;
}

/* Wait for every call in flight, running their done hooks. */
static void wait_idle(dsq_engine *e)
{
    dsq__pool_kick(e);
    while (e->inflight > 0) {
        pthread_mutex_lock(&e->cmu);
        while (dsq_queue_empty(&e->done)) {
            if (e->cfg.repl == NULL)
                pthread_cond_wait(&e->ccv, &e->cmu);
            else if (dsq_cond_wait_ms(&e->ccv, &e->cmu, 20) != 0)
                break;
        }
        pthread_mutex_unlock(&e->cmu);
        /* Stopping, the loop no longer runs: no other copy's acknowledgement
         * comes. Replies that wait for one fail (the commit is durable here). */
        dsq_actor *a, *next;
        if (e->cfg.repl != NULL)
            dsq_list_foreach_safe(a, next, &e->lru, lru) repoll(e, a, 0, 0, true, DSQ_CODE_TIMEOUT, NULL);
        dsq_engine_poll(e);
    }
}

void dsq_engine_free(dsq_engine *e)
{
    if (e == NULL)
        return;
    e->stopping = true;
    /* End the holds so that every waiting call can run; then let the
     * mailboxes drain; then close every database. */
    dsq_htab_iter it = {0};
    for (dsq_hnode *n; (n = dsq_htab_next(&e->actors, &it)) != NULL;) {
        dsq_actor *a = dsq_container_of(n, dsq_actor, hlink);
        pthread_mutex_lock(&a->mu);
        char txn[33];
        memcpy(txn, a->txn, sizeof txn);
        uint64_t stream_id = a->stream_id;
        pthread_mutex_unlock(&a->mu);
        if (stream_id)
            post_internal(e, a, DSQ__OP_STREAM_END, NULL, 0, stream_id);
        if (txn[0])
            post_internal(e, a, DSQ__OP_TXN_EXPIRE, txn, (uint64_t)-1, 0);
    }
    wait_idle(e); /* (a transaction a queued call opens meanwhile: dsq_engine_poll_calls) */
    it = (dsq_htab_iter){0};
    for (dsq_hnode *n; (n = dsq_htab_next(&e->actors, &it)) != NULL;)
        post_internal(e, dsq_container_of(n, dsq_actor, hlink), DSQ__OP_SHUTDOWN, NULL, 0, 0);
    wait_idle(e);
    dsq__pool_stop(e);
    dsq__syncer_stop(e);
    dsq_engine_poll(e);
    it = (dsq_htab_iter){0};
    for (dsq_hnode *n; (n = dsq_htab_next(&e->actors, &it)) != NULL;) {
        dsq_actor *a = dsq_container_of(n, dsq_actor, hlink); /* (its memory is the slabs') */
        if (a->open) /* cannot happen after SHUTDOWN; be safe */
            dsq__actor_close(a);
        pthread_mutex_destroy(&a->mu);
        dsq_feed_free(atomic_load(&a->feed));
        free(a->pins);
        free(a->snaps);
        free(a->sstreams);
    }
    while (e->slabs) {
        struct actor_slab *s = e->slabs;
        e->slabs = s->next;
        free(s);
    }
    dsq_jnl_close(e->jnl); /* every log is closed: the journal flushes and ends */
    dsq_evict_stop(e->evict);
    dsq_warm_close(e->warm); /* no call waits for it any more */
    if (e->tier) {
        /* Every database closed and offered itself whole: up it goes,
         * within tier_drain_ms. */
        size_t left = dsq_tier_drain(e->tier, e->cfg.tier_drain_ms);
        if (left > 0)
            DSQ_WARN("uploads_unfinished", "databases=%zu reason=%s", left,
                     dsq_log_q("the object store did not take them in time; they go up at the next start"));
        dsq_tier_stop(e->tier);
    }
    pthread_cond_destroy(&e->ccv);
    dsq_feeds_destroy(&e->feeds);
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->holds_mu);
    free(e->holds);
    dsq_htab_free(&e->actors);
    free(e->data_dir);
    free(e->data_dir_real);
    dsq_engine_unlock_dir(e->lock_fd); /* last: nothing of ours touches the directory any more */
    free(e);
}

/* ---- log holds ------------------------------------------------------------------------------- */

int dsq_engine_hold_log(dsq_engine *e, const char *db, uint64_t after)
{
    pthread_mutex_lock(&e->holds_mu);
    size_t i = 0;
    while (i < e->nholds && strcmp(e->holds[i].name, db) != 0)
        i++;
    int rc = 0;
    if (after == UINT64_MAX) {
        if (i < e->nholds)
            e->holds[i] = e->holds[--e->nholds];
    } else if (i < e->nholds) {
        e->holds[i].after = after;
    } else {
        void *grown = realloc(e->holds, (e->nholds + 1) * sizeof *e->holds);
        if (grown == NULL) {
            rc = -1;
        } else {
            e->holds = grown;
            snprintf(e->holds[e->nholds].name, sizeof e->holds[e->nholds].name, "%s", db);
            e->holds[e->nholds++].after = after;
        }
    }
    pthread_mutex_unlock(&e->holds_mu);
    return rc;
}

uint64_t dsq__held_after(void *ud, const char *db)
{
    dsq_engine *e = ud;
    uint64_t after = UINT64_MAX;
    pthread_mutex_lock(&e->holds_mu);
    for (size_t i = 0; i < e->nholds; i++)
        if (strcmp(e->holds[i].name, db) == 0)
            after = e->holds[i].after;
    pthread_mutex_unlock(&e->holds_mu);
    return after;
}
