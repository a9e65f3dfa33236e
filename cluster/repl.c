/* repl — log shipping, epochs and promotion between a database's copies
 * (repl.h). */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/repl.h"
#include "cluster/wire.h"
#include "common/htab.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"

#define READ_CHUNK (1u << 20) /* bytes of records per read of a log for another copy */
#define REBUILD_RETRY_MS 1000 /* a copy the object store could not make yet: tried again after 1 s, */
#define REBUILD_RETRY_MAX_MS 30000 /* doubling up to 30 s */
#define QUIET_MAX 16 /* copies whose quiet times an ACCEPT carries */
#define CHANGE_CATCHUP_MS 300000 /* a node being added to a copy set must be in step within 5 min */
#define RESUMES_MAX 16 /* resuming promotions under way at once (after a crash, every primary resumes:
                          the rest wait their turn, not promote_timeout behind the epochs file's syncs) */

/* What a copy is to the database's copy set (rcopy.in). */
enum {
    IN_SET = 1,     /* a member: counted for acknowledgements, promotions, the lease */
    IN_PREV = 2,    /* a member of the set a change replaces, while that change may not be
                       established: a promotion needs a quorum of it too */
    IN_LEARNER = 4, /* being added (a change under way on the primary): sent the log, not counted */
};

/* One copy of a database, as this node sees it. */
typedef struct rcopy {
    uint32_t node;
    uint8_t in;             /* IN_* (under r->mu) */
    /* under r->mu */
    uint64_t durable;       /* how far its log is durable and agrees with the primary's (a follower's,
                               counted once it is in sync with this epoch; this node's own) */
    uint64_t applied;
    uint64_t behind_since;  /* primary: since when (ms) it holds less than appended (0: in step) */
    /* loop thread: the primary's view of a follower */
    uint64_t sent;          /* the last LSN sent to it since it was in sync */
    bool ready;             /* in sync with this primary's epoch over this link (READY came) */
    bool streaming;         /* in step: records go to it as they are committed */
    bool reading;           /* a read of the log for it is under way */
    bool prompted;          /* asked where its log ends since the link came up */
} rcopy;

struct promo;
struct change;

typedef struct rdb {
    dsq_hnode link;         /* in dsq_repl.dbs */
    char name[129];
    /* under r->mu (the hooks read them) */
    dsq_role role;
    uint32_t primary;       /* node */
    uint64_t epoch;         /* the highest accepted */
    uint64_t serve_after_ms; /* primary: it answers from then on (a new one waits out the old one's lease) */
    uint64_t commit;        /* primary: acknowledged by enough copies; follower: the primary's, as told */
    bool ack_due;           /* follower: its durable LSN grew: tell the primary */
    bool commit_due;        /* primary: its commit grew: tell the followers */
    bool on_due;            /* on r->due */
    dsq_lnode due;
    bool on_held;           /* on r->held: answering() said no; poke it when it says yes */
    dsq_lnode held;
    /* loop thread: a follower's copy to be made again from the object store */
    bool on_rebuild;        /* on r->rebuilds: asked, not yet under way */
    bool rebuilding;        /* under way (DSQ_OP_REBUILD) */
    dsq_lnode rebuild;
    uint64_t rebuild_need;  /* the first record of the primary's log */
    uint64_t rebuild_epoch; /* the epoch asked in */
    uint64_t rebuild_at;    /* not before then (ms): the backoff after a failure */
    unsigned rebuild_fails;
    /* loop thread */
    uint64_t commit_told;   /* primary: the commit last sent */
    uint64_t appended;      /* primary: the last record committed (under r->mu) */
    uint64_t max_seen;      /* the highest epoch another copy said it accepted */
    /* follower */
    uint64_t expect;        /* the next LSN it wants */
    uint64_t at_sent;       /* `expect` when it last said where it is (0: not since the link came up) */
    bool pos_known;         /* expect holds its log's end */
    bool probing;           /* a call to learn it is under way */
    bool reprobe;           /* the log may have grown since that call read its end: ask again */
    bool synced;            /* the primary agreed where their logs meet (SYNC done, READY sent) */
    bool primary_serving;   /* the primary of this epoch sent a COMMIT or records: it serves */
    bool settling;          /* cutting its log or recording history after a SYNC */
    unsigned accepting;     /* epochs it accepts being recorded (one at a time but for a failed
                               promotion's, which may still be on its way) */
    uint32_t accept_to;     /* the candidate to answer once recorded (+ 1; 0: none) */
    unsigned applies;       /* APPLY calls in flight */
    struct promo *promo;    /* this node is becoming its primary */
    /* A primary copy found on disk after this node stopped without
     * syncing (cfg.resume): its log may end before records it shipped,
     * which a quorum of followers may hold (some acknowledged), so it
     * takes a new epoch, with the longest log, before it serves. */
    bool resuming;          /* under r->mu */
    bool on_resume;         /* on r->resumes (under r->mu) */
    dsq_lnode resume;
    uint64_t resume_since;  /* when it began (ms): a heartbeat sent since then acknowledged by a copy
                               means that copy's FENCED, sent when its link came up, came first */
    uint64_t resume_at;     /* not before then (ms): the backoff after a failure */
    uint64_t resume_backoff;
    bool resume_refused;    /* a copy refused its promotion: it had accepted that epoch or a newer one */
    struct change *chg;     /* primary: a change of the copy set under way (dsq_repl_change) */
    bool on_changing;       /* on r->changing (loop thread): chg is set */
    dsq_lnode changing;
    bool on_discard;        /* on r->discards (under r->mu): taken out of the copy set, its files go */
    dsq_lnode discarding;
    uint64_t set_epoch;     /* the epoch that made the copy set (0: the placement's) (under r->mu) */
    size_t cap;             /* room in copies */
    size_t ncopies;
    size_t self_copy;       /* index in copies of this node, or ncopies */
    rcopy copies[];
} rdb;

/* A commit record on its way from a worker to the loop. */
typedef struct recq_item {
    dsq_qnode link;
    rdb *d;
    uint64_t lsn;
    size_t len;
    uint8_t rec[];
} recq_item;

struct dsq_repl {
    dsq_repl_cfg cfg;
    dsq_placement own_place; /* the static rule, when cfg.place is NULL */
    const dsq_placement *place;
    dsq_repl_hooks hooks;
    dsq_engine *engine;
    dsq_peers *peers;
    uv_loop_t *loop;
    uv_async_t async;
    uv_timer_t beat;
    bool started;
    bool quiet;             /* loop thread: the node is stopping (dsq_repl_quiesce): no promotion starts */
    bool stopped;           /* loop thread: dsq_repl_stop ran (the engine may be gone: the epochs'
                               writes that call back after it only free what they carry) */
    pthread_mutex_t mu;     /* the table, the queue, the lists, beat_acked, the fields marked so */
    dsq_htab dbs;           /* rdb.link */
    dsq_queue recq;         /* recq_item.link */
    dsq_list due;           /* rdb.due */
    dsq_list held;          /* rdb.held */
    dsq_list rebuilds;      /* rdb.rebuild (loop thread) */
    dsq_list resumes;       /* rdb.resume (static placement only: with etcd, failover.c promotes) */
    unsigned resumes_now;   /* loop thread: their promotions under way (at most RESUMES_MAX) */
    dsq_list changing;      /* rdb.changing: a change of its copy set under way here (loop thread) */
    dsq_list discards;      /* rdb.discarding: copies taken out of their set, files to remove (r->mu) */
    char *data_dir;         /* cfg.data_dir's copy (owned) */
    dsq_htab found;         /* found_db.link: with cfg.resume, the databases on disk at the start
                               (a database first made in this run has nothing to resume) */
    bool found_all;         /* they could not be listed: every one counts as found */
    uint64_t beat_acked[DSQ_NODES_MAX]; /* the send time of the newest heartbeat each node acknowledged */
    uint64_t beat_answered[DSQ_NODES_MAX]; /* loop thread: when (ms) this node last acknowledged a
                                              heartbeat of each node (0: never) */
    dsq_repl_stats stats;   /* loop thread */
};

static void send_at(dsq_repl *r, rdb *d);
static void read_log(dsq_repl *r, rdb *d, rcopy *c);
static void prompt(dsq_repl *r, rdb *d, rcopy *c);
static void promo_step(dsq_repl *r, rdb *d);
static void send_learn(dsq_repl *r, rdb *d, size_t node);
static void on_learn(dsq_repl *r, rdb *d, size_t node, uint64_t epoch, const dsq_copyset *cs);
static bool adopt_set(dsq_repl *r, rdb *d, const dsq_copyset *cs, bool record);
static void change_step(dsq_repl *r, rdb *d);
static void change_end(dsq_repl *r, rdb *d, int rc, uint64_t epoch, uint64_t lsn, const char *msg);
static void promo_fail(dsq_repl *r, rdb *d, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static unsigned ack_needed(const dsq_repl *r, const rdb *d);
static rcopy *copy_of(rdb *d, size_t node);
static void mark_discard(dsq_repl *r, rdb *d);

/* A change of a database's copy set under way on its primary
 * (dsq_repl_change): node `in` follows as a learner until it is in step,
 * then the primary proposes a new epoch with the new set. */
typedef struct change {
    dsq_repl *r;
    rdb *d;
    uint32_t out, in;
    uint64_t since;         /* ms */
    uint64_t min_epoch;
    bool promoting;
    dsq_promote_fn done;
    void *ud;
} change;

static rcopy *change_learner(rdb *d)
{
    rcopy *c = d->chg != NULL ? copy_of(d, d->chg->in) : NULL;
    return c != NULL && c->in == IN_LEARNER ? c : NULL;
}


/* ---- the table ------------------------------------------------------------------------------ */

/* Node `n`'s id, for messages and the log. */
static const char *node_id(const dsq_repl *r, size_t n)
{
    const char *id = dsq_nodeset_id(r->cfg.ids, (uint32_t)n);
    return id != NULL ? id : "?";
}

static dsq_role role_of(const dsq_repl *r, const rdb *d)
{
    if (d->self_copy == d->ncopies)
        return DSQ_ROLE_ELSEWHERE;
    if (d->ncopies == 1)
        return DSQ_ROLE_ALONE;
    if (!(d->copies[d->self_copy].in & IN_SET))
        return DSQ_ROLE_FOLLOWER; /* (being added, or leaving with a change) */
    return d->primary == r->cfg.self ? DSQ_ROLE_PRIMARY : DSQ_ROLE_FOLLOWER;
}

/* Copies of d that are `in` (a mask of IN_*). */
static size_t count_in(const rdb *d, uint8_t in)
{
    size_t n = 0;
    for (size_t i = 0; i < d->ncopies; i++)
        n += (d->copies[i].in & in) != 0;
    return n;
}

static bool cs_has(const uint32_t *v, size_t n, uint32_t node)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == node)
            return true;
    return false;
}

/* d's copy set now (caller holds r->mu, or is the loop thread). */
static void cur_set(const rdb *d, dsq_copyset *out)
{
    memset(out, 0, sizeof *out);
    out->epoch = d->set_epoch;
    for (size_t i = 0; i < d->ncopies; i++) {
        if ((d->copies[i].in & IN_SET) && out->n < DSQ_COPYSET_MAX)
            out->nodes[out->n++] = d->copies[i].node;
        if ((d->copies[i].in & IN_PREV) && out->nprev < DSQ_COPYSET_MAX)
            out->prev[out->nprev++] = d->copies[i].node;
    }
}

/* Make d's copies those of cs (and `learner`, not counted, unless
 * DSQ_NODE_NONE), keeping what is known of each node that stays
 * (caller holds r->mu). The role follows, but a copy is made primary by
 * its promotion only. -1 when they do not fit (nothing changed). */
static int set_copies(dsq_repl *r, rdb *d, const dsq_copyset *cs, uint32_t learner)
{
    rcopy next[2 * DSQ_COPYSET_MAX + 1];
    size_t n = 0;
    for (size_t k = 0; k < cs->n + cs->nprev + 1; k++) {
        uint32_t node = k < cs->n ? cs->nodes[k] : k < cs->n + cs->nprev ? cs->prev[k - cs->n] : learner;
        uint8_t in = k < cs->n ? IN_SET : k < cs->n + cs->nprev ? IN_PREV : IN_LEARNER;
        if (node == DSQ_NODE_NONE)
            continue;
        size_t j = 0;
        while (j < n && next[j].node != node)
            j++;
        if (j == n) {
            if (n == d->cap || n == sizeof next / sizeof next[0])
                return -1;
            const rcopy *old = copy_of(d, node);
            next[n] = old != NULL ? *old : (rcopy){.node = node};
            next[n++].in = 0;
        }
        if (!(in == IN_LEARNER && next[j].in != 0))
            next[j].in |= in;
    }
    memcpy(d->copies, next, n * sizeof next[0]);
    d->ncopies = n;
    d->self_copy = n;
    for (size_t i = 0; i < n; i++)
        if (d->copies[i].node == r->cfg.self)
            d->self_copy = i;
    d->set_epoch = cs->epoch;
    dsq_role was = d->role;
    d->role = role_of(r, d);
    if (d->role == DSQ_ROLE_PRIMARY && was != DSQ_ROLE_PRIMARY)
        d->role = DSQ_ROLE_FOLLOWER;
    return 0;
}

/* The database's entry, made on first use from the placement and the
 * epochs kept on disk (caller holds r->mu). NULL: out of memory, or the
 * placement does not know db yet (its assignment in etcd not read). */
static rdb *get(dsq_repl *r, const char *db)
{
    rdb *d = dsq_container_of(dsq_htab_find(&r->dbs, db), rdb, link);
    if (d != NULL || strlen(db) >= sizeof d->name)
        return d;
    uint32_t nodes[DSQ_NODES_MAX], primary;
    uint64_t named_in;
    size_t n = r->place->copies(r->place, db, nodes, DSQ_NODES_MAX, &primary, &named_in);
    /* (with etcd, room for a change of the copy set: one more, and one being added) */
    size_t cap = r->cfg.place != NULL ? (n + 2 > DSQ_COPYSET_MAX ? n + 2 : DSQ_COPYSET_MAX) : n;
    if (n == 0 || (d = calloc(1, sizeof *d + cap * sizeof d->copies[0])) == NULL)
        return NULL;
    snprintf(d->name, sizeof d->name, "%s", db);
    d->cap = cap;
    d->ncopies = n;
    d->self_copy = n;
    d->primary = primary;
    d->epoch = 1;
    for (size_t i = 0; i < n; i++) {
        d->copies[i].node = nodes[i];
        d->copies[i].in = IN_SET;
        if (nodes[i] == r->cfg.self)
            d->self_copy = i;
    }
    dsq_epoch_state st;
    dsq_epochs_get(r->cfg.epochs, db, &st);
    d->epoch = st.accepted;
    /* A copy set a change made, accepted here, holds over the placement's;
     * but where etcd names a newer epoch without this node, it was taken
     * out of the set (a change it did not hear of). */
    bool taken_out = d->self_copy == d->ncopies &&
                     (named_in > st.set.epoch ||
                      (named_in == st.set.epoch && !cs_has(st.set.nodes, st.set.n, (uint32_t)r->cfg.self)));
    if (st.set.epoch > 0 && st.set.n > 0 && !taken_out)
        set_copies(r, d, &st.set, DSQ_NODE_NONE);
    /* The placement's primary is a hint where it names a newer epoch than
     * this copy accepted (etcd says who won a failover before that node's
     * messages came): where to look, not an epoch accepted. */
    if (st.primary_known && st.accepted >= named_in)
        d->primary = st.primary;
    d->max_seen = d->epoch;
    d->role = role_of(r, d);
    if (dsq_htab_add(&r->dbs, &d->link, d->name) != 0) {
        free(d);
        return NULL;
    }
    /* With etcd, files of a database this node holds no copy of are what a
     * change of its copies left behind (taken out while this node was
     * down, or a copy being added when it stopped): they go. */
    if (d->role == DSQ_ROLE_ELSEWHERE && r->cfg.place != NULL && r->cfg.data_dir != NULL) {
        char path[4400];
        snprintf(path, sizeof path, "%s/db/%s", r->cfg.data_dir, db);
        if (access(path, F_OK) == 0) {
            DSQ_INFO("copy_removed", "db=%s epoch=%llu", d->name, (unsigned long long)named_in);
            mark_discard(r, d);
        }
    }
    /* Resumed after a crash: with commit_ack = all or local its own log
     * holds every acknowledged commit (its sync counted); with a quorum
     * that may leave it out, it does not. */
    if (d->role == DSQ_ROLE_PRIMARY && r->cfg.resume && r->cfg.ack == DSQ_ACK_QUORUM &&
        ack_needed(r, d) < count_in(d, IN_SET) && (r->found_all || dsq_htab_find(&r->found, db) != NULL)) {
        d->role = DSQ_ROLE_FOLLOWER;
        d->resuming = true;
        d->resume_since = dsq_now_ms();
        DSQ_INFO("replication_resuming", "db=%s epoch=%llu", d->name, (unsigned long long)d->epoch);
        if (r->cfg.place == NULL) {
            d->on_resume = true;
            dsq_list_push(&r->resumes, &d->resume);
            if (r->started)
                uv_async_send(&r->async);
        }
    }
    return d;
}

