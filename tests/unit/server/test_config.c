/* Unit tests: server/config — defaults, the INI file, flags, checks. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "server/config.h"

static char path[64];

/* Write `text` to a temporary file; its name is left in `path`. */
static void write_conf(const char *text)
{
    strcpy(path, "/tmp/dsq-test-conf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int load(dsq_config *cfg, const char *text, dsq_buf *errs)
{
    dsq_config_init(cfg);
    write_conf(text);
    int n = dsq_config_load_file(cfg, path, errs);
    unlink(path);
    return n;
}

Test(config, defaults)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.listen.n, 1);
    cr_assert_str_eq(cfg.listen.items[0], "127.0.0.1:8787");
    cr_assert_eq(cfg.tls_listen.n, 0);
    cr_assert_str_eq(cfg.data_dir, "./data");
    cr_assert_str_eq(cfg.object_store, "file://./data/objects");
    cr_assert_null(cfg.obj_endpoint);
    cr_assert_null(cfg.obj_access_key);
    cr_assert_not(cfg.obj_virtual_host);
    cr_assert_eq(cfg.obj_request_timeout_ms, 30000);
    cr_assert_eq(cfg.obj_connect_timeout_ms, 5000);
    cr_assert_eq(cfg.obj_retries, 4);
    cr_assert_eq(cfg.obj_max_requests, 16);
    cr_assert_eq(cfg.max_body_size, 16u << 20);
    cr_assert_eq(cfg.header_timeout_ms, 10000);
    cr_assert_eq(cfg.log_level, DSQ_LOG_INFO);
    cr_assert_eq(cfg.allow_unauthenticated, false);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, fds_needed_follows_connections_databases_and_their_files)
{
    dsq_config cfg;
    dsq_config_init(&cfg);
    /* 10000 + 1000 x (16 + 4) + 16 + 128 */
    cr_assert_eq(dsq_config_fds_needed(&cfg), 30144);
    cfg.max_connections = 100;
    cfg.engine_max_open_actors = 10;
    cfg.storage_max_open_files = 2;
    cfg.obj_max_requests = 4;
    cr_assert_eq(dsq_config_fds_needed(&cfg), 100 + 10 * 6 + 4 + 128);
    dsq_config_free(&cfg);
}

