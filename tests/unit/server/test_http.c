/* Unit tests: server/http — the request codec and response heads. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"

typedef struct sink {
    dsq_http_req *reqs[64];
    int n;
    int heads;
    int pause_every;   /* on_request asks to pause every Nth request */
    bool reject;       /* on_head refuses */
    bool discard;      /* on_head sets discard_body */
} sink;

static int on_head(void *ud, dsq_http_req *r)
{
    sink *s = ud;
    s->heads++;
    if (s->discard)
        r->discard_body = true;
    return s->reject ? 1 : 0;
}

static int on_request(void *ud, dsq_http_req *r)
{
    sink *s = ud;
    cr_assert_lt(s->n, 64);
    s->reqs[s->n++] = r;
    return s->pause_every && s->n % s->pause_every == 0 ? 1 : 0;
}

static const dsq_http_parser_cb cbs = {on_head, on_request};

static dsq_http_parser p;
static sink s;

static void setup(void)
{
    memset(&s, 0, sizeof s);
    dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
}

static void teardown(void)
{
    for (int i = 0; i < s.n; i++)
        dsq_http_req_free(s.reqs[i]);
    dsq_http_parser_free(&p);
}

static int feed(const char *text, size_t *used)
{
    size_t u = 0;
    int rv = dsq_http_parser_feed(&p, text, strlen(text), &u);
    if (used)
        *used = u;
    return rv;
}

TestSuite(http, .init = setup, .fini = teardown);

Test(http, simple_get)
{
    size_t used;
    const char *req = "GET /v1/db/x/query?token=a%20b&x=1 HTTP/1.1\r\n"
                      "Host: localhost\r\n"
                      "X-Pad:   padded value  \r\n"
                      "X-Empty:\r\n"
                      "\r\n";
    cr_assert_eq(feed(req, &used), DSQ_HTTP_OK);
    cr_assert_eq(used, strlen(req));
    cr_assert_eq(s.n, 1);
    dsq_http_req *r = s.reqs[0];
    cr_assert_eq(r->method, HTTP_GET);
    cr_assert_str_eq(r->path, "/v1/db/x/query");
    cr_assert_str_eq(r->query, "token=a%20b&x=1");
    cr_assert_str_eq(r->target, "/v1/db/x/query?token=a%20b&x=1");
    cr_assert(r->keep_alive);
    cr_assert_eq(r->content_length, -1);
    cr_assert_eq(r->nheaders, 3);
    size_t len;
    cr_assert_str_eq(dsq_http_header_get(r, "HOST", &len), "localhost");
    cr_assert_eq(len, 9);
    cr_assert_str_eq(dsq_http_header_get(r, "x-pad", NULL), "padded value");
    cr_assert_str_eq(dsq_http_header_get(r, "x-empty", &len), "");
    cr_assert_eq(len, 0);
    cr_assert_null(dsq_http_header_get(r, "missing", NULL));
    char v[32];
    cr_assert_eq(dsq_http_query_get(r, "token", v, sizeof v), 3);
    cr_assert_str_eq(v, "a b");
    cr_assert_eq(dsq_http_query_get(r, "x", v, sizeof v), 1);
    cr_assert_eq(dsq_http_query_get(r, "nope", v, sizeof v), -1);
    cr_assert_eq(dsq_http_query_get(r, "token", v, 3), -1, "too long for the buffer");
    cr_assert(dsq_http_parser_idle(&p));
}

Test(http, keep_alive_rules)
{
    const char *cases[] = {"GET / HTTP/1.0\r\n\r\n",
                           "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                           "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                           "GET / HTTP/1.1\r\n\r\n"};
    bool want[] = {false, true, false, true};
    for (int i = 0; i < 4; i++) {
        dsq_http_parser_free(&p);
        dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
        cr_assert_eq(feed(cases[i], NULL), DSQ_HTTP_OK);
        cr_assert_eq(s.n, i + 1);
        cr_assert_eq(s.reqs[i]->keep_alive, want[i], "case %d", i);
    }
    cr_assert_eq(s.reqs[0]->http_minor, 0);
}

