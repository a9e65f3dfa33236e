/* Unit tests: cluster/topo (a node's key in etcd and its view of the
 * others), against a real etcd each test starts on loopback
 * (tests/unit/support/etcd.h, whose shortest lease is 1 s): nodes that see
 * each other, one that stops (its lease revoked: seen at once), one whose
 * registration pauses past its TTL (seen gone, then back with a new
 * lease), two processes with one id, load changes, etcd stopped and
 * started again, a compacted watch; etcd unreachable from the start; and
 * the description's JSON alone.
 *
 * Each instance's events go to a recorder (tests/unit/support/evlog.h)
 * that keeps them, and beside it the view they describe; the tests
 * compare that view with what etcd holds (the truth) and check that
 * events never contradict it (an UP of a node already up, a DOWN of one
 * not up) nor arrive two at once. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd.h"
#include "cluster/topo.h"
#include "tests/unit/support/etcd.h"
#include "tests/unit/support/evlog.h"
#include "tests/unit/support/wait.h"

#define PREFIX "/dosqld-topo/"
#define TIMEOUT_MS 1000          /* the instances' etcd requests */

static test_etcd etcd;
static dsq_etcd *cli;            /* the test's own view of etcd: the truth */
static char err[512];

/* ---- a recorder of one instance's events ------------------------------------------------------- */

typedef struct rec_ev {
    dsq_topo_event_type type;
    char id[DSQ_NODE_ID_MAX];
    bool has_node;
    dsq_topo_node node;
    int64_t revision;
    char msg[256];
    uint64_t at_ms;
} rec_ev;

typedef struct rec {
    evlog log;                   /* of rec_ev; bad: events that contradict the view, or came two at once */
    dsq_topo_node view[16];      /* as the NODE_* events say (under log's lock) */
    size_t nview;
} rec;

