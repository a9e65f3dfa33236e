/* pagestore — a database's pages in its log (see pagestore.h).
 *
 * Layout of a database directory:
 *   format    "dosqld-db 1" and the page size, written once at creation
 *   wal/      the log's segments (wal.c)
 *   ckpt/     checkpoints (ckpt.c)
 *
 * A page's newest version is a frame in the log, or (once a checkpoint
 * covered it) in a checkpoint file. Opening loads the checkpoints' page
 * directories and replays the log after the newest one.
 *
 * Retention: a checkpoint whose commit is older than history_retention is
 * the oldest point time travel still reaches (R); log segments all of
 * whose records are at or before R are deleted, and once enough
 * checkpoints lie at or before R they are merged into one.
 *
 * Divisions: the format file; the page index; the transaction buffer;
 * opening; reading; committing; checkpoints; retention; views. */
#include "engine/storage/pagestore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "engine/storage/ckpt.h"
#include "engine/storage/disk.h"
#include "engine/storage/fdcache.h"
#include "engine/storage/cold.h"

#define FORMAT_NAME "dosqld-db"
#define FORMAT_VERSION 1

/* Where a version of a page lies: a zstd frame in the log or in a
 * checkpoint. */
typedef struct loc {
    uint32_t seg;  /* log segment, or CKPT | checkpoint id; 0: never written (zeros) */
    uint32_t clen;
    uint64_t off;  /* of the frame, in its file */
} loc;
#define CKPT 0x80000000u
#define MERGE_AT 8 /* checkpoints in a row at or before R, all local, that get merged into one */
#define MERGE_ALL_AT (2 * MERGE_AT) /* at or before R in all: merged whole, evicted ones fetched */

/* An index: page n's version at v[n - 1], for n <= n. */
typedef struct pindex {
    loc *v;
    uint32_t cap;
    uint32_t n;
} pindex;

typedef struct ck {
    uint32_t id;   /* ascending with the LSN */
    dsq_ckpt c;
} ck;

/* The transaction buffer: page number -> a page of bytes, open addressing. */
typedef struct pend {
    uint32_t *keys; /* 0: empty */
    uint8_t **vals;
    size_t cap, n;  /* cap a power of two */
} pend;

struct dsq_ps {
    char *dir;
    dsq_ps_cfg cfg;
    uint32_t page_size;
    dsq_wal *wal;
    dsq_fdc *fdc;          /* read descriptors of its segments and checkpoints; owned */

    uint64_t lsn, lsn_time;
    const void *extra;     /* the next commit's extra bytes (dsq_ps_set_extra) */
    size_t extra_len;
    uint32_t npages;       /* committed size */
    pindex idx;            /* the committed database: idx.n pages */
    uint32_t min_since;    /* its smallest size since the newest checkpoint */

    ck *ckpts;             /* oldest first */
    size_t nckpts, ckpt_cap;
    uint32_t next_ckpt_id;
    uint64_t log_since;    /* log bytes after the newest checkpoint */
    uint64_t oldest;       /* time travel reaches back to here (R) */

    pend pend;
    uint32_t pnpages;      /* size as the transaction sees it */
    bool resized;
    uint8_t **spare;       /* page buffers to reuse */
    size_t nspare, spare_cap;

    /* Decoded pages by frame (frames never change where they lie): SQLite
     * reads page 1's header at the start of every transaction, and a
     * decompression each time showed in point reads. */
    struct {
        uint32_t seg;      /* 0: empty */
        uint64_t off;
    } rkey[16];
    uint8_t *rpages;       /* 16 pages, allocated on first use */
    uint8_t *frame;        /* read buffer for one frame */
    size_t frame_cap;
    dsq_buf rec;           /* encode buffer */
    dsq_cold_ref **pins; /* warm chunks a pending merge of evicted checkpoints reads (kept) */
    size_t npins, pins_cap;
    bool full;             /* the last commit failed for want of space */
    char err[512];
};

static void set_err(dsq_ps *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(dsq_ps *ps, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, sizeof ps->err, fmt, ap);
    va_end(ap);
}

/* ---- zstd contexts: one pair per thread --------------------------------------------------- */

/* Stores are used by whichever worker runs their actor, one at a time; a
 * context per store cost memory per open database and, with many of them,
 * cold caches at every commit (a quarter of the CPU of commits spread over
 * 64 databases). One per thread, freed when the thread ends. */
typedef struct dsq_zctx {
    ZSTD_CCtx *cc;
    ZSTD_DCtx *dc;
} dsq_zctx;

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;

static void zctx_free(void *p)
{
    dsq_zctx *z = p;
    ZSTD_freeCCtx(z->cc);
    ZSTD_freeDCtx(z->dc);
    free(z);
}

static void zkey_make(void) { pthread_key_create(&zkey, zctx_free); }

static dsq_zctx *zctx(void)
{
    pthread_once(&zonce, zkey_make);
    dsq_zctx *z = pthread_getspecific(zkey);
    if (z != NULL)
        return z;
    z = calloc(1, sizeof *z);
    if (z == NULL || (z->cc = ZSTD_createCCtx()) == NULL || (z->dc = ZSTD_createDCtx()) == NULL ||
        pthread_setspecific(zkey, z) != 0) {
        if (z)
            zctx_free(z);
        return NULL;
    }
    return z;
}

/* ---- the format file ---------------------------------------------------------------------- */

/* Read dir/format's page size; 0 when there is no format file; -1 when
 * it is not ours. */
