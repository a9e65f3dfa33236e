/* cluster — dosqld beyond one node: the node list, the shared secret
 * the nodes authenticate each other with, and (in this folder) where each
 * database's copies live (placement.h), the links between nodes (peer.h)
 * and replication over them.
 *
 * This header is what server/ uses: the [cluster] settings, parsed and
 * checked. */
#ifndef DSQ_CLUSTER_H
#define DSQ_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/buf.h"
#include "common/list.h"

#define DSQ_NODES_MAX 64   /* nodes in one cluster */
#define DSQ_NODE_ID_MAX 32 /* bytes of a node id, with its NUL */
#define DSQ_SECRET_MIN 32  /* characters of the shared secret at least */
#define DSQ_SECRET_MAX 512

/* One node of the cluster, as `peers` names it: "ID@HOST:PORT", where
 * HOST:PORT is where the node listens for the other nodes (not for
 * clients). */
typedef struct dsq_node {
    char id[DSQ_NODE_ID_MAX];      /* letters, digits, '-', '_', '.' */
    char addr_text[80];            /* HOST:PORT as written */
    struct sockaddr_storage addr;
} dsq_node;

/* Parse "ID@HOST:PORT". 0, or -1 with the reason in err. */
int dsq_node_parse(const char *s, dsq_node *out, char *err, size_t errlen);
/* Whether s[0..n) is a node id: 1 to DSQ_NODE_ID_MAX - 1 letters, digits,
 * '-', '_' and '.' (what dsq_node_parse takes; etcd's keys and values
 * name nodes with the same ids). */
bool dsq_node_id_valid(const char *s, size_t n);

/* How many copies must hold a commit durably before its reply leaves. */
typedef enum dsq_commit_ack {
    DSQ_ACK_QUORUM = 0, /* a majority of the copies (the primary's own sync counts) */
    DSQ_ACK_ALL,        /* every copy */
    DSQ_ACK_LOCAL,      /* the primary's own sync only; followers catch up behind */
} dsq_commit_ack;

/* Parse "quorum", "all" or "local". 0 or -1. */
int dsq_commit_ack_parse(const char *s, dsq_commit_ack *out);

/* Copies whose durable LSN must reach a commit's before its reply goes,
 * out of `copies`. */
unsigned dsq_commit_ack_needed(dsq_commit_ack ack, unsigned copies);

/* Read the shared secret: the first line of the file at `path`, at least
 * DSQ_SECRET_MIN characters (trailing white space dropped). The file must
 * not be readable by others than its owner and group. out[cap] gets it,
 * NUL-terminated. 0, or -1 with the reason in err. */
int dsq_cluster_read_secret(const char *path, char *out, size_t cap, char *err, size_t errlen);
/* A file that holds a secret, opened for reading: 0 or more (the fd),
 * or -1 with the reason in err when it cannot be opened, is not a regular
 * file, or is readable by every user (the message says it holds `holds`,
 * and never quotes the content). Opened non-blocking: a FIFO named by
 * mistake does not hang the start. */
int dsq_open_secret_file(const char *path, const char *holds, char *err, size_t errlen);

/* ---- the cluster as a running part of the server (loop thread) ---- */

typedef struct dsq_cluster dsq_cluster;
struct dsq_engine;
struct dsq_call;
struct dsq_repl_hooks;

typedef struct dsq_cluster_cfg {
    const char *data_dir;           /* its epochs are kept in DATA_DIR/cluster/ */
    const char *node_id;            /* this node */
    const char *const *peers;       /* every node, "ID@HOST:PORT", this one included */
    size_t npeers;
    const char *secret;             /* the shared secret (dsq_cluster_read_secret) */
    uint64_t heartbeat_ms;          /* cluster.heartbeat_interval */
    uint64_t peer_timeout_ms;       /* cluster.peer_timeout: silent this long, a link is down */
    unsigned replicas;              /* cluster.replicas: copies of each database */
    dsq_commit_ack ack;             /* cluster.commit_ack */
    uint64_t promote_timeout_ms;    /* cluster.promote_timeout */
    /* cluster.tls: PEM files (copied paths; read when the links start);
     * tls_cert NULL: the links are plain TCP. See peer.h. */
    const char *tls_cert, *tls_key, *tls_ca;
    /* cluster.etcd: etcd's endpoints (copied; NULL: no etcd). With them,
     * this node registers in etcd under a lease of node_ttl_s (topo.h)
     * and links up with every node it finds there (peers then names this
     * node alone); each database's copies are its assignment in etcd
     * (eplace.h), which a database gets before a call on it goes anywhere
     * (dsq_cluster_place). */
    const char *etcd;
    const char *etcd_prefix;        /* cluster.etcd_prefix (copied) */
    const char *advertise;          /* cluster.advertise: HOST:PORT the others dial for this node's links
                                       (copied; NULL: its peers entry's) */
    unsigned node_ttl_s;            /* cluster.node_ttl, seconds */
    uint64_t node_dead_after_ms;    /* cluster.node_dead_after: a node gone from etcd this long has its
                                       copies replaced on other nodes (0: never) */
    /* How this node gets into etcd (etcd.h's auth and TLS; all copied,
     * each NULL for none): cluster.etcd_user and the password read from
     * cluster.etcd_password_file (both or neither; the copy is wiped when
     * the cluster is freed); cluster.etcd_ca, etcd_cert and etcd_key (PEM
     * paths, read at each connection to an https:// endpoint). */
    const char *etcd_user, *etcd_password;
    const char *etcd_ca, *etcd_cert, *etcd_key;
} dsq_cluster_cfg;

