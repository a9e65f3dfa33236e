/* fuzz_pqread — the Parquet reader (lake/pqread.c) on files from the
 * object store, which may be corrupt: open, then every column of every
 * row group read. Checks more than "no crash": a read that succeeds gives
 * one value a row, each of its column's kind (NULL only in an OPTIONAL
 * column), and every BYTES value's bytes are touched (ASan: they are
 * inside the file or the reader's blocks).
 *
 * Input: byte 0 = options: bit 0 set, the harness writes "PAR1" over the
 * file's first and last four bytes, so that mutations get past the magic
 * to the footer; the rest is the file. The seeds are files of
 * lake/parquet's writer (tests/fuzz/mkcorpus.c). */
#include "lake/pqread.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

static void check_values(const dsq_pqr *r, size_t g, size_t c, const dsq_pqr_values *v)
{
    const dsq_pqr_column *col = dsq_pqr_column_at(r, c);
    if ((int64_t)v->n != dsq_pqr_row_group_at(r, g)->num_rows) {
        fprintf(stderr, "column %s of group %zu: %zu values\n", col->name, g, v->n);
        abort();
    }
    dsq_pq_kind want = col->type == DSQ_PQR_BOOLEAN                                  ? DSQ_PQ_BOOL
                       : col->type == DSQ_PQR_INT32 || col->type == DSQ_PQR_INT64 ? DSQ_PQ_INT
                       : col->type == DSQ_PQR_BYTE_ARRAY                            ? DSQ_PQ_BYTES
                                                                                    : DSQ_PQ_DOUBLE_V;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->v[i].kind != want && !(col->nullable && v->v[i].kind == DSQ_PQ_NULL)) {
            fprintf(stderr, "column %s row %zu: kind %d\n", col->name, i, v->v[i].kind);
            abort();
        }
        if (v->v[i].kind == DSQ_PQ_BYTES)
            for (size_t k = 0; k < v->v[i].u.bytes.n; k++)
                sink ^= ((const uint8_t *)v->v[i].u.bytes.p)[k];
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    size_t n = size - 1;
    uint8_t *p = malloc(n ? n : 1); /* a block of exactly the file: ASan sees a read past it */
    if (p == NULL)
        abort();
    if (n > 0)
        memcpy(p, data + 1, n);
    if ((opt & 1) && n >= 8) {
        memcpy(p, "PAR1", 4);
        memcpy(p + n - 4, "PAR1", 4);
    }
    char err[256];
    dsq_pqr *r = dsq_pqr_open(p, n, err, sizeof err);
    fuzz_note("dsq_pqr_open", r ? 0 : -1, err);
    if (r != NULL) {
        for (size_t g = 0; g < dsq_pqr_nrow_groups(r); g++)
            for (size_t c = 0; c < dsq_pqr_ncols(r); c++) {
                dsq_pqr_values v;
                int rc = dsq_pqr_col_read(r, g, c, &v);
                fuzz_note("dsq_pqr_col_read", rc, dsq_pqr_error(r));
                if (rc == 0) {
                    check_values(r, g, c, &v);
                    dsq_pqr_values_free(&v);
                }
            }
        dsq_pqr_close(r);
    }
    free(p);
    return 0;
}
