/* threads — start and join a set of threads (threads.h). */
#include "common/threads.h"

#include <errno.h>
#include <stdlib.h>

int dsq_threads_start(dsq_threads *t, unsigned n, void *(*fn)(void *), void *arg)
{
    if (n == 0)
        return 0;
    t->ids = calloc(n, sizeof *t->ids);
    if (t->ids == NULL)
        return -ENOMEM;
    for (; t->n < n; t->n++) {
        int rv = pthread_create(&t->ids[t->n], NULL, fn, arg);
        if (rv != 0)
            return -rv;
    }
    return 0;
}

void dsq_threads_join(dsq_threads *t)
{
    for (unsigned i = 0; i < t->n; i++)
        pthread_join(t->ids[i], NULL);
    free(t->ids);
    t->ids = NULL;
    t->n = 0;
}
