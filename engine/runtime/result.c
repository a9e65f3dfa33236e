/* result — the rows of one statement, packed in one buffer.
 *
 * Format, per value: a type byte (dsq_vtype); then for INT and REAL 8 bytes
 * (host order: the buffer never leaves the process); for TEXT and BLOB a
 * uint32 length and the bytes; nothing for NULL. A result's column names
 * and declared types are copied once when its statement starts. */
#include <stdlib.h>
#include <string.h>

#include "engine/runtime/engine_int.h"

void dsq__result_free(dsq_result *r)
{
    for (int i = 0; i < r->ncols; i++) {
        free(r->names[i]);
        free(r->decltypes[i]);
    }
    free(r->names);
    free(r->decltypes);
    free(r->error);
    dsq_buf_free(&r->rows);
    memset(r, 0, sizeof *r);
}

int dsq__result_columns(dsq_result *r, sqlite3_stmt *st)
{
    dsq__result_free(r);
    int n = sqlite3_column_count(st);
    if (n == 0)
        return 0;
    r->names = calloc((size_t)n, sizeof *r->names);
    r->decltypes = calloc((size_t)n, sizeof *r->decltypes);
    if (r->names == NULL || r->decltypes == NULL)
        return -1;
    r->ncols = n;
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i);
        const char *decl = sqlite3_column_decltype(st, i);
        r->names[i] = strdup(name ? name : "");
        r->decltypes[i] = decl ? strdup(decl) : NULL;
        if (r->names[i] == NULL || (decl && r->decltypes[i] == NULL))
            return -1;
    }
    return 0;
}

/* Append the current row of `st`. Returns 0 or -1 (out of memory). */
int dsq__result_add(dsq_result *r, sqlite3_stmt *st, int ncols)
{
    for (int i = 0; i < ncols; i++) {
        int t = sqlite3_column_type(st, i);
        unsigned char tag;
        int rv = 0;
        switch (t) {
        case SQLITE_INTEGER: {
            int64_t v = sqlite3_column_int64(st, i);
            tag = DSQ_V_INT;
            rv = dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &v, 8);
            break;
        }
        case SQLITE_FLOAT: {
            double v = sqlite3_column_double(st, i);
            tag = DSQ_V_REAL;
            rv = dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &v, 8);
            break;
        }
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            const void *p = t == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, i)
                                             : sqlite3_column_blob(st, i);
            uint32_t n = (uint32_t)sqlite3_column_bytes(st, i);
            tag = t == SQLITE_TEXT ? DSQ_V_TEXT : DSQ_V_BLOB;
            rv = dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &n, 4) ||
                 (n > 0 && dsq_buf_append(&r->rows, p, n));
            break;
        }
        default:
            tag = DSQ_V_NULL;
            rv = dsq_buf_append(&r->rows, &tag, 1);
            break;
        }
        if (rv != 0)
            return -1;
    }
    r->nrows++;
    return 0;
}

bool dsq_result_next(const dsq_result *r, size_t *pos, dsq_value *v)
{
    if (*pos >= r->rows.len)
        return false;
    const char *p = r->rows.data + *pos;
    memset(v, 0, sizeof *v);
    v->type = (dsq_vtype)p[0];
    switch (v->type) {
    case DSQ_V_INT:
        memcpy(&v->i, p + 1, 8);
        *pos += 9;
        break;
    case DSQ_V_REAL:
        memcpy(&v->d, p + 1, 8);
        *pos += 9;
        break;
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: {
        uint32_t n;
        memcpy(&n, p + 1, 4);
        v->p = p + 5;
        v->n = n;
        *pos += 5 + n;
        break;
    }
    default:
        *pos += 1;
        break;
    }
    return true;
}

void dsq_budget_init(dsq_budget *b)
{
    atomic_init(&b->used, 0);
    atomic_init(&b->over, false);
}

void dsq_budget_release(dsq_budget *b, uint64_t n)
{
    if (b == NULL || n == 0)
        return;
    atomic_fetch_sub(&b->used, n);
    atomic_store(&b->over, false);
}

void dsq_call_free_results(dsq_call *c)
{
    for (size_t i = 0; i < c->nresults; i++)
        dsq__result_free(&c->results[i]);
    free(c->results);
    c->results = NULL;
    c->nresults = 0;
}

void dsq_call_reset(dsq_call *c)
{
    dsq_call_free_results(c);
    dsq_schema_free(c->schema);
    c->schema = NULL;
    dsq_db_stats_free(c->stats);
    c->stats = NULL;
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
    c->names = NULL;
    c->nnames = 0;
    dsq_buf_free(&c->out);
}

int dsq_result_set_columns(dsq_result *r, struct sqlite3_stmt *st) { return dsq__result_columns(r, st); }

int dsq_result_add_row(dsq_result *r, struct sqlite3_stmt *st)
{
    return dsq__result_add(r, st, sqlite3_column_count(st));
}

int dsq_result_add_value(dsq_result *r, const dsq_value *v)
{
    unsigned char tag = (unsigned char)v->type;
    switch (v->type) {
    case DSQ_V_INT:
        return dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &v->i, 8) ? -1 : 0;
    case DSQ_V_REAL:
        return dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &v->d, 8) ? -1 : 0;
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: {
        uint32_t n = (uint32_t)v->n;
        return dsq_buf_append(&r->rows, &tag, 1) || dsq_buf_append(&r->rows, &n, 4) ||
                       (n > 0 && dsq_buf_append(&r->rows, v->p, n))
                   ? -1
                   : 0;
    }
    default:
        tag = DSQ_V_NULL;
        return dsq_buf_append(&r->rows, &tag, 1) ? -1 : 0;
    }
}

void dsq_result_free(dsq_result *r) { dsq__result_free(r); }
