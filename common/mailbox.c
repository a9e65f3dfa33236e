/* mailbox — work handed to a loop's thread (mailbox.h). */
#include <stdlib.h>

#include "common/mailbox.h"

static dsq_mail *take_all(dsq_mailbox *m)
{
    pthread_mutex_lock(&m->mu);
    dsq_mail *all = m->head;
    m->head = m->tail = NULL;
    pthread_mutex_unlock(&m->mu);
    return all;
}

static void run_all(dsq_mail *x, bool run)
{
    while (x != NULL) {
        dsq_mail *next = x->next;
        x->fn(x->arg, run);
        free(x);
        x = next;
    }
}

static void on_async(uv_async_t *h)
{
    dsq_mailbox *m = h->data;
    /* Posts made while these run wake the handle again. */
    run_all(take_all(m), true);
}

int dsq_mailbox_init(dsq_mailbox *m, uv_loop_t *loop)
{
    *m = (dsq_mailbox){0};
    if (uv_async_init(loop, &m->async, on_async) != 0)
        return -1;
    pthread_mutex_init(&m->mu, NULL);
    m->async.data = m;
    uv_unref((uv_handle_t *)&m->async);
    return 0;
}

int dsq_mailbox_post(dsq_mailbox *m, dsq_mail_fn fn, void *arg)
{
    dsq_mail *x = malloc(sizeof *x);
    if (x == NULL)
        return -1;
    *x = (dsq_mail){.fn = fn, .arg = arg};
    pthread_mutex_lock(&m->mu);
    bool closing = m->closing;
    if (!closing) {
        if (m->tail != NULL)
            m->tail->next = x;
        else
            m->head = x;
        m->tail = x;
        uv_async_send(&m->async); /* (under the lock: close waits for it) */
    }
    pthread_mutex_unlock(&m->mu);
    if (closing) {
        free(x);
        return -1;
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    dsq_mailbox *m = h->data;
    pthread_mutex_destroy(&m->mu);
    if (m->closed != NULL)
        m->closed(m);
}

void dsq_mailbox_close(dsq_mailbox *m, void (*closed)(dsq_mailbox *m))
{
    pthread_mutex_lock(&m->mu);
    m->closing = true;
    pthread_mutex_unlock(&m->mu);
    run_all(take_all(m), false);
    m->closed = closed;
    uv_close((uv_handle_t *)&m->async, on_closed);
}
