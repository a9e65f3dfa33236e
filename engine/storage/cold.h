/* cold — files whose bytes were evicted to the object store, as storage
 * sees them: each one's sidecar, the source their bytes are read from,
 * and the miss a read of them can meet.
 *
 * A cold file is a database file (a checkpoint or a log segment) that the
 * object store holds whole, in the chunks its manifest names, and whose
 * data bytes were given back to the local disk. Next to it a sidecar,
 * NAME.cold, says which chunks hold it (dsq_cold). Its bytes are read
 * from a source (dsq_cold_src) that its owner hands to the page store and
 * the log: the tier's warm cache (engine/tier/warm.h). Storage includes
 * nothing of the tier. */
#ifndef DSQ_COLD_H
#define DSQ_COLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- the source ---- */

/* A chunk a read missed, held for the caller (a reference); what it is
 * is the source's. */
typedef struct dsq_cold_ref dsq_cold_ref;

#define DSQ_COLD_MISS 1

typedef struct dsq_cold_src {
    void *ctx;
    /* Bytes [off, off + n) of cold file c into buf. 0; DSQ_COLD_MISS when
     * they are not here yet (their fetch is started, and this thread has
     * a miss); -1 on an error (message). Any thread. */
    int (*read)(void *ctx, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen);
    /* Whether the fetch of a missed chunk failed (a new read asks again). */
    bool (*failed)(void *ctx, dsq_cold_ref *r);
    /* Let go of a missed chunk's reference. */
    void (*release)(void *ctx, dsq_cold_ref *r);
} dsq_cold_src;

/* ---- a miss, from the read that met it to the call that waits ----
 *
 * SQLite reads a page through the VFS (vfs.c), which reads the page
 * store, which reads an evicted file through its source. When the chunk
 * is not here, nothing between the read and the executor can say why the
 * read failed: SQLite turns it into SQLITE_IOERR and unwinds the
 * statement. So the miss is recorded per thread: the source's read (the
 * warm cache's, or its read-ahead) sets this thread's miss; the executor,
 * on the same worker thread, sees the statement fail, asks
 * dsq_cold_missed, takes the chunk (dsq_cold_miss_take) and parks the
 * call until the chunk is here (dsq_warm_wait). Every reader on the way
 * (the VFS, the page store, the log, checkpoints) therefore runs on the
 * calling thread, never hands a read to another thread, and lets a miss
 * through as an I/O error without clearing it; the executor clears any
 * stale miss before each call it runs, and a page-store merge before its
 * reads (dsq_cold_miss_clear). A worker thread is the unit: one call at a
 * time runs on it, so a miss always belongs to the call running there. */

/* This thread's miss (a reference), or NULL; and forget it. */
dsq_cold_ref *dsq_cold_miss_take(void);
/* Whether this thread has a miss. */
bool dsq_cold_missed(void);
/* Let go of this thread's miss, if any, through src (NULL: there can be
 * none). */
void dsq_cold_miss_clear(const dsq_cold_src *src);
/* The source's: this thread missed r (it keeps a reference for the taker). */
void dsq_cold_miss_set(dsq_cold_ref *r);

#endif
