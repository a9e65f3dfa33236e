/* Unit tests: sharding/plan and sharding/merge — the router's answers
 * against one database's.
 *
 * The same rows are in one SQLite database and spread over the shards of
 * a keyspace (plain SQLite databases here, placed by the vindexes); each
 * query is planned, run on the shards the plan names and merged as the
 * server does, and its rows must equal the one database's (as a multiset
 * when the query does not order them all). Hand-written queries name the
 * plan they must get; generated ones cover the combinations. */
#include <criterion/criterion.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/merge.h"
#include "sharding/plan.h"
#include "sharding/sqlparse.h"
#include "sharding/vschema.h"

static const char *const ddl[] = {
    "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region TEXT COLLATE NOCASE, score REAL)",
    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER, amount INTEGER, status TEXT, note)",
    "CREATE TABLE countries(code TEXT PRIMARY KEY, name TEXT)",
    "CREATE TABLE settings(k TEXT PRIMARY KEY, v)",
    "CREATE TABLE events(id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT)",
    "CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500",
};
#define NDDL (sizeof ddl / sizeof ddl[0])

typedef struct world {
    dsq_vschema *vs;
    const dsq_vs_keyspace *ks;
    dsq_ks_schema *schema;
    sqlite3 *one;
    sqlite3 **shards;
    size_t nshards;
} world;

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql, err ? err : "");
}

static size_t shard_of_int(const world *w, const char *table, int64_t v)
{
    const dsq_vs_table *t = dsq_vs_table_find(w->ks, table);
    dsq_skey k = {.kind = DSQ_SKEY_INT, .i = v};
    size_t s;
    char err[100];
    cr_assert_eq(dsq_vindex_shard(w->ks->vindexes[t->vindex].v, &k, &s, err, sizeof err), 0, "%s", err);
    return s;
}

static void put(world *w, size_t shard, const char *sql)
{
    if (shard == (size_t)-1) {
        for (size_t s = 0; s < w->nshards; s++)
            exec(w->shards[s], sql);
    } else {
        exec(w->shards[shard], sql);
    }
    exec(w->one, sql);
}

static uint32_t rnd_state;
static uint32_t rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return rnd_state >> 8;
}

/* Review: extra tables for some tests (DDL on every shard and at the
 * router; VSchema entries appended to "tables"). */
static const char *extra_ddl[8];
static size_t nextra_ddl;
static const char *extra_vs = "";

static void world_make(world *w, size_t nshards)
{
    memset(w, 0, sizeof *w);
    char vs[2048];
    char shards[1024] = "";
    for (size_t i = 0; i < nshards; i++)
        snprintf(shards + strlen(shards), sizeof shards - strlen(shards), "%s\"s%zu\"", i ? "," : "", i);
    snprintf(vs, sizeof vs,
             "{\"keyspaces\": {\"ks\": {\"shards\": [%s],"
             " \"vindexes\": {\"h\": {\"type\": \"hash\"}, \"r\": {\"type\": \"range\", \"boundaries\": [%s]}},"
             " \"tables\": {\"customers\": {\"column\": \"id\", \"vindex\": \"h\"},"
             "   \"orders\": {\"column\": \"customer_id\", \"vindex\": \"h\"},"
             "   \"countries\": {\"type\": \"reference\"},"
             "   \"settings\": {\"type\": \"unsharded\", \"shard\": \"s0\"},"
             "   \"events\": {\"column\": \"id\", \"vindex\": \"r\"}%s}}}}",
             shards, nshards == 4 ? "100, 200, 300" : "20,40,60,80,100,120,140,160,180,200,220,240,260,280,300",
             extra_vs);
    char err[300];
    cr_assert_eq(dsq_vschema_parse(vs, strlen(vs), &w->vs, err, sizeof err), 0, "%s", err);
    w->ks = dsq_vschema_keyspace(w->vs, "ks");
    const char *all_ddl[NDDL + 8];
    size_t nall = 0;
    for (size_t i = 0; i < NDDL; i++)
        all_ddl[nall++] = ddl[i];
    for (size_t i = 0; i < nextra_ddl; i++)
        all_ddl[nall++] = extra_ddl[i];
    cr_assert_eq(dsq_ks_schema_new(all_ddl, nall, &w->schema, err, sizeof err), 0, "%s", err);
    w->nshards = nshards;
    w->shards = calloc(nshards, sizeof *w->shards);
    cr_assert_eq(sqlite3_open(":memory:", &w->one), SQLITE_OK);
    for (size_t s = 0; s < nshards; s++)
        cr_assert_eq(sqlite3_open(":memory:", &w->shards[s]), SQLITE_OK);
    for (size_t i = 0; i < NDDL; i++)
        put(w, (size_t)-1, ddl[i]);
    for (size_t i = 0; i < nextra_ddl; i++)
        put(w, (size_t)-1, extra_ddl[i]);
    exec(w->one, "BEGIN");
    for (size_t s = 0; s < nshards; s++)
        exec(w->shards[s], "BEGIN");
    rnd_state = 7;
    static const char *const regions[] = {"north", "South", "east", "WEST", "south", "North"};
    static const char *const statuses[] = {"new", "paid", "shipped", "cancelled"};
    char sql[512];
    for (int id = 1; id <= 200; id++) {
        if (id % 17 == 0)
            snprintf(sql, sizeof sql, "INSERT INTO customers VALUES (%d, 'c%d', NULL, NULL)", id, id % 50);
        else
            snprintf(sql, sizeof sql, "INSERT INTO customers VALUES (%d, 'c%d', '%s', %d.%d)", id, id % 50,
                     regions[rnd() % 6], (int)(rnd() % 100), (int)(rnd() % 10));
        put(w, shard_of_int(w, "customers", id), sql);
    }
    for (int id = 1; id <= 1000; id++) {
        int cust = 1 + (int)(rnd() % 200);
        const char *st = statuses[rnd() % 4];
        int amount = (int)(rnd() % 1000);
        switch (id % 7) {
        case 0: snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (%d, %d, NULL, '%s', NULL)", id, cust, st); break;
        case 1: snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (%d, %d, %d, '%s', %d)", id, cust, amount, st, amount % 13); break;
        case 2: snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (%d, %d, %d, '%s', 'n%d')", id, cust, amount, st, amount % 11); break;
        case 3: snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (%d, %d, %d, '%s', %d.5)", id, cust, amount, st, amount % 5); break;
        default: snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (%d, %d, %d, '%s', x'0%d')", id, cust, amount, st, amount % 10); break;
        }
        put(w, shard_of_int(w, "orders", cust), sql);
    }
    for (int id = 1; id <= 320; id++) {
        snprintf(sql, sizeof sql, "INSERT INTO events VALUES (%d, %d, 'k%d')", id, (int)(rnd() % 5000), id % 9);
        put(w, shard_of_int(w, "events", id), sql);
    }
    put(w, (size_t)-1, "INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany'), ('jp', 'Japan'), ('us', NULL)");
    put(w, 0, "INSERT INTO settings VALUES ('a', 1), ('b', 'two'), ('c', NULL)");
    exec(w->one, "COMMIT");
    for (size_t s = 0; s < nshards; s++)
        exec(w->shards[s], "COMMIT");
}

static void world_free(world *w)
{
    for (size_t s = 0; s < w->nshards; s++)
        sqlite3_close(w->shards[s]);
    free(w->shards);
    sqlite3_close(w->one);
    dsq_ks_schema_free(w->schema);
    dsq_vschema_free(w->vs);
}

