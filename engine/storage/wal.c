/* wal — segments of checksummed commit records (see wal.h).
 *
 * Divisions: byte order; records; segments on disk; opening and recovery;
 * appending, syncing, reading; retiring and scanning. */
#include "engine/storage/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/check.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/storage/fdcache.h"
#include "engine/storage/journal.h"
#include "engine/storage/cold.h"

#define REC_MAGIC 0x52515344u      /* "DSQR" read as little-endian bytes */
#define SEG_MAGIC "DSQWAL01"
#define REC_VERSION 1
#define DIR_ENTRY 8                /* pgno, clen */

/* ---- byte order: everything on disk is little-endian ------------------------------------ */

/* ---- records ---------------------------------------------------------------------------- */

/* Header: magic u32 | version u16 | flags u16 | len u32 | npages u32 |
 * lsn u64 | time_us u64 | db_pages u32 | page_size u32 | extra_len u32 |
 * header crc u32 (of bytes 0..43). Then npages x (pgno u32, clen u32), the
 * frames, the extra bytes, zero padding to 8, and the record's crc u32
 * (of everything before it) with 4 zero bytes. */

int dsq_wal_encode(dsq_buf *out, void *cctx, int level, dsq_wal_rec *r, size_t npages,
                   const uint32_t *pgnos, const uint8_t *const *pages, const void *extra,
                   uint32_t extra_len)
{
    size_t start = out->len;
    size_t bound = ZSTD_compressBound(r->page_size);
    if (npages > (DSQ_WAL_REC_MAX - DSQ_WAL_REC_HDR) / (DIR_ENTRY + bound))
        return -1;
    size_t most = DSQ_WAL_REC_HDR + npages * (DIR_ENTRY + bound) + ZSTD_compressBound(extra_len) + 16;
    if (dsq_buf_reserve(out, most) != 0)
        return -1;
    uint8_t *base = (uint8_t *)out->data + start;
    uint8_t *dir = base + DSQ_WAL_REC_HDR;
    size_t at = DSQ_WAL_REC_HDR + npages * DIR_ENTRY;
    ZSTD_CCtx *cc = cctx;
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    for (size_t i = 0; i < npages; i++) {
        size_t n = ZSTD_compress2(cc, base + at, bound, pages[i], r->page_size);
        if (ZSTD_isError(n))
            return -1;
        dsq_put32(dir + i * DIR_ENTRY, pgnos[i]);
        dsq_put32(dir + i * DIR_ENTRY + 4, (uint32_t)n);
        at += n;
    }
    uint8_t flags = 0;
    if (extra_len >= DSQ_WAL_EXTRA_MIN) {
        /* Row changes compress well; stored as one frame when it is smaller. */
        size_t n = ZSTD_compress2(cc, base + at, ZSTD_compressBound(extra_len), extra, extra_len);
        if (!ZSTD_isError(n) && n < extra_len) {
            at += n;
            extra_len = (uint32_t)n;
            flags = DSQ_WAL_EXTRA_ZSTD;
        } else {
            memcpy(base + at, extra, extra_len);
            at += extra_len;
        }
    } else if (extra_len > 0) {
        memcpy(base + at, extra, extra_len);
        at += extra_len;
    }
    size_t len = (at + 7) / 8 * 8 + 8;
    if (len >= DSQ_WAL_REC_MAX)
        return -1;
    memset(base + at, 0, len - at);
    r->len = (uint32_t)len;
    r->npages = (uint32_t)npages;
    r->extra_len = extra_len;
    r->flags = flags;
    dsq_put32(base, REC_MAGIC);
    base[4] = REC_VERSION;
    base[5] = flags;
    base[6] = base[7] = 0;
    dsq_put32(base + 8, r->len);
    dsq_put32(base + 12, r->npages);
    dsq_put64(base + 16, r->lsn);
    dsq_put64(base + 24, r->time_us);
    dsq_put32(base + 32, r->db_pages);
    dsq_put32(base + 36, r->page_size);
    dsq_put32(base + 40, extra_len);
    dsq_put32(base + 44, dsq_crc32(base, 44));
    dsq_put32(base + len - 8, dsq_crc32(base, len - 8));
    out->len = start + len;
    return 0;
}

int dsq_wal_rec_header(const uint8_t *p, dsq_wal_rec *r)
{
    if (dsq_get32(p) != REC_MAGIC || p[4] != REC_VERSION || (p[5] & ~DSQ_WAL_EXTRA_ZSTD) != 0 ||
        dsq_get32(p + 44) != dsq_crc32(p, 44))
        return -1;
    r->len = dsq_get32(p + 8);
    r->npages = dsq_get32(p + 12);
    r->lsn = dsq_get64(p + 16);
    r->time_us = dsq_get64(p + 24);
    r->db_pages = dsq_get32(p + 32);
    r->page_size = dsq_get32(p + 36);
    r->extra_len = dsq_get32(p + 40);
    r->flags = p[5];
    if (r->len % 8 != 0 || r->len < DSQ_WAL_REC_HDR + 8 || r->len >= DSQ_WAL_REC_MAX ||
        (uint64_t)r->npages * DIR_ENTRY + r->extra_len > r->len - DSQ_WAL_REC_HDR - 8 || r->lsn == 0)
        return -1;
    return 0;
}

bool dsq_wal_rec_valid(const uint8_t *p, const dsq_wal_rec *r)
{
    if (dsq_get32(p + r->len - 8) != dsq_crc32(p, r->len - 8))
        return false;
    uint64_t at = DSQ_WAL_REC_HDR + (uint64_t)r->npages * DIR_ENTRY;
    for (uint32_t i = 0; i < r->npages; i++)
        at += dsq_get32(p + DSQ_WAL_REC_HDR + (size_t)i * DIR_ENTRY + 4);
    return at + r->extra_len <= (uint64_t)r->len - 8;
}

void dsq_wal_rec_pages(const uint8_t *p, const dsq_wal_rec *r, dsq_wal_page *out)
{
    uint32_t at = DSQ_WAL_REC_HDR + r->npages * DIR_ENTRY;
    for (uint32_t i = 0; i < r->npages; i++) {
        const uint8_t *d = p + DSQ_WAL_REC_HDR + (size_t)i * DIR_ENTRY;
        out[i].pgno = dsq_get32(d);
        out[i].clen = dsq_get32(d + 4);
        out[i].off = at;
        at += out[i].clen;
    }
}

const uint8_t *dsq_wal_rec_extra(const uint8_t *p, const dsq_wal_rec *r)
{
    uint64_t at = DSQ_WAL_REC_HDR + (uint64_t)r->npages * DIR_ENTRY;
    for (uint32_t i = 0; i < r->npages; i++)
        at += dsq_get32(p + DSQ_WAL_REC_HDR + (size_t)i * DIR_ENTRY + 4);
    return p + at;
}

/* The extra data's frame header declares its content size, and the
 * record's CRC does not make that claim true: it only proves the bytes are
 * the ones written, and a crafted record, or a tail object from a store,
 * has a right CRC too. Reserving what the header declares let a few bytes
 * of extra data claiming 2 GiB allocate 2 GiB. So the declaration is only
 * checked, never allocated:
 *
 * - against what the frame could hold at all: each zstd block has a 3-byte
 *   header and regenerates at most 128 KiB (RFC 8878, Block_Maximum_Size),
 *   so extra_len stored bytes decode to at most extra_len / 3 * 128 KiB;
 *   a header claiming more is damage, refused without decoding;
 * - against what the frame really holds: it is decoded into room that
 *   starts at 16 times its stored size (row changes compress about 3 to 1)
 *   and doubles only when zstd says the output did not fit, up to the
 *   declared size. Memory follows the output zstd actually produced
 *   (under twice it), and the re-decoding costs under twice one decode.
 *
 * Not a cap from [storage] max_transaction_size: that bounds the pages a
 * transaction buffers, not its row changes (one row updated a million
 * times is one page and a million events), and a smaller setting would
 * refuse records written under a larger one. Not zstd's streaming
 * decoder either: it allocates a window as large as the frame header's
 * window descriptor says (up to 128 MiB by default), which is again a size
 * from the file. Single-pass decoding needs no window. */
#define ZSTD_BLOCK_MAX (128u << 10)
#define EXTRA_FIRST_ROOM (256u << 10)

