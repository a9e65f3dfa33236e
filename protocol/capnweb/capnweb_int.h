/* capnweb_int — private to protocol/capnweb/: the session, its two tables
 * and their values, and the calls between the files that make up a
 * Cap'n Web session. Not for other modules: they go through
 * protocol/capnweb.h.
 *
 * The files, one concern each:
 *   table.c    id maps, values, the entries of the export and import
 *              tables (and the count of them all, dsq_cw_stats)
 *   eval.c     the expression language: readiness, evaluation into
 *              DoSQL's JSON, writing values back as expressions
 *   push.c     the queue of pushes: delivered strictly in arrival order,
 *              each once what it references has settled
 *   call.c     calls: engine calls on a database, database(name), calls
 *              on stubs, calls back to the client (queryStream)
 *   sub.c      subscribeCDC: a CDC subscription whose events go to the
 *              client's callback
 *   map.c      .map(): remap instructions run on each element
 *   session.c  messages in and out (push, pull, resolve, reject, release,
 *              abort, stream, pipe), settling exports, the session's life
 *
 * A push becomes an export entry and a task. Tasks are delivered strictly
 * in arrival order: the head waits until everything its expression
 * references has settled (promise pipelining), then its call goes to the
 * engine (or is answered at once), and the next task is looked at. Each
 * settled entry re-runs the queue. Evaluation happens only once a task is
 * ready, so it never runs twice.
 *
 * Trees use DoSQL's JSON: {"$bigint": "..."} and {"$bytes": "..."} for
 * the protocol's bigint and bytes, so the DoSQL methods take them as they
 * are. Our stubs in a tree are {"$stub": id}; the client's are
 * {"$clientStub": id}.
 *
 * Everything runs on the loop thread. */
#ifndef DSQ_CAPNWEB_INT_H
#define DSQ_CAPNWEB_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "common/errors.h"
#include "engine/engine.h"
#include "protocol/capnweb.h"
#include "protocol/dosql.h"

/* What the sessions of one server share (capnweb.h). */
struct dsq_cw_stats {
    uint64_t entries; /* imports plus exports alive in all sessions */
};

/* ---- id maps (table.c) ------------------------------------------------------------- */

typedef struct idmap {
    int64_t *keys;
    void **vals;  /* NULL: an empty slot */
    size_t cap;   /* a power of two, or 0 */
    size_t n;
} idmap;

/* ---- values ------------------------------------------------------------------------ */

enum { V_NONE = 0, V_DATA, V_MAIN, V_DB, V_CLIENT, V_SUB, V_KS };

struct cw_sub;  /* sub.c */
struct cw_job;  /* call.c */
struct cw_map;  /* map.c */

typedef struct cw_val {
    int kind;
    char *text;      /* V_DATA: a Cap'n Web expression (owned), or NULL */
    size_t len;
    json_t *tree;    /* V_DATA: the value as a tree (owned), made on demand */
    char db[129];    /* V_DB: its database; V_KS: its keyspace */
    int64_t client;  /* V_CLIENT: the client's export id */
    struct cw_sub *sub; /* V_SUB: a CDC subscription (the session's, lives as long) */
    uint64_t held;   /* V_DATA from our call: bytes charged to the session's budget */
} cw_val;

/* ---- entries ------------------------------------------------------------------------ */

enum { S_PENDING = 0, S_DONE, S_FAILED };

typedef struct cw_export {
    int64_t id;
    int state;
    cw_val val;       /* S_DONE */
    dsq_code code;    /* S_FAILED */
    char *msg;
    bool pulled;      /* send its resolution */
    bool sent;        /* it was sent */
    bool stream;      /* from a "stream" message: gone once settled */
    bool released;    /* its count reached zero (or, a stream's, it was sent) */
    int64_t released_at; /* then the last push so far: only pushes up to it see it */
    int64_t refs;     /* introductions not yet released */
    int64_t users;    /* queued pushes that refer to it: it stays for them */
} cw_export;

typedef struct cw_import {
    int64_t id;
    int64_t refs;     /* times the client introduced it (export, promise) */
    bool promise;     /* a promise the client will resolve */
    int state;        /* promise or our call: S_PENDING, S_DONE, S_FAILED */
    json_t *value;    /* S_DONE: tree */
    dsq_code code;
    char *msg;
    struct cw_job *job; /* our call to the client's stub: who waits for it */
    bool held;        /* a running call keeps this stub (queryStream's callback) */
    struct cw_sub *sub; /* our call to a CDC subscription's callback: whose */
    int users;        /* promise: pushes not delivered yet that wait for it */
} cw_import;

typedef struct cw_task {
    cw_export *e;     /* the entry its outcome settles */
    json_t *expr;     /* owned */
    int64_t *promises;/* owned: the client's promises it waits for (their import ids) */
    size_t npromises;
    cw_export **uses; /* owned: the entries it refers to, each kept while it waits */
    size_t nuses;
    struct cw_task *next;
} cw_task;

