/* evict — the hot tier's budget (see evict.h).
 *
 * Divisions: which databases are open; a look (adding up, choosing);
 * evicting one file; the thread. */
#include "engine/tier/evict.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/storage/ckpt.h"
#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "engine/tier/warm.h"

struct dsq_evict {
    dsq_evict_cfg cfg;
    char *data_dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* an eviction ended; or stop */
    json_t *dbs;            /* mu: name -> [open count, last close (wall ms), being evicted] */
    bool stopping;          /* mu */
    bool unsupported;       /* mu: the file system cannot punch holes */
    bool running;           /* the thread was started */
    bool store_failed;      /* the thread's: the last look could not read a manifest */
    unsigned store_fails;   /* the thread's: looks in a row that could not */
    pthread_t thread;
    dsq_evict_counts counts; /* mu */
};

/* ---- which databases are open ------------------------------------------------------------------ */

static json_t *entry(dsq_evict *v, const char *db)
{
    json_t *e = json_object_get(v->dbs, db);
    if (e == NULL) {
        e = json_pack("[I,I,b]", (json_int_t)0, (json_int_t)0, 0);
        if (e == NULL || json_object_set_new(v->dbs, db, e) != 0)
            return NULL;
    }
    return e;
}

void dsq_evict_opening(dsq_evict *v, const char *db)
{
    if (v == NULL || !v->running)
        return; /* nothing is evicted: no need to know (nor the memory per database) */
    pthread_mutex_lock(&v->mu);
    json_t *e;
    while ((e = entry(v, db)) != NULL && json_is_true(json_array_get(e, 2)))
        pthread_cond_wait(&v->cv, &v->mu);
    if (e != NULL)
        json_array_set_new(e, 0, json_integer(json_integer_value(json_array_get(e, 0)) + 1));
    pthread_mutex_unlock(&v->mu);
}

void dsq_evict_closed(dsq_evict *v, const char *db)
{
    if (v == NULL || !v->running)
        return;
    pthread_mutex_lock(&v->mu);
    json_t *e = entry(v, db);
    if (e != NULL) {
        json_int_t n = json_integer_value(json_array_get(e, 0));
        json_array_set_new(e, 0, json_integer(n > 0 ? n - 1 : 0));
        json_array_set_new(e, 1, json_integer((json_int_t)dsq_wall_ms()));
    }
    pthread_mutex_unlock(&v->mu);
}

/* ---- a look ------------------------------------------------------------------------------------ */

typedef struct cand {
    char db[129];
    char name[48];          /* ckpt/X.ckpt or wal/X.seg */
    uint64_t blocks;        /* its bytes on disk */
    uint64_t cold_ms;       /* the later of its mtime and its database's last close */
    bool seg;               /* a log segment: */
    uint64_t last_lsn;      /* its last record's LSN (0: the last segment, known from the manifest) */
    uint64_t ckpt_lsn;      /* the database's newest checkpoint */
} cand;

/* A new candidate of database db (zeroed), or NULL when out of memory. */
static cand *cand_push(cand **cs, size_t *n, size_t *cap, const char *db)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        cand *nc = realloc(*cs, ncap * sizeof *nc);
        if (nc == NULL)
            return NULL;
        *cs = nc;
        *cap = ncap;
    }
    cand *c = &(*cs)[(*n)++];
    memset(c, 0, sizeof *c);
    dsq_strlcpy(c->db, db, sizeof c->db);
    return c;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->cold_ms < y->cold_ms ? -1 : x->cold_ms > y->cold_ms;
}

static uint64_t disk_bytes(const struct stat *st) { return (uint64_t)st->st_blocks * 512u; }

/* Add up the bytes of every file under dir (one level of subdirectories). */
static uint64_t dir_bytes(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth > 0)
            sum += dir_bytes(path, depth - 1);
        else if (S_ISREG(st.st_mode))
            sum += disk_bytes(&st);
    }
    closedir(d);
    return sum;
}

/* Evict file c (its database is marked as being evicted). Returns the
 * bytes given back (0: not evicted). */