/* Run r on db into out: 0, or -1 with SQLite's message. */
static int run(sqlite3 *db, const dsq_stmt_req *r, dsq_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, r->sql, (int)r->sql_len, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s [%s]", sqlite3_errmsg(db), r->sql);
        return -1;
    }
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        const dsq_value *v = NULL;
        if (r->named) {
            for (size_t k = 0; k < r->nparams; k++)
                if (name && strcmp(r->params[k].name, name + 1) == 0)
                    v = &r->params[k].v;
        } else if ((size_t)i <= r->nparams) {
            v = &r->params[i - 1].v;
        }
        if (v == NULL) {
            snprintf(err, errlen, "parameter %d missing [%s]", i, r->sql);
            sqlite3_finalize(st);
            return -1;
        }
        if (v->type == DSQ_V_INT)
            sqlite3_bind_int64(st, i, v->i);
        else if (v->type == DSQ_V_TEXT)
            sqlite3_bind_text(st, i, v->p, (int)v->n, SQLITE_STATIC);
        else if (v->type == DSQ_V_REAL)
            sqlite3_bind_double(st, i, v->d);
        else
            sqlite3_bind_null(st, i);
    }
    dsq_result_set_columns(out, st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        dsq_result_add_row(out, st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s [%s]", sqlite3_errmsg(db), r->sql);
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

/* The router's answer to r: 0 and *out, or -1 with the message. */
static int route(world *w, const dsq_stmt_req *r, dsq_plan *p, dsq_result *out, char *err, size_t errlen)
{
    dsq_plan_make(w->schema, w->ks, r, p);
    dsq_param buf[16];
    dsq_stmt_req sub;
    dsq_code code;
    dsq_merge_limits lim = {.timeout_ms = 10000, .max_bytes = 64u << 20};
    switch (p->kind) {
    case DSQ_PLAN_ONE:
        return run(w->shards[p->shard], r, out, err, errlen);
    case DSQ_PLAN_SCATTER: {
        dsq_result parts[64];
        const dsq_result *pp[64];
        size_t n = 0;
        dsq_plan_params(&p->shard_q, r, buf, &sub);
        for (size_t s = 0; s < w->nshards; s++) {
            if (!p->targets[s])
                continue;
            if (run(w->shards[s], &sub, &parts[n], err, errlen) != 0)
                return -1;
            pp[n] = &parts[n];
            n++;
        }
        int rc = dsq_merge_scatter(p, pp, n, r, &lim, out, &code, err, errlen);
        for (size_t i = 0; i < n; i++)
            dsq_result_free(&parts[i]);
        return rc;
    }
    case DSQ_PLAN_FETCH: {
        dsq_result *parts[64];
        const dsq_result *pp[64][64];
        const dsq_result *const *ppp[64];
        size_t np[64];
        for (size_t k = 0; k < p->nfetch; k++) {
            const dsq_plan_fetch *f = &p->fetch[k];
            parts[k] = calloc(w->nshards, sizeof **parts);
            np[k] = 0;
            dsq_plan_params(&f->q, r, buf, &sub);
            for (size_t s = 0; s < w->nshards; s++) {
                if (f->shard >= 0 && (size_t)f->shard != s)
                    continue;
                if (run(w->shards[s], &sub, &parts[k][np[k]], err, errlen) != 0)
                    return -1;
                pp[k][np[k]] = &parts[k][np[k]];
                np[k]++;
            }
            ppp[k] = pp[k];
        }
        int rc = dsq_merge_fetch(p, ppp, np, r, &lim, out, &code, err, errlen);
        for (size_t k = 0; k < p->nfetch; k++) {
            for (size_t i = 0; i < np[k]; i++)
                dsq_result_free(&parts[k][i]);
            free(parts[k]);
        }
        return rc;
    }
    default:
        snprintf(err, errlen, "%s: %.400s", dsq_plan_kind_name(p->kind), p->msg);
        return -1;
    }
}

/* Text compared without regard to case (queries that group or pick
 * DISTINCT values of a NOCASE column: which of a group's spellings comes
 * back is SQLite's choice, on one database as at the router). */
static bool fold_case;

/* Each row as text, types told apart; reals to 9 significant digits
 * (sums of reals added in another order differ in the last bits). */
static char **rows_text(const dsq_result *r, size_t *n)
{
    char **v = calloc(r->nrows ? r->nrows : 1, sizeof *v);
    size_t pos = 0;
    for (size_t row = 0; row < r->nrows; row++) {
        char line[4096] = "";
        for (int c = 0; c < r->ncols; c++) {
            dsq_value x;
            dsq_result_next(r, &pos, &x);
            char cell[600];
            switch (x.type) {
            case DSQ_V_INT: snprintf(cell, sizeof cell, "i%lld", (long long)x.i); break;
            case DSQ_V_REAL: snprintf(cell, sizeof cell, "r%.9g", x.d); break;
            case DSQ_V_TEXT:
                snprintf(cell, sizeof cell, "t%.*s", (int)(x.n > 500 ? 500 : x.n), x.p);
                for (char *q = cell; fold_case && *q; q++)
                    *q = (char)((*q >= 'A' && *q <= 'Z') ? *q + 32 : *q);
                break;
            case DSQ_V_BLOB: snprintf(cell, sizeof cell, "b%zu", x.n); break;
            default: snprintf(cell, sizeof cell, "null"); break;
            }
            snprintf(line + strlen(line), sizeof line - strlen(line), "%s|", cell);
        }
        v[row] = strdup(line);
    }
    *n = r->nrows;
    return v;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Do the two answers hold the same rows (in the same order when
 * `ordered`)? The first difference in why. */
static bool same_rows(const dsq_result *a, const dsq_result *b, bool ordered, char *why, size_t n)
{
    if (a->ncols != b->ncols) {
        snprintf(why, n, "%d columns, not %d", b->ncols, a->ncols);
        return false;
    }
    for (int c = 0; c < a->ncols; c++)
        if (strcmp(a->names[c], b->names[c]) != 0) {
            snprintf(why, n, "column %d named '%s', not '%s'", c, b->names[c], a->names[c]);
            return false;
        }
    size_t na, nb;
    char **ra = rows_text(a, &na), **rb = rows_text(b, &nb);
    bool same = na == nb;
    if (!same)
        snprintf(why, n, "%zu rows, not %zu", nb, na);
    if (!ordered) {
        qsort(ra, na, sizeof *ra, cmp_str);
        qsort(rb, nb, sizeof *rb, cmp_str);
    }
    for (size_t i = 0; same && i < na; i++)
        if (strcmp(ra[i], rb[i]) != 0) {
            snprintf(why, n, "row %zu is %s, not %s", i, rb[i], ra[i]);
            same = false;
        }
    for (size_t i = 0; i < na; i++)
        free(ra[i]);
    for (size_t i = 0; i < nb; i++)
        free(rb[i]);
    free(ra);
    free(rb);
    return same;
}

typedef struct tally {
    size_t by_kind[DSQ_PLAN_KINDS];
    size_t ok, failed;
} tally;

/* One query, positional parameters from ints; `want` the plan kind it
 * must get, or -1 for any. `ordered`: compare in order. */
static void check(world *w, tally *t, const char *sql, const int64_t *ints, size_t nints, int want, bool ordered)
{
    dsq_param ps[16];
    for (size_t i = 0; i < nints; i++)
        ps[i] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = ints[i]}};
    dsq_stmt_req r = {.sql = sql, .sql_len = strlen(sql), .params = ps, .nparams = nints};
    fold_case = strstr(sql, "region") && (strstr(sql, "GROUP BY") || strstr(sql, "DISTINCT"));
    dsq_result one, got;
    char err[512], why[512];
    cr_assert_eq(run(w->one, &r, &one, err, sizeof err), 0, "one database: %s", err);
    dsq_plan p;
    int rc = route(w, &r, &p, &got, why, sizeof why);
    t->by_kind[p.kind]++;
    if (want >= 0 && (int)p.kind != want)
        cr_expect(false, "%s: planned %s (%s), not %s", sql, dsq_plan_kind_name(p.kind), p.msg,
                dsq_plan_kind_name((dsq_plan_kind)want));
    if (rc != 0) {
        cr_expect(false, "%s: the router failed (%s: %s): %s", sql, dsq_plan_kind_name(p.kind), p.msg, why);
    } else if (!same_rows(&one, &got, ordered, why, sizeof why)) {
        cr_expect(false, "%s: planned %s (%s); %s\n  shard sql: %s\n  merge sql: %s\n  ddl: %s", sql,
                dsq_plan_kind_name(p.kind), p.msg, why, p.shard_q.sql ? p.shard_q.sql : "-",
                p.merge_q.sql ? p.merge_q.sql : "-", p.merge_ddl ? p.merge_ddl : "-");
        t->failed++;
    } else {
        t->ok++;
    }
    if (rc == 0)
        dsq_result_free(&got);
    dsq_result_free(&one);
    dsq_plan_free(&p);
}

#define ONE DSQ_PLAN_ONE
#define SCATTER DSQ_PLAN_SCATTER
#define FETCH DSQ_PLAN_FETCH

static void named_cases(world *w, tally *t)
{
    int64_t p7[] = {7}, p3[] = {3, 11, 12}, lim[] = {5, 3};
    /* Restricted to one shard: sent unchanged. */
    check(w, t, "SELECT * FROM customers WHERE id = 7", NULL, 0, ONE, false);
    check(w, t, "SELECT name FROM customers WHERE id = ?", p7, 1, ONE, false);
    check(w, t, "SELECT * FROM orders WHERE customer_id = '7' ORDER BY id", NULL, 0, ONE, true);
    check(w, t, "SELECT count(*), sum(amount) FROM orders o WHERE o.customer_id = 7 AND status = 'paid'", NULL, 0, ONE, false);
    check(w, t, "SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 7", NULL, 0, ONE, false);
    check(w, t, "SELECT * FROM countries ORDER BY code", NULL, 0, ONE, true);
    check(w, t, "SELECT * FROM settings", NULL, 0, ONE, false);
    check(w, t, "SELECT * FROM customers WHERE id = 1 AND id = 2", NULL, 0, ONE, false);
    /* Scattered, merged. */
    check(w, t, "SELECT * FROM customers", NULL, 0, SCATTER, false);
    check(w, t, "SELECT * FROM customers WHERE id IN (?, ?, ?)", p3, 3, -1, false);
    check(w, t, "SELECT count(*) FROM orders", NULL, 0, SCATTER, false);
    check(w, t, "SELECT count(*), count(note), sum(amount), total(amount), min(amount), max(amount), avg(amount) FROM orders", NULL, 0, SCATTER, false);
    check(w, t, "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY n DESC, status", NULL, 0, SCATTER, true);
    check(w, t, "SELECT status, avg(amount) FROM orders WHERE amount > 100 GROUP BY status HAVING count(*) > 10 ORDER BY 1", NULL, 0, SCATTER, true);
    check(w, t, "SELECT region, count(*) FROM customers GROUP BY region ORDER BY region", NULL, 0, SCATTER, true);
    check(w, t, "SELECT min(region), max(region) FROM customers", NULL, 0, SCATTER, false);
    check(w, t, "SELECT DISTINCT status FROM orders ORDER BY status", NULL, 0, SCATTER, true);
    check(w, t, "SELECT DISTINCT region FROM customers", NULL, 0, SCATTER, false);
    check(w, t, "SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 10", NULL, 0, SCATTER, true);
    check(w, t, "SELECT id, amount FROM orders ORDER BY amount, id LIMIT ? OFFSET ?", lim, 2, SCATTER, true);
    check(w, t, "SELECT id FROM orders ORDER BY amount NULLS LAST, id DESC LIMIT 7, 20", NULL, 0, SCATTER, true);
    check(w, t, "SELECT name FROM customers ORDER BY region, id", NULL, 0, SCATTER, true);
    check(w, t, "SELECT id, name FROM customers ORDER BY name COLLATE NOCASE DESC, id LIMIT 15", NULL, 0, SCATTER, true);
    check(w, t, "SELECT c.region, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.region ORDER BY 1", NULL, 0, SCATTER, true);
    check(w, t, "SELECT o.id, n.name FROM orders o LEFT JOIN countries n ON n.code = o.status ORDER BY o.id LIMIT 30", NULL, 0, SCATTER, true);
    check(w, t, "SELECT count(*) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE o.id IS NULL", NULL, 0, SCATTER, false);
    check(w, t, "SELECT kind, count(*), min(ts) FROM events WHERE id BETWEEN 50 AND 250 GROUP BY kind", NULL, 0, SCATTER, false);
    check(w, t, "SELECT count(*) FROM events WHERE id IN (5, 150)", NULL, 0, SCATTER, false);
    check(w, t, "SELECT * FROM big_orders WHERE customer_id = 9", NULL, 0, -1, false);
    check(w, t, "SELECT sum(amount) * 2 + count(*) AS x FROM orders WHERE note IS NOT NULL", NULL, 0, SCATTER, false);
    check(w, t, "SELECT typeof(note), count(*) FROM orders GROUP BY typeof(note)", NULL, 0, -1, false);
    check(w, t, "SELECT max(note), min(note) FROM orders", NULL, 0, SCATTER, false);
    /* At the router, from fetched rows. */
    check(w, t, "SELECT * FROM orders WHERE amount > (SELECT avg(amount) FROM orders) ORDER BY id", NULL, 0, FETCH, true);
    check(w, t, "SELECT o.id, e.kind FROM orders o JOIN events e ON e.id = o.id WHERE o.amount < 50 ORDER BY o.id", NULL, 0, FETCH, true);
    check(w, t, "SELECT a.id, b.id FROM orders a JOIN orders b ON a.amount = b.amount AND a.id < b.id WHERE a.amount = 17 ORDER BY 1, 2", NULL, 0, FETCH, true);
    check(w, t, "SELECT status FROM orders UNION SELECT region FROM customers ORDER BY 1", NULL, 0, FETCH, true);
    check(w, t, "WITH t AS (SELECT customer_id, sum(amount) s FROM orders GROUP BY customer_id) SELECT count(*), max(s) FROM t", NULL, 0, FETCH, false);
    check(w, t, "SELECT group_concat(DISTINCT status) IS NOT NULL, count(DISTINCT status) FROM orders", NULL, 0, FETCH, false);
    check(w, t, "SELECT id, row_number() OVER (ORDER BY amount, id) FROM orders ORDER BY id LIMIT 20", NULL, 0, FETCH, true);
    check(w, t, "SELECT s.v, count(*) FROM orders o JOIN settings s ON s.k = 'a' GROUP BY s.v", NULL, 0, FETCH, false);
    check(w, t, "SELECT name, max(score) FROM customers", NULL, 0, FETCH, false);
}

/* Queries made from parts: filters, projections, aggregates, groups,
 * orders and limits over each table and the co-sharded join. */
static void generated_cases(world *w, tally *t, size_t count)
{
    static const char *const filters[] = {"", "WHERE amount > 500", "WHERE status = 'paid'", "WHERE note IS NULL",
                                          "WHERE customer_id IN (3, 5, 8, 13, 21)", "WHERE customer_id = 42",
                                          "WHERE amount BETWEEN 100 AND 200 OR status = 'new'",
                                          "WHERE note > 5", "WHERE status LIKE 'p%'", "WHERE customer_id < 30"};
    static const char *const aggs[] = {"count(*)", "count(note)", "sum(amount)", "avg(amount)", "min(amount)",
                                       "max(status)", "total(amount)", "max(note)", "min(customer_id)"};
    static const char *const groups[] = {"status", "customer_id", "note", "amount / 100"};
    rnd_state = 99;
    char sql[1024];
    for (size_t i = 0; i < count; i++) {
        const char *f = filters[rnd() % (sizeof filters / sizeof *filters)];
        switch (rnd() % 5) {
        case 0: /* rows, ordered and cut */
            snprintf(sql, sizeof sql, "SELECT id, customer_id, amount, note FROM orders %s ORDER BY amount %s, id LIMIT %u OFFSET %u",
                     f, rnd() % 2 ? "DESC" : "ASC", 1 + rnd() % 40, rnd() % 30);
            check(w, t, sql, NULL, 0, -1, true);
            break;
        case 1: /* aggregates */
            snprintf(sql, sizeof sql, "SELECT %s, %s FROM orders %s", aggs[rnd() % 9], aggs[rnd() % 9], f);
            check(w, t, sql, NULL, 0, -1, false);
            break;
        case 2: { /* grouped */
            const char *g = groups[rnd() % 4];
            snprintf(sql, sizeof sql, "SELECT %s, %s, %s FROM orders %s GROUP BY %s HAVING count(*) > %u", g,
                     aggs[rnd() % 9], aggs[rnd() % 9], f, g, rnd() % 5);
            check(w, t, sql, NULL, 0, -1, false);
            break;
        }
        case 3: /* distinct */
            snprintf(sql, sizeof sql, "SELECT DISTINCT status, note IS NULL FROM orders %s ORDER BY 1, 2", f);
            check(w, t, sql, NULL, 0, -1, true);
            break;
        default: /* the co-sharded join */
            snprintf(sql, sizeof sql,
                     "SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id %s "
                     "GROUP BY c.region ORDER BY c.region",
                     f[0] ? f : "");
            check(w, t, sql, NULL, 0, -1, true);
            break;
        }
    }
}

static void report(const char *what, const tally *t)
{
    cr_log_info("%s: %zu queries the same (one %zu, scatter %zu, fetch %zu, refused %zu), %zu different", what, t->ok,
                t->by_kind[DSQ_PLAN_ONE], t->by_kind[DSQ_PLAN_SCATTER], t->by_kind[DSQ_PLAN_FETCH],
                t->by_kind[DSQ_PLAN_REFUSE], t->failed);
}

Test(router, four_shards_answer_as_one_database)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    named_cases(&w, &t);
    generated_cases(&w, &t, 300);
    report("4 shards", &t);
    world_free(&w);
}

