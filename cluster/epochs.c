/* epochs — each database's accepted epoch and log history, on disk
 * (epochs.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cluster/epochs.h"
#include "cluster/wire.h"
#include "common/htab.h"
#include "common/util.h"

typedef struct ent {
    dsq_hnode link;       /* in dsq_epochs.t */
    char name[129];
    dsq_epoch_state st;
} ent;

struct dsq_epochs {
    pthread_mutex_t mu;   /* the table (read from any thread: dsq_epochs_get) */
    int fd;
    dsq_nodeset *ids;     /* node numbers (borrowed) */
    dsq_htab t;           /* ent.link */
    unsigned pending;
    char dir[4096];       /* DATA_DIR/cluster */
    bool unclean;         /* the last run did not stop cleanly (its mark was there) */
};

/* ---- the table -------------------------------------------------------------------------------- */

static ent *find(const dsq_epochs *e, const char *db)
{
    return dsq_container_of(dsq_htab_find(&e->t, db), ent, link);
}

static ent *find_or_add(dsq_epochs *e, const char *db)
{
    ent *x = find(e, db);
    if (x != NULL)
        return x;
    if ((x = calloc(1, sizeof *x)) == NULL)
        return NULL;
    snprintf(x->name, sizeof x->name, "%s", db);
    x->st.accepted = 1;
    if (dsq_htab_add(&e->t, &x->link, x->name) != 0) {
        free(x);
        return NULL;
    }
    return x;
}

/* One entry, applied to the state in memory. */
static void apply(ent *x, uint64_t epoch, uint32_t primary, uint64_t start, const dsq_copyset *set)
{
    dsq_epoch_state *s = &x->st;
    if (set != NULL && dsq_copyset_newer(set, &s->set))
        s->set = *set;
    if (epoch >= s->accepted) {
        s->accepted = epoch;
        s->primary = primary;
        s->primary_known = true;
    }
    if (start == 0)
        return;
    /* History: entries in increasing epoch and start; a start at or before
     * an entry's replaces the entries from there (the log was cut back). */
    while (s->nhist > 0 && (s->hist[s->nhist - 1].epoch >= epoch || s->hist[s->nhist - 1].start >= start))
        s->nhist--;
    if (s->nhist == DSQ_EPOCH_HISTORY) { /* the oldest two merge (long acknowledged) */
        memmove(&s->hist[1], &s->hist[2], (DSQ_EPOCH_HISTORY - 2) * sizeof s->hist[0]);
        s->nhist--;
    }
    s->hist[s->nhist++] = (dsq_epoch_hist){.epoch = epoch, .start = start};
}

/* The node number of id: given now when it has none (a node not seen
 * since the start, named by an entry of before). */
static uint32_t node_of(const dsq_epochs *e, const char *id)
{
    uint32_t i;
    return dsq_nodeset_intern(e->ids, id, &i) == 0 ? i : DSQ_NODE_NONE;
}

/* ---- the file --------------------------------------------------------------------------------- */

/* Encode one entry: u32 length of the payload, u32 its CRC-32, payload:
 * str db, u64 epoch, str primary, u64 start, and with a copy set, u64 its
 * epoch, u8 n, n × str node id (an entry without one ends before). */
static int encode(const dsq_epochs *e, dsq_buf *b, const char *db, uint64_t epoch, const char *primary,
                  uint64_t start, const dsq_copyset *set)
{
    dsq_buf p = DSQ_BUF_INIT;
    int rc = dsq_w_str(&p, db) | dsq_w_u64(&p, epoch) | dsq_w_str(&p, primary) | dsq_w_u64(&p, start);
    if (set != NULL) {
        rc |= dsq_w_u64(&p, set->epoch) | dsq_w_u8(&p, (uint8_t)set->n);
        for (size_t i = 0; i < set->n; i++) {
            const char *id = dsq_nodeset_id(e->ids, set->nodes[i]);
            rc |= id != NULL ? dsq_w_str(&p, id) : -1;
        }
        rc |= dsq_w_u8(&p, (uint8_t)set->nprev);
        for (size_t i = 0; i < set->nprev; i++) {
            const char *id = dsq_nodeset_id(e->ids, set->prev[i]);
            rc |= id != NULL ? dsq_w_str(&p, id) : -1;
        }
    }
    if (rc == 0)
        rc = dsq_w_u32(b, (uint32_t)p.len) | dsq_w_u32(b, (uint32_t)crc32(0, (const Bytef *)p.data, (uInt)p.len)) |
             dsq_buf_append(b, p.data, p.len);
    dsq_buf_free(&p);
    return rc;
}

/* u8 n, n × str node id, into out[0..n) (node numbers); n. More than
 * DSQ_COPYSET_MAX: q goes bad. *unknown set when one cannot be given a
 * number. */
