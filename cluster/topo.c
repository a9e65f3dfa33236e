/* topo — this node's key in etcd and the view of every node's (topo.h
 * says what it does).
 *
 * Two threads, each with its etcd handle: the registration thread (lease,
 * key, renewals, load) and the watch thread (the view). They share the
 * flags under `mu` (stop, pauses, the recheck the watch asks of the
 * registration, the load) with one condition variable for every wait, and
 * etcd's health and the calls of on_event under `ev_mu`. Nothing holds
 * `mu` while it takes `ev_mu` or calls on_event, so on_event may call
 * dsq_topo_set_load.
 *
 * Divisions: the description's JSON; the object and its shared state;
 * the registration thread; the view and the watch thread; start and
 * stop. */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/topo.h"
#include "common/check.h"
#include "common/log.h"
#include "common/util.h"

#define BACKOFF_MIN_MS 100       /* the first retry after a failed request */
#define BACKOFF_MAX_MS 1000      /* doubling up to this */
#define WATCH_SHORT_MS 1000      /* a watch that broke sooner waits the backoff first */
#define TIMEOUT_MIN_MS 500       /* the default request timeout's floor */
#define PAUSE_WAIT_MS 10000      /* the test hooks' wait for a thread to pause */
#define MSG_MAX 320
#define NUM_MAX ((uint64_t)INT64_MAX) /* JSON integers are int64 */

/* ---- the description's JSON -------------------------------------------------------------------- */

/* The rules both ways share: the fields' contents. */
static int node_check(const dsq_topo_node *n, char *err, size_t errlen)
{
    size_t idlen = strnlen(n->id, sizeof n->id);
    if (!dsq_node_id_valid(n->id, idlen))
        return dsq_errf(err, errlen, "topo: node id '%.40s' is not 1 to %d of letters, digits, '-', '_', '.'", n->id,
                    DSQ_NODE_ID_MAX - 1);
    if (n->peer[0] == '\0')
        return dsq_errf(err, errlen, "topo: node %s has no peer address", n->id);
    const char *s[] = {n->peer, n->client, n->forward};
    for (size_t i = 0; i < 3; i++)
        if (strnlen(s[i], DSQ_TOPO_ADDR_MAX) >= DSQ_TOPO_ADDR_MAX)
            return dsq_errf(err, errlen, "topo: node %s: an address of %d bytes or more", n->id, DSQ_TOPO_ADDR_MAX);
    if (n->dbs > NUM_MAX || n->bytes > NUM_MAX || n->started_ms > NUM_MAX)
        return dsq_errf(err, errlen, "topo: node %s: a number past 2^63 - 1", n->id);
    return 0;
}

int dsq_topo_node_encode(const dsq_topo_node *n, dsq_buf *out, char *err, size_t errlen)
{
    if (node_check(n, err, errlen) != 0)
        return -1;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:I, s:I}, s:I, s:b}", "id", n->id, "peer", n->peer, "client",
                          n->client, "forward", n->forward, "load", "dbs", (json_int_t)n->dbs, "bytes",
                          (json_int_t)n->bytes, "started", (json_int_t)n->started_ms, "draining", n->draining);
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    int rc = s != NULL && dsq_buf_puts(out, s) == 0 ? 0 : dsq_errf(err, errlen, "topo: out of memory");
    free(s);
    return rc;
}

/* A string field into dst[cap]. 0 or -1 with a message. */
static int get_str(const json_t *o, const char *name, char *dst, size_t cap, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, name);
    if (v == NULL)
        return dsq_errf(err, errlen, "topo: a node description has no \"%s\"", name);
    if (!json_is_string(v))
        return dsq_errf(err, errlen, "topo: a node description's \"%s\" is not a string", name);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= cap)
        return dsq_errf(err, errlen, "topo: a node description's \"%s\" has %zu bytes (at most %zu)", name, n, cap - 1);
    if (strlen(s) != n)
        return dsq_errf(err, errlen, "topo: a node description's \"%s\" holds a NUL", name);
    memcpy(dst, s, n + 1);
    return 0;
}

/* An integer field from 0 to 2^63 - 1. 0 or -1 with a message. */
static int get_num(const json_t *o, const char *name, uint64_t *dst, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, name);
    if (v == NULL)
        return dsq_errf(err, errlen, "topo: a node description has no \"%s\"", name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return dsq_errf(err, errlen, "topo: a node description's \"%s\" is not an integer from 0", name);
    *dst = (uint64_t)json_integer_value(v);
    return 0;
}

