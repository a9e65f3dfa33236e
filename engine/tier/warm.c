/* warm — the warm cache (see warm.h): the source storage reads evicted
 * files from (engine/storage/cold.h).
 *
 * Divisions: keys; the cache (entries, fetches, waits, the timer
 * thread); the source. */
#include "engine/tier/warm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/check.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/tier/objstore.h"

void dsq_chunk_key(char *out, size_t n, const char *db, uint64_t id, size_t idx, uint64_t len)
{
    snprintf(out, n, "db/%s/data/%08llx.%05zu.%08llx", db, (unsigned long long)id, idx, (unsigned long long)len);
}

/* ---- the cache --------------------------------------------------------------------------------- */

enum { K_FETCHING, K_READY, K_FAILED };

/* A cache of many small chunks holds one of these for each: its fetch's
 * request and a failure's message are kept only while needed, and its key
 * is allocated with it, so that it stays small (about 150 bytes). */
struct dsq_cold_ref { /* dsq_warm_chunk */
    uint64_t len;
    uint32_t crc;
    int state;
    unsigned refs;            /* the table's (while in it), misses', waits' */
    bool in_table;
    uint64_t file;            /* DIR/%016llx once ready */
    unsigned attempts;
    int how;                  /* K_FAILED: DSQ_WARM_FAILED or DSQ_WARM_TIMEOUT */
    char *msg;                /* K_FAILED: why (NULL: out of memory) */
    dsq_warm_chunk *hnext;
    dsq_lnode lru;            /* on dsq_warm.lru while ready */
    dsq_warm *w;
    dsq_obj_req *req;         /* while it is being fetched */
    char key[];
};

typedef struct waiter {
    dsq_warm_chunk *k;
    dsq_warm_fn fn;
    void *ud;
    uint64_t deadline_ms;
    struct waiter *next;
} waiter;

#define NBUCKETS 4096

struct dsq_warm {
    dsq_obj *obj;
    char *dir;
    uint64_t max_bytes, timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* waiters came, fetches ended */
    dsq_warm_chunk *buckets[NBUCKETS];
    dsq_list lru;              /* ready chunks (dsq_warm_chunk.lru), least recently used first */
    waiter *waiters;
    uint64_t next_file;
    unsigned inflight;         /* fetches the store has */
    bool closing;
    pthread_t timer;
    uint64_t hits, misses, fetches, fetch_bytes, errors, timeouts, bytes, chunks;
    char last_db[129];         /* the chunk missed last: a miss of the one after it is a scan */
    uint64_t last_id;
    size_t last_idx;
};

/* Chunks fetched ahead of a scan (see dsq_warm_read). */
#define READ_AHEAD 3

static size_t bucket_of(const char *key) { return (size_t)(dsq_hash_str(key) % NBUCKETS); }

static void chunk_path(const dsq_warm *w, uint64_t file, char *out, size_t n)
{
    snprintf(out, n, "%s/%016llx", w->dir, (unsigned long long)file);
}

static void unref_locked(dsq_warm *w, dsq_warm_chunk *k)
{
    (void)w;
    if (--k->refs == 0) {
        free(k->req);
        free(k->msg);
        free(k);
    }
}

static void table_remove(dsq_warm *w, dsq_warm_chunk *k)
{
    dsq_warm_chunk **pp = &w->buckets[bucket_of(k->key)];
    while (*pp && *pp != k)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = k->hnext;
    k->in_table = false;
    if (k->state == K_READY) {
        dsq_list_remove(&w->lru, &k->lru);
        char path[4200];
        chunk_path(w, k->file, path, sizeof path);
        unlink(path);
        w->bytes -= k->len;
        w->chunks--;
    }
    unref_locked(w, k);
}

/* Over the budget: the least recently used go, but not one that is
 * pinned (nor `keep`). */
static void trim(dsq_warm *w, const dsq_warm_chunk *keep)
{
    dsq_warm_chunk *x, *next;
    dsq_list_foreach_safe(x, next, &w->lru, lru) {
        if (w->bytes <= w->max_bytes)
            break;
        if (x != keep && x->refs == 1)
            table_remove(w, x);
    }
}

/* Move the waiters of k out of the list: the caller calls them. */
static waiter *take_waiters(dsq_warm *w, dsq_warm_chunk *k)
{
    waiter *out = NULL, **pp = &w->waiters;
    while (*pp) {
        waiter *x = *pp;
        if (x->k == k) {
            *pp = x->next;
            x->next = out;
            out = x;
        } else {
            pp = &x->next;
        }
    }
    return out;
}

