/* pagestore — a database's pages in its log (see pagestore.h).
 *
 * Layout of a database directory:
 *   format    "dosqld-db 1" and the page size, written once at creation
 *   wal/      the log's segments (wal.c)
 *
 * Divisions: the format file; the page index; the transaction buffer;
 * opening; reading; committing. */
#include "engine/pagestore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"

#define FORMAT_NAME "dosqld-db"
#define FORMAT_VERSION 1

/* Where the newest version of a page lies: a zstd frame in the log. */
typedef struct loc {
    uint32_t seg;  /* 0: never written (zeros) */
    uint32_t clen;
    uint64_t off;  /* of the frame, in the segment */
} loc;

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
    ZSTD_CCtx *cc;
    ZSTD_DCtx *dc;

    uint64_t lsn, lsn_time;
    uint32_t npages;       /* committed size */
    loc *index;            /* [npages_cap]: page n at index[n - 1] */
    uint32_t index_cap;

    pend pend;
    uint32_t pnpages;      /* size as the transaction sees it */
    bool resized;
    uint8_t **spare;       /* page buffers to reuse */
    size_t nspare, spare_cap;

    uint8_t *frame;        /* read buffer for one frame */
    size_t frame_cap;
    dsq_buf rec;           /* encode buffer */
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

/* ---- the format file ---------------------------------------------------------------------- */

static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

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
    sync_dir(dir);
    return 0;
}

/* ---- the page index ----------------------------------------------------------------------- */

static int index_grow(dsq_ps *ps, uint32_t npages)
{
    if (npages <= ps->index_cap)
        return 0;
    uint32_t cap = ps->index_cap ? ps->index_cap : 64;
    while (cap < npages)
        cap = cap > UINT32_MAX / 2 ? npages : cap * 2;
    loc *n = realloc(ps->index, (size_t)cap * sizeof *n);
    if (n == NULL)
        return -1;
    memset(n + ps->index_cap, 0, (size_t)(cap - ps->index_cap) * sizeof *n);
    ps->index = n;
    ps->index_cap = cap;
    return 0;
}

/* Apply a committed record to the index. */
static int index_apply(dsq_ps *ps, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc at)
{
    if (index_grow(ps, r->db_pages) != 0)
        return -1;
    if (r->db_pages < ps->npages) /* shrunk: what was cut off reads as zeros */
        memset(ps->index + r->db_pages, 0, (size_t)(ps->npages - r->db_pages) * sizeof *ps->index);
    dsq_wal_page few[16];
    dsq_wal_page *pages = r->npages <= 16 ? few : malloc((size_t)r->npages * sizeof *pages);
    if (pages == NULL)
        return -1;
    dsq_wal_rec_pages(rec, r, pages);
    for (uint32_t i = 0; i < r->npages; i++)
        if (pages[i].pgno >= 1 && pages[i].pgno <= r->db_pages)
            ps->index[pages[i].pgno - 1] = (loc){at.seg, pages[i].clen, at.off + pages[i].off};
    if (pages != few)
        free(pages);
    ps->npages = r->db_pages;
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
        if (ps->nspare < ps->spare_cap && ps->nspare < 256)
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
    ps->pnpages = ps->npages;
    ps->resized = false;
}

/* ---- opening ------------------------------------------------------------------------------ */

