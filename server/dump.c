/* dump — a SQLite file as SQL text (dump.h). */
#include "server/dump.h"

#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Appends that remember a failure (out of memory): a dump cut short must
 * never pass for a whole one. */
static _Thread_local int oom; /* (dumps run on the thread pool) */
#define PUTS(b, s) (oom |= dsq_buf_puts((b), (s)) != 0)
#define APPEND(b, p, n) (oom |= dsq_buf_append((b), (p), (n)) != 0)
#define PRINTF(b, ...) (oom |= dsq_buf_printf((b), __VA_ARGS__) != 0)

/* One value as a SQL literal. */
static void put_value(dsq_buf *b, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: PRINTF(b, "%lld", (long long)sqlite3_column_int64(st, i)); break;
    case SQLITE_FLOAT: {
        double d = sqlite3_column_double(st, i);
        if (isinf(d))
            PUTS(b, d > 0 ? "1e999" : "-1e999");
        else if (isnan(d))
            PUTS(b, "NULL");
        else {
            char t[64];
            sqlite3_snprintf(sizeof t, t, "%!.17g", d);
            PUTS(b, t);
        }
        break;
    }
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(st, i);
        int n = sqlite3_column_bytes(st, i);
        if (memchr(p, '\0', (size_t)n) != NULL) { /* SQL text ends at a NUL: the bytes, as text */
            PUTS(b, "CAST(X'");
            for (int k = 0; k < n; k++)
                PRINTF(b, "%02x", p[k]);
            PUTS(b, "' AS TEXT)");
            break;
        }
        PUTS(b, "'");
        for (int k = 0; k < n; k++) {
            if (p[k] == '\'')
                PUTS(b, "''");
            else
                APPEND(b, &p[k], 1);
        }
        PUTS(b, "'");
        break;
    }
    case SQLITE_BLOB: {
        const unsigned char *p = sqlite3_column_blob(st, i);
        int n = sqlite3_column_bytes(st, i);
        PUTS(b, "X'");
        for (int k = 0; k < n; k++)
            PRINTF(b, "%02x", p[k]);
        PUTS(b, "'");
        break;
    }
    default: PUTS(b, "NULL"); break;
    }
}

/* A string literal. */
static void put_str(dsq_buf *b, const char *s)
{
    char *q = sqlite3_mprintf("%Q", s);
    PUTS(b, q ? q : "NULL");
    sqlite3_free(q);
}

