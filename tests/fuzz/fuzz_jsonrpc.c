/* fuzz_jsonrpc — JSON-RPC decoding (protocol/jsonrpc.c): one request or a
 * batch through dsq_rpc_handle, with a table of stub methods that answer
 * the ways real ones do: at once with a result, with raw JSON text, with
 * an error, or later (after dsq_rpc_handle returned), and one that decodes
 * its params as SQL values (protocol/value.c), as the query methods do.
 * Every message must get exactly one reply that is valid JSON (or none,
 * for notifications only), with an outcome whose code is a known one. */
#include <stdbool.h>

#include "protocol/jsonrpc.h"
#include "protocol/value.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

#define MAX_LATER 64

typedef struct ctx {
    dsq_rpc_call *later[MAX_LATER]; /* calls answered after the message */
    size_t nlater;
    int replies;
} ctx;

static void m_echo(dsq_rpc_call *call, json_t *params, void *ud)
{
    (void)dsq_rpc_method_name(call);
    (void)dsq_rpc_call_id(call);
    dsq_rpc_result(call, params ? json_incref(params) : json_null());
}

static void m_raw(dsq_rpc_call *call, json_t *params, void *ud)
{
    dsq_rpc_result_raw(call, "{\"rows\":[[1,\"x\"]]}", 18);
}

static void m_error(dsq_rpc_call *call, json_t *params, void *ud)
{
    const char *s = json_string_value(json_array_get(params, 0));
    dsq_rpc_error(call, DSQ_CODE_SYNTAX_ERROR, "near \"%s\": \"quoted\" \\ %d", s ? s : "",
                  dsq_rpc_call_in_batch(call));
}

static void m_later(dsq_rpc_call *call, json_t *params, void *ud)
{
    ctx *c = ud;
    if (c->nlater == MAX_LATER) {
        dsq_rpc_error(call, DSQ_CODE_RESOURCE_EXHAUSTED, "busy");
        return;
    }
    c->later[c->nlater++] = call;
}

/* As the query methods: params decoded as SQL values, "sql" a string. */
static void m_query(dsq_rpc_call *call, json_t *params, void *ud)
{
    json_t *sql = json_object_get(params, "sql");
    if (!json_is_string(sql)) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "\"sql\" must be a string");
        return;
    }
    dsq_arena a = {0};
    dsq_stmt_req r = {.sql = json_string_value(sql), .sql_len = json_string_length(sql)};
    char err[256];
    if (dsq_params_from_json(json_object_get(params, "params"), &r, &a, 100, err, sizeof err) != 0) {
        dsq_rpc_error(call, DSQ_CODE_INVALID_REQUEST, "%s", err);
    } else {
        dsq_buf out = DSQ_BUF_INIT;
        dsq_buf_puts(&out, "[");
        for (size_t i = 0; i < r.nparams; i++) {
            if (i)
                dsq_buf_puts(&out, ",");
            dsq_json_value(&out, &r.params[i].v);
        }
        dsq_buf_puts(&out, "]");
        dsq_rpc_result_raw(call, out.data, out.len);
        dsq_buf_free(&out);
    }
    dsq_arena_free(&a);
}

static const dsq_rpc_method methods[] = {
    {"echo", m_echo}, {"raw", m_raw}, {"error", m_error}, {"later", m_later}, {"query", m_query}, {NULL, NULL},
};

static void reply(void *ud, const char *text, size_t len, dsq_rpc_outcome how)
{
    ctx *c = ud;
    c->replies++;
    if (how.failed && (unsigned)how.code >= DSQ__CODE_COUNT) {
        fprintf(stderr, "reply with error code %d\n", (int)how.code);
        abort();
    }
    if (text == NULL)
        return;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        fprintf(stderr, "reply is not valid JSON (%s): %.*s\n", je.text, (int)len, text);
        abort();
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctx c = {0};
    dsq_rpc_server srv = {.methods = methods, .ctx = &c, .max_batch = 32};
    dsq_rpc_handle(&srv, (const char *)data, size, reply, &c);
    /* The deferred calls answer now, last first, alternating result and error. */
    while (c.nlater > 0) {
        dsq_rpc_call *call = c.later[--c.nlater];
        if (c.nlater & 1)
            dsq_rpc_error(call, DSQ_CODE_TIMEOUT, "took too long");
        else
            dsq_rpc_result(call, json_pack("{s:b}", "late", 1));
    }
    if (c.replies > 1) {
        fprintf(stderr, "%d replies to one message\n", c.replies);
        abort();
    }
    return 0;
}
