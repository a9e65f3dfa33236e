/* engine_stress — drive the engine hard from one "loop" thread, for the
 * thread sanitizer (Criterion does not run under TSan).
 *
 *   engine_stress DIR [ROUNDS]
 *
 * Each round submits, across 20 databases: writes, reads, transactions
 * (some committed, some rolled back, some left to their session's end),
 * streams, and ticks, with max_open_actors small enough that actors keep
 * hibernating. At the end every database's row count must equal the
 * number of committed inserts. Prints "engine_stress: ok" or a reason and
 * exits non-zero. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/runtime/engine_int.h" /* to describe stuck actors on failure */
#include "tests/unit/support/engine_cfg.h"

#define NDB 20

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int wakes;

static void wake(void *arg)
{
    pthread_mutex_lock(&mu);
    wakes++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

typedef struct job {
    dsq_call c;
    dsq_stmt_req r;
    int db;
    int kind; /* 0 insert, 1 read, 2 begin, 3 insert in txn, 4 commit, 5 rollback,
                 6 stream, 8 final count, 9 create */
    struct job *next;
} job;

static dsq_engine *E;
static int inflight, failures;
static long committed[NDB];
static char txn[NDB][33];
static int txn_inserts[NDB];

static void done(dsq_call *c);

static job *mkjob(int db, int kind, const char *sql)
{
    job *j = calloc(1, sizeof *j);
    j->db = db;
    j->kind = kind;
    j->c.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    j->c.atomic = true;
    j->c.done = done;
    j->c.ud = j;
    j->c.chunk_rows = 3;
    if (sql) {
        j->r.sql = sql;
        j->r.sql_len = strlen(sql);
        j->c.stmts = &j->r;
        j->c.nstmts = 1;
    }
    return j;
}

static void submit(job *j, dsq_op op)
{
    char name[16];
    snprintf(name, sizeof name, "db%d", j->db);
    j->c.op = op;
    if (dsq_engine_submit(E, name, &j->c) == 0)
        inflight++;
    else
        free(j);
}

static void done(dsq_call *c)
{
    job *j = c->ud;
    if (c->op == DSQ_OP_STREAM && c->more) {
        dsq_engine_stream_more(E, c, rand() % 4 == 0);
        return;
    }
    inflight--;
    if (c->err == 0 && j->kind == 8) {
        size_t pos = 0;
        dsq_value v = {0}; /* no row at all is reported as 0 rows */
        if (!dsq_result_next(&c->results[0], &pos, &v) || v.i != committed[j->db]) {
            fprintf(stderr, "engine_stress: db%d has %lld rows, %ld committed\n", j->db,
                    (long long)v.i, committed[j->db]);
            failures++;
        }
    }
    if (c->err == 0) {
        switch (j->kind) {
        case 0: committed[j->db]++; break;
        case 2: memcpy(txn[j->db], c->txn_out, 33); txn_inserts[j->db] = 0; break;
        case 3: txn_inserts[j->db]++; break;
        case 4: committed[j->db] += txn_inserts[j->db]; txn[j->db][0] = '\0'; break;
        case 5: txn[j->db][0] = '\0'; break;
        }
    } else if (c->code != DSQ_CODE_TRANSACTION_NOT_FOUND && c->code != DSQ_CODE_RESOURCE_EXHAUSTED) {
        fprintf(stderr, "engine_stress: unexpected error on db%d kind %d: %s: %s\n", j->db, j->kind,
                dsq_code_name(c->code), c->msg);
        failures++;
    } else if (j->kind == 4 || j->kind == 5 || j->kind == 3) {
        txn[j->db][0] = '\0'; /* expired under us */
    }
    dsq_call_reset(c);
    free(j);
}

/* Wait for every call, ticking every 20 ms as the server does (calls
 * queued behind a forgotten transaction wait for its expiry). */
static void drain(void)
{
    time_t give_up = time(NULL) + 120;
    while (inflight > 0) {
        dsq_engine_poll(E);
        if (inflight == 0)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 20 * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&mu);
        int rc = 0;
        while (wakes == 0 && rc == 0)
            rc = pthread_cond_timedwait(&cv, &mu, &until);
        wakes = 0;
        pthread_mutex_unlock(&mu);
        dsq_engine_tick(E);
        if (time(NULL) > give_up) {
            fprintf(stderr, "engine_stress: calls did not finish (%d left)\n", inflight);
            /* What each actor with work holds, for the post-mortem. */
            dsq_htab_iter it = {0};
            for (dsq_hnode *n; (n = dsq_htab_next(&E->actors, &it)) != NULL;) {
                dsq_actor *a = dsq_container_of(n, dsq_actor, hlink);
                pthread_mutex_lock(&a->mu);
                const dsq_call *head = dsq_container_of(dsq_queue_first(&a->mail), dsq_call, link);
                if (a->nmail || a->inflight || a->txn[0] || a->stream_id)
                    fprintf(stderr, "  %s: sched=%d mail=%zu inflight=%u txn=%s stream=%llu "
                                    "open=%d expire_sent=%d head_op=%d head_state=%d\n",
                            a->name, a->sched, a->nmail, a->inflight, a->txn[0] ? a->txn : "-",
                            (unsigned long long)a->stream_id, a->open != NULL, a->expire_sent,
                            head ? (int)head->op : -1, head ? head->state : -1);
                pthread_mutex_unlock(&a->mu);
            }
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: engine_stress DIR [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 30;
    /* The configuration's defaults, then tight limits to churn actors,
     * hibernation and expiries. */
    dsq_engine_cfg cfg = test_engine_cfg(argv[1]);
    cfg.workers = 4;
    cfg.idle_timeout_ms = 5;
    cfg.max_open_actors = 6;
    cfg.max_queue = 10000;
    cfg.batch_per_turn = 3;
    cfg.query_timeout_ms = 5000;
    cfg.txn_timeout_ms = 50;
    cfg.wake = wake;
    char err[256];
    E = dsq_engine_new(&cfg, err, sizeof err);
    if (E == NULL) {
        fprintf(stderr, "engine_stress: %s\n", err);
        return 1;
    }
    srand(7);
    for (int d = 0; d < NDB; d++)
        submit(mkjob(d, 9, "CREATE TABLE IF NOT EXISTS t(x)"), DSQ_OP_QUERY);
    drain();
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 200; k++) {
            int d = rand() % NDB;
            int kind = rand() % 7;
            job *j;
            switch (kind) {
            case 0: submit(mkjob(d, 0, "INSERT INTO t VALUES (1)"), DSQ_OP_QUERY); break;
            case 1: submit(mkjob(d, 1, "SELECT count(*) FROM t"), DSQ_OP_QUERY); break;
            case 2:
                if (txn[d][0] == '\0') {
                    j = mkjob(d, 2, NULL);
                    j->c.session = (uint64_t)(d + 1);
                    submit(j, DSQ_OP_BEGIN);
                }
                break;
            case 3: case 4: case 5:
                if (txn[d][0] != '\0') {
                    j = mkjob(d, kind, kind == 3 ? "INSERT INTO t VALUES (2)" : NULL);
                    memcpy(j->c.txn, txn[d], 33);
                    submit(j, kind == 3 ? DSQ_OP_QUERY : kind == 4 ? DSQ_OP_COMMIT : DSQ_OP_ROLLBACK);
                    if (kind != 3)
                        txn[d][0] = '\0';
                }
                break;
            case 6: submit(mkjob(d, 6, "SELECT x FROM t"), DSQ_OP_STREAM); break;
            }
            if (k % 50 == 0) {
                dsq_engine_tick(E);
                if (rand() % 3 == 0)
                    dsq_engine_session_closed(E, (uint64_t)(rand() % NDB + 1));
            }
            dsq_engine_poll(E);
        }
        drain();
    }
    /* Roll back what is open, then count. */
    for (int d = 0; d < NDB; d++)
        if (txn[d][0]) {
            job *j = mkjob(d, 5, NULL);
            memcpy(j->c.txn, txn[d], 33);
            submit(j, DSQ_OP_ROLLBACK);
        }
    drain();
    for (int d = 0; d < NDB; d++)
        submit(mkjob(d, 8, "SELECT count(*) FROM t"), DSQ_OP_QUERY);
    drain();
    dsq_engine_free(E);
    if (failures) {
        fprintf(stderr, "engine_stress: %d unexpected errors\n", failures);
        return 1;
    }
    printf("engine_stress: ok (%d rounds)\n", rounds);
    return 0;
}
