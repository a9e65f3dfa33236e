/* objstore — the store's thread, its queue, and the file:// backend.
 *
 * Submitting puts a request on a queue and wakes the store's libuv loop
 * (uv_async); the loop hands each request to the backend. The file
 * backend runs it on libuv's thread pool (local file I/O, several at
 * once) and finishes it back on the loop; the S3 backend (objstore_s3.c)
 * starts a transfer and finishes the request from a later loop callback. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/tier/objstore_int.h"

const char *dsq_obj_op_name(dsq_obj_op op)
{
    switch (op) {
    case DSQ_OBJ_PUT: return "put";
    case DSQ_OBJ_GET: return "get";
    case DSQ_OBJ_HEAD: return "head";
    case DSQ_OBJ_LIST: return "list";
    case DSQ_OBJ_DELETE: return "delete";
    }
    return "?";
}

const char *dsq_obj_status_name(dsq_obj_status s)
{
    switch (s) {
    case DSQ_OBJ_OK: return "ok";
    case DSQ_OBJ_NOT_FOUND: return "not found";
    case DSQ_OBJ_EXISTS: return "exists";
    case DSQ_OBJ_RANGE: return "range past the end";
    case DSQ_OBJ_FAILED: return "failed";
    case DSQ_OBJ_TIMEOUT: return "timed out";
    case DSQ_OBJ_CANCELLED: return "cancelled";
    }
    return "?";
}

bool dsq_obj_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > DSQ_OBJ_KEY_MAX || !dsq_utf8_valid((const uint8_t *)key, n))
        return false;
    for (const char *seg = key;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)seg[i] < 0x20 || seg[i] == 0x7f || seg[i] == '\\')
                return false;
        if (end == NULL)
            return true;
        seg = end + 1;
    }
}

/* A list's prefix: "", or a key, or a key and a '/'. */
static bool prefix_valid(const char *p)
{
    size_t n = strlen(p);
    if (n == 0)
        return true;
    if (p[n - 1] != '/')
        return dsq_obj_key_valid(p);
    char k[DSQ_OBJ_KEY_MAX + 1];
    if (n - 1 > DSQ_OBJ_KEY_MAX)
        return false;
    memcpy(k, p, n - 1);
    k[n - 1] = '\0';
    return dsq_obj_key_valid(k);
}

void dsq__obj_fail(dsq_obj_req *r, dsq_obj_status st, const char *fmt, ...)
{
    r->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

uint64_t dsq_obj_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t rnd)
{
    uint64_t ceiling = base_ms;
    for (unsigned i = 1; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return rnd % (ceiling + 1);
}

uint64_t dsq_obj_backoff_rnd(void)
{
    /* xorshift64*, seeded per thread from the clock and the thread */
    static _Thread_local uint64_t x;
    if (x == 0)
        x = (dsq_now_ns() ^ ((uint64_t)gettid() << 32) ^ (uint64_t)(uintptr_t)&x) | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545F4914F6CDD1DULL;
}

void dsq_obj_req_clear(dsq_obj_req *r)
{
    dsq_buf_free(&r->data);
    for (size_t i = 0; i < r->nitems; i++)
        free(r->items[i].key);
    free(r->items);
    r->items = NULL;
    r->nitems = 0;
}

/* ---- the thread ------------------------------------------------------------------------------ */

void dsq__obj_finish(dsq_obj *o, dsq_obj_req *r)
{
    atomic_fetch_sub(&o->pending, 1);
    if (r->done)
        r->done(r);
}

static void on_async(uv_async_t *h)
{
    dsq_obj *o = h->data;
    pthread_mutex_lock(&o->mu);
    dsq_queue list = dsq_queue_take(&o->queue);
    bool closing = o->closing;
    pthread_mutex_unlock(&o->mu);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&list)) != NULL) {
        dsq_obj_req *r = dsq_container_of(n, dsq_obj_req, link);
        if (closing) {
            dsq__obj_fail(r, DSQ_OBJ_CANCELLED, "the object store was closed");
            dsq__obj_finish(o, r);
        } else {
            o->be->start(o, r);
        }
    }
    if (closing) {
        o->be->stop(o);
        uv_close((uv_handle_t *)&o->async, NULL);
    }
}

