/* jsonrpc — JSON-RPC envelopes: one request or a batch in, one reply out.
 *
 * A request is {"id", "method", "params"} ("jsonrpc": "2.0" accepted and
 * echoed); a reply is {"id", "result"} or {"id", "error": {"code",
 * "message"}} with DESIGN's string codes; a request without "id" is a
 * notification and gets no reply. Methods come from a table the caller
 * passes; each is handed a call and answers it with dsq_rpc_result() or
 * dsq_rpc_error(), now or later. When every call of a message has answered,
 * the reply function gets the whole reply. */
#ifndef DSQ_JSONRPC_H
#define DSQ_JSONRPC_H

#include <jansson.h>
#include <stddef.h>

#include "common/errors.h"

typedef struct dsq_rpc_call dsq_rpc_call;

/* A method: `params` is borrowed (NULL when absent); answer `call` exactly
 * once, from any point on the same thread. */
typedef void (*dsq_rpc_method_fn)(dsq_rpc_call *call, json_t *params, void *ctx);

typedef struct dsq_rpc_method {
    const char *name;
    dsq_rpc_method_fn fn;
} dsq_rpc_method;

/* Receives the complete reply to one message: an object, an array for a
 * batch, or NULL when the message held only notifications. `http_status`
 * is what an HTTP transport should answer with: 200, 204 for no reply, or
 * the error's status for a single failed request. `reply` is borrowed. */
typedef void (*dsq_rpc_reply_fn)(void *ud, json_t *reply, int http_status);

typedef struct dsq_rpc_server {
    const dsq_rpc_method *methods; /* terminated by a NULL name */
    void *ctx;                     /* passed to every method */
    size_t max_batch;              /* requests allowed in one batch */
} dsq_rpc_server;

/* Handle one message (a JSON text). The reply function may run before this
 * returns (synchronous methods) or later. */
void dsq_rpc_handle(const dsq_rpc_server *srv, const char *msg, size_t len,
                    dsq_rpc_reply_fn reply, void *ud);

/* Answer a call with a result (stolen reference). */
void dsq_rpc_result(dsq_rpc_call *call, json_t *result);

/* Answer a call with an error. */
void dsq_rpc_error(dsq_rpc_call *call, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The method name of a call. */
const char *dsq_rpc_method_name(const dsq_rpc_call *call);

/* {"error": {"code": ..., "message": ...}} — the error body every HTTP
 * route uses. New reference. */
json_t *dsq_rpc_error_body(dsq_code code, const char *message);

#endif