static const char *type_name(dsq_topo_event_type t)
{
    static const char *const names[] = {"REGISTERED", "REGISTER_CONFLICT", "LEASE_LOST", "ETCD_DOWN", "ETCD_UP",
                                        "NODE_UP",    "NODE_CHANGED",      "NODE_DOWN",  "VIEW_READ"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

static dsq_topo_node *rec_find(rec *r, const char *id)
{
    for (size_t i = 0; i < r->nview; i++)
        if (strcmp(r->view[i].id, id) == 0)
            return &r->view[i];
    return NULL;
}

static void on_event(void *ud, const dsq_topo_event *ev)
{
    rec *r = ud;
    evlog_enter(&r->log, "on_event");
    rec_ev *e = evlog_add(&r->log);
    e->type = ev->type;
    snprintf(e->id, sizeof e->id, "%s", ev->id);
    e->has_node = ev->node != NULL;
    if (ev->node != NULL)
        e->node = *ev->node;
    e->revision = ev->revision;
    snprintf(e->msg, sizeof e->msg, "%s", ev->msg);
    e->at_ms = wait_now_ms();
    dsq_topo_node *v = rec_find(r, ev->id);
    bool node_ev = ev->type == DSQ_TOPO_NODE_UP || ev->type == DSQ_TOPO_NODE_CHANGED || ev->type == DSQ_TOPO_NODE_DOWN;
    if (node_ev && (ev->node == NULL || strcmp(ev->node->id, ev->id) != 0)) {
        evlog_bad(&r->log, "%s %s without its node", type_name(ev->type), ev->id);
    } else if (ev->type == DSQ_TOPO_NODE_UP) {
        if (v != NULL) {
            evlog_bad(&r->log, "NODE_UP of %s, up already", ev->id);
        } else {
            cr_assert(r->nview < 16);
            r->view[r->nview++] = *ev->node;
        }
    } else if (ev->type == DSQ_TOPO_NODE_CHANGED) {
        if (v == NULL)
            evlog_bad(&r->log, "NODE_CHANGED of %s, not up", ev->id);
        else
            *v = *ev->node;
    } else if (ev->type == DSQ_TOPO_NODE_DOWN) {
        if (v == NULL)
            evlog_bad(&r->log, "NODE_DOWN of %s, not up", ev->id);
        else
            *v = r->view[--r->nview];
    }
    evlog_leave(&r->log);
}

static void rec_init(rec *r, const char *name)
{
    memset(r, 0, sizeof *r);
    EVLOG_INIT(&r->log, name, rec_ev, type, id);
}

static void rec_free(rec *r) { evlog_free(&r->log); }

/* Events of type (of node id; NULL: any) from index `from` on. */
static size_t count_from(rec *r, size_t from, dsq_topo_event_type type, const char *id)
{
    return evlog_count(&r->log, from, (int)type, id);
}

static size_t count(rec *r, dsq_topo_event_type type, const char *id) { return evlog_count(&r->log, 0, (int)type, id); }

static size_t rec_len(rec *r) { return evlog_len(&r->log); }

/* The last event of type for id (a copy; fails the test when none). */
static rec_ev last(rec *r, dsq_topo_event_type type, const char *id)
{
    rec_ev e = {0};
    bool found = evlog_last(&r->log, (int)type, id, &e);
    cr_assert(found, "%s: no %s of %s", r->log.name, type_name(type), id ? id : "any");
    return e;
}

static bool in_view(rec *r, const char *id)
{
    evlog_lock(&r->log);
    bool in = rec_find(r, id) != NULL;
    evlog_unlock(&r->log);
    return in;
}

static int dump_line(char *out, size_t len, const void *ev)
{
    const rec_ev *e = ev;
    return snprintf(out, len, "  %s %s dbs=%llu rev=%lld %s\n", type_name(e->type), e->id,
                    (unsigned long long)e->node.dbs, (long long)e->revision, e->msg);
}

/* Every event, one a line, for a failure's message (a static buffer). */
static const char *rec_dump(rec *r) { return evlog_dump(&r->log, 0, 200, dump_line); }

static void rec_check(rec *r)
{
    cr_assert_eq(r->log.bad, 0, "%s: %s; events:\n%s", r->log.name, r->log.why, rec_dump(r));
}

static bool node_same(const dsq_topo_node *a, const dsq_topo_node *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->peer, b->peer) == 0 && strcmp(a->client, b->client) == 0 &&
           strcmp(a->forward, b->forward) == 0 && a->dbs == b->dbs && a->bytes == b->bytes &&
           a->started_ms == b->started_ms;
}

/* Whether r's view is what etcd holds: the same ids, the same
 * descriptions (of the keys that are valid descriptions of the id they
 * name); why[] says the first difference. */
static bool view_is_truth(rec *r, char *why, size_t len)
{
    dsq_etcd_kv *kvs;
    size_t n;
    cr_assert_eq(dsq_etcd_range(cli, "nodes/", &kvs, &n, NULL, err, sizeof err), 0, "%s", err);
    bool same = true;
    snprintf(why, len, "the same");
    dsq_topo_node *valid = calloc(n + 1, sizeof *valid);
    size_t m = 0;
    cr_assert(valid != NULL);
    for (size_t i = 0; i < n; i++)
        if (dsq_topo_node_decode(kvs[i].value, kvs[i].value_len, &valid[m], err, sizeof err) == 0 &&
            strcmp(kvs[i].key + 6, valid[m].id) == 0)
            m++;
    evlog_lock(&r->log);
    if (m != r->nview) {
        same = false;
        snprintf(why, len, "%s: %zu nodes in the view, %zu in etcd", r->log.name, r->nview, m);
    }
    for (size_t i = 0; i < m && same; i++) {
        dsq_topo_node t = valid[i];
        dsq_topo_node *v = rec_find(r, t.id);
        if (v == NULL || !node_same(v, &t)) {
            same = false;
            snprintf(why, len, "%s: node %s %s", r->log.name, t.id, v == NULL ? "not in the view" : "differs");
        }
    }
    evlog_unlock(&r->log);
    free(valid);
    dsq_etcd_kvs_free(kvs, n);
    return same;
}

#define WAIT_VIEW_IS_TRUTH(r)                                                                          \
    do {                                                                                               \
        char why_[256];                                                                                \
        WAIT_UNTIL_STEP(wait_sleep_ms(20), view_is_truth(r, why_, sizeof why_), WAIT_MS,               \
                        "%s; events:\n%s", why_, rec_dump(r));                                         \
    } while (0)

/* ---- instances ---------------------------------------------------------------------------------- */

static dsq_topo_cfg cfg_for(rec *r, const char *id, const char *peer, unsigned ttl, const char *endpoints)
{
    return (dsq_topo_cfg){
        .etcd = {.endpoints = endpoints, .prefix = PREFIX, .timeout_ms = TIMEOUT_MS},
        .id = id,
        .peer = peer,
        .client = "127.0.0.1:8787",
        .node_ttl = ttl,
        .on_event = on_event,
        .ud = r,
    };
}

static dsq_topo *topo_new(rec *r, const char *id, const char *peer, unsigned ttl)
{
    dsq_topo_cfg c = cfg_for(r, id, peer, ttl, etcd.url);
    dsq_topo *t = dsq_topo_start(&c, err, sizeof err);
    cr_assert_not_null(t, "dsq_topo_start %s: %s", id, err);
    return t;
}

/* Wait until r has seen each of the ids up. */
static void wait_up(rec *r, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        WAIT_UNTIL(in_view(r, ids[i]), WAIT_MS, "%s never saw %s up; events:\n%s", r->log.name, ids[i],
                   rec_dump(r));
}

/* Nodes "a" and "b" with a lease of ttl s, each recording its events in
 * its rec, once each sees both up. */
static void start_pair(rec *ra, rec *rb, dsq_topo **a, dsq_topo **b, unsigned ttl)
{
    static const char *const both[] = {"a", "b"};
    rec_init(ra, "a");
    rec_init(rb, "b");
    *a = topo_new(ra, "a", "127.0.0.1:7001", ttl);
    *b = topo_new(rb, "b", "127.0.0.1:7002", ttl);
    wait_up(ra, both, 2);
    wait_up(rb, both, 2);
}

/* The key of node id as etcd holds it (decoded); false when none. */
static bool key_of(const char *id, dsq_topo_node *out, int64_t *lease)
{
    char key[64];
    snprintf(key, sizeof key, "nodes/%s", id);
    dsq_etcd_kv kv;
    int rc = dsq_etcd_get(cli, key, &kv, NULL, err, sizeof err);
    if (rc == DSQ_ETCD_ENOTFOUND)
        return false;
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(dsq_topo_node_decode(kv.value, kv.value_len, out, err, sizeof err), 0, "%s: %s", kv.value, err);
    if (lease != NULL)
        *lease = kv.lease;
    dsq_etcd_kv_clear(&kv);
    return true;
}

static void start(void)
{
    memset(&etcd, 0, sizeof etcd);
    test_etcd_start(&etcd, NULL);
    cli = dsq_etcd_new(&(dsq_etcd_cfg){.endpoints = etcd.url, .prefix = PREFIX, .timeout_ms = 3000}, err,
                       sizeof err);
    cr_assert_not_null(cli, "%s", err);
}

static void stop(void)
{
    dsq_etcd_free(cli);
    cli = NULL;
    test_etcd_stop(&etcd);
}

TestSuite(topo, .init = start, .fini = stop, .timeout = 60);

/* ---- nodes up and down --------------------------------------------------------------------------- */

Test(topo, two_nodes_see_each_other_and_a_stop_is_seen_at_once)
{
    rec ra, rb;
    dsq_topo *a, *b;
    /* a TTL of 5 s: a NODE_DOWN within 2.5 s of the stop can only be the
     * revoke's, not the lease running out */
    start_pair(&ra, &rb, &a, &b, 5);
    WAIT_VIEW_IS_TRUTH(&ra);
    WAIT_VIEW_IS_TRUTH(&rb);
    cr_assert_eq(count(&ra, DSQ_TOPO_REGISTERED, "a"), 1);
    cr_assert_eq(count(&rb, DSQ_TOPO_REGISTERED, "b"), 1);
    cr_assert_eq(count(&ra, DSQ_TOPO_NODE_UP, NULL), 2, "one NODE_UP each, self included:\n%s", rec_dump(&ra));
    /* One read at the start (before or after a's own key is written): one
     * VIEW_READ, after the NODE_UPs of what it found. */
    cr_assert_eq(count(&ra, DSQ_TOPO_VIEW_READ, NULL), 1, "%s", rec_dump(&ra));
    rec_ev up = last(&ra, DSQ_TOPO_NODE_UP, "b");
    cr_assert_str_eq(up.node.peer, "127.0.0.1:7002");
    cr_assert_str_eq(up.node.client, "127.0.0.1:8787");
    cr_assert_str_eq(up.node.forward, "");
    cr_assert_gt(up.node.started_ms, 1700000000000ull, "started is wall-clock ms");
    cr_assert_gt(up.revision, 0);
    rec_ev reg = last(&rb, DSQ_TOPO_REGISTERED, "b");
    cr_assert(reg.has_node && strcmp(reg.node.peer, "127.0.0.1:7002") == 0);
    int64_t lease = 0;
    dsq_topo_node k;
    cr_assert(key_of("b", &k, &lease));
    cr_assert_neq(lease, 0, "the key is under a lease");

    uint64_t t0 = wait_now_ms();
    dsq_topo_stop(b);
    uint64_t stop_ms = wait_now_ms() - t0;
    cr_assert_lt(stop_ms, 1500, "dsq_topo_stop took %llu ms", (unsigned long long)stop_ms);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_DOWN, "b") == 1, 2500, "a saw b go within 2.5 s (its TTL is 5 s)");
    cr_assert_eq(dsq_etcd_lease_keepalive(cli, lease, NULL, err, sizeof err), DSQ_ETCD_ELEASE, "revoked");
    cr_assert_not(key_of("b", &k, NULL));
    cr_assert(in_view(&ra, "a"));
    size_t nb = rec_len(&rb);
    dsq_topo_stop(a);
    rec_check(&ra);
    rec_check(&rb);
    cr_assert_eq(rec_len(&rb), nb, "no event after dsq_topo_stop");
    rec_free(&ra);
    rec_free(&rb);
}

