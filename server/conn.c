/* conn — one client connection: bytes in and out, the HTTP/1.1 pipeline,
 * the switch to WebSocket, deadlines, backpressure and closing.
 *
 * Divisions: the struct and its life (accept, finish, close, free);
 * output (collect, flush, write completion, backpressure); deadlines;
 * HTTP input (head, request, errors, pipelining); responses; WebSocket.
 *
 * Life of a connection:
 *
 *   accept ──► open ──────────────► finishing ──────► closing ──► freed
 *               │  (last response,     │ (output flushed,   (uv_close;
 *               │   close handshake,   │  FIN sent, input    freed when
 *               │   SIGTERM)           │  discarded until    both handles
 *               │                      │  EOF or linger)     have closed)
 *               └──── error, timeout, stall, peer EOF ──────►┘
 *
 * Output is collected in c->out while callbacks run and written once per
 * loop iteration, just before the loop polls (the server's uv_prepare
 * handle calls dsq__conns_flush), so pipelined responses share a write and
 * output made by timers is not held behind a blocking poll. Requests are answered strictly in
 * arrival order: a response for a request that is not at the head of the
 * pipeline waits in that request's own buffer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "protocol/jsonrpc.h"
#include "server/server_int.h"

enum { MODE_HTTP, MODE_WS, MODE_TUNNEL };

/* How long a finishing connection lingers for the peer's EOF, and how long
 * a WebSocket waits for the peer's close frame. */
#define LINGER_MS 5000
#define WS_CLOSE_TIMEOUT_MS 5000

struct dsq_conn {
    uv_tcp_t tcp;               /* the socket; data = this */
    uv_timer_t timer;           /* one timer for every deadline; data = this */
    uv_shutdown_t shutdown_req; /* FIN after the last byte; data = this */
    dsq_server *srv;
    dsq_tls *tls;               /* owned; NULL on a plain listener */
    bool fwd_in;                /* from the listener for passed-on connections (cluster.tls) */
    bool fwd_named;             /* ... and its certificate named a node (forward_check_node) */
    int mode;                   /* MODE_HTTP, MODE_WS or MODE_TUNNEL (forwarded to another node) */
    dsq_http_parser parser;     /* HTTP input */
    dsq_queue pipeline;         /* owned; requests in arrival order (dsq_http_req.link) */
    size_t npipe;               /* requests in that list */
    dsq_http_req *upgrade;      /* owned; upgrade waiting for the parser to stop */
    dsq_ws *ws;                 /* owned; the WebSocket session */
    const dsq_ws_app *app;      /* what the route does with messages */
    void *app_state;            /* the app's per-session state */
    dsq_buf in;                 /* plaintext input held while the parser is paused */
    dsq_buf out;                /* plaintext output not yet written */
    dsq_buf cipher;             /* TLS output not yet written */
    size_t unsent;              /* bytes in uv_write requests not yet done */
    unsigned nrequests;         /* request heads seen */
    bool reading;               /* uv_read_start is on */
    bool paused;                /* the parser is paused: pipeline full */
    bool held;                  /* the WebSocket app holds messages (dsq__conn_hold_input) */
    bool input_closed;          /* a final response is queued: ignore input */
    bool finishing;             /* no more requests; close once flushed */
    bool shut;                  /* uv_shutdown issued */
    bool closing;               /* uv_close issued */
    bool draining;              /* server shutting down: close after this response */
    bool in_dirty;              /* on srv->dirty */
    dsq_close_reason finish_reason;
    uint64_t dl_head;           /* deadlines in uv_now() ms; 0 = none */
    uint64_t dl_body;
    uint64_t dl_idle;
    uint64_t dl_stall;
    size_t stall_mark;          /* the socket's write queue when dl_stall was set */
    uint64_t dl_ping;
    uint64_t dl_close;
    uint64_t armed;             /* the deadline the timer is set for */
    unsigned dl_head_of;        /* nrequests when dl_head was set: the head it is for */
    unsigned dl_body_of;        /* nrequests when dl_body was set: the body it is for */
    uint64_t last_rx;           /* uv_now() of the last bytes read */
    dsq_queue waiters;          /* waiting for room, oldest first (dsq_waiter.link;
                                   see dsq__conn_wait_room) */
    bool capturing;             /* keeping the bytes of the request being read (raw) in case it
                                   goes to another node (with [cluster]; until the pipeline
                                   holds several requests) */
    bool cap_pause;             /* the parser stopped at a request's end only to mark it */
    dsq_buf raw;                /* the bytes from the start of the request being read on, as
                                   received (after TLS) */
    size_t chunk_base;          /* where in raw the input being parsed begins */
    dsq_http_req *placing;      /* a request held while its database is placed (cluster.etcd: its
                                   assignment is read or made), reading paused; NULL: none */
    size_t placing_raw;         /* where in raw the bytes after it begin (SIZE_MAX: not known yet) */
    dsq_place_wait place;       /* its wait (dsq_cluster_place) */
    struct tunnel *tun;         /* MODE_TUNNEL: the connection to the primary's node */
    dsq_lnode link;             /* on srv->conns */
    dsq_conn *dirty_next;       /* srv->dirty */
    int handles;                /* open uv handles; freed at 0 */
    char peer[64];              /* client address, for logs */
};

typedef struct write_req {
    uv_write_t req;
    dsq_conn *c;
    char *mem; /* owned: the buffer the bytes live in */
    size_t len;
} write_req;

static void conn_close(dsq_conn *c, dsq_close_reason why);
static void placing_drop(dsq_conn *c);
static void conn_finish(dsq_conn *c, dsq_close_reason why);
static void mark_dirty(dsq_conn *c);
static void update_timer(dsq_conn *c);
static void http_deadlines(dsq_conn *c);
static void sync_reading(dsq_conn *c);
static void http_input(dsq_conn *c, const char *p, size_t n);
static void ws_input(dsq_conn *c, const char *p, size_t n);
static void pipeline_advance(dsq_conn *c);
static void error_response(dsq_conn *c, int status, dsq_code code, const char *msg,
                           dsq_close_reason why);
static void respond_error_extra(dsq_http_req *req, int status, dsq_code code, const char *extra,
                                const char *msg);
static int conn_on_head(void *ud, dsq_http_req *req);
static int conn_on_request(void *ud, dsq_http_req *req);

static const dsq_http_parser_cb parser_cb = {.on_head = conn_on_head, .on_request = conn_on_request};

static uint64_t now_ms(const dsq_conn *c) { return uv_now(&c->srv->loop); }

dsq_server *dsq__conn_server(const dsq_conn *c) { return c->srv; }

/* The request whose response goes out next, or NULL. */
static dsq_http_req *pipeline_head(const dsq_conn *c)
{
    return dsq_container_of(dsq_queue_first(&c->pipeline), dsq_http_req, link);
}

/* ---- life ----------------------------------------------------------------- */

static void free_pipeline(dsq_conn *c)
{
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&c->waiters)) != NULL)
        dsq_container_of(n, dsq_waiter, link)->queued = false;
    while ((n = dsq_queue_pop(&c->pipeline)) != NULL) {
        dsq_http_req *r = dsq_container_of(n, dsq_http_req, link);
        if (!r->answered && r->abandon)
            r->abandon(r->abandon_arg);
        dsq_http_req_free(r);
    }
    c->npipe = 0;
}

static void tunnel_free(dsq_conn *c);
static void tunnel_send(dsq_conn *c, const char *p, size_t n);
static void tunnel_resume(dsq_conn *c);
static bool forward_first(dsq_conn *c, dsq_http_req *req);
static void forward_refused(dsq_conn *c, const char *why);
static bool forward_check_node(dsq_conn *c);

