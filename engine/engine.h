/* engine — many SQLite databases, each a single-threaded actor on a pool of
 * worker threads (DESIGN D2, D3).
 *
 * The caller (the server's loop thread) fills a dsq_call and submits it to
 * a database by name; the database's actor runs it on a worker, one call at
 * a time; the call's `encode` hook turns the results into the caller's wire
 * format on that worker; the engine then queues the call for the loop and
 * invokes `wake`; the loop calls dsq_engine_poll(), which runs each call's
 * `done` hook on the loop thread. The engine includes no event-loop header:
 * it is tested without one.
 *
 * Thread rules: dsq_engine_submit, _poll, _tick, _session_closed,
 * _stream_more and _shutdown are called from one thread (the loop). Hooks:
 * `encode` (and `chunk`) on a worker, `done` on the loop thread. */
#ifndef DSQ_ENGINE_H
#define DSQ_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/errors.h"
#include "common/list.h"
#include "engine/counters.h"

/* ---- values ------------------------------------------------------------------ */

typedef enum dsq_vtype {
    DSQ_V_NULL = 0,
    DSQ_V_INT,
    DSQ_V_REAL,
    DSQ_V_TEXT,
    DSQ_V_BLOB,
} dsq_vtype;

/* A SQL value. Text and blob bytes are borrowed (see each use). */
typedef struct dsq_value {
    dsq_vtype type;
    int64_t i;     /* DSQ_V_INT */
    double d;      /* DSQ_V_REAL */
    const char *p; /* DSQ_V_TEXT (UTF-8, not NUL-terminated) and DSQ_V_BLOB */
    size_t n;      /* bytes at p */
} dsq_value;

/* A statement parameter: positional (`name` NULL; the i-th parameter binds
 * to ?i+1) or named (`name` with its prefix :, @ or $ left off, matched
 * against any of the three). */
typedef struct dsq_param {
    const char *name;
    dsq_value v;
} dsq_param;

/* One statement to run (a query's `sql` may hold several). Strings and
 * values are borrowed from the call's arena and live as long as the call. */
typedef struct dsq_stmt_req {
    const char *sql;
    size_t sql_len;
    dsq_param *params;
    size_t nparams;
    bool named; /* params are named (an object), not positional */
} dsq_stmt_req;

/* ---- results ----------------------------------------------------------------- */

/* The rows of one statement, packed: per value a type byte, then an int64
 * or double (8 bytes, host order) or a uint32 length and the bytes. */
typedef struct dsq_result {
    int ncols;
    char **names;            /* owned */
    char **decltypes;        /* owned; NULL entries for expressions */
    dsq_buf rows;            /* packed values, ncols per row */
    size_t nrows;
    int64_t rows_affected;   /* rows the statement inserted, updated or deleted */
    int64_t last_insert_rowid;
    uint64_t lsn;            /* the LSN the result reflects */
    char *error;             /* owned; non-atomic BATCH: this statement failed */
    dsq_code code;           /* with error */
} dsq_result;

/* Walk packed values: start with *pos = 0; each call fills `v` (bytes
 * borrowed from the result) and returns false past the end. */
bool dsq_result_next(const dsq_result *r, size_t *pos, dsq_value *v);

/* Results made outside the engine (the sharding router's merges): the
 * columns of a prepared statement (names and declared types), then its
 * current row appended; 0, or -1 when out of memory. dsq_result_free
 * releases what a result owns. */
struct sqlite3_stmt;
int dsq_result_set_columns(dsq_result *r, struct sqlite3_stmt *st);
int dsq_result_add_row(dsq_result *r, struct sqlite3_stmt *st);
/* Append one value to the row being built (its columns' count is the
 * caller's to keep); 0 or -1. */
int dsq_result_add_value(dsq_result *r, const dsq_value *v);
void dsq_result_free(dsq_result *r);

/* ---- result budgets ------------------------------------------------------------ */

/* One request's results as a whole (a JSON-RPC batch, a Cap'n Web batch
 * or session): the bytes of rows its calls hold together stay within
 * max_result_bytes. A call whose rows would take the sum past it fails
 * with RESOURCE_EXHAUSTED, and so does every QUERY or BATCH call of the
 * request that starts after that (they do not run), until bytes are given
 * back. The calls run on workers (several at once: different databases),
 * hence the atomics. Zero it (or dsq_budget_init) before the first call;
 * it must outlive the calls that name it. */
typedef struct dsq_budget {
    _Atomic uint64_t used; /* bytes of rows charged by the request's calls */
    atomic_bool over;      /* a call went past max_result_bytes */
} dsq_budget;

void dsq_budget_init(dsq_budget *b);
/* The request let go of results holding n bytes (charged before): later
 * calls may use them again. */
