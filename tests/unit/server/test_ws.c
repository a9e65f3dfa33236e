/* Unit tests: server/ws — the upgrade handshake and framing over wslay. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "server/ws.h"

/* ---- a fake peer ---------------------------------------------------------- */

typedef struct peer {
    dsq_buf out;          /* bytes the server wrote */
    size_t room;          /* bytes the sink takes before it is "full" */
    int nmsg;             /* messages delivered */
    bool last_binary;
    dsq_buf last;         /* the last message */
} peer;

static size_t sink_write(void *ud, const uint8_t *p, size_t n)
{
    peer *pe = ud;
    if (pe->room == 0)
        return 0;
    size_t take = n < pe->room ? n : pe->room;
    dsq_buf_append(&pe->out, p, take);
    if (pe->room != SIZE_MAX)
        pe->room -= take;
    return take;
}

static void sink_message(void *ud, bool binary, const uint8_t *p, size_t n)
{
    peer *pe = ud;
    pe->nmsg++;
    pe->last_binary = binary;
    dsq_buf_reset(&pe->last);
    dsq_buf_append(&pe->last, p, n);
}

static const dsq_ws_cb cb = {sink_write, sink_message, NULL};
static peer pe;
static dsq_ws *ws;

static void setup(void)
{
    memset(&pe, 0, sizeof pe);
    pe.room = SIZE_MAX;
    ws = dsq_ws_new(&cb, &pe, 100);
    cr_assert_not_null(ws);
}

static void teardown(void)
{
    dsq_ws_free(ws);
    dsq_buf_free(&pe.out);
    dsq_buf_free(&pe.last);
}

TestSuite(ws, .init = setup, .fini = teardown);

