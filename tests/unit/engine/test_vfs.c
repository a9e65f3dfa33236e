/* Unit tests: engine/storage/vfs and engine/storage/pagestore — SQLite's
 * commit point becomes one log record, and nothing else does: rollbacks,
 * statement rollbacks, ROLLBACK TO, cache spills, VACUUM and shrinking, each
 * checked by reopening the store from its log alone. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/runtime/engine_int.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/vfs.h"
#include "tests/unit/support/nofds.h"
#include "tests/unit/support/wait.h"

/* 1..n as rows of `value` (Debian's SQLite has no generate_series). */
#define SERIES(n) \
    "(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < " #n \
    ") SELECT value FROM s)"

static char dir[64];
static dsq_ps *ps;
static sqlite3 *db;

static void open_db(void)
{
    char err[512] = "", path[128];
    dsq_ps_cfg cfg = {.page_size = 4096, .segment_bytes = 1 << 20, .zstd_level = 1, .max_open_files = 16,
                      .max_txn_bytes = 64u << 20};
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/db", dir);
    cr_assert_eq(dsq__vfs_open(ps, path, &db, err, sizeof err), 0, "%s", err);
}

static void close_db(void)
{
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
    dsq_ps_close(ps);
    db = NULL;
    ps = NULL;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/dsq-vfs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    open_db();
}

static void teardown(void)
{
    if (db)
        close_db();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(vfs, .init = setup, .fini = teardown);

static void exec_ok(const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

static int exec_rc(const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL); }

static long long one(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static const char *text(const char *sql)
{
    static char out[256];
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

/* Close and open again from the log alone. */
static void reopen(void)
{
    close_db();
    open_db();
    cr_assert_str_eq(text("PRAGMA integrity_check"), "ok");
}

Test(vfs, each_commit_is_one_record)
{
    cr_assert_eq(dsq_ps_lsn(ps), 0);
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)");
    cr_assert_eq(dsq_ps_lsn(ps), 1);
    exec_ok("INSERT INTO t VALUES (1, 'a')");
    cr_assert_eq(dsq_ps_lsn(ps), 2);
    exec_ok("BEGIN; INSERT INTO t VALUES (2, 'b'); INSERT INTO t VALUES (3, 'c'); COMMIT");
    cr_assert_eq(dsq_ps_lsn(ps), 3, "a transaction is one record");
    cr_assert_eq(one("SELECT count(*) FROM t"), 3);
    cr_assert_eq(dsq_ps_lsn(ps), 3, "a read writes nothing");
    exec_ok("UPDATE t SET v = 'x' WHERE k = 99");
    cr_assert_eq(dsq_ps_lsn(ps), 3, "a write that changes no page writes no record");
    cr_assert_not(dsq_ps_dirty(ps));
    reopen();
    cr_assert_eq(dsq_ps_lsn(ps), 3);
    cr_assert_eq(one("SELECT count(*) FROM t"), 3);
    cr_assert_str_eq(text("SELECT group_concat(v, '') FROM t"), "abc");
    cr_assert_str_eq(text("PRAGMA journal_mode"), "memory");
}

Test(vfs, rollback_leaves_nothing)
{
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)");
    exec_ok("BEGIN; INSERT INTO t VALUES (1, 'gone')");
    cr_assert(dsq_ps_dirty(ps) || dsq_ps_lsn(ps) == 1);
    exec_ok("ROLLBACK");
    cr_assert_not(dsq_ps_dirty(ps), "the lock went: the buffer went with it");
    cr_assert_eq(dsq_ps_lsn(ps), 1);
    cr_assert_eq(one("SELECT count(*) FROM t"), 0);
    reopen();
    cr_assert_eq(one("SELECT count(*) FROM t"), 0);
    cr_assert_eq(dsq_ps_lsn(ps), 1);
}

Test(vfs, a_failed_statement_undoes_only_itself)
{
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    exec_ok("BEGIN");
    exec_ok("INSERT INTO t VALUES (1, 'kept')");
    /* The second row fails: the statement's first row is undone with it. */
    cr_assert_eq(exec_rc("INSERT INTO t VALUES (2, 'undone'), (3, NULL)"), SQLITE_CONSTRAINT_NOTNULL);
    exec_ok("INSERT INTO t VALUES (4, 'kept too')");
    exec_ok("COMMIT");
    cr_assert_eq(dsq_ps_lsn(ps), 2);
    reopen();
    cr_assert_str_eq(text("SELECT group_concat(k, ',') FROM t"), "1,4");
}

Test(vfs, rollback_to_a_savepoint)
{
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok("BEGIN; INSERT INTO t VALUES (1, randomblob(3000))");
    exec_ok("SAVEPOINT s; INSERT INTO t SELECT value + 10, randomblob(3000) FROM " SERIES(50));
    exec_ok("ROLLBACK TO s; RELEASE s; INSERT INTO t VALUES (2, randomblob(10)); COMMIT");
    reopen();
    cr_assert_str_eq(text("SELECT group_concat(k, ',') FROM t"), "1,2");
}

Test(vfs, a_transaction_bigger_than_the_cache_spills_and_commits_once)
{
    exec_ok("PRAGMA cache_size = 10"); /* 10 pages: the transaction spills */
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    uint64_t before = dsq_ps_lsn(ps);
    exec_ok("BEGIN");
    exec_ok("INSERT INTO t SELECT value, randomblob(1000) FROM " SERIES(2000));
    cr_assert(dsq_ps_dirty(ps), "pages reached the buffer before the commit");
    cr_assert_eq(dsq_ps_lsn(ps), before, "no record before the commit");
    cr_assert_eq(one("SELECT count(*) FROM t"), 2000, "the transaction reads its own spilled pages");
    exec_ok("COMMIT");
    cr_assert_eq(dsq_ps_lsn(ps), before + 1);
    long long sum = one("SELECT sum(length(v)) + sum(k) FROM t");
    reopen();
    cr_assert_eq(one("SELECT sum(length(v)) + sum(k) FROM t"), sum);
}

Test(vfs, a_spilled_transaction_rolls_back)
{
    exec_ok("PRAGMA cache_size = 10");
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB); INSERT INTO t VALUES (0, x'00')");
    uint64_t before = dsq_ps_lsn(ps);
    exec_ok("BEGIN; INSERT INTO t SELECT value, randomblob(1000) FROM " SERIES(2000));
    exec_ok("ROLLBACK");
    cr_assert_eq(dsq_ps_lsn(ps), before);
    cr_assert_eq(one("SELECT count(*) FROM t"), 1);
    reopen();
    cr_assert_eq(one("SELECT count(*) FROM t"), 1);
    cr_assert_eq(one("PRAGMA page_count"), 2);
}

