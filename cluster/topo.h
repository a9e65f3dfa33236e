/* topo — this node's presence in etcd, and its view of the other nodes,
 * on two threads of its own (etcd.h's blocking client).
 *
 *     dsq_topo_cfg cfg = {.etcd = {.endpoints = "http://10.0.0.1:2379", .prefix = "/dosqld/"},
 *                         .id = "n1", .peer = "10.0.0.5:7000", .client = "10.0.0.5:8787",
 *                         .on_event = on_topo, .ud = server};
 *     dsq_topo *t = dsq_topo_start(&cfg, err, sizeof err);
 *     ...
 *     dsq_topo_set_load(t, dbs, bytes);   // any thread, any time
 *     ...
 *     dsq_topo_stop(t);                   // this node leaves the others' view at once
 *
 * In etcd. Each node is one key, "nodes/<id>" below the etcd prefix, under
 * a lease of node_ttl seconds that the node keeps alive; its value is the
 * node's description as JSON (dsq_topo_node_encode):
 *
 *     {"id":"n1","peer":"10.0.0.5:7000","client":"10.0.0.5:8787","forward":"",
 *      "load":{"dbs":12,"bytes":4096000},"started":1796000000000,"draining":false}
 *
 * ("draining" may be missing: false.)
 *
 * "started" is when this dsq_topo started (ms since the Unix epoch): a
 * restarted process has a new one. A node whose process dies, or stops
 * for longer than the TTL, loses its lease and so its key: the others see
 * it leave.
 *
 * The registration thread ("dsq-topo-reg", with an etcd handle of its
 * own) grants the lease, writes the key, and then every node_ttl / 3
 * renews the lease; in the same round it writes the key again when the
 * load changed (dsq_topo_set_load), at most once per node_ttl.
 * - The key is written with a compare-and-swap: only when it does not
 *   exist, or is under this node's own lease, or under no lease at all (a
 *   key left by hand, which would never go away). When it exists under
 *   another lease, a second process claims the same node id: this one
 *   does not write, says so (REGISTER_CONFLICT, once, and a warning
 *   "topo_register_conflict" in the log), and tries again every round
 *   (and at once when the watch sees that key deleted) until the other's
 *   lease is gone; then REGISTERED.
 * - When a renewal (or a write under the lease) says the lease is gone
 *   (the process was stopped for longer than the TTL, or etcd lost it):
 *   LEASE_LOST, then a new lease and the key written again: REGISTERED.
 * - When the watch sees this node leave the view (its key deleted by
 *   hand, or no longer a valid description), the next round starts at
 *   once and writes the key again (REGISTERED again).
 * While etcd does not answer, requests are tried again after 100 ms,
 * doubling to 1 s. A lease is not given up because etcd did not answer:
 * etcd keeps leases across its restarts (their TTL starts again when a
 * leader is elected), so after an outage the key is usually still there.
 *
 * The watch thread ("dsq-topo-watch", with its own handle) reads every
 * "nodes/" key (one NODE_UP per node, this one included; then VIEW_READ:
 * the view is whole, a node not in it has no key), then watches
 * from the revision after that read: a key written for an id not in the
 * view, NODE_UP; written again with a description that differs (an
 * address, the load, "started"), NODE_CHANGED (the same description
 * again: nothing); deleted (its lease expired or was revoked, or by
 * hand), NODE_DOWN. When the watch's start revision was compacted away or
 * its stream broke, it reads the keys again and reports only the
 * differences from the view it had (a key deleted and written again
 * meanwhile with the same description: nothing; with another, NODE_CHANGED),
 * then watches from that read. A "nodes/" key whose name is not a valid
 * node id, or whose value is not a valid description of that id, is not
 * in the view (it is logged: "topo_bad_node"); a node whose key turns
 * invalid leaves the view (NODE_DOWN). A read that fails is tried again
 * after 100 ms, doubling to 1 s, as is a watch that broke within 1 s of
 * starting.
 *
 * etcd's health. When a request of either thread fails (etcd unreachable,
 * a timeout, an error answered), ETCD_DOWN, once; when one succeeds
 * again, ETCD_UP. A failure of a request that was sent before the last
 * success does not count. (A watch's stream breaking does not count: the
 * read that follows it does.)
 *
 * Events. on_event(ud, ev) runs on the module's threads: REGISTERED,
 * REGISTER_CONFLICT and LEASE_LOST on the registration thread, NODE_* on
 * the watch thread, ETCD_DOWN and ETCD_UP on whichever saw it. Calls are
 * never concurrent (a mutex serializes them), so they come in one order.
 * on_event must not block long (it holds up the lease's renewal or the
 * watch), nor call dsq_topo_stop; it may call dsq_topo_set_load. An owner
 * with an event loop copies what it needs into a queue under a mutex and
 * wakes its loop (uv_async_send), as cluster/repl.c does. ev and what it
 * points to are valid during the call only. Once dsq_topo_stop has begun,
 * on_event is not called again (a call under way is waited for).
 *
 * Stopping. dsq_topo_stop sets the threads' cancel flag: a watch notices
 * it within 100 ms, a request under way ends within its timeout (per
 * endpoint tried). Then the registration thread revokes the lease, once,
 * bounded by the same timeout (best effort: the others see this node leave
 * at once; when the revoke fails, when its TTL runs out). So it returns
 * within about two requests' timeouts. The etcd handles' timeout_ms is
 * cfg.etcd.timeout_ms, or by default node_ttl / 3 (at least 500 ms): a
 * request that hangs does not hold up more than one round of renewals. */
