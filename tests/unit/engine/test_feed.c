/* Unit tests: engine/cdc/feed — the buffer policy of a database's recent
 * commits for CDC subscribers: only durable commits are read, a budget
 * evicts the oldest (a subscriber behind them is sent to the log), a
 * commit that went by unseen restarts the buffer, reads stop at their
 * byte limit, callbacks run when durability moves, and a feed nobody
 * follows keeps nothing. Driven directly, without actors running SQL. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/engine.h"
#include "engine/runtime/engine_int.h"
#include "tests/unit/support/engine_cfg.h"
#include "tests/unit/support/wait.h"

static dsq_engine *E;
static char dir[64];
static int news;

static void on_news(void *ud) { (*(int *)ud)++; }
static void wake(void *arg) { (void)arg; }

/* E becomes an engine on `dir` with cdc's CDC settings (its CDC buffer
 * 4 KiB when it gives none; no coalescing unless it asks), the rest the
 * configuration's defaults with one worker and no fsyncs. */
static void engine_with(dsq_engine_cfg cdc)
{
    dsq_engine_free(E);
    dsq_engine_cfg c = test_engine_cfg(dir);
    c.workers = 1;
    c.max_queue = 100;
    c.sync = DSQ_SYNC_OFF;
    c.wake = wake;
    c.cdc_buffer_bytes = cdc.cdc_buffer_bytes ? cdc.cdc_buffer_bytes : 4096;
    c.cdc_coalesce_ms = cdc.cdc_coalesce_ms;
    c.cdc_coalesce_cpu = cdc.cdc_coalesce_cpu;
    c.cdc_slice_ns = cdc.cdc_slice_ns;
    char err[256];
    E = dsq_engine_new(&c, err, sizeof err);
    cr_assert_not_null(E, "%s", err);
}

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-test-feed-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    E = NULL;
    engine_with((dsq_engine_cfg){0});
    news = 0;
}

static void teardown(void)
{
    dsq_engine_free(E);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(feed, .init = setup, .fini = teardown);

/* Commit LSNs [from, to] with `bytes` of changes each (the LSN's low byte
 * repeated). */
static void commits(dsq_feed *f, uint64_t from, uint64_t to, size_t bytes)
{
    uint8_t buf[2048];
    for (uint64_t l = from; l <= to; l++) {
        memset(buf, (int)(l & 0xff), bytes);
        dsq_feed_commit(f, l, l * 1000, buf, bytes);
    }
}

/* Read after `after`: the LSNs appended (checking each one's bytes). */
static int read_lsns(dsq_feed_sub *s, uint64_t after, size_t max, uint64_t *lsns, size_t cap, size_t *n,
                     uint64_t *upto, bool *more)
{
    dsq_buf b = DSQ_BUF_INIT;
    int rc = dsq_engine_feed_read(s, after, UINT64_MAX, max, &b, upto, more);
    const uint8_t *p = (const uint8_t *)b.data, *end = p + b.len;
    uint64_t lsn, t;
    const uint8_t *ch;
    uint32_t len;
    *n = 0;
    while (dsq_cdc_batch_next(&p, end, &lsn, &t, &ch, &len) == 1 && *n < cap) {
        cr_assert_eq(t, lsn * 1000);
        for (uint32_t i = 0; i < len; i++)
            cr_assert_eq(ch[i], (uint8_t)(lsn & 0xff));
        lsns[(*n)++] = lsn;
    }
    dsq_buf_free(&b);
    return rc;
}

static dsq_feed *feed_of(const char *db) { return atomic_load(&dsq__actor_get(E, db)->feed); }

Test(feed, only_durable_commits_are_read)
{
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "a", on_news, &news);
    cr_assert_not_null(s);
    dsq_feed *f = feed_of("a");
    commits(f, 1, 5, 10);
    uint64_t l[16], upto;
    size_t n;
    bool more;
    cr_assert_eq(read_lsns(s, 0, 1 << 20, l, 16, &n, &upto, &more), 1);
    cr_assert_eq(n, 0, "nothing durable yet");
    dsq_feed_durable(&E->feeds, f, 3);
    dsq_engine_poll(E);
    cr_assert_eq(news, 1, "the subscriber heard of it");
    cr_assert_eq(read_lsns(s, 0, 1 << 20, l, 16, &n, &upto, &more), 1);
    cr_assert_eq(n, 3);
    cr_assert_eq(l[0], 1);
    cr_assert_eq(l[2], 3);
    cr_assert_eq(upto, 3);
    cr_assert_eq(more, false);
    dsq_feed_durable(&E->feeds, f, 5);
    dsq_feed_durable(&E->feeds, f, 5); /* no news twice */
    dsq_engine_poll(E);
    cr_assert_eq(news, 2);
    cr_assert_eq(read_lsns(s, 3, 1 << 20, l, 16, &n, &upto, &more), 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(l[0], 4);
    dsq_engine_feed_unsubscribe(E, s);
}

Test(feed, the_budget_evicts_the_oldest_and_a_reader_behind_goes_to_the_log)
{
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "b", on_news, &news);
    dsq_feed *f = feed_of("b");
    commits(f, 1, 100, 200); /* 20 KB against a 4 KiB budget */
    dsq_feed_durable(&E->feeds, f, 100);
    uint64_t l[128], upto;
    size_t n;
    bool more;
    cr_assert_eq(read_lsns(s, 0, 1 << 20, l, 128, &n, &upto, &more), 0, "LSN 1 is gone: read the log");
    cr_assert_eq(read_lsns(s, 50, 1 << 20, l, 128, &n, &upto, &more), 0);
    cr_assert_eq(read_lsns(s, 95, 1 << 20, l, 128, &n, &upto, &more), 1, "the newest are held");
    cr_assert_eq(n, 5);
    cr_assert_eq(l[4], 100);
    /* A read stops at its byte limit (at least one commit) and says more. */
    cr_assert_eq(read_lsns(s, 95, 500, l, 128, &n, &upto, &more), 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(upto, 97);
    cr_assert_eq(more, true);
    dsq_engine_feed_unsubscribe(E, s);
}

Test(feed, a_commit_that_went_by_unseen_restarts_the_buffer)
{
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "c", on_news, &news);
    dsq_feed *f = feed_of("c");
    commits(f, 1, 3, 10);
    commits(f, 5, 6, 10); /* 4 never came */
    dsq_feed_durable(&E->feeds, f, 6);
    uint64_t l[16], upto;
    size_t n;
    bool more;
    cr_assert_eq(read_lsns(s, 3, 1 << 20, l, 16, &n, &upto, &more), 0, "4 must come from the log");
    cr_assert_eq(read_lsns(s, 5, 1 << 20, l, 16, &n, &upto, &more), 1);
    cr_assert_eq(n, 1);
    cr_assert_eq(l[0], 6);
    dsq_engine_feed_unsubscribe(E, s);
}

