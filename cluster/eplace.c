/* eplace — placement recorded in etcd (eplace.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/assign.h"
#include "cluster/eplace.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "common/util.h"

#define HOLD_MAX_MSGS 4096           /* messages held per database */
#define HOLD_MAX_BYTES (64u << 20)   /* bytes held in all */

/* A message held until its database is known. */
typedef struct held_msg {
    dsq_qnode link;
    size_t node;
    uint8_t type;
    size_t n;
    uint8_t p[];
} held_msg;

/* A database being placed or read: its waiters and held messages. */
typedef struct pend {
    dsq_hnode link;                /* in p->pend */
    char db[129];
    dsq_list waiters;              /* dsq_place_wait.link */
    dsq_queue held;                /* held_msg.link */
    size_t nheld;
} pend;

/* What the assignments' threads tell the loop. */
typedef enum ev_kind { EV_CHANGED, EV_DELETED, EV_LOADED, EV_GOT, EV_CREATED } ev_kind;

typedef struct pev {
    struct dsq_eplace *p;
    ev_kind kind;
    int rc;
    char db[129];
    char msg[256];
} pev;

typedef struct live_node {
    char id[DSQ_NODE_ID_MAX];
    uint64_t dbs, bytes;
    bool up;
    bool draining;                 /* no new database goes there */
} live_node;

struct dsq_eplace {
    dsq_eplace_cfg cfg;
    dsq_placement place;
    dsq_assign *assign;
    dsq_mailbox mb;                /* the assignments' events and answers, to the loop */
    bool stopping;                 /* loop thread */
    dsq_htab pend;                 /* pend.link (loop thread) */
    size_t held_bytes;
    live_node live[DSQ_NODES_MAX]; /* loop thread */
    size_t nlive;
    bool view_whole;               /* loop thread */
};

/* ---- the placement (any thread) --------------------------------------------------------------- */

static size_t copies_of(const dsq_placement *pl, const char *db, uint32_t *out, size_t max, uint32_t *primary,
                        uint64_t *epoch)
{
    dsq_eplace *p = pl->ud;
    dsq_assignment a;
    if (p->assign == NULL || dsq_assign_lookup(p->assign, db, &a) != 0)
        return 0;
    size_t n = 0;
    uint32_t prim = DSQ_NODE_NONE;
    for (size_t i = 0; i < a.ncopies && n < max; i++) {
        uint32_t ix;
        if (dsq_nodeset_intern(p->cfg.ids, a.copies[i], &ix) != 0)
            continue; /* (a 65th node: not a copy this node can name) */
        out[n++] = ix;
        if (strcmp(a.copies[i], a.primary) == 0)
            prim = ix;
    }
    if (n == 0)
        return 0;
    if (primary != NULL)
        *primary = prim != DSQ_NODE_NONE ? prim : out[0];
    if (epoch != NULL)
        *epoch = a.epoch;
    return n;
}

/* ---- events from the assignments' threads --------------------------------------------------- */

static void handle(dsq_eplace *p, const pev *e);

/* On the loop (run), or dropped at the mailbox's close. */
static void on_mail(void *arg, bool run)
{
    pev *e = arg;
    if (run && !e->p->stopping)
        handle(e->p, e);
    free(e);
}

static void post(dsq_eplace *p, ev_kind kind, int rc, const char *db, const char *msg)
{
    pev *e = calloc(1, sizeof *e);
    if (e == NULL) {
        /* A waiter then waits for the watch, or its caller's bound. */
        DSQ_ERROR("placement_event_lost", "db=%s reason=%s", dsq_log_q(db ? db : ""), dsq_log_q("out of memory"));
        return;
    }
    e->p = p;
    e->kind = kind;
    e->rc = rc;
    snprintf(e->db, sizeof e->db, "%s", db ? db : "");
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "");
    if (dsq_mailbox_post(&p->mb, on_mail, e) != 0)
        free(e); /* (stopping) */
}

static void on_assign_event(void *ud, const dsq_assign_event *ev)
{
    dsq_eplace *p = ud;
    switch (ev->type) {
    case DSQ_ASSIGN_LOADED: post(p, EV_LOADED, 0, NULL, NULL); break;
    case DSQ_ASSIGN_CHANGED: post(p, EV_CHANGED, 0, ev->db, NULL); break;
    case DSQ_ASSIGN_DELETED: post(p, EV_DELETED, 0, ev->db, NULL); break;
    default: break;
    }
}

