/* repl — log shipping between a database's copies (repl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/repl.h"
#include "cluster/wire.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"

#define EPOCH 1             /* (one epoch per database in this version) */
#define READ_CHUNK (1u << 20) /* bytes of records per read of the primary's log */

/* One copy of a database, as this node sees it. */
typedef struct rcopy {
    uint32_t node;
    /* under r->mu */
    uint64_t durable;       /* how far its log is durable (its acknowledgements; this node's own) */
    uint64_t applied;
    /* loop thread (the primary's view of a follower) */
    uint64_t sent;          /* the last LSN sent to it */
    bool streaming;         /* in step: records go to it as they are committed */
    bool reading;           /* a read of the log for it is under way */
    bool prompted;          /* asked where its log ends since the link came up */
} rcopy;

typedef struct rdb {
    struct rdb *hnext;
    char name[129];
    dsq_role role;
    uint32_t primary;       /* node */
    uint64_t epoch;
    /* under r->mu */
    uint64_t commit;        /* primary: acknowledged by enough copies; follower: the primary's, as told */
    bool ack_due;           /* follower: its durable LSN grew: tell the primary */
    bool commit_due;        /* primary: its commit grew: tell the followers */
    bool on_due;            /* on r->due */
    dsq_lnode due;
    /* loop thread */
    uint64_t commit_told;   /* primary: the commit last sent */
    uint64_t appended;      /* primary: the last record committed */
    uint64_t expect;        /* follower: the next LSN it wants */
    uint64_t at_sent;       /* follower: `expect` when it last said where it is (0: not since the
                               link came up) */
    bool pos_known;         /* follower: expect holds its log's end */
    bool probing;           /* follower: a call to learn it is under way */
    unsigned applies;       /* follower: APPLY calls in flight */
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
    dsq_placement place;
    dsq_repl_hooks hooks;
    dsq_engine *engine;
    dsq_peers *peers;
    uv_async_t async;
    bool started;
    pthread_mutex_t mu;     /* the table, the queue, the due list, the fields marked so */
    rdb **buckets;
    size_t nbuckets, n;
    dsq_queue recq;         /* recq_item.link */
    dsq_list due;           /* rdb.due */
    dsq_repl_stats stats;   /* loop thread */
};

/* ---- the table ------------------------------------------------------------------------------ */

