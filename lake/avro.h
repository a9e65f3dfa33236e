/* avro — Avro object container files, written in memory (Avro 1.11
 * specification, "Object Container Files"): the header, then blocks of
 * records, each block ended by the file's sync marker.
 *
 * Records are encoded by libavro (avro_value_write) from a schema parsed
 * out of the caller's JSON; the header's `avro.schema` is that JSON as
 * given. libavro keeps no attributes of its own on a schema, so writing
 * its parsed schema back would drop what readers such as Iceberg need
 * (`field-id`, `element-id`, a map's `logicalType`): the encoding is
 * libavro's, the schema text the caller's. The header also carries the
 * caller's own metadata keys (Iceberg's manifests store the table schema
 * and partition spec there). The codec is "null": blocks are written as
 * encoded. */
#ifndef DSQ_AVRO_H
#define DSQ_AVRO_H

#include <avro.h>
#include <stddef.h>

#include "common/buf.h"

typedef struct dsq_avro_file dsq_avro_file;

/* A new file of records of `schema_json` (a record schema). `meta`: the
 * header's other keys, as key, value pairs ending in NULL (may be NULL).
 * NULL with the reason in err when the schema does not parse, a key has
 * no value, or out of memory. */
dsq_avro_file *dsq_avro_new(const char *schema_json, const char *const *meta, char *err, size_t errlen);
/* The next record to fill (avro_value_get_by_name, avro_value_set_...),
 * reset after each append. Set every field of every record: libavro's
 * reset keeps a union's branch (zeroing its value) and zeroes other
 * fields, so a field left unset is written as that, not refused; only a
 * union never given a branch is refused. */
avro_value_t *dsq_avro_record(dsq_avro_file *f);
/* Encode the filled record into the file. 0, or -1 with the reason in
 * err (libavro's, avro_strerror: a union with no branch, say). */
int dsq_avro_append(dsq_avro_file *f, char *err, size_t errlen);
/* Records appended so far. */
size_t dsq_avro_count(const dsq_avro_file *f);
/* The whole file (header, blocks) appended to out. 0, or -1 out of memory. */
int dsq_avro_finish(dsq_avro_file *f, dsq_buf *out);
void dsq_avro_free(dsq_avro_file *f);

/* Read an Avro container file in memory (any codec libavro reads):
 * `each` gets every record in order (a generic value of the file's own
 * writer schema, valid during the call) and stops the walk by returning
 * non-zero. 0; -1 with the reason in err when the file does not parse or
 * `each` refused (its message in err). */
int dsq_avro_read(const void *p, size_t n, int (*each)(void *ud, avro_value_t *rec, char *err, size_t errlen),
                  void *ud, char *err, size_t errlen);

/* Avro's long encoding (zigzag, then base-128 varint) appended to b;
 * for the header and the blocks, and for callers that write Avro bytes
 * themselves. */
int dsq_avro_put_long(dsq_buf *b, int64_t v);

#endif
