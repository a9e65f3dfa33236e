/* dosql — the DoSQL API (DESIGN 3.3) over JSON-RPC, on the engine.
 *
 * A session is one client's view: a WebSocket connection, or one HTTP
 * request. It is bound to a database (routes /v1/db/{db}/...) or not
 * (/v1/rpc, where methods take "database"). The transport that owns it
 * supplies the functions below; the session turns each request into an
 * engine call, and each call's outcome (encoded to JSON text on the
 * engine's worker) into the JSON-RPC reply.
 *
 * Methods: query, queryStream, beginTransaction, commit, rollback, batch,
 * getSchema, ping, getStats, subscribeCDC, unsubscribeCDC; each takes one
 * request object, whose members are checked against the method's (an
 * unknown one is INVALID_REQUEST naming it). queryStream sends its rows as notifications
 * ("stream.chunk", then "stream.complete") before its reply; a transport
 * over HTTP sends them as NDJSON lines of the one response, so there it
 * must be a lone request, not part of a batch.
 *
 * Everything here runs on the loop thread, except encoders (workers). */
#ifndef DSQ_DOSQL_H
#define DSQ_DOSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "protocol/jsonrpc.h"

typedef struct dsq_dosql_limits {
    size_t max_params;      /* values in one statement's params */
    size_t max_batch;       /* JSON-RPC requests in a message; statements in a batch */
    size_t chunk_rows;      /* queryStream's default chunkSize */
    size_t max_chunk_rows;  /* the largest chunkSize accepted */
} dsq_dosql_limits;

typedef struct dsq_dosql_transport {
    /* The scopes (DSQ_SCOPE_R, DSQ_SCOPE_W) the client holds on `db`; 0
     * means none (the call is FORBIDDEN). */
    unsigned (*scope)(void *ud, const char *db);
    /* The reply to one message (see dsq_rpc_reply_fn), or to the query
     * route: a QueryResult (200) or an error body. */
    dsq_rpc_reply_fn reply;
    /* Send a notification. NULL: the transport has none (queryStream is
     * refused). Returns 0, or -1 when it cannot. */
    int (*notify)(void *ud, const char *text, size_t len);
    /* Is there room for another notification now? When it says no, the
     * transport calls dsq_dosql_writable() once there is. NULL: always. */
    bool (*can_send)(void *ud);
    bool http;              /* notifications are lines of one HTTP response */
    void *ud;
    /* May be NULL. A notification sent alike to many sessions (a shared
     * CDC batch): what the transport makes of it for one (its compressed
     * form) it keeps in *alt for the others. */
    int (*notify_alt)(void *ud, const char *text, size_t len, dsq_alt *alt);
} dsq_dosql_transport;

typedef struct dsq_dosql_session dsq_dosql_session;
typedef struct dsq_cdc_cache dsq_cdc_cache; /* protocol/cdcsub.h */

/* A session on `db` (NULL: unbound). `session_id` ties transactions and
 * streams to it (0: they outlive it, as over HTTP). Its CDC
 * subscriptions share `cdc` (the server's, outliving the session). */
dsq_dosql_session *dsq_dosql_session_new(dsq_engine *e, dsq_cdc_cache *cdc, const dsq_dosql_limits *lim,
                                          const char *db, uint64_t session_id,
                                          const dsq_dosql_transport *t);

struct dsq_router;
/* Serve keyspace `ks` (a /v1/ks/{ks}/... route) through router r; with ks
 * NULL, r only answers /v1/rpc's applyVSchema and getVSchema. On a
 * keyspace: query, getSchema (its first shard's) and ping. */
void dsq_dosql_set_router(dsq_dosql_session *s, struct dsq_router *r, const char *ks);
/* A keyspace's CDC stream to a sink of the caller's (Cap'n Web's
 * subscribeCDC on a keyspace stub): started() once every shard's part
 * answered (err: the first refusal; the handle is then not the caller's
 * any more); then event() with each event object (Cap'n Web's encoding:
 * "shard", the event's members, and "position" at the end of each of a
 * shard's commits), each time can_send() says there is room (else the
 * caller calls dsq_dosql_ks_writable once there is); ended() with an
 * object {"end": true, "shard", "position", "error"} when a part ended
 * by itself (the handle is then not the caller's any more). */
typedef struct dsq_dosql_kcdc_sink {
    void (*started)(void *ud, int err, dsq_code code, const char *msg);
    int (*event)(void *ud, const char *text, size_t len);
    bool (*can_send)(void *ud);
    void (*ended)(void *ud, const char *text, size_t len);
    void *ud;
} dsq_dosql_kcdc_sink;
struct kcsub;
/* Subscribe (request `req`: fromPosition?, tables?, operations?): the
 * handle, or NULL with the refusal (no sink call). The sink is borrowed
 * until the subscription ends. */
