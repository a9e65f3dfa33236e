/* table — Iceberg v2 table metadata (see table.h).
 *
 * Divisions: checks of schemas and specs; a new table; snapshots; schema
 * changes; the metadata log. */
#include "lake/table.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

/* ---- checks ------------------------------------------------------------------------------- */

/* Iceberg's primitive types (decimal(P,S) and fixed[L] by their prefix). */
static bool primitive(const char *t)
{
    static const char *const names[] = {"boolean", "int", "long", "float", "double", "date", "time",
                                        "timestamp", "timestamptz", "string", "uuid", "binary", NULL};
    if (t == NULL)
        return false;
    for (size_t i = 0; names[i]; i++)
        if (strcmp(t, names[i]) == 0)
            return true;
    return strncmp(t, "decimal(", 8) == 0 || strncmp(t, "fixed[", 6) == 0;
}

/* Fields: ids positive and unique, names unique and not empty, types
 * primitive, required a boolean. The largest id into *max. */
static int check_fields(json_t *fields, int *max, char *err, size_t n)
{
    if (!json_is_array(fields))
        return dsq_errf(err, n, "a schema's fields must be an array");
    *max = 0;
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        json_t *id = json_object_get(f, "id");
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!json_is_integer(id) || json_integer_value(id) <= 0 || json_integer_value(id) > INT32_MAX)
            return dsq_errf(err, n, "field %zu: \"id\" must be a positive 32-bit integer", i);
        if (name == NULL || name[0] == '\0')
            return dsq_errf(err, n, "field %zu: \"name\" must be a string", i);
        if (!json_is_boolean(json_object_get(f, "required")))
            return dsq_errf(err, n, "field '%s': \"required\" must be a boolean", name);
        if (!primitive(json_string_value(json_object_get(f, "type"))))
            return dsq_errf(err, n, "field '%s': \"type\" must be one of Iceberg's primitive types", name);
        for (size_t k = 0; k < i; k++) {
            json_t *o = json_array_get(fields, k);
            if (json_integer_value(json_object_get(o, "id")) == json_integer_value(id))
                return dsq_errf(err, n, "field id %lld is there twice", (long long)json_integer_value(id));
            if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0)
                return dsq_errf(err, n, "field name '%s' is there twice", name);
        }
        if (json_integer_value(id) > *max)
            *max = (int)json_integer_value(id);
    }
    return 0;
}

static json_t *field_by_id(json_t *fields, json_int_t id)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        if (json_integer_value(json_object_get(f, "id")) == id)
            return f;
    }
    return NULL;
}

static bool transform_ok(const char *t)
{
    static const char *const plain[] = {"identity", "year", "month", "day", "hour", "void", NULL};
    if (t == NULL)
        return false;
    for (size_t i = 0; plain[i]; i++)
        if (strcmp(t, plain[i]) == 0)
            return true;
    unsigned w;
    char close;
    return (sscanf(t, "bucket[%u%c", &w, &close) == 2 || sscanf(t, "truncate[%u%c", &w, &close) == 2) &&
           close == ']' && w > 0 && t[strlen(t) - 1] == ']';
}

/* A spec's fields against the schema's: transforms known, sources there,
 * field ids from 1000 up and unique, names unique. The largest field id
 * into *max (999 when there are none, as Iceberg counts). */
