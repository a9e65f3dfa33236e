/* epochs — each database's epochs on this node, kept durably.
 *
 * An epoch is a term of one primary: a promotion makes a new one, higher
 * than every epoch any copy accepted. This node keeps, per database:
 *
 *   - the highest epoch it accepted, and that epoch's primary: it takes
 *     records only from that primary, and refuses any from an older
 *     epoch (fencing);
 *   - the history of its log: for each epoch whose records it holds, the
 *     LSN of the first (history[i].start): the records from there to the
 *     next entry's start came from that epoch's primary. Two copies agree
 *     on their logs up to the end of the newest epoch both hold; past it,
 *     the copy that is not the primary cuts its log back.
 *
 * A database with no entry is in epoch 1, whose primary is the one the
 * placement names, with its whole log in epoch 1.
 *
 * It also keeps the newest copy set a change of the database's copies
 * made (dsq_copyset), once this node accepted the epoch that made it.
 *
 * The file (DATA_DIR/cluster/epochs) is an append-only list of entries,
 * each with a CRC; read whole at start (a torn last entry is dropped),
 * appended through libuv's thread pool (the loop thread never waits for
 * the disk), each append made durable before its callback runs.
 * Loop thread, except dsq_epochs_open (before the loop runs) and
 * dsq_epochs_get (any thread). */
#ifndef DSQ_EPOCHS_H
#define DSQ_EPOCHS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/nodeset.h"

#define DSQ_EPOCH_HISTORY 32 /* entries of history kept per database (older ones merge away) */

typedef struct dsq_epoch_hist {
    uint64_t epoch;
    uint64_t start; /* the LSN of its first record */
} dsq_epoch_hist;

/* A database's copy set as a change of it made it (repl.h, "Changing the
 * copies"): the nodes, the epoch that made it theirs, and while that
 * epoch may not be established yet, the set it replaces (prev: a
 * promotion then needs a quorum of both). One is newer than another by
 * its epoch, then by having no prev. */
#define DSQ_COPYSET_MAX 16
typedef struct dsq_copyset {
    uint64_t epoch;            /* 0: none recorded (the placement's copies hold) */
    uint32_t nodes[DSQ_COPYSET_MAX];
    size_t n;
    uint32_t prev[DSQ_COPYSET_MAX];
    size_t nprev;              /* 0: established */
} dsq_copyset;

static inline bool dsq_copyset_newer(const dsq_copyset *a, const dsq_copyset *b)
{
    return a->epoch > b->epoch || (a->epoch == b->epoch && a->epoch != 0 && a->nprev == 0 && b->nprev > 0);
}

typedef struct dsq_epoch_state {
    uint64_t accepted;         /* the highest epoch accepted (1 by default) */
    uint32_t primary;          /* its primary (a node number) */
    bool primary_known;        /* false: epoch 1's, the placement's */
    dsq_epoch_hist hist[DSQ_EPOCH_HISTORY];
    size_t nhist;              /* 0: all of the log is epoch 1's */
    dsq_copyset set;           /* the newest copy set recorded (set.epoch 0: none) */
} dsq_epoch_state;

typedef struct dsq_epochs dsq_epochs;

/* Read DATA_DIR/cluster/epochs (made if missing). The file names nodes
 * by id; `ids` (borrowed, outliving the object) gives their numbers, and
 * a number to an id it does not know yet (a node the cluster has not
 * seen since it started). 0, or -1 with a message (the file cannot be
 * read, or names more nodes than there can be numbers). */
int dsq_epochs_open(const char *data_dir, dsq_nodeset *ids, dsq_epochs **out, char *err, size_t errlen);
void dsq_epochs_close(dsq_epochs *e);

/* Whether the last run stopped without dsq_epochs_stopped (killed, or
 * crashed): DATA_DIR/cluster/running, made at open, was there. It stays
 * set over later runs until one that began so resumed every copy the
 * crash left behind. */
bool dsq_epochs_unclean(const dsq_epochs *e);
/* The run stops cleanly: every database's log is synced (the engine is
 * closed). `resumed`: a run that began unclean resumed every copy that
 * needed it (else the mark stays for the next run). */
void dsq_epochs_stopped(dsq_epochs *e, bool resumed);

/* The database's state (its defaults when it has no entry). */
void dsq_epochs_get(dsq_epochs *e, const char *db, dsq_epoch_state *out);

/* The epoch of the record at `lsn` in a log with this history (1 when
 * before every entry). */
uint64_t dsq_epoch_of(const dsq_epoch_state *s, uint64_t lsn);
/* The last LSN of epoch `epoch` in a log with this history whose last
 * record is `last`: the newest entry at or before that epoch ends where
 * the next begins (or at `last`). */
uint64_t dsq_epoch_end(const dsq_epoch_state *s, uint64_t epoch, uint64_t last);

/* Record that db accepted `epoch` with primary `primary` (and, when
 * start != 0, that its records from LSN start on are that epoch's);
 * `done(ud, 0)` once durable, `done(ud, -1)` when the disk refused (then
 * nothing changed). In memory the change shows at once. Loop thread. */
int dsq_epochs_set(dsq_epochs *e, uv_loop_t *loop, const char *db, uint64_t epoch, uint32_t primary,
                   uint64_t start, void (*done)(void *ud, int rc), void *ud);

/* As dsq_epochs_set, and the copy set `set` (recorded when its epoch is
 * above the one recorded; NULL: none) in the same entry. */
int dsq_epochs_set_copies(dsq_epochs *e, uv_loop_t *loop, const char *db, uint64_t epoch, uint32_t primary,
                          uint64_t start, const dsq_copyset *set, void (*done)(void *ud, int rc), void *ud);

/* Call fn for every database with an entry (its state; not under any
 * lock of the caller's: fn may not call dsq_epochs_set). */
void dsq_epochs_each(dsq_epochs *e, void (*fn)(void *ud, const char *db, const dsq_epoch_state *s), void *ud);

/* Appends under way (the owner waits for 0 before closing). */
unsigned dsq_epochs_pending(const dsq_epochs *e);

#endif
