/* parquet_write — lake/parquet's writer from the command line, for the
 * interop test with DuckDB (tests/interop/parquet.test.mjs).
 *
 *   parquet_write OUT.parquet < INPUT
 *
 * INPUT is JSON lines. The first is the schema and the options:
 *   {"columns": [{"name": "id", "type": "INT64", "logical": "TIMESTAMP_US",
 *                 "nullable": false, "field_id": 1}, ...],
 *    "options": {"codec": "zstd"|"none", "row_group_rows": N, "row_group_bytes": N,
 *                "page_bytes": N, "dictionary": true, "dict_max_bytes": N,
 *                "dict_max_entries": N, "stats_max_bytes": N}}
 * (types BOOLEAN, INT32, INT64, DOUBLE, BYTE_ARRAY; logical STRING or
 * TIMESTAMP_US), then one array of values a row: null; true/false; an
 * integer (or a decimal string, for any int64); a number, or "inf",
 * "-inf", "nan", "-0" for a DOUBLE; a string for a BYTE_ARRAY, or
 * {"hex": "00ff"} for bytes that are not text.
 *
 * Prints the writer's statistics as one JSON object on stdout: rows,
 * file_bytes, row_group_offsets, and per column values, nulls, nans,
 * min and max (hex of their Parquet encoding, or null), uncompressed and
 * compressed sizes. Exit status 0, or 1 with the reason on stderr. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lake/parquet.h"

#define MAX_COLS 64

static int die(const char *what, const char *detail)
{
    fprintf(stderr, "parquet_write: %s%s\n", what, detail);
    return 1;
}

static int parse_type(const char *s, dsq_pq_type *t)
{
    static const struct { const char *n; dsq_pq_type t; } map[] = {
        {"BOOLEAN", DSQ_PQ_BOOLEAN}, {"INT32", DSQ_PQ_INT32}, {"INT64", DSQ_PQ_INT64},
        {"DOUBLE", DSQ_PQ_DOUBLE}, {"BYTE_ARRAY", DSQ_PQ_BYTE_ARRAY},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(s, map[i].n) == 0) {
            *t = map[i].t;
            return 0;
        }
    return -1;
}

static int parse_schema(json_t *h, dsq_pq_column *cols, size_t *ncols, dsq_pq_options *o)
{
    json_t *jc = json_object_get(h, "columns");
    if (!json_is_array(jc) || json_array_size(jc) == 0 || json_array_size(jc) > MAX_COLS)
        return -1;
    *ncols = json_array_size(jc);
    for (size_t i = 0; i < *ncols; i++) {
        json_t *c = json_array_get(jc, i);
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *type = json_string_value(json_object_get(c, "type"));
        const char *logical = json_string_value(json_object_get(c, "logical"));
        json_t *fid = json_object_get(c, "field_id");
        if (name == NULL || type == NULL || parse_type(type, &cols[i].type) != 0)
            return -1;
        cols[i].name = name;
        cols[i].nullable = json_is_true(json_object_get(c, "nullable"));
        cols[i].field_id = json_is_integer(fid) ? (int32_t)json_integer_value(fid) : -1;
        cols[i].logical = DSQ_PQ_PLAIN_TYPE;
        if (logical != NULL && strcmp(logical, "STRING") == 0)
            cols[i].logical = DSQ_PQ_STRING;
        else if (logical != NULL && strcmp(logical, "TIMESTAMP_US") == 0)
            cols[i].logical = DSQ_PQ_TIMESTAMP_US;
        else if (logical != NULL)
            return -1;
    }
    json_t *jo = json_object_get(h, "options");
    const char *codec = json_string_value(json_object_get(jo, "codec"));
    if (codec != NULL)
        o->codec = strcmp(codec, "none") == 0 ? DSQ_PQ_UNCOMPRESSED : DSQ_PQ_ZSTD;
    json_t *v;
    if ((v = json_object_get(jo, "row_group_rows")) != NULL)
        o->row_group_rows = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(jo, "row_group_bytes")) != NULL)
        o->row_group_bytes = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(jo, "page_bytes")) != NULL)
        o->page_bytes = (size_t)json_integer_value(v);
    if ((v = json_object_get(jo, "dictionary")) != NULL)
        o->dictionary = json_is_true(v);
    if ((v = json_object_get(jo, "dict_max_bytes")) != NULL)
        o->dict_max_bytes = (size_t)json_integer_value(v);
    if ((v = json_object_get(jo, "dict_max_entries")) != NULL)
        o->dict_max_entries = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(jo, "stats_max_bytes")) != NULL)
        o->stats_max_bytes = (size_t)json_integer_value(v);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* One JSON value as the column's value; bytes decoded from hex go to *tmp
 * (freed by the caller). */