/* A request to the assignments (get, create): what its answer becomes. */
typedef struct req {
    dsq_eplace *p;
    ev_kind kind;                  /* EV_GOT, EV_CREATED */
    char db[];
} req;

static req *req_new(dsq_eplace *p, ev_kind kind, const char *db)
{
    size_t len = strlen(db);
    req *u = malloc(sizeof *u + len + 1);
    if (u != NULL) {
        u->p = p;
        u->kind = kind;
        memcpy(u->db, db, len + 1);
    }
    return u;
}

/* Its answer, on the assignments' request thread. */
static void on_answer(void *ud, int rc, const dsq_assignment *now, const char *msg)
{
    req *u = ud;
    (void)now;
    post(u->p, u->kind, rc, u->db, msg);
    free(u);
}

/* ---- waiting ---------------------------------------------------------------------------------- */

static pend *pend_find(dsq_eplace *p, const char *db)
{
    return dsq_container_of(dsq_htab_find(&p->pend, db), pend, link);
}

/* Tell db's waiters, give back (rc 0) or drop its held messages. */
static void finish(dsq_eplace *p, const char *db, int rc, const char *msg)
{
    pend *x = pend_find(p, db);
    if (x == NULL)
        return;
    dsq_htab_remove(&p->pend, &x->link);
    dsq_place_wait *w;
    while ((w = dsq_container_of(x->waiters.head, dsq_place_wait, link)) != NULL) {
        dsq_list_remove(&x->waiters, &w->link);
        w->waiting = false;
        w->done(w, rc, msg);
    }
    dsq_qnode *q;
    while ((q = dsq_queue_pop(&x->held)) != NULL) {
        held_msg *m = dsq_container_of(q, held_msg, link);
        p->held_bytes -= m->n;
        if (rc == 0 && !p->stopping && p->cfg.replay != NULL)
            p->cfg.replay(p->cfg.ud, m->node, m->type, m->p, m->n);
        free(m);
    }
    free(x);
}

/* Choose db's copies over the nodes alive and create its key. */
static void place_new(dsq_eplace *p, const char *db)
{
    dsq_place_node nodes[DSQ_NODES_MAX];
    bool draining[DSQ_NODES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < p->nlive; i++)
        if (p->live[i].up) {
            draining[n] = p->live[i].draining;
            nodes[n++] = (dsq_place_node){.id = p->live[i].id, .dbs = p->live[i].dbs, .bytes = p->live[i].bytes};
        }
    if (n == 0) {
        finish(p, db, -1, "no node is alive in etcd to place it on");
        return;
    }
    unsigned want = p->cfg.replicas < DSQ_ASSIGN_COPIES_MAX ? p->cfg.replicas : DSQ_ASSIGN_COPIES_MAX;
    uint32_t rank[DSQ_NODES_MAX], pick[DSQ_NODES_MAX];
    size_t all = dsq_place_weighted(db, nodes, n, (unsigned)n, rank);
    /* Draining nodes go last (so never the primary while another node is
     * alive), the order otherwise kept. */
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < all && k < want; i++)
            if (draining[rank[i]] == (pass == 1))
                pick[k++] = rank[i];
    dsq_assignment a = {.epoch = 1, .ncopies = k};
    snprintf(a.db, sizeof a.db, "%s", db);
    for (size_t i = 0; i < k; i++)
        snprintf(a.copies[i], sizeof a.copies[i], "%s", nodes[pick[i]].id);
    snprintf(a.primary, sizeof a.primary, "%s", a.copies[0]);
    if (k < p->cfg.replicas)
        DSQ_WARN("placement_short", "db=%s copies=%zu replicas=%u reason=%s", db, k, p->cfg.replicas,
                 dsq_log_q("fewer nodes alive than copies wanted"));
    req *u = req_new(p, EV_CREATED, db);
    if (u == NULL || dsq_assign_create(p->assign, &a, on_answer, u) != 0) {
        free(u);
        finish(p, db, -1, "cannot ask etcd");
    }
}

