/* merge — the router's part of a plan (merge.h). */
#include "sharding/merge.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void dsq_plan_params(const dsq_plan_sql *q, const dsq_stmt_req *req, dsq_param *buf, dsq_stmt_req *out)
{
    memset(out, 0, sizeof *out);
    out->sql = q->sql;
    out->sql_len = strlen(q->sql);
    out->params = buf;
    out->named = req->named;
    if (!req->named) {
        size_t n = q->npos < req->nparams ? q->npos : req->nparams;
        for (size_t i = 0; i < n; i++)
            buf[i] = req->params[i];
        out->nparams = n;
        return;
    }
    for (size_t i = 0; q->named != NULL && i < req->nparams; i++)
        if (q->named[i])
            buf[out->nparams++] = req->params[i];
}

typedef struct mctx {
    sqlite3 *db;
    uint64_t deadline_ns;
    bool timed_out;
} mctx;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int progress(void *ud)
{
    mctx *m = ud;
    if (m->deadline_ns && now_ns() > m->deadline_ns) {
        m->timed_out = true;
        return 1;
    }
    return 0;
}

static int fail(dsq_code *code, char *msg, size_t n, dsq_code c, const char *text)
{
    *code = c;
    snprintf(msg, n, "%s", text);
    return -1;
}

static int open_db(mctx *m, const dsq_merge_limits *lim, dsq_code *code, char *msg, size_t n)
{
    memset(m, 0, sizeof *m);
    if (sqlite3_open_v2(":memory:", &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        sqlite3_close(m->db);
        m->db = NULL;
        return fail(code, msg, n, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
    }
    if (lim != NULL && lim->timeout_ms)
        m->deadline_ns = now_ns() + lim->timeout_ms * 1000000u;
    sqlite3_progress_handler(m->db, 1000, progress, m);
    /* Temporary b-trees (sorts, DISTINCT) stay in memory. */
    sqlite3_exec(m->db, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL);
    return 0;
}

static int sql_fail(mctx *m, int rc, dsq_code *code, char *msg, size_t n)
{
    if (m->timed_out)
        return fail(code, msg, n, DSQ_CODE_TIMEOUT, "the router's part of the query ran past its time limit");
    const char *e = sqlite3_errmsg(m->db);
    *code = dsq_code_of_sqlite(rc, e);
    snprintf(msg, n, "%s", e);
    return -1;
}

static int bind_value(sqlite3_stmt *st, int i, const dsq_value *v)
{
    switch (v->type) {
    case DSQ_V_INT: return sqlite3_bind_int64(st, i, v->i);
    case DSQ_V_REAL: return sqlite3_bind_double(st, i, v->d);
    case DSQ_V_TEXT: return sqlite3_bind_text(st, i, v->p, (int)v->n, SQLITE_STATIC);
    case DSQ_V_BLOB: return sqlite3_bind_blob(st, i, v->p, (int)v->n, SQLITE_STATIC);
    default: return sqlite3_bind_null(st, i);
    }
}

/* Rows of r into the statement `ins` (one parameter per column). With
 * ncols 0, one empty row each (INSERT ... DEFAULT VALUES). */
static int load(mctx *m, sqlite3_stmt *ins, const dsq_result *r, size_t ncols, dsq_code *code, char *msg, size_t n)
{
    size_t pos = 0;
    for (size_t row = 0; row < r->nrows; row++) {
        for (size_t c = 0; c < (size_t)r->ncols; c++) {
            dsq_value v;
            if (!dsq_result_next(r, &pos, &v))
                return fail(code, msg, n, DSQ_CODE_INTERNAL_ERROR, "a shard's result is short of values");
            if (c < ncols)
                bind_value(ins, (int)c + 1, &v);
        }
        int rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (rc != SQLITE_DONE)
            return sql_fail(m, rc, code, msg, n);
    }
    return 0;
}

/* Run q over the loaded tables, the request's parameters bound, into out. */
static int run_final(mctx *m, const dsq_plan *p, const char *sql, size_t sql_len, const dsq_stmt_req *req,
                     const dsq_merge_limits *lim, dsq_result *out, dsq_code *code, char *msg, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(m->db, sql, (int)sql_len, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(m, rc, code, msg, n);
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        const dsq_value *v = NULL;
        if (!req->named) {
            if ((size_t)i <= req->nparams && (name == NULL || name[0] == '?'))
                v = &req->params[i - 1].v;
        } else if (name != NULL && name[0] != '?') {
            for (size_t k = 0; k < req->nparams && v == NULL; k++)
                if (strcmp(req->params[k].name, name + 1) == 0)
                    v = &req->params[k].v;
        }
        if (v == NULL) {
            *code = DSQ_CODE_INVALID_REQUEST;
            snprintf(msg, n, "missing parameter %s", name ? name : "?");
            sqlite3_finalize(st); /* (after: it owns the name) */
            return -1;
        }
        bind_value(st, i, v);
    }
    if (dsq_result_set_columns(out, st) != 0) {
        sqlite3_finalize(st);
        return fail(code, msg, n, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
    }
    /* The names (and declared types) the statement has on one database. */
    for (size_t c = 0; c < p->ncols && c < (size_t)out->ncols; c++) {
        char *nm = strdup(p->names[c]);
        if (nm == NULL) {
            sqlite3_finalize(st);
            return fail(code, msg, n, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        }
        free(out->names[c]);
        out->names[c] = nm;
        if (p->decltypes != NULL) {
            free(out->decltypes[c]);
            out->decltypes[c] = p->decltypes[c] ? strdup(p->decltypes[c]) : NULL;
        }
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (dsq_result_add_row(out, st) != 0) {
            sqlite3_finalize(st);
            return fail(code, msg, n, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        }
        if (lim != NULL && lim->max_bytes && out->rows.len > lim->max_bytes) {
            sqlite3_finalize(st);
            *code = DSQ_CODE_RESOURCE_EXHAUSTED;
            snprintf(msg, n, "the result is larger than max_result_bytes (%zu bytes)", lim->max_bytes);
            return -1;
        }
    }
    if (rc != SQLITE_DONE) {
        int r = sql_fail(m, rc, code, msg, n);
        sqlite3_finalize(st);
        return r;
    }
    sqlite3_finalize(st);
    return 0;
}

static int insert_stmt(mctx *m, const char *table, const char *const *cols, size_t ncols, sqlite3_stmt **ins,
                       dsq_code *code, char *msg, size_t n)
{
    dsq_buf q = {0};
    dsq_buf_puts(&q, "INSERT INTO \"");
    for (const char *c = table; *c; c++)
        dsq_buf_append(&q, *c == '"' ? "\"\"" : c, *c == '"' ? 2 : 1);
    dsq_buf_puts(&q, "\"");
    if (ncols == 0) {
        dsq_buf_puts(&q, " DEFAULT VALUES");
    } else {
        for (size_t c = 0; c < ncols && cols != NULL; c++) {
            dsq_buf_puts(&q, c ? ", \"" : "(\"");
            for (const char *s = cols[c]; *s; s++)
                dsq_buf_append(&q, *s == '"' ? "\"\"" : s, *s == '"' ? 2 : 1);
            dsq_buf_puts(&q, c + 1 == ncols ? "\")" : "\"");
        }
        dsq_buf_puts(&q, " VALUES (");
        for (size_t c = 0; c < ncols; c++)
            dsq_buf_puts(&q, c ? ", ?" : "?");
        dsq_buf_puts(&q, ")");
    }
    if (q.data == NULL || dsq_buf_append(&q, "", 1) != 0) {
        dsq_buf_free(&q);
        return fail(code, msg, n, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
    }
    int rc = sqlite3_prepare_v2(m->db, q.data, -1, ins, NULL);
    dsq_buf_free(&q);
    return rc == SQLITE_OK ? 0 : sql_fail(m, rc, code, msg, n);
}

int dsq_merge_scatter(const dsq_plan *p, const dsq_result *const *parts, size_t nparts, const dsq_stmt_req *req,
                      const dsq_merge_limits *lim, dsq_result *out, dsq_code *code, char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    mctx m;
    if (p->merge_ddl == NULL) { /* concatenate */
        for (size_t i = 0; i < nparts; i++) {
            const dsq_result *r = parts[i];
            if (i == 0 || out->ncols == 0) {
                dsq_result_free(out);
                out->ncols = r->ncols;
                out->names = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof *out->names);
                out->decltypes = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof *out->decltypes);
                if (out->names == NULL || out->decltypes == NULL)
                    goto oom;
                /* The names and types the statement has on one database
                 * (a shard names a column after its text as it got it). */
                bool ours = p->names != NULL && (size_t)r->ncols == p->ncols;
                for (int c = 0; c < r->ncols; c++) {
                    const char *nm = ours ? p->names[c] : r->names[c];
                    const char *dt = ours && p->decltypes ? p->decltypes[c] : r->decltypes[c];
                    out->names[c] = strdup(nm ? nm : "");
                    out->decltypes[c] = dt ? strdup(dt) : NULL;
                    if (out->names[c] == NULL)
                        goto oom;
                }
            }
            if (dsq_buf_append(&out->rows, r->rows.data, r->rows.len) != 0)
                goto oom;
            out->nrows += r->nrows;
            if (lim != NULL && lim->max_bytes && out->rows.len > lim->max_bytes) {
                *code = DSQ_CODE_RESOURCE_EXHAUSTED;
                snprintf(msg, msglen, "the result is larger than max_result_bytes (%zu bytes)", lim->max_bytes);
                dsq_result_free(out);
                return -1;
            }
        }
        return 0;
    oom:
        dsq_result_free(out);
        return fail(code, msg, msglen, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
    }
    if (open_db(&m, lim, code, msg, msglen) != 0)
        return -1;
    int rc = -1;
    sqlite3_stmt *ins = NULL;
    char *err = NULL;
    if (sqlite3_exec(m.db, p->merge_ddl, NULL, NULL, &err) != SQLITE_OK) {
        *code = DSQ_CODE_INTERNAL_ERROR;
        snprintf(msg, msglen, "the router's table: %s", err ? err : "out of memory");
        sqlite3_free(err);
        goto done;
    }
    const char *table = strstr(p->merge_ddl, "_dsq_p(") ? "_dsq_p" : "_dsq_r";
    if (insert_stmt(&m, table, NULL, p->shard_cols, &ins, code, msg, msglen) != 0)
        goto done;
    /* (a statement without column names: INSERT INTO t VALUES (...)) */
    sqlite3_exec(m.db, "BEGIN", NULL, NULL, NULL);
    for (size_t i = 0; i < nparts; i++) {
        if ((size_t)parts[i]->ncols != p->shard_cols) {
            fail(code, msg, msglen, DSQ_CODE_INTERNAL_ERROR, "a shard answered with other columns");
            goto done;
        }
        if (load(&m, ins, parts[i], p->shard_cols, code, msg, msglen) != 0)
            goto done;
    }
    sqlite3_exec(m.db, "COMMIT", NULL, NULL, NULL);
    rc = run_final(&m, p, p->merge_q.sql, strlen(p->merge_q.sql), req, lim, out, code, msg, msglen);
done:
    sqlite3_finalize(ins);
    sqlite3_close(m.db);
    if (rc != 0)
        dsq_result_free(out);
    return rc;
}

int dsq_merge_fetch(const dsq_plan *p, const dsq_result *const *const *parts, const size_t *nparts,
                    const dsq_stmt_req *req, const dsq_merge_limits *lim, dsq_result *out, dsq_code *code,
                    char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    mctx m;
    if (open_db(&m, lim, code, msg, msglen) != 0)
        return -1;
    int rc = -1;
    char *err = NULL;
    if (sqlite3_exec(m.db, p->fetch_ddl, NULL, NULL, &err) != SQLITE_OK) {
        *code = DSQ_CODE_INTERNAL_ERROR;
        snprintf(msg, msglen, "the router's tables: %s", err ? err : "out of memory");
        sqlite3_free(err);
        goto done;
    }
    sqlite3_exec(m.db, "BEGIN", NULL, NULL, NULL);
    for (size_t k = 0; k < p->nfetch; k++) {
        const dsq_plan_fetch *f = &p->fetch[k];
        sqlite3_stmt *ins = NULL;
        if (insert_stmt(&m, f->table, (const char *const *)f->cols, f->ncols, &ins, code, msg, msglen) != 0)
            goto done;
        for (size_t i = 0; i < nparts[k]; i++) {
            if (load(&m, ins, parts[k][i], f->ncols, code, msg, msglen) != 0) {
                sqlite3_finalize(ins);
                goto done;
            }
        }
        sqlite3_finalize(ins);
    }
    sqlite3_exec(m.db, "COMMIT", NULL, NULL, NULL);
    rc = run_final(&m, p, req->sql, req->sql_len, req, lim, out, code, msg, msglen); /* (not NUL-terminated) */
done:
    sqlite3_close(m.db);
    if (rc != 0)
        dsq_result_free(out);
    return rc;
}
