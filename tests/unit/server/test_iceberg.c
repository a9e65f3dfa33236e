/* Unit tests: server/iceberg — the catalog's paths, names, and what the
 * lake's keys say (server/iceberg.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "server/iceberg.h"

static dsq_ice_path p;

Test(iceberg, paths)
{
    struct {
        const char *rest;
        dsq_ice_ep ep;
        const char *ns, *table;
    } cases[] = {
        {"/v1/config", DSQ_ICE_CONFIG, "", ""},
        {"/v1/namespaces", DSQ_ICE_NAMESPACES, "", ""},
        {"/v1/namespaces/app", DSQ_ICE_NAMESPACE, "app", ""},
        {"/v1/namespaces/a%1Fb", DSQ_ICE_NAMESPACE, "a\x1f" "b", ""},
        {"/v1/namespaces/app/properties", DSQ_ICE_NS_PROPERTIES, "app", ""},
        {"/v1/namespaces/app/tables", DSQ_ICE_TABLES, "app", ""},
        {"/v1/namespaces/app/register", DSQ_ICE_REGISTER, "app", ""},
        {"/v1/namespaces/app/tables/orders", DSQ_ICE_TABLE, "app", "orders"},
        {"/v1/namespaces/app/tables/my%20t", DSQ_ICE_TABLE, "app", "my t"},
        {"/v1/namespaces/app/tables/orders/metrics", DSQ_ICE_METRICS, "app", "orders"},
        {"/v1/namespaces/app/tables/orders/plan", DSQ_ICE_UNSERVED, "app", "orders"},
        {"/v1/namespaces/app/tables/orders/plan/x1", DSQ_ICE_UNSERVED, "app", "orders"},
        {"/v1/namespaces/app/views", DSQ_ICE_UNSERVED, "app", ""},
        {"/v1/namespaces/app/views/v", DSQ_ICE_UNSERVED, "app", ""},
        {"/v1/tables/rename", DSQ_ICE_RENAME, "", ""},
        {"/v1/transactions/commit", DSQ_ICE_COMMIT, "", ""},
        {"/v1/oauth/tokens", DSQ_ICE_UNSERVED, "", ""},
        {"", DSQ_ICE_UNKNOWN, "", ""},
        {"/", DSQ_ICE_UNKNOWN, "", ""},
        {"/v1", DSQ_ICE_UNKNOWN, "", ""},
        {"/v2/config", DSQ_ICE_UNKNOWN, "", ""},
        {"/v1/namespaces/", DSQ_ICE_NAMESPACE, "", ""}, /* (then refused: no name) */
        {"/v1/namespaces/app/tables/orders/", DSQ_ICE_UNKNOWN, "", ""},
        {"/v1/namespaces/app/nope", DSQ_ICE_UNKNOWN, "", ""},
        {"/v1/pfx/namespaces", DSQ_ICE_UNKNOWN, "", ""},
        {"/v1/namespaces/a/tables/b/plan/c/d", DSQ_ICE_UNKNOWN, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(dsq_ice_parse_path(cases[i].rest, &p), 0, "%s", cases[i].rest);
        cr_assert_eq(p.ep, cases[i].ep, "%s: %d", cases[i].rest, p.ep);
        cr_assert_str_eq(p.ns, cases[i].ns, "%s", cases[i].rest);
        cr_assert_str_eq(p.table, cases[i].table, "%s", cases[i].rest);
    }
    cr_assert_eq(dsq_ice_parse_path("/v1/namespaces/a%zz", &p), -1);
    cr_assert_eq(dsq_ice_parse_path("/v1/namespaces/a%00", &p), -1);
    char lng[5000] = "/v1/namespaces/";
    memset(lng + strlen(lng), 'a', 2000);
    cr_assert_eq(dsq_ice_parse_path(lng, &p), -1, "a segment of 2000 bytes");
}

Test(iceberg, names)
{
    char db[129];
    cr_assert_eq(dsq_ice_namespace("app", db), 1);
    cr_assert_str_eq(db, "app");
    cr_assert_eq(dsq_ice_namespace("a.b_c-1", db), 1);
    cr_assert_eq(dsq_ice_namespace("a\x1f" "b", db), 2, "two levels, each valid");
    cr_assert_eq(dsq_ice_namespace("", db), 0);
    cr_assert_eq(dsq_ice_namespace(".x", db), 0);
    cr_assert_eq(dsq_ice_namespace("a b", db), 0);
    cr_assert_eq(dsq_ice_namespace("a/b", db), 0);
    cr_assert_eq(dsq_ice_namespace("a\x1f", db), 0, "an empty level");
    cr_assert_eq(dsq_ice_namespace("a\x1f.b", db), 0);

    cr_assert(dsq_ice_table_name_valid("orders"));
    cr_assert(dsq_ice_table_name_valid("orders_changelog"));
    cr_assert(dsq_ice_table_name_valid("caf\xc3\xa9 x"));
    cr_assert_not(dsq_ice_table_name_valid(""));
    cr_assert_not(dsq_ice_table_name_valid("."));
    cr_assert_not(dsq_ice_table_name_valid(".."));
    cr_assert_not(dsq_ice_table_name_valid("a/b"));
    cr_assert_not(dsq_ice_table_name_valid("a\\b"));
    cr_assert_not(dsq_ice_table_name_valid("a\nb"));
    cr_assert_not(dsq_ice_table_name_valid("\xff"));
    char t[300];
    memset(t, 'a', 256);
    t[256] = '\0';
    cr_assert_not(dsq_ice_table_name_valid(t));
    t[255] = '\0';
    cr_assert(dsq_ice_table_name_valid(t));
}

