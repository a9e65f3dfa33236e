/* tier — uploads of databases' durable files and restores from the object
 * store (tier.h has the model; docs/storage.md the object layout).
 *
 * A few threads take the queued jobs (an offer of a database's files, or
 * a drop): jobs of different databases at once, those of one database in
 * the order they came. A job reads chunks from the local files and waits
 * for the object store (several chunk uploads of a database at once).
 * The manifests of the databases seen are cached here. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/check.h"
#include "common/list.h"
#include "common/log.h"
#include "common/threads.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/storage/pagestore.h"
#include <jansson.h>

#include "engine/storage/ckpt.h"
#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"

enum job_kind { JOB_OFFER, JOB_DROP };

#define TIER_THREADS_MAX 16
#define TIER_RETRY_MS 1000      /* a failed job's first backoff ceiling */
#define TIER_RETRY_MAX_MS 60000 /* and its cap */

typedef struct job {
    enum job_kind kind;
    char db[129];
    uint64_t lsn;
    dsq_tier_file *files;
    size_t n;
    unsigned fails;
    uint64_t not_before_ms;
    dsq_qnode link;         /* on dsq_tier.jobs */
} job;

/* What the tier knows of a database it has seen (dsq_tier.known). */
typedef struct known {
    char db[129];
    dsq_manifest *m;        /* held: the manifest the store has; NULL: not read (or dropped since) */
    uint64_t reborn;        /* dropped in this run: the file version its next incarnation starts
                               at (above every one the dropped one used: the warm cache, keyed by
                               object, may still hold those); 0: not dropped */
    struct known *next;     /* the hash chain */
} known;

struct dsq_tier {
    dsq_tier_cfg cfg;
    char *data_dir;
    dsq_threads threads;    /* the upload threads (at most TIER_THREADS_MAX) */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* jobs came, or one finished (drain) */
    dsq_queue jobs;         /* mu: waiting, in the order they run (job.link) */
    char active[TIER_THREADS_MAX][129]; /* mu: the databases being worked on ("" free) */
    unsigned busy;          /* mu: how many */
    bool stopping;          /* mu */
    pthread_mutex_t cmu;
    known **known;          /* cmu: the databases seen, by name (chains of a hash) */
    size_t nbuckets;        /* cmu: a power of two */
    size_t nknown;          /* cmu: entries */
    atomic_uint_fast64_t uploads, bytes, manifests, deletes, errors, restored;
    pthread_mutex_t emu;
    char last_error[300];   /* emu */
    /* Drops: DATA_DIR/dropped/NAME, a tombstone per database dropped whose
     * objects the store may still hold. dmu orders a drop (the local
     * directory moved away, the tombstone written) against a restore
     * putting a database into place. Lock order: dmu, then mu. */
    pthread_mutex_t dmu;
    /* Whether every database the store has is here (or dropped): the
     * listing at start worked, or the catch-up thread got there since. */
    atomic_bool ready;
    pthread_t catchup;      /* the catch-up thread, when the store could not be listed at start */
    bool catchup_running;
};

static void note_error(dsq_tier *t, const char *db, const char *what)
{
    atomic_fetch_add(&t->errors, 1);
    pthread_mutex_lock(&t->emu);
    snprintf(t->last_error, sizeof t->last_error, "%s: %s", db, what);
    pthread_mutex_unlock(&t->emu);
    DSQ_WARN("object_store_upload_failed", "db=%s reason=%s", db, dsq_log_q(what));
}

static void job_free(job *j)
{
    if (j) {
        free(j->files);
        free(j);
    }
}

/* ---- keys and manifests ---------------------------------------------------------------------- */

static void manifest_key(char *out, size_t n, const char *db) { snprintf(out, n, "db/%s/manifest.json", db); }

/* GET and decode a manifest: 1 found (*out, one reference), 0 none, -1
 * error (msg). One that arrives damaged is asked for again, twice at
 * most. */
static int manifest_fetch(dsq_tier *t, const char *db, dsq_manifest **out, char *msg, size_t msglen)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        dsq_obj_req r;
        memset(&r, 0, sizeof r);
        r.op = DSQ_OBJ_GET;
        manifest_key(r.key, sizeof r.key, db);
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

/* db's entry in the table of databases seen: where its link is (*slot
 * NULL: none). Caller holds cmu. */
static known **known_slot(dsq_tier *t, const char *db)
{
    DSQ_ASSERT_HELD(&t->cmu);
    known **k = &t->known[dsq_hash_str(db) & (t->nbuckets - 1)];
    while (*k != NULL && strcmp((*k)->db, db) != 0)
        k = &(*k)->next;
    return k;
}

/* db's entry, made (empty) if there is none; NULL: out of memory. Caller
 * holds cmu. */
static known *known_add(dsq_tier *t, const char *db)
{
    known **slot = known_slot(t, db);
    if (*slot != NULL)
        return *slot;
    if (t->nknown >= t->nbuckets) { /* twice the buckets: chains stay short */
        known **nb = calloc(t->nbuckets * 2, sizeof *nb);
        if (nb == NULL)
            return NULL;
        for (size_t i = 0; i < t->nbuckets; i++)
            while (t->known[i] != NULL) {
                known *k = t->known[i];
                t->known[i] = k->next;
                size_t h = dsq_hash_str(k->db) & (t->nbuckets * 2 - 1);
                k->next = nb[h];
                nb[h] = k;
            }
        free(t->known);
        t->known = nb;
        t->nbuckets *= 2;
        slot = known_slot(t, db);
    }
    known *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    dsq_strlcpy(k->db, db, sizeof k->db);
    *slot = k;
    t->nknown++;
    return k;
}

/* The manifest of db in the cache (a reference the caller releases), or
 * NULL. */
static dsq_manifest *cache_get(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->cmu);
    known *k = *known_slot(t, db);
    dsq_manifest *m = dsq__manifest_hold(k ? k->m : NULL);
    pthread_mutex_unlock(&t->cmu);
    return m;
}

/* db's manifest is now m (its reference taken), or with !replace only if
 * the cache has none. 0, or -1: out of memory. */
static int cache_set(dsq_tier *t, const char *db, dsq_manifest *m, bool replace)
{
    pthread_mutex_lock(&t->cmu);
    known *k = known_add(t, db);
    if (k != NULL && (replace || k->m == NULL)) {
        dsq_manifest *was = k->m;
        k->m = m;
        m = was;
    }
    pthread_mutex_unlock(&t->cmu);
    dsq__manifest_release(m);
    return k != NULL ? 0 : -1;
}

