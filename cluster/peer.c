/* peer — the links between nodes: connections, TLS when on, the handshake,
 * framing, heartbeats and redialing (peer.h). */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/peer.h"
#include "cluster/wire.h"
#include "common/list.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/util.h"

/* The link's own message types. */
enum { T_HELLO = 1, T_HELLO_ACK = 2, T_AUTH = 3, T_BEAT = 4 };

#define MAGIC "DSQP"
#define VERSION 1
#define NONCE 32
#define MAC 32
#define HANDSHAKE_MAX 512      /* a frame before authentication is at most this */
#define HANDSHAKE_MS 5000      /* a handshake not done by then is cut */
#define DIAL_MIN_MS 100
#define DIAL_MAX_MS 2000

typedef enum {
    C_CONNECTING,  /* dialer: TCP connect under way */
    C_HELLO_SENT,  /* dialer: waits for HELLO_ACK */
    C_WAIT_HELLO,  /* acceptor: waits for HELLO */
    C_WAIT_AUTH,   /* acceptor: waits for AUTH */
    C_UP,          /* authenticated */
    C_CLOSING,
} conn_state;

typedef struct pconn {
    dsq_peers *ps;
    uv_tcp_t tcp;
    uv_connect_t connect;
    conn_state state;
    bool dialer;
    size_t node;                  /* the other node; known at once when dialing, after HELLO when accepting */
    uint8_t nonce_d[NONCE], nonce_a[NONCE];
    uint64_t since_ms;            /* opened (for the handshake's limit) */
    uint64_t last_rx_ms;          /* anything received */
    dsq_buf in;                   /* received, not yet a whole frame (plaintext) */
    dsq_buf out;                  /* queued, not yet handed to a write (plaintext) */
    dsq_buf wbuf;                 /* the write under way */
    dsq_tls *tls;                 /* with cluster.tls: the session (owned); else NULL */
    dsq_buf cin;                  /* TLS: ciphertext read, not yet decrypted */
    dsq_buf cout;                 /* TLS: ciphertext not yet handed to a write */
    bool heard;                   /* anything received yet */
    char addr[64];                /* the other end's address, for the log */
    bool writing;
    bool over;                    /* queued past send_limit since the last on_writable */
    uv_write_t wreq;
    dsq_lnode link;               /* on ps->conns */
} pconn;

typedef struct plink {
    pconn *up;                    /* the authenticated connection, or NULL */
    pconn *dialing;               /* dialer: the connection being made, or NULL */
    uint64_t next_dial_ms;        /* dialer: when to try again */
    uint64_t backoff_ms;
    uint64_t last_beat_ms;        /* the last heartbeat sent */
    bool gone;                    /* removed (dsq_peers_remove), until added again; or absent */
    bool absent;                  /* an index the node set gave its id before it was added here (with
                                     gone: no address, not dialed, its HELLOs refused) */
} plink;

struct dsq_peers {
    dsq_peers_cfg cfg;            /* (cfg.nnodes: the configured ones; nnodes below counts the added too) */
    dsq_nodeset *ids;             /* the indices (cfg.ids, or own_ids) */
    dsq_nodeset *own_ids;         /* made here when cfg.ids is NULL */
    dsq_node nodes[DSQ_NODES_MAX]; /* by index (the node set's) */
    size_t nnodes;                /* indices covered: nodes[0..nnodes), removed and absent ones included */
    char secret[DSQ_SECRET_MAX + 1];
    dsq_tls_ctx *tls;             /* with cluster.tls (owned); else NULL */
    uv_tcp_t listener;
    uv_timer_t timer;
    plink links[DSQ_NODES_MAX];
    dsq_list conns;               /* every open pconn */
    dsq_peer_stats stats;
    bool stopping;
    unsigned closing;             /* handles whose close callback is owed */
    void (*done)(void *ud);
    void *done_ud;
};

/* ---- proofs ----------------------------------------------------------------------------------- */

void dsq_peer_proof(const char *secret, const char *label, const char *dialer, const char *acceptor,
                    const uint8_t nonce_d[32], const uint8_t nonce_a[32], uint8_t mac[32])
{
    dsq_buf m = DSQ_BUF_INIT;
    /* Each string with its length in front: no two different inputs give
     * the same bytes. */
    int rc = dsq_w_str(&m, label) | dsq_w_str(&m, dialer) | dsq_w_str(&m, acceptor) |
             dsq_buf_append(&m, nonce_d, NONCE) | dsq_buf_append(&m, nonce_a, NONCE);
    unsigned len = MAC;
    if (rc != 0 || HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)m.data, m.len, mac, &len) == NULL)
        memset(mac, 0, MAC); /* (out of memory: a proof nobody matches, so the link stays down) */
    dsq_buf_free(&m);
}

