/* Unit tests: cluster/placement (rendezvous hashing). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cluster/placement.h"

static const char *const ids3[] = {"n1", "n2", "n3"};

Test(placement, copies_are_distinct_and_as_many_as_replicas)
{
    dsq_placement p;
    dsq_placement_static(&p, ids3, 3, 3);
    for (int d = 0; d < 200; d++) {
        char db[32];
        snprintf(db, sizeof db, "db%d", d);
        uint32_t out[8];
        cr_assert_eq(dsq_place(&p, db, out, 8), 3);
        cr_assert(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        for (int i = 0; i < 3; i++)
            cr_assert_lt(out[i], 3);
    }
    dsq_placement_static(&p, ids3, 3, 5); /* more replicas than nodes: every node */
    uint32_t out[8];
    cr_assert_eq(dsq_place(&p, "x", out, 8), 3);
    cr_assert_eq(dsq_place(&p, "x", out, 2), 2); /* bounded by the room given */
}

/* Every node must compute the same answer: it depends on the ids, not on
 * their order in the list. */
Test(placement, same_answer_whatever_the_order_of_the_list)
{
    static const char *const other[] = {"n3", "n1", "n2"};
    dsq_placement a, b;
    dsq_placement_static(&a, ids3, 3, 2);
    dsq_placement_static(&b, other, 3, 2);
    for (int d = 0; d < 200; d++) {
        char db[32];
        snprintf(db, sizeof db, "orders-%d", d);
        uint32_t oa[2], ob[2];
        dsq_place(&a, db, oa, 2);
        dsq_place(&b, db, ob, 2);
        for (int i = 0; i < 2; i++)
            cr_assert_str_eq(ids3[oa[i]], other[ob[i]], "db %s copy %d", db, i);
    }
}

/* Primaries spread over the nodes, and a node leaving moves only the
 * databases it held. */
Test(placement, spreads_and_moves_little)
{
    static const char *const ids4[] = {"n1", "n2", "n3", "n4"};
    dsq_placement four, three;
    dsq_placement_static(&four, ids4, 4, 1);
    dsq_placement_static(&three, ids4, 3, 1); /* n4 gone */
    int per_node[4] = {0}, moved = 0;
    for (int d = 0; d < 4000; d++) {
        char db[32];
        snprintf(db, sizeof db, "t%d", d);
        uint32_t a, b;
        dsq_place(&four, db, &a, 1);
        dsq_place(&three, db, &b, 1);
        per_node[a]++;
        if (a != b) {
            cr_assert_eq(a, 3, "%s moved from n%u though its node stayed", db, a + 1);
            moved++;
        }
    }
    for (int i = 0; i < 4; i++)
        cr_assert(per_node[i] > 800 && per_node[i] < 1200, "node %d has %d of 4000", i + 1, per_node[i]);
    cr_assert_eq(moved, per_node[3]);
}
