/* cli_cluster — `dosqld cluster status`: what a running node knows of the
 * cluster (GET /v1/cluster), asked over HTTP and printed for a person,
 * or as the node's JSON (--json).
 *
 * The daemon's binary runs it when its first argument is "cluster"
 * (main.c); it starts nothing of a server. The pieces that decide what
 * is asked and what is printed are pure and unit-tested
 * (tests/unit/server/test_cli_cluster.c); the rest is one GET with
 * libcurl. */
#ifndef DSQ_CLI_CLUSTER_H
#define DSQ_CLI_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* `dosqld cluster ...`: argv[0] is "cluster". The exit status: 0 the
 * node answered 200 (printed), 1 it could not be reached, answered
 * something else, or the configuration file has problems (the reason on
 * stderr), 2 a usage error. */
int dsq_cli_cluster_main(int argc, char **argv);

/* Where a node listening on `listen` (HOST:PORT as server.listen, or
 * server.tls_listen with tls) is asked from this machine: "http://HOST:PORT"
 * ("https://" with tls), with a wildcard host (0.0.0.0, [::]) as the
 * loopback address of its family. out[cap]. 0, or -1 with the reason in
 * err (not HOST:PORT; port 0, which is chosen at start). */
int dsq_cli_listen_base(const char *listen, bool tls, char *out, size_t cap, char *err, size_t errlen);

/* The URL of GET /v1/cluster on the node at `base` (http:// or https://,
 * a trailing '/' or /v1/cluster allowed), with ?database=db when db is
 * not NULL (a database name). out[cap]. 0, or -1 with the reason in err. */
int dsq_cli_cluster_url(const char *base, const char *db, char *out, size_t cap, char *err, size_t errlen);

/* GET /v1/cluster's answer as text: the nodes (reachable from the node
 * that answered, alive in etcd, load, copies and primaries, lag), etcd's
 * state and the failovers made there when the answer has them, and the
 * database's copies when it has one. Fields the answer lacks are left
 * out or shown as "?". Appended to out. 0, or -1 with the reason in err
 * when doc is not such an answer (no "nodes" array) or out of memory. */
int dsq_cli_cluster_render(const json_t *doc, dsq_buf *out, char *err, size_t errlen);

#endif
