/* pqread — a reader of Apache Parquet files held in memory (pqread.h).
 *
 * Divisions:
 *   - the Thrift compact protocol, decoded: a cursor over bytes that
 *     checks every length against what is left, skips fields it does not
 *     know (of any type) and bounds the nesting;
 *   - the RLE/bit-packed hybrid, decoded;
 *   - the footer: FileMetaData into the schema, row groups, column chunks
 *     and statistics, each checked (flat schema, chunks inside the file);
 *   - a column chunk: page headers, zstd, definition levels, PLAIN and
 *     dictionary values into one dsq_pq_value a row.
 *
 * The file (pqread.h's caller keeps it): "PAR1", the column chunks' pages,
 * the footer (FileMetaData, compact protocol), the footer's length as 4
 * bytes little-endian, "PAR1". A column chunk is an optional dictionary
 * page, then data pages, each a PageHeader then its body (compressed with
 * the chunk's codec; for V2, all but the levels). A V1 data page's body
 * is the definition levels (OPTIONAL columns only: a 4-byte length then
 * the hybrid at bit width 1), then the non-null values. */
#include "lake/pqread.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/util.h"

/* Compact protocol types. */
enum {
    TC_STOP = 0, TC_TRUE = 1, TC_FALSE = 2, TC_BYTE = 3, TC_I16 = 4, TC_I32 = 5, TC_I64 = 6,
    TC_DOUBLE = 7, TC_BINARY = 8, TC_LIST = 9, TC_SET = 10, TC_MAP = 11, TC_STRUCT = 12,
};

/* parquet.thrift's enums, as read. */
enum { ENC_PLAIN = 0, ENC_PLAIN_DICTIONARY = 2, ENC_RLE = 3, ENC_RLE_DICTIONARY = 8 };
enum { PAGE_DATA = 0, PAGE_INDEX = 1, PAGE_DICTIONARY = 2, PAGE_DATA_V2 = 3 };
enum { REP_REQUIRED = 0, REP_OPTIONAL = 1, REP_REPEATED = 2 };
enum { CONV_UTF8 = 0, CONV_TIMESTAMP_MICROS = 10 };
enum { LT_STRING = 1, LT_TIMESTAMP = 8 };

#define PQ_MAGIC "PAR1"

/* ---------------------------------------------------------------------- */
/* Thrift compact protocol, decoded                                       */

/* A cursor over p..end. The first error is kept in err and empties the
 * cursor, so that everything after it fails too. */
typedef struct tc_rd {
    const uint8_t *p, *end;
    int depth;
    const char *err;
} tc_rd;

static int rd_fail(tc_rd *t, const char *why)
{
    if (t->err == NULL)
        t->err = why;
    t->p = t->end;
    return -1;
}

static size_t rd_left(const tc_rd *t) { return (size_t)(t->end - t->p); }

static int rd_varint(tc_rd *t, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (t->p >= t->end)
            return rd_fail(t, "the metadata is truncated");
        uint8_t b = *t->p++;
        if (shift == 63 && b > 1)
            break;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return rd_fail(t, "a varint over 64 bits");
}

static int rd_zigzag(tc_rd *t, int64_t *v)
{
    uint64_t u;
    if (rd_varint(t, &u) != 0)
        return -1;
    *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return 0;
}

/* An integer field of any width (byte, i16, i32, i64), in [lo, hi]. */
static int rd_int(tc_rd *t, int type, int64_t lo, int64_t hi, int64_t *v)
{
    if (type == TC_BYTE) {
        if (t->p >= t->end)
            return rd_fail(t, "the metadata is truncated");
        *v = (int8_t)*t->p++;
    } else if (type == TC_I16 || type == TC_I32 || type == TC_I64) {
        if (rd_zigzag(t, v) != 0)
            return -1;
    } else {
        return rd_fail(t, "an integer field of another type");
    }
    if (*v < lo || *v > hi)
        return rd_fail(t, "an integer field out of range");
    return 0;
}

static int rd_i32(tc_rd *t, int type, int32_t *v)
{
    int64_t x;
    if (rd_int(t, type, INT32_MIN, INT32_MAX, &x) != 0)
        return -1;
    *v = (int32_t)x;
    return 0;
}

static int rd_bool(tc_rd *t, int type, bool *v)
{
    if (type != TC_TRUE && type != TC_FALSE)
        return rd_fail(t, "a bool field of another type");
    *v = type == TC_TRUE;
    return 0;
}

static int rd_binary(tc_rd *t, int type, const uint8_t **p, size_t *n)
{
    uint64_t len;
    if (type != TC_BINARY)
        return rd_fail(t, "a binary field of another type");
    if (rd_varint(t, &len) != 0)
        return -1;
    if (len > rd_left(t))
        return rd_fail(t, "a binary field runs past the metadata");
    *p = t->p;
    *n = (size_t)len;
    t->p += len;
    return 0;
}

/* A list's (or set's) header: its element type and count. Every element
 * takes a byte at least, so a count over the bytes left is corrupt. */
static int rd_list(tc_rd *t, int type, int *elem, size_t *n)
{
    if (type != TC_LIST && type != TC_SET)
        return rd_fail(t, "a list field of another type");
    if (t->p >= t->end)
        return rd_fail(t, "the metadata is truncated");
    uint8_t b = *t->p++;
    uint64_t count = b >> 4;
    if (count == 15 && rd_varint(t, &count) != 0)
        return -1;
    if (count > rd_left(t))
        return rd_fail(t, "a list longer than the metadata");
    *elem = b & 0x0f;
    *n = (size_t)count;
    return 0;
}

/* Handles one field of a struct: 0 read, 1 not known (skipped), -1. */
typedef int (*tc_field_fn)(tc_rd *t, void *ctx, int id, int type);

static int rd_skip(tc_rd *t, int type, bool elem);

/* A struct, field after field to its stop byte. */
static int rd_struct(tc_rd *t, tc_field_fn fn, void *ctx)
{
    if (++t->depth > DSQ_PQR_TC_DEPTH)
        return rd_fail(t, "the metadata nests too deep");
    int64_t last = 0;
    for (;;) {
        if (t->p >= t->end)
            return rd_fail(t, "the metadata is truncated");
        uint8_t b = *t->p++;
        if (b == TC_STOP)
            break;
        int type = b & 0x0f, delta = b >> 4;
        int64_t id = last + delta;
        if (delta == 0 && rd_zigzag(t, &id) != 0)
            return -1;
        if (id < INT16_MIN || id > INT16_MAX)
            return rd_fail(t, "a field id out of range");
        last = id;
        int rc = fn != NULL ? fn(t, ctx, (int)id, type) : 1;
        if (rc < 0 || (rc > 0 && rd_skip(t, type, false) != 0))
            return -1;
    }
    t->depth--;
    return 0;
}

