/* Unit tests: cluster/peer (the links between nodes), with one to three
 * nodes' link layers on one loop over loopback; with TLS, on certificates
 * the openssl command makes at test time. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/peer.h"
#include "cluster/wire.h"
#include "tests/unit/support/wait.h"
#include "tests/unit/support/sh.h"

#define SECRET "0123456789abcdef0123456789abcdef-test"

/* A port nobody listens on now (the kernel's pick for a bound socket). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct node_t {
    dsq_peers *ps;
    int up[DSQ_NODES_MAX]; /* link ups seen per node (index), minus downs */
    int downs;
    int downs_known;    /* downs of a node that dsq_peer_known still called known */
    size_t got;         /* messages received */
    size_t got_bytes;
    uint8_t last_type;
    size_t last_from;
    uint8_t *last;      /* the last message's payload (owned) */
    size_t last_len;
    uint64_t sum;       /* fnv() of every payload, in order */
    int writable;
} node_t;

static dsq_node nodes[3];
static uv_loop_t loop;
/* The links' handles do not keep a loop running (the server's ends when
 * its clients are gone): this one does, for the tests' NOWAIT turns. */
static uv_timer_t keep;

static void noop(uv_timer_t *t) { (void)t; }

/* FNV-1a over bytes, carried from one message to the next: equal sums
 * mean the same bytes arrived in the same order. */
static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
#define FNV0 0xcbf29ce484222325ull

static void on_message(void *ud, size_t from, uint8_t type, const uint8_t *p, size_t n)
{
    node_t *t = ud;
    t->got++;
    t->got_bytes += n;
    t->sum = fnv(t->sum ? t->sum : FNV0, p, n);
    t->last_type = type;
    t->last_from = from;
    free(t->last);
    t->last = malloc(n ? n : 1);
    memcpy(t->last, p, n);
    t->last_len = n;
}

static void on_link(void *ud, size_t node, bool up)
{
    node_t *t = ud;
    t->up[node] += up ? 1 : -1;
    if (!up) {
        t->downs++;
        t->downs_known += dsq_peer_known(t->ps, node);
    }
}

static void on_writable(void *ud, size_t node) { ((node_t *)ud)->writable++; }

static void make_nodes(size_t n)
{
    static const char *const ids[] = {"n1", "n2", "n3"};
    for (size_t i = 0; i < n; i++) {
        char spec[64], err[256];
        snprintf(spec, sizeof spec, "%s@127.0.0.1:%d", ids[i], free_port());
        cr_assert(dsq_node_parse(spec, &nodes[i], err, sizeof err) == 0, "%s", err);
    }
    uv_loop_init(&loop);
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, noop, 3600 * 1000, 0);
}

/* TLS files for start_tls: a certificate chain, its key, the CA file. */
typedef struct tls_files {
    const char *cert, *key, *ca;
} tls_files;

static dsq_peers_cfg cfg_of(node_t *t, size_t self, size_t n, const char *secret)
{
    return (dsq_peers_cfg){
        .loop = &loop,
        .nodes = nodes,
        .nnodes = n,
        .self = self,
        .secret = secret,
        .heartbeat_ms = 50,
        .dead_after_ms = 2000,
        .send_limit = 256 * 1024,
        .max_message = 64u << 20,
        .on_message = on_message,
        .on_link = on_link,
        .on_writable = on_writable,
        .ud = t,
    };
}

static void start(node_t *t, size_t self, size_t n, const char *secret)
{
    dsq_peers_cfg cfg = cfg_of(t, self, n, secret);
    char err[256];
    cr_assert(dsq_peers_start(&cfg, &t->ps, err, sizeof err) == 0, "%s", err);
}

static void start_tls(node_t *t, size_t self, size_t n, tls_files f)
{
    dsq_peers_cfg cfg = cfg_of(t, self, n, SECRET);
    cfg.tls_cert = f.cert;
    cfg.tls_key = f.key;
    cfg.tls_ca = f.ca;
    char err[512];
    cr_assert(dsq_peers_start(&cfg, &t->ps, err, sizeof err) == 0, "%s", err);
}

/* Start node nodes[i] knowing only itself (its index there is 0). */
static void start_alone(node_t *t, size_t i)
{
    dsq_peers_cfg cfg = cfg_of(t, 0, 1, SECRET);
    cfg.nodes = &nodes[i];
    char err[256];
    cr_assert(dsq_peers_start(&cfg, &t->ps, err, sizeof err) == 0, "%s", err);
}

static void start_alone_tls(node_t *t, size_t i, tls_files f)
{
    dsq_peers_cfg cfg = cfg_of(t, 0, 1, SECRET);
    cfg.nodes = &nodes[i];
    cfg.tls_cert = f.cert;
    cfg.tls_key = f.key;
    cfg.tls_ca = f.ca;
    char err[512];
    cr_assert(dsq_peers_start(&cfg, &t->ps, err, sizeof err) == 0, "%s", err);
}

/* Add node n to t's links: its index. */
static size_t add(node_t *t, const dsq_node *n)
{
    size_t index = SIZE_MAX;
    char err[256] = "";
    cr_assert(dsq_peers_add(t->ps, n, &index, err, sizeof err) == 0, "adding %s: %s", n->id, err);
    cr_assert(index < dsq_peers_count(t->ps));
    cr_assert(dsq_peer_known(t->ps, index));
    cr_assert_str_eq(dsq_peers_node(t->ps, index)->id, n->id);
    cr_assert_eq(dsq_peers_find(t->ps, n->id), index);
    return index;
}

static uint64_t auth_failures(const node_t *t)
{
    dsq_peer_stats s;
    dsq_peers_stats(t->ps, &s);
    return s.auth_failures;
}

