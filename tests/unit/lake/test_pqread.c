/* Unit tests: lake/pqread (the Parquet reader). The compact-protocol
 * skipper and the hybrid decoder against hand-made bytes and the writer's
 * encoder; files from lake/parquet's writer read back value for value,
 * their statistics equal to the writer's own; hand-made footers and pages
 * for what the writer never writes (V2 pages, RLE booleans, refusals);
 * then hostile input: every prefix of a file, every footer cut short,
 * byte flips all over a file. DuckDB's files are read in
 * tests/interop/pqread.test.mjs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "lake/parquet.h"
#include "lake/pqread.h"

/* ---- helpers ---- */

static int mem_sink(void *ctx, const void *p, size_t n) { return dsq_buf_append(ctx, p, n); }

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A copy of p[0..n) in a block of exactly n bytes: ASan sees a read past it. */
static uint8_t *exact_copy(const void *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    cr_assert_not_null(q);
    if (n > 0)
        memcpy(q, p, n);
    return q;
}

/* Read every column of every row group; a read that succeeds must give
 * one value a row, each of its column's kind. The reads that failed. */
static int read_all_consistent(dsq_pqr *r)
{
    int failed = 0;
    for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
        const dsq_pqr_row_group *rg = dsq_pqr_row_group_at(r, g);
        for (size_t c = 0; c < dsq_pqr_ncols(r); c++) {
            const dsq_pqr_column *col = dsq_pqr_column_at(r, c);
            dsq_pqr_values v;
            if (dsq_pqr_col_read(r, g, c, &v) != 0) {
                cr_assert_null(v.v, "a failed read leaves nothing");
                cr_assert_neq(dsq_pqr_error(r)[0], '\0');
                failed++;
                continue;
            }
            cr_assert_eq((int64_t)v.n, rg->num_rows);
            dsq_pq_kind want = col->type == DSQ_PQR_BOOLEAN                                  ? DSQ_PQ_BOOL
                               : col->type == DSQ_PQR_INT32 || col->type == DSQ_PQR_INT64 ? DSQ_PQ_INT
                               : col->type == DSQ_PQR_BYTE_ARRAY                            ? DSQ_PQ_BYTES
                                                                                            : DSQ_PQ_DOUBLE_V;
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < v.n; i++) {
                cr_assert(v.v[i].kind == want || (col->nullable && v.v[i].kind == DSQ_PQ_NULL),
                          "row %zu of %s: kind %d", i, col->name, v.v[i].kind);
                if (v.v[i].kind == DSQ_PQ_BYTES) /* touch every byte: ASan checks they are ours */
                    for (size_t k = 0; k < v.v[i].u.bytes.n; k++)
                        sink ^= ((const uint8_t *)v.v[i].u.bytes.p)[k];
            }
            (void)sink;
            dsq_pqr_values_free(&v);
        }
    }
    return failed;
}

/* ---- Thrift compact protocol: skipping ---- */

Test(pqread_thrift, skips_every_type)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &b);
    dsq_tc_i32(&t, 1, -5);
    dsq_tc_i64(&t, 2, INT64_MIN);
    dsq_tc_bool(&t, 3, true);
    dsq_tc_binary(&t, 4, "hello", 5);
    dsq_tc_field(&t, 5, DSQ_TC_DOUBLE);
    dsq_buf_append(&b, "\0\0\0\0\0\0\xf0\x3f", 8);
    dsq_tc_field(&t, 6, DSQ_TC_BYTE);
    dsq_buf_append(&b, "\x7f", 1);
    dsq_tc_list_begin(&t, 7, DSQ_TC_TRUE, 3); /* bools in a list: a byte each */
    dsq_buf_append(&b, "\x01\x02\x01", 3);
    dsq_tc_list_begin(&t, 8, DSQ_TC_STRUCT, 20);
    for (int i = 0; i < 20; i++) {
        dsq_tc_elem_struct_begin(&t);
        dsq_tc_i32(&t, 300, i); /* a long-form field id */
        dsq_tc_struct_end(&t);
    }
    dsq_tc_field(&t, 9, 11); /* a map<i32, binary> of 2 */
    dsq_buf_append(&b, "\x02\x58\x02\x01\x61\x04\x01\x62", 8);
    dsq_tc_field(&t, 10, 11); /* an empty map: its size alone */
    dsq_buf_append(&b, "\x00", 1);
    dsq_tc_field(&t, 11, 10); /* a set of i16 */
    dsq_buf_append(&b, "\x24\x02\x04", 3);
    dsq_tc_struct_begin(&t, 12);
    dsq_tc_list_begin(&t, 1, DSQ_TC_LIST, 1); /* a list of lists */
    dsq_buf_append(&b, "\x25\x02\x04", 3); /* [[1, 2]] */
    dsq_tc_struct_end(&t);
    dsq_tc_struct_end(&t);
    cr_assert_eq(t.err, 0);
    cr_assert_eq(dsq_pqr_tc_skip(b.data, b.len, DSQ_TC_STRUCT), (long)b.len);
    for (size_t n = 0; n < b.len; n++) { /* every prefix is short */
        uint8_t *q = exact_copy(b.data, n);
        cr_assert_eq(dsq_pqr_tc_skip(q, n, DSQ_TC_STRUCT), -1, "prefix %zu", n);
        free(q);
    }
    dsq_buf_free(&b);
}

Test(pqread_thrift, refuses_bad_input)
{
    /* A binary longer than the bytes left. */
    static const uint8_t longbin[] = {0x18, 0x7f, 'a', 0x00};
    cr_assert_eq(dsq_pqr_tc_skip(longbin, sizeof longbin, DSQ_TC_STRUCT), -1);
    /* A list claiming more elements than bytes. */
    static const uint8_t longlist[] = {0x19, 0xf5, 0x80, 0x80, 0x04, 0x00};
    cr_assert_eq(dsq_pqr_tc_skip(longlist, sizeof longlist, DSQ_TC_STRUCT), -1);
    /* A varint of 11 bytes. */
    static const uint8_t longvar[] = {0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00};
    cr_assert_eq(dsq_pqr_tc_skip(longvar, sizeof longvar, DSQ_TC_STRUCT), -1);
    /* Unknown types 13, 14, 15. */
    static const uint8_t bad[] = {0x1d, 0x00};
    cr_assert_eq(dsq_pqr_tc_skip(bad, sizeof bad, DSQ_TC_STRUCT), -1);
    /* Nesting: DEPTH structs deep is fine, one more is not. */
    uint8_t deep[2 * DSQ_PQR_TC_DEPTH + 4];
    for (int depth = DSQ_PQR_TC_DEPTH; depth <= DSQ_PQR_TC_DEPTH + 1; depth++) {
        size_t n = 0;
        for (int i = 1; i < depth; i++)
            deep[n++] = 0x1c; /* field 1, a struct */
        for (int i = 0; i < depth; i++)
            deep[n++] = 0x00;
        long rc = dsq_pqr_tc_skip(deep, n, DSQ_TC_STRUCT);
        cr_assert_eq(rc, depth == DSQ_PQR_TC_DEPTH ? (long)n : -1, "depth %d: %ld", depth, rc);
    }
    /* Lists of lists nest too. */
    uint8_t lists[200];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        lists[n++] = 0x19; /* one list element of type list */
    lists[n++] = 0x00;
    cr_assert_eq(dsq_pqr_tc_skip(lists, n, DSQ_TC_LIST), -1);
}

