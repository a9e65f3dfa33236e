/* Unit tests: the engine's side of replication (engine.h) — two engines
 * in one process, a primary and a follower copy of one database, with
 * hooks that stand in for cluster/: the primary's commit records are
 * captured and applied to the follower; its replies leave only when the
 * hooks say the follower holds them; the follower refuses writes. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/runtime/engine_int.h"
#include "tests/unit/support/engine_cfg.h"
#include "tests/unit/support/engine_wait.h"

typedef struct copy {
    dsq_engine *e;
    char dir[64];
    dsq_role role;
    dsq_repl_hooks hooks;
    pthread_mutex_t mu;
    uint64_t durable;       /* the last `durable` the released hook was told */
    uint64_t acked;         /* primary: what the follower holds (the test says) */
    dsq_buf recs;           /* primary: records captured, back to back */
    uint64_t last_lsn;      /* primary: the last one captured */
    int ndone;
} copy;

static copy P, F;

/* A worker's next read of a role, held (hold_role): it reads the role,
 * says so (role_read) and waits for role_go before it goes on with it. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static bool hold_role, role_read, role_go;
static pthread_t test_thread;

static dsq_role h_role(void *ud, const char *db, char *primary, size_t len)
{
    copy *c = ud;
    pthread_mutex_lock(&c->mu);
    dsq_role role = c->role;
    pthread_mutex_unlock(&c->mu);
    snprintf(primary, len, "%s", role == DSQ_ROLE_FOLLOWER ? "nP" : "");
    pthread_mutex_lock(&hold_mu);
    if (hold_role && strcmp(db, "d") == 0 && !pthread_equal(pthread_self(), test_thread)) {
        hold_role = false;
        role_read = true;
        pthread_cond_broadcast(&hold_cv);
        while (!role_go)
            pthread_cond_wait(&hold_cv, &hold_mu);
    }
    pthread_mutex_unlock(&hold_mu);
    return strcmp(db, "d") == 0 ? role : DSQ_ROLE_ALONE;
}

static uint64_t h_released(void *ud, const char *db, uint64_t durable)
{
    copy *c = ud;
    pthread_mutex_lock(&c->mu);
    if (strcmp(db, "d") == 0 && durable > c->durable)
        c->durable = durable;
    /* A primary with one follower and quorum 2: both must hold it. */
    uint64_t r = c->role == DSQ_ROLE_PRIMARY && strcmp(db, "d") == 0 ? (durable < c->acked ? durable : c->acked)
                                                                      : durable;
    pthread_mutex_unlock(&c->mu);
    return r;
}

static void h_committed(void *ud, const char *db, uint64_t lsn, const void *rec, size_t len)
{
    copy *c = ud;
    cr_assert_str_eq(db, "d");
    pthread_mutex_lock(&c->mu);
    cr_assert_eq(lsn, c->last_lsn + 1, "records in LSN order");
    c->last_lsn = lsn;
    cr_assert_eq(dsq_buf_append(&c->recs, rec, len), 0);
    pthread_mutex_unlock(&c->mu);
}

static void on_done(dsq_call *c) { ((copy *)c->ud)->ndone++; }

static void start_ckpt(copy *c, dsq_role role, uint64_t checkpoint_bytes)
{
    memset(c, 0, sizeof *c);
    strcpy(c->dir, "/tmp/dsq-test-repl-XXXXXX");
    cr_assert_not_null(mkdtemp(c->dir));
    c->role = role;
    pthread_mutex_init(&c->mu, NULL);
    c->hooks = (dsq_repl_hooks){.role = h_role, .released = h_released, .committed = h_committed, .ud = c};
    dsq_engine_cfg cfg = test_engine_cfg(c->dir);
    cfg.workers = 2;
    cfg.group_sync = false;
    cfg.wake = test_wake;
    cfg.repl = &c->hooks;
    cfg.repl_timeout_ms = 300;
    if (checkpoint_bytes)
        cfg.checkpoint_bytes = checkpoint_bytes;
    char err[256];
    c->e = dsq_engine_new(&cfg, err, sizeof err);
    cr_assert_not_null(c->e, "%s", err);
}