static rdb *entry(dsq_repl *r, const char *db)
{
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    pthread_mutex_unlock(&r->mu);
    return d;
}

static rcopy *copy_of(rdb *d, size_t node)
{
    for (size_t i = 0; i < d->ncopies; i++)
        if (d->copies[i].node == node)
            return &d->copies[i];
    return NULL;
}

/* Something for the loop to send about d (caller holds r->mu). */
static void mark_due(dsq_repl *r, rdb *d)
{
    if (!d->on_due) {
        d->on_due = true;
        dsq_list_push(&r->due, &d->due);
    }
    if (r->started)
        uv_async_send(&r->async);
}

/* d's files are to go: it was taken out of its copy set (caller holds
 * r->mu; discards_due on the beat removes them). */
static void mark_discard(dsq_repl *r, rdb *d)
{
    if (!d->on_discard) {
        d->on_discard = true;
        dsq_list_push(&r->discards, &d->discarding);
    }
}

/* Copies of d that must hold a commit before its reply leaves (of its
 * copy set). */
static unsigned ack_needed(const dsq_repl *r, const rdb *d)
{
    return dsq_commit_ack_needed(r->cfg.ack, (unsigned)count_in(d, IN_SET));
}

/* Copies that must accept a new epoch so that they meet every set of
 * copies that could have acknowledged a commit. */
static unsigned accept_needed(const dsq_repl *r, const rdb *d)
{
    return (unsigned)count_in(d, IN_SET) - ack_needed(r, d) + 1;
}

/* The k-th highest of v[0..n) (k from 1). */
static uint64_t kth_highest(uint64_t *v, size_t n, size_t k)
{
    for (size_t i = 1; i < n; i++) /* insertion sort, highest first: a few copies */
        for (size_t j = i; j > 0 && v[j] > v[j - 1]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return k == 0 || k > n ? 0 : v[k - 1];
}

/* The LSN enough copies hold (caller holds r->mu). */
static uint64_t quorum(const dsq_repl *r, const rdb *d)
{
    if (r->cfg.ack == DSQ_ACK_LOCAL && d->self_copy < d->ncopies)
        return d->copies[d->self_copy].durable; /* (not a follower's, which may be ahead of it) */
    uint64_t v[DSQ_NODES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < d->ncopies; i++)
        if (d->copies[i].in & IN_SET)
            v[n++] = d->copies[i].durable;
    return kth_highest(v, n, ack_needed(r, d));
}

/* Whether the primary copy d may answer now: taken over long enough ago,
 * and enough followers' nodes acknowledged a heartbeat within the lease
 * (caller holds r->mu). */
static bool may_answer(const dsq_repl *r, const rdb *d, uint64_t now)
{
    if (d->role != DSQ_ROLE_PRIMARY)
        return true;
    if (now < d->serve_after_ms)
        return false;
    unsigned need = ack_needed(r, d) - 1; /* followers, the primary itself counted */
    if (need == 0)
        return true;
    uint64_t v[DSQ_NODES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < d->ncopies; i++)
        if (i != d->self_copy && (d->copies[i].in & IN_SET))
            v[n++] = r->beat_acked[d->copies[i].node];
    uint64_t t = kth_highest(v, n, need);
    return t != 0 && now < t + r->cfg.lease_ms;
}

/* Every database entry now (never freed before the object is): walked
 * without the lock, since what is sent may call back here. */
static rdb **entries(dsq_repl *r, size_t *n)
{
    pthread_mutex_lock(&r->mu);
    rdb **v = malloc((r->dbs.n ? r->dbs.n : 1) * sizeof *v);
    *n = 0;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; v != NULL && (h = dsq_htab_next(&r->dbs, &it)) != NULL;)
        v[(*n)++] = dsq_container_of(h, rdb, link);
    pthread_mutex_unlock(&r->mu);
    return v;
}

/* ---- the engine's hooks (any thread) ---------------------------------------------------------- */

static dsq_role h_role(void *ud, const char *db, char *primary, size_t len)
{
    dsq_repl *r = ud;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    dsq_role role = d ? d->role : DSQ_ROLE_ELSEWHERE;
    /* (A copy becoming the primary here, or resuming, has none to name.) */
    bool becoming = d != NULL && role == DSQ_ROLE_FOLLOWER && d->primary == r->cfg.self;
    snprintf(primary, len, "%s", d && !becoming ? node_id(r, d->primary) : "");
    pthread_mutex_unlock(&r->mu);
    return role;
}

