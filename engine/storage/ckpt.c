/* ckpt — checkpoint files (see ckpt.h). */
#include "engine/storage/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/storage/fdcache.h"
#include "engine/storage/cold.h"

#define MAGIC "DSQCKPT1"
#define VERSION 1
#define HDR 64
#define WBUF (1u << 20)

static uint64_t data_start(uint32_t n) { return HDR + (uint64_t)n * 8 + 8; }

/* ---- writing ------------------------------------------------------------------------------- */

struct dsq_ckpt_writer {
    int fd;
    char dir[4096], tmp[4200], path[4200];
    uint64_t lsn, time_us;
    uint32_t db_pages, min_pages, page_size, n, added;
    dsq_ckpt_entry *entries;
    uint64_t at;        /* file offset of the next frame */
    uint8_t *buf;       /* frames waiting to be written */
    size_t buffered;
    uint64_t buf_off;   /* file offset of buf[0] */
    int failed;
};

dsq_ckpt_writer *dsq_ckpt_begin(const char *dir, uint64_t lsn, uint64_t time_us, uint32_t db_pages,
                                uint32_t min_pages, uint32_t page_size, uint32_t n, char *err,
                                size_t errlen)
{
    dsq_ckpt_writer *w = calloc(1, sizeof *w);
    if (w == NULL || (w->entries = calloc(n ? n : 1, sizeof *w->entries)) == NULL ||
        (w->buf = malloc(WBUF)) == NULL) {
        if (w)
            free(w->entries);
        free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    snprintf(w->path, sizeof w->path, "%s/%016llx.ckpt", dir, (unsigned long long)lsn);
    snprintf(w->tmp, sizeof w->tmp, "%s/%016llx.ckpt.tmp", dir, (unsigned long long)lsn);
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot create %.3000s: %s", w->tmp, strerror(errno));
        free(w->buf);
        free(w->entries);
        free(w);
        return NULL;
    }
    w->lsn = lsn;
    w->time_us = time_us;
    w->db_pages = db_pages;
    w->min_pages = min_pages;
    w->page_size = page_size;
    w->n = n;
    w->at = w->buf_off = data_start(n);
    return w;
}

static int flush(dsq_ckpt_writer *w)
{
    if (w->buffered > 0 && dsq_pwrite_full(w->fd, w->buf, w->buffered, w->buf_off) != 0)
        return -1;
    w->buf_off += w->buffered;
    w->buffered = 0;
    return 0;
}

int dsq_ckpt_add(dsq_ckpt_writer *w, uint32_t pgno, const void *frame, uint32_t clen)
{
    if (w->failed || w->added >= w->n || (w->added > 0 && w->entries[w->added - 1].pgno >= pgno))
        return w->failed = -1;
    if (w->buffered + clen > WBUF && flush(w) != 0)
        return w->failed = -1;
    if (clen > WBUF) {
        if (dsq_pwrite_full(w->fd, frame, clen, w->buf_off) != 0)
            return w->failed = -1;
        w->buf_off += clen;
    } else {
        memcpy(w->buf + w->buffered, frame, clen);
        w->buffered += clen;
    }
    w->entries[w->added++] = (dsq_ckpt_entry){pgno, clen, w->at};
    w->at += clen;
    return 0;
}

void dsq_ckpt_abort(dsq_ckpt_writer *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    unlink(w->tmp);
    free(w->buf);
    free(w->entries);
    free(w);
}

/* merged (complete, durable) takes the place of evicted file path: its
 * sidecar goes first, then the rename; both durable. 0 or -1. */
static int replace_cold(const char *dir, const char *merged, const char *path, const char *side, char *err,
                        size_t errlen)
{
    if (unlink(side) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %.3000s: %s", side, strerror(errno));
        return -1;
    }
    dsq_fsync_dir(dir); /* never the new file under the old sidecar */
    if (rename(merged, path) != 0) {
        snprintf(err, errlen, "cannot replace %.3000s: %s", path, strerror(errno));
        return -1;
    }
    dsq_fsync_dir(dir);
    return 0;
}

