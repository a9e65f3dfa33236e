/* capnweb — Cap'n Web sessions on the DoSQL API.
 *
 * Divisions: id maps; values (data as Cap'n Web text and, on demand, as a
 * tree in DoSQL's JSON; or stubs); entries of the two tables; sending;
 * expressions (readiness, evaluation, writing trees back); settling
 * exports; calls (engine calls, database(name), callbacks to the client);
 * maps; delivering pushes in order; messages; the session's life.
 *
 * A push becomes an export entry and a task. Tasks are delivered strictly
 * in arrival order: the head waits until everything its expression
 * references has settled (promise pipelining), then its call goes to the
 * engine (or is answered at once), and the next task is looked at. Each
 * settled entry re-runs the queue. Evaluation happens only once a task is
 * ready, so it never runs twice.
 *
 * Trees use DoSQL's JSON: {"$bigint": "..."} and {"$bytes": "..."} for
 * the protocol's bigint and bytes, so the DoSQL methods take them as they
 * are. Our stubs in a tree are {"$stub": id}; the client's are
 * {"$clientStub": id}. */
#include "protocol/capnweb.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "protocol/cdcsub.h"
#include "protocol/value.h"

static uint64_t entries_total; /* loop thread only */

uint64_t dsq_cw_entries_total(void) { return entries_total; }

/* ---- id maps ----------------------------------------------------------------------- */

typedef struct idmap {
    int64_t *keys;
    void **vals;  /* NULL: an empty slot */
    size_t cap;   /* a power of two, or 0 */
    size_t n;
} idmap;

static size_t slot_of(int64_t k, size_t cap)
{
    return (size_t)(((uint64_t)k * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static void *idmap_get(const idmap *m, int64_t k)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->vals[i] == NULL)
            return NULL;
        if (m->keys[i] == k)
            return m->vals[i];
    }
}

