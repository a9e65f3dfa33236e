/* failover — automatic failover with cluster.etcd (failover.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/assign.h"
#include "cluster/failover.h"
#include "common/htab.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "common/util.h"

#define SWEEP_MS 500
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000

/* A database this node acts on (or waits to act on again). */
typedef struct fent {
    dsq_hnode link;                /* in f->ents */
    char db[DSQ_ASSIGN_DB_MAX];
    char from[DSQ_NODE_ID_MAX];    /* the primary it replaces ("" for a reconcile) */
    bool inflight;                 /* a write or a promotion is under way */
    bool seen;                     /* the last sweep wanted it */
    uint64_t next_ms;              /* not again before then (after a failure) */
    uint64_t backoff_ms;
    dsq_failover_promoted_fn asked; /* a promotion asked by hand (dsq_failover_promote): told how it ends */
    void *asked_arg;
} fent;

/* An answer of etcd's, or a promotion's end, on its way back. */
typedef struct fctx {
    dsq_lnode link;                /* promotions: on f->promos */
    dsq_failover *f;               /* NULL once f stopped (a promotion that ends later) */
    char db[DSQ_ASSIGN_DB_MAX];
    uint64_t epoch;                /* the one written (or asked for) */
    uint64_t lsn;                  /* a change's: where the log it took over ends */
    dsq_assignment now;            /* a change's write that found the key changed: its value then */
    bool has_now;
    unsigned tries;                /* a change's writes of its copies so far */
    int rc;
    char msg[256];
    bool handing;                  /* a drain's write naming another node: nothing to promote here */
    char primary[DSQ_NODE_ID_MAX]; /* a reconcile's check: the primary etcd names ("" for none) */
} fctx;

typedef struct left_node {
    char id[DSQ_NODE_ID_MAX];
    uint64_t at_ms;                /* monotonic */
} left_node;

struct dsq_failover {
    dsq_failover_cfg cfg;
    char self[DSQ_NODE_ID_MAX];
    dsq_mailbox mb;
    uv_timer_t sweep, kick;
    unsigned closing;              /* handles whose close is owed */
    bool stopping;
    dsq_htab ents;                 /* fent.link */
    dsq_list promos;               /* fctx.link: promotions under way */
    left_node left[DSQ_NODES_MAX];
    size_t nleft;
    dsq_failover_stats stats;
    bool draining;                 /* this node's primaries move away */
    uint64_t started_ms;           /* a copy's node not seen since counts as gone from then */
    dsq_failover_record recent[DSQ_FAILOVER_RECENT];
    size_t nrecent, recent_at;     /* a ring: the next slot */
};

/* Tell who asked by hand (once). */
static void tell(fent *e, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    dsq_failover_promoted_fn fn = e->asked;
    e->asked = NULL;
    if (fn != NULL)
        fn(e->asked_arg, rc, epoch, lsn, msg);
}

