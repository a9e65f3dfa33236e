/* etcd — a blocking etcd v3 client over the JSON gateway (etcd.h says
 * what it does, and what etcd 3.4's gateway does that it relies on).
 *
 * Requests are POSTs of a JSON body on the handle's one curl easy handle
 * (curl_easy_perform, so its connection stays open between requests);
 * a watch has an easy handle of its own, driven by a multi handle so that
 * it can look at its cancel flag every WATCH_POLL_MS while nothing
 * arrives. Keys and values go through base64, int64 fields as strings.
 *
 * Divisions: the JSON stream splitter; small helpers; the handle; one
 * request (endpoints, errors, auth); keys and values; transactions;
 * leases; the watch. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd.h"
#include "common/base64.h"
#include "common/check.h"

#define BODY_MAX (64u << 20)     /* an answer's bytes; a watch message's */
#define WATCH_POLL_MS 100        /* how often a quiet watch looks at its cancel flag */
#define MSG_MAX 256

/* gRPC status codes etcd answers with ("code"). */
#define GRPC_NOT_FOUND 5         /* in a KV or lease call: the lease is not there */
#define GRPC_OUT_OF_RANGE 11     /* a range at a revision compacted away */
#define GRPC_UNAVAILABLE 14      /* "no leader", timeouts */
#define GRPC_UNAUTHENTICATED 16  /* "invalid auth token" */

/* ---- the JSON stream splitter ------------------------------------------------------------------ */

int dsq__etcd_split_feed(dsq__etcd_split *sp, const char *p, size_t n, size_t max, dsq__etcd_split_fn fn,
                         void *arg)
{
    if (n > 0 && dsq_buf_append(&sp->buf, p, n) != 0)
        return -1;
    const char *b = sp->buf.data;
    size_t len = sp->buf.len;
    size_t start = 0;            /* where the object under way begins; before it, all is handled */
    size_t i = sp->scan;
    int rc = 0;
    while (i < len && rc == 0) {
        char c = b[i++];
        if (sp->depth == 0) {
            if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
                start = i;
                continue;
            }
            if (c != '{') {
                rc = -1;
                break;
            }
            start = i - 1;
            sp->depth = 1;
        } else if (i - start > max) {
            rc = -1;
        } else if (sp->in_str) {
            if (sp->esc)
                sp->esc = false;
            else if (c == '\\')
                sp->esc = true;
            else if (c == '"')
                sp->in_str = false;
        } else if (c == '"') {
            sp->in_str = true;
        } else if (c == '{' || c == '[') {
            sp->depth++;
        } else if ((c == '}' || c == ']') && --sp->depth == 0) {
            rc = fn(arg, b + start, i - start);
            start = i;
        }
    }
    if (rc == -1)
        return -1;
    dsq_buf_consume(&sp->buf, start);
    sp->scan = i - start;
    return rc;
}

void dsq__etcd_split_free(dsq__etcd_split *sp)
{
    dsq_buf_free(&sp->buf);
    memset(sp, 0, sizeof *sp);
}

/* ---- small helpers ------------------------------------------------------------------------------ */

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

#define OOM(err, errlen) fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: out of memory")

/* An int64 field: a JSON string (as etcd sends them) or a number; 0 when
 * absent (proto3 leaves zeros out). */
static int64_t jint(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

static int64_t header_rev(const json_t *j) { return jint(json_object_get(j, "header"), "revision"); }

/* An int64 for a request: a string, since lease ids pass 2^53. */
static json_t *jnum(int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return json_string(s);
}

/* Bytes as a base64 JSON string. */
static json_t *jbytes(const void *p, size_t n)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_base64_encode(&b, p, n);
    json_t *j = b.data != NULL ? json_stringn(b.data, b.len) : NULL;
    dsq_buf_free(&b);
    return j;
}

/* A base64 field's bytes, NUL-terminated, into *out (malloc'd; "" when
 * absent). 0, or -1 when it is not base64 or memory ran out. */
static int jbytes_get(const json_t *o, const char *name, char **out, size_t *len)
{
    json_t *v = json_object_get(o, name);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    unsigned char *p = malloc(n / 4 * 3 + 3);
    if (p == NULL)
        return -1;
    long k = dsq_base64_decode(s, n, p);
    if (k < 0) {
        free(p);
        return -1;
    }
    p[k] = '\0';
    *out = (char *)p;
    *len = (size_t)k;
    return 0;
}

