/* Unit tests: engine/tier/tier — which files of a database are offered (the
 * durable end, half-written checkpoints, a segment without its header),
 * what an offer uploads (only what the manifest lacks: new chunks of a
 * growing segment, a replaced checkpoint as a new version, nothing when
 * nothing changed), that superseded objects and a dropped database's
 * objects are deleted, and restore: whole databases back into place,
 * databases present locally left alone. Against a file:// store. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "tests/unit/support/wait.h"

static char dir[64], data[128], store[128];
static dsq_obj *O;
static dsq_tier *T;

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-test-tier-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(store, sizeof store, "file://%s/store", dir);
    char err[256], p[256];
    mkdir(data, 0700);
    snprintf(p, sizeof p, "%s/db", data);
    mkdir(p, 0700);
    O = dsq_obj_open(&(dsq_obj_cfg){.url = store}, err, sizeof err);
    cr_assert_not_null(O, "%s", err);
    T = dsq_tier_start(&(dsq_tier_cfg){.obj = O, .data_dir = data, .chunk_bytes = 100, .inline_bytes = 30}, err,
                      sizeof err);
    cr_assert_not_null(T, "%s", err);
}

static void teardown(void)
{
    dsq_tier_stop(T);
    dsq_obj_close(O);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(tier, .init = setup, .fini = teardown);

/* Write `n` bytes of `c` at the end of DATA/db/DB/NAME (made as needed). */
static void put_file(const char *db, const char *name, char c, size_t n, bool append)
{
    char p[512];
    snprintf(p, sizeof p, "%s/db/%s", data, db);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/db/%s/wal", data, db);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/db/%s/ckpt", data, db);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/db/%s/%s", data, db, name);
    int fd = open(p, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
    cr_assert_geq(fd, 0);
    char *b = malloc(n);
    memset(b, c, n);
    cr_assert_eq(write(fd, b, n), (ssize_t)n);
    free(b);
    close(fd);
}

/* The files of DATA/db/DB as a closed database offers them. */
static void list_whole(const char *db, dsq_tier_file **f, size_t *n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/db/%s", data, db);
    cr_assert_eq(dsq_tier_list_files(p, true, 0, 0, f, n), 0);
}

static void offer_whole(const char *db, uint64_t lsn)
{
    dsq_tier_file *f;
    size_t n;
    list_whole(db, &f, &n);
    dsq_tier_offer(T, db, lsn, 0, f, n);
    free(f);
    cr_assert_eq(dsq_tier_drain(T, 10000), 0);
}

static size_t count(const char *prefix)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_LIST;
    snprintf(r.key, sizeof r.key, "%s", prefix);
    cr_assert_eq(dsq_obj_run(O, &r), DSQ_OBJ_OK);
    size_t n = r.nitems;
    dsq_obj_req_clear(&r);
    return n;
}

