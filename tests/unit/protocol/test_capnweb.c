/* Unit tests: protocol/capnweb — a session driven by hand-written messages,
 * with a real engine and a transport that records what the session sends.
 * Checks expression evaluation, id allocation, refcounted release, and that
 * malformed messages abort (or reject) without leaking (run under ASan). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/capnweb.h"
#include "protocol/cdcsub.h"
#include "tests/unit/support/engine_cfg.h"
#include "tests/unit/support/engine_wait.h"

static dsq_engine *E;
static dsq_cw_stats *ST;
static dsq_cdc_cache *CC;
static char dir[64];

/* What the session sent, and how it ended. */
static char *sent[256];
static int nsent;
static int ended;
static int batch_done;

static int t_send(void *ud, const char *msg, size_t len)
{
    cr_assert_lt(nsent, 256);
    sent[nsent++] = strndup(msg, len);
    return 0;
}

static void t_end(void *ud) { ended++; }
static void t_batch_done(void *ud) { batch_done++; }
static unsigned t_scope(void *ud, const char *db)
{
    return strcmp(db, "secret") == 0 ? 0 : DSQ_SCOPE_R | DSQ_SCOPE_W;
}

static const dsq_cw_transport T = {.send = t_send, .end = t_end, .batch_done = t_batch_done, .scope = t_scope};
static const dsq_dosql_limits DL = {.max_params = 100, .max_batch = 100, .chunk_rows = 10,
                                    .max_chunk_rows = 1000};
static const dsq_cw_limits CL = {.max_depth = 16, .max_bigint_digits = 40, .max_entries = 20};

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-test-capnweb-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    dsq_engine_cfg c = test_engine_cfg(dir);
    c.workers = 1;
    c.max_open_actors = 10;
    c.max_queue = 100;
    c.query_timeout_ms = 2000;
    c.max_sql_length = 10000;
    c.wake = test_wake;
    char err[256];
    E = dsq_engine_new(&c, err, sizeof err);
    cr_assert_not_null(E, "%s", err);
    ST = dsq_cw_stats_new();
    cr_assert_not_null(ST);
    CC = dsq_cdc_cache_new();
    cr_assert_not_null(CC);
    nsent = 0;
    ended = 0;
    batch_done = 0;
}

static void teardown(void)
{
    dsq_engine_free(E);
    for (int i = 0; i < nsent; i++)
        free(sent[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    uint64_t left = dsq_cw_stats_entries(ST);
    dsq_cw_stats_free(ST);
    dsq_cdc_cache_free(CC);
    cr_assert_eq(left, 0, "every table entry was freed");
}

TestSuite(capnweb, .init = setup, .fini = teardown, .timeout = 60);

/* Poll until `n` sent messages in total; fail after 10 s. */
static void wait_sent(int n) { test_wait(E, &nsent, n, "sent messages"); }

static void in(dsq_cw_session *s, const char *msg) { dsq_cw_receive(s, msg, strlen(msg)); }

static dsq_cw_session *open_db(const char *db)
{
    dsq_cw_session *s = dsq_cw_session_new(E, ST, CC, &DL, &CL, db, 1, false, &T);
    cr_assert_not_null(s);
    return s;
}

Test(capnweb, a_call_resolves_with_capnweb_values)
{
    dsq_cw_session *s = open_db("u1");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT ? AS a, ? AS b, x'00ff' AS c, 1.5 AS d\","
          "\"params\":[[[\"bigint\",\"9007199254740993\"],\"t\"]]}]]]");
    in(s, "[\"pull\",1]");
    wait_sent(1);
    cr_assert_str_eq(sent[0], "[\"resolve\",1,{\"columns\":[[\"a\",\"b\",\"c\",\"d\"]],"
                              "\"columnTypes\":[[null,null,null,null]],"
                              "\"rows\":[[[[[\"bigint\",\"9007199254740993\"],\"t\",[\"bytes\",\"AP8=\"],1.5]]]],"
                              "\"rowsAffected\":0,\"lastInsertRowid\":0,\"lsn\":[\"bigint\",\"0\"]}]");
    in(s, "[\"release\",1,1]");
    dsq_cw_session_close(s);
}

Test(capnweb, errors_reject_with_code_props)
{
    dsq_cw_session *s = open_db("u2");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELEC 1\"}]]]");
    in(s, "[\"pull\",1]");
    wait_sent(1);
    cr_assert(strncmp(sent[0], "[\"reject\",1,[\"error\",\"Error\",\"near \\\"SELEC\\\": syntax error\",null,"
                               "{\"code\":\"SYNTAX_ERROR\"}]]", 200) == 0, "%s", sent[0]);
    cr_assert_eq(ended, 0, "an SQL error is not a protocol error");
    dsq_cw_session_close(s);
}

