/* rcdc — CDC subscriptions across nodes (rcdc.h). */
#include "server/rcdc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/repl.h"
#include "cluster/wire.h"
#include "common/log.h"
#include "common/util.h"

enum {
    M_SUB = DSQ_CLUSTER_EXT_MIN, /* → primary: u64 id, str db, u8 has_from, u64 from, u32 ops, u8 enc,
                                    u32 ntables (UINT32_MAX: no table filter), ntables × (u32 len, bytes) */
    M_STARTED,                   /* → subscriber: u64 id, u8 err, u32 code, u64 lsn, rest: message */
    M_EVENTS,                    /* → subscriber: u64 id, u32 n, n × (u64 lsn, u8 last, u32 len, text) */
    M_ENDED,                     /* → subscriber: u64 id, u32 code, u64 last lsn, rest: message */
    M_STOP,                      /* → primary: u64 id */
    M_PAUSE,                     /* → primary: u64 id */
    M_RESUME,                    /* → primary: u64 id */
};

/* A serving side reads no more while its link holds this much: the links'
 * send_limit, past which the link calls on_writable once it drains (under
 * it, nothing would wake the subscription again). */
#define QUEUE_LIMIT DSQ_CLUSTER_SEND_LIMIT

/* The subscriber's side of one subscription. */
typedef struct rout {
    struct rout *next;
    dsq_rcdc *r;
    uint64_t id;
    size_t node;
    dsq_cdcsub_sink sink;
    uint64_t lsn;          /* the last commit delivered whole (before: where it starts) */
    bool started;
    bool paused;           /* PAUSE sent */
    bool linked;           /* in r->outs */
    int depth;             /* inside its sink's calls */
    bool stopped;          /* stop() came meanwhile: freed once they return */
    dsq_buf held;          /* EVENTS payloads its sink had no room for, back to back (u32 len, payload) */
    size_t held_off;       /* read so far */
} rout;

/* The primary's side of one subscription. */
typedef struct rin {
    struct rin *next;
    dsq_rcdc *r;
    uint64_t id;
    size_t node;
    dsq_cdcsub *sub;
    dsq_buf batch;         /* events gathered since the last flush (without the header) */
    uint32_t nbatch;
    bool paused;
} rin;

struct dsq_rcdc {
    dsq_cluster *c;
    dsq_engine *e;
    dsq_cdc_cache *cache;
    rout *outs;
    rin *ins;
    uint64_t next_id;
    dsq_cdc_remote rem;
};

/* ---- sending ---- */

static void send_id(dsq_rcdc *r, size_t node, uint8_t type, uint64_t id)
{
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_u64(&b, id) == 0)
        dsq_cluster_send(r->c, node, type, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
}

static int w_bytes(dsq_buf *b, const void *p, size_t n)
{
    return n > UINT32_MAX ? -1 : dsq_w_u32(b, (uint32_t)n) | (n ? dsq_buf_append(b, p, n) : 0);
}

/* ---- the primary's side ---- */

static void rin_unlink(dsq_rcdc *r, rin *x)
{
    for (rin **pp = &r->ins; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            return;
        }
}

static void rin_free(rin *x)
{
    dsq_buf_free(&x->batch);
    free(x);
}

static void in_started(void *ud, int err, dsq_code code, const char *msg)
{
    rin *x = ud;
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_u64(&b, x->id) == 0 && dsq_w_u8(&b, err != 0) == 0 && dsq_w_u32(&b, (uint32_t)code) == 0 &&
        dsq_w_u64(&b, err || x->sub == NULL ? 0 : dsq_cdcsub_lsn(x->sub)) == 0)
        dsq_cluster_send(x->r->c, x->node, M_STARTED, b.data, b.len, err ? msg : NULL, err ? strlen(msg) : 0);
    dsq_buf_free(&b);
    if (err != 0) { /* (it stopped itself) */
        rin_unlink(x->r, x);
        rin_free(x);
    }
}

static int in_event(void *ud, const char *text, size_t len, uint64_t lsn, bool last)
{
    rin *x = ud;
    if (dsq_w_u64(&x->batch, lsn) != 0 || dsq_w_u8(&x->batch, last) != 0 || w_bytes(&x->batch, text, len) != 0)
        return -1;
    x->nbatch++;
    return 0;
}