void dsq_budget_release(dsq_budget *b, uint64_t n);

/* ---- calls -------------------------------------------------------------------- */

typedef enum dsq_op {
    DSQ_OP_QUERY = 1,   /* stmts[0]: sql with one or more statements */
    DSQ_OP_BATCH,       /* stmts[0..n): one statement each */
    DSQ_OP_STREAM,      /* stmts[0]: one statement, rows in chunks */
    DSQ_OP_BEGIN,       /* open a transaction */
    DSQ_OP_COMMIT,
    DSQ_OP_ROLLBACK,
    DSQ_OP_SCHEMA,
    DSQ_OP_STATS,
    DSQ_OP_PING,
    DSQ_OP_DROP,        /* close the database and delete its files */
    DSQ_OP_LIST,        /* the names of existing databases (dsq_engine_submit_system) */
    DSQ_OP_APPLY,       /* (replication, a follower) append the log records recs[0..recs_len),
                           made by the primary, as the next commits; lsn: the last one. They
                           follow as_of_lsn, where this copy's log must end (INVALID_LSN
                           otherwise, lsn: where it does); those up to it, sent again, are
                           passed over. No records: lsn says where the log ends */
    DSQ_OP_LOG_READ,    /* (replication, the primary) the log records after as_of_lsn, back to
                           back in `out`, about chunk_rows bytes at most (at least one); lsn:
                           the last one given; more: the log goes on past it. INVALID_LSN when
                           the log no longer holds the record after as_of_lsn (lsn: the
                           first it holds, or the next to come when it holds none), or when
                           as_of_lsn is past its end (lsn: as_of_lsn) */
    DSQ_OP_TRUNCATE,    /* (replication) cut the log after as_of_lsn: the commits after it go
                           (they were never acknowledged); lsn: the last one kept. The database
                           closes (its open streams and read-only transactions end) and opens
                           again at its next call. INVALID_LSN when a checkpoint holds commits
                           after as_of_lsn: then the copy must be made again */
    DSQ_OP_RESET,       /* (replication, a follower, or a node whose copy was taken out of the
                           database's copy set) forget this node's copy: closed, its files
                           removed here only (no tombstone, nothing in the object store);
                           the next call makes it again, empty, to be filled from its primary */
    DSQ_OP_REBUILD,     /* (replication, a follower) make this node's copy again from the
                           object store: forgotten as by RESET, then restored with what the
                           store has, no further than the hooks' epoch_end of the epoch its
                           manifest was written in. lsn: where the copy ends now (0: none made).
                           INVALID_LSN when the store cannot give one, or gives one that ends
                           before as_of_lsn (the LSN the copy must reach: the record before the
                           primary's log starts); the copy it made, if any, stays. The worker
                           waits for the download */
    DSQ_OP_CDC_READ,    /* the durable commits after as_of_lsn (as_of NONE: none, just the
                           durable end) from the log, as a CDC batch in `out`. Through
                           dsq_engine_submit_system, with target_db and upto_lsn: read
                           from that database's log files up to upto_lsn (known durable)
                           beside its actor, which writes on undisturbed. INVALID_LSN when
                           the log no longer holds the commit after as_of_lsn (lsn: the LSN
                           the log holds the commits after), or as_of_lsn is past the last
                           commit (lsn: as_of_lsn) */
    DSQ_OP_EXPORT,      /* the database as of as_of_lsn (as_of NONE: its last commit) written to
                           export_path as a SQLite database file (created, or truncated); lsn:
                           the commit it holds */
    DSQ_OP_IMPORT,      /* stmts[0]: SQL text, as `sqlite3 DB .dump` writes it, run into the
                           database, which must be empty, as one commit: its BEGIN, COMMIT and
                           PRAGMA foreign_keys lines are passed over, PRAGMA writable_schema
                           (a dump's virtual tables) is allowed, any other PRAGMA refused;
                           results[0].rows_affected: the statements run; lsn: the commit */
} dsq_op;

enum {
    DSQ_SCOPE_R = 1, /* may run read-only statements */
    DSQ_SCOPE_W = 2, /* may run statements that write */
    DSQ_SCOPE_A = 4, /* may change the server's settings (the VSchema): protocols' admin methods */
};

typedef struct dsq_call dsq_call;

/* ---- what SCHEMA, STATS and LIST answer: plain structs, which the
 * protocols encode (every string is owned by its struct) ---- */

typedef struct dsq_schema_column {
    char *name;       /* NULL: an index's expression */
    char *type;       /* as declared ("" when none) */
    bool not_null;
    char *dflt;       /* the default's SQL text; NULL: none */
    int pk;           /* its place in the primary key (1, 2, ...); 0: not in it */
    bool generated;   /* a generated column */
} dsq_schema_column;