Test(capnweb, pipelining_waits_for_the_referenced_result)
{
    dsq_cw_session *s = open_db("u3");
    in(s, "[\"push\",[\"pipeline\",0,[\"beginTransaction\"],[{}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"CREATE TABLE t(x)\",\"transactionId\":[\"pipeline\",1,[\"transactionId\"]]}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"commit\"],[{\"transactionId\":[\"pipeline\",1,[\"transactionId\"]]}]]]");
    in(s, "[\"pull\",3]");
    wait_sent(1);
    cr_assert_str_eq(sent[0], "[\"resolve\",3,{\"lsn\":[\"bigint\",\"1\"]}]");
    for (int i = 1; i <= 3; i++) {
        char m[64];
        snprintf(m, sizeof m, "[\"release\",%d,1]", i);
        in(s, m);
    }
    dsq_cw_session_close(s);
}

Test(capnweb, database_name_exports_a_stub_and_release_counts)
{
    dsq_cw_session *s = dsq_cw_session_new(E, ST, CC, &DL, &CL, NULL, 1, false, &T);
    in(s, "[\"push\",[\"pipeline\",0,[\"database\"],[\"u4\"]]]");
    in(s, "[\"pull\",1]");
    in(s, "[\"push\",[\"pipeline\",1,[\"ping\"],[{}]]]");
    in(s, "[\"pull\",2]");
    wait_sent(2);
    cr_assert_str_eq(sent[0], "[\"resolve\",1,[\"export\",-1]]", "the stub gets the next negative id");
    cr_assert(strncmp(sent[1], "[\"resolve\",2,{\"pong\":true", 25) == 0, "%s", sent[1]);
    /* Calls on the exported stub work too; releasing it twice over is refcounted. */
    in(s, "[\"push\",[\"pipeline\",-1,[\"ping\"],[{}]]]");
    in(s, "[\"pull\",3]");
    wait_sent(3);
    cr_assert(strncmp(sent[2], "[\"resolve\",3,", 13) == 0, "%s", sent[2]);
    in(s, "[\"release\",-1,1]");
    in(s, "[\"push\",[\"pipeline\",-1,[\"ping\"],[{}]]]"); /* -1 is gone now */
    cr_assert_eq(ended, 1, "a call on a released id aborts");
    cr_assert(strstr(sent[nsent - 1], "no such entry on the exports table: -1") != NULL, "%s", sent[nsent - 1]);
    dsq_cw_session_close(s);
}

Test(capnweb, forbidden_and_invalid_database_names)
{
    dsq_cw_session *s = dsq_cw_session_new(E, ST, CC, &DL, &CL, NULL, 1, false, &T);
    in(s, "[\"push\",[\"pipeline\",0,[\"database\"],[\"secret\"]]]");
    in(s, "[\"pull\",1]");
    in(s, "[\"push\",[\"pipeline\",0,[\"database\"],[\"../x\"]]]");
    in(s, "[\"pull\",2]");
    cr_assert_eq(nsent, 2);
    cr_assert(strstr(sent[0], "FORBIDDEN") != NULL, "%s", sent[0]);
    cr_assert(strstr(sent[1], "invalid name") != NULL, "%s", sent[1]);
    dsq_cw_session_close(s);
}