/* Skip a value of a type: a struct field's (a bool has no byte: its type
 * is its value) or a list element's (elem: a bool is a byte). */
static int rd_skip(tc_rd *t, int type, bool elem)
{
    uint64_t u;
    switch (type) {
    case TC_TRUE:
    case TC_FALSE:
    case TC_BYTE:
        if (type == TC_BYTE || elem) {
            if (t->p >= t->end)
                return rd_fail(t, "the metadata is truncated");
            t->p++;
        }
        return 0;
    case TC_I16:
    case TC_I32:
    case TC_I64: return rd_varint(t, &u);
    case TC_DOUBLE:
        if (rd_left(t) < 8)
            return rd_fail(t, "the metadata is truncated");
        t->p += 8;
        return 0;
    case TC_BINARY: {
        const uint8_t *p;
        size_t n;
        return rd_binary(t, type, &p, &n);
    }
    case TC_LIST:
    case TC_SET: {
        int et;
        size_t n;
        if (rd_list(t, type, &et, &n) != 0)
            return -1;
        if (++t->depth > DSQ_PQR_TC_DEPTH)
            return rd_fail(t, "the metadata nests too deep");
        for (size_t i = 0; i < n; i++)
            if (rd_skip(t, et, true) != 0)
                return -1;
        t->depth--;
        return 0;
    }
    case TC_MAP: {
        if (rd_varint(t, &u) != 0)
            return -1;
        if (u == 0)
            return 0;
        if (u > rd_left(t) || t->p >= t->end)
            return rd_fail(t, "a map longer than the metadata");
        uint8_t kv = *t->p++;
        if (++t->depth > DSQ_PQR_TC_DEPTH)
            return rd_fail(t, "the metadata nests too deep");
        for (uint64_t i = 0; i < u; i++)
            if (rd_skip(t, kv >> 4, true) != 0 || rd_skip(t, kv & 0x0f, true) != 0)
                return -1;
        t->depth--;
        return 0;
    }
    case TC_STRUCT: return rd_struct(t, NULL, NULL);
    }
    return rd_fail(t, "a field of an unknown type");
}

long dsq_pqr_tc_skip(const void *p, size_t n, int type)
{
    tc_rd t = {.p = p, .end = (const uint8_t *)p + n};
    if (rd_skip(&t, type, false) != 0)
        return -1;
    return (long)(t.p - (const uint8_t *)p);
}

/* ---------------------------------------------------------------------- */
/* RLE / bit-packed hybrid, decoded (Encodings.md)                        */

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p) { return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }

/* Runs, each a varint header: an RLE run (count << 1) and its value in
 * (bit_width + 7) / 8 bytes, or a bit-packed run (groups << 1 | 1) of
 * groups * 8 values, bit_width bits each, the first in the lowest bits.
 * A packed run cut short by the end of the data gives what it holds
 * (some writers leave out the last group's padding). */
int dsq_pqr_rle_decode(const void *p, size_t len, int bit_width, uint32_t *out, size_t count)
{
    if (bit_width < 0 || bit_width > 32)
        return -1;
    tc_rd t = {.p = p, .end = (const uint8_t *)p + len};
    size_t vbytes = ((size_t)bit_width + 7) / 8;
    uint64_t mask = ((uint64_t)1 << bit_width) - 1;
    size_t i = 0;
    while (i < count) {
        uint64_t h;
        if (rd_varint(&t, &h) != 0)
            return -1;
        size_t want = count - i;
        if ((h & 1) == 0) {
            if (rd_left(&t) < vbytes)
                return -1;
            uint64_t v = 0;
            for (size_t k = 0; k < vbytes; k++)
                v |= (uint64_t)t.p[k] << (8 * k);
            t.p += vbytes;
            if (v > mask)
                return -1;
            size_t take = (h >> 1) < want ? (size_t)(h >> 1) : want;
            for (size_t k = 0; k < take; k++)
                out[i + k] = (uint32_t)v;
            i += take;
            continue;
        }
        uint64_t groups = h >> 1;
        size_t left = rd_left(&t);
        uint64_t nvals, bytes;
        if (bit_width == 0) {
            bytes = 0;
            nvals = groups > SIZE_MAX / 8 ? SIZE_MAX : groups * 8;
        } else if (groups > left / (size_t)bit_width) {
            bytes = left; /* cut short */
            nvals = (uint64_t)left * 8 / (uint64_t)bit_width;
        } else {
            bytes = groups * (uint64_t)bit_width;
            nvals = groups * 8;
        }
        size_t take = nvals < want ? (size_t)nvals : want;
        uint64_t acc = 0;
        int bits = 0;
        const uint8_t *b = t.p;
        for (size_t k = 0; k < take; k++) {
            while (bits < bit_width) {
                acc |= (uint64_t)*b++ << bits;
                bits += 8;
            }
            out[i + k] = (uint32_t)(acc & mask);
            acc >>= bit_width;
            bits -= bit_width;
        }
        t.p += bytes;
        i += take;
        if (take < want && bytes == left && bit_width > 0 && t.p == t.end)
            return -1; /* ran out inside a packed run */
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The reader                                                             */

struct pqr_block {
    pqr_block *next;
    size_t n;
    uint8_t data[];
};

struct dsq_pqr {
    const uint8_t *file;       /* the caller's */
    size_t size;
    int64_t num_rows;
    char *created_by;          /* owned */
    dsq_pqr_column *cols;      /* ncols, owned (names too) */
    size_t ncols;
    dsq_pqr_row_group *rgs;    /* nrgs, owned (chunks too) */
    size_t nrgs;
    size_t footer_start;       /* the first byte of FileMetaData: no chunk reaches it */
    ZSTD_DCtx *zd;             /* made at the first zstd page */
    /* scratch of col_read */
    uint8_t *page;             /* a decompressed page whose values are copied out */
    size_t page_cap;
    uint32_t *lv;              /* definition levels, dictionary indices */
    size_t lv_cap;
    char err[256];
};

static void set_err(dsq_pqr *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(dsq_pqr *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
}

static const char *type_name(int32_t t)
{
    static const char *const names[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                                        "FIXED_LEN_BYTE_ARRAY"};
    return t >= 0 && t < 8 ? names[t] : "an unknown type";
}

static const char *codec_name(int c)
{
    static const char *const names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
    return c >= 0 && c < 8 ? names[c] : "an unknown codec";
}

static const char *encoding_name(int e)
{
    static const char *const names[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED",
                                        "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
                                        "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
    return e >= 0 && e < 10 ? names[e] : "an unknown encoding";
}

/* ---------------------------------------------------------------------- */
/* The footer                                                             */

/* What is kept of a SchemaElement. */
typedef struct pq_elem {
    bool has_type, has_rep, has_children, has_name, has_conv, has_fid;
    int32_t type, rep, children, conv, fid;
    const uint8_t *name;
    size_t name_n;
    int logical_id;
    bool ts_utc;
    int ts_unit;               /* TimeUnit's field: 1 MILLIS, 2 MICROS, 3 NANOS */
} pq_elem;

/* The state of a footer being decoded. */
typedef struct pq_footer {
    dsq_pqr *r;
    bool has_schema, has_rows, has_rgs, encrypted;
    const char *bad;           /* a refusal found inside a field (not a decoding error) */
    char bad_buf[200];
} pq_footer;

static int footer_refuse(tc_rd *t, pq_footer *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int footer_refuse(tc_rd *t, pq_footer *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->bad_buf, sizeof f->bad_buf, fmt, ap);
    va_end(ap);
    f->bad = f->bad_buf;
    return rd_fail(t, f->bad);
}

static int unit_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_elem *e = ctx;
    if (type != TC_STRUCT)
        return 1;
    e->ts_unit = id;
    return 1; /* the empty struct is skipped */
}

static int timestamp_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_elem *e = ctx;
    switch (id) {
    case 1: return rd_bool(t, type, &e->ts_utc);
    case 2:
        if (type != TC_STRUCT)
            return rd_fail(t, "TimestampType.unit is not a struct");
        return rd_struct(t, unit_field, e);
    }
    return 1;
}

static int logical_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_elem *e = ctx;
    if (type != TC_STRUCT)
        return rd_fail(t, "a LogicalType member is not a struct");
    e->logical_id = id;
    if (id == LT_TIMESTAMP)
        return rd_struct(t, timestamp_field, e);
    return 1;
}

static int elem_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_elem *e = ctx;
    switch (id) {
    case 1: e->has_type = true; return rd_i32(t, type, &e->type);
    case 3: e->has_rep = true; return rd_i32(t, type, &e->rep);
    case 4: e->has_name = true; return rd_binary(t, type, &e->name, &e->name_n);
    case 5: e->has_children = true; return rd_i32(t, type, &e->children);
    case 6: e->has_conv = true; return rd_i32(t, type, &e->conv);
    case 9: e->has_fid = true; return rd_i32(t, type, &e->fid);
    case 10:
        if (type != TC_STRUCT)
            return rd_fail(t, "SchemaElement.logicalType is not a struct");
        return rd_struct(t, logical_field, e);
    }
    return 1;
}

