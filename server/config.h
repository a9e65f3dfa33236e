/* config — dosqld's settings: defaults, the INI file, command-line flags.
 *
 * Every key lives in one table (config.c) with its section, type and default;
 * conf/dosqld.conf documents the same keys and a unit test keeps the two in
 * step. Values are layered: defaults, then the file, then flags. */
#ifndef DSQ_CONFIG_H
#define DSQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/net.h"
#include "engine/engine.h"

typedef struct dsq_strlist {
    char **items; /* owned, each owned */
    int *lines;   /* owned; the file line each item came from (0: not a file) */
    size_t n;     /* number of items */
} dsq_strlist;

typedef struct dsq_config {
    char *path; /* owned; the file loaded, or NULL */

    /* [server] */
    dsq_strlist listen;             /* plain HTTP listeners, HOST:PORT */
    dsq_strlist tls_listen;         /* TLS listeners, HOST:PORT */
    char *tls_cert;                 /* owned; PEM certificate chain path */
    char *tls_key;                  /* owned; PEM private key path */
    uint64_t max_connections;       /* open connections; more get 503 */
    uint64_t max_header_size;       /* request line + headers, bytes */
    uint64_t max_body_size;         /* request body, bytes; more gets 413 */
    uint64_t header_timeout_ms;     /* whole request head must arrive in it */
    uint64_t body_timeout_ms;       /* longest gap between body bytes */
    uint64_t keepalive_timeout_ms;  /* idle time between requests */
    uint64_t send_queue_limit;      /* unsent bytes before reading pauses */
    uint64_t send_timeout_ms;       /* no write progress this long: cut off */
    uint64_t max_pipeline;          /* queued requests per connection */
    uint64_t shutdown_timeout_ms;   /* drain bound on SIGTERM */

    /* [websocket] */
    uint64_t ws_max_message;        /* bytes; larger closes with 1009 */
    uint64_t ws_ping_interval_ms;   /* keep-alive pings; 0 disables */
    bool ws_compression;            /* permessage-deflate when a client offers it */
    uint64_t ws_compression_min;    /* messages this long or longer go compressed */

    /* [rpc] */
    uint64_t rpc_max_batch;         /* JSON-RPC requests (and batch statements) in one message */
    uint64_t rpc_stream_chunk_rows; /* queryStream rows per chunk by default */
    uint64_t rpc_max_stream_chunk_rows; /* largest chunkSize a client may ask */
    uint64_t rpc_hrana_stream_timeout_ms; /* an idle Hrana stream over HTTP (a baton) closes after it */

    /* [engine] */
    uint64_t engine_workers;        /* worker threads; 0 = number of cores */
    uint64_t engine_idle_timeout_ms; /* hibernate an actor idle this long */
    uint64_t engine_max_open_actors; /* open databases at most (LRU) */
    uint64_t engine_max_queue;      /* messages waiting per actor */
    uint64_t engine_batch_per_turn; /* messages an actor runs before yielding */
    uint64_t engine_query_timeout_ms; /* one request's statements stop after this */
    uint64_t engine_txn_timeout_ms; /* default idle limit of a transaction */
    uint64_t engine_max_txn_timeout_ms; /* the largest timeoutMs of a beginTransaction */
    uint64_t engine_write_wait_ms;  /* how long a write waits for another's transaction */
    unsigned engine_max_snapshots;  /* read-only transactions and streams per database */
    uint64_t engine_max_result_bytes; /* bytes of rows one request holds (dsq_budget) */
    uint64_t engine_max_sql_length; /* bytes of SQL text */
    uint64_t engine_max_value_size; /* bytes of one string or BLOB */
    uint64_t engine_max_columns;    /* columns in a table, index or result */
    uint64_t engine_max_expr_depth; /* expression tree depth */
    uint64_t engine_max_params;     /* parameters of one statement */
    uint64_t engine_idempotency_window_ms; /* how long a write's idempotencyKey is remembered (0: not) */
    uint64_t engine_cache_size;     /* page cache per open database, bytes */

    /* [storage] */
    char *data_dir;                 /* owned */
    char *object_store;             /* owned; default file://<data_dir>/objects */
    uint64_t storage_page_size;     /* SQLite page size of new databases */
    uint64_t storage_segment_size;  /* bytes of one log segment */
    int64_t storage_compression_level; /* zstd level of log pages (negative: zstd's fast levels) */
    uint64_t storage_max_txn_size;  /* bytes of pages one transaction may change */
    char *storage_sync;             /* owned: full, normal or off */
    char *storage_sync_to_objects;  /* owned: no or commit */
    uint64_t storage_sync_threads;  /* threads that fsync logs */
    bool storage_group_sync;        /* one syncfs for several waiting logs */
    bool storage_journal;           /* the node journal carries durability */
    uint64_t storage_journal_size;  /* bytes of one journal file */
    uint64_t cdc_buffer_size;       /* recent commits kept per database with subscribers */
    uint64_t cdc_coalesce_ms;       /* a busy server sends to a database's subscribers at most this often */
    uint64_t cdc_coalesce_cpu;      /* busy: using this % of its CPUs or more (0: always) */

    /* [object_store]: the s3:// backend's settings (strings owned, NULL: AWS_* variables) */
    uint64_t storage_hot_max_bytes;  /* local bytes above which uploaded files are evicted (0: none) */
    uint64_t storage_hot_max_age_ms; /* uploaded files untouched this long are evicted (0: never) */
    uint64_t storage_warm_cache_bytes; /* evicted pages' chunks kept locally */
    uint64_t storage_cold_read_timeout_ms; /* a request waits this long for a page from the store */
    char *obj_endpoint;
    char *obj_region;
    char *obj_access_key;
    char *obj_secret_key;
    bool obj_virtual_host;          /* BUCKET.HOST instead of HOST/BUCKET */
    uint64_t obj_request_timeout_ms; /* one attempt */
    uint64_t obj_connect_timeout_ms;
    uint64_t obj_retries;           /* attempts after the first */
    uint64_t obj_max_requests;      /* on the wire at once */
    uint64_t obj_chunk_size;        /* bytes of one uploaded chunk of a database's file */
    uint64_t obj_upload_interval_ms; /* a committing database's files go up this often */
    uint64_t storage_checkpoint_size; /* log bytes between checkpoints */
    uint64_t storage_max_open_files; /* descriptors a database keeps open for reads */
    uint64_t storage_history_retention_ms; /* how far back time travel reaches */

    /* [cluster] */
    char *cluster_node_id;          /* owned; this node's id in peers, or NULL */
    dsq_strlist cluster_peers;      /* every node, ID@HOST:PORT (this one included) */
    char *cluster_secret_file;      /* owned; the nodes' shared secret, or NULL */
    uint64_t cluster_replicas;      /* copies of each database, the primary's included */
    char *cluster_commit_ack;       /* owned: quorum, all or local */
    uint64_t cluster_commit_timeout_ms; /* a reply waits this long for the other copies */
    uint64_t cluster_promote_timeout_ms; /* a promotion gives up after this */
    uint64_t cluster_node_dead_after_ms; /* a node gone from etcd this long has its copies replaced (0: never) */
    uint64_t cluster_heartbeat_ms;  /* a link sends a heartbeat this often */
    uint64_t cluster_peer_timeout_ms; /* a link silent this long is down */
    bool cluster_tls;               /* every link runs mutual TLS */
    char *cluster_tls_cert;         /* owned; this node's PEM certificate chain, or NULL */
    char *cluster_tls_key;          /* owned; its PEM private key, or NULL */
    char *cluster_tls_ca;           /* owned; the PEM CA certificates every node's must chain to, or NULL */
    char *cluster_forward_listen;   /* owned; HOST:PORT for the connections other nodes pass on (with tls),
                                       or NULL: the host of this node's peers entry, any port */
    char *cluster_etcd;             /* owned; etcd's endpoints, "http://H:P,https://H:P", or NULL: no etcd
                                       (the nodes are cluster.peers) */
    char *cluster_etcd_prefix;      /* owned; the keys' prefix in etcd ("/dosqld/") */
    char *cluster_advertise;        /* owned; with etcd, the HOST:PORT the others dial for this node's links,
                                       or NULL: its peers entry's */
    uint64_t cluster_node_ttl_ms;   /* this node's lease in etcd (whole seconds, at least 2 s) */
    char *cluster_etcd_user;        /* owned; the user dosqld authenticates to etcd as, or NULL: no auth */
    char *cluster_etcd_password_file; /* owned; the file whose first line is that user's password, or NULL */
    char *cluster_etcd_password;    /* owned; that password, read by dsq_config_finish (never logged;
                                       wiped by dsq_config_free), or NULL */
    char *cluster_etcd_ca;          /* owned; PEM CA certificates for https endpoints, or NULL: the system's */
    char *cluster_etcd_cert;        /* owned; PEM client certificate for etcd (with etcd_key), or NULL */
    char *cluster_etcd_key;         /* owned; its PEM private key, or NULL */
    char *sharding_vschema;         /* owned; the VSchema file read when none was applied, or NULL */

    /* [lake] */
    dsq_strlist lake_databases;     /* globs of the databases whose CDC feeds the lake (none: no lake) */
    uint64_t lake_flush_interval_ms; /* a database's changes reach the lake at least this often */
    uint64_t lake_flush_bytes;      /* bytes of row changes read for one commit to the lake at most */
    uint64_t lake_file_target_size; /* a Parquet file is finished once it holds about this much */
    char *lake_partitioning;        /* owned: day, database, "day,database" or none */
    dsq_strlist lake_table_partitioning; /* "DATABASE.TABLE-GLOB SPEC" lines: other tables' specs */
    bool lake_current_state;        /* keep each table's current-state table */
    uint64_t lake_current_state_interval_ms; /* ... rewritten at most this often */
    uint64_t lake_maintenance_interval_ms; /* a table's expiry and orphan removal run at most this often */
    uint64_t lake_snapshot_retention_ms; /* snapshots older than this are expired */
    uint64_t lake_orphan_age_ms;    /* files no snapshot references, older than this, are removed */

    /* [auth] */
    dsq_strlist tokens;             /* "SECRET SCOPES [GLOB]" lines */
    char *tokens_file;              /* owned; more token lines, or NULL */
    bool allow_unauthenticated;     /* permit non-loopback without tokens */

    /* [log] */
    int log_level;                  /* DSQ_LOG_* */

    /* private: which layer last set each key (see config.c) */
    unsigned char set_by[128];
} dsq_config;

