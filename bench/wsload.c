/*
 * bench/wsload.c — a WebSocket JSON-RPC load generator for bench/point_select.
 *
 *   wsload -p PORT [-H HOST] [-P PATH] [-c CONNS] [-d DEPTH] [-t SECONDS]
 *          [-k KEYS] [-m TEMPLATE] [-w TEMPLATE -W PERCENT] [-B DBS] [-D DBS] [-T TIMEOUT] [-C]
 *
 * Opens CONNS WebSocket connections (its own handshake: a fixed
 * Sec-WebSocket-Key, the 101 and its Sec-WebSocket-Accept checked), and once
 * every one is open keeps DEPTH requests in flight on each for SECONDS.
 * Every request is TEMPLATE with {{id}} replaced by a fresh request id and
 * {{key}} by a random integer in 1..KEYS, sent as one masked text frame;
 * with -w, PERCENT of the requests (chosen at random) use the second
 * template instead (a read/write mix); with -B N, {{dbn}} becomes a random
 * integer in 0..N-1 (the number in a database's name, for /v1/rpc).
 * Replies may come in any order; each is matched to its request by the
 * first "id": in it, and one that contains "error": counts as an error.
 * With -C it speaks Cap'n Web instead: each request is the template as a
 * "push" (its id is the connection's push count, so {{id}} is not needed)
 * followed by a "pull"; the "resolve" (or "reject": an error) names it, and
 * wsload then sends the "release" the official client would.
 * At the end it prints one line:
 *
 *   requests=N errors=E conn_lost=L seconds=S rps=R mean_us=.. p50_us=..
 *   p90_us=.. p99_us=.. p999_us=.. max_us=.. cpu_user_s=.. cpu_sys_s=..
 *
 * (one line; wrapped here), where requests counts every reply received in
 * the window, latencies are from a log-linear histogram (under 1 % error)
 * and the CPU figures are this process's own over the window, so a
 * saturated client shows. Exit status: 0, or 1 when a connection or its
 * handshake failed, a connection was lost, or no reply arrived; 2 for a
 * usage error.
 *
 * One thread, one libuv loop; wslay frames and parses. Divisions: options
 * and the request template; the latency histogram; connections (connect,
 * handshake, wslay callbacks, writes); the run (start, stop, report).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, strcasestr */
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <uv.h>
#include <wslay/wslay.h>

/* RFC 6455's sample key, and the accept value it must produce. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define MAX_DEPTH 4096           /* requests in flight on one connection */
#define MAX_CONNS 10000          /* connections */
#define SLOT_BITS 12             /* a request id's low bits: its slot */
#define READ_BUF (64 * 1024)     /* bytes read per read callback */
#define OUT_BUF (64 * 1024)      /* bytes buffered per write */
#define HS_BUF 4096              /* the handshake response's head */
#define MSG_MAX 8192             /* one request message */
#define MAX_SEGS 32              /* pieces of the template */

/* ---- Options and the request template ---- */

enum seg_kind { SEG_TEXT, SEG_ID, SEG_KEY, SEG_DBN };

struct seg {
    enum seg_kind kind; /* literal text, or a placeholder */
    const char *text;   /* SEG_TEXT: the text (inside the template) */
    size_t len;         /* SEG_TEXT: its length */
};

struct options {
    const char *host;     /* server address or name */
    int port;             /* server port */
    const char *path;     /* request target of the upgrade */
    int dbs;              /* {{db}} in path: connections spread over d0..d(dbs-1) */
    int conns;            /* connections */
    int depth;            /* requests in flight per connection */
    double seconds;       /* length of the measured window */
    uint64_t keys;        /* {{key}} is in 1..keys */
    const char *tmpl;     /* the request template */
    const char *wtmpl;    /* -w: a second template (writes), sent for wpct % of requests */
    uint64_t dbn;         /* -B: {{dbn}} in a template is random in 0..dbn-1 */
    int wpct;
    double timeout;       /* seconds allowed for connecting and handshakes */
    bool capnweb;         /* -C: Cap'n Web push/pull/release instead of JSON-RPC */
};

static struct options opt = {
    .host = "127.0.0.1",
    .port = 0,
    .path = "/v1/db/bench/rpc",
    .dbs = 1,
    .conns = 1,
    .depth = 1,
    .seconds = 10,
    .keys = 100000,
    .tmpl = "{\"id\":{{id}},\"method\":\"query\",\"params\":"
            "{\"sql\":\"SELECT v FROM kv WHERE k = ?\",\"params\":[{{key}}]}}",
    .timeout = 5,
};

