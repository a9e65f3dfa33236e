/* Unit tests: engine/vfs and engine/pagestore — SQLite's commit point
 * becomes one log record, and nothing else does: rollbacks, statement
 * rollbacks, ROLLBACK TO, cache spills, VACUUM and shrinking, each checked
 * by reopening the store from its log alone. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "engine/pagestore.h"

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
    dsq_ps_cfg cfg = {.page_size = 4096, .segment_bytes = 1 << 20, .zstd_level = 1,
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
    dsq_ps_cfg cfg = {.page_size = 4096, .segment_bytes = 1 << 20, .zstd_level = 1,
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
    dsq_ps_cfg cfg = {.page_size = 8192, .segment_bytes = 1 << 20, .zstd_level = 1,
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