static uint64_t h_released(void *ud, const char *db, uint64_t durable)
{
    dsq_repl *r = ud;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    uint64_t out = durable;
    if (d != NULL && d->self_copy < d->ncopies) {
        rcopy *me = &d->copies[d->self_copy];
        if (durable > me->durable) {
            me->durable = durable;
            if (d->role == DSQ_ROLE_FOLLOWER) {
                d->ack_due = true;
                mark_due(r, d);
            }
        }
        if (d->role == DSQ_ROLE_PRIMARY) {
            uint64_t q = quorum(r, d);
            if (q > d->commit) {
                d->commit = q;
                d->commit_due = true;
                mark_due(r, d);
            }
            out = d->commit;
        } else if (d->role == DSQ_ROLE_FOLLOWER) {
            out = durable < d->commit ? durable : d->commit;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return out;
}

static bool h_answering(void *ud, const char *db)
{
    dsq_repl *r = ud;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    bool ok = d == NULL || may_answer(r, d, dsq_now_ms());
    if (!ok && !d->on_held) { /* the beat timer pokes it once it may */
        d->on_held = true;
        dsq_list_push(&r->held, &d->held);
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static size_t h_copies(void *ud, const char *db, dsq_copy_stats *out, size_t max, uint64_t *epoch)
{
    dsq_repl *r = ud;
    size_t n = 0;
    uint64_t now = dsq_now_ms();
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    *epoch = d ? d->epoch : 0;
    for (size_t i = 0; d != NULL && i < d->ncopies && n < max; i++, n++) {
        const rcopy *c = &d->copies[i];
        bool primary_here = d->role == DSQ_ROLE_PRIMARY && i != d->self_copy;
        out[n] = (dsq_copy_stats){.primary = c->node == d->primary,
                                  .durable = c->durable,
                                  .applied = d->role == DSQ_ROLE_PRIMARY && i == d->self_copy ? d->appended : c->applied,
                                  .lag_lsn = primary_here && d->appended > c->durable ? d->appended - c->durable : 0,
                                  .lag_ms = primary_here && c->behind_since ? now - c->behind_since : 0};
        snprintf(out[n].node, sizeof out[n].node, "%s", node_id(r, c->node));
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

static uint64_t h_epoch(void *ud, const char *db)
{
    dsq_repl *r = ud;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    uint64_t epoch = d ? d->epoch : 0;
    pthread_mutex_unlock(&r->mu);
    return epoch;
}

static uint64_t h_epoch_end(void *ud, const char *db, uint64_t epoch)
{
    dsq_repl *r = ud;
    dsq_epoch_state st;
    dsq_epochs_get(r->cfg.epochs, db, &st);
    return dsq_epoch_end(&st, epoch ? epoch : 1, UINT64_MAX);
}

static void h_committed(void *ud, const char *db, uint64_t lsn, const void *rec, size_t len)
{
    dsq_repl *r = ud;
    recq_item *it = malloc(sizeof *it + len);
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    if (it != NULL && d != NULL) {
        it->d = d;
        it->lsn = lsn;
        it->len = len;
        memcpy(it->rec, rec, len);
        dsq_queue_push(&r->recq, &it->link);
        it = NULL;
        if (r->started)
            uv_async_send(&r->async);
    }
    pthread_mutex_unlock(&r->mu);
    free(it); /* (out of memory: the follower finds the gap and reads the log) */
}

/* ---- sending (loop thread) -------------------------------------------------------------------- */

/* A message about d: its name and this node's epoch of it, then `more`
 * (u64s), then `tail`. */
static void send_msg(dsq_repl *r, size_t node, uint8_t type, const rdb *d, const uint64_t *more, size_t nmore,
                     const void *tail, size_t tail_len)
{
    dsq_buf b = DSQ_BUF_INIT;
    int rc = dsq_w_str(&b, d->name) | dsq_w_u64(&b, d->epoch);
    for (size_t i = 0; i < nmore; i++)
        rc |= dsq_w_u64(&b, more[i]);
    if (rc == 0)
        dsq_peer_send(r->peers, node, type, b.data, b.len, tail, tail_len);
    dsq_buf_free(&b);
}

static uint64_t commit_of(dsq_repl *r, rdb *d)
{
    pthread_mutex_lock(&r->mu);
    uint64_t c = d->commit;
    pthread_mutex_unlock(&r->mu);
    return c;
}

static size_t count_records(const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (const uint8_t *e = p + n; p < e; k++) {
        uint64_t lsn;
        size_t len;
        if (dsq_log_record(p, (size_t)(e - p), &lsn, &len) != 0)
            break;
        p += len;
    }
    return k;
}

static void ship(dsq_repl *r, rdb *d, size_t node, const void *recs, size_t len, size_t nrecs)
{
    uint64_t commit = commit_of(r, d);
    send_msg(r, node, DSQ_REPL_SHIP, d, &commit, 1, recs, len);
    r->stats.records_shipped += nrecs;
    r->stats.bytes_shipped += len;
}

/* A history (epoch, start)s into a message. */
static int put_hist(dsq_buf *b, const dsq_epoch_state *s, uint64_t after)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nhist; i++)
        n += s->hist[i].start > after;
    int rc = dsq_w_u8(b, (uint8_t)n);
    for (size_t i = 0; i < s->nhist; i++)
        if (s->hist[i].start > after)
            rc |= dsq_w_u64(b, s->hist[i].epoch) | dsq_w_u64(b, s->hist[i].start);
    return rc;
}

static void get_hist(dsq_rd *rd, dsq_epoch_state *s)
{
    memset(s, 0, sizeof *s);
    size_t n = dsq_r_u8(rd);
    for (size_t i = 0; i < n && !rd->bad; i++) {
        uint64_t e = dsq_r_u64(rd), start = dsq_r_u64(rd);
        if (s->nhist < DSQ_EPOCH_HISTORY)
            s->hist[s->nhist++] = (dsq_epoch_hist){.epoch = e, .start = start};
    }
}

/* A copy set into a message: u64 its epoch, u8 n, n × str node id, u8
 * nprev, nprev × str node id. */
static int put_set(dsq_buf *b, const dsq_repl *r, const dsq_copyset *cs)
{
    int rc = dsq_w_u64(b, cs->epoch) | dsq_w_u8(b, (uint8_t)cs->n);
    for (size_t i = 0; i < cs->n; i++)
        rc |= dsq_w_str(b, node_id(r, cs->nodes[i]));
    rc |= dsq_w_u8(b, (uint8_t)cs->nprev);
    for (size_t i = 0; i < cs->nprev; i++)
        rc |= dsq_w_str(b, node_id(r, cs->prev[i]));
    return rc;
}

/* u8 n, n × str node id, into out[0..n) (node numbers); false when they
 * do not read or are more than DSQ_COPYSET_MAX. */
static bool get_ids(dsq_rd *rd, const dsq_repl *r, uint32_t *out, size_t *n)
{
    size_t k = dsq_r_u8(rd);
    for (*n = 0; *n < k && !rd->bad; (*n)++) {
        char id[DSQ_NODE_ID_MAX];
        dsq_r_str(rd, id, sizeof id);
        if (rd->bad || *n == DSQ_COPYSET_MAX || dsq_nodeset_intern(r->cfg.ids, id, &out[*n]) != 0)
            return false;
    }
    return !rd->bad;
}

/* One from a message: false when it has none (a node of an earlier
 * build) or it does not read. */
static bool get_set(dsq_rd *rd, const dsq_repl *r, dsq_copyset *cs)
{
    memset(cs, 0, sizeof *cs);
    if (dsq_rd_left(rd) == 0)
        return false;
    cs->epoch = dsq_r_u64(rd);
    return get_ids(rd, r, cs->nodes, &cs->n) && get_ids(rd, r, cs->prev, &cs->nprev) && cs->n > 0;
}

/* ---- the primary ------------------------------------------------------------------------------- */

/* Records committed since the last time: to each follower in step, one
 * message per database and follower. */
static void ship_committed(dsq_repl *r)
{
    pthread_mutex_lock(&r->mu);
    dsq_queue q = dsq_queue_take(&r->recq);
    pthread_mutex_unlock(&r->mu);
    dsq_buf batch = DSQ_BUF_INIT;
    dsq_qnode *n = dsq_queue_first(&q);
    while (n != NULL) {
        rdb *d = dsq_container_of(n, recq_item, link)->d;
        dsq_qnode *end = n; /* the run of records of this database */
        while (end != NULL && dsq_container_of(end, recq_item, link)->d == d)
            end = end->next;
        pthread_mutex_lock(&r->mu);
        for (dsq_qnode *x = n; x != end; x = x->next)
            d->appended = dsq_container_of(x, recq_item, link)->lsn;
        uint64_t now = dsq_now_ms();
        for (size_t i = 0; i < d->ncopies; i++)
            if (i != d->self_copy && d->copies[i].behind_since == 0 && d->copies[i].durable < d->appended)
                d->copies[i].behind_since = now;
        pthread_mutex_unlock(&r->mu);
        for (size_t i = 0; i < d->ncopies && d->role == DSQ_ROLE_PRIMARY; i++) {
            rcopy *c = &d->copies[i];
            if (i == d->self_copy)
                continue;
            if (!c->streaming) { /* it catches up from the log once it says where it is */
                if (!c->reading && !c->ready)
                    prompt(r, d, c);
                continue;
            }
            if (!dsq_peer_up(r->peers, c->node)) {
                c->streaming = c->ready = false;
                continue;
            }
            dsq_buf_reset(&batch);
            size_t nrecs = 0;
            for (dsq_qnode *x = n; x != end && c->streaming; x = x->next) {
                recq_item *it = dsq_container_of(x, recq_item, link);
                if (it->lsn <= c->sent)
                    continue;
                if (it->lsn != c->sent + 1 || dsq_buf_append(&batch, it->rec, it->len) != 0) {
                    c->streaming = false; /* a gap (a record lost on its way here): from the log */
                    break;
                }
                c->sent = it->lsn;
                nrecs++;
            }
            if (batch.len > 0)
                ship(r, d, c->node, batch.data, batch.len, nrecs);
            if (c->streaming && dsq_peer_queued(r->peers, c->node) > r->cfg.ship_limit)
                c->streaming = false; /* it reads the log once the link has room (on_writable) */
            else if (!c->streaming)
                read_log(r, d, c);
        }
        n = end;
    }
    dsq_buf_free(&batch);
    while ((n = dsq_queue_pop(&q)) != NULL)
        free(dsq_container_of(n, recq_item, link));
}

typedef struct log_read {
    dsq_call c;
    dsq_repl *r;
    rdb *d;
    uint32_t node;
    bool fetch;     /* for a candidate's FETCH (not a follower's catch-up) */
    uint64_t epoch; /* the epoch asked in */
} log_read;

static void log_read_done(dsq_call *call)
{
    log_read *lr = (log_read *)call;
    dsq_repl *r = lr->r;
    rdb *d = lr->d;
    r->stats.log_reads++;
    if (lr->fetch) {
        /* FETCHED: u8 more, records (an empty one with more = 0 on failure:
         * the candidate stops there). */
        if (dsq_peer_up(r->peers, lr->node) && d->epoch == lr->epoch) {
            uint8_t more = call->err == 0 && call->more;
            dsq_buf b = DSQ_BUF_INIT;
            if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, d->epoch) == 0 && dsq_w_u8(&b, more) == 0)
                dsq_peer_send(r->peers, lr->node, DSQ_REPL_FETCHED, b.data, b.len, call->err ? NULL : call->out.data,
                              call->err ? 0 : call->out.len);
            dsq_buf_free(&b);
        }
        dsq_call_reset(call);
        free(lr);
        return;
    }
    rcopy *c = copy_of(d, lr->node);
    if (c == NULL) { /* (it left the copy set meanwhile: a change) */
        dsq_call_reset(call);
        free(lr);
        return;
    }
    c->reading = false;
    if (call->err != 0 && call->code == DSQ_CODE_INVALID_LSN && call->lsn > call->as_of_lsn + 1) {
        /* The log no longer reaches back to where the follower's ends:
         * its copy is made again from the object store. */
        if (d->role == DSQ_ROLE_PRIMARY && c->ready && dsq_peer_up(r->peers, c->node) && d->epoch == lr->epoch) {
            c->ready = c->streaming = false;
            DSQ_WARN("replication_rebuild_asked", "db=%s follower=%s have=%llu first=%llu", d->name,
                     node_id(r, c->node), (unsigned long long)call->as_of_lsn, (unsigned long long)call->lsn);
            uint64_t v[1] = {call->lsn};
            send_msg(r, c->node, DSQ_REPL_REBUILD, d, v, 1, NULL, 0);
        }
    } else if (call->err != 0) {
        DSQ_ERROR("replication_read_failed", "db=%s follower=%s code=%s reason=%s", d->name,
                  node_id(r, c->node), dsq_code_name(call->code), dsq_log_q(call->msg));
    } else if (d->role == DSQ_ROLE_PRIMARY && c->ready && dsq_peer_up(r->peers, c->node) && call->lsn >= c->sent) {
        if (call->out.len > 0)
            ship(r, d, c->node, call->out.data, call->out.len, count_records((const uint8_t *)call->out.data,
                                                                             call->out.len));
        c->sent = call->lsn;
        if (!call->more)
            c->streaming = true; /* what comes next comes as it is committed */
        else if (dsq_peer_queued(r->peers, c->node) <= r->cfg.ship_limit)
            read_log(r, d, c);
    }
    dsq_call_reset(call);
    free(lr);
}

static int submit_log_read(dsq_repl *r, rdb *d, uint32_t node, uint64_t after, bool fetch)
{
    log_read *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return -1;
    *lr = (log_read){.r = r, .d = d, .node = node, .fetch = fetch, .epoch = d->epoch};
    lr->c.op = DSQ_OP_LOG_READ;
    lr->c.as_of_lsn = after;
    lr->c.chunk_rows = READ_CHUNK;
    lr->c.scope = DSQ_SCOPE_R;
    lr->c.done = log_read_done;
    if (dsq_engine_submit(r->engine, d->name, &lr->c) != 0) {
        DSQ_WARN("replication_read_refused", "db=%s reason=%s", d->name, dsq_log_q(lr->c.msg));
        free(lr);
        return -1;
    }
    return 0;
}

/* Send follower c of d what follows c->sent, from the primary's log. */
static void read_log(dsq_repl *r, rdb *d, rcopy *c)
{
    if (c->reading || !c->ready || !dsq_peer_up(r->peers, c->node))
        return;
    c->streaming = false;
    if (submit_log_read(r, d, c->node, c->sent, false) == 0)
        c->reading = true;
}

/* Ask follower c of d to say where its log ends (a COMMIT; it answers
 * with BEHIND), once per link. */
static void prompt(dsq_repl *r, rdb *d, rcopy *c)
{
    if (c->prompted || !dsq_peer_up(r->peers, c->node))
        return;
    c->prompted = true;
    uint64_t v[2] = {commit_of(r, d), d->appended};
    send_msg(r, c->node, DSQ_REPL_COMMIT, d, v, 2, NULL, 0);
}

/* BEHIND from follower c: where their logs agree, and this primary's
 * history past it (SYNC). */
static void on_behind(dsq_repl *r, rdb *d, rcopy *c, uint64_t have, uint64_t have_epoch)
{
    dsq_epoch_state st;
    dsq_epochs_get(r->cfg.epochs, d->name, &st);
    uint64_t end = dsq_epoch_end(&st, have_epoch, UINT64_MAX);
    uint64_t keep = have < end ? have : end;
    c->streaming = c->ready = c->reading = false;
    c->prompted = true;
    dsq_copyset cs;
    pthread_mutex_lock(&r->mu);
    c->durable = 0; /* counted again once it is in sync */
    cur_set(d, &cs);
    pthread_mutex_unlock(&r->mu);
    dsq_buf b = DSQ_BUF_INIT;
    /* (its copy set: a copy that missed the change, or its end, learns it here) */
    if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, d->epoch) == 0 && dsq_w_u64(&b, keep) == 0 &&
        put_hist(&b, &st, keep) == 0 && (cs.epoch == 0 || put_set(&b, r, &cs) == 0))
        dsq_peer_send(r->peers, c->node, DSQ_REPL_SYNC, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
}

/* READY from follower c: its log is this primary's up to `have`. */
static void on_ready(dsq_repl *r, rdb *d, rcopy *c, uint64_t have, uint64_t durable)
{
    if (c->ready && have <= c->sent)
        return; /* (said again: it has what was sent since) */
    c->ready = true;
    c->sent = have;
    pthread_mutex_lock(&r->mu);
    uint64_t agreed = durable < have ? durable : have;
    if (agreed > c->durable)
        c->durable = agreed;
    pthread_mutex_unlock(&r->mu);
    read_log(r, d, c);
    dsq_engine_repl_poke(r->engine, d->name); /* (released() works out the commit) */
}

/* ---- a follower -------------------------------------------------------------------------------- */

typedef struct apply {
    dsq_call c;
    dsq_repl *r;
    rdb *d;
    int kind;       /* APPLY_RECORDS, APPLY_PROBE (where the log ends), APPLY_CUT, APPLY_RESET,
                       APPLY_REBUILD */
    size_t len;
    uint8_t recs[];
} apply;

enum { APPLY_RECORDS, APPLY_PROBE, APPLY_CUT, APPLY_RESET, APPLY_REBUILD, APPLY_DISCARD };

static int submit_apply(dsq_repl *r, rdb *d, int kind, const void *recs, size_t len, uint64_t keep);
static void probe(dsq_repl *r, rdb *d);

/* This copy's log was cut back to `keep` (0: removed): its durable and
 * applied LSNs are no more than that (they only grow otherwise, and an
 * acknowledgement must never claim what went). */
static void forget_from(dsq_repl *r, rdb *d, uint64_t keep)
{
    if (d->self_copy == d->ncopies)
        return;
    pthread_mutex_lock(&r->mu);
    rcopy *me = &d->copies[d->self_copy];
    if (me->durable > keep)
        me->durable = keep;
    if (me->applied > keep)
        me->applied = keep;
    pthread_mutex_unlock(&r->mu);
}

static void settle_history(dsq_repl *r, rdb *d, uint64_t keep, const dsq_epoch_state *hist, size_t from);

static void apply_done(dsq_call *call)
{
    apply *a = (apply *)call;
    dsq_repl *r = a->r;
    rdb *d = a->d;
    if (a->kind == APPLY_PROBE)
        d->probing = false;
    else if (a->kind == APPLY_RECORDS)
        d->applies--;
    if (call->err == 0 || a->kind == APPLY_RECORDS) {
        pthread_mutex_lock(&r->mu);
        if (d->self_copy < d->ncopies && call->lsn > d->copies[d->self_copy].applied)
            d->copies[d->self_copy].applied = call->lsn;
        pthread_mutex_unlock(&r->mu);
    }
    switch (a->kind) {
    case APPLY_PROBE:
        if (d->reprobe) {
            d->reprobe = false;
            probe(r, d);
            break;
        }
        if (call->err != 0) {
            DSQ_WARN("replication_open_failed", "db=%s code=%s reason=%s", d->name, dsq_code_name(call->code),
                     dsq_log_q(call->msg));
            break;
        }
        d->expect = call->lsn + 1;
        d->pos_known = true;
        if (d->promo != NULL)
            promo_step(r, d);
        else if (d->accept_to != 0)
            send_at(r, d); /* (send_at answers the candidate) */
        else
            send_at(r, d);
        break;
    case APPLY_RECORDS:
        r->stats.applies++;
        if (call->err != 0) {
            DSQ_WARN("replication_apply_failed", "db=%s lsn=%llu code=%s reason=%s", d->name,
                     (unsigned long long)call->lsn, dsq_code_name(call->code), dsq_log_q(call->msg));
            d->expect = call->lsn + 1; /* it says where it is again */
            d->synced = false;
            d->at_sent = 0;
            send_at(r, d);
        } else if (d->promo != NULL) {
            d->expect = call->lsn + 1;
            promo_step(r, d);
        }
        break;
    case APPLY_DISCARD:
        d->settling = false;
        if (call->err != 0)
            DSQ_WARN("copy_discard_failed", "db=%s code=%s reason=%s", d->name, dsq_code_name(call->code),
                     dsq_log_q(call->msg));
        else
            DSQ_INFO("copy_discarded", "db=%s", d->name);
        break;
    case APPLY_RESET:
        d->settling = false;
        if (call->err != 0) {
            DSQ_ERROR("replication_reset_failed", "db=%s code=%s reason=%s", d->name, dsq_code_name(call->code),
                      dsq_log_q(call->msg));
            break;
        }
        /* Empty now: nothing of it is durable or applied any more (what
         * it acknowledged before is gone with it); it says so, and gets
         * everything from the primary. */
        forget_from(r, d, 0);
        d->pos_known = false;
        d->at_sent = 0;
        send_at(r, d);
        break;
    case APPLY_REBUILD:
        d->settling = false;
        d->rebuilding = false;
        /* Whatever it holds now was not counted: it says where it ends
         * and syncs from there (after a failure, it tries again once the
         * backoff is over). */
        forget_from(r, d, 0);
        d->pos_known = false;
        d->synced = false;
        d->at_sent = 0;
        if (call->err != 0) {
            d->rebuild_fails++;
            unsigned shift = d->rebuild_fails < 6 ? d->rebuild_fails - 1 : 5;
            uint64_t wait = (uint64_t)REBUILD_RETRY_MS << shift;
            d->rebuild_at = dsq_now_ms() + (wait < REBUILD_RETRY_MAX_MS ? wait : REBUILD_RETRY_MAX_MS);
            DSQ_WARN("replication_rebuild_failed", "db=%s attempt=%u code=%s reason=%s", d->name, d->rebuild_fails,
                     dsq_code_name(call->code), dsq_log_q(call->msg));
            /* Tried again from the beat once the backoff is over (nothing
             * else asks: the primary waits to hear where it is). */
            if (!d->on_rebuild) {
                d->on_rebuild = true;
                dsq_list_push(&r->rebuilds, &d->rebuild);
            }
            break;
        }
        d->rebuild_fails = 0;
        r->stats.rebuilds++;
        DSQ_INFO("replication_rebuilt", "db=%s lsn=%llu", d->name, (unsigned long long)call->lsn);
        send_at(r, d);
        break;
    case APPLY_CUT:
        d->settling = false;
        if (call->err != 0 && call->code == DSQ_CODE_INVALID_LSN && d->promo == NULL) {
            /* A checkpoint holds commits that must go: the copy is made
             * again, from the primary. */
            DSQ_WARN("replication_cut_failed", "db=%s keep=%llu action=reset reason=%s", d->name,
                     (unsigned long long)call->as_of_lsn, dsq_log_q(call->msg));
            submit_apply(r, d, APPLY_RESET, NULL, 0, 0);
            break;
        }
        if (call->err != 0) {
            DSQ_ERROR("replication_cut_failed", "db=%s keep=%llu code=%s reason=%s", d->name,
                      (unsigned long long)call->as_of_lsn, dsq_code_name(call->code), dsq_log_q(call->msg));
            break; /* it stays out of step */
        }
        r->stats.truncations++;
        forget_from(r, d, call->lsn); /* what went is neither durable nor applied here now */
        d->expect = call->lsn + 1;
        if (d->promo != NULL)
            promo_step(r, d);
        else
            send_at(r, d); /* again: the primary answers with the same point, nothing to cut now */
        break;
    }
    dsq_call_reset(call);
    free(a);
}

static int submit_apply(dsq_repl *r, rdb *d, int kind, const void *recs, size_t len, uint64_t keep)
{
    apply *a = calloc(1, sizeof *a + len);
    if (a == NULL)
        return -1;
    a->r = r;
    a->d = d;
    a->kind = kind;
    a->len = len;
    if (len > 0)
        memcpy(a->recs, recs, len);
    a->c.op = kind == APPLY_CUT       ? DSQ_OP_TRUNCATE
              : kind == APPLY_RESET || kind == APPLY_DISCARD ? DSQ_OP_RESET
              : kind == APPLY_REBUILD ? DSQ_OP_REBUILD
                                      : DSQ_OP_APPLY;
    a->c.as_of_lsn = keep;
    a->c.recs = a->recs;
    a->c.recs_len = len;
    a->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    a->c.done = apply_done;
    if (dsq_engine_submit(r->engine, d->name, &a->c) != 0) {
        free(a);
        return -1;
    }
    if (kind == APPLY_PROBE)
        d->probing = true;
    else if (kind == APPLY_RECORDS)
        d->applies++;
    else
        d->settling = true;
    return 0;
}

/* Learn where this copy's log ends (an empty APPLY answers with it). */
static void probe(dsq_repl *r, rdb *d)
{
    if (!d->probing)
        submit_apply(r, d, APPLY_PROBE, NULL, 0, 0);
}

/* The epoch of the record at lsn in this copy's log. */
static uint64_t epoch_at(dsq_repl *r, rdb *d, uint64_t lsn)
{
    dsq_epoch_state st;
    dsq_epochs_get(r->cfg.epochs, d->name, &st);
    return dsq_epoch_of(&st, lsn);
}

static void send_accept(dsq_repl *r, rdb *d);

/* Tell the primary where this copy's log ends (once per position), or
 * learn it first; or answer a candidate that waits for that. */
static void send_at(dsq_repl *r, rdb *d)
{
    if (!d->pos_known) {
        probe(r, d);
        return;
    }
    if (d->accept_to != 0) {
        send_accept(r, d);
        /* A primary that already serves this epoch (it sent a COMMIT or
         * records) waits to hear where this copy is too: its prompt may
         * have come while the answer to the candidate was pending. */
        if (d->accept_to != 0 || !d->primary_serving)
            return;
    }
    if (d->role != DSQ_ROLE_FOLLOWER || d->settling || d->accepting || d->at_sent == d->expect ||
        !dsq_peer_up(r->peers, d->primary))
        return;
    d->at_sent = d->expect;
    d->synced = false;
    pthread_mutex_lock(&r->mu);
    uint64_t durable = d->self_copy < d->ncopies ? d->copies[d->self_copy].durable : 0;
    pthread_mutex_unlock(&r->mu);
    uint64_t v[3] = {d->expect - 1, durable, epoch_at(r, d, d->expect - 1)};
    send_msg(r, d->primary, DSQ_REPL_BEHIND, d, v, 3, NULL, 0);
}

/* The primary's commit LSN grew: replies of reads here may go further. */
static void follow_commit(dsq_repl *r, rdb *d, uint64_t commit)
{
    pthread_mutex_lock(&r->mu);
    bool grew = commit > d->commit;
    if (grew)
        d->commit = commit;
    pthread_mutex_unlock(&r->mu);
    if (grew)
        dsq_engine_repl_poke(r->engine, d->name);
}

static void on_ship(dsq_repl *r, rdb *d, uint64_t commit, const uint8_t *recs, size_t len)
{
    follow_commit(r, d, commit);
    if (len == 0)
        return;
    uint64_t first;
    size_t first_len;
    if (dsq_log_record(recs, len, &first, &first_len) != 0) {
        DSQ_WARN("replication_bad_message", "db=%s reason=%s", d->name, dsq_log_q("a damaged record"));
        return;
    }
    if (!d->pos_known || !d->synced || first > d->expect) { /* it says where it is first */
        send_at(r, d);
        return;
    }
    uint64_t last = first; /* the last record's LSN */
    for (const uint8_t *p = recs, *e = recs + len; p < e;) {
        uint64_t lsn;
        size_t n;
        if (dsq_log_record(p, (size_t)(e - p), &lsn, &n) != 0)
            break;
        last = lsn;
        p += n;
    }
    if (last < d->expect)
        return; /* it has them all */
    if (submit_apply(r, d, APPLY_RECORDS, recs, len, d->expect - 1) != 0) {
        d->pos_known = false; /* (a full mailbox, memory): it starts again from its log's end */
        return;
    }
    d->expect = last + 1;
}

/* ---- a follower's copy made again from the object store ---- */

/* Start d's rebuild if it is still asked for and nothing else is under
 * way on its copy; it stays on r->rebuilds until then (on_beat tries
 * again). */
static void rebuild_try(dsq_repl *r, rdb *d)
{
    if (d->role != DSQ_ROLE_FOLLOWER || d->promo != NULL || d->epoch != d->rebuild_epoch) {
        dsq_list_remove(&r->rebuilds, &d->rebuild); /* (a new primary asks again if it must) */
        d->on_rebuild = false;
        return;
    }
    if (d->settling || d->probing || d->applies > 0 || d->accepting || dsq_now_ms() < d->rebuild_at)
        return;
    dsq_list_remove(&r->rebuilds, &d->rebuild);
    d->on_rebuild = false;
    DSQ_WARN("replication_rebuilding", "db=%s need=%llu", d->name, (unsigned long long)d->rebuild_need - 1);
    if (submit_apply(r, d, APPLY_REBUILD, NULL, 0, d->rebuild_need) == 0)
        d->rebuilding = true;
    else
        DSQ_ERROR("replication_rebuild_failed", "db=%s reason=%s", d->name, dsq_log_q("the engine refused the call"));
}

/* REBUILD from the primary: its log starts at `first`, after this copy's
 * end. */
static void on_rebuild(dsq_repl *r, rdb *d, uint64_t first)
{
    if (d->rebuilding)
        return; /* (asked again meanwhile: it says where it is once done) */
    d->rebuild_need = first;
    d->rebuild_epoch = d->epoch;
    if (!d->on_rebuild) {
        d->on_rebuild = true;
        dsq_list_push(&r->rebuilds, &d->rebuild);
    }
    rebuild_try(r, d);
}

static void rebuilds_due(dsq_repl *r)
{
    rdb *d, *next;
    dsq_list_foreach_safe(d, next, &r->rebuilds, rebuild)
        rebuild_try(r, d);
}

/* After a SYNC: the primary's history past `keep`, recorded one entry at
 * a time (from hist->hist[from]), then READY — to that primary, in that
 * epoch: a copy that accepted another meanwhile says where it is to the
 * new primary instead (it is in sync with nobody). */
typedef struct settle {
    dsq_repl *r;
    rdb *d;
    uint64_t keep;
    uint64_t epoch;         /* of the SYNC */
    uint32_t primary;       /* its sender */
    dsq_epoch_state hist;
    size_t next;
} settle;

static void settle_next(void *ud, int rc)
{
    settle *s = ud;
    dsq_repl *r = s->r;
    rdb *d = s->d;
    if (r->stopped) {
        d->settling = false;
        free(s);
        return;
    }
    if (rc != 0) {
        DSQ_ERROR("replication_epochs_failed", "db=%s reason=%s", d->name, dsq_log_q("cannot record the history"));
        d->settling = false;
        free(s);
        return;
    }
    if (s->next < s->hist.nhist) {
        dsq_epoch_hist h = s->hist.hist[s->next++];
        if (dsq_epochs_set(r->cfg.epochs, r->loop, d->name, h.epoch, s->primary, h.start, settle_next, s) != 0)
            settle_next(s, -1);
        return;
    }
    d->settling = false;
    if (d->promo != NULL) {
        free(s);
        promo_step(r, d);
        return;
    }
    if (d->epoch != s->epoch || d->primary != s->primary) {
        free(s);
        d->at_sent = 0;
        send_at(r, d);
        return;
    }
    if (d->role == DSQ_ROLE_FOLLOWER && dsq_peer_up(r->peers, d->primary)) {
        d->synced = true;
        d->at_sent = d->expect;
        pthread_mutex_lock(&r->mu);
        uint64_t durable = d->self_copy < d->ncopies ? d->copies[d->self_copy].durable : 0;
        pthread_mutex_unlock(&r->mu);
        uint64_t v[2] = {d->expect - 1, durable < d->expect - 1 ? durable : d->expect - 1};
        send_msg(r, d->primary, DSQ_REPL_READY, d, v, 2, NULL, 0);
        /* And how far its log is durable from now on, as it grows (an
         * acknowledgement held while it was out of sync goes now). */
        pthread_mutex_lock(&r->mu);
        if (d->ack_due)
            mark_due(r, d);
        pthread_mutex_unlock(&r->mu);
    }
    free(s);
}

static void settle_history(dsq_repl *r, rdb *d, uint64_t keep, const dsq_epoch_state *hist, size_t from)
{
    settle *s = calloc(1, sizeof *s);
    if (s == NULL)
        return;
    *s = (settle){.r = r, .d = d, .keep = keep, .epoch = d->epoch, .primary = d->primary, .hist = *hist, .next = from};
    d->settling = true;
    settle_next(s, 0);
}

static void on_sync(dsq_repl *r, rdb *d, uint64_t keep, const dsq_epoch_state *hist)
{
    if (!d->pos_known || d->settling || d->applies > 0) {
        d->at_sent = 0; /* it asks again once it knows */
        send_at(r, d);
        return;
    }
    if (keep + 1 < d->expect) { /* its records after keep were never acknowledged: they go */
        DSQ_WARN("replication_diverged", "db=%s epoch=%llu keep=%llu had=%llu", d->name,
                 (unsigned long long)d->epoch, (unsigned long long)keep, (unsigned long long)d->expect - 1);
        d->at_sent = 0;
        submit_apply(r, d, APPLY_CUT, NULL, 0, keep);
        return;
    }
    /* Only the entries it does not hold. */
    dsq_epoch_state mine;
    dsq_epochs_get(r->cfg.epochs, d->name, &mine);
    dsq_epoch_state todo = {0};
    for (size_t i = 0; i < hist->nhist; i++) {
        bool have = false;
        for (size_t j = 0; j < mine.nhist; j++)
            have = have || (mine.hist[j].epoch == hist->hist[i].epoch && mine.hist[j].start == hist->hist[i].start);
        if (!have)
            todo.hist[todo.nhist++] = hist->hist[i];
    }
    settle_history(r, d, keep, &todo, 0);
}

/* ---- epochs: accepting one, fencing, stepping down ------------------------------------------- */

/* A copy set newer than d's, heard of (its primary's SYNC, a copy's
 * answer, a proposal): taken (a node being added here stays one while
 * the set does not name it), and recorded with this copy's epoch when
 * `record`. Loop thread. */
static bool adopt_set(dsq_repl *r, rdb *d, const dsq_copyset *cs, bool record)
{
    pthread_mutex_lock(&r->mu);
    dsq_copyset mine;
    cur_set(d, &mine);
    bool newer = dsq_copyset_newer(cs, &mine);
    uint32_t learner = DSQ_NODE_NONE;
    for (size_t i = 0; i < d->ncopies; i++)
        if (d->copies[i].in == IN_LEARNER)
            learner = d->copies[i].node;
    if (newer && set_copies(r, d, cs, learner) != 0)
        newer = false;
    uint64_t epoch = d->epoch;
    uint32_t primary = d->primary;
    pthread_mutex_unlock(&r->mu);
    if (!newer)
        return false;
    DSQ_INFO("copies_changed", "db=%s set_epoch=%llu copies=%zu joint=%s here=%s", d->name,
             (unsigned long long)cs->epoch, cs->n, cs->nprev ? "yes" : "no",
             d->self_copy == d->ncopies ? "no" : (d->copies[d->self_copy].in & IN_SET) ? "yes" : "leaving");
    if (record)
        dsq_epochs_set_copies(r->cfg.epochs, r->loop, d->name, epoch, primary, 0, cs, NULL, NULL);
    return true;
}

/* This copy now follows `primary` in `epoch` (in memory at once: refusing
 * the older epoch early is always safe); if it was the primary, the
 * replies still waiting for other copies fail, pointing at the new one. */
static void follow(dsq_repl *r, rdb *d, uint64_t epoch, uint32_t primary)
{
    pthread_mutex_lock(&r->mu);
    bool was_primary = d->role == DSQ_ROLE_PRIMARY;
    uint32_t old = d->primary;
    d->epoch = epoch;
    d->primary = primary;
    d->role = role_of(r, d);
    if (d->role == DSQ_ROLE_PRIMARY)
        d->role = DSQ_ROLE_FOLLOWER; /* (a copy is made primary by its promotion only: promo_started) */
    if (primary != r->cfg.self)
        d->resuming = false; /* (another primary took over meanwhile: it follows that one) */
    if (was_primary)
        for (size_t i = 0; i < d->ncopies; i++)
            if (i != d->self_copy)
                d->copies[i].durable = 0;
    pthread_mutex_unlock(&r->mu);
    if (epoch > d->max_seen)
        d->max_seen = epoch;
    if (d->chg != NULL && !d->chg->promoting)
        change_end(r, d, -1, 0, 0, "this node is no longer the primary");
    d->synced = false;
    d->primary_serving = false;
    d->at_sent = 0;
    for (size_t i = 0; i < d->ncopies; i++)
        d->copies[i].streaming = d->copies[i].ready = d->copies[i].prompted = false;
    if (was_primary) {
        /* `expect` is where its log ended when it last followed or was
         * promoted; it committed past that since: learn the end again
         * before saying where it is (else the new primary would take a
         * log that holds commits of its own for one in step). */
        d->pos_known = false;
        d->reprobe = d->probing;
        r->stats.step_downs++;
        char msg[400];
        snprintf(msg, sizeof msg,
                 "this node is no longer the primary of database %s: node %s is (epoch %llu); the commit was not "
                 "acknowledged here, and whether it survives is not known (read it back from the new primary)",
                 d->name, node_id(r, primary), (unsigned long long)epoch);
        DSQ_WARN("replication_step_down", "db=%s epoch=%llu primary=%s", d->name, (unsigned long long)epoch,
                 node_id(r, primary));
        dsq_engine_repl_abandon(r->engine, d->name, DSQ_CODE_NOT_PRIMARY, msg);
    }
    /* The former primary learns it was replaced before this node
     * acknowledges another of its heartbeats (the lease). */
    if (old != primary && old != r->cfg.self && dsq_peer_up(r->peers, old)) {
        dsq_buf b = DSQ_BUF_INIT;
        if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, epoch) == 0 && dsq_w_str(&b, node_id(r, primary)) == 0)
            dsq_peer_send(r->peers, old, DSQ_REPL_FENCED, b.data, b.len, NULL, 0);
        dsq_buf_free(&b);
    }
}

