/* htab — an intrusive hash table of elements by name (see htab.h). */
#include "common/htab.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static size_t slot(size_t nb, const char *key) { return (size_t)dsq_hash_str(key) & (nb - 1); }

/* Move every element into nb new buckets. -1: out of memory (as it was). */
static int rehash(dsq_htab *t, size_t nb)
{
    dsq_hnode **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < t->nb; i++)
        for (dsq_hnode *n = t->b[i], *next; n != NULL; n = next) {
            next = n->next;
            size_t k = slot(nb, n->key);
            n->next = b[k];
            b[k] = n;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
    return 0;
}

int dsq_htab_reserve(dsq_htab *t, size_t n)
{
    size_t nb = 1;
    while (nb < n)
        nb *= 2;
    return nb > t->nb ? rehash(t, nb) : 0;
}

dsq_hnode *dsq_htab_find(const dsq_htab *t, const char *key)
{
    if (t->nb == 0)
        return NULL;
    for (dsq_hnode *n = t->b[slot(t->nb, key)]; n != NULL; n = n->next)
        if (strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

int dsq_htab_add(dsq_htab *t, dsq_hnode *n, const char *key)
{
    if (t->nb == 0 && rehash(t, 64) != 0)
        return -1;
    if (t->n >= t->nb)
        (void)rehash(t, t->nb * 2); /* (failed: longer chains) */
    n->key = key;
    size_t k = slot(t->nb, key);
    n->next = t->b[k];
    t->b[k] = n;
    t->n++;
    return 0;
}

void dsq_htab_remove(dsq_htab *t, dsq_hnode *n)
{
    for (dsq_hnode **p = &t->b[slot(t->nb, n->key)]; *p != NULL; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            t->n--;
            return;
        }
}

dsq_hnode *dsq_htab_next(const dsq_htab *t, dsq_htab_iter *it)
{
    dsq_hnode *n = it->n;
    while (n == NULL && it->i < t->nb)
        n = t->b[it->i++];
    if (n != NULL)
        it->n = n->next;
    return n;
}

void dsq_htab_free(dsq_htab *t)
{
    free(t->b);
    *t = (dsq_htab){0};
}
