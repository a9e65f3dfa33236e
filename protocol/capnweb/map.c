/* map — .map() in a Cap'n Web session: ["remap", id, path, captures,
 * instructions] applies the instructions to each element of the array at
 * `path` of entry `id` (or to the value once, when it is not an array).
 *
 * An element's instructions run in order; each sees the captures
 * (negative ids), the element (0) and its earlier results (positive). An
 * instruction that calls goes to call.c and the element waits for it;
 * the others are evaluated at once (eval.c). The result is the array of
 * each element's last value. */
#include <stdlib.h>
#include <string.h>

#include "protocol/capnweb/capnweb_int.h"

typedef struct cw_map {
    dsq_cw_session *s;
    cw_export *e;          /* settles with the mapped array */
    json_t *instructions;  /* owned reference */
    cw_val *caps;          /* owned */
    size_t ncaps;
    json_t *inputs;        /* owned: the array mapped */
    bool single;           /* the target was not an array: map it as one value */
    size_t n;              /* elements */
    cw_val *vals;          /* n x ninstr results */
    size_t ninstr;
    cw_val *in;            /* n inputs as values */
    size_t *pc;            /* per element: the next instruction */
    size_t left;           /* elements not finished */
    bool failed;
} cw_map;

static void map_free(cw_map *m)
{
    for (size_t i = 0; i < m->n * m->ninstr; i++)
        dsq__cw_val_clear(&m->vals[i]);
    for (size_t i = 0; i < m->n; i++)
        dsq__cw_val_clear(&m->in[i]);
    for (size_t i = 0; i < m->ncaps; i++)
        dsq__cw_val_clear(&m->caps[i]);
    free(m->vals);
    free(m->in);
    free(m->pc);
    free(m->caps);
    json_decref(m->instructions);
    json_decref(m->inputs);
    free(m);
}

static void map_run(cw_map *m, size_t elem);

/* All elements done: the result is the array of their last values. */
static void map_finish(cw_map *m)
{
    dsq_cw_session *s = m->s;
    if (!m->failed) {
        dsq_buf b = DSQ_BUF_INIT;
        if (!m->single)
            dsq_buf_puts(&b, "[[");
        for (size_t i = 0; i < m->n; i++) {
            dsq_buf_puts(&b, i ? "," : "");
            dsq__cw_put_val(s, &b, &m->vals[i * m->ninstr + m->ninstr - 1]);
        }
        if (!m->single)
            dsq_buf_puts(&b, "]]");
        cw_val v = {.kind = V_DATA, .len = b.len};
        size_t cap;
        v.text = dsq_buf_steal(&b, &cap);
        if (v.text == NULL)
            v.text = strdup(m->single ? "null" : "[[]]"), v.len = strlen(v.text);
        dsq__cw_settle_done(s, m->e, &v);
    }
    map_free(m);
    dsq__cw_unref(s);
}

void dsq__cw_map_step_done(cw_map *m, size_t elem, cw_val *v, dsq_code code, const char *msg)
{
    if (v == NULL) {
        if (!m->failed) {
            m->failed = true;
            dsq__cw_settle_failed(m->s, m->e, code, msg);
        }
    } else {
        m->vals[elem * m->ninstr + m->pc[elem]] = *v;
        *v = (cw_val){0};
    }
    m->pc[elem]++;
    map_run(m, elem);
}

/* One fewer reason to keep the map: elements not finished and map_run
 * frames on the stack each hold one. The last finishes the map. */
static void map_release(cw_map *m)
{
    if (--m->left == 0)
        map_finish(m);
}

/* Run element `elem`'s instructions until one waits for the engine. A
 * call may complete at once (database(), a refusal), re-entering here. */