static void cache_forget(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->cmu);
    known **slot = known_slot(t, db), *k = *slot;
    dsq_manifest *m = k ? k->m : NULL;
    if (k != NULL && k->reborn == 0) {
        *slot = k->next;
        t->nknown--;
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
    known *k = *known_slot(t, db);
    uint64_t floor = k ? k->reborn : 0;
    pthread_mutex_unlock(&t->cmu);
    return floor;
}

/* The manifest the store has of db (cached after the first read); a
 * reference the caller releases. Only the thread working on db changes
 * its entry, so it stays what it was while that thread uses it. */
static dsq_manifest *manifest_get(dsq_tier *t, const char *db, char *msg, size_t msglen)
{
    dsq_manifest *m = cache_get(t, db);
    if (m)
        return m;
    int rc = manifest_fetch(t, db, &m, msg, msglen);
    if (rc < 0)
        return NULL;
    if (rc == 0 && (m = dsq__manifest_new(db)) == NULL) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    uint64_t floor = rc == 0 ? reborn_floor(t, db) : 0;
    if (floor != 0)
        m->next = floor;
    if (cache_set(t, db, dsq__manifest_hold(m), true) != 0) {
        dsq__manifest_release(m);
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    return m;
}

void dsq_tier_prefetch(dsq_tier *t, const char *db)
{
    char msg[300];
    dsq__manifest_release(manifest_get(t, db, msg, sizeof msg));
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
    dsq_manifest *m = manifest_get(t, db, msg, msglen);
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

/* Add every chunk key of manifest m to `keys` (a JSON object used as a set). */
static void manifest_keys(const dsq_manifest *m, json_t *keys)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        const dsq_manifest_file *f = &m->files[i];
        for (size_t k = 0; k < f->nchunks; k++) {
            char key[DSQ_OBJ_KEY_MAX + 1];
            dsq_chunk_key(key, sizeof key, m->db, f->id, k, f->chunks[k].len);
            json_object_set_new(keys, key, json_true());
        }
    }
}

/* ---- uploads ------------------------------------------------------------------------------------ */

typedef struct batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left;
} batch;

typedef struct slot {
    dsq_obj_req r;
    batch *b;
    char *buf;
} slot;

static void slot_done(dsq_obj_req *r)
{
    slot *s = r->ud;
    pthread_mutex_lock(&s->b->mu);
    s->b->left--;
    pthread_cond_signal(&s->b->cv);
    pthread_mutex_unlock(&s->b->mu);
}

typedef struct upload {
    char path[4096];
    uint64_t off, len;
    char key[DSQ_OBJ_KEY_MAX + 1];
    dsq_manifest_chunk *chunk; /* its CRC-32 to fill */
} upload;

/* Upload the chunks, `parallel` at a time. 0; 1 a local file is gone or
 * shorter (the offer is stale); -1 the store failed (msg). */
static int upload_all(dsq_tier *t, upload *ups, size_t n, char *msg, size_t msglen)
{
    unsigned par = t->cfg.parallel;
    slot *slots = calloc(par, sizeof *slots);
    if (slots == NULL && n > 0) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    batch b = {.left = 0};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += par) {
        size_t m = n - at < par ? n - at : par;
        size_t started = 0;
        for (size_t i = 0; i < m && rc == 0; i++) {
            upload *u = &ups[at + i];
            slot *s = &slots[i];
            free(s->buf);
            if ((s->buf = malloc(u->len ? u->len : 1)) == NULL) {
                snprintf(msg, msglen, "out of memory");
                rc = -1;
                break;
            }
            int fd = open(u->path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                if (errno == ENOENT)
                    rc = 1; /* gone since it was offered */
                else
                    snprintf(msg, msglen, "open %.200s: %s", u->path, strerror(errno)), rc = -1;
                break;
            }
            int got = dsq_pread_full(fd, s->buf, u->len, u->off);
            close(fd);
            if (got != 0) {
                if (got > 0)
                    rc = 1; /* shorter than offered */
                else
                    snprintf(msg, msglen, "read %.200s: %s", u->path, strerror(errno)), rc = -1;
                break;
            }
            u->chunk->crc = dsq_crc32(s->buf, u->len);
            memset(&s->r, 0, sizeof s->r);
            s->r.op = DSQ_OBJ_PUT;
            dsq_strlcpy(s->r.key, u->key, sizeof s->r.key);
            s->r.body = s->buf;
            s->r.body_len = u->len;
            s->r.done = slot_done;
            s->r.ud = s;
            s->b = &b;
            pthread_mutex_lock(&b.mu);
            b.left++;
            pthread_mutex_unlock(&b.mu);
            started++;
            dsq_obj_submit(t->cfg.obj, &s->r);
        }
        pthread_mutex_lock(&b.mu);
        while (b.left > 0)
            pthread_cond_wait(&b.cv, &b.mu);
        pthread_mutex_unlock(&b.mu);
        for (size_t i = 0; i < started; i++) {
            if (slots[i].r.status != DSQ_OBJ_OK && rc == 0) {
                snprintf(msg, msglen, "%s", slots[i].r.msg);
                rc = -1;
            } else if (slots[i].r.status == DSQ_OBJ_OK) {
                atomic_fetch_add(&t->uploads, 1);
                atomic_fetch_add(&t->bytes, slots[i].r.body_len);
            }
            dsq_obj_req_clear(&slots[i].r);
        }
    }
    for (unsigned i = 0; slots && i < par; i++)
        free(slots[i].buf);
    free(slots);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
    return rc;
}

/* Delete the objects named by `keys`; returns how many failed (msg: why
 * the first did). */
static size_t delete_keys(dsq_tier *t, json_t *keys, char *msg, size_t msglen)
{
    const char *key;
    json_t *v;
    size_t failed = 0;
    json_object_foreach(keys, key, v) {
        dsq_obj_req r;
        memset(&r, 0, sizeof r);
        r.op = DSQ_OBJ_DELETE;
        dsq_strlcpy(r.key, key, sizeof r.key);
        if (dsq_obj_run(t->cfg.obj, &r) == DSQ_OBJ_OK) {
            atomic_fetch_add(&t->deletes, 1);
        } else {
            if (failed++ == 0 && msg != NULL)
                snprintf(msg, msglen, "%s", r.msg);
        }
        dsq_obj_req_clear(&r);
    }
    return failed;
}

