/* Unit tests: server/router — DESIGN 3.2's table. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/auth.h"
#include "server/http.h"
#include "server/router.h"

static dsq_route_match m;

Test(router, matches_every_route)
{
    struct {
        int method;
        const char *path;
        dsq_route_id id;
        const char *db;
    } cases[] = {
        {HTTP_GET, "/healthz", DSQ_ROUTE_HEALTHZ, ""},
        {HTTP_HEAD, "/healthz", DSQ_ROUTE_HEALTHZ, ""},
        {HTTP_GET, "/metrics", DSQ_ROUTE_METRICS, ""},
        {HTTP_GET, "/v1/db", DSQ_ROUTE_DB_LIST, ""},
        {HTTP_DELETE, "/v1/db/x", DSQ_ROUTE_DB_DROP, "x"},
        {HTTP_POST, "/v1/db/app.db_1-x/query", DSQ_ROUTE_DB_QUERY, "app.db_1-x"},
        {HTTP_POST, "/v1/db/x/rpc", DSQ_ROUTE_DB_RPC, "x"},
        {HTTP_GET, "/v1/db/x/rpc", DSQ_ROUTE_DB_RPC, "x"},
        {HTTP_POST, "/v1/db/x/capnweb", DSQ_ROUTE_DB_CAPNWEB, "x"},
        {HTTP_GET, "/v1/db/x/cdc", DSQ_ROUTE_DB_CDC, "x"},
        {HTTP_POST, "/v1/rpc", DSQ_ROUTE_RPC, ""},
        {HTTP_GET, "/v1/capnweb", DSQ_ROUTE_CAPNWEB, ""},
        {HTTP_POST, "/v1/db/%41bc/query", DSQ_ROUTE_DB_QUERY, "Abc"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsq_route(cases[i].method, cases[i].path, &m);
        cr_assert_eq(m.status, 0, "%s: %s", cases[i].path, m.why);
        cr_assert_eq(m.route, cases[i].id, "%s", cases[i].path);
        cr_assert_str_eq(m.db, cases[i].db, "%s", cases[i].path);
    }
}

Test(router, scopes_and_websocket)
{
    dsq_route(HTTP_GET, "/healthz", &m);
    cr_assert_eq(m.scope, 0, "health is public");
    dsq_route(HTTP_GET, "/v1/db", &m);
    cr_assert_eq(m.scope, DSQ_SCOPE_ADMIN);
    dsq_route(HTTP_DELETE, "/v1/db/x", &m);
    cr_assert_eq(m.scope, DSQ_SCOPE_ADMIN);
    dsq_route(HTTP_GET, "/v1/db/x/rpc", &m);
    cr_assert_eq(m.scope, DSQ_SCOPE_READ);
    cr_assert(m.websocket);
    dsq_route(HTTP_POST, "/v1/db/x/query", &m);
    cr_assert_not(m.websocket);
}

Test(router, errors)
{
    dsq_route(HTTP_GET, "/nope", &m);
    cr_assert_eq(m.status, 404);
    dsq_route(HTTP_GET, "/healthz/", &m);
    cr_assert_eq(m.status, 404);
    dsq_route(HTTP_GET, "//healthz", &m);
    cr_assert_eq(m.status, 404);
    dsq_route(HTTP_POST, "/healthz", &m);
    cr_assert_eq(m.status, 405);
    cr_assert_str_eq(m.allow, "GET, HEAD");
    dsq_route(HTTP_GET, "/v1/db/x/query", &m);
    cr_assert_eq(m.status, 405);
    cr_assert_str_eq(m.allow, "POST");
    dsq_route(HTTP_PUT, "/v1/db/x", &m);
    cr_assert_eq(m.status, 405);
    const char *bad_names[] = {"/v1/db/.hidden/query", "/v1/db/a%20b/query", "/v1/db/a%2Fb/query",
                               "/v1/db/a%zz/query", "/v1/db/caf%C3%A9/query"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        dsq_route(HTTP_POST, bad_names[i], &m);
        cr_assert_eq(m.status, 400, "%s", bad_names[i]);
        cr_assert_eq(m.route, DSQ_ROUTE_NONE);
    }
    char longname[300] = "/v1/db/";
    memset(longname + 7, 'a', 129);
    strcpy(longname + 7 + 129, "/query");
    dsq_route(HTTP_POST, longname, &m);
    cr_assert_eq(m.status, 400, "a 129-byte name is too long");
    dsq_route(HTTP_GET, "relative", &m);
    cr_assert_eq(m.status, 400);
}

Test(router, iceberg_catalog_takes_its_paths)
{
    /* Every path under /v1/iceberg, any method, however many segments:
     * the catalog matches the rest and answers in its spec's errors. */
    const char *paths[] = {"/v1/iceberg", "/v1/iceberg/", "/v1/iceberg/v1/config",
                           "/v1/iceberg/v1/namespaces/a%1Fb/tables/t/plan/x/y/z", "/v1/iceberg/%zz"};
    int methods[] = {HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_DELETE, HTTP_PUT, HTTP_PATCH};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        for (size_t j = 0; j < sizeof methods / sizeof methods[0]; j++) {
            dsq_route(methods[j], paths[i], &m);
            cr_assert_eq(m.status, 0, "%s", paths[i]);
            cr_assert_eq(m.route, DSQ_ROUTE_ICEBERG, "%s", paths[i]);
            cr_assert_eq(m.scope, 0, "the catalog checks tokens itself");
        }
    dsq_route(HTTP_GET, "/v1/icebergs", &m);
    cr_assert_eq(m.status, 404);
    dsq_route(HTTP_PATCH, "/healthz", &m);
    cr_assert_eq(m.status, 405, "other methods stay refused elsewhere");
    cr_assert_str_eq(dsq_route_name(DSQ_ROUTE_ICEBERG), "iceberg");
}

Test(router, names)
{
    cr_assert_str_eq(dsq_route_name(DSQ_ROUTE_DB_QUERY), "db_query");
    cr_assert_str_eq(dsq_route_pattern(DSQ_ROUTE_DB_QUERY), "/v1/db/{db}/query");
    cr_assert_str_eq(dsq_route_name(DSQ_ROUTE_NONE), "none");
}
