/* server — the loop, listeners, signals, configuration reload, shutdown.
 *
 * Divisions: construction; listeners; signals (SIGHUP reload, SIGTERM and
 * SIGINT drain); running and tearing down.
 *
 * Shutdown: the first SIGTERM/SIGINT closes the listeners, tells systemd
 * STOPPING=1, and asks every connection to finish (idle ones at once,
 * busy ones after their response, WebSockets with a 1001 close). The loop
 * ends when the last connection has gone or shutdown_timeout passes,
 * whichever is first; a second signal ends it at once. Signal and flush
 * handles are unreferenced so that they never keep the loop alive. */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/log.h"
#include "server/hrana.h"
#include "server/rcdc.h"
#include "lake/writer.h"
#include "server/iceberg.h"
#include "server/server_int.h"
#include "sharding/router.h"
#include "server/ws.h"

/* ---- construction ------------------------------------------------------------ */

int dsq_server_check_exposure(const dsq_config *cfg, const dsq_auth *auth, char *err,
                              size_t errlen)
{
    if (dsq_auth_count(auth) > 0 || cfg->allow_unauthenticated)
        return 0;
    for (int tls = 0; tls < 2; tls++) {
        const dsq_strlist *l = tls ? &cfg->tls_listen : &cfg->listen;
        for (size_t i = 0; i < l->n; i++) {
            struct sockaddr_storage ss;
            if (dsq_parse_addr(l->items[i], &ss) == 0 && !dsq_addr_is_loopback(&ss)) {
                snprintf(err, errlen,
                         "refusing to listen on %s without auth tokens: configure [auth] "
                         "token or tokens_file, or set allow_unauthenticated = yes",
                         l->items[i]);
                return -1;
            }
        }
    }
    return 0;
}

/* Before the loop blocks: send what connections hold, and wake the
 * workers once for every call this iteration submitted. */
static void on_flush(uv_prepare_t *h)
{
    dsq_server *srv = h->data;
    dsq__conns_flush(srv);
    if (srv->engine)
        dsq_engine_kick(srv->engine);
}

/* ---- the engine ------------------------------------------------------------------ */

/* From a worker thread: calls are done. One write per wake-up, however
 * many workers finish before the loop runs. Not uv_async_send: the loop
 * thread that its write wakes spins until the sender has returned, and on
 * one CPU the sender cannot return while the loop spins (seen in perf as
 * libuv spinning then sched_yield, on every request). */
