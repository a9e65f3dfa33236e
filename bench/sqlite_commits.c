/* sqlite_commits — bench/commits' peers that are not servers:
 *
 *   sqlite_commits -c CLIENTS -D DBS -t SECONDS DIR
 *       raw SQLite: CLIENTS threads, each with its own connection to
 *       DIR/d<i mod DBS>.db (WAL, synchronous=FULL, busy_timeout 10 s),
 *       committing single-row INSERTs in autocommit for SECONDS. Prints
 *       "commits=N seconds=S rate=R errors=E".
 *   sqlite_commits -F -t SECONDS DIR
 *       the disk's raw fsync rate: append 1 KiB to DIR/fsync.dat and
 *       fdatasync, again and again. Prints "fsyncs=N seconds=S rate=R".
 *       With -Z the file is first filled with 16 MiB of zeros and synced,
 *       and the 1 KiB writes go over them: no size change to sync.
 *   sqlite_commits -G FILES -t SECONDS DIR
 *       a group sync over many files: a 2 KiB append to each of FILES files,
 *       then one syncfs(), again and again (what dosqld's group_sync does
 *       with FILES databases waiting). Prints "rounds=N seconds=S
 *       rate=R commits_per_s=R*FILES".
 *
 * Every loop is bounded by the time given (and a hard cap on iterations). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int clients = 1, dbs = 1;
static double seconds = 5;
static atomic_ullong commits, errors;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *client(void *arg)
{
    int i = (int)(intptr_t)arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/d%d.db", dir, i % dbs);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "sqlite_commits: %s: %s\n", path, sqlite3_errmsg(db));
        atomic_fetch_add(&errors, 1);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", NULL, NULL, NULL);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite_commits: %s\n", sqlite3_errmsg(db));
        atomic_fetch_add(&errors, 1);
        sqlite3_close(db);
        return NULL;
    }
    double end = now() + seconds;
    for (unsigned long n = 0; n < 100000000ul && now() < end; n++) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(n * 7 + (unsigned long)i));
        if (sqlite3_step(st) == SQLITE_DONE)
            atomic_fetch_add(&commits, 1);
        else
            atomic_fetch_add(&errors, 1);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

static int fsync_rate(int zeroed)
{
    char path[4096], block[1024];
    snprintf(path, sizeof path, "%s/fsync.dat", dir);
    memset(block, 'x', sizeof block);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    if (zeroed) {
        static char zeros[1 << 16];
        for (int i = 0; i < 256; i++)
            if (write(fd, zeros, sizeof zeros) != (ssize_t)sizeof zeros) {
                perror(path);
                close(fd);
                return 1;
            }
        if (fsync(fd) != 0) {
            perror(path);
            close(fd);
            return 1;
        }
    }
    unsigned long n = 0;
    double t0 = now(), end = t0 + seconds;
    for (; n < 16000ul * (zeroed ? 1 : 1000) && now() < end; n++) {
        if (pwrite(fd, block, sizeof block, (off_t)(n * sizeof block)) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0) {
            perror(path);
            close(fd);
            return 1;
        }
    }
    double took = now() - t0;
    close(fd);
    unlink(path);
    printf("fsyncs=%lu seconds=%.2f rate=%.1f\n", n, took, (double)n / took);
    return 0;
}

static int group_rate(int files)
{
    int *fds = calloc((size_t)files, sizeof *fds);
    char block[2048];
    memset(block, 'x', sizeof block);
    for (int i = 0; i < files; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/g%d.dat", dir, i);
        if ((fds[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600)) < 0) {
            perror(path);
            return 1;
        }
    }
    if (syncfs(fds[0]) != 0) {
        perror("syncfs");
        return 1;
    }
    unsigned long n = 0;
    double t0 = now(), end = t0 + seconds;
    for (; n < 10000000ul && now() < end; n++) {
        for (int i = 0; i < files; i++)
            if (write(fds[i], block, sizeof block) != (ssize_t)sizeof block) {
                perror("write");
                return 1;
            }
        if (syncfs(fds[0]) != 0) {
            perror("syncfs");
            return 1;
        }
    }
    double took = now() - t0;
    for (int i = 0; i < files; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/g%d.dat", dir, i);
        close(fds[i]);
        unlink(path);
    }
    free(fds);
    printf("rounds=%lu seconds=%.2f rate=%.1f commits_per_s=%.0f\n", n, took, (double)n / took,
           (double)n * files / took);
    return 0;
}

int main(int argc, char **argv)
{
    int ch;
    int fsync_mode = 0, zeroed = 0, group = 0;
    while ((ch = getopt(argc, argv, "c:D:t:FZG:")) != -1) {
        switch (ch) {
        case 'Z': zeroed = 1; break;
        case 'G': group = atoi(optarg); break;
        case 'c': clients = atoi(optarg); break;
        case 'D': dbs = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'F': fsync_mode = 1; break;
        default:
            fprintf(stderr, "usage: sqlite_commits [-F [-Z] | -G FILES] [-c CLIENTS] [-D DBS] [-t SECONDS] DIR\n");
            return 2;
        }
    }
    if (optind + 1 != argc || clients < 1 || clients > 1024 || dbs < 1 || dbs > 1024 || group < 0 || group > 1024 ||
        !(seconds > 0 && seconds < 86400)) {
        fprintf(stderr, "usage: sqlite_commits [-F] [-c CLIENTS 1..1024] [-D DBS 1..1024] [-t SECONDS] DIR\n");
        return 2;
    }
    dir = argv[optind];
    if (fsync_mode)
        return fsync_rate(zeroed);
    if (group > 0)
        return group_rate(group);
    for (int d = 0; d < dbs; d++) { /* the tables, before the clock starts */
        char path[4096];
        snprintf(path, sizeof path, "%s/d%d.db", dir, d);
        sqlite3 *db;
        if (sqlite3_open(path, &db) != SQLITE_OK ||
            sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v INTEGER)",
                         NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "sqlite_commits: %s: %s\n", path, sqlite3_errmsg(db));
            return 1;
        }
        sqlite3_close(db);
    }
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    double t0 = now();
    for (int i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, client, (void *)(intptr_t)i);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    double took = now() - t0;
    free(th);
    unsigned long long n = atomic_load(&commits);
    printf("commits=%llu seconds=%.2f rate=%.1f errors=%llu\n", n, took, (double)n / took,
           atomic_load(&errors));
    return 0;
}