Test(http, nothing_after_connection_close)
{
    /* Requests pipelined past the client's own "Connection: close" are
     * dropped (llhttp consumes and ignores them), never delivered. */
    int rv = feed("GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", NULL);
    cr_assert(rv == DSQ_HTTP_OK || rv == DSQ_HTTP_ERROR);
    cr_assert_eq(s.n, 1);
}

Test(http, pipelined_in_order)
{
    cr_assert_eq(feed("GET /a HTTP/1.1\r\n\r\n"
                      "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                      "HEAD /c HTTP/1.1\r\n\r\n",
                      NULL),
                 DSQ_HTTP_OK);
    cr_assert_eq(s.n, 3);
    cr_assert_str_eq(s.reqs[0]->path, "/a");
    cr_assert_str_eq(s.reqs[1]->path, "/b");
    cr_assert_eq(s.reqs[1]->body.len, 5);
    cr_assert(memcmp(s.reqs[1]->body.data, "hello", 5) == 0);
    cr_assert_eq(s.reqs[1]->content_length, 5);
    cr_assert_str_eq(s.reqs[2]->path, "/c");
    cr_assert_eq(s.reqs[2]->method, HTTP_HEAD);
}

Test(http, byte_at_a_time)
{
    const char *req = "POST /x?q=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                      "X-Long-Header-Name: some value\r\n\r\n"
                      "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n";
    for (size_t i = 0; req[i]; i++) {
        size_t used;
        cr_assert_eq(dsq_http_parser_feed(&p, req + i, 1, &used), DSQ_HTTP_OK, "at byte %zu", i);
        cr_assert_eq(used, 1);
    }
    cr_assert_eq(s.n, 1);
    dsq_http_req *r = s.reqs[0];
    cr_assert(r->chunked);
    cr_assert_eq(r->body.len, 7);
    cr_assert(memcmp(r->body.data, "abcdefg", 7) == 0);
    cr_assert_str_eq(dsq_http_header_get(r, "x-long-header-name", NULL), "some value");
    cr_assert_str_eq(r->query, "q=1");
    /* The trailer is counted, not kept. */
    cr_assert_null(dsq_http_header_get(r, "trailer", NULL));
}