void dsq_etcd_kv_clear(dsq_etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

void dsq_etcd_kvs_free(dsq_etcd_kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dsq_etcd_kv_clear(&kvs[i]);
    free(kvs);
}

/* ---- the handle -------------------------------------------------------------------------------- */

struct dsq_etcd {
    char **eps;                  /* owned: "http://host:port", no '/' at the end */
    size_t neps;
    size_t cur;                  /* the endpoint tried first: the last that answered */
    char *prefix;                /* owned; "" for none */
    size_t prefix_len;
    long timeout_ms, connect_ms;
    char *user, *password;       /* owned; NULL without auth */
    char *token;                 /* owned; NULL until authenticated */
    char *ca, *cert, *key;       /* owned; NULL when not given */
    CURL *curl;                  /* requests (not watches); keeps its connection */
    atomic_bool busy;            /* a call is under way (checked: one thread at a time) */
    char cerr[CURL_ERROR_SIZE];
};

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* Split "a, b,c" into e->eps. 0, or -1 with a message. */
static int parse_endpoints(dsq_etcd *e, const char *list, char *err, size_t errlen)
{
    if (list == NULL)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoints");
    for (const char *p = list; *p != '\0';) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0)
            continue;
        size_t k = n;
        while (k > 0 && p[k - 1] == '/')
            k--;
        if (!((k > 7 && strncmp(p, "http://", 7) == 0) || (k > 8 && strncmp(p, "https://", 8) == 0)))
            return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: endpoint '%.*s' is not an http:// or https:// URL",
                        (int)n, p);
        char **eps = realloc(e->eps, (e->neps + 1) * sizeof *eps);
        if (eps == NULL)
            return OOM(err, errlen);
        e->eps = eps;
        if ((e->eps[e->neps] = strndup(p, k)) == NULL)
            return OOM(err, errlen);
        e->neps++;
        p += n;
    }
    if (e->neps == 0)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoints");
    return 0;
}

dsq_etcd *dsq_etcd_new(const dsq_etcd_cfg *cfg, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    dsq_etcd *e = calloc(1, sizeof *e);
    if (e == NULL) {
        OOM(err, errlen);
        return NULL;
    }
    atomic_init(&e->busy, false);
    if (parse_endpoints(e, cfg->endpoints, err, errlen) != 0)
        goto fail;
    if ((cfg->user == NULL) != (cfg->password == NULL)) {
        fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a user needs a password, and a password a user");
        goto fail;
    }
    if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
        fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a client certificate needs its key, and a key its certificate");
        goto fail;
    }
    bool oom = false;
    e->prefix = strdup(cfg->prefix != NULL ? cfg->prefix : "");
    oom = e->prefix == NULL;
    e->user = dup_or_null(cfg->user, &oom);
    e->password = dup_or_null(cfg->password, &oom);
    e->ca = dup_or_null(cfg->ca_file, &oom);
    e->cert = dup_or_null(cfg->cert_file, &oom);
    e->key = dup_or_null(cfg->key_file, &oom);
    e->curl = curl_easy_init();
    if (oom || e->curl == NULL) {
        OOM(err, errlen);
        goto fail;
    }
    e->prefix_len = strlen(e->prefix);
    e->timeout_ms = cfg->timeout_ms > 0 ? (long)cfg->timeout_ms : 5000;
    e->connect_ms = cfg->connect_timeout_ms > 0 ? (long)cfg->connect_timeout_ms : e->timeout_ms;
    return e;
fail:
    dsq_etcd_free(e);
    return NULL;
}

void dsq_etcd_free(dsq_etcd *e)
{
    if (e == NULL)
        return;
    DSQ_ASSERT(!atomic_load(&e->busy));
    if (e->curl != NULL)
        curl_easy_cleanup(e->curl);
    for (size_t i = 0; i < e->neps; i++)
        free(e->eps[i]);
    free(e->eps);
    free(e->prefix);
    free(e->user);
    wipe_free(e->password);
    wipe_free(e->token);
    free(e->ca);
    free(e->cert);
    free(e->key);
    free(e);
}

const char *dsq_etcd_endpoint(const dsq_etcd *e) { return e->eps[e->cur]; }

/* One thread at a time on a handle: a call marks it busy while it runs. */
static void enter(dsq_etcd *e)
{
    bool was = atomic_exchange(&e->busy, true);
    DSQ_ASSERT(!was);
    (void)was;
}

static void leave(dsq_etcd *e) { atomic_store(&e->busy, false); }

/* ---- one request ------------------------------------------------------------------------------- */

/* What etcd answered. */
typedef struct answer {
    json_t *j;                   /* the answer's object ("result" unwrapped); NULL on an error */
    int code;                    /* the gRPC code of an error etcd answered with, 0 otherwise */
    char msg[MSG_MAX];           /* etcd's message for that error */
} answer;

/* The headers of a request: the token's when there is one. NULL: out of
 * memory. */
static struct curl_slist *headers(const dsq_etcd *e)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h != NULL)
        h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip for large bodies */
    if (h != NULL && e->token != NULL) {
        dsq_buf b = DSQ_BUF_INIT;
        dsq_buf_printf(&b, "Authorization: %s", e->token);
        struct curl_slist *t = b.data != NULL ? curl_slist_append(h, b.data) : NULL;
        if (b.data != NULL)
            explicit_bzero(b.data, b.len);
        dsq_buf_free(&b);
        if (t == NULL) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = t;
    }
    return h;
}

/* Set h up to POST body (kept by the caller until the transfer ends) to
 * url: a request bound by the timeout, or a stream (a watch) bound by
 * nothing but its connection's. */
static void setup(const dsq_etcd *e, CURL *h, const char *url, const char *body, struct curl_slist *hdrs,
                  bool stream, char *errbuf)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, e->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, stream ? 0L : e->timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    errbuf[0] = '\0';
    if (e->ca != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, e->ca);
    if (e->cert != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert);
        curl_easy_setopt(h, CURLOPT_SSLKEY, e->key);
    }
}

