/* Unit tests: server/ws — the upgrade handshake and framing over wslay. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
    /* wslay treats this as fatal: the connection is dropped at once. */
    cr_assert_eq(feed(b, n), -1);
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
