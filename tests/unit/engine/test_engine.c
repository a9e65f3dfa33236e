/* Unit tests: engine — actors, SQL, transactions, streams, scheduling,
 * hibernation, shutdown — driven without an event loop: the wake hook
 * signals a condition variable and the test polls. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/runtime/engine_int.h"
#include "tests/unit/support/nofds.h"
#include "tests/unit/support/engine_cfg.h"
#include "tests/unit/support/nofds.h"
#include "tests/unit/support/engine_wait.h"

/* ---- harness ------------------------------------------------------------------- */

static dsq_engine *E;
static char dir[64];
static int ndone;                  /* done hooks run */
static dsq_call *order[512];       /* calls in the order they finished */

static void on_done(dsq_call *c)
{
    if (ndone < 512)
        order[ndone] = c;
    ndone++;
}

static dsq_engine_cfg cfg_default(void)
{
    /* The tests' engine (support/engine_cfg.h): two workers, a short
     * query timeout, and the values the tests below count on. */
    dsq_engine_cfg c = test_engine_cfg(dir);
    c.workers = 2;
    c.idle_timeout_ms = 60000;
    c.max_open_actors = 100;
    c.max_queue = 1000;
    c.batch_per_turn = 16;
    c.query_timeout_ms = 2000;
    c.txn_timeout_ms = 30000;
    c.max_columns = 2000;
    c.max_params = 999;
    c.cache_pages = 500;
    c.group_sync = false;
    c.wake = test_wake;
    return c;
}

static void start_with(dsq_engine_cfg c)
{
    char err[256];
    E = dsq_engine_new(&c, err, sizeof err);
    cr_assert_not_null(E, "%s", err);
}

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-test-engine-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ndone = 0;
    start_with(cfg_default());
}

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

static void teardown(void)
{
    dsq_engine_free(E);
    E = NULL;
    rm_rf(dir);
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 60);

/* Poll until `n` finished calls in total; fail after 10 s. */
static void wait_done(int n) { test_wait(E, &ndone, n, "finished calls"); }

/* Poll until no more than `n` calls and engine messages (expiries,
 * hibernations) are in flight: all that was posted beyond those has
 * finished. An open stream's call is in flight. */
static void wait_in_flight(uint64_t n)
{
    ENGINE_WAIT_UNTIL(E, E->inflight <= n, "%llu calls and engine messages in flight, want %llu",
                      (unsigned long long)E->inflight, (unsigned long long)n);
}

/* Whether call `c` waits in its actor's mailbox for another client's
 * transaction to end (it was sent back, wait_writer), with the actor at
 * rest: nothing runs it until something new is posted there. */
static bool parked(const dsq_call *c)
{
    dsq_actor *a = c->actor;
    pthread_mutex_lock(&a->mu);
    bool in_mail = false;
    dsq_call *m;
    dsq_queue_foreach(m, &a->mail, link)
        in_mail = in_mail || m == c;
    bool p = in_mail && c->wait_writer && a->sched == ACTOR_IDLE;
    pthread_mutex_unlock(&a->mu);
    return p;
}

/* Whether actor `a` is on a worker now. */
static bool running(dsq_actor *a)
{
    pthread_mutex_lock(&a->mu);
    bool r = a->sched == ACTOR_RUNNING;
    pthread_mutex_unlock(&a->mu);
    return r;
}

static uint64_t txns_open(void)
{
    dsq_engine_stats s;
    dsq_engine_stats_get(E, &s);
    return s.txns_open;
}

/* A call with one statement; params given as a printf-like list of
 * type letters: i (int64), d (double), s (text), n (null), b (blob
 * pointer + length). Named when names != NULL. */
typedef struct tcall {
    dsq_call c;
    dsq_stmt_req r;
    dsq_param p[8];
} tcall;

static tcall *mk(dsq_op op, const char *sql)
{
    tcall *t = calloc(1, sizeof *t);
    t->c.op = op;
    t->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    t->c.done = on_done;
    t->c.atomic = true;
    t->c.chunk_rows = 2;
    if (sql) {
        t->r.sql = sql;
        t->r.sql_len = strlen(sql);
        t->c.stmts = &t->r;
        t->c.nstmts = 1;
    }
    return t;
}

static void pint(tcall *t, const char *name, int64_t v)
{
    dsq_param *p = &t->p[t->r.nparams++];
    p->name = name;
    p->v.type = DSQ_V_INT;
    p->v.i = v;
    t->r.params = t->p;
    t->r.named = name != NULL;
}

static void ptext(tcall *t, const char *name, const char *v)
{
    dsq_param *p = &t->p[t->r.nparams++];
    p->name = name;
    p->v.type = DSQ_V_TEXT;
    p->v.p = v;
    p->v.n = strlen(v);
    t->r.params = t->p;
    t->r.named = name != NULL;
}

static void tfree(tcall *t)
{
    dsq_call_reset(&t->c);
    free(t);
}

/* Submit and wait for this one call. */
static tcall *run(const char *db, tcall *t)
{
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, db, &t->c), 0, "%s", t->c.msg);
    wait_done(before + 1);
    return t;
}

static tcall *q(const char *db, const char *sql)
{
    return run(db, mk(DSQ_OP_QUERY, sql));
}

static void ok(const char *db, const char *sql)
{
    tcall *t = q(db, sql);
    cr_assert_eq(t->c.err, 0, "%s: %s", sql, t->c.msg);
    tfree(t);
}

/* The i-th value (row-major) of a result. */
static dsq_value val(const dsq_result *r, size_t idx)
{
    size_t pos = 0;
    dsq_value v;
    for (size_t i = 0; i <= idx; i++)
        cr_assert(dsq_result_next(r, &pos, &v), "no value %zu", idx);
    return v;
}

static void expect_err(const char *db, const char *sql, dsq_code code, const char *fragment)
{
    tcall *t = q(db, sql);
    cr_assert_neq(t->c.err, 0, "%s: should fail", sql);
    cr_assert_eq(t->c.code, code, "%s: code %s (%s)", sql, dsq_code_name(t->c.code), t->c.msg);
    if (fragment)
        cr_assert(strstr(t->c.msg, fragment) != NULL, "%s: message '%s' lacks '%s'", sql, t->c.msg,
                  fragment);
    tfree(t);
}

/* ---- SQL ---------------------------------------------------------------------------- */

