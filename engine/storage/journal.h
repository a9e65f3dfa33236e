/* journal — the node's commit journal (DESIGN D4/D5, docs/storage.md).
 *
 * Every commit record a database appends to its own log is also appended,
 * with the database's name and where the record lies in its log, to one
 * journal shared by every database of the node. Only the journal is
 * fdatasync'd on the commit path: one flush of one file, written in order,
 * opens the output gates of every database at once, however many there
 * are. The databases' own logs are written without a sync and made durable
 * in bulk, one syncfs() of the file system, when the journal moves to its
 * next file; then the files before it are dead (their header is zeroed)
 * and are written again later.
 *
 * The journal is a few preallocated files (slots) JOURNAL_DIR/NN.jnl; each
 * in use has a header with its sequence number. The journal's thread
 * writes zeros ahead of the appends into a file's first pass, so that the
 * commit path's fdatasync finds written blocks (no file-system metadata
 * to commit). After a crash the files
 * with a valid header hold every commit that may be missing from a
 * database's log: recovery writes each entry back at its place in that
 * log (dsq_jnl_replay), cuts the log after the last one, and makes it
 * durable before the journal is used again (dsq_jnl_open).
 *
 * Positions: an entry's place is (file seq << 32) | offset, increasing.
 *
 * A failed fdatasync of the journal voids everything written to it since
 * the last good one: the journal moves to a new file whose header says so
 * (replay skips the void entries), and every log with an entry in the void
 * range fails its sync (the actor restarts from its durable state).
 *
 * Appending copies the entry into memory; the next sync writes every copy
 * to the current file in one pwrite before its fdatasync (so do a move to
 * the next file and a close). A write that fails voids its entries like a
 * failed fdatasync, and the syncs that cover them report its errno.
 *
 * Threads: appends from any worker (under the journal's mutex: a copy),
 * syncs from the syncer and from actors closing (the one syncing writes
 * and fdatasyncs outside the mutex, while appends go on into a second
 * buffer), the flush on the journal's own thread. */
#ifndef DSQ_JOURNAL_H
#define DSQ_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#define DSQ_JNL_HDR 64        /* bytes of a file's header */
#define DSQ_JNL_ENTRY_HDR 40  /* bytes of an entry's fixed header */
#define DSQ_JNL_NAME_MAX 255  /* bytes of a database's name */
#define DSQ_JNL_MAX_FILES 64  /* slots at most: the journal cannot grow past this */

typedef struct dsq_jnl dsq_jnl;

/* One entry, as replay sees it: the record `rec` (len bytes) of database
 * `name` belongs at offset `off` of its log segment `seg`. */
typedef struct dsq_jnl_entry {
    const char *name;
    uint32_t seg;
    uint64_t off;
    uint64_t lsn;
    const uint8_t *rec;
    uint32_t len;
} dsq_jnl_entry;

typedef int (*dsq_jnl_visit_fn)(void *ud, const dsq_jnl_entry *en, char *err, size_t errlen);

/* Read the journal in `dir` (which need not exist) and call `visit` for
 * every live entry, oldest first. Returns the number of entries, or -1 with
 * a message (a visit failed, or a file cannot be read). Changes nothing. */
long dsq_jnl_replay(const char *dir, dsq_jnl_visit_fn visit, void *ud, char *err, size_t errlen);

/* Start the journal in `dir` (created), files of file_bytes each. First
 * syncs the file system (what replay wrote back becomes durable), then
 * marks every file dead: call it after replay. Starts the flush thread. */
dsq_jnl *dsq_jnl_open(const char *dir, uint64_t file_bytes, char *err, size_t errlen);

/* Stop the flush thread; flush (so that the next start replays nothing)
 * unless the journal failed; close. */
void dsq_jnl_close(dsq_jnl *j);

/* Append one entry: record `rec` (len bytes) of database `name` lies at
 * offset `off` of its log segment `seg`; rec NULL: the record is already
 * durable there, only its place is journaled. The entry is copied into
 * memory: the next sync writes it (a write that fails fails that sync).
 * Sets *first and *end to the entry's position and the one after it. 0,
 * or -1 with errno (ENOSPC: no room for another file; ENOMEM) and a
 * message. */