Test(tier, what_is_offered)
{
    put_file("a", "format", 'f', 27, false);
    put_file("a", "wal/00000001.seg", 's', 500, false);
    put_file("a", "wal/00000002.seg", 's', 300, false);
    put_file("a", "wal/00000003.seg", 's', 40, false); /* not even a header */
    put_file("a", "ckpt/0000000000000010.ckpt", 'c', 250, false);
    put_file("a", "ckpt/0000000000000020.ckpt.tmp", 't', 10, false);
    char p[512];
    snprintf(p, sizeof p, "%s/db/a", data);
    dsq_tier_file *f;
    size_t n;
    cr_assert_eq(dsq_tier_list_files(p, true, 0, 0, &f, &n), 0);
    cr_assert_eq(n, 5, "closed: everything but the half-written checkpoint");
    cr_assert_str_eq(f[0].name, "ckpt/0000000000000010.ckpt");
    cr_assert_str_eq(f[1].name, "format");
    cr_assert_str_eq(f[4].name, "wal/00000003.seg");
    cr_assert_eq(f[4].size, 40);
    cr_assert(f[4].append_only);
    cr_assert_not(f[0].append_only);
    free(f);
    /* Open, durable up to byte 200 of segment 2: segment 3 is not yet,
     * segment 2 is cut. */
    cr_assert_eq(dsq_tier_list_files(p, false, 2, 200, &f, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(f[3].name, "wal/00000002.seg");
    cr_assert_eq(f[3].size, 200);
    cr_assert_eq(f[2].size, 500);
    free(f);
    /* Durable into segment 3 but not past its header: left out. */
    cr_assert_eq(dsq_tier_list_files(p, false, 3, DSQ_WAL_SEG_HDR - 1, &f, &n), 0);
    cr_assert_eq(n, 4);
    free(f);
    snprintf(p, sizeof p, "%s/db/none", data);
    cr_assert_eq(dsq_tier_list_files(p, true, 0, 0, &f, &n), 0);
    cr_assert_eq(n, 0);
    free(f);
}

Test(tier, uploads_what_the_manifest_lacks)
{
    put_file("b", "format", 'f', 27, false);
    put_file("b", "wal/00000001.seg", 's', 250, false);
    offer_whole("b", 5);
    dsq_tier_counts c;
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.uploads, 3, "250 bytes: 3 chunks of 100 (the 27-byte format rides in the manifest)");
    cr_assert_eq(c.bytes, 250);
    cr_assert_eq(c.manifests, 1);
    cr_assert_eq(count("db/b/data/"), 3);

    offer_whole("b", 5); /* nothing changed: nothing sent, not even the manifest */
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.uploads, 3);
    cr_assert_eq(c.manifests, 1);

    /* The segment grows: the whole chunks stay, the partial last one is
     * sent again (longer) and the shorter one goes. */
    put_file("b", "wal/00000001.seg", 's', 120, true); /* 370 bytes */
    offer_whole("b", 9);
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.uploads, 3 + 2, "chunks 2 (now whole) and 3");
    cr_assert_eq(c.deletes, 1, "the 50-byte chunk 2");
    cr_assert_eq(count("db/b/data/"), 4);

    /* A checkpoint replaced under its name (a merge): a new version. */
    put_file("b", "ckpt/0000000000000009.ckpt", 'c', 150, false);
    offer_whole("b", 9);
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.uploads, 5 + 2);
    /* The clock must move on: the tier tells the versions apart by
     * their mtime. */
    let_time_pass(20);
    put_file("b", "ckpt/0000000000000009.ckpt", 'd', 150, false);
    offer_whole("b", 9);
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.uploads, 7 + 2);
    cr_assert_eq(c.deletes, 1 + 2, "the first version's chunks");
    /* Segment 1 retired behind the checkpoint: its objects go. */
    char p[512];
    snprintf(p, sizeof p, "%s/db/b/wal/00000001.seg", data);
    unlink(p);
    put_file("b", "wal/00000002.seg", 's', 80, false);
    offer_whole("b", 12);
    cr_assert_eq(count("db/b/data/"), 2 + 1, "the checkpoint, segment 2");
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.errors, 0, "%s", c.last_error);

    char derr[256];
    cr_assert_eq(dsq_tier_drop(T, "b", NULL, NULL, derr, sizeof derr), 0, "%s", derr);
    cr_assert_eq(dsq_tier_drain(T, 10000), 0);
    cr_assert_eq(count("db/b/"), 0, "a dropped database leaves nothing");

    /* Made again under the name: its file versions start above the
     * dropped one's (1 to 5), so no object key of the new one names an
     * object the warm cache may still hold for the old one. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/db/b'", data);
    cr_assert_eq(system(cmd), 0);
    put_file("b", "format", 'g', 27, false);
    put_file("b", "wal/00000001.seg", 't', 250, false);
    offer_whole("b", 3);
    cr_assert_eq(dsq_tier_drain(T, 10000), 0);
    cr_assert_eq(count("db/b/data/"), 3);
    cr_assert_eq(count("db/b/data/00000007."), 3, "format 6 (inline), the segment 7");
}

Test(tier, a_stale_offer_is_dropped_not_retried)
{
    put_file("s", "format", 'f', 27, false);
    put_file("s", "wal/00000001.seg", 's', 250, false);
    dsq_tier_file *f;
    size_t n;
    list_whole("s", &f, &n);
    char p[512];
    snprintf(p, sizeof p, "%s/db/s/wal/00000001.seg", data);
    cr_assert_eq(truncate(p, 10), 0); /* shorter than offered */
    dsq_tier_offer(T, "s", 3, 0, f, n);
    free(f);
    cr_assert_eq(dsq_tier_drain(T, 10000), 0);
    dsq_tier_counts c;
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.errors, 0, "not a failure to retry: %s", c.last_error);
    cr_assert_eq(c.manifests, 0);
    cr_assert_eq(count("db/s/manifest.json"), 0, "no manifest names what could not be read");
}

/* The store's manifest of db, as text (NUL-terminated; the caller frees). */
static char *manifest_text(const char *db)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_GET;
    snprintf(r.key, sizeof r.key, "db/%s/manifest.json", db);
    cr_assert_eq(dsq_obj_run(O, &r), DSQ_OBJ_OK);
    char *t = strndup(r.data.data, r.data.len);
    dsq_obj_req_clear(&r);
    return t;
}

static void offer_in(const char *db, uint64_t lsn, uint64_t epoch)
{
    dsq_tier_file *f;
    size_t n;
    list_whole(db, &f, &n);
    dsq_tier_offer(T, db, lsn, epoch, f, n);
    free(f);
    cr_assert_eq(dsq_tier_drain(T, 10000), 0);
}

