/* Unit tests: common/list (intrusive queues and lists). */
#include <criterion/criterion.h>

#include "common/list.h"

typedef struct item {
    int id;
    dsq_qnode qlink;
    dsq_lnode llink;
} item;

/* The ids on q from the head, into out; how many. */
static size_t queue_ids(const dsq_queue *q, int *out, size_t cap)
{
    size_t n = 0;
    const item *x;
    dsq_queue_foreach(x, q, qlink) {
        cr_assert_lt(n, cap);
        out[n++] = x->id;
    }
    return n;
}

static item *pop(dsq_queue *q) { return dsq_container_of(dsq_queue_pop(q), item, qlink); }

Test(list, queue_fifo)
{
    item it[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    dsq_queue q = {0};
    cr_assert(dsq_queue_empty(&q));
    cr_assert_null(dsq_queue_first(&q));
    cr_assert_null(pop(&q));
    for (int i = 0; i < 4; i++)
        dsq_queue_push(&q, &it[i].qlink);
    cr_assert_not(dsq_queue_empty(&q));
    cr_assert_eq(dsq_queue_first(&q), &it[0].qlink);
    cr_assert_eq(q.tail, &it[3].qlink);
    for (int i = 0; i < 4; i++) {
        item *x = pop(&q);
        cr_assert_eq(x, &it[i]);
        cr_assert_null(x->qlink.next, "a popped node keeps no link");
    }
    cr_assert(dsq_queue_empty(&q));
    cr_assert_null(q.tail);
    /* Empty again, it takes pushes as at first. */
    dsq_queue_push(&q, &it[2].qlink);
    cr_assert_eq(q.head, &it[2].qlink);
    cr_assert_eq(q.tail, &it[2].qlink);
}

Test(list, queue_insert)
{
    item it[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    dsq_queue q = {0};
    dsq_queue_insert_after(&q, NULL, &it[1].qlink); /* into an empty queue */
    cr_assert_eq(q.tail, &it[1].qlink);
    dsq_queue_insert_after(&q, NULL, &it[0].qlink); /* at the front */
    dsq_queue_insert_after(&q, &it[1].qlink, &it[3].qlink); /* after the last: the new tail */
    cr_assert_eq(q.tail, &it[3].qlink);
    dsq_queue_insert_after(&q, &it[1].qlink, &it[2].qlink); /* in the middle */
    cr_assert_eq(q.tail, &it[3].qlink);
    int ids[8];
    cr_assert_eq(queue_ids(&q, ids, 8), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ids[i], i);
}

Test(list, queue_remove)
{
    item it[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    item stranger = {.id = 9};
    dsq_queue q = {0};
    for (int i = 0; i < 4; i++)
        dsq_queue_push(&q, &it[i].qlink);
    cr_assert_not(dsq_queue_remove(&q, &stranger.qlink));
    cr_assert(dsq_queue_remove(&q, &it[1].qlink)); /* the middle */
    cr_assert_eq(dsq_queue_remove_after(&q, &it[2].qlink), &it[3].qlink); /* the last */
    cr_assert_eq(q.tail, &it[2].qlink, "the tail is the one before the last removed");
    cr_assert_null(dsq_queue_remove_after(&q, &it[2].qlink), "nothing after the tail");
    int ids[8];
    cr_assert_eq(queue_ids(&q, ids, 8), 2);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[1], 2);
    /* A push after removing the last goes after the new tail. */
    dsq_queue_push(&q, &it[3].qlink);
    cr_assert_eq(queue_ids(&q, ids, 8), 3);
    cr_assert_eq(ids[2], 3);
    /* Removing the only one left empties it, tail too. */
    cr_assert(dsq_queue_remove(&q, &it[0].qlink));
    cr_assert(dsq_queue_remove(&q, &it[3].qlink));
    cr_assert(dsq_queue_remove(&q, &it[2].qlink));
    cr_assert(dsq_queue_empty(&q));
    cr_assert_null(q.tail);
}

Test(list, queue_take)
{
    item it[3] = {{.id = 0}, {.id = 1}, {.id = 2}};
    dsq_queue q = {0};
    for (int i = 0; i < 3; i++)
        dsq_queue_push(&q, &it[i].qlink);
    dsq_queue all = dsq_queue_take(&q);
    cr_assert(dsq_queue_empty(&q));
    cr_assert_null(q.tail);
    int ids[8];
    cr_assert_eq(queue_ids(&all, ids, 8), 3);
    cr_assert_eq(all.tail, &it[2].qlink);
}

/* The ids on l from the head, checked against the links backwards too. */
static size_t list_ids(const dsq_list *l, int *out, size_t cap)
{
    size_t n = 0;
    item *x, *next;
    dsq_list_foreach_safe(x, next, l, llink) {
        cr_assert_lt(n, cap);
        out[n++] = x->id;
    }
    size_t back = 0;
    for (const dsq_lnode *p = l->tail; p; p = p->prev)
        cr_assert_eq(dsq_container_of(p, item, llink)->id, out[n - ++back]);
    cr_assert_eq(back, n);
    return n;
}

Test(list, list_push_remove)
{
    item it[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    dsq_list l = {0};
    cr_assert_null(l.head);
    for (int i = 0; i < 4; i++)
        dsq_list_push(&l, &it[i].llink);
    cr_assert_eq(l.head, &it[0].llink);
    int ids[8];
    cr_assert_eq(list_ids(&l, ids, 8), 4);
    dsq_list_remove(&l, &it[0].llink); /* the head */
    dsq_list_remove(&l, &it[2].llink); /* the middle */
    dsq_list_remove(&l, &it[3].llink); /* the tail */
    cr_assert_eq(l.tail, &it[1].llink);
    cr_assert_null(it[3].llink.prev);
    cr_assert_eq(list_ids(&l, ids, 8), 1);
    /* To the back again (most recently used). */
    dsq_list_push(&l, &it[0].llink);
    dsq_list_remove(&l, &it[1].llink);
    dsq_list_push(&l, &it[1].llink);
    cr_assert_eq(list_ids(&l, ids, 8), 2);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[1], 1);
    dsq_list_remove(&l, &it[0].llink);
    dsq_list_remove(&l, &it[1].llink);
    cr_assert_null(l.head);
    cr_assert_null(l.tail);
}

Test(list, list_remove_while_walking)
{
    item it[5] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
    dsq_list l = {0};
    for (int i = 0; i < 5; i++)
        dsq_list_push(&l, &it[i].llink);
    item *x, *next;
    dsq_list_foreach_safe(x, next, &l, llink) {
        if (x->id % 2 == 0)
            dsq_list_remove(&l, &x->llink);
    }
    int ids[8];
    cr_assert_eq(list_ids(&l, ids, 8), 2);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[1], 3);
}
