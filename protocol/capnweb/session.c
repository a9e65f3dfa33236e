/* session — a Cap'n Web session (protocol/capnweb.h): its messages in and
 * out, settling its exports, and its life.
 *
 * Messages from the client: push and stream (queued, push.c), pull,
 * release, resolve and reject (of a promise it passed, or of our call to
 * it), abort; pipe answers with a rejected entry. Messages to it: resolve
 * and reject of what it pulled, abort, and our calls and releases
 * (call.c). A WebSocket session reads one message at a time; an HTTP
 * batch, one a line, answered all at once (batch_done).
 *
 * The session is reference counted (refs): the transport holds one until
 * dsq_cw_session_close, each engine call, map and running subscription
 * one, and whatever may end the session under it takes one meanwhile. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "protocol/capnweb/capnweb_int.h"
#include "protocol/value.h"

/* ---- sending --------------------------------------------------------------------------- */

/* A message in the debug log, its values redacted (parameters, rows). */
static void log_msg(const char *event, const char *msg, size_t len)
{
    if (dsq_log_get_level() > DSQ_LOG_DEBUG)
        return;
    char *text = dsq_redact_json(msg, len);
    DSQ_DEBUG(event, "msg=%s", dsq_log_q(text));
    free(text);
}

void dsq__cw_send(dsq_cw_session *s, const dsq_buf *b)
{
    if (s->closed || s->aborted)
        return;
    log_msg("capnweb_out", b->data, b->len);
    s->t.send(s->t.ud, b->data, b->len);
}

/* ["error", "Error", message, null, {"code": CODE}] */
static void put_error(dsq_buf *b, dsq_code code, const char *msg)
{
    dsq_buf_puts(b, "[\"error\",\"Error\",");
    dsq_json_string(b, msg, strlen(msg));
    dsq_buf_printf(b, ",null,{\"code\":\"%s\"}]", dsq_code_name(code));
}

void dsq__cw_abort(dsq_cw_session *s, const char *fmt, ...)
{
    if (s->aborted || s->closed)
        return;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_puts(&b, "[\"abort\",");
    put_error(&b, DSQ_CODE_INVALID_REQUEST, msg);
    dsq_buf_puts(&b, "]");
    dsq__cw_send(s, &b);
    dsq_buf_free(&b);
    s->aborted = true;
    if (s->batch) {
        if (!s->batch_answered) {
            s->batch_answered = true;
            s->t.batch_done(s->t.ud);
        }
    } else {
        s->t.end(s->t.ud);
    }
}

/* ---- settling exports ----------------------------------------------------------------------- */

/* Send the resolution of a pulled, settled export. */
static void send_settled(dsq_cw_session *s, cw_export *e)
{
    if (!e->pulled || e->sent || e->state == S_PENDING)
        return;
    e->sent = true;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_reserve(&b, (e->state == S_DONE && e->val.kind == V_DATA ? e->val.len : 0) + 64);
    if (e->state == S_DONE) {
        dsq_buf_append(&b, "[\"resolve\",", 11);
        dsq_buf_put_i64(&b, e->id);
        dsq_buf_append(&b, ",", 1);
        dsq__cw_put_val(s, &b, &e->val);
    } else {
        dsq_buf_printf(&b, "[\"reject\",%lld,", (long long)e->id);
        put_error(&b, e->code, e->msg ? e->msg : "failed");
    }
    dsq_buf_puts(&b, "]");
    dsq__cw_send(s, &b);
    dsq_buf_free(&b);
}

static void batch_check(dsq_cw_session *s);

/* What follows an export's settling, either way: the client is told, a
 * stream's export goes once sent, and waiting pushes may go on. */
static void settled(dsq_cw_session *s, cw_export *e)
{
    if (e->pulled)
        s->waiting--;
    send_settled(s, e);
    if (e->stream && e->sent)
        dsq__cw_export_release(s, e); /* implicitly, once sent */
    else
        dsq__cw_export_done_with(s, e);
    dsq__cw_pump(s);
    batch_check(s);
}