Test(tier, nothing_goes_over_a_manifest_of_a_newer_epoch)
{
    put_file("e", "format", 'f', 27, false);
    put_file("e", "wal/00000001.seg", 's', 250, false);
    offer_in("e", 3, 3);
    char *t = manifest_text("e");
    cr_assert_not_null(strstr(t, "\"epoch\":3"), "%s", t);
    free(t);
    /* Another node, primary in epoch 5, writes its own (here: a second
     * tier on another data directory, same store). */
    char data2[160], err[256], p[300];
    snprintf(data2, sizeof data2, "%s/data2", dir);
    mkdir(data2, 0700);
    snprintf(p, sizeof p, "%s/db", data2);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/db/e", data2);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/db/e/format", data2);
    FILE *fp = fopen(p, "w");
    fputs("formatformatformatformatfor", fp);
    fclose(fp);
    dsq_tier *T2 = dsq_tier_start(&(dsq_tier_cfg){.obj = O, .data_dir = data2, .chunk_bytes = 100, .inline_bytes = 30},
                                  err, sizeof err);
    cr_assert_not_null(T2, "%s", err);
    dsq_tier_file *f;
    size_t n;
    snprintf(p, sizeof p, "%s/db/e", data2);
    cr_assert_eq(dsq_tier_list_files(p, true, 0, 0, &f, &n), 0);
    dsq_tier_offer(T2, "e", 9, 5, f, n);
    free(f);
    cr_assert_eq(dsq_tier_drain(T2, 10000), 0);
    dsq_tier_stop(T2);
    t = manifest_text("e");
    cr_assert_not_null(strstr(t, "\"epoch\":5"), "%s", t);
    free(t);
    size_t objects = count("db/e/");
    /* The first node, replaced but not knowing it, offers again: its
     * cached manifest is its own, but the store's is newer. */
    put_file("e", "wal/00000001.seg", 's', 100, true);
    offer_in("e", 4, 3);
    t = manifest_text("e");
    cr_assert_not_null(strstr(t, "\"epoch\":5"), "the newer epoch's manifest stays: %s", t);
    cr_assert_not_null(strstr(t, "\"lsn\":9"), "%s", t);
    free(t);
    cr_assert_eq(count("db/e/"), objects, "nothing uploaded");
    dsq_tier_counts c;
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.errors, 0, "dropped, not retried: %s", c.last_error);
    /* Once it is the primary again, in a newer epoch, it writes over it
     * (its own files, versions after the other node's). */
    offer_in("e", 12, 6);
    t = manifest_text("e");
    cr_assert_not_null(strstr(t, "\"epoch\":6"), "%s", t);
    cr_assert_not_null(strstr(t, "\"lsn\":12"), "%s", t);
    free(t);
}

static uint64_t seen_epoch;
static uint64_t cap_at(void *ud, uint64_t epoch)
{
    seen_epoch = epoch;
    return *(uint64_t *)ud;
}

Test(tier, a_restore_within_asks_how_far_for_the_manifest_s_epoch)
{
    put_file("w", "format", 'f', 27, false);
    offer_in("w", 4, 2);
    char p[300], err[512];
    snprintf(p, sizeof p, "rm -rf '%s/db/w'", data);
    cr_assert_eq(system(p), 0);
    uint64_t cap = 0, at = 99;
    cr_assert_neq(dsq_tier_restore_within(T, "w", cap_at, &cap, &at, err, sizeof err), 0);
    cr_assert_eq(seen_epoch, 2);
    cr_assert_not_null(strstr(err, "epoch 2"), "%s", err);
    snprintf(p, sizeof p, "%s/db/w", data);
    struct stat st;
    cr_assert_neq(stat(p, &st), 0, "nothing restored");
}

Test(tier, restore_brings_back_what_is_missing_and_leaves_the_rest)
{
    put_file("r1", "format", 'f', 27, false);
    put_file("r1", "wal/00000001.seg", 's', 333, false);
    put_file("r1", "ckpt/0000000000000004.ckpt", 'c', 150, false);
    put_file("r2", "format", 'f', 27, false);
    offer_whole("r1", 4);
    offer_whole("r2", 0);
    /* r1's disk is lost; r2 is here, changed since. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/db/r1'", data);
    cr_assert_eq(system(cmd), 0);
    put_file("r2", "format", 'g', 27, false);
    char err[256];
    cr_assert_eq(dsq_tier_restore_missing(T, err, sizeof err), 1, "%s", err);
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/db/r1/wal/00000001.seg", data);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_size, 333);
    snprintf(p, sizeof p, "%s/db/r1/format", data);
    cr_assert_eq(stat(p, &st), 0, "from inside the manifest");
    cr_assert_eq(st.st_size, 27);
    snprintf(p, sizeof p, "%s/db/r1/ckpt/0000000000000004.ckpt", data);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_size, 150);
    snprintf(p, sizeof p, "%s/db/r2/format", data);
    FILE *fp = fopen(p, "r");
    cr_assert_eq(fgetc(fp), 'g', "the local copy is kept");
    fclose(fp);
    snprintf(p, sizeof p, "%s/db/.restore.r1", data);
    cr_assert_neq(stat(p, &st), 0, "no temporary directory left");
    dsq_tier_counts c;
    dsq_tier_counts_get(T, &c);
    cr_assert_eq(c.restored, 1);
    /* Nothing missing: nothing to do. */
    cr_assert_eq(dsq_tier_restore_missing(T, err, sizeof err), 0, "%s", err);
}