static size_t read_ids(const dsq_epochs *e, dsq_rd *q, uint32_t *out, bool *unknown)
{
    size_t n = dsq_r_u8(q);
    if (n > DSQ_COPYSET_MAX) {
        q->bad = true;
        return 0;
    }
    for (size_t i = 0; i < n && !q->bad; i++) {
        char id[DSQ_NODE_ID_MAX];
        dsq_r_str(q, id, sizeof id);
        out[i] = node_of(e, id);
        *unknown = *unknown || out[i] == DSQ_NODE_NONE;
    }
    return n;
}

static int load(dsq_epochs *e, const char *path, char *err, size_t errlen)
{
    dsq_buf all = DSQ_BUF_INIT;
    char chunk[65536];
    ssize_t n;
    while ((n = read(e->fd, chunk, sizeof chunk)) > 0)
        if (dsq_buf_append(&all, chunk, (size_t)n) != 0) {
            snprintf(err, errlen, "out of memory");
            dsq_buf_free(&all);
            return -1;
        }
    if (n < 0) {
        snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
        dsq_buf_free(&all);
        return -1;
    }
    size_t good = 0;
    dsq_rd r = dsq_rd_of(all.data, all.len);
    while (dsq_rd_left(&r) >= 8) {
        uint32_t len = dsq_r_u32(&r), crc = dsq_r_u32(&r);
        const uint8_t *p;
        if (!dsq_rd_take(&r, len, &p) || (uint32_t)crc32(0, p, len) != crc)
            break; /* a torn last entry (a crash in its write): it was never acknowledged */
        dsq_rd q = dsq_rd_of(p, len);
        char db[129], primary[DSQ_NODE_ID_MAX];
        dsq_r_str(&q, db, sizeof db);
        uint64_t epoch = dsq_r_u64(&q);
        dsq_r_str(&q, primary, sizeof primary);
        uint64_t start = dsq_r_u64(&q);
        uint32_t node = node_of(e, primary);
        dsq_copyset set = {0};
        bool has_set = !q.bad && dsq_rd_left(&q) > 0;
        if (has_set) {
            bool unknown = false;
            set.epoch = dsq_r_u64(&q);
            set.n = read_ids(e, &q, set.nodes, &unknown);
            set.nprev = read_ids(e, &q, set.prev, &unknown);
            if (unknown)
                node = DSQ_NODE_NONE;
        }
        if (q.bad || node == DSQ_NODE_NONE) {
            /* Not an entry this build wrote, or a 65th node: refuse to
             * start rather than forget an epoch accepted. */
            snprintf(err, errlen, "%.300s: an entry for database %.129s names node '%.40s', which %s", path, db,
                     primary, q.bad ? "is malformed" : "cannot be given a number (too many nodes)");
            dsq_buf_free(&all);
            return -1;
        }
        {
            ent *x = find_or_add(e, db);
            if (x == NULL) {
                snprintf(err, errlen, "out of memory");
                dsq_buf_free(&all);
                return -1;
            }
            apply(x, epoch, node, start, has_set ? &set : NULL);
        }
        good = (size_t)(r.p - (const uint8_t *)all.data);
    }
    dsq_buf_free(&all);
    if (good < (size_t)lseek(e->fd, 0, SEEK_END) && (ftruncate(e->fd, (off_t)good) != 0 || fdatasync(e->fd) != 0)) {
        snprintf(err, errlen, "cannot cut the torn end of %.300s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* DATA_DIR/cluster/running: there from a start to a clean stop. Found at
 * a start, the last run crashed or was killed. */
static int mark_running(dsq_epochs *e, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/running", e->dir);
    e->unclean = access(path, F_OK) == 0;
    if (e->unclean)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || fsync(fd) != 0 || close(fd) != 0 || sync_dir(e->dir) != 0) {
        snprintf(err, errlen, "cannot make %.300s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0;
}

int dsq_epochs_open(const char *data_dir, dsq_nodeset *ids, dsq_epochs **out, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/cluster", data_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %.300s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/epochs", dir);
    dsq_epochs *e = calloc(1, sizeof *e);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->ids = ids;
    pthread_mutex_init(&e->mu, NULL);
    e->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (e->fd < 0) {
        snprintf(err, errlen, "cannot open %.300s: %s", path, strerror(errno));
        free(e);
        return -1;
    }
    if (load(e, path, err, errlen) != 0) {
        dsq_epochs_close(e);
        return -1;
    }
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    if (mark_running(e, err, errlen) != 0) {
        dsq_epochs_close(e);
        return -1;
    }
    *out = e;
    return 0;
}

bool dsq_epochs_unclean(const dsq_epochs *e) { return e->unclean; }

void dsq_epochs_stopped(dsq_epochs *e, bool resumed)
{
    char path[4200];
    if (e->unclean && !resumed)
        return; /* (kept: a copy this run did not resume still needs it) */
    snprintf(path, sizeof path, "%s/running", e->dir);
    if (unlink(path) == 0)
        sync_dir(e->dir);
}

void dsq_epochs_close(dsq_epochs *e)
{
    if (e == NULL)
        return;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&e->t, &it)) != NULL;)
        free(dsq_container_of(h, ent, link));
    dsq_htab_free(&e->t);
    if (e->fd >= 0)
        close(e->fd);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

void dsq_epochs_get(dsq_epochs *e, const char *db, dsq_epoch_state *out)
{
    pthread_mutex_lock(&e->mu);
    const ent *x = find(e, db);
    if (x != NULL) {
        *out = x->st;
    } else {
        memset(out, 0, sizeof *out);
        out->accepted = 1;
    }
    pthread_mutex_unlock(&e->mu);
}

uint64_t dsq_epoch_of(const dsq_epoch_state *s, uint64_t lsn)
{
    uint64_t epoch = 1;
    for (size_t i = 0; i < s->nhist && s->hist[i].start <= lsn; i++)
        epoch = s->hist[i].epoch;
    return epoch;
}

uint64_t dsq_epoch_end(const dsq_epoch_state *s, uint64_t epoch, uint64_t last)
{
    /* The first entry of a later epoch ends it (its start - 1). */
    for (size_t i = 0; i < s->nhist; i++)
        if (s->hist[i].epoch > epoch)
            return s->hist[i].start - 1 < last ? s->hist[i].start - 1 : last;
    return last;
}

/* ---- appending -------------------------------------------------------------------------------- */

typedef struct append {
    uv_fs_t req;
    dsq_epochs *e;
    dsq_buf buf;
    char name[129];
    uint64_t epoch, start;
    uint32_t primary;
    bool has_set;
    dsq_copyset set;
    void (*done)(void *ud, int rc);
    void *ud;
} append;

static void finish(append *a, int rc)
{
    dsq_epochs *e = a->e;
    e->pending--;
    if (rc == 0) {
        pthread_mutex_lock(&e->mu);
        ent *x = find_or_add(e, a->name);
        if (x == NULL)
            rc = -1;
        else
            apply(x, a->epoch, a->primary, a->start, a->has_set ? &a->set : NULL);
        pthread_mutex_unlock(&e->mu);
    }
    if (a->done != NULL)
        a->done(a->ud, rc);
    dsq_buf_free(&a->buf);
    free(a);
}

static void on_synced(uv_fs_t *req)
{
    append *a = req->data;
    int rc = req->result < 0 ? -1 : 0;
    uv_fs_req_cleanup(req);
    finish(a, rc);
}

static void on_written(uv_fs_t *req)
{
    append *a = req->data;
    bool whole = req->result == (ssize_t)a->buf.len;
    uv_loop_t *loop = req->loop;
    uv_fs_req_cleanup(req);
    if (!whole || uv_fs_fdatasync(loop, &a->req, a->e->fd, on_synced) != 0)
        finish(a, -1);
}

int dsq_epochs_set(dsq_epochs *e, uv_loop_t *loop, const char *db, uint64_t epoch, uint32_t primary,
                   uint64_t start, void (*done)(void *ud, int rc), void *ud)
{
    return dsq_epochs_set_copies(e, loop, db, epoch, primary, start, NULL, done, ud);
}

int dsq_epochs_set_copies(dsq_epochs *e, uv_loop_t *loop, const char *db, uint64_t epoch, uint32_t primary,
                          uint64_t start, const dsq_copyset *set, void (*done)(void *ud, int rc), void *ud)
{
    if (set != NULL && (set->n > DSQ_COPYSET_MAX || set->nprev > DSQ_COPYSET_MAX))
        return -1;
    const char *id = dsq_nodeset_id(e->ids, primary);
    if (id == NULL)
        return -1;
    append *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -1;
    a->e = e;
    snprintf(a->name, sizeof a->name, "%s", db);
    a->epoch = epoch;
    a->primary = primary;
    a->start = start;
    a->has_set = set != NULL;
    if (set != NULL)
        a->set = *set;
    a->done = done;
    a->ud = ud;
    a->req.data = a;
    if (encode(e, &a->buf, db, epoch, id, start, set) != 0) {
        free(a);
        return -1;
    }
    uv_buf_t b = uv_buf_init(a->buf.data, (unsigned)a->buf.len);
    if (uv_fs_write(loop, &a->req, e->fd, &b, 1, -1, on_written) != 0) {
        dsq_buf_free(&a->buf);
        free(a);
        return -1;
    }
    e->pending++;
    return 0;
}

unsigned dsq_epochs_pending(const dsq_epochs *e) { return e->pending; }

void dsq_epochs_each(dsq_epochs *e, void (*fn)(void *ud, const char *db, const dsq_epoch_state *s), void *ud)
{
    /* A copy of the entries first: fn runs without the lock. */
    pthread_mutex_lock(&e->mu);
    ent *v = malloc((e->t.n ? e->t.n : 1) * sizeof *v);
    size_t n = 0;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; v != NULL && (h = dsq_htab_next(&e->t, &it)) != NULL;)
        v[n++] = *dsq_container_of(h, ent, link);
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < n; i++)
        fn(ud, v[i].name, &v[i].st);
    free(v);
}