Test(feed, a_feed_nobody_follows_keeps_nothing)
{
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "d", on_news, &news);
    dsq_feed *f = feed_of("d");
    dsq_engine_feed_unsubscribe(E, s);
    commits(f, 1, 10, 100);
    dsq_feed_durable(&E->feeds, f, 10);
    dsq_engine_poll(E);
    cr_assert_eq(news, 0);
    s = dsq_engine_feed_subscribe(E, "d", on_news, &news);
    uint64_t l[16], upto;
    size_t n;
    bool more;
    cr_assert_eq(read_lsns(s, 0, 1 << 20, l, 16, &n, &upto, &more), 0, "nothing was kept meanwhile");
    commits(f, 11, 12, 10);
    dsq_feed_durable(&E->feeds, f, 12);
    cr_assert_eq(read_lsns(s, 10, 1 << 20, l, 16, &n, &upto, &more), 1, "held from the next commit on");
    cr_assert_eq(n, 2);
    dsq_engine_stats st;
    dsq_engine_stats_get(E, &st);
    cr_assert_eq(st.subscriptions, 1);
    dsq_engine_feed_unsubscribe(E, s);
    dsq_engine_stats_get(E, &st);
    cr_assert_eq(st.subscriptions, 0);
}

/* ---- coalescing: a busy process calls a feed's subscribers at most every
 * cdc_coalesce_ms (cdc_coalesce_cpu 0: always counted busy) ---------------------------- */

/* Poll, and on while a round of calls goes on in slices (due at once). */
static void poll_rounds(void)
{
    dsq_engine_poll(E);
    for (int i = 0; i < 1000 && dsq_engine_feed_due_ms(E) == 0; i++)
        dsq_engine_feed_poll(E);
}

/* The feed's log is durable up to lsn: then poll. */
static void durable(dsq_feed *f, uint64_t lsn)
{
    dsq_feed_durable(&E->feeds, f, lsn);
    poll_rounds();
}

/* E: an engine coalescing for `ms` once the process uses `cpu` % of its CPUs. */
static void coalescing_engine(unsigned ms, unsigned cpu)
{
    engine_with((dsq_engine_cfg){.cdc_buffer_bytes = 1 << 20, .cdc_coalesce_ms = ms, .cdc_coalesce_cpu = cpu});
}

