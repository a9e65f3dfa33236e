/* eval — the Cap'n Web expression language: whether an expression is
 * ready (everything it references has settled), its evaluation into a
 * tree in DoSQL's JSON, and values written back as expressions.
 *
 * Expressions: escaped arrays, undefined, inf/-inf/nan, bytes, bigint,
 * date, error, import/pipeline (paths; calls are the caller's),
 * export/promise, remap (checked here, run by map.c). A push's expression
 * is evaluated in place (once); a map's instructions, which run once per
 * element, are copied. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/capnweb/capnweb_int.h"
#include "protocol/value.h"

int dsq__cw_fail(dsq_cw_session *s, dsq_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof s->why, fmt, ap);
    va_end(ap);
    s->why_code = code;
    return -1;
}

/* A protocol error: the session aborts (and the evaluation fails). */
#define bad(s, ...) (dsq__cw_abort((s), __VA_ARGS__), dsq__cw_fail((s), DSQ_CODE_INVALID_REQUEST, __VA_ARGS__))

json_t *dsq__cw_val_tree(dsq_cw_session *s, cw_val *v)
{
    if (v->tree == NULL && v->text != NULL) {
        json_error_t je;
        json_t *j = json_loadb(v->text, v->len, JSON_DECODE_ANY, &je);
        bool undef = false;
        if (j != NULL) {
            v->tree = dsq__cw_eval(s, j, 0, NULL, &undef);
            json_decref(j);
        }
        if (v->tree == NULL && undef)
            v->tree = json_null();
    }
    return v->tree;
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

int dsq__cw_ready(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool top)
{
    if (depth > s->lim.max_depth) {
        dsq__cw_abort(s, "an expression nested deeper than %d", s->lim.max_depth);
        return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "expression nested deeper than %d", s->lim.max_depth);
    }
    if (json_is_object(e)) {
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v) {
            int r = dsq__cw_ready(s, v, depth + 1, mc, false);
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
            int r = dsq__cw_ready(s, v, depth + 1, mc, false);
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
            return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST,
                                "a call inside another call's arguments is not supported");
        if (mc == NULL) {
            cw_export *x = dsq__cw_export_get(s, id);
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
                int r = dsq__cw_ready(s, v, depth + 1, mc, false);
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
        cw_import *im = dsq__cw_import_get(s, id);
        return im != NULL && im->state == S_PENDING ? 0 : 1;
    }
    if (is_tag(e, "remap") && !top)
        return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "remap inside another expression is not supported");
    if (is_tag(e, "remap")) {
        int64_t id = 0;
        if (n != 5 || !get_id(json_array_get(e, 1), &id) || !valid_path(json_array_get(e, 2)) ||
            !json_is_array(json_array_get(e, 3)) || !json_is_array(json_array_get(e, 4)))
            return bad(s, "malformed remap expression");
        cw_export *x = dsq__cw_export_get(s, id);
        if (x == NULL)
            return bad(s, "no such entry on the exports table: %lld", (long long)id);
        if (x == s->current)
            return bad(s, "push %lld refers to its own result", (long long)id);
        return x->state == S_PENDING ? 0 : 1;
    }
    return 1; /* the other tags are checked by eval */
}

cw_import *dsq__cw_introduce(dsq_cw_session *s, int64_t id, bool promise)
{
    cw_import *im = dsq__cw_import_get_or_new(s, id);
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

json_t *dsq__cw_eval_ref(dsq_cw_session *s, cw_val *v, json_t *path)
{
    if (v->kind != V_DATA) {
        if (json_array_size(path) != 0)
            return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "a property of a stub is not a value"), NULL;
        if (v->kind == V_CLIENT)
            return json_pack("{s:I}", "$clientStub", (json_int_t)v->client);
        return json_pack("{s:s}", "$stub", v->kind == V_DB || v->kind == V_KS ? v->db : "");
    }
    json_t *tree = dsq__cw_val_tree(s, v);
    json_t *at = tree ? follow(tree, path) : NULL;
    if (at == NULL)
        return json_null(); /* a missing property is undefined: null */
    return json_incref(at);
}

