/* tier — the tier's state and life (tier.h has the model, docs/storage.md
 * the object layout, tier_int.h which file does what).
 *
 * A few threads take the queued jobs (upload.c); restores (restore.c) and
 * tails (tail.c) run on the threads that ask for them. What they share is
 * here: the manifests of the databases seen, cached (with, for a database
 * dropped in this run, the file version its next incarnation starts at),
 * requests in flight at once, the last error; and the tier's start and
 * stop.
 *
 * Divisions: errors; the manifests the store has; requests in flight at
 * once; life. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/check.h"
#include "common/list.h"
#include "common/log.h"
#include "common/threads.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"

/* ---- errors ------------------------------------------------------------------------------------ */

void dsq__tier_note_error(dsq_tier *t, const char *db, const char *what)
{
    atomic_fetch_add(&t->errors, 1);
    pthread_mutex_lock(&t->emu);
    snprintf(t->last_error, sizeof t->last_error, "%s: %s", db, what);
    pthread_mutex_unlock(&t->emu);
    DSQ_WARN("object_store_upload_failed", "db=%s reason=%s", db, dsq_log_q(what));
}

/* ---- the manifests the store has --------------------------------------------------------------- */

/* GET and decode a manifest: 1 found (*out, one reference), 0 none, -1
 * error (msg). One that arrives damaged is asked for again, twice at
 * most. */
int dsq__tier_manifest_fetch(dsq_tier *t, const char *db, dsq_manifest **out, char *msg, size_t msglen)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        dsq_obj_req r;
        memset(&r, 0, sizeof r);
        r.op = DSQ_OBJ_GET;
        dsq__manifest_key(r.key, sizeof r.key, db);
        dsq_obj_status st = dsq_obj_run(t->cfg.obj, &r);
        if (st == DSQ_OBJ_NOT_FOUND) {
            dsq_obj_req_clear(&r);
            return 0;
        }
        if (st != DSQ_OBJ_OK) {
            snprintf(msg, msglen, "%s", r.msg);
            dsq_obj_req_clear(&r);
            return -1;
        }
        char why[200];
        int rc = dsq__manifest_decode(r.data.data ? r.data.data : "", r.data.len, db, out, why, sizeof why);
        dsq_obj_req_clear(&r);
        if (rc == 0)
            return 1;
        DSQ_WARN("manifest_damaged", "db=%s attempt=%d reason=%s", db, attempt + 1, dsq_log_q(why));
    }
    snprintf(msg, msglen, "the manifest of %s in the object store is damaged", db);
    return -1;
}

/* db's entry in the table of databases seen, or NULL. Caller holds cmu. */
static dsq_tier_known *known_find(dsq_tier *t, const char *db)
{
    DSQ_ASSERT_HELD(&t->cmu);
    return dsq_container_of(dsq_htab_find(&t->known, db), dsq_tier_known, link);
}

/* db's entry, made (empty) if there is none; NULL: out of memory. Caller
 * holds cmu. */
static dsq_tier_known *known_add(dsq_tier *t, const char *db)
{
    dsq_tier_known *k = known_find(t, db);
    if (k != NULL)
        return k;
    if ((k = calloc(1, sizeof *k)) == NULL)
        return NULL;
    dsq_strlcpy(k->db, db, sizeof k->db);
    if (dsq_htab_add(&t->known, &k->link, k->db) != 0) {
        free(k);
        return NULL;
    }
    return k;
}

/* The manifest of db in the cache (a reference the caller releases), or
 * NULL. */
dsq_manifest *dsq__tier_cache_get(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->cmu);
    dsq_tier_known *k = known_find(t, db);
    dsq_manifest *m = dsq__manifest_hold(k ? k->m : NULL);
    pthread_mutex_unlock(&t->cmu);
    return m;
}

/* db's manifest is now m (its reference taken), or with !replace only if
 * the cache has none. 0, or -1: out of memory. */
int dsq__tier_cache_set(dsq_tier *t, const char *db, dsq_manifest *m, bool replace)
{
    pthread_mutex_lock(&t->cmu);
    dsq_tier_known *k = known_add(t, db);
    if (k != NULL && (replace || k->m == NULL)) {
        dsq_manifest *was = k->m;
        k->m = m;
        m = was;
    }
    pthread_mutex_unlock(&t->cmu);
    dsq__manifest_release(m);
    return k != NULL ? 0 : -1;
}

void dsq__tier_cache_forget(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->cmu);
    dsq_tier_known *k = known_find(t, db);
    dsq_manifest *m = k ? k->m : NULL;
    if (k != NULL && k->reborn == 0) {
        dsq_htab_remove(&t->known, &k->link);
        free(k);
    } else if (k != NULL) {
        k->m = NULL;
    }
    pthread_mutex_unlock(&t->cmu);
    dsq__manifest_release(m);
}

/* The file version a database made again under dropped name db starts
 * at; 0: none dropped in this run. */
