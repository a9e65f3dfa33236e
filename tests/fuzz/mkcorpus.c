/* mkcorpus — write the binary seed inputs of the storage fuzz targets
 * (wal, ckpt, tier, pqread) with the engine's own writers, so that the seeds are
 * what dosqld writes. `make fuzz-corpus` runs it; the output is committed
 * under tests/fuzz/corpus/. Small pages (512 bytes) keep the files small.
 *
 *   mkcorpus OUT_DIR   (writes OUT_DIR/wal/, OUT_DIR/ckpt/, OUT_DIR/tier/, OUT_DIR/pqread/) */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/base64.h"
#include "common/buf.h"
#include "engine/storage/ckpt.h"
#include "engine/storage/disk.h"
#include "engine/storage/wal.h"
#include "engine/tier/warm.h"
#include "lake/parquet.h"

#define PAGE 512

static const char *out;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "mkcorpus: %s: %s\n", what, err);
    exit(1);
}

static void put(const char *target, const char *name, uint8_t opt, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(&opt, 1, 1, f) != 1 || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
        die(path, "cannot write");
}

static int mem_sink(void *ctx, const void *p, size_t n) { return dsq_buf_append(ctx, p, n); }

/* A small Parquet file of every type the writer has, in row groups of 5
 * rows and small pages, with nulls and a dictionary. */
static void parquet_seed(dsq_buf *f, dsq_pq_codec codec, bool dictionary)
{
    static const dsq_pq_column cols[] = {
        {"id", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, 1},
        {"n", DSQ_PQ_INT32, DSQ_PQ_PLAIN_TYPE, true, 2},
        {"s", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, 3},
        {"d", DSQ_PQ_DOUBLE, DSQ_PQ_PLAIN_TYPE, true, 4},
        {"b", DSQ_PQ_BOOLEAN, DSQ_PQ_PLAIN_TYPE, true, 5},
        {"ts", DSQ_PQ_INT64, DSQ_PQ_TIMESTAMP_US, false, 6},
    };
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.codec = codec;
    o.row_group_rows = 5;
    o.page_bytes = 16;
    o.dictionary = dictionary;
    char err[256];
    dsq_pq_writer *w = dsq_pq_open(cols, 6, &o, mem_sink, f, err, sizeof err);
    if (w == NULL)
        die("dsq_pq_open", err);
    static const char *const strs[] = {"", "red", "gr\xc3\xbcn"};
    for (int i = 0; i < 8; i++) {
        dsq_pq_value row[6] = {
            dsq_pq_int(i == 0 ? INT64_MIN : i * 1000003), i % 3 == 0 ? dsq_pq_null() : dsq_pq_int(i - 4),
            i % 4 == 1 ? dsq_pq_null() : dsq_pq_str(strs[i % 3]),
            i % 5 == 2 ? dsq_pq_null() : dsq_pq_double(i == 3 ? -0.0 : i / 4.0),
            i % 2 ? dsq_pq_null() : dsq_pq_bool(i % 4 == 0), dsq_pq_int(1700000000000000 + i),
        };
        if (dsq_pq_append(w, row) != 0)
            die("dsq_pq_append", dsq_pq_error(w));
    }
    if (dsq_pq_close(w, NULL, err, sizeof err) != 0)
        die("dsq_pq_close", err);
}

static void slurp(const char *path, dsq_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die(path, "cannot read");
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        dsq_buf_append(b, tmp, n);
    fclose(f);
}

