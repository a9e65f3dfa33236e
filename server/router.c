/* router — match a request path against DESIGN 3.2's routes.
 *
 * Paths are split on '/', each segment percent-decoded on its own (so an
 * encoded '/' cannot create a segment), then matched against the table.
 * The {db} segment must be a valid database name. A prefix route takes
 * every path under its prefix, whatever the method: its handler matches
 * the rest itself (the Iceberg REST catalog, whose paths, errors and
 * methods are its own spec's). */
#include "server/router.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "server/auth.h"
#include "server/http.h"

enum { M_GET = 1, M_POST = 2, M_DELETE = 4, M_PUT = 8, M_OTHER = 16, M_ANY = 31 };

typedef struct route_def {
    dsq_route_id id;
    const char *name;
    const char *pattern;   /* segments; "{db}" is the database name */
    unsigned methods;      /* M_* allowed (HEAD goes with GET) */
    const char *allow;     /* Allow header for 405 */
    bool websocket;        /* GET with Upgrade: websocket */
    unsigned scope;        /* DSQ_SCOPE_* (0 = public, or the handler's own checks) */
} route_def;

/* A pattern ending in "/..." is a prefix route: that path and any under it. */
static size_t prefix_len(const route_def *d)
{
    size_t n = strlen(d->pattern);
    return n > 4 && strcmp(d->pattern + n - 4, "/...") == 0 ? n - 4 : 0;
}

static const route_def routes[] = {
    {DSQ_ROUTE_HEALTHZ, "healthz", "/healthz", M_GET, "GET, HEAD", false, 0},
    {DSQ_ROUTE_METRICS, "metrics", "/metrics", M_GET, "GET, HEAD", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_LIST, "db_list", "/v1/db", M_GET, "GET, HEAD", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_DB_DROP, "db_drop", "/v1/db/{db}", M_DELETE, "DELETE", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_DB_QUERY, "db_query", "/v1/db/{db}/query", M_POST, "POST", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_RPC, "db_rpc", "/v1/db/{db}/rpc", M_POST | M_GET, "GET, POST", true,
     DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_CAPNWEB, "db_capnweb", "/v1/db/{db}/capnweb", M_POST | M_GET, "GET, POST",
     true, DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_CDC, "db_cdc", "/v1/db/{db}/cdc", M_GET, "GET, HEAD", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_RPC, "rpc", "/v1/rpc", M_POST | M_GET, "GET, POST", true, DSQ_SCOPE_READ},
    {DSQ_ROUTE_CAPNWEB, "capnweb", "/v1/capnweb", M_POST | M_GET, "GET, POST", true,
     DSQ_SCOPE_READ},
    {DSQ_ROUTE_CLUSTER, "cluster", "/v1/cluster", M_GET, "GET, HEAD", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_PROMOTE, "promote", "/v1/admin/promote", M_POST, "POST", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_MOVE, "move", "/v1/admin/move", M_POST, "POST", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_DRAIN, "drain", "/v1/admin/drain", M_POST, "POST", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_LAKE, "lake", "/v1/admin/lake", M_GET | M_POST, "GET, POST", false, DSQ_SCOPE_ADMIN},
    {DSQ_ROUTE_KS_QUERY, "ks_query", "/v1/ks/{ks}/query", M_POST, "POST", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_KS_RPC, "ks_rpc", "/v1/ks/{ks}/rpc", M_POST | M_GET, "GET, POST", true, DSQ_SCOPE_READ},
    {DSQ_ROUTE_KS_CAPNWEB, "ks_capnweb", "/v1/ks/{ks}/capnweb", M_POST | M_GET, "GET, POST", true,
     DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_EXPORT, "db_export", "/v1/db/{db}/export", M_GET, "GET, HEAD", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_IMPORT, "db_import", "/v1/db/{db}/import", M_PUT, "PUT", false, DSQ_SCOPE_WRITE},
    {DSQ_ROUTE_DB_HRANA_V2, "db_hrana_v2", "/v1/db/{db}/v2", M_GET, "GET, HEAD", false, DSQ_SCOPE_READ},
    {DSQ_ROUTE_DB_HRANA_PIPELINE, "db_hrana_pipeline", "/v1/db/{db}/v2/pipeline", M_POST, "POST", false,
     DSQ_SCOPE_READ},
    /* "{}": the empty segment after the trailing slash. The client's token
     * comes in its hello message, not in the upgrade. */
    {DSQ_ROUTE_DB_HRANA_WS, "db_hrana_ws", "/v1/db/{db}/{}", M_GET, "GET", true, 0},
    /* Its tokens are checked by the catalog, which answers in its own
     * spec's error model (server/iceberg.c). */
    {DSQ_ROUTE_ICEBERG, "iceberg", "/v1/iceberg/...", M_ANY, NULL, false, 0},
};
#define NROUTES (sizeof routes / sizeof routes[0])