struct tmpl {
    struct seg segs[MAX_SEGS];
    int nsegs;
};

static struct tmpl reads, writes; /* opt.tmpl, and -w's */

/*
 * Splits opt.tmpl into literal pieces and the {{id}} / {{key}}
 * placeholders. Returns 0, or -1 when the template has too many pieces or
 * no {{id}} (replies could not be matched).
 */
static int template_compile(const char *p, struct tmpl *t)
{
    bool has_id = false;
    struct seg *segs = t->segs;
    int nsegs = 0;

    while (*p != '\0') {
        const char *id = strstr(p, "{{id}}");
        const char *key = strstr(p, "{{key}}");
        const char *dbn = strstr(p, "{{dbn}}");
        const char *next = id;
        if (key != NULL && (next == NULL || key < next))
            next = key;
        if (dbn != NULL && (next == NULL || dbn < next))
            next = dbn;
        if (nsegs + 2 > MAX_SEGS)
            return -1;
        if (next == NULL) {
            segs[nsegs++] = (struct seg){SEG_TEXT, p, strlen(p)};
            break;
        }
        if (next > p)
            segs[nsegs++] = (struct seg){SEG_TEXT, p, (size_t)(next - p)};
        if (next == id) {
            segs[nsegs++] = (struct seg){SEG_ID, NULL, 0};
            has_id = true;
            p = next + 6;
        } else {
            segs[nsegs++] = (struct seg){next == key ? SEG_KEY : SEG_DBN, NULL, 0};
            p = next + 7;
        }
    }
    t->nsegs = nsegs;
    return has_id || opt.capnweb ? 0 : -1;
}

/*
 * Writes the decimal digits of v at out (room for 20 assumed); returns how
 * many were written.
 */
static size_t put_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 && n < sizeof tmp);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/*
 * Builds one request from the template into out (MSG_MAX bytes) with the
 * given id and key. Returns its length, or 0 if it does not fit.
 */
static size_t template_render(const struct tmpl *t, char *out, uint64_t id, uint64_t key, uint64_t dbn)
{
    size_t n = 0;
    const struct seg *segs = t->segs;

    for (int i = 0; i < t->nsegs; i++) {
        if (segs[i].kind == SEG_TEXT) {
            if (n + segs[i].len > MSG_MAX)
                return 0;
            memcpy(out + n, segs[i].text, segs[i].len);
            n += segs[i].len;
        } else {
            if (n + 20 > MSG_MAX)
                return 0;
            n += put_u64(out + n, segs[i].kind == SEG_ID ? id : segs[i].kind == SEG_KEY ? key : dbn);
        }
    }
    return n;
}

/* ---- The latency histogram ----
 *
 * Log-linear buckets over nanoseconds, HDR-style: values below 128 have a
 * bucket each; above, every power of two is split into 64 buckets, so a
 * bucket is at most 1/64 of its value wide. 64 * 64 buckets reach past
 * 2^62 ns; larger values land in the last one.
 */

#define HIST_BUCKETS (64 * 64)

static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count;
static uint64_t hist_sum_ns;
static uint64_t hist_max_ns;

/* Returns the bucket index of a latency of ns nanoseconds. */
static unsigned hist_index(uint64_t ns)
{
    if (ns < 128)
        return (unsigned)ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* >= 7 */
    unsigned shift = e - 6;
    unsigned idx = (shift + 1) * 64 + (unsigned)(ns >> shift) - 64;
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Returns the middle of bucket idx, in nanoseconds. */
static double hist_value(unsigned idx)
{
    if (idx < 128)
        return idx;
    unsigned shift = idx / 64 - 1;
    double low = (double)((uint64_t)(idx % 64 + 64) << shift);
    return low + (double)((uint64_t)1 << shift) / 2;
}

/* Records one latency. */
static void hist_record(uint64_t ns)
{
    hist[hist_index(ns)]++;
    hist_count++;
    hist_sum_ns += ns;
    if (ns > hist_max_ns)
        hist_max_ns = ns;
}

/* Returns the q-quantile (0 < q <= 1) in microseconds; 0 when empty. */
static double hist_quantile_us(double q)
{
    if (hist_count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)hist_count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            double v = hist_value(i);
            if (v > (double)hist_max_ns)
                v = (double)hist_max_ns;
            return v / 1000.0;
        }
    }
    return (double)hist_max_ns / 1000.0;
}

/* ---- Connections ---- */

