/* pqread — a reader of Apache Parquet files held in memory.
 *
 * The lake reads its own files back (the SQL scan over a table, the
 * compaction of small files): those lake/parquet.h writes, and DuckDB's.
 * The whole file is given as one buffer (the caller fetched the object);
 * the reader decodes the footer at open and a column of a row group at a
 * time after, after the format's specification (parquet-format:
 * parquet.thrift, Encodings.md). The input may be hostile (a corrupt
 * object in the store): every length and count is checked against the
 * bytes there are, and what cannot be read is refused with a reason.
 *
 *     char err[256];
 *     dsq_pqr *r = dsq_pqr_open(buf, len, err, sizeof err);  // buf kept until close
 *     for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++) {
 *         dsq_pqr_values v;
 *         if (dsq_pqr_col_read(r, g, 0, &v) != 0)
 *             ... dsq_pqr_error(r) ...
 *         ... v.v[0 .. v.n) ...
 *         dsq_pqr_values_free(&v);
 *     }
 *     dsq_pqr_close(r);
 *
 * Read: a flat schema (a root group of leaf columns, REQUIRED or
 * OPTIONAL) of BOOLEAN, INT32, INT64, FLOAT, DOUBLE and BYTE_ARRAY
 * columns; data pages V1 and V2; PLAIN values (BOOLEAN bit-packed, or
 * RLE), dictionaries (PLAIN_DICTIONARY, RLE_DICTIONARY); pages
 * uncompressed or zstd. Refused, with a reason: nested or repeated
 * columns, INT96 and FIXED_LEN_BYTE_ARRAY, encrypted files, other codecs,
 * the delta and byte-stream-split encodings. Nothing here locks: a
 * reader belongs to one thread. */
#ifndef DSQ_LAKE_PQREAD_H
#define DSQ_LAKE_PQREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lake/parquet.h"

/* Limits against hostile input. A page is refused whose declared
 * uncompressed size passes DSQ_PQR_MAX_PAGE, or DSQ_PQR_MAX_RATIO times
 * its compressed size (past what zstd can expand to); a row group of
 * more than DSQ_PQR_MAX_GROUP_ROWS rows is not read (its values alone
 * would take 24 bytes a row). */
#define DSQ_PQR_MAX_PAGE ((size_t)256 << 20)
#define DSQ_PQR_MAX_RATIO 32768
#define DSQ_PQR_MAX_GROUP_ROWS ((int64_t)1 << 24)

/* The physical types read; the numbers are parquet.thrift's Type (the
 * writer's dsq_pq_type, and FLOAT). */
typedef enum dsq_pqr_type {
    DSQ_PQR_BOOLEAN = 0,
    DSQ_PQR_INT32 = 1,
    DSQ_PQR_INT64 = 2,
    DSQ_PQR_FLOAT = 4,
    DSQ_PQR_DOUBLE = 5,
    DSQ_PQR_BYTE_ARRAY = 6,
} dsq_pqr_type;

/* parquet.thrift's CompressionCodec values read. */
enum { DSQ_PQR_UNCOMPRESSED = 0, DSQ_PQR_ZSTD = 6 };

typedef struct dsq_pqr_column {
    const char *name;         /* UTF-8, NUL-terminated; owned by the reader */
    dsq_pqr_type type;
    dsq_pq_logical logical;   /* STRING (LogicalType STRING or converted UTF8), TIMESTAMP_US
                                 (TIMESTAMP(MICROS) or converted TIMESTAMP_MICROS), else PLAIN_TYPE */
    bool utc;                 /* TIMESTAMP_US: isAdjustedToUTC (true for a converted type alone) */
    int logical_id;           /* the LogicalType union's field (1 STRING, 8 TIMESTAMP, ...), 0: none */
    int32_t converted_type;   /* parquet.thrift's ConvertedType, -1: none */
    bool nullable;            /* OPTIONAL; else REQUIRED */
    int32_t field_id;         /* SchemaElement.field_id, -1: none */
    bool type_order;          /* column_orders says TypeDefinedOrder: min_value/max_value are usable */
} dsq_pqr_column;

/* A statistics bound: bytes in the statistics encoding (little-endian
 * INT32/INT64/FLOAT/DOUBLE, a byte for a BOOLEAN, the bytes of a
 * BYTE_ARRAY), pointing into the file's buffer. */
typedef struct dsq_pqr_bound {
    bool set;
    const uint8_t *p;
    size_t n;
} dsq_pqr_bound;

/* A column chunk's Statistics. min_value and max_value follow the
 * column's order (type_order); the deprecated min and max are signed
 * byte-wise for a BYTE_ARRAY: prefer the former. */
