/* assign — every database's assignment in etcd, cached and watched
 * (assign.h says what it does).
 *
 * Two threads, each with its etcd handle: the request thread (the queue
 * of requests) and the watch thread (whole reads, the watch, the events).
 * Three locks, never two held at once: `mu` for the queue, the stop flag
 * and the test hooks (with `cv` for every wait); `cache_mu` for the
 * cache; `ev_mu` around the calls of on_change. Nobody holds `cache_mu`
 * while calling out (on_change, a request's callback), so those may read
 * the cache; only dsq_assign_each's fn runs under it.
 *
 * The cache is a hash table of entries by name. An entry is a value or a
 * tombstone, with the revision of the news it last took (cache_learn).
 * `floor` is the revision up to which the watch has seen every change: an
 * entry's news can only be stale below it by its own revision, and news
 * of a name the cache does not have, at or below it, is stale (the watch
 * would have brought it, and what removed it) — so a tombstone at or
 * below the floor has done its work and goes. Entries whose state
 * changed since the owner was told are on the `dirty` list; the watch
 * thread takes them off it and reports them (report_all), so only it
 * calls on_change, whatever brought the news.
 *
 * Divisions: the assignment's JSON; the object and its shared state; the
 * cache; the request thread; the watch thread; start and stop; the test
 * hooks. */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/assign.h"
#include "common/check.h"
#include "common/htab.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"

#define BACKOFF_MIN_MS 100       /* the first retry after a failed read */
#define BACKOFF_MAX_MS 1000      /* doubling up to this */
#define WATCH_SHORT_MS 1000      /* a watch that broke sooner waits the backoff first */
#define PAUSE_WAIT_MS 10000      /* the test hook's wait for the watch to pause */
#define MSG_MAX 320
#define KEY_MAX (sizeof DSQ_ASSIGN_KEYS + DSQ_ASSIGN_DB_MAX)

/* ---- the assignment's JSON --------------------------------------------------------------------- */

static bool db_valid(const char *db)
{
    return strnlen(db, DSQ_ASSIGN_DB_MAX) < DSQ_ASSIGN_DB_MAX && dsq_db_name_valid(db);
}

static bool node_valid(const char *id) { return dsq_node_id_valid(id, strnlen(id, DSQ_NODE_ID_MAX)); }

/* The rules both ways share: the fields' contents. */
static int check(const dsq_assignment *a, char *err, size_t errlen)
{
    if (!db_valid(a->db))
        return dsq_errf(err, errlen, "assign: '%.140s' is not a database name", a->db);
    if (a->epoch < 1 || a->epoch > (uint64_t)INT64_MAX)
        return dsq_errf(err, errlen, "assign: %s: the epoch is not from 1 to 2^63 - 1", a->db);
    if (a->ncopies < 1 || a->ncopies > DSQ_ASSIGN_COPIES_MAX)
        return dsq_errf(err, errlen, "assign: %s: %zu copies (1 to %d)", a->db, a->ncopies, DSQ_ASSIGN_COPIES_MAX);
    bool primary_in = false;
    for (size_t i = 0; i < a->ncopies; i++) {
        if (!node_valid(a->copies[i]))
            return dsq_errf(err, errlen, "assign: %s: copy '%.40s' is not a node id", a->db, a->copies[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(a->copies[k], a->copies[i]) == 0)
                return dsq_errf(err, errlen, "assign: %s: node %s holds two copies", a->db, a->copies[i]);
        primary_in = primary_in || strncmp(a->copies[i], a->primary, DSQ_NODE_ID_MAX) == 0;
    }
    if (!node_valid(a->primary))
        return dsq_errf(err, errlen, "assign: %s: the primary '%.40s' is not a node id", a->db, a->primary);
    if (!primary_in)
        return dsq_errf(err, errlen, "assign: %s: the primary %s is not among the copies", a->db, a->primary);
    return 0;
}

int dsq_assignment_encode(const dsq_assignment *a, dsq_buf *out, char *err, size_t errlen)
{
    if (check(a, err, errlen) != 0)
        return -1;
    json_t *copies = json_array();
    for (size_t i = 0; copies != NULL && i < a->ncopies; i++)
        if (json_array_append_new(copies, json_string(a->copies[i])) != 0) {
            json_decref(copies);
            copies = NULL;
        }
    json_t *j = copies != NULL ? json_pack("{s:I, s:s, s:o}", "epoch", (json_int_t)a->epoch, "primary", a->primary,
                                           "copies", copies)
                               : NULL;
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    int rc = s != NULL && dsq_buf_puts(out, s) == 0 ? 0 : dsq_errf(err, errlen, "assign: out of memory");
    free(s);
    return rc;
}

/* A node id field's string into dst[DSQ_NODE_ID_MAX]. 0 or -1. */
static int get_id(const char *db, const json_t *v, const char *what, char *dst, char *err, size_t errlen)
{
    if (!json_is_string(v))
        return dsq_errf(err, errlen, "assign: %s: %s is not a string", db, what);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!dsq_node_id_valid(s, n))
        return dsq_errf(err, errlen, "assign: %s: %s '%.40s' is not a node id", db, what, s);
    memcpy(dst, s, n + 1);
    return 0;
}

