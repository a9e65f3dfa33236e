/* handlers — what each route does (the route table: README, "API").
 *
 * Divisions: health and metrics; scopes; the DoSQL API over HTTP (a
 * session per request) and over WebSocket (a session per connection);
 * listing and dropping databases.
 *
 * Requests arrive here routed and authorized (conn.c did both at the end of
 * the head). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/list.h"
#include "common/util.h"
#include "protocol/capnweb.h"
#include "protocol/docs.h"
#include "protocol/jsonrpc.h"
#include "server/server_int.h"
#include "server/dump.h"
#include "lake/writer.h"
#include "server/hrana.h"
#include "server/rcdc.h"
#include "sharding/router.h"

/* ---- health and metrics ------------------------------------------------- */

static void handle_healthz(dsq_server *srv, dsq_http_req *req)
{
    if (srv->draining)
        dsq__respond(req, 503, "text/plain; charset=utf-8", "draining\n", 9, NULL);
    else
        dsq__respond(req, 200, "text/plain; charset=utf-8", "ok\n", 3, NULL);
}

/* With cluster.etcd, what etcd shows of node i (GET /v1/cluster). */
static json_t *node_etcd_json(dsq_cluster *c, size_t i)
{
    dsq_cluster_node_etcd ne;
    dsq_cluster_node_etcd_get(c, i, &ne);
    return json_pack("{s:b, s:b, s:{s:I, s:I}, s:I, s:I}", "alive", ne.alive, "draining", ne.draining, "load", "dbs",
                     (json_int_t)ne.dbs, "bytes", (json_int_t)ne.bytes, "copies", (json_int_t)ne.copies, "primaries",
                     (json_int_t)ne.primaries);
}

/* With cluster.etcd, this node's state there and the failovers it made,
 * newest first, into doc. */
static void cluster_etcd_json(dsq_cluster *c, const dsq_cluster_etcd_info *ei, json_t *doc)
{
    const dsq_failover_stats *fs = &ei->failover;
    json_object_set_new(doc, "etcd",
                        json_pack("{s:b, s:b, s:b, s:b, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}}", "up", ei->etcd_up,
                                  "registered", ei->registered, "viewWhole", ei->view_whole, "assignmentsLoaded",
                                  ei->assignments_loaded, "assignments", (json_int_t)ei->assignments, "failover",
                                  "attempts", (json_int_t)fs->attempts, "won", (json_int_t)fs->won, "lost",
                                  (json_int_t)fs->lost, "promoted", (json_int_t)fs->promoted, "failed",
                                  (json_int_t)fs->failed, "replaced", (json_int_t)fs->replaced));
    /* (DSQ_FAILOVER_RECENT records of ~220 bytes: on the stack) */
    dsq_failover_record recent[DSQ_FAILOVER_RECENT];
    size_t n = dsq_cluster_failovers(c, recent, DSQ_FAILOVER_RECENT);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        char at[DSQ_RFC3339_MS_LEN];
        dsq_format_rfc3339_ms(recent[i].at_ms, at, sizeof at);
        /* (from is "" when this node took over an assignment that already
         * named it, its copy not serving yet: null, not a node) */
        json_array_append_new(list, json_pack("{s:s, s:s?, s:s, s:I, s:s, s:I}", "database", recent[i].db, "from",
                                              recent[i].from[0] ? recent[i].from : NULL, "to", recent[i].to,
                                              "epoch", (json_int_t)recent[i].epoch, "at", at, "tookMs",
                                              (json_int_t)recent[i].took_ms));
    }
    json_object_set_new(doc, "failovers", list);
}

/* GET /v1/cluster: the nodes and whether this node reaches each, and how
 * far behind each is on the databases of which this node is the primary
 * (lagLSN, lagMs: the most lagging of them). A node without
 * cluster.peers is a cluster of one. With cluster.etcd, also what etcd
 * shows of each node (alive: its key is there; its load; the copies and
 * primaries the assignments give it), this node's state there and the
 * failovers it made. */
static void handle_cluster(dsq_server *srv, dsq_http_req *req)
{
    dsq_cluster_etcd_info ei;
    dsq_cluster_etcd_get(srv->cluster, &ei); /* (ei.on false without a cluster) */
    json_t *nodes = json_array();
    if (srv->cluster == NULL) {
        const char *id = srv->cfg->cluster_node_id ? srv->cfg->cluster_node_id : "";
        json_array_append_new(nodes, json_pack("{s:s, s:n, s:b, s:b, s:i, s:i}", "id", id, "address", "reachable",
                                               1, "self", 1, "lagLSN", 0, "lagMs", 0));
    } else {
        for (size_t i = 0; i < dsq_cluster_nnodes(srv->cluster); i++) {
            dsq_cluster_node_info n;
            dsq_cluster_node(srv->cluster, i, &n);
            uint64_t lsn, ms;
            dsq_cluster_lag(srv->cluster, i, &lsn, &ms);
            json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:b, s:I, s:I}", "id", n.id, "address", n.address, "client",
                                  n.client, "reachable", n.reachable, "self", n.self, "lagLSN", (json_int_t)lsn, "lagMs",
                                  (json_int_t)ms);
            if (o != NULL && ei.on)
                json_object_set_new(o, "etcd", node_etcd_json(srv->cluster, i));
            json_array_append_new(nodes, o);
        }
    }
    json_t *doc = json_pack("{s:o}", "nodes", nodes);
    if (doc != NULL && ei.on)
        cluster_etcd_json(srv->cluster, &ei, doc);
    char db[129];
    long dl = dsq_http_query_get(req, "database", db, sizeof db);
    if (dl >= 0 && !dsq_db_name_valid(db)) {
        json_decref(doc);
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "database: not a database name");
        return;
    }
    if (dl >= 0 && doc != NULL && srv->cluster != NULL) {
        dsq_cluster_db info;
        dsq_cluster_describe(srv->cluster, db, &info);
        json_t *copies = json_array();
        for (size_t i = 0; i < info.ncopies; i++)
            json_array_append_new(copies, json_pack("{s:s, s:s, s:I, s:I}", "node", info.copies[i].node, "role",
                                                    info.copies[i].primary ? "primary" : "follower", "durableLSN",
                                                    (json_int_t)info.copies[i].durable, "appliedLSN",
                                                    (json_int_t)info.copies[i].applied));
        json_object_set_new(doc, "database", json_pack("{s:s, s:s, s:I, s:o}", "name", db, "primary", info.primary,
                                                        "epoch", (json_int_t)info.epoch, "copies", copies));
    } else if (dl >= 0 && doc != NULL) {
        json_object_set_new(doc, "database", json_pack("{s:s, s:n, s:i, s:[]}", "name", db, "primary", "epoch", 0,
                                                        "copies"));
    }
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    dsq__respond_line(req, 200, "application/json", text, strlen(text));
    free(text);
}

/* With cluster.etcd: whether etcd answers and this node is registered,
 * the assignments known here, this node's part in failovers, and per
 * node whether etcd shows it alive and the copies and primaries the
 * assignments give it. Nothing without etcd. */
