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
 * dsq_cold_miss_take (cold.h), undoes what the read was part of, and
 * asks to be called back when the chunk is there (dsq_warm_wait) to run
 * it again. Waits end after the cache's timeout even if the fetch does
 * not. Storage reads through dsq_warm_source, knowing nothing of the
 * cache. */
#ifndef DSQ_WARM_H
#define DSQ_WARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/counters.h"
#include "engine/storage/cold.h"

struct dsq_obj;

/* The object key of chunk `idx` (len bytes) of version `id` of one of
 * database db's files: db/NAME/data/IIIIIIII.CCCCC.LLLLLLLL (hex id and
 * length, decimal index). */
void dsq_chunk_key(char *out, size_t n, const char *db, uint64_t id, size_t idx, uint64_t len);

/* ---- the warm cache ---- */

typedef struct dsq_warm dsq_warm;

/* A cache in directory `dir` (emptied first) of at most max_bytes,
 * fetching from `obj`; a wait ends after timeout_ms. */
dsq_warm *dsq_warm_open(struct dsq_obj *obj, const char *dir, uint64_t max_bytes, uint64_t timeout_ms,
                        char *err, size_t errlen);
/* Fail every wait (callbacks run), cancel fetches, free. */
void dsq_warm_close(dsq_warm *w);

/* Bytes [off, off + n) of cold file c into buf. 0; DSQ_COLD_MISS when a
 * chunk is not in the cache (its fetch is started and it is this
 * thread's miss, cold.h); -1 on an error (message). Any thread. */
int dsq_warm_read(dsq_warm *w, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen);

/* A chunk of the cache: storage's dsq_cold_ref (cold.h). */
typedef struct dsq_cold_ref dsq_warm_chunk;

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

/* The cache as the source storage reads evicted files from. */
dsq_cold_src dsq_warm_source(dsq_warm *w);

/* Whether chunk k's fetch failed (a read asks for it again under a new
 * reference). */
bool dsq_warm_failed(dsq_warm *w, dsq_warm_chunk *k);

void dsq_warm_counts_get(dsq_warm *w, dsq_warm_counts *out);

#endif
