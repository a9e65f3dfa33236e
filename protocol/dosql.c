/* dosql — DoSQL methods on the engine.
 *
 * Divisions: sessions; operations (one method call in flight) and their
 * answers; request parsing; encoders (run on workers); completions and
 * streams; the methods; entry points.
 *
 * An operation holds a reference on its session; so does each JSON-RPC
 * message in flight, and the transport until it closes. Every engine call
 * completes (the engine guarantees `done`, even at shutdown), so every
 * operation and message ends and the session is freed after the last. */
#include "protocol/dosql.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/util.h"
#include "protocol/cdcsub.h"
#include "protocol/docs.h"
#include "protocol/value.h"
#include "sharding/router.h"

struct dsq_dosql_session {
    dsq_engine *e;
    dsq_cdc_cache *cdc;    /* the server's: what CDC subscriptions share */
    dsq_dosql_limits lim;
    dsq_dosql_transport t;
    char db[129];          /* the bound database, or "" */
    uint64_t id;           /* engine session id */
    int refs;
    bool closed;           /* the transport is gone */
    bool may_hold;         /* it asked for a transaction or a stream: its end tells the engine */
    dsq_queue parked;      /* streams waiting for room, oldest first (dsq_dosql_op.park_link) */
    dsq_budget *budget;    /* dsq_dosql_call's results are charged here, or NULL */
    struct csub *subs;     /* CDC subscriptions */
    struct dsq_dosql_op *inflight; /* ops with the engine, newest first (cancelled at close) */
    uint64_t next_sub;     /* their ids */
    struct dsq_router *router; /* keyspaces and the VSchema (NULL: none) */
    struct kcsub *ksubs;   /* CDC subscriptions of the keyspace */
    const dsq_cdc_remote *rem; /* their parts on other nodes (NULL: none) */
    char ks[129];          /* the bound keyspace, or "" */
};

typedef struct dsq_dosql_op op;
struct dsq_dosql_op {
    dsq_call call;         /* call.ud = this */
    dsq_dosql_session *s;
    dsq_rpc_call *rpc;     /* the JSON-RPC call to answer, or NULL */
    dsq_dosql_enc enc;     /* how results are written */
    dsq_dosql_done_fn done_fn; /* dsq_dosql_call's outcome goes here (else rpc or the query route) */
    dsq_dosql_chunk_fn chunk_fn; /* dsq_dosql_call's stream chunks go here */
    const char *fixed_db;  /* dsq_dosql_call's database (borrowed), or NULL */
    const char *fixed_ks;  /* dsq_dosql_call_ks's keyspace (borrowed), or NULL */
    void *done_ud;
    json_t *root;          /* owned; the query route's parsed body */
    dsq_arena arena;       /* parameters and statements */
    dsq_stmt_req stmt;     /* QUERY and STREAM's one statement */
    char db[129];
    /* streams */
    char *idtext;          /* owned; the request's id as JSON text */
    uint64_t chunks;       /* chunk notifications made */
    uint64_t rows;         /* rows in them */
    atomic_bool cancelled; /* asked the engine to stop (the loop sets it while a worker may
                              be encoding a chunk: enc_chunk reads it) */
    bool awaiting;         /* a chunk is with the sink (dsq_dosql_stream_resume) */
    bool ks_stream;        /* a keyspace's stream to a chunk_fn: its rows in call.results[0] */
    size_t kpos, krow;     /* (its next chunk's place in them) */
    dsq_qnode park_link;   /* on the session's parked streams */
    op *in_prev, *in_next; /* the session's inflight list */
    bool in_list;
};

typedef void (*method_fn)(op *o, json_t *params);

/* One JSON-RPC message in flight: its calls share one result budget. */
typedef struct message {
    dsq_dosql_session *s;
    dsq_budget budget;
} message;

/* A DoSQL method and the members its request object may hold. */
typedef struct method_def {
    const char *name;
    method_fn fn;
    bool rpc_only;              /* not on Cap'n Web (its CDC is a callback and a stub) */
    const char *fields[10];     /* the request's members, NULL-terminated */
} method_def;

/* ---- sessions ------------------------------------------------------------------- */

dsq_dosql_session *dsq_dosql_session_new(dsq_engine *e, dsq_cdc_cache *cdc, const dsq_dosql_limits *lim,
                                          const char *db, uint64_t session_id,
                                          const dsq_dosql_transport *t)
{
    dsq_dosql_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->e = e;
    s->cdc = cdc;
    s->lim = *lim;
    s->t = *t;
    if (db != NULL)
        snprintf(s->db, sizeof s->db, "%s", db);
    s->id = session_id;
    s->refs = 1; /* the transport's */
    return s;
}

static void session_unref(dsq_dosql_session *s)
{
    if (--s->refs == 0)
        free(s);
}

/* ---- operations and answers -------------------------------------------------------- */

static op *op_new(dsq_dosql_session *s, dsq_rpc_call *rpc)
{
    op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->s = s;
    o->rpc = rpc;
    o->call.ud = o;
    o->call.scope = DSQ_SCOPE_R;
    o->call.atomic = true;
    s->refs++;
    return o;
}

static void op_free(op *o)
{
    dsq_dosql_session *s = o->s;
    if (o->in_list) {
        if (o->in_prev)
            o->in_prev->in_next = o->in_next;
        else
            s->inflight = o->in_next;
        if (o->in_next)
            o->in_next->in_prev = o->in_prev;
    }
    dsq_call_reset(&o->call);
    dsq_arena_free(&o->arena);
    json_decref(o->root);
    free(o->idtext);
    free(o);
    session_unref(s);
}

static void answer_raw(op *o, const char *json, size_t n, dsq_buf *owner)
{
    if (o->done_fn != NULL)
        o->done_fn(o->done_ud, 0, DSQ_CODE_UNKNOWN, json, n, owner,
                   o->call.budget != NULL ? o->call.result_bytes : 0);
    else if (o->rpc != NULL)
        dsq_rpc_result_raw(o->rpc, json, n);
    else if (!o->s->closed)
        o->s->t.reply(o->s->t.ud, json, n, DSQ_RPC_OK);
}

static void answer_error_msg(op *o, dsq_code code, const char *msg);

/* Answer with the JSON text in b (out of memory when it has none), and
 * let b go. */
static void answer_buf(op *o, dsq_buf *b)
{
    if (b->data == NULL)
        answer_error_msg(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
    else
        answer_raw(o, b->data, b->len, b);
    dsq_buf_free(b);
}

static void answer_error_msg(op *o, dsq_code code, const char *msg)
{
    if (o->done_fn != NULL) {
        o->done_fn(o->done_ud, -1, code, msg, strlen(msg), NULL, 0);
        return;
    }
    if (o->rpc != NULL) {
        dsq_rpc_error(o->rpc, code, "%s", msg);
        return;
    }
    if (o->s->closed)
        return;
    json_t *body = dsq_rpc_error_body(code, msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        o->s->t.reply(o->s->t.ud, "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}",
                      63, DSQ_RPC_FAILED(DSQ_CODE_INTERNAL_ERROR));
    else
        o->s->t.reply(o->s->t.ud, text, strlen(text), DSQ_RPC_FAILED(code));
    free(text);
}

/* Answer with an error and end the operation. */
static void reject(op *o, dsq_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reject(op *o, dsq_code code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    answer_error_msg(o, code, msg);
    op_free(o);
}

/* ---- request parsing ------------------------------------------------------------------ */

/* Does object `p` hold only members `fields` (NULL-terminated) names?
 * Returns 0, or -1 with the first other member named in `why`, and what
 * `what` (the object: "query", "batch statements[2]") takes. A member
 * nobody reads is refused, never ignored: a client that misspells one, or
 * counts on one this server does not have, learns it at once. */
static int fields_check(json_t *p, const char *const *fields, const char *what, char *why, size_t n)
{
    const char *k;
    json_t *v;
    json_object_foreach(p, k, v) {
        size_t i = 0;
        while (fields[i] != NULL && strcmp(fields[i], k) != 0)
            i++;
        if (fields[i] != NULL)
            continue;
        int len = snprintf(why, n, "unknown field \"%.64s\" in %s (it takes ", k, what);
        for (i = 0; fields[i] != NULL && len >= 0 && (size_t)len < n; i++)
            len += snprintf(why + len, n - (size_t)len, "%s%s", i ? ", " : "", fields[i]);
        if (i == 0 && len >= 0 && (size_t)len < n)
            len += snprintf(why + len, n - (size_t)len, "no fields");
        if (len >= 0 && (size_t)len < n)
            snprintf(why + len, n - (size_t)len, ")");
        return -1;
    }
    return 0;
}

/* As fields_check(), rejecting the operation. Returns 0, or -1 after
 * rejecting. */
static int check_fields(op *o, json_t *p, const char *const *fields, const char *what)
{
    char why[512];
    if (fields_check(p, fields, what, why, sizeof why) == 0)
        return 0;
    reject(o, DSQ_CODE_INVALID_REQUEST, "%s", why);
    return -1;
}

/* The database, the caller's scope on it, and the transaction. Returns 0,
 * or -1 after rejecting. */
/* An LSN: a whole number, {"$bigint": "..."} (Cap'n Web's BigInt), or
 * its decimal string. */
static int lsn_value(json_t *j, uint64_t *out)
{
    json_t *big = json_object_get(j, "$bigint");
    if (json_is_string(big) && json_object_size(j) == 1)
        j = big;
    if (json_is_integer(j) && json_integer_value(j) >= 0) {
        *out = (uint64_t)json_integer_value(j);
        return 0;
    }
    return json_is_string(j) && dsq_parse_u64(json_string_value(j), out) == 0 ? 0 : -1;
}

/* asOf: {lsn} or {timestamp} (ms since the epoch, a Date, or RFC 3339). */
static int parse_as_of(op *o, json_t *a)
{
    json_t *l = json_object_get(a, "lsn"), *t = json_object_get(a, "timestamp");
    if (!json_is_object(a) || json_object_size(a) != 1 || (l == NULL && t == NULL)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"asOf\" must be {\"lsn\": N} or {\"timestamp\": T}");
        return -1;
    }
    if (l != NULL) {
        if (lsn_value(l, &o->call.as_of_lsn) != 0) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "asOf.lsn must be an LSN (a whole number)");
            return -1;
        }
        o->call.as_of = DSQ_AS_OF_LSN;
        return 0;
    }
    double ms = json_is_number(t) ? json_number_value(t) : -1;
    uint64_t us = 0;
    if (json_is_number(t) && ms >= 0 && ms < 1e15) {
        us = (uint64_t)(ms * 1000);
    } else if (!json_is_string(t) || dsq_parse_rfc3339(json_string_value(t), &us) != 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST,
               "asOf.timestamp must be milliseconds since 1970 or an RFC 3339 time "
               "such as 2026-11-26T10:00:00.000Z");
        return -1;
    }
    o->call.as_of = DSQ_AS_OF_TIME;
    o->call.as_of_time_us = us;
    return 0;
}

