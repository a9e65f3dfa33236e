/* http — dosql's transport: one libcurl easy handle, reused for every
 * request so the connection stays open (keep-alive), and the two ways to
 * run SQL on dosqld: POST /v1/db/NAME/query and JSON-RPC on /rpc.
 *
 * Divisions: errors; the URL; open and close; one exchange (curl);
 * reading answers (JSON, server errors, infinities); query and rpc. */
#include "client/http.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

/* ---- errors ------------------------------------------------------------------------ */

/* Fill err with code and a formatted message. */
int dosql_err_set(dosql_err *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return DOSQL_EFAIL;
}

/* ---- the URL ----------------------------------------------------------------------- */

/* Write "URL must look like ...: reason" into why; returns NULL. */
static char *bad_url(char *why, size_t whylen, const char *reason)
{
    snprintf(why, whylen, "%s; the form is http://HOST:PORT/v1/db/NAME", reason);
    return NULL;
}

/* scheme://authority then /v1/db/NAME or /db/NAME, optionally ending in '/'. */
char *dosql_http_parse_url(const char *url, char *why, size_t whylen)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL)
        return bad_url(why, whylen, "no scheme");
    size_t slen = (size_t)(sep - url);
    const char *scheme;
    if (dsq_strn_ieq(url, slen, "http"))
        scheme = "http";
    else if (dsq_strn_ieq(url, slen, "https"))
        scheme = "https";
    else
        return bad_url(why, whylen, "the scheme is not http or https");
    if (strpbrk(url, "?#") != NULL)
        return bad_url(why, whylen, "no query string or fragment");
    const char *auth = sep + 3;
    const char *path = strchr(auth, '/');
    if (path == NULL || path == auth)
        return bad_url(why, whylen, path == auth ? "no host" : "no database path");
    const char *name;
    if (strncmp(path, "/v1/db/", 7) == 0)
        name = path + 7;
    else if (strncmp(path, "/db/", 4) == 0)
        name = path + 4;
    else
        return bad_url(why, whylen, "the path is not /v1/db/NAME");
    size_t nlen = strcspn(name, "/");
    if (name[nlen] == '/' && name[nlen + 1] != '\0')
        return bad_url(why, whylen, "nothing may follow the database name");
    char db[130];
    if (nlen == 0 || nlen >= sizeof db)
        return bad_url(why, whylen, "bad database name");
    memcpy(db, name, nlen);
    db[nlen] = '\0';
    if (!dsq_db_name_valid(db))
        return bad_url(why, whylen, "a database name is 1 to 128 of A-Z a-z 0-9 . _ -, "
                                    "not starting with '.'");
    char *out = NULL;
    if (asprintf(&out, "%s://%.*s/v1/db/%s", scheme, (int)(path - auth), auth, db) < 0) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    return out;
}

/* ---- open and close ---------------------------------------------------------------- */

/* libcurl's write callback: append to h->body. */
static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    dosql_http *h = ud;
    return dsq_buf_append(&h->body, p, size * n) == 0 ? size * n : 0;
}

/* libcurl's progress callback: non-zero aborts the transfer after SIGINT. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    dosql_http *h = ud;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return h->interrupted != NULL && *h->interrupted ? 1 : 0;
}

/* a followed by b in a new malloc'd string, or NULL. */
static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s != NULL) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

/* Allocate the handle, URLs and headers; the options that never change. */
int dosql_http_open(dosql_http *h, const char *base, const char *token,
                    volatile sig_atomic_t *interrupted)
{
    memset(h, 0, sizeof *h);
    h->next_id = 1;
    h->interrupted = interrupted;
    h->base = strdup(base);
    h->query_url = concat(base, "/query");
    h->rpc_url = concat(base, "/rpc");
    if (h->base == NULL || h->query_url == NULL || h->rpc_url == NULL)
        return -1;
    const char *fixed[] = {"Content-Type: application/json", "Accept: application/json",
                           "Expect:"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        struct curl_slist *l = curl_slist_append(h->headers, fixed[i]);
        if (l == NULL)
            return -1;
        h->headers = l;
    }
    if (token != NULL && token[0] != '\0') {
        char *auth = concat("Authorization: Bearer ", token);
        if (auth == NULL)
            return -1;
        struct curl_slist *l = curl_slist_append(h->headers, auth);
        free(auth);
        if (l == NULL)
            return -1;
        h->headers = l;
    }
    h->curl = curl_easy_init();
    if (h->curl == NULL)
        return -1;
    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dosql/" DSQ_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    return 0;
}

