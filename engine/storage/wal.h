/* wal — one database's write-ahead log (DESIGN D4).
 *
 * The log is a directory of numbered segment files. Each segment starts
 * with a 64-byte header and holds commit records back to back; each record
 * is one committed transaction: its LSN (one more than the record before
 * it), commit time, the database's size in pages after it, and the pages
 * it changed, each page a zstd frame with zstd's content checksum, then
 * optional extra bytes (the commit's row changes, for CDC), padding to 8 bytes
 * and a CRC-32 over everything before it. docs/storage.md has the layout.
 *
 * With the node journal (cfg.jnl), a record it copies is written to the
 * segment later, with the others waiting, in one write: when the journal
 * asks (the log is its holder, journal.h), before the segment is sealed,
 * scanned or closed, before dsq_wal_durable_end, or once 256 KiB wait;
 * reads meanwhile come from memory. Until written, its journal entry
 * holds the journal's file. A sync makes records durable in the journal
 * only: read the segment files of an open log after dsq_wal_durable_end
 * or dsq_jnl_write_held.
 *
 * Descriptors: the log keeps its newest segment open for writing, and
 * a sealed one until a sync has covered all of it (a write-back error is
 * reported to the descriptors open when it happens: the sync that makes
 * the segment durable must ask through one of them). Reads go through
 * the fdcache (cfg.fdc), which bounds what stays open for them.
 *
 * Threads: the actor's worker opens, appends, reads, retires and closes;
 * the syncer calls dsq_wal_sync at any time in between. They meet under
 * the log's mutex; fsync itself runs outside it on duplicated descriptors,
 * so appends go on while the disk flushes. */
#ifndef DSQ_WAL_H
#define DSQ_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "engine/storage/cold.h"

#define DSQ_WAL_SEG_HDR 64 /* bytes of a segment's header */
#define DSQ_WAL_REC_HDR 48 /* bytes of a record's fixed header */
#define DSQ_WAL_REC_MAX (1u << 31) /* a record is smaller than this */

/* A record's fixed header, decoded. */
typedef struct dsq_wal_rec {
    uint64_t lsn;
    uint64_t time_us;   /* commit time, µs since the epoch */
    uint32_t len;       /* bytes of the whole record, a multiple of 8 */
    uint32_t npages;    /* pages in it */
    uint32_t db_pages;  /* the database's size in pages after the commit */
    uint32_t page_size;
    uint32_t extra_len; /* bytes of extra data after the pages (as stored) */
    uint8_t flags;      /* DSQ_WAL_EXTRA_ZSTD */
} dsq_wal_rec;

/* The extra data is one zstd frame (extra data of DSQ_WAL_EXTRA_MIN bytes
 * or more is stored compressed). */
#define DSQ_WAL_EXTRA_ZSTD 1
#define DSQ_WAL_EXTRA_MIN 128

/* One page of a record: its number, and where its zstd frame lies,
 * counted from the start of the record. */
typedef struct dsq_wal_page {
    uint32_t pgno;
    uint32_t clen;
    uint32_t off;
} dsq_wal_page;

/* ---- records (pure functions; unit-tested on their own) ---- */

/* Append one record to `out`: `r` gives lsn, time_us, db_pages, page_size
 * (len, npages and extra_len are filled in); pages[i] (page_size bytes) is
 * page pgnos[i]; extra may be NULL when extra_len is 0. `level` is zstd's.
 * `cctx` is a ZSTD_CCtx * reused between calls. Returns 0, or -1 (out of
 * memory, or a compression error). */
int dsq_wal_encode(dsq_buf *out, void *cctx, int level, dsq_wal_rec *r, size_t npages,
                   const uint32_t *pgnos, const uint8_t *const *pages, const void *extra,
                   uint32_t extra_len);

/* Decode and check the fixed header at p[0..DSQ_WAL_REC_HDR): magic,
 * version, its own CRC and sane sizes. 0, or -1 when it is not one. */
int dsq_wal_rec_header(const uint8_t *p, dsq_wal_rec *r);

/* Whether the whole record p[0..r->len) is intact (its CRC), and its page
 * directory lies inside it. */
bool dsq_wal_rec_valid(const uint8_t *p, const dsq_wal_rec *r);

/* The pages of a valid record: out[0..r->npages). */
void dsq_wal_rec_pages(const uint8_t *p, const dsq_wal_rec *r, dsq_wal_page *out);