/* A database's entry, for a callback. */
typedef struct db_ctx {
    dsq_repl *r;
    rdb *d;
} db_ctx;

static void accepted(void *ud, int rc)
{
    db_ctx *a = ud;
    dsq_repl *r = a->r;
    rdb *d = a->d;
    free(a);
    d->accepting--;
    if (r->stopped)
        return;
    if (rc != 0) {
        DSQ_ERROR("replication_epochs_failed", "db=%s reason=%s", d->name, dsq_log_q("cannot record the epoch"));
        d->accept_to = 0;
        return;
    }
    send_at(r, d); /* answers the candidate, or says where it is to the new primary */
}

/* Accept `epoch` with `primary` (recorded durably before anything is
 * said of it). */
static void accept_epoch(dsq_repl *r, rdb *d, uint64_t epoch, uint32_t primary)
{
    DSQ_INFO("epoch_accepted", "db=%s epoch=%llu primary=%s", d->name, (unsigned long long)epoch,
             node_id(r, primary));
    follow(r, d, epoch, primary);
    db_ctx *a = calloc(1, sizeof *a);
    if (a == NULL)
        return;
    a->r = r;
    a->d = d;
    d->accepting++;
    dsq_copyset cs;
    pthread_mutex_lock(&r->mu);
    cur_set(d, &cs);
    pthread_mutex_unlock(&r->mu);
    if (dsq_epochs_set_copies(r->cfg.epochs, r->loop, d->name, epoch, primary, 0, cs.epoch ? &cs : NULL, accepted,
                              a) != 0) {
        d->accepting--;
        free(a);
    }
}

/* How long (ms) since this node last acknowledged a heartbeat of each of
 * d's copies' nodes: an older primary answers only while one of the
 * copies that could make up its lease still acknowledges it (may_answer);
 * a candidate told this by enough copies waits only for what is left of
 * such a lease (promo_lease_wait), not a whole one. */
static uint64_t quiet_ms(const dsq_repl *r, size_t node, uint64_t now)
{
    uint64_t t = r->beat_answered[node];
    return t == 0 ? UINT64_MAX : now > t ? now - t : 0;
}

/* The ACCEPT's last part: u8 n, then n × (str node id, u64 quiet ms). */
static int put_quiet(const dsq_repl *r, const rdb *d, dsq_buf *b)
{
    uint64_t now = dsq_now_ms();
    int rc = dsq_w_u8(b, (uint8_t)d->ncopies);
    for (size_t i = 0; i < d->ncopies; i++)
        rc |= dsq_w_str(b, node_id(r, d->copies[i].node)) | dsq_w_u64(b, quiet_ms(r, d->copies[i].node, now));
    return rc;
}

/* An ACCEPT's quiet times into q (by copy; a copy it did not name:
 * 0, not quiet); *has false when it sent none (a node of an earlier
 * build) or they do not read. */
