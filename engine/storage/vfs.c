/* vfs — the SQLite VFS "dosqld": a connection's main database file is a
 * page store (pagestore.c); every other file SQLite asks for (temporary
 * databases, sorter spills, statement journals when they leave memory) is
 * the default VFS's.
 *
 * SQLite runs over it with journal_mode=MEMORY (its rollback journal in
 * memory: statement and transaction rollbacks write the old pages back,
 * into the store's buffer), synchronous=OFF (durability is the log's) and
 * locking_mode=NORMAL, so that it releases its lock after every
 * transaction. The commit point is SQLITE_FCNTL_COMMIT_PHASETWO, which the
 * pager sends once a transaction's pages are all written (and a shrink
 * applied) and only when it commits; there the buffer becomes a log
 * record. A lock dropped to SHARED or less with pages still buffered means
 * the transaction rolled back: the buffer is dropped.
 *
 * A connection is bound to its store by the thread that opens it: the
 * store is passed in a thread-local for the duration of sqlite3_open_v2. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/storage/pagestore.h"
#include "engine/storage/vfs.h"
#include "engine/storage/cold.h"

#define VFS_NAME "dosqld"

typedef struct ps_file {
    sqlite3_file base;
    dsq_ps *ps;
    dsq_ps_view *view; /* a read-only connection on the database as it was */
    int lock;
    uint8_t *page; /* scratch page for partial reads and writes */
} ps_file;

static sqlite3_vfs vfs;
static sqlite3_vfs *os; /* the default VFS, for every other file */
static __thread dsq_ps *opening;
static __thread dsq_ps_view *opening_view;
/* The errno of the store's last failure on this thread, until taken
 * (dsq__vfs_take_errno). SQLite may also ask for it (xGetLastError), which
 * leaves it in place: it does so on some paths only. */
static __thread int store_errno;

static uint32_t f_npages(const ps_file *p)
{
    return p->view ? dsq_ps_view_npages(p->view) : dsq_ps_npages(p->ps);
}

static int f_page(ps_file *p, uint32_t pgno, uint32_t off, uint32_t n, void *dst)
{
    return p->view ? dsq_ps_view_read_part(p->view, pgno, off, n, dst)
                   : dsq_ps_read_part(p->ps, pgno, off, n, dst);
}

/* ---- the main database file ----------------------------------------------------------------- */

static int f_close(sqlite3_file *f)
{
    ps_file *p = (ps_file *)f;
    if (p->ps && !p->view && dsq_ps_dirty(p->ps))
        dsq_ps_discard(p->ps);
    free(p->page);
    p->page = NULL;
    return SQLITE_OK;
}

static int f_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    ps_file *p = (ps_file *)f;
    uint32_t psz = dsq_ps_page_size(p->ps);
    uint64_t end = (uint64_t)f_npages(p) * psz;
    uint8_t *out = buf;
    uint64_t at = (uint64_t)off;
    size_t left = (size_t)amt;
    while (left > 0) {
        uint32_t pgno = (uint32_t)(at / psz) + 1;
        size_t within = at % psz, n = psz - within < left ? psz - within : left;
        if (f_page(p, pgno, (uint32_t)within, (uint32_t)n, out) != 0) {
            /* A page of an evicted file that is on its way (cold.h): not
             * an I/O error, which would make SQLite roll back the whole
             * transaction; BUSY undoes only the statement, which the
             * engine runs again once the page is here. */
            if (dsq_cold_missed())
                return SQLITE_BUSY;
            store_errno = errno;
            return SQLITE_IOERR_READ;
        }
        out += n;
        at += n;
        left -= n;
    }
    /* Reading past the end: zeros (the store gave them) and a short read. */
    return (uint64_t)off + (uint64_t)amt > end ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int f_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    ps_file *p = (ps_file *)f;
    if (p->view)
        return SQLITE_READONLY;
    uint32_t psz = dsq_ps_page_size(p->ps);
    const uint8_t *in = buf;
    uint64_t at = (uint64_t)off;
    size_t left = (size_t)amt;
    while (left > 0) {
        uint32_t pgno = (uint32_t)(at / psz) + 1;
        size_t within = at % psz, n = psz - within < left ? psz - within : left;
        const uint8_t *src = in;
        if (within != 0 || n != psz) { /* a part of a page: read, change, write */
            if (dsq_ps_read(p->ps, pgno, p->page) != 0)
                return SQLITE_IOERR_WRITE; /* a part of a page: read it whole first */
            memcpy(p->page + within, in, n);
            src = p->page;
        }
        if (dsq_ps_write(p->ps, pgno, src) != 0)
            return SQLITE_FULL; /* over the transaction's limit, or out of memory */
        in += n;
        at += n;
        left -= n;
    }
    return SQLITE_OK;
}

