/* store — where a database's bytes live: DATA_DIR/db/NAME is a page
 * store (pagestore.c: its format file and its log), which SQLite reads and
 * writes through the VFS (vfs.c). The LSN is the log's.
 *
 * Divisions: layout; opening; dropping and listing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/disk.h"
#include "engine/engine_int.h"
#include "engine/pagestore.h"

static int db_dir(const char *data_dir, const char *name, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/db/%s", data_dir, name);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

/* fsync a directory so that an entry made or removed in it is durable. */

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

int dsq__store_open(const dsq_engine *e, const char *name, bool known_durable, dsq_ps **ps,
                    sqlite3 **db, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    *ps = NULL;
    *db = NULL;
    if (db_dir(e->data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    snprintf(path, sizeof path, "%s/data.sqlite", dir);
    if (access(path, F_OK) == 0) {
        snprintf(err, errlen, "%.3000s is in the format of dosqld before 0.2 (SQLite's own files); "
                 "dump it with sqlite3 and load it again", dir);
        return -1;
    }
    dsq_ps_cfg pc = {
        .page_size = e->cfg.page_size,
        .segment_bytes = e->cfg.segment_bytes,
        .zstd_level = e->cfg.zstd_level,
        .max_txn_bytes = e->cfg.max_txn_bytes,
        .checkpoint_bytes = e->cfg.checkpoint_bytes,
        .retention_us = e->cfg.retention_ms * 1000,
        .known_durable = known_durable || e->cfg.sync == DSQ_SYNC_OFF,
    };
    if (dsq_ps_open(dir, &pc, ps, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/db", dir); /* the name SQLite knows it by; no such file */
    if (dsq__vfs_open(*ps, path, db, err, errlen) != 0) {
        dsq_ps_close(*ps);
        *ps = NULL;
        return -1;
    }
    return 0;
}

int dsq__store_drop(const char *data_dir, const char *name, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    if (db_dir(data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    if (dsq_ps_remove(dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/db", data_dir);
    dsq_fsync_dir(path);
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
