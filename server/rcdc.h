/* rcdc — a database's CDC subscription run on the node of its primary
 * for a subscriber on another node: a keyspace's CDC stream on its home
 * reaching a shard whose primary is elsewhere (protocol/cdcsub.h's
 * dsq_cdc_remote).
 *
 * The subscriber's node sends SUB (the request) over the link; the
 * primary's node starts a dsq_cdcsub there and sends back STARTED (the
 * outcome and the LSN it starts after), then EVENTS (each batch of
 * rendered events, with their LSNs and commit ends) and, if it ends by
 * itself, ENDED. The subscriber sends STOP when it is done, PAUSE when
 * its client cannot take more (the primary's side stops reading until
 * RESUME), so what waits in memory on either side stays within what was
 * under way. When the link goes down both sides end the subscription:
 * the subscriber's sink hears it as an end (NOT_PRIMARY), to be resumed
 * from its position.
 *
 * Loop thread only. */
#ifndef DSQ_RCDC_H
#define DSQ_RCDC_H

#include "cluster/cluster.h"
#include "protocol/cdcsub.h"

typedef struct dsq_rcdc dsq_rcdc;

/* Both sides for this node: it takes the cluster's extension messages
 * (dsq_cluster_set_ext). NULL when out of memory. */
dsq_rcdc *dsq_rcdc_new(dsq_cluster *c, dsq_engine *e, dsq_cdc_cache *cache);
/* The remote hooks for sessions (dsq_dosql_set_cdc_remote). */
const dsq_cdc_remote *dsq_rcdc_remote(dsq_rcdc *r);
/* Every subscription ends (the sinks are not called). After the
 * sessions closed, before the engine is freed. */
void dsq_rcdc_free(dsq_rcdc *r);

#endif
