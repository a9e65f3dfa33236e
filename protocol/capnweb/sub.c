/* sub — subscribeCDC(request, callback) in a Cap'n Web session: a CDC
 * subscription (protocol/cdcsub.c) whose events go to the client's
 * callback, one call each; on a keyspace's stub, the keyspace's stream
 * (protocol/dosql.c: every shard's part, each event with its shard and
 * the position).
 *
 * The callback gets each event; at most SUB_WINDOW calls of it are
 * unanswered at a time, which is the subscription's flow control. The
 * result is a stub whose unsubscribe() ends it; so does the session's end.
 * A running subscription holds a reference on the session; its memory
 * goes with the session's (stubs may name it until then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "protocol/capnweb/capnweb_int.h"
#include "protocol/cdcsub.h"
#include "protocol/value.h"

#define SUB_WINDOW 32

typedef struct cw_sub {
    dsq_cw_session *s;
    dsq_cdcsub *sub;        /* running; NULL once stopped */
    struct kcsub *ksub;     /* or a keyspace's, running; NULL once stopped */
    dsq_dosql_kcdc_sink ksink;
    bool ks;                /* a keyspace's (unsubscribe() answers its position) */
    char *position;         /* a keyspace's: when stopped, its position (Cap'n Web text) */
    cw_export *e;           /* subscribeCDC's entry, until it settles */
    int64_t cb;             /* the client's callback (import id, held) */
    int inflight;           /* calls of the callback not answered */
    uint64_t last_lsn;      /* when stopped: the last commit it delivered */
    struct cw_sub *next;    /* the session's list */
} cw_sub;

/* It runs no more: its callback let go, the session's reference dropped
 * (the caller holds one of its own). */
static void sub_detach(cw_sub *u)
{
    dsq_cw_session *s = u->s;
    u->sub = NULL;
    u->ksub = NULL;
    cw_import *im = s->closed ? NULL : dsq__cw_import_get(s, u->cb);
    if (im != NULL)
        dsq__cw_release_import(s, im);
    s->refs--;
}

/* Stop it (unsubscribe(), a callback that threw, the session's end). */
static void sub_stop(cw_sub *u)
{
    if (u->ksub != NULL) {
        struct kcsub *k = u->ksub;
        dsq_buf b = DSQ_BUF_INIT;
        sub_detach(u);
        dsq_dosql_ks_unsubscribe(k, &b);
        free(u->position);
        size_t cap;
        u->position = b.data != NULL ? dsq_buf_steal(&b, &cap) : NULL;
        return;
    }
    dsq_cdcsub *x = u->sub;
    if (x == NULL)
        return;
    u->last_lsn = dsq_cdcsub_lsn(x);
    sub_detach(u);
    dsq_cdcsub_stop(x);
}

static void sub_started(void *ud, int err, dsq_code code, const char *msg)
{
    cw_sub *u = ud;
    dsq_cw_session *s = u->s;
    cw_export *e = u->e;
    u->e = NULL;
    s->refs++;
    if (err != 0) {
        sub_detach(u); /* the subscription stopped itself */
        if (!s->closed)
            dsq__cw_settle_failed(s, e, code, msg);
    } else {
        cw_val v = {.kind = V_SUB, .sub = u};
        if (!s->closed)
            dsq__cw_settle_done(s, e, &v);
        else
            dsq__cw_val_clear(&v);
    }
    dsq__cw_unref(s);
}

/* Call the subscription's callback with one argument (Cap'n Web text). */
static int sub_call(cw_sub *u, const char *text, size_t len)
{
    cw_import *im = dsq__cw_call_client(u->s, u->cb, text, len);
    if (im == NULL)
        return -1;
    im->sub = u;
    u->inflight++;
    return 0;
}

static int sub_event(void *ud, const char *text, size_t len, uint64_t lsn, bool last)
{
    (void)lsn;
    (void)last;
    return sub_call(ud, text, len);
}