static fent *ent_get(dsq_failover *f, const char *db)
{
    fent *e = dsq_container_of(dsq_htab_find(&f->ents, db), fent, link);
    if (e != NULL)
        return e;
    if ((e = calloc(1, sizeof *e)) == NULL)
        return NULL;
    snprintf(e->db, sizeof e->db, "%s", db);
    if (dsq_htab_add(&f->ents, &e->link, e->db) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

static void ent_drop(dsq_failover *f, fent *e)
{
    tell(e, -1, 0, 0, "the cluster is stopping");
    dsq_htab_remove(&f->ents, &e->link);
    free(e);
}

/* A failure: not again before the backoff. */
static void ent_failed(dsq_failover *f, fent *e)
{
    f->stats.failed++;
    e->inflight = false;
    e->backoff_ms = e->backoff_ms == 0 ? BACKOFF_MIN_MS : e->backoff_ms * 2;
    if (e->backoff_ms > BACKOFF_MAX_MS)
        e->backoff_ms = BACKOFF_MAX_MS;
    e->next_ms = dsq_now_ms() + e->backoff_ms;
}

static uint64_t left_at(const dsq_failover *f, const char *id)
{
    for (size_t i = 0; i < f->nleft; i++)
        if (strcmp(f->left[i].id, id) == 0)
            return f->left[i].at_ms;
    return 0;
}

static void remember(dsq_failover *f, const fent *e, uint64_t epoch)
{
    dsq_failover_record *r = &f->recent[f->recent_at];
    f->recent_at = (f->recent_at + 1) % DSQ_FAILOVER_RECENT;
    if (f->nrecent < DSQ_FAILOVER_RECENT)
        f->nrecent++;
    uint64_t left = left_at(f, e->from), now = dsq_now_ms();
    *r = (dsq_failover_record){.epoch = epoch, .at_ms = dsq_wall_ms(), .took_ms = left && now > left ? now - left : 0};
    snprintf(r->db, sizeof r->db, "%s", e->db);
    snprintf(r->from, sizeof r->from, "%s", e->from);
    snprintf(r->to, sizeof r->to, "%s", f->self);
}

/* ---- promoting ---------------------------------------------------------------------------------- */

static bool has_copy(const dsq_assignment *a, const char *id);
static void on_written_then(void *ud, int rc, const dsq_assignment *now, const char *msg);

static void on_epoch_written(void *ud, int rc, const dsq_assignment *now, const char *msg)
{
    char *db = ud;
    (void)now;
    if (rc != 0)
        DSQ_DEBUG("failover_epoch_not_written", "db=%s rc=%d reason=%s", db, rc, dsq_log_q(msg ? msg : ""));
    free(db);
}

/* A promotion chose a higher epoch than etcd's, or the copies changed:
 * etcd's assignment follows (the copies replication holds, in the
 * assignment's order where they stay). Also from the sweep, so that a
 * write lost with etcd's trouble is made again. */
static int write_epoch_then(dsq_failover *f, const char *db, uint64_t epoch, fctx *then);

static void write_epoch(dsq_failover *f, const char *db, uint64_t epoch) { write_epoch_then(f, db, epoch, NULL); }

/* write_epoch, and with `then`, its answer posted to it (epoch_written):
 * 0 when so; 1 when there was nothing to write, -1 when it could not be
 * asked (then is the caller's still). */
static int write_on(dsq_failover *f, dsq_assign *as, dsq_assignment a, char (*ids)[DSQ_NODE_ID_MAX], size_t n,
                    uint64_t epoch, fctx *then);

static int write_epoch_then(dsq_failover *f, const char *db, uint64_t epoch, fctx *then)
{
    char ids[DSQ_ASSIGN_COPIES_MAX][DSQ_NODE_ID_MAX];
    size_t n = f->cfg.copyset != NULL ? f->cfg.copyset(f->cfg.ud, db, ids, DSQ_ASSIGN_COPIES_MAX) : 0;
    if (n == 0 && epoch == 0)
        return 1; /* (the sweep's look: copies never changed, no epoch to write) */
    dsq_assign *as = dsq_eplace_assign(f->cfg.eplace);
    dsq_assignment a;
    if (as == NULL || dsq_assign_lookup(as, db, &a) != 0)
        return 1;
    return write_on(f, as, a, ids, n, epoch, then);
}

/* Write assignment a (as read) with the copies ids[0..n) (0: as they are)
 * and at least `epoch`, unless it names another primary or has them
 * already: as write_epoch_then. */
static int write_on(dsq_failover *f, dsq_assign *as, dsq_assignment a, char (*ids)[DSQ_NODE_ID_MAX], size_t n,
                    uint64_t epoch, fctx *then)
{
    const char *db = a.db;
    if (strcmp(a.primary, f->self) != 0)
        return 1;
    bool same = n == 0 || n == a.ncopies;
    for (size_t i = 0; i < n && same; i++)
        same = has_copy(&a, ids[i]);
    if (a.epoch >= epoch && same)
        return 1;
    if (!same) {
        dsq_assignment b = a;
        b.ncopies = 0;
        for (size_t k = 0; k < a.ncopies; k++) /* those that stay, in their order */
            for (size_t i = 0; i < n; i++)
                if (strcmp(a.copies[k], ids[i]) == 0)
                    snprintf(b.copies[b.ncopies++], sizeof b.copies[0], "%.*s", (int)sizeof b.copies[0] - 1, ids[i]);
        for (size_t i = 0; i < n; i++) /* then the new ones */
            if (!has_copy(&a, ids[i]))
                snprintf(b.copies[b.ncopies++], sizeof b.copies[0], "%.*s", (int)sizeof b.copies[0] - 1, ids[i]);
        memcpy(a.copies, b.copies, sizeof a.copies);
        a.ncopies = b.ncopies;
        DSQ_INFO("assignment_copies", "db=%s copies=%zu", db, a.ncopies);
    }
    if (a.epoch < epoch)
        a.epoch = epoch;
    if (then != NULL)
        return dsq_assign_update(as, &a, a.mod_revision, on_written_then, then) == 0 ? 0 : -1;
    char *u = strdup(db);
    if (u != NULL && dsq_assign_update(as, &a, a.mod_revision, on_epoch_written, u) != 0)
        free(u);
    return 0;
}

static void promoted(void *arg, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    fctx *x = arg;
    dsq_failover *f = x->f;
    if (f == NULL) { /* (stopped meanwhile) */
        free(x);
        return;
    }
    dsq_list_remove(&f->promos, &x->link);
    fent *e = dsq_container_of(dsq_htab_find(&f->ents, x->db), fent, link);
    if (rc != 0) {
        DSQ_WARN("failover_promotion_failed", "db=%s epoch=%llu reason=%s", x->db, (unsigned long long)x->epoch,
                 dsq_log_q(msg ? msg : ""));
        if (e != NULL) {
            tell(e, -1, 0, 0, msg ? msg : "the promotion failed");
            ent_failed(f, e);
        }
        free(x);
        return;
    }
    f->stats.promoted++;
    if (e != NULL) {
        tell(e, 0, epoch, lsn, NULL);
        remember(f, e, epoch);
        DSQ_INFO("failover_done", "db=%s from=%s epoch=%llu took_ms=%llu", x->db, e->from[0] ? e->from : "-",
                 (unsigned long long)epoch,
                 (unsigned long long)f->recent[(f->recent_at + DSQ_FAILOVER_RECENT - 1) % DSQ_FAILOVER_RECENT].took_ms);
        ent_drop(f, e);
    }
    write_epoch(f, x->db, epoch); /* (a higher epoch than written, or copies that changed) */
    free(x);
}

static void promote(dsq_failover *f, fent *e, uint64_t min_epoch)
{
    fctx *x = calloc(1, sizeof *x);
    char err[300];
    if (x == NULL) {
        ent_failed(f, e);
        return;
    }
    x->f = f;
    x->epoch = min_epoch;
    snprintf(x->db, sizeof x->db, "%s", e->db);
    dsq_list_push(&f->promos, &x->link);
    int rc = f->cfg.promote(f->cfg.ud, e->db, min_epoch, promoted, x, err, sizeof err);
    if (rc != 0) {
        dsq_list_remove(&f->promos, &x->link);
        free(x);
        if (rc == -2) { /* one under way here: it ends by itself (asked by hand: ask again) */
            tell(e, -2, 0, 0, err);
            e->inflight = false;
            e->next_ms = dsq_now_ms() + BACKOFF_MIN_MS;
        } else {
            DSQ_WARN("failover_promotion_failed", "db=%s reason=%s", e->db, dsq_log_q(err));
            tell(e, -1, 0, 0, err);
            ent_failed(f, e);
        }
    }
}

/* ---- the compare-and-swap ---------------------------------------------------------------------- */

static void write_self(dsq_failover *f, dsq_assign *as, const dsq_assignment *a, fent *e);

/* An answer's entry on the loop, or NULL (x freed) when there is none to
 * act on any more (stopping, or the entry went). */
static fent *answer_ent(fctx *x, bool run)
{
    dsq_failover *f = x->f;
    fent *e = run && !f->stopping ? dsq_container_of(dsq_htab_find(&f->ents, x->db), fent, link) : NULL;
    if (e == NULL)
        free(x);
    return e;
}

static void cas_done(void *arg, bool run)
{
    fctx *x = arg;
    dsq_failover *f = x->f;
    fent *e = answer_ent(x, run);
    if (e == NULL)
        return;
    if (x->rc == 0 && x->handing) {
        /* (the other node promotes; this entry goes once it is primary
         * there: the sweep no longer sees this node named) */
        e->inflight = false;
        e->next_ms = dsq_now_ms() + BACKOFF_MIN_MS;
    } else if (x->rc == 0) {
        f->stats.won++;
        DSQ_INFO("failover_won", "db=%s from=%s epoch=%llu", x->db, e->from, (unsigned long long)x->epoch);
        promote(f, e, x->epoch);
    } else if (x->rc == 1 || x->rc == 2) {
        f->stats.lost++;
        DSQ_INFO("failover_lost", "db=%s from=%s reason=%s", x->db, e->from,
                 dsq_log_q("the assignment changed first (another node's write)"));
        tell(e, -2, 0, 0, "the database's assignment changed meanwhile (another node's promotion); ask again");
        ent_drop(f, e);
    } else {
        DSQ_WARN("failover_write_failed", "db=%s reason=%s", x->db, dsq_log_q(x->msg));
        tell(e, -1, 0, 0, x->msg[0] ? x->msg : "etcd did not answer");
        ent_failed(f, e);
    }
    free(x);
}

/* On the assignments' request thread. */
static void on_cas(void *ud, int rc, const dsq_assignment *now, const char *msg)
{
    fctx *x = ud;
    (void)now;
    x->rc = rc;
    snprintf(x->msg, sizeof x->msg, "%s", msg ? msg : "");
    if (dsq_mailbox_post(&x->f->mb, cas_done, x) != 0)
        free(x); /* (stopping) */
}

/* db's entry when the sweep may act on it now (none under way, its
 * backoff over), else NULL; either way the sweep wanted it. */
static fent *due(dsq_failover *f, const char *db)
{
    fent *e = ent_get(f, db);
    if (e == NULL)
        return NULL;
    e->seen = true;
    return e->inflight || dsq_now_ms() < e->next_ms ? NULL : e;
}

/* Write a's assignment naming `to` as primary, in epoch + 1, by
 * compare-and-swap; then (cas_done) this node promotes its copy, unless
 * `handing` (a drain: `to` does). With `copies` (n of them), the
 * assignment names those. */
static void write_primary_copies(dsq_failover *f, dsq_assign *as, const dsq_assignment *a, fent *e, const char *to,
                                 bool handing, char (*copies)[DSQ_NODE_ID_MAX], size_t n)
{
    dsq_assignment want = *a;
    if (n > 0) {
        want.ncopies = 0;
        for (size_t i = 0; i < n && i < DSQ_ASSIGN_COPIES_MAX; i++)
            snprintf(want.copies[want.ncopies++], sizeof want.copies[0], "%.*s", (int)sizeof want.copies[0] - 1,
                     copies[i]);
    }
    want.epoch = a->epoch + 1;
    snprintf(want.primary, sizeof want.primary, "%s", to);
    fctx *x = calloc(1, sizeof *x);
    if (x == NULL)
        return;
    x->f = f;
    x->epoch = want.epoch;
    x->handing = handing;
    snprintf(x->db, sizeof x->db, "%s", a->db);
    e->inflight = true;
    f->stats.attempts++;
    if (handing)
        DSQ_INFO("drain_hand_over", "db=%s to=%s epoch=%llu", a->db, to, (unsigned long long)want.epoch);
    else
        DSQ_INFO("failover_candidate", "db=%s from=%s epoch=%llu", a->db, a->primary, (unsigned long long)want.epoch);
    if (dsq_assign_update(as, &want, a->mod_revision, on_cas, x) != 0) {
        free(x);
        tell(e, -1, 0, 0, "cannot ask etcd");
        ent_failed(f, e);
    }
}

static void write_primary(dsq_failover *f, dsq_assign *as, const dsq_assignment *a, fent *e, const char *to,
                          bool handing)
{
    write_primary_copies(f, as, a, e, to, handing, NULL, 0);
}

/* This node is to be a's primary by etcd's copies, which lag: a change
 * took it out of the copy set (or is taking it out). The assignment is
 * written naming the first member alive as primary, with the copies
 * replication knows; that node promotes (reconcile). false: it cannot
 * (no member alive, or the set not known here). */
static bool hand_to_member(dsq_failover *f, dsq_assign *as, const dsq_assignment *a, fent *e)
{
    char ids[DSQ_ASSIGN_COPIES_MAX][DSQ_NODE_ID_MAX];
    size_t n = f->cfg.copyset != NULL ? f->cfg.copyset(f->cfg.ud, a->db, ids, DSQ_ASSIGN_COPIES_MAX) : 0;
    const char *to = NULL;
    for (size_t i = 0; i < n && to == NULL; i++)
        if (strcmp(ids[i], f->self) != 0 && dsq_eplace_alive(f->cfg.eplace, ids[i]))
            to = ids[i];
    if (to == NULL)
        return false;
    DSQ_INFO("failover_not_member", "db=%s to=%s", a->db, to);
    write_primary_copies(f, as, a, e, to, true, ids, n);
    return true;
}

/* The compare-and-swap that makes this node a's primary, then (cas_done)
 * the promotion. */
static void write_self(dsq_failover *f, dsq_assign *as, const dsq_assignment *a, fent *e)
{
    if (f->cfg.member != NULL && !f->cfg.member(f->cfg.ud, a->db)) {
        if (!hand_to_member(f, as, a, e))
            ent_failed(f, e);
        return;
    }
    snprintf(e->from, sizeof e->from, "%s", a->primary);
    write_primary(f, as, a, e, f->self, false);
}

/* Step forward for a's database: write it with this node as primary. */
static void take_over(dsq_failover *f, dsq_assign *as, const dsq_assignment *a)
{
    fent *e = due(f, a->db);
    if (e != NULL)
        write_self(f, as, a, e);
}

int dsq_failover_promote(dsq_failover *f, const char *db, dsq_failover_promoted_fn done, void *arg, char *err,
                         size_t errlen)
{
    dsq_assign *as = f != NULL && !f->stopping ? dsq_eplace_assign(f->cfg.eplace) : NULL;
    dsq_assignment a;
    if (as == NULL) {
        snprintf(err, errlen, "the cluster is stopping");
        return -1;
    }
    if (dsq_assign_lookup(as, db, &a) != 0) {
        snprintf(err, errlen, "database %s is not placed (no assignment in etcd)", db);
        return -1;
    }
    if (!has_copy(&a, f->self) && f->cfg.member != NULL && f->cfg.member(f->cfg.ud, db)) {
        /* A change made this node a copy, and the assignment as this node
         * last heard of it does not name it yet: a moment. */
        snprintf(err, errlen, "the assignment of database %s this node knows does not name it yet (its copies just "
                              "changed); ask again", db);
        return -2;
    }
    if (!has_copy(&a, f->self)) {
        snprintf(err, errlen, "this node holds no copy of database %s (its copies: %s%s%s%s%s)", db, a.copies[0],
                 a.ncopies > 1 ? ", " : "", a.ncopies > 1 ? a.copies[1] : "", a.ncopies > 2 ? ", " : "",
                 a.ncopies > 2 ? a.copies[2] : "");
        return -1;
    }
    if (strcmp(a.primary, f->self) == 0 && f->cfg.primary_here(f->cfg.ud, db)) {
        snprintf(err, errlen, "this node is the primary of database %s already (epoch %llu)", db,
                 (unsigned long long)a.epoch);
        return -1;
    }
    fent *e = ent_get(f, db);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (e->inflight || e->asked != NULL) {
        snprintf(err, errlen, "a promotion of database %s is under way here; ask again once it ended", db);
        return -2;
    }
    e->asked = done;
    e->asked_arg = arg;
    e->seen = true;
    e->next_ms = 0;
    write_self(f, as, &a, e);
    return 0;
}

/* etcd's answer to a reconcile's check (reconcile), on the loop. */
static void check_done(void *arg, bool run)
{
    fctx *x = arg;
    dsq_failover *f = x->f;
    fent *e = answer_ent(x, run);
    if (e == NULL)
        return;
    if (x->rc == 0 && strcmp(x->primary, f->self) == 0) {
        if (f->cfg.primary_here(f->cfg.ud, x->db)) { /* (it is by now) */
            e->inflight = false;
            e->next_ms = dsq_now_ms() + BACKOFF_MIN_MS;
        } else {
            DSQ_INFO("failover_reconcile", "db=%s epoch=%llu", x->db, (unsigned long long)x->epoch);
            promote(f, e, x->epoch);
        }
    } else if (x->rc == 0 || x->rc == 1) {
        /* This node's copy of the assignments is behind: the watch brings
         * the newer one, and the sweep looks again then. */
        DSQ_INFO("failover_reconcile_skipped", "db=%s primary=%s epoch=%llu reason=%s", x->db,
                 x->primary[0] ? x->primary : "-", (unsigned long long)x->epoch,
                 dsq_log_q("etcd no longer names this node the primary"));
        e->inflight = false;
        e->next_ms = dsq_now_ms() + BACKOFF_MIN_MS;
    } else {
        DSQ_WARN("failover_reconcile_unchecked", "db=%s reason=%s", x->db, dsq_log_q(x->msg));
        ent_failed(f, e);
    }
    free(x);
}

/* On the assignments' request thread. */
static void on_check(void *ud, int rc, const dsq_assignment *now, const char *msg)
{
    fctx *x = ud;
    x->rc = rc;
    if (rc == 0 && now != NULL) {
        x->epoch = now->epoch;
        snprintf(x->primary, sizeof x->primary, "%s", now->primary);
    }
    snprintf(x->msg, sizeof x->msg, "%s", msg ? msg : "");
    if (dsq_mailbox_post(&x->f->mb, check_done, x) != 0)
        free(x); /* (stopping) */
}

/* The assignment names this node, whose copy is not the primary. That is
 * this node's copy of the assignments, which can be behind: cut off from
 * etcd, it still names this node while the others moved the primary away
 * (a failover), and promoting then would take the database back from the
 * primary etcd names, which would take it back in turn, and so on. So
 * etcd is asked first (a read of the key, not the cache), and the copy
 * promoted only when etcd names this node still; when etcd cannot be
 * asked, nothing is done (the backoff). */
static void reconcile(dsq_failover *f, dsq_assign *as, const dsq_assignment *a)
{
    fent *e = due(f, a->db);
    if (e == NULL)
        return;
    if (f->cfg.member != NULL && !f->cfg.member(f->cfg.ud, a->db)) { /* (etcd's copies lag a change) */
        if (!hand_to_member(f, as, a, e))
            ent_failed(f, e);
        return;
    }
    fctx *x = calloc(1, sizeof *x);
    if (x == NULL)
        return;
    x->f = f;
    snprintf(x->db, sizeof x->db, "%s", a->db);
    e->inflight = true;
    e->from[0] = '\0';
    if (dsq_assign_get(as, a->db, on_check, x) != 0) {
        free(x);
        ent_failed(f, e);
    }
}

/* ---- re-replication and moves -------------------------------------------------------------------- */

/* A change's assignment written (or not: the sweep writes it again): who
 * asked is told now, so that the copies etcd names are the new ones by
 * then. */
static void change_written(void *arg, bool run)
{
    fctx *x = arg;
    dsq_failover *f = x->f;
    fent *e = answer_ent(x, run);
    if (e == NULL)
        return;
    /* The key changed since this node's copy of it (a write of its own
     * the watch has not shown yet): written again on its value now, a few
     * times, so that who asked is told once etcd names the new copies. */
    dsq_assign *as = dsq_eplace_assign(f->cfg.eplace);
    char ids[DSQ_ASSIGN_COPIES_MAX][DSQ_NODE_ID_MAX];
    size_t n = x->has_now && as != NULL && f->cfg.copyset != NULL && ++x->tries < 4
                   ? f->cfg.copyset(f->cfg.ud, x->db, ids, DSQ_ASSIGN_COPIES_MAX)
                   : 0;
    if (n > 0 && write_on(f, as, x->now, ids, n, x->epoch, x) == 0)
        return;
    if (x->rc != 0)
        DSQ_WARN("assignment_copies_not_written", "db=%s reason=%s", x->db, dsq_log_q(x->msg));
    tell(e, 0, x->epoch, x->lsn, NULL);
    ent_drop(f, e);
    free(x);
}

/* On the assignments' request thread. */
static void on_written_then(void *ud, int rc, const dsq_assignment *now, const char *msg)
{
    fctx *x = ud;
    x->has_now = rc == 1 && now != NULL;
    if (x->has_now)
        x->now = *now;
    x->rc = rc;
    snprintf(x->msg, sizeof x->msg, "%s", msg ? msg : "");
    if (dsq_mailbox_post(&x->f->mb, change_written, x) != 0)
        free(x); /* (stopping) */
}

static void changed(void *arg, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    fctx *x = arg;
    dsq_failover *f = x->f;
    if (f == NULL) {
        free(x);
        return;
    }
    dsq_list_remove(&f->promos, &x->link);
    fent *e = dsq_container_of(dsq_htab_find(&f->ents, x->db), fent, link);
    if (rc != 0) {
        if (e != NULL) {
            tell(e, -1, 0, 0, msg ? msg : "the change failed");
            ent_failed(f, e);
        }
    } else {
        f->stats.replaced++;
        x->epoch = epoch;
        x->lsn = lsn;
        if (e != NULL && write_epoch_then(f, x->db, epoch, x) == 0)
            return; /* (told once etcd answered: change_written) */
        if (e != NULL) {
            tell(e, 0, epoch, lsn, NULL);
            ent_drop(f, e);
        } else {
            write_epoch(f, x->db, epoch); /* the assignment names the new copies */
        }
    }
    free(x);
}

/* Replace a's copy on `out` by one on `in` (this node a's primary). */
static int start_change(dsq_failover *f, fent *e, const dsq_assignment *a, const char *out, const char *in,
                        char *err, size_t errlen)
{
    fctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    x->f = f;
    x->epoch = a->epoch + 1;
    snprintf(x->db, sizeof x->db, "%s", a->db);
    dsq_list_push(&f->promos, &x->link);
    e->inflight = true;
    snprintf(e->from, sizeof e->from, "%s", out);
    DSQ_INFO("copy_replace", "db=%s out=%s in=%s", a->db, out, in);
    int rc = f->cfg.change(f->cfg.ud, a->db, out, in, a->epoch + 1, changed, x, err, errlen);
    if (rc != 0) {
        dsq_list_remove(&f->promos, &x->link);
        free(x);
        e->inflight = false;
        return rc;
    }
    return 0;
}

/* The node to hold a new copy of a in place of one gone: weighted
 * rendezvous hashing (placement.h) over the nodes alive, not draining and
 * without a copy. false: none. */
static bool pick_new(const dsq_failover *f, const dsq_assignment *a, char *out, size_t len)
{
    dsq_place_node nodes[DSQ_NODES_MAX];
    size_t n = 0;
    for (uint32_t i = 0; f->cfg.ids != NULL && i < dsq_nodeset_count(f->cfg.ids) && n < DSQ_NODES_MAX; i++) {
        const char *id = dsq_nodeset_id(f->cfg.ids, i);
        bool alive;
        uint64_t dbs, bytes;
        if (id == NULL || has_copy(a, id) || dsq_eplace_draining(f->cfg.eplace, id))
            continue;
        dsq_eplace_node_load(f->cfg.eplace, id, &alive, &dbs, &bytes);
        if (alive)
            nodes[n++] = (dsq_place_node){.id = id, .dbs = dbs, .bytes = bytes};
    }
    uint32_t pick;
    if (n == 0 || dsq_place_weighted(a->db, nodes, n, 1, &pick) != 1)
        return false;
    snprintf(out, len, "%s", nodes[pick].id);
    return true;
}

/* This node is a's primary: a copy whose node has been gone for
 * node_dead_after is replaced by one on another node. */
static void re_replicate(dsq_failover *f, const dsq_assignment *a)
{
    uint64_t now = dsq_now_ms();
    const char *out = NULL;
    for (size_t k = 0; k < a->ncopies && out == NULL; k++) {
        const char *id = a->copies[k];
        if (strcmp(id, f->self) == 0 || dsq_eplace_alive(f->cfg.eplace, id))
            continue;
        uint64_t gone = left_at(f, id);
        if (gone == 0 || gone < f->started_ms)
            gone = f->started_ms; /* (not seen in this run: from its start) */
        if (now >= gone + f->cfg.dead_after_ms)
            out = id;
    }
    if (out == NULL)
        return;
    fent *e = due(f, a->db);
    if (e == NULL)
        return;
    char in[DSQ_NODE_ID_MAX], err[300];
    if (!pick_new(f, a, in, sizeof in)) {
        if (e->backoff_ms == 0)
            DSQ_WARN("copy_replace_stuck", "db=%s out=%s reason=%s", a->db, out,
                     dsq_log_q("no node alive without a copy to take its place"));
        e->backoff_ms = BACKOFF_MAX_MS;
        e->next_ms = now + BACKOFF_MAX_MS;
        return;
    }
    if (start_change(f, e, a, out, in, err, sizeof err) != 0) {
        DSQ_WARN("copy_replace_failed", "db=%s out=%s in=%s reason=%s", a->db, out, in, dsq_log_q(err));
        ent_failed(f, e);
    }
}

int dsq_failover_move(dsq_failover *f, const char *db, const char *from, const char *to,
                      dsq_failover_promoted_fn done, void *arg, char *err, size_t errlen)
{
    dsq_assign *as = f != NULL && !f->stopping ? dsq_eplace_assign(f->cfg.eplace) : NULL;
    dsq_assignment a;
    if (as == NULL) {
        snprintf(err, errlen, "this node is stopping");
        return -1;
    }
    if (dsq_assign_lookup(as, db, &a) != 0) {
        snprintf(err, errlen, "database %s is not placed", db);
        return -1;
    }
    if (strcmp(a.primary, f->self) != 0 || !f->cfg.primary_here(f->cfg.ud, db)) {
        snprintf(err, errlen, "this node is not the primary of database %s (node %s is, by its assignment)", db,
                 a.primary);
        return -1;
    }
    if (!has_copy(&a, from) || strcmp(from, f->self) == 0) {
        snprintf(err, errlen, "node %s holds no copy of database %s other than its primary (to move the primary, "
                              "promote another copy first)", from, db);
        return -1;
    }
    if (has_copy(&a, to) || !dsq_eplace_alive(f->cfg.eplace, to)) {
        snprintf(err, errlen, "node %s %s", to, has_copy(&a, to) ? "holds a copy already" : "is not alive in etcd");
        return -1;
    }
    fent *e = ent_get(f, db);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (e->inflight) {
        snprintf(err, errlen, "a failover, move or change of database %s is under way here", db);
        return -2;
    }
    e->seen = true;
    int rc = start_change(f, e, &a, from, to, err, errlen);
    if (rc == 0) {
        e->asked = done;
        e->asked_arg = arg;
    }
    return rc;
}

/* ---- the sweep ----------------------------------------------------------------------------------- */

/* The copy of a that is to be its primary in place of a->primary: the
 * first alive in the assignment's order, not draining (a draining one
 * only when `or_draining` and no other is alive); NULL: none. */
static const char *next_primary(const dsq_eplace *ep, const dsq_assignment *a, bool or_draining)
{
    const char *spare = NULL;
    for (size_t k = 0; k < a->ncopies; k++) {
        const char *id = a->copies[k];
        if (strcmp(id, a->primary) == 0 || !dsq_eplace_alive(ep, id))
            continue;
        if (!dsq_eplace_draining(ep, id))
            return id;
        if (spare == NULL)
            spare = id;
    }
    return or_draining ? spare : NULL;
}

/* This node drains: a's primary moves to another copy. The assignment is
 * written naming it (epoch + 1); that node, named there and not primary,
 * promotes its copy (reconcile), which fences this one. */
static void hand_over(dsq_failover *f, dsq_assign *as, const dsq_assignment *a)
{
    fent *e = due(f, a->db);
    if (e == NULL)
        return;
    const char *to = next_primary(f->cfg.eplace, a, false);
    if (to == NULL) {
        if (e->backoff_ms == 0)
            DSQ_WARN("drain_stuck", "db=%s reason=%s", a->db, dsq_log_q("no other copy is alive and not draining"));
        e->backoff_ms = BACKOFF_MAX_MS;
        e->next_ms = dsq_now_ms() + BACKOFF_MIN_MS;
        return;
    }
    write_primary(f, as, a, e, to, true);
}

typedef struct todo {
    dsq_assignment *v;
    size_t n, cap;
    const dsq_failover *f;
} todo;

static bool has_copy(const dsq_assignment *a, const char *id)
{
    for (size_t i = 0; i < a->ncopies; i++)
        if (strcmp(a->copies[i], id) == 0)
            return true;
    return false;
}

/* Under the assignments' lock: only copy out what this node may act on. */
static int collect(void *ud, const dsq_assignment *a)
{
    todo *t = ud;
    if (!has_copy(a, t->f->self))
        return 0;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        dsq_assignment *v = realloc(t->v, cap * sizeof *v);
        if (v == NULL)
            return 1; /* (the rest at the next sweep) */
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = *a;
    return 0;
}

static void sweep(dsq_failover *f)
{
    dsq_eplace *ep = f->cfg.eplace;
    dsq_assign *as = dsq_eplace_assign(ep);
    if (f->stopping || as == NULL || !dsq_eplace_loaded(ep) || !dsq_eplace_view_whole(ep))
        return;
    todo t = {.f = f};
    dsq_assign_each(as, collect, &t);
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&f->ents, &it)) != NULL;)
        dsq_container_of(h, fent, link)->seen = false;
    for (size_t i = 0; i < t.n; i++) {
        const dsq_assignment *a = &t.v[i];
        if (dsq_eplace_alive(ep, a->primary)) {
            if (strcmp(a->primary, f->self) == 0 && f->draining)
                hand_over(f, as, a);
            else if (strcmp(a->primary, f->self) == 0 && !f->cfg.primary_here(f->cfg.ud, a->db))
                reconcile(f, as, a);
            else if (strcmp(a->primary, f->self) == 0) {
                fent *e = dsq_container_of(dsq_htab_find(&f->ents, a->db), fent, link);
                if (e != NULL && e->inflight) {
                    e->seen = true;
                    continue;
                }
                write_epoch(f, a->db, 0); /* (copies changed and etcd not told: told again) */
                if (f->cfg.dead_after_ms > 0 && f->cfg.change != NULL)
                    re_replicate(f, a);
            }
            continue;
        }
        /* The primary's node is gone: the first copy alive steps forward
         * (one draining only when no other is alive). */
        const char *who = next_primary(ep, a, true);
        if (who != NULL && strcmp(who, f->self) == 0)
            take_over(f, as, a);
    }
    free(t.v);
    /* What no longer needs acting on, and is not under way, goes. */
    it = (dsq_htab_iter){0};
    for (dsq_hnode *h; (h = dsq_htab_next(&f->ents, &it)) != NULL;) {
        fent *e = dsq_container_of(h, fent, link);
        if (!e->seen && !e->inflight)
            ent_drop(f, e);
    }
}

