/* Unit tests: engine/tier/warm — cold files' sidecars (round trip, damage),
 * and the warm cache against a file:// store: a miss starts one fetch and
 * fails the read, the wait ends when the chunk is in, the read then hits;
 * reads across chunks; several misses of one chunk share one GET; a chunk
 * that arrives damaged is fetched three times, then the wait fails; a
 * missing object fails; a store that does not answer ends the wait at the
 * timeout; the byte budget drops the least recently used chunk; a scan
 * fetches the next chunks ahead. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/tier/objstore.h"
#include "engine/tier/warm.h"
#include "tests/unit/support/wait.h"

static char root[256];

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/dsq-warm-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(warm, .init = setup, .fini = teardown);

/* ---- sidecars ---- */

static dsq_cold *cold_new(const char *db, uint64_t id, size_t n, const uint64_t *lens, const uint32_t *crcs)
{
    dsq_cold *c = calloc(1, sizeof *c);
    c->chunks = calloc(n, sizeof *c->chunks);
    snprintf(c->db, sizeof c->db, "%s", db);
    c->id = id;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        c->chunks[i] = (dsq_cold_chunk){c->size, lens[i], crcs[i]};
        c->size += lens[i];
    }
    return c;
}

Test(warm, sidecar_round_trip_and_damage)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/x.ckpt.cold", root);
    dsq_cold *got = NULL;
    cr_assert_eq(dsq_cold_load(path, &got, err, sizeof err), 0, "no sidecar: 0");
    uint64_t lens[3] = {65536, 65536, 100};
    uint32_t crcs[3] = {1, 0xdeadbeef, 3};
    dsq_cold *c = cold_new("db.one", 42, 3, lens, crcs);
    c->lsn = 1234567;
    cr_assert_eq(dsq_cold_write(path, c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq_cold_load(path, &got, err, sizeof err), 1, "%s", err);
    cr_assert_str_eq(got->db, "db.one");
    cr_assert_eq(got->id, 42);
    cr_assert_eq(got->size, 131172);
    cr_assert_eq(got->lsn, 1234567);
    cr_assert_eq(got->n, 3);
    cr_assert_eq(got->chunks[1].off, 65536);
    cr_assert_eq(got->chunks[1].crc, 0xdeadbeef);
    cr_assert_eq(got->chunks[2].len, 100);
    dsq_cold_free(got);
    /* One byte changed anywhere: refused. */
    FILE *f = fopen(path, "r+");
    fseek(f, 20, SEEK_SET);
    fputc('9', f);
    fclose(f);
    cr_assert_eq(dsq_cold_load(path, &got, err, sizeof err), -1);
    cr_assert(strstr(err, "damaged") != NULL, "%s", err);
    dsq_cold_free(c);
}

/* ---- the cache ---- */