static void engine_wake(void *arg)
{
    dsq_server *srv = arg;
    if (atomic_exchange_explicit(&srv->engine_woken, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        ssize_t n = write(srv->engine_efd, &one, sizeof one);
        (void)n; /* EAGAIN: the counter is full, so a wake-up is pending anyway */
    }
}

static void on_feed_due(uv_timer_t *t);

static void feed_poll(dsq_server *srv)
{
    dsq_engine_feed_poll(srv->engine);
    int64_t due = dsq_engine_feed_due_ms(srv->engine);
    if (due >= 0)
        uv_timer_start(&srv->feed_timer, on_feed_due, (uint64_t)due, 0);
}

/* Completions, then CDC subscribers (again when feeds held back are
 * due). When subscribers have events coming, a busy server sends the
 * completions' replies first: its writers do not wait behind the events
 * of many subscribers. With CPU to spare, events go first, as soon as
 * they are durable; without subscribers, replies go when the iteration
 * ends, as every other write. */
static void engine_poll(dsq_server *srv)
{
    dsq_engine_poll_calls(srv->engine);
    if (dsq_engine_feed_pending(srv->engine) && dsq_engine_busy(srv->engine))
        dsq__conns_flush(srv);
    feed_poll(srv);
}

static void on_feed_due(uv_timer_t *t)
{
    feed_poll(t->data);
}

static void on_engine_wake(uv_poll_t *h, int status, int events)
{
    dsq_server *srv = h->data;
    uint64_t v;
    ssize_t n = read(srv->engine_efd, &v, sizeof v);
    (void)n;
    /* Clear before taking the completions: a worker finishing after this
     * writes again, one finishing before it is in the list poll takes. */
    atomic_store_explicit(&srv->engine_woken, 0, memory_order_release);
    engine_poll(srv);
}

static void on_engine_tick(uv_timer_t *t)
{
    dsq_server *srv = t->data;
    dsq_engine_tick(srv->engine);
    if (srv->router != NULL)
        dsq_router_tick(srv->router); /* cross-shard transactions a crash left: resolved */
    dsq_hrana_sweep(srv);
}

static int engine_start(dsq_server *srv, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    atomic_init(&srv->engine_woken, 0);
    srv->engine_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->engine_efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return -1;
    }
    uv_poll_init(&srv->loop, &srv->engine_poll, srv->engine_efd);
    srv->engine_poll.data = srv;
    uv_poll_start(&srv->engine_poll, UV_READABLE, on_engine_wake);
    uv_unref((uv_handle_t *)&srv->engine_poll);
    dsq_engine_cfg ec;
    dsq_config_engine(cfg, &ec);
    ec.objects = srv->objects;
    if (srv->cluster != NULL) {
        ec.repl = dsq_cluster_repl_hooks(srv->cluster);
        ec.repl_timeout_ms = cfg->cluster_commit_timeout_ms;
    }
    ec.wake = engine_wake;
    ec.wake_arg = srv;
    srv->engine = dsq_engine_new(&ec, err, errlen);
    if (srv->engine == NULL)
        return -1;
    /* Often enough for timeouts of 1 s to be felt within a quarter. */
    uint64_t every = cfg->engine_idle_timeout_ms < 1000 ? 50 : 250;
    uv_timer_init(&srv->loop, &srv->feed_timer);
    srv->feed_timer.data = srv;
    uv_unref((uv_handle_t *)&srv->feed_timer);
    uv_timer_init(&srv->loop, &srv->engine_tick);
    srv->engine_tick.data = srv;
    uv_timer_start(&srv->engine_tick, on_engine_tick, every, every);
    uv_unref((uv_handle_t *)&srv->engine_tick);
    srv->dosql = (dsq_dosql_limits){
        .max_params = cfg->engine_max_params,
        .max_batch = cfg->rpc_max_batch,
        .chunk_rows = cfg->rpc_stream_chunk_rows,
        .max_chunk_rows = cfg->rpc_max_stream_chunk_rows,
    };
    if ((srv->hrana = dsq_hrana_http_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* The router's merges run on libuv's thread pool. */
typedef struct offjob {
    uv_work_t w;
    void (*work)(void *arg);
    void (*after)(void *arg);
    void *arg;
} offjob;

static void offjob_work(uv_work_t *w)
{
    offjob *j = w->data;
    j->work(j->arg);
}

static void offjob_after(uv_work_t *w, int status)
{
    offjob *j = w->data;
    (void)status; /* (never cancelled: the work ran) */
    j->after(j->arg);
    free(j);
}

static void router_offload(void *ud, void (*work)(void *arg), void (*after)(void *arg), void *arg)
{
    dsq_server *srv = ud;
    offjob *j = malloc(sizeof *j);
    if (j != NULL) {
        j->w.data = j;
        j->work = work;
        j->after = after;
        j->arg = arg;
        if (uv_queue_work(&srv->loop, &j->w, offjob_work, offjob_after) == 0)
            return;
        free(j);
    }
    work(arg); /* (no memory for the job: here, then) */
    after(arg);
}

void dsq__offload(dsq_server *srv, void (*work)(void *arg), void (*after)(void *arg), void *arg)
{
    router_offload(srv, work, after, arg);
}

/* A shard's call, in a cluster: where its primary is. */
static int router_submit(void *ud, const char *db, dsq_call *c)
{
    dsq_server *srv = ud;
    if (srv->cluster == NULL || srv->engine == NULL) { /* (stopped) */
        c->err = -1;
        c->code = DSQ_CODE_NOT_PRIMARY;
        snprintf(c->msg, sizeof c->msg, "this node is stopping");
        return -1;
    }
    return dsq_cluster_submit(srv->cluster, db, c);
}

/* Whether db's primary is this node's (1), or whose (0, node). */
static int router_where(void *ud, const char *db, char *node, size_t n)
{
    dsq_server *srv = ud;
    if (srv->cluster == NULL)
        return 1;
    char addr[80];
    const char *id = NULL;
    if (dsq_cluster_where(srv->cluster, db, addr, sizeof addr, &id) == 0)
        return 1;
    snprintf(node, n, "%s", id ? id : "?");
    return 0;
}

/* The VSchema the nodes share: one applied here goes to the others; one
 * another node sent is applied here when newer. */
static void vschema_applied(void *ud, uint64_t version, const char *text)
{
    dsq_server *srv = ud;
    dsq_cluster_share_vschema(srv->cluster, version, text);
}

static char *vschema_get(void *ud, uint64_t *version)
{
    dsq_server *srv = ud;
    return srv->router != NULL ? dsq_router_get(srv->router, version) : NULL;
}

static void vschema_got(void *ud, const char *node, uint64_t version, const char *text, size_t len)
{
    dsq_server *srv = ud;
    char err[512], from[96];
    if (srv->router == NULL)
        return;
    snprintf(from, sizeof from, "node:%s", node);
    if (dsq_router_apply_shared(srv->router, text, len, version, from, err, sizeof err) < 0)
        DSQ_WARN("vschema_refused", "from=%s version=%llu reason=%s", node, (unsigned long long)version,
                 dsq_log_q(err));
}

/* Keyspaces: the VSchema applied last (data_dir/vschema.json), else
 * [sharding] vschema's file. */
static int router_new(dsq_server *srv, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    char state[4200];
    snprintf(state, sizeof state, "%s/vschema.json", cfg->data_dir);
    dsq_router_cfg rc = {
        .engine = srv->engine,
        .state_path = state,
        .vschema_path = cfg->sharding_vschema,
        .offload = router_offload,
        .offload_ud = srv,
        .timeout_ms = cfg->engine_query_timeout_ms,
        .max_result_bytes = cfg->engine_max_result_bytes,
        .txn_timeout_ms = cfg->engine_txn_timeout_ms,
        .max_txn_timeout_ms = cfg->engine_max_txn_timeout_ms,
        .submit = srv->cluster != NULL ? router_submit : NULL,
        .where = srv->cluster != NULL ? router_where : NULL,
        .on_applied = srv->cluster != NULL ? vschema_applied : NULL,
        .submit_ud = srv,
    };
    srv->router = dsq_router_new(&rc, err, errlen);
    if (srv->router == NULL)
        return -1;
    if (srv->cluster != NULL) {
        dsq_cluster_set_vschema_hooks(srv->cluster, &(dsq_cluster_vschema_hooks){vschema_get, vschema_got, srv});
        if ((srv->rcdc = dsq_rcdc_new(srv->cluster, srv->engine, srv->cdc_cache)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The other nodes of cluster.peers, if any: read the secret and set up
 * replication, before the engine (which is made with its hooks). */
static int cluster_new(dsq_server *srv, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    if (cfg->cluster_peers.n == 0)
        return 0;
    char secret[DSQ_SECRET_MAX + 1] = "";
    char why[400];
    if (cfg->cluster_secret_file != NULL &&
        dsq_cluster_read_secret(cfg->cluster_secret_file, secret, sizeof secret, why, sizeof why) != 0) {
        snprintf(err, errlen, "cluster.secret_file: %s", why);
        return -1;
    }
    dsq_commit_ack ack = DSQ_ACK_QUORUM;
    dsq_commit_ack_parse(cfg->cluster_commit_ack, &ack); /* (checked by the configuration) */
    dsq_cluster_cfg cc = {
        .data_dir = cfg->data_dir,
        .node_id = cfg->cluster_node_id,
        .peers = (const char *const *)cfg->cluster_peers.items,
        .npeers = cfg->cluster_peers.n,
        .secret = secret,
        .heartbeat_ms = cfg->cluster_heartbeat_ms,
        .peer_timeout_ms = cfg->cluster_peer_timeout_ms,
        .replicas = (unsigned)cfg->cluster_replicas,
        .ack = ack,
        .promote_timeout_ms = cfg->cluster_promote_timeout_ms,
        .tls_cert = cfg->cluster_tls ? cfg->cluster_tls_cert : NULL,
        .tls_key = cfg->cluster_tls_key,
        .tls_ca = cfg->cluster_tls_ca,
        .etcd = cfg->cluster_etcd,
        .etcd_prefix = cfg->cluster_etcd_prefix,
        .advertise = cfg->cluster_advertise,
        .node_ttl_s = (unsigned)(cfg->cluster_node_ttl_ms / 1000),
        .node_dead_after_ms = cfg->cluster_node_dead_after_ms,
        .etcd_user = cfg->cluster_etcd_user,
        .etcd_password = cfg->cluster_etcd_password, /* (read by dsq_config_finish) */
        .etcd_ca = cfg->cluster_etcd_ca,
        .etcd_cert = cfg->cluster_etcd_cert,
        .etcd_key = cfg->cluster_etcd_key,
    };
    int rc = dsq_cluster_new(&cc, &srv->cluster, err, errlen);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

dsq_obj *dsq_server_objects_open(const dsq_config *cfg, char *err, size_t errlen)
{
    dsq_obj_cfg oc = {
        .url = cfg->object_store,
        .endpoint = cfg->obj_endpoint,
        .region = cfg->obj_region,
        .access_key = cfg->obj_access_key,
        .secret_key = cfg->obj_secret_key,
        .virtual_host = cfg->obj_virtual_host,
        .timeout_ms = (unsigned)cfg->obj_request_timeout_ms,
        .connect_timeout_ms = (unsigned)cfg->obj_connect_timeout_ms,
        .retries = (unsigned)cfg->obj_retries,
        .max_inflight = (unsigned)cfg->obj_max_requests,
    };
    return dsq_obj_open(&oc, err, errlen);
}

/* The object store: settings checked, a file:// directory made; nothing
 * is sent to an s3:// one yet. */
static int objects_open(dsq_server *srv, char *err, size_t errlen)
{
    if (strcmp(srv->cfg->object_store, "none") == 0)
        return 0; /* no copies: the local disk is all there is */
    srv->objects = dsq_server_objects_open(srv->cfg, err, errlen);
    return srv->objects ? 0 : -1;
}

dsq_server *dsq_server_new(dsq_config *cfg, dsq_auth *auth, const char *config_path,
                           const char *const *flags, size_t nflags, char *err, size_t errlen)
{
    dsq_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_config_free(cfg);
        free(cfg);
        dsq_auth_free(auth);
        return NULL;
    }
    srv->engine_efd = -1;
    srv->cfg = cfg;
    srv->auth = auth;
    if (config_path)
        srv->config_path = strdup(config_path);
    for (size_t i = 0; i < 2 * nflags; i++)
        dsq_buf_append(&srv->flag_keys, flags[i], strlen(flags[i]) + 1);
    dsq_metrics_init(&srv->metrics);
    srv->cw_stats = dsq_cw_stats_new();
    srv->cdc_cache = dsq_cdc_cache_new();
    if (srv->cw_stats == NULL || srv->cdc_cache == NULL) {
        snprintf(err, errlen, "out of memory");
        dsq_server_free(srv);
        return NULL;
    }
    if (cfg->tls_listen.n > 0) {
        srv->tls = dsq_tls_ctx_new(cfg->tls_cert, cfg->tls_key, err, errlen);
        if (srv->tls == NULL) {
            dsq_server_free(srv);
            return NULL;
        }
    }
    int rv = uv_loop_init(&srv->loop);
    if (rv != 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rv));
        srv->loop.data = NULL;
        dsq_server_free(srv);
        return NULL;
    }
    srv->loop.data = srv;
    uv_prepare_init(&srv->loop, &srv->flush_prep);
    srv->flush_prep.data = srv;
    uv_prepare_start(&srv->flush_prep, on_flush);
    uv_unref((uv_handle_t *)&srv->flush_prep);
    uv_idle_init(&srv->loop, &srv->flush_idle);
    uv_unref((uv_handle_t *)&srv->flush_idle);
    if (objects_open(srv, err, errlen) != 0 || cluster_new(srv, err, errlen) != 0 ||
        engine_start(srv, err, errlen) != 0 || router_new(srv, err, errlen) != 0) {
        dsq_server_free(srv);
        return NULL;
    }
    return srv;
}

static void on_signal(uv_signal_t *h, int signum);

/* With several nodes, a node feeds the lake for the databases whose
 * primary copy it holds. */
static bool lake_feeds(void *ud, const char *db)
{
    dsq_server *srv = ud;
    char addr[8];
    const char *node = NULL;
    return dsq_cluster_where(srv->cluster, db, addr, sizeof addr, &node) == 0;
}

static int lake_hold(void *ud, const char *db, uint64_t after) { return dsq_engine_hold_log(ud, db, after); }

/* The lake writer, with [lake] databases (docs/lakehouse.md). */
static int lake_start(dsq_server *srv, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    if (srv->objects == NULL) {
        snprintf(err, errlen, "[lake] databases needs an object store (storage.object_store is none)");
        return -1;
    }
    const char *part = cfg->lake_partitioning;
    /* The files' URIs: absolute (file://./data/objects is no URI a
     * reader elsewhere can open), as the catalog gives them. */
    char cwd[4096], base[4200];
    if (getcwd(cwd, sizeof cwd) == NULL || dsq_ice_store_base(cfg->object_store, cwd, base, sizeof base) != 0) {
        snprintf(err, errlen, "[lake]: the object store's URL is too long to make absolute");
        return -1;
    }
    dsq_lake_cfg lc = {
        .loop = &srv->loop,
        .engine = srv->engine,
        .objects = srv->objects,
        .store_url = base,
        .databases = (const char *const *)cfg->lake_databases.items,
        .ndatabases = cfg->lake_databases.n,
        .flush_interval_ms = cfg->lake_flush_interval_ms,
        .flush_bytes = cfg->lake_flush_bytes,
        .file_target_size = cfg->lake_file_target_size,
        .part_day = strstr(part, "day") != NULL,
        .part_database = strstr(part, "database") != NULL,
        .table_parts = (const char *const *)cfg->lake_table_partitioning.items,
        .ntable_parts = cfg->lake_table_partitioning.n,
        .state = cfg->lake_current_state,
        .state_interval_ms = cfg->lake_current_state_interval_ms,
        .maintenance_interval_ms = cfg->lake_maintenance_interval_ms,
        .snapshot_retention_ms = cfg->lake_snapshot_retention_ms,
        .orphan_age_ms = cfg->lake_orphan_age_ms,
        .feeds = srv->cluster != NULL ? lake_feeds : NULL,
        .feeds_ud = srv,
        .hold = lake_hold,
        .hold_ud = srv->engine,
    };
    srv->lake = dsq_lake_start(&lc, err, errlen);
    return srv->lake != NULL ? 0 : -1;
}

/* ---- listeners ------------------------------------------------------------------ */

static void on_connection(uv_stream_t *s, int status)
{
    dsq_listener *l = s->data;
    if (status < 0) {
        DSQ_WARN("accept_failed", "addr=%s error=%s", l->addr, uv_strerror(status));
        return;
    }
    dsq__conn_accept(l);
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)ss, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
        snprintf(out, len, "[%s]:%d", host, port);
    } else {
        uv_ip4_name((const struct sockaddr_in *)ss, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
        snprintf(out, len, "%s:%d", host, port);
    }
}

/* Listen on ss (spec: as written, for errors) with TLS context tls (NULL:
 * plain); the listener, or NULL with the reason in err. */
static dsq_listener *listen_at(dsq_server *srv, struct sockaddr_storage *ss, const char *spec, dsq_tls_ctx *tls,
                               bool forward, char *err, size_t errlen)
{
    dsq_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->srv = srv;
    l->tls = tls;
    l->forward = forward;
    uv_tcp_init(&srv->loop, &l->tcp);
    l->tcp.data = l;
    l->next = srv->listeners;
    srv->listeners = l;
    int rv = uv_tcp_bind(&l->tcp, (const struct sockaddr *)ss,
                         ss->ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    if (rv != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec, uv_strerror(rv));
        return NULL;
    }
    int sl = sizeof *ss;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)ss, &sl);
    addr_text(ss, l->addr, sizeof l->addr);
    return l;
}

static int add_listener(dsq_server *srv, const char *spec, bool tls, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (dsq_parse_addr(spec, &ss) != 0) {
        snprintf(err, errlen, "bad listen address '%s'", spec);
        return -1;
    }
    dsq_listener *l = listen_at(srv, &ss, spec, tls ? srv->tls : NULL, false, err, errlen);
    return l == NULL ? -1 : 0;
}

/* The client listeners announced, oldest first, once the whole start has
 * worked: a node whose peer listener cannot bind says it failed, never
 * that it listens and then exits. */
static void announce_listeners(const dsq_listener *l)
{
    if (l == NULL)
        return;
    announce_listeners(l->next);
    if (!l->forward)
        DSQ_INFO("listening", "addr=%s tls=%s", l->addr, l->tls != NULL ? "yes" : "no");
}

static bool addr_unspecified(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static void addr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
}

static uint16_t addr_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

/* With cluster.tls: the listener for the connections other nodes pass on
 * to this one (mutual TLS with the cluster's certificates), on
 * cluster.forward_listen, by default on the host of this node's peers
 * entry with a port the system picks. Where the others are to connect
 * (the peers entry's host when it listens on every address) goes into
 * out[len]. 0, or -1 with a message. */
static int forward_listener(dsq_server *srv, char *out, size_t len, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    char why[512];
    srv->forward_tls = dsq_tls_ctx_new_mutual(cfg->cluster_tls_cert, cfg->cluster_tls_key, cfg->cluster_tls_ca, why,
                                              sizeof why);
    if (srv->forward_tls == NULL) {
        snprintf(err, errlen, "cluster.%s", why);
        return -1;
    }
    struct sockaddr_storage self, ss;
    const char *self_text = NULL;
    for (size_t i = 0; i < dsq_cluster_nnodes(srv->cluster); i++) {
        dsq_cluster_node_info n;
        dsq_cluster_node(srv->cluster, i, &n);
        if (n.self)
            self_text = n.address;
    }
    if (self_text == NULL || dsq_parse_addr(self_text, &self) != 0) {
        snprintf(err, errlen, "cluster.peers: this node's address cannot be read");
        return -1;
    }
    const char *spec = cfg->cluster_forward_listen;
    char dflt[96];
    if (spec != NULL) {
        if (dsq_parse_addr(spec, &ss) != 0) {
            snprintf(err, errlen, "cluster.forward_listen: '%s' is not HOST:PORT", spec);
            return -1;
        }
    } else {
        ss = self;
        addr_set_port(&ss, 0);
        snprintf(dflt, sizeof dflt, "the host of this node's peers entry (%s), any port", self_text);
        spec = dflt;
    }
    dsq_listener *l = listen_at(srv, &ss, spec, srv->forward_tls, true, why, sizeof why);
    if (l == NULL) {
        snprintf(err, errlen, "cluster.forward_listen: %s", why);
        return -1;
    }
    if (addr_unspecified(&ss)) { /* (0.0.0.0 or [::]: the others reach it as they reach the links) */
        addr_set_port(&self, addr_port(&ss));
        addr_text(&self, out, len);
    } else {
        snprintf(out, len, "%s", l->addr);
    }
    DSQ_INFO("forward_listening", "addr=%s advertised=%s tls=yes", l->addr, out);
    return 0;
}

int dsq_server_listen(dsq_server *srv, char *err, size_t errlen)
{
    const dsq_config *cfg = srv->cfg;
    /* Signals first: from the moment a listener is announced, SIGTERM must
     * mean a drain, not the default death. Delivered once the loop runs. */
    uv_signal_t *sigs[] = {&srv->sig_term, &srv->sig_int, &srv->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&srv->loop, sigs[i]);
        sigs[i]->data = srv;
        uv_signal_start(sigs[i], on_signal, nums[i]);
        uv_unref((uv_handle_t *)sigs[i]);
    }
    for (size_t i = 0; i < cfg->listen.n; i++)
        if (add_listener(srv, cfg->listen.items[i], false, err, errlen) != 0)
            return -1;
    for (size_t i = 0; i < cfg->tls_listen.n; i++)
        if (add_listener(srv, cfg->tls_listen.items[i], true, err, errlen) != 0)
            return -1;
    if (srv->cluster != NULL) {
        /* Where the other nodes send the clients they pass on: this node's
         * first plain listener (the list is newest first); with TLS between
         * the nodes, a listener of its own. */
        const char *client = NULL;
        for (dsq_listener *l = srv->listeners; l != NULL; l = l->next)
            if (l->tls == NULL)
                client = l->addr;
        char forward[80] = "";
        if (cfg->cluster_tls && (cfg->cluster_peers.n > 1 || cfg->cluster_etcd != NULL) &&
            forward_listener(srv, forward, sizeof forward, err, errlen) != 0)
            return -1;
        if (dsq_cluster_start(srv->cluster, &srv->loop, srv->engine, client, forward[0] ? forward : NULL, err,
                              errlen) != 0)
            return -1;
    }
    if (cfg->lake_databases.n > 0 && lake_start(srv, err, errlen) != 0)
        return -1;
    announce_listeners(srv->listeners);
    if (dsq_auth_count(srv->auth) == 0)
        DSQ_WARN("auth_disabled", "reason=%s",
                 cfg->allow_unauthenticated ? "allow_unauthenticated=yes" : "no_tokens_loopback_only");
    if (strcmp(cfg->storage_sync, "off") == 0)
        DSQ_WARN("durability_off", "sync=off reason=%s",
                 dsq_log_q("storage.sync = off: commits are never fsynced; a crash of the machine "
                           "can lose any of them. For tests and benchmarks only."));
    sd_notifyf(0, "READY=1\nSTATUS=serving\nMAINPID=%lu", (unsigned long)getpid());
    return 0;
}

/* ---- signals -------------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h) { free(h->data); }

static void close_listeners(dsq_server *srv)
{
    while (srv->listeners) {
        dsq_listener *l = srv->listeners;
        srv->listeners = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    }
}

static void on_shutdown_timer(uv_timer_t *t)
{
    dsq_server *srv = t->data;
    DSQ_WARN("shutdown_forced", "reason=shutdown_timeout");
    dsq__conns_close_all(srv);
}

void dsq__server_conns_gone(dsq_server *srv)
{
    if (srv->shutdown_timer_on) {
        uv_timer_stop(&srv->shutdown_timer);
        uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
        srv->shutdown_timer_on = false;
    }
}

static void begin_shutdown(dsq_server *srv, const char *signame)
{
    if (srv->draining) {
        DSQ_WARN("shutdown_forced", "signal=%s", signame);
        dsq__conns_close_all(srv);
        return;
    }
    srv->draining = true;
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    DSQ_INFO("shutdown", "signal=%s connections=%llu timeout_ms=%llu", signame,
             (unsigned long long)srv->metrics.conns_open,
             (unsigned long long)srv->cfg->shutdown_timeout_ms);
    close_listeners(srv); /* (the links to other nodes stay: replies wait for their copies) */
    dsq_cluster_quiesce(srv->cluster); /* (no promotion keeps requests waiting) */
    if (srv->conns.head != NULL) {
        uv_timer_init(&srv->loop, &srv->shutdown_timer);
        srv->shutdown_timer.data = srv;
        uv_timer_start(&srv->shutdown_timer, on_shutdown_timer, srv->cfg->shutdown_timeout_ms, 0);
        srv->shutdown_timer_on = true;
        dsq__conns_drain(srv);
    }
}