/* Build one frame as a client would (masked unless told otherwise). */
static size_t frame(uint8_t *buf, bool fin, int rsv, int opcode, bool mask, const void *payload,
                    size_t len)
{
    size_t o = 0;
    const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    buf[o++] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        buf[o++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        buf[o++] = m | 126;
        buf[o++] = (uint8_t)(len >> 8);
        buf[o++] = (uint8_t)len;
    } else {
        buf[o++] = m | 127;
        for (int i = 7; i >= 0; i--)
            buf[o++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(buf + o, key, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++)
        buf[o + i] = ((const uint8_t *)payload)[i] ^ (mask ? key[i % 4] : 0);
    return o + len;
}

/* The server's frames, parsed: opcode and payload of frame number `idx`. */
static bool server_frame(int idx, int *opcode, const uint8_t **payload, size_t *len)
{
    const uint8_t *p = (const uint8_t *)pe.out.data;
    size_t n = pe.out.len, o = 0;
    for (int i = 0; o + 2 <= n; i++) {
        cr_assert_eq(p[o + 1] & 0x80, 0, "server frames are never masked");
        size_t l = p[o + 1] & 0x7f, h = 2;
        if (l == 126) {
            l = (size_t)p[o + 2] << 8 | p[o + 3];
            h = 4;
        } else if (l == 127) {
            l = 0;
            for (int k = 0; k < 8; k++)
                l = l << 8 | p[o + 2 + k];
            h = 10;
        }
        if (i == idx) {
            *opcode = p[o] & 0x0f;
            *payload = p + o + h;
            *len = l;
            return true;
        }
        o += h + l;
    }
    return false;
}

static uint16_t server_close_code(void)
{
    int op;
    const uint8_t *pl;
    size_t len;
    for (int i = 0; server_frame(i, &op, &pl, &len); i++)
        if (op == 0x8)
            return len >= 2 ? (uint16_t)(pl[0] << 8 | pl[1]) : 1005;
    return 0;
}

static int feed(const uint8_t *b, size_t n) { return dsq_ws_feed(ws, b, n); }

/* ---- handshake ---------------------------------------------------------- */

typedef struct hs_sink {
    dsq_http_req *req;
} hs_sink;

static int hs_head(void *ud, dsq_http_req *r) { return 0; }
static int hs_req(void *ud, dsq_http_req *r)
{
    ((hs_sink *)ud)->req = r;
    return 0;
}

static dsq_http_req *parse(const char *text)
{
    static const dsq_http_parser_cb hcb = {hs_head, hs_req};
    dsq_http_parser hp;
    hs_sink hs = {0};
    size_t used;
    dsq_http_parser_init(&hp, &hcb, &hs, 8192, 8192);
    dsq_http_parser_feed(&hp, text, strlen(text), &used);
    dsq_http_parser_free(&hp);
    cr_assert_not_null(hs.req, "did not parse: %s", text);
    return hs.req;
}

Test(ws, accept_key_rfc6455_example)
{
    char acc[DSQ_WS_ACCEPT_LEN + 1];
    dsq_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

Test(ws, handshake_checks)
{
    char acc[DSQ_WS_ACCEPT_LEN + 1];
    const char *why;
    dsq_http_req *r = parse("GET /v1/rpc HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    cr_assert_eq(dsq_ws_handshake_check(r, acc, &why), 0);
    cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    dsq_http_req_free(r);

    r = parse("GET /v1/rpc HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    cr_assert_eq(dsq_ws_handshake_check(r, acc, &why), 426);
    dsq_http_req_free(r);

    r = parse("GET /v1/rpc HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short==\r\n\r\n");
    cr_assert_eq(dsq_ws_handshake_check(r, acc, &why), 400);
    cr_assert(strstr(why, "Sec-WebSocket-Key") != NULL);
    dsq_http_req_free(r);

    r = parse("GET /v1/rpc HTTP/1.1\r\nConnection: keep-alive\r\n"
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    cr_assert_eq(dsq_ws_handshake_check(r, acc, &why), 400);
    dsq_http_req_free(r);

    r = parse("GET /v1/rpc HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    cr_assert_eq(dsq_ws_handshake_check(r, acc, &why), 400);
    dsq_http_req_free(r);
}

/* ---- framing ---------------------------------------------------------------- */

Test(ws, masked_text_message)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x1, true, "hello", 5);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert_not(pe.last_binary);
    cr_assert_eq(pe.last.len, 5);
    cr_assert(memcmp(pe.last.data, "hello", 5) == 0);
    cr_assert_not(dsq_ws_finished(ws));
}

Test(ws, byte_at_a_time)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x2, true, "\xff\x00\xfe", 3);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(feed(b + i, 1), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert(pe.last_binary);
    cr_assert(memcmp(pe.last.data, "\xff\x00\xfe", 3) == 0);
}

Test(ws, unmasked_client_frame_is_a_protocol_error)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x1, false, "hello", 5);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 0, "an unmasked frame must not be delivered");
    cr_assert_eq(server_close_code(), 1002);
    cr_assert(dsq_ws_finished(ws));
}

Test(ws, fragmented_with_ping_between)
{
    uint8_t b[512];
    size_t n = 0;
    n += frame(b + n, false, 0, 0x1, true, "hel", 3);
    n += frame(b + n, true, 0, 0x9, true, "pp", 2); /* ping between fragments */
    n += frame(b + n, false, 0, 0x0, true, "lo w", 4);
    n += frame(b + n, true, 0, 0x0, true, "orld", 4);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert_eq(pe.last.len, 11);
    cr_assert(memcmp(pe.last.data, "hello world", 11) == 0);
    int op;
    const uint8_t *pl;
    size_t len;
    cr_assert(server_frame(0, &op, &pl, &len));
    cr_assert_eq(op, 0xA, "a pong answers the ping");
    cr_assert_eq(len, 2);
    cr_assert(memcmp(pl, "pp", 2) == 0);
}

Test(ws, utf8_split_across_fragments_is_fine)
{
    uint8_t b[256];
    size_t n = 0;
    n += frame(b + n, false, 0, 0x1, true, "\xe2\x82", 2);
    n += frame(b + n, true, 0, 0x0, true, "\xac", 1);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert_eq(server_close_code(), 0);
}

Test(ws, oversized_message_closes_1009)
{
    uint8_t b[512];
    char payload[200];
    memset(payload, 'a', sizeof payload);
    size_t n = frame(b, true, 0, 0x1, true, payload, sizeof payload);
    feed(b, n);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1009);
}

Test(ws, oversized_by_fragments_closes_1009)
{
    uint8_t b[512];
    char payload[60];
    memset(payload, 'a', sizeof payload);
    size_t n = 0;
    n += frame(b + n, false, 0, 0x1, true, payload, 60);
    n += frame(b + n, true, 0, 0x0, true, payload, 60);
    feed(b, n);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1009);
}