static void start(copy *c, dsq_role role) { start_ckpt(c, role, 0); }

static void stop(copy *c)
{
    dsq_engine_free(c->e);
    dsq_buf_free(&c->recs);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    cr_assert_eq(system(cmd), 0);
}

static void setup(void)
{
    test_thread = pthread_self();
    hold_role = role_read = role_go = false;
    start(&P, DSQ_ROLE_PRIMARY);
    start(&F, DSQ_ROLE_FOLLOWER);
}

static void teardown(void)
{
    stop(&P);
    stop(&F);
}

TestSuite(repl, .init = setup, .fini = teardown, .timeout = 60);

typedef struct tcall {
    dsq_call c;
    dsq_stmt_req r;
} tcall;

/* Fill the call but do not submit it (go). */
static tcall *make(copy *cp, dsq_op op, const char *sql)
{
    tcall *t = calloc(1, sizeof *t);
    t->c.op = op;
    t->c.atomic = true;
    t->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    t->c.done = on_done;
    t->c.ud = cp;
    if (sql) {
        t->r.sql = sql;
        t->r.sql_len = strlen(sql);
        t->c.stmts = &t->r;
        t->c.nstmts = 1;
    }
    return t;
}

static tcall *go(copy *cp, tcall *t)
{
    cr_assert_eq(dsq_engine_submit(cp->e, "d", &t->c), 0, "%s", t->c.msg);
    return t;
}

static tcall *submit(copy *cp, dsq_op op, const char *sql) { return go(cp, make(cp, op, sql)); }

/* A query a follower may answer (consistency "replica"), once it has
 * min_lsn. */
static tcall *replica_read(const char *sql, uint64_t min_lsn)
{
    tcall *t = make(&F, DSQ_OP_QUERY, sql);
    t->c.replica_ok = true;
    t->c.min_lsn = min_lsn;
    return go(&F, t);
}

static void done(tcall *t)
{
    dsq_call_reset(&t->c);
    free(t);
}

/* Apply what the primary captured so far to the follower; returns once
 * its log is durable that far (the released hook was told). */
static void ship(void)
{
    pthread_mutex_lock(&P.mu);
    dsq_buf recs = P.recs;
    P.recs = (dsq_buf)DSQ_BUF_INIT;
    uint64_t upto = P.last_lsn;
    pthread_mutex_unlock(&P.mu);
    uint64_t first = 1;
    size_t first_len;
    if (recs.len > 0)
        cr_assert_eq(dsq_log_record(recs.data, recs.len, &first, &first_len), 0);
    tcall *t = make(&F, DSQ_OP_APPLY, NULL);
    t->c.recs = (const uint8_t *)recs.data;
    t->c.recs_len = recs.len;
    t->c.as_of_lsn = first - 1; /* (the follower has everything before) */
    go(&F, t);
    int n = F.ndone + 1;
    test_wait(F.e, &F.ndone, n, "the apply");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(t->c.lsn, upto);
    ENGINE_WAIT_UNTIL(F.e, (pthread_mutex_lock(&F.mu), F.durable >= upto ? (pthread_mutex_unlock(&F.mu), 1)
                                                                          : (pthread_mutex_unlock(&F.mu), 0)),
                      "the follower's log durable to %llu", (unsigned long long)upto);
    done(t);
    dsq_buf_free(&recs);
}

/* The follower acknowledges what it holds: the primary's replies for it go. */
static void ack(void)
{
    pthread_mutex_lock(&F.mu);
    uint64_t d = F.durable;
    pthread_mutex_unlock(&F.mu);
    pthread_mutex_lock(&P.mu);
    P.acked = d;
    pthread_mutex_unlock(&P.mu);
    dsq_engine_repl_poke(P.e, "d");
}