static int prelude(op *o, json_t *p)
{
    dsq_dosql_session *s = o->s;
    json_t *d = json_object_get(p, "database");
    if (o->fixed_db != NULL || s->db[0]) { /* the call is on a database already */
        const char *bound = o->fixed_db != NULL ? o->fixed_db : s->db;
        if (d != NULL && !(json_is_string(d) && strcmp(json_string_value(d), bound) == 0)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"database\" differs from the %s database '%s'",
                   o->fixed_db != NULL ? "called" : "route's", bound);
            return -1;
        }
        dsq_strlcpy(o->db, bound, sizeof o->db);
    } else {
        if (d == NULL) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"database\" is required on this route");
            return -1;
        }
        if (!json_is_string(d)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"database\" must be a string");
            return -1;
        }
        const char *name = json_string_value(d);
        if (json_string_length(d) != strlen(name) || !dsq_db_name_valid(name)) {
            reject(o, DSQ_CODE_INVALID_REQUEST,
                   "invalid database name '%.140s': 1 to 128 of A-Z a-z 0-9 . _ -, "
                   "not starting with '.'", name);
            return -1;
        }
        memcpy(o->db, name, strlen(name) + 1);
    }
    unsigned scope = s->t.scope(s->t.ud, o->db);
    if (scope == 0) {
        reject(o, DSQ_CODE_FORBIDDEN, "the token does not grant access to database '%s'", o->db);
        return -1;
    }
    o->call.scope = scope;
    o->call.session = s->id;
    json_t *tx = json_object_get(p, "transactionId");
    if (tx != NULL && !json_is_null(tx)) {
        size_t n = json_is_string(tx) ? json_string_length(tx) : 0;
        if (n == 0 || n >= sizeof o->call.txn) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"transactionId\" must be a transaction id string");
            return -1;
        }
        memcpy(o->call.txn, json_string_value(tx), n + 1);
    }
    json_t *as_of = json_object_get(p, "asOf"); /* query's only (its fields) */
    if (as_of != NULL && !json_is_null(as_of))
        return parse_as_of(o, as_of);
    return 0;
}

/* One statement {sql, params?} into r. `where` prefixes messages. Returns
 * 0, or -1 after rejecting. */
static int parse_stmt(op *o, json_t *obj, dsq_stmt_req *r, const char *where)
{
    json_t *sql = json_object_get(obj, "sql");
    if (sql == NULL || json_is_null(sql)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "%s\"sql\" is required", where);
        return -1;
    }
    if (!json_is_string(sql)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "%s\"sql\" must be a string", where);
        return -1;
    }
    r->sql = json_string_value(sql); /* lives in the message until the answer */
    r->sql_len = json_string_length(sql);
    if (r->sql_len == 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "%s\"sql\" is empty", where);
        return -1;
    }
    char why[256];
    if (dsq_params_from_json(json_object_get(obj, "params"), r, &o->arena, o->s->lim.max_params,
                             why, sizeof why) != 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "%s%s", where, why);
        return -1;
    }
    return 0;
}

/* idempotencyKey (query, batch, commit): 1 to 128 bytes of text, borrowed
 * from the request (which lives as long as the call). Returns 0, or -1
 * after rejecting. */
static int parse_idem_key(op *o, json_t *p)
{
    json_t *k = json_object_get(p, "idempotencyKey");
    if (k == NULL)
        return 0;
    size_t n = json_is_string(k) ? json_string_length(k) : 0;
    if (n == 0 || n > 128) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"idempotencyKey\" must be a string of 1 to 128 bytes");
        return -1;
    }
    o->call.idem_key = json_string_value(k);
    o->call.idem_key_len = n;
    return 0;
}

/* An optional whole number in [lo, hi]; `*out` keeps its value when absent.
 * Returns 0, or -1 after rejecting. */
static int opt_uint(op *o, json_t *p, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
    json_t *v = json_object_get(p, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
        (uint64_t)json_integer_value(v) > hi) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"%s\" must be a whole number from %llu to %llu", key,
               (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* ---- encoders (workers) ------------------------------------------------------------------ */

static bool cw(const dsq_call *c) { return ((const op *)c->ud)->enc == DSQ_ENC_CAPNWEB; }

/* An LSN member's value: a number, or a BigInt on Cap'n Web. */
static void put_lsn(dsq_call *c, dsq_buf *b, uint64_t lsn)
{
    if (cw(c))
        dsq_cw_bigint(b, (int64_t)lsn);
    else
        dsq_buf_put_u64(b, lsn);
}

static void put_result(dsq_call *c, dsq_buf *b, const dsq_result *r)
{
    if (cw(c))
        dsq_cw_result(b, r);
    else
        dsq_json_result(b, r);
}

static void enc_query(dsq_call *c)
{
    if (c->err == 0)
        put_result(c, &c->out, &c->results[0]);
    dsq_call_free_results(c); /* the text is all the reply needs */
}

/* A batch's answer: {"results": [...], "lsn"} (a failed statement of a
 * batch that is not atomic: {"error": {...}} in its place). */
static void put_batch(dsq_buf *b, bool capnweb, const dsq_result *results, size_t n, uint64_t lsn)
{
    dsq_buf_puts(b, capnweb ? "{\"results\":[[" : "{\"results\":[");
    for (size_t i = 0; i < n; i++) {
        const dsq_result *r = &results[i];
        if (i)
            dsq_buf_puts(b, ",");
        if (r->error != NULL) {
            dsq_buf_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", dsq_code_name(r->code));
            dsq_json_string(b, r->error, strlen(r->error));
            dsq_buf_puts(b, "}}");
        } else if (capnweb) {
            dsq_cw_result(b, r);
        } else {
            dsq_json_result(b, r);
        }
    }
    dsq_buf_puts(b, capnweb ? "]],\"lsn\":" : "],\"lsn\":");
    if (capnweb)
        dsq_cw_bigint(b, (int64_t)lsn);
    else
        dsq_buf_put_u64(b, lsn);
    dsq_buf_puts(b, "}");
}

static void enc_batch(dsq_call *c)
{
    if (c->err != 0)
        return;
    put_batch(&c->out, cw(c), c->results, c->nresults, c->lsn);
    dsq_call_free_results(c);
}

static void enc_doc(dsq_call *c)
{
    json_t *doc = dsq_doc_of(c);
    if (doc == NULL)
        return;
    if (cw(c)) {
        if (dsq_cw_doc(&c->out, doc) != 0)
            dsq_buf_reset(&c->out);
    } else {
        char *text = json_dumps(doc, JSON_COMPACT);
        if (text != NULL)
            dsq_buf_puts(&c->out, text);
        free(text);
    }
    json_decref(doc);
}

static void enc_begin(dsq_call *c)
{
    if (c->err != 0)
        return;
    dsq_buf_printf(&c->out, "{\"transactionId\":\"%s\",\"lsn\":", c->txn_out);
    put_lsn(c, &c->out, c->lsn);
    dsq_buf_puts(&c->out, "}");
}

static void enc_end(dsq_call *c)
{
    if (c->err != 0)
        return;
    dsq_buf_puts(&c->out, "{\"lsn\":");
    put_lsn(c, &c->out, c->lsn);
    dsq_buf_puts(&c->out, "}");
}

/* One stream.chunk notification; the first carries the columns. */
static void enc_chunk(dsq_call *c)
{
    op *o = c->ud;
    const dsq_result *r = &c->results[0];
    dsq_buf_reset(&c->out);
    if (c->err != 0 || o->cancelled || (r->nrows == 0 && o->chunks > 0))
        return;
    dsq_buf *b = &c->out;
    if (o->enc == DSQ_ENC_CAPNWEB) { /* the argument of the client's callback */
        dsq_buf_printf(b, "{\"seq\":%llu,", (unsigned long long)o->chunks);
        if (o->chunks == 0) {
            dsq_cw_columns(b, r);
            dsq_buf_puts(b, ",");
        }
        dsq_buf_puts(b, "\"rows\":");
        dsq_cw_rows(b, r);
        dsq_buf_puts(b, "}");
    } else {
        dsq_buf_printf(b, "{\"method\":\"stream.chunk\",\"params\":{\"streamId\":%s,\"seq\":%llu,",
                       o->idtext, (unsigned long long)o->chunks);
        if (o->chunks == 0) {
            dsq_json_columns(b, r);
            dsq_buf_puts(b, ",");
        }
        dsq_buf_puts(b, "\"rows\":");
        dsq_json_rows(b, r);
        dsq_buf_puts(b, "}}");
    }
    o->chunks++;
    o->rows += r->nrows;
}

/* ---- completions and streams --------------------------------------------------------------- */

static void on_done(dsq_call *c);

static void submit(op *o)
{
    o->call.done = on_done;
    if (dsq_engine_submit(o->s->e, o->db, &o->call) != 0) {
        reject(o, o->call.code, "%s", o->call.msg);
        return;
    }
    dsq_dosql_session *s = o->s;
    if (o->call.op == DSQ_OP_BEGIN || o->call.op == DSQ_OP_STREAM)
        s->may_hold = true;
    o->in_prev = NULL;
    o->in_next = s->inflight;
    if (s->inflight)
        s->inflight->in_prev = o;
    s->inflight = o;
    o->in_list = true;
}

/* Stop op o's work in the engine (dsq_engine_cancel); a stream ends. */
static void op_cancel(op *o)
{
    if (o->call.op == DSQ_OP_STREAM)
        o->cancelled = true;
    dsq_engine_cancel(o->s->e, &o->call);
}

static void stream_more(op *o, bool cancel)
{
    if (cancel)
        o->cancelled = true;
    dsq_engine_stream_more(o->s->e, &o->call, cancel);
}

static void stream_end(op *o);

static void stream_done(op *o)
{
    dsq_call *c = &o->call;
    dsq_dosql_session *s = o->s;
    if (s->closed || o->cancelled) {
        if (c->more) {
            stream_more(o, true);
            return;
        }
        reject(o, s->closed ? DSQ_CODE_RESOURCE_EXHAUSTED : DSQ_CODE_TIMEOUT,
               s->closed ? "the stream was cancelled: the client went away" : "the request was cancelled");
        return;
    }
    if (o->chunk_fn != NULL) {
        int rv = c->out.len > 0 ? o->chunk_fn(o->done_ud, o, c->out.data, c->out.len) : 0;
        if (rv > 0) { /* the sink calls dsq_dosql_stream_resume() */
            o->awaiting = true;
            return;
        }
        if (rv < 0 && c->more) {
            stream_more(o, true);
            return;
        }
        if (c->more) {
            stream_more(o, false);
            return;
        }
        stream_end(o);
        return;
    } else if (c->out.len > 0 && s->t.notify(s->t.ud, c->out.data, c->out.len) != 0) {
        if (c->more)
            stream_more(o, true);
        else
            reject(o, DSQ_CODE_RESOURCE_EXHAUSTED, "the stream was cancelled: the client went away");
        return;
    }
    if (c->more) {
        if (s->t.can_send == NULL || s->t.can_send(s->t.ud)) {
            stream_more(o, false);
        } else { /* wait for room: dsq_dosql_writable() */
            dsq_queue_push(&s->parked, &o->park_link);
        }
        return;
    }
    stream_end(o);
}

/* The last chunk is out: the stream's reply. */
static void stream_end(op *o)
{
    dsq_call *c = &o->call;
    dsq_dosql_session *s = o->s;
    if (c->err != 0) {
        reject(o, c->code, "%s", c->msg);
        return;
    }
    if (o->cancelled) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "the stream was cancelled by its callback");
        return;
    }
    dsq_buf b = DSQ_BUF_INIT;
    if (o->chunk_fn == NULL) {
        dsq_buf_printf(&b,
                       "{\"method\":\"stream.complete\",\"params\":{\"streamId\":%s,"
                       "\"rowCount\":%llu,\"chunks\":%llu,\"lsn\":%llu}}",
                       o->idtext, (unsigned long long)o->rows, (unsigned long long)o->chunks,
                       (unsigned long long)c->lsn);
        s->t.notify(s->t.ud, b.data, b.len);
        dsq_buf_reset(&b);
    }
    dsq_buf_printf(&b, "{\"rowCount\":%llu,\"chunks\":%llu,\"lsn\":", (unsigned long long)o->rows,
                   (unsigned long long)o->chunks);
    put_lsn(c, &b, c->lsn);
    dsq_buf_puts(&b, "}");
    answer_raw(o, b.data, b.len, &b);
    dsq_buf_free(&b);
    op_free(o);
}

