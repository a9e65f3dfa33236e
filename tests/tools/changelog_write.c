/* changelog_write DIR — runs scripts of transactions on two SQLite tables
 * (t, a rowid table; w, WITHOUT ROWID) with dosqld's CDC capture on
 * (engine/cdc), turns each commit's events into changelog rows
 * (lake/changelog.c) in DIR/changelog.parquet (t) and DIR/changelog_w.parquet
 * (w), and writes each table's final rows to DIR/final.json and
 * DIR/final_w.json (one JSON array per row: for t its rowid, then the
 * columns in dosqld's JSON encoding) and t's changelog fields to
 * DIR/fields.json, for tests/interop/changelog.test.mjs to replay the
 * changelogs in DuckDB and compare. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/cdc/cdc.h"
#include "lake/changelog.h"
#include "protocol/value.h"

static const char *const script_t[] = {
    /* each string is one transaction; statements split on ';' */
    "INSERT INTO t(id, name, price, qty, data, misc) VALUES (1, 'apple', 1.5, 10, x'00ff', 'x');"
    "INSERT INTO t(id, name, price, qty, data, misc) VALUES (2, 'banane', 2, '12', NULL, 42)",
    /* values that do not fit their columns' types */
    "INSERT INTO t(id, name, price, qty, data, misc) VALUES (3, x'c3a9', 'cheap', 'many', 'text in blob', 2.5);"
    "INSERT INTO t(id, name, price, qty, data, misc) VALUES (4, CAST(x'ff' AS TEXT), 1e300, 3.0, NULL, NULL)",
    "UPDATE t SET qty = qty + 1, name = upper(name) WHERE id <= 2",
    "DELETE FROM t WHERE id = 3",
    /* a row that changes identity, in a transaction with other changes */
    "UPDATE t SET id = 40 WHERE id = 4; INSERT INTO t(id, name) VALUES (5, 'eve'); UPDATE t SET price = 9.25 WHERE id = 5",
    "INSERT INTO t(id, name, qty) VALUES (6, 'gone', 1); DELETE FROM t WHERE id = 6",
    "UPDATE t SET misc = x'0102', price = -0.0 WHERE id = 1",
};

/* A WITHOUT ROWID table: rows are known by their primary key, and an
 * UPDATE of the key moves the row. */
static const char *const script_w[] = {
    "INSERT INTO w VALUES ('a', 1); INSERT INTO w VALUES ('b', 2); INSERT INTO w VALUES ('c', 3)",
    "UPDATE w SET v = 20 WHERE k = 'b'",
    "UPDATE w SET k = 'z' WHERE k = 'a'; UPDATE w SET v = v + 1 WHERE k = 'z'",
    "DELETE FROM w WHERE k = 'c'; INSERT INTO w VALUES ('c', 30)",
};

static int sink(void *ctx, const void *p, size_t n) { return write(*(int *)ctx, p, n) == (ssize_t)n ? 0 : -1; }

/* Run `script` (transactions; statements split on ';') with the capture
 * on, and write table t's events, commit x at LSN lsn0 + x, to `file`. */
static int run(sqlite3 *db, dsq_cdc_cap *cap, const dsq_lk_table *t, const char *const *script, size_t n,
               uint64_t lsn0, const char *file)
{
    char err[256];
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    dsq_changelog *cl = fd < 0 ? NULL : dsq_changelog_open(t, "shop", &o, sink, &fd, err, sizeof err);
    if (cl == NULL) {
        fprintf(stderr, "open %s: %s\n", file, fd < 0 ? "cannot create the file" : err);
        return -1;
    }
    for (size_t x = 0; x < n; x++) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        char *sql = strdup(script[x]);
        for (char *save = NULL, *st = strtok_r(sql, ";", &save); st; st = strtok_r(NULL, ";", &save)) {
            dsq_cdc_mark m = dsq_cdc_cap_mark(cap);
            if (sqlite3_exec(db, st, NULL, NULL, NULL) != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", st, sqlite3_errmsg(db));
                return -1;
            }
            dsq_cdc_cap_statement_done(cap, m, NULL, NULL);
        }
        free(sql);
        const void *p;
        size_t len;
        dsq_cdc_reader r;
        dsq_cdc_event ev;
        /* Read back as the lake would from the log; then commit. */
        if (dsq_cdc_cap_encode(cap, &p, &len) != 0 || dsq_cdc_read_begin(&r, p, len) != 0) {
            fprintf(stderr, "encode or read\n");
            return -1;
        }
        int rc;
        while ((rc = dsq_cdc_read_next(&r, &ev)) == 1) {
            if (ev.table_len != strlen(t->name) || memcmp(ev.table, t->name, ev.table_len) != 0)
                continue;
            if (dsq_changelog_add(cl, &ev, lsn0 + x, 1765000000000000LL + (int64_t)x * 1000000, err, sizeof err) != 0) {
                fprintf(stderr, "add: %s\n", err);
                return -1;
            }
        }
        dsq_cdc_read_end(&r);
        if (rc < 0) {
            fprintf(stderr, "damaged\n");
            return -1;
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        dsq_cdc_cap_reset(cap);
    }
    dsq_pq_file_stats st;
    if (dsq_changelog_close(cl, &st, err, sizeof err) != 0) {
        fprintf(stderr, "close: %s\n", err);
        return -1;
    }
    close(fd);
    printf("%s: %llu rows\n", t->name, (unsigned long long)st.rows);
    dsq_pq_stats_free(&st);
    return 0;
}