Test(config, good_file)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg,
                 "; comment\n"
                 "# another\n"
                 "[server]\n"
                 "listen = 127.0.0.1:1, [::1]:2\n"
                 "listen = 0.0.0.0:3\n"
                 "max_body_size = 64K\n"
                 "header_timeout = 250ms\n"
                 "keepalive_timeout = 2m\n"
                 "[storage]\n"
                 "data_dir = /var/lib/x\n"
                 "[object_store]\n"
                 "endpoint = http://127.0.0.1:9000\n"
                 "access_key = AKIA\n"
                 "secret_key = s3cr3t\n"
                 "virtual_host = yes\n"
                 "request_timeout = 2s\n"
                 "retries = 0\n"
                 "[auth]\n"
                 "token = 0123456789abcdef read\n"
                 "token = fedcba9876543210 admin app-*\n"
                 "allow_unauthenticated = yes\n"
                 "[log]\n"
                 "level = debug\n",
                 &errs);
    cr_assert_eq(n, 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    /* The file's first listen replaces the default; the second adds. */
    cr_assert_eq(cfg.listen.n, 3);
    cr_assert_str_eq(cfg.listen.items[0], "127.0.0.1:1");
    cr_assert_str_eq(cfg.listen.items[1], "[::1]:2");
    cr_assert_str_eq(cfg.listen.items[2], "0.0.0.0:3");
    cr_assert_eq(cfg.max_body_size, 65536);
    cr_assert_eq(cfg.header_timeout_ms, 250);
    cr_assert_eq(cfg.keepalive_timeout_ms, 120000);
    cr_assert_str_eq(cfg.object_store, "file:///var/lib/x/objects");
    cr_assert_str_eq(cfg.obj_endpoint, "http://127.0.0.1:9000");
    cr_assert_str_eq(cfg.obj_access_key, "AKIA");
    cr_assert_str_eq(cfg.obj_secret_key, "s3cr3t");
    cr_assert(cfg.obj_virtual_host);
    cr_assert_eq(cfg.obj_request_timeout_ms, 2000);
    cr_assert_eq(cfg.obj_retries, 0);
    cr_assert_eq(cfg.tokens.n, 2);
    cr_assert_str_eq(cfg.tokens.items[1], "fedcba9876543210 admin app-*");
    cr_assert(cfg.allow_unauthenticated);
    cr_assert_eq(cfg.log_level, DSQ_LOG_DEBUG);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, unknown_key_names_its_line)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "[server]\nlisten = 127.0.0.1:1\n\nlsten = 1\n", &errs);
    cr_assert_eq(n, 1);
    cr_assert(strstr(errs.data, ":4: unknown key 'lsten' in section [server]") != NULL, "%s",
              errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, unknown_section_and_key_outside_section)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "early = 1\n[nope]\nx = 1\ny = 2\n", &errs);
    cr_assert_eq(n, 2, "%s", errs.data);
    cr_assert(strstr(errs.data, ":1: key 'early' outside a section") != NULL, "%s", errs.data);
    /* At the section's own line, once, whatever its keys. */
    cr_assert(strstr(errs.data, ":2: unknown section [nope]") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, unknown_section_alone_is_an_error)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "[server]\nlisten = 127.0.0.1:1\n  [bogus]  \n", &errs);
    cr_assert_eq(n, 1, "%s", errs.data);
    cr_assert(strstr(errs.data, ":3: unknown section [bogus]") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, a_word_key_names_its_line)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "[storage]\nsync = maybe\nsync_to_object_store = sometimes\n", &errs);
    cr_assert_eq(n, 2, "%s", errs.data);
    cr_assert(strstr(errs.data, ":2: storage.sync must be one of full|normal|off") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, ":3: storage.sync_to_object_store must be one of no|commit") != NULL, "%s",
              errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, bad_values_each_reported)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg,
                 "[server]\n"
                 "max_body_size = lots\n"          /* 2 */
                 "header_timeout = 10 seconds\n"   /* 3 */
                 "max_connections = 0\n"           /* 4: below the minimum */
                 "max_pipeline = 99999999999999999999999\n" /* 5: overflow */
                 "[auth]\n"
                 "allow_unauthenticated = maybe\n" /* 7 */
                 "[log]\n"
                 "level = loud\n",                 /* 9 */
                 &errs);
    cr_assert_eq(n, 6, "%s", errs.data);
    cr_assert(strstr(errs.data, ":2: server.max_body_size: 'lots' is not a size") != NULL, "%s",
              errs.data);
    cr_assert(strstr(errs.data, ":3: server.header_timeout") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, ":4: server.max_connections: '0' is out of range") != NULL, "%s",
              errs.data);
    cr_assert(strstr(errs.data, ":5: server.max_pipeline") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, ":7: auth.allow_unauthenticated: 'maybe' is not yes or no") != NULL,
              "%s", errs.data);
    cr_assert(strstr(errs.data, ":9: log.level") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, syntax_error_names_its_line)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "[server]\nlisten = 127.0.0.1:1\nthis line has no equals sign\n", &errs);
    cr_assert_eq(n, 1, "%s", errs.data);
    cr_assert(strstr(errs.data, ":3: syntax error") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, overlong_line_is_an_error)
{
    char text[1024];
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    memset(text, 'x', sizeof text);
    memcpy(text, "[auth]\ntoken = ", 15);
    memcpy(text + sizeof text - 2, "\n", 2);
    int n = load(&cfg, text, &errs);
    cr_assert_geq(n, 1, "%s", errs.data);
    cr_assert(strstr(errs.data, ":2: line longer than") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, missing_file)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_load_file(&cfg, "/nonexistent/dosqld.conf", &errs), 1);
    cr_assert(strstr(errs.data, "cannot open") != NULL);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, flags_override_file)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg, "[server]\nlisten = 127.0.0.1:1\n[log]\nlevel = error\n", &errs);
    cr_assert_eq(n, 0);
    cr_assert_eq(dsq_config_set_flag(&cfg, "server.listen", "127.0.0.1:9", &errs), 0);
    cr_assert_eq(dsq_config_set_flag(&cfg, "listen", "127.0.0.1:10", &errs), 0);
    cr_assert_eq(dsq_config_set_flag(&cfg, "log.level", "warn", &errs), 0);
    cr_assert_eq(cfg.listen.n, 2);
    cr_assert_str_eq(cfg.listen.items[0], "127.0.0.1:9");
    cr_assert_str_eq(cfg.listen.items[1], "127.0.0.1:10");
    cr_assert_eq(cfg.log_level, DSQ_LOG_WARN);
    cr_assert_eq(dsq_config_set_flag(&cfg, "server.nope", "1", &errs), -1);
    cr_assert_eq(dsq_config_set_flag(&cfg, "log.level", "shout", &errs), -1);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, finish_checks_keys_together)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    int n = load(&cfg,
                 "[server]\nlisten = nohost\ntls_listen = 127.0.0.1:0\ntls_cert = /x.pem\n"
                 "[storage]\nobject_store = ftp://x\n",
                 &errs);
    cr_assert_eq(n, 0);
    n = dsq_config_finish(&cfg, &errs);
    cr_assert_eq(n, 4, "%s", errs.data);
    cr_assert(strstr(errs.data, "'nohost' is not HOST:PORT") != NULL);
    cr_assert(strstr(errs.data, "tls_listen needs server.tls_cert and server.tls_key") != NULL);
    cr_assert(strstr(errs.data, "tls_cert and server.tls_key go together") != NULL);
    cr_assert(strstr(errs.data, "'ftp://x' is not a file://") != NULL);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

