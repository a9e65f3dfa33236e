/* jsonrpc — envelope validation, dispatch, and reply assembly.
 *
 * Divisions: exchanges (one per inbound message) and their calls;
 * validation of one request; the entry point.
 *
 * An exchange counts its unanswered calls; the last answer builds the
 * reply, hands it to the transport and frees the exchange. */
#include "protocol/jsonrpc.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct exchange exchange;

struct dsq_rpc_call {
    exchange *ex;       /* the message this call belongs to */
    json_t *id;         /* owned; NULL for a notification */
    bool jsonrpc;       /* echo "jsonrpc": "2.0" */
    const char *method; /* borrowed from the request */
    json_t *reply;      /* owned; the reply object once answered */
    int status;         /* HTTP status of the answer */
    bool answered;
};

struct exchange {
    json_t *msg;           /* owned; the parsed message */
    bool batch;            /* the message was an array */
    size_t ncalls;
    size_t pending;        /* calls not answered yet */
    bool dispatching;      /* still inside dsq_rpc_handle's loop */
    dsq_rpc_reply_fn reply;
    void *ud;
    dsq_rpc_call calls[];  /* ncalls of them */
};

json_t *dsq_rpc_error_body(dsq_code code, const char *message)
{
    return json_pack("{s:{s:s,s:s}}", "error", "code", dsq_code_name(code), "message",
                     message);
}

static json_t *reply_base(const dsq_rpc_call *call)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (call->jsonrpc)
        json_object_set_new(o, "jsonrpc", json_string("2.0"));
    json_object_set(o, "id", call->id ? call->id : json_null());
    return o;
}

/* Build and deliver the reply once every call has answered. */
static void exchange_finish(exchange *ex)
{
    json_t *out = NULL;
    int status = 200;
    if (ex->batch) {
        out = json_array();
        for (size_t i = 0; i < ex->ncalls; i++)
            if (ex->calls[i].reply)
                json_array_append(out, ex->calls[i].reply);
        if (json_array_size(out) == 0) {
            json_decref(out);
            out = NULL;
        }
    } else if (ex->ncalls == 1 && ex->calls[0].reply) {
        out = json_incref(ex->calls[0].reply);
        status = ex->calls[0].status;
    }
    ex->reply(ex->ud, out, out ? status : 204);
    json_decref(out);
    for (size_t i = 0; i < ex->ncalls; i++) {
        json_decref(ex->calls[i].id);
        json_decref(ex->calls[i].reply);
    }
    json_decref(ex->msg);
    free(ex);
}

static void call_done(dsq_rpc_call *call)
{
    exchange *ex = call->ex;
    call->answered = true;
    if (--ex->pending == 0 && !ex->dispatching)
        exchange_finish(ex);
}

void dsq_rpc_result(dsq_rpc_call *call, json_t *result)
{
    if (call->answered) {
        json_decref(result);
        return;
    }
    if (call->id != NULL) {
        call->reply = reply_base(call);
        json_object_set_new(call->reply, "result", result ? result : json_null());
    } else {
        json_decref(result);
    }
    call->status = 200;
    call_done(call);
}

void dsq_rpc_error(dsq_rpc_call *call, dsq_code code, const char *fmt, ...)
{
    if (call->answered)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (call->id != NULL || call->ex->batch || call->method == NULL) {
        /* Invalid requests are answered even without an id (as null). */
        call->reply = reply_base(call);
        json_object_set_new(call->reply, "error",
                            json_pack("{s:s,s:s}", "code", dsq_code_name(code), "message", msg));
    }
    call->status = dsq_code_http_status(code);
    call_done(call);
}

const char *dsq_rpc_method_name(const dsq_rpc_call *call)
{
    return call->method ? call->method : "";
}

/* Check one request and run its method (or answer its error). */
static void dispatch(const dsq_rpc_server *srv, dsq_rpc_call *call, json_t *req)
{
    if (!json_is_object(req)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "a request must be a JSON object");
        return;
    }
    json_t *id = json_object_get(req, "id");
    if (id != NULL) {
        if (!json_is_string(id) && !json_is_integer(id) && !json_is_real(id) && !json_is_null(id)) {
            dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"id\" must be a string, a number or null");
            return;
        }
        call->id = json_incref(id);
    }
    json_t *ver = json_object_get(req, "jsonrpc");
    if (ver != NULL) {
        if (!json_is_string(ver) || strcmp(json_string_value(ver), "2.0") != 0) {
            dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
            return;
        }
        call->jsonrpc = true;
    }
    json_t *method = json_object_get(req, "method");
    if (!json_is_string(method)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"method\" must be a string");
        return;
    }
    call->method = json_string_value(method);
    json_t *params = json_object_get(req, "params");
    if (params != NULL && !json_is_object(params) && !json_is_array(params) && !json_is_null(params)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"params\" must be an object");
        return;
    }
    if (json_is_null(params))
        params = NULL;
    for (const dsq_rpc_method *m = srv->methods; m && m->name; m++) {
        if (strcmp(m->name, call->method) == 0) {
            m->fn(call, params, srv->ctx);
            return;
        }
    }
    dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "unknown method '%.100s'", call->method);
}

void dsq_rpc_handle(const dsq_rpc_server *srv, const char *msg, size_t len,
                    dsq_rpc_reply_fn reply, void *ud)
{
    json_error_t jerr;
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &jerr);
    size_t n = 1;
    bool batch = false;
    const char *refuse = NULL;
    char why[256];

    if (root == NULL) {
        snprintf(why, sizeof why, "invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        refuse = why;
    } else if (json_is_array(root)) {
        batch = true;
        n = json_array_size(root);
        if (n == 0) {
            refuse = "an empty batch";
        } else if (n > srv->max_batch) {
            snprintf(why, sizeof why, "a batch of %zu requests is more than the limit of %zu",
                     n, srv->max_batch);
            refuse = why;
        }
    }
    if (refuse != NULL) {
        json_t *body = json_pack("{s:n,s:{s:s,s:s}}", "id", "error", "code",
                                 dsq_code_name(DSQ_CODE_INVALID_REQUEST), "message", refuse);
        reply(ud, body, dsq_code_http_status(DSQ_CODE_INVALID_REQUEST));
        json_decref(body);
        json_decref(root);
        return;
    }

    exchange *ex = calloc(1, sizeof *ex + n * sizeof(dsq_rpc_call));
    if (ex == NULL) {
        json_t *body = json_pack("{s:n,s:{s:s,s:s}}", "id", "error", "code",
                                 dsq_code_name(DSQ_CODE_RESOURCE_EXHAUSTED), "message",
                                 "out of memory");
        reply(ud, body, dsq_code_http_status(DSQ_CODE_RESOURCE_EXHAUSTED));
        json_decref(body);
        json_decref(root);
        return;
    }
    ex->msg = root;
    ex->batch = batch;
    ex->ncalls = n;
    ex->pending = n;
    ex->reply = reply;
    ex->ud = ud;
    ex->dispatching = true;
    for (size_t i = 0; i < n; i++) {
        ex->calls[i].ex = ex;
        dispatch(srv, &ex->calls[i], batch ? json_array_get(root, i) : root);
    }
    ex->dispatching = false;
    if (ex->pending == 0)
        exchange_finish(ex);
}
