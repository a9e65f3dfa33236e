/* Unit tests: lake/avro (Avro container files: the long encoding, blocks
 * read back by libavro's own file reader) and lake/manifest (Iceberg's
 * single-value bytes, a manifest read back, refusals). The field ids and
 * every value are checked by an independent reader in
 * tests/interop/manifest.test.mjs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lake/avro.h"
#include "lake/manifest.h"

static void expect_bytes(const dsq_buf *b, const unsigned char *want, size_t n, const char *what)
{
    cr_assert_eq(b->len, n, "%s: %zu bytes, want %zu", what, b->len, n);
    cr_assert_eq(memcmp(b->data, want, n), 0, "%s: bytes differ", what);
}

Test(avro, longs_are_zigzag_varints)
{
    struct {
        int64_t v;
        unsigned char want[10];
        size_t n;
    } cases[] = {
        {0, {0x00}, 1},
        {-1, {0x01}, 1},
        {1, {0x02}, 1},
        {63, {0x7e}, 1},
        {-64, {0x7f}, 1},
        {64, {0x80, 0x01}, 2},
        {-65, {0x81, 0x01}, 2},
        {INT64_MAX, {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10},
        {INT64_MIN, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsq_buf b = DSQ_BUF_INIT;
        dsq_avro_put_long(&b, cases[i].v);
        char what[64];
        snprintf(what, sizeof what, "%lld", (long long)cases[i].v);
        expect_bytes(&b, cases[i].want, cases[i].n, what);
        dsq_buf_free(&b);
    }
}

Test(manifest, single_value_bytes_are_little_endian)
{
    dsq_buf b = DSQ_BUF_INIT;
    dsq_ice_put_int(&b, -2);
    expect_bytes(&b, (const unsigned char[]){0xfe, 0xff, 0xff, 0xff}, 4, "int -2");
    dsq_buf_reset(&b);
    dsq_ice_put_long(&b, 0x0102030405060708LL);
    expect_bytes(&b, (const unsigned char[]){8, 7, 6, 5, 4, 3, 2, 1}, 8, "long");
    dsq_buf_reset(&b);
    dsq_ice_put_double(&b, 1.0);
    expect_bytes(&b, (const unsigned char[]){0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, 8, "double 1.0");
    dsq_buf_free(&b);
}

/* Write `b` to a temporary file; its path into path[64]. */
static void to_file(const dsq_buf *b, char path[64])
{
    snprintf(path, 64, "/tmp/dsq-avro-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b->data, b->len), (ssize_t)b->len);
    close(fd);
}

/* A file of many records spans several blocks; libavro's reader, which
 * checks every block's sync marker, gets them all back in order. */
Test(avro, blocks_read_back_by_libavro)
{
    const char *schema = "{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"n\",\"type\":\"long\","
                         "\"field-id\":7},{\"name\":\"s\",\"type\":[\"null\",\"string\"]}]}";
    const char *meta[] = {"k", "v", NULL};
    char err[256];
    dsq_avro_file *f = dsq_avro_new(schema, meta, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    for (int i = 0; i < 2500; i++) {
        avro_value_t *r = dsq_avro_record(f), fld, br;
        cr_assert_eq(avro_value_get_by_name(r, "n", &fld, NULL), 0);
        avro_value_set_long(&fld, i * 1000003LL);
        avro_value_get_by_name(r, "s", &fld, NULL);
        if (i % 3 == 0) {
            avro_value_set_branch(&fld, 0, &br);
            avro_value_set_null(&br);
        } else {
            avro_value_set_branch(&fld, 1, &br);
            avro_value_set_string(&br, i % 2 ? "odd" : "even");
        }
        cr_assert_eq(dsq_avro_append(f, err, sizeof err), 0, "%s", err);
    }
    cr_assert_eq(dsq_avro_count(f), 2500);
    dsq_buf out = DSQ_BUF_INIT;
    cr_assert_eq(dsq_avro_finish(f, &out), 0);
    dsq_avro_free(f);
    cr_assert(memmem(out.data, out.len, "\"field-id\":7", 12) != NULL, "the header keeps the schema as given");

    char path[64];
    to_file(&out, path);
    avro_file_reader_t rd;
    cr_assert_eq(avro_file_reader(path, &rd), 0, "%s", avro_strerror());
    avro_schema_t ws = avro_file_reader_get_writer_schema(rd);
    avro_value_iface_t *iface = avro_generic_class_from_schema(ws);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int n = 0;
    while (avro_file_reader_read_value(rd, &v) == 0) {
        avro_value_t fld, br;
        int64_t x;
        avro_value_get_by_name(&v, "n", &fld, NULL);
        avro_value_get_long(&fld, &x);
        cr_assert_eq(x, n * 1000003LL, "record %d", n);
        avro_value_get_by_name(&v, "s", &fld, NULL);
        int disc;
        avro_value_get_discriminant(&fld, &disc);
        cr_assert_eq(disc, n % 3 == 0 ? 0 : 1, "record %d's union", n);
        if (disc == 1) {
            const char *s;
            size_t len;
            avro_value_get_current_branch(&fld, &br);
            avro_value_get_string(&br, &s, &len);
            cr_assert_str_eq(s, n % 2 ? "odd" : "even");
        }
        n++;
    }
    cr_assert_eq(n, 2500, "read %d records", n);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(ws);
    avro_file_reader_close(rd);
    unlink(path);
    dsq_buf_free(&out);
}

Test(avro, a_schema_that_does_not_parse_is_refused)
{
    char err[256];
    cr_assert_null(dsq_avro_new("{\"type\":\"record\",\"name\":", NULL, err, sizeof err));
    cr_assert(strstr(err, "does not parse") != NULL, "%s", err);
}

static const char *SCHEMA = "{\"type\":\"struct\",\"schema-id\":0,\"fields\":[{\"id\":1,\"name\":\"x\","
                            "\"required\":true,\"type\":\"long\"}]}";

/* Entries read back by libavro: status, sequence numbers, partition. */
Test(manifest, entries_read_back_by_libavro)
{
    dsq_ice_pfield pf[] = {{"db", 1000, DSQ_ICE_P_STRING}, {"bucket", 1001, DSQ_ICE_P_INT}};
    char err[256];
    dsq_manifest *m = dsq_manifest_new(SCHEMA, 0, "[]", 3, pf, 2, 0, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    for (int i = 0; i < 5; i++) {
        dsq_ice_pvalue pv[] = {{.s = i % 2 ? "a" : "b"}, {.null = i == 4, .i = i}};
        dsq_ice_entry e = {.status = i == 4 ? DSQ_ICE_DELETED : DSQ_ICE_ADDED,
                           .snapshot_id = i == 4 ? 9 : -1,
                           .sequence_number = i == 4 ? 2 : -1,
                           .file_sequence_number = i == 4 ? 2 : -1,
                           .file = {.path = "file:///x.parquet", .format = "parquet", .partition = pv,
                                    .record_count = 10 + i, .file_size = 100, .sort_order_id = -1}};
        cr_assert_eq(dsq_manifest_add(m, &e, err, sizeof err), 0, "%s", err);
    }
    dsq_buf out = DSQ_BUF_INIT;
    dsq_ice_mfile mf;
    cr_assert_eq(dsq_manifest_finish(m, &out, &mf), 0);
    cr_assert_eq(mf.added_files, 4);
    cr_assert_eq(mf.deleted_files, 1);
    cr_assert_eq(mf.added_rows, 10 + 11 + 12 + 13);
    cr_assert_eq(mf.deleted_rows, 14);
    cr_assert_eq(mf.spec_id, 3);
    cr_assert_eq(mf.nparts, 2);
    cr_assert(mf.parts[1].contains_null, "a deleted file's partition counts too (Iceberg summarizes every entry)");
    cr_assert_eq(mf.parts[1].lower.len, 4);
    cr_assert_eq(mf.parts[1].lower.data[0], 0);
    cr_assert_eq(mf.parts[1].upper.data[0], 3);
    cr_assert_str_eq(mf.parts[0].lower.data, "a");
    cr_assert_str_eq(mf.parts[0].upper.data, "b");

    char path[64];
    to_file(&out, path);
    avro_file_reader_t rd;
    cr_assert_eq(avro_file_reader(path, &rd), 0, "%s", avro_strerror());
    avro_schema_t ws = avro_file_reader_get_writer_schema(rd);
    avro_value_iface_t *iface = avro_generic_class_from_schema(ws);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int n = 0;
    while (avro_file_reader_read_value(rd, &v) == 0) {
        avro_value_t st, df, rc;
        int32_t status;
        int64_t records;
        avro_value_get_by_name(&v, "status", &st, NULL);
        avro_value_get_int(&st, &status);
        avro_value_get_by_name(&v, "data_file", &df, NULL);
        avro_value_get_by_name(&df, "record_count", &rc, NULL);
        avro_value_get_long(&rc, &records);
        cr_assert_eq(status, n == 4 ? 2 : 1);
        cr_assert_eq(records, 10 + n);
        n++;
    }
    cr_assert_eq(n, 5);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(ws);
    avro_file_reader_close(rd);
    unlink(path);
    /* The same, through dsq_manifest_files. */
    dsq_ice_fileref *fr;
    size_t nf;
    cr_assert_eq(dsq_manifest_files(out.data, out.len, &fr, &nf, err, sizeof err), 0, "%s", err);
    cr_assert_eq(nf, 5);
    for (size_t i = 0; i < nf; i++) {
        cr_assert_str_eq(fr[i].path, "file:///x.parquet");
        cr_assert_eq(fr[i].status, i == 4 ? DSQ_ICE_DELETED : DSQ_ICE_ADDED);
        cr_assert_eq(fr[i].content, 0);
        cr_assert_eq(fr[i].record_count, 10 + (int64_t)i);
        cr_assert_eq(fr[i].file_size, 100);
    }
    dsq_ice_filerefs_free(fr, nf);
    cr_assert_eq(dsq_manifest_files(out.data, out.len - 3, &fr, &nf, err, sizeof err), -1, "cut short");
    dsq_ice_filerefs_free(fr, nf);
    dsq_buf_free(&out);
    dsq_manifest_free(m);
}

/* Bounds of negative longs (their top byte set) decode back right. */
Test(manifest, bounds_of_negative_longs)
{
    dsq_ice_pfield pf[] = {{"k", 1000, DSQ_ICE_P_LONG}};
    char err[256];
    dsq_manifest *m = dsq_manifest_new(SCHEMA, 0, "[]", 0, pf, 1, 0, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    int64_t vals[] = {-5, INT64_MIN, 7, -1};
    for (int i = 0; i < 4; i++) {
        dsq_ice_pvalue pv[] = {{.i = vals[i]}};
        dsq_ice_entry e = {.status = DSQ_ICE_ADDED, .snapshot_id = -1, .sequence_number = -1,
                           .file_sequence_number = -1,
                           .file = {.path = "file:///x.parquet", .format = "parquet", .partition = pv,
                                    .record_count = 1, .file_size = 1, .sort_order_id = -1}};
        cr_assert_eq(dsq_manifest_add(m, &e, err, sizeof err), 0, "%s", err);
    }
    dsq_buf out = DSQ_BUF_INIT, lo = DSQ_BUF_INIT, hi = DSQ_BUF_INIT;
    dsq_ice_mfile mf;
    cr_assert_eq(dsq_manifest_finish(m, &out, &mf), 0);
    dsq_ice_put_long(&lo, INT64_MIN);
    dsq_ice_put_long(&hi, 7);
    cr_assert_eq(memcmp(mf.parts[0].lower.data, lo.data, 8), 0, "lower bound INT64_MIN");
    cr_assert_eq(memcmp(mf.parts[0].upper.data, hi.data, 8), 0, "upper bound 7");
    dsq_buf_free(&out);
    dsq_buf_free(&lo);
    dsq_buf_free(&hi);
    dsq_manifest_free(m);
}

/* A metadata key without a value is refused (a manifest missing its
 * required keys would be written otherwise). */
Test(avro, a_metadata_key_without_a_value_is_refused)
{
    const char *meta[] = {"k", NULL};
    char err[256];
    cr_assert_null(dsq_avro_new("{\"type\":\"record\",\"name\":\"r\",\"fields\":[]}", meta, err, sizeof err));
    cr_assert(strstr(err, "no value") != NULL, "%s", err);
}

/* A partition field name Avro cannot take is refused at once. */
Test(manifest, a_partition_name_avro_cannot_take_is_refused)
{
    dsq_ice_pfield pf[] = {{"bad name", 1000, DSQ_ICE_P_INT}};
    char err[256];
    cr_assert_null(dsq_manifest_new(SCHEMA, 0, "[]", 0, pf, 1, 0, err, sizeof err));
    cr_assert(strstr(err, "bad name") != NULL, "%s", err);
}

/* A manifest list written, then read back: every field, the partition
 * summaries' bounds, a null bound, and damage refused. */
Test(manifest, a_manifest_list_reads_back)
{
    dsq_ice_fsummary s1[2] = {{.contains_null = false, .has_bounds = true}, {.contains_null = true}};
    dsq_ice_put_int(&s1[0].lower, 20429);
    dsq_ice_put_int(&s1[0].upper, 20431);
    dsq_ice_mfile in[2] = {
        {.path = "file:///x/m1.avro", .length = 1234, .spec_id = 0, .content = 0, .sequence_number = 3,
         .min_sequence_number = 2, .added_snapshot_id = 77, .added_files = 4, .existing_files = 1,
         .deleted_files = 0, .added_rows = 400, .existing_rows = 10, .deleted_rows = 0, .parts = s1, .nparts = 2},
        {.path = "file:///x/m2.avro", .length = 99, .spec_id = 1, .content = 1, .sequence_number = 5,
         .min_sequence_number = 5, .added_snapshot_id = 78, .added_files = 1, .added_rows = 7},
    };
    dsq_buf out = DSQ_BUF_INIT;
    char err[256];
    cr_assert_eq(dsq_manifest_list(in, 2, 78, 77, 5, &out, err, sizeof err), 0, "%s", err);
    dsq_ice_mlist l;
    cr_assert_eq(dsq_manifest_list_read(out.data, out.len, &l, err, sizeof err), 0, "%s", err);
    cr_assert_eq(l.n, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_str_eq(l.files[i].path, in[i].path);
        cr_assert_eq(l.files[i].length, in[i].length);
        cr_assert_eq(l.files[i].spec_id, in[i].spec_id);
        cr_assert_eq(l.files[i].content, in[i].content);
        cr_assert_eq(l.files[i].sequence_number, in[i].sequence_number);
        cr_assert_eq(l.files[i].min_sequence_number, in[i].min_sequence_number);
        cr_assert_eq(l.files[i].added_snapshot_id, in[i].added_snapshot_id);
        cr_assert_eq(l.files[i].added_files, in[i].added_files);
        cr_assert_eq(l.files[i].existing_files, in[i].existing_files);
        cr_assert_eq(l.files[i].added_rows, in[i].added_rows);
        cr_assert_eq(l.files[i].existing_rows, in[i].existing_rows);
        cr_assert_eq(l.files[i].nparts, in[i].nparts);
    }
    const dsq_ice_fsummary *p = l.files[0].parts;
    cr_assert(p[0].has_bounds && !p[0].contains_null);
    cr_assert_eq(p[0].lower.len, 4);
    cr_assert_eq(memcmp(p[0].lower.data, s1[0].lower.data, 4), 0);
    cr_assert_eq(memcmp(p[0].upper.data, s1[0].upper.data, 4), 0);
    cr_assert(!p[1].has_bounds && p[1].contains_null);
    /* Written again from what was read: the same bytes but the sync
     * marker (random per file). */
    dsq_buf again = DSQ_BUF_INIT;
    cr_assert_eq(dsq_manifest_list(l.files, l.n, 78, 77, 5, &again, err, sizeof err), 0, "%s", err);
    cr_assert_eq(again.len, out.len);
    dsq_ice_mlist_free(&l);
    /* A file cut short, a block whose sync marker is damaged, a header
     * alone: refused, not read short (checked before libavro reads). */
    int rc = dsq_manifest_list_read(out.data, out.len - 7, &l, err, sizeof err);
    dsq_ice_mlist_free(&l);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "cut short") != NULL, "%s", err);
    ((uint8_t *)out.data)[out.len - 5] ^= 0xff;
    rc = dsq_manifest_list_read(out.data, out.len, &l, err, sizeof err);
    dsq_ice_mlist_free(&l);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "sync marker") != NULL, "%s", err);
    cr_assert_eq(dsq_manifest_list_read("Obj", 3, &l, err, sizeof err), -1);
    dsq_ice_mlist_free(&l);
    cr_assert_eq(dsq_manifest_list_read("Obj\x01\x02", 5, &l, err, sizeof err), -1);
    dsq_ice_mlist_free(&l);
    dsq_buf_free(&out);
    dsq_buf_free(&again);
    for (int i = 0; i < 2; i++) {
        dsq_buf_free(&s1[i].lower);
        dsq_buf_free(&s1[i].upper);
    }
}