Test(repl, a_reply_waits_for_the_other_copy_which_then_serves_it)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)");
    /* The primary's log becomes durable, but the follower holds nothing:
     * the reply waits (checking that something does not happen: a while). */
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.durable >= 1 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                      : (pthread_mutex_unlock(&P.mu), 0)),
                      "the primary's log durable");
    for (int i = 0; i < 50; i++) {
        dsq_engine_poll(P.e);
        wait_sleep_ms(2);
    }
    cr_assert_eq(P.ndone, 0, "the reply left before the follower held the commit");
    ship();
    ack();
    test_wait(P.e, &P.ndone, 1, "the write's reply");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    uint64_t lsn = w->c.lsn;
    done(w);

    tcall *r = replica_read("SELECT sum(x), count(*) FROM t", 0);
    test_wait(F.e, &F.ndone, F.ndone + 1, "the follower's read");
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    size_t pos = 0;
    dsq_value v;
    cr_assert(dsq_result_next(&r->c.results[0], &pos, &v));
    cr_assert_eq(v.i, 3);
    cr_assert_geq(r->c.lsn, lsn);
    done(r);

    /* More commits, one record each; the follower's read sees the last. */
    tcall *more[5];
    for (int i = 0; i < 5; i++)
        more[i] = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (10)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= lsn + 5 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                              : (pthread_mutex_unlock(&P.mu), 0)),
                      "five more records");
    ship();
    ack();
    test_wait(P.e, &P.ndone, 6, "their replies");
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(more[i]->c.err, 0, "%s", more[i]->c.msg);
        done(more[i]);
    }
    r = replica_read("SELECT sum(x) FROM t", 0);
    int n = F.ndone + 1;
    test_wait(F.e, &F.ndone, n, "the follower's read");
    pos = 0;
    cr_assert(dsq_result_next(&r->c.results[0], &pos, &v));
    cr_assert_eq(v.i, 53);
    done(r);
}

/* A write reads the role (primary), and before it commits, the copy steps
 * down (another was promoted: follower now, the replies waiting for other
 * copies abandoned). Its reply comes to wait after that sweep; as a
 * follower's it would go as soon as the log is durable that far (the new
 * primary's commit LSN passes it: other commits at those LSNs), though
 * no other copy holds the record and it is to be cut. It fails instead,
 * NOT_PRIMARY. */
Test(repl, a_write_run_as_primary_fails_if_the_copy_stepped_down_meanwhile)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= 1 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                       : (pthread_mutex_unlock(&P.mu), 0)),
                      "the create's record");
    ship();
    ack();
    test_wait(P.e, &P.ndone, 1, "the create");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    done(w);

    pthread_mutex_lock(&hold_mu);
    hold_role = true;
    pthread_mutex_unlock(&hold_mu);
    w = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&hold_mu), role_read ? (pthread_mutex_unlock(&hold_mu), 1)
                                                                    : (pthread_mutex_unlock(&hold_mu), 0)),
                      "the write to read its role");
    pthread_mutex_lock(&P.mu);
    P.role = DSQ_ROLE_FOLLOWER;
    pthread_mutex_unlock(&P.mu);
    dsq_engine_repl_abandon(P.e, "d", DSQ_CODE_NOT_PRIMARY, "stepped down");
    pthread_mutex_lock(&hold_mu);
    role_go = true;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_mu);

    test_wait(P.e, &P.ndone, 2, "the write's reply");
    cr_assert_eq(w->c.err, -1, "the write was answered as done");
    cr_assert_eq(w->c.code, DSQ_CODE_NOT_PRIMARY, "%s", w->c.msg);
    cr_assert(strstr(w->c.msg, "stopped being the primary of database d") != NULL, "%s", w->c.msg);
    done(w);
}