/* Record `lsn` with npages pages (page i filled with lsn + i) and extra. */
static void record(dsq_buf *b, ZSTD_CCtx *cctx, uint64_t lsn, size_t npages, const char *extra, uint32_t extra_len)
{
    static uint8_t pages[4][PAGE];
    uint32_t pgnos[4];
    const uint8_t *pp[4];
    for (size_t i = 0; i < npages; i++) {
        memset(pages[i], (int)(lsn + i), PAGE);
        snprintf((char *)pages[i], PAGE, "page %zu of LSN %llu", i + 1, (unsigned long long)lsn);
        pgnos[i] = (uint32_t)(i + 1);
        pp[i] = pages[i];
    }
    dsq_wal_rec r = {.lsn = lsn, .time_us = 1700000000000000ull + lsn, .db_pages = (uint32_t)npages + 1,
                     .page_size = PAGE};
    if (dsq_wal_encode(b, cctx, 3, &r, npages, pgnos, pp, extra, extra_len) != 0)
        die("dsq_wal_encode", "failed");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus OUT_DIR\n");
        return 2;
    }
    out = argv[1];
    char tmp[] = "/tmp/dsq-mkcorpus-XXXXXX";
    if (mkdtemp(tmp) == NULL)
        die("mkdtemp", "failed");
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    char err[4400];

    /* ---- wal: single records (mode 0), then a log of two segments (mode 1) ---- */
    static char big_extra[300];
    for (size_t i = 0; i < sizeof big_extra; i++)
        big_extra[i] = "INSERT t row changes "[i % 21];
    dsq_buf rec = DSQ_BUF_INIT;
    record(&rec, cctx, 1, 2, "small extra", 11);
    put("wal", "record_two_pages", 1, rec.data, rec.len);
    put("wal", "record_two_pages_raw", 0, rec.data, rec.len);
    dsq_buf_reset(&rec);
    record(&rec, cctx, 7, 1, big_extra, sizeof big_extra);
    put("wal", "record_zstd_extra", 1, rec.data, rec.len);
    dsq_buf tail = DSQ_BUF_INIT; /* records 1..3, for the tier's tail objects */
    for (uint64_t lsn = 1; lsn <= 3; lsn++) {
        dsq_buf_reset(&rec);
        record(&rec, cctx, lsn, lsn == 2 ? 0 : 1, lsn == 3 ? "x" : NULL, lsn == 3 ? 1 : 0);
        dsq_buf_append(&tail, rec.data, rec.len);
    }

    char wdir[4200];
    snprintf(wdir, sizeof wdir, "%s/wal", tmp);
    dsq_wal_cfg wc = {.page_size = PAGE, .segment_bytes = 400, .known_durable = true};
    dsq_wal *w;
    uint64_t last;
    if (dsq_wal_open(wdir, &wc, 0, NULL, NULL, &w, &last, err, sizeof err) != 0)
        die("dsq_wal_open", err);
    for (uint64_t lsn = 1; lsn <= 4; lsn++) {
        dsq_buf_reset(&rec);
        record(&rec, cctx, lsn, lsn % 3, lsn == 4 ? big_extra : NULL, lsn == 4 ? 200 : 0);
        dsq_wal_loc loc;
        if (dsq_wal_append(w, rec.data, rec.len, lsn, &loc, err, sizeof err) != 0)
            die("dsq_wal_append", err);
    }
    uint64_t durable;
    if (dsq_wal_sync(w, &durable, err, sizeof err) != 0)
        die("dsq_wal_sync", err);
    dsq_wal_close(w);
    dsq_buf log = DSQ_BUF_INIT, seg1 = DSQ_BUF_INIT;
    for (uint32_t seq = 1;; seq++) {
        char path[4300];
        dsq_wal_seg_path(wdir, seq, path, sizeof path);
        if (access(path, R_OK) != 0)
            break;
        dsq_buf s = DSQ_BUF_INIT;
        slurp(path, &s);
        if (seq == 1)
            dsq_buf_append(&seg1, s.data, s.len);
        dsq_buf_append(&log, s.data, s.len);
        dsq_buf_free(&s);
    }
    put("wal", "log_segments", 3, log.data, log.len);
    put("wal", "log_one_segment", 3, seg1.data, seg1.len);
    put("wal", "log_torn_tail", 3, log.data, log.len - 13);

    /* ---- ckpt ---- */
    char cdir[4200];
    snprintf(cdir, sizeof cdir, "%s/ckpt", tmp);
    mkdir(cdir, 0700);
    dsq_ckpt_writer *cw = dsq_ckpt_begin(cdir, 4, 1700000000000004ull, 3, 2, PAGE, 3, err, sizeof err);
    if (cw == NULL)
        die("dsq_ckpt_begin", err);
    for (uint32_t pg = 1; pg <= 3; pg++) {
        uint8_t page[PAGE];
        memset(page, (int)pg, sizeof page);
        size_t bound = ZSTD_compressBound(PAGE);
        uint8_t *frame = malloc(bound);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
        size_t clen = ZSTD_compress2(cctx, frame, bound, page, PAGE);
        if (ZSTD_isError(clen) || dsq_ckpt_add(cw, pg, frame, (uint32_t)clen) != 0)
            die("dsq_ckpt_add", "failed");
        free(frame);
    }
    dsq_ckpt ck;
    if (dsq_ckpt_finish(cw, &ck, err, sizeof err) != 0)
        die("dsq_ckpt_finish", err);
    dsq_buf cf = DSQ_BUF_INIT;
    slurp(ck.path, &cf);
    dsq_ckpt_close(&ck, 1);
    put("ckpt", "three_pages", 1, cf.data, cf.len);
    put("ckpt", "three_pages_raw", 0, cf.data, cf.len);
    put("ckpt", "truncated", 1, cf.data, cf.len - 20);

    /* ---- tier: manifests (mode 0, 1 restored), a sidecar (2), a tail (3) ---- */
    dsq_buf m = DSQ_BUF_INIT, b64 = DSQ_BUF_INIT, fmt = DSQ_BUF_INIT;
    dsq_buf_printf(&fmt, "dosqld-db 1 page_size %d\n", PAGE);
    dsq_buf_puts(&m, "{\"format\":\"dosqld-manifest 1\",\"db\":\"f\",\"lsn\":4,\"time\":1795671662856,"
                    "\"chunk\":2097152,\"next\":4,\"files\":[");
    dsq_base64_encode(&b64, fmt.data, fmt.len);
    dsq_buf_printf(&m, "{\"name\":\"format\",\"id\":1,\"size\":%zu,\"ino\":7,\"mtime\":8,\"append\":false,\"crc\":%u,"
                   "\"chunks\":[],\"data\":\"%.*s\"},",
                   fmt.len, dsq_crc32(fmt.data, fmt.len), (int)b64.len, b64.data);
    dsq_buf_reset(&b64);
    dsq_base64_encode(&b64, seg1.data, seg1.len);
    dsq_buf_printf(&m, "{\"name\":\"wal/00000001.seg\",\"id\":2,\"size\":%zu,\"ino\":9,\"mtime\":10,\"append\":true,"
                   "\"crc\":%u,\"chunks\":[],\"data\":\"%.*s\"},",
                   seg1.len, dsq_crc32(seg1.data, seg1.len), (int)b64.len, b64.data);
    /* Restored: every file inline (chunk objects are not in the harness's store). */
    dsq_buf mi = DSQ_BUF_INIT;
    dsq_buf_append(&mi, m.data, m.len);
    dsq_buf_reset(&b64);
    dsq_base64_encode(&b64, cf.data, cf.len);
    dsq_buf_printf(&mi, "{\"name\":\"ckpt/0000000000000001.ckpt\",\"id\":3,\"size\":%zu,\"ino\":5,\"mtime\":6,"
                   "\"append\":false,\"crc\":%u,\"chunks\":[],"
                   "\"data\":\"%.*s\"}]}",
                   cf.len, dsq_crc32(cf.data, cf.len), (int)b64.len, b64.data);
    put("tier", "manifest_restore", 0x11, mi.data, mi.len);
    put("tier", "manifest_restore_cut", 0x31, mi.data, mi.len);
    dsq_buf_free(&mi);
    /* Parsed only: a file in chunk objects. */
    dsq_buf_printf(&m, "{\"name\":\"ckpt/0000000000000004.ckpt\",\"id\":3,\"size\":%zu,\"ino\":5,\"mtime\":6,"
                   "\"append\":false,\"chunks\":[[%zu,%u]]}]}",
                   cf.len, cf.len, dsq_crc32(cf.data, cf.len));
    put("tier", "manifest", 0x10, m.data, m.len);
    dsq_buf whole = DSQ_BUF_INIT;
    dsq_buf_printf(&whole, "%.*s\n#crc32 %08x\n", (int)m.len, m.data, dsq_crc32(m.data, m.len));
    put("tier", "manifest_with_trailer", 0x00, whole.data, whole.len);

    dsq_cold_chunk chunks[2] = {{0, 300, 0x1234abcd}, {300, 120, 7}};
    dsq_cold cold = {.id = 9, .size = 420, .lsn = 3, .n = 2, .chunks = chunks};
    snprintf(cold.db, sizeof cold.db, "db.name-1");
    char cpath[4300];
    snprintf(cpath, sizeof cpath, "%s/x.cold", tmp);
    if (dsq_cold_write(cpath, &cold, err, sizeof err) != 0)
        die("dsq_cold_write", err);
    dsq_buf cb = DSQ_BUF_INIT;
    slurp(cpath, &cb);
    put("tier", "sidecar", 0x02, cb.data, cb.len);
    /* Its text without the trailer, for the harness to add. */
    const char *tr = strstr(cb.data, "#crc32 ");
    put("tier", "sidecar_fixed", 0x12, cb.data, tr ? (size_t)(tr - cb.data) : cb.len);
    put("tier", "tail_records", 0x73, tail.data, tail.len);
    const char *key = "db/f/tail/0000000000000000-0000000000000003";
    put("tier", "tail_key", 0x03, key, strlen(key));

    /* ---- pqread: Parquet files (option bit 0: the harness rewrites the magic) ---- */
    dsq_buf pq = DSQ_BUF_INIT;
    parquet_seed(&pq, DSQ_PQ_ZSTD, true);
    put("pqread", "zstd_dictionary", 0x01, pq.data, pq.len);
    dsq_buf_reset(&pq);
    parquet_seed(&pq, DSQ_PQ_UNCOMPRESSED, true);
    put("pqread", "uncompressed_dictionary", 0x00, pq.data, pq.len);
    dsq_buf_reset(&pq);
    parquet_seed(&pq, DSQ_PQ_UNCOMPRESSED, false);
    put("pqread", "uncompressed_plain", 0x01, pq.data, pq.len);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        die(tmp, "cannot remove");
    dsq_buf *bufs[] = {&rec, &tail, &log, &seg1, &cf, &m, &b64, &fmt, &whole, &cb, &pq};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        dsq_buf_free(bufs[i]);
    ZSTD_freeCCtx(cctx);
    return 0;
}
