/* fuzz_http — HTTP/1.1 request parsing: bytes from a client through
 * dsq_http_parser_feed (llhttp and our callbacks), in pieces of a size the
 * input's first byte picks, then what the server does with each request's
 * head: the route, the header lookups, the query decoder, the bearer token,
 * the WebSocket handshake and permessage-deflate offer checks.
 *
 * Input: byte 0 = piece size (0: all at once) and whether on_head rejects
 * (bit 7) or on_request pauses (bit 6); the rest is the byte stream.
 *
 * A request that pauses the parser stays queued until it resumes, as in
 * conn.c. regressions/http/ holds what this target found: a use-after-free
 * in cb_headers_complete (it hit it in its first seconds), and a read of
 * a request cb_message_complete had handed on (pause-frees-request), both
 * fixed. */
#include <stdbool.h>

#include "server/auth.h"
#include "server/http.h"
#include "server/router.h"
#include "server/ws.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

typedef struct state {
    bool reject;         /* on_head refuses every request */
    bool pause;          /* on_request asks to pause */
    int requests;        /* handed over */
    dsq_http_req *held;  /* the request a pause kept (freed on resume) */
} state;

/* What the connection and its handlers read of a request's head. */
static void use_head(dsq_http_req *req)
{
    dsq_route_match m;
    dsq_route(req->method, req->path, &m);
    size_t len;
    const char *auth = dsq_http_header_get(req, "authorization", &len);
    if (auth != NULL) {
        size_t tl;
        const char *tok = dsq_auth_bearer(auth, len, &tl);
        if (tok != NULL && tl > 0)
            (void)tok[tl - 1];
    }
    (void)dsq_http_header_has_token(req, "connection", "upgrade");
    char out[256];
    (void)dsq_http_query_get(req, "db", out, sizeof out);
    (void)dsq_http_query_get(req, "lsn", out, sizeof out);
    (void)dsq_http_query_get(req, "", out, 1);
    size_t plen = strlen(req->path);
    char *dec = malloc(plen + 1);
    if (dec != NULL) {
        (void)dsq_http_pct_decode(req->path, plen, dec);
        free(dec);
    }
    char accept[DSQ_WS_ACCEPT_LEN + 1];
    const char *why;
    (void)dsq_ws_handshake_check(req, accept, &why);
    const char *ext = dsq_http_header_get(req, "sec-websocket-extensions", &len);
    if (ext != NULL) {
        dsq_ws_deflate d;
        char resp[128];
        (void)dsq_ws_deflate_accept(ext, len, &d, resp, sizeof resp);
    }
}

static int on_head(void *ud, dsq_http_req *req)
{
    state *st = ud;
    use_head(req);
    return st->reject;
}

static int on_request(void *ud, dsq_http_req *req)
{
    state *st = ud;
    st->requests++;
    use_head(req);
    if (req->body.len > 0)
        (void)((volatile char *)req->body.data)[req->body.len - 1];
    /* A request that pauses the parser is still queued (as in conn.c). */
    if (st->pause && !req->upgrade) {
        dsq_http_req_free(st->held);
        st->held = req;
        return 1;
    }
    dsq_http_req_free(req);
    return 0;
}

static const dsq_http_parser_cb cb = {on_head, on_request};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    state st = {.reject = (data[0] & 0x80) != 0, .pause = (data[0] & 0x40) != 0};
    size_t piece = data[0] & 0x3f;
    const char *p = (const char *)data + 1;
    size_t left = size - 1;
    dsq_http_parser hp;
    dsq_http_parser_init(&hp, &cb, &st, 8192, 65536);
    bool done = false;
    while (left > 0 && !done) {
        size_t n = piece == 0 || piece > left ? left : piece;
        size_t consumed = 0;
        int rc = dsq_http_parser_feed(&hp, p, n, &consumed);
        if (consumed > n)
            abort(); /* the contract: never more than was given */
        switch (rc) {
        case DSQ_HTTP_OK:
            break;
        case DSQ_HTTP_PAUSED:
            dsq_http_parser_resume(&hp);
            break;
        case DSQ_HTTP_REJECT:
            dsq_http_req_free(dsq_http_parser_take(&hp));
            done = true;
            break;
        case DSQ_HTTP_UPGRADE: /* the rest would go to the WebSocket */
        case DSQ_HTTP_ERROR:
        default:
            if (rc == DSQ_HTTP_ERROR && (hp.err_status < 400 || hp.err_reason == NULL))
                abort(); /* an error always says what to answer */
            done = true;
            break;
        }
        dsq_http_req_free(st.held);
        st.held = NULL;
        (void)dsq_http_parser_idle(&hp);
        (void)dsq_http_parser_in_body(&hp);
        p += consumed;
        left -= consumed;
        if (consumed == 0 && rc == DSQ_HTTP_OK)
            break;
    }
    dsq_http_req_free(st.held);
    dsq_http_parser_free(&hp);
    return 0;
}