static void map_run(cw_map *m, size_t elem)
{
    dsq_cw_session *s = m->s;
    m->left++; /* this frame */
    while (!m->failed && m->pc[elem] < m->ninstr) {
        size_t pc = m->pc[elem];
        json_t *ins = json_array_get(m->instructions, pc);
        mapctx mc = {m->caps, m->ncaps, &m->in[elem], &m->vals[elem * m->ninstr], pc};
        if (dsq__cw_ready(s, ins, 0, &mc, true) != 1) {
            dsq__cw_map_step_done(m, elem, NULL, s->why_code, s->why);
            map_release(m);
            return;
        }
        bool call = json_is_array(ins) && json_array_size(ins) == 4 &&
                    (is_tag(ins, "pipeline") || is_tag(ins, "import"));
        if (call) {
            int64_t id = 0;
            get_id(json_array_get(ins, 1), &id);
            cw_val *target = id < 0 ? &m->caps[-id - 1] : id == 0 ? &m->in[elem] : &m->vals[elem * m->ninstr + id - 1];
            json_t *args = json_array();
            size_t i;
            json_t *a;
            bool ok = true;
            json_array_foreach(json_array_get(ins, 3), i, a) {
                bool u;
                json_t *x = dsq__cw_eval(s, a, 1, &mc, &u);
                if (x == NULL && !u) {
                    ok = false;
                    break;
                }
                json_array_append_new(args, x ? x : json_null());
            }
            if (ok)
                dsq__cw_call_on(s, NULL, m, elem, target, json_array_get(ins, 2), args);
            else
                dsq__cw_map_step_done(m, elem, NULL, s->why_code, s->why);
            json_decref(args);
            map_release(m); /* dsq__cw_map_step_done goes on with this element */
            return;
        }
        bool u;
        json_t *x = dsq__cw_eval(s, ins, 0, &mc, &u);
        if (x == NULL && !u) {
            dsq__cw_map_step_done(m, elem, NULL, s->why_code, s->why);
            map_release(m);
            return;
        }
        m->vals[elem * m->ninstr + pc] = (cw_val){.kind = V_DATA, .tree = x ? x : json_null()};
        m->pc[elem]++;
    }
    if (m->pc[elem] <= m->ninstr) { /* finished now (pc = ninstr + 1 marks counted) */
        m->pc[elem] = m->ninstr + 1;
        map_release(m); /* the element */
    }
    map_release(m); /* this frame */
}

void dsq__cw_map_start(dsq_cw_session *s, cw_export *e, json_t *expr)
{
    int64_t id = 0;
    get_id(json_array_get(expr, 1), &id);
    cw_export *x = dsq__cw_export_get(s, id);
    if (x->state == S_FAILED) {
        dsq__cw_settle_failed(s, e, x->code, x->msg ? x->msg : "failed");
        return;
    }
    cw_map *m = calloc(1, sizeof *m);
    if (m == NULL) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    m->s = s;
    m->e = e;
    m->instructions = json_incref(json_array_get(expr, 4));
    m->ninstr = json_array_size(m->instructions);
    json_t *caps = json_array_get(expr, 3);
    m->ncaps = json_array_size(caps);
    m->caps = calloc(m->ncaps ? m->ncaps : 1, sizeof *m->caps);
    const char *why = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(caps, i, c) {
        int64_t cid = 0;
        if (!json_is_array(c) || json_array_size(c) != 2 || !get_id(json_array_get(c, 1), &cid)) {
            why = "a map capture is [\"import\", id] or [\"export\", id]";
            break;
        }
        if (is_tag(c, "import")) {
            cw_export *cx = dsq__cw_export_get(s, cid);
            if (cx == NULL || cx->state != S_DONE) {
                why = "a map capture refers to no settled entry";
                break;
            }
            if (cx->val.kind != V_DATA)
                m->caps[i] = dsq__cw_val_stub_copy(&cx->val);
            else
                m->caps[i] = (cw_val){.kind = V_DATA};
            if (cx->val.kind == V_DATA) {
                json_t *t = dsq__cw_val_tree(s, &cx->val);
                m->caps[i].tree = json_incref(t ? t : json_null());
            }
        } else if (is_tag(c, "export")) {
            if (dsq__cw_introduce(s, cid, false) == NULL) {
                why = "session aborted";
                break;
            }
            m->caps[i] = (cw_val){.kind = V_CLIENT, .client = cid};
        } else {
            why = "a map capture is [\"import\", id] or [\"export\", id]";
            break;
        }
    }
    json_t *target = why ? NULL : dsq__cw_eval_ref(s, &x->val, json_array_get(expr, 2));
    if (why != NULL || target == NULL || m->ninstr == 0) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_INVALID_REQUEST,
                              why ? why : target == NULL ? s->why : "a map needs instructions");
        json_decref(target);
        map_free(m);
        return;
    }
    if (json_is_null(target)) { /* mapping nothing gives nothing */
        json_decref(target);
        map_free(m);
        cw_val v = {.kind = V_DATA, .text = strdup("null"), .len = 4};
        dsq__cw_settle_done(s, e, &v);
        return;
    }
    m->single = !json_is_array(target);
    m->inputs = m->single ? json_pack("[o]", target) : target;
    m->n = json_array_size(m->inputs);
    m->vals = calloc(m->n * m->ninstr + 1, sizeof *m->vals);
    m->in = calloc(m->n + 1, sizeof *m->in);
    m->pc = calloc(m->n + 1, sizeof *m->pc);
    if (m->vals == NULL || m->in == NULL || m->pc == NULL) {
        dsq__cw_settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        map_free(m);
        return;
    }
    for (size_t k = 0; k < m->n; k++)
        m->in[k] = (cw_val){.kind = V_DATA, .tree = json_incref(json_array_get(m->inputs, k))};
    s->refs++; /* until map_finish */
    m->left = m->n + 1; /* the elements, and this loop */
    for (size_t k = 0, n = m->n; k < n; k++)
        map_run(m, k);
    map_release(m);
}