void dsq__cw_settle_done(dsq_cw_session *s, cw_export *e, cw_val *v)
{
    if (e->state != S_PENDING) {
        dsq__cw_val_let_go(s, v);
        dsq__cw_val_clear(v);
        return;
    }
    e->state = S_DONE;
    e->val = *v;
    *v = (cw_val){0};
    settled(s, e);
}

void dsq__cw_settle_failed(dsq_cw_session *s, cw_export *e, dsq_code code, const char *msg)
{
    if (e->state != S_PENDING)
        return;
    e->state = S_FAILED;
    e->code = code;
    e->msg = strdup(msg);
    settled(s, e);
}

/* ---- messages ------------------------------------------------------------------------------------ */

static void on_pull(dsq_cw_session *s, int64_t id)
{
    cw_export *e = dsq__cw_export_get(s, id);
    if (e == NULL) {
        dsq__cw_abort(s, "pull of %lld: no such entry on the exports table", (long long)id);
        return;
    }
    if (!e->pulled && e->state == S_PENDING)
        s->waiting++;
    e->pulled = true;
    send_settled(s, e);
}

static void on_release(dsq_cw_session *s, int64_t id, int64_t count)
{
    cw_export *e = dsq__cw_export_get(s, id);
    if (id == 0)
        return; /* the main object stays */
    if (e == NULL) {
        dsq__cw_abort(s, "release of %lld: no such entry on the exports table", (long long)id);
        return;
    }
    e->refs -= count;
    if (e->refs > 0)
        return;
    /* Freed once settled and delivered to the pushes that use it. */
    dsq__cw_export_release(s, e);
}

/* resolve/reject from the client: a promise it passed us, or our call. */
static void on_settle(dsq_cw_session *s, int64_t id, json_t *expr, bool ok)
{
    cw_import *im = dsq__cw_import_get(s, id);
    if (im == NULL || im->state != S_PENDING) {
        dsq__cw_abort(s, "%s of %lld: no such pending import", ok ? "resolve" : "reject", (long long)id);
        return;
    }
    bool u;
    if (ok) {
        json_t *v = dsq__cw_eval(s, expr, 0, NULL, &u);
        if (v == NULL && !u) {
            im->state = S_FAILED;
            im->code = s->why_code;
            im->msg = strdup(s->why);
        } else {
            im->state = S_DONE;
            im->value = v ? v : json_null();
        }
    } else {
        json_t *v = dsq__cw_eval(s, expr, 0, NULL, &u);
        const char *m = json_string_value(json_object_get(v, "message"));
        im->state = S_FAILED;
        im->code = DSQ_CODE_UNKNOWN;
        im->msg = strdup(m ? m : "rejected by the client");
        json_decref(v);
    }
    if (im->job != NULL || id > 0) {
        dsq__cw_call_settled(s, im);
    } else {
        s->refs++;
        dsq__cw_pump(s); /* deliver the pushes that waited for it */
        im = dsq__cw_import_get(s, id);
        if (im != NULL && !s->closed)
            dsq__cw_promise_done_with(s, im);
        dsq__cw_unref(s);
    }
    dsq__cw_pump(s);
    batch_check(s);
}

/* Read a decimal integer (optionally negative) at *p; advance past it. */
static bool scan_int(const char **p, const char *end, int64_t *out)
{
    const char *q = *p;
    bool neg = q < end && *q == '-';
    q += neg;
    if (q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] >= '0' && q[1] <= '9'))
        return false;
    int64_t v = 0;
    for (int i = 0; q < end && *q >= '0' && *q <= '9'; q++, i++) {
        if (i == 16)
            return false; /* beyond 2^53: let the full parser refuse it */
        v = v * 10 + (*q - '0');
    }
    *out = neg ? -v : v;
    *p = q;
    return true;
}

