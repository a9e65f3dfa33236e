/* Unit tests: protocol/value — SQL values in JSON, both ways. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "protocol/value.h"

static dsq_arena A;

static void teardown(void) { dsq_arena_free(&A); }

TestSuite(value, .fini = teardown);

/* Decode the JSON text `j` as one parameter. */
static int decode(const char *j, dsq_value *v, char *err)
{
    json_error_t je;
    json_t *root = json_loads(j, JSON_DECODE_ANY, &je);
    cr_assert_not_null(root, "test JSON %s: %s", j, je.text);
    int rv = dsq_value_from_json(root, v, &A, err, 200);
    json_decref(root);
    return rv;
}

/* The JSON text of one value (static buffer, valid until the next call). */
static const char *encode(const dsq_value *v)
{
    static dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_reset(&b);
    dsq_json_value(&b, v);
    return b.data;
}

static void roundtrip_int(int64_t i, const char *want)
{
    dsq_value v = {.type = DSQ_V_INT, .i = i}, back;
    char err[200];
    const char *text = encode(&v);
    cr_assert_str_eq(text, want);
    cr_assert_eq(decode(text, &back, err), 0, "%s", err);
    cr_assert_eq(back.type, DSQ_V_INT);
    cr_assert_eq(back.i, i, "%s read back as %lld", text, (long long)back.i);
}

Test(value, integers_at_the_edges)
{
    roundtrip_int(0, "0");
    roundtrip_int(-1, "-1");
    roundtrip_int(9007199254740991ll, "9007199254740991");
    roundtrip_int(-9007199254740991ll, "-9007199254740991");
    roundtrip_int(9007199254740992ll, "{\"$bigint\":\"9007199254740992\"}");
    roundtrip_int(-9007199254740992ll, "{\"$bigint\":\"-9007199254740992\"}");
    roundtrip_int(INT64_MAX, "{\"$bigint\":\"9223372036854775807\"}");
    roundtrip_int(INT64_MIN, "{\"$bigint\":\"-9223372036854775808\"}");
}

Test(value, bad_bigints_are_refused)
{
    dsq_value v;
    char err[200];
    const char *bad[] = {
        "{\"$bigint\":\"9223372036854775808\"}", /* beyond int64 */
        "{\"$bigint\":\"12a\"}",
        "{\"$bigint\":\"\"}",
        "{\"$bigint\":\"-\"}",
        "{\"$bigint\":\"007\"}",
        "{\"$bigint\":\" 1\"}",
        "{\"$bigint\":12}",
        "{\"$bigint\":\"1\",\"x\":1}",
        "{\"x\":1}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(decode(bad[i], &v, err), -1, "%s was accepted", bad[i]);
}

Test(value, reals_round_trip_and_stay_real)
{
    double cases[] = {0.0, 1.0, -2.5, 0.1, 1e300, -1e-300, 3.141592653589793, 123456789012345680.0,
                      5e-324};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsq_value v = {.type = DSQ_V_REAL, .d = cases[i]}, back;
        char err[200];
        const char *text = encode(&v);
        cr_assert(strpbrk(text, ".eE") != NULL, "%s does not look like a REAL", text);
        cr_assert_eq(decode(text, &back, err), 0, "%s", err);
        cr_assert_eq(back.type, DSQ_V_REAL, "%s", text);
        cr_assert(back.d == cases[i], "%s read back as %.17g", text, back.d);
    }
}