int dsq_assignment_decode(const char *db, const void *p, size_t len, dsq_assignment *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (db == NULL || !db_valid(db))
        return dsq_errf(err, errlen, "assign: '%.140s' is not a database name", db != NULL ? db : "(null)");
    memcpy(out->db, db, strlen(db) + 1);
    json_error_t je;
    json_t *j = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    if (j == NULL) {
        dsq_errf(err, errlen, "assign: %s: the value is not JSON: %s", db, je.text);
        goto out;
    }
    if (!json_is_object(j)) {
        dsq_errf(err, errlen, "assign: %s: the value is not a JSON object", db);
        goto out;
    }
    json_t *epoch = json_object_get(j, "epoch");
    json_t *primary = json_object_get(j, "primary");
    json_t *copies = json_object_get(j, "copies");
    if (epoch == NULL || primary == NULL || copies == NULL) {
        dsq_errf(err, errlen, "assign: %s: the value has no \"%s\"", db,
             epoch == NULL ? "epoch" : primary == NULL ? "primary" : "copies");
        goto out;
    }
    if (!json_is_integer(epoch) || json_integer_value(epoch) < 1) {
        dsq_errf(err, errlen, "assign: %s: \"epoch\" is not an integer from 1", db);
        goto out;
    }
    out->epoch = (uint64_t)json_integer_value(epoch);
    if (get_id(db, primary, "\"primary\"", out->primary, err, errlen) != 0)
        goto out;
    if (!json_is_array(copies) || json_array_size(copies) < 1 || json_array_size(copies) > DSQ_ASSIGN_COPIES_MAX) {
        dsq_errf(err, errlen, "assign: %s: \"copies\" is not an array of 1 to %d node ids", db, DSQ_ASSIGN_COPIES_MAX);
        goto out;
    }
    out->ncopies = json_array_size(copies);
    for (size_t i = 0; i < out->ncopies; i++)
        if (get_id(db, json_array_get(copies, i), "a copy", out->copies[i], err, errlen) != 0)
            goto out;
    rc = check(out, err, errlen);
out:
    json_decref(j);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

bool dsq_assignment_same(const dsq_assignment *a, const dsq_assignment *b)
{
    if (a->epoch != b->epoch || a->ncopies != b->ncopies || strcmp(a->primary, b->primary) != 0)
        return false;
    for (size_t i = 0; i < a->ncopies && i < DSQ_ASSIGN_COPIES_MAX; i++)
        if (strcmp(a->copies[i], b->copies[i]) != 0)
            return false;
    return true;
}

/* ---- the object and its shared state ----------------------------------------------------------- */

/* A database in the cache: a value, or a tombstone. */
typedef struct entry {
    dsq_hnode link;                /* in cache, by a.db */
    dsq_lnode dirty_link;          /* in dirty while in_dirty */
    dsq_lnode tomb_link;           /* in tombs while deleted */
    bool in_dirty;
    bool deleted;                  /* a tombstone: gone since rev */
    bool known;                    /* the owner was told a value (CHANGED) and not since that it went */
    dsq_assignment a;              /* a.db its name; the rest its value unless deleted */
    int64_t rev;                   /* of the last news taken: a.mod_revision, or since when it is gone */
    uint64_t read;                 /* the last whole read that found it */
} entry;

enum { REQ_CREATE, REQ_UPDATE, REQ_GET };

/* A request in the queue. */
typedef struct req {
    dsq_qnode link;
    int type;                      /* REQ_* */
    dsq_assignment want;           /* create, update: the value; get: want.db alone */
    int64_t expect;                /* update: the mod_revision the key must have */
    dsq_buf json;                  /* create, update: want's value */
    char bad[MSG_MAX];             /* why want is not valid; "" when it is */
    dsq_assign_done_fn done;
    void *ud;
} req;

/* A request's answer, before it reaches the cache and the callback. */
typedef struct answer {
    int rc;
    bool has_now;
    dsq_assignment now;
    bool learn;                    /* news for the cache: now (has_now) or gone, at rev */
    int64_t rev;
    char msg[MSG_MAX];
} answer;

struct dsq_assign {
    dsq_assign_event_fn on_change;
    void *ud;
    dsq_etcd *req_e, *watch_e;     /* each thread's handle */
    pthread_t req_thread, watch_thread;
    bool req_started, watch_started;

    pthread_mutex_t mu;            /* what follows, to the next mutex */
    pthread_cond_t cv;             /* any of it changed */
    atomic_bool stopping;          /* set once, under mu (read without it too) */
    atomic_bool wcancel;           /* the watch's cancel flag: stopping, or the watch paused */
    dsq_queue queue;               /* of req, oldest first */
    bool hold, held;               /* the test hook: answers held, and one is now */
    bool pause_watch, watch_paused;

    pthread_mutex_t cache_mu;      /* what follows, to the next mutex */
    dsq_htab cache;                /* of entry, by name */
    dsq_list dirty;                /* entries whose change the owner has not been told */
    dsq_list tombs;                /* the deleted entries */
    size_t count;                  /* entries that are values */
    int64_t floor;                 /* the watch has seen every change up to this revision */
    uint64_t reads;                /* whole reads begun */
    atomic_bool loaded;            /* a whole read was taken (set under cache_mu) */

    pthread_mutex_t ev_mu;         /* what follows, and the calls of on_change */
    bool ev_closed;                /* dsq_assign_stop began: no more events */

    /* the watch thread's alone */
    bool down;                     /* ETCD_DOWN said, ETCD_UP not yet */
    int64_t rev;                   /* the last revision it saw */
};

static void emit(dsq_assign *s, const dsq_assign_event *ev)
{
    pthread_mutex_lock(&s->ev_mu);
    if (!s->ev_closed && s->on_change != NULL)
        s->on_change(s->ud, ev);
    pthread_mutex_unlock(&s->ev_mu);
}

static void emit_simple(dsq_assign *s, dsq_assign_event_type type, const char *msg)
{
    dsq_assign_event ev = {.type = type, .msg = msg};
    emit(s, &ev);
}

/* Wait on cv until `until` (monotonic ms) or stopping. Caller holds mu. */
static void wait_until_locked(dsq_assign *s, uint64_t until)
{
    DSQ_ASSERT_HELD(&s->mu);
    uint64_t now = dsq_now_ms();
    if (now >= until || atomic_load(&s->stopping))
        return;
    struct timespec ts; /* cv counts on the monotonic clock (see dsq_assign_start) */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = until - now;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* Sleep ms, or less when stopping. */
static void nap(dsq_assign *s, uint64_t ms)
{
    uint64_t until = dsq_now_ms() + ms;
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stopping) && dsq_now_ms() < until)
        wait_until_locked(s, until);
    pthread_mutex_unlock(&s->mu);
}