static void cluster_etcd_metrics(dsq_cluster *c, dsq_buf *b)
{
    dsq_cluster_etcd_info ei;
    dsq_cluster_etcd_get(c, &ei);
    if (!ei.on)
        return;
    const dsq_failover_stats *fs = &ei.failover;
    dsq_buf_printf(b,
                   "# HELP dosqld_cluster_etcd_up Whether etcd answered this node's last request (1) or not (0).\n"
                   "# TYPE dosqld_cluster_etcd_up gauge\ndosqld_cluster_etcd_up %d\n"
                   "# HELP dosqld_cluster_registered Whether this node's key is in etcd, under its lease (1) or not "
                   "(0).\n"
                   "# TYPE dosqld_cluster_registered gauge\ndosqld_cluster_registered %d\n"
                   "# HELP dosqld_cluster_assignments Databases with an assignment in etcd, as this node knows them.\n"
                   "# TYPE dosqld_cluster_assignments gauge\ndosqld_cluster_assignments %llu\n"
                   "# HELP dosqld_cluster_failover_attempts_total Failovers this node stood for (its write of the "
                   "assignment sent).\n"
                   "# TYPE dosqld_cluster_failover_attempts_total counter\n"
                   "dosqld_cluster_failover_attempts_total %llu\n"
                   "# HELP dosqld_cluster_failovers_total This node's failovers by result: won (it wrote the "
                   "assignment), lost (another node did first), promoted (its copy served as the primary), failed "
                   "(a write or promotion failed, tried again), replaced (a copy of a database it is the primary of "
                   "moved to another node: re-replication, a move).\n"
                   "# TYPE dosqld_cluster_failovers_total counter\n"
                   "dosqld_cluster_failovers_total{result=\"won\"} %llu\n"
                   "dosqld_cluster_failovers_total{result=\"lost\"} %llu\n"
                   "dosqld_cluster_failovers_total{result=\"promoted\"} %llu\n"
                   "dosqld_cluster_failovers_total{result=\"failed\"} %llu\n"
                   "dosqld_cluster_failovers_total{result=\"replaced\"} %llu\n",
                   ei.etcd_up, ei.registered, (unsigned long long)ei.assignments,
                   (unsigned long long)fs->attempts, (unsigned long long)fs->won, (unsigned long long)fs->lost,
                   (unsigned long long)fs->promoted, (unsigned long long)fs->failed, (unsigned long long)fs->replaced);
    static const char *const fam[3][2] = {
        {"dosqld_cluster_node_alive", "Whether a node has its key in etcd (1) or not (0), by node."},
        {"dosqld_cluster_node_copies", "Databases a node holds a copy of, by the assignments this node knows, by "
                                       "node."},
        {"dosqld_cluster_node_primaries", "Databases of which a node is the primary, by the assignments this node "
                                          "knows, by node."},
    };
    /* Each node's three numbers at once (one walk of the assignments a
     * node), written family by family. */
    dsq_buf rows[3] = {DSQ_BUF_INIT, DSQ_BUF_INIT, DSQ_BUF_INIT};
    for (size_t i = 0; i < dsq_cluster_nnodes(c); i++) {
        dsq_cluster_node_info n;
        dsq_cluster_node(c, i, &n);
        dsq_cluster_node_etcd ne;
        dsq_cluster_node_etcd_get(c, i, &ne);
        uint64_t v[3] = {ne.alive, ne.copies, ne.primaries};
        for (int f = 0; f < 3; f++)
            dsq_buf_printf(&rows[f], "%s{node=\"%s\"} %llu\n", fam[f][0], n.id, (unsigned long long)v[f]);
    }
    for (int f = 0; f < 3; f++) {
        dsq_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s", fam[f][0], fam[f][1], fam[f][0],
                       rows[f].data ? rows[f].data : "");
        dsq_buf_free(&rows[f]);
    }
}

