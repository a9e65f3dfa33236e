/* metrics — counters and their Prometheus rendering.
 *
 * Request counts are kept per route and exact status (a dense array: a
 * few tens of kilobytes, no hashing on the hot path); only non-zero series
 * are rendered. Latency is a histogram per route. */
#include "server/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/util.h"

/* Upper bounds of the latency buckets, in seconds. */
static const double buckets[DSQ_METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   5.0,
};

static const char *const close_names[DSQ__CLOSE_COUNT] = {
    [DSQ_CLOSE_PEER] = "peer",
    [DSQ_CLOSE_DONE] = "done",
    [DSQ_CLOSE_IO_ERROR] = "io_error",
    [DSQ_CLOSE_BAD_REQUEST] = "bad_request",
    [DSQ_CLOSE_TLS_ERROR] = "tls_error",
    [DSQ_CLOSE_HEADER_TIMEOUT] = "header_timeout",
    [DSQ_CLOSE_BODY_TIMEOUT] = "body_timeout",
    [DSQ_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
    [DSQ_CLOSE_SEND_STALL] = "send_stall",
    [DSQ_CLOSE_PING_TIMEOUT] = "ping_timeout",
    [DSQ_CLOSE_WS_PROTOCOL] = "ws_protocol",
    [DSQ_CLOSE_SHUTDOWN] = "shutdown",
};

void dsq_metrics_init(dsq_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->start_wall_ms = dsq_wall_ms();
}

void dsq_metrics_request(dsq_metrics *m, dsq_route_id route, int status, uint64_t ns)
{
    if ((unsigned)route >= DSQ__ROUTE_COUNT)
        route = DSQ_ROUTE_NONE;
    if (status >= 100 && status <= 599)
        m->by_status[route][status - 100]++;
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < DSQ_METRICS_BUCKETS && s > buckets[b])
        b++;
    m->lat_buckets[route][b]++;
    m->lat_count[route]++;
    m->lat_sum_s[route] += s;
}

void dsq_metrics_closed(dsq_metrics *m, dsq_close_reason why)
{
    if ((unsigned)why < DSQ__CLOSE_COUNT)
        m->conns_closed[why]++;
}

const char *dsq_close_reason_name(dsq_close_reason why)
{
    return (unsigned)why < DSQ__CLOSE_COUNT ? close_names[why] : "unknown";
}