/* cluster.tls = yes needs its three files, each missing one named; the
 * files without tls = yes are refused too (the links would be plain). */
Test(config, cluster_tls_needs_its_files)
{
    static const char *const peers = "[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:7101, n2@127.0.0.1:7102\n"
                                     "secret_file = /s\n";
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char text[512];
    snprintf(text, sizeof text, "%stls = yes\ntls_cert = /n1.pem\n", peers);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert(cfg.cluster_tls);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 2, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.tls = yes needs cluster.tls_key") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.tls = yes needs cluster.tls_ca") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, "needs cluster.tls_cert") == NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%stls_ca = /ca.pem\n", peers);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.tls_ca is set but cluster.tls = no") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%stls = yes\ntls_cert = /n1.pem\ntls_key = /n1.key\ntls_ca = /ca.pem\n", peers);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_tls_ca, "/ca.pem");
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

/* cluster.forward_listen goes with tls = yes (without it the nodes pass
 * connections on to each other's client listener) and is HOST:PORT. */
Test(config, cluster_forward_listen)
{
    static const char *const peers = "[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:7101, n2@127.0.0.1:7102\n"
                                     "secret_file = /s\n";
    static const char *const tls = "tls = yes\ntls_cert = /n1.pem\ntls_key = /n1.key\ntls_ca = /ca.pem\n";
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char text[512];
    snprintf(text, sizeof text, "%sforward_listen = 127.0.0.1:7201\n", peers);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.forward_listen is set but cluster.tls = no") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%s%sforward_listen = nohost\n", peers, tls);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.forward_listen: 'nohost' is not HOST:PORT") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%s%s", peers, tls);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_null(cfg.cluster_forward_listen, "empty by default: the peers entry's host, any port");
    dsq_config_free(&cfg);

    snprintf(text, sizeof text, "%s%sforward_listen = [::]:7201\n", peers, tls);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_forward_listen, "[::]:7201");
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

