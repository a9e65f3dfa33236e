/* http — the HTTP/1.1 codec over llhttp.
 *
 * Divisions: request storage; llhttp callbacks (head, body, completion);
 * feeding; header and query helpers; response heads.
 *
 * While a head is parsed its bytes (target, names, values, each followed by
 * a NUL) are appended to req->raw and remembered by offset, because raw may
 * move as it grows; when the head is complete the offsets become pointers
 * and raw never grows again (trailers of chunked bodies are counted against
 * the limit and dropped).
 *
 * llhttp 8.1 (Debian's) is lenient where a proxy in front of us may not
 * be, which is how requests get smuggled: it skips the two bytes after a
 * chunk's data without looking at them, and it takes any Transfer-Encoding
 * ending in "chunked" as chunked. So we check both ourselves: the bytes
 * after each chunk's data must be CRLF (checked in cb_body, and at the start
 * of the next feed when they had not arrived yet), and a request may carry
 * Transfer-Encoding only as exactly "chunked", once, in HTTP/1.1, and
 * never together with Content-Length. Each violation is a 400 that ends
 * the connection. */
#include "server/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/util.h"

#define MAX_HEADERS 100

enum { H_NONE, H_FIELD, H_VALUE, H_DONE };

/* Offsets of one header in req->raw while the head is still growing. */
struct dsq_http_hoff {
    size_t name, value, value_len;
};

/* ---- request storage ------------------------------------------------------ */

void dsq_http_req_free(dsq_http_req *req)
{
    if (req == NULL)
        return;
    free(req->headers);
    dsq_buf_free(&req->body);
    dsq_buf_free(&req->raw);
    dsq_buf_free(&req->out);
    free(req->token);
    free(req);
}

static dsq_http_parser *parser_of(llhttp_t *llh) { return llh->data; }

static int fail(dsq_http_parser *p, int status, const char *reason)
{
    p->err_status = status;
    p->err_reason = reason;
    return HPE_USER;
}

static int add_head_bytes(dsq_http_parser *p, size_t n)
{
    p->head_bytes += n;
    return p->head_bytes > p->max_header_size;
}

/* ---- llhttp callbacks ------------------------------------------------------ */

static int cb_message_begin(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    dsq_http_req *req = calloc(1, sizeof *req);
    if (req == NULL)
        return fail(p, 500, "out of memory");
    req->content_length = -1;
    req->start_ns = dsq_now_ns();
    p->cur = req;
    p->hstate = H_NONE;
    p->noffs = 0;
    p->head_bytes = 0;
    p->target_len = 0;
    p->rejecting = false;
    p->chunk_left = 0;
    p->crlf_want = 0;
    return 0;
}