/* The extra bytes of a valid record as stored (r->extra_len of them). */
const uint8_t *dsq_wal_rec_extra(const uint8_t *p, const dsq_wal_rec *r);
/* Append the extra data of a valid record, decompressed when stored so,
 * to out. `dctx` is a ZSTD_DCtx *. 0, or -1 (damaged, out of memory). */
int dsq_wal_rec_extra_get(const uint8_t *p, const dsq_wal_rec *r, void *dctx, dsq_buf *out);

/* Decompress a page's frame into dst[page_size]; zstd checks the content
 * checksum. `dctx` is a ZSTD_DCtx * reused between calls. 0, or -1 when the
 * frame is corrupt or not one page. */
int dsq_wal_page_decode(void *dctx, const void *frame, size_t clen, void *dst, uint32_t page_size);

/* ---- the log ---- */

typedef struct dsq_wal dsq_wal;
struct dsq_jnl;

typedef struct dsq_wal_cfg {
    uint32_t page_size;     /* every record's page size must match */
    uint64_t segment_bytes; /* a segment is sealed once it holds this much */
    bool known_durable;     /* the caller knows the log was synced when last closed:
                               opening need not fsync what it recovers */
    struct dsq_jnl *jnl;    /* the node's journal (journal.h), or NULL: every
                               record also goes there, and a sync is the
                               journal's instead of the segments' */
    const char *jname;      /* the database's name in the journal */
    const struct dsq_cold_src *cold_src; /* where evicted segments are read from (cold.h), or NULL */
    struct dsq_fdc *fdc;    /* reads of segments go through it (fdcache.h; the owner's,
                               which outlives the log); NULL: a small one of its own */
} dsq_wal_cfg;

/* Where a record lies: its segment's sequence number and offset. */
typedef struct dsq_wal_loc {
    uint32_t seg;
    uint64_t off;
} dsq_wal_loc;

/* Called by dsq_wal_open for each record after `from_lsn`, in LSN order,
 * with the whole verified record. Return 0, or -1 to fail the open (with a
 * message in err). */
typedef int (*dsq_wal_visit_fn)(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc,
                                char *err, size_t errlen);

/* Open (creating) the log in directory `dir` and recover it: every
 * record after `from_lsn` is read, verified and passed to `visit`. A torn
 * or corrupt record at the tail of the last segment, and everything after
 * it, is cut off (the file is truncated and synced). A bad record with a
 * good one after it, a bad record in a sealed segment, or a gap in the
 * LSNs is corruption: the open fails with a message naming the segment
 * and offset. `*last_lsn` is the newest record's LSN (from_lsn if none
 * follows it). Returns 0 or -1. */
int dsq_wal_open(const char *dir, const dsq_wal_cfg *cfg, uint64_t from_lsn, dsq_wal_visit_fn visit,
                 void *ud, dsq_wal **out, uint64_t *last_lsn, char *err, size_t errlen);
void dsq_wal_close(dsq_wal *w);

/* Append an encoded record whose LSN is `lsn` (one more than the last).
 * Starts a new segment first when the current one is full. No fsync: see
 * dsq_wal_sync. With a journal, a record it copies is kept in memory (see
 * above); one too large for it is written to the segment first. Returns 0
 * and where it went, or the negated errno with a message (-ENOSPC: the
 * disk is full; also when 4 MiB wait in memory and cannot be written;
 * -EIO when the failure had no errno); errno is set to the same. */
int dsq_wal_append(dsq_wal *w, const void *rec, size_t len, uint64_t lsn, dsq_wal_loc *loc,
                   char *err, size_t errlen);

/* Keep, from now on, a copy in memory of every record appended (for
 * sync_to_object_store = commit), or stop. */
void dsq_wal_tee(dsq_wal *w, bool on);
/* Append to `out` the kept records after LSN `after` up to `upto`, and
 * forget those and the ones before. 0, or -1 when the copy does not hold
 * them all (read them from the log: dsq_wal_scan). */
int dsq_wal_tee_take(dsq_wal *w, uint64_t after, uint64_t upto, dsq_buf *out);

/* Read n bytes at `off` of segment `seg`. 0, or -1 (gone, short, I/O; or
 * an evicted segment's chunk not in the warm cache yet: this thread has
 * a miss, cold.h). */
int dsq_wal_read(dsq_wal *w, uint32_t seg, uint64_t off, void *buf, size_t n);

