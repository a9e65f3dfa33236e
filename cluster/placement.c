/* placement — rendezvous hashing of database names over the nodes:
 * the static rule, and the load-weighted one. */
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <xxhash.h>

#include "cluster/placement.h"

/* The score both rules start from: a hash of db with the node's seed. */
static uint64_t node_hash(const char *db, size_t len, uint64_t seed) { return XXH3_64bits_withSeed(db, len, seed); }

static size_t static_copies(const dsq_placement *p, const char *db, uint32_t *out, size_t max, uint32_t *primary,
                            uint64_t *epoch)
{
    size_t want = p->replicas < p->nnodes ? p->replicas : p->nnodes;
    if (want > max)
        want = max;
    uint64_t score[DSQ_NODES_MAX];
    size_t len = strlen(db);
    for (size_t i = 0; i < p->nnodes; i++)
        score[i] = node_hash(db, len, p->seeds[i]);
    /* The `want` highest scores by selection: n is small (at most 64). A
     * tie (two equal 64-bit hashes) goes to the lower node number. */
    uint64_t taken = 0;
    for (size_t k = 0; k < want; k++) {
        size_t best = p->nnodes;
        for (size_t i = 0; i < p->nnodes; i++) {
            if (taken & (1ull << i))
                continue;
            if (best == p->nnodes || score[i] > score[best])
                best = i;
        }
        taken |= 1ull << best;
        out[k] = (uint32_t)best;
    }
    if (primary != NULL)
        *primary = want > 0 ? out[0] : 0;
    if (epoch != NULL)
        *epoch = 1;
    return want;
}

void dsq_placement_static(dsq_placement *p, const char *const *ids, size_t n, unsigned replicas)
{
    memset(p, 0, sizeof *p);
    p->copies = static_copies;
    p->nnodes = n < DSQ_NODES_MAX ? n : DSQ_NODES_MAX;
    p->replicas = replicas;
    for (size_t i = 0; i < p->nnodes; i++)
        p->seeds[i] = XXH3_64bits(ids[i], strlen(ids[i]));
}

/* ---- load-weighted ---------------------------------------------------------------------------- */

/* Whether (score a, id ida) ranks before (b, idb). */
static bool before(double a, const char *ida, double b, const char *idb)
{
    return a > b || (a == b && strcmp(ida, idb) < 0);
}

size_t dsq_place_weighted(const char *db, const dsq_place_node *nodes, size_t n, unsigned replicas, uint32_t *out)
{
    size_t want = replicas < n ? replicas : n;
    if (want > DSQ_NODES_MAX)
        want = DSQ_NODES_MAX;
    if (want == 0)
        return 0;
    double mean_dbs = 0, mean_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        mean_dbs += (double)nodes[i].dbs / (double)n;
        mean_bytes += (double)nodes[i].bytes / (double)n;
    }
    size_t len = strlen(db);
    double top[DSQ_NODES_MAX];       /* the scores of out[0..k), best first */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        double r = ((mean_dbs > 0 ? (double)nodes[i].dbs / mean_dbs : 1) +
                    (mean_bytes > 0 ? (double)nodes[i].bytes / mean_bytes : 1)) / 2;
        double w = 1 / ((1 + r) * (1 + r));
        uint64_t h = node_hash(db, len, XXH3_64bits(nodes[i].id, strlen(nodes[i].id)));
        double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0; /* 2^53: in (0, 1), never 0 or 1 */
        double score = w / -log(u);
        /* insert into the best `want` so far (n is small: a cluster's nodes) */
        size_t at = k;
        while (at > 0 && before(score, nodes[i].id, top[at - 1], nodes[out[at - 1]].id))
            at--;
        if (at >= want)
            continue;
        size_t last = k < want ? k : want - 1;
        for (size_t j = last; j > at; j--) {
            top[j] = top[j - 1];
            out[j] = out[j - 1];
        }
        top[at] = score;
        out[at] = (uint32_t)i;
        if (k < want)
            k++;
    }
    return k;
}