static int cb_url(llhttp_t *llh, const char *at, size_t len)
{
    dsq_http_parser *p = parser_of(llh);
    if (add_head_bytes(p, len))
        return fail(p, 414, "request target too long");
    p->target_len += len;
    return dsq_buf_append(&p->cur->raw, at, len) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_url_complete(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    return dsq_buf_append(&p->cur->raw, "", 1) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_header_field(llhttp_t *llh, const char *at, size_t len)
{
    dsq_http_parser *p = parser_of(llh);
    if (add_head_bytes(p, len))
        return fail(p, 431, "request headers too large");
    if (p->hstate == H_DONE)
        return 0; /* a trailer: counted, not kept */
    if (p->hstate != H_FIELD) {
        if (p->noffs >= p->max_headers)
            return fail(p, 431, "too many request headers");
        if (p->noffs == p->capoffs) {
            size_t cap = p->capoffs ? p->capoffs * 2 : 16;
            struct dsq_http_hoff *o = realloc(p->offs, cap * sizeof *o);
            if (o == NULL)
                return fail(p, 500, "out of memory");
            p->offs = o;
            p->capoffs = cap;
        }
        p->offs[p->noffs].name = p->cur->raw.len;
        p->offs[p->noffs].value = SIZE_MAX;
        p->offs[p->noffs].value_len = 0;
        p->noffs++;
        p->hstate = H_FIELD;
    }
    return dsq_buf_append(&p->cur->raw, at, len) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_header_field_complete(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    if (p->hstate == H_DONE)
        return 0;
    return dsq_buf_append(&p->cur->raw, "", 1) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_header_value(llhttp_t *llh, const char *at, size_t len)
{
    dsq_http_parser *p = parser_of(llh);
    if (add_head_bytes(p, len))
        return fail(p, 431, "request headers too large");
    if (p->hstate == H_DONE)
        return 0;
    struct dsq_http_hoff *h = &p->offs[p->noffs - 1];
    if (p->hstate != H_VALUE) {
        h->value = p->cur->raw.len;
        p->hstate = H_VALUE;
    }
    h->value_len += len;
    return dsq_buf_append(&p->cur->raw, at, len) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_header_value_complete(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    if (p->hstate == H_DONE)
        return 0;
    struct dsq_http_hoff *h = &p->offs[p->noffs - 1];
    if (h->value == SIZE_MAX) /* empty value: llhttp sent no bytes */
        h->value = p->cur->raw.len;
    p->hstate = H_NONE;
    return dsq_buf_append(&p->cur->raw, "", 1) == 0 ? 0 : fail(p, 500, "out of memory");
}

/* The framing headers of a complete head: Transfer-Encoding, if sent, is
 * exactly one "chunked" in an HTTP/1.1 request and comes without
 * Content-Length. NULL when acceptable, else why not. */
static const char *framing_error(const dsq_http_req *req)
{
    size_t nte = 0, ncl = 0;
    const dsq_http_header *te = NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, "transfer-encoding") == 0) {
            nte++;
            te = &req->headers[i];
        } else if (strcasecmp(req->headers[i].name, "content-length") == 0) {
            ncl++;
        }
    }
    if (nte == 0)
        return NULL;
    if (req->http_minor == 0) /* HTTP/1.0 has no transfer codings (RFC 9112 6.1) */
        return "Transfer-Encoding in an HTTP/1.0 request";
    if (ncl > 0)
        return "both Content-Length and Transfer-Encoding";
    if (nte > 1 || !dsq_strn_ieq(te->value, te->value_len, "chunked"))
        return "Transfer-Encoding other than chunked";
    return NULL;
}

static int cb_headers_complete(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    dsq_http_req *req = p->cur;

    /* Split the target: path gets its own NUL-terminated copy. This is the
     * last growth of raw, so pointers taken after it stay valid. The copy
     * comes from raw itself: room is made first, and only then is the
     * source read (appending raw's bytes to raw would read them from the
     * block a realloc had just freed). */
    size_t tlen = p->target_len;
    const char *q = memchr(req->raw.data, '?', tlen);
    bool has_query = q != NULL;
    size_t plen = has_query ? (size_t)(q - req->raw.data) : tlen;
    size_t path_off = req->raw.len;
    if (dsq_buf_reserve(&req->raw, plen + 1) != 0)
        return fail(p, 500, "out of memory");
    memcpy(req->raw.data + path_off, req->raw.data, plen); /* path_off > tlen ≥ plen: apart */
    req->raw.data[path_off + plen] = '\0';
    req->raw.len += plen + 1;
    req->target = req->raw.data;
    req->path = req->raw.data + path_off;
    req->query = has_query ? req->raw.data + plen + 1 : req->raw.data + tlen;

    req->headers = calloc(p->noffs ? p->noffs : 1, sizeof *req->headers);
    if (req->headers == NULL)
        return fail(p, 500, "out of memory");
    for (size_t i = 0; i < p->noffs; i++) {
        dsq_http_header *h = &req->headers[i];
        char *v = req->raw.data + p->offs[i].value;
        size_t vl = p->offs[i].value_len;
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        v[vl] = '\0';
        h->name = req->raw.data + p->offs[i].name;
        h->value = v;
        h->value_len = vl;
    }
    req->nheaders = p->noffs;
    p->hstate = H_DONE;

    req->method = llh->method;
    req->http_major = llh->http_major;
    req->http_minor = llh->http_minor;
    if (req->http_major != 1)
        return fail(p, 505, "HTTP version not supported");
    const char *bad_framing = framing_error(req);
    if (bad_framing != NULL)
        return fail(p, 400, bad_framing);
    req->chunked = (llh->flags & F_CHUNKED) != 0;
    if (llh->flags & F_CONTENT_LENGTH)
        req->content_length = (int64_t)llh->content_length;
    req->keep_alive = llhttp_should_keep_alive(llh) != 0;
    req->expect_continue = dsq_http_header_has_token(req, "expect", "100-continue");
    if (req->content_length > 0 && (uint64_t)req->content_length > p->max_body_size)
        return fail(p, 413, "request body too large");

    if (p->cb->on_head(p->ud, req) != 0) {
        p->rejecting = true;
        return HPE_PAUSED;
    }
    return 0;
}

static int cb_chunk_header(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    p->chunk_left = llh->content_length; /* 0 for the last chunk: no CRLF of its own */
    return 0;
}

/* Check the CRLF after a chunk's data, as far as the fed bytes reach from
 * `from`; the rest is checked at the start of the next feed. 0, or -1 when
 * a byte is not the one due. */
static int check_crlf(dsq_http_parser *p, const char *from)
{
    while (p->crlf_want > 0 && from < p->feed_end) {
        if (*from++ != (p->crlf_want == 2 ? '\r' : '\n'))
            return -1;
        p->crlf_want--;
    }
    return 0;
}

static int cb_body(llhttp_t *llh, const char *at, size_t len)
{
    dsq_http_parser *p = parser_of(llh);
    dsq_http_req *req = p->cur;
    if (req->body.len + len > p->max_body_size)
        return fail(p, 413, "request body too large");
    if (req->chunked) {
        p->chunk_left -= len < p->chunk_left ? len : p->chunk_left;
        if (p->chunk_left == 0) {
            p->crlf_want = 2;
            if (check_crlf(p, at + len) != 0)
                return fail(p, 400, "chunk data not followed by CRLF");
        }
    }
    if (req->discard_body) {
        req->body.len += len; /* counted for the limit, not kept */
        return 0;
    }
    return dsq_buf_append(&req->body, at, len) == 0 ? 0 : fail(p, 500, "out of memory");
}

static int cb_message_complete(llhttp_t *llh)
{
    dsq_http_parser *p = parser_of(llh);
    dsq_http_req *req = p->cur;
    p->cur = NULL;
    p->hstate = H_NONE;
    bool upgrade = llh->upgrade != 0;
    req->upgrade = upgrade;
    if (req->discard_body)
        req->body.len = 0;
    /* on_request owns req from here (it may free it): only the local is
     * read after. An upgrade makes llhttp stop by itself
     * (HPE_PAUSED_UPGRADE). */
    if (p->cb->on_request(p->ud, req) != 0 && !upgrade)
        return HPE_PAUSED;
    return 0;
}

/* ---- feeding ------------------------------------------------------------- */

void dsq_http_parser_init(dsq_http_parser *p, const dsq_http_parser_cb *cb, void *ud,
                          size_t max_header_size, size_t max_body_size)
{
    memset(p, 0, sizeof *p);
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = cb_message_begin;
    p->settings.on_url = cb_url;
    p->settings.on_url_complete = cb_url_complete;
    p->settings.on_header_field = cb_header_field;
    p->settings.on_header_field_complete = cb_header_field_complete;
    p->settings.on_header_value = cb_header_value;
    p->settings.on_header_value_complete = cb_header_value_complete;
    p->settings.on_headers_complete = cb_headers_complete;
    p->settings.on_chunk_header = cb_chunk_header;
    p->settings.on_body = cb_body;
    p->settings.on_message_complete = cb_message_complete;
    llhttp_init(&p->llh, HTTP_REQUEST, &p->settings);
    p->llh.data = p;
    p->cb = cb;
    p->ud = ud;
    p->max_header_size = max_header_size;
    p->max_headers = MAX_HEADERS;
    p->max_body_size = max_body_size;
}

void dsq_http_parser_free(dsq_http_parser *p)
{
    dsq_http_req_free(p->cur);
    p->cur = NULL;
    free(p->offs);
    p->offs = NULL;
    p->noffs = p->capoffs = 0;
}

int dsq_http_parser_feed(dsq_http_parser *p, const char *data, size_t len, size_t *consumed)
{
    p->feed_end = data + len;
    if (p->crlf_want > 0 && check_crlf(p, data) != 0) {
        *consumed = 0;
        p->err_status = 400;
        p->err_reason = "chunk data not followed by CRLF";
        return DSQ_HTTP_ERROR;
    }
    llhttp_errno_t e = llhttp_execute(&p->llh, data, len);
    if (e == HPE_OK) {
        *consumed = len;
        return DSQ_HTTP_OK;
    }
    const char *pos = llhttp_get_error_pos(&p->llh);
    *consumed = (pos != NULL && pos >= data && pos <= data + len) ? (size_t)(pos - data) : len;
    if (e == HPE_PAUSED)
        return p->rejecting ? DSQ_HTTP_REJECT : DSQ_HTTP_PAUSED;
    if (e == HPE_PAUSED_UPGRADE)
        return DSQ_HTTP_UPGRADE;
    if (p->err_status == 0) {
        if (e == HPE_PAUSED_H2_UPGRADE || e == HPE_INVALID_VERSION) {
            p->err_status = 505;
            p->err_reason = "HTTP version not supported";
        } else {
            p->err_status = 400;
            p->err_reason = llhttp_get_error_reason(&p->llh);
            if (p->err_reason == NULL)
                p->err_reason = llhttp_errno_name(e);
        }
    }
    return DSQ_HTTP_ERROR;
}

void dsq_http_parser_resume(dsq_http_parser *p) { llhttp_resume(&p->llh); }

dsq_http_req *dsq_http_parser_take(dsq_http_parser *p)
{
    if (!p->rejecting)
        return NULL;
    dsq_http_req *req = p->cur;
    p->cur = NULL;
    return req;
}

bool dsq_http_parser_idle(const dsq_http_parser *p) { return p->cur == NULL; }

bool dsq_http_parser_in_body(const dsq_http_parser *p)
{
    return p->cur != NULL && p->hstate == H_DONE;
}

/* ---- header and query helpers ------------------------------------------- */

const char *dsq_http_header_get(const dsq_http_req *req, const char *name, size_t *len)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            if (len)
                *len = req->headers[i].value_len;
            return req->headers[i].value;
        }
    }
    return NULL;
}