Test(vfs, vacuum_and_shrinking)
{
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok("INSERT INTO t SELECT value, randomblob(2000) FROM " SERIES(500));
    long long big = one("PRAGMA page_count");
    exec_ok("DELETE FROM t WHERE k > 10");
    cr_assert_eq(one("PRAGMA page_count"), big, "freed pages stay in the file");
    uint64_t before = dsq_ps_lsn(ps);
    exec_ok("VACUUM");
    cr_assert_eq(dsq_ps_lsn(ps), before + 1, "VACUUM is one commit");
    long long small = one("PRAGMA page_count");
    cr_assert_lt(small, big / 10, "%lld pages after VACUUM, %lld before", small, big);
    cr_assert_eq(dsq_ps_npages(ps), (uint32_t)small);
    reopen();
    cr_assert_eq(one("PRAGMA page_count"), small);
    cr_assert_eq(one("SELECT count(*) FROM t"), 10);
    /* Pages past the end read as zeros, and growing again works. */
    exec_ok("INSERT INTO t SELECT value + 1000, randomblob(2000) FROM " SERIES(100));
    reopen();
    cr_assert_eq(one("SELECT count(*) FROM t"), 110);
}

Test(vfs, auto_vacuum_shrinks_at_commit)
{
    exec_ok("PRAGMA auto_vacuum = FULL");
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok("INSERT INTO t SELECT value, randomblob(3000) FROM " SERIES(300));
    long long big = one("PRAGMA page_count");
    exec_ok("DELETE FROM t WHERE k > 5");
    long long small = one("PRAGMA page_count");
    cr_assert_lt(small, big / 10);
    cr_assert_eq(dsq_ps_npages(ps), (uint32_t)small);
    reopen();
    cr_assert_eq(one("PRAGMA page_count"), small);
    cr_assert_eq(one("SELECT count(*) FROM t"), 5);
}

