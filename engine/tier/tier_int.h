/* tier_int — the tier's insides: a database's manifest as a struct, its
 * decoder and encoder (manifest.c), and the decoders of what the tier
 * reads back from the object store, for the unit tests and the fuzz
 * targets (tests/fuzz/fuzz_tier.c). Not for other modules: they go
 * through tier.h. */
#ifndef DSQ_TIER_INT_H
#define DSQ_TIER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSQ_MANIFEST_FORMAT "dosqld-manifest 1"
/* Files up to cfg.inline_bytes (at most this) travel inside the manifest
 * (base64), not as chunks: a small database is one object. */
#define DSQ_TIER_INLINE_MAX 65536

/* ---- the manifest (manifest.c has its format) ---- */

typedef struct dsq_manifest_chunk {
    uint64_t len;                /* its bytes (the chunk size, the last one shorter) */
    uint32_t crc;                /* their CRC-32 */
} dsq_manifest_chunk;

typedef struct dsq_manifest_file {
    char name[48];               /* under the database's directory ("format", "ckpt/X.ckpt", "wal/X.seg") */
    uint64_t id;                 /* the file version: its chunk objects' keys name it */
    uint64_t size;               /* bytes */
    uint64_t ino, mtime_ns;      /* of the local file uploaded: tell a replaced one from it */
    bool append_only;            /* a log segment: it only grows */
    char *data;                  /* owned: kept inline, its bytes in base64; NULL: in chunk objects */
    uint32_t crc;                /* kept inline: the CRC-32 of its bytes */
    dsq_manifest_chunk *chunks;  /* owned: back to back from byte 0 to size (none when inline) */
    size_t nchunks;
} dsq_manifest_file;

/* Shared by reference (the tier's cache and whoever reads it) and never
 * changed once shared. */
typedef struct dsq_manifest {
    atomic_uint refs;
    char db[129];                /* the database's name */
    uint64_t lsn;                /* the last commit its files hold */
    uint64_t time_ms;            /* when it was written (wall clock) */
    uint64_t chunk_bytes;        /* the chunk size it was cut with */
    uint64_t next;               /* the next file version */
    dsq_manifest_file *files;    /* owned */
    size_t nfiles;
} dsq_manifest;

/* An empty manifest of db (none in the store yet): LSN 0, versions from
 * 1; one reference. NULL: out of memory. */
dsq_manifest *dsq__manifest_new(const char *db);
/* Another reference to m (NULL: none), and the end of one. */
dsq_manifest *dsq__manifest_hold(dsq_manifest *m);
void dsq__manifest_release(dsq_manifest *m);

/* A manifest object's bytes p[0..n): 0 and *out (one reference) when it
 * is intact, database `db`'s, and every field there with its type and in
 * range; else -1 with a message naming the field. */
int dsq__manifest_decode(const char *p, size_t n, const char *db, dsq_manifest **out, char *err, size_t errlen);
/* m as an object's bytes (malloc'd, *len of them); NULL: out of memory. */
char *dsq__manifest_encode(const dsq_manifest *m, size_t *len);

/* m's file `name`, or NULL. */
const dsq_manifest_file *dsq__manifest_file(const dsq_manifest *m, const char *name);
/* *dst a copy of *src, with its own data and chunks: 0, or -1 (out of
 * memory; *dst then has neither). */
int dsq__manifest_file_copy(dsq_manifest_file *dst, const dsq_manifest_file *src);
/* Whether a and b name the same files, field for field, in one order. */
bool dsq__manifest_files_equal(const dsq_manifest *a, const dsq_manifest *b);

/* ---- tails ---- */

/* Whether p[0..n) holds intact log records after LSN `after` up to
 * `upto` and nothing else (a tail object's body; tail_whole). */
bool dsq__tier_tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto);

/* The LSNs a tail object's key names; false: not a tail's key (tail_range). */
bool dsq__tier_tail_range(const char *key, uint64_t *after, uint64_t *upto);

#endif
