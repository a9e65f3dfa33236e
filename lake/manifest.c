/* manifest — Iceberg v2 manifests and manifest lists (see manifest.h).
 *
 * Divisions: single-value bytes; the Avro schemas (with Iceberg's field
 * ids); filling libavro values; manifests; manifest lists. */
#include "lake/manifest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "lake/avro.h"

/* ---- single-value bytes ----------------------------------------------------------------- */

int dsq_ice_put_int(dsq_buf *b, int32_t v)
{
    uint32_t u = (uint32_t)v;
    unsigned char p[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
    return dsq_buf_append(b, p, 4);
}

int dsq_ice_put_long(dsq_buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    unsigned char p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(u >> (8 * i));
    return dsq_buf_append(b, p, 8);
}

int dsq_ice_put_double(dsq_buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return dsq_ice_put_long(b, (int64_t)u);
}

/* ---- the Avro schemas ----------------------------------------------------------------- */

static const char *ptype_avro(dsq_ice_ptype t)
{
    switch (t) {
    case DSQ_ICE_P_INT: return "\"int\"";
    case DSQ_ICE_P_LONG: return "\"long\"";
    case DSQ_ICE_P_STRING: return "\"string\"";
    case DSQ_ICE_P_DATE: return "{\"type\":\"int\",\"logicalType\":\"date\"}";
    }
    return "\"null\"";
}

/* An Iceberg map<int, T> as Avro: an array of key/value records, marked
 * with the map logical type, optional. */
static void map_field(dsq_buf *b, const char *name, int id, int kid, int vid, const char *vtype)
{
    dsq_buf_printf(b,
                   ",{\"name\":\"%s\",\"type\":[\"null\",{\"type\":\"array\",\"logicalType\":\"map\",\"items\":"
                   "{\"type\":\"record\",\"name\":\"k%d_v%d\",\"fields\":[{\"name\":\"key\",\"type\":\"int\","
                   "\"field-id\":%d},{\"name\":\"value\",\"type\":\"%s\",\"field-id\":%d}]}}],\"default\":null,"
                   "\"field-id\":%d}",
                   name, kid, vid, kid, vtype, vid, id);
}

static int entry_schema(dsq_buf *b, const dsq_ice_pfield *pf, size_t npf)
{
    dsq_buf_puts(b, "{\"type\":\"record\",\"name\":\"manifest_entry\",\"fields\":["
                    "{\"name\":\"status\",\"type\":\"int\",\"field-id\":0},"
                    "{\"name\":\"snapshot_id\",\"type\":[\"null\",\"long\"],\"default\":null,\"field-id\":1},"
                    "{\"name\":\"sequence_number\",\"type\":[\"null\",\"long\"],\"default\":null,\"field-id\":3},"
                    "{\"name\":\"file_sequence_number\",\"type\":[\"null\",\"long\"],\"default\":null,\"field-id\":4},"
                    "{\"name\":\"data_file\",\"type\":{\"type\":\"record\",\"name\":\"r2\",\"fields\":["
                    "{\"name\":\"content\",\"type\":\"int\",\"field-id\":134},"
                    "{\"name\":\"file_path\",\"type\":\"string\",\"field-id\":100},"
                    "{\"name\":\"file_format\",\"type\":\"string\",\"field-id\":101},"
                    "{\"name\":\"partition\",\"type\":{\"type\":\"record\",\"name\":\"r102\",\"fields\":[");
    for (size_t i = 0; i < npf; i++)
        dsq_buf_printf(b, "%s{\"name\":\"%s\",\"type\":[\"null\",%s],\"default\":null,\"field-id\":%d}", i ? "," : "",
                       pf[i].name, ptype_avro(pf[i].type), pf[i].field_id);
    dsq_buf_puts(b, "]},\"field-id\":102},"
                    "{\"name\":\"record_count\",\"type\":\"long\",\"field-id\":103},"
                    "{\"name\":\"file_size_in_bytes\",\"type\":\"long\",\"field-id\":104}");
    map_field(b, "column_sizes", 108, 117, 118, "long");
    map_field(b, "value_counts", 109, 119, 120, "long");
    map_field(b, "null_value_counts", 110, 121, 122, "long");
    map_field(b, "nan_value_counts", 137, 138, 139, "long");
    map_field(b, "lower_bounds", 125, 126, 127, "bytes");
    map_field(b, "upper_bounds", 128, 129, 130, "bytes");
    return dsq_buf_puts(b, ",{\"name\":\"key_metadata\",\"type\":[\"null\",\"bytes\"],\"default\":null,\"field-id\":131},"
                           "{\"name\":\"split_offsets\",\"type\":[\"null\",{\"type\":\"array\",\"items\":\"long\","
                           "\"element-id\":133}],\"default\":null,\"field-id\":132},"
                           "{\"name\":\"equality_ids\",\"type\":[\"null\",{\"type\":\"array\",\"items\":\"int\","
                           "\"element-id\":136}],\"default\":null,\"field-id\":135},"
                           "{\"name\":\"sort_order_id\",\"type\":[\"null\",\"int\"],\"default\":null,\"field-id\":140}"
                           "]},\"field-id\":2}]}");
}

static const char list_schema[] =
    "{\"type\":\"record\",\"name\":\"manifest_file\",\"fields\":["
    "{\"name\":\"manifest_path\",\"type\":\"string\",\"field-id\":500},"
    "{\"name\":\"manifest_length\",\"type\":\"long\",\"field-id\":501},"
    "{\"name\":\"partition_spec_id\",\"type\":\"int\",\"field-id\":502},"
    "{\"name\":\"content\",\"type\":\"int\",\"field-id\":517},"
    "{\"name\":\"sequence_number\",\"type\":\"long\",\"field-id\":515},"
    "{\"name\":\"min_sequence_number\",\"type\":\"long\",\"field-id\":516},"
    "{\"name\":\"added_snapshot_id\",\"type\":\"long\",\"field-id\":503},"
    "{\"name\":\"added_files_count\",\"type\":\"int\",\"field-id\":504},"
    "{\"name\":\"existing_files_count\",\"type\":\"int\",\"field-id\":505},"
    "{\"name\":\"deleted_files_count\",\"type\":\"int\",\"field-id\":506},"
    "{\"name\":\"added_rows_count\",\"type\":\"long\",\"field-id\":512},"
    "{\"name\":\"existing_rows_count\",\"type\":\"long\",\"field-id\":513},"
    "{\"name\":\"deleted_rows_count\",\"type\":\"long\",\"field-id\":514},"
    "{\"name\":\"partitions\",\"type\":[\"null\",{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"r508\","
    "\"fields\":[{\"name\":\"contains_null\",\"type\":\"boolean\",\"field-id\":509},"
    "{\"name\":\"contains_nan\",\"type\":[\"null\",\"boolean\"],\"default\":null,\"field-id\":518},"
    "{\"name\":\"lower_bound\",\"type\":[\"null\",\"bytes\"],\"default\":null,\"field-id\":510},"
    "{\"name\":\"upper_bound\",\"type\":[\"null\",\"bytes\"],\"default\":null,\"field-id\":511}]},"
    "\"element-id\":508}],\"default\":null,\"field-id\":507},"
    "{\"name\":\"key_metadata\",\"type\":[\"null\",\"bytes\"],\"default\":null,\"field-id\":519}]}";

/* ---- filling libavro values ---------------------------------------------------------------------- */

/* Each setter returns libavro's status (0 ok); callers or them together. */
static int field(avro_value_t *rec, const char *name, avro_value_t *out)
{
    return avro_value_get_by_name(rec, name, out, NULL);
}

static int set_int(avro_value_t *rec, const char *name, int32_t v)
{
    avro_value_t f;
    return field(rec, name, &f) || avro_value_set_int(&f, v);
}

static int set_long(avro_value_t *rec, const char *name, int64_t v)
{
    avro_value_t f;
    return field(rec, name, &f) || avro_value_set_long(&f, v);
}

static int set_string(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f;
    return field(rec, name, &f) || avro_value_set_string(&f, s);
}

/* An optional field: null, or its value branch in *out to fill. */
static int set_null(avro_value_t *rec, const char *name)
{
    avro_value_t f, br;
    return field(rec, name, &f) || avro_value_set_branch(&f, 0, &br) || avro_value_set_null(&br);
}

static int opt(avro_value_t *rec, const char *name, avro_value_t *out)
{
    avro_value_t f;
    return field(rec, name, &f) || avro_value_set_branch(&f, 1, out);
}

static int opt_long(avro_value_t *rec, const char *name, int64_t v)
{
    if (v < 0)
        return set_null(rec, name);
    avro_value_t br;
    return opt(rec, name, &br) || avro_value_set_long(&br, v);
}

/* A map<int, long> of one metric of the columns (left out when none has it). */
static int metric_map(avro_value_t *rec, const char *name, const dsq_ice_colstats *c, size_t n, size_t off)
{
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= *(const int64_t *)((const char *)&c[i] + off) >= 0;
    if (!any)
        return set_null(rec, name);
    avro_value_t arr, el, k, v;
    int rc = opt(rec, name, &arr);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t x = *(const int64_t *)((const char *)&c[i] + off);
        if (x < 0)
            continue;
        rc = avro_value_append(&arr, &el, NULL) || field(&el, "key", &k) || avro_value_set_int(&k, c[i].field_id) ||
             field(&el, "value", &v) || avro_value_set_long(&v, x);
    }
    return rc;
}

