/* engine_int — private to engine/: actors, the worker pool, the store.
 *
 * Who touches what:
 *   loop thread  the registry (hash, LRU), each actor's `inflight`,
 *                `open_intent` and `last_used_ms`, the completion drain.
 *                `open_intent` is the loop's count of open databases (for
 *                max_open_actors), not the actor's life: it is set when a
 *                call is submitted and cleared when a hibernation is sent,
 *                ahead of the worker doing either.
 *   a worker     the actor it is running: `open` (the SQLite connection and
 *                everything hanging off it) and its `life` (actor_life).
 *   either       under the actor's `mu`: the mailbox, scheduling state,
 *                the hold (transaction or stream); `life` is read there.
 * Lock order: actor.mu before pool.mu; the completion lock alone. */
#ifndef DSQ_ENGINE_INT_H
#define DSQ_ENGINE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "common/check.h"
#include "common/htab.h"
#include "common/threads.h"
#include "engine/cdc/feed.h"
#include "engine/engine.h"
#include "engine/tier/evict.h"
#include "engine/tier/tier.h"
#include "engine/tier/warm.h"

/* Operations the engine sends itself (never from callers). */
enum {
    DSQ__OP_HIBERNATE = 100, /* close the connection; keep the actor */
    DSQ__OP_TXN_EXPIRE,      /* roll back txn `txn` (idle timeout or its session ended) */
    DSQ__OP_STREAM_END,      /* cancel stream `stream_id` */
    DSQ__OP_SHUTDOWN,        /* roll back, close, refuse what follows */
    DSQ__OP_HEAP_TRIM,       /* (system actor) give malloc's free pages back: dsq__heap_trim */
};

/* A call's place in a stream's life (dsq_call.state). */
enum {
    DSQ__CALL_NEW = 0,
    DSQ__CALL_STREAM_MORE,   /* re-queued for the next chunk */
    DSQ__CALL_STREAM_CANCEL, /* re-queued to end early */
};

/* An actor's place in scheduling (under its mu): at rest; on the pool's
 * run queue (at most once); on a worker. */
typedef enum actor_sched { ACTOR_IDLE = 0, ACTOR_QUEUED, ACTOR_RUNNING } actor_sched;

/* An actor's life (dsq__actor_life; written by the worker running it,
 * under its mu, so a post can read it):
 *
 *   UNOPENED --open--> OPEN --close, log synced--> RESTING --open--> OPEN
 *                        \--close, sync failed--> FAILED  --open--> OPEN
 *   RESTING, FAILED --drop--> UNOPENED
 *   UNOPENED, RESTING, FAILED --shutdown--> SHUT (for good)
 *
 * UNOPENED and FAILED open with a recovery of the log; RESTING closed with
 * everything durable and skips it. `open` is non-NULL exactly in OPEN. */
typedef enum actor_life {
    ACTOR_UNOPENED = 0, /* not opened since the start, or dropped */
    ACTOR_OPEN,         /* `open` is its connection */
    ACTOR_RESTING,      /* hibernated with its log synced */
    ACTOR_FAILED,       /* closed after a failed sync: the log was cut back to what is durable */
    ACTOR_SHUT,         /* shut down: refuses everything */
} actor_life;

/* A call's operation as an int, to compare with the engine's own ones. */
static inline int op_of(const dsq_call *c) { return (int)c->op; }

typedef struct stmt_slot {
    sqlite3_stmt *stmt; /* owned; NULL if the slot is free */
    char *sql;          /* owned; the key: the request's text from here on */
    size_t len;         /* key bytes */
    size_t consumed;    /* bytes of the key this statement used */
    uint64_t used;      /* LRU clock */
} stmt_slot;

#define STMT_CACHE 32

/* An actor's output gate (gate.c): replies waiting for the log to be
 * durable up to their LSN. */

typedef struct dsq_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* busy went false */
    dsq_queue parked;            /* replies waiting (dsq_call.link), in order */
    struct dsq_wal *wal;
    uint64_t durable;            /* the log's durable LSN, as last synced */
    uint64_t released;           /* replies up to this LSN may leave: durable, or with
                                    sync_to_object_store = commit, also in the object store */
    struct dsq_engine *engine;
    const char *name;            /* the database's, for logs */
    bool queued;                 /* on the syncer's list (under syncer.mu) */
    bool busy;                   /* a syncer thread is syncing it */
    bool closing;
    bool failed;                 /* an fsync failed: the actor restarts */
    char why[300];
    int why_errno;               /* the failure's errno (ENOSPC: the disk is full) */
    dsq_qnode link;              /* on the syncer's list (under syncer.mu) */
    _Atomic(dsq_feed *) *feedp;  /* the actor's feed, told how far the log is durable */
    const dsq_repl_hooks *repl;  /* with replication: `released` says how far replies may go */
} dsq_gate;

