/* engine_wait — for unit tests that drive an engine without an event loop:
 * the engine's wake hook, a wait that polls completions until a counter
 * reaches a target, and a polled wait for any condition (wait.h), all
 * bounded. Header-only: each test binary is one file. */
#ifndef DSQ_TEST_ENGINE_WAIT_H
#define DSQ_TEST_ENGINE_WAIT_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <time.h>

#include "engine/engine.h"
#include "tests/unit/support/wait.h"

static pthread_mutex_t test_wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t test_wcv = PTHREAD_COND_INITIALIZER;
static int test_wakes;

/* The engine's `wake` hook: completions are ready. */
static void test_wake(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&test_wmu);
    test_wakes++;
    pthread_cond_signal(&test_wcv);
    pthread_mutex_unlock(&test_wmu);
}

/* Poll `e` until *counter >= n; fail the test after WAIT_MS, saying `what`. */
static void test_wait(dsq_engine *e, const int *counter, int n, const char *what)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    for (;;) {
        dsq_engine_poll(e);
        if (*counter >= n)
            return;
        pthread_mutex_lock(&test_wmu);
        int rc = 0;
        while (test_wakes == 0 && rc == 0)
            rc = pthread_cond_timedwait(&test_wcv, &test_wmu, &until);
        test_wakes = 0;
        pthread_mutex_unlock(&test_wmu);
        cr_assert_eq(rc, 0, "%s did not reach %d in %d ms (%d)", what, n, WAIT_MS, *counter);
    }
}

/* Poll `e` (completions, CDC news) until `cond` holds; fail the test after
 * WAIT_MS with `msg` (a printf format) and its arguments. For what no
 * counter of test_wait tells: engine messages, an actor's state. */
#define ENGINE_WAIT_UNTIL(e, cond, msg, ...) WAIT_UNTIL_STEP(dsq_engine_poll(e), cond, WAIT_MS, msg, ##__VA_ARGS__)

#endif