int dsq_jnl_append(dsq_jnl *j, const char *name, uint32_t seg, uint64_t off, uint64_t lsn,
                   const void *rec, size_t len, uint64_t *first, uint64_t *end, char *err, size_t errlen);

/* The same, for a record the log keeps in memory for now (dsq_wal's
 * pending bytes): the entry holds its file, which is not retired (its
 * entries would no longer be replayed) until dsq_jnl_release says the
 * record is written to its log. */
int dsq_jnl_append_held(dsq_jnl *j, const char *name, uint32_t seg, uint64_t off, uint64_t lsn,
                        const void *rec, size_t len, uint64_t *first, uint64_t *end, char *err,
                        size_t errlen);

/* The records of the held entries at positions first[0..n) are in their
 * logs now (or were dropped as never durable). */
void dsq_jnl_release(dsq_jnl *j, const uint64_t *first, size_t n);

/* A log that keeps held records registers as a holder: write(ud) writes
 * them to the log (taking its own locks; it may call dsq_jnl_release) and
 * is true when it had some; push(ud) starts what it wrote since its last
 * push to the disk and waits for it (the journal's thread, off the commit
 * path). The journal's thread has every holder write and push about
 * every MiB of journal and before it retires a file, so the logs reach
 * the disk a little at a time and a file's entries are released before it
 * is retired. Pushes wait for the disk: they run outside the lock that
 * adding a holder and writing one take (a database opening, or a reader
 * of its files, does not wait behind a round of pushes); removing one
 * waits for a round in progress. Add before the first held append; remove
 * (after writing) before the log goes. */
typedef struct dsq_jnl_holder {
    bool (*write)(void *ud);
    void (*push)(void *ud);
    void *ud;
    const char *name; /* the database's */
    struct dsq_jnl_holder *prev, *next;
} dsq_jnl_holder;

void dsq_jnl_holder_add(dsq_jnl *j, dsq_jnl_holder *h);
void dsq_jnl_holder_remove(dsq_jnl *j, dsq_jnl_holder *h);
/* Have database `name`'s holder (NULL: every holder) write now: then its
 * log files hold every record appended so far (for readers of the files
 * while the database is open); with push, then have them push too. */
unsigned dsq_jnl_write_held(dsq_jnl *j, const char *name, bool push); /* how many had some */

/* Records larger than this are not copied into the journal: the caller
 * makes them durable in its own log first and appends only their place
 * (rec NULL). */
uint64_t dsq_jnl_inline_max(const dsq_jnl *j);

/* Make every entry before position `end` durable (one write and one
 * fdatasync, shared by every caller waiting meanwhile). Fails, with errno
 * set, when the journal's disk refused, or when a failed write or sync
 * voided part of [first, end). */
int dsq_jnl_sync(dsq_jnl *j, uint64_t first, uint64_t end, char *err, size_t errlen);

/* Move to a new file and flush every file before it: afterwards no live
 * entry was written before the call (for dropping a database, whose name
 * may be used again). 0, or -1 when the file system could not be synced. */
int dsq_jnl_barrier(dsq_jnl *j, char *err, size_t errlen);

typedef struct dsq_jnl_stats {
    uint64_t syncs;    /* fdatasyncs of the journal */
    uint64_t flushes;  /* syncfs flushes that retired files */
    uint64_t bytes;    /* appended */
    uint32_t files;    /* slots on disk */
    uint32_t live;     /* slots holding entries not yet flushed */
    uint64_t held;     /* entries whose records are not yet in their logs */
    uint64_t bulk_syncs; /* syncfs between moves to a new file */
    uint64_t zeroed;   /* bytes of zeros written ahead of the appends */
    uint64_t zero_waits; /* appends that waited for a chunk being zeroed */
} dsq_jnl_stats;

void dsq_jnl_stats_get(dsq_jnl *j, dsq_jnl_stats *out);

/* For tests: how long the journal's thread waits between choosing a chunk
 * to zero ahead of the appends and writing it (0). */
extern _Atomic unsigned dsq_jnl_zero_delay_us;

/* For tests: how long after the first append since its last syncfs the
 * journal's thread runs one even without a MiB more (0: 1000 ms). */
extern _Atomic unsigned dsq_jnl_flush_every_ms;

#endif