static int bounds_map(avro_value_t *rec, const char *name, const dsq_ice_colstats *c, size_t n, bool upper)
{
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= (upper ? c[i].upper : c[i].lower) != NULL;
    if (!any)
        return set_null(rec, name);
    avro_value_t arr, el, k, v;
    int rc = opt(rec, name, &arr);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const void *p = upper ? c[i].upper : c[i].lower;
        size_t len = upper ? c[i].upper_len : c[i].lower_len;
        if (p == NULL)
            continue;
        rc = avro_value_append(&arr, &el, NULL) || field(&el, "key", &k) || avro_value_set_int(&k, c[i].field_id) ||
             field(&el, "value", &v) || avro_value_set_bytes(&v, (void *)p, len);
    }
    return rc;
}

/* ---- manifests ------------------------------------------------------------------------------ */

struct dsq_manifest {
    dsq_avro_file *f;
    dsq_ice_pfield *pf;             /* owned copy (names too) */
    size_t npf;
    int spec_id, content;
    dsq_ice_mfile sum;
    dsq_ice_fsummary *parts;        /* npf */
};

static void put_pvalue(dsq_buf *b, dsq_ice_ptype t, const dsq_ice_pvalue *v)
{
    dsq_buf_reset(b);
    if (t == DSQ_ICE_P_STRING)
        dsq_buf_puts(b, v->s);
    else if (t == DSQ_ICE_P_LONG)
        dsq_ice_put_long(b, v->i);
    else
        dsq_ice_put_int(b, (int32_t)v->i);
}