Test(topo, paused_registration_loses_the_lease_then_registers_again)
{
    rec ra, rb;
    dsq_topo *a, *b;
    start_pair(&ra, &rb, &a, &b, 2);
    int64_t lease1 = 0;
    dsq_topo_node k;
    cr_assert(key_of("b", &k, &lease1));

    /* b stops renewing, as a process stopped longer than its TTL */
    cr_assert(dsq__topo_pause_registration(b, true));
    uint64_t t0 = wait_now_ms();
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_DOWN, "b") == 1, WAIT_MS, "a never saw b's lease expire:\n%s", rec_dump(&ra));
    uint64_t gone = wait_now_ms() - t0;
    /* renewed at most TTL / 3 before the pause: at least 1.3 s were left */
    cr_assert_geq(gone, 1000, "b seen gone %llu ms after the pause (TTL 2 s)", (unsigned long long)gone);
    cr_assert_lt(gone, 4000, "b seen gone %llu ms after the pause (TTL 2 s)", (unsigned long long)gone);
    WAIT_UNTIL(count(&rb, DSQ_TOPO_NODE_DOWN, "b") == 1, WAIT_MS, "b's own view sees it go too");
    cr_assert_eq(count(&rb, DSQ_TOPO_LEASE_LOST, NULL), 0, "nothing said while paused");
    cr_assert_not(key_of("b", &k, NULL));

    cr_assert(dsq__topo_pause_registration(b, false));
    WAIT_UNTIL(count(&rb, DSQ_TOPO_REGISTERED, "b") == 2, WAIT_MS, "b registers again:\n%s", rec_dump(&rb));
    cr_assert_eq(count(&rb, DSQ_TOPO_LEASE_LOST, "b"), 1, "%s", rec_dump(&rb));
    cr_assert_lt(last(&rb, DSQ_TOPO_LEASE_LOST, "b").at_ms, last(&rb, DSQ_TOPO_REGISTERED, "b").at_ms,
                 "LEASE_LOST, then REGISTERED");
    int64_t lease2 = 0;
    cr_assert(key_of("b", &k, &lease2));
    cr_assert_neq(lease2, lease1, "under a new lease");
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_UP, "b") == 2, WAIT_MS, "a sees b back:\n%s", rec_dump(&ra));
    WAIT_VIEW_IS_TRUTH(&ra);
    WAIT_VIEW_IS_TRUTH(&rb);
    cr_assert_eq(count(&ra, DSQ_TOPO_LEASE_LOST, NULL), 0, "a kept its lease");
    dsq_topo_stop(a);
    dsq_topo_stop(b);
    rec_check(&ra);
    rec_check(&rb);
    rec_free(&ra);
    rec_free(&rb);
}

