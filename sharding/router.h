/* router — keyspaces served: the VSchema in force, each keyspace's schema
 * at the router, and statements run through their plans (plan.h) on the
 * shards' databases (engine.h calls) with the router's part merged off
 * the loop (merge.h).
 *
 * The VSchema in force has a version. It comes from the state file (the
 * last one applied, kept across restarts), else from the configured
 * file, else there is none (no keyspace). dsq_router_apply checks a new
 * one whole, writes it to the state file (a new file renamed over the
 * old, synced) and puts it in force with the next version; statements
 * already planned finish on the one they started with.
 *
 * A keyspace's schema at the router is read from its first shard (the
 * engine's SCHEMA call) when first needed, read again after a schema
 * change made through the keyspace, and once more when a statement names
 * a table or column it lacks (a change made on the shards directly).
 *
 * Loop thread only, but the merges (the `offload` hook's work). */
#ifndef DSQ_SHARDING_ROUTER_H
#define DSQ_SHARDING_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "sharding/plan.h"

typedef struct dsq_router dsq_router;

/* Run work(arg) on another thread, then after(arg) on the loop thread. */
typedef void (*dsq_router_offload_fn)(void *ud, void (*work)(void *arg), void (*after)(void *arg), void *arg);

typedef struct dsq_router_cfg {
    dsq_engine *engine;
    /* Where the shards' calls go when set (a cluster: to the node holding
     * a shard's primary), as dsq_engine_submit answers; else `engine`. */
    int (*submit)(void *ud, const char *db, dsq_call *c);
    /* Whether database db's primary is this node's (1), or another's (0,
     * its id in node[n]); NULL: every database is here. A keyspace is
     * served where its coordinator database's primary is (its home):
     * elsewhere its statements are refused (NOT_PRIMARY) and its
     * recovery does not run. */
    int (*where)(void *ud, const char *db, char *node, size_t n);
    /* A VSchema was applied here (applyVSchema): to share with the other
     * nodes. May be NULL. */
    void (*on_applied)(void *ud, uint64_t version, const char *text);
    void *submit_ud;
    const char *state_path;       /* the applied VSchema's file (NULL: not kept) */
    const char *vschema_path;     /* [sharding] vschema (NULL: none) */
    dsq_router_offload_fn offload;/* NULL: merges run on the caller's thread */
    void *offload_ud;
    uint64_t timeout_ms;          /* the router's part of a statement, at most */
    size_t max_result_bytes;      /* an answer's rows, at most */
    uint64_t txn_timeout_ms;      /* an interactive transaction idle this long is rolled back */
    uint64_t max_txn_timeout_ms;  /* the longest timeout a transaction may ask for (0: no cap) */
} dsq_router_cfg;

/* The router with its VSchema loaded: NULL with the reason when the state
 * file or the configured file cannot be read or is not a valid VSchema. */
dsq_router *dsq_router_new(const dsq_router_cfg *cfg, char *err, size_t errlen);
/* After every statement finished (the loop has stopped). */
void dsq_router_free(dsq_router *r);

/* Put the VSchema json[0..len) in force: 0 and its version, or -1 with
 * the reason (invalid: nothing changed; not written: nothing changed). */
int dsq_router_apply(dsq_router *r, const char *json, size_t len, uint64_t *version, char *err, size_t errlen);
/* The VSchema in force as JSON text (malloc'd) and its version; NULL and
 * version 0 when there is none. */
/* A VSchema another node applied, as version `version`: applied here when
 * that is newer than this node's (or the same version with a greater
 * text: two nodes that applied different ones at once end with the same).
 * 1 applied, 0 older (ignored), -1 invalid (err says why). */
int dsq_router_apply_shared(dsq_router *r, const char *json, size_t len, uint64_t version, const char *from,
                            char *err, size_t errlen);
char *dsq_router_get(dsq_router *r, uint64_t *version);
/* The name of keyspace ks's first shard (for its schema); false when
 * there is no such keyspace. */
bool dsq_router_first_shard(dsq_router *r, const char *ks, char *out, size_t n);
bool dsq_router_has_keyspace(dsq_router *r, const char *ks);
/* Keyspace ks's shards' names, in order: a malloc'd array of n names
 * (each DSQ_VS_NAME_MAX bytes; one free() releases it), or NULL (no such
 * keyspace, or out of memory). */
char (*dsq_router_shards(dsq_router *r, const char *ks, size_t *n))[129];

/* The outcome of a statement: err 0 and res (the router's until the
 * function returns: it may take its parts), or err -1 with code and msg.
 * `plan` names how it was answered ("one", "scatter", ...). */
typedef void (*dsq_router_done_fn)(void *ud, int err, dsq_code code, const char *msg, dsq_result *res,
                                   const char *plan);