/* Parse the node list and set up replication (nothing runs yet). 0, or
 * -1 with a message. */
int dsq_cluster_new(const dsq_cluster_cfg *cfg, dsq_cluster **out, char *err, size_t errlen);
/* The hooks the engine is to be made with (engine.h, "replication"). */
const struct dsq_repl_hooks *dsq_cluster_repl_hooks(dsq_cluster *c);
/* Listen on this node's peer address, link up with the others and
 * replicate the engine's databases; tell the other nodes where they pass
 * clients on to this node: client_addr (HOST:PORT of its clients'
 * listener; NULL: none) and, with cluster.tls, forward_addr (HOST:PORT of
 * its listener for passed-on connections, mutual TLS; NULL: none). Loop
 * thread. 0, or -1 with a message. The cluster's handles do not keep the
 * loop running. */
int dsq_cluster_start(dsq_cluster *c, uv_loop_t *loop, struct dsq_engine *e, const char *client_addr,
                      const char *forward_addr, char *err, size_t errlen);

/* A caller waiting for a database to be placed (dsq_cluster_place); the
 * caller owns it and fills `done`. */
typedef struct dsq_place_wait {
    dsq_lnode link;                /* (the cluster's) */
    /* rc 0: placed (dsq_cluster_where answers for it now); -1: it could
     * not be placed now (msg says why; a condition that passes). */
    void (*done)(struct dsq_place_wait *w, int rc, const char *msg);
    bool waiting;                  /* (the cluster's) */
} dsq_place_wait;

/* With cluster.etcd, a database must have its assignment (its copies,
 * recorded in etcd) before a call on it goes anywhere: 0 when it has one
 * (or the cluster has no etcd), else 1, and w->done runs on the loop once
 * it has (the first node to need a database places it), unless
 * dsq_cluster_place_cancel comes first; -1 with a message when it cannot
 * even wait (stopping). Loop thread. */
int dsq_cluster_place(dsq_cluster *c, const char *db, dsq_place_wait *w, char *err, size_t errlen);
void dsq_cluster_place_cancel(dsq_cluster *c, dsq_place_wait *w);

/* Where a call on db goes: whether this node's copy is its primary
 * (or its only copy: 0), a follower (1) or none (2); the primary's node
 * id in *node (valid while the cluster runs); and in addr[len] where a
 * connection is passed on to that node (HOST:PORT, as that node told;
 * "" while unknown): with cluster.tls its listener for passed-on
 * connections (mutual TLS; "" when that node told none), else its
 * clients' listener. Loop thread. */
int dsq_cluster_where(dsq_cluster *c, const char *db, char *addr, size_t len, const char **node);

/* Submit `call` on db where db's primary is: to this node's engine, or
 * over the link to the primary's node, whose engine runs it (rcall.h:
 * QUERY, BATCH, BEGIN, COMMIT, ROLLBACK and SCHEMA go; others fail with
 * NOT_PRIMARY there). With etcd, a database not placed yet is placed
 * first. 0: submitted, call->done runs on the loop later; -1: failed at
 * once (the call's err, code and msg say why; done is not called). A
 * call sent to a node whose link goes down fails with NOT_PRIMARY (its
 * outcome unknown). Loop thread. */
int dsq_cluster_submit(dsq_cluster *c, const char *db, struct dsq_call *call);
/* The VSchema the nodes share (sharding/router.h): `get` gives this
 * node's (malloc'd text, NULL for none, and its version); `got` is
 * called with one another node sent (the text not NUL-terminated). Each
 * node sends its own to a node whose link comes up; share() sends one
 * just applied to every node linked now. Loop thread. */
typedef struct dsq_cluster_vschema_hooks {
    char *(*get)(void *ud, uint64_t *version);
    void (*got)(void *ud, const char *node, uint64_t version, const char *text, size_t len);
    void *ud;
} dsq_cluster_vschema_hooks;
void dsq_cluster_set_vschema_hooks(dsq_cluster *c, const dsq_cluster_vschema_hooks *h);
void dsq_cluster_share_vschema(dsq_cluster *c, uint64_t version, const char *text);

