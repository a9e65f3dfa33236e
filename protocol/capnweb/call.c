/* call — calls in a Cap'n Web session: a method of a database's API (an
 * engine call through dsq_dosql_call), database(name) on the unbound main
 * object, unsubscribe() on a subscription, and calls back to the client:
 * queryStream's chunks go to the client's callback, and the stream waits
 * for each answer.
 *
 * A call is made for an export (a push) or for one step of a map; its
 * outcome settles the one or goes on with the other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "protocol/capnweb/capnweb_int.h"
#include "sharding/router.h"

/* An engine call on behalf of an export or of one step of a map. */
typedef struct cw_job {
    dsq_cw_session *s;
    cw_export *e;           /* settles with the outcome, or NULL */
    struct cw_map *map;     /* or: this map element's step */
    size_t elem;
    json_t *params;         /* owned */
    char db[129];           /* the database it runs on */
    int64_t cb;             /* queryStream: the client's callback (import id), or 0 */
    dsq_dosql_op *op;       /* the stream paused for the callback */
} cw_job;

/* Release the client's stubs a call's arguments introduced and no one
 * keeps (every one but a queryStream's callback, which goes when the
 * stream ends). */
static void release_stubs(dsq_cw_session *s, json_t *t, int depth)
{
    if (depth > 64)
        return;
    json_t *id = json_object_get(t, "$clientStub");
    if (json_is_integer(id) && json_object_size(t) == 1) {
        cw_import *im = dsq__cw_import_get(s, json_integer_value(id));
        if (im != NULL && !im->held && im->job == NULL)
            dsq__cw_release_import(s, im);
        return;
    }
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(t))
        json_object_foreach(t, k, v) release_stubs(s, v, depth + 1);
    else if (json_is_array(t))
        json_array_foreach(t, i, v) release_stubs(s, v, depth + 1);
}

static void job_free(cw_job *j)
{
    dsq_cw_session *s = j->s;
    if (j->cb != 0 && !s->closed) { /* the stream is over: its callback goes */
        cw_import *im = dsq__cw_import_get(s, j->cb);
        if (im != NULL)
            dsq__cw_release_import(s, im);
    }
    json_decref(j->params);
    free(j);
    s->running--;
    if (!s->closed)
        dsq__cw_pump(s); /* a push may have waited for it to end */
    dsq__cw_unref(s);
}

/* A job's outcome: data (Cap'n Web text) or an error. */
static void job_finish(cw_job *j, int err, dsq_code code, const char *text, size_t len, dsq_buf *owner,
                       uint64_t held)
{
    dsq_cw_session *s = j->s;
    /* A map's steps give their bytes back at once (the map's own array is
     * not counted); an entry keeps them until it goes. */
    cw_val v = {.held = j->map ? 0 : held};
    if (j->map && !s->batch)
        dsq_budget_release(&s->budget, held);
    if (err == 0 && owner != NULL && owner->data == text && owner->len == len) {
        v.kind = V_DATA; /* the text is ours, no copy */
        v.text = dsq_buf_steal(owner, &v.len);
    } else if (err == 0) {
        v.kind = V_DATA;
        v.text = malloc(len + 1);
        if (v.text) {
            memcpy(v.text, text, len);
            v.text[len] = '\0';
            v.len = len;
        }
    }
    char msg[600];
    if (err != 0)
        snprintf(msg, sizeof msg, "%.*s", (int)len, text);
    if (j->map && s->closed) /* end the map: no further steps, nothing sent */
        dsq__cw_map_step_done(j->map, j->elem, NULL, DSQ_CODE_UNKNOWN, "the session closed");
    else if (j->map)
        dsq__cw_map_step_done(j->map, j->elem, err ? NULL : &v, code, err ? msg : NULL);
    else if (!s->closed && j->e && err == 0)
        dsq__cw_settle_done(s, j->e, &v);
    else if (!s->closed && j->e)
        dsq__cw_settle_failed(s, j->e, code, msg);
    dsq__cw_val_let_go(s, &v); /* not taken by an entry */
    dsq__cw_val_clear(&v);
    job_free(j);
}

static void on_dosql_done(void *ud, int err, dsq_code code, const char *text, size_t len, dsq_buf *owner,
                          uint64_t held)
{
    job_finish(ud, err, code, text, len, owner, held);
}

/* ---- calls back to the client ------------------------------------------------------------ */