#ifndef DSQ_TOPO_H
#define DSQ_TOPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "cluster/etcd.h"
#include "common/buf.h"

#define DSQ_TOPO_ADDR_MAX 256      /* bytes of an address in a description, with its NUL */
#define DSQ_TOPO_TTL_DEFAULT 3     /* node_ttl, seconds */
#define DSQ_TOPO_KEYS "nodes/"     /* the nodes' keys, below the etcd prefix */

/* A node as its key describes it. */
typedef struct dsq_topo_node {
    char id[DSQ_NODE_ID_MAX];      /* 1 to 31 of letters, digits, '-', '_', '.' (as dsq_node_parse) */
    char peer[DSQ_TOPO_ADDR_MAX];  /* HOST:PORT of its listener for the other nodes; never "" */
    char client[DSQ_TOPO_ADDR_MAX];  /* its clients' listener; "" for none */
    char forward[DSQ_TOPO_ADDR_MAX]; /* its listener for passed-on connections; "" for none */
    uint64_t dbs;                  /* load: the databases it holds */
    uint64_t bytes;                /* and their bytes */
    uint64_t started_ms;           /* when its dsq_topo started, ms since the Unix epoch */
    bool draining;                 /* its primaries are moving away; no new database goes there */
} dsq_topo_node;

/* Write n as its key's JSON value (the format above) into out (appended).
 * 0; -1 with a message when n is not valid (an id that is not one, an
 * empty peer, a number past 2^63 - 1) or memory runs out. */
int dsq_topo_node_encode(const dsq_topo_node *n, dsq_buf *out, char *err, size_t errlen);

/* Read a key's value p[0..len) into *out. Every field must be there, with
 * its type ("load" an object of "dbs" and "bytes"; the numbers integers
 * from 0 to 2^63 - 1), the strings without NUL and shorter than their
 * fields, the id valid, peer not empty; other fields are ignored. 0; -1
 * with a message (*out zeroed). */
int dsq_topo_node_decode(const void *p, size_t len, dsq_topo_node *out, char *err, size_t errlen);

