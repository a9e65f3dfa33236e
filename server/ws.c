/* ws — WebSocket handshake and framing over wslay's event API.
 *
 * Divisions: the handshake; wslay callbacks; the session.
 *
 * wslay pulls input through recv_callback and pushes output through
 * send_callback; both report WSLAY_ERR_WOULDBLOCK when there is nothing
 * more to read or no room to write, which is how a non-blocking feed maps
 * onto its blocking-style API. wslay buffers each message whole (bounded
 * by max_message) before on_msg_recv_callback sees it.
 *
 * permessage-deflate (RFC 7692): the server never takes its compression
 * context over from one message to the next (server_no_context_takeover),
 * so a message's compressed form is the same for every session with the
 * same window, and one deflate stream per thread serves them all; a
 * message sent alike to many sessions is compressed once (dsq_alt). A
 * client's messages are inflated in a stream of the session's, made at
 * its first compressed message, and bounded by max_message once
 * inflated.
 *
 * The frame scan: wslay 1.1 looks at a frame's header only once payload
 * bytes follow it, so a header declaring more than max_message was
 * answered only when the peer went on sending; and it echoes a close frame
 * whose payload is one byte (no code) as an empty close, and does not look
 * at a close reason's UTF-8. So the input is scanned, frame by frame,
 * before wslay reads it: a data frame whose header takes its message past
 * max_message is refused with 1009 as soon as the header is in, an
 * unmasked frame or an oversized or fragmented control frame with 1002,
 * and a close frame with a one-byte payload or an invalid code with 1002,
 * one whose reason is not UTF-8 with 1007. wslay is given the bytes before
 * the offending frame only, so it neither reads that frame nor answers
 * it. */
#include "server/ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>
#include <zlib.h>

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

/* ---- permessage-deflate: the offer ---------------------------------------- */

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *trim_end(const char *b, const char *e)
{
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return e;
}

/* A window_bits value, [vb, ve): 8 to 15 without a leading zero, else -1
 * (also when there is none: vb NULL). */
static int window_bits(const char *vb, const char *ve)
{
    if (vb == NULL || ve - vb < 1 || ve - vb > 2 || *vb == '0')
        return -1;
    int v = 0;
    for (const char *q = vb; q < ve; q++) {
        if (*q < '0' || *q > '9')
            return -1;
        v = v * 10 + (*q - '0');
    }
    return v >= 8 && v <= 15 ? v : -1;
}

/* One offer, [b, e): "permessage-deflate; param[=value]; ...". True when
 * it can be accepted; *bits its server_max_window_bits (15 if none),
 * *cnct whether it asks for client_no_context_takeover. */
static bool offer_ok(const char *b, const char *e, int *bits, bool *cnct)
{
    bool seen_snct = false, seen_cnct = false, seen_smwb = false, seen_cmwb = false;
    *bits = 15;
    *cnct = false;
    bool first = true;
    while (b < e) {
        const char *semi = memchr(b, ';', (size_t)(e - b));
        const char *te = semi ? semi : e;
        const char *tb = skip_ows(b, te);
        te = trim_end(tb, te);
        const char *eq = memchr(tb, '=', (size_t)(te - tb));
        const char *ne = trim_end(tb, eq ? eq : te);
        const char *vb = eq ? skip_ows(eq + 1, te) : NULL, *ve = te;
        if (vb && ve - vb >= 2 && *vb == '"' && ve[-1] == '"') {
            vb++;
            ve--;
        }
        if (first) {
            if (eq || !dsq_strn_ieq(tb, (size_t)(ne - tb), "permessage-deflate"))
                return false;
            first = false;
        } else if (dsq_strn_ieq(tb, (size_t)(ne - tb), "server_no_context_takeover")) {
            if (eq || seen_snct)
                return false;
            seen_snct = true;
        } else if (dsq_strn_ieq(tb, (size_t)(ne - tb), "client_no_context_takeover")) {
            if (eq || seen_cnct)
                return false;
            seen_cnct = *cnct = true;
        } else if (dsq_strn_ieq(tb, (size_t)(ne - tb), "server_max_window_bits")) {
            /* zlib's raw deflate has no 8-bit window: such an offer is declined */
            int v = window_bits(vb, ve);
            if (seen_smwb || v < 9)
                return false;
            seen_smwb = true;
            *bits = v;
        } else if (dsq_strn_ieq(tb, (size_t)(ne - tb), "client_max_window_bits")) {
            /* any window the client compresses with inflates in 15 bits */
            if (seen_cmwb)
                return false;
            seen_cmwb = true;
            if (vb && window_bits(vb, ve) < 8)
                return false;
        } else {
            return false; /* a parameter we do not know */
        }
        b = semi ? semi + 1 : e;
    }
    return !first;
}