static void *store_main(void *arg)
{
    dsq_thread_name("dsq-objstore");
    dsq_obj *o = arg;
    /* Background work (uploads, their fsyncs): commits and queries first. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    uv_run(&o->loop, UV_RUN_DEFAULT);
    return NULL;
}

void dsq_obj_submit(dsq_obj *o, dsq_obj_req *r)
{
    r->status = DSQ_OBJ_OK;
    r->http_status = 0;
    r->attempts = 0;
    r->msg[0] = '\0';
    r->size = 0;
    r->priv = NULL;
    dsq_obj_req_clear(r);
    atomic_fetch_add(&o->pending, 1);
    if (r->op == DSQ_OBJ_LIST ? !prefix_valid(r->key) : !dsq_obj_key_valid(r->key)) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "invalid object key '%.200s'", r->key);
        dsq__obj_finish(o, r);
        return;
    }
    pthread_mutex_lock(&o->mu);
    if (o->closing) {
        pthread_mutex_unlock(&o->mu);
        dsq__obj_fail(r, DSQ_OBJ_CANCELLED, "the object store was closed");
        dsq__obj_finish(o, r);
        return;
    }
    dsq_queue_push(&o->queue, &r->link);
    pthread_mutex_unlock(&o->mu);
    uv_async_send(&o->async);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    dsq_obj_done_fn fn;
    void *ud;
} waiter;

static void wake_waiter(dsq_obj_req *r)
{
    waiter *w = r->ud;
    r->done = w->fn;
    r->ud = w->ud;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

dsq_obj_status dsq_obj_run(dsq_obj *o, dsq_obj_req *r)
{
    waiter w = {.fn = r->done, .ud = r->ud};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    r->done = wake_waiter;
    r->ud = &w;
    dsq_obj_submit(o, r);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return r->status;
}

size_t dsq_obj_pending(dsq_obj *o) { return atomic_load(&o->pending); }

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void store_free(dsq_obj *o)
{
    if (o->be && o->be->free)
        o->be->free(o);
    free((char *)o->cfg.url);
    free((char *)o->cfg.endpoint);
    free((char *)o->cfg.region);
    free((char *)o->cfg.access_key);
    free((char *)o->cfg.secret_key);
    free(o->bucket);
    free(o->prefix);
    free(o->dir);
    free(o);
}

dsq_obj *dsq_obj_open(const dsq_obj_cfg *cfg, char *err, size_t errlen)
{
    dsq_obj *o = calloc(1, sizeof *o);
    if (o == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    o->cfg = *cfg;
    o->cfg.url = dup_or_null(cfg->url);
    o->cfg.endpoint = dup_or_null(cfg->endpoint);
    o->cfg.region = dup_or_null(cfg->region);
    o->cfg.access_key = dup_or_null(cfg->access_key);
    o->cfg.secret_key = dup_or_null(cfg->secret_key);
    if (o->cfg.timeout_ms == 0)
        o->cfg.timeout_ms = 30000;
    if (o->cfg.connect_timeout_ms == 0)
        o->cfg.connect_timeout_ms = 5000;
    if (o->cfg.backoff_ms == 0)
        o->cfg.backoff_ms = 100;
    if (o->cfg.max_backoff_ms == 0)
        o->cfg.max_backoff_ms = 5000;
    if (o->cfg.max_inflight == 0)
        o->cfg.max_inflight = 16;
    const char *url = cfg->url ? cfg->url : "";
    if (strncmp(url, "file://", 7) == 0) {
        o->be = &dsq__obj_file;
    } else if (strncmp(url, "s3://", 5) == 0) {
        o->be = &dsq__obj_s3;
    } else {
        snprintf(err, errlen, "object store '%s': not a file:// or s3:// URL", url);
        store_free(o);
        return NULL;
    }
    if (o->be->open(o, err, errlen) != 0) {
        store_free(o);
        return NULL;
    }
    pthread_mutex_init(&o->mu, NULL);
    int rc = uv_loop_init(&o->loop);
    if (rc == 0) {
        rc = uv_async_init(&o->loop, &o->async, on_async);
        o->async.data = o;
    }
    if (rc == 0 && pthread_create(&o->thread, NULL, store_main, o) != 0)
        rc = UV_EAGAIN;
    if (rc != 0) {
        snprintf(err, errlen, "object store: cannot start its thread: %s", uv_strerror(rc));
        pthread_mutex_destroy(&o->mu);
        store_free(o); /* the loop is leaked on this path: it may hold the async handle */
        return NULL;
    }
    return o;
}

void dsq_obj_close(dsq_obj *o)
{
    if (o == NULL)
        return;
    pthread_mutex_lock(&o->mu);
    o->closing = true;
    pthread_mutex_unlock(&o->mu);
    uv_async_send(&o->async);
    pthread_join(o->thread, NULL);
    uv_loop_close(&o->loop);
    pthread_mutex_destroy(&o->mu);
    store_free(o);
}

/* ---- file:// ----------------------------------------------------------------------------------- */

/* Objects are files DIR/KEY; a put writes DIR/KEY.~tmp.N first. Names
 * ending in ".~tmp.<digits>" are not objects (a put the process did not
 * finish); keys cannot end so. */
#define TMP_MARK ".~tmp."