typedef enum dsq_topo_event_type {
    DSQ_TOPO_REGISTERED,           /* this node's key is written (node: it, as written) */
    DSQ_TOPO_REGISTER_CONFLICT,    /* the key is another lease's (node: its description, NULL if unreadable) */
    DSQ_TOPO_LEASE_LOST,           /* this node's lease is gone (and so its key); a new one follows */
    DSQ_TOPO_ETCD_DOWN,            /* a request failed (msg: why) */
    DSQ_TOPO_ETCD_UP,              /* etcd answers again */
    DSQ_TOPO_NODE_UP,              /* a node joined the view */
    DSQ_TOPO_NODE_CHANGED,         /* a node's description changed (node: the new one) */
    DSQ_TOPO_NODE_DOWN,            /* a node left the view (node: as it was last) */
    DSQ_TOPO_VIEW_READ,            /* a read of every node's key is reported (the NODE_* events
                                    * before it): the view is whole as of that read (revision) */
} dsq_topo_event_type;

typedef struct dsq_topo_event {
    dsq_topo_event_type type;
    const char *id;                /* the node concerned: NODE_*'s node, else this node */
    const dsq_topo_node *node;     /* NODE_*, REGISTERED, REGISTER_CONFLICT (see above); else NULL */
    int64_t revision;              /* NODE_*: etcd's revision of the change (or of the read that
                                    * found it); REGISTERED: of the write; else 0 */
    const char *msg;               /* what happened, for the log (never NULL) */
} dsq_topo_event;

typedef void (*dsq_topo_event_fn)(void *ud, const dsq_topo_event *ev);

typedef struct dsq_topo_cfg {
    dsq_etcd_cfg etcd;             /* each thread's handle is made from it (copied);
                                    * timeout_ms 0: node_ttl / 3, at least 500 ms */
    const char *id;                /* this node (copied) */
    const char *peer;              /* its description's addresses (copied); client and */
    const char *client;            /* forward may be NULL (none) */
    const char *forward;
    uint64_t dbs, bytes;           /* the load to start with */
    unsigned node_ttl;             /* seconds of the lease; 0: DSQ_TOPO_TTL_DEFAULT */
    dsq_topo_event_fn on_event;    /* may be NULL */
    void *ud;
} dsq_topo_cfg;

typedef struct dsq_topo dsq_topo;

/* Start both threads; registering and reading the view happen on them
 * (etcd need not be up: ETCD_DOWN then). NULL with a message when cfg is
 * not valid (the description does not encode, the etcd settings are not
 * valid) or a thread or memory cannot be had. */
dsq_topo *dsq_topo_start(const dsq_topo_cfg *cfg, char *err, size_t errlen);

/* The load the next rounds write (any thread; at most once per node_ttl,
 * only when it changed since the last write). */
void dsq_topo_set_load(dsq_topo *t, uint64_t dbs, uint64_t bytes);

/* Say in this node's key that it is draining (or no longer is): written
 * at the next round, at once (not held to once per node_ttl as the load
 * is). Any thread. */
void dsq_topo_set_draining(dsq_topo *t, bool draining);

/* Stop both threads, revoke the lease (see "Stopping"), free t. NULL:
 * nothing. Not from on_event. */
void dsq_topo_stop(dsq_topo *t);

/* ---- internal, for its unit test ------------------------------------------------------------ */

/* Pause (true) or resume (false) the registration thread: while paused it
 * sends nothing to etcd (no renewal, no write), as if the process were
 * stopped, so its lease expires after the TTL. Pausing waits for the
 * thread to be paused: true, or false when it was not within 10 s.
 * Resuming returns at once. For the tests only. */
bool dsq__topo_pause_registration(dsq_topo *t, bool pause);

/* The same for the watch thread: paused, it ends its watch and waits;
 * resumed, it watches again from the revision after the last it saw
 * (without reading the keys first), so that a compaction meanwhile makes
 * the watch fail as compacted. For the tests only. */
bool dsq__topo_pause_watch(dsq_topo *t, bool pause);

#endif
