/* counters — what the tiers' modules count, as plain structs.
 *
 * getStats and /metrics report them through dsq_engine_stats (engine.h);
 * each module fills its own (dsq_tier_counts_get, dsq_evict_counts_get,
 * dsq_warm_counts_get). They live here, apart from the modules' headers,
 * so that engine.h's users see the counters and nothing else of the
 * tiers. */
#ifndef DSQ_ENGINE_COUNTERS_H
#define DSQ_ENGINE_COUNTERS_H

#include <stdint.h>

/* What the uploader has done (tier.h). */
typedef struct dsq_tier_counts {
    uint64_t uploads;       /* chunk objects written */
    uint64_t bytes;         /* their bytes */
    uint64_t manifests;     /* manifests written */
    uint64_t deletes;       /* objects deleted (superseded, or of dropped databases) */
    uint64_t errors;        /* jobs that failed (each is tried again) */
    uint64_t pending;       /* databases with an upload or drop waiting */
    uint64_t restored;      /* databases restored at start */
    char last_error[300];
} dsq_tier_counts;

/* What eviction has done (evict.h). */
typedef struct dsq_evict_counts {
    uint64_t local_bytes;  /* the databases' files on disk at the last look */
    uint64_t cold_files;   /* evicted files at the last look */
    uint64_t evictions;    /* files evicted */
    uint64_t evicted_bytes; /* disk bytes they gave back */
    uint64_t errors;
} dsq_evict_counts;

/* What the warm cache has done (warm.h). */
typedef struct dsq_warm_counts {
    uint64_t hits;         /* reads served from the cache */
    uint64_t misses;       /* reads that found their chunk missing */
    uint64_t fetches;      /* chunks fetched (GETs that succeeded) */
    uint64_t fetch_bytes;
    uint64_t errors;       /* fetches that failed (after the store's retries, or damaged 3 times) */
    uint64_t timeouts;     /* waits that ended by the timeout */
    uint64_t bytes;        /* cached now */
    uint64_t chunks;       /* cached now */
} dsq_warm_counts;

#endif
