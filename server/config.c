/* config — the key table, the INI reader and the checks.
 *
 * Divisions: the key table; setting one value; the INI reader (libinih,
 * with a line-counting reader so every error names its line); the checks
 * that look at several keys; addresses. */
#include "server/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/placement.h"
#include "common/log.h"
#include "common/util.h"

/* T_LIST: items split on commas and spaces; T_LINES: one item a line
 * (each assignment), spaces kept. */
enum key_type { T_STR, T_LIST, T_LINES, T_SIZE, T_DURATION, T_UINT, T_INT, T_BOOL, T_LOGLEVEL };

/* The layer that set a key last: list keys are replaced, not appended to,
 * the first time a later layer sets them. */
enum { BY_DEFAULT = 0, BY_FILE = 1, BY_FLAG = 2 };

typedef struct key_def {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;     /* into dsq_config */
    const char *dflt;  /* default, in the file's syntax ("" = empty) */
    uint64_t min, max; /* bounds for numbers */
} key_def;

#define F(f) offsetof(dsq_config, f)
#define NOMAX UINT64_MAX
static const key_def keys[] = {
    {"server", "listen", T_LIST, F(listen), "127.0.0.1:8787", 0, 0},
    {"server", "tls_listen", T_LIST, F(tls_listen), "", 0, 0},
    {"server", "tls_cert", T_STR, F(tls_cert), "", 0, 0},
    {"server", "tls_key", T_STR, F(tls_key), "", 0, 0},
    {"server", "max_connections", T_UINT, F(max_connections), "10000", 1, 1000000},
    {"server", "max_header_size", T_SIZE, F(max_header_size), "16K", 1024, 1 << 20},
    {"server", "max_body_size", T_SIZE, F(max_body_size), "16M", 1024, 1ull << 32},
    {"server", "header_timeout", T_DURATION, F(header_timeout_ms), "10s", 100, 3600000},
    {"server", "body_timeout", T_DURATION, F(body_timeout_ms), "30s", 100, 3600000},
    {"server", "keepalive_timeout", T_DURATION, F(keepalive_timeout_ms), "60s", 100, 86400000},
    {"server", "send_queue_limit", T_SIZE, F(send_queue_limit), "4M", 4096, 1ull << 32},
    {"server", "send_timeout", T_DURATION, F(send_timeout_ms), "30s", 100, 3600000},
    {"server", "max_pipeline", T_UINT, F(max_pipeline), "32", 1, 1024},
    {"server", "shutdown_timeout", T_DURATION, F(shutdown_timeout_ms), "10s", 0, 3600000},
    {"websocket", "max_message", T_SIZE, F(ws_max_message), "16M", 125, 1ull << 31},
    {"websocket", "ping_interval", T_DURATION, F(ws_ping_interval_ms), "30s", 0, 86400000},
    {"websocket", "compression", T_BOOL, F(ws_compression), "no", 0, 0},
    {"websocket", "compression_min", T_SIZE, F(ws_compression_min), "1K", 0, 1ull << 31},
    {"rpc", "max_batch", T_UINT, F(rpc_max_batch), "1000", 1, 100000},
    {"rpc", "stream_chunk_rows", T_UINT, F(rpc_stream_chunk_rows), "100", 1, 100000},
    {"rpc", "max_stream_chunk_rows", T_UINT, F(rpc_max_stream_chunk_rows), "10000", 1, 1000000},
    {"rpc", "hrana_stream_timeout", T_DURATION, F(rpc_hrana_stream_timeout_ms), "10s", 100, 86400000},
    {"engine", "workers", T_UINT, F(engine_workers), "0", 0, 1024},
    {"engine", "idle_timeout", T_DURATION, F(engine_idle_timeout_ms), "60s", 0, 86400000},
    {"engine", "max_open_actors", T_UINT, F(engine_max_open_actors), "1000", 1, 10000000},
    {"engine", "max_queue", T_UINT, F(engine_max_queue), "1000", 1, 10000000},
    {"engine", "batch_per_turn", T_UINT, F(engine_batch_per_turn), "16", 1, 100000},
    {"engine", "query_timeout", T_DURATION, F(engine_query_timeout_ms), "30s", 1, 86400000},
    {"engine", "transaction_timeout", T_DURATION, F(engine_txn_timeout_ms), "30s", 1, 86400000},
    {"engine", "max_snapshots", T_UINT, F(engine_max_snapshots), "64", 1, 100000},
    {"engine", "max_transaction_timeout", T_DURATION, F(engine_max_txn_timeout_ms), "5m", 1, 86400000},
    {"engine", "write_wait_timeout", T_DURATION, F(engine_write_wait_ms), "30s", 1, 86400000},
    {"engine", "max_result_bytes", T_SIZE, F(engine_max_result_bytes), "64M", 1024, 1ull << 32},
    {"engine", "max_sql_length", T_SIZE, F(engine_max_sql_length), "1M", 1024, 1ull << 30},
    {"engine", "max_value_size", T_SIZE, F(engine_max_value_size), "64M", 1024, 1ull << 30},
    {"engine", "max_columns", T_UINT, F(engine_max_columns), "2000", 1, 32767},
    {"engine", "max_expr_depth", T_UINT, F(engine_max_expr_depth), "1000", 1, 100000},
    {"engine", "max_params", T_UINT, F(engine_max_params), "10000", 1, 250000},
    {"engine", "cache_size", T_SIZE, F(engine_cache_size), "2M", 65536, 1ull << 34},
    {"engine", "idempotency_window", T_DURATION, F(engine_idempotency_window_ms), "24h", 0, 30ull * 86400000},
    {"storage", "data_dir", T_STR, F(data_dir), "./data", 0, 0},
    {"storage", "object_store", T_STR, F(object_store), "", 0, 0},
    {"storage", "page_size", T_SIZE, F(storage_page_size), "4096", 512, 65536},
    {"storage", "segment_size", T_SIZE, F(storage_segment_size), "64M", 65536, 1ull << 31},
    /* T_INT bounds are int64_t values stored in the uint64_t fields */
    {"storage", "compression_level", T_INT, F(storage_compression_level), "-5", (uint64_t)-7, 19},
    {"storage", "max_transaction_size", T_SIZE, F(storage_max_txn_size), "1G", 65536, 1ull << 40},
    {"storage", "sync", T_STR, F(storage_sync), "full", 0, 0},
    {"storage", "sync_to_object_store", T_STR, F(storage_sync_to_objects), "no", 0, 0},
    {"storage", "checkpoint_size", T_SIZE, F(storage_checkpoint_size), "16M", 65536, 1ull << 34},
    {"storage", "max_open_files_per_database", T_UINT, F(storage_max_open_files), "16", 1, 4096},
    {"storage", "history_retention", T_DURATION, F(storage_history_retention_ms), "24h", 0,
     366ull * 86400000},
    {"storage", "sync_threads", T_UINT, F(storage_sync_threads), "1", 1, 256},
    {"storage", "group_sync", T_BOOL, F(storage_group_sync), "yes", 0, 0},
    {"storage", "journal", T_BOOL, F(storage_journal), "yes", 0, 0},
    {"storage", "journal_size", T_SIZE, F(storage_journal_size), "32M", 1ull << 20, 1ull << 30},
    {"storage", "hot_tier_max_bytes", T_SIZE, F(storage_hot_max_bytes), "0", 0, 1ull << 60},
    {"storage", "hot_tier_max_age", T_DURATION, F(storage_hot_max_age_ms), "0", 0, 3650ull * 86400000},
    {"storage", "warm_cache_bytes", T_SIZE, F(storage_warm_cache_bytes), "256M", 1ull << 20, 1ull << 50},
    {"storage", "cold_read_timeout", T_DURATION, F(storage_cold_read_timeout_ms), "10s", 100, 3600000},
    {"cdc", "buffer_size", T_SIZE, F(cdc_buffer_size), "1M", 4096, 1ull << 30},
    {"cdc", "coalesce_interval", T_DURATION, F(cdc_coalesce_ms), "50ms", 0, 10000},
    {"cdc", "coalesce_cpu", T_UINT, F(cdc_coalesce_cpu), "70", 0, 100},
    {"object_store", "endpoint", T_STR, F(obj_endpoint), "", 0, 0},
    {"object_store", "region", T_STR, F(obj_region), "", 0, 0},
    {"object_store", "access_key", T_STR, F(obj_access_key), "", 0, 0},
    {"object_store", "secret_key", T_STR, F(obj_secret_key), "", 0, 0},
    {"object_store", "virtual_host", T_BOOL, F(obj_virtual_host), "no", 0, 0},
    {"object_store", "request_timeout", T_DURATION, F(obj_request_timeout_ms), "30s", 100, 3600000},
    {"object_store", "connect_timeout", T_DURATION, F(obj_connect_timeout_ms), "5s", 100, 600000},
    {"object_store", "retries", T_UINT, F(obj_retries), "4", 0, 100},
    {"object_store", "max_requests", T_UINT, F(obj_max_requests), "16", 1, 1024},
    {"object_store", "chunk_size", T_SIZE, F(obj_chunk_size), "2M", 65536, 1ull << 30},
    {"object_store", "upload_interval", T_DURATION, F(obj_upload_interval_ms), "1s", 10, 3600000},
    {"cluster", "node_id", T_STR, F(cluster_node_id), "", 0, 0},
    {"cluster", "peers", T_LIST, F(cluster_peers), "", 0, 0},
    {"cluster", "secret_file", T_STR, F(cluster_secret_file), "", 0, 0},
    {"cluster", "replicas", T_UINT, F(cluster_replicas), "1", 1, DSQ_NODES_MAX},
    {"cluster", "commit_ack", T_STR, F(cluster_commit_ack), "quorum", 0, 0},
    {"cluster", "commit_timeout", T_DURATION, F(cluster_commit_timeout_ms), "10s", 100, 3600000},
    {"cluster", "promote_timeout", T_DURATION, F(cluster_promote_timeout_ms), "10s", 100, 3600000},
    {"cluster", "heartbeat_interval", T_DURATION, F(cluster_heartbeat_ms), "250ms", 10, 60000},
    {"cluster", "peer_timeout", T_DURATION, F(cluster_peer_timeout_ms), "3s", 100, 600000},
    {"cluster", "tls", T_BOOL, F(cluster_tls), "no", 0, 0},
    {"cluster", "tls_cert", T_STR, F(cluster_tls_cert), "", 0, 0},
    {"cluster", "tls_key", T_STR, F(cluster_tls_key), "", 0, 0},
    {"cluster", "tls_ca", T_STR, F(cluster_tls_ca), "", 0, 0},
    {"cluster", "forward_listen", T_STR, F(cluster_forward_listen), "", 0, 0},
    {"cluster", "advertise", T_STR, F(cluster_advertise), "", 0, 0},
    {"cluster", "etcd", T_STR, F(cluster_etcd), "", 0, 0},
    {"cluster", "etcd_prefix", T_STR, F(cluster_etcd_prefix), "/dosqld/", 0, 0},
    {"cluster", "node_ttl", T_DURATION, F(cluster_node_ttl_ms), "3s", 2000, 3600000},
    {"cluster", "node_dead_after", T_DURATION, F(cluster_node_dead_after_ms), "5m", 0, 604800000},
    {"cluster", "etcd_user", T_STR, F(cluster_etcd_user), "", 0, 0},
    {"cluster", "etcd_password_file", T_STR, F(cluster_etcd_password_file), "", 0, 0},
    {"cluster", "etcd_ca", T_STR, F(cluster_etcd_ca), "", 0, 0},
    {"cluster", "etcd_cert", T_STR, F(cluster_etcd_cert), "", 0, 0},
    {"cluster", "etcd_key", T_STR, F(cluster_etcd_key), "", 0, 0},
    {"sharding", "vschema", T_STR, F(sharding_vschema), "", 0, 0},
    {"lake", "databases", T_LIST, F(lake_databases), "", 0, 0},
    {"lake", "flush_interval", T_DURATION, F(lake_flush_interval_ms), "60s", 100, 86400000},
    {"lake", "flush_bytes", T_SIZE, F(lake_flush_bytes), "64M", 65536, 1ull << 32},
    {"lake", "file_target_size", T_SIZE, F(lake_file_target_size), "128M", 65536, 1ull << 32},
    {"lake", "partitioning", T_STR, F(lake_partitioning), "day", 0, 0},
    {"lake", "table_partitioning", T_LINES, F(lake_table_partitioning), "", 0, 0},
    {"lake", "current_state", T_BOOL, F(lake_current_state), "yes", 0, 0},
    {"lake", "current_state_interval", T_DURATION, F(lake_current_state_interval_ms), "10m", 0, 86400000},
    {"lake", "maintenance_interval", T_DURATION, F(lake_maintenance_interval_ms), "1h", 0, 7 * 86400000ull},
    {"lake", "snapshot_retention", T_DURATION, F(lake_snapshot_retention_ms), "7d", 0, 3650 * 86400000ull},
    {"lake", "orphan_age", T_DURATION, F(lake_orphan_age_ms), "1d", 60000, 3650 * 86400000ull},
    {"auth", "token", T_LINES, F(tokens), "", 0, 0},
    {"auth", "tokens_file", T_STR, F(tokens_file), "", 0, 0},
    {"auth", "allow_unauthenticated", T_BOOL, F(allow_unauthenticated), "no", 0, 0},
    {"log", "level", T_LOGLEVEL, F(log_level), "info", 0, 0},
};
#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= sizeof(((dsq_config *)0)->set_by), "set_by too small");

