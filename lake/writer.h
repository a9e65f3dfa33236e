/* writer — the lake writer: the row changes (CDC) of the databases named
 * in [lake] databases become Iceberg changelog tables in the object store
 * (docs/lakehouse.md).
 *
 * A thread of its own runs rounds, every flush_interval or when asked
 * (dsq_lake_flush). In a round it lists the databases, and for each one
 * the globs select reads the commits after the database's position in
 * the lake (at most flush_bytes of row changes at a time), turns each
 * table's row events into changelog rows in Parquet files, and commits
 * each table: data files, a manifest, a manifest list carrying the
 * earlier snapshot's manifests forward, and the next metadata file
 * `vN.metadata.json`, written only if no object has that name (the
 * commit: of two writers one wins, the other reloads). The commit's
 * snapshot summary holds `dosqld.lsn`, the last commit of the database
 * the table has taken; after every table of the round has committed,
 * the namespace's `namespace.json` holds the database's position
 * (`dosqld.lsn` again). A restart reads from that position and passes
 * over each table's events up to its own `dosqld.lsn`: no change is
 * skipped or taken twice, wherever a crash cut the round.
 *
 * Engine calls go through the loop thread (an async handle); object store
 * requests through the store's thread. Either way the writer thread waits,
 * and gives up a wait when the lake stops: what it asked for then ends
 * on its own and is freed by dsq_lake_free. */
#ifndef DSQ_LAKE_WRITER_H
#define DSQ_LAKE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/engine.h"
#include "engine/tier/objstore.h"

typedef struct dsq_lake_cfg {
    uv_loop_t *loop;
    dsq_engine *engine;
    dsq_obj *objects;
    const char *store_url;            /* the store's URL (file://DIR, s3://B[/P]): files' URIs begin with it */
    const char *const *databases;     /* globs of the databases that feed the lake (copied) */
    size_t ndatabases;
    uint64_t flush_interval_ms;
    uint64_t flush_bytes;             /* row-change bytes read for one commit at most */
    uint64_t file_target_size;        /* a Parquet file is finished past about this many bytes */
    bool part_day, part_database;     /* partition new tables by day(_commit_ts), identity(_database) */
    const char *const *table_parts;   /* "DB.TABLE-GLOB SPEC": a spec for the tables the glob names
                                         (the first that matches; copied) */
    size_t ntable_parts;
    bool state;                       /* keep each table's current-state table */
    /* With several nodes: whether this node feeds the lake for db (its
     * copy is the primary). Loop thread. NULL: every database here. */
    bool (*feeds)(void *ud, const char *db);
    void *feeds_ud;
    /* Keep db's log after `after` (the lake's position): the engine's
     * dsq_engine_hold_log. Any thread. NULL: no hold. */
    int (*hold)(void *ud, const char *db, uint64_t after);
    void *hold_ud;
    uint64_t state_interval_ms;       /* ... rewritten at most this often */
    uint64_t maintenance_interval_ms; /* a table's expiry and orphan removal run at most this often */
    uint64_t snapshot_retention_ms;   /* snapshots older than this are expired (not the current one) */
    uint64_t orphan_age_ms;           /* unreferenced files older than this are removed */
} dsq_lake_cfg;

typedef struct dsq_lake dsq_lake;

typedef struct dsq_lake_stats {
    uint64_t rounds;                  /* rounds ended */
    uint64_t commits;                 /* snapshots committed */
    uint64_t files, rows, bytes;      /* data files, changelog rows and Parquet bytes written */
    uint64_t conflicts;               /* commits another writer won (then reloaded) */
    uint64_t expired, removed;        /* snapshots expired, files removed (maintenance) */
    uint64_t errors;                  /* rounds of a database that failed */
    char last_error[300];             /* the last failure, or "" */
} dsq_lake_stats;

/* Start the writer (loop thread). NULL with the reason in err. */
dsq_lake *dsq_lake_start(const dsq_lake_cfg *cfg, char *err, size_t errlen);

/* A round now: `done` runs on the loop thread once a round that began
 * after this call has ended (with the stats then), or with NULL stats if
 * the lake stops first. Loop thread. 0, or -1 out of memory. */
int dsq_lake_flush(dsq_lake *l, void (*done)(void *ud, const dsq_lake_stats *st), void *ud);

void dsq_lake_stats_get(dsq_lake *l, dsq_lake_stats *st);

/* Stop the thread (loop thread; before the engine and the store stop). */
void dsq_lake_stop(dsq_lake *l);
/* Free it: after the engine and the store are closed (their last
 * callbacks may still name it). */
void dsq_lake_free(dsq_lake *l);

#endif