/* Fill `cfg` with the defaults. Free with dsq_config_free(). */
void dsq_config_init(dsq_config *cfg);

/* The engine's settings from the configuration: the one place their
 * defaults come from (the engine has none of its own). The caller adds
 * the object store and the wake hook. Strings are borrowed from cfg. */
void dsq_config_engine(const dsq_config *cfg, dsq_engine_cfg *ec);
void dsq_config_free(dsq_config *cfg);

/* Read an INI file over the current values. Every problem is appended to
 * `errs` as "FILE:LINE: message\n". Returns the number of problems (0 = ok);
 * an unreadable file is one problem. */
int dsq_config_load_file(dsq_config *cfg, const char *path, dsq_buf *errs);

/* Set one key from a flag (a later layer than the file). `key` is
 * "section.name" or a bare name when it is unique. Returns 0, or -1 with a
 * message in errs. List keys: the first set from flags replaces the file's
 * list, later ones add to it. */
int dsq_config_set_flag(dsq_config *cfg, const char *key, const char *value,
                        dsq_buf *errs);

/* Fill derived defaults and check the values together (TLS needs cert and
 * key, addresses parse, ...), and read what the configuration points to
 * that must be there at start (cluster.etcd_password_file). Returns the
 * number of problems. */
int dsq_config_finish(dsq_config *cfg, dsq_buf *errs);


/* File descriptors the process may need at once with this configuration
 * (docs/operations.md, Sizing): one per connection, per open database
 * max_open_files_per_database for reads plus 4 (its newest log segment,
 * a sealed one until synced, the journal's push descriptor, a checkpoint
 * being written), one per object store request, and 128 for the rest
 * (the journal's files, up to 64; listeners, the loop, the lock, logs). */
uint64_t dsq_config_fds_needed(const dsq_config *cfg);


/* For tests and docs: walk the key table. Returns false past the end. */
bool dsq_config_key_at(size_t i, const char **section, const char **name,
                       const char **default_value);

#endif