uint64_t dsq_config_fds_needed(const dsq_config *cfg)
{
    return cfg->max_connections + cfg->engine_max_open_actors * (cfg->storage_max_open_files + 4) +
           cfg->obj_max_requests + 128;
}

/* ---- lists ---------------------------------------------------------- */

static void strlist_clear(dsq_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    free(l->lines);
    l->items = NULL;
    l->lines = NULL;
    l->n = 0;
}

static int strlist_add(dsq_strlist *l, const char *s, size_t len, int line)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (items == NULL)
        return -1;
    l->items = items;
    int *lines = realloc(l->lines, (l->n + 1) * sizeof *lines);
    if (lines == NULL)
        return -1;
    l->lines = lines;
    if ((items[l->n] = strndup(s, len)) == NULL)
        return -1;
    lines[l->n] = line;
    l->n++;
    return 0;
}

/* ---- one value -------------------------------------------------------- */

static const key_def *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static const char *type_hint(enum key_type t)
{
    switch (t) {
    case T_SIZE: return "a size such as 4096, 64K, 16M or 1G";
    case T_DURATION: return "a duration such as 500ms, 10s, 5m, 2h or 1d";
    case T_UINT: return "a whole number";
    case T_INT: return "a whole number, maybe negative";
    case T_BOOL: return "yes or no";
    case T_LOGLEVEL: return "debug, info, warn or error";
    default: return "text";
    }
}