int dsq_wal_rec_extra_get(const uint8_t *p, const dsq_wal_rec *r, void *dctx, dsq_buf *out)
{
    const uint8_t *x = dsq_wal_rec_extra(p, r);
    if (!(r->flags & DSQ_WAL_EXTRA_ZSTD))
        return r->extra_len ? dsq_buf_append(out, x, r->extra_len) : 0;
    unsigned long long n = ZSTD_getFrameContentSize(x, r->extra_len);
    if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n >= DSQ_WAL_REC_MAX ||
        n > (unsigned long long)(r->extra_len / 3) * ZSTD_BLOCK_MAX)
        return -1;
    uint64_t room = (uint64_t)r->extra_len * 16;
    if (room < EXTRA_FIRST_ROOM)
        room = EXTRA_FIRST_ROOM;
    if (room > n)
        room = n;
    for (;;) {
        if (dsq_buf_reserve(out, (size_t)room) != 0)
            return -1;
        size_t got = ZSTD_decompressDCtx(dctx, out->data + out->len, (size_t)room, x, r->extra_len);
        if (!ZSTD_isError(got) && got == n) {
            out->len += got;
            out->data[out->len] = '\0';
            return 0;
        }
        out->data[out->len] = '\0'; /* (zstd may have written there) */
        if (!ZSTD_isError(got) || ZSTD_getErrorCode(got) != ZSTD_error_dstSize_tooSmall || room == n)
            return -1;
        room = room > n / 2 ? n : room * 2;
    }
}

int dsq_wal_page_decode(void *dctx, const void *frame, size_t clen, void *dst, uint32_t page_size)
{
    size_t n = ZSTD_decompressDCtx(dctx, dst, page_size, frame, clen);
    return ZSTD_isError(n) || n != page_size ? -1 : 0;
}

/* ---- segments on disk ------------------------------------------------------------------- */

/* Header: magic[8] | version u32 | page_size u32 | seq u32 | pad u32 |
 * first_lsn u64 | created_us u64 | zero to byte 60 | crc u32 of 0..59. */

typedef struct seg {
    uint32_t seq;
    int fd;               /* for writing and syncing: open while it is the newest
                             segment or not synced to its end; else -1 (reads
                             go through the log's fdcache) */
    dsq_cold *cold;       /* evicted: its records are in the object store (cold.h) */
    uint64_t first_lsn;   /* of its first record */
    uint64_t last_lsn;    /* of its last record (first_lsn - 1 when empty) */
    uint64_t size;        /* bytes written */
    uint64_t synced;      /* bytes known durable */
} seg;

struct dsq_wal {
    char *dir;
    dsq_wal_cfg cfg;
    dsq_fdc *fdc;         /* cfg.fdc, or its own (own_fdc) */
    bool own_fdc;
    pthread_mutex_t mu;   /* segs, appended, durable */
    seg *segs;            /* oldest first; the last is the one appended to */
    size_t nsegs, cap;
    uint64_t appended;    /* LSN of the last record appended */
    uint64_t durable;     /* LSN of the last record synced */
    uint32_t dur_seq;     /* where the durable log ends: segment and size */
    uint64_t dur_size;
    dev_t dev;            /* the file system it is on */
    uint64_t jfirst;      /* with a journal: where this log's entries not yet */
    uint64_t jend;        /* synced lie in it (jfirst 0: none) */
    bool tee;             /* keep a copy of what is appended (dsq_wal_tee) */
    dsq_buf teebuf;       /* records appended and not yet taken, in order */
    /* With a journal, records it holds are written to the newest segment
     * in bulk: when the journal's thread asks (every MiB of journal or
     * so, and before it retires a file), before the segment is sealed, scanned
     * or closed, before its durable end is read, or once PEND_MAX bytes
     * wait. Until then their journal entries hold the journal's file
     * (journal.h), and reads of them are served from here. */
    dsq_buf pend;         /* records not yet written, back to back */
    uint64_t pend_off;    /* where pend's first byte goes in the segment */
    uint32_t push_seq;    /* the segment the journal's thread last pushed to disk, */
    uint64_t push_off;    /* and how far */
    /* The journal's thread pushes through a descriptor of its own, opened
     * by path (a write-back error the kernel reports to it must still
     * reach the log's own syncs: it tells each open file once, and a dup
     * would share the log's) and kept for the segment (an open per push
     * cost ~2 % of the server's CPU at 64 databases). Used only in
     * pend_push, which the journal runs one round at a time, and closed
     * after the holder is removed (which waits for a round). -1: none. */
    int push_fd;
    uint32_t push_fd_seq;
    uint64_t *pend_pos;   /* their journal entries' positions */
    uint64_t *pend_lsn;   /* their LSNs */
    size_t npend, pend_cap;
    dsq_jnl_holder holder;
    bool pend_failed;     /* the last write of them failed (logged once) */
};

#define PEND_MAX (256u << 10)
/* While the log cannot be written, what it keeps is bounded: past this,
 * appends fail (the commit gets the write's error) until a write works. */
#define PEND_HARD (4u << 20)

void dsq_wal_seg_path(const char *dir, uint32_t seq, char *out, size_t n)
{
    snprintf(out, n, "%s/%08x.seg", dir, seq);
}

bool dsq_wal_seg_seq(const char *name, uint32_t *seq)
{
    unsigned v;
    char tail[8];
    if (strlen(name) != 12 || sscanf(name, "%8x.%3s", &v, tail) != 2 || strcmp(tail, "seg") != 0)
        return false;
    *seq = v;
    return true;
}

static void seg_path(const dsq_wal *w, uint32_t seq, char *out, size_t n)
{
    dsq_wal_seg_path(w->dir, seq, out, n);
}

static int segs_push(dsq_wal *w, seg s)
{
    if (w->nsegs == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        seg *n = realloc(w->segs, cap * sizeof *n);
        if (n == NULL)
            return -1;
        w->segs = n;
        w->cap = cap;
    }
    w->segs[w->nsegs++] = s;
    return 0;
}

static seg *seg_find(dsq_wal *w, uint32_t seq)
{
    size_t i = dsq_lower_bound_u32(w->segs, w->nsegs, sizeof *w->segs, offsetof(seg, seq), seq);
    return i < w->nsegs && w->segs[i].seq == seq ? &w->segs[i] : NULL;
}

/* A sealed segment synced to its end needs its own descriptor no more:
 * a later write-back error cannot concern it (mu held, or the log not
 * shared yet). */
static void seg_settle(dsq_wal *w, seg *s)
{
    if (s->fd >= 0 && s != &w->segs[w->nsegs - 1] && s->synced >= s->size) {
        close(s->fd);
        s->fd = -1;
    }
}

/* A descriptor to read segment seq's file through (the fdcache's, until
 * read_put), or -1 with errno. */
static int read_get(dsq_wal *w, uint32_t seq)
{
    char path[4200];
    dsq_wal_seg_path(w->dir, seq, path, sizeof path);
    return dsq_fdc_get(w->fdc, seq, path);
}

static void read_put(dsq_wal *w, int fd)
{
    int saved = errno;
    dsq_fdc_put(w->fdc, fd);
    errno = saved;
}

/* Write the pending records to the newest segment (mu held). 0, or -1
 * with errno (they stay pending, their journal file held: asked again). */
static int pend_write(dsq_wal *w)
{
    if (w->pend.len == 0)
        return 0;
    seg *s = &w->segs[w->nsegs - 1];
    int rc = dsq_pwrite_full(s->fd, w->pend.data, w->pend.len, w->pend_off);
    if (rc != 0) {
        if (!w->pend_failed)
            DSQ_ERROR("log_write_failed", "dir=%s reason=%s", dsq_log_q(w->dir), dsq_log_q(strerror(-rc)));
        w->pend_failed = true;
        errno = -rc;
        return -1;
    }
    if (w->pend_failed)
        DSQ_INFO("log_write_recovered", "dir=%s", dsq_log_q(w->dir));
    w->pend_failed = false;
    w->pend_off += w->pend.len;
    dsq_buf_reset(&w->pend);
    dsq_jnl_release(w->cfg.jnl, w->pend_pos, w->npend);
    w->npend = 0;
    return 0;
}

/* The journal's thread (or a reader of the files) asks: write them. */
static bool pend_write_held(void *ud)
{
    dsq_wal *w = ud;
    pthread_mutex_lock(&w->mu);
    bool some = w->pend.len > 0 && pend_write(w) == 0;
    pthread_mutex_unlock(&w->mu);
    return some;
}

