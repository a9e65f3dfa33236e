/* restore — databases from the object store (tier.h has the model,
 * docs/storage.md the layout): at start, every database the store has and
 * the data directory has not, several at once; the same again by a
 * thread that catches up with a store unreachable at start; and one
 * database on demand, whole or cut back to an LSN or a point in time.
 * Each is downloaded beside its place (DATA_DIR/db/.restore.NAME), its
 * chunks checked, the tails after it applied, then renamed into place.
 *
 * Divisions: restore; catching up; restore to a point in time. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/log.h"
#include "common/threads.h"
#include "common/util.h"
#include "engine/storage/ckpt.h"
#include "engine/storage/disk.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"

/* ---- restore ------------------------------------------------------------------------------------- */

/* A file kept inline in the manifest, f, into fd. */
static int restore_inline(const char *db, const dsq_manifest_file *f, int fd, char *err, size_t errlen)
{
    size_t bl = strlen(f->data);
    unsigned char *buf = malloc(bl / 4 * 3 + 3);
    long got = buf ? dsq_base64_decode(f->data, bl, buf) : -1;
    int rc = got < 0 || (uint64_t)got != f->size || dsq_crc32(buf, (size_t)got) != f->crc ||
                     dsq_pwrite_full(fd, buf, (size_t)got, 0) != 0
                 ? -1
                 : 0;
    if (rc != 0)
        snprintf(err, errlen, "%s of %s: the manifest's copy is damaged, or it cannot be written", f->name, db);
    free(buf);
    return rc;
}

/* Whether chunk GET r (done) brought the chunk of `len` bytes with CRC-32
 * `crc`; one that arrives with the wrong length or CRC is asked for again
 * (damaged on the way), twice at most. 0 it did; 1 the store failed (its
 * message in r); 2 the wrong length; 3 the wrong CRC. */
static int chunk_check(dsq_tier *t, const char *db, dsq_obj_req *r, uint64_t len, uint32_t crc)
{
    for (int attempt = 0;; attempt++) {
        int bad = r->status != DSQ_OBJ_OK ? 1 : r->data.len != len ? 2 : dsq_crc32(r->data.data, len) != crc ? 3 : 0;
        if (bad != 2 && bad != 3)
            return bad;
        DSQ_WARN("restore_chunk_damaged", "db=%s key=%s reason=%s attempt=%d", db, r->key,
                 bad == 2 ? "length" : "crc32", attempt + 1);
        if (attempt == 2)
            return bad;
        dsq_obj_req_clear(r);
        r->done = NULL;
        dsq_obj_run(t->cfg.obj, r);
    }
}

/* The chunks of file f into fd (the file at `path`), `parallel` GETs at
 * a time. */
static int restore_chunks(dsq_tier *t, const char *db, const dsq_manifest_file *f, int fd, const char *path, char *err,
                          size_t errlen)
{
    size_t par = t->cfg.parallel;
    dsq_obj_req *reqs = calloc(par, sizeof *reqs);
    if (reqs == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    dsq_tier_batch b;
    dsq__tier_batch_init(&b);
    int rc = 0;
    uint64_t off = 0;
    for (size_t at = 0; at < f->nchunks && rc == 0; at += par) {
        size_t w = f->nchunks - at < par ? f->nchunks - at : par;
        for (size_t q = 0; q < w; q++) {
            memset(&reqs[q], 0, sizeof reqs[q]);
            reqs[q].op = DSQ_OBJ_GET;
            dsq_chunk_key(reqs[q].key, sizeof reqs[q].key, db, f->id, at + q, f->chunks[at + q].len);
            dsq__tier_batch_submit(t, &b, &reqs[q]);
        }
        dsq__tier_batch_wait(&b);
        for (size_t q = 0; q < w; q++) {
            const dsq_manifest_chunk *c = &f->chunks[at + q];
            dsq_obj_req *r = &reqs[q];
            int bad = rc == 0 ? chunk_check(t, db, r, c->len, c->crc) : 0;
            if (bad) {
                snprintf(err, errlen, "%.120s: %.150s", r->key,
                         bad == 1 ? r->msg : bad == 2 ? "the chunk has the wrong length" : "the chunk's CRC-32 does not match");
                rc = -1;
            }
            int wrc = rc == 0 ? dsq_pwrite_full(fd, r->data.data, c->len, off) : 0;
            if (wrc != 0) {
                snprintf(err, errlen, "write %.200s: %s", path, strerror(-wrc));
                rc = -1;
            }
            off += c->len;
            dsq_obj_req_clear(r);
        }
    }
    free(reqs);
    dsq__tier_batch_destroy(&b);
    return rc;
}

/* File f of db's manifest into directory `into`, synced. */
static int restore_file(dsq_tier *t, const char *db, const dsq_manifest_file *f, const char *into, char *err,
                        size_t errlen)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", into, f->name);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %.200s: %s", path, strerror(errno));
        return -1;
    }
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "create %.200s: %s", path, strerror(errno));
        return -1;
    }
    int rc = f->data != NULL ? restore_inline(db, f, fd, err, errlen) : restore_chunks(t, db, f, fd, path, err, errlen);
    if (rc == 0 && fsync(fd) != 0) {
        snprintf(err, errlen, "fsync %.200s: %s", path, strerror(errno));
        rc = -1;
    }
    close(fd);
    if (rc == 0) {
        *slash = '\0';
        dsq_fsync_dir(path);
    }
    return rc;
}