static bool sub_can_send(void *ud)
{
    cw_sub *u = ud;
    return u->inflight < SUB_WINDOW;
}

/* It ended by itself: the callback hears {end, lastLsn, error} last. */
static void sub_ended(void *ud, dsq_code code, const char *msg, uint64_t last_lsn)
{
    cw_sub *u = ud;
    dsq_cw_session *s = u->s;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_puts(&b, "{\"end\":true,\"lastLsn\":");
    dsq_cw_bigint(&b, (int64_t)last_lsn);
    dsq_buf_printf(&b, ",\"error\":{\"code\":\"%s\",\"message\":", dsq_code_name(code));
    dsq_json_string(&b, msg, strlen(msg));
    dsq_buf_puts(&b, "}}");
    s->refs++;
    if (b.data)
        sub_call(u, b.data, b.len);
    dsq_buf_free(&b);
    u->last_lsn = last_lsn;
    sub_detach(u); /* the subscription stopped itself */
    dsq__cw_unref(s);
}

/* A keyspace's stream: its events and end to the callback. */
static int ksub_event(void *ud, const char *text, size_t len) { return sub_call(ud, text, len); }

static void ksub_ended(void *ud, const char *text, size_t len)
{
    cw_sub *u = ud;
    dsq_cw_session *s = u->s;
    s->refs++;
    sub_call(u, text, len);
    /* Its position, for an unsubscribe() that comes after. */
    json_t *end = json_loadb(text, len, 0, NULL);
    json_t *pos = json_object_get(end, "position");
    free(u->position);
    u->position = pos != NULL ? json_dumps(pos, JSON_COMPACT) : NULL;
    json_decref(end);
    sub_detach(u); /* (the stream ended by itself: the handle is gone) */
    dsq__cw_unref(s);
}

/* A subscription for entry e with the client's callback cb (held until
 * it stops: its import in *im, if the session has it); NULL after
 * settling e failed. */
static cw_sub *sub_new(dsq_cw_session *s, cw_export *e, json_t *cb, cw_import **im)
{
    cw_sub *u = calloc(1, sizeof *u);
    if (u == NULL) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    u->s = s;
    u->e = e;
    u->cb = json_integer_value(cb);
    u->next = s->subs;
    s->subs = u;
    *im = dsq__cw_import_get(s, u->cb);
    if (*im != NULL)
        (*im)->held = true; /* until the subscription stops */
    return u;
}