Test(repl, a_follower_refuses_writes_naming_its_primary)
{
    tcall *w = submit(&F, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    test_wait(F.e, &F.ndone, 1, "the write");
    cr_assert_eq(w->c.code, DSQ_CODE_NOT_PRIMARY);
    cr_assert(strstr(w->c.msg, "primary is node nP") != NULL, "%s", w->c.msg);
    done(w);
    tcall *b = submit(&F, DSQ_OP_BEGIN, NULL);
    test_wait(F.e, &F.ndone, 2, "the begin");
    cr_assert_eq(b->c.code, DSQ_CODE_NOT_PRIMARY);
    done(b);
    /* A read-only transaction is fine. */
    b = make(&F, DSQ_OP_BEGIN, NULL);
    b->c.read_only = true;
    go(&F, b);
    test_wait(F.e, &F.ndone, 3, "the read-only begin");
    cr_assert_eq(b->c.err, 0, "%s", b->c.msg);
    done(b);
    /* And the primary refuses records. */
    tcall *a = submit(&P, DSQ_OP_APPLY, NULL);
    test_wait(P.e, &P.ndone, 1, "the apply");
    cr_assert_eq(a->c.code, DSQ_CODE_INVALID_REQUEST);
    done(a);
}

/* Nobody acknowledges: after repl_timeout_ms the reply fails with
 * TIMEOUT, saying the commit is durable here only. */
Test(repl, a_reply_no_other_copy_acknowledges_times_out)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    for (int i = 0; i < 2000 && P.ndone == 0; i++) {
        dsq_engine_tick(P.e);
        dsq_engine_poll(P.e);
        wait_sleep_ms(1);
    }
    cr_assert_eq(P.ndone, 1);
    cr_assert_eq(w->c.code, DSQ_CODE_TIMEOUT);
    cr_assert(strstr(w->c.msg, "not yet on enough of the database's copies") != NULL, "%s", w->c.msg);
    done(w);
}

/* The engine's sweep reads the time once, then walks the actors: a reply
 * parked after that reading is younger than "now" says. It waits its
 * whole commit_timeout (it did fail at once with TIMEOUT: the wait
 * computed as now - parked underflowed). */
Test(repl, a_reply_parked_after_the_sweep_read_the_time_does_not_time_out)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    dsq_actor *a = dsq__actor_get(P.e, "d");
    dsq_queue out = {0};
    uint64_t parked = 0;
    for (int i = 0; i < 5000 && parked == 0; i++) { /* parked at the gate once its commit is durable here */
        pthread_mutex_lock(&a->mu);
        dsq_gate *g = a->gate_live;
        if (g != NULL) {
            pthread_mutex_lock(&g->mu);
            dsq_call *c = dsq_container_of(dsq_queue_first(&g->parked), dsq_call, link);
            if (c != NULL && c->gate_lsn <= g->durable)
                parked = c->parked_ms;
            pthread_mutex_unlock(&g->mu);
        }
        pthread_mutex_unlock(&a->mu);
        if (parked == 0) {
            dsq_engine_poll(P.e);
            wait_sleep_ms(1);
        }
    }
    cr_assert_neq(parked, 0, "the reply parked, waiting for the other copy");
    pthread_mutex_lock(&a->mu);
    dsq__gate_repoll(a->gate_live, parked - 1, 1000, false, DSQ_CODE_TIMEOUT, NULL, &out);
    pthread_mutex_unlock(&a->mu);
    cr_assert(dsq_queue_empty(&out), "a reply parked 1 ms after the sweep's time failed");
    cr_assert_eq(P.ndone, 0);
    ship();
    ack();
    test_wait(P.e, &P.ndone, 1, "the reply");
    cr_assert_eq(w->c.err, 0, "%s", w->c.msg);
    done(w);
}

/* A follower that missed records reads them from the primary's log. */
Test(repl, the_primarys_log_reads_back_for_a_follower_behind)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    tcall *w2 = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (7)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= 2 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                       : (pthread_mutex_unlock(&P.mu), 0)),
                      "two records");
    tcall *l = make(&P, DSQ_OP_LOG_READ, NULL);
    l->c.as_of_lsn = 0;
    l->c.chunk_rows = 1; /* one record per read at least */
    go(&P, l);
    test_wait(P.e, &P.ndone, 1, "the log read"); /* (the writes' replies wait for the follower) */
    cr_assert_eq(l->c.err, 0, "%s", l->c.msg);
    cr_assert_eq(l->c.lsn, 1);
    cr_assert(l->c.more);
    pthread_mutex_lock(&P.mu);
    cr_assert(memcmp(l->c.out.data, P.recs.data, l->c.out.len) == 0, "the record as logged");
    pthread_mutex_unlock(&P.mu);
    done(l);
    l = make(&P, DSQ_OP_LOG_READ, NULL);
    l->c.as_of_lsn = 1;
    go(&P, l);
    test_wait(P.e, &P.ndone, 2, "the second log read");
    cr_assert_eq(l->c.lsn, 2);
    cr_assert(!l->c.more);
    done(l);
    l = make(&P, DSQ_OP_LOG_READ, NULL);
    l->c.as_of_lsn = 9;
    go(&P, l);
    test_wait(P.e, &P.ndone, 3, "a log read past the end");
    cr_assert_eq(l->c.code, DSQ_CODE_INVALID_LSN);
    done(l);
    ship();
    ack();
    test_wait(P.e, &P.ndone, 5, "the writes' replies");
    cr_assert_eq(w2->c.err, 0, "%s", w2->c.msg);
    done(w);
    done(w2);
}