static void on_done(dsq_call *c)
{
    op *o = c->ud;
    if (c->op == DSQ_OP_STREAM) {
        stream_done(o);
        return;
    }
    /* A transaction that began while its client went away: the close
     * looked for the session's transactions before this one was there. */
    if (c->op == DSQ_OP_BEGIN && c->err == 0 && o->s->closed)
        dsq_engine_session_closed(o->s->e, o->s->id);
    if (c->err != 0)
        answer_error_msg(o, c->code, c->msg);
    else if (c->out.data != NULL)
        answer_raw(o, c->out.data, c->out.len, &c->out);
    else
        answer_raw(o, "null", 4, NULL);
    op_free(o);
}

/* ---- the methods ----------------------------------------------------------------------- */

/* query's consistency ("primary" or "replica": may a follower copy
 * answer) and minLSN (a bookmark: answered once the copy has that commit). */
static int parse_consistency(op *o, json_t *p)
{
    json_t *c = json_object_get(p, "consistency"), *m = json_object_get(p, "minLSN");
    if (c != NULL && !json_is_null(c)) {
        const char *v = json_is_string(c) ? json_string_value(c) : "";
        if (strcmp(v, "primary") != 0 && strcmp(v, "replica") != 0) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"consistency\" must be \"primary\" or \"replica\"");
            return -1;
        }
        o->call.replica_ok = strcmp(v, "replica") == 0;
    }
    if (m != NULL && !json_is_null(m) && lsn_value(m, &o->call.min_lsn) != 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"minLSN\" must be an LSN (a whole number)");
        return -1;
    }
    return 0;
}

/* ---- keyspaces ---------------------------------------------------------------------------- */

/* The keyspace the call is on (a /v1/ks route's session, or a Cap'n Web
 * keyspace stub's call), or NULL. */
static const char *op_ks(const op *o)
{
    if (o->fixed_ks != NULL)
        return o->fixed_ks;
    return o->s->ks[0] ? o->s->ks : NULL;
}

static void ks_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    op *o = ud;
    (void)plan;
    if (err != 0) {
        answer_error_msg(o, code, msg);
    } else {
        dsq_buf b = {0};
        if (o->enc == DSQ_ENC_CAPNWEB)
            dsq_cw_result(&b, res);
        else
            dsq_json_result(&b, res);
        answer_buf(o, &b);
    }
    op_free(o);
}

/* The scopes the client holds on the session's keyspace; 0 after
 * refusing. Members a keyspace does not take yet are refused by name;
 * with `txn`, transactionId is taken (into o->call.txn). */
static unsigned ks_prelude_txn(op *o, json_t *p, bool txn)
{
    static const char *const not_yet[] = {"transactionId", "asOf", "consistency", "minLSN", "database", NULL};
    /* (A write on a keyspace spans shards, each with its own log: no one
     * transaction could hold its key's record.) */
    if (json_object_get(p, "idempotencyKey") != NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "idempotencyKey is not supported on keyspaces");
        return 0;
    }
    for (size_t i = txn ? 1 : 0; not_yet[i]; i++)
        if (json_object_get(p, not_yet[i]) != NULL) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"%s\" is not supported %son a keyspace", not_yet[i],
                   i == 0 ? "by this method " : "");
            return 0;
        }
    unsigned scope = o->s->t.scope(o->s->t.ud, op_ks(o));
    if (scope == 0) {
        reject(o, DSQ_CODE_FORBIDDEN, "the token does not grant access to keyspace '%s'", op_ks(o));
        return 0;
    }
    json_t *tx = txn ? json_object_get(p, "transactionId") : NULL;
    if (tx != NULL && !json_is_null(tx)) {
        size_t n = json_is_string(tx) ? json_string_length(tx) : 0;
        if (n == 0 || n >= sizeof o->call.txn) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"transactionId\" must be a transaction id string");
            return 0;
        }
        memcpy(o->call.txn, json_string_value(tx), n + 1);
    }
    return scope;
}

static unsigned ks_prelude(op *o, json_t *p) { return ks_prelude_txn(o, p, false); }

static void ks_query(op *o, json_t *p)
{
    unsigned scope = ks_prelude_txn(o, p, true);
    if (scope == 0 || parse_stmt(o, p, &o->stmt, "") != 0)
        return;
    if (o->call.txn[0])
        dsq_router_query_txn(o->s->router, op_ks(o), o->call.txn, &o->stmt, scope, o->call.budget, ks_done, o);
    else
        dsq_router_query(o->s->router, op_ks(o), &o->stmt, scope, o->call.budget, ks_done, o);
}

/* Answer the object begun in b with "lsn": 0 (a keyspace's: each shard
 * has its own log) and close it; o is freed. */
static void answer_zero_lsn(op *o, dsq_buf *b)
{
    dsq_buf_puts(b, "\"lsn\":");
    if (o->enc == DSQ_ENC_CAPNWEB)
        dsq_cw_bigint(b, 0);
    else
        dsq_buf_puts(b, "0");
    dsq_buf_puts(b, "}");
    answer_buf(o, b);
    op_free(o);
}

/* beginTransaction on a keyspace: the router's transaction, which takes
 * its shards as its statements reach them. */
static void ks_begin(op *o, json_t *p)
{
    dsq_dosql_session *s = o->s;
    unsigned scope = ks_prelude(o, p);
    if (scope == 0)
        return;
    json_t *mode = json_object_get(p, "mode"), *ro = json_object_get(p, "readOnly");
    if (mode != NULL && !json_is_null(mode) &&
        !(json_is_string(mode) && (strcmp(json_string_value(mode), "deferred") == 0 ||
                                   strcmp(json_string_value(mode), "immediate") == 0))) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"mode\" must be \"deferred\" or \"immediate\"");
        return;
    }
    if (ro != NULL && !json_is_null(ro) && !json_is_boolean(ro)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"readOnly\" must be a boolean");
        return;
    }
    if (json_is_true(ro)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "read-only transactions are not supported on a keyspace (its shards' "
                                            "snapshots would not be of one moment); read outside a transaction");
        return;
    }
    if (!(scope & DSQ_SCOPE_W)) {
        reject(o, DSQ_CODE_FORBIDDEN, "a transaction on a keyspace needs write scope; the token has read scope only");
        return;
    }
    uint64_t timeout = 0;
    if (opt_uint(o, p, "timeoutMs", 1, 86400000, &timeout) != 0)
        return;
    char id[33];
    dsq_code code = DSQ_CODE_UNKNOWN;
    char msg[300];
    dsq_router_begin(s->router, op_ks(o), scope, s->id, timeout, id, &code, msg, sizeof msg);
    if (id[0] == '\0') {
        reject(o, code, "%s", msg);
        return;
    }
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "{\"transactionId\":\"%s\",", id);
    answer_zero_lsn(o, &b);
}

static void ks_end_done(void *ud, int err, dsq_code code, const char *msg)
{
    op *o = ud;
    if (err != 0) {
        answer_error_msg(o, code, msg);
        op_free(o);
    } else {
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_puts(&b, "{");
        answer_zero_lsn(o, &b);
    }
}

static void ks_end(op *o, json_t *p, bool commit)
{
    if (ks_prelude_txn(o, p, true) == 0)
        return;
    if (o->call.txn[0] == '\0') {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"transactionId\" is required");
        return;
    }
    dsq_router_txn_end(o->s->router, op_ks(o), o->call.txn, commit, ks_end_done, o);
}

/* queryStream on a keyspace: the router's answer, then its rows as
 * stream.chunk notifications of chunkSize rows (the first with the
 * columns), stream.complete, and the reply — as a database's stream says
 * them (the rows are all at the router first: max_result_bytes bounds
 * them). */
/* A keyspace's stream to a chunk_fn (Cap'n Web's callback): its next
 * chunk, each waiting for the callback's answer (dsq_dosql_stream_resume),
 * then the answer. */
static void ks_stream_next(op *o, bool cancel)
{
    dsq_dosql_session *s = o->s;
    const dsq_result *res = &o->call.results[0];
    size_t per = o->call.chunk_rows ? o->call.chunk_rows : 1;
    for (;;) {
        if (cancel || s->closed) {
            reject(o, s->closed ? DSQ_CODE_RESOURCE_EXHAUSTED : DSQ_CODE_INVALID_REQUEST,
                   s->closed ? "the stream was cancelled: the client went away"
                             : "the stream was cancelled by its callback");
            return;
        }
        if (o->chunks > 0 && o->krow >= res->nrows)
            break;
        dsq_result part = *res;
        size_t start = o->kpos, k = 0;
        dsq_value v;
        for (; k < per && o->krow < res->nrows; k++, o->krow++)
            for (int c = 0; c < res->ncols; c++)
                dsq_result_next(res, &o->kpos, &v);
        part.rows.data = res->rows.data ? res->rows.data + start : NULL;
        part.rows.len = o->kpos - start;
        part.nrows = k;
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b, "{\"seq\":%llu,", (unsigned long long)o->chunks);
        if (o->chunks == 0) {
            dsq_cw_columns(&b, &part);
            dsq_buf_puts(&b, ",");
        }
        dsq_buf_puts(&b, "\"rows\":");
        dsq_cw_rows(&b, &part);
        dsq_buf_puts(&b, "}");
        o->chunks++;
        o->rows += k;
        int rv = b.data != NULL ? o->chunk_fn(o->done_ud, o, b.data, b.len) : -1;
        dsq_buf_free(&b);
        if (rv > 0) {
            o->awaiting = true;
            return;
        }
        cancel = rv < 0;
    }
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "{\"rowCount\":%llu,\"chunks\":%llu,\"lsn\":", (unsigned long long)o->rows,
                   (unsigned long long)o->chunks);
    dsq_cw_bigint(&b, (int64_t)res->lsn);
    dsq_buf_puts(&b, "}");
    answer_buf(o, &b);
    op_free(o);
}