static void stopped(void *ud) { *(bool *)ud = true; }

static void stop(node_t *t)
{
    bool done = false;
    dsq_peers_stop(t->ps, stopped, &done);
    uint64_t until = wait_now_ms() + WAIT_MS;
    while (!done && wait_now_ms() < until)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(done, "the link layer did not close its handles");
    t->ps = NULL;
    free(t->last);
    t->last = NULL;
}

/* Run the loop until cond holds (bounded). */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uint64_t until_ = wait_now_ms() + WAIT_MS;                                                 \
        while (!(cond) && wait_now_ms() < until_)                                                  \
            uv_run(&loop, UV_RUN_NOWAIT), wait_sleep_ms(1);                                        \
        cr_assert((cond), "timed out waiting for " #cond);                                         \
    } while (0)

/* Run the loop for `ms`: the test checks that something does not happen
 * meanwhile (the timers of the code under test run). */
#define RUN_FOR(ms)                                                                                \
    do {                                                                                           \
        uint64_t until_ = wait_now_ms() + (ms);                                                    \
        while (wait_now_ms() < until_)                                                             \
            uv_run(&loop, UV_RUN_NOWAIT), wait_sleep_ms(1);                                        \
    } while (0)

static void finish(void)
{
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
}

Test(peer, proof_depends_on_everything)
{
    uint8_t nd[32] = {1}, na[32] = {2}, a[32], b[32];
    dsq_peer_proof(SECRET, "x", "n1", "n2", nd, na, a);
    dsq_peer_proof(SECRET, "x", "n1", "n2", nd, na, b);
    cr_assert(memcmp(a, b, 32) == 0);
    dsq_peer_proof(SECRET, "y", "n1", "n2", nd, na, b);
    cr_assert(memcmp(a, b, 32) != 0);
    dsq_peer_proof(SECRET, "x", "n2", "n1", nd, na, b);
    cr_assert(memcmp(a, b, 32) != 0);
    dsq_peer_proof(SECRET, "x", "n1", "n2", na, nd, b);
    cr_assert(memcmp(a, b, 32) != 0);
    dsq_peer_proof(SECRET "!", "x", "n1", "n2", nd, na, b);
    cr_assert(memcmp(a, b, 32) != 0);
    /* The length prefixes keep "n1"+"n23" apart from "n12"+"n3". */
    dsq_peer_proof(SECRET, "x", "n1", "n23", nd, na, a);
    dsq_peer_proof(SECRET, "x", "n12", "n3", nd, na, b);
    cr_assert(memcmp(a, b, 32) != 0);
}

Test(peer, links_come_up_and_carry_messages_both_ways)
{
    make_nodes(3);
    node_t t[3] = {0};
    for (size_t i = 0; i < 3; i++)
        start(&t[i], i, 3, SECRET);
    RUN_UNTIL(t[0].up[1] == 1 && t[0].up[2] == 1 && t[1].up[0] == 1 && t[1].up[2] == 1 && t[2].up[0] == 1 &&
              t[2].up[1] == 1);
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "ab", 2, "cd", 2) == 0);
    cr_assert(dsq_peer_send(t[2].ps, 0, 21, "xyz", 3, NULL, 0) == 0);
    RUN_UNTIL(t[1].got == 1 && t[0].got == 1);
    cr_assert_eq(t[1].last_type, 20);
    cr_assert_eq(t[1].last_from, 0);
    cr_assert_eq(t[1].last_len, 4);
    cr_assert(memcmp(t[1].last, "abcd", 4) == 0);
    cr_assert_eq(t[0].last_from, 2);
    cr_assert(memcmp(t[0].last, "xyz", 3) == 0);
    /* The link's own types are not the caller's to send. */
    cr_assert(dsq_peer_send(t[0].ps, 1, 3, "x", 1, NULL, 0) != 0);
    /* Nor is a message to itself. */
    cr_assert(dsq_peer_send(t[0].ps, 0, 20, "x", 1, NULL, 0) != 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
}

/* A message far larger than one read arrives whole and in order with the
 * small ones around it; the queue reports it until written. */
Test(peer, large_messages_arrive_whole_and_in_order)
{
    make_nodes(2);
    node_t t[2] = {0};
    start(&t[0], 0, 2, SECRET);
    start(&t[1], 1, 2, SECRET);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[0] == 1);
    size_t big = 8u << 20;
    uint8_t *p = malloc(big);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    cr_assert(dsq_peer_send(t[0].ps, 1, 30, "a", 1, NULL, 0) == 0);
    cr_assert(dsq_peer_send(t[0].ps, 1, 31, p, big, NULL, 0) == 0);
    cr_assert(dsq_peer_queued(t[0].ps, 1) > 0);
    cr_assert(dsq_peer_send(t[0].ps, 1, 32, "z", 1, NULL, 0) == 0);
    RUN_UNTIL(t[1].got == 3);
    cr_assert_eq(t[1].last_type, 32);
    cr_assert_eq(t[1].got_bytes, big + 2);
    /* Over send_limit, then drained: the sender is told it may go on. */
    RUN_UNTIL(t[0].writable >= 1 && dsq_peer_queued(t[0].ps, 1) == 0);
    free(p);
    stop(&t[0]);
    stop(&t[1]);
    finish();
}

/* A node with another secret never gets a link up, either way round, and
 * nothing it sends arrives. */