Test(router, sixteen_shards_answer_as_one_database)
{
    world w;
    world_make(&w, 16);
    tally t = {0};
    named_cases(&w, &t);
    generated_cases(&w, &t, 300);
    report("16 shards", &t);
    world_free(&w);
}

static void expect_refusal(world *w, const char *sql, const char *words)
{
    dsq_stmt_req r = {.sql = sql, .sql_len = strlen(sql)};
    dsq_plan p;
    dsq_plan_make(w->schema, w->ks, &r, &p);
    cr_expect(p.kind == DSQ_PLAN_REFUSE || p.kind == DSQ_PLAN_ERROR, "%s: planned %s (%s)", sql,
              dsq_plan_kind_name(p.kind), p.msg);
    cr_expect(strstr(p.msg, words) != NULL, "%s: '%s' does not say '%s'", sql, p.msg, words);
    dsq_plan_free(&p);
}

static void expect_refusal_ks(dsq_ks_schema *schema, const dsq_vs_keyspace *ks, const char *sql, const char *words)
{
    dsq_stmt_req r = {.sql = sql, .sql_len = strlen(sql)};
    dsq_plan p;
    dsq_plan_make(schema, ks, &r, &p);
    cr_expect(p.kind == DSQ_PLAN_REFUSE, "%s: planned %s (%s)", sql, dsq_plan_kind_name(p.kind), p.msg);
    cr_expect(strstr(p.msg, words) != NULL, "%s: '%s' does not say '%s'", sql, p.msg, words);
    dsq_plan_free(&p);
}

