/* warm — reading files whose local bytes were evicted to the object store
 * (DESIGN D6, docs/storage.md "Hot tier and warm reads").
 *
 * A cold file is a database file (a checkpoint) that the object store
 * holds whole, in the chunks its manifest names, and whose data bytes were
 * given back to the local disk. Next to it a sidecar, NAME.cold, says
 * which chunks hold it (dsq_cold). Reads of a cold file come from the warm
 * cache: chunks fetched whole (one GET per chunk, however many readers
 * want it), checked against their CRC-32, kept as files under a directory
 * up to a byte budget, least recently used out first.
 *
 * A read that finds its chunk missing does not wait: it starts the fetch,
 * notes the chunk as this thread's miss and fails. The caller (the
 * engine, which ran SQLite on a worker) takes the miss with
 * dsq_warm_miss_take, undoes what the read was part of, and asks to be
 * called back when the chunk is there (dsq_warm_wait) to run it again.
 * Waits end after the cache's timeout even if the fetch does not. */
#ifndef DSQ_WARM_H
#define DSQ_WARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/counters.h"

struct dsq_obj;

/* The object key of chunk `idx` (len bytes) of version `id` of one of
 * database db's files: db/NAME/data/IIIIIIII.CCCCC.LLLLLLLL (hex id and
 * length, decimal index). */
void dsq_chunk_key(char *out, size_t n, const char *db, uint64_t id, size_t idx, uint64_t len);

/* ---- a cold file's sidecar ---- */

typedef struct dsq_cold_chunk {
    uint64_t off, len;
    uint32_t crc;
} dsq_cold_chunk;

typedef struct dsq_cold {
    char db[129];
    uint64_t id;           /* the file version's id in the manifest */
    uint64_t size;         /* the file's bytes */
    uint64_t lsn;          /* a log segment: the LSN of its last record (0: not one) */
    size_t n;
    dsq_cold_chunk *chunks; /* ascending, back to back from 0 to size */
} dsq_cold;

/* Parse the sidecar at `path`: 1 and *out (free with dsq_cold_free), 0
 * when there is none, -1 when it is damaged or unreadable (message). */
int dsq_cold_load(const char *path, dsq_cold **out, char *err, size_t errlen);
/* Write it (temporary file, fsync, rename, fsync of the directory). */
int dsq_cold_write(const char *path, const dsq_cold *c, char *err, size_t errlen);
void dsq_cold_free(dsq_cold *c);
/* Evict file `path`, which the object store holds as c says: the sidecar
 * PATH.cold is written (and synced), then every whole 4 KiB block after
 * its first `keep` bytes is given back to the disk (a hole punched; the
 * size stays). *freed: the disk bytes given back. 0, or a negative code
 * with a message: the negated errno of a failed open or hole punch
 * (-EOPNOTSUPP: the file system cannot punch holes), else -EIO. */
int dsq_cold_evict(const char *path, const dsq_cold *c, uint64_t keep, uint64_t *freed, char *err, size_t errlen);

/* ---- the warm cache ---- */

typedef struct dsq_warm dsq_warm;

/* A cache in directory `dir` (emptied first) of at most max_bytes,
 * fetching from `obj`; a wait ends after timeout_ms. */
dsq_warm *dsq_warm_open(struct dsq_obj *obj, const char *dir, uint64_t max_bytes, uint64_t timeout_ms,
                        char *err, size_t errlen);
/* Fail every wait (callbacks run), cancel fetches, free. */
void dsq_warm_close(dsq_warm *w);

#define DSQ_WARM_MISS 1

/* Bytes [off, off + n) of cold file c into buf. 0; DSQ_WARM_MISS when a
 * chunk is not in the cache (its fetch is started and it is this
 * thread's miss); -1 on an error (message). Any thread. */
int dsq_warm_read(dsq_warm *w, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen);

typedef struct dsq_warm_chunk dsq_warm_chunk;

/* ---- a miss, from the read that met it to the call that waits ----
 *
 * SQLite reads a page through the VFS (engine/storage/vfs.c), which reads
 * the page store, which reads an evicted file through dsq_warm_read. When
 * the chunk is not here, nothing between the read and the executor can
 * say why the read failed: SQLite turns it into SQLITE_IOERR and unwinds
 * the statement. So the miss is recorded per thread: dsq_warm_read (or the
 * read-ahead) sets this thread's miss; the executor, on the same worker
 * thread, sees the statement fail, asks dsq_warm_missed, takes the chunk
 * (dsq_warm_miss_take) and parks the call until dsq_warm_wait calls back.
 * Every reader on the way (the VFS, the page store, the log, checkpoints)
 * therefore runs on the calling thread, never hands a read to another
 * thread, and lets a miss through as an I/O error without clearing it;
 * the executor clears any stale miss before each call it runs, and a
 * page-store merge before its reads (dsq_warm_miss_clear). A worker
 * thread is the unit: one call at a time runs on it, so a miss always
 * belongs to the call running there. */

/* This thread's miss since the last take (a reference), or NULL; and
 * forget it. */
dsq_warm_chunk *dsq_warm_miss_take(void);
/* Whether this thread has a miss. */
bool dsq_warm_missed(void);
/* Forget this thread's miss, if any. */
void dsq_warm_miss_clear(void);

/* How a wait ended. */
enum { DSQ_WARM_READY = 0, DSQ_WARM_TIMEOUT, DSQ_WARM_FAILED };
typedef void (*dsq_warm_fn)(void *ud, int how, const char *msg);

/* Call fn once chunk k is in the cache (DSQ_WARM_READY), its fetch failed
 * (DSQ_WARM_FAILED), or the timeout passed (DSQ_WARM_TIMEOUT): exactly
 * once, on another thread or at once on this one. The caller's reference
 * stays the caller's. */
void dsq_warm_wait(dsq_warm *w, dsq_warm_chunk *k, dsq_warm_fn fn, void *ud);
/* Drop a reference. While a chunk has references besides the cache's own
 * it is pinned: the budget does not drop it. A call keeps the chunks it
 * waited for until it ends, so that one whose pages are more than the
 * cache holds still gets to its end (the cache is over budget meanwhile). */
void dsq_warm_release(dsq_warm *w, dsq_warm_chunk *k);

/* Whether chunk k's fetch failed (a read asks for it again under a new
 * reference). */
bool dsq_warm_failed(dsq_warm *w, dsq_warm_chunk *k);

void dsq_warm_counts_get(dsq_warm *w, dsq_warm_counts *out);

#endif
