/* engine_wait — for unit tests that drive an engine without an event loop:
 * the engine's wake hook, and a bounded wait that polls completions until
 * a counter reaches a target. Header-only: each test binary is one file. */
#ifndef DSQ_TEST_ENGINE_WAIT_H
#define DSQ_TEST_ENGINE_WAIT_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <time.h>

#include "engine/engine.h"

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

/* Poll `e` until *counter >= n; fail the test after 10 s, saying `what`. */
static void test_wait(dsq_engine *e, const int *counter, int n, const char *what)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
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
        cr_assert_eq(rc, 0, "%s did not reach %d in 10 s (%d)", what, n, *counter);
    }
}

#endif