static void handle_metrics(dsq_server *srv, dsq_http_req *req)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_engine_stats es;
    dsq_engine_stats_get(srv->engine, &es);
    const struct {
        const char *name, *help;
        uint64_t v;
    } engine[] = {
        {"dosqld_actors", "Databases known in memory.", es.actors},
        {"dosqld_actors_open", "Databases with an open SQLite connection.", es.actors_open},
        {"dosqld_actors_hibernated", "Databases hibernated (connection closed).", es.actors_hibernated},
        {"dosqld_mailbox_messages", "Messages waiting in database mailboxes.", es.queued},
        {"dosqld_transactions_open", "Open transactions.", es.txns_open},
        {"dosqld_cdc_subscriptions", "CDC subscribers (WebSocket, Cap'n Web, Server-Sent Events).",
         es.subscriptions},
        {"dosqld_capnweb_entries", "Cap'n Web import and export table entries alive.",
         dsq_cw_stats_entries(srv->cw_stats)},
        {"dosqld_object_store_pending", "Databases with an upload (or a drop) waiting for the object store.",
         es.tier_counts.pending},
        {"dosqld_hot_tier_bytes", "Bytes the databases' files take on the local disk (at the last look).",
         es.evict_counts.local_bytes},
        {"dosqld_warm_cache_bytes", "Bytes of evicted files' chunks kept in the warm cache.", es.warm_counts.bytes},
    };
    if (dsq_metrics_render(&srv->metrics, &b) != 0) {
        dsq_buf_free(&b);
        dsq__respond_error(req, 500, DSQ_CODE_INTERNAL_ERROR, "out of memory");
        return;
    }
    for (size_t i = 0; i < sizeof engine / sizeof engine[0]; i++)
        dsq_buf_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", engine[i].name,
                       engine[i].help, engine[i].name, engine[i].name,
                       (unsigned long long)engine[i].v);
    uint64_t plans[DSQ_PLAN_KINDS];
    dsq_router_counts(srv->router, plans);
    dsq_buf_puts(&b, "# HELP dosqld_keyspace_statements_total Statements on keyspaces, by how the router answered "
                     "them (one shard, scatter, fetch, all shards, refused, error, multi: a cross-shard transaction; sequence: "
                     "values taken from a sequence first).\n"
                     "# TYPE dosqld_keyspace_statements_total counter\n");
    for (int k = 0; k < DSQ_PLAN_KINDS; k++)
        dsq_buf_printf(&b, "dosqld_keyspace_statements_total{plan=\"%s\"} %llu\n", dsq_plan_kind_name((dsq_plan_kind)k),
                       (unsigned long long)plans[k]);
    dsq_buf_printf(&b, "# HELP dosqld_cross_shard_recovered_total Cross-shard transactions a crash left undecided "
                       "or half done, resolved by recovery.\n# TYPE dosqld_cross_shard_recovered_total counter\n"
                       "dosqld_cross_shard_recovered_total %llu\n",
                   (unsigned long long)dsq_router_recovered(srv->router));
    dsq_buf_printf(&b, "# HELP dosqld_keyspace_shard_rows_total Rows shards sent to the router to merge or evaluate "
                       "(scatter and fetch plans).\n# TYPE dosqld_keyspace_shard_rows_total counter\n"
                       "dosqld_keyspace_shard_rows_total %llu\n",
                   (unsigned long long)dsq_router_shard_rows(srv->router));
    uint64_t rout = 0, rin = 0;
    dsq_cluster_rcall_counts(srv->cluster, &rout, &rin);
    dsq_buf_printf(&b, "# HELP dosqld_remote_calls_total Calls on databases whose primary is another node's "
                       "(a keyspace's shards), by direction: sent to that node, or run here for another node.\n"
                       "# TYPE dosqld_remote_calls_total counter\n"
                       "dosqld_remote_calls_total{direction=\"out\"} %llu\n"
                       "dosqld_remote_calls_total{direction=\"in\"} %llu\n",
                   (unsigned long long)rout, (unsigned long long)rin);
    dsq_buf_printf(&b,
                   "# HELP dosqld_engine_calls_total Engine calls completed.\n"
                   "# TYPE dosqld_engine_calls_total counter\ndosqld_engine_calls_total %llu\n"
                   "# HELP dosqld_log_syncs_total Log fsyncs by the syncer threads (each a group commit).\n"
                   "# TYPE dosqld_log_syncs_total counter\ndosqld_log_syncs_total %llu\n"
                   "# HELP dosqld_gated_replies_total Replies that waited at an output gate for an fsync.\n"
                   "# TYPE dosqld_gated_replies_total counter\ndosqld_gated_replies_total %llu\n"
                   "# HELP dosqld_journal_syncs_total fdatasyncs of the node journal.\n"
                   "# TYPE dosqld_journal_syncs_total counter\ndosqld_journal_syncs_total %llu\n"
                   "# HELP dosqld_journal_flushes_total syncfs flushes that retired journal files.\n"
                   "# TYPE dosqld_journal_flushes_total counter\ndosqld_journal_flushes_total %llu\n"
                   "# HELP dosqld_journal_bytes_total Bytes appended to the node journal.\n"
                   "# TYPE dosqld_journal_bytes_total counter\ndosqld_journal_bytes_total %llu\n",
                   (unsigned long long)es.calls, (unsigned long long)es.fsyncs,
                   (unsigned long long)es.gated, (unsigned long long)es.journal_syncs,
                   (unsigned long long)es.journal_flushes, (unsigned long long)es.journal_bytes);
    dsq_buf_printf(&b,
                   "# HELP dosqld_idempotent_replays_total Writes sent again with their idempotencyKey, "
                   "answered with their first answer without running.\n"
                   "# TYPE dosqld_idempotent_replays_total counter\ndosqld_idempotent_replays_total %llu\n",
                   (unsigned long long)es.idem_replays);
    dsq_buf_printf(&b,
                   "# HELP dosqld_object_store_uploads_total Chunks of databases' files written to the object store.\n"
                   "# TYPE dosqld_object_store_uploads_total counter\ndosqld_object_store_uploads_total %llu\n"
                   "# HELP dosqld_object_store_upload_bytes_total Their bytes.\n"
                   "# TYPE dosqld_object_store_upload_bytes_total counter\n"
                   "dosqld_object_store_upload_bytes_total %llu\n"
                   "# HELP dosqld_object_store_manifests_total Database manifests written.\n"
                   "# TYPE dosqld_object_store_manifests_total counter\ndosqld_object_store_manifests_total %llu\n"
                   "# HELP dosqld_object_store_errors_total Uploads or drops that failed (each is tried again).\n"
                   "# TYPE dosqld_object_store_errors_total counter\ndosqld_object_store_errors_total %llu\n",
                   (unsigned long long)es.tier_counts.uploads, (unsigned long long)es.tier_counts.bytes,
                   (unsigned long long)es.tier_counts.manifests, (unsigned long long)es.tier_counts.errors);
    dsq_buf_printf(&b,
                   "# HELP dosqld_hot_tier_evictions_total Uploaded checkpoint files evicted from the local disk.\n"
                   "# TYPE dosqld_hot_tier_evictions_total counter\ndosqld_hot_tier_evictions_total %llu\n"
                   "# HELP dosqld_cold_reads_total Chunks fetched from the object store for reads of evicted pages.\n"
                   "# TYPE dosqld_cold_reads_total counter\ndosqld_cold_reads_total %llu\n"
                   "# HELP dosqld_warm_cache_hits_total Reads of evicted pages served by the warm cache.\n"
                   "# TYPE dosqld_warm_cache_hits_total counter\ndosqld_warm_cache_hits_total %llu\n"
                   "# HELP dosqld_cold_read_errors_total Cold reads that failed or timed out.\n"
                   "# TYPE dosqld_cold_read_errors_total counter\ndosqld_cold_read_errors_total %llu\n"
                   "# HELP dosqld_cdc_coalesced_total Sends to a database's CDC subscribers held back to join the next (the server was busy).\n"
                   "# TYPE dosqld_cdc_coalesced_total counter\ndosqld_cdc_coalesced_total %llu\n",
                   (unsigned long long)es.evict_counts.evictions, (unsigned long long)es.warm_counts.fetches,
                   (unsigned long long)es.warm_counts.hits,
                   (unsigned long long)(es.warm_counts.errors + es.warm_counts.timeouts),
                   (unsigned long long)es.cdc_coalesced);
    if (srv->cluster != NULL) {
        dsq_cluster_stats cs;
        dsq_cluster_stats_get(srv->cluster, &cs);
        dsq_buf_printf(&b,
                       "# HELP dosqld_cluster_links_up Links to the other nodes of cluster.peers that are up.\n"
                       "# TYPE dosqld_cluster_links_up gauge\ndosqld_cluster_links_up %llu\n"
                       "# HELP dosqld_cluster_sent_bytes_total Bytes sent to the other nodes.\n"
                       "# TYPE dosqld_cluster_sent_bytes_total counter\ndosqld_cluster_sent_bytes_total %llu\n"
                       "# HELP dosqld_cluster_received_bytes_total Bytes received from the other nodes.\n"
                       "# TYPE dosqld_cluster_received_bytes_total counter\ndosqld_cluster_received_bytes_total %llu\n"
                       "# HELP dosqld_cluster_link_connects_total Links to other nodes made (each after its handshake).\n"
                       "# TYPE dosqld_cluster_link_connects_total counter\ndosqld_cluster_link_connects_total %llu\n"
                       "# HELP dosqld_cluster_auth_failures_total Handshakes with another node refused (a wrong "
                       "secret or cluster.peers, or with cluster.tls a certificate refused).\n"
                       "# TYPE dosqld_cluster_auth_failures_total counter\ndosqld_cluster_auth_failures_total %llu\n",
                       (unsigned long long)cs.links_up, (unsigned long long)cs.links.bytes_out,
                       (unsigned long long)cs.links.bytes_in, (unsigned long long)cs.links.connects,
                       (unsigned long long)cs.links.auth_failures);
        dsq_buf_printf(&b,
                       "# HELP dosqld_replication_records_shipped_total Commit records sent to followers.\n"
                       "# TYPE dosqld_replication_records_shipped_total counter\n"
                       "dosqld_replication_records_shipped_total %llu\n"
                       "# HELP dosqld_replication_shipped_bytes_total Their bytes.\n"
                       "# TYPE dosqld_replication_shipped_bytes_total counter\n"
                       "dosqld_replication_shipped_bytes_total %llu\n"
                       "# HELP dosqld_replication_applies_total Batches of a primary's records applied here.\n"
                       "# TYPE dosqld_replication_applies_total counter\ndosqld_replication_applies_total %llu\n"
                       "# HELP dosqld_replication_log_reads_total Reads of this node's logs for followers behind.\n"
                       "# TYPE dosqld_replication_log_reads_total counter\ndosqld_replication_log_reads_total %llu\n"
                       "# HELP dosqld_replication_acks_total Acknowledgements received from followers.\n"
                       "# TYPE dosqld_replication_acks_total counter\ndosqld_replication_acks_total %llu\n",
                       (unsigned long long)cs.repl.records_shipped, (unsigned long long)cs.repl.bytes_shipped,
                       (unsigned long long)cs.repl.applies, (unsigned long long)cs.repl.log_reads, (unsigned long long)cs.repl.acks);
        dsq_buf_printf(&b,
                       "# HELP dosqld_replication_promotions_total Promotions of a copy here to primary.\n"
                       "# TYPE dosqld_replication_promotions_total counter\n"
                       "dosqld_replication_promotions_total %llu\n"
                       "# HELP dosqld_replication_step_downs_total Primaries here that learned they were replaced.\n"
                       "# TYPE dosqld_replication_step_downs_total counter\n"
                       "dosqld_replication_step_downs_total %llu\n"
                       "# HELP dosqld_replication_truncations_total Logs cut back to agree with a new primary's.\n"
                       "# TYPE dosqld_replication_truncations_total counter\n"
                       "dosqld_replication_truncations_total %llu\n"
                       "# HELP dosqld_replication_rebuilds_total Copies here made again from the object store "
                       "(their primary's log no longer reached back to them).\n"
                       "# TYPE dosqld_replication_rebuilds_total counter\n"
                       "dosqld_replication_rebuilds_total %llu\n",
                       (unsigned long long)cs.repl.promotions, (unsigned long long)cs.repl.step_downs,
                       (unsigned long long)cs.repl.truncations, (unsigned long long)cs.repl.rebuilds);
        /* Per follower node: the most any database of which this node is
         * the primary lags there. */
        dsq_buf lsns = DSQ_BUF_INIT, secs = DSQ_BUF_INIT;
        for (size_t i = 0; i < dsq_cluster_nnodes(srv->cluster); i++) {
            dsq_cluster_node_info n;
            dsq_cluster_node(srv->cluster, i, &n);
            uint64_t lsn, ms;
            dsq_cluster_lag(srv->cluster, i, &lsn, &ms);
            if (n.self)
                continue;
            dsq_buf_printf(&lsns, "dosqld_replication_lag_lsn{follower=\"%s\"} %llu\n", n.id, (unsigned long long)lsn);
            dsq_buf_printf(&secs, "dosqld_replication_lag_seconds{follower=\"%s\"} %.3f\n", n.id, (double)ms / 1000);
        }
        dsq_buf_printf(&b,
                       "# HELP dosqld_replication_lag_lsn Commits the most lagging database of which this node is the "
                       "primary has that a follower does not hold durably, by follower.\n"
                       "# TYPE dosqld_replication_lag_lsn gauge\n%s"
                       "# HELP dosqld_replication_lag_seconds How long the most lagging such database has been behind "
                       "on a follower.\n"
                       "# TYPE dosqld_replication_lag_seconds gauge\n%s",
                       lsns.data ? lsns.data : "", secs.data ? secs.data : "");
        dsq_buf_free(&lsns);
        dsq_buf_free(&secs);
        cluster_etcd_metrics(srv->cluster, &b);
    }
    dsq__respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    dsq_buf_free(&b);
}

/* ---- scopes ------------------------------------------------------------------ */

/* The DoSQL scopes a token holds on one database. */
unsigned dsq__token_scopes(const dsq_server *srv, const char *tok, size_t tlen, const char *db)
{
    unsigned s = 0;
    if (dsq_auth_check(srv->auth, tok, tlen, DSQ_SCOPE_READ, db) == DSQ_AUTH_OK)
        s |= DSQ_SCOPE_R;
    if (dsq_auth_check(srv->auth, tok, tlen, DSQ_SCOPE_WRITE, db) == DSQ_AUTH_OK)
        s |= DSQ_SCOPE_W;
    if (db == NULL && dsq_auth_check(srv->auth, tok, tlen, DSQ_SCOPE_ADMIN, NULL) == DSQ_AUTH_OK)
        s |= DSQ_SCOPE_A;
    return s;
}

/* ---- DoSQL over HTTP: a session per request ------------------------------------- */

typedef struct http_tx {
    dsq_server *srv;
    dsq_http_req *req;         /* NULL once the connection dropped it */
    dsq_dosql_session *s;
    dsq_buf line;              /* an NDJSON line being built */
    dsq_waiter room;           /* waiting for the connection to drain */
} http_tx;

static unsigned http_scope(void *ud, const char *db)
{
    http_tx *tx = ud;
    return dsq__token_scopes(tx->srv, tx->req->token, tx->req->token_len, db);
}

static void http_tx_close(http_tx *tx)
{
    if (tx->req)
        tx->req->abandon = NULL;
    tx->req = NULL;
    dsq_dosql_session *s = tx->s;
    dsq_buf_free(&tx->line);
    free(tx);
    dsq_dosql_session_close(s); /* after this it never calls the transport */
}

static void http_abandon(void *arg)
{
    http_tx *tx = arg;
    tx->req = NULL;
    http_tx_close(tx);
}