int dsq_topo_node_decode(const void *p, size_t len, dsq_topo_node *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *j = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    if (j == NULL) {
        dsq_errf(err, errlen, "topo: a node description is not JSON: %s", je.text);
        goto out;
    }
    if (!json_is_object(j)) {
        dsq_errf(err, errlen, "topo: a node description is not a JSON object");
        goto out;
    }
    json_t *load = json_object_get(j, "load");
    if (get_str(j, "id", out->id, sizeof out->id, err, errlen) != 0 ||
        get_str(j, "peer", out->peer, sizeof out->peer, err, errlen) != 0 ||
        get_str(j, "client", out->client, sizeof out->client, err, errlen) != 0 ||
        get_str(j, "forward", out->forward, sizeof out->forward, err, errlen) != 0 ||
        get_num(j, "started", &out->started_ms, err, errlen) != 0)
        goto out;
    if (!json_is_object(load)) {
        dsq_errf(err, errlen, "topo: a node description's \"load\" is %s", load == NULL ? "missing" : "not an object");
        goto out;
    }
    if (get_num(load, "dbs", &out->dbs, err, errlen) != 0 || get_num(load, "bytes", &out->bytes, err, errlen) != 0)
        goto out;
    json_t *dr = json_object_get(j, "draining"); /* (optional: false when missing) */
    if (dr != NULL && !json_is_boolean(dr)) {
        dsq_errf(err, errlen, "topo: a node description's \"draining\" is not true or false");
        goto out;
    }
    out->draining = dr != NULL && json_is_true(dr);
    rc = node_check(out, err, errlen);
out:
    json_decref(j);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

static bool node_eq(const dsq_topo_node *a, const dsq_topo_node *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->peer, b->peer) == 0 && strcmp(a->client, b->client) == 0 &&
           strcmp(a->forward, b->forward) == 0 && a->dbs == b->dbs && a->bytes == b->bytes &&
           a->started_ms == b->started_ms && a->draining == b->draining;
}

/* ---- the object and its shared state ----------------------------------------------------------- */

struct dsq_topo {
    dsq_topo_node self;            /* this node's description; its load under mu */
    char key[sizeof DSQ_TOPO_KEYS + DSQ_NODE_ID_MAX];
    unsigned ttl;                  /* seconds */
    uint64_t period_ms;            /* between renewals: ttl / 3 */
    dsq_topo_event_fn on_event;
    void *ud;
    dsq_etcd *reg_e, *watch_e;     /* each thread's handle */
    pthread_t reg_thread, watch_thread;
    bool reg_started, watch_started;

    pthread_mutex_t mu;            /* what follows, to the next mutex */
    pthread_cond_t cv;             /* any of it changed */
    atomic_bool stopping;          /* set once, under mu (read without it too) */
    atomic_bool wcancel;           /* the watch's cancel flag: stopping, or the watch paused */
    bool recheck;                  /* the watch saw this node's key go: write it again now */
    bool pause_reg, reg_paused;    /* the test hooks: asked, and the thread is paused */
    bool pause_watch, watch_paused;
    uint64_t dbs, bytes;           /* the load to write */
    bool draining;                 /* to write (dsq_topo_set_draining) */
    bool write_now;                /* it changed: a round now */

    pthread_mutex_t ev_mu;         /* what follows, and the calls of on_event */
    bool ev_closed;                /* dsq_topo_stop began: no more events */
    bool down;                     /* ETCD_DOWN said, ETCD_UP not yet */
    uint64_t last_ok_ms;           /* when the last request that succeeded was sent */

    /* the watch thread's alone */
    dsq_topo_node *view;           /* the nodes it reported up, in no order */
    size_t nview, capview;
    int64_t rev;                   /* the last revision it saw */
};

/* Call on_event, unless stopping began. Caller holds ev_mu. */
static void emit_locked(dsq_topo *t, dsq_topo_event_type type, const char *id, const dsq_topo_node *node,
                        int64_t rev, const char *msg)
{
    DSQ_ASSERT_HELD(&t->ev_mu);
    if (t->ev_closed || t->on_event == NULL)
        return;
    dsq_topo_event ev = {.type = type, .id = id, .node = node, .revision = rev, .msg = msg != NULL ? msg : ""};
    t->on_event(t->ud, &ev);
}