/* ---- tombstones ------------------------------------------------------------------------------- */

static void tomb_path(const dsq_tier *t, const char *db, char *out, size_t n)
{
    snprintf(out, n, "%s/dropped/%s", t->data_dir, db);
}

bool dsq_tier_tombstoned(dsq_tier *t, const char *db)
{
    if (t == NULL)
        return false;
    char p[4400];
    tomb_path(t, db, p, sizeof p);
    return access(p, F_OK) == 0;
}

/* Write db's tombstone durably: the file fsynced, then its directory. */
static int tomb_write(dsq_tier *t, const char *db, char *err, size_t errlen)
{
    char p[4400];
    tomb_path(t, db, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    static const char text[] = "dosqld-dropped 1\n";
    if (fd < 0 || dsq_pwrite_full(fd, text, sizeof text - 1, 0) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %.300s: %s", p, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    *strrchr(p, '/') = '\0';
    dsq_fsync_dir(p);
    return 0;
}

/* db's objects are all gone: its tombstone goes, unless a later drop of
 * the name waits (it wrote the same file). */
static void tomb_clear(dsq_tier *t, const char *db)
{
    pthread_mutex_lock(&t->dmu);
    pthread_mutex_lock(&t->mu);
    bool again = false;
    job *x;
    dsq_queue_foreach(x, &t->jobs, link)
        again |= x->kind == JOB_DROP && strcmp(x->db, db) == 0;
    pthread_mutex_unlock(&t->mu);
    if (!again) {
        char p[4400];
        tomb_path(t, db, p, sizeof p);
        if (unlink(p) == 0) {
            *strrchr(p, '/') = '\0';
            dsq_fsync_dir(p);
            DSQ_INFO("drop_finished", "db=%s reason=%s", db, dsq_log_q("the object store has none of its objects"));
        }
    }
    pthread_mutex_unlock(&t->dmu);
}

static void tails_trim(dsq_tier *t, const char *db, uint64_t lsn);

/* One offer's work: the manifest it makes, and the chunks that manifest
 * names and the store does not have yet. */
typedef struct offer {
    dsq_tier *t;
    const job *j;
    const dsq_manifest *old; /* the manifest the store has */
    dsq_manifest *nm;        /* owned: the one to write (room for j->n files) */
    upload *ups;             /* owned: nups of them, room for cap */
    size_t nups, cap;
    char *msg;
    size_t msglen;
} offer;

/* File of of the old manifest goes into the new one as it is. */
static int offer_keep(offer *o, const dsq_manifest_file *of)
{
    if (dsq__manifest_file_copy(&o->nm->files[o->nm->nfiles], of) != 0) {
        snprintf(o->msg, o->msglen, "out of memory");
        return -1;
    }
    o->nm->nfiles++;
    return 0;
}

/* A small file goes inside the manifest: 0, 1 (gone: the offer is
 * stale), -1 (msg). */
static int offer_inline(offer *o, const dsq_tier_file *f, const dsq_manifest_file *of)
{
    char path[4096 + 256];
    snprintf(path, sizeof path, "%s/db/%s/%s", o->t->data_dir, o->j->db, f->name);
    unsigned char *buf = malloc(f->size + 1);
    if (buf == NULL) {
        snprintf(o->msg, o->msglen, "out of memory");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int got = fd < 0 ? (errno == ENOENT ? 1 : -1) : dsq_pread_full(fd, buf, (size_t)f->size, 0);
    if (fd >= 0)
        close(fd);
    if (got != 0) {
        if (got < 0)
            snprintf(o->msg, o->msglen, "read %.200s: %s", path, strerror(errno));
        free(buf);
        return got > 0 ? 1 : -1;
    }
    uint32_t crc = dsq_crc32(buf, (size_t)f->size);
    if (of != NULL && of->data != NULL && of->size == f->size && of->crc == crc) {
        free(buf); /* unchanged: as it was (then an offer of nothing new writes nothing) */
        return offer_keep(o, of);
    }
    dsq_buf b64 = DSQ_BUF_INIT;
    dsq_base64_encode(&b64, buf, (size_t)f->size);
    free(buf);
    dsq_manifest_file *nf = &o->nm->files[o->nm->nfiles];
    *nf = (dsq_manifest_file){.id = o->nm->next++, .size = f->size, .ino = f->ino, .mtime_ns = f->mtime_ns,
                              .append_only = f->append_only, .crc = crc};
    dsq_strlcpy(nf->name, f->name, sizeof nf->name);
    nf->data = strndup(b64.data ? b64.data : "", b64.len);
    dsq_buf_free(&b64);
    if (nf->data == NULL) {
        snprintf(o->msg, o->msglen, "out of memory");
        return -1;
    }
    o->nm->nfiles++;
    return 0;
}

/* Chunk idx of file `name` (version id), its bytes [off, off + len),
 * goes up before the manifest; its CRC-32 goes to *c. */
static int offer_upload(offer *o, const char *name, uint64_t id, size_t idx, uint64_t off, uint64_t len,
                        dsq_manifest_chunk *c)
{
    if (o->nups == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        upload *nu = realloc(o->ups, cap * sizeof *nu);
        if (nu == NULL) {
            snprintf(o->msg, o->msglen, "out of memory");
            return -1;
        }
        o->ups = nu;
        o->cap = cap;
    }
    upload *u = &o->ups[o->nups++];
    snprintf(u->path, sizeof u->path, "%s/db/%s/%s", o->t->data_dir, o->j->db, name);
    u->off = off;
    u->len = len;
    u->chunk = c;
    dsq_chunk_key(u->key, sizeof u->key, o->j->db, id, idx, len);
    return 0;
}

/* A file goes up in chunks: the same file as the old manifest's (a log
 * segment grown since, or unchanged) keeps its version and the chunks
 * the store has; any other is a new version. */
static int offer_chunked(offer *o, const dsq_tier_file *f, const dsq_manifest_file *of)
{
    uint64_t chunk = o->t->cfg.chunk_bytes;
    bool same = of != NULL && of->ino == f->ino &&
                (f->append_only ? of->size <= f->size : of->size == f->size && of->mtime_ns == f->mtime_ns);
    size_t nch = (size_t)((f->size + chunk - 1) / chunk);
    dsq_manifest_file *nf = &o->nm->files[o->nm->nfiles];
    *nf = (dsq_manifest_file){.id = same ? of->id : o->nm->next++, .size = f->size, .ino = f->ino,
                              .mtime_ns = f->mtime_ns, .append_only = f->append_only};
    dsq_strlcpy(nf->name, f->name, sizeof nf->name);
    if (nch > 0 && (nf->chunks = calloc(nch, sizeof *nf->chunks)) == NULL) {
        snprintf(o->msg, o->msglen, "out of memory");
        return -1;
    }
    nf->nchunks = nch;
    o->nm->nfiles++;
    for (size_t k = 0; k < nch; k++) {
        uint64_t off = k * chunk, len = f->size - off < chunk ? f->size - off : chunk;
        const dsq_manifest_chunk *oc = same && k < of->nchunks ? &of->chunks[k] : NULL;
        if (oc != NULL && oc->len == len) {
            nf->chunks[k] = *oc; /* uploaded before */
            continue;
        }
        nf->chunks[k] = (dsq_manifest_chunk){len, 0};
        if (offer_upload(o, f->name, nf->id, k, off, len, &nf->chunks[k]) != 0)
            return -1;
    }
    return 0;
}

/* What of file f goes into the new manifest, and what of it up. */
static int offer_file(offer *o, const dsq_tier_file *f)
{
    const dsq_manifest_file *of = dsq__manifest_file(o->old, f->name);
    if (f->cold) {
        /* Evicted: its bytes are the ones the manifest names (and only
         * there). */
        if (of != NULL)
            return offer_keep(o, of);
        DSQ_ERROR("cold_file_unknown", "db=%s file=%s reason=%s", o->j->db, f->name,
                  dsq_log_q("evicted, but not in the manifest"));
        return 0;
    }
    if (of != NULL && f->append_only && of->ino == f->ino && f->size <= of->size)
        return offer_keep(o, of); /* uploaded already, up to where it was when it closed */
    if (f->size <= o->t->cfg.inline_bytes)
        return offer_inline(o, f, of);
    return offer_chunked(o, f, of);
}

/* Write manifest m to the store: 0, or -1 (msg). */
static int manifest_put(dsq_tier *t, const dsq_manifest *m, char *msg, size_t msglen)
{
    size_t len = 0;
    char *text = dsq__manifest_encode(m, &len);
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_PUT;
    manifest_key(r.key, sizeof r.key, m->db);
    r.body = text;
    r.body_len = len;
    dsq_obj_status st = text ? dsq_obj_run(t->cfg.obj, &r) : DSQ_OBJ_FAILED;
    if (st != DSQ_OBJ_OK)
        snprintf(msg, msglen, "%s", text ? r.msg : "out of memory");
    dsq_obj_req_clear(&r);
    free(text);
    return st == DSQ_OBJ_OK ? 0 : -1;
}

/* nm is written in place of old: the cache has it, and the objects old
 * named and nm does not go, with the tails nm covers. */
static void superseded(dsq_tier *t, const dsq_manifest *old, dsq_manifest *nm)
{
    json_t *gone = json_object(), *keep = json_object();
    manifest_keys(old, gone);
    manifest_keys(nm, keep);
    const char *key;
    json_t *v;
    json_object_foreach(keep, key, v)
        json_object_del(gone, key);
    json_decref(keep);
    cache_set(t, nm->db, dsq__manifest_hold(nm), true);
    delete_keys(t, gone, NULL, 0); /* a failure leaves an orphan, named by no manifest */
    json_decref(gone);
    if (t->cfg.tails)
        tails_trim(t, nm->db, nm->lsn);
}

/* Offer j against the manifest the store has (old). 0 done, 1 stale
 * (dropped), -1 failed (retry later; msg). */
static int offer_against(dsq_tier *t, job *j, const dsq_manifest *old, char *msg, size_t msglen)
{
    offer o = {.t = t, .j = j, .old = old, .msg = msg, .msglen = msglen};
    o.nm = dsq__manifest_new(j->db);
    if (o.nm == NULL || (o.nm->files = calloc(j->n ? j->n : 1, sizeof *o.nm->files)) == NULL) {
        dsq__manifest_release(o.nm);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    o.nm->lsn = j->lsn;
    o.nm->time_ms = dsq_wall_ms();
    o.nm->chunk_bytes = t->cfg.chunk_bytes;
    o.nm->next = old->next;
    int rc = 0;
    for (size_t i = 0; i < j->n && rc == 0; i++)
        rc = offer_file(&o, &j->files[i]);
    bool nothing_new = rc == 0 && o.nups == 0 && dsq__manifest_files_equal(o.nm, old);
    if (rc == 0 && !nothing_new)
        rc = upload_all(t, o.ups, o.nups, msg, msglen);
    /* The manifest after the objects it names. */
    if (rc == 0 && !nothing_new && (rc = manifest_put(t, o.nm, msg, msglen)) == 0) {
        atomic_fetch_add(&t->manifests, 1);
        superseded(t, old, o.nm);
    }
    free(o.ups);
    dsq__manifest_release(o.nm);
    return rc;
}

static int do_offer(dsq_tier *t, job *j, char *msg, size_t msglen)
{
    dsq_manifest *old = manifest_get(t, j->db, msg, msglen);
    if (old == NULL)
        return -1;
    int rc = offer_against(t, j, old, msg, msglen);
    dsq__manifest_release(old);
    return rc;
}

/* A database made again under a dropped name numbers its file versions
 * from above `id` (an object key names its version). */
static void reborn_above(dsq_tier *t, const char *db, uint64_t id)
{
    pthread_mutex_lock(&t->cmu);
    known *k = known_add(t, db);
    if (k != NULL && k->reborn <= id)
        k->reborn = id + 1;
    pthread_mutex_unlock(&t->cmu);
}

static int do_drop(dsq_tier *t, job *j, char *msg, size_t msglen)
{
    dsq_manifest *cached = cache_get(t, j->db);
    if (cached != NULL && cached->next > 0)
        reborn_above(t, j->db, cached->next - 1);
    dsq__manifest_release(cached);
    cache_forget(t, j->db);
    /* The manifest first: no restore finds half a database. */
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_DELETE;
    manifest_key(r.key, sizeof r.key, j->db);
    if (dsq_obj_run(t->cfg.obj, &r) != DSQ_OBJ_OK) {
        snprintf(msg, msglen, "%s", r.msg);
        dsq_obj_req_clear(&r);
        return -1;
    }
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_LIST;
    snprintf(r.key, sizeof r.key, "db/%s/", j->db);
    if (dsq_obj_run(t->cfg.obj, &r) != DSQ_OBJ_OK) {
        snprintf(msg, msglen, "%s", r.msg);
        dsq_obj_req_clear(&r);
        return -1;
    }
    json_t *keys = json_object();
    for (size_t i = 0; i < r.nitems; i++) {
        json_object_set_new(keys, r.items[i].key, json_true());
        const char *c = strstr(r.items[i].key, "/data/");
        unsigned long long id;
        if (c != NULL && sscanf(c + 6, "%8llx.", &id) == 1)
            reborn_above(t, j->db, id);
    }
    dsq_obj_req_clear(&r);
    size_t left = delete_keys(t, keys, msg, msglen);
    json_decref(keys);
    if (left > 0)
        return -1; /* the tombstone stays until the store has none of them */
    tomb_clear(t, j->db);
    return 0;
}

/* ---- the thread --------------------------------------------------------------------------------- */

static bool has_job_for(dsq_tier *t, const char *db)
{
    job *j;
    dsq_queue_foreach(j, &t->jobs, link)
        if (strcmp(j->db, db) == 0)
            return true;
    return false;
}

/* A drop that failed goes back before the jobs of its database that came
 * after it: the offers of a database made again under the name go up only
 * once the old one's objects are gone. */
static void insert_drop(dsq_tier *t, job *j)
{
    dsq_qnode *prev = NULL;
    for (dsq_qnode *n = dsq_queue_first(&t->jobs); n; prev = n, n = n->next)
        if (strcmp(dsq_container_of(n, job, link)->db, j->db) == 0)
            break;
    dsq_queue_insert_after(&t->jobs, prev, &j->link);
}

static bool active(const dsq_tier *t, const char *db)
{
    for (unsigned i = 0; i < t->threads.n; i++)
        if (strcmp(t->active[i], db) == 0)
            return true;
    return false;
}

/* The wait before a failed job's next try: full jitter, the ceiling 1 s
 * doubling to a minute (the store's own helper). A stop waits for the
 * same backoff: it does not hammer a store that is down. */
static uint64_t retry_wait_ms(unsigned fails)
{
    return dsq_obj_backoff_ms(fails, TIER_RETRY_MS, TIER_RETRY_MAX_MS, dsq_obj_backoff_rnd());
}

/* Whether a job before j concerns j's database: a database's jobs run in
 * the order they came (a drop, then the offers of a database made again
 * under the name). */
static bool behind_another(const dsq_tier *t, const job *j)
{
    for (const dsq_qnode *n = dsq_queue_first(&t->jobs); n != &j->link; n = n->next)
        if (strcmp(dsq_container_of(n, job, link)->db, j->db) == 0)
            return true;
    return false;
}

/* One of the upload threads: jobs of different databases run at once (an
 * object store answers in milliseconds; many databases wait on it in
 * parallel), the jobs of one database one after another. */
static void *tier_main(void *arg)
{
    dsq_thread_name("dsq-tier");
    dsq_tier *t = arg;
    /* Copies are background work: commits and queries come first. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        uint64_t now = dsq_now_ms(), wake = 0;
        job *j = NULL;
        dsq_qnode *prev = NULL;
        for (dsq_qnode *n = dsq_queue_first(&t->jobs); n; prev = n, n = n->next) {
            job *c = dsq_container_of(n, job, link);
            if (active(t, c->db) || behind_another(t, c))
                continue;
            if (c->not_before_ms <= now) {
                j = c;
                dsq_queue_remove_after(&t->jobs, prev);
                break;
            }
            if (wake == 0 || c->not_before_ms < wake)
                wake = c->not_before_ms;
        }
        if (j == NULL) {
            if (wake == 0)
                pthread_cond_wait(&t->cv, &t->mu);
            else
                dsq_cond_wait_ms(&t->cv, &t->mu, wake - now);
            continue;
        }
        unsigned mine = 0;
        while (t->active[mine][0] != '\0')
            mine++; /* a free one: at most threads.n jobs are taken */
        dsq_strlcpy(t->active[mine], j->db, sizeof t->active[mine]);
        t->busy++;
        pthread_mutex_unlock(&t->mu);
        char msg[300] = "";
        int rc = j->kind == JOB_OFFER ? do_offer(t, j, msg, sizeof msg) : do_drop(t, j, msg, sizeof msg);
        if (rc < 0)
            note_error(t, j->db, msg);
        pthread_mutex_lock(&t->mu);
        t->active[mine][0] = '\0';
        t->busy--;
        if (rc < 0 && !(j->kind == JOB_OFFER && has_job_for(t, j->db)) && !t->stopping) {
            /* Again later, after a backoff (a drop always: its tombstone
             * waits for it; a newer offer replaces this one). */
            j->fails++;
            j->not_before_ms = dsq_now_ms() + retry_wait_ms(j->fails);
            if (j->kind == JOB_DROP)
                insert_drop(t, j);
            else
                dsq_queue_push(&t->jobs, &j->link);
        } else {
            job_free(j);
        }
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void queue(dsq_tier *t, job *j)
{
    pthread_mutex_lock(&t->mu);
    /* The newest offer of a database replaces one not yet begun; a drop
     * replaces its offers. */
    dsq_qnode *prev = NULL, *n = dsq_queue_first(&t->jobs);
    while (n != NULL) {
        job *o = dsq_container_of(n, job, link);
        n = n->next;
        if (strcmp(o->db, j->db) == 0 && o->kind == JOB_OFFER) {
            dsq_queue_remove_after(&t->jobs, prev);
            job_free(o);
        } else {
            prev = &o->link;
        }
    }
    dsq_queue_push(&t->jobs, &j->link);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void dsq_tier_offer(dsq_tier *t, const char *db, uint64_t lsn, const dsq_tier_file *files, size_t n)
{
    if (t == NULL)
        return;
    job *j = calloc(1, sizeof *j);
    if (j == NULL || (n && (j->files = malloc(n * sizeof *files)) == NULL)) {
        job_free(j);
        note_error(t, db, "out of memory queueing an upload");
        return;
    }
    j->kind = JOB_OFFER;
    dsq_strlcpy(j->db, db, sizeof j->db);
    j->lsn = lsn;
    if (n)
        memcpy(j->files, files, n * sizeof *files);
    j->n = n;
    queue(t, j);
}

static void queue_drop(dsq_tier *t, const char *db)
{
    job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        note_error(t, db, "out of memory queueing a drop (it is tried again at the next start)");
        return;
    }
    j->kind = JOB_DROP;
    dsq_strlcpy(j->db, db, sizeof j->db);
    queue(t, j);
}

int dsq_tier_drop(dsq_tier *t, const char *db, dsq_tier_drop_fn local, void *ud, char *err, size_t errlen)
{
    pthread_mutex_lock(&t->dmu);
    int rc = local ? local(ud, err, errlen) : 0;
    if (rc == 0) {
        if (tomb_write(t, db, err, errlen) != 0)
            rc = -1; /* not answered as dropped; the objects go all the same */
        queue_drop(t, db);
    }
    pthread_mutex_unlock(&t->dmu);
    return rc;
}

int dsq_tier_exists(dsq_tier *t, const char *db, char *msg, size_t msglen)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_HEAD;
    manifest_key(r.key, sizeof r.key, db);
    dsq_obj_status st = dsq_obj_run(t->cfg.obj, &r);
    if (st != DSQ_OBJ_OK && st != DSQ_OBJ_NOT_FOUND)
        snprintf(msg, msglen, "%s", r.msg);
    dsq_obj_req_clear(&r);
    return st == DSQ_OBJ_OK ? 1 : st == DSQ_OBJ_NOT_FOUND ? 0 : -1;
}

bool dsq_tier_ready(dsq_tier *t) { return t == NULL || atomic_load(&t->ready); }

/* ---- listing a database's files ------------------------------------------------------------------- */

static int add_file(dsq_tier_file **out, size_t *n, size_t *cap, const char *dir, const char *name, uint64_t limit,
                    bool append_only)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        dsq_tier_file *nf = realloc(*out, *cap * sizeof *nf);
        if (nf == NULL)
            return -1;
        *out = nf;
    }
    dsq_tier_file *f = &(*out)[(*n)++];
    memset(f, 0, sizeof *f);
    dsq_strlcpy(f->name, name, sizeof f->name);
    f->size = (uint64_t)st.st_size < limit ? (uint64_t)st.st_size : limit;
    f->ino = (uint64_t)st.st_ino;
    f->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    f->append_only = append_only;
    /* Evicted (warm.h): its sidecar says so. */
    char side[4200];
    snprintf(side, sizeof side, "%s.cold", path);
    f->cold = access(side, F_OK) == 0;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const dsq_tier_file *)a)->name, ((const dsq_tier_file *)b)->name);
}