Test(topo, a_second_process_with_the_same_id_waits_for_the_first_to_leave)
{
    rec r1, r2;
    rec_init(&r1, "n1 (first)");
    rec_init(&r2, "n1 (second)");
    dsq_topo *t1 = topo_new(&r1, "n1", "127.0.0.1:7001", 2);
    WAIT_UNTIL(count(&r1, DSQ_TOPO_REGISTERED, "n1") == 1, WAIT_MS, "the first registers:\n%s", rec_dump(&r1));
    dsq_topo *t2 = topo_new(&r2, "n1", "127.0.0.1:7002", 2);
    WAIT_UNTIL(count(&r2, DSQ_TOPO_REGISTER_CONFLICT, "n1") == 1, WAIT_MS, "the second is refused:\n%s",
               rec_dump(&r2));
    rec_ev c = last(&r2, DSQ_TOPO_REGISTER_CONFLICT, "n1");
    cr_assert(c.has_node, "the event has the holder's description");
    cr_assert_str_eq(c.node.peer, "127.0.0.1:7001");
    cr_assert(strstr(c.msg, "another") != NULL, "%s", c.msg);
    /* it keeps trying, every TTL / 3, without overwriting or saying it again */
    let_time_pass(1500);
    dsq_topo_node k;
    cr_assert(key_of("n1", &k, NULL));
    cr_assert_str_eq(k.peer, "127.0.0.1:7001", "the first's key stands");
    cr_assert_eq(count(&r2, DSQ_TOPO_REGISTERED, NULL), 0);
    cr_assert_eq(count(&r2, DSQ_TOPO_REGISTER_CONFLICT, NULL), 1, "said once:\n%s", rec_dump(&r2));
    /* both views have n1 as the first describes it */
    WAIT_VIEW_IS_TRUTH(&r2);
    cr_assert_eq(count(&r1, DSQ_TOPO_NODE_CHANGED, NULL), 0);

    /* the first leaves: the second registers at once (it watched the key go) */
    uint64_t t0 = wait_now_ms();
    dsq_topo_stop(t1);
    WAIT_UNTIL(count(&r2, DSQ_TOPO_REGISTERED, "n1") == 1, WAIT_MS, "the second registers:\n%s", rec_dump(&r2));
    uint64_t took = wait_now_ms() - t0;
    cr_assert_lt(took, 1500, "registered %llu ms after the first left", (unsigned long long)took);
    cr_assert(key_of("n1", &k, NULL));
    cr_assert_str_eq(k.peer, "127.0.0.1:7002");
    WAIT_VIEW_IS_TRUTH(&r2);
    dsq_topo_stop(t2);
    rec_check(&r1);
    rec_check(&r2);
    rec_free(&r1);
    rec_free(&r2);
}

Test(topo, load_changes_show_as_node_changed_at_most_once_per_ttl)
{
    rec ra, rb;
    dsq_topo *a, *b;
    start_pair(&ra, &rb, &a, &b, 2);

    dsq_topo_set_load(a, 3, 3000);
    WAIT_UNTIL(count(&rb, DSQ_TOPO_NODE_CHANGED, "a") == 1, WAIT_MS, "b sees a's load:\n%s", rec_dump(&rb));
    rec_ev ch = last(&rb, DSQ_TOPO_NODE_CHANGED, "a");
    cr_assert_eq(ch.node.dbs, 3);
    cr_assert_eq(ch.node.bytes, 3000);
    cr_assert_str_eq(ch.node.peer, "127.0.0.1:7001", "the rest as it was");
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_CHANGED, "a") == 1, WAIT_MS, "a sees its own");

    /* two changes in a row: one write, the last, a TTL after the first */
    dsq_topo_set_load(a, 4, 4000);
    dsq_topo_set_load(a, 5, 5000);
    WAIT_UNTIL(count(&rb, DSQ_TOPO_NODE_CHANGED, "a") == 2, WAIT_MS, "b sees a's next load:\n%s", rec_dump(&rb));
    rec_ev ch2 = last(&rb, DSQ_TOPO_NODE_CHANGED, "a");
    cr_assert_eq(ch2.node.dbs, 5, "the last load, not the one between");
    cr_assert_geq(ch2.at_ms - ch.at_ms, 2000 - 300, "writes %llu ms apart (TTL 2 s)",
                  (unsigned long long)(ch2.at_ms - ch.at_ms));
    dsq_topo_node k;
    cr_assert(key_of("a", &k, NULL));
    cr_assert_eq(k.dbs, 5);
    cr_assert_eq(k.bytes, 5000);
    /* the same load again: nothing to write */
    dsq_topo_set_load(a, 5, 5000);
    WAIT_VIEW_IS_TRUTH(&rb);
    cr_assert_eq(count(&rb, DSQ_TOPO_NODE_CHANGED, "b"), 0);
    cr_assert_eq(count(&rb, DSQ_TOPO_NODE_DOWN, NULL), 0);
    dsq_topo_stop(a);
    dsq_topo_stop(b);
    cr_assert_eq(count(&rb, DSQ_TOPO_NODE_CHANGED, "a"), 2);
    rec_check(&ra);
    rec_check(&rb);
    rec_free(&ra);
    rec_free(&rb);
}