Test(engine, create_insert_select_and_lsn)
{
    tcall *t = q("app", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    uint64_t lsn1 = t->c.lsn;
    cr_assert_eq(lsn1, 1, "the first write is LSN 1");
    tfree(t);
    t = mk(DSQ_OP_QUERY, "INSERT INTO t(name, score) VALUES (?, ?)");
    ptext(t, NULL, "ada");
    t->p[1].v.type = DSQ_V_REAL;
    t->p[1].v.d = 2.5;
    t->r.nparams = 2;
    run("app", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(t->c.results[0].rows_affected, 1);
    cr_assert_eq(t->c.results[0].last_insert_rowid, 1);
    cr_assert_eq(t->c.lsn, 2);
    tfree(t);
    t = q("app", "SELECT id, name, score, data, 9007199254740993 AS big FROM t");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    const dsq_result *r = &t->c.results[0];
    cr_assert_eq(r->ncols, 5);
    cr_assert_str_eq(r->names[1], "name");
    cr_assert_str_eq(r->decltypes[2], "REAL");
    cr_assert_null(r->decltypes[4], "an expression has no declared type");
    cr_assert_eq(r->nrows, 1);
    cr_assert_eq(val(r, 0).i, 1);
    dsq_value v = val(r, 1);
    cr_assert_eq(v.type, DSQ_V_TEXT);
    cr_assert(v.n == 3 && memcmp(v.p, "ada", 3) == 0);
    cr_assert_eq(val(r, 2).d, 2.5);
    cr_assert_eq(val(r, 3).type, DSQ_V_NULL);
    cr_assert_eq(val(r, 4).i, 9007199254740993ll);
    cr_assert_eq(r->rows_affected, 0);
    cr_assert_eq(t->c.lsn, 2, "a read reflects the last commit");
    tfree(t);
}

Test(engine, parameters)
{
    ok("p", "CREATE TABLE t(a, b)");
    tcall *t = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (:a, @b)");
    pint(t, "a", 1);
    pint(t, "b", 2);
    run("p", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT $a + ?2");  /* mixed: refused as named */
    pint(t, "a", 1);
    run("p", t);
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST, "%s", t->c.msg);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT ?1 + ?1, ?2");
    pint(t, NULL, 20);
    pint(t, NULL, 1);
    run("p", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(val(&t->c.results[0], 0).i, 40);
    tfree(t);
    /* Missing, extra, and wrong kind. */
    t = mk(DSQ_OP_QUERY, "SELECT ?, ?");
    pint(t, NULL, 1);
    run("p", t);
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST);
    cr_assert(strstr(t->c.msg, "uses 2 parameters but params has 1") != NULL, "%s", t->c.msg);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT ?");
    pint(t, NULL, 1);
    pint(t, NULL, 2);
    run("p", t);
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT :x");
    pint(t, "y", 1);
    run("p", t);
    cr_assert(strstr(t->c.msg, "missing parameter :x") != NULL, "%s", t->c.msg);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT :x");
    pint(t, "x", 1);
    pint(t, "unused", 2);
    run("p", t);
    cr_assert(strstr(t->c.msg, "parameter unused is not used") != NULL, "%s", t->c.msg);
    tfree(t);
}

Test(engine, several_statements_are_one_transaction)
{
    tcall *t = q("m", "CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1); SELECT count(*) FROM t;");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(t->c.results[0].ncols, 1, "the result is the last statement's");
    cr_assert_eq(val(&t->c.results[0], 0).i, 1);
    cr_assert_eq(t->c.lsn, 1, "one request, one commit");
    tfree(t);
    expect_err("m", "INSERT INTO t VALUES (2); INSERT INTO t VALUES (1)", DSQ_CODE_CONSTRAINT_VIOLATION,
               "UNIQUE");
    t = q("m", "SELECT count(*) FROM t");
    cr_assert_eq(val(&t->c.results[0], 0).i, 1, "the failed request left nothing behind");
    cr_assert_eq(t->c.lsn, 1);
    tfree(t);
    expect_err("m", "   -- nothing\n", DSQ_CODE_INVALID_REQUEST, "no statement");
}

Test(engine, error_codes)
{
    ok("e", "CREATE TABLE t(a INTEGER NOT NULL, b TEXT CHECK (length(b) < 5)) ");
    ok("e", "CREATE TABLE s(x INTEGER) STRICT");
    expect_err("e", "SELEC 1", DSQ_CODE_SYNTAX_ERROR, "syntax error");
    expect_err("e", "SELECT * FROM nope", DSQ_CODE_TABLE_NOT_FOUND, "no such table: nope");
    expect_err("e", "SELECT nope FROM t", DSQ_CODE_COLUMN_NOT_FOUND, "no such column: nope");
    expect_err("e", "INSERT INTO t VALUES (NULL, 'x')", DSQ_CODE_CONSTRAINT_VIOLATION, "NOT NULL");
    expect_err("e", "INSERT INTO t VALUES (1, 'toolong')", DSQ_CODE_CONSTRAINT_VIOLATION, "CHECK");
    expect_err("e", "INSERT INTO s VALUES ('text')", DSQ_CODE_TYPE_MISMATCH, NULL);
    expect_err("e", "SELECT 'unterminated", DSQ_CODE_SYNTAX_ERROR, NULL);
    expect_err("e", "CREATE TABLE t(x)", DSQ_CODE_INVALID_REQUEST, "already exists");
    expect_err("e", "SELECT \"no double quoted strings\"", DSQ_CODE_COLUMN_NOT_FOUND, NULL);
}

Test(engine, foreign_keys_are_on)
{
    ok("fk", "CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p INTEGER REFERENCES p(id))");
    expect_err("fk", "INSERT INTO c VALUES (42)", DSQ_CODE_CONSTRAINT_VIOLATION, "FOREIGN KEY");
    tcall *t = q("fk", "PRAGMA foreign_keys");
    cr_assert_eq(val(&t->c.results[0], 0).i, 1);
    tfree(t);
}

Test(engine, sandbox)
{
    ok("s", "CREATE TABLE t(x)");
    expect_err("s", "ATTACH DATABASE '/tmp/x.db' AS x", DSQ_CODE_FORBIDDEN, "ATTACH");
    expect_err("s", "PRAGMA journal_mode=DELETE", DSQ_CODE_FORBIDDEN, "may be read, not set");
    expect_err("s", "PRAGMA writable_schema=ON", DSQ_CODE_FORBIDDEN, "writable_schema is not allowed");
    expect_err("s", "PRAGMA database_list", DSQ_CODE_FORBIDDEN, NULL);
    expect_err("s", "SELECT load_extension('/tmp/x')", DSQ_CODE_FORBIDDEN, "load_extension");
    expect_err("s", "BEGIN", DSQ_CODE_FORBIDDEN, "beginTransaction");
    expect_err("s", "COMMIT", DSQ_CODE_FORBIDDEN, NULL);
    expect_err("s", "SAVEPOINT a", DSQ_CODE_FORBIDDEN, "open transaction");
    expect_err("s", "VACUUM INTO '/tmp/stolen.db'", DSQ_CODE_FORBIDDEN, "VACUUM INTO");
    expect_err("s", "vacuum main into '/tmp/stolen.db'", DSQ_CODE_FORBIDDEN, NULL);
    expect_err("s", "CREATE TEMP TABLE x(a)", DSQ_CODE_FORBIDDEN, "temporary");
    /* Trigger bodies are authorized when they fire: the trigger can be
     * made, but the statement that fires it is refused. */
    ok("s", "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT fts3_tokenizer('simple'); END");
    expect_err("s", "INSERT INTO t VALUES (1)", DSQ_CODE_FORBIDDEN, "fts3_tokenizer");
    ok("s", "DROP TRIGGER tr");
    ok("s", "PRAGMA table_info(t)");
    ok("s", "PRAGMA user_version = 7");
    tcall *t = q("s", "PRAGMA user_version");
    cr_assert_eq(val(&t->c.results[0], 0).i, 7);
    tfree(t);
    ok("s", "VACUUM");
    expect_err("s", "ATTACH '' AS scratch", DSQ_CODE_FORBIDDEN, "ATTACH");
    ok("s", "SELECT 'VACUUM INTO' AS not_a_statement");
    expect_err("s", "VACUUM; SELECT 1", DSQ_CODE_INVALID_REQUEST, "only statement");
}

Test(engine, read_scope_runs_read_only_statements)
{
    ok("r", "CREATE TABLE t(x)");
    tcall *t = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    t->c.scope = DSQ_SCOPE_R;
    run("r", t);
    cr_assert_eq(t->c.code, DSQ_CODE_FORBIDDEN, "%s", t->c.msg);
    tfree(t);
    t = mk(DSQ_OP_QUERY, "SELECT count(*) FROM t");
    t->c.scope = DSQ_SCOPE_R;
    run("r", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    tfree(t);
}

Test(engine, query_timeout)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.query_timeout_ms = 200;
    start_with(c);
    expect_err("slow", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                       "SELECT count(*) FROM n",
               DSQ_CODE_TIMEOUT, "query_timeout");
    ok("slow", "SELECT 1"); /* the actor goes on */
}

Test(engine, max_result_size)
{
    expect_err("big", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100000) "
                      "SELECT i, 'padding padding padding' FROM n",
               DSQ_CODE_RESOURCE_EXHAUSTED, "max_result_bytes");
}

/* A shared budget (max_result_bytes 1 MiB): calls of one request, on two
 * databases, hold 600 KB each. The second goes past and fails; a call
 * that starts after that does not run; bytes given back make room. */
Test(engine, result_budget_shared_by_a_request)
{
    dsq_budget b;
    dsq_budget_init(&b);
    const char *big = "SELECT zeroblob(600000)";
    tcall *t1 = mk(DSQ_OP_QUERY, big);
    t1->c.budget = &b;
    run("one", t1);
    cr_assert_eq(t1->c.err, 0, "%s", t1->c.msg);
    cr_assert_geq(t1->c.result_bytes, 600000);
    cr_assert_eq(atomic_load(&b.used), t1->c.result_bytes, "the budget holds what the results hold");
    tcall *t2 = mk(DSQ_OP_QUERY, big);
    t2->c.budget = &b;
    run("two", t2);
    cr_assert_eq(t2->c.code, DSQ_CODE_RESOURCE_EXHAUSTED, "%s", t2->c.msg);
    cr_assert(strstr(t2->c.msg, "max_result_bytes") != NULL, "%s", t2->c.msg);
    cr_assert_eq(atomic_load(&b.used), t1->c.result_bytes, "a failed call holds nothing");
    /* Past the budget, even a small call (a write) does not run. */
    ok("two", "CREATE TABLE t(x)");
    tcall *t3 = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    t3->c.budget = &b;
    run("two", t3);
    cr_assert_eq(t3->c.code, DSQ_CODE_RESOURCE_EXHAUSTED, "%s", t3->c.msg);
    tcall *n = q("two", "SELECT count(*) FROM t");
    cr_assert_eq(val(&n->c.results[0], 0).i, 0, "the refused call did not run");
    tfree(n);
    /* The request lets the first result go: room again. */
    dsq_budget_release(&b, t1->c.result_bytes);
    tcall *t4 = mk(DSQ_OP_QUERY, big);
    t4->c.budget = &b;
    run("two", t4);
    cr_assert_eq(t4->c.err, 0, "%s", t4->c.msg);
    tfree(t1);
    tfree(t2);
    tfree(t3);
    tfree(t4);
}

/* Without a shared budget each call has max_result_bytes of its own. */
Test(engine, result_budget_per_call_without_one)
{
    for (int i = 0; i < 3; i++) {
        tcall *t = q("solo", "SELECT zeroblob(600000)");
        cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
        tfree(t);
    }
}

/* ---- transactions --------------------------------------------------------------------- */

static tcall *begin(const char *db, uint64_t session)
{
    tcall *t = mk(DSQ_OP_BEGIN, NULL);
    t->c.session = session;
    run(db, t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(strlen(t->c.txn_out), 32);
    return t;
}

static tcall *in_txn(const char *db, const char *txn, const char *sql)
{
    tcall *t = mk(DSQ_OP_QUERY, sql);
    strcpy(t->c.txn, txn);
    return run(db, t);
}

static tcall *end_txn(const char *db, const char *txn, bool commit)
{
    tcall *t = mk(commit ? DSQ_OP_COMMIT : DSQ_OP_ROLLBACK, NULL);
    strcpy(t->c.txn, txn);
    return run(db, t);
}

/* The database's LSN, as a read-scope ping sees it. */
static uint64_t lsn_of(const char *db)
{
    tcall *t = mk(DSQ_OP_PING, NULL);
    t->c.scope = DSQ_SCOPE_R;
    run(db, t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    uint64_t lsn = t->c.lsn;
    tfree(t);
    return lsn;
}

/* Statements SQLite calls read-only that still write (ANALYZE's tables,
 * rebuilt indexes) are refused to read scope before they run, also when
 * the same text ran with write scope first; nothing commits. */
/* A call with fk_off runs with foreign keys off, the next without it has
 * them on again; a transaction begun with it keeps them off to its end,
 * and a call inside it cannot turn them back on. */
Test(engine, foreign_keys_off_for_a_call_and_a_transaction)
{
    ok("fkoff", "CREATE TABLE p(id INTEGER PRIMARY KEY); "
                "CREATE TABLE c(p INTEGER REFERENCES p(id) ON DELETE CASCADE)");
    tcall *t = mk(DSQ_OP_QUERY, "INSERT INTO c VALUES (42)");
    t->c.fk_off = true;
    run("fkoff", t);
    cr_assert_eq(t->c.err, 0, "fk_off: an orphan row is allowed (%s)", t->c.msg);
    tfree(t);
    expect_err("fkoff", "INSERT INTO c VALUES (43)", DSQ_CODE_CONSTRAINT_VIOLATION, "FOREIGN KEY");
    ok("fkoff", "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1)");

    tcall *b = mk(DSQ_OP_BEGIN, NULL);
    b->c.fk_off = true;
    b->c.session = 77;
    run("fkoff", b);
    cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
    tfree(in_txn("fkoff", b->c.txn_out, "DELETE FROM p WHERE id = 1")); /* no cascade */
    t = in_txn("fkoff", b->c.txn_out, "SELECT count(*) FROM c");
    cr_assert_eq(val(&t->c.results[0], 0).i, 2, "the children stay while keys are off");
    tfree(t);
    tfree(end_txn("fkoff", b->c.txn_out, true));
    tfree(b);
    t = q("fkoff", "PRAGMA foreign_keys");
    cr_assert_eq(val(&t->c.results[0], 0).i, 1, "on again after the transaction");
    tfree(t);
    expect_err("fkoff", "INSERT INTO c VALUES (44)", DSQ_CODE_CONSTRAINT_VIOLATION, "FOREIGN KEY");
}

Test(engine, read_scope_commits_nothing)
{
    /* (PRAGMA optimize analyzes the tables whose indexes the planner used.) */
    ok("rc", "CREATE TABLE t(x); CREATE INDEX ti ON t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
             "SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i FROM n");
    ok("rc", "SELECT count(*) FROM t WHERE x = 5");
    static const char *const writes[] = {
        "REINDEX", "REINDEX t", "ANALYZE", "PRAGMA optimize", "PRAGMA optimize=0x10002",
        "PRAGMA main.optimize(0x10002)", "VACUUM", "SELECT 1; PRAGMA optimize=0x10002",
    };
    uint64_t lsn = lsn_of("rc");
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        tcall *t = mk(DSQ_OP_QUERY, writes[i]);
        t->c.scope = DSQ_SCOPE_R;
        run("rc", t);
        cr_assert_eq(t->c.code, DSQ_CODE_FORBIDDEN, "%s: %s (%s)", writes[i], dsq_code_name(t->c.code),
                     t->c.msg);
        tfree(t);
        cr_assert_eq(lsn_of("rc"), lsn, "%s committed", writes[i]);
    }
    tcall *t = q("rc", "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'");
    cr_assert_eq(val(&t->c.results[0], 0).i, 0);
    tfree(t);
    /* With write scope they run (and the text is prepared again for read scope). */
    ok("rc", "PRAGMA optimize=0x10002");
    t = mk(DSQ_OP_QUERY, "PRAGMA optimize=0x10002");
    t->c.scope = DSQ_SCOPE_R;
    run("rc", t);
    cr_assert_eq(t->c.code, DSQ_CODE_FORBIDDEN, "%s", t->c.msg);
    tfree(t);
    /* A read-only stream will not run them either. */
    t = mk(DSQ_OP_STREAM, "PRAGMA optimize=0x10002");
    run("rc", t);
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST, "%s", t->c.msg);
    tfree(t);
}

/* A transaction that may write needs write scope; a read-only one does not. */
Test(engine, read_scope_begins_read_only_transactions_only)
{
    ok("rb", "CREATE TABLE t(x)");
    for (int immediate = 0; immediate < 2; immediate++) {
        tcall *b = mk(DSQ_OP_BEGIN, NULL);
        b->c.scope = DSQ_SCOPE_R;
        b->c.immediate = immediate;
        b->c.txn_timeout_ms = 60000;
        run("rb", b);
        cr_assert_eq(b->c.code, DSQ_CODE_FORBIDDEN, "%s", b->c.msg);
        tfree(b);
    }
    ok("rb", "INSERT INTO t VALUES (1)"); /* nothing holds the writer */
    tcall *b = mk(DSQ_OP_BEGIN, NULL);
    b->c.scope = DSQ_SCOPE_R;
    b->c.read_only = true;
    run("rb", b);
    cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
    tcall *r = end_txn("rb", b->c.txn_out, false);
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    tfree(r);
    tfree(b);
}

Test(engine, max_transaction_timeout)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.max_txn_timeout_ms = 1000;
    start_with(c);
    for (int ro = 0; ro < 2; ro++) {
        tcall *b = mk(DSQ_OP_BEGIN, NULL);
        b->c.read_only = ro;
        b->c.txn_timeout_ms = 1001;
        run("mt", b);
        cr_assert_eq(b->c.code, DSQ_CODE_INVALID_REQUEST, "%s", b->c.msg);
        cr_assert(strstr(b->c.msg, "max_transaction_timeout") != NULL, "%s", b->c.msg);
        tfree(b);
        b = mk(DSQ_OP_BEGIN, NULL);
        b->c.read_only = ro;
        b->c.txn_timeout_ms = 1000;
        run("mt", b);
        cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
        tfree(end_txn("mt", b->c.txn_out, false));
        tfree(b);
    }
}