static uint64_t evict_one(dsq_evict *v, const cand *c)
{
    char path[4200], side[4300], msg[600] = "";
    snprintf(path, sizeof path, "%s/db/%s/%s", v->data_dir, c->db, c->name);
    snprintf(side, sizeof side, "%s.cold", path);
    struct stat st;
    if (stat(path, &st) != 0 || access(side, F_OK) == 0)
        return 0;
    uint64_t mtime = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    dsq_cold *cold = NULL;
    uint64_t mlsn = 0;
    int rc = dsq_tier_cold_of(v->cfg.tier, c->db, c->name, (uint64_t)st.st_ino, (uint64_t)st.st_size, mtime, &cold,
                              &mlsn, msg, sizeof msg);
    if (rc < 0)
        v->store_failed = true; /* the manifest could not be read: the store fails */
    if (rc > 0 && c->seg) {
        /* A segment goes only when a checkpoint covers all of it: the
         * last one, when the manifest (written after it was closed, the
         * file unchanged since) is at the checkpoint's LSN. */
        cold->lsn = c->last_lsn ? c->last_lsn : mlsn;
        if (cold->lsn > c->ckpt_lsn || (c->last_lsn == 0 && mlsn != c->ckpt_lsn))
            rc = 0;
    }
    uint64_t freed = 0;
    int erc = 0;
    if (rc > 0)
        erc = c->seg ? dsq_cold_evict(path, cold, 64, &freed, msg, sizeof msg)
                     : dsq_ckpt_evict(path, cold, &freed, msg, sizeof msg);
    if (erc != 0) {
        rc = -1;
        if (erc == -EOPNOTSUPP) {
            pthread_mutex_lock(&v->mu);
            v->unsupported = true;
            pthread_mutex_unlock(&v->mu);
        }
    }
    dsq_cold_free(cold);
    if (rc < 0) {
        DSQ_WARN("evict_failed", "db=%s file=%s reason=%s", c->db, c->name, dsq_log_q(msg));
        pthread_mutex_lock(&v->mu);
        v->counts.errors++;
        pthread_mutex_unlock(&v->mu);
        return 0;
    }
    if (rc > 0)
        DSQ_DEBUG("evicted", "db=%s file=%s bytes=%llu", c->db, c->name, (unsigned long long)freed);
    return rc > 0 ? freed : 0; /* 0: not (yet) in the object store as it is here */
}

static int seg_cmp(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b; /* [seq, first LSN, blocks, mtime ms] */
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* The log segments of database db (directory dir) all of whose records a
 * checkpoint (the newest at LSN ckpt) covers: candidates. */
static void add_segments(cand **cs, size_t *n, size_t *cap, const char *dir, const char *db, uint64_t closed_ms,
                         uint64_t ckpt, uint64_t *cold_files)
{
    char wdir[4300];
    snprintf(wdir, sizeof wdir, "%s/wal", dir);
    DIR *d = opendir(wdir);
    if (d == NULL)
        return;
    uint64_t (*v)[4] = NULL;
    size_t nv = 0, vcap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint32_t seq;
        size_t len = strlen(de->d_name);
        if (len == 17 && strcmp(de->d_name + 12, ".cold") == 0) {
            (*cold_files)++;
            continue;
        }
        if (!dsq_wal_seg_seq(de->d_name, &seq))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", wdir, de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t first = 0;
        struct stat st;
        bool ok = fd >= 0 && dsq_wal_seg_first(fd, &first) == 0 && fstat(fd, &st) == 0;
        if (fd >= 0)
            close(fd);
        if (!ok)
            continue;
        if (nv == vcap) {
            vcap = vcap ? vcap * 2 : 16;
            void *nn = realloc(v, vcap * sizeof *v);
            if (nn == NULL)
                break;
            v = nn;
        }
        char side[4500];
        snprintf(side, sizeof side, "%s.cold", path);
        uint64_t mt = (uint64_t)st.st_mtim.tv_sec * 1000u + (uint64_t)st.st_mtim.tv_nsec / 1000000u;
        v[nv][0] = seq;
        v[nv][1] = first;
        v[nv][2] = access(side, F_OK) == 0 ? 0 : disk_bytes(&st); /* 0: evicted already */
        v[nv][3] = mt;
        nv++;
    }
    closedir(d);
    if (nv > 1)
        qsort(v, nv, sizeof *v, seg_cmp);
    for (size_t i = 0; i < nv; i++) {
        uint64_t last = i + 1 < nv ? v[i + 1][1] - 1 : 0;
        if (v[i][2] < 8192 || (i + 1 < nv && last > ckpt))
            continue;
        cand *c = cand_push(cs, n, cap, db);
        if (c == NULL)
            break;
        snprintf(c->name, sizeof c->name, "wal/%08x.seg", (unsigned)v[i][0]);
        c->blocks = v[i][2];
        c->cold_ms = v[i][3] > closed_ms ? v[i][3] : closed_ms;
        c->seg = true;
        c->last_lsn = last;
        c->ckpt_lsn = ckpt;
    }
    free(v);
}

