/* exec_int — private to the files that run calls on an actor's
 * connections (worker): the call in hand (run_ctx) and what those files
 * call of each other. The rest of the runtime sees dsq__exec and
 * dsq__actor_close only (engine_int.h). */
#ifndef DSQ_EXEC_INT_H
#define DSQ_EXEC_INT_H

#include "engine/runtime/engine_int.h"
#include "engine/tier/warm.h"

/* The call a worker is running, and where it runs. */
typedef struct run_ctx {
    dsq_engine *e;
    dsq_actor *a;
    actor_open *o;
    dsq_call *c;
    size_t bytes_before; /* result bytes of earlier statements kept by the call */
    sqlite3 *db;         /* the connection statements run on: o->db, or a time-travel one */
    sqlite3_stmt *scratch; /* the time-travel connection's statement in hand */
    bool past;           /* a time-travel query: statements may only read */
    bool beside;         /* reads beside another client's open transaction: a statement
                            that writes makes the call wait for it (park) */
    bool park;           /* so it did: the call goes back to the mailbox, to run later */
    bool park_lsn;       /* it waits for this copy to reach c->min_lsn (back to the mailbox) */
    snap_txn *snap;      /* the read-only transaction the call names, or NULL */
    size_t start_off;    /* dsq__run_sql: begin at this byte of the SQL (a run after a cold page) */
    bool retry;          /* a page was in the object store: run the call again once it is here */
    dsq_role role;       /* this node's copy of the database (dsq__repl_role) */
    char primary[32];    /* a follower's primary, when known */
} run_ctx;

/* Whether what just failed read a page that is in the object store, not
 * in the warm cache yet (warm.h): then the call runs again later. */
static inline bool dsq__cold(const run_ctx *x) { return x->e->warm != NULL && dsq_cold_missed(); }

/* ---- repl.c: replication ---- */
/* Ask the hooks for the role of the actor's copy (x->role, x->primary). */
void dsq__repl_role(run_ctx *x);
/* Fail the call: a follower does not take `what` ("writes", ...). */
void dsq__fail_not_primary(run_ctx *x, const char *what);
/* DSQ_OP_APPLY and DSQ_OP_LOG_READ (engine.h). */
void dsq__op_apply(run_ctx *x);
void dsq__op_log_read(run_ctx *x);
void dsq__op_truncate(run_ctx *x);
void dsq__op_reset(run_ctx *x);
void dsq__op_rebuild(run_ctx *x);

/* ---- sandbox.c: what a client's SQL may do ---- */
/* Limits, settings, the authorizer and the progress handler, on db (the
 * actor's connection or one on a view of its store). */
void dsq__sandbox(actor_open *o, sqlite3 *db, const dsq_engine_cfg *cfg);
/* Skip white space and comments in [p, end). */
const char *dsq__sql_skip_space(const char *p, const char *end);
/* Does the statement text start with keyword `kw`? */
bool dsq__sql_starts_with(const char *sql, size_t len, const char *kw);
/* Is it VACUUM INTO (refused: it writes a file)? */
bool dsq__sql_vacuum_into(const char *sql, size_t len);
/* Is there nothing but white space, comments and one ';' after the
 * first statement? */
bool dsq__sql_lone_statement(const char *sql, size_t len);

/* ---- stmt.c: prepared statements ---- */
/* The cached statement for the text `rest` (the request's SQL from the
 * statement on), with how many bytes of it the statement used; NULL when
 * none is cached. */
sqlite3_stmt *dsq__cache_get(actor_open *o, const char *rest, size_t len, size_t *consumed);
/* Keep `st` for `rest`, in place of the least recently used. On failure
 * (out of memory) st is finalized and -1 returned. */
int dsq__cache_put(actor_open *o, const char *rest, size_t len, size_t consumed, sqlite3_stmt *st);
/* Finalize every statement the connection keeps (it closes). */
void dsq__stmts_free(actor_open *o);
/* Bind the request's parameters to `st`, marking which were used in
 * `used` (one byte each). 0, or -1 with c failed. */
int dsq__bind_params(dsq_call *c, sqlite3_stmt *st, const dsq_stmt_req *r, unsigned char *used);
/* Run our own SQL on the actor's connection (the authorizer lets it
 * pass). Returns SQLITE_OK or the error. */
int dsq__internal_exec(actor_open *o, const char *sql);

/* ---- run.c: running a request's SQL ---- */
/* Map a SQLite result code (and message) to DESIGN's code. */
dsq_code dsq__sqlite_code(int rc, const char *msg);
/* Fail the call with the connection's current error (x->db's, else the
 * actor's). */
void dsq__fail_sqlite(run_ctx *x, int rc);
/* A QUERY or BATCH call of a request whose results already went past the
 * budget fails before it runs: 1 when so. */
int dsq__budget_spent(run_ctx *x);
/* A QUERY or BATCH call is over: its budget holds what its results hold. */
void dsq__budget_settle(dsq_call *c);
/* Run every statement in r->sql in order, on x->db (NULL: the actor's
 * connection), from byte x->start_off; `res` keeps the last one's rows.
 * 0, or -1 with the call failed. */
int dsq__run_sql(run_ctx *x, const dsq_stmt_req *r, dsq_result *res);