static int parse_value(json_t *j, const dsq_pq_column *c, dsq_pq_value *v, unsigned char **tmp)
{
    if (json_is_null(j)) {
        *v = dsq_pq_null();
    } else if (json_is_boolean(j)) {
        *v = dsq_pq_bool(json_is_true(j));
    } else if (json_is_integer(j)) {
        *v = c->type == DSQ_PQ_DOUBLE ? dsq_pq_double((double)json_integer_value(j))
                                     : dsq_pq_int(json_integer_value(j));
    } else if (json_is_real(j)) {
        *v = dsq_pq_double(json_real_value(j));
    } else if (json_is_string(j) && c->type == DSQ_PQ_DOUBLE) {
        const char *s = json_string_value(j);
        *v = dsq_pq_double(strcmp(s, "inf") == 0 ? INFINITY : strcmp(s, "-inf") == 0 ? -INFINITY
                           : strcmp(s, "nan") == 0 ? NAN : strcmp(s, "-0") == 0 ? -0.0 : strtod(s, NULL));
    } else if (json_is_string(j) && (c->type == DSQ_PQ_INT64 || c->type == DSQ_PQ_INT32)) {
        errno = 0;
        long long x = strtoll(json_string_value(j), NULL, 10);
        if (errno != 0)
            return -1;
        *v = dsq_pq_int(x);
    } else if (json_is_string(j)) {
        *v = dsq_pq_bytes(json_string_value(j), json_string_length(j));
    } else if (json_is_object(j) && json_is_string(json_object_get(j, "hex"))) {
        const char *h = json_string_value(json_object_get(j, "hex"));
        size_t n = strlen(h) / 2;
        *tmp = malloc(n + 1);
        if (*tmp == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
            if (a < 0 || b < 0)
                return -1;
            (*tmp)[i] = (unsigned char)(a << 4 | b);
        }
        *v = dsq_pq_bytes(*tmp, n);
    } else {
        return -1;
    }
    return 0;
}

static json_t *hex_of(const dsq_buf *b, bool has)
{
    if (!has)
        return json_null();
    char *s = malloc(b->len * 2 + 1);
    if (s == NULL)
        return json_null();
    for (size_t i = 0; i < b->len; i++)
        sprintf(s + 2 * i, "%02x", (unsigned char)b->data[i]);
    s[b->len * 2] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

static void print_stats(const dsq_pq_file_stats *st, const dsq_pq_column *cols)
{
    json_t *o = json_object();
    json_object_set_new(o, "rows", json_integer((json_int_t)st->rows));
    json_object_set_new(o, "file_bytes", json_integer((json_int_t)st->file_bytes));
    json_t *rg = json_array();
    for (size_t i = 0; i < st->nrow_groups; i++)
        json_array_append_new(rg, json_integer((json_int_t)st->row_group_offsets[i]));
    json_object_set_new(o, "row_group_offsets", rg);
    json_t *cs = json_array();
    for (size_t i = 0; i < st->ncols; i++) {
        const dsq_pq_col_stats *c = &st->cols[i];
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(cols[i].name));
        json_object_set_new(x, "values", json_integer((json_int_t)c->values));
        json_object_set_new(x, "nulls", json_integer((json_int_t)c->nulls));
        json_object_set_new(x, "nans", json_integer((json_int_t)c->nans));
        json_object_set_new(x, "min", hex_of(&c->min, c->has_minmax));
        json_object_set_new(x, "max", hex_of(&c->max, c->has_minmax));
        json_object_set_new(x, "uncompressed_bytes", json_integer((json_int_t)c->uncompressed_bytes));
        json_object_set_new(x, "compressed_bytes", json_integer((json_int_t)c->compressed_bytes));
        json_array_append_new(cs, x);
    }
    json_object_set_new(o, "columns", cs);
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return die("usage: parquet_write OUT.parquet < INPUT.jsonl", "");
    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, stdin) < 0)
        return die("no schema line", "");
    json_error_t je;
    json_t *head = json_loads(line, 0, &je);
    dsq_pq_column cols[MAX_COLS];
    size_t ncols = 0;
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    if (head == NULL || parse_schema(head, cols, &ncols, &o) != 0)
        return die("a bad schema line", "");
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return die("cannot create ", argv[1]);
    char err[256];
    dsq_pq_writer *w = dsq_pq_open_fd(cols, ncols, &o, fd, err, sizeof err);
    if (w == NULL)
        return die("open: ", err);
    size_t lineno = 1;
    while (getline(&line, &cap, stdin) > 0) {
        lineno++;
        json_t *row = json_loads(line, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
        if (!json_is_array(row) || json_array_size(row) != ncols) {
            fprintf(stderr, "parquet_write: line %zu is not a row of %zu values\n", lineno, ncols);
            return 1;
        }
        dsq_pq_value v[MAX_COLS];
        unsigned char *tmp[MAX_COLS] = {0};
        for (size_t i = 0; i < ncols; i++)
            if (parse_value(json_array_get(row, i), &cols[i], &v[i], &tmp[i]) != 0) {
                fprintf(stderr, "parquet_write: line %zu: a bad value for %s\n", lineno, cols[i].name);
                return 1;
            }
        if (dsq_pq_append(w, v) != 0) {
            fprintf(stderr, "parquet_write: line %zu: %s\n", lineno, dsq_pq_error(w));
            return 1;
        }
        for (size_t i = 0; i < ncols; i++)
            free(tmp[i]);
        json_decref(row);
    }
    dsq_pq_file_stats st;
    if (dsq_pq_close(w, &st, err, sizeof err) != 0)
        return die("close: ", err);
    if (fsync(fd) != 0 || close(fd) != 0)
        return die("cannot write the file", "");
    print_stats(&st, cols);
    dsq_pq_stats_free(&st);
    json_decref(head);
    free(line);
    return 0;
}