/* The journal's thread: what was written since the last push, to the
 * disk (only to spread the writes: the syncfs after makes them durable). */
static void pend_push(void *ud)
{
    dsq_wal *w = ud;
    uint64_t from = 0, to = 0;
    uint32_t seq = 0;
    pthread_mutex_lock(&w->mu);
    if (w->nsegs > 0) {
        seg *s = &w->segs[w->nsegs - 1];
        if (w->push_seq != s->seq) {
            w->push_seq = s->seq;
            w->push_off = 0;
        }
        from = w->push_off;
        to = w->pend.len > 0 ? w->pend_off : s->size; /* the end of what is written */
        if (to > from) {
            seq = s->seq;
            w->push_off = to;
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (seq == 0)
        return;
    if (w->push_fd >= 0 && w->push_fd_seq != seq) {
        close(w->push_fd);
        w->push_fd = -1;
    }
    if (w->push_fd < 0) {
        char path[4200];
        dsq_wal_seg_path(w->dir, seq, path, sizeof path);
        w->push_fd = open(path, O_RDONLY | O_CLOEXEC);
        w->push_fd_seq = seq;
    }
    if (w->push_fd >= 0)
        sync_file_range(w->push_fd, (off_t)from, (off_t)(to - from),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

/* Keep the pending records up to LSN `lsn` (durable: they are written
 * now) and forget the rest, never durable (mu held). 0, or -1 with errno
 * when the durable ones cannot be written. */
static int pend_cut(dsq_wal *w, uint64_t lsn)
{
    size_t keep = 0;
    while (keep < w->npend && w->pend_lsn[keep] <= lsn)
        keep++;
    if (keep < w->npend) {
        /* Where the first one to go begins: each record's length from its
         * header. */
        size_t at = 0;
        for (size_t i = 0; i < keep; i++)
            at += dsq_get32((const uint8_t *)w->pend.data + at + 8);
        dsq_jnl_release(w->cfg.jnl, w->pend_pos + keep, w->npend - keep);
        w->pend.len = at;
        w->npend = keep;
    }
    return pend_write(w);
}

/* Create segment `seq` starting at `first_lsn`, header written and synced,
 * its directory entry too. */
static int seg_create(dsq_wal *w, uint32_t seq, uint64_t first_lsn, seg *out, char *err, size_t errlen)
{
    char path[4200];
    seg_path(w, seq, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %.3000s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t h[DSQ_WAL_SEG_HDR] = {0};
    memcpy(h, SEG_MAGIC, 8);
    dsq_put32(h + 8, 1);
    dsq_put32(h + 12, w->cfg.page_size);
    dsq_put32(h + 16, seq);
    dsq_put64(h + 24, first_lsn);
    dsq_put64(h + 32, dsq_wall_ms() * 1000);
    dsq_put32(h + 60, dsq_crc32(h, 60));
    if (dsq_pwrite_full(fd, h, sizeof h, 0) != 0 || fdatasync(fd) != 0) {
        snprintf(err, errlen, "cannot write %.3000s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    dsq_fsync_dir(w->dir);
    *out = (seg){.seq = seq, .fd = fd, .first_lsn = first_lsn, .last_lsn = first_lsn - 1,
                 .size = DSQ_WAL_SEG_HDR, .synced = DSQ_WAL_SEG_HDR};
    return 0;
}

/* Open segment s's own descriptor, if it is not. 0 or -1. */
static int seg_open(dsq_wal *w, seg *s, char *err, size_t errlen)
{
    if (s->fd >= 0)
        return 0;
    char path[4200];
    seg_path(w, s->seq, path, sizeof path);
    s->fd = open(path, O_RDWR | O_CLOEXEC);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int seg_read_header(dsq_wal *w, seg *s, char *err, size_t errlen)
{
    uint8_t h[DSQ_WAL_SEG_HDR];
    char path[4200];
    seg_path(w, s->seq, path, sizeof path);
    if (seg_open(w, s, err, errlen) != 0)
        return -1;
    if (dsq_pread_full(s->fd, h, sizeof h, 0) != 0 || memcmp(h, SEG_MAGIC, 8) != 0 ||
        dsq_get32(h + 60) != dsq_crc32(h, 60) || dsq_get32(h + 16) != s->seq) {
        snprintf(err, errlen, "%.3000s: not a dosqld log segment, or its header is damaged", path);
        return -1;
    }
    if (dsq_get32(h + 12) != w->cfg.page_size) {
        snprintf(err, errlen, "%.3000s: page size %u, the database's is %u", path, dsq_get32(h + 12),
                 w->cfg.page_size);
        return -1;
    }
    s->first_lsn = dsq_get64(h + 24);
    s->last_lsn = s->first_lsn - 1;
    return 0;
}

/* Bytes [off, off + n) of segment s: from its file, or for an evicted one
 * from its source (cold.h). 0, 1 (the file ends first), -1 (error, or a miss). */
static int seg_pread(const seg *s, const dsq_cold_src *src, void *buf, size_t n, uint64_t off)
{
    if (s->cold == NULL || off + n <= DSQ_WAL_SEG_HDR)
        return dsq_pread_full(s->fd, buf, n, off);
    if (off + n > s->cold->size)
        return 1;
    char err[300];
    return src != NULL && src->read(src->ctx, s->cold, off, buf, n, err, sizeof err) == 0 ? 0 : -1;
}

/* Load segment path's sidecar, if it was evicted. 0 or -1. */
static int seg_cold(seg *s, const char *path, char *err, size_t errlen)
{
    char side[4300];
    snprintf(side, sizeof side, "%s.cold", path);
    return dsq_cold_load(side, &s->cold, err, errlen) < 0 ? -1 : 0;
}

static int cmp_seq(const void *a, const void *b)
{
    uint32_t x = ((const seg *)a)->seq, y = ((const seg *)b)->seq;
    return x < y ? -1 : x > y;
}

/* ---- opening and recovery --------------------------------------------------------------- */

enum { REC_OK, REC_END, REC_BAD, REC_ERR };

/* Read the record at `off` of s, whose file has `end` bytes, into *buf:
 * REC_OK, REC_END (clean end of file), REC_BAD (torn, damaged, or not
 * the LSN expected), or REC_ERR (errno: the disk would not read, or no
 * memory for it; says nothing about the record). The header's CRC proves
 * its length was written, not that the record reached the disk: its
 * length is checked against the bytes the file has before anything is
 * allocated for it (a torn tail could otherwise ask for up to 2 GiB). */
static int read_record(seg *s, uint64_t off, uint64_t end, uint64_t want_lsn, uint32_t page_size, uint8_t **buf,
                       size_t *cap, dsq_wal_rec *r)
{
    if (off >= end)
        return off == end ? REC_END : REC_BAD;
    uint8_t h[DSQ_WAL_REC_HDR];
    if (end - off < sizeof h)
        return REC_BAD;
    int got = dsq_pread_full(s->fd, h, sizeof h, off);
    if (got != 0)
        return got < 0 ? REC_ERR : REC_BAD;
    if (dsq_wal_rec_header(h, r) != 0 || r->lsn != want_lsn || r->page_size != page_size || r->len > end - off)
        return REC_BAD;
    if (*cap < r->len) {
        uint8_t *n = realloc(*buf, r->len);
        if (n == NULL) {
            errno = ENOMEM;
            return REC_ERR;
        }
        *buf = n;
        *cap = r->len;
    }
    if ((got = dsq_pread_full(s->fd, *buf, r->len, off)) != 0)
        return got < 0 ? REC_ERR : REC_BAD;
    return dsq_wal_rec_valid(*buf, r) ? REC_OK : REC_BAD;
}

static int list_segments(dsq_wal *w, char *err, size_t errlen)
{
    DIR *d = opendir(w->dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot read %.3000s: %s", w->dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        uint32_t seq;
        if (!dsq_wal_seg_seq(de->d_name, &seq))
            continue;
        char path[4200];
        seg_path(w, seq, path, sizeof path);
        seg s = {.seq = seq, .fd = -1};
        if (seg_cold(&s, path, err, errlen) != 0) {
            rc = -1;
        } else if (segs_push(w, s) != 0) {
            snprintf(err, errlen, "out of memory");
            dsq_cold_free(s.cold);
            rc = -1;
        }
    }
    closedir(d);
    if (rc == 0 && w->nsegs > 1)
        qsort(w->segs, w->nsegs, sizeof *w->segs, cmp_seq);
    return rc;
}

/* Recover segment i from `off` on, expecting `want` next. Returns 0 with
 * s->last_lsn/size set, or -1. */
static int recover_segment(dsq_wal *w, size_t i, uint64_t from_lsn, dsq_wal_visit_fn visit, void *ud,
                           uint8_t **buf, size_t *cap, char *err, size_t errlen)
{
    seg *s = &w->segs[i];
    bool last = i + 1 == w->nsegs;
    char path[4200];
    seg_path(w, s->seq, path, sizeof path);
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat %.3000s: %s", path, strerror(errno));
        return -1;
    }
    uint64_t end = (uint64_t)st.st_size; /* (nothing else writes it while it opens) */
    uint64_t off = DSQ_WAL_SEG_HDR, want = s->first_lsn;
    for (;;) {
        dsq_wal_rec r;
        int rc = read_record(s, off, end, want, w->cfg.page_size, buf, cap, &r);
        if (rc == REC_END)
            break;
        bool later = false;
        if (rc == REC_BAD) {
            /* A torn tail, or damage with good records after it? */
            uint8_t h[DSQ_WAL_REC_HDR];
            dsq_wal_rec r1, r2;
            if (dsq_pread_full(s->fd, h, sizeof h, off) == 0 && dsq_wal_rec_header(h, &r1) == 0 &&
                r1.lsn == want) {
                int next = read_record(s, off + r1.len, end, want + 1, w->cfg.page_size, buf, cap, &r2);
                later = next == REC_OK;
                if (next == REC_ERR)
                    rc = REC_ERR;
            }
        }
        if (rc == REC_ERR) {
            /* Not the record's fault: nothing is cut; the open fails. */
            snprintf(err, errlen, "%.3000s: cannot read the record at offset %llu (LSN %llu): %s", path,
                     (unsigned long long)off, (unsigned long long)want, strerror(errno));
            return -1;
        }
        if (rc == REC_BAD) {
            if (!last || later) {
                snprintf(err, errlen,
                         "%.3000s: the record at offset %llu (LSN %llu) is damaged and the log "
                         "goes on after it: the database stays offline until it is restored",
                         path, (unsigned long long)off, (unsigned long long)want);
                return -1;
            }
            if (ftruncate(s->fd, (off_t)off) != 0 || fdatasync(s->fd) != 0) {
                snprintf(err, errlen, "%.3000s: cannot cut the torn tail at %llu: %s", path,
                         (unsigned long long)off, strerror(errno));
                return -1;
            }
            break;
        }
        if (r.lsn > from_lsn && visit != NULL &&
            visit(ud, &r, *buf, (dsq_wal_loc){s->seq, off}, err, errlen) != 0)
            return -1;
        off += r.len;
        want++;
    }
    s->last_lsn = want - 1;
    s->size = s->synced = off;
    return 0;
}

int dsq_wal_open(const char *dir, const dsq_wal_cfg *cfg, uint64_t from_lsn, dsq_wal_visit_fn visit,
                 void *ud, dsq_wal **out, uint64_t *last_lsn, char *err, size_t errlen)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    dsq_wal *w = calloc(1, sizeof *w);
    if (w == NULL || (w->dir = strdup(dir)) == NULL) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->cfg = *cfg;
    w->cfg.jname = NULL;
    w->push_fd = -1;
    w->fdc = cfg->fdc;
    if (w->fdc == NULL) {
        w->own_fdc = true;
        if ((w->fdc = dsq_fdc_new(4)) == NULL) {
            free(w->dir);
            free(w);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    pthread_mutex_init(&w->mu, NULL);
    if (cfg->jnl != NULL && (cfg->jname == NULL || (w->cfg.jname = strdup(cfg->jname)) == NULL)) {
        if (w->own_fdc)
            dsq_fdc_free(w->fdc);
        free(w->dir);
        free(w);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct stat dst;
    w->dev = stat(dir, &dst) == 0 ? dst.st_dev : 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    if (list_segments(w, err, errlen) != 0)
        goto fail;
    /* One descriptor at a time: a database may keep many segments. */
    for (size_t i = 0; i < w->nsegs; i++) {
        if (seg_read_header(w, &w->segs[i], err, errlen) != 0)
            goto fail;
        if (i + 1 < w->nsegs) {
            close(w->segs[i].fd);
            w->segs[i].fd = -1;
        }
    }
    for (size_t i = 0; i < w->nsegs; i++) {
        seg *s = &w->segs[i];
        if (i + 1 < w->nsegs) {
            /* A sealed segment ends where the next begins. */
            s->last_lsn = w->segs[i + 1].first_lsn - 1;
            if (w->segs[i + 1].first_lsn <= s->first_lsn || w->segs[i + 1].seq != s->seq + 1) {
                snprintf(err, errlen, "%.3000s: log segments %08x and %08x do not follow each other",
                         dir, s->seq, w->segs[i + 1].seq);
                goto fail;
            }
        }
        if (s->cold != NULL) {
            /* Evicted: only ever one whose records a checkpoint covers. */
            if (i + 1 == w->nsegs)
                s->last_lsn = s->cold->lsn;
            if (s->last_lsn > from_lsn || s->cold->lsn != s->last_lsn) {
                snprintf(err, errlen,
                         "%.3000s: log segment %08x was evicted but holds LSNs %llu..%llu, after the newest "
                         "checkpoint (%llu)",
                         dir, s->seq, (unsigned long long)s->first_lsn, (unsigned long long)s->cold->lsn,
                         (unsigned long long)from_lsn);
                goto fail;
            }
            s->size = s->synced = s->cold->size;
            continue;
        }
        /* Read only what holds records after from_lsn (and the last one,
         * to find its end). */
        if (i + 1 < w->nsegs && s->last_lsn <= from_lsn) {
            struct stat st;
            char path[4200];
            seg_path(w, s->seq, path, sizeof path);
            if (stat(path, &st) != 0) {
                snprintf(err, errlen, "cannot stat %.3000s: %s", path, strerror(errno));
                goto fail;
            }
            s->size = s->synced = (uint64_t)st.st_size;
            continue;
        }
        uint64_t last_before = s->last_lsn;
        if (seg_open(w, s, err, errlen) != 0 ||
            recover_segment(w, i, from_lsn, visit, ud, &buf, &cap, err, errlen) != 0)
            goto fail;
        seg_settle(w, s);
        if (i + 1 < w->nsegs && s->last_lsn != last_before) {
            snprintf(err, errlen, "%.3000s: segment %08x ends at LSN %llu, the next starts at %llu",
                     dir, s->seq, (unsigned long long)s->last_lsn,
                     (unsigned long long)w->segs[i + 1].first_lsn);
            goto fail;
        }
    }
    if (w->nsegs > 0 && w->segs[0].first_lsn > from_lsn + 1) {
        snprintf(err, errlen, "%.3000s: the log starts at LSN %llu, records from %llu are missing", dir,
                 (unsigned long long)w->segs[0].first_lsn, (unsigned long long)from_lsn + 1);
        goto fail;
    }
    /* Whatever was recovered is made durable now: it may sit only in the
     * page cache after a crash of the process. */
    if (w->nsegs > 0 && !cfg->known_durable && w->segs[w->nsegs - 1].cold == NULL &&
        fdatasync(w->segs[w->nsegs - 1].fd) != 0) {
        snprintf(err, errlen, "%.3000s: fdatasync: %s", dir, strerror(errno));
        goto fail;
    }
    w->appended = w->durable = w->nsegs > 0 && w->segs[w->nsegs - 1].last_lsn > from_lsn
                                   ? w->segs[w->nsegs - 1].last_lsn
                                   : from_lsn;
    if (w->nsegs > 0) {
        w->dur_seq = w->segs[w->nsegs - 1].seq;
        w->dur_size = w->segs[w->nsegs - 1].size;
    }
    free(buf);
    if (w->cfg.jnl != NULL) {
        w->holder = (dsq_jnl_holder){.write = pend_write_held, .push = pend_push, .ud = w, .name = w->cfg.jname};
        dsq_jnl_holder_add(w->cfg.jnl, &w->holder);
    }
    *last_lsn = w->appended;
    *out = w;
    return 0;
fail:;
    int saved = errno; /* the caller tells EMFILE from the rest */
    free(buf);
    dsq_wal_close(w);
    errno = saved;
    return -1;
}

void dsq_wal_close(dsq_wal *w)
{
    if (w == NULL)
        return;
    if (w->cfg.jnl != NULL && w->holder.write != NULL)
        dsq_jnl_holder_remove(w->cfg.jnl, &w->holder);
    if (w->push_fd >= 0)
        close(w->push_fd);
    pthread_mutex_lock(&w->mu);
    pend_write(w); /* if it fails, their entries keep the journal's file: the next start replays them */
    pthread_mutex_unlock(&w->mu);
    dsq_buf_free(&w->pend);
    free(w->pend_pos);
    free(w->pend_lsn);
    for (size_t i = 0; i < w->nsegs; i++) {
        if (w->segs[i].fd >= 0)
            close(w->segs[i].fd);
        dsq_cold_free(w->segs[i].cold);
    }
    free(w->segs);
    if (w->own_fdc)
        dsq_fdc_free(w->fdc);
    dsq_buf_free(&w->teebuf);
    pthread_mutex_destroy(&w->mu);
    free((char *)w->cfg.jname);
    free(w->dir);
    free(w);
}

/* ---- appending, syncing, reading -------------------------------------------------------- */

/* The record just written at the end of s goes to the journal too; one
 * too large for it is made durable in the log itself and the journal gets
 * only its place. */
static int journal_append(dsq_wal *w, seg *s, const void *rec, size_t len, uint64_t lsn,
                          uint64_t *first, uint64_t *end, char *err, size_t errlen)
{
    if (len > dsq_jnl_inline_max(w->cfg.jnl)) {
        if (fdatasync(s->fd) != 0) {
            int saved = errno;
            snprintf(err, errlen, "fdatasync of log segment %08x: %s", s->seq, strerror(saved));
            errno = saved;
            return -1;
        }
        rec = NULL;
    }
    return dsq_jnl_append(w->cfg.jnl, w->cfg.jname, s->seq, s->size, lsn, rec, len, first, end, err, errlen);
}

/* The record of LSN lsn (len bytes) is now at the end of s (mu held).
 *
 * dsq_wal_append keeps s, a pointer into w->segs, across unlocks: the
 * array is grown (realloc) and shifted (retiring) only by calls that come
 * from the log's one writer, the thread appending, so the newest segment
 * stays where it was meanwhile. */
static void appended(dsq_wal *w, seg *s, const void *rec, size_t len, uint64_t lsn, uint64_t jfirst,
                     uint64_t jend, dsq_wal_loc *loc)
{
    DSQ_ASSERT_HELD(&w->mu);
    DSQ_ASSERT(w->nsegs > 0 && s == &w->segs[w->nsegs - 1]);
    loc->seg = s->seq;
    loc->off = s->size;
    s->size += len;
    s->last_lsn = lsn;
    w->appended = lsn;
    if (w->tee && dsq_buf_append(&w->teebuf, rec, len) != 0)
        dsq_buf_reset(&w->teebuf); /* out of memory: takers read the log instead */
    if (jend != 0) {
        if (w->jfirst == 0)
            w->jfirst = jfirst;
        w->jend = jend;
    }
}

/* 0, or the negated errno of a failure just reported (-EIO when errno
 * names none): what the log's appends and syncs return. Inside this
 * module a failure is passed up in errno; the public functions return
 * it. */
static int failure(int rc) { return rc == 0 ? 0 : errno != 0 ? -errno : -EIO; }

/* With a journal: the record goes to the journal now and to the segment
 * with the pending ones later. 0 (appended), -1 (failed, errno set), or 1
 * (out of memory for the copy: write it now instead). */
static int append_pending(dsq_wal *w, seg *s, const void *rec, size_t len, uint64_t lsn, dsq_wal_loc *loc,
                          char *err, size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    DSQ_ASSERT(w->nsegs > 0 && s == &w->segs[w->nsegs - 1]); /* (appended) */
    if (w->npend == w->pend_cap) {
        size_t cap = w->pend_cap ? w->pend_cap * 2 : 64;
        uint64_t *n = realloc(w->pend_pos, cap * sizeof *n);
        if (n != NULL)
            w->pend_pos = n;
        uint64_t *l = n ? realloc(w->pend_lsn, cap * sizeof *l) : NULL;
        if (l == NULL) {
            pthread_mutex_unlock(&w->mu);
            return 1;
        }
        w->pend_lsn = l;
        w->pend_cap = cap;
    }
    if (w->pend.len > 0 && w->pend.len + len > PEND_HARD && pend_write(w) != 0) {
        int saved = errno;
        pthread_mutex_unlock(&w->mu);
        snprintf(err, errlen, "cannot write the log: %s", strerror(saved));
        errno = saved;
        return -1;
    }
    if (w->pend.len == 0)
        w->pend_off = s->size;
    if (dsq_buf_append(&w->pend, rec, len) != 0) {
        pthread_mutex_unlock(&w->mu);
        return 1;
    }
    uint64_t jfirst, jend;
    if (dsq_jnl_append_held(w->cfg.jnl, w->cfg.jname, s->seq, s->size, lsn, rec, len, &jfirst, &jend, err,
                            errlen) != 0) {
        int saved = errno;
        w->pend.len -= len;
        pthread_mutex_unlock(&w->mu);
        errno = saved;
        return -1;
    }
    w->pend_pos[w->npend] = jfirst;
    w->pend_lsn[w->npend++] = lsn;
    appended(w, s, rec, len, lsn, jfirst, jend, loc);
    if (w->pend.len >= PEND_MAX && pend_write(w) != 0) {
        /* Journaled, so appended and durable with the journal's sync: the
         * write is tried again (logged). */
    }
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* dsq_wal_append: 0, or -1 with errno. */
static int append(dsq_wal *w, const void *rec, size_t len, uint64_t lsn, dsq_wal_loc *loc, char *err,
                  size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    seg *s = w->nsegs > 0 ? &w->segs[w->nsegs - 1] : NULL;
    pthread_mutex_unlock(&w->mu);
    /* A new segment when this one is full, or evicted (its bytes are
     * in the object store only: it takes no more). */
    if (s == NULL || s->cold != NULL || (s->size + len > w->cfg.segment_bytes && s->last_lsn >= s->first_lsn)) {
        pthread_mutex_lock(&w->mu);
        int rc = pend_write(w); /* the sealed segment gets its last records */
        uint64_t sealed = s != NULL && s->cold == NULL ? s->size : 0;
        pthread_mutex_unlock(&w->mu);
        if (rc != 0) {
            snprintf(err, errlen, "cannot write the log: %s", strerror(errno));
            return -1;
        }
        /* The sealed segment is durable before the next one exists: else a
         * power cut could keep the new segment (its header is synced) and
         * lose the old one's tail, and the log would have a hole between
         * them. One fdatasync per segment_size. */
        if (s != NULL && s->cold == NULL && s->synced < sealed) {
            if (fdatasync(s->fd) != 0) {
                snprintf(err, errlen, "fdatasync of log segment %08x: %s", s->seq, strerror(errno));
                return -1;
            }
            pthread_mutex_lock(&w->mu);
            if (s->synced < sealed)
                s->synced = sealed;
            pthread_mutex_unlock(&w->mu);
        }
        seg n;
        if (seg_create(w, s ? s->seq + 1 : 1, lsn, &n, err, errlen) != 0)
            return -1;
        pthread_mutex_lock(&w->mu);
        rc = segs_push(w, n);
        if (rc == 0 && w->nsegs > 1)
            seg_settle(w, &w->segs[w->nsegs - 2]); /* sealed now */
        pthread_mutex_unlock(&w->mu);
        if (rc != 0) {
            close(n.fd);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        s = &w->segs[w->nsegs - 1];
    }
    if (w->cfg.jnl != NULL && len <= dsq_jnl_inline_max(w->cfg.jnl)) {
        int rc = append_pending(w, s, rec, len, lsn, loc, err, errlen);
        if (rc <= 0)
            return rc;
    }
    pthread_mutex_lock(&w->mu);
    int rc = pend_write(w); /* in order: the pending records first */
    pthread_mutex_unlock(&w->mu);
    if (rc != 0 || dsq_pwrite_full(s->fd, rec, len, s->size) != 0) {
        int saved = errno;
        snprintf(err, errlen, "cannot write the log: %s", strerror(saved));
        /* Nothing counts past the old end: cut off what may have gone
         * (if that fails too, the next open cuts it as a torn tail). */
        if (rc == 0 && ftruncate(s->fd, (off_t)s->size) != 0) {
        }
        errno = saved;
        return -1;
    }
    uint64_t jfirst = 0, jend = 0;
    if (w->cfg.jnl != NULL && journal_append(w, s, rec, len, lsn, &jfirst, &jend, err, errlen) != 0) {
        int saved = errno;
        if (ftruncate(s->fd, (off_t)s->size) != 0) {
        }
        errno = saved;
        return -1;
    }
    pthread_mutex_lock(&w->mu);
    appended(w, s, rec, len, lsn, jfirst, jend, loc);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int dsq_wal_append(dsq_wal *w, const void *rec, size_t len, uint64_t lsn, dsq_wal_loc *loc,
                   char *err, size_t errlen)
{
    int rc = failure(append(w, rec, len, lsn, loc, err, errlen));
    if (rc != 0)
        errno = -rc; /* tier.c's restore, and the VFS after a failed commit (vfs.c), still read it */
    return rc;
}

void dsq_wal_tee(dsq_wal *w, bool on)
{
    pthread_mutex_lock(&w->mu);
    w->tee = on;
    if (!on)
        dsq_buf_free(&w->teebuf);
    pthread_mutex_unlock(&w->mu);
}

int dsq_wal_tee_take(dsq_wal *w, uint64_t after, uint64_t upto, dsq_buf *out)
{
    pthread_mutex_lock(&w->mu);
    const uint8_t *p = (const uint8_t *)w->teebuf.data, *end = p + w->teebuf.len;
    size_t drop = 0;
    int rc = -1;
    uint64_t next = after + 1;
    while (end - p >= DSQ_WAL_REC_HDR) {
        dsq_wal_rec r;
        if (dsq_wal_rec_header(p, &r) != 0 || r.len > (size_t)(end - p))
            break; /* cannot happen: what append copied */
        if (r.lsn > upto)
            break;
        if (r.lsn >= next) {
            if (r.lsn != next || dsq_buf_append(out, p, r.len) != 0)
                break;
            next++;
        }
        p += r.len;
        drop += r.len;
    }
    if (next == upto + 1)
        rc = 0;
    dsq_buf_consume(&w->teebuf, drop);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int dsq_wal_read(dsq_wal *w, uint32_t seq, uint64_t off, void *buf, size_t n)
{
    pthread_mutex_lock(&w->mu);
    seg *s = seg_find(w, seq);
    if (s != NULL && s == &w->segs[w->nsegs - 1] && w->pend.len > 0 && off + n > w->pend_off) {
        /* Pending bytes: from memory, or (straddling) written first. */
        if (off >= w->pend_off && off + n <= w->pend_off + w->pend.len) {
            memcpy(buf, (const uint8_t *)w->pend.data + (off - w->pend_off), n);
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
        if (pend_write(w) != 0) {
            pthread_mutex_unlock(&w->mu);
            return -1;
        }
    }
    seg copy = s ? *s : (seg){.fd = -1};
    pthread_mutex_unlock(&w->mu);
    if (s == NULL) {
        errno = ENOENT;
        return -1;
    }
    /* (The worker that reads is the one that retires: copy.cold stays.) */
    if ((copy.fd = read_get(w, seq)) < 0)
        return -1;
    int rc = seg_pread(&copy, w->cfg.cold_src, buf, n, off);
    read_put(w, copy.fd);
    if (rc > 0)
        errno = EIO; /* the file ends before the frame: cannot be (damaged) */
    return rc == 0 ? 0 : -1;
}

/* What one sync covers: the segments written since the last sync (usually
 * the newest one) with their sizes then, on duplicated descriptors, and
 * the LSN and end that become durable with them. */
typedef struct sync_job {
    int fd;
    uint64_t size;
    uint32_t seq;
} sync_job;

typedef struct sync_snap {
    uint64_t target;
    uint32_t tseq;
    uint64_t tsize;
    sync_job *jobs;
    size_t n;
    uint64_t jfirst, jend; /* with a journal: the range to sync in it */
} sync_snap;

static int snap_take(dsq_wal *w, sync_snap *sn, char *err, size_t errlen)
{
    memset(sn, 0, sizeof *sn);
    pthread_mutex_lock(&w->mu);
    sn->target = w->appended;
    sn->tseq = w->nsegs > 0 ? w->segs[w->nsegs - 1].seq : 0;
    sn->tsize = w->nsegs > 0 ? w->segs[w->nsegs - 1].size : 0;
    if (w->cfg.jnl != NULL) {
        sn->jfirst = w->jfirst;
        sn->jend = w->jend;
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    size_t want = 0;
    for (size_t i = 0; i < w->nsegs; i++)
        want += w->segs[i].synced < w->segs[i].size;
    if (want > 0 && (sn->jobs = malloc(want * sizeof *sn->jobs)) == NULL) {
        pthread_mutex_unlock(&w->mu);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < w->nsegs && rc == 0; i++) {
        seg *s = &w->segs[i];
        if (s->synced >= s->size)
            continue;
        sn->jobs[sn->n] = (sync_job){dup(s->fd), s->size, s->seq};
        if (sn->jobs[sn->n].fd < 0) {
            snprintf(err, errlen, "dup: %s", strerror(errno));
            rc = -1;
        } else {
            sn->n++;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* fdatasync the snapshot's segments, oldest first. */
static int snap_fdatasync(sync_snap *sn, char *err, size_t errlen)
{
    for (size_t k = 0; k < sn->n; k++) {
        if (fdatasync(sn->jobs[k].fd) != 0) {
            snprintf(err, errlen, "fdatasync of log segment %08x: %s", sn->jobs[k].seq, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Close the snapshot; if ok, what it covered is durable. */
static void snap_done(dsq_wal *w, sync_snap *sn, bool ok, uint64_t *durable)
{
    for (size_t k = 0; k < sn->n; k++)
        close(sn->jobs[k].fd);
    pthread_mutex_lock(&w->mu);
    if (ok && w->cfg.jnl != NULL) {
        /* Durable in the journal: as good as synced in the segments. */
        for (size_t i = 0; i < w->nsegs; i++) {
            seg *s = &w->segs[i];
            if (s->seq < sn->tseq)
                s->synced = s->size;
            else if (s->seq == sn->tseq && s->synced < sn->tsize)
                s->synced = sn->tsize;
        }
        if (w->jend == sn->jend)
            w->jfirst = w->jend = 0;
        else if (sn->jend != 0)
            w->jfirst = sn->jend; /* the next entry is at or after it */
    }
    if (ok) {
        for (size_t k = 0; k < sn->n; k++) {
            seg *s = seg_find(w, sn->jobs[k].seq);
            if (s && s->synced < sn->jobs[k].size)
                s->synced = sn->jobs[k].size;
        }
        if (sn->target > w->durable) {
            w->durable = sn->target;
            w->dur_seq = sn->tseq;
            w->dur_size = sn->tsize;
        }
        for (size_t i = 0; i + 1 < w->nsegs; i++)
            seg_settle(w, &w->segs[i]);
    }
    *durable = w->durable;
    pthread_mutex_unlock(&w->mu);
    free(sn->jobs);
    sn->jobs = NULL;
}

int dsq_wal_sync(dsq_wal *w, uint64_t *durable, char *err, size_t errlen)
{
    sync_snap sn;
    errno = 0;
    int rc = snap_take(w, &sn, err, errlen);
    if (rc == 0 && w->cfg.jnl != NULL)
        rc = sn.jend != 0 ? dsq_jnl_sync(w->cfg.jnl, sn.jfirst, sn.jend, err, errlen) : 0;
    else if (rc == 0)
        rc = snap_fdatasync(&sn, err, errlen);
    rc = failure(rc);
    snap_done(w, &sn, rc == 0, durable);
    errno = -rc; /* tier.c's restore still reads it */
    return rc;
}

int dsq_wal_sync_many(dsq_wal **ws, size_t n, uint64_t *durables, int *rcs, char *errs, size_t errlen)
{
    sync_snap *sn = calloc(n, sizeof *sn);
    if (sn == NULL) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = dsq_wal_sync(ws[i], &durables[i], errs + i * errlen, errlen);
        return 0;
    }
    if (n > 0 && ws[0]->cfg.jnl != NULL) {
        /* One sync of the journal up to the furthest entry covers them all;
         * then each log learns whether its own range was voided. */
        uint64_t end = 0;
        for (size_t i = 0; i < n; i++) {
            errno = 0;
            rcs[i] = failure(snap_take(ws[i], &sn[i], errs + i * errlen, errlen));
            if (rcs[i] == 0 && sn[i].jend > end)
                end = sn[i].jend;
        }
        char e0[8];
        if (end != 0)
            dsq_jnl_sync(ws[0]->cfg.jnl, end, end, e0, sizeof e0);
        for (size_t i = 0; i < n; i++) {
            errno = 0;
            if (rcs[i] == 0 && sn[i].jend != 0)
                rcs[i] = failure(dsq_jnl_sync(ws[i]->cfg.jnl, sn[i].jfirst, sn[i].jend, errs + i * errlen, errlen));
            snap_done(ws[i], &sn[i], rcs[i] == 0, &durables[i]);
        }
        free(sn);
        return 1;
    }
    int fd = -1;
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        rcs[i] = failure(snap_take(ws[i], &sn[i], errs + i * errlen, errlen));
        if (rcs[i] == 0 && sn[i].n > 0 && fd < 0)
            fd = sn[i].jobs[0].fd;
    }
    /* One syncfs for all of them: every dirty page of the file system and
     * one flush of the device. If it reports an error, each log finds out
     * for itself with fdatasync, which reports its own file's errors. */
    bool all = fd < 0 || syncfs(fd) == 0;
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        if (rcs[i] == 0 && !all)
            rcs[i] = failure(snap_fdatasync(&sn[i], errs + i * errlen, errlen));
        snap_done(ws[i], &sn[i], rcs[i] == 0, &durables[i]);
    }
    free(sn);
    return all ? 1 : 0;
}

dev_t dsq_wal_device(const dsq_wal *w) { return w->dev; }
bool dsq_wal_journaled(const dsq_wal *w) { return w->cfg.jnl != NULL; }

uint64_t dsq_wal_appended(dsq_wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->appended;
    pthread_mutex_unlock(&w->mu);
    return v;
}

uint64_t dsq_wal_durable_end(dsq_wal *w, uint32_t *seq, uint64_t *size)
{
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->durable;
    *seq = w->dur_seq;
    *size = w->dur_size;
    /* Whoever asks reads the files: the pending records are written first,
     * or (that failing) the end is where the file's records end. */
    if (pend_write(w) != 0 && w->npend > 0 && w->pend_lsn[0] <= v && w->nsegs > 0 &&
        w->segs[w->nsegs - 1].seq == *seq) {
        v = w->pend_lsn[0] - 1;
        *size = w->pend_off;
    }
    pthread_mutex_unlock(&w->mu);
    return v;
}

uint64_t dsq_wal_durable(dsq_wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->durable;
    pthread_mutex_unlock(&w->mu);
    return v;
}

int dsq_wal_rewind(dsq_wal *w, char *err, size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    dsq_buf_reset(&w->teebuf); /* what it held may be cut: takers read the log */
    /* Pending records that are durable (in the journal) go to the file;
     * the rest were never durable. */
    int rc = pend_cut(w, w->durable);
    if (rc != 0)
        snprintf(err, errlen, "cannot write the log: %s", strerror(errno));
    pthread_mutex_unlock(&w->mu);
    if (rc != 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    while (w->nsegs > 0 && w->segs[w->nsegs - 1].seq > w->dur_seq) {
        seg *s = &w->segs[w->nsegs - 1];
        char path[4200];
        seg_path(w, s->seq, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove %.3000s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        if (s->fd >= 0)
            close(s->fd);
        dsq_fdc_forget(w->fdc, s->seq);
        dsq_cold_free(s->cold);
        w->nsegs--;
    }
    if (rc == 0 && w->nsegs > 0) {
        seg *s = &w->segs[w->nsegs - 1];
        if (s->cold == NULL && seg_open(w, s, err, errlen) != 0) /* the newest again: appended to */
            rc = -1;
        else if (s->size > w->dur_size) {
            if (ftruncate(s->fd, (off_t)w->dur_size) != 0 || fdatasync(s->fd) != 0) {
                snprintf(err, errlen, "cannot cut log segment %08x back to %llu: %s", s->seq,
                         (unsigned long long)w->dur_size, strerror(errno));
                rc = -1;
            } else {
                s->size = s->synced = w->dur_size;
                s->last_lsn = w->durable;
            }
        }
    }
    if (rc == 0) {
        w->appended = w->durable;
        w->jfirst = w->jend = 0;
    }
    pthread_mutex_unlock(&w->mu);
    dsq_fsync_dir(w->dir);
    return rc;
}

/* ---- retiring and scanning -------------------------------------------------------------- */

int dsq_wal_retire(dsq_wal *w, uint64_t lsn)
{
    int gone = 0;
    pthread_mutex_lock(&w->mu);
    while (w->nsegs > 1 && w->segs[0].last_lsn <= lsn && w->segs[0].synced >= w->segs[0].size) {
        char path[4200];
        seg_path(w, w->segs[0].seq, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT)
            break;
        char side[4300];
        snprintf(side, sizeof side, "%s.cold", path);
        unlink(side);
        if (w->segs[0].fd >= 0)
            close(w->segs[0].fd);
        dsq_fdc_forget(w->fdc, w->segs[0].seq);
        dsq_cold_free(w->segs[0].cold);
        memmove(w->segs, w->segs + 1, (w->nsegs - 1) * sizeof *w->segs);
        w->nsegs--;
        gone++;
    }
    pthread_mutex_unlock(&w->mu);
    if (gone > 0)
        dsq_fsync_dir(w->dir);
    return gone;
}

void dsq_wal_usage(dsq_wal *w, uint32_t *segments, uint64_t *bytes, uint64_t *first_lsn)
{
    pthread_mutex_lock(&w->mu);
    uint64_t b = 0;
    for (size_t i = 0; i < w->nsegs; i++)
        b += w->segs[i].size;
    *segments = (uint32_t)w->nsegs;
    *bytes = b;
    *first_lsn = w->nsegs > 0 && w->segs[0].last_lsn >= w->segs[0].first_lsn ? w->segs[0].first_lsn : 0;
    pthread_mutex_unlock(&w->mu);
}

#define SCAN_BLOCK (1u << 20)

/* Read file bytes [off, off + max(need, SCAN_BLOCK)) into *buf (as far as
 * the file goes); 0 when at least `need` came, else -1. `need` may be a
 * record's length from its header: it is checked against the bytes the
 * file has before the buffer grows for it. */
static int fill_block(const seg *s, const dsq_cold_src *src, uint64_t off, size_t need, uint8_t **buf, size_t *cap,
                      uint64_t *bstart, uint64_t *bend)
{
    uint64_t size;
    if (s->cold != NULL) {
        size = s->cold->size;
    } else {
        struct stat st;
        if (fstat(s->fd, &st) != 0)
            return -1;
        size = (uint64_t)st.st_size;
    }
    if (off >= size || need > size - off)
        return -1;
    size_t want = need > SCAN_BLOCK ? need : SCAN_BLOCK;
    if (*cap < want) {
        uint8_t *n = realloc(*buf, want);
        if (n == NULL)
            return -1;
        *buf = n;
        *cap = want;
    }
    if (s->cold != NULL) { /* evicted: from its source, within the file */
        size_t n = size - off < want ? (size_t)(size - off) : want;
        if (seg_pread(s, src, *buf, n, off) != 0)
            return -1;
        *bstart = off;
        *bend = off + n;
        return 0;
    }
    int fd = s->fd;
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(fd, *buf + got, want - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    *bstart = off;
    *bend = off + got;
    return got >= need ? 0 : -1;
}

/* Visit the records of one segment (fd, sequence seq, first record
 * first_lsn) with from < LSN <= min(to, last), reading it in blocks:
 * records before `from` are only stepped over (their header checked), the
 * wanted ones verified. *next is the LSN after the last record read; the
 * scan stops early at the segment's end or a record that cannot be read
 * (the caller knows which it expected). 0, or -1 when visit failed (its
 * message in err). */
typedef struct block {
    uint8_t *buf;
    size_t cap;
    uint64_t start, end; /* the file bytes buf holds */
} block;

static int scan_segment(const seg *s, const dsq_cold_src *src, uint64_t first_lsn, uint64_t last, uint32_t page_size,
                        uint64_t from, uint64_t to, dsq_wal_visit_fn visit, void *ud, block *b, uint64_t *next,
                        char *err, size_t errlen)
{
    uint32_t seq = s->seq;
    uint64_t off = DSQ_WAL_SEG_HDR, want = first_lsn;
    b->start = b->end = 0;
    while (want <= to && want <= last) {
        if ((off + DSQ_WAL_REC_HDR > b->end || off < b->start) &&
            fill_block(s, src, off, DSQ_WAL_REC_HDR, &b->buf, &b->cap, &b->start, &b->end) != 0)
            break;
        dsq_wal_rec r;
        if (dsq_wal_rec_header(b->buf + (off - b->start), &r) != 0 || r.lsn != want || r.page_size != page_size)
            break;
        if (want > from) {
            if (off + r.len > b->end && fill_block(s, src, off, r.len, &b->buf, &b->cap, &b->start, &b->end) != 0)
                break;
            const uint8_t *p = b->buf + (off - b->start);
            if (!dsq_wal_rec_valid(p, &r))
                break;
            if (visit(ud, &r, p, (dsq_wal_loc){seq, off}, err, errlen) != 0) {
                *next = want;
                return -1;
            }
        }
        off += r.len;
        want++;
    }
    *next = want;
    return 0;
}

int dsq_wal_scan(dsq_wal *w, uint64_t from, uint64_t to, dsq_wal_visit_fn visit, void *ud, char *err,
                 size_t errlen)
{
    block b = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0; i++) {
        pthread_mutex_lock(&w->mu);
        if (i + 1 == w->nsegs && pend_write(w) != 0) {
            snprintf(err, errlen, "cannot write the log: %s", strerror(errno));
            pthread_mutex_unlock(&w->mu);
            rc = -1;
            break;
        }
        bool have = i < w->nsegs;
        seg s = have ? w->segs[i] : (seg){.fd = -1};
        pthread_mutex_unlock(&w->mu);
        if (!have || s.first_lsn > to)
            break;
        if (s.last_lsn <= from)
            continue;
        uint64_t next;
        if ((s.fd = read_get(w, s.seq)) < 0) {
            snprintf(err, errlen, "cannot open log segment %08x: %s", s.seq, strerror(errno));
            rc = -1;
            break;
        }
        rc = scan_segment(&s, w->cfg.cold_src, s.first_lsn, s.last_lsn, w->cfg.page_size, from, to, visit, ud, &b,
                          &next, err, errlen);
        read_put(w, s.fd);
        uint64_t upto = s.last_lsn < to ? s.last_lsn : to;
        if (rc == 0 && next <= upto) {
            snprintf(err, errlen, "log segment %08x: the record of LSN %llu cannot be read", s.seq,
                     (unsigned long long)next);
            rc = -1;
        }
    }
    if (rc == 0 && from < to) {
        pthread_mutex_lock(&w->mu);
        bool missing = w->nsegs == 0 || w->segs[0].first_lsn > from + 1;
        pthread_mutex_unlock(&w->mu);
        if (missing) {
            snprintf(err, errlen, "the log no longer holds LSN %llu", (unsigned long long)from + 1);
            rc = -1;
        }
    }
    free(b.buf);
    return rc;
}

/* ---- reading without an open log ---------------------------------------------------------- */

typedef struct seg_file {
    uint32_t seq;
    uint64_t first_lsn;
} seg_file;

static int cmp_seg_file(const void *a, const void *b)
{
    uint32_t x = ((const seg_file *)a)->seq, y = ((const seg_file *)b)->seq;
    return x < y ? -1 : x > y;
}

int dsq_wal_seg_first(int fd, uint64_t *first_lsn)
{
    uint8_t h[DSQ_WAL_SEG_HDR];
    if (dsq_pread_full(fd, h, sizeof h, 0) != 0 || memcmp(h, SEG_MAGIC, 8) != 0 || dsq_get32(h + 60) != dsq_crc32(h, 60))
        return -1;
    *first_lsn = dsq_get64(h + 24);
    return 0;
}

int dsq_wal_scan_files(const char *dir, const dsq_cold_src *src, uint64_t from, uint64_t to, dsq_wal_visit_fn visit,
                       void *ud, uint64_t *oldest, char *err, size_t errlen)
{
    *oldest = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot read %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    seg_file *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        uint32_t seq;
        char path[4200];
        if (!dsq_wal_seg_seq(de->d_name, &seq))
            continue;
        dsq_wal_seg_path(dir, seq, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t first;
        if (fd < 0) /* retired meanwhile */
            continue;
        bool ok = dsq_wal_seg_first(fd, &first) == 0;
        close(fd);
        if (!ok)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            seg_file *g = realloc(v, cap * sizeof *v);
            if (g == NULL) {
                rc = -1;
                snprintf(err, errlen, "out of memory");
                break;
            }
            v = g;
        }
        v[n++] = (seg_file){seq, first};
    }
    closedir(d);
    if (rc == 0 && n > 1)
        qsort(v, n, sizeof *v, cmp_seg_file);
    /* The segment holding from + 1: the last one starting at or before it. */
    size_t at = n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (v[i].first_lsn <= from + 1)
            at = i;
    if (rc == 0 && (n == 0 || at == n)) {
        *oldest = n ? v[0].first_lsn - 1 : 0;
        free(v);
        return 1;
    }
    block blk = {0};
    uint64_t want = v[at].first_lsn;
    for (size_t i = at; rc == 0 && i < n && want <= to; i++) {
        char path[4200];
        dsq_wal_seg_path(dir, v[i].seq, path, sizeof path);
        seg s = {.seq = v[i].seq, .fd = open(path, O_RDONLY | O_CLOEXEC)};
        if (s.fd < 0) {
            snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        uint8_t h[DSQ_WAL_SEG_HDR];
        uint32_t page_size = dsq_pread_full(s.fd, h, sizeof h, 0) == 0 ? dsq_get32(h + 12) : 0;
        if (seg_cold(&s, path, err, errlen) != 0)
            rc = -1;
        else if (s.cold != NULL && src == NULL) {
            snprintf(err, errlen, "log segment %08x is in the object store, and none is configured", v[i].seq);
            rc = -1;
        } else if (v[i].first_lsn != want) {
            snprintf(err, errlen, "log segment %08x starts at LSN %llu, not %llu", v[i].seq,
                     (unsigned long long)v[i].first_lsn, (unsigned long long)want);
            rc = -1;
        }
        if (rc == 0) {
            uint64_t next;
            rc = scan_segment(&s, src, want, s.cold ? s.cold->lsn : UINT64_MAX, page_size, from, to, visit, ud, &blk,
                              &next, err, errlen);
            want = next; /* stopped early: on in the next segment, which must start there */
            if (rc == 0 && dsq_cold_missed()) {
                snprintf(err, errlen, "log segment %08x: a chunk is on its way from the object store", v[i].seq);
                rc = -1;
            }
        }
        close(s.fd);
        dsq_cold_free(s.cold);
    }
    if (rc == 0 && want <= to) {
        snprintf(err, errlen, "the log ends at LSN %llu, before %llu", (unsigned long long)want - 1,
                 (unsigned long long)to);
        rc = -1;
    }
    free(blk.buf);
    free(v);
    return rc;
}

int dsq_wal_cut_after(const char *dir, uint32_t seq, uint64_t end, char *err, size_t errlen)
{
    char path[4200];
    dsq_wal_seg_path(dir, seq, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno)), -1);
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > end && ftruncate(fd, (off_t)end) != 0) {
        snprintf(err, errlen, "cannot cut %.3000s at %llu: %s", path, (unsigned long long)end, strerror(errno));
        rc = -1;
    }
    close(fd);
    DIR *d = rc == 0 ? opendir(dir) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        uint32_t later;
        if (dsq_wal_seg_seq(de->d_name, &later) && later > seq) {
            dsq_wal_seg_path(dir, later, path, sizeof path);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
    return rc;
}
