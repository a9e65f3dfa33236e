/* Unit tests: lake/parquet (the Parquet writer): its Thrift compact
 * encoder and RLE/bit-packed hybrid against bytes worked out by hand from
 * the specifications, then written files walked page by page with a small
 * reader of page headers kept here. DuckDB reads the files in
 * tests/interop/parquet.test.mjs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lake/parquet.h"

static void assert_bytes(const dsq_buf *b, const uint8_t *want, size_t n)
{
    cr_assert_eq(b->len, n, "length %zu, want %zu", b->len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq((uint8_t)b->data[i], want[i], "byte %zu: %02x, want %02x", i, (uint8_t)b->data[i], want[i]);
}

/* ---- Thrift compact protocol ---- */

Test(parquet_thrift, fields_deltas_zigzag_and_stop)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &b);
    dsq_tc_i32(&t, 1, 1);          /* delta 1, i32: 0x15; zigzag(1) = 2 */
    dsq_tc_i32(&t, 3, -1);         /* delta 2: 0x25; zigzag(-1) = 1 */
    dsq_tc_i64(&t, 4, 300);        /* delta 1, i64: 0x16; zigzag(300) = 600 = 0xd8 0x04 */
    dsq_tc_bool(&t, 5, true);      /* bool in the type nibble: 0x11 */
    dsq_tc_bool(&t, 6, false);     /* 0x12 */
    dsq_tc_binary(&t, 7, "ab", 2); /* 0x18, length 2, bytes */
    dsq_tc_i32(&t, 40, 0);         /* delta 34 > 15: type 0x05, then zigzag(40) = 80 = 0x50 */
    dsq_tc_i32(&t, 2, 0);          /* going back: long form as well, 0x05 0x04 */
    dsq_tc_struct_end(&t);         /* stop */
    static const uint8_t want[] = {0x15, 0x02, 0x25, 0x01, 0x16, 0xd8, 0x04, 0x11, 0x12, 0x18, 0x02,
                                   'a',  'b',  0x05, 0x50, 0x00, 0x05, 0x04, 0x00, 0x00};
    cr_assert_eq(t.err, 0);
    assert_bytes(&b, want, sizeof want);
    dsq_buf_free(&b);
}

Test(parquet_thrift, nested_structs_and_lists)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &b);
    dsq_tc_struct_begin(&t, 2);                    /* 0x2c */
    dsq_tc_i32(&t, 1, 5);                          /* inner ids start over: 0x15 0x0a */
    dsq_tc_struct_end(&t);                         /* 0x00 */
    dsq_tc_list_begin(&t, 3, DSQ_TC_I32, 2);       /* delta 1 from 2: 0x19, then 0x25 (2 x i32) */
    dsq_tc_elem_i32(&t, 0);                        /* 0x00 */
    dsq_tc_elem_i32(&t, -64);                      /* zigzag 127: 0x7f */
    dsq_tc_list_begin(&t, 4, DSQ_TC_STRUCT, 15);   /* 0x19, 0xfc, size 15 as varint 0x0f */
    for (int i = 0; i < 15; i++) {
        dsq_tc_elem_struct_begin(&t);
        dsq_tc_struct_end(&t);                     /* 15 empty structs: 0x00 each */
    }
    dsq_tc_list_begin(&t, 5, DSQ_TC_BINARY, 1);    /* 0x19 0x18 */
    dsq_tc_elem_binary(&t, "x", 1);                /* 0x01 'x' */
    dsq_tc_field(&t, 6, DSQ_TC_I16);               /* 0x14 */
    dsq_tc_varint(&t, 200);                        /* 0xc8 0x01 */
    dsq_tc_struct_end(&t);
    uint8_t want[64];
    size_t n = 0;
    const uint8_t head[] = {0x2c, 0x15, 0x0a, 0x00, 0x19, 0x25, 0x00, 0x7f, 0x19, 0xfc, 0x0f};
    memcpy(want, head, sizeof head);
    n = sizeof head;
    for (int i = 0; i < 15; i++)
        want[n++] = 0x00;
    const uint8_t tail[] = {0x19, 0x18, 0x01, 'x', 0x14, 0xc8, 0x01, 0x00};
    memcpy(want + n, tail, sizeof tail);
    n += sizeof tail;
    cr_assert_eq(t.err, 0);
    assert_bytes(&b, want, n);
    dsq_buf_free(&b);
}