Test(capnweb, map_applies_instructions_per_element)
{
    dsq_cw_session *s = open_db("u5");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 1 AS x UNION ALL SELECT 2\"}]]]");
    /* rows.map(row => api.query({sql: "SELECT ? * 10", params: [row[0]]}).rows[0][0]) */
    in(s, "[\"push\",[\"remap\",1,[\"rows\"],[[\"import\",0]],"
          "[[\"pipeline\",-1,[\"query\"],[{\"sql\":\"SELECT ? * 10 AS y\",\"params\":[[[\"pipeline\",0,[\"0\"]]]]}]],"
          "[\"pipeline\",1,[\"rows\",0,0]]]]]");
    in(s, "[\"pull\",2]");
    wait_sent(1);
    cr_assert_str_eq(sent[0], "[\"resolve\",2,[[10,20]]]");
    in(s, "[\"release\",1,1]");
    in(s, "[\"release\",2,1]");
    dsq_cw_session_close(s);
}

Test(capnweb, values_evaluate_and_write_back)
{
    dsq_cw_session *s = open_db("u6");
    in(s, "[\"push\",{\"a\":[[1,[\"undefined\"],[[2]]]],\"b\":[\"bigint\",\"-5\"],\"c\":[\"bytes\",\"AQI=\"],"
          "\"d\":[\"date\",1700000000000],\"e\":[\"undefined\"]}]");
    in(s, "[\"pull\",1]");
    cr_assert_eq(nsent, 1);
    cr_assert_str_eq(sent[0], "[\"resolve\",1,{\"a\":[[1,null,[[2]]]],\"b\":[\"bigint\",\"-5\"],"
                              "\"c\":[\"bytes\",\"AQI=\"],\"d\":1700000000000}]");
    in(s, "[\"push\",[\"pipeline\",1,[\"a\",2,0]]]"); /* a property of a pushed value */
    in(s, "[\"pull\",2]");
    cr_assert_str_eq(sent[1], "[\"resolve\",2,2]");
    dsq_cw_session_close(s);
}

/* Each malformed message aborts the session with an error, and nothing
 * stays allocated (teardown checks the entry count; ASan the rest). */
