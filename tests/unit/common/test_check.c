/* Unit tests: common/check — invariants and lock ownership. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>

#include "common/check.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *held_elsewhere(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)dsq_mutex_held(&mu);
}

Test(check, a_mutex_is_held_by_the_thread_that_locked_it)
{
    cr_assert_not(dsq_mutex_held(&mu));
    pthread_mutex_lock(&mu);
    cr_assert(dsq_mutex_held(&mu));
    pthread_t t;
    void *other;
    pthread_create(&t, NULL, held_elsewhere, NULL);
    pthread_join(t, &other);
    cr_assert_not(other, "another thread does not hold it");
    pthread_mutex_unlock(&mu);
    cr_assert_not(dsq_mutex_held(&mu));
}

Test(check, a_true_invariant_passes)
{
    int n = 1;
    DSQ_ASSERT(n == 1);
    pthread_mutex_lock(&mu);
    DSQ_ASSERT_HELD(&mu);
    pthread_mutex_unlock(&mu);
}

#ifdef DSQ_CHECKS
Test(check, a_false_invariant_aborts, .signal = SIGABRT)
{
    int n = 1;
    DSQ_ASSERT(n == 2);
}

Test(check, a_lock_not_held_aborts, .signal = SIGABRT)
{
    DSQ_ASSERT_HELD(&mu);
}
#else
static int evaluated;
static bool count(void) { return ++evaluated > 0; }

Test(check, without_checks_nothing_is_evaluated)
{
    DSQ_ASSERT(count());
    cr_assert_eq(evaluated, 0);
}
#endif
