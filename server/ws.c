/* ws — WebSocket handshake and framing over wslay's event API.
 *
 * Divisions: the handshake; wslay callbacks; the session.
 *
 * wslay pulls input through recv_callback and pushes output through
 * send_callback; both report WSLAY_ERR_WOULDBLOCK when there is nothing
 * more to read or no room to write, which is how a non-blocking feed maps
 * onto its blocking-style API. wslay buffers each message whole (bounded
 * by max_message) before on_msg_recv_callback sees it. */
#include "server/ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "common/util.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- handshake ---------------------------------------------------------- */

void dsq_ws_accept_key(const char *key, size_t len, char out[DSQ_WS_ACCEPT_LEN + 1])
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(md, key, len) != 1 ||
        EVP_DigestUpdate(md, WS_GUID, sizeof WS_GUID - 1) != 1 ||
        EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != SHA_DIGEST_LENGTH) {
        memset(digest, 0, sizeof digest); /* out of memory: a key no client accepts */
    }
    EVP_MD_CTX_free(md);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[DSQ_WS_ACCEPT_LEN] = '\0';
}

int dsq_ws_handshake_check(const dsq_http_req *req, char accept[DSQ_WS_ACCEPT_LEN + 1],
                           const char **why)
{
    if (req->method != HTTP_GET) {
        *why = "a WebSocket upgrade must be a GET";
        return 400;
    }
    if (req->http_minor < 1) {
        *why = "a WebSocket upgrade needs HTTP/1.1";
        return 400;
    }
    if (!dsq_http_header_has_token(req, "upgrade", "websocket") ||
        !dsq_http_header_has_token(req, "connection", "upgrade")) {
        *why = "missing Upgrade: websocket or Connection: Upgrade";
        return 400;
    }
    size_t vlen = 0;
    const char *ver = dsq_http_header_get(req, "sec-websocket-version", &vlen);
    if (ver == NULL || !dsq_strn_ieq(ver, vlen, "13")) {
        *why = "only WebSocket version 13 is supported";
        return 426;
    }
    size_t klen = 0;
    const char *key = dsq_http_header_get(req, "sec-websocket-key", &klen);
    unsigned char raw[20];
    /* The key is 16 random bytes in base64: 24 characters ending in "==". */
    if (key == NULL || klen != 24 || key[22] != '=' || key[23] != '=' ||
        EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) {
        *why = "Sec-WebSocket-Key must be 16 bytes in base64";
        return 400;
    }
    dsq_ws_accept_key(key, klen, accept);
    return 0;
}

/* ---- the session -------------------------------------------------------- */

struct dsq_ws {
    wslay_event_context_ptr ctx; /* owned */
    const dsq_ws_cb *cb;         /* the owner's callbacks */
    void *ud;                    /* passed to cb */
    const uint8_t *in;           /* input being fed */
    size_t in_len;               /* bytes left in `in` */
    bool fatal;                  /* wslay failed: drop the connection */
    bool close_pending;          /* close after the queued messages (see dsq_ws_close) */
    uint16_t close_code;
    char close_reason[124];
};

/* Queue the pending close once no message is queued before it: wslay sends
 * control frames ahead of queued data, so queuing it at once would drop
 * the messages sent just before (a last error, say). */
static int queue_pending_close(dsq_ws *ws)
{
    if (!ws->close_pending || wslay_event_get_queued_msg_count(ws->ctx) > 0)
        return 0;
    ws->close_pending = false;
    int rv = wslay_event_queue_close(ws->ctx, ws->close_code, (const uint8_t *)ws->close_reason,
                                     strlen(ws->close_reason));
    return rv == 0 || rv == WSLAY_ERR_NO_MORE_MSG ? 0 : -1;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user_data)
{
    dsq_ws *ws = user_data;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    dsq_ws *ws = user_data;
    size_t n = ws->cb->write(ws->ud, data, len);
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)n;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user_data)
{
    dsq_ws *ws = user_data;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        if (!dsq_utf8_valid(arg->msg, arg->msg_length)) {
            static const char reason[] = "invalid UTF-8 in a text message";
            wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA,
                                    (const uint8_t *)reason, sizeof reason - 1);
            wslay_event_shutdown_read(ctx);
            return;
        }
        ws->cb->on_message(ws->ud, false, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        ws->cb->on_message(ws->ud, true, arg->msg, arg->msg_length);
    }
    /* Ping, pong and close are handled by wslay itself. */
}

