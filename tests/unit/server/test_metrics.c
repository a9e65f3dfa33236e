/* Unit tests: server/metrics — counters and the Prometheus text. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/metrics.h"

Test(metrics, render)
{
    static dsq_metrics m;
    dsq_buf b = DSQ_BUF_INIT;
    dsq_metrics_init(&m);
    m.conns_open = 2;
    dsq_metrics_request(&m, DSQ_ROUTE_HEALTHZ, 200, 50000);     /* 50 µs */
    dsq_metrics_request(&m, DSQ_ROUTE_HEALTHZ, 200, 2000000);   /* 2 ms */
    dsq_metrics_request(&m, DSQ_ROUTE_DB_QUERY, 501, 9000000000ull); /* 9 s: past the last bucket */
    dsq_metrics_closed(&m, DSQ_CLOSE_SEND_STALL);
    cr_assert_eq(dsq_metrics_render(&m, &b), 0);
    const char *want[] = {
        "# TYPE dosqld_connections gauge\ndosqld_connections 2\n",
        "dosqld_http_requests_total{route=\"healthz\",status=\"200\"} 2\n",
        "dosqld_http_requests_total{route=\"db_query\",status=\"501\"} 1\n",
        "dosqld_http_request_duration_seconds_bucket{route=\"healthz\",le=\"0.0001\"} 1\n",
        "dosqld_http_request_duration_seconds_bucket{route=\"healthz\",le=\"0.0025\"} 2\n",
        "dosqld_http_request_duration_seconds_bucket{route=\"db_query\",le=\"5\"} 0\n",
        "dosqld_http_request_duration_seconds_bucket{route=\"db_query\",le=\"+Inf\"} 1\n",
        "dosqld_http_request_duration_seconds_count{route=\"healthz\"} 2\n",
        "dosqld_connections_closed_total{reason=\"send_stall\"} 1\n",
        "# TYPE dosqld_http_request_duration_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(b.data, want[i]) != NULL, "missing: %s\n---\n%s", want[i], b.data);
    cr_assert_null(strstr(b.data, "route=\"metrics\""), "empty series are not rendered");
    /* Every sample line is "name{labels} value" or "name value". */
    for (char *line = strtok(b.data, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        cr_assert(strchr(line, ' ') != NULL, "%s", line);
    }
    dsq_buf_free(&b);
}