json_t *dsq__cw_eval(dsq_cw_session *s, json_t *e, int depth, mapctx *mc, bool *undef)
{
    *undef = false;
    if (depth > s->lim.max_depth) {
        dsq__cw_abort(s, "an expression nested deeper than %d", s->lim.max_depth);
        return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "expression nested deeper than %d", s->lim.max_depth), NULL;
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
            json_t *x = dsq__cw_eval(s, v, depth + 1, mc, &u);
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
            json_t *x = dsq__cw_eval(s, v, depth + 1, mc, &u);
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
            json_t *x = dsq__cw_eval(s, v, depth + 1, mc, &u);
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
            json_t *x = dsq__cw_eval(s, v, depth + 1, mc, &u);
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
            dsq__cw_abort(s, "a bigint of %zu characters is longer than %zu", len, s->lim.max_bigint_digits);
            return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "a bigint of %zu characters is longer than %zu",
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
            cw_export *x = dsq__cw_export_get(s, id);
            if (x == NULL || x->state == S_PENDING)
                dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "no settled entry %lld", (long long)id);
            else if (x->state == S_FAILED)
                dsq__cw_fail(s, x->code, "%s", x->msg ? x->msg : "failed");
            else
                r = dsq__cw_eval_ref(s, &x->val, path ? path : none);
        } else {
            cw_val *v = id < 0 ? &mc->caps[-id - 1] : id == 0 ? (cw_val *)mc->input : &mc->results[id - 1];
            r = dsq__cw_eval_ref(s, v, path ? path : none);
        }
        json_decref(none);
        return r;
    }
    if ((strcmp(tag, "export") == 0 || strcmp(tag, "promise") == 0) && n == 2 && mc == NULL) {
        int64_t id = 0;
        if (!get_id(a1, &id))
            return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "malformed %s expression", tag), NULL;
        bool promise = strcmp(tag, "promise") == 0;
        /* A push's stubs and promises were introduced when it arrived
         * (push.c: introduce_all); a resolve's are introduced here. */
        cw_import *im = dsq__cw_import_get(s, id);
        if (im == NULL)
            im = dsq__cw_introduce(s, id, promise);
        if (im == NULL)
            return dsq__cw_fail(s, DSQ_CODE_RESOURCE_EXHAUSTED, "session aborted"), NULL;
        if (!promise)
            return json_pack("{s:I}", "$clientStub", (json_int_t)id);
        if (im->state == S_FAILED)
            return dsq__cw_fail(s, im->code, "%s", im->msg ? im->msg : "rejected"), NULL;
        return json_incref(im->value ? im->value : json_null());
    }
    if (strcmp(tag, "pipe") == 0 || strcmp(tag, "readable") == 0 || strcmp(tag, "writable") == 0 ||
        strcmp(tag, "blob") == 0)
        return dsq__cw_fail(s, DSQ_CODE_INVALID_REQUEST, "streams (%s) are not supported by dosqld", tag), NULL;
    return bad(s, "unknown or malformed expression '%.40s'", tag), NULL;
}

/* ---- writing values back ------------------------------------------------------------------ */

void dsq__cw_put_tree(dsq_buf *b, json_t *t)
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
            dsq__cw_put_tree(b, v);
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
            dsq__cw_put_tree(b, v);
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

void dsq__cw_put_val(dsq_cw_session *s, dsq_buf *b, cw_val *v)
{
    if (v->kind == V_DATA && v->text != NULL) {
        dsq_buf_append(b, v->text, v->len);
    } else if (v->kind == V_DATA) {
        dsq__cw_put_tree(b, v->tree ? v->tree : json_null());
    } else if (v->kind == V_CLIENT) {
        dsq_buf_printf(b, "[\"import\",%lld]", (long long)v->client);
    } else {
        int64_t id = dsq__cw_export_stub(s, v);
        dsq_buf_printf(b, "[\"export\",%lld]", (long long)id);
    }
}
