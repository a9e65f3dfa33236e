/* store — where a database's bytes live: DATA_DIR/db/NAME is a page
 * store (pagestore.c: its format file and its log), which SQLite reads and
 * writes through the VFS (vfs.c). The LSN is the log's.
 *
 * Divisions: layout; the data directory's lock; the journal at start;
 * opening; dropping and listing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/runtime/engine_int.h"
#include "engine/storage/disk.h"
#include "engine/storage/journal.h"
#include "engine/storage/pagestore.h"
#include "engine/storage/vfs.h"
#include "engine/tier/tier.h"

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

/* ---- the data directory's lock ------------------------------------------------------------- */

/* DATA_DIR/LOCK: a data directory belongs to one process at a time. The
 * lock is an open-file-description lock (F_OFD_SETLK) on the whole file:
 * the kernel drops it when its descriptor closes, so when the process
 * ends however it ends (kill -9 too), and it conflicts with any other
 * open of the file, in this process or another. The file holds the
 * holder's pid and a newline, for the message a second process prints
 * (OFD locks do not report their owner: F_OFD_GETLK's l_pid is -1); a
 * clean release empties it. The file itself stays: removing it would
 * let a third process lock a new file while a second waits on the old. */

/* The pid in a held LOCK file, or 0 when it cannot be read. The holder
 * writes it just after it takes the lock: a few tries, 50 ms at most. */
static long lock_holder(int fd)
{
    for (int i = 0; i < 10; i++) {
        char b[32];
        ssize_t n = pread(fd, b, sizeof b - 1, 0);
        if (n > 0) {
            b[n] = '\0';
            char *end;
            long pid = strtol(b, &end, 10);
            if (pid > 0 && *end == '\n')
                return pid;
        }
        usleep(5000);
    }
    return 0;
}

