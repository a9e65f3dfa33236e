/* upload — what goes up to the object store: the files of a database
 * offered (listed from its directory), their chunks, then the manifest
 * naming them, then the deletion of the objects the manifest no longer
 * names; drops (a database's objects deleted) and their tombstones; the
 * upload threads and their queue (tier.h has the model).
 *
 * A few threads take the queued jobs (an offer of a database's files, or
 * a drop): jobs of different databases at once, those of one database in
 * the order they came. A job reads chunks from the local files and waits
 * for the object store (several chunk uploads of a database at once).
 *
 * Divisions: listing a database's files; uploads; tombstones; offers;
 * drops; the threads. */
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
#include <unistd.h>

#include "common/base64.h"
#include "common/list.h"
#include "common/log.h"
#include "common/threads.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"

#define TIER_RETRY_MS 1000      /* a failed job's first backoff ceiling */
#define TIER_RETRY_MAX_MS 60000 /* and its cap */

/* ---- listing a database's files ------------------------------------------------------------------- */

static int add_file(dsq_tier_file **out, size_t *n, size_t *cap, const char *dir, const char *name, uint64_t limit,
                    bool append_only)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        dsq_tier_file *nf = realloc(*out, *cap * sizeof *nf);
        if (nf == NULL)
            return -ENOMEM;
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
    int rc = add_file(out, n, &cap, dir, "format", UINT64_MAX, false);
    if (rc != 0)
        goto fail;
    static const char *const subs[] = {"ckpt", "wal"};
    for (int s = 0; s < 2; s++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, subs[s]);
        DIR *d = opendir(path);
        if (d == NULL) {
            if (errno == ENOENT)
                continue;
            rc = -errno;
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
                if ((rc = add_file(out, n, &cap, dir, name, UINT64_MAX, false)) != 0) {
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
                if ((rc = add_file(out, n, &cap, dir, name, !whole && seq == seg ? seg_size : UINT64_MAX, true)) != 0) {
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
    return rc;
}

/* ---- uploads ------------------------------------------------------------------------------------ */

typedef struct upload {
    char path[4096];
    uint64_t off, len;
    char key[DSQ_OBJ_KEY_MAX + 1];
    dsq_manifest_chunk *chunk; /* its CRC-32 to fill */
} upload;

typedef struct slot {
    dsq_obj_req r;
    char *buf;                 /* owned: the chunk's bytes */
} slot;

/* Read upload u's bytes into *buf (made for them): 0; 1 its file is gone
 * or shorter (the offer is stale); -1 (msg). */
static int upload_read(const upload *u, char **buf, char *msg, size_t msglen)
{
    free(*buf);
    if ((*buf = malloc(u->len ? u->len : 1)) == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    int fd = open(u->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1; /* gone since it was offered */
        snprintf(msg, msglen, "open %.200s: %s", u->path, strerror(errno));
        return -1;
    }
    int got = dsq_pread_full(fd, *buf, u->len, u->off);
    close(fd);
    if (got > 0)
        return 1; /* shorter than offered */
    if (got < 0) {
        snprintf(msg, msglen, "read %.200s: %s", u->path, strerror(-got));
        return -1;
    }
    return 0;
}

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
    dsq_tier_batch b;
    dsq__tier_batch_init(&b);
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += par) {
        size_t m = n - at < par ? n - at : par;
        size_t started = 0;
        for (size_t i = 0; i < m && rc == 0; i++) {
            upload *u = &ups[at + i];
            slot *s = &slots[i];
            if ((rc = upload_read(u, &s->buf, msg, msglen)) != 0)
                break;
            u->chunk->crc = dsq_crc32(s->buf, u->len);
            memset(&s->r, 0, sizeof s->r);
            s->r.op = DSQ_OBJ_PUT;
            dsq_strlcpy(s->r.key, u->key, sizeof s->r.key);
            s->r.body = s->buf;
            s->r.body_len = u->len;
            started++;
            dsq__tier_batch_submit(t, &b, &s->r);
        }
        dsq__tier_batch_wait(&b);
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
    dsq__tier_batch_destroy(&b);
    return rc;
}

/* Delete the objects named by `keys`; returns how many failed (msg: why
 * the first did). */
size_t dsq__tier_delete_keys(dsq_tier *t, json_t *keys, char *msg, size_t msglen)
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
    int rc = fd < 0 ? -errno : dsq_pwrite_full(fd, text, sizeof text - 1, 0);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %.300s: %s", p, strerror(-rc));
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
    dsq_tier_job *x;
    dsq_queue_foreach(x, &t->jobs, link)
        again |= x->kind == DSQ_TIER_DROP && strcmp(x->db, db) == 0;
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

/* ---- offers ------------------------------------------------------------------------------------- */

/* One offer's work: the manifest it makes, and the chunks that manifest
 * names and the store does not have yet. */
typedef struct offer {
    dsq_tier *t;
    const dsq_tier_job *j;
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
    int got = fd < 0 ? (errno == ENOENT ? 1 : -errno) : dsq_pread_full(fd, buf, (size_t)f->size, 0);
    if (fd >= 0)
        close(fd);
    if (got != 0) {
        if (got < 0)
            snprintf(o->msg, o->msglen, "read %.200s: %s", path, strerror(-got));
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
    dsq__manifest_key(r.key, sizeof r.key, m->db);
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
    dsq__manifest_chunk_keys(old, gone);
    dsq__manifest_chunk_keys(nm, keep);
    const char *key;
    json_t *v;
    json_object_foreach(keep, key, v)
        json_object_del(gone, key);
    json_decref(keep);
    dsq__tier_cache_set(t, nm->db, dsq__manifest_hold(nm), true);
    dsq__tier_delete_keys(t, gone, NULL, 0); /* a failure leaves an orphan, named by no manifest */
    json_decref(gone);
    if (t->cfg.tails)
        dsq__tier_tails_trim(t, nm->db, nm->lsn);
}

/* Offer j against the manifest the store has (old). 0 done, 1 stale
 * (dropped), -1 failed (retry later; msg). */
static int offer_against(dsq_tier *t, dsq_tier_job *j, const dsq_manifest *old, char *msg, size_t msglen)
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
    o.nm->epoch = j->epoch;
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

static int do_offer(dsq_tier *t, dsq_tier_job *j, char *msg, size_t msglen)
{
    if (j->epoch != 0) {
        /* Replicated: the manifest the store has may be another node's
         * (a primary before this one, or after it): read it again, and
         * put nothing over one of a newer epoch (this node is no longer
         * the primary, whether it knows it yet or not). */
        dsq_manifest *m = NULL;
        int rc = dsq__tier_manifest_fetch(t, j->db, &m, msg, msglen);
        if (rc < 0)
            return -1;
        if (rc == 1 && m->epoch > j->epoch) {
            DSQ_WARN("upload_fenced", "db=%s epoch=%llu store_epoch=%llu", j->db, (unsigned long long)j->epoch,
                     (unsigned long long)m->epoch);
            dsq__tier_cache_set(t, j->db, m, true);
            return 1;
        }
        if (rc == 1 && dsq__tier_cache_set(t, j->db, m, true) != 0) {
            snprintf(msg, msglen, "out of memory");
            return -1;
        }
    }
    dsq_manifest *old = dsq__tier_manifest_get(t, j->db, msg, msglen);
    if (old == NULL)
        return -1;
    int rc = offer_against(t, j, old, msg, msglen);
    dsq__manifest_release(old);
    return rc;
}

/* ---- drops -------------------------------------------------------------------------------------- */

static int do_drop(dsq_tier *t, dsq_tier_job *j, char *msg, size_t msglen)
{
    dsq_manifest *cached = dsq__tier_cache_get(t, j->db);
    if (cached != NULL && cached->next > 0)
        dsq__tier_reborn_above(t, j->db, cached->next - 1);
    dsq__manifest_release(cached);
    dsq__tier_cache_forget(t, j->db);
    /* The manifest first: no restore finds half a database. */
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_DELETE;
    dsq__manifest_key(r.key, sizeof r.key, j->db);
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
            dsq__tier_reborn_above(t, j->db, id);
    }
    dsq_obj_req_clear(&r);
    size_t left = dsq__tier_delete_keys(t, keys, msg, msglen);
    json_decref(keys);
    if (left > 0)
        return -1; /* the tombstone stays until the store has none of them */
    tomb_clear(t, j->db);
    return 0;
}

/* ---- the threads -------------------------------------------------------------------------------- */

void dsq__tier_job_free(dsq_tier_job *j)
{
    if (j) {
        free(j->files);
        free(j);
    }
}

static bool has_job_for(dsq_tier *t, const char *db)
{
    dsq_tier_job *j;
    dsq_queue_foreach(j, &t->jobs, link)
        if (strcmp(j->db, db) == 0)
            return true;
    return false;
}

/* A drop that failed goes back before the jobs of its database that came
 * after it: the offers of a database made again under the name go up only
 * once the old one's objects are gone. */
static void insert_drop(dsq_tier *t, dsq_tier_job *j)
{
    dsq_qnode *prev = NULL;
    for (dsq_qnode *n = dsq_queue_first(&t->jobs); n; prev = n, n = n->next)
        if (strcmp(dsq_container_of(n, dsq_tier_job, link)->db, j->db) == 0)
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
static bool behind_another(const dsq_tier *t, const dsq_tier_job *j)
{
    for (const dsq_qnode *n = dsq_queue_first(&t->jobs); n != &j->link; n = n->next)
        if (strcmp(dsq_container_of(n, dsq_tier_job, link)->db, j->db) == 0)
            return true;
    return false;
}

/* One of the upload threads: jobs of different databases run at once (an
 * object store answers in milliseconds; many databases wait on it in
 * parallel), the jobs of one database one after another. */
void *dsq__tier_main(void *arg)
{
    dsq_thread_name("dsq-tier");
    dsq_tier *t = arg;
    /* Copies are background work: commits and queries come first. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        uint64_t now = dsq_now_ms(), wake = 0;
        dsq_tier_job *j = NULL;
        dsq_qnode *prev = NULL;
        for (dsq_qnode *n = dsq_queue_first(&t->jobs); n; prev = n, n = n->next) {
            dsq_tier_job *c = dsq_container_of(n, dsq_tier_job, link);
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
        int rc = j->kind == DSQ_TIER_OFFER ? do_offer(t, j, msg, sizeof msg) : do_drop(t, j, msg, sizeof msg);
        if (rc < 0)
            dsq__tier_note_error(t, j->db, msg);
        pthread_mutex_lock(&t->mu);
        t->active[mine][0] = '\0';
        t->busy--;
        if (rc < 0 && !(j->kind == DSQ_TIER_OFFER && has_job_for(t, j->db)) && !t->stopping) {
            /* Again later, after a backoff (a drop always: its tombstone
             * waits for it; a newer offer replaces this one). */
            j->fails++;
            j->not_before_ms = dsq_now_ms() + retry_wait_ms(j->fails);
            if (j->kind == DSQ_TIER_DROP)
                insert_drop(t, j);
            else
                dsq_queue_push(&t->jobs, &j->link);
        } else {
            dsq__tier_job_free(j);
        }
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void queue(dsq_tier *t, dsq_tier_job *j)
{
    pthread_mutex_lock(&t->mu);
    /* The newest offer of a database replaces one not yet begun; a drop
     * replaces its offers. */
    dsq_qnode *prev = NULL, *n = dsq_queue_first(&t->jobs);
    while (n != NULL) {
        dsq_tier_job *o = dsq_container_of(n, dsq_tier_job, link);
        n = n->next;
        if (strcmp(o->db, j->db) == 0 && o->kind == DSQ_TIER_OFFER) {
            dsq_queue_remove_after(&t->jobs, prev);
            dsq__tier_job_free(o);
        } else {
            prev = &o->link;
        }
    }
    dsq_queue_push(&t->jobs, &j->link);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void dsq_tier_offer(dsq_tier *t, const char *db, uint64_t lsn, uint64_t epoch, const dsq_tier_file *files,
                    size_t n)
{
    if (t == NULL)
        return;
    dsq_tier_job *j = calloc(1, sizeof *j);
    if (j == NULL || (n && (j->files = malloc(n * sizeof *files)) == NULL)) {
        dsq__tier_job_free(j);
        dsq__tier_note_error(t, db, "out of memory queueing an upload");
        return;
    }
    j->kind = DSQ_TIER_OFFER;
    dsq_strlcpy(j->db, db, sizeof j->db);
    j->lsn = lsn;
    j->epoch = epoch;
    if (n)
        memcpy(j->files, files, n * sizeof *files);
    j->n = n;
    queue(t, j);
}

void dsq__tier_queue_drop(dsq_tier *t, const char *db)
{
    dsq_tier_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        dsq__tier_note_error(t, db, "out of memory queueing a drop (it is tried again at the next start)");
        return;
    }
    j->kind = DSQ_TIER_DROP;
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
        dsq__tier_queue_drop(t, db);
    }
    pthread_mutex_unlock(&t->dmu);
    return rc;
}
