/* parquet — a streaming writer of Apache Parquet files.
 *
 * The first piece of the lakehouse: CDC rows become Parquet files that
 * DuckDB, Spark and Trino read. No C Parquet library is packaged in
 * Debian, so this is our own, after the format's specification
 * (parquet-format: parquet.thrift, Encodings.md).
 *
 * A file has a flat schema (no nesting, no repetition): each column a
 * name, a physical type, an optional logical annotation, nullable or not,
 * and an Iceberg field id. Rows are appended one at a time and held in
 * memory until the row group is big enough (options.row_group_bytes of
 * plain-encoded values, or options.row_group_rows rows); then the group is
 * encoded into pages and handed to the sink. Closing writes the last group
 * and the footer and gives back the statistics the Iceberg layer needs.
 *
 *     dsq_pq_column cols[] = {
 *         {"id", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, 1},
 *         {"name", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, 2},
 *     };
 *     dsq_pq_options o;
 *     dsq_pq_options_init(&o);
 *     dsq_pq_writer *w = dsq_pq_open_fd(cols, 2, &o, fd, err, sizeof err);
 *     dsq_pq_value row[2] = {dsq_pq_int(7), dsq_pq_str("seven")};
 *     dsq_pq_append(w, row);
 *     dsq_pq_file_stats st;
 *     dsq_pq_close(w, &st);    // the writer is gone, whatever it returns
 *     ...
 *     dsq_pq_stats_free(&st);
 *
 * Format choices: data pages V1; PLAIN values, or a dictionary (a PLAIN
 * dictionary page and RLE_DICTIONARY data pages) for BYTE_ARRAY columns
 * while the row group's dictionary stays under its limits; definition
 * levels in the RLE/bit-packed hybrid; pages compressed with zstd or not
 * at all; statistics per page and per column chunk, with TypeDefinedOrder
 * column orders. Nothing here locks: a writer belongs to one thread. */
#ifndef DSQ_LAKE_PARQUET_H
#define DSQ_LAKE_PARQUET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* The physical types written; the numbers are parquet.thrift's Type. */
typedef enum dsq_pq_type {
    DSQ_PQ_BOOLEAN = 0,
    DSQ_PQ_INT32 = 1,
    DSQ_PQ_INT64 = 2,
    DSQ_PQ_DOUBLE = 5,
    DSQ_PQ_BYTE_ARRAY = 6,
} dsq_pq_type;

/* The logical annotations written (LogicalType with the ConvertedType
 * older readers know). */
typedef enum dsq_pq_logical {
    DSQ_PQ_PLAIN_TYPE = 0, /* none: the physical type alone (a BYTE_ARRAY is a blob) */
    DSQ_PQ_STRING,         /* BYTE_ARRAY: UTF-8 text (STRING, UTF8) */
    DSQ_PQ_TIMESTAMP_US,   /* INT64: microseconds since the epoch, UTC
                              (TIMESTAMP(isAdjustedToUTC, MICROS), TIMESTAMP_MICROS) */
} dsq_pq_logical;

typedef struct dsq_pq_column {
    const char *name;       /* UTF-8; copied at open */
    dsq_pq_type type;
    dsq_pq_logical logical;
    bool nullable;          /* OPTIONAL; else REQUIRED */
    int32_t field_id;       /* written as SchemaElement.field_id when >= 0 */
} dsq_pq_column;

typedef enum dsq_pq_codec {
    DSQ_PQ_UNCOMPRESSED = 0, /* parquet.thrift's CompressionCodec */
    DSQ_PQ_ZSTD = 6,
} dsq_pq_codec;

typedef struct dsq_pq_options {
    dsq_pq_codec codec;       /* DSQ_PQ_ZSTD */
    int zstd_level;           /* 3 */
    uint64_t row_group_bytes; /* 128 MiB of plain-encoded values (and levels) */
    uint64_t row_group_rows;  /* 1,048,576 */
    size_t page_bytes;        /* 1 MiB: a data page's encoded values, before compression */
    bool dictionary;          /* true: try a dictionary for BYTE_ARRAY columns */
    size_t dict_max_bytes;    /* 1 MiB of plain-encoded entries: past it the column chunk is PLAIN */
    uint32_t dict_max_entries; /* 65,536 */
    size_t stats_max_bytes;   /* 4 KiB: a BYTE_ARRAY min or max longer than this is not
                                 written (the footer stays small; readers then skip the column) */
    const char *created_by;   /* "dosqld version <VERSION>" */
} dsq_pq_options;

void dsq_pq_options_init(dsq_pq_options *o);

/* One value of a row: tag and payload. A value's kind must fit its
 * column: INT for INT32 (in range), INT64; DOUBLE; BOOL; BYTES for
 * BYTE_ARRAY; NULL only in a nullable column. */
typedef enum dsq_pq_kind {
    DSQ_PQ_NULL = 0,
    DSQ_PQ_INT,
    DSQ_PQ_DOUBLE_V,
    DSQ_PQ_BOOL,
    DSQ_PQ_BYTES,
} dsq_pq_kind;

typedef struct dsq_pq_value {
    dsq_pq_kind kind;
    union {
        int64_t i;
        double d;
        bool b;
        struct {
            const void *p; /* copied by dsq_pq_append */
            size_t n;
        } bytes;
    } u;
} dsq_pq_value;