Test(ws, invalid_utf8_text_closes_1007)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x1, true, "ab\xc0\xaf" "cd", 6);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1007);
    cr_assert(dsq_ws_closing(ws));
    /* Nothing more is read after the violation. */
    n = frame(b, true, 0, 0x1, true, "later", 5);
    feed(b, n);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert(dsq_ws_finished(ws));
}

Test(ws, invalid_utf8_in_binary_is_delivered)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x2, true, "\xc0\xaf", 2);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert(pe.last_binary);
}

Test(ws, reserved_bits_are_a_protocol_error)
{
    uint8_t b[256];
    size_t n = frame(b, true, 4, 0x1, true, "x", 1);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1002);
}

Test(ws, continuation_without_start_is_a_protocol_error)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x0, true, "x", 1);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1002);
}

Test(ws, long_control_frame_is_a_protocol_error)
{
    uint8_t b[256];
    char payload[126];
    memset(payload, 'p', sizeof payload);
    size_t n = frame(b, true, 0, 0x9, true, payload, sizeof payload);
    /* Refused at its header with 1002 (wslay alone would drop the
     * connection without a close frame). */
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(server_close_code(), 1002);
    cr_assert(dsq_ws_finished(ws));
}

Test(ws, client_close_is_answered)
{
    uint8_t b[64];
    size_t n = frame(b, true, 0, 0x8, true, "\x03\xe8" "bye", 5);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(dsq_ws_close_code_received(ws), 1000);
    cr_assert_eq(server_close_code(), 1000);
    cr_assert(dsq_ws_finished(ws));
}

Test(ws, server_close_waits_for_the_peer)
{
    cr_assert_eq(dsq_ws_close(ws, 1001, "going away"), 0);
    cr_assert_eq(dsq_ws_flush(ws), 0);
    cr_assert_eq(server_close_code(), 1001);
    cr_assert(dsq_ws_closing(ws));
    cr_assert_not(dsq_ws_finished(ws), "still waiting for the peer's close");
    cr_assert_eq(dsq_ws_send(ws, false, "late", 4), -1, "no messages after our close");
    uint8_t b[64];
    size_t n = frame(b, true, 0, 0x8, true, "\x03\xe9", 2);
    cr_assert_eq(feed(b, n), 0);
    cr_assert(dsq_ws_finished(ws));
}

Test(ws, send_and_backpressure)
{
    pe.room = 0; /* the socket is full */
    char big[1000];
    memset(big, 'z', sizeof big);
    cr_assert_eq(dsq_ws_send(ws, false, big, sizeof big), 0);
    cr_assert_eq(dsq_ws_flush(ws), 0);
    cr_assert_eq(pe.out.len, 0);
    cr_assert_geq(dsq_ws_queued(ws), sizeof big);
    pe.room = 300; /* drains in pieces */
    cr_assert_eq(dsq_ws_flush(ws), 0);
    cr_assert_eq(pe.out.len, 300);
    pe.room = SIZE_MAX;
    cr_assert_eq(dsq_ws_flush(ws), 0);
    int op;
    const uint8_t *pl;
    size_t len;
    cr_assert(server_frame(0, &op, &pl, &len));
    cr_assert_eq(op, 0x1);
    cr_assert_eq(len, sizeof big);
    cr_assert_eq(dsq_ws_queued(ws), 0);
}

Test(ws, ping_from_server)
{
    cr_assert_eq(dsq_ws_ping(ws), 0);
    cr_assert_eq(dsq_ws_flush(ws), 0);
    int op;
    const uint8_t *pl;
    size_t len;
    cr_assert(server_frame(0, &op, &pl, &len));
    cr_assert_eq(op, 0x9);
}

/* ---- frames handed over whole (write_frame) ---------------------------------------- */

static int frames_direct;   /* write_frame calls that took the frame */
static bool direct_refuse;  /* write_frame says no */

static bool sink_frame(void *ud, const uint8_t *h, size_t hl, const uint8_t *p, size_t n)
{
    peer *q = ud;
    if (direct_refuse)
        return false;
    dsq_buf_append(&q->out, h, hl);
    dsq_buf_append(&q->out, p, n);
    frames_direct++;
    return true;
}