/* Download the files manifest m names into directory `into`. */
static int restore_into(dsq_tier *t, const dsq_manifest *m, const char *into, char *err, size_t errlen)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (restore_file(t, m->db, &m->files[i], into, err, errlen) != 0)
            return -1;
    return 0;
}

#define RESTORE_THREADS 8

typedef struct rjobs {
    dsq_tier *t;
    const char *base;           /* DATA_DIR/db */
    char (*names)[129];         /* the databases to restore */
    size_t n;
    atomic_size_t next;
    pthread_mutex_t mu;         /* the rest */
    long restored;
    bool failed;
    char err[600];
} rjobs;

/* Database db from the store into place in `base` (DATA_DIR/db), where
 * it is not: 1 restored; 0 not (dropped meanwhile); -1 failed (msg). */
static int restore_db(dsq_tier *t, const char *base, const char *db, char *msg, size_t msglen)
{
    char dir[4096 + 256], tmp[4096 + 256], e2[256];
    snprintf(dir, sizeof dir, "%s/%s", base, db);
    snprintf(tmp, sizeof tmp, "%s/.restore.%s", base, db);
    dsq_manifest *m = NULL;
    int rc = dsq__tier_manifest_fetch(t, db, &m, msg, msglen);
    if (rc <= 0)
        return rc; /* none: dropped meanwhile */
    int saved = 0;
    dsq_ps_remove(tmp, e2, sizeof e2);
    if (mkdir(tmp, 0700) != 0) {
        saved = errno;
        rc = -1;
    } else if (restore_into(t, m, tmp, msg, msglen) != 0 || dsq__tier_tails_apply(t, db, tmp, NULL, msg, msglen) != 0) {
        rc = -1; /* their message says why */
    } else {
        /* Into place unless it was dropped meanwhile (a drop of a
         * database not here yet writes its tombstone under dmu). */
        pthread_mutex_lock(&t->dmu);
        if (dsq_tier_tombstoned(t, db)) {
            rc = 0;
        } else if (rename(tmp, dir) != 0) {
            saved = errno;
            rc = -1;
        } else {
            /* What was restored is what the store has: no upload needed
             * (unless the database, open meanwhile, read the manifest
             * itself, maybe a newer one). */
            dsq__tier_cache_set(t, db, dsq__manifest_hold(m), false);
        }
        pthread_mutex_unlock(&t->dmu);
    }
    if (rc <= 0)
        dsq_ps_remove(tmp, e2, sizeof e2);
    if (rc < 0 && msg[0] == '\0')
        snprintf(msg, msglen, "%s", saved ? strerror(saved) : "the restore failed");
    if (rc > 0) {
        dsq_fsync_dir(base);
        atomic_fetch_add(&t->restored, 1);
        DSQ_INFO("database_restored", "db=%s lsn=%llu files=%zu", db, (unsigned long long)m->lsn, m->nfiles);
    }
    dsq__manifest_release(m);
    return rc;
}

/* Restore databases from the list until it is done or one fails. */
static void *restore_main(void *arg)
{
    dsq_thread_name("dsq-restore");
    rjobs *rj = arg;
    dsq_tier *t = rj->t;
    for (;;) {
        size_t i = atomic_fetch_add(&rj->next, 1);
        pthread_mutex_lock(&rj->mu);
        bool stop = rj->failed;
        pthread_mutex_unlock(&rj->mu);
        pthread_mutex_lock(&t->mu);
        stop |= t->stopping;
        pthread_mutex_unlock(&t->mu);
        if (i >= rj->n || stop)
            return NULL;
        char msg[300] = "";
        int rc = restore_db(t, rj->base, rj->names[i], msg, sizeof msg);
        pthread_mutex_lock(&rj->mu);
        if (rc < 0 && !rj->failed)
            snprintf(rj->err, sizeof rj->err, "restoring %s: %s", rj->names[i], msg);
        rj->failed |= rc < 0;
        rj->restored += rc > 0;
        pthread_mutex_unlock(&rj->mu);
    }
}