typedef struct dsq_schema_object {
    char *name;
    char *table;                 /* index, trigger: the table it belongs to */
    char *sql;                   /* its CREATE statement; NULL: none (an automatic index) */
    dsq_schema_column *columns;  /* table, view: its columns; index: the names it covers */
    size_t ncolumns;
    bool has_flags;              /* table: without_rowid and strict are known */
    bool without_rowid, strict;
    bool unique;                 /* index */
} dsq_schema_object;

typedef struct dsq_schema_list {
    dsq_schema_object *v;
    size_t n;
} dsq_schema_list;

/* A database's schema, SQLite's own objects and dosqld's left out; each
 * list in name order. */
typedef struct dsq_schema {
    dsq_schema_list tables, indexes, views, triggers;
} dsq_schema;

void dsq_schema_free(dsq_schema *s);

/* A CDC subscriber of a database (STATS). */
typedef struct dsq_sub_stats {
    uint64_t lsn;       /* the last commit it was sent */
    uint64_t lag_lsn;   /* commits durable since */
    uint64_t lag_bytes; /* bytes of row changes the feed holds for it */
    bool reading_log;   /* it is behind the feed: it reads the log */
} dsq_sub_stats;

/* ---- calls, continued ---- */

enum { DSQ_AS_OF_NONE = 0, DSQ_AS_OF_LSN, DSQ_AS_OF_TIME };
typedef struct dsq_engine dsq_engine;

struct dsq_call {
    /* ---- in: set by the caller ---- */
    dsq_op op;
    dsq_stmt_req *stmts;     /* QUERY, STREAM: 1; BATCH: nstmts */
    size_t nstmts;
    bool atomic;             /* BATCH: all or nothing (default true) */
    char txn[33];            /* the transaction this call belongs to, or "" */
    bool immediate;          /* BEGIN: BEGIN IMMEDIATE */
    bool read_only;          /* BEGIN: a snapshot transaction: it reads the database as of its
                                start, on a connection of its own, and holds back no one */
    uint64_t txn_timeout_ms; /* BEGIN: idle limit; 0 = the engine default */
    unsigned scope;          /* DSQ_SCOPE_* the caller holds */
    uint64_t session;        /* the connection; its transactions end with it (0: none) */
    size_t chunk_rows;       /* STREAM: rows per chunk; CDC_READ: bytes at most */
    int as_of;               /* QUERY: DSQ_AS_OF_*: read the database as it was */
    uint64_t as_of_lsn;      /* DSQ_AS_OF_LSN: at this commit */
    uint64_t as_of_time_us;  /* DSQ_AS_OF_TIME: at the newest commit at or before this */
    dsq_budget *budget;      /* QUERY, BATCH: the request's, shared with its other calls
                                (borrowed; outlives the call); NULL: the call's own */
    const char *target_db;   /* CDC_READ on the system actor: whose log (borrowed) */
    uint64_t upto_lsn;       /* CDC_READ on the system actor: read no further; on the
                                database's actor it is set to the durable end */
    const char *export_path; /* EXPORT: the file to write (borrowed) */
    bool replica_ok;         /* QUERY: it may be answered by a follower copy (with replication:
                                consistency "replica"); else a follower refuses it (NOT_PRIMARY) */
    uint64_t min_lsn;        /* QUERY: answered once this copy has the commit of this LSN (a
                                bookmark: read your writes); it waits for it up to the commit
                                timeout (write_wait_ms without replication), then TIMEOUT */
    bool fk_off;             /* QUERY, BATCH: run with foreign key enforcement off; BEGIN: off
                                until the transaction ends (a libSQL client's PRAGMA
                                foreign_keys=OFF before a migration, kept per Hrana stream).
                                Inside an open transaction it changes nothing, as in SQLite */
    bool internal_tables;    /* it may read and write dosqld's own tables (named _dsq_...: the
                                sharding router's calls); other calls may not touch them */
    char prepare_id[33];     /* a cross-shard transaction's id (the sharding router's; with
                                internal_tables). BEGIN: recorded durably in the database's
                                _dsq_prepared table (with target_db, its coordinator) before
                                the transaction starts; while such a record is there, other
                                clients' writes fail (SERIALIZATION_FAILURE, retryable) — also
                                after a restart, until the router resolves it. COMMIT removes
                                it in the transaction it commits; ROLLBACK after it */
    const char *idem_key;    /* QUERY, atomic BATCH, COMMIT: the request's idempotency key, 1 to 128
                                bytes (borrowed; outlives the call), or NULL. With a window
                                (idempotency_window_ms), a call whose key is recorded for the same
                                request gets that request's first answer and runs nothing; one
                                recorded for another request fails (INVALID_REQUEST). A call that
                                writes records its key, its request's digest and its answer in
                                the transaction it commits (_dsq_idempotency); one that fails, or
                                writes nothing, records nothing (idem.c) */
    size_t idem_key_len;
    const uint8_t *recs;     /* APPLY: log records, back to back (borrowed; outlives the call) */
    size_t recs_len;
    /* Runs on the worker when results are final (and before done): turn
     * them into `out`. May be NULL. */
    void (*encode)(dsq_call *c);
    /* STREAM: runs on the worker for each chunk of rows (results[0] holds
     * just that chunk); the engine then hands the call to `done` with
     * `more` set. */
    void (*chunk)(dsq_call *c);
    /* Runs on the loop thread when the call (or a stream chunk) is done. */
    void (*done)(dsq_call *c);
    void *ud;                /* the caller's */

