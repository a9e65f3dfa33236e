/* server_int — private to server/: the server, listeners and connections,
 * and the calls between server.c (loop, listeners, signals, shutdown),
 * conn.c (one client connection: I/O, HTTP pipeline, WebSocket) and
 * handlers.c (what each route does). */
#ifndef DSQ_SERVER_INT_H
#define DSQ_SERVER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include <jansson.h>

#include "cluster/cluster.h"
#include "common/buf.h"
#include "common/errors.h"
#include "common/list.h"
#include "common/tls.h"
#include "engine/engine.h"
#include "engine/tier/objstore.h"
#include "protocol/capnweb.h"
#include "protocol/cdcsub.h"
#include "protocol/dosql.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/router.h"
#include "server/ws.h"

typedef struct dsq_server dsq_server;
typedef struct dsq_conn dsq_conn;

typedef struct dsq_listener {
    uv_tcp_t tcp;              /* listening socket; data = this */
    dsq_server *srv;
    dsq_tls_ctx *tls;          /* borrowed: connections speak TLS with it; NULL: plain */
    bool forward;              /* for the connections other nodes pass on (cluster.tls): mutual
                                  TLS, the other end's certificate naming a node of peers */
    char addr[64];             /* bound address, as HOST:PORT */
    struct dsq_listener *next; /* srv->listeners */
} dsq_listener;

struct dsq_server {
    uv_loop_t loop;
    dsq_config *cfg;           /* owned */
    dsq_auth *auth;            /* owned; replaced on SIGHUP */
    dsq_tls_ctx *tls;          /* owned; NULL without TLS listeners */
    dsq_tls_ctx *forward_tls;  /* owned; with cluster.tls (several nodes): the mutual context of
                                  passed-on connections, both ways; else NULL */
    dsq_metrics metrics;
    dsq_listener *listeners;   /* owned list */
    dsq_list conns;            /* open connections (dsq_conn.link) */
    dsq_cluster *cluster;      /* the other nodes (cluster.peers), or NULL */
    struct dsq_router *router; /* keyspaces: the VSchema, statements on them (sharding/router.h) */
    struct dsq_rcdc *rcdc;     /* owned; in a cluster: CDC subscriptions across nodes */
    struct dsq_lake *lake;     /* owned; with [lake] databases: the lake writer, or NULL */
    struct dsq_hrana_http *hrana; /* owned; Hrana's HTTP streams between requests (server/hrana.h) */
    struct dsq_iceberg *iceberg;  /* owned; the Iceberg catalog's state, made on its first request, or NULL */
    dsq_conn *dirty;           /* connections with output to flush */
    uv_prepare_t flush_prep;   /* flushes dirty connections before polling */
    uv_idle_t flush_idle;      /* active while some stay dirty: poll must not block */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t shutdown_timer; /* bounds the drain */
    bool draining;             /* SIGTERM/SIGINT seen */
    bool shutdown_timer_on;
    dsq_engine *engine;        /* owned; the databases */
    int engine_efd;            /* eventfd: workers say calls are done (-1: none) */
    atomic_int engine_woken;   /* a wake-up is pending on engine_efd */
    uv_poll_t engine_poll;     /* the loop's watch on engine_efd */
    uv_timer_t engine_tick;    /* engine housekeeping */
    uv_timer_t feed_timer;     /* CDC feeds held back (dsq_engine_feed_due_ms) */
    dsq_obj *objects;          /* the object store (storage.object_store) */
    dsq_dosql_limits dosql;    /* limits of the DoSQL API, from cfg */
    dsq_cw_stats *cw_stats;    /* owned; what the Cap'n Web sessions share (their count of entries) */
    dsq_cdc_cache *cdc_cache;  /* owned; what the CDC subscriptions share (rendered commits, batches) */
    uint64_t next_session;     /* engine session ids of WebSocket connections */
    char *config_path;         /* owned; for SIGHUP */
    dsq_buf flag_keys;         /* NUL-separated key/value pairs from flags */
    char rbuf[65536];          /* read buffer (one loop thread) */
};

/* A WebSocket application: what a route does with messages. */
typedef struct dsq_ws_app {
    /* A session opened on `c` for `req`; returns the app's state. */
    void *(*open)(dsq_conn *c, const dsq_http_req *req);
    void (*message)(void *state, dsq_conn *c, bool binary, const uint8_t *p, size_t n);
    /* The connection is going away; free the state. */
    void (*close)(void *state);
    /* May be NULL. The subprotocol to answer for `req` (one it offers in
     * Sec-WebSocket-Protocol); NULL: none it offers is served (400). */
    const char *(*subprotocol)(const dsq_http_req *req);
} dsq_ws_app;

/* ---- conn.c ---- */
void dsq__conn_accept(dsq_listener *l);
/* Begin a graceful end of every connection (SIGTERM). */
void dsq__conns_drain(dsq_server *srv);
/* Close every connection now. */
void dsq__conns_close_all(dsq_server *srv);
/* Flush every connection with pending output (the uv_prepare callback). */
void dsq__conns_flush(dsq_server *srv);

dsq_server *dsq__conn_server(const dsq_conn *c);

