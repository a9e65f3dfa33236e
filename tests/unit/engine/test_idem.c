/* Unit tests: engine — idempotency keys (idem.c). A keyed write sent
 * again gets its first answer and runs once; a key used for another
 * request is refused; failures and reads record nothing; the record
 * commits with the write (a transaction's COMMIT included), survives a
 * restart, expires with the window and is pruned by later writes; clients
 * cannot touch the table. Driven without an event loop, as test_engine.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "tests/unit/support/engine_cfg.h"
#include "tests/unit/support/engine_wait.h"

static dsq_engine *E;
static char dir[64];
static int ndone;

static void on_done(dsq_call *c)
{
    (void)c;
    ndone++;
}

static void start(uint64_t window_ms)
{
    dsq_engine_cfg c = test_engine_cfg(dir);
    c.workers = 2;
    c.group_sync = false;
    c.wake = test_wake;
    c.idempotency_window_ms = window_ms;
    char err[256];
    E = dsq_engine_new(&c, err, sizeof err);
    cr_assert_not_null(E, "%s", err);
}

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-test-idem-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ndone = 0;
    start(60000);
}

static void teardown(void)
{
    dsq_engine_free(E);
    E = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(idem, .init = setup, .fini = teardown, .timeout = 60);

/* A call of up to 4 statements, each with up to 2 parameters. */
typedef struct tcall {
    dsq_call c;
    dsq_stmt_req r[4];
    dsq_param p[4][2];
} tcall;

static tcall *mk(dsq_op op, const char *key)
{
    tcall *t = calloc(1, sizeof *t);
    t->c.op = op;
    t->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    t->c.done = on_done;
    t->c.atomic = true;
    t->c.stmts = t->r;
    if (key != NULL) {
        t->c.idem_key = key;
        t->c.idem_key_len = strlen(key);
    }
    return t;
}

/* Statement `sql` added, with one text parameter unless `text` is NULL. */
static tcall *stmt(tcall *t, const char *sql, const char *text)
{
    dsq_stmt_req *r = &t->r[t->c.nstmts++];
    r->sql = sql;
    r->sql_len = strlen(sql);
    if (text != NULL) {
        dsq_param *p = &t->p[t->c.nstmts - 1][0];
        p->v.type = DSQ_V_TEXT;
        p->v.p = text;
        p->v.n = strlen(text);
        r->params = p;
        r->nparams = 1;
    }
    return t;
}

static tcall *run(const char *db, tcall *t)
{
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, db, &t->c), 0, "%s", t->c.msg);
    test_wait(E, &ndone, before + 1, "finished calls");
    return t;
}

static void tfree(tcall *t)
{
    dsq_call_reset(&t->c);
    free(t);
}

/* A query with a key (NULL: none) and at most one text parameter. */
static tcall *q(const char *db, const char *key, const char *sql, const char *text)
{
    return run(db, stmt(mk(DSQ_OP_QUERY, key), sql, text));
}

static void ok(const char *db, const char *sql)
{
    tcall *t = q(db, NULL, sql, NULL);
    cr_assert_eq(t->c.err, 0, "%s: %s", sql, t->c.msg);
    tfree(t);
}

/* The first value of a query's result, an integer. */
static int64_t count(const char *db, const char *sql)
{
    tcall *t = q(db, NULL, sql, NULL);
    cr_assert_eq(t->c.err, 0, "%s: %s", sql, t->c.msg);
    size_t pos = 0;
    dsq_value v;
    cr_assert(dsq_result_next(&t->c.results[0], &pos, &v));
    int64_t n = v.i;
    tfree(t);
    return n;
}

/* Rows of dosqld's own table (a call allowed to read it). */
static int64_t records(const char *db)
{
    tcall *t = stmt(mk(DSQ_OP_QUERY, NULL), "SELECT count(*) FROM _dsq_idempotency", NULL);
    t->c.internal_tables = true;
    run(db, t);
    int64_t n = -1;
    if (t->c.err == 0) {
        size_t pos = 0;
        dsq_value v;
        cr_assert(dsq_result_next(&t->c.results[0], &pos, &v));
        n = v.i;
    } else {
        cr_assert(strstr(t->c.msg, "no such table") != NULL, "%s", t->c.msg);
        n = 0;
    }
    tfree(t);
    return n;
}