static void expect_one(world *w, const char *sql, size_t shard)
{
    dsq_stmt_req r = {.sql = sql, .sql_len = strlen(sql)};
    dsq_plan p;
    dsq_plan_make(w->schema, w->ks, &r, &p);
    cr_expect_eq(p.kind, DSQ_PLAN_ONE, "%s: planned %s (%s)", sql, dsq_plan_kind_name(p.kind), p.msg);
    cr_expect_eq(p.shard, shard, "%s: shard %zu, not %zu", sql, p.shard, shard);
    dsq_plan_free(&p);
}

Test(router, writes_go_to_their_shard_or_are_refused)
{
    world w;
    world_make(&w, 4);
    size_t s7 = shard_of_int(&w, "orders", 7);
    expect_one(&w, "INSERT INTO orders VALUES (5000, 7, 1, 'new', NULL)", s7);
    expect_one(&w, "INSERT INTO orders(amount, customer_id, id) VALUES (1, 7, 5001), (2, '7', 5002)", s7);
    expect_one(&w, "UPDATE orders SET amount = amount + 1 WHERE customer_id = 7 AND id > 3", s7);
    expect_one(&w, "DELETE FROM orders WHERE customer_id IN (7) AND status = 'new'", s7);
    expect_one(&w, "INSERT INTO settings VALUES ('z', 1)", 0);
    expect_refusal(&w, "INSERT INTO orders(id, amount) VALUES (1, 2)", "key column 'customer_id'");
    expect_refusal(&w, "INSERT INTO orders VALUES (1, NULL, 2, 'x', NULL)", "no shard");
    expect_refusal(&w, "INSERT INTO orders VALUES (1, abs(-7), 2, 'x', NULL)", "literal or a parameter");
    expect_refusal(&w, "INSERT INTO orders SELECT * FROM orders", "subquery");
    expect_refusal(&w, "INSERT INTO orders DEFAULT VALUES", "VALUES");
    expect_refusal(&w, "UPDATE orders SET customer_id = 8 WHERE customer_id = 7", "moving a row");
    expect_refusal(&w, "DELETE FROM orders WHERE amount > (SELECT avg(amount) FROM orders) AND customer_id = 7",
                   "subquery");

    expect_refusal(&w, "SELECT * FROM nowhere", "no such table");
    expect_refusal(&w, "PRAGMA table_info(orders)", "PRAGMA");
    expect_refusal(&w, "SELECT c.rowid FROM countries c WHERE c.code IN (SELECT status FROM orders)", "rowid");
    expect_refusal(&w, "SELECT 1; SELECT 2", "one statement");
    world_free(&w);
}

/* Run a write as the router would (each participant's statement on its
 * shard: the cross-shard transaction's outcome when it commits) and on
 * the one database; `want` the plan it must get. */
static void write_both(world *w, const char *sql, const int64_t *ints, size_t nints, dsq_plan_kind want,
                       size_t nparticipants)
{
    dsq_param ps[16];
    for (size_t i = 0; i < nints; i++)
        ps[i] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = ints[i]}};
    dsq_stmt_req r = {.sql = sql, .sql_len = strlen(sql), .params = ps, .nparams = nints};
    dsq_result res;
    char err[512];
    cr_assert_eq(run(w->one, &r, &res, err, sizeof err), 0, "%s", err);
    dsq_result_free(&res);
    dsq_plan p;
    dsq_plan_make(w->schema, w->ks, &r, &p);
    cr_assert_eq(p.kind, want, "%s: planned %s (%s)", sql, dsq_plan_kind_name(p.kind), p.msg);
    if (p.kind == DSQ_PLAN_ONE) {
        cr_assert_eq(run(w->shards[p.shard], &r, &res, err, sizeof err), 0, "%s", err);
        dsq_result_free(&res);
    } else {
        cr_assert_eq(p.nwrites, nparticipants, "%s: %zu participants", sql, p.nwrites);
        for (size_t i = 0; i < p.nwrites; i++) {
            dsq_param buf[16];
            dsq_stmt_req sub;
            dsq_plan_params(&p.writes[i], &r, buf, &sub);
            cr_assert_eq(run(w->shards[p.write_shard[i]], &sub, &res, err, sizeof err), 0, "%s: %s", sql, err);
            dsq_result_free(&res);
        }
    }
    dsq_plan_free(&p);
}