/* ---- closing ---------------------------------------------------------------------------------- */

static void ps_free(dsq_peers *ps)
{
    dsq_tls_ctx_free(ps->tls);
    dsq_nodeset_free(ps->own_ids);
    free(ps);
}

static void maybe_done(dsq_peers *ps)
{
    if (ps->stopping && ps->closing == 0 && ps->done != NULL) {
        void (*done)(void *) = ps->done;
        void *ud = ps->done_ud;
        ps_free(ps);
        done(ud);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    pconn *c = h->data;
    dsq_peers *ps = c->ps;
    dsq_buf_free(&c->in);
    dsq_buf_free(&c->out);
    dsq_buf_free(&c->wbuf);
    dsq_buf_free(&c->cin);
    dsq_buf_free(&c->cout);
    dsq_tls_free(c->tls);
    free(c);
    ps->closing--;
    maybe_done(ps);
}

static void conn_close(pconn *c, const char *why)
{
    dsq_peers *ps = c->ps;
    if (c->state == C_CLOSING)
        return;
    bool was_up = c->state == C_UP;
    c->state = C_CLOSING;
    dsq_list_remove(&ps->conns, &c->link);
    if (c->node < ps->nnodes) {
        plink *l = &ps->links[c->node];
        if (l->up == c)
            l->up = NULL;
        if (l->dialing == c)
            l->dialing = NULL;
        if (c->dialer && !ps->stopping) {
            l->next_dial_ms = dsq_now_ms() + l->backoff_ms;
            l->backoff_ms = l->backoff_ms * 2 > DIAL_MAX_MS ? DIAL_MAX_MS : l->backoff_ms * 2;
        }
    }
    if (was_up) {
        DSQ_WARN("peer_down", "node=%s reason=%s", ps->nodes[c->node].id, dsq_log_q(why));
        if (ps->cfg.on_link != NULL && !ps->stopping)
            ps->cfg.on_link(ps->cfg.ud, c->node, false);
    } else if (why != NULL && !ps->stopping) {
        DSQ_DEBUG("peer_connect_failed", "node=%s reason=%s",
                  c->node < ps->nnodes ? ps->nodes[c->node].id : "?", dsq_log_q(why));
    }
    ps->closing++;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void start_write(pconn *c);

/* Bytes queued on the connection and not yet written (plaintext waiting
 * for encryption counted as it is). */
static size_t queued(const pconn *c) { return c->out.len + c->cout.len + c->wbuf.len; }

static void on_written(uv_write_t *w, int status)
{
    pconn *c = w->data;
    c->writing = false;
    dsq_buf_reset(&c->wbuf);
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    start_write(c);
    dsq_peers *ps = c->ps;
    if (c->over && c->state == C_UP && queued(c) < ps->cfg.send_limit / 2) {
        c->over = false;
        if (ps->cfg.on_writable != NULL)
            ps->cfg.on_writable(ps->cfg.ud, c->node);
    }
}

/* Hand what is queued to one write (what queues meanwhile goes in the
 * next). With TLS, what is queued is encrypted first, in order after
 * whatever the session itself had to send. */
static void start_write(pconn *c)
{
    if (c->writing || c->state == C_CLOSING)
        return;
    if (c->tls != NULL && c->out.len > 0) {
        if (dsq_tls_write(c->tls, c->out.data, c->out.len, &c->cout) != 0) {
            conn_close(c, dsq_tls_error(c->tls));
            return;
        }
        dsq_buf_reset(&c->out);
    }
    dsq_buf *q = c->tls != NULL ? &c->cout : &c->out;
    if (q->len == 0)
        return;
    dsq_buf t = c->wbuf;
    c->wbuf = *q;
    *q = t;
    dsq_buf_reset(q);
    uv_buf_t b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        conn_close(c, uv_strerror(rc));
        return;
    }
    c->writing = true;
}

/* Queue one frame. 0, or -1 (out of memory: the connection is closed). */
static int frame(pconn *c, uint8_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    size_t len = 1 + alen + blen;
    if (len > UINT32_MAX || dsq_buf_reserve(&c->out, 4 + len) != 0 || dsq_w_u32(&c->out, (uint32_t)len) != 0 ||
        dsq_w_u8(&c->out, type) != 0 || (alen > 0 && dsq_buf_append(&c->out, a, alen) != 0) ||
        (blen > 0 && dsq_buf_append(&c->out, b, blen) != 0)) {
        conn_close(c, "out of memory");
        return -1;
    }
    c->ps->stats.bytes_out += 4 + len;
    c->ps->stats.msgs_out++;
    start_write(c);
    return 0;
}

/* ---- the handshake ---------------------------------------------------------------------------- */

static void link_up(pconn *c)
{
    dsq_peers *ps = c->ps;
    plink *l = &ps->links[c->node];
    if (l->up != NULL && l->up != c)
        conn_close(l->up, "replaced by a new connection"); /* the other side reconnected */
    if (l->dialing == c)
        l->dialing = NULL;
    l->up = c;
    l->backoff_ms = DIAL_MIN_MS;
    c->state = C_UP;
    ps->stats.connects++;
    DSQ_INFO("peer_up", "node=%s address=%s role=%s", ps->nodes[c->node].id, ps->nodes[c->node].addr_text,
             c->dialer ? "dialer" : "acceptor");
    if (ps->cfg.on_link != NULL)
        ps->cfg.on_link(ps->cfg.ud, c->node, true);
}

static void auth_failed(pconn *c, const char *why)
{
    dsq_peers *ps = c->ps;
    ps->stats.auth_failures++;
    DSQ_ERROR("peer_auth_failed", "node=%s address=%s reason=%s",
              c->node < ps->nnodes ? ps->nodes[c->node].id : "?", c->addr, dsq_log_q(why));
    conn_close(c, NULL);
}

/* The TLS session failed: before the link is up (a certificate refused
 * either way, a handshake cut short, bytes that are not TLS) that is a
 * failed authentication; after, a broken link. The alert that says why,
 * if the session made one, goes out first when the socket takes it at
 * once (it never waits). */
static void tls_failed(pconn *c)
{
    char why[320];
    snprintf(why, sizeof why, "TLS: %s", dsq_tls_error(c->tls));
    if (c->cout.len > 0) {
        uv_buf_t b = uv_buf_init(c->cout.data, (unsigned)c->cout.len);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* (UV_EAGAIN while a write is queued: then not) */
    }
    if (c->state == C_UP)
        conn_close(c, why);
    else
        auth_failed(c, why);
}

/* The index `id` has here (removed or absent too), or SIZE_MAX. */
static size_t node_by_id(const dsq_peers *ps, const char *id)
{
    uint32_t i = dsq_nodeset_find(ps->ids, id);
    return i < ps->nnodes ? i : SIZE_MAX;
}

/* Cover the node set's indices up to `upto` (excluded): those not added
 * here are absent (see plink). */
static void cover(dsq_peers *ps, size_t upto)
{
    for (; ps->nnodes < upto; ps->nnodes++) {
        size_t j = ps->nnodes;
        memset(&ps->nodes[j], 0, sizeof ps->nodes[j]);
        snprintf(ps->nodes[j].id, sizeof ps->nodes[j].id, "%s", dsq_nodeset_id(ps->ids, (uint32_t)j));
        ps->links[j] = (plink){.backoff_ms = DIAL_MIN_MS, .gone = true, .absent = true};
    }
}

static void send_hello(pconn *c)
{
    dsq_peers *ps = c->ps;
    dsq_buf b = DSQ_BUF_INIT;
    RAND_bytes(c->nonce_d, NONCE);
    int rc = dsq_buf_append(&b, MAGIC, 4) | dsq_w_u8(&b, VERSION) | dsq_w_str(&b, ps->nodes[ps->cfg.self].id) |
             dsq_w_str(&b, ps->nodes[c->node].id) | dsq_buf_append(&b, c->nonce_d, NONCE);
    if (rc != 0)
        conn_close(c, "out of memory");
    else if (frame(c, T_HELLO, b.data, b.len, NULL, 0) == 0)
        c->state = C_HELLO_SENT;
    dsq_buf_free(&b);
}

/* Acceptor: HELLO. */
static void on_hello(pconn *c, const uint8_t *p, size_t n)
{
    dsq_peers *ps = c->ps;
    dsq_rd r = dsq_rd_of(p, n);
    const uint8_t *magic, *nonce;
    char from[DSQ_NODE_ID_MAX], to[DSQ_NODE_ID_MAX];
    dsq_rd_take(&r, 4, &magic);
    uint8_t ver = dsq_r_u8(&r);
    dsq_r_str(&r, from, sizeof from);
    dsq_r_str(&r, to, sizeof to);
    dsq_rd_take(&r, NONCE, &nonce);
    if (r.bad || memcmp(magic, MAGIC, 4) != 0) {
        auth_failed(c, "not a dosqld node's hello");
        return;
    }
    if (ver != VERSION) {
        auth_failed(c, "another version of the nodes' protocol");
        return;
    }
    const char *self = ps->nodes[ps->cfg.self].id;
    size_t node = node_by_id(ps, from);
    if (strcmp(to, self) != 0) {
        auth_failed(c, "it meant to reach another node (check cluster.peers on both)");
        return;
    }
    if (node == SIZE_MAX || node == ps->cfg.self || ps->links[node].gone) {
        auth_failed(c, "a node this one does not know (not in cluster.peers nor added since, or removed)");
        return;
    }
    if (strcmp(from, self) > 0) {
        auth_failed(c, "that node should accept, not dial (check cluster.peers on both)");
        return;
    }
    if (c->tls != NULL && !dsq_tls_peer_named(c->tls, from)) {
        /* Its certificate verified, but is another node's: it cannot
         * speak for `from`. */
        char why[160];
        snprintf(why, sizeof why, "its hello says it is node %s, which its TLS certificate does not name", from);
        auth_failed(c, why);
        return;
    }
    c->node = node;
    memcpy(c->nonce_d, nonce, NONCE);
    RAND_bytes(c->nonce_a, NONCE);
    uint8_t mac[MAC];
    dsq_peer_proof(ps->secret, "dosqld acceptor", from, self, c->nonce_d, c->nonce_a, mac);
    if (frame(c, T_HELLO_ACK, c->nonce_a, NONCE, mac, MAC) == 0)
        c->state = C_WAIT_AUTH;
}

/* Dialer: HELLO_ACK. */
static void on_hello_ack(pconn *c, const uint8_t *p, size_t n)
{
    dsq_peers *ps = c->ps;
    if (n != NONCE + MAC) {
        auth_failed(c, "a malformed answer to the hello");
        return;
    }
    memcpy(c->nonce_a, p, NONCE);
    const char *self = ps->nodes[ps->cfg.self].id, *other = ps->nodes[c->node].id;
    uint8_t want[MAC], mine[MAC];
    dsq_peer_proof(ps->secret, "dosqld acceptor", self, other, c->nonce_d, c->nonce_a, want);
    if (CRYPTO_memcmp(want, p + NONCE, MAC) != 0) {
        auth_failed(c, "its proof does not match: the nodes' secrets differ");
        return;
    }
    dsq_peer_proof(ps->secret, "dosqld dialer", self, other, c->nonce_d, c->nonce_a, mine);
    if (frame(c, T_AUTH, mine, MAC, NULL, 0) == 0)
        link_up(c);
}

/* Acceptor: AUTH. */
static void on_auth(pconn *c, const uint8_t *p, size_t n)
{
    dsq_peers *ps = c->ps;
    uint8_t want[MAC];
    dsq_peer_proof(ps->secret, "dosqld dialer", ps->nodes[c->node].id, ps->nodes[ps->cfg.self].id, c->nonce_d,
                   c->nonce_a, want);
    if (n != MAC || CRYPTO_memcmp(want, p, MAC) != 0) {
        auth_failed(c, "its proof does not match: the nodes' secrets differ");
        return;
    }
    link_up(c);
}

/* ---- reading ---------------------------------------------------------------------------------- */

/* One whole frame. */
static void on_frame(pconn *c, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_peers *ps = c->ps;
    ps->stats.msgs_in++;
    switch (c->state) {
    case C_WAIT_HELLO:
        if (type == T_HELLO)
            on_hello(c, p, n);
        else
            auth_failed(c, "a message before the hello");
        return;
    case C_HELLO_SENT:
        if (type == T_HELLO_ACK)
            on_hello_ack(c, p, n);
        else
            auth_failed(c, "a message before the answer to its hello");
        return;
    case C_WAIT_AUTH:
        if (type == T_AUTH)
            on_auth(c, p, n);
        else
            auth_failed(c, "a message before its proof");
        return;
    case C_UP:
        if (type == T_BEAT)
            return;
        if (type < DSQ_PEER_MSG_MIN) {
            conn_close(c, "an unknown message of the link");
            return;
        }
        if (ps->cfg.on_message != NULL)
            ps->cfg.on_message(ps->cfg.ud, c->node, type, p, n);
        return;
    default:
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pconn *c = h->data;
    dsq_buf *b = c->tls != NULL ? &c->cin : &c->in; /* TLS: ciphertext, decrypted into in */
    size_t want = suggested < 65536 ? 65536 : suggested;
    if (dsq_buf_reserve(b, want) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(b->data + b->len, (unsigned)(b->cap - b->len));
}

/* The first bytes of a connection, when they are not what this side
 * speaks, tell which side has TLS: a plain node's hello starts with its
 * length, type 1 and the magic; a TLS ClientHello with a handshake
 * record's header (22, then version 3.x). */
static bool plain_hello(const dsq_buf *b)
{
    return b->len >= 9 && b->data[4] == T_HELLO && memcmp(b->data + 5, MAGIC, 4) == 0;
}

static bool tls_hello(const uint8_t *p, size_t n) { return n >= 2 && p[0] == 22 && p[1] == 3; }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pconn *c = s->data;
    dsq_peers *ps = c->ps;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "closed by the other node" : uv_strerror((int)nread));
        return;
    }
    c->last_rx_ms = dsq_now_ms();
    if (c->tls != NULL) {
        c->cin.len += (size_t)nread;
        if (!c->heard && plain_hello(&c->cin)) {
            auth_failed(c, "it does not speak TLS: cluster.tls is on here and off there");
            return;
        }
        c->heard = c->heard || nread > 0;
        size_t before = c->in.len;
        int rc = dsq_tls_read(c->tls, c->cin.data, c->cin.len, &c->in, &c->cout);
        dsq_buf_reset(&c->cin);
        if (rc != 0) {
            tls_failed(c);
            return;
        }
        ps->stats.bytes_in += c->in.len - before;
        start_write(c); /* the session's own: handshake messages, and what waited for it */
    } else {
        if (!c->heard && tls_hello((const uint8_t *)c->in.data + c->in.len, (size_t)nread)) {
            auth_failed(c, "it speaks TLS: cluster.tls is on there and off here");
            return;
        }
        c->heard = c->heard || nread > 0;
        c->in.len += (size_t)nread;
        ps->stats.bytes_in += (uint64_t)nread;
    }
    size_t off = 0;
    while (c->state != C_CLOSING && c->in.len - off >= 4) {
        const uint8_t *p = (const uint8_t *)c->in.data + off;
        uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        uint64_t max = c->state == C_UP ? ps->cfg.max_message + 1 : HANDSHAKE_MAX;
        if (len == 0 || len > max) {
            if (c->state == C_UP)
                conn_close(c, "a message longer than the limit");
            else
                auth_failed(c, "a handshake message of a wrong size");
            return;
        }
        if (c->in.len - off - 4 < len) {
            /* Room for the rest of it. */
            if (off == 0 && dsq_buf_reserve(&c->in, len + 4 - c->in.len) != 0) {
                conn_close(c, "out of memory");
                return;
            }
            break;
        }
        on_frame(c, p[4], p + 5, len - 1);
        off += 4 + (size_t)len;
    }
    if (c->state != C_CLOSING && off > 0)
        dsq_buf_consume(&c->in, off);
}