bool dsq_ws_deflate_accept(const char *hdr, size_t len, dsq_ws_deflate *out, char *resp, size_t resp_len)
{
    const char *p = hdr, *end = hdr + len;
    while (p < end) {
        /* offers are separated by commas; a quoted value holds none here */
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        int bits;
        bool cnct;
        if (offer_ok(p, e, &bits, &cnct)) {
            out->bits = bits;
            out->client_no_context = cnct;
            int n = snprintf(resp, resp_len, "permessage-deflate; server_no_context_takeover%s",
                             cnct ? "; client_no_context_takeover" : "");
            if (bits < 15 && n >= 0 && (size_t)n < resp_len)
                n += snprintf(resp + n, resp_len - (size_t)n, "; server_max_window_bits=%d", bits);
            return n >= 0 && (size_t)n < resp_len;
        }
        p = comma ? comma + 1 : end;
    }
    return false;
}

/* ---- the session -------------------------------------------------------- */

/* What the frame scan knows of the input so far (see the file's head). */
typedef struct ws_scan {
    uint8_t hdr[14];   /* the frame header being read */
    size_t hlen;       /* bytes of it read */
    uint8_t opcode;    /* the current frame's */
    uint8_t mask[4];   /* its masking key */
    uint64_t left;     /* its payload bytes still to come */
    uint64_t msg_len;  /* payload bytes of the data message so far, fragments included */
    uint8_t close[125]; /* a close frame's payload, unmasked */
    size_t close_len;   /* bytes of it read */
    bool done;         /* a violation was found: scan no more */
} ws_scan;