/* cluster.etcd: off by default (prefix and node_ttl have their
 * defaults); its endpoints are http(s) URLs; with it, peers names this
 * node alone and secret_file is needed; node_ttl is whole seconds, at
 * least 2 s. */
Test(config, cluster_etcd)
{
    static const char *const self = "[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:7101\nsecret_file = /s\n";
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char text[512];

    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_null(cfg.cluster_etcd);
    cr_assert_str_eq(cfg.cluster_etcd_prefix, "/dosqld/");
    cr_assert_eq(cfg.cluster_node_ttl_ms, 3000);
    dsq_config_free(&cfg);

    snprintf(text, sizeof text, "%setcd = http://10.0.0.1:2379, https://10.0.0.2:2379\netcd_prefix = /c1/\n"
                                "node_ttl = 5s\n",
             self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_etcd, "http://10.0.0.1:2379, https://10.0.0.2:2379");
    cr_assert_str_eq(cfg.cluster_etcd_prefix, "/c1/");
    cr_assert_eq(cfg.cluster_node_ttl_ms, 5000);
    cr_assert_eq(cfg.cluster_node_dead_after_ms, 300000, "node_dead_after: 5m by default");
    cr_assert_null(cfg.cluster_advertise, "advertise: the peers entry's by default");
    dsq_config_free(&cfg);

    /* node_dead_after and advertise with etcd; advertise is HOST:PORT,
     * and means nothing without etcd. */
    snprintf(text, sizeof text, "%setcd = http://10.0.0.1:2379\nnode_dead_after = 0\nadvertise = 10.0.9.1:7101\n",
             self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.cluster_node_dead_after_ms, 0);
    cr_assert_str_eq(cfg.cluster_advertise, "10.0.9.1:7101");
    dsq_config_free(&cfg);
    snprintf(text, sizeof text, "%setcd = http://10.0.0.1:2379\nadvertise = nohost\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.advertise: 'nohost' is not HOST:PORT") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    snprintf(text, sizeof text, "%sadvertise = 10.0.9.1:7101\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.advertise is set without cluster.etcd") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    cr_assert_eq(load(&cfg, "[cluster]\nnode_dead_after = 2w\n", &errs), 1, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%setcd = http://10.0.0.1:2379,10.0.0.2:2379,\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 2, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd: '10.0.0.2:2379' is not an http:// or https:// URL") != NULL,
              "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd: '' is not an http:// or https:// URL") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* other nodes in peers, no secret */
    cr_assert_eq(load(&cfg, "[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:7101, n2@127.0.0.1:7102\n"
                            "etcd = http://127.0.0.1:2379\n",
                      &errs),
                 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 2, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd needs cluster.peers to name this node alone") != NULL, "%s",
              errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd needs cluster.secret_file") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* no peers at all: this node's address is missing */
    cr_assert_eq(load(&cfg, "[cluster]\nnode_id = n1\nsecret_file = /s\netcd = http://127.0.0.1:2379\n", &errs),
                 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd needs cluster.peers to name this node alone") != NULL, "%s",
              errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* peers names another node only */
    cr_assert_eq(load(&cfg, "[cluster]\nnode_id = n1\npeers = n2@127.0.0.1:7102\nsecret_file = /s\n"
                            "etcd = http://127.0.0.1:2379\n",
                      &errs),
                 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.node_id n1 is not in cluster.peers") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    snprintf(text, sizeof text, "%setcd = http://127.0.0.1:2379\netcd_prefix =\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.etcd_prefix must not be empty") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* replicas: more than peers names (the copies go on nodes found in
     * etcd), up to 9 */
    snprintf(text, sizeof text, "%setcd = http://127.0.0.1:2379\nreplicas = 3\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.cluster_replicas, 3);
    dsq_config_free(&cfg);
    snprintf(text, sizeof text, "%setcd = http://127.0.0.1:2379\nreplicas = 10\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "with cluster.etcd a database has at most 9 copies") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* node_ttl: at least 2 s, whole seconds */
    snprintf(text, sizeof text, "%snode_ttl = 1s\n", self);
    cr_assert_gt(load(&cfg, text, &errs), 0);
    cr_assert(strstr(errs.data, "node_ttl") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    snprintf(text, sizeof text, "%snode_ttl = 2500ms\n", self);
    cr_assert_eq(load(&cfg, text, &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "cluster.node_ttl must be whole seconds") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

/* A file with `text` and `mode` under a temporary name, left in p[64]. */
static void write_file(char p[64], const char *text, mode_t mode)
{
    strcpy(p, "/tmp/dsq-test-file-XXXXXX");
    int fd = mkstemp(p);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

/* `extra` after an etcd node's [cluster] keys (etcd = endpoints):
 * loaded (with no problem) and finished; the number of problems, and
 * their text in errs. */
static int etcd_finish(dsq_config *cfg, const char *endpoints, const char *extra, dsq_buf *errs)
{
    char text[1024];
    snprintf(text, sizeof text, "[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:7101\nsecret_file = /s\n"
                                "etcd = %s\n%s",
             endpoints, extra);
    cr_assert_eq(load(cfg, text, errs), 0, "%s", errs->data);
    return dsq_config_finish(cfg, errs);
}

#define HAS(errs, s) cr_assert(strstr((errs).data ? (errs).data : "", (s)) != NULL, "no '%s' in: %s", (s), (errs).data)

/* etcd_user and etcd_password_file: none by default; set, the password
 * is the file's first line (without its line ending), read at finish and
 * wiped at free. The user needs the file and the file the user; the file
 * is held to secret_file's checks; no message shows the password. */
Test(config, cluster_etcd_auth)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char pw[64], extra[512];

    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_null(cfg.cluster_etcd_user);
    cr_assert_null(cfg.cluster_etcd_password_file);
    cr_assert_null(cfg.cluster_etcd_password);
    dsq_config_free(&cfg);

    /* group may read it (as secret_file); trailing blanks are the password's */
    write_file(pw, "s3cret pw \r\nsecond line\n", 0640);
    snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_etcd_user, "dosqld");
    cr_assert_str_eq(cfg.cluster_etcd_password_file, pw);
    cr_assert_str_eq(cfg.cluster_etcd_password, "s3cret pw ");
    /* finished again (a reload does it on a new config; this must not leak) */
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_etcd_password, "s3cret pw ");
    dsq_config_free(&cfg);
    cr_assert_null(cfg.cluster_etcd_password);
    unlink(pw);

    /* no line ending at all */
    write_file(pw, "pw", 0600);
    snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 0, "%s", errs.data);
    cr_assert_str_eq(cfg.cluster_etcd_password, "pw");
    dsq_config_free(&cfg);
    unlink(pw);

    /* one without the other */
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", "etcd_user = dosqld\n", &errs), 1, "%s", errs.data);
    HAS(errs, "cluster.etcd_user needs cluster.etcd_password_file");
    cr_assert_null(cfg.cluster_etcd_password);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", "etcd_password_file = /nonexistent\n", &errs), 1,
                 "%s", errs.data);
    HAS(errs, "cluster.etcd_password_file is set but cluster.etcd_user is not");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* the file: readable by every user, missing, not a file, an empty
     * first line, not UTF-8, too long */
    write_file(pw, "topsecret\n", 0644);
    snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 1, "%s", errs.data);
    HAS(errs, "is readable by every user; chmod o-r it");
    cr_assert_null(strstr(errs.data, "topsecret"), "%s", errs.data);
    cr_assert_null(cfg.cluster_etcd_password);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    unlink(pw);

    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379",
                             "etcd_user = dosqld\netcd_password_file = /nonexistent/pw\n", &errs),
                 1, "%s", errs.data);
    HAS(errs, "cluster.etcd_password_file: cannot open /nonexistent/pw");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", "etcd_user = dosqld\netcd_password_file = /tmp\n",
                             &errs),
                 1, "%s", errs.data);
    HAS(errs, "/tmp is not a regular file");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    static const char *const bad[] = {"\nsecond\n", "\r\n", "", "ab\xff\n"};
    static const char *const why[] = {"is empty", "is empty", "is empty", "is not UTF-8 text"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(pw, bad[i], 0600);
        snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
        cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 1, "%zu: %s", i, errs.data);
        HAS(errs, why[i]);
        dsq_config_free(&cfg);
        dsq_buf_reset(&errs);
        unlink(pw);
    }
    char long_pw[1100];
    memset(long_pw, 'x', 1025);
    strcpy(long_pw + 1025, "\n");
    write_file(pw, long_pw, 0600);
    snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 1, "%s", errs.data);
    HAS(errs, "is longer than 1024 bytes");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    unlink(pw);
    long_pw[1024] = '\n'; /* 1024 bytes: the longest */
    long_pw[1025] = '\0';
    write_file(pw, long_pw, 0600);
    snprintf(extra, sizeof extra, "etcd_user = dosqld\netcd_password_file = %s\n", pw);
    cr_assert_eq(etcd_finish(&cfg, "http://127.0.0.1:2379", extra, &errs), 0, "%s", errs.data);
    cr_assert_eq(strlen(cfg.cluster_etcd_password), 1024);
    dsq_config_free(&cfg);
    unlink(pw);
    dsq_buf_free(&errs);
}

