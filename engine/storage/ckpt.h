/* ckpt — checkpoint files: page images of a database as of one LSN.
 *
 * A checkpoint at LSN C holds, for each page changed since the checkpoint
 * before it, its image as of C: the zstd frame copied from the log as it
 * is (so it keeps zstd's content checksum). The first checkpoint of a
 * database, and one merged from older ones, holds every page. Layered
 * oldest to newest, the checkpoints up to C are the whole database at C;
 * recovery reads only the log after the newest one.
 *
 * File: DIR/%016llx.ckpt (its LSN in hex). A 64-byte header (magic
 * "DSQCKPT1", version, page size, LSN, time, database pages, entries,
 * smallest size since the checkpoint before, CRC),
 * the directory (pgno u32, frame length u32 per entry, ascending pages)
 * with its CRC, then the frames back to back. Written to a temporary name,
 * fsynced, renamed, and the directory fsynced. docs/storage.md.
 *
 * An evicted checkpoint keeps its header and directory; its frames' bytes
 * are given back to the disk and DIR/%016llx.ckpt.cold (cold.h) says
 * which object store chunks hold them. */
#ifndef DSQ_CKPT_H
#define DSQ_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/storage/cold.h"

typedef struct dsq_ckpt_entry {
    uint32_t pgno;
    uint32_t clen;
    uint64_t off; /* of the frame in the file */
} dsq_ckpt_entry;

typedef struct dsq_ckpt {
    uint64_t lsn;
    uint64_t time_us;       /* commit time of that LSN */
    uint32_t db_pages;      /* the database's size at it */
    uint32_t min_pages;     /* its smallest size since the checkpoint before: pages past
                               this that are not in here read as zeros */
    uint32_t page_size;
    uint32_t n;             /* entries */
    dsq_ckpt_entry *dir;    /* owned; ascending pgno */
    uint64_t bytes;         /* file size */
    struct dsq_cold *cold;  /* evicted: its frames are in the object store (cold.h); owned */
    const struct dsq_cold_src *src; /* where to read them (set by the owner) */
    struct dsq_fdc *fdc;    /* the descriptors reads go through (set by the owner; NULL: a
                               descriptor of its own for each read) */
    char *path;             /* owned */
} dsq_ckpt;

typedef struct dsq_ckpt_writer dsq_ckpt_writer;

/* Start checkpoint `lsn` in directory `dir` with `n` entries to come. */
dsq_ckpt_writer *dsq_ckpt_begin(const char *dir, uint64_t lsn, uint64_t time_us, uint32_t db_pages,
                                uint32_t min_pages, uint32_t page_size, uint32_t n, char *err,
                                size_t errlen);
/* Add the next page (ascending pgno) with its zstd frame. 0 or -1. */
int dsq_ckpt_add(dsq_ckpt_writer *w, uint32_t pgno, const void *frame, uint32_t clen);
/* Finish: header and directory written, fsynced, renamed into place; *out
 * is the new checkpoint, ready for reading (no descriptor is kept: reads
 * open the file on demand, through c->fdc). In place of an evicted file
 * of the same name (a merge): renamed to PATH.merged first, then its
 * sidecar removed, then renamed to PATH. Frees w. 0 or -1. */
int dsq_ckpt_finish(dsq_ckpt_writer *w, dsq_ckpt *out, char *err, size_t errlen);
/* Give up: the temporary file goes. */
void dsq_ckpt_abort(dsq_ckpt_writer *w);

/* Load and check checkpoint file `path` (header and directory CRCs); the
 * file is not kept open. */
int dsq_ckpt_load(const char *path, uint32_t page_size, dsq_ckpt *out, char *err, size_t errlen);
/* The checkpoint files in `dir`, oldest first: *paths is malloc'd, each
 * path too. Temporary files left by a crash are removed, and a
 * PATH.merged one takes the place of PATH (and its sidecar). */
int dsq_ckpt_list(const char *dir, char ***paths, size_t *n, char *err, size_t errlen);
/* The entry for page pgno, or NULL. */
const dsq_ckpt_entry *dsq_ckpt_find(const dsq_ckpt *c, uint32_t pgno);
/* Read an entry's frame into buf[e->clen]. 0, -1 (errno; or a message in
 * err), or DSQ_COLD_MISS (1) when the checkpoint is cold and the frame's
 * chunk is not in the warm cache yet (cold.h). */
int dsq_ckpt_read(const dsq_ckpt *c, const dsq_ckpt_entry *e, void *buf, char *err, size_t errlen);
/* Evict checkpoint file `path`, which the object store holds as `cold`
 * says: the sidecar is written (and synced), then the frames' bytes are
 * given back to the disk (a hole punched, the size kept). *freed is what
 * the disk got back. 0, or a negative code with a message, as
 * dsq_cold_evict's (-EOPNOTSUPP: the file system cannot punch holes; -EIO
 * also when the file is not a checkpoint); the checkpoint must not be
 * open. */
struct dsq_cold;
int dsq_ckpt_evict(const char *path, const struct dsq_cold *cold, uint64_t *freed, char *err, size_t errlen);
/* The key of checkpoint `lsn`'s file in a database's fdcache.h. */
#define DSQ_CKPT_FDKEY(lsn) ((1ull << 63) | (uint64_t)(lsn))

/* Free the directory, and drop the file's descriptor from c->fdc; with
 * `remove`, delete it (and its sidecar) too. */
void dsq_ckpt_close(dsq_ckpt *c, int remove);

#endif