/* Whether any of the request left: when nothing did, another endpoint
 * may be tried without the risk of applying it twice. */
static bool sent(CURL *h)
{
    long n = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &n);
    return n > 0;
}

static const char *curl_msg(CURLcode cc, const char *errbuf)
{
    return errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc);
}

/* Whether j is an error etcd answered with; its code and message into a.
 * Unary calls: {"error":msg,"message":msg,"code":N}; streams:
 * {"error":{"grpc_code":N,"message":msg,...}}. */
static bool is_error(const json_t *j, answer *a)
{
    json_t *er = json_object_get(j, "error");
    const char *msg = NULL;
    if (json_is_object(er)) {
        a->code = (int)jint(er, "grpc_code");
        if (a->code == 0)
            a->code = (int)jint(er, "code");
        msg = json_string_value(json_object_get(er, "message"));
    } else if (json_is_string(er) && json_string_length(er) > 0) {
        a->code = (int)jint(j, "code");
        msg = json_string_value(json_object_get(j, "message"));
        if (msg == NULL)
            msg = json_string_value(er);
    } else if (jint(j, "code") != 0 && json_is_string(json_object_get(j, "message"))) {
        a->code = (int)jint(j, "code");
        msg = json_string_value(json_object_get(j, "message"));
    } else {
        return false;
    }
    snprintf(a->msg, sizeof a->msg, "%s", msg != NULL ? msg : "(no message)");
    if (a->code == 0)
        a->code = -1;
    return true;
}

/* Whether etcd refused the token (so authenticating again may help). */
static bool token_refused(int code, const char *msg)
{
    return code == GRPC_UNAUTHENTICATED || strstr(msg, "invalid auth token") != NULL ||
           strstr(msg, "auth store is old") != NULL;
}

/* An answer's bytes into a dsq_buf, up to BODY_MAX (0, which stops the
 * transfer with CURLE_WRITE_ERROR, past it). */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    dsq_buf *b = ud;
    size_t k = size * n;
    if (b->len + k > BODY_MAX || dsq_buf_append(b, p, k) != 0)
        return 0;
    return k;
}

/* POST body to path, at each endpoint in turn from the last that
 * answered while none is reached. 0 with a->j, or DSQ_ETCD_EFAIL with a
 * message (and a->code when etcd answered with an error). */
static int post(dsq_etcd *e, const char *path, const char *body, answer *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    struct curl_slist *hdrs = headers(e);
    if (hdrs == NULL)
        return OOM(err, errlen);
    dsq_buf resp = DSQ_BUF_INIT, url = DSQ_BUF_INIT;
    int rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoint answered");
    size_t first = e->cur;
    for (size_t k = 0; k < e->neps; k++) {
        size_t i = (first + k) % e->neps;
        const char *ep = e->eps[i];
        dsq_buf_reset(&url);
        dsq_buf_reset(&resp);
        if (dsq_buf_printf(&url, "%s%s", ep, path) != 0 || dsq_buf_reserve(&resp, 0) != 0) {
            rc = OOM(err, errlen);
            break;
        }
        setup(e, e->curl, url.data, body, hdrs, false, e->cerr);
        curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, &resp);
        CURLcode cc = curl_easy_perform(e->curl);
        if (cc != CURLE_OK) {
            if (cc != CURLE_WRITE_ERROR && !sent(e->curl)) {
                rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoint answered (last, %s: %s)", ep,
                          curl_msg(cc, e->cerr));
                continue;
            }
            e->cur = i;
            if (cc == CURLE_WRITE_ERROR)
                rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd %s%s: the answer passes %u bytes (or memory ran out)",
                          ep, path, BODY_MAX);
            else
                rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd %s%s: %s", ep, path, curl_msg(cc, e->cerr));
            break;
        }
        long status = 0;
        curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
        json_t *j = json_loadb(resp.data, resp.len, 0, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            e->cur = i;
            rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd %s%s: HTTP %ld, not a JSON object: %.120s", ep, path, status,
                      resp.data);
            break;
        }
        json_t *r = json_object_get(j, "result");
        if (json_is_object(r)) { /* a stream's answer (keepalive) */
            json_incref(r);
            json_decref(j);
            j = r;
        }
        if (is_error(j, a)) {
            json_decref(j);
            rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd %s%s: %s (code %d)", ep, path, a->msg, a->code);
            if (a->code == GRPC_UNAVAILABLE && strstr(a->msg, "no leader") != NULL)
                continue; /* cut off from the others: not applied, another member may do */
            e->cur = i;
            break;
        }
        e->cur = i;
        if (status != 200) {
            json_decref(j);
            rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd %s%s: HTTP %ld", ep, path, status);
            break;
        }
        a->j = j;
        rc = 0;
        break;
    }
    curl_slist_free_all(hdrs);
    dsq_buf_free(&resp);
    dsq_buf_free(&url);
    return rc;
}

