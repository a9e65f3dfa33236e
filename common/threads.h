/* threads — a set of threads on one job, started and joined together.
 *
 * The engine's workers, its log syncers and the tier's uploaders are each
 * N threads running one function; a restore runs a few at once. Starting
 * stops at the first thread that cannot start, and the ones started keep
 * running: they wait for a stop signal that only their owner can give (a
 * `stopping` flag under its lock), so the owner ends them as it ends all
 * of them, and then joins them here. */
#ifndef DSQ_THREADS_H
#define DSQ_THREADS_H

#include <pthread.h>

typedef struct dsq_threads {
    pthread_t *ids;         /* owned; n of them */
    unsigned n;             /* started and not yet joined */
} dsq_threads;

/* Start n threads running fn(arg), into a zeroed t. 0, or a negated
 * errno value with t->n threads started (fewer than n) and still running:
 * -ENOMEM when there is no memory for their ids (none started), else
 * pthread_create's error for thread t->n, negated (-EAGAIN). */
int dsq_threads_start(dsq_threads *t, unsigned n, void *(*fn)(void *), void *arg);

/* Wait for every thread started to end; t is zeroed again. */
void dsq_threads_join(dsq_threads *t);

#endif