int dsq_tier_list_files(const char *dir, bool whole, uint32_t seg, uint64_t seg_size, dsq_tier_file **out,
                        size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    if (add_file(out, n, &cap, dir, "format", UINT64_MAX, false) != 0)
        goto fail;
    static const char *const subs[] = {"ckpt", "wal"};
    for (int s = 0; s < 2; s++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, subs[s]);
        DIR *d = opendir(path);
        if (d == NULL) {
            if (errno == ENOENT)
                continue;
            goto fail;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t len = strlen(de->d_name);
            char name[48];
            if (s == 0) {
                if (len < 6 || len > 40 || strcmp(de->d_name + len - 5, ".ckpt") != 0)
                    continue; /* .ckpt.tmp and the rest are not yet (or not) files to keep */
                snprintf(name, sizeof name, "ckpt/%s", de->d_name);
                if (add_file(out, n, &cap, dir, name, UINT64_MAX, false) != 0) {
                    closedir(d);
                    goto fail;
                }
            } else {
                uint32_t seq;
                /* Not a segment yet without its whole header: recovery
                 * would take a shorter file for a damaged one. */
                if (!dsq_wal_seg_seq(de->d_name, &seq) || (!whole && (seq > seg || (seq == seg && seg_size < DSQ_WAL_SEG_HDR))))
                    continue;
                snprintf(name, sizeof name, "wal/%s", de->d_name);
                if (add_file(out, n, &cap, dir, name, !whole && seq == seg ? seg_size : UINT64_MAX, true) != 0) {
                    closedir(d);
                    goto fail;
                }
            }
        }
        closedir(d);
    }
    if (*n > 1)
        qsort(*out, *n, sizeof **out, name_cmp);
    return 0;
