/* parquet_read — lake/pqread's reader from the command line, for the
 * interop test with DuckDB (tests/interop/pqread.test.mjs).
 *
 *   parquet_read FILE.parquet
 *
 * The file is read into memory whole and opened. Prints JSON lines: first
 * the schema and footer,
 *   {"rows": N, "created_by": "...",
 *    "columns": [{"name", "type", "logical", "utc", "nullable", "field_id"}],
 *    "row_groups": [{"rows": N, "chunks": [{"codec", "null_count", "min", "max"}]}]}
 * (min and max: the statistics' min_value and max_value as values, or
 * null), then one array of values a row: null; true/false; an INT32 as a
 * number, an INT64 as a decimal string; a FLOAT or DOUBLE as a number, or
 * "nan", "inf", "-inf"; a STRING as a string, other bytes as
 * {"hex": "..."}; last {"pages": [[data pages of each chunk] a row group],
 * "dictionary": [[true when it had a dictionary page]]}. Exit status 0,
 * or 1 with the reader's reason on stderr. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "lake/pqread.h"

static int die(const char *what, const char *detail)
{
    fprintf(stderr, "parquet_read: %s%s\n", what, detail);
    return 1;
}

static json_t *hex_of(const uint8_t *p, size_t n)
{
    char *s = malloc(n * 2 + 1);
    if (s == NULL)
        return json_null();
    for (size_t i = 0; i < n; i++)
        sprintf(s + 2 * i, "%02x", p[i]);
    s[n * 2] = '\0';
    json_t *o = json_pack("{s:s}", "hex", s);
    free(s);
    return o;
}

static json_t *value_json(const dsq_pqr_column *c, const dsq_pq_value *v)
{
    char buf[32];
    switch (v->kind) {
    case DSQ_PQ_NULL: return json_null();
    case DSQ_PQ_BOOL: return json_boolean(v->u.b);
    case DSQ_PQ_INT:
        if (c->type == DSQ_PQR_INT32)
            return json_integer(v->u.i);
        snprintf(buf, sizeof buf, "%lld", (long long)v->u.i);
        return json_string(buf);
    case DSQ_PQ_DOUBLE_V:
        if (isnan(v->u.d))
            return json_string("nan");
        if (isinf(v->u.d))
            return json_string(v->u.d > 0 ? "inf" : "-inf");
        return json_real(v->u.d);
    case DSQ_PQ_BYTES: {
        const uint8_t *p = v->u.bytes.p;
        size_t n = v->u.bytes.n;
        if (c->logical == DSQ_PQ_STRING && dsq_utf8_valid(p, n))
            return json_stringn((const char *)p, n);
        return hex_of(p, n);
    }
    }
    return json_null();
}

static const char *type_str(dsq_pqr_type t)
{
    switch (t) {
    case DSQ_PQR_BOOLEAN: return "BOOLEAN";
    case DSQ_PQR_INT32: return "INT32";
    case DSQ_PQR_INT64: return "INT64";
    case DSQ_PQR_FLOAT: return "FLOAT";
    case DSQ_PQR_DOUBLE: return "DOUBLE";
    case DSQ_PQR_BYTE_ARRAY: return "BYTE_ARRAY";
    }
    return "?";
}

static json_t *bound_json(const dsq_pqr_column *c, const dsq_pqr_bound *b)
{
    dsq_pq_value v;
    if (dsq_pqr_bound_value(c, b, &v) != 0)
        return json_null();
    return value_json(c, &v);
}

static void print_line(json_t *j)
{
    json_dumpf(j, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
    fputc('\n', stdout);
    json_decref(j);
}

static void print_header(const dsq_pqr *r)
{
    json_t *cols = json_array();
    for (size_t i = 0; i < dsq_pqr_ncols(r); i++) {
        const dsq_pqr_column *c = dsq_pqr_column_at(r, i);
        const char *lg = c->logical == DSQ_PQ_STRING ? "STRING" : c->logical == DSQ_PQ_TIMESTAMP_US ? "TIMESTAMP_US" : NULL;
        json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:I}", "name", c->name, "type", type_str(c->type), "utc", c->utc,
                              "nullable", c->nullable, "field_id", (json_int_t)c->field_id);
        json_object_set_new(o, "logical", lg ? json_string(lg) : json_null());
        json_array_append_new(cols, o);
    }
    json_t *rgs = json_array();
    for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
        const dsq_pqr_row_group *rg = dsq_pqr_row_group_at(r, g);
        json_t *chunks = json_array();
        for (size_t i = 0; i < dsq_pqr_ncols(r); i++) {
            const dsq_pqr_column *c = dsq_pqr_column_at(r, i);
            const dsq_pqr_chunk *ch = &rg->chunks[i];
            json_t *o = json_pack("{s:i}", "codec", ch->codec);
            json_object_set_new(o, "null_count",
                                ch->stats.has_null_count ? json_integer(ch->stats.null_count) : json_null());
            json_object_set_new(o, "min", bound_json(c, &ch->stats.min_value));
            json_object_set_new(o, "max", bound_json(c, &ch->stats.max_value));
            json_array_append_new(chunks, o);
        }
        json_array_append_new(rgs, json_pack("{s:I, s:o}", "rows", (json_int_t)rg->num_rows, "chunks", chunks));
    }
    print_line(json_pack("{s:I, s:s, s:o, s:o}", "rows", (json_int_t)dsq_pqr_num_rows(r), "created_by",
                         dsq_pqr_created_by(r), "columns", cols, "row_groups", rgs));
}

/* Each row group: every column read, then its rows printed. */
static int print_rows(dsq_pqr *r)
{
    size_t ncols = dsq_pqr_ncols(r);
    dsq_pqr_values *v = calloc(ncols ? ncols : 1, sizeof *v);
    json_t *pages = json_array(), *dicts = json_array();
    int rc = 0;
    for (size_t g = 0; g < dsq_pqr_nrow_groups(r) && rc == 0; g++) {
        json_t *pg = json_array(), *dc = json_array();
        for (size_t i = 0; i < ncols; i++) {
            if (dsq_pqr_col_read(r, g, i, &v[i]) != 0) {
                rc = die("", dsq_pqr_error(r));
                break;
            }
            json_array_append_new(pg, json_integer((json_int_t)v[i].data_pages));
            json_array_append_new(dc, json_boolean(v[i].dictionary));
        }
        json_array_append_new(pages, pg);
        json_array_append_new(dicts, dc);
        size_t n = (size_t)dsq_pqr_row_group_at(r, g)->num_rows;
        for (size_t k = 0; k < n && rc == 0; k++) {
            json_t *row = json_array();
            for (size_t i = 0; i < ncols; i++)
                json_array_append_new(row, value_json(dsq_pqr_column_at(r, i), &v[i].v[k]));
            print_line(row);
        }
        for (size_t i = 0; i < ncols; i++)
            dsq_pqr_values_free(&v[i]);
    }
    if (rc == 0)
        print_line(json_pack("{s:o, s:o}", "pages", pages, "dictionary", dicts));
    else {
        json_decref(pages);
        json_decref(dicts);
    }
    free(v);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return die("usage: parquet_read FILE.parquet", "");
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL)
        return die("cannot open ", argv[1]);
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t k;
    while (buf != NULL && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return die("out of memory", "");
    char err[256];
    dsq_pqr *r = dsq_pqr_open(buf, n, err, sizeof err);
    if (r == NULL) {
        free(buf);
        return die("", err);
    }
    print_header(r);
    int rc = print_rows(r);
    dsq_pqr_close(r);
    free(buf);
    return rc;
}