static void get_quiet(const dsq_repl *r, const rdb *d, dsq_rd *rd, uint64_t *q, bool *has)
{
    *has = false;
    for (size_t i = 0; i < d->ncopies && i < QUIET_MAX; i++)
        q[i] = 0;
    if (dsq_rd_left(rd) == 0)
        return;
    size_t n = dsq_r_u8(rd);
    for (size_t k = 0; k < n && !rd->bad; k++) {
        char id[DSQ_NODE_ID_MAX];
        dsq_r_str(rd, id, sizeof id);
        uint64_t v = dsq_r_u64(rd);
        uint32_t node = dsq_nodeset_find(r->cfg.ids, id);
        for (size_t i = 0; i < d->ncopies && i < QUIET_MAX; i++)
            if (d->copies[i].node == node)
                q[i] = v;
    }
    *has = !rd->bad;
}

/* ACCEPT to the candidate: where this copy's log ends and its history. */
static void send_accept(dsq_repl *r, rdb *d)
{
    uint32_t to = d->accept_to - 1;
    if (d->accepting || !d->pos_known)
        return;
    d->accept_to = 0;
    dsq_epoch_state st;
    dsq_epochs_get(r->cfg.epochs, d->name, &st);
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, d->epoch) == 0 && dsq_w_u8(&b, 1) == 0 &&
        dsq_w_u64(&b, d->expect - 1) == 0 && put_hist(&b, &st, 0) == 0 && put_quiet(r, d, &b) == 0)
        dsq_peer_send(r->peers, to, DSQ_REPL_ACCEPT, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
}

static void set_recorded(void *ud, int rc)
{
    db_ctx *x = ud;
    dsq_repl *r = x->r;
    rdb *d = x->d;
    free(x);
    d->settling = false;
    if (r->stopped)
        return;
    if (rc != 0)
        DSQ_ERROR("replication_epochs_failed", "db=%s reason=%s", d->name, dsq_log_q("cannot record the copy set"));
    d->at_sent = 0;
    send_at(r, d);
}

/* adopt_set, recorded with this copy's epoch; true when it was newer
 * (then d settles until the record is durable, and says where it is
 * after). */
static bool adopt_set_recorded(dsq_repl *r, rdb *d, const dsq_copyset *cs)
{
    if (!adopt_set(r, d, cs, false))
        return false;
    db_ctx *x = malloc(sizeof *x);
    if (x != NULL) {
        *x = (db_ctx){.r = r, .d = d};
        d->settling = true;
        if (dsq_epochs_set_copies(r->cfg.epochs, r->loop, d->name, d->epoch, d->primary, 0, cs, set_recorded, x) !=
            0) {
            d->settling = false;
            free(x);
        }
    }
    return true;
}

/* FORGET from the primary this node was a learner of: the change that
 * was adding it ended without it. It is no copy (its files go). */
static void on_forget(dsq_repl *r, rdb *d, size_t node)
{
    pthread_mutex_lock(&r->mu);
    bool learner = d->self_copy < d->ncopies && d->copies[d->self_copy].in == IN_LEARNER && node == d->primary;
    if (learner) {
        dsq_copyset cs;
        cur_set(d, &cs);
        set_copies(r, d, &cs, DSQ_NODE_NONE);
        mark_discard(r, d);
    }
    pthread_mutex_unlock(&r->mu);
    if (learner)
        DSQ_INFO("copy_learning_ended", "db=%s", d->name);
}

/* ACCEPT, not ok: the higher epoch this copy accepted, and its copy set. */
static void refuse(dsq_repl *r, rdb *d, size_t node)
{
    dsq_copyset cs;
    pthread_mutex_lock(&r->mu);
    cur_set(d, &cs);
    pthread_mutex_unlock(&r->mu);
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, d->epoch) == 0 && dsq_w_u8(&b, 0) == 0 &&
        put_set(&b, r, &cs) == 0)
        dsq_peer_send(r->peers, node, DSQ_REPL_ACCEPT, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
}

static void on_propose(dsq_repl *r, rdb *d, size_t node, uint64_t epoch, dsq_rd *rd)
{
    /* A node that holds no copy (never did, or was taken out and its files
     * removed) takes no part: a set that names it is one it left. A node
     * being added (a learner) does, once a change names it. */
    if (d->self_copy == d->ncopies)
        return;
    /* The copy set the candidate proposes in: one older than this copy's
     * is refused (the candidate learns the newer one from the answer);
     * one newer is taken with the epoch. The candidate must be in it, and
     * this node too, to take part. */
    dsq_copyset ps, mine;
    pthread_mutex_lock(&r->mu);
    cur_set(d, &mine);
    pthread_mutex_unlock(&r->mu);
    if (!get_set(rd, r, &ps))
        ps = mine; /* (a node of an earlier build: the set it knows is the placement's) */
    bool voter = cs_has(ps.nodes, ps.n, (uint32_t)r->cfg.self) || cs_has(ps.prev, ps.nprev, (uint32_t)r->cfg.self);
    if (!voter || !(cs_has(ps.nodes, ps.n, (uint32_t)node) || cs_has(ps.prev, ps.nprev, (uint32_t)node)))
        return;
    if (dsq_copyset_newer(&mine, &ps)) {
        refuse(r, d, node);
        return;
    }
    if (epoch > d->epoch && dsq_copyset_newer(&ps, &mine))
        adopt_set(r, d, &ps, false); /* (recorded with the epoch, below) */
    if (d->self_copy == d->ncopies || copy_of(d, node) == NULL)
        return;
    if (epoch == d->epoch && d->primary == node) {
        /* Asked again (the answer may have been lost with a link), or
         * asked while it records the epoch it learned another way (the
         * candidate's FENCED to the primary it replaces): the same
         * answer, once the epoch is recorded (send_accept waits). */
        d->accept_to = (uint32_t)node + 1;
        send_at(r, d);
        return;
    }
    if (epoch <= d->epoch) {
        refuse(r, d, node); /* it names the higher epoch it accepted */
        return;
    }
    if (d->promo != NULL)
        promo_fail(r, d, "node %s proposed a higher epoch (%llu)", node_id(r, node), (unsigned long long)epoch);
    d->accept_to = (uint32_t)node + 1;
    accept_epoch(r, d, epoch, (uint32_t)node);
    if (!d->pos_known)
        probe(r, d);
}

static void on_fenced(dsq_repl *r, rdb *d, uint64_t epoch, const char *primary_id)
{
    uint32_t p;
    if (d->self_copy == d->ncopies || dsq_nodeset_intern(r->cfg.ids, primary_id, &p) != 0 || epoch <= d->epoch)
        return;
    if (d->promo != NULL)
        promo_fail(r, d, "node %s is the primary of a higher epoch (%llu)", primary_id, (unsigned long long)epoch);
    accept_epoch(r, d, epoch, p);
}

/* A message in an epoch other than this copy's. True when it was dealt
 * with (and must go no further). */
static bool other_epoch(dsq_repl *r, rdb *d, size_t node, uint8_t type, uint64_t epoch)
{
    if (epoch == d->epoch)
        return false;
    bool from_primary = type == DSQ_REPL_SHIP || type == DSQ_REPL_COMMIT || type == DSQ_REPL_SYNC;
    if (epoch < d->epoch) {
        if (from_primary && d->self_copy < d->ncopies) { /* a former primary: it is told */
            dsq_buf b = DSQ_BUF_INIT;
            if (dsq_w_str(&b, d->name) == 0 && dsq_w_u64(&b, d->epoch) == 0 &&
                dsq_w_str(&b, node_id(r, d->primary)) == 0)
                dsq_peer_send(r->peers, node, DSQ_REPL_FENCED, b.data, b.len, NULL, 0);
            dsq_buf_free(&b);
        }
        return true;
    }
    /* A higher epoch: only a primary that a quorum accepted sends in it. */
    if (from_primary && d->self_copy < d->ncopies && copy_of(d, node) != NULL && !d->accepting) {
        if (d->promo != NULL)
            promo_fail(r, d, "node %s is the primary of a higher epoch (%llu)", node_id(r, node),
                       (unsigned long long)epoch);
        accept_epoch(r, d, epoch, (uint32_t)node);
    }
    if (epoch > d->max_seen)
        d->max_seen = epoch;
    return true;
}

/* ---- promotion ------------------------------------------------------------------------------- */

typedef enum { P_PROPOSING, P_CUTTING, P_FETCHING, P_HISTORY, P_STARTING, P_DONE } promo_phase;

typedef struct promo {
    dsq_repl *r;
    rdb *d;
    uint64_t epoch;
    promo_phase phase;
    dsq_promote_fn done;
    void *ud;
    uv_timer_t timer;
    bool self_accepted;
    bool resume;            /* this node was the primary of the epoch before, in a run that crashed */
    bool was_primary;       /* ... or in this run (a change of the copy set) */
    uint64_t prev_epoch;    /* with was_primary: the epoch it was the primary of */
    dsq_copyset set;        /* the copy set it proposes (with prev: a quorum of both) */
    struct {
        bool ok;
        uint64_t last;
        dsq_epoch_state hist;
        bool has_quiet;     /* it said how long each copy's node has been quiet to it */
        uint64_t quiet[QUIET_MAX]; /* by copy (d->copies' order) */
    } from[DSQ_NODES_MAX];  /* by node */
    size_t naccepted;       /* others */
    uint32_t best;          /* the copy with the longest log */
    uint64_t best_last;
    dsq_epoch_state best_hist;
    uint64_t common;        /* this copy's log agrees with best's up to here */
    unsigned writes;        /* its records of epochs under way (each calls back with it) */
    bool closed;            /* ended, its timer closed: it goes once no record is under way */
} promo;

static void promo_release(promo *p)
{
    if (p->closed && p->writes == 0)
        free(p);
}

static void promo_closed(uv_handle_t *h)
{
    promo *p = h->data;
    p->closed = true;
    promo_release(p);
}

/* Record an epoch's entry for promotion p; cb gets p back (promo_back
 * first). 0, or -1: not started. */
static int promo_record(promo *p, uint64_t epoch, uint32_t primary, uint64_t start, const dsq_copyset *set,
                        void (*cb)(void *, int))
{
    p->writes++;
    if (dsq_epochs_set_copies(p->r->cfg.epochs, p->r->loop, p->d->name, epoch, primary, start, set, cb, p) == 0)
        return 0;
    p->writes--;
    return -1;
}

/* One of p's records is done: true when p is still the promotion under
 * way; false when it ended meanwhile (and may be gone now). */
static bool promo_back(promo *p)
{
    p->writes--;
    if (p->d->promo == p)
        return true;
    promo_release(p);
    return false;
}

static void promo_end(dsq_repl *r, rdb *d, int rc, const char *msg)
{
    promo *p = d->promo;
    d->promo = NULL;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, promo_closed);
    if (rc == 0)
        r->stats.promotions++;
    if (p->done != NULL)
        p->done(p->ud, rc, p->epoch, d->expect - 1, msg);
}

static void promo_fail(dsq_repl *r, rdb *d, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    DSQ_WARN("promotion_failed", "db=%s epoch=%llu reason=%s", d->name, (unsigned long long)d->promo->epoch,
             dsq_log_q(msg));
    promo_end(r, d, -1, msg);
}

static void on_promo_timeout(uv_timer_t *t)
{
    promo *p = t->data;
    unsigned need = accept_needed(p->r, p->d);
    promo_fail(p->r, p->d,
               "only %zu of the %zu copies accepted epoch %llu within cluster.promote_timeout (%u needed: the others "
               "must be reachable)",
               p->naccepted + p->self_accepted, p->d->ncopies, (unsigned long long)p->epoch, need);
}

static void promo_self_accepted(void *ud, int rc)
{
    promo *p = ud;
    rdb *d = p->d;
    d->accepting--;
    if (!promo_back(p))
        return; /* (it failed meanwhile) */
    if (rc != 0) {
        promo_fail(p->r, d, "this node cannot record the epoch on its disk");
        return;
    }
    p->self_accepted = true;
    promo_step(p->r, d);
}

/* How long the new primary waits before it answers (loop thread): the
 * whole lease, unless every copy that accepted said how long each copy's
 * node has been quiet to it. Then, for each copy that did not accept
 * (only such a one can still answer as an older primary: one that
 * accepted has stepped down), what is left of the lease the most recent
 * acknowledgement of its heartbeats by an acceptor (this node included)
 * could give it; a copy no acceptor heard from within a lease gives none.
 * A primary that died long enough ago costs no wait at all. */
static uint64_t promo_lease_wait(const dsq_repl *r, const rdb *d, const promo *p)
{
    uint64_t lease = r->cfg.lease_ms, now = dsq_now_ms(), wait = 0;
    if (d->ncopies > QUIET_MAX)
        return lease;
    for (size_t n = 0; n < DSQ_NODES_MAX; n++)
        if (p->from[n].ok && !p->from[n].has_quiet)
            return lease;
    for (size_t i = 0; i < d->ncopies; i++) {
        uint32_t node = d->copies[i].node;
        if (node == r->cfg.self || p->from[node].ok)
            continue;
        uint64_t recent = quiet_ms(r, node, now); /* this node's own */
        for (size_t n = 0; n < DSQ_NODES_MAX; n++)
            if (p->from[n].ok && p->from[n].quiet[i] < recent)
                recent = p->from[n].quiet[i];
        uint64_t left = recent < lease ? lease - recent : 0;
        if (left > wait)
            wait = left;
    }
    return wait;
}

static void promo_started(void *ud, int rc)
{
    promo *p = ud;
    dsq_repl *r = p->r;
    rdb *d = p->d;
    if (!promo_back(p))
        return;
    if (rc != 0) {
        promo_fail(r, d, "this node cannot record the epoch's start on its disk");
        return;
    }
    /* Primary from now on; it answers once the former primary's lease is
     * surely over. */
    pthread_mutex_lock(&r->mu);
    /* Resumed: the primary it replaces is this node's run that crashed
     * (the data directory's lock says it is gone); older primaries were
     * waited out when that one took over, and a newer one would have
     * refused this epoch through the copies that accepted it. A change by
     * the primary in the epoch right after its own has none to wait out
     * either: no epoch lies between, and an older one's primary was
     * waited out when this one took over. Otherwise (an epoch was skipped:
     * another node proposed one meanwhile) it waits as any promotion, over
     * the old set and the new. */
    uint64_t wait = (p->resume && d->resuming) || (p->was_primary && p->epoch == p->prev_epoch + 1)
                        ? 0
                        : promo_lease_wait(r, d, p);
    if (p->set.epoch != 0) {
        dsq_copyset final = p->set;
        final.nprev = 0;
        set_copies(r, d, &final, DSQ_NODE_NONE); /* (the set it replaced leaves: it is established) */
    }
    d->role = DSQ_ROLE_PRIMARY;
    d->primary = (uint32_t)r->cfg.self;
    d->resuming = false;
    d->serve_after_ms = dsq_now_ms() + wait;
    d->commit = 0;
    for (size_t i = 0; i < d->ncopies; i++)
        if (i != d->self_copy)
            d->copies[i].durable = d->copies[i].behind_since = 0;
    d->appended = d->expect - 1;
    pthread_mutex_unlock(&r->mu);
    d->commit_told = 0;
    for (size_t i = 0; i < d->ncopies; i++) {
        rcopy *c = &d->copies[i];
        c->streaming = c->ready = c->reading = c->prompted = false;
        if (i != d->self_copy)
            prompt(r, d, c);
    }
    DSQ_INFO("promoted", "db=%s epoch=%llu lsn=%llu lease_wait_ms=%llu", d->name, (unsigned long long)p->epoch,
             (unsigned long long)d->expect - 1, (unsigned long long)wait);
    p->phase = P_DONE;
    promo_end(r, d, 0, NULL);
    dsq_engine_repl_poke(r->engine, d->name);
}

static void promo_history_done(void *ud, int rc);


/* The history of best's log past `common`, recorded one entry at a time,
 * then the start of the new epoch. */
