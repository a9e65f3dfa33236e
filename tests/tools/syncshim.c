/* syncshim — an LD_PRELOAD library for the crash and fault tests.
 *
 *   DSQ_SYNCLOG=FILE     a log of what reached the disk, for a test that
 *                        kills dosqld and then plays a power cut:
 *                          "w OFF LEN PATH"  before each write to a regular
 *                                            file (write, pwrite, pwritev);
 *                          "s SIZE PATH"     after each successful fsync or
 *                                            fdatasync of a regular file: it
 *                                            is durable, SIZE bytes long;
 *                                            after a syncfs, one for every
 *                                            file written so far.
 *                        A power cut then keeps, of each file, its size at its
 *                        last "s" and loses every write logged after it.
 *   DSQ_FAILSYNC=FILE    while FILE exists, fsync/fdatasync of files under a
 *                        "/wal/" or "/journal/" directory, and syncfs of any
 *                        file system, fail with EIO (and sync nothing).
 *   DSQ_FAILSYNCFS=FILE  while FILE exists, syncfs alone fails with EIO
 *                        (fsync and fdatasync work).
 *   DSQ_FAILWRITE=FILE   while FILE exists, writes to files whose path holds
 *                        DSQ_FAILWRITE_PATH (default "/wal/") fail (and write
 *                        nothing), with errno EIO, or ENOSPC when FILE holds
 *                        "ENOSPC".
 *   DSQ_DROPWRITE=FILE   while FILE exists, writes (pwrite) of data to files
 *                        under a "/wal/" or "/journal/" directory report
 *                        success and write nothing: a process killed then
 *                        lost them, as a crash loses what was not written
 *                        yet (a primary's log ends before records it
 *                        shipped). Writes of zeros only (a journal's space
 *                        made ahead) are made.
 *   DSQ_FAILPUNCH=FILE   while FILE exists, fallocate() asked to punch a hole
 *                        fails with EOPNOTSUPP (a file system that cannot).
 *   DSQ_FAILSFR=FILE     while FILE exists, sync_file_range() fails with EIO
 *                        (and starts nothing).
 *
 * Test tooling only: never linked into dosqld. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

typedef int (*sync_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);

static int fd_path(int fd, char *out, size_t n)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, out, n - 1);
    if (k < 0)
        return -1;
    out[k] = '\0';
    return 0;
}

/* ---- the sync log ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char **written; /* paths written so far (for syncfs) */
static size_t nwritten, capwritten;

static void log_line(const char *line, size_t n)
{
    const char *logf = getenv("DSQ_SYNCLOG");
    int lfd = logf ? open(logf, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (lfd >= 0) {
        if (((write_fn)dlsym(RTLD_NEXT, "write"))(lfd, line, n) != (ssize_t)n) {
            /* the test sees the short log */
        }
        close(lfd);
    }
}

/* Append "s SIZE PATH" for a file now durable. */
static void log_synced_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    char line[4200];
    int n = snprintf(line, sizeof line, "s %lld %s\n", (long long)st.st_size, path);
    log_line(line, (size_t)n);
}

static void log_synced(int fd)
{
    char path[4096];
    if (getenv("DSQ_SYNCLOG") != NULL && fd_path(fd, path, sizeof path) == 0)
        log_synced_path(path);
}

/* Log "w OFF LEN PATH" before a write to fd (at the file's end when off
 * is -1), and remember the path. */
static void log_write(int fd, off_t off, size_t len)
{
    char path[4096];
    struct stat st;
    const char *logf = getenv("DSQ_SYNCLOG");
    if (logf == NULL || len == 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        fd_path(fd, path, sizeof path) != 0 || strcmp(path, logf) == 0)
        return;
    if (off < 0) {
        int fl = fcntl(fd, F_GETFL);
        off = (fl >= 0 && (fl & O_APPEND)) ? st.st_size : lseek(fd, 0, SEEK_CUR);
    }
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < nwritten && strcmp(written[i], path) != 0)
        i++;
    if (i == nwritten) {
        if (nwritten == capwritten) {
            size_t cap = capwritten ? 2 * capwritten : 256;
            char **n = realloc(written, cap * sizeof *n);
            if (n != NULL) {
                written = n;
                capwritten = cap;
            }
        }
        if (nwritten < capwritten && (written[nwritten] = strdup(path)) != NULL)
            nwritten++;
    }
    pthread_mutex_unlock(&mu);
    char line[4200];
    int n = snprintf(line, sizeof line, "w %lld %zu %s\n", (long long)off, len, path);
    log_line(line, (size_t)n);
}

/* ---- syncs ---- */

