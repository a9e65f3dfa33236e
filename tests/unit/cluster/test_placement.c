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

/* ---- load-weighted ---------------------------------------------------------------------------- */

/* How many of `dbs` new databases each of nodes[0..n) is first for. */
static void firsts(const dsq_place_node *nodes, size_t n, int dbs, int *per_node)
{
    for (size_t i = 0; i < n; i++)
        per_node[i] = 0;
    for (int d = 0; d < dbs; d++) {
        char db[32];
        snprintf(db, sizeof db, "w%d", d);
        uint32_t out[1];
        cr_assert_eq(dsq_place_weighted(db, nodes, n, 1, out), 1);
        cr_assert_lt(out[0], n);
        per_node[out[0]]++;
    }
}

Test(placement_weighted, copies_are_distinct_best_first_and_bounded)
{
    dsq_place_node nodes[5] = {{"n1", 10, 100}, {"n2", 10, 100}, {"n3", 10, 100}, {"n4", 10, 100}, {"n5", 10, 100}};
    for (int d = 0; d < 300; d++) {
        char db[32];
        snprintf(db, sizeof db, "db%d", d);
        uint32_t out[8];
        cr_assert_eq(dsq_place_weighted(db, nodes, 5, 3, out), 3);
        cr_assert(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        for (int i = 0; i < 3; i++)
            cr_assert_lt(out[i], 5);
        /* best first: asking for fewer gives the same first ones */
        uint32_t one[1];
        cr_assert_eq(dsq_place_weighted(db, nodes, 5, 1, one), 1);
        cr_assert_eq(one[0], out[0]);
    }
    uint32_t out[8];
    cr_assert_eq(dsq_place_weighted("x", nodes, 2, 3, out), 2, "more replicas than nodes: every node");
    cr_assert_eq(dsq_place_weighted("x", nodes, 0, 3, out), 0);
    cr_assert_eq(dsq_place_weighted("x", nodes, 5, 0, out), 0);
}

/* The same inputs give the same answer, in ids, whatever the list's order. */
Test(placement_weighted, deterministic_whatever_the_order_of_the_list)
{
    dsq_place_node a[4] = {{"n1", 5, 500}, {"n2", 50, 100}, {"n3", 0, 0}, {"n4", 20, 9000}};
    dsq_place_node b[4] = {a[3], a[1], a[0], a[2]};
    for (int d = 0; d < 500; d++) {
        char db[32];
        snprintf(db, sizeof db, "orders-%d", d);
        uint32_t oa[3], ob[3], oa2[3];
        cr_assert_eq(dsq_place_weighted(db, a, 4, 3, oa), 3);
        cr_assert_eq(dsq_place_weighted(db, b, 4, 3, ob), 3);
        cr_assert_eq(dsq_place_weighted(db, a, 4, 3, oa2), 3);
        for (int i = 0; i < 3; i++) {
            cr_assert_str_eq(a[oa[i]].id, b[ob[i]].id, "db %s copy %d", db, i);
            cr_assert_eq(oa[i], oa2[i]);
        }
    }
}

/* Equal loads: each node first for about 1/n, and the static rule's answer. */
Test(placement_weighted, equal_loads_spread_evenly_as_the_static_rule)
{
    static const char *const ids4[] = {"n1", "n2", "n3", "n4"};
    dsq_place_node nodes[4] = {{"n1", 7, 7000}, {"n2", 7, 7000}, {"n3", 7, 7000}, {"n4", 7, 7000}};
    int per_node[4];
    firsts(nodes, 4, 4000, per_node);
    for (int i = 0; i < 4; i++)
        cr_assert(per_node[i] > 800 && per_node[i] < 1200, "node %d is first for %d of 4000", i + 1, per_node[i]);
    dsq_placement p;
    dsq_placement_static(&p, ids4, 4, 3);
    for (int d = 0; d < 1000; d++) {
        char db[32];
        snprintf(db, sizeof db, "w%d", d);
        uint32_t w[3], s[3];
        dsq_place_weighted(db, nodes, 4, 3, w);
        dsq_place(&p, db, s, 3);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(w[i], s[i], "db %s copy %d", db, i);
    }
    /* no load anywhere is equal loads too */
    dsq_place_node idle[4] = {{"n1", 0, 0}, {"n2", 0, 0}, {"n3", 0, 0}, {"n4", 0, 0}};
    int idle_per_node[4];
    firsts(idle, 4, 4000, idle_per_node);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(idle_per_node[i], per_node[i]);
}

/* A node with much more load is first for clearly fewer; an empty one
 * for more, not all. Expected shares are w_i / sum(w) (placement.h). */
Test(placement_weighted, load_steers_new_databases)
{
    int per_node[4];
    /* three times the others' databases and bytes: r = 2 against 2/3,
     * w = 1/9 against 9/25: 9.4 % of the firsts instead of 25 % */
    dsq_place_node heavy[4] = {{"n1", 300, 3000000}, {"n2", 100, 1000000}, {"n3", 100, 1000000},
                               {"n4", 100, 1000000}};
    firsts(heavy, 4, 4000, per_node);
    cr_assert(per_node[0] > 200 && per_node[0] < 560, "the heavy node is first for %d of 4000", per_node[0]);
    for (int i = 1; i < 4; i++)
        cr_assert(per_node[i] > 1050, "node %d is first for %d of 4000", i + 1, per_node[i]);

    /* bytes alone count: three times the bytes, the same databases: 15 % */
    dsq_place_node big[4] = {{"n1", 100, 3000000}, {"n2", 100, 1000000}, {"n3", 100, 1000000},
                             {"n4", 100, 1000000}};
    firsts(big, 4, 4000, per_node);
    cr_assert(per_node[0] > 400 && per_node[0] < 800, "the node with more bytes is first for %d", per_node[0]);
    /* and databases alone */
    dsq_place_node many[4] = {{"n1", 300, 1000000}, {"n2", 100, 1000000}, {"n3", 100, 1000000},
                              {"n4", 100, 1000000}};
    firsts(many, 4, 4000, per_node);
    cr_assert(per_node[0] > 400 && per_node[0] < 800, "the node with more databases is first for %d", per_node[0]);

    /* a new, empty node: w = 1 against 0.18 each, 64 %, not all */
    dsq_place_node fresh[4] = {{"n1", 0, 0}, {"n2", 100, 1000000}, {"n3", 100, 1000000}, {"n4", 100, 1000000}};
    firsts(fresh, 4, 4000, per_node);
    cr_assert(per_node[0] > 2200 && per_node[0] < 2900, "the empty node is first for %d of 4000", per_node[0]);
    for (int i = 1; i < 4; i++)
        cr_assert(per_node[i] > 250, "node %d is first for %d of 4000", i + 1, per_node[i]);
}