static uint64_t reborn_floor(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->cmu);
    dsq_tier_known *k = known_find(t, db);
    uint64_t floor = k ? k->reborn : 0;
    pthread_mutex_unlock(&t->cmu);
    return floor;
}

/* A database made again under a dropped name numbers its file versions
 * from above `id` (an object key names its version). */
void dsq__tier_reborn_above(dsq_tier *t, const char *db, uint64_t id)
{
    pthread_mutex_lock(&t->cmu);
    dsq_tier_known *k = known_add(t, db);
    if (k != NULL && k->reborn <= id)
        k->reborn = id + 1;
    pthread_mutex_unlock(&t->cmu);
}

/* The manifest the store has of db (cached after the first read); a
 * reference the caller releases. Only the thread working on db changes
 * its entry, so it stays what it was while that thread uses it. */
dsq_manifest *dsq__tier_manifest_get(dsq_tier *t, const char *db, char *msg, size_t msglen)
{
    dsq_manifest *m = dsq__tier_cache_get(t, db);
    if (m)
        return m;
    int rc = dsq__tier_manifest_fetch(t, db, &m, msg, msglen);
    if (rc < 0)
        return NULL;
    if (rc == 0 && (m = dsq__manifest_new(db)) == NULL) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    uint64_t floor = rc == 0 ? reborn_floor(t, db) : 0;
    if (floor != 0)
        m->next = floor;
    if (dsq__tier_cache_set(t, db, dsq__manifest_hold(m), true) != 0) {
        dsq__manifest_release(m);
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    return m;
}

void dsq_tier_prefetch(dsq_tier *t, const char *db)
{
    char msg[300];
    dsq__manifest_release(dsq__tier_manifest_get(t, db, msg, sizeof msg));
}

/* File f of database db, in chunk objects, as a cold file's description. */
static dsq_cold *cold_new(const char *db, const dsq_manifest_file *f)
{
    dsq_cold *c = calloc(1, sizeof *c);
    if (c == NULL || (c->chunks = calloc(f->nchunks ? f->nchunks : 1, sizeof *c->chunks)) == NULL) {
        dsq_cold_free(c);
        return NULL;
    }
    dsq_strlcpy(c->db, db, sizeof c->db);
    c->id = f->id;
    c->size = f->size;
    c->n = f->nchunks;
    uint64_t at = 0;
    for (size_t k = 0; k < f->nchunks; k++) {
        c->chunks[k] = (dsq_cold_chunk){at, f->chunks[k].len, f->chunks[k].crc};
        at += f->chunks[k].len;
    }
    return c;
}

int dsq_tier_cold_of(dsq_tier *t, const char *db, const char *name, uint64_t ino, uint64_t size, uint64_t mtime_ns,
                     dsq_cold **out, uint64_t *manifest_lsn, char *msg, size_t msglen)
{
    *out = NULL;
    dsq_manifest *m = dsq__tier_manifest_get(t, db, msg, msglen);
    if (m == NULL)
        return -1;
    *manifest_lsn = m->lsn;
    const dsq_manifest_file *f = dsq__manifest_file(m, name);
    int rc = 0;
    if (f != NULL && f->data == NULL && f->ino == ino && f->size == size && f->mtime_ns == mtime_ns) {
        *out = cold_new(db, f);
        rc = *out != NULL ? 1 : -1;
        if (rc < 0)
            snprintf(msg, msglen, "out of memory");
    }
    dsq__manifest_release(m);
    return rc;
}

int dsq_tier_exists(dsq_tier *t, const char *db, char *msg, size_t msglen)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_HEAD;
    dsq__manifest_key(r.key, sizeof r.key, db);
    dsq_obj_status st = dsq_obj_run(t->cfg.obj, &r);
    if (st != DSQ_OBJ_OK && st != DSQ_OBJ_NOT_FOUND)
        snprintf(msg, msglen, "%s", r.msg);
    dsq_obj_req_clear(&r);
    return st == DSQ_OBJ_OK ? 1 : st == DSQ_OBJ_NOT_FOUND ? 0 : -1;
}

bool dsq_tier_ready(dsq_tier *t) { return t == NULL || atomic_load(&t->ready); }

/* ---- requests in flight at once ---------------------------------------------------------------- */