/* One NDJSON line of a streaming response. */
static int http_line(http_tx *tx, dsq_http_req *req, const char *text, size_t len)
{
    dsq_buf_reset(&tx->line);
    dsq_buf_append(&tx->line, text, len);
    dsq_buf_append(&tx->line, "\n", 1);
    dsq__respond_chunk(req, tx->line.data, tx->line.len);
    return 0;
}

static int http_notify(void *ud, const char *text, size_t len)
{
    http_tx *tx = ud;
    if (!tx->req->streaming)
        dsq__respond_begin(tx->req, 200, "application/x-ndjson");
    return http_line(tx, tx->req, text, len);
}

static bool http_can_send(void *ud)
{
    http_tx *tx = ud;
    return dsq__respond_at_head(tx->req) && dsq__conn_room(dsq__req_conn(tx->req));
}

static void http_writable(void *arg)
{
    http_tx *tx = arg;
    if (tx->req != NULL)
        dsq_dosql_writable(tx->s);
}

/* The session asks before each chunk; when there is no room, the
 * connection tells us once there is. */
static bool http_can_send_or_wait(void *ud)
{
    http_tx *tx = ud;
    if (http_can_send(ud))
        return true;
    dsq__conn_wait_room(dsq__req_conn(tx->req), &tx->room);
    return false;
}

static void http_reply(void *ud, const char *text, size_t len, dsq_rpc_outcome how)
{
    http_tx *tx = ud;
    dsq_http_req *req = tx->req;
    /* Responding may free the request: let go of it first. */
    req->abandon = NULL;
    tx->req = NULL;
    if (req->streaming) {
        http_line(tx, req, text, len);
        dsq__respond_end(req);
    } else if (text == NULL) {
        dsq__respond(req, 204, NULL, NULL, 0, NULL);
    } else {
        dsq__respond_line(req, how.failed ? dsq_http_status_of(how.code) : 200, "application/json", text, len);
    }
    http_tx_close(tx); /* the response is whole: the session is done */
}

static http_tx *http_session(dsq_server *srv, dsq_http_req *req)
{
    http_tx *tx = calloc(1, sizeof *tx);
    if (tx == NULL)
        return NULL;
    tx->srv = srv;
    tx->req = req;
    tx->room.fn = http_writable;
    tx->room.arg = tx;
    dsq_dosql_transport t = {
        .scope = http_scope,
        .reply = http_reply,
        .notify = http_notify,
        .can_send = http_can_send_or_wait,
        .http = true,
        .ud = tx,
    };
    tx->s = dsq_dosql_session_new(srv->engine, srv->cdc_cache, &srv->dosql, req->db[0] ? req->db : NULL, 0,
                                  &t);
    if (tx->s == NULL) {
        free(tx);
        return NULL;
    }
    dsq_dosql_set_router(tx->s, srv->router, req->ks[0] ? req->ks : NULL);
    dsq_dosql_set_cdc_remote(tx->s, dsq_rcdc_remote(srv->rcdc));
    req->abandon = http_abandon;
    req->abandon_arg = tx;
    return tx;
}