/* The schema: a root group whose children are all leaves. */
static int read_schema(tc_rd *t, pq_footer *f, int type)
{
    dsq_pqr *r = f->r;
    int et;
    size_t n;
    if (f->has_schema)
        return rd_fail(t, "two schemas");
    f->has_schema = true;
    if (rd_list(t, type, &et, &n) != 0)
        return -1;
    if (et != TC_STRUCT || n == 0)
        return rd_fail(t, "the schema is not a list of elements");
    pq_elem *el = calloc(n, sizeof *el);
    if (el == NULL)
        return rd_fail(t, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (rd_struct(t, elem_field, &el[i]) != 0)
            goto fail;
    if (!el[0].has_children || el[0].children < 0 || (size_t)el[0].children != n - 1) {
        footer_refuse(t, f, "a nested schema (the root has %d of %zu elements as children)",
                      el[0].has_children ? el[0].children : -1, n - 1);
        goto fail;
    }
    if (n - 1 > 32767) {
        footer_refuse(t, f, "too many columns (%zu)", n - 1);
        goto fail;
    }
    r->cols = calloc(n, sizeof *r->cols);
    if (r->cols == NULL) {
        rd_fail(t, "out of memory");
        goto fail;
    }
    for (size_t i = 1; i < n; i++) {
        const pq_elem *e = &el[i];
        dsq_pqr_column *c = &r->cols[i - 1];
        if (!e->has_name || memchr(e->name, 0, e->name_n) != NULL || !dsq_utf8_valid(e->name, e->name_n)) {
            footer_refuse(t, f, "column %zu has no name, or one that is not UTF-8", i - 1);
            goto fail;
        }
        char *name = malloc(e->name_n + 1);
        if (name == NULL) {
            rd_fail(t, "out of memory");
            goto fail;
        }
        memcpy(name, e->name, e->name_n);
        name[e->name_n] = '\0';
        c->name = name;
        r->ncols = i; /* the names so far are freed at close */
        if ((e->has_children && e->children != 0) || !e->has_type) {
            footer_refuse(t, f, "column %s is a group: nested schemas are not read", name);
            goto fail;
        }
        if (!e->has_rep || (e->rep != REP_REQUIRED && e->rep != REP_OPTIONAL)) {
            footer_refuse(t, f, "column %s is %s: repeated columns are not read", name,
                          e->has_rep ? "repeated" : "without a repetition");
            goto fail;
        }
        if (e->type != DSQ_PQR_BOOLEAN && e->type != DSQ_PQR_INT32 && e->type != DSQ_PQR_INT64 &&
            e->type != DSQ_PQR_FLOAT && e->type != DSQ_PQR_DOUBLE && e->type != DSQ_PQR_BYTE_ARRAY) {
            footer_refuse(t, f, "column %s is %s: not read", name, type_name(e->type));
            goto fail;
        }
        c->type = (dsq_pqr_type)e->type;
        c->nullable = e->rep == REP_OPTIONAL;
        c->field_id = e->has_fid ? e->fid : -1;
        c->converted_type = e->has_conv ? e->conv : -1;
        c->logical_id = e->logical_id;
        c->logical = DSQ_PQ_PLAIN_TYPE;
        if (c->type == DSQ_PQR_BYTE_ARRAY &&
            (e->logical_id == LT_STRING || (e->logical_id == 0 && c->converted_type == CONV_UTF8)))
            c->logical = DSQ_PQ_STRING;
        if (c->type == DSQ_PQR_INT64 && e->logical_id == LT_TIMESTAMP && e->ts_unit == 2) {
            c->logical = DSQ_PQ_TIMESTAMP_US;
            c->utc = e->ts_utc;
        } else if (c->type == DSQ_PQR_INT64 && e->logical_id == 0 && c->converted_type == CONV_TIMESTAMP_MICROS) {
            c->logical = DSQ_PQ_TIMESTAMP_US;
            c->utc = true; /* the converted type meant UTC instants */
        }
    }
    free(el);
    return 0;
fail:
    free(el);
    return -1;
}

static int stats_field(tc_rd *t, void *ctx, int id, int type)
{
    dsq_pqr_stats *s = ctx;
    dsq_pqr_bound *b = NULL;
    switch (id) {
    case 1: b = &s->max; break;
    case 2: b = &s->min; break;
    case 5: b = &s->max_value; break;
    case 6: b = &s->min_value; break;
    case 3: s->has_null_count = true; return rd_int(t, type, 0, INT64_MAX, &s->null_count);
    case 9: s->has_nan_count = true; return rd_int(t, type, 0, INT64_MAX, &s->nan_count);
    case 7: return rd_bool(t, type, &s->max_exact);
    case 8: return rd_bool(t, type, &s->min_exact);
    default: return 1;
    }
    b->set = true;
    return rd_binary(t, type, &b->p, &b->n);
}

/* A ColumnChunk being decoded, with what is checked after. */
typedef struct pq_cc {
    dsq_pqr_chunk *ch;
    bool has_meta, external, encrypted;
    uint32_t seen;             /* ColumnMetaData's fields, 1 << id */
    int32_t type;
    size_t npath;
    const uint8_t *path;
    size_t path_n;
} pq_cc;

static int cmd_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_cc *cc = ctx;
    dsq_pqr_chunk *ch = cc->ch;
    if (id >= 1 && id <= 12)
        cc->seen |= 1u << id;
    switch (id) {
    case 1: return rd_i32(t, type, &cc->type);
    case 3: {
        int et;
        if (rd_list(t, type, &et, &cc->npath) != 0)
            return -1;
        if (et != TC_BINARY)
            return rd_fail(t, "path_in_schema is not a list of strings");
        for (size_t i = 0; i < cc->npath; i++) {
            const uint8_t *p;
            size_t n;
            if (rd_binary(t, TC_BINARY, &p, &n) != 0)
                return -1;
            if (i == 0) {
                cc->path = p;
                cc->path_n = n;
            }
        }
        return 0;
    }
    case 4: {
        int32_t c;
        if (rd_i32(t, type, &c) != 0)
            return -1;
        ch->codec = c;
        return 0;
    }
    case 5: return rd_int(t, type, 0, INT64_MAX, &ch->num_values);
    case 6: return rd_int(t, type, 0, INT64_MAX, &ch->total_uncompressed_size);
    case 7: return rd_int(t, type, 0, INT64_MAX, &ch->total_compressed_size);
    case 9: return rd_int(t, type, 0, INT64_MAX, &ch->data_page_offset);
    case 11: return rd_int(t, type, 0, INT64_MAX, &ch->dictionary_page_offset);
    case 12:
        if (type != TC_STRUCT)
            return rd_fail(t, "ColumnMetaData.statistics is not a struct");
        memset(&ch->stats, 0, sizeof ch->stats);
        return rd_struct(t, stats_field, &ch->stats);
    }
    return 1;
}