/* Get a token for the handle's user. 0, or DSQ_ETCD_EFAIL. */
static int authenticate(dsq_etcd *e, char *err, size_t errlen)
{
    wipe_free(e->token);
    e->token = NULL;
    json_t *req = json_pack("{s:s, s:s}", "name", e->user, "password", e->password);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL)
        return OOM(err, errlen);
    answer a;
    int rc = post(e, "/v3/auth/authenticate", body, &a, err, errlen);
    wipe_free(body);
    if (rc != 0)
        return rc;
    const char *t = json_string_value(json_object_get(a.j, "token"));
    if (t == NULL || *t == '\0')
        rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: authenticated, but no token came back (is auth enabled?)");
    else if ((e->token = strdup(t)) == NULL)
        rc = OOM(err, errlen);
    json_decref(a.j);
    return rc;
}

/* POST req (its reference is taken; NULL: out of memory while making it)
 * to path, authenticating first when the handle has a user and no
 * token, and once more when etcd refuses the token. 0 with a->j (the
 * caller's to decref), or DSQ_ETCD_EFAIL with a->code and a message. */
static int call(dsq_etcd *e, const char *path, json_t *req, answer *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL)
        return OOM(err, errlen);
    enter(e);
    int rc;
    for (int tries = 0;; tries++) {
        if (e->user != NULL && e->token == NULL && (rc = authenticate(e, err, errlen)) != 0)
            break;
        rc = post(e, path, body, a, err, errlen);
        if (rc == 0 || e->user == NULL || tries > 0 || a->code == 0 || !token_refused(a->code, a->msg))
            break;
        wipe_free(e->token); /* (the refused request was not applied) */
        e->token = NULL;
    }
    leave(e);
    free(body);
    return rc;
}

/* ---- keys and values --------------------------------------------------------------------------- */

/* The handle's prefix and key: the key as etcd has it. 0 or -1. */
static int full_key(const dsq_etcd *e, const char *key, dsq_buf *out)
{
    dsq_buf_reset(out);
    if (dsq_buf_append(out, e->prefix, e->prefix_len) != 0 || dsq_buf_puts(out, key) != 0)
        return -1;
    return 0;
}

static json_t *jkey(const dsq_etcd *e, const char *key)
{
    dsq_buf b = DSQ_BUF_INIT;
    json_t *j = full_key(e, key, &b) == 0 ? jbytes(b.data, b.len) : NULL;
    dsq_buf_free(&b);
    return j;
}

/* Set the "key" and "range_end" of every key below the handle's prefix
 * and `prefix` on o: range_end is the prefix with its last byte that is
 * not 0xff incremented and the bytes after it dropped; an empty prefix
 * (or all 0xff) is every key from "\0" on. 0 or -1. */
static int set_prefix_range(const dsq_etcd *e, const char *prefix, json_t *o)
{
    dsq_buf k = DSQ_BUF_INIT;
    int rc = -1;
    if (full_key(e, prefix, &k) != 0)
        goto out;
    size_t n = k.len;
    while (n > 0 && (unsigned char)k.data[n - 1] == 0xff)
        n--;
    static const char zero[1] = {0};
    json_t *key, *end;
    if (n == 0) {
        key = k.len > 0 ? jbytes(k.data, k.len) : jbytes(zero, 1);
        end = jbytes(zero, 1);
    } else {
        key = jbytes(k.data, k.len);
        k.data[n - 1] = (char)((unsigned char)k.data[n - 1] + 1);
        end = jbytes(k.data, n);
    }
    if (json_object_set_new(o, "key", key) == 0 && json_object_set_new(o, "range_end", end) == 0)
        rc = 0;
out:
    dsq_buf_free(&k);
    return rc;
}

/* A KeyValue of an answer into *kv, its key without the handle's prefix.
 * 0, or DSQ_ETCD_EFAIL (*kv zeroed). */
static int kv_parse(const dsq_etcd *e, const json_t *j, dsq_etcd_kv *kv, char *err, size_t errlen)
{
    memset(kv, 0, sizeof *kv);
    char *key;
    size_t len;
    if (!json_is_object(j) || jbytes_get(j, "key", &key, &len) != 0)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a key-value in the answer is not one");
    if (len < e->prefix_len || memcmp(key, e->prefix, e->prefix_len) != 0) {
        int rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: the answer has key '%.100s', not below prefix '%s'", key,
                      e->prefix);
        free(key);
        return rc;
    }
    kv->key_len = len - e->prefix_len;
    memmove(key, key + e->prefix_len, kv->key_len + 1);
    kv->key = key;
    if (jbytes_get(j, "value", &kv->value, &kv->value_len) != 0) {
        dsq_etcd_kv_clear(kv);
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a value in the answer is not base64");
    }
    kv->create_revision = jint(j, "create_revision");
    kv->mod_revision = jint(j, "mod_revision");
    kv->version = jint(j, "version");
    kv->lease = jint(j, "lease");
    return 0;
}

int dsq_etcd_get(dsq_etcd *e, const char *key, dsq_etcd_kv *out, int64_t *rev, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    answer a;
    int rc = call(e, "/v3/kv/range", json_pack("{s:o}", "key", jkey(e, key)), &a, err, errlen);
    if (rc != 0)
        return rc;
    if (rev != NULL)
        *rev = header_rev(a.j);
    json_t *kvs = json_object_get(a.j, "kvs");
    if (json_array_size(kvs) == 0)
        rc = fail(err, errlen, DSQ_ETCD_ENOTFOUND, "etcd: no key '%s%s'", e->prefix, key);
    else
        rc = kv_parse(e, json_array_get(kvs, 0), out, err, errlen);
    json_decref(a.j);
    return rc;
}

