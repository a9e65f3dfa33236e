/* Unit tests: engine/tier/objstore — keys, the retry backoff, the S3
 * backend's text handling (encoding, list pages, error documents), the
 * file:// backend end to end, and the S3 backend's transport failures against
 * local sockets: refused connections are retried then fail, a server that
 * never answers times out, closing cancels what waits. The S3 protocol
 * against a real S3-compatible server is tests/integration/objstore. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/tier/objstore_int.h"
#include "tests/unit/support/wait.h"

Test(objstore, keys)
{
    cr_assert(dsq_obj_key_valid("db/x/wal/00000001.seg"));
    cr_assert(dsq_obj_key_valid("a"));
    cr_assert(dsq_obj_key_valid("é/ü"));
    cr_assert_not(dsq_obj_key_valid(""));
    cr_assert_not(dsq_obj_key_valid("/a"));
    cr_assert_not(dsq_obj_key_valid("a/"));
    cr_assert_not(dsq_obj_key_valid("a//b"));
    cr_assert_not(dsq_obj_key_valid("a/../b"));
    cr_assert_not(dsq_obj_key_valid("./a"));
    cr_assert_not(dsq_obj_key_valid("a\nb"));
    cr_assert_not(dsq_obj_key_valid("a\\b"));
    cr_assert_not(dsq_obj_key_valid("\xff"));
    char big[DSQ_OBJ_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_not(dsq_obj_key_valid(big));
    big[DSQ_OBJ_KEY_MAX] = '\0';
    cr_assert(dsq_obj_key_valid(big));
}

Test(objstore, backoff_is_full_jitter_doubling_to_a_cap)
{
    /* The ceiling doubles from the base and stops at the cap; the wait is
     * anywhere in [0, ceiling]. */
    cr_assert_eq(dsq_obj_backoff_ms(1, 100, 5000, UINT64_MAX), UINT64_MAX % 101);
    for (unsigned a = 1; a <= 12; a++) {
        uint64_t ceiling = 100;
        for (unsigned i = 1; i < a; i++)
            ceiling = ceiling * 2 > 5000 ? 5000 : ceiling * 2;
        uint64_t max = 0;
        for (uint64_t r = 0; r < 20000; r += 7) {
            uint64_t w = dsq_obj_backoff_ms(a, 100, 5000, r * 2654435761u);
            cr_assert_leq(w, ceiling, "attempt %u: %llu > %llu", a, (unsigned long long)w,
                          (unsigned long long)ceiling);
            if (w > max)
                max = w;
        }
        cr_assert_geq(max, ceiling * 9 / 10, "attempt %u never waits near its ceiling", a);
    }
    cr_assert_eq(dsq_obj_backoff_ms(1, 0, 0, 12345), 0);
}

Test(objstore, uri_encoding)
{
    dsq_buf b = DSQ_BUF_INIT;
    const char *s = "db/a b+c=d~e_f.g-h/é";
    cr_assert_eq(dsq__s3_uri_encode(&b, s, strlen(s), true), 0);
    cr_assert_str_eq(b.data, "db/a%20b%2Bc%3Dd~e_f.g-h/%C3%A9");
    dsq_buf_reset(&b);
    cr_assert_eq(dsq__s3_uri_encode(&b, "p/q", 3, false), 0);
    cr_assert_str_eq(b.data, "p%2Fq");
    dsq_buf_free(&b);
}