/* etcd_ca, etcd_cert and etcd_key: none by default; they need an
 * https:// endpoint (one among several is enough), cert and key go
 * together, and each file must be there. */
Test(config, cluster_etcd_tls)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    char ca[64], cert[64], key[64], extra[512];
    write_file(ca, "ca\n", 0644);
    write_file(cert, "cert\n", 0644);
    write_file(key, "key\n", 0600);

    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_null(cfg.cluster_etcd_ca);
    cr_assert_null(cfg.cluster_etcd_cert);
    cr_assert_null(cfg.cluster_etcd_key);
    dsq_config_free(&cfg);

    snprintf(extra, sizeof extra, "etcd_ca = %s\netcd_cert = %s\netcd_key = %s\n", ca, cert, key);
    cr_assert_eq(etcd_finish(&cfg, "http://10.0.0.1:2379, https://10.0.0.2:2379", extra, &errs), 0, "%s",
                 errs.data);
    cr_assert_str_eq(cfg.cluster_etcd_ca, ca);
    cr_assert_str_eq(cfg.cluster_etcd_cert, cert);
    cr_assert_str_eq(cfg.cluster_etcd_key, key);
    dsq_config_free(&cfg);

    /* the CA alone (no client certificate) */
    snprintf(extra, sizeof extra, "etcd_ca = %s\n", ca);
    cr_assert_eq(etcd_finish(&cfg, "https://10.0.0.2:2379", extra, &errs), 0, "%s", errs.data);
    dsq_config_free(&cfg);

    /* http:// endpoints only: each of the three is refused */
    snprintf(extra, sizeof extra, "etcd_ca = %s\netcd_cert = %s\netcd_key = %s\n", ca, cert, key);
    cr_assert_eq(etcd_finish(&cfg, "http://10.0.0.1:2379,http://10.0.0.2:2379", extra, &errs), 3, "%s", errs.data);
    HAS(errs, "cluster.etcd_ca is set but no cluster.etcd endpoint is https://");
    HAS(errs, "cluster.etcd_cert is set but no cluster.etcd endpoint is https://");
    HAS(errs, "cluster.etcd_key is set but no cluster.etcd endpoint is https://");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* a certificate without its key, and the other way round */
    snprintf(extra, sizeof extra, "etcd_cert = %s\n", cert);
    cr_assert_eq(etcd_finish(&cfg, "https://10.0.0.2:2379", extra, &errs), 1, "%s", errs.data);
    HAS(errs, "cluster.etcd_cert and cluster.etcd_key go together");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    snprintf(extra, sizeof extra, "etcd_key = %s\n", key);
    cr_assert_eq(etcd_finish(&cfg, "https://10.0.0.2:2379", extra, &errs), 1, "%s", errs.data);
    HAS(errs, "cluster.etcd_cert and cluster.etcd_key go together");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    /* files that are not there, or not files */
    cr_assert_eq(etcd_finish(&cfg, "https://10.0.0.2:2379",
                             "etcd_ca = /nonexistent/ca.pem\netcd_cert = /nonexistent/c.pem\netcd_key = /tmp\n",
                             &errs),
                 3, "%s", errs.data);
    HAS(errs, "cluster.etcd_ca: cannot open /nonexistent/ca.pem: No such file or directory");
    HAS(errs, "cluster.etcd_cert: cannot open /nonexistent/c.pem");
    HAS(errs, "cluster.etcd_key: /tmp is not a regular file");
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);

    unlink(ca);
    unlink(cert);
    unlink(key);
    dsq_buf_free(&errs);
}

