/* Unit tests: common/threads. */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "common/threads.h"

static void *count(void *arg)
{
    atomic_fetch_add((atomic_uint *)arg, 1);
    return NULL;
}

Test(threads, start_and_join)
{
    atomic_uint ran = 0;
    dsq_threads t = {0};
    cr_assert_eq(dsq_threads_start(&t, 5, count, &ran), 0);
    cr_assert_eq(t.n, 5);
    dsq_threads_join(&t);
    cr_assert_eq(atomic_load(&ran), 5, "every thread ran once before the join returned");
    cr_assert_eq(t.n, 0);
    cr_assert_null(t.ids);
}

Test(threads, none)
{
    dsq_threads t = {0};
    cr_assert_eq(dsq_threads_start(&t, 0, count, NULL), 0);
    cr_assert_eq(t.n, 0);
    dsq_threads_join(&t);
}