Test(engine, transaction_isolates_readers_run_writers_wait)
{
    ok("tx", "CREATE TABLE t(x)");
    tcall *b = begin("tx", 0);
    tcall *w = in_txn("tx", b->c.txn_out, "INSERT INTO t VALUES (1)");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    /* Another client's read runs at once, on the last commit. */
    tcall *r = q("tx", "SELECT count(*) FROM t");
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    cr_assert_eq(val(&r->c.results[0], 0).i, 0, "a read saw uncommitted rows");
    cr_assert_eq(r->c.lsn, 1);
    tfree(r);
    /* Another client's write waits behind the transaction; a read that
     * came after it (another client's) does not. */
    tcall *other = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (2)");
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "tx", &other->c), 0);
    tcall *r2 = mk(DSQ_OP_QUERY, "SELECT count(*) FROM t");
    cr_assert_eq(dsq_engine_submit(E, "tx", &r2->c), 0);
    wait_done(before + 1);
    /* Sent back to wait, with its actor at rest: it cannot run now. */
    ENGINE_WAIT_UNTIL(E, parked(&other->c), "a write ran inside someone else's transaction");
    cr_assert_eq(ndone, before + 1, "a write ran inside someone else's transaction");
    cr_assert_eq(order[before], &r2->c, "the read went ahead");
    tcall *cm = mk(DSQ_OP_COMMIT, NULL);
    strcpy(cm->c.txn, b->c.txn_out);
    cr_assert_eq(dsq_engine_submit(E, "tx", &cm->c), 0);
    wait_done(before + 3);
    cr_assert_eq(order[before + 1], &cm->c, "the commit finishes first");
    cr_assert_eq(order[before + 2], &other->c);
    cr_assert_eq(cm->c.err, 0, "%s", cm->c.msg);
    cr_assert_eq(cm->c.lsn, 2);
    cr_assert_eq(other->c.err, 0, "%s", other->c.msg);
    cr_assert_eq(other->c.lsn, 3, "the waiting write commits after the transaction");
    tfree(cm);
    tfree(other);
    tfree(r2);
    /* The id is now gone. */
    tcall *again = in_txn("tx", b->c.txn_out, "SELECT 1");
    cr_assert_eq(again->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND);
    tfree(again);
    tfree(b);
}

Test(engine, rollback_and_savepoints)
{
    ok("rb", "CREATE TABLE t(x)");
    tcall *b = begin("rb", 0);
    tfree(in_txn("rb", b->c.txn_out, "INSERT INTO t VALUES (1); SAVEPOINT a; INSERT INTO t VALUES (2)"));
    tcall *r = in_txn("rb", b->c.txn_out, "ROLLBACK TO a; RELEASE a; SELECT count(*) FROM t");
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    cr_assert_eq(val(&r->c.results[0], 0).i, 1);
    tfree(r);
    /* Inside a transaction a failing statement undoes itself only; the
     * statements before it in the request stay, for the client to keep or
     * roll back. */
    r = in_txn("rb", b->c.txn_out, "INSERT INTO t VALUES (3); SELECT * FROM nope");
    cr_assert_eq(r->c.code, DSQ_CODE_TABLE_NOT_FOUND);
    tfree(r);
    r = in_txn("rb", b->c.txn_out, "SELECT count(*) FROM t");
    cr_assert_eq(val(&r->c.results[0], 0).i, 2);
    tfree(r);
    tcall *e = end_txn("rb", b->c.txn_out, false);
    cr_assert_eq(e->c.err, 0, "%s", e->c.msg);
    cr_assert_eq(e->c.lsn, 1, "a rollback commits nothing");
    tfree(e);
    r = q("rb", "SELECT count(*) FROM t");
    cr_assert_eq(val(&r->c.results[0], 0).i, 0);
    tfree(r);
    e = end_txn("rb", b->c.txn_out, true);
    cr_assert_eq(e->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND);
    tfree(e);
    tfree(b);
}