static void emit(dsq_topo *t, dsq_topo_event_type type, const char *id, const dsq_topo_node *node, int64_t rev,
                 const char *msg)
{
    pthread_mutex_lock(&t->ev_mu);
    emit_locked(t, type, id, node, rev, msg);
    pthread_mutex_unlock(&t->ev_mu);
}

/* A request sent at sent_ms succeeded: etcd is up. */
static void etcd_ok(dsq_topo *t, uint64_t sent_ms)
{
    pthread_mutex_lock(&t->ev_mu);
    if (sent_ms > t->last_ok_ms)
        t->last_ok_ms = sent_ms;
    if (t->down) {
        t->down = false;
        DSQ_INFO("topo_etcd_up", "node=%s", t->self.id);
        emit_locked(t, DSQ_TOPO_ETCD_UP, t->self.id, NULL, 0, "etcd answers again");
    }
    pthread_mutex_unlock(&t->ev_mu);
}

/* A request sent at sent_ms failed with msg: etcd is down, unless one
 * sent since then succeeded. */
static void etcd_failed(dsq_topo *t, uint64_t sent_ms, const char *msg)
{
    pthread_mutex_lock(&t->ev_mu);
    if (!t->down && sent_ms >= t->last_ok_ms && !atomic_load(&t->stopping)) {
        t->down = true;
        DSQ_WARN("topo_etcd_down", "node=%s reason=%s", t->self.id, dsq_log_q(msg));
        emit_locked(t, DSQ_TOPO_ETCD_DOWN, t->self.id, NULL, 0, msg);
    }
    pthread_mutex_unlock(&t->ev_mu);
}

/* Wait on cv until `until` (monotonic ms) or stopping. Caller holds mu. */
static void wait_until_locked(dsq_topo *t, uint64_t until)
{
    DSQ_ASSERT_HELD(&t->mu);
    uint64_t now = dsq_now_ms();
    if (now >= until || atomic_load(&t->stopping))
        return;
    /* cv counts on the monotonic clock (see dsq_topo_start): a step of the
     * wall clock does not hold up the lease's renewals */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = until - now;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
}

/* Sleep ms, or less when stopping. */
static void nap(dsq_topo *t, uint64_t ms)
{
    uint64_t until = dsq_now_ms() + ms;
    pthread_mutex_lock(&t->mu);
    while (!atomic_load(&t->stopping) && dsq_now_ms() < until)
        wait_until_locked(t, until);
    pthread_mutex_unlock(&t->mu);
}

static unsigned backoff_next(unsigned ms) { return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2; }

/* ---- the registration thread ------------------------------------------------------------------- */

/* The registration thread's state. */
typedef struct reg {
    int64_t lease;                 /* 0: none yet (or lost) */
    bool registered;               /* the key is ours, at mod_rev */
    int64_t mod_rev;
    bool conflict;                 /* REGISTER_CONFLICT said for the present episode */
    uint64_t dbs, bytes;           /* the load last written */
    bool draining;                 /* as last written */
    uint64_t written_ms;           /* when */
    char err[MSG_MAX];
} reg;

/* Outcomes of a step. */
enum { STEP_OK = 0, STEP_FAIL = -1, STEP_LOST = -2 };

static void lease_lost(dsq_topo *t, reg *r)
{
    DSQ_WARN("topo_lease_lost", "node=%s lease=%lld reason=%s", t->self.id, (long long)r->lease, dsq_log_q(r->err));
    emit(t, DSQ_TOPO_LEASE_LOST, t->self.id, NULL, 0, r->err);
    r->lease = 0;
    r->registered = false;
}

/* Write the key if it is missing or ours (see topo.h). STEP_OK (written,
 * or a conflict said), STEP_FAIL, STEP_LOST (the lease is gone). */