static void promo_history_next(promo *p)
{
    rdb *d = p->d;
    dsq_repl *r = p->r;
    for (size_t i = 0; i < p->best_hist.nhist; i++) {
        dsq_epoch_hist h = p->best_hist.hist[i];
        if (h.start <= p->common)
            continue;
        p->best_hist.hist[i].start = 0; /* done after this */
        if (promo_record(p, h.epoch, (uint32_t)p->best, h.start, NULL, promo_history_done) != 0)
            promo_fail(r, d, "this node cannot record the history on its disk");
        return;
    }
    p->phase = P_STARTING;
    /* A change's set is established now (both quorums accepted): recorded
     * without the set it replaced. */
    dsq_copyset final = p->set;
    final.nprev = 0;
    if (promo_record(p, p->epoch, (uint32_t)r->cfg.self, d->expect, final.epoch ? &final : NULL, promo_started) != 0)
        promo_fail(r, d, "this node cannot record the epoch's start on its disk");
}

static void promo_history_done(void *ud, int rc)
{
    promo *p = ud;
    if (!promo_back(p))
        return;
    if (rc != 0) {
        promo_fail(p->r, p->d, "this node cannot record the history on its disk");
        return;
    }
    promo_history_next(p);
}

/* Whether enough copies accepted p's epoch: of its copy set, so many that
 * they meet every set that could acknowledge a commit; and while the set
 * replaces another (a change not established), of that one as many as
 * acknowledge a commit, so that a candidate that knows only the set
 * before meets one that took the new one (and is refused). */
static bool promo_quorum(const dsq_repl *r, const promo *p)
{
    size_t in_set = 0, in_prev = 0;
    for (size_t i = 0; i < p->set.n; i++) {
        uint32_t n = p->set.nodes[i];
        in_set += n == r->cfg.self ? p->self_accepted : p->from[n].ok;
    }
    for (size_t i = 0; i < p->set.nprev; i++) {
        uint32_t n = p->set.prev[i];
        in_prev += n == r->cfg.self ? p->self_accepted : p->from[n].ok;
    }
    unsigned ack = dsq_commit_ack_needed(r->cfg.ack, (unsigned)p->set.n);
    if (in_set < p->set.n - ack + 1)
        return false;
    return p->set.nprev == 0 || in_prev >= dsq_commit_ack_needed(r->cfg.ack, (unsigned)p->set.nprev);
}

/* PROPOSE to `node`, with the set proposed. */
static void send_propose(dsq_repl *r, rdb *d, size_t node)
{
    dsq_buf b = DSQ_BUF_INIT;
    if (put_set(&b, r, &d->promo->set) == 0)
        send_msg(r, node, DSQ_REPL_PROPOSE, d, NULL, 0, b.data, b.len);
    dsq_buf_free(&b);
}

/* The next step of a promotion, from what it knows now. */
static void promo_step(dsq_repl *r, rdb *d)
{
    promo *p = d->promo;
    if (p == NULL || d->settling || d->applies > 0 || d->probing)
        return;
    if (!d->pos_known) {
        probe(r, d);
        return;
    }
    switch (p->phase) {
    case P_PROPOSING: {
        if (!p->self_accepted || !promo_quorum(r, p))
            return;
        /* The longest log among those that accepted: by the epoch of its
         * last record, then its length. */
        dsq_epoch_state mine;
        dsq_epochs_get(r->cfg.epochs, d->name, &mine);
        uint64_t my_last = d->expect - 1;
        p->best = (uint32_t)r->cfg.self;
        p->best_last = my_last;
        p->best_hist = mine;
        uint64_t best_epoch = dsq_epoch_of(&mine, my_last);
        for (size_t n = 0; n < dsq_nodeset_count(r->cfg.ids); n++) {
            if (!p->from[n].ok)
                continue;
            uint64_t e = dsq_epoch_of(&p->from[n].hist, p->from[n].last);
            if (e > best_epoch || (e == best_epoch && p->from[n].last > p->best_last)) {
                p->best = (uint32_t)n;
                p->best_last = p->from[n].last;
                p->best_hist = p->from[n].hist;
                best_epoch = e;
            }
        }
        if (p->best == r->cfg.self) {
            p->common = my_last;
            p->phase = P_HISTORY;
            promo_history_next(p);
            return;
        }
        /* Its own log agrees with best's up to the end of its last record's
         * epoch in best's history; what follows goes. */
        uint64_t end = dsq_epoch_end(&p->best_hist, dsq_epoch_of(&mine, my_last), p->best_last);
        p->common = my_last < end ? my_last : end;
        DSQ_INFO("promotion_catching_up", "db=%s epoch=%llu from=%s lsn=%llu upto=%llu", d->name,
                 (unsigned long long)p->epoch, node_id(r, p->best), (unsigned long long)p->common,
                 (unsigned long long)p->best_last);
        if (my_last > p->common) {
            p->phase = P_CUTTING;
            if (submit_apply(r, d, APPLY_CUT, NULL, 0, p->common) != 0)
                promo_fail(r, d, "cannot cut this node's log back");
            return;
        }
        p->phase = P_FETCHING;
    }
    /* fallthrough */
    case P_CUTTING:
        if (p->phase == P_CUTTING) {
            if (d->expect - 1 > p->common) {
                promo_fail(r, d, "this node's log holds commits after LSN %llu that a checkpoint keeps; its copy "
                                 "must be made again",
                           (unsigned long long)p->common);
                return;
            }
            p->phase = P_FETCHING;
        }
    /* fallthrough */
    case P_FETCHING:
        if (d->expect - 1 >= p->best_last) {
            p->phase = P_HISTORY;
            promo_history_next(p);
            return;
        }
        if (!dsq_peer_up(r->peers, p->best)) {
            promo_fail(r, d, "node %s, which holds the longest log, is not reachable", node_id(r, p->best));
            return;
        }
        {
            uint64_t after = d->expect - 1;
            send_msg(r, p->best, DSQ_REPL_FETCH, d, &after, 1, NULL, 0);
        }
        return;
    default:
        return;
    }
}

static void on_fetched(dsq_repl *r, rdb *d, size_t node, bool more, const uint8_t *recs, size_t len)
{
    promo *p = d->promo;
    if (p == NULL || p->phase != P_FETCHING || node != p->best || d->applies > 0)
        return; /* (while a batch is applied: promo_step asks for the next after it) */
    if (len == 0) {
        if (d->expect - 1 < p->best_last)
            promo_fail(r, d, "node %s could not send its log past LSN %llu", node_id(r, node),
                       (unsigned long long)d->expect - 1);
        else
            promo_step(r, d);
        return;
    }
    (void)more; /* (promo_step asks again while it lacks records) */
    if (submit_apply(r, d, APPLY_RECORDS, recs, len, d->expect - 1) != 0)
        promo_fail(r, d, "cannot apply the records fetched");
}

static void on_accept(dsq_repl *r, rdb *d, size_t node, uint64_t epoch, dsq_rd *rd)
{
    promo *p = d->promo;
    if (p == NULL || p->phase != P_PROPOSING)
        return;
    uint8_t ok = dsq_r_u8(rd);
    if (rd->bad)
        return;
    if (!ok) {
        dsq_copyset cs;
        if (get_set(rd, r, &cs) && dsq_copyset_newer(&cs, &p->set)) {
            /* The copies changed (an epoch this node did not hear of made
             * a new set): taken; the next promotion proposes in it. */
            adopt_set(r, d, &cs, false);
            promo_fail(r, d, "node %s holds a newer copy set of database %s (made in epoch %llu); promote again",
                       node_id(r, node), d->name, (unsigned long long)cs.epoch);
            return;
        }
        if (epoch > d->max_seen)
            d->max_seen = epoch;
        if (p->resume)
            d->resume_refused = true;
        promo_fail(r, d, "node %s accepted epoch %llu already; promote again", node_id(r, node),
                   (unsigned long long)epoch);
        return;
    }
    if (epoch != p->epoch || p->from[node].ok)
        return;
    uint64_t last = dsq_r_u64(rd);
    dsq_epoch_state hist;
    get_hist(rd, &hist);
    if (rd->bad)
        return;
    p->from[node].ok = true;
    p->from[node].last = last;
    p->from[node].hist = hist;
    get_quiet(r, d, rd, p->from[node].quiet, &p->from[node].has_quiet);
    p->naccepted++;
    promo_step(r, d);
}

/* db's entry for a promotion or a change asked here, or NULL with why
 * (this node is stopping; out of memory). */
static rdb *entry_to_change(dsq_repl *r, const char *db, char *err, size_t errlen)
{
    if (r->quiet) {
        snprintf(err, errlen, "this node is stopping");
        return NULL;
    }
    rdb *d = entry(r, db);
    if (d == NULL)
        snprintf(err, errlen, "out of memory");
    return d;
}

/* Start promotion of d in `epoch`, proposing copy set `set` (its epoch
 * 0: the placement's, as it is); `was_primary`: d was the primary until
 * now (a change of its copies), its replies waiting on. 0, or -1 (out of
 * memory). */
static int promo_begin(dsq_repl *r, rdb *d, uint64_t epoch, const dsq_copyset *set, bool was_primary,
                       dsq_promote_fn done, void *ud)
{
    promo *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -1;
    *p = (promo){.r = r, .d = d, .epoch = epoch, .phase = P_PROPOSING, .done = done, .ud = ud,
                 .resume = d->resuming, .was_primary = was_primary, .prev_epoch = d->epoch, .set = *set};
    uv_timer_init(r->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_promo_timeout, r->cfg.promote_timeout_ms, 0);
    d->promo = p;
    DSQ_INFO("promotion", "db=%s epoch=%llu%s", d->name, (unsigned long long)p->epoch,
             set->nprev ? " change=yes" : "");
    /* Its own acceptance first (durable), then every other copy's. */
    follow(r, d, p->epoch, (uint32_t)r->cfg.self); /* (a follower until it is established: no writes; a
                                                      change stepped down already, its replies waiting on) */
    d->accepting++;
    if (promo_record(p, p->epoch, (uint32_t)r->cfg.self, 0, set->epoch ? set : NULL, promo_self_accepted) != 0) {
        d->accepting--;
        promo_fail(r, d, "this node cannot record the epoch on its disk");
        return 0;
    }
    for (size_t i = 0; i < d->ncopies; i++)
        if (i != d->self_copy && (d->copies[i].in & (IN_SET | IN_PREV)) && dsq_peer_up(r->peers, d->copies[i].node))
            send_propose(r, d, d->copies[i].node);
    if (!d->pos_known)
        probe(r, d);
    return 0;
}