Test(engine, deferred_foreign_key_fails_the_commit)
{
    ok("dfk", "CREATE TABLE p(id INTEGER PRIMARY KEY); "
              "CREATE TABLE c(p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)");
    tcall *b = begin("dfk", 0);
    tcall *w = in_txn("dfk", b->c.txn_out, "INSERT INTO c VALUES (9)");
    cr_assert_eq(w->c.err, 0, "deferred: accepted for now (%s)", w->c.msg);
    tfree(w);
    tcall *e = end_txn("dfk", b->c.txn_out, true);
    cr_assert_eq(e->c.code, DSQ_CODE_CONSTRAINT_VIOLATION, "%s", e->c.msg);
    cr_assert(strstr(e->c.msg, "rolled back") != NULL, "%s", e->c.msg);
    tfree(e);
    tcall *r = q("dfk", "SELECT count(*) FROM c");
    cr_assert_eq(r->c.err, 0, "the actor is usable: %s", r->c.msg);
    cr_assert_eq(val(&r->c.results[0], 0).i, 0);
    tfree(r);
    tfree(b);
}

Test(engine, transaction_times_out)
{
    ok("to", "CREATE TABLE t(x)");
    tcall *b = mk(DSQ_OP_BEGIN, NULL);
    b->c.txn_timeout_ms = 100;
    run("to", b);
    tfree(in_txn("to", b->c.txn_out, "INSERT INTO t VALUES (1)"));
    let_time_pass(150); /* the transaction is idle past its 100 ms */
    dsq_engine_tick(E);
    wait_in_flight(0); /* the expiry the tick posted */
    tcall *r = in_txn("to", b->c.txn_out, "SELECT 1");
    cr_assert_eq(r->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "%s", r->c.msg);
    tfree(r);
    r = q("to", "SELECT count(*) FROM t");
    cr_assert_eq(val(&r->c.results[0], 0).i, 0, "rolled back");
    tfree(r);
    tfree(b);
}

Test(engine, session_end_rolls_back)
{
    ok("se", "CREATE TABLE t(x)");
    tcall *b = begin("se", 77);
    tfree(in_txn("se", b->c.txn_out, "INSERT INTO t VALUES (1)"));
    dsq_engine_session_closed(E, 78); /* someone else */
    tcall *r = in_txn("se", b->c.txn_out, "SELECT count(*) FROM t");
    cr_assert_eq(r->c.err, 0, "another session's end changes nothing: %s", r->c.msg);
    tfree(r);
    dsq_engine_session_closed(E, 77);
    r = q("se", "SELECT count(*) FROM t"); /* waits for the rollback, then runs */
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    cr_assert_eq(val(&r->c.results[0], 0).i, 0);
    tfree(r);
    tfree(b);
}

/* ---- batches and streams --------------------------------------------------------------- */

Test(engine, batch_atomic_and_not)
{
    ok("b", "CREATE TABLE t(x UNIQUE)");
    dsq_stmt_req st[3] = {
        {.sql = "INSERT INTO t VALUES (1)", .sql_len = 24},
        {.sql = "INSERT INTO t VALUES (1)", .sql_len = 24},
        {.sql = "INSERT INTO t VALUES (2)", .sql_len = 24},
    };
    tcall *t = mk(DSQ_OP_BATCH, NULL);
    t->c.stmts = st;
    t->c.nstmts = 3;
    run("b", t);
    cr_assert_eq(t->c.code, DSQ_CODE_CONSTRAINT_VIOLATION);
    cr_assert(strncmp(t->c.msg, "statement 1: ", 13) == 0, "%s", t->c.msg);
    tfree(t);
    t = q("b", "SELECT count(*) FROM t");
    cr_assert_eq(val(&t->c.results[0], 0).i, 0, "all or nothing");
    tfree(t);
    t = mk(DSQ_OP_BATCH, NULL);
    t->c.stmts = st;
    t->c.nstmts = 3;
    t->c.atomic = false;
    run("b", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_null(t->c.results[0].error);
    cr_assert_not_null(t->c.results[1].error);
    cr_assert_eq(t->c.results[1].code, DSQ_CODE_CONSTRAINT_VIOLATION);
    cr_assert_null(t->c.results[2].error);
    cr_assert_eq(t->c.results[0].lsn, 2);
    cr_assert_eq(t->c.results[2].lsn, 3, "each statement commits on its own");
    tfree(t);
}

static int chunks;
static void on_chunk(dsq_call *c) { chunks++; }

Test(engine, stream_in_chunks)
{
    ok("st", "CREATE TABLE t(x); INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT i FROM n");
    tcall *t = mk(DSQ_OP_STREAM, "SELECT x FROM t ORDER BY x");
    t->c.chunk = on_chunk;
    chunks = 0;
    int seen = 0;
    run("st", t);
    for (int guard = 0; guard < 10; guard++) {
        cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
        for (size_t i = 0; i < t->c.results[0].nrows; i++)
            cr_assert_eq(val(&t->c.results[0], i).i, ++seen);
        if (!t->c.more)
            break;
        /* While the stream is open, other calls run (it reads a snapshot
         * on a connection of its own), and it goes on seeing its start. */
        if (guard == 0)
            ok("st", "INSERT INTO t VALUES (100)");
        int before = ndone;
        dsq_engine_stream_more(E, &t->c, false);
        wait_done(before + 1);
    }
    cr_assert_eq(seen, 5);
    cr_assert_eq(chunks, 3, "5 rows in chunks of 2");
    tfree(t);
    ok("st", "INSERT INTO t VALUES (6)");
    t = mk(DSQ_OP_STREAM, "INSERT INTO t VALUES (7)");
    run("st", t);
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_REQUEST, "%s", t->c.msg);
    tfree(t);
}

/* A stream's idle end loses to a continuation that arrived before the end
 * ran (as a transaction's expiry does). One worker, kept busy by a slow
 * query elsewhere, so that both wait in the mailbox, the end first. */
Test(engine, stream_continuation_beats_a_pending_idle_end)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.txn_timeout_ms = 1000;
    c.workers = 1;
    start_with(c);
    ok("sl", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
    tcall *t = mk(DSQ_OP_STREAM, "SELECT x FROM t");
    t->c.chunk_rows = 1;
    run("sl", t);
    cr_assert(t->c.more);
    let_time_pass(1050);   /* the stream is idle past its 1 s */
    /* About 0.1 s of work here (0.3-0.5 s in a sanitizer build on a busy
     * machine): long enough to hold the worker while both are posted,
     * short of the continuation's new 1 s deadline. */
    tcall *slow = mk(DSQ_OP_QUERY, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                   "WHERE i < 200000) SELECT count(*) FROM n");
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "busy", &slow->c), 0);
    dsq_engine_kick(E);
    ENGINE_WAIT_UNTIL(E, running(slow->c.actor), "the slow query did not start");
    dsq_engine_tick(E);    /* the tick posts the stream's end... */
    dsq_engine_stream_more(E, &t->c, false); /* ...and the client asks right behind it */
    wait_done(before + 2);
    cr_assert_eq(slow->c.err, 0, "%s", slow->c.msg);
    tfree(slow);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(val(&t->c.results[0], 0).i, 2);
    while (t->c.more) {
        before = ndone;
        dsq_engine_stream_more(E, &t->c, false);
        wait_done(before + 1);
    }
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    tfree(t);
}

Test(engine, stream_cancel)
{
    ok("sc", "CREATE TABLE t(x); INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT i FROM n");
    tcall *t = mk(DSQ_OP_STREAM, "SELECT x FROM t");
    run("sc", t);
    cr_assert(t->c.more);
    int before = ndone;
    dsq_engine_stream_more(E, &t->c, true);
    wait_done(before + 1);
    cr_assert_not(t->c.more);
    tfree(t);
    ok("sc", "INSERT INTO t VALUES (11)");
}

/* ---- schema, stats, ping, drop, list ------------------------------------------------------- */

Test(engine, schema_and_stats)
{
    ok("sch", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x');"
              "CREATE UNIQUE INDEX t_name ON t(name); CREATE VIEW v AS SELECT name FROM t;"
              "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END");
    tcall *t = run("sch", mk(DSQ_OP_SCHEMA, NULL));
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    const dsq_schema *d = t->c.schema;
    cr_assert_not_null(d);
    cr_assert_eq(d->tables.n, 1, "the reserved table is hidden");
    const dsq_schema_object *tab = &d->tables.v[0];
    cr_assert_str_eq(tab->name, "t");
    cr_assert_eq(tab->ncolumns, 2);
    const dsq_schema_column *col = &tab->columns[1];
    cr_assert_str_eq(col->name, "name");
    cr_assert(col->not_null);
    cr_assert_str_eq(col->dflt, "'x'");
    cr_assert_eq(tab->columns[0].pk, 1);
    cr_assert_eq(d->indexes.n, 1);
    const dsq_schema_object *ix = &d->indexes.v[0];
    cr_assert(ix->unique);
    cr_assert_str_eq(ix->table, "t");
    cr_assert_str_eq(ix->columns[0].name, "name");
    cr_assert_eq(d->views.n, 1);
    cr_assert_eq(d->triggers.n, 1);
    tfree(t);
    t = run("sch", mk(DSQ_OP_STATS, NULL));
    const dsq_db_stats *st = t->c.stats;
    cr_assert_not_null(st);
    cr_assert_str_eq(st->name, "sch");
    cr_assert_eq(st->lsn, 1);
    cr_assert_gt(st->pages, 1);
    cr_assert_gt(st->statements, 0);
    cr_assert_eq(st->server.actors, 1);
    cr_assert_eq(st->server.actors_open, 1);
    tfree(t);
    t = run("sch", mk(DSQ_OP_PING, NULL));
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_gt(t->c.time_ms, 0);
    tfree(t);
}