int dsq_etcd_range_page(dsq_etcd *e, const char *prefix, const char *after, size_t limit, int64_t at_rev,
                        dsq_etcd_kv **out, size_t *n, bool *more, int64_t *rev, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (more != NULL)
        *more = false;
    if (after != NULL && strncmp(after, prefix, strlen(prefix)) != 0)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a page's key '%.100s' is not below '%s'", after, prefix);
    json_t *req = json_object();
    if (req == NULL || set_prefix_range(e, prefix, req) != 0)
        goto oom;
    if (after != NULL) {
        /* the first key after it: the same bytes and a NUL */
        dsq_buf k = DSQ_BUF_INIT;
        json_t *start = full_key(e, after, &k) == 0 && dsq_buf_append(&k, "", 1) == 0 ? jbytes(k.data, k.len) : NULL;
        dsq_buf_free(&k);
        if (json_object_set_new(req, "key", start) != 0)
            goto oom;
    }
    if ((limit > 0 && json_object_set_new(req, "limit", jnum((int64_t)limit)) != 0) ||
        (at_rev > 0 && json_object_set_new(req, "revision", jnum(at_rev)) != 0))
        goto oom;
    answer a;
    int rc = call(e, "/v3/kv/range", req, &a, err, errlen);
    if (rc != 0) {
        if (a.code == GRPC_OUT_OF_RANGE && strstr(a.msg, "compacted") != NULL)
            rc = fail(err, errlen, DSQ_ETCD_ECOMPACTED, "etcd: revision %lld was compacted away", (long long)at_rev);
        return rc;
    }
    if (rev != NULL)
        *rev = at_rev > 0 ? at_rev : header_rev(a.j);
    if (more != NULL)
        *more = json_is_true(json_object_get(a.j, "more"));
    json_t *kvs = json_object_get(a.j, "kvs");
    size_t m = json_array_size(kvs);
    dsq_etcd_kv *v = m > 0 ? calloc(m, sizeof *v) : NULL;
    if (m > 0 && v == NULL)
        rc = OOM(err, errlen);
    for (size_t i = 0; i < m && rc == 0; i++)
        if ((rc = kv_parse(e, json_array_get(kvs, i), &v[i], err, errlen)) != 0)
            dsq_etcd_kvs_free(v, i);
    json_decref(a.j);
    if (rc == 0) {
        *out = v;
        *n = m;
    }
    return rc;
oom:
    json_decref(req);
    return OOM(err, errlen);
}

int dsq_etcd_range(dsq_etcd *e, const char *prefix, dsq_etcd_kv **out, size_t *n, int64_t *rev, char *err,
                   size_t errlen)
{
    return dsq_etcd_range_page(e, prefix, NULL, 0, 0, out, n, NULL, rev, err, errlen);
}

