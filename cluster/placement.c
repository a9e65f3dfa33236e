/* placement — rendezvous hashing of database names over the nodes. */
#include <string.h>
#include <xxhash.h>

#include "cluster/placement.h"

static size_t static_copies(const dsq_placement *p, const char *db, uint32_t *out, size_t max, uint32_t *primary,
                            uint64_t *epoch)
{
    size_t want = p->replicas < p->nnodes ? p->replicas : p->nnodes;
    if (want > max)
        want = max;
    uint64_t score[DSQ_NODES_MAX];
    size_t len = strlen(db);
    for (size_t i = 0; i < p->nnodes; i++)
        score[i] = XXH3_64bits_withSeed(db, len, p->seeds[i]);
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