/* ---- the session ---------------------------------------------------------------------- */

struct dsq_cw_session {
    dsq_engine *engine;
    dsq_cw_stats *stats;       /* the server's: counts our entries */
    dsq_cdc_cache *cdc;        /* the server's: what CDC subscriptions share */
    dsq_dosql_session *dosql;  /* owned; unbound: calls name their database */
    dsq_cw_limits lim;
    dsq_cw_transport t;
    char db[129];              /* the main object's database, or "" */
    struct dsq_router *router; /* keyspaces (keyspace(name)), or NULL */
    bool batch;
    bool batch_ended;          /* all of the batch's messages are in */
    bool batch_answered;
    bool closed;               /* the transport is gone */
    bool aborted;
    int refs;                  /* 1 for the transport, 1 per job */
    idmap exports, imports;
    int64_t pushes;            /* client pushes so far (their export ids) */
    int64_t next_neg;          /* our next stub export id (negative) */
    int64_t next_call;         /* our next push to the client (its export id) */
    cw_task *qhead, *qtail;    /* pushes not delivered yet */
    bool pumping;              /* inside dsq__cw_pump() */
    size_t waiting;            /* exports pulled and not settled (batch_check) */
    size_t running;            /* jobs: engine calls in progress */
    cw_export *current;        /* the entry of the task being looked at */
    int64_t seq;               /* its push id (what it may see), or 0 */
    char why[300];             /* the current evaluation error */
    dsq_code why_code;
    struct cw_sub *subs;       /* CDC subscriptions made in it (freed with it) */
    /* The results of its calls as a whole: an HTTP batch's are never
     * given back (the response holds them all); a WebSocket session's are
     * when their entries go (released by the client). */
    dsq_budget budget;
};

/* ---- table.c: values and the two tables ------------------------------------------------- */

void dsq__cw_val_clear(cw_val *v);
/* A stub value (not data) again: the same stub. */
cw_val dsq__cw_val_stub_copy(const cw_val *src);
/* A result the session lets go of: its bytes go back to the budget
 * (WebSocket sessions; a batch's response holds them all). */
void dsq__cw_val_let_go(dsq_cw_session *s, cw_val *v);

/* A new export entry `id` (one reference), or NULL: the session aborted
 * (too many entries, or out of memory). */
cw_export *dsq__cw_export_new(dsq_cw_session *s, int64_t id);
/* Entry `id` as the push being looked at (s->seq), or a message outside
 * any push (0), sees it; NULL when it does not. */
cw_export *dsq__cw_export_get(dsq_cw_session *s, int64_t id);
/* Entry `id` on the table, released or not, whoever looks. */
cw_export *dsq__cw_export_lookup(dsq_cw_session *s, int64_t id);
/* A released entry goes once it has settled and no queued push uses it. */
void dsq__cw_export_done_with(dsq_cw_session *s, cw_export *e);
/* Its count reached zero: it leaves the table (see dsq__cw_export_get). */
void dsq__cw_export_release(dsq_cw_session *s, cw_export *e);
/* A stub we hand to the client gets an export id of our choosing. */
int64_t dsq__cw_export_stub(dsq_cw_session *s, const cw_val *v);

cw_import *dsq__cw_import_get(dsq_cw_session *s, int64_t id);
/* Import `id`, a new zeroed entry if there is none; NULL: the session
 * aborted. */
cw_import *dsq__cw_import_get_or_new(dsq_cw_session *s, int64_t id);
void dsq__cw_import_free(dsq_cw_session *s, cw_import *im);

/* Every entry of both tables freed (the session's end). */
void dsq__cw_tables_free(dsq_cw_session *s);

/* ---- eval.c: expressions -------------------------------------------------------------- */

/* The import table of a map's instructions: captures (negative), the
 * input (0) and earlier results (positive). */
typedef struct mapctx {
    cw_val *caps;
    size_t ncaps;
    const cw_val *input;
    cw_val *results;
    size_t nresults; /* results so far */
} mapctx;

/* The current evaluation error: s->why and s->why_code. Returns -1. */
int dsq__cw_fail(dsq_cw_session *s, dsq_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Is everything `e` references settled? 1 yes, 0 not yet, -1 an error (in
 * s->why). Nothing changes. `mc`: a map's instruction, else NULL; `top`:
 * the push's (or instruction's) expression itself. */
int dsq__cw_ready(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool top);
/* Evaluate `e` (ready) into a tree. New reference; NULL with *undef set
 * for undefined, or NULL with s->why set. */
json_t *dsq__cw_eval(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool *undef);
/* A reference to an entry: the tree of its value at `path`, or a stub
 * marker. New reference, or NULL with s->why set. */