/* SIGHUP: read the configuration again; take the tokens and the log level
 * from it. Anything else needs a restart. A bad file changes nothing. */
static void reload(dsq_server *srv)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char err[512];
    dsq_config_init(&cfg);
    int problems = 0;
    if (srv->config_path)
        problems += dsq_config_load_file(&cfg, srv->config_path, &errs);
    for (size_t off = 0; off < srv->flag_keys.len;) {
        const char *k = srv->flag_keys.data + off;
        const char *v = k + strlen(k) + 1;
        off = (size_t)(v - srv->flag_keys.data) + strlen(v) + 1;
        if (dsq_config_set_flag(&cfg, k, v, &errs) != 0)
            problems++;
    }
    problems += dsq_config_finish(&cfg, &errs);
    dsq_auth *auth = problems ? NULL : dsq_auth_from_config(&cfg, &errs);
    if (auth != NULL && dsq_server_check_exposure(srv->cfg, auth, err, sizeof err) != 0) {
        dsq_buf_printf(&errs, "%s\n", err);
        dsq_auth_free(auth);
        auth = NULL;
    }
    if (auth == NULL) {
        DSQ_ERROR("reload_failed", "errors=%s", dsq_log_q(errs.data));
    } else {
        dsq_auth_free(srv->auth);
        srv->auth = auth;
        srv->cfg->log_level = cfg.log_level;
        dsq_log_set_level(cfg.log_level);
        DSQ_INFO("reloaded", "tokens=%zu log_level=%s", dsq_auth_count(auth),
                 dsq_log_level_name(cfg.log_level));
    }
    sd_notify(0, "READY=1\nSTATUS=serving");
    dsq_buf_free(&errs);
    dsq_config_free(&cfg);
}