static long read_format(const char *dir, char *err, size_t errlen)
{
    char path[4200], text[256];
    snprintf(path, sizeof path, "%s/format", dir);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %.3000s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    unsigned version = 0, page_size = 0;
    if (sscanf(text, FORMAT_NAME " %u\npage_size %u", &version, &page_size) != 2 ||
        version != FORMAT_VERSION || page_size < 512 || page_size > 65536 ||
        (page_size & (page_size - 1)) != 0) {
        snprintf(err, errlen, "%.3000s: not a dosqld database of format %d", path, FORMAT_VERSION);
        return -1;
    }
    return (long)page_size;
}

static int write_format(const char *dir, uint32_t page_size, char *err, size_t errlen)
{
    char path[4200], tmp[4200], text[64];
    snprintf(path, sizeof path, "%s/format", dir);
    snprintf(tmp, sizeof tmp, "%s/format.tmp", dir);
    int n = snprintf(text, sizeof text, FORMAT_NAME " %d\npage_size %u\n", FORMAT_VERSION, page_size);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, (size_t)n) != n || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %.3000s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    dsq_fsync_dir(dir);
    return 0;
}

/* ---- the page index ----------------------------------------------------------------------- */

/* Make room for `npages` and set the size; entries past the size are
 * always zeros (what a shrink cut off reads as zeros if it comes back). */
static int pindex_resize(pindex *x, uint32_t npages)
{
    if (npages > x->cap) {
        uint32_t cap = x->cap ? x->cap : 64;
        while (cap < npages)
            cap = cap > UINT32_MAX / 2 ? npages : cap * 2;
        loc *n = realloc(x->v, (size_t)cap * sizeof *n);
        if (n == NULL)
            return -1;
        memset(n + x->cap, 0, (size_t)(cap - x->cap) * sizeof *n);
        x->v = n;
        x->cap = cap;
    }
    if (npages < x->n)
        memset(x->v + npages, 0, (size_t)(x->n - npages) * sizeof *x->v);
    x->n = npages;
    return 0;
}

/* Apply a committed record. */
static int pindex_record(pindex *x, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at)
{
    if (pindex_resize(x, r->db_pages) != 0)
        return -1;
    dsq_wal_page few[16];
    dsq_wal_page *pages = r->npages <= 16 ? few : malloc((size_t)r->npages * sizeof *pages);
    if (pages == NULL)
        return -1;
    dsq_wal_rec_pages(rec, r, pages);
    for (uint32_t i = 0; i < r->npages; i++)
        if (pages[i].pgno >= 1 && pages[i].pgno <= r->db_pages)
            x->v[pages[i].pgno - 1] = (loc){at.seg, pages[i].clen, at.off + pages[i].off};
    if (pages != few)
        free(pages);
    return 0;
}

/* Apply a checkpoint on top of the ones before it. */
static int pindex_ckpt(pindex *x, const ck *k)
{
    const dsq_ckpt *c = &k->c;
    if (pindex_resize(x, c->min_pages < x->n ? c->min_pages : x->n) != 0 ||
        pindex_resize(x, c->db_pages) != 0)
        return -1;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->dir[i].pgno <= c->db_pages)
            x->v[c->dir[i].pgno - 1] = (loc){CKPT | k->id, c->dir[i].clen, c->dir[i].off};
    return 0;
}

static int index_apply(dsq_ps *ps, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at)
{
    if (pindex_record(&ps->idx, r, rec, at) != 0)
        return -1;
    if (r->db_pages < ps->min_since)
        ps->min_since = r->db_pages;
    ps->lsn = r->lsn;
    ps->lsn_time = r->time_us;
    return 0;
}

static int on_record(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at, char *err,
                     size_t errlen)
{
    dsq_ps *ps = ud;
    if (index_apply(ps, r, rec, at) != 0) {
        snprintf(err, errlen, "out of memory for the page index");
        return -1;
    }
    ps->log_since += r->len;
    return 0;
}

/* ---- the transaction buffer --------------------------------------------------------------- */

static size_t pend_slot(const pend *p, uint32_t pgno)
{
    size_t i = (pgno * 2654435761u) & (p->cap - 1);
    while (p->keys[i] != 0 && p->keys[i] != pgno)
        i = (i + 1) & (p->cap - 1);
    return i;
}

static uint8_t *pend_get(const pend *p, uint32_t pgno)
{
    if (p->n == 0)
        return NULL;
    size_t i = pend_slot(p, pgno);
    return p->keys[i] == pgno ? p->vals[i] : NULL;
}

static int pend_grow(pend *p)
{
    size_t cap = p->cap ? p->cap * 2 : 64;
    uint32_t *keys = calloc(cap, sizeof *keys);
    uint8_t **vals = calloc(cap, sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    pend old = *p;
    p->keys = keys;
    p->vals = vals;
    p->cap = cap;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.keys[i] != 0) {
            size_t j = pend_slot(p, old.keys[i]);
            p->keys[j] = old.keys[i];
            p->vals[j] = old.vals[i];
        }
    }
    free(old.keys);
    free(old.vals);
    return 0;
}

static void pend_clear(dsq_ps *ps)
{
    pend *p = &ps->pend;
    for (size_t i = 0; i < p->cap && p->n > 0; i++) {
        if (p->keys[i] == 0)
            continue;
        if (ps->nspare < ps->spare_cap)
            ps->spare[ps->nspare++] = p->vals[i];
        else
            free(p->vals[i]);
        p->keys[i] = 0;
        p->vals[i] = NULL;
        p->n--;
    }
    if (p->cap > 4096) { /* a big transaction's table goes */
        free(p->keys);
        free(p->vals);
        *p = (pend){0};
    }
    ps->pnpages = ps->idx.n;
    ps->resized = false;
}

/* ---- checkpoints: loading ------------------------------------------------------------------ */

/* Warm chunks that a merge of evicted checkpoints waits for: each one
 * missed is kept (the cache does not drop a chunk someone holds) until
 * the merge is done, so that the next try finds them all. */
