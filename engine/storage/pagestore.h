/* pagestore — one database's pages, as SQLite sees them through the VFS
 * (vfs.c), kept in dosqld's log (wal.c).
 *
 * The committed database is the newest version of each page: an index maps
 * page number to the log record frame that holds it. A transaction's writes
 * are buffered here until SQLite's commit point, where they become one log
 * record with the next LSN; a rollback discards them.
 *
 * One actor's worker uses a store at a time; only dsq_ps_wal()'s log is
 * shared (with the syncer). */
#ifndef DSQ_PAGESTORE_H
#define DSQ_PAGESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/storage/wal.h"

typedef struct dsq_ps dsq_ps;

typedef struct dsq_ps_cfg {
    uint32_t page_size;     /* for a new database; an existing one keeps its own */
    uint64_t segment_bytes; /* log segment size */
    int zstd_level;
    uint64_t max_txn_bytes; /* pages one transaction may buffer */
    uint64_t checkpoint_bytes; /* log written after the newest checkpoint that makes one due */
    uint64_t retention_us;  /* history kept for time travel (history_retention) */
    bool known_durable;     /* closed with its log synced, in this process: no fsync at open */
    struct dsq_jnl *jnl;    /* the node's journal, or NULL (wal.h) */
    const char *name;       /* the database's name in it */
    const struct dsq_cold_src *cold_src; /* where evicted checkpoints' pages are read from (cold.h), or NULL */
    unsigned max_open_files; /* descriptors kept open for reads of old segments and
                                checkpoints (fdcache.h); 0 counts as 1 */
    /* Called by dsq_ps_commit with each record it appended, as logged
     * (rec is valid during the call); NULL: none. Not called by
     * dsq_ps_apply. */
    void (*on_commit)(void *ud, uint64_t lsn, const void *rec, size_t len);
    void *on_commit_ud;
    /* The log records after the LSN it returns for database `name` stay,
     * whatever the retention window says (a reader of the log that has
     * not caught up: the lake); UINT64_MAX: none held. NULL: none. */
    uint64_t (*hold)(void *ud, const char *name);
    void *hold_ud;
} dsq_ps_cfg;

/* Open the store in directory `dir` (creating it), recovering the log.
 * Returns 0, or a negative code with a message (a damaged log keeps it
 * closed): the failure's negated errno (-EMFILE, -ENFILE: out of
 * descriptors; -ENOMEM), or -EIO when it had none. */
int dsq_ps_open(const char *dir, const dsq_ps_cfg *cfg, dsq_ps **out, char *err, size_t errlen);
/* Close; whatever is buffered and not committed is dropped. */
void dsq_ps_close(dsq_ps *ps);

uint32_t dsq_ps_page_size(const dsq_ps *ps);
/* The LSN of the last commit, and its time (µs since the epoch). */
uint64_t dsq_ps_lsn(const dsq_ps *ps);
uint64_t dsq_ps_lsn_time(const dsq_ps *ps);
/* Pages in the database as the open transaction sees it. */
uint32_t dsq_ps_npages(const dsq_ps *ps);
dsq_wal *dsq_ps_wal(dsq_ps *ps);

/* Read page `pgno` (1-based) as the open transaction sees it into
 * dst[page_size]; a page past the end reads as zeros. 0, or -1 (I/O or a
 * damaged frame; the message in dsq_ps_error; or a page of an evicted
 * checkpoint that is not in the warm cache yet: then this thread has a
 * miss, cold.h). */
int dsq_ps_read(dsq_ps *ps, uint32_t pgno, void *dst);
/* Bytes [off, off + n) of it (off + n <= page size). */
int dsq_ps_read_part(dsq_ps *ps, uint32_t pgno, uint32_t off, uint32_t n, void *dst);

/* Buffer a write of page `pgno`. 0, or -1 (over max_txn_bytes, or out of
 * memory). */
int dsq_ps_write(dsq_ps *ps, uint32_t pgno, const void *src);
/* Buffer a change of size to `npages`. */
void dsq_ps_truncate(dsq_ps *ps, uint32_t npages);
/* Whether anything is buffered. */
bool dsq_ps_dirty(const dsq_ps *ps);