fail:
    free(*out);
    *out = NULL;
    *n = 0;
    return -1;
}

/* ---- tails (sync_to_object_store = commit) ------------------------------------------------------- */

static void tail_key(char *out, size_t n, const char *db, uint64_t after, uint64_t upto)
{
    snprintf(out, n, "db/%s/tail/%016llx-%016llx", db, (unsigned long long)after, (unsigned long long)upto);
}

typedef struct tail_put {
    dsq_obj_req r;
    dsq_buf body;
    dsq_tier *t;
    dsq_tier_tail_fn fn;
    void *ud;
    uint64_t upto;
} tail_put;

static int tail_collect(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err,
                        size_t errlen)
{
    if (dsq_buf_append(ud, rec, r->len) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void tail_done(dsq_obj_req *r)
{
    tail_put *p = r->ud;
    bool ok = r->status == DSQ_OBJ_OK;
    if (ok) {
        atomic_fetch_add(&p->t->uploads, 1);
        atomic_fetch_add(&p->t->bytes, p->body.len);
    } else {
        note_error(p->t, r->key, r->msg);
    }
    p->fn(p->ud, ok, p->upto, ok ? "" : r->msg);
    dsq_obj_req_clear(&p->r);
    dsq_buf_free(&p->body);
    free(p);
}

void dsq_tier_tail(dsq_tier *t, const char *db, struct dsq_wal *w, uint64_t after, uint64_t upto,
                   dsq_tier_tail_fn fn, void *ud)
{
    tail_put *p = calloc(1, sizeof *p);
    char err[300] = "out of memory";
    /* The records from the log's copy in memory; if it does not have
     * them all (a failed tail, a rewind), from the log. */
    bool have = p != NULL && dsq_wal_tee_take(w, after, upto, &p->body) == 0;
    if (p != NULL && !have)
        dsq_buf_reset(&p->body);
    if (p == NULL || (!have && dsq_wal_scan(w, after, upto, tail_collect, &p->body, err, sizeof err) != 0)) {
        if (p)
            dsq_buf_free(&p->body);
        free(p);
        fn(ud, false, upto, err);
        return;
    }
    p->t = t;
    p->fn = fn;
    p->ud = ud;
    p->upto = upto;
    p->r.op = DSQ_OBJ_PUT;
    tail_key(p->r.key, sizeof p->r.key, db, after, upto);
    p->r.body = p->body.data ? p->body.data : "";
    p->r.body_len = p->body.len;
    p->r.done = tail_done;
    p->r.ud = p;
    dsq_obj_submit(t->cfg.obj, &p->r);
}

/* The tail objects of db, ascending by their first LSN; the caller
 * clears r. 0, or -1 (r->msg). */
static int tails_list(dsq_tier *t, const char *db, dsq_obj_req *r)
{
    memset(r, 0, sizeof *r);
    r->op = DSQ_OBJ_LIST;
    snprintf(r->key, sizeof r->key, "db/%s/tail/", db);
    return dsq_obj_run(t->cfg.obj, r) == DSQ_OBJ_OK ? 0 : -1;
}

/* The LSNs a tail object's key names (false: not a tail's key). */
static bool tail_range(const char *key, uint64_t *after, uint64_t *upto)
{
    const char *p = strstr(key, "/tail/");
    unsigned long long a, b;
    char extra;
    if (p == NULL || sscanf(p + 6, "%16llx-%16llx%c", &a, &b, &extra) != 2)
        return false;
    *after = a;
    *upto = b;
    return true;
}

/* The manifest of db now covers every commit up to lsn: its tails up to
 * there go. */
static void tails_trim(dsq_tier *t, const char *db, uint64_t lsn)
{
    dsq_obj_req r;
    if (tails_list(t, db, &r) != 0) {
        dsq_obj_req_clear(&r);
        return; /* they go with a later manifest */
    }
    json_t *keys = json_object();
    for (size_t i = 0; i < r.nitems; i++) {
        uint64_t a, b;
        if (tail_range(r.items[i].key, &a, &b) && b <= lsn)
            json_object_set_new(keys, r.items[i].key, json_true());
    }
    dsq_obj_req_clear(&r);
    delete_keys(t, keys, NULL, 0);
    json_decref(keys);
}

/* Whether p[0..n) holds intact records after LSN `after` up to `upto`,
 * one after another, and nothing else. */
static bool tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto)
{
    const uint8_t *end = p + n;
    uint64_t next = after + 1;
    while (end - p >= DSQ_WAL_REC_HDR) {
        dsq_wal_rec h;
        if (dsq_wal_rec_header(p, &h) != 0 || h.len > (size_t)(end - p) || !dsq_wal_rec_valid(p, &h) ||
            h.lsn != next)
            return false;
        next++;
        p += h.len;
    }
    return p == end && next == upto + 1;
}

bool dsq__tier_tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto)
{
    return tail_whole(p, n, after, upto);
}

