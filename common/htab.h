/* htab — an intrusive hash table of elements by name.
 *
 * Intrusive, as list.h: the link (a dsq_hnode) is a member of the
 * element and points at the element's own name, so adding allocates
 * nothing but, now and then, a larger bucket array; dsq_container_of
 * gets back from a link to its element. Names are C strings, compared
 * whole; the element keeps its name unchanged while it is in the table.
 * Nothing here locks: whoever owns a table says which lock guards it. A
 * zeroed table is empty and ready (its buckets come with the first add).
 *
 *     typedef struct db { char name[129]; dsq_hnode link; } db;
 *     dsq_htab t = {0};
 *     dsq_htab_add(&t, &d->link, d->name);
 *     db *x = dsq_container_of(dsq_htab_find(&t, "a"), db, link); // NULL: none
 *     dsq_htab_iter it = {0};
 *     for (dsq_hnode *n; (n = dsq_htab_next(&t, &it)) != NULL;)
 *         free(dsq_container_of(n, db, link)); // (the walk has read on past n)
 *     dsq_htab_free(&t);
 *
 * The bucket array doubles when the table holds more elements than it
 * has buckets; when that allocation fails the table goes on with longer
 * chains, still correct. */
#ifndef DSQ_HTAB_H
#define DSQ_HTAB_H

#include <stddef.h>

#include "common/list.h" /* dsq_container_of */

typedef struct dsq_hnode {
    struct dsq_hnode *next; /* the chain of its bucket */
    const char *key;        /* the element's name */
} dsq_hnode;

typedef struct dsq_htab {
    dsq_hnode **b;          /* nb chains; NULL before the first add */
    size_t nb;              /* a power of two, or 0 */
    size_t n;               /* elements */
} dsq_htab;

/* Buckets for at least n elements before the first doubling (a power of
 * two at least n is taken). 0, or -1: out of memory. For a table that
 * will be large from its start; dsq_htab_add starts at 64. */
int dsq_htab_reserve(dsq_htab *t, size_t n);

/* The element named key, or NULL. */
dsq_hnode *dsq_htab_find(const dsq_htab *t, const char *key);

/* Add n under the name key (a pointer into n's element, kept unchanged
 * while it is here); no element of that name may be here already.
 * 0, or -1: out of memory for the first buckets (n is not added). */
int dsq_htab_add(dsq_htab *t, dsq_hnode *n, const char *key);

/* Take n (which is here) out. */
void dsq_htab_remove(dsq_htab *t, dsq_hnode *n);

/* The elements one by one, in no order, from a zeroed iterator; NULL at
 * the end. The walk reads past each element before it hands it over, so
 * the caller may free that one (and take it out by dsq_htab_remove)
 * before the next call; adding during a walk is not allowed. */
typedef struct dsq_htab_iter {
    size_t i;               /* the next bucket to start */
    dsq_hnode *n;           /* the next element of the bucket under way */
} dsq_htab_iter;

dsq_hnode *dsq_htab_next(const dsq_htab *t, dsq_htab_iter *it);

/* Free the bucket array (the elements are the caller's); the table is
 * zeroed, empty and ready again. */
void dsq_htab_free(dsq_htab *t);

#endif