size_t dsq_evict_run(dsq_evict *v)
{
    if (v == NULL)
        return 0;
    v->store_failed = false;
    char root[4200];
    snprintf(root, sizeof root, "%s/db", v->data_dir);
    DIR *d = opendir(root);
    if (d == NULL)
        return 0;
    cand *cs = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = 0, cold_files = 0, now = dsq_wall_ms();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !dsq_db_name_valid(de->d_name))
            continue; /* restores in progress and the like */
        char dir[4200];
        snprintf(dir, sizeof dir, "%.3000s/%.255s", root, de->d_name);
        total += dir_bytes(dir, 1);
        pthread_mutex_lock(&v->mu);
        json_t *e = json_object_get(v->dbs, de->d_name);
        bool open = e != NULL && json_integer_value(json_array_get(e, 0)) > 0;
        uint64_t closed_ms = e ? (uint64_t)json_integer_value(json_array_get(e, 1)) : 0;
        pthread_mutex_unlock(&v->mu);
        uint64_t newest = 0; /* the newest checkpoint's LSN */
        char cdir[4300];
        snprintf(cdir, sizeof cdir, "%s/ckpt", dir);
        DIR *cd = opendir(cdir);
        if (cd == NULL)
            continue;
        struct dirent *ce;
        while ((ce = readdir(cd)) != NULL) {
            size_t len = strlen(ce->d_name);
            if (len > 10 && strcmp(ce->d_name + len - 10, ".ckpt.cold") == 0) {
                cold_files++;
                continue;
            }
            if (len != 21 || strcmp(ce->d_name + 16, ".ckpt") != 0)
                continue;
            if (strtoull(ce->d_name, NULL, 16) > newest)
                newest = strtoull(ce->d_name, NULL, 16);
            if (open)
                continue;
            char path[4400], side[4500];
            snprintf(path, sizeof path, "%s/%s", cdir, ce->d_name);
            snprintf(side, sizeof side, "%s.cold", path);
            struct stat st;
            if (stat(path, &st) != 0 || access(side, F_OK) == 0 || disk_bytes(&st) < 8192)
                continue; /* gone, evicted, or too small to matter */
            cand *c = cand_push(&cs, &n, &cap, de->d_name);
            if (c == NULL)
                break;
            snprintf(c->name, sizeof c->name, "ckpt/%s", ce->d_name);
            c->blocks = disk_bytes(&st);
            uint64_t mt = (uint64_t)st.st_mtim.tv_sec * 1000u + (uint64_t)st.st_mtim.tv_nsec / 1000000u;
            c->cold_ms = mt > closed_ms ? mt : closed_ms;
        }
        closedir(cd);
        if (!open && newest > 0)
            add_segments(&cs, &n, &cap, dir, de->d_name, closed_ms, newest, &cold_files);
    }
    closedir(d);
    if (n > 1)
        qsort(cs, n, sizeof *cs, cand_cmp);
    size_t evicted = 0;
    uint64_t freed_all = 0;
    for (size_t i = 0; i < n; i++) {
        const cand *c = &cs[i];
        bool over = v->cfg.max_bytes > 0 && total > v->cfg.max_bytes;
        bool old = v->cfg.max_age_ms > 0 && now > c->cold_ms && now - c->cold_ms >= v->cfg.max_age_ms;
        if (!over && !old)
            continue; /* (later ones are newer, but may be older than max_age: go on) */
        /* Its manifest first (a GET, maybe slow): a database opening must
         * not wait for it. Then it must stay closed while its files change. */
        if (i == 0 || strcmp(cs[i - 1].db, c->db) != 0)
            dsq_tier_prefetch(v->cfg.tier, c->db);
        pthread_mutex_lock(&v->mu);
        bool stop = v->stopping || v->unsupported;
        json_t *e = stop ? NULL : entry(v, c->db);
        bool ok = e != NULL && json_integer_value(json_array_get(e, 0)) == 0;
        if (ok)
            json_array_set_new(e, 2, json_true());
        pthread_mutex_unlock(&v->mu);
        if (stop)
            break;
        if (!ok)
            continue;
        uint64_t freed = evict_one(v, c);
        pthread_mutex_lock(&v->mu);
        json_array_set_new(e, 2, json_false());
        pthread_cond_broadcast(&v->cv);
        if (freed > 0) {
            v->counts.evictions++;
            v->counts.evicted_bytes += freed;
        }
        pthread_mutex_unlock(&v->mu);
        if (v->store_failed)
            break; /* the store fails: not a request per file; the next look comes after a backoff */
        if (freed > 0) {
            evicted++;
            cold_files++;
            freed_all += freed;
            total = total > freed ? total - freed : 0;
        }
    }
    free(cs);
    pthread_mutex_lock(&v->mu);
    /* Databases closed for ten minutes are forgotten (their files' times
     * say as much by then): the map does not grow with every database. */
    const char *key;
    json_t *e, *tmp;
    json_object_foreach_safe(v->dbs, tmp, key, e) {
        if (json_integer_value(json_array_get(e, 0)) == 0 && !json_is_true(json_array_get(e, 2)) &&
            (uint64_t)json_integer_value(json_array_get(e, 1)) + 600000 < now)
            json_object_del(v->dbs, key);
    }
    v->counts.local_bytes = total;
    v->counts.cold_files = cold_files;
    pthread_mutex_unlock(&v->mu);
    if (evicted > 0)
        DSQ_INFO("hot_tier_evicted", "files=%zu bytes=%llu local_bytes=%llu", evicted,
                 (unsigned long long)freed_all, (unsigned long long)total);
    return evicted;
}