Test(peer, a_wrong_secret_gets_no_link)
{
    make_nodes(3);
    node_t t[3] = {0};
    start(&t[0], 0, 3, SECRET);
    start(&t[1], 1, 3, "another secret, also 32 characters or more");
    start(&t[2], 2, 3, SECRET);
    /* n1 dials n2 (and finds n2's proof wrong) and n3 (accepted); n2
     * dials n3 (and finds n3's proof wrong); both keep trying. */
    RUN_UNTIL(t[0].up[2] == 1 && t[2].up[0] == 1);
    dsq_peer_stats s0, s1;
    RUN_UNTIL((dsq_peers_stats(t[0].ps, &s0), s0.auth_failures >= 2) &&
              (dsq_peers_stats(t[1].ps, &s1), s1.auth_failures >= 2));
    cr_assert_eq(t[1].up[0] + t[1].up[2], 0);
    cr_assert(!dsq_peer_up(t[0].ps, 1) && !dsq_peer_up(t[2].ps, 1) && !dsq_peer_up(t[1].ps, 0));
    cr_assert(dsq_peer_send(t[1].ps, 2, 20, "x", 1, NULL, 0) != 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
}

/* A node that goes away is seen going; when it is back the link comes
 * up again by itself (the dialer redials). */
Test(peer, a_link_comes_back_after_its_node_restarts)
{
    make_nodes(2);
    node_t t[2] = {0};
    start(&t[0], 0, 2, SECRET);
    start(&t[1], 1, 2, SECRET);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[0] == 1);
    stop(&t[1]); /* the acceptor goes */
    RUN_UNTIL(t[0].downs == 1);
    cr_assert(!dsq_peer_up(t[0].ps, 1));
    memset(&t[1], 0, sizeof t[1]);
    start(&t[1], 1, 2, SECRET);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[0] == 1);
    cr_assert(dsq_peer_send(t[0].ps, 1, 40, "back", 4, NULL, 0) == 0);
    RUN_UNTIL(t[1].got == 1);
    stop(&t[0]); /* now the dialer goes: the acceptor sees it */
    RUN_UNTIL(t[1].downs == 1);
    stop(&t[1]);
    finish();
}

/* Bytes that are not a dosqld node's hello close the connection; the
 * listener goes on. */
Test(peer, garbage_is_refused)
{
    make_nodes(2);
    node_t t[2] = {0};
    start(&t[1], 1, 2, SECRET);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(connect(fd, (struct sockaddr *)&nodes[1].addr, sizeof(struct sockaddr_in)) == 0);
    const char junk[] = "\x00\x00\x00\x10GET / HTTP/1.1\r\n";
    cr_assert(write(fd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1));
    dsq_peer_stats s;
    RUN_UNTIL((dsq_peers_stats(t[1].ps, &s), s.auth_failures == 1));
    /* A length over the handshake's limit is refused before any read of it. */
    int fd2 = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(connect(fd2, (struct sockaddr *)&nodes[1].addr, sizeof(struct sockaddr_in)) == 0);
    cr_assert(write(fd2, "\x7f\xff\xff\xff", 4) == 4);
    RUN_UNTIL((dsq_peers_stats(t[1].ps, &s), s.auth_failures == 2));
    close(fd);
    close(fd2);
    start(&t[0], 0, 2, SECRET); /* a real node still gets in */
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[0] == 1);
    stop(&t[0]);
    stop(&t[1]);
    finish();
}

/* ---- TLS (cluster.tls) ------------------------------------------------------------------------- */

/* Certificates are made with the openssl command, as an operator would,
 * in a directory of the test's own. */
static char tls_dir[64];
static char paths[16][160];
static size_t npaths;

/* TLS_DIR/name (kept for the test's life). */
static const char *at(const char *name)
{
    cr_assert(npaths < 16);
    snprintf(paths[npaths], sizeof paths[npaths], "%s/%s", tls_dir, name);
    return paths[npaths++];
}

static void tls_dir_make(void)
{
    snprintf(tls_dir, sizeof tls_dir, "/tmp/dsq-peertls-XXXXXX");
    cr_assert(mkdtemp(tls_dir) != NULL);
    npaths = 0;
}

static void tls_dir_remove(void) { sh("rm -rf '%s'", tls_dir); }

#define QUIET " >/dev/null 2>&1"
#define NEWKEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* A self-signed CA: NAME.pem, NAME.key. */
static void make_ca(const char *name)
{
    sh("cd '%s' && openssl req -x509 " NEWKEY " -keyout %s.key -out %s.pem -days 1 -subj /CN=%s" QUIET, tls_dir,
       name, name, name);
}

/* A node's certificate FILE.pem (and FILE.key) signed by CA `ca`, with
 * `ext` its extensions (the names it gives, its key usage). */
static void make_cert(const char *file, const char *cn, const char *ca, const char *ext)
{
    sh("cd '%s' && printf '%%s\\n' '%s' | tr ';' '\\n' > %s.ext && "
       "openssl req -new " NEWKEY " -keyout %s.key -out %s.csr -subj /CN=%s" QUIET " && "
       "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial 0x%08x -days 1 -out %s.pem "
       "-extfile %s.ext" QUIET,
       tls_dir, ext, file, file, file, cn, file, ca, ca, (unsigned)rand(), file, file);
}

/* A node certificate as the docs ask: its id as a DNS name, usable as a
 * TLS server's and a client's. */
static void make_node_cert(const char *file, const char *id, const char *ca)
{
    char ext[160];
    snprintf(ext, sizeof ext, "subjectAltName=DNS:%s;extendedKeyUsage=serverAuth,clientAuth", id);
    make_cert(file, id, ca, ext);
}

static tls_files files_of(const char *file, const char *ca)
{
    char b[64];
    tls_files f;
    snprintf(b, sizeof b, "%s.pem", file);
    f.cert = at(b);
    snprintf(b, sizeof b, "%s.key", file);
    f.key = at(b);
    snprintf(b, sizeof b, "%s.pem", ca);
    f.ca = at(b);
    return f;
}