Test(capnweb, malformed_messages_abort)
{
    const char *bad[] = {
        "[\"push\"]",                                      /* wrong arity */
        "[\"push\",1,2]",
        "[\"bogus\",1]",                                   /* unknown type */
        "[\"push\",[\"nosuchtag\",1]]",                    /* unknown tag */
        "[\"pull\",42]",                                   /* no such id */
        "[\"release\",42,1]",
        "[\"release\",0,-1]",
        "[\"resolve\",42,null]",
        "[\"push\",[\"pipeline\",7,[\"query\"],[{}]]]",    /* no such export */
        "[\"push\",[\"pipeline\",1,[\"query\"],[{}]]]",    /* refers to itself: a cycle */
        "[\"pull\",9007199254740993]",                     /* beyond 2^53 */
        "[\"push\",[\"bigint\",\"12345678901234567890123456789012345678901234567890\"]]",
        "[\"push\",[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "[\"push\",[\"pipeline\",0,[\"query\"],[{}],\"x\"]]",
        "[\"push\",[\"remap\",0]]",
        "[\"push\",[]]",
        "{}",
        "[1,2]",
        "[\"push\",1e400]",
        "[\"pull\",123456789012345678901234567890]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int before = ended, sent_before = nsent;
        dsq_cw_session *s = open_db("u7");
        in(s, bad[i]);
        cr_assert_eq(ended, before + 1, "not aborted: %s", bad[i]);
        cr_assert_eq(nsent, sent_before + 1, "%s", bad[i]);
        cr_assert(strncmp(sent[nsent - 1], "[\"abort\",[\"error\",\"Error\",", 26) == 0, "%s -> %s", bad[i],
                  sent[nsent - 1]);
        in(s, "[\"push\",[\"pipeline\",0,[\"ping\"],[{}]]]"); /* ignored after an abort */
        cr_assert_eq(nsent, sent_before + 1);
        dsq_cw_session_close(s);
    }
}

Test(capnweb, unsupported_things_reject_without_ending_the_session)
{
    dsq_cw_session *s = open_db("u8");
    in(s, "[\"pipe\"]");
    in(s, "[\"pull\",1]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 1\",\"x\":[\"readable\",1]}]]]");
    in(s, "[\"pull\",2]");
    in(s, "[\"push\",[\"pipeline\",0,[\"nope\"],[{}]]]");
    in(s, "[\"pull\",3]");
    cr_assert_eq(nsent, 3);
    cr_assert(strstr(sent[0], "[\"reject\",1,") && strstr(sent[0], "not supported"), "%s", sent[0]);
    cr_assert(strstr(sent[1], "[\"reject\",2,") && strstr(sent[1], "not supported"), "%s", sent[1]);
    cr_assert(strstr(sent[2], "[\"reject\",3,") && strstr(sent[2], "no method 'nope'"), "%s", sent[2]);
    cr_assert_eq(ended, 0);
    dsq_cw_session_close(s);
}

Test(capnweb, too_many_entries_abort)
{
    dsq_cw_session *s = open_db("u9");
    for (int i = 0; i < 25 && ended == 0; i++)
        in(s, "[\"push\",{\"x\":1}]"); /* never released */
    cr_assert_eq(ended, 1);
    cr_assert(strstr(sent[nsent - 1], "too many imports and exports") != NULL, "%s", sent[nsent - 1]);
    dsq_cw_session_close(s);
}

Test(capnweb, http_batch_answers_when_pulled_results_settle)
{
    dsq_cw_session *s = dsq_cw_session_new(E, ST, CC, &DL, &CL, "u10", 0, true, &T);
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 7 AS n\"}]]]");
    in(s, "[\"pull\",1]");
    in(s, "[\"push\",[\"pipeline\",0,[\"ping\"],[{}]]]"); /* not pulled: not waited for */
    dsq_cw_batch_end(s);
    cr_assert_eq(batch_done, 0, "the query is still running");
    wait_sent(1);
    cr_assert_eq(batch_done, 1);
    cr_assert(strncmp(sent[0], "[\"resolve\",1,{\"columns\":[[\"n\"]]", 30) == 0, "%s", sent[0]);
    dsq_cw_session_close(s);
}

static int find_sent(const char *prefix, int from)
{
    for (int i = from; i < nsent; i++)
        if (strncmp(sent[i], prefix, strlen(prefix)) == 0)
            return i;
    return -1;
}