/* One pass of dsq_tier_restore_missing: n, -1 (a restore failed), -2
 * (the store cannot be listed). */
static long restore_missing(dsq_tier *t, char *err, size_t errlen)
{
    char base[4096];
    snprintf(base, sizeof base, "%s/db", t->data_dir);
    /* Leftovers of a restore that did not finish. */
    DIR *d = opendir(base);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, ".restore.", 9) == 0) {
                char p[4096 + 256];
                snprintf(p, sizeof p, "%s/%s", base, de->d_name);
                char e2[256];
                dsq_ps_remove(p, e2, sizeof e2);
            }
        }
        closedir(d);
    }
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_LIST;
    strcpy(r.key, "db/");
    if (dsq_obj_run(t->cfg.obj, &r) != DSQ_OBJ_OK) {
        snprintf(err, errlen, "cannot list the object store: %s", r.msg);
        dsq_obj_req_clear(&r);
        return -2;
    }
    /* The databases to bring back: named by a manifest, not here. */
    rjobs rj = {.t = t, .base = base};
    rj.names = calloc(r.nitems ? r.nitems : 1, sizeof *rj.names);
    if (rj.names == NULL) {
        dsq_obj_req_clear(&r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < r.nitems; i++) {
        const char *key = r.items[i].key + 3;
        const char *slash = strchr(key, '/');
        if (slash == NULL || strcmp(slash, "/manifest.json") != 0 || (size_t)(slash - key) > 128)
            continue;
        char *db = rj.names[rj.n];
        memcpy(db, key, (size_t)(slash - key));
        db[slash - key] = '\0';
        char dir[4096 + 256];
        snprintf(dir, sizeof dir, "%s/%s", base, db);
        struct stat st;
        if (dsq_db_name_valid(db) && stat(dir, &st) != 0 && !dsq_tier_tombstoned(t, db) &&
            (t->cfg.holds == NULL || t->cfg.holds(t->cfg.holds_ud, db)))
            rj.n++; /* else here already (the local copy is the newer), dropped, or another node's */
    }
    dsq_obj_req_clear(&r);
    /* Several at once: with many small databases the time is the store's
     * round trips. */
    pthread_mutex_init(&rj.mu, NULL);
    dsq_threads th = {0};
    /* Fewer threads are fine; with none, the work is done here. */
    (void)dsq_threads_start(&th, rj.n < RESTORE_THREADS ? (unsigned)rj.n : RESTORE_THREADS, restore_main, &rj);
    if (th.n == 0 && rj.n > 0)
        restore_main(&rj);
    dsq_threads_join(&th);
    pthread_mutex_destroy(&rj.mu);
    free(rj.names);
    if (rj.failed) {
        snprintf(err, errlen, "%s", rj.err);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    bool stopped = t->stopping;
    pthread_mutex_unlock(&t->mu);
    if (stopped) {
        snprintf(err, errlen, "stopped before every database was restored");
        return -1;
    }
    atomic_store(&t->ready, true);
    return rj.restored;
}

long dsq_tier_restore_missing(dsq_tier *t, char *err, size_t errlen) { return restore_missing(t, err, errlen); }

/* ---- catching up with a store that was unreachable at start ------------------------------------ */

#define CATCHUP_RETRY_MS 1000
#define CATCHUP_RETRY_MAX_MS 30000

static void *catchup_main(void *arg)
{
    dsq_thread_name("dsq-catchup");
    dsq_tier *t = arg;
    for (unsigned fails = 1;; fails++) {
        uint64_t until = dsq_now_ms() + dsq_obj_backoff_ms(fails, CATCHUP_RETRY_MS, CATCHUP_RETRY_MAX_MS,
                                                           dsq_obj_backoff_rnd());
        pthread_mutex_lock(&t->mu);
        while (!t->stopping && dsq_now_ms() < until)
            dsq_cond_wait_ms(&t->cv, &t->mu, until - dsq_now_ms());
        bool stop = t->stopping;
        pthread_mutex_unlock(&t->mu);
        if (stop)
            return NULL;
        char err[700];
        long n = restore_missing(t, err, sizeof err);
        if (n >= 0) {
            DSQ_INFO("object_store_caught_up", "restored=%ld attempts=%u", n, fails + 1);
            return NULL;
        }
        DSQ_WARN("object_store_catch_up_failed", "attempt=%u reason=%s", fails + 1, dsq_log_q(err));
    }
}

int dsq_tier_catch_up(dsq_tier *t, char *err, size_t errlen)
{
    if (pthread_create(&t->catchup, NULL, catchup_main, t) != 0) {
        snprintf(err, errlen, "cannot start the object store's catch-up thread");
        return -1;
    }
    t->catchup_running = true;
    return 0;
}

/* ---- restore to a point in time ------------------------------------------------------------------ */

typedef struct pit {
    uint64_t time_us;  /* newest record at or before it */
    uint64_t best;
    uint64_t want;     /* the record to find */
    dsq_wal_loc loc;
    bool found;
    uint64_t seen;     /* records visited */
} pit;

static int pit_time(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err, size_t errlen)
{
    pit *p = ud;
    if (r->time_us <= p->time_us && r->lsn > p->best)
        p->best = r->lsn;
    return 0;
}

static int pit_find(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err, size_t errlen)
{
    pit *p = ud;
    p->seen++;
    if (r->lsn == p->want) {
        p->loc = loc;
        p->found = true;
    }
    return 0;
}

/* Cut the database in `dir` (just downloaded, up to LSN `last`) back to
 * LSN *at, or (time_us) to the newest commit at or before time_us. */
static int cut_back(const char *dir, uint64_t last, uint64_t time_us, uint64_t *at, char *err, size_t errlen)
{
    char path[8192], wal[8192], ck[8192];
    snprintf(path, sizeof path, "%s/format", dir);
    snprintf(wal, sizeof wal, "%s/wal", dir);
    snprintf(ck, sizeof ck, "%s/ckpt", dir);
    FILE *fp = fopen(path, "r");
    unsigned page_size = 0;
    if (fp == NULL || fscanf(fp, "dosqld-db 1 page_size %u", &page_size) != 1) {
        if (fp)
            fclose(fp);
        snprintf(err, errlen, "its format file cannot be read");
        return -1;
    }
    fclose(fp);
    char **paths = NULL;
    size_t n = 0;
    if (dsq_ckpt_list(ck, &paths, &n, err, errlen) != 0)
        return -1;
    uint64_t *lsns = calloc(n ? n : 1, sizeof *lsns), *times = calloc(n ? n : 1, sizeof *times);
    int rc = lsns && times ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        dsq_ckpt c;
        if (dsq_ckpt_load(paths[i], page_size, &c, err, errlen) != 0) {
            rc = -1;
            break;
        }
        lsns[i] = c.lsn;
        times[i] = c.time_us;
        dsq_ckpt_close(&c, 0);
    }
    uint64_t oldest;
    if (rc == 0 && time_us != 0) {
        pit p = {.time_us = time_us};
        for (size_t i = 0; i < n; i++)
            if (times[i] <= time_us && lsns[i] > p.best)
                p.best = lsns[i];
        int sr = dsq_wal_scan_files(wal, NULL, 0, last, pit_time, &p, &oldest, err, errlen);
        if (sr == 1) /* the log starts later (retired behind a checkpoint): from there */
            sr = dsq_wal_scan_files(wal, NULL, oldest, last, pit_time, &p, &oldest, err, errlen);
        if (sr < 0)
            rc = -1;
        else if (p.best == 0) {
            snprintf(err, errlen, "the object store has no commit at or before that time");
            rc = -1;
        }
        *at = p.best;
    }
    if (rc == 0 && *at > last) {
        snprintf(err, errlen, "LSN %llu is after the last commit the object store has (%llu)",
                 (unsigned long long)*at, (unsigned long long)last);
        rc = -1;
    }
    /* The checkpoints after the point go; the log from the newest left
     * must reach it. */
    uint64_t base = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (lsns[i] > *at) {
            if (unlink(paths[i]) != 0) {
                snprintf(err, errlen, "unlink %.200s: %s", paths[i], strerror(errno));
                rc = -1;
            }
        } else if (lsns[i] > base) {
            base = lsns[i];
        }
    }
    if (rc == 0 && *at > base) {
        pit p = {.want = *at};
        int s = dsq_wal_scan_files(wal, NULL, base, *at, pit_find, &p, &oldest, err, errlen);
        if (s < 0) {
            rc = -1;
        } else if (s == 1) {
            snprintf(err, errlen, "the object store no longer holds the log from LSN %llu (its history starts after %llu)",
                     (unsigned long long)base + 1, (unsigned long long)oldest);
            rc = -1;
        } else if (!p.found) {
            snprintf(err, errlen, "LSN %llu is after the last commit the object store has", (unsigned long long)*at);
            rc = -1;
        }
    }
    if (rc == 0 && *at < last) {
        /* Everything from the record after the point on goes. */
        pit p = {.want = *at + 1};
        if (dsq_wal_scan_files(wal, NULL, *at, *at + 1, pit_find, &p, &oldest, err, errlen) < 0)
            rc = -1;
        else if (p.found && dsq_wal_cut_after(wal, p.loc.seg, p.loc.off, err, errlen) != 0)
            rc = -1;
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(lsns);
    free(times);
    return rc;
}