static inline dsq_pq_value dsq_pq_null(void) { return (dsq_pq_value){.kind = DSQ_PQ_NULL}; }
static inline dsq_pq_value dsq_pq_int(int64_t i) { return (dsq_pq_value){.kind = DSQ_PQ_INT, .u.i = i}; }
static inline dsq_pq_value dsq_pq_double(double d) { return (dsq_pq_value){.kind = DSQ_PQ_DOUBLE_V, .u.d = d}; }
static inline dsq_pq_value dsq_pq_bool(bool b) { return (dsq_pq_value){.kind = DSQ_PQ_BOOL, .u.b = b}; }
static inline dsq_pq_value dsq_pq_bytes(const void *p, size_t n)
{
    return (dsq_pq_value){.kind = DSQ_PQ_BYTES, .u.bytes = {p, n}};
}
dsq_pq_value dsq_pq_str(const char *s);

/* Where the file's bytes go, in order: 0, or -1 to fail the writer. */
typedef int (*dsq_pq_sink_fn)(void *ctx, const void *p, size_t n);

/* A column's totals over the file. min and max are in Parquet's
 * statistics encoding, which is also Iceberg's single-value
 * serialisation for these types: little-endian INT32/INT64/DOUBLE, one
 * byte for a BOOLEAN, the bytes themselves for a BYTE_ARRAY. */
typedef struct dsq_pq_col_stats {
    uint64_t values;            /* rows, nulls included */
    uint64_t nulls;
    uint64_t nans;              /* DOUBLE only */
    bool has_minmax;            /* false: all null (or NaN), or a bound over stats_max_bytes */
    dsq_buf min, max;
    uint64_t uncompressed_bytes; /* the column's pages with their headers */
    uint64_t compressed_bytes;
} dsq_pq_col_stats;

typedef struct dsq_pq_file_stats {
    uint64_t rows;
    uint64_t file_bytes;
    size_t ncols;
    dsq_pq_col_stats *cols;     /* ncols */
    size_t nrow_groups;
    uint64_t *row_group_offsets; /* nrow_groups: each group's first byte (Iceberg's split offsets) */
} dsq_pq_file_stats;

void dsq_pq_stats_free(dsq_pq_file_stats *st);

typedef struct dsq_pq_writer dsq_pq_writer;

/* A writer to sink(ctx, ...). NULL on a bad schema or options, or out of
 * memory, with the reason in err. The magic is written at once. */
dsq_pq_writer *dsq_pq_open(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o,
                           dsq_pq_sink_fn sink, void *ctx, char *err, size_t errlen);

/* The same to a file descriptor (written, not closed). */
dsq_pq_writer *dsq_pq_open_fd(const dsq_pq_column *cols, size_t ncols, const dsq_pq_options *o, int fd,
                              char *err, size_t errlen);

/* Append one row of ncols values. 0; -1 when a value does not fit its
 * column (the row is not added, the writer goes on), or when out of
 * memory or the sink failed (the writer is then failed: everything after
 * returns -1). dsq_pq_error says which. */
int dsq_pq_append(dsq_pq_writer *w, const dsq_pq_value *row);

/* Write the rows held now as a row group (nothing when there are none). */
int dsq_pq_flush(dsq_pq_writer *w);

/* Why the last call failed. */
const char *dsq_pq_error(const dsq_pq_writer *w);

/* Flush, write the footer and free the writer. 0 with st filled (free it
 * with dsq_pq_stats_free; st may be NULL), or -1 (st is left empty). On
 * failure err (when not NULL) gets the reason. */
int dsq_pq_close(dsq_pq_writer *w, dsq_pq_file_stats *st, char *err, size_t errlen);

/* Free a writer without finishing the file. */
void dsq_pq_abort(dsq_pq_writer *w);

/* ---- the encodings, exposed for the tests ---- */

/* Thrift compact protocol: a struct being written into out. Errors (out
 * of memory) are sticky in err and checked once at the end. */
enum {
    DSQ_TC_TRUE = 1, DSQ_TC_FALSE = 2, DSQ_TC_BYTE = 3, DSQ_TC_I16 = 4, DSQ_TC_I32 = 5,
    DSQ_TC_I64 = 6, DSQ_TC_DOUBLE = 7, DSQ_TC_BINARY = 8, DSQ_TC_LIST = 9, DSQ_TC_STRUCT = 12,
};
#define DSQ_TC_DEPTH 16
typedef struct dsq_tc {
    dsq_buf *out;
    int16_t last[DSQ_TC_DEPTH]; /* the last field id written at each open struct */
    int depth;
    int err;
} dsq_tc;

void dsq_tc_init(dsq_tc *t, dsq_buf *out);
void dsq_tc_varint(dsq_tc *t, uint64_t v);
void dsq_tc_field(dsq_tc *t, int16_t id, int type);
void dsq_tc_i32(dsq_tc *t, int16_t id, int32_t v);
void dsq_tc_i64(dsq_tc *t, int16_t id, int64_t v);
void dsq_tc_bool(dsq_tc *t, int16_t id, bool v);
void dsq_tc_binary(dsq_tc *t, int16_t id, const void *p, size_t n);
void dsq_tc_struct_begin(dsq_tc *t, int16_t id); /* a struct field */
void dsq_tc_list_begin(dsq_tc *t, int16_t id, int elem_type, size_t n);
void dsq_tc_elem_i32(dsq_tc *t, int32_t v);
void dsq_tc_elem_binary(dsq_tc *t, const void *p, size_t n);
void dsq_tc_elem_struct_begin(dsq_tc *t);        /* a struct element of a list */
void dsq_tc_struct_end(dsq_tc *t);               /* its stop byte */

/* The RLE/bit-packed hybrid of n values of bit_width bits (0..32),
 * appended to out without a length prefix. 0, or -1 out of memory. */
int dsq_pq_rle_hybrid(dsq_buf *out, const uint32_t *v, size_t n, int bit_width);

#endif