static dsq_obj *file_store(void)
{
    char url[300], err[256];
    snprintf(url, sizeof url, "file://%s/objects", root);
    dsq_obj_cfg cfg = {.url = url};
    dsq_obj *o = dsq_obj_open(&cfg, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    return o;
}

static dsq_warm *cache(dsq_obj *o, uint64_t max, uint64_t timeout_ms)
{
    char dir[300], err[256];
    snprintf(dir, sizeof dir, "%s/warm", root);
    dsq_warm *w = dsq_warm_open(o, dir, max, timeout_ms, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    return w;
}

/* Put chunk idx of (db, id) holding `len` bytes of pattern `seed`;
 * returns its CRC. */
static uint32_t put_chunk(dsq_obj *o, const char *db, uint64_t id, size_t idx, size_t len, int seed)
{
    uint8_t *b = malloc(len);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(seed * 31 + i * 7);
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_PUT;
    dsq_chunk_key(r.key, sizeof r.key, db, id, idx, len);
    r.body = b;
    r.body_len = len;
    cr_assert_eq(dsq_obj_run(o, &r), DSQ_OBJ_OK, "%s", r.msg);
    dsq_obj_req_clear(&r);
    uint32_t crc = dsq_crc32(b, len);
    free(b);
    return crc;
}

typedef struct waited {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls, how;
    char msg[256];
} waited;

static void on_wait(void *ud, int how, const char *msg)
{
    waited *w = ud;
    pthread_mutex_lock(&w->mu);
    w->calls++;
    w->how = how;
    snprintf(w->msg, sizeof w->msg, "%s", msg);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static uint64_t fetches(dsq_warm *w)
{
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    return n.fetches;
}

/* Take this thread's miss and wait for it (at most 10 s); returns how. */
static int wait_miss(dsq_warm *w, waited *out)
{
    *out = (waited){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    dsq_warm_chunk *k = dsq_cold_miss_take();
    cr_assert_not_null(k, "a miss is noted");
    cr_assert_null(dsq_cold_miss_take(), "and taken once");
    dsq_warm_wait(w, k, on_wait, out);
    pthread_mutex_lock(&out->mu);
    uint64_t until = dsq_now_ms() + 10000;
    while (out->calls == 0 && dsq_now_ms() < until)
        dsq_cond_wait_ms(&out->cv, &out->mu, 50);
    pthread_mutex_unlock(&out->mu);
    cr_assert_eq(out->calls, 1, "the callback ran once");
    dsq_warm_release(w, k); /* the miss's reference (it pinned the chunk) */
    return out->how;
}

static void expect_pattern(const uint8_t *p, size_t n, int seed, size_t from)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(p[i], (uint8_t)(seed * 31 + (from + i) * 7), "byte %zu", i);
}

Test(warm, a_miss_fetches_once_then_reads_hit, .timeout = 30)
{
    dsq_obj *o = file_store();
    uint64_t lens[2] = {65536, 30000};
    uint32_t crcs[2] = {put_chunk(o, "d", 7, 0, 65536, 1), put_chunk(o, "d", 7, 1, 30000, 2)};
    dsq_cold *c = cold_new("d", 7, 2, lens, crcs);
    dsq_warm *w = cache(o, 1 << 20, 5000);
    uint8_t buf[8192];
    char err[512];
    cr_assert_eq(dsq_warm_read(w, c, 100, buf, 4000, err, sizeof err), DSQ_COLD_MISS);
    cr_assert(dsq_cold_missed());
    /* A second miss of the same chunk before it is in: one GET for both. */
    int again = dsq_warm_read(w, c, 200, buf, 10, err, sizeof err);
    cr_assert(again == DSQ_COLD_MISS || again == 0);
    waited wt;
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_READY, "%s", wt.msg);
    cr_assert_eq(dsq_warm_read(w, c, 100, buf, 4000, err, sizeof err), 0, "%s", err);
    expect_pattern(buf, 4000, 1, 100);
    /* Across the two chunks: the second one is fetched first. */
    cr_assert_eq(dsq_warm_read(w, c, 65536 - 100, buf, 300, err, sizeof err), DSQ_COLD_MISS);
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_READY, "%s", wt.msg);
    cr_assert_eq(dsq_warm_read(w, c, 65536 - 100, buf, 300, err, sizeof err), 0, "%s", err);
    expect_pattern(buf, 100, 1, 65436);
    expect_pattern(buf + 100, 200, 2, 0);
    cr_assert_eq(dsq_warm_read(w, c, 95000, buf, 1000, err, sizeof err), -1, "past the end");
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.fetches, 2, "one GET per chunk, not %llu", (unsigned long long)n.fetches);
    cr_assert_eq(n.fetch_bytes, 95536);
    cr_assert_eq(n.chunks, 2);
    cr_assert_eq(n.bytes, 95536);
    cr_assert_geq(n.hits, 3);
    cr_assert_geq(n.misses, 2);
    cr_assert_eq(n.errors, 0);
    dsq_warm_close(w);
    dsq_obj_close(o);
    dsq_cold_free(c);
}

Test(warm, damaged_chunks_are_fetched_three_times_then_fail, .timeout = 30)
{
    dsq_obj *o = file_store();
    uint64_t lens[1] = {5000};
    uint32_t crcs[1] = {put_chunk(o, "d", 1, 0, 5000, 3) ^ 1}; /* the store's bytes do not match */
    dsq_cold *c = cold_new("d", 1, 1, lens, crcs);
    dsq_warm *w = cache(o, 1 << 20, 5000);
    uint8_t buf[100];
    char err[512];
    cr_assert_eq(dsq_warm_read(w, c, 0, buf, 100, err, sizeof err), DSQ_COLD_MISS);
    waited wt;
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_FAILED);
    cr_assert(strstr(wt.msg, "damaged 3 times") != NULL, "%s", wt.msg);
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.errors, 1);
    cr_assert_eq(n.fetches, 0);
    cr_assert_eq(n.chunks, 0);
    /* The next read asks again (and fails the same way). */
    cr_assert_eq(dsq_warm_read(w, c, 0, buf, 100, err, sizeof err), DSQ_COLD_MISS);
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_FAILED);
    /* A chunk the store does not have. */
    dsq_cold *gone = cold_new("d", 99, 1, lens, crcs);
    cr_assert_eq(dsq_warm_read(w, gone, 0, buf, 100, err, sizeof err), DSQ_COLD_MISS);
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_FAILED);
    cr_assert(strstr(wt.msg, "no such object") != NULL, "%s", wt.msg);
    dsq_warm_close(w);
    dsq_obj_close(o);
    dsq_cold_free(c);
    dsq_cold_free(gone);
}

