/* fuzz_wal — log records and segments (engine/storage/wal.c) as recovery and
 * the CDC readers decode them from disk.
 *
 * Input: byte 0 = options: bit 0 set, the harness rewrites every CRC the
 * format has (segment header, record header, whole record) so that the
 * fuzzer gets past them to what follows; bit 1 picks the mode:
 *   0  one record: dsq_wal_rec_header, _valid, _pages, each page's zstd
 *      frame (dsq_wal_page_decode) and the extra data;
 *   1  a log directory: the rest is split into segment files where
 *      "DSQWAL01" starts one (each named by the sequence number in its
 *      header), read by dsq_wal_scan_files (read-only, as CDC does), then
 *      recovered by dsq_wal_open (which may cut a torn tail) and read
 *      again with dsq_wal_scan; every record visited is decoded as in 0.
 * Files live in a per-process directory under /dev/shm. */
#include <dirent.h>
#include <sys/stat.h>
#include <zstd.h>

#include "engine/storage/disk.h"
#include "engine/storage/wal.h"
#include "tests/fuzz/fuzz.h"

#define MAX_PAGE 65536 /* callers check a record's page size against the database's (at most 64 KiB) */

static ZSTD_DCtx *dctx;
static uint8_t page[MAX_PAGE];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    dctx = ZSTD_createDCtx();
    (void)fuzz_scratch();
    return 0;
}

/* Rewrite the CRCs of the records from p[off] on (as far as they parse). */
static void fix_records(uint8_t *p, size_t n, size_t off)
{
    while (off + DSQ_WAL_REC_HDR <= n) {
        dsq_put32(p + off + 44, dsq_crc32(p + off, 44));
        uint32_t len = dsq_get32(p + off + 8);
        if (len % 8 != 0 || len < DSQ_WAL_REC_HDR + 8 || len > n - off)
            return;
        dsq_put32(p + off + len - 8, dsq_crc32(p + off, len - 8));
        off += len;
    }
}

/* What every reader does with a record it was handed. */
static void decode_record(const uint8_t *p, const dsq_wal_rec *r)
{
    if (r->npages > 0) {
        dsq_wal_page *pages = malloc(r->npages * sizeof *pages);
        if (pages == NULL)
            abort();
        dsq_wal_rec_pages(p, r, pages);
        for (uint32_t i = 0; i < r->npages; i++) {
            if (pages[i].off + (uint64_t)pages[i].clen > r->len) {
                fprintf(stderr, "page %u lies outside its record\n", i);
                abort();
            }
            if (r->page_size <= MAX_PAGE)
                (void)dsq_wal_page_decode(dctx, p + pages[i].off, pages[i].clen, page, r->page_size);
        }
        free(pages);
    }
    const uint8_t *x = dsq_wal_rec_extra(p, r);
    if (x + r->extra_len > p + r->len - 8) {
        fprintf(stderr, "extra data lies outside its record\n");
        abort();
    }
    dsq_buf extra = DSQ_BUF_INIT;
    (void)dsq_wal_rec_extra_get(p, r, dctx, &extra);
    dsq_buf_free(&extra);
}

static void one_record(const uint8_t *p, size_t n)
{
    dsq_wal_rec r;
    if (n < DSQ_WAL_REC_HDR || dsq_wal_rec_header(p, &r) != 0 || r.len > n)
        return;
    bool valid = dsq_wal_rec_valid(p, &r);
    fuzz_note("dsq_wal_rec_valid", !valid, NULL);
    if (valid)
        decode_record(p, &r);
}

typedef struct visit_state {
    uint64_t next;  /* the LSN expected next (0: any) */
    int visited;
} visit_state;

static int visit(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err, size_t errlen)
{
    visit_state *vs = ud;
    if (vs->next != 0 && r->lsn != vs->next) {
        fprintf(stderr, "visited LSN %llu, expected %llu\n", (unsigned long long)r->lsn,
                (unsigned long long)vs->next);
        abort();
    }
    vs->next = r->lsn + 1;
    vs->visited++;
    decode_record(rec, r);
    return 0;
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

static void log_dir(uint8_t *p, size_t n, bool fix)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/wal", fuzz_scratch());
    mkdir(dir, 0700);
    clear_dir(dir);
    uint32_t page_size = 4096;
    for (size_t at = 0, k = 0; at < n && k < 4; k++) {
        /* This segment runs to the next "DSQWAL01" (not at its start). */
        size_t end = n;
        for (size_t i = at + 1; i + 8 <= n; i++) {
            if (memcmp(p + i, "DSQWAL01", 8) == 0) {
                end = i;
                break;
            }
        }
        uint8_t *s = p + at;
        size_t len = end - at;
        uint32_t seq = (uint32_t)k + 1;
        if (len >= DSQ_WAL_SEG_HDR) {
            seq = dsq_get32(s + 16);
            if (k == 0 && dsq_get32(s + 12) != 0 && dsq_get32(s + 12) <= MAX_PAGE)
                page_size = dsq_get32(s + 12);
            if (fix) {
                dsq_put32(s + 60, dsq_crc32(s, 60));
                fix_records(s, len, DSQ_WAL_SEG_HDR);
            }
        }
        char path[512];
        dsq_wal_seg_path(dir, seq, path, sizeof path);
        fuzz_write(path, s, len);
        at = end;
    }

    char err[4400];
    uint64_t oldest;
    visit_state vs = {0};
    int rc = dsq_wal_scan_files(dir, NULL, 0, UINT64_MAX - 1, visit, &vs, &oldest, err, sizeof err);
    fuzz_note("dsq_wal_scan_files (visits)", vs.visited, rc ? err : NULL);

    dsq_wal_cfg cfg = {.page_size = page_size, .segment_bytes = 1 << 20, .known_durable = true};
    dsq_wal *w;
    uint64_t last;
    vs = (visit_state){0};
    rc = dsq_wal_open(dir, &cfg, 0, visit, &vs, &w, &last, err, sizeof err);
    fuzz_note("dsq_wal_open", rc, err);
    if (rc == 0) {
        fuzz_note("dsq_wal_open: last LSN", (int)last, NULL);
        vs = (visit_state){0};
        if (last != 0)
            (void)dsq_wal_scan(w, 0, last, visit, &vs, err, sizeof err);
        uint32_t segs;
        uint64_t bytes, first;
        dsq_wal_usage(w, &segs, &bytes, &first);
        dsq_wal_close(w);
    }
    clear_dir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool fix = (data[0] & 1) != 0;
    uint8_t *p = malloc(size - 1 ? size - 1 : 1);
    if (p == NULL)
        abort();
    memcpy(p, data + 1, size - 1);
    if (data[0] & 2) {
        log_dir(p, size - 1, fix);
    } else {
        if (fix)
            fix_records(p, size - 1, 0);
        one_record(p, size - 1);
    }
    free(p);
    return 0;
}
