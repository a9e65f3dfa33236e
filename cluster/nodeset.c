/* nodeset — node ids and their indices (nodeset.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/nodeset.h"

struct dsq_nodeset {
    pthread_mutex_t mu;                          /* over adding */
    char ids[DSQ_NODES_MAX][DSQ_NODE_ID_MAX];    /* [0..n): written before n covers them, then fixed */
    atomic_size_t n;
};

dsq_nodeset *dsq_nodeset_new(void)
{
    dsq_nodeset *s = calloc(1, sizeof *s);
    if (s != NULL)
        pthread_mutex_init(&s->mu, NULL);
    return s;
}

void dsq_nodeset_free(dsq_nodeset *s)
{
    if (s == NULL)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static uint32_t find_in(const dsq_nodeset *s, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->ids[i], id) == 0)
            return (uint32_t)i;
    return DSQ_NODE_NONE;
}

uint32_t dsq_nodeset_find(const dsq_nodeset *s, const char *id)
{
    return find_in(s, atomic_load_explicit(&s->n, memory_order_acquire), id);
}

int dsq_nodeset_intern(dsq_nodeset *s, const char *id, uint32_t *index)
{
    if (!dsq_node_id_valid(id, strnlen(id, DSQ_NODE_ID_MAX)))
        return -1;
    pthread_mutex_lock(&s->mu);
    size_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
    uint32_t i = find_in(s, n, id);
    if (i == DSQ_NODE_NONE && n < DSQ_NODES_MAX) {
        memcpy(s->ids[n], id, strlen(id) + 1);
        i = (uint32_t)n;
        atomic_store_explicit(&s->n, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&s->mu);
    if (i == DSQ_NODE_NONE)
        return -1;
    *index = i;
    return 0;
}

const char *dsq_nodeset_id(const dsq_nodeset *s, uint32_t index)
{
    return index < atomic_load_explicit(&s->n, memory_order_acquire) ? s->ids[index] : NULL;
}

size_t dsq_nodeset_count(const dsq_nodeset *s) { return atomic_load_explicit(&s->n, memory_order_acquire); }
