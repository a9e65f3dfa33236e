/* etcd — a real etcd server for unit tests.
 *
 * test_etcd_start runs `etcd` (etcd-server's /usr/bin/etcd, found on
 * PATH; the tests require it: ./configure lists it with the tests'
 * packages) as a one-member cluster on two free loopback ports (client
 * and peer), its data in a directory of its own, and waits, bounded, for
 * its /health to say true. test_etcd_stop stops it by its pid (SIGTERM,
 * then SIGKILL after a bound) and removes the directory. The child has
 * PR_SET_PDEATHSIG, so a test process that dies does not leave it
 * running.
 *
 * The member runs with a 10 ms heartbeat and a 100 ms election timeout:
 * it elects itself in ~100 ms instead of ~1 s, and its shortest lease is
 * 1 s instead of 2 s (leases are at least 1.5 election timeouts).
 *
 *     static test_etcd etcd;
 *     test_etcd_start(&etcd, NULL);        // etcd.url: "http://127.0.0.1:PORT"
 *     ...
 *     test_etcd_stop(&etcd);               // (also when it is stopped already)
 *
 * test_etcd_kill stops it and keeps its directory; test_etcd_restart then
 * starts it again on the same ports with the same data (its keys, leases
 * and revisions), as a member that was down and came back.
 *
 * For TLS, test_etcd_mkdir first (certificates go in etcd.dir), set
 * etcd.tls and the files the helper's own requests use (ca, cert, key),
 * and pass etcd's TLS flags as extra arguments.
 *
 * Header-only: each test binary is one file. */
#ifndef DSQ_TEST_ETCD_H
#define DSQ_TEST_ETCD_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "tests/unit/support/wait.h"

#define TEST_ETCD_START_MS 5000  /* from exec to a healthy member */
#define TEST_ETCD_STOP_MS 3000   /* from SIGTERM to SIGKILL */
#define TEST_ETCD_TRIES 3        /* starts, when a port was taken meanwhile */

typedef struct test_etcd {
    pid_t pid;                   /* 0: not running */
    char dir[64];                /* its own: data/, etcd.log, a test's files; "" before */
    char url[64];                /* the client URL */
    int port, peer_port;
    bool tls;                    /* https on the client URL */
    char ca[128], cert[128], key[128]; /* tls: the helper's own requests' files ("" none) */
} test_etcd;

/* A port nobody listens on now (the kernel's pick for a bound socket). */
static inline int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* The directory, when the test needs it before the start. */
static inline void test_etcd_mkdir(test_etcd *t)
{
    if (t->dir[0] != '\0')
        return;
    snprintf(t->dir, sizeof t->dir, "/tmp/dsq-etcd-XXXXXX");
    cr_assert(mkdtemp(t->dir) != NULL, "mkdtemp: %s", strerror(errno));
}

static inline size_t test_etcd_sink(char *p, size_t size, size_t n, void *ud)
{
    return dsq_buf_append(ud, p, size * n) == 0 ? size * n : 0;
}

/* A raw request to the member (GET when body is NULL, else POST), with
 * the token in Authorization when not NULL: the answer's body (malloc'd,
 * "" when none; the caller frees it), its HTTP status into *status (may
 * be NULL; 0 when none came). For what the client under test does not
 * do: /health, compaction, turning auth on. */
static inline char *test_etcd_http(const test_etcd *t, const char *path, const char *body, const char *token,
                                   long *status)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    cr_assert(h != NULL);
    char url[160], auth[512];
    snprintf(url, sizeof url, "%s%s", t->url, path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_reserve(&b, 0);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, test_etcd_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (body != NULL)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (t->ca[0] != '\0')
        curl_easy_setopt(h, CURLOPT_CAINFO, t->ca);
    if (t->cert[0] != '\0') {
        curl_easy_setopt(h, CURLOPT_SSLCERT, t->cert);
        curl_easy_setopt(h, CURLOPT_SSLKEY, t->key);
    }
    long st = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    if (status != NULL)
        *status = st;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return b.data;
}

/* POST body to path, which must answer 200; its body is dropped. */
static inline void test_etcd_post_ok(const test_etcd *t, const char *path, const char *body, const char *token)
{
    long st;
    char *r = test_etcd_http(t, path, body, token, &st);
    cr_assert(st == 200, "POST %s %s: HTTP %ld: %s", path, body, st, r);
    free(r);
}

