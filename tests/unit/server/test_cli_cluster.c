/* Unit tests: server/cli_cluster — what `dosqld cluster status` asks
 * (the URL from --url or a listen address) and how it prints GET
 * /v1/cluster's answer. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/cli_cluster.h"

/* Render a JSON text; the output (the caller frees it). */
static char *render(const char *text)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    cr_assert_not_null(doc, "%s", je.text);
    dsq_buf out = DSQ_BUF_INIT;
    char err[256] = "";
    cr_assert_eq(dsq_cli_cluster_render(doc, &out, err, sizeof err), 0, "%s", err);
    json_decref(doc);
    return dsq_buf_steal(&out, NULL);
}

static void has(const char *out, const char *want)
{
    cr_assert(strstr(out, want) != NULL, "missing: [%s]\n---\n%s", want, out);
}

/* Three nodes on etcd, one gone, after a failover. */
static const char etcd_doc[] =
    "{\"nodes\":["
    "{\"id\":\"n1\",\"address\":\"127.0.0.1:7101\",\"reachable\":false,\"self\":false,\"lagLSN\":0,\"lagMs\":0,"
    "\"etcd\":{\"alive\":false,\"load\":{\"dbs\":0,\"bytes\":0},\"copies\":1,\"primaries\":0}},"
    "{\"id\":\"n2\",\"address\":\"127.0.0.1:7102\",\"reachable\":true,\"self\":true,\"lagLSN\":0,\"lagMs\":0,"
    "\"etcd\":{\"alive\":true,\"load\":{\"dbs\":1,\"bytes\":12288},\"copies\":1,\"primaries\":1}},"
    "{\"id\":\"n3-long-name\",\"address\":\"127.0.0.1:7103\",\"reachable\":true,\"self\":false,\"lagLSN\":7,"
    "\"lagMs\":1500,\"etcd\":{\"alive\":true,\"load\":{\"dbs\":2,\"bytes\":3145728},\"copies\":1,\"primaries\":0}}],"
    "\"etcd\":{\"up\":true,\"registered\":true,\"viewWhole\":true,\"assignmentsLoaded\":true,\"assignments\":1,"
    "\"failover\":{\"attempts\":1,\"won\":1,\"lost\":0,\"promoted\":1,\"failed\":0}},"
    "\"failovers\":[{\"database\":\"x\",\"from\":\"n1\",\"to\":\"n2\",\"epoch\":2,"
    "\"at\":\"2026-12-07T10:20:11.123Z\",\"tookMs\":2013}],"
    "\"database\":{\"name\":\"x\",\"primary\":\"n2\",\"epoch\":2,\"copies\":["
    "{\"node\":\"n2\",\"role\":\"primary\",\"durableLSN\":4,\"appliedLSN\":4},"
    "{\"node\":\"n3-long-name\",\"role\":\"follower\",\"durableLSN\":3,\"appliedLSN\":2}]}}";

Test(cli_cluster, render_etcd)
{
    char *out = render(etcd_doc);
    has(out, "3 nodes, as n2 sees them:\n");
    /* columns as wide as their widest cell, two spaces apart */
    has(out, "  NODE          ADDRESS         REACHABLE  ETCD   LOAD            COPIES  PRIMARIES  LAG\n");
    has(out, "  n1            127.0.0.1:7101  no         gone   0 dbs, 0 B      1       0          0\n");
    has(out, "  n2            127.0.0.1:7102  self       alive  1 db, 12.0 KiB  1       1          -\n");
    has(out, "  n3-long-name  127.0.0.1:7103  yes        alive  2 dbs, 3.0 MiB  1       0          "
             "7 commits, 1500 ms\n");
    has(out, "etcd: up, registered, every node seen, 1 assignment\n");
    has(out, "failovers by this node: 1 attempted, 1 won, 0 lost, 1 promoted, 0 failed\n");
    has(out, "  2026-12-07T10:20:11.123Z  x  n1 -> n2  epoch 2  took 2013 ms\n");
    has(out, "database x: primary n2, epoch 2\n");
    has(out, "  NODE          ROLE      DURABLE LSN  APPLIED LSN\n");
    has(out, "  n3-long-name  follower  3            2\n");
    /* no trailing blanks */
    cr_assert_null(strstr(out, " \n"), "%s", out);
    free(out);
}

Test(cli_cluster, render_without_etcd)
{
    char *out = render("{\"nodes\":["
                       "{\"id\":\"a\",\"address\":\"10.0.0.1:7101\",\"reachable\":true,\"self\":true},"
                       "{\"id\":\"b\",\"address\":\"10.0.0.2:7101\",\"reachable\":true,\"self\":false,"
                       "\"lagLSN\":0,\"lagMs\":0}]}");
    has(out, "2 nodes, as a sees them:\n");
    has(out, "  NODE  ADDRESS        REACHABLE  LAG\n");
    has(out, "  a     10.0.0.1:7101  self       -\n");
    has(out, "  b     10.0.0.2:7101  yes        0\n");
    has(out, "etcd: not used");
    cr_assert_null(strstr(out, "failovers"), "no failovers without etcd: %s", out);
    free(out);
    /* a node without [cluster] */
    out = render("{\"nodes\":[{\"id\":\"\",\"address\":null,\"reachable\":true,\"self\":true}],"
                 "\"database\":{\"name\":\"x\",\"primary\":null,\"epoch\":0,\"copies\":[]}}");
    has(out, "not part of a cluster");
    has(out, "database x: no primary known here\n  no copies known here\n");
    free(out);
}