static unsigned backoff_next(unsigned ms) { return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2; }

/* ---- the cache --------------------------------------------------------------------------------- */

static entry *cache_find(const dsq_assign *s, const char *db)
{
    return dsq_container_of(dsq_htab_find(&s->cache, db), entry, link);
}

static void entry_free_locked(dsq_assign *s, entry *e)
{
    DSQ_ASSERT_HELD(&s->cache_mu);
    dsq_htab_remove(&s->cache, &e->link);
    if (e->in_dirty)
        dsq_list_remove(&s->dirty, &e->dirty_link);
    if (e->deleted)
        dsq_list_remove(&s->tombs, &e->tomb_link);
    else
        s->count--;
    free(e);
}

/* News of db from etcd: its value v (NULL: the key is gone, or holds no
 * assignment) as of revision rev; from_watch when the watch (or a whole
 * read) brought it. Taken only when newer than what the cache has (see
 * the header). The entry, or NULL when the cache has none for db. Caller
 * holds cache_mu. */
static entry *cache_learn(dsq_assign *s, const char *db, const dsq_assignment *v, int64_t rev, bool from_watch)
{
    DSQ_ASSERT_HELD(&s->cache_mu);
    entry *e = cache_find(s, db);
    if (e != NULL) {
        if (rev <= e->rev)
            return e; /* older news, or the same */
    } else {
        /* Not in the cache. News at or below the floor is stale (the
         * watch saw it and what removed it): a request's is dropped; the
         * watch's own arrives at the floor when a transaction wrote
         * several keys. A key gone needs remembering only when the watch
         * may still bring older news of it: a request's, above the floor. */
        if ((!from_watch && rev <= s->floor) || (v == NULL && (from_watch || rev <= s->floor)))
            return NULL;
        if ((e = calloc(1, sizeof *e)) == NULL) {
            DSQ_ERROR("assign_out_of_memory", "db=%s", db); /* the next whole read tries again */
            return NULL;
        }
        memcpy(e->a.db, db, strlen(db) + 1);
        if (dsq_htab_add(&s->cache, &e->link, e->a.db) != 0) {
            DSQ_ERROR("assign_out_of_memory", "db=%s", db);
            free(e);
            return NULL;
        }
        e->deleted = true; /* (as it was before this news) */
        dsq_list_push(&s->tombs, &e->tomb_link);
    }
    bool was = !e->deleted;
    bool differs = v == NULL ? was : !was || !dsq_assignment_same(&e->a, v);
    if (v != NULL) {
        e->a = *v;
        memcpy(e->a.db, db, strlen(db) + 1);
        e->a.mod_revision = rev;
        if (!was) {
            dsq_list_remove(&s->tombs, &e->tomb_link);
            s->count++;
        }
    } else if (was) {
        dsq_list_push(&s->tombs, &e->tomb_link);
        s->count--;
    }
    e->deleted = v == NULL;
    e->rev = rev;
    if (differs && !e->in_dirty) {
        dsq_list_push(&s->dirty, &e->dirty_link);
        e->in_dirty = true;
    }
    return e;
}