typedef struct dsq_syncer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dsq_queue gates;             /* gates with replies or records waiting (dsq_gate.link) */
    dsq_threads threads;
    bool stopping;
} dsq_syncer;

/* What an open actor holds; freed when it hibernates. Worker only. */
/* When a statement should stop (sqlfn.c): fn(arg) != 0. */
typedef struct dsq_sqlfn_stop {
    int (*fn)(void *arg);
    void *arg;
} dsq_sqlfn_stop;

typedef struct actor_open {
    const char *name;            /* the database's (its actor's) */
    dsq_role role;               /* this copy's, as the running call found it (repl.c) */
    sqlite3 *db;                 /* owned */
    struct dsq_ps *ps;           /* owned: the pages under db */
    dsq_gate gate;               /* replies waiting for the log */
    uint64_t ckpt_after_ms;      /* no checkpoint before this (after a failed one) */
    uint64_t offered_ms;         /* when its files were last offered to the object store */
    uint64_t lsn;                /* last committed LSN */
    stmt_slot cache[STMT_CACHE]; /* prepared statements */
    sqlite3_stmt *ctl[5];        /* BEGIN, COMMIT, ... prepared once (stmt.c) */
    uint64_t clock;              /* LRU clock of the cache */
    bool internal;               /* our own SQL: the authorizer lets it pass */
    bool importing;              /* an import's SQL: the authorizer's rules, but a dump's
                                    PRAGMA writable_schema passes */
    uint32_t prepared;           /* cross-shard transactions prepared here awaiting their decision
                                  (rows of _dsq_prepared): other clients' writes are refused */
    bool prepared_known;         /* `prepared` is current (else counted at the next write) */
    bool txn_prepared;           /* the open transaction is a prepared one (its writes are its own) */
    char deny[200];              /* why the authorizer said no, for the error */
    bool vacuum;                 /* a VACUUM is running: its scratch ATTACH is fine */
    bool in_txn;                 /* an explicit transaction is open */
    bool fk_off;                 /* foreign keys are off on db until the request's or the
                                    explicit transaction's end (dsq_call.fk_off) */
    bool on_view;                /* SQL runs on a view's connection (beside the transaction, or a
                                    read-only one): no savepoint there */
    uint64_t deadline_ns;        /* progress handler: stop after this */
    dsq_sqlfn_stop fn_stop;      /* the progress handler's question, for sqlfn.c */
    dsq_call *running;           /* the call running now (the progress handler stops it when
                                    it is cancelled), or NULL */
    sqlite3_stmt *stream_stmt;   /* the open stream's statement (not cached) */
    uint64_t stream_rows;        /* rows it has handed out */
    uint64_t stream_skip;        /* rows to step over first: it starts again after a cold page */
    uint64_t statements;         /* statements run since open */
    uint64_t cache_hits, cache_misses;
    struct dsq_engine *engine;
    struct dsq_cdc_cap *cap;     /* the open transaction's row changes (cdc.h) */
    /* what the authorizer saw while the last statement was prepared */
    bool stmt_ddl;               /* it changes the schema */
    bool stmt_own;               /* it names one of dosqld's own tables (_dsq_...): never cached */
    bool stmt_writes;            /* it writes though SQLite calls it read-only (ANALYZE, REINDEX,
                                    PRAGMA optimize): never cached, so this holds for it */
    char stmt_created[129];      /* the table it creates, or "" */
    char sp_op[16];              /* SAVEPOINT: "BEGIN", "RELEASE" or "ROLLBACK" (TO), or "" */
    char sp_name[128];
    /* Reads outside the open transaction run on the last commit, through
     * this connection; it lives until the transaction ends. */
    struct dsq_ps_view *snap_view; /* owned */
    sqlite3 *snap_db;              /* owned: a connection on snap_view */
} actor_open;

/* A read-only transaction (beginTransaction readOnly): the database as of
 * its start, on a connection of its own. It holds back no one; while any
 * is open the store keeps the history it reads (no retention, no merge). */