Test(topo, keys_written_by_hand)
{
    /* before anyone starts: b's key under no lease (left by hand), keys
     * that are not valid nodes, and a node x written by hand */
    static const char *bvalue = "{\"id\":\"b\",\"peer\":\"old:1\",\"client\":\"\",\"forward\":\"\","
                                "\"load\":{\"dbs\":0,\"bytes\":0},\"started\":1}";
    static const char *xvalue = "{\"id\":\"x\",\"peer\":\"x:1\",\"client\":\"\",\"forward\":\"\","
                                "\"load\":{\"dbs\":0,\"bytes\":0},\"started\":1}";
    static const struct {
        const char *key, *value;
    } keys[] = {{"nodes/b", NULL}, {"nodes/junk", "not json"}, {"nodes/y", NULL}, {"nodes/x/1", NULL},
                {"nodes/x", NULL}};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = keys[i].value != NULL ? keys[i].value : i == 0 ? bvalue : xvalue; /* y's says x */
        cr_assert_eq(dsq_etcd_put(cli, keys[i].key, v, strlen(v), 0, NULL, err, sizeof err), 0, "%s", err);
    }
    rec ra, rb;
    rec_init(&ra, "a");
    rec_init(&rb, "b");
    dsq_topo *a = topo_new(&ra, "a", "127.0.0.1:7001", 2);
    dsq_topo *b = topo_new(&rb, "b", "127.0.0.1:7002", 2);
    /* b takes over its key (no lease: nobody else's); junk is no node */
    WAIT_UNTIL(count(&rb, DSQ_TOPO_REGISTERED, "b") == 1, WAIT_MS, "b registers:\n%s", rec_dump(&rb));
    cr_assert_eq(count(&rb, DSQ_TOPO_REGISTER_CONFLICT, NULL), 0);
    dsq_topo_node k;
    int64_t lease = 0;
    cr_assert(key_of("b", &k, &lease));
    cr_assert_str_eq(k.peer, "127.0.0.1:7002");
    cr_assert_neq(lease, 0);
    const char *abx[] = {"a", "b", "x"};
    wait_up(&ra, abx, 3);
    WAIT_VIEW_IS_TRUTH(&ra);
    cr_assert_not(in_view(&ra, "y"));
    cr_assert_not(in_view(&ra, "junk"));

    /* a's key deleted by hand: written again at once */
    uint64_t t0 = wait_now_ms();
    cr_assert_eq(dsq_etcd_delete(cli, "nodes/a", NULL, err, sizeof err), 0, "%s", err);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_REGISTERED, "a") == 2, WAIT_MS, "a writes its key again:\n%s", rec_dump(&ra));
    uint64_t took = wait_now_ms() - t0;
    cr_assert_lt(took, 600, "%llu ms: sooner than the next round (TTL / 3)", (unsigned long long)took);
    WAIT_UNTIL(count(&rb, DSQ_TOPO_NODE_UP, "a") == 2, WAIT_MS, "b sees a go and come back:\n%s", rec_dump(&rb));
    cr_assert_eq(count(&rb, DSQ_TOPO_NODE_DOWN, "a"), 1);

    /* x's key turns invalid: x leaves the view */
    cr_assert_eq(dsq_etcd_put(cli, "nodes/x", "{}", 2, 0, NULL, err, sizeof err), 0, "%s", err);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_DOWN, "x") == 1, WAIT_MS, "x is no node now:\n%s", rec_dump(&ra));
    WAIT_VIEW_IS_TRUTH(&ra);
    WAIT_VIEW_IS_TRUTH(&rb);
    dsq_topo_stop(a);
    dsq_topo_stop(b);
    rec_check(&ra);
    rec_check(&rb);
    rec_free(&ra);
    rec_free(&rb);
}

/* ---- etcd down and back ------------------------------------------------------------------------- */