/* ---- the hybrid ---- */

Test(pqread_rle, round_trips_the_writers_encoding)
{
    uint32_t v[1000], got[1000];
    unsigned seed = 7;
    for (int w = 0; w <= 32; w++) {
        uint64_t lim = w == 32 ? 0xffffffffu : ((uint64_t)1 << w) - 1;
        for (int pattern = 0; pattern < 3; pattern++) {
            size_t n = 1 + (size_t)(w * 31 + pattern * 97) % 1000;
            for (size_t i = 0; i < n; i++) {
                seed = seed * 1103515245u + 12345u;
                uint32_t x = seed >> 3;
                if (pattern == 1 && i % 40 < 30 && i > 0)
                    x = v[i - 1]; /* long runs among packed stretches */
                if (pattern == 2)
                    x = (uint32_t)(i / 9); /* runs of 9 */
                v[i] = (uint32_t)(x & lim);
            }
            dsq_buf b = DSQ_BUF_INIT;
            cr_assert_eq(dsq_pq_rle_hybrid(&b, v, n, w), 0);
            uint8_t *q = exact_copy(b.data, b.len);
            memset(got, 0xee, sizeof got);
            cr_assert_eq(dsq_pqr_rle_decode(q, b.len, w, got, n), 0, "width %d pattern %d", w, pattern);
            cr_assert_eq(memcmp(got, v, n * sizeof *v), 0, "width %d pattern %d", w, pattern);
            /* Asking for more than there is fails (unless a padded group
             * holds them: only up to the next multiple of 8). */
            if (w > 0 && n % 8 == 0)
                cr_assert_eq(dsq_pqr_rle_decode(q, b.len, w, got, n + 9), -1);
            free(q);
            dsq_buf_free(&b);
        }
    }
}

Test(pqread_rle, malformed_runs)
{
    uint32_t out[64];
    /* An RLE run's value wider than the bit width. */
    static const uint8_t wide[] = {0x10, 0x05}; /* 8 x 5 at width 2 */
    cr_assert_eq(dsq_pqr_rle_decode(wide, sizeof wide, 2, out, 8), -1);
    cr_assert_eq(dsq_pqr_rle_decode(wide, sizeof wide, 3, out, 8), 0);
    cr_assert_eq(out[7], 5u);
    /* An RLE run without its value byte. */
    static const uint8_t novalue[] = {0x10};
    cr_assert_eq(dsq_pqr_rle_decode(novalue, sizeof novalue, 3, out, 8), -1);
    /* A packed run cut short gives what it holds, and no more. */
    static const uint8_t cut[] = {0x05, 0xff}; /* 2 groups at width 1 claimed, 1 byte there */
    cr_assert_eq(dsq_pqr_rle_decode(cut, sizeof cut, 1, out, 8), 0);
    cr_assert_eq(dsq_pqr_rle_decode(cut, sizeof cut, 1, out, 9), -1);
    /* Width 0: every value 0, no bytes. */
    static const uint8_t zero[] = {0x03};
    cr_assert_eq(dsq_pqr_rle_decode(zero, sizeof zero, 0, out, 8), 0);
    cr_assert_eq(out[0], 0u);
    cr_assert_eq(dsq_pqr_rle_decode(zero, sizeof zero, 33, out, 1), -1);
    /* Nothing at all. */
    cr_assert_eq(dsq_pqr_rle_decode(zero, 0, 1, out, 1), -1);
    cr_assert_eq(dsq_pqr_rle_decode(zero, 0, 1, out, 0), 0);
}

/* ---- files from the writer ---- */

static const dsq_pq_column COLS[] = {
    {"id", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, 1},
    {"i32", DSQ_PQ_INT32, DSQ_PQ_PLAIN_TYPE, true, 2},
    {"txt", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, 3},     /* three values: a dictionary */
    {"uniq", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, false, 4},   /* past the dictionary's limits: PLAIN */
    {"mixed", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_PLAIN_TYPE, true, -1}, /* a dictionary but in group 1 */
    {"dbl", DSQ_PQ_DOUBLE, DSQ_PQ_PLAIN_TYPE, true, 6},
    {"flag", DSQ_PQ_BOOLEAN, DSQ_PQ_PLAIN_TYPE, true, 7},
    {"ts", DSQ_PQ_INT64, DSQ_PQ_TIMESTAMP_US, true, 8},
    {"bit", DSQ_PQ_BOOLEAN, DSQ_PQ_PLAIN_TYPE, false, 9},
};
#define NCOLS (sizeof COLS / sizeof COLS[0])

/* Row r's value of column c; bytes go to buf (64 bytes). */
static dsq_pq_value gen(size_t r, size_t c, char *buf)
{
    static const char *const txt[] = {"", "red", "gr\xc3\xbcn"};
    switch (c) {
    case 0: return dsq_pq_int(r == 0 ? INT64_MAX : r == 1 ? INT64_MIN : (int64_t)r * 7919 - 1000000);
    case 1:
        if (r % 5 == 0)
            return dsq_pq_null();
        return dsq_pq_int(r % 17 == 1 ? INT32_MIN : r % 17 == 2 ? INT32_MAX : (int64_t)r * 31 - 500);
    case 2: return r % 4 == 3 ? dsq_pq_null() : dsq_pq_str(txt[r % 3]);
    case 3: {
        int n = snprintf(buf, 64, "u%zu-%.*s", r, (int)(r % 13), "xxxxxxxxxxxxx");
        return dsq_pq_bytes(buf, (size_t)n);
    }
    case 4: {
        if (r % 6 == 0)
            return dsq_pq_null();
        size_t n = r % 4;
        bool uniq = r >= 100 && r < 200;
        buf[0] = (char)(uniq ? r : r % 3);
        buf[1] = 0;
        buf[2] = (char)(uniq ? r >> 8 : 0xff);
        return dsq_pq_bytes(buf, n);
    }
    case 5:
        switch (r % 9) {
        case 0: return dsq_pq_null();
        case 1: return dsq_pq_double(NAN);
        case 2: return dsq_pq_double(-0.0);
        case 3: return dsq_pq_double(r % 2 ? INFINITY : -INFINITY);
        default: return dsq_pq_double((double)r / 8.0 - 3);
        }
    case 6: return r % 7 == 0 ? dsq_pq_null() : dsq_pq_bool(r % 3 == 0);
    case 7: return r % 10 == 9 ? dsq_pq_null() : dsq_pq_int(1700000000000000 + (int64_t)r * 1000003);
    case 8: return dsq_pq_bool((r * 7) % 5 < 2);
    }
    return dsq_pq_null();
}

