/* table — a Cap'n Web session's two tables: exports (what the client
 * imports: the main object at 0, results of its pushes at 1, 2, ...,
 * stubs we send at -1, -2, ...) and imports (the client's exports: stubs
 * and promises it passes, and results of the calls we make to them).
 *
 * Divisions: id maps; values; entries; the count of the entries of every
 * session (dsq_cw_stats), which bounds nothing but shows on /metrics. */
#include <stdlib.h>
#include <string.h>

#include "protocol/capnweb/capnweb_int.h"

/* ---- id maps ----------------------------------------------------------------------- */

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

void dsq__cw_val_clear(cw_val *v)
{
    free(v->text);
    json_decref(v->tree);
    *v = (cw_val){0};
}

cw_val dsq__cw_val_stub_copy(const cw_val *src)
{
    cw_val v = {.kind = src->kind, .client = src->client, .sub = src->sub};
    memcpy(v.db, src->db, sizeof v.db);
    return v;
}

void dsq__cw_val_let_go(dsq_cw_session *s, cw_val *v)
{
    if (!s->batch)
        dsq_budget_release(&s->budget, v->held);
    v->held = 0;
}

/* ---- entries ---------------------------------------------------------------------------- */

static int count_entry(dsq_cw_session *s)
{
    if (s->exports.n + s->imports.n >= s->lim.max_entries) {
        dsq__cw_abort(s, "too many imports and exports in one session (limit %zu)", s->lim.max_entries);
        return -1;
    }
    s->stats->entries++;
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
        s->stats->entries--;
        dsq__cw_abort(s, "out of memory");
        return NULL;
    }
    return p;
}

cw_export *dsq__cw_export_new(dsq_cw_session *s, int64_t id)
{
    cw_export *e = entry_new(s, &s->exports, id, sizeof *e);
    if (e != NULL) {
        e->id = id;
        e->refs = 1;
    }
    return e;
}

static void export_destroy(dsq_cw_session *s, cw_export *e)
{
    dsq__cw_val_clear(&e->val);
    free(e->msg);
    free(e);
    s->stats->entries--;
}

static void export_free(dsq_cw_session *s, cw_export *e)
{
    dsq__cw_val_let_go(s, &e->val);
    idmap_del(&s->exports, e->id);
    export_destroy(s, e);
}

/* A released entry has left the table, as in the protocol; it lives on
 * only for the pushes that arrived before the release and refer to it
 * (cw_export.users), and only they find it. */
cw_export *dsq__cw_export_get(dsq_cw_session *s, int64_t id)
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

cw_export *dsq__cw_export_lookup(dsq_cw_session *s, int64_t id) { return idmap_get(&s->exports, id); }

void dsq__cw_export_done_with(dsq_cw_session *s, cw_export *e)
{
    if (e->released && e->state != S_PENDING && e->users == 0)
        export_free(s, e);
}

void dsq__cw_export_release(dsq_cw_session *s, cw_export *e)
{
    e->released = true;
    e->released_at = s->pushes;
    dsq__cw_export_done_with(s, e);
}

int64_t dsq__cw_export_stub(dsq_cw_session *s, const cw_val *v)
{
    int64_t id = --s->next_neg;
    cw_export *e = dsq__cw_export_new(s, id);
    if (e == NULL)
        return id;
    e->state = S_DONE;
    e->val = dsq__cw_val_stub_copy(v);
    return id;
}

cw_import *dsq__cw_import_get(dsq_cw_session *s, int64_t id) { return idmap_get(&s->imports, id); }

cw_import *dsq__cw_import_get_or_new(dsq_cw_session *s, int64_t id)
{
    cw_import *im = idmap_get(&s->imports, id);
    if (im == NULL && (im = entry_new(s, &s->imports, id, sizeof *im)) != NULL)
        im->id = id;
    return im;
}

static void import_destroy(dsq_cw_session *s, cw_import *im)
{
    json_decref(im->value);
    free(im->msg);
    free(im);
    s->stats->entries--;
}

void dsq__cw_import_free(dsq_cw_session *s, cw_import *im)
{
    idmap_del(&s->imports, im->id);
    import_destroy(s, im);
}

void dsq__cw_tables_free(dsq_cw_session *s)
{
    for (size_t i = 0; i < s->exports.cap; i++)
        if (s->exports.vals[i])
            export_destroy(s, s->exports.vals[i]);
    for (size_t i = 0; i < s->imports.cap; i++)
        if (s->imports.vals[i])
            import_destroy(s, s->imports.vals[i]);
    idmap_free(&s->exports);
    idmap_free(&s->imports);
}

/* ---- the count of every session's entries ------------------------------------------------- */

dsq_cw_stats *dsq_cw_stats_new(void) { return calloc(1, sizeof(dsq_cw_stats)); }

void dsq_cw_stats_free(dsq_cw_stats *st) { free(st); }

uint64_t dsq_cw_stats_entries(const dsq_cw_stats *st) { return st->entries; }