/* idle (not started) → connecting → handshake → open → closed; any → closed */
enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSED };

struct slot {
    uint64_t id;      /* the request id using it; 0 when free */
    uint64_t sent_ns; /* when the request was queued */
};

struct conn {
    uv_tcp_t tcp;               /* the socket (embedded; freed with conn) */
    uv_connect_t connect_req;   /* connect request */
    uv_write_t write_req;       /* the one write in flight */
    enum conn_state state;      /* where it is */
    int index;                  /* position in conns[] */
    wslay_event_context_ptr ws; /* owned: wslay's session, once open */
    char hs[HS_BUF];            /* the handshake response head so far */
    size_t hs_len;              /* bytes in hs */
    char *rbuf;                 /* owned: read buffer (READ_BUF) */
    const uint8_t *in;          /* unread bytes handed to wslay */
    size_t in_len;              /* how many */
    char *out[2];               /* owned: write buffers (OUT_BUF each) */
    size_t out_len[2];          /* bytes in each */
    size_t out_off;             /* written[] bytes already taken by try_write */
    int fill;                   /* index of the buffer being filled */
    bool writing;               /* out[1 - fill] is in a uv_write */
    struct slot *slots;         /* owned: depth request slots */
    uint32_t *free_slots;       /* owned: stack of free slot indexes */
    int nfree;                  /* entries in free_slots */
    uint64_t seq;               /* requests queued so far */
    uint64_t pushes;            /* -C: pushes sent (the id of the last) */
    uint64_t rng;               /* xorshift state for keys and masks */
};

static uv_loop_t *loop;
static struct conn *conns;
static uv_timer_t run_timer;      /* ends the window, or the handshakes' wait */
static int nopen;                 /* connections through the handshake */
static bool running;              /* the window is open */
static bool stopping;             /* the run is over; closing */
static bool failed;               /* a connection or handshake failed */
static uint64_t t_start_ns, t_end_ns;
static struct rusage ru_start, ru_end;
static uint64_t n_replies, n_errors, n_stray;
static int n_lost;
static char msgbuf[MSG_MAX];

static void conn_fail(struct conn *c, const char *what, const char *detail);
static void conn_flush(struct conn *c);
static void run_begin(void);
static void run_stop(void);

/* Returns the next value of the xorshift64* generator in *s. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* -C: queues ["TYPE", id] (pull) or ["release", id, 1]. */
static void conn_queue_control(struct conn *c, const char *type, uint64_t id)
{
    char text[64];
    int n = strcmp(type, "release") == 0
                ? snprintf(text, sizeof text, "[\"release\",%llu,1]", (unsigned long long)id)
                : snprintf(text, sizeof text, "[\"%s\",%llu]", type, (unsigned long long)id);
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, (size_t)n};
    if (wslay_event_queue_msg(c->ws, &m) != 0)
        conn_fail(c, "queue", "wslay refused");
}

/*
 * Queues one request on an open connection: takes a free slot, renders the
 * template with an id whose low SLOT_BITS name the slot, and hands the text
 * frame to wslay. Does nothing when no slot is free or the run is over.
 */
static void conn_queue_request(struct conn *c, uint64_t now_ns)
{
    if (!running || c->state != C_OPEN || c->nfree == 0)
        return;
    uint32_t slot = c->free_slots[--c->nfree];
    uint64_t id = opt.capnweb ? ++c->pushes : (++c->seq << SLOT_BITS) | slot;
    uint64_t key = opt.keys > 0 ? rng_next(&c->rng) % opt.keys + 1 : 0;
    bool write = opt.wtmpl != NULL && (int)(rng_next(&c->rng) % 100) < opt.wpct;
    uint64_t dbn = opt.dbn > 0 ? rng_next(&c->rng) % opt.dbn : 0;
    size_t len = template_render(write ? &writes : &reads, msgbuf, id, key, dbn);
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)msgbuf, len};

    c->slots[slot].id = id;
    c->slots[slot].sent_ns = now_ns;
    if (len == 0 || wslay_event_queue_msg(c->ws, &m) != 0) {
        conn_fail(c, "queue", len == 0 ? "request larger than 8K" : "wslay refused");
        return;
    }
    if (opt.capnweb)
        conn_queue_control(c, "pull", id);
}

/*
 * Handles one reply message: finds its id, frees the request's slot,
 * records the latency and counts it (an error if it holds "error":).
 * Messages without a known id count as stray errors.
 */
static void conn_on_capnweb(struct conn *c, const uint8_t *msg, size_t len, uint64_t now_ns);

