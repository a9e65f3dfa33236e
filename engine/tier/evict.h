/* evict — the hot tier's budget (DESIGN D6, docs/storage.md "Hot tier and
 * warm reads").
 *
 * Every interval a thread adds up the bytes the databases' files take on
 * the local disk (blocks, not sizes). While that is over hot_tier_max_bytes,
 * and for every file untouched for hot_tier_max_age, files of closed
 * databases that the object store holds exactly as they are here (their
 * manifest says so) are evicted, coldest first (the later of the file's
 * time and its database's last close): checkpoints, and log segments all
 * of whose records the newest checkpoint covers (history: time travel and
 * CDC catch-up read them). Their data bytes are given back to the disk (a
 * hole punched; a checkpoint's header and directory and a segment's
 * header stay) and a sidecar says which chunks hold them (warm.h).
 * Nothing the store has not acknowledged is evicted, and nothing of an
 * open database: a database opening waits for an eviction of its files to
 * end, and one being evicted is not opened meanwhile. */
#ifndef DSQ_EVICT_H
#define DSQ_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/counters.h"

struct dsq_tier;
typedef struct dsq_evict dsq_evict;

typedef struct dsq_evict_cfg {
    struct dsq_tier *tier;  /* whose manifests say what is uploaded */
    const char *data_dir;   /* databases are DATA_DIR/db/NAME */
    uint64_t max_bytes;     /* hot_tier_max_bytes (0: no limit) */
    uint64_t max_age_ms;    /* hot_tier_max_age (0: none) */
    uint64_t interval_ms;   /* how often to look (default 1 s; longer when a look took long) */
} dsq_evict_cfg;

/* Start the thread (NULL with a message). With neither limit set, no
 * thread runs, and opening and closing only keep count. */
dsq_evict *dsq_evict_start(const dsq_evict_cfg *cfg, char *err, size_t errlen);
void dsq_evict_stop(dsq_evict *v);

/* Database `db` opens (waits while its files are being evicted) / closed
 * (its files may be evicted from now on). Any thread; v may be NULL. */
void dsq_evict_opening(dsq_evict *v, const char *db);
void dsq_evict_closed(dsq_evict *v, const char *db);

/* Look now and evict what is due (the thread does this every interval).
 * Returns the files evicted. */
size_t dsq_evict_run(dsq_evict *v);

void dsq_evict_counts_get(dsq_evict *v, dsq_evict_counts *out);

#endif