bool dsq__tier_tail_range(const char *key, uint64_t *after, uint64_t *upto) { return tail_range(key, after, upto); }

/* After a restore's files are in `dir`: append to its log the records of
 * the tail objects that follow the log's last record; with ends_at, the
 * LSN the log then ends at (the log is opened, and so recovered, for it
 * even when there is no tail). */
static int tails_apply(dsq_tier *t, const char *db, const char *dir, uint64_t *ends_at, char *err, size_t errlen)
{
    dsq_obj_req r;
    if (tails_list(t, db, &r) != 0) {
        snprintf(err, errlen, "cannot list the tails of %s: %.200s", db, r.msg);
        dsq_obj_req_clear(&r);
        return -1;
    }
    if (r.nitems == 0 && ends_at == NULL) {
        dsq_obj_req_clear(&r);
        return 0;
    }
    char path[8192];
    unsigned page_size = 0;
    snprintf(path, sizeof path, "%s/format", dir);
    FILE *fp = fopen(path, "r");
    if (fp == NULL || fscanf(fp, "dosqld-db 1 page_size %u", &page_size) != 1) {
        if (fp)
            fclose(fp);
        dsq_obj_req_clear(&r);
        snprintf(err, errlen, "the format file of %s cannot be read", db);
        return -1;
    }
    fclose(fp);
    /* The log is read from the newest checkpoint on, as its open does. */
    uint64_t from = 0;
    snprintf(path, sizeof path, "%s/ckpt", dir);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            unsigned long long v;
            char tail[8];
            if (sscanf(de->d_name, "%16llx.%5s", &v, tail) == 2 && strcmp(tail, "ckpt") == 0 && v > from)
                from = v;
        }
        closedir(d);
    }
    snprintf(path, sizeof path, "%s/wal", dir);
    mkdir(path, 0700);
    dsq_wal_cfg wc = {.page_size = page_size, .segment_bytes = t->cfg.segment_bytes, .known_durable = true};
    dsq_wal *w = NULL;
    uint64_t last = 0;
    if (dsq_wal_open(path, &wc, from, NULL, NULL, &w, &last, err, errlen) != 0) {
        dsq_obj_req_clear(&r);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < r.nitems && rc == 0; i++) {
        uint64_t a, b;
        if (!tail_range(r.items[i].key, &a, &b) || b <= last || a > last)
            continue; /* covered already, or after a gap (then so is every later one) */
        /* A tail is whole when its records run from A+1 to B, each
         * intact, and nothing follows; one that arrives otherwise is
         * fetched again (damaged on the way), twice at most. */
        dsq_obj_req g;
        bool whole = false;
        for (int attempt = 0; attempt < 3 && !whole; attempt++) {
            if (attempt > 0) {
                DSQ_WARN("restore_tail_damaged", "db=%s key=%s attempt=%d", db, g.key, attempt);
                dsq_obj_req_clear(&g);
            }
            memset(&g, 0, sizeof g);
            g.op = DSQ_OBJ_GET;
            dsq_strlcpy(g.key, r.items[i].key, sizeof g.key);
            if (dsq_obj_run(t->cfg.obj, &g) != DSQ_OBJ_OK)
                break;
            whole = tail_whole((const uint8_t *)g.data.data, g.data.len, a, b);
        }
        if (!whole) {
            snprintf(err, errlen, "%.120s: %.150s", g.key, g.status != DSQ_OBJ_OK ? g.msg : "its records are damaged");
            dsq_obj_req_clear(&g);
            rc = -1;
            break;
        }
        for (const uint8_t *p = (const uint8_t *)g.data.data, *end = p + g.data.len; p < end && rc == 0;) {
            dsq_wal_rec h;
            dsq_wal_rec_header(p, &h); /* checked by tail_whole */
            if (h.lsn == last + 1) {
                dsq_wal_loc loc;
                if (dsq_wal_append(w, p, h.len, h.lsn, &loc, err, errlen) != 0)
                    rc = -1;
                else
                    last = h.lsn;
            }
            p += h.len;
        }
        dsq_obj_req_clear(&g);
    }
    dsq_obj_req_clear(&r);
    uint64_t durable;
    if (rc == 0 && dsq_wal_sync(w, &durable, err, errlen) != 0)
        rc = -1;
    dsq_wal_close(w);
    if (ends_at != NULL)
        *ends_at = last > from ? last : from;
    return rc;
}

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
    batch bt = {.left = 0};
    pthread_mutex_init(&bt.mu, NULL);
    pthread_cond_init(&bt.cv, NULL);
    slot *sl = calloc(par, sizeof *sl);
    int rc = sl ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    uint64_t off = 0;
    for (size_t at = 0; at < f->nchunks && rc == 0; at += par) {
        size_t w = f->nchunks - at < par ? f->nchunks - at : par;
        bt.left = w;
        for (size_t q = 0; q < w; q++) {
            memset(&sl[q].r, 0, sizeof sl[q].r);
            sl[q].r.op = DSQ_OBJ_GET;
            dsq_chunk_key(sl[q].r.key, sizeof sl[q].r.key, db, f->id, at + q, f->chunks[at + q].len);
            sl[q].r.done = slot_done;
            sl[q].r.ud = &sl[q];
            sl[q].b = &bt;
            dsq_obj_submit(t->cfg.obj, &sl[q].r);
        }
        pthread_mutex_lock(&bt.mu);
        while (bt.left > 0)
            pthread_cond_wait(&bt.cv, &bt.mu);
        pthread_mutex_unlock(&bt.mu);
        for (size_t q = 0; q < w; q++) {
            const dsq_manifest_chunk *c = &f->chunks[at + q];
            dsq_obj_req *r = &sl[q].r;
            int bad = rc == 0 ? chunk_check(t, db, r, c->len, c->crc) : 0;
            if (bad) {
                snprintf(err, errlen, "%.120s: %.150s", r->key,
                         bad == 1 ? r->msg : bad == 2 ? "the chunk has the wrong length" : "the chunk's CRC-32 does not match");
                rc = -1;
            }
            if (rc == 0 && dsq_pwrite_full(fd, r->data.data, c->len, off) != 0) {
                snprintf(err, errlen, "write %.200s: %s", path, strerror(errno));
                rc = -1;
            }
            off += c->len;
            dsq_obj_req_clear(r);
        }
    }
    free(sl);
    pthread_cond_destroy(&bt.cv);
    pthread_mutex_destroy(&bt.mu);
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
    int rc = manifest_fetch(t, db, &m, msg, msglen);
    if (rc <= 0)
        return rc; /* none: dropped meanwhile */
    int saved = 0;
    dsq_ps_remove(tmp, e2, sizeof e2);
    if (mkdir(tmp, 0700) != 0 || restore_into(t, m, tmp, msg, msglen) != 0 ||
        tails_apply(t, db, tmp, NULL, msg, msglen) != 0) {
        saved = errno;
        rc = -1;
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
            cache_set(t, db, dsq__manifest_hold(m), false);
        }
        pthread_mutex_unlock(&t->dmu);
    }
    if (rc <= 0)
        dsq_ps_remove(tmp, e2, sizeof e2);
    if (rc < 0 && msg[0] == '\0')
        snprintf(msg, msglen, "%s", strerror(saved));
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
        if (dsq_db_name_valid(db) && stat(dir, &st) != 0 && !dsq_tier_tombstoned(t, db))
            rj.n++; /* else here already (the local copy is the newer), or dropped */
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

