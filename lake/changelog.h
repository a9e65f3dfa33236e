/* changelog — a source table's CDC events as rows of its Iceberg
 * changelog table, written through the Parquet writer (lake/parquet.h).
 *
 * A changelog row is `_op` (INSERT, UPDATE or DELETE), `_lsn` (the
 * commit's), `_database` (the source), `_commit_ts` (the commit's time,
 * microseconds, UTC), `_rowid` (the row's rowid after the change; null
 * for a WITHOUT ROWID table), `_seq` (the row's place among its commit's
 * rows, from 0: the order of a commit's changes, which a rewrite of the
 * files does not keep), then the table's columns — the row after
 * the change, or before it for a DELETE — and last `_unfit`: the values
 * that did not fit their column's type, as a JSON object (below). An
 * UPDATE that gives the row another rowid (or, WITHOUT ROWID, another
 * primary key) is written as a DELETE of the old row and an INSERT of
 * the new, so that replaying the changelog by key, in (`_lsn`, `_seq`)
 * order, gives the table.
 *
 * SQLite's types are dynamic; a changelog column's type comes from the
 * column's declared type by SQLite's affinity rules:
 *
 *   INTEGER affinity ("INT" in it)                    long
 *   TEXT ("CHAR", "CLOB" or "TEXT")                   string
 *   BLOB ("BLOB", or no declared type)                binary
 *   REAL ("REAL", "FLOA", "DOUB")                     double
 *   NUMERIC (anything else: NUMERIC, DECIMAL, ...)    double
 *
 * A value is written in its column when its storage class is the
 * column's (integer in long, real in double, UTF-8 text in string, blob in
 * binary), and an integer a double holds exactly goes into a double
 * column (NUMERIC columns hold both). SQLite's affinity has already made
 * what it could of the column's class (integral reals and integer text in
 * an INTEGER column, numbers in a REAL one). Any other value leaves its
 * column null and goes into `_unfit` under its column's name, in
 * dosqld's JSON encoding (integers as numbers or {"$bigint"}, reals as
 * numbers, text as a string, blobs as {"$bytes": base64}; text that is
 * not UTF-8, which a JSON string cannot hold, as {"$text": base64 of its
 * bytes}), so that nothing is lost and replaying the changelog gives
 * every value back with its type. A column of the event that the table
 * does not have goes there too; a virtual generated column (no value in
 * the log) is left out. */
#ifndef DSQ_CHANGELOG_H
#define DSQ_CHANGELOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/cdc/cdc.h"
#include "lake/parquet.h"

typedef enum dsq_lk_type {
    DSQ_LK_LONG = 1,
    DSQ_LK_DOUBLE,
    DSQ_LK_STRING,
    DSQ_LK_BINARY,
} dsq_lk_type;

/* The changelog type of a column declared `decl` (NULL or "": none). */
dsq_lk_type dsq_lk_type_of(const char *decl);
/* Iceberg's name of the type ("long", "double", "string", "binary"). */
const char *dsq_lk_type_name(dsq_lk_type t);

/* The metadata columns' field ids; the table's columns take theirs from
 * the caller (kept across schema changes), `_unfit` its own. */
enum { DSQ_LK_ID_OP = 1, DSQ_LK_ID_LSN, DSQ_LK_ID_DATABASE, DSQ_LK_ID_COMMIT_TS, DSQ_LK_ID_ROWID, DSQ_LK_ID_SEQ };

typedef struct dsq_lk_col {
    const char *name;
    dsq_lk_type type;
    int field_id;
} dsq_lk_col;

typedef struct dsq_lk_table {
    const char *name;          /* the source table */
    const dsq_lk_col *cols;
    size_t ncols;
    int unfit_id;              /* `_unfit`'s field id */
} dsq_lk_table;

/* A table whose column has a changelog column's name (`_op`, ...,
 * `_unfit`) has no changelog yet: -1 with the reason, else 0. */
int dsq_lk_check(const dsq_lk_table *t, char *err, size_t errlen);

/* The changelog table's Iceberg schema fields (for lake/table.h): a new
 * array, or NULL out of memory. */
json_t *dsq_lk_fields(const dsq_lk_table *t);

/* A current-state table's fields: `_rowid`, the table's columns, `_unfit`
 * (the changelog's, without its other metadata columns). */
json_t *dsq_lk_state_fields(const dsq_lk_table *t);

typedef struct dsq_changelog dsq_changelog;

/* A changelog file of table t (borrowed until close) from database
 * `database`, to a Parquet writer on sink(ctx). NULL with the reason. */
dsq_changelog *dsq_changelog_open(const dsq_lk_table *t, const char *database, const dsq_pq_options *o,
                                  dsq_pq_sink_fn sink, void *ctx, char *err, size_t errlen);
/* A current-state file of table t: rows of `_rowid` (null for a WITHOUT
 * ROWID table), the columns and `_unfit`, added as INSERT events (their
 * after values and rowid), values fitted as in a changelog. */
dsq_changelog *dsq_changelog_open_state(const dsq_lk_table *t, const dsq_pq_options *o, dsq_pq_sink_fn sink,
                                        void *ctx, char *err, size_t errlen);
/* Add event ev (of table t: the caller sorts events by table; DDL events
 * are the caller's too) of the commit at `lsn`, made at `ts_us`. 0, or
 * -1 with the reason (the writer failed). */
int dsq_changelog_add(dsq_changelog *c, const dsq_cdc_event *ev, uint64_t lsn, int64_t ts_us, char *err,
                      size_t errlen);
/* A commit's rows may go to two files (a schema change in the middle of
 * it): the commit being written and its next row's `_seq` in this file
 * (lsn UINT64_MAX: none yet), and the same given to the next file, whose
 * rows of that commit then go on numbering from there. */
void dsq_changelog_next_seq(const dsq_changelog *c, uint64_t *lsn, int64_t *seq);
void dsq_changelog_continue(dsq_changelog *c, uint64_t lsn, int64_t seq);
/* Rows added so far. */
uint64_t dsq_changelog_rows(const dsq_changelog *c);
/* Finish the file: its statistics into *st (dsq_pq_stats_free), column i
 * of the file being column i of dsq_lk_fields. 0, or -1. The changelog
 * is gone either way. */
int dsq_changelog_close(dsq_changelog *c, dsq_pq_file_stats *st, char *err, size_t errlen);

#endif