Test(feed, a_busy_process_holds_news_back_until_the_interval_ends)
{
    coalescing_engine(300, 0);
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "co", on_news, &news);
    cr_assert_not_null(s);
    /* 0.5 ms per subscriber, up to the 300 ms: 600 of them for the whole */
    int others = 0;
    dsq_feed_sub *extra[599];
    for (int i = 0; i < 599; i++)
        cr_assert_not_null(extra[i] = dsq_engine_feed_subscribe(E, "co", on_news, &others));
    dsq_feed *f = feed_of("co");
    commits(f, 1, 3, 10);
    durable(f, 1);
    cr_assert_eq(news, 1, "the first news goes at once");
    cr_assert_eq(dsq_engine_feed_due_ms(E), -1, "nothing held back");
    durable(f, 2);
    durable(f, 3);
    cr_assert_eq(news, 1, "news within the interval waits");
    cr_assert(dsq_engine_feed_pending(E), "held back: events coming");
    int64_t due = dsq_engine_feed_due_ms(E);
    cr_assert(due > 0 && due <= 300, "due in %lld ms", (long long)due);
    dsq_engine_stats st;
    dsq_engine_stats_get(E, &st);
    cr_assert_eq(st.cdc_coalesced, 1, "held back once, however much news came meanwhile");
    /* Time must pass: the held news is due when the interval ends. */
    WAIT_UNTIL(dsq_engine_feed_due_ms(E) <= 0, WAIT_MS, "the held news did not come due");
    poll_rounds();
    cr_assert_eq(news, 2, "its turn came: one call for both commits");
    cr_assert_eq(dsq_engine_feed_due_ms(E), -1);
    uint64_t l[16], upto;
    size_t n;
    bool more;
    cr_assert_eq(read_lsns(s, 1, 1 << 20, l, 16, &n, &upto, &more), 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(upto, 3);
    cr_assert_eq(others, 599 * 2);
    for (int i = 0; i < 599; i++)
        dsq_engine_feed_unsubscribe(E, extra[i]);
    dsq_engine_feed_unsubscribe(E, s);
}

Test(feed, a_feed_with_few_subscribers_waits_less)
{
    coalescing_engine(300, 0);
    dsq_feed_sub *s[4];
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(s[i] = dsq_engine_feed_subscribe(E, "few", on_news, &news));
    dsq_feed *f = feed_of("few");
    commits(f, 1, 2, 10);
    durable(f, 1);
    cr_assert_eq(news, 4);
    durable(f, 2);
    int64_t due = dsq_engine_feed_due_ms(E);
    cr_assert(due >= 0 && due <= 2, "4 subscribers: 2 ms at most, not the 300 (due in %lld)", (long long)due);
    /* Time must pass: the held news is due when its shorter interval ends. */
    WAIT_UNTIL(dsq_engine_feed_due_ms(E) <= 0, WAIT_MS, "the held news did not come due");
    poll_rounds();
    cr_assert_eq(news, 8);
    for (int i = 0; i < 4; i++)
        dsq_engine_feed_unsubscribe(E, s[i]);
}

Test(feed, an_idle_process_does_not_hold_news_back)
{
    coalescing_engine(300, 100); /* busy only at 100 % of every CPU: never, idle here */
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "idle", on_news, &news);
    cr_assert_not_null(s);
    dsq_feed *f = feed_of("idle");
    commits(f, 1, 3, 10);
    for (uint64_t l = 1; l <= 3; l++) {
        dsq_feed_durable(&E->feeds, f, l);
        poll_rounds();
        /* Each sync in a window of its own: the process's CPU use is
         * looked at once per 50 ms window. */
        let_time_pass(60);
    }
    cr_assert_eq(news, 3, "every sync's news at once");
    cr_assert_eq(dsq_engine_feed_due_ms(E), -1);
    dsq_engine_feed_unsubscribe(E, s);
}

/* Busy at coalesce_cpu % of the CPUs, and then until below 70 % of that:
 * with one threshold, coalescing (which lowers the CPU used) turned
 * itself off in the next window. */
Test(feed, busy_has_hysteresis)
{
    const uint64_t ms50 = 50000000u;
    /* one CPU, 70 %: in at 35 ms of 50, out below 24.5 ms */
    cr_assert(!dsq_feed_busy_next(false, 34000000u, ms50, 1, 70));
    cr_assert(dsq_feed_busy_next(false, 35000000u, ms50, 1, 70));
    cr_assert(dsq_feed_busy_next(true, 30000000u, ms50, 1, 70), "60 %% keeps it busy");
    cr_assert(!dsq_feed_busy_next(false, 30000000u, ms50, 1, 70), "but does not make it so");
    cr_assert(dsq_feed_busy_next(true, 24500000u, ms50, 1, 70));
    cr_assert(!dsq_feed_busy_next(true, 24000000u, ms50, 1, 70), "48 %%: no longer");
    /* counted over the CPUs it may use */
    cr_assert(!dsq_feed_busy_next(false, 35000000u, ms50, 2, 70));
    cr_assert(dsq_feed_busy_next(false, 70000000u, ms50, 2, 70));
    cr_assert(dsq_feed_busy_next(true, 50000000u, ms50, 2, 70));
    /* a window of a day on 256 CPUs does not overflow */
    uint64_t day = 86400ull * 1000000000u;
    cr_assert(!dsq_feed_busy_next(false, day, day, 256, 70));
    cr_assert(dsq_feed_busy_next(false, day * 200, day, 256, 70));
}