/* Answer `req` (which must belong to a connection). `extra` holds whole
 * header lines ending in \r\n, or NULL. HEAD gets no body. */
void dsq__respond(dsq_http_req *req, int status, const char *ctype, const void *body,
                  size_t len, const char *extra);
/* Answer with a JSON body (borrowed) and status. */
void dsq__respond_json(dsq_http_req *req, int status, json_t *body);
/* dsq__respond with a newline after the body (JSON for humans with curl),
 * without copying the body to add it. */
void dsq__respond_line(dsq_http_req *req, int status, const char *ctype, const void *body, size_t len);
/* Answer with DESIGN's error body; status 0 means the code's own. */
void dsq__respond_error(dsq_http_req *req, int status, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A chunked response: begin (status and head), chunks, end. Each chunk is
 * sent as it comes when `req` is at the head of the pipeline, else held
 * until it is. */
void dsq__respond_begin(dsq_http_req *req, int status, const char *ctype);
/* The same with header lines of its own (`extra`: whole lines ending in \r\n). */
void dsq__respond_begin_extra(dsq_http_req *req, int status, const char *ctype, const char *extra);
/* Run work(arg) on libuv's thread pool, then after(arg) on the loop. */
void dsq__offload(dsq_server *srv, void (*work)(void *arg), void (*after)(void *arg), void *arg);
/* Cut the connection (a response that cannot be finished). */
void dsq__conn_abort(dsq_conn *c);
void dsq__respond_chunk(dsq_http_req *req, const void *p, size_t n);
void dsq__respond_end(dsq_http_req *req);
/* Is `req` the request whose response is being written now? */
bool dsq__respond_at_head(const dsq_http_req *req);
dsq_conn *dsq__req_conn(const dsq_http_req *req);

/* Is the connection's unsent output at most half of send_queue_limit? */
bool dsq__conn_room(const dsq_conn *c);

/* One wait for room on a connection, embedded in the waiter's owner. */
typedef struct dsq_waiter {
    void (*fn)(void *arg);
    void *arg;
    dsq_qnode link;          /* on the connection's waiters while queued */
    bool queued;
} dsq_waiter;
/* Call w->fn once, from the flush, when dsq__conn_room() holds. A waiter
 * already queued stays queued once. The queue is dropped (never called)
 * when the connection ends. */
void dsq__conn_wait_room(dsq_conn *c, dsq_waiter *w);
/* A WebSocket app holds messages it cannot start yet: while `hold` is
 * set the connection reads no more from the client. */
void dsq__conn_hold_input(dsq_conn *c, bool hold);

/* Send a WebSocket message on `c`. Returns 0, or -1 when the session is
 * closing or the connection was cut for holding too much unsent data. */
int dsq__ws_send(dsq_conn *c, bool binary, const void *p, size_t n);
/* The same for a message sent alike to many connections (dsq_ws_send_alt). */
int dsq__ws_send_alt(dsq_conn *c, bool binary, const void *p, size_t n, dsq_alt *alt);
/* Close the WebSocket session on `c` with a code. */
void dsq__ws_close(dsq_conn *c, uint16_t code, const char *reason);

/* ---- sse.c ---- */
/* GET /v1/db/{db}/cdc: CDC as Server-Sent Events. */
void dsq__handle_cdc(dsq_server *srv, dsq_http_req *req);

/* ---- iceberg.c ---- */
typedef struct dsq_iceberg dsq_iceberg;
/* /v1/iceberg/...: the Iceberg REST catalog (any method; it authorizes). */
void dsq__iceberg_handle(dsq_server *srv, dsq_http_req *req);
/* At the server's end, after its connections closed and before its
 * loop's handles are closed: the catalog's handle closes; requests still
 * at the object store are freed as it cancels them. */
void dsq__iceberg_close(dsq_server *srv);

/* ---- handlers.c ---- */
/* The DoSQL scopes (DSQ_SCOPE_R, _W; _A on no database) token `tok`
 * holds on database `db`. */
unsigned dsq__token_scopes(const dsq_server *srv, const char *tok, size_t tlen, const char *db);
/* Run the route's handler for a complete, authorized request. */
void dsq__handle(dsq_server *srv, dsq_http_req *req);
/* The WebSocket application of a route, or NULL if it takes none (yet). */
const dsq_ws_app *dsq__ws_app(dsq_route_id route);

/* With [cluster]: whether a connection whose first request is req goes
 * whole to the node of req's database's primary instead of being served
 * here: where to (dsq_cluster_where: with cluster.tls that node's
 * listener for passed-on connections) into addr[len], and that node's id
 * into *node. */
bool dsq__forward_target(dsq_server *srv, const dsq_http_req *req, char *addr, size_t len, const char **node);
/* Before dsq__forward_target, with cluster.etcd: whether req's database
 * has its assignment (dsq_cluster_place): 0 yes (or nothing to place),
 * 1 w->done runs once it has, -1 it cannot be placed now (err). */
int dsq__place_first(dsq_server *srv, const dsq_http_req *req, dsq_place_wait *w, char *err, size_t errlen);

/* ---- server.c ---- */

/* The last connection closed while draining: stop the loop. */
void dsq__server_conns_gone(dsq_server *srv);

#endif
