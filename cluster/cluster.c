/* cluster — the running cluster: the node list and the links (peer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/peer.h"
#include "common/log.h"

struct dsq_cluster {
    dsq_node nodes[DSQ_NODES_MAX];
    size_t nnodes, self;
    dsq_peers *peers;
    void (*done)(void *ud);
    void *done_ud;
};

int dsq_cluster_start(const dsq_cluster_cfg *cfg, dsq_cluster **out, char *err, size_t errlen)
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
    for (size_t i = 0; i < cfg->npeers; i++) {
        char why[256];
        if (dsq_node_parse(cfg->peers[i], &c->nodes[i], why, sizeof why) != 0) {
            snprintf(err, errlen, "cluster.peers: %s", why);
            free(c);
            return -1;
        }
        if (strcmp(c->nodes[i].id, cfg->node_id) == 0)
            c->self = i;
    }
    c->nnodes = cfg->npeers;
    if (c->self == SIZE_MAX) {
        snprintf(err, errlen, "cluster.node_id %s is not in cluster.peers", cfg->node_id);
        free(c);
        return -1;
    }
    dsq_peers_cfg pc = {
        .loop = cfg->loop,
        .nodes = c->nodes,
        .nnodes = c->nnodes,
        .self = c->self,
        .secret = cfg->secret,
        .heartbeat_ms = cfg->heartbeat_ms,
        .dead_after_ms = cfg->peer_timeout_ms,
        .send_limit = 8u << 20,
        .max_message = 1ull << 31,
        .ud = c,
    };
    if (c->nnodes > 1 && dsq_peers_start(&pc, &c->peers, err, errlen) != 0) {
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

static void peers_stopped(void *ud)
{
    dsq_cluster *c = ud;
    void (*done)(void *) = c->done;
    void *dud = c->done_ud;
    free(c);
    if (done != NULL)
        done(dud);
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
    if (c->peers != NULL)
        dsq_peers_stop(c->peers, peers_stopped, c);
    else
        peers_stopped(c);
}

size_t dsq_cluster_nnodes(const dsq_cluster *c) { return c->nnodes; }

void dsq_cluster_node(const dsq_cluster *c, size_t i, dsq_cluster_node_info *out)
{
    out->id = c->nodes[i].id;
    out->address = c->nodes[i].addr_text;
    out->self = i == c->self;
    out->reachable = out->self || (c->peers != NULL && dsq_peer_up(c->peers, i));
}

void dsq_cluster_stats_get(const dsq_cluster *c, dsq_cluster_stats *out)
{
    *out = (dsq_cluster_stats){0};
    if (c->peers == NULL)
        return;
    dsq_peer_stats ps;
    dsq_peers_stats(c->peers, &ps);
    out->bytes_out = ps.bytes_out;
    out->bytes_in = ps.bytes_in;
    out->link_connects = ps.connects;
    out->auth_failures = ps.auth_failures;
    for (size_t i = 0; i < c->nnodes; i++)
        out->links_up += i != c->self && dsq_peer_up(c->peers, i);
}