/* A PutRequest's body. NULL: out of memory. */
static json_t *put_req(const dsq_etcd *e, const char *key, const void *value, size_t len, int64_t lease)
{
    json_t *o = json_pack("{s:o, s:o}", "key", jkey(e, key), "value", jbytes(value, len));
    if (o != NULL && lease != 0 && json_object_set_new(o, "lease", jnum(lease)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A failed call whose error may be "requested lease not found". */
static int lease_or_fail(int rc, const answer *a)
{
    return rc != 0 && a->code == GRPC_NOT_FOUND ? DSQ_ETCD_ELEASE : rc;
}

int dsq_etcd_put(dsq_etcd *e, const char *key, const void *value, size_t len, int64_t lease, int64_t *rev, char *err,
                 size_t errlen)
{
    answer a;
    int rc = call(e, "/v3/kv/put", put_req(e, key, value, len, lease), &a, err, errlen);
    if (rc != 0)
        return lease_or_fail(rc, &a);
    if (rev != NULL)
        *rev = header_rev(a.j);
    json_decref(a.j);
    return 0;
}

int dsq_etcd_delete(dsq_etcd *e, const char *key, int64_t *rev, char *err, size_t errlen)
{
    answer a;
    int rc = call(e, "/v3/kv/deleterange", json_pack("{s:o}", "key", jkey(e, key)), &a, err, errlen);
    if (rc != 0)
        return rc;
    if (rev != NULL)
        *rev = header_rev(a.j);
    if (jint(a.j, "deleted") == 0)
        rc = fail(err, errlen, DSQ_ETCD_ENOTFOUND, "etcd: no key '%s%s'", e->prefix, key);
    json_decref(a.j);
    return rc;
}

/* ---- transactions ------------------------------------------------------------------------------ */

static json_t *cmp_json(const dsq_etcd *e, const dsq_etcd_cmp *c)
{
    static const char *const targets[] = {"VERSION", "CREATE", "MOD", "VALUE"};
    static const char *const fields[] = {"version", "create_revision", "mod_revision", "value"};
    static const char *const results[] = {"EQUAL", "NOT_EQUAL", "LESS", "GREATER"};
    if (c->target < DSQ_ETCD_CMP_VERSION || c->target > DSQ_ETCD_CMP_VALUE || c->op < DSQ_ETCD_EQ ||
        c->op > DSQ_ETCD_GT || c->key == NULL)
        return NULL;
    json_t *v = c->target == DSQ_ETCD_CMP_VALUE ? jbytes(c->value, c->value_len) : jnum(c->num);
    return json_pack("{s:o, s:s, s:s, s:o}", "key", jkey(e, c->key), "target", targets[c->target], "result",
                     results[c->op], fields[c->target], v);
}

static json_t *op_json(const dsq_etcd *e, const dsq_etcd_op *op)
{
    if (op->key == NULL)
        return NULL;
    if (op->type == DSQ_ETCD_PUT)
        return json_pack("{s:o}", "request_put", put_req(e, op->key, op->value, op->value_len, op->lease));
    if (op->type == DSQ_ETCD_DELETE)
        return json_pack("{s:{s:o}}", "request_delete_range", "key", jkey(e, op->key));
    return NULL;
}

/* A TxnRequest's body; `get`, when not NULL, a key to read on failure
 * (after the `otherwise` ops). NULL: an invalid compare or op, or out of
 * memory. */
static json_t *txn_req(const dsq_etcd *e, const dsq_etcd_cmp *cmp, size_t ncmp, const dsq_etcd_op *then,
                       size_t nthen, const dsq_etcd_op *otherwise, size_t notherwise, const char *get)
{
    json_t *cs = json_array(), *ts = json_array(), *fs = json_array();
    json_t *o = json_pack("{s:o, s:o, s:o}", "compare", cs, "success", ts, "failure", fs);
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < ncmp; i++)
        if (json_array_append_new(cs, cmp_json(e, &cmp[i])) != 0)
            goto bad;
    for (size_t i = 0; i < nthen; i++)
        if (json_array_append_new(ts, op_json(e, &then[i])) != 0)
            goto bad;
    for (size_t i = 0; i < notherwise; i++)
        if (json_array_append_new(fs, op_json(e, &otherwise[i])) != 0)
            goto bad;
    if (get != NULL && json_array_append_new(fs, json_pack("{s:{s:o}}", "request_range", "key", jkey(e, get))) != 0)
        goto bad;
    return o;
bad:
    json_decref(o);
    return NULL;
}

/* Run a transaction made by txn_req: 0 (the compares held) or
 * DSQ_ETCD_ECONFLICT with *ans (the caller's to decref; may be NULL),
 * DSQ_ETCD_ELEASE, DSQ_ETCD_EFAIL. */
static int txn_run(dsq_etcd *e, json_t *req, json_t **ans, int64_t *rev, char *err, size_t errlen)
{
    if (ans != NULL)
        *ans = NULL;
    if (req == NULL)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a transaction's compare or op is not valid (or out of memory)");
    answer a;
    int rc = call(e, "/v3/kv/txn", req, &a, err, errlen);
    if (rc != 0)
        return lease_or_fail(rc, &a);
    if (rev != NULL)
        *rev = header_rev(a.j);
    if (!json_is_true(json_object_get(a.j, "succeeded")))
        rc = fail(err, errlen, DSQ_ETCD_ECONFLICT, "etcd: a transaction's compare failed");
    if (ans != NULL)
        *ans = a.j;
    else
        json_decref(a.j);
    return rc;
}

int dsq_etcd_txn(dsq_etcd *e, const dsq_etcd_cmp *cmp, size_t ncmp, const dsq_etcd_op *then, size_t nthen,
                 const dsq_etcd_op *otherwise, size_t notherwise, int64_t *rev, char *err, size_t errlen)
{
    return txn_run(e, txn_req(e, cmp, ncmp, then, nthen, otherwise, notherwise, NULL), NULL, rev, err, errlen);
}

int dsq_etcd_cas(dsq_etcd *e, const char *key, int64_t mod_revision, const void *value, size_t len, int64_t lease,
                 dsq_etcd_kv *cur, int64_t *rev, char *err, size_t errlen)
{
    if (cur != NULL)
        memset(cur, 0, sizeof *cur);
    dsq_etcd_cmp c = {.key = key, .target = DSQ_ETCD_CMP_MOD, .op = DSQ_ETCD_EQ, .num = mod_revision};
    dsq_etcd_op op = {.type = DSQ_ETCD_PUT, .key = key, .value = value, .value_len = len, .lease = lease};
    json_t *ans;
    int rc = txn_run(e, txn_req(e, &c, 1, &op, 1, NULL, 0, key), &ans, rev, err, errlen);
    if (rc != DSQ_ETCD_ECONFLICT) {
        json_decref(ans);
        return rc;
    }
    /* responses[0].response_range.kvs[0]: the key as it is (none: gone) */
    json_t *r = json_object_get(json_array_get(json_object_get(ans, "responses"), 0), "response_range");
    json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
    if (cur != NULL && kv != NULL) {
        char e2[MSG_MAX];
        if (kv_parse(e, kv, cur, e2, sizeof e2) != 0)
            rc = fail(err, errlen, DSQ_ETCD_EFAIL, "%s", e2);
    }
    if (rc == DSQ_ETCD_ECONFLICT)
        fail(err, errlen, rc, "etcd: '%s%s' is at revision %lld, not %lld", e->prefix, key,
             (long long)jint(kv, "mod_revision"), (long long)mod_revision);
    json_decref(ans);
    return rc;
}

/* ---- leases ------------------------------------------------------------------------------------ */

int dsq_etcd_lease_grant(dsq_etcd *e, int64_t ttl_s, int64_t *id, int64_t *ttl, char *err, size_t errlen)
{
    *id = 0;
    if (ttl_s <= 0)
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a lease's TTL must be at least 1 s");
    answer a;
    int rc = call(e, "/v3/lease/grant", json_pack("{s:o, s:o}", "TTL", jnum(ttl_s), "ID", jnum(0)), &a, err, errlen);
    if (rc != 0)
        return rc;
    *id = jint(a.j, "ID");
    if (ttl != NULL)
        *ttl = jint(a.j, "TTL");
    if (*id == 0)
        rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: a lease was granted without an id");
    json_decref(a.j);
    return rc;
}

int dsq_etcd_lease_keepalive(dsq_etcd *e, int64_t id, int64_t *ttl, char *err, size_t errlen)
{
    answer a;
    int rc = call(e, "/v3/lease/keepalive", json_pack("{s:o}", "ID", jnum(id)), &a, err, errlen);
    if (rc != 0)
        return lease_or_fail(rc, &a);
    int64_t left = jint(a.j, "TTL"); /* none (0): the lease is gone */
    if (ttl != NULL)
        *ttl = left > 0 ? left : 0;
    if (left <= 0)
        rc = fail(err, errlen, DSQ_ETCD_ELEASE, "etcd: lease %lld is gone", (long long)id);
    json_decref(a.j);
    return rc;
}

int dsq_etcd_lease_revoke(dsq_etcd *e, int64_t id, char *err, size_t errlen)
{
    answer a;
    int rc = call(e, "/v3/lease/revoke", json_pack("{s:o}", "ID", jnum(id)), &a, err, errlen);
    if (rc != 0)
        return lease_or_fail(rc, &a);
    json_decref(a.j);
    return 0;
}

/* ---- the watch --------------------------------------------------------------------------------- */

/* One watch stream's state, for its write callback. */
typedef struct watch {
    const dsq_etcd *e;
    dsq__etcd_split sp;
    dsq_etcd_watch_fn fn;
    void *arg;
    int rc;                      /* 0 while it goes on; 1: fn stopped it; or a DSQ_ETCD_E* */
    bool refused;                /* canceled because etcd refused the token, before any event */
    bool delivered;              /* fn had an event */
    int64_t compact_rev;
    char msg[MSG_MAX];           /* why it ended, for DSQ_ETCD_EFAIL and ECOMPACTED */
} watch;

/* One WatchResponse: events to fn, or the watch's end. Non-zero: stop. */
static int on_watch_msg(void *arg, const char *obj, size_t len)
{
    watch *w = arg;
    json_t *j = json_loadb(obj, len, 0, NULL);
    answer a = {0};
    if (!json_is_object(j)) {
        w->rc = DSQ_ETCD_EFAIL;
        snprintf(w->msg, sizeof w->msg, "a message of the stream is not a JSON object: %.100s", obj);
        goto out;
    }
    if (is_error(j, &a)) {
        w->rc = DSQ_ETCD_EFAIL;
        w->refused = !w->delivered && token_refused(a.code, a.msg);
        snprintf(w->msg, sizeof w->msg, "%.200s (code %d)", a.msg, a.code);
        goto out;
    }
    json_t *r = json_object_get(j, "result");
    if (!json_is_object(r))
        r = j;
    if (json_is_true(json_object_get(r, "canceled"))) {
        w->compact_rev = jint(r, "compact_revision");
        const char *why = json_string_value(json_object_get(r, "cancel_reason"));
        if (w->compact_rev > 0) {
            w->rc = DSQ_ETCD_ECOMPACTED;
            snprintf(w->msg, sizeof w->msg, "the start revision was compacted away (revisions from %lld are kept)",
                     (long long)w->compact_rev);
        } else {
            w->rc = DSQ_ETCD_EFAIL;
            w->refused = !w->delivered && why != NULL && token_refused(0, why);
            snprintf(w->msg, sizeof w->msg, "etcd canceled the watch: %s", why != NULL ? why : "(no reason given)");
        }
        goto out;
    }
    /* "created", progress notifications: no events, nothing to do */
    json_t *evs = json_object_get(r, "events");
    for (size_t i = 0; i < json_array_size(evs) && w->rc == 0; i++) {
        json_t *ev = json_array_get(evs, i);
        const char *type = json_string_value(json_object_get(ev, "type")); /* none: PUT */
        dsq_etcd_kv kv;
        if (kv_parse(w->e, json_object_get(ev, "kv"), &kv, w->msg, sizeof w->msg) != 0) {
            w->rc = DSQ_ETCD_EFAIL;
            break;
        }
        int t = type != NULL && strcmp(type, "DELETE") == 0 ? DSQ_ETCD_DELETE : DSQ_ETCD_PUT;
        w->delivered = true;
        if (w->fn(w->arg, t, &kv) != 0)
            w->rc = 1;
        dsq_etcd_kv_clear(&kv);
    }
out:
    json_decref(j);
    return w->rc != 0;
}

static size_t on_watch_data(char *p, size_t size, size_t n, void *ud)
{
    watch *w = ud;
    size_t k = size * n;
    if (w->rc == 0 && dsq__etcd_split_feed(&w->sp, p, k, BODY_MAX, on_watch_msg, w) == -1 && w->rc == 0) {
        w->rc = DSQ_ETCD_EFAIL;
        snprintf(w->msg, sizeof w->msg, "the stream is not a sequence of JSON objects (or one passes %u bytes)",
                 BODY_MAX);
    }
    return w->rc == 0 ? k : 0; /* 0 ends the transfer */
}

/* Run one watch stream at each endpoint in turn while none is reached.
 * As dsq_etcd_watch; *refused: it ended because etcd refused the token. */
static int watch_streams(dsq_etcd *e, const char *body, const atomic_bool *cancel, dsq_etcd_watch_fn fn, void *arg,
                         int64_t *compact_rev, bool *refused, char *err, size_t errlen)
{
    *refused = false;
    int rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoint answered");
    size_t first = e->cur;
    for (size_t k = 0; k < e->neps; k++) {
        size_t i = (first + k) % e->neps;
        const char *ep = e->eps[i];
        char errbuf[CURL_ERROR_SIZE];
        watch w = {.e = e, .fn = fn, .arg = arg};
        dsq_buf url = DSQ_BUF_INIT;
        struct curl_slist *hdrs = headers(e);
        CURL *h = curl_easy_init();
        CURLM *m = curl_multi_init();
        if (hdrs == NULL || h == NULL || m == NULL || dsq_buf_printf(&url, "%s/v3/watch", ep) != 0) {
            curl_multi_cleanup(m);
            curl_easy_cleanup(h);
            curl_slist_free_all(hdrs);
            dsq_buf_free(&url);
            return OOM(err, errlen);
        }
        setup(e, h, url.data, body, hdrs, true, errbuf);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
        curl_multi_add_handle(m, h);
        bool canceled = false;
        CURLcode cc = CURLE_OK;
        for (int running = 1;;) {
            CURLMcode mc = curl_multi_perform(m, &running);
            if (mc != CURLM_OK) {
                cc = CURLE_RECV_ERROR;
                snprintf(errbuf, sizeof errbuf, "%s", curl_multi_strerror(mc));
                break;
            }
            if (running == 0) {
                int left;
                for (CURLMsg *msg; (msg = curl_multi_info_read(m, &left)) != NULL;)
                    if (msg->msg == CURLMSG_DONE)
                        cc = msg->data.result;
                break;
            }
            if (cancel != NULL && atomic_load(cancel)) {
                canceled = true;
                break;
            }
            curl_multi_poll(m, NULL, 0, WATCH_POLL_MS, NULL);
        }
        bool reached = sent(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(m, h);
        curl_easy_cleanup(h);
        curl_multi_cleanup(m);
        curl_slist_free_all(hdrs);
        dsq_buf_free(&url);
        dsq__etcd_split_free(&w.sp);
        if (reached)
            e->cur = i;
        if (canceled || w.rc == 1)
            return 0;
        if (w.rc == DSQ_ETCD_ECOMPACTED) {
            if (compact_rev != NULL)
                *compact_rev = w.compact_rev;
            return fail(err, errlen, DSQ_ETCD_ECOMPACTED, "etcd watch %s: %s", ep, w.msg);
        }
        if (w.rc != 0) {
            *refused = w.refused;
            return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd watch %s: %s", ep, w.msg);
        }
        if (cc != CURLE_OK && !reached) {
            rc = fail(err, errlen, DSQ_ETCD_EFAIL, "etcd: no endpoint answered (last, %s: %s)", ep,
                      curl_msg(cc, errbuf));
            continue;
        }
        return fail(err, errlen, DSQ_ETCD_EFAIL, "etcd watch %s: the stream ended (HTTP %ld): %s", ep, status,
                    cc == CURLE_OK ? "closed by the server" : curl_msg(cc, errbuf));
    }
    return rc;
}

int dsq_etcd_watch(dsq_etcd *e, const char *prefix, int64_t start_rev, const atomic_bool *cancel,
                   dsq_etcd_watch_fn fn, void *arg, int64_t *compact_rev, char *err, size_t errlen)
{
    if (compact_rev != NULL)
        *compact_rev = 0;
    json_t *cr = json_object();
    json_t *req = json_pack("{s:o}", "create_request", cr);
    if (req == NULL || set_prefix_range(e, prefix, cr) != 0 ||
        (start_rev > 0 && json_object_set_new(cr, "start_revision", jnum(start_rev)) != 0)) {
        json_decref(req);
        return OOM(err, errlen);
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (body == NULL)
        return OOM(err, errlen);
    enter(e);
    int rc;
    for (int tries = 0;; tries++) {
        if (e->user != NULL && e->token == NULL && (rc = authenticate(e, err, errlen)) != 0)
            break;
        bool refused;
        rc = watch_streams(e, body, cancel, fn, arg, compact_rev, &refused, err, errlen);
        if (rc != DSQ_ETCD_EFAIL || !refused || e->user == NULL || tries > 0)
            break;
        wipe_free(e->token); /* (refused before any event) */
        e->token = NULL;
    }
    leave(e);
    free(body);
    return rc;
}
