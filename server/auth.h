/* auth — bearer tokens with scopes and a database-name glob.
 *
 * A token line is "SECRET SCOPES [GLOB]":
 *   SECRET  the token itself (16+ visible ASCII characters), or
 *           sha256:<64 hex> — its SHA-256, so config files need not hold it
 *   SCOPES  comma-separated read, write, admin (admin ⊇ write ⊇ read)
 *   GLOB    database names it may reach (fnmatch), default "*"
 * Only SHA-256 digests are kept in memory; a presented token is hashed and
 * compared with every entry in constant time. */
#ifndef DSQ_AUTH_H
#define DSQ_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "server/config.h"

enum {
    DSQ_SCOPE_READ = 1,
    DSQ_SCOPE_WRITE = 2,
    DSQ_SCOPE_ADMIN = 4,
};

typedef enum dsq_auth_result {
    DSQ_AUTH_OK = 0,
    DSQ_AUTH_UNAUTHORIZED, /* no token, or not one we know: 401 */
    DSQ_AUTH_FORBIDDEN,    /* a known token without the scope or name: 403 */
} dsq_auth_result;

typedef struct dsq_auth dsq_auth;

dsq_auth *dsq_auth_new(void);
void dsq_auth_free(dsq_auth *a);

/* Add one token line. Returns 0, or -1 with the reason in err. */
int dsq_auth_add(dsq_auth *a, const char *line, char *err, size_t errlen);

/* Build from config: [auth] token lines, then tokens_file (one line each;
 * blank lines and # comments ignored). Problems are appended to errs as
 * "WHERE: message\n". Returns NULL when there was any problem. */
dsq_auth *dsq_auth_from_config(const dsq_config *cfg, dsq_buf *errs);

/* Number of tokens; 0 means authentication is off. */
size_t dsq_auth_count(const dsq_auth *a);

/* May `token` (NULL when the request had none) use `scope` on database `db`
 * (NULL for routes not bound to one database)? With no tokens configured,
 * everything is allowed. */
dsq_auth_result dsq_auth_check(const dsq_auth *a, const char *token, size_t token_len,
                               unsigned scope, const char *db);

/* The token in an Authorization header value ("Bearer <token>"), or NULL. */
const char *dsq_auth_bearer(const char *value, size_t len, size_t *token_len);

#endif