Test(http, body_too_large_by_length)
{
    cr_assert_eq(feed("POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 413);
    cr_assert_eq(s.n, 0);
}

Test(http, body_too_large_chunked)
{
    char big[6000];
    int n = snprintf(big, sizeof big, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n");
    memset(big + n, 'a', 4096);
    strcpy(big + n + 4096, "\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
    cr_assert_eq(feed(big, NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 413);
}

Test(http, discarded_body_counts_but_is_not_kept)
{
    s.discard = true;
    cr_assert_eq(feed("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n", NULL),
                 DSQ_HTTP_OK);
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.reqs[0]->body.len, 0);
}

Test(http, headers_too_large)
{
    char big[2048];
    int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', 1100);
    strcpy(big + n + 1100, "\r\n\r\n");
    cr_assert_eq(feed(big, NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 431);
}

Test(http, target_too_long)
{
    char big[2048];
    int n = snprintf(big, sizeof big, "GET /");
    memset(big + n, 'a', 1100);
    strcpy(big + n + 1100, " HTTP/1.1\r\n\r\n");
    cr_assert_eq(feed(big, NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 414);
}

Test(http, too_many_headers)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_http_parser_free(&p);
    dsq_http_parser_init(&p, &cbs, &s, 1 << 20, 4096);
    dsq_buf_puts(&b, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 101; i++)
        dsq_buf_printf(&b, "X-%d: v\r\n", i);
    dsq_buf_puts(&b, "\r\n");
    cr_assert_eq(feed(b.data, NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 431);
    dsq_buf_free(&b);
}

Test(http, garbage_is_400)
{
    cr_assert_eq(feed("\x16\x03\x01\x02\x00garbage\r\n\r\n", NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
    cr_assert_not_null(p.err_reason);
}

Test(http, bad_content_length_is_400)
{
    cr_assert_eq(feed("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
}

Test(http, both_length_and_chunked_is_400)
{
    /* Request smuggling: llhttp refuses the pair. */
    cr_assert_eq(feed("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                      NULL),
                 DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
}

Test(http, http2_preface)
{
    cr_assert_eq(feed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NULL), DSQ_HTTP_ERROR);
    cr_assert(p.err_status == 505 || p.err_status == 400);
}

Test(http, expect_continue_flag)
{
    cr_assert_eq(feed("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", NULL),
                 DSQ_HTTP_OK);
    cr_assert_eq(s.heads, 1);
    cr_assert_eq(s.n, 0);
    cr_assert(dsq_http_parser_in_body(&p));
    cr_assert(p.cur->expect_continue);
    cr_assert_eq(feed("ok", NULL), DSQ_HTTP_OK);
    cr_assert_eq(s.n, 1);
}

Test(http, upgrade_stops_the_parser)
{
    const char *req = "GET /v1/rpc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    char all[512];
    snprintf(all, sizeof all, "%s\x81\x85", req);
    size_t used;
    cr_assert_eq(feed(all, &used), DSQ_HTTP_UPGRADE);
    cr_assert_eq(used, strlen(req), "frame bytes must be left for WebSocket");
    cr_assert_eq(s.n, 1);
    cr_assert(s.reqs[0]->upgrade);
}

Test(http, pause_and_resume)
{
    s.pause_every = 1;
    const char *two = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    size_t used;
    cr_assert_eq(feed(two, &used), DSQ_HTTP_PAUSED);
    cr_assert_eq(s.n, 1);
    cr_assert_eq(used, strlen("GET /1 HTTP/1.1\r\n\r\n"));
    dsq_http_parser_resume(&p);
    size_t used2;
    cr_assert_eq(dsq_http_parser_feed(&p, two + used, strlen(two) - used, &used2), DSQ_HTTP_PAUSED);
    cr_assert_eq(used2, strlen(two) - used);
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.reqs[1]->path, "/2");
}

Test(http, reject_at_head)
{
    s.reject = true;
    cr_assert_eq(feed("POST /x HTTP/1.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", NULL),
                 DSQ_HTTP_REJECT);
    dsq_http_req *r = dsq_http_parser_take(&p);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->path, "/x");
    cr_assert_eq(r->content_length, 100);
    dsq_http_req_free(r);
}

Test(http, incomplete_head_is_not_idle)
{
    cr_assert(dsq_http_parser_idle(&p));
    cr_assert_eq(feed("GET / HT", NULL), DSQ_HTTP_OK);
    cr_assert_not(dsq_http_parser_idle(&p));
    cr_assert_not(dsq_http_parser_in_body(&p));
}

Test(http, header_tokens)
{
    cr_assert_eq(feed("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
                      "Upgrade: foo\r\nUpgrade: WebSocket\r\n\r\n",
                      NULL),
                 DSQ_HTTP_UPGRADE);
    cr_assert_eq(s.n, 1);
    dsq_http_req *r = s.reqs[0];
    cr_assert(dsq_http_header_has_token(r, "connection", "upgrade"));
    cr_assert(dsq_http_header_has_token(r, "upgrade", "websocket"));
    cr_assert_not(dsq_http_header_has_token(r, "upgrade", "web"));
}

Test(http, percent_decoding)
{
    char out[32];
    cr_assert_eq(dsq_http_pct_decode("a%41b", 5, out), 3);
    cr_assert_str_eq(out, "aAb");
    cr_assert_eq(dsq_http_pct_decode("a+b", 3, out), 3);
    cr_assert_str_eq(out, "a+b");
    cr_assert_eq(dsq_http_pct_decode("%4", 2, out), -1);
    cr_assert_eq(dsq_http_pct_decode("%zz", 3, out), -1);
    cr_assert_eq(dsq_http_pct_decode("a%00", 4, out), -1);
}

Test(http, format_head)
{
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_http_format_head(&b, 404, "application/json", 12, true, "X-A: 1\r\n"), 0);
    cr_assert(strncmp(b.data, "HTTP/1.1 404 Not Found\r\nDate: ", 30) == 0);
    cr_assert(strstr(b.data, "\r\nContent-Type: application/json\r\n") != NULL);
    cr_assert(strstr(b.data, "\r\nContent-Length: 12\r\n") != NULL);
    cr_assert(strstr(b.data, "\r\nConnection: keep-alive\r\n") != NULL);
    cr_assert(strstr(b.data, "\r\nX-A: 1\r\n\r\n") != NULL);
    dsq_buf_reset(&b);
    cr_assert_eq(dsq_http_format_head(&b, 200, NULL, -1, false, NULL), 0);
    cr_assert(strstr(b.data, "Transfer-Encoding: chunked\r\n") != NULL);
    cr_assert(strstr(b.data, "Connection: close\r\n\r\n") != NULL);
    cr_assert_null(strstr(b.data, "Content-Type"));
    dsq_buf_free(&b);
    cr_assert_str_eq(dsq_http_reason(431), "Request Header Fields Too Large");
}

/* The path is copied within the request's own storage when the head
 * completes; that copy must hold wherever the storage's growth falls, so
 * sweep the lengths of the target and of a header across its doublings. */
static int sweep_checked;
static char sweep_path[1024], sweep_query[1024], sweep_ua[1024];

static int sweep_on_request(void *ud, dsq_http_req *r)
{
    (void)ud;
    cr_assert_str_eq(r->path, sweep_path);
    cr_assert_str_eq(r->query, sweep_query);
    cr_assert_str_eq(dsq_http_header_get(r, "user-agent", NULL), sweep_ua);
    sweep_checked++;
    dsq_http_req_free(r);
    return 0;
}

static void sweep_one(dsq_http_parser *sp, size_t path_len, size_t query_len, size_t ua_len)
{
    sweep_path[0] = '/';
    memset(sweep_path + 1, 'p', path_len - 1);
    sweep_path[path_len] = '\0';
    memset(sweep_query, 'q', query_len);
    sweep_query[query_len] = '\0';
    memset(sweep_ua, 'u', ua_len);
    sweep_ua[ua_len] = '\0';
    char req[4096];
    int n = snprintf(req, sizeof req, "GET %s%s%s HTTP/1.1\r\nHost: h\r\nUser-Agent: %s\r\n\r\n",
                     sweep_path, query_len ? "?" : "", sweep_query, sweep_ua);
    cr_assert(n > 0 && (size_t)n < sizeof req);
    size_t used = 0;
    int before = sweep_checked;
    cr_assert_eq(dsq_http_parser_feed(sp, req, (size_t)n, &used), DSQ_HTTP_OK,
                 "path %zu query %zu user-agent %zu: %s", path_len, query_len, ua_len,
                 sp->err_reason ? sp->err_reason : "?");
    cr_assert_eq(sweep_checked, before + 1);
}

Test(http_sweep, path_copy_at_every_length)
{
    static const dsq_http_parser_cb sweep_cbs = {on_head, sweep_on_request};
    sink ss;
    memset(&ss, 0, sizeof ss);
    dsq_http_parser sp;
    dsq_http_parser_init(&sp, &sweep_cbs, &ss, 1 << 16, 4096);
    for (size_t ua = 1; ua <= 300; ua++)
        sweep_one(&sp, 17, 0, ua);
    for (size_t ua = 1; ua <= 300; ua++)
        sweep_one(&sp, 17, 5, ua);
    for (size_t len = 1; len <= 600; len++) {
        sweep_one(&sp, len, 0, 10);
        sweep_one(&sp, 16, len, 10);
    }
    dsq_http_parser_free(&sp);
}

/* ---- framing that a proxy in front may read differently ----------------- */

Test(http, chunk_data_must_end_in_crlf)
{
    const char *req = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "12\r\n{\"id\":1,\"x\":12345}XX0\r\n\r\n"
                      "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    cr_assert_eq(feed(req, NULL), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
    cr_assert_eq(s.n, 0, "neither the request nor the one after it is handed over");
}

Test(http, chunk_crlf_checked_across_feeds)
{
    /* The chunk's data ends a feed; its CRLF comes (wrong) in the next
     * ones, split at every point. */
    const char *head = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc";
    size_t used;
    cr_assert_eq(feed(head, &used), DSQ_HTTP_OK);
    cr_assert_eq(feed("\r", &used), DSQ_HTTP_OK);
    cr_assert_eq(feed("X0\r\n\r\n", &used), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
    cr_assert_eq(s.n, 0);
}

Test(http, chunk_crlf_wrong_first_byte_in_next_feed)
{
    size_t used;
    cr_assert_eq(feed("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", &used),
                 DSQ_HTTP_OK);
    cr_assert_eq(feed("\n\n0\r\n\r\n", &used), DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
}

Test(http, chunks_with_crlf_split_anywhere_are_fine)
{
    /* Every split of a good chunked request into two feeds parses. */
    const char *req = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    size_t n = strlen(req);
    for (size_t cut = 1; cut < n; cut++) {
        dsq_http_parser_free(&p);
        for (int i = 0; i < s.n; i++)
            dsq_http_req_free(s.reqs[i]);
        memset(&s, 0, sizeof s);
        dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
        size_t used;
        cr_assert_eq(dsq_http_parser_feed(&p, req, cut, &used), DSQ_HTTP_OK, "cut %zu", cut);
        cr_assert_eq(dsq_http_parser_feed(&p, req + cut, n - cut, &used), DSQ_HTTP_OK, "cut %zu", cut);
        cr_assert_eq(s.n, 1);
        cr_assert_eq(s.reqs[0]->body.len, 5);
        cr_assert(memcmp(s.reqs[0]->body.data, "abcde", 5) == 0);
    }
}

Test(http, transfer_encoding_must_be_exactly_chunked)
{
    static const char *const bad[] = {
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: \r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsq_http_parser_free(&p);
        memset(&s, 0, sizeof s);
        dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
        char req[512];
        snprintf(req, sizeof req, "POST /a HTTP/1.1\r\nHost: h\r\n%s\r\n5\r\nhello\r\n0\r\n\r\n", bad[i]);
        cr_assert_eq(feed(req, NULL), DSQ_HTTP_ERROR, "%s", bad[i]);
        cr_assert_eq(p.err_status, 400, "%s", bad[i]);
        cr_assert_eq(s.heads, 0, "%s: refused before on_head", bad[i]);
        cr_assert_eq(s.n, 0, "%s", bad[i]);
    }
    /* HTTP/1.0 has no chunked coding: a proxy would read the body otherwise. */
    dsq_http_parser_free(&p);
    memset(&s, 0, sizeof s);
    dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
    cr_assert_eq(feed("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                      NULL),
                 DSQ_HTTP_ERROR);
    cr_assert_eq(p.err_status, 400);
    /* Exactly chunked, in any case, with spaces around it, is fine. */
    dsq_http_parser_free(&p);
    dsq_http_parser_init(&p, &cbs, &s, 1024, 4096);
    cr_assert_eq(feed("POST /a HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                      NULL),
                 DSQ_HTTP_OK);
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.reqs[0]->body.len, 5);
}

Test(http, error_statuses)
{
    for (int i = 0; i < DSQ__CODE_COUNT; i++) {
        int st = dsq_http_status_of((dsq_code)i);
        cr_assert(st == 400 || st == 401 || st == 403 || st == 404 || st == 408 || st == 409 ||
                      st == 413 || st == 429 || st == 500 || st == 503,
                  "%s -> %d", dsq_code_name((dsq_code)i), st);
    }
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_INVALID_REQUEST), 400);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_UNAUTHORIZED), 401);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_FORBIDDEN), 403);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_TABLE_NOT_FOUND), 404);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_TIMEOUT), 408);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_CONSTRAINT_VIOLATION), 409);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_BUFFER_OVERFLOW), 413);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_QUOTA_EXCEEDED), 429);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_NOT_PRIMARY), 503);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_INTERNAL_ERROR), 500);
    cr_assert_eq(dsq_http_status_of(DSQ_CODE_RESOURCE_EXHAUSTED), 503);
    cr_assert_eq(dsq_http_status_of((dsq_code)999), 500);
}
