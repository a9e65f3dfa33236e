/* check — invariants, checked in debug and sanitizer builds.
 *
 * DSQ_ASSERT(cond) aborts with the file, the line and the condition when
 * cond is false, in builds with DSQ_CHECKS (the Makefile defines it for
 * SANITIZE builds, OPT=-O0 and CHECKS=1). Elsewhere it compiles to nothing
 * and cond is not evaluated: a check may cost what it likes, but must have
 * no side effect.
 *
 * DSQ_ASSERT_HELD(mu): the calling thread holds pthread mutex mu, for the
 * functions whose comment says "caller holds". glibc records which thread
 * holds a mutex; with another C library the check is skipped. */
#ifndef DSQ_CHECK_H
#define DSQ_CHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

#ifdef DSQ_CHECKS
#define DSQ_ASSERT(cond) ((cond) ? (void)0 : dsq__check_failed(__FILE__, __LINE__, #cond))
#else
#define DSQ_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#define DSQ_ASSERT_HELD(mu) DSQ_ASSERT(dsq_mutex_held(mu))

__attribute__((noreturn)) void dsq__check_failed(const char *file, int line, const char *cond);

/* Whether the calling thread holds mu (true when the C library does not
 * say). */
static inline bool dsq_mutex_held(const pthread_mutex_t *mu)
{
#if defined(__GLIBC__)
    return mu->__data.__owner == (int)gettid();
#else
    (void)mu;
    return true;
#endif
}

#endif
