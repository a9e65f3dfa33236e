/* Unit tests: lake/table — Iceberg v2 table metadata: a new table holds
 * every field the spec requires of format version 2, snapshots chain
 * with sequence numbers and the main branch, schema changes keep field
 * ids, and what readers would reject is refused with the metadata left
 * as it was. */
#include <criterion/criterion.h>
#include <string.h>

#include "lake/table.h"

static json_t *fields(void)
{
    return json_loads("[{\"id\":1,\"name\":\"_op\",\"required\":true,\"type\":\"string\"},"
                      "{\"id\":2,\"name\":\"_lsn\",\"required\":true,\"type\":\"long\"},"
                      "{\"id\":3,\"name\":\"_commit_ts\",\"required\":true,\"type\":\"timestamptz\"},"
                      "{\"id\":7,\"name\":\"price\",\"required\":false,\"type\":\"decimal(10,2)\"}]",
                      0, NULL);
}

static json_t *spec(void)
{
    return json_loads("[{\"name\":\"commit_day\",\"transform\":\"day\",\"source-id\":3,\"field-id\":1000},"
                      "{\"name\":\"op_bucket\",\"transform\":\"bucket[16]\",\"source-id\":1,\"field-id\":1001}]",
                      0, NULL);
}

static json_t *table(void)
{
    json_t *f = fields(), *s = spec(), *p = json_pack("{s:s}", "write.format.default", "parquet");
    char err[256];
    json_t *md = dsq_ice_table_new("8f0e6c4a-1b2c-4d3e-9f00-112233445566", "file:///lake/shop/orders", f, s, p,
                                   1765000000000, err, sizeof err);
    cr_assert_not_null(md, "%s", err);
    json_decref(f);
    json_decref(s);
    json_decref(p);
    return md;
}

static json_int_t geti(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

Test(table, a_new_table_has_every_field_format_2_requires)
{
    json_t *md = table();
    static const char *const required[] = {"format-version", "table-uuid", "location", "last-sequence-number",
                                           "last-updated-ms", "last-column-id", "schemas", "current-schema-id",
                                           "partition-specs", "default-spec-id", "last-partition-id", "sort-orders",
                                           "default-sort-order-id", NULL};
    for (size_t i = 0; required[i]; i++)
        cr_assert_not_null(json_object_get(md, required[i]), "%s", required[i]);
    cr_assert_eq(geti(md, "format-version"), 2);
    cr_assert_eq(geti(md, "last-column-id"), 7, "the largest field id");
    cr_assert_eq(geti(md, "last-partition-id"), 1001);
    cr_assert_null(json_object_get(md, "current-snapshot-id"), "no snapshot yet");
    json_t *s0 = json_array_get(json_object_get(md, "schemas"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(s0, "type")), "struct");
    cr_assert_eq(json_array_size(json_object_get(s0, "fields")), 4);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(md, "properties"), "write.format.default")),
                     "parquet");
    json_decref(md);
}

Test(table, snapshots_chain_with_sequence_numbers_and_the_main_branch)
{
    json_t *md = table();
    char err[256];
    const char *sum[] = {"added-data-files", "1", "added-records", "100", NULL};
    cr_assert_eq(dsq_ice_table_append(md, 11, "file:///lake/m/snap-11.avro", 1765000001000, sum, err, sizeof err), 0,
                 "%s", err);
    cr_assert_eq(dsq_ice_table_append(md, 12, "file:///lake/m/snap-12.avro", 1765000002000, NULL, err, sizeof err), 0,
                 "%s", err);
    json_t *snaps = json_object_get(md, "snapshots");
    cr_assert_eq(json_array_size(snaps), 2);
    json_t *a = json_array_get(snaps, 0), *b = json_array_get(snaps, 1);
    cr_assert_null(json_object_get(a, "parent-snapshot-id"), "the first has no parent");
    cr_assert_eq(geti(b, "parent-snapshot-id"), 11);
    cr_assert_eq(geti(a, "sequence-number"), 1);
    cr_assert_eq(geti(b, "sequence-number"), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a, "summary"), "operation")), "append");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a, "summary"), "added-records")), "100");
    cr_assert_eq(geti(md, "current-snapshot-id"), 12);
    cr_assert_eq(geti(md, "last-sequence-number"), 2);
    cr_assert_eq(geti(md, "last-updated-ms"), 1765000002000);
    json_t *main_ref = json_object_get(json_object_get(md, "refs"), "main");
    cr_assert_eq(geti(main_ref, "snapshot-id"), 12);
    cr_assert_str_eq(json_string_value(json_object_get(main_ref, "type")), "branch");
    cr_assert_eq(json_array_size(json_object_get(md, "snapshot-log")), 2);
    /* The same id again: refused, nothing changed. */
    cr_assert_eq(dsq_ice_table_append(md, 11, "x", 1765000003000, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "in the table already") != NULL, "%s", err);
    cr_assert_eq(json_array_size(snaps), 2);
    cr_assert_eq(geti(md, "current-snapshot-id"), 12);
    json_decref(md);
}

