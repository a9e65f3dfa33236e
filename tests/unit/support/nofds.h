/* nofds — run out of file descriptors on purpose, then give them back.
 *
 *     test_nofds held;
 *     test_nofds_take(&held);     // the soft limit lowered to 256, every slot filled
 *     ... what must fail with EMFILE ...
 *     test_nofds_give(&held);     // closed, the limit as it was
 *
 * Header-only: each test binary is one file. */
#ifndef DSQ_TEST_NOFDS_H
#define DSQ_TEST_NOFDS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct test_nofds {
    struct rlimit old;
    int fds[256];
    int n;
} test_nofds;

static inline void test_nofds_take(test_nofds *h)
{
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &h->old), 0);
    struct rlimit low = {.rlim_cur = 256, .rlim_max = h->old.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    h->n = 0;
    for (int fd; h->n < 256 && (fd = dup(0)) >= 0;)
        h->fds[h->n++] = fd;
    cr_assert_eq(errno, EMFILE, "the descriptors did not run out");
}

static inline void test_nofds_give(test_nofds *h)
{
    for (int i = 0; i < h->n; i++)
        close(h->fds[i]);
    h->n = 0;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &h->old), 0);
}

#endif