/* The two messages every call brings besides its push, ["pull",N] and
 * ["release",N,M], read without building a JSON tree. Returns true when
 * `msg` was one of them (and was handled). */
static bool fast_path(dsq_cw_session *s, const char *msg, size_t len)
{
    const char *p = msg, *end = msg + len;
    int64_t id, count;
    if (len > 8 && memcmp(p, "[\"pull\",", 8) == 0) {
        p += 8;
        if (!scan_int(&p, end, &id) || p + 1 != end || *p != ']')
            return false;
        on_pull(s, id);
        return true;
    }
    if (len > 11 && memcmp(p, "[\"release\",", 11) == 0) {
        p += 11;
        if (!scan_int(&p, end, &id) || p >= end || *p++ != ',' || !scan_int(&p, end, &count) ||
            p + 1 != end || *p != ']' || count <= 0)
            return false;
        on_release(s, id, count);
        return true;
    }
    return false;
}

/* One parsed message. `stubs`: its text may introduce stubs or promises. */
static void dispatch(dsq_cw_session *s, json_t *m, bool stubs)
{
    const char *type = json_string_value(json_array_get(m, 0));
    size_t n = json_array_size(m);
    int64_t id = 0, count = 0;
    if (!json_is_array(m) || type == NULL) {
        dsq__cw_abort(s, "a message is an array starting with its type");
    } else if ((strcmp(type, "push") == 0 || strcmp(type, "stream") == 0) && n == 2) {
        dsq__cw_push(s, json_array_get(m, 1), type[0] == 's', stubs);
    } else if (strcmp(type, "pull") == 0 && n == 2 && get_id(json_array_get(m, 1), &id)) {
        on_pull(s, id);
    } else if (strcmp(type, "release") == 0 && n == 3 && get_id(json_array_get(m, 1), &id) &&
               get_id(json_array_get(m, 2), &count) && count > 0) {
        on_release(s, id, count);
    } else if ((strcmp(type, "resolve") == 0 || strcmp(type, "reject") == 0) && n == 3 &&
               get_id(json_array_get(m, 1), &id)) {
        on_settle(s, id, json_array_get(m, 2), type[2] == 's');
    } else if (strcmp(type, "abort") == 0 && n == 2) {
        s->aborted = true; /* the client ends the session */
        if (!s->batch)
            s->t.end(s->t.ud);
    } else if (strcmp(type, "pipe") == 0 && n == 1) {
        cw_export *e = dsq__cw_export_new(s, ++s->pushes);
        if (e != NULL)
            dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST,
                                  "pipes (ReadableStream) are not supported by dosqld");
    } else {
        dsq__cw_abort(s, "unknown or malformed message '%.40s'", type);
    }
}

static bool names_stubs(const char *text, size_t len)
{
    /* One pass over the quotes (memmem twice cost more than the rest of
     * a pull's handling). */
    const char *end = text + len;
    for (const char *p = text; (p = memchr(p, '"', (size_t)(end - p))) != NULL; p++) {
        size_t left = (size_t)(end - p);
        if ((left >= 8 && p[1] == 'e' && memcmp(p, "\"export\"", 8) == 0) ||
            (left >= 9 && p[1] == 'p' && memcmp(p, "\"promise\"", 9) == 0))
            return true;
    }
    return false;
}

void dsq_cw_receive(dsq_cw_session *s, const char *msg, size_t len)
{
    if (s->closed || s->aborted)
        return;
    s->refs++; /* what the message starts may end the session */
    if (fast_path(s, msg, len)) {
        dsq__cw_unref(s);
        return;
    }
    log_msg("capnweb_in", msg, len);
    json_error_t je;
    json_t *m = json_loadb(msg, len, 0, &je);
    if (m == NULL)
        dsq__cw_abort(s, "invalid JSON: %s", je.text);
    else
        dispatch(s, m, names_stubs(msg, len));
    json_decref(m);
    dsq__cw_unref(s);
}

