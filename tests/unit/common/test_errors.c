/* Unit tests: common/errors — the one code table. */
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
        "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "NOT_PRIMARY"};
    _Static_assert(sizeof names / sizeof names[0] == DSQ__CODE_COUNT, "a name for every code");
    for (int i = 0; i < DSQ__CODE_COUNT; i++) {
        dsq_code c;
        cr_assert(dsq_code_parse(names[i], &c), "%s", names[i]);
        cr_assert_eq(c, i);
        cr_assert_str_eq(dsq_code_name(c), names[i]);
    }
    dsq_code c;
    cr_assert_not(dsq_code_parse("NOPE", &c));
    cr_assert_str_eq(dsq_code_name((dsq_code)999), "UNKNOWN");
}