json_t *dsq__cw_eval_ref(dsq_cw_session *s, cw_val *v, json_t *path);
/* The value of a V_DATA as a tree, made from its text when first asked. */
json_t *dsq__cw_val_tree(dsq_cw_session *s, cw_val *v);
/* Import a stub or promise the client introduces: one more reference. */
cw_import *dsq__cw_introduce(dsq_cw_session *s, int64_t id, bool promise);
/* A tree back to a Cap'n Web expression. */
void dsq__cw_put_tree(dsq_buf *b, json_t *t);
/* The expression that resolves to `v` (a stub gets an export id). */
void dsq__cw_put_val(dsq_cw_session *s, dsq_buf *b, cw_val *v);

static inline bool is_tag(json_t *e, const char *tag)
{
    json_t *t = json_array_get(e, 0);
    return json_is_string(t) && strcmp(json_string_value(t), tag) == 0;
}

/* An id in a message: an integer within ±2^53. */
static inline bool get_id(json_t *j, int64_t *out)
{
    if (!json_is_integer(j))
        return false;
    json_int_t v = json_integer_value(j);
    if (v > 9007199254740991ll || v < -9007199254740991ll)
        return false;
    *out = v;
    return true;
}

/* ---- push.c: the queue of pushes --------------------------------------------------------- */

/* A push (or, `stream`, a stream message) of expression `expr`: a new
 * export entry, its task queued. `stubs`: its text may introduce stubs or
 * promises. */
void dsq__cw_push(dsq_cw_session *s, json_t *expr, bool stream, bool stubs);
/* Deliver tasks in order while the head is ready. */
void dsq__cw_pump(dsq_cw_session *s);
/* A client's promise that no waiting push needs any more, once settled,
 * is released back to the client and forgotten. */
void dsq__cw_promise_done_with(dsq_cw_session *s, cw_import *im);
/* The tasks not delivered go (the session closes). */
void dsq__cw_queue_free(dsq_cw_session *s);

/* ---- call.c: calls ---------------------------------------------------------------------- */

/* Call `path` on target `v` (a stub) with `args` (evaluated), for export
 * `e` or element `elem` of map `m`; then let go of the client's stubs in
 * them that the call does not keep. */
void dsq__cw_call_on(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                     json_t *path, json_t *args);
/* Call the client's function `cb` with one argument (Cap'n Web text) and
 * pull its answer: the import entry that will hold the answer, or NULL. */
cw_import *dsq__cw_call_client(dsq_cw_session *s, int64_t cb, const char *text, size_t len);
/* The client settled our call `im` (a callback's answer). */
void dsq__cw_call_settled(dsq_cw_session *s, cw_import *im);
/* Release our reference to the client's stub `im`, and forget it. */
void dsq__cw_release_import(dsq_cw_session *s, cw_import *im);
/* Streams paused on a callback end now (the session closes). */
void dsq__cw_streams_end(dsq_cw_session *s);

/* ---- sub.c: CDC subscriptions ---------------------------------------------------------- */

/* subscribeCDC(request, callback) on database `db`, for export `e`. */
void dsq__cw_subscribe(dsq_cw_session *s, cw_export *e, const char *db, json_t *args, bool ks);
/* unsubscribe() on subscription `u`: it stops; *r is the result (data). */
void dsq__cw_unsubscribe(struct cw_sub *u, cw_val *r);
/* A call of the subscription's callback was answered (`ok`: not thrown). */
void dsq__cw_sub_answered(dsq_cw_session *s, struct cw_sub *u, bool ok);
/* Every subscription of the session stops (the session closes). */
void dsq__cw_subs_stop(dsq_cw_session *s);
/* Their memory goes (the session is freed). */
void dsq__cw_subs_free(dsq_cw_session *s);

/* ---- map.c: .map() ------------------------------------------------------------------------ */

/* remap: apply the instructions to each element of the target (ready). */
void dsq__cw_map_start(dsq_cw_session *s, cw_export *e, json_t *expr);
/* Step `elem` of map `m` is done: *v its value (taken), or v NULL, failed
 * with `code` and `msg`. */
void dsq__cw_map_step_done(struct cw_map *m, size_t elem, cw_val *v, dsq_code code, const char *msg);

/* ---- session.c: messages out, settling, the session's life ------------------------------- */

/* Send one message (nothing once closed or aborted). */
void dsq__cw_send(dsq_cw_session *s, const dsq_buf *b);
/* Abort the session: ["abort", error] and the transport ends. */
void dsq__cw_abort(dsq_cw_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Export `e` settles with *v (taken), or fails; its resolution is sent
 * if pulled, and the queue runs. */
void dsq__cw_settle_done(dsq_cw_session *s, cw_export *e, cw_val *v);
void dsq__cw_settle_failed(dsq_cw_session *s, cw_export *e, dsq_code code, const char *msg);
/* One reference fewer (see refs); the last frees the session. */
void dsq__cw_unref(dsq_cw_session *s);

#endif
