/* Unit tests: cluster/etcd (the etcd v3 client), against a real etcd
 * each test starts on loopback (tests/unit/support/etcd.h): keys and
 * values below a prefix, compare-and-swap with two writers, leases that
 * expire and are kept alive, watches (in order, cancelled from another
 * thread, a stream that breaks, a compacted start), endpoints falling
 * over, auth and mutual TLS; and the watch stream's JSON splitter alone. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd.h"
#include "tests/unit/support/etcd.h"
#include "tests/unit/support/sh.h"
#include "tests/unit/support/wait.h"

#define PREFIX "/dosqld-test/"

static test_etcd etcd;
static dsq_etcd *cli;
static char err[512];

/* A handle on `endpoints` below PREFIX, with cfg's other fields from c
 * (may be NULL). */
static dsq_etcd *client_with(const char *endpoints, const dsq_etcd_cfg *c)
{
    dsq_etcd_cfg cfg = c != NULL ? *c : (dsq_etcd_cfg){0};
    cfg.endpoints = endpoints;
    if (cfg.prefix == NULL)
        cfg.prefix = PREFIX;
    if (cfg.timeout_ms == 0)
        cfg.timeout_ms = 3000;
    char e[256];
    dsq_etcd *h = dsq_etcd_new(&cfg, e, sizeof e);
    cr_assert(h != NULL, "dsq_etcd_new: %s", e);
    return h;
}

static void start(void)
{
    memset(&etcd, 0, sizeof etcd);
    test_etcd_start(&etcd, NULL);
    cli = client_with(etcd.url, NULL);
}

static void stop(void)
{
    dsq_etcd_free(cli);
    cli = NULL;
    test_etcd_stop(&etcd);
}

static int64_t put(dsq_etcd *h, const char *key, const char *value)
{
    int64_t rev = 0;
    int rc = dsq_etcd_put(h, key, value, strlen(value), 0, &rev, err, sizeof err);
    cr_assert_eq(rc, 0, "put %s: %s", key, err);
    cr_assert_gt(rev, 0);
    return rev;
}

/* key's value, which must be there, as a C string (static buffer). */
static const char *get(dsq_etcd *h, const char *key)
{
    static char v[256];
    dsq_etcd_kv kv;
    int rc = dsq_etcd_get(h, key, &kv, NULL, err, sizeof err);
    cr_assert_eq(rc, 0, "get %s: %d %s", key, rc, err);
    cr_assert_lt(kv.value_len, sizeof v);
    memcpy(v, kv.value, kv.value_len + 1);
    dsq_etcd_kv_clear(&kv);
    return v;
}

/* ---- keys and values --------------------------------------------------------------------------- */

TestSuite(etcd, .init = start, .fini = stop, .timeout = 60);