static void handle(dsq_eplace *p, const pev *e)
{
    switch (e->kind) {
    case EV_LOADED: {
        DSQ_INFO("placement_loaded", "databases=%zu", dsq_assign_count(p->assign));
        /* A whole read tells no database one by one: those waited for that
         * it found are known now. */
        dsq_htab_iter it = {0};
        for (dsq_hnode *h; (h = dsq_htab_next(&p->pend, &it)) != NULL;) {
            pend *x = dsq_container_of(h, pend, link);
            dsq_assignment a;
            if (dsq_assign_lookup(p->assign, x->db, &a) == 0)
                finish(p, x->db, 0, NULL); /* (the walk has read on past x) */
        }
        break;
    }
    case EV_CHANGED:
        if (p->cfg.changed != NULL)
            p->cfg.changed(p->cfg.ud, e->db);
        finish(p, e->db, 0, NULL);
        break;
    case EV_DELETED:
        if (p->cfg.changed != NULL)
            p->cfg.changed(p->cfg.ud, e->db);
        break;
    case EV_GOT:
        if (e->rc == 0)
            finish(p, e->db, 0, NULL);
        else if (e->rc == 1 && !p->stopping)
            place_new(p, e->db);
        else
            finish(p, e->db, -1, e->msg[0] ? e->msg : "etcd did not answer");
        break;
    case EV_CREATED:
        if (e->rc == 0 || e->rc == 1) {
            DSQ_DEBUG("placement_created", "db=%s won=%s", e->db, e->rc == 0 ? "yes" : "no");
            finish(p, e->db, 0, NULL);
        } else {
            finish(p, e->db, -1, e->msg[0] ? e->msg : "etcd did not answer");
        }
        break;
    }
}

/* The database's pending entry, made (and its read asked) when new. */
static pend *pend_get(dsq_eplace *p, const char *db, char *err, size_t errlen)
{
    pend *x = pend_find(p, db);
    if (x != NULL)
        return x;
    if (strlen(db) >= sizeof x->db) {
        snprintf(err, errlen, "not a database name");
        return NULL;
    }
    if ((x = calloc(1, sizeof *x)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(x->db, sizeof x->db, "%s", db);
    req *u = req_new(p, EV_GOT, db);
    if (u == NULL || dsq_htab_add(&p->pend, &x->link, x->db) != 0) {
        free(u);
        free(x);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (dsq_assign_get(p->assign, db, on_answer, u) != 0) {
        free(u);
        dsq_htab_remove(&p->pend, &x->link);
        free(x);
        snprintf(err, errlen, "cannot ask etcd (stopping)");
        return NULL;
    }
    return x;
}

int dsq_eplace_wait(dsq_eplace *p, const char *db, dsq_place_wait *w, char *err, size_t errlen)
{
    dsq_assignment a;
    if (dsq_assign_lookup(p->assign, db, &a) == 0)
        return 0;
    if (p->stopping) {
        snprintf(err, errlen, "the cluster is stopping");
        return -1;
    }
    pend *x = pend_get(p, db, err, errlen);
    if (x == NULL)
        return -1;
    w->waiting = true;
    dsq_list_push(&x->waiters, &w->link);
    return 1;
}

void dsq_eplace_cancel(dsq_eplace *p, dsq_place_wait *w)
{
    if (!w->waiting)
        return;
    /* (the entry stays until its read answers: its messages still wait) */
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&p->pend, &it)) != NULL;) {
        pend *x = dsq_container_of(h, pend, link);
        dsq_place_wait *v, *tmp;
        dsq_list_foreach_safe(v, tmp, &x->waiters, link) {
            if (v == w) {
                dsq_list_remove(&x->waiters, &w->link);
                w->waiting = false;
                return;
            }
        }
    }
}

bool dsq_eplace_hold(dsq_eplace *p, const char *db, size_t node, uint8_t type, const uint8_t *msg, size_t n)
{
    dsq_assignment a;
    if (p->stopping || dsq_assign_lookup(p->assign, db, &a) == 0)
        return false;
    char why[128];
    pend *x = pend_get(p, db, why, sizeof why);
    if (x == NULL || x->nheld >= HOLD_MAX_MSGS || p->held_bytes + n > HOLD_MAX_BYTES) {
        DSQ_DEBUG("placement_message_dropped", "db=%s type=%u reason=%s", db, type,
                  dsq_log_q(x == NULL ? why : "too much held"));
        return true; /* (dropped: not for the caller to handle either) */
    }
    held_msg *m = malloc(sizeof *m + n);
    if (m == NULL)
        return true;
    m->node = node;
    m->type = type;
    m->n = n;
    memcpy(m->p, msg, n);
    dsq_queue_push(&x->held, &m->link);
    x->nheld++;
    p->held_bytes += n;
    return true;
}