Test(parquet_thrift, too_deep_is_an_error)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &b);
    for (int i = 0; i < DSQ_TC_DEPTH + 1; i++)
        dsq_tc_struct_begin(&t, 1);
    cr_assert_neq(t.err, 0);
    dsq_buf_free(&b);
}

/* ---- RLE / bit-packed hybrid ---- */

Test(parquet_rle, bit_packed_example_of_the_spec)
{
    /* Encodings.md: 0..7 at width 3 pack to 10001000 11000110 11111010. */
    uint32_t v[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, v, 8, 3), 0);
    static const uint8_t want[] = {0x03, 0x88, 0xc6, 0xfa}; /* header: 1 group << 1 | 1 */
    assert_bytes(&b, want, sizeof want);
    dsq_buf_free(&b);
}

Test(parquet_rle, long_run_is_one_rle_run)
{
    uint32_t v[100];
    for (int i = 0; i < 100; i++)
        v[i] = 5;
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, v, 100, 3), 0);
    static const uint8_t want[] = {0xc8, 0x01, 0x05}; /* 100 << 1 = 200 as a varint; the value in one byte */
    assert_bytes(&b, want, sizeof want);
    b.len = 0;
    for (int i = 0; i < 100; i++)
        v[i] = 0x10203;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, v, 100, 17), 0);
    static const uint8_t want17[] = {0xc8, 0x01, 0x03, 0x02, 0x01}; /* 17 bits: 3 bytes, little-endian */
    assert_bytes(&b, want17, sizeof want17);
    /* Exactly 8 equal values make a run: 2 bytes, where packed they would
     * take 3. */
    b.len = 0;
    for (int i = 0; i < 8; i++)
        v[i] = 3;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, v, 8, 2), 0);
    static const uint8_t want8[] = {0x10, 0x03};
    assert_bytes(&b, want8, sizeof want8);
    dsq_buf_free(&b);
}

Test(parquet_rle, short_tail_is_padded_and_runs_split_the_packing)
{
    /* Definition levels 1,0,1: one group, padded with zeros: 0b101. */
    uint32_t a[3] = {1, 0, 1};
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, a, 3, 1), 0);
    static const uint8_t want[] = {0x03, 0x05};
    assert_bytes(&b, want, sizeof want);

    /* 8 mixed values, then 10 ones, then 1 zero: a packed group, an RLE
     * run, a padded packed group. */
    uint32_t c[19] = {1, 0, 0, 1, 1, 1, 0, 1};
    for (int i = 8; i < 18; i++)
        c[i] = 1;
    c[18] = 0;
    b.len = 0;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, c, 19, 1), 0);
    static const uint8_t want2[] = {0x03, 0xb9, 0x14, 0x01, 0x03, 0x00};
    assert_bytes(&b, want2, sizeof want2);

    /* A run of fewer than 8 inside a packed stretch stays packed. */
    uint32_t d[16] = {2, 2, 2, 2, 2, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 3};
    b.len = 0;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, d, 16, 2), 0);
    /* 2 groups: 0x05; values 2 bits each, low bits first:
     * 2,2,2,2 -> 0xaa; 2,2,2,1 -> 0x6a; 0,0,0,0 -> 0x00; 0,0,0,3 -> 0xc0 */
    static const uint8_t want3[] = {0x05, 0xaa, 0x6a, 0x00, 0xc0};
    assert_bytes(&b, want3, sizeof want3);
    dsq_buf_free(&b);
}