static int reg_write(dsq_topo *t, reg *r, uint64_t sent_ms)
{
    dsq_topo_node me = t->self;
    pthread_mutex_lock(&t->mu);
    me.dbs = t->dbs;
    me.bytes = t->bytes;
    me.draining = t->draining;
    pthread_mutex_unlock(&t->mu);
    dsq_buf v = DSQ_BUF_INIT;
    if (dsq_topo_node_encode(&me, &v, r->err, sizeof r->err) != 0) {
        dsq_buf_free(&v);
        return STEP_FAIL;
    }
    int64_t expect = r->registered ? r->mod_rev : 0;
    int rc = STEP_FAIL;
    for (int tries = 0; tries < 4 && !atomic_load(&t->stopping); tries++) {
        dsq_etcd_kv cur;
        int64_t rev = 0;
        int e = dsq_etcd_cas(t->reg_e, t->key, expect, v.data, v.len, r->lease, &cur, &rev, r->err, sizeof r->err);
        if (e == 0) {
            etcd_ok(t, sent_ms);
            bool was = r->registered;
            r->registered = true;
            r->conflict = false;
            r->mod_rev = rev;
            r->dbs = me.dbs;
            r->bytes = me.bytes;
            r->draining = me.draining;
            r->written_ms = dsq_now_ms();
            if (!was) {
                DSQ_INFO("topo_registered", "node=%s lease=%lld revision=%lld", me.id, (long long)r->lease,
                         (long long)rev);
                emit(t, DSQ_TOPO_REGISTERED, me.id, &me, rev, "registered");
            }
            rc = STEP_OK;
            break;
        }
        if (e == DSQ_ETCD_ELEASE) {
            rc = STEP_LOST;
            break;
        }
        if (e != DSQ_ETCD_ECONFLICT) {
            rc = STEP_FAIL;
            break;
        }
        etcd_ok(t, sent_ms);
        /* the key is not where we thought: missing, ours, a key under no
         * lease (take it), or another lease's (a second process with our
         * id: wait for it to go) */
        if (cur.mod_revision == 0 || cur.lease == r->lease || cur.lease == 0) {
            expect = cur.mod_revision;
            r->registered = false;
            dsq_etcd_kv_clear(&cur);
            continue;
        }
        r->registered = false;
        if (!r->conflict) {
            r->conflict = true;
            dsq_topo_node other;
            char why[MSG_MAX];
            bool readable = dsq_topo_node_decode(cur.value, cur.value_len, &other, why, sizeof why) == 0;
            snprintf(r->err, sizeof r->err,
                     "node id %s is registered under another lease (%lld%s%.100s): another process claims it; "
                     "trying again until its lease is gone",
                     me.id, (long long)cur.lease, readable ? ", peer " : "", readable ? other.peer : "");
            DSQ_WARN("topo_register_conflict", "node=%s lease=%lld other_lease=%lld other_peer=%s", me.id,
                     (long long)r->lease, (long long)cur.lease, readable ? dsq_log_q(other.peer) : "-");
            emit(t, DSQ_TOPO_REGISTER_CONFLICT, me.id, readable ? &other : NULL, 0, r->err);
        }
        dsq_etcd_kv_clear(&cur);
        rc = STEP_OK;
        break;
    }
    dsq_buf_free(&v);
    return rc;
}

/* One round: a lease (granted or renewed), then the key (written when
 * not ours yet, or again when the load changed and a TTL passed since
 * the last write). STEP_OK or STEP_FAIL (r->err says why). */
static int reg_round(dsq_topo *t, reg *r, bool recheck)
{
    for (int pass = 0; pass < 2 && !atomic_load(&t->stopping); pass++) {
        uint64_t sent = dsq_now_ms();
        if (r->lease == 0) {
            int64_t id = 0;
            if (dsq_etcd_lease_grant(t->reg_e, t->ttl, &id, NULL, r->err, sizeof r->err) != 0)
                return STEP_FAIL;
            etcd_ok(t, sent);
            r->lease = id;
            r->registered = false;
        } else {
            int e = dsq_etcd_lease_keepalive(t->reg_e, r->lease, NULL, r->err, sizeof r->err);
            if (e == DSQ_ETCD_ELEASE) {
                etcd_ok(t, sent);
                lease_lost(t, r);
                continue;
            }
            if (e != 0)
                return STEP_FAIL;
            etcd_ok(t, sent);
        }
        if (atomic_load(&t->stopping))
            return STEP_OK;
        bool write = !r->registered || recheck;
        if (!write) {
            pthread_mutex_lock(&t->mu);
            write = ((t->dbs != r->dbs || t->bytes != r->bytes) &&
                     dsq_now_ms() - r->written_ms >= (uint64_t)t->ttl * 1000) ||
                    t->draining != r->draining; /* (at once) */
            pthread_mutex_unlock(&t->mu);
        }
        if (!write)
            return STEP_OK;
        if (recheck)
            r->registered = false; /* (the key was seen deleted: write it as new) */
        sent = dsq_now_ms();
        int rc = reg_write(t, r, sent);
        if (rc != STEP_LOST)
            return rc;
        lease_lost(t, r);
    }
    return STEP_OK;
}

