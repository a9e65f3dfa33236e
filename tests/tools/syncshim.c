/* syncshim — an LD_PRELOAD library for the crash and fault tests.
 *
 *   DSQ_SYNCLOG=FILE     after each successful fsync/fdatasync of a regular
 *                        file, append "SIZE PATH\n" to FILE: what that file
 *                        held when the disk said it was durable (after a
 *                        syncfs, a line for every regular file the process
 *                        has open on that file system). A test that
 *                        kills dosqld can then cut every log segment back to
 *                        its last synced size: a power cut that loses
 *                        everything written after the last fsync.
 *   DSQ_FAILSYNC=FILE    while FILE exists, fsync/fdatasync of files under a
 *                        "/wal/" directory, and syncfs of any file system,
 *                        fail with EIO (and sync nothing).
 *   DSQ_FAILWRITE=FILE   while FILE exists, write/pwrite to files whose path
 *                        holds DSQ_FAILWRITE_PATH (default "/wal/") fail
 *                        (and write nothing), with errno EIO, or ENOSPC
 *                        when FILE holds "ENOSPC".
 *
 * Test tooling only: never linked into dosqld. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*sync_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);

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

static void log_synced(int fd);

static int around(int fd, const char *name)
{
    sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
    char path[4096];
    const char *fail = getenv("DSQ_FAILSYNC");
    if (fail && access(fail, F_OK) == 0 && fd_path(fd, path, sizeof path) == 0 &&
        strstr(path, "/wal/") != NULL) {
        errno = EIO;
        return -1;
    }
    int rc = real(fd);
    if (rc == 0)
        log_synced(fd);
    return rc;
}

/* Append "SIZE PATH" for fd to the sync log. */
static void log_synced(int fd)
{
    const char *logf = getenv("DSQ_SYNCLOG");
    char path[4096];
    struct stat st;
    if (logf == NULL || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || fd_path(fd, path, sizeof path) != 0)
        return;
    char line[4200];
    int n = snprintf(line, sizeof line, "%lld %s\n", (long long)st.st_size, path);
    int lfd = open(logf, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (lfd >= 0) {
        if (write(lfd, line, (size_t)n) != n) {
            /* the test sees the short log */
        }
        close(lfd);
    }
}

int syncfs(int fd)
{
    const char *fail = getenv("DSQ_FAILSYNC");
    if (fail && access(fail, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    int rc = ((sync_fn)dlsym(RTLD_NEXT, "syncfs"))(fd);
    struct stat fs;
    if (rc != 0 || fstat(fd, &fs) != 0)
        return rc;
    /* Everything on that file system is durable now: every open file. */
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        int other = atoi(de->d_name);
        struct stat st;
        if (de->d_name[0] != '.' && fstat(other, &st) == 0 && st.st_dev == fs.st_dev)
            log_synced(other);
    }
    if (d)
        closedir(d);
    return rc;
}

int fsync(int fd) { return around(fd, "fsync"); }
int fdatasync(int fd) { return around(fd, "fdatasync"); }

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
    if (write_fails(fd))
        return -1;
    return ((pwrite_fn)dlsym(RTLD_NEXT, "pwrite"))(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    if (write_fails(fd))
        return -1;
    return ((pwrite_fn)dlsym(RTLD_NEXT, "pwrite64"))(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (write_fails(fd))
        return -1;
    return ((write_fn)dlsym(RTLD_NEXT, "write"))(fd, buf, n);
}