static void in_flush(void *ud)
{
    rin *x = ud;
    if (x->nbatch == 0)
        return;
    dsq_buf h = DSQ_BUF_INIT;
    if (dsq_w_u64(&h, x->id) == 0 && dsq_w_u32(&h, x->nbatch) == 0)
        dsq_cluster_send(x->r->c, x->node, M_EVENTS, h.data, h.len, x->batch.data, x->batch.len);
    dsq_buf_free(&h);
    dsq_buf_reset(&x->batch);
    x->nbatch = 0;
}

static bool in_can_send(void *ud)
{
    rin *x = ud;
    return !x->paused && dsq_cluster_queued(x->r->c, x->node) < QUEUE_LIMIT;
}

static void in_ended(void *ud, dsq_code code, const char *msg, uint64_t last_lsn)
{
    rin *x = ud;
    in_flush(x);
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_u64(&b, x->id) == 0 && dsq_w_u32(&b, (uint32_t)code) == 0 && dsq_w_u64(&b, last_lsn) == 0)
        dsq_cluster_send(x->r->c, x->node, M_ENDED, b.data, b.len, msg, strlen(msg));
    dsq_buf_free(&b);
    rin_unlink(x->r, x); /* (it stopped itself) */
    rin_free(x);
}

static void on_sub(dsq_rcdc *r, size_t node, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    uint64_t id = dsq_r_u64(&rd);
    char db[129];
    dsq_r_str(&rd, db, sizeof db);
    dsq_cdcsub_req req = {.db = db};
    req.has_from = dsq_r_u8(&rd) != 0;
    req.from = dsq_r_u64(&rd);
    req.ops = dsq_r_u32(&rd);
    req.enc = (dsq_dosql_enc)dsq_r_u8(&rd);
    uint32_t nt = dsq_r_u32(&rd);
    bool filtered = nt != UINT32_MAX; /* (a list of tables, maybe empty: only those) */
    if (!filtered)
        nt = 0;
    char **tables = NULL;
    if (!rd.bad && filtered && nt <= dsq_rd_left(&rd) / 4)
        tables = calloc(nt ? nt : 1, sizeof *tables);
    for (uint32_t i = 0; tables != NULL && i < nt && !rd.bad; i++) {
        uint32_t len = dsq_r_u32(&rd);
        const uint8_t *t;
        if (dsq_rd_take(&rd, len, &t) && (tables[i] = malloc(len + 1)) != NULL) {
            memcpy(tables[i], t, len);
            tables[i][len] = '\0';
        } else {
            rd.bad = true;
        }
    }
    req.tables = (const char *const *)tables;
    req.ntables = tables ? nt : 0;
    rin *x = NULL;
    dsq_code code = DSQ_CODE_INVALID_REQUEST;
    char msg[600] = "a subscription request from another node did not hold together";
    if (!rd.bad && dsq_rd_left(&rd) == 0 && (!filtered || tables != NULL) && dsq_db_name_valid(db) &&
        (x = calloc(1, sizeof *x)) != NULL) {
        x->r = r;
        x->id = id;
        x->node = node;
        x->next = r->ins;
        r->ins = x;
        dsq_cdcsub_sink sink = {.started = in_started, .event = in_event, .can_send = in_can_send,
                                .flush = in_flush, .ended = in_ended, .ud = x};
        x->sub = dsq_cdcsub_start(r->e, r->cache, &req, &sink, &code, msg, sizeof msg);
        if (x->sub == NULL) {
            rin_unlink(r, x);
            rin_free(x);
            x = NULL;
        }
    }
    for (uint32_t i = 0; tables != NULL && i < nt; i++)
        free(tables[i]);
    free(tables);
    if (x == NULL && !rd.bad) { /* refused now: said at once */
        dsq_buf b = DSQ_BUF_INIT;
        if (dsq_w_u64(&b, id) == 0 && dsq_w_u8(&b, 1) == 0 && dsq_w_u32(&b, (uint32_t)code) == 0 &&
            dsq_w_u64(&b, 0) == 0)
            dsq_cluster_send(r->c, node, M_STARTED, b.data, b.len, msg, strlen(msg));
        dsq_buf_free(&b);
    }
}