/* ---- conn.c: an actor's connections ---- */
/* Open the actor's database if it is closed. 0 or -1 (c failed). */
int dsq__actor_open(dsq_engine *e, dsq_actor *a, dsq_call *c);
/* Offer the database's durable files to the object store (tier.h): up
 * to the durable end of its log while open (o), or whole once closed
 * (o NULL, its log durable up to closed_lsn). */
void dsq__offer_files(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t closed_lsn);
/* A connection on the database as of `lsn`, with the actor's sandbox.
 * -1 when there is no such view (the LSN is out of the history kept), -2
 * when the connection cannot open; the reason in err either way. */
int dsq__view_conn(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t lsn, struct dsq_ps_view **vp,
                   sqlite3 **dbp, char *err, size_t errlen);
/* Close the connection reads beside the open transaction use. */
void dsq__beside_close(actor_open *o);
/* Remove read-only transaction i: its streams, connection and view close. */
void dsq__snap_remove(dsq_engine *e, dsq_actor *a, size_t i);
/* Close every read-only transaction of the actor (it closes or shuts). */
void dsq__snaps_close_all(dsq_engine *e, dsq_actor *a);
/* Write a checkpoint and apply the retention window (between requests). */
void dsq__checkpoint(dsq_actor *a, actor_open *o);
/* Before the database closes: a checkpoint if much log follows the last
 * one, and the retention window. */
void dsq__checkpoint_before_close(dsq_actor *a);

/* ---- txn.c: transactions ---- */
/* The client's transaction ended (committed or rolled back): no longer
 * open on the actor. */
void dsq__end_txn(run_ctx *x);
/* After SQLite may have committed: the store's LSN is the connection's,
 * the commit (with its row changes) goes to the actor's CDC feed, and a
 * checkpoint or an offer of files follows when due. */
int dsq__took_commit(run_ctx *x, const void *changes, size_t nchanges);
/* Cross-shard transactions prepared on o and not decided (rows of its
 * _dsq_prepared table; counted again when o->prepared_known is false). */
uint32_t dsq__prepared_count(actor_open *o);
/* A request's own transaction begins (not inside an explicit one). 0, or
 * -1 with the call failed. */
int dsq__begin_request(run_ctx *x);
/* Keep the request's work if ok, else undo it. Returns 0 when kept. */
int dsq__end_request(run_ctx *x, bool ok);
/* A call that names a transaction must name the open one (or a read-only
 * one: x->snap). 0, or -1 with the call failed. */
int dsq__check_txn(run_ctx *x);
void dsq__op_begin(run_ctx *x);
void dsq__op_commit(run_ctx *x);
void dsq__op_rollback(run_ctx *x);
/* A call ran: the idle clock of the transaction it named restarts. */
void dsq__txn_touch(run_ctx *x);
/* DSQ__OP_TXN_EXPIRE: roll back transaction c->txn (its client went, or
 * it idled past its timeout). */
void dsq__op_txn_expire(run_ctx *x);

/* ---- stream.c: queryStream ---- */
/* Start, continue or cancel a stream; hands one chunk to the loop. */
void dsq__op_stream(run_ctx *x);
/* DSQ__OP_STREAM_END: end stream c->stream_id (its client went, or it
 * idled past transaction_timeout). */
void dsq__op_stream_end(run_ctx *x);
/* End the stream in the write transaction: its statement, and the
 * actor's hold. */
void dsq__stream_finish(run_ctx *x);
/* The stream's call failed before it ran: what it holds is let go. */
void dsq__stream_abandon(run_ctx *x);
/* Close the actor's snapshot streams: all (on NULL), or those that read
 * the read-only transaction connection `on`. */
void dsq__sstreams_close(dsq_actor *a, sqlite3 *on);

/* ---- cdcread.c: CDC catch-up reads ---- */
/* The durable commits after c->as_of_lsn, from the actor's open log. */
void dsq__op_cdc_read(run_ctx *x);
/* The same from database c->target_db's log files, on the system actor. */
void dsq__op_cdc_read_files(run_ctx *x);

/* ---- idem.c: idempotency keys ---- */
/* The call's key is looked up and recorded: it has one, keys are
 * remembered (a window), it may write, and it is a QUERY, BATCH or COMMIT. */
bool dsq__idem_keyed(const run_ctx *x);
/* Before a keyed call runs (c->idem_key, and a window): its key's record
 * on `db` (NULL: the actor's connection). 0: none, the call runs; 1: the
 * call is answered (its first answer, replayed; or it failed: a different
 * request, or x->retry for a page in the object store). */
int dsq__idem_replay(run_ctx *x, sqlite3 *db);
/* In the transaction about to commit (or the explicit one the call ran
 * in): the keyed call's record, when it wrote (COMMIT: always). 0, or -1
 * with the call failed. */
int dsq__idem_record(run_ctx *x);

/* ---- exec.c ---- */
/* The connection on the last commit that reads beside the open
 * transaction (opened if need be); NULL when it failed (c->err, or
 * x->retry when a page is in the object store). */
sqlite3 *dsq__beside_db(run_ctx *x);
/* results[0..n) of the call, empty (what they held is freed). 0, or -1
 * with the call failed. */
int dsq__alloc_results(dsq_call *c, size_t n);
/* The running call (or the stream) ended: the chunks it waited for may
 * leave the warm cache again. */
void dsq__pins_release(dsq_engine *e, dsq_actor *a);

#endif
