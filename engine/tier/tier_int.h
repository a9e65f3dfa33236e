/* tier_int — the tier's insides, shared by its files (and reached by the
 * unit tests and the fuzz targets, tests/fuzz/fuzz_tier.c). Not for other
 * modules: they go through tier.h.
 *
 *   manifest.c  a database's manifest as a struct, its decoder, encoder
 *               and object keys
 *   tier.c      the tier's state: its life, the manifests the store has
 *               (cached), requests in flight at once, errors
 *   upload.c    what goes up: the files offered, their chunks, the
 *               manifests; drops and their tombstones; the upload threads
 *   tail.c      sync_to_object_store = commit: tails, put, trimmed,
 *               applied to a restored log
 *   restore.c   databases from the store: at start, catching up, and to
 *               a point in time */
#ifndef DSQ_TIER_INT_H
#define DSQ_TIER_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/htab.h"
#include "common/list.h"
#include "common/threads.h"
#include "engine/tier/objstore.h"
#include "engine/tier/tier.h"

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
    uint64_t epoch;              /* with replication, the epoch its writer was the primary in
                                    (0: none, or written before epochs were) */
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

/* The key of db's manifest object: db/NAME/manifest.json. */
void dsq__manifest_key(char *out, size_t n, const char *db);
/* Add the key of every chunk object m names to `keys` (a JSON object
 * used as a set). */
void dsq__manifest_chunk_keys(const dsq_manifest *m, json_t *keys);

/* ---- the tier (tier.c) ---- */

#define DSQ_TIER_THREADS_MAX 16

enum dsq_tier_job_kind { DSQ_TIER_OFFER, DSQ_TIER_DROP };

/* A database's job for the upload threads (upload.c). */
typedef struct dsq_tier_job {
    enum dsq_tier_job_kind kind;
    char db[129];
    uint64_t lsn;           /* an offer: the LSN its files hold */
    uint64_t epoch;         /* an offer: the primary's epoch it was made in (0: no replication) */
    dsq_tier_file *files;   /* owned: an offer's files, n of them */
    size_t n;
    unsigned fails;         /* tries that failed */
    uint64_t not_before_ms; /* the backoff after the last one */
    dsq_qnode link;         /* on dsq_tier.jobs */
} dsq_tier_job;

/* What the tier knows of a database it has seen (dsq_tier.known). */
typedef struct dsq_tier_known {
    char db[129];
    dsq_manifest *m;        /* held: the manifest the store has; NULL: not read (or dropped since) */
    uint64_t reborn;        /* dropped in this run: the file version its next incarnation starts
                               at (above every one the dropped one used: the warm cache, keyed by
                               object, may still hold those); 0: not dropped */
    dsq_hnode link;         /* in dsq_tier.known */
} dsq_tier_known;

struct dsq_tier {
    dsq_tier_cfg cfg;
    char *data_dir;         /* owned */
    dsq_threads threads;    /* the upload threads (at most DSQ_TIER_THREADS_MAX) */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* jobs came, or one finished (drain) */
    dsq_queue jobs;         /* mu: waiting, in the order they run (dsq_tier_job.link) */
    char active[DSQ_TIER_THREADS_MAX][129]; /* mu: the databases being worked on ("" free) */
    unsigned busy;          /* mu: how many */
    bool stopping;          /* mu */
    pthread_mutex_t cmu;
    dsq_htab known;         /* cmu: the databases seen, by name (dsq_tier_known.link) */
    atomic_uint_fast64_t uploads, bytes, manifests, deletes, errors, restored;
    pthread_mutex_t emu;
    char last_error[300];   /* emu */
    /* Drops: DATA_DIR/dropped/NAME, a tombstone per database dropped whose
     * objects the store may still hold. dmu orders a drop (the local
     * directory moved away, the tombstone written) against a restore
     * putting a database into place. Lock order: dmu, then mu. */
    pthread_mutex_t dmu;
    /* Whether every database the store has is here (or dropped): the
     * listing at start worked, or the catch-up thread got there since. */
    atomic_bool ready;
    pthread_t catchup;      /* the catch-up thread, when the store could not be listed at start */
    bool catchup_running;
};

/* An upload (or a tail, or a drop) of db failed: counted, kept as the
 * last error, logged. */
void dsq__tier_note_error(dsq_tier *t, const char *db, const char *what);

/* GET and decode db's manifest: 1 found (*out, one reference), 0 none,
 * -1 error (msg). */
int dsq__tier_manifest_fetch(dsq_tier *t, const char *db, dsq_manifest **out, char *msg, size_t msglen);
/* The manifest the store has of db, cached after the first read (an
 * empty one when there is none): a reference the caller releases; NULL
 * (msg) when it cannot be read. */
dsq_manifest *dsq__tier_manifest_get(dsq_tier *t, const char *db, char *msg, size_t msglen);
/* The manifest of db in the cache (a reference the caller releases), or
 * NULL. */
dsq_manifest *dsq__tier_cache_get(dsq_tier *t, const char *db);
/* db's manifest is now m (its reference taken), or with !replace only if
 * the cache has none. 0, or -1: out of memory. */
int dsq__tier_cache_set(dsq_tier *t, const char *db, dsq_manifest *m, bool replace);
void dsq__tier_cache_forget(dsq_tier *t, const char *db);
/* A database made again under dropped name db numbers its file versions
 * from above `id` (an object key names its version). */
void dsq__tier_reborn_above(dsq_tier *t, const char *db, uint64_t id);

/* Requests in flight at once (a database's chunks, up or down): each
 * started with dsq__tier_batch_submit (which takes its done and ud),
 * then all of them waited for. */
typedef struct dsq_tier_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left;            /* mu: submitted, not done */
} dsq_tier_batch;

void dsq__tier_batch_init(dsq_tier_batch *b);
void dsq__tier_batch_submit(dsq_tier *t, dsq_tier_batch *b, dsq_obj_req *r);
void dsq__tier_batch_wait(dsq_tier_batch *b);
void dsq__tier_batch_destroy(dsq_tier_batch *b);

/* ---- uploads (upload.c) ---- */

/* An upload thread (dsq_tier.threads). */
void *dsq__tier_main(void *arg);
/* Queue the deletion of db's objects (a drop, or one left from before). */
void dsq__tier_queue_drop(dsq_tier *t, const char *db);
void dsq__tier_job_free(dsq_tier_job *j);
/* Delete the objects named by `keys` (a JSON object used as a set);
 * returns how many failed (msg, when not NULL: why the first did). */
size_t dsq__tier_delete_keys(dsq_tier *t, json_t *keys, char *msg, size_t msglen);

/* ---- tails (tail.c) ---- */

/* Whether p[0..n) holds intact log records after LSN `after` up to
 * `upto` and nothing else (a tail object's body). */
bool dsq__tier_tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto);

/* The LSNs a tail object's key names; false: not a tail's key. */
bool dsq__tier_tail_range(const char *key, uint64_t *after, uint64_t *upto);

/* The manifest of db now covers every commit up to lsn: its tails up to
 * there go. */
void dsq__tier_tails_trim(dsq_tier *t, const char *db, uint64_t lsn);

/* After a restore's files are in `dir`: append to its log the records of
 * the tail objects that follow the log's last record; with ends_at, the
 * LSN the log then ends at. 0, or -1 with a message. */
int dsq__tier_tails_apply(dsq_tier *t, const char *db, const char *dir, uint64_t *ends_at, char *err, size_t errlen);

#endif
