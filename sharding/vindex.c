/* vindex — which shard of a keyspace a row's key belongs to (vindex.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "sharding/vindex.h"

typedef struct vpoint {
    uint64_t pos;
    uint32_t shard;
} vpoint;

struct dsq_vindex {
    dsq_vindex_type type;
    size_t nshards;
    int64_t *boundaries;        /* range */
    vpoint *ring;               /* consistent_hash: sorted by pos */
    size_t nring;
};

static const char *const names_of[] = {
    [DSQ_VINDEX_HASH] = "hash",
    [DSQ_VINDEX_FNV1A] = "fnv1a",
    [DSQ_VINDEX_CONSISTENT] = "consistent_hash",
    [DSQ_VINDEX_RANGE] = "range",
};

const char *dsq_vindex_type_name(dsq_vindex_type t) { return names_of[t]; }

int dsq_vindex_type_parse(const char *s)
{
    for (size_t i = 0; i < sizeof names_of / sizeof names_of[0]; i++)
        if (strcmp(s, names_of[i]) == 0)
            return (int)i;
    return -1;
}

dsq_vindex_type dsq_vindex_kind(const dsq_vindex *v) { return v->type; }

static int by_pos(const void *a, const void *b)
{
    const vpoint *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos ? 1 : (x->shard > y->shard) - (x->shard < y->shard);
}

dsq_vindex *dsq_vindex_new(const dsq_vindex_spec *spec, const char *const *names, size_t nshards, char *err,
                           size_t errlen)
{
    if (nshards == 0 || nshards > UINT32_MAX) {
        snprintf(err, errlen, "a keyspace needs at least one shard");
        return NULL;
    }
    dsq_vindex *v = calloc(1, sizeof *v);
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v->type = spec->type;
    v->nshards = nshards;
    if (spec->type == DSQ_VINDEX_RANGE) {
        if (spec->nboundaries != nshards - 1) {
            snprintf(err, errlen, "a range vindex over %zu shards needs %zu boundaries, not %zu", nshards, nshards - 1,
                     spec->nboundaries);
            free(v);
            return NULL;
        }
        for (size_t i = 1; i < spec->nboundaries; i++)
            if (spec->boundaries[i] <= spec->boundaries[i - 1]) {
                snprintf(err, errlen, "a range vindex's boundaries must increase: %lld does not follow %lld",
                         (long long)spec->boundaries[i], (long long)spec->boundaries[i - 1]);
                free(v);
                return NULL;
            }
        if ((v->boundaries = malloc((spec->nboundaries ? spec->nboundaries : 1) * sizeof *v->boundaries)) == NULL) {
            free(v);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        if (spec->nboundaries > 0)
            memcpy(v->boundaries, spec->boundaries, spec->nboundaries * sizeof *v->boundaries);
    } else if (spec->type == DSQ_VINDEX_CONSISTENT) {
        unsigned vn = spec->virtual_nodes ? spec->virtual_nodes : DSQ_VINDEX_VNODES_DEFAULT;
        if (vn > DSQ_VINDEX_VNODES_MAX) {
            snprintf(err, errlen, "virtual_nodes is at most %d", DSQ_VINDEX_VNODES_MAX);
            free(v);
            return NULL;
        }
        v->nring = nshards * vn;
        if ((v->ring = malloc(v->nring * sizeof *v->ring)) == NULL) {
            free(v);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        for (size_t s = 0; s < nshards; s++)
            for (unsigned i = 0; i < vn; i++) {
                char point[300];
                int len = snprintf(point, sizeof point, "%s#%u", names[s], i);
                v->ring[s * vn + i] = (vpoint){.pos = XXH64(point, (size_t)len, 0), .shard = (uint32_t)s};
            }
        qsort(v->ring, v->nring, sizeof *v->ring, by_pos);
    }
    return v;
}

void dsq_vindex_free(dsq_vindex *v)
{
    if (v == NULL)
        return;
    free(v->boundaries);
    free(v->ring);
    free(v);
}

/* The canonical bytes of k (vindex.h) into buf, or a pointer to k's own;
 * their length in *n. */
static const void *canonical(const dsq_skey *k, uint8_t buf[8], size_t *n)
{
    uint64_t u;
    switch (k->kind) {
    case DSQ_SKEY_INT:
        u = (uint64_t)k->i;
        break;
    case DSQ_SKEY_REAL:
        if (k->r == floor(k->r) && k->r >= -9223372036854775808.0 && k->r < 9223372036854775808.0) {
            u = (uint64_t)(int64_t)k->r;
        } else {
            memcpy(&u, &k->r, 8);
        }
        break;
    default:
        *n = k->n;
        return k->p != NULL ? k->p : "";
    }
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(u >> (8 * b));
    *n = 8;
    return buf;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t dsq_vindex_keyspace_id(const dsq_vindex *v, const dsq_skey *k)
{
    uint8_t buf[8];
    size_t n;
    const void *p = canonical(k, buf, &n);
    return v->type == DSQ_VINDEX_FNV1A ? fnv1a(p, n) : XXH64(p, n, 0);
}

int dsq_vindex_shard(const dsq_vindex *v, const dsq_skey *k, size_t *shard, char *err, size_t errlen)
{
    if (k->kind == DSQ_SKEY_NULL) {
        snprintf(err, errlen, "a NULL key belongs to no shard");
        return -1;
    }
    switch (v->type) {
    case DSQ_VINDEX_HASH:
    case DSQ_VINDEX_FNV1A: {
        unsigned __int128 x = (unsigned __int128)dsq_vindex_keyspace_id(v, k) * v->nshards;
        *shard = (size_t)(x >> 64);
        return 0;
    }
    case DSQ_VINDEX_CONSISTENT: {
        uint64_t h = dsq_vindex_keyspace_id(v, k); /* (xxHash64, as the points) */
        size_t lo = 0, hi = v->nring;         /* the first point at or after h */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (v->ring[mid].pos < h)
                lo = mid + 1;
            else
                hi = mid;
        }
        *shard = v->ring[lo == v->nring ? 0 : lo].shard;
        return 0;
    }
    case DSQ_VINDEX_RANGE: {
        if (k->kind != DSQ_SKEY_INT && k->kind != DSQ_SKEY_REAL) {
            snprintf(err, errlen, "a range vindex places numbers only, not %s", k->kind == DSQ_SKEY_TEXT ? "text" : "a blob");
            return -1;
        }
        if (k->kind == DSQ_SKEY_REAL && isnan(k->r)) {
            snprintf(err, errlen, "a range vindex cannot place NaN");
            return -1;
        }
        size_t lo = 0, hi = v->nshards - 1; /* the number of boundaries <= the value */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            bool le = k->kind == DSQ_SKEY_INT ? v->boundaries[mid] <= k->i : (double)v->boundaries[mid] <= k->r;
            if (le)
                lo = mid + 1;
            else
                hi = mid;
        }
        *shard = lo;
        return 0;
    }
    }
    snprintf(err, errlen, "unknown vindex");
    return -1;
}