static void *reg_main(void *arg)
{
    dsq_topo *t = arg;
    dsq_thread_name("dsq-topo-reg");
    reg r = {0};
    unsigned backoff = BACKOFF_MIN_MS;
    uint64_t next = 0;               /* when the next round is due (0: now) */
    bool pending = false;            /* a recheck whose round failed: part of the next */
    for (;;) {
        pthread_mutex_lock(&t->mu);
        for (;;) {
            if (atomic_load(&t->stopping))
                break;
            if (t->pause_reg) {
                if (!t->reg_paused) {
                    t->reg_paused = true;
                    pthread_cond_broadcast(&t->cv);
                }
                pthread_cond_wait(&t->cv, &t->mu);
                continue;
            }
            t->reg_paused = false;
            if (t->recheck || t->write_now || dsq_now_ms() >= next)
                break;
            wait_until_locked(t, next);
        }
        bool recheck = t->recheck || pending;
        t->recheck = t->write_now = false;
        pthread_mutex_unlock(&t->mu);
        if (atomic_load(&t->stopping))
            break;
        uint64_t sent = dsq_now_ms();
        if (reg_round(t, &r, recheck) == STEP_OK) {
            pending = false;
            backoff = BACKOFF_MIN_MS;
            next = dsq_now_ms() + t->period_ms;
        } else {
            pending = recheck; /* (after the backoff, not at once) */
            DSQ_DEBUG("topo_request_failed", "node=%s thread=registration retry_ms=%u reason=%s", t->self.id,
                      backoff, dsq_log_q(r.err));
            etcd_failed(t, sent, r.err);
            next = dsq_now_ms() + backoff;
            backoff = backoff_next(backoff);
        }
    }
    /* leave at once: the others see the key go now, not after the TTL */
    if (r.lease != 0) {
        int e = dsq_etcd_lease_revoke(t->reg_e, r.lease, r.err, sizeof r.err);
        if (e != 0 && e != DSQ_ETCD_ELEASE)
            DSQ_WARN("topo_revoke_failed", "node=%s lease=%lld reason=%s", t->self.id, (long long)r.lease,
                     dsq_log_q(r.err));
    }
    return NULL;
}

/* ---- the view and the watch thread ------------------------------------------------------------- */

static dsq_topo_node *view_find(dsq_topo *t, const char *id)
{
    for (size_t i = 0; i < t->nview; i++)
        if (strcmp(t->view[i].id, id) == 0)
            return &t->view[i];
    return NULL;
}

/* The id a key names ("nodes/<id>"), into id[DSQ_NODE_ID_MAX]: true, or
 * false when it names none. */
static bool key_id(const dsq_etcd_kv *kv, char *id)
{
    size_t plen = sizeof DSQ_TOPO_KEYS - 1;
    if (kv->key_len <= plen || memcmp(kv->key, DSQ_TOPO_KEYS, plen) != 0 ||
        !dsq_node_id_valid(kv->key + plen, kv->key_len - plen))
        return false;
    memcpy(id, kv->key + plen, kv->key_len - plen + 1);
    return true;
}

/* A key's node: true with *out, or false (logged) when it is not a valid
 * description of the id the key names. */
static bool kv_node(dsq_topo *t, const dsq_etcd_kv *kv, dsq_topo_node *out)
{
    char id[DSQ_NODE_ID_MAX], why[MSG_MAX];
    if (!key_id(kv, id)) {
        DSQ_WARN("topo_bad_node", "node=%s key=%s reason=%s", t->self.id, dsq_log_q(kv->key),
                 dsq_log_q("the key does not name a node id"));
        return false;
    }
    if (dsq_topo_node_decode(kv->value, kv->value_len, out, why, sizeof why) != 0) {
        DSQ_WARN("topo_bad_node", "node=%s key=%s reason=%s", t->self.id, dsq_log_q(kv->key), dsq_log_q(why));
        return false;
    }
    if (strcmp(out->id, id) != 0) {
        DSQ_WARN("topo_bad_node", "node=%s key=%s reason=%s", t->self.id, dsq_log_q(kv->key),
                 dsq_log_q("the description's id is not the key's"));
        return false;
    }
    return true;
}

