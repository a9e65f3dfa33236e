/* pool — the worker threads and the run queue of actors with mail.
 *
 * An actor is on the run queue at most once (its sched state says so). A
 * worker takes the actor at the head, runs a bounded number of its
 * messages (dsq__actor_run), and the actor goes back to the tail if it
 * still has runnable mail: a busy database cannot starve the others. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/runtime/engine_int.h"

static void *worker_main(void *arg)
{
    dsq_thread_name("dsq-worker");
    dsq_engine *e = arg;
    pool *p = &e->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (dsq_queue_empty(&p->run) && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        dsq_actor *a = dsq_container_of(dsq_queue_pop(&p->run), dsq_actor, run_link);
        if (a == NULL) { /* stopping, and nothing left to run */
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pthread_mutex_unlock(&p->mu);
        dsq__actor_run(e, a);
    }
}

void dsq__pool_push(dsq_engine *e, dsq_actor *a, bool wake)
{
    pool *p = &e->pool;
    pthread_mutex_lock(&p->mu);
    dsq_queue_push(&p->run, &a->run_link);
    if (!wake)
        p->unsignaled++;
    pthread_mutex_unlock(&p->mu);
    if (wake)
        pthread_cond_signal(&p->cv); /* after the unlock: see dsq__actor_post */
}

/* Wake workers for the actors queued without a wake-up since the last
 * kick: one signal for a whole loop iteration's submissions, instead of a
 * wake-up (and, on one CPU, a context switch) per message. */
void dsq__pool_kick(dsq_engine *e)
{
    pool *p = &e->pool;
    if (!p->live)
        return; /* stopped (its lock is gone): nothing to wake */
    pthread_mutex_lock(&p->mu);
    unsigned n = p->unsignaled;
    p->unsignaled = 0;
    pthread_mutex_unlock(&p->mu);
    if (n == 1)
        pthread_cond_signal(&p->cv);
    else if (n > 1)
        pthread_cond_broadcast(&p->cv);
}

int dsq__pool_start(dsq_engine *e, unsigned n, char *err, size_t errlen)
{
    pool *p = &e->pool;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->live = true;
    int rv = dsq_threads_start(&p->threads, n, worker_main, e);
    if (rv != 0) {
        if (rv == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        else
            snprintf(err, errlen, "cannot start worker %u: %s", p->threads.n, strerror(-rv));
        dsq__pool_stop(e); /* the ones started */
        return -1;
    }
    return 0;
}

/* Workers finish what is queued, then exit. */
void dsq__pool_stop(dsq_engine *e)
{
    pool *p = &e->pool;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    dsq_threads_join(&p->threads);
    p->live = false;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}
