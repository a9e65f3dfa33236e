/* value — SQL values in JSON (DESIGN 3.3): decoding parameters, writing
 * results.
 *
 *   NULL            null
 *   INTEGER         a number within ±(2^53−1), else {"$bigint": "<decimal>"}
 *   REAL            a number (integral ones keep a ".0"); ±infinity as
 *                   ±1e999, which JSON parsers read as infinity
 *   TEXT            a string (bytes that are not UTF-8 become U+FFFD)
 *   BLOB            {"$bytes": "<base64>"}
 * Parameters also take true/false (as 1/0). */
#ifndef DSQ_VALUE_H
#define DSQ_VALUE_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "engine/engine.h"

/* Memory for decoded parameters and copied SQL, freed in one go. */
typedef struct dsq_arena {
    struct arena_block *head; /* owned list */
} dsq_arena;

void *dsq_arena_alloc(dsq_arena *a, size_t n);
char *dsq_arena_strndup(dsq_arena *a, const char *s, size_t n);
void dsq_arena_free(dsq_arena *a);

/* One JSON value → a SQL value (text and bytes copied into the arena).
 * Returns 0, or -1 with the reason in err. */
int dsq_value_from_json(json_t *j, dsq_value *out, dsq_arena *a, char *err, size_t errlen);

/* A request's `params` (array, object, or NULL) → r->params. Object keys
 * may carry their prefix (":a", "@a", "$a") or not ("a"). At most
 * max_params values. Returns 0 or -1 with the reason in err. */
int dsq_params_from_json(json_t *params, dsq_stmt_req *r, dsq_arena *a, size_t max_params,
                         char *err, size_t errlen);

/* Writers (append JSON text). */
void dsq_json_string(dsq_buf *out, const char *s, size_t n);
void dsq_json_value(dsq_buf *out, const dsq_value *v);
/* A QueryResult: {"columns", "columnTypes", "rows", "rowsAffected",
 * "lastInsertRowid", "lsn"}. */
void dsq_json_result(dsq_buf *out, const dsq_result *r);
/* "columns":[...],"columnTypes":[...] (members, no braces). */
void dsq_json_columns(dsq_buf *out, const dsq_result *r);
/* Rows only, as "[[...],...]". */
void dsq_json_rows(dsq_buf *out, const dsq_result *r);

/* Cap'n Web expressions of the same (its protocol's encodings): INTEGER
 * beyond ±(2^53−1) as ["bigint", "<decimal>"], REAL ±infinity and NaN as
 * ["inf"], ["-inf"], ["nan"], BLOB as ["bytes", "<base64>"], and every
 * array escaped as [[...]]. LSNs are always BigInts. */
void dsq_cw_bigint(dsq_buf *out, int64_t i);
void dsq_cw_value(dsq_buf *out, const dsq_value *v);
void dsq_cw_rows(dsq_buf *out, const dsq_result *r);
void dsq_cw_columns(dsq_buf *out, const dsq_result *r);
void dsq_cw_result(dsq_buf *out, const dsq_result *r);
/* A JSON document (getSchema, getStats, ...): arrays escaped, members
 * named "lsn" as BigInts. Returns 0, or -1 when nested past 64 levels. */
int dsq_cw_doc(dsq_buf *out, json_t *doc);

/* For a log line: message `msg` (JSON text, JSON-RPC or Cap'n Web) with
 * every value under a member named "params" (SQL parameters), "rows"
 * (result rows) or "before"/"after" (CDC row images) replaced by "?", so
 * that no value a client sends or reads reaches the log; the SQL text
 * stays. Text that does not parse, or is longer than 64 KiB, is not
 * copied at all ("<N bytes>"). A new string for free(), or NULL (out of
 * memory). */
char *dsq_redact_json(const char *msg, size_t len);

#endif
