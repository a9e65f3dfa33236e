/* conn — an actor's connections (worker): its database opened and
 * closed, connections on views of its store, checkpoints.
 *
 * Divisions: opening and closing; offering the durable files to the
 * object store; connections on views (reads beside a transaction,
 * read-only transactions, time travel); checkpoints and retention. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/vfs.h"

/* ---- opening and closing ------------------------------------------------------ */

int dsq__actor_open(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    if (a->open)
        return 0;
    actor_open *o = calloc(1, sizeof *o);
    char err[512];
    if (o == NULL) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    if (e->tier != NULL && !dsq_tier_ready(e->tier) && !dsq__store_exists(e, a->name) &&
        !dsq_tier_tombstoned(e->tier, a->name)) {
        /* Not here, and the store may have it: making it new now would
         * hide (and its first upload replace) the store's copy. */
        free(o);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                  "database %s is not on this node and the object store, which may have it, cannot be reached "
                  "yet (it is tried again in the background); try again later",
                  a->name);
        return -1;
    }
    dsq_evict_opening(e->evict, a->name); /* its files stay as they are while it is open */
    o->name = a->name;
    o->engine = e;
    int rc = dsq__store_open(e, a->name, a->life == ACTOR_RESTING, o, &o->ps, &o->db, err, sizeof err);
    if (rc != 0) {
        dsq_evict_closed(e->evict, a->name);
        free(o);
        if (e->warm != NULL && dsq_cold_missed()) /* not a failure: it opens again once the page is here */
            DSQ_DEBUG("database_open_cold", "db=%s reason=%s", a->name, dsq_log_q(err));
        else
            DSQ_ERROR("database_open_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
        /* The message names the server's files: the log has it, the
         * client gets what it can act on. */
        if (rc == -EMFILE || rc == -ENFILE)
            dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED,
                      "cannot open database %s: too many open files on the server; try again later", a->name);
        else
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot open database %s's storage (the server's log has the details)",
                      a->name);
        return -1;
    }
    if ((o->cap = dsq_cdc_cap_new(o->db)) == NULL) {
        sqlite3_close(o->db);
        dsq_ps_close(o->ps);
        dsq_evict_closed(e->evict, a->name);
        free(o);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    o->lsn = dsq_ps_lsn(o->ps);
    dsq__gate_init(&o->gate, e, dsq_ps_wal(o->ps), o->lsn, a->name, &a->feed);
    pthread_mutex_lock(&a->mu);
    a->gate_live = &o->gate;
    pthread_mutex_unlock(&a->mu);
    if (e->tier != NULL && e->cfg.tier_commit)
        dsq_wal_tee(dsq_ps_wal(o->ps), true); /* the tails come from memory */
    dsq__sandbox(o, o->db, &e->cfg);
    o->engine = e;
    a->open = o;
    dsq__actor_life(a, ACTOR_OPEN);
    atomic_fetch_add(&e->nopen_real, 1);
    /* What a crash or restart left not uploaded (recovered, so durable):
     * once per start; later opens follow closes that offered it all. */
    if (!a->offered && o->lsn > 0)
        dsq__offer_files(e, a, o, 0);
    return 0;
}