Test(parquet_rle, width_0_and_bad_widths)
{
    uint32_t z[20] = {0};
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_pq_rle_hybrid(&b, z, 20, 0), 0);
    static const uint8_t want[] = {0x28}; /* run of 20, no value bytes */
    assert_bytes(&b, want, sizeof want);
    cr_assert_eq(dsq_pq_rle_hybrid(&b, z, 20, 33), -1);
    dsq_buf_free(&b);
}

/* ---- written files ---- */

static int mem_sink(void *ctx, const void *p, size_t n) { return dsq_buf_append(ctx, p, n); }

static int fail_sink(void *ctx, const void *p, size_t n)
{
    int *left = ctx;
    return (*left)-- > 0 ? 0 : -1;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* A reader of just enough compact protocol to walk page headers. */
typedef struct rd {
    const uint8_t *p, *end;
    int bad;
} rd;

static uint64_t rd_varint(rd *r)
{
    uint64_t v = 0;
    for (int s = 0; r->p < r->end && s < 64; s += 7) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

static int64_t rd_zz(rd *r)
{
    uint64_t u = rd_varint(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static void rd_skip(rd *r, int type);

static void rd_skip_struct(rd *r)
{
    for (;;) {
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        uint8_t h = *r->p++;
        if (h == 0)
            return;
        if ((h >> 4) == 0)
            rd_zz(r);
        rd_skip(r, h & 0x0f);
    }
}

static void rd_skip(rd *r, int type)
{
    switch (type) {
    case DSQ_TC_TRUE: case DSQ_TC_FALSE: return;
    case DSQ_TC_BYTE: r->p++; return;
    case DSQ_TC_I16: case DSQ_TC_I32: case DSQ_TC_I64: rd_varint(r); return;
    case DSQ_TC_DOUBLE: r->p += 8; return;
    case DSQ_TC_BINARY: { uint64_t n = rd_varint(r); r->p += n; return; }
    case DSQ_TC_LIST: {
        uint8_t h = *r->p++;
        uint64_t n = h >> 4;
        if (n == 15)
            n = rd_varint(r);
        for (uint64_t i = 0; i < n && !r->bad; i++)
            rd_skip(r, h & 0x0f);
        return;
    }
    case DSQ_TC_STRUCT: rd_skip_struct(r); return;
    default: r->bad = 1;
    }
}

typedef struct page_hdr {
    int type;
    int64_t ulen, clen, nvalues, encoding;
    int64_t null_count; /* data pages: from their statistics; -1 none */
} page_hdr;

static void rd_page_header(rd *r, page_hdr *h)
{
    memset(h, 0, sizeof *h);
    h->null_count = -1;
    int id = 0;
    for (;;) {
        uint8_t b = *r->p++;
        if (b == 0)
            return;
        id = (b >> 4) ? id + (b >> 4) : (int)rd_zz(r);
        int type = b & 0x0f;
        if (id <= 3 && type == DSQ_TC_I32) {
            int64_t v = rd_zz(r);
            if (id == 1) h->type = (int)v;
            if (id == 2) h->ulen = v;
            if (id == 3) h->clen = v;
        } else if ((id == 5 || id == 7) && type == DSQ_TC_STRUCT) {
            int sid = 0;
            for (;;) {
                uint8_t sb = *r->p++;
                if (sb == 0)
                    break;
                sid = (sb >> 4) ? sid + (sb >> 4) : (int)rd_zz(r);
                int st = sb & 0x0f;
                if (sid == 1 && st == DSQ_TC_I32)
                    h->nvalues = rd_zz(r);
                else if (sid == 2 && st == DSQ_TC_I32)
                    h->encoding = rd_zz(r);
                else if (id == 5 && sid == 5 && st == DSQ_TC_STRUCT) {
                    int fid = 0;
                    for (;;) {
                        uint8_t fb = *r->p++;
                        if (fb == 0)
                            break;
                        fid = (fb >> 4) ? fid + (fb >> 4) : (int)rd_zz(r);
                        if (fid == 3 && (fb & 0x0f) == DSQ_TC_I64)
                            h->null_count = rd_zz(r);
                        else
                            rd_skip(r, fb & 0x0f);
                    }
                } else
                    rd_skip(r, st);
            }
        } else {
            rd_skip(r, type);
        }
        if (r->bad)
            return;
    }
}

/* What walking every page of a file found. */
typedef struct walk {
    int data_pages, dict_pages, plain_pages, dict_data_pages;
    int64_t values, nulls;
    int64_t largest_ulen;
} walk;

/* Check the frame (magic, footer length) and walk the pages between. */
static void walk_file(const dsq_buf *f, walk *w)
{
    memset(w, 0, sizeof *w);
    const uint8_t *p = (const uint8_t *)f->data;
    cr_assert_geq(f->len, 12u);
    cr_assert_eq(memcmp(p, "PAR1", 4), 0, "the magic first");
    cr_assert_eq(memcmp(p + f->len - 4, "PAR1", 4), 0, "and last");
    uint64_t flen = le(p + f->len - 8, 4);
    cr_assert_lt(flen, f->len - 12);
    const uint8_t *footer = p + f->len - 8 - flen;
    cr_assert_eq(footer[0], 0x15, "FileMetaData opens with version, an i32");
    cr_assert_eq(footer[1], 0x02, "of 1");
    rd r = {p + 4, footer, 0};
    while (r.p < footer) {
        page_hdr h;
        rd_page_header(&r, &h);
        cr_assert_eq(r.bad, 0);
        cr_assert_leq(r.p + h.clen, footer);
        r.p += h.clen;
        if (h.type == 2) {
            w->dict_pages++;
            continue;
        }
        cr_assert_eq(h.type, 0, "data pages V1 only");
        w->data_pages++;
        w->values += h.nvalues;
        if (h.null_count > 0)
            w->nulls += h.null_count;
        if (h.encoding == 0)
            w->plain_pages++;
        else if (h.encoding == 8)
            w->dict_data_pages++;
        if (h.ulen > w->largest_ulen)
            w->largest_ulen = h.ulen;
    }
    cr_assert_eq(r.p, footer, "the pages end where the footer starts");
}

static const dsq_pq_column COLS[] = {
    {"id", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, 1},
    {"name", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, 2},
    {"score", DSQ_PQ_DOUBLE, DSQ_PQ_PLAIN_TYPE, true, 3},
    {"ok", DSQ_PQ_BOOLEAN, DSQ_PQ_PLAIN_TYPE, true, 4},
};

static dsq_pq_writer *open_mem(dsq_buf *out, const dsq_pq_options *o)
{
    char err[128];
    dsq_pq_writer *w = dsq_pq_open(COLS, 4, o, mem_sink, out, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    return w;
}

static int64_t i64_of(const dsq_buf *b)
{
    cr_assert_eq(b->len, 8u);
    return (int64_t)le((const uint8_t *)b->data, 8);
}

static double dbl_of(const dsq_buf *b)
{
    cr_assert_eq(b->len, 8u);
    uint64_t u = le((const uint8_t *)b->data, 8);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

Test(parquet_file, small_file_frame_and_stats)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_pq_writer *w = open_mem(&out, NULL);
    dsq_pq_value rows[][4] = {
        {dsq_pq_int(5), dsq_pq_str("pear"), dsq_pq_double(2.5), dsq_pq_bool(true)},
        {dsq_pq_int(-3), dsq_pq_null(), dsq_pq_double(-0.0), dsq_pq_null()},
        {dsq_pq_int(INT64_MAX), dsq_pq_str("apple"), dsq_pq_double(NAN), dsq_pq_bool(false)},
        {dsq_pq_int(0), dsq_pq_str("\xc3\xa9t\xc3\xa9"), dsq_pq_null(), dsq_pq_bool(true)},
    };
    for (int i = 0; i < 4; i++)
        cr_assert_eq(dsq_pq_append(w, rows[i]), 0, "%s", dsq_pq_error(w));
    dsq_pq_file_stats st;
    char err[128];
    cr_assert_eq(dsq_pq_close(w, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st.rows, 4u);
    cr_assert_eq(st.file_bytes, out.len);
    cr_assert_eq(st.nrow_groups, 1u);
    cr_assert_eq(st.row_group_offsets[0], 4u, "the first group right after the magic");
    cr_assert_eq(st.ncols, 4u);

    cr_assert_eq(st.cols[0].values, 4u);
    cr_assert_eq(st.cols[0].nulls, 0u);
    cr_assert(st.cols[0].has_minmax);
    cr_assert_eq(i64_of(&st.cols[0].min), -3, "signed order");
    cr_assert_eq(i64_of(&st.cols[0].max), INT64_MAX);

    cr_assert_eq(st.cols[1].nulls, 1u);
    cr_assert_eq(st.cols[1].min.len, 5u);
    cr_assert_eq(memcmp(st.cols[1].min.data, "apple", 5), 0);
    cr_assert_eq(memcmp(st.cols[1].max.data, "\xc3\xa9t\xc3\xa9", 5), 0, "unsigned bytes: 0xc3 after 'p'");

    cr_assert_eq(st.cols[2].nulls, 1u);
    cr_assert_eq(st.cols[2].nans, 1u, "NaN counted, not a bound");
    cr_assert_eq(dbl_of(&st.cols[2].min), 0.0);
    cr_assert(signbit(dbl_of(&st.cols[2].min)), "a zero minimum is -0.0");
    cr_assert_eq(dbl_of(&st.cols[2].max), 2.5);

    cr_assert_eq(st.cols[3].min.data[0], 0);
    cr_assert_eq(st.cols[3].max.data[0], 1);
    for (int i = 0; i < 4; i++) {
        cr_assert_gt(st.cols[i].compressed_bytes, 0u);
        cr_assert_gt(st.cols[i].uncompressed_bytes, 0u);
    }

    walk wk;
    walk_file(&out, &wk);
    cr_assert_eq(wk.data_pages, 4, "a page a column");
    cr_assert_eq(wk.dict_pages, 1, "the strings' dictionary");
    cr_assert_eq(wk.values, 16);
    cr_assert_eq(wk.nulls, 3, "page statistics count the nulls");
    dsq_pq_stats_free(&st);
    dsq_buf_free(&out);
}

Test(parquet_file, all_nulls_and_empty_strings)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.codec = DSQ_PQ_UNCOMPRESSED;
    dsq_pq_writer *w = open_mem(&out, &o);
    for (int i = 0; i < 10; i++) {
        dsq_pq_value row[4] = {dsq_pq_int(i), dsq_pq_str(""), dsq_pq_null(), dsq_pq_null()};
        cr_assert_eq(dsq_pq_append(w, row), 0);
    }
    dsq_pq_file_stats st;
    cr_assert_eq(dsq_pq_close(w, &st, NULL, 0), 0);
    cr_assert(st.cols[1].has_minmax, "the empty string is a value");
    cr_assert_eq(st.cols[1].min.len, 0u);
    cr_assert_eq(st.cols[1].max.len, 0u);
    cr_assert_eq(st.cols[1].nulls, 0u);
    cr_assert_not(st.cols[2].has_minmax, "no bounds without values");
    cr_assert_eq(st.cols[2].nulls, 10u);
    cr_assert_eq(st.cols[3].nulls, 10u);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(st.cols[i].compressed_bytes, st.cols[i].uncompressed_bytes, "UNCOMPRESSED");
    walk wk;
    walk_file(&out, &wk);
    cr_assert_eq(wk.nulls, 20);
    dsq_pq_stats_free(&st);
    dsq_buf_free(&out);
}

/* 200,000 rows in groups of 50,000 and pages of 64 KiB: several of each,
 * and every page within its bound (give or take a value). */
Test(parquet_file, large_file_row_groups_and_pages)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.row_group_rows = 50000;
    o.page_bytes = 64 * 1024;
    dsq_pq_writer *w = open_mem(&out, &o);
    char s[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(s, sizeof s, "k%d", i % 100); /* 100 distinct: dictionary */
        dsq_pq_value row[4] = {dsq_pq_int(i), i % 7 == 0 ? dsq_pq_null() : dsq_pq_str(s),
                               dsq_pq_double(i * 0.5), dsq_pq_bool(i & 1)};
        cr_assert_eq(dsq_pq_append(w, row), 0);
    }
    dsq_pq_file_stats st;
    cr_assert_eq(dsq_pq_close(w, &st, NULL, 0), 0);
    cr_assert_eq(st.rows, 200000u);
    cr_assert_eq(st.nrow_groups, 4u);
    for (size_t i = 1; i < st.nrow_groups; i++)
        cr_assert_gt(st.row_group_offsets[i], st.row_group_offsets[i - 1]);
    cr_assert_eq(i64_of(&st.cols[0].min), 0);
    cr_assert_eq(i64_of(&st.cols[0].max), 199999);
    cr_assert_eq(st.cols[1].nulls, 28572u); /* multiples of 7 below 200,000 */
    cr_assert_eq(dbl_of(&st.cols[2].max), 199999 * 0.5);
    walk wk;
    walk_file(&out, &wk);
    cr_assert_eq(wk.dict_pages, 4, "a dictionary a row group for the strings");
    cr_assert_eq(wk.dict_data_pages, 4, "their 50,000 indices fit a page");
    cr_assert_gt(wk.data_pages, 4 * 4 + 4 * 5, "400 KB of ids and of doubles a group: pages of 64 KiB");
    cr_assert_leq(wk.largest_ulen, 64 * 1024 + 64);
    cr_assert_eq(wk.values, 4 * 200000);
    cr_assert_eq(wk.nulls, 28572);
    uint64_t sum = 0;
    for (int i = 0; i < 4; i++)
        sum += st.cols[i].compressed_bytes;
    uint64_t flen = le((const uint8_t *)out.data + out.len - 8, 4);
    cr_assert_eq(sum, out.len - 4 - 8 - flen, "the chunks' sizes add up to the pages");
    dsq_pq_stats_free(&st);
    dsq_buf_free(&out);
}

/* Past dict_max_entries the chunk goes PLAIN; the next row group starts a
 * dictionary again. */
Test(parquet_file, dictionary_falls_back_to_plain)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    o.row_group_rows = 1000;
    o.dict_max_entries = 100;
    dsq_pq_writer *w = open_mem(&out, &o);
    char s[32];
    for (int i = 0; i < 2000; i++) {
        /* group 1: 1000 distinct names; group 2: 10 */
        snprintf(s, sizeof s, "name-%d", i < 1000 ? i : i % 10);
        dsq_pq_value row[4] = {dsq_pq_int(i), dsq_pq_str(s), dsq_pq_null(), dsq_pq_null()};
        cr_assert_eq(dsq_pq_append(w, row), 0);
    }
    dsq_pq_file_stats st;
    cr_assert_eq(dsq_pq_close(w, &st, NULL, 0), 0);
    cr_assert_eq(st.nrow_groups, 2u);
    cr_assert_eq(st.cols[1].min.len, 6u);
    cr_assert_eq(memcmp(st.cols[1].min.data, "name-0", 6), 0);
    cr_assert_eq(memcmp(st.cols[1].max.data, "name-999", 8), 0);
    walk wk;
    walk_file(&out, &wk);
    cr_assert_eq(wk.dict_pages, 1, "only the second group's names fit");
    cr_assert_eq(wk.dict_data_pages, 1);
    cr_assert_eq(wk.plain_pages, 8 - 1);
    dsq_pq_stats_free(&st);
    dsq_buf_free(&out);

    /* The same by dict_max_bytes. */
    dsq_buf out2 = DSQ_BUF_INIT;
    o.dict_max_entries = 65536;
    o.dict_max_bytes = 200;
    w = open_mem(&out2, &o);
    for (int i = 0; i < 1000; i++) {
        snprintf(s, sizeof s, "value-%d", i % 50); /* 50 entries of ~12 bytes: over 200 */
        dsq_pq_value row[4] = {dsq_pq_int(i), dsq_pq_str(s), dsq_pq_null(), dsq_pq_null()};
        cr_assert_eq(dsq_pq_append(w, row), 0);
    }
    cr_assert_eq(dsq_pq_close(w, NULL, NULL, 0), 0);
    walk_file(&out2, &wk);
    cr_assert_eq(wk.dict_pages, 0);
    dsq_buf_free(&out2);
}

Test(parquet_file, bad_values_are_refused_and_the_writer_goes_on)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_pq_writer *w = open_mem(&out, NULL);
    dsq_pq_value bad1[4] = {dsq_pq_null(), dsq_pq_null(), dsq_pq_null(), dsq_pq_null()};
    cr_assert_eq(dsq_pq_append(w, bad1), -1);
    cr_assert_str_eq(dsq_pq_error(w), "column id is not nullable");
    dsq_pq_value bad2[4] = {dsq_pq_int(1), dsq_pq_str("\xff"), dsq_pq_null(), dsq_pq_null()};
    cr_assert_eq(dsq_pq_append(w, bad2), -1);
    cr_assert_str_eq(dsq_pq_error(w), "column name takes UTF-8 text");
    dsq_pq_value bad3[4] = {dsq_pq_int(1), dsq_pq_null(), dsq_pq_int(2), dsq_pq_null()};
    cr_assert_eq(dsq_pq_append(w, bad3), -1);
    dsq_pq_value good[4] = {dsq_pq_int(1), dsq_pq_null(), dsq_pq_double(2), dsq_pq_null()};
    cr_assert_eq(dsq_pq_append(w, good), 0);
    dsq_pq_file_stats st;
    cr_assert_eq(dsq_pq_close(w, &st, NULL, 0), 0);
    cr_assert_eq(st.rows, 1u, "the refused rows left nothing behind");
    cr_assert_eq(st.cols[0].values, 1u);
    dsq_pq_stats_free(&st);
    dsq_buf_free(&out);
}

Test(parquet_file, bad_schemas_are_refused)
{
    char err[128];
    dsq_pq_column dup[2] = {{"a", DSQ_PQ_INT64, 0, false, 1}, {"a", DSQ_PQ_INT64, 0, false, 2}};
    cr_assert_null(dsq_pq_open(dup, 2, NULL, mem_sink, NULL, err, sizeof err));
    cr_assert_str_eq(err, "two columns of one name");
    dsq_pq_column ts[1] = {{"t", DSQ_PQ_DOUBLE, DSQ_PQ_TIMESTAMP_US, false, 1}};
    cr_assert_null(dsq_pq_open(ts, 1, NULL, mem_sink, NULL, err, sizeof err));
    cr_assert_null(dsq_pq_open(ts, 0, NULL, mem_sink, NULL, err, sizeof err));
}

Test(parquet_file, a_failing_sink_fails_the_writer)
{
    int left = 1; /* the magic goes; the first page does not */
    char err[128];
    dsq_pq_writer *w = dsq_pq_open(COLS, 4, NULL, fail_sink, &left, err, sizeof err);
    cr_assert_not_null(w);
    dsq_pq_value row[4] = {dsq_pq_int(1), dsq_pq_null(), dsq_pq_null(), dsq_pq_null()};
    cr_assert_eq(dsq_pq_append(w, row), 0, "held in memory");
    cr_assert_eq(dsq_pq_flush(w), -1);
    cr_assert_eq(dsq_pq_append(w, row), -1, "failed for good");
    dsq_pq_file_stats st;
    cr_assert_eq(dsq_pq_close(w, &st, err, sizeof err), -1);
    cr_assert_str_eq(err, "the sink failed");
    cr_assert_null(st.cols);
}