#define MAX_SEGS 6

/* A keyspace's name, as a VSchema takes it (sharding/vschema.h). */
static bool ks_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

const char *dsq_route_name(dsq_route_id id)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].id == id)
            return routes[i].name;
    return "none";
}

const char *dsq_route_pattern(dsq_route_id id)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].id == id)
            return routes[i].pattern;
    return "";
}

/* Split "/a/b/c" into decoded segments. Returns the count, or -1 when the
 * path is malformed (no leading '/', a bad escape, an encoded '/', too many
 * or too long segments). An empty path segment ("//", a trailing '/')
 * matches only a pattern's "{}" (the Hrana WebSocket's trailing slash);
 * elsewhere it makes the path match nothing. */
static int split_path(const char *path, char segs[MAX_SEGS][160])
{
    if (path[0] != '/')
        return -1;
    int n = 0;
    const char *p = path + 1;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n == MAX_SEGS || len >= 160)
            return -1;
        long dl = dsq_http_pct_decode(p, len, segs[n]);
        if (dl < 0 || memchr(segs[n], '/', (size_t)dl) != NULL)
            return -1;
        n++;
        if (e == NULL)
            break;
        p = e + 1;
    }
    return n;
}

static unsigned method_bit(int method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD: return M_GET;
    case HTTP_POST: return M_POST;
    case HTTP_DELETE: return M_DELETE;
    case HTTP_PUT: return M_PUT;
    default: return M_OTHER;
    }
}

void dsq_route(int method, const char *path, dsq_route_match *m)
{
    char segs[MAX_SEGS][160];
    memset(m, 0, sizeof *m);
    for (size_t r = 0; r < NROUTES; r++) {
        const route_def *d = &routes[r];
        size_t pl = prefix_len(d);
        if (pl > 0 && strncmp(path, d->pattern, pl) == 0 && (path[pl] == '\0' || path[pl] == '/')) {
            m->route = d->id;
            m->scope = d->scope;
            return;
        }
    }
    int n = split_path(path, segs);
    if (n < 0) {
        m->status = 400;
        m->why = "malformed request path";
        return;
    }
    for (size_t r = 0; r < NROUTES; r++) {
        const route_def *d = &routes[r];
        if (prefix_len(d) > 0)
            continue;
        char pat[64];
        char *psegs[MAX_SEGS];
        int pn = 0;
        snprintf(pat, sizeof pat, "%s", d->pattern + 1);
        for (char *save = NULL, *t = strtok_r(pat, "/", &save); t; t = strtok_r(NULL, "/", &save))
            psegs[pn++] = t;
        if (pn != n)
            continue;
        bool ok = true;
        const char *db = NULL, *ks = NULL;
        for (int i = 0; i < n && ok; i++) {
            if (strcmp(psegs[i], "{db}") == 0)
                db = segs[i];
            else if (strcmp(psegs[i], "{ks}") == 0)
                ks = segs[i];
            else if (strcmp(psegs[i], "{}") == 0)
                ok = segs[i][0] == '\0';
            else
                ok = strcmp(psegs[i], segs[i]) == 0;
        }
        if (!ok)
            continue;
        if (db != NULL && !dsq_db_name_valid(db)) {
            m->status = 400;
            m->why = "invalid database name: use 1-128 of A-Z a-z 0-9 . _ -, not starting with '.'";
            return;
        }
        if (ks != NULL && !ks_name_valid(ks)) {
            m->status = 400;
            m->why = "invalid keyspace name: use 1-128 of A-Z a-z 0-9 _, not starting with a digit";
            return;
        }
        if ((method_bit(method) & d->methods) == 0) {
            m->status = 405;
            m->why = "method not allowed on this route";
            m->allow = d->allow;
            return;
        }
        m->route = d->id;
        m->websocket = d->websocket;
        m->scope = d->scope;
        if (db != NULL) /* valid names are at most 128 bytes */
            memcpy(m->db, db, strlen(db) + 1);
        if (ks != NULL)
            memcpy(m->ks, ks, strlen(ks) + 1);
        return;
    }
    m->status = 404;
    m->why = "no such route";
}