void dsq__cw_subscribe(dsq_cw_session *s, cw_export *e, const char *db, json_t *args, bool ks)
{
    json_t *req = json_array_get(args, 0);
    json_t *cb = json_object_get(json_array_get(args, 1), "$clientStub");
    const char *tables[1000];
    char why[512];
    dsq_cdcsub_req r = {.db = db, .enc = DSQ_ENC_CAPNWEB};
    json_t *d = json_object_get(req, "database");
    if (json_is_object(req) && dsq_dosql_check_fields("subscribeCDC", req, why, sizeof why) != 0) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (ks && d != NULL) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "\"database\" is not supported on a keyspace");
        return;
    }
    if (d != NULL && !(json_is_string(d) && strcmp(json_string_value(d), db) == 0)) {
        snprintf(why, sizeof why, "\"database\" differs from the called database '%s'", db);
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (s->batch) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "subscribeCDC needs a WebSocket session");
        return;
    }
    if (!json_is_integer(cb)) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST,
                              "subscribeCDC(request, callback) needs a callback function");
        return;
    }
    if (!(s->t.scope(s->t.ud, db) & DSQ_SCOPE_R)) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_FORBIDDEN,
                              ks ? "subscribing needs read scope on the keyspace"
                                 : "subscribing needs read scope on the database");
        return;
    }
    if (ks) {
        if (req != NULL && !json_is_null(req) && !json_is_object(req)) {
            dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "subscribeCDC takes one request object");
            return;
        }
        cw_import *im;
        cw_sub *u = sub_new(s, e, cb, &im);
        if (u == NULL)
            return;
        u->ks = true;
        u->ksink = (dsq_dosql_kcdc_sink){sub_started, ksub_event, sub_can_send, ksub_ended, u};
        dsq_code code;
        char msg[800];
        s->refs++; /* while it runs */
        u->ksub = dsq_dosql_ks_subscribe(s->dosql, db, json_is_object(req) ? req : NULL, &u->ksink, &code, msg,
                                         sizeof msg);
        if (u->ksub == NULL && u->e != NULL) { /* refused at once: no sink call came */
            u->e = NULL;
            s->refs--;
            if (im != NULL)
                dsq__cw_release_import(s, im);
            dsq__cw_settle_failed(s, e, code, msg);
        }
        return;
    }
    if (req != NULL && !json_is_null(req) &&
        (!json_is_object(req) || dsq_cdcsub_parse(req, &r, tables, 1000, why, sizeof why) != 0)) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST,
                              json_is_object(req) ? why : "subscribeCDC takes one request object");
        return;
    }
    cw_import *im;
    cw_sub *u = sub_new(s, e, cb, &im);
    if (u == NULL)
        return;
    dsq_cdcsub_sink sink = {
        .started = sub_started,
        .event = sub_event,
        .can_send = sub_can_send,
        .ended = sub_ended,
        .ud = u,
    };
    dsq_code code;
    char msg[600];
    u->sub = dsq_cdcsub_start(s->engine, s->cdc, &r, &sink, &code, msg, sizeof msg);
    if (u->sub == NULL) {
        u->e = NULL;
        if (im != NULL)
            dsq__cw_release_import(s, im);
        dsq__cw_settle_failed(s, e, code, msg);
        return;
    }
    s->refs++; /* while it runs */
}

void dsq__cw_unsubscribe(cw_sub *u, cw_val *r)
{
    bool ks = u->ks;
    sub_stop(u);
    dsq_buf b = DSQ_BUF_INIT;
    if (ks) {
        dsq_buf_puts(&b, "{\"unsubscribed\":true,\"position\":");
        dsq_buf_puts(&b, u->position != NULL ? u->position : "null");
        dsq_buf_puts(&b, "}");
    } else {
        dsq_buf_puts(&b, "{\"unsubscribed\":true,\"lastLsn\":");
        dsq_cw_bigint(&b, (int64_t)u->last_lsn);
        dsq_buf_puts(&b, "}");
    }
    *r = (cw_val){.kind = V_DATA, .len = b.len};
    size_t cap;
    r->text = dsq_buf_steal(&b, &cap);
    if (r->text == NULL)
        r->text = strdup("null"), r->len = 4;
}

void dsq__cw_sub_answered(dsq_cw_session *s, cw_sub *u, bool ok)
{
    u->inflight--;
    if (!ok && (u->sub != NULL || u->ksub != NULL)) {
        DSQ_DEBUG("capnweb_cdc_callback_failed", "cb=%lld", (long long)u->cb);
        sub_stop(u); /* the callback threw: no more events */
    } else if (u->sub != NULL && u->inflight == SUB_WINDOW - 1) {
        dsq_cdcsub_writable(u->sub);
    } else if (u->ksub != NULL && u->inflight == SUB_WINDOW - 1) {
        dsq_dosql_ks_writable(u->ksub);
    }
    (void)s;
}

void dsq__cw_subs_stop(dsq_cw_session *s)
{
    for (cw_sub *u = s->subs; u; u = u->next)
        sub_stop(u); /* no more events */
}

void dsq__cw_subs_free(dsq_cw_session *s)
{
    while (s->subs) {
        cw_sub *u = s->subs;
        s->subs = u->next;
        free(u->position);
        free(u);
    }
}