/* n is in etcd at rev: NODE_UP or NODE_CHANGED (or nothing). */
static void view_set(dsq_topo *t, const dsq_topo_node *n, int64_t rev)
{
    dsq_topo_node *v = view_find(t, n->id);
    if (v != NULL) {
        if (node_eq(v, n))
            return;
        *v = *n;
        DSQ_DEBUG("topo_node_changed", "node=%s id=%s peer=%s dbs=%llu bytes=%llu", t->self.id, n->id,
                  dsq_log_q(n->peer), (unsigned long long)n->dbs, (unsigned long long)n->bytes);
        emit(t, DSQ_TOPO_NODE_CHANGED, v->id, v, rev, "changed");
        return;
    }
    if (t->nview == t->capview) {
        size_t cap = t->capview > 0 ? t->capview * 2 : 8;
        dsq_topo_node *nv = realloc(t->view, cap * sizeof *nv);
        if (nv == NULL) {
            /* not in the view: the next read (after the next broken watch)
             * tries again; the log says why the node is missing */
            DSQ_ERROR("topo_out_of_memory", "node=%s id=%s", t->self.id, n->id);
            return;
        }
        t->view = nv;
        t->capview = cap;
    }
    v = &t->view[t->nview++];
    *v = *n;
    DSQ_INFO("topo_node_up", "node=%s id=%s peer=%s", t->self.id, n->id, dsq_log_q(n->peer));
    emit(t, DSQ_TOPO_NODE_UP, v->id, v, rev, "up");
}

