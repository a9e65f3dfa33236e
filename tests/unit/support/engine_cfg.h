/* engine_cfg.h — the engine's settings a test starts from.
 *
 * The engine has no defaults of its own: they are the configuration's
 * (server/config.c's table), which dsq_config_engine turns into the
 * engine's settings, as the daemon does. A test changes what it needs
 * after. Beside the defaults, as tests want an engine unless they ask
 * otherwise: no node journal (it has tests of its own, and would make
 * every engine a test starts zero its first file), no history kept for
 * time travel, no cap on a transaction's timeout, no CDC coalescing, and
 * small limits on SQL, values, results and the page cache. */
#ifndef DSQ_TEST_ENGINE_CFG_H
#define DSQ_TEST_ENGINE_CFG_H

#include "server/config.h"

static inline dsq_engine_cfg test_engine_cfg(const char *dir)
{
    dsq_config conf;
    dsq_config_init(&conf);
    dsq_engine_cfg c;
    dsq_config_engine(&conf, &c);
    dsq_config_free(&conf); /* c borrowed only data_dir from it */
    c.data_dir = dir;
    c.journal = false;
    c.retention_ms = 0;
    c.max_txn_timeout_ms = 0;
    c.cdc_coalesce_ms = 0;
    c.cdc_coalesce_cpu = 0;
    c.max_result_size = 1 << 20;
    c.max_sql_length = 100000;
    c.max_value_size = 1 << 20;
    c.max_columns = 100;
    c.max_expr_depth = 100;
    c.max_params = 100;
    c.cache_pages = 100;
    return c;
}

#endif