Test(vfs, a_transaction_over_its_limit_fails_cleanly)
{
    close_db();
    char err[512] = "", path[128];
    dsq_ps_cfg cfg = {.page_size = 4096, .segment_bytes = 1 << 20, .zstd_level = 1, .max_open_files = 16,
                      .max_txn_bytes = 256 * 1024};
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/db", dir);
    cr_assert_eq(dsq__vfs_open(ps, path, &db, err, sizeof err), 0, "%s", err);
    exec_ok("PRAGMA cache_size = 10");
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    int rc = exec_rc("INSERT INTO t SELECT value, randomblob(1000) FROM " SERIES(2000));
    cr_assert_eq(rc & 0xff, SQLITE_FULL, "rc %d", rc);
    cr_assert_not(dsq_ps_dirty(ps));
    exec_ok("INSERT INTO t VALUES (1, x'01')");
    reopen();
    cr_assert_eq(one("SELECT count(*) FROM t"), 1);
}

Test(vfs, the_page_size_is_the_stores)
{
    close_db();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
    cr_assert_eq(system(cmd), 0);
    char err[512] = "", path[128];
    dsq_ps_cfg cfg = {.page_size = 8192, .segment_bytes = 1 << 20, .zstd_level = 1, .max_open_files = 16,
                      .max_txn_bytes = 64u << 20};
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/db", dir);
    cr_assert_eq(dsq__vfs_open(ps, path, &db, err, sizeof err), 0, "%s", err);
    exec_ok("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    cr_assert_eq(one("PRAGMA page_size"), 8192);
    close_db();
    /* A later configuration does not change an existing database. */
    cfg.page_size = 4096;
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq__vfs_open(ps, path, &db, err, sizeof err), 0, "%s", err);
    cr_assert_eq(one("PRAGMA page_size"), 8192);
    cr_assert_eq(one("SELECT x FROM t"), 1);
}

/* ---- checkpoints, retention and views ---------------------------------------------------- */

static dsq_ps_cfg cfg_with(uint64_t seg, uint64_t retention_us)
{
    return (dsq_ps_cfg){.page_size = 4096, .segment_bytes = seg, .zstd_level = 1, .max_open_files = 16,
                        .max_txn_bytes = 64u << 20, .checkpoint_bytes = 1 << 20,
                        .retention_us = retention_us};
}

