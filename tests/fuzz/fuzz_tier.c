/* fuzz_tier — what the tier reads back from the object store
 * (engine/tier/tier.c) and the cold-file sidecars beside evicted files
 * (engine/tier/warm.c).
 *
 * Input: byte 0 = mode (bits 0-1) and options; the rest is the object:
 *   0  a manifest: dsq__manifest_decode, and what it decoded encoded
 *      (dsq__manifest_encode) and decoded again, to the same manifest;
 *   1  a manifest restored from: it is put in a file:// store (one per
 *      process, under /dev/shm) and dsq_tier_restore materializes the
 *      database from it (inline files written, the log opened and
 *      recovered; bit 5: only up to LSN 1, so the log is cut back too);
 *   2  a cold sidecar: dsq_cold_load;
 *   3  a tail object's body: dsq__tier_tail_whole after LSN 0 up to
 *      (byte 0 >> 5), and its first bytes as a tail key (tail_range).
 * Bit 4 (modes 0-2), the harness makes the checksums right so that the
 * fuzzer gets past them: for a manifest, each inline file's size and
 * CRC-32 from its data, then the "#crc32" trailer; for a sidecar, the
 * trailer; for a tail, every record's CRCs. */
#include <jansson.h>
#include <sys/stat.h>

#include "common/base64.h"
#include "engine/storage/disk.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/wal.h"
#include "engine/tier/objstore.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"
#include "tests/fuzz/fuzz.h"

static dsq_obj *obj;
static dsq_tier *tier;
static char data_dir[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    char url[300], err[512];
    snprintf(url, sizeof url, "file://%s/objects", fuzz_scratch());
    snprintf(data_dir, sizeof data_dir, "%s/data", fuzz_scratch());
    mkdir(data_dir, 0700);
    char base[300];
    snprintf(base, sizeof base, "%s/db", data_dir);
    mkdir(base, 0700);
    dsq_obj_cfg oc = {.url = url};
    obj = dsq_obj_open(&oc, err, sizeof err);
    dsq_tier_cfg tc = {.obj = obj, .data_dir = data_dir, .threads = 1, .parallel = 2};
    if (obj == NULL || (tier = dsq_tier_start(&tc, err, sizeof err)) == NULL) {
        fprintf(stderr, "fuzz_tier: %s\n", err);
        abort();
    }
    return 0;
}

/* text + "SEP#crc32 XXXXXXXX\n" with the CRC-32 of text: manifests end so
 * with SEP "\n", sidecars (whose text ends in a newline) with "". */
static char *with_trailer(const char *p, size_t n, const char *sep, size_t *len)
{
    char *out = malloc(n + 32);
    if (out == NULL)
        abort();
    memcpy(out, p, n);
    *len = n + (size_t)snprintf(out + n, 32, "%s#crc32 %08x\n", sep, dsq_crc32(p, n));
    return out;
}

/* Each inline file's size and CRC made to match its data. */
static void fix_inline(json_t *m)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(m, "files"), i, f) {
        const char *b64 = json_string_value(json_object_get(f, "data"));
        if (b64 == NULL)
            continue;
        size_t bl = strlen(b64);
        unsigned char *buf = malloc(bl / 4 * 3 + 3);
        long got = buf ? dsq_base64_decode(b64, bl, buf) : -1;
        if (got >= 0) {
            json_object_set_new(f, "size", json_integer(got));
            json_object_set_new(f, "crc", json_integer(dsq_crc32(buf, (size_t)got)));
        }
        free(buf);
    }
}

static char *manifest_bytes(const uint8_t *p, size_t n, bool fix, size_t *len)
{
    if (!fix) {
        char *out = malloc(n ? n : 1);
        if (out == NULL)
            abort();
        memcpy(out, p, n);
        *len = n;
        return out;
    }
    json_error_t je;
    json_t *m = json_loadb((const char *)p, n, 0, &je);
    char *text = NULL;
    if (m != NULL) {
        fix_inline(m);
        text = json_dumps(m, JSON_COMPACT);
        json_decref(m);
    }
    char *out = text ? with_trailer(text, strlen(text), "\n", len) : with_trailer((const char *)p, n, "\n", len);
    free(text);
    return out;
}