static int check_spec(json_t *spec, json_t *fields, int *max, char *err, size_t n)
{
    if (!json_is_array(spec))
        return dsq_errf(err, n, "a partition spec's fields must be an array");
    *max = 999;
    size_t i;
    json_t *p;
    json_array_foreach(spec, i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        json_t *src = json_object_get(p, "source-id"), *fid = json_object_get(p, "field-id");
        if (name == NULL || name[0] == '\0')
            return dsq_errf(err, n, "partition field %zu: \"name\" must be a string", i);
        if (!transform_ok(json_string_value(json_object_get(p, "transform"))))
            return dsq_errf(err, n, "partition field '%s': unknown transform", name);
        if (!json_is_integer(src) || field_by_id(fields, json_integer_value(src)) == NULL)
            return dsq_errf(err, n, "partition field '%s': \"source-id\" names no field of the schema", name);
        if (!json_is_integer(fid) || json_integer_value(fid) < 1000 || json_integer_value(fid) > INT32_MAX)
            return dsq_errf(err, n, "partition field '%s': \"field-id\" must be 1000 or more", name);
        for (size_t k = 0; k < i; k++) {
            json_t *o = json_array_get(spec, k);
            if (json_integer_value(json_object_get(o, "field-id")) == json_integer_value(fid) ||
                strcmp(json_string_value(json_object_get(o, "name")), name) == 0)
                return dsq_errf(err, n, "partition field '%s': its name or field id is there twice", name);
        }
        if (json_integer_value(fid) > *max)
            *max = (int)json_integer_value(fid);
    }
    return 0;
}

/* ---- a new table ----------------------------------------------------------------------------- */