Test(cli_cluster, render_missing_fields)
{
    /* an older node's answer (no lag), a node with no etcd part, etcd
     * down and no failovers: "?" where a value is missing, never a crash */
    char *out = render("{\"nodes\":["
                       "{\"id\":\"n1\",\"address\":\"h:1\",\"reachable\":true,\"self\":true,\"etcd\":{}},"
                       "{\"address\":\"h:2\",\"self\":false}],"
                       "\"etcd\":{\"up\":false,\"assignments\":0},\"failovers\":[{\"database\":\"d\","
                       "\"from\":null,\"to\":\"n1\",\"epoch\":3,\"at\":\"2026-12-07T10:20:11.123Z\","
                       "\"tookMs\":0}]}");
    has(out, "  ?     h:2      no         ?     ?     ?       ?          ?\n");
    has(out, "etcd: not answering, not registered, the nodes not all seen yet, 0 assignments (not all read yet)\n");
    has(out, "  2026-12-07T10:20:11.123Z  d  - -> n1  epoch 3  took 0 ms\n");
    free(out);
    out = render("{\"nodes\":[{\"id\":\"n1\",\"address\":\"h:1\",\"self\":true}],\"etcd\":{},\"failovers\":[]}");
    has(out, "recent failovers by this node: none\n");
    free(out);
    dsq_buf b = DSQ_BUF_INIT;
    char err[256] = "";
    json_t *doc = json_loads("{\"error\":{\"code\":\"X\"}}", 0, NULL);
    cr_assert_eq(dsq_cli_cluster_render(doc, &b, err, sizeof err), -1);
    cr_assert(strstr(err, "nodes") != NULL, "%s", err);
    cr_assert_eq(b.len, 0);
    json_decref(doc);
    cr_assert_eq(dsq_cli_cluster_render(NULL, &b, err, sizeof err), -1);
}

Test(cli_cluster, listen_base)
{
    char out[128], err[256];
    const struct {
        const char *listen;
        bool tls;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"127.0.0.1:8787", false, "http://127.0.0.1:8787"},
        {"0.0.0.0:8787", false, "http://127.0.0.1:8787"},
        {"[::]:9000", true, "https://[::1]:9000"},
        {"[::1]:9000", false, "http://[::1]:9000"},
        {"localhost:80", false, "http://localhost:80"},
        {"10.0.0.5:8787", false, "http://10.0.0.5:8787"},
        {"127.0.0.1:0", false, NULL},
        {"127.0.0.1", false, NULL},
        {"example.com:80", false, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = dsq_cli_listen_base(cases[i].listen, cases[i].tls, out, sizeof out, err, sizeof err);
        if (cases[i].want == NULL) {
            cr_assert_eq(rc, -1, "%s", cases[i].listen);
            cr_assert(strstr(err, cases[i].listen) != NULL, "%s", err);
        } else {
            cr_assert_eq(rc, 0, "%s: %s", cases[i].listen, err);
            cr_assert_str_eq(out, cases[i].want);
        }
    }
}

Test(cli_cluster, url)
{
    char out[256], err[256];
    const struct {
        const char *base, *db;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"http://127.0.0.1:8787", NULL, "http://127.0.0.1:8787/v1/cluster"},
        {"http://127.0.0.1:8787/", "acct", "http://127.0.0.1:8787/v1/cluster?database=acct"},
        {"https://db.example:443/v1/cluster/", NULL, "https://db.example:443/v1/cluster"},
        {"http://h:1/v1/cluster", "a.b", "http://h:1/v1/cluster?database=a.b"},
        {"ftp://h:1", NULL, NULL},
        {"127.0.0.1:8787", NULL, NULL},
        {"http://", NULL, NULL},
        {"http://h:1/v1/db/x", NULL, NULL},
        {"http://h:1?x=1", NULL, NULL},
        {"http://h:1", "bad/name", NULL},
        {"http://h:1", ".hidden", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = dsq_cli_cluster_url(cases[i].base, cases[i].db, out, sizeof out, err, sizeof err);
        if (cases[i].want == NULL) {
            cr_assert_eq(rc, -1, "%s", cases[i].base);
        } else {
            cr_assert_eq(rc, 0, "%s: %s", cases[i].base, err);
            cr_assert_str_eq(out, cases[i].want);
        }
    }
    char small[16];
    cr_assert_eq(dsq_cli_cluster_url("http://127.0.0.1:8787", NULL, small, sizeof small, err, sizeof err), -1);
}