static void same_result(const dsq_result *a, const dsq_result *b)
{
    cr_assert_eq(a->ncols, b->ncols);
    for (int i = 0; i < a->ncols; i++) {
        cr_assert_str_eq(a->names[i], b->names[i]);
        cr_assert_eq(a->decltypes[i] == NULL, b->decltypes[i] == NULL);
        if (a->decltypes[i] != NULL)
            cr_assert_str_eq(a->decltypes[i], b->decltypes[i]);
    }
    cr_assert_eq(a->nrows, b->nrows);
    cr_assert_eq(a->rows.len, b->rows.len);
    cr_assert(a->rows.len == 0 || memcmp(a->rows.data, b->rows.data, a->rows.len) == 0, "the rows differ");
    cr_assert_eq(a->rows_affected, b->rows_affected);
    cr_assert_eq(a->last_insert_rowid, b->last_insert_rowid);
    cr_assert_eq(a->lsn, b->lsn);
}

static const char INS[] = "INSERT INTO t(v) VALUES (?) RETURNING id, v, 2.5 AS r, x'00ff' AS b, NULL AS n";

Test(idem, a_query_sent_again_runs_once_and_answers_as_the_first_time)
{
    ok("a", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    tcall *first = q("a", "k-1", INS, "x");
    cr_assert_eq(first->c.err, 0, "%s", first->c.msg);
    cr_assert_not(first->c.replayed);
    tcall *again = q("a", "k-1", INS, "x");
    cr_assert_eq(again->c.err, 0, "%s", again->c.msg);
    cr_assert(again->c.replayed, "the second one is a replay");
    cr_assert_eq(again->c.nresults, 1);
    same_result(&first->c.results[0], &again->c.results[0]);
    cr_assert_eq(again->c.lsn, first->c.lsn);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1, "inserted once");
    cr_assert_eq(count("a", "SELECT max(id) FROM t"), 1);
    dsq_engine_stats s;
    dsq_engine_stats_get(E, &s);
    cr_assert_eq(s.idem_replays, 1);
    /* Without a key it runs again; with another key too. */
    tfree(q("a", NULL, INS, "x"));
    tfree(q("a", "k-2", INS, "x"));
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 3);
    tfree(first);
    tfree(again);
}

Test(idem, a_key_used_for_another_request_is_refused)
{
    ok("a", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    tfree(q("a", "k", INS, "x"));
    const char *other[][2] = {{INS, "y"}, {"INSERT INTO t(v) VALUES (?)", "x"}};
    for (size_t i = 0; i < 2; i++) {
        tcall *t = q("a", "k", other[i][0], other[i][1]);
        cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST, "%s", t->c.msg);
        cr_assert(strstr(t->c.msg, "idempotencyKey \"k\" was used for a different request") != NULL, "%s",
                  t->c.msg);
        tfree(t);
    }
    /* The same text as one statement of a batch is another request. */
    tcall *b = run("a", stmt(mk(DSQ_OP_BATCH, "k"), INS, "x"));
    cr_assert_eq(b->c.code, DSQ_CODE_INVALID_REQUEST, "%s", b->c.msg);
    tfree(b);
    /* A read with it is refused as well (a different request). */
    tcall *r = q("a", "k", "SELECT 1", NULL);
    cr_assert_eq(r->c.code, DSQ_CODE_INVALID_REQUEST, "%s", r->c.msg);
    tfree(r);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
}