static void ks_stream_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    op *o = ud;
    dsq_dosql_session *s = o->s;
    (void)plan;
    if (err != 0) {
        answer_error_msg(o, code, msg);
        op_free(o);
        return;
    }
    if (o->chunk_fn != NULL) { /* (the rows kept with the op, handed out chunk by chunk) */
        o->call.results = calloc(1, sizeof *o->call.results);
        if (o->call.results == NULL) {
            answer_error_msg(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            op_free(o);
            return;
        }
        o->call.results[0] = *res;
        memset(res, 0, sizeof *res);
        o->call.nresults = 1;
        o->ks_stream = true;
        ks_stream_next(o, false);
        return;
    }
    size_t per = o->call.chunk_rows ? o->call.chunk_rows : 1, pos = 0, row = 0;
    bool gone = s->closed;
    do {
        /* The next chunk: a view of its rows' bytes. */
        dsq_result part = *res;
        size_t start = pos, k = 0;
        dsq_value v;
        for (; k < per && row < res->nrows; k++, row++)
            for (int c = 0; c < res->ncols; c++)
                dsq_result_next(res, &pos, &v);
        part.rows.data = res->rows.data ? res->rows.data + start : NULL;
        part.rows.len = pos - start;
        part.nrows = k;
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b, "{\"method\":\"stream.chunk\",\"params\":{\"streamId\":%s,\"seq\":%llu,", o->idtext,
                       (unsigned long long)o->chunks);
        if (o->chunks == 0) {
            dsq_json_columns(&b, &part);
            dsq_buf_puts(&b, ",");
        }
        dsq_buf_puts(&b, "\"rows\":");
        dsq_json_rows(&b, &part);
        dsq_buf_puts(&b, "}}");
        if (!gone && (b.data == NULL || s->t.notify(s->t.ud, b.data, b.len) != 0))
            gone = true;
        dsq_buf_free(&b);
        o->chunks++;
        o->rows += k;
    } while (row < res->nrows && !gone);
    if (gone) {
        answer_error_msg(o, DSQ_CODE_RESOURCE_EXHAUSTED, "the stream was cancelled: the client went away");
        op_free(o);
        return;
    }
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b,
                   "{\"method\":\"stream.complete\",\"params\":{\"streamId\":%s,\"rowCount\":%llu,\"chunks\":%llu,"
                   "\"lsn\":%llu}}",
                   o->idtext, (unsigned long long)o->rows, (unsigned long long)o->chunks, (unsigned long long)res->lsn);
    if (b.data != NULL)
        s->t.notify(s->t.ud, b.data, b.len);
    dsq_buf_reset(&b);
    dsq_buf_printf(&b, "{\"rowCount\":%llu,\"chunks\":%llu,\"lsn\":%llu}", (unsigned long long)o->rows,
                   (unsigned long long)o->chunks, (unsigned long long)res->lsn);
    answer_buf(o, &b);
    op_free(o);
}

static void m_query(op *o, json_t *p)
{
    if (op_ks(o) != NULL) {
        ks_query(o, p);
        return;
    }
    if (prelude(o, p) != 0 || parse_consistency(o, p) != 0 || parse_idem_key(o, p) != 0 ||
        parse_stmt(o, p, &o->stmt, "") != 0)
        return;
    o->call.op = DSQ_OP_QUERY;
    o->call.stmts = &o->stmt;
    o->call.nstmts = 1;
    o->call.encode = enc_query;
    submit(o);
}

static void m_query_stream(op *o, json_t *p)
{
    dsq_dosql_session *s = o->s;
    json_t *id = NULL;
    if (o->rpc == NULL && o->chunk_fn == NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "queryStream needs a callback for its chunks");
        return;
    }
    if (o->rpc != NULL) {
        if (s->t.notify == NULL) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "queryStream is not available on this route");
            return;
        }
        if (s->t.http && dsq_rpc_call_in_batch(o->rpc)) {
            reject(o, DSQ_CODE_INVALID_REQUEST,
                   "over HTTP, queryStream must be a lone request, not part of a batch");
            return;
        }
        if ((id = dsq_rpc_call_id(o->rpc)) == NULL) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "queryStream needs an \"id\"");
            return;
        }
    }
    uint64_t chunk = s->lim.chunk_rows;
    if (op_ks(o) != NULL) {
        unsigned scope = ks_prelude(o, p);
        if (scope == 0 || parse_stmt(o, p, &o->stmt, "") != 0 ||
            opt_uint(o, p, "chunkSize", 1, s->lim.max_chunk_rows, &chunk) != 0)
            return;
        if (o->rpc != NULL && (o->idtext = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
            reject(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        o->call.chunk_rows = chunk;
        dsq_router_query_read(s->router, op_ks(o), &o->stmt, scope, o->call.budget, ks_stream_done, o);
        return;
    }
    if (prelude(o, p) != 0 || parse_stmt(o, p, &o->stmt, "") != 0 ||
        opt_uint(o, p, "chunkSize", 1, s->lim.max_chunk_rows, &chunk) != 0)
        return;
    if (id != NULL && (o->idtext = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
        reject(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    o->call.op = DSQ_OP_STREAM;
    o->call.stmts = &o->stmt;
    o->call.nstmts = 1;
    o->call.chunk_rows = chunk;
    o->call.chunk = enc_chunk;
    submit(o);
}

static void m_begin(op *o, json_t *p)
{
    if (op_ks(o) != NULL) {
        ks_begin(o, p);
        return;
    }
    if (prelude(o, p) != 0)
        return;
    json_t *mode = json_object_get(p, "mode");
    if (mode != NULL && !json_is_null(mode)) {
        const char *m = json_is_string(mode) ? json_string_value(mode) : "";
        if (strcmp(m, "immediate") == 0) {
            o->call.immediate = true;
        } else if (strcmp(m, "deferred") != 0) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"mode\" must be \"deferred\" or \"immediate\"");
            return;
        }
    }
    json_t *ro = json_object_get(p, "readOnly");
    if (ro != NULL && !json_is_null(ro)) {
        if (!json_is_boolean(ro)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"readOnly\" must be a boolean");
            return;
        }
        o->call.read_only = json_is_true(ro);
    }
    if (o->call.read_only && o->call.immediate) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "a read-only transaction cannot be \"immediate\"");
        return;
    }
    if (!o->call.read_only && !(o->call.scope & DSQ_SCOPE_W)) {
        reject(o, DSQ_CODE_FORBIDDEN,
               "a transaction that may write needs write scope; the token has read scope only "
               "(beginTransaction readOnly: true reads a snapshot)");
        return;
    }
    if (opt_uint(o, p, "timeoutMs", 1, 86400000, &o->call.txn_timeout_ms) != 0)
        return;
    o->call.op = DSQ_OP_BEGIN;
    o->call.encode = enc_begin;
    submit(o);
}

static void end_txn(op *o, json_t *p, dsq_op which)
{
    if (op_ks(o) != NULL) {
        ks_end(o, p, which == DSQ_OP_COMMIT);
        return;
    }
    if (prelude(o, p) != 0 || parse_idem_key(o, p) != 0)
        return;
    if (o->call.txn[0] == '\0') {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"transactionId\" is required");
        return;
    }
    o->call.op = which;
    o->call.encode = enc_end;
    submit(o);
}

static void m_commit(op *o, json_t *p) { end_txn(o, p, DSQ_OP_COMMIT); }
static void m_rollback(op *o, json_t *p) { end_txn(o, p, DSQ_OP_ROLLBACK); }

static void ks_batch_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *results, size_t n)
{
    op *o = ud;
    if (err != 0) {
        answer_error_msg(o, code, msg);
    } else {
        dsq_buf b = {0};
        put_batch(&b, o->enc == DSQ_ENC_CAPNWEB, results, n, 0);
        answer_buf(o, &b);
    }
    op_free(o);
}

static void m_batch(op *o, json_t *p)
{
    unsigned kscope = 0;
    if (op_ks(o) != NULL) {
        if ((kscope = ks_prelude_txn(o, p, true)) == 0)
            return;
    } else if (prelude(o, p) != 0) {
        return;
    }
    json_t *list = json_object_get(p, "statements");
    if (!json_is_array(list)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"statements\" must be an array");
        return;
    }
    size_t n = json_array_size(list);
    if (n == 0 || n > o->s->lim.max_batch) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"statements\" must hold 1 to %zu statements, not %zu",
               o->s->lim.max_batch, n);
        return;
    }
    json_t *atomic = json_object_get(p, "atomic");
    if (atomic != NULL && !json_is_null(atomic)) {
        if (!json_is_boolean(atomic)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "\"atomic\" must be true or false");
            return;
        }
        o->call.atomic = json_is_true(atomic);
    }
    if (op_ks(o) == NULL && parse_idem_key(o, p) != 0)
        return;
    if (o->call.idem_key != NULL && !o->call.atomic) {
        reject(o, DSQ_CODE_INVALID_REQUEST,
               "idempotencyKey needs an atomic batch (atomic: false commits each statement on its own)");
        return;
    }
    dsq_stmt_req *st = dsq_arena_alloc(&o->arena, n * sizeof *st);
    if (st == NULL) {
        reject(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char where[48];
        json_t *item = json_array_get(list, i);
        snprintf(where, sizeof where, "statements[%zu]: ", i);
        if (!json_is_object(item)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "%smust be an object {sql, params?}", where);
            return;
        }
        static const char *const stmt_fields[] = {"sql", "params", NULL};
        char what[48];
        snprintf(what, sizeof what, "batch statements[%zu]", i);
        if (check_fields(o, item, stmt_fields, what) != 0 || parse_stmt(o, item, &st[i], where) != 0)
            return;
    }
    if (op_ks(o) != NULL && o->call.txn[0]) {
        dsq_router_batch_txn(o->s->router, op_ks(o), o->call.txn, st, n, o->call.atomic, kscope, o->call.budget,
                             ks_batch_done, o);
        return;
    }
    if (op_ks(o) != NULL) {
        dsq_router_batch(o->s->router, op_ks(o), st, n, o->call.atomic, kscope, o->call.budget, ks_batch_done, o);
        return;
    }
    o->call.op = DSQ_OP_BATCH;
    o->call.stmts = st;
    o->call.nstmts = n;
    o->call.encode = enc_batch;
    submit(o);
}

static void simple(op *o, json_t *p, dsq_op which)
{
    if (prelude(o, p) != 0)
        return;
    o->call.op = which;
    o->call.encode = enc_doc;
    submit(o);
}

static void m_schema(op *o, json_t *p)
{
    if (op_ks(o) != NULL) {
        unsigned scope = ks_prelude(o, p);
        if (scope == 0)
            return;
        if (!dsq_router_first_shard(o->s->router, op_ks(o), o->db, sizeof o->db)) {
            reject(o, DSQ_CODE_INVALID_REQUEST, "no keyspace '%s' in the VSchema", op_ks(o));
            return;
        }
        o->call.scope = scope;
        o->call.op = DSQ_OP_SCHEMA;
        o->call.encode = enc_doc;
        o->call.done = on_done;
        /* (its first shard's, wherever that one's primary is) */
        if (dsq_router_submit(o->s->router, o->db, &o->call) != 0)
            reject(o, o->call.code, "%s", o->call.msg);
        return;
    }
    simple(o, p, DSQ_OP_SCHEMA);
}

