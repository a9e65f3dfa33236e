/* repl — replication of every database's log over the links between
 * nodes (peer.h): the engine's hooks (engine.h, "replication") on one
 * side, messages to and from the other copies on the other.
 *
 * Each database has `replicas` copies, on the nodes placement.h names;
 * the first is the primary (this version has one epoch, 1, per database:
 * promotion comes with epochs of their own). The primary sends each
 * commit record, as logged, to every follower that is in step
 * (streaming); a follower applies records in order (DSQ_OP_APPLY), syncs
 * them with group commit, and acknowledges how far its log is durable.
 * A reply after a commit leaves once commit_ack's number of copies hold
 * it durably (the primary's own sync counts as one). A follower that is
 * behind (it was down, its link broke, its queue overflowed) says where
 * its log ends, and the primary sends it what follows from its own log
 * (DSQ_OP_LOG_READ) until it is in step again.
 *
 * The primary also tells followers how far the commits are acknowledged
 * (its commit LSN): a follower's reads wait for it, so that no reply, on
 * any copy, shows a commit that could still be lost.
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
#include "cluster/peer.h"
#include "cluster/placement.h"
#include "engine/engine.h"

/* Message types over the links (peer.h: DSQ_PEER_MSG_MIN and up). */
enum {
    DSQ_REPL_SHIP = 16,  /* primary → follower: str db, u64 epoch, u64 commit, then records */
    DSQ_REPL_ACK,        /* follower → primary: str db, u64 epoch, u64 durable, u64 applied */
    DSQ_REPL_BEHIND,     /* follower → primary: str db, u64 epoch, u64 have: send from have + 1 */
    DSQ_REPL_COMMIT,     /* primary → follower: str db, u64 epoch, u64 commit, u64 appended */
};

typedef struct dsq_repl dsq_repl;

typedef struct dsq_repl_cfg {
    const dsq_node *nodes;     /* borrowed; outlives the object */
    size_t nnodes, self;
    unsigned replicas;
    dsq_commit_ack ack;
    uint64_t ship_limit;       /* bytes queued on a link over which a follower falls back to
                                  reading the primary's log */
} dsq_repl_cfg;

dsq_repl *dsq_repl_new(const dsq_repl_cfg *cfg);
/* The hooks the engine is made with. */
const dsq_repl_hooks *dsq_repl_hooks_of(dsq_repl *r);
/* Start on the loop with the engine and the links. 0 or -1. */
int dsq_repl_start(dsq_repl *r, uv_loop_t *loop, dsq_engine *e, dsq_peers *peers);
/* Stop (the async handle is closed; the engine must be freed first, or
 * no longer call the hooks through the loop). */
void dsq_repl_stop(dsq_repl *r);
void dsq_repl_free(dsq_repl *r);

/* From the links (loop thread). */
void dsq_repl_on_message(dsq_repl *r, size_t node, uint8_t type, const uint8_t *p, size_t n);
void dsq_repl_on_link(dsq_repl *r, size_t node, bool up);
void dsq_repl_on_writable(dsq_repl *r, size_t node);

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

/* Counters for metrics. */
typedef struct dsq_repl_stats {
    uint64_t records_shipped, bytes_shipped, applies, log_reads, acks;
} dsq_repl_stats;
void dsq_repl_stats_get(dsq_repl *r, dsq_repl_stats *out);

#endif