    /* ---- out: set by the engine ---- */
    int err;                 /* 0, or -1 with code and msg */
    dsq_code code;
    char msg[512];
    bool not_found;          /* DROP: no such database (HTTP answers 404) */
    dsq_result *results;     /* owned; QUERY/STREAM: 1, BATCH: nresults */
    size_t nresults;
    uint64_t lsn;            /* the LSN the call's outcome reflects */
    char txn_out[33];        /* BEGIN: the new transaction's id */
    dsq_schema *schema;      /* SCHEMA (owned) */
    struct dsq_db_stats *stats; /* STATS (owned) */
    char **names;            /* LIST: the databases' names, sorted (owned) */
    size_t nnames;
    uint64_t time_ms;        /* PING: the server's wall clock (ms since the epoch) */
    uint64_t result_bytes;   /* QUERY, BATCH: bytes of rows its results hold (with a budget:
                                charged to it; released only by dsq_budget_release) */
    bool replayed;           /* (idem_key) the answer is the first one's, recorded: nothing ran */
    bool more;               /* STREAM: more chunks follow this one; CDC_READ: more is durable */
    dsq_buf out;             /* encode's output */
    char db[129];            /* the database it was submitted to (set by the engine) */

    /* ---- private to the engine ---- */
    struct dsq_actor *actor;
    dsq_qnode link;          /* in the actor's mailbox, at its gate, or done */
    uint64_t seq;            /* its place in the actor's arrival order */
    atomic_bool cancelled;   /* dsq_engine_cancel: its statement stops, or it never starts */
    bool wait_writer;        /* it writes, and another client's transaction is open: it
                                waits for that one to end (reads run meanwhile) */
    uint64_t wait_since_ms;  /* when it began to wait so (monotonic) */
    uint64_t posted_ms;      /* when it reached the mailbox (monotonic) */
    bool wait_expired;       /* it waited write_wait_ms: it fails at once */
    bool wait_lsn;           /* it waits for this copy to reach min_lsn */
    uint64_t stream_id;
    int state;
    bool ran_as_primary;     /* with replication: it ran on the primary copy ... */
    uint64_t repl_gen;       /* ... whose actor's repl_gen was this before its role was read */
    uint64_t gate_lsn;       /* parked at the output gate until this LSN is durable */
    uint64_t parked_ms;      /* when it was parked there (monotonic) */
    /* A page it read was in the object store (warm.h): it runs again once
     * the page is here, from where it stopped. */
    bool cold_retry;         /* it is such a second run */
    int cold_how;            /* how the wait ended (DSQ_WARM_*) */
    size_t resume_stmt;      /* BATCH: the statement to go on with */
    size_t resume_off;       /* in an explicit transaction: the byte of its SQL to go on from */
    char cold_msg[256];
};

/* Free a finished call's engine-owned parts (results, schema, stats,
 * names, out). */
void dsq_call_reset(dsq_call *c);
/* The public code of a SQLite result code and message ("no such table"
 * is TABLE_NOT_FOUND, ...), as calls report them. */
dsq_code dsq_code_of_sqlite(int rc, const char *msg);
/* Free just its results (an encoder that has turned them into `out`:
 * the rows and their text are not held together longer than needed). */
void dsq_call_free_results(dsq_call *c);

/* ---- the engine ------------------------------------------------------------------ */

/* When a commit is on disk before its reply leaves (storage.sync). */
typedef enum {
    DSQ_SYNC_FULL = 0, /* every reply after a write waits for its fsync (group commit) */
    DSQ_SYNC_NORMAL,   /* replies do not wait; the log is synced right behind them */
    DSQ_SYNC_OFF,      /* never fsync: for tests and benchmarks only */
} dsq_sync_mode;

