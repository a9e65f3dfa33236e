/* Unit tests: engine/storage/pagestore — the descriptors a database holds
 * stay within max_open_files (plus the log's newest segments) however many
 * checkpoints and segments it keeps, while reads of every page, now and
 * as of old LSNs (time travel), still reach them all. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/storage/ckpt.h"
#include "engine/storage/cold.h"
#include "engine/storage/disk.h"
#include "engine/storage/pagestore.h"

#define PAGE 4096
#define NPAGES 40
#define COMMITS 200
#define PER_COMMIT 4
#define CKPT_EVERY 5
#define MAX_OPEN 4
/* Besides the reads': the newest segment, open for appends, and a sealed
 * one until a sync covers it (here a checkpoint's, every 5 commits,
 * while a segment holds about 8). */
#define BOUND (MAX_OPEN + 2)

static char dir[64];
static dsq_ps *ps;
/* writer[lsn][pgno]: the LSN whose commit wrote the version of page pgno
 * that the database holds as of lsn (0: never written). */
static uint32_t writer[COMMITS + 1][NPAGES + 1];

/* The content commit `lsn` wrote to page `pgno`: 2 KiB of noise (so a
 * record is several KiB and segments fill) and zeros. */
static void gen(uint32_t pgno, uint32_t lsn, uint8_t *out)
{
    memset(out, 0, PAGE);
    uint32_t x = pgno * 2654435761u ^ lsn * 40503u ^ 0x9e3779b9u;
    for (size_t i = 0; i < PAGE / 2; i += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(out + i, &x, 4);
    }
    memcpy(out, &lsn, 4);
    memcpy(out + 4, &pgno, 4);
}

/* Descriptors of this process open on files under dir. */
static int fds_in_dir(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    struct dirent *de;
    int n = 0;
    size_t len = strlen(dir);
    while ((de = readdir(d)) != NULL) {
        char link[300], target[4200];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if ((size_t)k > len && strncmp(target, dir, len) == 0 && target[len] == '/')
            n++;
    }
    closedir(d);
    return n;
}

static void open_store(void)
{
    char err[512] = "";
    dsq_ps_cfg cfg = {.page_size = PAGE, .segment_bytes = 64 << 10, .zstd_level = 1,
                      .max_txn_bytes = 64u << 20, .checkpoint_bytes = 1ull << 40,
                      .retention_us = 86400ull * 1000000, .max_open_files = MAX_OPEN};
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/dsq-ps-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    open_store();
}

