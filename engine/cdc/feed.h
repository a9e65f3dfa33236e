/* feed — each database's recent durable commits, for CDC subscribers.
 *
 * A database gets a feed when its first subscriber comes; from then on its
 * actor hands every commit (LSN, time, row changes as cdc.h encodes them)
 * to the feed, which keeps the newest ones within cdc_buffer_bytes. The
 * syncer tells the feed how far the log is durable; the loop thread then
 * runs each subscriber's callback, and subscribers copy out what is
 * durable and new to them. A subscriber further behind than the feed
 * holds reads the log instead (DSQ_OP_CDC_READ): the feed never holds a
 * writer back, whatever its subscribers do.
 *
 * Sending to many subscribers costs the server a socket write each, for
 * each sync: while the process uses most of its CPUs, a feed's
 * subscribers are called at most every 0.5 ms times their number (up to
 * cdc_coalesce_ms), and each then sends in one message all that became
 * durable since (coalescing). With CPU to spare they are called at every
 * sync.
 *
 * The feeds of all databases share a dsq_feeds (the engine owns it): the
 * settings, the list of feeds with news for the loop thread, and those
 * held back. The feed knows nothing of actors: a database's feed is a
 * slot its owner keeps (dsq_feed_subscribe makes it there).
 *
 * Threads: commits from the actor's worker, durability from the syncer
 * (or the worker), reads and the subscriber list on the loop thread; the
 * feed's mutex guards the buffer, the durable end, and changes to the
 * list (the worker reads it for getStats). */
#ifndef DSQ_FEED_H
#define DSQ_FEED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct dsq_feed dsq_feed;

typedef struct dsq_feeds {
    /* settings, set before the first feed is made */
    size_t buffer_bytes;        /* each feed holds this much (cdc_buffer_bytes) */
    unsigned coalesce_ms;       /* cdc_coalesce_ms (0: no coalescing) */
    unsigned coalesce_cpu;      /* cdc_coalesce_cpu (0: always busy) */
    uint32_t slice_ns;          /* a round of calls yields after this (0: 50 us) */
    unsigned ncpu;              /* the CPUs the process may use */
    void (*wake)(void *arg);    /* the loop thread has news to run (may be NULL) */
    void *wake_arg;
    /* any thread */
    atomic_size_t subscriptions; /* subscribers of every feed */
    atomic_uint_fast64_t held;  /* rounds held back while busy (getStats) */
    pthread_mutex_t mu;         /* news */
    dsq_feed *news;             /* feeds whose durable end moved */
    /* loop thread */
    dsq_feed *later;            /* feeds held back while the process is busy */
    uint64_t due_ns;            /* when the first of them is due; 0: none */
    uint64_t busy_at_ns, busy_cpu_ns; /* the last look at the process's CPU time */
    bool busy;                  /* it used most of its CPUs since the one before */
} dsq_feeds;

/* The shared state, its settings left to the caller. */
void dsq_feeds_init(dsq_feeds *fs);
void dsq_feeds_destroy(dsq_feeds *fs);

/* Subscribe to the feed in *slot, made there if there is none (loop
 * thread). NULL when out of memory. */
dsq_feed_sub *dsq_feed_subscribe(dsq_feeds *fs, _Atomic(dsq_feed *) *slot, dsq_feed_fn fn, void *ud);
void dsq_feed_unsubscribe(dsq_feeds *fs, dsq_feed_sub *s);

/* A commit of the feed's database (worker): kept while it has subscribers. */
void dsq_feed_commit(dsq_feed *f, uint64_t lsn, uint64_t time_us, const void *changes, size_t n);
/* The log is durable up to lsn (any thread): the loop thread is told. */
void dsq_feed_durable(dsq_feeds *fs, dsq_feed *f, uint64_t lsn);
/* The database was dropped: its subscribers end (dsq_engine_feed_gone);
 * the feed starts over for a database made later under the name. */
void dsq_feed_dropped(dsq_feeds *fs, dsq_feed *f);
/* Loop thread: run the callbacks of subscribers whose feed has news. */
void dsq_feed_poll(dsq_feeds *fs);
/* Loop thread: the process is busy (coalescing applies); feeds have news
 * or are held back; in how many ms dsq_feed_poll should run (-1: none). */
bool dsq_feeds_busy(dsq_feeds *fs);
bool dsq_feeds_pending(dsq_feeds *fs);
int64_t dsq_feeds_due_ms(dsq_feeds *fs);
/* Whether a process that used cpu_ns of CPU over wall_ns is busy, on ncpu
 * CPUs: pct % or more of them, or (was busy) 70 % of pct. */
bool dsq_feed_busy_next(bool was, uint64_t cpu_ns, uint64_t wall_ns, unsigned ncpu, unsigned pct);
void dsq_feed_free(dsq_feed *f);
/* getStats: each subscriber's position against the durable end, in *out
 * (malloc'd, *n of them; NULL when none). 0, or -1 out of memory (any
 * thread). */
int dsq_feed_stats(dsq_feed *f, uint64_t durable, dsq_sub_stats **out, size_t *n);

#endif