Test(etcd, put_get_range_delete_below_the_prefix)
{
    int64_t r1 = put(cli, "nodes/n1", "one");
    int64_t r2 = put(cli, "nodes/n2", "two");
    cr_assert_gt(r2, r1);
    static const char bin[5] = {'a', 0, 'b', (char)0xff, 0};
    cr_assert_eq(dsq_etcd_put(cli, "nodes/bin", bin, 4, 0, NULL, err, sizeof err), 0, "%s", err);
    put(cli, "nodes/empty", "");
    put(cli, "nodesx", "not below nodes/");
    /* the same etcd seen without the prefix: the key is there in full */
    dsq_etcd *raw = client_with(etcd.url, &(dsq_etcd_cfg){.prefix = ""});
    cr_assert_str_eq(get(raw, PREFIX "nodes/n1"), "one");
    put(raw, "/elsewhere/n1", "outside the prefix");

    dsq_etcd_kv kv;
    int64_t rev = 0;
    cr_assert_eq(dsq_etcd_get(cli, "nodes/n1", &kv, &rev, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(kv.key, "nodes/n1");
    cr_assert_eq(kv.key_len, 8);
    cr_assert_str_eq(kv.value, "one");
    cr_assert_eq(kv.mod_revision, r1);
    cr_assert_eq(kv.create_revision, r1);
    cr_assert_eq(kv.version, 1);
    cr_assert_eq(kv.lease, 0);
    cr_assert_geq(rev, r2);
    dsq_etcd_kv_clear(&kv);
    dsq_etcd_kv_clear(&kv); /* twice: a no-op */

    cr_assert_eq(dsq_etcd_get(cli, "nodes/bin", &kv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(kv.value_len, 4);
    cr_assert(memcmp(kv.value, bin, 5) == 0, "binary values come back as they went, NUL-terminated");
    dsq_etcd_kv_clear(&kv);
    cr_assert_eq(dsq_etcd_get(cli, "nodes/empty", &kv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(kv.value_len, 0);
    cr_assert_str_eq(kv.value, "");
    dsq_etcd_kv_clear(&kv);

    rev = 0;
    cr_assert_eq(dsq_etcd_get(cli, "nodes/none", &kv, &rev, err, sizeof err), DSQ_ETCD_ENOTFOUND);
    cr_assert(strstr(err, PREFIX "nodes/none") != NULL, "%s", err);
    cr_assert_null(kv.key);
    cr_assert_gt(rev, 0, "not found still says the revision");

    /* a second write: mod_revision and version move, create_revision stays */
    int64_t r3 = put(cli, "nodes/n1", "uno");
    cr_assert_eq(dsq_etcd_get(cli, "nodes/n1", &kv, NULL, err, sizeof err), 0);
    cr_assert_eq(kv.mod_revision, r3);
    cr_assert_eq(kv.create_revision, r1);
    cr_assert_eq(kv.version, 2);
    dsq_etcd_kv_clear(&kv);

    dsq_etcd_kv *kvs;
    size_t n;
    cr_assert_eq(dsq_etcd_range(cli, "nodes/", &kvs, &n, &rev, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 4, "nodes/ has 4 keys (not nodesx, not /elsewhere): %zu", n);
    const char *keys[] = {"nodes/bin", "nodes/empty", "nodes/n1", "nodes/n2"};
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(kvs[i].key, keys[i], "in key order");
    cr_assert_str_eq(kvs[2].value, "uno");
    cr_assert_eq(kvs[2].mod_revision, r3);
    cr_assert_geq(rev, r3);
    dsq_etcd_kvs_free(kvs, n);

    cr_assert_eq(dsq_etcd_range(cli, "", &kvs, &n, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 5, "the whole prefix: nodesx too, not /elsewhere");
    dsq_etcd_kvs_free(kvs, n);
    cr_assert_eq(dsq_etcd_range(cli, "none/", &kvs, &n, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 0);
    cr_assert_null(kvs);
    cr_assert_eq(dsq_etcd_range(raw, "", &kvs, &n, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 6, "no prefix at all: every key");
    dsq_etcd_kvs_free(kvs, n);

    int64_t r4 = 0;
    cr_assert_eq(dsq_etcd_delete(cli, "nodes/n2", &r4, err, sizeof err), 0, "%s", err);
    cr_assert_gt(r4, r3);
    cr_assert_eq(dsq_etcd_get(cli, "nodes/n2", &kv, NULL, err, sizeof err), DSQ_ETCD_ENOTFOUND);
    cr_assert_eq(dsq_etcd_delete(cli, "nodes/n2", NULL, err, sizeof err), DSQ_ETCD_ENOTFOUND);
    cr_assert_eq(dsq_etcd_range(cli, "nodes/", &kvs, &n, NULL, err, sizeof err), 0);
    cr_assert_eq(n, 3);
    dsq_etcd_kvs_free(kvs, n);
    dsq_etcd_free(raw);
}

/* A set read page by page is one snapshot: the pages after the first read
 * the store as it was then, whatever changed since. */
Test(etcd, range_pages_are_one_snapshot)
{
    char key[32], val[32];
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof key, "p/k%02d", i);
        snprintf(val, sizeof val, "v%d", i);
        put(cli, key, val);
    }
    put(cli, "pz", "not below p/");
    dsq_etcd_kv *kvs;
    size_t n, total = 0;
    bool more = true;
    int64_t rev = 0, at = 0;
    char after[64] = "";
    int pages = 0;
    while (more) {
        cr_assert_lt(pages, 10);
        int rc = dsq_etcd_range_page(cli, "p/", pages > 0 ? after : NULL, 10, at, &kvs, &n, &more, &rev, err,
                                     sizeof err);
        cr_assert_eq(rc, 0, "%s", err);
        if (pages == 0) {
            at = rev;
            /* changes after the first page are not in the next ones */
            put(cli, "p/k05", "changed");
            put(cli, "p/k24", "changed");
            put(cli, "p/k99", "new");
            cr_assert_eq(dsq_etcd_delete(cli, "p/k20", NULL, err, sizeof err), 0, "%s", err);
        }
        cr_assert_eq(rev, at, "each page says the revision it read");
        cr_assert_eq(n, pages < 2 ? 10u : 5u, "page %d has %zu", pages, n);
        cr_assert_eq(more, pages < 2, "page %d: more %d", pages, more);
        for (size_t i = 0; i < n; i++) {
            snprintf(key, sizeof key, "p/k%02zu", total + i);
            snprintf(val, sizeof val, "v%zu", total + i);
            cr_assert_str_eq(kvs[i].key, key);
            cr_assert_str_eq(kvs[i].value, val);
        }
        total += n;
        snprintf(after, sizeof after, "%s", kvs[n - 1].key);
        dsq_etcd_kvs_free(kvs, n);
        pages++;
    }
    cr_assert_eq(total, 25);
    cr_assert_eq(pages, 3);

    /* no limit, now: the changes are there; after the last key, nothing */
    cr_assert_eq(dsq_etcd_range_page(cli, "p/", NULL, 0, 0, &kvs, &n, &more, &rev, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 25);
    cr_assert_not(more);
    cr_assert_gt(rev, at);
    cr_assert_str_eq(kvs[5].value, "changed");
    cr_assert_str_eq(kvs[24].key, "p/k99");
    dsq_etcd_kvs_free(kvs, n);
    cr_assert_eq(dsq_etcd_range_page(cli, "p/", "p/k99", 10, 0, &kvs, &n, &more, NULL, err, sizeof err), 0, "%s",
                 err);
    cr_assert_eq(n, 0);
    cr_assert_null(kvs);
    cr_assert_not(more);
    cr_assert_eq(dsq_etcd_range_page(cli, "p/", "o/x", 10, 0, &kvs, &n, &more, NULL, err, sizeof err),
                 DSQ_ETCD_EFAIL, "a page after a key not below the prefix");
    cr_assert(strstr(err, "not below") != NULL, "%s", err);

    /* the snapshot's revision compacted away: start again */
    char body[96];
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", (long long)rev);
    test_etcd_post_ok(&etcd, "/v3/kv/compaction", body, NULL);
    int rc = dsq_etcd_range_page(cli, "p/", "p/k09", 10, at, &kvs, &n, &more, NULL, err, sizeof err);
    cr_assert_eq(rc, DSQ_ETCD_ECOMPACTED, "%d %s", rc, err);
    cr_assert(strstr(err, "compacted") != NULL, "%s", err);
    cr_assert_null(kvs);
}

Test(etcd, bad_settings_are_refused)
{
    char e[256];
    const char *bad[] = {NULL, "", " , ", "ftp://127.0.0.1:2379", "127.0.0.1:2379", "http://"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e[0] = '\0';
        cr_assert_null(dsq_etcd_new(&(dsq_etcd_cfg){.endpoints = bad[i]}, e, sizeof e), "endpoints '%s'",
                       bad[i] ? bad[i] : "(null)");
        cr_assert(e[0] != '\0', "a message for '%s'", bad[i] ? bad[i] : "(null)");
    }
    cr_assert_null(dsq_etcd_new(&(dsq_etcd_cfg){.endpoints = etcd.url, .user = "u"}, e, sizeof e));
    cr_assert_null(dsq_etcd_new(&(dsq_etcd_cfg){.endpoints = etcd.url, .cert_file = "c.pem"}, e, sizeof e));
    dsq_etcd *h = dsq_etcd_new(&(dsq_etcd_cfg){.endpoints = " http://a:1/ , https://b:2"}, e, sizeof e);
    cr_assert_not_null(h, "%s", e);
    cr_assert_str_eq(dsq_etcd_endpoint(h), "http://a:1", "trimmed, no '/' at the end");
    dsq_etcd_free(h);
    dsq_etcd_free(NULL);
}

/* ---- compare-and-swap and transactions --------------------------------------------------------- */

Test(etcd, cas_first_writer_wins_the_second_gets_the_current_revision)
{
    dsq_etcd *other = client_with(etcd.url, NULL);
    dsq_etcd_kv cur;
    int64_t rev_a = 0, rev_b = 0;
    /* both expect the key not to exist */
    cr_assert_eq(dsq_etcd_cas(cli, "leader", 0, "a", 1, 0, &cur, &rev_a, err, sizeof err), 0, "%s", err);
    cr_assert_null(cur.key, "a winner's cur stays empty");
    int rc = dsq_etcd_cas(other, "leader", 0, "b", 1, 0, &cur, &rev_b, err, sizeof err);
    cr_assert_eq(rc, DSQ_ETCD_ECONFLICT, "the second writer loses: %d %s", rc, err);
    cr_assert_str_eq(cur.key, "leader");
    cr_assert_str_eq(cur.value, "a", "it sees the winner's value");
    cr_assert_eq(cur.mod_revision, rev_a, "and the revision of the winner's write");
    cr_assert_geq(rev_b, rev_a);
    cr_assert_str_eq(get(cli, "leader"), "a");

    /* the loser retries with the revision it was told */
    int64_t expect = cur.mod_revision;
    dsq_etcd_kv_clear(&cur);
    int64_t rev_c = 0;
    cr_assert_eq(dsq_etcd_cas(other, "leader", expect, "b", 1, 0, &cur, &rev_c, err, sizeof err), 0, "%s", err);
    cr_assert_gt(rev_c, rev_a);
    /* and now the first writer's old revision is stale */
    cr_assert_eq(dsq_etcd_cas(cli, "leader", rev_a, "a2", 2, 0, &cur, NULL, err, sizeof err), DSQ_ETCD_ECONFLICT);
    cr_assert_str_eq(cur.value, "b");
    cr_assert_eq(cur.mod_revision, rev_c);
    cr_assert(strstr(err, "revision") != NULL, "%s", err);
    dsq_etcd_kv_clear(&cur);

    /* expecting a revision of a key that is gone: conflict, cur zeroed */
    cr_assert_eq(dsq_etcd_delete(cli, "leader", NULL, err, sizeof err), 0);
    cr_assert_eq(dsq_etcd_cas(cli, "leader", rev_c, "x", 1, 0, &cur, NULL, err, sizeof err), DSQ_ETCD_ECONFLICT);
    cr_assert_null(cur.key);
    cr_assert_eq(cur.mod_revision, 0, "0: it does not exist; retry with 0");
    cr_assert_eq(dsq_etcd_cas(cli, "leader", 0, "x", 1, 0, NULL, NULL, err, sizeof err), 0, "%s", err);
    dsq_etcd_free(other);
}

typedef struct racer {
    const char *url;
    int wins, conflicts;
    char err[256];
} racer;

/* Add one to "counter" 20 times, each a read-modify-CAS retried on
 * conflict, on a handle of its own. */
static void *race(void *arg)
{
    racer *r = arg;
    dsq_etcd *h = client_with(r->url, NULL);
    for (int i = 0; i < 20; i++) {
        dsq_etcd_kv cur;
        int64_t expect = 0;
        long v = 0;
        int rc = dsq_etcd_get(h, "counter", &cur, NULL, r->err, sizeof r->err);
        if (rc == 0) {
            expect = cur.mod_revision;
            v = strtol(cur.value, NULL, 10);
            dsq_etcd_kv_clear(&cur);
        } else if (rc != DSQ_ETCD_ENOTFOUND) {
            break;
        }
        for (int tries = 0; tries < 1000; tries++) {
            char s[24];
            snprintf(s, sizeof s, "%ld", v + 1);
            rc = dsq_etcd_cas(h, "counter", expect, s, strlen(s), 0, &cur, NULL, r->err, sizeof r->err);
            if (rc != DSQ_ETCD_ECONFLICT)
                break;
            r->conflicts++;
            expect = cur.mod_revision;
            v = cur.value != NULL ? strtol(cur.value, NULL, 10) : 0;
            dsq_etcd_kv_clear(&cur);
        }
        if (rc != 0)
            break;
        r->wins++;
    }
    dsq_etcd_free(h);
    return NULL;
}

Test(etcd, cas_two_racing_writers_never_both_win)
{
    racer r[2] = {{.url = etcd.url}, {.url = etcd.url}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(r[0].wins, 20, "%s", r[0].err);
    cr_assert_eq(r[1].wins, 20, "%s", r[1].err);
    cr_assert_str_eq(get(cli, "counter"), "40", "every increment counted once (conflicts: %d + %d)", r[0].conflicts,
                     r[1].conflicts);
}

Test(etcd, txn_then_and_otherwise)
{
    int64_t r1 = put(cli, "owner", "n1");
    put(cli, "epoch", "7");
    /* release "owner" only while it is still n1's, and move "epoch" with it */
    dsq_etcd_cmp mine[] = {
        {.key = "owner", .target = DSQ_ETCD_CMP_VALUE, .op = DSQ_ETCD_EQ, .value = "n1", .value_len = 2},
        {.key = "owner", .target = DSQ_ETCD_CMP_MOD, .op = DSQ_ETCD_EQ, .num = r1},
        {.key = "epoch", .target = DSQ_ETCD_CMP_VERSION, .op = DSQ_ETCD_GT, .num = 0},
    };
    dsq_etcd_op then[] = {
        {.type = DSQ_ETCD_DELETE, .key = "owner"},
        {.type = DSQ_ETCD_PUT, .key = "epoch", .value = "8", .value_len = 1},
    };
    dsq_etcd_op otherwise[] = {{.type = DSQ_ETCD_PUT, .key = "lost", .value = "1", .value_len = 1}};
    int64_t rev = 0;
    cr_assert_eq(dsq_etcd_txn(cli, mine, 3, then, 2, otherwise, 1, &rev, err, sizeof err), 0, "%s", err);
    dsq_etcd_kv kv;
    cr_assert_eq(dsq_etcd_get(cli, "owner", &kv, NULL, err, sizeof err), DSQ_ETCD_ENOTFOUND);
    cr_assert_eq(dsq_etcd_get(cli, "epoch", &kv, NULL, err, sizeof err), 0);
    cr_assert_str_eq(kv.value, "8");
    cr_assert_eq(kv.mod_revision, rev, "one revision for the whole transaction");
    dsq_etcd_kv_clear(&kv);
    cr_assert_eq(dsq_etcd_get(cli, "lost", &kv, NULL, err, sizeof err), DSQ_ETCD_ENOTFOUND);

    /* the same again: owner is gone, so the otherwise ops run */
    int64_t rev2 = 0;
    cr_assert_eq(dsq_etcd_txn(cli, mine, 3, then, 2, otherwise, 1, &rev2, err, sizeof err), DSQ_ETCD_ECONFLICT);
    cr_assert_gt(rev2, rev);
    cr_assert_str_eq(get(cli, "lost"), "1");
    cr_assert_str_eq(get(cli, "epoch"), "8");

    /* NE and LT; no ops at all */
    dsq_etcd_cmp c2[] = {
        {.key = "epoch", .target = DSQ_ETCD_CMP_VALUE, .op = DSQ_ETCD_NE, .value = "9", .value_len = 1},
        {.key = "epoch", .target = DSQ_ETCD_CMP_CREATE, .op = DSQ_ETCD_LT, .num = rev2 + 1},
    };
    cr_assert_eq(dsq_etcd_txn(cli, c2, 2, NULL, 0, NULL, 0, NULL, err, sizeof err), 0, "%s", err);
    c2[0].op = DSQ_ETCD_EQ;
    cr_assert_eq(dsq_etcd_txn(cli, c2, 2, NULL, 0, NULL, 0, NULL, err, sizeof err), DSQ_ETCD_ECONFLICT);

    /* an op of no known type, a compare of no known target: refused, nothing sent */
    dsq_etcd_op bad = {.type = 9, .key = "x"};
    cr_assert_eq(dsq_etcd_txn(cli, NULL, 0, &bad, 1, NULL, 0, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    dsq_etcd_cmp badc = {.key = "x", .target = 9};
    cr_assert_eq(dsq_etcd_txn(cli, &badc, 1, NULL, 0, NULL, 0, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    /* etcd's own refusal: one key written twice */
    dsq_etcd_op twice[] = {{.type = DSQ_ETCD_PUT, .key = "x", .value = "1", .value_len = 1},
                           {.type = DSQ_ETCD_PUT, .key = "x", .value = "2", .value_len = 1}};
    cr_assert_eq(dsq_etcd_txn(cli, NULL, 0, twice, 2, NULL, 0, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "duplicate key") != NULL, "etcd's message: %s", err);
}

/* ---- leases ------------------------------------------------------------------------------------ */

Test(etcd, leases_expire_are_kept_alive_and_revoked)
{
    int64_t a, b, ttl = 0;
    cr_assert_eq(dsq_etcd_lease_grant(cli, 1, &a, &ttl, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ttl, 1, "this etcd's shortest lease is 1 s (support/etcd.h)");
    cr_assert_eq(dsq_etcd_lease_grant(cli, 2, &b, &ttl, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ttl, 2);
    cr_assert_neq(a, b);
    uint64_t t0 = wait_now_ms();
    cr_assert_eq(dsq_etcd_put(cli, "alive/a", "a", 1, a, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq_etcd_put(cli, "alive/b", "b", 1, b, NULL, err, sizeof err), 0, "%s", err);
    dsq_etcd_kv kv;
    cr_assert_eq(dsq_etcd_get(cli, "alive/a", &kv, NULL, err, sizeof err), 0);
    cr_assert_eq(kv.lease, a, "the key says its lease");
    dsq_etcd_kv_clear(&kv);

    /* a goes by itself (TTL 1 s, no keepalive); b is kept alive every
     * 200 ms until well past its own TTL (2 s, and the leader's 500 ms
     * sweep): it would have gone by then without the keepalives. */
    uint64_t a_gone = 0;
    for (;;) {
        uint64_t now = wait_now_ms();
        cr_assert_lt(now - t0, (uint64_t)WAIT_MS, "lease a (TTL 1 s) never expired");
        int64_t left = 0;
        cr_assert_eq(dsq_etcd_lease_keepalive(cli, b, &left, err, sizeof err), 0, "%s", err);
        cr_assert_eq(left, 2, "a keepalive starts the TTL again");
        int rc = dsq_etcd_get(cli, "alive/a", &kv, NULL, err, sizeof err);
        if (rc == DSQ_ETCD_ENOTFOUND && a_gone == 0)
            a_gone = now;
        cr_assert(rc == 0 || rc == DSQ_ETCD_ENOTFOUND, "%s", err);
        dsq_etcd_kv_clear(&kv);
        cr_assert_eq(dsq_etcd_get(cli, "alive/b", &kv, NULL, err, sizeof err), 0, "b expired at %llu ms, "
                     "kept alive", (unsigned long long)(now - t0));
        dsq_etcd_kv_clear(&kv);
        if (a_gone != 0 && now - t0 >= 2800)
            break;
        let_time_pass(200); /* timed: the keepalive period */
    }
    cr_assert_geq(a_gone - t0, 800, "a went at %llu ms, before its TTL", (unsigned long long)(a_gone - t0));
    /* a is gone: keeping it alive says so, as does writing under it */
    int64_t left = 99;
    cr_assert_eq(dsq_etcd_lease_keepalive(cli, a, &left, err, sizeof err), DSQ_ETCD_ELEASE, "%s", err);
    cr_assert_eq(left, 0);
    cr_assert_eq(dsq_etcd_put(cli, "alive/a", "a", 1, a, NULL, err, sizeof err), DSQ_ETCD_ELEASE, "%s", err);
    dsq_etcd_kv cur;
    cr_assert_eq(dsq_etcd_cas(cli, "alive/a", 0, "a", 1, a, &cur, NULL, err, sizeof err), DSQ_ETCD_ELEASE, "%s", err);

    /* revoking b deletes its key at once */
    cr_assert_eq(dsq_etcd_lease_revoke(cli, b, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq_etcd_get(cli, "alive/b", &kv, NULL, err, sizeof err), DSQ_ETCD_ENOTFOUND);
    cr_assert_eq(dsq_etcd_lease_keepalive(cli, b, NULL, err, sizeof err), DSQ_ETCD_ELEASE);
    cr_assert_eq(dsq_etcd_lease_revoke(cli, b, err, sizeof err), DSQ_ETCD_ELEASE, "%s", err);
    cr_assert_eq(dsq_etcd_lease_grant(cli, 0, &a, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
}

/* ---- watches ----------------------------------------------------------------------------------- */

typedef struct seen {
    int n;                       /* events seen */
    int stop_at;                 /* stop after this many (0: never) */
    int type[16];
    char key[16][32], value[16][32];
    int64_t rev[16];
    atomic_int count;            /* n, for another thread */
} seen;

static int on_event(void *arg, int type, const dsq_etcd_kv *kv)
{
    seen *s = arg;
    if (s->n < 16) {
        s->type[s->n] = type;
        snprintf(s->key[s->n], sizeof s->key[s->n], "%s", kv->key);
        snprintf(s->value[s->n], sizeof s->value[s->n], "%s", kv->value);
        s->rev[s->n] = kv->mod_revision;
    }
    s->n++;
    atomic_store(&s->count, s->n);
    return s->stop_at > 0 && s->n >= s->stop_at;
}

static void expect_event(const seen *s, int i, int type, const char *key, const char *value, int64_t rev)
{
    cr_assert_eq(s->type[i], type, "event %d: type %d", i, s->type[i]);
    cr_assert_str_eq(s->key[i], key, "event %d", i);
    cr_assert_str_eq(s->value[i], value, "event %d", i);
    if (rev > 0)
        cr_assert_eq(s->rev[i], rev, "event %d: revision %lld", i, (long long)s->rev[i]);
}

Test(etcd, watch_sees_puts_and_deletes_in_order_from_a_revision)
{
    int64_t r1 = put(cli, "w/a", "1");
    int64_t r2 = put(cli, "w/b", "2");
    int64_t r3 = 0;
    cr_assert_eq(dsq_etcd_delete(cli, "w/a", &r3, err, sizeof err), 0);
    put(cli, "wx", "not below w/");
    dsq_etcd_op two[] = {{.type = DSQ_ETCD_PUT, .key = "w/c", .value = "3", .value_len = 1},
                         {.type = DSQ_ETCD_PUT, .key = "w/d", .value = "", .value_len = 0}};
    int64_t r5 = 0;
    cr_assert_eq(dsq_etcd_txn(cli, NULL, 0, two, 2, NULL, 0, &r5, err, sizeof err), 0, "%s", err);

    seen s = {.stop_at = 5};
    cr_assert_eq(dsq_etcd_watch(cli, "w/", r1, NULL, on_event, &s, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(s.n, 5, "the callback's stop ends the watch");
    expect_event(&s, 0, DSQ_ETCD_PUT, "w/a", "1", r1);
    expect_event(&s, 1, DSQ_ETCD_PUT, "w/b", "2", r2);
    expect_event(&s, 2, DSQ_ETCD_DELETE, "w/a", "", r3);
    expect_event(&s, 3, DSQ_ETCD_PUT, "w/c", "3", r5);
    expect_event(&s, 4, DSQ_ETCD_PUT, "w/d", "", r5);

    /* from a later revision: only what came after */
    seen s2 = {.stop_at = 1};
    cr_assert_eq(dsq_etcd_watch(cli, "w/", r3, NULL, on_event, &s2, NULL, err, sizeof err), 0, "%s", err);
    expect_event(&s2, 0, DSQ_ETCD_DELETE, "w/a", "", r3);
    /* the handle is free again for requests after a watch */
    cr_assert_str_eq(get(cli, "w/c"), "3");
}

typedef struct watcher {
    const char *url;
    const char *prefix;
    int64_t from;
    atomic_bool cancel;
    seen s;
    int rc;
    char err[512];
    atomic_bool done;
    uint64_t done_at;
} watcher;

static void *watch_thread(void *arg)
{
    watcher *w = arg;
    dsq_etcd *h = client_with(w->url, NULL);
    w->rc = dsq_etcd_watch(h, w->prefix, w->from, &w->cancel, on_event, &w->s, NULL, w->err, sizeof w->err);
    w->done_at = wait_now_ms();
    atomic_store(&w->done, true);
    dsq_etcd_free(h);
    return NULL;
}

Test(etcd, watch_stops_on_cancel_from_another_thread)
{
    int64_t rev = put(cli, "live/start", "0");
    watcher w = {.url = etcd.url, .prefix = "live/", .from = rev + 1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, watch_thread, &w), 0);
    /* live events, after the stream is up (it saw the first) */
    put(cli, "live/k", "1");
    WAIT_UNTIL(atomic_load(&w.s.count) >= 1, WAIT_MS, "the watch saw the put");
    put(cli, "live/k", "2");
    WAIT_UNTIL(atomic_load(&w.s.count) >= 2, WAIT_MS, "the watch saw the second put");
    cr_assert(!atomic_load(&w.done));
    /* nothing flows now: the cancel flag alone must end it */
    uint64_t t0 = wait_now_ms();
    atomic_store(&w.cancel, true);
    WAIT_UNTIL(atomic_load(&w.done), 2000, "the watch ended after its cancel flag was set");
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, 0, "%s", w.err);
    cr_assert_lt(w.done_at - t0, 1000u, "cancelled within %llu ms", (unsigned long long)(w.done_at - t0));
    cr_log_info("the watch ended %llu ms after its cancel flag was set", (unsigned long long)(w.done_at - t0));
    expect_event(&w.s, 0, DSQ_ETCD_PUT, "live/k", "1", 0);
    expect_event(&w.s, 1, DSQ_ETCD_PUT, "live/k", "2", 0);
    cr_assert_eq(w.s.n, 2);
    /* a flag already set: it returns at once */
    seen s = {0};
    atomic_bool stop = true;
    cr_assert_eq(dsq_etcd_watch(cli, "live/", 0, &stop, on_event, &s, NULL, err, sizeof err), 0, "%s", err);
}

Test(etcd, watch_reports_a_broken_stream)
{
    int64_t rev = put(cli, "brk/start", "0");
    watcher w = {.url = etcd.url, .prefix = "brk/", .from = rev + 1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, watch_thread, &w), 0);
    put(cli, "brk/k", "1");
    WAIT_UNTIL(atomic_load(&w.s.count) >= 1, WAIT_MS, "the watch saw the put");
    test_etcd_kill(&etcd); /* SIGTERM: etcd closes its streams */
    WAIT_UNTIL(atomic_load(&w.done), WAIT_MS, "the watch ended with its stream");
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, DSQ_ETCD_EFAIL, "%d %s", w.rc, w.err);
    cr_assert(w.err[0] != '\0');
    /* and requests fail with a message once nothing listens */
    dsq_etcd_kv kv;
    cr_assert_eq(dsq_etcd_get(cli, "brk/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "no endpoint answered") != NULL, "%s", err);
}

Test(etcd, watch_from_a_compacted_revision_says_so)
{
    int64_t r1 = put(cli, "c/k", "1");
    put(cli, "c/k", "2");
    int64_t r3 = put(cli, "c/k", "3");
    char body[96];
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", (long long)r3);
    test_etcd_post_ok(&etcd, "/v3/kv/compaction", body, NULL);

    seen s = {.stop_at = 1};
    int64_t compact = 0;
    int rc = dsq_etcd_watch(cli, "c/", r1, NULL, on_event, &s, &compact, err, sizeof err);
    cr_assert_eq(rc, DSQ_ETCD_ECOMPACTED, "%d %s", rc, err);
    cr_assert_eq(compact, r3, "revisions from %lld are kept", (long long)compact);
    cr_assert_eq(s.n, 0);
    cr_assert(strstr(err, "compacted") != NULL, "%s", err);

    /* what a caller does then: read again, watch from that read on */
    dsq_etcd_kv *kvs;
    size_t n;
    int64_t rev;
    cr_assert_eq(dsq_etcd_range(cli, "c/", &kvs, &n, &rev, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(kvs[0].value, "3");
    dsq_etcd_kvs_free(kvs, n);
    int64_t r4 = put(cli, "c/k", "4");
    cr_assert_eq(dsq_etcd_watch(cli, "c/", rev + 1, NULL, on_event, &s, &compact, err, sizeof err), 0, "%s", err);
    expect_event(&s, 0, DSQ_ETCD_PUT, "c/k", "4", r4);
    cr_assert_eq(compact, 0);
}

/* ---- endpoints --------------------------------------------------------------------------------- */

Test(etcd, endpoints_fall_over_to_the_next)
{
    char list[192];
    snprintf(list, sizeof list, "http://127.0.0.1:%d,%s", test_free_port(), etcd.url);
    dsq_etcd *h = client_with(list, NULL);
    cr_assert_str_neq(dsq_etcd_endpoint(h), etcd.url, "the first, before any answer");
    int64_t r1 = put(h, "f/k", "1");
    cr_assert_str_eq(dsq_etcd_endpoint(h), etcd.url, "the one that answered is remembered");
    cr_assert_str_eq(get(h, "f/k"), "1");
    dsq_etcd_free(h);

    /* a watch too, on a new handle that starts at the closed port */
    h = client_with(list, NULL);
    seen s = {.stop_at = 1};
    cr_assert_eq(dsq_etcd_watch(h, "f/", r1, NULL, on_event, &s, NULL, err, sizeof err), 0, "%s", err);
    expect_event(&s, 0, DSQ_ETCD_PUT, "f/k", "1", r1);
    cr_assert_str_eq(dsq_etcd_endpoint(h), etcd.url);
    dsq_etcd_free(h);

    /* none answers: a failure naming the last, quickly */
    snprintf(list, sizeof list, "http://127.0.0.1:%d,http://127.0.0.1:%d", test_free_port(), test_free_port());
    h = client_with(list, NULL);
    uint64_t t0 = wait_now_ms();
    dsq_etcd_kv kv;
    cr_assert_eq(dsq_etcd_get(h, "f/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "no endpoint answered") != NULL, "%s", err);
    cr_assert_eq(dsq_etcd_watch(h, "f/", 0, NULL, on_event, &s, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "no endpoint answered") != NULL, "%s", err);
    cr_assert_lt(wait_now_ms() - t0, 2000u, "closed ports fail at once");
    dsq_etcd_free(h);
}

/* ---- auth -------------------------------------------------------------------------------------- */

/* A root token, straight from etcd. */
static char *root_token(void)
{
    long st;
    char *r = test_etcd_http(&etcd, "/v3/auth/authenticate", "{\"name\":\"root\",\"password\":\"rootpw\"}", NULL, &st);
    cr_assert_eq(st, 200, "%s", r);
    char *t = strstr(r, "\"token\":\"");
    cr_assert_not_null(t, "%s", r);
    t += 9;
    char *end = strchr(t, '"');
    cr_assert_not_null(end);
    char *tok = strndup(t, (size_t)(end - t));
    free(r);
    return tok;
}

/* Turn auth off and on again: etcd forgets every token it gave. */
static void forget_tokens(void)
{
    char *tok = root_token();
    test_etcd_post_ok(&etcd, "/v3/auth/disable", "{}", tok);
    test_etcd_post_ok(&etcd, "/v3/auth/enable", "{}", NULL);
    free(tok);
}

Test(etcd, auth_token_and_authenticating_again)
{
    test_etcd_post_ok(&etcd, "/v3/auth/user/add", "{\"name\":\"root\",\"password\":\"rootpw\"}", NULL);
    test_etcd_post_ok(&etcd, "/v3/auth/role/add", "{\"name\":\"root\"}", NULL);
    test_etcd_post_ok(&etcd, "/v3/auth/user/grant", "{\"user\":\"root\",\"role\":\"root\"}", NULL);
    test_etcd_post_ok(&etcd, "/v3/auth/enable", "{}", NULL);

    dsq_etcd *h = client_with(etcd.url, &(dsq_etcd_cfg){.user = "root", .password = "rootpw"});
    int64_t r1 = put(h, "a/k", "1");
    cr_assert_str_eq(get(h, "a/k"), "1");

    /* its token forgotten: the next request authenticates again */
    forget_tokens();
    int64_t r2 = put(h, "a/k", "2");
    cr_assert_str_eq(get(h, "a/k"), "2");
    /* and so does a watch */
    forget_tokens();
    seen s = {.stop_at = 2};
    cr_assert_eq(dsq_etcd_watch(h, "a/", r1, NULL, on_event, &s, NULL, err, sizeof err), 0, "%s", err);
    expect_event(&s, 1, DSQ_ETCD_PUT, "a/k", "2", r2);
    dsq_etcd_free(h);

    /* no user, a wrong password: refused, with etcd's words */
    dsq_etcd_kv kv;
    cr_assert_eq(dsq_etcd_get(cli, "a/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "user name is empty") != NULL, "%s", err);
    h = client_with(etcd.url, &(dsq_etcd_cfg){.user = "root", .password = "wrong"});
    cr_assert_eq(dsq_etcd_get(h, "a/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "authentication failed") != NULL, "%s", err);
    cr_assert_eq(dsq_etcd_watch(h, "a/", 0, NULL, on_event, &s, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "authentication failed") != NULL, "%s", err);
    dsq_etcd_free(h);
}

/* ---- TLS --------------------------------------------------------------------------------------- */

#define QUIET " >/dev/null 2>&1"
#define NEWKEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* In DIR: ca.pem/key, and NAME.pem/key signed by it with ext. */
static void make_cert(const char *dir, const char *name, const char *ext)
{
    sh("cd '%s' && printf '%%s\\n' '%s' | tr ';' '\\n' > %s.ext && "
       "openssl req -new " NEWKEY " -keyout %s.key -out %s.csr -subj /CN=%s" QUIET " && "
       "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -set_serial 0x%08x -days 1 -out %s.pem "
       "-extfile %s.ext" QUIET,
       dir, ext, name, name, name, name, name, (unsigned)rand(), name, name);
}

/* etcd serving https on its client URL, asking for client certificates
 * of its CA. */
static void start_tls(void)
{
    memset(&etcd, 0, sizeof etcd);
    test_etcd_mkdir(&etcd);
    const char *d = etcd.dir;
    sh("cd '%s' && openssl req -x509 " NEWKEY " -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca" QUIET, d);
    make_cert(d, "server", "subjectAltName=IP:127.0.0.1;extendedKeyUsage=serverAuth,clientAuth");
    make_cert(d, "client", "extendedKeyUsage=clientAuth");
    etcd.tls = true;
    snprintf(etcd.ca, sizeof etcd.ca, "%s/ca.pem", d);
    snprintf(etcd.cert, sizeof etcd.cert, "%s/client.pem", d);
    snprintf(etcd.key, sizeof etcd.key, "%s/client.key", d);
    char cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/server.pem", d);
    snprintf(key, sizeof key, "%s/server.key", d);
    const char *extra[] = {"--cert-file", cert, "--key-file", key, "--trusted-ca-file", etcd.ca,
                           "--client-cert-auth", NULL};
    test_etcd_start(&etcd, extra);
}

Test(etcd_tls, mutual_tls, .init = start_tls, .fini = stop, .timeout = 60)
{
    cr_assert(strncmp(etcd.url, "https://", 8) == 0);
    dsq_etcd *h = client_with(etcd.url, &(dsq_etcd_cfg){.ca_file = etcd.ca, .cert_file = etcd.cert,
                                                         .key_file = etcd.key});
    int64_t r1 = put(h, "t/k", "1");
    cr_assert_str_eq(get(h, "t/k"), "1");
    seen s = {.stop_at = 1};
    cr_assert_eq(dsq_etcd_watch(h, "t/", r1, NULL, on_event, &s, NULL, err, sizeof err), 0, "%s", err);
    expect_event(&s, 0, DSQ_ETCD_PUT, "t/k", "1", r1);
    dsq_etcd_free(h);

    /* without a client certificate; without the CA */
    dsq_etcd_kv kv;
    h = client_with(etcd.url, &(dsq_etcd_cfg){.ca_file = etcd.ca});
    cr_assert_eq(dsq_etcd_get(h, "t/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    dsq_etcd_free(h);
    h = client_with(etcd.url, &(dsq_etcd_cfg){.cert_file = etcd.cert, .key_file = etcd.key});
    cr_assert_eq(dsq_etcd_get(h, "t/k", &kv, NULL, err, sizeof err), DSQ_ETCD_EFAIL);
    cr_assert(strstr(err, "no endpoint answered") != NULL, "the request never left: %s", err);
    dsq_etcd_free(h);
}

/* ---- the watch stream's JSON splitter ---------------------------------------------------------- */

typedef struct objs {
    int n;
    char got[8][128];
    int stop_at;                 /* return 1 for this object (1-based; 0: never) */
} objs;

static int on_obj(void *arg, const char *obj, size_t len)
{
    objs *o = arg;
    cr_assert_lt(o->n, 8);
    cr_assert_lt(len, sizeof o->got[0]);
    memcpy(o->got[o->n], obj, len);
    o->got[o->n][len] = '\0';
    o->n++;
    return o->stop_at == o->n;
}

static const char STREAM[] = "{\"result\":{\"created\":true}}\n"
                             "{\"a\":\"}{\\\"\\\\\",\"b\":[{\"c\":[]}]}\r\n  \t"
                             "{}{\"x\":\"\\\\\"}\n";
static const char *const WANT[] = {"{\"result\":{\"created\":true}}", "{\"a\":\"}{\\\"\\\\\",\"b\":[{\"c\":[]}]}",
                                   "{}", "{\"x\":\"\\\\\"}"};

static void expect_objs(const objs *o)
{
    cr_assert_eq(o->n, 4, "%d objects", o->n);
    for (int i = 0; i < 4; i++)
        cr_assert_str_eq(o->got[i], WANT[i], "object %d", i);
}

Test(etcd_split, objects_merged_in_one_chunk)
{
    dsq__etcd_split sp = {0};
    objs o = {0};
    cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM, strlen(STREAM), 1024, on_obj, &o), 0);
    expect_objs(&o);
    cr_assert_eq(sp.buf.len, 0, "nothing left over");
    dsq__etcd_split_free(&sp);
}

Test(etcd_split, objects_split_at_every_byte)
{
    size_t n = strlen(STREAM);
    /* one byte at a time */
    dsq__etcd_split sp = {0};
    objs o = {0};
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM + i, 1, 1024, on_obj, &o), 0);
    expect_objs(&o);
    dsq__etcd_split_free(&sp);
    /* in two pieces, cut at every place */
    for (size_t cut = 0; cut <= n; cut++) {
        objs o2 = {0};
        cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM, cut, 1024, on_obj, &o2), 0);
        cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM + cut, n - cut, 1024, on_obj, &o2), 0);
        expect_objs(&o2);
        dsq__etcd_split_free(&sp);
    }
    /* in three, the middle one several objects' worth */
    objs o3 = {0};
    cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM, 10, 1024, on_obj, &o3), 0);
    cr_assert_eq(o3.n, 0);
    cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM + 10, n - 14, 1024, on_obj, &o3), 0);
    cr_assert_eq(o3.n, 3);
    cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM + n - 4, 4, 1024, on_obj, &o3), 0);
    expect_objs(&o3);
    dsq__etcd_split_free(&sp);
}

Test(etcd_split, a_stop_leaves_the_rest_for_later)
{
    dsq__etcd_split sp = {0};
    objs o = {.stop_at = 2};
    cr_assert_eq(dsq__etcd_split_feed(&sp, STREAM, strlen(STREAM), 1024, on_obj, &o), 1);
    cr_assert_eq(o.n, 2);
    o.stop_at = 0;
    cr_assert_eq(dsq__etcd_split_feed(&sp, NULL, 0, 1024, on_obj, &o), 0, "the rest, with no new bytes");
    expect_objs(&o);
    dsq__etcd_split_free(&sp);
}

Test(etcd_split, not_objects_or_too_large_fail)
{
    const char *bad[] = {"x", "{}x", "[1]", "\"s\"", "{} , {}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dsq__etcd_split sp = {0};
        objs o = {0};
        cr_assert_eq(dsq__etcd_split_feed(&sp, bad[i], strlen(bad[i]), 1024, on_obj, &o), -1, "'%s'", bad[i]);
        dsq__etcd_split_free(&sp);
    }
    /* max: an object of 10 bytes passes 9, in one piece or growing */
    const char *ten = "{\"k\":1234}";
    dsq__etcd_split sp = {0};
    objs o = {0};
    cr_assert_eq(dsq__etcd_split_feed(&sp, ten, 10, 10, on_obj, &o), 0);
    cr_assert_eq(o.n, 1);
    dsq__etcd_split_free(&sp);
    cr_assert_eq(dsq__etcd_split_feed(&sp, ten, 10, 9, on_obj, &o), -1);
    dsq__etcd_split_free(&sp);
    cr_assert_eq(dsq__etcd_split_feed(&sp, ten, 5, 9, on_obj, &o), 0);
    cr_assert_eq(dsq__etcd_split_feed(&sp, ten + 5, 5, 9, on_obj, &o), -1);
    dsq__etcd_split_free(&sp);
    /* whitespace alone is fine, and leaves nothing */
    cr_assert_eq(dsq__etcd_split_feed(&sp, " \r\n\t", 4, 9, on_obj, &o), 0);
    cr_assert_eq(sp.buf.len, 0);
    dsq__etcd_split_free(&sp);
}