static void on_sweep(uv_timer_t *t) { sweep(t->data); }

void dsq_failover_kick(dsq_failover *f)
{
    if (f != NULL && !f->stopping)
        uv_timer_start(&f->kick, on_sweep, 0, 0); /* (once, soon: several kicks make one sweep) */
}

void dsq_failover_set_draining(dsq_failover *f, bool draining)
{
    if (f == NULL)
        return;
    f->draining = draining;
    dsq_failover_kick(f);
}

bool dsq_failover_draining(const dsq_failover *f) { return f != NULL && f->draining; }

void dsq_failover_node_left(dsq_failover *f, const char *id)
{
    if (f == NULL)
        return;
    size_t i = 0;
    while (i < f->nleft && strcmp(f->left[i].id, id) != 0)
        i++;
    if (i == f->nleft) {
        if (f->nleft == DSQ_NODES_MAX)
            return;
        f->nleft++;
        snprintf(f->left[i].id, sizeof f->left[i].id, "%s", id);
    }
    f->left[i].at_ms = dsq_now_ms();
    dsq_failover_kick(f);
}

/* ---- the object ---------------------------------------------------------------------------------- */

int dsq_failover_start(const dsq_failover_cfg *cfg, dsq_failover **out, char *err, size_t errlen)
{
    dsq_failover *f = calloc(1, sizeof *f);
    if (f == NULL || dsq_mailbox_init(&f->mb, cfg->loop) != 0) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->cfg = *cfg;
    f->started_ms = dsq_now_ms();
    snprintf(f->self, sizeof f->self, "%s", cfg->self);
    f->cfg.self = f->self;
    uv_timer_init(cfg->loop, &f->sweep);
    uv_timer_init(cfg->loop, &f->kick);
    f->sweep.data = f->kick.data = f;
    uv_unref((uv_handle_t *)&f->sweep);
    uv_unref((uv_handle_t *)&f->kick);
    uv_timer_start(&f->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = f;
    return 0;
}

static void maybe_free(dsq_failover *f)
{
    if (f->closing > 0)
        return;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&f->ents, &it)) != NULL;)
        free(dsq_container_of(h, fent, link));
    dsq_htab_free(&f->ents);
    free(f);
}