static void unpin_all(dsq_ps *ps)
{
    for (size_t i = 0; i < ps->npins; i++)
        ps->cfg.cold_src->release(ps->cfg.cold_src->ctx, ps->pins[i]);
    ps->npins = 0;
}

/* Keep this thread's warm miss, once. 0, or -1 out of memory. */
static int pin_miss(dsq_ps *ps)
{
    dsq_cold_ref *m = dsq_cold_miss_take();
    if (m == NULL)
        return 0;
    for (size_t i = 0; i < ps->npins; i++)
        if (ps->pins[i] == m) {
            ps->cfg.cold_src->release(ps->cfg.cold_src->ctx, m);
            return 0;
        }
    if (ps->npins == ps->pins_cap) {
        size_t cap = ps->pins_cap ? ps->pins_cap * 2 : 16;
        dsq_cold_ref **n = realloc(ps->pins, cap * sizeof *n);
        if (n == NULL) {
            ps->cfg.cold_src->release(ps->cfg.cold_src->ctx, m);
            return -1;
        }
        ps->pins = n;
        ps->pins_cap = cap;
    }
    ps->pins[ps->npins++] = m;
    return 0;
}

/* A chunk whose fetch failed is asked for again under a new reference:
 * the old one goes. */
static void unpin_failed(dsq_ps *ps)
{
    size_t n = 0;
    for (size_t i = 0; i < ps->npins; i++) {
        if (ps->cfg.cold_src->failed(ps->cfg.cold_src->ctx, ps->pins[i]))
            ps->cfg.cold_src->release(ps->cfg.cold_src->ctx, ps->pins[i]);
        else
            ps->pins[n++] = ps->pins[i];
    }
    ps->npins = n;
}

static int ck_push(dsq_ps *ps, const dsq_ckpt *c)
{
    if (ps->nckpts == ps->ckpt_cap) {
        size_t cap = ps->ckpt_cap ? ps->ckpt_cap * 2 : 8;
        ck *n = realloc(ps->ckpts, cap * sizeof *n);
        if (n == NULL)
            return -1;
        ps->ckpts = n;
        ps->ckpt_cap = cap;
    }
    ps->ckpts[ps->nckpts++] = (ck){++ps->next_ckpt_id, *c};
    ps->ckpts[ps->nckpts - 1].c.src = ps->cfg.cold_src;
    ps->ckpts[ps->nckpts - 1].c.fdc = ps->fdc;
    return 0;
}

static void ckpt_dir(const dsq_ps *ps, char *out, size_t n) { snprintf(out, n, "%s/ckpt", ps->dir); }

static int load_checkpoints(dsq_ps *ps, char *err, size_t errlen)
{
    char dir[4200];
    ckpt_dir(ps, dir, sizeof dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    char **paths;
    size_t n;
    if (dsq_ckpt_list(dir, &paths, &n, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        dsq_ckpt c;
        if (rc == 0 && dsq_ckpt_load(paths[i], ps->page_size, &c, err, errlen) == 0) {
            if (ck_push(ps, &c) != 0) {
                dsq_ckpt_close(&c, 0);
                snprintf(err, errlen, "out of memory");
                rc = -1;
            }
        } else {
            rc = -1;
        }
        free(paths[i]);
    }
    free(paths);
    for (size_t i = 0; rc == 0 && i < ps->nckpts; i++) {
        if (pindex_ckpt(&ps->idx, &ps->ckpts[i]) != 0) {
            snprintf(err, errlen, "out of memory for the page index");
            rc = -1;
        }
        ps->lsn = ps->ckpts[i].c.lsn;
        ps->lsn_time = ps->ckpts[i].c.time_us;
    }
    ps->min_since = ps->idx.n;
    return rc;
}

/* ---- opening ------------------------------------------------------------------------------ */

static size_t retain(dsq_ps *ps, uint64_t now_us);


/* The negated errno of a failure to open just reported by this module,
 * -EIO when errno names none: dsq_ps_open's return (the caller tells
 * EMFILE from the rest). */
static int open_error(void) { return errno != 0 ? -errno : -EIO; }

/* Close a store that failed to open; returns open_error(), taken first. */
static int open_failed(dsq_ps *ps)
{
    int rc = open_error();
    dsq_ps_close(ps);
    return rc;
}

int dsq_ps_open(const char *dir, const dsq_ps_cfg *cfg, dsq_ps **out, char *err, size_t errlen)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(e));
        return -e;
    }
    long page_size = read_format(dir, err, errlen);
    if (page_size < 0)
        return open_error();
    if (page_size == 0) {
        page_size = cfg->page_size;
        if (write_format(dir, (uint32_t)page_size, err, errlen) != 0)
            return open_error();
        char parent[4200];
        snprintf(parent, sizeof parent, "%s/..", dir);
        dsq_fsync_dir(parent); /* the database's own entry */
    }
    dsq_ps *ps = calloc(1, sizeof *ps);
    if (ps == NULL || (ps->dir = strdup(dir)) == NULL) {
        free(ps);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ps->cfg = *cfg;
    ps->page_size = (uint32_t)page_size;
    ps->spare_cap = 32; /* page buffers kept between transactions: 128 KiB at 4 KiB */
    ps->spare = calloc(ps->spare_cap, sizeof *ps->spare);
    ps->fdc = dsq_fdc_new(cfg->max_open_files);
    if (ps->spare == NULL || ps->fdc == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_ps_close(ps);
        return -ENOMEM;
    }
    if (load_checkpoints(ps, err, errlen) != 0)
        return open_failed(ps);
    uint64_t from = ps->lsn; /* the newest checkpoint's */
    char waldir[4200];
    snprintf(waldir, sizeof waldir, "%s/wal", dir);
    dsq_wal_cfg wc = {.page_size = ps->page_size, .segment_bytes = cfg->segment_bytes,
                      .known_durable = cfg->known_durable, .jnl = cfg->jnl, .jname = cfg->name,
                      .cold_src = cfg->cold_src, .fdc = ps->fdc};
    uint64_t last;
    if (dsq_wal_open(waldir, &wc, from, on_record, ps, &ps->wal, &last, err, errlen) != 0)
        return open_failed(ps);
    /* Time travel reaches the oldest checkpoint, or the beginning while
     * the log still starts at LSN 1. */
    uint32_t nseg;
    uint64_t bytes, first;
    dsq_wal_usage(ps->wal, &nseg, &bytes, &first);
    ps->oldest = (first == 1 || (first == 0 && ps->nckpts == 0)) ? 0
                 : ps->nckpts > 0                                ? ps->ckpts[0].c.lsn
                                                                 : 0;
    /* The window is a rule on time, not a mark kept on disk: apply it now
     * (what a sealed segment still holds past it is not reachable). */
    retain(ps, dsq_wall_ms() * 1000);
    ps->pnpages = ps->idx.n;
    *out = ps;
    return 0;
}