#define ALL_UP3(t)                                                                                            \
    ((t)[0].up[1] == 1 && (t)[0].up[2] == 1 && (t)[1].up[0] == 1 && (t)[1].up[2] == 1 && (t)[2].up[0] == 1 && \
     (t)[2].up[1] == 1)

/* With TLS on every node, the links come up and carry small messages
 * both ways and large ones whole, in order, with backpressure as over
 * plain TCP; the bytes on the wire are not the messages'. */
Test(peer, tls_links_come_up_and_carry_large_messages)
{
    tls_dir_make();
    make_ca("ca");
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n2", "n2", "ca");
    make_node_cert("n3", "n3", "ca");
    make_nodes(3);
    node_t t[3] = {0};
    start_tls(&t[0], 0, 3, files_of("n1", "ca"));
    start_tls(&t[1], 1, 3, files_of("n2", "ca"));
    start_tls(&t[2], 2, 3, files_of("n3", "ca"));
    RUN_UNTIL(ALL_UP3(t));
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "ab", 2, "cd", 2) == 0);
    cr_assert(dsq_peer_send(t[2].ps, 0, 21, "xyz", 3, NULL, 0) == 0);
    RUN_UNTIL(t[1].got == 1 && t[0].got == 1);
    cr_assert(t[1].last_type == 20 && t[1].last_from == 0 && t[1].last_len == 4);
    cr_assert(memcmp(t[1].last, "abcd", 4) == 0);
    cr_assert(t[0].last_from == 2 && memcmp(t[0].last, "xyz", 3) == 0);

    /* 8 MiB between two small ones, from the acceptor to the dialer and
     * back (n2 accepts n1's link). */
    size_t big = 8u << 20;
    uint8_t *p = malloc(big);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    for (int dir = 0; dir < 2; dir++) {
        node_t *from = dir == 0 ? &t[1] : &t[0], *to = dir == 0 ? &t[0] : &t[1];
        size_t dest = dir == 0 ? 0 : 1;
        size_t got0 = to->got;
        uint64_t want = fnv(to->sum ? to->sum : FNV0, (const uint8_t *)"a", 1);
        want = fnv(want, p, big);
        want = fnv(want, (const uint8_t *)"z", 1);
        int writable0 = from->writable;
        cr_assert(dsq_peer_send(from->ps, dest, 30, "a", 1, NULL, 0) == 0);
        cr_assert(dsq_peer_send(from->ps, dest, 31, p, big, NULL, 0) == 0);
        cr_assert(dsq_peer_queued(from->ps, dest) > 0);
        cr_assert(dsq_peer_send(from->ps, dest, 32, "z", 1, NULL, 0) == 0);
        RUN_UNTIL(to->got == got0 + 3);
        cr_assert_eq(to->last_type, 32);
        cr_assert_eq(to->sum, want, "the bytes arrived whole and in order");
        RUN_UNTIL(from->writable > writable0 && dsq_peer_queued(from->ps, dest) == 0);
    }
    free(p);
    dsq_peer_stats s;
    dsq_peers_stats(t[1].ps, &s);
    cr_assert(s.bytes_in >= big && s.bytes_out >= big && s.auth_failures == 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
    tls_dir_remove();
}

/* A node whose certificate another CA signed gets no link, whether it
 * dials (the acceptor refuses its certificate) or accepts (the dialer
 * refuses it). n2 trusts both CAs, so that each refusal is the other
 * side's alone. */
