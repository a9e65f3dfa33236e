/* repl — replication of every database's log over the links between
 * nodes (peer.h): the engine's hooks (engine.h, "replication") on one
 * side, messages to and from the other copies on the other.
 *
 * Each database has `replicas` copies, on the nodes placement.h names.
 * Its primary is the one its newest epoch names (epochs.h; epoch 1's is
 * the placement's first node). The primary sends each commit record, as
 * logged, to every follower that is in step (streaming); a follower
 * applies records in order (DSQ_OP_APPLY), syncs them with group commit,
 * and acknowledges how far its log is durable. A reply after a commit
 * leaves once commit_ack's number of copies hold it durably (the
 * primary's own sync counts as one). The primary also tells followers
 * how far commits are acknowledged (its commit LSN): a follower's
 * replies wait for it, so that no copy shows a commit that could still
 * be lost.
 *
 * Sync: a follower that is not in step (it was down, its link broke, its
 * queue overflowed, a new primary took over) says where its log ends and
 * in which epoch its last record was made (BEHIND). The primary answers
 * with where their logs agree up to and its history past that (SYNC); the
 * follower cuts its log back to that point when it holds more (records of
 * an epoch that never had them acknowledged: DSQ_OP_TRUNCATE), records
 * the history, and says it is ready (READY); the primary sends the rest
 * from its own log (DSQ_OP_LOG_READ) until it is in step.
 *
 * Rebuild: when the primary's log no longer reaches back to where the
 * follower's ends (history_retention let it go), the primary says where
 * it starts (REBUILD). The follower makes its copy again from the object
 * store (DSQ_OP_REBUILD: what the primary uploaded, no further than the
 * epoch the upload was made in agrees with the history it recorded at
 * the SYNC), then says where it is (BEHIND) and syncs from there. When
 * the store's copy does not reach the primary's log yet (the primary has
 * not uploaded since), it tries again after a backoff.
 *
 * Promotion (dsq_repl_promote): the node to become primary proposes an
 * epoch above every one it knows (PROPOSE). A copy that has not accepted
 * a higher one records it durably, from then on refuses the messages of
 * older epochs (answering FENCED, naming the new primary), tells the old
 * primary so, and answers with its log's end and history (ACCEPT). With
 * enough acceptances (so many that every set of copies that could have
 * acknowledged a commit meets them), the node takes the longest log among
 * them (FETCH from that copy when it is not its own), records the start
 * of its epoch, waits out the old primary's lease, and serves.
 *
 * Resuming: a primary ships records as it commits them, before its own
 * log syncs them, so after a crash its log may end before records that a
 * quorum of followers holds (acknowledged ones among them). A primary
 * copy found on disk after a run that did not stop cleanly (cfg.resume)
 * is not the primary until it took a new epoch by promotion, with the
 * longest log of a quorum; it does not wait out a lease (the primary it
 * replaces is its own run that crashed). With the static placement it
 * promotes itself once enough copies acknowledged a heartbeat (so that a
 * copy that knows of a newer epoch told it first); with etcd, failover.c
 * does it. A copy that refused it (a newer epoch) makes it give up and
 * follow that epoch's primary.
 *
 * Lease: a primary answers only while enough of its followers' nodes
 * acknowledged one of its heartbeats (BEAT) sent within the lease
 * (cluster.peer_timeout). A follower that accepts a new epoch tells the
 * old primary (FENCED) before it acknowledges another of its heartbeats,
 * and the new primary waits a lease before it answers: so an old primary
 * that was paused, cut off or slow never answers as primary with data a
 * newer primary has changed; it holds the replies, learns, and steps
 * down.
 *
 * Threads: the hooks run on workers and syncers; they touch the
 * databases' table under its lock and hand the rest to the loop thread
 * through an async handle. Messages, calls to the engine and their
 * completions run on the loop thread. */
#ifndef DSQ_REPL_H
#define DSQ_REPL_H

#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/epochs.h"
#include "cluster/peer.h"
#include "cluster/placement.h"
#include "engine/engine.h"

/* Message types over the links (peer.h: DSQ_PEER_MSG_MIN and up). Every
 * one about a database starts with its name (str) and the sender's epoch
 * (u64). */