/* ---- the thread -------------------------------------------------------------------------------- */

static void *evict_main(void *arg)
{
    dsq_thread_name("dsq-evict");
    dsq_evict *v = arg;
    uint64_t wait = v->cfg.interval_ms;
    pthread_mutex_lock(&v->mu);
    while (!v->stopping) {
        dsq_cond_wait_ms(&v->cv, &v->mu, wait);
        if (v->stopping)
            break;
        pthread_mutex_unlock(&v->mu);
        uint64_t t0 = dsq_now_ms();
        dsq_evict_run(v);
        /* A look over many databases costs: at most a twentieth of the time. */
        uint64_t took = dsq_now_ms() - t0;
        wait = took * 20 > v->cfg.interval_ms ? took * 20 : v->cfg.interval_ms;
        /* A store that fails is asked again after a backoff (the store's
         * helper: full jitter, the interval doubling to a minute). */
        v->store_fails = v->store_failed ? v->store_fails + 1 : 0;
        if (v->store_fails > 0) {
            uint64_t back = dsq_obj_backoff_ms(v->store_fails, (unsigned)v->cfg.interval_ms, 60000, dsq_obj_backoff_rnd());
            wait = back > wait ? back : wait;
        }
        pthread_mutex_lock(&v->mu);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

dsq_evict *dsq_evict_start(const dsq_evict_cfg *cfg, char *err, size_t errlen)
{
    dsq_evict *v = calloc(1, sizeof *v);
    if (v == NULL || (v->data_dir = strdup(cfg->data_dir)) == NULL || (v->dbs = json_object()) == NULL) {
        if (v)
            free(v->data_dir);
        free(v);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v->cfg = *cfg;
    if (v->cfg.interval_ms == 0)
        v->cfg.interval_ms = 1000;
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    if (cfg->tier != NULL && (cfg->max_bytes > 0 || cfg->max_age_ms > 0)) {
        if (pthread_create(&v->thread, NULL, evict_main, v) != 0) {
            snprintf(err, errlen, "cannot start the eviction thread");
            dsq_evict_stop(v);
            return NULL;
        }
        v->running = true;
    }
    return v;
}

void dsq_evict_stop(dsq_evict *v)
{
    if (v == NULL)
        return;
    pthread_mutex_lock(&v->mu);
    v->stopping = true;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
    if (v->running)
        pthread_join(v->thread, NULL);
    json_decref(v->dbs);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->mu);
    free(v->data_dir);
    free(v);
}

void dsq_evict_counts_get(dsq_evict *v, dsq_evict_counts *out)
{
    memset(out, 0, sizeof *out);
    if (v == NULL)
        return;
    pthread_mutex_lock(&v->mu);
    *out = v->counts;
    pthread_mutex_unlock(&v->mu);
}
