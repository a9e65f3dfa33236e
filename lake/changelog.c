/* changelog — CDC events as rows of an Iceberg changelog table (see
 * changelog.h).
 *
 * Divisions: types; the schema; values into their columns (or _unfit);
 * the file. */
#include "lake/changelog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base64.h"
#include "common/buf.h"
#include "common/util.h"
#include "protocol/value.h"

/* ---- types -------------------------------------------------------------------------------- */

static bool has(const char *decl, const char *part) { return strcasestr(decl, part) != NULL; }

/* SQLite's affinity rules (datatype3.html, 3.1), in their order. */
dsq_lk_type dsq_lk_type_of(const char *decl)
{
    if (decl == NULL || decl[0] == '\0')
        return DSQ_LK_BINARY;
    if (has(decl, "INT"))
        return DSQ_LK_LONG;
    if (has(decl, "CHAR") || has(decl, "CLOB") || has(decl, "TEXT"))
        return DSQ_LK_STRING;
    if (has(decl, "BLOB"))
        return DSQ_LK_BINARY;
    return DSQ_LK_DOUBLE; /* REAL, and NUMERIC */
}

const char *dsq_lk_type_name(dsq_lk_type t)
{
    switch (t) {
    case DSQ_LK_LONG: return "long";
    case DSQ_LK_DOUBLE: return "double";
    case DSQ_LK_STRING: return "string";
    case DSQ_LK_BINARY: return "binary";
    }
    return "binary";
}

/* ---- the schema ---------------------------------------------------------------------------- */

#define NMETA 6 /* _op, _lsn, _database, _commit_ts, _rowid, _seq */

