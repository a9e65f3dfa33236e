/* store — where a database's bytes live. This version keeps each database
 * in SQLite's own files: DATA_DIR/db/NAME/data.sqlite with its -wal and
 * -shm, in WAL mode with synchronous=FULL, so a commit is durable when
 * COMMIT returns. The LSN (a per-database commit counter) lives in the
 * database itself, in the table _dosqld_meta, written in the same
 * transaction as the changes it counts. The storage issue replaces this
 * file with dosqld's own log under a VFS; the engine does not change.
 *
 * Divisions: layout; opening; the LSN; dropping and listing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/engine_int.h"

static int db_dir(const char *data_dir, const char *name, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/db/%s", data_dir, name);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

/* fsync a directory so that an entry made or removed in it is durable. */
static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int dsq__store_init(const char *data_dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/db", data_dir);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int exec_simple(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

int dsq__store_open(const char *data_dir, const char *name, sqlite3 **out, uint64_t *lsn,
                    char *err, size_t errlen)
{
    char dir[4096], path[4200];
    *out = NULL;
    if (db_dir(data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    bool created = false;
    if (mkdir(dir, 0700) == 0) {
        created = true;
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/data.sqlite", dir);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %.3000s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    /* One actor owns the file: hold the lock for the connection's life, so
     * no transaction pays for fcntl locks, and WAL keeps its index in heap
     * memory instead of a -shm mapping. */
    if (exec_simple(db, "PRAGMA locking_mode=EXCLUSIVE", err, errlen) != SQLITE_OK ||
        exec_simple(db, "PRAGMA journal_mode=WAL", err, errlen) != SQLITE_OK ||
        exec_simple(db, "PRAGMA synchronous=FULL", err, errlen) != SQLITE_OK ||
        exec_simple(db,
                    "CREATE TABLE IF NOT EXISTS " DSQ__META_TABLE
                    "(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID",
                    err, errlen) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    *lsn = 0;
    rc = sqlite3_prepare_v2(db, "SELECT v FROM " DSQ__META_TABLE " WHERE k = 'lsn'", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        *lsn = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (created) { /* the new directory's entry, and its own entries */
        sync_dir(dir);
        char parent[4096];
        snprintf(parent, sizeof parent, "%s/db", data_dir);
        sync_dir(parent);
    }
    *out = db;
    return 0;
}

int dsq__store_set_lsn(sqlite3 *db, uint64_t lsn)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO " DSQ__META_TABLE "(k, v) VALUES ('lsn', ?1) "
                                "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)lsn);
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    return rc;
}

int dsq__store_drop(const char *data_dir, const char *name, char *err, size_t errlen)
{
    static const char *const files[] = {"data.sqlite", "data.sqlite-wal", "data.sqlite-shm",
                                        "data.sqlite-journal"};
    char dir[4096], path[4200];
    if (db_dir(data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove %.3000s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (rmdir(dir) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/db", data_dir);
    sync_dir(path);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *dsq__store_list(const char *data_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/db", data_dir);
    DIR *d = opendir(path);
    if (d == NULL)
        return NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!dsq_db_name_valid(de->d_name))
            continue; /* ".", "..", and anything that is not ours */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (grown == NULL)
                break;
            names = grown;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n > 0) /* names is NULL when there are none */
        qsort(names, n, sizeof *names, cmp_names);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        if (names[i])
            json_array_append_new(arr, json_string(names[i]));
        free(names[i]);
    }
    free(names);
    return arr;
}