Test(topo, etcd_stopped_and_started_again_is_down_then_up_and_the_view_recovers)
{
    rec ra, rb;
    dsq_topo *a, *b;
    start_pair(&ra, &rb, &a, &b, 2);

    test_etcd_kill(&etcd);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_ETCD_DOWN, NULL) == 1, WAIT_MS, "a sees etcd down:\n%s", rec_dump(&ra));
    WAIT_UNTIL(count(&rb, DSQ_TOPO_ETCD_DOWN, NULL) == 1, WAIT_MS, "b sees etcd down:\n%s", rec_dump(&rb));
    cr_assert(last(&ra, DSQ_TOPO_ETCD_DOWN, NULL).msg[0] != '\0', "it says why");
    let_time_pass(700); /* an outage of some retries (timed: the backoff) */
    cr_assert_eq(count(&ra, DSQ_TOPO_ETCD_DOWN, NULL), 1, "said once");

    test_etcd_restart(&etcd, NULL);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_ETCD_UP, NULL) == 1, WAIT_MS, "a sees etcd up:\n%s", rec_dump(&ra));
    WAIT_UNTIL(count(&rb, DSQ_TOPO_ETCD_UP, NULL) == 1, WAIT_MS, "b sees etcd up:\n%s", rec_dump(&rb));
    dsq_topo_node k;
    WAIT_UNTIL_STEP(wait_sleep_ms(20), key_of("a", &k, NULL) && key_of("b", &k, NULL), WAIT_MS,
                    "both keys are in etcd again");
    WAIT_VIEW_IS_TRUTH(&ra);
    WAIT_VIEW_IS_TRUTH(&rb);
    cr_assert_eq(count(&ra, DSQ_TOPO_ETCD_DOWN, NULL), 1);
    /* the watch runs again */
    dsq_topo_set_load(b, 9, 900);
    WAIT_UNTIL(in_view(&ra, "b") && count(&ra, DSQ_TOPO_NODE_CHANGED, "b") >= 1 &&
                   last(&ra, DSQ_TOPO_NODE_CHANGED, "b").node.dbs == 9,
               WAIT_MS, "a sees b's load after the outage:\n%s", rec_dump(&ra));
    WAIT_VIEW_IS_TRUTH(&ra);
    dsq_topo_stop(a);
    dsq_topo_stop(b);
    rec_check(&ra);
    rec_check(&rb);
    rec_free(&ra);
    rec_free(&rb);
}

Test(topo, a_compacted_watch_reads_again_and_reports_only_the_differences)
{
    rec ra, rb, rc, rd, re;
    rec_init(&ra, "a");
    rec_init(&rb, "b");
    rec_init(&rc, "c");
    rec_init(&rd, "d");
    rec_init(&re, "e");
    dsq_topo *a = topo_new(&ra, "a", "127.0.0.1:7001", 2);
    dsq_topo *b = topo_new(&rb, "b", "127.0.0.1:7002", 2);
    dsq_topo *c = topo_new(&rc, "c", "127.0.0.1:7003", 2);
    const char *abc[] = {"a", "b", "c"};
    wait_up(&ra, abc, 3);
    WAIT_VIEW_IS_TRUTH(&ra);

    cr_assert(dsq__topo_pause_watch(a, true));
    size_t from = rec_len(&ra);
    /* meanwhile: c leaves, b's load changes, d comes and goes, e comes */
    dsq_topo_stop(c);
    dsq_topo_set_load(b, 7, 700);
    dsq_topo *d = topo_new(&rd, "d", "127.0.0.1:7004", 2);
    WAIT_UNTIL(count(&rd, DSQ_TOPO_REGISTERED, "d") == 1, WAIT_MS, "d registers");
    dsq_topo_stop(d);
    dsq_topo *e = topo_new(&re, "e", "127.0.0.1:7005", 2);
    WAIT_UNTIL(count(&re, DSQ_TOPO_REGISTERED, "e") == 1, WAIT_MS, "e registers");
    dsq_topo_node k;
    WAIT_UNTIL_STEP(wait_sleep_ms(20), key_of("b", &k, NULL) && k.dbs == 7, WAIT_MS, "b's load is written");
    /* compact everything up to now: a's watch cannot resume where it was */
    int64_t rev = 0;
    cr_assert_eq(dsq_etcd_put(cli, "other", "x", 1, 0, &rev, err, sizeof err), 0, "%s", err);
    char body[64];
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", (long long)rev);
    test_etcd_post_ok(&etcd, "/v3/kv/compaction", body, NULL);
    cr_assert_eq(rec_len(&ra), from, "nothing while paused:\n%s", rec_dump(&ra));

    cr_assert(dsq__topo_pause_watch(a, false));
    WAIT_VIEW_IS_TRUTH(&ra);
    /* exactly the differences: no trace of d, one change of b */
    cr_assert_eq(count_from(&ra, from, DSQ_TOPO_NODE_DOWN, "c"), 1, "%s", rec_dump(&ra));
    cr_assert_eq(count_from(&ra, from, DSQ_TOPO_NODE_CHANGED, "b"), 1, "%s", rec_dump(&ra));
    cr_assert_eq(last(&ra, DSQ_TOPO_NODE_CHANGED, "b").node.dbs, 7);
    cr_assert_eq(count_from(&ra, from, DSQ_TOPO_NODE_UP, "e"), 1, "%s", rec_dump(&ra));
    cr_assert_eq(count_from(&ra, from, DSQ_TOPO_NODE_UP, "d") + count_from(&ra, from, DSQ_TOPO_NODE_DOWN, "d"), 0,
                 "d came and went while a did not watch:\n%s", rec_dump(&ra));
    cr_assert_eq(count_from(&ra, from, DSQ_TOPO_VIEW_READ, NULL), 1, "the read again:\n%s", rec_dump(&ra));
    cr_assert_eq(rec_len(&ra), from + 4, "three changes and the read's VIEW_READ, last:\n%s", rec_dump(&ra));
    rec_ev le;
    cr_assert(evlog_last(&ra.log, EVLOG_ANY, NULL, &le));
    cr_assert_eq(le.type, DSQ_TOPO_VIEW_READ);
    cr_assert_eq(last(&ra, DSQ_TOPO_NODE_UP, "e").revision, last(&ra, DSQ_TOPO_NODE_DOWN, "c").revision,
                 "all from the one read");
    /* and it watches again from that read */
    dsq_topo_set_load(e, 1, 1);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_CHANGED, "e") == 1, WAIT_MS, "a sees e change:\n%s", rec_dump(&ra));
    dsq_topo_stop(e);
    WAIT_UNTIL(count(&ra, DSQ_TOPO_NODE_DOWN, "e") == 1, WAIT_MS, "a sees e go");
    dsq_topo_stop(a);
    dsq_topo_stop(b);
    rec *all[] = {&ra, &rb, &rc, &rd, &re};
    for (size_t i = 0; i < 5; i++) {
        rec_check(all[i]);
        rec_free(all[i]);
    }
}