/* Writes across shards: an INSERT's rows split so that each shard gets
 * its own, UPDATE and DELETE on every shard they may touch, a reference
 * table on every shard; the rows then read the same through the router
 * as on one database. */
Test(router, writes_across_shards_split_as_one_database_has_them)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    int64_t keys[] = {7, 8, 9, 10, 11, 12};
    size_t shards = 0;
    bool seen[4] = {false};
    for (size_t i = 0; i < 6; i++)
        if (!seen[shard_of_int(&w, "orders", keys[i])]) {
            seen[shard_of_int(&w, "orders", keys[i])] = true;
            shards++;
        }
    write_both(&w,
               "INSERT INTO orders VALUES (7001, ?, 1, 'x', NULL), (7002, ?, 2, 'x', 'n'), (7003, ?, 3, 'y', 1), "
               "(7004, ?, 4, 'y', NULL), (7005, ?, 5, 'z', NULL), (7006, ?, 6, 'z', x'00') ON CONFLICT DO NOTHING",
               keys, 6, DSQ_PLAN_MULTI, shards);
    write_both(&w, "UPDATE orders SET amount = amount * 2 WHERE status = 'x' OR amount > 900", NULL, 0,
               DSQ_PLAN_MULTI, 4);
    int64_t two[] = {7, 8};
    write_both(&w, "DELETE FROM orders WHERE customer_id IN (?, ?) AND status = 'y'", two, 2,
               shard_of_int(&w, "orders", 7) == shard_of_int(&w, "orders", 8) ? DSQ_PLAN_ONE : DSQ_PLAN_MULTI,
               shard_of_int(&w, "orders", 7) == shard_of_int(&w, "orders", 8) ? 1 : 2);
    write_both(&w, "INSERT INTO countries VALUES ('it', 'Italy')", NULL, 0, DSQ_PLAN_MULTI, 4);
    write_both(&w, "UPDATE countries SET name = upper(name) WHERE code IN (SELECT code FROM countries WHERE name > 'G')",
               NULL, 0, DSQ_PLAN_MULTI, 4);
    check(&w, &t, "SELECT * FROM orders ORDER BY id", NULL, 0, SCATTER, true);
    check(&w, &t, "SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY 1", NULL, 0, SCATTER, true);
    /* The reference table reads the same from any shard. */
    for (size_t s = 0; s < 4; s++) {
        dsq_stmt_req r = {.sql = "SELECT * FROM countries ORDER BY code", .sql_len = 37};
        dsq_result a, b;
        char err[200], why[300];
        cr_assert_eq(run(w.one, &r, &a, err, sizeof err), 0);
        cr_assert_eq(run(w.shards[s], &r, &b, err, sizeof err), 0);
        cr_assert(same_rows(&a, &b, true, why, sizeof why), "shard %zu: %s", s, why);
        dsq_result_free(&a);
        dsq_result_free(&b);
    }
    world_free(&w);
}

Test(sqlparse, the_parts_of_a_simple_select)
{
    const char *sql = "select distinct a.x as \"X\", count(*) n, b.y FROM t1 a JOIN t2 AS b ON a.k = b.k "
                      "LEFT OUTER JOIN t3 USING (k) WHERE a.x BETWEEN 1 AND 2 AND (b.y = 'a' OR b.y = 'b') "
                      "AND CASE WHEN a.z THEN 1 AND 1 ELSE 0 END GROUP BY a.x, b.y HAVING count(*) > 1 "
                      "ORDER BY 2 DESC NULLS LAST, X LIMIT 10, 5;";
    dsq_tok *t;
    size_t n;
    char err[100];
    cr_assert_eq(dsq_sql_tokenize(sql, strlen(sql), &t, &n, err, sizeof err), 0, "%s", err);
    dsq_select s;
    cr_assert_eq(dsq_select_parse(sql, t, n, &s, err, sizeof err), 0, "%s", err);
    cr_assert(s.distinct);
    cr_assert_eq(s.nitems, 3);
    cr_assert_str_eq(s.items[0].alias, "X");
    cr_assert_str_eq(s.items[1].alias, "n");
    cr_assert_str_eq(s.items[2].alias, "");
    cr_assert_eq(s.ntables, 3);
    cr_assert_str_eq(s.tables[1].alias, "b");
    cr_assert_eq(s.tables[1].join, DSQ_JOIN_INNER);
    cr_assert_eq(s.tables[2].join, DSQ_JOIN_LEFT);
    cr_assert_neq(s.tables[2].using_.b, s.tables[2].using_.e);
    dsq_span cj[8];
    cr_assert_eq(dsq_sql_conjuncts(sql, t, s.where, cj, 8), 3, "BETWEEN's AND and CASE's AND do not split");
    cr_assert_eq(s.ngroup, 2);
    cr_assert_eq(s.norder, 2);
    cr_assert_eq(s.order[0].suffix.e - s.order[0].suffix.b, 3);
    /* LIMIT 10, 5: the offset is 10. */
    cr_assert_eq(s.offset.e - s.offset.b, 1);
    cr_assert_eq(strncmp(sql + t[s.offset.b].off, "10", 2), 0);
    free(t);
    static const char *const not_simple[] = {
        "SELECT a FROM t WHERE b IN (SELECT c FROM u)", "SELECT a FROM t UNION SELECT b FROM u",
        "WITH x AS (SELECT 1) SELECT * FROM x", "SELECT a FROM (SELECT 1 AS a)", "SELECT a FROM t NATURAL JOIN u",
        "SELECT row_number() OVER () FROM t", "SELECT a FROM main.t", "SELECT * FROM json_each('[1]')",
        "SELECT 1", "SELECT 1; SELECT 2"};
    for (size_t i = 0; i < sizeof not_simple / sizeof *not_simple; i++) {
        cr_assert_eq(dsq_sql_tokenize(not_simple[i], strlen(not_simple[i]), &t, &n, err, sizeof err), 0);
        cr_expect_neq(dsq_select_parse(not_simple[i], t, n, &s, err, sizeof err), 0, "%s", not_simple[i]);
        free(t);
    }
    /* Tokens SQLite would refuse are refused. */
    cr_assert_neq(dsq_sql_tokenize("SELECT 'open", 12, &t, &n, err, sizeof err), 0);
    cr_assert_neq(dsq_sql_tokenize("SELECT x'abc'", 13, &t, &n, err, sizeof err), 0);
    cr_assert_neq(dsq_sql_tokenize("SELECT a ! b", 12, &t, &n, err, sizeof err), 0);
}

/* auto_increment: an INSERT that leaves the column out, or gives NULL,
 * gets one added parameter per row (after the request's own), and with
 * the sequence's values bound it routes as any INSERT. */
