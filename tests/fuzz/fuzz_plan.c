/* fuzz_plan — the router's planner and merges (sharding/plan.c,
 * sharding/merge.c, sharding/sqlparse.c) on any SQL text. Checks more
 * than "no crash": every plan is whole (a refusal or an error says why,
 * one shard is a shard of the keyspace, a scatter names at least two
 * targets and the columns each returns), and the plan runs — its pieces
 * on two small shards (plain SQLite databases), its merge at the router —
 * without the router's part failing where the shards did not.
 *
 * Input: the statement's text. */
#include <sqlite3.h>

#include "sharding/merge.h"
#include "sharding/plan.h"
#include "sharding/vschema.h"
#include "tests/fuzz/fuzz.h"

static dsq_vschema *vs;
static const dsq_vs_keyspace *ks;
static dsq_ks_schema *schema;
static sqlite3 *shards[2];

static const char *const ddl[] = {
    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER, amount INTEGER, status TEXT COLLATE NOCASE, note)",
    "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE countries(code TEXT PRIMARY KEY, name TEXT)",
    "CREATE TABLE settings(k TEXT PRIMARY KEY, v)",
    "CREATE VIEW v AS SELECT status, count(*) AS n FROM orders GROUP BY status",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    static const char text[] =
        "{\"keyspaces\": {\"ks\": {\"shards\": [\"a\", \"b\"], \"vindexes\": {\"h\": {\"type\": \"hash\"}},"
        " \"tables\": {\"orders\": {\"column\": \"customer_id\", \"vindex\": \"h\"},"
        "  \"customers\": {\"column\": \"id\", \"vindex\": \"h\"}, \"countries\": {\"type\": \"reference\"},"
        "  \"settings\": {\"type\": \"unsharded\", \"shard\": \"a\"}}}}}";
    char err[300];
    if (dsq_vschema_parse(text, sizeof text - 1, &vs, err, sizeof err) != 0 ||
        dsq_ks_schema_new(ddl, sizeof ddl / sizeof *ddl, &schema, err, sizeof err) != 0)
        abort();
    ks = dsq_vschema_keyspace(vs, "ks");
    for (int s = 0; s < 2; s++) {
        if (sqlite3_open(":memory:", &shards[s]) != SQLITE_OK)
            abort();
        for (size_t i = 0; i < sizeof ddl / sizeof *ddl; i++)
            sqlite3_exec(shards[s], ddl[i], NULL, NULL, NULL);
        char rows[600];
        snprintf(rows, sizeof rows,
                 "INSERT INTO orders VALUES (%d, %d, 10, 'New', NULL), (%d, %d, NULL, 'new', 'x'), (%d, %d, 3, 'paid', 2.5);"
                 "INSERT INTO customers VALUES (%d, 'c'), (%d, 'd');"
                 "INSERT INTO countries VALUES ('new', 'N'), ('paid', NULL);",
                 s * 10 + 1, s + 1, s * 10 + 2, s + 1, s * 10 + 3, s + 3, s + 1, s + 3);
        sqlite3_exec(shards[s], rows, NULL, NULL, NULL);
    }
    sqlite3_exec(shards[0], "INSERT INTO settings VALUES ('a', 1)", NULL, NULL, NULL);
    return 0;
}

/* Run r on db into out (at most 1000 rows): 0, or -1. */
static int run(sqlite3 *db, const dsq_stmt_req *r, dsq_result *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, r->sql, (int)r->sql_len, &st, NULL) != SQLITE_OK || st == NULL ||
        !sqlite3_stmt_readonly(st)) {
        sqlite3_finalize(st);
        return -1;
    }
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++)
        sqlite3_bind_int(st, i, i);
    dsq_result_set_columns(out, st);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n++ < 1000)
        dsq_result_add_row(out, st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    dsq_param params[8];
    for (int i = 0; i < 8; i++)
        params[i] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = i + 1}};
    dsq_stmt_req req = {.sql = (const char *)data, .sql_len = size, .params = params, .nparams = 8};
    dsq_plan p;
    dsq_plan_make(schema, ks, &req, &p);
    switch (p.kind) {
    case DSQ_PLAN_REFUSE:
    case DSQ_PLAN_ERROR:
        if (p.msg[0] == '\0')
            abort();
        break;
    case DSQ_PLAN_ONE:
        if (p.shard >= ks->nshards)
            abort();
        break;
    case DSQ_PLAN_SCATTER: {
        size_t n = 0;
        for (size_t s = 0; s < ks->nshards; s++)
            n += p.targets[s];
        if (n < 2 || p.shard_q.sql == NULL || (p.merge_ddl != NULL && p.merge_q.sql == NULL))
            abort();
        dsq_param buf[8];
        dsq_stmt_req sub;
        dsq_plan_params(&p.shard_q, &req, buf, &sub);
        dsq_result parts[2];
        const dsq_result *pp[2];
        int ok = 0;
        for (int s = 0; s < 2; s++) {
            ok += run(shards[s], &sub, &parts[s]) == 0;
            pp[s] = &parts[s];
        }
        if (ok == 2) {
            dsq_result out;
            dsq_code code;
            char msg[300];
            dsq_merge_limits lim = {.timeout_ms = 1000, .max_bytes = 1u << 20};
            if (dsq_merge_scatter(&p, pp, 2, &req, &lim, &out, &code, msg, sizeof msg) == 0)
                dsq_result_free(&out);
            else if (msg[0] == '\0')
                abort();
        }
        for (int s = 0; s < 2; s++)
            dsq_result_free(&parts[s]);
        break;
    }
    case DSQ_PLAN_FETCH: {
        if (p.fetch_ddl == NULL)
            abort();
        dsq_result parts[16][2];
        const dsq_result *pp[16][2];
        const dsq_result *const *ppp[16];
        size_t np[16];
        bool ok = p.nfetch <= 16;
        size_t k;
        for (k = 0; ok && k < p.nfetch; k++) {
            dsq_param buf[8];
            dsq_stmt_req sub;
            dsq_plan_params(&p.fetch[k].q, &req, buf, &sub);
            np[k] = 0;
            for (int s = 0; s < 2 && ok; s++) {
                if (p.fetch[k].shard >= 0 && p.fetch[k].shard != s)
                    continue;
                ok = run(shards[s], &sub, &parts[k][np[k]]) == 0;
                pp[k][np[k]] = &parts[k][np[k]];
                np[k]++;
            }
            ppp[k] = pp[k];
        }
        if (ok) {
            dsq_result out;
            dsq_code code;
            char msg[300];
            dsq_merge_limits lim = {.timeout_ms = 1000, .max_bytes = 1u << 20};
            if (dsq_merge_fetch(&p, ppp, np, &req, &lim, &out, &code, msg, sizeof msg) == 0)
                dsq_result_free(&out);
            else if (msg[0] == '\0')
                abort();
        }
        for (size_t j = 0; j < k && j < 16; j++)
            for (size_t i = 0; i < np[j]; i++)
                dsq_result_free(&parts[j][i]);
        break;
    }
    default:
        break;
    }
    dsq_plan_free(&p);
    return 0;
}
