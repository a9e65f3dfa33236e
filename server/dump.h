/* dump — a SQLite database file as SQL text, in the form `sqlite3 DB
 * .dump` writes (tables and their rows, virtual tables through
 * writable_schema, sqlite_sequence, then indexes, views and triggers),
 * for an import (PUT /v1/db/{db}/import with a SQLite file). */
#ifndef DSQ_DUMP_H
#define DSQ_DUMP_H

#include <stddef.h>

#include "common/buf.h"

/* The database file at `path` (opened read-only) as SQL into out; with
 * `only`, table `only` alone (its rows, indexes and triggers). 0, or -1
 * with the reason (not a SQLite database, out of memory). */
int dsq_sqlite_dump(const char *path, const char *only, dsq_buf *out, char *err, size_t errlen);

/* The same for a database file's bytes p[0..n), written first to a
 * temporary file in directory `dir` (removed after). */
int dsq_sqlite_dump_bytes(const char *dir, const void *p, size_t n, const char *only, dsq_buf *out, char *err,
                          size_t errlen);

#endif
