/* objstore_s3 — the s3:// backend: S3's REST API over libcurl's multi
 * interface, driven by the store's libuv loop.
 *
 * curl tells the loop which sockets to watch (CURLMOPT_SOCKETFUNCTION:
 * one uv_poll each) and when to call it back (CURLMOPT_TIMERFUNCTION: one
 * uv_timer); the loop hands socket events and timeouts back to
 * curl_multi_socket_action and then collects finished transfers. Each
 * attempt is a fresh easy handle; the multi handle's connection cache
 * keeps connections alive between them.
 *
 * Signing: CURLOPT_AWS_SIGV4 ("aws:amz:REGION:s3") with the key pair as
 * user and password; the payload's SHA-256 is ours (x-amz-content-sha256),
 * so the service checks the body it received against the one we sent.
 * Paths and query strings are built already in SigV4's canonical form
 * (each byte outside RFC 3986's unreserved set percent-encoded, query
 * parameters sorted), so what curl signs is what S3 recomputes. */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/tier/objstore_int.h"

typedef struct xfer xfer;

typedef struct s3 {
    dsq_obj *o;
    CURLM *multi;
    uv_timer_t timer;
    char *base;                      /* scheme://host[:port] the requests go to, no '/' at the end */
    char *sigv4;                     /* "aws:amz:REGION:s3" */
    char *userpwd;                   /* "KEY:SECRET" */
    dsq_list xfers;                  /* begun, not finished (xfer.link) */
    dsq_queue waiting;               /* past max_inflight (dsq_obj_req.link) */
    unsigned inflight;
    uint64_t rnd;
    bool stopping;
} s3;

struct xfer {
    s3 *s;
    dsq_obj_req *r;
    CURL *easy;
    struct curl_slist *hdrs;
    dsq_buf body;                    /* the answer's body */
    dsq_buf token;                   /* list: the next page's continuation token */
    size_t sent;                     /* put: bytes read by curl */
    unsigned tries;                  /* attempts of the current page */
    uv_timer_t retry;
    dsq_lnode link;                  /* on s3.xfers */
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    s3 *s;
} sock;

static uint64_t next_rnd(s3 *s)
{
    /* xorshift64*: jitter, not secrets */
    uint64_t x = s->rnd;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rnd = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- text ---------------------------------------------------------------------------------- */

int dsq__s3_uri_encode(dsq_buf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
        if (plain) {
            if (dsq_buf_append(b, &s[i], 1) != 0)
                return -1;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (dsq_buf_append(b, e, 3) != 0)
                return -1;
        }
    }
    return 0;
}