/* Set key `k` from text `v` on behalf of layer `by`. On error, writes the
 * reason (without location) to `why`. */
/* String keys that take one of a few words. */
static const struct {
    const char *section, *name, *words; /* words: "a|b|c" */
} key_words[] = {
    {"storage", "sync", "full|normal|off"},
    {"storage", "sync_to_object_store", "no|commit"},
    {"cluster", "commit_ack", "quorum|all|local"},
    {"lake", "partitioning", "day|database|day,database|none"},
};

static const char *words_of(const key_def *k)
{
    for (size_t i = 0; i < sizeof key_words / sizeof key_words[0]; i++)
        if (strcmp(key_words[i].section, k->section) == 0 && strcmp(key_words[i].name, k->name) == 0)
            return key_words[i].words;
    return NULL;
}

/* Whether v is one of "a|b|c". */
static bool one_of(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p += len + (bar != NULL);
    }
    return false;
}

static int set_value(dsq_config *cfg, const key_def *k, const char *v, int by, int line,
                     char *why, size_t whylen)
{
    void *field = (char *)cfg + k->offset;
    size_t idx = (size_t)(k - keys);
    uint64_t n = 0;
    bool b;
    int rv = 0;

    switch (k->type) {
    case T_STR: {
        char **sp = field;
        char *copy = NULL;
        const char *words = words_of(k);
        if (words != NULL && !one_of(words, v)) {
            snprintf(why, whylen, "%s.%s must be one of %s, not '%.100s'", k->section, k->name, words, v);
            return -1;
        }
        if (*v != '\0' && (copy = strdup(v)) == NULL) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        free(*sp);
        *sp = copy;
        break;
    }
    case T_LIST:
    case T_LINES: {
        dsq_strlist *l = field;
        if (cfg->set_by[idx] != by)
            strlist_clear(l);
        if (k->type == T_LINES) {
            if (*v != '\0' && strlist_add(l, v, strlen(v), line) != 0)
                rv = -1;
        } else {
            const char *p = v;
            while (*p) {
                while (*p == ' ' || *p == ',')
                    p++;
                const char *e = p;
                while (*e && *e != ',' && *e != ' ')
                    e++;
                if (e > p && strlist_add(l, p, (size_t)(e - p), line) != 0) {
                    rv = -1;
                    break;
                }
                p = e;
            }
        }
        if (rv != 0) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        break;
    }
    case T_SIZE:
    case T_DURATION:
    case T_UINT:
        if (k->type == T_SIZE)
            rv = dsq_parse_size(v, &n);
        else if (k->type == T_DURATION)
            rv = dsq_parse_duration_ms(v, &n);
        else
            rv = dsq_parse_u64(v, &n);
        if (rv != 0) {
            snprintf(why, whylen, "%s.%s: '%s' is not %s", k->section, k->name, v,
                     type_hint(k->type));
            return -1;
        }
        if (n < k->min || n > k->max) {
            snprintf(why, whylen, "%s.%s: '%s' is out of range", k->section,
                     k->name, v);
            return -1;
        }
        *(uint64_t *)field = n;
        break;
    case T_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0') {
            snprintf(why, whylen, "%s.%s: '%s' is not %s", k->section, k->name, v,
                     type_hint(k->type));
            return -1;
        }
        if (x < (int64_t)k->min || x > (int64_t)k->max || x == 0) {
            snprintf(why, whylen, "%s.%s: '%s' is out of range (%lld to %lld, not 0)", k->section,
                     k->name, v, (long long)(int64_t)k->min, (long long)(int64_t)k->max);
            return -1;
        }
        *(int64_t *)field = x;
        break;
    }
    case T_BOOL:
        if (dsq_parse_bool(v, &b) != 0) {
            snprintf(why, whylen, "%s.%s: '%s' is not %s", k->section, k->name, v,
                     type_hint(k->type));
            return -1;
        }
        *(bool *)field = b;
        break;
    case T_LOGLEVEL: {
        int lv = dsq_log_level_parse(v);
        if (lv < 0) {
            snprintf(why, whylen, "%s.%s: '%s' is not %s", k->section, k->name, v,
                     type_hint(k->type));
            return -1;
        }
        *(int *)field = lv;
        break;
    }
    }
    cfg->set_by[idx] = (unsigned char)by;
    return 0;
}

