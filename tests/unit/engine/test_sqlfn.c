/* Unit tests: engine/sqlfn — the bounded printf, format, replace, instr
 * and trim give the builtins' results, refuse output past the length
 * limit before making it, and stop at the deadline. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/runtime/engine_int.h"

static sqlite3 *builtin, *bounded;
static uint64_t deadline;

/* Stop past `deadline` (0: never). */
static int past_deadline(void *arg)
{
    (void)arg;
    return deadline != 0 && dsq_now_ns() > deadline;
}
static const dsq_sqlfn_stop stop = {past_deadline, NULL};

static void setup(void)
{
    cr_assert_eq(sqlite3_open(":memory:", &builtin), SQLITE_OK);
    cr_assert_eq(sqlite3_open(":memory:", &bounded), SQLITE_OK);
    sqlite3_limit(builtin, SQLITE_LIMIT_LENGTH, 1 << 20);
    sqlite3_limit(bounded, SQLITE_LIMIT_LENGTH, 1 << 20);
    deadline = 0;
    cr_assert_eq(dsq__sqlfn_register(bounded, &stop), SQLITE_OK);
}

static void teardown(void)
{
    sqlite3_close(builtin);
    sqlite3_close(bounded);
}

TestSuite(sqlfn, .init = setup, .fini = teardown);

/* Run `select typeof(E), hex(E)` for expression E; the row as one string,
 * or "error <code> <message>". Returns a malloc'ed string. */