typedef struct dsq_pqr_stats {
    dsq_pqr_bound min_value, max_value;
    bool min_exact, max_exact;  /* is_min_value_exact / is_max_value_exact said true */
    dsq_pqr_bound min, max;     /* deprecated */
    bool has_null_count;
    int64_t null_count;
    bool has_nan_count;
    int64_t nan_count;
} dsq_pqr_stats;

typedef struct dsq_pqr_chunk {
    int codec;                       /* CompressionCodec: DSQ_PQR_UNCOMPRESSED or DSQ_PQR_ZSTD */
    int64_t num_values;
    int64_t data_page_offset;
    int64_t dictionary_page_offset;  /* -1: none */
    int64_t total_uncompressed_size; /* pages with their headers */
    int64_t total_compressed_size;
    dsq_pqr_stats stats;             /* all unset when the chunk has none */
} dsq_pqr_chunk;

typedef struct dsq_pqr_row_group {
    int64_t num_rows;
    int64_t total_byte_size;
    int64_t file_offset;             /* -1: not given */
    int64_t total_compressed_size;   /* -1: not given */
    dsq_pqr_chunk *chunks;           /* ncols; owned by the reader */
} dsq_pqr_row_group;

typedef struct dsq_pqr dsq_pqr;

/* A reader of the file p[0..n), which the caller keeps, unchanged, until
 * dsq_pqr_close. The footer is decoded and checked (every column chunk
 * within the file): NULL with the reason in err when it cannot be read,
 * or out of memory. */
dsq_pqr *dsq_pqr_open(const void *p, size_t n, char *err, size_t errlen);

/* Free the reader (NULL is fine). Values read keep their own memory, but
 * a BYTES value of an uncompressed page points into the file's buffer. */
void dsq_pqr_close(dsq_pqr *r);

/* Why the last dsq_pqr_col_read failed. */
const char *dsq_pqr_error(const dsq_pqr *r);

int64_t dsq_pqr_num_rows(const dsq_pqr *r);
const char *dsq_pqr_created_by(const dsq_pqr *r); /* "" when not given */
size_t dsq_pqr_ncols(const dsq_pqr *r);
const dsq_pqr_column *dsq_pqr_column_at(const dsq_pqr *r, size_t col);
/* The index of the column of that name, or -1. */
int dsq_pqr_find(const dsq_pqr *r, const char *name);
size_t dsq_pqr_nrow_groups(const dsq_pqr *r);
const dsq_pqr_row_group *dsq_pqr_row_group_at(const dsq_pqr *r, size_t rg);

/* A statistics bound as a value of the column's kind (INT for INT32 and
 * INT64, DOUBLE_V for FLOAT and DOUBLE, BOOL, BYTES pointing at b->p).
 * 0, or -1 when the bound is unset or of the wrong size. */
int dsq_pqr_bound_value(const dsq_pqr_column *c, const dsq_pqr_bound *b, dsq_pq_value *out);

/* The values of one column of one row group. */
typedef struct pqr_block pqr_block;
typedef struct dsq_pqr_values {
    size_t n;           /* the row group's rows */
    dsq_pq_value *v;    /* n, owned: NULL, INT (INT32, INT64), DOUBLE_V (FLOAT, DOUBLE), BOOL, BYTES */
    pqr_block *blocks;  /* owned: the decompressed pages BYTES values point into */
    size_t data_pages;  /* the data pages read (V1 and V2) */
    bool dictionary;    /* a dictionary page was read */
} dsq_pqr_values;

/* Decode column col of row group rg into out, one value a row. 0, or -1
 * with out empty and the reason in dsq_pqr_error (a corrupt or
 * unsupported chunk, or out of memory); the reader stays usable. BYTES
 * values live until dsq_pqr_values_free or, for an uncompressed chunk,
 * while the file's buffer does. */
int dsq_pqr_col_read(dsq_pqr *r, size_t rg, size_t col, dsq_pqr_values *out);

void dsq_pqr_values_free(dsq_pqr_values *v);

/* ---- exposed for the tests ---- */

/* Thrift compact protocol: skip one value of compact type `type` at
 * p[0..n). The bytes it took, or -1 when it is malformed, runs past n or
 * nests deeper than DSQ_PQR_TC_DEPTH. */
#define DSQ_PQR_TC_DEPTH 32
long dsq_pqr_tc_skip(const void *p, size_t n, int type);

/* The RLE/bit-packed hybrid at p[0..len) of bit_width (0..32): count
 * values into out. 0, or -1 when the data ends first or is malformed. */
int dsq_pqr_rle_decode(const void *p, size_t len, int bit_width, uint32_t *out, size_t count);

#endif
