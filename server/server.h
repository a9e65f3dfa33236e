/* server — the daemon: event loop, listeners, signals, reload and drain. */
#ifndef DSQ_SERVER_H
#define DSQ_SERVER_H

#include <stddef.h>

#include "engine/tier/objstore.h"
#include "server/auth.h"
#include "server/config.h"

typedef struct dsq_server dsq_server;

/* The rule of DESIGN 3.1: a listener outside loopback needs tokens, unless
 * allow_unauthenticated is set. Returns 0, or -1 with the reason in err. */
int dsq_server_check_exposure(const dsq_config *cfg, const dsq_auth *auth, char *err,
                              size_t errlen);

/* Build a server from a finished config and its auth store (both owned by
 * the server from here on). `config_path` and the flags (pairs of key and
 * value) are kept to re-read the configuration on SIGHUP. Loads TLS.
 * Returns NULL with the reason in err. */
/* Open the object store the configuration names (storage.object_store
 * and [object_store]). NULL with a message. */
dsq_obj *dsq_server_objects_open(const dsq_config *cfg, char *err, size_t errlen);

dsq_server *dsq_server_new(dsq_config *cfg, dsq_auth *auth, const char *config_path,
                           const char *const *flags, size_t nflags, char *err, size_t errlen);

/* Bind every listener and announce readiness. Returns 0, or -1 with the
 * reason in err. */
int dsq_server_listen(dsq_server *srv, char *err, size_t errlen);

/* Serve until SIGTERM/SIGINT and the drain that follows. Returns the
 * process exit code. */
int dsq_server_run(dsq_server *srv);

void dsq_server_free(dsq_server *srv);

#endif