static void handle_rpc(dsq_server *srv, dsq_http_req *req)
{
    if (req->method != HTTP_POST) {
        dsq__respond_error(req, 426, DSQ_CODE_INVALID_REQUEST,
                           "use POST, or GET with Upgrade: websocket");
        return;
    }
    http_tx *tx = http_session(srv, req);
    if (tx == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    dsq_dosql_handle(tx->s, req->body.data ? req->body.data : "", req->body.len);
}

static void handle_query(dsq_server *srv, dsq_http_req *req)
{
    http_tx *tx = http_session(srv, req);
    if (tx == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    dsq_dosql_query_route(tx->s, req->body.data ? req->body.data : "", req->body.len);
}

/* ---- DoSQL over WebSocket: a session per connection ------------------------------- */

/* ---- WebSocket messages that wait to start ------------------------------------------ */

/* A WebSocket app starts no message while its connection's unsent output
 * is over half of send_queue_limit (a client that does not read its
 * replies): the message waits, in order, with those after it, and the
 * connection reads nothing more meanwhile, so what waits is at most what
 * one read brought. Once the output drains they start. */
typedef struct held_msg {
    dsq_qnode link;        /* on its connection's queue of held messages */
    size_t len;
    char text[];
} held_msg;

/* Keep a copy of a message at the end of q, and stop reading. 0, or -1
 * (out of memory: the connection is closed). */
static int mq_hold(dsq_queue *q, dsq_conn *c, const uint8_t *p, size_t n)
{
    held_msg *m = malloc(sizeof *m + n);
    if (m == NULL) {
        dsq__ws_close(c, 1011, "out of memory");
        return -1;
    }
    m->len = n;
    memcpy(m->text, p, n);
    dsq_queue_push(q, &m->link);
    dsq__conn_hold_input(c, true);
    return 0;
}

/* The first message waiting (the caller frees it), or NULL. */
static held_msg *mq_take(dsq_queue *q) { return dsq_container_of(dsq_queue_pop(q), held_msg, link); }

static void mq_free(dsq_queue *q)
{
    held_msg *m;
    while ((m = mq_take(q)) != NULL)
        free(m);
}

/* ---- DoSQL over WebSocket: a session per connection ------------------------------- */

/* Each message is a request with a result budget of its own. Besides
 * waiting for room (above), at most max_pipeline of them are in progress
 * at once; so a connection holds at most max_pipeline requests' results,
 * however many it is sent. */
typedef struct ws_tx {
    dsq_server *srv;
    dsq_conn *c;
    dsq_dosql_session *s;
    dsq_waiter room;       /* waiting for the connection to drain */
    char *token;           /* owned */
    size_t token_len;
    char db[129];          /* the bound database, or "" */
    unsigned db_scope;     /* scopes on it, found at the upgrade */
    size_t inflight;       /* messages started and not answered */
    dsq_queue held;        /* messages waiting to start (owned held_msg) */
    bool pumping;          /* inside ws_pump */
} ws_tx;

static void ws_pump(ws_tx *tx);

static unsigned ws_scope(void *ud, const char *db)
{
    ws_tx *tx = ud;
    if (tx->db[0] && db != NULL && strcmp(db, tx->db) == 0)
        return tx->db_scope;
    return dsq__token_scopes(tx->srv, tx->token, tx->token_len, db);
}

/* The answer to one message (NULL: notifications only): it is over. */
static void ws_reply(void *ud, const char *text, size_t len, dsq_rpc_outcome how)
{
    ws_tx *tx = ud;
    (void)how; /* each reply says how its request went */
    if (text != NULL)
        dsq__ws_send(tx->c, false, text, len);
    if (tx->inflight > 0)
        tx->inflight--;
    ws_pump(tx);
}

static int ws_notify(void *ud, const char *text, size_t len)
{
    ws_tx *tx = ud;
    return dsq__ws_send(tx->c, false, text, len);
}

static int ws_notify_alt(void *ud, const char *text, size_t len, dsq_alt *alt)
{
    ws_tx *tx = ud;
    return dsq__ws_send_alt(tx->c, false, text, len, alt);
}

static void ws_writable(void *arg)
{
    ws_tx *tx = arg;
    dsq_dosql_writable(tx->s);
    ws_pump(tx);
}

static bool ws_may_start(ws_tx *tx)
{
    return tx->inflight < tx->srv->cfg->max_pipeline && dsq__conn_room(tx->c);
}

/* Start the messages that waited while there is room; read again once
 * none waits. */
static void ws_pump(ws_tx *tx)
{
    if (tx->pumping)
        return; /* the outer call goes on */
    tx->pumping = true;
    while (!dsq_queue_empty(&tx->held) && ws_may_start(tx)) {
        held_msg *m = mq_take(&tx->held);
        tx->inflight++;
        dsq_dosql_handle(tx->s, m->text, m->len);
        free(m);
    }
    tx->pumping = false;
    if (dsq_queue_empty(&tx->held))
        dsq__conn_hold_input(tx->c, false);
    else if (!dsq__conn_room(tx->c))
        dsq__conn_wait_room(tx->c, &tx->room);
}

static bool ws_can_send(void *ud)
{
    ws_tx *tx = ud;
    if (dsq__conn_room(tx->c))
        return true;
    dsq__conn_wait_room(tx->c, &tx->room);
    return false;
}

static void *ws_rpc_open(dsq_conn *c, const dsq_http_req *req)
{
    dsq_server *srv = dsq__conn_server(c);
    ws_tx *tx = calloc(1, sizeof *tx);
    if (tx == NULL)
        return NULL;
    tx->srv = srv;
    tx->c = c;
    tx->room.fn = ws_writable;
    tx->room.arg = tx;
    if (req->token) {
        tx->token = strndup(req->token, req->token_len);
        tx->token_len = req->token_len;
    }
    memcpy(tx->db, req->db, sizeof tx->db);
    if (tx->db[0])
        tx->db_scope = dsq__token_scopes(srv, tx->token, tx->token_len, tx->db);
    dsq_dosql_transport t = {
        .scope = ws_scope,
        .reply = ws_reply,
        .notify = ws_notify,
        .can_send = ws_can_send,
        .ud = tx,
        .notify_alt = ws_notify_alt,
    };
    tx->s = dsq_dosql_session_new(srv->engine, srv->cdc_cache, &srv->dosql, tx->db[0] ? tx->db : NULL,
                                  ++srv->next_session, &t);
    if (tx->s == NULL) {
        free(tx->token);
        free(tx);
        return NULL;
    }
    dsq_dosql_set_router(tx->s, srv->router, req->ks[0] ? req->ks : NULL);
    dsq_dosql_set_cdc_remote(tx->s, dsq_rcdc_remote(srv->rcdc));
    return tx;
}

static void ws_rpc_message(void *state, dsq_conn *c, bool binary, const uint8_t *p, size_t n)
{
    ws_tx *tx = state;
    if (tx == NULL) {
        dsq__ws_close(c, 1011, "out of memory");
        return;
    }
    if (binary) {
        static const char err[] = "{\"id\":null,\"error\":{\"code\":\"INVALID_REQUEST\","
                                  "\"message\":\"JSON-RPC messages are text frames\"}}";
        dsq__ws_send(c, false, err, sizeof err - 1);
        return;
    }
    if (dsq_queue_empty(&tx->held) && ws_may_start(tx)) {
        tx->inflight++;
        dsq_dosql_handle(tx->s, (const char *)p, n);
        return;
    }
    if (mq_hold(&tx->held, c, p, n) == 0 && !dsq__conn_room(c))
        dsq__conn_wait_room(c, &tx->room);
}

static void ws_rpc_close(void *state)
{
    ws_tx *tx = state;
    if (tx == NULL)
        return;
    mq_free(&tx->held);
    dsq_dosql_session_close(tx->s); /* rolls back its transactions, ends its streams */
    free(tx->token);
    free(tx);
}

static const dsq_ws_app rpc_app = {.open = ws_rpc_open, .message = ws_rpc_message, .close = ws_rpc_close};
static const dsq_ws_app capnweb_app; /* below */

const dsq_ws_app *dsq__ws_app(dsq_route_id route)
{
    switch (route) {
    case DSQ_ROUTE_RPC:
    case DSQ_ROUTE_KS_RPC:
    case DSQ_ROUTE_DB_RPC: return &rpc_app;
    case DSQ_ROUTE_CAPNWEB:
    case DSQ_ROUTE_KS_CAPNWEB:
    case DSQ_ROUTE_DB_CAPNWEB: return &capnweb_app;
    case DSQ_ROUTE_DB_HRANA_WS: return &dsq_hrana_ws_app;
    default: return NULL;
    }
}

/* ---- Cap'n Web: HTTP batches and WebSocket sessions --------------------------------- */

static const dsq_cw_limits cw_limits = {
    .max_depth = 64,
    .max_bigint_digits = 40,
    .max_entries = 10000,
};

typedef struct cw_http {
    dsq_server *srv;
    dsq_http_req *req;     /* NULL once the connection dropped it */
    dsq_cw_session *s;
    dsq_buf out;           /* the response: one message per line */
    bool feeding;          /* the request's messages are being fed in */
    bool answered;         /* the response went out while feeding */
} cw_http;

static unsigned cw_http_scope(void *ud, const char *db)
{
    cw_http *h = ud;
    return h->req ? dsq__token_scopes(h->srv, h->req->token, h->req->token_len, db) : 0;
}

/* Messages are separated by newlines (none after the last). */
static int cw_http_send(void *ud, const char *msg, size_t len)
{
    cw_http *h = ud;
    if (h->out.len > 0)
        dsq_buf_append(&h->out, "\n", 1);
    return dsq_buf_append(&h->out, msg, len);
}

static void cw_http_close(cw_http *h)
{
    if (h->req)
        h->req->abandon = NULL;
    h->req = NULL;
    dsq_cw_session *s = h->s;
    h->s = NULL;
    dsq_buf_free(&h->out);
    free(h);
    dsq_cw_session_close(s);
}

static void cw_http_done(void *ud)
{
    cw_http *h = ud;
    dsq_http_req *req = h->req;
    if (req != NULL) {
        req->abandon = NULL;
        h->req = NULL;
        dsq__respond(req, 200, "text/plain; charset=utf-8", h->out.data, h->out.len, NULL);
    }
    if (h->feeding)
        h->answered = true; /* handle_capnweb_batch closes it when the feed returns */
    else
        cw_http_close(h);
}

static void cw_http_end(void *ud) { (void)ud; /* a batch ends with its response */ }

static void cw_http_abandon(void *arg)
{
    cw_http *h = arg;
    h->req = NULL;
    cw_http_close(h);
}

static void handle_capnweb_batch(dsq_server *srv, dsq_http_req *req)
{
    if (req->method != HTTP_POST) {
        dsq__respond_error(req, 426, DSQ_CODE_INVALID_REQUEST,
                           "use POST, or GET with Upgrade: websocket");
        return;
    }
    cw_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    h->srv = srv;
    h->req = req;
    dsq_cw_transport t = {
        .send = cw_http_send,
        .end = cw_http_end,
        .batch_done = cw_http_done,
        .scope = cw_http_scope,
        .ud = h,
    };
    /* A session of its own: what the batch left open (a transaction, a
     * stream) ends with it. */
    h->s = dsq_cw_session_new(srv->engine, srv->cw_stats, srv->cdc_cache, &srv->dosql, &cw_limits,
                              req->db[0] ? req->db : NULL, ++srv->next_session, true, &t);
    if (h->s == NULL) {
        free(h);
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    dsq_cw_session_set_router(h->s, srv->router, req->ks[0] ? req->ks : NULL);
    dsq_cw_session_set_cdc_remote(h->s, dsq_rcdc_remote(srv->rcdc));
    req->abandon = cw_http_abandon;
    req->abandon_arg = h;
    /* An abort answers the batch while its messages are fed in; h stays
     * until the feed returns (the request may be gone by then). */
    h->feeding = true;
    dsq_cw_receive_lines(h->s, req->body.data ? req->body.data : "", req->body.len);
    h->feeding = false;
    if (h->answered)
        cw_http_close(h);
    else
        dsq_cw_batch_end(h->s);
}

/* Its results are bounded by the session's budget; its messages wait for
 * room as the JSON-RPC ones do. */
typedef struct cw_ws {
    dsq_server *srv;
    dsq_conn *c;
    dsq_cw_session *s;
    dsq_queue held;        /* messages waiting for room (owned held_msg) */
    dsq_waiter room;       /* waiting for the connection to drain */
    bool pumping;          /* inside cw_ws_pump */
    char *token;           /* owned */
    size_t token_len;
    char db[129];
    unsigned db_scope;
} cw_ws;

static unsigned cw_ws_scope(void *ud, const char *db)
{
    cw_ws *w = ud;
    if (w->db[0] && strcmp(db, w->db) == 0)
        return w->db_scope;
    return dsq__token_scopes(w->srv, w->token, w->token_len, db);
}

static int cw_ws_send(void *ud, const char *msg, size_t len)
{
    cw_ws *w = ud;
    return dsq__ws_send(w->c, false, msg, len);
}

static void cw_ws_end(void *ud)
{
    cw_ws *w = ud;
    dsq__ws_close(w->c, 3000, "RPC session aborted"); /* as the official capnweb peer closes */
}

static void cw_ws_batch_done(void *ud) { (void)ud; }

/* Deliver the messages that waited while there is room; read again once
 * none waits. */
static void cw_ws_pump(void *arg)
{
    cw_ws *w = arg;
    if (w->pumping)
        return;
    w->pumping = true;
    dsq_cw_writable(w->s); /* pushes that waited for room first */
    while (!dsq_queue_empty(&w->held) && dsq__conn_room(w->c)) {
        held_msg *m = mq_take(&w->held);
        dsq_cw_receive(w->s, m->text, m->len);
        free(m);
    }
    w->pumping = false;
    if (dsq_queue_empty(&w->held))
        dsq__conn_hold_input(w->c, false);
    else
        dsq__conn_wait_room(w->c, &w->room);
}

static bool cw_ws_room(void *ud)
{
    cw_ws *w = ud;
    if (dsq__conn_room(w->c))
        return true;
    dsq__conn_wait_room(w->c, &w->room);
    return false;
}

static void *cw_ws_open(dsq_conn *c, const dsq_http_req *req)
{
    dsq_server *srv = dsq__conn_server(c);
    cw_ws *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->srv = srv;
    w->c = c;
    w->room.fn = cw_ws_pump;
    w->room.arg = w;
    if (req->token) {
        w->token = strndup(req->token, req->token_len);
        w->token_len = req->token_len;
    }
    memcpy(w->db, req->db, sizeof w->db);
    if (w->db[0])
        w->db_scope = dsq__token_scopes(srv, w->token, w->token_len, w->db);
    dsq_cw_transport t = {
        .send = cw_ws_send,
        .end = cw_ws_end,
        .batch_done = cw_ws_batch_done,
        .scope = cw_ws_scope,
        .ud = w,
        .room = cw_ws_room,
    };
    dsq_cw_limits cl = cw_limits;
    cl.max_running = srv->cfg->max_pipeline;
    w->s = dsq_cw_session_new(srv->engine, srv->cw_stats, srv->cdc_cache, &srv->dosql, &cl,
                              w->db[0] ? w->db : NULL, ++srv->next_session, false, &t);
    if (w->s == NULL) {
        free(w->token);
        free(w);
        return NULL;
    }
    dsq_cw_session_set_router(w->s, srv->router, req->ks[0] ? req->ks : NULL);
    dsq_cw_session_set_cdc_remote(w->s, dsq_rcdc_remote(srv->rcdc));
    return w;
}

static void cw_ws_message(void *state, dsq_conn *c, bool binary, const uint8_t *p, size_t n)
{
    cw_ws *w = state;
    if (w == NULL) {
        dsq__ws_close(c, 1011, "out of memory");
        return;
    }
    if (binary) {
        dsq__ws_close(c, 1003, "Cap'n Web messages are text frames");
        return;
    }
    if (dsq_queue_empty(&w->held) && dsq__conn_room(c)) {
        dsq_cw_receive(w->s, (const char *)p, n);
        return;
    }
    if (mq_hold(&w->held, c, p, n) == 0)
        dsq__conn_wait_room(c, &w->room);
}

static void cw_ws_close(void *state)
{
    cw_ws *w = state;
    if (w == NULL)
        return;
    dsq_cw_session_close(w->s);
    mq_free(&w->held);
    free(w->token);
    free(w);
}

static const dsq_ws_app capnweb_app = {.open = cw_ws_open, .message = cw_ws_message, .close = cw_ws_close};

/* ---- listing and dropping databases ------------------------------------------------ */

typedef struct admin_op {
    dsq_call call;
    dsq_http_req *req; /* NULL once abandoned */
} admin_op;

static void admin_abandon(void *arg) { ((admin_op *)arg)->req = NULL; }

/* On the worker: the document as the response body (a list of 100,000
 * names is not written on the loop thread). */
static void admin_encode(dsq_call *c)
{
    json_t *doc = dsq_doc_of(c);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text != NULL) {
        dsq_buf_puts(&c->out, text);
        dsq_buf_puts(&c->out, "\n");
    }
    free(text);
}

static void admin_done(dsq_call *c)
{
    admin_op *a = c->ud;
    if (a->req != NULL) {
        a->req->abandon = NULL;
        if (c->err != 0)
            dsq__respond_error(a->req, c->not_found ? 404 : 0, c->code, "%s", c->msg);
        else if (c->out.len == 0)
            dsq__respond_error(a->req, 500, DSQ_CODE_INTERNAL_ERROR, "out of memory");
        else
            dsq__respond(a->req, 200, "application/json", c->out.data, c->out.len, NULL);
    }
    dsq_call_reset(c);
    free(a);
}

static void handle_admin(dsq_server *srv, dsq_http_req *req, dsq_op op)
{
    admin_op *a = calloc(1, sizeof *a);
    if (a == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    a->req = req;
    a->call.op = op;
    a->call.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    a->call.done = admin_done;
    a->call.encode = admin_encode;
    a->call.ud = a;
    int rv = op == DSQ_OP_LIST ? dsq_engine_submit_system(srv->engine, &a->call)
                               : dsq_engine_submit(srv->engine, req->db, &a->call);
    if (rv != 0) {
        dsq__respond_error(req, 0, a->call.code, "%s", a->call.msg);
        free(a);
        return;
    }
    req->abandon = admin_abandon;
    req->abandon_arg = a;
}

/* ---- export: the database as a SQLite file ----------------------------------------- */

/* GET /v1/db/{db}/export[?lsn=N]: the engine writes the database as of
 * that commit (else its last) to a file of the data directory, which goes
 * out as the response body in chunks, as the connection has room, and is
 * removed after. */
typedef struct export_op {
    dsq_call call;
    dsq_http_req *req;   /* NULL once abandoned */
    char path[4200];
    int fd;              /* the file being sent, or -1 */
    bool in_engine;      /* the call runs: export_done frees it */
    dsq_waiter room;
    char buf[256 << 10];
} export_op;

static void export_free(export_op *x)
{
    if (x->fd >= 0)
        close(x->fd);
    unlink(x->path);
    dsq_call_reset(&x->call);
    free(x);
}

/* The connection went (its waiters are dropped before this is called). */
static void export_abandon(void *arg)
{
    export_op *x = arg;
    x->req = NULL;
    if (!x->in_engine)
        export_free(x);
}

/* Send what the connection takes, then wait for room; the end closes it. */
static void export_pump(void *arg)
{
    export_op *x = arg;
    dsq_http_req *req = x->req;
    if (req == NULL) {
        export_free(x);
        return;
    }
    for (int i = 0; i < 64; i++) {
        if (!dsq__respond_at_head(req) || !dsq__conn_room(dsq__req_conn(req))) {
            dsq__conn_wait_room(dsq__req_conn(req), &x->room);
            return;
        }
        ssize_t n = read(x->fd, x->buf, sizeof x->buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* the end (an error after the head: the connection is cut, no end chunk) */
            req->abandon = NULL;
            x->req = NULL;
            if (n == 0)
                dsq__respond_end(req);
            else
                dsq__conn_abort(dsq__req_conn(req));
            export_free(x);
            return;
        }
        dsq__respond_chunk(req, x->buf, (size_t)n);
    }
    dsq__conn_wait_room(dsq__req_conn(req), &x->room); /* (and the rest at the next flush) */
}

static void export_done(dsq_call *c)
{
    export_op *x = c->ud;
    x->in_engine = false;
    if (x->req == NULL) { /* abandoned meanwhile */
        export_free(x);
        return;
    }
    if (c->err != 0) {
        x->req->abandon = NULL;
        dsq__respond_error(x->req, 0, c->code, "%s", c->msg);
        x->req = NULL;
        export_free(x);
        return;
    }
    x->fd = open(x->path, O_RDONLY | O_CLOEXEC);
    if (x->fd < 0) {
        x->req->abandon = NULL;
        dsq__respond_error(x->req, 500, DSQ_CODE_INTERNAL_ERROR, "cannot read the export: %s", strerror(errno));
        x->req = NULL;
        export_free(x);
        return;
    }
    char extra[160];
    snprintf(extra, sizeof extra, "X-Dosqld-Lsn: %llu\r\n", (unsigned long long)c->lsn);
    if (x->req->method == HTTP_HEAD) { /* the head alone: no body */
        dsq_http_req *req = x->req;
        req->abandon = NULL;
        x->req = NULL;
        dsq__respond(req, 200, "application/vnd.sqlite3", NULL, 0, extra);
        export_free(x);
        return;
    }
    dsq__respond_begin_extra(x->req, 200, "application/vnd.sqlite3", extra);
    export_pump(x);
}

static void handle_export(dsq_server *srv, dsq_http_req *req)
{
    char v[32];
    uint64_t lsn = 0;
    bool at = false;
    if (dsq_http_query_get(req, "lsn", v, sizeof v) >= 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || end == v || *end != '\0' || errno != 0) {
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "lsn must be a commit's LSN (a whole number)");
            return;
        }
        lsn = n;
        at = true;
    }
    export_op *x = calloc(1, sizeof *x);
    if (x == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    x->fd = -1;
    x->req = req;
    x->room.fn = export_pump;
    x->room.arg = x;
    char tmp[4100];
    snprintf(tmp, sizeof tmp, "%s/tmp", srv->cfg->data_dir);
    mkdir(tmp, 0700);
    static unsigned long long seq; /* (the loop thread's: names apart even without randomness) */
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    snprintf(x->path, sizeof x->path, "%s/export-%llu-%02x%02x%02x%02x%02x%02x%02x%02x.db", tmp, ++seq, rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    x->call.op = DSQ_OP_EXPORT;
    x->call.scope = DSQ_SCOPE_R;
    x->call.as_of = at ? DSQ_AS_OF_LSN : DSQ_AS_OF_NONE;
    x->call.as_of_lsn = lsn;
    x->call.export_path = x->path;
    x->call.done = export_done;
    x->call.ud = x;
    x->in_engine = true;
    if (dsq_engine_submit(srv->engine, req->db, &x->call) != 0) {
        dsq__respond_error(req, 0, x->call.code, "%s", x->call.msg);
        free(x);
        return;
    }
    req->abandon = export_abandon;
    req->abandon_arg = x;
}

/* ---- import: SQL text or a SQLite file into an empty database ------------------------ */

typedef struct import_op {
    dsq_call call;
    dsq_http_req *req;   /* NULL once abandoned */
    dsq_server *srv;
    dsq_stmt_req stmt;
    dsq_buf sql;         /* the SQL: a SQLite file's dump, or the body (taken from the request) */
    dsq_buf file;        /* a SQLite file (the body), until dumped */
    char db[129];
    bool working;        /* the file is being dumped on the thread pool: import_dump_after frees it */
    int rc;              /* (the dump's outcome) */
    char err[400];
} import_op;

static void import_free(import_op *x)
{
    dsq_call_reset(&x->call);
    dsq_buf_free(&x->sql);
    dsq_buf_free(&x->file);
    free(x);
}

/* The client went: the call, or the dump, frees it when it comes back. */
static void import_abandon(void *arg) { ((import_op *)arg)->req = NULL; }

static void import_done(dsq_call *c)
{
    import_op *x = c->ud;
    if (x->req != NULL) {
        x->req->abandon = NULL;
        if (c->err != 0) {
            dsq__respond_error(x->req, 0, c->code, "%s", c->msg);
        } else {
            char body[160];
            int n = snprintf(body, sizeof body, "{\"statements\":%lld,\"lsn\":%llu}",
                             (long long)(c->nresults ? c->results[0].rows_affected : 0), (unsigned long long)c->lsn);
            dsq__respond_line(x->req, 200, "application/json", body, (size_t)n);
        }
    }
    import_free(x);
}

static bool ctype_is(const char *v, size_t n, const char *want)
{
    size_t w = strlen(want);
    return n >= w && strncasecmp(v, want, w) == 0 && (n == w || v[w] == ';' || v[w] == ' ');
}

/* The SQL to the engine, as one import. */
static void import_submit(import_op *x)
{
    x->stmt = (dsq_stmt_req){.sql = x->sql.data ? x->sql.data : "", .sql_len = x->sql.len};
    x->call.op = DSQ_OP_IMPORT;
    x->call.stmts = &x->stmt;
    x->call.nstmts = 1;
    x->call.done = import_done;
    x->call.ud = x;
    if (dsq_engine_submit(x->srv->engine, x->db, &x->call) != 0) {
        if (x->req != NULL) {
            x->req->abandon = NULL;
            dsq__respond_error(x->req, 0, x->call.code, "%s", x->call.msg);
        }
        import_free(x);
    }
}

/* On the thread pool: the uploaded file written under DATA_DIR/tmp and
 * dumped as SQL (a large or odd file never holds the loop up). */
static void import_dump_work(void *arg)
{
    import_op *x = arg;
    char tmp[4100];
    snprintf(tmp, sizeof tmp, "%s/tmp", x->srv->cfg->data_dir);
    mkdir(tmp, 0700);
    x->rc = dsq_sqlite_dump_bytes(tmp, x->file.data, x->file.len, NULL, &x->sql, x->err, sizeof x->err);
    dsq_buf_free(&x->file);
}

static void import_dump_after(void *arg)
{
    import_op *x = arg;
    x->working = false;
    if (x->req == NULL) {
        import_free(x);
        return;
    }
    if (x->rc != 0) {
        x->req->abandon = NULL;
        dsq__respond_error(x->req, 400, DSQ_CODE_INVALID_REQUEST, "the import's file: %s", x->err);
        import_free(x);
        return;
    }
    import_submit(x);
}

/* PUT /v1/db/{db}/import: SQL text (application/sql: the output of
 * `sqlite3 X .dump` loads unchanged) or a SQLite database file
 * (application/vnd.sqlite3, dumped first, on the thread pool), run into
 * the database, which must be empty, as one commit. */
static void handle_import(dsq_server *srv, dsq_http_req *req)
{
    size_t ctn = 0;
    const char *ct = dsq_http_header_get(req, "content-type", &ctn);
    bool file = ct != NULL && ctype_is(ct, ctn, "application/vnd.sqlite3");
    bool sql = ct != NULL && (ctype_is(ct, ctn, "application/sql") || ctype_is(ct, ctn, "text/plain"));
    if (!file && !sql) {
        dsq__respond_error(req, 415, DSQ_CODE_INVALID_REQUEST,
                           "an import is SQL text (Content-Type: application/sql) or a SQLite database file "
                           "(Content-Type: application/vnd.sqlite3)");
        return;
    }
    import_op *x = calloc(1, sizeof *x);
    if (x == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    x->srv = srv;
    x->req = req;
    snprintf(x->db, sizeof x->db, "%s", req->db);
    x->call.scope = dsq__token_scopes(srv, req->token, req->token_len, req->db);
    req->abandon = import_abandon;
    req->abandon_arg = x;
    /* The body moves here: the request goes with its connection, the work
     * runs on. */
    if (file) {
        x->file = req->body;
        req->body = (dsq_buf)DSQ_BUF_INIT;
        x->working = true;
        dsq__offload(srv, import_dump_work, import_dump_after, x);
        return;
    }
    x->sql = req->body;
    req->body = (dsq_buf)DSQ_BUF_INIT;
    import_submit(x);
}

/* ---- forwarding (several nodes) ------------------------------------------------ */

/* Whether a /query body asks for a follower's answer. */
static bool wants_replica(const dsq_http_req *req)
{
    json_error_t jerr;
    json_t *b = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, &jerr);
    const char *c = b ? json_string_value(json_object_get(b, "consistency")) : NULL;
    bool yes = c != NULL && strcmp(c, "replica") == 0;
    json_decref(b);
    return yes;
}

/* The database whose primary's node serves req, into db[n]: its own
 * (the /v1/db routes), or a keyspace's coordinator (the /v1/ks routes:
 * the keyspace's home); NULL when req goes to no database's node. */
static const char *home_db(const dsq_server *srv, const dsq_http_req *req, char *db, size_t n)
{
    if (srv->cluster == NULL || req->answered)
        return NULL;
    switch ((dsq_route_id)req->route) {
    case DSQ_ROUTE_DB_QUERY:
    case DSQ_ROUTE_DB_RPC:
    case DSQ_ROUTE_DB_CAPNWEB:
    case DSQ_ROUTE_DB_CDC:
    case DSQ_ROUTE_DB_EXPORT:
    case DSQ_ROUTE_DB_IMPORT:
    case DSQ_ROUTE_DB_HRANA_V2:
    case DSQ_ROUTE_DB_HRANA_PIPELINE:
    case DSQ_ROUTE_DB_HRANA_WS:
        if (req->db[0] == '\0')
            return NULL;
        snprintf(db, n, "%s", req->db);
        return db;
    case DSQ_ROUTE_KS_QUERY:
    case DSQ_ROUTE_KS_RPC:
    case DSQ_ROUTE_KS_CAPNWEB:
        if (req->ks[0] == '\0')
            return NULL;
        dsq_router_coordinator(req->ks, db, n);
        return db;
    default:
        return NULL;
    }
}

int dsq__place_first(dsq_server *srv, const dsq_http_req *req, dsq_place_wait *w, char *err, size_t errlen)
{
    char db[160];
    const char *home = home_db(srv, req, db, sizeof db);
    return home != NULL ? dsq_cluster_place(srv->cluster, home, w, err, errlen) : 0;
}

bool dsq__forward_target(dsq_server *srv, const dsq_http_req *req, char *addr, size_t len, const char **node)
{
    char db[160];
    const char *home = home_db(srv, req, db, sizeof db);
    if (home == NULL)
        return false;
    int where = dsq_cluster_where(srv->cluster, home, addr, len, node);
    if (where == 0 || addr[0] == '\0')
        return false; /* its primary is here (or not known: refused here, naming it) */
    if (where == 1 && (req->route == DSQ_ROUTE_DB_CDC || (req->route == DSQ_ROUTE_DB_QUERY && wants_replica(req))))
        return false; /* what a follower serves itself */
    return true;
}

/* ---- promoting a copy (several nodes) ------------------------------------------ */

typedef struct promote_op {
    dsq_http_req *req; /* NULL once abandoned */
    char db[129];
    bool move; /* POST /v1/admin/move */
} promote_op;

static void promote_abandon(void *arg) { ((promote_op *)arg)->req = NULL; }

static void promote_done(void *ud, int rc, uint64_t epoch, uint64_t lsn, const char *msg)
{
    promote_op *p = ud;
    if (p->req != NULL) {
        p->req->abandon = NULL;
        if (rc == -2) { /* another one under way there: a conflict that passes (retry) */
            dsq__respond_error(p->req, 409, DSQ_CODE_SERIALIZATION_FAILURE, "the %s of %s did not start: %s",
                               p->move ? "move of a copy" : "promotion", p->db, msg);
        } else if (rc != 0) {
            dsq__respond_error(p->req, 0, DSQ_CODE_TIMEOUT, "the %s of %s failed: %s",
                               p->move ? "move of a copy" : "promotion", p->db, msg);
        } else {
            char body[400];
            int n = snprintf(body, sizeof body, "{\"database\":\"%s\",\"epoch\":%llu,\"lsn\":%llu}", p->db,
                             (unsigned long long)epoch, (unsigned long long)lsn);
            dsq__respond_line(p->req, 200, "application/json", body, (size_t)n);
        }
    }
    free(p);
}

/* POST /v1/admin/promote {"database": NAME}: make this node's copy the
 * primary (docs/replication.md). POST /v1/admin/move {"database": NAME,
 * "from": NODE, "to": NODE} (`move`): this node, the primary, replaces
 * the copy on `from` by one on `to` (docs/cluster.md). */
static void handle_promote(dsq_server *srv, dsq_http_req *req, bool move)
{
    json_error_t jerr;
    json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, &jerr);
    const char *db = body ? json_string_value(json_object_get(body, "database")) : NULL;
    const char *from = body ? json_string_value(json_object_get(body, "from")) : NULL;
    const char *to = body ? json_string_value(json_object_get(body, "to")) : NULL;
    if (db == NULL || !dsq_db_name_valid(db) || (move && (from == NULL || to == NULL))) {
        json_decref(body);
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST,
                           move ? "the body must be {\"database\": NAME, \"from\": NODE, \"to\": NODE}"
                                : "the body must be {\"database\": NAME}");
        return;
    }
    if (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_ADMIN, db) != DSQ_AUTH_OK) {
        json_decref(body);
        dsq__respond_error(req, 403, DSQ_CODE_FORBIDDEN, "the token does not grant admin on database %s", db);
        return;
    }
    if (srv->cluster == NULL) {
        json_decref(body);
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "this node is not part of a cluster ([cluster] peers)");
        return;
    }
    promote_op *p = calloc(1, sizeof *p);
    if (p == NULL) {
        json_decref(body);
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->req = req;
    p->move = move;
    snprintf(p->db, sizeof p->db, "%s", db);
    char err[400];
    req->abandon = promote_abandon;
    req->abandon_arg = p;
    int rc = move ? dsq_cluster_move(srv->cluster, p->db, from, to, promote_done, p, err, sizeof err)
                  : dsq_cluster_promote(srv->cluster, p->db, promote_done, p, err, sizeof err);
    json_decref(body);
    if (rc != 0) {
        req->abandon = NULL;
        /* Another one under way: a conflict that passes (retry). */
        if (rc == -2)
            dsq__respond_error(req, 409, DSQ_CODE_SERIALIZATION_FAILURE, "%s", err);
        else
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "%s", err);
        free(p);
    }
}