int dsq_tier_restore(dsq_tier *t, const char *db, uint64_t lsn, uint64_t time_us, uint64_t *at, char *err,
                     size_t errlen)
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
    int rc = manifest_fetch(t, db, &m, msg, sizeof msg);
    if (rc <= 0) {
        snprintf(err, errlen, "%s", rc == 0 ? "the object store has no such database" : msg);
        return -1;
    }
    uint64_t last = 0;
    char e2[256];
    dsq_ps_remove(tmp, e2, sizeof e2);
    msg[0] = '\0';
    /* The files, the tails after them (the log then ends at `last`), then
     * back to the point asked for. */
    rc = mkdir(tmp, 0700) != 0 || restore_into(t, m, tmp, msg, sizeof msg) != 0 ||
                 tails_apply(t, db, tmp, &last, msg, sizeof msg) != 0
             ? -1
             : 0;
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
    if (rc != 0 || rename(tmp, dir) != 0) {
        snprintf(err, errlen, "%s", msg[0] ? msg : strerror(errno));
        dsq_ps_remove(tmp, e2, sizeof e2);
        dsq__manifest_release(m);
        return -1;
    }
    dsq_fsync_dir(base);
    dsq__manifest_release(m);
    return 0;
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
    t->nbuckets = 64;
    if ((t->known = calloc(t->nbuckets, sizeof *t->known)) == NULL) {
        free(t->data_dir);
        free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
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
    if (t->cfg.threads > TIER_THREADS_MAX)
        t->cfg.threads = TIER_THREADS_MAX;
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
                queue_drop(t, de->d_name);
                n++;
            }
        }
        closedir(d);
        if (n > 0)
            DSQ_INFO("drops_pending", "databases=%zu reason=%s", n,
                     dsq_log_q("dropped before; their objects are deleted from the object store"));
    }
    if (dsq_threads_start(&t->threads, t->cfg.threads, tier_main, t) != 0) {
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
    job *j;
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
        job_free(dsq_container_of(n, job, link));
    for (size_t i = 0; i < t->nbuckets; i++)
        while (t->known[i] != NULL) {
            known *k = t->known[i];
            t->known[i] = k->next;
            dsq__manifest_release(k->m);
            free(k);
        }
    free(t->known);
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
    job *j;
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
