/* errors — code ↔ name, in one table. What a code means to HTTP is the
 * server's (server/http.c: dsq_http_status_of). */
#include "common/errors.h"

#include <string.h>

static const char *const names[DSQ__CODE_COUNT] = {
    [DSQ_CODE_UNKNOWN] = "UNKNOWN",
    [DSQ_CODE_INVALID_REQUEST] = "INVALID_REQUEST",
    [DSQ_CODE_TIMEOUT] = "TIMEOUT",
    [DSQ_CODE_INTERNAL_ERROR] = "INTERNAL_ERROR",
    [DSQ_CODE_SYNTAX_ERROR] = "SYNTAX_ERROR",
    [DSQ_CODE_TABLE_NOT_FOUND] = "TABLE_NOT_FOUND",
    [DSQ_CODE_COLUMN_NOT_FOUND] = "COLUMN_NOT_FOUND",
    [DSQ_CODE_TYPE_MISMATCH] = "TYPE_MISMATCH",
    [DSQ_CODE_CONSTRAINT_VIOLATION] = "CONSTRAINT_VIOLATION",
    [DSQ_CODE_TRANSACTION_NOT_FOUND] = "TRANSACTION_NOT_FOUND",
    [DSQ_CODE_DEADLOCK_DETECTED] = "DEADLOCK_DETECTED",
    [DSQ_CODE_SERIALIZATION_FAILURE] = "SERIALIZATION_FAILURE",
    [DSQ_CODE_INVALID_LSN] = "INVALID_LSN",
    [DSQ_CODE_SUBSCRIPTION_ERROR] = "SUBSCRIPTION_ERROR",
    [DSQ_CODE_BUFFER_OVERFLOW] = "BUFFER_OVERFLOW",
    [DSQ_CODE_UNAUTHORIZED] = "UNAUTHORIZED",
    [DSQ_CODE_FORBIDDEN] = "FORBIDDEN",
    [DSQ_CODE_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [DSQ_CODE_QUOTA_EXCEEDED] = "QUOTA_EXCEEDED",
    [DSQ_CODE_NOT_PRIMARY] = "NOT_PRIMARY",
};

const char *dsq_code_name(dsq_code code)
{
    if ((unsigned)code >= DSQ__CODE_COUNT)
        code = DSQ_CODE_UNKNOWN;
    return names[code];
}

bool dsq_code_parse(const char *name, dsq_code *out)
{
    for (int i = 0; i < DSQ__CODE_COUNT; i++) {
        if (strcmp(names[i], name) == 0) {
            *out = (dsq_code)i;
            return true;
        }
    }
    return false;
}