static const dsq_ws_cb cb_direct = {sink_write, sink_message, sink_frame};

static void setup_direct(void)
{
    memset(&pe, 0, sizeof pe);
    pe.room = SIZE_MAX;
    frames_direct = 0;
    direct_refuse = false;
    ws = dsq_ws_new(&cb_direct, &pe, 100);
    cr_assert_not_null(ws);
}

TestSuite(ws_direct, .init = setup_direct, .fini = teardown);

/* Lengths of each header form (7 bits, 16, 64) come out as a client
 * parses them, without wslay's queue. */
Test(ws_direct, frames_of_every_length_form)
{
    static const size_t sizes[] = {0, 125, 126, 65535, 65536, 70000};
    char *big = malloc(70000);
    cr_assert_not_null(big);
    for (size_t i = 0; i < 70000; i++)
        big[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(dsq_ws_send(ws, i % 2 == 1, big, sizes[i]), 0);
    cr_assert_eq(frames_direct, 6);
    cr_assert_eq(dsq_ws_queued(ws), 0);
    for (int i = 0; i < 6; i++) {
        int op;
        const uint8_t *pl;
        size_t len;
        cr_assert(server_frame(i, &op, &pl, &len), "frame %d", i);
        cr_assert_eq(op, i % 2 == 1 ? 0x2 : 0x1);
        cr_assert_eq(len, sizes[i]);
        cr_assert(len == 0 || memcmp(pl, big, len) == 0);
    }
    free(big);
}

/* A frame refused, or one behind a queued one, waits in wslay's queue and
 * keeps its place: nothing overtakes it. */
Test(ws_direct, queued_frames_keep_their_order)
{
    direct_refuse = true;
    pe.room = 0;
    cr_assert_eq(dsq_ws_send(ws, false, "one", 3), 0);
    direct_refuse = false;
    cr_assert_eq(dsq_ws_send(ws, false, "two", 3), 0);
    cr_assert_eq(frames_direct, 0, "a frame is queued: the next one queues behind it");
    pe.room = SIZE_MAX;
    cr_assert_eq(dsq_ws_flush(ws), 0);
    cr_assert_eq(dsq_ws_send(ws, false, "three", 5), 0);
    cr_assert_eq(frames_direct, 1, "the queue is empty again: handed over whole");
    static const char *const want[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        int op;
        const uint8_t *pl;
        size_t len;
        cr_assert(server_frame(i, &op, &pl, &len));
        cr_assert_eq(len, strlen(want[i]));
        cr_assert_eq(memcmp(pl, want[i], len), 0, "frame %d", i);
    }
}

/* After a close is queued nothing more is sent, by either way. */
Test(ws_direct, nothing_after_close)
{
    cr_assert_eq(dsq_ws_close(ws, 1001, "bye"), 0);
    cr_assert_eq(dsq_ws_send(ws, false, "late", 4), -1);
    cr_assert_eq(frames_direct, 0);
}

/* ---- permessage-deflate (RFC 7692) ------------------------------------------------------ */

Test(ws, deflate_offers_accepted_and_declined)
{
    dsq_ws_deflate d;
    char resp[160];
    const char *ok = "permessage-deflate; client_max_window_bits";
    cr_assert(dsq_ws_deflate_accept(ok, strlen(ok), &d, resp, sizeof resp));
    cr_assert_str_eq(resp, "permessage-deflate; server_no_context_takeover");
    cr_assert_eq(d.bits, 15);
    cr_assert_not(d.client_no_context);
    const char *all = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                      "server_max_window_bits=\"10\"; client_max_window_bits=9";
    cr_assert(dsq_ws_deflate_accept(all, strlen(all), &d, resp, sizeof resp));
    cr_assert_str_eq(resp, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                           "server_max_window_bits=10");
    cr_assert_eq(d.bits, 10);
    cr_assert(d.client_no_context);
    /* The first offer we can take, of several. */
    const char *second = "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
                         "PerMessage-Deflate ;server_max_window_bits=12";
    cr_assert(dsq_ws_deflate_accept(second, strlen(second), &d, resp, sizeof resp));
    cr_assert_eq(d.bits, 12);
    const char *const bad[] = {
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",  /* zlib has no 8-bit raw window */
        "permessage-deflate; server_max_window_bits",    /* needs a value */
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate=1",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not(dsq_ws_deflate_accept(bad[i], strlen(bad[i]), &d, resp, sizeof resp), "%s", bad[i]);
}

/* Inflate a server payload as a client would: with 00 00 ff ff after it. */
static size_t client_inflate(const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
    uint8_t in[65536];
    cr_assert(n + 4 <= sizeof in);
    memcpy(in, p, n);
    memcpy(in + n, "\x00\x00\xff\xff", 4);
    z_stream z = {0};
    cr_assert_eq(inflateInit2(&z, -15), Z_OK);
    z.next_in = in;
    z.avail_in = (uInt)(n + 4);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_SYNC_FLUSH);
    cr_assert(rc == Z_OK || rc == Z_STREAM_END, "inflate: %d", rc);
    size_t got = cap - z.avail_out;
    inflateEnd(&z);
    return got;
}

/* Deflate as a client would, without the 00 00 ff ff tail. */
static size_t client_deflate(const void *p, size_t n, uint8_t *out, size_t cap)
{
    z_stream z = {0};
    cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    cr_assert(got >= 4 && memcmp(out + got - 4, "\x00\x00\xff\xff", 4) == 0);
    return got - 4;
}

static void text_of(char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = "{\"lsn\":1,\"op\":\"INSERT\"}"[i % 23];
}

/* Messages of compression_min bytes or more go compressed (RSV1) when
 * smaller; shorter ones, and ones that do not shrink, go as they are. */
Test(ws, deflate_sends_large_messages_compressed)
{
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64);
    char big[4000];
    text_of(big, sizeof big);
    cr_assert_eq(dsq_ws_send(ws, false, big, sizeof big), 0);
    cr_assert_eq(dsq_ws_send(ws, false, "short", 5), 0);
    uint8_t noise[200];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (uint8_t)(i * 7919u >> 3 ^ i * 31u);
    cr_assert_eq(dsq_ws_send(ws, true, noise, sizeof noise), 0);
    cr_assert_eq(dsq_ws_flush(ws), 0);
    const uint8_t *p = (const uint8_t *)pe.out.data;
    cr_assert_eq(p[0], 0x80 | 0x40 | 1, "FIN, RSV1, text");
    int op;
    const uint8_t *pl;
    size_t len;
    cr_assert(server_frame(0, &op, &pl, &len));
    cr_assert_lt(len, 200, "4,000 repetitive bytes compress to %zu", len);
    uint8_t out[8192];
    size_t got = client_inflate(pl, len, out, sizeof out);
    cr_assert_eq(got, sizeof big);
    cr_assert_eq(memcmp(out, big, sizeof big), 0);
    cr_assert(server_frame(1, &op, &pl, &len));
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(pl, "short", 5), 0, "under compression_min: as it is");
    size_t o = (size_t)(pl - p) + 5;
    cr_assert_eq(p[o] & 0x40, 0, "no RSV1 on it");
    cr_assert(server_frame(2, &op, &pl, &len));
    cr_assert_eq(op, 2);
    cr_assert_eq(p[(size_t)(pl - p) - 4] & 0x40, 0, "noise that does not shrink goes as it is");
    cr_assert_eq(len, sizeof noise);
}