/* The text of the first <tag>...</tag> in [p, end), or NULL. */
static const char *xml_find(const char *p, const char *end, const char *tag, size_t *len)
{
    char open[64], close[64];
    int on = snprintf(open, sizeof open, "<%s>", tag);
    int cn = snprintf(close, sizeof close, "</%s>", tag);
    const char *a = memmem(p, (size_t)(end - p), open, (size_t)on);
    if (a == NULL)
        return NULL;
    a += on;
    const char *z = memmem(a, (size_t)(end - a), close, (size_t)cn);
    if (z == NULL)
        return NULL;
    *len = (size_t)(z - a);
    return a;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* XML text to bytes: the five entities and numeric references below 128,
 * then (url) percent-decoding with '+' as a space. NULL if malformed. */

/* A <Contents>' <LastModified> (2009-10-12T17:50:30.000Z): ms since 1970,
 * or 0 when missing or not that form. */
static int64_t s3_time_ms(const char *c, const char *ce)
{
    size_t n;
    const char *t = xml_find(c, ce, "LastModified", &n);
    char buf[40];
    if (t == NULL || n < 19 || n >= sizeof buf)
        return 0;
    memcpy(buf, t, n);
    buf[n] = '\0';
    struct tm tm = {0};
    int ms = 0;
    if (sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        return 0;
    if (n > 20 && buf[19] == '.')
        ms = atoi(buf + 20) % 1000;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t secs = timegm(&tm);
    return secs < 0 ? 0 : (int64_t)secs * 1000 + ms;
}

static char *xml_text(const char *p, size_t n, bool url)
{
    char *out = malloc(n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        if (p[i] != '&') {
            *o++ = p[i++];
            continue;
        }
        static const struct {
            const char *name;
            char c;
        } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool done = false;
        for (size_t k = 0; k < sizeof ents / sizeof ents[0] && !done; k++) {
            size_t el = strlen(ents[k].name);
            if (n - i >= el && memcmp(p + i, ents[k].name, el) == 0) {
                *o++ = ents[k].c;
                i += el;
                done = true;
            }
        }
        if (!done && n - i >= 4 && p[i + 1] == '#') {
            unsigned v = 0;
            size_t j = i + 2;
            bool hx = p[j] == 'x';
            j += hx;
            size_t digits = 0;
            for (; j < n && p[j] != ';' && digits < 6; j++, digits++) {
                int d = hexval(p[j]);
                if (d < 0 || (!hx && d > 9)) {
                    digits = 0;
                    break;
                }
                v = v * (hx ? 16 : 10) + (unsigned)d;
            }
            if (digits > 0 && j < n && p[j] == ';' && v > 0 && v < 128) {
                *o++ = (char)v;
                i = j + 1;
                done = true;
            }
        }
        if (!done) {
            free(out);
            return NULL;
        }
    }
    *o = '\0';
    if (url) {
        char *w = out;
        for (char *q = out; *q; q++) {
            if (*q == '+') {
                *w++ = ' ';
            } else if (*q == '%') {
                int h = hexval(q[1]), l = h >= 0 ? hexval(q[2]) : -1;
                if (l < 0) {
                    free(out);
                    return NULL;
                }
                *w++ = (char)(h * 16 + l);
                q += 2;
            } else {
                *w++ = *q;
            }
        }
        *w = '\0';
    }
    return out;
}

int dsq__s3_list_parse(const char *xml, size_t len, size_t strip, dsq_obj_req *r, bool *truncated, dsq_buf *token)
{
    const char *end = xml + len;
    if (memmem(xml, len, "<ListBucketResult", 17) == NULL)
        return -1;
    size_t n;
    const char *v = xml_find(xml, end, "EncodingType", &n);
    bool url = v != NULL && n == 3 && memcmp(v, "url", 3) == 0;
    v = xml_find(xml, end, "IsTruncated", &n);
    *truncated = v != NULL && n == 4 && memcmp(v, "true", 4) == 0;
    dsq_buf_reset(token);
    if (*truncated) {
        v = xml_find(xml, end, "NextContinuationToken", &n);
        char *t = v ? xml_text(v, n, false) : NULL;
        if (t == NULL || dsq_buf_puts(token, t) != 0) {
            free(t);
            return -1;
        }
        free(t);
    }
    size_t cap = r->nitems;
    for (const char *p = xml;;) {
        const char *c = memmem(p, (size_t)(end - p), "<Contents>", 10);
        if (c == NULL)
            break;
        const char *ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
        if (ce == NULL)
            return -1;
        size_t kn, sn;
        const char *k = xml_find(c, ce, "Key", &kn);
        const char *sz = xml_find(c, ce, "Size", &sn);
        if (k == NULL || sz == NULL)
            return -1;
        char *key = xml_text(k, kn, url);
        if (key == NULL)
            return -1;
        char num[24];
        uint64_t size;
        if (sn == 0 || sn >= sizeof num) {
            free(key);
            return -1;
        }
        memcpy(num, sz, sn);
        num[sn] = '\0';
        if (dsq_parse_u64(num, &size) != 0 || strlen(key) < strip) {
            free(key);
            return -1;
        }
        if (strip)
            memmove(key, key + strip, strlen(key + strip) + 1);
        if (r->nitems == cap) {
            cap = cap ? cap * 2 : 64;
            dsq_obj_item *ni = realloc(r->items, cap * sizeof *ni);
            if (ni == NULL) {
                free(key);
                return -1;
            }
            r->items = ni;
        }
        r->items[r->nitems++] = (dsq_obj_item){key, size, s3_time_ms(c, ce)};
        p = ce + 11;
    }
    return 0;
}

void dsq__s3_error_text(const char *xml, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    const char *end = xml + len;
    size_t cn = 0, mn = 0;
    const char *code = memmem(xml, len, "<Error>", 7) ? xml_find(xml, end, "Code", &cn) : NULL;
    if (code == NULL)
        return;
    const char *msg = xml_find(xml, end, "Message", &mn);
    char *c = xml_text(code, cn, false), *m = msg ? xml_text(msg, mn, false) : NULL;
    if (c)
        snprintf(out, cap, "%s%s%s", c, m && *m ? ": " : "", m ? m : "");
    free(c);
    free(m);
}

/* ---- transfers ---------------------------------------------------------------------------------- */

static void attempt(xfer *x);
static void begin(s3 *s, dsq_obj_req *r);

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    return dsq_buf_append(&x->body, p, size * n) == 0 ? size * n : 0;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t left = x->r->body_len - x->sent, k = size * n < left ? size * n : left;
    memcpy(p, (const char *)x->r->body + x->sent, k);
    x->sent += k;
    return k;
}

/* Rewind the body when curl must send it again (a redirect or an
 * authentication round). */
static int on_seek(void *ud, curl_off_t off, int origin)
{
    xfer *x = ud;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > x->r->body_len)
        return CURL_SEEKFUNC_FAIL;
    x->sent = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

static void on_xfer_closed(uv_handle_t *h)
{
    xfer *x = h->data;
    dsq_buf_free(&x->body);
    dsq_buf_free(&x->token);
    free(x);
}

static void release_easy(xfer *x)
{
    if (x->easy) {
        curl_multi_remove_handle(x->s->multi, x->easy);
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
}

/* The request is done: hand it back, start one that waited. */
static void finish(xfer *x)
{
    s3 *s = x->s;
    release_easy(x);
    dsq_list_remove(&s->xfers, &x->link);
    s->inflight--;
    dsq_obj_req *r = x->r;
    uv_timer_stop(&x->retry);
    uv_close((uv_handle_t *)&x->retry, on_xfer_closed);
    dsq__obj_finish(s->o, r);
    if (!s->stopping && !dsq_queue_empty(&s->waiting) && s->inflight < s->o->cfg.max_inflight)
        begin(s, dsq_container_of(dsq_queue_pop(&s->waiting), dsq_obj_req, link));
}

static void on_retry(uv_timer_t *t) { attempt(t->data); }

/* Try again after a backoff if tries are left; else finish with st. */
static void retry_or_fail(xfer *x, dsq_obj_status st, const char *why)
{
    s3 *s = x->s;
    dsq_obj_req *r = x->r;
    release_easy(x);
    if (x->tries <= s->o->cfg.retries && !s->stopping) {
        uint64_t ms = dsq_obj_backoff_ms(x->tries, s->o->cfg.backoff_ms, s->o->cfg.max_backoff_ms, next_rnd(s));
        snprintf(r->msg, sizeof r->msg, "%s", why); /* kept if the next try is cut short */
        uv_timer_start(&x->retry, on_retry, ms, 0);
        return;
    }
    dsq__obj_fail(r, st, "%s %s: %s (after %u attempt%s)", dsq_obj_op_name(r->op), r->key, why, r->attempts,
                  r->attempts == 1 ? "" : "s");
    finish(x);
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int add_header(xfer *x, const char *h)
{
    struct curl_slist *l = curl_slist_append(x->hdrs, h);
    if (l == NULL)
        return -1;
    x->hdrs = l;
    return 0;
}

/* URL of the bucket ("" path for virtual-host style) followed by `key`
 * under the store's prefix, encoded. */
static int build_url(s3 *s, dsq_buf *u, const char *key, bool list)
{
    dsq_obj *o = s->o;
    int rc = 0;
    if (o->cfg.virtual_host) {
        const char *sep = strstr(s->base, "://");
        rc |= dsq_buf_append(u, s->base, (size_t)(sep + 3 - s->base));
        rc |= dsq_buf_printf(u, "%s.%s/", o->bucket, sep + 3);
    } else {
        rc |= dsq_buf_printf(u, "%s/", s->base);
        rc |= dsq__s3_uri_encode(u, o->bucket, strlen(o->bucket), false);
        rc |= dsq_buf_puts(u, list ? "" : "/");
    }
    if (list)
        return rc;
    rc |= dsq__s3_uri_encode(u, o->prefix, strlen(o->prefix), true);
    rc |= dsq__s3_uri_encode(u, key, strlen(key), true);
    return rc;
}

static void attempt(xfer *x)
{
    s3 *s = x->s;
    dsq_obj *o = s->o;
    dsq_obj_req *r = x->r;
    r->attempts++;
    x->tries++;
    x->sent = 0;
    dsq_buf_reset(&x->body);
    dsq_buf url = DSQ_BUF_INIT;
    int rc = build_url(s, &url, r->key, r->op == DSQ_OBJ_LIST);
    if (r->op == DSQ_OBJ_LIST) {
        /* Parameters sorted by name, values encoded: SigV4's canonical query. */
        rc |= dsq_buf_puts(&url, "?");
        if (x->token.len) {
            rc |= dsq_buf_puts(&url, "continuation-token=");
            rc |= dsq__s3_uri_encode(&url, x->token.data, x->token.len, false);
            rc |= dsq_buf_puts(&url, "&");
        }
        rc |= dsq_buf_puts(&url, "encoding-type=url&list-type=2&prefix=");
        dsq_buf p = DSQ_BUF_INIT;
        rc |= dsq_buf_printf(&p, "%s%s", o->prefix, r->key);
        rc |= dsq__s3_uri_encode(&url, p.data ? p.data : "", p.len, false);
        dsq_buf_free(&p);
    }
    char sha[65];
    char hdr[128];
    if (r->op == DSQ_OBJ_PUT)
        sha256_hex(r->body ? r->body : "", r->body_len, sha);
    else
        sha256_hex("", 0, sha);
    snprintf(hdr, sizeof hdr, "x-amz-content-sha256: %s", sha);
    rc |= add_header(x, hdr);
    x->easy = curl_easy_init();
    if (rc != 0 || x->easy == NULL) {
        dsq_buf_free(&url);
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "out of memory");
        finish(x);
        return;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url.data);
    dsq_buf_free(&url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    x->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(e, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    switch (r->op) {
    case DSQ_OBJ_PUT:
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        rc |= add_header(x, "Content-Type: application/octet-stream");
        rc |= add_header(x, "Expect:");
        if (r->if_absent)
            rc |= add_header(x, "If-None-Match: *");
        break;
    case DSQ_OBJ_GET:
        if (r->off > 0 || r->len > 0) {
            char range[80];
            if (r->len > 0)
                snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)r->off,
                         (unsigned long long)(r->off + r->len - 1));
            else
                snprintf(range, sizeof range, "%llu-", (unsigned long long)r->off);
            curl_easy_setopt(e, CURLOPT_RANGE, range);
        }
        break;
    case DSQ_OBJ_HEAD: curl_easy_setopt(e, CURLOPT_NOBODY, 1L); break;
    case DSQ_OBJ_DELETE: curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE"); break;
    case DSQ_OBJ_LIST: break;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    if (rc != 0 || curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "cannot start the request");
        finish(x);
    }
}

static void begin(s3 *s, dsq_obj_req *r)
{
    xfer *x = calloc(1, sizeof *x);
    if (x == NULL) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "out of memory");
        dsq__obj_finish(s->o, r);
        return;
    }
    x->s = s;
    x->r = r;
    uv_timer_init(&s->o->loop, &x->retry);
    x->retry.data = x;
    dsq_list_push(&s->xfers, &x->link);
    s->inflight++;
    attempt(x);
}