/* A follower's records past a point are cut (they were never
 * acknowledged: another primary's history goes on from there); it then
 * takes that history. Cutting behind a checkpoint is refused. */
Test(repl, a_follower_cuts_its_log_back_and_goes_on)
{
    tcall *w[6];
    w[0] = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    for (int i = 1; i < 6; i++)
        w[i] = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= 6 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                       : (pthread_mutex_unlock(&P.mu), 0)),
                      "six records");
    dsq_buf all = P.recs; /* (kept: applied again below) */
    P.recs = (dsq_buf)DSQ_BUF_INIT;
    tcall *a = make(&F, DSQ_OP_APPLY, NULL);
    a->c.recs = (const uint8_t *)all.data;
    a->c.recs_len = all.len;
    go(&F, a);
    test_wait(F.e, &F.ndone, 1, "the apply");
    cr_assert_eq(a->c.lsn, 6);
    done(a);
    tcall *t = make(&F, DSQ_OP_TRUNCATE, NULL);
    t->c.as_of_lsn = 3;
    go(&F, t);
    test_wait(F.e, &F.ndone, 2, "the cut");
    cr_assert_eq(t->c.err, 0, "%s", t->c.msg);
    cr_assert_eq(t->c.lsn, 3);
    done(t);
    tcall *r = replica_read("SELECT count(*) FROM t", 0);
    test_wait(F.e, &F.ndone, 3, "a read");
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    size_t pos = 0;
    dsq_value v;
    cr_assert(dsq_result_next(&r->c.results[0], &pos, &v));
    cr_assert_eq(v.i, 2, "records 2 and 3 stay");
    done(r);
    /* Records sent as if its log ended elsewhere (at 1: those at 2 and 3
     * would pass for its own) are refused whole, saying where it ends. */
    a = make(&F, DSQ_OP_APPLY, NULL);
    a->c.recs = (const uint8_t *)all.data;
    a->c.recs_len = all.len;
    a->c.as_of_lsn = 1;
    go(&F, a);
    test_wait(F.e, &F.ndone, 4, "an apply from the wrong place");
    cr_assert_eq(a->c.code, DSQ_CODE_INVALID_LSN, "%s", a->c.msg);
    cr_assert_eq(a->c.lsn, 3);
    done(a);
    /* The records after 3 come again (here: the same ones, from the
     * start: those up to 3 are passed over). */
    a = make(&F, DSQ_OP_APPLY, NULL);
    a->c.recs = (const uint8_t *)all.data;
    a->c.recs_len = all.len;
    a->c.as_of_lsn = 3;
    go(&F, a);
    test_wait(F.e, &F.ndone, 5, "the apply again");
    cr_assert_eq(a->c.err, 0, "%s", a->c.msg);
    cr_assert_eq(a->c.lsn, 6);
    done(a);
    dsq_buf_free(&all);
    ship();
    ack();
    test_wait(P.e, &P.ndone, 6, "the writes' replies");
    for (int i = 0; i < 6; i++)
        done(w[i]);
}

/* A checkpoint holds the commits up to its LSN: a log is not cut behind
 * it (the copy has to be made again instead). */