/* Without a database (an unbound route, no "database", and not a call
 * made on a database, as Cap'n Web's are): the server's own ping and
 * stats. */
static bool server_level(op *o, json_t *p)
{
    return o->fixed_db == NULL && o->s->db[0] == '\0' && (json_object_get(p, "database") == NULL || op_ks(o) != NULL);
}

static void m_ping(op *o, json_t *p)
{
    /* A transaction is a database's: with one, "database" is needed. */
    if (!server_level(o, p) || json_object_get(p, "transactionId") != NULL) {
        simple(o, p, DSQ_OP_PING);
        return;
    }
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"pong\":true,\"time\":%llu,\"version\":\"%s\"}",
                     (unsigned long long)dsq_wall_ms(), DSQ_VERSION);
    answer_raw(o, buf, (size_t)n, NULL);
    op_free(o);
}

static void m_stats(op *o, json_t *p)
{
    if (!server_level(o, p)) {
        simple(o, p, DSQ_OP_STATS);
        return;
    }
    dsq_engine_stats st;
    dsq_engine_stats_get(o->s->e, &st);
    json_t *srv = dsq_doc_server_stats(&st);
    json_t *doc = srv ? json_pack("{s:o}", "server", srv) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text != NULL)
        answer_raw(o, text, strlen(text), NULL);
    else
        answer_error_msg(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
    free(text);
    op_free(o);
}

/* ---- CDC subscriptions -------------------------------------------------------------------- */

/* One subscribeCDC of a session: the subscription, and until it is
 * established the request to answer. */
typedef struct csub {
    dsq_dosql_session *s;
    char id[24];
    char db[129];           /* its database */
    int enc;
    unsigned ops;
    dsq_buf out;            /* notifications gathered: "[" n1 "," n2 ... */
    size_t nout;
    bool gathering;         /* the batch `key`, whole so far: keep its message */
    dsq_cdc_batch_key key;
    dsq_cdcsub *sub;
    op *pending;
    struct csub *next;
} csub;

static void csub_remove(csub *c)
{
    for (csub **pp = &c->s->subs; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    dsq_cdcsub_stop(c->sub);
    dsq_buf_free(&c->out);
    free(c);
}

static void csub_started(void *ud, int err, dsq_code code, const char *msg)
{
    csub *c = ud;
    op *o = c->pending;
    c->pending = NULL;
    if (err != 0) {
        c->sub = NULL; /* it stopped itself */
        for (csub **pp = &c->s->subs; *pp; pp = &(*pp)->next) {
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        }
        free(c);
        reject(o, code, "%s", msg);
        return;
    }
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"subscriptionId\":\"%s\"}", c->id);
    answer_raw(o, buf, (size_t)n, NULL);
    op_free(o);
}

/* Send the notifications gathered: one alone as itself, several as one
 * JSON-RPC batch (an array), one WebSocket message either way. */
/* A notification sent alike to many sessions: through the transport's
 * notify_alt, which makes its other form once, when it has one. */
static int notify_alt(dsq_dosql_session *s, const char *p, size_t n, dsq_alt *alt)
{
    if (alt != NULL && s->t.notify_alt != NULL)
        return s->t.notify_alt(s->t.ud, p, n, alt);
    return s->t.notify(s->t.ud, p, n);
}

static void csub_flush(void *ud)
{
    csub *c = ud;
    dsq_dosql_session *s = c->s;
    bool keep = c->gathering;
    c->gathering = false;
    if (c->nout == 0) {
        if (keep)
            dsq_cdc_batch_keep(s->cdc, &c->key, NULL, 0); /* a batch without events for it */
        return;
    }
    dsq_buf_puts(&c->out, "]");
    const char *p = c->out.data;
    size_t n = c->out.len;
    if (c->nout == 1) {
        p++;
        n -= 2;
    }
    dsq_alt *alt = keep && p != NULL ? dsq_cdc_batch_keep(s->cdc, &c->key, p, n) : NULL;
    if (p != NULL && !s->closed)
        notify_alt(s, p, n, alt);
    dsq_buf_reset(&c->out);
    c->nout = 0;
}

static int csub_batch(void *ud, const char *db, uint64_t epoch, uint64_t after, uint64_t upto)
{
    csub *c = ud;
    c->gathering = false;
    if (db == NULL)
        return 0;
    dsq_cdc_batch_key k = {.epoch = epoch, .after = after, .upto = upto, .enc = c->enc, .ops = c->ops};
    dsq_strlcpy(k.db, db, sizeof k.db);
    snprintf(k.tag, sizeof k.tag, "rpc %s", c->id);
    dsq_alt *alt;
    const dsq_buf *m = dsq_cdc_batch_find(c->s->cdc, &k, &alt);
    if (m != NULL) {
        if (m->len > 0 && !c->s->closed)
            notify_alt(c->s, m->data, m->len, alt);
        return 1;
    }
    if (c->nout == 0) { /* nothing of an earlier batch in the message */
        c->key = k;
        c->gathering = true;
    }
    return 0;
}

/* An event as a "cdc" notification: its members after the subscription's
 * id. Gathered until the batch ends (csub_flush), 256 KiB at most. */
static int csub_event(void *ud, const char *text, size_t len, uint64_t lsn, bool last)
{
    (void)lsn;
    (void)last;
    csub *c = ud;
    dsq_dosql_session *s = c->s;
    if (s->closed || len < 2)
        return -1;
    dsq_buf *b = &c->out;
    dsq_buf_puts(b, c->nout ? ",{\"method\":\"cdc\",\"params\":{\"subscriptionId\":\""
                            : "[{\"method\":\"cdc\",\"params\":{\"subscriptionId\":\"");
    dsq_buf_puts(b, c->id);
    dsq_buf_puts(b, "\",");
    dsq_buf_append(b, text + 1, len - 1);
    dsq_buf_puts(b, "}");
    if (b->data == NULL)
        return -1;
    c->nout++;
    if (b->len >= (256u << 10)) {
        c->gathering = false; /* the batch takes more than one message */
        csub_flush(c);
    }
    return 0;
}

static bool csub_can_send(void *ud)
{
    csub *c = ud;
    return c->s->t.can_send == NULL || c->s->t.can_send(c->s->t.ud);
}

static void csub_ended(void *ud, dsq_code code, const char *msg, uint64_t last_lsn)
{
    csub *c = ud;
    dsq_dosql_session *s = c->s;
    c->gathering = false; /* what it gathered may not be the whole batch */
    csub_flush(c); /* what it delivered goes first */
    if (!s->closed) {
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b,
                       "{\"method\":\"cdc.end\",\"params\":{\"subscriptionId\":\"%s\",\"lastLsn\":%llu,"
                       "\"error\":{\"code\":\"%s\",\"message\":",
                       c->id, (unsigned long long)last_lsn, dsq_code_name(code));
        dsq_json_string(&b, msg, strlen(msg));
        dsq_buf_puts(&b, "}}}");
        if (b.data)
            s->t.notify(s->t.ud, b.data, b.len);
        dsq_buf_free(&b);
    }
    csub_remove(c);
}

static void ks_subscribe_cdc(op *o, json_t *p);
typedef struct kcsub kcsub;
static void kcsub_free(kcsub *k);