static void assert_value(const dsq_pq_value *got, const dsq_pq_value *want, size_t r, const char *col)
{
    cr_assert_eq(got->kind, want->kind, "row %zu of %s: kind %d, want %d", r, col, got->kind, want->kind);
    switch (want->kind) {
    case DSQ_PQ_NULL: break;
    case DSQ_PQ_INT: cr_assert_eq(got->u.i, want->u.i, "row %zu of %s", r, col); break;
    case DSQ_PQ_DOUBLE_V:
        cr_assert(memcmp(&got->u.d, &want->u.d, 8) == 0, "row %zu of %s: %g, want %g (bit for bit)", r, col,
                  got->u.d, want->u.d);
        break;
    case DSQ_PQ_BOOL: cr_assert_eq(got->u.b, want->u.b, "row %zu of %s", r, col); break;
    case DSQ_PQ_BYTES:
        cr_assert_eq(got->u.bytes.n, want->u.bytes.n, "row %zu of %s: length", r, col);
        cr_assert(got->u.bytes.n == 0 || memcmp(got->u.bytes.p, want->u.bytes.p, want->u.bytes.n) == 0,
                  "row %zu of %s: bytes", r, col);
        break;
    }
}

/* A file of n rows of gen(), written with o; its statistics into st. */
static void write_gen(dsq_buf *out, size_t n, const dsq_pq_options *o, dsq_pq_file_stats *st)
{
    char err[128];
    dsq_pq_writer *w = dsq_pq_open(COLS, NCOLS, o, mem_sink, out, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    for (size_t r = 0; r < n; r++) {
        char bufs[NCOLS][64];
        dsq_pq_value row[NCOLS];
        for (size_t c = 0; c < NCOLS; c++)
            row[c] = gen(r, c, bufs[c]);
        cr_assert_eq(dsq_pq_append(w, row), 0, "%s", dsq_pq_error(w));
    }
    cr_assert_eq(dsq_pq_close(w, st, err, sizeof err), 0, "%s", err);
}

/* -1, 0, 1 as the column's order has a before b (-0.0 and +0.0 equal). */
static int bound_cmp(const dsq_pqr_column *c, const dsq_pqr_bound *a, const dsq_pqr_bound *b)
{
    dsq_pq_value x, y;
    cr_assert_eq(dsq_pqr_bound_value(c, a, &x), 0);
    cr_assert_eq(dsq_pqr_bound_value(c, b, &y), 0);
    switch (x.kind) {
    case DSQ_PQ_INT: return (x.u.i > y.u.i) - (x.u.i < y.u.i);
    case DSQ_PQ_DOUBLE_V: return (x.u.d > y.u.d) - (x.u.d < y.u.d);
    case DSQ_PQ_BOOL: return (int)x.u.b - (int)y.u.b;
    case DSQ_PQ_BYTES: {
        size_t n = x.u.bytes.n < y.u.bytes.n ? x.u.bytes.n : y.u.bytes.n;
        int k = n ? memcmp(x.u.bytes.p, y.u.bytes.p, n) : 0;
        return k != 0 ? k : (x.u.bytes.n > y.u.bytes.n) - (x.u.bytes.n < y.u.bytes.n);
    }
    default: return 0;
    }
}

static void assert_bound_is(const dsq_pqr_bound *b, const dsq_buf *want, const char *what, const char *col)
{
    cr_assert(b->set, "%s of %s", what, col);
    cr_assert_eq(b->n, want->len, "%s of %s: length", what, col);
    cr_assert(b->n == 0 || memcmp(b->p, want->data, b->n) == 0, "%s of %s: bytes", what, col);
}

/* The footer as read equals what the writer said of the file. */
static void check_stats(const dsq_pqr *r, const dsq_pq_file_stats *st)
{
    cr_assert_eq(dsq_pqr_num_rows(r), (int64_t)st->rows);
    cr_assert_eq(dsq_pqr_nrow_groups(r), st->nrow_groups);
    for (size_t g = 0; g < st->nrow_groups; g++)
        cr_assert_eq(dsq_pqr_row_group_at(r, g)->file_offset, (int64_t)st->row_group_offsets[g]);
    for (size_t c = 0; c < NCOLS; c++) {
        const dsq_pqr_column *col = dsq_pqr_column_at(r, c);
        const dsq_pq_col_stats *cs = &st->cols[c];
        uint64_t values = 0, nulls = 0, nans = 0, comp = 0, uncomp = 0;
        const dsq_pqr_bound *min = NULL, *max = NULL;
        for (size_t g = 0; g < st->nrow_groups; g++) {
            const dsq_pqr_chunk *ch = &dsq_pqr_row_group_at(r, g)->chunks[c];
            const dsq_pqr_stats *s = &ch->stats;
            cr_assert(s->has_null_count);
            values += (uint64_t)ch->num_values;
            nulls += (uint64_t)s->null_count;
            cr_assert_eq(s->has_nan_count, col->type == DSQ_PQR_DOUBLE, "nan_count on DOUBLE only");
            nans += s->has_nan_count ? (uint64_t)s->nan_count : 0;
            comp += (uint64_t)ch->total_compressed_size;
            uncomp += (uint64_t)ch->total_uncompressed_size;
            cr_assert_eq(ch->codec, (int)(st->file_bytes ? ch->codec : 0));
            if (!s->min_value.set)
                continue;
            cr_assert(s->max_value.set && s->min_exact && s->max_exact);
            /* The deprecated pair: the same, but for byte arrays (left out). */
            cr_assert_eq(s->min.set, col->type != DSQ_PQR_BYTE_ARRAY, "%s", col->name);
            if (s->min.set) {
                cr_assert(s->min.n == s->min_value.n && memcmp(s->min.p, s->min_value.p, s->min.n) == 0);
                cr_assert(s->max.n == s->max_value.n && memcmp(s->max.p, s->max_value.p, s->max.n) == 0);
            }
            if (min == NULL || bound_cmp(col, &s->min_value, min) < 0)
                min = &s->min_value;
            if (max == NULL || bound_cmp(col, &s->max_value, max) > 0)
                max = &s->max_value;
        }
        cr_assert_eq(values, cs->values, "%s", col->name);
        cr_assert_eq(nulls, cs->nulls, "%s", col->name);
        cr_assert_eq(nans, cs->nans, "%s", col->name);
        cr_assert_eq(comp, cs->compressed_bytes, "%s", col->name);
        cr_assert_eq(uncomp, cs->uncompressed_bytes, "%s", col->name);
        cr_assert_eq(min != NULL, cs->has_minmax, "%s", col->name);
        if (min != NULL) {
            assert_bound_is(min, &cs->min, "min", col->name);
            assert_bound_is(max, &cs->max, "max", col->name);
        }
    }
}

static void check_schema(const dsq_pqr *r)
{
    cr_assert_eq(dsq_pqr_ncols(r), NCOLS);
    for (size_t c = 0; c < NCOLS; c++) {
        const dsq_pqr_column *col = dsq_pqr_column_at(r, c);
        cr_assert_str_eq(col->name, COLS[c].name);
        cr_assert_eq((int)col->type, (int)COLS[c].type);
        cr_assert_eq(col->logical, COLS[c].logical, "%s", col->name);
        cr_assert_eq(col->nullable, COLS[c].nullable, "%s", col->name);
        cr_assert_eq(col->field_id, COLS[c].field_id, "%s", col->name);
        cr_assert(col->type_order, "%s: the writer says TypeDefinedOrder", col->name);
        cr_assert_eq(dsq_pqr_find(r, COLS[c].name), (int)c);
        if (COLS[c].logical == DSQ_PQ_TIMESTAMP_US)
            cr_assert(col->utc);
    }
    cr_assert_null(dsq_pqr_column_at(r, NCOLS));
    cr_assert_eq(dsq_pqr_find(r, "nope"), -1);
    cr_assert_str_eq(dsq_pqr_created_by(r), "dosqld version " DSQ_VERSION);
}

/* Every value of every column back as gen() made it. */
static void check_values(dsq_pqr *r, size_t n)
{
    for (size_t c = 0; c < NCOLS; c++) {
        size_t row = 0;
        for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
            dsq_pqr_values v;
            cr_assert_eq(dsq_pqr_col_read(r, g, c, &v), 0, "%s", dsq_pqr_error(r));
            cr_assert_eq((int64_t)v.n, dsq_pqr_row_group_at(r, g)->num_rows);
            for (size_t i = 0; i < v.n; i++, row++) {
                char buf[64];
                dsq_pq_value want = gen(row, c, buf);
                assert_value(&v.v[i], &want, row, COLS[c].name);
            }
            dsq_pqr_values_free(&v);
        }
        cr_assert_eq(row, n);
    }
}