static int idmap_put(idmap *m, int64_t k, void *v)
{
    if (2 * (m->n + 1) > m->cap) {
        size_t ncap = m->cap ? 2 * m->cap : 16;
        int64_t *keys = calloc(ncap, sizeof *keys);
        void **vals = calloc(ncap, sizeof *vals);
        if (keys == NULL || vals == NULL) {
            free(keys);
            free(vals);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->vals[i] == NULL)
                continue;
            size_t j = slot_of(m->keys[i], ncap);
            while (vals[j])
                j = (j + 1) & (ncap - 1);
            keys[j] = m->keys[i];
            vals[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = ncap;
    }
    size_t i = slot_of(k, m->cap);
    while (m->vals[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (m->vals[i] == NULL)
        m->n++;
    m->keys[i] = k;
    m->vals[i] = v;
    return 0;
}

/* Remove k, shifting later members of its cluster back. */
static void idmap_del(idmap *m, int64_t k)
{
    if (m->cap == 0)
        return;
    size_t i = slot_of(k, m->cap);
    while (m->vals[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (m->vals[i] == NULL)
        return;
    m->vals[i] = NULL;
    m->n--;
    for (size_t j = (i + 1) & (m->cap - 1); m->vals[j]; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m->keys[j], m->cap);
        /* Move j back to i when its home is not in (i, j]. */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->vals[j] = NULL;
            i = j;
        }
    }
}

static void idmap_free(idmap *m)
{
    free(m->keys);
    free(m->vals);
    *m = (idmap){0};
}

/* ---- values --------------------------------------------------------------------------- */

enum { V_NONE = 0, V_DATA, V_MAIN, V_DB, V_CLIENT, V_SUB };

struct cw_sub;

typedef struct cw_val {
    int kind;
    char *text;      /* V_DATA: a Cap'n Web expression (owned), or NULL */
    size_t len;
    json_t *tree;    /* V_DATA: the value as a tree (owned), made on demand */
    char db[129];    /* V_DB: its database */
    int64_t client;  /* V_CLIENT: the client's export id */
    struct cw_sub *sub; /* V_SUB: a CDC subscription (the session's, lives as long) */
    uint64_t held;   /* V_DATA from our call: bytes charged to the session's budget */
} cw_val;

static void val_clear(cw_val *v)
{
    free(v->text);
    json_decref(v->tree);
    *v = (cw_val){0};
}

/* A stub value (not data) again: the same stub. */
static cw_val val_stub_copy(const cw_val *src)
{
    cw_val v = {.kind = src->kind, .client = src->client, .sub = src->sub};
    memcpy(v.db, src->db, sizeof v.db);
    return v;
}

/* ---- entries ---------------------------------------------------------------------------- */

enum { S_PENDING = 0, S_DONE, S_FAILED };

typedef struct cw_export {
    int64_t id;
    int state;
    cw_val val;       /* S_DONE */
    dsq_code code;    /* S_FAILED */
    char *msg;
    bool pulled;      /* send its resolution */
    bool sent;        /* it was sent */
    bool stream;      /* from a "stream" message: gone once settled */
    bool released;    /* its count reached zero (or, a stream's, it was sent) */
    int64_t released_at; /* then the last push so far: only pushes up to it see it */
    int64_t refs;     /* introductions not yet released */
    int64_t users;    /* queued pushes that refer to it: it stays for them */
} cw_export;

typedef struct cw_import {
    int64_t id;
    int64_t refs;     /* times the client introduced it (export, promise) */
    bool promise;     /* a promise the client will resolve */
    int state;        /* promise or our call: S_PENDING, S_DONE, S_FAILED */
    json_t *value;    /* S_DONE: tree */
    dsq_code code;
    char *msg;
    struct cw_job *job; /* our call to the client's stub: who waits for it */
    bool held;        /* a running call keeps this stub (queryStream's callback) */
    struct cw_sub *sub; /* our call to a CDC subscription's callback: whose */
    int users;        /* promise: pushes not delivered yet that wait for it */
} cw_import;

typedef struct cw_task {
    cw_export *e;     /* the entry its outcome settles */
    json_t *expr;     /* owned */
    int64_t *promises;/* owned: the client's promises it waits for (their import ids) */
    size_t npromises;
    cw_export **uses; /* owned: the entries it refers to, each kept while it waits */
    size_t nuses;
    struct cw_task *next;
} cw_task;

struct dsq_cw_session {
    dsq_engine *engine;
    dsq_dosql_session *dosql;  /* owned; unbound: calls name their database */
    dsq_cw_limits lim;
    dsq_cw_transport t;
    char db[129];              /* the main object's database, or "" */
    bool batch;
    bool batch_ended;          /* all of the batch's messages are in */
    bool batch_answered;
    bool closed;               /* the transport is gone */
    bool aborted;
    int refs;                  /* 1 for the transport, 1 per job */
    idmap exports, imports;
    int64_t pushes;            /* client pushes so far (their export ids) */
    int64_t next_neg;          /* our next stub export id (negative) */
    int64_t next_call;         /* our next push to the client (its export id) */
    cw_task *qhead, *qtail;    /* pushes not delivered yet */
    bool pumping;              /* inside pump() */
    size_t waiting;            /* exports pulled and not settled (batch_check) */
    size_t running;            /* jobs: engine calls in progress */
    cw_export *current;        /* the entry of the task being looked at */
    int64_t seq;               /* its push id (what it may see), or 0 */
    char why[300];             /* the current evaluation error */
    dsq_code why_code;
    struct cw_sub *subs;       /* CDC subscriptions made in it (freed with it) */
    /* The results of its calls as a whole: an HTTP batch's are never
     * given back (the response holds them all); a WebSocket session's are
     * when their entries go (released by the client). */
    dsq_budget budget;
};

static void abort_session(dsq_cw_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pump(dsq_cw_session *s);

static void unref(dsq_cw_session *s);

static int count_entry(dsq_cw_session *s)
{
    if (s->exports.n + s->imports.n >= s->lim.max_entries) {
        abort_session(s, "too many imports and exports in one session (limit %zu)", s->lim.max_entries);
        return -1;
    }
    entries_total++;
    return 0;
}

/* A new zeroed entry of `size` bytes under `id` in `map`, or NULL (the
 * session aborts: too many entries, or out of memory). */
static void *entry_new(dsq_cw_session *s, idmap *map, int64_t id, size_t size)
{
    if (count_entry(s) != 0)
        return NULL;
    void *p = calloc(1, size);
    if (p == NULL || idmap_put(map, id, p) != 0) {
        free(p);
        entries_total--;
        abort_session(s, "out of memory");
        return NULL;
    }
    return p;
}

static cw_export *export_new(dsq_cw_session *s, int64_t id)
{
    cw_export *e = entry_new(s, &s->exports, id, sizeof *e);
    if (e != NULL) {
        e->id = id;
        e->refs = 1;
    }
    return e;
}

static void export_destroy(cw_export *e)
{
    val_clear(&e->val);
    free(e->msg);
    free(e);
    entries_total--;
}

/* A result the session lets go of: its bytes go back to the budget
 * (WebSocket sessions; a batch's response holds them all). */
static void val_let_go(dsq_cw_session *s, cw_val *v)
{
    if (!s->batch)
        dsq_budget_release(&s->budget, v->held);
    v->held = 0;
}

static void export_free(dsq_cw_session *s, cw_export *e)
{
    val_let_go(s, &e->val);
    idmap_del(&s->exports, e->id);
    export_destroy(e);
}

/* Entry `id` as the push being looked at (s->seq), or a message outside
 * any push (0), sees it. A released entry has left the table, as in the
 * protocol; it lives on only for the pushes that arrived before the
 * release and refer to it (cw_export.users), and only they find it. */
static cw_export *export_get(dsq_cw_session *s, int64_t id)
{
    /* A push sees only the results of the pushes before it (and itself,
     * refused by its caller): one that named a later push would wait for
     * it, queued ahead of it, for ever. */
    if (s->seq != 0 && id > s->seq)
        return NULL;
    cw_export *x = idmap_get(&s->exports, id);
    if (x != NULL && x->released && (s->seq == 0 || s->seq > x->released_at))
        return NULL;
    return x;
}

/* A released entry goes once it has settled and no queued push uses it. */
static void export_done_with(dsq_cw_session *s, cw_export *e)
{
    if (e->released && e->state != S_PENDING && e->users == 0)
        export_free(s, e);
}

static void export_release(dsq_cw_session *s, cw_export *e)
{
    e->released = true;
    e->released_at = s->pushes;
    export_done_with(s, e);
}

static cw_import *import_get_or_new(dsq_cw_session *s, int64_t id)
{
    cw_import *im = idmap_get(&s->imports, id);
    if (im == NULL && (im = entry_new(s, &s->imports, id, sizeof *im)) != NULL)
        im->id = id;
    return im;
}

static void import_destroy(cw_import *im)
{
    json_decref(im->value);
    free(im->msg);
    free(im);
    entries_total--;
}

static void import_free(dsq_cw_session *s, cw_import *im)
{
    idmap_del(&s->imports, im->id);
    import_destroy(im);
}

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

static void send_msg(dsq_cw_session *s, const dsq_buf *b)
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

static void abort_session(dsq_cw_session *s, const char *fmt, ...)
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
    send_msg(s, &b);
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

/* ---- expressions ------------------------------------------------------------------------ */

/* The import table of a map's instructions: captures (negative), the
 * input (0) and earlier results (positive). */
typedef struct mapctx {
    cw_val *caps;
    size_t ncaps;
    const cw_val *input;
    cw_val *results;
    size_t nresults; /* results so far */
} mapctx;

static int fail(dsq_cw_session *s, dsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(dsq_cw_session *s, dsq_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof s->why, fmt, ap);
    va_end(ap);
    s->why_code = code;
    return -1;
}

/* A protocol error: the session aborts (and the evaluation fails). */
#define bad(s, ...) (abort_session((s), __VA_ARGS__), fail((s), DSQ_CODE_INVALID_REQUEST, __VA_ARGS__))

static json_t *eval(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool *undef);

/* The value of a V_DATA as a tree, made from its text when first asked. */
static json_t *val_tree(dsq_cw_session *s, cw_val *v)
{
    if (v->tree == NULL && v->text != NULL) {
        json_error_t je;
        json_t *j = json_loadb(v->text, v->len, JSON_DECODE_ANY, &je);
        bool undef = false;
        if (j != NULL) {
            v->tree = eval(s, j, 0, NULL, &undef);
            json_decref(j);
        }
        if (v->tree == NULL && undef)
            v->tree = json_null();
    }
    return v->tree;
}

static bool is_tag(json_t *e, const char *tag)
{
    json_t *t = json_array_get(e, 0);
    return json_is_string(t) && strcmp(json_string_value(t), tag) == 0;
}

/* Follow `path` (strings and numbers) into a tree. Borrowed, or NULL. */
static json_t *follow(json_t *tree, json_t *path)
{
    size_t i;
    json_t *p;
    json_array_foreach(path, i, p) {
        const char *k = json_string_value(p);
        char *end = NULL;
        if (json_is_array(tree) && k != NULL && *k >= '0' && *k <= '9') {
            /* JavaScript's row["0"]: an index given as a string */
            unsigned long long ix = strtoull(k, &end, 10);
            tree = *end == '\0' ? json_array_get(tree, (size_t)ix) : NULL;
        } else if (k != NULL) {
            tree = json_object_get(tree, k);
        } else if (json_is_integer(p) && json_is_array(tree) && json_integer_value(p) >= 0) {
            tree = json_array_get(tree, (size_t)json_integer_value(p));
        } else {
            return NULL;
        }
        if (tree == NULL)
            return NULL;
    }
    return tree;
}

static bool valid_path(json_t *path)
{
    size_t i;
    json_t *p;
    if (!json_is_array(path))
        return false;
    json_array_foreach(path, i, p) if (!json_is_string(p) && !json_is_integer(p)) return false;
    return true;
}

/* An id in a message: an integer within ±2^53. */
static bool get_id(json_t *j, int64_t *out)
{
    if (!json_is_integer(j))
        return false;
    json_int_t v = json_integer_value(j);
    if (v > 9007199254740991ll || v < -9007199254740991ll)
        return false;
    *out = v;
    return true;
}

/* Is everything `e` references settled? 1 yes, 0 not yet, -1 an error (in
 * s->why). Nothing changes. */
static int ready(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool top)
{
    if (depth > s->lim.max_depth) {
        abort_session(s, "an expression nested deeper than %d", s->lim.max_depth);
        return fail(s, DSQ_CODE_INVALID_REQUEST, "expression nested deeper than %d", s->lim.max_depth);
    }
    if (json_is_object(e)) {
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v) {
            int r = ready(s, v, depth + 1, mc, false);
            if (r != 1)
                return r;
        }
        return 1;
    }
    if (!json_is_array(e))
        return 1;
    size_t n = json_array_size(e);
    if (n == 0)
        return bad(s, "an empty array is not an expression");
    json_t *first = json_array_get(e, 0);
    if (json_is_array(first)) {
        if (n != 1)
            return bad(s, "an array expression is [[...]]");
        size_t i;
        json_t *v;
        json_array_foreach(first, i, v) {
            int r = ready(s, v, depth + 1, mc, false);
            if (r != 1)
                return r;
        }
        return 1;
    }
    if (is_tag(e, "pipeline") || is_tag(e, "import")) {
        int64_t id = 0;
        if (n < 2 || n > 4 || !get_id(json_array_get(e, 1), &id) ||
            (n >= 3 && !valid_path(json_array_get(e, 2))) ||
            (n == 4 && !json_is_array(json_array_get(e, 3))))
            return bad(s, "malformed %s expression", json_string_value(first));
        if (n == 4 && !top)
            return fail(s, DSQ_CODE_INVALID_REQUEST,
                        "a call inside another call's arguments is not supported");
        if (mc == NULL) {
            cw_export *x = export_get(s, id);
            if (x == NULL)
                return bad(s, "no such entry on the exports table: %lld", (long long)id);
            if (x == s->current)
                return bad(s, "push %lld refers to its own result", (long long)id);
            if (x->state == S_PENDING)
                return 0;
        } else if ((id < 0 && (size_t)-id > mc->ncaps) || (id > 0 && (size_t)id > mc->nresults)) {
            return bad(s, "map instruction refers to %lld, which is not there", (long long)id);
        }
        if (n == 4) {
            size_t i;
            json_t *v;
            json_array_foreach(json_array_get(e, 3), i, v) {
                int r = ready(s, v, depth + 1, mc, false);
                if (r != 1)
                    return r;
            }
        }
        return 1;
    }
    if (is_tag(e, "promise") && mc == NULL) {
        int64_t id = 0;
        if (n != 2 || !get_id(json_array_get(e, 1), &id))
            return bad(s, "malformed promise expression");
        cw_import *im = idmap_get(&s->imports, id);
        return im != NULL && im->state == S_PENDING ? 0 : 1;
    }
    if (is_tag(e, "remap") && !top)
        return fail(s, DSQ_CODE_INVALID_REQUEST, "remap inside another expression is not supported");
    if (is_tag(e, "remap")) {
        int64_t id = 0;
        if (n != 5 || !get_id(json_array_get(e, 1), &id) || !valid_path(json_array_get(e, 2)) ||
            !json_is_array(json_array_get(e, 3)) || !json_is_array(json_array_get(e, 4)))
            return bad(s, "malformed remap expression");
        cw_export *x = export_get(s, id);
        if (x == NULL)
            return bad(s, "no such entry on the exports table: %lld", (long long)id);
        if (x == s->current)
            return bad(s, "push %lld refers to its own result", (long long)id);
        return x->state == S_PENDING ? 0 : 1;
    }
    return 1; /* the other tags are checked by eval */
}

/* Import a stub or promise the client introduces: one more reference. */
static cw_import *introduce(dsq_cw_session *s, int64_t id, bool promise)
{
    cw_import *im = import_get_or_new(s, id);
    if (im == NULL)
        return NULL;
    if (im->refs == 0 && promise) {
        im->promise = true;
        im->state = S_PENDING;
    } else if (im->refs == 0) {
        im->state = S_DONE;
    }
    im->refs++;
    return im;
}

/* A reference to an entry: the tree of its value at `path`, or a stub
 * marker. New reference, or NULL with s->why set. */
static json_t *eval_ref(dsq_cw_session *s, cw_val *v, json_t *path)
{
    if (v->kind != V_DATA) {
        if (json_array_size(path) != 0)
            return fail(s, DSQ_CODE_INVALID_REQUEST, "a property of a stub is not a value"), NULL;
        if (v->kind == V_CLIENT)
            return json_pack("{s:I}", "$clientStub", (json_int_t)v->client);
        return json_pack("{s:s}", "$stub", v->kind == V_DB ? v->db : "");
    }
    json_t *tree = val_tree(s, v);
    json_t *at = tree ? follow(tree, path) : NULL;
    if (at == NULL)
        return json_null(); /* a missing property is undefined: null */
    return json_incref(at);
}

/* Evaluate `e` (ready) into a tree. New reference; NULL with *undef set
 * for undefined, or NULL with s->why set. */
static json_t *eval(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool *undef)
{
    *undef = false;
    if (depth > s->lim.max_depth) {
        abort_session(s, "an expression nested deeper than %d", s->lim.max_depth);
        return fail(s, DSQ_CODE_INVALID_REQUEST, "expression nested deeper than %d", s->lim.max_depth), NULL;
    }
    if (json_is_object(e) && mc == NULL) {
        /* A message is evaluated once: change it in place instead of
         * building a copy (maps run their instructions many times, so they
         * copy, below). */
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(e, tmp, k, v) {
            bool u;
            json_t *x = eval(s, v, depth + 1, mc, &u);
            if (x == NULL && !u)
                return NULL;
            if (x == NULL)
                json_object_del(e, k); /* an undefined member is left out */
            else if (x != v)
                json_object_set_new(e, k, x);
            else
                json_decref(x);
        }
        return json_incref(e);
    }
    if (json_is_object(e)) {
        json_t *o = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v) {
            bool u;
            json_t *x = eval(s, v, depth + 1, mc, &u);
            if (x == NULL && !u) {
                json_decref(o);
                return NULL;
            }
            if (x != NULL)
                json_object_set_new(o, k, x); /* an undefined member is left out */
        }
        return o;
    }
    if (!json_is_array(e))
        return json_incref(e);
    size_t n = json_array_size(e);
    json_t *first = json_array_get(e, 0);
    if (n == 1 && json_is_array(first) && mc == NULL) { /* in place, as for objects */
        size_t i;
        json_t *v;
        json_array_foreach(first, i, v) {
            bool u;
            json_t *x = eval(s, v, depth + 1, mc, &u);
            if (x == NULL && !u)
                return NULL;
            if (x == NULL)
                json_array_set_new(first, i, json_null());
            else if (x != v)
                json_array_set_new(first, i, x);
            else
                json_decref(x);
        }
        return json_incref(first);
    }
    if (n == 1 && json_is_array(first)) {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(first, i, v) {
            bool u;
            json_t *x = eval(s, v, depth + 1, mc, &u);
            if (x == NULL && !u) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, x ? x : json_null());
        }
        return a;
    }
    const char *tag = json_string_value(first);
    if (tag == NULL)
        return bad(s, "an array expression must be escaped as [[...]]"), NULL;
    json_t *a1 = json_array_get(e, 1);
    if (strcmp(tag, "undefined") == 0 && n == 1) {
        *undef = true;
        return NULL;
    }
    if ((strcmp(tag, "inf") == 0 || strcmp(tag, "-inf") == 0 || strcmp(tag, "nan") == 0) && n == 1)
        return json_pack("{s:s}", "$float", tag); /* SQL refuses them as parameters */
    if (strcmp(tag, "bigint") == 0 && n == 2 && json_is_string(a1)) {
        const char *d = json_string_value(a1);
        size_t len = json_string_length(a1);
        if (len > s->lim.max_bigint_digits) {
            abort_session(s, "a bigint of %zu characters is longer than %zu", len,
                          s->lim.max_bigint_digits);
            return fail(s, DSQ_CODE_INVALID_REQUEST, "a bigint of %zu characters is longer than %zu",
                        len, s->lim.max_bigint_digits), NULL;
        }
        return json_pack("{s:s#}", "$bigint", d, len);
    }
    if (strcmp(tag, "bytes") == 0 && (n == 2 || n == 3) && json_is_string(a1))
        return json_pack("{s:O}", "$bytes", a1);
    if (strcmp(tag, "date") == 0 && n == 2 && (json_is_number(a1) || json_is_null(a1)))
        return json_incref(a1); /* ms since the epoch; null for an invalid Date */
    if (strcmp(tag, "error") == 0 && n >= 3 && json_is_string(a1) && json_is_string(json_array_get(e, 2)))
        return json_pack("{s:O,s:O}", "name", a1, "message", json_array_get(e, 2));
    if ((strcmp(tag, "pipeline") == 0 || strcmp(tag, "import") == 0) && n >= 2 && n <= 3) {
        int64_t id = 0;
        get_id(a1, &id);
        json_t *path = n == 3 ? json_array_get(e, 2) : NULL;
        json_t *none = json_array();
        json_t *r = NULL;
        if (mc == NULL) {
            cw_export *x = export_get(s, id);
            if (x == NULL || x->state == S_PENDING)
                fail(s, DSQ_CODE_INVALID_REQUEST, "no settled entry %lld", (long long)id);
            else if (x->state == S_FAILED)
                fail(s, x->code, "%s", x->msg ? x->msg : "failed");
            else
                r = eval_ref(s, &x->val, path ? path : none);
        } else {
            cw_val *v = id < 0 ? &mc->caps[-id - 1] : id == 0 ? (cw_val *)mc->input : &mc->results[id - 1];
            r = eval_ref(s, v, path ? path : none);
        }
        json_decref(none);
        return r;
    }
    if ((strcmp(tag, "export") == 0 || strcmp(tag, "promise") == 0) && n == 2 && mc == NULL) {
        int64_t id = 0;
        if (!get_id(a1, &id))
            return fail(s, DSQ_CODE_INVALID_REQUEST, "malformed %s expression", tag), NULL;
        bool promise = strcmp(tag, "promise") == 0;
        /* A push's stubs and promises were introduced when it arrived
         * (introduce_all); a resolve's are introduced here. */
        cw_import *im = idmap_get(&s->imports, id);
        if (im == NULL)
            im = introduce(s, id, promise);
        if (im == NULL)
            return fail(s, DSQ_CODE_RESOURCE_EXHAUSTED, "session aborted"), NULL;
        if (!promise)
            return json_pack("{s:I}", "$clientStub", (json_int_t)id);
        if (im->state == S_FAILED)
            return fail(s, im->code, "%s", im->msg ? im->msg : "rejected"), NULL;
        return json_incref(im->value ? im->value : json_null());
    }
    if (strcmp(tag, "pipe") == 0 || strcmp(tag, "readable") == 0 || strcmp(tag, "writable") == 0 ||
        strcmp(tag, "blob") == 0)
        return fail(s, DSQ_CODE_INVALID_REQUEST, "streams (%s) are not supported by dosqld", tag), NULL;
    return bad(s, "unknown or malformed expression '%.40s'", tag), NULL;
}

/* A tree back to a Cap'n Web expression. */
static void put_tree(dsq_buf *b, json_t *t)
{
    switch (json_typeof(t)) {
    case JSON_OBJECT: {
        json_t *big = json_object_get(t, "$bigint");
        json_t *bytes = json_object_get(t, "$bytes");
        if (json_object_size(t) == 1 && json_is_string(big)) {
            dsq_buf_puts(b, "[\"bigint\",");
            dsq_json_string(b, json_string_value(big), json_string_length(big));
            dsq_buf_puts(b, "]");
            return;
        }
        if (json_object_size(t) == 1 && json_is_string(bytes)) {
            dsq_buf_puts(b, "[\"bytes\",");
            dsq_json_string(b, json_string_value(bytes), json_string_length(bytes));
            dsq_buf_puts(b, "]");
            return;
        }
        const char *k;
        json_t *v;
        bool first = true;
        dsq_buf_puts(b, "{");
        json_object_foreach(t, k, v) {
            dsq_buf_puts(b, first ? "" : ",");
            first = false;
            dsq_json_string(b, k, strlen(k));
            dsq_buf_puts(b, ":");
            put_tree(b, v);
        }
        dsq_buf_puts(b, "}");
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        dsq_buf_puts(b, "[[");
        json_array_foreach(t, i, v) {
            dsq_buf_puts(b, i ? "," : "");
            put_tree(b, v);
        }
        dsq_buf_puts(b, "]]");
        return;
    }
    default: {
        char *text = json_dumps(t, JSON_COMPACT | JSON_ENCODE_ANY);
        dsq_buf_puts(b, text ? text : "null");
        free(text);
        return;
    }
    }
}

/* ---- settling exports ----------------------------------------------------------------------- */

static int64_t export_stub(dsq_cw_session *s, const cw_val *v);

/* The expression that resolves to `v`. */
static void put_val(dsq_cw_session *s, dsq_buf *b, cw_val *v)
{
    if (v->kind == V_DATA && v->text != NULL) {
        dsq_buf_append(b, v->text, v->len);
    } else if (v->kind == V_DATA) {
        put_tree(b, v->tree ? v->tree : json_null());
    } else if (v->kind == V_CLIENT) {
        dsq_buf_printf(b, "[\"import\",%lld]", (long long)v->client);
    } else {
        int64_t id = export_stub(s, v);
        dsq_buf_printf(b, "[\"export\",%lld]", (long long)id);
    }
}

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
        put_val(s, &b, &e->val);
    } else {
        dsq_buf_printf(&b, "[\"reject\",%lld,", (long long)e->id);
        put_error(&b, e->code, e->msg ? e->msg : "failed");
    }
    dsq_buf_puts(&b, "]");
    send_msg(s, &b);
    dsq_buf_free(&b);
}

