/* errors — code ↔ name ↔ HTTP status, in one table.
 *
 * Statuses (documented in docs/protocol.md):
 *   400 a request the client must change; 401/403 auth; 404 a named thing
 *   that does not exist; 408 time limit; 409 a conflict with other writers or
 *   constraints; 413 a size limit; 429 a quota; 500 our fault; 503 a server
 *   limit or a server that is going away. */
#include "common/errors.h"

#include <string.h>

static const struct {
    const char *name;
    int status;
} codes[DSQ__CODE_COUNT] = {
    [DSQ_CODE_UNKNOWN] = {"UNKNOWN", 500},
    [DSQ_CODE_INVALID_REQUEST] = {"INVALID_REQUEST", 400},
    [DSQ_CODE_TIMEOUT] = {"TIMEOUT", 408},
    [DSQ_CODE_INTERNAL_ERROR] = {"INTERNAL_ERROR", 500},
    [DSQ_CODE_SYNTAX_ERROR] = {"SYNTAX_ERROR", 400},
    [DSQ_CODE_TABLE_NOT_FOUND] = {"TABLE_NOT_FOUND", 404},
    [DSQ_CODE_COLUMN_NOT_FOUND] = {"COLUMN_NOT_FOUND", 400},
    [DSQ_CODE_TYPE_MISMATCH] = {"TYPE_MISMATCH", 400},
    [DSQ_CODE_CONSTRAINT_VIOLATION] = {"CONSTRAINT_VIOLATION", 409},
    [DSQ_CODE_TRANSACTION_NOT_FOUND] = {"TRANSACTION_NOT_FOUND", 404},
    [DSQ_CODE_DEADLOCK_DETECTED] = {"DEADLOCK_DETECTED", 409},
    [DSQ_CODE_SERIALIZATION_FAILURE] = {"SERIALIZATION_FAILURE", 409},
    [DSQ_CODE_INVALID_LSN] = {"INVALID_LSN", 400},
    [DSQ_CODE_SUBSCRIPTION_ERROR] = {"SUBSCRIPTION_ERROR", 400},
    [DSQ_CODE_BUFFER_OVERFLOW] = {"BUFFER_OVERFLOW", 413},
    [DSQ_CODE_UNAUTHORIZED] = {"UNAUTHORIZED", 401},
    [DSQ_CODE_FORBIDDEN] = {"FORBIDDEN", 403},
    [DSQ_CODE_RESOURCE_EXHAUSTED] = {"RESOURCE_EXHAUSTED", 503},
    [DSQ_CODE_QUOTA_EXCEEDED] = {"QUOTA_EXCEEDED", 429},
};

const char *dsq_code_name(dsq_code code)
{
    if ((unsigned)code >= DSQ__CODE_COUNT)
        code = DSQ_CODE_UNKNOWN;
    return codes[code].name;
}

int dsq_code_http_status(dsq_code code)
{
    if ((unsigned)code >= DSQ__CODE_COUNT)
        code = DSQ_CODE_UNKNOWN;
    return codes[code].status;
}

bool dsq_code_parse(const char *name, dsq_code *out)
{
    for (int i = 0; i < DSQ__CODE_COUNT; i++) {
        if (strcmp(codes[i].name, name) == 0) {
            *out = (dsq_code)i;
            return true;
        }
    }
    return false;
}