static int grow(dsq_repl *r)
{
    size_t nb = r->nbuckets ? r->nbuckets * 2 : 256;
    rdb **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < r->nbuckets; i++) {
        rdb *d = r->buckets[i];
        while (d) {
            rdb *next = d->hnext;
            size_t k = dsq_hash_str(d->name) & (nb - 1);
            d->hnext = b[k];
            b[k] = d;
            d = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = nb;
    return 0;
}

/* The database's entry, made on first use from the placement (caller
 * holds r->mu). NULL: out of memory, or not a database name. */
static rdb *get(dsq_repl *r, const char *db)
{
    if (r->nbuckets > 0) {
        for (rdb *d = r->buckets[dsq_hash_str(db) & (r->nbuckets - 1)]; d; d = d->hnext)
            if (strcmp(d->name, db) == 0)
                return d;
    }
    if (strlen(db) >= sizeof((rdb *)0)->name || (r->n >= r->nbuckets && grow(r) != 0))
        return NULL;
    uint32_t nodes[DSQ_NODES_MAX];
    size_t n = dsq_place(&r->place, db, nodes, DSQ_NODES_MAX);
    rdb *d = calloc(1, sizeof *d + n * sizeof d->copies[0]);
    if (d == NULL)
        return NULL;
    snprintf(d->name, sizeof d->name, "%s", db);
    d->ncopies = n;
    d->self_copy = n;
    d->primary = nodes[0];
    d->epoch = EPOCH;
    for (size_t i = 0; i < n; i++) {
        d->copies[i].node = nodes[i];
        if (nodes[i] == r->cfg.self)
            d->self_copy = i;
    }
    if (d->self_copy == n)
        d->role = DSQ_ROLE_ELSEWHERE;
    else if (n == 1)
        d->role = DSQ_ROLE_ALONE;
    else
        d->role = d->self_copy == 0 ? DSQ_ROLE_PRIMARY : DSQ_ROLE_FOLLOWER;
    size_t k = dsq_hash_str(db) & (r->nbuckets - 1);
    d->hnext = r->buckets[k];
    r->buckets[k] = d;
    r->n++;
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

/* The LSN enough copies hold (caller holds r->mu): of the copies' durable
 * LSNs, highest first, the one that makes commit_ack's count. */
static uint64_t quorum(const dsq_repl *r, const rdb *d)
{
    unsigned need = dsq_commit_ack_needed(r->cfg.ack, (unsigned)d->ncopies);
    uint64_t v[DSQ_NODES_MAX];
    for (size_t i = 0; i < d->ncopies; i++)
        v[i] = d->copies[i].durable;
    for (size_t i = 1; i < d->ncopies; i++) /* insertion sort, highest first: a few copies */
        for (size_t j = i; j > 0 && v[j] > v[j - 1]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return need == 0 ? 0 : v[need - 1];
}

/* ---- the engine's hooks (any thread) ---------------------------------------------------------- */

static dsq_role h_role(void *ud, const char *db, char *primary, size_t len)
{
    dsq_repl *r = ud;
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, db);
    dsq_role role = d ? d->role : DSQ_ROLE_ELSEWHERE;
    snprintf(primary, len, "%s", d ? r->cfg.nodes[d->primary].id : "");
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

/* A message about d: its name and epoch first, then `more` (u64s). */
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

static void ship(dsq_repl *r, rdb *d, size_t node, const void *recs, size_t len, size_t nrecs)
{
    uint64_t commit = commit_of(r, d);
    send_msg(r, node, DSQ_REPL_SHIP, d, &commit, 1, recs, len);
    r->stats.records_shipped += nrecs;
    r->stats.bytes_shipped += len;
}

static void read_log(dsq_repl *r, rdb *d, rcopy *c);
static void prompt(dsq_repl *r, rdb *d, rcopy *c);

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
        recq_item *first = dsq_container_of(n, recq_item, link);
        rdb *d = first->d;
        /* The run of records of this database. */
        dsq_qnode *end = n;
        while (end != NULL && dsq_container_of(end, recq_item, link)->d == d)
            end = end->next;
        for (dsq_qnode *x = n; x != end; x = x->next)
            d->appended = dsq_container_of(x, recq_item, link)->lsn;
        for (size_t i = 0; i < d->ncopies && d->role == DSQ_ROLE_PRIMARY; i++) {
            rcopy *c = &d->copies[i];
            if (i == d->self_copy)
                continue;
            if (!c->streaming) { /* it catches up from the log once it says where it is */
                if (!c->reading)
                    prompt(r, d, c);
                continue;
            }
            if (!dsq_peer_up(r->peers, c->node)) {
                c->streaming = false;
                continue;
            }
            dsq_buf_reset(&batch);
            size_t nrecs = 0;
            for (dsq_qnode *x = n; x != end && c->streaming; x = x->next) {
                recq_item *it = dsq_container_of(x, recq_item, link);
                if (it->lsn <= c->sent)
                    continue;
                if (it->lsn != c->sent + 1) { /* a gap (a record lost on its way here): from the log */
                    c->streaming = false;
                    break;
                }
                if (dsq_buf_append(&batch, it->rec, it->len) != 0) {
                    c->streaming = false;
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

static void send_at(dsq_repl *r, rdb *d);

/* Acknowledgements, commits and pokes that the hooks or messages asked
 * for. */
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
        if (ack && d->role == DSQ_ROLE_FOLLOWER && dsq_peer_up(r->peers, d->primary)) {
            uint64_t v[2] = {durable, applied};
            send_msg(r, d->primary, DSQ_REPL_ACK, d, v, 2, NULL, 0);
        }
        if (commit && d->role == DSQ_ROLE_PRIMARY && c > d->commit_told) {
            d->commit_told = c;
            uint64_t v[2] = {c, d->appended};
            for (size_t i = 0; i < d->ncopies; i++)
                if (i != d->self_copy && d->copies[i].streaming && dsq_peer_up(r->peers, d->copies[i].node))
                    send_msg(r, d->copies[i].node, DSQ_REPL_COMMIT, d, v, 2, NULL, 0);
        }
    }
}

static void on_async(uv_async_t *h)
{
    dsq_repl *r = h->data;
    ship_committed(r);
    flush_due(r);
}

/* ---- the primary reads its log for a follower ---------------------------------------------------- */

typedef struct log_read {
    dsq_call c;
    dsq_repl *r;
    rdb *d;
    uint32_t node;
} log_read;

static void log_read_done(dsq_call *call)
{
    log_read *lr = (log_read *)call;
    dsq_repl *r = lr->r;
    rdb *d = lr->d;
    rcopy *c = copy_of(d, lr->node);
    c->reading = false;
    r->stats.log_reads++;
    if (call->err != 0) {
        DSQ_ERROR("replication_read_failed", "db=%s follower=%s code=%s reason=%s", d->name,
                  r->cfg.nodes[c->node].id, dsq_code_name(call->code), dsq_log_q(call->msg));
    } else if (dsq_peer_up(r->peers, c->node) && call->lsn >= c->sent) {
        size_t nrecs = 0;
        for (const uint8_t *p = (const uint8_t *)call->out.data, *e = p + call->out.len; p < e;) {
            uint64_t lsn;
            size_t len;
            if (dsq_log_record(p, (size_t)(e - p), &lsn, &len) != 0)
                break;
            nrecs++;
            p += len;
        }
        if (call->out.len > 0)
            ship(r, d, c->node, call->out.data, call->out.len, nrecs);
        c->sent = call->lsn;
        if (!call->more)
            c->streaming = true; /* what comes next comes as it is committed */
        else if (dsq_peer_queued(r->peers, c->node) <= r->cfg.ship_limit)
            read_log(r, d, c);
    }
    dsq_call_reset(call);
    free(lr);
}

/* Send follower c of d what follows c->sent, from the primary's log. */
static void read_log(dsq_repl *r, rdb *d, rcopy *c)
{
    if (c->reading || !dsq_peer_up(r->peers, c->node))
        return;
    log_read *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return;
    lr->r = r;
    lr->d = d;
    lr->node = c->node;
    lr->c.op = DSQ_OP_LOG_READ;
    lr->c.as_of_lsn = c->sent;
    lr->c.chunk_rows = READ_CHUNK;
    lr->c.scope = DSQ_SCOPE_R;
    lr->c.done = log_read_done;
    c->streaming = false;
    if (dsq_engine_submit(r->engine, d->name, &lr->c) != 0) {
        DSQ_WARN("replication_read_refused", "db=%s reason=%s", d->name, dsq_log_q(lr->c.msg));
        free(lr);
        return;
    }
    c->reading = true;
}

/* ---- a follower applies -------------------------------------------------------------------------- */

typedef struct apply {
    dsq_call c;
    dsq_repl *r;
    rdb *d;
    bool probe;     /* only to learn where the log ends */
    size_t len;
    uint8_t recs[];
} apply;

static void apply_done(dsq_call *call)
{
    apply *a = (apply *)call;
    dsq_repl *r = a->r;
    rdb *d = a->d;
    if (a->probe)
        d->probing = false;
    else
        d->applies--;
    if (call->err != 0 && a->probe) {
        /* (it stays unknown: the next message from the primary asks again) */
        DSQ_WARN("replication_open_failed", "db=%s code=%s reason=%s", d->name, dsq_code_name(call->code),
                 dsq_log_q(call->msg));
    } else {
        if (!a->probe)
            r->stats.applies++;
        pthread_mutex_lock(&r->mu);
        if (d->self_copy < d->ncopies && call->lsn > d->copies[d->self_copy].applied)
            d->copies[d->self_copy].applied = call->lsn;
        pthread_mutex_unlock(&r->mu);
        if (call->err != 0)
            DSQ_WARN("replication_apply_failed", "db=%s lsn=%llu code=%s reason=%s", d->name,
                     (unsigned long long)call->lsn, dsq_code_name(call->code), dsq_log_q(call->msg));
        if (a->probe || call->err != 0) {
            /* Now it knows where its log ends: it says so, and the primary
             * sends what follows. */
            d->expect = call->lsn + 1;
            d->pos_known = true;
            d->at_sent = 0;
            send_at(r, d);
        }
    }
    dsq_call_reset(call);
    free(a);
}

static int submit_apply(dsq_repl *r, rdb *d, const void *recs, size_t len, bool probe)
{
    apply *a = calloc(1, sizeof *a + len);
    if (a == NULL)
        return -1;
    a->r = r;
    a->d = d;
    a->probe = probe;
    a->len = len;
    if (len > 0)
        memcpy(a->recs, recs, len);
    a->c.op = DSQ_OP_APPLY;
    a->c.recs = a->recs;
    a->c.recs_len = len;
    a->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    a->c.done = apply_done;
    if (dsq_engine_submit(r->engine, d->name, &a->c) != 0) {
        free(a);
        return -1;
    }
    if (probe)
        d->probing = true;
    else
        d->applies++;
    return 0;
}

/* Tell the primary where this copy's log ends (once per position), or
 * learn it first. */
static void send_at(dsq_repl *r, rdb *d)
{
    if (!d->pos_known) {
        if (!d->probing)
            submit_apply(r, d, NULL, 0, true);
        return;
    }
    if (d->at_sent == d->expect || !dsq_peer_up(r->peers, d->primary))
        return;
    d->at_sent = d->expect;
    pthread_mutex_lock(&r->mu);
    uint64_t durable = d->self_copy < d->ncopies ? d->copies[d->self_copy].durable : 0;
    pthread_mutex_unlock(&r->mu);
    uint64_t v[2] = {d->expect - 1, durable};
    send_msg(r, d->primary, DSQ_REPL_BEHIND, d, v, 2, NULL, 0);
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
    if (!d->pos_known) {
        send_at(r, d); /* learns it first; the primary sends again from there */
        return;
    }
    if (first > d->expect) { /* it missed some: from the primary's log */
        send_at(r, d);
        return;
    }
    /* The last record's LSN. */
    uint64_t last = first;
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
    if (submit_apply(r, d, recs, len, false) != 0) {
        d->pos_known = false; /* (a full mailbox, memory): it starts again from its log's end */
        return;
    }
    d->expect = last + 1;
}

/* ---- messages -------------------------------------------------------------------------------- */

void dsq_repl_on_message(dsq_repl *r, size_t node, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    char name[129];
    dsq_r_str(&rd, name, sizeof name);
    uint64_t epoch = dsq_r_u64(&rd);
    if (rd.bad || !dsq_db_name_valid(name)) {
        DSQ_WARN("replication_bad_message", "node=%s type=%u", r->cfg.nodes[node].id, type);
        return;
    }
    pthread_mutex_lock(&r->mu);
    rdb *d = get(r, name);
    pthread_mutex_unlock(&r->mu);
    if (d == NULL || epoch != d->epoch)
        return;
    switch (type) {
    case DSQ_REPL_SHIP: {
        uint64_t commit = dsq_r_u64(&rd);
        if (!rd.bad && d->role == DSQ_ROLE_FOLLOWER && node == d->primary)
            on_ship(r, d, commit, rd.p, dsq_rd_left(&rd));
        break;
    }
    case DSQ_REPL_COMMIT: {
        uint64_t commit = dsq_r_u64(&rd), appended = dsq_r_u64(&rd);
        if (rd.bad || d->role != DSQ_ROLE_FOLLOWER || node != d->primary)
            break;
        follow_commit(r, d, commit);
        if (!d->pos_known || (appended >= d->expect && d->applies == 0))
            send_at(r, d);
        break;
    }
    case DSQ_REPL_ACK: {
        uint64_t durable = dsq_r_u64(&rd), applied = dsq_r_u64(&rd);
        rcopy *c = copy_of(d, node);
        if (rd.bad || d->role != DSQ_ROLE_PRIMARY || c == NULL)
            break;
        r->stats.acks++;
        pthread_mutex_lock(&r->mu);
        if (durable > c->durable)
            c->durable = durable;
        if (applied > c->applied)
            c->applied = applied;
        pthread_mutex_unlock(&r->mu);
        dsq_engine_repl_poke(r->engine, d->name); /* (released() works out the commit) */
        break;
    }
    case DSQ_REPL_BEHIND: {
        uint64_t have = dsq_r_u64(&rd), durable = dsq_r_u64(&rd);
        rcopy *c = copy_of(d, node);
        if (rd.bad || d->role != DSQ_ROLE_PRIMARY || c == NULL)
            break;
        pthread_mutex_lock(&r->mu);
        bool grew = durable > c->durable;
        if (grew)
            c->durable = durable;
        pthread_mutex_unlock(&r->mu);
        c->streaming = false;
        c->prompted = true;
        if (!c->reading) {
            c->sent = have;
            read_log(r, d, c);
        }
        /* (else the read under way ends; the follower says again if need be) */
        if (grew)
            dsq_engine_repl_poke(r->engine, d->name);
        break;
    }
    default:
        DSQ_WARN("replication_bad_message", "node=%s type=%u", r->cfg.nodes[node].id, type);
    }
}

/* Every database entry now (they are never freed before the object is):
 * walked without the lock, since what is sent may call back here. NULL
 * with *n 0 when out of memory. */
static rdb **entries(dsq_repl *r, size_t *n)
{
    pthread_mutex_lock(&r->mu);
    rdb **v = malloc((r->n ? r->n : 1) * sizeof *v);
    *n = 0;
    for (size_t b = 0; v != NULL && b < r->nbuckets; b++)
        for (rdb *d = r->buckets[b]; d; d = d->hnext)
            v[(*n)++] = d;
    pthread_mutex_unlock(&r->mu);
    return v;
}

/* Prompt follower c of d to say where its log ends (COMMIT; it answers
 * with BEHIND), once per link. */
static void prompt(dsq_repl *r, rdb *d, rcopy *c)
{
    if (c->prompted || !dsq_peer_up(r->peers, c->node))
        return;
    c->prompted = true;
    uint64_t v[2] = {commit_of(r, d), d->appended};
    send_msg(r, c->node, DSQ_REPL_COMMIT, d, v, 2, NULL, 0);
}

void dsq_repl_on_link(dsq_repl *r, size_t node, bool up)
{
    size_t n;
    rdb **v = entries(r, &n);
    for (size_t i = 0; i < n; i++) {
        rdb *d = v[i];
        if (d->role == DSQ_ROLE_FOLLOWER && d->primary == node) {
            d->at_sent = 0; /* it says where it is again */
            if (up)
                send_at(r, d);
        } else if (d->role == DSQ_ROLE_PRIMARY) {
            rcopy *c = copy_of(d, node);
            if (c == NULL)
                continue;
            c->streaming = false;
            c->prompted = false;
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
        if (c != NULL && !c->streaming && !c->reading && c->prompted)
            read_log(r, v[i], c);
    }
    free(v);
}

/* ---- the object ------------------------------------------------------------------------------ */

dsq_repl *dsq_repl_new(const dsq_repl_cfg *cfg)
{
    dsq_repl *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->cfg = *cfg;
    const char *ids[DSQ_NODES_MAX];
    for (size_t i = 0; i < cfg->nnodes; i++)
        ids[i] = cfg->nodes[i].id;
    dsq_placement_static(&r->place, ids, cfg->nnodes, cfg->replicas);
    pthread_mutex_init(&r->mu, NULL);
    r->hooks = (dsq_repl_hooks){.role = h_role, .released = h_released, .committed = h_committed, .ud = r};
    return r;
}

const dsq_repl_hooks *dsq_repl_hooks_of(dsq_repl *r) { return &r->hooks; }

int dsq_repl_start(dsq_repl *r, uv_loop_t *loop, dsq_engine *e, dsq_peers *peers)
{
    r->engine = e;
    r->peers = peers;
    if (uv_async_init(loop, &r->async, on_async) != 0)
        return -1;
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async);
    pthread_mutex_lock(&r->mu);
    r->started = true;
    bool pending = !dsq_queue_empty(&r->recq) || r->due.head != NULL;
    pthread_mutex_unlock(&r->mu);
    if (pending)
        uv_async_send(&r->async);
    return 0;
}

void dsq_repl_stop(dsq_repl *r)
{
    pthread_mutex_lock(&r->mu);
    bool was = r->started;
    r->started = false;
    pthread_mutex_unlock(&r->mu);
    if (was)
        uv_close((uv_handle_t *)&r->async, NULL);
}

void dsq_repl_free(dsq_repl *r)
{
    if (r == NULL)
        return;
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&r->recq)) != NULL)
        free(dsq_container_of(n, recq_item, link));
    for (size_t b = 0; b < r->nbuckets; b++) {
        rdb *d = r->buckets[b];
        while (d) {
            rdb *next = d->hnext;
            free(d);
            d = next;
        }
    }
    free(r->buckets);
    pthread_mutex_destroy(&r->mu);
    free(r);
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
        for (size_t i = 0; i < d->ncopies; i++) {
            out->copies[i] = (dsq_repl_copy){.node = d->copies[i].node,
                                             .primary = d->copies[i].node == d->primary,
                                             .durable = d->copies[i].durable,
                                             .applied = d->copies[i].applied};
        }
    }
    pthread_mutex_unlock(&r->mu);
}

void dsq_repl_stats_get(dsq_repl *r, dsq_repl_stats *out) { *out = r->stats; }