/* A message sent alike to several sessions is compressed once: the
 * others send the kept form, byte for byte the same. */
Test(ws, deflate_alike_messages_share_one_compression)
{
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64);
    peer pe2 = {.room = SIZE_MAX};
    dsq_ws *ws2 = dsq_ws_new(&cb, &pe2, 100);
    dsq_ws_set_deflate(ws2, &d, 64);
    char big[3000];
    text_of(big, sizeof big);
    dsq_alt alt = {0};
    cr_assert_eq(dsq_ws_send_alt(ws, false, big, sizeof big, &alt), 0);
    cr_assert_neq(alt.kind, 0, "the compressed form is kept");
    size_t kept = alt.buf.len;
    cr_assert_eq(dsq_ws_send_alt(ws2, false, big, sizeof big, &alt), 0);
    cr_assert_eq(alt.buf.len, kept);
    cr_assert_eq(dsq_ws_flush(ws), 0);
    cr_assert_eq(dsq_ws_flush(ws2), 0);
    cr_assert_eq(pe.out.len, pe2.out.len);
    cr_assert_eq(memcmp(pe.out.data, pe2.out.data, pe.out.len), 0, "the same frame");
    /* A session with a smaller window makes its own. */
    peer pe3 = {.room = SIZE_MAX};
    dsq_ws *ws3 = dsq_ws_new(&cb, &pe3, 100);
    dsq_ws_deflate d10 = {.bits = 10};
    dsq_ws_set_deflate(ws3, &d10, 64);
    int kind15 = alt.kind;
    cr_assert_eq(dsq_ws_send_alt(ws3, false, big, sizeof big, &alt), 0);
    cr_assert_neq(alt.kind, kind15, "made again for 10 bits");
    cr_assert_eq(dsq_ws_flush(ws3), 0);
    uint8_t out[8192];
    size_t hl = pe3.out.len - alt.buf.len;
    cr_assert_eq(client_inflate((const uint8_t *)pe3.out.data + hl, alt.buf.len, out, sizeof out), sizeof big);
    cr_assert_eq(memcmp(out, big, sizeof big), 0);
    dsq_ws_free(ws2);
    dsq_ws_free(ws3);
    dsq_buf_free(&pe2.out);
    dsq_buf_free(&pe2.last);
    dsq_buf_free(&pe3.out);
    dsq_buf_free(&pe3.last);
    dsq_buf_free(&alt.buf);
    dsq_ws_deflate_cleanup();
}

