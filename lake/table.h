/* table — Iceberg v2 table metadata (the `metadata.json` of the Apache
 * Iceberg table spec, "Table Metadata" and Appendix C), as jansson
 * objects: a new table, a snapshot appended, a column added or renamed
 * (a new schema, old field ids kept), the previous metadata file noted.
 *
 * Writing the file and swapping the table's pointer to it (the commit)
 * is the caller's: these functions only make the next metadata from the
 * last. Each checks what it is given and refuses, with the reason, what
 * would make metadata a reader rejects; on refusal the metadata is left
 * as it was. */
#ifndef DSQ_TABLE_H
#define DSQ_TABLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A new table's metadata: `fields` the schema's fields (Iceberg's JSON:
 * [{"id", "name", "required", "type"}, ...], primitive types), `spec` the
 * partition spec's fields ([{"name", "transform", "source-id",
 * "field-id"}, ...]; may be empty), `props` string properties (may be
 * NULL). References are not taken: the metadata holds copies. NULL with
 * the reason in err. */
json_t *dsq_ice_table_new(const char *uuid, const char *location, json_t *fields, json_t *spec, json_t *props,
                          int64_t now_ms, char *err, size_t errlen);

/* Append snapshot `snapshot_id` (new in the table) whose manifest list is
 * at `manifest_list`, with summary operation "append" and the other
 * string pairs in `summary` (key, value, ..., NULL; may be NULL), made
 * the current snapshot of branch main, at the next sequence number. 0, or
 * -1 with the reason. */
int dsq_ice_table_append(json_t *md, int64_t snapshot_id, const char *manifest_list, int64_t now_ms,
                         const char *const *summary, char *err, size_t errlen);

/* A new current schema: the current one plus an optional column `name`
 * of primitive `type` with the next field id (returned in *id). 0, or -1
 * (a name in use, a type not primitive). */
int dsq_ice_table_add_column(json_t *md, const char *name, const char *type, int64_t now_ms, int *id, char *err,
                             size_t errlen);
/* A new current schema with field `id` named `name`. 0, or -1. */
int dsq_ice_table_rename_column(json_t *md, int id, const char *name, int64_t now_ms, char *err, size_t errlen);

/* The current schema made `fields` (ids chosen by the caller; not taken):
 * nothing when it is that already, else a new schema. An id that had
 * another type in any schema of the table is refused. 0, or -1. */
int dsq_ice_table_set_schema(json_t *md, json_t *fields, int64_t now_ms, char *err, size_t errlen);

/* The metadata file this one replaces, at `location`, written at
 * `ts_ms`: noted in metadata-log. 0, or -1 out of memory. */
int dsq_ice_table_log_previous(json_t *md, const char *location, int64_t ts_ms);

#endif