static void call_waiters(dsq_warm *w, waiter *list, int how, const char *msg)
{
    while (list) {
        waiter *x = list;
        list = x->next;
        x->fn(x->ud, how, msg);
        pthread_mutex_lock(&w->mu);
        unref_locked(w, x->k);
        pthread_mutex_unlock(&w->mu);
        free(x);
    }
}

static void fetch_done(dsq_obj_req *r);

static void fetch_start(dsq_warm *w, dsq_warm_chunk *k)
{
    memset(k->req, 0, sizeof *k->req);
    k->req->op = DSQ_OBJ_GET;
    snprintf(k->req->key, sizeof k->req->key, "%s", k->key);
    k->req->done = fetch_done;
    k->req->ud = k;
    k->attempts++;
    dsq_obj_submit(w->obj, k->req);
}

static void fetch_done(dsq_obj_req *r)
{
    dsq_warm_chunk *k = r->ud;
    dsq_warm *w = k->w;
    char msg[300] = "";
    int how = DSQ_WARM_READY;
    if (r->status != DSQ_OBJ_OK) {
        how = r->status == DSQ_OBJ_TIMEOUT ? DSQ_WARM_TIMEOUT : DSQ_WARM_FAILED;
        snprintf(msg, sizeof msg, "fetching %.100s from the object store: %.150s", k->key,
                 r->status == DSQ_OBJ_NOT_FOUND ? "no such object" : r->msg);
    } else if (r->data.len != k->len || dsq_crc32(r->data.data, r->data.len) != k->crc) {
        bool again = k->attempts < 3;
        DSQ_WARN("cold_chunk_damaged", "key=%s bytes=%zu want=%llu attempt=%u", k->key, r->data.len,
                 (unsigned long long)k->len, k->attempts);
        if (again) {
            dsq_obj_req_clear(r);
            pthread_mutex_lock(&w->mu);
            bool closing = w->closing;
            pthread_mutex_unlock(&w->mu);
            if (!closing) {
                fetch_start(w, k);
                return;
            }
        }
        how = DSQ_WARM_FAILED;
        snprintf(msg, sizeof msg, "%.200s arrived damaged %u times (length or CRC-32 wrong)", k->key, k->attempts);
    }
    uint64_t file = 0;
    if (how == DSQ_WARM_READY) {
        pthread_mutex_lock(&w->mu);
        file = ++w->next_file;
        pthread_mutex_unlock(&w->mu);
        char path[4200];
        chunk_path(w, file, path, sizeof path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int rc = fd < 0 ? -errno : dsq_pwrite_full(fd, r->data.data, r->data.len, 0);
        if (rc != 0) {
            how = DSQ_WARM_FAILED;
            snprintf(msg, sizeof msg, "cannot keep %.200s in the warm cache: %s", k->key, strerror(-rc));
            unlink(path);
        }
        if (fd >= 0)
            close(fd);
    }
    dsq_obj_req_clear(r);
    free(k->req); /* r */
    k->req = NULL;
    pthread_mutex_lock(&w->mu);
    w->inflight--;
    waiter *list = take_waiters(w, k);
    if (how == DSQ_WARM_READY) {
        k->state = K_READY;
        k->file = file;
        w->fetches++;
        w->fetch_bytes += k->len;
        w->bytes += k->len;
        w->chunks++;
        dsq_list_push(&w->lru, &k->lru);
        trim(w, k);
    } else {
        k->state = K_FAILED;
        k->how = how;
        k->msg = strdup(msg);
        w->errors++;
        if (k->in_table)
            table_remove(w, k); /* the next read asks again */
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (how != DSQ_WARM_READY)
        DSQ_WARN("cold_read_failed", "reason=%s", dsq_log_q(msg));
    call_waiters(w, list, how, msg);
}

/* The timer: waits past their deadline end (the fetch goes on). */
static void *timer_main(void *arg)
{
    dsq_thread_name("dsq-warm-timer");
    dsq_warm *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->closing) {
        uint64_t now = dsq_now_ms(), next = 0;
        waiter *due = NULL, **pp = &w->waiters;
        while (*pp) {
            waiter *x = *pp;
            if (x->deadline_ms <= now) {
                *pp = x->next;
                x->next = due;
                due = x;
                w->timeouts++;
            } else {
                if (next == 0 || x->deadline_ms < next)
                    next = x->deadline_ms;
                pp = &x->next;
            }
        }
        if (due) {
            pthread_mutex_unlock(&w->mu);
            char msg[200];
            snprintf(msg, sizeof msg, "the object store did not return a page within %llu ms",
                     (unsigned long long)w->timeout_ms);
            call_waiters(w, due, DSQ_WARM_TIMEOUT, msg);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (next == 0)
            pthread_cond_wait(&w->cv, &w->mu);
        else
            dsq_cond_wait_ms(&w->cv, &w->mu, next - now);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

dsq_warm *dsq_warm_open(dsq_obj *obj, const char *dir, uint64_t max_bytes, uint64_t timeout_ms, char *err,
                        size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %.3000s: %s", dir, strerror(errno));
        return NULL;
    }
    /* What an earlier run cached is not trusted (nor counted): start empty. */
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    dsq_warm *w = calloc(1, sizeof *w);
    if (w == NULL || (w->dir = strdup(dir)) == NULL) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->obj = obj;
    w->max_bytes = max_bytes;
    w->timeout_ms = timeout_ms ? timeout_ms : 10000;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->timer, NULL, timer_main, w) != 0) {
        snprintf(err, errlen, "cannot start a thread");
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->dir);
        free(w);
        return NULL;
    }
    return w;
}

