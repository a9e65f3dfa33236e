/* Unit tests: protocol/docs — the engine's structs as getSchema, getStats,
 * ping, list and drop documents. */
#include <criterion/criterion.h>
#include <string.h>

#include "protocol/docs.h"

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

Test(docs, schema)
{
    dsq_schema_column tcols[] = {
        {.name = "id", .type = "INTEGER", .pk = 1},
        {.name = "n", .type = "", .not_null = true, .dflt = "'x'"},
        {.name = "g", .type = "INT", .generated = true},
    };
    dsq_schema_column icols[] = {{.name = "n"}, {.name = NULL}};
    dsq_schema_object tables[] = {{.name = "t", .sql = "CREATE TABLE t(...)", .columns = tcols, .ncolumns = 3,
                                   .has_flags = true, .strict = true}};
    dsq_schema_object indexes[] = {
        {.name = "ix", .table = "t", .sql = NULL, .columns = icols, .ncolumns = 2, .unique = true}};
    dsq_schema_object triggers[] = {{.name = "tr", .table = "t", .sql = "CREATE TRIGGER tr ..."}};
    dsq_schema s = {.tables = {tables, 1}, .indexes = {indexes, 1}, .triggers = {triggers, 1}};
    dsq_call c = {.op = DSQ_OP_SCHEMA, .schema = &s};
    json_t *d = dsq_doc_of(&c);
    cr_assert_not_null(d);
    json_t *t = json_array_get(json_object_get(d, "tables"), 0);
    cr_assert_str_eq(str(t, "name"), "t");
    cr_assert(json_is_true(json_object_get(t, "strict")));
    cr_assert(json_is_false(json_object_get(t, "withoutRowid")));
    json_t *cols = json_object_get(t, "columns");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(cols, 0), "primaryKey")), 1);
    cr_assert(json_is_null(json_object_get(json_array_get(cols, 0), "default")));
    cr_assert_str_eq(str(json_array_get(cols, 1), "default"), "'x'");
    cr_assert(json_is_true(json_object_get(json_array_get(cols, 1), "notNull")));
    cr_assert_null(json_object_get(json_array_get(cols, 1), "generated"), "only generated columns say so");
    cr_assert(json_is_true(json_object_get(json_array_get(cols, 2), "generated")));
    json_t *ix = json_array_get(json_object_get(d, "indexes"), 0);
    cr_assert(json_is_null(json_object_get(ix, "sql")), "an automatic index has no SQL");
    cr_assert(json_is_true(json_object_get(ix, "unique")));
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(ix, "columns"), 0)), "n");
    cr_assert(json_is_null(json_array_get(json_object_get(ix, "columns"), 1)), "an expression");
    cr_assert_eq(json_array_size(json_object_get(d, "views")), 0);
    cr_assert_str_eq(str(json_array_get(json_object_get(d, "triggers"), 0), "table"), "t");
    json_decref(d);
}

Test(docs, stats)
{
    dsq_sub_stats subs[] = {{.lsn = 5, .lag_lsn = 2, .lag_bytes = 100, .reading_log = true}};
    dsq_db_stats st = {.lsn = 7, .pages = 3, .page_size = 4096, .durable_lsn = 7, .subs = subs, .nsubs = 1};
    strcpy(st.name, "db1");
    st.server.actors = 4;
    st.server.fsyncs = 9;
    dsq_call c = {.op = DSQ_OP_STATS, .stats = &st};
    json_t *d = dsq_doc_of(&c);
    cr_assert_not_null(d);
    json_t *db = json_object_get(d, "database");
    cr_assert_str_eq(str(db, "name"), "db1");
    cr_assert_eq(json_integer_value(json_object_get(db, "bytes")), 3 * 4096);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(db, "storage"), "fsyncs")), 9);
    json_t *cdc = json_object_get(db, "cdc");
    cr_assert_eq(json_integer_value(json_object_get(cdc, "subscriptions")), 1);
    json_t *sub = json_array_get(json_object_get(cdc, "subscribers"), 0);
    cr_assert_eq(json_integer_value(json_object_get(sub, "lagBytes")), 100);
    cr_assert(json_is_true(json_object_get(sub, "readingLog")));
    json_t *srv = json_object_get(d, "server");
    cr_assert_eq(json_integer_value(json_object_get(srv, "actors")), 4);
    cr_assert(json_is_null(json_object_get(srv, "objectStore")), "no object store configured");
    cr_assert(json_is_null(json_object_get(srv, "journal")));
    cr_assert(json_is_integer(json_object_get(json_object_get(srv, "heap"), "inUse")));
    json_decref(d);
}

Test(docs, ping_list_drop_and_errors)
{
    dsq_call c = {.op = DSQ_OP_PING, .lsn = 3, .time_ms = 1234};
    json_t *d = dsq_doc_of(&c);
    cr_assert(json_is_true(json_object_get(d, "pong")));
    cr_assert_eq(json_integer_value(json_object_get(d, "time")), 1234);
    json_decref(d);
    char *names[] = {"a", "b"};
    c = (dsq_call){.op = DSQ_OP_LIST, .names = names, .nnames = 2};
    d = dsq_doc_of(&c);
    cr_assert_eq(json_array_size(d), 2);
    cr_assert_str_eq(json_string_value(json_array_get(d, 1)), "b");
    json_decref(d);
    c = (dsq_call){.op = DSQ_OP_DROP};
    strcpy(c.db, "gone");
    d = dsq_doc_of(&c);
    cr_assert_str_eq(str(d, "database"), "gone");
    json_decref(d);
    c.err = -1;
    cr_assert_null(dsq_doc_of(&c), "a failed call has no document");
    c = (dsq_call){.op = DSQ_OP_QUERY};
    cr_assert_null(dsq_doc_of(&c));
}
