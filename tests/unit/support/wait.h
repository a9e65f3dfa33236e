/* wait — for unit tests that wait on another thread or on the clock.
 *
 * A test does not sleep a fixed time and hope that what it waits for
 * happened meanwhile: that is slow on an idle machine and flaky on a loaded
 * one. It waits for the thing itself — a condition variable it can wait on,
 * or else a condition polled every millisecond (WAIT_UNTIL) — bounded, so
 * that a test whose thing never happens fails with a message instead of
 * hanging. A sleep is right only where the code under test is timed (a
 * timeout must expire, a clock must move on) or where the test checks that
 * something does not happen within a period: let_time_pass, with a comment
 * at the call saying which.
 *
 * Header-only: each test binary is one file. */
#ifndef DSQ_TEST_WAIT_H
#define DSQ_TEST_WAIT_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <time.h>

/* How long a wait for something that should happen may take before the
 * test fails: far more than it needs, even in a sanitizer build on a
 * loaded machine. */
#define WAIT_MS 10000

static inline uint64_t wait_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void wait_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Let at least `ms` pass: the code under test is timed, or the test checks
 * that something does not happen meanwhile. The caller says which. */
static inline void let_time_pass(unsigned ms) { wait_sleep_ms(ms); }

/* Run `step` (a statement; (void)0 for none), then test `cond`, about every
 * millisecond until cond holds. When it still does not after timeout_ms,
 * fail the test with `msg` (a printf format, a string literal) and its
 * arguments, followed by the bound and the condition's text. */
#define WAIT_UNTIL_STEP(step, cond, timeout_ms, msg, ...)                                              \
    do {                                                                                               \
        uint64_t wait_end_ms_ = wait_now_ms() + (uint64_t)(timeout_ms);                                \
        for (;;) {                                                                                     \
            step;                                                                                      \
            if (cond)                                                                                  \
                break;                                                                                 \
            if (wait_now_ms() >= wait_end_ms_)                                                         \
                cr_assert_fail(msg " (not within %u ms: %s)", ##__VA_ARGS__, (unsigned)(timeout_ms), #cond); \
            wait_sleep_ms(1);                                                                          \
        }                                                                                              \
    } while (0)

/* WAIT_UNTIL_STEP with no step. */
#define WAIT_UNTIL(cond, timeout_ms, msg, ...) WAIT_UNTIL_STEP((void)0, cond, timeout_ms, msg, ##__VA_ARGS__)

#endif