void dsq_warm_close(dsq_warm *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    waiter *all = w->waiters;
    w->waiters = NULL;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->timer, NULL);
    call_waiters(w, all, DSQ_WARM_FAILED, "the server is shutting down");
    /* Fetches on the wire end on the store's timeouts (or when it closes). */
    pthread_mutex_lock(&w->mu);
    while (w->inflight > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    for (size_t b = 0; b < NBUCKETS; b++)
        while (w->buckets[b])
            table_remove(w, w->buckets[b]);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->dir);
    free(w);
}

/* A new entry for chunk `key`, in the table and being fetched (the
 * caller starts the fetch after the unlock). Caller holds mu. */
static dsq_warm_chunk *chunk_new(dsq_warm *w, const char *key, const dsq_cold_chunk *cc)
{
    DSQ_ASSERT_HELD(&w->mu);
    size_t klen = strlen(key);
    dsq_warm_chunk *k = calloc(1, sizeof *k + klen + 1);
    if (k == NULL || (k->req = calloc(1, sizeof *k->req)) == NULL) {
        free(k);
        return NULL;
    }
    memcpy(k->key, key, klen + 1);
    k->len = cc->len;
    k->crc = cc->crc;
    k->w = w;
    k->refs = 1;
    k->in_table = true;
    size_t b = bucket_of(key);
    k->hnext = w->buckets[b];
    w->buckets[b] = k;
    w->inflight++;
    return k;
}