void dsq__actor_close(dsq_actor *a)
{
    actor_open *o = a->open;
    if (o == NULL)
        return;
    o->internal = true;
    if (o->stream_stmt)
        sqlite3_finalize(o->stream_stmt);
    o->stream_stmt = NULL;
    dsq__sstreams_close(a, NULL);
    dsq__snaps_close_all(o->engine, a);
    dsq__beside_close(o);
    if (!sqlite3_get_autocommit(o->db))
        sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
    dsq__stmts_free(o);
    dsq_cdc_cap_free(o->cap);
    int rc = sqlite3_close(o->db);
    if (rc != SQLITE_OK)
        DSQ_ERROR("database_close_failed", "db=%s error=%s", a->name, dsq_log_q(sqlite3_errstr(rc)));
    pthread_mutex_lock(&a->mu); /* the loop thread no longer reaches the gate */
    a->gate_live = NULL;
    pthread_mutex_unlock(&a->mu);
    /* Everything appended becomes durable and the replies waiting for it
     * go; if the disk refused, what is not durable is cut from the log, so
     * the next open starts from the last durable commit. */
    bool synced = dsq__gate_close(o->engine, &o->gate) == 0;
    if (!synced) {
        char err[400];
        if (dsq_wal_rewind(dsq_ps_wal(o->ps), err, sizeof err) != 0)
            DSQ_ERROR("log_rewind_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
        else
            DSQ_WARN("database_restarted", "db=%s lsn=%llu reason=log_sync_failed", a->name,
                     (unsigned long long)dsq_wal_durable(dsq_ps_wal(o->ps)));
    }
    uint64_t durable = dsq_wal_durable(dsq_ps_wal(o->ps));
    dsq_ps_close(o->ps);
    if (a->npins > 0)
        dsq__pins_release(o->engine, a);
    atomic_fetch_sub(&o->engine->nopen_real, 1);
    dsq_engine *e = o->engine;
    free(o);
    a->open = NULL;
    dsq__actor_life(a, synced ? ACTOR_RESTING : ACTOR_FAILED);
    if (synced)
        dsq__offer_files(e, a, NULL, durable); /* all of it is durable now */
    dsq_evict_closed(e->evict, a->name);
    atomic_fetch_add(&e->closes, 1); /* (the tick has the heap trimmed after many: dsq__heap_trim) */
}

/* ---- offering files to the object store ------------------------------------------- */

/* Offer the database's durable files to the object store (tier.h): up
 * to the durable end of its log while open (o), or whole once closed. */
void dsq__offer_files(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t closed_lsn)
{
    if (e->tier == NULL)
        return;
    const dsq_repl_hooks *h = e->cfg.repl;
    char primary[32];
    if (h != NULL && h->role(h->ud, a->name, primary, sizeof primary) == DSQ_ROLE_FOLLOWER)
        return; /* only the primary's copy goes to the object store */
    uint64_t epoch = h != NULL && h->epoch != NULL ? h->epoch(h->ud, a->name) : 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/db/%s", e->data_dir, a->name);
    uint32_t seq = 0;
    uint64_t size = 0, lsn = closed_lsn;
    if (o != NULL) {
        /* While it is open, its last segment goes up in whole chunks only
         * (each chunk is written once); the rest when it closes. */
        lsn = dsq_wal_durable_end(dsq_ps_wal(o->ps), &seq, &size);
        if (!e->cfg.tier_commit) /* with it, the records are in tails already */
            size -= size % e->cfg.tier_chunk_bytes;
        /* But never less than its header (durable since the segment was
         * made): one offered shorter is left out, and the manifest would
         * stop naming a segment it holds whole from the last close, or
         * one evicted since, and its objects would be deleted. */
        if (seq > 0 && size < DSQ_WAL_SEG_HDR)
            size = DSQ_WAL_SEG_HDR;
        o->offered_ms = dsq_now_ms();
    }
    a->offered = true;
    dsq_tier_file *files;
    size_t n;
    int lrc = dsq_tier_list_files(dir, o == NULL, seq, size, &files, &n);
    if (lrc != 0) {
        DSQ_WARN("upload_skipped", "db=%s reason=%s", a->name, dsq_log_q(strerror(-lrc)));
        return;
    }
    if (n > 0)
        dsq_tier_offer(e->tier, a->name, lsn, epoch, files, n);
    free(files);
}

/* ---- connections on views: reads beside a transaction, read-only transactions ---- */

/* A connection on the database as of `lsn`, with the actor's sandbox. -1
 * when there is no such view (the LSN is out of the history kept), -2
 * when the connection cannot open; the reason in err either way (a page
 * may be in the object store: cold). */
int dsq__view_conn(dsq_engine *e, dsq_actor *a, actor_open *o, uint64_t lsn, dsq_ps_view **vp,
                     sqlite3 **dbp, char *err, size_t errlen)
{
    *vp = NULL;
    *dbp = NULL;
    if (dsq_ps_view_open(o->ps, lsn, vp, err, errlen) != 0)
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/db/%s/db", e->data_dir, a->name);
    if (dsq__vfs_open_view(*vp, path, dbp, err, errlen) != 0) {
        dsq_ps_view_close(*vp);
        *vp = NULL;
        return -2;
    }
    dsq__sandbox(o, *dbp, &e->cfg);
    return 0;
}

void dsq__beside_close(actor_open *o)
{
    if (o->snap_db != NULL)
        sqlite3_close(o->snap_db);
    dsq_ps_view_close(o->snap_view);
    o->snap_db = NULL;
    o->snap_view = NULL;
}

/* Remove read-only transaction i: its connection and view close. Worker. */
void dsq__snap_remove(dsq_engine *e, dsq_actor *a, size_t i)
{
    /* Only this worker adds or removes entries, but the loop thread
     * writes their deadlines: entries are copied and moved under mu. */
    pthread_mutex_lock(&a->mu);
    sqlite3 *db = a->snaps[i].db;
    pthread_mutex_unlock(&a->mu);
    dsq__sstreams_close(a, db); /* its streams end with it */
    pthread_mutex_lock(&a->mu);
    snap_txn t = a->snaps[i];
    a->snaps[i] = a->snaps[--a->nsnaps];
    pthread_mutex_unlock(&a->mu);
    sqlite3_close(t.db);
    dsq_ps_view_close(t.view);
    atomic_fetch_sub(&e->txns_open, 1);
}

void dsq__snaps_close_all(dsq_engine *e, dsq_actor *a)
{
    while (a->nsnaps > 0)
        dsq__snap_remove(e, a, a->nsnaps - 1);
}

/* ---- checkpoints ------------------------------------------------------------------- */

/* Write a checkpoint and apply the retention window (between requests). */
void dsq__checkpoint(dsq_actor *a, actor_open *o)
{
    char err[600];
    uint64_t t0 = dsq_now_ns();
    /* Read-only transactions read the history through their views: it
     * stays (no retention, no merge) until they end. */
    bool keep = a->nsnaps > 0 || a->nsstreams > 0 || o->snap_db != NULL;
    if (dsq_ps_checkpoint(o->ps, err, sizeof err) != 0 ||
        (!keep && dsq_ps_maintain(o->ps, dsq_wall_ms() * 1000, err, sizeof err) != 0)) {
        /* Commits go on from the log; try again in a while, not at every
         * commit (a full disk would make each one pay for a failed write). */
        o->ckpt_after_ms = dsq_now_ms() + 5000;
        DSQ_ERROR("checkpoint_failed", "db=%s reason=%s retry_in_ms=5000", a->name, dsq_log_q(err));
        return;
    }
    DSQ_DEBUG("checkpoint", "db=%s lsn=%llu ms=%.1f", a->name, (unsigned long long)o->lsn,
              (double)(dsq_now_ns() - t0) / 1e6);
    dsq__offer_files(o->engine, a, o, 0);
}

/* A database that closes (hibernation, shutdown) with a megabyte or more
 * of log after its newest checkpoint gets one first, so that its next
 * open replays little; any closing database applies history_retention. */
void dsq__checkpoint_before_close(dsq_actor *a)
{
    actor_open *o = a->open;
    if (o == NULL || o->in_txn || dsq__gate_failed(&o->gate))
        return;
    if (dsq_ps_log_since(o->ps) >= (1u << 20)) {
        dsq__checkpoint(a, o); /* applies the retention window too */
        return;
    }
    /* History that aged out while the database was quiet goes now. */
    char err[600];
    if (a->nsnaps == 0 && a->nsstreams == 0 && o->snap_db == NULL && dsq_ps_maintain(o->ps, dsq_wall_ms() * 1000, err, sizeof err) != 0)
        DSQ_ERROR("retention_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
}
