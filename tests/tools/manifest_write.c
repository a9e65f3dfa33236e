/* manifest_write DIR — writes DIR/manifest.avro (an Iceberg v2 manifest of
 * three data files: two added, one deleted, partitioned by day and by
 * database, with column metrics) and DIR/snap.avro (the manifest list of
 * a snapshot holding it), for tests/interop/manifest.test.mjs to read with
 * an independent Avro reader. Prints the manifest's length. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lake/manifest.h"

static int write_file(const char *dir, const char *name, const dsq_buf *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: manifest_write DIR\n");
        return 2;
    }
    const char *schema = "{\"type\":\"struct\",\"schema-id\":0,\"fields\":["
                         "{\"id\":1,\"name\":\"_op\",\"required\":true,\"type\":\"string\"},"
                         "{\"id\":2,\"name\":\"_lsn\",\"required\":true,\"type\":\"long\"},"
                         "{\"id\":3,\"name\":\"_commit_ts\",\"required\":true,\"type\":\"timestamptz\"},"
                         "{\"id\":4,\"name\":\"_database\",\"required\":true,\"type\":\"string\"},"
                         "{\"id\":5,\"name\":\"price\",\"required\":false,\"type\":\"double\"}]}";
    const char *spec = "[{\"name\":\"commit_day\",\"transform\":\"day\",\"source-id\":3,\"field-id\":1000},"
                       "{\"name\":\"database\",\"transform\":\"identity\",\"source-id\":4,\"field-id\":1001}]";
    dsq_ice_pfield pf[] = {{"commit_day", 1000, DSQ_ICE_P_DATE}, {"database", 1001, DSQ_ICE_P_STRING}};
    char err[256];
    dsq_manifest *m = dsq_manifest_new(schema, 0, spec, 0, pf, 2, 0, err, sizeof err);
    if (m == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    dsq_buf lo = DSQ_BUF_INIT, hi = DSQ_BUF_INIT, plo = DSQ_BUF_INIT, phi = DSQ_BUF_INIT;
    dsq_ice_put_long(&lo, 7);
    dsq_ice_put_long(&hi, 1234567890123LL);
    dsq_ice_put_double(&plo, -2.5);
    dsq_ice_put_double(&phi, 99.75);
    dsq_ice_colstats cols[] = {
        {.field_id = 1, .size = 40, .values = 100, .nulls = 0, .nans = -1, .lower = "DELETE", .lower_len = 6,
         .upper = "UPDATE", .upper_len = 6},
        {.field_id = 2, .size = 300, .values = 100, .nulls = 0, .nans = -1, .lower = lo.data, .lower_len = lo.len,
         .upper = hi.data, .upper_len = hi.len},
        {.field_id = 5, .size = 500, .values = 100, .nulls = 3, .nans = 0, .lower = plo.data, .lower_len = plo.len,
         .upper = phi.data, .upper_len = phi.len},
    };
    int64_t splits[] = {4, 65536};
    dsq_ice_pvalue p1[] = {{.i = 20429}, {.s = "shop"}};
    dsq_ice_pvalue p2[] = {{.i = 20430}, {.s = "billing"}};
    dsq_ice_pvalue p3[] = {{.i = 20000}, {.null = true}};
    dsq_ice_entry e[] = {
        {.status = DSQ_ICE_ADDED, .snapshot_id = -1, .sequence_number = -1, .file_sequence_number = -1,
         .file = {.content = 0, .path = "file:///lake/shop/orders_changelog/data/a.parquet", .format = "parquet",
                  .partition = p1, .record_count = 100, .file_size = 70000, .cols = cols, .ncols = 3,
                  .split_offsets = splits, .nsplits = 2, .sort_order_id = 0}},
        {.status = DSQ_ICE_ADDED, .snapshot_id = -1, .sequence_number = -1, .file_sequence_number = -1,
         .file = {.content = 0, .path = "file:///lake/shop/orders_changelog/data/b.parquet", .format = "parquet",
                  .partition = p2, .record_count = 5, .file_size = 3000, .sort_order_id = -1}},
        {.status = DSQ_ICE_DELETED, .snapshot_id = 41, .sequence_number = 3, .file_sequence_number = 3,
         .file = {.content = 0, .path = "file:///lake/shop/orders_changelog/data/old.parquet", .format = "parquet",
                  .partition = p3, .record_count = 9, .file_size = 5000, .sort_order_id = -1}},
    };
    for (size_t i = 0; i < 3; i++)
        if (dsq_manifest_add(m, &e[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    dsq_buf out = DSQ_BUF_INIT;
    dsq_ice_mfile mf;
    if (dsq_manifest_finish(m, &out, &mf) != 0 || write_file(argv[1], "manifest.avro", &out) != 0)
        return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.avro", argv[1]);
    mf.path = path;
    mf.length = (int64_t)out.len;
    mf.sequence_number = 4;
    mf.min_sequence_number = 4; /* the live files', inherited (the deleted one's 3 does not count) */
    mf.added_snapshot_id = 42;
    dsq_buf list = DSQ_BUF_INIT;
    if (dsq_manifest_list(&mf, 1, 42, 41, 4, &list, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (write_file(argv[1], "snap.avro", &list) != 0)
        return 1;
    printf("%zu\n", out.len);
    dsq_manifest_free(m);
    dsq_buf_free(&out);
    dsq_buf_free(&list);
    dsq_buf_free(&lo);
    dsq_buf_free(&hi);
    dsq_buf_free(&plo);
    dsq_buf_free(&phi);
    return 0;
}