static void batch_check(dsq_cw_session *s);

/* A stub we hand to the client gets an export id of our choosing. */
static int64_t export_stub(dsq_cw_session *s, const cw_val *v)
{
    int64_t id = --s->next_neg;
    cw_export *e = export_new(s, id);
    if (e == NULL)
        return id;
    e->state = S_DONE;
    e->val = val_stub_copy(v);
    return id;
}

static void settle_done(dsq_cw_session *s, cw_export *e, cw_val *v)
{
    if (e->state != S_PENDING) {
        val_let_go(s, v);
        val_clear(v);
        return;
    }
    e->state = S_DONE;
    e->val = *v;
    *v = (cw_val){0};
    if (e->pulled)
        s->waiting--;
    send_settled(s, e);
    if (e->stream && e->sent)
        export_release(s, e); /* implicitly, once sent */
    else
        export_done_with(s, e);
    pump(s);
    batch_check(s);
}

static void settle_failed(dsq_cw_session *s, cw_export *e, dsq_code code, const char *msg)
{
    if (e->state != S_PENDING)
        return;
    e->state = S_FAILED;
    e->code = code;
    e->msg = strdup(msg);
    if (e->pulled)
        s->waiting--;
    send_settled(s, e);
    if (e->stream && e->sent)
        export_release(s, e); /* implicitly, once sent */
    else
        export_done_with(s, e);
    pump(s);
    batch_check(s);
}

