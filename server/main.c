/* main — dosqld's command line (DESIGN 3.1).
 *
 *   dosqld [-c FILE] [--listen HOST:PORT] [--data-dir DIR]
 *          [--object-store URL] [--log-level L] [--check-config]
 *   dosqld cluster status [--url URL | -c FILE] ...   (cli_cluster.h)
 *
 * Flags override the file. Exit codes: 0 served and stopped cleanly (or
 * the configuration is valid), 1 a configuration or start-up error, 2 a
 * usage error. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/tier/tier.h"
#include "server/auth.h"
#include "server/cli_cluster.h"
#include "server/config.h"
#include "server/server.h"

/* The descriptor limit: the soft limit goes up to the hard one (as
 * daemons do: the default soft limit of 1,024 is far below what a server
 * of thousands of connections and open databases needs), and a limit
 * still below what the configuration may need is a warning with the
 * numbers (dsq_config_fds_needed). */
static void fd_limit_check(const dsq_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        DSQ_WARN("fd_limit_unknown", "reason=%s", dsq_log_q(strerror(errno)));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        if (want == RLIM_INFINITY) { /* the kernel's ceiling: fs.nr_open */
            unsigned long long nr_open = 1048576;
            FILE *f = fopen("/proc/sys/fs/nr_open", "re");
            if (f != NULL) {
                if (fscanf(f, "%llu", &nr_open) != 1)
                    nr_open = 1048576;
                fclose(f);
            }
            want = (rlim_t)nr_open;
        }
        if (want > rl.rlim_cur) {
            struct rlimit up = {want, rl.rlim_max};
            if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
                DSQ_INFO("fd_limit_raised", "from=%llu to=%llu", (unsigned long long)rl.rlim_cur,
                         (unsigned long long)want);
                rl.rlim_cur = want;
            } else {
                DSQ_WARN("fd_limit_not_raised", "limit=%llu hard=%llu reason=%s", (unsigned long long)rl.rlim_cur,
                         (unsigned long long)want, dsq_log_q(strerror(errno)));
            }
        }
    }
    uint64_t need = dsq_config_fds_needed(cfg);
    if (rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < need)
        DSQ_WARN("fd_limit_low",
                 "limit=%llu needed=%llu max_connections=%llu max_open_actors=%llu max_open_files_per_database=%llu "
                 "reason=%s",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)need, (unsigned long long)cfg->max_connections,
                 (unsigned long long)cfg->engine_max_open_actors, (unsigned long long)cfg->storage_max_open_files,
                 dsq_log_q("at full load requests will fail with RESOURCE_EXHAUSTED (too many open files): raise "
                           "the hard limit (LimitNOFILE=, ulimit -Hn) or lower these"));
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: dosqld [-c FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
            "              [--object-store URL] [--log-level LEVEL] [--check-config]\n"
            "       dosqld [-c FILE] [--data-dir DIR] [--object-store URL] --restore DB [--as-of LSN|TIME]\n"
            "       dosqld cluster status [--url URL | -c FILE] [--token TOKEN] [--database NAME] [--json]\n"
            "\n"
            "  -c, --config FILE      read settings from FILE (see conf/dosqld.conf)\n"
            "      --listen HOST:PORT listen here (repeatable; replaces server.listen)\n"
            "      --data-dir DIR     where databases live (default ./data)\n"
            "      --object-store URL file://DIR, s3://BUCKET[/PREFIX] or none (default file://DATA_DIR/objects)\n"
            "      --log-level LEVEL  debug, info, warn or error (default info)\n"
            "      --check-config     validate the configuration and exit\n"
            "      --restore DB       copy database DB from the object store into the data directory\n"
            "                         (where it must not exist yet) and exit\n"
            "      --as-of LSN|TIME   only up to that commit, or the newest at or before TIME\n"
            "                         (RFC 3339, e.g. 2026-11-26T05:00:00Z)\n"
            "  -h, --help             this text\n"
            "  -V, --version          print the version\n"
            "\n"
            "  cluster status         ask a running node what it knows of the cluster and print it\n"
            "                         (dosqld cluster --help)\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads tokens and log level.\n");
}

/* dosqld --restore DB [--as-of LSN|TIME]: 0, or 1 with the reason on
 * stderr. */