/* A client's compressed messages are inflated, also with its context
 * kept from one message to the next. */
Test(ws, deflate_client_messages_are_inflated)
{
    dsq_ws_free(ws);
    ws = dsq_ws_new(&cb, &pe, 4000);
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64);
    z_stream z = {0}; /* the client's own, context taken over */
    cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    for (int m = 0; m < 3; m++) {
        char text[1500];
        text_of(text, sizeof text);
        text[0] = (char)('a' + m);
        uint8_t c[2048], f[2100];
        z.next_in = (Bytef *)text;
        z.avail_in = sizeof text;
        z.next_out = c;
        z.avail_out = sizeof c;
        cr_assert_eq(deflate(&z, Z_SYNC_FLUSH), Z_OK);
        size_t cl = sizeof c - z.avail_out - 4;
        size_t fl = frame(f, true, 4, 1, true, c, cl);
        cr_assert_eq(feed(f, fl), 0);
        cr_assert_eq(pe.nmsg, m + 1);
        cr_assert_eq(pe.last.len, sizeof text);
        cr_assert_eq(memcmp(pe.last.data, text, sizeof text), 0, "message %d", m);
    }
    deflateEnd(&z);
}

Test(ws, deflate_bomb_closes_1009)
{
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64); /* max_message 100 */
    char zeros[5000] = {0};
    uint8_t c[512], f[600];
    size_t cl = client_deflate(zeros, sizeof zeros, c, sizeof c);
    cr_assert_lt(cl, 100, "small on the wire");
    cr_assert_eq(feed(f, frame(f, true, 4, 2, true, c, cl)), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1009);
}

Test(ws, deflate_garbage_closes_1007)
{
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    uint8_t f[64];
    cr_assert_eq(feed(f, frame(f, true, 4, 2, true, junk, sizeof junk)), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1007);
}

Test(ws, deflated_text_must_be_utf8)
{
    dsq_ws_deflate d = {.bits = 15};
    dsq_ws_set_deflate(ws, &d, 64);
    const char bad[] = "ok \xc3\x28 not";
    uint8_t c[128], f[160];
    size_t cl = client_deflate(bad, sizeof bad - 1, c, sizeof c);
    cr_assert_eq(feed(f, frame(f, true, 4, 1, true, c, cl)), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1007);
}

/* Without the extension agreed, RSV1 stays a protocol error (1002). */
Test(ws, rsv1_without_deflate_is_a_protocol_error)
{
    const char hello[] = "hello";
    uint8_t c[64], f[96];
    size_t cl = client_deflate(hello, 5, c, sizeof c);
    cr_assert_eq(feed(f, frame(f, true, 4, 1, true, c, cl)), 0);
    cr_assert_eq(pe.nmsg, 0);
    cr_assert_eq(server_close_code(), 1002);
}