/* Errors reach clients without the server's paths: the engine's
 * messages name its files for the log only. */
Test(engine, errors_name_no_file_of_the_server)
{
    char path[256];
    /* A database that cannot be opened (not ours): a generic message. */
    snprintf(path, sizeof path, "%s/db/broken", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/db/broken/format", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not a format\n", f);
    fclose(f);
    tcall *t = q("broken", "SELECT 1");
    cr_assert_eq(t->c.code, DSQ_CODE_INTERNAL_ERROR, "%s", t->c.msg);
    cr_assert(strstr(t->c.msg, "broken") != NULL, "%s", t->c.msg);
    cr_assert(strstr(t->c.msg, dir) == NULL, "names a path: %s", t->c.msg);
    tfree(t);
    /* A read of a log's files whose message names them (its log is a
     * file, not a directory): caught on the way out. */
    snprintf(path, sizeof path, "%s/db/odd", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/db/odd/wal", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    t = mk(DSQ_OP_CDC_READ, NULL);
    t->c.target_db = "odd";
    t->c.as_of = DSQ_AS_OF_LSN;
    t->c.as_of_lsn = 0;
    t->c.upto_lsn = 3;
    int before = ndone;
    cr_assert_eq(dsq_engine_submit_system(E, &t->c), 0, "%s", t->c.msg);
    wait_done(before + 1);
    cr_assert_neq(t->c.err, 0);
    cr_assert_eq(t->c.code, DSQ_CODE_INTERNAL_ERROR, "%s", t->c.msg);
    cr_assert(strstr(t->c.msg, dir) == NULL, "names a path: %s", t->c.msg);
    tfree(t);
}

/* Out of descriptors at a commit (the log's first segment is made then):
 * RESOURCE_EXHAUSTED, a condition that passes, not an internal error; the
 * same commit succeeds once descriptors are free again. */
Test(engine, a_commit_out_of_descriptors_is_resource_exhausted)
{
    ok("fdless", "SELECT 1"); /* open, nothing written yet */
    test_nofds held;
    test_nofds_take(&held);
    tcall *t = q("fdless", "CREATE TABLE t(x)");
    test_nofds_give(&held);
    cr_assert_neq(t->c.err, 0, "committed without a descriptor");
    cr_assert_eq(t->c.code, DSQ_CODE_RESOURCE_EXHAUSTED, "%s: %s", dsq_code_name(t->c.code), t->c.msg);
    cr_assert(strstr(t->c.msg, "too many open files") != NULL, "%s", t->c.msg);
    tfree(t);
    ok("fdless", "CREATE TABLE t(x)");
}

Test(engine, drop_and_list)
{
    ok("one", "CREATE TABLE t(x)");
    ok("two", "CREATE TABLE t(x)");
    tcall *l = mk(DSQ_OP_LIST, NULL);
    int before = ndone;
    cr_assert_eq(dsq_engine_submit_system(E, &l->c), 0);
    wait_done(before + 1);
    cr_assert_eq(l->c.nnames, 2);
    cr_assert_str_eq(l->c.names[0], "one");
    tfree(l);
    tcall *d = run("one", mk(DSQ_OP_DROP, NULL));
    cr_assert_eq(d->c.err, 0, "%s", d->c.msg);
    tfree(d);
    l = mk(DSQ_OP_LIST, NULL);
    before = ndone;
    cr_assert_eq(dsq_engine_submit_system(E, &l->c), 0);
    wait_done(before + 1);
    cr_assert_eq(l->c.nnames, 1);
    cr_assert_str_eq(l->c.names[0], "two");
    tfree(l);
    /* The next call to a dropped name starts a new, empty database. */
    expect_err("one", "SELECT * FROM t", DSQ_CODE_TABLE_NOT_FOUND, NULL);
    /* A name that never existed is not found (HTTP 404), and stays so. */
    d = run("never", mk(DSQ_OP_DROP, NULL));
    cr_assert_neq(d->c.err, 0);
    cr_assert(d->c.not_found);
    cr_assert_eq(d->c.code, DSQ_CODE_INVALID_REQUEST);
    cr_assert(strstr(d->c.msg, "no such database") != NULL, "%s", d->c.msg);
    tfree(d);
    l = mk(DSQ_OP_LIST, NULL);
    before = ndone;
    cr_assert_eq(dsq_engine_submit_system(E, &l->c), 0);
    wait_done(before + 1);
    cr_assert_eq(l->c.nnames, 2, "one (made again) and two, not never");
    tfree(l);
}

/* ---- scheduling, hibernation, lifecycle ------------------------------------------------------- */

Test(engine, fairness_one_worker)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.workers = 1;
    c.batch_per_turn = 4;
    start_with(c);
    ok("busy", "CREATE TABLE t(x)");
    ok("quiet", "CREATE TABLE t(x)");
    tcall *calls[41];
    int base = ndone;
    for (int i = 0; i < 40; i++) {
        calls[i] = mk(DSQ_OP_QUERY, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT count(*) FROM n");
        cr_assert_eq(dsq_engine_submit(E, "busy", &calls[i]->c), 0);
    }
    calls[40] = mk(DSQ_OP_QUERY, "SELECT 1");
    cr_assert_eq(dsq_engine_submit(E, "quiet", &calls[40]->c), 0);
    wait_done(base + 41);
    int pos = -1;
    for (int i = 0; i < 41; i++)
        if (order[base + i] == &calls[40]->c)
            pos = i;
    cr_assert(pos >= 0 && pos <= 8, "the quiet database finished at position %d of 41", pos);
    for (int i = 0; i < 41; i++)
        tfree(calls[i]);
}

Test(engine, lru_and_idle_hibernation)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.max_open_actors = 2;
    c.idle_timeout_ms = 100;
    start_with(c);
    ok("a", "CREATE TABLE t(x); INSERT INTO t VALUES ('kept')");
    ok("b", "SELECT 1");
    ok("c", "SELECT 1"); /* three open: "a" is the least recently used */
    dsq_engine_stats s;
    wait_in_flight(0); /* the hibernation that made room */
    dsq_engine_stats_get(E, &s);
    cr_assert_eq(s.actors, 3);
    cr_assert_leq(s.actors_open, 2, "open: %llu", (unsigned long long)s.actors_open);
    tcall *t = q("a", "SELECT x FROM t"); /* wakes with its data */
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    dsq_value v = val(&t->c.results[0], 0);
    cr_assert(v.n == 4 && memcmp(v.p, "kept", 4) == 0);
    tfree(t);
    let_time_pass(150); /* every actor is idle past its 100 ms */
    dsq_engine_tick(E);
    wait_in_flight(0); /* the hibernations the tick posted */
    dsq_engine_stats_get(E, &s);
    cr_assert_eq(s.actors_open, 0, "idle actors hibernate");
    cr_assert_eq(s.actors_hibernated, 3); /* (its size: a _Static_assert in engine_int.h) */
}