cw_import *dsq__cw_call_client(dsq_cw_session *s, int64_t cb, const char *text, size_t len)
{
    if (s->closed || s->aborted)
        return NULL;
    int64_t id = ++s->next_call;
    cw_import *im = dsq__cw_import_get_or_new(s, id);
    if (im == NULL)
        return NULL;
    im->state = S_PENDING;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "[\"push\",[\"pipeline\",%lld,[],[", (long long)cb);
    dsq_buf_append(&b, text, len);
    dsq_buf_puts(&b, "]]]");
    dsq__cw_send(s, &b);
    dsq_buf_reset(&b);
    dsq_buf_printf(&b, "[\"pull\",%lld]", (long long)id);
    dsq__cw_send(s, &b);
    dsq_buf_free(&b);
    return im;
}

/* queryStream's chunk: call the client's function with it; the stream
 * waits for its answer. */
static int on_chunk(void *ud, dsq_dosql_op *op, const char *text, size_t len)
{
    cw_job *j = ud;
    cw_import *im = dsq__cw_call_client(j->s, j->cb, text, len);
    if (im == NULL)
        return -1;
    im->job = j;
    j->op = op;
    return 1;
}

void dsq__cw_release_import(dsq_cw_session *s, cw_import *im)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "[\"release\",%lld,%lld]", (long long)im->id,
                   (long long)(im->refs > 0 ? im->refs : 1));
    dsq__cw_send(s, &b);
    dsq_buf_free(&b);
    dsq__cw_import_free(s, im);
}

/* The client answered our call `im` (a callback of queryStream or of a
 * subscription). */
void dsq__cw_call_settled(dsq_cw_session *s, cw_import *im)
{
    if (im->sub != NULL) { /* a subscription's callback answered */
        struct cw_sub *u = im->sub;
        bool ok = im->state == S_DONE;
        dsq__cw_release_import(s, im);
        dsq__cw_sub_answered(s, u, ok);
        return;
    }
    cw_job *j = im->job;
    bool ok = im->state == S_DONE;
    im->job = NULL;
    dsq__cw_release_import(s, im); /* [release, id, 1]: we no longer need the answer */
    if (j != NULL && j->op != NULL) {
        dsq_dosql_op *op = j->op;
        j->op = NULL;
        dsq_dosql_stream_resume(op, !ok);
    }
}

void dsq__cw_streams_end(dsq_cw_session *s)
{
    for (size_t i = 0; i < s->imports.cap; i++) {
        cw_import *im = s->imports.vals[i];
        if (im && im->job && im->job->op) {
            dsq_dosql_op *op = im->job->op;
            im->job->op = NULL;
            im->job = NULL;
            dsq_dosql_stream_resume(op, true);
        }
    }
}

/* ---- calls on a database ---------------------------------------------------------------- */

/* Start an engine call of `method` with the evaluated arguments. */
static void start_call(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem,
                       const char *db, const char *method, json_t *args, bool ks)
{
    json_t *req = json_array_get(args, 0);
    if (req != NULL && !json_is_object(req) && !json_is_null(req)) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "%s takes one request object", method);
        goto refuse;
    }
    /* An argument no one reads is refused, as unknown fields are: the
     * callback methods take one after the request, the others none. */
    bool callback = strcmp(method, "queryStream") == 0 || strcmp(method, "subscribeCDC") == 0;
    if (json_array_size(args) > (callback ? 2u : 1u)) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "%.100s takes %s, not %zu arguments", method,
                     callback ? "a request object and a callback" : "one request object",
                     json_array_size(args));
        goto refuse;
    }
    if (strcmp(method, "subscribeCDC") == 0 && m == NULL) {
        dsq__cw_subscribe(s, e, db, args, ks);
        return;
    }
    if (!dsq_dosql_has_method(method)) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "no method '%.100s' on a database", method);
        goto refuse;
    }
    /* Unknown fields first, whatever else is wrong (dsq_dosql_call checks
     * them too, but a refused queryStream never gets there). */
    if (json_is_object(req) && dsq_dosql_check_fields(method, req, s->why, sizeof s->why) != 0) {
        s->why_code = DSQ_CODE_INVALID_REQUEST;
        goto refuse;
    }
    /* queryStream's callback, checked before anything is taken for the job. */
    bool stream = strcmp(method, "queryStream") == 0;
    json_t *cb = stream ? json_object_get(json_array_get(args, 1), "$clientStub") : NULL;
    if (stream && (!json_is_integer(cb) || s->batch)) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST,
                     s->batch ? "queryStream needs a WebSocket session"
                              : "queryStream(request, callback) needs a callback function");
        goto refuse;
    }
    cw_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        dsq__cw_fail(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        goto refuse;
    }
    j->s = s;
    j->e = e;
    j->map = m;
    j->elem = elem;
    j->params = req && json_is_object(req) ? json_incref(req) : json_object();
    dsq_strlcpy(j->db, db, sizeof j->db);
    dsq_dosql_chunk_fn chunk = NULL;
    if (stream) {
        j->cb = json_integer_value(cb);
        cw_import *im = dsq__cw_import_get(s, j->cb);
        if (im != NULL)
            im->held = true; /* until the stream ends (job_free) */
        chunk = on_chunk;
    }
    s->refs++;
    s->running++;
    if (ks)
        dsq_dosql_call_ks(s->dosql, j->db, method, j->params, DSQ_ENC_CAPNWEB, on_dosql_done, chunk, j);
    else
        dsq_dosql_call(s->dosql, j->db, method, j->params, DSQ_ENC_CAPNWEB, on_dosql_done, chunk, j);
    return;