/* m encoded and decoded again is m. */
static void round_trip(const dsq_manifest *m)
{
    size_t len;
    char *text = dsq__manifest_encode(m, &len), err[300];
    dsq_manifest *again = NULL;
    if (text == NULL || dsq__manifest_decode(text, len, m->db, &again, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tier: a manifest encoded does not decode: %s\n", text ? err : "out of memory");
        abort();
    }
    if (again->lsn != m->lsn || again->time_ms != m->time_ms || again->chunk_bytes != m->chunk_bytes ||
        again->next != m->next || !dsq__manifest_files_equal(again, m)) {
        fprintf(stderr, "fuzz_tier: a manifest encoded and decoded again differs:\n%.*s", (int)len, text);
        abort();
    }
    dsq__manifest_release(again);
    free(text);
}

static void restore(const char *text, size_t len, uint8_t opt)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_PUT;
    snprintf(r.key, sizeof r.key, "db/f/manifest.json");
    r.body = text;
    r.body_len = len;
    if (dsq_obj_run(obj, &r) != DSQ_OBJ_OK) {
        fprintf(stderr, "fuzz_tier: cannot put the manifest: %s\n", r.msg);
        abort();
    }
    dsq_obj_req_clear(&r);
    char err[4400];
    uint64_t at;
    int rc = dsq_tier_restore(tier, "f", (opt & 0x20) ? 1 : 0, 0, &at, err, sizeof err);
    fuzz_note("dsq_tier_restore", rc, err);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/db/f", data_dir);
    (void)dsq_ps_remove(dir, err, sizeof err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    bool fix = (opt & 0x10) != 0;
    switch (opt & 3) {
    case 0:
    case 1: {
        size_t len;
        char *text = manifest_bytes(p, n, fix, &len);
        dsq_manifest *m = NULL;
        char err[300];
        int rc = dsq__manifest_decode(text, len, "f", &m, err, sizeof err);
        fuzz_note("dsq__manifest_decode", rc, err);
        if (m != NULL)
            round_trip(m);
        if (m != NULL && (opt & 3) == 1)
            restore(text, len, opt);
        dsq__manifest_release(m);
        free(text);
        break;
    }
    case 2: {
        size_t len = n;
        char *text = fix ? with_trailer((const char *)p, n, "", &len) : NULL;
        char path[512], err[4400];
        snprintf(path, sizeof path, "%s/x.cold", fuzz_scratch());
        fuzz_write(path, text ? text : (const char *)p, len);
        dsq_cold *c = NULL;
        int rc = dsq_cold_load(path, &c, err, sizeof err);
        fuzz_note("dsq_cold_load", rc != 1, err);
        if (rc == 1) {
            uint64_t at = 0;
            for (size_t i = 0; i < c->n; i++) {
                if (c->chunks[i].off != at) {
                    fprintf(stderr, "sidecar chunk %zu is not where the one before ends\n", i);
                    abort();
                }
                at += c->chunks[i].len;
            }
        }
        dsq_cold_free(c);
        free(text);
        break;
    }
    default: {
        uint8_t *rec = malloc(n ? n : 1);
        if (rec == NULL)
            abort();
        memcpy(rec, p, n);
        for (size_t off = 0; fix && off + DSQ_WAL_REC_HDR <= n;) {
            dsq_put32(rec + off + 44, dsq_crc32(rec + off, 44));
            uint32_t len = dsq_get32(rec + off + 8);
            if (len % 8 != 0 || len < DSQ_WAL_REC_HDR + 8 || len > n - off)
                break;
            dsq_put32(rec + off + len - 8, dsq_crc32(rec + off, len - 8));
            off += len;
        }
        fuzz_note("dsq__tier_tail_whole", !dsq__tier_tail_whole(rec, n, 0, opt >> 5), NULL);
        char key[65];
        size_t kl = n < 64 ? n : 64;
        memcpy(key, p, kl);
        key[kl] = '\0';
        uint64_t a, b;
        (void)dsq__tier_tail_range(key, &a, &b);
        free(rec);
        break;
    }
    }
    return 0;
}