typedef struct snap_txn {
    /* under the actor's mu */
    char id[33];
    uint64_t session;            /* its owner connection (0: none) */
    uint64_t timeout_ms;         /* idle limit */
    uint64_t deadline_ms;        /* monotonic ms */
    /* worker only */
    uint64_t lsn;                /* the commit it reads */
    struct dsq_ps_view *view;    /* owned */
    sqlite3 *db;                 /* owned: a connection on view */
} snap_txn;

/* A stream outside the write transaction (queryStream): a connection of
 * its own on a view of the commit it started at, or a read-only
 * transaction's connection; it holds back no one. */
typedef struct snap_stream {
    /* under the actor's mu */
    uint64_t id;
    uint64_t session;            /* its owner connection (0: none) */
    uint64_t deadline_ms;        /* idle limit (transaction_timeout), monotonic ms */
    /* worker only */
    struct dsq_ps_view *view;    /* owned; NULL: it reads a read-only transaction's db */
    sqlite3 *db;                 /* owned with view */
    sqlite3_stmt *stmt;          /* owned */
    uint64_t lsn;                /* the commit it reads */
    uint64_t rows, skip;         /* rows handed out; rows to step over (after a cold page) */
} snap_stream;

typedef struct dsq_actor {
    /* ---- loop thread ---- */
    dsq_hnode hlink;                /* in the engine's table by name */
    dsq_lnode lru;                  /* on the engine's LRU of open actors */
    uint64_t last_used_ms;
    uint32_t inflight;              /* submitted calls not yet done */
    bool open_intent;               /* counted as open (in the LRU) */
    bool expire_sent;               /* a TXN_EXPIRE/STREAM_END is on its way */

    /* ---- under mu ---- */
    pthread_mutex_t mu;
    dsq_queue mail;                 /* the mailbox (dsq_call.link), in arrival order */
    size_t nmail;
    actor_sched sched;              /* dsq__actor_sched: IDLE -> QUEUED -> RUNNING -> ... */
    dsq_qnode run_link;             /* on the pool's run queue (under pool.mu) */
    char txn[33];                   /* the open transaction, or "" */
    uint64_t txn_session;           /* its owner connection (0: none) */
    uint64_t txn_timeout_ms;
    uint64_t txn_deadline_ms;       /* idle limit, monotonic ms */
    snap_txn *snaps;                /* open read-only transactions (owned) */
    size_t nsnaps, snaps_cap;
    snap_stream *sstreams;          /* open streams outside the write transaction (owned) */
    size_t nsstreams, sstreams_cap;
    uint64_t mail_seq;              /* the last arrival number given */
    uint64_t stream_id;             /* the open stream, or 0 */
    uint64_t stream_session;
    uint64_t stream_deadline_ms;
    actor_life life;                /* dsq__actor_life: written by its worker */
    bool cold_wait;                 /* a call waits for a page from the object store: nothing
                                       else runs until it ran again (warm.h) */
    uint64_t lsn_seen;              /* the last commit, as of the end of its last call (for calls
                                       that wait for an LSN: wait_lsn) */
    dsq_gate *gate_live;            /* the open database's gate, for the loop thread
                                       (dsq_engine_repl_poke, the tick); NULL while closed */

    /* ---- the worker running it ---- */
    actor_open *open;               /* NULL while hibernated */
    dsq_warm_chunk **pins;   /* chunks the running call (or open stream) waited for:
                                       kept in the warm cache until it ends (warm.h) */
    size_t npins, pins_cap;
    bool offered;                   /* its files were offered to the object store since the start */

    /* ---- set once by the loop thread, then read by any ---- */
    _Atomic(dsq_feed *) feed;       /* made when the first CDC subscriber comes */

    /* ---- bumped by the loop thread, read by any ---- */
    _Atomic uint64_t repl_gen;      /* how many times this copy stopped being the primary
                                       (dsq_engine_repl_abandon): a call run as primary whose
                                       reply comes after that fails (dsq__reply) */

    char name[];                    /* the database's name */
} dsq_actor;
/* Every database the server has seen keeps one, open or not: a hibernated
 * actor is small (10,000 databases in a few MiB). */
_Static_assert(sizeof(dsq_actor) <= 400, "dsq_actor grew past 400 bytes");