/* Does a precede b in the partition field's order? */
static bool pless(dsq_ice_ptype t, const dsq_ice_pvalue *a, const dsq_ice_pvalue *b)
{
    if (t == DSQ_ICE_P_STRING)
        return strcmp(a->s, b->s) < 0; /* UTF-8 byte order is code point order */
    return a->i < b->i;
}

/* [A-Za-z_][A-Za-z0-9_]*: what Avro takes as a field name (and what may
 * go into the schema's JSON unescaped). */
static bool avro_name(const char *s)
{
    if (s == NULL || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

dsq_manifest *dsq_manifest_new(const char *schema_json, int schema_id, const char *spec_fields_json, int spec_id,
                               const dsq_ice_pfield *pf, size_t npf, int content, char *err, size_t errlen)
{
    for (size_t i = 0; i < npf; i++) {
        if (!avro_name(pf[i].name)) {
            snprintf(err, errlen, "partition field name '%.64s' is not an Avro name ([A-Za-z_][A-Za-z0-9_]*)",
                     pf[i].name ? pf[i].name : "");
            return NULL;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(pf[k].name, pf[i].name) == 0) {
                snprintf(err, errlen, "partition field name '%.64s' is there twice", pf[i].name);
                return NULL;
            }
    }
    dsq_manifest *m = calloc(1, sizeof *m);
    dsq_buf schema = DSQ_BUF_INIT;
    if (m == NULL || (npf > 0 && ((m->pf = calloc(npf, sizeof *m->pf)) == NULL ||
                                  (m->parts = calloc(npf, sizeof *m->parts)) == NULL))) {
        if (m != NULL) {
            free(m->pf);
            free(m);
        }
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->npf = npf;
    m->spec_id = spec_id;
    m->content = content;
    for (size_t i = 0; i < npf; i++) {
        m->pf[i] = pf[i];
        m->pf[i].name = strdup(pf[i].name);
        if (m->pf[i].name == NULL) {
            snprintf(err, errlen, "out of memory");
            dsq_manifest_free(m);
            return NULL;
        }
    }
    char sid[24], spid[24];
    snprintf(sid, sizeof sid, "%d", schema_id);
    snprintf(spid, sizeof spid, "%d", spec_id);
    const char *meta[] = {"schema", schema_json, "schema-id", sid, "partition-spec", spec_fields_json,
                          "partition-spec-id", spid, "format-version", "2", "content", content ? "deletes" : "data",
                          NULL};
    if (entry_schema(&schema, pf, npf) != 0) {
        snprintf(err, errlen, "out of memory");
        dsq_manifest_free(m);
        return NULL;
    }
    m->f = dsq_avro_new(schema.data, meta, err, errlen);
    dsq_buf_free(&schema);
    if (m->f == NULL) {
        dsq_manifest_free(m);
        return NULL;
    }
    m->sum.spec_id = spec_id;
    m->sum.content = content;
    m->sum.parts = m->parts;
    m->sum.nparts = npf;
    return m;
}

static void summarize(dsq_manifest *m, const dsq_ice_entry *e)
{
    const dsq_ice_datafile *d = &e->file;
    if (e->status == DSQ_ICE_ADDED) {
        m->sum.added_files++;
        m->sum.added_rows += d->record_count;
    } else if (e->status == DSQ_ICE_EXISTING) {
        m->sum.existing_files++;
        m->sum.existing_rows += d->record_count;
    } else {
        m->sum.deleted_files++;
        m->sum.deleted_rows += d->record_count;
    }
    /* Bounds of the partition values over every entry, deleted ones too
     * (readers of deletions prune with them as well). */
    for (size_t i = 0; i < m->npf; i++) {
        const dsq_ice_pvalue *v = &d->partition[i];
        dsq_ice_fsummary *s = &m->parts[i];
        if (v->null) {
            s->contains_null = true;
            continue;
        }
        /* The bounds so far, decoded from their bytes to compare. */
        dsq_ice_pvalue lo = {0}, hi = {0};
        if (s->has_bounds) {
            if (m->pf[i].type == DSQ_ICE_P_STRING) {
                lo.s = s->lower.data;
                hi.s = s->upper.data;
            } else {
                uint64_t a = 0, b = 0;
                size_t w = m->pf[i].type == DSQ_ICE_P_LONG ? 8 : 4;
                for (size_t k = 0; k < w; k++) {
                    a |= (uint64_t)(unsigned char)s->lower.data[k] << (8 * k);
                    b |= (uint64_t)(unsigned char)s->upper.data[k] << (8 * k);
                }
                lo.i = w == 4 ? (int32_t)(uint32_t)a : (int64_t)a; /* (sign-extended) */
                hi.i = w == 4 ? (int32_t)(uint32_t)b : (int64_t)b;
            }
        }
        if (!s->has_bounds || pless(m->pf[i].type, v, &lo))
            put_pvalue(&s->lower, m->pf[i].type, v);
        if (!s->has_bounds || pless(m->pf[i].type, &hi, v))
            put_pvalue(&s->upper, m->pf[i].type, v);
        s->has_bounds = true;
    }
}

int dsq_manifest_add(dsq_manifest *m, const dsq_ice_entry *e, char *err, size_t errlen)
{
    const dsq_ice_datafile *d = &e->file;
    avro_value_t *r = dsq_avro_record(m->f), df, part, br, arr, el;
    int rc = set_int(r, "status", e->status) | opt_long(r, "snapshot_id", e->snapshot_id) |
             opt_long(r, "sequence_number", e->sequence_number) |
             opt_long(r, "file_sequence_number", e->file_sequence_number) | field(r, "data_file", &df);
    if (rc == 0)
        rc = set_int(&df, "content", d->content) | set_string(&df, "file_path", d->path) |
             set_string(&df, "file_format", d->format) | field(&df, "partition", &part);
    for (size_t i = 0; rc == 0 && i < m->npf; i++) {
        const dsq_ice_pvalue *v = &d->partition[i];
        if (v->null) {
            rc = set_null(&part, m->pf[i].name);
            continue;
        }
        rc = opt(&part, m->pf[i].name, &br);
        if (rc == 0)
            rc = m->pf[i].type == DSQ_ICE_P_STRING ? avro_value_set_string(&br, v->s)
                 : m->pf[i].type == DSQ_ICE_P_LONG ? avro_value_set_long(&br, v->i)
                                                   : avro_value_set_int(&br, (int32_t)v->i);
    }
    if (rc == 0)
        rc = set_long(&df, "record_count", d->record_count) | set_long(&df, "file_size_in_bytes", d->file_size) |
             metric_map(&df, "column_sizes", d->cols, d->ncols, offsetof(dsq_ice_colstats, size)) |
             metric_map(&df, "value_counts", d->cols, d->ncols, offsetof(dsq_ice_colstats, values)) |
             metric_map(&df, "null_value_counts", d->cols, d->ncols, offsetof(dsq_ice_colstats, nulls)) |
             metric_map(&df, "nan_value_counts", d->cols, d->ncols, offsetof(dsq_ice_colstats, nans)) |
             bounds_map(&df, "lower_bounds", d->cols, d->ncols, false) |
             bounds_map(&df, "upper_bounds", d->cols, d->ncols, true) | set_null(&df, "key_metadata");
    if (rc == 0) {
        if (d->split_offsets == NULL) {
            rc = set_null(&df, "split_offsets");
        } else {
            rc = opt(&df, "split_offsets", &arr);
            for (size_t i = 0; rc == 0 && i < d->nsplits; i++)
                rc = avro_value_append(&arr, &el, NULL) || avro_value_set_long(&el, d->split_offsets[i]);
        }
    }
    if (rc == 0) {
        if (d->equality_ids == NULL) {
            rc = set_null(&df, "equality_ids");
        } else {
            rc = opt(&df, "equality_ids", &arr);
            for (size_t i = 0; rc == 0 && i < d->neq; i++)
                rc = avro_value_append(&arr, &el, NULL) || avro_value_set_int(&el, d->equality_ids[i]);
        }
    }
    if (rc == 0) {
        if (d->sort_order_id < 0)
            rc = set_null(&df, "sort_order_id");
        else
            rc = opt(&df, "sort_order_id", &br) || avro_value_set_int(&br, d->sort_order_id);
    }
    if (rc != 0) {
        snprintf(err, errlen, "manifest entry: libavro: %s", avro_strerror());
        avro_value_reset(r);
        return -1;
    }
    if (dsq_avro_append(m->f, err, errlen) != 0)
        return -1;
    summarize(m, e);
    return 0;
}

int dsq_manifest_finish(dsq_manifest *m, dsq_buf *out, dsq_ice_mfile *mf)
{
    if (dsq_avro_finish(m->f, out) != 0)
        return -1;
    *mf = m->sum;
    return 0;
}

void dsq_manifest_free(dsq_manifest *m)
{
    if (m == NULL)
        return;
    dsq_avro_free(m->f);
    for (size_t i = 0; i < m->npf; i++) {
        free((char *)m->pf[i].name);
        if (m->parts != NULL) {
            dsq_buf_free(&m->parts[i].lower);
            dsq_buf_free(&m->parts[i].upper);
        }
    }
    free(m->pf);
    free(m->parts);
    free(m);
}

/* ---- manifest lists ------------------------------------------------------------------------ */

static int opt_bytes(avro_value_t *rec, const char *name, const dsq_buf *b, bool present)
{
    if (!present)
        return set_null(rec, name);
    avro_value_t br;
    return opt(rec, name, &br) || avro_value_set_bytes(&br, b->len ? b->data : (void *)"", b->len);
}

int dsq_manifest_list(const dsq_ice_mfile *files, size_t n, int64_t snapshot_id, int64_t parent_id,
                      int64_t sequence_number, dsq_buf *out, char *err, size_t errlen)
{
    char sid[24], pid[24], seq[24];
    snprintf(sid, sizeof sid, "%lld", (long long)snapshot_id);
    if (parent_id < 0)
        snprintf(pid, sizeof pid, "null");
    else
        snprintf(pid, sizeof pid, "%lld", (long long)parent_id);
    snprintf(seq, sizeof seq, "%lld", (long long)sequence_number);
    const char *meta[] = {"snapshot-id", sid, "parent-snapshot-id", pid, "sequence-number", seq,
                          "format-version", "2", NULL};
    dsq_avro_file *f = dsq_avro_new(list_schema, meta, err, errlen);
    if (f == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const dsq_ice_mfile *m = &files[i];
        avro_value_t *r = dsq_avro_record(f), arr, el;
        int rc = set_string(r, "manifest_path", m->path) | set_long(r, "manifest_length", m->length) |
                 set_int(r, "partition_spec_id", m->spec_id) | set_int(r, "content", m->content) |
                 set_long(r, "sequence_number", m->sequence_number) |
                 set_long(r, "min_sequence_number", m->min_sequence_number) |
                 set_long(r, "added_snapshot_id", m->added_snapshot_id) |
                 set_int(r, "added_files_count", m->added_files) |
                 set_int(r, "existing_files_count", m->existing_files) |
                 set_int(r, "deleted_files_count", m->deleted_files) | set_long(r, "added_rows_count", m->added_rows) |
                 set_long(r, "existing_rows_count", m->existing_rows) |
                 set_long(r, "deleted_rows_count", m->deleted_rows) | set_null(r, "key_metadata");
        if (rc == 0)
            rc = opt(r, "partitions", &arr);
        for (size_t k = 0; rc == 0 && k < m->nparts; k++) {
            const dsq_ice_fsummary *s = &m->parts[k];
            avro_value_t cn;
            rc = avro_value_append(&arr, &el, NULL) || field(&el, "contains_null", &cn) ||
                 avro_value_set_boolean(&cn, s->contains_null) || set_null(&el, "contains_nan") ||
                 opt_bytes(&el, "lower_bound", &s->lower, s->has_bounds) ||
                 opt_bytes(&el, "upper_bound", &s->upper, s->has_bounds);
        }
        if (rc != 0) {
            snprintf(err, errlen, "manifest list: libavro: %s", avro_strerror());
            dsq_avro_free(f);
            return -1;
        }
        if (dsq_avro_append(f, err, errlen) != 0) {
            dsq_avro_free(f);
            return -1;
        }
    }
    int rc = dsq_avro_finish(f, out);
    dsq_avro_free(f);
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

/* ---- reading a manifest list ------------------------------------------------------------------ */

/* Field `name` of rec, through a union's branch; 1 when it is there and
 * not null, else 0. */
static int get_present(avro_value_t *rec, const char *name, avro_value_t *out)
{
    avro_value_t v;
    if (avro_value_get_by_name(rec, name, &v, NULL) != 0)
        return 0;
    if (avro_value_get_type(&v) == AVRO_UNION) {
        avro_value_t b;
        if (avro_value_get_current_branch(&v, &b) != 0)
            return 0;
        v = b;
    }
    if (avro_value_get_type(&v) == AVRO_NULL)
        return 0;
    *out = v;
    return 1;
}

static int64_t get_num(avro_value_t *rec, const char *name, int64_t dflt)
{
    avro_value_t v;
    if (!get_present(rec, name, &v))
        return dflt;
    int32_t i;
    int64_t l;
    if (avro_value_get_type(&v) == AVRO_INT32 && avro_value_get_int(&v, &i) == 0)
        return i;
    if (avro_value_get_type(&v) == AVRO_INT64 && avro_value_get_long(&v, &l) == 0)
        return l;
    return dflt;
}

static int get_bytes(avro_value_t *rec, const char *name, dsq_buf *b, bool *present)
{
    avro_value_t v;
    *present = false;
    if (!get_present(rec, name, &v))
        return 0;
    const void *p;
    size_t n;
    if (avro_value_get_bytes(&v, &p, &n) != 0)
        return -1;
    *present = true;
    return dsq_buf_append(b, p, n);
}

static int mlist_one(void *ud, avro_value_t *rec, char *err, size_t errlen)
{
    dsq_ice_mlist *l = ud;
    dsq_ice_mfile *grown = realloc(l->files, (l->n + 1) * sizeof *grown);
    if (grown == NULL)
        return dsq_errf(err, errlen, "out of memory");
    l->files = grown;
    dsq_ice_mfile *m = &l->files[l->n];
    memset(m, 0, sizeof *m);
    avro_value_t v;
    const char *path = NULL;
    size_t plen = 0;
    if (!get_present(rec, "manifest_path", &v) || avro_value_get_string(&v, &path, &plen) != 0 || plen < 2)
        return dsq_errf(err, errlen, "manifest list: entry %zu has no manifest_path", l->n);
    char *own = strndup(path, plen - 1); /* (libavro's length counts the NUL) */
    if (own == NULL)
        return dsq_errf(err, errlen, "out of memory");
    m->path = own;
    l->n++;
    m->length = get_num(rec, "manifest_length", 0);
    m->spec_id = (int)get_num(rec, "partition_spec_id", 0);
    m->content = (int)get_num(rec, "content", 0);
    m->sequence_number = get_num(rec, "sequence_number", 0);
    m->min_sequence_number = get_num(rec, "min_sequence_number", m->sequence_number);
    m->added_snapshot_id = get_num(rec, "added_snapshot_id", -1);
    m->added_files = (int)get_num(rec, "added_files_count", 0);
    m->existing_files = (int)get_num(rec, "existing_files_count", 0);
    m->deleted_files = (int)get_num(rec, "deleted_files_count", 0);
    m->added_rows = get_num(rec, "added_rows_count", 0);
    m->existing_rows = get_num(rec, "existing_rows_count", 0);
    m->deleted_rows = get_num(rec, "deleted_rows_count", 0);
    avro_value_t arr;
    size_t np = 0;
    if (get_present(rec, "partitions", &arr) && avro_value_get_size(&arr, &np) != 0)
        return dsq_errf(err, errlen, "manifest list: %s: partitions unreadable", m->path);
    if (np == 0)
        return 0;
    dsq_ice_fsummary *parts = calloc(np, sizeof *parts);
    if (parts == NULL)
        return dsq_errf(err, errlen, "out of memory");
    m->parts = parts;
    m->nparts = np;
    for (size_t k = 0; k < np; k++) {
        avro_value_t el, cn;
        bool lo, hi;
        int cnull = 0;
        if (avro_value_get_by_index(&arr, k, &el, NULL) != 0 || !get_present(&el, "contains_null", &cn) ||
            avro_value_get_boolean(&cn, &cnull) != 0 || get_bytes(&el, "lower_bound", &parts[k].lower, &lo) != 0 ||
            get_bytes(&el, "upper_bound", &parts[k].upper, &hi) != 0)
            return dsq_errf(err, errlen, "manifest list: %s: partition summary %zu unreadable", m->path, k);
        parts[k].contains_null = cnull != 0;
        parts[k].has_bounds = lo && hi;
    }
    return 0;
}

int dsq_manifest_list_read(const void *p, size_t n, dsq_ice_mlist *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    return dsq_avro_read(p, n, mlist_one, out, err, errlen);
}

void dsq_ice_mlist_free(dsq_ice_mlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->files[i].path);
        dsq_ice_fsummary *parts = (dsq_ice_fsummary *)l->files[i].parts;
        for (size_t k = 0; k < l->files[i].nparts; k++) {
            dsq_buf_free(&parts[k].lower);
            dsq_buf_free(&parts[k].upper);
        }
        free(parts);
    }
    free(l->files);
    memset(l, 0, sizeof *l);
}

/* ---- reading a manifest's files ---------------------------------------------------------------- */

typedef struct fileref_acc {
    dsq_ice_fileref *v;
    size_t n;
} fileref_acc;

static int fileref_one(void *ud, avro_value_t *rec, char *err, size_t errlen)
{
    fileref_acc *a = ud;
    avro_value_t df, v;
    const char *path = NULL;
    size_t plen = 0;
    if (!get_present(rec, "data_file", &df) || !get_present(&df, "file_path", &v) ||
        avro_value_get_string(&v, &path, &plen) != 0 || plen < 2)
        return dsq_errf(err, errlen, "manifest: entry %zu has no data_file.file_path", a->n);
    dsq_ice_fileref *grown = realloc(a->v, (a->n + 1) * sizeof *grown);
    if (grown == NULL)
        return dsq_errf(err, errlen, "out of memory");
    a->v = grown;
    dsq_ice_fileref *f = &a->v[a->n];
    if ((f->path = strndup(path, plen - 1)) == NULL)
        return dsq_errf(err, errlen, "out of memory");
    a->n++;
    f->status = (int)get_num(rec, "status", DSQ_ICE_ADDED);
    f->content = (int)get_num(&df, "content", 0);
    f->record_count = get_num(&df, "record_count", 0);
    f->file_size = get_num(&df, "file_size_in_bytes", 0);
    return 0;
}

int dsq_manifest_files(const void *p, size_t n, dsq_ice_fileref **out, size_t *nout, char *err, size_t errlen)
{
    fileref_acc a = {0};
    int rc = dsq_avro_read(p, n, fileref_one, &a, err, errlen);
    *out = a.v;
    *nout = a.n;
    return rc;
}

void dsq_ice_filerefs_free(dsq_ice_fileref *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}
