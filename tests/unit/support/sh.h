/* sh — run a shell command a unit test needs (making certificates with
 * the openssl command, say), failing the test with the command when it
 * does not exit 0.
 *
 * Header-only: each test binary is one file. */
#ifndef DSQ_TEST_SH_H
#define DSQ_TEST_SH_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    cr_assert(rc == 0, "failed (%d): %s", rc, cmd);
}

#endif