/* A read up to a limit stops there and says there is more. */
Test(feed, a_read_stops_at_its_limit)
{
    dsq_feed_sub *s = dsq_engine_feed_subscribe(E, "lim", on_news, &news);
    dsq_feed *f = feed_of("lim");
    commits(f, 1, 6, 10);
    dsq_feed_durable(&E->feeds, f, 6);
    uint64_t upto;
    bool more;
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_engine_feed_read(s, 1, 4, 1 << 20, &b, &upto, &more), 1);
    cr_assert_eq(upto, 4);
    cr_assert(more);
    cr_assert_eq(b.len, 3 * (20 + 10));
    cr_assert_eq(dsq_engine_feed_read(s, 4, UINT64_MAX, 1 << 20, NULL, &upto, &more), 1);
    cr_assert_eq(upto, 6, "without a buffer: only how far it would go");
    cr_assert_not(more);
    dsq_buf_free(&b);
    dsq_engine_feed_unsubscribe(E, s);
}

/* A subscriber that takes SLOW_NS to call (a large send): spins. */
#define SLOW_NS 20000u
static void on_news_slow(void *ud)
{
    uint64_t t0 = dsq_now_ns();
    (*(int *)ud)++;
    while (dsq_now_ns() - t0 < SLOW_NS)
        ;
}

/* A poll calls subscribers for 50 us (cdc_slice_ns 0), then yields to
 * the loop, one at least: subscribers taking 20 us each go three at most
 * to a slice; news during a round brings another round for those it
 * called. */
Test(feed, many_subscribers_are_called_in_slices)
{
    int calls[40] = {0};
    dsq_feed_sub *s[40];
    for (int i = 0; i < 40; i++)
        cr_assert_not_null(s[i] = dsq_engine_feed_subscribe(E, "sl", on_news_slow, &calls[i]));
    dsq_feed *f = feed_of("sl");
    commits(f, 1, 2, 10);
    dsq_feed_durable(&E->feeds, f, 1);
    dsq_engine_poll(E);
    int total = 0;
    for (int i = 0; i < 40; i++)
        total += calls[i];
    cr_assert(total >= 1 && total <= 3, "one slice of 50 us: %d calls", total);
    cr_assert_eq(dsq_engine_feed_due_ms(E), 0, "the rest at once, next iteration");
    cr_assert(dsq_engine_feed_pending(E), "a round in slices has events coming");
    int first = total;
    dsq_feed_durable(&E->feeds, f, 2); /* news during the round */
    dsq_engine_poll(E);
    dsq_engine_feed_poll(E);
    for (int i = 0; i < 1000 && dsq_engine_feed_due_ms(E) == 0; i++)
        dsq_engine_feed_poll(E);
    cr_assert_eq(dsq_engine_feed_due_ms(E), -1);
    cr_assert_not(dsq_engine_feed_pending(E), "every round over");
    for (int i = 0; i < 40; i++)
        cr_assert(calls[i] >= 1 && calls[i] <= 2, "subscriber %d called %d times", i, calls[i]);
    /* Called in the first slice, before the news: called again (the
     * newest subscriber is the first of the list). */
    for (int i = 40 - first; i < 40; i++)
        cr_assert_eq(calls[i], 2, "subscriber %d (first slice) heard of LSN 2", i);
    for (int i = 0; i < 40; i++)
        dsq_engine_feed_unsubscribe(E, s[i]);
}

/* cdc_slice_ns sets a slice's length: 1 ns is one call a poll. */
Test(feed, a_slice_lasts_cdc_slice_ns)
{
    engine_with((dsq_engine_cfg){.cdc_slice_ns = 1});
    int calls[5] = {0};
    dsq_feed_sub *s[5];
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(s[i] = dsq_engine_feed_subscribe(E, "one", on_news, &calls[i]));
    commits(feed_of("one"), 1, 1, 10);
    dsq_feed_durable(&E->feeds, feed_of("one"), 1);
    dsq_engine_poll(E);
    for (int round = 1; round <= 5; round++) {
        int total = 0;
        for (int i = 0; i < 5; i++)
            total += calls[i];
        cr_assert_eq(total, round, "one call a poll");
        dsq_engine_feed_poll(E);
    }
    cr_assert_not(dsq_engine_feed_pending(E), "the round is over");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(calls[i], 1);
    for (int i = 0; i < 5; i++)
        dsq_engine_feed_unsubscribe(E, s[i]);
}