typedef struct dsq_engine_cfg {
    const char *data_dir;          /* databases live under DATA_DIR/db/ */
    unsigned workers;              /* threads; 0 = number of cores */
    uint64_t idle_timeout_ms;      /* hibernate an actor idle this long */
    unsigned max_open_actors;      /* open SQLite connections at most (LRU) */
    size_t max_queue;              /* messages waiting per actor */
    unsigned batch_per_turn;       /* messages an actor runs before yielding */
    uint64_t query_timeout_ms;     /* one call's statements stop after this */
    size_t max_result_size;        /* bytes of rows per call, and per request (dsq_budget) */
    uint64_t txn_timeout_ms;       /* default idle limit of a transaction */
    uint64_t max_txn_timeout_ms;   /* the largest timeoutMs a BEGIN may ask for (0: no cap) */
    uint64_t write_wait_ms;        /* a write waiting for another client's transaction fails
                                      after this long (0: 30 s) */
    unsigned max_snapshots;        /* read-only transactions and streams open at once per
                                      database (0: 64) */
    size_t max_sql_length;         /* SQLITE_LIMIT_SQL_LENGTH */
    size_t max_value_size;         /* SQLITE_LIMIT_LENGTH */
    int max_columns;               /* SQLITE_LIMIT_COLUMN */
    int max_expr_depth;            /* SQLITE_LIMIT_EXPR_DEPTH */
    int max_params;                /* SQLITE_LIMIT_VARIABLE_NUMBER */
    int cache_pages;               /* page cache per open database */
    uint32_t page_size;            /* of new databases */
    uint64_t segment_bytes;        /* log segment size */
    int zstd_level;                /* of log pages */
    uint64_t max_txn_bytes;        /* pages one transaction may change */
    uint64_t checkpoint_bytes;     /* log after the newest checkpoint that makes one due */
    unsigned max_open_files;       /* descriptors a database keeps open for reads of its old
                                      segments and checkpoints (fdcache.h); 0: 16 */
    uint64_t retention_ms;         /* history kept for time travel */
    uint64_t idempotency_window_ms; /* how long a call's idempotency key answers its retries
                                      (dsq_call.idem_key); 0: keys are not remembered */
    dsq_sync_mode sync;            /* see dsq_sync_mode */
    unsigned sync_threads;         /* threads that fsync logs; 0 = 1 */
    bool group_sync;               /* without the journal, several logs waiting: one syncfs */
    bool journal;                  /* the node journal (journal.h) carries durability */
    size_t cdc_buffer_bytes;       /* recent commits kept per database with CDC subscribers */
    unsigned cdc_coalesce_ms;      /* while the process is busy, a feed's subscribers run at most
                                      this often (0: at every sync); dsq_engine_feed_due_ms */
    unsigned cdc_coalesce_cpu;     /* busy: it used this % of its CPUs or more over the last
                                      50 ms, then until below 70 % of it (0: always) */
    uint32_t cdc_slice_ns;         /* a round of calls to a feed's subscribers yields to the loop
                                      after this long (at least one call); 0: 50 us */
    struct dsq_obj *objects;       /* the object store (objstore.h): databases' files go there
                                      (tier.h) and missing ones come back from it at start; NULL: none */
    uint64_t tier_chunk_bytes;     /* object size of the files' chunks (default 2 MiB) */
    uint64_t tier_interval_ms;     /* a committing database offers its files this often (default 1 s) */
    uint64_t tier_drain_ms;        /* at stop, how long uploads may take (default 10 s) */
    bool tier_commit;              /* sync_to_object_store = commit: replies also wait for the
                                      object store (sync = full only) */
    uint64_t hot_tier_max_bytes;   /* local bytes of the databases' files above which uploaded
                                      checkpoints of closed databases are evicted (0: no limit) */
    uint64_t hot_tier_max_age_ms;  /* such files untouched this long are evicted (0: never) */
    uint64_t warm_cache_bytes;     /* evicted pages' chunks kept locally (default 256 MiB) */
    uint64_t cold_read_timeout_ms; /* a call waits this long for a page from the store (default 10 s) */
    uint64_t journal_bytes;        /* one journal file's size */
    const struct dsq_repl_hooks *repl; /* replication (see below); NULL: every database has one
                                      copy, this one (borrowed; outlives the engine) */
    uint64_t repl_timeout_ms;      /* with repl: a reply that waited this long for other copies
                                      to hold its commit fails with TIMEOUT */
    void (*wake)(void *arg);       /* from any thread: calls are ready */
    void *wake_arg;
} dsq_engine_cfg;