/* The watch saw every change up to rev: raise the floor, and drop the
 * tombstones it covers (those reported, or with nothing to report).
 * Caller holds cache_mu. */
static void cache_raise_floor(dsq_assign *s, int64_t rev)
{
    DSQ_ASSERT_HELD(&s->cache_mu);
    if (rev <= s->floor)
        return;
    s->floor = rev;
    entry *e, *next;
    dsq_list_foreach_safe(e, next, &s->tombs, tomb_link) {
        if (e->rev <= s->floor && (!e->in_dirty || !e->known))
            entry_free_locked(s, e);
    }
}

/* An event the watch thread reports, copied out of the cache. */
typedef struct report {
    dsq_assign_event_type type;
    dsq_assignment a;              /* CHANGED: the value; DELETED: a.db */
    int64_t rev;
} report;

/* Take the next dirty entry's change: true with *r (false: none left).
 * r->type is LOADED when there is nothing to say (a key that came and
 * went between two reports). Caller holds cache_mu. */
static bool take_report_locked(dsq_assign *s, report *r)
{
    DSQ_ASSERT_HELD(&s->cache_mu);
    entry *e = dsq_container_of(s->dirty.head, entry, dirty_link);
    if (e == NULL)
        return false;
    dsq_list_remove(&s->dirty, &e->dirty_link);
    e->in_dirty = false;
    r->type = DSQ_ASSIGN_LOADED;
    r->a = e->a;
    r->rev = e->rev;
    if (!e->deleted) {
        r->type = DSQ_ASSIGN_CHANGED;
        e->known = true;
    } else {
        if (e->known)
            r->type = DSQ_ASSIGN_DELETED;
        e->known = false;
        if (e->rev <= s->floor)
            entry_free_locked(s, e);
    }
    return true;
}

/* Report every change not reported yet, one event each, in the order
 * they came; or, with `silent` (the first whole read), none of them:
 * the owner takes that cache as a whole. Watch thread. */
static void report_all(dsq_assign *s, bool silent)
{
    for (;;) {
        report r;
        pthread_mutex_lock(&s->cache_mu);
        bool any = take_report_locked(s, &r);
        while (any && silent)
            any = take_report_locked(s, &r);
        pthread_mutex_unlock(&s->cache_mu);
        if (!any || atomic_load(&s->stopping))
            return;
        if (r.type == DSQ_ASSIGN_CHANGED) {
            DSQ_DEBUG("assign_changed", "db=%s epoch=%llu primary=%s revision=%lld", r.a.db,
                      (unsigned long long)r.a.epoch, r.a.primary, (long long)r.rev);
            dsq_assign_event ev = {.type = r.type, .db = r.a.db, .assignment = &r.a, .revision = r.rev,
                                   .msg = "changed"};
            emit(s, &ev);
        } else if (r.type == DSQ_ASSIGN_DELETED) {
            DSQ_DEBUG("assign_deleted", "db=%s revision=%lld", r.a.db, (long long)r.rev);
            dsq_assign_event ev = {.type = r.type, .db = r.a.db, .revision = r.rev, .msg = "deleted"};
            emit(s, &ev);
        }
    }
}

/* The database a "dbs/" key names, or NULL (logged) when it names none. */
static const char *key_db(const dsq_etcd_kv *kv)
{
    size_t plen = sizeof DSQ_ASSIGN_KEYS - 1;
    const char *db = kv->key + plen;
    if (kv->key_len <= plen || memcmp(kv->key, DSQ_ASSIGN_KEYS, plen) != 0 || strlen(kv->key) != kv->key_len ||
        !db_valid(db)) {
        DSQ_WARN("assign_bad_value", "key=%s reason=%s", dsq_log_q(kv->key),
                 dsq_log_q("the key does not name a database"));
        return NULL;
    }
    return db;
}

/* A PUT's value as an assignment of db into *out: true, or false (logged)
 * when it is none (the key counts as gone). */
static bool kv_value(const char *db, const dsq_etcd_kv *kv, dsq_assignment *out)
{
    char why[MSG_MAX];
    if (dsq_assignment_decode(db, kv->value, kv->value_len, out, why, sizeof why) != 0) {
        DSQ_WARN("assign_bad_value", "key=%s revision=%lld reason=%s", dsq_log_q(kv->key),
                 (long long)kv->mod_revision, dsq_log_q(why));
        return false;
    }
    out->mod_revision = kv->mod_revision;
    return true;
}

/* ---- the request thread ------------------------------------------------------------------------ */

static void key_of(const char *db, char *key) { snprintf(key, KEY_MAX, "%s%s", DSQ_ASSIGN_KEYS, db); }

/* The key's value cur (from a failed compare) as the answer: rc with now,
 * or -1 when it is no assignment. */
