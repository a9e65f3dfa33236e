/* push — the queue of a Cap'n Web session's pushes.
 *
 * A push becomes an export entry and a task. Tasks are delivered strictly
 * in arrival order: the head waits until everything its expression
 * references has settled (promise pipelining), then its call goes to the
 * engine (or is answered at once), and the next task is looked at. Each
 * settled entry re-runs the queue (dsq__cw_pump). Evaluation happens only
 * once a task is ready, so it never runs twice.
 *
 * Divisions: delivering; the stubs, promises and entries a waiting push
 * keeps; queueing a push. */
#include <stdlib.h>
#include <string.h>

#include "protocol/capnweb/capnweb_int.h"

/* ---- delivering pushes -------------------------------------------------------------------------- */

/* Deliver a ready task: its call, map, or value. */
static void deliver(dsq_cw_session *s, cw_task *t)
{
    cw_export *e = t->e;
    json_t *x = t->expr;
    size_t n = json_is_array(x) ? json_array_size(x) : 0;
    if (n == 5 && is_tag(x, "remap")) {
        dsq__cw_map_start(s, e, x);
        return;
    }
    if (n == 4 && (is_tag(x, "pipeline") || is_tag(x, "import"))) {
        int64_t id = 0;
        get_id(json_array_get(x, 1), &id);
        cw_export *target = dsq__cw_export_get(s, id);
        if (target->state == S_FAILED) {
            dsq__cw_settle_failed(s, e, target->code, target->msg ? target->msg : "failed");
            return;
        }
        json_t *args = json_array();
        size_t i;
        json_t *a;
        json_array_foreach(json_array_get(x, 3), i, a) {
            bool u;
            json_t *v = dsq__cw_eval(s, a, 1, NULL, &u);
            if (v == NULL && !u) {
                json_decref(args);
                dsq__cw_settle_failed(s, e, s->why_code, s->why);
                return;
            }
            json_array_append_new(args, v ? v : json_null());
        }
        json_t *path = json_array_get(x, 2);
        cw_val *tv = &target->val;
        if (tv->kind == V_DATA) {
            dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "a value has no methods to call");
        } else {
            dsq__cw_call_on(s, e, NULL, 0, tv, path, args);
        }
        json_decref(args);
        return;
    }
    /* A value: data, or a stub (a pipeline with no call). */
    if (n >= 2 && n <= 3 && (is_tag(x, "pipeline") || is_tag(x, "import"))) {
        int64_t id = 0;
        get_id(json_array_get(x, 1), &id);
        cw_export *target = dsq__cw_export_get(s, id);
        json_t *path = json_array_get(x, 2);
        if (target->state == S_FAILED) {
            dsq__cw_settle_failed(s, e, target->code, target->msg ? target->msg : "failed");
            return;
        }
        if (target->val.kind != V_DATA && json_array_size(path) == 0) {
            cw_val v = dsq__cw_val_stub_copy(&target->val);
            dsq__cw_settle_done(s, e, &v);
            return;
        }
    }
    bool u;
    json_t *v = dsq__cw_eval(s, x, 0, NULL, &u);
    if (v == NULL && !u) {
        dsq__cw_settle_failed(s, e, s->why_code, s->why);
        return;
    }
    cw_val val = {.kind = V_DATA, .tree = v ? v : json_null()};
    dsq_buf b = DSQ_BUF_INIT;
    dsq__cw_put_tree(&b, val.tree);
    size_t cap;
    val.len = b.len;
    val.text = dsq_buf_steal(&b, &cap);
    dsq__cw_settle_done(s, e, &val);
}

static void task_release_promises(dsq_cw_session *s, cw_task *t);
static void task_let_go(dsq_cw_session *s, cw_task *t);

/* May the next push be delivered now? Not over a WebSocket while
 * max_running calls are in progress, or while its output has no room (a
 * client that does not read holds back its own requests). */
static bool may_deliver(dsq_cw_session *s)
{
    if (s->batch)
        return true; /* its response goes at the end; the budget bounds it */
    if (s->lim.max_running != 0 && s->running >= s->lim.max_running)
        return false;
    return s->t.room == NULL || s->t.room(s->t.ud);
}

void dsq__cw_pump(dsq_cw_session *s)
{
    if (s->pumping)
        return; /* the outer pump goes on */
    s->pumping = true;
    s->refs++; /* a delivery may end the session under us */
    while (s->qhead != NULL && !s->closed && !s->aborted && may_deliver(s)) {
        cw_task *t = s->qhead;
        s->current = t->e;
        s->seq = t->e->id; /* it sees what was there when it arrived */
        int r = dsq__cw_ready(s, t->expr, 0, NULL, true);
        s->current = NULL;
        if (r == 0) {
            s->seq = 0;
            break;
        }
        s->qhead = t->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        if (r < 0)
            dsq__cw_settle_failed(s, t->e, s->why_code, s->why);
        else
            deliver(s, t);
        s->seq = 0;
        task_release_promises(s, t);
        task_let_go(s, t);
        json_decref(t->expr);
        free(t->promises);
        free(t);
    }
    s->pumping = false;
    dsq__cw_unref(s);
}

/* ---- what a waiting push keeps ------------------------------------------------------------------ */

/* The stubs and promises a push introduces count when it arrives, once,
 * whenever it is evaluated: a promise it passes must be awaited, so it has
 * to be on the import table before the push is first looked at. A map's
 * captures are introduced by the map. */
