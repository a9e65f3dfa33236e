/* fuzz_value — the value codec (protocol/value.c): SQL values from JSON
 * parameters, and the JSON and Cap'n Web text written for results. Checks
 * more than "no crash":
 *   - dsq_json_string always writes valid JSON, and the bytes read back
 *     when they were valid UTF-8;
 *   - a parameter decoded from JSON, written with dsq_json_value and
 *     decoded again is the same value;
 *   - dsq_cw_doc, dsq_json_result and dsq_cw_result write valid JSON
 *     (DoSQL's JSON writes ±infinity as ±1e999, which jansson will not
 *     read: those are let through).
 *
 * Input: byte 0 picks the mode (mod 3): 0 raw bytes for dsq_json_string;
 * 1 a JSON text (a parameter, or params); 2 a result: byte 1 = columns
 * (1-4), then values, each a tag byte (type mod 5: null, int and real
 * with 8 bytes, text and blob with a length byte and bytes). */
#include <math.h>
#include <stdbool.h>

#include "common/util.h"
#include "protocol/value.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

static json_t *parse(const dsq_buf *b)
{
    json_error_t je;
    return json_loadb(b->data ? b->data : "", b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
}

static void must_parse(const dsq_buf *b, const char *what)
{
    json_t *j = parse(b);
    if (j == NULL) {
        fprintf(stderr, "%s wrote invalid JSON: %.*s\n", what, (int)b->len, b->data);
        abort();
    }
    json_decref(j);
}

static void json_string_check(const uint8_t *p, size_t n)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_json_string(&out, (const char *)p, n);
    json_t *j = parse(&out);
    if (j == NULL || !json_is_string(j)) {
        fprintf(stderr, "dsq_json_string wrote invalid JSON: %.*s\n", (int)out.len, out.data);
        abort();
    }
    if (dsq_utf8_valid(p, n) &&
        (json_string_length(j) != n || memcmp(json_string_value(j), p, n) != 0)) {
        fprintf(stderr, "dsq_json_string: valid UTF-8 did not read back\n");
        abort();
    }
    json_decref(j);
    dsq_buf_free(&out);
}

static bool same(const dsq_value *a, const dsq_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case DSQ_V_INT: return a->i == b->i;
    case DSQ_V_REAL: return a->d == b->d || (isnan(a->d) && isnan(b->d));
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
    default: return true;
    }
}

/* v (decoded from JSON) written as DoSQL's JSON reads back as itself. */
static void roundtrip(const dsq_value *v)
{
    dsq_buf out = DSQ_BUF_INIT;
    dsq_json_value(&out, v);
    json_t *j = parse(&out);
    if (j == NULL) {
        fprintf(stderr, "dsq_json_value wrote invalid JSON: %.*s\n", (int)out.len, out.data);
        abort();
    }
    dsq_arena a = {0};
    dsq_value back;
    char err[256];
    if (dsq_value_from_json(j, &back, &a, err, sizeof err) != 0 || !same(v, &back)) {
        fprintf(stderr, "value did not survive a round trip: %.*s\n", (int)out.len, out.data);
        abort();
    }
    dsq_buf_reset(&out);
    dsq_cw_value(&out, v);
    must_parse(&out, "dsq_cw_value");
    dsq_arena_free(&a);
    json_decref(j);
    dsq_buf_free(&out);
}

static void json_params(const uint8_t *p, size_t n)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL)
        return;
    dsq_arena a = {0};
    char err[256];
    dsq_value v;
    if (dsq_value_from_json(j, &v, &a, err, sizeof err) == 0)
        roundtrip(&v);
    dsq_stmt_req r = {0};
    if (dsq_params_from_json(j, &r, &a, 32, err, sizeof err) == 0) {
        for (size_t i = 0; i < r.nparams; i++)
            roundtrip(&r.params[i].v);
    }
    dsq_buf out = DSQ_BUF_INIT;
    if (dsq_cw_doc(&out, j) == 0)
        must_parse(&out, "dsq_cw_doc");
    dsq_buf_free(&out);
    dsq_arena_free(&a);
    json_decref(j);
}

static void result_text(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    static char *names[] = {"a", "b\"\\", "\xff", ""};
    static char *types[] = {"INTEGER", NULL, "TEXT", "\x01"};
    dsq_result r = {.ncols = 1 + p[0] % 4, .names = names, .decltypes = types,
                    .rows_affected = -1, .last_insert_rowid = INT64_MIN, .lsn = UINT64_MAX};
    bool infinite = false;
    size_t i = 1, vals = 0;
    while (i < n) {
        uint8_t tag = p[i++] % 5;
        dsq_buf_append(&r.rows, &tag, 1);
        if (tag == DSQ_V_INT || tag == DSQ_V_REAL) {
            uint8_t v[8] = {0};
            memcpy(v, p + i, n - i < 8 ? n - i : 8);
            i += n - i < 8 ? n - i : 8;
            if (tag == DSQ_V_REAL) {
                double d;
                memcpy(&d, v, 8);
                infinite |= isinf(d);
            }
            dsq_buf_append(&r.rows, v, 8);
        } else if (tag == DSQ_V_TEXT || tag == DSQ_V_BLOB) {
            uint32_t len = i < n ? p[i++] : 0;
            if (len > n - i)
                len = (uint32_t)(n - i);
            dsq_buf_append(&r.rows, &len, 4);
            dsq_buf_append(&r.rows, p + i, len);
            i += len;
        }
        vals++;
    }
    r.nrows = (vals + (size_t)r.ncols - 1) / (size_t)r.ncols;
    dsq_buf out = DSQ_BUF_INIT;
    dsq_json_result(&out, &r);
    if (!infinite)
        must_parse(&out, "dsq_json_result");
    dsq_buf_reset(&out);
    dsq_cw_result(&out, &r);
    must_parse(&out, "dsq_cw_result");
    dsq_buf_free(&out);
    dsq_buf_free(&r.rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0: json_string_check(data + 1, size - 1); break;
    case 1: json_params(data + 1, size - 1); break;
    default: result_text(data + 1, size - 1); break;
    }
    return 0;
}