static void conn_on_reply(struct conn *c, const uint8_t *msg, size_t len, uint64_t now_ns)
{
    if (opt.capnweb) {
        conn_on_capnweb(c, msg, len, now_ns);
        return;
    }
    const uint8_t *p = memmem(msg, len, "\"id\":", 5);
    uint64_t id = 0;

    if (p != NULL) {
        const uint8_t *end = msg + len;
        p += 5;
        while (p < end && *p == ' ')
            p++;
        for (int i = 0; p < end && *p >= '0' && *p <= '9' && i < 19; p++, i++)
            id = id * 10 + (uint64_t)(*p - '0');
    }
    uint32_t slot = (uint32_t)(id & ((1u << SLOT_BITS) - 1));
    if (id == 0 || slot >= (uint32_t)opt.depth || c->slots[slot].id != id) {
        if (n_stray++ == 0)
            fprintf(stderr, "wsload: reply with an unknown id: %.*s\n",
                    (int)(len > 200 ? 200 : len), (const char *)msg);
        n_errors++;
        return;
    }
    c->slots[slot].id = 0;
    c->free_slots[c->nfree++] = slot;
    if (!running)
        return;
    hist_record(now_ns - c->slots[slot].sent_ns);
    n_replies++;
    if (memmem(msg, len, "\"error\":", 8) != NULL) {
        if (n_errors++ == 0)
            fprintf(stderr, "wsload: first error reply: %.*s\n",
                    (int)(len > 300 ? 300 : len), (const char *)msg);
    }
}

/*
 * -C: one message from the server: ["resolve", id, ...] or ["reject", id,
 * ...] settles the request with that push id (found by a scan of the
 * slots), which is then released; anything else counts as an error.
 */
static void conn_on_capnweb(struct conn *c, const uint8_t *msg, size_t len, uint64_t now_ns)
{
    bool reject = len > 10 && memcmp(msg, "[\"reject\",", 10) == 0;
    bool resolve = len > 11 && memcmp(msg, "[\"resolve\",", 11) == 0;
    uint64_t id = 0;
    int slot = -1;
    if (reject || resolve) {
        const uint8_t *p = msg + (reject ? 10 : 11), *end = msg + len;
        for (int i = 0; p < end && *p >= '0' && *p <= '9' && i < 19; p++, i++)
            id = id * 10 + (uint64_t)(*p - '0');
        for (int k = 0; k < opt.depth && slot < 0; k++)
            if (c->slots[k].id == id && id != 0)
                slot = k;
    }
    if (slot < 0) {
        if (n_stray++ == 0)
            fprintf(stderr, "wsload: unexpected message: %.*s\n", (int)(len > 200 ? 200 : len),
                    (const char *)msg);
        n_errors++;
        return;
    }
    c->slots[slot].id = 0;
    c->free_slots[c->nfree++] = (uint32_t)slot;
    conn_queue_control(c, "release", id);
    if (!running)
        return;
    hist_record(now_ns - c->slots[slot].sent_ns);
    n_replies++;
    if (reject && n_errors++ == 0)
        fprintf(stderr, "wsload: first rejection: %.*s\n", (int)(len > 300 ? 300 : len),
                (const char *)msg);
}

/* wslay: hands it the bytes of the current read, or says "would block". */
static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                          int flags, void *user)
{
    struct conn *c = user;
    (void)flags;
    if (c->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < c->in_len ? len : c->in_len;
    memcpy(buf, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (ssize_t)n;
}

/*
 * wslay: copies frame bytes into the buffer being filled; "would block"
 * when it is full (the write completion resumes sending).
 */
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *user)
{
    struct conn *c = user;
    (void)flags;
    size_t room = OUT_BUF - c->out_len[c->fill];
    if (room == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < room ? len : room;
    memcpy(c->out[c->fill] + c->out_len[c->fill], data, n);
    c->out_len[c->fill] += n;
    return (ssize_t)n;
}

/* wslay: fills a masking key from the connection's generator. */
static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    struct conn *c = user;
    (void)ctx;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = rng_next(&c->rng);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &r, n);
    }
    return 0;
}

/* Set by the read callback for the replies it hands to wslay. */
static uint64_t read_now_ns;

/*
 * wslay: a whole message arrived. A text message is a reply; a close from
 * the server loses the connection (wslay answers it).
 */