Test(peer, tls_a_certificate_of_another_ca_gets_no_link)
{
    tls_dir_make();
    make_ca("ca");
    make_ca("other");
    sh("cat '%s/ca.pem' '%s/other.pem' > '%s/both.pem'", tls_dir, tls_dir, tls_dir);
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n2", "n2", "other");
    make_node_cert("n3", "n3", "ca");
    make_nodes(3);
    node_t t[3] = {0};
    start_tls(&t[0], 0, 3, files_of("n1", "ca"));
    start_tls(&t[1], 1, 3, files_of("n2", "both"));
    start_tls(&t[2], 2, 3, files_of("n3", "ca"));
    /* n1 dials n2 (and refuses its certificate) and n3 (accepted); n2
     * dials n3 (which refuses n2's). */
    RUN_UNTIL(t[0].up[2] == 1 && t[2].up[0] == 1);
    dsq_peer_stats s0, s2;
    RUN_UNTIL((dsq_peers_stats(t[0].ps, &s0), s0.auth_failures >= 2) &&
              (dsq_peers_stats(t[2].ps, &s2), s2.auth_failures >= 2));
    cr_assert_eq(t[1].up[0] + t[1].up[2] + t[0].up[1] + t[2].up[1], 0);
    cr_assert(!dsq_peer_up(t[0].ps, 1) && !dsq_peer_up(t[2].ps, 1) && !dsq_peer_up(t[1].ps, 0) &&
              !dsq_peer_up(t[1].ps, 2));
    cr_assert(dsq_peer_send(t[1].ps, 2, 20, "x", 1, NULL, 0) != 0);
    cr_assert_eq(t[2].got + t[0].got, 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
    tls_dir_remove();
}

/* A node with TLS off and one with it on never link, either way round;
 * both see why. */
Test(peer, tls_and_plain_nodes_do_not_link)
{
    tls_dir_make();
    make_ca("ca");
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n3", "n3", "ca");
    make_nodes(3);
    node_t t[3] = {0};
    start_tls(&t[0], 0, 3, files_of("n1", "ca"));
    start(&t[1], 1, 3, SECRET); /* no TLS */
    start_tls(&t[2], 2, 3, files_of("n3", "ca"));
    RUN_UNTIL(t[0].up[2] == 1 && t[2].up[0] == 1);
    /* n1 (TLS) dials n2 (plain), n2 dials n3 (TLS): each acceptor refuses. */
    dsq_peer_stats s1, s2;
    RUN_UNTIL((dsq_peers_stats(t[1].ps, &s1), s1.auth_failures >= 2) &&
              (dsq_peers_stats(t[2].ps, &s2), s2.auth_failures >= 2));
    cr_assert_eq(t[1].up[0] + t[1].up[2] + t[0].up[1] + t[2].up[1], 0);
    cr_assert(!dsq_peer_up(t[0].ps, 1) && !dsq_peer_up(t[2].ps, 1));
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
    tls_dir_remove();
}

/* An impostor: a node with a good certificate of the cluster's CA,
 * naming n3, that says it is n1. It runs on a thread of its own with
 * blocking OpenSSL calls while the loop runs the acceptor. */
typedef struct impostor {
    const char *cert, *key, *ca;
    const struct sockaddr *to;
    atomic_int done; /* 1: the acceptor closed the connection after the hello; -1: something else */
} impostor;

static void *impostor_run(void *arg)
{
    impostor *im = arg;
    int result = -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_use_certificate_chain_file(ctx, im->cert);
    SSL_CTX_use_PrivateKey_file(ctx, im->key, SSL_FILETYPE_PEM);
    SSL_CTX_load_verify_locations(ctx, im->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, im->to, sizeof(struct sockaddr_in)) == 0 && SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1) {
        dsq_buf h = DSQ_BUF_INIT, f = DSQ_BUF_INIT;
        uint8_t nonce[32];
        RAND_bytes(nonce, sizeof nonce);
        dsq_buf_append(&h, "DSQP", 4);
        dsq_w_u8(&h, 1);
        dsq_w_str(&h, "n1");
        dsq_w_str(&h, "n2");
        dsq_buf_append(&h, nonce, sizeof nonce);
        dsq_w_u32(&f, (uint32_t)(h.len + 1));
        dsq_w_u8(&f, 1); /* HELLO */
        dsq_buf_append(&f, h.data, h.len);
        char buf[512];
        if (SSL_write(ssl, f.data, (int)f.len) == (int)f.len)
            result = SSL_read(ssl, buf, sizeof buf) <= 0 ? 1 : -1; /* no answer: closed */
        dsq_buf_free(&h);
        dsq_buf_free(&f);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    atomic_store(&im->done, result);
    return NULL;
}

/* A certificate must name the node: the dialer checks the acceptor's
 * against the node it dials, the acceptor the dialer's against the node
 * its hello names. */
Test(peer, tls_a_certificate_must_name_its_node)
{
    tls_dir_make();
    make_ca("ca");
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n2", "n2", "ca");
    make_node_cert("n3", "n3", "ca");
    make_nodes(3);
    node_t t[3] = {0};
    /* n1 is told n2 is at the address where n3 listens. */
    dsq_node n2_real = nodes[1];
    start_tls(&t[2], 2, 3, files_of("n3", "ca"));
    nodes[1] = nodes[2];
    snprintf(nodes[1].id, sizeof nodes[1].id, "n2");
    nodes[2] = n2_real;
    snprintf(nodes[2].id, sizeof nodes[2].id, "n3");
    start_tls(&t[0], 0, 3, files_of("n1", "ca"));
    dsq_peer_stats s;
    RUN_UNTIL((dsq_peers_stats(t[0].ps, &s), s.auth_failures >= 1));
    cr_assert(!dsq_peer_up(t[0].ps, 1));
    stop(&t[0]);
    stop(&t[2]);
    finish();

    /* The impostor dials n2, saying it is n1, with n3's certificate. */
    make_nodes(2);
    node_t a = {0};
    start_tls(&a, 1, 2, files_of("n2", "ca"));
    tls_files f3 = files_of("n3", "ca");
    impostor im = {.cert = f3.cert, .key = f3.key, .ca = f3.ca, .to = (const struct sockaddr *)&nodes[1].addr};
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, impostor_run, &im) == 0);
    RUN_UNTIL(atomic_load(&im.done) != 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&im.done), 1, "the acceptor should close the connection at the hello");
    dsq_peers_stats(a.ps, &s);
    cr_assert_eq(s.auth_failures, 1);
    cr_assert_eq(a.up[0], 0);
    /* The real n1 still gets in. */
    node_t d = {0};
    start_tls(&d, 0, 2, files_of("n1", "ca"));
    RUN_UNTIL(d.up[1] == 1 && a.up[0] == 1);
    stop(&d);
    stop(&a);
    finish();
    tls_dir_remove();
}

/* The files are read at start: one that cannot be, a key of another
 * certificate, a certificate that does not verify against the CA file,
 * that does not name the node or that may not serve as a TLS client's
 * each stop it there, the message naming the key. */