/* ---- replication: the engine's side (cluster/ has the rest) ----------------------------------
 *
 * A database may have copies on other nodes. The engine does not know
 * them: it asks the hooks which role this node's copy has, tells them of
 * each commit record and of how far the log is durable, and lets a reply
 * after a commit leave only once the hooks say enough copies hold it.
 * A primary takes writes; a follower takes records from its primary
 * (DSQ_OP_APPLY), serves reads, and refuses writes with NOT_PRIMARY. */

typedef enum dsq_role {
    DSQ_ROLE_ALONE = 0, /* the only copy: as without replication */
    DSQ_ROLE_PRIMARY,
    DSQ_ROLE_FOLLOWER,
    DSQ_ROLE_ELSEWHERE, /* this node holds no copy: every call on the database fails with
                           NOT_PRIMARY, before anything is opened or made */
} dsq_role;

/* STATS, with replication: one copy of the database, as this node knows
 * it (the hooks' `copies`). */
typedef struct dsq_copy_stats {
    char node[32];
    bool primary;
    uint64_t durable, applied; /* LSNs */
    uint64_t lag_lsn;          /* commits the primary has that it does not hold durably (the primary
                                  knows; 0 elsewhere) */
    uint64_t lag_ms;           /* how long it has been behind so (0: in step) */
} dsq_copy_stats;

typedef struct dsq_repl_hooks {
    /* Any thread. The role of this node's copy of db; a follower (or a
     * node without a copy) writes the primary's node id into primary[len]
     * ("" when unknown). */
    dsq_role (*role)(void *ud, const char *db, char *primary, size_t len);
    /* Any thread. Replies after commits up to which LSN may leave, now
     * that this node's log of db is durable up to `durable` (for a
     * database alone: durable). Called as the log becomes durable and
     * after dsq_engine_repl_poke. */
    uint64_t (*released)(void *ud, const char *db, uint64_t durable);
    /* A worker, in LSN order per database: this node's primary copy of
     * db appended commit record rec[0..len) (valid during the call). */
    void (*committed)(void *ud, const char *db, uint64_t lsn, const void *rec, size_t len);
    /* Any thread; NULL: always. Whether replies on db may leave at all now
     * (a primary not sure that it still is one holds them, as it holds
     * those of commits not yet acknowledged, until dsq_engine_repl_poke
     * finds it sure again or the replies time out). */
    bool (*answering)(void *ud, const char *db);
    /* Any thread; NULL: none. db's copies as this node knows them, into
     * out[0..max) (returns how many) and its epoch (STATS). */
    size_t (*copies)(void *ud, const char *db, dsq_copy_stats *out, size_t max, uint64_t *epoch);
    /* Any thread; NULL: no epochs (0). The highest epoch this copy of db
     * accepted (its uploads say it: tier.h). */
    uint64_t (*epoch)(void *ud, const char *db);
    /* Any thread; NULL: UINT64_MAX. The last LSN of epoch `epoch` in the
     * history of db this node holds (UINT64_MAX when it is the newest
     * there): how far a copy written in that epoch agrees with it. */
    uint64_t (*epoch_end)(void *ud, const char *db, uint64_t epoch);
    void *ud;
} dsq_repl_hooks;

/* The commit record at p[0..n) (as `committed` and DSQ_OP_LOG_READ give
 * them, back to back): its LSN and length. 0, or -1 when p does not hold
 * a whole record header that says so. */
int dsq_log_record(const void *p, size_t n, uint64_t *lsn, size_t *len);

/* The answer of `released` for db may have grown (another copy holds
 * more): replies waiting for it leave. Loop thread. */
void dsq_engine_repl_poke(dsq_engine *e, const char *db);

/* Fail every reply of db still waiting for other copies with `code` and
 * message `msg` (this copy was replaced as primary: they will never be
 * acknowledged). Loop thread. */
void dsq_engine_repl_abandon(dsq_engine *e, const char *db, dsq_code code, const char *msg);

/* Start the engine: lock the data directory (dsq_engine_lock_dir, held
 * until dsq_engine_free), create DATA_DIR/db, start the workers. NULL
 * with the reason in err. */
dsq_engine *dsq_engine_new(const dsq_engine_cfg *cfg, char *err, size_t errlen);

/* A data directory belongs to one process at a time: take its lock,
 * DATA_DIR/LOCK (created if need be), which then holds this process's
 * pid. The kernel releases the lock when the process ends, however it
 * ends. Every opener of a data directory takes it: dsq_engine_new does;
 * a tool that works on one without an engine (dosqld --restore) calls
 * this itself. Returns the lock's descriptor, for dsq_engine_unlock_dir;
 * or -1 with the reason in err, which names the holder's pid when another
 * open of the directory (in this process or another) holds it. */