Test(capnweb, callbacks_are_called_paced_and_released)
{
    dsq_cw_session *s = open_db("u11");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"CREATE TABLE t(i); INSERT INTO t VALUES (1),(2),(3)\"}]]]");
    in(s, "[\"pull\",1]");
    wait_sent(1);
    in(s, "[\"release\",1,1]");
    in(s, "[\"push\",[\"pipeline\",0,[\"queryStream\"],[{\"sql\":\"SELECT i FROM t\",\"chunkSize\":2},[\"export\",-1]]]]");
    in(s, "[\"pull\",2]");
    wait_sent(3); /* our push to the callback, and its pull */
    cr_assert_str_eq(sent[1], "[\"push\",[\"pipeline\",-1,[],[{\"seq\":0,\"columns\":[[\"i\"]],"
                              "\"columnTypes\":[[null]],\"rows\":[[[[1]],[[2]]]]}]]]");
    cr_assert_str_eq(sent[2], "[\"pull\",1]", "our first push to the client has id 1");
    in(s, "[\"resolve\",1,true]");
    wait_sent(6); /* release of our call 1, then the next chunk's push and pull */
    cr_assert_str_eq(sent[3], "[\"release\",1,1]");
    cr_assert(strncmp(sent[4], "[\"push\",[\"pipeline\",-1,[],[{\"seq\":1,\"rows\":[[[[3]]]]}]]]", 60) == 0, "%s", sent[4]);
    cr_assert_eq(find_sent("[\"resolve\",2,", 0), -1, "the stream waits for the callback");
    in(s, "[\"resolve\",2,true]");
    wait_sent(9);
    int r = find_sent("[\"resolve\",2,{\"rowCount\":3", 0);
    cr_assert_geq(r, 0);
    cr_assert_geq(find_sent("[\"release\",-1,1]", 0), 0, "the callback stub is released when the stream ends");
    in(s, "[\"release\",2,1]");
    /* A stub passed where no one keeps it is released at once. */
    int before = nsent;
    in(s, "[\"push\",[\"pipeline\",0,[\"ping\"],[{\"x\":[\"export\",-2]}]]]");
    cr_assert_geq(find_sent("[\"release\",-2,1]", before), 0);
    dsq_cw_session_close(s);
}

Test(capnweb, a_promise_the_client_passes_is_awaited)
{
    dsq_cw_session *s = open_db("u12");
    /* query({sql: "SELECT ? AS v", params: [<promise -1>]}) */
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT ? AS v\",\"params\":[[[\"promise\",-1]]]}]]]");
    in(s, "[\"pull\",1]");
    dsq_engine_poll(E);
    cr_assert_eq(nsent, 0, "the call waits for the promise");
    in(s, "[\"resolve\",-1,42]");
    cr_assert_str_eq(sent[0], "[\"release\",-1,1]", "the promise, used, goes back to the client");
    wait_sent(2);
    cr_assert(strncmp(sent[1], "[\"resolve\",1,{\"columns\":[[\"v\"]],\"columnTypes\":[[null]],\"rows\":[[[[42]]]]", 70) == 0,
              "%s", sent[1]);
    /* A rejected promise fails the call that waited for it. */
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT ?\",\"params\":[[[\"promise\",-2]]]}]]]");
    in(s, "[\"pull\",2]");
    in(s, "[\"reject\",-2,[\"error\",\"Error\",\"nope\"]]");
    cr_assert(strstr(sent[2], "[\"reject\",2,") && strstr(sent[2], "nope"), "%s", sent[2]);
    cr_assert_str_eq(sent[3], "[\"release\",-2,1]");
    cr_assert_eq(dsq_cw_stats_entries(ST), 3, "main, and the two pushes not released yet");
    dsq_cw_session_close(s);
}

Test(capnweb, closing_during_a_map_frees_everything)
{
    dsq_cw_session *s = open_db("u13");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n\"}]]]");
    in(s, "[\"pull\",1]");
    wait_sent(1);
    in(s, "[\"push\",[\"remap\",1,[\"rows\"],[[\"import\",0]],"
          "[[\"pipeline\",-1,[\"query\"],[{\"sql\":\"SELECT ? + 1\",\"params\":[[[\"pipeline\",0,[0]]]]}]],"
          "[\"pipeline\",-1,[\"query\"],[{\"sql\":\"SELECT 2\"}]]]]]");
    in(s, "[\"pull\",2]");
    dsq_cw_session_close(s); /* with 50 calls in flight */
    ENGINE_WAIT_UNTIL(E, dsq_cw_stats_entries(ST) == 0, "%llu entries left",
                      (unsigned long long)dsq_cw_stats_entries(ST));
    cr_assert_eq(dsq_cw_stats_entries(ST), 0);
}

