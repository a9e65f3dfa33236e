/* jsonrpc — JSON-RPC envelopes: one request or a batch in, one reply out.
 *
 * A request is {"id", "method", "params"} ("jsonrpc": "2.0" accepted and
 * echoed); a reply is {"id", "result"} or {"id", "error": {"code",
 * "message"}} with DESIGN's string codes; a request without "id" is a
 * notification and gets no reply. `id` must be a string or a number; any
 * other member is refused (INVALID_REQUEST naming it).
 * Methods come from a table the caller passes; each is handed a call and
 * answers it with dsq_rpc_result*() or dsq_rpc_error(), now or later. When
 * every call of a message has answered, the reply function gets the whole
 * reply as JSON text. */
#ifndef DSQ_JSONRPC_H
#define DSQ_JSONRPC_H

#include <jansson.h>
#include <stddef.h>

#include "common/errors.h"

typedef struct dsq_rpc_call dsq_rpc_call;

/* A method: `params` is borrowed (NULL when absent) and lives until the
 * call is answered; answer `call` exactly once, on the same thread. */
typedef void (*dsq_rpc_method_fn)(dsq_rpc_call *call, json_t *params, void *ctx);

typedef struct dsq_rpc_method {
    const char *name;
    dsq_rpc_method_fn fn;
} dsq_rpc_method;

/* How a message went, for a transport that answers with a status of its
 * own (HTTP maps it to one; WebSocket has none): `failed` when the message
 * was one request and it failed, with its code. A batch whose requests
 * failed did not fail: each reply in it says how its request went. */
typedef struct dsq_rpc_outcome {
    bool failed;
    dsq_code code; /* when failed */
} dsq_rpc_outcome;

#define DSQ_RPC_OK ((dsq_rpc_outcome){.failed = false})
#define DSQ_RPC_FAILED(c) ((dsq_rpc_outcome){.failed = true, .code = (c)})

/* Receives the complete reply to one message: JSON text (an object, or an
 * array for a batch), or NULL when the message held only notifications. */
typedef void (*dsq_rpc_reply_fn)(void *ud, const char *text, size_t len, dsq_rpc_outcome how);

typedef struct dsq_rpc_server {
    const dsq_rpc_method *methods; /* terminated by a NULL name */
    void *ctx;                     /* passed to every method */
    size_t max_batch;              /* requests allowed in one batch */
} dsq_rpc_server;

/* Handle one message (a JSON text). The reply function may run before this
 * returns (synchronous methods) or later. */
void dsq_rpc_handle(const dsq_rpc_server *srv, const char *msg, size_t len,
                    dsq_rpc_reply_fn reply, void *ud);

/* Answer with a result (stolen reference). */
void dsq_rpc_result(dsq_rpc_call *call, json_t *result);

/* Answer with a result given as JSON text (copied). */
void dsq_rpc_result_raw(dsq_rpc_call *call, const char *json, size_t len);

/* Answer with an error. */
void dsq_rpc_error(dsq_rpc_call *call, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *dsq_rpc_method_name(const dsq_rpc_call *call);

/* The call's id (borrowed; NULL for a notification). */
json_t *dsq_rpc_call_id(const dsq_rpc_call *call);

/* The `ud` its message was handled with (dsq_rpc_handle): what the
 * calls of one message share. */
void *dsq_rpc_call_ud(const dsq_rpc_call *call);

/* Is the call part of a batch? */
int dsq_rpc_call_in_batch(const dsq_rpc_call *call);

/* {"error": {"code": ..., "message": ...}}, the error body of HTTP routes.
 * New reference. */
json_t *dsq_rpc_error_body(dsq_code code, const char *message);

#endif
