/* rcall — calls run on another node: their messages (rcall.h). */
#include "cluster/rcall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"

enum { F_ATOMIC = 1, F_IMMEDIATE = 2, F_READ_ONLY = 4, F_INTERNAL = 8 };

bool dsq_rcall_op_ok(dsq_op op)
{
    switch (op) {
    case DSQ_OP_QUERY:
    case DSQ_OP_BATCH:
    case DSQ_OP_BEGIN:
    case DSQ_OP_COMMIT:
    case DSQ_OP_ROLLBACK:
    case DSQ_OP_SCHEMA: return true;
    default: return false;
    }
}

/* ---- writing ---- */

/* Bytes of any length: u32 length, then them. */
static int w_bytes(dsq_buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX)
        return -1;
    return dsq_w_u32(b, (uint32_t)n) | (n ? dsq_buf_append(b, p, n) : 0);
}

static int w_lstr(dsq_buf *b, const char *s) { return w_bytes(b, s, s ? strlen(s) : 0); }

/* A string that may be missing: u8 present, then it. */
static int w_opt(dsq_buf *b, const char *s) { return s ? dsq_w_u8(b, 1) | w_lstr(b, s) : dsq_w_u8(b, 0); }

static int w_value(dsq_buf *b, const dsq_value *v)
{
    int rc = dsq_w_u8(b, (uint8_t)v->type);
    switch (v->type) {
    case DSQ_V_INT: return rc | dsq_w_u64(b, (uint64_t)v->i);
    case DSQ_V_REAL: {
        uint64_t bits;
        memcpy(&bits, &v->d, 8);
        return rc | dsq_w_u64(b, bits);
    }
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: return rc | w_bytes(b, v->p, v->n);
    default: return rc;
    }
}

int dsq_rcall_encode_call(dsq_buf *b, uint64_t id, const char *db, const dsq_call *c)
{
    if (strlen(db) > 128 || (c->target_db && strlen(c->target_db) > 128))
        return -1;
    uint8_t flags = (uint8_t)((c->atomic ? F_ATOMIC : 0) | (c->immediate ? F_IMMEDIATE : 0) |
                              (c->read_only ? F_READ_ONLY : 0) | (c->internal_tables ? F_INTERNAL : 0));
    int rc = dsq_w_str(b, db) | dsq_w_u64(b, id) | dsq_w_u8(b, (uint8_t)c->op) | dsq_w_u8(b, flags) |
             dsq_w_str(b, c->txn) | dsq_w_str(b, c->prepare_id) | dsq_w_str(b, c->target_db ? c->target_db : "") |
             dsq_w_u32(b, c->scope) | dsq_w_u64(b, c->txn_timeout_ms) | dsq_w_u32(b, (uint32_t)c->nstmts);
    for (size_t i = 0; rc == 0 && i < c->nstmts; i++) {
        const dsq_stmt_req *s = &c->stmts[i];
        rc |= w_bytes(b, s->sql, s->sql_len) | dsq_w_u8(b, s->named) | dsq_w_u32(b, (uint32_t)s->nparams);
        for (size_t k = 0; rc == 0 && k < s->nparams; k++)
            rc |= w_opt(b, s->params[k].name) | w_value(b, &s->params[k].v);
    }
    return rc ? -1 : 0;
}