static bool is_tmp_name(const char *name)
{
    const char *t = strstr(name, TMP_MARK);
    if (t == NULL)
        return false;
    t += strlen(TMP_MARK);
    if (*t == '\0')
        return false;
    for (; *t; t++)
        if (*t < '0' || *t > '9')
            return false;
    return true;
}

static int file_open(dsq_obj *o, char *err, size_t errlen)
{
    const char *dir = o->cfg.url + 7;
    if (*dir == '\0') {
        snprintf(err, errlen, "object store '%s': no directory", o->cfg.url);
        return -1;
    }
    o->dir = strdup(dir);
    if (o->dir == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = strlen(o->dir);
    while (n > 1 && o->dir[n - 1] == '/')
        o->dir[--n] = '\0';
    /* Make it and its parents. */
    for (char *p = o->dir + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(o->dir, 0750) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "object store %s: %s", o->dir, strerror(errno));
                *p = c;
                return -1;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(o->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "object store %s: not a directory", o->dir);
        return -1;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Make the directories of `path` (under the store's directory) up to its
 * last '/', fsyncing each one's parent when it is new. */
static int make_parents(dsq_obj *o, char *path)
{
    size_t base = strlen(o->dir);
    for (char *p = path + base + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(path, 0750);
        int e = errno;
        if (rc == 0) {
            char *slash = strrchr(path, '/');
            *slash = '\0';
            rc = fsync_dir(path);
            *slash = '/';
        } else if (e == EEXIST) {
            rc = 0;
        }
        *p = '/';
        if (rc != 0)
            return -1;
    }
    return 0;
}

static void fail_errno(dsq_obj_req *r, const char *what, const char *path)
{
    dsq__obj_fail(r, DSQ_OBJ_FAILED, "%s %s: %s", what, path, strerror(errno));
}

static void file_put(dsq_obj *o, dsq_obj_req *r, const char *path)
{
    static atomic_uint seq;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s%s%u", path, TMP_MARK, atomic_fetch_add(&seq, 1));
    if (make_parents(o, tmp) != 0) {
        fail_errno(r, "mkdir for", path);
        return;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        fail_errno(r, "create", tmp);
        return;
    }
    const char *p = r->body;
    size_t left = r->body_len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            fail_errno(r, "write", tmp);
            close(fd);
            unlink(tmp);
            return;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        fail_errno(r, "fsync", tmp);
        close(fd);
        unlink(tmp);
        return;
    }
    close(fd);
    /* Conditional: link() fails if the name is taken, atomically. */
    int rc = r->if_absent ? link(tmp, path) : rename(tmp, path);
    int e = errno;
    if (r->if_absent)
        unlink(tmp);
    if (rc != 0) {
        errno = e;
        if (r->if_absent && e == EEXIST)
            dsq__obj_fail(r, DSQ_OBJ_EXISTS, "%s exists", r->key);
        else
            fail_errno(r, r->if_absent ? "link" : "rename", path);
        if (!r->if_absent)
            unlink(tmp);
        return;
    }
    char *slash = strrchr(path, '/');
    *slash = '\0';
    rc = fsync_dir(path);
    *slash = '/';
    if (rc != 0)
        fail_errno(r, "fsync the directory of", path);
}

static void file_get(dsq_obj_req *r, const char *path, bool head)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            dsq__obj_fail(r, DSQ_OBJ_NOT_FOUND, "no object %s", r->key);
        else
            fail_errno(r, "open", path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fail_errno(r, "stat", path);
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) { /* a directory: keys under it, not an object */
        dsq__obj_fail(r, DSQ_OBJ_NOT_FOUND, "no object %s", r->key);
        close(fd);
        return;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (head) {
        r->size = size;
        close(fd);
        return;
    }
    if ((r->off > 0 || r->len > 0) && r->off >= size) {
        dsq__obj_fail(r, DSQ_OBJ_RANGE, "%s has %llu bytes; the range starts at %llu", r->key,
                      (unsigned long long)size, (unsigned long long)r->off);
        close(fd);
        return;
    }
    uint64_t want = size - r->off;
    if (r->len > 0 && r->len < want)
        want = r->len;
    if (dsq_buf_reserve(&r->data, (size_t)want + 1) != 0) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "out of memory reading %s", r->key);
        close(fd);
        return;
    }
    uint64_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, r->data.data + got, (size_t)(want - got), (off_t)(r->off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fail_errno(r, "read", path);
            close(fd);
            return;
        }
        if (n == 0)
            break; /* shorter than it was a moment ago: what there is */
        got += (uint64_t)n;
    }
    r->data.len = (size_t)got;
    r->data.data[got] = '\0';
    r->size = got;
    close(fd);
}

static void file_delete(dsq_obj_req *r, const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR)
        fail_errno(r, "unlink", path);
}

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const dsq_obj_item *)a)->key, ((const dsq_obj_item *)b)->key);
}

