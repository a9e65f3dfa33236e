/* jsonrpc — envelope validation, dispatch, and reply assembly.
 *
 * Divisions: exchanges (one per inbound message) and their calls; answers;
 * validation of one request; the entry point.
 *
 * An exchange counts its unanswered calls; the last answer joins the
 * replies (text, in request order), hands them to the transport and frees
 * the exchange. Replies are text because results arrive as JSON text made
 * on the engine's workers. */
#include "protocol/jsonrpc.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

typedef struct exchange exchange;

struct dsq_rpc_call {
    exchange *ex;       /* the message this call belongs to */
    json_t *id;         /* owned; NULL for a notification */
    bool jsonrpc;       /* echo "jsonrpc": "2.0" */
    const char *method; /* borrowed from the request */
    dsq_buf reply;      /* the reply object's text once answered (empty: none) */
    dsq_rpc_outcome how; /* of the answer */
    bool answered;
};

struct exchange {
    json_t *msg;           /* owned; the parsed message (params live in it) */
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

/* ---- exchanges ------------------------------------------------------------ */

static void exchange_finish(exchange *ex)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_rpc_outcome how = DSQ_RPC_OK;
    size_t n = 0;
    if (!ex->batch) { /* the one reply as it is, no copy */
        dsq_rpc_call *c = &ex->calls[0];
        out = c->reply;
        c->reply = (dsq_buf)DSQ_BUF_INIT;
        how = c->how;
        n = out.len > 0;
    }
    for (size_t i = 0; ex->batch && i < ex->ncalls; i++) {
        dsq_rpc_call *c = &ex->calls[i];
        if (c->reply.len == 0)
            continue;
        dsq_buf_append(&out, n == 0 ? "[" : ",", 1);
        dsq_buf_append(&out, c->reply.data, c->reply.len);
        dsq_buf_free(&c->reply); /* one copy of a large batch at a time */
        n++;
    }
    if (ex->batch && n > 0)
        dsq_buf_append(&out, "]", 1);
    if (n == 0)
        ex->reply(ex->ud, NULL, 0, how);
    else
        ex->reply(ex->ud, out.data, out.len, how);
    dsq_buf_free(&out);
    for (size_t i = 0; i < ex->ncalls; i++) {
        json_decref(ex->calls[i].id);
        dsq_buf_free(&ex->calls[i].reply);
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

/* ---- answers ---------------------------------------------------------------- */

/* The reply's opening: {"jsonrpc":"2.0","id":ID, */
static void reply_head(dsq_rpc_call *call)
{
    dsq_buf *b = &call->reply;
    dsq_buf_puts(b, call->jsonrpc ? "{\"jsonrpc\":\"2.0\",\"id\":" : "{\"id\":");
    if (json_is_integer(call->id)) { /* the common case, without jansson's dump */
        dsq_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(call->id));
        return;
    }
    char *id = call->id ? json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    dsq_buf_puts(b, id ? id : "null");
    free(id);
}

void dsq_rpc_result_raw(dsq_rpc_call *call, const char *json, size_t len)
{
    if (call->answered)
        return;
    if (call->id != NULL) {
        dsq_buf_reserve(&call->reply, len + 64);
        reply_head(call);
        dsq_buf_puts(&call->reply, ",\"result\":");
        dsq_buf_append(&call->reply, json, len);
        dsq_buf_puts(&call->reply, "}");
    }
    call->how = DSQ_RPC_OK;
    call_done(call);
}

void dsq_rpc_result(dsq_rpc_call *call, json_t *result)
{
    char *text = result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(result);
    if (text == NULL) {
        dsq_rpc_result_raw(call, "null", 4);
        return;
    }
    dsq_rpc_result_raw(call, text, strlen(text));
    free(text);
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
    /* A notification's error is not answered, unless the request was too
     * broken to tell whether it was one. */
    if (call->id != NULL || call->method == NULL) {
        json_t *err = json_pack("{s:s,s:s}", "code", dsq_code_name(code), "message", msg);
        char *text = json_dumps(err, JSON_COMPACT);
        json_decref(err);
        reply_head(call);
        dsq_buf_puts(&call->reply, ",\"error\":");
        dsq_buf_puts(&call->reply, text ? text : "null");
        dsq_buf_puts(&call->reply, "}");
        free(text);
    }
    call->how = DSQ_RPC_FAILED(code);
    call_done(call);
}

const char *dsq_rpc_method_name(const dsq_rpc_call *call)
{
    return call->method ? call->method : "";
}

json_t *dsq_rpc_call_id(const dsq_rpc_call *call) { return call->id; }

int dsq_rpc_call_in_batch(const dsq_rpc_call *call) { return call->ex->batch; }

void *dsq_rpc_call_ud(const dsq_rpc_call *call) { return call->ex->ud; }

/* ---- validation ----------------------------------------------------------------- */

static void dispatch(const dsq_rpc_server *srv, dsq_rpc_call *call, json_t *req)
{
    if (!json_is_object(req)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "a request must be a JSON object");
        return;
    }
    json_t *id = json_object_get(req, "id");
    if (id != NULL) {
        if (!json_is_string(id) && !json_is_integer(id) && !json_is_real(id)) {
            dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"id\" must be a string or a number");
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
    /* A member we do not know is refused, not ignored (after "id", so
     * the error reply carries it). */
    const char *k;
    json_t *v;
    json_object_foreach(req, k, v) {
        if (strcmp(k, "jsonrpc") != 0 && strcmp(k, "id") != 0 && strcmp(k, "method") != 0 &&
            strcmp(k, "params") != 0) {
            dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST,
                          "unknown field \"%.64s\" in the request (it takes jsonrpc, id, method, params)", k);
            return;
        }
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

/* ---- the entry point ------------------------------------------------------------- */

static void refuse(dsq_rpc_reply_fn reply, void *ud, dsq_code code, const char *why)
{
    json_t *body = json_pack("{s:n,s:{s:s,s:s}}", "id", "error", "code", dsq_code_name(code),
                             "message", why);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    reply(ud, text ? text : "null", text ? strlen(text) : 4, DSQ_RPC_FAILED(code));
    free(text);
}

void dsq_rpc_handle(const dsq_rpc_server *srv, const char *msg, size_t len,
                    dsq_rpc_reply_fn reply, void *ud)
{
    json_error_t jerr;
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &jerr);
    size_t n = 1;
    bool batch = false;
    char why[256];

    if (root == NULL) {
        snprintf(why, sizeof why, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        refuse(reply, ud, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (json_is_array(root)) {
        batch = true;
        n = json_array_size(root);
        if (n == 0 || n > srv->max_batch) {
            if (n == 0)
                snprintf(why, sizeof why, "an empty batch");
            else
                snprintf(why, sizeof why, "a batch of %zu requests is more than the limit of %zu",
                         n, srv->max_batch);
            json_decref(root);
            refuse(reply, ud, DSQ_CODE_INVALID_REQUEST, why);
            return;
        }
    }
    exchange *ex = calloc(1, sizeof *ex + n * sizeof(dsq_rpc_call));
    if (ex == NULL) {
        json_decref(root);
        refuse(reply, ud, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
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
