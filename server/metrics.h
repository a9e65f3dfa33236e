/* metrics — the server's counters, rendered in Prometheus text format.
 *
 * Only the loop thread updates them, so they are plain integers. */
#ifndef DSQ_METRICS_H
#define DSQ_METRICS_H

#include <stdint.h>

#include "common/buf.h"
#include "server/router.h"

/* Why a connection ended (a label of dosqld_connections_closed_total). */
typedef enum dsq_close_reason {
    DSQ_CLOSE_PEER = 0,        /* the client closed it */
    DSQ_CLOSE_DONE,            /* we closed it after a last response / close frame */
    DSQ_CLOSE_IO_ERROR,        /* a socket error */
    DSQ_CLOSE_BAD_REQUEST,     /* malformed HTTP, an over-limit request */
    DSQ_CLOSE_TLS_ERROR,       /* TLS handshake or record error */
    DSQ_CLOSE_HEADER_TIMEOUT,  /* request head not complete in header_timeout */
    DSQ_CLOSE_BODY_TIMEOUT,    /* body not whole within body_timeout */
    DSQ_CLOSE_IDLE_TIMEOUT,    /* keep-alive idle past keepalive_timeout */
    DSQ_CLOSE_SEND_STALL,      /* client read nothing for send_timeout: cut off */
    DSQ_CLOSE_PING_TIMEOUT,    /* WebSocket peer silent past two ping intervals */
    DSQ_CLOSE_WS_PROTOCOL,     /* WebSocket protocol violation */
    DSQ_CLOSE_SHUTDOWN,        /* server shutting down */
    DSQ__CLOSE_COUNT
} dsq_close_reason;

#define DSQ_METRICS_BUCKETS 14

typedef struct dsq_metrics {
    uint64_t start_wall_ms;                       /* process start, for uptime */
    uint64_t conns_open;                          /* gauge */
    uint64_t conns_accepted;                      /* counter */
    uint64_t conns_rejected;                      /* over max_connections */
    uint64_t forwarded;                           /* connections passed on to a primary's node */
    uint64_t forwarded_in;                        /* connections other nodes passed on here, over
                                                     TLS (cluster.tls) */
    uint64_t forwarded_in_refused;                /* connections to that listener refused: their TLS
                                                     or certificate failed */
    uint64_t conns_closed[DSQ__CLOSE_COUNT];      /* by reason */
    uint64_t ws_open;                             /* gauge */
    uint64_t ws_msgs_in, ws_msgs_out;             /* messages */
    uint64_t bytes_in, bytes_out;                 /* on the wire */
    uint64_t by_status[DSQ__ROUTE_COUNT][500];    /* by exact status 100..599 */
    uint64_t lat_buckets[DSQ__ROUTE_COUNT][DSQ_METRICS_BUCKETS + 1];
    uint64_t lat_count[DSQ__ROUTE_COUNT];
    double lat_sum_s[DSQ__ROUTE_COUNT];
} dsq_metrics;

void dsq_metrics_init(dsq_metrics *m);

/* A request on `route` answered with `status` after `ns` nanoseconds. */
void dsq_metrics_request(dsq_metrics *m, dsq_route_id route, int status, uint64_t ns);

void dsq_metrics_closed(dsq_metrics *m, dsq_close_reason why);

const char *dsq_close_reason_name(dsq_close_reason why);

/* Append the Prometheus text exposition (format 0.0.4). */
int dsq_metrics_render(const dsq_metrics *m, dsq_buf *out);

#endif