Test(repl, no_cut_behind_a_checkpoint)
{
    stop(&P);
    start_ckpt(&P, DSQ_ROLE_PRIMARY, 1); /* a checkpoint after every commit */
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    tcall *w2 = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (1)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= 2 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                       : (pthread_mutex_unlock(&P.mu), 0)),
                      "two records");
    tcall *t = make(&P, DSQ_OP_TRUNCATE, NULL);
    t->c.as_of_lsn = 1;
    go(&P, t);
    test_wait(P.e, &P.ndone, 1, "the cut");
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_LSN, "%s", t->c.msg);
    cr_assert(strstr(t->c.msg, "checkpoint") != NULL, "%s", t->c.msg);
    done(t);
    pthread_mutex_lock(&P.mu);
    P.acked = UINT64_MAX;
    pthread_mutex_unlock(&P.mu);
    dsq_engine_repl_poke(P.e, "d");
    test_wait(P.e, &P.ndone, 3, "the writes' replies");
    done(w);
    done(w2);
}

/* A copy is made again from the object store only where there is one,
 * and only a follower's. */
Test(repl, a_rebuild_needs_an_object_store_and_a_follower)
{
    tcall *t = make(&F, DSQ_OP_REBUILD, NULL);
    t->c.as_of_lsn = 5;
    go(&F, t);
    test_wait(F.e, &F.ndone, 1, "the rebuild");
    cr_assert_eq(t->c.code, DSQ_CODE_INVALID_LSN, "%s", t->c.msg);
    cr_assert(strstr(t->c.msg, "no object store") != NULL, "%s", t->c.msg);
    cr_assert_eq(t->c.lsn, 0);
    done(t);
}

/* A read of the newest state is the primary's unless the client takes a
 * follower's; a bookmark read waits for the follower to reach its LSN. */
Test(repl, a_follower_answers_reads_asked_so_once_it_has_the_bookmark)
{
    tcall *w = submit(&P, DSQ_OP_QUERY, "CREATE TABLE t(x)");
    tcall *w2 = submit(&P, DSQ_OP_QUERY, "INSERT INTO t VALUES (5)");
    ENGINE_WAIT_UNTIL(P.e, (pthread_mutex_lock(&P.mu), P.last_lsn >= 2 ? (pthread_mutex_unlock(&P.mu), 1)
                                                                       : (pthread_mutex_unlock(&P.mu), 0)),
                      "two records");
    tcall *plain = submit(&F, DSQ_OP_QUERY, "SELECT 1");
    test_wait(F.e, &F.ndone, 1, "a plain read");
    cr_assert_eq(plain->c.code, DSQ_CODE_NOT_PRIMARY, "%s", plain->c.msg);
    cr_assert(strstr(plain->c.msg, "consistency") != NULL, "%s", plain->c.msg);
    done(plain);
    /* Bookmark 2: it waits (the follower has nothing yet), then the
     * records come and it answers with them. */
    tcall *r = replica_read("SELECT count(*) FROM t", 2);
    for (int i = 0; i < 20; i++) { /* (that something does not happen: a while) */
        dsq_engine_poll(F.e);
        wait_sleep_ms(2);
    }
    cr_assert_eq(F.ndone, 1, "the read did not wait for its bookmark");
    ship();
    test_wait(F.e, &F.ndone, 3, "the read after the records");
    cr_assert_eq(r->c.err, 0, "%s", r->c.msg);
    size_t pos = 0;
    dsq_value v;
    cr_assert(dsq_result_next(&r->c.results[0], &pos, &v));
    cr_assert_eq(v.i, 1);
    cr_assert_geq(r->c.lsn, 2);
    done(r);
    /* A bookmark it never reaches: TIMEOUT after the commit timeout (300 ms
     * here), naming how far it is. */
    r = replica_read("SELECT 1", 99);
    for (int i = 0; i < 3000 && F.ndone < 4; i++) {
        dsq_engine_tick(F.e);
        dsq_engine_poll(F.e);
        wait_sleep_ms(1);
    }
    cr_assert_eq(r->c.code, DSQ_CODE_TIMEOUT, "%s", r->c.msg);
    cr_assert(strstr(r->c.msg, "reach LSN 99") != NULL, "%s", r->c.msg);
    done(r);
    ack();
    test_wait(P.e, &P.ndone, 2, "the writes' replies");
    done(w);
    done(w2);
}