/* Without etcd, every one of its auth and TLS keys is refused. */
Test(config, cluster_etcd_access_keys_need_etcd)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    cr_assert_eq(load(&cfg, "[cluster]\netcd_user = u\netcd_password_file = /p\netcd_ca = /ca\n"
                            "etcd_cert = /c\netcd_key = /k\n",
                      &errs),
                 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 5, "%s", errs.data);
    static const char *const names[] = {"etcd_user", "etcd_password_file", "etcd_ca", "etcd_cert", "etcd_key"};
    for (size_t i = 0; i < 5; i++) {
        char want[128];
        snprintf(want, sizeof want, "cluster.%s is set but cluster.etcd is not", names[i]);
        HAS(errs, want);
    }
    cr_assert_null(cfg.cluster_etcd_password, "not read without etcd");
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, transaction_timeout_within_its_cap)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    cr_assert_eq(load(&cfg, "[engine]\ntransaction_timeout = 10m\n", &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "transaction_timeout must not be above engine.max_transaction_timeout") != NULL,
              "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    cr_assert_eq(load(&cfg, "[engine]\ntransaction_timeout = 10m\nmax_transaction_timeout = 1h\n", &errs), 0,
                 "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.engine_max_txn_timeout_ms, 3600000u);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, addresses)
{
    struct sockaddr_storage ss;
    cr_assert_eq(dsq_parse_addr("127.0.0.1:8787", &ss), 0);
    cr_assert(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("127.9.9.9:0", &ss), 0);
    cr_assert(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("localhost:1", &ss), 0);
    cr_assert(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("[::1]:1", &ss), 0);
    cr_assert(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("0.0.0.0:80", &ss), 0);
    cr_assert_not(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("[::]:80", &ss), 0);
    cr_assert_not(dsq_addr_is_loopback(&ss));
    cr_assert_eq(dsq_parse_addr("10.1.2.3:80", &ss), 0);
    cr_assert_not(dsq_addr_is_loopback(&ss));
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", ":80", "::1:80",
                         "[::1]80", "[127.0.0.1]:80", "example.com:80", "1.2.3.4:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(dsq_parse_addr(bad[i], &ss), -1, "accepted '%s'", bad[i]);
}

/* conf/dosqld.conf must list every key, commented out, with its default,
 * under its section, and the shipped file must load cleanly. */
Test(config, shipped_file_documents_every_key)
{
    FILE *fp = fopen("conf/dosqld.conf", "r");
    cr_assert(fp != NULL, "run from the repository root");
    char *text = NULL;
    size_t cap = 0;
    ssize_t len = getdelim(&text, &cap, '\0', fp);
    fclose(fp);
    cr_assert(len > 0);
    const char *section, *name, *dflt;
    for (size_t i = 0; dsq_config_key_at(i, &section, &name, &dflt); i++) {
        char want[160], sect[64];
        snprintf(sect, sizeof sect, "\n[%s]\n", section);
        const char *s = strstr(text, sect);
        cr_assert(s != NULL, "section [%s] missing", section);
        if (*dflt)
            snprintf(want, sizeof want, "\n# %s = %s\n", name, dflt);
        else
            snprintf(want, sizeof want, "\n# %s =\n", name);
        const char *k = strstr(s, want);
        cr_assert(k != NULL, "conf/dosqld.conf lacks '%s' in [%s]", want + 1, section);
        const char *next = strstr(s + 1, "\n[");
        cr_assert(next == NULL || k < next, "'%s.%s' is documented outside its section", section,
                  name);
    }
    free(text);

    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_load_file(&cfg, "conf/dosqld.conf", &errs), 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}

Test(config, storage_keys)
{
    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    cr_assert_eq(load(&cfg,
                      "[storage]\npage_size = 8192\ncompression_level = -3\nsync = normal\n"
                      "history_retention = 2h\ncheckpoint_size = 1M\ngroup_sync = no\n"
                      "journal = no\njournal_size = 8M\n",
                      &errs),
                 0, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.storage_page_size, 8192);
    cr_assert_eq(cfg.storage_compression_level, -3);
    cr_assert_str_eq(cfg.storage_sync, "normal");
    cr_assert_eq(cfg.storage_history_retention_ms, 2 * 3600 * 1000);
    cr_assert_eq(cfg.storage_checkpoint_size, 1u << 20);
    cr_assert_eq(cfg.storage_group_sync, false);
    cr_assert_eq(cfg.storage_journal, false);
    cr_assert_eq(cfg.storage_journal_size, 8u << 20);
    dsq_config_free(&cfg);
    cr_assert_eq(load(&cfg, "", &errs), 0, "%s", errs.data);
    cr_assert_eq(cfg.storage_journal, true, "the journal is on by default");
    cr_assert_eq(cfg.storage_journal_size, 32u << 20);
    dsq_config_free(&cfg);
    dsq_buf_reset(&errs);
    cr_assert_eq(load(&cfg, "[storage]\njournal_size = 64K\n", &errs), 1, "%s", errs.data);
    dsq_config_free(&cfg);

    dsq_buf_reset(&errs);
    const char *bad[] = {"0", "-8", "20", "fast"};
    int n = 0;
    for (size_t i = 0; i < 4; i++) {
        char text[64];
        snprintf(text, sizeof text, "[storage]\ncompression_level = %s\n", bad[i]);
        n += load(&cfg, text, &errs);
        dsq_config_free(&cfg);
    }
    cr_assert_eq(n, 4, "%s", errs.data);
    cr_assert(strstr(errs.data, "out of range (-7 to 19, not 0)") != NULL, "%s", errs.data);
    cr_assert(strstr(errs.data, "maybe negative") != NULL, "%s", errs.data);

    dsq_buf_reset(&errs);
    /* A word key is checked as it is read (with its line); page_size
     * when the keys are checked together. */
    cr_assert_eq(load(&cfg, "[storage]\npage_size = 3000\nsync = sometimes\n", &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, ":3: storage.sync must be one of full|normal|off") != NULL, "%s", errs.data);
    cr_assert_eq(dsq_config_finish(&cfg, &errs), 1, "%s", errs.data);
    cr_assert(strstr(errs.data, "page_size must be a power of two") != NULL, "%s", errs.data);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}