#define ITEMS(...) ((dsq_obj_item[]){__VA_ARGS__})
#define IT(k) {.key = (char *)(k), .size = 1}

Test(iceberg, namespaces_of_keys)
{
    dsq_obj_item items[] = {
        IT("lake/a.b/namespace.json"),
        IT("lake/a.b/t/metadata/v1.metadata.json"),
        IT("lake/a/namespace.json"),
        IT("lake/a/t/data/x.parquet"),
        IT("lake/a/x/namespace.json"),   /* not at a namespace's place */
        IT("lake/b/namespace.json.tmp"),
        IT("lake/.h/namespace.json"),    /* not a database's name */
        IT("lake/c/t/metadata/v1.metadata.json"), /* tables, and no namespace.json */
        IT("lake/z/namespace.json"),
        IT("other/q/namespace.json"),
    };
    dsq_ice_names s = {0};
    cr_assert_eq(dsq_ice_namespaces_of(items, sizeof items / sizeof items[0], &s), 0);
    cr_assert_eq(s.n, 3);
    cr_assert_str_eq(s.v[0], "a");
    cr_assert_str_eq(s.v[1], "a.b", "sorted by name, not by key");
    cr_assert_str_eq(s.v[2], "z");
    dsq_ice_names_free(&s);
    cr_assert_eq(dsq_ice_namespaces_of(NULL, 0, &s), 0);
    cr_assert_eq(s.n, 0);
}

Test(iceberg, tables_of_keys)
{
    dsq_obj_item items[] = {
        IT("lake/app/namespace.json"),
        IT("lake/app/t.x/metadata/v1.metadata.json"),
        IT("lake/app/t/data/part-1.parquet"),
        IT("lake/app/t/metadata/snap-1.avro"),
        IT("lake/app/t/metadata/v1.metadata.json"),
        IT("lake/app/t/metadata/v2.metadata.json"),
        IT("lake/app/t/metadata/version-hint.text"),
        IT("lake/app/t_changelog/metadata/v1.metadata.json"),
        IT("lake/app/u/data/only-data.parquet"),            /* no metadata: no table */
        IT("lake/app/w/metadata/v01.metadata.json"),        /* padded: not a version */
        IT("lake/app/w/metadata/v0.metadata.json"),
        IT("lake/app/w/x/metadata/v1.metadata.json"),       /* one level deeper */
    };
    dsq_ice_names s = {0};
    bool found = false;
    cr_assert_eq(dsq_ice_tables_of("app", items, sizeof items / sizeof items[0], &s, &found), 0);
    cr_assert(found);
    cr_assert_eq(s.n, 3);
    cr_assert_str_eq(s.v[0], "t");
    cr_assert_str_eq(s.v[1], "t.x");
    cr_assert_str_eq(s.v[2], "t_changelog");
    dsq_ice_names_free(&s);
    cr_assert_eq(dsq_ice_tables_of("ap", items, sizeof items / sizeof items[0], &s, &found), 0);
    cr_assert_not(found);
    cr_assert_eq(s.n, 0, "another namespace's prefix");
}

Test(iceberg, versions)
{
    const char *dir = "lake/a/t/metadata/";
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v1.metadata.json"), 1);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v123.metadata.json"), 123);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v0.metadata.json"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v01.metadata.json"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v1.metadata.json.tmp"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v.metadata.json"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/00001-x.metadata.json"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/t/metadata/v1234567890123456789.metadata.json"), 0);
    cr_assert_eq(dsq_ice_metadata_version(dir, "lake/a/u/metadata/v1.metadata.json"), 0);
    dsq_obj_item items[] = {
        IT("lake/a/t/metadata/snap-9.avro"),
        IT("lake/a/t/metadata/v10.metadata.json"),
        IT("lake/a/t/metadata/v2.metadata.json"),
        IT("lake/a/t/metadata/v9.metadata.json"),
    };
    cr_assert_eq(dsq_ice_latest_version(dir, items, 4), 10, "by number, not by key");
    cr_assert_eq(dsq_ice_latest_version(dir, items, 1), 0);
}

Test(iceberg, store_base)
{
    char out[256];
    cr_assert_eq(dsq_ice_store_base("file:///var/lib/dosqld/objects", "/x", out, sizeof out), 0);
    cr_assert_str_eq(out, "file:///var/lib/dosqld/objects");
    cr_assert_eq(dsq_ice_store_base("file:///srv/o/", "/x", out, sizeof out), 0);
    cr_assert_str_eq(out, "file:///srv/o");
    cr_assert_eq(dsq_ice_store_base("file://./data/objects", "/home/u/", out, sizeof out), 0);
    cr_assert_str_eq(out, "file:///home/u/data/objects");
    cr_assert_eq(dsq_ice_store_base("file://data/objects", "/home/u", out, sizeof out), 0);
    cr_assert_str_eq(out, "file:///home/u/data/objects");
    cr_assert_eq(dsq_ice_store_base("s3://bucket/pre/fix/", "/x", out, sizeof out), 0);
    cr_assert_str_eq(out, "s3://bucket/pre/fix");
    cr_assert_eq(dsq_ice_store_base("s3://bucket", "/x", out, sizeof out), 0);
    cr_assert_str_eq(out, "s3://bucket");
    cr_assert_eq(dsq_ice_store_base("s3://bucket/long", "/x", out, 8), -1);
}
