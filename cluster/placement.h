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
 * moves only the copies that node gains or loses. Any thread. */
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

#endif