int dsq_engine_lock_dir(const char *data_dir, char *err, size_t errlen);
void dsq_engine_unlock_dir(int fd);

/* Submit a call to database `db` (a valid name). The first call to a name
 * creates the database. Returns 0; or -1 when the call cannot be queued,
 * with c->code/msg set and `done` NOT called. */
int dsq_engine_submit(dsq_engine *e, const char *db, dsq_call *c);

/* Submit a call that concerns no one database (DSQ_OP_LIST). Same
 * contract as dsq_engine_submit. */
int dsq_engine_submit_system(dsq_engine *e, dsq_call *c);

/* Wake the workers for the calls submitted since the last kick. Submitting
 * does not wake a worker by itself, so that everything one loop iteration
 * submits costs one wake-up: the loop calls this before it blocks (poll
 * and tick call it too). */
void dsq_engine_kick(dsq_engine *e);

/* Run `done` for every finished call (kicking first), then the CDC
 * subscribers of feeds with news (dsq_engine_feed_poll). Loop thread. */
void dsq_engine_poll(dsq_engine *e);
/* The two halves of dsq_engine_poll: a busy server sends the replies
 * the calls made before the subscribers' events, which may be many. */
void dsq_engine_poll_calls(dsq_engine *e);
void dsq_engine_feed_poll(dsq_engine *e);
/* The process used cdc_coalesce_cpu % of its CPUs or more over the last
 * 50 ms or so, or was busy and used 70 % of that (always with
 * cdc_coalesce_cpu 0). Loop thread. */
bool dsq_engine_busy(dsq_engine *e);
/* Subscribers have something coming: a feed has news, or is held back or
 * between slices. Loop thread. */
bool dsq_engine_feed_pending(dsq_engine *e);

/* Housekeeping, every few hundred ms: hibernate idle actors, roll back
 * transactions and end streams past their idle limits, bring the number of
 * open actors back under max_open_actors. Loop thread. */
void dsq_engine_tick(dsq_engine *e);

/* The caller no longer wants call c (its client went away, or asked to
 * cancel it). A QUERY, BATCH, STREAM, SCHEMA or BEGIN that has not
 * started fails when its turn comes, without running; a statement it is
 * running stops at SQLite's next progress check (every 1000 virtual
 * machine instructions), as at query_timeout, and SQLite undoes it. Its
 * `done` still runs, with TIMEOUT "the request was cancelled". Other
 * operations (COMMIT, ROLLBACK, ...) run as asked. A call that is done:
 * nothing. Loop thread. */
void dsq_engine_cancel(dsq_engine *e, dsq_call *c);

/* A connection went away: roll back its transactions, end its streams. */
void dsq_engine_session_closed(dsq_engine *e, uint64_t session);

/* STREAM: the caller has taken the last chunk (its `done` ran) and wants
 * the next one; or, with cancel, wants no more. Loop thread. */
void dsq_engine_stream_more(dsq_engine *e, dsq_call *c, bool cancel);

typedef struct dsq_engine_stats {
    uint64_t actors;          /* known databases in memory */
    uint64_t actors_open;     /* with an open connection */
    uint64_t actors_hibernated;
    uint64_t queued;          /* messages waiting in mailboxes */
    uint64_t calls;           /* calls completed */
    uint64_t txns_open;
    uint64_t fsyncs;          /* log syncs by the syncer threads (group commits) */
    uint64_t gated;           /* replies that waited at an output gate */
    bool journal;             /* the node journal is on; then: */
    uint64_t journal_syncs;   /* its fdatasyncs */
    uint64_t journal_flushes; /* syncfs flushes that retired its files */
    uint64_t journal_bytes;   /* appended to it */
    uint32_t journal_files;   /* its files on disk */
    uint32_t journal_live;    /* of them holding entries not yet flushed */
    uint64_t journal_held;    /* entries whose records are still only in a log's memory */
    uint64_t journal_bulk_syncs;  /* syncfs between its moves to a new file */
    uint64_t journal_zeroed;      /* bytes of zeros written ahead of its appends */
    uint64_t journal_zero_waits;  /* appends that waited for a chunk being zeroed */
    uint64_t subscriptions;   /* CDC subscribers of database feeds */
    uint64_t cdc_coalesced;   /* sends to a feed's subscribers held back (cdc_coalesce_ms) */
    uint64_t idem_replays;    /* calls answered from their idempotency key's record */
    bool tier;                /* an object store is configured */
    dsq_tier_counts tier_counts;
    dsq_evict_counts evict_counts;
    dsq_warm_counts warm_counts;
} dsq_engine_stats;

void dsq_engine_stats_get(dsq_engine *e, dsq_engine_stats *out);