static void round_trip(dsq_pq_codec codec, bool small)
{
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.codec = codec;
    size_t n = 300;
    if (small) {
        o.row_group_rows = 100;
        o.page_bytes = 64;
        o.dict_max_entries = 20;
    }
    dsq_buf f = DSQ_BUF_INIT;
    dsq_pq_file_stats st;
    write_gen(&f, n, &o, &st);
    uint8_t *p = exact_copy(f.data, f.len);
    char err[256];
    dsq_pqr *r = dsq_pqr_open(p, f.len, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    check_schema(r);
    check_stats(r, &st);
    check_values(r, n);
    cr_assert_eq(dsq_pqr_nrow_groups(r), small ? 3u : 1u);
    for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
        const dsq_pqr_chunk *ch = dsq_pqr_row_group_at(r, g)->chunks;
        cr_assert_eq(ch[0].codec, (int)codec);
        cr_assert_geq(ch[2].dictionary_page_offset, 4, "three strings: a dictionary");
        cr_assert_lt(ch[2].dictionary_page_offset, ch[2].data_page_offset);
        cr_assert_eq(ch[0].dictionary_page_offset, -1, "no dictionary for integers");
        if (small) {
            cr_assert_eq(ch[3].dictionary_page_offset, -1, "100 unique strings overflow 20 entries");
            cr_assert_eq(ch[4].dictionary_page_offset == -1, g == 1, "the middle group falls back");
            cr_assert_gt(ch[0].total_uncompressed_size, 8 * 64, "several pages a chunk");
        }
        dsq_pqr_values v0, v2;
        cr_assert_eq(dsq_pqr_col_read(r, g, 0, &v0), 0);
        cr_assert_eq(dsq_pqr_col_read(r, g, 2, &v2), 0);
        cr_assert_eq(v0.data_pages > 1, small, "pages of 64 bytes: %zu", v0.data_pages);
        cr_assert(!v0.dictionary && v2.dictionary);
        dsq_pqr_values_free(&v0);
        dsq_pqr_values_free(&v2);
    }
    /* A bound as a value. */
    dsq_pq_value v;
    const dsq_pqr_column *id = dsq_pqr_column_at(r, 0);
    cr_assert_eq(dsq_pqr_bound_value(id, &dsq_pqr_row_group_at(r, 0)->chunks[0].stats.min_value, &v), 0);
    cr_assert_eq(v.kind, DSQ_PQ_INT);
    cr_assert_eq(v.u.i, INT64_MIN);
    dsq_pqr_bound none = {0};
    cr_assert_eq(dsq_pqr_bound_value(id, &none, &v), -1);
    /* Out of range. */
    dsq_pqr_values vals;
    cr_assert_eq(dsq_pqr_col_read(r, 99, 0, &vals), -1);
    cr_assert_eq(dsq_pqr_col_read(r, 0, NCOLS, &vals), -1);
    dsq_pqr_close(r);
    free(p);
    dsq_pq_stats_free(&st);
    dsq_buf_free(&f);
}

Test(pqread_file, round_trip_zstd) { round_trip(DSQ_PQ_ZSTD, false); }
Test(pqread_file, round_trip_uncompressed) { round_trip(DSQ_PQ_UNCOMPRESSED, false); }
Test(pqread_file, round_trip_zstd_groups_pages_fallback) { round_trip(DSQ_PQ_ZSTD, true); }
Test(pqread_file, round_trip_uncompressed_groups_pages_fallback) { round_trip(DSQ_PQ_UNCOMPRESSED, true); }

Test(pqread_file, values_outlive_the_reader_when_compressed)
{
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    dsq_buf f = DSQ_BUF_INIT;
    dsq_pq_file_stats st;
    write_gen(&f, 50, &o, &st);
    char err[256];
    dsq_pqr *r = dsq_pqr_open(f.data, f.len, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    dsq_pqr_values a, b;
    cr_assert_eq(dsq_pqr_col_read(r, 0, 3, &a), 0, "%s", dsq_pqr_error(r)); /* PLAIN strings */
    cr_assert_eq(dsq_pqr_col_read(r, 0, 2, &b), 0, "%s", dsq_pqr_error(r)); /* dictionary strings */
    dsq_pqr_close(r);
    memset(f.data, 0, f.len); /* zstd pages: the values hold their own copies */
    for (size_t i = 0; i < 50; i++) {
        char buf[64];
        dsq_pq_value w = gen(i, 3, buf);
        assert_value(&a.v[i], &w, i, "uniq");
        w = gen(i, 2, buf);
        assert_value(&b.v[i], &w, i, "txt");
    }
    dsq_pqr_values_free(&a);
    dsq_pqr_values_free(&b);
    dsq_pq_stats_free(&st);
    dsq_buf_free(&f);
}

Test(pqread_file, all_nulls_and_an_empty_file)
{
    dsq_pq_column cols[] = {{"a", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, true, 1},
                            {"s", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, 2}};
    for (int rows = 0; rows <= 1000; rows += 1000) {
        dsq_buf f = DSQ_BUF_INIT;
        char err[256];
        dsq_pq_writer *w = dsq_pq_open(cols, 2, NULL, mem_sink, &f, err, sizeof err);
        cr_assert_not_null(w);
        dsq_pq_value row[2] = {dsq_pq_null(), dsq_pq_null()};
        for (int i = 0; i < rows; i++)
            cr_assert_eq(dsq_pq_append(w, row), 0);
        cr_assert_eq(dsq_pq_close(w, NULL, err, sizeof err), 0, "%s", err);
        dsq_pqr *r = dsq_pqr_open(f.data, f.len, err, sizeof err);
        cr_assert_not_null(r, "%s", err);
        cr_assert_eq(dsq_pqr_num_rows(r), rows);
        cr_assert_eq(dsq_pqr_nrow_groups(r), rows ? 1u : 0u);
        for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
            const dsq_pqr_stats *s = &dsq_pqr_row_group_at(r, g)->chunks[1].stats;
            cr_assert(!s->min_value.set && s->null_count == rows, "no bounds for nulls");
            for (size_t c = 0; c < 2; c++) {
                dsq_pqr_values v;
                cr_assert_eq(dsq_pqr_col_read(r, g, c, &v), 0, "%s", dsq_pqr_error(r));
                cr_assert_eq(v.n, (size_t)rows);
                for (size_t i = 0; i < v.n; i++)
                    cr_assert_eq(v.v[i].kind, DSQ_PQ_NULL);
                dsq_pqr_values_free(&v);
            }
        }
        dsq_pqr_close(r);
        dsq_buf_free(&f);
    }
}

