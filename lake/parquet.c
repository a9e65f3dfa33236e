/* parquet — a streaming writer of Apache Parquet files (parquet.h).
 *
 * A row group is held in memory column by column: each column keeps its
 * non-null values already PLAIN-encoded (a BOOLEAN one byte each, packed to
 * bits only when a page is made), a byte per row saying whether the value
 * is there (nullable columns), and for BYTE_ARRAY columns the dictionary
 * built as the values come. At a flush each column becomes, in order, its
 * dictionary page (when the dictionary held), its data pages of about
 * options.page_bytes, each with its statistics; the footer at close lists
 * every row group's column chunks. */
#include "lake/parquet.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "common/util.h"

/* parquet.thrift's enums, as written. */
enum { ENC_PLAIN = 0, ENC_RLE = 3, ENC_RLE_DICTIONARY = 8 };
enum { PAGE_DATA = 0, PAGE_DICTIONARY = 2 };
enum { REP_REQUIRED = 0, REP_OPTIONAL = 1 };
enum { CONV_UTF8 = 0, CONV_TIMESTAMP_MICROS = 10 };

#define PQ_MAGIC "PAR1"
#define PQ_MAX_VALUE_BYTES ((size_t)1 << 30) /* one BYTE_ARRAY value: a page's size must fit an i32 */

/* ---------------------------------------------------------------------- */
/* Thrift compact protocol                                                */

void dsq_tc_init(dsq_tc *t, dsq_buf *out)
{
    memset(t, 0, sizeof *t);
    t->out = out;
}

static void tc_put(dsq_tc *t, const void *p, size_t n)
{
    if (t->err == 0 && dsq_buf_append(t->out, p, n) != 0)
        t->err = -1;
}

void dsq_tc_varint(dsq_tc *t, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    tc_put(t, b, n);
}

static uint64_t zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

/* A field's header: the delta from the previous field id in the high
 * nibble when it is 1 to 15, else a zero nibble and the id in full. */
void dsq_tc_field(dsq_tc *t, int16_t id, int type)
{
    int delta = id - t->last[t->depth];
    if (delta > 0 && delta <= 15) {
        uint8_t b = (uint8_t)(delta << 4 | type);
        tc_put(t, &b, 1);
    } else {
        uint8_t b = (uint8_t)type;
        tc_put(t, &b, 1);
        dsq_tc_varint(t, zigzag64(id));
    }
    t->last[t->depth] = id;
}

void dsq_tc_i32(dsq_tc *t, int16_t id, int32_t v)
{
    dsq_tc_field(t, id, DSQ_TC_I32);
    dsq_tc_varint(t, zigzag64(v));
}

void dsq_tc_i64(dsq_tc *t, int16_t id, int64_t v)
{
    dsq_tc_field(t, id, DSQ_TC_I64);
    dsq_tc_varint(t, zigzag64(v));
}

/* A bool field has no value byte: its type says true or false. */
void dsq_tc_bool(dsq_tc *t, int16_t id, bool v) { dsq_tc_field(t, id, v ? DSQ_TC_TRUE : DSQ_TC_FALSE); }

void dsq_tc_binary(dsq_tc *t, int16_t id, const void *p, size_t n)
{
    dsq_tc_field(t, id, DSQ_TC_BINARY);
    dsq_tc_elem_binary(t, p, n);
}

static void tc_push(dsq_tc *t)
{
    if (t->depth + 1 >= DSQ_TC_DEPTH) {
        t->err = -1;
        return;
    }
    t->last[++t->depth] = 0;
}

void dsq_tc_struct_begin(dsq_tc *t, int16_t id)
{
    dsq_tc_field(t, id, DSQ_TC_STRUCT);
    tc_push(t);
}

void dsq_tc_elem_struct_begin(dsq_tc *t) { tc_push(t); }

void dsq_tc_struct_end(dsq_tc *t)
{
    uint8_t stop = 0;
    tc_put(t, &stop, 1);
    if (t->depth > 0) /* depth 0: the outermost struct's own stop */
        t->depth--;
}

/* A list's header: the size in the high nibble up to 14, else 0xF and
 * the size as a varint after. */
void dsq_tc_list_begin(dsq_tc *t, int16_t id, int elem_type, size_t n)
{
    dsq_tc_field(t, id, DSQ_TC_LIST);
    if (n < 15) {
        uint8_t b = (uint8_t)(n << 4 | (size_t)elem_type);
        tc_put(t, &b, 1);
    } else {
        uint8_t b = (uint8_t)(0xF0 | elem_type);
        tc_put(t, &b, 1);
        dsq_tc_varint(t, n);
    }
}

void dsq_tc_elem_i32(dsq_tc *t, int32_t v) { dsq_tc_varint(t, zigzag64(v)); }

void dsq_tc_elem_binary(dsq_tc *t, const void *p, size_t n)
{
    dsq_tc_varint(t, n);
    tc_put(t, p, n);
}

/* ---------------------------------------------------------------------- */
/* RLE / bit-packed hybrid (Encodings.md)                                 */

