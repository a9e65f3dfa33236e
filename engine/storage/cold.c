/* cold — evicted files' sidecars, and this thread's miss (cold.h). */
#include "engine/storage/cold.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "engine/storage/disk.h"

/* ---- sidecars ------------------------------------------------------------------------------ */

/* Text: "dosqld-cold 1\n", "db NAME\n", "id N\n", "size N\n", "lsn N\n", "chunks N\n",
 * then per chunk "OFF LEN CRC\n" (CRC in hex), then "#crc32 XXXXXXXX\n"
 * over everything before it. */
#define COLD_MAGIC "dosqld-cold 1\n"

void dsq_cold_free(dsq_cold *c)
{
    if (c) {
        free(c->chunks);
        free(c);
    }
}

int dsq_cold_load(const char *path, dsq_cold **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    char *text = NULL;
    int rc = -1;
    dsq_cold *c = NULL;
    if (fstat(fd, &st) != 0 || st.st_size < 32 || st.st_size > (64 << 20) ||
        (text = malloc((size_t)st.st_size + 1)) == NULL || dsq_pread_full(fd, text, (size_t)st.st_size, 0) != 0)
        goto bad;
    size_t len = (size_t)st.st_size;
    text[len] = '\0';
    const char *trailer = text + len - 16; /* "#crc32 XXXXXXXX\n" */
    unsigned crc;
    if (text[len - 1] != '\n' || sscanf(trailer, "#crc32 %8x", &crc) != 1 ||
        dsq_crc32(text, (size_t)(trailer - text)) != crc || strncmp(text, COLD_MAGIC, strlen(COLD_MAGIC)) != 0)
        goto bad;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto bad;
    const char *p = text + strlen(COLD_MAGIC);
    int used = 0;
    size_t n = 0;
    if (sscanf(p, "db %128[A-Za-z0-9._-]\nid %" SCNu64 "\nsize %" SCNu64 "\nlsn %" SCNu64 "\nchunks %zu\n%n", c->db,
               &c->id, &c->size, &c->lsn, &n, &used) != 5 ||
        used == 0 || n > (1u << 24))
        goto bad;
    p += used;
    c->chunks = calloc(n ? n : 1, sizeof *c->chunks);
    if (c->chunks == NULL)
        goto bad;
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        dsq_cold_chunk *k = &c->chunks[i];
        used = 0;
        if (sscanf(p, "%" SCNu64 " %" SCNu64 " %8x\n%n", &k->off, &k->len, &k->crc, &used) != 3 || used == 0 ||
            k->off != at || k->len == 0)
            goto bad;
        at += k->len;
        p += used;
    }
    if (at != c->size || p != trailer)
        goto bad;
    c->n = n;
    *out = c;
    c = NULL;
    rc = 1;
bad:
    if (rc < 0)
        snprintf(err, errlen, "%.3000s: damaged (not a cold file's description)", path);
    dsq_cold_free(c);
    free(text);
    close(fd);
    return rc;
}

int dsq_cold_write(const char *path, const dsq_cold *c, char *err, size_t errlen)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_printf(&b, COLD_MAGIC "db %s\nid %" PRIu64 "\nsize %" PRIu64 "\nlsn %" PRIu64 "\nchunks %zu\n", c->db,
                   c->id, c->size, c->lsn, c->n);
    for (size_t i = 0; i < c->n; i++)
        dsq_buf_printf(&b, "%" PRIu64 " %" PRIu64 " %08x\n", c->chunks[i].off, c->chunks[i].len, c->chunks[i].crc);
    if (b.data == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    dsq_buf_printf(&b, "#crc32 %08x\n", dsq_crc32(b.data, b.len));
    char tmp[4200], dir[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd >= 0 && b.data != NULL && dsq_pwrite_full(fd, b.data, b.len, 0) == 0 && fsync(fd) == 0) {
        close(fd);
        fd = -1;
        if (rename(tmp, path) == 0)
            rc = 0;
    }
    if (rc != 0)
        snprintf(err, errlen, "cannot write %.3000s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    dsq_buf_free(&b);
    if (rc == 0) {
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            dsq_fsync_dir(dir);
        }
    }
    return rc;
}

int dsq_cold_evict(const char *path, const dsq_cold *c, uint64_t keep, uint64_t *freed, char *err, size_t errlen)
{
    *freed = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat before, after;
    if (fd < 0 || fstat(fd, &before) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    if (c->size != (uint64_t)before.st_size) {
        snprintf(err, errlen, "%.3000s: the object store's copy has another size", path);
        close(fd);
        return -EIO;
    }
    uint64_t start = (keep + 4095) & ~(uint64_t)4095;
    if (start >= (uint64_t)before.st_size) {
        close(fd);
        return 0; /* nothing to give back */
    }
    char side[4300];
    snprintf(side, sizeof side, "%s.cold", path);
    if (dsq_cold_write(side, c, err, errlen) != 0) {
        close(fd);
        return -EIO;
    }
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start,
                  (off_t)((uint64_t)before.st_size - start)) != 0) {
        int e = errno;
        snprintf(err, errlen, "%.3000s: cannot punch a hole: %s", path, strerror(e));
        unlink(side);
        close(fd);
        return -e;
    }
    if (fstat(fd, &after) == 0 && after.st_blocks < before.st_blocks)
        *freed = (uint64_t)(before.st_blocks - after.st_blocks) * 512u;
    close(fd);
    return 0;
}

/* ---- this thread's miss ------------------------------------------------------------------------ */

static _Thread_local dsq_cold_ref *tls_miss;

void dsq_cold_miss_set(dsq_cold_ref *r) { tls_miss = r; }

dsq_cold_ref *dsq_cold_miss_take(void)
{
    dsq_cold_ref *r = tls_miss;
    tls_miss = NULL;
    return r;
}

bool dsq_cold_missed(void) { return tls_miss != NULL; }

void dsq_cold_miss_clear(const dsq_cold_src *src)
{
    dsq_cold_ref *r = dsq_cold_miss_take();
    if (r != NULL && src != NULL)
        src->release(src->ctx, r);
}