/* ---- the lake writer (docs/lakehouse.md) -------------------------------------------- */

typedef struct lake_op {
    dsq_http_req *req; /* NULL once abandoned */
} lake_op;

static void lake_abandon(void *arg) { ((lake_op *)arg)->req = NULL; }

static void lake_answer(dsq_http_req *req, const dsq_lake_stats *st)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "rounds", (json_int_t)st->rounds,
                          "commits", (json_int_t)st->commits, "files", (json_int_t)st->files, "rows",
                          (json_int_t)st->rows, "bytes", (json_int_t)st->bytes, "conflicts", (json_int_t)st->conflicts,
                          "expired", (json_int_t)st->expired, "removed", (json_int_t)st->removed, "errors",
                          (json_int_t)st->errors, "lastError", st->last_error);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    dsq__respond_line(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void lake_flushed(void *ud, const dsq_lake_stats *st)
{
    lake_op *op = ud;
    if (op->req != NULL) {
        op->req->abandon = NULL;
        if (st == NULL)
            dsq__respond_error(op->req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "the server is stopping");
        else
            lake_answer(op->req, st);
    }
    free(op);
}

/* GET /v1/admin/lake: the lake writer's counts. POST: a round now,
 * answered when it ended. */
static void handle_lake(dsq_server *srv, dsq_http_req *req)
{
    if (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_ADMIN, "*") != DSQ_AUTH_OK) {
        dsq__respond_error(req, 403, DSQ_CODE_FORBIDDEN, "the lake's state needs a token with admin on every "
                                                         "database");
        return;
    }
    if (srv->lake == NULL) {
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "no lake here ([lake] databases is empty)");
        return;
    }
    if (req->method != HTTP_POST) {
        dsq_lake_stats st;
        dsq_lake_stats_get(srv->lake, &st);
        lake_answer(req, &st);
        return;
    }
    lake_op *op = calloc(1, sizeof *op);
    if (op == NULL || dsq_lake_flush(srv->lake, lake_flushed, op) != 0) {
        free(op);
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->req = req;
    req->abandon = lake_abandon;
    req->abandon_arg = op;
}

