/* ws — WebSocket (RFC 6455): the upgrade handshake and message framing
 * over wslay.
 *
 * Like the HTTP codec it knows nothing of sockets: bytes from the peer go in
 * through dsq_ws_feed(), bytes for the peer come out through the write
 * callback, and whole messages (text checked to be UTF-8) come out through
 * on_message. Pings are answered, close frames exchanged, and oversized
 * messages (close 1009), bad UTF-8 (1007) and protocol errors (1002) end
 * the session. */
#ifndef DSQ_WS_H
#define DSQ_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "server/http.h"

#define DSQ_WS_ACCEPT_LEN 28

/* Check an upgrade request. Returns 0 and fills `accept` (the
 * Sec-WebSocket-Accept value, NUL-terminated), or an HTTP status (400, or
 * 426 for a version other than 13) with the reason in *why. */
int dsq_ws_handshake_check(const dsq_http_req *req, char accept[DSQ_WS_ACCEPT_LEN + 1],
                           const char **why);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key. */
void dsq_ws_accept_key(const char *key, size_t len, char out[DSQ_WS_ACCEPT_LEN + 1]);

/* permessage-deflate (RFC 7692) as agreed with a client. */
typedef struct dsq_ws_deflate {
    int bits;               /* our window: the offer's server_max_window_bits (9-15), else 15 */
    bool client_no_context; /* the client asked to reset its window at every message */
} dsq_ws_deflate;

/* The first permessage-deflate offer of a Sec-WebSocket-Extensions value
 * we can accept: true, *out, and the response's value in resp. We never
 * take our context over (server_no_context_takeover), accept any window
 * of the client's, and decline a server window under 9 bits (zlib has
 * none) and offers with parameters we do not know. */
bool dsq_ws_deflate_accept(const char *hdr, size_t len, dsq_ws_deflate *out, char *resp, size_t resp_len);

/* The thread's compression streams go (at the end of the loop thread). */
void dsq_ws_deflate_cleanup(void);

typedef struct dsq_ws dsq_ws;

typedef struct dsq_ws_cb {
    /* Bytes for the peer. Return how many were taken; 0 means the sink is
     * full and the rest waits for the next dsq_ws_flush(). */
    size_t (*write)(void *ud, const uint8_t *p, size_t n);
    /* A complete text (valid UTF-8) or binary message. */
    void (*on_message)(void *ud, bool binary, const uint8_t *p, size_t n);
    /* May be NULL. A whole frame, header and payload, for the peer while
     * nothing else is on its way (no copy made here): true when the sink
     * took all of it; false: it is queued (copied) and goes by `write`. */
    bool (*write_frame)(void *ud, const uint8_t *h, size_t hlen, const uint8_t *p, size_t n);
} dsq_ws_cb;

/* A server-side session. Returns NULL when out of memory. */
dsq_ws *dsq_ws_new(const dsq_ws_cb *cb, void *ud, uint64_t max_message);
void dsq_ws_free(dsq_ws *ws);

/* Take bytes from the peer, deliver complete messages, queue replies
 * (pongs, close), then flush. Returns 0, or -1 when the connection must be
 * dropped at once (a fatal wslay error). */
int dsq_ws_feed(dsq_ws *ws, const uint8_t *p, size_t n);

/* Push queued frames to the write callback. 0, or -1 (fatal). */
int dsq_ws_flush(dsq_ws *ws);

/* Use permessage-deflate (agreed in the handshake): messages of
 * min_bytes or more go compressed when that makes them smaller, and the
 * client's compressed messages are inflated (past max_message: close 1009;
 * not deflate data: 1007). */
void dsq_ws_set_deflate(dsq_ws *ws, const dsq_ws_deflate *d, size_t min_bytes);

/* Send a message: straight to write_frame when nothing is queued before
 * it, else queued. Returns 0, or -1 once the session is closing. */
int dsq_ws_send(dsq_ws *ws, bool binary, const void *p, size_t n);

/* The same for a message sent alike to many sessions: its compressed
 * form is made once, kept in *alt (zeroed, or reset to kind 0 when the
 * message changes) and reused by every session with the same window. */
int dsq_ws_send_alt(dsq_ws *ws, bool binary, const void *p, size_t n, dsq_alt *alt);

/* Queue a ping. */
int dsq_ws_ping(dsq_ws *ws);

/* Begin the close handshake with `code` and a short reason. */
int dsq_ws_close(dsq_ws *ws, uint16_t code, const char *reason);

/* True once no more frames will be read or written: after the close
 * handshake, or after a protocol error was answered with a close. */
bool dsq_ws_finished(const dsq_ws *ws);

/* True when we have sent (or queued) our close frame. */
bool dsq_ws_closing(const dsq_ws *ws);

/* Bytes queued inside the session, not yet given to write. */
size_t dsq_ws_queued(const dsq_ws *ws);

/* The close code we sent (0 if none yet) and the one we received (0 if
 * none, 1005 if the peer's close had no code). */
uint16_t dsq_ws_close_code_sent(const dsq_ws *ws);
uint16_t dsq_ws_close_code_received(const dsq_ws *ws);

#endif