/* ---- calls ------------------------------------------------------------------------------------ */

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

static void map_step_done(struct cw_map *m, size_t elem, cw_val *v, dsq_code code, const char *msg);

static void release_import(dsq_cw_session *s, struct cw_import *im);

/* Release the client's stubs a call's arguments introduced and no one
 * keeps (every one but a queryStream's callback, which goes when the
 * stream ends). */
static void release_stubs(dsq_cw_session *s, json_t *t, int depth)
{
    if (depth > 64)
        return;
    json_t *id = json_object_get(t, "$clientStub");
    if (json_is_integer(id) && json_object_size(t) == 1) {
        cw_import *im = idmap_get(&s->imports, json_integer_value(id));
        if (im != NULL && !im->held && im->job == NULL)
            release_import(s, im);
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
        cw_import *im = idmap_get(&s->imports, j->cb);
        if (im != NULL)
            release_import(s, im);
    }
    json_decref(j->params);
    free(j);
    s->running--;
    if (!s->closed)
        pump(s); /* a push may have waited for it to end */
    unref(s);
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
        map_step_done(j->map, j->elem, NULL, DSQ_CODE_UNKNOWN, "the session closed");
    else if (j->map)
        map_step_done(j->map, j->elem, err ? NULL : &v, code, err ? msg : NULL);
    else if (!s->closed && j->e && err == 0)
        settle_done(s, j->e, &v);
    else if (!s->closed && j->e)
        settle_failed(s, j->e, code, msg);
    val_let_go(s, &v); /* not taken by an entry */
    val_clear(&v);
    job_free(j);
}