Test(engine, restart_keeps_commits_shutdown_rolls_back)
{
    ok("keep", "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    tcall *b = begin("keep", 0);
    tfree(in_txn("keep", b->c.txn_out, "INSERT INTO t VALUES (2)"));
    tfree(b);
    dsq_engine_free(E); /* the open transaction is rolled back */
    start_with(cfg_default());
    tcall *t = q("keep", "SELECT count(*), max(x) FROM t");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(val(&t->c.results[0], 0).i, 1);
    cr_assert_eq(t->c.lsn, 1, "the LSN survives a restart");
    tfree(t);
    t = q("keep", "INSERT INTO t VALUES (3)");
    cr_assert_eq(t->c.lsn, 2, "and goes on from there");
    tfree(t);
}

/* ---- the data directory's lock ---------------------------------------------------------- */

Test(engine, a_held_data_dir_refuses_a_second_engine)
{
    ok("one", "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    char err[512] = "";
    dsq_engine_cfg c = cfg_default();
    dsq_engine *second = dsq_engine_new(&c, err, sizeof err);
    cr_assert_null(second, "a second engine opened a data directory the first holds");
    char want[64];
    snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
    cr_assert(strstr(err, want) != NULL, "the reason names the holder: %s", err);
    /* The first goes on, its data untouched. */
    tcall *t = q("one", "SELECT count(*) FROM t");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(val(&t->c.results[0], 0).i, 1);
    tfree(t);
    /* Released with the engine: the next one starts. */
    dsq_engine_free(E);
    start_with(cfg_default());
    ok("one", "INSERT INTO t VALUES (2)");
}

/* A process that holds a data directory and is killed (no unlock, no
 * exit handlers) leaves it free. */
Test(engine, the_lock_of_a_killed_process_is_gone)
{
    char d2[64];
    strcpy(d2, "/tmp/dsq-test-lock-XXXXXX");
    cr_assert_not_null(mkdtemp(d2));
    int p[2], hold[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(hold), 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        close(hold[1]);
        char e2[512];
        char ok1 = dsq_engine_lock_dir(d2, e2, sizeof e2) >= 0 ? 'y' : 'n';
        if (write(p[1], &ok1, 1) != 1)
            _exit(1);
        /* Hold the lock until killed. Nothing is ever written to `hold`:
         * the read returns only when the test's end of it closes, should
         * the test die before it kills this process. */
        char none;
        _exit(read(hold[0], &none, 1) < 0);
    }
    close(hold[0]);
    close(p[1]);
    char got = 0;
    cr_assert_eq(read(p[0], &got, 1), 1);
    close(p[0]);
    cr_assert_eq(got, 'y', "the child took the lock");
    char err[512] = "";
    cr_assert_lt(dsq_engine_lock_dir(d2, err, sizeof err), 0, "held by the child");
    char want[64];
    snprintf(want, sizeof want, "in use by process %ld", (long)child);
    cr_assert(strstr(err, want) != NULL, "the reason names the child: %s", err);
    kill(child, SIGKILL);
    int st;
    cr_assert_eq(waitpid(child, &st, 0), child);
    close(hold[1]);
    int fd = dsq_engine_lock_dir(d2, err, sizeof err);
    cr_assert_geq(fd, 0, "free after kill -9: %s", err);
    dsq_engine_unlock_dir(fd);
    rm_rf(d2);
}

Test(engine, queue_limit)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.max_queue = 3;
    c.workers = 1;
    start_with(c);
    ok("qq", "CREATE TABLE t(x)");
    /* The open transaction holds writers (reads would run beside it);
     * no worker is woken between the submits, so all wait in the queue. */
    tcall *b = begin("qq", 0);
    tcall *w[4];
    int refused = 0;
    for (int i = 0; i < 4; i++) {
        w[i] = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
        if (dsq_engine_submit(E, "qq", &w[i]->c) != 0) {
            refused++;
            cr_assert_eq(w[i]->c.code, DSQ_CODE_RESOURCE_EXHAUSTED);
        }
    }
    cr_assert_eq(refused, 1);
    /* (The reads run beside the transaction, so they may finish before
     * the rollback: wait for all four before freeing any.) */
    int before = ndone;
    tcall *rb = mk(DSQ_OP_ROLLBACK, NULL);
    strcpy(rb->c.txn, b->c.txn_out);
    cr_assert_eq(dsq_engine_submit(E, "qq", &rb->c), 0);
    wait_done(before + 4);
    cr_assert_eq(rb->c.err, 0, "%s", rb->c.msg);
    tfree(rb);
    for (int i = 0; i < 4; i++)
        tfree(w[i]);
    tfree(b);
}

/* ---- beside an open transaction, read-only transactions, cancellation ------------------------ */

static tcall *begin_ro(const char *db, uint64_t session, uint64_t timeout_ms)
{
    tcall *t = mk(DSQ_OP_BEGIN, NULL);
    t->c.session = session;
    t->c.read_only = true;
    t->c.txn_timeout_ms = timeout_ms;
    run(db, t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(strlen(t->c.txn_out), 32);
    return t;
}

/* A stream's continuation is not a new request of its connection: a
 * request the same connection sent while the stream was open (it waits
 * for the stream) must not hold the continuation back in turn. */
Test(engine, stream_continuation_not_held_by_its_own_connection)
{
    ok("sso", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3), (4), (5)");
    tcall *t = mk(DSQ_OP_STREAM, "SELECT x FROM t ORDER BY x");
    t->c.session = 5;
    run("sso", t);
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert(t->c.more);
    /* The same connection asks something else meanwhile: it runs (the
     * stream reads a snapshot and holds no one), and does not hold back
     * the stream's next chunks either. */
    tcall *other = mk(DSQ_OP_QUERY, "SELECT count(*) FROM t");
    other->c.session = 5;
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "sso", &other->c), 0);
    wait_done(before + 1);
    cr_assert_eq(other->c.err, 0, "%s", other->c.msg);
    int seen = (int)t->c.results[0].nrows;
    for (int guard = 0; guard < 10 && t->c.more; guard++) {
        int b = ndone;
        dsq_engine_stream_more(E, &t->c, false);
        wait_done(b + 1); /* the stream goes on */
        cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
        seen += (int)t->c.results[0].nrows;
    }
    cr_assert_eq(seen, 5);
    tfree(other);
    tfree(t);
}

/* A database with a read-only transaction open is not hibernated to make
 * room (max_open_actors): left out of the open list, its transaction
 * would escape both its idle limit and its connection's end. */
Test(engine, read_only_transaction_keeps_its_database_open)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.max_open_actors = 1;
    start_with(c);
    ok("roa", "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    tcall *b = begin_ro("roa", 9, 0);
    ok("rob", "SELECT 1"); /* a second database: over the limit */
    wait_in_flight(0); /* a hibernation, had one been posted to make room */
    dsq_engine_session_closed(E, 9); /* its connection ends */
    wait_in_flight(0); /* the expiry that posted */
    dsq_engine_stats s;
    dsq_engine_stats_get(E, &s);
    cr_assert_eq(s.txns_open, 0, "the read-only transaction outlived its connection");
    tcall *r = in_txn("roa", b->c.txn_out, "SELECT count(*) FROM t");
    cr_assert_eq(r->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "%s", r->c.msg);
    tfree(r);
    tfree(b);
}

/* Requests in a read-only transaction keep that one alive, not another
 * client's write transaction, which still expires when idle. */
Test(engine, read_only_requests_do_not_keep_a_writer_alive)
{
    ok("rka", "CREATE TABLE t(x)");
    tcall *w = mk(DSQ_OP_BEGIN, NULL);
    w->c.txn_timeout_ms = 150;
    run("rka", w);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(in_txn("rka", w->c.txn_out, "INSERT INTO t VALUES (1)"));
    tcall *ro = begin_ro("rka", 0, 0);
    for (int i = 0; i < 8; i++) {
        tcall *r = in_txn("rka", ro->c.txn_out, "SELECT count(*) FROM t");
        cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
        tfree(r);
        /* 8 x 50 ms of read-only requests: the writer is idle past its
         * 150 ms meanwhile. */
        let_time_pass(50);
        dsq_engine_tick(E);
        dsq_engine_poll(E);
    }
    wait_in_flight(0); /* the expiry a tick posted */
    tcall *r = in_txn("rka", w->c.txn_out, "SELECT 1");
    cr_assert_eq(r->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "the idle writer was kept open: %s", r->c.msg);
    tfree(r);
    tfree(end_txn("rka", ro->c.txn_out, true));
    tfree(ro);
    tfree(w);
}

/* A stream in a read-only transaction is not the write transaction's:
 * that one's idle end leaves it running. */
Test(engine, writer_expiry_leaves_a_read_only_stream)
{
    ok("wes", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3), (4), (5)");
    tcall *w = mk(DSQ_OP_BEGIN, NULL);
    w->c.txn_timeout_ms = 100;
    run("wes", w);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(in_txn("wes", w->c.txn_out, "INSERT INTO t VALUES (6)"));
    tcall *ro = begin_ro("wes", 0, 0);
    tcall *s = mk(DSQ_OP_STREAM, "SELECT x FROM t ORDER BY x");
    strcpy(s->c.txn, ro->c.txn_out);
    run("wes", s);
    cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
    int seen = (int)s->c.results[0].nrows;
    let_time_pass(150); /* the writer is idle past its 100 ms */
    dsq_engine_tick(E); /* rolled back */
    wait_in_flight(1); /* the expiry; the stream's call stays */
    dsq_engine_stats st;
    dsq_engine_stats_get(E, &st);
    cr_assert_eq(st.txns_open, 1, "the writer was rolled back, the read-only one stays");
    for (int guard = 0; guard < 10 && s->c.more; guard++) {
        int b = ndone;
        dsq_engine_stream_more(E, &s->c, false);
        wait_done(b + 1);
        cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
        seen += (int)s->c.results[0].nrows;
    }
    cr_assert_eq(seen, 5, "the snapshot's rows, all of them");
    tcall *r = in_txn("wes", w->c.txn_out, "SELECT 1");
    cr_assert_eq(r->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "%s", r->c.msg);
    tfree(r);
    tfree(end_txn("wes", ro->c.txn_out, true));
    tfree(s);
    tfree(ro);
    tfree(w);
}

/* A write from a token with read scope only is refused at once, also
 * while another client's transaction is open: it does not wait for that
 * one to end (and then time out) to learn it may not write. */
Test(engine, read_scope_write_beside_a_transaction_is_refused_at_once)
{
    ok("rsw", "CREATE TABLE t(x)");
    tcall *b = begin("rsw", 0);
    tfree(in_txn("rsw", b->c.txn_out, "INSERT INTO t VALUES (1)"));
    tcall *w = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (2)");
    w->c.scope = DSQ_SCOPE_R;
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "rsw", &w->c), 0);
    dsq_engine_kick(E);
    /* (The transaction stays open until after this: an answer that waited
     * for it would not come at all.) */
    ENGINE_WAIT_UNTIL(E, ndone > before, "the refusal waited for the transaction");
    cr_assert_eq(ndone, before + 1, "the refusal waited for the transaction");
    cr_assert_eq(w->c.code, DSQ_CODE_FORBIDDEN, "%s", w->c.msg);
    tfree(w);
    tfree(end_txn("rsw", b->c.txn_out, false));
    tfree(b);
}

/* getStats beside an open transaction describes the last commit, as
 * every read beside it does: not the pages the transaction added. */
