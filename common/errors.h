/* errors — the public error codes and their wire names.
 *
 * This is the only table that maps a code to its wire string; every
 * protocol and route uses it. Protocols return codes; the HTTP status a
 * code answers with is the server's (server/http.h). */
#ifndef DSQ_ERRORS_H
#define DSQ_ERRORS_H

#include <stdbool.h>

typedef enum dsq_code {
    DSQ_CODE_UNKNOWN = 0,
    DSQ_CODE_INVALID_REQUEST,
    DSQ_CODE_TIMEOUT,
    DSQ_CODE_INTERNAL_ERROR,
    DSQ_CODE_SYNTAX_ERROR,
    DSQ_CODE_TABLE_NOT_FOUND,
    DSQ_CODE_COLUMN_NOT_FOUND,
    DSQ_CODE_TYPE_MISMATCH,
    DSQ_CODE_CONSTRAINT_VIOLATION,
    DSQ_CODE_TRANSACTION_NOT_FOUND,
    DSQ_CODE_DEADLOCK_DETECTED,
    DSQ_CODE_SERIALIZATION_FAILURE,
    DSQ_CODE_INVALID_LSN,
    DSQ_CODE_SUBSCRIPTION_ERROR,
    DSQ_CODE_BUFFER_OVERFLOW,
    DSQ_CODE_UNAUTHORIZED,
    DSQ_CODE_FORBIDDEN,
    DSQ_CODE_RESOURCE_EXHAUSTED,
    DSQ_CODE_QUOTA_EXCEEDED,
    DSQ_CODE_NOT_PRIMARY,  /* this node holds no primary copy of the database: the message names
                              the node that does, when it is known */
    DSQ__CODE_COUNT
} dsq_code;

/* "INVALID_REQUEST" etc.; "UNKNOWN" for an out-of-range value. */
const char *dsq_code_name(dsq_code code);

/* Name → code. Returns false when the name is not a code. */
bool dsq_code_parse(const char *name, dsq_code *out);

#endif