Test(router, auto_increment_fills_the_rows_that_lack_it)
{
    const char *vs_text =
        "{\"keyspaces\": {\"ks\": {\"shards\": [\"s0\", \"s1\", \"s2\"], \"vindexes\": {\"h\": {\"type\": \"hash\"}},"
        " \"tables\": {\"orders\": {\"column\": \"id\", \"vindex\": \"h\","
        "   \"auto_increment\": {\"column\": \"id\", \"sequence\": \"order_seq\"}},"
        "  \"order_seq\": {\"type\": \"sequence\", \"start\": 1000, \"cache\": 10}}}}}";
    char err[300];
    dsq_vschema *vs;
    cr_assert_eq(dsq_vschema_parse(vs_text, strlen(vs_text), &vs, err, sizeof err), 0, "%s", err);
    const dsq_vs_keyspace *ks = dsq_vschema_keyspace(vs, "ks");
    const char *ddl1[] = {"CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER, amount INTEGER)"};
    dsq_ks_schema *schema;
    cr_assert_eq(dsq_ks_schema_new(ddl1, 1, &schema, err, sizeof err), 0, "%s", err);
    static const struct {
        const char *sql;
        size_t nparams;
        size_t count; /* values it needs (0: none) */
        const char *rewritten;
    } cases[] = {
        {"INSERT INTO orders(customer_id, amount) VALUES (7, 1), (8, 2)", 0, 2,
         "INSERT INTO orders ( customer_id , amount, \"id\" ) VALUES ( 7 , 1, ?1 ) , ( 8 , 2, ?2 )"},
        {"INSERT INTO orders VALUES (NULL, 7, 1), (5, 8, 2), (NULL, 9, 3)", 0, 2,
         "INSERT INTO orders VALUES ( ?1 , 7 , 1 ) , ( 5 , 8 , 2 ) , ( ?2 , 9 , 3 )"},
        {"INSERT INTO orders(customer_id) VALUES (?), (?)", 2, 2,
         "INSERT INTO orders ( customer_id, \"id\" ) VALUES ( ?1, ?3 ) , ( ?2, ?4 )"},
        {"INSERT INTO orders(id, customer_id) VALUES (5, 7)", 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsq_param ps[4] = {{NULL, {.type = DSQ_V_INT, .i = 70}}, {NULL, {.type = DSQ_V_INT, .i = 80}}};
        dsq_stmt_req r = {.sql = cases[i].sql, .sql_len = strlen(cases[i].sql), .params = ps,
                          .nparams = cases[i].nparams};
        dsq_plan p;
        dsq_plan_make(schema, ks, &r, &p);
        if (cases[i].count == 0) {
            cr_expect_eq(p.kind, DSQ_PLAN_ONE, "%s: planned %s (%s)", cases[i].sql, dsq_plan_kind_name(p.kind), p.msg);
            dsq_plan_free(&p);
            continue;
        }
        cr_assert_eq(p.kind, DSQ_PLAN_SEQUENCE, "%s: planned %s (%s)", cases[i].sql, dsq_plan_kind_name(p.kind),
                     p.msg);
        cr_expect_eq(p.seq_count, cases[i].count);
        cr_expect_str_eq(p.seq_q.sql, cases[i].rewritten);
        cr_expect_str_eq(ks->tables[p.seq_table].name, "order_seq");
        /* The values bound: it places its rows by them. */
        dsq_param all[6];
        memcpy(all, ps, cases[i].nparams * sizeof *ps);
        for (size_t k = 0; k < p.seq_count; k++)
            all[cases[i].nparams + k] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = 1000 + (int64_t)k}};
        dsq_stmt_req r2 = {.sql = p.seq_q.sql, .sql_len = strlen(p.seq_q.sql), .params = all,
                           .nparams = cases[i].nparams + p.seq_count};
        dsq_plan p2;
        dsq_plan_make(schema, ks, &r2, &p2);
        cr_expect(p2.kind == DSQ_PLAN_ONE || p2.kind == DSQ_PLAN_MULTI, "%s: then planned %s (%s)", p.seq_q.sql,
                  dsq_plan_kind_name(p2.kind), p2.msg);
        dsq_plan_free(&p2);
        dsq_plan_free(&p);
    }
    /* A sequence is no table. */
    dsq_stmt_req r = {.sql = "SELECT * FROM orders", .sql_len = 20};
    dsq_plan p;
    dsq_plan_make(schema, ks, &r, &p);
    cr_expect_neq(p.kind, DSQ_PLAN_REFUSE, "%s", p.msg);
    dsq_plan_free(&p);
    dsq_ks_schema_free(schema);
    dsq_vschema_free(vs);
    /* A sequence named that is none, or a table given as one. */
    const char *bad = "{\"keyspaces\": {\"ks\": {\"shards\": [\"s0\"], \"tables\": {\"t\": {\"type\": \"unsharded\", "
                      "\"shard\": \"s0\", \"auto_increment\": {\"column\": \"id\", \"sequence\": \"u\"}},"
                      " \"u\": {\"type\": \"unsharded\", \"shard\": \"s0\"}}}}}";
    cr_assert_neq(dsq_vschema_parse(bad, strlen(bad), &vs, err, sizeof err), 0);
    cr_expect(strstr(err, "auto_increment.sequence: keyspace ks has no sequence \"u\"") != NULL, "%s", err);
}

/* ==== Review: inputs where the router's answer differs from one database's ==== */

static size_t other_key(world *w, const char *table, int64_t k, int64_t *out)
{
    size_t s = shard_of_int(w, table, k);
    for (int64_t c = k + 1;; c++)
        if (shard_of_int(w, table, c) != s) {
            *out = c;
            return shard_of_int(w, table, c);
        }
}

/* A reference table LEFT JOINed to a sharded table is scattered: every
 * shard null-extends the reference rows its own shard has no match for. */
Test(review, reference_left_join_sharded_table_is_scattered_wrongly)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT n.code, o.id FROM countries n LEFT JOIN orders o ON o.status = n.code", NULL, 0, -1, false);
    check(&w, &t, "SELECT count(*) FROM countries n LEFT JOIN orders o ON o.amount = 5 AND o.status = 'paid'", NULL, 0, -1, false);
    check(&w, &t, "SELECT count(*) FROM orders o RIGHT JOIN countries n ON o.status = n.code", NULL, 0, -1, false);
    world_free(&w);
}

/* A key restriction in an inner join's ON spreads, through the
 * co-sharded group, to the preserved side of a later RIGHT JOIN. */
Test(review, restriction_carried_to_preserved_side_of_right_join)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t,
          "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.id = 7 "
          "RIGHT JOIN customers c2 ON c2.id = c.id",
          NULL, 0, -1, false);
    check(&w, &t,
          "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.id = 7 "
          "FULL JOIN customers c2 ON c2.id = c.id",
          NULL, 0, -1, false);
    world_free(&w);
}

/* LIMIT -1 OFFSET n: the offset is dropped at the router. */
Test(review, negative_limit_with_offset_drops_the_offset)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT id FROM orders ORDER BY id LIMIT -1 OFFSET 995", NULL, 0, -1, true);
    int64_t lo[] = {-1, 990};
    check(&w, &t, "SELECT id FROM orders ORDER BY id LIMIT ? OFFSET ?", lo, 2, -1, true);
    world_free(&w);
}

/* HAVING names a table column (a bare column on one database); at the
 * router the table of partials lacks it and the name falls to an alias. */
Test(review, having_bare_column_resolves_to_alias_at_router)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT id, count(*) AS amount FROM orders GROUP BY id HAVING amount > 500", NULL, 0, -1, false);
    world_free(&w);
}

/* The partials' table has no declared types: grouped columns lose their
 * affinity in HAVING and in the result expressions. */
Test(review, grouped_columns_lose_affinity_at_router)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT customer_id, count(*) FROM orders GROUP BY customer_id HAVING customer_id = '7'", NULL, 0, -1, false);
    check(&w, &t, "SELECT customer_id = '7' AS x, count(*) FROM orders GROUP BY customer_id", NULL, 0, -1, false);
    check(&w, &t, "SELECT count(*) FROM orders GROUP BY status HAVING status IN ('paid', 'new')", NULL, 0, -1, false);
    world_free(&w);
}

/* An aggregate named with a quoted identifier is not seen as one: each
 * shard's aggregate row is concatenated. */
Test(review, quoted_aggregate_name_concatenates_per_shard_aggregates)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT \"count\"(*) AS n FROM orders", NULL, 0, -1, false);
    check(&w, &t, "SELECT [sum](amount) AS s, `max`(amount) AS m FROM orders", NULL, 0, -1, false);
    world_free(&w);
}

/* Collations SQLite derives through unary +, CAST or a COLLATE inside an
 * expression are not the router's (it takes BINARY). */