static int chunk_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_cc *cc = ctx;
    switch (id) {
    case 1: cc->external = true; return 1;
    case 3:
        if (type != TC_STRUCT)
            return rd_fail(t, "ColumnChunk.meta_data is not a struct");
        if (cc->has_meta)
            return rd_fail(t, "a column chunk with two meta_data");
        cc->has_meta = true;
        return rd_struct(t, cmd_field, cc);
    case 8:
    case 9: cc->encrypted = true; return 1;
    }
    return 1;
}

/* A chunk's checks against the schema and the file. */
static int check_chunk(tc_rd *t, pq_footer *f, const pq_cc *cc, const dsq_pqr_column *c, size_t g)
{
    const dsq_pqr_chunk *ch = cc->ch;
    const uint32_t need = 1u << 1 | 1u << 4 | 1u << 5 | 1u << 6 | 1u << 7 | 1u << 9;
    if (cc->encrypted)
        return footer_refuse(t, f, "column %s is encrypted: not read", c->name);
    if (cc->external)
        return footer_refuse(t, f, "column %s of row group %zu is in another file: not read", c->name, g);
    if (!cc->has_meta || (cc->seen & need) != need)
        return footer_refuse(t, f, "column %s of row group %zu has no complete metadata", c->name, g);
    if (cc->type != (int32_t)c->type || cc->npath != 1 || cc->path_n != strlen(c->name) ||
        memcmp(cc->path, c->name, cc->path_n) != 0)
        return footer_refuse(t, f, "column %s of row group %zu does not match the schema", c->name, g);
    /* The pages: from the dictionary page (or the first data page) on,
     * total_compressed_size bytes, between the magic and the footer. */
    int64_t start = ch->data_page_offset;
    if (ch->dictionary_page_offset >= 0 && ch->dictionary_page_offset < start)
        start = ch->dictionary_page_offset;
    int64_t lim = (int64_t)f->r->footer_start;
    if (start < 4 || ch->total_compressed_size > lim - start ||
        ch->data_page_offset - start >= ch->total_compressed_size ||
        ch->dictionary_page_offset - start >= ch->total_compressed_size)
        return footer_refuse(t, f, "column %s of row group %zu lies outside the file's pages", c->name, g);
    return 0;
}

typedef struct pq_rgctx {
    pq_footer *f;
    dsq_pqr_row_group *rg;
    size_t g;
    uint32_t seen;
} pq_rgctx;

static int rg_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_rgctx *x = ctx;
    dsq_pqr_row_group *rg = x->rg;
    dsq_pqr *r = x->f->r;
    if (id >= 1 && id <= 7)
        x->seen |= 1u << id;
    switch (id) {
    case 1: {
        int et;
        size_t n;
        if (rg->chunks != NULL)
            return rd_fail(t, "a row group with two lists of columns");
        if (rd_list(t, type, &et, &n) != 0)
            return -1;
        if (et != TC_STRUCT || n != r->ncols)
            return footer_refuse(t, x->f, "row group %zu has %zu column chunks for %zu columns", x->g, n, r->ncols);
        if ((rg->chunks = calloc(n ? n : 1, sizeof *rg->chunks)) == NULL)
            return rd_fail(t, "out of memory");
        for (size_t i = 0; i < n; i++) {
            dsq_pqr_chunk *ch = &rg->chunks[i];
            ch->dictionary_page_offset = -1;
            pq_cc cc = {.ch = ch};
            if (rd_struct(t, chunk_field, &cc) != 0)
                return -1;
            if (ch->dictionary_page_offset == 0)
                ch->dictionary_page_offset = -1; /* some writers say 0 for none: the magic is there */
            /* num_values against num_rows (which may come after): by the caller */
            if (check_chunk(t, x->f, &cc, &r->cols[i], x->g) != 0)
                return -1;
        }
        return 0;
    }
    case 2: return rd_int(t, type, 0, INT64_MAX, &rg->total_byte_size);
    case 3: return rd_int(t, type, 0, INT64_MAX, &rg->num_rows);
    case 5: return rd_int(t, type, 0, INT64_MAX, &rg->file_offset);
    case 6: return rd_int(t, type, 0, INT64_MAX, &rg->total_compressed_size);
    }
    return 1;
}