static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct conn *c = user;
    (void)ctx;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        conn_on_reply(c, arg->msg, arg->msg_length, read_now_ns);
        conn_queue_request(c, read_now_ns);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE && !stopping) {
        char detail[64];
        snprintf(detail, sizeof detail, "server closed the WebSocket (%u)", arg->status_code);
        conn_fail(c, "session", detail);
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .genmask_callback = ws_genmask_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

/* libuv: the connection's handle is closed; nothing left to do (freed at exit). */
static void conn_closed_cb(uv_handle_t *h)
{
    (void)h;
}

/*
 * Closes a connection: its socket, if uv_tcp_init set it up, once;
 * in-flight writes are cancelled.
 */
static void conn_close(struct conn *c)
{
    c->state = C_CLOSED;
    if (c->tcp.loop != NULL && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

/*
 * A connection failed: says so on stderr (what and why), closes it, and
 * marks the run failed. Before the window opens this ends the run; during
 * it the others go on and the loss is reported, until none is left.
 */
static void conn_fail(struct conn *c, const char *what, const char *detail)
{
    if (c->state == C_CLOSED || c->state == C_IDLE || stopping)
        return;
    bool was_open = c->state == C_OPEN;
    fprintf(stderr, "wsload: connection %d: %s: %s\n", c->index, what, detail);
    conn_close(c);
    failed = true;
    if (was_open && running && ++n_lost < opt.conns)
        return;
    run_stop();
}

/* Hands wslay's queued frames to the socket, if the connection is open. */
static void send_pending(struct conn *c)
{
    if (c->state != C_OPEN)
        return;
    if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
        conn_fail(c, "session", "wslay send failed");
        return;
    }
    conn_flush(c);
}

/*
 * libuv: a buffered write finished. Frees its buffer, lets wslay send what
 * waited for room, and writes the next buffer.
 */
static void conn_write_cb(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_fail(c, "write", uv_strerror(status));
        return;
    }
    c->writing = false;
    c->out_len[1 - c->fill] = 0;
    send_pending(c);
}

/*
 * Writes what has been buffered: try_write first (the usual case writes it
 * all), and a uv_write for any rest, filling the other buffer meanwhile.
 */
static void conn_flush(struct conn *c)
{
    if (c->writing || c->state == C_CLOSED)
        return;
    size_t len = c->out_len[c->fill];
    if (len == 0)
        return;
    uv_buf_t b = uv_buf_init(c->out[c->fill], (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) {
        c->out_len[c->fill] = 0;
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_fail(c, "write", uv_strerror(n));
        return;
    }
    if (n < 0)
        n = 0;
    b = uv_buf_init(c->out[c->fill] + n, (unsigned)(len - (size_t)n));
    c->write_req.data = c;
    int rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rv != 0) {
        conn_fail(c, "write", uv_strerror(rv));
        return;
    }
    c->writing = true;
    c->fill = 1 - c->fill;
    c->out_len[c->fill] = 0;
}

/* libuv: every read lands in the connection's own buffer. */
static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->rbuf, READ_BUF);
}

/*
 * Feeds received bytes to wslay (which calls ws_msg_cb per reply, and so
 * queues the next requests), then sends and flushes in one go.
 */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    c->in = (const uint8_t *)data;
    c->in_len = len;
    read_now_ns = uv_hrtime();
    if (wslay_event_recv(c->ws) != 0) {
        conn_fail(c, "session", "WebSocket protocol error from the server");
        return;
    }
    send_pending(c);
}

/*
 * Checks the handshake response head in c->hs (complete, ending at
 * head_len): a 101 with the expected Sec-WebSocket-Accept. Returns NULL
 * when good, or what is wrong.
 */
static const char *handshake_check(struct conn *c, size_t head_len)
{
    c->hs[head_len - 1] = '\0'; /* the last '\n' of "\r\n\r\n" */
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0)
        return "no 101 Switching Protocols";
    const char *a = strcasestr(c->hs, "\r\nSec-WebSocket-Accept:");
    if (a == NULL)
        return "no Sec-WebSocket-Accept";
    a += strlen("\r\nSec-WebSocket-Accept:");
    while (*a == ' ' || *a == '\t')
        a++;
    if (strncmp(a, WS_ACCEPT, strlen(WS_ACCEPT)) != 0)
        return "wrong Sec-WebSocket-Accept";
    return NULL;
}