static void on_dosql_done(void *ud, int err, dsq_code code, const char *text, size_t len, dsq_buf *owner,
                          uint64_t held)
{
    job_finish(ud, err, code, text, len, owner, held);
}

/* Call the client's function `cb` with one argument (Cap'n Web text) and
 * pull its answer: the import entry that will hold the answer, or NULL. */
static cw_import *call_client(dsq_cw_session *s, int64_t cb, const char *text, size_t len)
{
    if (s->closed || s->aborted)
        return NULL;
    int64_t id = ++s->next_call;
    cw_import *im = import_get_or_new(s, id);
    if (im == NULL)
        return NULL;
    im->state = S_PENDING;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "[\"push\",[\"pipeline\",%lld,[],[", (long long)cb);
    dsq_buf_append(&b, text, len);
    dsq_buf_puts(&b, "]]]");
    send_msg(s, &b);
    dsq_buf_reset(&b);
    dsq_buf_printf(&b, "[\"pull\",%lld]", (long long)id);
    send_msg(s, &b);
    dsq_buf_free(&b);
    return im;
}

/* queryStream's chunk: call the client's function with it; the stream
 * waits for its answer. */
static int on_chunk(void *ud, dsq_dosql_op *op, const char *text, size_t len)
{
    cw_job *j = ud;
    cw_import *im = call_client(j->s, j->cb, text, len);
    if (im == NULL)
        return -1;
    im->job = j;
    j->op = op;
    return 1;
}

/* Release our reference to the client's stub `id`. */
static void release_import(dsq_cw_session *s, cw_import *im)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, "[\"release\",%lld,%lld]", (long long)im->id,
                   (long long)(im->refs > 0 ? im->refs : 1));
    send_msg(s, &b);
    dsq_buf_free(&b);
    import_free(s, im);
}

/* The client answered our call `im` (a callback of queryStream). */
static void sub_answered(dsq_cw_session *s, struct cw_sub *u, bool ok);

static void call_settled(dsq_cw_session *s, cw_import *im)
{
    if (im->sub != NULL) { /* a subscription's callback answered */
        struct cw_sub *u = im->sub;
        bool ok = im->state == S_DONE;
        release_import(s, im);
        sub_answered(s, u, ok);
        return;
    }
    cw_job *j = im->job;
    bool ok = im->state == S_DONE;
    im->job = NULL;
    release_import(s, im); /* [release, id, 1]: we no longer need the answer */
    if (j != NULL && j->op != NULL) {
        dsq_dosql_op *op = j->op;
        j->op = NULL;
        dsq_dosql_stream_resume(op, !ok);
    }
}

static void start_subscription(dsq_cw_session *s, cw_export *e, const char *db, json_t *args);

/* Start an engine call of `method` with the evaluated arguments. */
static void start_call(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem,
                       const char *db, const char *method, json_t *args)
{
    json_t *req = json_array_get(args, 0);
    if (req != NULL && !json_is_object(req) && !json_is_null(req)) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "%s takes one request object", method);
        goto refuse;
    }
    /* An argument no one reads is refused, as unknown fields are: the
     * callback methods take one after the request, the others none. */
    bool callback = strcmp(method, "queryStream") == 0 || strcmp(method, "subscribeCDC") == 0;
    if (json_array_size(args) > (callback ? 2u : 1u)) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "%.100s takes %s, not %zu arguments", method,
             callback ? "a request object and a callback" : "one request object", json_array_size(args));
        goto refuse;
    }
    if (strcmp(method, "subscribeCDC") == 0 && m == NULL) {
        start_subscription(s, e, db, args);
        return;
    }
    if (!dsq_dosql_has_method(method)) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "no method '%.100s' on a database", method);
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
        fail(s, DSQ_CODE_INVALID_REQUEST, s->batch ? "queryStream needs a WebSocket session"
                                                   : "queryStream(request, callback) needs a callback function");
        goto refuse;
    }
    cw_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        fail(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
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
        cw_import *im = idmap_get(&s->imports, j->cb);
        if (im != NULL)
            im->held = true; /* until the stream ends (job_free) */
        chunk = on_chunk;
    }
    s->refs++;
    s->running++;
    dsq_dosql_call(s->dosql, j->db, method, j->params, DSQ_ENC_CAPNWEB, on_dosql_done, chunk, j);
    return;
refuse:
    if (m)
        map_step_done(m, elem, NULL, s->why_code, s->why);
    else
        settle_failed(s, e, s->why_code, s->why);
}

/* ---- CDC subscriptions: subscribeCDC(request, callback) ------------------------------------- */

/* The callback gets each event; at most SUB_WINDOW calls of it are
 * unanswered at a time, which is the subscription's flow control. The
 * result is a stub whose unsubscribe() ends it; so does the session's end.
 * A running subscription holds a reference on the session; its memory
 * goes with the session's (stubs may name it until then). */
#define SUB_WINDOW 32

typedef struct cw_sub {
    dsq_cw_session *s;
    dsq_cdcsub *sub;        /* running; NULL once stopped */
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
    cw_import *im = s->closed ? NULL : idmap_get(&s->imports, u->cb);
    if (im != NULL)
        release_import(s, im);
    s->refs--;
}

/* Stop it (unsubscribe(), a callback that threw, the session's end). */
static void sub_stop(cw_sub *u)
{
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
            settle_failed(s, e, code, msg);
    } else {
        cw_val v = {.kind = V_SUB, .sub = u};
        if (!s->closed)
            settle_done(s, e, &v);
        else
            val_clear(&v);
    }
    unref(s);
}

/* Call the subscription's callback with one argument (Cap'n Web text). */
static int sub_call(cw_sub *u, const char *text, size_t len)
{
    cw_import *im = call_client(u->s, u->cb, text, len);
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
    unref(s);
}

