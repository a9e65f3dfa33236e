/* hrana — libSQL's Hrana protocol on the server's transports: HTTP
 * (GET /v1/db/{db}/v2, POST /v1/db/{db}/v2/pipeline with batons) and
 * WebSocket (/v1/db/{db}/ with the hrana2 or hrana1 subprotocol). The
 * streams themselves are protocol/hrana.c's.
 *
 * Divisions: HTTP streams and their batons; the pipeline request; the
 * sweep of idle HTTP streams; the WebSocket application. */
#include "server/hrana.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/htab.h"
#include "common/log.h"
#include "common/util.h"
#include "protocol/hrana.h"
#include "protocol/value.h"
#include "server/server_int.h"

/* ---- HTTP streams and their batons ----------------------------------------------------- */

/* A stream between pipeline requests: found by its baton, which changes
 * with every response (the client must wait for one before it sends the
 * next). */
typedef struct hstream {
    dsq_hnode link;            /* in srv's table while idle, under `baton` */
    char baton[33];            /* 32 random hex digits, or "" while a request runs */
    char db[129];
    dsq_hrana_stream *s;
    uint64_t idle_since_ms;
    bool in_table;
} hstream;

struct dsq_hrana_http {
    dsq_htab batons;           /* idle streams */
    size_t open;               /* streams, idle or running */
};

static const dsq_hrana_limits *limits(const dsq_server *srv)
{
    static dsq_hrana_limits lim;
    lim.max_params = srv->dosql.max_params;
    lim.max_steps = srv->dosql.max_batch;
    lim.max_sqls = 1024;
    return &lim;
}

dsq_hrana_http *dsq_hrana_http_new(void) { return calloc(1, sizeof(dsq_hrana_http)); }

static void hstream_free(dsq_server *srv, hstream *h)
{
    if (h->in_table)
        dsq_htab_remove(&srv->hrana->batons, &h->link);
    dsq_hrana_stream_close(h->s);
    srv->hrana->open--;
    free(h);
}

void dsq_hrana_http_free(dsq_server *srv)
{
    dsq_hrana_http *t = srv->hrana;
    if (t == NULL)
        return;
    dsq_htab_iter it = {0};
    for (dsq_hnode *n; (n = dsq_htab_next(&t->batons, &it)) != NULL;)
        hstream_free(srv, dsq_container_of(n, hstream, link));
    dsq_htab_free(&t->batons);
    free(t);
    srv->hrana = NULL;
}

void dsq_hrana_sweep(dsq_server *srv)
{
    dsq_hrana_http *t = srv->hrana;
    uint64_t now = dsq_now_ms(), limit = srv->cfg->rpc_hrana_stream_timeout_ms;
    if (t == NULL || t->batons.n == 0)
        return;
    dsq_htab_iter it = {0};
    for (dsq_hnode *n; (n = dsq_htab_next(&t->batons, &it)) != NULL;) {
        hstream *h = dsq_container_of(n, hstream, link);
        if (now - h->idle_since_ms >= limit) {
            DSQ_DEBUG("hrana_stream_expired", "db=%s in_txn=%d", h->db, dsq_hrana_stream_in_txn(h->s));
            hstream_free(srv, h);
        }
    }
}

/* ---- the pipeline request ------------------------------------------------------------------ */

typedef struct pipe {
    dsq_server *srv;
    dsq_http_req *req;         /* NULL once the client went */
    hstream *h;
    dsq_buf out;               /* the results so far */
    size_t n, answered;
} pipe_t;

static void pipe_respond(pipe_t *p)
{
    dsq_server *srv = p->srv;
    hstream *h = p->h;
    dsq_buf b = {0};
    dsq_buf_puts(&b, "{\"baton\":");
    if (dsq_hrana_stream_ended(h->s) || dsq_random_id(h->baton) != 0) {
        dsq_buf_puts(&b, "null");
        hstream_free(srv, h);
    } else {
        dsq_buf_printf(&b, "\"%s\"", h->baton);
        h->idle_since_ms = dsq_now_ms();
        h->in_table = dsq_htab_add(&srv->hrana->batons, &h->link, h->baton) == 0;
        if (!h->in_table)
            hstream_free(srv, h);
    }
    dsq_buf_puts(&b, ",\"base_url\":null,\"results\":[");
    dsq_buf_append(&b, p->out.data, p->out.len);
    dsq_buf_puts(&b, "]}");
    p->req->abandon = NULL;
    dsq__respond(p->req, 200, "application/json", b.data, b.len, NULL);
    dsq_buf_free(&b);
    dsq_buf_free(&p->out);
    free(p);
}