static void answer_cur(const req *r, const dsq_etcd_kv *cur, int rc, answer *an)
{
    an->learn = true;
    an->rev = cur->mod_revision;
    char why[MSG_MAX];
    if (dsq_assignment_decode(r->want.db, cur->value, cur->value_len, &an->now, why, sizeof why) != 0) {
        an->rc = -1;
        snprintf(an->msg, sizeof an->msg, "%s%s holds no assignment: %.150s", DSQ_ASSIGN_KEYS, r->want.db, why);
        return;
    }
    an->now.mod_revision = cur->mod_revision;
    an->has_now = true;
    an->rc = rc;
    snprintf(an->msg, sizeof an->msg, rc == 1 && r->type == REQ_CREATE ? "it exists" : "it changed meanwhile");
}

/* Send r to etcd (the request thread's handle) and make its answer. */
static void request_run(dsq_assign *s, req *r, answer *an)
{
    memset(an, 0, sizeof *an);
    an->rc = -1;
    if (r->bad[0] != '\0') {
        snprintf(an->msg, sizeof an->msg, "%s", r->bad);
        return;
    }
    char key[KEY_MAX];
    key_of(r->want.db, key);
    int64_t rev = 0;
    if (r->type == REQ_GET) {
        dsq_etcd_kv kv;
        int e = dsq_etcd_get(s->req_e, key, &kv, &rev, an->msg, sizeof an->msg);
        if (e == 0) {
            answer_cur(r, &kv, 0, an);
            if (an->rc == 0)
                snprintf(an->msg, sizeof an->msg, "found");
        } else if (e == DSQ_ETCD_ENOTFOUND) {
            an->rc = 1;
            an->learn = true;
            an->rev = rev;
            snprintf(an->msg, sizeof an->msg, "no such database");
        }
        dsq_etcd_kv_clear(&kv);
        return;
    }
    /* create: the key must not exist (mod_revision 0); update: must be at expect */
    int64_t expect = r->type == REQ_CREATE ? 0 : r->expect;
    dsq_etcd_kv cur;
    int e = dsq_etcd_cas(s->req_e, key, expect, r->json.data, r->json.len, 0, &cur, &rev, an->msg, sizeof an->msg);
    if (e == 0) {
        an->rc = 0;
        an->has_now = true;
        an->now = r->want;
        an->now.mod_revision = rev;
        an->learn = true;
        an->rev = rev;
        snprintf(an->msg, sizeof an->msg, r->type == REQ_CREATE ? "created" : "written");
    } else if (e == DSQ_ETCD_ECONFLICT && cur.mod_revision != 0) {
        answer_cur(r, &cur, 1, an);
    } else if (e == DSQ_ETCD_ECONFLICT && r->type == REQ_UPDATE) {
        an->rc = 2;
        an->learn = true;
        an->rev = rev;
        snprintf(an->msg, sizeof an->msg, "no such database any more");
    } else if (e == DSQ_ETCD_ECONFLICT) {
        snprintf(an->msg, sizeof an->msg, "etcd said %s%s exists, and did not say as what", DSQ_ASSIGN_KEYS,
                 r->want.db);
    }
    dsq_etcd_kv_clear(&cur);
}

/* The test hook: wait while answers are held. */
static void hold_gate(dsq_assign *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->hold && !atomic_load(&s->stopping)) {
        if (!s->held) {
            s->held = true;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->held = false;
    pthread_mutex_unlock(&s->mu);
}

static void request_free(req *r)
{
    dsq_buf_free(&r->json);
    free(r);
}

static void *req_main(void *arg)
{
    dsq_assign *s = arg;
    dsq_thread_name("dsq-asgn-req");
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!atomic_load(&s->stopping) && dsq_queue_empty(&s->queue))
            pthread_cond_wait(&s->cv, &s->mu);
        if (atomic_load(&s->stopping))
            break; /* (still holding mu) */
        req *r = dsq_container_of(dsq_queue_pop(&s->queue), req, link);
        pthread_mutex_unlock(&s->mu);
        answer an;
        request_run(s, r, &an);
        hold_gate(s);
        if (an.learn) {
            pthread_mutex_lock(&s->cache_mu);
            cache_learn(s, r->want.db, an.has_now ? &an.now : NULL, an.rev, false);
            pthread_mutex_unlock(&s->cache_mu);
        }
        if (an.rc == -1)
            DSQ_DEBUG("assign_request_failed", "db=%s reason=%s", r->want.db, dsq_log_q(an.msg));
        r->done(r->ud, an.rc, an.has_now ? &an.now : NULL, an.msg);
        request_free(r);
    }
    /* no request comes in once stopping is set (under mu): fail the rest */
    dsq_queue left = dsq_queue_take(&s->queue);
    pthread_mutex_unlock(&s->mu);
    for (req *r; (r = dsq_container_of(dsq_queue_pop(&left), req, link)) != NULL;) {
        r->done(r->ud, -1, NULL, "stopping");
        request_free(r);
    }
    return NULL;
}

/* Queue r: 0, or -1 (r freed) when stopping began. */
static int submit(dsq_assign *s, req *r)
{
    pthread_mutex_lock(&s->mu);
    bool stopping = atomic_load(&s->stopping);
    if (!stopping) {
        dsq_queue_push(&s->queue, &r->link);
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        request_free(r);
        return -1;
    }
    return 0;
}