static void timer_closed(uv_handle_t *h)
{
    dsq_failover *f = h->data;
    f->closing--;
    maybe_free(f);
}

static void mailbox_closed(dsq_mailbox *m)
{
    dsq_failover *f = dsq_container_of(m, dsq_failover, mb);
    f->closing--;
    maybe_free(f);
}

void dsq_failover_quiesce(dsq_failover *f)
{
    if (f == NULL || f->stopping)
        return;
    f->stopping = true; /* (answers still to come are dropped; the handles close at the stop) */
    uv_timer_stop(&f->sweep);
    uv_timer_stop(&f->kick);
}

void dsq_failover_stop(dsq_failover *f)
{
    if (f == NULL)
        return;
    f->stopping = true;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&f->ents, &it)) != NULL;)
        tell(dsq_container_of(h, fent, link), -1, 0, 0, "the node is stopping");
    fctx *x, *tmp;
    dsq_list_foreach_safe(x, tmp, &f->promos, link) {
        dsq_list_remove(&f->promos, &x->link);
        x->f = NULL; /* (freed when it ends) */
    }
    f->closing = 3;
    uv_timer_stop(&f->sweep);
    uv_timer_stop(&f->kick);
    uv_close((uv_handle_t *)&f->sweep, timer_closed);
    uv_close((uv_handle_t *)&f->kick, timer_closed);
    dsq_mailbox_close(&f->mb, mailbox_closed);
}

void dsq_failover_stats_get(const dsq_failover *f, dsq_failover_stats *out)
{
    *out = f != NULL ? f->stats : (dsq_failover_stats){0};
}

size_t dsq_failover_recent(const dsq_failover *f, dsq_failover_record *out, size_t max)
{
    size_t n = 0;
    for (size_t k = 0; f != NULL && k < f->nrecent && n < max; k++)
        out[n++] = f->recent[(f->recent_at + DSQ_FAILOVER_RECENT - 1 - k) % DSQ_FAILOVER_RECENT];
    return n;
}
