/* nodeset — the cluster's node ids and the indices the rest of the
 * cluster names them by.
 *
 * Replication keeps arrays by node index, the epochs file names a
 * database's primary, the links (peer.h) have one link per index, and an
 * assignment in etcd names its copies: all of them must agree on which
 * index is which node, even for a node known only by name so far (an
 * epochs file read at start names a primary that etcd has not shown yet).
 * So one table gives the indices, for everyone: the configured nodes
 * first (cluster.peers, in order: the same indices as before there was
 * etcd), then each id met since, in turn.
 *
 * An index names one id for the life of the object and is never given to
 * another: at most DSQ_NODES_MAX ids over its life. Adding takes a mutex;
 * reading (find, id, count) takes none: an entry is written in full
 * before the count that covers it is published (release/acquire), and is
 * never changed afterwards. Any thread. */
#ifndef DSQ_NODESET_H
#define DSQ_NODESET_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

#define DSQ_NODE_NONE UINT32_MAX /* no such node */

typedef struct dsq_nodeset dsq_nodeset;

dsq_nodeset *dsq_nodeset_new(void);
void dsq_nodeset_free(dsq_nodeset *s);

/* The index of id, given now if it had none: 0, or -1 when the id is not
 * a valid node id (dsq_node_id_valid) or DSQ_NODES_MAX ids have indices
 * already. */
int dsq_nodeset_intern(dsq_nodeset *s, const char *id, uint32_t *index);

/* The index of id, or DSQ_NODE_NONE when it has none. */
uint32_t dsq_nodeset_find(const dsq_nodeset *s, const char *id);

/* The id at `index` (valid for the object's life), or NULL past count. */
const char *dsq_nodeset_id(const dsq_nodeset *s, uint32_t index);

/* Indices given so far: every index is below this. */
size_t dsq_nodeset_count(const dsq_nodeset *s);

#endif
