/* avro — Avro object container files, written in memory (see avro.h). */
#include "lake/avro.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Records per block: readers hold a block at a time. */
#define BLOCK_RECORDS 1000

struct dsq_avro_file {
    char *schema_json;        /* owned: the header's avro.schema */
    dsq_buf meta;             /* the caller's keys, encoded as map entries */
    size_t nmeta;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t rec;
    bool rec_made;
    unsigned char sync[16];
    dsq_buf blocks;           /* whole blocks so far */
    dsq_buf block;            /* the records of the block being filled */
    size_t in_block, count;
};

int dsq_avro_put_long(dsq_buf *b, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char tmp[10];
    size_t n = 0;
    do {
        unsigned char c = z & 0x7f;
        z >>= 7;
        tmp[n++] = (unsigned char)(c | (z ? 0x80 : 0));
    } while (z);
    return dsq_buf_append(b, tmp, n);
}

/* Avro bytes or string: its length, then the bytes. */
static int put_bytes(dsq_buf *b, const void *p, size_t n)
{
    return dsq_avro_put_long(b, (int64_t)n) | dsq_buf_append(b, p, n);
}

static int put_str(dsq_buf *b, const char *s) { return put_bytes(b, s, strlen(s)); }

dsq_avro_file *dsq_avro_new(const char *schema_json, const char *const *meta, char *err, size_t errlen)
{
    dsq_avro_file *f = calloc(1, sizeof *f);
    if (f == NULL || (f->schema_json = strdup(schema_json)) == NULL) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (avro_schema_from_json_length(schema_json, strlen(schema_json), &f->schema) != 0) {
        snprintf(err, errlen, "the Avro schema does not parse: %s", avro_strerror());
        free(f->schema_json);
        free(f);
        return NULL;
    }
    f->iface = avro_generic_class_from_schema(f->schema);
    if (f->iface == NULL || avro_generic_value_new(f->iface, &f->rec) != 0) {
        snprintf(err, errlen, "libavro: %s", avro_strerror());
        dsq_avro_free(f);
        return NULL;
    }
    f->rec_made = true;
    int rc = 0;
    for (size_t i = 0; meta != NULL && meta[i] != NULL; i += 2) {
        if (meta[i + 1] == NULL) {
            snprintf(err, errlen, "metadata key %s has no value", meta[i]);
            dsq_avro_free(f);
            return NULL;
        }
        rc |= put_str(&f->meta, meta[i]) | put_str(&f->meta, meta[i + 1]);
        f->nmeta++;
    }
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        dsq_avro_free(f);
        return NULL;
    }
    /* The sync marker: 16 random bytes (a block boundary readers can find). */
    char hex[33];
    if (dsq_random_id(hex) != 0) {
        snprintf(err, errlen, "no randomness for the sync marker");
        dsq_avro_free(f);
        return NULL;
    }
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        f->sync[i] = (unsigned char)v;
    }
    avro_value_reset(&f->rec);
    return f;
}

avro_value_t *dsq_avro_record(dsq_avro_file *f) { return &f->rec; }

size_t dsq_avro_count(const dsq_avro_file *f) { return f->count; }

/* The block being filled, if any, to `blocks`: its count, its size, its
 * records, the sync marker. */
static int close_block(dsq_avro_file *f)
{
    if (f->in_block == 0)
        return 0;
    int rc = dsq_avro_put_long(&f->blocks, (int64_t)f->in_block) |
             dsq_avro_put_long(&f->blocks, (int64_t)f->block.len) |
             dsq_buf_append(&f->blocks, f->block.data, f->block.len) |
             dsq_buf_append(&f->blocks, f->sync, sizeof f->sync);
    dsq_buf_reset(&f->block);
    f->in_block = 0;
    return rc ? -1 : 0;
}

static int append(dsq_avro_file *f, char *err, size_t errlen);

/* The record is reset whatever happens: a failed one must not leave its
 * values (array elements, a union's branch) in the next. */
int dsq_avro_append(dsq_avro_file *f, char *err, size_t errlen)
{
    int rc = append(f, err, errlen);
    avro_value_reset(&f->rec);
    return rc;
}