dsq_ws *dsq_ws_new(const dsq_ws_cb *cb, void *ud, uint64_t max_message)
{
    static const struct wslay_event_callbacks callbacks = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_msg_recv_callback = on_msg,
    };
    dsq_ws *ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return NULL;
    if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
        free(ws);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message);
    ws->cb = cb;
    ws->ud = ud;
    return ws;
}

void dsq_ws_free(dsq_ws *ws)
{
    if (ws == NULL)
        return;
    wslay_event_context_free(ws->ctx);
    free(ws);
}

int dsq_ws_flush(dsq_ws *ws)
{
    if (ws->fatal)
        return -1;
    for (int round = 0; round < 2; round++) {
        if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) {
            ws->fatal = true;
            return -1;
        }
        if (!ws->close_pending || wslay_event_get_queued_msg_count(ws->ctx) > 0)
            break;
        if (queue_pending_close(ws) != 0) { /* the data is out: now the close */
            ws->fatal = true;
            return -1;
        }
    }
    return 0;
}

int dsq_ws_feed(dsq_ws *ws, const uint8_t *p, size_t n)
{
    if (ws->fatal)
        return -1;
    ws->in = p;
    ws->in_len = n;
    /* Input after our read side shut (close received, or a violation) is
     * dropped, as RFC 6455 says data after a close frame is. */
    if (wslay_event_get_read_enabled(ws->ctx) && wslay_event_recv(ws->ctx) != 0) {
        ws->fatal = true;
        return -1;
    }
    ws->in = NULL;
    ws->in_len = 0;
    return dsq_ws_flush(ws);
}

/* A server's frame header (RFC 6455 5.2: unmasked, one frame); its length. */
static size_t frame_header(uint8_t h[10], bool binary, size_t n)
{
    h[0] = 0x80 | (binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME);
    if (n < 126) {
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xFFFF) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    return 10;
}

int dsq_ws_send(dsq_ws *ws, bool binary, const void *p, size_t n)
{
    struct wslay_event_msg msg = {
        .opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
        .msg = p,
        .msg_length = n,
    };
    if (ws->fatal || ws->close_pending || wslay_event_get_close_sent(ws->ctx))
        return -1;
    /* Nothing queued and no frame half sent: the frame can go to the sink
     * as it is, without wslay's copy of the message. */
    if (ws->cb->write_frame != NULL && wslay_event_get_write_enabled(ws->ctx) &&
        !wslay_event_want_write(ws->ctx)) {
        uint8_t h[10];
        size_t hl = frame_header(h, binary, n);
        if (ws->cb->write_frame(ws->ud, h, hl, p, n))
            return 0;
    }
    return wslay_event_queue_msg(ws->ctx, &msg) == 0 ? 0 : -1;
}

int dsq_ws_ping(dsq_ws *ws)
{
    struct wslay_event_msg msg = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
    if (ws->fatal || ws->close_pending || wslay_event_get_close_sent(ws->ctx))
        return -1;
    return wslay_event_queue_msg(ws->ctx, &msg) == 0 ? 0 : -1;
}

int dsq_ws_close(dsq_ws *ws, uint16_t code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123; /* a control frame carries at most 125 bytes */
    if (ws->fatal)
        return -1;
    if (ws->close_pending)
        return 0;
    ws->close_pending = true;
    ws->close_code = code;
    memcpy(ws->close_reason, reason ? reason : "", rlen);
    ws->close_reason[rlen] = '\0';
    return queue_pending_close(ws);
}

bool dsq_ws_finished(const dsq_ws *ws)
{
    return ws->fatal ||
           (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx));
}

bool dsq_ws_closing(const dsq_ws *ws)
{
    return ws->fatal || ws->close_pending || wslay_event_get_close_sent(ws->ctx) ||
           !wslay_event_get_write_enabled(ws->ctx);
}

size_t dsq_ws_queued(const dsq_ws *ws) { return wslay_event_get_queued_msg_length(ws->ctx); }

uint16_t dsq_ws_close_code_sent(const dsq_ws *ws)
{
    if (!wslay_event_get_close_sent(ws->ctx))
        return 0;
    return wslay_event_get_status_code_sent(ws->ctx);
}

uint16_t dsq_ws_close_code_received(const dsq_ws *ws)
{
    if (!wslay_event_get_close_received(ws->ctx))
        return 0;
    return wslay_event_get_status_code_received(ws->ctx);
}