enum {
    DSQ_REPL_SHIP = 16, /* primary → follower: u64 commit, then records */
    DSQ_REPL_ACK,       /* follower → primary: u64 durable, u64 applied */
    DSQ_REPL_BEHIND,    /* follower → primary: u64 have, u64 durable, u64 epoch of record `have` */
    DSQ_REPL_COMMIT,    /* primary → follower: u64 commit, u64 appended */
    DSQ_REPL_SYNC,      /* primary → follower: u64 keep, u8 n, n × (u64 epoch, u64 start) */
    DSQ_REPL_READY,     /* follower → primary: u64 have */
    DSQ_REPL_PROPOSE,   /* candidate → copy: (the epoch proposed is the message's) */
    DSQ_REPL_ACCEPT,    /* copy → candidate: u8 ok, u64 last, u8 n, n × (u64 epoch, u64 start); not ok:
                           the message's epoch is the higher one it accepted */
    DSQ_REPL_FENCED,    /* copy → an older epoch's primary: str the newer epoch's primary */
    DSQ_REPL_FETCH,     /* candidate → copy: u64 after */
    DSQ_REPL_FETCHED,   /* copy → candidate: u8 more, then records */
    DSQ_REPL_REBUILD,   /* primary → follower: u64 first (the first record its log holds: the
                           follower's log ends before it) */
    DSQ_REPL_LEARN,     /* primary → a node being added to the copy set: the set (put_set); it
                           follows as a learner (sent the log, not counted) */
    DSQ_REPL_FORGET,    /* primary → a learner: the change that was adding it ended without it */
    DSQ_REPL_BEAT = 40, /* node → node: u64 sent (ms, the sender's clock); no database */
    DSQ_REPL_BEAT_ACK,  /* node → node: u64 sent, echoed */
    DSQ_CLUSTER_NODE_INFO = 48, /* node → node (cluster.c): str its clients' address HOST:PORT, then
                                   str its address for passed-on connections over TLS
                                   (dsq_node_info_encode) */
    DSQ_CLUSTER_CALL,   /* node → a database's primary (cluster.c, rcall.h): a call to run there */
    DSQ_CLUSTER_REPLY,  /* → the node that sent a CALL: its outcome */
    DSQ_CLUSTER_VSCHEMA, /* node → node (cluster.c): u64 version, then the VSchema's text (sharding):
                            sent when one is applied, and when a link comes up */
    DSQ_CLUSTER_EXT_MIN = 56, /* 56..63: other modules' messages (dsq_cluster_set_ext) */
    DSQ_CLUSTER_EXT_MAX = 63,
};

typedef struct dsq_repl dsq_repl;

typedef struct dsq_repl_cfg {
    const dsq_node *nodes;     /* the configured nodes (borrowed; outlives the object), for the
                                  static placement */
    size_t nnodes, self;
    dsq_nodeset *ids;          /* every node's number (borrowed; outlives the object), the
                                  configured ones 0 to nnodes - 1 */
    const dsq_placement *place; /* where each database's copies are (borrowed; outlives the
                                  object; any thread); NULL: the static rule over nodes */
    unsigned replicas;
    dsq_commit_ack ack;
    uint64_t ship_limit;       /* bytes queued on a link over which a follower falls back to
                                  reading the primary's log */
    uint64_t beat_ms;          /* heartbeats for the lease */
    uint64_t lease_ms;         /* a primary answers while enough followers acknowledged a
                                  heartbeat sent this recently */
    uint64_t promote_timeout_ms; /* a promotion gives up after this */
    bool resume;               /* the last run stopped without syncing (killed, crashed): a primary
                                  copy found on disk takes a new epoch before it serves (with
                                  commit_ack = quorum; with etcd, failover.c promotes it) */
    const char *data_dir;      /* with resume: the databases in DATA_DIR/db at the start are the
                                  copies found on disk (read by dsq_repl_new); with etcd, the files
                                  of a database this node holds no copy of go (copied) */
    dsq_epochs *epochs;        /* borrowed; outlives the object */
} dsq_repl_cfg;

dsq_repl *dsq_repl_new(const dsq_repl_cfg *cfg);
/* The hooks the engine is made with. */
const dsq_repl_hooks *dsq_repl_hooks_of(dsq_repl *r);
/* Start on the loop with the engine and the links. 0 or -1. */
int dsq_repl_start(dsq_repl *r, uv_loop_t *loop, dsq_engine *e, dsq_peers *peers);
/* The node begins to stop: promotions under way fail ("this node is
 * stopping": the calls waiting on them end now, not at promote_timeout),
 * and none starts from now on. Loop thread. */