void dsq_cw_receive_lines(dsq_cw_session *s, const char *body, size_t len)
{
    /* Line by line: pulls and releases take the fast path, which beats
     * parsing the whole batch as one array (measured with callgrind). */
    if (s->closed || s->aborted)
        return;
    s->refs++; /* an abort may end the session (and its transport) on the way */
    for (const char *p = body, *end = body + len; p < end && !s->closed && !s->aborted;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0)
            dsq_cw_receive(s, p, n);
        p += n + 1;
    }
    dsq__cw_unref(s);
}

/* ---- the session's life ------------------------------------------------------------------------- */

void dsq_cw_session_set_cdc_remote(dsq_cw_session *s, const struct dsq_cdc_remote *rem)
{
    dsq_dosql_set_cdc_remote(s->dosql, rem);
}

void dsq_cw_session_set_router(dsq_cw_session *s, struct dsq_router *r, const char *ks)
{
    s->router = r;
    dsq_dosql_set_router(s->dosql, r, NULL);
    cw_export *main = ks != NULL ? dsq__cw_export_get(s, 0) : NULL;
    if (main != NULL) {
        main->val.kind = V_KS;
        snprintf(main->val.db, sizeof main->val.db, "%s", ks);
    }
}

dsq_cw_session *dsq_cw_session_new(dsq_engine *e, dsq_cw_stats *stats, dsq_cdc_cache *cdc,
                                   const dsq_dosql_limits *dl, const dsq_cw_limits *cl, const char *db,
                                   uint64_t session_id, bool batch, const dsq_cw_transport *t)
{
    dsq_cw_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->engine = e;
    s->stats = stats;
    s->cdc = cdc;
    s->lim = *cl;
    s->t = *t;
    s->batch = batch;
    s->refs = 1;
    if (db)
        snprintf(s->db, sizeof s->db, "%s", db);
    /* The dosql session's own transport is unused (every call comes
     * through dsq_dosql_call) except for scopes. */
    dsq_dosql_transport dt = {.scope = t->scope, .ud = t->ud};
    s->dosql = dsq_dosql_session_new(e, cdc, dl, NULL, session_id, &dt);
    dsq_budget_init(&s->budget);
    if (s->dosql != NULL)
        dsq_dosql_set_budget(s->dosql, &s->budget);
    cw_export *main = s->dosql ? dsq__cw_export_new(s, 0) : NULL;
    if (main == NULL) {
        if (s->dosql)
            dsq_dosql_session_close(s->dosql);
        dsq__cw_tables_free(s);
        free(s);
        return NULL;
    }
    main->state = S_DONE;
    main->val.kind = db ? V_DB : V_MAIN;
    if (db)
        snprintf(main->val.db, sizeof main->val.db, "%s", db);
    return s;
}

static void batch_check(dsq_cw_session *s)
{
    if (!s->batch || !s->batch_ended || s->batch_answered || s->closed)
        return;
    if (s->qhead != NULL || s->waiting > 0)
        return;
    s->batch_answered = true;
    s->t.batch_done(s->t.ud);
}

void dsq_cw_writable(dsq_cw_session *s)
{
    if (!s->closed)
        dsq__cw_pump(s);
}

void dsq_cw_batch_end(dsq_cw_session *s)
{
    s->batch_ended = true;
    s->refs++;
    batch_check(s);
    dsq__cw_unref(s);
}

void dsq__cw_unref(dsq_cw_session *s)
{
    if (--s->refs > 0)
        return;
    dsq__cw_tables_free(s);
    dsq__cw_subs_free(s);
    free(s);
}

void dsq_cw_session_close(dsq_cw_session *s)
{
    if (s->closed)
        return;
    s->closed = true;
    dsq__cw_queue_free(s);
    dsq__cw_streams_end(s); /* streams paused on a callback end now */
    s->refs++;
    dsq__cw_subs_stop(s); /* no more events */
    dsq_dosql_session_close(s->dosql); /* its transactions roll back */
    dsq__cw_unref(s);
    dsq__cw_unref(s);
}