Test(table, added_and_renamed_columns_make_new_schemas_and_keep_ids)
{
    json_t *md = table();
    char err[256];
    int id = 0;
    cr_assert_eq(dsq_ice_table_add_column(md, "note", "string", 1765000005000, &id, err, sizeof err), 0, "%s", err);
    cr_assert_eq(id, 8, "the next id after last-column-id");
    cr_assert_eq(geti(md, "last-column-id"), 8);
    cr_assert_eq(geti(md, "current-schema-id"), 1);
    cr_assert_eq(dsq_ice_table_rename_column(md, 7, "amount", 1765000006000, err, sizeof err), 0, "%s", err);
    cr_assert_eq(geti(md, "current-schema-id"), 2);
    json_t *schemas = json_object_get(md, "schemas");
    cr_assert_eq(json_array_size(schemas), 3, "old schemas stay (old files are read with them)");
    json_t *f2 = json_object_get(json_array_get(schemas, 2), "fields");
    cr_assert_eq(json_array_size(f2), 5);
    json_t *renamed = json_array_get(f2, 3), *added = json_array_get(f2, 4);
    cr_assert_eq(geti(renamed, "id"), 7);
    cr_assert_str_eq(json_string_value(json_object_get(renamed, "name")), "amount");
    cr_assert(json_is_false(json_object_get(added, "required")), "an added column is optional");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(schemas, 0),
                                                                                        "fields"), 3), "name")),
                     "price", "schema 0 is unchanged");
    /* Refusals leave it as it was. */
    cr_assert_eq(dsq_ice_table_add_column(md, "amount", "long", 1765000007000, &id, err, sizeof err), -1);
    cr_assert(strstr(err, "twice") != NULL, "%s", err);
    cr_assert_eq(dsq_ice_table_add_column(md, "tags", "list<string>", 1765000007000, &id, err, sizeof err), -1);
    cr_assert_eq(dsq_ice_table_rename_column(md, 99, "x", 1765000007000, err, sizeof err), -1);
    cr_assert_eq(geti(md, "current-schema-id"), 2);
    cr_assert_eq(geti(md, "last-column-id"), 8);
    cr_assert_eq(json_array_size(schemas), 3);
    json_decref(md);
}

Test(table, what_readers_reject_is_refused)
{
    char err[256];
    struct {
        const char *fields, *spec, *why;
    } bad[] = {
        {"[{\"id\":1,\"name\":\"a\",\"required\":true,\"type\":\"long\"},{\"id\":1,\"name\":\"b\",\"required\":true,"
         "\"type\":\"long\"}]", "[]", "twice"},
        {"[{\"id\":0,\"name\":\"a\",\"required\":true,\"type\":\"long\"}]", "[]", "positive"},
        {"[{\"id\":1,\"name\":\"a\",\"required\":true,\"type\":\"varchar\"}]", "[]", "primitive"},
        {"[{\"id\":1,\"name\":\"a\",\"required\":true,\"type\":\"long\"}]",
         "[{\"name\":\"p\",\"transform\":\"day\",\"source-id\":2,\"field-id\":1000}]", "source-id"},
        {"[{\"id\":1,\"name\":\"a\",\"required\":true,\"type\":\"long\"}]",
         "[{\"name\":\"p\",\"transform\":\"bucket[0]\",\"source-id\":1,\"field-id\":1000}]", "transform"},
        {"[{\"id\":1,\"name\":\"a\",\"required\":true,\"type\":\"long\"}]",
         "[{\"name\":\"p\",\"transform\":\"identity\",\"source-id\":1,\"field-id\":7}]", "1000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *f = json_loads(bad[i].fields, 0, NULL), *s = json_loads(bad[i].spec, 0, NULL);
        json_t *md = dsq_ice_table_new("u", "file:///t", f, s, NULL, 1, err, sizeof err);
        cr_assert_null(md, "case %zu accepted", i);
        cr_assert(strstr(err, bad[i].why) != NULL, "case %zu: '%s' lacks '%s'", i, err, bad[i].why);
        json_decref(f);
        json_decref(s);
    }
}

/* A clock gone back more than a minute would make metadata readers
 * refuse: refused here, nothing changed. */
Test(table, a_time_before_the_last_update_is_refused)
{
    json_t *md = table();
    char err[256];
    int id;
    cr_assert_eq(dsq_ice_table_append(md, 5, "m", 1765000000000 - 60001, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "before the table's last update") != NULL, "%s", err);
    cr_assert_eq(dsq_ice_table_add_column(md, "z", "long", 1765000000000 - 60001, &id, err, sizeof err), -1);
    cr_assert_eq(json_array_size(json_object_get(md, "snapshots")), 0);
    cr_assert_eq(dsq_ice_table_append(md, 5, "m", 1765000000000 - 59999, NULL, err, sizeof err), 0,
                 "within a minute: %s", err);
    json_decref(md);
}

Test(table, the_previous_metadata_file_is_logged)
{
    json_t *md = table();
    cr_assert_eq(dsq_ice_table_log_previous(md, "file:///lake/shop/orders/metadata/00000-a.metadata.json", 5), 0);
    json_t *e = json_array_get(json_object_get(md, "metadata-log"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(e, "metadata-file")),
                     "file:///lake/shop/orders/metadata/00000-a.metadata.json");
    cr_assert_eq(geti(e, "timestamp-ms"), 5);
    json_decref(md);
}