static void m_subscribe_cdc(op *o, json_t *p)
{
    dsq_dosql_session *s = o->s;
    if (o->rpc == NULL) {
        /* Cap'n Web runs its own (capnweb.c: with the client's callback). */
        reject(o, DSQ_CODE_INVALID_REQUEST, "subscribeCDC needs a WebSocket or a callback");
        return;
    }
    if (s->t.notify == NULL || s->t.http) {
        reject(o, DSQ_CODE_INVALID_REQUEST,
               "subscribeCDC needs a WebSocket connection; over HTTP, GET /v1/db/{db}/cdc streams "
               "Server-Sent Events");
        return;
    }
    if (s->ks[0]) {
        if (ks_prelude(o, p) == 0)
            return;
        char away[400];
        if (s->rem == NULL && !dsq_router_shards_here(s->router, s->ks, away, sizeof away)) {
            reject(o, DSQ_CODE_NOT_PRIMARY, "%s", away);
            return;
        }
        ks_subscribe_cdc(o, p);
        return;
    }
    if (json_object_get(p, "fromPosition") != NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"fromPosition\" is a keyspace's (a database's stream resumes from "
                                            "\"fromLSN\")");
        return;
    }
    if (prelude(o, p) != 0)
        return;
    if (!(o->call.scope & DSQ_SCOPE_R)) {
        reject(o, DSQ_CODE_FORBIDDEN, "subscribing needs read scope on database '%s'", o->db);
        return;
    }
    dsq_cdcsub_req req = {.db = o->db, .enc = o->enc, .session = s->id};
    const char *tables[1000];
    char why[200];
    if (dsq_cdcsub_parse(p, &req, tables, sizeof tables / sizeof tables[0], why, sizeof why) != 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "%s", why);
        return;
    }
    csub *c = calloc(1, sizeof *c);
    if (c == NULL) {
        reject(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    c->s = s;
    c->pending = o;
    memcpy(c->db, o->db, sizeof c->db);
    c->enc = (int)o->enc;
    c->ops = req.ops;
    snprintf(c->id, sizeof c->id, "%llu", (unsigned long long)++s->next_sub);
    c->next = s->subs;
    s->subs = c;
    dsq_cdcsub_sink sink = {
        .started = csub_started,
        .event = csub_event,
        .can_send = csub_can_send,
        .flush = csub_flush,
        .ended = csub_ended,
        .ud = c,
        .batch = csub_batch,
    };
    dsq_code code;
    char msg[600];
    c->sub = dsq_cdcsub_start(s->e, s->cdc, &req, &sink, &code, msg, sizeof msg);
    if (c->sub == NULL) {
        s->subs = c->next;
        free(c);
        reject(o, code, "%s", msg);
    }
}

/* ---- CDC of a keyspace: one subscription per shard, one stream ---- */

/* subscribeCDC on a keyspace: every shard's changes in one stream. Each
 * event names its shard; the last event of each commit carries the
 * position — every shard's last commit delivered whole — which, given
 * back as fromPosition, resumes the stream after it (Vitess's VGTID). */
typedef struct kpart {
    struct kcsub *k;
    size_t shard;
    dsq_cdcsub *sub;         /* its subscription here, or */
    void *rsub;              /* on another node (k->s->rem's) */
    uint64_t lsn;            /* its last commit delivered whole */
    bool started;
} kpart;

struct kcsub {
    dsq_dosql_session *s;
    char id[24];
    int enc;
    char (*shards)[129];
    size_t n;
    kpart *parts;
    size_t nstarted;
    bool failed;
    op *pending;             /* the subscribe to answer: no event goes out before it */
    const dsq_dosql_kcdc_sink *cb; /* or, Cap'n Web's: events to its sink (the owner's) */
    bool waiting;            /* (with cb) its started() not called yet */
    bool starting;           /* its parts are being started (kcsub_new) */
    dsq_code fail_code;      /* failed: the first part's failure */
    char fail_msg[700];
    int busy;                /* inside dsq_dosql_writable's loop over its parts */
    bool dead;               /* ended while busy: freed once the loop lets go */
    dsq_buf out;             /* notifications gathered */
    size_t nout;
    struct kcsub *next;
};

/* A part's subscription, wherever it runs. */
static bool kp_live(const kpart *p) { return p->sub != NULL || p->rsub != NULL; }

static void kp_stop(kpart *p)
{
    if (p->sub != NULL)
        dsq_cdcsub_stop(p->sub);
    else if (p->rsub != NULL)
        p->k->s->rem->stop(p->rsub);
    p->sub = NULL;
    p->rsub = NULL;
}

static void kp_writable(kpart *p)
{
    if (p->sub != NULL)
        dsq_cdcsub_writable(p->sub);
    else if (p->rsub != NULL)
        p->k->s->rem->writable(p->rsub);
}

static uint64_t kp_lsn(const kpart *p)
{
    return p->sub != NULL ? dsq_cdcsub_lsn(p->sub) : p->rsub != NULL ? p->k->s->rem->lsn(p->rsub) : p->lsn;
}

static void kcsub_free(kcsub *k)
{
    if (k->busy > 0) { /* (its parts are being walked: stop them, free it after) */
        for (size_t i = 0; i < k->n; i++)
            kp_stop(&k->parts[i]);
        k->dead = true;
        for (kcsub **pp = &k->s->ksubs; *pp; pp = &(*pp)->next) /* (out of the session's list now) */
            if (*pp == k) {
                *pp = k->next;
                break;
            }
        return;
    }
    for (kcsub **pp = &k->s->ksubs; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    for (size_t i = 0; i < k->n; i++)
        kp_stop(&k->parts[i]);
    dsq_buf_free(&k->out);
    free(k->parts);
    free(k->shards);
    free(k);
}

static void kcsub_position(kcsub *k, dsq_buf *b)
{
    dsq_buf_puts(b, "{");
    for (size_t i = 0; i < k->n; i++) {
        if (i)
            dsq_buf_puts(b, ",");
        dsq_json_string(b, k->shards[i], strlen(k->shards[i]));
        dsq_buf_puts(b, ":");
        if (k->enc == DSQ_ENC_CAPNWEB)
            dsq_cw_bigint(b, (int64_t)k->parts[i].lsn);
        else
            dsq_buf_put_u64(b, k->parts[i].lsn);
    }
    dsq_buf_puts(b, "}");
}

static void kpart_flush(void *ud);

static void kcsub_complete(kcsub *k);

static void kpart_started(void *ud, int err, dsq_code code, const char *msg)
{
    kpart *p = ud;
    kcsub *k = p->k;
    if (err != 0) {
        p->sub = NULL; /* it stopped itself */
        p->rsub = NULL;
        if (!k->failed) {
            k->failed = true;
            k->fail_code = code;
            snprintf(k->fail_msg, sizeof k->fail_msg, "shard '%s': %s", k->shards[p->shard], msg);
            if (k->pending != NULL) { /* (answered at once: the others answer in their time) */
                op *o = k->pending;
                k->pending = NULL;
                reject(o, code, "%s", k->fail_msg);
            }
        }
    } else {
        p->started = true;
        p->lsn = kp_lsn(p); /* where it starts (without a position: the durable end) */
    }
    if (++k->nstarted < k->n || k->starting)
        return;
    kcsub_complete(k);
}

/* Every part answered: the subscribe is answered (or failed) and what the
 * parts gathered meanwhile goes out. */
static void kcsub_complete(kcsub *k)
{
    if (k->failed) {
        if (k->cb != NULL && k->waiting) {
            k->waiting = false;
            k->cb->started(k->cb->ud, -1, k->fail_code, k->fail_msg);
        }
        kcsub_free(k);
        return;
    }
    k->busy++;
    if (k->cb != NULL) {
        k->waiting = false;
        k->cb->started(k->cb->ud, 0, DSQ_CODE_UNKNOWN, NULL);
    } else {
        op *o = k->pending;
        k->pending = NULL;
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b, "{\"subscriptionId\":\"%s\",\"position\":", k->id);
        kcsub_position(k, &b);
        dsq_buf_puts(&b, "}");
        answer_buf(o, &b);
        op_free(o);
        kpart_flush(&k->parts[0]);
    }
    /* What the parts held back. */
    for (size_t i = 0; !k->dead && i < k->n; i++)
        kp_writable(&k->parts[i]);
    k->busy--;
    if (k->dead)
        kcsub_free(k);
}

static void kpart_flush(void *ud)
{
    kcsub *k = ((kpart *)ud)->k;
    dsq_dosql_session *s = k->s;
    if (k->nout == 0 || k->pending != NULL || k->cb != NULL)
        return; /* (held until the subscribe is answered; a callback's go one by one) */
    dsq_buf_puts(&k->out, "]");
    const char *p = k->out.data;
    size_t n = k->out.len;
    if (k->nout == 1) {
        p++;
        n -= 2;
    }
    if (p != NULL && !s->closed)
        s->t.notify(s->t.ud, p, n);
    dsq_buf_reset(&k->out);
    k->nout = 0;
}

static int kpart_event(void *ud, const char *text, size_t len, uint64_t lsn, bool last)
{
    kpart *p = ud;
    kcsub *k = p->k;
    dsq_dosql_session *s = k->s;
    if (s->closed || len < 2 || k->failed || k->dead)
        return -1; /* (nothing after a refusal) */
    if (k->cb != NULL) { /* one object: the shard, the event's members, the position at a commit's end */
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_puts(&b, "{\"shard\":");
        dsq_json_string(&b, k->shards[p->shard], strlen(k->shards[p->shard]));
        dsq_buf_puts(&b, ",");
        dsq_buf_append(&b, text + 1, len - 2);
        if (last) {
            p->lsn = lsn;
            dsq_buf_puts(&b, ",\"position\":");
            kcsub_position(k, &b);
        }
        dsq_buf_puts(&b, "}");
        int rc = b.data != NULL ? k->cb->event(k->cb->ud, b.data, b.len) : -1;
        dsq_buf_free(&b);
        return rc;
    }
    /* Before the subscribe's answer (a part's first read comes with its
     * start): gathered, sent after it. */
    dsq_buf *b = &k->out;
    dsq_buf_puts(b, k->nout ? ",{\"method\":\"cdc\",\"params\":{\"subscriptionId\":\""
                            : "[{\"method\":\"cdc\",\"params\":{\"subscriptionId\":\"");
    dsq_buf_puts(b, k->id);
    dsq_buf_puts(b, "\",\"shard\":");
    dsq_json_string(b, k->shards[p->shard], strlen(k->shards[p->shard]));
    dsq_buf_puts(b, ",");
    dsq_buf_append(b, text + 1, len - 2); /* the event's members */
    if (last) {
        p->lsn = lsn;
        dsq_buf_puts(b, ",\"position\":");
        kcsub_position(k, b);
    }
    dsq_buf_puts(b, "}}");
    if (b->data == NULL)
        return -1;
    k->nout++;
    if (b->len >= (256u << 10) && k->pending == NULL)
        kpart_flush(p);
    return 0;
}

static bool kpart_can_send(void *ud)
{
    kcsub *k = ((kpart *)ud)->k;
    dsq_dosql_session *s = k->s;
    if (k->pending != NULL || k->waiting || k->failed || k->dead)
        return false; /* (held until every part started: kpart_started wakes them) */
    if (k->cb != NULL)
        return !s->closed && k->cb->can_send(k->cb->ud);
    return !s->closed && (s->t.can_send == NULL || s->t.can_send(s->t.ud));
}

static void kpart_ended(void *ud, dsq_code code, const char *msg, uint64_t last_lsn)
{
    kpart *p = ud;
    kcsub *k = p->k;
    dsq_dosql_session *s = k->s;
    (void)last_lsn;
    if (k->failed) { /* refused already: it goes once its last part answers, saying nothing more */
        p->sub = NULL;
        p->rsub = NULL;
        return;
    }
    kpart_flush(p);
    p->sub = NULL; /* it stopped itself */
    p->rsub = NULL;
    if (k->pending != NULL) { /* not answered yet: the subscribe fails */
        op *o = k->pending;
        k->pending = NULL;
        k->failed = true;
        reject(o, code, "shard '%s': %s", k->shards[p->shard], msg);
        k->nstarted = k->n; /* (the others are stopped with it: none will answer) */
        kcsub_free(k);
        return;
    }
    if (k->cb != NULL) {
        for (size_t i = 0; i < k->n; i++)
            kp_stop(&k->parts[i]); /* the stream is whole or not at all */
        k->failed = true;
        char m[800];
        snprintf(m, sizeof m, "shard '%s': %s", k->shards[p->shard], msg);
        if (k->waiting) { /* (not all started yet: the others are stopped, none will answer) */
            k->waiting = false;
            k->cb->started(k->cb->ud, -1, code, m);
            k->nstarted = k->n;
            kcsub_free(k);
            return;
        }
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_puts(&b, "{\"end\":true,\"shard\":");
        dsq_json_string(&b, k->shards[p->shard], strlen(k->shards[p->shard]));
        dsq_buf_puts(&b, ",\"position\":");
        kcsub_position(k, &b);
        dsq_buf_printf(&b, ",\"error\":{\"code\":\"%s\",\"message\":", dsq_code_name(code));
        dsq_json_string(&b, msg, strlen(msg));
        dsq_buf_puts(&b, "}}");
        if (b.data != NULL)
            k->cb->ended(k->cb->ud, b.data, b.len);
        dsq_buf_free(&b);
        kcsub_free(k); /* (not its owner's after ended()) */
        return;
    }
    if (!s->closed) {
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b, "{\"method\":\"cdc.end\",\"params\":{\"subscriptionId\":\"%s\",\"shard\":", k->id);
        dsq_json_string(&b, k->shards[p->shard], strlen(k->shards[p->shard]));
        dsq_buf_puts(&b, ",\"position\":");
        kcsub_position(k, &b);
        dsq_buf_printf(&b, ",\"error\":{\"code\":\"%s\",\"message\":", dsq_code_name(code));
        dsq_json_string(&b, msg, strlen(msg));
        dsq_buf_puts(&b, "}}}");
        if (b.data)
            s->t.notify(s->t.ud, b.data, b.len);
        dsq_buf_free(&b);
    }
    kcsub_free(k); /* the stream is whole or not at all */
}

/* A keyspace's CDC subscription on session s (keyspace ks, request p:
 * fromPosition?, tables?, operations?, in encoding enc), its parts
 * started (each answers kpart_started later). NULL with the refusal. */