/*
 * libuv: bytes arrived. During the handshake they gather until the end of
 * the response head, which is checked; what follows it goes to wslay.
 */
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread == 0 || c->state == C_CLOSED)
        return;
    if (nread < 0) {
        conn_fail(c, "read", nread == UV_EOF ? "the server closed the connection"
                                             : uv_strerror((int)nread));
        return;
    }
    if (c->state == C_OPEN) {
        conn_feed(c, buf->base, (size_t)nread);
        return;
    }
    /* C_HANDSHAKE */
    size_t room = HS_BUF - 1 - c->hs_len;
    size_t n = (size_t)nread < room ? (size_t)nread : room;
    memcpy(c->hs + c->hs_len, buf->base, n);
    c->hs_len += n;
    c->hs[c->hs_len] = '\0';
    char *end = strstr(c->hs, "\r\n\r\n");
    if (end == NULL) {
        if (c->hs_len == HS_BUF - 1)
            conn_fail(c, "handshake", "response head too long");
        return;
    }
    size_t head_len = (size_t)(end - c->hs) + 4;
    const char *bad = handshake_check(c, head_len);
    if (bad != NULL) {
        char *eol = strstr(c->hs, "\r\n");
        if (eol != NULL)
            *eol = '\0';
        char detail[256];
        snprintf(detail, sizeof detail, "%s (got \"%.120s\")", bad, c->hs);
        conn_fail(c, "handshake", detail);
        return;
    }
    if (wslay_event_context_client_init(&c->ws, &ws_callbacks, c) != 0) {
        conn_fail(c, "handshake", "wslay init failed");
        return;
    }
    c->state = C_OPEN;
    /*
     * Bytes after the head are the first frames, if any. The head ended in
     * this read, so they all came in it: the last `after` bytes copied to
     * hs, and whatever did not fit in hs.
     */
    size_t after = c->hs_len - head_len;
    if (after > 0 || (size_t)nread > n)
        conn_feed(c, buf->base + (n - after), after + ((size_t)nread - n));
    if (c->state == C_OPEN && ++nopen == opt.conns)
        run_begin();
}

/* libuv: the TCP connection is up (or not); sends the upgrade request. */
static void conn_connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    static char head[1024];
    if (status < 0) {
        conn_fail(c, "connect", uv_strerror(status));
        return;
    }
    if (c->state == C_CLOSED)
        return;
    /* "{{db}}" in the path: connection i goes to database d<i mod -D>. */
    char path[512];
    const char *mark = strstr(opt.path, "{{db}}");
    if (mark != NULL)
        snprintf(path, sizeof path, "%.*sd%d%s", (int)(mark - opt.path), opt.path,
                 c->index % opt.dbs, mark + 6);
    else
        snprintf(path, sizeof path, "%s", opt.path);
    int len = snprintf(head, sizeof head,
                       "GET %s HTTP/1.1\r\n"
                       "Host: %s:%d\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " WS_KEY "\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "\r\n",
                       path, opt.host, opt.port);
    if (len <= 0 || (size_t)len >= sizeof head || (size_t)len > OUT_BUF) {
        conn_fail(c, "handshake", "request target too long");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = C_HANDSHAKE;
    memcpy(c->out[c->fill], head, (size_t)len);
    c->out_len[c->fill] = (size_t)len;
    int rv = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rv != 0) {
        conn_fail(c, "read", uv_strerror(rv));
        return;
    }
    conn_flush(c);
}

/*
 * Sets up conns[i] (buffers, slots) and starts connecting it to addr.
 * Returns 0, or -1 with a message on stderr.
 */
