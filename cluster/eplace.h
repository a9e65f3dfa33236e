/* eplace — where each database's copies are, as recorded in etcd: the
 * placement replication follows when the cluster runs on etcd.
 *
 * Every database has an assignment in etcd (assign.h: "dbs/<name>", its
 * copies by node id, the primary and its epoch), written only by
 * compare-and-swap. Every node keeps all of them in memory and watches
 * for changes, so that the placement answers at once, from any thread,
 * for every database placed already (dsq_eplace_placement).
 *
 * A database no assignment names yet is placed by the first node that
 * needs it (a client's request for it came here, dsq_eplace_wait): it
 * reads etcd (another node may have placed it a moment ago, and the watch
 * not told yet), and when the key is not there, chooses the copies by
 * rendezvous hashing weighted by load over the nodes alive now (their
 * keys in etcd, dsq_eplace_node; placement.h: dsq_place_weighted), and
 * creates the key only if it still does not exist. When two nodes place
 * one database at once, one creation wins and both follow it. The waiter
 * is told once the assignment is known (or why it could not be: etcd
 * unreachable, no node alive), and the request goes on from there.
 *
 * A message from another node about a database not known here yet (its
 * primary placed it and shipped a commit before the watch told this
 * node) is held (dsq_eplace_hold) while the assignment is read, then
 * given back in order (cfg.replay); dropped, bounded, when it cannot be.
 *
 * Threads: the assignments' threads are assign.h's; their events and
 * answers reach the loop through an async handle. Everything here runs
 * on the loop thread, except the placement's copies() (any thread). */
#ifndef DSQ_EPLACE_H
#define DSQ_EPLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/etcd.h"
#include "cluster/nodeset.h"
#include "cluster/placement.h"
#include "common/list.h"

typedef struct dsq_eplace dsq_eplace;

typedef struct dsq_eplace_cfg {
    uv_loop_t *loop;
    dsq_nodeset *ids;              /* node numbers (borrowed; outlives the object) */
    unsigned replicas;             /* copies of a new database (fewer when fewer nodes are alive) */
    dsq_etcd_cfg etcd;             /* copied */
    /* A held message, given back once its database is known (see above). */
    void (*replay)(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n);
    /* Database db's assignment changed (after the placement shows it). */
    void (*changed)(void *ud, const char *db);
    void *ud;
} dsq_eplace_cfg;

/* Start reading and watching the assignments. 0, or -1 with a message. */
int dsq_eplace_start(const dsq_eplace_cfg *cfg, dsq_eplace **out, char *err, size_t errlen);

/* Stop the threads (blocks up to about two etcd requests' timeouts);
 * waiters are told -1; the object is freed. NULL: nothing. */
void dsq_eplace_stop(dsq_eplace *p);

/* The placement over the assignments (valid while the object lives). */
const dsq_placement *dsq_eplace_placement(dsq_eplace *p);

/* Node `id` is alive with this load (its key in etcd), draining or not
 * (its key says so: no new database goes there while another node can
 * take it), or gone. */
void dsq_eplace_node(dsq_eplace *p, const char *id, bool up, bool draining, uint64_t dbs, uint64_t bytes);
/* Whether node id's key says it is draining. */
bool dsq_eplace_draining(const dsq_eplace *p, const char *id);

/* Whether db's assignment is known: 0; else 1 and w->done runs once it
 * is (or cannot be), unless cancelled first; -1 when not even that
 * (stopping, out of memory), with a message. */
int dsq_eplace_wait(dsq_eplace *p, const char *db, dsq_place_wait *w, char *err, size_t errlen);

/* Stop waiting (w->done will not run). A waiter not waiting: nothing. */
void dsq_eplace_cancel(dsq_eplace *p, dsq_place_wait *w);

/* Hold message (node, type, p[0..n)) about db, whose assignment is not
 * known: true when held (given back through cfg.replay); false when db is
 * known (the caller handles the message) or it cannot be held (dropped:
 * the sender's protocol recovers, as from a message lost with a link). */
bool dsq_eplace_hold(dsq_eplace *p, const char *db, size_t node, uint8_t type, const uint8_t *msg, size_t n);

/* Whether node id has a key in etcd now (as this node last heard). */
bool dsq_eplace_alive(const dsq_eplace *p, const char *id);
/* The same, and the load its key last told (zeros when none). */
void dsq_eplace_node_load(const dsq_eplace *p, const char *id, bool *alive, uint64_t *dbs, uint64_t *bytes);

/* The nodes' view is whole (topo's VIEW_READ): a node not alive in it has
 * no key. Until then dsq_eplace_view_whole is false. */
void dsq_eplace_view(dsq_eplace *p);
bool dsq_eplace_view_whole(const dsq_eplace *p);

/* The assignments themselves (assign.h), for who acts on them; NULL once
 * stopping. */
struct dsq_assign *dsq_eplace_assign(dsq_eplace *p);

/* Whether the first full read of the assignments is done. */
bool dsq_eplace_loaded(const dsq_eplace *p);

/* Assignments known. */
size_t dsq_eplace_count(const dsq_eplace *p);

#endif