Test(idem, failures_and_reads_record_nothing)
{
    ok("a", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
    ok("a", "INSERT INTO t(v) VALUES ('x')");
    tcall *t = q("a", "k", "INSERT INTO t(v) VALUES (?)", "x");
    cr_assert_eq(t->c.code, DSQ_CODE_CONSTRAINT_VIOLATION, "%s", t->c.msg);
    tfree(t);
    cr_assert_eq(records("a"), 0, "a failed write records nothing");
    ok("a", "DELETE FROM t");
    t = q("a", "k", "INSERT INTO t(v) VALUES (?)", "x");
    cr_assert_eq(t->c.err, 0, "sent again, it runs: %s", t->c.msg);
    cr_assert_not(t->c.replayed);
    tfree(t);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
    /* A read runs every time, its key never recorded. */
    for (int i = 0; i < 2; i++) {
        t = q("a", "read", "SELECT count(*) FROM t", NULL);
        cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
        cr_assert_not(t->c.replayed);
        tfree(t);
    }
    cr_assert_eq(records("a"), 1);
    /* A read-scope token neither looks keys up nor records them. */
    t = stmt(mk(DSQ_OP_QUERY, "k"), "INSERT INTO t(v) VALUES (?)", "x");
    t->c.scope = DSQ_SCOPE_R;
    run("a", t);
    cr_assert_eq(t->c.code, DSQ_CODE_FORBIDDEN, "%s", t->c.msg);
    tfree(t);
}

Test(idem, clients_cannot_read_or_write_the_table)
{
    ok("a", "CREATE TABLE t(v)");
    tfree(q("a", "k", "INSERT INTO t VALUES (?)", "x"));
    const char *sql[] = {"SELECT * FROM _dsq_idempotency", "DELETE FROM _dsq_idempotency",
                         "DROP TABLE _dsq_idempotency"};
    for (size_t i = 0; i < 3; i++) {
        tcall *t = q("a", NULL, sql[i], NULL);
        cr_assert_eq(t->c.code, DSQ_CODE_FORBIDDEN, "%s: %s", sql[i], t->c.msg);
        tfree(t);
    }
    tcall *s = run("a", mk(DSQ_OP_SCHEMA, NULL));
    cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
    cr_assert_eq(s->c.schema->tables.n, 1, "the schema shows the client's table only");
    cr_assert_eq(s->c.schema->indexes.n, 0);
    tfree(s);
}

Test(idem, an_atomic_batch_is_recorded_whole_a_non_atomic_one_refused)
{
    ok("a", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    tcall *b1 = run("a", stmt(stmt(mk(DSQ_OP_BATCH, "b"), INS, "x"), "SELECT id, v FROM t", NULL));
    cr_assert_eq(b1->c.err, 0, "%s", b1->c.msg);
    tcall *b2 = run("a", stmt(stmt(mk(DSQ_OP_BATCH, "b"), INS, "x"), "SELECT id, v FROM t", NULL));
    cr_assert_eq(b2->c.err, 0, "%s", b2->c.msg);
    cr_assert(b2->c.replayed);
    cr_assert_eq(b2->c.nresults, 2);
    same_result(&b1->c.results[0], &b2->c.results[0]);
    same_result(&b1->c.results[1], &b2->c.results[1]);
    cr_assert_eq(b2->c.lsn, b1->c.lsn);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
    tfree(b1);
    tfree(b2);
    tcall *na = stmt(mk(DSQ_OP_BATCH, "na"), "INSERT INTO t(v) VALUES ('y')", NULL);
    na->c.atomic = false;
    run("a", na);
    cr_assert_eq(na->c.code, DSQ_CODE_INVALID_REQUEST, "%s", na->c.msg);
    cr_assert(strstr(na->c.msg, "atomic") != NULL, "%s", na->c.msg);
    tfree(na);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
}

static tcall *begin(const char *db)
{
    tcall *t = run(db, mk(DSQ_OP_BEGIN, NULL));
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    return t;
}

static tcall *commit(const char *db, const char *txn, const char *key)
{
    tcall *t = mk(DSQ_OP_COMMIT, key);
    strcpy(t->c.txn, txn);
    return run(db, t);
}

Test(idem, a_commit_sent_again_answers_as_the_first_time)
{
    ok("a", "CREATE TABLE t(v)");
    tcall *b = begin("a");
    tcall *w = stmt(mk(DSQ_OP_QUERY, NULL), "INSERT INTO t VALUES (?)", "x");
    strcpy(w->c.txn, b->c.txn_out);
    run("a", w);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    cr_assert_eq(records("a"), 0, "nothing is recorded before the COMMIT");
    tcall *c1 = commit("a", b->c.txn_out, "c");
    cr_assert_eq(c1->c.err, 0, "%s", c1->c.msg);
    tcall *c2 = commit("a", b->c.txn_out, "c");
    cr_assert_eq(c2->c.err, 0, "sent again, the COMMIT answers as the first time: %s", c2->c.msg);
    cr_assert(c2->c.replayed);
    cr_assert_eq(c2->c.lsn, c1->c.lsn, "with its LSN");
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
    /* Without its key, the transaction is gone. */
    tcall *c3 = commit("a", b->c.txn_out, NULL);
    cr_assert_eq(c3->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "%s", c3->c.msg);
    /* The key for another transaction's COMMIT: refused. */
    tcall *b2 = begin("a");
    tcall *c4 = commit("a", b2->c.txn_out, "c");
    cr_assert_eq(c4->c.code, DSQ_CODE_INVALID_REQUEST, "%s", c4->c.msg);
    tcall *c5 = commit("a", b2->c.txn_out, "c2");
    cr_assert_eq(c5->c.err, 0, "the transaction stayed open: %s", c5->c.msg);
    cr_assert_eq(c5->c.lsn, c1->c.lsn + 1, "a keyed COMMIT of a transaction that wrote nothing commits its record");
    tfree(c1);
    tfree(c2);
    tfree(c3);
    tfree(c4);
    tfree(c5);
    tfree(b2);
    tfree(b);
}

Test(idem, a_write_in_a_transaction_records_with_it_and_goes_with_its_rollback)
{
    ok("a", "CREATE TABLE t(v)");
    tcall *b = begin("a");
    tcall *w = stmt(mk(DSQ_OP_QUERY, "in"), "INSERT INTO t VALUES (?)", "x");
    strcpy(w->c.txn, b->c.txn_out);
    run("a", w);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tcall *w2 = stmt(mk(DSQ_OP_QUERY, "in"), "INSERT INTO t VALUES (?)", "x");
    strcpy(w2->c.txn, b->c.txn_out);
    run("a", w2);
    cr_assert(w2->c.replayed, "sent again in its transaction: %s", w2->c.msg);
    same_result(&w->c.results[0], &w2->c.results[0]);
    tcall *rb = mk(DSQ_OP_ROLLBACK, NULL);
    strcpy(rb->c.txn, b->c.txn_out);
    run("a", rb);
    cr_assert_eq(rb->c.err, 0, "%s", rb->c.msg);
    cr_assert_eq(records("a"), 0, "the record went with the rollback");
    tcall *w3 = q("a", "in", "INSERT INTO t VALUES (?)", "x");
    cr_assert_eq(w3->c.err, 0, "%s", w3->c.msg);
    cr_assert_not(w3->c.replayed, "its key was forgotten with the rollback");
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
    tfree(w);
    tfree(w2);
    tfree(w3);
    tfree(rb);
    tfree(b);
}

Test(idem, the_record_survives_a_restart)
{
    ok("a", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    tcall *first = q("a", "k", INS, "x");
    cr_assert_eq(first->c.err, 0, "%s", first->c.msg);
    dsq_engine_free(E);
    start(60000);
    tcall *again = q("a", "k", INS, "x");
    cr_assert(again->c.replayed, "%s", again->c.msg);
    same_result(&first->c.results[0], &again->c.results[0]);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 1);
    tfree(first);
    tfree(again);
}

Test(idem, records_expire_with_the_window_and_later_writes_prune_them)
{
    dsq_engine_free(E);
    start(1000);
    ok("a", "CREATE TABLE t(v)");
    char keys[20][8];
    for (int i = 0; i < 20; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        tfree(q("a", keys[i], "INSERT INTO t VALUES (?)", keys[i]));
    }
    cr_assert_eq(records("a"), 20);
    tcall *t = q("a", "k0", "INSERT INTO t VALUES (?)", "k0");
    cr_assert(t->c.replayed, "within the window: %s", t->c.msg);
    tfree(t);
    usleep(1200 * 1000);
    /* Past it: a keyed write prunes 16 expired records besides writing
     * its own ... */
    tfree(q("a", "fresh", "INSERT INTO t VALUES ('f')", NULL));
    cr_assert_eq(records("a"), 20 - 16 + 1);
    /* ... and an expired key is forgotten: its write runs again (the
     * rest of the expired records pruned with it). */
    t = q("a", "k19", "INSERT INTO t VALUES (?)", "k19");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_not(t->c.replayed);
    tfree(t);
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 22);
    cr_assert_eq(records("a"), 2, "fresh and k19 are left");
}

Test(idem, window_zero_remembers_nothing)
{
    dsq_engine_free(E);
    start(0);
    ok("a", "CREATE TABLE t(v)");
    for (int i = 0; i < 2; i++) {
        tcall *t = q("a", "k", "INSERT INTO t VALUES ('x')", NULL);
        cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
        cr_assert_not(t->c.replayed);
        tfree(t);
    }
    cr_assert_eq(count("a", "SELECT count(*) FROM t"), 2);
    cr_assert_eq(records("a"), 0);
}