/* An attempt ended with an HTTP answer or a transport error. */
static void ended(xfer *x, CURLcode cc)
{
    dsq_obj_req *r = x->r;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    r->http_status = (int)code;
    if (cc != CURLE_OK) {
        char why[CURL_ERROR_SIZE + 64];
        snprintf(why, sizeof why, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc));
        switch (cc) {
        case CURLE_OPERATION_TIMEDOUT: retry_or_fail(x, DSQ_OBJ_TIMEOUT, why); return;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_SSL_CONNECT_ERROR: retry_or_fail(x, DSQ_OBJ_FAILED, why); return;
        default:
            release_easy(x);
            dsq__obj_fail(r, DSQ_OBJ_FAILED, "%s %s: %s", dsq_obj_op_name(r->op), r->key, why);
            finish(x);
            return;
        }
    }
    char text[200];
    dsq__s3_error_text(x->body.data ? x->body.data : "", x->body.len, text, sizeof text);
    if (code >= 500 || code == 429 || code == 408) {
        char why[260];
        snprintf(why, sizeof why, "HTTP %ld%s%s", code, text[0] ? " " : "", text);
        retry_or_fail(x, DSQ_OBJ_FAILED, why);
        return;
    }
    bool ok = code >= 200 && code < 300;
    if (code == 404 && strncmp(text, "NoSuchBucket", 12) == 0)
        code = 0; /* not the object missing: the store is set up wrong */
    switch (r->op) {
    case DSQ_OBJ_GET:
        if (ok) {
            dsq_buf_free(&r->data);
            r->data = x->body;
            x->body = (dsq_buf)DSQ_BUF_INIT;
            r->size = r->data.len;
            /* A server that ignores Range answers 200 with everything. */
            if (code == 200 && (r->off > 0 || r->len > 0)) {
                if (r->off >= r->data.len) {
                    dsq__obj_fail(r, DSQ_OBJ_RANGE, "the range starts past the end of %s", r->key);
                    break;
                }
                dsq_buf_consume(&r->data, (size_t)r->off);
                if (r->len > 0 && r->data.len > r->len)
                    r->data.len = (size_t)r->len;
                r->size = r->data.len;
            }
            if (r->len > 0 && r->data.len > r->len) { /* more than asked for: not to be trusted */
                retry_or_fail(x, DSQ_OBJ_FAILED, "the answer is longer than the range asked for");
                return;
            }
        } else if (code == 404) {
            dsq__obj_fail(r, DSQ_OBJ_NOT_FOUND, "no object %s", r->key);
        } else if (code == 416) {
            dsq__obj_fail(r, DSQ_OBJ_RANGE, "the range starts past the end of %s", r->key);
        }
        break;
    case DSQ_OBJ_HEAD:
        if (ok) {
            curl_off_t cl = -1;
            curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            r->size = cl >= 0 ? (uint64_t)cl : 0;
        } else if (code == 404) {
            dsq__obj_fail(r, DSQ_OBJ_NOT_FOUND, "no object %s", r->key);
        }
        break;
    case DSQ_OBJ_PUT:
        if (code == 412 && r->if_absent)
            dsq__obj_fail(r, DSQ_OBJ_EXISTS, "%s exists", r->key);
        break;
    case DSQ_OBJ_DELETE:
        if (code == 404)
            ok = true; /* gone is what was asked */
        break;
    case DSQ_OBJ_LIST:
        if (ok) {
            bool more = false;
            size_t strip = strlen(x->s->o->prefix);
            if (dsq__s3_list_parse(x->body.data ? x->body.data : "", x->body.len, strip, r, &more, &x->token) != 0) {
                retry_or_fail(x, DSQ_OBJ_FAILED, "the list answer cannot be read");
                return;
            }
            if (more) { /* the next page */
                if (x->token.len == 0) {
                    dsq__obj_fail(r, DSQ_OBJ_FAILED, "list %s: truncated without a continuation token", r->key);
                    break;
                }
                release_easy(x);
                x->tries = 0;
                attempt(x);
                return;
            }
        }
        break;
    }
    if (!ok && r->status == DSQ_OBJ_OK)
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "%s %s: HTTP %d%s%s", dsq_obj_op_name(r->op), r->key, r->http_status,
                      text[0] ? " " : "", text);
    if (r->status == DSQ_OBJ_OK)
        r->msg[0] = '\0';
    finish(x);
}