static req *request_new(int type, dsq_assign_done_fn done, void *ud)
{
    req *r = calloc(1, sizeof *r);
    if (r != NULL) {
        r->type = type;
        r->done = done;
        r->ud = ud;
    }
    return r;
}

/* A create or an update of want: its value encoded now, or why not. */
static int submit_write(dsq_assign *s, int type, const dsq_assignment *want, int64_t expect, dsq_assign_done_fn done,
                        void *ud)
{
    if (atomic_load(&s->stopping))
        return -1;
    req *r = request_new(type, done, ud);
    if (r == NULL)
        return -1;
    r->want = *want;
    r->want.db[DSQ_ASSIGN_DB_MAX - 1] = '\0'; /* (check() refused it if it was not terminated) */
    r->expect = expect;
    if (dsq_assignment_encode(want, &r->json, r->bad, sizeof r->bad) != 0) {
        if (r->bad[0] == '\0' || strstr(r->bad, "out of memory") != NULL) {
            request_free(r);
            return -1;
        }
    } else if (type == REQ_UPDATE && expect < 1) {
        snprintf(r->bad, sizeof r->bad, "assign: %s: an update expects a mod_revision (>= 1), not %lld", want->db,
                 (long long)expect);
    }
    return submit(s, r);
}

int dsq_assign_create(dsq_assign *s, const dsq_assignment *want, dsq_assign_done_fn done, void *ud)
{
    return submit_write(s, REQ_CREATE, want, 0, done, ud);
}

int dsq_assign_update(dsq_assign *s, const dsq_assignment *want, int64_t expect_mod_revision,
                      dsq_assign_done_fn done, void *ud)
{
    return submit_write(s, REQ_UPDATE, want, expect_mod_revision, done, ud);
}

int dsq_assign_get(dsq_assign *s, const char *db, dsq_assign_done_fn done, void *ud)
{
    if (atomic_load(&s->stopping))
        return -1;
    req *r = request_new(REQ_GET, done, ud);
    if (r == NULL)
        return -1;
    if (db == NULL || !db_valid(db))
        snprintf(r->bad, sizeof r->bad, "assign: '%.140s' is not a database name", db != NULL ? db : "(null)");
    else
        memcpy(r->want.db, db, strlen(db) + 1);
    return submit(s, r);
}

/* ---- the watch thread -------------------------------------------------------------------------- */

/* A read of the watch thread succeeded (ok) or failed (msg: why): etcd's
 * health, said when it changes. */
static void health(dsq_assign *s, bool ok, const char *msg)
{
    if (ok == !s->down)
        return;
    s->down = !ok;
    if (ok) {
        DSQ_INFO("assign_etcd_up", "etcd=%s", dsq_etcd_endpoint(s->watch_e));
        emit_simple(s, DSQ_ASSIGN_ETCD_UP, "etcd answers again");
    } else {
        DSQ_WARN("assign_etcd_down", "reason=%s", dsq_log_q(msg));
        emit_simple(s, DSQ_ASSIGN_ETCD_DOWN, msg);
    }
}

/* One page's keys into the cache, as of the read's revision; each entry
 * found is marked with the read's number. Their JSON is decoded before
 * the lock is taken. 0, or -1 when memory ran out (nothing taken). */
static int load_page(dsq_assign *s, const dsq_etcd_kv *kvs, size_t n, uint64_t read)
{
    if (n == 0)
        return 0;
    dsq_assignment *vals = calloc(n, sizeof *vals);
    const char **dbs = calloc(n, sizeof *dbs);
    bool *ok = calloc(n, sizeof *ok);
    if (vals == NULL || dbs == NULL || ok == NULL) {
        free(vals);
        free(dbs);
        free(ok);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((dbs[i] = key_db(&kvs[i])) != NULL)
            ok[i] = kv_value(dbs[i], &kvs[i], &vals[i]);
    pthread_mutex_lock(&s->cache_mu);
    for (size_t i = 0; i < n; i++) {
        if (dbs[i] == NULL)
            continue;
        entry *e = cache_learn(s, dbs[i], ok[i] ? &vals[i] : NULL, kvs[i].mod_revision, true);
        if (e != NULL)
            e->read = read;
    }
    pthread_mutex_unlock(&s->cache_mu);
    free(vals);
    free(dbs);
    free(ok);
    return 0;
}

/* Read every "dbs/" key into the cache, page by page at one revision
 * (*rev), and take what the read did not find as gone. 0, or a
 * DSQ_ETCD_E* code with a message. */
static int load(dsq_assign *s, int64_t *rev, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->cache_mu);
    uint64_t read = ++s->reads;
    pthread_mutex_unlock(&s->cache_mu);
    char *after = NULL;          /* the last key of the page before */
    int64_t at = 0;
    bool more = true;
    int rc = 0;
    while (more && rc == 0) {
        if (atomic_load(&s->stopping)) {
            rc = dsq_errf(err, errlen, "stopping");
            break;
        }
        dsq_etcd_kv *kvs;
        size_t n;
        rc = dsq_etcd_range_page(s->watch_e, DSQ_ASSIGN_KEYS, after, DSQ_ASSIGN_PAGE, at, &kvs, &n, &more, &at, err,
                                 errlen);
        if (rc != 0)
            break;
        if (load_page(s, kvs, n, read) != 0) /* (a read not whole must not take anything as gone) */
            rc = dsq_errf(err, errlen, "assign: out of memory for a page of %zu keys", n);
        free(after);
        after = n > 0 ? strdup(kvs[n - 1].key) : NULL;
        dsq_etcd_kvs_free(kvs, n);
        if (rc == 0 && more && after == NULL) /* (out of memory, or etcd said more after no keys) */
            rc = dsq_errf(err, errlen, "assign: a page could not be followed (out of memory?)");
    }
    free(after);
    if (rc != 0)
        return rc;
    /* a value the read did not find is gone as of the read, unless newer
     * news came meanwhile (a request's); no entry is added during the walk */
    pthread_mutex_lock(&s->cache_mu);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&s->cache, &it)) != NULL;) {
        entry *e = dsq_container_of(h, entry, link);
        if (!e->deleted && e->read != read && e->rev <= at)
            cache_learn(s, e->a.db, NULL, at, true);
    }
    cache_raise_floor(s, at);
    pthread_mutex_unlock(&s->cache_mu);
    *rev = at;
    return 0;
}