/* POST /v1/admin/drain {"node": ID, "drain": true|false}: this node (ID
 * must be its own id) moves every database it is the primary of to
 * another copy and takes no new one, or stops draining. Answers at once
 * with the primaries it still holds (docs/cluster.md); GET /v1/cluster
 * shows them fall to 0. */
static void handle_drain(dsq_server *srv, dsq_http_req *req)
{
    json_error_t jerr;
    json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, &jerr);
    const char *node = body ? json_string_value(json_object_get(body, "node")) : NULL;
    json_t *on = body ? json_object_get(body, "drain") : NULL;
    if (node == NULL || (on != NULL && !json_is_boolean(on))) {
        json_decref(body);
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "the body must be {\"node\": ID, \"drain\": true|false}");
        return;
    }
    bool drain = on == NULL || json_is_true(on);
    if (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_ADMIN, "*") != DSQ_AUTH_OK) {
        json_decref(body);
        dsq__respond_error(req, 403, DSQ_CODE_FORBIDDEN, "draining a node needs a token with admin on every database");
        return;
    }
    char err[300];
    uint64_t primaries = 0;
    int rc = srv->cluster != NULL ? dsq_cluster_drain(srv->cluster, node, drain, &primaries, err, sizeof err) : -1;
    if (srv->cluster == NULL)
        snprintf(err, sizeof err, "this node is not part of a cluster ([cluster])");
    json_decref(body);
    if (rc != 0) {
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "%s", err);
        return;
    }
    char out[200];
    int n = snprintf(out, sizeof out, "{\"node\":\"%s\",\"draining\":%s,\"primaries\":%llu}",
                     srv->cfg->cluster_node_id, drain ? "true" : "false", (unsigned long long)primaries);
    dsq__respond_line(req, 200, "application/json", out, (size_t)n);
}