/* subscribeCDC(request, callback) on database `db`. */
static void start_subscription(dsq_cw_session *s, cw_export *e, const char *db, json_t *args)
{
    json_t *req = json_array_get(args, 0);
    json_t *cb = json_object_get(json_array_get(args, 1), "$clientStub");
    const char *tables[1000];
    char why[512];
    dsq_cdcsub_req r = {.db = db, .enc = DSQ_ENC_CAPNWEB};
    json_t *d = json_object_get(req, "database");
    if (json_is_object(req) && dsq_dosql_check_fields("subscribeCDC", req, why, sizeof why) != 0) {
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (d != NULL && !(json_is_string(d) && strcmp(json_string_value(d), db) == 0)) {
        snprintf(why, sizeof why, "\"database\" differs from the called database '%s'", db);
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, why);
        return;
    }
    if (s->batch) {
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "subscribeCDC needs a WebSocket session");
        return;
    }
    if (!json_is_integer(cb)) {
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "subscribeCDC(request, callback) needs a callback function");
        return;
    }
    if (!(s->t.scope(s->t.ud, db) & DSQ_SCOPE_R)) {
        settle_failed(s, e, DSQ_CODE_FORBIDDEN, "subscribing needs read scope on the database");
        return;
    }
    if (req != NULL && !json_is_null(req) &&
        (!json_is_object(req) || dsq_cdcsub_parse(req, &r, tables, 1000, why, sizeof why) != 0)) {
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, json_is_object(req) ? why : "subscribeCDC takes one request object");
        return;
    }
    cw_sub *u = calloc(1, sizeof *u);
    if (u == NULL) {
        settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    u->s = s;
    u->e = e;
    u->cb = json_integer_value(cb);
    u->next = s->subs;
    s->subs = u;
    cw_import *im = idmap_get(&s->imports, u->cb);
    if (im != NULL)
        im->held = true; /* until the subscription stops */
    dsq_cdcsub_sink sink = {sub_started, sub_event, sub_can_send, NULL, sub_ended, u, NULL};
    dsq_code code;
    char msg[600];
    u->sub = dsq_cdcsub_start(s->engine, &r, &sink, &code, msg, sizeof msg);
    if (u->sub == NULL) {
        u->e = NULL;
        if (im != NULL)
            release_import(s, im);
        settle_failed(s, e, code, msg);
        return;
    }
    s->refs++; /* while it runs */
}

/* A callback call of a subscription was answered. */
static void sub_answered(dsq_cw_session *s, cw_sub *u, bool ok)
{
    u->inflight--;
    if (!ok && u->sub != NULL) {
        DSQ_DEBUG("capnweb_cdc_callback_failed", "cb=%lld", (long long)u->cb);
        sub_stop(u); /* the callback threw: no more events */
    } else if (u->sub != NULL && u->inflight == SUB_WINDOW - 1) {
        dsq_cdcsub_writable(u->sub);
    }
    (void)s;
}

static void call_on_stub(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                         json_t *path, json_t *args);

/* Call `path` on target `v` (a stub) with `args` (evaluated); then let go
 * of the client's stubs in them that the call does not keep. */
static void call_on(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                    json_t *path, json_t *args)
{
    s->refs++;
    call_on_stub(s, e, m, elem, v, path, args);
    if (!s->closed && s->imports.n > 0) /* no imports: nothing to let go */
        release_stubs(s, args, 0);
    unref(s);
}

static void call_on_stub(dsq_cw_session *s, cw_export *e, struct cw_map *m, size_t elem, cw_val *v,
                         json_t *path, json_t *args)
{
    const char *method = json_string_value(json_array_get(path, json_array_size(path) - 1));
    if (json_array_size(path) != 1 || method == NULL) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "calls take one method name as their path");
    } else if (v->kind == V_DB) {
        start_call(s, e, m, elem, v->db, method, args);
        return;
    } else if (v->kind == V_MAIN && strcmp(method, "database") == 0) {
        json_t *name = json_array_get(args, 0);
        const char *db = json_string_value(name);
        if (json_array_size(args) > 1) {
            fail(s, DSQ_CODE_INVALID_REQUEST, "database(name) takes one argument, not %zu",
                 json_array_size(args));
        } else if (db == NULL || json_string_length(name) != strlen(db) || !dsq_db_name_valid(db)) {
            fail(s, DSQ_CODE_INVALID_REQUEST,
                 "database(name): invalid name: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with '.'");
        } else if (s->t.scope(s->t.ud, db) == 0) {
            fail(s, DSQ_CODE_FORBIDDEN, "the token does not grant access to database '%s'", db);
        } else {
            cw_val stub = {.kind = V_DB};
            dsq_strlcpy(stub.db, db, sizeof stub.db);
            if (m)
                map_step_done(m, elem, &stub, DSQ_CODE_UNKNOWN, NULL);
            else
                settle_done(s, e, &stub);
            return;
        }
    } else if (v->kind == V_SUB && strcmp(method, "unsubscribe") == 0) {
        cw_sub *u = v->sub;
        sub_stop(u);
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_puts(&b, "{\"unsubscribed\":true,\"lastLsn\":");
        dsq_cw_bigint(&b, (int64_t)u->last_lsn);
        dsq_buf_puts(&b, "}");
        cw_val r = {.kind = V_DATA, .len = b.len};
        size_t cap;
        r.text = dsq_buf_steal(&b, &cap);
        if (r.text == NULL)
            r.text = strdup("null"), r.len = 4;
        if (m)
            map_step_done(m, elem, &r, DSQ_CODE_UNKNOWN, NULL);
        else
            settle_done(s, e, &r);
        return;
    } else if (v->kind == V_SUB) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "a subscription has one method: unsubscribe()");
    } else if (v->kind == V_MAIN) {
        fail(s, DSQ_CODE_INVALID_REQUEST, "no method '%.100s' here: use database(name) first", method);
    } else {
        fail(s, DSQ_CODE_INVALID_REQUEST, "'%.100s' is not a function", method);
    }
    if (m)
        map_step_done(m, elem, NULL, s->why_code, s->why);
    else
        settle_failed(s, e, s->why_code, s->why);
}

/* ---- maps --------------------------------------------------------------------------------------- */

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
        val_clear(&m->vals[i]);
    for (size_t i = 0; i < m->n; i++)
        val_clear(&m->in[i]);
    for (size_t i = 0; i < m->ncaps; i++)
        val_clear(&m->caps[i]);
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
            put_val(s, &b, &m->vals[i * m->ninstr + m->ninstr - 1]);
        }
        if (!m->single)
            dsq_buf_puts(&b, "]]");
        cw_val v = {.kind = V_DATA, .len = b.len};
        size_t cap;
        v.text = dsq_buf_steal(&b, &cap);
        if (v.text == NULL)
            v.text = strdup(m->single ? "null" : "[[]]"), v.len = strlen(v.text);
        settle_done(s, m->e, &v);
    }
    map_free(m);
    unref(s);
}