struct kcsub *dsq_dosql_ks_subscribe(dsq_dosql_session *s, const char *ks, json_t *req,
                                     const dsq_dosql_kcdc_sink *sink, dsq_code *code, char *msg, size_t msglen);
void dsq_dosql_ks_writable(struct kcsub *k);
/* Stop it (no sink call after this); its position into `position`
 * (Cap'n Web's encoding) when not NULL. */
void dsq_dosql_ks_unsubscribe(struct kcsub *k, dsq_buf *position);

/* Where a keyspace's CDC reaches a shard served by another node (NULL:
 * nowhere; such a subscription is refused). Borrowed: outlives s. */
struct dsq_cdc_remote;
void dsq_dosql_set_cdc_remote(dsq_dosql_session *s, const struct dsq_cdc_remote *rem);

/* One JSON-RPC message (a request or a batch). */
void dsq_dosql_handle(dsq_dosql_session *s, const char *msg, size_t len);

/* The body of POST /v1/db/{db}/query: a QueryRequest. Answers through
 * t->reply with a QueryResult, or an error body and its status. */
void dsq_dosql_query_route(dsq_dosql_session *s, const char *body, size_t len);

/* ---- calls from other protocols (Cap'n Web) ---- */

typedef enum dsq_dosql_enc {
    DSQ_ENC_JSON = 0,   /* DESIGN 3.3's JSON ({"$bigint"}, {"$bytes"}) */
    DSQ_ENC_CAPNWEB,    /* Cap'n Web expressions (["bigint"], ["bytes"], [[...]]) */
} dsq_dosql_enc;

typedef struct dsq_dosql_op dsq_dosql_op;

/* A call's outcome: err 0 and the result as text in the call's encoding,
 * or err -1 with the code and the message. Always called exactly once,
 * also after the session closed. When `owner` is not NULL it is the buffer
 * holding `text`, and the function may take its memory (dsq_buf_steal).
 * `held`: the bytes of rows the result charged to the session's budget
 * (dsq_dosql_set_budget), to give back with dsq_budget_release once the
 * caller lets the result go; 0 without a budget or on error. */
typedef void (*dsq_dosql_done_fn)(void *ud, int err, dsq_code code, const char *text, size_t len,
                                  dsq_buf *owner, uint64_t held);

/* queryStream's chunks ({"seq", "columns"?, "columnTypes"?, "rows"} in the
 * call's encoding): return 0 for the next chunk now, 1 to wait until
 * dsq_dosql_stream_resume(), -1 to cancel the stream. */
typedef int (*dsq_dosql_chunk_fn)(void *ud, dsq_dosql_op *op, const char *text, size_t len);

/* Run `method` with `params` (an object in DESIGN 3.3's JSON; a reference
 * is kept until done) on database `db` (a valid name, borrowed until done;
 * NULL: the session's, or params' "database"). `chunk` is for
 * queryStream, else NULL. */
void dsq_dosql_call(dsq_dosql_session *s, const char *db, const char *method, json_t *params,
                    dsq_dosql_enc enc, dsq_dosql_done_fn done, dsq_dosql_chunk_fn chunk, void *ud);
bool dsq_dosql_has_method(const char *name);
/* The same on keyspace `ks` (borrowed until done; the session has a
 * router, dsq_dosql_set_router): query, queryStream (`chunk`), the
 * transaction methods, batch, getSchema, ping. */
void dsq_dosql_call_ks(dsq_dosql_session *s, const char *ks, const char *method, json_t *params,
                       dsq_dosql_enc enc, dsq_dosql_done_fn done, dsq_dosql_chunk_fn chunk, void *ud);
/* Every later dsq_dosql_call of the session charges its results to `b`
 * (borrowed; it must outlive the session's calls). A JSON-RPC message
 * (dsq_dosql_handle) always has a budget of its own. */
void dsq_dosql_set_budget(dsq_dosql_session *s, dsq_budget *b);
/* Does request `req` (an object, or NULL) hold only members `method`
 * takes? 0, or -1 with the message in `why` (the first other member
 * named): unknown fields are INVALID_REQUEST, never ignored. */
int dsq_dosql_check_fields(const char *method, json_t *req, char *why, size_t n);
/* After a chunk function returned 1: the next chunk, or the end. */
void dsq_dosql_stream_resume(dsq_dosql_op *op, bool cancel);

/* The transport has room again: resume streams that waited for it. */
void dsq_dosql_writable(dsq_dosql_session *s);

/* The transport is gone: no more replies or notifications; its
 * transactions roll back and its streams end. The session is freed when
 * its last call finishes. */
void dsq_dosql_session_close(dsq_dosql_session *s);

#endif