void dsq_ps_close(dsq_ps *ps)
{
    if (ps == NULL)
        return;
    pend_clear(ps);
    free(ps->pend.keys);
    free(ps->pend.vals);
    for (size_t i = 0; i < ps->nspare; i++)
        free(ps->spare[i]);
    free(ps->spare);
    dsq_wal_close(ps->wal);
    unpin_all(ps);
    free(ps->pins);
    for (size_t i = 0; i < ps->nckpts; i++)
        dsq_ckpt_close(&ps->ckpts[i].c, 0);
    dsq_fdc_free(ps->fdc);
    free(ps->ckpts);
    free(ps->idx.v);
    free(ps->frame);
    free(ps->rpages);
    dsq_buf_free(&ps->rec);
    free(ps->dir);
    free(ps);
}

uint32_t dsq_ps_page_size(const dsq_ps *ps) { return ps->page_size; }
uint64_t dsq_ps_lsn(const dsq_ps *ps) { return ps->lsn; }
uint64_t dsq_ps_lsn_time(const dsq_ps *ps) { return ps->lsn_time; }
uint32_t dsq_ps_npages(const dsq_ps *ps) { return ps->pnpages; }
uint64_t dsq_ps_checkpoint_lsn(const dsq_ps *ps) { return ps->nckpts ? ps->ckpts[ps->nckpts - 1].c.lsn : 0; }
dsq_wal *dsq_ps_wal(dsq_ps *ps) { return ps->wal; }
bool dsq_ps_dirty(const dsq_ps *ps) { return ps->pend.n > 0 || ps->resized; }
const char *dsq_ps_error(const dsq_ps *ps) { return ps->err; }
bool dsq_ps_full(const dsq_ps *ps) { return ps->full; }

/* ---- reading ------------------------------------------------------------------------------ */

static ck *ck_find(dsq_ps *ps, uint32_t id)
{
    size_t i = dsq_lower_bound_u32(ps->ckpts, ps->nckpts, sizeof *ps->ckpts, offsetof(ck, id), id);
    return i < ps->nckpts && ps->ckpts[i].id == id ? &ps->ckpts[i] : NULL;
}

/* Read the frame at l into ps->frame. 0 or -1. */
static int read_frame(dsq_ps *ps, uint32_t pgno, loc l)
{
    if (ps->frame_cap < l.clen) {
        uint8_t *n = realloc(ps->frame, l.clen);
        if (n == NULL) {
            set_err(ps, "out of memory");
            return -1;
        }
        ps->frame = n;
        ps->frame_cap = l.clen;
    }
    if (l.seg & CKPT) {
        ck *k = ck_find(ps, l.seg & ~CKPT);
        dsq_ckpt_entry e = {pgno, l.clen, l.off};
        char why[400] = "gone";
        if (k == NULL || dsq_ckpt_read(&k->c, &e, ps->frame, why, sizeof why) != 0) {
            set_err(ps, "cannot read page %u from checkpoint %u: %s", pgno, l.seg & ~CKPT, why);
            return -1;
        }
    } else if (dsq_wal_read(ps->wal, l.seg, l.off, ps->frame, l.clen) != 0) {
        set_err(ps, "cannot read page %u from log segment %08x at %llu: %s", pgno, l.seg,
                (unsigned long long)l.off, strerror(errno));
        return -1;
    }
    return 0;
}

static size_t rcache_slot(loc l) { return (size_t)((l.off / 8) ^ l.seg) % 16; }

/* Keep page `page` decoded under the frame at l. */
static void rcache_put(dsq_ps *ps, loc l, const void *page)
{
    if (ps->rpages == NULL && (ps->rpages = malloc((size_t)16 * ps->page_size)) == NULL)
        return;
    size_t slot = rcache_slot(l);
    memcpy(ps->rpages + slot * ps->page_size, page, ps->page_size);
    ps->rkey[slot].seg = l.seg;
    ps->rkey[slot].off = l.off;
}

/* Page pgno of a database whose index is idx[npages]. */
/* Bytes [off, off + n) of page pgno of a database whose index is
 * idx[npages]. A page is decoded into the cache and copied from there, so
 * that SQLite's small header reads copy only what they ask for. */