Test(value, nan_and_infinity_are_refused_as_params)
{
    json_t *j = json_real(INFINITY);
    dsq_value v;
    char err[200];
    /* jansson will not make a non-finite real; refuse one if it ever did. */
    if (j != NULL) {
        cr_assert_eq(dsq_value_from_json(j, &v, &A, err, sizeof err), -1);
        json_decref(j);
    }
    /* And JSON text cannot carry them: the parser refuses each spelling. */
    const char *texts[] = {"NaN", "Infinity", "-Infinity", "1e999", "nan"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        json_error_t je;
        json_t *root = json_loads(texts[i], JSON_DECODE_ANY, &je);
        cr_assert_null(root, "%s parsed", texts[i]);
    }
    /* Results may hold infinity (SQLite computes it): written as ±1e999. */
    dsq_value inf = {.type = DSQ_V_REAL, .d = INFINITY};
    cr_assert_str_eq(encode(&inf), "1e999");
    inf.d = -INFINITY;
    cr_assert_str_eq(encode(&inf), "-1e999");
}

Test(value, blobs_round_trip)
{
    unsigned char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (unsigned char)i;
    for (size_t n = 0; n <= 256; n += (n < 8 ? 1 : 61)) {
        dsq_value v = {.type = DSQ_V_BLOB, .p = (const char *)bytes, .n = n}, back;
        char err[200];
        const char *text = encode(&v);
        cr_assert(strncmp(text, "{\"$bytes\":\"", 11) == 0, "%s", text);
        cr_assert_eq(decode(text, &back, err), 0, "%s", err);
        cr_assert_eq(back.type, DSQ_V_BLOB);
        cr_assert_eq(back.n, n);
        cr_assert(n == 0 || memcmp(back.p, bytes, n) == 0);
    }
    dsq_value hello = {.type = DSQ_V_BLOB, .p = "hello", .n = 5};
    cr_assert_str_eq(encode(&hello), "{\"$bytes\":\"aGVsbG8=\"}");
}

