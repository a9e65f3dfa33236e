/* cluster — the running cluster: the node list, the links (peer.h) and
 * replication over them (repl.h).
 *
 * With cluster.etcd, this node registers itself in etcd and watches the
 * other nodes' registrations (topo.h, on threads of its own); their
 * events are handed to the loop thread through a mailbox
 * (common/mailbox.h). A node found there is added to the links
 * (dsq_peers_add), and to the nodes new databases may be placed on. Where
 * each database's copies are is its assignment in etcd (eplace.h), which
 * replication's placement reads; node numbers come from the node set
 * (nodeset.h) shared by the links, the epochs and replication. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cluster/cluster.h"
#include "cluster/assign.h"
#include "cluster/eplace.h"
#include "cluster/failover.h"
#include "cluster/epochs.h"
#include "cluster/peer.h"
#include "cluster/rcall.h"
#include "cluster/repl.h"
#include "cluster/topo.h"
#include "cluster/wire.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "common/util.h"
#include "engine/engine.h"

/* A topo event, copied for the loop thread. */
typedef struct topo_msg {
    struct dsq_cluster *c;
    dsq_topo_event_type type;
    char id[DSQ_NODE_ID_MAX];
    bool has_node;
    dsq_topo_node node;
    char msg[256];
} topo_msg;

struct dsq_cluster {
    dsq_node nodes[DSQ_NODES_MAX];
    size_t nnodes, self;
    dsq_nodeset *ids;       /* every node's number: nodes' first, in order */
    dsq_cluster_cfg cfg;
    char secret[DSQ_SECRET_MAX + 1];
    char *tls_cert, *tls_key, *tls_ca; /* owned; NULL without TLS */
    dsq_epochs *epochs;
    dsq_repl *repl;
    char client_addr[DSQ_NODES_MAX][80]; /* each node's, as it told (this one's: its own) */
    char forward_addr[DSQ_NODES_MAX][80]; /* with TLS: each node's listener for passed-on
                                             connections, as it told (this one's: its own) */
    dsq_peers *peers;
    uv_loop_t *loop;        /* NULL until started */
    uv_timer_t wait;        /* stopping: for the epochs' writes under way */
    uint64_t wait_until;    /* ms: then it gives up waiting */
    bool leak;              /* they did not end: their memory is left to them */
    void (*done)(void *ud);
    void *done_ud;
    /* cluster.etcd */
    char *etcd, *etcd_prefix;  /* owned; etcd NULL: no etcd */
    char *advertise;           /* owned; NULL: the peers entry's address */
    char *etcd_user, *etcd_password; /* owned; NULL: no auth (the password is wiped at free) */
    char *etcd_ca, *etcd_cert, *etcd_key; /* owned; NULL: none */
    dsq_topo *topo;            /* NULL until started */
    _Atomic(dsq_eplace *) eplace; /* the assignments (NULL until started; read by the placement on
                                     any thread) */
    dsq_placement etcd_place;  /* replication's placement with etcd: eplace's, once it runs */
    bool view_read;            /* topo's view of the nodes was whole once (loop thread) */
    dsq_failover *failover;    /* with etcd (loop thread) */
    bool etcd_up, registered;  /* as topo's events last said (loop thread) */
    struct dsq_engine *engine; /* (for the load this node tells etcd) */
    uv_timer_t load_timer;     /* with etcd: the load told every second (topo writes it when it changed) */
    bool load_timer_on;
    dsq_mailbox *topo_mb;      /* the topo's events, to the loop (its own allocation: its handle's
                                  close may end after c is freed) */
    /* calls run on another node (dsq_cluster_submit; loop thread) */
    struct rpending *rcalls;   /* sent, or waiting for their database's placement */
    struct rin_wait *rins;     /* from other nodes, waiting for their database's assignment */
    uint64_t rcall_next;       /* the last request id given */
    uint64_t rcalls_out, rcalls_in; /* counts: sent to another node, run here for another node */
    dsq_cluster_vschema_hooks vs; /* the shared VSchema (zeroed: none) */
    dsq_cluster_ext ext;       /* other modules' messages (zeroed: none) */
    uint32_t link_gen[DSQ_NODES_MAX]; /* each link's times down: the engine session of the
                                         transactions other nodes begin here changes with it */
};

/* The engine session of the calls node `node` sends here over its link
 * as it is now: when the link goes down, the transactions they began end
 * (the node that began them can no longer end them). Apart from the
 * clients' sessions (small counters) by its top bits. */
static uint64_t link_session(const dsq_cluster *c, size_t node)
{
    return 0xD5ull << 56 | (uint64_t)c->link_gen[node] << 8 | (uint64_t)node;
}

/* A call from another node waiting for its database's assignment. */
typedef struct rin_wait {
    struct rin_wait *next;
    dsq_place_wait w;
    struct dsq_rcall_in *in;
} rin_wait;

/* A call sent to another node (or waiting to be placed first). */
typedef struct rpending {
    struct rpending *next;
    dsq_cluster *c;
    uint64_t id;               /* 0 until sent */
    size_t node;               /* sent to */
    dsq_call *call;
    char db[129];
    dsq_place_wait w;
} rpending;


/* With etcd, replication's placement: eplace's, which knows nothing
 * before it starts (any thread). */
static size_t etcd_copies(const dsq_placement *p, const char *db, uint32_t *out, size_t max, uint32_t *primary,
                          uint64_t *epoch)
{
    dsq_cluster *c = p->ud;
    dsq_eplace *e = atomic_load(&c->eplace);
    if (e == NULL)
        return 0;
    const dsq_placement *inner = dsq_eplace_placement(e);
    return inner->copies(inner, db, out, max, primary, epoch);
}

static void cluster_free(dsq_cluster *c)
{
    dsq_nodeset_free(c->ids);
    free(c->etcd);
    free(c->etcd_prefix);
    free(c->advertise);
    free(c->etcd_user);
    if (c->etcd_password != NULL) {
        explicit_bzero(c->etcd_password, strlen(c->etcd_password));
        free(c->etcd_password);
    }
    free(c->etcd_ca);
    free(c->etcd_cert);
    free(c->etcd_key);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_ca);
    free(c);
}

/* A copy of s, or NULL for NULL; *oom set when memory ran out. */
static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

/* cluster.etcd's settings, copied (cfg's pointers are the caller's). 0,
 * or -1 when memory ran out. */
