/* placement — which nodes hold a copy of each database.
 *
 * One interface, so that the rule can change without its callers: today
 * the static rule below; with a topology service, assignments recorded
 * there. A placement answers with node numbers (indexes into the
 * cluster's node list), best first. The first is the node that starts as
 * the database's primary; which node is primary later is the database's
 * epoch record's to say (a promotion moves it, repl.h).
 *
 * The static rule is rendezvous hashing: each node's score for a
 * database is a 64-bit hash of (node id, database name), and the copies
 * are the `replicas` nodes with the highest scores. Every node computes
 * the same answer from the same node list; adding or removing a node
 * moves only the copies that node gains or loses. Any thread.
 *
 * With the nodes and their load from etcd (topo.h), a new database's
 * copies are chosen once, by dsq_place_weighted, and recorded in etcd
 * (assign.h): the nodes' loads weigh the same hashing, so that new
 * databases go less to the nodes that hold more. */
#ifndef DSQ_PLACEMENT_H
#define DSQ_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

typedef struct dsq_placement dsq_placement;

struct dsq_placement {
    /* The nodes holding a copy of `db`, best first, into out[0..max);
     * returns how many (the replica count, or fewer when there are
     * fewer nodes or max is smaller; 0 when the rule does not know db
     * yet: an assignment not read yet). *primary and *epoch (when not
     * NULL) get the primary the rule names and its epoch: the first copy
     * and 1 for a rule that knows no more. */
    size_t (*copies)(const dsq_placement *p, const char *db, uint32_t *out, size_t max, uint32_t *primary,
                     uint64_t *epoch);
    void *ud;                      /* a rule's state kept elsewhere */
    /* ---- the static rule's state ---- */
    uint64_t seeds[DSQ_NODES_MAX]; /* each node's id, hashed */
    size_t nnodes;
    unsigned replicas;
};

/* The static rule over the nodes ids[0..n) (n <= DSQ_NODES_MAX), with
 * `replicas` copies of each database. */
void dsq_placement_static(dsq_placement *p, const char *const *ids, size_t n, unsigned replicas);

static inline size_t dsq_place(const dsq_placement *p, const char *db, uint32_t *out, size_t max)
{
    return p->copies(p, db, out, max, NULL, NULL);
}

/* ---- load-weighted rendezvous hashing ---- */

/* A node that may take a copy, and its load (topo.h's description). */
typedef struct dsq_place_node {
    const char *id;                /* its node id */
    uint64_t dbs, bytes;           /* the databases it holds, and their bytes */
} dsq_place_node;

/* The nodes to hold a new database `db`: min(replicas, n, DSQ_NODES_MAX)
 * of them, best first (the first is to be its primary), as indexes into
 * nodes[0..n) into out (room for that many); returns how many.
 *
 * Weighted rendezvous hashing: node i's score is w_i / -ln(u_i), where
 * u_i in (0, 1) is the static rule's 64-bit hash of (its id, db) (the
 * top 53 bits, plus a half, over 2^53), and the highest scores win. Node
 * i comes first with probability w_i / (w_1 + ... + w_n), and the same
 * inputs always give the same answer, whatever the order of the list
 * (a tie of scores goes to the lower id). The weight falls as a node's
 * load rises above the others':
 *
 *     r_i = (dbs_i / mean(dbs) + bytes_i / mean(bytes)) / 2
 *     w_i = 1 / (1 + r_i)^2
 *
 * where a part whose mean is 0 counts as 1 (nobody has any: no
 * difference). With equal loads every r is 1 and every w the same: each
 * node is first for about 1/n of the databases, and the answer is the
 * static rule's (but for scores within rounding of each other). A node at twice the mean load (r = 2) has 4/9 of an
 * average node's weight; an empty one (r = 0) four times it, and no
 * more, so that a new node takes a larger share of the new databases
 * while its load catches up, not all of them (its load in etcd lags
 * behind the databases it was just given). Floating point: another
 * build may order two nearly equal scores the other way, which is why
 * the answer is recorded (assign.h), not computed again elsewhere. */
size_t dsq_place_weighted(const char *db, const dsq_place_node *nodes, size_t n, unsigned replicas, uint32_t *out);

#endif