int dsq_engine_lock_dir(const char *data_dir, char *err, size_t errlen)
{
    char path[4200];
    if (snprintf(path, sizeof path, "%s/LOCK", data_dir) >= (int)sizeof path) {
        snprintf(err, errlen, "data directory path too long");
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
        return -1;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            long pid = lock_holder(fd);
            if (pid > 0)
                snprintf(err, errlen,
                         "data directory %.3000s is in use by process %ld (it holds %.3000s); "
                         "a data directory belongs to one process at a time",
                         data_dir, pid, path);
            else
                snprintf(err, errlen,
                         "data directory %.3000s is in use by another process (it holds %.3000s); "
                         "a data directory belongs to one process at a time",
                         data_dir, path);
        } else {
            snprintf(err, errlen, "cannot lock %.3000s: %s", path, strerror(e));
        }
        close(fd);
        return -1;
    }
    char b[32];
    int n = snprintf(b, sizeof b, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, b, (size_t)n, 0) != n) {
        snprintf(err, errlen, "cannot write %.3000s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void dsq_engine_unlock_dir(int fd)
{
    if (fd < 0)
        return;
    /* Still held: no one else can be writing it. */
    if (ftruncate(fd, 0) != 0) {
        /* The next holder rewrites it; a stale pid misleads no lock. */
    }
    close(fd);
}

/* ---- the journal at start -------------------------------------------------------------------- */

/* Replay: each database named in the live journal, by name (open
 * addressing). */
typedef struct rdb {
    char name[DSQ_JNL_NAME_MAX + 1];
    bool used;
    bool skip;          /* no such database: its entries are ignored */
    bool any;           /* an entry was put back: the log ends after the last */
    int fd;             /* the segment being written, or -1 */
    uint32_t fd_seg;
    uint32_t last_seg;
    uint64_t last_end;
} rdb;

typedef struct replay {
    const char *data_dir;
    rdb *t;
    size_t cap, n;
} replay;

static rdb *rdb_get(replay *r, const char *name)
{
    if (2 * (r->n + 1) > r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        rdb *t = calloc(cap, sizeof *t);
        if (t == NULL)
            return NULL;
        for (size_t i = 0; i < r->cap; i++) {
            if (!r->t[i].used)
                continue;
            size_t h = dsq_hash_str(r->t[i].name) & (cap - 1);
            while (t[h].used)
                h = (h + 1) & (cap - 1);
            t[h] = r->t[i];
        }
        free(r->t);
        r->t = t;
        r->cap = cap;
    }
    size_t h = dsq_hash_str(name) & (r->cap - 1);
    while (r->t[h].used && strcmp(r->t[h].name, name) != 0)
        h = (h + 1) & (r->cap - 1);
    rdb *d = &r->t[h];
    if (!d->used) {
        d->used = true;
        d->fd = -1;
        dsq_strlcpy(d->name, name, sizeof d->name);
        r->n++;
        char path[4200];
        struct stat st;
        if (!dsq_db_name_valid(name) ||
            snprintf(path, sizeof path, "%s/db/%s/wal", r->data_dir, name) >= (int)sizeof path ||
            stat(path, &st) != 0) {
            d->skip = true;
            DSQ_WARN("journal_entries_skipped", "db=%s reason=no_such_database", dsq_log_q(name));
        }
    }
    return d;
}

static int rdb_seg(replay *r, rdb *d, uint32_t seg, char *err, size_t errlen)
{
    if (d->fd >= 0 && d->fd_seg == seg)
        return 0;
    if (d->fd >= 0)
        close(d->fd);
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/db/%s/wal", r->data_dir, d->name);
    dsq_wal_seg_path(dir, seg, path, sizeof path);
    d->fd = open(path, O_RDWR | O_CLOEXEC);
    if (d->fd < 0 && errno != ENOENT) {
        snprintf(err, errlen, "journal replay: cannot open %.3000s: %s", path, strerror(errno));
        return -1;
    }
    d->fd_seg = seg;
    return 0;
}

/* Put one entry's record back at its place in its database's log. A
 * segment that is gone was retired behind a checkpoint: nothing to do. */
static int replay_visit(void *ud, const dsq_jnl_entry *en, char *err, size_t errlen)
{
    replay *r = ud;
    rdb *d = rdb_get(r, en->name);
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (d->skip)
        return 0;
    if (rdb_seg(r, d, en->seg, err, errlen) != 0)
        return -1;
    if (d->fd < 0)
        return 0;
    int rc = en->rec != NULL ? dsq_pwrite_full(d->fd, en->rec, en->len, en->off) : 0;
    if (rc != 0) {
        snprintf(err, errlen, "journal replay: cannot write the log of %s: %s", d->name, strerror(-rc));
        return -1;
    }
    d->any = true;
    d->last_seg = en->seg;
    d->last_end = en->off + en->len;
    return 0;
}

/* Each log put back ends after its last journaled record: what follows it
 * was never acknowledged (and may be torn). */
static int replay_finish(replay *r, char *err, size_t errlen)
{
    int rc = 0;
    for (size_t i = 0; i < r->cap; i++) {
        rdb *d = &r->t[i];
        if (!d->used)
            continue;
        if (d->fd >= 0)
            close(d->fd);
        d->fd = -1;
        if (!d->any || rc != 0)
            continue;
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/db/%s/wal", r->data_dir, d->name);
        if (dsq_wal_cut_after(dir, d->last_seg, d->last_end, err, errlen) != 0)
            rc = -1;
    }
    return rc;
}

int dsq__store_journal_start(dsq_engine *e, char *err, size_t errlen)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/journal", e->data_dir) >= (int)sizeof dir) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    bool want = e->cfg.journal && e->cfg.sync != DSQ_SYNC_OFF;
    struct stat st;
    if (!want && stat(dir, &st) != 0)
        return 0; /* none before, none now */
    replay r = {.data_dir = e->data_dir};
    long n = dsq_jnl_replay(dir, replay_visit, &r, err, errlen);
    int rc = n < 0 ? -1 : replay_finish(&r, err, errlen);
    if (n < 0)
        for (size_t i = 0; i < r.cap; i++)
            if (r.t[i].used && r.t[i].fd >= 0)
                close(r.t[i].fd);
    if (rc == 0 && n > 0)
        DSQ_INFO("journal_replayed", "entries=%ld databases=%zu", n, r.n);
    free(r.t);
    if (rc != 0)
        return -1;
    /* Opening syncs what replay wrote; closing at once, when the journal
     * is not wanted, leaves nothing live in it. */
    dsq_jnl *j = dsq_jnl_open(dir, e->cfg.journal_bytes, err, errlen);
    if (j == NULL)
        return -1;
    if (want)
        e->jnl = j;
    else
        dsq_jnl_close(j);
    return 0;
}

/* ---- opening --------------------------------------------------------------------------------- */

/* A commit record of an open database (its actor_open is ud): to the
 * replication hooks when this copy is the primary. */
static void on_commit(void *ud, uint64_t lsn, const void *rec, size_t len)
{
    actor_open *o = ud;
    const dsq_repl_hooks *h = o->engine->cfg.repl;
    if (o->role == DSQ_ROLE_PRIMARY)
        h->committed(h->ud, o->name, lsn, rec, len);
}

int dsq__store_open(const dsq_engine *e, const char *name, bool known_durable, void *commit_ud, dsq_ps **ps,
                    sqlite3 **db, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    *ps = NULL;
    *db = NULL;
    if (db_dir(e->data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -ENAMETOOLONG;
    }
    snprintf(path, sizeof path, "%s/data.sqlite", dir);
    if (access(path, F_OK) == 0) {
        snprintf(err, errlen, "%.3000s is in the format of early dosqld builds (SQLite's own files); "
                 "dump it with sqlite3 and load it again", dir);
        return -EINVAL;
    }
    dsq_ps_cfg pc = {
        .page_size = e->cfg.page_size,
        .segment_bytes = e->cfg.segment_bytes,
        .zstd_level = e->cfg.zstd_level,
        .max_txn_bytes = e->cfg.max_txn_bytes,
        .checkpoint_bytes = e->cfg.checkpoint_bytes,
        .retention_us = e->cfg.retention_ms * 1000,
        .known_durable = known_durable || e->cfg.sync == DSQ_SYNC_OFF,
        .jnl = e->jnl,
        .name = name,
        .cold_src = e->warm ? &e->cold_src : NULL,
        .max_open_files = e->cfg.max_open_files,
        .on_commit = e->cfg.repl != NULL && commit_ud != NULL ? on_commit : NULL,
        .on_commit_ud = commit_ud,
        .hold = dsq__held_after,
        .hold_ud = (void *)e, /* (read only, under its own lock) */
    };
    int rc = dsq_ps_open(dir, &pc, ps, err, errlen);
    if (rc != 0)
        return rc;
    snprintf(path, sizeof path, "%s/db", dir); /* the name SQLite knows it by; no such file */
    if ((rc = dsq__vfs_open(*ps, path, db, err, errlen)) != 0) {
        dsq_ps_close(*ps);
        *ps = NULL;
        return rc;
    }
    return 0;
}

bool dsq__store_exists(const dsq_engine *e, const char *name)
{
    char dir[4096];
    struct stat st;
    return db_dir(e->data_dir, name, dir, sizeof dir) == 0 && stat(dir, &st) == 0;
}

/* Dropping: the directory moves to db/.dropped.NAME (one rename, made
 * durable) before the tombstone is written (tier.h), so that a tombstone
 * next to a directory of the name always means a database made again
 * after the drop; a crash between the two leaves .dropped.NAME, and the
 * next start finishes the drop (dsq__store_sweep_dropped). */
typedef struct drop_ctx {
    const dsq_engine *e;
    const char *name;
    char dir[4096];      /* db/NAME */
    char gone[4200];     /* db/.dropped.NAME */
    char base[4096];     /* db */
    bool local;          /* it was here (moved away) */
} drop_ctx;

static int drop_local(void *ud, char *err, size_t errlen)
{
    drop_ctx *x = ud;
    struct stat st;
    if (stat(x->dir, &st) == 0) {
        /* No live journal entry may name it when it goes: a database made
         * later under the same name must not get them at the next start. */
        if (x->e->jnl != NULL && dsq_jnl_barrier(x->e->jnl, err, errlen) != 0)
            return -1;
        char e2[256];
        dsq_ps_remove(x->gone, e2, sizeof e2); /* a leftover of a drop before */
        if (rename(x->dir, x->gone) != 0) {
            snprintf(err, errlen, "rename %.1000s: %s", x->dir, strerror(errno));
            return -1;
        }
        dsq_fsync_dir(x->base);
        x->local = true;
        return 0;
    }
    /* Not here: the store may have it (not restored yet, the store being
     * unreachable at start). */
    dsq_tier *t = x->e->tier;
    if (t == NULL || dsq_tier_tombstoned(t, x->name))
        return 1;
    char msg[300] = "";
    int has = dsq_tier_exists(t, x->name, msg, sizeof msg);
    if (has > 0)
        return 0;
    if (has == 0 || dsq_tier_ready(t))
        return 1; /* (every database the store had is here: the store's failure tells nothing) */
    snprintf(err, errlen, "%s is not on this node and the object store cannot tell whether it has it: %s", x->name,
             msg);
    return 2;
}

int dsq__store_drop(const dsq_engine *e, const char *name, char *err, size_t errlen)
{
    drop_ctx x = {.e = e, .name = name};
    const char *data_dir = e->data_dir;
    if (db_dir(data_dir, name, x.dir, sizeof x.dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    snprintf(x.base, sizeof x.base, "%s/db", data_dir);
    snprintf(x.gone, sizeof x.gone, "%s/db/.dropped.%s", data_dir, name);
    dsq_evict_opening(e->evict, name); /* no eviction of its files meanwhile */
    int rc = e->tier ? dsq_tier_drop(e->tier, name, drop_local, &x, err, errlen) : drop_local(&x, err, errlen);
    dsq_evict_closed(e->evict, name);
    if (x.local && rc == 0) {
        /* Dropped: its bytes go; what is left of them goes at the next
         * start. (When the tombstone could not be written, the directory
         * stays renamed: the next start writes the tombstone and ends the
         * drop, which its queued job may have ended already.) */
        char e2[256];
        if (dsq_ps_remove(x.gone, e2, sizeof e2) != 0)
            DSQ_WARN("drop_cleanup_failed", "db=%s reason=%s", name, dsq_log_q(e2));
        else
            dsq_fsync_dir(x.base);
    }
    return rc;
}

int dsq__store_forget(const dsq_engine *e, const char *name, char *err, size_t errlen)
{
    char dir[4096], gone[4200], base[4096];
    if (db_dir(e->data_dir, name, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    snprintf(base, sizeof base, "%s/db", e->data_dir);
    snprintf(gone, sizeof gone, "%s/db/.reset.%s", e->data_dir, name);
    struct stat st;
    if (stat(dir, &st) != 0)
        return 0;
    /* No journal entry may put its records back at the next start. */
    if (e->jnl != NULL && dsq_jnl_barrier(e->jnl, err, errlen) != 0)
        return -1;
    char e2[256];
    dsq_ps_remove(gone, e2, sizeof e2); /* a leftover of a reset before */
    if (rename(dir, gone) != 0) {
        snprintf(err, errlen, "rename %.1000s: %s", dir, strerror(errno));
        return -1;
    }
    dsq_fsync_dir(base);
    if (dsq_ps_remove(gone, e2, sizeof e2) != 0)
        DSQ_WARN("reset_cleanup_failed", "db=%s reason=%s", name, dsq_log_q(e2)); /* (swept at the next start) */
    else
        dsq_fsync_dir(base);
    return 0;
}

int dsq__store_sweep_dropped(dsq_engine *e, char *err, size_t errlen)
{
    char base[4096];
    snprintf(base, sizeof base, "%s/db", e->data_dir);
    DIR *d = opendir(base);
    if (d == NULL)
        return 0;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ".reset.", 7) == 0) { /* a copy forgotten (dsq__store_forget): no tombstone */
            char p[4400], e2[256];
            snprintf(p, sizeof p, "%s/%s", base, de->d_name);
            if (dsq_ps_remove(p, e2, sizeof e2) != 0)
                DSQ_WARN("reset_cleanup_failed", "dir=%s reason=%s", de->d_name, dsq_log_q(e2));
            continue;
        }
        if (strncmp(de->d_name, ".dropped.", 9) != 0 || !dsq_db_name_valid(de->d_name + 9))
            continue;
        const char *name = de->d_name + 9;
        if (e->tier != NULL && !dsq_tier_tombstoned(e->tier, name) &&
            dsq_tier_drop(e->tier, name, NULL, NULL, err, errlen) != 0) {
            rc = -1;
            break;
        }
        char p[4400], e2[256];
        snprintf(p, sizeof p, "%s/%s", base, de->d_name);
        if (dsq_ps_remove(p, e2, sizeof e2) != 0)
            DSQ_WARN("drop_cleanup_failed", "db=%s reason=%s", name, dsq_log_q(e2));
        DSQ_INFO("drop_finished_at_start", "db=%s", name);
    }
    closedir(d);
    if (rc == 0)
        dsq_fsync_dir(base);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int dsq__store_list(const char *data_dir, char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/db", data_dir);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!dsq_db_name_valid(de->d_name))
            continue; /* ".", "..", and anything that is not ours */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (grown == NULL) {
                rc = -1;
                break;
            }
            names = grown;
        }
        if ((names[n] = strdup(de->d_name)) == NULL)
            rc = -1;
        else
            n++;
    }
    closedir(d);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return -1;
    }
    if (n > 0) /* names is NULL when there are none */
        qsort(names, n, sizeof *names, cmp_names);
    *out = names;
    *nout = n;
    return 0;
}