static int restore_as(dsq_tier *t, const char *db, uint64_t lsn, uint64_t time_us, dsq_tier_limit_fn limit,
                      void *ud, uint64_t *at, char *err, size_t errlen)
{
    char base[4096], dir[4096 + 256], tmp[4096 + 256];
    snprintf(base, sizeof base, "%s/db", t->data_dir);
    snprintf(dir, sizeof dir, "%s/%s", base, db);
    snprintf(tmp, sizeof tmp, "%s/.restore.%s", base, db);
    struct stat st;
    if (stat(dir, &st) == 0) {
        snprintf(err, errlen, "%s exists already; restore into another data directory", dir);
        return -1;
    }
    if (dsq_tier_tombstoned(t, db)) {
        snprintf(err, errlen, "%s was dropped (its objects are being deleted); restore into another data directory",
                 db);
        return -1;
    }
    dsq_manifest *m = NULL;
    char msg[512];
    int rc = dsq__tier_manifest_fetch(t, db, &m, msg, sizeof msg);
    if (rc <= 0) {
        snprintf(err, errlen, "%s", rc == 0 ? "the object store has no such database" : msg);
        return -1;
    }
    uint64_t cap = limit != NULL ? limit(ud, m->epoch) : UINT64_MAX;
    if (cap == 0) {
        snprintf(err, errlen, "the object store's copy of %s (written in epoch %llu) holds nothing this node may take",
                 db, (unsigned long long)m->epoch);
        dsq__manifest_release(m);
        return -1;
    }
    uint64_t last = 0;
    char e2[256];
    dsq_ps_remove(tmp, e2, sizeof e2);
    msg[0] = '\0';
    /* The files, the tails after them (the log then ends at `last`), then
     * back to the point asked for. */
    rc = mkdir(tmp, 0700) != 0 || restore_into(t, m, tmp, msg, sizeof msg) != 0 ||
                 dsq__tier_tails_apply(t, db, tmp, &last, msg, sizeof msg) != 0
             ? -1
             : 0;
    if (rc == 0 && lsn == 0 && time_us == 0 && last > cap)
        lsn = cap; /* (its writer's commits after cap are not this node's history) */
    *at = lsn ? lsn : last;
    if (rc == 0 && (lsn != 0 || time_us != 0))
        rc = cut_back(tmp, last, time_us, at, msg, sizeof msg);
    /* A copy with no commit restores nothing: a database that was only
     * opened, or one open on a running dosqld whose commits have not gone
     * up yet. Saying "restored at LSN 0" would hide that. */
    if (rc == 0 && *at == 0) {
        snprintf(msg, sizeof msg,
                 "the object store holds no commit of %s (its copy is at LSN 0): nothing to restore "
                 "(an open database's commits go up every upload_interval, and all of them when it closes)",
                 db);
        rc = -1;
    }
    if (rc == 0 && rename(tmp, dir) != 0) {
        snprintf(msg, sizeof msg, "%s", strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s", msg[0] ? msg : "the restore failed");
        dsq_ps_remove(tmp, e2, sizeof e2);
        dsq__manifest_release(m);
        return -1;
    }
    dsq_fsync_dir(base);
    dsq__manifest_release(m);
    return 0;
}

int dsq_tier_restore(dsq_tier *t, const char *db, uint64_t lsn, uint64_t time_us, uint64_t *at, char *err,
                     size_t errlen)
{
    return restore_as(t, db, lsn, time_us, NULL, NULL, at, err, errlen);
}

int dsq_tier_restore_within(dsq_tier *t, const char *db, dsq_tier_limit_fn limit, void *ud, uint64_t *at, char *err,
                            size_t errlen)
{
    return restore_as(t, db, 0, 0, limit, ud, at, err, errlen);
}