static kcsub *kcsub_new(dsq_dosql_session *s, const char *ks, json_t *p, int enc, op *pending,
                        const dsq_dosql_kcdc_sink *cb, dsq_code *code, char *msg, size_t msglen)
{
    json_t *from = json_object_get(p, "fromPosition");
    *code = DSQ_CODE_INVALID_REQUEST;
    if (json_object_get(p, "fromLSN") != NULL) {
        snprintf(msg, msglen, "a keyspace's stream resumes from \"fromPosition\" (an object: each shard's LSN), "
                              "not \"fromLSN\"");
        return NULL;
    }
    if (from != NULL && !json_is_object(from)) {
        snprintf(msg, msglen, "\"fromPosition\" must be an object: each shard's LSN");
        return NULL;
    }
    json_t *q = json_deep_copy(p);
    if (q == NULL) {
        *code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    json_object_del(q, "fromPosition");
    dsq_cdcsub_req req = {.enc = (dsq_dosql_enc)enc, .session = s->id};
    const char *tables[1000];
    char why[200];
    if (dsq_cdcsub_parse(q, &req, tables, sizeof tables / sizeof tables[0], why, sizeof why) != 0) {
        json_decref(q);
        snprintf(msg, msglen, "%s", why);
        return NULL;
    }
    kcsub *k = calloc(1, sizeof *k);
    if (k != NULL)
        k->shards = dsq_router_shards(s->router, ks, &k->n);
    if (k == NULL || k->shards == NULL || (k->parts = calloc(k->n, sizeof *k->parts)) == NULL) {
        if (k)
            free(k->shards);
        free(k);
        json_decref(q);
        snprintf(msg, msglen, "no keyspace '%s' in the VSchema", ks);
        return NULL;
    }
    /* Every shard named in the position is the keyspace's. */
    const char *key;
    json_t *v;
    json_object_foreach(from, key, v) {
        bool known = false;
        for (size_t i = 0; i < k->n && !known; i++)
            known = strcmp(k->shards[i], key) == 0;
        uint64_t lsn;
        if (!known || lsn_value(v, &lsn) != 0) {
            snprintf(msg, msglen,
                     known ? "\"fromPosition\": shard '%.128s' needs an LSN (a whole number)"
                           : "\"fromPosition\": '%.128s' is no shard of this keyspace",
                     key);
            free(k->parts);
            free(k->shards);
            free(k);
            json_decref(q);
            return NULL;
        }
    }
    k->s = s;
    k->enc = enc;
    snprintf(k->id, sizeof k->id, "%llu", (unsigned long long)++s->next_sub);
    k->next = s->ksubs;
    s->ksubs = k;
    k->pending = pending;
    k->cb = cb;
    k->waiting = cb != NULL;
    k->starting = true; /* (parts that answer while they start are counted; the rest waits for the loop's end) */
    dsq_cdcsub_sink sink = {
        .started = kpart_started,
        .event = kpart_event,
        .can_send = kpart_can_send,
        .flush = kpart_flush,
        .ended = kpart_ended,
    };
    size_t n = k->n;
    for (size_t i = 0; i < n; i++) {
        kpart *pt = &k->parts[i];
        pt->k = k;
        pt->shard = i;
        req.db = k->shards[i];
        json_t *l = from ? json_object_get(from, k->shards[i]) : NULL;
        req.has_from = from != NULL; /* a position: from its LSN (a shard it lacks: from the start) */
        req.from = 0;
        if (l != NULL)
            lsn_value(l, &req.from);
        pt->lsn = req.from;
        sink.ud = pt;
        dsq_code c2;
        char m2[600];
        int where = s->rem != NULL ? s->rem->start(s->rem->ud, &req, &sink, &pt->rsub, &c2, m2, sizeof m2) : 1;
        if (where == 1)
            pt->sub = dsq_cdcsub_start(s->e, s->cdc, &req, &sink, &c2, m2, sizeof m2);
        if (!kp_live(pt)) /* not started: it counts as failed */
            kpart_started(pt, -1, c2, m2);
    }
    json_decref(q);
    k->starting = false;
    if (k->nstarted < k->n)
        return k; /* (the rest answer later) */
    if (k->failed && cb != NULL) { /* every part refused at once: so is the subscription (no sink call) */
        *code = k->fail_code;
        snprintf(msg, msglen, "%s", k->fail_msg);
        k->waiting = false;
        kcsub_free(k);
        return NULL;
    }
    bool failed = k->failed;
    kcsub_complete(k); /* (failed: its op answered already, and k freed) */
    if (failed)
        *code = DSQ_CODE_UNKNOWN;
    return failed ? NULL : k;
}

static void ks_subscribe_cdc(op *o, json_t *p)
{
    dsq_code code;
    char msg[700];
    /* (code UNKNOWN: the parts' refusal answered o already) */
    if (kcsub_new(o->s, o->s->ks, p, (int)o->enc, o, NULL, &code, msg, sizeof msg) == NULL &&
        code != DSQ_CODE_UNKNOWN)
        reject(o, code, "%s", msg);
}

struct kcsub *dsq_dosql_ks_subscribe(dsq_dosql_session *s, const char *ks, json_t *req,
                                     const dsq_dosql_kcdc_sink *sink, dsq_code *code, char *msg, size_t msglen)
{
    json_t *empty = req == NULL ? json_object() : NULL;
    kcsub *k = kcsub_new(s, ks, req != NULL ? req : empty, DSQ_ENC_CAPNWEB, NULL, sink, code, msg, msglen);
    json_decref(empty);
    return k;
}

void dsq_dosql_ks_writable(struct kcsub *k)
{
    k->busy++;
    for (size_t i = 0; !k->dead && !k->waiting && i < k->n; i++)
        kp_writable(&k->parts[i]);
    k->busy--;
    if (k->dead)
        kcsub_free(k);
}

void dsq_dosql_ks_unsubscribe(struct kcsub *k, dsq_buf *position)
{
    if (position != NULL)
        kcsub_position(k, position);
    k->cb = NULL; /* (no sink call from here on) */
    kcsub_free(k);
}

static void m_unsubscribe_cdc(op *o, json_t *p)
{
    json_t *id = json_object_get(p, "subscriptionId");
    if (!json_is_string(id)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "\"subscriptionId\" (a string) is required");
        return;
    }
    json_t *d = json_object_get(p, "database");
    for (kcsub *k = o->s->ksubs; k; k = k->next) {
        if (strcmp(k->id, json_string_value(id)) == 0 && k->pending == NULL && !k->failed && !k->dead) {
            dsq_buf b = DSQ_BUF_INIT;
            dsq_buf_puts(&b, "{\"unsubscribed\":true,\"position\":");
            kcsub_position(k, &b);
            dsq_buf_puts(&b, "}");
            kcsub_free(k);
            answer_buf(o, &b);
            op_free(o);
            return;
        }
    }
    for (csub *c = o->s->subs; c; c = c->next) {
        if (strcmp(c->id, json_string_value(id)) == 0 && c->pending == NULL) {
            if (d != NULL && !(json_is_string(d) && strcmp(json_string_value(d), c->db) == 0)) {
                reject(o, DSQ_CODE_INVALID_REQUEST,
                       "\"database\" differs from subscription %s's database '%s'", c->id, c->db);
                return;
            }
            uint64_t lsn = dsq_cdcsub_lsn(c->sub);
            csub_remove(c);
            char buf[96];
            int n = snprintf(buf, sizeof buf, "{\"unsubscribed\":true,\"lastLsn\":%llu}",
                             (unsigned long long)lsn);
            answer_raw(o, buf, (size_t)n, NULL);
            op_free(o);
            return;
        }
    }
    reject(o, DSQ_CODE_SUBSCRIPTION_ERROR, "no subscription '%.40s' on this connection",
           json_string_value(id));
}

/* ---- entry points ------------------------------------------------------------------------ */

/* applyVSchema {vschema} (admin): the VSchema in force from now on;
 * answers {"version"}. getVSchema: {"version", "vschema"} (null: none). */
static bool vschema_prelude(op *o, json_t *p, bool admin)
{
    if (o->s->router == NULL || o->s->db[0] || op_ks(o) != NULL || o->fixed_db != NULL ||
        json_object_get(p, "database") != NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "the VSchema is the server's: call this on /v1/rpc, without \"database\"");
        return false;
    }
    unsigned scope = o->s->t.scope(o->s->t.ud, NULL);
    if ((scope & (admin ? DSQ_SCOPE_A : DSQ_SCOPE_R)) == 0) {
        reject(o, DSQ_CODE_FORBIDDEN, "%s needs a token with the %s scope", admin ? "applyVSchema" : "getVSchema",
               admin ? "admin" : "read");
        return false;
    }
    return true;
}

static void m_apply_vschema(op *o, json_t *p)
{
    if (!vschema_prelude(o, p, true))
        return;
    json_t *v = json_object_get(p, "vschema");
    if (!json_is_object(v)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "applyVSchema needs \"vschema\": an object {\"keyspaces\": {...}}");
        return;
    }
    char *text = json_dumps(v, JSON_COMPACT);
    char err[512];
    uint64_t version = 0;
    int rc = text ? dsq_router_apply(o->s->router, text, strlen(text), &version, err, sizeof err) : -1;
    free(text);
    if (rc != 0) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "invalid VSchema: %s", text ? err : "out of memory");
        return;
    }
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"version\":%llu}", (unsigned long long)version);
    answer_raw(o, buf, (size_t)n, NULL);
    op_free(o);
}

static void m_get_vschema(op *o, json_t *p)
{
    if (!vschema_prelude(o, p, false))
        return;
    uint64_t version;
    char *text = dsq_router_get(o->s->router, &version);
    dsq_buf b = {0};
    dsq_buf_printf(&b, "{\"version\":%llu,\"vschema\":%s}", (unsigned long long)version, text ? text : "null");
    free(text);
    answer_buf(o, &b);
    op_free(o);
}

/* The DoSQL methods and the members each one's request object takes
 * (DESIGN 3.3, docs/protocol.md): JSON-RPC and Cap'n Web alike refuse
 * any other. "database" is every method's: it names the database on
 * /v1/rpc and must name the bound one elsewhere (prelude). */
static const method_def api[] = {
    {"query", m_query, false,
     {"sql", "params", "transactionId", "asOf", "database", "consistency", "minLSN", "idempotencyKey"}},
    {"queryStream", m_query_stream, false, {"sql", "params", "chunkSize", "transactionId", "database"}},
    {"beginTransaction", m_begin, false, {"mode", "readOnly", "timeoutMs", "database"}},
    {"commit", m_commit, false, {"transactionId", "database", "idempotencyKey"}},
    {"rollback", m_rollback, false, {"transactionId", "database"}},
    {"batch", m_batch, false, {"statements", "atomic", "transactionId", "database", "idempotencyKey"}},
    {"getSchema", m_schema, false, {"transactionId", "database"}},
    {"ping", m_ping, false, {"transactionId", "database"}},
    {"getStats", m_stats, false, {"database"}},
    {"subscribeCDC", m_subscribe_cdc, true, {"fromLSN", "fromPosition", "tables", "operations", "database"}},
    {"unsubscribeCDC", m_unsubscribe_cdc, true, {"subscriptionId", "database"}},
    {"applyVSchema", m_apply_vschema, true, {"vschema", "database"}},
    {"getVSchema", m_get_vschema, true, {"database"}},
};