static int restore_main(const dsq_config *cfg, const char *db, const char *as_of)
{
    uint64_t lsn = 0, time_us = 0;
    if (as_of != NULL && dsq_parse_u64(as_of, &lsn) != 0 && dsq_parse_rfc3339(as_of, &time_us) != 0) {
        fprintf(stderr, "dosqld: --as-of '%s' is neither an LSN nor an RFC 3339 time\n", as_of);
        return 1;
    }
    if (as_of != NULL && lsn == 0 && time_us == 0) {
        fprintf(stderr, "dosqld: --as-of 0: LSN 0 is the empty database\n");
        return 1;
    }
    char err[1024], path[4096];
    /* The data directory is a running dosqld's (or another restore's):
     * what it would write there, it would write under them. */
    int lock = dsq_engine_lock_dir(cfg->data_dir, err, sizeof err);
    if (lock < 0) {
        fprintf(stderr, "dosqld: restore %s: %s\n", db, err);
        return 1;
    }
    snprintf(path, sizeof path, "%s/db", cfg->data_dir);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "dosqld: cannot create %s: %s\n", path, strerror(errno));
        dsq_engine_unlock_dir(lock);
        return 1;
    }
    dsq_obj *o = dsq_server_objects_open(cfg, err, sizeof err);
    dsq_tier *t = o ? dsq_tier_start(&(dsq_tier_cfg){.obj = o, .data_dir = cfg->data_dir,
                                                     .chunk_bytes = cfg->obj_chunk_size},
                                     err, sizeof err)
                    : NULL;
    uint64_t at = 0;
    int rc = t != NULL && dsq_tier_restore(t, db, lsn, time_us, &at, err, sizeof err) == 0 ? 0 : 1;
    if (rc == 0)
        printf("restored %s at LSN %llu into %s/%s\n", db, (unsigned long long)at, path, db);
    else
        fprintf(stderr, "dosqld: restore %s: %s\n", db, err);
    dsq_tier_stop(t);
    dsq_obj_close(o);
    dsq_engine_unlock_dir(lock);
    return rc;
}