static int read_page(dsq_ps *ps, const loc *idx, uint32_t npages, uint32_t pgno, uint32_t off,
                     uint32_t n, void *dst)
{
    if (pgno == 0 || pgno > npages || idx[pgno - 1].seg == 0) {
        memset(dst, 0, n);
        return 0;
    }
    loc l = idx[pgno - 1];
    size_t slot = rcache_slot(l);
    if (ps->rpages && ps->rkey[slot].seg == l.seg && ps->rkey[slot].off == l.off) {
        memcpy(dst, ps->rpages + slot * ps->page_size + off, n);
        return 0;
    }
    if (read_frame(ps, pgno, l) != 0)
        return -1;
    dsq_zctx *z = zctx();
    if (z == NULL || (ps->rpages == NULL && (ps->rpages = malloc((size_t)16 * ps->page_size)) == NULL)) {
        set_err(ps, "out of memory");
        return -1;
    }
    uint8_t *page = ps->rpages + slot * ps->page_size;
    ps->rkey[slot].seg = 0; /* not valid while it is rewritten */
    if (dsq_wal_page_decode(z->dc, ps->frame, l.clen, page, ps->page_size) != 0) {
        set_err(ps, "page %u in %s %u at %llu is damaged (checksum)", pgno,
                l.seg & CKPT ? "checkpoint" : "log segment", l.seg & ~CKPT, (unsigned long long)l.off);
        return -1;
    }
    ps->rkey[slot].seg = l.seg;
    ps->rkey[slot].off = l.off;
    memcpy(dst, page + off, n);
    return 0;
}

int dsq_ps_read_part(dsq_ps *ps, uint32_t pgno, uint32_t off, uint32_t n, void *dst)
{
    uint8_t *p = pend_get(&ps->pend, pgno);
    if (p != NULL) {
        memcpy(dst, p + off, n);
        return 0;
    }
    if (pgno > ps->pnpages) {
        memset(dst, 0, n);
        return 0;
    }
    return read_page(ps, ps->idx.v, ps->idx.n, pgno, off, n, dst);
}

int dsq_ps_read(dsq_ps *ps, uint32_t pgno, void *dst) { return dsq_ps_read_part(ps, pgno, 0, ps->page_size, dst); }

/* ---- writing and committing --------------------------------------------------------------- */

int dsq_ps_write(dsq_ps *ps, uint32_t pgno, const void *src)
{
    if (pgno == 0)
        return -1;
    pend *p = &ps->pend;
    uint8_t *page = pend_get(p, pgno);
    if (page == NULL) {
        if ((uint64_t)(p->n + 1) * ps->page_size > ps->cfg.max_txn_bytes) {
            set_err(ps, "the transaction changes more than %llu bytes of pages",
                    (unsigned long long)ps->cfg.max_txn_bytes);
            return -1;
        }
        if ((p->n + 1) * 2 > p->cap && pend_grow(p) != 0) {
            set_err(ps, "out of memory");
            return -1;
        }
        page = ps->nspare > 0 ? ps->spare[--ps->nspare] : malloc(ps->page_size);
        if (page == NULL) {
            set_err(ps, "out of memory");
            return -1;
        }
        size_t i = pend_slot(p, pgno);
        p->keys[i] = pgno;
        p->vals[i] = page;
        p->n++;
    }
    memcpy(page, src, ps->page_size);
    if (pgno > ps->pnpages) {
        ps->pnpages = pgno;
        ps->resized = true;
    }
    return 0;
}

void dsq_ps_truncate(dsq_ps *ps, uint32_t npages)
{
    if (npages != ps->pnpages) {
        ps->pnpages = npages;
        ps->resized = true;
    }
}

void dsq_ps_discard(dsq_ps *ps) { pend_clear(ps); }

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void dsq_ps_set_extra(dsq_ps *ps, const void *p, size_t n)
{
    ps->extra = p;
    ps->extra_len = n;
}

int dsq_ps_commit(dsq_ps *ps)
{
    ps->full = false;
    if (!dsq_ps_dirty(ps))
        return 0;
    pend *p = &ps->pend;
    uint32_t *pgnos = malloc((p->n + 1) * sizeof *pgnos);
    const uint8_t **pages = malloc((p->n + 1) * sizeof *pages);
    int rc = -1;
    if (pgnos == NULL || pages == NULL) {
        set_err(ps, "out of memory");
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->cap; i++)
        if (p->keys[i] != 0 && p->keys[i] <= ps->pnpages)
            pgnos[n++] = p->keys[i];
    qsort(pgnos, n, sizeof *pgnos, cmp_u32);
    for (size_t i = 0; i < n; i++)
        pages[i] = pend_get(p, pgnos[i]);
    dsq_wal_rec r = {.lsn = ps->lsn + 1, .time_us = dsq_wall_ms() * 1000, .db_pages = ps->pnpages,
                     .page_size = ps->page_size};
    if (r.time_us <= ps->lsn_time)
        r.time_us = ps->lsn_time + 1; /* commit times strictly increase, as LSNs do */
    dsq_buf_reset(&ps->rec);
    dsq_zctx *z = zctx();
    if (z == NULL || ps->extra_len > UINT32_MAX ||
        dsq_wal_encode(&ps->rec, z->cc, ps->cfg.zstd_level, &r, n, pgnos, pages, ps->extra,
                       (uint32_t)ps->extra_len) != 0) {
        set_err(ps, "cannot encode the commit record");
        goto out;
    }
    dsq_wal_loc at;
    char err[400];
    int arc = dsq_wal_append(ps->wal, ps->rec.data, ps->rec.len, r.lsn, &at, err, sizeof err);
    if (arc != 0) {
        ps->full = arc == -ENOSPC || arc == -EDQUOT;
        set_err(ps, "%s", err);
        goto out;
    }
    if (index_apply(ps, &r, (const uint8_t *)ps->rec.data, at) != 0) {
        set_err(ps, "out of memory for the page index");
        goto out;
    }
    ps->log_since += r.len;
    if (ps->cfg.on_commit != NULL)
        ps->cfg.on_commit(ps->cfg.on_commit_ud, r.lsn, ps->rec.data, ps->rec.len);
    /* SQLite reads page 1's header at the start of every transaction: keep
     * it decoded under its new frame (the other pages stay in SQLite's own
     * cache; copying them too cost more than it saved). */
    if (n > 0 && pgnos[0] == 1)
        rcache_put(ps, ps->idx.v[0], pages[0]);
    if (ps->rec.cap > (8u << 20))
        dsq_buf_free(&ps->rec); /* a big transaction's buffer goes */
    rc = 0;
out:;
    int saved = errno; /* the VFS gives it to the engine (EMFILE...) */
    free(pgnos);
    free(pages);
    pend_clear(ps);
    errno = saved;
    return rc;
}