int dsq_ps_open(const char *dir, const dsq_ps_cfg *cfg, dsq_ps **out, char *err, size_t errlen)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    long page_size = read_format(dir, err, errlen);
    if (page_size < 0)
        return -1;
    if (page_size == 0) {
        page_size = cfg->page_size;
        if (write_format(dir, (uint32_t)page_size, err, errlen) != 0)
            return -1;
        char parent[4200];
        snprintf(parent, sizeof parent, "%s/..", dir);
        sync_dir(parent); /* the database's own entry */
    }
    dsq_ps *ps = calloc(1, sizeof *ps);
    if (ps == NULL || (ps->dir = strdup(dir)) == NULL) {
        free(ps);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ps->cfg = *cfg;
    ps->page_size = (uint32_t)page_size;
    ps->cc = ZSTD_createCCtx();
    ps->dc = ZSTD_createDCtx();
    ps->spare_cap = 256;
    ps->spare = calloc(ps->spare_cap, sizeof *ps->spare);
    if (ps->cc == NULL || ps->dc == NULL || ps->spare == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_ps_close(ps);
        return -1;
    }
    char waldir[4200];
    snprintf(waldir, sizeof waldir, "%s/wal", dir);
    dsq_wal_cfg wc = {.page_size = ps->page_size, .segment_bytes = cfg->segment_bytes};
    uint64_t last;
    if (dsq_wal_open(waldir, &wc, 0, on_record, ps, &ps->wal, &last, err, errlen) != 0) {
        dsq_ps_close(ps);
        return -1;
    }
    ps->pnpages = ps->npages;
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
    ZSTD_freeCCtx(ps->cc);
    ZSTD_freeDCtx(ps->dc);
    free(ps->index);
    free(ps->frame);
    dsq_buf_free(&ps->rec);
    free(ps->dir);
    free(ps);
}

uint32_t dsq_ps_page_size(const dsq_ps *ps) { return ps->page_size; }
uint64_t dsq_ps_lsn(const dsq_ps *ps) { return ps->lsn; }
uint64_t dsq_ps_lsn_time(const dsq_ps *ps) { return ps->lsn_time; }
uint32_t dsq_ps_npages(const dsq_ps *ps) { return ps->pnpages; }
dsq_wal *dsq_ps_wal(dsq_ps *ps) { return ps->wal; }
bool dsq_ps_dirty(const dsq_ps *ps) { return ps->pend.n > 0 || ps->resized; }
const char *dsq_ps_error(const dsq_ps *ps) { return ps->err; }
bool dsq_ps_full(const dsq_ps *ps) { return ps->full; }

/* ---- reading ------------------------------------------------------------------------------ */

int dsq_ps_read(dsq_ps *ps, uint32_t pgno, void *dst)
{
    uint8_t *p = pend_get(&ps->pend, pgno);
    if (p != NULL) {
        memcpy(dst, p, ps->page_size);
        return 0;
    }
    if (pgno == 0 || pgno > ps->pnpages || pgno > ps->npages || ps->index[pgno - 1].seg == 0) {
        memset(dst, 0, ps->page_size);
        return 0;
    }
    loc l = ps->index[pgno - 1];
    if (ps->frame_cap < l.clen) {
        uint8_t *n = realloc(ps->frame, l.clen);
        if (n == NULL) {
            set_err(ps, "out of memory");
            return -1;
        }
        ps->frame = n;
        ps->frame_cap = l.clen;
    }
    if (dsq_wal_read(ps->wal, l.seg, l.off, ps->frame, l.clen) != 0) {
        set_err(ps, "cannot read page %u from log segment %08x at %llu: %s", pgno, l.seg,
                (unsigned long long)l.off, strerror(errno));
        return -1;
    }
    if (dsq_wal_page_decode(ps->dc, ps->frame, l.clen, dst, ps->page_size) != 0) {
        set_err(ps, "page %u in log segment %08x at %llu is damaged (checksum)", pgno, l.seg,
                (unsigned long long)l.off);
        return -1;
    }
    return 0;
}

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
    if (dsq_wal_encode(&ps->rec, ps->cc, ps->cfg.zstd_level, &r, n, pgnos, pages, NULL, 0) != 0) {
        set_err(ps, "cannot encode the commit record");
        goto out;
    }
    dsq_wal_loc at;
    char err[400];
    if (dsq_wal_append(ps->wal, ps->rec.data, ps->rec.len, r.lsn, &at, err, sizeof err) != 0) {
        ps->full = errno == ENOSPC || errno == EDQUOT;
        set_err(ps, "%s", err);
        goto out;
    }
    if (index_apply(ps, &r, (const uint8_t *)ps->rec.data, at) != 0) {
        set_err(ps, "out of memory for the page index");
        goto out;
    }
    if (ps->rec.cap > (8u << 20))
        dsq_buf_free(&ps->rec); /* a big transaction's buffer goes */
    rc = 0;
out:
    free(pgnos);
    free(pages);
    pend_clear(ps);
    return rc;
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