/* ---- dialing and accepting -------------------------------------------------------------------- */

static pconn *conn_new(dsq_peers *ps, bool dialer, size_t node)
{
    pconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ps = ps;
    c->dialer = dialer;
    c->node = node;
    c->since_ms = c->last_rx_ms = dsq_now_ms();
    if (uv_tcp_init(ps->cfg.loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_unref((uv_handle_t *)&c->tcp); /* the links do not keep the server's loop running */
    dsq_list_push(&ps->conns, &c->link);
    return c;
}

static void on_connected(uv_connect_t *req, int status)
{
    pconn *c = req->data;
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    dsq_peers *ps = c->ps;
    if (ps->tls != NULL) {
        /* The acceptor's certificate must name the node this one dials. */
        c->tls = dsq_tls_new_client(ps->tls, ps->nodes[c->node].id);
        if (c->tls == NULL || dsq_tls_start(c->tls, &c->cout) != 0) {
            conn_close(c, "TLS: out of memory");
            return;
        }
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        conn_close(c, uv_strerror(rc));
        return;
    }
    send_hello(c); /* (with TLS, held until its handshake is done) */
}

static void dial(dsq_peers *ps, size_t node)
{
    plink *l = &ps->links[node];
    pconn *c = conn_new(ps, true, node);
    if (c == NULL) {
        l->next_dial_ms = dsq_now_ms() + DIAL_MAX_MS;
        return;
    }
    l->dialing = c;
    c->state = C_CONNECTING;
    snprintf(c->addr, sizeof c->addr, "%s", ps->nodes[node].addr_text);
    c->connect.data = c;
    /* From the address this node's links listen on (any port), when it is
     * one address and of the peer's family: on a host with several, the
     * links leave from the one the others know. */
    struct sockaddr_storage from = ps->nodes[ps->cfg.self].addr;
    int rc = 0;
    if (from.ss_family == ps->nodes[node].addr.ss_family && from.ss_family == AF_INET &&
        ((struct sockaddr_in *)&from)->sin_addr.s_addr != htonl(INADDR_ANY)) {
        ((struct sockaddr_in *)&from)->sin_port = 0;
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&from, 0);
    } else if (from.ss_family == ps->nodes[node].addr.ss_family && from.ss_family == AF_INET6 &&
               !IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&from)->sin6_addr)) {
        ((struct sockaddr_in6 *)&from)->sin6_port = 0;
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&from, 0);
    }
    if (rc == 0)
        rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&ps->nodes[node].addr, on_connected);
    if (rc < 0)
        conn_close(c, uv_strerror(rc));
}

