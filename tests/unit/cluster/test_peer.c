/* Unit tests: cluster/peer (the links between nodes), with two or three
 * nodes' link layers on one loop over loopback. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/peer.h"
#include "tests/unit/support/wait.h"

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
    int up[3];          /* link ups seen per node, minus downs */
    int downs;
    size_t got;         /* messages received */
    size_t got_bytes;
    uint8_t last_type;
    size_t last_from;
    uint8_t *last;      /* the last message's payload (owned) */
    size_t last_len;
    int writable;
} node_t;

static dsq_node nodes[3];
static uv_loop_t loop;
/* The links' handles do not keep a loop running (the server's ends when
 * its clients are gone): this one does, for the tests' NOWAIT turns. */
static uv_timer_t keep;

static void noop(uv_timer_t *t) { (void)t; }

static void on_message(void *ud, size_t from, uint8_t type, const uint8_t *p, size_t n)
{
    node_t *t = ud;
    t->got++;
    t->got_bytes += n;
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
    if (!up)
        t->downs++;
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

static void start(node_t *t, size_t self, size_t n, const char *secret)
{
    dsq_peers_cfg cfg = {
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
    char err[256];
    cr_assert(dsq_peers_start(&cfg, &t->ps, err, sizeof err) == 0, "%s", err);
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
