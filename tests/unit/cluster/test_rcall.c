/* rcall: a call and its outcome survive the trip between nodes whole —
 * statements, parameters of every type (named and positional, empty and
 * binary), flags, transaction ids; results with NULLs, declared types,
 * per-statement errors; a schema — and a message cut short or with a byte
 * changed anywhere is refused, never read past its end. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/rcall.h"

static dsq_call call_of(dsq_stmt_req *st, size_t n)
{
    dsq_call c = {0};
    c.op = DSQ_OP_BATCH;
    c.stmts = st;
    c.nstmts = n;
    c.atomic = true;
    c.internal_tables = true;
    c.scope = 3;
    c.txn_timeout_ms = 12345;
    memcpy(c.txn, "0123456789abcdef0123456789abcdef", 33);
    memcpy(c.prepare_id, "fedcba9876543210fedcba9876543210", 33);
    c.target_db = "_dsq_2pc.shop";
    return c;
}

Test(rcall, a_call_round_trips)
{
    static const char blob[] = {0, 1, 2, (char)0xff};
    dsq_param p1[] = {
        {NULL, {.type = DSQ_V_INT, .i = -42}},
        {NULL, {.type = DSQ_V_REAL, .d = 2.5}},
        {NULL, {.type = DSQ_V_TEXT, .p = "héllo", .n = 6}},
        {NULL, {.type = DSQ_V_BLOB, .p = blob, .n = 4}},
        {NULL, {.type = DSQ_V_NULL}},
        {NULL, {.type = DSQ_V_TEXT, .p = "", .n = 0}},
    };
    dsq_param p2[] = {{"who", {.type = DSQ_V_INT, .i = INT64_MIN}}};
    dsq_stmt_req st[] = {
        {.sql = "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", .sql_len = 38, .params = p1, .nparams = 6},
        {.sql = "SELECT :who", .sql_len = 11, .params = p2, .nparams = 1, .named = true},
        {.sql = "", .sql_len = 0},
    };
    dsq_call c = call_of(st, 3);
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_rcall_encode_call(&b, 77, "shop-1", &c), 0);
    dsq_rcall_in *in = dsq_rcall_decode_call(b.data, b.len);
    cr_assert_not_null(in);
    cr_assert_eq(in->id, 77);
    cr_assert_str_eq(in->db, "shop-1");
    cr_assert_eq(in->call.op, DSQ_OP_BATCH);
    cr_assert(in->call.atomic && in->call.internal_tables && !in->call.immediate && !in->call.read_only);
    cr_assert_eq(in->call.scope, 3);
    cr_assert_eq(in->call.txn_timeout_ms, 12345);
    cr_assert_str_eq(in->call.txn, c.txn);
    cr_assert_str_eq(in->call.prepare_id, c.prepare_id);
    cr_assert_str_eq(in->call.target_db, "_dsq_2pc.shop");
    cr_assert_eq(in->call.nstmts, 3);
    const dsq_stmt_req *s = in->call.stmts;
    cr_assert_eq(s[0].sql_len, 38);
    cr_assert_eq(memcmp(s[0].sql, st[0].sql, 38), 0);
    cr_assert_eq(s[0].nparams, 6);
    cr_assert_eq(s[0].params[0].v.i, -42);
    cr_assert_eq(s[0].params[1].v.d, 2.5);
    cr_assert_eq(s[0].params[2].v.n, 6);
    cr_assert_eq(memcmp(s[0].params[2].v.p, "héllo", 6), 0);
    cr_assert_eq(s[0].params[3].v.type, DSQ_V_BLOB);
    cr_assert_eq(memcmp(s[0].params[3].v.p, blob, 4), 0);
    cr_assert_eq(s[0].params[4].v.type, DSQ_V_NULL);
    cr_assert_eq(s[0].params[5].v.type, DSQ_V_TEXT);
    cr_assert_eq(s[0].params[5].v.n, 0);
    cr_assert(s[1].named);
    cr_assert_str_eq(s[1].params[0].name, "who");
    cr_assert_eq(s[1].params[0].v.i, INT64_MIN);
    cr_assert_eq(s[2].sql_len, 0);
    dsq_rcall_in_free(in);
    dsq_buf_free(&b);
}

Test(rcall, a_call_cut_short_or_changed_is_refused)
{
    dsq_param p[] = {{NULL, {.type = DSQ_V_TEXT, .p = "abc", .n = 3}}, {"n", {.type = DSQ_V_INT, .i = 7}}};
    dsq_stmt_req st[] = {{.sql = "SELECT ?", .sql_len = 8, .params = p, .nparams = 2}};
    dsq_call c = call_of(st, 1);
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_rcall_encode_call(&b, 1, "db", &c), 0);
    for (size_t n = 0; n < b.len; n++)
        cr_assert_null(dsq_rcall_decode_call(b.data, n), "a call cut at %zu bytes was read", n);
    /* One more byte at the end: refused too. */
    dsq_buf_append(&b, "x", 1);
    cr_assert_null(dsq_rcall_decode_call(b.data, b.len));
    b.len--;
    /* Any byte changed: refused or read whole — never past the end. */
    for (size_t i = 0; i < b.len; i++)
        for (int v = 0; v < 256; v += 51) {
            char *m = malloc(b.len);
            memcpy(m, b.data, b.len);
            m[i] = (char)v;
            dsq_rcall_in_free(dsq_rcall_decode_call(m, b.len));
            free(m);
        }
    /* An op that does not travel. */
    c.op = DSQ_OP_DROP;
    dsq_buf_reset(&b);
    cr_assert_eq(dsq_rcall_encode_call(&b, 1, "db", &c), 0);
    cr_assert_null(dsq_rcall_decode_call(b.data, b.len));
    cr_assert(!dsq_rcall_op_ok(DSQ_OP_APPLY));
    dsq_buf_free(&b);
}