static void on_accept(uv_stream_t *s, int status)
{
    dsq_peers *ps = s->data;
    if (status < 0 || ps->stopping)
        return;
    pconn *c = conn_new(ps, false, SIZE_MAX);
    if (c == NULL)
        return;
    c->state = C_WAIT_HELLO;
    if (uv_accept(s, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, "cannot accept");
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char ip[48] = "?";
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)&ss, ip, sizeof ip);
        else
            uv_ip4_name((const struct sockaddr_in *)&ss, ip, sizeof ip);
        snprintf(c->addr, sizeof c->addr, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
                 (unsigned)ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                          : ((struct sockaddr_in *)&ss)->sin_port));
    }
    if (ps->tls != NULL && (c->tls = dsq_tls_new(ps->tls)) == NULL) {
        conn_close(c, "TLS: out of memory");
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c, "cannot accept");
}

/* ---- the timer: heartbeats, dead links, redials, slow handshakes -------------------------------- */

static bool dials(const dsq_peers *ps, size_t node)
{
    return strcmp(ps->nodes[ps->cfg.self].id, ps->nodes[node].id) < 0;
}

static void on_tick(uv_timer_t *t)
{
    dsq_peers *ps = t->data;
    uint64_t now = dsq_now_ms();
    pconn *c, *next;
    dsq_list_foreach_safe(c, next, &ps->conns, link) {
        if (c->state == C_UP && now - c->last_rx_ms >= ps->cfg.dead_after_ms)
            conn_close(c, "nothing heard within cluster.peer_timeout");
        else if (c->state != C_UP && now - c->since_ms >= HANDSHAKE_MS)
            conn_close(c, "no handshake in time");
    }
    for (size_t i = 0; i < ps->nnodes; i++) {
        plink *l = &ps->links[i];
        if (i == ps->cfg.self || l->gone)
            continue;
        if (l->up != NULL && now - l->last_beat_ms >= ps->cfg.heartbeat_ms) {
            l->last_beat_ms = now;
            frame(l->up, T_BEAT, NULL, 0, NULL, 0);
        }
        if (l->up == NULL && l->dialing == NULL && dials(ps, i) && now >= l->next_dial_ms)
            dial(ps, i);
    }
}