struct dsq_ws {
    wslay_event_context_ptr ctx; /* owned */
    ws_scan scan;                /* the frame scan of the input */
    const dsq_ws_cb *cb;         /* the owner's callbacks */
    void *ud;                    /* passed to cb */
    const uint8_t *in;           /* input being fed */
    size_t in_len;               /* bytes left in `in` */
    bool fatal;                  /* wslay failed: drop the connection */
    bool close_pending;          /* close after the queued messages (see dsq_ws_close) */
    uint16_t close_code;
    char close_reason[124];
    uint64_t max_message;        /* a message's bytes, inflated too */
    bool deflate;                /* permessage-deflate agreed */
    bool client_no_context;      /* the client resets its window at every message */
    int bits;                    /* our window: server_max_window_bits */
    size_t deflate_min;          /* messages this long or longer are compressed */
    z_stream *inf;               /* the client's messages, inflated (made when needed) */
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

/* ---- permessage-deflate: messages ------------------------------------------ */

/* Inflate a client's message: its payload with 00 00 ff ff after it (RFC
 * 7692 7.2.2). 0, 1 when it inflates past max_message, -1 when it is no
 * deflate data, -2 out of memory. */
static int inflate_msg(dsq_ws *ws, const uint8_t *p, size_t n, dsq_buf *out)
{
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    if (ws->inf == NULL) {
        z_stream *z = calloc(1, sizeof *z);
        if (z == NULL)
            return -2;
        if (inflateInit2(z, -15) != Z_OK) {
            free(z);
            return -2;
        }
        ws->inf = z;
    }
    z_stream *z = ws->inf;
    dsq_buf_reset(out);
    int rc = 0;
    bool ended = false;
    for (int part = 0; part < 2 && rc == 0 && !ended; part++) {
        z->next_in = (Bytef *)(part ? tail : p);
        z->avail_in = (uInt)(part ? sizeof tail : n);
        while (rc == 0) {
            if (dsq_buf_reserve(out, 16384) != 0) {
                rc = -2;
                break;
            }
            size_t room = out->cap - out->len - 1;
            z->next_out = (Bytef *)out->data + out->len;
            z->avail_out = (uInt)room;
            int zr = inflate(z, Z_SYNC_FLUSH);
            out->len += room - z->avail_out;
            if (out->len > ws->max_message)
                rc = 1;
            else if (zr == Z_STREAM_END)
                ended = true; /* a block with BFINAL: the message ends there */
            else if (zr != Z_OK && zr != Z_BUF_ERROR)
                rc = -1;
            if (ended || (z->avail_in == 0 && z->avail_out > 0) || (zr == Z_BUF_ERROR && z->avail_out > 0))
                break;
        }
    }
    if (rc != 0 || ended || ws->client_no_context)
        inflateReset(z);
    return rc;
}

/* The thread's deflate streams, one per window size (no context is taken
 * over: each message starts afresh). */
static __thread z_stream *deflaters[16];

/* Compress p[0..n) for a session with window `bits` into out: the deflate
 * data, sync-flushed, without the 00 00 ff ff tail (RFC 7692 7.2.1). 0,
 * or -1 (out of memory). */
static int deflate_msg(int bits, const void *p, size_t n, dsq_buf *out)
{
    z_stream *z = deflaters[bits];
    if (z == NULL) {
        z = calloc(1, sizeof *z);
        if (z == NULL)
            return -1;
        if (deflateInit2(z, 1, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return -1;
        }
        deflaters[bits] = z;
    } else {
        deflateReset(z);
    }
    dsq_buf_reset(out);
    if (dsq_buf_reserve(out, deflateBound(z, (uLong)n) + 16) != 0)
        return -1;
    z->next_in = (Bytef *)p;
    z->avail_in = (uInt)n;
    z->next_out = (Bytef *)out->data;
    z->avail_out = (uInt)(out->cap - 1);
    int zr = deflate(z, Z_SYNC_FLUSH);
    out->len = out->cap - 1 - z->avail_out;
    if ((zr != Z_OK && zr != Z_BUF_ERROR) || z->avail_in != 0 || out->len < 4)
        return -1;
    out->len -= 4; /* the empty stored block's 00 00 ff ff */
    return 0;
}

static __thread dsq_buf inflated; /* the client's message being delivered */
static __thread dsq_buf deflated; /* a message of ours being sent */

void dsq_ws_deflate_cleanup(void)
{
    dsq_buf_free(&inflated);
    dsq_buf_free(&deflated);
    for (int i = 0; i < 16; i++) {
        if (deflaters[i] != NULL) {
            deflateEnd(deflaters[i]);
            free(deflaters[i]);
            deflaters[i] = NULL;
        }
    }
}


static void fail(wslay_event_context_ptr ctx, uint16_t code, const char *reason)
{
    wslay_event_queue_close(ctx, code, (const uint8_t *)reason, strlen(reason));
    wslay_event_shutdown_read(ctx);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user_data)
{
    dsq_ws *ws = user_data;
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return; /* ping, pong and close are handled by wslay itself */
    const uint8_t *msg = arg->msg;
    size_t len = arg->msg_length;
    if (wslay_get_rsv1(arg->rsv)) { /* only allowed once permessage-deflate is agreed */
        int rc = inflate_msg(ws, msg, len, &inflated);
        if (rc == 1) {
            fail(ctx, WSLAY_CODE_MESSAGE_TOO_BIG, "the message inflates past max_message");
            return;
        }
        if (rc != 0) {
            fail(ctx, rc == -2 ? WSLAY_CODE_INTERNAL_SERVER_ERROR : WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA,
                 rc == -2 ? "out of memory" : "the message is not valid deflate data");
            return;
        }
        msg = (const uint8_t *)inflated.data;
        len = inflated.len;
    }
    if (arg->opcode == WSLAY_TEXT_FRAME && !dsq_utf8_valid(msg, len)) {
        fail(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8 in a text message");
        return;
    }
    ws->cb->on_message(ws->ud, arg->opcode == WSLAY_BINARY_FRAME, msg, len);
    if (inflated.cap > (1u << 20))
        dsq_buf_free(&inflated); /* a large message's buffer goes */
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
    ws->max_message = max_message;
    ws->cb = cb;
    ws->ud = ud;
    return ws;
}

void dsq_ws_free(dsq_ws *ws)
{
    if (ws == NULL)
        return;
    wslay_event_context_free(ws->ctx);
    if (ws->inf != NULL) {
        inflateEnd(ws->inf);
        free(ws->inf);
    }
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

/* A close code a peer may send (RFC 6455 7.4): as wslay judges it. */
static bool close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
}

/* A complete frame header in sc->hdr: check it and start its payload.
 * Returns 0, or the close code of a violation (with *why). */
static uint16_t scan_header(ws_scan *sc, uint64_t max_message, const char **why)
{
    const uint8_t *h = sc->hdr;
    bool fin = (h[0] & 0x80) != 0;
    uint8_t opcode = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    size_t o = 2;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        o = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        o = 10;
    }
    if (!(h[1] & 0x80)) {
        *why = "a client frame must be masked";
        return WSLAY_CODE_PROTOCOL_ERROR;
    }
    memcpy(sc->mask, h + o, 4);
    sc->opcode = opcode;
    sc->left = len;
    if (opcode >= 8) {
        if (len > 125 || !fin) {
            *why = "a control frame must be whole and at most 125 bytes";
            return WSLAY_CODE_PROTOCOL_ERROR;
        }
        sc->close_len = 0;
    } else if (opcode <= 2) {
        uint64_t before = opcode == 0 ? sc->msg_len : 0; /* a continuation adds up */
        if (len > max_message || before > max_message - len) {
            *why = "the message is larger than max_message";
            return WSLAY_CODE_MESSAGE_TOO_BIG;
        }
        sc->msg_len = before + len;
    }
    return 0;
}

/* A close frame's payload, complete: check its code and reason. */
static uint16_t scan_close(const ws_scan *sc, const char **why)
{
    if (sc->close_len == 0)
        return 0;
    if (sc->close_len == 1) {
        *why = "a close payload must hold a 2-byte code";
        return WSLAY_CODE_PROTOCOL_ERROR;
    }
    uint16_t code = (uint16_t)(sc->close[0] << 8 | sc->close[1]);
    if (!close_code_valid(code)) {
        *why = "invalid close code";
        return WSLAY_CODE_PROTOCOL_ERROR;
    }
    if (!dsq_utf8_valid(sc->close + 2, sc->close_len - 2)) {
        *why = "invalid UTF-8 in the close reason";
        return WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA;
    }
    return 0;
}

/* Scan p[0..n). Returns 0 when wslay may read all of it; else the close
 * code of a violation (with *why), and *ok says how many bytes wslay may
 * read: those before the offending frame began (in this input). */
static uint16_t scan_input(ws_scan *sc, uint64_t max_message, const uint8_t *p, size_t n,
                           size_t *ok, const char **why)
{
    size_t frame_start = 0; /* where the current frame began, if in this input */
    size_t i = 0;
    while (i < n) {
        if (sc->left == 0 && sc->hlen == 0)
            frame_start = i;
        if (sc->left == 0) { /* in a header */
            sc->hdr[sc->hlen++] = p[i++];
            size_t need = 2;
            if (sc->hlen >= 2) {
                uint8_t l7 = sc->hdr[1] & 0x7f;
                need += (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((sc->hdr[1] & 0x80) ? 4 : 0);
            }
            if (sc->hlen < need)
                continue;
            sc->hlen = 0;
            uint16_t code = scan_header(sc, max_message, why);
            if (code == 0 && sc->opcode == WSLAY_CONNECTION_CLOSE && sc->left == 0)
                code = scan_close(sc, why);
            if (code != 0) {
                *ok = frame_start;
                return code;
            }
            continue;
        }
        size_t take = sc->left < n - i ? (size_t)sc->left : n - i;
        if (sc->opcode == WSLAY_CONNECTION_CLOSE) {
            for (size_t k = 0; k < take; k++, sc->close_len++)
                sc->close[sc->close_len] = p[i + k] ^ sc->mask[sc->close_len % 4];
        }
        i += take;
        sc->left -= take;
        if (sc->left == 0 && sc->opcode == WSLAY_CONNECTION_CLOSE) {
            uint16_t code = scan_close(sc, why);
            if (code != 0) {
                *ok = frame_start;
                return code;
            }
        }
    }
    *ok = n;
    return 0;
}

int dsq_ws_feed(dsq_ws *ws, const uint8_t *p, size_t n)
{
    if (ws->fatal)
        return -1;
    /* Input after our read side shut (close received, or a violation) is
     * dropped, as RFC 6455 says data after a close frame is. */
    if (!wslay_event_get_read_enabled(ws->ctx))
        return dsq_ws_flush(ws);
    size_t ok = n;
    const char *why = NULL;
    uint16_t code = ws->scan.done ? 0 : scan_input(&ws->scan, ws->max_message, p, n, &ok, &why);
    ws->in = p;
    ws->in_len = ok;
    int rv = ok > 0 ? wslay_event_recv(ws->ctx) : 0;
    ws->in = NULL;
    ws->in_len = 0;
    if (rv != 0) {
        ws->fatal = true;
        return -1;
    }
    if (code != 0) {
        ws->scan.done = true;
        if (wslay_event_get_read_enabled(ws->ctx)) /* wslay found nothing wrong before it */
            fail(ws->ctx, code, why);
    }
    return dsq_ws_flush(ws);
}

/* A server's frame header (RFC 6455 5.2: unmasked, one frame); its length. */
static size_t frame_header(uint8_t h[10], bool binary, bool rsv1, size_t n)
{
    h[0] = 0x80 | (rsv1 ? 0x40 : 0) | (binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME);
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

static int send_frame(dsq_ws *ws, bool binary, bool rsv1, const void *p, size_t n)
{
    struct wslay_event_msg msg = {
        .opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
        .msg = p,
        .msg_length = n,
    };
    /* Nothing queued and no frame half sent: the frame can go to the sink
     * as it is, without wslay's copy of the message. */
    if (ws->cb->write_frame != NULL && wslay_event_get_write_enabled(ws->ctx) &&
        !wslay_event_want_write(ws->ctx)) {
        uint8_t h[10];
        size_t hl = frame_header(h, binary, rsv1, n);
        if (ws->cb->write_frame(ws->ud, h, hl, p, n))
            return 0;
    }
    return wslay_event_queue_msg_ex(ws->ctx, &msg, rsv1 ? WSLAY_RSV1_BIT : WSLAY_RSV_NONE) == 0 ? 0 : -1;
}

/* alt->kind: ALT_DEFLATED + bits, the compressed form for that window;
 * ALT_AS_IS + bits, compressed it was no smaller. */
#define ALT_DEFLATED 0x100
#define ALT_AS_IS 0x200

int dsq_ws_send_alt(dsq_ws *ws, bool binary, const void *p, size_t n, dsq_alt *alt)
{
    if (ws->fatal || ws->close_pending || wslay_event_get_close_sent(ws->ctx))
        return -1;
    if (!ws->deflate || n < ws->deflate_min)
        return send_frame(ws, binary, false, p, n);
    if (alt != NULL && alt->kind == ALT_DEFLATED + ws->bits)
        return send_frame(ws, binary, true, alt->buf.data, alt->buf.len);
    if (alt != NULL && alt->kind == ALT_AS_IS + ws->bits)
        return send_frame(ws, binary, false, p, n);
    bool smaller = deflate_msg(ws->bits, p, n, &deflated) == 0 && deflated.len < n;
    if (alt != NULL) {
        dsq_buf_reset(&alt->buf);
        alt->kind = !smaller ? ALT_AS_IS + ws->bits
                    : dsq_buf_append(&alt->buf, deflated.data, deflated.len) == 0 ? ALT_DEFLATED + ws->bits
                                                                              : 0;
    }
    int rc = smaller ? send_frame(ws, binary, true, deflated.data, deflated.len) : send_frame(ws, binary, false, p, n);
    if (deflated.cap > (1u << 20))
        dsq_buf_free(&deflated);
    return rc;
}

int dsq_ws_send(dsq_ws *ws, bool binary, const void *p, size_t n) { return dsq_ws_send_alt(ws, binary, p, n, NULL); }

void dsq_ws_set_deflate(dsq_ws *ws, const dsq_ws_deflate *d, size_t min_bytes)
{
    ws->deflate = true;
    ws->bits = d->bits >= 9 && d->bits <= 15 ? d->bits : 15;
    ws->client_no_context = d->client_no_context;
    ws->deflate_min = min_bytes;
    wslay_event_config_set_allowed_rsv_bits(ws->ctx, WSLAY_RSV1_BIT);
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