static void pipe_done(void *ud, bool ok, const char *json, size_t len)
{
    pipe_t *p = ud;
    if (json == NULL)
        return; /* dropped: the stream closed under the request (it went) */
    if (p->answered > 0)
        dsq_buf_puts(&p->out, ",");
    dsq_buf_puts(&p->out, ok ? "{\"type\":\"ok\",\"response\":" : "{\"type\":\"error\",\"error\":");
    dsq_buf_append(&p->out, json, len);
    dsq_buf_puts(&p->out, "}");
    if (++p->answered == p->n)
        pipe_respond(p);
}

/* The client hung up before its results: nobody has the stream's next
 * baton, so the stream ends now (its transaction rolls back). */
static void pipe_abandon(void *arg)
{
    pipe_t *p = arg;
    p->req = NULL;
    hstream_free(p->srv, p->h); /* drops its requests unanswered (pipe_done ignores them) */
    dsq_buf_free(&p->out);
    free(p);
}

static void error_body(dsq_http_req *req, int status, dsq_code code, const char *msg)
{
    dsq_buf b = {0};
    dsq_hrana_error_json(&b, code, msg);
    dsq__respond(req, status, "application/json", b.data, b.len, NULL);
    dsq_buf_free(&b);
}

void dsq_hrana_handle_http(dsq_server *srv, dsq_http_req *req)
{
    if (req->route == DSQ_ROUTE_DB_HRANA_V2) { /* GET /v2: "version 2 is served here" */
        static const char body[] = "{\"version\":2}";
        dsq__respond(req, 200, "application/json", body, sizeof body - 1, NULL);
        return;
    }
    json_error_t jerr;
    /* JSON_ALLOW_NUL: a text value may hold U+0000 (SQLite's text may);
     * everything here reads strings with their lengths. */
    json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, JSON_ALLOW_NUL, &jerr);
    json_t *baton = json_object_get(body, "baton"), *reqs = json_object_get(body, "requests");
    if (!json_is_object(body) || !json_is_array(reqs) || (baton != NULL && !json_is_null(baton) && !json_is_string(baton))) {
        json_decref(body);
        error_body(req, 400, DSQ_CODE_INVALID_REQUEST,
                   "the body must be {\"baton\": string or null, \"requests\": [...]}");
        return;
    }
    size_t n = json_array_size(reqs);
    if (n > srv->dosql.max_batch) {
        json_decref(body);
        char msg[96];
        snprintf(msg, sizeof msg, "%zu requests in one pipeline; at most %zu", n, srv->dosql.max_batch);
        error_body(req, 400, DSQ_CODE_INVALID_REQUEST, msg);
        return;
    }
    unsigned scope = dsq__token_scopes(srv, req->token, req->token_len, req->db);
    hstream *h = NULL;
    if (json_is_string(baton)) {
        dsq_hnode *hn = dsq_htab_find(&srv->hrana->batons, json_string_value(baton));
        h = hn != NULL ? dsq_container_of(hn, hstream, link) : NULL;
        if (h == NULL || strcmp(h->db, req->db) != 0) {
            json_decref(body);
            error_body(req, 400, DSQ_CODE_INVALID_REQUEST,
                       "the stream of this baton is gone (closed, expired after "
                       "hrana_stream_timeout, or never here); open a new one");
            return;
        }
        dsq_htab_remove(&srv->hrana->batons, &h->link);
        h->in_table = false;
        dsq_hrana_stream_set_scope(h->s, scope);
    } else {
        /* Streams outlive their requests (up to hrana_stream_timeout):
         * no more of them than connections. */
        if (srv->hrana->open >= srv->cfg->max_connections) {
            json_decref(body);
            error_body(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED,
                       "too many open Hrana streams (server.max_connections); close some, or retry");
            return;
        }
        h = calloc(1, sizeof *h);
        if (h != NULL) {
            dsq_strlcpy(h->db, req->db, sizeof h->db);
            h->s = dsq_hrana_stream_new(srv->engine, limits(srv), req->db, scope, ++srv->next_session, NULL);
        }
        if (h == NULL || h->s == NULL) {
            free(h);
            json_decref(body);
            error_body(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        srv->hrana->open++;
    }
    h->baton[0] = '\0';
    dsq_hrana_stream_share_budget(h->s); /* one response: one result budget */
    pipe_t *p = calloc(1, sizeof *p);
    if (p == NULL) {
        hstream_free(srv, h);
        json_decref(body);
        error_body(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->srv = srv;
    p->req = req;
    p->h = h;
    p->n = n;
    if (n == 0) {
        json_decref(body);
        pipe_respond(p);
        return;
    }
    req->abandon = pipe_abandon;
    req->abandon_arg = p;
    /* The last answer may come at once and free p: count first, then
     * queue. Every request goes through the stream, malformed or not, so
     * that its answer keeps its place among the others'. */
    size_t i;
    json_t *r;
    json_array_foreach(reqs, i, r)
        dsq_hrana_stream_request(h->s, r, pipe_done, p);
    json_decref(body);
}

/* ---- the WebSocket application ---------------------------------------------------------------- */

#define WS_MAX_STREAMS 256
#define WS_MAX_INFLIGHT 1024

typedef struct wstream {
    int32_t id;
    dsq_hrana_stream *s;
    struct wstream *next;
} wstream;

typedef struct hws {
    dsq_server *srv;
    dsq_conn *c;
    char db[129];
    unsigned scope;
    bool hello;                /* a hello was accepted */
    bool gone;                 /* the connection is closing: send nothing */
    dsq_hrana_sqls *sqls;
    wstream *streams;
    size_t nstreams, inflight;
} hws;

/* One request's answer: where it goes. */
typedef struct wreq {
    hws *w;
    long long id;              /* request_id */
    wstream *closing;          /* close_stream: the stream to let go once answered */
} wreq;

static void ws_send_text(hws *w, const char *p, size_t n)
{
    if (!w->gone)
        dsq__ws_send(w->c, false, p, n);
}

static void ws_respond(hws *w, long long id, bool ok, const char *json, size_t len)
{
    dsq_buf b = {0};
    dsq_buf_printf(&b, "{\"type\":\"%s\",\"request_id\":%lld,\"%s\":", ok ? "response_ok" : "response_error",
                   id, ok ? "response" : "error");
    dsq_buf_append(&b, json, len);
    dsq_buf_puts(&b, "}");
    ws_send_text(w, b.data, b.len);
    dsq_buf_free(&b);
}

static void ws_error(hws *w, long long id, dsq_code code, const char *msg)
{
    dsq_buf b = {0};
    dsq_hrana_error_json(&b, code, msg);
    ws_respond(w, id, false, b.data, b.len);
    dsq_buf_free(&b);
}

static wstream *find_stream(hws *w, int32_t id, wstream ***prevp)
{
    wstream **pp = &w->streams;
    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            if (prevp)
                *prevp = pp;
            return *pp;
        }
    return NULL;
}

static void inflight_less(hws *w)
{
    w->inflight--;
    if (w->inflight == WS_MAX_INFLIGHT / 2 && !w->gone)
        dsq__conn_hold_input(w->c, false);
}

static void wreq_done(void *ud, bool ok, const char *json, size_t len)
{
    wreq *r = ud;
    hws *w = r->w;
    if (json == NULL) {
        /* dropped: behind a close_stream (the connection closing sends nothing) */
        ws_error(w, r->id, DSQ_CODE_INVALID_REQUEST, "the stream was closed");
    } else {
        if (r->closing != NULL) {
            static const char closed[] = "{\"type\":\"close_stream\"}";
            ws_respond(w, r->id, true, closed, sizeof closed - 1);
            wstream **pp = NULL;
            if (find_stream(w, r->closing->id, &pp) == r->closing) {
                *pp = r->closing->next;
                w->nstreams--;
            }
            dsq_hrana_stream_close(r->closing->s); /* freed once it is idle */
            free(r->closing);
        } else {
            ws_respond(w, r->id, ok, json, len);
        }
    }
    inflight_less(w);
    free(r);
}

static void *ws_open(dsq_conn *c, const dsq_http_req *req)
{
    hws *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->srv = dsq__conn_server(c);
    w->c = c;
    dsq_strlcpy(w->db, req->db, sizeof w->db);
    w->sqls = dsq_hrana_sqls_new();
    if (w->sqls == NULL) {
        free(w);
        return NULL;
    }
    return w;
}

static void ws_hello(hws *w, json_t *msg)
{
    json_t *jwt = json_object_get(msg, "jwt");
    const char *tok = json_is_string(jwt) ? json_string_value(jwt) : NULL;
    size_t tlen = tok ? json_string_length(jwt) : 0;
    unsigned scope = dsq__token_scopes(w->srv, tok, tlen, w->db);
    if (scope == 0) {
        static const char err[] = "{\"type\":\"hello_error\",\"error\":{\"message\":\"the token does not grant "
                                  "access to this database (or is missing or invalid)\",\"code\":\"UNAUTHORIZED\"}}";
        ws_send_text(w, err, sizeof err - 1);
        dsq__ws_close(w->c, 1008, "unauthorized");
        w->gone = true;
        return;
    }
    w->scope = scope;
    w->hello = true;
    for (wstream *s = w->streams; s != NULL; s = s->next) /* a hello again: the new token's scope */
        dsq_hrana_stream_set_scope(s->s, scope);
    static const char ok[] = "{\"type\":\"hello_ok\"}";
    ws_send_text(w, ok, sizeof ok - 1);
}

static void ws_request(hws *w, json_t *msg)
{
    json_t *rid = json_object_get(msg, "request_id"), *req = json_object_get(msg, "request");
    if (!json_is_integer(rid) || !json_is_object(req)) {
        dsq__ws_close(w->c, 1002, "a request needs request_id and request");
        w->gone = true;
        return;
    }
    long long id = json_integer_value(rid);
    const char *type = json_string_value(json_object_get(req, "type"));
    char why[256];
    if (type == NULL) {
        ws_error(w, id, DSQ_CODE_INVALID_REQUEST, "a request needs a \"type\"");
        return;
    }
    if (strcmp(type, "store_sql") == 0 || strcmp(type, "close_sql") == 0) {
        int rc = type[0] == 's' ? dsq_hrana_sqls_store(w->sqls, req, 1024, why, sizeof why)
                                : dsq_hrana_sqls_close(w->sqls, req, why, sizeof why);
        if (rc != 0)
            ws_error(w, id, DSQ_CODE_INVALID_REQUEST, why);
        else {
            const char *ok = type[0] == 's' ? "{\"type\":\"store_sql\"}" : "{\"type\":\"close_sql\"}";
            ws_respond(w, id, true, ok, strlen(ok));
        }
        return;
    }
    json_t *sid = json_object_get(req, "stream_id");
    if (!json_is_integer(sid) || json_integer_value(sid) < INT32_MIN || json_integer_value(sid) > INT32_MAX) {
        ws_error(w, id, DSQ_CODE_INVALID_REQUEST, "\"stream_id\" must be a 32-bit integer");
        return;
    }
    int32_t stream_id = (int32_t)json_integer_value(sid);
    wstream *st = find_stream(w, stream_id, NULL);
    if (strcmp(type, "open_stream") == 0) {
        if (st != NULL) {
            ws_error(w, id, DSQ_CODE_INVALID_REQUEST, "stream id in use (close_stream it first)");
            return;
        }
        if (w->nstreams >= WS_MAX_STREAMS) {
            snprintf(why, sizeof why, "too many open streams (at most %d)", WS_MAX_STREAMS);
            ws_error(w, id, DSQ_CODE_RESOURCE_EXHAUSTED, why);
            return;
        }
        st = calloc(1, sizeof *st);
        if (st != NULL)
            st->s = dsq_hrana_stream_new(w->srv->engine, limits(w->srv), w->db, w->scope,
                                         ++w->srv->next_session, w->sqls);
        if (st == NULL || st->s == NULL) {
            free(st);
            ws_error(w, id, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        st->id = stream_id;
        st->next = w->streams;
        w->streams = st;
        w->nstreams++;
        static const char opened[] = "{\"type\":\"open_stream\"}";
        ws_respond(w, id, true, opened, sizeof opened - 1);
        return;
    }
    if (st == NULL) {
        ws_error(w, id, DSQ_CODE_INVALID_REQUEST, "no such stream (open_stream first)");
        return;
    }
    wreq *r = calloc(1, sizeof *r);
    if (r == NULL) {
        ws_error(w, id, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    r->w = w;
    r->id = id;
    json_t *inner = req;
    json_t *close_req = NULL;
    if (strcmp(type, "close_stream") == 0) {
        /* After the stream's earlier requests, as Hrana orders them. */
        close_req = json_pack("{s:s}", "type", "close");
        if (close_req == NULL) {
            free(r);
            ws_error(w, id, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        r->closing = st;
        inner = close_req;
    } else if (dsq_hrana_sqls_resolve(w->sqls, req, why, sizeof why) != 0) {
        /* stored SQL is read now: a close_sql sent after this request
         * does not change what it runs */
        free(r);
        ws_error(w, id, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (++w->inflight == WS_MAX_INFLIGHT)
        dsq__conn_hold_input(w->c, true);
    dsq_hrana_stream_request(st->s, inner, wreq_done, r);
    json_decref(close_req);
}

static void ws_message(void *state, dsq_conn *c, bool binary, const uint8_t *p, size_t n)
{
    hws *w = state;
    (void)c;
    if (w == NULL) {
        dsq__ws_close(c, 1011, "out of memory");
        return;
    }
    if (w->gone)
        return;
    if (binary) {
        dsq__ws_close(c, 1003, "Hrana over JSON takes text messages");
        w->gone = true;
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)p, n, JSON_ALLOW_NUL, &jerr); /* (as the pipeline's) */
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (type == NULL) {
        dsq__ws_close(c, 1002, "a message must be a JSON object with a \"type\"");
        w->gone = true;
    } else if (strcmp(type, "hello") == 0) {
        ws_hello(w, msg);
    } else if (strcmp(type, "request") == 0) {
        if (!w->hello) {
            dsq__ws_close(c, 1002, "hello first");
            w->gone = true;
        } else {
            ws_request(w, msg);
        }
    } else {
        dsq__ws_close(c, 1002, "unknown message type");
        w->gone = true;
    }
    json_decref(msg);
}

static void ws_close(void *state)
{
    hws *w = state;
    if (w == NULL)
        return;
    w->gone = true;
    /* Closing a stream answers its dropped requests with nothing
     * (wreq_done frees them); its transaction rolls back. */
    for (wstream *s = w->streams, *next; s != NULL; s = next) {
        next = s->next;
        dsq_hrana_stream_close(s->s);
        free(s);
    }
    w->streams = NULL;
    dsq_hrana_sqls_free(w->sqls);
    free(w);
}

/* hrana2 before hrana1 (a client offering both gets the newer). */
static const char *ws_subprotocol(const dsq_http_req *req)
{
    if (dsq_http_header_has_token(req, "sec-websocket-protocol", "hrana2"))
        return "hrana2";
    if (dsq_http_header_has_token(req, "sec-websocket-protocol", "hrana1"))
        return "hrana1";
    return NULL;
}

const dsq_ws_app dsq_hrana_ws_app = {
    .open = ws_open,
    .message = ws_message,
    .close = ws_close,
    .subprotocol = ws_subprotocol,
};