static void introduce_all(dsq_cw_session *s, json_t *e, int depth, cw_task *t)
{
    if (depth > s->lim.max_depth || s->aborted)
        return; /* dsq__cw_ready() reports the depth */
    if (json_is_object(e)) {
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v) introduce_all(s, v, depth + 1, t);
        return;
    }
    if (!json_is_array(e))
        return;
    int64_t id = 0;
    if ((is_tag(e, "export") || is_tag(e, "promise")) && json_array_size(e) == 2 &&
        get_id(json_array_get(e, 1), &id)) {
        bool promise = is_tag(e, "promise");
        cw_import *im = dsq__cw_introduce(s, id, promise);
        if (im != NULL && promise) { /* the push waits for it: remember to let go */
            int64_t *p = realloc(t->promises, (t->npromises + 1) * sizeof *p);
            if (p != NULL) {
                t->promises = p;
                t->promises[t->npromises++] = id;
                im->users++;
            }
        }
        return;
    }
    if (is_tag(e, "remap"))
        return;
    size_t i;
    json_t *v;
    json_array_foreach(e, i, v) introduce_all(s, v, depth + 1, t);
}

/* A push that has to wait keeps the entries it refers to (its target,
 * its arguments' pipelines, a map's target and captures; not the map's
 * instructions, whose ids are the map's own) until it is delivered: the
 * client may release them meanwhile (`using` on a pipelined promise), and
 * the push came before the release. Nothing to do for a push delivered at
 * once. */
static void task_hold(dsq_cw_session *s, json_t *e, int depth, cw_task *t)
{
    if (depth > s->lim.max_depth || s->aborted)
        return; /* dsq__cw_ready() reports the depth */
    if (json_is_object(e)) {
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v) task_hold(s, v, depth + 1, t);
        return;
    }
    if (!json_is_array(e))
        return;
    size_t n = json_array_size(e);
    int64_t id = 0;
    if ((is_tag(e, "pipeline") || is_tag(e, "import") || is_tag(e, "remap")) && n >= 2 &&
        get_id(json_array_get(e, 1), &id)) {
        cw_export *x = dsq__cw_export_lookup(s, id);
        if (x != NULL && !x->released && x != t->e && (t->nuses == 0 || t->uses[t->nuses - 1] != x)) {
            cw_export **u = realloc(t->uses, (t->nuses + 1) * sizeof *u);
            if (u == NULL) {
                dsq__cw_abort(s, "out of memory");
                return;
            }
            t->uses = u;
            t->uses[t->nuses++] = x;
            x->users++;
        }
        if (n >= 4) /* a call's arguments, a map's captures */
            task_hold(s, json_array_get(e, 3), depth + 1, t);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(e, i, v) task_hold(s, v, depth + 1, t);
}

/* The task was delivered (or failed): the entries it kept may go. */
static void task_let_go(dsq_cw_session *s, cw_task *t)
{
    for (size_t i = 0; i < t->nuses; i++) {
        t->uses[i]->users--;
        dsq__cw_export_done_with(s, t->uses[i]);
    }
    free(t->uses);
    t->uses = NULL;
    t->nuses = 0;
}

void dsq__cw_promise_done_with(dsq_cw_session *s, cw_import *im)
{
    if (im->promise && im->users == 0 && im->state != S_PENDING && im->job == NULL)
        dsq__cw_release_import(s, im);
}

/* The task was delivered (or failed): its promises lose a user. */
static void task_release_promises(dsq_cw_session *s, cw_task *t)
{
    for (size_t i = 0; i < t->npromises && !s->closed; i++) {
        cw_import *im = dsq__cw_import_get(s, t->promises[i]);
        if (im != NULL && --im->users == 0)
            dsq__cw_promise_done_with(s, im);
    }
}

/* ---- queueing a push ------------------------------------------------------------------------------ */

void dsq__cw_push(dsq_cw_session *s, json_t *expr, bool stream, bool stubs)
{
    cw_task *t = calloc(1, sizeof *t);
    if (t == NULL) {
        dsq__cw_abort(s, "out of memory");
        return;
    }
    if (stubs) /* the message's text names "export" or "promise" */
        introduce_all(s, expr, 0, t);
    int64_t id = ++s->pushes;
    cw_export *e = s->aborted ? NULL : dsq__cw_export_new(s, id);
    if (e == NULL) {
        free(t->promises);
        free(t);
        return;
    }
    e->stream = stream;
    e->pulled = stream;
    s->waiting += stream;
    t->e = e;
    t->expr = json_incref(expr);
    bool behind = s->qhead != NULL; /* it waits for the pushes before it */
    if (s->qtail)
        s->qtail->next = t;
    else
        s->qhead = t;
    s->qtail = t;
    if (behind)
        task_hold(s, t->expr, 0, t);
    dsq__cw_pump(s);
    if (!behind && s->qhead != NULL && s->qhead->e->id == id) /* it waits for a result */
        task_hold(s, s->qhead->expr, 0, s->qhead);
}

void dsq__cw_queue_free(dsq_cw_session *s)
{
    while (s->qhead) {
        cw_task *t = s->qhead;
        s->qhead = t->next;
        json_decref(t->expr);
        free(t->promises);
        free(t->uses); /* the entries go with the session */
        free(t);
    }
    s->qtail = NULL;
}