Test(peer, tls_files_are_checked_at_start)
{
    tls_dir_make();
    make_ca("ca");
    make_ca("other");
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n2", "n2", "ca");
    make_node_cert("x1", "n1", "other");
    make_cert("s1", "n1", "ca", "subjectAltName=DNS:n1;extendedKeyUsage=serverAuth");
    make_cert("cn1", "n1", "ca", "extendedKeyUsage=serverAuth,clientAuth"); /* no SAN: the CN names it */
    make_nodes(2);
    static const struct {
        const char *cert, *key, *ca, *want;
    } cases[] = {
        {"none.pem", "n1.key", "ca.pem", "cluster.tls_cert: "},
        {"n1.pem", "none.key", "ca.pem", "cluster.tls_key: "},
        {"n1.pem", "n2.key", "ca.pem", "cluster.tls_key: "}, /* (OpenSSL: key values mismatch) */
        {"n1.pem", "n1.key", "none.pem", "cluster.tls_ca: "},
        {"x1.pem", "x1.key", "ca.pem", "cluster.tls_cert: it does not verify against tls_ca"},
        {"n2.pem", "n2.key", "ca.pem", "cluster.tls_cert: it does not name n1"},
        {"s1.pem", "s1.key", "ca.pem", "clientAuth"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        node_t t = {0};
        dsq_peers_cfg cfg = cfg_of(&t, 0, 2, SECRET);
        cfg.tls_cert = at(cases[i].cert);
        cfg.tls_key = at(cases[i].key);
        cfg.tls_ca = at(cases[i].ca);
        npaths -= 3;
        char err[512] = "";
        cr_assert(dsq_peers_start(&cfg, &t.ps, err, sizeof err) != 0, "case %zu started", i);
        cr_assert(strstr(err, cases[i].want) != NULL, "case %zu: %s", i, err);
    }
    node_t t = {0};
    start_tls(&t, 0, 2, files_of("cn1", "ca"));
    stop(&t);
    finish();
    tls_dir_remove();
}

/* ---- nodes added and removed while running ------------------------------------------------------ */

/* Two nodes that start knowing only themselves link once each has added
 * the other: n2 (the acceptor) adds n1 first, so n1's first dial gets
 * in. A third node added later to both links to both (n1 and n2 dial
 * it), and messages go both ways over every added link. */
Test(peer, added_nodes_link_up_and_carry_messages)
{
    make_nodes(3);
    node_t t[3] = {0};
    start_alone(&t[0], 0);
    start_alone(&t[1], 1);
    cr_assert_eq(dsq_peers_count(t[0].ps), 1);
    cr_assert(dsq_peer_known(t[0].ps, 0) && !dsq_peer_known(t[0].ps, 1));
    cr_assert(dsq_peers_node(t[0].ps, 1) == NULL);
    cr_assert_eq(dsq_peers_find(t[0].ps, "n2"), SIZE_MAX);
    cr_assert_eq(add(&t[1], &nodes[0]), 1); /* n1 in n2's: the next index */
    cr_assert_eq(add(&t[0], &nodes[1]), 1);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[1] == 1);
    cr_assert_eq(auth_failures(&t[1]), 0, "n2 knew n1 before n1 dialed");
    /* Added again at the same address: the same index, the link stays. */
    cr_assert_eq(add(&t[0], &nodes[1]), 1);
    cr_assert_eq(dsq_peers_count(t[0].ps), 2);

    /* n3: added to n1 and n2, which dial it, after it knows them. */
    start_alone(&t[2], 2);
    cr_assert_eq(add(&t[2], &nodes[1]), 1);
    cr_assert_eq(add(&t[2], &nodes[0]), 2);
    cr_assert_eq(add(&t[0], &nodes[2]), 2);
    cr_assert_eq(add(&t[1], &nodes[2]), 2);
    RUN_UNTIL(t[0].up[2] == 1 && t[1].up[2] == 1 && t[2].up[1] == 1 && t[2].up[2] == 1);
    cr_assert(t[0].up[1] == 1 && t[1].up[1] == 1 && t[0].downs + t[1].downs + t[2].downs == 0);

    /* Each way over each link, with the indices each side gave. */
    static const struct {
        size_t from, to, to_index, from_index; /* to_index in from's, from_index in to's */
    } m[] = {
        {0, 1, 1, 1}, {1, 0, 1, 1}, {0, 2, 2, 2}, {2, 0, 2, 2}, {1, 2, 2, 1}, {2, 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        node_t *to = &t[m[i].to];
        size_t got0 = to->got;
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%zu", i);
        cr_assert(dsq_peer_send(t[m[i].from].ps, m[i].to_index, 50, msg, (size_t)len, NULL, 0) == 0);
        RUN_UNTIL(to->got == got0 + 1);
        cr_assert_eq(to->last_from, m[i].from_index, "message %zu", i);
        cr_assert(to->last_len == (size_t)len && memcmp(to->last, msg, (size_t)len) == 0, "message %zu", i);
    }
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
}

/* n1 adds n2 and dials it before n2 knows n1: n2 refuses its hello (a
 * failed authentication) until it adds n1; then n1's next dial gets in. */
Test(peer, a_hello_from_a_node_not_yet_added_is_refused_until_it_is)
{
    make_nodes(2);
    node_t t[2] = {0};
    start_alone(&t[0], 0);
    start_alone(&t[1], 1);
    cr_assert_eq(add(&t[0], &nodes[1]), 1);
    RUN_UNTIL(auth_failures(&t[1]) >= 2);
    cr_assert(t[0].up[1] == 0 && t[1].up[1] == 0 && !dsq_peer_up(t[0].ps, 1));
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "x", 1, NULL, 0) != 0);
    cr_assert_eq(add(&t[1], &nodes[0]), 1);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[1] == 1);
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "x", 1, NULL, 0) == 0);
    RUN_UNTIL(t[1].got == 1);
    stop(&t[0]);
    stop(&t[1]);
    finish();
}

/* A removed node's link closes on both sides. Removed by its acceptor
 * (n2 removes n1): what was queued for it is dropped, sending fails, and
 * n1's redials are refused, until n2 adds n1 again (its old index).
 * Removed by its dialer (n1 removes n3): n1 no longer dials it. */
