/* fuzz_ws — WebSocket framing as the server reads it: bytes from a client
 * through dsq_ws_feed (wslay's frame decoder, our message callback, UTF-8
 * checks, permessage-deflate inflation) with a fake transport that takes
 * what the server writes, and every message echoed back (as handlers
 * answer: dsq_ws_send, deflated when agreed) so replies interleave with
 * pongs and the close handshake.
 *
 * Input: byte 0 = options (bit 0 permessage-deflate, bit 1 the client
 * resets its window, bits 2-4 our window - 9, bit 5 a sink that takes 7
 * bytes per call and stalls every other call, bit 6 max_message 64 instead
 * of 64 KiB, bit 7 a write_frame callback); byte 1 = piece size (0: all
 * at once); the rest is the client's byte stream. Client frames must be
 * masked: a zero mask key leaves the payload as it is.
 *
 * wslay itself is Debian's library, not instrumented: coverage shows our
 * side of the framing only. */
#include <stdbool.h>

#include "server/ws.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

typedef struct peer {
    dsq_ws *ws;
    bool slow;        /* a sink that takes a little at a time */
    unsigned calls;   /* write calls, to stall every other one */
    size_t out;       /* bytes the server wrote */
    int messages;     /* delivered to us */
} peer;

static size_t sink_write(void *ud, const uint8_t *p, size_t n)
{
    peer *pe = ud;
    if (n > 0)
        (void)((volatile const uint8_t *)p)[n - 1];
    if (pe->slow && (pe->calls++ & 1))
        return 0;
    size_t take = pe->slow && n > 7 ? 7 : n;
    pe->out += take;
    return take;
}

static bool sink_write_frame(void *ud, const uint8_t *h, size_t hlen, const uint8_t *p, size_t n)
{
    peer *pe = ud;
    (void)((volatile const uint8_t *)h)[hlen - 1];
    if (n > 0)
        (void)((volatile const uint8_t *)p)[n - 1];
    if (pe->slow)
        return false;
    pe->out += hlen + n;
    return true;
}

static void sink_message(void *ud, bool binary, const uint8_t *p, size_t n)
{
    peer *pe = ud;
    pe->messages++;
    if (n > 0)
        (void)((volatile const uint8_t *)p)[n - 1];
    (void)dsq_ws_send(pe->ws, binary, p, n);
    if (pe->messages == 3)
        (void)dsq_ws_ping(pe->ws);
    if (pe->messages == 5)
        (void)dsq_ws_close(pe->ws, 1000, "enough");
}

static const dsq_ws_cb cb_plain = {sink_write, sink_message, NULL};
static const dsq_ws_cb cb_frames = {sink_write, sink_message, sink_write_frame};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t opt = data[0];
    size_t piece = data[1];
    peer pe = {.slow = (opt & 0x20) != 0};
    pe.ws = dsq_ws_new((opt & 0x80) ? &cb_frames : &cb_plain, &pe, (opt & 0x40) ? 64 : 65536);
    if (pe.ws == NULL)
        return 0;
    if (opt & 1) {
        dsq_ws_deflate d = {.bits = 9 + ((opt >> 2) & 7), .client_no_context = (opt & 2) != 0};
        dsq_ws_set_deflate(pe.ws, &d, 16);
    }
    const uint8_t *p = data + 2;
    size_t left = size - 2;
    while (left > 0) {
        size_t n = piece == 0 || piece > left ? left : piece;
        if (dsq_ws_feed(pe.ws, p, n) != 0)
            break;
        p += n;
        left -= n;
        if (dsq_ws_finished(pe.ws))
            break;
    }
    /* Drain what is queued, as the connection does when the socket drains. */
    for (int i = 0; i < 64 && dsq_ws_queued(pe.ws) > 0; i++)
        if (dsq_ws_flush(pe.ws) != 0)
            break;
    (void)dsq_ws_closing(pe.ws);
    (void)dsq_ws_close_code_sent(pe.ws);
    (void)dsq_ws_close_code_received(pe.ws);
    dsq_ws_free(pe.ws);
    return 0;
}