static int read_row_groups(tc_rd *t, pq_footer *f, int type)
{
    dsq_pqr *r = f->r;
    int et;
    size_t n;
    if (f->has_rgs)
        return rd_fail(t, "two lists of row groups");
    f->has_rgs = true;
    if (!f->has_schema)
        return footer_refuse(t, f, "the row groups come before the schema");
    if (rd_list(t, type, &et, &n) != 0)
        return -1;
    if (et != TC_STRUCT)
        return rd_fail(t, "row_groups is not a list of structs");
    if ((r->rgs = calloc(n ? n : 1, sizeof *r->rgs)) == NULL)
        return rd_fail(t, "out of memory");
    for (size_t g = 0; g < n; g++) {
        dsq_pqr_row_group *rg = &r->rgs[g];
        rg->file_offset = -1;
        rg->total_compressed_size = -1;
        r->nrgs = g + 1; /* freed at close */
        pq_rgctx x = {.f = f, .rg = rg, .g = g};
        if (rd_struct(t, rg_field, &x) != 0)
            return -1;
        if ((x.seen & (1u << 1 | 1u << 3)) != (1u << 1 | 1u << 3))
            return footer_refuse(t, f, "row group %zu has no columns or no row count", g);
        for (size_t i = 0; i < r->ncols; i++)
            if (rg->chunks[i].num_values != rg->num_rows)
                return footer_refuse(t, f, "column %s of row group %zu has %lld values for %lld rows",
                                     r->cols[i].name, g, (long long)rg->chunks[i].num_values,
                                     (long long)rg->num_rows);
    }
    return 0;
}

static int order_field(tc_rd *t, void *ctx, int id, int type)
{
    bool *type_order = ctx;
    if (id == 1 && type == TC_STRUCT)
        *type_order = true;
    return 1;
}

static int read_orders(tc_rd *t, pq_footer *f, int type)
{
    dsq_pqr *r = f->r;
    int et;
    size_t n;
    if (rd_list(t, type, &et, &n) != 0)
        return -1;
    if (et != TC_STRUCT)
        return rd_fail(t, "column_orders is not a list of structs");
    for (size_t i = 0; i < n; i++) {
        bool to = false;
        if (rd_struct(t, order_field, &to) != 0)
            return -1;
        if (f->has_schema && n == r->ncols)
            r->cols[i].type_order = to;
    }
    return 0;
}

static int fmd_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_footer *f = ctx;
    dsq_pqr *r = f->r;
    switch (id) {
    case 2: return read_schema(t, f, type);
    case 3: f->has_rows = true; return rd_int(t, type, 0, INT64_MAX, &r->num_rows);
    case 4: return read_row_groups(t, f, type);
    case 6: {
        const uint8_t *p;
        size_t n;
        if (r->created_by != NULL)
            return rd_fail(t, "two created_by");
        if (rd_binary(t, type, &p, &n) != 0)
            return -1;
        if ((r->created_by = malloc(n + 1)) == NULL)
            return rd_fail(t, "out of memory");
        memcpy(r->created_by, p, n);
        r->created_by[n] = '\0';
        return 0;
    }
    case 7: return read_orders(t, f, type);
    case 8:
    case 9: f->encrypted = true; return 1;
    }
    return 1;
}

dsq_pqr *dsq_pqr_open(const void *p, size_t n, char *err, size_t errlen)
{
    dsq_pqr *r = calloc(1, sizeof *r);
    if (r == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->file = p;
    r->size = n;
    const uint8_t *b = p;
    if (n < 12 || memcmp(b, PQ_MAGIC, 4) != 0) {
        set_err(r, "not a Parquet file (no PAR1 at its start)");
        goto fail;
    }
    if (memcmp(b + n - 4, "PARE", 4) == 0) {
        set_err(r, "an encrypted Parquet file (PARE): not read");
        goto fail;
    }
    if (memcmp(b + n - 4, PQ_MAGIC, 4) != 0) {
        set_err(r, "not a Parquet file (no PAR1 at its end)");
        goto fail;
    }
    uint32_t flen = get_le32(b + n - 8);
    if (flen == 0 || flen > n - 12) {
        set_err(r, "a footer length of %u in a file of %zu bytes", flen, n);
        goto fail;
    }
    r->footer_start = n - 8 - flen;
    tc_rd t = {.p = b + r->footer_start, .end = b + n - 8};
    pq_footer f = {.r = r};
    if (rd_struct(&t, fmd_field, &f) != 0) {
        if (f.bad != NULL)
            set_err(r, "%s", f.bad);
        else
            set_err(r, "a corrupt footer: %s", t.err);
        goto fail;
    }
    if (f.encrypted) {
        set_err(r, "an encrypted Parquet file: not read");
        goto fail;
    }
    if (!f.has_schema || !f.has_rows || !f.has_rgs) {
        set_err(r, "a corrupt footer: no schema, row count or row groups");
        goto fail;
    }
    int64_t sum = 0;
    for (size_t g = 0; g < r->nrgs; g++) {
        if (r->rgs[g].num_rows > INT64_MAX - sum) {
            set_err(r, "a corrupt footer: the row groups' rows overflow");
            goto fail;
        }
        sum += r->rgs[g].num_rows;
    }
    if (sum != r->num_rows) {
        set_err(r, "a corrupt footer: %lld rows, but its row groups hold %lld", (long long)r->num_rows,
                (long long)sum);
        goto fail;
    }
    return r;
fail:
    if (err != NULL)
        snprintf(err, errlen, "%s", r->err);
    dsq_pqr_close(r);
    return NULL;
}

void dsq_pqr_close(dsq_pqr *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->ncols; i++)
        free((char *)r->cols[i].name);
    free(r->cols);
    for (size_t g = 0; g < r->nrgs; g++)
        free(r->rgs[g].chunks);
    free(r->rgs);
    free(r->created_by);
    ZSTD_freeDCtx(r->zd);
    free(r->page);
    free(r->lv);
    free(r);
}

const char *dsq_pqr_error(const dsq_pqr *r) { return r->err; }
int64_t dsq_pqr_num_rows(const dsq_pqr *r) { return r->num_rows; }
const char *dsq_pqr_created_by(const dsq_pqr *r) { return r->created_by != NULL ? r->created_by : ""; }
size_t dsq_pqr_ncols(const dsq_pqr *r) { return r->ncols; }
size_t dsq_pqr_nrow_groups(const dsq_pqr *r) { return r->nrgs; }

const dsq_pqr_column *dsq_pqr_column_at(const dsq_pqr *r, size_t col)
{
    return col < r->ncols ? &r->cols[col] : NULL;
}