/* Free the handle (closing its connection), headers, URLs and buffer. */
void dosql_http_close(dosql_http *h)
{
    if (h->curl != NULL)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h->base);
    free(h->query_url);
    free(h->rpc_url);
    dsq_buf_free(&h->body);
    memset(h, 0, sizeof *h);
}

/* ---- one exchange ------------------------------------------------------------------ */

/* POST body to url; the answer lands in h->body and its status in *status.
 * Returns 0, DOSQL_EUNREACHABLE or DOSQL_EINTR. */
static int exchange(dosql_http *h, const char *url, const char *body, long *status,
                    dosql_err *err)
{
    dsq_buf_reset(&h->body);
    h->curl_err[0] = '\0';
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    CURLcode rc = curl_easy_perform(h->curl);
    if (rc == CURLE_ABORTED_BY_CALLBACK && h->interrupted != NULL && *h->interrupted) {
        dosql_err_set(err, "", "interrupted");
        return DOSQL_EINTR;
    }
    if (rc != CURLE_OK) {
        dosql_err_set(err, "", "cannot reach %s: %s", h->base,
                      h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc));
        return DOSQL_EUNREACHABLE;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

static json_t *decode(dosql_http *h);
static int failure(dosql_http *h, json_t *doc, long status, dosql_err *err);

/* GET base + suffix: the body (any bytes) into out. */
int dosql_http_get(dosql_http *h, const char *suffix, dsq_buf *out, dosql_err *err)
{
    char *url = malloc(strlen(h->base) + strlen(suffix) + 1);
    if (url == NULL)
        return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    strcpy(url, h->base);
    strcat(url, suffix);
    dsq_buf_reset(&h->body);
    h->curl_err[0] = '\0';
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    CURLcode rc = curl_easy_perform(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_POST, 1L); /* (the handle's other calls POST) */
    free(url);
    if (rc == CURLE_ABORTED_BY_CALLBACK && h->interrupted != NULL && *h->interrupted) {
        dosql_err_set(err, "", "interrupted");
        return DOSQL_EINTR;
    }
    if (rc != CURLE_OK)
        return dosql_err_set(err, "", "cannot reach %s: %s", h->base,
                             h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc)),
               DOSQL_EUNREACHABLE;
    long status = 0;
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        json_t *reply = decode(h);
        return failure(h, reply, status, err);
    }
    dsq_buf_reset(out);
    if (h->body.len > 0 && dsq_buf_append(out, h->body.data, h->body.len) != 0)
        return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    return 0;
}

/* ---- reading answers --------------------------------------------------------------- */

/* dosqld writes an infinite REAL as 1e999 (or -1e999), which jansson
 * refuses as an overflow. Copy s[0..n) with each such number outside
 * strings replaced by {"$real":"Infinity"} ("-Infinity"), which the
 * formatter knows. Returns a malloc'd copy (length in *outlen) or NULL. */
static char *patch_infinities(const char *s, size_t n, size_t *outlen)
{
    dsq_buf out = DSQ_BUF_INIT;
    bool in_str = false;
    size_t i = 0;
    while (i < n) {
        char ch = s[i];
        if (in_str) {
            size_t step = ch == '\\' && i + 1 < n ? 2 : 1;
            if (ch == '"')
                in_str = false;
            dsq_buf_append(&out, s + i, step);
            i += step;
        } else if (ch == '-' || isdigit((unsigned char)ch)) {
            size_t j = i + 1;
            while (j < n && strchr("0123456789.eE+-", s[j]) != NULL)
                j++;
            char num[64];
            size_t len = j - i < sizeof num - 1 ? j - i : sizeof num - 1;
            memcpy(num, s + i, len);
            num[len] = '\0';
            double d = strtod(num, NULL);
            if (isinf(d))
                dsq_buf_puts(&out, d > 0 ? "{\"$real\":\"Infinity\"}" : "{\"$real\":\"-Infinity\"}");
            else
                dsq_buf_append(&out, s + i, j - i);
            i = j;
        } else {
            in_str = ch == '"';
            dsq_buf_append(&out, s + i, 1);
            i++;
        }
    }
    if (out.data == NULL || dsq_buf_reserve(&out, 0) != 0) {
        dsq_buf_free(&out);
        return NULL;
    }
    return dsq_buf_steal(&out, outlen);
}

