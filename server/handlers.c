/* handlers — what each route of DESIGN 3.2 does.
 *
 * Divisions: health and metrics; JSON-RPC not bound to a database (HTTP and
 * WebSocket); routes whose work arrives in later versions (501).
 *
 * Requests arrive here routed and authorized (conn.c did both at the end of
 * the head). */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "protocol/jsonrpc.h"
#include "server/server_int.h"

/* ---- health and metrics ------------------------------------------------- */

static void handle_healthz(dsq_server *srv, dsq_http_req *req)
{
    if (srv->draining)
        dsq__respond(req, 503, "text/plain; charset=utf-8", "draining\n", 9, NULL);
    else
        dsq__respond(req, 200, "text/plain; charset=utf-8", "ok\n", 3, NULL);
}

static void handle_metrics(dsq_server *srv, dsq_http_req *req)
{
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_metrics_render(&srv->metrics, &b) != 0) {
        dsq_buf_free(&b);
        dsq__respond_error(req, 500, DSQ_CODE_INTERNAL_ERROR, "out of memory");
        return;
    }
    dsq__respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    dsq_buf_free(&b);
}

/* ---- JSON-RPC not bound to a database ------------------------------------ */

/* ping {} → {"pong": true, "time": <ms since the epoch>, "version"} */
static void rpc_ping(dsq_rpc_call *call, json_t *params, void *ctx)
{
    dsq_rpc_result(call, json_pack("{s:b,s:I,s:s}", "pong", 1, "time",
                                   (json_int_t)dsq_wall_ms(), "version", DSQ_VERSION));
}

static const dsq_rpc_method server_methods[] = {
    {"ping", rpc_ping},
    {NULL, NULL},
};

static dsq_rpc_server rpc_server(dsq_server *srv)
{
    return (dsq_rpc_server){server_methods, srv, srv->cfg->rpc_max_batch};
}

static void http_rpc_reply(void *ud, const char *text, size_t len, int status)
{
    dsq_http_req *req = ud;
    if (text == NULL)
        dsq__respond(req, 204, NULL, NULL, 0, NULL);
    else
        dsq__respond(req, status, "application/json", text, len, NULL);
}

static void handle_rpc(dsq_server *srv, dsq_http_req *req)
{
    if (req->method != HTTP_POST) {
        dsq__respond_error(req, 426, DSQ_CODE_INVALID_REQUEST,
                           "use POST, or GET with Upgrade: websocket");
        return;
    }
    dsq_rpc_server rs = rpc_server(srv);
    dsq_rpc_handle(&rs, req->body.data ? req->body.data : "", req->body.len, http_rpc_reply, req);
}

static void ws_rpc_reply(void *ud, const char *text, size_t len, int status)
{
    dsq_conn *c = ud;
    if (text != NULL)
        dsq__ws_send(c, false, text, len);
}

static void *ws_rpc_open(dsq_conn *c, const dsq_http_req *req) { return c; }

static void ws_rpc_message(void *state, dsq_conn *c, bool binary, const uint8_t *p, size_t n)
{
    if (binary) {
        static const char err[] = "{\"id\":null,\"error\":{\"code\":\"INVALID_REQUEST\","
                                  "\"message\":\"JSON-RPC messages are text frames\"}}";
        dsq__ws_send(c, false, err, sizeof err - 1);
        return;
    }
    dsq_rpc_server rs = rpc_server(dsq__conn_server(c));
    dsq_rpc_handle(&rs, (const char *)p, n, ws_rpc_reply, c);
}

static void ws_rpc_close(void *state) {}

static const dsq_ws_app rpc_app = {ws_rpc_open, ws_rpc_message, ws_rpc_close};

const dsq_ws_app *dsq__ws_app(dsq_route_id route)
{
    switch (route) {
    case DSQ_ROUTE_RPC: return &rpc_app;
    default: return NULL; /* the others arrive with the engine and Cap'n Web */
    }
}

/* ---- dispatch -------------------------------------------------------------- */

static void not_yet(dsq_http_req *req)
{
    dsq__respond_error(req, 501, DSQ_CODE_UNKNOWN,
                       "%s is not implemented in dosqld %s yet",
                       dsq_route_pattern((dsq_route_id)req->route), DSQ_VERSION);
}

void dsq__handle(dsq_server *srv, dsq_http_req *req)
{
    switch ((dsq_route_id)req->route) {
    case DSQ_ROUTE_HEALTHZ: handle_healthz(srv, req); break;
    case DSQ_ROUTE_METRICS: handle_metrics(srv, req); break;
    case DSQ_ROUTE_RPC: handle_rpc(srv, req); break;
    case DSQ_ROUTE_DB_LIST:
    case DSQ_ROUTE_DB_DROP:
    case DSQ_ROUTE_DB_QUERY:
    case DSQ_ROUTE_DB_RPC:
    case DSQ_ROUTE_DB_CAPNWEB:
    case DSQ_ROUTE_DB_CDC:
    case DSQ_ROUTE_CAPNWEB: not_yet(req); break;
    case DSQ_ROUTE_NONE:
    case DSQ__ROUTE_COUNT:
        dsq__respond_error(req, 404, DSQ_CODE_INVALID_REQUEST, "no such route");
        break;
    }
}