/* The rows of `select` as JSON arrays into `file`. */
static int dump(sqlite3 *db, const char *select, const char *file)
{
    FILE *f = fopen(file, "w");
    sqlite3_stmt *q;
    if (f == NULL || sqlite3_prepare_v2(db, select, -1, &q, NULL) != SQLITE_OK)
        return -1;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_puts(&b, "[");
    for (int row = 0; sqlite3_step(q) == SQLITE_ROW; row++) {
        dsq_buf_puts(&b, row ? ",[" : "[");
        for (int i = 0; i < sqlite3_column_count(q); i++) {
            dsq_value v = {0};
            switch (sqlite3_column_type(q, i)) {
            case SQLITE_INTEGER: v.type = DSQ_V_INT; v.i = sqlite3_column_int64(q, i); break;
            case SQLITE_FLOAT: v.type = DSQ_V_REAL; v.d = sqlite3_column_double(q, i); break;
            case SQLITE_TEXT:
                v.type = DSQ_V_TEXT;
                v.p = (const char *)sqlite3_column_text(q, i);
                v.n = (size_t)sqlite3_column_bytes(q, i);
                break;
            case SQLITE_BLOB:
                v.type = DSQ_V_BLOB;
                v.p = sqlite3_column_blob(q, i);
                v.n = (size_t)sqlite3_column_bytes(q, i);
                break;
            default: v.type = DSQ_V_NULL;
            }
            if (i)
                dsq_buf_puts(&b, ",");
            dsq_json_value(&b, &v);
        }
        dsq_buf_puts(&b, "]");
    }
    dsq_buf_puts(&b, "]\n");
    fwrite(b.data, 1, b.len, f);
    fclose(f);
    sqlite3_finalize(q);
    dsq_buf_free(&b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: changelog_write DIR\n");
        return 2;
    }
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INT, data BLOB, misc);"
                         "CREATE TABLE w(k TEXT PRIMARY KEY, v INT) WITHOUT ROWID",
                     NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    dsq_cdc_cap *cap = dsq_cdc_cap_new(db);
    if (cap == NULL)
        return 1;
    /* The tables as their declared types make them (field ids from 10). */
    static const char *const names[] = {"id", "name", "price", "qty", "data", "misc"};
    static const char *const decls[] = {"INTEGER", "TEXT", "REAL", "INT", "BLOB", ""};
    dsq_lk_col cols[6];
    for (int i = 0; i < 6; i++)
        cols[i] = (dsq_lk_col){names[i], dsq_lk_type_of(decls[i]), 10 + i};
    dsq_lk_table t = {"t", cols, 6, 100};
    dsq_lk_col wcols[] = {{"k", dsq_lk_type_of("TEXT"), 10}, {"v", dsq_lk_type_of("INT"), 11}};
    dsq_lk_table w = {"w", wcols, 2, 100};
    char path[4096], path2[4096];
    snprintf(path, sizeof path, "%s/changelog.parquet", argv[1]);
    snprintf(path2, sizeof path2, "%s/changelog_w.parquet", argv[1]);
    if (run(db, cap, &t, script_t, sizeof script_t / sizeof script_t[0], 100, path) != 0 ||
        run(db, cap, &w, script_w, sizeof script_w / sizeof script_w[0], 200, path2) != 0)
        return 1;
    snprintf(path, sizeof path, "%s/final.json", argv[1]);
    snprintf(path2, sizeof path2, "%s/final_w.json", argv[1]);
    if (dump(db, "SELECT rowid, * FROM t ORDER BY rowid", path) != 0 || dump(db, "SELECT * FROM w ORDER BY k", path2) != 0)
        return 1;
    json_t *fields = dsq_lk_fields(&t);
    snprintf(path, sizeof path, "%s/fields.json", argv[1]);
    json_dump_file(fields, path, JSON_COMPACT);
    json_decref(fields);
    dsq_cdc_cap_free(cap);
    sqlite3_close(db);
    return 0;
}