/* Parse h->body as JSON; NULL when it is not JSON. */
static json_t *decode(dosql_http *h)
{
    json_error_t jerr;
    json_t *doc = json_loadb(h->body.data ? h->body.data : "", h->body.len, JSON_ALLOW_NUL, &jerr);
    if (doc == NULL && strstr(jerr.text, "overflow") != NULL) {
        size_t len;
        char *fixed = patch_infinities(h->body.data, h->body.len, &len);
        if (fixed != NULL)
            doc = json_loadb(fixed, len, JSON_ALLOW_NUL, &jerr);
        free(fixed);
    }
    return doc;
}

/* Fill err from a reply that is not a success: its {"error": {code,
 * message}} member, or a description of what came instead. Takes doc
 * (may be NULL). Returns DOSQL_EFAIL. */
static int failure(dosql_http *h, json_t *doc, long status, dosql_err *err)
{
    json_t *e = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code != NULL) {
        dosql_err_set(err, code, "%s", msg ? msg : "");
    } else {
        const char *text = h->body.data ? h->body.data : "";
        int len = (int)strcspn(text, "\r\n");
        dosql_err_set(err, "UNKNOWN", "unexpected answer (HTTP %ld): %.*s", status,
                      len > 200 ? 200 : len, text);
    }
    json_decref(doc);
    return DOSQL_EFAIL;
}

/* ---- query and rpc ----------------------------------------------------------------- */

/* Serialize doc (taking it) and POST it to url; the parsed answer in *reply. */
static int post_json(dosql_http *h, const char *url, json_t *doc, json_t **reply, long *status,
                     dosql_err *err)
{
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (body == NULL)
        return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    int rc = exchange(h, url, body, status, err);
    free(body);
    if (rc != 0)
        return rc;
    *reply = decode(h);
    return 0;
}

/* A JSON-RPC request {id, method, params}; the answer's result in *result. */
int dosql_http_rpc(dosql_http *h, const char *method, json_t *params, json_t **result,
                   dosql_err *err)
{
    *result = NULL;
    if (params == NULL)
        params = json_object();
    json_t *req = json_pack("{s:I,s:s,s:o}", "id", (json_int_t)h->next_id++, "method", method,
                            "params", params);
    json_t *reply = NULL;
    long status = 0;
    int rc = post_json(h, h->rpc_url, req, &reply, &status, err);
    if (rc != 0)
        return rc;
    json_t *res = json_object_get(reply, "result");
    if (res == NULL || json_object_get(reply, "error") != NULL)
        return failure(h, reply, status, err);
    *result = json_incref(res);
    json_decref(reply);
    return 0;
}

/* /query outside a transaction; the JSON-RPC method query inside one (the
 * route has no transactionId). */
int dosql_http_query(dosql_http *h, const char *sql, size_t len, const char *txid,
                     json_t **result, dosql_err *err)
{
    *result = NULL;
    json_t *text = json_stringn(sql, len);
    if (text == NULL)
        return dosql_err_set(err, "INVALID_REQUEST", "the statement is not valid UTF-8");
    json_t *req = json_pack("{s:o}", "sql", text);
    if (txid != NULL) {
        if (req != NULL && json_object_set_new(req, "transactionId", json_string(txid)) != 0) {
            json_decref(req);
            req = NULL;
        }
        if (req == NULL)
            return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
        return dosql_http_rpc(h, "query", req, result, err);
    }
    json_t *reply = NULL;
    long status = 0;
    int rc = post_json(h, h->query_url, req, &reply, &status, err);
    if (rc != 0)
        return rc;
    if (status != 200 || !json_is_object(reply) || json_object_get(reply, "columns") == NULL)
        return failure(h, reply, status, err);
    *result = reply;
    return 0;
}
