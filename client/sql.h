/* sql — where one SQL statement ends, and which ones the shell runs itself.
 *
 * The shell sends statements one at a time; these helpers split its input
 * with sqlite3_complete() (which knows quotes, comments and CREATE TRIGGER
 * bodies) and spot the transaction statements it turns into JSON-RPC. */
#ifndef DOSQL_SQL_H
#define DOSQL_SQL_H

#include <stdbool.h>
#include <stddef.h>

/* What a statement is, as far as the shell cares. */
typedef enum dosql_stmt_kind {
    DOSQL_STMT_EMPTY,           /* only blanks, comments and semicolons */
    DOSQL_STMT_SQL,             /* anything else: sent to the server */
    DOSQL_STMT_BEGIN,           /* BEGIN [DEFERRED] [TRANSACTION] */
    DOSQL_STMT_BEGIN_IMMEDIATE, /* BEGIN IMMEDIATE|EXCLUSIVE [TRANSACTION] */
    DOSQL_STMT_COMMIT,          /* COMMIT|END [TRANSACTION] */
    DOSQL_STMT_ROLLBACK,        /* ROLLBACK [TRANSACTION] (not ROLLBACK TO) */
} dosql_stmt_kind;

/* True when s holds one or more whole statements, the last ended by ';'
 * (trailing blanks and comments allowed). s is NUL-terminated. */
bool dosql_sql_complete(const char *s);

/* The length of the first whole statement at the start of s[0..n), its
 * ';' included, or 0 when there is none. s[n] must exist (it is
 * temporarily overwritten and restored), e.g. the NUL of a C string. */
size_t dosql_sql_next(char *s, size_t n);

/* Classify the statement s[0..n). */
dosql_stmt_kind dosql_sql_classify(const char *s, size_t n);

/* Whether the statement s[0..n) may change the schema: it begins with
 * CREATE, DROP or ALTER, or ROLLBACK (which may undo such a statement). */
bool dosql_sql_may_change_schema(const char *s, size_t n);

#endif