Test(warm, the_budget_drops_the_least_recently_used, .timeout = 30)
{
    dsq_obj *o = file_store();
    uint64_t lens[3] = {40000, 40000, 40000};
    uint32_t crcs[3];
    for (int i = 0; i < 3; i++)
        crcs[i] = put_chunk(o, "d", 5, (size_t)i, 40000, 10 + i);
    dsq_cold *c = cold_new("d", 5, 3, lens, crcs);
    dsq_warm *w = cache(o, 90000, 5000); /* two chunks fit */
    uint8_t buf[16];
    char err[512];
    waited wt;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(dsq_warm_read(w, c, (uint64_t)i * 40000, buf, 16, err, sizeof err), DSQ_COLD_MISS);
        cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_READY, "%s", wt.msg);
        if (i == 1) /* chunk 0 used again: chunk 1 is now the oldest */
            cr_assert_eq(dsq_warm_read(w, c, 0, buf, 16, err, sizeof err), 0, "%s", err);
    }
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.chunks, 2);
    cr_assert_eq(n.bytes, 80000);
    cr_assert_eq(dsq_warm_read(w, c, 0, buf, 16, err, sizeof err), 0, "chunk 0 stayed: %s", err);
    cr_assert_eq(dsq_warm_read(w, c, 80000, buf, 16, err, sizeof err), 0, "chunk 2 stayed: %s", err);
    cr_assert_eq(dsq_warm_read(w, c, 40000, buf, 16, err, sizeof err), DSQ_COLD_MISS, "chunk 1 went");
    dsq_cold_src src = dsq_warm_source(w);
    dsq_cold_miss_clear(&src);
    dsq_warm_close(w);
    dsq_obj_close(o);
    dsq_cold_free(c);
}

Test(warm, a_store_that_does_not_answer_ends_the_wait_at_the_timeout, .timeout = 30)
{
    /* Listening, never accepting: requests hang until their own timeout. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char ep[64], err[512];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    dsq_obj_cfg cfg = {.url = "s3://bucket/p", .endpoint = ep, .access_key = "k", .secret_key = "s",
                       .timeout_ms = 1500, .connect_timeout_ms = 1500, .retries = 0};
    dsq_obj *o = dsq_obj_open(&cfg, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    uint64_t lens[1] = {100};
    uint32_t crcs[1] = {0};
    dsq_cold *c = cold_new("d", 1, 1, lens, crcs);
    dsq_warm *w = cache(o, 1 << 20, 200);
    uint8_t buf[10];
    cr_assert_eq(dsq_warm_read(w, c, 0, buf, 10, err, sizeof err), DSQ_COLD_MISS);
    uint64_t t0 = dsq_now_ms();
    waited wt;
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_TIMEOUT, "%s", wt.msg);
    uint64_t took = dsq_now_ms() - t0;
    cr_assert_geq(took, 150, "%llu ms", (unsigned long long)took);
    cr_assert_lt(took, 1400, "the cache's timeout, not the store's: %llu ms", (unsigned long long)took);
    cr_assert(strstr(wt.msg, "within 200 ms") != NULL, "%s", wt.msg);
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.timeouts, 1);
    dsq_warm_close(w); /* waits for the fetch to end (the store's timeout) */
    dsq_obj_close(o);
    dsq_cold_free(c);
    close(fd);
}

Test(warm, a_scan_fetches_the_next_chunks_ahead, .timeout = 30)
{
    dsq_obj *o = file_store();
    uint64_t lens[6];
    uint32_t crcs[6];
    for (int i = 0; i < 6; i++) {
        lens[i] = 10000;
        crcs[i] = put_chunk(o, "d", 9, (size_t)i, 10000, 20 + i);
    }
    dsq_cold *c = cold_new("d", 9, 6, lens, crcs);
    dsq_warm *w = cache(o, 1 << 20, 5000);
    uint8_t buf[16];
    char err[512];
    waited wt;
    /* A point read: one chunk. */
    cr_assert_eq(dsq_warm_read(w, c, 0, buf, 16, err, sizeof err), DSQ_COLD_MISS);
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_READY, "%s", wt.msg);
    dsq_warm_counts n;
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.fetches, 1);
    /* The next chunk missed too: a scan; three more come along. */
    cr_assert_eq(dsq_warm_read(w, c, 10000, buf, 16, err, sizeof err), DSQ_COLD_MISS);
    cr_assert_eq(wait_miss(w, &wt), DSQ_WARM_READY, "%s", wt.msg);
    WAIT_UNTIL(fetches(w) >= 5, WAIT_MS, "chunks 2 to 4 fetched ahead: %llu", (unsigned long long)fetches(w));
    dsq_warm_counts_get(w, &n);
    cr_assert_eq(n.fetches, 5, "chunks 2 to 4 fetched ahead: %llu", (unsigned long long)n.fetches);
    for (int i = 2; i <= 4; i++) {
        cr_assert_eq(dsq_warm_read(w, c, (uint64_t)i * 10000 + 5, buf, 16, err, sizeof err), 0, "%s", err);
        expect_pattern(buf, 16, 20 + i, 5);
    }
    dsq_warm_close(w);
    dsq_obj_close(o);
    dsq_cold_free(c);
}