static int around(int fd, const char *name)
{
    sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
    char path[4096];
    const char *fail = getenv("DSQ_FAILSYNC");
    if (fail && access(fail, F_OK) == 0 && fd_path(fd, path, sizeof path) == 0 &&
        (strstr(path, "/wal/") != NULL || strstr(path, "/journal/") != NULL)) {
        errno = EIO;
        return -1;
    }
    int rc = real(fd);
    if (rc == 0)
        log_synced(fd);
    return rc;
}

int syncfs(int fd)
{
    const char *fail = getenv("DSQ_FAILSYNC");
    const char *fail_fs = getenv("DSQ_FAILSYNCFS");
    if ((fail && access(fail, F_OK) == 0) || (fail_fs && access(fail_fs, F_OK) == 0)) {
        errno = EIO;
        return -1;
    }
    /* What is written before it is durable after it: the files written
     * so far, taken now. */
    pthread_mutex_lock(&mu);
    size_t n = nwritten;
    char **paths = n ? malloc(n * sizeof *paths) : NULL;
    for (size_t i = 0; paths && i < n; i++)
        paths[i] = strdup(written[i]);
    pthread_mutex_unlock(&mu);
    int rc = ((sync_fn)dlsym(RTLD_NEXT, "syncfs"))(fd);
    for (size_t i = 0; paths && i < n; i++) {
        if (rc == 0 && paths[i])
            log_synced_path(paths[i]);
        free(paths[i]);
    }
    free(paths);
    return rc;
}

int fsync(int fd) { return around(fd, "fsync"); }
int fdatasync(int fd) { return around(fd, "fdatasync"); }

/* Whether DSQ_DROPWRITE's file exists and buf (not only zeros) is for a
 * file of a log: then it is not written. */
static int write_dropped(int fd, const void *buf, size_t n)
{
    const char *drop = getenv("DSQ_DROPWRITE");
    char path[4096];
    if (drop == NULL || access(drop, F_OK) != 0 || fd_path(fd, path, sizeof path) != 0 ||
        (strstr(path, "/wal/") == NULL && strstr(path, "/journal/") == NULL))
        return 0;
    const unsigned char *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 1;
    return 0;
}

/* Whether writes to fd are to fail now; sets errno. */
static int write_fails(int fd)
{
    const char *trigger = getenv("DSQ_FAILWRITE");
    char path[4096];
    const char *where = getenv("DSQ_FAILWRITE_PATH");
    if (trigger == NULL || access(trigger, F_OK) != 0 || fd_path(fd, path, sizeof path) != 0 ||
        strstr(path, where ? where : "/wal/") == NULL)
        return 0;
    char what[16] = "";
    int tfd = open(trigger, O_RDONLY | O_CLOEXEC);
    if (tfd >= 0) {
        ssize_t n = read(tfd, what, sizeof what - 1);
        what[n > 0 ? n : 0] = '\0';
        close(tfd);
    }
    errno = strncmp(what, "ENOSPC", 6) == 0 ? ENOSPC : EIO;
    return 1;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (write_dropped(fd, buf, n))
        return (ssize_t)n;
    if (write_fails(fd))
        return -1;
    log_write(fd, off, n);
    return ((pwrite_fn)dlsym(RTLD_NEXT, "pwrite"))(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    if (write_dropped(fd, buf, n))
        return (ssize_t)n;
    if (write_fails(fd))
        return -1;
    log_write(fd, off, n);
    return ((pwrite_fn)dlsym(RTLD_NEXT, "pwrite64"))(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (write_fails(fd))
        return -1;
    log_write(fd, -1, n);
    return ((write_fn)dlsym(RTLD_NEXT, "write"))(fd, buf, n);
}

static size_t iov_bytes(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (write_fails(fd))
        return -1;
    log_write(fd, off, iov_bytes(iov, cnt));
    return ((pwritev_fn)dlsym(RTLD_NEXT, "pwritev"))(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (write_fails(fd))
        return -1;
    log_write(fd, off, iov_bytes(iov, cnt));
    return ((pwritev_fn)dlsym(RTLD_NEXT, "pwritev64"))(fd, iov, cnt, off);
}

typedef int (*fallocate_fn)(int, int, off_t, off_t);

int fallocate(int fd, int mode, off_t off, off_t len)
{
    const char *trigger = getenv("DSQ_FAILPUNCH");
    if ((mode & FALLOC_FL_PUNCH_HOLE) && trigger != NULL && access(trigger, F_OK) == 0) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return ((fallocate_fn)dlsym(RTLD_NEXT, "fallocate"))(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len) { return fallocate(fd, mode, off, len); }

typedef int (*sfr_fn)(int, off_t, off_t, unsigned);

int sync_file_range(int fd, off_t off, off_t n, unsigned flags)
{
    const char *trigger = getenv("DSQ_FAILSFR");
    if (trigger != NULL && access(trigger, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    return ((sfr_fn)dlsym(RTLD_NEXT, "sync_file_range"))(fd, off, n, flags);
}