static int conn_start(int i, const struct sockaddr *addr)
{
    struct conn *c = &conns[i];
    c->index = i;
    c->state = C_CONNECTING;
    c->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ uv_hrtime();
    if (c->rng == 0)
        c->rng = 1;
    c->rbuf = malloc(READ_BUF);
    c->out[0] = malloc(OUT_BUF);
    c->out[1] = malloc(OUT_BUF);
    c->slots = calloc((size_t)opt.depth, sizeof *c->slots);
    c->free_slots = malloc((size_t)opt.depth * sizeof *c->free_slots);
    if (!c->rbuf || !c->out[0] || !c->out[1] || !c->slots || !c->free_slots) {
        fprintf(stderr, "wsload: out of memory\n");
        return -1;
    }
    for (int s = 0; s < opt.depth; s++)
        c->free_slots[s] = (uint32_t)(opt.depth - 1 - s);
    c->nfree = opt.depth;
    int rv = uv_tcp_init(loop, &c->tcp);
    if (rv == 0) {
        c->tcp.data = c;
        c->connect_req.data = c;
        rv = uv_tcp_connect(&c->connect_req, &c->tcp, addr, conn_connect_cb);
    }
    if (rv != 0) {
        fprintf(stderr, "wsload: connection %d: %s\n", i, uv_strerror(rv));
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Frees what conn_start allocated, after the loop has closed its handle. */
static void conn_free(struct conn *c)
{
    if (c->ws != NULL)
        wslay_event_context_free(c->ws);
    free(c->rbuf);
    free(c->out[0]);
    free(c->out[1]);
    free(c->slots);
    free(c->free_slots);
}

/* ---- The run ---- */

/* libuv: the window is over, or the handshakes took too long. */
static void run_timer_cb(uv_timer_t *t)
{
    (void)t;
    if (!running) {
        fprintf(stderr, "wsload: only %d of %d connections open after %.1f s\n", nopen,
                opt.conns, opt.timeout);
        failed = true;
    }
    run_stop();
}

/*
 * Every connection is open: opens the window (clock, CPU use, timer) and
 * fills every connection's pipeline.
 */
static void run_begin(void)
{
    running = true;
    uv_timer_stop(&run_timer);
    uv_update_time(loop);
    getrusage(RUSAGE_SELF, &ru_start);
    t_start_ns = uv_hrtime();
    uv_timer_start(&run_timer, run_timer_cb, (uint64_t)(opt.seconds * 1000.0 + 0.5), 0);
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        uint64_t now = uv_hrtime();
        for (int d = 0; d < opt.depth && c->state == C_OPEN; d++)
            conn_queue_request(c, now);
        if (c->state == C_OPEN && wslay_event_send(c->ws) != 0)
            conn_fail(c, "session", "wslay send failed");
        conn_flush(c);
    }
}

/*
 * Ends the run once: closes the window (clock, CPU use), then every
 * connection and the timer, so the loop runs dry.
 */
static void run_stop(void)
{
    if (stopping)
        return;
    if (running) {
        t_end_ns = uv_hrtime();
        getrusage(RUSAGE_SELF, &ru_end);
    }
    running = false;
    stopping = true;
    for (int i = 0; i < opt.conns; i++)
        conn_close(&conns[i]);
    uv_timer_stop(&run_timer);
    if (!uv_is_closing((uv_handle_t *)&run_timer))
        uv_close((uv_handle_t *)&run_timer, NULL);
}

/* Returns the seconds between two struct timevals. */
static double tv_diff(struct timeval a, struct timeval b)
{
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
}

/* Prints usage on stderr. */
static void usage(void)
{
    fprintf(stderr,
            "usage: wsload -p PORT [-H HOST] [-P PATH] [-c CONNS] [-d DEPTH] [-t SECONDS]\n"
            "              [-k KEYS] [-m TEMPLATE] [-T TIMEOUT]\n"
            "  -H HOST      server (127.0.0.1)\n"
            "  -p PORT      server port (required)\n"
            "  -P PATH      WebSocket path (/v1/db/bench/rpc); {{db}} in it becomes d0, d1, ...\n"
            "  -D DBS       ... for connection i: d(i mod DBS) (1)\n"
            "  -c CONNS     connections (1)\n"
            "  -d DEPTH     requests in flight per connection (1, at most %d)\n"
            "  -t SECONDS   measured duration (10)\n"
            "  -k KEYS      {{key}} is random in 1..KEYS (100000)\n"
            "  -m TEMPLATE  request text with {{id}} and {{key}}\n"
            "  -w TEMPLATE  a second request text, sent for -W PERCENT of the requests (a mix)\n"
            "  -B N         {{dbn}} in a template is random in 0..N-1 (a database name's number)\n"
            "               (default: a JSON-RPC query SELECT v FROM kv WHERE k = ?)\n"
            "  -T TIMEOUT   seconds to connect and hand-shake (5)\n"
            "  -C           speak Cap'n Web (push, pull, release) instead of JSON-RPC;\n"
            "               the default template becomes a push of the same query\n",
            MAX_DEPTH);
}

/*
 * Parses a number option into *out within [lo, hi]. Returns 0, or -1 with
 * a message.
 */
static int parse_num(const char *name, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "wsload: %s: %s is not a number in %g..%g\n", name, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Reads the command line into opt. Returns 0, or -1 after a message. */
static int parse_options(int argc, char **argv)
{
    int ch;
    double v;
    bool tmpl_given = false;
    while ((ch = getopt(argc, argv, "H:p:P:D:c:d:t:k:m:w:W:B:T:Ch")) != -1) {
        switch (ch) {
        case 'C': opt.capnweb = true; break;
        case 'H': opt.host = optarg; break;
        case 'P': opt.path = optarg; break;
        case 'm': opt.tmpl = optarg; tmpl_given = true; break;
        case 'w': opt.wtmpl = optarg; break;
        case 'W': opt.wpct = atoi(optarg); break;
        case 'B': opt.dbn = strtoull(optarg, NULL, 10); break;
        case 'p':
            if (parse_num("-p", optarg, 1, 65535, &v) != 0) return -1;
            opt.port = (int)v;
            break;
        case 'D':
            if (parse_num("-D", optarg, 1, MAX_CONNS, &v) != 0) return -1;
            opt.dbs = (int)v;
            break;
        case 'c':
            if (parse_num("-c", optarg, 1, MAX_CONNS, &v) != 0) return -1;
            opt.conns = (int)v;
            break;
        case 'd':
            if (parse_num("-d", optarg, 1, MAX_DEPTH, &v) != 0) return -1;
            opt.depth = (int)v;
            break;
        case 't':
            if (parse_num("-t", optarg, 0.1, 86400, &v) != 0) return -1;
            opt.seconds = v;
            break;
        case 'k':
            if (parse_num("-k", optarg, 1, 1e15, &v) != 0) return -1;
            opt.keys = (uint64_t)v;
            break;
        case 'T':
            if (parse_num("-T", optarg, 0.1, 3600, &v) != 0) return -1;
            opt.timeout = v;
            break;
        default:
            usage();
            return -1;
        }
    }
    if (optind != argc || opt.port == 0) {
        usage();
        return -1;
    }
    if (opt.capnweb && !tmpl_given)
        opt.tmpl = "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT v FROM kv WHERE k = ?\","
                   "\"params\":[[{{key}}]]}]]]";
    if (template_compile(opt.tmpl, &reads) != 0 || (opt.wtmpl && template_compile(opt.wtmpl, &writes) != 0)) {
        fprintf(stderr, "wsload: the template needs {{id}} (and at most %d pieces)\n", MAX_SEGS);
        return -1;
    }
    return 0;
}

/*
 * Resolves opt.host:opt.port into *ss. Returns 0, or -1 after a message.
 */
static int resolve(struct sockaddr_storage *ss)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", opt.port);
    int rv = getaddrinfo(opt.host, port, &hints, &res);
    if (rv != 0 || res == NULL) {
        fprintf(stderr, "wsload: %s: %s\n", opt.host, gai_strerror(rv));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_storage addr;

    if (parse_options(argc, argv) != 0)
        return 2;
    if (resolve(&addr) != 0)
        return 1;
    loop = uv_default_loop();
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (conns == NULL) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    uv_timer_init(loop, &run_timer);
    uv_timer_start(&run_timer, run_timer_cb, (uint64_t)(opt.timeout * 1000.0 + 0.5), 0);
    for (int i = 0; i < opt.conns; i++) {
        if (conn_start(i, (const struct sockaddr *)&addr) != 0) {
            failed = true;
            run_stop();
            break;
        }
    }
    /* Bounded: the timer ends the run, and run_stop closes every handle. */
    uv_run(loop, UV_RUN_DEFAULT);
    for (int i = 0; i < opt.conns; i++)
        conn_free(&conns[i]);
    free(conns);
    uv_loop_close(loop);

    double secs = t_end_ns > t_start_ns ? (double)(t_end_ns - t_start_ns) / 1e9 : 0;
    double user = t_end_ns ? tv_diff(ru_start.ru_utime, ru_end.ru_utime) : 0;
    double sys = t_end_ns ? tv_diff(ru_start.ru_stime, ru_end.ru_stime) : 0;
    printf("requests=%" PRIu64 " errors=%" PRIu64 " conn_lost=%d seconds=%.3f rps=%.1f"
           " mean_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f"
           " cpu_user_s=%.2f cpu_sys_s=%.2f\n",
           n_replies, n_errors, n_lost, secs, secs > 0 ? (double)n_replies / secs : 0,
           hist_count ? (double)hist_sum_ns / (double)hist_count / 1000.0 : 0,
           hist_quantile_us(0.50), hist_quantile_us(0.90), hist_quantile_us(0.99),
           hist_quantile_us(0.999), (double)hist_max_ns / 1000.0, user, sys);
    if (n_replies == 0)
        fprintf(stderr, "wsload: no replies\n");
    return failed || n_replies == 0 ? 1 : 0;
}