/* mkdir -p with mode 0700 for the parts we create. */
static int make_dirs(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "data_dir path too long");
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %.512s: %s", tmp, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.512s: %s", tmp, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%.512s is not a directory", tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_LISTEN = 256, OPT_DATA_DIR, OPT_OBJECT_STORE, OPT_LOG_LEVEL, OPT_CHECK, OPT_RESTORE, OPT_AS_OF };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"object-store", required_argument, NULL, OPT_OBJECT_STORE},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"restore", required_argument, NULL, OPT_RESTORE},
        {"as-of", required_argument, NULL, OPT_AS_OF},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    const char **flags = calloc((size_t)argc * 2 + 2, sizeof *flags);
    size_t nflags = 0;
    bool check_only = false;
    const char *restore_db = NULL, *as_of = NULL;
    int opt;

    if (flags == NULL)
        return 1;
    /* A subcommand: a client of a running node, nothing of a server. */
    if (argc > 1 && strcmp(argv[1], "cluster") == 0) {
        free(flags);
        return dsq_cli_cluster_main(argc - 1, argv + 1);
    }
    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        const char *key = NULL;
        switch (opt) {
        case 'c': config_path = optarg; break;
        case OPT_LISTEN: key = "server.listen"; break;
        case OPT_DATA_DIR: key = "storage.data_dir"; break;
        case OPT_OBJECT_STORE: key = "storage.object_store"; break;
        case OPT_LOG_LEVEL: key = "log.level"; break;
        case OPT_CHECK: check_only = true; break;
        case OPT_RESTORE: restore_db = optarg; break;
        case OPT_AS_OF: as_of = optarg; break;
        case 'h': usage(stdout); free(flags); return 0;
        case 'V': printf("dosqld %s\n", DSQ_VERSION); free(flags); return 0;
        default: usage(stderr); free(flags); return 2;
        }
        if (key) {
            flags[2 * nflags] = key;
            flags[2 * nflags + 1] = optarg;
            nflags++;
        }
    }
    if (as_of != NULL && restore_db == NULL) {
        fprintf(stderr, "dosqld: --as-of goes with --restore\n");
        free(flags);
        return 2;
    }
    if (restore_db != NULL && !dsq_db_name_valid(restore_db)) {
        fprintf(stderr, "dosqld: '%s' is not a database name\n", restore_db);
        free(flags);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "dosqld: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        free(flags);
        return 2;
    }

    dsq_config *cfg = malloc(sizeof *cfg);
    dsq_buf errs = DSQ_BUF_INIT;
    char err[1024];
    int problems = 0;
    if (cfg == NULL)
        return 1;
    dsq_config_init(cfg);
    if (config_path)
        problems += dsq_config_load_file(cfg, config_path, &errs);
    for (size_t i = 0; i < nflags; i++)
        if (dsq_config_set_flag(cfg, flags[2 * i], flags[2 * i + 1], &errs) != 0)
            problems++;
    problems += dsq_config_finish(cfg, &errs);
    /* Built even when the file had problems, so one run reports them all. */
    dsq_auth *auth = dsq_auth_from_config(cfg, &errs);
    if (auth == NULL)
        problems++;
    if (auth != NULL && dsq_server_check_exposure(cfg, auth, err, sizeof err) != 0) {
        dsq_buf_printf(&errs, "%s\n", err);
        problems++;
    }
    if (problems == 0 && cfg->tls_listen.n > 0) {
        dsq_tls_ctx *t = dsq_tls_ctx_new(cfg->tls_cert, cfg->tls_key, err, sizeof err);
        if (t == NULL) {
            dsq_buf_printf(&errs, "TLS: %s\n", err);
            problems++;
        }
        dsq_tls_ctx_free(t);
    }
    if (problems == 0 && cfg->cluster_tls && cfg->cluster_peers.n > 1) {
        /* The links' files, as dsq_peers_start will read them. */
        dsq_tls_ctx *t = dsq_tls_ctx_new_mutual(cfg->cluster_tls_cert, cfg->cluster_tls_key, cfg->cluster_tls_ca,
                                                err, sizeof err);
        if (t == NULL || dsq_tls_ctx_check_own(t, cfg->cluster_node_id, err, sizeof err) != 0) {
            dsq_buf_printf(&errs, "cluster.%s\n", err);
            problems++;
        }
        dsq_tls_ctx_free(t);
    }
    if (problems > 0) {
        fprintf(stderr, "dosqld: configuration has %d problem%s:\n%s", problems,
                problems == 1 ? "" : "s", errs.data ? errs.data : "");
        dsq_buf_free(&errs);
        dsq_auth_free(auth);
        dsq_config_free(cfg);
        free(cfg);
        free(flags);
        return 1;
    }
    dsq_buf_free(&errs);
    if (check_only) {
        printf("configuration ok%s%s\n", config_path ? ": " : "", config_path ? config_path : "");
        dsq_auth_free(auth);
        dsq_config_free(cfg);
        free(cfg);
        free(flags);
        return 0;
    }

    dsq_log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    if (make_dirs(cfg->data_dir, err, sizeof err) != 0) {
        DSQ_ERROR("start_failed", "reason=%s", dsq_log_q(err));
        dsq_auth_free(auth);
        dsq_config_free(cfg);
        free(cfg);
        free(flags);
        return 1;
    }
    if (restore_db != NULL) {
        int rc = restore_main(cfg, restore_db, as_of);
        dsq_auth_free(auth);
        dsq_config_free(cfg);
        free(cfg);
        free(flags);
        return rc;
    }
    DSQ_INFO("starting", "version=%s data_dir=%s object_store=%s config=%s", DSQ_VERSION,
             dsq_log_q(cfg->data_dir), dsq_log_q(cfg->object_store), dsq_log_q(config_path));
    fd_limit_check(cfg);
    dsq_server *srv = dsq_server_new(cfg, auth, config_path, flags, nflags, err, sizeof err);
    free(flags);
    if (srv == NULL) {
        DSQ_ERROR("start_failed", "reason=%s", dsq_log_q(err));
        return 1;
    }
    if (dsq_server_listen(srv, err, sizeof err) != 0) {
        DSQ_ERROR("start_failed", "reason=%s", dsq_log_q(err));
        dsq_server_free(srv);
        return 1;
    }
    int rc = dsq_server_run(srv);
    dsq_server_free(srv);
    return rc;
}