static void on_signal(uv_signal_t *h, int signum)
{
    dsq_server *srv = h->data;
    switch (signum) {
    case SIGHUP:
        sd_notify(0, "RELOADING=1");
        reload(srv);
        break;
    case SIGTERM: begin_shutdown(srv, "SIGTERM"); break;
    case SIGINT: begin_shutdown(srv, "SIGINT"); break;
    }
}

/* ---- running -------------------------------------------------------------------- */

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int dsq_server_run(dsq_server *srv)
{
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    DSQ_INFO("stopped", "accepted=%llu", (unsigned long long)srv->metrics.conns_accepted);
    return 0;
}

void dsq_server_free(dsq_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->loop.data == srv) {
        dsq__conns_close_all(srv);
        close_listeners(srv);
        dsq_rcdc_free(srv->rcdc); /* (the sessions that used it are closed) */
        srv->rcdc = NULL;
        dsq_lake_stop(srv->lake); /* (before the engine: its calls go through the loop) */
        dsq_hrana_http_free(srv); /* idle libSQL streams: their transactions roll back */
        dsq__iceberg_close(srv);  /* (before close_walk: its handle has a close callback) */
        /* Drains mailboxes, rolls back open transactions, closes every
         * database; the `done` hooks left run in here and find their
         * sessions closed. The eventfd is still open for their wake-ups. */
        if (srv->engine) {
            dsq_engine_free(srv->engine);
            srv->engine = NULL;
            DSQ_INFO("engine_stopped", "databases=%s", "closed");
        }
        dsq_cluster_stop(srv->cluster, NULL, NULL);
        srv->cluster = NULL;
        uv_walk(&srv->loop, close_walk, NULL);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        uv_loop_close(&srv->loop);
        dsq_ws_deflate_cleanup(); /* the loop thread's compression streams */
    }
    dsq_router_free(srv->router); /* (its last statements ended with the engine's calls) */
    dsq_obj_close(srv->objects);
    dsq_lake_free(srv->lake); /* (after the engine and the store: their last callbacks name it) */
    /* After the engine: the last Cap'n Web sessions and CDC subscriptions
     * went with its last calls. */
    dsq_cw_stats_free(srv->cw_stats);
    dsq_cdc_cache_free(srv->cdc_cache);
    if (srv->engine_efd >= 0)
        close(srv->engine_efd);
    dsq_tls_ctx_free(srv->tls);
    dsq_tls_ctx_free(srv->forward_tls);
    dsq_auth_free(srv->auth);
    if (srv->cfg) {
        dsq_config_free(srv->cfg);
        free(srv->cfg);
    }
    free(srv->config_path);
    dsq_buf_free(&srv->flag_keys);
    free(srv);
}