const dsq_pqr_row_group *dsq_pqr_row_group_at(const dsq_pqr *r, size_t rg)
{
    return rg < r->nrgs ? &r->rgs[rg] : NULL;
}

int dsq_pqr_find(const dsq_pqr *r, const char *name)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strcmp(r->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

static double get_float(const uint8_t *p)
{
    uint32_t u = get_le32(p);
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static double get_double(const uint8_t *p)
{
    uint64_t u = get_le64(p);
    double x;
    memcpy(&x, &u, 8);
    return x;
}

int dsq_pqr_bound_value(const dsq_pqr_column *c, const dsq_pqr_bound *b, dsq_pq_value *out)
{
    if (!b->set)
        return -1;
    switch (c->type) {
    case DSQ_PQR_BOOLEAN:
        if (b->n != 1)
            return -1;
        *out = dsq_pq_bool(b->p[0] != 0);
        return 0;
    case DSQ_PQR_INT32:
        if (b->n != 4)
            return -1;
        *out = dsq_pq_int((int32_t)get_le32(b->p));
        return 0;
    case DSQ_PQR_INT64:
        if (b->n != 8)
            return -1;
        *out = dsq_pq_int((int64_t)get_le64(b->p));
        return 0;
    case DSQ_PQR_FLOAT:
        if (b->n != 4)
            return -1;
        *out = dsq_pq_double(get_float(b->p));
        return 0;
    case DSQ_PQR_DOUBLE:
        if (b->n != 8)
            return -1;
        *out = dsq_pq_double(get_double(b->p));
        return 0;
    case DSQ_PQR_BYTE_ARRAY: *out = dsq_pq_bytes(b->p, b->n); return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------------- */
/* A column chunk                                                         */

/* What is kept of a PageHeader. */
typedef struct pq_page {
    uint32_t seen;             /* PageHeader's fields, 1 << id */
    int32_t type, ulen, clen;
    int sub;                   /* which header came: 5 data, 7 dictionary, 8 data V2, 0 none */
    uint32_t sub_seen;         /* its fields, 1 << id */
    int32_t nvalues, encoding, def_enc, num_nulls, num_rows, def_len, rep_len;
    bool compressed;           /* V2: is_compressed (true when not said) */
} pq_page;

static int dph_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_page *h = ctx;
    if (id >= 1 && id <= 4)
        h->sub_seen |= 1u << id;
    switch (id) {
    case 1: return rd_i32(t, type, &h->nvalues);
    case 2: return rd_i32(t, type, &h->encoding);
    case 3: return rd_i32(t, type, &h->def_enc);
    }
    return 1;
}

static int dict_hdr_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_page *h = ctx;
    if (id >= 1 && id <= 2)
        h->sub_seen |= 1u << id;
    switch (id) {
    case 1: return rd_i32(t, type, &h->nvalues);
    case 2: return rd_i32(t, type, &h->encoding);
    }
    return 1;
}

static int v2_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_page *h = ctx;
    if (id >= 1 && id <= 7)
        h->sub_seen |= 1u << id;
    switch (id) {
    case 1: return rd_i32(t, type, &h->nvalues);
    case 2: return rd_i32(t, type, &h->num_nulls);
    case 3: return rd_i32(t, type, &h->num_rows);
    case 4: return rd_i32(t, type, &h->encoding);
    case 5: return rd_i32(t, type, &h->def_len);
    case 6: return rd_i32(t, type, &h->rep_len);
    case 7: return rd_bool(t, type, &h->compressed);
    }
    return 1;
}

static int page_field(tc_rd *t, void *ctx, int id, int type)
{
    pq_page *h = ctx;
    if (id >= 1 && id <= 8)
        h->seen |= 1u << id;
    switch (id) {
    case 1: return rd_i32(t, type, &h->type);
    case 2: return rd_i32(t, type, &h->ulen);
    case 3: return rd_i32(t, type, &h->clen);
    case 5:
    case 7:
    case 8:
        if (type != TC_STRUCT)
            return rd_fail(t, "a page's header is not a struct");
        if (h->sub != 0)
            return rd_fail(t, "a page with two headers");
        h->sub = id;
        return rd_struct(t, id == 5 ? dph_field : id == 7 ? dict_hdr_field : v2_field, h);
    }
    return 1;
}

/* A column chunk being read. */
typedef struct pq_cur {
    dsq_pqr *r;
    const dsq_pqr_column *c;
    const dsq_pqr_chunk *ch;
    dsq_pqr_values *out;
    size_t g;
    dsq_pq_value *dict;        /* owned: the dictionary page's values */
    size_t ndict;
    bool have_dict, have_data;
} pq_cur;

static int cur_err(pq_cur *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cur_err(pq_cur *k, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    set_err(k->r, "column %s of row group %zu: %s", k->c->name, k->g, why);
    return -1;
}

static int grow_lv(pq_cur *k, size_t n)
{
    dsq_pqr *r = k->r;
    if (n <= r->lv_cap)
        return 0;
    uint32_t *lv = realloc(r->lv, n * sizeof *lv);
    if (lv == NULL)
        return cur_err(k, "out of memory");
    r->lv = lv;
    r->lv_cap = n;
    return 0;
}

/* A page's (or a V2 page's values') bytes, decompressed: src itself when
 * uncompressed, else a block the values keep (keep: BYTES will point
 * into it) or the reader's scratch. */
static int page_bytes(pq_cur *k, const uint8_t *src, size_t clen, size_t ulen, bool compressed, bool keep,
                      const uint8_t **body)
{
    dsq_pqr *r = k->r;
    if (!compressed || k->ch->codec == DSQ_PQR_UNCOMPRESSED) {
        if (clen != ulen)
            return cur_err(k, "an uncompressed page of %zu bytes says %zu", clen, ulen);
        *body = src;
        return 0;
    }
    if (ulen > DSQ_PQR_MAX_PAGE || ulen / DSQ_PQR_MAX_RATIO > clen)
        return cur_err(k, "a page of %zu bytes says it holds %zu (over the limit)", clen, ulen);
    unsigned long long fcs = ZSTD_getFrameContentSize(src, clen);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ulen))
        return cur_err(k, "a page's zstd frame is corrupt or not of its size");
    uint8_t *dst;
    if (keep) {
        pqr_block *b = malloc(sizeof *b + (ulen ? ulen : 1));
        if (b == NULL)
            return cur_err(k, "out of memory");
        b->n = ulen;
        b->next = k->out->blocks;
        k->out->blocks = b;
        dst = b->data;
    } else {
        if (ulen > r->page_cap || r->page == NULL) {
            uint8_t *pg = realloc(r->page, ulen ? ulen : 1);
            if (pg == NULL)
                return cur_err(k, "out of memory");
            r->page = pg;
            r->page_cap = ulen;
        }
        dst = r->page;
    }
    if (r->zd == NULL && (r->zd = ZSTD_createDCtx()) == NULL)
        return cur_err(k, "out of memory");
    size_t z = ZSTD_decompressDCtx(r->zd, dst, ulen, src, clen);
    if (ZSTD_isError(z) || z != ulen)
        return cur_err(k, "a page does not decompress to its size (%s)",
                       ZSTD_isError(z) ? ZSTD_getErrorName(z) : "short");
    *body = dst;
    return 0;
}