void dsq_config_init(dsq_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char why[256];
    for (size_t i = 0; i < NKEYS; i++) {
        int rv = set_value(cfg, &keys[i], keys[i].dflt, BY_DEFAULT, 0, why, sizeof why);
        (void)rv; /* the defaults are valid: test_config checks it */
    }
}

void dsq_config_free(dsq_config *cfg)
{
    if (cfg->cluster_etcd_password != NULL) {
        explicit_bzero(cfg->cluster_etcd_password, strlen(cfg->cluster_etcd_password));
        free(cfg->cluster_etcd_password);
        cfg->cluster_etcd_password = NULL;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        void *field = (char *)cfg + keys[i].offset;
        if (keys[i].type == T_STR) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (keys[i].type == T_LIST || keys[i].type == T_LINES) {
            strlist_clear(field);
        }
    }
    free(cfg->path);
    cfg->path = NULL;
}

/* ---- the INI reader ----------------------------------------------------- */

typedef struct ini_state {
    dsq_config *cfg;
    FILE *fp;
    const char *path;
    int line;      /* number of the line inih is looking at */
    int errors;    /* problems found */
    int last_err;  /* line of the last problem we reported */
    dsq_buf *errs;
    char bad_section[64]; /* the unknown section being read (reported at its line), or "" */
} ini_state;

static void ini_error(ini_state *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ini_error(ini_state *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dsq_buf_printf(st->errs, "%s:%d: ", st->path, st->line);
    dsq_buf_vprintf(st->errs, fmt, ap);
    dsq_buf_puts(st->errs, "\n");
    va_end(ap);
    st->errors++;
    st->last_err = st->line;
}

/* fgets with a line counter. A line longer than inih's buffer is an error;
 * its text is skipped so that it cannot be misread as two lines. */
static char *ini_reader_fn(char *str, int num, void *stream)
{
    ini_state *st = stream;
    if (fgets(str, num, st->fp) == NULL)
        return NULL;
    st->line++;
    size_t len = strlen(str);
    if (len > 0 && str[len - 1] != '\n' && !feof(st->fp)) {
        ini_error(st, "line longer than %d bytes", num - 2);
        int c;
        while ((c = fgetc(st->fp)) != EOF && c != '\n')
            ;
        str[0] = '\0';
    }
    /* A section header: an unknown one is reported here, at its own line,
     * whether or not keys follow (inih tells us only about keys). */
    const char *p = str;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *close = *p == '[' ? strchr(p, ']') : NULL;
    if (close != NULL) {
        char name[64];
        size_t n = (size_t)(close - p - 1);
        snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), p + 1);
        bool known = false;
        for (size_t i = 0; i < NKEYS && !known; i++)
            known = strcmp(keys[i].section, name) == 0;
        st->bad_section[0] = '\0';
        if (!known) {
            ini_error(st, "unknown section [%s]", name);
            snprintf(st->bad_section, sizeof st->bad_section, "%s", name);
        }
    }
    return str;
}

static int ini_handler_fn(void *user, const char *section, const char *name,
                          const char *value)
{
    ini_state *st = user;
    if (*section == '\0') {
        ini_error(st, "key '%s' outside a section (start with e.g. [server])", name);
        return 1; /* reported; keep inih's own error count out of it */
    }
    if (st->bad_section[0] != '\0' && strcmp(section, st->bad_section) == 0)
        return 1; /* reported at the section's line */
    const key_def *k = find_key(section, name);
    if (k == NULL) {
        bool known_section = false;
        for (size_t i = 0; i < NKEYS; i++)
            known_section |= strcmp(keys[i].section, section) == 0;
        if (known_section)
            ini_error(st, "unknown key '%s' in section [%s]", name, section);
        else
            ini_error(st, "unknown section [%s]", section);
        return 1;
    }
    char why[512];
    if (set_value(st->cfg, k, value, BY_FILE, st->line, why, sizeof why) != 0)
        ini_error(st, "%s", why);
    return 1;
}