/* Move a's life (on the worker running it). */
static inline void dsq__actor_life(struct dsq_actor *a, actor_life to)
{
    static const bool allowed[5][5] = {
        [ACTOR_UNOPENED] = {[ACTOR_OPEN] = true, [ACTOR_SHUT] = true},
        [ACTOR_OPEN] = {[ACTOR_RESTING] = true, [ACTOR_FAILED] = true},
        [ACTOR_RESTING] = {[ACTOR_OPEN] = true, [ACTOR_UNOPENED] = true, [ACTOR_SHUT] = true},
        [ACTOR_FAILED] = {[ACTOR_OPEN] = true, [ACTOR_UNOPENED] = true, [ACTOR_SHUT] = true},
    };
    DSQ_ASSERT(allowed[a->life][to]);
    (void)allowed;
    pthread_mutex_lock(&a->mu);
    a->life = to;
    pthread_mutex_unlock(&a->mu);
}

/* Move a's scheduling state (caller holds a->mu). A post queues an actor
 * at rest; a worker takes a queued one (or finds nothing to run and lets
 * it rest); after a turn it runs on, rests, or goes back on the queue.
 * Never queued twice, never run without having been queued. */
static inline void dsq__actor_sched(struct dsq_actor *a, actor_sched to)
{
    static const bool allowed[3][3] = {
        [ACTOR_IDLE] = {[ACTOR_QUEUED] = true},
        [ACTOR_QUEUED] = {[ACTOR_RUNNING] = true, [ACTOR_IDLE] = true},
        [ACTOR_RUNNING] = {[ACTOR_RUNNING] = true, [ACTOR_IDLE] = true, [ACTOR_QUEUED] = true},
    };
    DSQ_ASSERT_HELD(&a->mu);
    DSQ_ASSERT(allowed[a->sched][to]);
    (void)allowed;
    a->sched = to;
}

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dsq_queue run;                  /* actors with runnable mail (dsq_actor.run_link) */
    unsigned unsignaled;            /* queued by the loop since the last kick */
    bool live;                      /* started and not stopped (loop thread) */
    bool stopping;
    dsq_threads threads;
} pool;

struct dsq_jnl;

/* The hold on database db's log (dsq_engine_hold_log; the pagestore's
 * hook): records after it stay; UINT64_MAX: none. Any thread. */
uint64_t dsq__held_after(void *ud, const char *db);

struct dsq_engine {
    dsq_engine_cfg cfg;
    /* log holds (dsq_engine_hold_log): any thread, under holds_mu */
    pthread_mutex_t holds_mu;
    struct {
        char name[129];
        uint64_t after;
    } *holds;
    size_t nholds;
    char *data_dir;                 /* owned copy */
    char *data_dir_real;            /* owned: its absolute path (realpath), or NULL */
    int lock_fd;                    /* DATA_DIR/LOCK, held for the engine's life (owned) */
    pool pool;
    struct dsq_jnl *jnl;            /* the node journal, or NULL */

    /* registry (loop thread) */
    dsq_htab actors;                /* dsq_actor.hlink, the system one too */
    atomic_size_t nactors;          /* written by the loop, read by workers (stats) */
    dsq_list lru;                   /* open actors (dsq_actor.lru), least recently used first */
    atomic_size_t nopen;            /* counted as open by the loop (LRU) */
    atomic_size_t nopen_real;       /* connections actually open (workers) */
    bool stopping;

    /* completions */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;             /* signalled on each completion (for free) */
    dsq_queue done;                 /* completed calls (dsq_call.link), for the loop */

    /* counters */
    atomic_uint_fast64_t queued;    /* messages in mailboxes */
    atomic_uint_fast64_t calls;     /* calls completed */
    atomic_uint_fast64_t txns_open;
    atomic_uint_fast64_t next_stream;
    uint64_t inflight;              /* loop: all submitted, not done */

    dsq_syncer syncer;              /* gate.c */
    atomic_uint_fast64_t fsyncs;    /* log syncs done by the syncers */
    atomic_uint_fast64_t gated;     /* replies that waited for one */
    atomic_uint_fast64_t idem_replays; /* calls answered from their idempotency key's record */
    dsq_feeds feeds;                /* every database's CDC feed (engine/cdc/feed.h) */
    unsigned ncpu;                  /* CPUs the process may run on */
    dsq_tier *tier;                 /* uploads to the object store, or NULL */
    struct dsq_warm *warm;          /* reads of evicted files (warm.h), or NULL */
    dsq_cold_src cold_src;          /* warm as the source storage reads them from (cold.h) */
    struct dsq_evict *evict;        /* the hot tier's budget (evict.h), or NULL */
    atomic_uint_fast64_t closes;    /* databases closed (workers count them) */
    struct actor_slab *slabs;       /* loop: where actors are carved from (never freed before the end) */
    atomic_uint_fast64_t trimmed_at_closes; /* closes at the last heap trim (the trimming worker) */
    atomic_uint_fast64_t trimmed_ms;        /* and when */
    atomic_bool trim_posted;        /* a DSQ__OP_HEAP_TRIM is on its way (loop sets, worker clears) */
};