/* Add the objects under directory `rel` (a key prefix ending in '/', or
 * "") whose keys start with `prefix`. */
static int list_dir(dsq_obj *o, dsq_obj_req *r, const char *rel, const char *prefix, size_t *cap)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", o->dir, rel);
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    size_t pl = strlen(prefix);
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 || is_tmp_name(de->d_name))
            continue;
        char key[PATH_MAX];
        int kn = snprintf(key, sizeof key, "%s%s", rel, de->d_name);
        if (kn < 0 || (size_t)kn >= sizeof key)
            continue;
        /* Below the prefix, or a directory on the way to it. */
        size_t cmp = (size_t)kn < pl ? (size_t)kn : pl;
        if (strncmp(key, prefix, cmp) != 0)
            continue;
        struct stat st;
        char full[PATH_MAX + 8];
        snprintf(full, sizeof full, "%s/%s", o->dir, key);
        if (lstat(full, &st) != 0)
            continue; /* gone meanwhile */
        if (S_ISDIR(st.st_mode)) {
            if ((size_t)kn + 2 < sizeof key) {
                key[kn] = '/';
                key[kn + 1] = '\0';
                rc = list_dir(o, r, key, prefix, cap);
            }
            continue;
        }
        if (!S_ISREG(st.st_mode) || (size_t)kn < pl || (size_t)kn > DSQ_OBJ_KEY_MAX)
            continue;
        if (r->nitems == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            dsq_obj_item *ni = realloc(r->items, nc * sizeof *ni);
            if (ni == NULL) {
                errno = ENOMEM;
                rc = -1;
                break;
            }
            r->items = ni;
            *cap = nc;
        }
        char *k = strdup(key);
        if (k == NULL) {
            errno = ENOMEM;
            rc = -1;
            break;
        }
        r->items[r->nitems++] = (dsq_obj_item){k, (uint64_t)st.st_size,
                                               (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000};
    }
    closedir(d);
    return rc;
}

static void file_list(dsq_obj *o, dsq_obj_req *r)
{
    /* Start in the deepest directory the prefix names. */
    char rel[DSQ_OBJ_KEY_MAX + 2];
    dsq_strlcpy(rel, r->key, sizeof rel);
    char *slash = strrchr(rel, '/');
    if (slash)
        slash[1] = '\0';
    else
        rel[0] = '\0';
    size_t cap = 0;
    if (list_dir(o, r, rel, r->key, &cap) != 0) {
        fail_errno(r, "list", o->dir);
        return;
    }
    if (r->nitems > 1)
        qsort(r->items, r->nitems, sizeof *r->items, item_cmp);
}

/* Do r on this thread (one of libuv's pool). */
static void file_do(dsq_obj *o, dsq_obj_req *r)
{
    r->attempts = 1;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", o->dir, r->key);
    if (n < 0 || (size_t)n >= sizeof path - 32) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "object key too long for a path under %s", o->dir);
        return;
    }
    if (r->op != DSQ_OBJ_LIST && is_tmp_name(path)) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "invalid object key '%.200s'", r->key);
        return;
    }
    switch (r->op) {
    case DSQ_OBJ_PUT: file_put(o, r, path); break;
    case DSQ_OBJ_GET: file_get(r, path, false); break;
    case DSQ_OBJ_HEAD: file_get(r, path, true); break;
    case DSQ_OBJ_DELETE: file_delete(r, path); break;
    case DSQ_OBJ_LIST: file_list(o, r); break;
    }
}

typedef struct file_work {
    uv_work_t w;
    dsq_obj *o;
    dsq_obj_req *r;
} file_work;

static void file_work_cb(uv_work_t *w)
{
    file_work *fw = w->data;
    file_do(fw->o, fw->r);
}

static void file_after_cb(uv_work_t *w, int status)
{
    file_work *fw = w->data;
    if (status == UV_ECANCELED)
        dsq__obj_fail(fw->r, DSQ_OBJ_CANCELLED, "the object store was closed");
    dsq__obj_finish(fw->o, fw->r);
    free(fw);
}

/* Several at once on libuv's thread pool: their fsyncs overlap (the file
 * system can take them in one journal commit), as an S3 service's
 * requests do. */
static void file_start(dsq_obj *o, dsq_obj_req *r)
{
    file_work *fw = malloc(sizeof *fw);
    if (fw != NULL) {
        fw->o = o;
        fw->r = r;
        fw->w.data = fw;
        if (uv_queue_work(&o->loop, &fw->w, file_work_cb, file_after_cb) == 0)
            return;
        free(fw);
    }
    file_do(o, r); /* no memory for it: here, now */
    dsq__obj_finish(o, r);
}

static void file_stop(dsq_obj *o) { (void)o; }

const dsq_obj_backend dsq__obj_file = {file_open, file_start, file_stop, NULL};