/* Every row of table `name` as INSERT statements. */
static int dump_rows(sqlite3 *db, const char *name, dsq_buf *b, char *err, size_t errlen)
{
    /* The columns an INSERT without a column list takes: not the
     * generated ones (as sqlite3 .dump). */
    sqlite3_stmt *st = NULL;
    dsq_buf cols = DSQ_BUF_INIT;
    int rc = sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0", -1, &st, NULL);
    if (rc == SQLITE_OK)
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        char *c = sqlite3_mprintf("%s\"%w\"", cols.len ? "," : "", (const char *)sqlite3_column_text(st, 0));
        if (c == NULL || dsq_buf_puts(&cols, c) != 0)
            rc = SQLITE_NOMEM;
        sqlite3_free(c);
    }
    sqlite3_finalize(st);
    st = NULL;
    char *sql = rc == SQLITE_OK ? sqlite3_mprintf("SELECT %s FROM \"%w\"", cols.len ? cols.data : "*", name) : NULL;
    dsq_buf_free(&cols);
    rc = sql ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading table %s: %s", name, sqlite3_errmsg(db));
        return -1;
    }
    char *ins = sqlite3_mprintf("INSERT INTO \"%w\" VALUES(", name);
    int n = sqlite3_column_count(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        PUTS(b, ins);
        for (int i = 0; i < n; i++) {
            if (i)
                PUTS(b, ",");
            put_value(b, st, i);
        }
        PUTS(b, ");\n");
    }
    sqlite3_free(ins);
    if (rc != SQLITE_DONE)
        snprintf(err, errlen, "reading table %s: %s", name, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int dsq_sqlite_dump(const char *path, const char *only, dsq_buf *out, char *err, size_t errlen)
{
    oom = 0;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "not a SQLite database: %s", db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'table' AND sql "
                                "NOT NULL ORDER BY rowid",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "not a SQLite database: %s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    bool writable = false, sequence = false;
    int bad = 0;
    while (bad == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *tbl = (const char *)sqlite3_column_text(st, 1);
        const char *sql = (const char *)sqlite3_column_text(st, 2);
        if (only != NULL && sqlite3_stricmp(name, only) != 0)
            continue;
        if (strcmp(name, "sqlite_sequence") == 0) {
            sequence = true;
            continue;
        }
        if (strncmp(name, "sqlite_", 7) == 0) /* (sqlite_stat1 and the like: made again by ANALYZE) */
            continue;
        if (strncmp(sql, "CREATE VIRTUAL TABLE", 20) == 0) {
            /* As the shell does: the table's row written straight into the
             * schema (its module's own tables follow, with their rows). */
            if (!writable)
                PUTS(out, "PRAGMA writable_schema=ON;\n");
            writable = true;
            PUTS(out, "INSERT INTO sqlite_schema(type,name,tbl_name,rootpage,sql)VALUES('table',");
            put_str(out, name);
            PUTS(out, ",");
            put_str(out, tbl);
            PUTS(out, ",0,");
            put_str(out, sql);
            PUTS(out, ");\n");
            continue;
        }
        PRINTF(out, "%s;\n", sql);
        if (dump_rows(db, name, out, err, errlen) != 0)
            bad = 1;
    }
    if (bad == 0 && rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading the schema: %s", sqlite3_errmsg(db));
        bad = 1;
    }
    sqlite3_finalize(st);
    if (bad == 0 && sequence && only == NULL) {
        PUTS(out, "DELETE FROM sqlite_sequence;\n");
        if (dump_rows(db, "sqlite_sequence", out, err, errlen) != 0)
            bad = 1;
    }
    st = NULL;
    if (bad == 0 && sqlite3_prepare_v2(db,
                                       "SELECT sql, tbl_name FROM sqlite_schema WHERE sql NOT NULL AND type IN "
                                       "('index', 'trigger', 'view') ORDER BY rowid",
                                       -1, &st, NULL) == SQLITE_OK) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (only == NULL || sqlite3_stricmp((const char *)sqlite3_column_text(st, 1), only) == 0)
                PRINTF(out, "%s;\n", (const char *)sqlite3_column_text(st, 0));
        if (rc != SQLITE_DONE) {
            snprintf(err, errlen, "reading the schema: %s", sqlite3_errmsg(db));
            bad = 1;
        }
    }
    sqlite3_finalize(st);
    if (writable)
        PUTS(out, "PRAGMA writable_schema=OFF;\n");
    sqlite3_close(db);
    if (bad == 0 && oom) {
        snprintf(err, errlen, "out of memory");
        bad = 1;
    }
    return bad ? -1 : 0;
}

int dsq_sqlite_dump_bytes(const char *dir, const void *p, size_t n, const char *only, dsq_buf *out, char *err,
                          size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/dump-XXXXXX", dir);
    int fd = mkstemp(path);
    bool wrote = fd >= 0;
    for (size_t off = 0; wrote && off < n;) {
        ssize_t w = write(fd, (const char *)p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        wrote = w > 0;
        off += w > 0 ? (size_t)w : 0;
    }
    if (fd >= 0)
        close(fd);
    int rc = -1;
    if (wrote)
        rc = dsq_sqlite_dump(path, only, out, err, errlen);
    else
        snprintf(err, errlen, "cannot write a temporary file in %s: %s", dir, strerror(errno));
    if (fd >= 0)
        unlink(path);
    return rc;
}