static void map_step_done(cw_map *m, size_t elem, cw_val *v, dsq_code code, const char *msg)
{
    if (v == NULL) {
        if (!m->failed) {
            m->failed = true;
            settle_failed(m->s, m->e, code, msg);
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
        if (ready(s, ins, 0, &mc, true) != 1) {
            map_step_done(m, elem, NULL, s->why_code, s->why);
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
                json_t *x = eval(s, a, 1, &mc, &u);
                if (x == NULL && !u) {
                    ok = false;
                    break;
                }
                json_array_append_new(args, x ? x : json_null());
            }
            if (ok)
                call_on(s, NULL, m, elem, target, json_array_get(ins, 2), args);
            else
                map_step_done(m, elem, NULL, s->why_code, s->why);
            json_decref(args);
            map_release(m); /* map_step_done goes on with this element */
            return;
        }
        bool u;
        json_t *x = eval(s, ins, 0, &mc, &u);
        if (x == NULL && !u) {
            map_step_done(m, elem, NULL, s->why_code, s->why);
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

/* remap: apply the instructions to each element of the target. */
static void start_map(dsq_cw_session *s, cw_export *e, json_t *expr)
{
    int64_t id = 0;
    get_id(json_array_get(expr, 1), &id);
    cw_export *x = export_get(s, id);
    if (x->state == S_FAILED) {
        settle_failed(s, e, x->code, x->msg ? x->msg : "failed");
        return;
    }
    cw_map *m = calloc(1, sizeof *m);
    if (m == NULL) {
        settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
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
            cw_export *cx = export_get(s, cid);
            if (cx == NULL || cx->state != S_DONE) {
                why = "a map capture refers to no settled entry";
                break;
            }
            if (cx->val.kind != V_DATA)
                m->caps[i] = val_stub_copy(&cx->val);
            else
                m->caps[i] = (cw_val){.kind = V_DATA};
            if (cx->val.kind == V_DATA) {
                json_t *t = val_tree(s, &cx->val);
                m->caps[i].tree = json_incref(t ? t : json_null());
            }
        } else if (is_tag(c, "export")) {
            if (introduce(s, cid, false) == NULL) {
                why = "session aborted";
                break;
            }
            m->caps[i] = (cw_val){.kind = V_CLIENT, .client = cid};
        } else {
            why = "a map capture is [\"import\", id] or [\"export\", id]";
            break;
        }
    }
    json_t *target = why ? NULL : eval_ref(s, &x->val, json_array_get(expr, 2));
    if (why != NULL || target == NULL || m->ninstr == 0) {
        settle_failed(s, e, DSQ_CODE_INVALID_REQUEST,
                      why ? why : target == NULL ? s->why : "a map needs instructions");
        json_decref(target);
        map_free(m);
        return;
    }
    if (json_is_null(target)) { /* mapping nothing gives nothing */
        json_decref(target);
        map_free(m);
        cw_val v = {.kind = V_DATA, .text = strdup("null"), .len = 4};
        settle_done(s, e, &v);
        return;
    }
    m->single = !json_is_array(target);
    m->inputs = m->single ? json_pack("[o]", target) : target;
    m->n = json_array_size(m->inputs);
    m->vals = calloc(m->n * m->ninstr + 1, sizeof *m->vals);
    m->in = calloc(m->n + 1, sizeof *m->in);
    m->pc = calloc(m->n + 1, sizeof *m->pc);
    if (m->vals == NULL || m->in == NULL || m->pc == NULL) {
        settle_failed(s, e, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
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

/* ---- delivering pushes -------------------------------------------------------------------------- */

/* Deliver a ready task: its call, map, or value. */
static void deliver(dsq_cw_session *s, cw_task *t)
{
    cw_export *e = t->e;
    json_t *x = t->expr;
    size_t n = json_is_array(x) ? json_array_size(x) : 0;
    if (n == 5 && is_tag(x, "remap")) {
        start_map(s, e, x);
        return;
    }
    if (n == 4 && (is_tag(x, "pipeline") || is_tag(x, "import"))) {
        int64_t id = 0;
        get_id(json_array_get(x, 1), &id);
        cw_export *target = export_get(s, id);
        if (target->state == S_FAILED) {
            settle_failed(s, e, target->code, target->msg ? target->msg : "failed");
            return;
        }
        json_t *args = json_array();
        size_t i;
        json_t *a;
        json_array_foreach(json_array_get(x, 3), i, a) {
            bool u;
            json_t *v = eval(s, a, 1, NULL, &u);
            if (v == NULL && !u) {
                json_decref(args);
                settle_failed(s, e, s->why_code, s->why);
                return;
            }
            json_array_append_new(args, v ? v : json_null());
        }
        json_t *path = json_array_get(x, 2);
        cw_val *tv = &target->val;
        if (tv->kind == V_DATA) {
            settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "a value has no methods to call");
        } else {
            call_on(s, e, NULL, 0, tv, path, args);
        }
        json_decref(args);
        return;
    }
    /* A value: data, or a stub (a pipeline with no call). */
    if (n >= 2 && n <= 3 && (is_tag(x, "pipeline") || is_tag(x, "import"))) {
        int64_t id = 0;
        get_id(json_array_get(x, 1), &id);
        cw_export *target = export_get(s, id);
        json_t *path = json_array_get(x, 2);
        if (target->state == S_FAILED) {
            settle_failed(s, e, target->code, target->msg ? target->msg : "failed");
            return;
        }
        if (target->val.kind != V_DATA && json_array_size(path) == 0) {
            cw_val v = val_stub_copy(&target->val);
            settle_done(s, e, &v);
            return;
        }
    }
    bool u;
    json_t *v = eval(s, x, 0, NULL, &u);
    if (v == NULL && !u) {
        settle_failed(s, e, s->why_code, s->why);
        return;
    }
    cw_val val = {.kind = V_DATA, .tree = v ? v : json_null()};
    dsq_buf b = DSQ_BUF_INIT;
    put_tree(&b, val.tree);
    size_t cap;
    val.len = b.len;
    val.text = dsq_buf_steal(&b, &cap);
    settle_done(s, e, &val);
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

/* Deliver tasks in order while the head is ready. */
static void pump(dsq_cw_session *s)
{
    if (s->pumping)
        return; /* the outer pump goes on */
    s->pumping = true;
    s->refs++; /* a delivery may end the session under us */
    while (s->qhead != NULL && !s->closed && !s->aborted && may_deliver(s)) {
        cw_task *t = s->qhead;
        s->current = t->e;
        s->seq = t->e->id; /* it sees what was there when it arrived */
        int r = ready(s, t->expr, 0, NULL, true);
        s->current = NULL;
        if (r == 0) {
            s->seq = 0;
            break;
        }
        s->qhead = t->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        if (r < 0)
            settle_failed(s, t->e, s->why_code, s->why);
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
    unref(s);
}

/* ---- messages ------------------------------------------------------------------------------------ */

/* The stubs and promises a push introduces count when it arrives, once,
 * whenever it is evaluated: a promise it passes must be awaited, so it has
 * to be on the import table before the push is first looked at. A map's
 * captures are introduced by the map. */
static void introduce_all(dsq_cw_session *s, json_t *e, int depth, cw_task *t)
{
    if (depth > s->lim.max_depth || s->aborted)
        return; /* ready() reports the depth */
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
        cw_import *im = introduce(s, id, promise);
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
        return; /* ready() reports the depth */
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
        cw_export *x = idmap_get(&s->exports, id);
        if (x != NULL && !x->released && x != t->e && (t->nuses == 0 || t->uses[t->nuses - 1] != x)) {
            cw_export **u = realloc(t->uses, (t->nuses + 1) * sizeof *u);
            if (u == NULL) {
                abort_session(s, "out of memory");
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
        export_done_with(s, t->uses[i]);
    }
    free(t->uses);
    t->uses = NULL;
    t->nuses = 0;
}

/* A client's promise that no waiting push needs any more, once settled,
 * is released back to the client and forgotten. */
static void promise_done_with(dsq_cw_session *s, cw_import *im)
{
    if (im->promise && im->users == 0 && im->state != S_PENDING && im->job == NULL)
        release_import(s, im);
}

/* The task was delivered (or failed): its promises lose a user. */
static void task_release_promises(dsq_cw_session *s, cw_task *t)
{
    for (size_t i = 0; i < t->npromises && !s->closed; i++) {
        cw_import *im = idmap_get(&s->imports, t->promises[i]);
        if (im != NULL && --im->users == 0)
            promise_done_with(s, im);
    }
}

static void on_push(dsq_cw_session *s, json_t *expr, bool stream, bool stubs)
{
    cw_task *t = calloc(1, sizeof *t);
    if (t == NULL) {
        abort_session(s, "out of memory");
        return;
    }
    if (stubs) /* the message's text names "export" or "promise" */
        introduce_all(s, expr, 0, t);
    int64_t id = ++s->pushes;
    cw_export *e = s->aborted ? NULL : export_new(s, id);
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
    pump(s);
    if (!behind && s->qhead != NULL && s->qhead->e->id == id) /* it waits for a result */
        task_hold(s, s->qhead->expr, 0, s->qhead);
}

static void on_pull(dsq_cw_session *s, int64_t id)
{
    cw_export *e = export_get(s, id);
    if (e == NULL) {
        abort_session(s, "pull of %lld: no such entry on the exports table", (long long)id);
        return;
    }
    if (!e->pulled && e->state == S_PENDING)
        s->waiting++;
    e->pulled = true;
    send_settled(s, e);
}

static void on_release(dsq_cw_session *s, int64_t id, int64_t count)
{
    cw_export *e = export_get(s, id);
    if (id == 0)
        return; /* the main object stays */
    if (e == NULL) {
        abort_session(s, "release of %lld: no such entry on the exports table", (long long)id);
        return;
    }
    e->refs -= count;
    if (e->refs > 0)
        return;
    /* Freed once settled and delivered to the pushes that use it. */
    export_release(s, e);
}

/* resolve/reject from the client: a promise it passed us, or our call. */
static void on_settle(dsq_cw_session *s, int64_t id, json_t *expr, bool ok)
{
    cw_import *im = idmap_get(&s->imports, id);
    if (im == NULL || im->state != S_PENDING) {
        abort_session(s, "%s of %lld: no such pending import", ok ? "resolve" : "reject", (long long)id);
        return;
    }
    bool u;
    if (ok) {
        json_t *v = eval(s, expr, 0, NULL, &u);
        if (v == NULL && !u) {
            im->state = S_FAILED;
            im->code = s->why_code;
            im->msg = strdup(s->why);
        } else {
            im->state = S_DONE;
            im->value = v ? v : json_null();
        }
    } else {
        json_t *v = eval(s, expr, 0, NULL, &u);
        const char *m = json_string_value(json_object_get(v, "message"));
        im->state = S_FAILED;
        im->code = DSQ_CODE_UNKNOWN;
        im->msg = strdup(m ? m : "rejected by the client");
        json_decref(v);
    }
    if (im->job != NULL || id > 0) {
        call_settled(s, im);
    } else {
        s->refs++;
        pump(s); /* deliver the pushes that waited for it */
        im = idmap_get(&s->imports, id);
        if (im != NULL && !s->closed)
            promise_done_with(s, im);
        unref(s);
    }
    pump(s);
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
        abort_session(s, "a message is an array starting with its type");
    } else if ((strcmp(type, "push") == 0 || strcmp(type, "stream") == 0) && n == 2) {
        on_push(s, json_array_get(m, 1), type[0] == 's', stubs);
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
        cw_export *e = export_new(s, ++s->pushes);
        if (e != NULL)
            settle_failed(s, e, DSQ_CODE_INVALID_REQUEST, "pipes (ReadableStream) are not supported by dosqld");
    } else {
        abort_session(s, "unknown or malformed message '%.40s'", type);
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
        unref(s);
        return;
    }
    log_msg("capnweb_in", msg, len);
    json_error_t je;
    json_t *m = json_loadb(msg, len, 0, &je);
    if (m == NULL)
        abort_session(s, "invalid JSON: %s", je.text);
    else
        dispatch(s, m, names_stubs(msg, len));
    json_decref(m);
    unref(s);
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
    unref(s);
}

/* ---- the session's life ------------------------------------------------------------------------- */

dsq_cw_session *dsq_cw_session_new(dsq_engine *e, const dsq_dosql_limits *dl,
                                   const dsq_cw_limits *cl, const char *db, uint64_t session_id,
                                   bool batch, const dsq_cw_transport *t)
{
    dsq_cw_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->engine = e;
    s->lim = *cl;
    s->t = *t;
    s->batch = batch;
    s->refs = 1;
    if (db)
        snprintf(s->db, sizeof s->db, "%s", db);
    /* The dosql session's own transport is unused (every call comes
     * through dsq_dosql_call) except for scopes. */
    dsq_dosql_transport dt = {t->scope, NULL, NULL, NULL, false, t->ud, NULL};
    s->dosql = dsq_dosql_session_new(e, dl, NULL, session_id, &dt);
    dsq_budget_init(&s->budget);
    if (s->dosql != NULL)
        dsq_dosql_set_budget(s->dosql, &s->budget);
    cw_export *main = s->dosql ? export_new(s, 0) : NULL;
    if (main == NULL) {
        if (s->dosql)
            dsq_dosql_session_close(s->dosql);
        idmap_free(&s->exports);
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
        pump(s);
}

void dsq_cw_batch_end(dsq_cw_session *s)
{
    s->batch_ended = true;
    s->refs++;
    batch_check(s);
    unref(s);
}

static void unref(dsq_cw_session *s)
{
    if (--s->refs > 0)
        return;
    for (size_t i = 0; i < s->exports.cap; i++)
        if (s->exports.vals[i])
            export_destroy(s->exports.vals[i]);
    for (size_t i = 0; i < s->imports.cap; i++)
        if (s->imports.vals[i])
            import_destroy(s->imports.vals[i]);
    idmap_free(&s->exports);
    idmap_free(&s->imports);
    while (s->subs) {
        struct cw_sub *u = s->subs;
        s->subs = u->next;
        free(u);
    }
    free(s);
}

void dsq_cw_session_close(dsq_cw_session *s)
{
    if (s->closed)
        return;
    s->closed = true;
    while (s->qhead) {
        cw_task *t = s->qhead;
        s->qhead = t->next;
        json_decref(t->expr);
        free(t->promises);
        free(t->uses); /* the entries go with the session */
        free(t);
    }
    s->qtail = NULL;
    /* Streams paused on a callback end now. */
    for (size_t i = 0; i < s->imports.cap; i++) {
        cw_import *im = s->imports.vals[i];
        if (im && im->job && im->job->op) {
            dsq_dosql_op *op = im->job->op;
            im->job->op = NULL;
            im->job = NULL;
            dsq_dosql_stream_resume(op, true);
        }
    }
    s->refs++;
    for (cw_sub *u = s->subs; u; u = u->next)
        sub_stop(u); /* no more events */
    dsq_dosql_session_close(s->dosql); /* its transactions roll back */
    unref(s);
    unref(s);
}