/* Other modules' messages over the links (types DSQ_CLUSTER_EXT_MIN to
 * _MAX, repl.h): `message` gets those that arrive; `link` each link going
 * up or down; `writable` a link's queue draining after it was long (see
 * dsq_cluster_queued). Any may be NULL. Loop thread. */
typedef struct dsq_cluster_ext {
    void (*message)(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n);
    void (*link)(void *ud, size_t node, bool up);
    void (*writable)(void *ud, size_t node);
    void *ud;
} dsq_cluster_ext;
void dsq_cluster_set_ext(dsq_cluster *c, const dsq_cluster_ext *x);
/* Send a message of such a type to node `node` (an index): a[0..alen)
 * then b[0..blen). 0, or -1 when its link is not up. */
int dsq_cluster_send(dsq_cluster *c, size_t node, uint8_t type, const void *a, size_t alen, const void *b,
                     size_t blen);
/* Bytes waiting on the link to `node`. */
size_t dsq_cluster_queued(dsq_cluster *c, size_t node);
/* A link's send_limit: once its queue has held this much, on_writable is
 * called when it falls under half of it (and only then). */
#define DSQ_CLUSTER_SEND_LIMIT (8u << 20)
/* Whether db's primary is this node (true), else its node's index in
 * *node (dsq_cluster_where's answer, as an index). */
bool dsq_cluster_primary(dsq_cluster *c, const char *db, size_t *node);
/* A node's id (index as above). */
const char *dsq_cluster_node_id(const dsq_cluster *c, size_t node);

/* Calls sent to other nodes, and run here for them, so far. */
void dsq_cluster_rcall_counts(const dsq_cluster *c, uint64_t *out, uint64_t *in);

/* Close every link (after the engine is freed: its hooks no longer run
 * through the loop); `done` runs on the loop once all is closed, then
 * the object is freed. NULL: nothing to stop (done runs at once). */
void dsq_cluster_stop(dsq_cluster *c, void (*done)(void *ud), void *ud);
/* The node begins to stop (SIGTERM): no failover or promotion starts from
 * now on, and those under way end, so that the requests waiting on them
 * are answered before the connections drain. Loop thread. */
void dsq_cluster_quiesce(dsq_cluster *c);

/* Make this node's copy of db its primary (POST /v1/admin/promote):
 * `done` runs on the loop with 0, the new epoch and where the log it took
 * over ends, or -1 and why. 0, or -1 with a message when it cannot
 * start (done is not called then); -2 when one is under way there
 * already. Loop thread. */
int dsq_cluster_promote(dsq_cluster *c, const char *db,
                        void (*done)(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg), void *ud,
                        char *err, size_t errlen);

/* Move db's copy from node `from` to node `to` (POST /v1/admin/move;
 * cluster.etcd only; this node db's primary): failover.h's
 * dsq_failover_move. As dsq_cluster_promote. */
int dsq_cluster_move(dsq_cluster *c, const char *db, const char *from, const char *to,
                     void (*done)(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg), void *ud,
                     char *err, size_t errlen);

/* ---- what a node tells the others of itself (pure; unit-tested) ---- */

/* The payload of DSQ_CLUSTER_NODE_INFO: str the address of the node's
 * clients' listener (HOST:PORT; "" for none), then str the address of its
 * listener for passed-on connections (cluster.tls; "" for none). A node
 * that reads the first field only ignores the second. 0, or -1 (an
 * address of 256 bytes or more, or out of memory). */
int dsq_node_info_encode(dsq_buf *b, const char *client, const char *forward);

/* Read it into client[cap] and forward[cap]; a payload with the first
 * field only (from a node that sends no second) gives forward "". 0, or
 * -1 when it is malformed (both are then ""). */
int dsq_node_info_decode(const void *p, size_t n, char *client, char *forward, size_t cap);

/* The nodes, in the order of cluster.peers, then (with cluster.etcd,
 * once started) the nodes found in etcd in the order they were found. */
typedef struct dsq_cluster_node_info {
    const char *id, *address; /* valid while the cluster runs */
    const char *client;       /* where it takes clients (HOST:PORT, as it told over its link); "" unknown */
    bool self;
    bool reachable;           /* this node, or its link is up */
} dsq_cluster_node_info;
size_t dsq_cluster_nnodes(const dsq_cluster *c);

/* Counters for metrics, since the start. The links' (peer.c): bytes
 * (of the messages: TLS's own not counted) and messages sent and
 * received over every link; links made; handshakes refused (the HMAC's
 * or, with TLS, the certificates'). */