Test(value, base64_with_or_without_padding)
{
    dsq_value v;
    char err[200];
    const char *bad[] = {"{\"$bytes\":\"aGVsbG8x=\"}", "{\"$bytes\":\"a=Vs\"}",
                         "{\"$bytes\":\"aGV*bG8=\"}", "{\"$bytes\":\"====\"}",
                         "{\"$bytes\":\"a\"}", "{\"$bytes\":\"aGVsb\"}", "{\"$bytes\":\"aG=s\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(decode(bad[i], &v, err), -1, "%s was accepted", bad[i]);
    /* Without its padding (as Cap'n Web's client sends it) it is fine. */
    cr_assert_eq(decode("{\"$bytes\":\"aGVsbG8\"}", &v, err), 0, "%s", err);
    cr_assert(v.n == 5 && memcmp(v.p, "hello", 5) == 0);
    cr_assert_eq(decode("{\"$bytes\":\"aGk\"}", &v, err), 0, "%s", err);
    cr_assert(v.n == 2 && memcmp(v.p, "hi", 2) == 0);
    cr_assert_eq(decode("{\"$bytes\":\"aA\"}", &v, err), 0, "%s", err);
    cr_assert(v.n == 1 && v.p[0] == 'h');
}

Test(value, unicode_text)
{
    const char *s = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \"q\" \\ \n\t\x01";
    dsq_value v = {.type = DSQ_V_TEXT, .p = s, .n = strlen(s)}, back;
    char err[200];
    const char *text = encode(&v);
    cr_assert_str_eq(text, "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \\\"q\\\" \\\\ \\n\\t\\u0001\"");
    cr_assert_eq(decode(text, &back, err), 0, "%s", err);
    cr_assert_eq(back.type, DSQ_V_TEXT);
    cr_assert_eq(back.n, strlen(s));
    cr_assert(memcmp(back.p, s, back.n) == 0);
    /* Text with a NUL inside survives. */
    dsq_value nul = {.type = DSQ_V_TEXT, .p = "a\0b", .n = 3};
    cr_assert_str_eq(encode(&nul), "\"a\\u0000b\"");
}

Test(value, invalid_utf8_becomes_replacement_characters)
{
    const char *cases[][2] = {
        {"a\xff" "b", "\"a\xef\xbf\xbd" "b\""},              /* a byte never in UTF-8 */
        {"\xc3", "\"\xef\xbf\xbd\""},                        /* truncated */
        {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},        /* overlong */
        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* a surrogate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsq_value v = {.type = DSQ_V_TEXT, .p = cases[i][0], .n = strlen(cases[i][0])};
        const char *text = encode(&v);
        cr_assert_str_eq(text, cases[i][1], "case %zu", i);
        json_error_t je;
        json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
        cr_assert_not_null(j, "case %zu is not valid JSON: %s", i, je.text);
        json_decref(j);
    }
}

Test(value, booleans_and_null)
{
    dsq_value v;
    char err[200];
    cr_assert_eq(decode("true", &v, err), 0);
    cr_assert(v.type == DSQ_V_INT && v.i == 1);
    cr_assert_eq(decode("false", &v, err), 0);
    cr_assert(v.type == DSQ_V_INT && v.i == 0);
    cr_assert_eq(decode("null", &v, err), 0);
    cr_assert_eq(v.type, DSQ_V_NULL);
    cr_assert_str_eq(encode(&v), "null");
}

static int params(const char *j, dsq_stmt_req *r, size_t max, char *err)
{
    json_error_t je;
    json_t *root = json_loads(j, JSON_DECODE_ANY, &je);
    cr_assert_not_null(root, "%s", je.text);
    int rv = dsq_params_from_json(root, r, &A, max, err, 200);
    json_decref(root);
    return rv;
}

Test(value, params_positional_and_named)
{
    dsq_stmt_req r;
    char err[200];
    cr_assert_eq(params("[1, \"x\", null]", &r, 10, err), 0, "%s", err);
    cr_assert_eq(r.nparams, 3);
    cr_assert_not(r.named);
    cr_assert_null(r.params[0].name);
    cr_assert_eq(params("{\":a\": 1, \"@b\": 2, \"$c\": 3, \"d\": 4}", &r, 10, err), 0, "%s", err);
    cr_assert(r.named);
    cr_assert_str_eq(r.params[0].name, "a");
    cr_assert_str_eq(r.params[1].name, "b");
    cr_assert_str_eq(r.params[2].name, "c");
    cr_assert_str_eq(r.params[3].name, "d");
}

Test(value, params_refusals)
{
    dsq_stmt_req r;
    char err[200];
    cr_assert_eq(params("[1,2,3]", &r, 2, err), -1);
    cr_assert(strstr(err, "too many params") != NULL, "%s", err);
    cr_assert_eq(params("{\":a\": 1, \"a\": 2}", &r, 10, err), -1);
    cr_assert(strstr(err, "twice") != NULL, "%s", err);
    cr_assert_eq(params("{\":\": 1}", &r, 10, err), -1);
    cr_assert_eq(params("\"x\"", &r, 10, err), -1);
    cr_assert_eq(params("[[1]]", &r, 10, err), -1);
    cr_assert(strstr(err, "params[0]") != NULL, "%s", err);
}

Test(value, result_document)
{
    dsq_result r = {0};
    char *names[] = {"id", "v"};
    char *types[] = {"INTEGER", NULL};
    r.ncols = 2;
    r.names = names;
    r.decltypes = types;
    r.rows_affected = 0;
    r.last_insert_rowid = 9007199254740993ll;
    r.lsn = 7;
    dsq_buf out = DSQ_BUF_INIT;
    dsq_json_result(&out, &r);
    cr_assert_str_eq(out.data, "{\"columns\":[\"id\",\"v\"],\"columnTypes\":[\"INTEGER\",null],"
                               "\"rows\":[],\"rowsAffected\":0,"
                               "\"lastInsertRowid\":{\"$bigint\":\"9007199254740993\"},\"lsn\":7}");
    dsq_buf_free(&out);
}

/* ---- Cap'n Web expressions ---- */

static const char *cw(const dsq_value *v)
{
    static dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_reset(&b);
    dsq_cw_value(&b, v);
    return b.data;
}

Test(value, capnweb_values)
{
    dsq_value v = {.type = DSQ_V_INT, .i = 9007199254740991ll};
    cr_assert_str_eq(cw(&v), "9007199254740991");
    v.i = -9007199254740992ll;
    cr_assert_str_eq(cw(&v), "[\"bigint\",\"-9007199254740992\"]");
    v = (dsq_value){.type = DSQ_V_REAL, .d = INFINITY};
    cr_assert_str_eq(cw(&v), "[\"inf\"]");
    v.d = -INFINITY;
    cr_assert_str_eq(cw(&v), "[\"-inf\"]");
    v.d = NAN;
    cr_assert_str_eq(cw(&v), "[\"nan\"]");
    v.d = 2.0;
    cr_assert_str_eq(cw(&v), "2.0");
    v = (dsq_value){.type = DSQ_V_BLOB, .p = "\x01\x02", .n = 2};
    cr_assert_str_eq(cw(&v), "[\"bytes\",\"AQI=\"]");
    v = (dsq_value){.type = DSQ_V_TEXT, .p = "[\"x\"]", .n = 5};
    cr_assert_str_eq(cw(&v), "\"[\\\"x\\\"]\"", "a string stays a string");
    v = (dsq_value){.type = DSQ_V_NULL};
    cr_assert_str_eq(cw(&v), "null");
}

Test(value, capnweb_documents_escape_arrays_and_bigint_lsns)
{
    json_error_t je;
    json_t *doc = json_loads("{\"tables\":[{\"name\":\"t\",\"cols\":[1,[2]]}],\"lsn\":7,\"n\":7}", 0, &je);
    cr_assert_not_null(doc);
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_cw_doc(&b, doc), 0);
    cr_assert_str_eq(b.data, "{\"tables\":[[{\"name\":\"t\",\"cols\":[[1,[[2]]]]}]],"
                             "\"lsn\":[\"bigint\",\"7\"],\"n\":7}");
    dsq_buf_free(&b);
    json_decref(doc);
}