/* A change the watch saw. */
static int on_watch_event(void *arg, int type, const dsq_etcd_kv *kv)
{
    dsq_assign *s = arg;
    if (kv->mod_revision > s->rev)
        s->rev = kv->mod_revision;
    const char *db = key_db(kv);
    dsq_assignment v;
    bool ok = db != NULL && type == DSQ_ETCD_PUT && kv_value(db, kv, &v);
    pthread_mutex_lock(&s->cache_mu);
    if (db != NULL)
        cache_learn(s, db, ok ? &v : NULL, kv->mod_revision, true);
    cache_raise_floor(s, kv->mod_revision);
    pthread_mutex_unlock(&s->cache_mu);
    report_all(s, false);
    return atomic_load(&s->stopping) ? 1 : 0;
}

/* Wait while the watch is paused (the test hook); false when stopping. */
static bool watch_gate(dsq_assign *s)
{
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stopping) && s->pause_watch) {
        if (!s->watch_paused) {
            s->watch_paused = true;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->watch_paused = false;
    if (!atomic_load(&s->stopping))
        atomic_store(&s->wcancel, false);
    bool go = !atomic_load(&s->stopping);
    pthread_mutex_unlock(&s->mu);
    return go;
}

static void *watch_main(void *arg)
{
    dsq_assign *s = arg;
    dsq_thread_name("dsq-asgn-watch");
    char err[MSG_MAX];
    unsigned backoff = BACKOFF_MIN_MS;
    bool need_read = true;
    while (watch_gate(s)) {
        if (need_read) {
            int64_t rev = 0;
            int rc = load(s, &rev, err, sizeof err);
            if (rc == DSQ_ETCD_ECOMPACTED) {
                DSQ_INFO("assign_read_compacted", "reason=%s", dsq_log_q(err));
                continue; /* compacted while paging: at once from the first page */
            }
            if (rc != 0) {
                if (atomic_load(&s->stopping))
                    continue;
                DSQ_DEBUG("assign_read_failed", "retry_ms=%u reason=%s", backoff, dsq_log_q(err));
                health(s, false, err);
                nap(s, backoff);
                backoff = backoff_next(backoff);
                continue;
            }
            health(s, true, NULL);
            bool first = !atomic_load(&s->loaded);
            report_all(s, first);
            pthread_mutex_lock(&s->cache_mu);
            atomic_store(&s->loaded, true);
            size_t count = s->count;
            pthread_mutex_unlock(&s->cache_mu);
            DSQ_INFO("assign_loaded", "databases=%zu revision=%lld", count, (long long)rev);
            dsq_assign_event ev = {.type = DSQ_ASSIGN_LOADED, .count = count, .revision = rev, .msg = "loaded"};
            emit(s, &ev);
            s->rev = rev;
            need_read = false;
        }
        uint64_t began = dsq_now_ms();
        int64_t compact = 0;
        int rc = dsq_etcd_watch(s->watch_e, DSQ_ASSIGN_KEYS, s->rev + 1, &s->wcancel, on_watch_event, s, &compact,
                                err, sizeof err);
        if (rc == 0)
            continue; /* stopping, or paused */
        need_read = true;
        if (rc == DSQ_ETCD_ECOMPACTED) {
            DSQ_INFO("assign_watch_compacted", "from=%lld kept=%lld", (long long)s->rev + 1, (long long)compact);
            continue;
        }
        DSQ_DEBUG("assign_watch_broke", "reason=%s", dsq_log_q(err));
        if (dsq_now_ms() - began < WATCH_SHORT_MS) {
            nap(s, backoff);
            backoff = backoff_next(backoff);
        } else {
            backoff = BACKOFF_MIN_MS;
        }
    }
    return NULL;
}

/* ---- the cache, from any thread ---------------------------------------------------------------- */

int dsq_assign_lookup(dsq_assign *s, const char *db, dsq_assignment *out)
{
    pthread_mutex_lock(&s->cache_mu);
    entry *e = cache_find(s, db);
    bool found = e != NULL && !e->deleted;
    if (found)
        *out = e->a;
    pthread_mutex_unlock(&s->cache_mu);
    return found ? 0 : -1;
}

bool dsq_assign_loaded(dsq_assign *s) { return atomic_load(&s->loaded); }

size_t dsq_assign_count(dsq_assign *s)
{
    pthread_mutex_lock(&s->cache_mu);
    size_t n = s->count;
    pthread_mutex_unlock(&s->cache_mu);
    return n;
}

int dsq_assign_each(dsq_assign *s, dsq_assign_each_fn fn, void *ud)
{
    int rc = 0;
    pthread_mutex_lock(&s->cache_mu);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; rc == 0 && (h = dsq_htab_next(&s->cache, &it)) != NULL;) {
        entry *e = dsq_container_of(h, entry, link);
        if (!e->deleted)
            rc = fn(ud, &e->a);
    }
    pthread_mutex_unlock(&s->cache_mu);
    return rc;
}