static void batch_done(dsq_obj_req *r)
{
    dsq_tier_batch *b = r->ud;
    pthread_mutex_lock(&b->mu);
    b->left--;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void dsq__tier_batch_init(dsq_tier_batch *b)
{
    b->left = 0;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
}

void dsq__tier_batch_submit(dsq_tier *t, dsq_tier_batch *b, dsq_obj_req *r)
{
    r->done = batch_done;
    r->ud = b;
    pthread_mutex_lock(&b->mu);
    b->left++;
    pthread_mutex_unlock(&b->mu);
    dsq_obj_submit(t->cfg.obj, r);
}

void dsq__tier_batch_wait(dsq_tier_batch *b)
{
    pthread_mutex_lock(&b->mu);
    while (b->left > 0)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

void dsq__tier_batch_destroy(dsq_tier_batch *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

/* ---- life ---------------------------------------------------------------------------------------- */

dsq_tier *dsq_tier_start(const dsq_tier_cfg *cfg, char *err, size_t errlen)
{
    dsq_tier *t = calloc(1, sizeof *t);
    if (t == NULL || (t->data_dir = strdup(cfg->data_dir)) == NULL) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    if (t->cfg.chunk_bytes == 0)
        t->cfg.chunk_bytes = 2u << 20;
    if (t->cfg.parallel == 0)
        t->cfg.parallel = 8;
    if (t->cfg.inline_bytes == 0)
        t->cfg.inline_bytes = 4096;
    if (t->cfg.segment_bytes == 0)
        t->cfg.segment_bytes = 64u << 20;
    if (t->cfg.inline_bytes > DSQ_TIER_INLINE_MAX)
        t->cfg.inline_bytes = DSQ_TIER_INLINE_MAX;
    if (t->cfg.threads == 0)
        t->cfg.threads = 4;
    if (t->cfg.threads > DSQ_TIER_THREADS_MAX)
        t->cfg.threads = DSQ_TIER_THREADS_MAX;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->cmu, NULL);
    pthread_mutex_init(&t->emu, NULL);
    pthread_mutex_init(&t->dmu, NULL);
    pthread_cond_init(&t->cv, NULL);
    /* The drops not finished before: their objects go first. */
    char dd[4200];
    snprintf(dd, sizeof dd, "%s/dropped", t->data_dir);
    if (mkdir(dd, 0700) == 0) {
        dsq_fsync_dir(t->data_dir);
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dd, strerror(errno));
        dsq_tier_stop(t);
        return NULL;
    }
    DIR *d = opendir(dd);
    if (d != NULL) {
        struct dirent *de;
        size_t n = 0;
        while ((de = readdir(d)) != NULL) {
            if (dsq_db_name_valid(de->d_name)) {
                dsq__tier_queue_drop(t, de->d_name);
                n++;
            }
        }
        closedir(d);
        if (n > 0)
            DSQ_INFO("drops_pending", "databases=%zu reason=%s", n,
                     dsq_log_q("dropped before; their objects are deleted from the object store"));
    }
    if (dsq_threads_start(&t->threads, t->cfg.threads, dsq__tier_main, t) != 0) {
        snprintf(err, errlen, "cannot start the upload threads");
        dsq_tier_stop(t);
        return NULL;
    }
    return t;
}

size_t dsq_tier_drain(dsq_tier *t, uint64_t timeout_ms)
{
    if (t == NULL)
        return 0;
    uint64_t until = dsq_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    /* What waits out a backoff gets one try now; one that fails again
     * waits its next backoff, stop or not (a store that is down gets a
     * few requests per database, not a loop of them). */
    dsq_tier_job *j;
    dsq_queue_foreach(j, &t->jobs, link)
        j->not_before_ms = 0;
    pthread_cond_broadcast(&t->cv);
    while ((!dsq_queue_empty(&t->jobs) || t->busy > 0) && dsq_now_ms() < until)
        dsq_cond_wait_ms(&t->cv, &t->mu, 50);
    size_t left = t->busy;
    dsq_queue_foreach(j, &t->jobs, link)
        left++;
    pthread_mutex_unlock(&t->mu);
    return left;
}

void dsq_tier_stop(dsq_tier *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    dsq_threads_join(&t->threads);
    if (t->catchup_running)
        pthread_join(t->catchup, NULL);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&t->jobs)) != NULL)
        dsq__tier_job_free(dsq_container_of(n, dsq_tier_job, link));
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&t->known, &it)) != NULL;) {
        dsq_tier_known *k = dsq_container_of(h, dsq_tier_known, link);
        dsq__manifest_release(k->m);
        free(k);
    }
    dsq_htab_free(&t->known);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->emu);
    pthread_mutex_destroy(&t->dmu);
    pthread_mutex_destroy(&t->cmu);
    pthread_mutex_destroy(&t->mu);
    free(t->data_dir);
    free(t);
}

void dsq_tier_counts_get(dsq_tier *t, dsq_tier_counts *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    out->pending = t->busy;
    dsq_tier_job *j;
    dsq_queue_foreach(j, &t->jobs, link)
        out->pending++;
    pthread_mutex_unlock(&t->mu);
    out->uploads = atomic_load(&t->uploads);
    out->bytes = atomic_load(&t->bytes);
    out->manifests = atomic_load(&t->manifests);
    out->deletes = atomic_load(&t->deletes);
    out->errors = atomic_load(&t->errors);
    out->restored = atomic_load(&t->restored);
    pthread_mutex_lock(&t->emu);
    memcpy(out->last_error, t->last_error, sizeof out->last_error);
    pthread_mutex_unlock(&t->emu);
}
