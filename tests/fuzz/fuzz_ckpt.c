/* fuzz_ckpt — checkpoint files (engine/storage/ckpt.c) as a database opening
 * reads them: dsq_ckpt_list finds the file, dsq_ckpt_load checks header
 * and directory, then every entry is looked up (dsq_ckpt_find), read
 * (dsq_ckpt_read) and its zstd frame decompressed as the page store does.
 *
 * Input: byte 0 = options: bit 0 set, the harness rewrites the header's
 * and the directory's CRCs so that the fuzzer gets past them; the rest is
 * the file, written to a per-process directory under /dev/shm. The page
 * size the database expects is the header's own when it is one a database
 * can have (512 to 65536), so that load goes on past that check. */
#include <sys/stat.h>
#include <zstd.h>

#include "engine/storage/ckpt.h"
#include "engine/storage/disk.h"
#include "engine/storage/wal.h"
#include "tests/fuzz/fuzz.h"

#define MAX_PAGE 65536

static ZSTD_DCtx *dctx;
static uint8_t page[MAX_PAGE];
static char dir[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    dctx = ZSTD_createDCtx();
    snprintf(dir, sizeof dir, "%s/ckpt", fuzz_scratch());
    mkdir(dir, 0700);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t *p = malloc(size);
    if (p == NULL)
        abort();
    size_t n = size - 1;
    memcpy(p, data + 1, n);
    if ((data[0] & 1) && n >= 64) {
        dsq_put32(p + 60, dsq_crc32(p, 60));
        uint64_t dlen = (uint64_t)dsq_get32(p + 36) * 8;
        if (64 + dlen + 4 <= n)
            dsq_put32(p + 64 + dlen, dsq_crc32(p + 64, (size_t)dlen));
    }
    uint32_t page_size = n >= 64 ? dsq_get32(p + 12) : 4096;
    if (page_size < 512 || page_size > MAX_PAGE)
        page_size = 4096;

    char path[512], tmp[512];
    snprintf(path, sizeof path, "%s/00000000000000a1.ckpt", dir);
    snprintf(tmp, sizeof tmp, "%s/00000000000000a2.ckpt.tmp", dir);
    fuzz_write(path, p, n);
    fuzz_write(tmp, "", 0);

    char err[4400];
    char **paths;
    size_t np;
    if (dsq_ckpt_list(dir, &paths, &np, err, sizeof err) == 0) {
        for (size_t i = 0; i < np; i++) {
            dsq_ckpt c;
            int rc = dsq_ckpt_load(paths[i], page_size, &c, err, sizeof err);
            fuzz_note("dsq_ckpt_load", rc, err);
            if (rc != 0) {
                free(paths[i]);
                continue;
            }
            for (uint32_t k = 0; k < c.n && k < 256; k++) {
                const dsq_ckpt_entry *e = dsq_ckpt_find(&c, c.dir[k].pgno);
                if (e != &c.dir[k]) {
                    fprintf(stderr, "dsq_ckpt_find(%u) did not find entry %u\n", c.dir[k].pgno, k);
                    abort();
                }
                uint8_t *frame = malloc(e->clen ? e->clen : 1);
                if (frame == NULL)
                    abort();
                if (dsq_ckpt_read(&c, e, frame, err, sizeof err) == 0)
                    (void)dsq_wal_page_decode(dctx, frame, e->clen, page, c.page_size);
                free(frame);
            }
            (void)dsq_ckpt_find(&c, 0);
            (void)dsq_ckpt_find(&c, UINT32_MAX);
            dsq_ckpt_close(&c, 0);
            free(paths[i]);
        }
        free(paths);
    }
    unlink(path);
    free(p);
    return 0;
}