/* ---- hand-made files: what the writer never writes ---- */

/* A file: "PAR1", the pages given, a footer of one row group whose
 * columns (flat, given by type and repetition) have one chunk each at
 * the offsets given, then the tail. */
typedef struct hcol {
    const char *name;
    int type, rep, children, codec;
    int64_t off, len, dict_off;
} hcol;

static void hand_file(dsq_buf *f, const dsq_buf *pages, const hcol *cols, size_t ncols, int64_t rows,
                      int root_children)
{
    f->len = 0;
    dsq_buf_append(f, "PAR1", 4);
    dsq_buf_append(f, pages->data, pages->len);
    dsq_buf footer = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &footer);
    dsq_tc_i32(&t, 1, 2);
    dsq_tc_list_begin(&t, 2, DSQ_TC_STRUCT, ncols + 1);
    dsq_tc_elem_struct_begin(&t);
    dsq_tc_binary(&t, 4, "root", 4);
    dsq_tc_i32(&t, 5, root_children);
    dsq_tc_struct_end(&t);
    for (size_t i = 0; i < ncols; i++) {
        dsq_tc_elem_struct_begin(&t);
        if (cols[i].type >= 0)
            dsq_tc_i32(&t, 1, cols[i].type);
        dsq_tc_i32(&t, 3, cols[i].rep);
        dsq_tc_binary(&t, 4, cols[i].name, strlen(cols[i].name));
        if (cols[i].children > 0)
            dsq_tc_i32(&t, 5, cols[i].children);
        dsq_tc_struct_end(&t);
    }
    dsq_tc_i64(&t, 3, rows);
    dsq_tc_list_begin(&t, 4, DSQ_TC_STRUCT, 1);
    dsq_tc_elem_struct_begin(&t);
    dsq_tc_list_begin(&t, 1, DSQ_TC_STRUCT, ncols);
    for (size_t i = 0; i < ncols; i++) {
        dsq_tc_elem_struct_begin(&t);
        dsq_tc_i64(&t, 2, 0);
        dsq_tc_struct_begin(&t, 3);
        dsq_tc_i32(&t, 1, cols[i].type);
        dsq_tc_list_begin(&t, 2, DSQ_TC_I32, 1);
        dsq_tc_elem_i32(&t, 0);
        dsq_tc_list_begin(&t, 3, DSQ_TC_BINARY, 1);
        dsq_tc_elem_binary(&t, cols[i].name, strlen(cols[i].name));
        dsq_tc_i32(&t, 4, cols[i].codec);
        dsq_tc_i64(&t, 5, rows);
        dsq_tc_i64(&t, 6, cols[i].len);
        dsq_tc_i64(&t, 7, cols[i].len);
        dsq_tc_field(&t, 8, DSQ_TC_LIST); /* key_value_metadata, skipped: a list of one KeyValue */
        dsq_buf_append(&footer, "\x1c\x18\x01k\x00", 5);
        dsq_tc_i64(&t, 9, 4 + cols[i].off);
        if (cols[i].dict_off >= 0)
            dsq_tc_i64(&t, 11, 4 + cols[i].dict_off);
        dsq_tc_struct_end(&t);
        dsq_tc_struct_end(&t);
    }
    dsq_tc_i64(&t, 2, 0);
    dsq_tc_i64(&t, 3, rows);
    dsq_tc_struct_end(&t);
    dsq_tc_struct_end(&t);
    cr_assert_eq(t.err, 0);
    dsq_buf_append(f, footer.data, footer.len);
    uint8_t tail[8];
    put_le32(tail, (uint32_t)footer.len);
    memcpy(tail + 4, "PAR1", 4);
    dsq_buf_append(f, tail, 8);
    dsq_buf_free(&footer);
}

/* A page after its header into out: body is the uncompressed values
 * (for V2, after levels: the definition levels, never compressed). */
typedef struct hpage {
    int type;           /* 0 data, 1 index, 2 dictionary, 3 data V2 */
    int nvalues, enc;
    bool zstd;          /* compress the body (V2: the values) */
    int nnulls;         /* V2 */
    bool v2_compressed; /* V2: is_compressed */
    const dsq_buf *levels; /* V2 */
} hpage;

static void put_page(dsq_buf *out, const hpage *h, const void *body, size_t n)
{
    uint8_t comp[4096];
    const void *cb = body;
    size_t cn = n;
    if (h->zstd && (h->type != 3 || h->v2_compressed)) {
        cn = ZSTD_compress(comp, sizeof comp, body, n, 3);
        cr_assert(!ZSTD_isError(cn));
        cb = comp;
    }
    size_t lev = h->type == 3 && h->levels != NULL ? h->levels->len : 0;
    dsq_buf hdr = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &hdr);
    dsq_tc_i32(&t, 1, h->type);
    dsq_tc_i32(&t, 2, (int32_t)(lev + n));
    dsq_tc_i32(&t, 3, (int32_t)(lev + cn));
    dsq_tc_i32(&t, 4, 12345); /* crc: not checked */
    if (h->type == 0) {
        dsq_tc_struct_begin(&t, 5);
        dsq_tc_i32(&t, 1, h->nvalues);
        dsq_tc_i32(&t, 2, h->enc);
        dsq_tc_i32(&t, 3, 3);
        dsq_tc_i32(&t, 4, 3);
        dsq_tc_struct_end(&t);
    } else if (h->type == 1) {
        dsq_tc_struct_begin(&t, 6);
        dsq_tc_struct_end(&t);
    } else if (h->type == 2) {
        dsq_tc_struct_begin(&t, 7);
        dsq_tc_i32(&t, 1, h->nvalues);
        dsq_tc_i32(&t, 2, h->enc);
        dsq_tc_struct_end(&t);
    } else {
        dsq_tc_struct_begin(&t, 8);
        dsq_tc_i32(&t, 1, h->nvalues);
        dsq_tc_i32(&t, 2, h->nnulls);
        dsq_tc_i32(&t, 3, h->nvalues);
        dsq_tc_i32(&t, 4, h->enc);
        dsq_tc_i32(&t, 5, (int32_t)lev);
        dsq_tc_i32(&t, 6, 0);
        dsq_tc_bool(&t, 7, h->v2_compressed);
        dsq_tc_struct_end(&t);
    }
    dsq_tc_struct_end(&t);
    cr_assert_eq(t.err, 0);
    dsq_buf_append(out, hdr.data, hdr.len);
    if (lev > 0)
        dsq_buf_append(out, h->levels->data, lev);
    dsq_buf_append(out, cb, cn);
    dsq_buf_free(&hdr);
}