/* STATS: a database's figures, with the server's. */
typedef struct dsq_db_stats {
    char name[129];
    uint64_t lsn;
    int64_t pages, page_size, free_pages;
    uint64_t statements, cache_hits, cache_misses; /* the statement cache's */
    int page_cache_hits, page_cache_misses, page_cache_bytes;
    bool txn_open;
    /* storage */
    uint64_t log_segments, log_bytes, checkpoints, checkpoint_bytes, oldest_lsn, durable_lsn;
    dsq_sub_stats *subs; /* its CDC subscribers (owned) */
    size_t nsubs;
    /* replication (with the hooks): this copy's role, the epoch, the copies */
    dsq_role role;
    bool replicated;     /* the hooks answered: the fields below mean something */
    uint64_t epoch;
    dsq_copy_stats *copies; /* owned */
    size_t ncopies;
    dsq_engine_stats server;
} dsq_db_stats;

void dsq_db_stats_free(dsq_db_stats *s);

/* Keep database db's log records after LSN `after` whatever the history
 * window says (a reader that has not caught up with the log: the lake's
 * writer); UINT64_MAX lets go. Any thread. 0, or -1 out of memory. */
int dsq_engine_hold_log(dsq_engine *e, const char *db, uint64_t after);

/* ---- change data capture: database feeds ---------------------------------------- */

/* A CDC batch (dsq_engine_feed_read, DSQ_OP_CDC_READ): per commit, in LSN
 * order, lsn u64 | commit time µs u64 | n u32 | n bytes of row changes
 * (engine/cdc/cdc.h's encoding; 0 bytes: none), little-endian. */
int dsq_cdc_batch_put(dsq_buf *out, uint64_t lsn, uint64_t time_us, const void *changes, uint32_t n);
/* The next commit of a batch: 1 and its fields, 0 at the end, -1 damaged. */
int dsq_cdc_batch_next(const uint8_t **p, const uint8_t *end, uint64_t *lsn, uint64_t *time_us,
                       const uint8_t **changes, uint32_t *n);

typedef struct dsq_feed_sub dsq_feed_sub;
/* Called on the loop thread (from dsq_engine_poll) when the database's
 * log became durable further. */
typedef void (*dsq_feed_fn)(void *ud);

/* Follow database `db` (a valid name): from now on its commits are kept
 * in memory (cdc_buffer_bytes) and `fn` runs as they become durable. Loop
 * thread. NULL when out of memory. */
dsq_feed_sub *dsq_engine_feed_subscribe(dsq_engine *e, const char *db, dsq_feed_fn fn, void *ud);
void dsq_engine_feed_unsubscribe(dsq_engine *e, dsq_feed_sub *s);

/* Append to `out` (a CDC batch) the durable commits after LSN `after`, up
 * to LSN `limit` (UINT64_MAX: no limit), that the feed holds, up to about
 * max_bytes (at least one). Returns 1, with *upto the last LSN appended
 * (or `after`) and *more when max_bytes or `limit` stopped it; 0 when the
 * feed does not hold the commit after `after` (the caller reads the log:
 * DSQ_OP_CDC_READ); -1 out of memory. With `out` NULL nothing is copied:
 * only *upto and *more say what it would append. Loop thread. */
int dsq_engine_feed_read(dsq_feed_sub *s, uint64_t after, uint64_t limit, size_t max_bytes, dsq_buf *out,
                         uint64_t *upto, bool *more);
/* Feeds held back while the process is busy (cdc_coalesce_ms): in how
 * many ms dsq_engine_feed_poll should run for the first of them (0: at
 * once, a feed's subscribers are being called in slices); -1: none.
 * Loop thread, after dsq_engine_poll or dsq_engine_feed_poll. */
int64_t dsq_engine_feed_due_ms(dsq_engine *e);
/* The database's incarnation the subscriber follows (one more each time
 * a database of that name is dropped). */
uint64_t dsq_engine_feed_epoch(dsq_feed_sub *s);
/* The database was dropped since the subscriber came: it must end. */
bool dsq_engine_feed_gone(dsq_feed_sub *s);
/* The subscriber has delivered every commit up to lsn (for getStats). */
void dsq_engine_feed_progress(dsq_feed_sub *s, uint64_t lsn);
/* How far the database's log is known durable; raise it from what a
 * read of the log said (no callbacks run). */
uint64_t dsq_engine_feed_durable(dsq_feed_sub *s);
void dsq_engine_feed_note_durable(dsq_feed_sub *s, uint64_t lsn);

/* Stop: refuse new calls, let queued ones finish, roll back open
 * transactions, close every database, join the workers. Blocks; the
 * remaining `done` hooks run from inside. */
void dsq_engine_free(dsq_engine *e);

#endif