static char *eval(sqlite3 *db, const char *expr, int *rc_out)
{
    char sql[4096];
    snprintf(sql, sizeof sql, "select typeof(%s) || ' ' || coalesce(hex(%s), '')", expr, expr);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    rc = sqlite3_step(st);
    char *out;
    if (rc == SQLITE_ROW) {
        out = strdup((const char *)sqlite3_column_text(st, 0));
        rc = SQLITE_OK;
    } else {
        size_t n = 64 + strlen(sqlite3_errmsg(db));
        out = malloc(n);
        snprintf(out, n, "error %d %s", rc, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    if (rc_out)
        *rc_out = rc;
    return out;
}

static void same(const char *expr)
{
    char *a = eval(builtin, expr, NULL), *b = eval(bounded, expr, NULL);
    cr_expect_str_eq(b, a, "%s: builtin %.200s, bounded %.200s", expr, a, b);
    free(a);
    free(b);
}

Test(sqlfn, printf_as_the_builtin)
{
    static const char *const exprs[] = {
        "printf('')", "printf(NULL)", "printf()", "printf('plain text')", "printf('%%')",
        "printf('%5%|%-5%|')", "printf('%')", "printf('abc%')", "printf('%n')", "printf('a%nb')",
        "printf('ab%k cd')", "printf('%T x')", "printf('%S x')", "printf('%5')", "printf('%-')",
        "printf('%5.3.2f', 1.0)", "printf('%*5d', 3, 4)",
        /* integers */
        "printf('%d', 42)", "printf('%d', -42)", "printf('%i', 7)", "printf('%5d|%-5d|%05d', 1, 2, 3)",
        "printf('%+d % d %+ d % +d', 5, 5, 5, 5)", "printf('%,d', 1234567890)", "printf('%,d', -1234)",
        "printf('%.5d', 12)", "printf('%8.5d', -12)", "printf('%d', 9223372036854775807)",
        "printf('%d', -9223372036854775808)", "printf('%u', -1)", "printf('%x %X %o', 255, 255, 8)",
        "printf('%#x %#X %#o', 255, 255, 8)", "printf('%#10.4x|', 255)", "printf('%ld %lld %lu', 1, 2, 3)",
        "printf('%d', '12abc')", "printf('%d', 3.99)", "printf('%d', x'41')", "printf('%d')",
        "printf('%d %d', 1)", "printf('%p', 255)", "printf('%r %r %r %r %r', 1, 2, 3, 11, 112)",
        "printf('%*d|', 6, 1)", "printf('%*d|', -6, 1)", "printf('%-*d|', -6, 1)", "printf('%.*d', 4, 1)",
        "printf('%.*d', -4, 1)", "printf('%*.*d|', 8, 4, 1)", "printf('%!d', 5)", "printf('%0-5d|', 3)",
        "printf('%.0d', 0)", "printf('%+.3d', 7)",
        /* floats */
        "printf('%f', 3.14159)", "printf('%.2f', 3.14159)", "printf('%10.3f|', -3.14159)",
        "printf('%-10.1f|', 2.5)", "printf('%010.2f', -1.5)", "printf('%+f % f', 1.0, 1.0)",
        "printf('%e %E', 12345.678, 0.000123)", "printf('%.3e', 1e300)", "printf('%g %G', 1e-10, 1e20)",
        "printf('%g', 100000)", "printf('%g', 1000000)", "printf('%#g', 1.0)", "printf('%!.20g', 0.1)",
        "printf('%!f', 1.0)", "printf('%.0f %.0f', 0.5, 1.5)", "printf('%f', 1e308)", "printf('%f', -1e308)",
        "printf('%f', 9e999)", "printf('%f', -9e999)", "printf('%f', 0.0/0)", "printf('%.30f', 1.0/3)",
        "printf('%,f', 1234567.5)", "printf('%f', 'abc')", "printf('%f', NULL)", "printf('%f')",
        "printf('%.*f', 3, 2.0)", "printf('%15.*e|', 2, 123.0)", "printf('%g', 3)", "printf('%.100f', 1.0)",
        /* characters */
        "printf('%c', 'xyz')", "printf('%c', '')", "printf('%c', NULL)", "printf('%c')", "printf('%c', 65)",
        "printf('%5c|%-5c|', 'a', 'b')", "printf('%.3c', 'a')", "printf('%5.3c|', 'a')",
        "printf('%-5.3c|', 'a')", "printf('%2.3c|', 'a')", "printf('%.0c|%.1c|', 'a', 'b')",
        "printf('%c', 'é')", "printf('%4.2c|', '€uro')", "printf('%-4.2c|', '😀')", "printf('%c', x'c3')",
        "printf('%c', x'80')", "printf('%.3c', x'e282')", "printf('%!5c|', 'é')", "printf('%.*c', 4, '-')",
        /* strings */
        "printf('%s', 'hello')", "printf('%10s|%-10s|', 'hi', 'hi')", "printf('%.3s', 'hello')",
        "printf('%.3s', 'héllo')", "printf('%!.3s|', 'héllo')", "printf('%!6s|', 'héllo')",
        "printf('%s', NULL)", "printf('%s')", "printf('%s', 12.5)", "printf('%s', x'414243')",
        "printf('%z', 'zz')", "printf('%5z|', 'z')", "printf('%s and %s', 'a', 'b')",
        "printf('%.*s', 2, 'hello')", "printf('%*s|', -4, 'x')", "printf('%s', 'a' || char(0) || 'b')",
        /* escapes */
        "printf('%q', 'it''s')", "printf('%Q', 'it''s')", "printf('%Q', NULL)", "printf('%q', NULL)",
        "printf('%w', 'a\"b')", "printf('%10q|', 'x''y')", "printf('%.3q', 'a''''b')", "printf('%!q', 'x')",
        "printf('%#q', 'a''b')", "printf('%#Q', 'a''b')", "printf('%Q')", "printf('%-8Q|', 'ab')",
        /* format() is the same function */
        "format('%d-%s-%.2f', 1, 'x', 2.0)", "format('%')", "format(NULL)",
        /* mixtures */
        "printf('%s=%d (%5.1f%%)', 'n', 3, 37.5)", "printf('%d %d %d %d', 1, 2, 3, 4, 5)",
        "printf('%5s%-5s%05d%x', 'a', 'b', 3, 255)", "printf(123)", "printf('%d', 1, 2)",
        /* near the length limit (1 MiB here): a precision takes only part of a long text */
        "length(printf('%s%.3s|%.2q|%!.2s', printf('%.*c', 100000, 'b'), printf('%.*c', 1000000, 'a'), "
        "printf('%.*c', 1000000, ''''), printf('%.*c', 1000000, 'x')))",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++)
        same(exprs[i]);
}

Test(sqlfn, replace_instr_trim_as_the_builtins)
{
    static const char *const exprs[] = {
        "replace('hello world', 'o', '0')", "replace('aaaa', 'aa', 'b')", "replace('abc', '', 'x')",
        "replace(12345, 3, 'x')", "replace(NULL, 'a', 'b')", "replace('a', NULL, 'b')",
        "replace('a', 'a', NULL)", "replace('abc', 'abc', '')", "replace('', 'a', 'b')",
        "replace('xyx', 'x', 'long')", "replace(x'616263', 'b', 'X')", "replace('héhé', 'é', 'e')",
        "replace('a' || char(0) || 'b', char(0), '-')", "replace('abc', char(0) || 'b', 'x')",
        "replace('ab', 'abc', 'x')",
        "instr('hello', 'l')", "instr('hello', 'z')", "instr('hello', '')", "instr('', '')",
        "instr(NULL, 'a')", "instr('a', NULL)", "instr('héllo', 'l')", "instr(x'00010203', x'0203')",
        "instr(x'616263', 'c')", "instr('abc', x'63')", "instr(12345, 34)", "instr('ab', 'abc')",
        "instr('aXbXc', 'Xc')",
        "trim('  hi  ')", "ltrim('  hi  ')", "rtrim('  hi  ')", "trim('xxhixx', 'x')",
        "ltrim('xyhiyx', 'xy')", "rtrim('xyhiyx', 'yx')", "trim('hi', '')", "trim(NULL)",
        "trim('hi', NULL)", "trim(123.0, '0')", "trim('éhié', 'é')", "trim('aaaa', 'a')",
        "trim(x'20412020')", "rtrim('abc', 'c' || char(0) || 'b')",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++)
        same(exprs[i]);
}

/* Output past the length limit is refused before it is made: at once. */
Test(sqlfn, printf_refuses_output_past_the_length_limit)
{
    static const char *const exprs[] = {
        "length(printf('%.*c', 2000000000, 'x'))", "length(printf('%2000000000c', 'x'))",
        "length(printf('%.*c', 600000, 'é'))", "length(printf('%*d', 2000000000, 1))",
        "length(printf('%.2000000000d', 1))", "length(printf('%.*f', 2000000000, 1.0))",
        "length(printf('%*s', 2000000000, 'x'))", "length(printf('%1048577%'))",
        "length(printf('%s%s', printf('%.*c', 600000, 'a'), printf('%.*c', 600000, 'a')))",
        "length(printf('%Q', printf('%.*c', 600000, '''')))",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        uint64_t t0 = dsq_now_ns();
        int rc;
        char *r = eval(bounded, exprs[i], &rc);
        cr_expect_eq(rc, SQLITE_TOOBIG, "%s: %s", exprs[i], r);
        cr_expect_lt(dsq_now_ns() - t0, 2000000000ull, "%s took long", exprs[i]);
        free(r);
    }
    /* Just under the limit is fine. */
    int rc;
    char *r = eval(bounded, "length(printf('%.*c', 1000000, 'x'))", &rc);
    cr_expect_eq(rc, SQLITE_OK, "%s", r);
    free(r);
}

/* Quadratic work stops at the deadline with SQLITE_INTERRUPT. */
Test(sqlfn, long_work_stops_at_the_deadline)
{
    sqlite3_limit(bounded, SQLITE_LIMIT_LENGTH, 64 << 20);
    static const char *const exprs[] = {
        "instr(printf('%.*c', 40000000, 'a'), printf('%.*c', 20000000, 'a') || 'b')",
        "length(replace(printf('%.*c', 40000000, 'a'), printf('%.*c', 20000000, 'a') || 'b', 'x'))",
        "length(trim(printf('%.*c', 4000000, 'a'), printf('%.*c', 2000000, 'b') || 'a'))",
        "length(ltrim(printf('%.*c', 4000000, 'a'), printf('%.*c', 2000000, 'b') || 'a'))",
        "length(rtrim(printf('%.*c', 4000000, 'a'), printf('%.*c', 2000000, 'b') || 'a'))",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        uint64_t t0 = dsq_now_ns();
        deadline = t0 + 300000000ull; /* 0.3 s */
        int rc;
        char *r = eval(bounded, exprs[i], &rc);
        cr_expect_eq(rc, SQLITE_INTERRUPT, "%s: %s", exprs[i], r);
        /* generous: it ends near its deadline, not after the quadratic work */
        cr_expect_lt(dsq_now_ns() - t0, 5000000000ull, "%s took long", exprs[i]);
        free(r);
    }
    deadline = 0;
}