static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    ps_file *p = (ps_file *)f;
    if (p->view)
        return SQLITE_READONLY;
    uint32_t psz = dsq_ps_page_size(p->ps);
    dsq_ps_truncate(p->ps, (uint32_t)(((uint64_t)size + psz - 1) / psz));
    return SQLITE_OK;
}

static int f_sync(sqlite3_file *f, int flags) { return SQLITE_OK; }

static int f_size(sqlite3_file *f, sqlite3_int64 *size)
{
    ps_file *p = (ps_file *)f;
    *size = (sqlite3_int64)f_npages(p) * dsq_ps_page_size(p->ps);
    return SQLITE_OK;
}

static int f_lock(sqlite3_file *f, int level)
{
    ((ps_file *)f)->lock = level;
    return SQLITE_OK;
}

static int f_unlock(sqlite3_file *f, int level)
{
    ps_file *p = (ps_file *)f;
    p->lock = level;
    if (!p->view && level <= SQLITE_LOCK_SHARED && dsq_ps_dirty(p->ps))
        dsq_ps_discard(p->ps); /* the transaction ended without its commit */
    return SQLITE_OK;
}

static int f_check_reserved(sqlite3_file *f, int *out)
{
    *out = ((ps_file *)f)->lock >= SQLITE_LOCK_RESERVED;
    return SQLITE_OK;
}

static int f_control(sqlite3_file *f, int op, void *arg)
{
    ps_file *p = (ps_file *)f;
    if (op == SQLITE_FCNTL_COMMIT_PHASETWO && !p->view) {
        if (dsq_ps_commit(p->ps) == 0)
            return SQLITE_OK;
        store_errno = errno;
        return dsq_ps_full(p->ps) ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    }
    if (op == SQLITE_FCNTL_VFSNAME) {
        *(char **)arg = sqlite3_mprintf("%s", VFS_NAME);
        return SQLITE_OK;
    }
    return SQLITE_NOTFOUND;
}

static int f_sector_size(sqlite3_file *f) { return (int)dsq_ps_page_size(((ps_file *)f)->ps); }

static int f_device_characteristics(sqlite3_file *f)
{
    /* Writes land in a buffer and reach the log whole, at the commit. */
    return SQLITE_IOCAP_POWERSAFE_OVERWRITE | SQLITE_IOCAP_SEQUENTIAL | SQLITE_IOCAP_SAFE_APPEND;
}

static const sqlite3_io_methods ps_methods = {
    .iVersion = 1, /* no shared memory: WAL mode is refused, as it should be */
    .xClose = f_close,
    .xRead = f_read,
    .xWrite = f_write,
    .xTruncate = f_truncate,
    .xSync = f_sync,
    .xFileSize = f_size,
    .xLock = f_lock,
    .xUnlock = f_unlock,
    .xCheckReservedLock = f_check_reserved,
    .xFileControl = f_control,
    .xSectorSize = f_sector_size,
    .xDeviceCharacteristics = f_device_characteristics,
};

/* ---- the VFS -------------------------------------------------------------------------------- */

static int v_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
    if (!(flags & SQLITE_OPEN_MAIN_DB))
        return os->xOpen(os, name, f, flags, out_flags);
    ps_file *p = (ps_file *)f;
    memset(p, 0, sizeof *p);
    dsq_ps *ps = opening_view ? dsq_ps_view_store(opening_view) : opening;
    if (ps == NULL)
        return SQLITE_CANTOPEN; /* only dsq__vfs_open opens databases here */
    p->page = malloc(dsq_ps_page_size(ps));
    if (p->page == NULL)
        return SQLITE_NOMEM;
    p->ps = ps;
    p->view = opening_view;
    p->base.pMethods = &ps_methods;
    if (out_flags)
        *out_flags = flags;
    return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *v, const char *name, int sync) { return os->xDelete(os, name, sync); }