static rin *rin_find(dsq_rcdc *r, size_t node, uint64_t id)
{
    for (rin *x = r->ins; x; x = x->next)
        if (x->id == id && x->node == node)
            return x;
    return NULL;
}

/* ---- the subscriber's side ---- */

static void rout_unlink(dsq_rcdc *r, rout *o)
{
    if (!o->linked)
        return;
    for (rout **pp = &r->outs; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    o->linked = false;
}

static void rout_free(rout *o)
{
    dsq_buf_free(&o->held);
    free(o);
}

static rout *rout_find(dsq_rcdc *r, size_t node, uint64_t id)
{
    for (rout *o = r->outs; o; o = o->next)
        if (o->id == id && o->node == node)
            return o;
    return NULL;
}

/* Hand one EVENTS payload (after its id) to the sink: 1 when all of it
 * went, 0 when the sink had no room first (nothing of it went), -1 when
 * the sink refused (the rest dropped). */
static int deliver(rout *o, const uint8_t *p, size_t n)
{
    if (!o->sink.can_send(o->sink.ud))
        return 0;
    dsq_rd rd = dsq_rd_of(p, n);
    uint32_t k = dsq_r_u32(&rd);
    for (uint32_t i = 0; i < k && !rd.bad && !o->stopped; i++) {
        uint64_t lsn = dsq_r_u64(&rd);
        bool last = dsq_r_u8(&rd) != 0;
        uint32_t len = dsq_r_u32(&rd);
        const uint8_t *t;
        if (!dsq_rd_take(&rd, len, &t))
            break;
        if (last)
            o->lsn = lsn;
        if (o->sink.event(o->sink.ud, (const char *)t, len, lsn, last) != 0)
            return -1;
    }
    if (!o->stopped && o->sink.flush != NULL)
        o->sink.flush(o->sink.ud);
    return 1;
}

/* Deliver what is held while the sink has room; once all went, the
 * primary's side may read on. */
static void drain(rout *o)
{
    while (!o->stopped && o->held_off < o->held.len) {
        dsq_rd rd = dsq_rd_of(o->held.data + o->held_off, o->held.len - o->held_off);
        uint32_t len = dsq_r_u32(&rd);
        const uint8_t *p;
        if (!dsq_rd_take(&rd, len, &p)) {
            o->held_off = o->held.len;
            break;
        }
        int rc = deliver(o, p, len);
        if (rc == 0)
            return;
        o->held_off += 4 + len;
    }
    dsq_buf_reset(&o->held);
    o->held_off = 0;
    if (o->paused && !o->stopped) {
        o->paused = false;
        send_id(o->r, o->node, M_RESUME, o->id);
    }
}

static void on_events(dsq_rcdc *r, size_t node, const uint8_t *p, size_t n)
{
    if (n < 8)
        return;
    dsq_rd rd = dsq_rd_of(p, n);
    rout *o = rout_find(r, node, dsq_r_u64(&rd));
    if (o == NULL || !o->started)
        return; /* (stopped meanwhile) */
    o->depth++;
    int rc = o->held.len == 0 ? deliver(o, p + 8, n - 8) : 0;
    if (rc == 0 && !o->stopped) { /* no room: held, and the primary's side pauses */
        if (w_bytes(&o->held, p + 8, n - 8) != 0)
            DSQ_WARN("cdc_remote_dropped", "node=%s reason=out_of_memory", dsq_cluster_node_id(r->c, node));
        if (!o->paused) {
            o->paused = true;
            send_id(r, node, M_PAUSE, o->id);
        }
    }
    o->depth--;
    if (o->stopped && o->depth == 0)
        rout_free(o);
}

static void on_started(dsq_rcdc *r, size_t node, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    uint64_t id = dsq_r_u64(&rd);
    bool err = dsq_r_u8(&rd) != 0;
    dsq_code code = (dsq_code)dsq_r_u32(&rd);
    uint64_t lsn = dsq_r_u64(&rd);
    rout *o = rd.bad ? NULL : rout_find(r, node, id);
    if (o == NULL || o->started)
        return;
    char msg[600];
    size_t ml = dsq_rd_left(&rd) < sizeof msg - 1 ? dsq_rd_left(&rd) : sizeof msg - 1;
    memcpy(msg, rd.p, ml);
    msg[ml] = '\0';
    if (err) {
        rout_unlink(r, o); /* (it ends here: the sink does not stop it) */
        o->sink.started(o->sink.ud, -1, code, msg);
        rout_free(o);
        return;
    }
    o->started = true;
    o->lsn = lsn;
    o->depth++;
    o->sink.started(o->sink.ud, 0, DSQ_CODE_UNKNOWN, NULL);
    o->depth--;
    if (o->stopped && o->depth == 0)
        rout_free(o);
}

/* The subscription ended on the primary's side, or its link went. */
static void rout_end(dsq_rcdc *r, rout *o, dsq_code code, const char *msg)
{
    rout_unlink(r, o);
    o->depth++;
    if (!o->started)
        o->sink.started(o->sink.ud, -1, code, msg);
    else
        o->sink.ended(o->sink.ud, code, msg, o->lsn);
    o->depth--;
    o->stopped = true;
    if (o->depth == 0) /* (else whoever holds it frees it) */
        rout_free(o);
}

static void on_ended(dsq_rcdc *r, size_t node, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    uint64_t id = dsq_r_u64(&rd);
    dsq_code code = (dsq_code)dsq_r_u32(&rd);
    uint64_t last = dsq_r_u64(&rd);
    rout *o = rd.bad ? NULL : rout_find(r, node, id);
    if (o == NULL)
        return;
    /* What is still held goes first (it is before the end). */
    o->depth++;
    drain(o);
    o->depth--;
    if (o->stopped) {
        if (o->depth == 0)
            rout_free(o);
        return;
    }
    if (o->held.len > 0) { /* (the sink had no room for the rest: they are lost with the stream) */
        dsq_buf_reset(&o->held);
    }
    char msg[600];
    size_t ml = dsq_rd_left(&rd) < sizeof msg - 1 ? dsq_rd_left(&rd) : sizeof msg - 1;
    memcpy(msg, rd.p, ml);
    msg[ml] = '\0';
    (void)last; /* (its own count of what it delivered: o->lsn is what reached the sink) */
    rout_end(r, o, code, msg);
}

static int r_start(void *ud, const dsq_cdcsub_req *req, const dsq_cdcsub_sink *sink, void **h, dsq_code *code,
                   char *msg, size_t msglen)
{
    dsq_rcdc *r = ud;
    size_t node;
    *h = NULL;
    if (dsq_cluster_primary(r->c, req->db, &node))
        return 1;
    rout *o = calloc(1, sizeof *o);
    dsq_buf b = DSQ_BUF_INIT;
    int rc = o == NULL;
    if (o != NULL) {
        o->r = r;
        o->id = ++r->next_id;
        o->node = node;
        o->sink = *sink;
        o->lsn = req->has_from ? req->from : 0;
        rc = dsq_w_u64(&b, o->id) | dsq_w_str(&b, req->db) | dsq_w_u8(&b, req->has_from) |
             dsq_w_u64(&b, req->from) | dsq_w_u32(&b, req->ops) | dsq_w_u8(&b, (uint8_t)req->enc) |
             dsq_w_u32(&b, req->tables == NULL ? UINT32_MAX : (uint32_t)req->ntables);
        for (size_t i = 0; rc == 0 && i < req->ntables; i++)
            rc |= w_bytes(&b, req->tables[i], strlen(req->tables[i]));
    }
    if (rc != 0 || dsq_cluster_send(r->c, node, M_SUB, b.data, b.len, NULL, 0) != 0) {
        dsq_buf_free(&b);
        free(o);
        *code = DSQ_CODE_NOT_PRIMARY;
        snprintf(msg, msglen, "database '%s' has its primary on node %s, which this node cannot reach", req->db,
                 dsq_cluster_node_id(r->c, node));
        return -1;
    }
    dsq_buf_free(&b);
    o->next = r->outs;
    r->outs = o;
    o->linked = true;
    *h = o;
    return 0;
}

static void r_writable(void *h)
{
    rout *o = h;
    if (o->stopped || o->held.len == 0)
        return;
    o->depth++;
    drain(o);
    o->depth--;
    if (o->stopped && o->depth == 0)
        rout_free(o);
}

static void r_stop(void *h)
{
    rout *o = h;
    if (o->stopped)
        return;
    o->stopped = true;
    if (o->linked) {
        rout_unlink(o->r, o);
        send_id(o->r, o->node, M_STOP, o->id);
    }
    if (o->depth == 0)
        rout_free(o);
}

static uint64_t r_lsn(const void *h) { return ((const rout *)h)->lsn; }

/* ---- the links ---- */

static void on_message(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_rcdc *r = ud;
    switch (type) {
    case M_SUB: on_sub(r, node, p, n); break;
    case M_STARTED: on_started(r, node, p, n); break;
    case M_EVENTS: on_events(r, node, p, n); break;
    case M_ENDED: on_ended(r, node, p, n); break;
    case M_STOP:
    case M_PAUSE:
    case M_RESUME: {
        dsq_rd rd = dsq_rd_of(p, n);
        rin *x = rin_find(r, node, dsq_r_u64(&rd));
        if (x == NULL || rd.bad)
            break;
        if (type == M_STOP) {
            rin_unlink(r, x);
            dsq_cdcsub_stop(x->sub);
            rin_free(x);
        } else {
            x->paused = type == M_PAUSE;
            if (!x->paused)
                dsq_cdcsub_writable(x->sub);
        }
        break;
    }
    default: break;
    }
}

static void on_link(void *ud, size_t node, bool up)
{
    dsq_rcdc *r = ud;
    if (up)
        return;
    /* The primary's side: its subscriber is gone. */
    for (rin **pp = &r->ins; *pp;) {
        rin *x = *pp;
        if (x->node != node) {
            pp = &x->next;
            continue;
        }
        *pp = x->next;
        dsq_cdcsub_stop(x->sub);
        rin_free(x);
    }
    /* The subscriber's side: each one there ends (one at a time: a sink may
     * stop others of the same node). */
    for (;;) {
        rout *o = r->outs;
        while (o != NULL && o->node != node)
            o = o->next;
        if (o == NULL)
            break;
        char msg[300];
        snprintf(msg, sizeof msg, "the link to node %s went down: resume from the position",
                 dsq_cluster_node_id(r->c, node));
        rout_end(r, o, DSQ_CODE_NOT_PRIMARY, msg);
    }
}

static void on_writable(void *ud, size_t node)
{
    dsq_rcdc *r = ud;
    /* By id: waking one may end others (a send that fails takes the
     * link, and every subscription on it, down). */
    size_t n = 0;
    for (rin *x = r->ins; x; x = x->next)
        n++;
    uint64_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    size_t k = 0;
    for (rin *x = r->ins; ids && x; x = x->next)
        if (x->node == node && !x->paused)
            ids[k++] = x->id;
    for (size_t i = 0; i < k; i++) {
        rin *x = rin_find(r, node, ids[i]);
        if (x != NULL && !x->paused)
            dsq_cdcsub_writable(x->sub);
    }
    free(ids);
}

dsq_rcdc *dsq_rcdc_new(dsq_cluster *c, dsq_engine *e, dsq_cdc_cache *cache)
{
    dsq_rcdc *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->c = c;
    r->e = e;
    r->cache = cache;
    r->rem = (dsq_cdc_remote){r_start, r_writable, r_stop, r_lsn, r};
    dsq_cluster_set_ext(c, &(dsq_cluster_ext){on_message, on_link, on_writable, r});
    return r;
}

const dsq_cdc_remote *dsq_rcdc_remote(dsq_rcdc *r) { return r ? &r->rem : NULL; }

void dsq_rcdc_free(dsq_rcdc *r)
{
    if (r == NULL)
        return;
    dsq_cluster_set_ext(r->c, &(dsq_cluster_ext){0});
    while (r->ins != NULL) {
        rin *x = r->ins;
        r->ins = x->next;
        dsq_cdcsub_stop(x->sub);
        rin_free(x);
    }
    while (r->outs != NULL) { /* (their sessions are closed: nobody stops them now) */
        rout *o = r->outs;
        r->outs = o->next;
        rout_free(o);
    }
    free(r);
}