/* ---- dispatch -------------------------------------------------------------- */

void dsq__handle(dsq_server *srv, dsq_http_req *req)
{
    switch ((dsq_route_id)req->route) {
    case DSQ_ROUTE_HEALTHZ: handle_healthz(srv, req); break;
    case DSQ_ROUTE_METRICS: handle_metrics(srv, req); break;
    case DSQ_ROUTE_RPC:
    case DSQ_ROUTE_KS_RPC:
    case DSQ_ROUTE_DB_RPC: handle_rpc(srv, req); break;
    case DSQ_ROUTE_KS_QUERY:
    case DSQ_ROUTE_DB_QUERY: handle_query(srv, req); break;
    case DSQ_ROUTE_DB_LIST: handle_admin(srv, req, DSQ_OP_LIST); break;
    case DSQ_ROUTE_DB_DROP: handle_admin(srv, req, DSQ_OP_DROP); break;
    case DSQ_ROUTE_DB_CAPNWEB:
    case DSQ_ROUTE_KS_CAPNWEB:
    case DSQ_ROUTE_CAPNWEB: handle_capnweb_batch(srv, req); break;
    case DSQ_ROUTE_DB_CDC: dsq__handle_cdc(srv, req); break;
    case DSQ_ROUTE_DB_EXPORT: handle_export(srv, req); break;
    case DSQ_ROUTE_DB_IMPORT: handle_import(srv, req); break;
    case DSQ_ROUTE_DB_HRANA_V2:
    case DSQ_ROUTE_DB_HRANA_PIPELINE: dsq_hrana_handle_http(srv, req); break;
    case DSQ_ROUTE_DB_HRANA_WS:
        dsq__respond_error(req, 426, DSQ_CODE_INVALID_REQUEST,
                           "libSQL clients connect here over a WebSocket (subprotocol hrana2 or hrana1)");
        break;
    case DSQ_ROUTE_CLUSTER: handle_cluster(srv, req); break;
    case DSQ_ROUTE_PROMOTE: handle_promote(srv, req, false); break;
    case DSQ_ROUTE_MOVE: handle_promote(srv, req, true); break;
    case DSQ_ROUTE_DRAIN: handle_drain(srv, req); break;
    case DSQ_ROUTE_LAKE: handle_lake(srv, req); break;
    case DSQ_ROUTE_ICEBERG: dsq__iceberg_handle(srv, req); break;
    case DSQ_ROUTE_NONE:
    case DSQ__ROUTE_COUNT:
        dsq__respond_error(req, 404, DSQ_CODE_INVALID_REQUEST, "no such route");
        break;
    }
}