static void family(dsq_buf *o, const char *name, const char *type, const char *help)
{
    dsq_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The process's own figures, under the names every Prometheus client
 * library gives them: CPU time, memory, descriptors, start time. */
static void process_metrics(const dsq_metrics *m, dsq_buf *o)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                     (double)ru.ru_stime.tv_usec / 1e6;
        family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        dsq_buf_printf(o, "process_cpu_seconds_total %.3f\n", cpu);
    }
    /* statm: sizes in pages (total, resident, ...) */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long vsz = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &vsz, &rss) == 2) {
            long page = sysconf(_SC_PAGESIZE);
            family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
            dsq_buf_printf(o, "process_virtual_memory_bytes %llu\n", vsz * (unsigned long long)page);
            family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            dsq_buf_printf(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        unsigned long long n = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
        dsq_buf_printf(o, "process_open_fds %llu\n", n > 0 ? n - 1 : 0); /* (less the directory's own) */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        dsq_buf_printf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    family(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    dsq_buf_printf(o, "process_start_time_seconds %.3f\n", (double)m->start_wall_ms / 1000.0);
}

int dsq_metrics_render(const dsq_metrics *m, dsq_buf *o)
{
    size_t before = o->len;
    process_metrics(m, o);
    family(o, "dosqld_build_info", "gauge", "Build information.");
    dsq_buf_printf(o, "dosqld_build_info{version=\"%s\"} 1\n", DSQ_VERSION);
    family(o, "dosqld_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    dsq_buf_printf(o, "dosqld_start_time_seconds %.3f\n", (double)m->start_wall_ms / 1000.0);

    family(o, "dosqld_connections", "gauge", "Open client connections.");
    dsq_buf_printf(o, "dosqld_connections %llu\n", (unsigned long long)m->conns_open);
    family(o, "dosqld_connections_accepted_total", "counter", "Connections accepted.");
    dsq_buf_printf(o, "dosqld_connections_accepted_total %llu\n",
                   (unsigned long long)m->conns_accepted);
    family(o, "dosqld_connections_rejected_total", "counter",
           "Connections refused with 503 because max_connections were open.");
    dsq_buf_printf(o, "dosqld_connections_rejected_total %llu\n",
                   (unsigned long long)m->conns_rejected);
    family(o, "dosqld_forwarded_connections_total", "counter",
           "Client connections passed on to the node of their database's primary ([cluster]).");
    dsq_buf_printf(o, "dosqld_forwarded_connections_total %llu\n", (unsigned long long)m->forwarded);
    family(o, "dosqld_forwarded_in_connections_total", "counter",
           "Client connections other nodes passed on to this one over mutual TLS ([cluster] tls).");
    dsq_buf_printf(o, "dosqld_forwarded_in_connections_total %llu\n", (unsigned long long)m->forwarded_in);
    family(o, "dosqld_forwarded_in_refused_total", "counter",
           "Connections to the listener for passed-on connections refused: not TLS, or no certificate "
           "of the cluster's CA naming a node.");
    dsq_buf_printf(o, "dosqld_forwarded_in_refused_total %llu\n",
                   (unsigned long long)m->forwarded_in_refused);
    family(o, "dosqld_connections_closed_total", "counter", "Connections closed, by reason.");
    for (int i = 0; i < DSQ__CLOSE_COUNT; i++)
        dsq_buf_printf(o, "dosqld_connections_closed_total{reason=\"%s\"} %llu\n", close_names[i],
                       (unsigned long long)m->conns_closed[i]);

    family(o, "dosqld_websocket_connections", "gauge", "Open WebSocket sessions.");
    dsq_buf_printf(o, "dosqld_websocket_connections %llu\n", (unsigned long long)m->ws_open);
    family(o, "dosqld_websocket_messages_received_total", "counter", "WebSocket messages received.");
    dsq_buf_printf(o, "dosqld_websocket_messages_received_total %llu\n",
                   (unsigned long long)m->ws_msgs_in);
    family(o, "dosqld_websocket_messages_sent_total", "counter", "WebSocket messages sent.");
    dsq_buf_printf(o, "dosqld_websocket_messages_sent_total %llu\n",
                   (unsigned long long)m->ws_msgs_out);

    family(o, "dosqld_received_bytes_total", "counter", "Bytes read from clients (after TLS: on the wire).");
    dsq_buf_printf(o, "dosqld_received_bytes_total %llu\n", (unsigned long long)m->bytes_in);
    family(o, "dosqld_sent_bytes_total", "counter", "Bytes written to clients (on the wire).");
    dsq_buf_printf(o, "dosqld_sent_bytes_total %llu\n", (unsigned long long)m->bytes_out);

    family(o, "dosqld_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int r = 0; r < DSQ__ROUTE_COUNT; r++)
        for (int s = 0; s < 500; s++)
            if (m->by_status[r][s])
                dsq_buf_printf(o, "dosqld_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               dsq_route_name((dsq_route_id)r), s + 100,
                               (unsigned long long)m->by_status[r][s]);

    family(o, "dosqld_http_request_duration_seconds", "histogram",
           "Time from a request's first byte to its response, by route.");
    for (int r = 0; r < DSQ__ROUTE_COUNT; r++) {
        if (m->lat_count[r] == 0)
            continue;
        const char *rn = dsq_route_name((dsq_route_id)r);
        uint64_t cum = 0;
        for (int b = 0; b < DSQ_METRICS_BUCKETS; b++) {
            cum += m->lat_buckets[r][b];
            dsq_buf_printf(o, "dosqld_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                           rn, buckets[b], (unsigned long long)cum);
        }
        cum += m->lat_buckets[r][DSQ_METRICS_BUCKETS];
        dsq_buf_printf(o, "dosqld_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                       rn, (unsigned long long)cum);
        dsq_buf_printf(o, "dosqld_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", rn,
                       m->lat_sum_s[r]);
        dsq_buf_printf(o, "dosqld_http_request_duration_seconds_count{route=\"%s\"} %llu\n", rn,
                       (unsigned long long)m->lat_count[r]);
    }
    return o->len > before ? 0 : -1;
}