static const char page1[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
    "<Prefix>pre%2Fdb%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
    "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    "<Contents><Key>pre/db/a+b%2Bc</Key><LastModified>2026-11-26T00:00:00.000Z</LastModified>"
    "<ETag>&quot;x&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents><Key>pre/db/%C3%A9</Key><Size>0</Size></Contents>"
    "<NextContinuationToken>tok&amp;en==</NextContinuationToken></ListBucketResult>";

Test(objstore, list_pages)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    dsq_buf tok = DSQ_BUF_INIT;
    bool more = false;
    cr_assert_eq(dsq__s3_list_parse(page1, strlen(page1), 4, &r, &more, &tok), 0);
    cr_assert(more);
    cr_assert_str_eq(tok.data, "tok&en==");
    cr_assert_eq(r.nitems, 2);
    cr_assert_str_eq(r.items[0].key, "db/a b+c");
    cr_assert_eq(r.items[0].size, 12);
    cr_assert_eq(r.items[0].mtime_ms, 1795651200000LL, "LastModified: 2026-11-26T00:00:00Z");
    cr_assert_str_eq(r.items[1].key, "db/é");
    cr_assert_eq(r.items[1].size, 0);
    cr_assert_eq(r.items[1].mtime_ms, 0, "no LastModified");
    /* A last page without URL encoding: entities only, appended. */
    const char *page2 = "<ListBucketResult><IsTruncated>false</IsTruncated>"
                        "<Contents><Key>pre/x&amp;y</Key><Size>7</Size></Contents></ListBucketResult>";
    cr_assert_eq(dsq__s3_list_parse(page2, strlen(page2), 4, &r, &more, &tok), 0);
    cr_assert_not(more);
    cr_assert_eq(r.nitems, 3);
    cr_assert_str_eq(r.items[2].key, "x&y");
    dsq_obj_req_clear(&r);
    /* Not a list, a damaged entry, a bad size, a bad escape. */
    const char *bad[] = {
        "<Error><Code>NoSuchBucket</Code></Error>",
        "<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>x1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%G1</Key><Size>1</Size></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&bogus;</Key><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&r, 0, sizeof r);
        cr_assert_eq(dsq__s3_list_parse(bad[i], strlen(bad[i]), 0, &r, &more, &tok), -1, "case %zu", i);
        dsq_obj_req_clear(&r);
    }
    dsq_buf_free(&tok);
}

Test(objstore, error_documents)
{
    char t[200];
    const char *doc = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
                      "<Message>The request signature we calculated does not match &apos;x&apos;</Message></Error>";
    dsq__s3_error_text(doc, strlen(doc), t, sizeof t);
    cr_assert_str_eq(t, "SignatureDoesNotMatch: The request signature we calculated does not match 'x'");
    dsq__s3_error_text("<html>502</html>", 16, t, sizeof t);
    cr_assert_str_eq(t, "");
    dsq__s3_error_text("", 0, t, sizeof t);
    cr_assert_str_eq(t, "");
}

/* ---- file:// ---------------------------------------------------------------------------------- */

static char dir[64];
static dsq_obj *O;