static int w_columns(dsq_buf *b, const dsq_schema_column *c, size_t n)
{
    int rc = dsq_w_u32(b, (uint32_t)n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc |= w_lstr(b, c[i].name) | w_lstr(b, c[i].type) | dsq_w_u8(b, c[i].not_null) | w_opt(b, c[i].dflt) |
              dsq_w_u32(b, (uint32_t)c[i].pk) | dsq_w_u8(b, c[i].generated);
    return rc;
}

static int w_list(dsq_buf *b, const dsq_schema_list *l)
{
    int rc = dsq_w_u32(b, (uint32_t)l->n);
    for (size_t i = 0; rc == 0 && i < l->n; i++) {
        const dsq_schema_object *o = &l->v[i];
        rc |= w_lstr(b, o->name) | w_opt(b, o->table) | w_opt(b, o->sql) | w_columns(b, o->columns, o->ncolumns) |
              dsq_w_u8(b, (uint8_t)(o->has_flags | o->without_rowid << 1 | o->strict << 2 | o->unique << 3));
    }
    return rc;
}

int dsq_rcall_encode_reply(dsq_buf *b, uint64_t id, const dsq_call *c)
{
    int rc = dsq_w_u64(b, id) | dsq_w_u8(b, c->err != 0) | dsq_w_u32(b, (uint32_t)c->code) |
             w_lstr(b, c->err ? c->msg : "") | dsq_w_u64(b, c->lsn) | dsq_w_str(b, c->txn_out) |
             dsq_w_u32(b, (uint32_t)(c->err ? 0 : c->nresults));
    for (size_t i = 0; rc == 0 && !c->err && i < c->nresults; i++) {
        const dsq_result *r = &c->results[i];
        rc |= dsq_w_u32(b, (uint32_t)r->ncols);
        for (int k = 0; rc == 0 && k < r->ncols; k++)
            rc |= w_lstr(b, r->names[k]) | w_opt(b, r->decltypes[k]);
        rc |= dsq_w_u64(b, r->nrows) | dsq_w_u64(b, (uint64_t)r->rows_affected) |
              dsq_w_u64(b, (uint64_t)r->last_insert_rowid) | dsq_w_u64(b, r->lsn) | w_opt(b, r->error) |
              dsq_w_u32(b, (uint32_t)r->code);
        size_t pos = 0, nvals = 0;
        dsq_value v;
        while (dsq_result_next(r, &pos, &v))
            nvals++;
        rc |= dsq_w_u64(b, nvals);
        pos = 0;
        while (rc == 0 && dsq_result_next(r, &pos, &v))
            rc |= w_value(b, &v);
    }
    const dsq_schema *s = c->err ? NULL : c->schema;
    rc |= dsq_w_u8(b, s != NULL);
    if (s != NULL)
        rc |= w_list(b, &s->tables) | w_list(b, &s->indexes) | w_list(b, &s->views) | w_list(b, &s->triggers);
    return rc ? -1 : 0;
}

/* ---- reading ---- */

/* Bytes of any length: a view into the message (NULL with n 0 when empty). */
static const uint8_t *r_bytes(dsq_rd *r, size_t *n)
{
    *n = dsq_r_u32(r);
    const uint8_t *p = NULL;
    if (!dsq_rd_take(r, *n, &p)) {
        *n = 0;
        return NULL;
    }
    return p;
}

/* A copy, NUL-terminated (malloc'd); NULL when bad or out of memory (r
 * marked bad then). */
static char *r_dup(dsq_rd *r)
{
    size_t n;
    const uint8_t *p = r_bytes(r, &n);
    if (r->bad)
        return NULL;
    char *s = malloc(n + 1);
    if (s == NULL) {
        r->bad = true;
        return NULL;
    }
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static char *r_opt_dup(dsq_rd *r) { return dsq_r_u8(r) ? r_dup(r) : NULL; }

/* A value; its bytes a view into the message. */
static void r_value(dsq_rd *r, dsq_value *v)
{
    memset(v, 0, sizeof *v);
    v->type = (dsq_vtype)dsq_r_u8(r);
    switch (v->type) {
    case DSQ_V_NULL: break;
    case DSQ_V_INT: v->i = (int64_t)dsq_r_u64(r); break;
    case DSQ_V_REAL: {
        uint64_t bits = dsq_r_u64(r);
        memcpy(&v->d, &bits, 8);
        break;
    }
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: v->p = (const char *)r_bytes(r, &v->n); break;
    default: r->bad = true; break;
    }
}

/* A bump allocation of n bytes from the in's memory. */
static char *bump(char **at, char *end, size_t n)
{
    if ((size_t)(end - *at) < n)
        return NULL;
    char *p = *at;
    *at += n;
    return p;
}

dsq_rcall_in *dsq_rcall_decode_call(const void *p, size_t n)
{
    dsq_rcall_in *in = calloc(1, sizeof *in);
    /* Every string and byte run is copied, each with a NUL: at most the
     * message's size again, plus one per item. */
    size_t cap = 2 * n + 64;
    if (in == NULL || (in->mem = malloc(cap)) == NULL) {
        free(in);
        return NULL;
    }
    char *at = in->mem, *end = in->mem + cap;
    dsq_rd r = dsq_rd_of(p, n);
    dsq_r_str(&r, in->db, sizeof in->db);
    in->id = dsq_r_u64(&r);
    dsq_call *c = &in->call;
    c->op = (dsq_op)dsq_r_u8(&r);
    uint8_t flags = dsq_r_u8(&r);
    c->atomic = flags & F_ATOMIC;
    c->immediate = flags & F_IMMEDIATE;
    c->read_only = flags & F_READ_ONLY;
    c->internal_tables = flags & F_INTERNAL;
    dsq_r_str(&r, c->txn, sizeof c->txn);
    dsq_r_str(&r, c->prepare_id, sizeof c->prepare_id);
    dsq_r_str(&r, in->target, sizeof in->target);
    c->target_db = in->target[0] ? in->target : NULL;
    c->scope = dsq_r_u32(&r);
    c->txn_timeout_ms = dsq_r_u64(&r);
    uint32_t nstmts = dsq_r_u32(&r);
    /* (each statement takes at least 9 bytes of the message, each
     * parameter 2: counts past that cannot be) */
    if (r.bad || nstmts > dsq_rd_left(&r) / 9 || !dsq_rcall_op_ok(c->op))
        goto bad;
    in->stmts = calloc(nstmts ? nstmts : 1, sizeof *in->stmts);
    size_t total = 0, pcap = dsq_rd_left(&r) / 2 + 1;
    in->params = calloc(pcap, sizeof *in->params);
    if (in->stmts == NULL || in->params == NULL)
        goto bad;
    for (uint32_t i = 0; i < nstmts && !r.bad; i++) {
        dsq_stmt_req *s = &in->stmts[i];
        size_t len;
        const uint8_t *sql = r_bytes(&r, &len);
        char *copy = bump(&at, end, len + 1);
        if (r.bad || copy == NULL)
            goto bad;
        if (len)
            memcpy(copy, sql, len);
        copy[len] = '\0';
        s->sql = copy;
        s->sql_len = len;
        s->named = dsq_r_u8(&r) != 0;
        uint32_t np = dsq_r_u32(&r);
        if (r.bad || np > pcap - total)
            goto bad;
        s->params = &in->params[total];
        s->nparams = np;
        total += np;
        for (uint32_t k = 0; k < np && !r.bad; k++) {
            dsq_param *pm = &s->params[k];
            if (dsq_r_u8(&r)) {
                size_t nl;
                const uint8_t *name = r_bytes(&r, &nl);
                char *nc = bump(&at, end, nl + 1);
                if (r.bad || nc == NULL)
                    goto bad;
                if (nl)
                    memcpy(nc, name, nl);
                nc[nl] = '\0';
                pm->name = nc;
            }
            r_value(&r, &pm->v);
            if (pm->v.n > 0) {
                char *vc = bump(&at, end, pm->v.n);
                if (vc == NULL)
                    goto bad;
                memcpy(vc, pm->v.p, pm->v.n);
                pm->v.p = vc;
            } else if (pm->v.type == DSQ_V_TEXT || pm->v.type == DSQ_V_BLOB) {
                pm->v.p = "";
            }
        }
    }
    if (r.bad || dsq_rd_left(&r) != 0)
        goto bad;
    c->stmts = in->stmts;
    c->nstmts = nstmts;
    return in;
bad:
    dsq_rcall_in_free(in);
    return NULL;
}

void dsq_rcall_in_free(dsq_rcall_in *in)
{
    if (in == NULL)
        return;
    dsq_call_reset(&in->call);
    free(in->stmts);
    free(in->params);
    free(in->mem);
    free(in);
}

uint64_t dsq_rcall_reply_id(const void *p, size_t n)
{
    dsq_rd r = dsq_rd_of(p, n);
    uint64_t id = dsq_r_u64(&r);
    return r.bad ? 0 : id;
}

static int r_columns(dsq_rd *r, dsq_schema_object *o)
{
    uint32_t n = dsq_r_u32(r);
    if (r->bad || n > dsq_rd_left(r) / 14)
        return -1;
    o->columns = calloc(n ? n : 1, sizeof *o->columns);
    if (o->columns == NULL)
        return -1;
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        dsq_schema_column *c = &o->columns[i];
        o->ncolumns = i + 1;
        c->name = r_dup(r);
        c->type = r_dup(r);
        c->not_null = dsq_r_u8(r) != 0;
        c->dflt = r_opt_dup(r);
        c->pk = (int)dsq_r_u32(r);
        c->generated = dsq_r_u8(r) != 0;
    }
    return r->bad ? -1 : 0;
}

static int r_list(dsq_rd *r, dsq_schema_list *l)
{
    uint32_t n = dsq_r_u32(r);
    if (r->bad || n > dsq_rd_left(r) / 11)
        return -1;
    l->v = calloc(n ? n : 1, sizeof *l->v);
    if (l->v == NULL)
        return -1;
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        dsq_schema_object *o = &l->v[i];
        l->n = i + 1;
        o->name = r_dup(r);
        o->table = r_opt_dup(r);
        o->sql = r_opt_dup(r);
        if (r_columns(r, o) != 0)
            return -1;
        uint8_t f = dsq_r_u8(r);
        o->has_flags = f & 1;
        o->without_rowid = f & 2;
        o->strict = f & 4;
        o->unique = f & 8;
    }
    return r->bad ? -1 : 0;
}