/* ---- refused at the frame header, before any payload ---------------------- */

/* A masked frame header alone, declaring `len` payload bytes. */
static size_t header_only(uint8_t *buf, bool fin, int opcode, uint64_t len)
{
    size_t o = 0;
    buf[o++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        buf[o++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        buf[o++] = 0x80 | 126;
        buf[o++] = (uint8_t)(len >> 8);
        buf[o++] = (uint8_t)len;
    } else {
        buf[o++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            buf[o++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(buf + o, "\x12\x34\x56\x78", 4);
    return o + 4;
}

Test(ws, oversized_header_is_refused_before_its_payload)
{
    static const uint64_t lens[] = {101, 126, 65535, 65536, 1ull << 40, UINT64_MAX >> 1};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        teardown();
        setup();
        uint8_t b[16];
        size_t n = header_only(b, true, 0x2, lens[k]);
        /* A byte at a time: the close comes with the header's last byte. */
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(server_close_code(), 0, "len %llu: not before byte %zu",
                         (unsigned long long)lens[k], i);
            cr_assert_eq(feed(b + i, 1), 0);
        }
        cr_assert_eq(server_close_code(), 1009, "len %llu", (unsigned long long)lens[k]);
        cr_assert(dsq_ws_finished(ws));
        cr_assert_eq(pe.nmsg, 0);
    }
}

Test(ws, a_message_of_max_message_in_fragments_is_fine_one_more_byte_is_not)
{
    uint8_t b[256];
    char part[60];
    memset(part, 'a', sizeof part);
    size_t n = frame(b, false, 0, 0x2, true, part, 60);
    n += frame(b + n, true, 0, 0x0, true, part, 40);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 1);
    cr_assert_eq(pe.last.len, 100);
    cr_assert_eq(server_close_code(), 0);
    /* 60 + a continuation header declaring 41: refused at that header. */
    n = frame(b, false, 0, 0x2, true, part, 60);
    n += header_only(b + n, true, 0x0, 41);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(server_close_code(), 1009);
    cr_assert_eq(pe.nmsg, 1);
}

Test(ws, messages_before_a_refused_frame_are_delivered)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x1, true, "one", 3);
    n += frame(b + n, true, 0, 0x1, true, "two", 3);
    n += header_only(b + n, true, 0x1, 1000);
    cr_assert_eq(feed(b, n), 0);
    cr_assert_eq(pe.nmsg, 2);
    cr_assert_eq(server_close_code(), 1009);
}

static uint16_t close_answer(const void *payload, size_t len, bool bytewise)
{
    uint8_t b[256];
    size_t n = frame(b, true, 0, 0x8, true, payload, len);
    if (bytewise) {
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(feed(b + i, 1), 0);
    } else {
        cr_assert_eq(feed(b, n), 0);
    }
    cr_assert(dsq_ws_finished(ws));
    return server_close_code();
}

Test(ws, close_payload_of_one_byte_is_a_protocol_error)
{
    cr_assert_eq(close_answer("\x03", 1, false), 1002);
    teardown();
    setup();
    cr_assert_eq(close_answer("\x03", 1, true), 1002);
}

Test(ws, close_with_an_invalid_code_is_a_protocol_error)
{
    static const uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        teardown();
        setup();
        uint8_t p[2] = {(uint8_t)(bad[k] >> 8), (uint8_t)bad[k]};
        cr_assert_eq(close_answer(p, 2, k % 2 == 1), 1002, "code %u", bad[k]);
    }
}

Test(ws, close_reason_must_be_utf8)
{
    cr_assert_eq(close_answer("\x03\xe8" "ok\xc0\xaf", 6, false), 1007);
    teardown();
    setup();
    cr_assert_eq(close_answer("\x03\xe8" "ok\xc0\xaf", 6, true), 1007);
    teardown();
    setup();
    cr_assert_eq(close_answer("\x0f\xa0" "fin \xc3\xa9", 8, true), 4000, "valid: echoed");
    teardown();
    setup();
    cr_assert_eq(close_answer("", 0, false), 1005, "no payload: an empty close back");
}
