/* manifest — Iceberg v2 manifests and manifest lists (the Apache Iceberg
 * table spec, "Manifests" and "Manifest Lists"), as Avro files in memory
 * (lake/avro.h).
 *
 * A manifest lists a snapshot's data (or delete) files of one partition
 * spec: per file its path, format, partition tuple, counts, size, and the
 * per-column metrics readers prune with (sizes, value, null and NaN
 * counts, lower and upper bounds in Iceberg's single-value
 * serialization). Its Avro schema carries Iceberg's field ids, and its
 * header the table schema and partition spec. A manifest list lists a
 * snapshot's manifests with their counts and a summary of each partition
 * field's values. */
#ifndef DSQ_MANIFEST_H
#define DSQ_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* A partition field's result type (what its transform gives). */
typedef enum dsq_ice_ptype {
    DSQ_ICE_P_INT = 1,   /* Iceberg int: bucket, truncate of an int */
    DSQ_ICE_P_LONG,      /* long: identity of a long */
    DSQ_ICE_P_STRING,    /* string: identity of a string */
    DSQ_ICE_P_DATE,      /* date (days since 1970-01-01): day of a timestamp */
} dsq_ice_ptype;

typedef struct dsq_ice_pfield {
    const char *name;    /* an Avro name: [A-Za-z_][A-Za-z0-9_]* */
    int field_id;        /* the partition field's id (1000 and up) */
    dsq_ice_ptype type;
} dsq_ice_pfield;

typedef struct dsq_ice_pvalue {
    bool null;
    int64_t i;           /* INT, LONG, DATE */
    const char *s;       /* STRING (NUL-terminated UTF-8) */
} dsq_ice_pvalue;

/* One column's metrics in a data file; a count < 0 or a bound of NULL is
 * left out. Bounds are Iceberg single-value bytes (Appendix D). */
typedef struct dsq_ice_colstats {
    int field_id;
    int64_t size, values, nulls, nans;
    const void *lower, *upper;
    size_t lower_len, upper_len;
} dsq_ice_colstats;

typedef struct dsq_ice_datafile {
    int content;                     /* 0 data, 1 position deletes, 2 equality deletes */
    const char *path;                /* full URI */
    const char *format;              /* "parquet" */
    const dsq_ice_pvalue *partition; /* one per field of the manifest's spec */
    int64_t record_count, file_size;
    const dsq_ice_colstats *cols;
    size_t ncols;
    const int64_t *split_offsets;    /* ascending; NULL: none */
    size_t nsplits;
    const int *equality_ids;         /* equality deletes' columns; NULL: none */
    size_t neq;
    int sort_order_id;               /* < 0: none */
} dsq_ice_datafile;

enum { DSQ_ICE_EXISTING = 0, DSQ_ICE_ADDED = 1, DSQ_ICE_DELETED = 2 };

typedef struct dsq_ice_entry {
    int status;                      /* DSQ_ICE_* */
    int64_t snapshot_id;             /* < 0: inherited (added in this snapshot) */
    int64_t sequence_number;         /* < 0: inherited */
    int64_t file_sequence_number;    /* < 0: inherited */
    dsq_ice_datafile file;
} dsq_ice_entry;

/* A manifest list's summary of one partition field over a manifest. */
typedef struct dsq_ice_fsummary {
    bool contains_null;
    bool has_bounds;                 /* some value was not null */
    dsq_buf lower, upper;            /* single-value bytes (owned) */
} dsq_ice_fsummary;

/* What a manifest list says of one manifest. */
typedef struct dsq_ice_mfile {
    const char *path;
    int64_t length;
    int spec_id;
    int content;                     /* 0 data, 1 deletes */
    int64_t sequence_number, min_sequence_number, added_snapshot_id;
    int added_files, existing_files, deleted_files;
    int64_t added_rows, existing_rows, deleted_rows;
    const dsq_ice_fsummary *parts;   /* one per partition field */
    size_t nparts;
} dsq_ice_mfile;

typedef struct dsq_manifest dsq_manifest;

/* A manifest of `content` (0 data, 1 deletes) written with table schema
 * `schema_json` (its id `schema_id`) and partition spec `spec_id` whose
 * fields are `pf` (their JSON, for the header, `spec_fields_json`). NULL
 * with the reason in err. */
dsq_manifest *dsq_manifest_new(const char *schema_json, int schema_id, const char *spec_fields_json, int spec_id,
                               const dsq_ice_pfield *pf, size_t npf, int content, char *err, size_t errlen);
int dsq_manifest_add(dsq_manifest *m, const dsq_ice_entry *e, char *err, size_t errlen);
/* The Avro file into out, and what a manifest list says of it into *mf
 * (path and length left for the caller: the file's place and out's
 * length; sequence numbers and snapshot id too: the commit's). mf->parts
 * points into the manifest: valid until dsq_manifest_free. */
int dsq_manifest_finish(dsq_manifest *m, dsq_buf *out, dsq_ice_mfile *mf);
void dsq_manifest_free(dsq_manifest *m);

/* A snapshot's manifest list into out. parent_id < 0: none. 0, or -1 with
 * the reason in err. */
int dsq_manifest_list(const dsq_ice_mfile *files, size_t n, int64_t snapshot_id, int64_t parent_id,
                      int64_t sequence_number, dsq_buf *out, char *err, size_t errlen);

/* A manifest list read back (dsq_manifest_list_read): its entries, and
 * the storage they point into (owned). */
typedef struct dsq_ice_mlist {
    dsq_ice_mfile *files;
    size_t n;
} dsq_ice_mlist;

/* Read a manifest list's Avro file (this writer's or another's: fields by
 * name, optional ones defaulted: a missing min_sequence_number to the
 * sequence number, missing counts to 0). 0, or -1 with the reason. Free
 * with dsq_ice_mlist_free, whatever it returns. */
int dsq_manifest_list_read(const void *p, size_t n, dsq_ice_mlist *out, char *err, size_t errlen);
void dsq_ice_mlist_free(dsq_ice_mlist *l);

/* What a manifest says of one of its files (dsq_manifest_files). */
typedef struct dsq_ice_fileref {
    int status;                      /* DSQ_ICE_* */
    int content;                     /* 0 data, 1 position deletes, 2 equality deletes */
    char *path;                      /* owned */
    int64_t record_count, file_size;
} dsq_ice_fileref;

/* The files a manifest's Avro file lists: *out (free with
 * dsq_ice_filerefs_free, whatever it returns). 0, or -1 with the reason. */
int dsq_manifest_files(const void *p, size_t n, dsq_ice_fileref **out, size_t *nout, char *err, size_t errlen);
void dsq_ice_filerefs_free(dsq_ice_fileref *v, size_t n);

/* Iceberg's single-value serialization (Appendix D) of an int, long or
 * date (4 or 8 bytes little-endian) and of a double (8 bytes IEEE 754,
 * little-endian), appended to b. */
int dsq_ice_put_int(dsq_buf *b, int32_t v);
int dsq_ice_put_long(dsq_buf *b, int64_t v);
int dsq_ice_put_double(dsq_buf *b, double v);

#endif