json_t *dsq_lk_fields(const dsq_lk_table *t)
{
    json_t *a = json_pack("[{s:i,s:s,s:b,s:s},{s:i,s:s,s:b,s:s},{s:i,s:s,s:b,s:s},{s:i,s:s,s:b,s:s},"
                          "{s:i,s:s,s:b,s:s},{s:i,s:s,s:b,s:s}]",
                          "id", DSQ_LK_ID_OP, "name", "_op", "required", 1, "type", "string", "id", DSQ_LK_ID_LSN,
                          "name", "_lsn", "required", 1, "type", "long", "id", DSQ_LK_ID_DATABASE, "name", "_database",
                          "required", 1, "type", "string", "id", DSQ_LK_ID_COMMIT_TS, "name", "_commit_ts",
                          "required", 1, "type", "timestamptz", "id", DSQ_LK_ID_ROWID, "name", "_rowid", "required",
                          0, "type", "long", "id", DSQ_LK_ID_SEQ, "name", "_seq", "required", 1, "type", "long");
    for (size_t i = 0; a != NULL && i < t->ncols; i++)
        if (json_array_append_new(a, json_pack("{s:i,s:s,s:b,s:s}", "id", t->cols[i].field_id, "name",
                                               t->cols[i].name, "required", 0, "type",
                                               dsq_lk_type_name(t->cols[i].type))) != 0) {
            json_decref(a);
            return NULL;
        }
    if (a != NULL && json_array_append_new(a, json_pack("{s:i,s:s,s:b,s:s}", "id", t->unfit_id, "name", "_unfit",
                                                        "required", 0, "type", "string")) != 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

json_t *dsq_lk_state_fields(const dsq_lk_table *t)
{
    json_t *all = dsq_lk_fields(t);
    if (all == NULL)
        return NULL;
    /* _rowid, the table's columns, _unfit: the changelog's without the
     * other metadata columns */
    json_t *a = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(all, i, f) {
        if ((i < NMETA && json_integer_value(json_object_get(f, "id")) != DSQ_LK_ID_ROWID) || a == NULL)
            continue;
        if (json_array_append(a, f) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    json_decref(all);
    return a;
}

/* ---- values into their columns ------------------------------------------------------------------ */

/* Value v into column type t (*out), or false when it does not fit: a
 * value fits when its storage class is the column's, or it is an integer
 * a double holds exactly in a double column (NUMERIC columns hold both).
 * SQLite's affinity has turned what it could into the column's class
 * already (integral reals and integer text in an INTEGER column, ...):
 * what is left of another class is kept exactly in _unfit. */
static bool fit(dsq_lk_type t, const dsq_cdc_value *v, dsq_pq_value *out)
{
    switch (v->type) {
    case SQLITE_NULL:
        *out = dsq_pq_null();
        return true;
    case SQLITE_INTEGER:
        if (t == DSQ_LK_LONG) {
            *out = dsq_pq_int(v->i);
            return true;
        }
        if (t == DSQ_LK_DOUBLE && v->i >= -(1LL << 53) && v->i <= (1LL << 53)) {
            *out = dsq_pq_double((double)v->i);
            return true;
        }
        return false;
    case SQLITE_FLOAT:
        if (t != DSQ_LK_DOUBLE)
            return false;
        *out = dsq_pq_double(v->r);
        return true;
    case SQLITE_TEXT:
        if (t != DSQ_LK_STRING || !dsq_utf8_valid(v->p, v->n))
            return false;
        *out = dsq_pq_bytes(v->p, v->n);
        return true;
    case SQLITE_BLOB:
        if (t != DSQ_LK_BINARY)
            return false;
        *out = dsq_pq_bytes(v->p, v->n);
        return true;
    }
    return false;
}

/* `"name":value` of an unfit value into the _unfit object being built. */
static void unfit(dsq_buf *b, const char *name, size_t nlen, const dsq_cdc_value *v)
{
    dsq_buf_puts(b, b->len == 0 ? "{" : ",");
    dsq_json_string(b, name, nlen);
    dsq_buf_puts(b, ":");
    dsq_value dv = {0};
    switch (v->type) {
    case SQLITE_INTEGER: dv.type = DSQ_V_INT; dv.i = v->i; break;
    case SQLITE_FLOAT: dv.type = DSQ_V_REAL; dv.d = v->r; break;
    case SQLITE_TEXT:
        if (!dsq_utf8_valid(v->p, v->n)) { /* JSON strings cannot hold it: its bytes, marked as text */
            dsq_buf_puts(b, "{\"$text\":\"");
            dsq_base64_encode(b, v->p, v->n);
            dsq_buf_puts(b, "\"}");
            return;
        }
        dv.type = DSQ_V_TEXT;
        dv.p = (const char *)v->p;
        dv.n = v->n;
        break;
    case SQLITE_BLOB: dv.type = DSQ_V_BLOB; dv.p = (const char *)v->p; dv.n = v->n; break;
    default: dv.type = DSQ_V_NULL; break;
    }
    dsq_json_value(b, &dv);
}

/* ---- the file --------------------------------------------------------------------------------- */

struct dsq_changelog {
    const dsq_lk_table *t;
    char *database;
    dsq_pq_writer *w;
    dsq_pq_value *row;      /* NMETA + ncols + 1 */
    dsq_buf unfit;
    uint64_t rows;
    size_t nmeta;           /* columns before the table's: NMETA, or 1 (_rowid) for a current-state file */
    /* Which column each of the last event's columns is (-1: none): the
     * events of one table in one log record (one commit) share their
     * column list (another record's may have the same address). */
    const dsq_cdc_col *map_cols;
    uint64_t map_lsn;
    uint16_t map_n;
    int *map;
    uint64_t seq_lsn;       /* the commit being written */
    int64_t seq;            /* its next row's place in it */
};

int dsq_lk_check(const dsq_lk_table *t, char *err, size_t errlen)
{
    static const char *const meta[] = {"_op", "_lsn", "_database", "_commit_ts", "_rowid", "_seq", "_unfit", NULL};
    for (size_t i = 0; i < t->ncols; i++)
        for (size_t k = 0; meta[k]; k++)
            if (strcmp(t->cols[i].name, meta[k]) == 0) {
                snprintf(err, errlen, "table %s: its column %s has the name of a changelog column", t->name,
                         meta[k]);
                return -1;
            }
    return 0;
}

static dsq_changelog *open_file(const dsq_lk_table *t, const char *database, bool state, const dsq_pq_options *o,
                                dsq_pq_sink_fn sink, void *ctx, char *err, size_t errlen)
{
    if (dsq_lk_check(t, err, errlen) != 0)
        return NULL;
    size_t nmeta = state ? 1 : NMETA;
    size_t n = nmeta + t->ncols + 1;
    dsq_changelog *c = calloc(1, sizeof *c);
    dsq_pq_column *cols = calloc(n, sizeof *cols);
    if (c == NULL || cols == NULL || (c->row = calloc(n, sizeof *c->row)) == NULL ||
        (c->database = strdup(database)) == NULL) {
        if (c != NULL)
            free(c->row);
        free(c);
        free(cols);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->t = t;
    c->nmeta = nmeta;
    c->seq_lsn = UINT64_MAX;
    if (state) {
        cols[0] = (dsq_pq_column){"_rowid", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, true, DSQ_LK_ID_ROWID};
    } else {
        cols[0] = (dsq_pq_column){"_op", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, false, DSQ_LK_ID_OP};
        cols[1] = (dsq_pq_column){"_lsn", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, DSQ_LK_ID_LSN};
        cols[2] = (dsq_pq_column){"_database", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, false, DSQ_LK_ID_DATABASE};
        cols[3] = (dsq_pq_column){"_commit_ts", DSQ_PQ_INT64, DSQ_PQ_TIMESTAMP_US, false, DSQ_LK_ID_COMMIT_TS};
        cols[4] = (dsq_pq_column){"_rowid", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, true, DSQ_LK_ID_ROWID};
        cols[5] = (dsq_pq_column){"_seq", DSQ_PQ_INT64, DSQ_PQ_PLAIN_TYPE, false, DSQ_LK_ID_SEQ};
    }
    for (size_t i = 0; i < t->ncols; i++) {
        const dsq_lk_col *lc = &t->cols[i];
        dsq_pq_column *pc = &cols[nmeta + i];
        pc->name = lc->name;
        pc->nullable = true;
        pc->field_id = lc->field_id;
        pc->type = lc->type == DSQ_LK_LONG ? DSQ_PQ_INT64 : lc->type == DSQ_LK_DOUBLE ? DSQ_PQ_DOUBLE : DSQ_PQ_BYTE_ARRAY;
        pc->logical = lc->type == DSQ_LK_STRING ? DSQ_PQ_STRING : DSQ_PQ_PLAIN_TYPE;
    }
    cols[n - 1] = (dsq_pq_column){"_unfit", DSQ_PQ_BYTE_ARRAY, DSQ_PQ_STRING, true, t->unfit_id};
    c->w = dsq_pq_open(cols, n, o, sink, ctx, err, errlen);
    free(cols);
    if (c->w == NULL) {
        free(c->database);
        free(c->row);
        free(c);
        return NULL;
    }
    return c;
}

dsq_changelog *dsq_changelog_open(const dsq_lk_table *t, const char *database, const dsq_pq_options *o,
                                  dsq_pq_sink_fn sink, void *ctx, char *err, size_t errlen)
{
    return open_file(t, database, false, o, sink, ctx, err, errlen);
}

dsq_changelog *dsq_changelog_open_state(const dsq_lk_table *t, const dsq_pq_options *o, dsq_pq_sink_fn sink,
                                        void *ctx, char *err, size_t errlen)
{
    return open_file(t, "", true, o, sink, ctx, err, errlen);
}

uint64_t dsq_changelog_rows(const dsq_changelog *c) { return c->rows; }

void dsq_changelog_next_seq(const dsq_changelog *c, uint64_t *lsn, int64_t *seq)
{
    *lsn = c->seq_lsn;
    *seq = c->seq;
}

void dsq_changelog_continue(dsq_changelog *c, uint64_t lsn, int64_t seq)
{
    c->seq_lsn = lsn;
    c->seq = seq;
}

/* One changelog row: operation op, the row's values vals, its rowid. */
static int add_row(dsq_changelog *c, const dsq_cdc_event *ev, int op, const dsq_cdc_value *vals, bool has_rowid,
                   int64_t rowid, uint64_t lsn, int64_t ts_us, char *err, size_t errlen)
{
    const dsq_lk_table *t = c->t;
    static const char *const ops[] = {NULL, "INSERT", "UPDATE", "DELETE"};
    const size_t nm = c->nmeta;
    dsq_buf_reset(&c->unfit);
    if (nm == 1) { /* a current-state row */
        c->row[0] = has_rowid ? dsq_pq_int(rowid) : dsq_pq_null();
    } else {
        c->row[0] = dsq_pq_str(ops[op]);
        c->row[1] = dsq_pq_int((int64_t)lsn);
        c->row[2] = dsq_pq_str(c->database);
        c->row[3] = dsq_pq_int(ts_us);
        c->row[4] = has_rowid ? dsq_pq_int(rowid) : dsq_pq_null();
        if (lsn != c->seq_lsn) { /* a commit's rows are numbered from 0 */
            c->seq_lsn = lsn;
            c->seq = 0;
        }
        c->row[5] = dsq_pq_int(c->seq);
    }
    for (size_t i = 0; i < t->ncols; i++)
        c->row[nm + i] = dsq_pq_null(); /* a column the event lacks (dropped since) */
    if (c->map_cols != ev->cols || c->map_n != ev->ncols || c->map_lsn != lsn || c->map == NULL) {
        int *m = realloc(c->map, (ev->ncols ? ev->ncols : 1) * sizeof *m);
        if (m == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        c->map = m;
        for (uint16_t k = 0; k < ev->ncols; k++) {
            const dsq_cdc_col *ec = &ev->cols[k];
            size_t i = 0;
            while (i < t->ncols &&
                   !(strlen(t->cols[i].name) == ec->len && memcmp(t->cols[i].name, ec->name, ec->len) == 0))
                i++;
            m[k] = i < t->ncols ? (int)i : -1;
        }
        c->map_cols = ev->cols;
        c->map_n = ev->ncols;
        c->map_lsn = lsn;
    }
    for (uint16_t k = 0; k < ev->ncols; k++) {
        const dsq_cdc_col *ec = &ev->cols[k];
        if (ec->len == 0)
            continue; /* a virtual generated column: no value in the log */
        int i = c->map[k];
        dsq_pq_value pv;
        if (i >= 0 && fit(t->cols[i].type, &vals[k], &pv))
            c->row[nm + (size_t)i] = pv;
        else
            unfit(&c->unfit, ec->name, ec->len, &vals[k]);
    }
    if (c->unfit.len > 0) {
        dsq_buf_puts(&c->unfit, "}");
        c->row[nm + t->ncols] = dsq_pq_bytes(c->unfit.data, c->unfit.len);
    } else {
        c->row[nm + t->ncols] = dsq_pq_null();
    }
    if (dsq_pq_append(c->w, c->row) != 0) {
        snprintf(err, errlen, "%s", dsq_pq_error(c->w));
        return -1;
    }
    c->rows++;
    c->seq++;
    return 0;
}

/* Does an UPDATE give the row another identity (its rowid, or for a
 * WITHOUT ROWID table its primary key)? */
static bool moves(const dsq_cdc_event *ev)
{
    if (!ev->without_rowid)
        return ev->rowid != ev->new_rowid;
    for (uint16_t k = 0; k < ev->ncols; k++) {
        if (ev->cols[k].pk == 0)
            continue;
        const dsq_cdc_value *a = &ev->before[k], *b = &ev->after[k];
        if (a->type != b->type || (a->type == SQLITE_INTEGER && a->i != b->i) ||
            (a->type == SQLITE_FLOAT && a->r != b->r) ||
            ((a->type == SQLITE_TEXT || a->type == SQLITE_BLOB) && (a->n != b->n || memcmp(a->p, b->p, a->n) != 0)))
            return true;
    }
    return false;
}

int dsq_changelog_add(dsq_changelog *c, const dsq_cdc_event *ev, uint64_t lsn, int64_t ts_us, char *err,
                      size_t errlen)
{
    bool rid = !ev->without_rowid;
    switch (ev->op) {
    case DSQ_CDC_INSERT: return add_row(c, ev, DSQ_CDC_INSERT, ev->after, rid, ev->rowid, lsn, ts_us, err, errlen);
    case DSQ_CDC_DELETE: return add_row(c, ev, DSQ_CDC_DELETE, ev->before, rid, ev->rowid, lsn, ts_us, err, errlen);
    case DSQ_CDC_UPDATE:
        /* A row that changes identity is, to a reader replaying by key,
         * the old row gone and a new one: written as that. */
        if (moves(ev))
            return add_row(c, ev, DSQ_CDC_DELETE, ev->before, rid, ev->rowid, lsn, ts_us, err, errlen) ||
                           add_row(c, ev, DSQ_CDC_INSERT, ev->after, rid, ev->new_rowid, lsn, ts_us, err, errlen)
                       ? -1
                       : 0;
        return add_row(c, ev, DSQ_CDC_UPDATE, ev->after, rid, ev->new_rowid, lsn, ts_us, err, errlen);
    default:
        snprintf(err, errlen, "a changelog takes row changes only (event %d)", ev->op);
        return -1;
    }
}

int dsq_changelog_close(dsq_changelog *c, dsq_pq_file_stats *st, char *err, size_t errlen)
{
    int rc = dsq_pq_close(c->w, st, err, errlen);
    free(c->map);
    dsq_buf_free(&c->unfit);
    free(c->row);
    free(c->database);
    free(c);
    return rc;
}