static int put_varint(dsq_buf *b, uint64_t v)
{
    uint8_t x[10];
    size_t n = 0;
    while (v >= 0x80) {
        x[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    x[n++] = (uint8_t)v;
    return dsq_buf_append(b, x, n);
}

static size_t run_len(const uint32_t *v, size_t i, size_t n)
{
    size_t j = i + 1;
    while (j < n && v[j] == v[i])
        j++;
    return j - i;
}

/* Whether 8 equal values start at i (without walking a long run). */
static bool run_of_8(const uint32_t *v, size_t i, size_t n)
{
    if (n - i < 8)
        return false;
    for (size_t k = 1; k < 8; k++)
        if (v[i + k] != v[i])
            return false;
    return true;
}

/* Runs of 8 or more equal values are RLE runs; the rest goes in
 * bit-packed runs of whole groups of 8. Only the last group of the data
 * may be short, padded with zeros: a reader stops at the count of values
 * it was told. */
int dsq_pq_rle_hybrid(dsq_buf *out, const uint32_t *v, size_t n, int bit_width)
{
    if (bit_width < 0 || bit_width > 32)
        return -1;
    size_t vbytes = ((size_t)bit_width + 7) / 8;
    size_t i = 0;
    while (i < n) {
        size_t r = run_len(v, i, n);
        if (r >= 8) {
            uint8_t le[4] = {(uint8_t)v[i], (uint8_t)(v[i] >> 8), (uint8_t)(v[i] >> 16), (uint8_t)(v[i] >> 24)};
            if (put_varint(out, (uint64_t)r << 1) != 0 || dsq_buf_append(out, le, vbytes) != 0)
                return -1;
            i += r;
            continue;
        }
        size_t j = i;
        do
            j += 8;
        while (j < n && !run_of_8(v, j, n));
        size_t groups = (j - i) / 8;
        size_t end = j < n ? j : n;
        if (put_varint(out, (uint64_t)groups << 1 | 1) != 0 || dsq_buf_reserve(out, groups * (size_t)bit_width) != 0)
            return -1;
        uint64_t acc = 0;
        int bits = 0;
        for (size_t k = i; k < j; k++) {
            acc |= (uint64_t)(k < end ? v[k] : 0) << bits;
            bits += bit_width;
            while (bits >= 8) {
                out->data[out->len++] = (char)(uint8_t)acc;
                acc >>= 8;
                bits -= 8;
            }
        }
        i = end;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The writer's state                                                     */

/* Bounds of the values seen, as pointers to their statistics encoding
 * (which is PLAIN's, less a BYTE_ARRAY's length prefix). */
typedef struct pq_acc {
    uint64_t nulls, nans;
    const uint8_t *min, *max;
    size_t min_n, max_n;
} pq_acc;

/* A dictionary of BYTE_ARRAY values: open addressing over the entries,
 * each entry the offset of its first occurrence in the column's values. */
typedef struct pq_dict {
    uint32_t *slots;   /* entry + 1; 0 empty */
    size_t cap;        /* a power of two */
    size_t *off;       /* entry -> offset of its PLAIN value in the column's vals */
    uint64_t *hash;
    uint32_t n, ecap;
    size_t bytes;      /* the dictionary page's PLAIN size */
} pq_dict;

typedef struct pq_col {
    dsq_pq_column c;    /* name owned */
    /* the row group held */
    uint8_t *defs;      /* nullable: 1 per row when the value is there */
    size_t defs_cap;
    dsq_buf vals;       /* the non-null values, PLAIN (BOOLEAN: a byte each) */
    size_t nvals;
    bool dict_on;       /* the values so far are all in dict */
    pq_dict dict;
    uint32_t *idx;      /* dict_on: each value's entry */
    size_t idx_cap;
    /* over the file */
    dsq_pq_col_stats st;
    bool minmax_lost;   /* a chunk had values but no bounds */
} pq_col;

typedef struct pq_chunk {
    int64_t uncompressed, compressed, data_off, dict_off; /* dict_off -1: none */
    int64_t nulls, nans;
    bool has_minmax;
    dsq_buf min, max;
} pq_chunk;

typedef struct pq_rg {
    pq_chunk *chunks;
    int64_t rows, offset, uncompressed, compressed;
} pq_rg;

struct dsq_pq_writer {
    dsq_pq_options o;
    char *created_by;
    pq_col *cols;
    size_t ncols;
    dsq_pq_sink_fn sink;
    void *ctx;
    int fd;
    uint64_t off;        /* bytes handed to the sink */
    bool failed;
    char err[256];
    /* the row group held */
    uint64_t rg_rows, rg_bytes;
    /* done */
    pq_rg *rgs;
    size_t nrgs, rgs_cap;
    uint64_t rows;
    /* scratch */
    dsq_buf page, comp, hdr;
    uint32_t *lv;
    size_t lv_cap;
    ZSTD_CCtx *zc;
};

static void set_err(dsq_pq_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(dsq_pq_writer *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static int fail(dsq_pq_writer *w, const char *what)
{
    if (!w->failed)
        set_err(w, "%s", what);
    w->failed = true;
    return -1;
}

void dsq_pq_options_init(dsq_pq_options *o)
{
    memset(o, 0, sizeof *o);
    o->codec = DSQ_PQ_ZSTD;
    o->zstd_level = 3;
    o->row_group_bytes = (uint64_t)128 << 20;
    o->row_group_rows = (uint64_t)1 << 20;
    o->page_bytes = (size_t)1 << 20;
    o->dictionary = true;
    o->dict_max_bytes = (size_t)1 << 20;
    o->dict_max_entries = 65536;
    o->stats_max_bytes = 4096;
    o->created_by = NULL;
}

dsq_pq_value dsq_pq_str(const char *s) { return dsq_pq_bytes(s, strlen(s)); }

static size_t fixed_width(dsq_pq_type t)
{
    switch (t) {
    case DSQ_PQ_BOOLEAN: return 1;
    case DSQ_PQ_INT32: return 4;
    case DSQ_PQ_INT64:
    case DSQ_PQ_DOUBLE: return 8;
    case DSQ_PQ_BYTE_ARRAY: return 0;
    }
    return 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n == 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
#endif
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static double get_double(const uint8_t *p)
{
    uint64_t u = get_le(p, 8);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* The order of two values in their statistics encoding, by the column
 * order of their type: signed integers, doubles by value, false before
 * true, byte arrays unsigned byte-wise. */
static int stat_cmp(dsq_pq_type t, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    switch (t) {
    case DSQ_PQ_BOOLEAN: return (int)a[0] - (int)b[0];
    case DSQ_PQ_INT32: {
        int32_t x = (int32_t)(uint32_t)get_le(a, 4), y = (int32_t)(uint32_t)get_le(b, 4);
        return (x > y) - (x < y);
    }
    case DSQ_PQ_INT64: {
        int64_t x = (int64_t)get_le(a, 8), y = (int64_t)get_le(b, 8);
        return (x > y) - (x < y);
    }
    case DSQ_PQ_DOUBLE: {
        double x = get_double(a), y = get_double(b);
        return (x > y) - (x < y);
    }
    case DSQ_PQ_BYTE_ARRAY: {
        int c = memcmp(a, b, an < bn ? an : bn);
        if (c != 0)
            return c;
        return (an > bn) - (an < bn);
    }
    }
    return 0;
}

static void acc_value(pq_acc *a, dsq_pq_type t, const uint8_t *p, size_t n)
{
    if (t == DSQ_PQ_DOUBLE && isnan(get_double(p))) {
        a->nans++; /* NaN has no place in the order: counted, kept out of the bounds */
        return;
    }
    if (a->min == NULL || stat_cmp(t, p, n, a->min, a->min_n) < 0) {
        a->min = p;
        a->min_n = n;
    }
    if (a->max == NULL || stat_cmp(t, p, n, a->max, a->max_n) > 0) {
        a->max = p;
        a->max_n = n;
    }
}

static void acc_merge(pq_acc *into, const pq_acc *a, dsq_pq_type t)
{
    into->nulls += a->nulls;
    into->nans += a->nans;
    if (a->min != NULL && (into->min == NULL || stat_cmp(t, a->min, a->min_n, into->min, into->min_n) < 0)) {
        into->min = a->min;
        into->min_n = a->min_n;
    }
    if (a->max != NULL && (into->max == NULL || stat_cmp(t, a->max, a->max_n, into->max, into->max_n) > 0)) {
        into->max = a->max;
        into->max_n = a->max_n;
    }
}

/* Signed zeros: a reader may not know which of -0 and +0 a bound meant,
 * so a zero minimum is written -0.0 and a zero maximum +0.0 (the
 * specification's rule for TYPE_ORDER doubles). */
static const uint8_t NEG_ZERO[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
static const uint8_t POS_ZERO[8] = {0};

static void acc_bounds(const pq_acc *a, dsq_pq_type t, const uint8_t **min, const uint8_t **max)
{
    *min = a->min;
    *max = a->max;
    if (t == DSQ_PQ_DOUBLE && a->min != NULL) {
        if (get_double(a->min) == 0.0)
            *min = NEG_ZERO;
        if (get_double(a->max) == 0.0)
            *max = POS_ZERO;
    }
}

/* Whether the bounds are written: there are some, and a byte array's are
 * not over stats_max_bytes. */
static bool acc_has_bounds(const dsq_pq_writer *w, const pq_acc *a)
{
    return a->min != NULL && a->min_n <= w->o.stats_max_bytes && a->max_n <= w->o.stats_max_bytes;
}

/* A Statistics struct as field `id` of the struct being written. */
static void tc_stats(dsq_tc *t, int16_t id, const dsq_pq_writer *w, dsq_pq_type type, const pq_acc *a)
{
    dsq_tc_struct_begin(t, id);
    bool bounds = acc_has_bounds(w, a);
    const uint8_t *min, *max;
    acc_bounds(a, type, &min, &max);
    /* The deprecated min and max are signed-order: the same as ours but
     * for byte arrays, where they are left out. */
    bool old = bounds && type != DSQ_PQ_BYTE_ARRAY;
    if (old) {
        dsq_tc_binary(t, 1, max, a->max_n);
        dsq_tc_binary(t, 2, min, a->min_n);
    }
    dsq_tc_i64(t, 3, (int64_t)a->nulls);
    if (bounds) {
        dsq_tc_binary(t, 5, max, a->max_n);
        dsq_tc_binary(t, 6, min, a->min_n);
        dsq_tc_bool(t, 7, true);
        dsq_tc_bool(t, 8, true);
    }
    if (type == DSQ_PQ_DOUBLE)
        dsq_tc_i64(t, 9, (int64_t)a->nans);
    dsq_tc_struct_end(t);
}

/* ---------------------------------------------------------------------- */
/* Open                                                                   */

static int fd_sink(void *ctx, const void *p, size_t n)
{
    int fd = *(const int *)ctx;
    const char *s = p;
    while (n > 0) {
        ssize_t k = write(fd, s, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        s += k;
        n -= (size_t)k;
    }
    return 0;
}

static int emit(dsq_pq_writer *w, const void *p, size_t n)
{
    if (w->failed)
        return -1;
    if (n > 0 && w->sink(w->ctx, p, n) != 0)
        return fail(w, "the sink failed");
    w->off += n;
    return 0;
}

static const char *check_schema(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o)
{
    if (ncols == 0)
        return "no columns";
    if (ncols > 32767)
        return "too many columns";
    for (size_t i = 0; i < ncols; i++) {
        const dsq_pq_column *c = &cols[i];
        if (c->name == NULL || c->name[0] == '\0')
            return "a column without a name";
        if (!dsq_utf8_valid((const uint8_t *)c->name, strlen(c->name)))
            return "a column name that is not UTF-8";
        for (size_t j = 0; j < i; j++)
            if (strcmp(cols[j].name, c->name) == 0)
                return "two columns of one name";
        if (c->type != DSQ_PQ_BOOLEAN && c->type != DSQ_PQ_INT32 && c->type != DSQ_PQ_INT64 &&
            c->type != DSQ_PQ_DOUBLE && c->type != DSQ_PQ_BYTE_ARRAY)
            return "an unknown physical type";
        if ((c->logical == DSQ_PQ_STRING && c->type != DSQ_PQ_BYTE_ARRAY) ||
            (c->logical == DSQ_PQ_TIMESTAMP_US && c->type != DSQ_PQ_INT64) ||
            (c->logical != DSQ_PQ_PLAIN_TYPE && c->logical != DSQ_PQ_STRING && c->logical != DSQ_PQ_TIMESTAMP_US))
            return "a logical type its physical type cannot carry";
    }
    if (o->codec != DSQ_PQ_UNCOMPRESSED && o->codec != DSQ_PQ_ZSTD)
        return "an unknown codec";
    if (o->page_bytes == 0 || o->page_bytes > ((size_t)256 << 20))
        return "page_bytes out of range (1 B to 256 MiB)";
    if (o->row_group_bytes == 0 || o->row_group_rows == 0 || o->row_group_rows > INT32_MAX)
        return "row group limits out of range";
    if (o->dict_max_bytes > ((size_t)256 << 20) || o->dict_max_entries > ((uint32_t)1 << 24))
        return "dictionary limits out of range (at most 256 MiB, 16 Mi entries)";
    if (o->codec == DSQ_PQ_ZSTD && (o->zstd_level < ZSTD_minCLevel() || o->zstd_level > ZSTD_maxCLevel()))
        return "zstd_level out of range";
    return NULL;
}

/* fd >= 0: the sink is fd_sink, its context the writer's own copy of fd. */
static dsq_pq_writer *pq_open(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o,
                              dsq_pq_sink_fn sink, void *ctx, int fd, char *err, size_t errlen)
{
    dsq_pq_options def;
    if (o == NULL) {
        dsq_pq_options_init(&def);
        o = &def;
    }
    const char *bad = check_schema(cols, ncols, o);
    if (bad != NULL) {
        if (err != NULL)
            snprintf(err, errlen, "%s", bad);
        return NULL;
    }
    dsq_pq_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        goto oom;
    w->o = *o;
    w->sink = sink;
    w->fd = fd;
    w->ctx = fd >= 0 ? &w->fd : ctx;
    w->created_by = strdup(o->created_by != NULL ? o->created_by : "dosqld version " DSQ_VERSION);
    w->cols = calloc(ncols, sizeof *w->cols);
    if (w->created_by == NULL || w->cols == NULL)
        goto oom;
    w->o.created_by = NULL; /* not kept: the copy is */
    w->ncols = ncols;
    for (size_t i = 0; i < ncols; i++) {
        w->cols[i].c = cols[i];
        w->cols[i].c.name = strdup(cols[i].name);
        if (w->cols[i].c.name == NULL)
            goto oom;
        w->cols[i].dict_on = o->dictionary && cols[i].type == DSQ_PQ_BYTE_ARRAY;
    }
    if (o->codec == DSQ_PQ_ZSTD && (w->zc = ZSTD_createCCtx()) == NULL)
        goto oom;
    if (emit(w, PQ_MAGIC, 4) != 0) {
        if (err != NULL)
            snprintf(err, errlen, "%s", w->err);
        dsq_pq_abort(w);
        return NULL;
    }
    return w;
oom:
    if (err != NULL)
        snprintf(err, errlen, "out of memory");
    dsq_pq_abort(w);
    return NULL;
}

dsq_pq_writer *dsq_pq_open(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o,
                           dsq_pq_sink_fn sink, void *ctx, char *err, size_t errlen)
{
    if (sink == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "no sink");
        return NULL;
    }
    return pq_open(cols, ncols, o, sink, ctx, -1, err, errlen);
}

dsq_pq_writer *dsq_pq_open_fd(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o, int fd,
                              char *err, size_t errlen)
{
    if (fd < 0) {
        if (err != NULL)
            snprintf(err, errlen, "no file descriptor");
        return NULL;
    }
    return pq_open(cols, ncols, o, fd_sink, NULL, fd, err, errlen);
}

const char *dsq_pq_error(const dsq_pq_writer *w) { return w->err; }

static void dict_free(pq_dict *d)
{
    free(d->slots);
    free(d->off);
    free(d->hash);
    memset(d, 0, sizeof *d);
}

static void chunk_free(pq_chunk *c)
{
    dsq_buf_free(&c->min);
    dsq_buf_free(&c->max);
}

void dsq_pq_abort(dsq_pq_writer *w)
{
    if (w == NULL)
        return;
    if (w->cols != NULL) {
        for (size_t i = 0; i < w->ncols; i++) {
            pq_col *c = &w->cols[i];
            free((char *)c->c.name);
            free(c->defs);
            dsq_buf_free(&c->vals);
            dict_free(&c->dict);
            free(c->idx);
            dsq_buf_free(&c->st.min);
            dsq_buf_free(&c->st.max);
        }
    }
    for (size_t r = 0; r < w->nrgs; r++) {
        for (size_t i = 0; i < w->ncols; i++)
            chunk_free(&w->rgs[r].chunks[i]);
        free(w->rgs[r].chunks);
    }
    free(w->rgs);
    free(w->cols);
    free(w->created_by);
    dsq_buf_free(&w->page);
    dsq_buf_free(&w->comp);
    dsq_buf_free(&w->hdr);
    free(w->lv);
    ZSTD_freeCCtx(w->zc);
    free(w);
}

/* ---------------------------------------------------------------------- */
/* Append                                                                 */

static const char *value_misfit(const pq_col *c, const dsq_pq_value *v)
{
    if (v->kind == DSQ_PQ_NULL)
        return c->c.nullable ? NULL : "is not nullable";
    switch (c->c.type) {
    case DSQ_PQ_BOOLEAN: return v->kind == DSQ_PQ_BOOL ? NULL : "takes booleans";
    case DSQ_PQ_INT32:
        if (v->kind != DSQ_PQ_INT)
            return "takes integers";
        return v->u.i >= INT32_MIN && v->u.i <= INT32_MAX ? NULL : "takes 32-bit integers";
    case DSQ_PQ_INT64: return v->kind == DSQ_PQ_INT ? NULL : "takes integers";
    case DSQ_PQ_DOUBLE: return v->kind == DSQ_PQ_DOUBLE_V ? NULL : "takes doubles";
    case DSQ_PQ_BYTE_ARRAY:
        if (v->kind != DSQ_PQ_BYTES)
            return "takes bytes";
        if (v->u.bytes.n > PQ_MAX_VALUE_BYTES)
            return "takes values of at most 1 GiB";
        if (v->u.bytes.p == NULL && v->u.bytes.n > 0)
            return "was given no bytes";
        if (c->c.logical == DSQ_PQ_STRING && !dsq_utf8_valid(v->u.bytes.p, v->u.bytes.n))
            return "takes UTF-8 text";
        return NULL;
    }
    return "has an unknown type";
}

/* A value's PLAIN size as held (a BOOLEAN: one byte). */
static size_t value_size(const pq_col *c, const dsq_pq_value *v)
{
    if (v->kind == DSQ_PQ_NULL)
        return 0;
    return c->c.type == DSQ_PQ_BYTE_ARRAY ? 4 + v->u.bytes.n : fixed_width(c->c.type);
}

/* An array p of *cap elements with room for need: p itself, or p moved
 * to a larger block (*cap updated), or NULL out of memory (p kept). */
static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap && p != NULL)
        return p;
    size_t n = *cap ? *cap : 1024;
    while (n < need)
        n *= 2;
    void *q = realloc(p, n * elem);
    if (q != NULL)
        *cap = n;
    return q;
}

/* Room for one more row's value, so that adding it cannot fail. */
static int col_reserve(pq_col *c, size_t rows, const dsq_pq_value *v)
{
    if (c->c.nullable) {
        uint8_t *d = grow(c->defs, &c->defs_cap, rows + 1, 1);
        if (d == NULL)
            return -1;
        c->defs = d;
    }
    if (v->kind == DSQ_PQ_NULL)
        return 0;
    if (dsq_buf_reserve(&c->vals, value_size(c, v)) != 0)
        return -1;
    if (c->dict_on) {
        uint32_t *x = grow(c->idx, &c->idx_cap, c->nvals + 1, sizeof *c->idx);
        if (x == NULL)
            return -1;
        c->idx = x;
    }
    return 0;
}

static void dict_off(pq_col *c)
{
    c->dict_on = false;
    dict_free(&c->dict);
    free(c->idx);
    c->idx = NULL;
    c->idx_cap = 0;
}

static int dict_rehash(pq_dict *d, size_t cap)
{
    uint32_t *s = calloc(cap, sizeof *s);
    if (s == NULL)
        return -1;
    for (uint32_t e = 0; e < d->n; e++) {
        size_t i = d->hash[e] & (cap - 1);
        while (s[i] != 0)
            i = (i + 1) & (cap - 1);
        s[i] = e + 1;
    }
    free(d->slots);
    d->slots = s;
    d->cap = cap;
    return 0;
}

/* The entry of the BYTE_ARRAY value at vals[off], added if new; -1 when
 * the dictionary would pass its limits (or memory ran out): the caller
 * then drops it and the chunk goes PLAIN. */
static int64_t dict_entry(const dsq_pq_options *o, pq_col *c, size_t off)
{
    pq_dict *d = &c->dict;
    const uint8_t *base = (const uint8_t *)c->vals.data;
    size_t n = (size_t)get_le(base + off, 4);
    uint64_t h = XXH3_64bits(base + off + 4, n);
    size_t i = 0;
    if (d->cap > 0) {
        for (i = h & (d->cap - 1); d->slots[i] != 0; i = (i + 1) & (d->cap - 1)) {
            uint32_t e = d->slots[i] - 1;
            const uint8_t *q = base + d->off[e];
            if (d->hash[e] == h && get_le(q, 4) == n && memcmp(q + 4, base + off + 4, n) == 0)
                return e;
        }
    }
    if (d->n >= o->dict_max_entries || d->bytes + 4 + n > o->dict_max_bytes)
        return -1;
    if (d->n == d->ecap) {
        size_t ecap = d->ecap ? (size_t)d->ecap * 2 : 1024;
        size_t *o2 = realloc(d->off, ecap * sizeof *o2);
        if (o2 == NULL)
            return -1;
        d->off = o2;
        uint64_t *h2 = realloc(d->hash, ecap * sizeof *h2);
        if (h2 == NULL)
            return -1;
        d->hash = h2;
        d->ecap = (uint32_t)ecap;
    }
    if (((size_t)d->n + 1) * 2 > d->cap) { /* at most half full: probes stay short */
        if (dict_rehash(d, d->cap ? d->cap * 2 : 1024) != 0)
            return -1;
        for (i = h & (d->cap - 1); d->slots[i] != 0; i = (i + 1) & (d->cap - 1))
            ;
    }
    d->slots[i] = d->n + 1;
    d->off[d->n] = off;
    d->hash[d->n] = h;
    d->bytes += 4 + n;
    return d->n++;
}

static void col_put(dsq_pq_writer *w, pq_col *c, size_t row, const dsq_pq_value *v)
{
    if (c->c.nullable)
        c->defs[row] = v->kind != DSQ_PQ_NULL;
    if (v->kind == DSQ_PQ_NULL)
        return;
    size_t off = c->vals.len;
    uint8_t *p = (uint8_t *)c->vals.data + off;
    switch (c->c.type) {
    case DSQ_PQ_BOOLEAN: p[0] = v->u.b ? 1 : 0; break;
    case DSQ_PQ_INT32: put_le(p, (uint64_t)v->u.i, 4); break;
    case DSQ_PQ_INT64: put_le(p, (uint64_t)v->u.i, 8); break;
    case DSQ_PQ_DOUBLE: {
        uint64_t u;
        memcpy(&u, &v->u.d, 8);
        put_le(p, u, 8);
        break;
    }
    case DSQ_PQ_BYTE_ARRAY:
        put_le(p, v->u.bytes.n, 4);
        if (v->u.bytes.n > 0)
            memcpy(p + 4, v->u.bytes.p, v->u.bytes.n);
        break;
    }
    c->vals.len += value_size(c, v);
    if (c->dict_on) {
        int64_t e = dict_entry(&w->o, c, off);
        if (e < 0)
            dict_off(c);
        else
            c->idx[c->nvals] = (uint32_t)e;
    }
    c->nvals++;
}

int dsq_pq_append(dsq_pq_writer *w, const dsq_pq_value *row)
{
    if (w->failed)
        return -1;
    /* The whole row is checked, then room made, before anything is
     * added: a refused row leaves the group as it was. */
    for (size_t i = 0; i < w->ncols; i++) {
        const char *why = value_misfit(&w->cols[i], &row[i]);
        if (why != NULL) {
            set_err(w, "column %s %s", w->cols[i].c.name, why);
            return -1;
        }
    }
    for (size_t i = 0; i < w->ncols; i++)
        if (col_reserve(&w->cols[i], w->rg_rows, &row[i]) != 0) {
            set_err(w, "out of memory");
            return -1;
        }
    for (size_t i = 0; i < w->ncols; i++) {
        col_put(w, &w->cols[i], w->rg_rows, &row[i]);
        w->rg_bytes += value_size(&w->cols[i], &row[i]);
    }
    w->rg_rows++;
    if (w->rg_rows >= w->o.row_group_rows || w->rg_bytes >= w->o.row_group_bytes)
        return dsq_pq_flush(w);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Row groups                                                             */

static int bits_for(uint32_t x)
{
    int b = 0;
    while (x != 0) {
        b++;
        x >>= 1;
    }
    return b;
}

/* w->page, compressed if asked, after its header. */
static int write_page(dsq_pq_writer *w, pq_chunk *ch, int type, size_t nvalues, int encoding, pq_col *c,
                      const pq_acc *a)
{
    size_t ulen = w->page.len;
    const void *body = w->page.data;
    size_t clen = ulen;
    if (w->o.codec == DSQ_PQ_ZSTD) {
        size_t bound = ZSTD_compressBound(ulen);
        w->comp.len = 0;
        if (dsq_buf_reserve(&w->comp, bound) != 0)
            return fail(w, "out of memory");
        size_t z = ZSTD_compressCCtx(w->zc, w->comp.data, bound, w->page.data, ulen, w->o.zstd_level);
        if (ZSTD_isError(z))
            return fail(w, "zstd failed");
        body = w->comp.data;
        clen = z;
    }
    if (ulen > INT32_MAX || clen > INT32_MAX || nvalues > INT32_MAX)
        return fail(w, "a page over 2 GiB");
    w->hdr.len = 0;
    dsq_tc t;
    dsq_tc_init(&t, &w->hdr);
    dsq_tc_i32(&t, 1, type);
    dsq_tc_i32(&t, 2, (int32_t)ulen);
    dsq_tc_i32(&t, 3, (int32_t)clen);
    if (type == PAGE_DATA) {
        dsq_tc_struct_begin(&t, 5);
        dsq_tc_i32(&t, 1, (int32_t)nvalues);
        dsq_tc_i32(&t, 2, encoding);
        dsq_tc_i32(&t, 3, ENC_RLE);
        dsq_tc_i32(&t, 4, ENC_RLE);
        tc_stats(&t, 5, w, c->c.type, a);
        dsq_tc_struct_end(&t);
    } else {
        dsq_tc_struct_begin(&t, 7);
        dsq_tc_i32(&t, 1, (int32_t)nvalues);
        dsq_tc_i32(&t, 2, encoding);
        dsq_tc_struct_end(&t);
    }
    dsq_tc_struct_end(&t);
    if (t.err != 0)
        return fail(w, "out of memory");
    if (emit(w, w->hdr.data, w->hdr.len) != 0 || emit(w, body, clen) != 0)
        return -1;
    ch->uncompressed += (int64_t)(w->hdr.len + ulen);
    ch->compressed += (int64_t)(w->hdr.len + clen);
    return 0;
}

static int write_dict_page(dsq_pq_writer *w, pq_col *c, pq_chunk *ch)
{
    w->page.len = 0;
    if (dsq_buf_reserve(&w->page, c->dict.bytes) != 0)
        return fail(w, "out of memory");
    for (uint32_t e = 0; e < c->dict.n; e++) {
        const char *p = c->vals.data + c->dict.off[e];
        size_t n = 4 + (size_t)get_le((const uint8_t *)p, 4);
        memcpy(w->page.data + w->page.len, p, n);
        w->page.len += n;
    }
    ch->dict_off = (int64_t)w->off;
    return write_page(w, ch, PAGE_DICTIONARY, c->dict.n, ENC_PLAIN, c, NULL);
}

/* A page's body: definition levels (4-byte length, then the hybrid at
 * bit width 1) when the column is nullable, then the values. */
static int page_body(dsq_pq_writer *w, pq_col *c, size_t r0, size_t r1, size_t v0, size_t v1, size_t b0,
                     size_t b1, int dict_bw)
{
    dsq_buf *pg = &w->page;
    pg->len = 0;
    if (c->c.nullable) {
        for (size_t r = r0; r < r1; r++)
            w->lv[r - r0] = c->defs[r];
        if (dsq_buf_reserve(pg, 4) != 0)
            return -1;
        pg->len = 4;
        if (dsq_pq_rle_hybrid(pg, w->lv, r1 - r0, 1) != 0)
            return -1;
        put_le((uint8_t *)pg->data, pg->len - 4, 4);
    }
    if (dict_bw > 0) {
        uint8_t bw = (uint8_t)dict_bw;
        if (dsq_buf_append(pg, &bw, 1) != 0)
            return -1;
        return dsq_pq_rle_hybrid(pg, c->idx + v0, v1 - v0, dict_bw);
    }
    if (c->c.type == DSQ_PQ_BOOLEAN) { /* PLAIN booleans: a bit each, the first in the lowest bit */
        size_t n = v1 - v0;
        if (dsq_buf_reserve(pg, (n + 7) / 8) != 0)
            return -1;
        uint8_t *out = (uint8_t *)pg->data + pg->len;
        memset(out, 0, (n + 7) / 8);
        for (size_t k = 0; k < n; k++)
            out[k / 8] |= (uint8_t)((uint8_t)c->vals.data[v0 + k] << (k % 8));
        pg->len += (n + 7) / 8;
        return 0;
    }
    return dsq_buf_append(pg, c->vals.data + b0, b1 - b0);
}

static int buf_set(dsq_buf *b, const void *p, size_t n)
{
    b->len = 0;
    return dsq_buf_append(b, p, n) != 0 || dsq_buf_reserve(b, 1) != 0 ? -1 : 0;
}

/* The chunk's totals into its metadata and the column's file totals. */
static int chunk_stats(dsq_pq_writer *w, pq_col *c, pq_chunk *ch, const pq_acc *a, size_t rows)
{
    dsq_pq_type t = c->c.type;
    ch->nulls = (int64_t)a->nulls;
    ch->nans = (int64_t)a->nans;
    ch->has_minmax = acc_has_bounds(w, a);
    if (ch->has_minmax) {
        const uint8_t *min, *max;
        acc_bounds(a, t, &min, &max);
        if (buf_set(&ch->min, min, a->min_n) != 0 || buf_set(&ch->max, max, a->max_n) != 0)
            return fail(w, "out of memory");
    }
    dsq_pq_col_stats *s = &c->st;
    s->values += rows;
    s->nulls += a->nulls;
    s->nans += a->nans;
    s->uncompressed_bytes += (uint64_t)ch->uncompressed;
    s->compressed_bytes += (uint64_t)ch->compressed;
    if (a->min == NULL)
        return 0; /* nothing ordered here: the file's bounds are unchanged */
    if (!ch->has_minmax)
        c->minmax_lost = true;
    if (c->minmax_lost)
        return 0;
    const uint8_t *mn = (const uint8_t *)ch->min.data, *mx = (const uint8_t *)ch->max.data;
    if (!s->has_minmax || stat_cmp(t, mn, ch->min.len, (const uint8_t *)s->min.data, s->min.len) < 0)
        if (buf_set(&s->min, mn, ch->min.len) != 0)
            return fail(w, "out of memory");
    if (!s->has_minmax || stat_cmp(t, mx, ch->max.len, (const uint8_t *)s->max.data, s->max.len) > 0)
        if (buf_set(&s->max, mx, ch->max.len) != 0)
            return fail(w, "out of memory");
    s->has_minmax = true;
    return 0;
}

/* One column's chunk of the row group: its dictionary page if any, then
 * data pages cut at about page_bytes of encoded values. */
static int write_chunk(dsq_pq_writer *w, pq_col *c, pq_chunk *ch, size_t rows)
{
    ch->dict_off = -1;
    bool dict = c->dict_on && c->dict.n > 0;
    int bw = dict ? bits_for(c->dict.n - 1) : 0;
    if (dict && bw == 0)
        bw = 1; /* one entry: width 1 rather than 0, which some readers refuse */
    if (dict && write_dict_page(w, c, ch) != 0)
        return -1;
    ch->data_off = (int64_t)w->off;
    uint32_t *lv = grow(w->lv, &w->lv_cap, rows, sizeof *w->lv);
    if (lv == NULL)
        return fail(w, "out of memory");
    w->lv = lv;
    size_t fw = fixed_width(c->c.type);
    const uint8_t *vals = (const uint8_t *)c->vals.data;
    uint64_t limit = (uint64_t)w->o.page_bytes * 8;
    pq_acc chunk = {0};
    size_t row = 0, v = 0, b = 0;
    while (row < rows) {
        size_t r0 = row, v0 = v, b0 = b;
        uint64_t bits = 0;
        pq_acc pa = {0};
        while (row < rows && (row == r0 || bits < limit)) {
            if (!c->c.nullable || c->defs[row]) {
                size_t n = fw ? fw : (size_t)get_le(vals + b, 4);
                const uint8_t *sv = fw ? vals + b : vals + b + 4;
                acc_value(&pa, c->c.type, sv, n);
                size_t size = fw ? fw : 4 + n;
                bits += dict ? (uint64_t)bw : (c->c.type == DSQ_PQ_BOOLEAN ? 1 : (uint64_t)size * 8);
                b += size;
                v++;
            } else {
                pa.nulls++;
            }
            bits += c->c.nullable ? 1 : 0;
            row++;
        }
        if (page_body(w, c, r0, row, v0, v, b0, b, dict ? bw : 0) != 0)
            return fail(w, "out of memory");
        if (write_page(w, ch, PAGE_DATA, row - r0, dict ? ENC_RLE_DICTIONARY : ENC_PLAIN, c, &pa) != 0)
            return -1;
        acc_merge(&chunk, &pa, c->c.type);
    }
    return chunk_stats(w, c, ch, &chunk, rows);
}

static void col_reset(const dsq_pq_options *o, pq_col *c)
{
    c->vals.len = 0;
    c->nvals = 0;
    dict_off(c);
    c->dict_on = o->dictionary && c->c.type == DSQ_PQ_BYTE_ARRAY;
}

int dsq_pq_flush(dsq_pq_writer *w)
{
    if (w->failed)
        return -1;
    if (w->rg_rows == 0)
        return 0;
    pq_rg *rgs = grow(w->rgs, &w->rgs_cap, w->nrgs + 1, sizeof *w->rgs);
    if (rgs == NULL)
        return fail(w, "out of memory");
    w->rgs = rgs;
    pq_rg *rg = &w->rgs[w->nrgs];
    memset(rg, 0, sizeof *rg);
    if ((rg->chunks = calloc(w->ncols, sizeof *rg->chunks)) == NULL)
        return fail(w, "out of memory");
    w->nrgs++;
    rg->rows = (int64_t)w->rg_rows;
    rg->offset = (int64_t)w->off;
    for (size_t i = 0; i < w->ncols; i++) {
        if (write_chunk(w, &w->cols[i], &rg->chunks[i], w->rg_rows) != 0)
            return -1;
        rg->uncompressed += rg->chunks[i].uncompressed;
        rg->compressed += rg->chunks[i].compressed;
    }
    w->rows += w->rg_rows;
    w->rg_rows = 0;
    w->rg_bytes = 0;
    for (size_t i = 0; i < w->ncols; i++)
        col_reset(&w->o, &w->cols[i]);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Footer                                                                 */

static void tc_schema(dsq_tc *t, const dsq_pq_writer *w)
{
    dsq_tc_list_begin(t, 2, DSQ_TC_STRUCT, w->ncols + 1);
    dsq_tc_elem_struct_begin(t); /* the root: a group of every column */
    dsq_tc_binary(t, 4, "schema", 6);
    dsq_tc_i32(t, 5, (int32_t)w->ncols);
    dsq_tc_struct_end(t);
    for (size_t i = 0; i < w->ncols; i++) {
        const dsq_pq_column *c = &w->cols[i].c;
        dsq_tc_elem_struct_begin(t);
        dsq_tc_i32(t, 1, c->type);
        dsq_tc_i32(t, 3, c->nullable ? REP_OPTIONAL : REP_REQUIRED);
        dsq_tc_binary(t, 4, c->name, strlen(c->name));
        if (c->logical == DSQ_PQ_STRING)
            dsq_tc_i32(t, 6, CONV_UTF8);
        else if (c->logical == DSQ_PQ_TIMESTAMP_US)
            dsq_tc_i32(t, 6, CONV_TIMESTAMP_MICROS);
        if (c->field_id >= 0)
            dsq_tc_i32(t, 9, c->field_id);
        if (c->logical == DSQ_PQ_STRING) {
            dsq_tc_struct_begin(t, 10);
            dsq_tc_struct_begin(t, 1); /* StringType {} */
            dsq_tc_struct_end(t);
            dsq_tc_struct_end(t);
        } else if (c->logical == DSQ_PQ_TIMESTAMP_US) {
            dsq_tc_struct_begin(t, 10);
            dsq_tc_struct_begin(t, 8); /* TimestampType */
            dsq_tc_bool(t, 1, true);   /* isAdjustedToUTC */
            dsq_tc_struct_begin(t, 2); /* unit: TimeUnit */
            dsq_tc_struct_begin(t, 2); /* MICROS {} */
            dsq_tc_struct_end(t);
            dsq_tc_struct_end(t);
            dsq_tc_struct_end(t);
            dsq_tc_struct_end(t);
        }
        dsq_tc_struct_end(t);
    }
}

static void tc_chunk(dsq_tc *t, const dsq_pq_writer *w, const pq_col *c, const pq_chunk *ch, int64_t rows)
{
    dsq_tc_elem_struct_begin(t);
    dsq_tc_i64(t, 2, 0); /* file_offset: no ColumnMetaData outside the footer */
    dsq_tc_struct_begin(t, 3);
    dsq_tc_i32(t, 1, c->c.type);
    int enc[3], n = 0;
    enc[n++] = ENC_PLAIN; /* the values, or the dictionary page */
    if (c->c.nullable)
        enc[n++] = ENC_RLE;
    if (ch->dict_off >= 0)
        enc[n++] = ENC_RLE_DICTIONARY;
    dsq_tc_list_begin(t, 2, DSQ_TC_I32, (size_t)n);
    for (int i = 0; i < n; i++)
        dsq_tc_elem_i32(t, enc[i]);
    dsq_tc_list_begin(t, 3, DSQ_TC_BINARY, 1);
    dsq_tc_elem_binary(t, c->c.name, strlen(c->c.name));
    dsq_tc_i32(t, 4, w->o.codec);
    dsq_tc_i64(t, 5, rows);
    dsq_tc_i64(t, 6, ch->uncompressed);
    dsq_tc_i64(t, 7, ch->compressed);
    dsq_tc_i64(t, 9, ch->data_off);
    if (ch->dict_off >= 0)
        dsq_tc_i64(t, 11, ch->dict_off);
    pq_acc a = {.nulls = (uint64_t)ch->nulls, .nans = (uint64_t)ch->nans};
    if (ch->has_minmax) {
        a.min = (const uint8_t *)ch->min.data; /* buf_set left them allocated, even when empty */
        a.min_n = ch->min.len;
        a.max = (const uint8_t *)ch->max.data;
        a.max_n = ch->max.len;
    }
    tc_stats(t, 12, w, c->c.type, &a);
    dsq_tc_struct_end(t);
    dsq_tc_struct_end(t);
}

static int write_footer(dsq_pq_writer *w)
{
    dsq_buf f = DSQ_BUF_INIT;
    dsq_tc t;
    dsq_tc_init(&t, &f);
    dsq_tc_i32(&t, 1, 1); /* version 1: what every reader takes */
    tc_schema(&t, w);
    dsq_tc_i64(&t, 3, (int64_t)w->rows);
    dsq_tc_list_begin(&t, 4, DSQ_TC_STRUCT, w->nrgs);
    for (size_t r = 0; r < w->nrgs; r++) {
        const pq_rg *rg = &w->rgs[r];
        dsq_tc_elem_struct_begin(&t);
        dsq_tc_list_begin(&t, 1, DSQ_TC_STRUCT, w->ncols);
        for (size_t i = 0; i < w->ncols; i++)
            tc_chunk(&t, w, &w->cols[i], &rg->chunks[i], rg->rows);
        dsq_tc_i64(&t, 2, rg->uncompressed);
        dsq_tc_i64(&t, 3, rg->rows);
        dsq_tc_i64(&t, 5, rg->offset);
        dsq_tc_i64(&t, 6, rg->compressed);
        if (r <= INT16_MAX) {
            dsq_tc_field(&t, 7, DSQ_TC_I16);
            dsq_tc_varint(&t, zigzag64((int64_t)r));
        }
        dsq_tc_struct_end(&t);
    }
    dsq_tc_binary(&t, 6, w->created_by, strlen(w->created_by));
    /* TypeDefinedOrder for every column: without column_orders a reader
     * may not trust min_value and max_value. */
    dsq_tc_list_begin(&t, 7, DSQ_TC_STRUCT, w->ncols);
    for (size_t i = 0; i < w->ncols; i++) {
        dsq_tc_elem_struct_begin(&t);
        dsq_tc_struct_begin(&t, 1);
        dsq_tc_struct_end(&t);
        dsq_tc_struct_end(&t);
    }
    dsq_tc_struct_end(&t);
    int rc = -1;
    if (t.err != 0 || f.len > UINT32_MAX) {
        fail(w, "out of memory");
    } else {
        uint8_t tail[8];
        put_le(tail, f.len, 4);
        memcpy(tail + 4, PQ_MAGIC, 4);
        rc = emit(w, f.data, f.len) == 0 && emit(w, tail, 8) == 0 ? 0 : -1;
    }
    dsq_buf_free(&f);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Close                                                                  */

static int take_stats(dsq_pq_writer *w, dsq_pq_file_stats *st)
{
    st->cols = calloc(w->ncols, sizeof *st->cols);
    st->row_group_offsets = calloc(w->nrgs ? w->nrgs : 1, sizeof *st->row_group_offsets);
    if (st->cols == NULL || st->row_group_offsets == NULL) {
        dsq_pq_stats_free(st);
        return fail(w, "out of memory");
    }
    st->rows = w->rows;
    st->file_bytes = w->off;
    st->ncols = w->ncols;
    st->nrow_groups = w->nrgs;
    for (size_t r = 0; r < w->nrgs; r++)
        st->row_group_offsets[r] = (uint64_t)w->rgs[r].offset;
    for (size_t i = 0; i < w->ncols; i++) {
        pq_col *c = &w->cols[i];
        if (c->minmax_lost) {
            c->st.has_minmax = false;
            dsq_buf_free(&c->st.min);
            dsq_buf_free(&c->st.max);
        }
        st->cols[i] = c->st; /* moved: the writer's are emptied */
        memset(&c->st, 0, sizeof c->st);
    }
    return 0;
}

int dsq_pq_close(dsq_pq_writer *w, dsq_pq_file_stats *st, char *err, size_t errlen)
{
    dsq_pq_file_stats tmp;
    if (st == NULL)
        st = &tmp;
    memset(st, 0, sizeof *st);
    int rc = -1;
    if (dsq_pq_flush(w) == 0 && write_footer(w) == 0 && take_stats(w, st) == 0)
        rc = 0;
    if (rc != 0 && err != NULL)
        snprintf(err, errlen, "%s", w->err);
    if (st == &tmp)
        dsq_pq_stats_free(&tmp);
    dsq_pq_abort(w);
    return rc;
}

void dsq_pq_stats_free(dsq_pq_file_stats *st)
{
    if (st->cols != NULL)
        for (size_t i = 0; i < st->ncols; i++) {
            dsq_buf_free(&st->cols[i].min);
            dsq_buf_free(&st->cols[i].max);
        }
    free(st->cols);
    free(st->row_group_offsets);
    memset(st, 0, sizeof *st);
}