Test(review, derived_collation_lost_at_router)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    int64_t k2;
    other_key(&w, "customers", 1001, &k2);
    char sql[300];
    snprintf(sql, sizeof sql, "INSERT INTO customers VALUES (1001, 'x', 'apple', 1)");
    put(&w, shard_of_int(&w, "customers", 1001), sql);
    snprintf(sql, sizeof sql, "INSERT INTO customers VALUES (%lld, 'y', 'Banana', 1)", (long long)k2);
    put(&w, shard_of_int(&w, "customers", k2), sql);
    snprintf(sql, sizeof sql, "SELECT min(CAST(region AS TEXT)) FROM customers WHERE id IN (1001, %lld)", (long long)k2);
    check(&w, &t, sql, NULL, 0, -1, false);
    snprintf(sql, sizeof sql, "SELECT min(+region) FROM customers WHERE id IN (1001, %lld)", (long long)k2);
    check(&w, &t, sql, NULL, 0, -1, false);
    snprintf(sql, sizeof sql, "SELECT +region FROM customers WHERE id IN (1001, %lld) ORDER BY 1 LIMIT 1", (long long)k2);
    check(&w, &t, sql, NULL, 0, -1, true);
    snprintf(sql, sizeof sql, "SELECT id FROM customers WHERE id IN (1001, %lld) ORDER BY +region LIMIT 1", (long long)k2);
    check(&w, &t, sql, NULL, 0, -1, true);
    world_free(&w);
}

Test(review, distinct_plus_region_keeps_case_variants)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT DISTINCT +region FROM customers", NULL, 0, -1, false);
    world_free(&w);
}

/* FETCH pushes a conjunct on orders down although a view in the same
 * FROM reads orders too: the view sees the filtered rows. */
Test(review, fetch_filter_ignores_views_reading_the_table)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT count(*) FROM big_orders b, orders o WHERE o.id = 5", NULL, 0, -1, false);
    world_free(&w);
}

/* Concatenated rows carry the shards' column names: the rewritten text's
 * (tokens joined with spaces), not the statement's. */
Test(review, concatenated_rows_carry_rewritten_column_names)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    check(&w, &t, "SELECT amount+1 FROM orders WHERE amount > 990", NULL, 0, -1, false);
    check(&w, &t, "SELECT o.id,o.amount FROM orders o WHERE amount > 990", NULL, 0, -1, false);
    world_free(&w);
}

/* Extra tables: tags (one column, sharded by range), tk (a TEXT key on
 * the hash vindex orders use), logs (no INTEGER PRIMARY KEY). */
static void review_world(world *w)
{
    extra_ddl[0] = "CREATE TABLE tags(v INTEGER)";
    extra_ddl[1] = "CREATE TABLE tk(k TEXT, label TEXT)";
    extra_ddl[2] = "CREATE TABLE logs(k INTEGER, msg TEXT)";
    nextra_ddl = 3;
    extra_vs = ", \"tags\": {\"column\": \"v\", \"vindex\": \"r\"}, \"tk\": {\"column\": \"k\", \"vindex\": \"h\"},"
               " \"logs\": {\"column\": \"k\", \"vindex\": \"h\"}";
    world_make(w, 4);
    nextra_ddl = 0;
    extra_vs = "";
    char sql[200];
    for (int v = 0; v < 1000; v += 37) {
        snprintf(sql, sizeof sql, "INSERT INTO tags VALUES (%d)", v);
        put(w, shard_of_int(w, "tags", v), sql);
    }
    /* tk keys are text: their shard is the hash of the text's bytes. */
    for (int k = 1; k <= 40; k++) {
        const dsq_vs_table *tb = dsq_vs_table_find(w->ks, "tk");
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        dsq_skey sk = {.kind = DSQ_SKEY_TEXT, .p = key, .n = strlen(key)};
        size_t s;
        char err[100];
        cr_assert_eq(dsq_vindex_shard(w->ks->vindexes[tb->vindex].v, &sk, &s, err, sizeof err), 0);
        snprintf(sql, sizeof sql, "INSERT INTO tk VALUES ('%d', 'l%d')", k, k);
        put(w, s, sql);
    }
    for (int k = 1; k <= 40; k++) {
        snprintf(sql, sizeof sql, "INSERT INTO logs VALUES (%d, 'm%d')", k, k);
        put(w, shard_of_int(w, "logs", k), sql);
    }
}

/* `x IN table` reads a sharded table the FROM clause does not name: the
 * planner neither counts it nor restricts it. */
Test(review, in_table_reads_a_sharded_table_outside_from)
{
    world w;
    review_world(&w);
    tally t = {0};
    check(&w, &t, "SELECT count(*) FROM orders WHERE amount IN tags", NULL, 0, -1, false);
    /* Sent to one shard (customer c's) though `0 IN tags` is about shard 0's rows. */
    int64_t c = 1;
    while (shard_of_int(&w, "orders", c) == 0)
        c++;
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM orders WHERE customer_id = %lld AND 0 IN tags", (long long)c);
    check(&w, &t, sql, NULL, 0, -1, false);
    world_free(&w);
}

/* Keys of one vindex with different affinities: SQLite joins '7' = 7
 * (numeric affinity), the vindex places them apart. */
Test(review, cosharded_join_of_keys_with_different_affinity)
{
    world w;
    review_world(&w);
    tally t = {0};
    check(&w, &t, "SELECT count(*) FROM orders o JOIN tk ON tk.k = o.customer_id", NULL, 0, -1, false);
    world_free(&w);
}

/* rowid of a sharded table without INTEGER PRIMARY KEY: per shard
 * (refused at the router, returned by a scatter). */
Test(review, scattered_rowid_is_per_shard)
{
    world w;
    review_world(&w);
    tally t = {0};
    (void)t;
    /* A shard's rowids are its own: refused, never a shard-local answer. */
    expect_refusal(&w, "SELECT rowid FROM logs WHERE k = 40", "rowid");
    expect_refusal(&w, "SELECT max(rowid) FROM logs", "rowid");
    world_free(&w);
}


/* A trigger (made through the keyspace: on every shard) that writes its
 * own table with another key: the row lands on the shard of the
 * statement's row, not its own. */
Test(review, trigger_writes_rows_onto_the_wrong_shard)
{
    world w;
    world_make(&w, 4);
    const char *trg = "CREATE TRIGGER echo AFTER INSERT ON orders WHEN new.id = 9001 BEGIN "
                      "INSERT INTO orders VALUES (9002, new.customer_id + 1, 1, 'echo', NULL); END";
    put(&w, (size_t)-1, trg);
    exec(w.schema->db, trg);
    int64_t c = 1;
    while (shard_of_int(&w, "orders", c) == shard_of_int(&w, "orders", c + 1))
        c++;
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO orders VALUES (9001, %lld, 1, 'x', NULL)", (long long)c);
    expect_refusal(&w, sql, "has triggers");
    expect_refusal(&w, trg, "CREATE TRIGGER");
    world_free(&w);
}

/* Uniqueness of a column other than the key is per shard: an INSERT
 * whose id is taken on another shard neither fails nor conflicts. */

/* An upsert that sets the key with a row-value assignment is not refused:
 * the row keeps its shard under a key that maps elsewhere. */
Test(review, upsert_row_value_set_moves_the_key)
{
    world w;
    world_make(&w, 4);
    dsq_stmt_req r = {.sql = "SELECT customer_id FROM orders WHERE id = 3", .sql_len = 43};
    dsq_result res;
    char err[200];
    cr_assert_eq(run(w.one, &r, &res, err, sizeof err), 0);
    size_t pos = 0;
    dsq_value v;
    dsq_result_next(&res, &pos, &v);
    int64_t c = v.i, c2;
    other_key(&w, "orders", c, &c2);
    dsq_result_free(&res);
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO orders VALUES (3, %lld, 5, 'x', NULL) ON CONFLICT(id) DO UPDATE SET (customer_id, status) = (%lld, 'moved')",
             (long long)c, (long long)c2);
    expect_refusal(&w, sql, "moving a row");
    world_free(&w);
}