/* The last lines of its log, for a failure's message (a static buffer). */
static inline const char *test_etcd_log_tail(const test_etcd *t)
{
    static char tail[1024];
    char path[96];
    snprintf(path, sizeof path, "%s/etcd.log", t->dir);
    tail[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return "(no log)";
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    fseek(f, end > (long)sizeof tail - 1 ? end - (long)sizeof tail + 1 : 0, SEEK_SET);
    size_t n = fread(tail, 1, sizeof tail - 1, f);
    tail[n] = '\0';
    fclose(f);
    return tail;
}

static inline void test_etcd_stop(test_etcd *t);

/* Fail the test with what went wrong and the end of etcd's log, after
 * stopping it and removing its directory (a fixture's .fini does not
 * run when its .init fails). */
#define TEST_ETCD_FAIL(t, fmt, ...)                                                                    \
    do {                                                                                               \
        char tail_[1024];                                                                              \
        snprintf(tail_, sizeof tail_, "%s", test_etcd_log_tail(t));                                     \
        test_etcd_stop(t);                                                                             \
        cr_assert_fail(fmt "; its log ends:\n%s", ##__VA_ARGS__, tail_);                                \
    } while (0)

/* Fork and exec etcd on t's ports, its output into DIR/etcd.log. */
static inline void test_etcd_spawn(test_etcd *t, const char *const *extra)
{
    char data[96], log[96], client[64], peer[64], cluster[96];
    snprintf(data, sizeof data, "%s/data", t->dir);
    snprintf(log, sizeof log, "%s/etcd.log", t->dir);
    snprintf(t->url, sizeof t->url, "%s://127.0.0.1:%d", t->tls ? "https" : "http", t->port);
    snprintf(client, sizeof client, "%s", t->url);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%d", t->peer_port);
    snprintf(cluster, sizeof cluster, "default=%s", peer);
    const char *argv[48] = {"etcd", "--name", "default", "--data-dir", data,
                            "--listen-client-urls", client, "--advertise-client-urls", client,
                            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                            "--initial-cluster", cluster, "--heartbeat-interval", "10",
                            "--election-timeout", "100"};
    size_t n = 19;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        cr_assert(n < 47);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644); /* (a restart's after the first run's) */
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp("etcd", (char *const *)argv);
        dprintf(2, "exec etcd: %s (the tests need etcd-server: ./configure --missing tests)\n", strerror(errno));
        _exit(127);
    }
    t->pid = pid;
}

/* Wait until /health says true: true; false when etcd exited first (its
 * status into *st), failing the test when the bound passes. */
static inline bool test_etcd_wait_healthy(test_etcd *t, int *st)
{
    uint64_t end = wait_now_ms() + TEST_ETCD_START_MS;
    for (;;) {
        if (waitpid(t->pid, st, WNOHANG) == t->pid) {
            t->pid = 0;
            return false;
        }
        long code;
        char *r = test_etcd_http(t, "/health", NULL, NULL, &code);
        bool ok = code == 200 && r != NULL && strstr(r, "\"health\":\"true\"") != NULL;
        free(r);
        if (ok)
            return true;
        if (wait_now_ms() >= end)
            TEST_ETCD_FAIL(t, "etcd at %s was not healthy within %d ms", t->url, TEST_ETCD_START_MS);
        wait_sleep_ms(10);
    }
}

/* Start etcd with the extra arguments (NULL-terminated; may be NULL). */
static inline void test_etcd_start(test_etcd *t, const char *const *extra)
{
    test_etcd_mkdir(t);
    for (int tries = 1;; tries++) {
        t->port = test_free_port();
        t->peer_port = test_free_port();
        test_etcd_spawn(t, extra);
        int st = 0;
        if (test_etcd_wait_healthy(t, &st))
            return;
        if (tries >= TEST_ETCD_TRIES || strstr(test_etcd_log_tail(t), "address already in use") == NULL)
            TEST_ETCD_FAIL(t, "etcd exited (status %d) before it was healthy", st);
    }
}

static inline int test_etcd_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Stop it if it runs: SIGTERM, then SIGKILL after TEST_ETCD_STOP_MS. The
 * directory stays (test_etcd_stop removes it). */
static inline void test_etcd_kill(test_etcd *t)
{
    if (t->pid <= 0)
        return;
    kill(t->pid, SIGTERM);
    uint64_t end = wait_now_ms() + TEST_ETCD_STOP_MS;
    while (waitpid(t->pid, NULL, WNOHANG) != t->pid) {
        if (wait_now_ms() >= end) {
            kill(t->pid, SIGKILL);
            waitpid(t->pid, NULL, 0);
            break;
        }
        wait_sleep_ms(5);
    }
    t->pid = 0;
}

/* Start it again after test_etcd_kill: the same ports, directory and
 * arguments (extra, as test_etcd_start's), its data as it was. Fails the
 * test when it is not healthy within TEST_ETCD_START_MS (a port taken
 * meanwhile, say). */
static inline void test_etcd_restart(test_etcd *t, const char *const *extra)
{
    cr_assert(t->pid == 0 && t->dir[0] != '\0', "test_etcd_restart: after test_etcd_kill only");
    test_etcd_spawn(t, extra);
    int st = 0;
    if (!test_etcd_wait_healthy(t, &st))
        TEST_ETCD_FAIL(t, "etcd exited (status %d) when started again on ports %d and %d", st, t->port,
                       t->peer_port);
}

/* Stop it and remove its directory. */
static inline void test_etcd_stop(test_etcd *t)
{
    test_etcd_kill(t);
    if (t->dir[0] != '\0')
        nftw(t->dir, test_etcd_rm, 16, FTW_DEPTH | FTW_PHYS);
    t->dir[0] = '\0';
}

#endif