/* n PLAIN values of the column's type from p[0..len) into v. */
static int plain_values(pq_cur *k, const uint8_t *p, size_t len, dsq_pq_value *v, size_t n)
{
    size_t w = 0;
    switch (k->c->type) {
    case DSQ_PQR_BOOLEAN:
        if ((n + 7) / 8 > len)
            return cur_err(k, "%zu booleans in %zu bytes", n, len);
        for (size_t i = 0; i < n; i++)
            v[i] = dsq_pq_bool((p[i / 8] >> (i % 8)) & 1);
        return 0;
    case DSQ_PQR_INT32:
    case DSQ_PQR_FLOAT: w = 4; break;
    case DSQ_PQR_INT64:
    case DSQ_PQR_DOUBLE: w = 8; break;
    case DSQ_PQR_BYTE_ARRAY: {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            if (len - off < 4)
                return cur_err(k, "value %zu of %zu runs past its page", i, n);
            size_t vn = get_le32(p + off);
            off += 4;
            if (vn > len - off)
                return cur_err(k, "value %zu of %zu runs past its page", i, n);
            v[i] = dsq_pq_bytes(p + off, vn);
            off += vn;
        }
        return 0;
    }
    }
    if (n > len / w)
        return cur_err(k, "%zu values in %zu bytes", n, len);
    for (size_t i = 0; i < n; i++, p += w) {
        switch (k->c->type) {
        case DSQ_PQR_INT32: v[i] = dsq_pq_int((int32_t)get_le32(p)); break;
        case DSQ_PQR_INT64: v[i] = dsq_pq_int((int64_t)get_le64(p)); break;
        case DSQ_PQR_FLOAT: v[i] = dsq_pq_double(get_float(p)); break;
        default: v[i] = dsq_pq_double(get_double(p)); break;
        }
    }
    return 0;
}

static int read_dict(pq_cur *k, const pq_page *h, const uint8_t *src)
{
    if (k->have_dict || k->have_data)
        return cur_err(k, "a dictionary page that is not the chunk's first page");
    k->have_dict = true;
    if (h->sub != 7 || (h->sub_seen & 6) != 6 || h->nvalues < 0)
        return cur_err(k, "a dictionary page without its header");
    if (h->encoding != ENC_PLAIN && h->encoding != ENC_PLAIN_DICTIONARY)
        return cur_err(k, "a dictionary in %s: not read", encoding_name(h->encoding));
    size_t ulen = (size_t)h->ulen, n = (size_t)h->nvalues;
    /* No more entries than the chunk's rows (a writer puts in those it
     * uses), nor than its page holds: an allocation a footer cannot blow up. */
    size_t minbits = k->c->type == DSQ_PQR_BOOLEAN ? 1 : k->c->type == DSQ_PQR_INT32 || k->c->type == DSQ_PQR_FLOAT ? 32
                     : k->c->type == DSQ_PQR_BYTE_ARRAY ? 32 : 64;
    if (n > k->out->n || n > ulen * 8 / minbits)
        return cur_err(k, "a dictionary of %zu values in %zu bytes for %zu rows", n, ulen, k->out->n);
    const uint8_t *body;
    if (page_bytes(k, src, (size_t)h->clen, ulen, true, k->c->type == DSQ_PQR_BYTE_ARRAY, &body) != 0)
        return -1;
    if ((k->dict = malloc((n ? n : 1) * sizeof *k->dict)) == NULL)
        return cur_err(k, "out of memory");
    k->ndict = n;
    return plain_values(k, body, ulen, k->dict, n);
}

/* nn non-null values of a data page, in encoding enc, from p[0..len)
 * into v. */
static int page_values(pq_cur *k, int enc, const uint8_t *p, size_t len, dsq_pq_value *v, size_t nn)
{
    if (enc == ENC_PLAIN)
        return plain_values(k, p, len, v, nn);
    if (enc == ENC_RLE && k->c->type == DSQ_PQR_BOOLEAN) { /* a 4-byte length, then the hybrid at width 1 */
        if (len < 4 || get_le32(p) > len - 4)
            return cur_err(k, "RLE booleans run past their page");
        if (grow_lv(k, nn) != 0)
            return -1;
        if (dsq_pqr_rle_decode(p + 4, get_le32(p), 1, k->r->lv, nn) != 0)
            return cur_err(k, "corrupt RLE booleans");
        for (size_t i = 0; i < nn; i++)
            v[i] = dsq_pq_bool(k->r->lv[i] != 0);
        return 0;
    }
    if (enc == ENC_RLE_DICTIONARY || enc == ENC_PLAIN_DICTIONARY) { /* a byte of bit width, then the hybrid */
        if (!k->have_dict)
            return cur_err(k, "dictionary indices without a dictionary page");
        if (nn == 0)
            return 0;
        if (len < 1 || p[0] > 32)
            return cur_err(k, "dictionary indices without a bit width");
        if (grow_lv(k, nn) != 0)
            return -1;
        if (dsq_pqr_rle_decode(p + 1, len - 1, p[0], k->r->lv, nn) != 0)
            return cur_err(k, "corrupt dictionary indices");
        for (size_t i = 0; i < nn; i++) {
            if (k->r->lv[i] >= k->ndict)
                return cur_err(k, "a dictionary index %u past its %zu entries", k->r->lv[i], k->ndict);
            v[i] = k->dict[k->r->lv[i]];
        }
        return 0;
    }
    return cur_err(k, "values in %s: not read", encoding_name(enc));
}