static void reopen_with(dsq_ps_cfg cfg)
{
    close_db();
    char err[512] = "", path[128];
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/db", dir);
    cr_assert_eq(dsq__vfs_open(ps, path, &db, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(text("PRAGMA integrity_check"), "ok");
}

static void checkpoint(void)
{
    char err[512] = "";
    cr_assert_eq(dsq_ps_checkpoint(ps, err, sizeof err), 0, "%s", err);
}

/* The value of `sql` on the database as of `lsn`. */
static long long one_at(uint64_t lsn, const char *sql)
{
    char err[512] = "", path[128];
    dsq_ps_view *v;
    cr_assert_eq(dsq_ps_view_open(ps, lsn, &v, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/db", dir);
    sqlite3 *vdb;
    cr_assert_eq(dsq__vfs_open_view(v, path, &vdb, err, sizeof err), 0, "%s", err);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(vdb, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(vdb));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sqlite3_errmsg(vdb));
    long long r = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    /* A view is read-only. */
    cr_assert_neq(sqlite3_exec(vdb, "CREATE TABLE nope(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(vdb);
    dsq_ps_view_close(v);
    return r;
}

Test(vfs, a_checkpoint_covers_the_log_before_it)
{
    reopen_with(cfg_with(64 * 1024, 3600ull * 1000000));
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    for (int i = 0; i < 20; i++)
        exec_ok("INSERT INTO t SELECT NULL, randomblob(500) FROM " SERIES(20));
    checkpoint();
    dsq_ps_usage_t u;
    dsq_ps_usage(ps, &u);
    cr_assert_eq(u.checkpoints, 1);
    for (int i = 0; i < 5; i++)
        exec_ok("INSERT INTO t SELECT NULL, randomblob(500) FROM " SERIES(20));
    long long sum = one("SELECT sum(length(v)) + sum(k) FROM t");
    uint64_t lsn = dsq_ps_lsn(ps);
    reopen_with(cfg_with(64 * 1024, 3600ull * 1000000));
    cr_assert_eq(dsq_ps_lsn(ps), lsn);
    cr_assert_eq(one("SELECT sum(length(v)) + sum(k) FROM t"), sum);
    /* Nothing changed: no second checkpoint. */
    checkpoint();
    checkpoint();
    dsq_ps_usage(ps, &u);
    cr_assert_eq(u.checkpoints, 2);
}

Test(vfs, shrinking_and_growing_between_checkpoints)
{
    reopen_with(cfg_with(1 << 20, 3600ull * 1000000));
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok("INSERT INTO t SELECT value, randomblob(3000) FROM " SERIES(100));
    checkpoint();
    long long big = one("PRAGMA page_count");
    exec_ok("DELETE FROM t");
    exec_ok("VACUUM");
    cr_assert_lt(one("PRAGMA page_count"), 5);
    exec_ok("CREATE TABLE u(x)"); /* grows again over pages the first checkpoint holds */
    exec_ok("INSERT INTO u SELECT value FROM " SERIES(3000));
    checkpoint();
    reopen_with(cfg_with(1 << 20, 3600ull * 1000000));
    cr_assert_eq(one("SELECT count(*) FROM t"), 0);
    cr_assert_eq(one("SELECT count(*) FROM u"), 3000);
    cr_assert_lt(one("PRAGMA page_count"), big);
}

Test(vfs, time_travel_reads_each_commit_as_it_was)
{
    reopen_with(cfg_with(16 * 1024, 3600ull * 1000000));
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER)");
    uint64_t at[40];
    for (int i = 0; i < 40; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES (%d, %d)", i, i * 10);
        exec_ok(sql);
        at[i] = dsq_ps_lsn(ps);
        if (i % 9 == 8)
            checkpoint();
        if (i == 20)
            exec_ok("DELETE FROM t WHERE k < 5"); /* its own LSN, between at[20] and at[21] */
    }
    cr_assert_eq(one_at(0, "SELECT count(*) FROM sqlite_schema"), 0, "LSN 0 is the empty database");
    cr_assert_eq(one_at(1, "SELECT count(*) FROM t"), 0);
    for (int i = 0; i < 40; i++) {
        long long want = i <= 20 ? i + 1 : i + 1 - 5;
        cr_assert_eq(one_at(at[i], "SELECT count(*) FROM t"), want, "at LSN %llu", (unsigned long long)at[i]);
        cr_assert_eq(one_at(at[i], "SELECT max(v) FROM t"), i * 10);
    }
    char err[256];
    dsq_ps_view *v;
    cr_assert_eq(dsq_ps_view_open(ps, dsq_ps_lsn(ps) + 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "after the last commit") != NULL, "%s", err);
    /* The same after a restart, from checkpoints and log. */
    reopen_with(cfg_with(16 * 1024, 3600ull * 1000000));
    cr_assert_eq(one_at(at[3], "SELECT count(*) FROM t"), 4);
    cr_assert_eq(one_at(at[30], "SELECT count(*) FROM t"), 26);
}

Test(vfs, retention_retires_the_log_and_merges_checkpoints)
{
    reopen_with(cfg_with(16 * 1024, 0)); /* keep no history */
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    uint64_t early = 0;
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 5; i++)
            exec_ok("INSERT INTO t SELECT NULL, randomblob(700) FROM " SERIES(5));
        if (round == 1)
            early = dsq_ps_lsn(ps);
        checkpoint();
    }
    dsq_ps_usage_t before, after;
    dsq_ps_usage(ps, &before);
    cr_assert_eq(before.checkpoints, 10);
    cr_assert_eq(dsq_ps_oldest(ps), 0);
    char err[512] = "";
    cr_assert_eq(dsq_ps_maintain(ps, dsq_ps_lsn_time(ps) + 1, err, sizeof err), 0, "%s", err);
    dsq_ps_usage(ps, &after);
    cr_assert_eq(after.checkpoints, 1, "merged into one");
    cr_assert_lt(after.segments, before.segments, "sealed segments went: %u -> %u", before.segments,
                 after.segments);
    cr_assert_eq(dsq_ps_oldest(ps), dsq_ps_lsn(ps));
    dsq_ps_view *v;
    cr_assert_eq(dsq_ps_view_open(ps, early, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "oldest available is") != NULL, "%s", err);
    long long sum = one("SELECT sum(length(v)) + sum(k) FROM t");
    cr_assert_eq(one_at(dsq_ps_lsn(ps), "SELECT sum(length(v)) + sum(k) FROM t"), sum);
    reopen_with(cfg_with(16 * 1024, 0));
    cr_assert_eq(one("SELECT sum(length(v)) + sum(k) FROM t"), sum);
    cr_assert_eq(dsq_ps_oldest(ps), dsq_ps_lsn(ps));
    exec_ok("INSERT INTO t VALUES (NULL, x'00')"); /* and it goes on */
    reopen_with(cfg_with(16 * 1024, 0));
    cr_assert_eq(one("SELECT count(*) FROM t"), 251);
}

Test(vfs, the_lsn_at_a_time)
{
    exec_ok("CREATE TABLE t(x)");
    uint64_t t1 = dsq_ps_lsn_time(ps);
    let_time_pass(3); /* the clock must move on: the two commits' times differ */
    exec_ok("INSERT INTO t VALUES (1)");
    uint64_t t2 = dsq_ps_lsn_time(ps);
    char err[256];
    uint64_t lsn;
    cr_assert_eq(dsq_ps_lsn_at(ps, t1, &lsn, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lsn, 1);
    cr_assert_eq(dsq_ps_lsn_at(ps, (t1 + t2) / 2, &lsn, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lsn, 1);
    cr_assert_eq(dsq_ps_lsn_at(ps, t2 + 1000000, &lsn, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lsn, 2);
    cr_assert_eq(dsq_ps_lsn_at(ps, t1 - 1, &lsn, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lsn, 0, "before the first commit");
}

/* The one checkpoint file in dir/ckpt. */
static void ckpt_file(char *out, size_t n)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "ls %s/ckpt/*.ckpt", dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_not_null(fgets(out, (int)n, p));
    out[strcspn(out, "\n")] = '\0';
    pclose(p);
}

static void flip(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
}

Test(vfs, damaged_checkpoints_are_refused)
{
    reopen_with(cfg_with(1 << 20, 3600ull * 1000000));
    exec_ok("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok("INSERT INTO t SELECT value, randomblob(2000) FROM " SERIES(50));
    checkpoint();
    close_db();
    char path[256], err[512] = "";
    ckpt_file(path, sizeof path);
    /* A crash in the middle of writing one leaves a .tmp: it goes at open. */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s/ckpt/00000000000000ff.ckpt.tmp", dir);
    FILE *t = fopen(tmp, "w");
    fputs("half a checkpoint", t);
    fclose(t);
    dsq_ps_cfg cfg = cfg_with(1 << 20, 3600ull * 1000000);
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    cr_assert_neq(access(tmp, F_OK), 0, "the leftover temporary file was removed");
    dsq_ps_close(ps);
    ps = NULL;

    /* A damaged frame (in the last page, a leaf of t): the store opens,
     * that page's read fails (zstd's checksum). */
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    flip(path, (long)st.st_size - 200);
    cr_assert_eq(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0, "%s", err);
    char dbpath[128];
    snprintf(dbpath, sizeof dbpath, "%s/db", dir);
    cr_assert_eq(dsq__vfs_open(ps, dbpath, &db, err, sizeof err), 0, "%s", err);
    int rc = sqlite3_exec(db, "SELECT sum(length(v)) FROM t", NULL, NULL, NULL);
    cr_assert_neq(rc, SQLITE_OK, "a damaged page must not read as data");
    cr_assert(strstr(dsq_ps_error(ps), "damaged") != NULL, "%s", dsq_ps_error(ps));
    close_db();

    /* A damaged directory: the database does not open. */
    flip(path, 64 + 3);
    cr_assert_lt(dsq_ps_open(dir, &cfg, &ps, err, sizeof err), 0);
    cr_assert_null(ps);
    cr_assert(strstr(err, "directory is damaged") != NULL, "%s", err);
    /* Teardown has nothing to close. */
}

/* A commit that cannot open a file (here the log's first segment, made at
 * the first commit) because the process is out of descriptors says so:
 * the store's errno is EMFILE, which the engine turns into
 * RESOURCE_EXHAUSTED rather than an internal error. SQLite itself does
 * not ask for it on this path (sqlite3_system_errno stays 0). */
Test(vfs, a_commit_out_of_descriptors_reports_emfile)
{
    test_nofds held;
    test_nofds_take(&held);
    int rc = exec_rc("CREATE TABLE t(x)");
    int sys = dsq__vfs_take_errno();
    test_nofds_give(&held);
    cr_assert_eq(rc & 0xff, SQLITE_IOERR, "%s", sqlite3_errstr(rc));
    cr_assert_eq(sys, EMFILE, "store errno %d", sys);
    cr_assert_eq(dsq__vfs_take_errno(), 0, "taken once");
    /* With descriptors again the same commit goes through. */
    exec_ok("CREATE TABLE t(x)");
    reopen();
    cr_assert_eq(one("SELECT count(*) FROM sqlite_schema WHERE name = 't'"), 1);
}
