/* engine_cfg.h — the engine's settings a test starts from.
 *
 * The engine has no defaults of its own: they are the configuration's
 * (server/config.c's table), which dsq_config_engine turns into the
 * engine's settings, as the daemon does. A test changes what it needs
 * after. The node journal is off: it has tests of its own, and would make
 * every engine a test starts zero its first file. */
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
    return c;
}

#endif