/* A data page (V1 or V2) of the chunk: its rows from out->v[done] on. */
static int read_data(pq_cur *k, const pq_page *h, const uint8_t *src, size_t *done)
{
    k->have_data = true;
    bool v2 = h->type == PAGE_DATA_V2;
    uint32_t need = v2 ? (1u << 1 | 1u << 2 | 1u << 4 | 1u << 5 | 1u << 6) : (1u << 1 | 1u << 2);
    if (h->sub != (v2 ? 8 : 5) || (h->sub_seen & need) != need)
        return cur_err(k, "a data page without its header");
    size_t rows = k->out->n;
    if (h->nvalues < 0 || (size_t)h->nvalues > rows - *done)
        return cur_err(k, "a page of %d values past the chunk's %zu rows", h->nvalues, rows);
    size_t nv = (size_t)h->nvalues, clen = (size_t)h->clen, ulen = (size_t)h->ulen;
    dsq_pq_value *v = k->out->v + *done;
    bool keep = k->c->type == DSQ_PQR_BYTE_ARRAY && h->encoding == ENC_PLAIN;
    const uint8_t *lev = NULL, *vals;
    size_t lev_n = 0, vals_n;
    if (v2) {
        if (h->rep_len != 0)
            return cur_err(k, "repetition levels in a flat column");
        if (h->def_len < 0 || (size_t)h->def_len > clen || (size_t)h->def_len > ulen)
            return cur_err(k, "definition levels past their page");
        lev = src;
        lev_n = (size_t)h->def_len;
        vals_n = ulen - lev_n;
        if (page_bytes(k, src + lev_n, clen - lev_n, vals_n, h->compressed, keep, &vals) != 0)
            return -1;
    } else {
        const uint8_t *body;
        if (page_bytes(k, src, clen, ulen, true, keep, &body) != 0)
            return -1;
        vals = body;
        vals_n = ulen;
        if (k->c->nullable) {
            if (h->def_enc != ENC_RLE)
                return cur_err(k, "definition levels in %s: not read", encoding_name(h->def_enc));
            if (ulen < 4 || get_le32(body) > ulen - 4)
                return cur_err(k, "definition levels past their page");
            lev = body + 4;
            lev_n = get_le32(body);
            vals = body + 4 + lev_n;
            vals_n = ulen - 4 - lev_n;
        }
    }
    size_t nn = nv;
    if (k->c->nullable) {
        if (grow_lv(k, nv) != 0)
            return -1;
        if (dsq_pqr_rle_decode(lev, lev_n, 1, k->r->lv, nv) != 0)
            return cur_err(k, "corrupt definition levels");
        nn = 0;
        for (size_t i = 0; i < nv; i++)
            nn += k->r->lv[i];
        if (v2 && (size_t)h->num_nulls != nv - nn)
            return cur_err(k, "a V2 page of %d nulls with %zu null levels", h->num_nulls, nv - nn);
        /* The levels are needed after the values are decoded (which may
         * use the same scratch): the nulls are marked now, in place. */
        for (size_t i = 0; i < nv; i++)
            v[i].kind = k->r->lv[i] ? DSQ_PQ_INT : DSQ_PQ_NULL;
    }
    if (nn == nv)
        return page_values(k, h->encoding, vals, vals_n, v, nv);
    /* The non-null values packed at the start, then spread out to their
     * rows from the end (a value only ever moves later). */
    dsq_pq_value *tmp = malloc((nn ? nn : 1) * sizeof *tmp);
    if (tmp == NULL)
        return cur_err(k, "out of memory");
    if (page_values(k, h->encoding, vals, vals_n, tmp, nn) != 0) {
        free(tmp);
        return -1;
    }
    size_t j = 0;
    for (size_t i = 0; i < nv; i++)
        v[i] = v[i].kind == DSQ_PQ_NULL ? dsq_pq_null() : tmp[j++];
    free(tmp);
    return 0;
}

void dsq_pqr_values_free(dsq_pqr_values *v)
{
    pqr_block *b = v->blocks;
    while (b != NULL) {
        pqr_block *next = b->next;
        free(b);
        b = next;
    }
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* The chunk's pages in order until its rows are all read: a dictionary
 * page first if any, data pages, index pages skipped. */
static int read_pages(pq_cur *k)
{
    const dsq_pqr_chunk *ch = k->ch;
    const uint8_t *file = k->r->file;
    size_t pos = (size_t)(ch->dictionary_page_offset >= 0 ? ch->dictionary_page_offset : ch->data_page_offset);
    size_t end = pos + (size_t)ch->total_compressed_size;
    size_t done = 0;
    while (done < k->out->n) {
        if (pos >= end)
            return cur_err(k, "the chunk ends after %zu of its %zu rows", done, k->out->n);
        tc_rd t = {.p = file + pos, .end = file + end};
        pq_page h = {.compressed = true};
        if (rd_struct(&t, page_field, &h) != 0)
            return cur_err(k, "a corrupt page header at %zu: %s", pos, t.err);
        const uint32_t need = 1u << 1 | 1u << 2 | 1u << 3;
        if ((h.seen & need) != need || h.ulen < 0 || h.clen < 0)
            return cur_err(k, "a page header at %zu without its type or sizes", pos);
        const uint8_t *src = t.p;
        if ((size_t)h.clen > rd_left(&t))
            return cur_err(k, "a page at %zu runs past its chunk", pos);
        pos = (size_t)(src - file) + (size_t)h.clen;
        int rc;
        switch (h.type) {
        case PAGE_DICTIONARY:
            rc = read_dict(k, &h, src);
            k->out->dictionary = true;
            break;
        case PAGE_DATA:
        case PAGE_DATA_V2:
            rc = read_data(k, &h, src, &done);
            done += rc == 0 ? (size_t)h.nvalues : 0;
            k->out->data_pages++;
            break;
        case PAGE_INDEX: rc = 0; break;
        default: rc = cur_err(k, "a page of an unknown type %d", h.type); break;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

int dsq_pqr_col_read(dsq_pqr *r, size_t rg, size_t col, dsq_pqr_values *out)
{
    memset(out, 0, sizeof *out);
    if (rg >= r->nrgs || col >= r->ncols) {
        set_err(r, "no column %zu of row group %zu", col, rg);
        return -1;
    }
    pq_cur k = {.r = r, .c = &r->cols[col], .ch = &r->rgs[rg].chunks[col], .out = out, .g = rg};
    int64_t rows = r->rgs[rg].num_rows;
    if (k.ch->codec != DSQ_PQR_UNCOMPRESSED && k.ch->codec != DSQ_PQR_ZSTD)
        return cur_err(&k, "codec %s: not read (only UNCOMPRESSED and ZSTD)", codec_name(k.ch->codec));
    if (rows > DSQ_PQR_MAX_GROUP_ROWS)
        return cur_err(&k, "%lld rows: over the reader's limit of %lld a row group", (long long)rows,
                       (long long)DSQ_PQR_MAX_GROUP_ROWS);
    out->n = (size_t)rows;
    if ((out->v = calloc(out->n ? out->n : 1, sizeof *out->v)) == NULL) {
        out->n = 0;
        return cur_err(&k, "out of memory");
    }
    int rc = read_pages(&k);
    free(k.dict);
    if (rc != 0)
        dsq_pqr_values_free(out);
    return rc;
}