int dsq_repl_promote(dsq_repl *r, const char *db, uint64_t min_epoch, dsq_promote_fn done, void *ud, char *err,
                     size_t errlen)
{
    rdb *d = entry_to_change(r, db, err, errlen);
    if (d == NULL)
        return -1;
    if (d->self_copy == d->ncopies) {
        snprintf(err, errlen, "this node holds no copy of database %s (its copies: cluster.replicas nodes by the "
                              "placement)", db);
        return -1;
    }
    if (d->ncopies == 1) {
        snprintf(err, errlen, "database %s has one copy (cluster.replicas = 1): there is no other primary to be", db);
        return -1;
    }
    if (d->role == DSQ_ROLE_PRIMARY) {
        snprintf(err, errlen, "this node is the primary of database %s already (epoch %llu)", db,
                 (unsigned long long)d->epoch);
        return -1;
    }
    if (d->promo != NULL || d->accepting) {
        snprintf(err, errlen, "a promotion of database %s is under way here; ask again once it ended", db);
        return -2;
    }
    if (!(d->copies[d->self_copy].in & IN_SET)) {
        snprintf(err, errlen, "this node is not in the copy set of database %s (it is being added or taken out)",
                 db);
        return -1;
    }
    uint64_t top = d->epoch > d->max_seen ? d->epoch : d->max_seen;
    dsq_copyset set;
    pthread_mutex_lock(&r->mu);
    cur_set(d, &set);
    pthread_mutex_unlock(&r->mu);
    if (promo_begin(r, d, top + 1 > min_epoch ? top + 1 : min_epoch, &set, false, done, ud) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- changing the copy set ------------------------------------------------------------------- */

static void send_learn(dsq_repl *r, rdb *d, size_t node)
{
    dsq_copyset cs;
    pthread_mutex_lock(&r->mu);
    cur_set(d, &cs);
    pthread_mutex_unlock(&r->mu);
    dsq_buf b = DSQ_BUF_INIT;
    if (put_set(&b, r, &cs) == 0)
        send_msg(r, node, DSQ_REPL_LEARN, d, NULL, 0, b.data, b.len);
    dsq_buf_free(&b);
}

/* LEARN from the primary of `epoch`: this node is being added to the
 * copy set `cs`; it follows that primary as a learner (nothing it holds
 * counts until the change makes it a member). In memory only: the
 * primary says it again on a new link. */
static void on_learn(dsq_repl *r, rdb *d, size_t node, uint64_t epoch, const dsq_copyset *cs)
{
    if (d->promo != NULL || d->accepting || epoch < d->epoch || cs_has(cs->nodes, cs->n, (uint32_t)r->cfg.self))
        return;
    pthread_mutex_lock(&r->mu);
    bool member = d->self_copy < d->ncopies && (d->copies[d->self_copy].in & (IN_SET | IN_PREV));
    int rc = member ? -1 : set_copies(r, d, cs, (uint32_t)r->cfg.self);
    if (rc == 0) {
        d->epoch = epoch;
        d->primary = (uint32_t)node;
        d->role = DSQ_ROLE_FOLLOWER;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != 0)
        return;
    if (epoch > d->max_seen)
        d->max_seen = epoch;
    d->synced = false;
    d->primary_serving = false;
    d->at_sent = 0;
    DSQ_INFO("copy_learning", "db=%s epoch=%llu primary=%s", d->name, (unsigned long long)epoch, node_id(r, node));
    if (!d->pos_known)
        probe(r, d);
}

static void change_end(dsq_repl *r, rdb *d, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    change *c = d->chg;
    if (c == NULL)
        return;
    d->chg = NULL;
    if (d->on_changing) {
        d->on_changing = false;
        dsq_list_remove(&r->changing, &d->changing);
    }
    if (!c->promoting) { /* the learner goes (a promotion made it a member, or failed with it one) */
        pthread_mutex_lock(&r->mu);
        dsq_copyset cs;
        cur_set(d, &cs);
        set_copies(r, d, &cs, DSQ_NODE_NONE);
        pthread_mutex_unlock(&r->mu);
    }
    if (rc == 0)
        DSQ_INFO("copies_changed_here", "db=%s epoch=%llu out=%s in=%s", d->name, (unsigned long long)epoch,
                 node_id(r, c->out), node_id(r, c->in));
    else
        DSQ_WARN("copy_change_failed", "db=%s out=%s in=%s reason=%s", d->name, node_id(r, c->out),
                 node_id(r, c->in), dsq_log_q(msg ? msg : "?"));
    if (rc != 0 && c->promoting) {
        /* It stepped down for the change, its replies waiting on: whether
         * their commits survive is now the next primary's to say. */
        r->stats.step_downs++;
        char m[400];
        snprintf(m, sizeof m,
                 "the change of the copies of database %s failed (%s); the commit was not acknowledged here, and "
                 "whether it survives is not known (read it back from the primary)",
                 d->name, msg ? msg : "?");
        dsq_engine_repl_abandon(r->engine, d->name, DSQ_CODE_NOT_PRIMARY, m);
    } else if (rc != 0 && dsq_peer_up(r->peers, c->in)) {
        send_msg(r, c->in, DSQ_REPL_FORGET, d, NULL, 0, NULL, 0); /* (it is no learner any more) */
    }
    if (c->done != NULL)
        c->done(c->ud, rc, epoch, lsn, msg);
    free(c);
}

static void change_promoted(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    change *c = ud;
    change_end(c->r, c->d, rc, epoch, lsn, msg);
}

/* The change's next step: once the learner is in step (it holds every
 * commit acknowledged so far), the primary stops acknowledging in its
 * epoch (the learner's log covers all it acknowledged) and proposes the
 * next with the new set, the old one as prev (promo_quorum). */
static void change_step(dsq_repl *r, rdb *d)
{
    change *c = d->chg;
    if (c == NULL || c->promoting || d->promo != NULL || r->quiet)
        return;
    uint64_t now = dsq_now_ms();
    if (now > c->since + CHANGE_CATCHUP_MS) {
        change_end(r, d, -1, 0, 0, "the node being added was not in step within 5 minutes");
        return;
    }
    rcopy *l = change_learner(d);
    dsq_copyset cs;
    pthread_mutex_lock(&r->mu);
    bool ready = l != NULL && l->ready && l->streaming && l->durable >= d->commit && d->role == DSQ_ROLE_PRIMARY &&
                 may_answer(r, d, now) && !d->accepting;
    if (ready) {
        dsq_copyset s1;
        cur_set(d, &s1);
        cs = s1;
        for (size_t i = 0; i < cs.n; i++)
            if (cs.nodes[i] == c->out)
                cs.nodes[i] = c->in;
        memcpy(cs.prev, s1.nodes, sizeof s1.nodes);
        cs.nprev = s1.n;
        uint64_t top = d->epoch > d->max_seen ? d->epoch : d->max_seen;
        cs.epoch = top + 1 > c->min_epoch ? top + 1 : c->min_epoch;
        /* No commit is acknowledged in this epoch from here on: every one
         * that was is on the learner (its durable LSN reaches the commit). */
        d->role = DSQ_ROLE_FOLLOWER;
        set_copies(r, d, &cs, DSQ_NODE_NONE);
    }
    pthread_mutex_unlock(&r->mu);
    if (!ready)
        return;
    d->pos_known = false; /* (it committed since it last learned where its log ends) */
    d->reprobe = d->probing;
    c->promoting = true;
    if (promo_begin(r, d, cs.epoch, &cs, true, change_promoted, c) != 0)
        change_end(r, d, -1, 0, 0, "out of memory");
}

int dsq_repl_change(dsq_repl *r, const char *db, uint32_t out, uint32_t in, uint64_t min_epoch,
                    dsq_promote_fn done, void *ud, char *err, size_t errlen)
{
    rdb *d = entry_to_change(r, db, err, errlen);
    if (d == NULL)
        return -1;
    if (d->role != DSQ_ROLE_PRIMARY) {
        snprintf(err, errlen, "this node is not the primary of database %s", db);
        return -1;
    }
    if (d->promo != NULL || d->accepting || d->chg != NULL) {
        snprintf(err, errlen, "a promotion or a change of the copies of database %s is under way here", db);
        return -2;
    }
    rcopy *o = copy_of(d, out);
    if (o == NULL || !(o->in & IN_SET) || out == r->cfg.self) {
        snprintf(err, errlen, "node %s is not a copy of database %s other than its primary", node_id(r, out), db);
        return -1;
    }
    if (copy_of(d, in) != NULL || in == r->cfg.self || r->peers == NULL || in >= dsq_peers_count(r->peers)) {
        snprintf(err, errlen, "node %s cannot be added to database %s (a copy already, or not a node here)",
                 node_id(r, in), db);
        return -1;
    }
    change *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *c = (change){.r = r, .d = d, .out = out, .in = in, .since = dsq_now_ms(), .min_epoch = min_epoch,
                  .done = done, .ud = ud};
    pthread_mutex_lock(&r->mu);
    dsq_copyset cs;
    cur_set(d, &cs);
    int rc = set_copies(r, d, &cs, in);
    pthread_mutex_unlock(&r->mu);
    if (rc != 0) {
        free(c);
        snprintf(err, errlen, "database %s has no room for another copy", db);
        return -1;
    }
    d->chg = c;
    d->on_changing = true;
    dsq_list_push(&r->changing, &d->changing);
    DSQ_INFO("copy_change", "db=%s out=%s in=%s", db, node_id(r, out), node_id(r, in));
    rcopy *l = change_learner(d);
    if (dsq_peer_up(r->peers, in)) {
        send_learn(r, d, in);
        prompt(r, d, l);
    }
    return 0;
}

/* Copies taken out of their set: their files removed here (DSQ_OP_RESET),
 * unless the node became a copy again meanwhile; one busy (a call of its
 * under way) waits for the next beat. */
static void discards_due(dsq_repl *r)
{
    dsq_list busy = {0};
    for (;;) {
        pthread_mutex_lock(&r->mu);
        dsq_lnode *ln = r->discards.head;
        rdb *d = dsq_container_of(ln, rdb, discarding);
        bool want = false;
        if (d != NULL) {
            dsq_list_remove(&r->discards, ln);
            d->on_discard = false;
            want = d->self_copy == d->ncopies;
        }
        pthread_mutex_unlock(&r->mu);
        if (d == NULL)
            break;
        if (!want)
            continue;
        if (d->promo != NULL || d->settling || d->applies > 0 || d->probing || d->rebuilding)
            dsq_list_push(&busy, &d->discarding);
        else
            submit_apply(r, d, APPLY_DISCARD, NULL, 0, 0);
    }
    pthread_mutex_lock(&r->mu);
    for (dsq_lnode *ln; (ln = busy.head) != NULL;) {
        dsq_list_remove(&busy, ln);
        mark_discard(r, dsq_container_of(ln, rdb, discarding));
    }
    pthread_mutex_unlock(&r->mu);
}

static void changes_due(dsq_repl *r)
{
    rdb *d, *next;
    dsq_list_foreach_safe(d, next, &r->changing, changing)
        change_step(r, d);
}

/* ---- messages -------------------------------------------------------------------------------- */

void dsq_repl_on_message(dsq_repl *r, size_t node, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    if (type == DSQ_REPL_BEAT || type == DSQ_REPL_BEAT_ACK) {
        uint64_t sent = dsq_r_u64(&rd);
        if (rd.bad)
            return;
        if (type == DSQ_REPL_BEAT) {
            r->beat_answered[node] = dsq_now_ms();
            dsq_buf b = DSQ_BUF_INIT;
            if (dsq_w_u64(&b, sent) == 0)
                dsq_peer_send(r->peers, node, DSQ_REPL_BEAT_ACK, b.data, b.len, NULL, 0);
            dsq_buf_free(&b);
        } else {
            pthread_mutex_lock(&r->mu);
            if (sent > r->beat_acked[node])
                r->beat_acked[node] = sent;
            pthread_mutex_unlock(&r->mu);
        }
        return;
    }
    char name[129];
    dsq_r_str(&rd, name, sizeof name);
    uint64_t epoch = dsq_r_u64(&rd);
    if (rd.bad || !dsq_db_name_valid(name)) {
        DSQ_WARN("replication_bad_message", "node=%s type=%u", node_id(r, node), type);
        return;
    }
    rdb *d = entry(r, name);
    if (d == NULL)
        return;
    switch (type) {
    case DSQ_REPL_PROPOSE:
        on_propose(r, d, node, epoch, &rd);
        return;
    case DSQ_REPL_FORGET:
        on_forget(r, d, node);
        return;
    case DSQ_REPL_LEARN: {
        dsq_copyset cs;
        if (get_set(&rd, r, &cs))
            on_learn(r, d, node, epoch, &cs);
        return;
    }
    case DSQ_REPL_FENCED: {
        char primary[DSQ_NODE_ID_MAX];
        dsq_r_str(&rd, primary, sizeof primary);
        if (!rd.bad)
            on_fenced(r, d, epoch, primary);
        return;
    }
    case DSQ_REPL_ACCEPT:
        on_accept(r, d, node, epoch, &rd);
        return;
    default:
        break;
    }
    if (other_epoch(r, d, node, type, epoch))
        return;
    switch (type) {
    case DSQ_REPL_SHIP: {
        uint64_t commit = dsq_r_u64(&rd);
        if (!rd.bad && d->role == DSQ_ROLE_FOLLOWER && node == d->primary && d->promo == NULL) {
            d->primary_serving = true;
            on_ship(r, d, commit, rd.p, dsq_rd_left(&rd));
        }
        break;
    }
    case DSQ_REPL_COMMIT: {
        uint64_t commit = dsq_r_u64(&rd), appended = dsq_r_u64(&rd);
        if (rd.bad || d->role != DSQ_ROLE_FOLLOWER || node != d->primary || d->promo != NULL)
            break;
        d->primary_serving = true;
        follow_commit(r, d, commit);
        (void)appended; /* (records in step come in SHIPs; a gap shows in the next one) */
        if (!d->synced || !d->pos_known)
            send_at(r, d); /* (once per position: a SYNC may be on its way) */
        break;
    }
    case DSQ_REPL_SYNC: {
        uint64_t keep = dsq_r_u64(&rd);
        dsq_epoch_state hist;
        get_hist(&rd, &hist);
        dsq_copyset cs;
        bool has_set = !rd.bad && get_set(&rd, r, &cs);
        if (!rd.bad && d->role == DSQ_ROLE_FOLLOWER && node == d->primary && d->promo == NULL) {
            /* A newer copy set: on disk before this copy says it is ready
             * (it counts from then on, and after a crash it must know it
             * is a copy); it asks again (BEHIND) once it is. */
            if (has_set && d->pos_known && !d->settling && d->applies == 0 && adopt_set_recorded(r, d, &cs))
                break;
            on_sync(r, d, keep, &hist);
        }
        break;
    }
    case DSQ_REPL_ACK:
    case DSQ_REPL_READY:
    case DSQ_REPL_BEHIND: {
        uint64_t a = dsq_r_u64(&rd), b = dsq_r_u64(&rd);
        uint64_t e = type == DSQ_REPL_BEHIND ? dsq_r_u64(&rd) : 0;
        rcopy *c = copy_of(d, node);
        if (!rd.bad && c == NULL && d->self_copy < d->ncopies)
            send_msg(r, node, DSQ_REPL_FORGET, d, NULL, 0, NULL, 0); /* (a learner of a change that ended) */
        if (rd.bad || d->role != DSQ_ROLE_PRIMARY || c == NULL)
            break;
        if (type == DSQ_REPL_BEHIND) {
            on_behind(r, d, c, a, e);
        } else if (type == DSQ_REPL_READY) {
            on_ready(r, d, c, a, b);
        } else if (c->ready) {
            /* What it holds durably and agrees with this primary's log:
             * no more than what was sent to it since it was in sync. */
            r->stats.acks++;
            uint64_t durable = a < c->sent ? a : c->sent;
            pthread_mutex_lock(&r->mu);
            if (durable > c->durable)
                c->durable = durable;
            if (b > c->applied)
                c->applied = b;
            if (c->durable >= d->appended)
                c->behind_since = 0;
            pthread_mutex_unlock(&r->mu);
            dsq_engine_repl_poke(r->engine, d->name); /* (released() works out the commit) */
            if (d->chg != NULL && c->in == IN_LEARNER)
                change_step(r, d);
        }
        break;
    }
    case DSQ_REPL_FETCH: {
        uint64_t after = dsq_r_u64(&rd);
        /* The candidate of this copy's epoch reads its log. */
        if (!rd.bad && node == d->primary && d->self_copy < d->ncopies)
            submit_log_read(r, d, (uint32_t)node, after, true);
        break;
    }
    case DSQ_REPL_FETCHED: {
        uint8_t more = dsq_r_u8(&rd);
        if (!rd.bad)
            on_fetched(r, d, node, more != 0, rd.p, dsq_rd_left(&rd));
        break;
    }
    case DSQ_REPL_REBUILD: {
        uint64_t first = dsq_r_u64(&rd);
        if (!rd.bad && first > 1 && d->role == DSQ_ROLE_FOLLOWER && node == d->primary && d->promo == NULL)
            on_rebuild(r, d, first);
        break;
    }
    default:
        DSQ_WARN("replication_bad_message", "node=%s type=%u", node_id(r, node), type);
    }
}

/* ---- links, heartbeats, the loop's wake-ups ---------------------------------------------------- */

typedef struct fence_ctx {
    dsq_repl *r;
    size_t node;
} fence_ctx;

/* On a link coming up: tell the node of every database whose epoch this
 * node accepted with another primary (it may be the former one), before
 * any heartbeat of its is acknowledged on this link. */
static void fence_on_link(void *ud, const char *db, const dsq_epoch_state *s)
{
    fence_ctx *f = ud;
    dsq_repl *r = f->r;
    if (!s->primary_known || s->primary == f->node)
        return;
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_str(&b, db) == 0 && dsq_w_u64(&b, s->accepted) == 0 && dsq_w_str(&b, node_id(r, s->primary)) == 0)
        dsq_peer_send(r->peers, f->node, DSQ_REPL_FENCED, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
}

void dsq_repl_on_link(dsq_repl *r, size_t node, bool up)
{
    if (up) {
        fence_ctx f = {.r = r, .node = node};
        dsq_epochs_each(r->cfg.epochs, fence_on_link, &f);
    }
    size_t n;
    rdb **v = entries(r, &n);
    for (size_t i = 0; i < n; i++) {
        rdb *d = v[i];
        if (up && d->promo != NULL && d->promo->phase == P_PROPOSING && copy_of(d, node) != NULL &&
            !d->promo->from[node].ok) { /* a copy it could not ask before */
            send_propose(r, d, node);
            continue;
        }
        if (up && d->chg != NULL && change_learner(d) != NULL && change_learner(d)->node == node) {
            send_learn(r, d, node); /* (it forgot, or never heard: told again) */
            rcopy *c = change_learner(d);
            c->streaming = c->ready = c->prompted = false;
            prompt(r, d, c);
            continue;
        }
        if (d->role == DSQ_ROLE_FOLLOWER && d->primary == node && d->promo == NULL) {
            d->at_sent = 0; /* it says where it is again */
            d->synced = false;
            if (up)
                send_at(r, d);
        } else if (d->role == DSQ_ROLE_PRIMARY) {
            rcopy *c = copy_of(d, node);
            if (c == NULL)
                continue;
            c->streaming = c->ready = c->prompted = false;
            if (up)
                prompt(r, d, c);
        }
    }
    free(v);
}

void dsq_repl_on_writable(dsq_repl *r, size_t node)
{
    size_t n;
    rdb **v = entries(r, &n);
    for (size_t i = 0; i < n; i++) {
        rcopy *c = v[i]->role == DSQ_ROLE_PRIMARY ? copy_of(v[i], node) : NULL;
        if (c != NULL && c->ready && !c->streaming && !c->reading)
            read_log(r, v[i], c);
    }
    free(v);
}

/* Acknowledgements, commits that the hooks asked to send. */
static void flush_due(dsq_repl *r)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        dsq_lnode *ln = r->due.head;
        rdb *d = dsq_container_of(ln, rdb, due);
        bool ack = false, commit = false;
        uint64_t durable = 0, applied = 0, c = 0;
        if (d != NULL) {
            dsq_list_remove(&r->due, ln);
            d->on_due = false;
            ack = d->ack_due;
            commit = d->commit_due;
            d->ack_due = d->commit_due = false;
            if (d->self_copy < d->ncopies) {
                durable = d->copies[d->self_copy].durable;
                applied = d->copies[d->self_copy].applied;
            }
            c = d->commit;
        }
        pthread_mutex_unlock(&r->mu);
        if (d == NULL)
            return;
        if (ack && d->role == DSQ_ROLE_FOLLOWER && d->synced && dsq_peer_up(r->peers, d->primary)) {
            uint64_t v[2] = {durable < d->expect - 1 ? durable : d->expect - 1, applied};
            send_msg(r, d->primary, DSQ_REPL_ACK, d, v, 2, NULL, 0);
        } else if (ack && d->role == DSQ_ROLE_FOLLOWER) {
            /* Not in sync now: said once it is (settle_next), not lost. */
            pthread_mutex_lock(&r->mu);
            d->ack_due = true;
            pthread_mutex_unlock(&r->mu);
        }
        if (commit && d->role == DSQ_ROLE_PRIMARY && c > d->commit_told) {
            d->commit_told = c;
            uint64_t v[2] = {c, d->appended};
            for (size_t i = 0; i < d->ncopies; i++)
                if (i != d->self_copy && d->copies[i].ready && dsq_peer_up(r->peers, d->copies[i].node))
                    send_msg(r, d->copies[i].node, DSQ_REPL_COMMIT, d, v, 2, NULL, 0);
        }
    }
}

