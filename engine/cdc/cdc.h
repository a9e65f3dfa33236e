/* cdc — change data capture: the row changes of each transaction, in the
 * same log record as its pages (docs/storage.md, "Row changes").
 *
 * Capture: SQLite's pre-update hook reports every INSERT, UPDATE and
 * DELETE of a table of the main database — the client's statements,
 * their triggers and foreign-key actions alike — with the row before and
 * after. The capture keeps them in statement order, encoded, with a
 * dictionary of the tables they touched (names, columns, primary keys).
 * The executor tells it where statements begin and end (a failed statement
 * and ROLLBACK TO take their changes back; DDL adds a schema event), and
 * hands the encoding to the store for the commit's record: a change is in
 * the log exactly when its commit is.
 *
 * Reading: a record's bytes decode back into events (dsq_cdc_reader).
 *
 * Threads: a capture belongs to one connection (its actor's worker). The
 * reader is plain data. */
#ifndef DSQ_CDC_H
#define DSQ_CDC_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum { DSQ_CDC_INSERT = 1, DSQ_CDC_UPDATE = 2, DSQ_CDC_DELETE = 3, DSQ_CDC_DDL = 4 };

/* ---- capture ---- */

typedef struct dsq_cdc_cap dsq_cdc_cap;

/* A capture on connection db (installs its pre-update and rollback hooks;
 * a rolled-back transaction's changes go). NULL when out of memory. */
dsq_cdc_cap *dsq_cdc_cap_new(sqlite3 *db);
void dsq_cdc_cap_free(dsq_cdc_cap *c);

/* Where the capture stands: taken before a statement runs. */
typedef struct dsq_cdc_mark {
    size_t bytes;
    uint32_t events;
    uint32_t tables;
} dsq_cdc_mark;

dsq_cdc_mark dsq_cdc_cap_mark(const dsq_cdc_cap *c);

/* The statement begun at `m` failed: its changes go (SQLite undid them). */
void dsq_cdc_cap_rewind(dsq_cdc_cap *c, dsq_cdc_mark m);

/* The statement begun at `m` succeeded. Names the columns of tables it
 * touched for the first time (queries on db: call it outside any step),
 * and when `ddl` is not NULL (the statement changed the schema) puts a
 * schema event with that text before the statement's own row changes.
 * `created`, when not NULL, is a table the statement created: rows it
 * already holds (CREATE TABLE ... AS SELECT, which SQLite fills without
 * the pre-update hook) become INSERT events. 0, or -1 when out of memory
 * (the transaction must not commit). */
int dsq_cdc_cap_statement_done(dsq_cdc_cap *c, dsq_cdc_mark m, const char *ddl, const char *created);

/* A savepoint statement succeeded: op is "BEGIN", "RELEASE" or
 * "ROLLBACK" (ROLLBACK TO), as SQLite's authorizer names it; `m` is the
 * mark taken before it. ROLLBACK TO takes back the changes made since the
 * savepoint. */
void dsq_cdc_cap_savepoint(dsq_cdc_cap *c, const char *op, const char *name, dsq_cdc_mark m);

/* The transaction's changes, encoded for its log record: *p and *n (n 0
 * when it changed no row and no schema). Valid until the next change to
 * the capture. -1 when a change could not be captured (out of memory):
 * the transaction must not commit. */
int dsq_cdc_cap_encode(dsq_cdc_cap *c, const void **p, size_t *n);

/* The transaction is over (committed): start afresh. */
void dsq_cdc_cap_reset(dsq_cdc_cap *c);

/* Events captured in the open transaction. */
uint32_t dsq_cdc_cap_events(const dsq_cdc_cap *c);

/* ---- reading ---- */

typedef struct dsq_cdc_value {
    int type; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL */
    int64_t i;
    double r;
    const uint8_t *p; /* TEXT (UTF-8, not NUL-terminated) and BLOB */
    uint32_t n;
} dsq_cdc_value;

typedef struct dsq_cdc_col {
    const char *name; /* not NUL-terminated */
    uint16_t len;
    uint8_t pk;       /* position in the primary key, from 1; 0: not in it */
} dsq_cdc_col;

typedef struct dsq_cdc_event {
    int op;                     /* DSQ_CDC_* */
    const char *table;          /* not NUL-terminated */
    uint16_t table_len;
    bool without_rowid;         /* identified by primary key, not rowid */
    int64_t rowid;              /* the row's (before for UPDATE and DELETE) */
    int64_t new_rowid;          /* UPDATE: after */
    uint16_t ncols;
    const dsq_cdc_col *cols;
    const dsq_cdc_value *before; /* UPDATE, DELETE: ncols values; else NULL */
    const dsq_cdc_value *after;  /* INSERT, UPDATE */
    const char *sql;            /* DDL: the statement, not NUL-terminated */
    uint32_t sql_len;
} dsq_cdc_event;

typedef struct dsq_cdc_table {
    const char *name;
    uint16_t len;
    bool without_rowid;
    uint16_t ncols;
    dsq_cdc_col *cols;
} dsq_cdc_table;

typedef struct dsq_cdc_reader {
    const uint8_t *p, *end;
    uint32_t left;              /* events not yet read */
    dsq_cdc_table *tables;
    uint16_t ntables;
    dsq_cdc_value *vals;        /* 2 x the widest table */
} dsq_cdc_reader;

/* Begin reading a record's change bytes (n may be 0: no events). 0, or -1
 * when they are not well formed (or out of memory). */
int dsq_cdc_read_begin(dsq_cdc_reader *r, const void *p, size_t n);
/* The next event: 1, 0 at the end, -1 when damaged. The event points into
 * the bytes and the reader (valid until the next call). */
int dsq_cdc_read_next(dsq_cdc_reader *r, dsq_cdc_event *ev);
void dsq_cdc_read_end(dsq_cdc_reader *r);

#endif