static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    /* No journal of a store's database is ever on disk: SQLite must not
     * find a stray one and "roll it back". */
    size_t n = strlen(name);
    if ((n > 8 && strcmp(name + n - 8, "-journal") == 0) || (n > 4 && strcmp(name + n - 4, "-wal") == 0)) {
        *out = 0;
        return SQLITE_OK;
    }
    return os->xAccess(os, name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return os->xFullPathname(os, name, n, out);
}

static int v_randomness(sqlite3_vfs *v, int n, char *out) { return os->xRandomness(os, n, out); }
static int v_sleep(sqlite3_vfs *v, int us) { return os->xSleep(os, us); }
static int v_current_time(sqlite3_vfs *v, double *t) { return os->xCurrentTime(os, t); }
static int v_last_error(sqlite3_vfs *v, int n, char *out)
{
    return store_errno != 0 ? store_errno : os->xGetLastError(os, n, out);
}

int dsq__vfs_take_errno(void)
{
    int e = store_errno;
    store_errno = 0;
    return e;
}
static int v_current_time64(sqlite3_vfs *v, sqlite3_int64 *t) { return os->xCurrentTimeInt64(os, t); }

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered = SQLITE_ERROR;

static void do_register(void)
{
    os = sqlite3_vfs_find(NULL);
    if (os == NULL || os->iVersion < 2)
        return;
    vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = os->szOsFile > (int)sizeof(ps_file) ? os->szOsFile : (int)sizeof(ps_file),
        .mxPathname = os->mxPathname,
        .zName = VFS_NAME,
        .xOpen = v_open,
        .xDelete = v_delete,
        .xAccess = v_access,
        .xFullPathname = v_full_pathname,
        .xRandomness = v_randomness,
        .xSleep = v_sleep,
        .xCurrentTime = v_current_time,
        .xGetLastError = v_last_error,
        .xCurrentTimeInt64 = v_current_time64,
    };
    registered = sqlite3_vfs_register(&vfs, 0);
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

/* The negated errno of db's last I/O failure (the store's, which SQLite
 * took through xGetLastError), -ENOMEM without a db, or -EIO when there
 * was none: what a failed open returns. */
static int conn_error(sqlite3 *db)
{
    int e = db != NULL ? sqlite3_system_errno(db) : ENOMEM;
    return e != 0 ? -e : -EIO;
}

/* Open `path` on the VFS with the store (or view) handed to xOpen through
 * the thread-locals, then run `pragmas`. 0, or conn_error()'s code. */
static int open_conn(dsq_ps *ps, dsq_ps_view *v, const char *path, int flags, const char *const *pragmas,
                     sqlite3 **out, char *err, size_t errlen)
{
    *out = NULL;
    pthread_once(&once, do_register);
    if (registered != SQLITE_OK) {
        snprintf(err, errlen, "cannot register the SQLite VFS");
        return -EIO;
    }
    sqlite3 *db = NULL;
    opening = ps;
    opening_view = v;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, VFS_NAME);
    opening = NULL;
    opening_view = NULL;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %.3000s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        rc = conn_error(db);
        sqlite3_close(db);
        return rc;
    }
    for (; *pragmas; pragmas++) {
        if (exec_simple(db, *pragmas, err, errlen) != SQLITE_OK) {
            rc = conn_error(db);
            sqlite3_close(db);
            return rc;
        }
    }
    *out = db;
    return 0;
}

int dsq__vfs_open(dsq_ps *ps, const char *path, sqlite3 **out, char *err, size_t errlen)
{
    char page_size[64];
    snprintf(page_size, sizeof page_size, "PRAGMA page_size=%u", dsq_ps_page_size(ps));
    const char *const pragmas[] = {page_size, "PRAGMA journal_mode=MEMORY", "PRAGMA synchronous=OFF",
                                   "PRAGMA temp_store=MEMORY", NULL};
    return open_conn(ps, NULL, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, pragmas, out, err, errlen);
}

int dsq__vfs_open_view(dsq_ps_view *v, const char *path, sqlite3 **out, char *err, size_t errlen)
{
    const char *const pragmas[] = {"PRAGMA query_only=1", "PRAGMA temp_store=MEMORY", NULL};
    return open_conn(NULL, v, path, SQLITE_OPEN_READONLY, pragmas, out, err, errlen);
}