/* ---- nodes ------------------------------------------------------------------------------------ */

void dsq_eplace_node(dsq_eplace *p, const char *id, bool up, bool draining, uint64_t dbs, uint64_t bytes)
{
    live_node *l = NULL;
    for (size_t i = 0; i < p->nlive && l == NULL; i++)
        if (strcmp(p->live[i].id, id) == 0)
            l = &p->live[i];
    if (l == NULL) {
        if (!up || p->nlive == DSQ_NODES_MAX)
            return;
        l = &p->live[p->nlive++];
        snprintf(l->id, sizeof l->id, "%s", id);
    }
    l->up = up;
    l->draining = up && draining;
    l->dbs = dbs;
    l->bytes = bytes;
}

bool dsq_eplace_draining(const dsq_eplace *p, const char *id)
{
    for (size_t i = 0; i < p->nlive; i++)
        if (strcmp(p->live[i].id, id) == 0)
            return p->live[i].draining;
    return false;
}

bool dsq_eplace_alive(const dsq_eplace *p, const char *id)
{
    for (size_t i = 0; i < p->nlive; i++)
        if (strcmp(p->live[i].id, id) == 0)
            return p->live[i].up;
    return false;
}

void dsq_eplace_node_load(const dsq_eplace *p, const char *id, bool *alive, uint64_t *dbs, uint64_t *bytes)
{
    *alive = false;
    *dbs = *bytes = 0;
    for (size_t i = 0; i < p->nlive; i++)
        if (strcmp(p->live[i].id, id) == 0 && p->live[i].up) {
            *alive = true;
            *dbs = p->live[i].dbs;
            *bytes = p->live[i].bytes;
        }
}

void dsq_eplace_view(dsq_eplace *p) { p->view_whole = true; }

bool dsq_eplace_view_whole(const dsq_eplace *p) { return p->view_whole; }

dsq_assign *dsq_eplace_assign(dsq_eplace *p) { return p->stopping ? NULL : p->assign; }

/* ---- the object ------------------------------------------------------------------------------- */

static void mailbox_closed(dsq_mailbox *m) { free(dsq_container_of(m, dsq_eplace, mb)); }

int dsq_eplace_start(const dsq_eplace_cfg *cfg, dsq_eplace **out, char *err, size_t errlen)
{
    dsq_eplace *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->cfg = *cfg;
    p->place = (dsq_placement){.copies = copies_of, .ud = p};
    if (dsq_mailbox_init(&p->mb, cfg->loop) != 0) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    dsq_assign_cfg ac = {.etcd = cfg->etcd, .on_change = on_assign_event, .ud = p};
    if ((p->assign = dsq_assign_start(&ac, err, errlen)) == NULL) {
        dsq_mailbox_close(&p->mb, mailbox_closed);
        return -1;
    }
    *out = p;
    return 0;
}

void dsq_eplace_stop(dsq_eplace *p)
{
    if (p == NULL)
        return;
    p->stopping = true;
    dsq_assign_stop(p->assign); /* its answers still queued are dropped below */
    p->assign = NULL;
    dsq_htab_iter it = {0};
    for (dsq_hnode *h; (h = dsq_htab_next(&p->pend, &it)) != NULL; it = (dsq_htab_iter){0})
        finish(p, dsq_container_of(h, pend, link)->db, -1, "the cluster is stopping");
    dsq_htab_free(&p->pend);
    dsq_mailbox_close(&p->mb, mailbox_closed); /* (what is queued is dropped) */
}

const dsq_placement *dsq_eplace_placement(dsq_eplace *p) { return &p->place; }

bool dsq_eplace_loaded(const dsq_eplace *p) { return p->assign != NULL && dsq_assign_loaded(p->assign); }

size_t dsq_eplace_count(const dsq_eplace *p) { return p->assign != NULL ? dsq_assign_count(p->assign) : 0; }