static const method_def *method_find(const char *name)
{
    for (size_t i = 0; i < sizeof api / sizeof api[0]; i++)
        if (strcmp(api[i].name, name) == 0)
            return &api[i];
    return NULL;
}

/* Run method `d` on request `p` (an object, or NULL for none): its
 * fields first. */
static void run(op *o, const method_def *d, json_t *p)
{
    if (p != NULL && check_fields(o, p, d->fields, d->name) != 0)
        return;
    if (op_ks(o) != NULL && d->fn != m_query && d->fn != m_batch && d->fn != m_schema && d->fn != m_ping &&
        d->fn != m_subscribe_cdc && d->fn != m_unsubscribe_cdc && d->fn != m_query_stream && d->fn != m_begin &&
        d->fn != m_commit && d->fn != m_rollback) {
        reject(o, DSQ_CODE_INVALID_REQUEST,
               "%s is not supported on a keyspace (query, queryStream, beginTransaction, commit, rollback, batch, "
               "getSchema, ping, subscribeCDC and unsubscribeCDC are)",
               d->name);
        return;
    }
    d->fn(o, p);
}

/* Every JSON-RPC method: the call's name picks its definition. */
static void rpc_method(dsq_rpc_call *call, json_t *params, void *ctx)
{
    const method_def *d = method_find(dsq_rpc_method_name(call));
    if (d == NULL) { /* methods[] names only what api[] has */
        dsq_rpc_error(call, DSQ_CODE_INTERNAL_ERROR, "no method '%.100s'", dsq_rpc_method_name(call));
        return;
    }
    if (params != NULL && !json_is_object(params)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"params\" must be an object");
        return;
    }
    op *o = op_new(ctx, call);
    if (o == NULL) {
        dsq_rpc_error(call, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    o->call.budget = &((message *)dsq_rpc_call_ud(call))->budget;
    run(o, d, params);
}

/* cancel {requestId}: stop this connection's request with that JSON-RPC
 * id (it answers TIMEOUT "the request was cancelled"). Answers
 * {"cancelled": true} when such a request was running or waiting. */
static void rpc_m_cancel(dsq_rpc_call *call, json_t *params, void *ctx)
{
    dsq_dosql_session *s = ctx;
    json_t *id = json_is_object(params) ? json_object_get(params, "requestId") : NULL;
    const char *key;
    json_t *v;
    if (json_is_object(params)) {
        json_object_foreach(params, key, v) {
            if (strcmp(key, "requestId") != 0 && strcmp(key, "database") != 0) {
                dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "unknown field \"%.60s\" in cancel", key);
                return;
            }
        }
    }
    if (id == NULL || !(json_is_string(id) || json_is_integer(id))) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "cancel needs \"requestId\": the id of a request");
        return;
    }
    bool found = false;
    for (op *o = s->inflight; o != NULL; o = o->in_next) {
        json_t *oid = o->rpc ? dsq_rpc_call_id(o->rpc) : NULL;
        if (oid != NULL && json_equal(oid, id)) {
            op_cancel(o);
            found = true;
        }
    }
    dsq_rpc_result(call, json_pack("{s:b}", "cancelled", found));
}

bool dsq_dosql_has_method(const char *name)
{
    const method_def *d = method_find(name);
    return d != NULL && !d->rpc_only;
}

int dsq_dosql_check_fields(const char *method, json_t *req, char *why, size_t n)
{
    const method_def *d = method_find(method);
    if (d == NULL) {
        snprintf(why, n, "unknown method '%.100s'", method);
        return -1;
    }
    return req == NULL ? 0 : fields_check(req, d->fields, d->name, why, n);
}

void dsq_dosql_call(dsq_dosql_session *s, const char *db, const char *method, json_t *params,
                    dsq_dosql_enc enc, dsq_dosql_done_fn done, dsq_dosql_chunk_fn chunk, void *ud)
{
    const method_def *d = method_find(method);
    op *o = op_new(s, NULL);
    if (o == NULL) {
        done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory", 13, NULL, 0);
        return;
    }
    o->call.budget = s->budget;
    o->enc = enc;
    o->done_fn = done;
    o->chunk_fn = chunk;
    o->done_ud = ud;
    o->fixed_db = db;
    if (d == NULL || d->rpc_only) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "unknown method '%.100s'", method);
        return;
    }
    if (params != NULL && !json_is_object(params)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "the request must be an object");
        return;
    }
    o->root = json_incref(params);
    run(o, d, params);
}

void dsq_dosql_call_ks(dsq_dosql_session *s, const char *ks, const char *method, json_t *params,
                       dsq_dosql_enc enc, dsq_dosql_done_fn done, dsq_dosql_chunk_fn chunk, void *ud)
{
    const method_def *d = method_find(method);
    op *o = op_new(s, NULL);
    if (o == NULL) {
        done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory", 13, NULL, 0);
        return;
    }
    o->call.budget = s->budget;
    o->enc = enc;
    o->done_fn = done;
    o->chunk_fn = chunk;
    o->done_ud = ud;
    o->fixed_ks = ks;
    if (d == NULL || d->rpc_only || s->router == NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "unknown method '%.100s'", method);
        return;
    }
    if (params != NULL && !json_is_object(params)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "the request must be an object");
        return;
    }
    o->root = json_incref(params);
    run(o, d, params);
}

void dsq_dosql_set_budget(dsq_dosql_session *s, dsq_budget *b) { s->budget = b; }

void dsq_dosql_set_cdc_remote(dsq_dosql_session *s, const dsq_cdc_remote *rem) { s->rem = rem; }

void dsq_dosql_set_router(dsq_dosql_session *s, struct dsq_router *r, const char *ks)
{
    s->router = r;
    if (ks != NULL)
        snprintf(s->ks, sizeof s->ks, "%s", ks);
}

void dsq_dosql_stream_resume(dsq_dosql_op *o, bool cancel)
{
    if (!o->awaiting)
        return;
    o->awaiting = false;
    if (o->ks_stream) {
        ks_stream_next(o, cancel);
        return;
    }
    if (o->call.more) {
        stream_more(o, cancel);
        return;
    }
    /* It waited for the sink to take its last chunk. */
    if (cancel)
        o->cancelled = true;
    stream_end(o);
}

/* api[]'s names, for the JSON-RPC envelope's dispatch. */
static const dsq_rpc_method methods[] = {
    {"query", rpc_method},
    {"queryStream", rpc_method},
    {"beginTransaction", rpc_method},
    {"commit", rpc_method},
    {"rollback", rpc_method},
    {"batch", rpc_method},
    {"getSchema", rpc_method},
    {"ping", rpc_method},
    {"getStats", rpc_method},
    {"subscribeCDC", rpc_method},
    {"unsubscribeCDC", rpc_method},
    {"applyVSchema", rpc_method},
    {"getVSchema", rpc_method},
    {"cancel", rpc_m_cancel},
    {NULL, NULL},
};

/* The whole reply of one message: to the transport unless it is gone.
 * Every call of the message has answered: none uses the budget now. */
static void message_reply(void *ud, const char *text, size_t len, dsq_rpc_outcome how)
{
    message *m = ud;
    dsq_dosql_session *s = m->s;
    free(m);
    if (!s->closed)
        s->t.reply(s->t.ud, text, len, how);
    session_unref(s);
}

void dsq_dosql_handle(dsq_dosql_session *s, const char *msg, size_t len)
{
    dsq_rpc_server rs = {.methods = methods, .ctx = s, .max_batch = s->lim.max_batch};
    message *m = malloc(sizeof *m);
    if (m == NULL) {
        static const char oom[] = "{\"id\":null,\"error\":{\"code\":\"RESOURCE_EXHAUSTED\","
                                  "\"message\":\"out of memory\"}}";
        if (!s->closed)
            s->t.reply(s->t.ud, oom, sizeof oom - 1, DSQ_RPC_FAILED(DSQ_CODE_RESOURCE_EXHAUSTED));
        return;
    }
    m->s = s;
    dsq_budget_init(&m->budget);
    s->refs++; /* until message_reply */
    dsq_rpc_handle(&rs, msg, len, message_reply, m);
}

void dsq_dosql_query_route(dsq_dosql_session *s, const char *body, size_t len)
{
    op *o = op_new(s, NULL);
    if (o == NULL) {
        static const char oom[] = "{\"error\":{\"code\":\"RESOURCE_EXHAUSTED\",\"message\":\"out of memory\"}}";
        s->t.reply(s->t.ud, oom, sizeof oom - 1, DSQ_RPC_FAILED(DSQ_CODE_RESOURCE_EXHAUSTED));
        return;
    }
    json_error_t jerr;
    o->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o->root == NULL) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "invalid JSON at line %d column %d: %s", jerr.line,
               jerr.column, jerr.text);
        return;
    }
    if (!json_is_object(o->root)) {
        reject(o, DSQ_CODE_INVALID_REQUEST, "the body must be a JSON object {sql, params?}");
        return;
    }
    run(o, method_find("query"), o->root);
}

void dsq_dosql_writable(dsq_dosql_session *s)
{
    for (csub *c = s->subs, *next; c && !s->closed; c = next) {
        next = c->next;
        if (c->pending == NULL)
            dsq_cdcsub_writable(c->sub);
    }
    for (kcsub *k = s->ksubs, *next; k && !s->closed; k = next) {
        next = k->next;
        k->busy++; /* (a part that ends in here frees k only after the loop) */
        for (size_t i = 0; k->pending == NULL && !k->dead && i < k->n; i++)
            kp_writable(&k->parts[i]);
        k->busy--;
        next = k->next;
        if (k->dead)
            kcsub_free(k);
    }
    while (!dsq_queue_empty(&s->parked) && !s->closed && (s->t.can_send == NULL || s->t.can_send(s->t.ud)))
        stream_more(dsq_container_of(dsq_queue_pop(&s->parked), op, park_link), false);
}

void dsq_dosql_session_close(dsq_dosql_session *s)
{
    if (s->closed)
        return;
    s->closed = true;
    while (s->subs != NULL) {
        csub *c = s->subs;
        op *pending = c->pending;
        csub_remove(c);
        if (pending != NULL)
            reject(pending, DSQ_CODE_RESOURCE_EXHAUSTED, "the connection closed");
    }
    while (s->ksubs != NULL) {
        kcsub *k = s->ksubs;
        op *pending = k->pending;
        kcsub_free(k);
        if (pending != NULL)
            reject(pending, DSQ_CODE_RESOURCE_EXHAUSTED, "the connection closed");
    }
    /* Nobody waits for their outcome: what they run stops. */
    for (op *o = s->inflight; o != NULL; o = o->in_next)
        op_cancel(o);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&s->parked)) != NULL)
        stream_more(dsq_container_of(n, op, park_link), true);
    /* (It looks at every database: only for a session that may hold one;
     * every Cap'n Web HTTP batch is a session.) */
    if (s->may_hold)
        dsq_engine_session_closed(s->e, s->id);
    if (s->router != NULL)
        dsq_router_session_closed(s->router, s->id);
    session_unref(s);
}