int dsq_ps_apply(dsq_ps *ps, const void *rec, size_t len)
{
    ps->full = false;
    const uint8_t *p = rec;
    dsq_wal_rec r;
    if (dsq_ps_dirty(ps)) {
        set_err(ps, "a transaction is open");
        return -1;
    }
    if (len < DSQ_WAL_REC_HDR || dsq_wal_rec_header(p, &r) != 0 || r.len != len || !dsq_wal_rec_valid(p, &r)) {
        set_err(ps, "not a whole, intact log record");
        return -1;
    }
    if (r.lsn != ps->lsn + 1) {
        set_err(ps, "record %llu does not follow the last one here, %llu", (unsigned long long)r.lsn,
                (unsigned long long)ps->lsn);
        return -1;
    }
    if (r.page_size != ps->page_size) {
        set_err(ps, "record %llu has pages of %u bytes; this database's are %u bytes (storage.page_size must be "
                    "the same on every node)",
                (unsigned long long)r.lsn, r.page_size, ps->page_size);
        return -1;
    }
    dsq_wal_loc at;
    char err[400];
    int arc = dsq_wal_append(ps->wal, rec, len, r.lsn, &at, err, sizeof err);
    if (arc != 0) {
        ps->full = arc == -ENOSPC || arc == -EDQUOT;
        set_err(ps, "%s", err);
        return -1;
    }
    if (index_apply(ps, &r, p, at) != 0) {
        set_err(ps, "out of memory for the page index");
        return -1;
    }
    ps->log_since += r.len;
    ps->pnpages = ps->idx.n;
    return 0;
}

/* ---- removing ----------------------------------------------------------------------------- */