json_t *dsq_ice_table_new(const char *uuid, const char *location, json_t *fields, json_t *spec, json_t *props,
                          int64_t now_ms, char *err, size_t errlen)
{
    if (uuid == NULL || location == NULL) {
        dsq_errf(err, errlen, "a table needs its uuid and its location");
        return NULL;
    }
    int last_col = 0, last_part = 999;
    if (check_fields(fields, &last_col, err, errlen) != 0 || check_spec(spec, fields, &last_part, err, errlen) != 0)
        return NULL;
    if (props != NULL && !json_is_object(props)) {
        dsq_errf(err, errlen, "properties must be an object of strings");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        if (!json_is_string(v)) {
            dsq_errf(err, errlen, "property '%s' must be a string", k);
            return NULL;
        }
    }
    json_t *pc = props != NULL ? json_deep_copy(props) : json_object();
    json_t *md = pc == NULL ? NULL : json_pack(
        "{s:i, s:s, s:s, s:I, s:I, s:i, s:[{s:s, s:i, s:O}], s:i, s:[{s:i, s:O}], s:i, s:i, s:o, s:[], s:[], s:[],"
        " s:[{s:i, s:[]}], s:i, s:{}}",
        "format-version", 2, "table-uuid", uuid, "location", location, "last-sequence-number", (json_int_t)0,
        "last-updated-ms", (json_int_t)now_ms, "last-column-id", last_col, "schemas", "type", "struct", "schema-id", 0,
        "fields", fields, "current-schema-id", 0, "partition-specs", "spec-id", 0, "fields", spec, "default-spec-id", 0,
        "last-partition-id", last_part, "properties", pc, "snapshots",
        "snapshot-log", "metadata-log", "sort-orders", "order-id", 0, "fields", "default-sort-order-id", 0, "refs");
    if (md == NULL) {
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    /* json_pack's O took its own references: the copies are the table's. */
    json_t *copy;
    json_t *s0 = json_array_get(json_object_get(md, "schemas"), 0);
    if ((copy = json_deep_copy(fields)) == NULL || json_object_set_new(s0, "fields", copy) != 0 ||
        (copy = json_deep_copy(spec)) == NULL ||
        json_object_set_new(json_array_get(json_object_get(md, "partition-specs"), 0), "fields", copy) != 0) {
        json_decref(md);
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    return md;
}

/* ---- snapshots ----------------------------------------------------------------------------------- */

static json_int_t int_of(json_t *md, const char *key) { return json_integer_value(json_object_get(md, key)); }

/* Iceberg's readers refuse metadata whose last-updated-ms is more than a
 * minute before the entries of its logs: a clock gone back is refused. */
static int time_ok(json_t *md, int64_t now_ms, char *err, size_t errlen)
{
    if (now_ms < int_of(md, "last-updated-ms") - 60000)
        return dsq_errf(err, errlen, "the time (%lld ms) is more than a minute before the table's last update (%lld ms)",
                    (long long)now_ms, (long long)int_of(md, "last-updated-ms"));
    return 0;
}

int dsq_ice_table_append(json_t *md, int64_t snapshot_id, const char *manifest_list, int64_t now_ms,
                         const char *const *summary, char *err, size_t errlen)
{
    json_t *snaps = json_object_get(md, "snapshots");
    if (snapshot_id <= 0)
        return dsq_errf(err, errlen, "a snapshot id must be positive");
    if (manifest_list == NULL)
        return dsq_errf(err, errlen, "a snapshot needs its manifest list");
    if (time_ok(md, now_ms, err, errlen) != 0)
        return -1;
    size_t i;
    json_t *s;
    json_array_foreach(snaps, i, s) {
        if (int_of(s, "snapshot-id") == snapshot_id)
            return dsq_errf(err, errlen, "snapshot %lld is in the table already", (long long)snapshot_id);
    }
    json_int_t seq = int_of(md, "last-sequence-number") + 1;
    json_t *cur = json_object_get(md, "current-snapshot-id");
    json_t *sum = json_pack("{s:s}", "operation", "append");
    for (size_t k = 0; sum != NULL && summary != NULL && summary[k] != NULL && summary[k + 1] != NULL; k += 2)
        if (json_object_set_new(sum, summary[k], json_string(summary[k + 1])) != 0) {
            json_decref(sum);
            sum = NULL;
        }
    json_t *snap = sum == NULL ? NULL
                               : json_pack("{s:I, s:I, s:I, s:s, s:o, s:I}", "snapshot-id", (json_int_t)snapshot_id,
                                           "sequence-number", seq, "timestamp-ms", (json_int_t)now_ms,
                                           "manifest-list", manifest_list, "summary", sum, "schema-id",
                                           int_of(md, "current-schema-id"));
    json_t *log = json_pack("{s:I, s:I}", "timestamp-ms", (json_int_t)now_ms, "snapshot-id", (json_int_t)snapshot_id);
    json_t *ref = json_pack("{s:I, s:s}", "snapshot-id", (json_int_t)snapshot_id, "type", "branch");
    if (snap != NULL && json_is_integer(cur) && json_integer_value(cur) > 0 &&
        json_object_set(snap, "parent-snapshot-id", cur) != 0) {
        json_decref(snap);
        snap = NULL;
    }
    json_t *refs = json_object_get(md, "refs");
    if (snap == NULL || log == NULL || ref == NULL || json_array_append_new(snaps, snap) != 0) {
        json_decref(snap);
        json_decref(log);
        json_decref(ref);
        return dsq_errf(err, errlen, "out of memory");
    }
    snap = NULL;
    if (json_array_append_new(json_object_get(md, "snapshot-log"), log) != 0 ||
        json_object_set_new(refs, "main", ref) != 0) {
        json_array_remove(snaps, json_array_size(snaps) - 1); /* as it was */
        return dsq_errf(err, errlen, "out of memory");
    }
    json_object_set_new(md, "current-snapshot-id", json_integer(snapshot_id));
    json_object_set_new(md, "last-sequence-number", json_integer(seq));
    json_object_set_new(md, "last-updated-ms", json_integer(now_ms));
    return 0;
}

/* ---- schema changes ----------------------------------------------------------------------------------- */

static json_t *current_schema(json_t *md)
{
    json_int_t id = int_of(md, "current-schema-id");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(md, "schemas"), i, s) {
        if (int_of(s, "schema-id") == id)
            return s;
    }
    return NULL;
}

/* A copy of the current schema's fields, or NULL (out of memory). */
static json_t *fields_copy(json_t *md)
{
    return json_deep_copy(json_object_get(current_schema(md), "fields"));
}

/* `fields` becomes the current schema, with the next schema id. */
static int new_schema(json_t *md, json_t *fields, int64_t now_ms, char *err, size_t errlen)
{
    json_t *schemas = json_object_get(md, "schemas");
    json_int_t next = 0;
    size_t i;
    json_t *s;
    json_array_foreach(schemas, i, s) {
        if (int_of(s, "schema-id") >= next)
            next = int_of(s, "schema-id") + 1;
    }
    json_t *schema = json_pack("{s:s, s:I, s:o}", "type", "struct", "schema-id", next, "fields", fields);
    if (schema == NULL || json_array_append_new(schemas, schema) != 0)
        return dsq_errf(err, errlen, "out of memory");
    json_object_set_new(md, "current-schema-id", json_integer(next));
    json_object_set_new(md, "last-updated-ms", json_integer(now_ms));
    return 0;
}

int dsq_ice_table_add_column(json_t *md, const char *name, const char *type, int64_t now_ms, int *id, char *err,
                             size_t errlen)
{
    if (time_ok(md, now_ms, err, errlen) != 0)
        return -1;
    json_t *fields = fields_copy(md);
    if (fields == NULL)
        return dsq_errf(err, errlen, "out of memory");
    json_int_t next = int_of(md, "last-column-id") + 1;
    json_t *f = json_pack("{s:I, s:s, s:b, s:s}", "id", next, "name", name ? name : "", "required", 0, "type",
                          type ? type : "");
    int max;
    if (f == NULL || json_array_append_new(fields, f) != 0) {
        json_decref(fields);
        return dsq_errf(err, errlen, "out of memory");
    }
    if (check_fields(fields, &max, err, errlen) != 0) {
        json_decref(fields);
        return -1;
    }
    if (new_schema(md, fields, now_ms, err, errlen) != 0)
        return -1;
    json_object_set_new(md, "last-column-id", json_integer(next));
    *id = (int)next;
    return 0;
}

int dsq_ice_table_rename_column(json_t *md, int id, const char *name, int64_t now_ms, char *err, size_t errlen)
{
    if (time_ok(md, now_ms, err, errlen) != 0)
        return -1;
    json_t *fields = fields_copy(md);
    if (fields == NULL)
        return dsq_errf(err, errlen, "out of memory");
    json_t *f = field_by_id(fields, id);
    int max;
    if (f == NULL) {
        json_decref(fields);
        return dsq_errf(err, errlen, "no field has id %d", id);
    }
    if (json_object_set_new(f, "name", json_string(name ? name : "")) != 0) {
        json_decref(fields);
        return dsq_errf(err, errlen, "a column's name must be UTF-8 text");
    }
    if (check_fields(fields, &max, err, errlen) != 0) {
        json_decref(fields);
        return -1;
    }
    return new_schema(md, fields, now_ms, err, errlen);
}

/* ---- the metadata log ------------------------------------------------------------------------------ */

int dsq_ice_table_log_previous(json_t *md, const char *location, int64_t ts_ms)
{
    json_t *e = json_pack("{s:I, s:s}", "timestamp-ms", (json_int_t)ts_ms, "metadata-file", location);
    return e != NULL && json_array_append_new(json_object_get(md, "metadata-log"), e) == 0 ? 0 : -1;
}

int dsq_ice_table_set_schema(json_t *md, json_t *fields, int64_t now_ms, char *err, size_t errlen)
{
    int max;
    if (check_fields(fields, &max, err, errlen) != 0)
        return -1;
    json_t *cur = current_schema(md);
    if (cur != NULL && json_equal(json_object_get(cur, "fields"), fields))
        return 0; /* the same: no new schema */
    if (time_ok(md, now_ms, err, errlen) != 0)
        return -1;
    /* A field id keeps its type in every schema of the table. */
    size_t i, k, j;
    json_t *f, *s, *g;
    json_array_foreach(fields, i, f) {
        json_array_foreach(json_object_get(md, "schemas"), k, s) {
            json_array_foreach(json_object_get(s, "fields"), j, g) {
                if (int_of(g, "id") == int_of(f, "id") &&
                    !json_equal(json_object_get(g, "type"), json_object_get(f, "type")))
                    return dsq_errf(err, errlen, "field id %lld was of type %s, not %s", (long long)int_of(f, "id"),
                                    json_string_value(json_object_get(g, "type")),
                                    json_string_value(json_object_get(f, "type")));
            }
        }
    }
    json_t *copy = json_deep_copy(fields);
    if (copy == NULL || new_schema(md, copy, now_ms, err, errlen) != 0)
        return copy == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
    if (max > int_of(md, "last-column-id"))
        json_object_set_new(md, "last-column-id", json_integer(max));
    return 0;
}