int dsq_rcall_decode_reply(const void *p, size_t n, dsq_call *c)
{
    dsq_rd r = dsq_rd_of(p, n);
    (void)dsq_r_u64(&r); /* (the id: the caller's) */
    c->err = dsq_r_u8(&r) ? -1 : 0;
    c->code = (dsq_code)dsq_r_u32(&r);
    size_t ml;
    const uint8_t *msg = r_bytes(&r, &ml);
    if (ml >= sizeof c->msg)
        ml = sizeof c->msg - 1;
    if (ml)
        memcpy(c->msg, msg, ml);
    c->msg[ml] = '\0';
    c->lsn = dsq_r_u64(&r);
    dsq_r_str(&r, c->txn_out, sizeof c->txn_out);
    uint32_t nres = dsq_r_u32(&r);
    if (r.bad || nres > dsq_rd_left(&r) / 45)
        goto bad;
    if (nres > 0) {
        c->results = calloc(nres, sizeof *c->results);
        if (c->results == NULL)
            goto bad;
        c->nresults = nres;
    }
    for (uint32_t i = 0; i < nres && !r.bad; i++) {
        dsq_result *res = &c->results[i];
        uint32_t ncols = dsq_r_u32(&r);
        if (r.bad || ncols > dsq_rd_left(&r) / 5)
            goto bad;
        if (ncols > 0) {
            res->names = calloc(ncols, sizeof *res->names);
            res->decltypes = calloc(ncols, sizeof *res->decltypes);
            if (res->names == NULL || res->decltypes == NULL) {
                free(res->names);
                free(res->decltypes);
                res->names = NULL;
                res->decltypes = NULL;
                goto bad;
            }
            res->ncols = (int)ncols;
        }
        for (uint32_t k = 0; k < ncols && !r.bad; k++) {
            res->names[k] = r_dup(&r);
            res->decltypes[k] = r_opt_dup(&r);
        }
        res->nrows = dsq_r_u64(&r);
        res->rows_affected = (int64_t)dsq_r_u64(&r);
        res->last_insert_rowid = (int64_t)dsq_r_u64(&r);
        res->lsn = dsq_r_u64(&r);
        res->error = r_opt_dup(&r);
        res->code = (dsq_code)dsq_r_u32(&r);
        uint64_t nvals = dsq_r_u64(&r);
        if (r.bad || nvals > dsq_rd_left(&r) ||
            (ncols > 0 ? nvals % ncols != 0 || nvals / ncols != res->nrows : nvals != 0 || res->nrows != 0))
            goto bad;
        for (uint64_t k = 0; k < nvals && !r.bad; k++) {
            dsq_value v;
            r_value(&r, &v);
            if (!r.bad && dsq_result_add_value(res, &v) != 0)
                goto bad;
        }
    }
    if (dsq_r_u8(&r)) {
        c->schema = calloc(1, sizeof *c->schema);
        if (c->schema == NULL || r_list(&r, &c->schema->tables) != 0 || r_list(&r, &c->schema->indexes) != 0 ||
            r_list(&r, &c->schema->views) != 0 || r_list(&r, &c->schema->triggers) != 0)
            goto bad;
    }
    if (r.bad || dsq_rd_left(&r) != 0)
        goto bad;
    return 0;
bad:
    dsq_call_reset(c);
    c->err = -1;
    c->code = DSQ_CODE_INTERNAL_ERROR;
    snprintf(c->msg, sizeof c->msg, "a reply from another node did not hold together");
    return -1;
}