int dsq_ckpt_finish(dsq_ckpt_writer *w, dsq_ckpt *out, char *err, size_t errlen)
{
    if (w->failed || w->added != w->n || flush(w) != 0) {
        snprintf(err, errlen, "cannot write %.3000s: %s", w->tmp,
                 w->added != w->n ? "entries missing" : strerror(errno));
        dsq_ckpt_abort(w);
        return -1;
    }
    size_t dlen = (size_t)w->n * 8;
    uint8_t *head = calloc(1, HDR + dlen + 8);
    if (head == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_ckpt_abort(w);
        return -1;
    }
    memcpy(head, MAGIC, 8);
    dsq_put32(head + 8, VERSION);
    dsq_put32(head + 12, w->page_size);
    dsq_put64(head + 16, w->lsn);
    dsq_put64(head + 24, w->time_us);
    dsq_put32(head + 32, w->db_pages);
    dsq_put32(head + 36, w->n);
    dsq_put32(head + 40, w->min_pages);
    dsq_put32(head + 60, dsq_crc32(head, 60));
    for (uint32_t i = 0; i < w->n; i++) {
        dsq_put32(head + HDR + (size_t)i * 8, w->entries[i].pgno);
        dsq_put32(head + HDR + (size_t)i * 8 + 4, w->entries[i].clen);
    }
    dsq_put32(head + HDR + dlen, dsq_crc32(head + HDR, dlen));
    int rc = dsq_pwrite_full(w->fd, head, HDR + dlen + 8, 0);
    free(head);
    char *name = strdup(w->path);
    if (name == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_ckpt_abort(w);
        return -1;
    }
    /* Over an evicted file of the same name (a merge whose newest is
     * one): its sidecar would describe the old bytes, and the two cannot
     * be swapped in one rename. The new file is put down complete as
     * PATH.merged first; opening finishes what a crash interrupts after
     * that (dsq_ckpt_list). */
    char side[4300], merged[4300];
    snprintf(side, sizeof side, "%s.cold", w->path);
    snprintf(merged, sizeof merged, "%s.merged", w->path);
    bool over_cold = access(side, F_OK) == 0 || access(merged, F_OK) == 0; /* or one a failure left */
    if (rc != 0 || fdatasync(w->fd) != 0 || rename(w->tmp, over_cold ? merged : w->path) != 0) {
        snprintf(err, errlen, "cannot write %.3000s: %s", w->path, strerror(errno));
        free(name);
        dsq_ckpt_abort(w);
        return -1;
    }
    dsq_fsync_dir(w->dir);
    if (over_cold && replace_cold(w->dir, merged, w->path, side, err, errlen) != 0) {
        free(name);
        dsq_ckpt_abort(w); /* PATH.merged stays: the next open puts it in place */
        return -1;
    }
    close(w->fd); /* synced: reads open it again through the owner's cache */
    *out = (dsq_ckpt){.lsn = w->lsn, .time_us = w->time_us, .db_pages = w->db_pages,
                      .min_pages = w->min_pages, .page_size = w->page_size, .n = w->n, .dir = w->entries, .bytes = w->at,
                      .path = name};
    free(w->buf);
    free(w);
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------- */

int dsq_ckpt_load(const char *path, uint32_t page_size, dsq_ckpt *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t h[HDR];
    off_t size = lseek(fd, 0, SEEK_END);
    if (dsq_pread_full(fd, h, HDR, 0) != 0 || memcmp(h, MAGIC, 8) != 0 || dsq_get32(h + 8) != VERSION ||
        dsq_get32(h + 60) != dsq_crc32(h, 60)) {
        snprintf(err, errlen, "%.3000s: not a dosqld checkpoint, or its header is damaged", path);
        close(fd);
        return -1;
    }
    uint32_t n = dsq_get32(h + 36);
    if (dsq_get32(h + 12) != page_size || (uint64_t)size < data_start(n)) {
        snprintf(err, errlen, "%.3000s: page size %u (the database's is %u) or truncated", path,
                 dsq_get32(h + 12), page_size);
        close(fd);
        return -1;
    }
    size_t dlen = (size_t)n * 8;
    uint8_t *d = malloc(dlen + 8);
    dsq_ckpt_entry *dir = calloc(n ? n : 1, sizeof *dir);
    if (d == NULL || dir == NULL || dsq_pread_full(fd, d, dlen + 8, HDR) != 0 ||
        dsq_get32(d + dlen) != dsq_crc32(d, dlen)) {
        snprintf(err, errlen, "%.3000s: its directory is damaged", path);
        free(d);
        free(dir);
        close(fd);
        return -1;
    }
    uint64_t at = data_start(n);
    for (uint32_t i = 0; i < n; i++) {
        dir[i] = (dsq_ckpt_entry){dsq_get32(d + (size_t)i * 8), dsq_get32(d + (size_t)i * 8 + 4), at};
        at += dir[i].clen;
        if ((i > 0 && dir[i].pgno <= dir[i - 1].pgno) || dir[i].pgno == 0 || at > (uint64_t)size) {
            snprintf(err, errlen, "%.3000s: its directory does not match its frames", path);
            free(d);
            free(dir);
            close(fd);
            return -1;
        }
    }
    free(d);
    char side[4300];
    snprintf(side, sizeof side, "%s.cold", path);
    dsq_cold *cold = NULL;
    if (dsq_cold_load(side, &cold, err, errlen) < 0 || (cold != NULL && cold->size != (uint64_t)size)) {
        if (cold != NULL)
            snprintf(err, errlen, "%.3000s: its sidecar describes a file of %llu bytes", side,
                     (unsigned long long)cold->size);
        dsq_cold_free(cold);
        free(dir);
        close(fd);
        return -1;
    }
    close(fd);
    char *name = strdup(path);
    if (name == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_cold_free(cold);
        free(dir);
        return -1;
    }
    *out = (dsq_ckpt){.cold = cold, .lsn = dsq_get64(h + 16), .time_us = dsq_get64(h + 24), .db_pages = dsq_get32(h + 32),
                      .min_pages = dsq_get32(h + 40), .page_size = page_size, .n = n, .dir = dir, .bytes = (uint64_t)size,
                      .path = name};
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int dsq_ckpt_list(const char *dir, char ***paths, size_t *n, char *err, size_t errlen)
{
    *paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    size_t cap = 0;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (len == 25 && strcmp(de->d_name + 16, ".ckpt.tmp") == 0) {
            unlink(path); /* a checkpoint a crash interrupted */
            continue;
        }
        if (len == 28 && strcmp(de->d_name + 16, ".ckpt.merged") == 0 &&
            strspn(de->d_name, "0123456789abcdef") == 16) {
            /* A merge over an evicted file that a crash interrupted: the
             * merged file is whole, it takes the place (listed as that
             * name, here or where readdir meets it; duplicates go below). */
            char to[4200], side[4300];
            snprintf(to, sizeof to, "%s/%.21s", dir, de->d_name);
            snprintf(side, sizeof side, "%s.cold", to);
            if (replace_cold(dir, path, to, side, err, errlen) != 0) {
                rc = -2;
                break;
            }
            snprintf(path, sizeof path, "%s", to);
        } else if (len != 21 || strcmp(de->d_name + 16, ".ckpt") != 0 ||
                   strspn(de->d_name, "0123456789abcdef") != 16) {
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(*paths, cap * sizeof *g);
            if (g == NULL) {
                rc = -1;
                break;
            }
            *paths = g;
        }
        if (((*paths)[*n] = strdup(path)) == NULL) {
            rc = -1;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (rc != 0) {
        if (rc == -1)
            snprintf(err, errlen, "out of memory");
        for (size_t i = 0; i < *n; i++)
            free((*paths)[i]);
        free(*paths);
        *paths = NULL;
        *n = 0;
        return -1;
    }
    if (*n > 1) /* fixed-width hex names sort as their LSNs */
        qsort(*paths, *n, sizeof **paths, cmp_str);
    size_t m = 0; /* a name listed twice: see .ckpt.merged above */
    for (size_t i = 0; i < *n; i++) {
        if (m > 0 && strcmp((*paths)[m - 1], (*paths)[i]) == 0)
            free((*paths)[i]);
        else
            (*paths)[m++] = (*paths)[i];
    }
    *n = m;
    return 0;
}

const dsq_ckpt_entry *dsq_ckpt_find(const dsq_ckpt *c, uint32_t pgno)
{
    size_t i = dsq_lower_bound_u32(c->dir, c->n, sizeof *c->dir, offsetof(dsq_ckpt_entry, pgno), pgno);
    return i < c->n && c->dir[i].pgno == pgno ? &c->dir[i] : NULL;
}

int dsq_ckpt_read(const dsq_ckpt *c, const dsq_ckpt_entry *e, void *buf, char *err, size_t errlen)
{
    if (c->cold != NULL) {
        if (c->src == NULL) {
            snprintf(err, errlen, "its pages are in the object store, and none is configured");
            return -1;
        }
        return c->src->read(c->src->ctx, c->cold, e->off, buf, e->clen, err, errlen);
    }
    int fd = c->fdc ? dsq_fdc_get(c->fdc, DSQ_CKPT_FDKEY(c->lsn), c->path) : open(c->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open its file: %s", strerror(errno));
        return -1;
    }
    int rc = dsq_pread_full(fd, buf, e->clen, e->off);
    if (c->fdc)
        dsq_fdc_put(c->fdc, fd);
    else
        close(fd);
    if (rc != 0)
        snprintf(err, errlen, "%s", rc > 0 ? "the file is shorter than its directory" : strerror(-rc));
    if (rc < 0)
        errno = -rc; /* the VFS hands it to SQLite (vfs.c, store_errno) */
    return rc != 0 ? -1 : 0;
}

int dsq_ckpt_evict(const char *path, const dsq_cold *cold, uint64_t *freed, char *err, size_t errlen)
{
    *freed = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t h[HDR];
    int rc = fd < 0 ? -errno : dsq_pread_full(fd, h, HDR, 0);
    if (rc == 0 && (memcmp(h, MAGIC, 8) != 0 || dsq_get32(h + 60) != dsq_crc32(h, 60)))
        rc = -EIO; /* not a checkpoint's header */
    if (rc != 0) {
        rc = rc < 0 ? rc : -EIO; /* 1: shorter than a header */
        snprintf(err, errlen, "%.3000s: not a readable checkpoint: %s", path, strerror(-rc));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    /* Header and directory stay: opening reads them. */
    return dsq_cold_evict(path, cold, data_start(dsq_get32(h + 36)), freed, err, errlen);
}

void dsq_ckpt_close(dsq_ckpt *c, int remove)
{
    if (c->fdc != NULL && c->dir != NULL)
        dsq_fdc_forget(c->fdc, DSQ_CKPT_FDKEY(c->lsn));
    if (remove && c->path != NULL) {
        unlink(c->path);
        char side[4300];
        snprintf(side, sizeof side, "%s.cold", c->path);
        unlink(side);
    }
    free(c->path);
    c->path = NULL;
    free(c->dir);
    c->dir = NULL;
    dsq_cold_free(c->cold);
    c->cold = NULL;
}