/* ---- without etcd --------------------------------------------------------------------------------- */

/* (the topo suite's timeout: with this test under another one beside
 * them, Criterion 2.4.1's runner leaked 48 bytes at its exit, which
 * LeakSanitizer reports, failing the binary) */
TestSuite(topo_alone, .timeout = 60);

Test(topo_alone, etcd_unreachable_is_down_once_and_stop_is_prompt)
{
    rec r;
    rec_init(&r, "a");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", test_free_port()); /* nobody listens */
    dsq_topo_cfg c = cfg_for(&r, "a", "127.0.0.1:7001", 2, url);
    dsq_topo *t = dsq_topo_start(&c, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    WAIT_UNTIL(count(&r, DSQ_TOPO_ETCD_DOWN, "a") == 1, WAIT_MS, "etcd is down:\n%s", rec_dump(&r));
    let_time_pass(1500); /* retries, backing off: said once */
    cr_assert_eq(count(&r, DSQ_TOPO_ETCD_DOWN, NULL), 1, "%s", rec_dump(&r));
    cr_assert_eq(rec_len(&r), 1, "%s", rec_dump(&r));
    uint64_t t0 = wait_now_ms();
    dsq_topo_stop(t);
    uint64_t took = wait_now_ms() - t0;
    cr_assert_lt(took, 1500, "dsq_topo_stop took %llu ms", (unsigned long long)took);
    rec_check(&r);
    rec_free(&r);
}

Test(topo_alone, bad_settings_are_refused)
{
    rec r;
    rec_init(&r, "x");
    struct {
        const char *id, *peer, *endpoints, *want;
    } bad[] = {
        {NULL, "127.0.0.1:7001", "http://127.0.0.1:1", "node id"},
        {"", "127.0.0.1:7001", "http://127.0.0.1:1", "node id"},
        {"a b", "127.0.0.1:7001", "http://127.0.0.1:1", "node id"},
        {"0123456789012345678901234567890123", "127.0.0.1:7001", "http://127.0.0.1:1", "node id"},
        {"a", NULL, "http://127.0.0.1:1", "peer"},
        {"a", "127.0.0.1:7001", "ftp://127.0.0.1:1", "endpoint"},
        {"a", "127.0.0.1:7001", NULL, "endpoints"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dsq_topo_cfg c = cfg_for(&r, bad[i].id, bad[i].peer, 2, bad[i].endpoints);
        err[0] = '\0';
        cr_assert_null(dsq_topo_start(&c, err, sizeof err), "case %zu", i);
        cr_assert(strstr(err, bad[i].want) != NULL, "case %zu: %s", i, err);
    }
    char longaddr[300];
    memset(longaddr, 'x', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    dsq_topo_cfg c = cfg_for(&r, "a", "127.0.0.1:7001", 2, "http://127.0.0.1:1");
    c.forward = longaddr;
    cr_assert_null(dsq_topo_start(&c, err, sizeof err));
    cr_assert(strstr(err, "forward address") != NULL, "%s", err);
    cr_assert_eq(rec_len(&r), 0);
    dsq_topo_stop(NULL);
    rec_free(&r);
}

/* ---- the description's JSON ----------------------------------------------------------------------- */

static dsq_topo_node sample(void)
{
    dsq_topo_node n = {.dbs = 12, .bytes = 4096000, .started_ms = 1796000000000ull};
    strcpy(n.id, "n-1.a_b");
    strcpy(n.peer, "10.0.0.5:7000");
    strcpy(n.client, "[::1]:8787");
    strcpy(n.forward, "");
    return n;
}

Test(topo_json, encode_then_decode)
{
    dsq_topo_node n = sample(), m;
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(b.data, "{\"id\":\"n-1.a_b\",\"peer\":\"10.0.0.5:7000\",\"client\":\"[::1]:8787\",\"forward\":\"\","
                             "\"load\":{\"dbs\":12,\"bytes\":4096000},\"started\":1796000000000,\"draining\":false}");
    cr_assert_eq(dsq_topo_node_decode(b.data, b.len, &m, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(m.id, "n-1.a_b");
    cr_assert_str_eq(m.peer, "10.0.0.5:7000");
    cr_assert_str_eq(m.client, "[::1]:8787");
    cr_assert_str_eq(m.forward, "");
    cr_assert_eq(m.dbs, 12);
    cr_assert_eq(m.bytes, 4096000);
    cr_assert_eq(m.started_ms, 1796000000000ull);
    cr_assert(!m.draining);
    dsq_buf_free(&b);

    /* draining: written, read back; missing (a node of an earlier build):
     * false; not a boolean: refused */
    n.draining = true;
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), 0, "%s", err);
    cr_assert(strstr(b.data, "\"draining\":true") != NULL, "%s", b.data);
    cr_assert_eq(dsq_topo_node_decode(b.data, b.len, &m, err, sizeof err), 0, "%s", err);
    cr_assert(m.draining);
    dsq_buf_free(&b);
    const char *old = "{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
                      "\"started\":0}";
    cr_assert_eq(dsq_topo_node_decode(old, strlen(old), &m, err, sizeof err), 0, "%s", err);
    cr_assert(!m.draining);
    const char *odd = "{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
                      "\"started\":0,\"draining\":1}";
    cr_assert_eq(dsq_topo_node_decode(odd, strlen(odd), &m, err, sizeof err), -1);
    cr_assert(strstr(err, "\"draining\"") != NULL, "%s", err);

    /* other fields are ignored; the largest numbers pass; escapes decode */
    const char *ok = "{\"started\":9223372036854775807,\"id\":\"x\",\"peer\":\"p\\u00e9\",\"client\":\"\","
                     "\"forward\":\"f\",\"load\":{\"dbs\":0,\"bytes\":9223372036854775807,\"cpu\":3},\"zone\":\"z\"}";
    cr_assert_eq(dsq_topo_node_decode(ok, strlen(ok), &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.bytes, 9223372036854775807ull);
    cr_assert_str_eq(m.peer, "p\xc3\xa9");
    cr_assert_str_eq(m.forward, "f");

    /* addresses of 255 bytes pass, 256 do not */
    char json[1024];
    char a255[256];
    memset(a255, 'a', 255);
    a255[255] = '\0';
    snprintf(json, sizeof json,
             "{\"id\":\"x\",\"peer\":\"%s\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
             "\"started\":0}",
             a255);
    cr_assert_eq(dsq_topo_node_decode(json, strlen(json), &m, err, sizeof err), 0, "%s", err);
    snprintf(json, sizeof json,
             "{\"id\":\"x\",\"peer\":\"%sa\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
             "\"started\":0}",
             a255);
    cr_assert_eq(dsq_topo_node_decode(json, strlen(json), &m, err, sizeof err), -1);
    cr_assert(strstr(err, "\"peer\"") != NULL, "%s", err);
    cr_assert_str_eq(m.id, "", "zeroed on failure");
}

Test(topo_json, bad_descriptions_are_refused)
{
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"", "not JSON"},
        {"{\"id\":", "not JSON"},
        {"[1,2]", "not a JSON object"},
        {"\"n1\"", "not"},
        {"{\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}", "\"id\""},
        {"{\"id\":\"x\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}", "\"peer\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}", "\"client\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}", "\"forward\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"started\":0}", "\"load\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"bytes\":0},\"started\":0}", "\"dbs\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0},\"started\":0}", "\"bytes\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0}}", "\"started\""},
        {"{\"id\":1,\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "not a string"},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":null,\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "not a string"},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":[0,0],\"started\":0}", "not an object"},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":\"1\",\"bytes\":0},\"started\":0}",
         "\"dbs\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":-1,\"bytes\":0},\"started\":0}",
         "\"dbs\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":1.5,\"bytes\":0},\"started\":0}",
         "\"dbs\""},
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
         "\"started\":18446744073709551615}",
         "not JSON"}, /* past int64: jansson refuses it */
        {"{\"id\":\"a b\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "node id"},
        {"{\"id\":\"\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "node id"},
        {"{\"id\":\"0123456789012345678901234567890123\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\","
         "\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "\"id\""},
        {"{\"id\":\"x\",\"peer\":\"\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0}",
         "no peer"},
        {"{\"id\":\"x\",\"peer\":\"p\\u0000q\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
         "\"started\":0}",
         "NUL"},
        {"{\"id\":\"x\",\"id\":\"y\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},"
         "\"started\":0}",
         "not JSON"}, /* a duplicate key */
        {"{\"id\":\"x\",\"peer\":\"p\",\"client\":\"\",\"forward\":\"\",\"load\":{\"dbs\":0,\"bytes\":0},\"started\":0} x",
         "not JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dsq_topo_node m;
        err[0] = '\0';
        cr_assert_eq(dsq_topo_node_decode(bad[i].json, strlen(bad[i].json), &m, err, sizeof err), -1, "case %zu: %s",
                     i, bad[i].json);
        cr_assert(strstr(err, bad[i].want) != NULL, "case %zu: '%s' does not say '%s'", i, err, bad[i].want);
    }
}

Test(topo_json, encode_refuses_what_decode_would)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_topo_node n = sample();
    strcpy(n.id, "a/b");
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), -1);
    cr_assert(strstr(err, "node id") != NULL, "%s", err);
    n = sample();
    n.peer[0] = '\0';
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), -1);
    n = sample();
    memset(n.client, 'c', sizeof n.client); /* no NUL: too long */
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), -1);
    cr_assert(strstr(err, "256 bytes") != NULL, "%s", err);
    n = sample();
    n.bytes = (uint64_t)INT64_MAX + 1;
    cr_assert_eq(dsq_topo_node_encode(&n, &b, err, sizeof err), -1);
    cr_assert_eq(b.len, 0, "nothing appended");
    dsq_buf_free(&b);
}