int dsq_config_load_file(dsq_config *cfg, const char *path, dsq_buf *errs)
{
    ini_state st = {.cfg = cfg, .path = path, .errs = errs};
    st.fp = fopen(path, "r");
    if (st.fp == NULL) {
        dsq_buf_printf(errs, "%s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    free(cfg->path);
    cfg->path = strdup(path);
    int rv = ini_parse_stream(ini_reader_fn, &st, ini_handler_fn, &st);
    fclose(st.fp);
    if (rv > 0 && rv != st.last_err) {
        /* inih found a line that is not a section, a key or a comment; it
         * reports only the first such line. */
        dsq_buf_printf(errs, "%s:%d: syntax error (expected [section] or key = value)\n",
                       path, rv);
        st.errors++;
    } else if (rv < 0) {
        dsq_buf_printf(errs, "%s: cannot parse (error %d)\n", path, rv);
        st.errors++;
    }
    return st.errors;
}

int dsq_config_set_flag(dsq_config *cfg, const char *key, const char *value,
                        dsq_buf *errs)
{
    const key_def *k = NULL;
    const char *dot = strchr(key, '.');
    if (dot != NULL) {
        char section[32];
        size_t sl = (size_t)(dot - key);
        if (sl < sizeof section) {
            memcpy(section, key, sl);
            section[sl] = '\0';
            k = find_key(section, dot + 1);
        }
    } else {
        for (size_t i = 0; i < NKEYS; i++) {
            if (strcmp(keys[i].name, key) == 0) {
                if (k != NULL) {
                    dsq_buf_printf(errs, "key '%s' is ambiguous; say section.%s\n", key, key);
                    return -1;
                }
                k = &keys[i];
            }
        }
    }
    if (k == NULL) {
        dsq_buf_printf(errs, "unknown key '%s'\n", key);
        return -1;
    }
    char why[512];
    if (set_value(cfg, k, value, BY_FLAG, 0, why, sizeof why) != 0) {
        dsq_buf_printf(errs, "%s\n", why);
        return -1;
    }
    return 0;
}

/* ---- checks ------------------------------------------------------------- */

/* [cluster] tls: on, it needs its three files; off, none of them is set
 * (a file given with tls = no would leave the links plain while the
 * configuration looks encrypted), nor forward_listen. The number of
 * problems. */
static int cluster_tls_finish(const dsq_config *cfg, const char *where, dsq_buf *errs)
{
    int problems = 0;
    static const char *const names[] = {"tls_cert", "tls_key", "tls_ca"};
    const char *const values[] = {cfg->cluster_tls_cert, cfg->cluster_tls_key, cfg->cluster_tls_ca};
    static const char *const what[] = {"this node's certificate chain, PEM", "its private key, PEM",
                                       "the CA certificates every node's certificate must chain to, PEM"};
    for (size_t i = 0; i < 3; i++) {
        if (cfg->cluster_tls && values[i] == NULL) {
            dsq_buf_printf(errs, "%s: cluster.tls = yes needs cluster.%s (%s)\n", where, names[i], what[i]);
            problems++;
        } else if (!cfg->cluster_tls && values[i] != NULL) {
            dsq_buf_printf(errs, "%s: cluster.%s is set but cluster.tls = no: the links would not use it "
                                 "(set cluster.tls = yes, or remove it)\n",
                           where, names[i]);
            problems++;
        }
    }
    struct sockaddr_storage ss;
    if (cfg->cluster_forward_listen != NULL && !cfg->cluster_tls) {
        dsq_buf_printf(errs, "%s: cluster.forward_listen is set but cluster.tls = no: without TLS the nodes pass "
                             "connections on to each other's client listener (set cluster.tls = yes, or remove it)\n",
                       where);
        problems++;
    } else if (cfg->cluster_forward_listen != NULL && dsq_parse_addr(cfg->cluster_forward_listen, &ss) != 0) {
        dsq_buf_printf(errs, "%s: cluster.forward_listen: '%s' is not HOST:PORT (an IP address or localhost, and a "
                             "port)\n",
                       where, cfg->cluster_forward_listen);
        problems++;
    }
    if (cfg->cluster_advertise != NULL && cfg->cluster_etcd == NULL) {
        dsq_buf_printf(errs, "%s: cluster.advertise is set without cluster.etcd (the node list in peers says where "
                             "each node is)\n",
                       where);
        problems++;
    } else if (cfg->cluster_advertise != NULL && dsq_parse_addr(cfg->cluster_advertise, &ss) != 0) {
        dsq_buf_printf(errs, "%s: cluster.advertise: '%s' is not HOST:PORT (an IP address or localhost, and a port)\n",
                       where, cfg->cluster_advertise);
        problems++;
    }
    return problems;
}

#define ETCD_PASSWORD_MAX 1024 /* bytes of cluster.etcd_password_file's first line, at most */

/* The etcd user's password: the first line of the file at path, without
 * its line ending ("\n" or "\r\n"; other white space is the password's),
 * into *out (malloc'd; whoever frees it wipes it first). The file is held
 * to dsq_cluster_read_secret's checks for the cluster's secret: a regular
 * file, not readable by every user. The line must not be empty, and must
 * be UTF-8 without NUL (it travels in JSON). No message quotes the file's
 * content. 0, or -1 with the reason in err. */
static int read_password_file(const char *path, char **out, char *err, size_t errlen)
{
    int fd = dsq_open_secret_file(path, "etcd's password", err, errlen);
    if (fd < 0)
        return -1;
    char buf[ETCD_PASSWORD_MAX + 1]; /* one byte more: a line that fills it is too long */
    size_t n = 0;
    int rc = -1;
    while (n < sizeof buf && memchr(buf, '\n', n) == NULL) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    const char *nl = memchr(buf, '\n', n);
    size_t len = nl != NULL ? (size_t)(nl - buf) : n;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    if (len == 0)
        snprintf(err, errlen, "%.300s: the first line (the password) is empty", path);
    else if (len > ETCD_PASSWORD_MAX)
        snprintf(err, errlen, "%.300s: the first line (the password) is longer than %d bytes", path,
                 ETCD_PASSWORD_MAX);
    else if (memchr(buf, '\0', len) != NULL || !dsq_utf8_valid((const uint8_t *)buf, len))
        snprintf(err, errlen, "%.300s: the first line (the password) is not UTF-8 text", path);
    else if ((*out = malloc(len + 1)) == NULL)
        snprintf(err, errlen, "out of memory");
    else {
        memcpy(*out, buf, len);
        (*out)[len] = '\0';
        rc = 0;
    }
out:
    explicit_bzero(buf, sizeof buf);
    close(fd);
    return rc;
}

/* A file that is read later (etcd's TLS files, each time dosqld connects
 * to etcd) is there and readable now, so that a wrong path stops the
 * start rather than every connection. 0, or -1 with the reason. */
static int check_readable(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* (as read_password_file) */
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %.300s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "%.300s is not a regular file", path);
    close(fd);
    return rc;
}

/* [cluster] etcd_user, etcd_password_file, etcd_ca, etcd_cert, etcd_key:
 * how this node gets into etcd. None of them means anything without
 * etcd. The user needs its password's file, and the file the user. The
 * TLS files need an https:// endpoint (with http:// alone they would go
 * unused while the configuration looks encrypted); cert and key go
 * together. Every file is checked now, and the password read into
 * cfg->cluster_etcd_password: its file may be readable only at start
 * (before privileges are dropped, or a secret mounted for the start). The
 * number of problems. */
static int cluster_etcd_access_finish(dsq_config *cfg, bool https, const char *where, dsq_buf *errs)
{
    static const char *const names[] = {"etcd_user", "etcd_password_file", "etcd_ca", "etcd_cert", "etcd_key"};
    const char *const values[] = {cfg->cluster_etcd_user, cfg->cluster_etcd_password_file, cfg->cluster_etcd_ca,
                                  cfg->cluster_etcd_cert, cfg->cluster_etcd_key};
    int problems = 0;
    char why[512];
    if (cfg->cluster_etcd == NULL) {
        for (size_t i = 0; i < 5; i++)
            if (values[i] != NULL) {
                dsq_buf_printf(errs, "%s: cluster.%s is set but cluster.etcd is not (set etcd, or remove it)\n",
                               where, names[i]);
                problems++;
            }
        return problems;
    }
    if (cfg->cluster_etcd_user != NULL && cfg->cluster_etcd_password_file == NULL) {
        dsq_buf_printf(errs, "%s: cluster.etcd_user needs cluster.etcd_password_file (the file whose first line "
                             "is its password)\n",
                       where);
        problems++;
    } else if (cfg->cluster_etcd_user == NULL && cfg->cluster_etcd_password_file != NULL) {
        dsq_buf_printf(errs, "%s: cluster.etcd_password_file is set but cluster.etcd_user is not (whose password "
                             "is it?)\n",
                       where);
        problems++;
    } else if (cfg->cluster_etcd_user != NULL) {
        if (cfg->cluster_etcd_password != NULL) { /* (finished twice: read it again) */
            explicit_bzero(cfg->cluster_etcd_password, strlen(cfg->cluster_etcd_password));
            free(cfg->cluster_etcd_password);
            cfg->cluster_etcd_password = NULL;
        }
        if (read_password_file(cfg->cluster_etcd_password_file, &cfg->cluster_etcd_password, why, sizeof why) != 0) {
            dsq_buf_printf(errs, "%s: cluster.etcd_password_file: %s\n", where, why);
            problems++;
        }
    }
    if ((cfg->cluster_etcd_cert == NULL) != (cfg->cluster_etcd_key == NULL)) {
        dsq_buf_printf(errs, "%s: cluster.etcd_cert and cluster.etcd_key go together (a client certificate and "
                             "its private key)\n",
                       where);
        problems++;
    }
    for (size_t i = 2; i < 5; i++) {
        if (values[i] == NULL)
            continue;
        if (!https) {
            dsq_buf_printf(errs, "%s: cluster.%s is set but no cluster.etcd endpoint is https:// (over http:// it "
                                 "would not be used)\n",
                           where, names[i]);
            problems++;
        } else if (check_readable(values[i], why, sizeof why) != 0) {
            dsq_buf_printf(errs, "%s: cluster.%s: %s\n", where, names[i], why);
            problems++;
        }
    }
    return problems;
}

/* [cluster] etcd: every endpoint is an http:// or https:// URL, the
 * prefix is not empty, node_ttl is whole seconds; and with etcd the
 * other nodes come from etcd, so `peers` names this node alone (its
 * address for the links), and the links need the shared secret. Then
 * the keys of etcd's auth and TLS (above). The number of problems. */
static int cluster_etcd_finish(dsq_config *cfg, const char *where, dsq_buf *errs)
{
    int problems = 0;
    if (cfg->cluster_node_ttl_ms % 1000 != 0) {
        dsq_buf_printf(errs, "%s: cluster.node_ttl must be whole seconds (etcd's leases are)\n", where);
        problems++;
    }
    if (cfg->cluster_etcd == NULL)
        return problems + cluster_etcd_access_finish(cfg, false, where, errs);
    const char *p = cfg->cluster_etcd;
    bool any_https = false;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, ",");
        size_t end = len;
        while (end > 0 && (p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        bool http = end > 7 && strncmp(p, "http://", 7) == 0, https = end > 8 && strncmp(p, "https://", 8) == 0;
        if (!http && !https) {
            dsq_buf_printf(errs, "%s: cluster.etcd: '%.*s' is not an http:// or https:// URL\n", where, (int)end, p);
            problems++;
        }
        any_https = any_https || https;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    if (cfg->cluster_etcd_prefix == NULL) {
        dsq_buf_printf(errs, "%s: cluster.etcd_prefix must not be empty\n", where);
        problems++;
    }
    if (cfg->cluster_peers.n != 1) {
        dsq_buf_printf(errs, "%s: cluster.etcd needs cluster.peers to name this node alone (its address for the "
                             "other nodes; they are found in etcd)\n",
                       where);
        problems++;
    }
    if (cfg->cluster_secret_file == NULL) {
        dsq_buf_printf(errs, "%s: cluster.etcd needs cluster.secret_file (the nodes authenticate each other "
                             "with the secret in it)\n",
                       where);
        problems++;
    }
    return problems + cluster_etcd_access_finish(cfg, any_https, where, errs);
}

/* [cluster]: every peer is ID@HOST:PORT, ids and addresses appear once,
 * this node is among them, and there are nodes enough for the copies.
 * The number of problems. */
static int cluster_finish(dsq_config *cfg, const char *where, dsq_buf *errs)
{
    int problems = cluster_tls_finish(cfg, where, errs);
    const dsq_strlist *l = &cfg->cluster_peers;
    problems += cluster_etcd_finish(cfg, where, errs);
    if (l->n == 0) {
        if (cfg->cluster_replicas > 1) {
            dsq_buf_printf(errs, "%s: cluster.replicas = %llu needs cluster.peers (the nodes that hold the copies)\n",
                           where, (unsigned long long)cfg->cluster_replicas);
            problems++;
        }
        return problems;
    }
    if (l->n > DSQ_NODES_MAX) {
        dsq_buf_printf(errs, "%s: cluster.peers names %zu nodes; at most %d\n", where, l->n, DSQ_NODES_MAX);
        return problems + 1;
    }
    dsq_node nodes[DSQ_NODES_MAX];
    bool self = false;
    for (size_t i = 0; i < l->n; i++) {
        char why[256];
        if (dsq_node_parse(l->items[i], &nodes[i], why, sizeof why) != 0) {
            dsq_buf_printf(errs, "%s: cluster.peers: %s\n", where, why);
            problems++;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(nodes[i].id, nodes[j].id) == 0) {
                dsq_buf_printf(errs, "%s: cluster.peers names node %s twice\n", where, nodes[i].id);
                problems++;
            } else if (strcmp(nodes[i].addr_text, nodes[j].addr_text) == 0) {
                dsq_buf_printf(errs, "%s: cluster.peers: nodes %s and %s have the same address %s\n", where,
                               nodes[j].id, nodes[i].id, nodes[i].addr_text);
                problems++;
            }
        }
        if (cfg->cluster_node_id != NULL && strcmp(nodes[i].id, cfg->cluster_node_id) == 0)
            self = true;
    }
    if (problems > 0)
        return problems;
    if (cfg->cluster_node_id == NULL) {
        dsq_buf_printf(errs, "%s: cluster.peers needs cluster.node_id (which of them this node is)\n", where);
        problems++;
    } else if (!self) {
        dsq_buf_printf(errs, "%s: cluster.node_id %s is not in cluster.peers\n", where, cfg->cluster_node_id);
        problems++;
    }
    /* (with etcd, peers names this node alone: the copies are placed on the
     * nodes found there) */
    if (cfg->cluster_replicas > l->n && cfg->cluster_etcd == NULL) {
        dsq_buf_printf(errs, "%s: cluster.replicas = %llu but cluster.peers names %zu nodes\n", where,
                       (unsigned long long)cfg->cluster_replicas, l->n);
        problems++;
    }
    if (cfg->cluster_etcd != NULL && cfg->cluster_replicas > 9) {
        dsq_buf_printf(errs, "%s: cluster.replicas = %llu: with cluster.etcd a database has at most 9 copies\n",
                       where, (unsigned long long)cfg->cluster_replicas);
        problems++;
    }
    if (cfg->storage_sync_to_objects != NULL && strcmp(cfg->storage_sync_to_objects, "commit") == 0) {
        dsq_buf_printf(errs, "%s: storage.sync_to_object_store = commit does not go with cluster.peers (the other "
                             "copies hold each commit instead)\n",
                       where);
        problems++;
    }
    if (cfg->cluster_peer_timeout_ms <= cfg->cluster_heartbeat_ms) {
        dsq_buf_printf(errs, "%s: cluster.peer_timeout must be longer than cluster.heartbeat_interval\n", where);
        problems++;
    }
    if (l->n > 1 && cfg->cluster_secret_file == NULL) {
        dsq_buf_printf(errs, "%s: cluster.peers needs cluster.secret_file (the nodes authenticate each other "
                             "with the secret in it)\n",
                       where);
        problems++;
    }
    return problems;
}

int dsq_config_finish(dsq_config *cfg, dsq_buf *errs)
{
    int problems = 0;
    struct sockaddr_storage ss;
    const char *where = cfg->path ? cfg->path : "config";

    if (cfg->listen.n == 0 && cfg->tls_listen.n == 0) {
        dsq_buf_printf(errs, "%s: no listen or tls_listen address\n", where);
        problems++;
    }
    for (int tls = 0; tls < 2; tls++) {
        dsq_strlist *l = tls ? &cfg->tls_listen : &cfg->listen;
        for (size_t i = 0; i < l->n; i++) {
            if (dsq_parse_addr(l->items[i], &ss) != 0) {
                dsq_buf_printf(errs, "%s: server.%s: '%s' is not HOST:PORT "
                               "(an IP address or localhost, and a port)\n",
                               where, tls ? "tls_listen" : "listen", l->items[i]);
                problems++;
            }
        }
    }
    for (size_t i = 0; i < cfg->lake_table_partitioning.n; i++) {
        const char *item = cfg->lake_table_partitioning.items[i], *sp = strchr(item, ' ');
        if (sp == NULL || sp == item || !one_of("day|database|day,database|none", sp + 1)) {
            dsq_buf_printf(errs, "%s: lake.table_partitioning: '%s' is not \"DATABASE.TABLE SPEC\" (a glob, then "
                           "day, database, day,database or none)\n", where, item);
            problems++;
        }
    }
    if (cfg->tls_listen.n > 0 && (cfg->tls_cert == NULL || cfg->tls_key == NULL)) {
        dsq_buf_printf(errs, "%s: server.tls_listen needs server.tls_cert and server.tls_key\n",
                       where);
        problems++;
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        dsq_buf_printf(errs, "%s: server.tls_cert and server.tls_key go together\n", where);
        problems++;
    }
    if (cfg->engine_txn_timeout_ms > cfg->engine_max_txn_timeout_ms) {
        dsq_buf_printf(errs, "%s: engine.transaction_timeout must not be above engine.max_transaction_timeout\n",
                       where);
        problems++;
    }
    if (cfg->storage_sync == NULL || (strcmp(cfg->storage_sync, "full") != 0 &&
                                      strcmp(cfg->storage_sync, "normal") != 0 &&
                                      strcmp(cfg->storage_sync, "off") != 0)) {
        dsq_buf_printf(errs, "%s: storage.sync must be full, normal or off\n", where);
        problems++;
    }
    bool tails = cfg->storage_sync_to_objects != NULL && strcmp(cfg->storage_sync_to_objects, "commit") == 0;
    if (cfg->storage_sync_to_objects == NULL || (!tails && strcmp(cfg->storage_sync_to_objects, "no") != 0)) {
        dsq_buf_printf(errs, "%s: storage.sync_to_object_store must be no or commit\n", where);
        problems++;
    } else if (tails && cfg->storage_sync != NULL && strcmp(cfg->storage_sync, "full") != 0) {
        dsq_buf_printf(errs, "%s: storage.sync_to_object_store = commit needs storage.sync = full\n", where);
        problems++;
    }
    if ((cfg->storage_page_size & (cfg->storage_page_size - 1)) != 0) {
        dsq_buf_printf(errs, "%s: storage.page_size must be a power of two from 512 to 65536\n",
                       where);
        problems++;
    }
    if (cfg->data_dir == NULL) {
        dsq_buf_printf(errs, "%s: storage.data_dir must not be empty\n", where);
        problems++;
    } else if (cfg->object_store == NULL) {
        dsq_buf b = DSQ_BUF_INIT;
        if (dsq_buf_printf(&b, "file://%s/objects", cfg->data_dir) == 0)
            cfg->object_store = dsq_buf_steal(&b, NULL);
    }
    if (cfg->object_store != NULL && strncmp(cfg->object_store, "file://", 7) != 0 &&
        strncmp(cfg->object_store, "s3://", 5) != 0 && strcmp(cfg->object_store, "none") != 0) {
        dsq_buf_printf(errs, "%s: storage.object_store: '%s' is not a file:// or s3:// URL, or none "
                       "(an S3-compatible service's address goes in object_store.endpoint)\n",
                       where, cfg->object_store);
        problems++;
    }
    problems += cluster_finish(cfg, where, errs);
    if (cfg->object_store != NULL && strcmp(cfg->object_store, "none") == 0 &&
        cfg->storage_sync_to_objects != NULL && strcmp(cfg->storage_sync_to_objects, "commit") == 0) {
        dsq_buf_printf(errs, "%s: storage.sync_to_object_store = commit needs an object store\n", where);
        problems++;
    }
    return problems;
}

bool dsq_config_key_at(size_t i, const char **section, const char **name,
                       const char **default_value)
{
    if (i >= NKEYS)
        return false;
    *section = keys[i].section;
    *name = keys[i].name;
    *default_value = keys[i].dflt;
    return true;
}

/* ---- the engine's settings ------------------------------------------------ */

void dsq_config_engine(const dsq_config *cfg, dsq_engine_cfg *ec)
{
    *ec = (dsq_engine_cfg){
        .data_dir = cfg->data_dir,
        .workers = (unsigned)cfg->engine_workers,
        .idle_timeout_ms = cfg->engine_idle_timeout_ms,
        .max_open_actors = (unsigned)cfg->engine_max_open_actors,
        .max_queue = cfg->engine_max_queue,
        .batch_per_turn = (unsigned)cfg->engine_batch_per_turn,
        .query_timeout_ms = cfg->engine_query_timeout_ms,
        .max_result_size = cfg->engine_max_result_bytes,
        .txn_timeout_ms = cfg->engine_txn_timeout_ms,
        .max_txn_timeout_ms = cfg->engine_max_txn_timeout_ms,
        .write_wait_ms = cfg->engine_write_wait_ms,
        .max_snapshots = cfg->engine_max_snapshots,
        .max_sql_length = cfg->engine_max_sql_length,
        .max_value_size = cfg->engine_max_value_size,
        .max_columns = (int)cfg->engine_max_columns,
        .max_expr_depth = (int)cfg->engine_max_expr_depth,
        .max_params = (int)cfg->engine_max_params,
        .cache_pages = (int)(cfg->engine_cache_size / cfg->storage_page_size),
        .page_size = (uint32_t)cfg->storage_page_size,
        .segment_bytes = cfg->storage_segment_size,
        .zstd_level = (int)cfg->storage_compression_level,
        .max_txn_bytes = cfg->storage_max_txn_size,
        .sync = strcmp(cfg->storage_sync, "off") == 0      ? DSQ_SYNC_OFF
                : strcmp(cfg->storage_sync, "normal") == 0 ? DSQ_SYNC_NORMAL
                                                            : DSQ_SYNC_FULL,
        .sync_threads = (unsigned)cfg->storage_sync_threads,
        .group_sync = cfg->storage_group_sync,
        .journal = cfg->storage_journal,
        .journal_bytes = cfg->storage_journal_size,
        .cdc_buffer_bytes = cfg->cdc_buffer_size,
        .cdc_coalesce_ms = (unsigned)cfg->cdc_coalesce_ms,
        .cdc_coalesce_cpu = (unsigned)cfg->cdc_coalesce_cpu,
        .tier_chunk_bytes = cfg->obj_chunk_size,
        .tier_interval_ms = cfg->obj_upload_interval_ms,
        .tier_drain_ms = cfg->shutdown_timeout_ms ? cfg->shutdown_timeout_ms : 1,
        .tier_commit = strcmp(cfg->storage_sync_to_objects, "commit") == 0,
        .hot_tier_max_bytes = cfg->storage_hot_max_bytes,
        .hot_tier_max_age_ms = cfg->storage_hot_max_age_ms,
        .warm_cache_bytes = cfg->storage_warm_cache_bytes,
        .cold_read_timeout_ms = cfg->storage_cold_read_timeout_ms,
        .checkpoint_bytes = cfg->storage_checkpoint_size,
        .max_open_files = (unsigned)cfg->storage_max_open_files,
        .retention_ms = cfg->storage_history_retention_ms,
        .idempotency_window_ms = cfg->engine_idempotency_window_ms,
    };
}
