/* tier — every database's durable files, copied to the object store; and
 * databases restored from it (DESIGN D6, docs/storage.md "Object layout").
 *
 * A database's actor offers what of its directory is durable and may be
 * copied (its format file, its checkpoints, its log segments up to the
 * durable end): after a checkpoint, every upload_interval while it
 * commits, and when it closes (then all of it). The tier's threads upload
 * what the database's manifest does not have yet (several databases at
 * once, each database's jobs in order), in chunks of chunk_bytes
 * with their CRC-32s, then writes the manifest naming them, then deletes
 * the objects the manifest no longer names. Offers of one database
 * coalesce (the newest wins), so the backlog is at most one offer per
 * database; a failed upload is offered again after a backoff.
 *
 * Objects, under the store's prefix:
 *   db/NAME/manifest.json           which files make the database, and where
 *   db/NAME/data/IIIIIIII.CCCCC.LLLLLLLL  chunk C of file version I, L bytes (hex)
 * Chunk objects are never rewritten: a file that changes gets a new
 * version number, a growing log segment new objects for its new chunks.
 * Small files (inline_bytes) are kept inside the manifest instead. */
#ifndef DSQ_TIER_H
#define DSQ_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/counters.h"
#include "engine/tier/objstore.h"

typedef struct dsq_tier dsq_tier;

typedef struct dsq_tier_cfg {
    dsq_obj *obj;
    const char *data_dir;  /* databases are DATA_DIR/db/NAME */
    uint64_t chunk_bytes;  /* default 2 MiB */
    unsigned parallel;     /* chunk uploads at once per database (default 8) */
    unsigned threads;      /* databases uploaded at once (default 4, at most 16) */
    bool tails;            /* sync_to_object_store = commit: log records also go up as tail
                              objects (dsq_tier_tail), deleted once a manifest covers them */
    uint64_t segment_bytes; /* restore appends tails to logs of this segment size (default 64 MiB) */
    uint64_t inline_bytes; /* files up to this size go inside the manifest (default 4096, at most 64K) */
    /* Whether this node holds database db (the ones restored at start);
     * NULL: every database. Any thread. */
    bool (*holds)(void *ud, const char *db);
    void *holds_ud;
} dsq_tier_cfg;

/* A file of a database offered for upload: its path under the database's
 * directory ("format", "ckpt/X.ckpt", "wal/X.seg") and how many of its
 * bytes; `ino` and `mtime_ns` tell a replaced file from the one before. */
typedef struct dsq_tier_file {
    char name[48];
    uint64_t size;
    uint64_t ino;
    uint64_t mtime_ns;
    bool append_only;      /* a log segment: it only grows */
    bool cold;             /* evicted (warm.h): the manifest's copy is the file */
} dsq_tier_file;

dsq_tier *dsq_tier_start(const dsq_tier_cfg *cfg, char *err, size_t errlen);

/* Before the databases open: every database the store has a manifest of
 * and DATA_DIR/db has not (and that was not dropped) is downloaded (each
 * chunk's length and CRC checked) into place. Returns how many; -1 with a
 * message when a restore failed; -2 when the store cannot be listed
 * (unreachable: then dsq_tier_catch_up). */
long dsq_tier_restore_missing(dsq_tier *t, char *err, size_t errlen);

/* The store could not be listed at start: a thread tries again, with
 * backoff (full jitter, 1 s doubling to 30 s), until the missing
 * databases are restored. 0, or -1 with a message. */
int dsq_tier_catch_up(dsq_tier *t, char *err, size_t errlen);

/* Whether every database the store has is here (or dropped): a listing
 * worked. Until then a database that is not here may be in the store.
 * True for t NULL. Any thread. */
bool dsq_tier_ready(dsq_tier *t);

/* sync_to_object_store = commit: copy the log records (after, upto] of
 * database `db` (durable in `w`) to the store as one object
 * db/NAME/tail/AFTER-UPTO (LSNs, hex); `fn` runs once it is there or has
 * failed, on the store's thread (or at once, on this one). Any thread. */
struct dsq_wal;
typedef void (*dsq_tier_tail_fn)(void *ud, bool ok, uint64_t upto, const char *why);
void dsq_tier_tail(dsq_tier *t, const char *db, struct dsq_wal *w, uint64_t after, uint64_t upto,
                   dsq_tier_tail_fn fn, void *ud);