/* The chunk of c holding byte `off`. */
static size_t chunk_at(const dsq_cold *c, uint64_t off)
{
    size_t lo = 0, hi = c->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (c->chunks[mid].off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int dsq_warm_read(dsq_warm *w, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen)
{
    if (off + n > c->size || c->n == 0) {
        snprintf(err, errlen, "bytes %llu..%llu are past the end of the file (%llu)", (unsigned long long)off,
                 (unsigned long long)(off + n), (unsigned long long)c->size);
        return -1;
    }
    uint8_t *dst = buf;
    size_t i = chunk_at(c, off);
    for (int tries = 0; n > 0;) {
        const dsq_cold_chunk *cc = &c->chunks[i];
        char key[DSQ_OBJ_KEY_MAX + 1];
        dsq_chunk_key(key, sizeof key, c->db, c->id, i, cc->len);
        pthread_mutex_lock(&w->mu);
        dsq_warm_chunk *k = w->buckets[bucket_of(key)];
        while (k && strcmp(k->key, key) != 0)
            k = k->hnext;
        if (k == NULL || k->state != K_READY) {
            dsq_warm_chunk *start[1 + READ_AHEAD];
            size_t nstart = 0;
            if (k == NULL) {
                if (w->closing || (k = chunk_new(w, key, cc)) == NULL) {
                    pthread_mutex_unlock(&w->mu);
                    snprintf(err, errlen, w->closing ? "the server is shutting down" : "out of memory");
                    return -1;
                }
                start[nstart++] = k;
                /* The chunk after the one missed last in the same file: a
                 * scan. The next ones are fetched along. */
                bool scan = w->last_id == c->id && w->last_idx + 1 == i && strcmp(w->last_db, c->db) == 0;
                for (size_t j = i + 1; scan && j < c->n && j <= i + READ_AHEAD &&
                                       (READ_AHEAD + 1) * cc->len <= w->max_bytes / 2;
                     j++) {
                    char next[DSQ_OBJ_KEY_MAX + 1];
                    dsq_chunk_key(next, sizeof next, c->db, c->id, j, c->chunks[j].len);
                    dsq_warm_chunk *x = w->buckets[bucket_of(next)];
                    while (x && strcmp(x->key, next) != 0)
                        x = x->hnext;
                    if (x == NULL && (x = chunk_new(w, next, &c->chunks[j])) != NULL)
                        start[nstart++] = x;
                }
                snprintf(w->last_db, sizeof w->last_db, "%s", c->db);
                w->last_id = c->id;
                w->last_idx = i;
            }
            w->misses++;
            if (!dsq_cold_missed()) {
                k->refs++;
                dsq_cold_miss_set(k);
            }
            pthread_mutex_unlock(&w->mu);
            for (size_t j = 0; j < nstart; j++)
                fetch_start(w, start[j]);
            snprintf(err, errlen, "fetching %.200s from the object store", key);
            return DSQ_COLD_MISS;
        }
        /* Most recently used now. */
        dsq_list_remove(&w->lru, &k->lru);
        dsq_list_push(&w->lru, &k->lru);
        w->hits++;
        uint64_t file = k->file;
        pthread_mutex_unlock(&w->mu);
        uint64_t in = off - cc->off, take = cc->len - in < n ? cc->len - in : n;
        char path[4200];
        chunk_path(w, file, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && ++tries < 3)
            continue; /* evicted meanwhile: look again */
        int rc = fd < 0 ? -errno : dsq_pread_full(fd, dst, (size_t)take, in);
        if (fd >= 0)
            close(fd);
        if (rc != 0) {
            snprintf(err, errlen, "cannot read %.3000s: %s", path, rc > 0 ? "short" : strerror(-rc));
            return -1;
        }
        dst += take;
        off += take;
        n -= (size_t)take;
        i++;
    }
    return 0;
}

void dsq_warm_release(dsq_warm *w, dsq_warm_chunk *k)
{
    pthread_mutex_lock(&w->mu);
    bool unpinned = k->refs == 2 && k->in_table && k->state == K_READY;
    unref_locked(w, k);
    if (unpinned && w->bytes > w->max_bytes)
        trim(w, NULL); /* a call let go of what it kept over the budget */
    pthread_mutex_unlock(&w->mu);
}

bool dsq_warm_failed(dsq_warm *w, dsq_warm_chunk *k)
{
    pthread_mutex_lock(&w->mu);
    bool failed = k->state == K_FAILED;
    pthread_mutex_unlock(&w->mu);
    return failed;
}

void dsq_warm_wait(dsq_warm *w, dsq_warm_chunk *k, dsq_warm_fn fn, void *ud)
{
    waiter *x = calloc(1, sizeof *x);
    pthread_mutex_lock(&w->mu);
    int state = k->state;
    if (state == K_FETCHING && x != NULL && !w->closing) {
        k->refs++; /* the waiter's */
        *x = (waiter){k, fn, ud, dsq_now_ms() + w->timeout_ms, w->waiters};
        w->waiters = x;
        pthread_cond_broadcast(&w->cv); /* the timer learns the deadline */
        pthread_mutex_unlock(&w->mu);
        return;
    }
    int how = k->how;
    bool closing = w->closing;
    char msg[300];
    snprintf(msg, sizeof msg, "%s", k->msg ? k->msg : "out of memory");
    pthread_mutex_unlock(&w->mu);
    free(x);
    if (state == K_READY)
        fn(ud, DSQ_WARM_READY, "");
    else if (state == K_FAILED)
        fn(ud, how, msg);
    else
        fn(ud, DSQ_WARM_FAILED, closing ? "the server is shutting down" : "out of memory");
}

void dsq_warm_counts_get(dsq_warm *w, dsq_warm_counts *out)
{
    memset(out, 0, sizeof *out);
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    *out = (dsq_warm_counts){w->hits, w->misses, w->fetches, w->fetch_bytes, w->errors,
                             w->timeouts, w->bytes, w->chunks};
    pthread_mutex_unlock(&w->mu);
}

/* ---- the source storage reads from -------------------------------------------------------------- */

static int src_read(void *ctx, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen)
{
    return dsq_warm_read(ctx, c, off, buf, n, err, errlen);
}

static bool src_failed(void *ctx, dsq_cold_ref *r) { return dsq_warm_failed(ctx, r); }

static void src_release(void *ctx, dsq_cold_ref *r) { dsq_warm_release(ctx, r); }

dsq_cold_src dsq_warm_source(dsq_warm *w)
{
    return (dsq_cold_src){.ctx = w, .read = src_read, .failed = src_failed, .release = src_release};
}