static void teardown(void)
{
    dsq_ps_close(ps);
    ps = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(pagestore, .init = setup, .fini = teardown);

/* COMMITS commits of PER_COMMIT pages each, a checkpoint every
 * CKPT_EVERY: many checkpoints and log segments, all kept (24 h of
 * history). */
static void write_history(void)
{
    static uint8_t page[PAGE];
    char err[512] = "";
    uint32_t rnd = 12345;
    for (uint32_t lsn = 1; lsn <= COMMITS; lsn++) {
        memcpy(writer[lsn], writer[lsn - 1], sizeof writer[lsn]);
        for (int k = 0; k < PER_COMMIT; k++) {
            rnd = rnd * 1103515245u + 12345u;
            uint32_t pgno = lsn == 1 ? (uint32_t)NPAGES - (uint32_t)k : 1 + (rnd >> 8) % NPAGES;
            gen(pgno, lsn, page);
            cr_assert_eq(dsq_ps_write(ps, pgno, page), 0, "%s", dsq_ps_error(ps));
            writer[lsn][pgno] = lsn;
        }
        cr_assert_eq(dsq_ps_commit(ps), 0, "%s", dsq_ps_error(ps));
        cr_assert_eq(dsq_ps_lsn(ps), lsn);
        if (lsn % CKPT_EVERY == 0)
            cr_assert_eq(dsq_ps_checkpoint(ps, err, sizeof err), 0, "%s", err);
        cr_assert_leq(fds_in_dir(), BOUND, "after commit %u: %d descriptors", lsn, fds_in_dir());
    }
    dsq_ps_usage_t u;
    dsq_ps_usage(ps, &u);
    cr_assert_geq(u.checkpoints, COMMITS / CKPT_EVERY, "checkpoints %u", u.checkpoints);
    cr_assert_geq(u.segments, 10, "segments %u", u.segments);
}

static void check_page(uint32_t pgno, uint32_t as_of, const uint8_t *got)
{
    static uint8_t want[PAGE];
    uint32_t w = writer[as_of][pgno];
    if (w == 0)
        memset(want, 0, PAGE);
    else
        gen(pgno, w, want);
    cr_assert(memcmp(got, want, PAGE) == 0, "page %u as of %u: want the version of commit %u", pgno, as_of, w);
}

Test(pagestore, descriptors_stay_bounded_while_every_version_reads)
{
    write_history();
    static uint8_t page[PAGE];
    /* Now: the pages' newest versions lie in every checkpoint. */
    for (uint32_t p = 1; p <= NPAGES; p++) {
        cr_assert_eq(dsq_ps_read(ps, p, page), 0, "%s", dsq_ps_error(ps));
        check_page(p, COMMITS, page);
    }
    cr_assert_leq(fds_in_dir(), BOUND, "%d descriptors", fds_in_dir());
    cr_assert_leq(dsq_ps_read_fds(ps), MAX_OPEN);
    /* Time travel: views at old LSNs read checkpoints and log segments
     * from the whole history. */
    char err[512] = "";
    for (uint32_t lsn = 1; lsn <= COMMITS; lsn += 7) {
        dsq_ps_view *v;
        cr_assert_eq(dsq_ps_view_open(ps, lsn, &v, err, sizeof err), 0, "LSN %u: %s", lsn, err);
        for (uint32_t p = 1; p <= NPAGES; p++) {
            cr_assert_eq(dsq_ps_view_read_part(v, p, 0, PAGE, page), 0, "LSN %u page %u: %s", lsn, p,
                         dsq_ps_error(ps));
            check_page(p, lsn, page);
        }
        dsq_ps_view_close(v);
        cr_assert_leq(fds_in_dir(), BOUND, "after the view at %u: %d descriptors", lsn, fds_in_dir());
    }
    /* Reopened: recovery does not keep them open either, and reads go on. */
    dsq_ps_close(ps);
    ps = NULL;
    cr_assert_eq(fds_in_dir(), 0);
    open_store();
    cr_assert_leq(fds_in_dir(), BOUND, "after reopening: %d descriptors", fds_in_dir());
    cr_assert_eq(dsq_ps_lsn(ps), COMMITS);
    for (uint32_t p = 1; p <= NPAGES; p++) {
        cr_assert_eq(dsq_ps_read(ps, p, page), 0, "%s", dsq_ps_error(ps));
        check_page(p, COMMITS, page);
    }
    dsq_ps_view *v;
    cr_assert_eq(dsq_ps_view_open(ps, 3, &v, err, sizeof err), 0, "%s", err);
    for (uint32_t p = 1; p <= NPAGES; p++) {
        cr_assert_eq(dsq_ps_view_read_part(v, p, 0, PAGE, page), 0, "%s", dsq_ps_error(ps));
        check_page(p, 3, page);
    }
    dsq_ps_view_close(v);
    cr_assert_leq(fds_in_dir(), BOUND, "%d descriptors", fds_in_dir());
}

/* ---- replication: a copy applies the records the primary's commits made ---- */

typedef struct recs {
    dsq_buf all;      /* the records, back to back */
    size_t off[64];   /* where each starts */
    size_t len[64];
    uint64_t lsn[64];
    size_t n;
} recs;

static void keep_record(void *ud, uint64_t lsn, const void *rec, size_t len)
{
    recs *r = ud;
    cr_assert_lt(r->n, 64);
    r->off[r->n] = r->all.len;
    r->len[r->n] = len;
    r->lsn[r->n] = lsn;
    r->n++;
    cr_assert_eq(dsq_buf_append(&r->all, rec, len), 0);
}

static dsq_ps *open_at(const char *d, recs *r)
{
    char err[512] = "";
    dsq_ps_cfg cfg = {.page_size = PAGE, .segment_bytes = 64 << 10, .zstd_level = 1,
                      .max_txn_bytes = 64u << 20, .checkpoint_bytes = 1ull << 40,
                      .retention_us = 86400ull * 1000000, .max_open_files = MAX_OPEN,
                      .on_commit = r ? keep_record : NULL, .on_commit_ud = r};
    dsq_ps *s = NULL;
    cr_assert_eq(dsq_ps_open(d, &cfg, &s, err, sizeof err), 0, "%s", err);
    return s;
}

/* Every commit's record reaches on_commit as logged; a second store that
 * applies them holds the same pages, keeps them across a reopen, and
 * refuses a record out of order, a damaged one, or one of another page
 * size. */
Test(pagestore, a_copy_applies_the_records_of_each_commit)
{
    char copy[64];
    snprintf(copy, sizeof copy, "/tmp/dsq-ps-copy-XXXXXX");
    cr_assert_not_null(mkdtemp(copy));
    dsq_ps_close(ps);
    recs r = {.all = DSQ_BUF_INIT};
    ps = open_at(dir, &r);
    static uint8_t page[PAGE], got[PAGE];
    for (uint32_t lsn = 1; lsn <= 20; lsn++) {
        for (uint32_t k = 0; k < 3; k++) {
            gen(1 + (lsn * 7 + k) % NPAGES, lsn, page);
            cr_assert_eq(dsq_ps_write(ps, 1 + (lsn * 7 + k) % NPAGES, page), 0);
        }
        cr_assert_eq(dsq_ps_commit(ps), 0, "%s", dsq_ps_error(ps));
    }
    cr_assert_eq(r.n, 20);
    for (size_t i = 0; i < r.n; i++)
        cr_assert_eq(r.lsn[i], i + 1);

    dsq_ps *c = open_at(copy, NULL);
    const uint8_t *all = (const uint8_t *)r.all.data;
    /* Not the next one: refused, nothing changes. */
    cr_assert_eq(dsq_ps_apply(c, all + r.off[1], r.len[1]), -1);
    cr_assert(strstr(dsq_ps_error(c), "does not follow") != NULL, "%s", dsq_ps_error(c));
    /* Damaged: refused. */
    uint8_t *bad = malloc(r.len[0]);
    memcpy(bad, all + r.off[0], r.len[0]);
    bad[r.len[0] / 2] ^= 1;
    cr_assert_eq(dsq_ps_apply(c, bad, r.len[0]), -1);
    cr_assert_eq(dsq_ps_apply(c, all + r.off[0], r.len[0] - 8), -1); /* cut short */
    free(bad);
    cr_assert_eq(dsq_ps_lsn(c), 0);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(dsq_ps_apply(c, all + r.off[i], r.len[i]), 0, "%s", dsq_ps_error(c));
    cr_assert_eq(dsq_ps_lsn(c), 10);
    dsq_ps_close(c);
    c = open_at(copy, NULL); /* recovered from its own log */
    cr_assert_eq(dsq_ps_lsn(c), 10);
    for (size_t i = 10; i < r.n; i++)
        cr_assert_eq(dsq_ps_apply(c, all + r.off[i], r.len[i]), 0, "%s", dsq_ps_error(c));
    cr_assert_eq(dsq_ps_lsn(c), dsq_ps_lsn(ps));
    cr_assert_eq(dsq_ps_npages(c), dsq_ps_npages(ps));
    for (uint32_t pg = 1; pg <= dsq_ps_npages(ps); pg++) {
        cr_assert_eq(dsq_ps_read(ps, pg, page), 0);
        cr_assert_eq(dsq_ps_read(c, pg, got), 0);
        cr_assert(memcmp(page, got, PAGE) == 0, "page %u differs", pg);
    }
    /* Nothing is applied while a transaction of its own is buffered. */
    cr_assert_eq(dsq_ps_write(c, 1, page), 0);
    cr_assert_eq(dsq_ps_apply(c, all + r.off[0], r.len[0]), -1);
    dsq_ps_discard(c);
    dsq_ps_close(c);
    /* Another page size: refused. */
    char other[64];
    snprintf(other, sizeof other, "/tmp/dsq-ps-other-XXXXXX");
    cr_assert_not_null(mkdtemp(other));
    char err[512] = "";
    dsq_ps_cfg cfg = {.page_size = 8192, .segment_bytes = 64 << 10, .zstd_level = 1, .max_txn_bytes = 64u << 20,
                      .checkpoint_bytes = 1ull << 40, .retention_us = 1, .max_open_files = 4};
    cr_assert_eq(dsq_ps_open(other, &cfg, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq_ps_apply(c, all + r.off[0], r.len[0]), -1);
    cr_assert(strstr(dsq_ps_error(c), "page_size") != NULL, "%s", dsq_ps_error(c));
    dsq_ps_close(c);
    dsq_buf_free(&r.all);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", copy, other);
    cr_assert_eq(system(cmd), 0);
}

/* ---- evicted checkpoints: short sessions under a long window ---- */

/* A source of evicted files as the warm cache is one: each file's bytes
 * kept here by its id; the first read of one misses (its fetch), the
 * next ones find it. */
struct dsq_cold_ref {
    uint64_t id;
};

#define MAX_COLD 256
static struct {
    uint8_t *bytes[MAX_COLD];
    uint64_t size[MAX_COLD];
    bool fetched[MAX_COLD];
    uint64_t n;       /* ids 1..n */
    unsigned reads, misses, refs;
} store;

static int cold_read(void *ctx, const dsq_cold *c, uint64_t off, void *buf, size_t n, char *err, size_t errlen)
{
    (void)ctx;
    if (c->id == 0 || c->id > store.n || off + n > store.size[c->id - 1]) {
        snprintf(err, errlen, "no such object");
        return -1;
    }
    if (!store.fetched[c->id - 1]) {
        store.fetched[c->id - 1] = true;
        struct dsq_cold_ref *r = malloc(sizeof *r);
        cr_assert_not_null(r);
        r->id = c->id;
        store.misses++;
        store.refs++;
        dsq_cold_miss_set(r);
        return DSQ_COLD_MISS;
    }
    store.reads++;
    memcpy(buf, store.bytes[c->id - 1] + off, n);
    return 0;
}

static bool cold_failed(void *ctx, dsq_cold_ref *r)
{
    (void)ctx;
    (void)r;
    return false;
}

static void cold_release(void *ctx, dsq_cold_ref *r)
{
    (void)ctx;
    store.refs--;
    free(r);
}

static const dsq_cold_src cold_src = {NULL, cold_read, cold_failed, cold_release};

/* Evict every local checkpoint of the closed database, as the tier does
 * once it is in the object store. */
static void evict_all(void)
{
    char cdir[128];
    snprintf(cdir, sizeof cdir, "%s/ckpt", dir);
    char **paths;
    size_t n;
    char err[512] = "";
    cr_assert_eq(dsq_ckpt_list(cdir, &paths, &n, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < n; i++) {
        char side[4300];
        snprintf(side, sizeof side, "%s.cold", paths[i]);
        if (access(side, F_OK) != 0) {
            FILE *f = fopen(paths[i], "rb");
            cr_assert_not_null(f);
            fseek(f, 0, SEEK_END);
            long size = ftell(f);
            rewind(f);
            cr_assert_lt(store.n, MAX_COLD);
            uint8_t *b = malloc((size_t)size);
            cr_assert_eq(fread(b, 1, (size_t)size, f), (size_t)size);
            fclose(f);
            store.bytes[store.n] = b;
            store.size[store.n] = (uint64_t)size;
            store.n++;
            dsq_cold_chunk ch = {0, (uint64_t)size, dsq_crc32(b, (size_t)size)};
            dsq_cold c = {.db = "t", .id = store.n, .size = (uint64_t)size, .n = 1, .chunks = &ch};
            uint64_t freed;
            cr_assert_eq(dsq_ckpt_evict(paths[i], &c, &freed, err, sizeof err), 0, "%s", err);
        }
        free(paths[i]);
    }
    free(paths);
}

/* Files in the database's ckpt/ directory. */
static unsigned ckpt_files(void)
{
    char cdir[128];
    snprintf(cdir, sizeof cdir, "%s/ckpt", dir);
    DIR *d = opendir(cdir);
    cr_assert_not_null(d);
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void open_cold(void)
{
    char err[512] = "";
    dsq_ps_cfg cfg = {.page_size = PAGE, .segment_bytes = 64 << 10, .zstd_level = 1,
                      .max_txn_bytes = 64u << 20, .checkpoint_bytes = 1ull << 40,
                      .retention_us = 3600ull * 1000000, .max_open_files = MAX_OPEN, .cold_src = &cold_src};
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
}

static void commit_pages(uint32_t lsn, uint32_t first, uint32_t n)
{
    static uint8_t page[PAGE];
    memcpy(writer[lsn], writer[lsn - 1], sizeof writer[lsn]);
    for (uint32_t p = first; p < first + n; p++) {
        gen(p, lsn, page);
        cr_assert_eq(dsq_ps_write(ps, p, page), 0, "%s", dsq_ps_error(ps));
        writer[lsn][p] = lsn;
    }
    cr_assert_eq(dsq_ps_commit(ps), 0, "%s", dsq_ps_error(ps));
    cr_assert_eq(dsq_ps_lsn(ps), lsn);
}

static void check_as_of(uint32_t lsn)
{
    static uint8_t page[PAGE];
    char err[512] = "";
    dsq_ps_view *v;
    cr_assert_eq(dsq_ps_view_open(ps, lsn, &v, err, sizeof err), 0, "LSN %u: %s", lsn, err);
    for (uint32_t p = 1; p <= NPAGES; p++) {
        int rc = dsq_ps_view_read_part(v, p, 0, PAGE, page);
        if (rc != 0 && dsq_cold_missed()) { /* fetched meanwhile, as the executor waits */
            dsq_cold_miss_clear(&cold_src);
            rc = dsq_ps_view_read_part(v, p, 0, PAGE, page);
        }
        cr_assert_eq(rc, 0, "LSN %u page %u: %s", lsn, p, dsq_ps_error(ps));
        check_page(p, lsn, page);
    }
    dsq_ps_view_close(v);
}

/* Every session of a database (open, written, closed, its checkpoints
 * evicted) is shorter than the window: while it is open, every
 * checkpoint at or before R is an evicted one. They are merged all the
 * same once there are enough of them (the count stays bounded), and
 * nothing in the window goes: every LSN from R on reads as it was, in
 * the store and after it reopens. */
Test(pagestore, evicted_checkpoints_of_short_sessions_are_merged)
{
    dsq_ps_close(ps);
    ps = NULL;
    char err[512] = "";
    uint32_t lsn = 0;
    for (int s = 0; s < 30; s++) {
        open_cold();
        cr_assert_eq(dsq_ps_lsn(ps), lsn);
        lsn++;
        commit_pages(lsn, s == 0 ? 1 : 1 + (uint32_t)(s * 5) % (NPAGES - 4), s == 0 ? NPAGES : 4);
        /* R just before this session: every earlier checkpoint is at or
         * before it, none of this one's. */
        uint64_t now = dsq_ps_lsn_time(ps) - 1 + 3600ull * 1000000;
        uint32_t first = lsn;
        for (int c = 0; c < 2; c++) {
            cr_assert_eq(dsq_ps_checkpoint(ps, err, sizeof err), 0, "%s", err);
            cr_assert_eq(dsq_ps_maintain(ps, now, err, sizeof err), 0, "%s", err);
            lsn++;
            commit_pages(lsn, 1 + (uint32_t)(s * 7 + c * 3) % (NPAGES - 3), 3);
        }
        cr_assert_eq(dsq_ps_maintain(ps, now, err, sizeof err), 0, "%s", err); /* at close */
        /* The window is whole: from R on, every LSN reads as it was. */
        uint64_t oldest = dsq_ps_oldest(ps);
        cr_assert_lt(oldest, first, "session %d: R %llu, the session's first LSN %u", s,
                     (unsigned long long)oldest, first);
        for (uint64_t l = oldest ? oldest : 1; l <= lsn; l++)
            check_as_of((uint32_t)l);
        dsq_ps_usage_t u;
        dsq_ps_usage(ps, &u);
        cr_assert_leq(u.checkpoints, 24, "session %d: %u checkpoints", s, u.checkpoints);
        cr_assert_leq(ckpt_files(), 48, "session %d: %u files in ckpt/", s, ckpt_files());
        dsq_ps_close(ps);
        ps = NULL;
        evict_all();
    }
    cr_assert_eq(store.refs, 0, "%u warm references kept", store.refs);
    cr_assert_gt(store.misses, 0);
    /* Reopened: the merged files load (no sidecar left of a file a merge
     * replaced) and read as before. */
    open_cold();
    cr_assert_eq(dsq_ps_lsn(ps), lsn);
    for (uint32_t l = lsn - 5; l <= lsn; l++)
        check_as_of(l);
    /* A crash in a merge over an evicted file, once the merged one is
     * whole as NAME.merged: opening puts it in place of the evicted one
     * and its sidecar (here the file's own bytes stand for it). */
    dsq_ps_close(ps);
    ps = NULL;
    evict_all();
    char cdir[128], **paths, path[4400];
    size_t n;
    snprintf(cdir, sizeof cdir, "%s/ckpt", dir);
    cr_assert_eq(dsq_ckpt_list(cdir, &paths, &n, err, sizeof err), 0, "%s", err);
    cr_assert_gt(n, 0);
    snprintf(path, sizeof path, "%s.merged", paths[n - 1]);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(store.bytes[store.n - 1], 1, store.size[store.n - 1], f), store.size[store.n - 1]);
    fclose(f);
    open_cold();
    cr_assert_neq(access(path, F_OK), 0, "%s is still there", path);
    snprintf(path, sizeof path, "%s.cold", paths[n - 1]);
    cr_assert_neq(access(path, F_OK), 0, "%s is still there", path);
    dsq_ps_usage_t u;
    dsq_ps_usage(ps, &u);
    cr_assert_eq(u.checkpoints, n);
    struct stat st;
    cr_assert_eq(stat(paths[n - 1], &st), 0);
    cr_assert_geq((uint64_t)st.st_blocks * 512, store.size[store.n - 1] - 4096, "not the merged file: holes");
    for (uint32_t l = lsn - 2; l <= lsn; l++)
        check_as_of(l);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    for (uint32_t i = 0; i < store.n; i++)
        free(store.bytes[i]);
}