static void file_setup(void)
{
    strcpy(dir, "/tmp/dsq-test-obj-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char url[128], err[256];
    snprintf(url, sizeof url, "file://%s/store/deep", dir);
    O = dsq_obj_open(&(dsq_obj_cfg){.url = url}, err, sizeof err);
    cr_assert_not_null(O, "%s", err);
}

static void file_teardown(void)
{
    dsq_obj_close(O);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static dsq_obj_status put(const char *key, const char *body, bool if_absent)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_PUT;
    snprintf(r.key, sizeof r.key, "%s", key);
    r.body = body;
    r.body_len = strlen(body);
    r.if_absent = if_absent;
    dsq_obj_status st = dsq_obj_run(O, &r);
    dsq_obj_req_clear(&r);
    return st;
}

static dsq_obj_status get(const char *key, uint64_t off, uint64_t len, char *out, size_t cap)
{
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_GET;
    snprintf(r.key, sizeof r.key, "%s", key);
    r.off = off;
    r.len = len;
    dsq_obj_status st = dsq_obj_run(O, &r);
    out[0] = '\0';
    if (st == DSQ_OBJ_OK)
        snprintf(out, cap, "%.*s", (int)r.data.len, r.data.data ? r.data.data : "");
    dsq_obj_req_clear(&r);
    return st;
}

static dsq_obj_status op(dsq_obj_op o, const char *key, dsq_obj_req *r)
{
    memset(r, 0, sizeof *r);
    r->op = o;
    snprintf(r->key, sizeof r->key, "%s", key);
    return dsq_obj_run(O, r);
}

TestSuite(objstore_file, .init = file_setup, .fini = file_teardown);

Test(objstore_file, put_get_ranges_head_delete)
{
    char buf[64];
    cr_assert_eq(put("db/a/wal/1.seg", "0123456789", false), DSQ_OBJ_OK);
    cr_assert_eq(get("db/a/wal/1.seg", 0, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "0123456789");
    cr_assert_eq(get("db/a/wal/1.seg", 3, 4, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "3456");
    cr_assert_eq(get("db/a/wal/1.seg", 8, 100, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "89");
    cr_assert_eq(get("db/a/wal/1.seg", 7, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "789");
    cr_assert_eq(get("db/a/wal/1.seg", 10, 1, buf, sizeof buf), DSQ_OBJ_RANGE);
    cr_assert_eq(get("db/a/wal/2.seg", 0, 0, buf, sizeof buf), DSQ_OBJ_NOT_FOUND);
    cr_assert_eq(get("db/a", 0, 0, buf, sizeof buf), DSQ_OBJ_NOT_FOUND, "a directory is not an object");
    dsq_obj_req r;
    cr_assert_eq(op(DSQ_OBJ_HEAD, "db/a/wal/1.seg", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.size, 10);
    cr_assert_eq(op(DSQ_OBJ_HEAD, "db/a/wal/9.seg", &r), DSQ_OBJ_NOT_FOUND);
    /* Replaced whole. */
    cr_assert_eq(put("db/a/wal/1.seg", "new", false), DSQ_OBJ_OK);
    cr_assert_eq(get("db/a/wal/1.seg", 0, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "new");
    /* Empty objects. */
    cr_assert_eq(put("empty", "", false), DSQ_OBJ_OK);
    cr_assert_eq(get("empty", 0, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(get("empty", 0, 1, buf, sizeof buf), DSQ_OBJ_RANGE);
    cr_assert_eq(op(DSQ_OBJ_DELETE, "db/a/wal/1.seg", &r), DSQ_OBJ_OK);
    cr_assert_eq(get("db/a/wal/1.seg", 0, 0, buf, sizeof buf), DSQ_OBJ_NOT_FOUND);
    cr_assert_eq(op(DSQ_OBJ_DELETE, "db/a/wal/1.seg", &r), DSQ_OBJ_OK, "deleting what is gone is done");
}

Test(objstore_file, conditional_put)
{
    char buf[64];
    cr_assert_eq(put("m/manifest", "one", true), DSQ_OBJ_OK);
    cr_assert_eq(put("m/manifest", "two", true), DSQ_OBJ_EXISTS);
    cr_assert_eq(get("m/manifest", 0, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "one", "a refused put leaves the object as it was");
    cr_assert_eq(put("m/manifest", "three", false), DSQ_OBJ_OK);
    cr_assert_eq(get("m/manifest", 0, 0, buf, sizeof buf), DSQ_OBJ_OK);
    cr_assert_str_eq(buf, "three");
}

Test(objstore_file, list_by_prefix_in_key_order)
{
    const char *keys[] = {"db/b/wal/2", "db/a/wal/1", "db/a/ckpt/9", "db/ab/x", "dz", "top"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert_eq(put(keys[i], keys[i], false), DSQ_OBJ_OK);
    /* What an interrupted put leaves is not an object. */
    char path[256];
    snprintf(path, sizeof path, "%s/store/deep/db/a/wal/1.~tmp.42", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    dsq_obj_req r;
    cr_assert_eq(op(DSQ_OBJ_LIST, "db/a", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.nitems, 3);
    cr_assert_str_eq(r.items[0].key, "db/a/ckpt/9");
    cr_assert_str_eq(r.items[1].key, "db/a/wal/1");
    cr_assert_eq(r.items[1].size, strlen("db/a/wal/1"));
    cr_assert_str_eq(r.items[2].key, "db/ab/x");
    dsq_obj_req_clear(&r);
    cr_assert_eq(op(DSQ_OBJ_LIST, "db/a/", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.nitems, 2);
    dsq_obj_req_clear(&r);
    cr_assert_eq(op(DSQ_OBJ_LIST, "", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.nitems, 6);
    cr_assert_str_eq(r.items[5].key, "top");
    dsq_obj_req_clear(&r);
    cr_assert_eq(op(DSQ_OBJ_LIST, "nothing/", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.nitems, 0);
    cr_assert_eq(op(DSQ_OBJ_GET, "db/a/wal/1.~tmp.42", &r), DSQ_OBJ_FAILED, "not a key");
    dsq_obj_req_clear(&r);
}

Test(objstore_file, refusals)
{
    dsq_obj_req r;
    cr_assert_eq(op(DSQ_OBJ_GET, "../escape", &r), DSQ_OBJ_FAILED);
    cr_assert(strstr(r.msg, "invalid object key") != NULL, "%s", r.msg);
    cr_assert_eq(op(DSQ_OBJ_LIST, "a//", &r), DSQ_OBJ_FAILED);
    /* A file where a directory must go: the put fails, cleanly. */
    cr_assert_eq(put("blocker", "x", false), DSQ_OBJ_OK);
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_PUT;
    strcpy(r.key, "blocker/child");
    r.body = "y";
    r.body_len = 1;
    cr_assert_eq(dsq_obj_run(O, &r), DSQ_OBJ_FAILED);
    cr_assert(strstr(r.msg, "Not a directory") != NULL, "%s", r.msg);
}

Test(objstore_file, many_at_once_from_threads_callbacks)
{
    enum { N = 64 };
    static dsq_obj_req rs[N];
    static char bodies[N][32];
    for (int i = 0; i < N; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].op = DSQ_OBJ_PUT;
        snprintf(rs[i].key, sizeof rs[i].key, "many/%02d", i);
        snprintf(bodies[i], sizeof bodies[i], "body %d", i);
        rs[i].body = bodies[i];
        rs[i].body_len = strlen(bodies[i]);
        dsq_obj_submit(O, &rs[i]);
    }
    WAIT_UNTIL(dsq_obj_pending(O) == 0, WAIT_MS, "%zu requests still pending", dsq_obj_pending(O));
    cr_assert_eq(dsq_obj_pending(O), 0);
    dsq_obj_req r;
    cr_assert_eq(op(DSQ_OBJ_LIST, "many/", &r), DSQ_OBJ_OK);
    cr_assert_eq(r.nitems, N);
    dsq_obj_req_clear(&r);
}

Test(objstore, open_refusals)
{
    char err[512];
    cr_assert_null(dsq_obj_open(&(dsq_obj_cfg){.url = "ftp://x"}, err, sizeof err));
    cr_assert(strstr(err, "not a file:// or s3:// URL") != NULL, "%s", err);
    cr_assert_null(dsq_obj_open(&(dsq_obj_cfg){.url = "file://"}, err, sizeof err));
    cr_assert_null(dsq_obj_open(&(dsq_obj_cfg){.url = "file:///dev/null/x"}, err, sizeof err));
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    cr_assert_null(dsq_obj_open(&(dsq_obj_cfg){.url = "s3://bucket"}, err, sizeof err));
    cr_assert(strstr(err, "no credentials") != NULL, "%s", err);
    dsq_obj_cfg c = {.url = "s3://Bad_Bucket", .access_key = "k", .secret_key = "s"};
    cr_assert_null(dsq_obj_open(&c, err, sizeof err));
    cr_assert(strstr(err, "not a valid bucket name") != NULL, "%s", err);
    c = (dsq_obj_cfg){.url = "s3://bucket/p", .access_key = "k", .secret_key = "s", .endpoint = "ftp://h"};
    cr_assert_null(dsq_obj_open(&c, err, sizeof err));
    c.endpoint = "http://h/path";
    cr_assert_null(dsq_obj_open(&c, err, sizeof err));
    cr_assert(strstr(err, "scheme://host[:port]") != NULL, "%s", err);
    c.endpoint = "http://127.0.0.1:9";
    c.region = "us east";
    cr_assert_null(dsq_obj_open(&c, err, sizeof err));
    /* From the environment. */
    setenv("AWS_ACCESS_KEY_ID", "k", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
    c = (dsq_obj_cfg){.url = "s3://bucket/p/"};
    dsq_obj *o = dsq_obj_open(&c, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    dsq_obj_close(o);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

/* ---- s3:// transport failures ------------------------------------------------------------------- */

/* A loopback port: listening but never accepting (silent), or closed. */
static int port_of(int fd)
{
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &n);
    return ntohs(a.sin_port);
}

static int loopback_socket(bool listening)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (listening)
        cr_assert_eq(listen(fd, 16), 0);
    return fd;
}

static dsq_obj *s3_to(int port, unsigned timeout_ms, unsigned retries, unsigned backoff_ms)
{
    char ep[64], err[256];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    dsq_obj_cfg c = {.url = "s3://bucket/pre",
                     .endpoint = ep,
                     .access_key = "k",
                     .secret_key = "s",
                     .timeout_ms = timeout_ms,
                     .connect_timeout_ms = timeout_ms,
                     .retries = retries,
                     .backoff_ms = backoff_ms,
                     .max_backoff_ms = backoff_ms};
    dsq_obj *o = dsq_obj_open(&c, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    return o;
}

Test(objstore_s3, refused_connections_are_retried_then_fail)
{
    int fd = loopback_socket(false); /* bound, not listening: connections are refused */
    dsq_obj *o = s3_to(port_of(fd), 2000, 3, 5);
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_GET;
    strcpy(r.key, "k");
    cr_assert_eq(dsq_obj_run(o, &r), DSQ_OBJ_FAILED);
    cr_assert_eq(r.attempts, 4, "the first try and 3 retries, not %u", r.attempts);
    cr_assert(strstr(r.msg, "after 4 attempts") != NULL, "%s", r.msg);
    cr_assert_eq(r.http_status, 0);
    dsq_obj_close(o);
    close(fd);
}

Test(objstore_s3, a_silent_server_times_out)
{
    int fd = loopback_socket(true); /* connections complete in the backlog; nothing answers */
    dsq_obj *o = s3_to(port_of(fd), 200, 1, 1);
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    r.op = DSQ_OBJ_HEAD;
    strcpy(r.key, "k");
    uint64_t t0 = dsq_now_ms();
    cr_assert_eq(dsq_obj_run(o, &r), DSQ_OBJ_TIMEOUT, "%s", r.msg);
    uint64_t took = dsq_now_ms() - t0;
    cr_assert_eq(r.attempts, 2);
    cr_assert_geq(took, 400, "two attempts of 200 ms took %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 5000);
    dsq_obj_close(o);
    close(fd);
}

static void count_done(dsq_obj_req *r) { (*(int *)r->ud)++; }

/* Requests whose first attempt failed, now waiting for their retry: the
 * store's thread sets the failure's message then and keeps it meanwhile.
 * (Read while that thread works: one byte, which stays once set.) */
static int between_attempts(dsq_obj_req *rs, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += __atomic_load_n(&rs[i].msg[0], __ATOMIC_ACQUIRE) != '\0';
    return k;
}

Test(objstore_s3, closing_cancels_what_waits)
{
    int fd = loopback_socket(false);
    /* Retries wait 60 s: the requests are between attempts when closed. */
    dsq_obj *o = s3_to(port_of(fd), 2000, 5, 60000);
    enum { N = 40, MAX_INFLIGHT = 16 }; /* more than max_inflight (its default): some never start */
    static dsq_obj_req rs[N];
    int done = 0;
    for (int i = 0; i < N; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].op = DSQ_OBJ_PUT;
        snprintf(rs[i].key, sizeof rs[i].key, "k%d", i);
        rs[i].body = "x";
        rs[i].body_len = 1;
        rs[i].done = count_done;
        rs[i].ud = &done;
        dsq_obj_submit(o, &rs[i]);
    }
    WAIT_UNTIL(between_attempts(rs, N) == MAX_INFLIGHT, WAIT_MS, "%d of the %d begun wait for a retry",
               between_attempts(rs, N), MAX_INFLIGHT);
    cr_assert_eq(dsq_obj_pending(o), N);
    uint64_t t0 = dsq_now_ms();
    dsq_obj_close(o);
    cr_assert_lt(dsq_now_ms() - t0, 2000, "closing does not wait out the backoff");
    cr_assert_eq(done, N, "every request finished once");
    for (int i = 0; i < N; i++)
        cr_assert_eq(rs[i].status, DSQ_OBJ_CANCELLED, "request %d: %s", i, dsq_obj_status_name(rs[i].status));
    close(fd);
}
