/* Unit tests: protocol/jsonrpc — envelopes, batches, errors, async calls. */
#include <criterion/criterion.h>
#include <string.h>

#include "protocol/jsonrpc.h"

static json_t *got;
static dsq_rpc_outcome got_how;
static int replies;
static dsq_rpc_call *held; /* a call the "later" method keeps */

static void reply(void *ud, const char *text, size_t len, dsq_rpc_outcome how)
{
    replies++;
    json_decref(got);
    got = NULL;
    if (text != NULL) {
        json_error_t e;
        got = json_loadb(text, len, 0, &e);
        cr_assert_not_null(got, "the reply is not JSON: %.*s", (int)len, text);
    }
    got_how = how;
}

static void m_echo(dsq_rpc_call *call, json_t *params, void *ctx)
{
    dsq_rpc_result(call, params ? json_deep_copy(params) : json_null());
}

static void m_fail(dsq_rpc_call *call, json_t *params, void *ctx)
{
    dsq_rpc_error(call, DSQ_CODE_TABLE_NOT_FOUND, "no such table: %s", "t");
}

static void m_later(dsq_rpc_call *call, json_t *params, void *ctx) { held = call; }

static void m_raw(dsq_rpc_call *call, json_t *params, void *ctx)
{
    dsq_rpc_result_raw(call, "{\"rows\":3}", 10);
}

static const dsq_rpc_method methods[] = {
    {"echo", m_echo}, {"fail", m_fail}, {"later", m_later}, {"raw", m_raw}, {NULL, NULL}};
static const dsq_rpc_server srv = {methods, NULL, 3};

static void handle(const char *text)
{
    dsq_rpc_handle(&srv, text, strlen(text), reply, NULL);
}

static void fini(void)
{
    json_decref(got);
    got = NULL;
    replies = 0;
    held = NULL;
}

TestSuite(jsonrpc, .fini = fini);

static const char *err_code(json_t *r) { return json_string_value(json_object_get(json_object_get(r, "error"), "code")); }

Test(jsonrpc, single_result)
{
    handle("{\"id\":7,\"method\":\"echo\",\"params\":{\"a\":1}}");
    cr_assert_eq(replies, 1);
    cr_assert_not(got_how.failed);
    cr_assert_eq(json_integer_value(json_object_get(got, "id")), 7);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(got, "result"), "a")), 1);
    cr_assert_null(json_object_get(got, "jsonrpc"), "not echoed when not sent");
}

Test(jsonrpc, jsonrpc_field_echoed_and_checked)
{
    handle("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"echo\"}");
    cr_assert_str_eq(json_string_value(json_object_get(got, "jsonrpc")), "2.0");
    cr_assert_str_eq(json_string_value(json_object_get(got, "id")), "x");
    handle("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"echo\"}");
    cr_assert_str_eq(err_code(got), "INVALID_REQUEST");
}

Test(jsonrpc, error_with_its_outcome)
{
    handle("{\"id\":1,\"method\":\"fail\"}");
    cr_assert_str_eq(err_code(got), "TABLE_NOT_FOUND");
    cr_assert(got_how.failed);
    cr_assert_eq(got_how.code, DSQ_CODE_TABLE_NOT_FOUND);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(got, "error"), "message")),
                     "no such table: t");
}

Test(jsonrpc, malformed_inputs)
{
    const char *bad[] = {"", "{", "nope", "{\"id\":1,\"method\":\"echo\",\"id\":2}", "[]",
                         "\"str\"", "{\"id\":1}", "{\"id\":{},\"method\":\"echo\"}",
                         "{\"id\":1,\"method\":5}", "{\"id\":1,\"method\":\"echo\",\"params\":3}",
                         "{\"id\":1,\"method\":\"missing\"}", "[1,2,3,4]",
                         "{\"id\":null,\"method\":\"echo\"}", "{\"id\":true,\"method\":\"echo\"}",
                         "{\"id\":1,\"method\":\"echo\",\"params\":\"\xff\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        replies = 0;
        handle(bad[i]);
        cr_assert_eq(replies, 1, "case %zu", i);
        cr_assert_not_null(got, "case %zu: an error reply", i);
        cr_assert_str_eq(err_code(got), "INVALID_REQUEST", "case %zu", i);
        cr_assert(got_how.failed, "case %zu", i);
        cr_assert_eq(got_how.code, DSQ_CODE_INVALID_REQUEST, "case %zu", i);
    }
}

Test(jsonrpc, batch_in_order_without_notifications)
{
    handle("[{\"id\":1,\"method\":\"echo\",\"params\":[1]},{\"method\":\"echo\"},"
           "{\"id\":3,\"method\":\"fail\"}]");
    cr_assert(json_is_array(got));
    cr_assert_eq(json_array_size(got), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(got, 0), "id")), 1);
    cr_assert_str_eq(err_code(json_array_get(got, 1)), "TABLE_NOT_FOUND");
    cr_assert_not(got_how.failed, "a batch does not fail, whatever its parts");
}

Test(jsonrpc, notifications_only_get_no_reply)
{
    handle("{\"method\":\"echo\"}");
    cr_assert_eq(replies, 1);
    cr_assert_null(got);
    cr_assert_not(got_how.failed);
    handle("{\"method\":\"missing\"}");
    cr_assert_null(got, "a notification's error is not answered");
}

Test(jsonrpc, raw_results_and_ids)
{
    handle("{\"id\":\"s\",\"method\":\"raw\"}");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(got, "result"), "rows")), 3);
    handle("{\"id\":1.5,\"method\":\"echo\"}");
    cr_assert_eq(json_real_value(json_object_get(got, "id")), 1.5);
}

Test(jsonrpc, asynchronous_answer)
{
    handle("[{\"id\":1,\"method\":\"later\"},{\"id\":2,\"method\":\"echo\"}]");
    cr_assert_eq(replies, 0, "the reply waits for every call");
    cr_assert_not_null(held);
    cr_assert_str_eq(dsq_rpc_method_name(held), "later");
    dsq_rpc_result(held, json_string("done"));
    cr_assert_eq(replies, 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(got, 0), "result")), "done");
}

Test(jsonrpc, unknown_envelope_members_refused_naming_them)
{
    handle("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"echo\",\"params\":{},\"branch\":\"x\"}");
    cr_assert_eq(replies, 1);
    cr_assert_str_eq(err_code(got), "INVALID_REQUEST");
    cr_assert_eq(json_integer_value(json_object_get(got, "id")), 3, "the reply carries the id");
    const char *msg = json_string_value(json_object_get(json_object_get(got, "error"), "message"));
    cr_assert(msg != NULL && strstr(msg, "unknown field \"branch\"") != NULL, "%s", msg);
    /* In a batch only that request fails. */
    handle("[{\"id\":1,\"method\":\"echo\",\"params\":{}},{\"id\":2,\"method\":\"echo\",\"result\":5}]");
    cr_assert_eq(json_array_size(got), 2);
    cr_assert_not_null(json_object_get(json_array_get(got, 0), "result"));
    cr_assert_str_eq(err_code(json_array_get(got, 1)), "INVALID_REQUEST");
}