/* Materialize database `db` from the store into DATA_DIR/db/NAME, which
 * must not exist: all the store has, or only up to LSN `lsn`, or (with
 * time_us) up to the newest commit at or before that time. *at is the
 * LSN it ends at. 0, or -1 with a message (no such database, a copy
 * with no commit (LSN 0: nothing to restore), an LSN the store no longer
 * or not yet holds, damage). */
int dsq_tier_restore(dsq_tier *t, const char *db, uint64_t lsn, uint64_t time_us, uint64_t *at, char *err,
                     size_t errlen);

/* As dsq_tier_restore with all the store has, but no further than LSN
 * limit(ud, epoch) (epoch: the manifest's, tier.h dsq_tier_offer; 0 means
 * nothing may be taken): a copy restored for replication takes only what
 * agrees with its own history. */
typedef uint64_t (*dsq_tier_limit_fn)(void *ud, uint64_t epoch);
int dsq_tier_restore_within(dsq_tier *t, const char *db, dsq_tier_limit_fn limit, void *ud, uint64_t *at, char *err,
                            size_t errlen);

/* The files of database `db` as they are durable now, up to LSN `lsn`
 * (any thread). With replication, `epoch` is the one this node is the
 * database's primary in (0 without): the manifest says it, and an offer
 * finding the store's manifest written in a newer epoch is dropped
 * (upload_fenced) — a primary replaced puts nothing over its successor's
 * copy once that has written one. */
void dsq_tier_offer(dsq_tier *t, const char *db, uint64_t lsn, uint64_t epoch, const dsq_tier_file *files,
                    size_t n);

/* List what of database directory `dir` may be offered: every file whole
 * (`whole`: the database is closed), or else with the segments after
 * `seg` left out and segment `seg` cut at `seg_size` (the durable end).
 * 0, or a negated errno. The caller frees *out. */
int dsq_tier_list_files(const char *dir, bool whole, uint32_t seg, uint64_t seg_size, dsq_tier_file **out,
                        size_t *n);

/* A cold file's description (warm.h) of file `name` of database `db`
 * from the manifest the store has: 1 and *out when the manifest names
 * exactly this file (inode, size, modification time: what was uploaded is
 * what is here) in chunks; 0 when not (not uploaded yet, or inline); -1
 * when the manifest cannot be read (msg). *manifest_lsn: the LSN the
 * manifest was written at. */
struct dsq_cold;
int dsq_tier_cold_of(dsq_tier *t, const char *db, const char *name, uint64_t ino, uint64_t size, uint64_t mtime_ns,
                     struct dsq_cold **out, uint64_t *manifest_lsn, char *msg, size_t msglen);

/* Read db's manifest into the cache now if it is not there (the evictor,
 * before it holds the database closed). */
void dsq_tier_prefetch(dsq_tier *t, const char *db);

/* Drop database `db`: under the tier's drop lock, `local` (may be NULL)
 * takes the local copy away (0 to go on; anything else is returned as
 * it is, nothing else done); then the tombstone DATA_DIR/dropped/NAME is
 * written and fsynced, and the deletion of the database's objects is
 * queued (after what was offered before; retried with backoff until the
 * store has none of them, across restarts; then the tombstone goes). A
 * restore never brings back a database with a tombstone. 0, or -1 with a
 * message (the tombstone could not be written: the objects go all the
 * same). */
typedef int (*dsq_tier_drop_fn)(void *ud, char *err, size_t errlen);
int dsq_tier_drop(dsq_tier *t, const char *db, dsq_tier_drop_fn local, void *ud, char *err, size_t errlen);

/* Whether db has a tombstone: dropped, its objects maybe not all gone. */
bool dsq_tier_tombstoned(dsq_tier *t, const char *db);

/* Whether the store has a manifest of db: 1, 0, or -1 (msg: the store
 * failed). */
int dsq_tier_exists(dsq_tier *t, const char *db, char *msg, size_t msglen);

/* Wait until nothing offered is left to upload, or timeout_ms passed.
 * Returns the databases still waiting. */
size_t dsq_tier_drain(dsq_tier *t, uint64_t timeout_ms);

/* Stop the thread (what is not uploaded stays so) and free. */
void dsq_tier_stop(dsq_tier *t);

void dsq_tier_counts_get(dsq_tier *t, dsq_tier_counts *out);

#endif