/* The client releases a push's result while it is still pending and later
 * pushes still pipeline on it (`using` on a pipelined promise in the
 * capnweb client): the pushes that came before the release still get it
 * (tests/fuzz/corpus/capnweb/release_while_pending). */
Test(capnweb, pushes_before_a_release_still_pipeline_on_the_pending_result)
{
    dsq_cw_session *s = open_db("u14");
    in(s, "[\"push\",[\"pipeline\",0,[\"beginTransaction\"],[{}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 1 AS one\",\"transactionId\":[\"pipeline\",1,[\"transactionId\"]]}]]]");
    in(s, "[\"release\",1,1]");
    in(s, "[\"pull\",2]");
    wait_sent(1);
    cr_assert_eq(ended, 0, "%s", sent[0]);
    cr_assert(strncmp(sent[0], "[\"resolve\",2,{\"columns\":[[\"one\"]]", 32) == 0, "%s", sent[0]);
    cr_assert_eq(dsq_cw_stats_entries(ST), 2, "main and push 2: the released result went once used");
    in(s, "[\"release\",2,1]");
    cr_assert_eq(dsq_cw_stats_entries(ST), 1);
    dsq_cw_session_close(s);
}

/* The same with a result that has settled: released while a push still
 * queued behind a pending one refers to it. */
Test(capnweb, pushes_before_a_release_still_see_a_settled_result)
{
    dsq_cw_session *s = open_db("u15");
    in(s, "[\"push\",{\"sql\":\"SELECT 5 AS n\"}]");
    in(s, "[\"push\",[\"pipeline\",0,[\"beginTransaction\"],[{}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":[\"pipeline\",1,[\"sql\"]],"
          "\"transactionId\":[\"pipeline\",2,[\"transactionId\"]]}]]]");
    in(s, "[\"release\",1,1]");
    in(s, "[\"pull\",3]");
    wait_sent(1);
    cr_assert_eq(ended, 0, "%s", sent[0]);
    cr_assert(strncmp(sent[0], "[\"resolve\",3,{\"columns\":[[\"n\"]],\"columnTypes\":[[null]],\"rows\":[[[[5]]]]", 70) == 0,
              "%s", sent[0]);
    cr_assert_eq(dsq_cw_stats_entries(ST), 3, "main, pushes 2 and 3");
    dsq_cw_session_close(s);
}

/* A push that arrives after the release does not see the entry, pending
 * or not (as in the capnweb reference: the id left the table). */
/* A push that names a later push's result is refused; it waited for
 * that push, which waited behind it, for ever. */
Test(capnweb, a_push_naming_a_later_push_is_refused)
{
    dsq_cw_session *s = open_db("u17");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) SELECT count(*) FROM n\"}]]]");
    /* It waits for push 1 (pending), and names push 3 too. */
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":[\"pipeline\",1,[\"lsn\"]],\"transactionId\":[\"pipeline\",3,[\"transactionId\"]]}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"beginTransaction\"],[{}]]]");
    in(s, "[\"pull\",2]");
    test_wait(E, &ended, 1, "the abort");
    cr_assert(strstr(sent[nsent - 1], "no such entry on the exports table: 3") != NULL, "%s", sent[nsent - 1]);
    dsq_cw_session_close(s);
}

Test(capnweb, a_push_after_the_release_does_not_see_the_entry)
{
    dsq_cw_session *s = open_db("u16");
    in(s, "[\"push\",[\"pipeline\",0,[\"beginTransaction\"],[{}]]]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 1\",\"transactionId\":[\"pipeline\",1,[\"transactionId\"]]}]]]");
    in(s, "[\"release\",1,1]");
    in(s, "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT 2\",\"transactionId\":[\"pipeline\",1,[\"transactionId\"]]}]]]");
    test_wait(E, &ended, 1, "the abort");
    cr_assert(strstr(sent[nsent - 1], "no such entry on the exports table: 1") != NULL, "%s", sent[nsent - 1]);
    dsq_cw_session_close(s);
}