void dsq_repl_quiesce(dsq_repl *r);
/* With cfg.resume: whether every database found on disk at the start is
 * settled, its copy's placement known here and none resuming still (then
 * the next start after a clean stop has nothing to resume). Any thread,
 * after the engine is freed. */
bool dsq_repl_resumed_all(dsq_repl *r);
/* Stop: handles closed (the engine must be freed first). */
void dsq_repl_stop(dsq_repl *r);
void dsq_repl_free(dsq_repl *r);

/* From the links (loop thread). */
void dsq_repl_on_message(dsq_repl *r, size_t node, uint8_t type, const uint8_t *p, size_t n);
void dsq_repl_on_link(dsq_repl *r, size_t node, bool up);
void dsq_repl_on_writable(dsq_repl *r, size_t node);

/* Make this node's copy of db the primary (see above), in an epoch above
 * every one it knows and at least min_epoch (etcd's next, with
 * cluster.etcd; 0: no floor). `done` runs on the loop with 0 and the new
 * epoch and its first LSN - 1 (the log it took over ends there), or -1
 * and a message. Loop thread. 0, or -1 with a message when it cannot
 * start: -2 when that is because another promotion of db here (or its
 * epoch's record) is under way. */
typedef void (*dsq_promote_fn)(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg);
int dsq_repl_promote(dsq_repl *r, const char *db, uint64_t min_epoch, dsq_promote_fn done, void *ud, char *err,
                     size_t errlen);

/* Change db's copy set (this node its primary): node `in` takes the
 * place of copy `out` (a follower). `in` follows as a learner, sent the
 * log (or made from the object store) without being counted; once it
 * holds every commit acknowledged, the primary stops acknowledging for
 * a moment and proposes a new epoch (at least min_epoch) with the new
 * set, which a quorum of the new set and as many of the old as
 * acknowledge a commit must accept; established, the old copy is no
 * longer one. `done` as dsq_repl_promote's (the epoch the set was made
 * in). 0; -1 or -2 (a promotion or change under way) with a message.
 * Loop thread. */
int dsq_repl_change(dsq_repl *r, const char *db, uint32_t out, uint32_t in, uint64_t min_epoch,
                    dsq_promote_fn done, void *ud, char *err, size_t errlen);

/* Whether this node is in db's copy set (not only being added or taken
 * out). Any thread. */
bool dsq_repl_member(dsq_repl *r, const char *db);

/* Db's copy set as this node knows it (node numbers, the placement's
 * order where it has not changed) into out[0..max); how many. *set_epoch:
 * the epoch a change made it in (0: the placement's). Any thread. */
size_t dsq_repl_copyset(dsq_repl *r, const char *db, uint32_t *out, size_t max, uint64_t *set_epoch);

/* Db's placement changed (its assignment in etcd): a node without a copy
 * takes the primary it names from then on (a copy learns a new primary
 * from the primary's own messages). Any thread. */
void dsq_repl_placement_changed(dsq_repl *r, const char *db);

/* Whether this node's copy of db is its primary, or is becoming it (a
 * promotion under way). Loop thread. */
bool dsq_repl_primary_here(dsq_repl *r, const char *db);

/* This node's role for db and its primary's node number (loop thread). */
dsq_role dsq_repl_where(dsq_repl *r, const char *db, size_t *primary);

/* A database's copies as this node sees them (GET /v1/cluster?database=). */
typedef struct dsq_repl_copy {
    size_t node;
    bool primary;
    uint64_t durable, applied; /* as this node knows them (LSNs) */
} dsq_repl_copy;
typedef struct dsq_repl_info {
    size_t primary;
    uint64_t epoch;
    dsq_repl_copy copies[DSQ_NODES_MAX];
    size_t ncopies;
} dsq_repl_info;
void dsq_repl_describe(dsq_repl *r, const char *db, dsq_repl_info *out);

/* The most any database of which this node is the primary lags on
 * follower `node`: commits (LSNs) and ms (metrics). */
void dsq_repl_lag(dsq_repl *r, size_t node, uint64_t *lsn, uint64_t *ms);

/* Counters for metrics (cluster.h). */
void dsq_repl_stats_get(dsq_repl *r, dsq_repl_stats *out);

#endif