Test(engine, stats_beside_a_transaction_show_the_last_commit)
{
    ok("sbt", "CREATE TABLE t(x)");
    tcall *s = run("sbt", mk(DSQ_OP_STATS, NULL));
    int64_t pages = s->c.stats->pages;
    tfree(s);
    tcall *b = begin("sbt", 0);
    tcall *w = in_txn("sbt", b->c.txn_out, "INSERT INTO t VALUES (randomblob(200000))");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    s = run("sbt", mk(DSQ_OP_STATS, NULL));
    cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
    cr_assert_eq(s->c.stats->pages, pages, "getStats saw the open transaction's pages");
    cr_assert_eq(s->c.stats->lsn, 1);
    tfree(s);
    tfree(end_txn("sbt", b->c.txn_out, true));
    s = run("sbt", mk(DSQ_OP_STATS, NULL));
    cr_assert_gt(s->c.stats->pages, pages);
    tfree(s);
    tfree(b);
}

/* What a read-only transaction's requests answer reflects its commit, not
 * those made since: its rows, and the LSN they say they are as of. */
Test(engine, read_only_transaction_answers_with_its_lsn)
{
    ok("rol", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)"); /* LSN 1 */
    tcall *ro = begin_ro("rol", 0, 0);
    cr_assert_eq(ro->c.lsn, 1);
    ok("rol", "INSERT INTO t VALUES (4)"); /* LSN 2 */
    tcall *s = mk(DSQ_OP_STREAM, "SELECT x FROM t ORDER BY x");
    strcpy(s->c.txn, ro->c.txn_out);
    run("rol", s);
    int seen = 0;
    for (int guard = 0; guard < 10; guard++) {
        cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
        seen += (int)s->c.results[0].nrows;
        cr_assert_eq(s->c.lsn, 1, "a chunk of the snapshot says LSN %llu", (unsigned long long)s->c.lsn);
        cr_assert_eq(s->c.results[0].lsn, 1);
        if (!s->c.more)
            break;
        int b = ndone;
        dsq_engine_stream_more(E, &s->c, false);
        wait_done(b + 1);
    }
    cr_assert_eq(seen, 3);
    tfree(s);
    tcall *p = mk(DSQ_OP_PING, NULL);
    strcpy(p->c.txn, ro->c.txn_out);
    run("rol", p);
    cr_assert_eq(p->c.err, 0, "%s", p->c.msg);
    cr_assert_eq(p->c.lsn, 1);
    tfree(p);
    tfree(end_txn("rol", ro->c.txn_out, true));
    tfree(ro);
}

/* A read-only transaction idle past its limit while its stream is open:
 * the stream's client went quiet. Both end (the stream too, at the
 * latest at its own idle limit), and the database serves others again. */
Test(engine, idle_read_only_transaction_with_an_open_stream_ends)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = cfg_default();
    c.txn_timeout_ms = 300;
    start_with(c);
    ok("ros", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3), (4), (5)");
    tcall *ro = begin_ro("ros", 0, 100);
    tcall *s = mk(DSQ_OP_STREAM, "SELECT x FROM t ORDER BY x");
    strcpy(s->c.txn, ro->c.txn_out);
    run("ros", s);
    cr_assert_eq(s->c.err, 0, "%s", s->c.msg);
    cr_assert(s->c.more);
    /* Its client asks for nothing more; another one writes. */
    tcall *w = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (6)");
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "ros", &w->c), 0);
    WAIT_UNTIL_STEP((dsq_engine_tick(E), dsq_engine_poll(E)), ndone > before, WAIT_MS,
                    "the write still waits for the idle stream");
    cr_assert_eq(ndone, before + 1, "the write still waits for the idle stream");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    /* (A stream in a read-only transaction holds no one, so the write may
     * be done at once; the transaction's idle end, after its 100 ms, comes
     * with the ticks, and its stream ends with it.) */
    WAIT_UNTIL_STEP((dsq_engine_tick(E), dsq_engine_poll(E)), txns_open() == 0, WAIT_MS,
                    "the idle read-only transaction did not end");
    tcall *r = in_txn("ros", ro->c.txn_out, "SELECT 1");
    cr_assert_eq(r->c.code, DSQ_CODE_TRANSACTION_NOT_FOUND, "%s", r->c.msg);
    tfree(r);
    before = ndone;
    dsq_engine_stream_more(E, &s->c, false);
    wait_done(before + 1);
    cr_assert_neq(s->c.err, 0, "the stream was ended");
    cr_assert_not(s->c.more);
    tfree(s);
    tfree(ro);
}

/* Readers never wait for a writer, however many connections have a write
 * waiting for the open transaction (more than first_runnable keeps in its
 * short list). */
Test(engine, many_waiting_writers_do_not_hold_back_a_reader)
{
    ok("mww", "CREATE TABLE t(x)");
    tcall *b = begin("mww", 0);
    tfree(in_txn("mww", b->c.txn_out, "INSERT INTO t VALUES (0)"));
    enum { N = 12 };
    tcall *w[N];
    int before = ndone;
    for (int i = 0; i < N; i++) {
        w[i] = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
        w[i]->c.session = 100 + (uint64_t)i;
        cr_assert_eq(dsq_engine_submit(E, "mww", &w[i]->c), 0);
    }
    dsq_engine_kick(E);
    ENGINE_WAIT_UNTIL(E, parked(&w[N - 1]->c), "a write ran beside the transaction");
    for (int i = 0; i < N; i++)
        cr_assert(parked(&w[i]->c), "write %d ran beside the transaction", i);
    cr_assert_eq(ndone, before, "a write ran beside the transaction");
    tcall *r = mk(DSQ_OP_QUERY, "SELECT count(*) FROM t");
    r->c.session = 7;
    cr_assert_eq(dsq_engine_submit(E, "mww", &r->c), 0);
    dsq_engine_kick(E);
    /* (The transaction stays open until after this: an answer that waited
     * for it would not come at all.) */
    ENGINE_WAIT_UNTIL(E, ndone > before, "the reader waited for the transaction");
    cr_assert_eq(ndone, before + 1, "the reader waited for the transaction");
    cr_assert_eq(order[before], &r->c);
    cr_assert_eq(val(&r->c.results[0], 0).i, 0);
    tfree(r);
    tcall *cm = mk(DSQ_OP_COMMIT, NULL); /* (not run(): the writers finish around it) */
    strcpy(cm->c.txn, b->c.txn_out);
    cr_assert_eq(dsq_engine_submit(E, "mww", &cm->c), 0);
    wait_done(before + 2 + N);
    cr_assert_eq(cm->c.err, 0, "%s", cm->c.msg);
    tfree(cm);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(w[i]->c.err, 0, "%s", w[i]->c.msg);
        tfree(w[i]);
    }
    tfree(b);
}

/* Stopping with a transaction open and, queued behind it, another
 * client's beginTransaction and then a write: the first is rolled back,
 * the second opens, and the write waits for it. Stopping must not wait
 * for that one for ever: it is rolled back too, and the queued write
 * runs (queued calls finish). */
static void *free_engine(void *arg)
{
    dsq_engine_free(arg);
    return NULL;
}

Test(engine, stop_with_a_transaction_queued_behind_a_transaction)
{
    ok("sq", "CREATE TABLE t(x)");
    tcall *b = begin("sq", 0);
    tcall *b2 = mk(DSQ_OP_BEGIN, NULL);
    cr_assert_eq(dsq_engine_submit(E, "sq", &b2->c), 0);
    tcall *w = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    cr_assert_eq(dsq_engine_submit(E, "sq", &w->c), 0);
    dsq_engine_kick(E);
    ENGINE_WAIT_UNTIL(E, parked(&w->c), "the write did not wait for the transaction");
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, free_engine, E), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    int rc = pthread_timedjoin_np(th, NULL, &until);
    cr_assert_eq(rc, 0, "dsq_engine_free still waits after 5 s");
    E = NULL;
    start_with(cfg_default());
    cr_assert_eq(b2->c.err, 0, "%s", b2->c.msg);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    tcall *r = q("sq", "SELECT count(*) FROM t");
    cr_assert_eq(val(&r->c.results[0], 0).i, 1, "the queued write, once");
    tfree(r);
    tfree(b2);
    tfree(b);
}

/* The tick reads the clock once, then goes through the databases; a write
 * that began to wait after that reading has waited "negative" time: it
 * must not count as having waited write_wait_timeout. */