/* Make what is buffered one log record with the next LSN (nothing when
 * nothing changed). Appends without fsync. Returns 0, or -1 with the
 * reason in dsq_ps_error (the buffer is dropped either way). */
int dsq_ps_commit(dsq_ps *ps);
/* Append a record made elsewhere (another copy's log: replication) as
 * the next commit: rec[0..len) must be one whole, intact record (its CRC
 * and every page frame's bounds are checked) with the next LSN and this
 * store's page size, and nothing may be buffered. Appends without fsync,
 * as dsq_ps_commit does. 0, or -1 with the reason in dsq_ps_error. */
int dsq_ps_apply(dsq_ps *ps, const void *rec, size_t len);
/* Bytes the next commit's record carries after its pages (the row
 * changes, cdc.h); p must stay valid until then. (NULL, 0): none. */
void dsq_ps_set_extra(dsq_ps *ps, const void *p, size_t n);
/* Drop what is buffered. */
void dsq_ps_discard(dsq_ps *ps);

const char *dsq_ps_error(const dsq_ps *ps);
/* Whether the last commit failed because the disk is full. */
bool dsq_ps_full(const dsq_ps *ps);

/* ---- checkpoints and retention (actor thread, between transactions) ---- */

/* Whether enough log has been written since the newest checkpoint, and
 * how much (what the next open replays). */
bool dsq_ps_checkpoint_due(const dsq_ps *ps);
uint64_t dsq_ps_log_since(const dsq_ps *ps);
/* Sync the log and write a checkpoint of the pages changed since the
 * last one. 0 (also when nothing changed), or -1 with a message. */
int dsq_ps_checkpoint(dsq_ps *ps, char *err, size_t errlen);
/* Apply history_retention at time now_us: the newest checkpoint older than
 * it becomes the oldest point time travel reaches; log segments before it
 * go; checkpoints before it are merged once there are enough. */
int dsq_ps_maintain(dsq_ps *ps, uint64_t now_us, char *err, size_t errlen);
/* The LSN of the newest checkpoint (0: none). */
uint64_t dsq_ps_checkpoint_lsn(const dsq_ps *ps);
/* The oldest LSN time travel can reach. */
uint64_t dsq_ps_oldest(const dsq_ps *ps);

typedef struct dsq_ps_usage_t {
    uint32_t segments, checkpoints, pages;
    uint64_t log_bytes, checkpoint_bytes, log_first_lsn, oldest_lsn;
} dsq_ps_usage_t;
void dsq_ps_usage(dsq_ps *ps, dsq_ps_usage_t *u);
/* Descriptors open now for reads (at most max_open_files while no read
 * is under way). */
unsigned dsq_ps_read_fds(dsq_ps *ps);

/* ---- views: the database as it was at a commit ---- */

typedef struct dsq_ps_view dsq_ps_view;
/* The database as of `lsn` (between dsq_ps_oldest and dsq_ps_lsn). -1
 * with a message otherwise. The view is valid until the store's next
 * checkpoint or close. */
int dsq_ps_view_open(dsq_ps *ps, uint64_t lsn, dsq_ps_view **out, char *err, size_t errlen);
/* Bytes [off, off + n) of page pgno as of the view's LSN. */
int dsq_ps_view_read_part(dsq_ps_view *v, uint32_t pgno, uint32_t off, uint32_t n, void *dst);
uint32_t dsq_ps_view_npages(const dsq_ps_view *v);
uint64_t dsq_ps_view_lsn(const dsq_ps_view *v);
dsq_ps *dsq_ps_view_store(dsq_ps_view *v);
void dsq_ps_view_close(dsq_ps_view *v);
/* The LSN of the newest commit at or before `time_us` (0: before the
 * first). -1 when the time is older than the history kept. */
int dsq_ps_lsn_at(dsq_ps *ps, uint64_t time_us, uint64_t *lsn, char *err, size_t errlen);

/* Remove a closed database's directory and everything in it. */
int dsq_ps_remove(const char *dir, char *err, size_t errlen);

#endif