static void on_handle_closed(uv_handle_t *h)
{
    dsq_conn *c = h->data;
    if (--c->handles > 0)
        return;
    dsq_http_parser_free(&c->parser);
    dsq_buf_free(&c->in);
    dsq_buf_free(&c->out);
    dsq_buf_free(&c->cipher);
    dsq_buf_free(&c->raw);
    tunnel_free(c);
    free(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    dsq_conn *c = h->data;
    buf->base = c->srv->rbuf;
    buf->len = sizeof c->srv->rbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

void dsq__conn_accept(dsq_listener *l)
{
    dsq_server *srv = l->srv;
    dsq_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        DSQ_ERROR("accept_failed", "reason=out_of_memory");
        return;
    }
    c->srv = srv;
    c->fwd_in = l->forward;
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    int rv = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp);
    if (rv != 0) {
        DSQ_WARN("accept_failed", "error=%s", uv_strerror(rv));
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_timer_init(&srv->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    c->shutdown_req.data = c;
    c->finish_reason = DSQ_CLOSE_DONE;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char host[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
    dsq_http_parser_init(&c->parser, &parser_cb, c, srv->cfg->max_header_size,
                         srv->cfg->max_body_size);
    c->capturing = srv->cluster != NULL;
    dsq_list_push(&c->srv->conns, &c->link);
    srv->metrics.conns_accepted++;
    srv->metrics.conns_open++;
    c->last_rx = now_ms(c);
    c->dl_head = now_ms(c) + srv->cfg->header_timeout_ms;
    if (l->tls && (c->tls = dsq_tls_new(l->tls)) == NULL) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    if (srv->metrics.conns_open > srv->cfg->max_connections) {
        srv->metrics.conns_rejected++;
        DSQ_WARN("connection_rejected", "peer=%s reason=max_connections limit=%llu", c->peer,
                 (unsigned long long)srv->cfg->max_connections);
        if (c->tls) { /* no handshake yet to answer over */
            conn_close(c, DSQ_CLOSE_DONE);
            return;
        }
        error_response(c, 503, DSQ_CODE_RESOURCE_EXHAUSTED,
                       "too many connections; try again later", DSQ_CLOSE_DONE);
    }
    sync_reading(c);
    update_timer(c);
}

/* Stop taking requests; flush what is queued, send FIN, then discard input
 * until the peer's EOF (or LINGER_MS) so the last response is not lost to a
 * reset. */
static void conn_finish(dsq_conn *c, dsq_close_reason why)
{
    if (c->finishing || c->closing)
        return;
    c->finishing = true;
    c->finish_reason = why;
    placing_drop(c);
    free_pipeline(c);
    dsq_http_req_free(c->upgrade);
    c->upgrade = NULL;
    c->dl_head = c->dl_body = c->dl_idle = c->dl_ping = 0;
    c->dl_close = now_ms(c) + LINGER_MS;
    mark_dirty(c);
    update_timer(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    dsq_conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0)
        conn_close(c, c->finish_reason);
    /* else: keep discarding input until EOF or the linger deadline */
}

static void conn_close(dsq_conn *c, dsq_close_reason why)
{
    if (c->closing)
        return;
    dsq_server *srv = c->srv;
    c->closing = true;
    dsq_metrics_closed(&srv->metrics, why);
    srv->metrics.conns_open--;
    DSQ_DEBUG("connection_closed", "peer=%s reason=%s requests=%u", c->peer,
              dsq_close_reason_name(why), c->nrequests);
    dsq_list_remove(&c->srv->conns, &c->link);
    placing_drop(c);
    free_pipeline(c);
    dsq_http_req_free(c->upgrade);
    c->upgrade = NULL;
    if (c->ws) {
        srv->metrics.ws_open--;
        if (c->app && c->app->close)
            c->app->close(c->app_state);
        dsq_ws_free(c->ws);
        c->ws = NULL;
    }
    dsq_tls_free(c->tls);
    c->tls = NULL;
    if (c->tun != NULL && !uv_is_closing((uv_handle_t *)c->tun))
        uv_close((uv_handle_t *)c->tun, on_handle_closed); /* (the tunnel's handle is its first member) */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->in_dirty) { /* it must not be flushed after it is freed */
        for (dsq_conn **pp = &srv->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
        c->in_dirty = false;
    }
    /* A cut-off connection is reset: its unsent bytes are dropped. */
    bool reset = why == DSQ_CLOSE_SEND_STALL;
    if (!reset || uv_tcp_close_reset(&c->tcp, on_handle_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    if (srv->draining && srv->conns.head == NULL)
        dsq__server_conns_gone(srv);
}

void dsq__conns_drain(dsq_server *srv)
{
    dsq_conn *c, *next;
    dsq_list_foreach_safe(c, next, &srv->conns, link) {
        c->draining = true;
        if (c->finishing)
            continue;
        if (c->mode == MODE_WS) {
            dsq__ws_close(c, 1001, "server shutting down");
        } else if (dsq_http_parser_idle(&c->parser) && c->npipe == 0) {
            conn_finish(c, DSQ_CLOSE_SHUTDOWN);
        }
        /* else: a request is in flight; its response carries
         * Connection: close and the connection finishes after it. */
    }
}

void dsq__conns_close_all(dsq_server *srv)
{
    while (srv->conns.head != NULL)
        conn_close(dsq_container_of(srv->conns.head, dsq_conn, link), DSQ_CLOSE_SHUTDOWN);
}

/* ---- output --------------------------------------------------------------- */

static size_t backlog(const dsq_conn *c)
{
    return c->unsent + c->out.len + c->cipher.len + (c->ws ? dsq_ws_queued(c->ws) : 0);
}

static void mark_dirty(dsq_conn *c)
{
    if (c->in_dirty || c->closing)
        return;
    c->in_dirty = true;
    c->dirty_next = c->srv->dirty;
    c->srv->dirty = c;
}

/* The send stall clock restarts from now (none while nothing is unsent).
 * A large response is one uv_write whose callback comes only at its end,
 * so progress inside it is seen by the socket's write queue shrinking:
 * the mark is compared when the deadline comes (see on_timer). */
static void stall_restart(dsq_conn *c)
{
    c->dl_stall = c->unsent ? now_ms(c) + c->srv->cfg->send_timeout_ms : 0;
    c->stall_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    dsq_conn *c = w->c;
    c->unsent -= w->len;
    if (status == 0)
        c->srv->metrics.bytes_out += w->len;
    free(w->mem);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    /* Progress: the stall clock restarts. */
    stall_restart(c);
    mark_dirty(c);
    if (c->tun != NULL)
        tunnel_resume(c);
}

/* Write the bytes of `b`, taking its memory if they cannot all go now. */
static void raw_send(dsq_conn *c, dsq_buf *b)
{
    if (b->len == 0 || c->closing)
        return;
    size_t off = 0;
    if (c->unsent == 0) {
        uv_buf_t ub = uv_buf_init(b->data, (unsigned)b->len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
        if (n > 0) {
            off = (size_t)n;
            c->srv->metrics.bytes_out += off;
        } else if (n != UV_EAGAIN) {
            conn_close(c, DSQ_CLOSE_IO_ERROR);
            return;
        }
    }
    if (off == b->len) {
        b->len = 0;
        return;
    }
    write_req *w = malloc(sizeof *w);
    if (w == NULL) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    size_t total;
    w->c = c;
    w->mem = dsq_buf_steal(b, &total);
    w->len = total - off;
    uv_buf_t ub = uv_buf_init(w->mem + off, (unsigned)w->len);
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rv != 0) {
        free(w->mem);
        free(w);
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    c->unsent += w->len;
    if (c->dl_stall == 0)
        stall_restart(c);
    else
        c->stall_mark += w->len; /* what is queued now, had nothing gone */
}

/* Read while there is room to answer: stop above send_queue_limit, start
 * again below half of it. A finishing connection reads to discard. */
static void sync_reading(dsq_conn *c)
{
    if (c->closing)
        return;
    size_t limit = c->srv->cfg->send_queue_limit;
    size_t bl = backlog(c);
    bool want;
    if (c->finishing)
        want = true;
    else if (c->paused || c->held || bl > limit)
        want = false;
    else
        want = c->reading || bl <= limit / 2;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = true;
            c->last_rx = now_ms(c); /* the peer's silence is timed from here */
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void resume_input(dsq_conn *c)
{
    if (!c->paused || c->npipe >= c->srv->cfg->max_pipeline || c->finishing)
        return;
    c->paused = false;
    dsq_http_parser_resume(&c->parser);
    dsq_buf held = c->in;
    c->in = (dsq_buf)DSQ_BUF_INIT;
    if (held.len > 0)
        http_input(c, held.data, held.len);
    dsq_buf_free(&held);
}

static void conn_flush(dsq_conn *c)
{
    if (c->closing)
        return;
    resume_input(c);
    /* WebSocket frames move from the session to the socket in slices of at
     * most send_queue_limit. While the socket takes them at once no write
     * callback will come back to ask for more, so keep going here; after a
     * few rounds yield to other connections and continue next iteration. */
    for (int round = 0;; round++) {
        if (c->ws && dsq_ws_flush(c->ws) != 0) {
            conn_close(c, DSQ_CLOSE_WS_PROTOCOL);
            return;
        }
        if (c->out.len > 0) {
            if (c->tls) {
                if (dsq_tls_write(c->tls, c->out.data, c->out.len, &c->cipher) != 0) {
                    conn_close(c, DSQ_CLOSE_TLS_ERROR);
                    return;
                }
                c->out.len = 0;
            } else {
                raw_send(c, &c->out);
            }
        }
        if (c->finishing && !c->shut && c->unsent == 0 && c->out.len == 0 && c->tls)
            dsq_tls_shutdown(c->tls, &c->cipher);
        raw_send(c, &c->cipher);
        if (c->closing)
            return;
        if (c->ws == NULL || dsq_ws_queued(c->ws) == 0 || c->unsent > 0)
            break; /* done, or a write callback will bring us back */
        if (round == 8) {
            mark_dirty(c);
            break;
        }
    }
    /* No cut-off for a large backlog: a response, once begun, goes whole,
     * at the pace the peer reads it (only a peer reading nothing for
     * send_timeout is cut). What bounds the backlog is upstream: reading
     * stops above send_queue_limit, streams and feeds wait for room, and
     * each request's results are bounded by max_result_bytes. */
    if (c->finishing && !c->shut && backlog(c) == 0) {
        c->shut = true;
        if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
            conn_close(c, c->finish_reason);
            return;
        }
    }
    if (c->ws && !c->finishing && dsq_ws_finished(c->ws)) {
        uint16_t sent = dsq_ws_close_code_sent(c->ws);
        conn_finish(c, sent == 1002 || sent == 1007 || sent == 1009 ? DSQ_CLOSE_WS_PROTOCOL
                                                                    : DSQ_CLOSE_DONE);
        conn_flush(c);
        return;
    }
    /* Wake those waiting for room, oldest first, while it lasts. */
    for (int n = 0; n < 64 && !dsq_queue_empty(&c->waiters) && dsq__conn_room(c); n++) {
        dsq_waiter *w = dsq_container_of(dsq_queue_pop(&c->waiters), dsq_waiter, link);
        w->queued = false;
        w->fn(w->arg);
        if (c->closing)
            return;
    }
    if (!dsq_queue_empty(&c->waiters) && dsq__conn_room(c))
        mark_dirty(c); /* more next round */
    sync_reading(c);
    http_deadlines(c);
    update_timer(c);
}

bool dsq__conn_room(const dsq_conn *c)
{
    return !c->closing && !c->finishing && backlog(c) <= c->srv->cfg->send_queue_limit / 2;
}

void dsq__conn_wait_room(dsq_conn *c, dsq_waiter *w)
{
    if (w->queued || c->closing)
        return;
    w->queued = true;
    dsq_queue_push(&c->waiters, &w->link);
    mark_dirty(c);
}

void dsq__conn_hold_input(dsq_conn *c, bool hold)
{
    if (c->held == hold)
        return;
    c->held = hold;
    sync_reading(c);
}

static void on_idle(uv_idle_t *h) { (void)h; /* the prepare handle does the work */ }

void dsq__conns_flush(dsq_server *srv)
{
    /* Flushing can mark other connections dirty (never the one being
     * flushed: in_dirty is cleared first), so take the list each round. */
    for (int round = 0; srv->dirty && round < 4; round++) {
        dsq_conn *list = srv->dirty;
        srv->dirty = NULL;
        while (list) {
            dsq_conn *c = list;
            list = c->dirty_next;
            c->in_dirty = false;
            conn_flush(c);
        }
    }
    /* Connections still dirty (a WebSocket yielding after its slices) are
     * flushed next iteration; an active idle handle keeps the loop from
     * blocking in poll until then. */
    if (srv->dirty)
        uv_idle_start(&srv->flush_idle, on_idle);
    else
        uv_idle_stop(&srv->flush_idle);
}

/* ---- deadlines ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void update_timer(dsq_conn *c)
{
    if (c->closing)
        return;
    uint64_t d[] = {c->dl_head, c->dl_body, c->dl_idle, c->dl_stall, c->dl_ping, c->dl_close};
    uint64_t next = 0;
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i] && (next == 0 || d[i] < next))
            next = d[i];
    if (next == 0) {
        if (c->armed) {
            uv_timer_stop(&c->timer);
            c->armed = 0;
        }
        return;
    }
    /* Armed for an earlier moment: it will fire, look, and re-arm. */
    if (c->armed && c->armed <= next)
        return;
    uint64_t now = now_ms(c);
    uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
    c->armed = next;
}

static void http_deadlines(dsq_conn *c)
{
    if (c->mode != MODE_HTTP || c->finishing || c->closing)
        return;
    if (c->input_closed) { /* no more requests are read: none has a head or body due */
        c->dl_head = c->dl_body = 0;
        return;
    }
    const dsq_config *cfg = c->srv->cfg;
    uint64_t now = now_ms(c);
    /* Both are total deadlines, set once per request: slow bytes do not
     * extend them. c->nrequests counts heads complete, so it tells this
     * request's head or body from the last one's when one read held the end
     * of a request and the start of the next. */
    if (!dsq_http_parser_idle(&c->parser)) {
        c->dl_idle = 0;
        if (dsq_http_parser_in_body(&c->parser)) {
            c->dl_head = 0;
            if (c->dl_body == 0 || c->dl_body_of != c->nrequests) {
                c->dl_body = now + cfg->body_timeout_ms;
                c->dl_body_of = c->nrequests;
            }
        } else if (c->dl_head == 0 || c->dl_head_of != c->nrequests) {
            c->dl_body = 0;
            c->dl_head = now + cfg->header_timeout_ms;
            c->dl_head_of = c->nrequests;
        }
    } else if (c->nrequests > 0) {
        c->dl_head = c->dl_body = 0;
        c->dl_idle = (c->npipe == 0 && c->unsent == 0 && !c->paused)
                         ? now + cfg->keepalive_timeout_ms : 0;
    }
}

static void on_timer(uv_timer_t *t)
{
    dsq_conn *c = t->data;
    uint64_t now = now_ms(c);
    c->armed = 0;
    if (c->closing)
        return;
    if (c->dl_stall && now >= c->dl_stall &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < c->stall_mark) {
        stall_restart(c); /* the peer took some of a large write meanwhile */
    }
    if (c->dl_stall && now >= c->dl_stall) {
        DSQ_WARN("connection_cut", "peer=%s reason=send_stall unsent=%zu", c->peer, backlog(c));
        conn_close(c, DSQ_CLOSE_SEND_STALL);
        return;
    }
    if (c->dl_close && now >= c->dl_close) {
        conn_close(c, c->finishing ? c->finish_reason : DSQ_CLOSE_DONE);
        return;
    }
    if (c->dl_head && now >= c->dl_head) {
        c->dl_head = 0;
        if (c->nrequests == 0 && dsq_http_parser_idle(&c->parser)) {
            conn_close(c, DSQ_CLOSE_HEADER_TIMEOUT); /* never sent a byte */
            return;
        }
        error_response(c, 408, DSQ_CODE_TIMEOUT, "request head not received in time",
                       DSQ_CLOSE_HEADER_TIMEOUT);
        return;
    }
    if (c->dl_body && now >= c->dl_body) {
        c->dl_body = 0;
        error_response(c, 408, DSQ_CODE_TIMEOUT, "request body not received in time",
                       DSQ_CLOSE_BODY_TIMEOUT);
        return;
    }
    if (c->dl_idle && now >= c->dl_idle) {
        conn_close(c, DSQ_CLOSE_IDLE_TIMEOUT);
        return;
    }
    if (c->dl_ping && now >= c->dl_ping) {
        uint64_t iv = c->srv->cfg->ws_ping_interval_ms;
        /* Silence counts against the peer only while we listen; when we
         * stopped reading (backpressure) the send stall clock decides. */
        if (c->reading && now - c->last_rx >= 2 * iv) {
            conn_close(c, DSQ_CLOSE_PING_TIMEOUT);
            return;
        }
        dsq_ws_ping(c->ws);
        c->dl_ping = now + iv;
        mark_dirty(c);
    }
    update_timer(c);
}

/* ---- input ----------------------------------------------------------------- */

static void input(dsq_conn *c, const char *p, size_t n)
{
    if (c->closing || c->finishing || n == 0)
        return;
    if (c->mode == MODE_TUNNEL) {
        tunnel_send(c, p, n);
        return;
    }
    if (c->input_closed)
        return;
    if (c->capturing) { /* the request may go to another node whole */
        const dsq_config *cfg = c->srv->cfg;
        c->chunk_base = c->raw.len;
        if (c->raw.len + n > cfg->max_header_size + cfg->max_body_size + 65536 || dsq_buf_append(&c->raw, p, n) != 0) {
            c->capturing = false; /* (then it is served here) */
            dsq_buf_free(&c->raw);
        }
    }
    if (c->paused) {
        dsq_buf_append(&c->in, p, n); /* bounded: reading stops when paused */
        return;
    }
    if (c->mode == MODE_WS)
        ws_input(c, p, n);
    else
        http_input(c, p, n);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    dsq_conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        dsq_close_reason why = DSQ_CLOSE_IO_ERROR;
        if (nread == UV_EOF)
            why = c->finishing ? c->finish_reason : DSQ_CLOSE_PEER;
        conn_close(c, why);
        return;
    }
    c->srv->metrics.bytes_in += (uint64_t)nread;
    c->last_rx = now_ms(c);
    if (c->finishing)
        return; /* lingering: discard */
    if (c->tls) {
        dsq_buf plain = DSQ_BUF_INIT;
        int rv = dsq_tls_read(c->tls, buf->base, (size_t)nread, &plain, &c->cipher);
        if (c->cipher.len)
            mark_dirty(c);
        if (rv != 0) {
            if (c->fwd_in && !c->fwd_named)
                forward_refused(c, dsq_tls_error(c->tls));
            else
                DSQ_DEBUG("tls_error", "peer=%s error=%s", c->peer, dsq_log_q(dsq_tls_error(c->tls)));
            raw_send(c, &c->cipher); /* the alert */
            if (!c->closing)
                conn_close(c, DSQ_CLOSE_TLS_ERROR);
            dsq_buf_free(&plain);
            return;
        }
        /* Passed on by another node: nothing is read before its
         * certificate is known to name one. */
        if (c->fwd_in && !c->fwd_named && dsq_tls_established(c->tls) && !forward_check_node(c)) {
            dsq_buf_free(&plain);
            return;
        }
        input(c, plain.data, plain.len);
        dsq_buf_free(&plain);
    } else {
        input(c, buf->base, (size_t)nread);
    }
    if (!c->closing) {
        mark_dirty(c);
        sync_reading(c);
        http_deadlines(c);
        update_timer(c);
    }
}

/* ---- HTTP ---------------------------------------------------------------------- */

static void enqueue(dsq_conn *c, dsq_http_req *req)
{
    req->owner = c;
    dsq_queue_push(&c->pipeline, &req->link);
    c->npipe++;
}

static const dsq_ws_app *ws_app_for(const dsq_http_req *req)
{
    if (!dsq_http_header_has_token(req, "upgrade", "websocket"))
        return NULL;
    return dsq__ws_app((dsq_route_id)req->route);
}

/* Route and authorize at the end of the head, before any body is read, so
 * that Expect: 100-continue is answered truthfully and a refused body need
 * not be kept. */
static int conn_on_head(void *ud, dsq_http_req *req)
{
    dsq_conn *c = ud;
    dsq_server *srv = c->srv;
    dsq_route_match m;
    int status = 0;
    dsq_code code = DSQ_CODE_INVALID_REQUEST;
    const char *why = NULL;
    char extra[128] = "";

    c->nrequests++;
    req->owner = c;
    dsq_route(req->method, req->path, &m);
    req->route = m.route;
    memcpy(req->db, m.db, sizeof req->db);
    memcpy(req->ks, m.ks, sizeof req->ks);
    if (m.status != 0) {
        status = m.status;
        why = m.why;
        if (m.allow)
            snprintf(extra, sizeof extra, "Allow: %s\r\n", m.allow);
    } else if (m.scope != 0) {
        size_t tlen = 0, hlen = 0;
        const char *tok = NULL;
        char qtok[512];
        const char *h = dsq_http_header_get(req, "authorization", &hlen);
        if (h != NULL) {
            tok = dsq_auth_bearer(h, hlen, &tlen);
        } else if (dsq_http_header_has_token(req, "upgrade", "websocket")) {
            /* Browsers cannot set headers on a WebSocket: ?token= instead. */
            long ql = dsq_http_query_get(req, "token", qtok, sizeof qtok);
            if (ql > 0) {
                tok = qtok;
                tlen = (size_t)ql;
            }
        }
        if (tok != NULL && (req->token = strndup(tok, tlen)) != NULL)
            req->token_len = tlen;
        /* A keyspace's name is checked as a database's would be. */
        switch (dsq_auth_check(srv->auth, tok, tlen, m.scope, m.db[0] ? m.db : m.ks[0] ? m.ks : NULL)) {
        case DSQ_AUTH_OK:
            break;
        case DSQ_AUTH_UNAUTHORIZED:
            status = 401;
            code = DSQ_CODE_UNAUTHORIZED;
            why = tok ? "invalid token" : "missing bearer token";
            snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer realm=\"dosqld\"\r\n");
            break;
        case DSQ_AUTH_FORBIDDEN:
            status = 403;
            code = DSQ_CODE_FORBIDDEN;
            why = "the token does not grant this scope on this database";
            break;
        }
    }
    bool has_body = req->chunked || req->content_length > 0;
    if (status != 0) {
        int rv = 0;
        if (has_body && req->expect_continue) {
            req->keep_alive = false; /* the body will not follow: stop here */
            rv = 1;
        } else if (has_body) {
            req->discard_body = true;
        }
        respond_error_extra(req, status, code, extra[0] ? extra : NULL, why);
        return rv;
    }
    if (has_body && req->expect_continue && c->npipe == 0) {
        dsq_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        mark_dirty(c);
    }
    return 0;
}

static bool placing_start(dsq_conn *c, dsq_http_req *req);

/* A complete request served here: into the pipeline and to its handler.
 * True when the pipeline is full (the parser stops; the connection stays
 * here: no longer captured for passing on). */
static bool take(dsq_conn *c, dsq_http_req *req)
{
    if (!req->keep_alive)
        c->input_closed = true; /* its response ends the connection */
    enqueue(c, req);
    if (req->answered)
        pipeline_advance(c);
    else
        dsq__handle(c->srv, req);
    if (c->npipe >= c->srv->cfg->max_pipeline) {
        c->capturing = false; /* pipelined: the connection stays here */
        dsq_buf_free(&c->raw);
        return true;
    }
    return false;
}

static int conn_on_request(void *ud, dsq_http_req *req)
{
    dsq_conn *c = ud;
    if (c->capturing && c->npipe == 0 && placing_start(c, req))
        return 1; /* the parser stops here until the database is placed (placing_done) */
    if (c->capturing && c->npipe == 0 && forward_first(c, req)) {
        dsq_http_req_free(req);
        c->cap_pause = true;
        return 1; /* the parser stops: this request's bytes and all after go to the other node */
    }
    if (!req->answered && req->upgrade && ws_app_for(req) != NULL) {
        c->capturing = false; /* a WebSocket from here on */
        dsq_buf_free(&c->raw);
        c->upgrade = req; /* the parser stops after this; see http_input */
        return 0;
    }
    if (take(c, req))
        return 1;
    if (c->capturing) {
        c->cap_pause = true; /* http_input drops this request's bytes from raw */
        return 1;
    }
    return 0;
}

/* A request the codec could not parse, or a timeout: answer it after the
 * responses already owed, then finish. */
static void error_response(dsq_conn *c, int status, dsq_code code, const char *msg,
                           dsq_close_reason why)
{
    dsq_http_req *req = calloc(1, sizeof *req);
    if (req == NULL) {
        conn_close(c, why);
        return;
    }
    req->method = HTTP_GET;
    req->keep_alive = false;
    req->start_ns = dsq_now_ns();
    req->route = DSQ_ROUTE_NONE;
    /* Responses owed to earlier requests go first; this one then closes. */
    c->input_closed = true;
    c->finish_reason = why;
    c->dl_head = c->dl_body = c->dl_idle = 0;
    enqueue(c, req);
    dsq__respond_error(req, status, code, "%s", msg);
    mark_dirty(c);
}

static void ws_start(dsq_conn *c, dsq_http_req *req, const char *rest, size_t n);

static void http_input(dsq_conn *c, const char *p, size_t n)
{
    size_t done = 0; /* bytes of this input the parser took */
    while (n > 0 && !c->closing && !c->finishing && !c->input_closed && c->mode == MODE_HTTP) {
        size_t used = 0;
        int rv = dsq_http_parser_feed(&c->parser, p, n, &used);
        p += used;
        n -= used;
        done += used;
        switch (rv) {
        case DSQ_HTTP_OK:
            n = 0;
            break;
        case DSQ_HTTP_PAUSED:
            if (c->cap_pause) { /* a request ended: raw starts with the next one's bytes */
                c->cap_pause = false;
                if (c->mode == MODE_TUNNEL)
                    return; /* (the rest went with the forwarded request) */
                if (c->capturing) { /* raw keeps just the n bytes left of this input */
                    dsq_buf_consume(&c->raw, c->chunk_base + done);
                    c->chunk_base = 0;
                    done = 0;
                }
                dsq_http_parser_resume(&c->parser);
                continue;
            }
            if (c->placing != NULL && c->placing_raw == SIZE_MAX)
                c->placing_raw = c->chunk_base + done;
            c->paused = true;
            dsq_buf_append(&c->in, p, n);
            sync_reading(c);
            return;
        case DSQ_HTTP_REJECT: {
            /* on_head answered it with Connection: close; its turn in the
             * pipeline finishes the connection. */
            dsq_http_req *req = dsq_http_parser_take(&c->parser);
            c->input_closed = true;
            c->finish_reason = DSQ_CLOSE_DONE;
            if (req != NULL) {
                enqueue(c, req);
                pipeline_advance(c);
            } else {
                conn_finish(c, DSQ_CLOSE_DONE);
            }
            return;
        }
        case DSQ_HTTP_UPGRADE: {
            dsq_http_req *req = c->upgrade;
            c->upgrade = NULL;
            if (req == NULL) {
                /* An Upgrade we answered as plain HTTP: carry on. */
                llhttp_resume_after_upgrade(&c->parser.llh);
                continue;
            }
            ws_start(c, req, p, n);
            return;
        }
        default: { /* DSQ_HTTP_ERROR */
            int st = c->parser.err_status;
            dsq_code code = st == 413 || st == 414 || st == 431 ? DSQ_CODE_BUFFER_OVERFLOW
                            : st >= 500 && st != 505            ? DSQ_CODE_INTERNAL_ERROR
                                                                : DSQ_CODE_INVALID_REQUEST;
            DSQ_DEBUG("bad_request", "peer=%s status=%d reason=%s", c->peer, st,
                      dsq_log_q(c->parser.err_reason));
            error_response(c, st, code, c->parser.err_reason ? c->parser.err_reason : "bad request",
                           DSQ_CLOSE_BAD_REQUEST);
            return;
        }
        }
    }
}

/* Move answered requests at the head of the pipeline to the output. */
static void pipeline_advance(dsq_conn *c)
{
    dsq_http_req *r;
    while ((r = pipeline_head(c)) != NULL && r->answered) {
        dsq_queue_pop(&c->pipeline);
        c->npipe--;
        if (r->out.len)
            dsq_buf_append(&c->out, r->out.data, r->out.len);
        bool close = r->close_after;
        dsq_http_req_free(r);
        if (close) {
            conn_finish(c, c->finish_reason);
            break;
        }
    }
    /* A streaming response that is now at the head writes straight out. */
    if ((r = pipeline_head(c)) != NULL && r->streaming && r->out.len) {
        dsq_buf_append(&c->out, r->out.data, r->out.len);
        dsq_buf_reset(&r->out);
    }
    mark_dirty(c);
}

/* ---- forwarding to the primary's node ---------------------------------------------------- */

/* A connection whose first request is for a database whose primary is on
 * another node becomes a tunnel to that node: the request's bytes, and
 * every byte after, go there as they came, and what comes back goes to
 * the client. That node answers (and may itself pass the connection on).
 * Without cluster.tls the tunnel goes to that node's clients' listener, as
 * plain TCP. With it, it goes to that node's listener for passed-on
 * connections, over mutual TLS with the cluster's certificates: this node
 * presents its own, and that node's must name the node it is (its id),
 * as on the links. Until the tunnel is ready (connected, and with TLS its
 * handshake done) the client's bytes wait in `early`. Bounded both ways
 * by send_queue_limit. */
typedef struct tunnel {
    uv_tcp_t up;            /* first: the handle's address is the tunnel's; data = the conn */
    uv_connect_t creq;
    dsq_conn *c;
    dsq_tls *tls;           /* with cluster.tls: the session with that node (owned); else NULL */
    char node[DSQ_NODE_ID_MAX]; /* that node's id */
    dsq_buf early;          /* the client's bytes before the tunnel is ready */
    bool connected;         /* TCP connected: that node is read from */
    bool ready;             /* connected, and with TLS the handshake done: the client's bytes go */
    bool reading;
} tunnel;

typedef struct up_write {
    uv_write_t req;
    dsq_conn *c;
    char *mem;              /* owned: the bytes */
} up_write;

static void tunnel_free(dsq_conn *c)
{
    if (c->tun == NULL)
        return;
    dsq_buf_free(&c->tun->early);
    dsq_tls_free(c->tun->tls);
    free(c->tun);
    c->tun = NULL;
}

/* The tunnel cannot be made: the client gets 503 NOT_PRIMARY, then its
 * connection ends. */
static void tunnel_unreachable(dsq_conn *c, const char *why)
{
    DSQ_WARN("forward_failed", "peer=%s node=%s reason=%s", c->peer, c->tun->node, dsq_log_q(why));
    char msg[512];
    snprintf(msg, sizeof msg, "the node of the database's primary cannot be reached from here (%s); try again", why);
    json_t *body = dsq_rpc_error_body(DSQ_CODE_NOT_PRIMARY, msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    dsq_buf_printf(&c->out,
                   "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: "
                   "%zu\r\nConnection: close\r\n\r\n%s\n",
                   strlen(text) + 1, text);
    free(text);
    conn_finish(c, DSQ_CLOSE_DONE);
}

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    dsq_conn *c = h->data;
    buf->base = c->srv->rbuf;
    buf->len = sizeof c->srv->rbuf;
}

static void tunnel_ready(dsq_conn *c);
static void up_send(dsq_conn *c, dsq_buf *b);

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    dsq_conn *c = s->data;
    if (c->closing || nread == 0)
        return;
    tunnel *t = c->tun;
    if (nread < 0) {
        uv_read_stop(s);
        t->reading = false;
        if (!t->ready) /* (with TLS, during the handshake: that node refused this one) */
            tunnel_unreachable(c, nread == UV_EOF ? "TLS: it closed the connection in the handshake"
                                                  : uv_strerror((int)nread));
        else /* the other node is done: so is the client's connection, once flushed */
            conn_finish(c, DSQ_CLOSE_DONE);
        return;
    }
    if (t->tls == NULL) {
        dsq_buf_append(&c->out, buf->base, (size_t)nread);
    } else {
        dsq_buf own = DSQ_BUF_INIT; /* what the session sends: its handshake, an alert */
        int rv = dsq_tls_read(t->tls, buf->base, (size_t)nread, &c->out, &own);
        up_send(c, &own);
        if (c->closing)
            return;
        if (rv != 0) {
            uv_read_stop(s);
            t->reading = false;
            if (!dsq_tls_established(t->tls)) { /* its certificate failed the checks, or it refused this one's */
                char why[320];
                snprintf(why, sizeof why, "TLS: %s", dsq_tls_error(t->tls));
                tunnel_unreachable(c, why);
                return;
            }
            /* Its close_notify: done, as at its EOF. Else the session broke
             * after the request went: its outcome is not known here, so
             * the client's connection ends as with a plain one that breaks. */
            if (!dsq_tls_peer_closed(t->tls))
                DSQ_WARN("forward_failed", "peer=%s node=%s reason=%s", c->peer, t->node,
                         dsq_log_q(dsq_tls_error(t->tls)));
            mark_dirty(c);
            conn_finish(c, DSQ_CLOSE_DONE);
            return;
        }
        if (!t->ready && dsq_tls_established(t->tls)) {
            tunnel_ready(c);
            if (c->closing)
                return;
        }
    }
    mark_dirty(c);
    if (backlog(c) > c->srv->cfg->send_queue_limit) {
        uv_read_stop(s);
        t->reading = false;
    }
}

static void tunnel_resume(dsq_conn *c)
{
    tunnel *t = c->tun;
    if (t->connected && !t->reading && !c->finishing && !c->closing &&
        backlog(c) <= c->srv->cfg->send_queue_limit / 2 &&
        uv_read_start((uv_stream_t *)&t->up, on_up_alloc, on_up_read) == 0)
        t->reading = true;
}

static void on_up_written(uv_write_t *req, int status)
{
    up_write *w = (up_write *)req;
    dsq_conn *c = w->c;
    free(w->mem);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    if (c->held && uv_stream_get_write_queue_size((uv_stream_t *)&c->tun->up) <= c->srv->cfg->send_queue_limit / 2) {
        c->held = false;
        sync_reading(c);
    }
}

/* Write what b holds to the other node, taking its memory (b is left
 * empty). */
static void up_send(dsq_conn *c, dsq_buf *b)
{
    if (b->len == 0) {
        dsq_buf_free(b);
        return;
    }
    tunnel *t = c->tun;
    up_write *w = malloc(sizeof *w);
    size_t n;
    char *mem = dsq_buf_steal(b, &n);
    if (w == NULL) {
        free(mem);
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    w->c = c;
    w->mem = mem;
    uv_buf_t ub = uv_buf_init(mem, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&t->up, &ub, 1, on_up_written) != 0) {
        free(mem);
        free(w);
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    /* The client waits while the other node does not take its bytes. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&t->up) > c->srv->cfg->send_queue_limit && !c->held) {
        c->held = true;
        sync_reading(c);
    }
}

/* The client's bytes p[n] to the other node (through the TLS session, if
 * any). */
static void up_write_bytes(dsq_conn *c, const char *p, size_t n)
{
    tunnel *t = c->tun;
    dsq_buf b = DSQ_BUF_INIT;
    int rv = t->tls != NULL ? dsq_tls_write(t->tls, p, n, &b) : dsq_buf_append(&b, p, n);
    if (rv != 0) {
        dsq_buf_free(&b);
        conn_close(c, t->tls != NULL ? DSQ_CLOSE_TLS_ERROR : DSQ_CLOSE_IO_ERROR);
        return;
    }
    up_send(c, &b);
}

static void tunnel_send(dsq_conn *c, const char *p, size_t n)
{
    tunnel *t = c->tun;
    if (t->ready) {
        up_write_bytes(c, p, n);
        return;
    }
    if (dsq_buf_append(&t->early, p, n) != 0) {
        conn_close(c, DSQ_CLOSE_IO_ERROR);
        return;
    }
    /* The client waits while the tunnel is being made. */
    if (t->early.len > c->srv->cfg->send_queue_limit && !c->held) {
        c->held = true;
        sync_reading(c);
    }
}

/* The tunnel is ready: the client's bytes so far go, and the next as they
 * come. */
static void tunnel_ready(dsq_conn *c)
{
    tunnel *t = c->tun;
    t->ready = true;
    dsq_buf early = t->early;
    t->early = (dsq_buf)DSQ_BUF_INIT;
    if (t->tls == NULL)
        up_send(c, &early);
    else if (early.len > 0)
        up_write_bytes(c, early.data, early.len);
    dsq_buf_free(&early);
    if (!c->closing && c->held &&
        uv_stream_get_write_queue_size((uv_stream_t *)&t->up) <= c->srv->cfg->send_queue_limit / 2) {
        c->held = false;
        sync_reading(c);
    }
}

static void on_up_connected(uv_connect_t *req, int status)
{
    dsq_conn *c = req->data;
    if (c->closing)
        return;
    tunnel *t = c->tun;
    if (status < 0) {
        tunnel_unreachable(c, uv_strerror(status));
        return;
    }
    t->connected = true;
    uv_tcp_nodelay(&t->up, 1);
    if (t->tls != NULL) { /* ready once the handshake is done (on_up_read) */
        dsq_buf hello = DSQ_BUF_INIT;
        if (dsq_tls_start(t->tls, &hello) != 0) {
            dsq_buf_free(&hello);
            conn_close(c, DSQ_CLOSE_TLS_ERROR);
            return;
        }
        up_send(c, &hello);
    } else {
        tunnel_ready(c);
    }
    if (!c->closing)
        tunnel_resume(c);
}

/* The first request of c is for a database whose primary is elsewhere:
 * true when c became a tunnel to that node (the request goes there). */
/* ---- a request held while its database is placed (cluster.etcd) ---- */

static void placing_done(dsq_place_wait *w, int rc, const char *msg);

/* Whether req waits for its database's assignment: then it is held, the
 * parser stops after it and reading pauses (input goes to c->in). When it
 * cannot be placed now, it is answered here (503) and goes on as any. */
static bool placing_start(dsq_conn *c, dsq_http_req *req)
{
    char err[300];
    c->place.done = placing_done;
    int rc = dsq__place_first(c->srv, req, &c->place, err, sizeof err);
    if (rc == 0)
        return false;
    if (rc < 0) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "cannot place database %s now: %s; try again",
                           req->db, err);
        return false;
    }
    c->placing = req;
    c->placing_raw = SIZE_MAX;
    return true;
}

/* The held request, no longer wanted (the connection ends). */
static void placing_drop(dsq_conn *c)
{
    if (c->placing == NULL)
        return;
    dsq_cluster_place_cancel(c->srv->cluster, &c->place);
    dsq_http_req_free(c->placing);
    c->placing = NULL;
}

/* The database is placed (or cannot be): the held request goes on as
 * conn_on_request would have taken it, then reading resumes. */
static void placing_done(dsq_place_wait *w, int rc, const char *msg)
{
    dsq_conn *c = dsq_container_of(w, dsq_conn, place);
    dsq_http_req *req = c->placing;
    c->placing = NULL;
    if (req == NULL || c->closing || c->finishing) {
        dsq_http_req_free(req);
        return;
    }
    if (rc != 0)
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "cannot place database %s now: %s; try again",
                           req->db, msg ? msg : "");
    else if (forward_first(c, req)) {
        /* (raw had this request's bytes and every one after: c->in's go too) */
        dsq_http_req_free(req);
        dsq_buf_free(&c->in);
        c->in = (dsq_buf)DSQ_BUF_INIT;
        mark_dirty(c);
        return;
    }
    /* Served here: raw keeps the bytes after it (those of c->in). */
    if (c->capturing) {
        size_t cut = c->placing_raw != SIZE_MAX && c->placing_raw <= c->raw.len ? c->placing_raw : c->raw.len;
        dsq_buf_consume(&c->raw, cut);
        c->chunk_base = 0;
    }
    if (!req->answered && req->upgrade && ws_app_for(req) != NULL) {
        c->capturing = false; /* a WebSocket from here on */
        dsq_buf_free(&c->raw);
        c->paused = false;
        dsq_buf rest = c->in;
        c->in = (dsq_buf)DSQ_BUF_INIT;
        ws_start(c, req, rest.data, rest.len);
        dsq_buf_free(&rest);
        sync_reading(c);
        return;
    }
    take(c, req);
    resume_input(c);
    sync_reading(c);
}

static bool forward_first(dsq_conn *c, dsq_http_req *req)
{
    dsq_server *srv = c->srv;
    char addr[80];
    const char *node = NULL;
    if (!dsq__forward_target(srv, req, addr, sizeof addr, &node))
        return false;
    if (srv->cfg->cluster_tls && srv->forward_tls == NULL)
        return false; /* (never in plain TCP when the nodes speak TLS) */
    struct sockaddr_storage ss;
    tunnel *t = calloc(1, sizeof *t);
    if (t == NULL || dsq_parse_addr(addr, &ss) != 0 ||
        (srv->forward_tls != NULL && (t->tls = dsq_tls_new_client(srv->forward_tls, node)) == NULL)) {
        free(t);
        return false;
    }
    snprintf(t->node, sizeof t->node, "%s", node);
    t->c = c;
    t->early = c->raw; /* this request's bytes, and what came after it */
    c->raw = (dsq_buf)DSQ_BUF_INIT;
    if (!req->upgrade) {
        /* One request only: the other node closes after its response, so
         * the client's next request (maybe for this node: /metrics, an
         * admin route, another database) comes on a connection of its own
         * to this node. (A WebSocket stays passed on: it is one database's.) */
        const char *eol = memmem(t->early.data, t->early.len, "\r\n", 2);
        dsq_buf b = DSQ_BUF_INIT;
        if (eol != NULL) {
            size_t head = (size_t)(eol - t->early.data) + 2;
            if (dsq_buf_append(&b, t->early.data, head) == 0 && dsq_buf_puts(&b, "Connection: close\r\n") == 0 &&
                dsq_buf_append(&b, t->early.data + head, t->early.len - head) == 0) {
                dsq_buf_free(&t->early);
                t->early = b;
                b = (dsq_buf)DSQ_BUF_INIT;
            }
        }
        dsq_buf_free(&b);
    }
    uv_tcp_init(&srv->loop, &t->up);
    t->up.data = c;
    c->handles++;
    c->tun = t;
    t->creq.data = c;
    c->mode = MODE_TUNNEL;
    c->paused = false;
    c->dl_head = c->dl_body = c->dl_idle = 0;
    dsq_buf_free(&c->in);
    srv->metrics.forwarded++;
    DSQ_DEBUG("forwarded", "peer=%s db=%s node=%s to=%s tls=%s", c->peer, req->db, t->node, addr,
              t->tls != NULL ? "yes" : "no");
    if (uv_tcp_connect(&t->creq, &t->up, (const struct sockaddr *)&ss, on_up_connected) != 0)
        on_up_connected(&t->creq, UV_ECONNREFUSED);
    return true;
}

/* ---- passed on to this node (cluster.tls) ------------------------------------------------- */

static void forward_refused(dsq_conn *c, const char *why)
{
    c->srv->metrics.forwarded_in_refused++;
    DSQ_WARN("forward_refused", "peer=%s reason=%s", c->peer, dsq_log_q(why));
}

/* A connection on the listener for passed-on connections, its TLS
 * handshake done (its certificate verified against the cluster's CA):
 * true when that certificate names another node of cluster.peers; else
 * the connection is closed. */
static bool forward_check_node(dsq_conn *c)
{
    dsq_server *srv = c->srv;
    for (size_t i = 0; srv->cluster != NULL && i < dsq_cluster_nnodes(srv->cluster); i++) {
        dsq_cluster_node_info n;
        dsq_cluster_node(srv->cluster, i, &n);
        if (!n.self && dsq_tls_peer_named(c->tls, n.id)) {
            c->fwd_named = true;
            srv->metrics.forwarded_in++;
            DSQ_DEBUG("forward_accepted", "peer=%s node=%s", c->peer, n.id);
            return true;
        }
    }
    forward_refused(c, "its certificate names no other node of cluster.peers");
    conn_close(c, DSQ_CLOSE_TLS_ERROR);
    return false;
}

/* ---- responses ------------------------------------------------------------ */

static void respond(dsq_http_req *req, int status, const char *ctype, const void *body, size_t len,
                    bool nl, const char *extra);

void dsq__respond(dsq_http_req *req, int status, const char *ctype, const void *body, size_t len,
                  const char *extra)
{
    respond(req, status, ctype, body, len, false, extra);
}

void dsq__respond_line(dsq_http_req *req, int status, const char *ctype, const void *body, size_t len)
{
    respond(req, status, ctype, body, len, true, NULL);
}

/* The response: head, body, and a newline after it when `nl`. */
static void respond(dsq_http_req *req, int status, const char *ctype, const void *body, size_t len,
                    bool nl, const char *extra)
{
    dsq_conn *c = req->owner;
    if (req->answered)
        return;
    bool close = !req->keep_alive || c->draining || c->srv->draining;
    req->close_after = close;
    /* The head of the pipeline writes straight to the output. */
    dsq_buf *o = pipeline_head(c) == req ? &c->out : &req->out;
    dsq_http_format_head(o, status, ctype, (int64_t)(len + nl), !close, extra);
    if (req->method != HTTP_HEAD && len + nl > 0) {
        dsq_buf_reserve(o, len + nl);
        dsq_buf_append(o, body, len);
        dsq_buf_append(o, "\n", nl);
    }
    req->status = status;
    req->answered = true;
    uint64_t ns = dsq_now_ns() - req->start_ns;
    dsq_metrics_request(&c->srv->metrics, (dsq_route_id)req->route, status, ns);
    DSQ_DEBUG("request", "peer=%s method=%s path=%s status=%d us=%llu", c->peer,
              llhttp_method_name((llhttp_method_t)req->method),
              dsq_log_q(req->path ? req->path : "-"), status, (unsigned long long)(ns / 1000));
    if (pipeline_head(c) == req)
        pipeline_advance(c);
}

void dsq__respond_begin_extra(dsq_http_req *req, int status, const char *ctype, const char *extra)
{
    dsq_conn *c = req->owner;
    if (req->answered || req->streaming)
        return;
    bool close = !req->keep_alive || c->draining || c->srv->draining;
    req->close_after = close;
    req->streaming = true;
    req->status = status;
    dsq_buf *o = pipeline_head(c) == req ? &c->out : &req->out;
    dsq_http_format_head(o, status, ctype, -1, !close, extra);
    mark_dirty(c);
}

void dsq__respond_begin(dsq_http_req *req, int status, const char *ctype)
{
    dsq__respond_begin_extra(req, status, ctype, NULL);
}

void dsq__conn_abort(dsq_conn *c) { conn_close(c, DSQ_CLOSE_IO_ERROR); }

void dsq__respond_chunk(dsq_http_req *req, const void *p, size_t n)
{
    dsq_conn *c = req->owner;
    if (!req->streaming || n == 0)
        return;
    dsq_buf *o = pipeline_head(c) == req ? &c->out : &req->out;
    dsq_buf_printf(o, "%zx\r\n", n);
    dsq_buf_append(o, p, n);
    dsq_buf_append(o, "\r\n", 2);
    mark_dirty(c);
}

void dsq__respond_end(dsq_http_req *req)
{
    dsq_conn *c = req->owner;
    if (!req->streaming)
        return;
    dsq_buf *o = pipeline_head(c) == req ? &c->out : &req->out;
    dsq_buf_puts(o, "0\r\n\r\n");
    req->streaming = false;
    req->answered = true;
    uint64_t ns = dsq_now_ns() - req->start_ns;
    dsq_metrics_request(&c->srv->metrics, (dsq_route_id)req->route, req->status, ns);
    if (pipeline_head(c) == req)
        pipeline_advance(c);
}

bool dsq__respond_at_head(const dsq_http_req *req)
{
    const dsq_conn *c = req->owner;
    return pipeline_head(c) == req;
}

dsq_conn *dsq__req_conn(const dsq_http_req *req) { return req->owner; }

void dsq__respond_json(dsq_http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        static const char oom[] = "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
        dsq__respond(req, 500, "application/json", oom, sizeof oom - 1, NULL);
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* replace the NUL: one line per body, for humans with curl */
    dsq__respond(req, status, "application/json", text, n + 1, NULL);
    free(text);
}

static void respond_error_extra(dsq_http_req *req, int status, dsq_code code, const char *extra,
                                const char *msg)
{
    json_t *body = dsq_rpc_error_body(code, msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        dsq__respond(req, 500, "text/plain", "out of memory\n", 14, NULL);
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n';
    dsq__respond(req, status ? status : dsq_http_status_of(code), "application/json", text,
                 n + 1, extra);
    free(text);
}

void dsq__respond_error(dsq_http_req *req, int status, dsq_code code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    respond_error_extra(req, status, code, NULL, msg);
}

/* ---- WebSocket -------------------------------------------------------------- */

static size_t ws_write(void *ud, const uint8_t *p, size_t n)
{
    dsq_conn *c = ud;
    size_t limit = c->srv->cfg->send_queue_limit;
    size_t pending = c->unsent + c->out.len + c->cipher.len;
    if (pending >= limit)
        return 0; /* wslay keeps the rest until writes drain */
    size_t take = n < limit - pending ? n : limit - pending;
    if (dsq_buf_append(&c->out, p, take) != 0)
        return 0;
    return take;
}

/* A frame with nothing before it: a large one is written at once, from
 * where it is (the socket copies it); else, or what the socket did not
 * take, joins `out` for the next flush. Refused (wslay queues it) while
 * the connection holds send_queue_limit or more. */
#define WS_DIRECT_MIN (16u << 10)

static bool ws_write_frame(void *ud, const uint8_t *h, size_t hl, const uint8_t *p, size_t n)
{
    dsq_conn *c = ud;
    size_t pending = c->unsent + c->out.len + c->cipher.len;
    if (pending >= c->srv->cfg->send_queue_limit || c->closing)
        return false;
    /* Room for all of it first: once part of the frame has gone to the
     * socket, the rest must follow (refusing then would send it twice). */
    if (dsq_buf_reserve(&c->out, hl + n) != 0)
        return false;
    size_t off = 0; /* of header and payload, written */
    if (pending == 0 && c->tls == NULL && n >= WS_DIRECT_MIN) {
        uv_buf_t b[2] = {uv_buf_init((char *)h, (unsigned)hl), uv_buf_init((char *)p, (unsigned)n)};
        int w = uv_try_write((uv_stream_t *)&c->tcp, b, 2);
        if (w > 0) {
            off = (size_t)w;
            c->srv->metrics.bytes_out += off;
        } /* an error shows again at the next write, which closes the connection */
    }
    if (off < hl)
        (void)dsq_buf_append(&c->out, h + off, hl - off); /* reserved: cannot fail */
    size_t from = off > hl ? off - hl : 0;
    if (from < n)
        (void)dsq_buf_append(&c->out, p + from, n - from);
    return true;
}

static void ws_on_message(void *ud, bool binary, const uint8_t *p, size_t n)
{
    dsq_conn *c = ud;
    c->srv->metrics.ws_msgs_in++;
    if (c->app && c->app->message && !c->finishing)
        c->app->message(c->app_state, c, binary, p, n);
}

static const dsq_ws_cb ws_callbacks = {.write = ws_write, .on_message = ws_on_message, .write_frame = ws_write_frame};

static void ws_start(dsq_conn *c, dsq_http_req *req, const char *rest, size_t n)
{
    char accept[DSQ_WS_ACCEPT_LEN + 1];
    const char *why = NULL;
    int status = 0;
    enqueue(c, req);
    if (c->npipe > 1) {
        status = 400;
        why = "a WebSocket upgrade must not be pipelined behind other requests";
    } else {
        status = dsq_ws_handshake_check(req, accept, &why);
    }
    const dsq_ws_app *app = ws_app_for(req);
    const char *proto = NULL;
    if (status == 0 && app->subprotocol != NULL && (proto = app->subprotocol(req)) == NULL) {
        status = 400;
        why = "none of the subprotocols offered (Sec-WebSocket-Protocol) is served here";
    }
    if (status != 0) {
        req->keep_alive = false;
        respond_error_extra(req, status, DSQ_CODE_INVALID_REQUEST,
                            status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, why);
        return;
    }
    c->ws = dsq_ws_new(&ws_callbacks, c, c->srv->cfg->ws_max_message);
    if (c->ws == NULL) {
        req->keep_alive = false;
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    /* permessage-deflate, when the client offers it in a form we take */
    char ext[160] = "";
    size_t elen = 0;
    const char *offer = dsq_http_header_get(req, "sec-websocket-extensions", &elen);
    dsq_ws_deflate d;
    if (c->srv->cfg->ws_compression && offer != NULL &&
        dsq_ws_deflate_accept(offer, elen, &d, ext, sizeof ext))
        dsq_ws_set_deflate(c->ws, &d, c->srv->cfg->ws_compression_min);
    else
        ext[0] = '\0';
    /* The 101 bypasses dsq__respond: it has no body and no Connection. */
    dsq_buf_printf(&c->out,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s%s%s%s\r\n",
                   accept, ext[0] ? "Sec-WebSocket-Extensions: " : "", ext, ext[0] ? "\r\n" : "",
                   proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "", proto ? "\r\n" : "");
    dsq_metrics_request(&c->srv->metrics, (dsq_route_id)req->route, 101,
                        dsq_now_ns() - req->start_ns);
    dsq_queue_pop(&c->pipeline); /* req, the only one (npipe is 1) */
    c->npipe = 0;
    c->mode = MODE_WS;
    c->srv->metrics.ws_open++;
    c->dl_head = c->dl_body = c->dl_idle = 0;
    if (c->srv->cfg->ws_ping_interval_ms)
        c->dl_ping = now_ms(c) + c->srv->cfg->ws_ping_interval_ms;
    c->app = app;
    c->app_state = c->app->open ? c->app->open(c, req) : NULL;
    DSQ_DEBUG("websocket_open", "peer=%s route=%s db=%s", c->peer,
              dsq_route_name((dsq_route_id)req->route), req->db[0] ? req->db : "-");
    dsq_http_req_free(req);
    mark_dirty(c);
    if (c->draining)
        dsq__ws_close(c, 1001, "server shutting down");
    else if (n > 0)
        ws_input(c, rest, n);
}

static void ws_input(dsq_conn *c, const char *p, size_t n)
{
    if (dsq_ws_feed(c->ws, (const uint8_t *)p, n) != 0) {
        conn_close(c, DSQ_CLOSE_WS_PROTOCOL);
        return;
    }
    if (dsq_ws_closing(c->ws) && c->dl_close == 0)
        c->dl_close = now_ms(c) + WS_CLOSE_TIMEOUT_MS;
    mark_dirty(c);
}

int dsq__ws_send(dsq_conn *c, bool binary, const void *p, size_t n) { return dsq__ws_send_alt(c, binary, p, n, NULL); }

int dsq__ws_send_alt(dsq_conn *c, bool binary, const void *p, size_t n, dsq_alt *alt)
{
    if (c->closing || c->finishing || c->ws == NULL)
        return -1;
    if (dsq_ws_send_alt(c->ws, binary, p, n, alt) != 0)
        return -1;
    c->srv->metrics.ws_msgs_out++;
    mark_dirty(c);
    return 0;
}

void dsq__ws_close(dsq_conn *c, uint16_t code, const char *reason)
{
    if (c->closing || c->finishing || c->ws == NULL)
        return;
    dsq_ws_close(c->ws, code, reason);
    if (c->dl_close == 0)
        c->dl_close = now_ms(c) + WS_CLOSE_TIMEOUT_MS;
    mark_dirty(c);
    update_timer(c);
}