Test(peer, a_removed_node_is_closed_and_refused)
{
    make_nodes(3);
    node_t t[3] = {0};
    for (size_t i = 0; i < 3; i++)
        start(&t[i], i, 3, SECRET);
    RUN_UNTIL(ALL_UP3(t));
    cr_assert(dsq_peers_remove(t[0].ps, 0) != 0, "removing itself");
    cr_assert(dsq_peers_remove(t[0].ps, 3) != 0, "an index not given");

    /* A message far larger than the socket's buffers, queued and then
     * dropped: it never arrives whole. */
    size_t big = 32u << 20;
    uint8_t *p = calloc(1, big);
    cr_assert(dsq_peer_send(t[1].ps, 0, 31, p, big, NULL, 0) == 0);
    cr_assert(dsq_peer_queued(t[1].ps, 0) > 0);
    cr_assert(dsq_peers_remove(t[1].ps, 0) == 0);
    free(p);
    cr_assert(t[1].up[0] == 0 && t[1].downs == 1, "on_link(n1, false) at once");
    cr_assert_eq(t[1].downs_known, 0, "n1 is no longer known when its link's end is told");
    cr_assert(!dsq_peer_known(t[1].ps, 0) && !dsq_peer_up(t[1].ps, 0));
    cr_assert_eq(dsq_peer_queued(t[1].ps, 0), 0);
    cr_assert(dsq_peer_send(t[1].ps, 0, 20, "x", 1, NULL, 0) != 0);
    cr_assert_str_eq(dsq_peers_node(t[1].ps, 0)->id, "n1", "a removed index still names its node");
    cr_assert_eq(dsq_peers_count(t[1].ps), 3);
    cr_assert(dsq_peers_remove(t[1].ps, 0) == 0, "removed already");
    RUN_UNTIL(t[0].downs == 1);
    cr_assert_eq(t[0].up[1], 0);
    uint64_t f0 = auth_failures(&t[1]);
    RUN_UNTIL(auth_failures(&t[1]) >= f0 + 2); /* n1 redials, n2 refuses */
    cr_assert(t[0].up[1] == 0 && t[1].up[0] == 0);
    cr_assert_eq(t[0].got, 0, "the dropped message did not arrive");
    /* The n2-n3 and n1-n3 links are untouched. */
    cr_assert(t[1].up[2] == 1 && t[2].up[1] == 1 && t[0].up[2] == 1 && t[2].up[0] == 1);

    /* n1 is added again: its old index, and n1's next dial gets in. */
    cr_assert_eq(add(&t[1], &nodes[0]), 0);
    cr_assert_eq(dsq_peers_count(t[1].ps), 3);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[0] == 1);

    /* n1 (the dialer) removes n3. */
    cr_assert(dsq_peers_remove(t[0].ps, 2) == 0);
    cr_assert(t[0].up[2] == 0 && !dsq_peer_up(t[0].ps, 2));
    RUN_UNTIL(t[2].up[0] == 0);
    /* The loop runs for several redials' time (the first would come after
     * 100 ms): n3 still knows n1 and would take one, so none is made. */
    RUN_FOR(600);
    cr_assert(t[2].up[0] == 0 && t[0].up[2] == 0, "n1 dialed n3 after removing it");
    cr_assert_eq(auth_failures(&t[2]), 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
}

/* n2 moves: a new n2 listens at another address while the old one still
 * runs. n1, told n2's new address, closes its link to the old one and
 * dials the new one; the old one (an acceptor) is not dialed again. */
Test(peer, a_node_added_again_at_another_address_moves)
{
    make_nodes(3);
    dsq_node moved = nodes[2];
    snprintf(moved.id, sizeof moved.id, "n2");
    node_t t[3] = {0};
    start_alone(&t[0], 0);
    start_alone(&t[1], 1);
    cr_assert_eq(add(&t[1], &nodes[0]), 1);
    cr_assert_eq(add(&t[0], &nodes[1]), 1);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[1] == 1);

    dsq_peers_cfg cfg = cfg_of(&t[2], 0, 1, SECRET);
    cfg.nodes = &moved;
    char err[256] = "";
    cr_assert(dsq_peers_start(&cfg, &t[2].ps, err, sizeof err) == 0, "%s", err);
    cr_assert_eq(add(&t[2], &nodes[0]), 1);
    cr_assert_eq(add(&t[0], &moved), 1, "the same index");
    cr_assert_str_eq(dsq_peers_node(t[0].ps, 1)->addr_text, moved.addr_text);
    cr_assert(t[0].downs == 1 && t[0].up[1] == 0, "the link to the old address closed at once");
    RUN_UNTIL(t[0].up[1] == 1 && t[2].up[1] == 1 && t[1].downs == 1);
    cr_assert_eq(t[1].up[1], 0);
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "new", 3, NULL, 0) == 0);
    RUN_UNTIL(t[2].got == 1);
    cr_assert(t[2].last_len == 3 && memcmp(t[2].last, "new", 3) == 0);
    /* (the old n2 gets nothing, and its link stays down) */
    cr_assert(t[1].got == 0 && t[1].up[1] == 0);
    for (size_t i = 0; i < 3; i++)
        stop(&t[i]);
    finish();
}

/* At most DSQ_NODES_MAX ids over the object's life: past that an add
 * fails and says why; a removed index is not given to another id; an id
 * known already (removed or not) is still taken. Also refused: this
 * node's id at another address and a malformed node. */
