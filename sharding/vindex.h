/* vindex — which shard of a keyspace a row's key belongs to.
 *
 * A vindex maps a key value to one shard of its keyspace. Two kinds:
 *
 *   - By keyspace id: `hash` (xxHash64 of the value), `fnv1a` (64-bit
 *     FNV-1a) give a 64-bit keyspace id, and each shard owns an equal,
 *     contiguous range of the 2^64 ids: shard i of n owns the ids k with
 *     floor(k * n / 2^64) = i. A shard is split by splitting its range
 *     (the ids a key maps to never change).
 *   - By the value itself: `range` (boundaries b_1 < ... < b_{n-1}: a
 *     value v goes to the number of boundaries <= v, so shard 0 takes
 *     v < b_1 and shard n-1 takes v >= b_{n-1}); `consistent_hash` (each
 *     shard has `virtual_nodes` points on a ring of 64-bit positions,
 *     xxHash64 of "SHARD#i"; a value goes to the first point at or after
 *     its own xxHash64, wrapping: adding a shard moves about 1/n of the
 *     keys).
 *
 * The value's bytes are its canonical form, so that values SQLite holds
 * equal go to one shard: an integer, or a real with an integral value
 * that fits in 64 bits, is its 8 bytes little-endian; another real its 8
 * IEEE-754 bytes; text and blobs their bytes. NULL has no shard. The
 * caller applies the column's affinity first (text '5' in an INTEGER
 * column is the integer 5). Any thread; a vindex is immutable. */
#ifndef DSQ_VINDEX_H
#define DSQ_VINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DSQ_SKEY_NULL,
    DSQ_SKEY_INT,
    DSQ_SKEY_REAL,
    DSQ_SKEY_TEXT,
    DSQ_SKEY_BLOB,
} dsq_skey_kind;

/* A key value (text and blob borrowed). */
typedef struct dsq_skey {
    dsq_skey_kind kind;
    int64_t i;
    double r;
    const void *p;
    size_t n;
} dsq_skey;

typedef enum {
    DSQ_VINDEX_HASH,
    DSQ_VINDEX_FNV1A,
    DSQ_VINDEX_CONSISTENT,
    DSQ_VINDEX_RANGE,
} dsq_vindex_type;

#define DSQ_VINDEX_VNODES_DEFAULT 128
#define DSQ_VINDEX_VNODES_MAX 1024

typedef struct dsq_vindex dsq_vindex;

/* The parameters of a vindex over `nshards` shards named names[0..n). */
typedef struct dsq_vindex_spec {
    dsq_vindex_type type;
    const int64_t *boundaries;  /* range: nshards - 1 of them, strictly increasing */
    size_t nboundaries;
    unsigned virtual_nodes;     /* consistent_hash: 1 to DSQ_VINDEX_VNODES_MAX (0: the default) */
} dsq_vindex_spec;

/* A vindex, or NULL with the reason in err (boundaries that do not fit
 * the shards, out of memory). */
dsq_vindex *dsq_vindex_new(const dsq_vindex_spec *spec, const char *const *names, size_t nshards, char *err,
                           size_t errlen);
void dsq_vindex_free(dsq_vindex *v);

dsq_vindex_type dsq_vindex_kind(const dsq_vindex *v);
/* "hash", "fnv1a", "consistent_hash", "range"; dsq_vindex_type_parse the
 * other way (-1: none). */
const char *dsq_vindex_type_name(dsq_vindex_type t);
int dsq_vindex_type_parse(const char *s);

/* The shard of key k: 0, or -1 with the reason (NULL; a value a range
 * vindex cannot place: not a number). */
int dsq_vindex_shard(const dsq_vindex *v, const dsq_skey *k, size_t *shard, char *err, size_t errlen);

/* The keyspace id of k for a hash or fnv1a vindex (k not NULL). */
uint64_t dsq_vindex_keyspace_id(const dsq_vindex *v, const dsq_skey *k);

#endif
