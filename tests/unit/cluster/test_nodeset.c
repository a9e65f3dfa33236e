/* Unit tests: cluster/nodeset — indices in the order ids are met, never
 * given twice, at most DSQ_NODES_MAX, and the same answers to threads
 * that add at once. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cluster/nodeset.h"

Test(nodeset, indices_in_order_met_and_kept)
{
    dsq_nodeset *s = dsq_nodeset_new();
    uint32_t a, b, again;
    cr_assert_eq(dsq_nodeset_find(s, "n1"), DSQ_NODE_NONE);
    cr_assert_null(dsq_nodeset_id(s, 0));
    cr_assert_eq(dsq_nodeset_intern(s, "n2", &a), 0);
    cr_assert_eq(dsq_nodeset_intern(s, "n1", &b), 0);
    cr_assert_eq(dsq_nodeset_intern(s, "n2", &again), 0);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(again, 0);
    cr_assert_eq(dsq_nodeset_find(s, "n1"), 1);
    cr_assert_str_eq(dsq_nodeset_id(s, 1), "n1");
    cr_assert_eq(dsq_nodeset_count(s), 2);
    /* Not ids: refused, nothing given. */
    cr_assert_eq(dsq_nodeset_intern(s, "", &a), -1);
    cr_assert_eq(dsq_nodeset_intern(s, "n 3", &a), -1);
    cr_assert_eq(dsq_nodeset_intern(s, "abcdefghijklmnopqrstuvwxyz0123456", &a), -1); /* 33 characters */
    cr_assert_eq(dsq_nodeset_count(s), 2);
    dsq_nodeset_free(s);
}

Test(nodeset, at_most_nodes_max)
{
    dsq_nodeset *s = dsq_nodeset_new();
    char id[16];
    uint32_t ix;
    for (int i = 0; i < DSQ_NODES_MAX; i++) {
        snprintf(id, sizeof id, "n%d", i);
        cr_assert_eq(dsq_nodeset_intern(s, id, &ix), 0);
        cr_assert_eq(ix, (uint32_t)i);
    }
    cr_assert_eq(dsq_nodeset_intern(s, "one-more", &ix), -1);
    cr_assert_eq(dsq_nodeset_intern(s, "n7", &ix), 0, "a known id still answers");
    cr_assert_eq(ix, 7);
    dsq_nodeset_free(s);
}

static dsq_nodeset *shared;
static uint32_t got[4][40];

static void *adder(void *arg)
{
    int t = (int)(intptr_t)arg;
    char id[16];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "n%d", (i * 7 + t * 13) % 40);
        cr_assert_eq(dsq_nodeset_intern(shared, id, &got[t][(i * 7 + t * 13) % 40]), 0);
    }
    return NULL;
}

Test(nodeset, threads_adding_at_once_agree)
{
    shared = dsq_nodeset_new();
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, adder, (void *)(intptr_t)t);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    cr_assert_eq(dsq_nodeset_count(shared), 40);
    bool seen[40] = {false};
    for (int i = 0; i < 40; i++) {
        for (int t = 1; t < 4; t++)
            cr_assert_eq(got[t][i], got[0][i], "n%d: %u and %u", i, got[0][i], got[t][i]);
        cr_assert_lt(got[0][i], 40);
        cr_assert(!seen[got[0][i]], "index %u given twice", got[0][i]);
        seen[got[0][i]] = true;
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        cr_assert_str_eq(dsq_nodeset_id(shared, got[0][i]), id);
    }
    dsq_nodeset_free(shared);
}