Test(peer, adding_beyond_the_limit_fails)
{
    make_nodes(2);
    node_t t = {0};
    start_alone(&t, 1); /* n2; the ids below sort first: n2 would accept them, never dials */
    for (size_t i = 1; i < DSQ_NODES_MAX; i++) {
        char spec[64], err[256];
        dsq_node n;
        snprintf(spec, sizeof spec, "a%02zu@127.0.0.1:%zu", i, 20000 + i);
        cr_assert(dsq_node_parse(spec, &n, err, sizeof err) == 0, "%s", err);
        cr_assert_eq(add(&t, &n), i);
    }
    cr_assert_eq(dsq_peers_count(t.ps), DSQ_NODES_MAX);
    size_t index = 12345;
    char err[256] = "";
    cr_assert(dsq_peers_add(t.ps, &nodes[0], &index, err, sizeof err) != 0);
    cr_assert(strstr(err, "64 nodes have an index already") != NULL, "%s", err);
    cr_assert_eq(index, 12345);
    cr_assert(!dsq_peer_known(t.ps, DSQ_NODES_MAX) && dsq_peers_node(t.ps, DSQ_NODES_MAX) == NULL);
    /* Removing one frees no index. */
    cr_assert(dsq_peers_remove(t.ps, 5) == 0);
    cr_assert(!dsq_peer_known(t.ps, 5));
    cr_assert(dsq_peers_add(t.ps, &nodes[0], &index, err, sizeof err) != 0);
    /* Known ids still are: again at the same address, and the removed one. */
    dsq_node a05 = *dsq_peers_node(t.ps, 5), a07 = *dsq_peers_node(t.ps, 7);
    cr_assert_eq(add(&t, &a07), 7);
    cr_assert_eq(add(&t, &a05), 5);
    cr_assert_eq(dsq_peers_count(t.ps), DSQ_NODES_MAX);
    /* This node: its own index at its address; refused at another. */
    cr_assert_eq(add(&t, &nodes[1]), 0);
    dsq_node self = nodes[0];
    snprintf(self.id, sizeof self.id, "n2");
    cr_assert(dsq_peers_add(t.ps, &self, &index, err, sizeof err) != 0);
    cr_assert(strstr(err, "is this one") != NULL, "%s", err);
    dsq_node bad = {0};
    cr_assert(dsq_peers_add(t.ps, &bad, &index, err, sizeof err) != 0);
    stop(&t);
    finish();
}

/* With TLS, two nodes that start knowing only themselves link once each
 * has added the other (the dialer checks the certificate names the node
 * it added), and carry messages both ways. */
Test(peer, tls_added_nodes_link_up)
{
    tls_dir_make();
    make_ca("ca");
    make_node_cert("n1", "n1", "ca");
    make_node_cert("n2", "n2", "ca");
    make_nodes(2);
    node_t t[2] = {0};
    start_alone_tls(&t[0], 0, files_of("n1", "ca"));
    start_alone_tls(&t[1], 1, files_of("n2", "ca"));
    cr_assert_eq(add(&t[1], &nodes[0]), 1);
    cr_assert_eq(add(&t[0], &nodes[1]), 1);
    RUN_UNTIL(t[0].up[1] == 1 && t[1].up[1] == 1);
    cr_assert(dsq_peer_send(t[0].ps, 1, 20, "ab", 2, NULL, 0) == 0);
    cr_assert(dsq_peer_send(t[1].ps, 1, 21, "cd", 2, NULL, 0) == 0);
    RUN_UNTIL(t[0].got == 1 && t[1].got == 1);
    cr_assert(t[1].last_type == 20 && memcmp(t[1].last, "ab", 2) == 0);
    cr_assert(t[0].last_type == 21 && memcmp(t[0].last, "cd", 2) == 0);
    cr_assert_eq(auth_failures(&t[0]) + auth_failures(&t[1]), 0);
    stop(&t[0]);
    stop(&t[1]);
    finish();
    tls_dir_remove();
}

/* A node set shared with the rest of the cluster may give an id an index
 * before the node is added here (an epochs file or an assignment named
 * it): that index is absent until then (not known, not dialed, its HELLOs
 * refused), and a node added later gets the set's index, past the gap. */
Test(peer, indices_come_from_a_shared_node_set_with_gaps)
{
    make_nodes(3);
    node_t t[2] = {0};
    dsq_nodeset *ids = dsq_nodeset_new();
    uint32_t ix;
    cr_assert_eq(dsq_nodeset_intern(ids, "n1", &ix), 0);
    cr_assert_eq(dsq_nodeset_intern(ids, "n3", &ix), 0); /* named before it is seen */
    cr_assert_eq(ix, 1);
    dsq_peers_cfg cfg = cfg_of(&t[0], 0, 1, SECRET);
    cfg.nodes = &nodes[0];
    cfg.ids = ids;
    char err[256];
    cr_assert(dsq_peers_start(&cfg, &t[0].ps, err, sizeof err) == 0, "%s", err);
    cr_assert_eq(dsq_peers_count(t[0].ps), 2);
    cr_assert(!dsq_peer_known(t[0].ps, 1), "n3 is absent");
    cr_assert_str_eq(dsq_peers_node(t[0].ps, 1)->id, "n3");
    /* n2 is added: the set's next index, 2, past the absent one. */
    start_alone(&t[1], 1);
    cr_assert_eq(add(&t[0], &nodes[1]), 2);
    cr_assert_eq(dsq_nodeset_find(ids, "n2"), 2);
    cr_assert_eq(add(&t[1], &nodes[0]), 1);
    RUN_UNTIL(t[0].up[2] == 1 && t[1].up[1] == 1);
    /* n3 is added at last: its index from the set, now known. */
    cr_assert_eq(add(&t[0], &nodes[2]), 1);
    cr_assert(dsq_peer_known(t[0].ps, 1));
    cr_assert_eq(dsq_peers_count(t[0].ps), 3);
    /* An id the set numbered after the start is covered when added. */
    cr_assert_eq(dsq_nodeset_intern(ids, "n9", &ix), 0);
    cr_assert_eq(ix, 3);
    cr_assert_eq(dsq_peers_count(t[0].ps), 3);
    cr_assert_eq(dsq_peers_find(t[0].ps, "n9"), SIZE_MAX);
    stop(&t[0]);
    stop(&t[1]);
    finish();
    dsq_nodeset_free(ids);
}
