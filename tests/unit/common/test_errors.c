/* Unit tests: protocol/errors — the one code table. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/errors.h"

Test(errors, every_code_round_trips)
{
    static const char *const names[] = {
        "UNKNOWN", "INVALID_REQUEST", "TIMEOUT", "INTERNAL_ERROR", "SYNTAX_ERROR",
        "TABLE_NOT_FOUND", "COLUMN_NOT_FOUND", "TYPE_MISMATCH", "CONSTRAINT_VIOLATION",
        "TRANSACTION_NOT_FOUND", "DEADLOCK_DETECTED", "SERIALIZATION_FAILURE", "INVALID_LSN",
        "SUBSCRIPTION_ERROR", "BUFFER_OVERFLOW", "UNAUTHORIZED", "FORBIDDEN",
        "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"};
    _Static_assert(sizeof names / sizeof names[0] == DSQ__CODE_COUNT, "a name for every code");
    for (int i = 0; i < DSQ__CODE_COUNT; i++) {
        dsq_code c;
        cr_assert(dsq_code_parse(names[i], &c), "%s", names[i]);
        cr_assert_eq(c, i);
        cr_assert_str_eq(dsq_code_name(c), names[i]);
        int st = dsq_code_http_status(c);
        cr_assert(st == 400 || st == 401 || st == 403 || st == 404 || st == 408 || st == 409 ||
                      st == 413 || st == 429 || st == 500 || st == 503,
                  "%s -> %d", names[i], st);
    }
    dsq_code c;
    cr_assert_not(dsq_code_parse("NOPE", &c));
    cr_assert_str_eq(dsq_code_name((dsq_code)999), "UNKNOWN");
}

Test(errors, statuses)
{
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_INVALID_REQUEST), 400);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_UNAUTHORIZED), 401);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_FORBIDDEN), 403);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_TABLE_NOT_FOUND), 404);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_TIMEOUT), 408);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_CONSTRAINT_VIOLATION), 409);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_BUFFER_OVERFLOW), 413);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_QUOTA_EXCEEDED), 429);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_INTERNAL_ERROR), 500);
    cr_assert_eq(dsq_code_http_status(DSQ_CODE_RESOURCE_EXHAUSTED), 503);
}