static void add(dsq_result *r, dsq_value v) { cr_assert_eq(dsq_result_add_value(r, &v), 0); }

static char *dup(const char *s) { return s ? strdup(s) : NULL; }

Test(rcall, a_reply_round_trips)
{
    dsq_call c = {0};
    c.lsn = 99;
    memcpy(c.txn_out, "00112233445566778899aabbccddeeff", 33);
    c.nresults = 2;
    c.results = calloc(2, sizeof *c.results);
    dsq_result *r = &c.results[0];
    r->ncols = 2;
    r->names = calloc(2, sizeof *r->names);
    r->decltypes = calloc(2, sizeof *r->decltypes);
    r->names[0] = dup("id");
    r->names[1] = dup("v");
    r->decltypes[0] = dup("INTEGER"); /* (the second has none) */
    add(r, (dsq_value){.type = DSQ_V_INT, .i = 1});
    add(r, (dsq_value){.type = DSQ_V_NULL});
    add(r, (dsq_value){.type = DSQ_V_INT, .i = 2});
    add(r, (dsq_value){.type = DSQ_V_BLOB, .p = "\0\1", .n = 2});
    r->nrows = 2;
    r->rows_affected = 5;
    r->last_insert_rowid = -3;
    r->lsn = 98;
    c.results[1].error = dup("UNIQUE constraint failed: t.id");
    c.results[1].code = DSQ_CODE_CONSTRAINT_VIOLATION;
    c.schema = calloc(1, sizeof *c.schema);
    c.schema->tables.n = 1;
    c.schema->tables.v = calloc(1, sizeof(dsq_schema_object));
    dsq_schema_object *o = &c.schema->tables.v[0];
    o->name = dup("t");
    o->sql = dup("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
    o->has_flags = o->strict = true;
    o->ncolumns = 1;
    o->columns = calloc(1, sizeof *o->columns);
    o->columns[0] = (dsq_schema_column){.name = dup("id"), .type = dup("INTEGER"), .pk = 1, .dflt = dup("0")};
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_rcall_encode_reply(&b, 5, &c), 0);
    cr_assert_eq(dsq_rcall_reply_id(b.data, b.len), 5);
    dsq_call d = {0};
    cr_assert_eq(dsq_rcall_decode_reply(b.data, b.len, &d), 0);
    cr_assert_eq(d.err, 0);
    cr_assert_eq(d.lsn, 99);
    cr_assert_str_eq(d.txn_out, c.txn_out);
    cr_assert_eq(d.nresults, 2);
    dsq_result *e = &d.results[0];
    cr_assert_eq(e->ncols, 2);
    cr_assert_str_eq(e->names[1], "v");
    cr_assert_str_eq(e->decltypes[0], "INTEGER");
    cr_assert_null(e->decltypes[1]);
    cr_assert_eq(e->nrows, 2);
    cr_assert_eq(e->rows_affected, 5);
    cr_assert_eq(e->last_insert_rowid, -3);
    cr_assert_eq(e->lsn, 98);
    cr_assert_eq(e->rows.len, r->rows.len);
    cr_assert_eq(memcmp(e->rows.data, r->rows.data, r->rows.len), 0);
    cr_assert_str_eq(d.results[1].error, "UNIQUE constraint failed: t.id");
    cr_assert_eq(d.results[1].code, DSQ_CODE_CONSTRAINT_VIOLATION);
    cr_assert_not_null(d.schema);
    cr_assert_eq(d.schema->tables.n, 1);
    cr_assert_str_eq(d.schema->tables.v[0].sql, o->sql);
    cr_assert(d.schema->tables.v[0].strict && !d.schema->tables.v[0].without_rowid);
    cr_assert_str_eq(d.schema->tables.v[0].columns[0].dflt, "0");
    cr_assert_eq(d.schema->tables.v[0].columns[0].pk, 1);
    cr_assert_null(d.schema->tables.v[0].table);
    /* Cut short anywhere: refused, with the call failed and nothing left. */
    for (size_t n = 0; n < b.len; n++) {
        dsq_call f = {0};
        cr_assert_eq(dsq_rcall_decode_reply(b.data, n, &f), -1, "a reply cut at %zu bytes was read", n);
        cr_assert_eq(f.err, -1);
        cr_assert_null(f.results);
        cr_assert_null(f.schema);
    }
    /* An error travels with its code and message, and no results. */
    dsq_call_reset(&d);
    memset(&d, 0, sizeof d);
    c.err = -1;
    c.code = DSQ_CODE_SERIALIZATION_FAILURE;
    snprintf(c.msg, sizeof c.msg, "busy");
    dsq_buf_reset(&b);
    cr_assert_eq(dsq_rcall_encode_reply(&b, 6, &c), 0);
    cr_assert_eq(dsq_rcall_decode_reply(b.data, b.len, &d), 0);
    cr_assert_eq(d.err, -1);
    cr_assert_eq(d.code, DSQ_CODE_SERIALIZATION_FAILURE);
    cr_assert_str_eq(d.msg, "busy");
    cr_assert_eq(d.nresults, 0);
    cr_assert_null(d.schema);
    dsq_call_reset(&c);
    dsq_call_reset(&d);
    dsq_buf_free(&b);
}