static void put_u32(dsq_buf *b, uint32_t v)
{
    uint8_t x[4];
    put_le32(x, v);
    dsq_buf_append(b, x, 4);
}

/* Definition levels of a V1 page: their length, then the hybrid. */
static void put_levels_v1(dsq_buf *b, const uint32_t *lv, size_t n)
{
    dsq_buf h = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&h, lv, n, 1), 0);
    put_u32(b, (uint32_t)h.len);
    dsq_buf_append(b, h.data, h.len);
    dsq_buf_free(&h);
}

Test(pqread_hand, v2_pages_rle_booleans_floats_index_pages)
{
    dsq_buf pages = DSQ_BUF_INIT, body = DSQ_BUF_INIT, lev = DSQ_BUF_INIT;
    hcol cols[4] = {
        {"v", 1, 1, 0, 6, 0, 0, -1},  /* INT32 OPTIONAL, zstd: two V2 pages */
        {"s", 6, 0, 0, 0, 0, 0, -1},  /* BYTE_ARRAY REQUIRED: dictionary, V2 RLE_DICTIONARY */
        {"b", 0, 1, 0, 6, 0, 0, -1},  /* BOOLEAN OPTIONAL: an index page, V1 RLE booleans */
        {"f", 4, 0, 0, 0, 0, 0, -1},  /* FLOAT REQUIRED: V1 PLAIN */
    };
    /* v: rows 0..5 (nulls at 1 and 4) compressed; rows 6..9 not. */
    uint32_t d1[6] = {1, 0, 1, 1, 0, 1};
    cr_assert_eq(dsq_pq_rle_hybrid(&lev, d1, 6, 1), 0);
    for (int i = 0; i < 4; i++)
        put_u32(&body, (uint32_t)(i * 100 - 1));
    put_page(&pages, &(hpage){.type = 3, .nvalues = 6, .enc = 0, .zstd = true, .nnulls = 2, .v2_compressed = true,
                              .levels = &lev}, body.data, body.len);
    lev.len = 0;
    body.len = 0;
    uint32_t d2[4] = {1, 1, 1, 1};
    cr_assert_eq(dsq_pq_rle_hybrid(&lev, d2, 4, 1), 0);
    for (int i = 0; i < 4; i++)
        put_u32(&body, (uint32_t)INT32_MIN + (uint32_t)i);
    put_page(&pages, &(hpage){.type = 3, .nvalues = 4, .enc = 0, .zstd = true, .v2_compressed = false,
                              .levels = &lev}, body.data, body.len);
    cols[0].len = (int64_t)pages.len;
    /* s: a dictionary of 3, indices 2,0,1,... */
    cols[1].off = cols[1].dict_off = (int64_t)pages.len;
    body.len = 0;
    const char *dict[3] = {"alpha", "", "gamma"};
    for (int i = 0; i < 3; i++) {
        put_u32(&body, (uint32_t)strlen(dict[i]));
        dsq_buf_append(&body, dict[i], strlen(dict[i]));
    }
    put_page(&pages, &(hpage){.type = 2, .nvalues = 3, .enc = 2}, body.data, body.len);
    cols[1].off = (int64_t)pages.len;
    uint32_t idx[10] = {2, 0, 1, 1, 1, 1, 1, 1, 1, 0};
    body.len = 0;
    dsq_buf_append(&body, "\x02", 1);
    cr_assert_eq(dsq_pq_rle_hybrid(&body, idx, 10, 2), 0);
    lev.len = 0;
    put_page(&pages, &(hpage){.type = 3, .nvalues = 10, .enc = 8, .levels = &lev}, body.data, body.len);
    cols[1].len = (int64_t)pages.len - cols[1].dict_off;
    /* b: an index page, then 10 levels (null at 9), 9 RLE booleans. */
    cols[2].off = (int64_t)pages.len;
    put_page(&pages, &(hpage){.type = 1, .zstd = true}, "", 0);
    body.len = 0;
    uint32_t d3[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    put_levels_v1(&body, d3, 10);
    uint32_t bools[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    dsq_buf rle = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&rle, bools, 9, 1), 0);
    put_u32(&body, (uint32_t)rle.len);
    dsq_buf_append(&body, rle.data, rle.len);
    dsq_buf_free(&rle);
    put_page(&pages, &(hpage){.type = 0, .nvalues = 10, .enc = 3, .zstd = true}, body.data, body.len);
    cols[2].len = (int64_t)pages.len - cols[2].off;
    /* f: 10 floats. */
    cols[3].off = (int64_t)pages.len;
    body.len = 0;
    for (int i = 0; i < 10; i++) {
        float x = (float)i * 0.5f - 1.0f;
        uint32_t u;
        memcpy(&u, &x, 4);
        put_u32(&body, u);
    }
    put_page(&pages, &(hpage){.type = 0, .nvalues = 10, .enc = 0}, body.data, body.len);
    cols[3].len = (int64_t)pages.len - cols[3].off;

    dsq_buf f = DSQ_BUF_INIT;
    hand_file(&f, &pages, cols, 4, 10, 4);
    uint8_t *p = exact_copy(f.data, f.len);
    char err[256];
    dsq_pqr *r = dsq_pqr_open(p, f.len, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_str_eq(dsq_pqr_created_by(r), "");
    cr_assert(!dsq_pqr_column_at(r, 0)->type_order, "no column_orders");
    cr_assert_eq(dsq_pqr_column_at(r, 3)->type, DSQ_PQR_FLOAT);
    dsq_pqr_values v;
    cr_assert_eq(dsq_pqr_col_read(r, 0, 0, &v), 0, "%s", dsq_pqr_error(r));
    int64_t want_v[10] = {-1, 0, 99, 199, 0, 299, INT32_MIN, INT32_MIN + 1, INT32_MIN + 2, INT32_MIN + 3};
    for (int i = 0; i < 10; i++) {
        if (i == 1 || i == 4) {
            cr_assert_eq(v.v[i].kind, DSQ_PQ_NULL, "row %d", i);
            continue;
        }
        cr_assert_eq(v.v[i].kind, DSQ_PQ_INT);
        cr_assert_eq(v.v[i].u.i, want_v[i], "row %d: %lld", i, (long long)v.v[i].u.i);
    }
    dsq_pqr_values_free(&v);
    cr_assert_eq(dsq_pqr_col_read(r, 0, 1, &v), 0, "%s", dsq_pqr_error(r));
    for (int i = 0; i < 10; i++) {
        dsq_pq_value w = dsq_pq_str(dict[idx[i]]);
        assert_value(&v.v[i], &w, (size_t)i, "s");
    }
    dsq_pqr_values_free(&v);
    cr_assert_eq(dsq_pqr_col_read(r, 0, 2, &v), 0, "%s", dsq_pqr_error(r));
    for (int i = 0; i < 9; i++) {
        dsq_pq_value w = dsq_pq_bool(bools[i]);
        assert_value(&v.v[i], &w, (size_t)i, "b");
    }
    cr_assert_eq(v.v[9].kind, DSQ_PQ_NULL);
    dsq_pqr_values_free(&v);
    cr_assert_eq(dsq_pqr_col_read(r, 0, 3, &v), 0, "%s", dsq_pqr_error(r));
    for (int i = 0; i < 10; i++) {
        dsq_pq_value w = dsq_pq_double((double)((float)i * 0.5f - 1.0f));
        assert_value(&v.v[i], &w, (size_t)i, "f");
    }
    dsq_pqr_values_free(&v);
    dsq_pqr_close(r);
    free(p);
    dsq_buf_free(&f);
    dsq_buf_free(&pages);
    dsq_buf_free(&body);
    dsq_buf_free(&lev);
}

/* Open a hand-made file of one column and one page; expect open to fail
 * with `open_err` in its reason, or else the read to fail with `read_err`
 * (NULL: to succeed). */
static void expect_refused(const hcol *col0, int root_children, const hpage *h, const void *body, size_t n,
                           const char *open_err, const char *read_err)
{
    dsq_buf pages = DSQ_BUF_INIT, f = DSQ_BUF_INIT;
    hcol c = *col0;
    size_t before = pages.len;
    if (h != NULL)
        put_page(&pages, h, body, n);
    c.off = (int64_t)before;
    if (c.len == 0)
        c.len = (int64_t)(pages.len - before);
    hand_file(&f, &pages, &c, 1, 4, root_children);
    char err[256] = "";
    dsq_pqr *r = dsq_pqr_open(f.data, f.len, err, sizeof err);
    if (open_err != NULL) {
        cr_assert_null(r, "should be refused: %s", open_err);
        cr_assert(strstr(err, open_err) != NULL, "reason \"%s\", want \"%s\"", err, open_err);
    } else {
        cr_assert_not_null(r, "%s", err);
        dsq_pqr_values v;
        int rc = dsq_pqr_col_read(r, 0, 0, &v);
        if (read_err == NULL) {
            cr_assert_eq(rc, 0, "%s", dsq_pqr_error(r));
            dsq_pqr_values_free(&v);
        } else {
            cr_assert_eq(rc, -1, "should be refused: %s", read_err);
            cr_assert(strstr(dsq_pqr_error(r), read_err) != NULL, "reason \"%s\", want \"%s\"", dsq_pqr_error(r),
                      read_err);
        }
        dsq_pqr_close(r);
    }
    dsq_buf_free(&pages);
    dsq_buf_free(&f);
}

Test(pqread_hand, refusals)
{
    uint8_t ints[16] = {1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0};
    hpage plain = {.type = 0, .nvalues = 4, .enc = 0};
    hcol ok = {"x", 1, 0, 0, 0, 0, 0, -1};
    expect_refused(&ok, 1, &plain, ints, 16, NULL, NULL); /* the baseline reads */

    hcol c = ok;
    c.rep = 2;
    expect_refused(&c, 1, &plain, ints, 16, "repeated", NULL);
    c = ok;
    c.type = 3;
    expect_refused(&c, 1, &plain, ints, 16, "INT96", NULL);
    c.type = 7;
    expect_refused(&c, 1, &plain, ints, 16, "FIXED_LEN_BYTE_ARRAY", NULL);
    expect_refused(&ok, 2, &plain, ints, 16, "nested", NULL); /* the root claims two children */
    c = ok;
    c.children = 1; /* a group as a column */
    expect_refused(&c, 1, &plain, ints, 16, "nested", NULL);
    c = ok;
    c.len = 100000; /* past the footer */
    expect_refused(&c, 1, &plain, ints, 16, "outside", NULL);
    c = ok;
    c.codec = 1;
    expect_refused(&c, 1, &plain, ints, 16, NULL, "SNAPPY");
    c.codec = 2;
    expect_refused(&c, 1, &plain, ints, 16, NULL, "GZIP");

    hpage delta = plain;
    delta.enc = 5;
    expect_refused(&ok, 1, &delta, ints, 16, NULL, "DELTA_BINARY_PACKED");
    hpage fewer = plain;
    fewer.nvalues = 3; /* the chunk ends before its 4 rows */
    expect_refused(&ok, 1, &fewer, ints, 12, NULL, "ends after 3");
    hpage more = plain;
    more.nvalues = 5;
    expect_refused(&ok, 1, &more, ints, 16, NULL, "past the chunk's 4 rows");
    expect_refused(&ok, 1, &plain, ints, 12, NULL, "4 values in 12 bytes");
    hpage dict_idx = {.type = 0, .nvalues = 4, .enc = 8};
    expect_refused(&ok, 1, &dict_idx, "\x01\x03\x0f", 3, NULL, "without a dictionary page");
    c = ok;
    c.codec = 6;
    hpage z = plain;
    z.zstd = true;
    expect_refused(&c, 1, &z, ints, 16, NULL, NULL); /* zstd reads */
    expect_refused(&c, 1, &plain, ints, 16, NULL, "zstd frame is corrupt"); /* not zstd at all */
}

Test(pqread_hand, dictionary_index_past_the_dictionary)
{
    dsq_buf pages = DSQ_BUF_INIT, body = DSQ_BUF_INIT, f = DSQ_BUF_INIT;
    hcol c = {"x", 1, 0, 0, 0, 0, 0, 0};
    put_u32(&body, 7);
    put_u32(&body, 8);
    put_page(&pages, &(hpage){.type = 2, .nvalues = 2, .enc = 0}, body.data, body.len);
    c.off = (int64_t)pages.len;
    uint32_t idx[4] = {0, 1, 2, 1};
    body.len = 0;
    dsq_buf_append(&body, "\x02", 1);
    cr_assert_eq(dsq_pq_rle_hybrid(&body, idx, 4, 2), 0);
    put_page(&pages, &(hpage){.type = 0, .nvalues = 4, .enc = 8}, body.data, body.len);
    c.len = (int64_t)pages.len;
    hand_file(&f, &pages, &c, 1, 4, 1);
    char err[256];
    dsq_pqr *r = dsq_pqr_open(f.data, f.len, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    dsq_pqr_values v;
    cr_assert_eq(dsq_pqr_col_read(r, 0, 0, &v), -1);
    cr_assert(strstr(dsq_pqr_error(r), "index 2 past its 2 entries") != NULL, "%s", dsq_pqr_error(r));
    dsq_pqr_close(r);
    dsq_buf_free(&pages);
    dsq_buf_free(&body);
    dsq_buf_free(&f);
}

Test(pqread_hand, page_size_limits)
{
    /* A zstd page whose header claims 300 MiB: refused before any
     * allocation, and one claiming a size its frame does not have. */
    uint8_t comp[64];
    uint8_t ints[16] = {0};
    size_t cn = ZSTD_compress(comp, sizeof comp, ints, 16, 3);
    cr_assert(!ZSTD_isError(cn));
    for (int k = 0; k < 2; k++) {
        dsq_buf pages = DSQ_BUF_INIT, hdr = DSQ_BUF_INIT, f = DSQ_BUF_INIT;
        dsq_tc t;
        dsq_tc_init(&t, &hdr);
        dsq_tc_i32(&t, 1, 0);
        dsq_tc_i32(&t, 2, k == 0 ? 300 << 20 : 17);
        dsq_tc_i32(&t, 3, (int32_t)cn);
        dsq_tc_struct_begin(&t, 5);
        dsq_tc_i32(&t, 1, 4);
        dsq_tc_i32(&t, 2, 0);
        dsq_tc_i32(&t, 3, 3);
        dsq_tc_i32(&t, 4, 3);
        dsq_tc_struct_end(&t);
        dsq_tc_struct_end(&t);
        dsq_buf_append(&pages, hdr.data, hdr.len);
        dsq_buf_append(&pages, comp, cn);
        hcol c = {"x", 1, 0, 0, 6, 0, (int64_t)pages.len, -1};
        hand_file(&f, &pages, &c, 1, 4, 1);
        char err[256];
        dsq_pqr *r = dsq_pqr_open(f.data, f.len, err, sizeof err);
        cr_assert_not_null(r, "%s", err);
        dsq_pqr_values v;
        cr_assert_eq(dsq_pqr_col_read(r, 0, 0, &v), -1);
        cr_assert(strstr(dsq_pqr_error(r), k == 0 ? "over the limit" : "not of its size") != NULL, "%s",
                  dsq_pqr_error(r));
        dsq_pqr_close(r);
        dsq_buf_free(&pages);
        dsq_buf_free(&hdr);
        dsq_buf_free(&f);
    }
}

Test(pqread_hand, frames_and_footers)
{
    char err[256];
    cr_assert_null(dsq_pqr_open("PAR1PAR1", 8, err, sizeof err));
    cr_assert(strstr(err, "not a Parquet file") != NULL, "%s", err);
    uint8_t f[32] = "PAR1";
    memcpy(f + 28, "PARE", 4);
    cr_assert_null(dsq_pqr_open(f, sizeof f, err, sizeof err));
    cr_assert(strstr(err, "encrypted") != NULL, "%s", err);
    memcpy(f + 28, "PAR1", 4);
    put_le32(f + 24, 21); /* one byte too many */
    cr_assert_null(dsq_pqr_open(f, sizeof f, err, sizeof err));
    cr_assert(strstr(err, "footer length") != NULL, "%s", err);
    put_le32(f + 24, 20); /* twenty zero bytes: an empty FileMetaData (and bytes after it) */
    cr_assert_null(dsq_pqr_open(f, sizeof f, err, sizeof err));
    cr_assert(strstr(err, "no schema") != NULL, "%s", err);
    /* A NULL err is fine. */
    cr_assert_null(dsq_pqr_open(f, 3, NULL, 0));
    dsq_pqr_close(NULL);
}

/* ---- hostile input ---- */

/* A small file of every type in two row groups, with a dictionary. */
static void small_file(dsq_buf *f, dsq_pq_codec codec)
{
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.codec = codec;
    o.row_group_rows = 6;
    o.page_bytes = 24;
    dsq_pq_file_stats st;
    write_gen(f, 9, &o, &st);
    dsq_pq_stats_free(&st);
}

Test(pqread_hostile, every_prefix)
{
    for (int k = 0; k < 2; k++) {
        dsq_buf f = DSQ_BUF_INIT;
        small_file(&f, k ? DSQ_PQ_ZSTD : DSQ_PQ_UNCOMPRESSED);
        for (size_t n = 0; n < f.len; n++) {
            uint8_t *p = exact_copy(f.data, n);
            char err[256];
            dsq_pqr *r = dsq_pqr_open(p, n, err, sizeof err);
            cr_assert_null(r, "a prefix of %zu bytes opened", n);
            free(p);
        }
        dsq_buf_free(&f);
    }
}

/* The footer cut to every length, with a tail that says so: the decoder
 * meets the end of its bytes at every point of the structure. */
Test(pqread_hostile, every_footer_cut)
{
    dsq_buf f = DSQ_BUF_INIT;
    small_file(&f, DSQ_PQ_ZSTD);
    uint32_t flen = (uint32_t)(uint8_t)f.data[f.len - 8] | (uint32_t)(uint8_t)f.data[f.len - 7] << 8 |
                    (uint32_t)(uint8_t)f.data[f.len - 6] << 16 | (uint32_t)(uint8_t)f.data[f.len - 5] << 24;
    size_t fstart = f.len - 8 - flen;
    int opened = 0;
    for (uint32_t k = 0; k < flen; k++) {
        size_t n = fstart + k + 8;
        uint8_t *p = malloc(n);
        memcpy(p, f.data, fstart + k);
        put_le32(p + fstart + k, k);
        memcpy(p + fstart + k + 4, "PAR1", 4);
        char err[256];
        dsq_pqr *r = dsq_pqr_open(p, n, err, sizeof err);
        if (r != NULL) {
            opened++;
            read_all_consistent(r);
            dsq_pqr_close(r);
        }
        free(p);
    }
    cr_assert_eq(opened, 0, "a footer cut short is never whole");
    dsq_buf_free(&f);
}

/* Flip bits of every byte of the file, one byte at a time: the reader
 * refuses, or reads values of the right kinds, never past its bytes. */
static void flips(dsq_pq_codec codec)
{
    dsq_buf f = DSQ_BUF_INIT;
    small_file(&f, codec);
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    int opened = 0, refused = 0;
    for (size_t i = 0; i < f.len; i++)
        for (size_t m = 0; m < sizeof masks; m++) {
            uint8_t *p = exact_copy(f.data, f.len);
            p[i] ^= masks[m];
            char err[256];
            dsq_pqr *r = dsq_pqr_open(p, f.len, err, sizeof err);
            if (r == NULL) {
                cr_assert_neq(err[0], '\0');
                refused++;
            } else {
                opened++;
                read_all_consistent(r);
                dsq_pqr_close(r);
            }
            free(p);
        }
    cr_assert_gt(opened, 0);
    cr_assert_gt(refused, 0);
    dsq_buf_free(&f);
}

Test(pqread_hostile, byte_flips_zstd) { flips(DSQ_PQ_ZSTD); }
Test(pqread_hostile, byte_flips_uncompressed) { flips(DSQ_PQ_UNCOMPRESSED); }
