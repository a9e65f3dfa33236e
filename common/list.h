/* list — intrusive FIFO queues and doubly-linked lists.
 *
 * Intrusive: the link is a member of the element (a dsq_qnode for a
 * queue, a dsq_lnode for a list), so linking allocates nothing and an
 * element's link is reused from one queue to the next; dsq_container_of
 * gets back from a link to its element. Nothing here locks: whoever owns
 * a queue says which lock guards it. A zeroed queue or list is empty.
 *
 * dsq_queue: singly linked, with head and tail. O(1): push at the tail,
 * pop at the head, and insert or remove after a node that a walk found
 * (NULL: at the front), which keeps the tail right when the last one
 * goes. dsq_queue_remove walks to find its node.
 *
 *     typedef struct job { int id; dsq_qnode link; } job;
 *     dsq_queue q = {0};
 *     dsq_queue_push(&q, &j->link);
 *     job *x;
 *     dsq_queue_foreach(x, &q, link)
 *         printf("%d\n", x->id);
 *     x = dsq_container_of(dsq_queue_pop(&q), job, link); // NULL when empty
 *
 * dsq_list: doubly linked, with head and tail, for LRU orders: push at
 * the tail and remove any element, both O(1). */
#ifndef DSQ_LIST_H
#define DSQ_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* The element of type `type` whose member `member` is the link `p`;
 * NULL when p is NULL (an empty queue's first, the last one's next). */
#define dsq_container_of(p, type, member) ((type *)dsq__container((p), offsetof(type, member)))

static inline void *dsq__container(const void *p, size_t off)
{
    return p ? (void *)((char *)p - off) : NULL;
}

/* ---- dsq_queue -------------------------------------------------------------------------------- */

typedef struct dsq_qnode {
    struct dsq_qnode *next; /* NULL: the last (or on no queue) */
} dsq_qnode;

typedef struct dsq_queue {
    dsq_qnode *head;        /* the oldest, popped first; NULL: empty */
    dsq_qnode *tail;        /* the newest; NULL: empty */
} dsq_queue;

static inline bool dsq_queue_empty(const dsq_queue *q) { return q->head == NULL; }

/* The head (the next to pop), or NULL. */
static inline dsq_qnode *dsq_queue_first(const dsq_queue *q) { return q->head; }

/* Append n at the tail. */
static inline void dsq_queue_push(dsq_queue *q, dsq_qnode *n)
{
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
}

/* Link n in after prev (a node of q), or at the head when prev is NULL. */
static inline void dsq_queue_insert_after(dsq_queue *q, dsq_qnode *prev, dsq_qnode *n)
{
    dsq_qnode **at = prev ? &prev->next : &q->head;
    n->next = *at;
    *at = n;
    if (n->next == NULL)
        q->tail = n;
}

/* Unlink and return the node after prev (a node of q), or the head when
 * prev is NULL; NULL if there is none. */
static inline dsq_qnode *dsq_queue_remove_after(dsq_queue *q, dsq_qnode *prev)
{
    dsq_qnode **at = prev ? &prev->next : &q->head;
    dsq_qnode *n = *at;
    if (n != NULL) {
        *at = n->next;
        if (q->tail == n)
            q->tail = prev;
        n->next = NULL;
    }
    return n;
}

/* Unlink and return the head, or NULL when empty. */
static inline dsq_qnode *dsq_queue_pop(dsq_queue *q) { return dsq_queue_remove_after(q, NULL); }

/* Unlink n, found by a walk from the head; false if it is not on q. */
static inline bool dsq_queue_remove(dsq_queue *q, dsq_qnode *n)
{
    dsq_qnode *prev = NULL;
    for (dsq_qnode *x = q->head; x != NULL; prev = x, x = x->next) {
        if (x == n) {
            dsq_queue_remove_after(q, prev);
            return true;
        }
    }
    return false;
}

/* Every node of q, in order, as a queue of its own; q is left empty. */
static inline dsq_queue dsq_queue_take(dsq_queue *q)
{
    dsq_queue all = *q;
    q->head = q->tail = NULL;
    return all;
}

/* Each element of q from the head: `pos` (a pointer to the element type)
 * linked through `member`. The body must not unlink pos. */
#define dsq_queue_foreach(pos, q, member)                                                          \
    for ((pos) = dsq_container_of((q)->head, __typeof__(*(pos)), member); (pos) != NULL;             \
         (pos) = dsq_container_of((pos)->member.next, __typeof__(*(pos)), member))

/* ---- dsq_list --------------------------------------------------------------------------------- */

typedef struct dsq_lnode {
    struct dsq_lnode *prev, *next; /* NULL at the ends (or on no list) */
} dsq_lnode;

typedef struct dsq_list {
    dsq_lnode *head, *tail;        /* the first and the last; NULL: empty */
} dsq_list;

/* Append n at the tail. */
static inline void dsq_list_push(dsq_list *l, dsq_lnode *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

/* Unlink n, which is on l. */
static inline void dsq_list_remove(dsq_list *l, dsq_lnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

/* Each element of l from the head, as dsq_queue_foreach; `tmp` (of the
 * same type) holds the next one, so that the body may unlink pos. */
#define dsq_list_foreach_safe(pos, tmp, l, member)                                                 \
    for ((pos) = dsq_container_of((l)->head, __typeof__(*(pos)), member);                            \
         (pos) != NULL && ((tmp) = dsq_container_of((pos)->member.next, __typeof__(*(pos)), member), true); \
         (pos) = (tmp))

#endif