/* Primaries whose replies were held (no lease yet, or taking over) and
 * that may answer now: their replies go. */
static void release_held(dsq_repl *r)
{
    uint64_t now = dsq_now_ms();
    for (;;) {
        pthread_mutex_lock(&r->mu);
        rdb *d = NULL, *x, *next;
        dsq_list_foreach_safe(x, next, &r->held, held) {
            if (may_answer(r, x, now) || x->role != DSQ_ROLE_PRIMARY) {
                dsq_list_remove(&r->held, &x->held);
                x->on_held = false;
                d = x;
                break;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (d == NULL)
            return;
        dsq_engine_repl_poke(r->engine, d->name);
    }
}

/* ---- resuming after a crash (static placement) ------------------------------------------------ */


/* Try d's resumption again after a backoff, unless it ended otherwise
 * (another primary took over) or another node holds a newer epoch: then
 * promoting again would take the database from it. */
static void resume_later(dsq_repl *r, rdb *d, const char *why)
{
    pthread_mutex_lock(&r->mu);
    bool again = d->resuming && !d->on_resume && !r->stopped && !d->resume_refused;
    if (again) {
        d->resume_backoff = d->resume_backoff == 0 ? REBUILD_RETRY_MS : d->resume_backoff * 2;
        if (d->resume_backoff > REBUILD_RETRY_MAX_MS)
            d->resume_backoff = REBUILD_RETRY_MAX_MS;
        d->resume_at = dsq_now_ms() + d->resume_backoff;
        d->on_resume = true;
        dsq_list_push(&r->resumes, &d->resume);
    }
    pthread_mutex_unlock(&r->mu);
    if (!r->stopped)
        DSQ_WARN("replication_resume_failed", "db=%s again=%s reason=%s", d->name, again ? "yes" : "no",
                 dsq_log_q(why));
}

static void resumed(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    db_ctx *x = ud;
    (void)epoch;
    (void)lsn;
    dsq_repl *r = x->r;
    r->resumes_now--;
    if (rc != 0)
        resume_later(r, x->d, msg ? msg : "the promotion failed");
    free(x);
    if (r->started && !r->quiet)
        uv_async_send(&r->async); /* (the next one waiting its turn: resumes_due) */
}

/* Whether enough of d's other copies acknowledged a heartbeat sent since
 * it began resuming: a copy that knows of a newer epoch told this node
 * (FENCED, before any acknowledgement on its link), which then follows
 * that epoch's primary instead of proposing one of its own. */
static bool resume_heard(const dsq_repl *r, const rdb *d)
{
    unsigned heard = 1, need = accept_needed(r, d);
    for (size_t i = 0; i < d->ncopies; i++)
        if (i != d->self_copy && r->beat_acked[d->copies[i].node] >= d->resume_since)
            heard++;
    return heard >= need;
}

static void resumes_due(dsq_repl *r)
{
    uint64_t now = dsq_now_ms();
    while (!r->quiet && !r->stopped && r->resumes_now < RESUMES_MAX) {
        pthread_mutex_lock(&r->mu);
        rdb *d = NULL, *x, *next;
        dsq_list_foreach_safe(x, next, &r->resumes, resume) {
            if (!x->resuming) {
                dsq_list_remove(&r->resumes, &x->resume);
                x->on_resume = false;
            } else if (now >= x->resume_at && x->promo == NULL && !x->accepting && resume_heard(r, x)) {
                dsq_list_remove(&r->resumes, &x->resume);
                x->on_resume = false;
                d = x;
                break;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (d == NULL)
            return;
        db_ctx *c = malloc(sizeof *c);
        char err[300];
        if (c == NULL) {
            resume_later(r, d, "out of memory");
            continue;
        }
        *c = (db_ctx){.r = r, .d = d};
        r->resumes_now++;
        if (dsq_repl_promote(r, d->name, 0, resumed, c, err, sizeof err) != 0) {
            r->resumes_now--;
            free(c);
            resume_later(r, d, err);
        }
    }
}

static void on_async(uv_async_t *h)
{
    dsq_repl *r = h->data;
    ship_committed(r);
    flush_due(r);
    resumes_due(r);
}

static void on_beat(uv_timer_t *t)
{
    dsq_repl *r = t->data;
    uint64_t now = dsq_now_ms();
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_u64(&b, now) == 0)
        for (size_t i = 0; r->peers != NULL && i < dsq_peers_count(r->peers); i++)
            if (i != r->cfg.self && dsq_peer_up(r->peers, i))
                dsq_peer_send(r->peers, i, DSQ_REPL_BEAT, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
    release_held(r);
    rebuilds_due(r);
    resumes_due(r);
    changes_due(r);
    discards_due(r);
}

/* ---- the object ------------------------------------------------------------------------------ */

typedef struct found_db {
    dsq_hnode link;
    char name[];
} found_db;

/* The databases in DATA_DIR/db now (r->found); when they cannot be read
 * but for there being none, every one counts as found. */
static void find_on_disk(dsq_repl *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/db", r->cfg.data_dir ? r->cfg.data_dir : "");
    DIR *dir = r->cfg.data_dir ? opendir(path) : NULL;
    if (dir == NULL) {
        r->found_all = r->cfg.data_dir == NULL || errno != ENOENT;
        return;
    }
    for (struct dirent *de; (de = readdir(dir)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        size_t len = strlen(de->d_name);
        found_db *f = malloc(sizeof *f + len + 1);
        if (f == NULL || (memcpy(f->name, de->d_name, len + 1), dsq_htab_add(&r->found, &f->link, f->name)) != 0) {
            free(f);
            r->found_all = true;
            break;
        }
    }
    closedir(dir);
}

dsq_repl *dsq_repl_new(const dsq_repl_cfg *cfg)
{
    dsq_repl *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->cfg = *cfg;
    const char *ids[DSQ_NODES_MAX];
    for (size_t i = 0; i < cfg->nnodes; i++)
        ids[i] = cfg->nodes[i].id;
    dsq_placement_static(&r->own_place, ids, cfg->nnodes, cfg->replicas);
    r->place = cfg->place != NULL ? cfg->place : &r->own_place;
    pthread_mutex_init(&r->mu, NULL);
    if (cfg->resume)
        find_on_disk(r);
    /* (borrowed: kept as a copy, for the files of copies taken out of their set) */
    r->cfg.data_dir = cfg->data_dir != NULL ? (r->data_dir = strdup(cfg->data_dir)) : NULL;
    r->hooks = (dsq_repl_hooks){
        .role = h_role, .released = h_released, .committed = h_committed, .answering = h_answering,
        .copies = h_copies, .epoch = h_epoch, .epoch_end = h_epoch_end, .ud = r};
    return r;
}

const dsq_repl_hooks *dsq_repl_hooks_of(dsq_repl *r) { return &r->hooks; }

bool dsq_repl_resumed_all(dsq_repl *r)
{
    if (!r->cfg.resume)
        return true;
    if (r->found_all)
        return false;
    bool all = true;
    pthread_mutex_lock(&r->mu);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; all && (h = dsq_htab_next(&r->found, &it)) != NULL;) {
        rdb *d = get(r, h->key); /* (made now for one this run never met: it may need no resuming) */
        all = d != NULL && !d->resuming;
    }
    pthread_mutex_unlock(&r->mu);
    return all;
}

int dsq_repl_start(dsq_repl *r, uv_loop_t *loop, dsq_engine *e, dsq_peers *peers)
{
    r->engine = e;
    r->peers = peers;
    r->loop = loop;
    if (uv_async_init(loop, &r->async, on_async) != 0)
        return -1;
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async);
    uv_timer_init(loop, &r->beat);
    r->beat.data = r;
    uv_timer_start(&r->beat, on_beat, 0, r->cfg.beat_ms);
    uv_unref((uv_handle_t *)&r->beat);
    pthread_mutex_lock(&r->mu);
    r->started = true;
    /* With the static placement, every primary copy found on disk
     * resumes now, not at its first use: so the run that began after a
     * crash settles them all, and its clean stop clears the mark (with
     * etcd, failover.c reconciles every database etcd names this node
     * the primary of). */
    if (r->cfg.place == NULL) {
        dsq_htab_iter it = {0};
        for (dsq_hnode *h; (h = dsq_htab_next(&r->found, &it)) != NULL;)
            (void)get(r, h->key);
    }
    bool pending = !dsq_queue_empty(&r->recq) || r->due.head != NULL || r->resumes.head != NULL;
    pthread_mutex_unlock(&r->mu);
    if (pending)
        uv_async_send(&r->async);
    return 0;
}

void dsq_repl_quiesce(dsq_repl *r)
{
    if (r->quiet || !r->started)
        return;
    r->quiet = true;
    size_t n;
    rdb **v = entries(r, &n);
    for (size_t i = 0; i < n; i++)
        if (v[i]->promo != NULL)
            promo_fail(r, v[i], "this node is stopping");
    free(v);
}

void dsq_repl_stop(dsq_repl *r)
{
    pthread_mutex_lock(&r->mu);
    bool was = r->started;
    r->started = false;
    pthread_mutex_unlock(&r->mu);
    if (!was)
        return;
    r->stopped = true;
    uv_close((uv_handle_t *)&r->async, NULL);
    uv_timer_stop(&r->beat);
    uv_close((uv_handle_t *)&r->beat, NULL);
    size_t n;
    rdb **v = entries(r, &n);
    for (size_t i = 0; i < n; i++)
        if (v[i]->promo != NULL)
            promo_end(r, v[i], -1, "the server is stopping");
    free(v);
}

void dsq_repl_free(dsq_repl *r)
{
    if (r == NULL)
        return;
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&r->recq)) != NULL)
        free(dsq_container_of(n, recq_item, link));
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&r->dbs, &it)) != NULL;)
        free(dsq_container_of(h, rdb, link));
    dsq_htab_free(&r->dbs);
    it = (dsq_htab_iter){0};
    for (dsq_hnode *h; (h = dsq_htab_next(&r->found, &it)) != NULL;)
        free(dsq_container_of(h, found_db, link));
    dsq_htab_free(&r->found);
    pthread_mutex_destroy(&r->mu);
    free(r->data_dir);
    free(r);
}

bool dsq_repl_primary_here(dsq_repl *r, const char *db)
{
    rdb *d = entry(r, db);
    return d != NULL && (d->role == DSQ_ROLE_PRIMARY || d->role == DSQ_ROLE_ALONE || d->promo != NULL);
}

void dsq_repl_placement_changed(dsq_repl *r, const char *db)
{
    pthread_mutex_lock(&r->mu);
    rdb *d = dsq_container_of(dsq_htab_find(&r->dbs, db), rdb, link);
    uint32_t nodes[DSQ_NODES_MAX], primary;
    uint64_t epoch;
    size_t n = d != NULL ? r->place->copies(r->place, db, nodes, DSQ_NODES_MAX, &primary, &epoch) : 0;
    if (n > 0 && d->self_copy < d->ncopies && d->promo == NULL && !d->accepting && d->chg == NULL &&
        !cs_has(nodes, n, (uint32_t)r->cfg.self) && n <= DSQ_COPYSET_MAX &&
        d->copies[d->self_copy].in != IN_LEARNER &&
        (epoch > d->epoch || (epoch == d->epoch && !(d->copies[d->self_copy].in & IN_SET)))) {
        /* etcd names a newer epoch whose copies leave this node out (a
         * change it did not hear of took it out of the set), or the epoch
         * of the change it accepted leaving, established since. It stops
         * being a copy (a node that is not one only ever leaves). */
        dsq_copyset cs = {.epoch = epoch, .n = n};
        memcpy(cs.nodes, nodes, n * sizeof nodes[0]);
        if (set_copies(r, d, &cs, DSQ_NODE_NONE) == 0) {
            /* Its files go (on the loop thread): nothing it holds counts
             * any more, and the primary never asks it for them again. */
            DSQ_INFO("copy_removed", "db=%s epoch=%llu", d->name, (unsigned long long)epoch);
            mark_discard(r, d);
            if (r->started)
                uv_async_send(&r->async);
        }
    }
    if (d != NULL && d->self_copy == d->ncopies && n > 0 && epoch >= d->epoch) {
        d->primary = primary;
        d->epoch = epoch;
    }
    pthread_mutex_unlock(&r->mu);
}

bool dsq_repl_member(dsq_repl *r, const char *db)
{
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    bool in = d != NULL && d->self_copy < d->ncopies && (d->copies[d->self_copy].in & IN_SET);
    pthread_mutex_unlock(&r->mu);
    return in;
}

size_t dsq_repl_copyset(dsq_repl *r, const char *db, uint32_t *out, size_t max, uint64_t *set_epoch)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    *set_epoch = d != NULL ? d->set_epoch : 0;
    for (size_t i = 0; d != NULL && i < d->ncopies && n < max; i++)
        if (d->copies[i].in & IN_SET)
            out[n++] = d->copies[i].node;
    pthread_mutex_unlock(&r->mu);
    return n;
}

dsq_role dsq_repl_where(dsq_repl *r, const char *db, size_t *primary)
{
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    dsq_role role = d ? d->role : DSQ_ROLE_ELSEWHERE;
    *primary = d ? d->primary : r->cfg.self;
    /* A node without a copy knows the primary from the placement only (a
     * promotion is told to the copies): when that node is out of reach,
     * a copy's node that is not passes the call on to the one it knows. */
    if (d != NULL && role == DSQ_ROLE_ELSEWHERE && r->peers != NULL && !dsq_peer_up(r->peers, d->primary))
        for (size_t i = 0; i < d->ncopies; i++)
            if (dsq_peer_up(r->peers, d->copies[i].node)) {
                *primary = d->copies[i].node;
                break;
            }
    pthread_mutex_unlock(&r->mu);
    return role;
}

void dsq_repl_describe(dsq_repl *r, const char *db, dsq_repl_info *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    if (d != NULL) {
        out->primary = d->primary;
        out->epoch = d->epoch;
        out->ncopies = d->ncopies;
        for (size_t i = 0; i < d->ncopies; i++)
            out->copies[i] = (dsq_repl_copy){
                .node = d->copies[i].node,
                .primary = d->copies[i].node == d->primary,
                .durable = d->copies[i].durable,
                .applied = d->role == DSQ_ROLE_PRIMARY && i == d->self_copy ? d->appended : d->copies[i].applied};
    }
    pthread_mutex_unlock(&r->mu);
}

void dsq_repl_stats_get(dsq_repl *r, dsq_repl_stats *out) { *out = r->stats; }

void dsq_repl_lag(dsq_repl *r, size_t node, uint64_t *lsn, uint64_t *ms)
{
    *lsn = *ms = 0;
    uint64_t now = dsq_now_ms();
    pthread_mutex_lock(&r->mu);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&r->dbs, &it)) != NULL;) {
        rdb *d = dsq_container_of(h, rdb, link);
        rcopy *c = d->role == DSQ_ROLE_PRIMARY ? copy_of(d, node) : NULL;
        if (c == NULL || node == r->cfg.self)
            continue;
        if (d->appended > c->durable && d->appended - c->durable > *lsn)
            *lsn = d->appended - c->durable;
        if (c->behind_since && now - c->behind_since > *ms)
            *ms = now - c->behind_since;
    }
    pthread_mutex_unlock(&r->mu);
}