/* Make every record appended so far durable (with a journal: the
 * journal's sync; without: fdatasync of each segment written since the
 * last sync). Returns 0 and
 * the LSN now durable, or the negated errno with a message (-ENOSPC: the
 * disk is full; -EIO when the failure had no errno) when the disk refused;
 * errno is set to the same. Any thread. */
int dsq_wal_sync(dsq_wal *w, uint64_t *durable, char *err, size_t errlen);

/* Sync n logs on one file system at once: one syncfs() instead of n
 * fdatasyncs (one device flush for all). When syncfs reports an error each
 * log falls back to fdatasync of its own segments, which reports its own
 * errors. Per log: rcs[i] 0 and durables[i], or the failure's negated
 * errno (as dsq_wal_sync's) and a message at errs + i * errlen. Returns 1 when the one syncfs covered them all. */
int dsq_wal_sync_many(dsq_wal **ws, size_t n, uint64_t *durables, int *rcs, char *errs, size_t errlen);
/* The file system the log is on (st_dev). */
dev_t dsq_wal_device(const dsq_wal *w);
/* Whether its syncs are the node journal's (then one sync serves every
 * log). */
bool dsq_wal_journaled(const dsq_wal *w);

/* After a failed sync: cut the log back to its last durable record (the
 * records after it may or may not be on disk; now they are not). Durable
 * records still in memory are written first. Actor thread, with no sync
 * running. 0 or -1 with a message. */
int dsq_wal_rewind(dsq_wal *w, char *err, size_t errlen);

/* The LSN of the last record appended, and of the last made durable. */
uint64_t dsq_wal_appended(dsq_wal *w);
uint64_t dsq_wal_durable(dsq_wal *w);

/* Where the durable log ends: segment *seq (0: none) holds durable
 * records up to byte *size, the segments before it are durable whole.
 * Returns the durable LSN. The records kept in memory are written first
 * (if that fails, the end is where the file's records end). Any thread. */
uint64_t dsq_wal_durable_end(dsq_wal *w, uint32_t *seq, uint64_t *size);

/* Delete sealed segments all of whose records have LSN <= lsn. Returns
 * how many went. */
int dsq_wal_retire(dsq_wal *w, uint64_t lsn);

/* Segments on disk, their bytes, and the first LSN still in the log
 * (0 when it is empty). */
void dsq_wal_usage(dsq_wal *w, uint32_t *segments, uint64_t *bytes, uint64_t *first_lsn);

/* Visit the records with from < LSN <= to, in order, reading them from
 * the segments (for time travel and CDC). The visit function's `loc` is the
 * record's. Returns 0, or -1 with a message. */
int dsq_wal_scan(dsq_wal *w, uint64_t from, uint64_t to, dsq_wal_visit_fn visit, void *ud, char *err,
                 size_t errlen);

/* A segment's file in log directory `dir`, and the sequence number a
 * file name stands for (false: not a segment's name). */
void dsq_wal_seg_path(const char *dir, uint32_t seq, char *out, size_t n);
bool dsq_wal_seg_seq(const char *name, uint32_t *seq);

/* Journal replay: the log in `dir` ends at byte `end` of segment `seq`
 * (cut there if longer); segments after it go. A missing segment (retired
 * behind a checkpoint) leaves the log as it is. 0, or -1 with a message. */
int dsq_wal_cut_after(const char *dir, uint32_t seq, uint64_t end, char *err, size_t errlen);

/* The first LSN of the segment open as fd, from its header (magic and
 * CRC checked). 0, or -1 when it is not a whole, sound segment header. */
int dsq_wal_seg_first(int fd, uint64_t *first_lsn);

/* Read-only, without an open log: visit the records with from < LSN <= to
 * in the segments of directory `dir`, in order (for CDC readers beside
 * the actor that writes the log; `to` must be durable, so never past
 * what is being appended). Returns 0; 1 with *oldest set when the
 * segments no longer hold LSN from + 1 (*oldest: the LSN the oldest
 * segment's first record follows); -1 with a message. Evicted segments
 * are read through `src` (cold.h; may be NULL when there are none). */
int dsq_wal_scan_files(const char *dir, const struct dsq_cold_src *src, uint64_t from, uint64_t to, dsq_wal_visit_fn visit,
                       void *ud,
                       uint64_t *oldest, char *err, size_t errlen);

#endif