/* ---- start and stop ---------------------------------------------------------------------------- */

static void assign_free(dsq_assign *s)
{
    dsq_etcd_free(s->req_e);
    dsq_etcd_free(s->watch_e);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&s->cache, &it)) != NULL;)
        free(dsq_container_of(h, entry, link));
    dsq_htab_free(&s->cache);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->cache_mu);
    pthread_mutex_destroy(&s->ev_mu);
    free(s);
}

dsq_assign *dsq_assign_start(const dsq_assign_cfg *cfg, char *err, size_t errlen)
{
    dsq_assign *s = calloc(1, sizeof *s);
    if (s == NULL) {
        dsq_errf(err, errlen, "assign: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cache_mu, NULL);
    pthread_mutex_init(&s->ev_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->stopping, false);
    atomic_init(&s->wcancel, false);
    atomic_init(&s->loaded, false);
    s->on_change = cfg->on_change;
    s->ud = cfg->ud;
    dsq_etcd_cfg ec = cfg->etcd;
    if (ec.timeout_ms == 0)
        ec.timeout_ms = DSQ_ASSIGN_TIMEOUT_MS;
    if ((s->req_e = dsq_etcd_new(&ec, err, errlen)) == NULL || (s->watch_e = dsq_etcd_new(&ec, err, errlen)) == NULL) {
        assign_free(s);
        return NULL;
    }
    /* (before the threads: the handles are theirs from then on) */
    DSQ_INFO("assign_started", "etcd=%s", dsq_etcd_endpoint(s->req_e));
    if (pthread_create(&s->req_thread, NULL, req_main, s) != 0) {
        dsq_errf(err, errlen, "assign: cannot start a thread");
        assign_free(s);
        return NULL;
    }
    s->req_started = true;
    if (pthread_create(&s->watch_thread, NULL, watch_main, s) != 0) {
        dsq_errf(err, errlen, "assign: cannot start a thread");
        dsq_assign_stop(s);
        return NULL;
    }
    s->watch_started = true;
    return s;
}

void dsq_assign_stop(dsq_assign *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->ev_mu); /* (waits for an on_change under way) */
    s->ev_closed = true;
    pthread_mutex_unlock(&s->ev_mu);
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, true);
    atomic_store(&s->wcancel, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->req_started)
        pthread_join(s->req_thread, NULL);
    if (s->watch_started)
        pthread_join(s->watch_thread, NULL);
    DSQ_INFO("assign_stopped", "databases=%zu", s->count);
    assign_free(s);
}

/* ---- the test hooks ---------------------------------------------------------------------------- */

void dsq__assign_hold_answers(dsq_assign *s, bool hold)
{
    pthread_mutex_lock(&s->mu);
    s->hold = hold;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

bool dsq__assign_answer_held(dsq_assign *s)
{
    pthread_mutex_lock(&s->mu);
    bool held = s->held;
    pthread_mutex_unlock(&s->mu);
    return held;
}

bool dsq__assign_pause_watch(dsq_assign *s, bool pause)
{
    pthread_mutex_lock(&s->mu);
    s->pause_watch = pause;
    if (pause)
        atomic_store(&s->wcancel, true);
    pthread_cond_broadcast(&s->cv);
    uint64_t until = dsq_now_ms() + PAUSE_WAIT_MS;
    while (pause && !s->watch_paused && !atomic_load(&s->stopping) && dsq_now_ms() < until)
        wait_until_locked(s, until);
    bool ok = !pause || s->watch_paused;
    pthread_mutex_unlock(&s->mu);
    return ok;
}
