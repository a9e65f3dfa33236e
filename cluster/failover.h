/* failover — with cluster.etcd, a new primary for every database whose
 * primary's node left etcd, without anyone acting.
 *
 * A node's key in etcd lives under a lease of node_ttl (topo.h): when the
 * process dies, stops for longer than that, or is cut off from etcd, its
 * key goes, and every node sees it go. Each node then looks at the
 * assignments (assign.h) of the databases it holds a copy of: for each
 * whose primary has no key any more, the copies that still have one are
 * the candidates, and the first of them in the assignment's order (the
 * order the database was placed in) steps forward. Every node computes
 * the same answer from the same view; while views differ (a moment after
 * a change), two may step forward, and etcd decides:
 *
 *   1. The candidate writes the assignment again with itself as primary
 *      and epoch + 1, by compare-and-swap on the value it read: of two
 *      candidates of one database, one write succeeds and the other finds
 *      the value changed and stands down.
 *   2. The winner promotes its copy (repl.h) in an epoch at least that
 *      one: a quorum of copies accepts it (fencing the old primary's
 *      epoch), the longest log among them becomes the new primary's (so
 *      the winner need not hold the highest durable LSN itself: it takes
 *      it from the copy that does), and it serves once what is left of
 *      the old primary's lease is over (none when that node went quiet a
 *      lease ago).
 *   3. When the promotion chose a higher epoch than etcd's (promotions
 *      by hand meanwhile), the assignment is written again with it.
 *
 * etcd only chooses who tries: safety does not rest on it. Two primaries
 * can never both acknowledge writes of one database, whatever etcd says
 * and whoever is cut off from it, because a promotion needs a quorum of
 * copies to accept its epoch, and an older primary's commits need a
 * quorum of acknowledgements in its own (repl.h).
 *
 * Reconciling: a database whose assignment names this node as primary
 * but whose copy here is not the primary (the promotion failed: no
 * quorum yet; the node restarted meanwhile) is promoted again, after a
 * backoff of 1 s doubling to 30 s while it keeps failing. The assignment
 * is read from etcd first (not from the watch's copy): a node cut off
 * from etcd still has the old one, naming it, while the others moved the
 * primary away; promoting on it would take the database back from the
 * primary etcd names (the copies accept any higher epoch), which would
 * take it back in turn, every sweep for as long as the cut lasts. When
 * etcd names another node, or cannot be asked, nothing is done.
 *
 * Nothing happens before the assignments were read whole and the nodes'
 * view is whole (a node missing from a view still being read is not
 * dead), nor while etcd cannot be reached (no node's key goes then:
 * etcd keeps leases across its own outages).
 *
 * The assignments are looked at when a node leaves or comes back, when
 * an assignment changes (dsq_failover_kick), and every 500 ms.
 *
 * Loop thread, but for the assignments' answers, handed over through a
 * mailbox. */
#ifndef DSQ_FAILOVER_H
#define DSQ_FAILOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/eplace.h"
#include "cluster/nodeset.h"


typedef struct dsq_failover dsq_failover;

/* A promotion's end: 0, the epoch and where the log it took over ends;
 * -2 and why when it did not start because another was under way on the
 * node (ask again); or -1 and why (loop thread). */
typedef void (*dsq_failover_promoted_fn)(void *arg, int rc, uint64_t epoch, uint64_t lsn, const char *msg);
/* (the same as repl.h's dsq_promote_fn, so that one passes for the other) */

typedef struct dsq_failover_cfg {
    uv_loop_t *loop;
    dsq_eplace *eplace;            /* the assignments and the nodes alive (borrowed) */
    const char *self;              /* this node's id (copied) */
    /* Promote this node's copy of db in an epoch at least min_epoch (as
     * dsq_repl_promote): 0 started (done runs later), -1 or -2 (one under
     * way) with a message. */
    int (*promote)(void *ud, const char *db, uint64_t min_epoch, dsq_failover_promoted_fn done, void *arg,
                   char *err, size_t errlen);
    /* Whether this node's copy of db is its primary (or becoming it). */
    bool (*primary_here)(void *ud, const char *db);
    /* Change db's copies: node `in` in place of `out` (repl.h,
     * dsq_repl_change); as promote. */
    int (*change)(void *ud, const char *db, const char *out, const char *in, uint64_t min_epoch,
                  dsq_failover_promoted_fn done, void *arg, char *err, size_t errlen);
    /* Whether this node is in db's copy set as replication knows it. */
    bool (*member)(void *ud, const char *db);
    /* Db's copy set as replication knows it, when a change made it, node
     * ids into ids[0..max); how many (0: the assignment's own, unchanged). */
    size_t (*copyset)(void *ud, const char *db, char (*ids)[DSQ_NODE_ID_MAX], size_t max);
    dsq_nodeset *ids;              /* the nodes known (borrowed), where new copies are chosen from */
    uint64_t dead_after_ms;        /* cluster.node_dead_after: a copy's node gone this long is replaced
                                      (0: never) */
    void *ud;
} dsq_failover_cfg;


int dsq_failover_start(const dsq_failover_cfg *cfg, dsq_failover **out, char *err, size_t errlen);

/* Nodes or assignments changed: look again soon. Loop thread. */
void dsq_failover_kick(dsq_failover *f);

/* Draining (dsq_cluster_drain): every database of which this node is the
 * primary by its assignment is handed to another copy (the first alive
 * and not draining, in the assignment's order): its assignment is written
 * naming that node, in epoch + 1, and that node promotes its copy. */
void dsq_failover_set_draining(dsq_failover *f, bool draining);
bool dsq_failover_draining(const dsq_failover *f);

/* Node id left etcd's view now (its failovers' time counts from here). */
void dsq_failover_node_left(dsq_failover *f, const char *id);

/* A promotion asked by hand (POST /v1/admin/promote): the assignment is
 * written with this node as primary and epoch + 1, as a failover's, then
 * the copy promoted; done(arg, ...) tells how it ended. 0; -1 (db not
 * placed, no copy here, the primary here already) or -2 (one under way)
 * with a message, done not called. */
int dsq_failover_promote(dsq_failover *f, const char *db, dsq_failover_promoted_fn done, void *arg, char *err,
                         size_t errlen);

/* Move db's copy on node `from` to node `to` (POST /v1/admin/move), this
 * node its primary: a change of its copies (dsq_repl_change), then its
 * assignment written with them. done as dsq_failover_promote's. */
int dsq_failover_move(dsq_failover *f, const char *db, const char *from, const char *to,
                      dsq_failover_promoted_fn done, void *arg, char *err, size_t errlen);

/* Stop (promotions under way end on their own; nothing is done with
 * them). NULL: nothing. Loop thread. */
void dsq_failover_stop(dsq_failover *f);
/* The node begins to stop: no failover, reconcile, hand-over or
 * promotion by hand starts from now on (one under way ends as it ends).
 * dsq_failover_stop still follows. */
void dsq_failover_quiesce(dsq_failover *f);

void dsq_failover_stats_get(const dsq_failover *f, dsq_failover_stats *out);

/* The most recent failovers made here, newest first, into out[0..max). */
size_t dsq_failover_recent(const dsq_failover *f, dsq_failover_record *out, size_t max);

#endif