static int append(dsq_avro_file *f, char *err, size_t errlen)
{
    size_t size = 0;
    if (avro_value_sizeof(&f->rec, &size) != 0) {
        snprintf(err, errlen, "libavro: %s", avro_strerror());
        return -1;
    }
    if (dsq_buf_reserve(&f->block, size) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    avro_writer_t w = avro_writer_memory(f->block.data + f->block.len, (int64_t)size);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = avro_value_write(w, &f->rec);
    avro_writer_free(w);
    if (rc != 0) {
        snprintf(err, errlen, "libavro: %s", avro_strerror());
        return -1;
    }
    f->block.len += size;
    f->in_block++;
    f->count++;
    if (f->in_block == BLOCK_RECORDS && close_block(f) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int dsq_avro_finish(dsq_avro_file *f, dsq_buf *out)
{
    if (close_block(f) != 0)
        return -1;
    /* "Obj" 1, the metadata map (one block of entries, then 0), the sync. */
    int rc = dsq_buf_append(out, "Obj\x01", 4) | dsq_avro_put_long(out, (int64_t)(f->nmeta + 2)) |
             put_str(out, "avro.schema") | put_str(out, f->schema_json) | put_str(out, "avro.codec") |
             put_str(out, "null") | dsq_buf_append(out, f->meta.data, f->meta.len) | dsq_avro_put_long(out, 0) |
             dsq_buf_append(out, f->sync, sizeof f->sync) | dsq_buf_append(out, f->blocks.data, f->blocks.len);
    return rc ? -1 : 0;
}

void dsq_avro_free(dsq_avro_file *f)
{
    if (f == NULL)
        return;
    if (f->rec_made)
        avro_value_decref(&f->rec);
    if (f->iface != NULL)
        avro_value_iface_decref(f->iface);
    if (f->schema != NULL)
        avro_schema_decref(f->schema);
    dsq_buf_free(&f->meta);
    dsq_buf_free(&f->blocks);
    dsq_buf_free(&f->block);
    free(f->schema_json);
    free(f);
}

/* ---- reading ------------------------------------------------------------------------------- */

/* An Avro long at *p (zigzag varint), advancing it. 0, or -1 past end or
 * longer than 10 bytes. */
static int get_long(const uint8_t **p, const uint8_t *end, int64_t *v)
{
    uint64_t z = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t c = *(*p)++;
        z |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
            return 0;
        }
    }
    return -1;
}

/* The container's framing, checked before libavro sees it (its readers
 * leak what they made when a header or block is cut short): the magic,
 * the metadata map, the sync marker, then blocks each of a count, a size,
 * that many bytes and the sync marker again, up to the very end. */
static int frame_check(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    const uint8_t *end = p + n;
    if (n < 4 || memcmp(p, "Obj\x01", 4) != 0)
        return dsq_errf(err, errlen, "avro: not an object container file");
    p += 4;
    for (;;) { /* the metadata map: blocks of key/value pairs, 0 ends it */
        int64_t count, len;
        if (get_long(&p, end, &count) != 0)
            return dsq_errf(err, errlen, "avro: the header is cut short");
        if (count == 0)
            break;
        if (count < 0) { /* a negative count comes with the block's size */
            count = -count;
            if (get_long(&p, end, &len) != 0)
                return dsq_errf(err, errlen, "avro: the header is cut short");
        }
        for (int64_t i = 0; i < 2 * count; i++)
            if (get_long(&p, end, &len) != 0 || len < 0 || (uint64_t)len > (uint64_t)(end - p))
                return dsq_errf(err, errlen, "avro: the header is cut short");
            else
                p += len;
    }
    if (end - p < 16)
        return dsq_errf(err, errlen, "avro: the header has no sync marker");
    const uint8_t *sync = p;
    p += 16;
    while (p < end) {
        int64_t count, size;
        if (get_long(&p, end, &count) != 0 || get_long(&p, end, &size) != 0 || count < 0 || size < 0 ||
            (uint64_t)size > (uint64_t)(end - p) || (uint64_t)(end - p) - (uint64_t)size < 16)
            return dsq_errf(err, errlen, "avro: a block is cut short");
        p += size;
        if (memcmp(p, sync, 16) != 0)
            return dsq_errf(err, errlen, "avro: a block does not end with the file's sync marker");
        p += 16;
    }
    return 0;
}

int dsq_avro_read(const void *p, size_t n, int (*each)(void *ud, avro_value_t *rec, char *err, size_t errlen),
                  void *ud, char *err, size_t errlen)
{
    if (n == 0)
        return dsq_errf(err, errlen, "avro: an empty file");
    if (frame_check(p, n, err, errlen) != 0)
        return -1;
    /* libavro reads container files from a FILE: the bytes as one. */
    FILE *fp = fmemopen((void *)p, n, "rb");
    if (fp == NULL)
        return dsq_errf(err, errlen, "avro: out of memory");
    avro_file_reader_t r;
    if (avro_file_reader_fp(fp, "memory", 1, &r) != 0) {
        dsq_errf(err, errlen, "avro: not an object container file: %s", avro_strerror());
        return -1; /* (the reader closed fp) */
    }
    avro_schema_t ws = avro_file_reader_get_writer_schema(r); /* (a reference of ours) */
    avro_value_iface_t *iface = avro_generic_class_from_schema(ws);
    avro_schema_decref(ws);
    avro_value_t v;
    int rc = iface == NULL || avro_generic_value_new(iface, &v) != 0
                 ? dsq_errf(err, errlen, "avro: libavro: %s", avro_strerror())
                 : 0;
    if (rc == 0) {
        int got;
        while ((got = avro_file_reader_read_value(r, &v)) == 0) {
            if (each(ud, &v, err, errlen) != 0) {
                rc = -1;
                break;
            }
            avro_value_reset(&v);
        }
        /* EOF ends the walk; anything else is damage. */
        if (rc == 0 && got != EOF)
            rc = dsq_errf(err, errlen, "avro: a damaged block: %s", avro_strerror());
        avro_value_decref(&v);
    }
    if (iface != NULL)
        avro_value_iface_decref(iface);
    avro_file_reader_close(r);
    return rc;
}