typedef struct dsq_peer_stats {
    uint64_t bytes_out, bytes_in, msgs_out, msgs_in, connects, auth_failures;
} dsq_peer_stats;
/* Replication's (repl.c). */
typedef struct dsq_repl_stats {
    uint64_t records_shipped, bytes_shipped, applies, log_reads, acks, promotions, step_downs, truncations;
    uint64_t rebuilds;      /* copies here made again from the object store */
} dsq_repl_stats;
typedef struct dsq_cluster_stats {
    uint64_t links_up;    /* links to other nodes up now */
    dsq_peer_stats links; /* zero when the cluster is one node */
    dsq_repl_stats repl;
} dsq_cluster_stats;
void dsq_cluster_stats_get(const dsq_cluster *c, dsq_cluster_stats *out);
void dsq_cluster_node(const dsq_cluster *c, size_t i, dsq_cluster_node_info *out);

/* The most any database of which this node is the primary lags on node
 * i: commits and ms (metrics). */
void dsq_cluster_lag(dsq_cluster *c, size_t i, uint64_t *lsn, uint64_t *ms);

/* ---- with cluster.etcd (GET /v1/cluster, metrics) ---- */

#define DSQ_FAILOVER_RECENT 32 /* failovers remembered for GET /v1/cluster */

/* One failover, as this node saw it (the ones it made). */
typedef struct dsq_failover_record {
    char db[129];
    char from[DSQ_NODE_ID_MAX];    /* the primary whose node left */
    char to[DSQ_NODE_ID_MAX];      /* this node */
    uint64_t epoch;                /* the new one */
    uint64_t at_ms;                /* when it served (wall clock, ms since the epoch) */
    uint64_t took_ms;              /* from the old primary's node leaving etcd's view here to then */
} dsq_failover_record;

typedef struct dsq_failover_stats {
    uint64_t attempts;             /* candidacies started (compare-and-swap sent) */
    uint64_t won;                  /* assignments this node wrote */
    uint64_t lost;                 /* another node's write came first */
    uint64_t promoted;             /* promotions that ended serving */
    uint64_t failed;               /* promotions or writes that failed (tried again) */
    uint64_t replaced;             /* copies replaced here (re-replication, moves) */
} dsq_failover_stats;

typedef struct dsq_cluster_etcd_info {
    bool on;                       /* cluster.etcd is set (else the rest is zero) */
    bool etcd_up;                  /* etcd answered this node's last request */
    bool registered;               /* this node's key is written, under its lease */
    bool view_whole;               /* the nodes' view was read whole once */
    bool assignments_loaded;       /* every database's assignment was read once */
    size_t assignments;            /* databases placed, as this node knows them */
    dsq_failover_stats failover;   /* this node's part in failovers, since the start */
} dsq_cluster_etcd_info;
void dsq_cluster_etcd_get(dsq_cluster *c, dsq_cluster_etcd_info *out);

/* Node i (dsq_cluster_node's numbering) as etcd shows it: whether it has
 * a key (alive), its load there, and of the assignments known here, how
 * many databases it holds a copy of and of how many it is the primary.
 * All zero without etcd. Loop thread. */
typedef struct dsq_cluster_node_etcd {
    bool alive;
    bool draining;                 /* its key says so */
    uint64_t dbs, bytes;           /* the load its key tells */
    uint64_t copies, primaries;    /* from the assignments */
} dsq_cluster_node_etcd;
void dsq_cluster_node_etcd_get(dsq_cluster *c, size_t i, dsq_cluster_node_etcd *out);

/* Drain this node (drain) or stop draining it: with cluster.etcd only,
 * `node` must be this node's id. Draining, its key in etcd says so (no
 * new database is placed on it) and every database it is the primary of
 * moves to another copy (failover.h). *primaries: how many databases it
 * is the primary of by their assignments now. 0, or -1 with a message.
 * Loop thread. */
int dsq_cluster_drain(dsq_cluster *c, const char *node, bool drain, uint64_t *primaries, char *err, size_t errlen);

/* The failovers made here, newest first, into out[0..max). */
size_t dsq_cluster_failovers(dsq_cluster *c, dsq_failover_record *out, size_t max);

/* A database's copies as this node knows them (GET /v1/cluster?database=). */
typedef struct dsq_cluster_copy {
    const char *node;          /* its id */
    bool primary;
    uint64_t durable, applied; /* LSNs, as last heard (this node's own: now) */
} dsq_cluster_copy;
typedef struct dsq_cluster_db {
    const char *primary;       /* node id */
    uint64_t epoch;
    dsq_cluster_copy copies[DSQ_NODES_MAX];
    size_t ncopies;
} dsq_cluster_db;
void dsq_cluster_describe(dsq_cluster *c, const char *db, dsq_cluster_db *out);

#endif