refuse:
    if (m)
        dsq__cw_map_step_done(m, elem, NULL, s->why_code, s->why);
    else
        dsq__cw_settle_failed(s, e, s->why_code, s->why);
}

/* ---- calls on stubs --------------------------------------------------------------------------- */

static void call_on_stub(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                         json_t *path, json_t *args)
{
    const char *method = json_string_value(json_array_get(path, json_array_size(path) - 1));
    if (json_array_size(path) != 1 || method == NULL) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "calls take one method name as their path");
    } else if (v->kind == V_DB || v->kind == V_KS) {
        start_call(s, e, m, elem, v->db, method, args, v->kind == V_KS);
        return;
    } else if (v->kind == V_MAIN && strcmp(method, "keyspace") == 0) {
        json_t *name = json_array_get(args, 0);
        const char *ks = json_string_value(name);
        if (json_array_size(args) > 1) {
            dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "keyspace(name) takes one argument, not %zu",
                         json_array_size(args));
        } else if (s->router == NULL || ks == NULL || json_string_length(name) != strlen(ks) ||
                   !dsq_router_has_keyspace(s->router, ks)) {
            dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "keyspace(name): no keyspace '%.128s' in the VSchema",
                         ks ? ks : "");
        } else if (s->t.scope(s->t.ud, ks) == 0) {
            dsq__cw_fail(s, DSQ_CODE_FORBIDDEN, "the token does not grant access to keyspace '%s'", ks);
        } else {
            cw_val stub = {.kind = V_KS};
            dsq_strlcpy(stub.db, ks, sizeof stub.db);
            if (m)
                dsq__cw_map_step_done(m, elem, &stub, DSQ_CODE_UNKNOWN, NULL);
            else
                dsq__cw_settle_done(s, e, &stub);
            return;
        }
    } else if (v->kind == V_MAIN && strcmp(method, "database") == 0) {
        json_t *name = json_array_get(args, 0);
        const char *db = json_string_value(name);
        if (json_array_size(args) > 1) {
            dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "database(name) takes one argument, not %zu",
                         json_array_size(args));
        } else if (db == NULL || json_string_length(name) != strlen(db) || !dsq_db_name_valid(db)) {
            dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST,
                         "database(name): invalid name: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with '.'");
        } else if (s->t.scope(s->t.ud, db) == 0) {
            dsq__cw_fail(s, DSQ_CODE_FORBIDDEN, "the token does not grant access to database '%s'", db);
        } else {
            cw_val stub = {.kind = V_DB};
            dsq_strlcpy(stub.db, db, sizeof stub.db);
            if (m)
                dsq__cw_map_step_done(m, elem, &stub, DSQ_CODE_UNKNOWN, NULL);
            else
                dsq__cw_settle_done(s, e, &stub);
            return;
        }
    } else if (v->kind == V_SUB && strcmp(method, "unsubscribe") == 0) {
        cw_val r;
        dsq__cw_unsubscribe(v->sub, &r);
        if (m)
            dsq__cw_map_step_done(m, elem, &r, DSQ_CODE_UNKNOWN, NULL);
        else
            dsq__cw_settle_done(s, e, &r);
        return;
    } else if (v->kind == V_SUB) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "a subscription has one method: unsubscribe()");
    } else if (v->kind == V_MAIN) {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "no method '%.100s' here: use database(name) first", method);
    } else {
        dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "'%.100s' is not a function", method);
    }
    if (m)
        dsq__cw_map_step_done(m, elem, NULL, s->why_code, s->why);
    else
        dsq__cw_settle_failed(s, e, s->why_code, s->why);
}

void dsq__cw_call_on(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                     json_t *path, json_t *args)
{
    s->refs++;
    call_on_stub(s, e, m, elem, v, path, args);
    if (!s->closed && s->imports.n > 0) /* no imports: nothing to let go */
        release_stubs(s, args, 0);
    dsq__cw_unref(s);
}