Test(engine, write_parked_after_the_ticks_clock_reading_does_not_expire)
{
    ok("wpt", "CREATE TABLE t(x)");
    tcall *b = begin("wpt", 0);
    tcall *w = mk(DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    int before = ndone;
    cr_assert_eq(dsq_engine_submit(E, "wpt", &w->c), 0);
    dsq_engine_kick(E);
    ENGINE_WAIT_UNTIL(E, parked(&w->c), "the write did not wait for the transaction");
    cr_assert_eq(ndone, before, "the write waits");
    dsq_actor *a = w->c.actor;
    pthread_mutex_lock(&a->mu);
    uint64_t since = w->c.wait_since_ms;
    pthread_mutex_unlock(&a->mu);
    cr_assert_gt(since, 0, "it was sent back to wait");
    dsq__actor_expire_writers(E, a, since - 5); /* a tick that read its clock just before */
    /* It ran on this thread: had it marked the write to fail, the write
     * would be marked now, and its actor queued to run it. */
    pthread_mutex_lock(&a->mu);
    bool marked = w->c.wait_expired;
    pthread_mutex_unlock(&a->mu);
    cr_assert_not(marked, "the write was marked to fail");
    dsq_engine_kick(E);
    dsq_engine_poll(E);
    cr_assert(parked(&w->c), "the write was taken out of its wait");
    cr_assert_eq(ndone, before, "the write failed: %s", w->c.msg);
    tcall *cm = mk(DSQ_OP_COMMIT, NULL); /* (not run(): the write finishes around it) */
    strcpy(cm->c.txn, b->c.txn_out);
    cr_assert_eq(dsq_engine_submit(E, "wpt", &cm->c), 0);
    wait_done(before + 2);
    cr_assert_eq(cm->c.err, 0, "%s", cm->c.msg);
    tfree(cm);
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    tfree(b);
}

/* The engine has no defaults of its own: a setting left at 0 that must
 * not be is refused by name (before the data directory is touched). */
Test(engine, a_missing_setting_is_refused_by_name)
{
    static const struct {
        const char *name;
        size_t off, size;
    } req[] = {
        {"max_open_actors", offsetof(dsq_engine_cfg, max_open_actors), sizeof(unsigned)},
        {"write_wait_ms", offsetof(dsq_engine_cfg, write_wait_ms), sizeof(uint64_t)},
        {"max_snapshots", offsetof(dsq_engine_cfg, max_snapshots), sizeof(((dsq_engine_cfg *)0)->max_snapshots)},
        {"segment_bytes", offsetof(dsq_engine_cfg, segment_bytes), sizeof(((dsq_engine_cfg *)0)->segment_bytes)},
        {"max_open_files", offsetof(dsq_engine_cfg, max_open_files), sizeof(unsigned)},
        {"cdc_buffer_bytes", offsetof(dsq_engine_cfg, cdc_buffer_bytes), sizeof(((dsq_engine_cfg *)0)->cdc_buffer_bytes)},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        dsq_engine_cfg c = cfg_default();
        memset((char *)&c + req[i].off, 0, req[i].size);
        char err[256] = "";
        dsq_engine *e = dsq_engine_new(&c, err, sizeof err);
        cr_assert_null(e, "%s: an engine without it started", req[i].name);
        cr_assert(strstr(err, req[i].name) != NULL, "%s: %s", req[i].name, err);
    }
}

/* ---- prepared transactions (the sharding router's two-phase commit) ---------------------- */

static tcall *begin_prepared(const char *db, const char *id)
{
    tcall *t = mk(DSQ_OP_BEGIN, NULL);
    t->c.immediate = true;
    t->c.internal_tables = true;
    t->c.target_db = "ks.coord";
    strcpy(t->c.prepare_id, id);
    return run(db, t);
}

static tcall *own(const char *db, const char *sql)
{
    tcall *t = mk(DSQ_OP_QUERY, sql);
    t->c.internal_tables = true;
    return run(db, t);
}

/* A prepared transaction's record is durable before its BEGIN answers;
 * its writes wait for it (the transaction holds the database); after a
 * restart that lost the transaction, the record still refuses other
 * writes until it is resolved; COMMIT takes the record with the data,
 * ROLLBACK after; clients never see, touch or capture _dsq_ tables. */
Test(engine, prepared_transaction_fences_writes_until_resolved)
{
    const char *id = "0123456789abcdef0123456789abcdef", *id2 = "fedcba9876543210fedcba9876543210";
    ok("p", "CREATE TABLE t(x)");
    tcall *b = begin_prepared("p", id);
    cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
    tcall *w = in_txn("p", b->c.txn_out, "INSERT INTO t VALUES (1)");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    /* Clients may not reach dosqld's own tables, even to read. */
    expect_err("p", "SELECT * FROM _dsq_prepared", DSQ_CODE_FORBIDDEN, "dosqld's own tables");
    expect_err("p", "DROP TABLE _dsq_prepared", DSQ_CODE_FORBIDDEN, "dosqld's own tables");
    tcall *sc = run("p", mk(DSQ_OP_SCHEMA, NULL));
    cr_assert_eq(sc->c.err, 0);
    cr_assert_eq(sc->c.schema->tables.n, 1, "getSchema shows only t");
    tfree(sc);
    /* The engine stops with the transaction open: it is lost, the
     * record stays (it was committed before the transaction began). */
    tfree(b);
    dsq_engine_free(E);
    start_with(cfg_default());
    expect_err("p", "INSERT INTO t VALUES (2)", DSQ_CODE_SERIALIZATION_FAILURE, "the decision");
    tcall *cb = begin("p", 0); /* a client's own transaction writes nothing either */
    tcall *cw = in_txn("p", cb->c.txn_out, "INSERT INTO t VALUES (2)");
    cr_assert_eq(cw->c.code, DSQ_CODE_SERIALIZATION_FAILURE, "%s", cw->c.msg);
    tfree(cw);
    tfree(end_txn("p", cb->c.txn_out, false));
    tfree(cb);
    tcall *r = q("p", "SELECT count(*) FROM t");
    cr_assert_eq(r->c.err, 0, "reads run: %s", r->c.msg);
    cr_assert_eq(val(&r->c.results[0], 0).i, 0, "the lost transaction's row is not there");
    tfree(r);
    /* Resolved as committed: begun again under its id (the record is
     * there already), its writes redone, committed with the record gone. */
    tcall *b2 = begin_prepared("p", id);
    cr_assert_eq(b2->c.err, 0, "%s", b2->c.msg);
    w = in_txn("p", b2->c.txn_out, "INSERT INTO t VALUES (1)");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    tfree(w);
    tcall *c = mk(DSQ_OP_COMMIT, NULL);
    strcpy(c->c.txn, b2->c.txn_out);
    strcpy(c->c.prepare_id, id);
    c->c.internal_tables = true;
    run("p", c);
    cr_assert_eq(c->c.err, 0, "%s", c->c.msg);
    tfree(c);
    tfree(b2);
    ok("p", "INSERT INTO t VALUES (2)"); /* no record left: writes run */
    /* One rolled back: its record goes after it. */
    tcall *b3 = begin_prepared("p", id2);
    cr_assert_eq(b3->c.err, 0, "%s", b3->c.msg);
    tcall *rb = mk(DSQ_OP_ROLLBACK, NULL);
    strcpy(rb->c.txn, b3->c.txn_out);
    strcpy(rb->c.prepare_id, id2);
    rb->c.internal_tables = true;
    run("p", rb);
    cr_assert_eq(rb->c.err, 0, "%s", rb->c.msg);
    tfree(rb);
    tfree(b3);
    ok("p", "INSERT INTO t VALUES (3)");
    /* A record left by a transaction that lost its coordinator: the
     * router removes it (presumed abort), and writes run again. */
    tcall *b4 = begin_prepared("p", id2);
    tfree(b4);
    dsq_engine_free(E);
    start_with(cfg_default());
    expect_err("p", "DELETE FROM t", DSQ_CODE_SERIALIZATION_FAILURE, "cross-shard");
    tcall *d = own("p", "DELETE FROM _dsq_prepared WHERE txid = 'fedcba9876543210fedcba9876543210'");
    cr_assert_eq(d->c.err, 0, "%s", d->c.msg);
    tfree(d);
    tcall *n = q("p", "SELECT group_concat(x) FROM t");
    cr_assert_eq(n->c.err, 0);
    dsq_value v = val(&n->c.results[0], 0);
    cr_assert_eq(v.n, 5);
    cr_assert_eq(memcmp(v.p, "1,2,3", 5), 0);
    tfree(n);
    ok("p", "DELETE FROM t WHERE x = 3");
    /* An id not of the router's form is refused. */
    tcall *bad = mk(DSQ_OP_BEGIN, NULL);
    bad->c.internal_tables = true;
    bad->c.target_db = "ks.coord";
    strcpy(bad->c.prepare_id, "x'; DROP TABLE t; --");
    run("p", bad);
    cr_assert_eq(bad->c.code, DSQ_CODE_INVALID_REQUEST, "%s", bad->c.msg);
    tfree(bad);
}

/* A record another transaction left (undecided, or decided and not yet
 * applied here after a crash) keeps a new prepared transaction out too:
 * it would run between the other's parts. */
Test(engine, a_prepared_record_keeps_other_prepared_transactions_out)
{
    const char *t1 = "11111111111111111111111111111111", *t2 = "22222222222222222222222222222222";
    ok("p2", "CREATE TABLE t(x)");
    tcall *b = begin_prepared("p2", t1);
    cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
    tfree(b);
    dsq_engine_free(E); /* lost: its record stays */
    start_with(cfg_default());
    tcall *b2 = begin_prepared("p2", t2);
    cr_assert_eq(b2->c.code, DSQ_CODE_SERIALIZATION_FAILURE, "%s", b2->c.msg);
    cr_assert(strstr(b2->c.msg, "another cross-shard transaction") != NULL, "%s", b2->c.msg);
    tfree(b2);
    /* Its own id begins again (recovery's redo). */
    tcall *b3 = begin_prepared("p2", t1);
    cr_assert_eq(b3->c.err, 0, "%s", b3->c.msg);
    tcall *rb = mk(DSQ_OP_ROLLBACK, NULL);
    strcpy(rb->c.txn, b3->c.txn_out);
    strcpy(rb->c.prepare_id, t1);
    rb->c.internal_tables = true;
    run("p2", rb);
    cr_assert_eq(rb->c.err, 0, "%s", rb->c.msg);
    tfree(rb);
    tfree(b3);
    tcall *b4 = begin_prepared("p2", t2);
    cr_assert_eq(b4->c.err, 0, "%s", b4->c.msg);
    tcall *rb2 = mk(DSQ_OP_ROLLBACK, NULL);
    strcpy(rb2->c.txn, b4->c.txn_out);
    strcpy(rb2->c.prepare_id, t2);
    rb2->c.internal_tables = true;
    run("p2", rb2);
    tfree(rb2);
    tfree(b4);
}