/* Run one statement `req` (borrowed until done) on keyspace ks with the
 * caller's scopes (DSQ_SCOPE_R, _W) and result budget (may be NULL). */
void dsq_router_query(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope, dsq_budget *budget,
                      dsq_router_done_fn done, void *ud);
/* The same for a statement that must only read (queryStream): one that
 * writes is refused (INVALID_REQUEST) before it runs. */
void dsq_router_query_read(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope,
                           dsq_budget *budget, dsq_router_done_fn done, void *ud);

/* A batch's outcome: err 0 and one result per statement (the router's
 * until the function returns), or err -1 with code and msg. */
typedef void (*dsq_router_batch_fn)(void *ud, int err, dsq_code code, const char *msg, dsq_result *results,
                                    size_t n);

/* Run statements reqs[0..n) (borrowed until done) on keyspace ks as one
 * request. Atomic: all statements on one shard go there as one batch;
 * else each must go to one shard or be a write, and they run in one
 * cross-shard transaction (all or nothing; reads among them see the
 * writes before them on their shard). Not atomic: one after the other,
 * each on its own; a statement's failure is its result's (`error`, `code`). */
void dsq_router_batch(dsq_router *r, const char *ks, const dsq_stmt_req *reqs, size_t n, bool atomic, unsigned scope,
                      dsq_budget *budget, dsq_router_batch_fn done, void *ud);

/* ---- interactive transactions on a keyspace (beginTransaction) ---- */

/* A new transaction on ks (its id into id, 33 bytes), for `session` (0:
 * none: it outlives its connection, as over HTTP), rolled back after
 * timeout_ms idle (0: the configured default; at most the cap). id "" with the code and
 * message when it cannot be. Its statements take shards as they reach
 * them. */
void dsq_router_begin(dsq_router *r, const char *ks, unsigned scope, uint64_t session, uint64_t timeout_ms,
                      char id[33], dsq_code *code, char *msg, size_t msglen);
/* One statement in transaction `id` (one at a time): it goes to one shard
 * or is a write; its pieces run in the transaction. */
void dsq_router_query_txn(dsq_router *r, const char *ks, const char *id, const dsq_stmt_req *req, unsigned scope,
                          dsq_budget *budget, dsq_router_done_fn done, void *ud);
/* A batch in transaction `id`: its statements one after another, as
 * dsq_router_query_txn runs them. Atomic: the first that fails answers
 * the batch, and when statements ran before it the transaction can then
 * only roll back. Not atomic: a failed statement's result holds its
 * error, and the others run. */
void dsq_router_batch_txn(dsq_router *r, const char *ks, const char *id, const dsq_stmt_req *reqs, size_t n,
                          bool atomic, unsigned scope, dsq_budget *budget, dsq_router_batch_fn done, void *ud);
typedef void (*dsq_router_end_fn)(void *ud, int err, dsq_code code, const char *msg);
/* Commit (two-phase over its shards) or roll back transaction `id`;
 * done may be NULL. */
void dsq_router_txn_end(dsq_router *r, const char *ks, const char *id, bool commit, dsq_router_end_fn done,
                        void *ud);
/* A connection went: its transactions roll back. */
void dsq_router_session_closed(dsq_router *r, uint64_t session);

/* The name of keyspace ks's coordinator database (its cross-shard
 * transactions' decisions; its primary's node serves the keyspace). */
void dsq_router_coordinator(const char *ks, char *out, size_t n);

/* A call on database db (a keyspace's shard), wherever its primary is
 * (cfg.submit): 0, or -1 with the call failed (done not called). */
int dsq_router_submit(dsq_router *r, const char *db, dsq_call *c);
/* Whether every shard of keyspace ks has its primary on this node:
 * true, or false with the first that is not and its node in msg. */
bool dsq_router_shards_here(dsq_router *r, const char *ks, char *msg, size_t n);

/* Statements answered by each plan kind (dsq_plan_kind, DSQ_PLAN_KINDS
 * of them), for metrics. */
void dsq_router_counts(const dsq_router *r, uint64_t out[DSQ_PLAN_KINDS]);

/* Cross-shard transactions: every few seconds (and at once after a
 * start), those a crash left undecided or half done are resolved — a
 * decided commit is finished on every shard, anything else rolled back
 * — and records left on shards without a transaction are removed.
 * Called from the loop's timer. */
void dsq_router_tick(dsq_router *r);
/* Cross-shard transactions resolved by recovery since start. */
uint64_t dsq_router_recovered(const dsq_router *r);
/* Rows the shards sent to the router to merge or evaluate (scatter and
 * fetch plans), since start. */
uint64_t dsq_router_shard_rows(const dsq_router *r);

#endif