/* A reference table written with a non-deterministic value: every shard
 * computes its own, the copies differ. */
Test(review, reference_table_copies_diverge_on_nondeterministic_writes)
{
    world w;
    world_make(&w, 4);
    /* Each shard would compute its own value: refused. */
    expect_refusal(&w, "INSERT INTO countries VALUES ('rn', hex(randomblob(8)))", "randomblob");
    expect_refusal(&w, "UPDATE countries SET name = datetime('now')", "datetime");
    world_free(&w);
}

/* AVG is rewritten as SUM/COUNT: a shard's integer SUM overflows (an
 * error) where one database's AVG answers. */
Test(review, avg_of_large_integers_fails_where_one_database_answers)
{
    world w;
    world_make(&w, 4);
    tally t = {0};
    int64_t c = 1, c2;
    other_key(&w, "orders", c, &c2);
    put(&w, shard_of_int(&w, "orders", c), "INSERT INTO orders VALUES (9101, 1, 5000000000000000000, 'big', NULL)");
    put(&w, shard_of_int(&w, "orders", c), "INSERT INTO orders VALUES (9102, 1, 5000000000000000000, 'big', NULL)");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT avg(amount) FROM orders WHERE customer_id IN (1, %lld) AND status = 'big'", (long long)c2);
    check(&w, &t, sql, NULL, 0, -1, false);
    world_free(&w);
}

/* A lookup vindex: a read by the looked-up column asks its lookup table
 * first and then goes to the owner's shard; INSERTs and DELETEs by key
 * keep the lookup table in step in the same transaction; what would leave
 * it behind is refused. */
Test(router, lookup_vindex_routes_reads_and_keeps_its_table_in_step)
{
    const char *vs_text =
        "{\"keyspaces\": {\"ks\": {\"shards\": [\"s0\", \"s1\", \"s2\", \"s3\"],"
        " \"vindexes\": {\"h\": {\"type\": \"hash\"},"
        "   \"by_email\": {\"type\": \"lookup_unique\", \"table\": \"user_email\", \"from\": \"email\", \"to\": \"user_id\"}},"
        " \"tables\": {\"users\": {\"column\": \"id\", \"vindex\": \"h\", \"lookups\": [{\"column\": \"email\", \"vindex\": \"by_email\"}]},"
        "   \"user_email\": {\"column\": \"email\", \"vindex\": \"h\"}}}}}";
    char err[300];
    dsq_vschema *vs;
    cr_assert_eq(dsq_vschema_parse(vs_text, strlen(vs_text), &vs, err, sizeof err), 0, "%s", err);
    const dsq_vs_keyspace *ks = dsq_vschema_keyspace(vs, "ks");
    const char *ddl1[] = {"CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, age INTEGER)",
                          "CREATE TABLE user_email(email TEXT PRIMARY KEY, user_id INTEGER)"};
    dsq_ks_schema *schema;
    cr_assert_eq(dsq_ks_schema_new(ddl1, 2, &schema, err, sizeof err), 0, "%s", err);
    dsq_plan p;
    /* A read by email: its lookup first. */
    dsq_stmt_req r = {.sql = "SELECT * FROM users WHERE email = 'a@x'", .sql_len = 39};
    dsq_plan_make(schema, ks, &r, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_LOOKUP, "%s", p.msg);
    cr_assert_eq(p.nlookups, 1);
    cr_assert_eq(p.lookups[0].value.type, DSQ_V_TEXT);
    cr_assert_eq(p.lookups[0].value.n, 3);
    dsq_plan_free(&p);
    long two = 2, none = -1;
    dsq_plan_hints h = {&two, 1};
    dsq_plan_make_hinted(schema, ks, &r, &h, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_ONE, "%s", p.msg);
    cr_assert_eq(p.shard, 2);
    dsq_plan_free(&p);
    h.shard = &none; /* no owner: any shard answers (none has the row) */
    dsq_plan_make_hinted(schema, ks, &r, &h, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_ONE, "%s", p.msg);
    dsq_plan_free(&p);
    /* By key: no lookup. */
    dsq_stmt_req rk = {.sql = "SELECT * FROM users WHERE id = 5 AND email = 'a@x'", .sql_len = 50};
    dsq_plan_make(schema, ks, &rk, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_ONE, "%s", p.msg);
    dsq_plan_free(&p);
    /* INSERT: the users' rows and, in the same transaction, the lookup rows. */
    dsq_stmt_req ri = {.sql = "INSERT INTO users(id, email) VALUES (1, 'a@x'), (2, NULL)", .sql_len = 57};
    dsq_plan_make(schema, ks, &ri, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_MULTI, "%s", p.msg);
    size_t lookups = 0;
    for (size_t i = 0; i < p.nwrites; i++)
        lookups += strstr(p.writes[i].sql, "user_email") != NULL;
    cr_assert_eq(lookups, 1, "one lookup row (the NULL email has none)");
    dsq_plan_free(&p);
    /* DELETE by key: the lookup rows of those keys on every shard. */
    dsq_stmt_req rd = {.sql = "DELETE FROM users WHERE id IN (1, 2)", .sql_len = 36};
    dsq_plan_make(schema, ks, &rd, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_MULTI, "%s", p.msg);
    lookups = 0;
    for (size_t i = 0; i < p.nwrites; i++)
        lookups += strstr(p.writes[i].sql, "DELETE FROM \"user_email\" WHERE \"user_id\" IN") != NULL;
    cr_assert_eq(lookups, 4);
    dsq_plan_free(&p);
    expect_refusal_ks(schema, ks, "DELETE FROM users WHERE age > 3", "by their key alone");
    expect_refusal_ks(schema, ks, "UPDATE users SET email = 'z' WHERE id = 1", "lookup column 'email'");
    expect_refusal_ks(schema, ks, "UPDATE users SET (age, email) = (1, 'z') WHERE id = 1", "lookup column 'email'");
    expect_refusal_ks(schema, ks, "INSERT OR REPLACE INTO users VALUES (1, 'a', 2)", "REPLACE");
    expect_refusal_ks(schema, ks, "INSERT INTO users VALUES (1, lower('A'), 2)", "literal or a parameter");
    /* An UPDATE by email: its shard by the lookup. */
    dsq_stmt_req ru = {.sql = "UPDATE users SET age = 3 WHERE email = ?", .sql_len = 40,
                       .params = (dsq_param[]){{NULL, {.type = DSQ_V_TEXT, .p = "a@x", .n = 3}}}, .nparams = 1};
    dsq_plan_make(schema, ks, &ru, &p);
    cr_assert_eq(p.kind, DSQ_PLAN_LOOKUP, "%s", p.msg);
    dsq_plan_free(&p);
    dsq_ks_schema_free(schema);
    dsq_vschema_free(vs);
    /* The lookup table must be sharded by its `from` column. */
    const char *bad = "{\"keyspaces\": {\"ks\": {\"shards\": [\"s0\"], \"vindexes\": {\"h\": {\"type\": \"hash\"},"
                      " \"l\": {\"type\": \"lookup_unique\", \"table\": \"t2\", \"from\": \"e\", \"to\": \"id\"}},"
                      " \"tables\": {\"t\": {\"column\": \"id\", \"vindex\": \"h\", \"lookups\": [{\"column\": \"e\", \"vindex\": \"l\"}]},"
                      " \"t2\": {\"column\": \"id\", \"vindex\": \"h\"}}}}}";
    cr_assert_neq(dsq_vschema_parse(bad, strlen(bad), &vs, err, sizeof err), 0);
    cr_expect(strstr(err, "vindexes.l.table") != NULL, "%s", err);
}