static int remove_tree(const char *path, char *err, size_t errlen)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        if (errno == ENOTDIR)
            goto file;
        snprintf(err, errlen, "cannot read %.3000s: %s", path, strerror(errno));
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        rc = remove_tree(sub, err, errlen);
    }
    closedir(d);
    if (rc == 0 && rmdir(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %.3000s: %s", path, strerror(errno));
        return -1;
    }
    return rc;
file:
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %.3000s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int dsq_ps_remove(const char *dir, char *err, size_t errlen) { return remove_tree(dir, err, errlen); }

/* ---- checkpoints: writing -------------------------------------------------------------------- */

bool dsq_ps_checkpoint_due(const dsq_ps *ps) { return ps->log_since >= ps->cfg.checkpoint_bytes; }
uint64_t dsq_ps_log_since(const dsq_ps *ps) { return ps->log_since; }

int dsq_ps_checkpoint(dsq_ps *ps, char *err, size_t errlen)
{
    if (dsq_ps_dirty(ps)) {
        snprintf(err, errlen, "a transaction is open");
        return -1;
    }
    uint64_t last = ps->nckpts ? ps->ckpts[ps->nckpts - 1].c.lsn : 0;
    if (ps->lsn == last)
        return 0;
    /* A checkpoint holds only what is durable in the log. */
    uint64_t durable;
    if (dsq_wal_sync(ps->wal, &durable, err, errlen) != 0)
        return -1;
    uint32_t n = 0;
    for (uint32_t p = 0; p < ps->idx.n; p++)
        n += ps->idx.v[p].seg != 0 && !(ps->idx.v[p].seg & CKPT);
    char dir[4200];
    ckpt_dir(ps, dir, sizeof dir);
    dsq_ckpt_writer *w = dsq_ckpt_begin(dir, ps->lsn, ps->lsn_time, ps->idx.n, ps->min_since,
                                        ps->page_size, n, err, errlen);
    if (w == NULL)
        return -1;
    for (uint32_t p = 0; p < ps->idx.n; p++) {
        loc l = ps->idx.v[p];
        if (l.seg == 0 || (l.seg & CKPT))
            continue;
        if (read_frame(ps, p + 1, l) != 0 || dsq_ckpt_add(w, p + 1, ps->frame, l.clen) != 0) {
            snprintf(err, errlen, "checkpoint: %s", ps->err[0] ? ps->err : "cannot write a page");
            dsq_ckpt_abort(w);
            return -1;
        }
    }
    dsq_ckpt c;
    if (dsq_ckpt_finish(w, &c, err, errlen) != 0)
        return -1;
    if (ck_push(ps, &c) != 0) {
        dsq_ckpt_close(&c, 1);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const ck *k = &ps->ckpts[ps->nckpts - 1];
    for (uint32_t i = 0; i < k->c.n; i++)
        ps->idx.v[k->c.dir[i].pgno - 1] = (loc){CKPT | k->id, k->c.dir[i].clen, k->c.dir[i].off};
    ps->log_since = 0;
    ps->min_since = ps->idx.n;
    return 0;
}

/* ---- retention ------------------------------------------------------------------------------ */

/* Merge checkpoints j..k into one: each page's newest version among them,
 * and their smallest size, with ckpts[k]'s LSN and name. Layered on
 * 0..j-1 it is the database as of ckpts[k] (with j = 0, on its own); the
 * ones between are not reachable any more (k is at or before R). A page
 * of an evicted checkpoint is read through the warm cache: when one is
 * not there yet, the merge waits for the next try (its chunks fetched
 * and kept meanwhile) and answers 0. ckpts[k] may be evicted only with
 * j = 0: the merged file, local, takes its name and drops its sidecar
 * (dsq_ckpt_finish), so the object store's copy of that name is the old
 * one until the next upload, which sends the new one (a new version). */
static int merge(dsq_ps *ps, size_t j, size_t k, char *err, size_t errlen)
{
    unpin_failed(ps);
    pindex x = {0};
    uint32_t min_pages = UINT32_MAX;
    for (size_t i = j; i <= k; i++) {
        if (pindex_ckpt(&x, &ps->ckpts[i]) != 0) {
            free(x.v);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (ps->ckpts[i].c.min_pages < min_pages)
            min_pages = ps->ckpts[i].c.min_pages;
    }
    if (j == 0)
        min_pages = 0; /* the whole database: nothing below it */
    uint32_t n = 0;
    for (uint32_t p = 0; p < x.n; p++)
        n += x.v[p].seg != 0;
    const dsq_ckpt *top = &ps->ckpts[k].c;
    char dir[4200];
    ckpt_dir(ps, dir, sizeof dir);
    dsq_ckpt_writer *w = dsq_ckpt_begin(dir, top->lsn, top->time_us, top->db_pages, min_pages, ps->page_size,
                                        n, err, errlen);
    if (w == NULL) {
        free(x.v);
        return -1;
    }
    /* After a miss, only the evicted pages are read (each miss starts its
     * chunk's fetch); nothing more is written. */
    bool missed = false;
    dsq_cold_miss_clear(ps->cfg.cold_src);
    for (uint32_t p = 0; p < x.n; p++) {
        if (x.v[p].seg == 0)
            continue;
        if (missed && ck_find(ps, x.v[p].seg & ~CKPT)->c.cold == NULL)
            continue;
        if (read_frame(ps, p + 1, x.v[p]) != 0) {
            if (dsq_cold_missed()) {
                if (pin_miss(ps) != 0) {
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                if (!missed)
                    dsq_ckpt_abort(w);
                missed = true;
                continue;
            }
            snprintf(err, errlen, "merging checkpoints: %s", ps->err);
            goto fail;
        }
        if (!missed && dsq_ckpt_add(w, p + 1, ps->frame, x.v[p].clen) != 0) {
            snprintf(err, errlen, "merging checkpoints: cannot write");
            goto fail;
        }
    }
    free(x.v);
    if (missed)
        return 0; /* again at the next checkpoint or close, with the chunks here */
    dsq_ckpt c;
    /* The merged file takes the newest one's name (the same LSN): the
     * rename replaces it whole; the older ones go after. */
    if (dsq_ckpt_finish(w, &c, err, errlen) != 0)
        return -1;
    unpin_all(ps);
    uint32_t base_id = ps->ckpts[j].id, top_id = ps->ckpts[k].id;
    for (size_t i = j; i <= k; i++)
        dsq_ckpt_close(&ps->ckpts[i].c, i < k); /* file k's name is the merged one's now */
    ps->ckpts[j] = (ck){base_id, c};
    ps->ckpts[j].c.src = ps->cfg.cold_src;
    ps->ckpts[j].c.fdc = ps->fdc;
    memset(ps->rkey, 0, sizeof ps->rkey); /* the merged file reuses base_id's frames' names */
    memmove(ps->ckpts + j + 1, ps->ckpts + k + 1, (ps->nckpts - k - 1) * sizeof *ps->ckpts);
    ps->nckpts -= k - j;
    /* Pages whose newest version was in a merged file now read from the
     * merged one (which has every such page: a later truncation in j..k
     * would have moved it). */
    const ck *b = &ps->ckpts[j];
    for (uint32_t p = 0; p < ps->idx.n; p++) {
        loc *l = &ps->idx.v[p];
        uint32_t id = l->seg & ~CKPT;
        if (!(l->seg & CKPT) || id < base_id || id > top_id)
            continue;
        const dsq_ckpt_entry *e = dsq_ckpt_find(&b->c, p + 1);
        *l = e ? (loc){CKPT | base_id, e->clen, e->off} : (loc){0, 0, 0};
    }
    return 0;
fail:
    if (!missed)
        dsq_ckpt_abort(w);
    free(x.v);
    return -1;
}

/* The retention point at now_us: the newest checkpoint older than the
 * window becomes the oldest LSN reachable, and the log before it goes.
 * Returns that checkpoint's index, or SIZE_MAX when none is that old. */
static size_t retain(dsq_ps *ps, uint64_t now_us)
{
    size_t k = SIZE_MAX;
    for (size_t i = 0; i < ps->nckpts; i++)
        if (ps->ckpts[i].c.time_us + ps->cfg.retention_us <= now_us)
            k = i;
    if (k == SIZE_MAX)
        return k;
    uint64_t r = ps->ckpts[k].c.lsn;
    if (r > ps->oldest) {
        /* The log a reader still needs stays (time travel reaches no
         * further for it: the window's checkpoint is the oldest). */
        uint64_t held = ps->cfg.hold != NULL ? ps->cfg.hold(ps->cfg.hold_ud, ps->cfg.name) : UINT64_MAX;
        dsq_wal_retire(ps->wal, r < held ? r : held);
        ps->oldest = r;
    } else if (ps->cfg.hold != NULL) {
        /* A hold let go since: what it kept goes now. */
        uint64_t held = ps->cfg.hold(ps->cfg.hold_ud, ps->cfg.name);
        dsq_wal_retire(ps->wal, r < held ? r : held);
    }
    return k;
}

int dsq_ps_maintain(dsq_ps *ps, uint64_t now_us, char *err, size_t errlen)
{
    size_t k = retain(ps, now_us);
    if (k == SIZE_MAX || k == 0)
        goto none;
    /* Once too many lie before R, all of them are merged, the evicted
     * ones' pages fetched (a database closed, evicted and opened again
     * many times would keep every checkpoint otherwise). Up to R itself,
     * evicted or not: a database whose every session is shorter than the
     * window has, while open, no local checkpoint at or before R, and
     * would never merge. This comes first: a merge of the local ones
     * alone would release the chunks a pending one waits for, and bring
     * the count back under the mark without ever merging the evicted
     * ones. Until then, the local ones above the newest evicted one are
     * merged among themselves. */
    if (k + 1 >= MERGE_ALL_AT && ps->cfg.cold_src != NULL)
        return merge(ps, 0, k, err, errlen);
    /* Those into the newest of them, which is local. */
    while (k > 0 && ps->ckpts[k].c.cold != NULL)
        k--;
    if (k == 0)
        goto none;
    size_t j = k + 1;
    while (j > 0 && ps->ckpts[j - 1].c.cold == NULL)
        j--;
    if (k + 1 - j >= MERGE_AT)
        return merge(ps, j, k, err, errlen);
none:
    unpin_all(ps); /* a merge that waited (if any) is not due any more */
    return 0;
}

uint64_t dsq_ps_oldest(const dsq_ps *ps) { return ps->oldest; }

void dsq_ps_usage(dsq_ps *ps, dsq_ps_usage_t *u)
{
    memset(u, 0, sizeof *u);
    dsq_wal_usage(ps->wal, &u->segments, &u->log_bytes, &u->log_first_lsn);
    u->checkpoints = (uint32_t)ps->nckpts;
    for (size_t i = 0; i < ps->nckpts; i++)
        u->checkpoint_bytes += ps->ckpts[i].c.bytes;
    u->oldest_lsn = ps->oldest;
    u->pages = ps->idx.n;
}

unsigned dsq_ps_read_fds(dsq_ps *ps) { return dsq_fdc_open_count(ps->fdc); }

/* ---- views: the database as of an LSN ----------------------------------------------------- */

struct dsq_ps_view {
    dsq_ps *ps;
    pindex x;
    uint64_t lsn;
};

static int view_record(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at, char *err,
                       size_t errlen)
{
    dsq_ps_view *v = ud;
    if (pindex_record(&v->x, r, rec, at) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int dsq_ps_view_open(dsq_ps *ps, uint64_t lsn, dsq_ps_view **out, char *err, size_t errlen)
{
    *out = NULL;
    if (lsn > ps->lsn) {
        snprintf(err, errlen, "LSN %llu is after the last commit (%llu)", (unsigned long long)lsn,
                 (unsigned long long)ps->lsn);
        return -1;
    }
    if (lsn < ps->oldest) {
        snprintf(err, errlen, "LSN %llu is older than the history kept: the oldest available is %llu",
                 (unsigned long long)lsn, (unsigned long long)ps->oldest);
        return -1;
    }
    dsq_ps_view *v = calloc(1, sizeof *v);
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    v->ps = ps;
    v->lsn = lsn;
    uint64_t from = 0;
    for (size_t i = 0; i < ps->nckpts && ps->ckpts[i].c.lsn <= lsn; i++) {
        if (pindex_ckpt(&v->x, &ps->ckpts[i]) != 0) {
            snprintf(err, errlen, "out of memory");
            dsq_ps_view_close(v);
            return -1;
        }
        from = ps->ckpts[i].c.lsn;
    }
    if (from < lsn && dsq_wal_scan(ps->wal, from, lsn, view_record, v, err, errlen) != 0) {
        dsq_ps_view_close(v);
        return -1;
    }
    *out = v;
    return 0;
}

int dsq_ps_view_read_part(dsq_ps_view *v, uint32_t pgno, uint32_t off, uint32_t n, void *dst)
{
    return read_page(v->ps, v->x.v, v->x.n, pgno, off, n, dst);
}

uint32_t dsq_ps_view_npages(const dsq_ps_view *v) { return v->x.n; }
uint64_t dsq_ps_view_lsn(const dsq_ps_view *v) { return v->lsn; }
dsq_ps *dsq_ps_view_store(dsq_ps_view *v) { return v->ps; }

void dsq_ps_view_close(dsq_ps_view *v)
{
    if (v == NULL)
        return;
    free(v->x.v);
    free(v);
}

typedef struct time_find {
    uint64_t t, best;
    bool past;
} time_find;

static int time_record(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at, char *err,
                       size_t errlen)
{
    time_find *f = ud;
    if (r->time_us <= f->t)
        f->best = r->lsn;
    else
        f->past = true;
    return 0;
}

int dsq_ps_lsn_at(dsq_ps *ps, uint64_t time_us, uint64_t *lsn, char *err, size_t errlen)
{
    if (time_us >= ps->lsn_time) {
        *lsn = ps->lsn;
        return 0;
    }
    /* The newest checkpoint at or before the time, then the log after it. */
    time_find f = {.t = time_us};
    uint64_t from = 0, to = ps->lsn;
    bool found = false;
    for (size_t i = 0; i < ps->nckpts; i++) {
        if (ps->ckpts[i].c.time_us <= time_us) {
            from = f.best = ps->ckpts[i].c.lsn;
            found = true;
        } else {
            to = ps->ckpts[i].c.lsn;
            break;
        }
    }
    if ((found && from < ps->oldest) || (!found && ps->oldest > 0)) {
        snprintf(err, errlen, "that time is older than the history kept: the oldest available LSN is %llu",
                 (unsigned long long)ps->oldest);
        return -1;
    }
    if (from < to && dsq_wal_scan(ps->wal, from, to, time_record, &f, err, errlen) != 0)
        return -1;
    *lsn = f.best; /* 0 (the empty database) when before the first commit */
    return 0;
}