bool dsq_http_header_has_token(const dsq_http_req *req, const char *name, const char *tok)
{
    /* A header may be repeated; each copy is a comma-separated list. */
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0)
            continue;
        const char *v = req->headers[i].value;
        while (*v) {
            while (*v == ' ' || *v == '\t' || *v == ',')
                v++;
            const char *e = v;
            while (*e && *e != ',')
                e++;
            const char *t = e;
            while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
                t--;
            if (t > v && dsq_strn_ieq(v, (size_t)(t - v), tok))
                return true;
            v = e;
        }
    }
    return false;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static long pct_decode(const char *in, size_t n, char *out, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hex_digit(in[i + 1]), lo = hex_digit(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            if (c == '\0')
                return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

long dsq_http_pct_decode(const char *in, size_t n, char *out)
{
    return pct_decode(in, n, out, false);
}

long dsq_http_query_get(const dsq_http_req *req, const char *name, char *out, size_t outlen)
{
    const char *q = req->query;
    size_t nlen = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t plen = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        if (klen == nlen && memcmp(q, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : q + plen;
            size_t vlen = eq ? plen - klen - 1 : 0;
            if (vlen + 1 > outlen)
                return -1;
            return pct_decode(v, vlen, out, true);
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    return -1;
}

/* ---- response heads ------------------------------------------------------ */

static const int code_status[DSQ__CODE_COUNT] = {
    [DSQ_CODE_UNKNOWN] = 500,
    [DSQ_CODE_INVALID_REQUEST] = 400,
    [DSQ_CODE_TIMEOUT] = 408,
    [DSQ_CODE_INTERNAL_ERROR] = 500,
    [DSQ_CODE_SYNTAX_ERROR] = 400,
    [DSQ_CODE_TABLE_NOT_FOUND] = 404,
    [DSQ_CODE_COLUMN_NOT_FOUND] = 400,
    [DSQ_CODE_TYPE_MISMATCH] = 400,
    [DSQ_CODE_CONSTRAINT_VIOLATION] = 409,
    [DSQ_CODE_TRANSACTION_NOT_FOUND] = 404,
    [DSQ_CODE_DEADLOCK_DETECTED] = 409,
    [DSQ_CODE_SERIALIZATION_FAILURE] = 409,
    [DSQ_CODE_INVALID_LSN] = 400,
    [DSQ_CODE_SUBSCRIPTION_ERROR] = 400,
    [DSQ_CODE_BUFFER_OVERFLOW] = 413,
    [DSQ_CODE_UNAUTHORIZED] = 401,
    [DSQ_CODE_FORBIDDEN] = 403,
    [DSQ_CODE_RESOURCE_EXHAUSTED] = 503,
    [DSQ_CODE_NOT_PRIMARY] = 503,
    [DSQ_CODE_QUOTA_EXCEEDED] = 429,
};

int dsq_http_status_of(dsq_code code)
{
    if ((unsigned)code >= DSQ__CODE_COUNT || code_status[code] == 0)
        return 500;
    return code_status[code];
}

const char *dsq_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The Date header changes once a second; format it then. */
static const char *http_date(void)
{
    static _Thread_local time_t last;
    static _Thread_local char buf[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

int dsq_http_format_head(dsq_buf *out, int status, const char *ctype, int64_t content_length,
                         bool keep_alive, const char *extra)
{
    int rv = dsq_buf_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: dosqld\r\n", status,
                            dsq_http_reason(status), http_date());
    if (rv == 0 && ctype)
        rv = dsq_buf_printf(out, "Content-Type: %s\r\n", ctype);
    if (rv == 0 && content_length >= 0 && status == 204)
        rv = 0; /* (RFC 9110: never a Content-Length on a 204) */
    else if (rv == 0 && content_length >= 0)
        rv = dsq_buf_printf(out, "Content-Length: %lld\r\n", (long long)content_length);
    else if (rv == 0 && content_length == -1)
        rv = dsq_buf_puts(out, "Transfer-Encoding: chunked\r\n");
    if (rv == 0 && status >= 200)
        rv = dsq_buf_puts(out, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (rv == 0 && extra)
        rv = dsq_buf_puts(out, extra);
    if (rv == 0)
        rv = dsq_buf_puts(out, "\r\n");
    return rv;
}