Test(value, redaction_hides_parameter_and_row_values_not_sql)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"{\"id\":1,\"method\":\"query\",\"params\":{\"sql\":\"SELECT ?\",\"params\":[\"pw\",7,{\"$bytes\":\"AQI=\"}]}}",
         "{\"id\":1,\"method\":\"query\",\"params\":{\"sql\":\"SELECT ?\",\"params\":[\"?\",\"?\",{\"$bytes\":\"?\"}]}}"},
        {"[{\"method\":\"stream.chunk\",\"params\":{\"seq\":0,\"rows\":[[\"pw\"]]}},{\"id\":2,\"params\":{\"params\":[\"pw\"]}}]",
         "[{\"method\":\"stream.chunk\",\"params\":{\"seq\":0,\"rows\":[[\"?\"]]}},{\"id\":2,\"params\":{\"params\":[\"?\"]}}]"},
        {"[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT :a\",\"params\":{\"a\":\"pw\"}}]]]",
         "[\"push\",[\"pipeline\",0,[\"query\"],[{\"sql\":\"SELECT :a\",\"params\":{\"a\":\"?\"}}]]]"},
        {"[\"resolve\",1,{\"columns\":[[\"v\"]],\"rows\":[[[[\"pw\",null]]]],\"lsn\":[\"bigint\",\"2\"]}]",
         "[\"resolve\",1,{\"columns\":[[\"v\"]],\"rows\":[[[[\"?\",\"?\"]]]],\"lsn\":[\"bigint\",\"2\"]}]"},
        {"{\"operation\":\"UPDATE\",\"before\":{\"v\":\"old\"},\"after\":{\"v\":\"new\"}}",
         "{\"operation\":\"UPDATE\",\"before\":{\"v\":\"?\"},\"after\":{\"v\":\"?\"}}"},
        {"not json \"pw\"", "<13 bytes>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = dsq_redact_json(cases[i].in, strlen(cases[i].in));
        cr_assert_str_eq(got, cases[i].want, "%s", cases[i].in);
        free(got);
    }
}