/* ---- pool.c ---- */
int dsq__pool_start(dsq_engine *e, unsigned n, char *err, size_t errlen);
void dsq__pool_stop(dsq_engine *e);
/* Put `a` on the run queue. The caller has moved it to ACTOR_QUEUED under
 * a->mu (which it may have released since: no one else queues an actor
 * in that state). `wake`: signal a worker now (worker threads); else the
 * loop's next dsq__pool_kick does. */
void dsq__pool_push(dsq_engine *e, dsq_actor *a, bool wake);
void dsq__pool_kick(dsq_engine *e);

/* ---- actor.c ---- */
/* Run up to batch_per_turn runnable messages of `a` (worker). */
void dsq__actor_run(dsq_engine *e, dsq_actor *a);
/* Append `c` to the mailbox; schedule the actor if `c` can run. Returns 0,
 * or -1 when the mailbox is full or the actor is shut. */
int dsq__actor_post(dsq_engine *e, dsq_actor *a, dsq_call *c, bool front);
/* Put back, in its place by arrival, a call that found it writes while
 * another client's transaction is open (it is marked wait_writer). Worker,
 * during the actor's turn. */
void dsq__actor_repost(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* dsq_engine_cancel's part under the actor's lock: a cancelled call that
 * waits in the mailbox gets a turn at once, to fail. Loop thread. */
void dsq__actor_cancel(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* Writers that waited write_wait_ms for another client's transaction are
 * marked to fail (wait_expired) and get a turn. Loop thread (the tick). */
void dsq__actor_expire_writers(dsq_engine *e, dsq_actor *a, uint64_t now);
static inline bool dsq__cancelled(const dsq_call *c)
{
    return atomic_load_explicit(&((dsq_call *)c)->cancelled, memory_order_relaxed);
}
/* The open read-only transaction `id`, or NULL. Caller holds a->mu. */
snap_txn *dsq__snap_find(dsq_actor *a, const char *id);
/* Put back a call that waited for a page from the object store (first in
 * line) and end the actor's wait. Any thread. */
void dsq__actor_cold_back(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* Hand a finished call (or a stream chunk) to the loop. */
void dsq__complete(dsq_engine *e, dsq_call *c);
/* Fail a call with a code and message. */
void dsq__fail(dsq_call *c, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A closed connection's page cache and statements go back to malloc,
 * which keeps them: once 64 databases closed since the last time (and 2 s
 * passed), the tick has a worker give malloc's free pages back to the
 * system (the system actor runs DSQ__OP_HEAP_TRIM), or a node that once
 * had thousands of databases open keeps their memory while they
 * hibernate. */
void dsq__heap_trim(dsq_engine *e);

/* ---- exec.c, conn.c: running calls (worker); the rest is in exec_int.h ---- */
/* Run call c on actor a (it completes c, or parks it). */
void dsq__exec(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* Roll back whatever is open, finalize statements, close (conn.c). */
void dsq__actor_close(dsq_actor *a);
/* Whether dsq_engine_cancel stops the call's operation (the operation
 * table says). Any thread. */
bool dsq__cancellable(const dsq_call *c);

/* ---- gate.c: output gates and group commit ---- */
int dsq__syncer_start(dsq_engine *e, char *err, size_t errlen);

/* The actor of database `name`, made if new (loop thread). */
struct dsq_actor *dsq__actor_get(dsq_engine *e, const char *name);
void dsq__syncer_stop(dsq_engine *e);
void dsq__gate_init(dsq_gate *g, struct dsq_engine *e, struct dsq_wal *wal, uint64_t durable, const char *name,
                    _Atomic(dsq_feed *) *feedp);
/* A call is done on the worker: it leaves now, or waits at the gate until
 * the log is durable past what the actor has written. */
void dsq__reply(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* Have the log synced if records wait (a reply that did not go through
 * the gate). Any thread. */
void dsq__gate_kick(dsq_engine *e, dsq_gate *g);
/* With replication: ask `released` again and let go of the replies it
 * now covers; with `expire_ms`, fail those parked longer (TIMEOUT), and
 * with `all` every one not covered (with `why`: failing with code and
 * that message instead of TIMEOUT's). The loop thread, holding the actor's
 * mu (the gate stays open meanwhile); the calls to complete are moved to
 * *out (complete them after letting go of mu: dsq__complete_all). */
void dsq__gate_repoll(dsq_gate *g, uint64_t now_ms, uint64_t expire_ms, bool all, dsq_code code, const char *why,
                      dsq_queue *out);
void dsq__complete_all(dsq_engine *e, dsq_queue *out);
/* Before the actor closes: sync what is appended and release every parked
 * reply. -1 when the log could not be made durable. */
int dsq__gate_close(dsq_engine *e, dsq_gate *g);
bool dsq__gate_failed(dsq_gate *g);

/* ---- schema.c ---- */
/* The schema as connection db sees it; NULL with err on failure. */
dsq_schema *dsq__schema(actor_open *o, sqlite3 *db, char *err, size_t errlen);
/* The database's statistics; its size as connection db sees it (the
 * actor's, or the one reads beside an open transaction use). NULL: out of
 * memory. */
dsq_db_stats *dsq__stats(dsq_engine *e, dsq_actor *a, sqlite3 *db);

/* ---- result.c ---- */
int dsq__result_add(dsq_result *r, sqlite3_stmt *st, int ncols);
void dsq__result_free(dsq_result *r);
int dsq__result_columns(dsq_result *r, sqlite3_stmt *st);

/* ---- store.c: where a database's bytes live (a page store under the
 * VFS). ---- */
struct dsq_ps;
int dsq__store_init(const char *data_dir, char *err, size_t errlen);
/* Open database `name`'s store and its SQLite connection. 0, or a
 * negative code with a message: dsq_ps_open's or dsq__vfs_open's
 * (-EMFILE, -ENFILE: out of descriptors), -ENAMETOOLONG, or -EINVAL (a
 * database in the format of early builds). With replication, the
 * records of its commits go to the hooks' `committed` while its
 * actor_open (commit_ud) says it is the primary. */
int dsq__store_open(const dsq_engine *e, const char *name, bool known_durable, void *commit_ud, struct dsq_ps **ps,
                    sqlite3 **db, char *err, size_t errlen);
/* Whether DATA_DIR/db/NAME exists. */
bool dsq__store_exists(const dsq_engine *e, const char *name);
/* Remove this node's copy of database `name` (closed), here only: no
 * tombstone, nothing in the object store (replication: a copy made
 * again). 0, or -1 with a message. */
int dsq__store_forget(const dsq_engine *e, const char *name, char *err, size_t errlen);
/* Drop database `name` (its directory, its tombstone and the deletion of
 * its objects when there is an object store: tier.h). 0 dropped; 1 no
 * such database, here or in the store; 2 the store cannot tell (err); -1
 * failed (err). */
int dsq__store_drop(const dsq_engine *e, const char *name, char *err, size_t errlen);
/* At start: drops a crash interrupted (DATA_DIR/db/.dropped.NAME) are
 * finished (tombstone, then the directory goes). */
int dsq__store_sweep_dropped(dsq_engine *e, char *err, size_t errlen);
/* At start, before any database opens: write back into the databases'
 * logs what the node journal holds (journal.h), then start the journal
 * (e->jnl) when the configuration wants it. */
int dsq__store_journal_start(dsq_engine *e, char *err, size_t errlen);
/* The names of the databases in data_dir, sorted, in *names (malloc'd,
 * each name too; NULL when none). 0, or -1 (the directory cannot be read,
 * or out of memory). */
int dsq__store_list(const char *data_dir, char ***names, size_t *n);

/* ---- sqlfn.c ---- */
/* Replace printf, format, replace, instr, trim, ltrim and rtrim on `db` with
 * versions that keep their results but refuse output past the length
 * limit before making it and stop (SQLITE_INTERRUPT) as soon as
 * stop->fn(stop->arg) is non-zero (asked every few hundred microseconds
 * of work, as the progress handler is). `stop` outlives db. */
int dsq__sqlfn_register(sqlite3 *db, const dsq_sqlfn_stop *stop);

#endif
