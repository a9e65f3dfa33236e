/* format — printing QueryResults: an aligned table, JSON lines, or CSV. */
#ifndef DOSQL_FORMAT_H
#define DOSQL_FORMAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/buf.h"

typedef enum dosql_mode {
    DOSQL_MODE_TABLE, /* aligned columns, "(N rows)"; "OK, N rows affected" */
    DOSQL_MODE_JSON,  /* one JSON object per row, keyed by column name */
    DOSQL_MODE_CSV,   /* RFC 4180: a header row (when asked), then the rows, CRLF line ends */
    DOSQL_MODE_LINE,  /* one "column = value" line per column, rows apart by a blank line */
    DOSQL_MODE_MARKDOWN, /* a Markdown table: | a | b |, |---|---|, one row per line */
} dosql_mode;

/* Print one QueryResult (DESIGN 3.3) to out in mode. Statements without
 * columns print "OK, N rows affected" in table mode, nothing otherwise.
 * headers decides the CSV header row alone, as sqlite3's .headers does:
 * the table and Markdown modes always name their columns, and the line
 * and JSON modes name them in every row. Returns 0, or -1 when result is
 * not a QueryResult (nothing printed). */
int dosql_format_result(FILE *out, dosql_mode mode, bool headers, const json_t *result);

/* Append the text of one wire value to b: digits for integers and
 * {"$bigint"}, the shortest round-trip text for REALs, x'hex' for
 * {"$bytes"}, the string itself for TEXT, and null_text for NULL.
 * Returns 0 or -1 (out of memory). */
int dosql_format_value(dsq_buf *b, const json_t *v, const char *null_text);

#endif