/* ---- the public face -------------------------------------------------------------------------- */

int dsq_peers_start(const dsq_peers_cfg *cfg, dsq_peers **out, char *err, size_t errlen)
{
    if (cfg->nnodes > DSQ_NODES_MAX || cfg->self >= cfg->nnodes || strlen(cfg->secret) > DSQ_SECRET_MAX) {
        snprintf(err, errlen, "bad cluster settings");
        return -1;
    }
    dsq_peers *ps = calloc(1, sizeof *ps);
    if (ps == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ps->cfg = *cfg;
    ps->cfg.tls_cert = ps->cfg.tls_key = ps->cfg.tls_ca = NULL; /* (borrowed: read here, not kept) */
    ps->ids = cfg->ids;
    if (ps->ids == NULL && (ps->ids = ps->own_ids = dsq_nodeset_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(ps);
        return -1;
    }
    for (size_t i = 0; i < cfg->nnodes; i++) {
        uint32_t index;
        if (dsq_nodeset_intern(ps->ids, cfg->nodes[i].id, &index) != 0 || index != i) {
            snprintf(err, errlen, "node %s does not have index %zu in the node set", cfg->nodes[i].id, i);
            dsq_nodeset_free(ps->own_ids);
            free(ps);
            return -1;
        }
    }
    memcpy(ps->nodes, cfg->nodes, cfg->nnodes * sizeof *ps->nodes);
    ps->nnodes = cfg->nnodes;
    ps->cfg.nodes = ps->nodes;
    cover(ps, dsq_nodeset_count(ps->ids));
    snprintf(ps->secret, sizeof ps->secret, "%s", cfg->secret);
    ps->cfg.secret = ps->secret;
    for (size_t i = 0; i < cfg->nnodes; i++)
        ps->links[i].backoff_ms = DIAL_MIN_MS;
    const dsq_node *self = &ps->nodes[cfg->self];
    if (cfg->tls_cert != NULL) {
        char why[512];
        if ((ps->tls = dsq_tls_ctx_new_mutual(cfg->tls_cert, cfg->tls_key, cfg->tls_ca, why, sizeof why)) == NULL ||
            dsq_tls_ctx_check_own(ps->tls, self->id, why, sizeof why) != 0) {
            snprintf(err, errlen, "cluster.%s", why);
            ps_free(ps);
            return -1;
        }
    }
    int rc = uv_tcp_init(cfg->loop, &ps->listener);
    if (rc == 0) {
        ps->listener.data = ps;
        rc = uv_tcp_bind(&ps->listener, (const struct sockaddr *)&self->addr, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&ps->listener, 64, on_accept);
        if (rc != 0) {
            snprintf(err, errlen, "cannot listen for the other nodes on %s (cluster.peers, node %s): %s",
                     self->addr_text, self->id, uv_strerror(rc));
            uv_close((uv_handle_t *)&ps->listener, NULL);
            /* (the handle's memory goes with ps: run the loop once so libuv is done with it) */
            uv_run(cfg->loop, UV_RUN_NOWAIT);
            ps_free(ps);
            return -1;
        }
    } else {
        snprintf(err, errlen, "cannot listen for the other nodes: %s", uv_strerror(rc));
        ps_free(ps);
        return -1;
    }
    uv_timer_init(cfg->loop, &ps->timer);
    ps->timer.data = ps;
    uint64_t every = cfg->heartbeat_ms / 2 < 20 ? 20 : cfg->heartbeat_ms / 2;
    if (every > 100)
        every = 100; /* redials and handshake limits are checked at least this often */
    uv_timer_start(&ps->timer, on_tick, 0, every);
    uv_unref((uv_handle_t *)&ps->timer);
    uv_unref((uv_handle_t *)&ps->listener);
    DSQ_INFO("peers_listening", "node=%s address=%s nodes=%zu tls=%s", self->id, self->addr_text, cfg->nnodes,
             ps->tls != NULL ? "yes" : "no");
    *out = ps;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    dsq_peers *ps = h->data;
    ps->closing--;
    maybe_done(ps);
}

void dsq_peers_stop(dsq_peers *ps, void (*done)(void *ud), void *ud)
{
    ps->stopping = true;
    ps->done = done;
    ps->done_ud = ud;
    pconn *c, *next;
    dsq_list_foreach_safe(c, next, &ps->conns, link)
        conn_close(c, NULL);
    ps->closing += 2;
    uv_timer_stop(&ps->timer);
    uv_close((uv_handle_t *)&ps->timer, on_handle_closed);
    uv_close((uv_handle_t *)&ps->listener, on_handle_closed);
}

bool dsq_peer_up(const dsq_peers *ps, size_t node)
{
    return node < ps->nnodes && ps->links[node].up != NULL;
}

int dsq_peer_send(dsq_peers *ps, size_t node, uint8_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    if (!dsq_peer_up(ps, node) || type < DSQ_PEER_MSG_MIN)
        return -1;
    pconn *c = ps->links[node].up;
    if (frame(c, type, a, alen, b, blen) != 0)
        return -1;
    if (queued(c) >= ps->cfg.send_limit)
        c->over = true;
    return 0;
}

size_t dsq_peer_queued(const dsq_peers *ps, size_t node)
{
    const pconn *c = node < ps->nnodes ? ps->links[node].up : NULL;
    return c ? queued(c) : 0;
}

void dsq_peers_stats(const dsq_peers *ps, dsq_peer_stats *out) { *out = ps->stats; }

/* ---- nodes added and removed at run time ------------------------------------------------------ */

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

/* Close every connection to or from `node`, whatever its state; the one
 * that is up last, so that the on_link(false) its closing calls runs
 * after the walk over the list. */
static void close_node(dsq_peers *ps, size_t node, const char *why)
{
    pconn *up = ps->links[node].up, *c, *next;
    dsq_list_foreach_safe(c, next, &ps->conns, link) {
        if (c->node == node && c != up)
            conn_close(c, why);
    }
    if (up != NULL)
        conn_close(up, why);
}

int dsq_peers_add(dsq_peers *ps, const dsq_node *node, size_t *index, char *err, size_t errlen)
{
    if (ps->stopping) {
        snprintf(err, errlen, "the links are stopping");
        return -1;
    }
    if (node->id[0] == '\0' || memchr(node->id, '\0', sizeof node->id) == NULL ||
        memchr(node->addr_text, '\0', sizeof node->addr_text) == NULL ||
        (node->addr.ss_family != AF_INET && node->addr.ss_family != AF_INET6)) {
        snprintf(err, errlen, "not a node (an id and an IP address, as dsq_node_parse gives)");
        return -1;
    }
    uint32_t ix;
    if (!dsq_node_id_valid(node->id, strnlen(node->id, sizeof node->id))) {
        snprintf(err, errlen, "'%s' is not a node id", node->id);
        return -1;
    }
    if (dsq_nodeset_intern(ps->ids, node->id, &ix) != 0) {
        snprintf(err, errlen,
                 "cannot add node %s: %d nodes have an index already (removed ones too: an index is "
                 "never given to another node), the most there can be",
                 node->id, DSQ_NODES_MAX);
        return -1;
    }
    cover(ps, (size_t)ix + 1);
    size_t i = ix;
    if (i == ps->cfg.self) {
        if (!same_addr(&node->addr, &ps->nodes[i].addr)) {
            snprintf(err, errlen, "node %s is this one, which listens on %s, not %s", node->id,
                     ps->nodes[i].addr_text, node->addr_text);
            return -1;
        }
        *index = i;
        return 0;
    }
    if (ps->links[i].absent) {
        ps->nodes[i] = *node;
        ps->links[i] = (plink){.backoff_ms = DIAL_MIN_MS};
        DSQ_INFO("peer_added", "node=%s address=%s role=%s", node->id, node->addr_text,
                 dials(ps, i) ? "dialer" : "acceptor");
        *index = i;
        return 0;
    }
    plink *l = &ps->links[i];
    bool moved = !same_addr(&node->addr, &ps->nodes[i].addr);
    if (moved) {
        DSQ_INFO("peer_moved", "node=%s from=%s to=%s", node->id, ps->nodes[i].addr_text, node->addr_text);
        ps->nodes[i] = *node;
        close_node(ps, i, "the node moved to another address");
    } else {
        /* (the same place, perhaps written otherwise: kept for the log) */
        snprintf(ps->nodes[i].addr_text, sizeof ps->nodes[i].addr_text, "%s", node->addr_text);
    }
    if (moved || l->gone) {
        if (l->gone)
            DSQ_INFO("peer_added", "node=%s address=%s role=%s again=yes", node->id, node->addr_text,
                     dials(ps, i) ? "dialer" : "acceptor");
        l->gone = false;
        l->backoff_ms = DIAL_MIN_MS; /* (dialed at the next tick) */
        l->next_dial_ms = 0;
    }
    *index = i;
    return 0;
}

int dsq_peers_remove(dsq_peers *ps, size_t node)
{
    if (node >= ps->nnodes || node == ps->cfg.self)
        return -1;
    plink *l = &ps->links[node];
    if (l->gone)
        return 0;
    l->gone = true; /* first: dsq_peer_known is false in the on_link(false) below */
    DSQ_INFO("peer_removed", "node=%s address=%s", ps->nodes[node].id, ps->nodes[node].addr_text);
    close_node(ps, node, "the node was removed");
    return 0;
}

size_t dsq_peers_count(const dsq_peers *ps) { return ps->nnodes; }

bool dsq_peer_known(const dsq_peers *ps, size_t node) { return node < ps->nnodes && !ps->links[node].gone; }

const dsq_node *dsq_peers_node(const dsq_peers *ps, size_t node)
{
    return node < ps->nnodes ? &ps->nodes[node] : NULL;
}

size_t dsq_peers_find(const dsq_peers *ps, const char *id) { return node_by_id(ps, id); }