static void collect(s3 *s)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        ended(x, m->data.result);
    }
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock *k = h->data;
    s3 *s = k->s;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) | (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(s->multi, k->fd, flags, &running);
    collect(s);
}

static void on_sock_closed(uv_handle_t *h) { free(h->data); }

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    s3 *s = userp;
    sock *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            uv_poll_stop(&k->poll);
            uv_close((uv_handle_t *)&k->poll, on_sock_closed);
            curl_multi_assign(s->multi, fd, NULL);
        }
        return 0;
    }
    if (k == NULL) {
        k = calloc(1, sizeof *k);
        if (k == NULL)
            return -1;
        k->fd = fd;
        k->s = s;
        if (uv_poll_init_socket(&s->o->loop, &k->poll, fd) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        curl_multi_assign(s->multi, fd, k);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&k->poll, ev, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    s3 *s = t->data;
    int running;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect(s);
}

static int on_timer(CURLM *m, long ms, void *userp)
{
    s3 *s = userp;
    if (ms < 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_timeout, (uint64_t)ms, 0);
    return 0;
}

/* ---- the backend ---------------------------------------------------------------------------- */

static const char *env_or(const char *v, const char *name, const char *name2)
{
    if (v && *v)
        return v;
    const char *e = getenv(name);
    if ((e == NULL || *e == '\0') && name2)
        e = getenv(name2);
    return e && *e ? e : NULL;
}

static bool bucket_valid(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-' || b[i] == '.'))
            return false;
    return b[0] != '-' && b[0] != '.' && b[n - 1] != '-' && b[n - 1] != '.';
}

static void s3_free(dsq_obj *o)
{
    s3 *s = o->be_state;
    if (s == NULL)
        return;
    free(s->base);
    free(s->sigv4);
    if (s->userpwd) {
        explicit_bzero(s->userpwd, strlen(s->userpwd));
        free(s->userpwd);
    }
    free(s);
    o->be_state = NULL;
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static int s3_open(dsq_obj *o, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    const char *rest = o->cfg.url + 5;
    const char *slash = strchr(rest, '/');
    o->bucket = slash ? strndup(rest, (size_t)(slash - rest)) : strdup(rest);
    const char *pre = slash ? slash + 1 : "";
    size_t pl = strlen(pre);
    o->prefix = malloc(pl + 2);
    if (o->bucket == NULL || o->prefix == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(o->prefix, pre, pl + 1);
    if (pl > 0 && o->prefix[pl - 1] != '/')
        memcpy(o->prefix + pl, "/", 2);
    if (!bucket_valid(o->bucket)) {
        snprintf(err, errlen, "object store '%s': '%s' is not a valid bucket name", o->cfg.url, o->bucket);
        return -1;
    }
    char *bare = pl > 0 ? strndup(o->prefix, strlen(o->prefix) - 1) : NULL;
    bool prefix_ok = pl == 0 || (bare != NULL && dsq_obj_key_valid(bare));
    free(bare);
    if (!prefix_ok) {
        snprintf(err, errlen, "object store '%s': the prefix is not a valid key", o->cfg.url);
        return -1;
    }
    const char *region = env_or(o->cfg.region, "AWS_REGION", "AWS_DEFAULT_REGION");
    if (region == NULL)
        region = "us-east-1";
    const char *endpoint = env_or(o->cfg.endpoint, "AWS_ENDPOINT_URL", NULL);
    const char *key = env_or(o->cfg.access_key, "AWS_ACCESS_KEY_ID", NULL);
    const char *secret = env_or(o->cfg.secret_key, "AWS_SECRET_ACCESS_KEY", NULL);
    if (key == NULL || secret == NULL) {
        snprintf(err, errlen,
                 "object store '%s': no credentials (object_store.access_key and secret_key, or "
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                 o->cfg.url);
        return -1;
    }
    for (const char *p = region; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            snprintf(err, errlen, "object store: '%s' is not a region name", region);
            return -1;
        }
    }
    s3 *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    o->be_state = s;
    s->o = o;
    dsq_buf b = DSQ_BUF_INIT;
    if (endpoint) {
        if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
            snprintf(err, errlen, "object store: endpoint '%s' is not an http:// or https:// URL", endpoint);
            return -1;
        }
        const char *host = strstr(endpoint, "://") + 3;
        size_t hl = strcspn(host, "/?#");
        if (hl == 0 || host[hl] == '?' || host[hl] == '#' || (host[hl] == '/' && host[hl + 1] != '\0')) {
            snprintf(err, errlen, "object store: endpoint '%s' must be scheme://host[:port]", endpoint);
            return -1;
        }
        dsq_buf_append(&b, endpoint, (size_t)(host - endpoint) + hl);
    } else {
        dsq_buf_printf(&b, "https://s3.%s.amazonaws.com", region);
    }
    s->base = dsq_buf_steal(&b, NULL);
    dsq_buf_printf(&b, "aws:amz:%s:s3", region);
    s->sigv4 = dsq_buf_steal(&b, NULL);
    dsq_buf_printf(&b, "%s:%s", key, secret);
    s->userpwd = dsq_buf_steal(&b, NULL);
    if (s->base == NULL || s->sigv4 == NULL || s->userpwd == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->rnd = (dsq_now_ns() ^ ((uint64_t)getpid() << 32)) | 1;
    return 0;
}

/* Lazily, on the store's thread: the multi handle and its timer. */
static int s3_ready(s3 *s)
{
    if (s->multi)
        return 0;
    s->multi = curl_multi_init();
    if (s->multi == NULL)
        return -1;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->o->cfg.max_inflight);
    uv_timer_init(&s->o->loop, &s->timer);
    s->timer.data = s;
    return 0;
}

static void s3_start(dsq_obj *o, dsq_obj_req *r)
{
    s3 *s = o->be_state;
    if (s3_ready(s) != 0) {
        dsq__obj_fail(r, DSQ_OBJ_FAILED, "curl_multi_init failed");
        dsq__obj_finish(o, r);
        return;
    }
    if (s->inflight >= o->cfg.max_inflight) {
        dsq_queue_push(&s->waiting, &r->link);
        return;
    }
    begin(s, r);
}

static void s3_stop(dsq_obj *o)
{
    s3 *s = o->be_state;
    s->stopping = true;
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&s->waiting)) != NULL) {
        dsq_obj_req *r = dsq_container_of(n, dsq_obj_req, link);
        dsq__obj_fail(r, DSQ_OBJ_CANCELLED, "the object store was closed");
        dsq__obj_finish(o, r);
    }
    while (s->xfers.head != NULL) {
        xfer *x = dsq_container_of(s->xfers.head, xfer, link);
        dsq__obj_fail(x->r, DSQ_OBJ_CANCELLED, "the object store was closed");
        finish(x);
    }
    if (s->multi) {
        curl_multi_cleanup(s->multi); /* closes its connections: their polls go */
        s->multi = NULL;
        uv_close((uv_handle_t *)&s->timer, NULL);
    }
}

const dsq_obj_backend dsq__obj_s3 = {s3_open, s3_start, s3_stop, s3_free};