static int copy_etcd_cfg(dsq_cluster *c, const dsq_cluster_cfg *cfg)
{
    c->cfg.etcd = c->cfg.etcd_prefix = c->cfg.advertise = NULL;
    c->cfg.etcd_user = c->cfg.etcd_password = NULL;
    c->cfg.etcd_ca = c->cfg.etcd_cert = c->cfg.etcd_key = NULL;
    if (cfg->etcd == NULL)
        return 0;
    bool oom = false;
    c->etcd = dup_or_null(cfg->etcd, &oom);
    c->etcd_prefix = dup_or_null(cfg->etcd_prefix ? cfg->etcd_prefix : "/dosqld/", &oom);
    c->advertise = dup_or_null(cfg->advertise, &oom);
    c->etcd_user = dup_or_null(cfg->etcd_user, &oom);
    c->etcd_password = dup_or_null(cfg->etcd_password, &oom);
    c->etcd_ca = dup_or_null(cfg->etcd_ca, &oom);
    c->etcd_cert = dup_or_null(cfg->etcd_cert, &oom);
    c->etcd_key = dup_or_null(cfg->etcd_key, &oom);
    return oom ? -1 : 0;
}

int dsq_cluster_new(const dsq_cluster_cfg *cfg, dsq_cluster **out, char *err, size_t errlen)
{
    if (cfg->npeers == 0 || cfg->npeers > DSQ_NODES_MAX) {
        snprintf(err, errlen, "cluster.peers must name 1 to %d nodes", DSQ_NODES_MAX);
        return -1;
    }
    dsq_cluster *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->self = SIZE_MAX;
    if ((c->ids = dsq_nodeset_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        cluster_free(c);
        return -1;
    }
    for (size_t i = 0; i < cfg->npeers; i++) {
        char why[256];
        if (dsq_node_parse(cfg->peers[i], &c->nodes[i], why, sizeof why) != 0) {
            snprintf(err, errlen, "cluster.peers: %s", why);
            cluster_free(c);
            return -1;
        }
        uint32_t ix;
        if (dsq_nodeset_intern(c->ids, c->nodes[i].id, &ix) != 0 || ix != i) {
            snprintf(err, errlen, "cluster.peers: node %s is named twice", c->nodes[i].id);
            cluster_free(c);
            return -1;
        }
        if (strcmp(c->nodes[i].id, cfg->node_id) == 0)
            c->self = i;
    }
    c->nnodes = cfg->npeers;
    if (c->self == SIZE_MAX) {
        snprintf(err, errlen, "cluster.node_id %s is not in cluster.peers", cfg->node_id);
        cluster_free(c);
        return -1;
    }
    c->cfg = *cfg;
    snprintf(c->secret, sizeof c->secret, "%s", cfg->secret);
    c->cfg.secret = c->secret;
    c->cfg.tls_cert = c->cfg.tls_key = c->cfg.tls_ca = NULL;
    if (cfg->tls_cert != NULL &&
        ((c->tls_cert = strdup(cfg->tls_cert)) == NULL || (c->tls_key = strdup(cfg->tls_key)) == NULL ||
         (c->tls_ca = strdup(cfg->tls_ca)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        cluster_free(c);
        return -1;
    }
    if (copy_etcd_cfg(c, cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        cluster_free(c);
        return -1;
    }
    c->etcd_place = (dsq_placement){.copies = etcd_copies, .ud = c};
    if (dsq_epochs_open(cfg->data_dir, c->ids, &c->epochs, err, errlen) != 0) {
        cluster_free(c);
        return -1;
    }
    dsq_repl_cfg rc = {
        .nodes = c->nodes,
        .nnodes = c->nnodes,
        .self = c->self,
        .ids = c->ids,
        .place = c->etcd != NULL ? &c->etcd_place : NULL,
        .replicas = cfg->replicas ? cfg->replicas : 1,
        .ack = cfg->ack,
        .ship_limit = 8u << 20,
        .beat_ms = cfg->heartbeat_ms,
        .lease_ms = cfg->peer_timeout_ms,
        .promote_timeout_ms = cfg->promote_timeout_ms,
        .epochs = c->epochs,
        .resume = dsq_epochs_unclean(c->epochs),
        .data_dir = cfg->data_dir,
    };
    if ((c->repl = dsq_repl_new(&rc)) == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_epochs_close(c->epochs);
        cluster_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

const struct dsq_repl_hooks *dsq_cluster_repl_hooks(dsq_cluster *c) { return dsq_repl_hooks_of(c->repl); }

int dsq_node_info_encode(dsq_buf *b, const char *client, const char *forward)
{
    return dsq_w_str(b, client) | dsq_w_str(b, forward);
}

int dsq_node_info_decode(const void *p, size_t n, char *client, char *forward, size_t cap)
{
    dsq_rd rd = dsq_rd_of(p, n);
    dsq_r_str(&rd, client, cap);
    forward[0] = '\0';
    if (!rd.bad && dsq_rd_left(&rd) > 0)
        dsq_r_str(&rd, forward, cap);
    if (rd.bad) {
        client[0] = forward[0] = '\0';
        return -1;
    }
    return 0;
}

/* ---- calls run on another node ------------------------------------------------------------- */

static const char *node_name(const dsq_cluster *c, size_t i);

static void rp_unlink(dsq_cluster *c, rpending *p)
{
    for (rpending **pp = &c->rcalls; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

static void rp_fail(rpending *p, dsq_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rp_fail(rpending *p, dsq_code code, const char *fmt, ...)
{
    dsq_call *call = p->call;
    call->err = -1;
    call->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->msg, sizeof call->msg, fmt, ap);
    va_end(ap);
}

/* Run p's call where its database's primary is: here (the engine), or on
 * that node over the link. 0: submitted (done runs later); -1: failed
 * (the call says why; p freed). */
static int rp_go(dsq_cluster *c, rpending *p)
{
    dsq_call *call = p->call;
    size_t primary = c->self;
    if (c->peers != NULL)
        (void)dsq_repl_where(c->repl, p->db, &primary);
    if (primary == c->self) {
        int rc = dsq_engine_submit(c->engine, p->db, call);
        free(p);
        if (rc != 0)
            call->err = -1;
        return rc != 0 ? -1 : 0;
    }
    if (!dsq_rcall_op_ok(call->op)) {
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s' has its primary on node %s", p->db, node_name(c, primary));
        free(p);
        return -1;
    }
    if (!dsq_peer_up(c->peers, primary)) {
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s' has its primary on node %s, which this node cannot reach",
                p->db, node_name(c, primary));
        free(p);
        return -1;
    }
    dsq_buf b = DSQ_BUF_INIT;
    p->id = ++c->rcall_next;
    p->node = primary;
    if (dsq_rcall_encode_call(&b, p->id, p->db, call) != 0 ||
        dsq_peer_send(c->peers, primary, DSQ_CLUSTER_CALL, b.data, b.len, NULL, 0) != 0) {
        dsq_buf_free(&b);
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s': the call could not be sent to node %s", p->db,
                node_name(c, primary));
        free(p);
        return -1;
    }
    dsq_buf_free(&b);
    c->rcalls_out++;
    p->next = c->rcalls;
    c->rcalls = p;
    return 0;
}

static void rp_placed(dsq_place_wait *w, int rc, const char *msg)
{
    rpending *p = (rpending *)((char *)w - offsetof(rpending, w));
    dsq_cluster *c = p->c;
    dsq_call *call = p->call;
    rp_unlink(c, p);
    if (rc != 0) {
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s' could not be placed: %s", p->db, msg ? msg : "no reason");
        free(p);
        call->done(call);
        return;
    }
    if (rp_go(c, p) != 0)
        call->done(call);
}

int dsq_cluster_submit(dsq_cluster *c, const char *db, dsq_call *call)
{
    rpending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        call->err = -1;
        call->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(call->msg, sizeof call->msg, "out of memory");
        return -1;
    }
    p->c = c;
    p->call = call;
    snprintf(p->db, sizeof p->db, "%s", db);
    if (c->engine == NULL) {
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s': this node is stopping", p->db);
        free(p);
        return -1;
    }
    p->w.done = rp_placed;
    char err[256];
    int rc = dsq_cluster_place(c, db, &p->w, err, sizeof err);
    if (rc < 0) {
        rp_fail(p, DSQ_CODE_NOT_PRIMARY, "database '%s' cannot be placed: %s", p->db, err);
        free(p);
        return -1;
    }
    if (rc == 1) { /* (waiting: rp_placed) */
        p->next = c->rcalls;
        c->rcalls = p;
        return 0;
    }
    return rp_go(c, p);
}

/* A CALL from another node ran here: its outcome back. */
static void rcall_in_done(dsq_call *call)
{
    dsq_rcall_in *in = call->ud;
    dsq_cluster *c = in->owner;
    /* A transaction begun after its link went down: nobody can end it. */
    if (call->op == DSQ_OP_BEGIN && call->err == 0 && call->session != link_session(c, in->node) &&
        c->engine != NULL)
        dsq_engine_session_closed(c->engine, call->session);
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_rcall_encode_reply(&b, in->id, call) != 0) {
        dsq_buf_reset(&b);
        dsq_call_reset(call);
        call->err = -1;
        call->code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(call->msg, sizeof call->msg, "out of memory on node %s for the reply", node_name(c, c->self));
        dsq_rcall_encode_reply(&b, in->id, call);
    }
    /* Over the link it came on only: once that went down, the caller
     * failed the call (a reply on a new link could meet a new call of the
     * same id). */
    if (c->peers != NULL && call->session == link_session(c, in->node))
        dsq_peer_send(c->peers, in->node, DSQ_CLUSTER_REPLY, b.data, b.len, NULL, 0);
    dsq_buf_free(&b);
    dsq_rcall_in_free(in);
}

/* A call from another node run here now (or refused: this node stops). */
static void rcall_in_run(dsq_cluster *c, dsq_rcall_in *in)
{
    if (c->engine == NULL) {
        in->call.err = -1;
        in->call.code = DSQ_CODE_NOT_PRIMARY;
        snprintf(in->call.msg, sizeof in->call.msg, "node %s is stopping", node_name(c, c->self));
        rcall_in_done(&in->call);
        return;
    }
    if (dsq_engine_submit(c->engine, in->db, &in->call) != 0) {
        in->call.err = -1;
        rcall_in_done(&in->call);
    }
}

static void rcall_in_placed(dsq_place_wait *pw, int rc, const char *msg)
{
    rin_wait *w = (rin_wait *)((char *)pw - offsetof(rin_wait, w));
    dsq_cluster *c = w->in->owner;
    for (rin_wait **pp = &c->rins; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    dsq_rcall_in *in = w->in;
    free(w);
    if (rc != 0) {
        in->call.err = -1;
        in->call.code = DSQ_CODE_NOT_PRIMARY;
        snprintf(in->call.msg, sizeof in->call.msg, "database '%s' is not placed: %s", in->db, msg ? msg : "");
        rcall_in_done(&in->call);
        return;
    }
    rcall_in_run(c, in);
}

static void rcall_in(dsq_cluster *c, size_t node, const uint8_t *p, size_t n)
{
    dsq_rcall_in *in = dsq_rcall_decode_call(p, n);
    if (in == NULL) {
        /* Answered as a failure when its id can be read. */
        dsq_rd rd = dsq_rd_of(p, n);
        char db[129];
        dsq_r_str(&rd, db, sizeof db);
        uint64_t id = dsq_r_u64(&rd);
        DSQ_WARN("remote_call_refused", "node=%s reason=%s", node_name(c, node), "malformed");
        if (rd.bad || id == 0)
            return;
        dsq_call bad = {.err = -1, .code = DSQ_CODE_INVALID_REQUEST};
        snprintf(bad.msg, sizeof bad.msg, "node %s could not read the call", node_name(c, c->self));
        dsq_buf b = DSQ_BUF_INIT;
        if (dsq_rcall_encode_reply(&b, id, &bad) == 0)
            dsq_peer_send(c->peers, node, DSQ_CLUSTER_REPLY, b.data, b.len, NULL, 0);
        dsq_buf_free(&b);
        return;
    }
    in->node = node;
    in->owner = c;
    in->call.session = link_session(c, node);
    in->call.done = rcall_in_done;
    in->call.ud = in;
    c->rcalls_in++;
    /* With etcd, the caller may know the database's assignment before
     * this node has read it: the call waits for it, as replication's
     * messages do. */
    rin_wait *w = calloc(1, sizeof *w);
    char err[256];
    int rc = w != NULL && c->engine != NULL ? dsq_cluster_place(c, in->db, &w->w, err, sizeof err) : -1;
    if (rc == 1) {
        w->in = in;
        w->w.done = rcall_in_placed;
        w->next = c->rins;
        c->rins = w;
        return;
    }
    free(w);
    rcall_in_run(c, in);
}

static void rcall_reply(dsq_cluster *c, size_t node, const uint8_t *p, size_t n)
{
    uint64_t id = dsq_rcall_reply_id(p, n);
    for (rpending *r = c->rcalls; r; r = r->next)
        if (r->id == id && id != 0 && r->node == node) {
            rp_unlink(c, r);
            dsq_call *call = r->call;
            free(r);
            dsq_rcall_decode_reply(p, n, call);
            if (call->encode != NULL) /* (what the engine's worker would have run) */
                call->encode(call);
            call->done(call);
            return;
        }
}

/* The link to `node` went down (or every link, node SIZE_MAX, at stop):
 * the calls sent there fail — their outcome is not known. */
static void rcalls_lost(dsq_cluster *c, size_t node)
{
    for (;;) {
        rpending *r = c->rcalls;
        while (r != NULL && !(r->id != 0 && (node == SIZE_MAX || r->node == node)))
            r = r->next;
        if (r == NULL)
            break;
        rp_unlink(c, r);
        dsq_call *call = r->call;
        rp_fail(r, DSQ_CODE_NOT_PRIMARY,
                "database '%s': the link to node %s went down before it answered (the call's outcome is not known)",
                r->db, node_name(c, r->node));
        free(r);
        call->done(call);
    }
}

/* ---- other modules' messages ---- */

void dsq_cluster_set_ext(dsq_cluster *c, const dsq_cluster_ext *x) { c->ext = *x; }

int dsq_cluster_send(dsq_cluster *c, size_t node, uint8_t type, const void *a, size_t alen, const void *b,
                     size_t blen)
{
    if (c->peers == NULL || type < DSQ_CLUSTER_EXT_MIN || type > DSQ_CLUSTER_EXT_MAX)
        return -1;
    return dsq_peer_send(c->peers, node, type, a, alen, b, blen);
}

size_t dsq_cluster_queued(dsq_cluster *c, size_t node) { return c->peers ? dsq_peer_queued(c->peers, node) : 0; }

bool dsq_cluster_primary(dsq_cluster *c, const char *db, size_t *node)
{
    *node = c->self;
    if (c->peers != NULL)
        (void)dsq_repl_where(c->repl, db, node);
    return *node == c->self;
}

const char *dsq_cluster_node_id(const dsq_cluster *c, size_t node) { return node_name(c, node); }

/* ---- the VSchema the nodes share ---- */

void dsq_cluster_set_vschema_hooks(dsq_cluster *c, const dsq_cluster_vschema_hooks *h) { c->vs = *h; }

static void vschema_send(dsq_cluster *c, size_t node, uint64_t version, const char *text)
{
    dsq_buf b = DSQ_BUF_INIT;
    if (dsq_w_u64(&b, version) == 0)
        dsq_peer_send(c->peers, node, DSQ_CLUSTER_VSCHEMA, b.data, b.len, text, strlen(text));
    dsq_buf_free(&b);
}

void dsq_cluster_share_vschema(dsq_cluster *c, uint64_t version, const char *text)
{
    if (c == NULL || c->peers == NULL || text == NULL)
        return;
    for (size_t i = 0; i < DSQ_NODES_MAX; i++)
        if (i != c->self && dsq_peer_up(c->peers, i))
            vschema_send(c, i, version, text);
}

static void vschema_link_up(dsq_cluster *c, size_t node)
{
    if (c->vs.get == NULL)
        return;
    uint64_t version = 0;
    char *text = c->vs.get(c->vs.ud, &version);
    if (text != NULL && version > 0)
        vschema_send(c, node, version, text);
    free(text);
}

static void vschema_in(dsq_cluster *c, size_t node, const uint8_t *p, size_t n)
{
    dsq_rd rd = dsq_rd_of(p, n);
    uint64_t version = dsq_r_u64(&rd);
    if (rd.bad || c->vs.got == NULL)
        return;
    c->vs.got(c->vs.ud, node_name(c, node), version, (const char *)rd.p, dsq_rd_left(&rd));
}

void dsq_cluster_rcall_counts(const dsq_cluster *c, uint64_t *out, uint64_t *in)
{
    *out = c ? c->rcalls_out : 0;
    *in = c ? c->rcalls_in : 0;
}

static void on_message(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_cluster *c = ud;
    if (type == DSQ_CLUSTER_CALL) {
        rcall_in(c, node, p, n);
        return;
    }
    if (type == DSQ_CLUSTER_REPLY) {
        rcall_reply(c, node, p, n);
        return;
    }
    if (type == DSQ_CLUSTER_VSCHEMA) {
        vschema_in(c, node, p, n);
        return;
    }
    if (type >= DSQ_CLUSTER_EXT_MIN && type <= DSQ_CLUSTER_EXT_MAX) {
        if (c->ext.message != NULL)
            c->ext.message(c->ext.ud, node, type, p, n);
        return;
    }
    if (type == DSQ_CLUSTER_NODE_INFO) {
        char client[80], forward[80];
        if (dsq_node_info_decode(p, n, client, forward, sizeof client) == 0) {
            snprintf(c->client_addr[node], sizeof c->client_addr[node], "%s", client);
            snprintf(c->forward_addr[node], sizeof c->forward_addr[node], "%s", forward);
        }
        return;
    }
    dsq_eplace *e = atomic_load(&c->eplace);
    if (e != NULL && type >= DSQ_REPL_SHIP && type < DSQ_REPL_BEAT) {
        /* About a database: held while its assignment is read, when it is
         * not known here yet (its primary placed it a moment ago). */
        dsq_rd rd = dsq_rd_of(p, n);
        char db[129];
        dsq_r_str(&rd, db, sizeof db);
        if (!rd.bad && dsq_eplace_hold(e, db, node, type, p, n))
            return;
    }
    dsq_repl_on_message(c->repl, node, type, p, n);
}

/* A held message, its database known now. */
static void on_replay(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n)
{
    dsq_cluster *c = ud;
    dsq_repl_on_message(c->repl, node, type, p, n);
}

/* A database's assignment changed in etcd. */
static void on_placement_changed(void *ud, const char *db)
{
    dsq_cluster *c = ud;
    dsq_repl_placement_changed(c->repl, db);
    dsq_failover_kick(c->failover);
}

/* The failover's hands on replication. */
static int failover_promote(void *ud, const char *db, uint64_t min_epoch, dsq_failover_promoted_fn done, void *arg,
                            char *err, size_t errlen);
static bool failover_primary_here(void *ud, const char *db) { return dsq_repl_primary_here(((dsq_cluster *)ud)->repl, db); }
static int failover_change(void *ud, const char *db, const char *out, const char *in, uint64_t min_epoch,
                           dsq_failover_promoted_fn done, void *arg, char *err, size_t errlen);
static size_t failover_copyset(void *ud, const char *db, char (*ids)[DSQ_NODE_ID_MAX], size_t max);
static bool failover_member(void *ud, const char *db) { return dsq_repl_member(((dsq_cluster *)ud)->repl, db); }

static void on_link(void *ud, size_t node, bool up)
{
    dsq_cluster *c = ud;
    if (up && (c->client_addr[c->self][0] || c->forward_addr[c->self][0])) {
        /* where this node takes the clients the others pass on */
        dsq_buf b = DSQ_BUF_INIT;
        if (dsq_node_info_encode(&b, c->client_addr[c->self], c->forward_addr[c->self]) == 0)
            dsq_peer_send(c->peers, node, DSQ_CLUSTER_NODE_INFO, b.data, b.len, NULL, 0);
        dsq_buf_free(&b);
    }
    if (!up) {
        rcalls_lost(c, node);
        /* The transactions that node began here end: it cannot end them
         * now (the cross-shard ones among them keep their records, which
         * its recovery resolves). */
        if (c->engine != NULL)
            dsq_engine_session_closed(c->engine, link_session(c, node));
        c->link_gen[node]++;
    } else {
        vschema_link_up(c, node);
    }
    if (c->ext.link != NULL)
        c->ext.link(c->ext.ud, node, up);
    dsq_repl_on_link(c->repl, node, up);
}

static void on_writable(void *ud, size_t node)
{
    dsq_cluster *c = ud;
    if (c->ext.writable != NULL)
        c->ext.writable(c->ext.ud, node);
    dsq_repl_on_writable(c->repl, node);
}

/* ---- cluster.etcd: the topo's events ---------------------------------------------------------- */

static void on_topo_mail(void *arg, bool run);

/* On a topo thread: copy the event for the loop and wake it. */
static void on_topo_event(void *ud, const dsq_topo_event *ev)
{
    dsq_cluster *c = ud;
    topo_msg *m = calloc(1, sizeof *m);
    if (m == NULL) {
        DSQ_ERROR("cluster_topo_event_lost", "node=%s reason=%s", dsq_log_q(ev->id), dsq_log_q("out of memory"));
        return;
    }
    m->type = ev->type;
    snprintf(m->id, sizeof m->id, "%s", ev->id ? ev->id : "");
    if (ev->node != NULL) {
        m->has_node = true;
        m->node = *ev->node;
    }
    snprintf(m->msg, sizeof m->msg, "%s", ev->msg ? ev->msg : "");
    m->c = c;
    if (dsq_mailbox_post(c->topo_mb, on_topo_mail, m) != 0)
        free(m); /* (stopping) */
}

/* A node in etcd: link up with it (it is added, or moved when its peer
 * address changed; the same address again changes nothing). */
static void topo_node_seen(dsq_cluster *c, const topo_msg *m)
{
    if (!m->has_node || strcmp(m->node.id, c->nodes[c->self].id) == 0)
        return;
    char spec[DSQ_NODE_ID_MAX + DSQ_TOPO_ADDR_MAX + 1], why[256];
    dsq_node n;
    size_t index;
    snprintf(spec, sizeof spec, "%s@%s", m->node.id, m->node.peer);
    if (dsq_node_parse(spec, &n, why, sizeof why) != 0 ||
        dsq_peers_add(c->peers, &n, &index, why, sizeof why) != 0) {
        DSQ_WARN("cluster_node_not_added", "node=%s peer=%s reason=%s", dsq_log_q(m->node.id),
                 dsq_log_q(m->node.peer), dsq_log_q(why));
        return;
    }
    DSQ_INFO("cluster_node_added", "node=%s peer=%s index=%zu", dsq_log_q(m->node.id), dsq_log_q(m->node.peer),
             index);
}

static void topo_handle(dsq_cluster *c, const topo_msg *m)
{
    switch (m->type) {
    case DSQ_TOPO_NODE_UP:
    case DSQ_TOPO_NODE_CHANGED:
        if (m->has_node && atomic_load(&c->eplace) != NULL)
            dsq_eplace_node(atomic_load(&c->eplace), m->node.id, true, m->node.draining, m->node.dbs, m->node.bytes);
        topo_node_seen(c, m);
        dsq_failover_kick(c->failover);
        break;
    case DSQ_TOPO_NODE_DOWN:
        /* Its key is gone (its lease expired or was revoked). Nothing more
         * yet: the link stays known (and is redialed) until a later step
         * removes the node (dsq_peers_remove) once it has been gone for
         * node_dead_after; meanwhile a node that comes back at the same
         * address links again by itself. */
        DSQ_INFO("cluster_node_down", "node=%s reason=%s", dsq_log_q(m->id), dsq_log_q(m->msg));
        if (atomic_load(&c->eplace) != NULL)
            dsq_eplace_node(atomic_load(&c->eplace), m->id, false, false, 0, 0);
        dsq_failover_node_left(c->failover, m->id);
        break;
    case DSQ_TOPO_REGISTERED:
        c->registered = c->etcd_up = true;
        DSQ_INFO("cluster_registered", "node=%s msg=%s", dsq_log_q(m->id), dsq_log_q(m->msg));
        break;
    case DSQ_TOPO_REGISTER_CONFLICT:
        DSQ_WARN("cluster_register_conflict", "node=%s other_peer=%s msg=%s", dsq_log_q(m->id),
                 dsq_log_q(m->has_node ? m->node.peer : ""), dsq_log_q(m->msg));
        break;
    case DSQ_TOPO_LEASE_LOST:
        c->registered = false;
        DSQ_WARN("cluster_lease_lost", "node=%s msg=%s", dsq_log_q(m->id), dsq_log_q(m->msg));
        break;
    case DSQ_TOPO_ETCD_DOWN:
        c->etcd_up = false;
        DSQ_WARN("cluster_etcd_down", "msg=%s", dsq_log_q(m->msg));
        break;
    case DSQ_TOPO_ETCD_UP:
        c->etcd_up = true;
        DSQ_INFO("cluster_etcd_up", "msg=%s", dsq_log_q(m->msg));
        break;
    case DSQ_TOPO_VIEW_READ:
        c->view_read = true; /* the nodes not seen now have no key in etcd */
        if (atomic_load(&c->eplace) != NULL)
            dsq_eplace_view(atomic_load(&c->eplace));
        dsq_failover_kick(c->failover);
        break;
    }
}

static void mailbox_free(dsq_mailbox *m) { free(m); }

/* On the loop (run), or dropped when the mailbox closes. */
static void on_topo_mail(void *arg, bool run)
{
    topo_msg *m = arg;
    if (run && m->c->topo != NULL)
        topo_handle(m->c, m);
    free(m);
}

/* The load new databases are placed by (eplace.h): the databases this
 * node holds a copy of, by the assignments, and the bytes of its
 * databases' files on its disk. topo writes it at most once a node_ttl,
 * when it changed. */
static void on_load_timer(uv_timer_t *t)
{
    dsq_cluster *c = t->data;
    if (c->topo == NULL || c->engine == NULL)
        return;
    dsq_cluster_node_etcd me;
    dsq_cluster_node_etcd_get(c, c->self, &me);
    dsq_engine_stats es;
    dsq_engine_stats_get(c->engine, &es);
    dsq_topo_set_load(c->topo, me.copies, es.evict_counts.local_bytes);
}

static int topo_start(dsq_cluster *c, uv_loop_t *loop, char *err, size_t errlen)
{
    if ((c->topo_mb = malloc(sizeof *c->topo_mb)) == NULL || dsq_mailbox_init(c->topo_mb, loop) != 0) {
        free(c->topo_mb);
        c->topo_mb = NULL;
        snprintf(err, errlen, "cannot start the etcd events' handle");
        return -1;
    }
    dsq_topo_cfg tc = {
        .etcd = {.endpoints = c->etcd,
                 .prefix = c->etcd_prefix,
                 .user = c->etcd_user,
                 .password = c->etcd_password,
                 .ca_file = c->etcd_ca,
                 .cert_file = c->etcd_cert,
                 .key_file = c->etcd_key},
        .id = c->nodes[c->self].id,
        .peer = c->advertise != NULL ? c->advertise : c->nodes[c->self].addr_text,
        .client = c->client_addr[c->self][0] ? c->client_addr[c->self] : NULL,
        .forward = c->forward_addr[c->self][0] ? c->forward_addr[c->self] : NULL,
        .node_ttl = c->cfg.node_ttl_s,
        .on_event = on_topo_event,
        .ud = c,
    };
    char why[400];
    /* The assignments first: the nodes topo finds are where new databases
     * are placed. */
    dsq_eplace_cfg ec = {
        .loop = loop,
        .ids = c->ids,
        .replicas = c->cfg.replicas ? c->cfg.replicas : 1,
        .etcd = tc.etcd,
        .replay = on_replay,
        .changed = on_placement_changed,
        .ud = c,
    };
    dsq_eplace *ep;
    if (dsq_eplace_start(&ec, &ep, why, sizeof why) != 0) {
        snprintf(err, errlen, "cluster.etcd: %s", why);
        return -1;
    }
    atomic_store(&c->eplace, ep);
    dsq_failover_cfg fc = {
        .loop = loop,
        .eplace = ep,
        .self = c->nodes[c->self].id,
        .promote = failover_promote,
        .primary_here = failover_primary_here,
        .change = failover_change,
        .member = failover_member,
        .copyset = failover_copyset,
        .ids = c->ids,
        .dead_after_ms = c->cfg.node_dead_after_ms,
        .ud = c,
    };
    if (dsq_failover_start(&fc, &c->failover, why, sizeof why) != 0) {
        snprintf(err, errlen, "cluster.etcd: %s", why);
        return -1;
    }
    if ((c->topo = dsq_topo_start(&tc, why, sizeof why)) == NULL) {
        snprintf(err, errlen, "cluster.etcd: %s", why);
        return -1;
    }
    uv_timer_init(loop, &c->load_timer);
    c->load_timer.data = c;
    c->load_timer_on = true;
    uv_timer_start(&c->load_timer, on_load_timer, 1000, 1000);
    uv_unref((uv_handle_t *)&c->load_timer);
    return 0;
}

/* Stop registering and watching (the lease is revoked: the others see
 * this node leave at once); events not yet handled are dropped. Blocks
 * for up to about two etcd requests' timeouts (topo.h). */
static void topo_stop(dsq_cluster *c)
{
    if (c->load_timer_on) {
        c->load_timer_on = false;
        uv_close((uv_handle_t *)&c->load_timer, NULL); /* (c outlives it: freed once the links have closed) */
    }
    dsq_failover_stop(c->failover); /* (before the assignments it acts on) */
    c->failover = NULL;
    dsq_eplace *ep = atomic_exchange(&c->eplace, NULL);
    dsq_eplace_stop(ep); /* (waiters are told it stops) */
    if (c->topo != NULL) {
        dsq_topo *t = c->topo;
        c->topo = NULL;
        dsq_topo_stop(t);
    }
    if (c->topo_mb != NULL) {
        dsq_mailbox_close(c->topo_mb, mailbox_free); /* (what is queued is dropped) */
        c->topo_mb = NULL;
    }
}

int dsq_cluster_start(dsq_cluster *c, uv_loop_t *loop, struct dsq_engine *e, const char *client_addr,
                      const char *forward_addr, char *err, size_t errlen)
{
    if (client_addr != NULL)
        snprintf(c->client_addr[c->self], sizeof c->client_addr[c->self], "%s", client_addr);
    if (forward_addr != NULL)
        snprintf(c->forward_addr[c->self], sizeof c->forward_addr[c->self], "%s", forward_addr);
    dsq_peers_cfg pc = {
        .loop = loop,
        .nodes = c->nodes,
        .nnodes = c->nnodes,
        .self = c->self,
        .ids = c->ids,
        .secret = c->secret,
        .heartbeat_ms = c->cfg.heartbeat_ms,
        .dead_after_ms = c->cfg.peer_timeout_ms,
        .send_limit = DSQ_CLUSTER_SEND_LIMIT,
        .max_message = 1ull << 31,
        .tls_cert = c->tls_cert,
        .tls_key = c->tls_key,
        .tls_ca = c->tls_ca,
        .on_message = on_message,
        .on_link = on_link,
        .on_writable = on_writable,
        .ud = c,
    };
    /* With etcd, the links start with this node alone: the others are
     * added as etcd says they are there. */
    if ((c->nnodes > 1 || c->etcd != NULL) && dsq_peers_start(&pc, &c->peers, err, errlen) != 0)
        return -1;
    c->loop = loop;
    if (dsq_repl_start(c->repl, loop, e, c->peers) != 0) {
        snprintf(err, errlen, "cannot start replication");
        return -1;
    }
    c->engine = e;
    /* Call ids start anywhere: a node started again does not reuse its
     * last run's (a late reply must not meet a new call). */
    if (getrandom(&c->rcall_next, sizeof c->rcall_next, 0) != (ssize_t)sizeof c->rcall_next)
        c->rcall_next = dsq_now_ms() << 16;
    c->rcall_next >>= 2;
    if (c->etcd != NULL && topo_start(c, loop, err, errlen) != 0)
        return -1;
    return 0;
}

static void peers_stopped(void *ud)
{
    dsq_cluster *c = ud;
    void (*done)(void *) = c->done;
    void *dud = c->done_ud;
    if (!c->leak) {
        /* (The engine is closed: every log synced.) */
        dsq_epochs_stopped(c->epochs, dsq_repl_resumed_all(c->repl));
        dsq_repl_free(c->repl);
        dsq_epochs_close(c->epochs);
        cluster_free(c);
    }
    if (done != NULL)
        done(dud);
}

static void stop_peers(dsq_cluster *c)
{
    if (c->peers != NULL)
        dsq_peers_stop(c->peers, peers_stopped, c);
    else
        peers_stopped(c);
}

static void wait_closed(uv_handle_t *h) { stop_peers(h->data); }

/* Stopping: the epochs' writes under way call back into replication (it
 * only frees what they carry now); the links and replication's memory
 * go once they have all ended, or after 10 s (then that memory is left
 * to them: the process is ending). */
static void on_wait(uv_timer_t *t)
{
    dsq_cluster *c = t->data;
    unsigned pending = dsq_epochs_pending(c->epochs);
    if (pending > 0 && dsq_now_ms() < c->wait_until)
        return;
    if (pending > 0) {
        DSQ_ERROR("cluster_stop_incomplete", "epoch_writes=%u reason=%s", pending,
                  dsq_log_q("the epochs' writes did not end in 10 s"));
        c->leak = true;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, wait_closed);
}

void dsq_cluster_quiesce(dsq_cluster *c)
{
    if (c == NULL)
        return;
    dsq_failover_quiesce(c->failover);
    dsq_repl_quiesce(c->repl);
}

void dsq_cluster_stop(dsq_cluster *c, void (*done)(void *ud), void *ud)
{
    if (c == NULL) {
        if (done != NULL)
            done(ud);
        return;
    }
    c->done = done;
    c->done_ud = ud;
    /* (the engine is gone: no call runs here for another node now, and
     * those sent to others are not waited for) */
    c->engine = NULL;
    rcalls_lost(c, SIZE_MAX);
    for (rpending *r; (r = c->rcalls) != NULL;) { /* (waiting for a placement) */
        dsq_cluster_place_cancel(c, &r->w);
        rp_unlink(c, r);
        dsq_call *call = r->call;
        rp_fail(r, DSQ_CODE_NOT_PRIMARY, "database '%s': this node is stopping", r->db);
        free(r);
        call->done(call);
    }
    for (rin_wait *w; (w = c->rins) != NULL;) {
        c->rins = w->next;
        dsq_cluster_place_cancel(c, &w->w);
        rcall_in_run(c, w->in); /* (refused: stopping) */
        free(w);
    }
    topo_stop(c); /* before the links: no node is added to them after this */
    dsq_repl_stop(c->repl);
    if (c->loop == NULL || dsq_epochs_pending(c->epochs) == 0) {
        stop_peers(c);
        return;
    }
    c->wait_until = dsq_now_ms() + 10000;
    uv_timer_init(c->loop, &c->wait);
    c->wait.data = c;
    uv_timer_start(&c->wait, on_wait, 5, 5);
}

int dsq_cluster_place(dsq_cluster *c, const char *db, dsq_place_wait *w, char *err, size_t errlen)
{
    if (c->etcd == NULL)
        return 0;
    dsq_eplace *ep = atomic_load(&c->eplace);
    if (ep == NULL) {
        snprintf(err, errlen, "the cluster is not running");
        return -1;
    }
    return dsq_eplace_wait(ep, db, w, err, errlen);
}

void dsq_cluster_place_cancel(dsq_cluster *c, dsq_place_wait *w)
{
    dsq_eplace *ep = c != NULL ? atomic_load(&c->eplace) : NULL;
    if (ep != NULL)
        dsq_eplace_cancel(ep, w);
}

void dsq_cluster_etcd_get(dsq_cluster *c, dsq_cluster_etcd_info *out)
{
    memset(out, 0, sizeof *out);
    dsq_eplace *ep = c != NULL ? atomic_load(&c->eplace) : NULL;
    if (ep == NULL)
        return;
    out->on = true;
    out->etcd_up = c->etcd_up;
    out->registered = c->registered;
    out->view_whole = dsq_eplace_view_whole(ep);
    out->assignments_loaded = dsq_eplace_loaded(ep);
    out->assignments = dsq_eplace_count(ep);
    dsq_failover_stats_get(c->failover, &out->failover);
}

typedef struct count_ctx {
    const char *id;
    uint64_t copies, primaries;
} count_ctx;

static int count_node(void *ud, const dsq_assignment *a)
{
    count_ctx *x = ud;
    for (size_t i = 0; i < a->ncopies; i++)
        if (strcmp(a->copies[i], x->id) == 0)
            x->copies++;
    x->primaries += strcmp(a->primary, x->id) == 0;
    return 0;
}

void dsq_cluster_node_etcd_get(dsq_cluster *c, size_t i, dsq_cluster_node_etcd *out)
{
    memset(out, 0, sizeof *out);
    dsq_eplace *ep = atomic_load(&c->eplace);
    const char *id = dsq_nodeset_id(c->ids, (uint32_t)i);
    if (ep == NULL || id == NULL)
        return;
    dsq_eplace_node_load(ep, id, &out->alive, &out->dbs, &out->bytes);
    out->draining = dsq_eplace_draining(ep, id);
    dsq_assign *as = dsq_eplace_assign(ep);
    count_ctx x = {.id = id};
    if (as != NULL)
        dsq_assign_each(as, count_node, &x);
    out->copies = x.copies;
    out->primaries = x.primaries;
}

int dsq_cluster_drain(dsq_cluster *c, const char *node, bool drain, uint64_t *primaries, char *err, size_t errlen)
{
    *primaries = 0;
    if (c->failover == NULL || c->topo == NULL) {
        snprintf(err, errlen, "draining needs the cluster on etcd ([cluster] etcd)");
        return -1;
    }
    const char *self = c->nodes[c->self].id;
    if (strcmp(node, self) != 0) {
        size_t i = c->peers != NULL ? dsq_peers_find(c->peers, node) : SIZE_MAX;
        const char *at = i != SIZE_MAX && i < DSQ_NODES_MAX ? c->client_addr[i] : "";
        snprintf(err, errlen, "this is node %s: ask node %.40s itself%s%s%s", self, node, at[0] ? " (at " : "", at,
                 at[0] ? ")" : "");
        return -1;
    }
    if (drain != dsq_failover_draining(c->failover))
        DSQ_INFO(drain ? "drain_started" : "drain_stopped", "node=%s", self);
    dsq_topo_set_draining(c->topo, drain);
    dsq_failover_set_draining(c->failover, drain);
    dsq_cluster_node_etcd me;
    dsq_cluster_node_etcd_get(c, c->self, &me);
    *primaries = me.primaries;
    return 0;
}

size_t dsq_cluster_failovers(dsq_cluster *c, dsq_failover_record *out, size_t max)
{
    return c != NULL ? dsq_failover_recent(c->failover, out, max) : 0;
}

/* Once the links run, their nodes: cluster.peers' (the same indices),
 * then those found in etcd. */
size_t dsq_cluster_nnodes(const dsq_cluster *c) { return c->peers != NULL ? dsq_peers_count(c->peers) : c->nnodes; }

void dsq_cluster_node(const dsq_cluster *c, size_t i, dsq_cluster_node_info *out)
{
    const dsq_node *n = c->peers != NULL ? dsq_peers_node(c->peers, i) : &c->nodes[i];
    out->id = n->id;
    out->address = n->addr_text;
    out->client = i < DSQ_NODES_MAX ? c->client_addr[i] : "";
    out->self = i == c->self;
    /* (a node removed from the links is listed, unreachable) */
    out->reachable = out->self || (c->peers != NULL && dsq_peer_known(c->peers, i) && dsq_peer_up(c->peers, i));
}

void dsq_cluster_stats_get(const dsq_cluster *c, dsq_cluster_stats *out)
{
    *out = (dsq_cluster_stats){0};
    dsq_repl_stats_get(c->repl, &out->repl);
    if (c->peers == NULL)
        return;
    dsq_peers_stats(c->peers, &out->links);
    for (size_t i = 0; i < dsq_peers_count(c->peers); i++)
        out->links_up += i != c->self && dsq_peer_up(c->peers, i);
}

/* Node i's id (valid while the cluster runs). */
static const char *node_name(const dsq_cluster *c, size_t i)
{
    const char *id = dsq_nodeset_id(c->ids, (uint32_t)i);
    return id != NULL ? id : "?";
}

void dsq_cluster_describe(dsq_cluster *c, const char *db, dsq_cluster_db *out)
{
    dsq_repl_info ri;
    dsq_repl_describe(c->repl, db, &ri);
    memset(out, 0, sizeof *out);
    out->primary = node_name(c, ri.primary);
    out->epoch = ri.epoch;
    out->ncopies = ri.ncopies;
    for (size_t i = 0; i < ri.ncopies; i++)
        out->copies[i] = (dsq_cluster_copy){.node = node_name(c, ri.copies[i].node),
                                            .primary = ri.copies[i].primary,
                                            .durable = ri.copies[i].durable,
                                            .applied = ri.copies[i].applied};
}

static int failover_promote(void *ud, const char *db, uint64_t min_epoch, dsq_failover_promoted_fn done, void *arg,
                            char *err, size_t errlen)
{
    dsq_cluster *c = ud;
    return dsq_repl_promote(c->repl, db, min_epoch, done, arg, err, errlen);
}

static int failover_change(void *ud, const char *db, const char *out, const char *in, uint64_t min_epoch,
                           dsq_failover_promoted_fn done, void *arg, char *err, size_t errlen)
{
    dsq_cluster *c = ud;
    uint32_t o = dsq_nodeset_find(c->ids, out), i = dsq_nodeset_find(c->ids, in);
    if (o == DSQ_NODE_NONE || i == DSQ_NODE_NONE) {
        snprintf(err, errlen, "node %s is not known here", o == DSQ_NODE_NONE ? out : in);
        return -1;
    }
    return dsq_repl_change(c->repl, db, o, i, min_epoch, done, arg, err, errlen);
}

static size_t failover_copyset(void *ud, const char *db, char (*ids)[DSQ_NODE_ID_MAX], size_t max)
{
    dsq_cluster *c = ud;
    uint32_t nodes[DSQ_COPYSET_MAX];
    uint64_t set_epoch;
    size_t n = dsq_repl_copyset(c->repl, db, nodes, DSQ_COPYSET_MAX, &set_epoch), k = 0;
    if (set_epoch == 0)
        return 0; /* (the placement's: etcd's own) */
    for (size_t i = 0; i < n && k < max; i++) {
        const char *id = dsq_nodeset_id(c->ids, nodes[i]);
        if (id == NULL)
            return 0;
        snprintf(ids[k++], DSQ_NODE_ID_MAX, "%s", id);
    }
    return k;
}

int dsq_cluster_move(dsq_cluster *c, const char *db, const char *from, const char *to,
                     void (*done)(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg), void *ud,
                     char *err, size_t errlen)
{
    if (c->failover == NULL) {
        snprintf(err, errlen, "moving a copy needs cluster.etcd (the static placement decides the copies)");
        return -1;
    }
    return dsq_failover_move(c->failover, db, from, to, done, ud, err, errlen);
}

int dsq_cluster_promote(dsq_cluster *c, const char *db,
                        void (*done)(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg), void *ud,
                        char *err, size_t errlen)
{
    if (c->failover == NULL)
        return dsq_repl_promote(c->repl, db, 0, done, ud, err, errlen);
    /* With etcd, the assignment names the new primary first: else the
     * former one, named there still, would take its place back. */
    return dsq_failover_promote(c->failover, db, done, ud, err, errlen);
}

int dsq_cluster_where(dsq_cluster *c, const char *db, char *addr, size_t len, const char **node)
{
    size_t primary;
    dsq_role role = dsq_repl_where(c->repl, db, &primary);
    /* With TLS, never the clients' listener: what goes between nodes is
     * encrypted (a node that told no TLS address is not passed clients). */
    snprintf(addr, len, "%s", c->tls_cert != NULL ? c->forward_addr[primary] : c->client_addr[primary]);
    *node = node_name(c, primary);
    if (primary == c->self)
        return 0; /* (a copy being promoted here: served, or held, here) */
    switch (role) {
    case DSQ_ROLE_FOLLOWER: return 1;
    case DSQ_ROLE_ELSEWHERE: return 2;
    default: return 0;
    }
}

void dsq_cluster_lag(dsq_cluster *c, size_t i, uint64_t *lsn, uint64_t *ms) { dsq_repl_lag(c->repl, i, lsn, ms); }
