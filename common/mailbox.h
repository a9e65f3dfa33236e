/* mailbox — work handed to a libuv loop's thread from any other thread.
 *
 * A thread that must not touch the loop's state (a blocking client's
 * thread, a worker) posts a function and its argument; the loop thread
 * runs them in the order they were posted, woken by an async handle.
 *
 *     dsq_mailbox mb;
 *     dsq_mailbox_init(&mb, loop);           // loop thread
 *     dsq_mailbox_post(&mb, on_answer, ans); // any thread
 *     ...
 *     dsq_mailbox_close(&mb, closed);        // loop thread
 *
 * fn(arg, true) runs on the loop thread; a post still queued when the
 * mailbox closes gets fn(arg, false) instead (from dsq_mailbox_close), so
 * that fn can free what arg holds either way. A post after close began
 * is refused (-1: the caller still owns arg). The handle does not keep
 * the loop running. */
#ifndef DSQ_MAILBOX_H
#define DSQ_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

typedef void (*dsq_mail_fn)(void *arg, bool run);

typedef struct dsq_mail {
    struct dsq_mail *next;
    dsq_mail_fn fn;
    void *arg;
} dsq_mail;

typedef struct dsq_mailbox {
    uv_async_t async;
    pthread_mutex_t mu;                 /* over the queue and closing */
    dsq_mail *head, *tail;
    bool closing;
    void (*closed)(struct dsq_mailbox *m);
} dsq_mailbox;

/* 0, or -1 (the async handle could not be made). Loop thread. */
int dsq_mailbox_init(dsq_mailbox *m, uv_loop_t *loop);

/* Queue fn(arg) for the loop thread. 0, or -1: out of memory or closing
 * (fn is not called). Any thread. */
int dsq_mailbox_post(dsq_mailbox *m, dsq_mail_fn fn, void *arg);

/* Refuse further posts, give what is queued fn(arg, false), close the
 * handle; `closed` (may be NULL) runs once it is closed, when m's memory
 * may go. Loop thread. */
void dsq_mailbox_close(dsq_mailbox *m, void (*closed)(dsq_mailbox *m));

#endif