/* The node id is not in etcd (any more) at rev: NODE_DOWN if it was. */
static void view_del(dsq_topo *t, const char *id, int64_t rev)
{
    dsq_topo_node *v = view_find(t, id);
    if (v == NULL)
        return;
    dsq_topo_node gone = *v;
    *v = t->view[--t->nview];
    DSQ_INFO("topo_node_down", "node=%s id=%s", t->self.id, gone.id);
    emit(t, DSQ_TOPO_NODE_DOWN, gone.id, &gone, rev, "down");
    if (strcmp(gone.id, t->self.id) == 0) { /* this node's key: have it written again if missing */
        pthread_mutex_lock(&t->mu);
        t->recheck = true;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
}

/* The keys as a read found them at rev: report the differences. */
static void view_sync(dsq_topo *t, const dsq_etcd_kv *kvs, size_t n, int64_t rev)
{
    dsq_topo_node *fresh = n > 0 ? calloc(n, sizeof *fresh) : NULL;
    size_t m = 0;
    if (n > 0 && fresh == NULL) {
        DSQ_ERROR("topo_out_of_memory", "node=%s", t->self.id);
        return; /* the view stays as it was */
    }
    for (size_t i = 0; i < n; i++)
        if (kv_node(t, &kvs[i], &fresh[m]))
            m++;
    /* gone first, then new and changed in key order */
    for (size_t i = 0; i < t->nview;) {
        bool there = false;
        for (size_t k = 0; k < m && !there; k++)
            there = strcmp(fresh[k].id, t->view[i].id) == 0;
        if (there) {
            i++;
            continue;
        }
        char id[DSQ_NODE_ID_MAX];
        memcpy(id, t->view[i].id, sizeof id);
        view_del(t, id, rev); /* (moves the last one to i) */
    }
    for (size_t k = 0; k < m; k++)
        view_set(t, &fresh[k], rev);
    free(fresh);
}

/* A change the watch saw. */
static int on_change(void *arg, int type, const dsq_etcd_kv *kv)
{
    dsq_topo *t = arg;
    if (kv->mod_revision > t->rev)
        t->rev = kv->mod_revision;
    char id[DSQ_NODE_ID_MAX];
    if (type == DSQ_ETCD_DELETE) {
        if (key_id(kv, id))
            view_del(t, id, kv->mod_revision);
    } else {
        dsq_topo_node n;
        if (kv_node(t, kv, &n))
            view_set(t, &n, kv->mod_revision);
        else if (key_id(kv, id))
            view_del(t, id, kv->mod_revision);
    }
    return atomic_load(&t->stopping) ? 1 : 0;
}

/* Wait while the watch is paused (the test hook); false when stopping. */
static bool watch_gate(dsq_topo *t)
{
    pthread_mutex_lock(&t->mu);
    while (!atomic_load(&t->stopping) && t->pause_watch) {
        if (!t->watch_paused) {
            t->watch_paused = true;
            pthread_cond_broadcast(&t->cv);
        }
        pthread_cond_wait(&t->cv, &t->mu);
    }
    t->watch_paused = false;
    if (!atomic_load(&t->stopping))
        atomic_store(&t->wcancel, false);
    bool go = !atomic_load(&t->stopping);
    pthread_mutex_unlock(&t->mu);
    return go;
}

static void *watch_main(void *arg)
{
    dsq_topo *t = arg;
    dsq_thread_name("dsq-topo-watch");
    char err[MSG_MAX];
    unsigned backoff = BACKOFF_MIN_MS;
    bool need_read = true;
    while (watch_gate(t)) {
        if (need_read) {
            dsq_etcd_kv *kvs;
            size_t n;
            int64_t rev = 0;
            uint64_t sent = dsq_now_ms();
            if (dsq_etcd_range(t->watch_e, DSQ_TOPO_KEYS, &kvs, &n, &rev, err, sizeof err) != 0) {
                DSQ_DEBUG("topo_request_failed", "node=%s thread=watch retry_ms=%u reason=%s", t->self.id, backoff,
                          dsq_log_q(err));
                etcd_failed(t, sent, err);
                nap(t, backoff);
                backoff = backoff_next(backoff);
                continue;
            }
            etcd_ok(t, sent);
            view_sync(t, kvs, n, rev);
            emit(t, DSQ_TOPO_VIEW_READ, t->self.id, NULL, rev, "read");
            dsq_etcd_kvs_free(kvs, n);
            t->rev = rev;
            need_read = false;
        }
        uint64_t began = dsq_now_ms();
        int64_t compact = 0;
        int rc = dsq_etcd_watch(t->watch_e, DSQ_TOPO_KEYS, t->rev + 1, &t->wcancel, on_change, t, &compact, err,
                                sizeof err);
        if (rc == 0)
            continue; /* stopping, or paused */
        need_read = true;
        if (rc == DSQ_ETCD_ECOMPACTED) {
            DSQ_INFO("topo_watch_compacted", "node=%s from=%lld kept=%lld", t->self.id, (long long)t->rev + 1,
                     (long long)compact);
            continue;
        }
        DSQ_DEBUG("topo_watch_broke", "node=%s reason=%s", t->self.id, dsq_log_q(err));
        if (dsq_now_ms() - began < WATCH_SHORT_MS) {
            nap(t, backoff);
            backoff = backoff_next(backoff);
        } else {
            backoff = BACKOFF_MIN_MS;
        }
    }
    return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------------- */

static void topo_free(dsq_topo *t)
{
    dsq_etcd_free(t->reg_e);
    dsq_etcd_free(t->watch_e);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->ev_mu);
    free(t->view);
    free(t);
}

static int copy_field(char *dst, size_t cap, const char *s, const char *what, char *err, size_t errlen)
{
    if (s == NULL)
        s = "";
    if (strlen(s) >= cap)
        return dsq_errf(err, errlen, "topo: the %s '%.60s...' has %zu bytes or more", what, s, cap);
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

dsq_topo *dsq_topo_start(const dsq_topo_cfg *cfg, char *err, size_t errlen)
{
    dsq_buf probe = DSQ_BUF_INIT; /* the description must encode */
    dsq_topo *t = calloc(1, sizeof *t);
    if (t == NULL) {
        dsq_errf(err, errlen, "topo: out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->ev_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&t->stopping, false);
    atomic_init(&t->wcancel, false);
    if (copy_field(t->self.id, sizeof t->self.id, cfg->id, "node id", err, errlen) != 0 ||
        copy_field(t->self.peer, sizeof t->self.peer, cfg->peer, "peer address", err, errlen) != 0 ||
        copy_field(t->self.client, sizeof t->self.client, cfg->client, "client address", err, errlen) != 0 ||
        copy_field(t->self.forward, sizeof t->self.forward, cfg->forward, "forward address", err, errlen) != 0)
        goto fail;
    t->self.dbs = t->dbs = cfg->dbs;
    t->self.bytes = t->bytes = cfg->bytes;
    t->self.started_ms = dsq_wall_ms();
    int bad = dsq_topo_node_encode(&t->self, &probe, err, errlen);
    dsq_buf_free(&probe);
    if (bad != 0)
        goto fail;
    snprintf(t->key, sizeof t->key, "%s%s", DSQ_TOPO_KEYS, t->self.id);
    t->ttl = cfg->node_ttl > 0 ? cfg->node_ttl : DSQ_TOPO_TTL_DEFAULT;
    t->period_ms = (uint64_t)t->ttl * 1000 / 3;
    t->on_event = cfg->on_event;
    t->ud = cfg->ud;
    dsq_etcd_cfg ec = cfg->etcd;
    if (ec.timeout_ms == 0)
        ec.timeout_ms = t->period_ms > TIMEOUT_MIN_MS ? (unsigned)t->period_ms : TIMEOUT_MIN_MS;
    if ((t->reg_e = dsq_etcd_new(&ec, err, errlen)) == NULL || (t->watch_e = dsq_etcd_new(&ec, err, errlen)) == NULL)
        goto fail;
    /* (before the threads: the handles are theirs from then on) */
    DSQ_INFO("topo_started", "node=%s etcd=%s ttl=%u", t->self.id, dsq_etcd_endpoint(t->reg_e), t->ttl);
    if (pthread_create(&t->reg_thread, NULL, reg_main, t) != 0) {
        dsq_errf(err, errlen, "topo: cannot start a thread");
        goto fail;
    }
    t->reg_started = true;
    if (pthread_create(&t->watch_thread, NULL, watch_main, t) != 0) {
        dsq_errf(err, errlen, "topo: cannot start a thread");
        dsq_topo_stop(t);
        return NULL;
    }
    t->watch_started = true;
    return t;
fail:
    topo_free(t);
    return NULL;
}

void dsq_topo_set_load(dsq_topo *t, uint64_t dbs, uint64_t bytes)
{
    pthread_mutex_lock(&t->mu);
    t->dbs = dbs;
    t->bytes = bytes;
    pthread_mutex_unlock(&t->mu);
}

void dsq_topo_set_draining(dsq_topo *t, bool draining)
{
    pthread_mutex_lock(&t->mu);
    t->draining = draining;
    t->write_now = true;
    pthread_cond_broadcast(&t->cv); /* (the registration thread writes it now) */
    pthread_mutex_unlock(&t->mu);
}

void dsq_topo_stop(dsq_topo *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->ev_mu); /* (waits for an on_event under way) */
    t->ev_closed = true;
    pthread_mutex_unlock(&t->ev_mu);
    pthread_mutex_lock(&t->mu);
    atomic_store(&t->stopping, true);
    atomic_store(&t->wcancel, true);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->reg_started)
        pthread_join(t->reg_thread, NULL);
    if (t->watch_started)
        pthread_join(t->watch_thread, NULL);
    DSQ_INFO("topo_stopped", "node=%s", t->self.id);
    topo_free(t);
}

/* Ask for a pause or its end; wait for the thread to be paused. */
static bool pause_thread(dsq_topo *t, bool *ask, const bool *paused, bool pause, bool watch)
{
    pthread_mutex_lock(&t->mu);
    *ask = pause;
    if (watch && pause)
        atomic_store(&t->wcancel, true);
    pthread_cond_broadcast(&t->cv);
    uint64_t until = dsq_now_ms() + PAUSE_WAIT_MS;
    while (pause && !*paused && !atomic_load(&t->stopping) && dsq_now_ms() < until)
        wait_until_locked(t, until);
    bool ok = !pause || *paused;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

bool dsq__topo_pause_registration(dsq_topo *t, bool pause)
{
    return pause_thread(t, &t->pause_reg, &t->reg_paused, pause, false);
}

bool dsq__topo_pause_watch(dsq_topo *t, bool pause)
{
    return pause_thread(t, &t->pause_watch, &t->watch_paused, pause, true);
}
