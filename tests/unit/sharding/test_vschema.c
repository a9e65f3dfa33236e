/* Unit tests: sharding/vschema — the form the issue names is accepted and
 * read right; each mistake refused with the path of the value at fault. */
#include <criterion/criterion.h>
#include <string.h>

#include "sharding/vschema.h"

static const char *const good =
    "{\"keyspaces\": {\"shop\": {"
    "  \"shards\": [\"shop-0\", \"shop-1\", \"shop-2\", \"shop-3\"],"
    "  \"vindexes\": {\"h\": {\"type\": \"hash\"}, \"r\": {\"type\": \"range\", \"boundaries\": [1000, 5000, 9000]}},"
    "  \"tables\": {\"orders\": {\"column\": \"customer_id\", \"vindex\": \"h\"},"
    "             \"countries\": {\"type\": \"reference\"},"
    "             \"settings\": {\"type\": \"unsharded\", \"shard\": \"shop-0\"}}}}}";

Test(vschema, the_documented_form_is_read)
{
    char err[300];
    dsq_vschema *vs;
    cr_assert_eq(dsq_vschema_parse(good, strlen(good), &vs, err, sizeof err), 0, "%s", err);
    const dsq_vs_keyspace *ks = dsq_vschema_keyspace(vs, "shop");
    cr_assert_not_null(ks);
    cr_assert_null(dsq_vschema_keyspace(vs, "other"));
    cr_assert_eq(ks->nshards, 4);
    cr_assert_str_eq(ks->shards[3], "shop-3");
    cr_assert_eq(ks->nvindexes, 2);
    const dsq_vs_table *t = dsq_vs_table_find(ks, "ORDERS");
    cr_assert_not_null(t, "tables compare without regard to case");
    cr_assert_eq(t->type, DSQ_VS_SHARDED);
    cr_assert_str_eq(t->column, "customer_id");
    cr_assert_eq(dsq_vindex_kind(ks->vindexes[t->vindex].v), DSQ_VINDEX_HASH);
    cr_assert_eq(dsq_vs_table_find(ks, "countries")->type, DSQ_VS_REFERENCE);
    t = dsq_vs_table_find(ks, "settings");
    cr_assert_eq(t->type, DSQ_VS_UNSHARDED);
    cr_assert_eq(t->shard, 0);
    /* The range vindex places by its boundaries over the shards. */
    size_t r = strcmp(ks->vindexes[0].name, "r") == 0 ? 0 : 1, s;
    dsq_skey k = {.kind = DSQ_SKEY_INT, .i = 5000};
    cr_assert_eq(dsq_vindex_shard(ks->vindexes[r].v, &k, &s, err, sizeof err), 0);
    cr_assert_eq(s, 2);
    dsq_vschema_free(vs);
}

/* text must be refused with a message containing want. */
static void refused(const char *text, const char *want)
{
    char err[300] = "";
    dsq_vschema *vs = NULL;
    cr_assert_eq(dsq_vschema_parse(text, strlen(text), &vs, err, sizeof err), -1, "accepted: %s", text);
    cr_assert_null(vs);
    cr_assert(strstr(err, want) != NULL, "for %s\n  said: %s\n  want: %s", text, err, want);
}

Test(vschema, mistakes_are_refused_with_their_path)
{
    refused("[1]", "a VSchema is an object");
    refused("{\"keyspaces\": {}, \"extra\": 1}", "(top): unknown key \"extra\"");
    refused("{\"keyspace\": {}}", "unknown key \"keyspace\"");
    refused("{\"keyspaces\": 3}", "keyspaces: an object");
    refused("{\"keyspaces\": {\"9x\": {\"shards\": [\"a\"]}}}", "keyspaces.9x: a keyspace's name");
    refused("{\"keyspaces\": {\"k\": {\"shards\": []}}}", "keyspaces.k.shards: an array of one or more");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a/b\"]}}}", "keyspaces.k.shards[0]: a database name");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\", \"a\"]}}}", "keyspaces.k.shards[1]: \"a\" is named twice");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"]}, \"l\": {\"shards\": [\"a\"]}}}",
            "\"a\" is a shard of keyspace k already");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"vindexes\": {\"v\": {\"type\": \"md5\"}}}}}",
            "keyspaces.k.vindexes.v.type: one of \"hash\", \"fnv1a\", \"consistent_hash\", \"range\", \"lookup_unique\" (not \"md5\")");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\", \"b\"], \"vindexes\": {\"v\": {\"type\": \"range\", "
            "\"boundaries\": [1, 2]}}}}}",
            "keyspaces.k.vindexes.v: a range vindex over 2 shards needs 1 boundaries, not 2");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\", \"b\"], \"vindexes\": {\"v\": {\"type\": \"range\", "
            "\"boundaries\": [\"x\"]}}}}}",
            "keyspaces.k.vindexes.v.boundaries[0]: an integer");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"vindexes\": {\"v\": {\"type\": \"hash\", "
            "\"boundaries\": [1]}}}}}",
            "only a range vindex has boundaries");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"vindexes\": {\"v\": {\"type\": \"consistent_hash\", "
            "\"virtual_nodes\": 0}}}}}",
            "virtual_nodes: an integer from 1 to 1024");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"column\": \"c\", \"vindex\": "
            "\"nope\"}}}}}",
            "keyspaces.k.tables.t.vindex: keyspace k has no vindex \"nope\"");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"vindexes\": {\"v\": {\"type\": \"hash\"}}, \"tables\": "
            "{\"t\": {\"vindex\": \"v\"}}}}}",
            "keyspaces.k.tables.t.column: a sharded table needs");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"type\": \"unsharded\"}}}}}",
            "keyspaces.k.tables.t.shard: an unsharded table needs");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"type\": \"unsharded\", "
            "\"shard\": \"b\"}}}}}",
            "keyspaces.k.tables.t.shard: \"b\" is not a shard of keyspace k");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"type\": \"reference\", "
            "\"shard\": \"a\"}}}}}",
            "a reference table is on every shard");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"type\": \"mirrored\"}}}}}",
            "(not \"mirrored\")");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"], \"tables\": {\"t\": {\"type\": \"reference\"}, "
            "\"T\": {\"type\": \"reference\"}}}}}",
            "keyspaces.k.tables.T: a table of that name (without regard to case) is there already");
    refused("{\"keyspaces\": {\"k\": {\"shards\": [\"a\"]}, \"k\": {\"shards\": [\"b\"]}}}", "not JSON: duplicate");
}
