/* idem — idempotency keys (worker): a write sent again after its answer
 * was lost runs once, and the retry gets the first answer.
 *
 * Divisions: the request's digest; the answer as a record; looking a key
 * up; recording one.
 *
 * A QUERY, an atomic BATCH or a COMMIT may carry a key (c->idem_key).
 * Before it runs, the key is looked up in the database's own table
 * _dsq_idempotency: a record younger than the window
 * (idempotency_window_ms) made for the same request (its digest: the
 * operation, the transaction, the statements and their parameters)
 * answers the call with the first answer, and nothing runs; one made for
 * another request fails the call. Otherwise the call runs, and when it
 * wrote, its key, digest and answer are written to that table in the
 * transaction that commits the write, just before COMMIT: the record is
 * exactly as durable as the write, is in the commit's log record (so
 * followers have it, and a failover keeps it), and goes with the write
 * when that rolls back. A call that fails records nothing; nor does one
 * that wrote nothing (running a read again is as good as its first
 * answer), except a COMMIT, whose transaction cannot run again.
 *
 * The answer's LSN is its commit's, which COMMIT has not given yet when
 * the record is written: the log gives a commit the LSN after the last
 * one (pagestore.c), and a transaction that writes the record commits
 * something, so it is o->lsn + 1. (A query inside an explicit transaction
 * answers with the last commit, o->lsn, as it did the first time.)
 *
 * Expired records go a few at a time with each record written, found by
 * an index on their time: never a scan. A database that stops taking
 * keys keeps its last records (at most what one window took) until the
 * next keyed write. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/runtime/exec_int.h"

#define DIGEST_LEN 32

static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS _dsq_idempotency(key BLOB PRIMARY KEY, digest BLOB NOT NULL, "
    "created INTEGER NOT NULL, lsn INTEGER NOT NULL, answer BLOB NOT NULL) WITHOUT ROWID; "
    "CREATE INDEX IF NOT EXISTS _dsq_idempotency_created ON _dsq_idempotency(created)";

/* Keys are looked up and recorded: the call has one, the window is not 0,
 * and the caller may write (a read-scope token replays no one's writes). */
bool dsq__idem_keyed(const run_ctx *x)
{
    const dsq_call *c = x->c;
    return c->idem_key != NULL && x->e->cfg.idempotency_window_ms != 0 && (c->scope & DSQ_SCOPE_W) &&
           (c->op == DSQ_OP_QUERY || c->op == DSQ_OP_BATCH || c->op == DSQ_OP_COMMIT);
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- the request's digest ---------------------------------------------------------- */

static int dg_put(EVP_MD_CTX *m, const void *p, size_t n) { return EVP_DigestUpdate(m, p, n) == 1 ? 0 : -1; }

static int dg_u64(EVP_MD_CTX *m, uint64_t v)
{
    uint8_t b[8];
    le64(b, v);
    return dg_put(m, b, 8);
}

/* Bytes with their length first: no two requests run together alike. */
static int dg_bytes(EVP_MD_CTX *m, const void *p, size_t n)
{
    return dg_u64(m, n) != 0 || (n > 0 && dg_put(m, p, n) != 0) ? -1 : 0;
}

static int dg_value(EVP_MD_CTX *m, const dsq_value *v)
{
    uint8_t t = (uint8_t)v->type;
    if (dg_put(m, &t, 1) != 0)
        return -1;
    switch (v->type) {
    case DSQ_V_INT: return dg_u64(m, (uint64_t)v->i);
    case DSQ_V_REAL: {
        uint64_t bits;
        memcpy(&bits, &v->d, 8);
        return dg_u64(m, bits);
    }
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: return dg_bytes(m, v->p, v->n);
    default: return 0;
    }
}

static int dg_stmt(EVP_MD_CTX *m, const dsq_stmt_req *r)
{
    uint8_t named = r->named;
    if (dg_bytes(m, r->sql, r->sql_len) != 0 || dg_put(m, &named, 1) != 0 || dg_u64(m, r->nparams) != 0)
        return -1;
    for (size_t i = 0; i < r->nparams; i++) {
        const dsq_param *p = &r->params[i];
        uint8_t has = p->name != NULL;
        if (dg_put(m, &has, 1) != 0 || (has && dg_bytes(m, p->name, strlen(p->name)) != 0) ||
            dg_value(m, &p->v) != 0)
            return -1;
    }
    return 0;
}

/* SHA-256 of what the call asks: its operation, whether a batch is
 * atomic, the transaction it names, and every statement with its
 * parameters (names, types and values). 0, or -1 (out of memory). */
static int request_digest(const dsq_call *c, uint8_t out[DIGEST_LEN])
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (m == NULL)
        return -1;
    uint8_t head[2] = {(uint8_t)c->op, (uint8_t)(c->op == DSQ_OP_BATCH && c->atomic)};
    int rc = EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1 ? 0 : -1;
    if (rc == 0)
        rc = dg_put(m, head, sizeof head) | dg_bytes(m, c->txn, strlen(c->txn)) | dg_u64(m, c->nstmts);
    for (size_t i = 0; rc == 0 && i < c->nstmts; i++)
        rc = dg_stmt(m, &c->stmts[i]);
    unsigned len = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(m, out, &len) != 1 || len != DIGEST_LEN))
        rc = -1;
    EVP_MD_CTX_free(m);
    return rc;
}

/* ---- the answer as a record ------------------------------------------------------------
 *
 * Little-endian (it outlives the process and goes to other nodes): the
 * results' count (u32); per result its columns (u32), each column's name
 * and declared type (u32 length and bytes; a missing type's length is
 * UINT32_MAX), then rows (u64), rows affected and last insert rowid
 * (i64), the values (u64) and the values, each its type (u8) and an i64,
 * a double's bits (u64), or a text's or blob's length (u32) and bytes. */

static int put_n(dsq_buf *b, uint64_t v, int n)
{
    uint8_t t[8];
    le64(t, v);
    return dsq_buf_append(b, t, (size_t)n);
}

static int put_str(dsq_buf *b, const char *s)
{
    if (s == NULL)
        return put_n(b, UINT32_MAX, 4);
    size_t n = strlen(s);
    return put_n(b, n, 4) || dsq_buf_append(b, s, n) ? -1 : 0;
}

static int put_value(dsq_buf *b, const dsq_value *v)
{
    uint8_t t = (uint8_t)v->type;
    if (dsq_buf_append(b, &t, 1) != 0)
        return -1;
    switch (v->type) {
    case DSQ_V_INT: return put_n(b, (uint64_t)v->i, 8);
    case DSQ_V_REAL: {
        uint64_t bits;
        memcpy(&bits, &v->d, 8);
        return put_n(b, bits, 8);
    }
    case DSQ_V_TEXT:
    case DSQ_V_BLOB: return put_n(b, v->n, 4) || (v->n > 0 && dsq_buf_append(b, v->p, v->n)) ? -1 : 0;
    default: return 0;
    }
}

static int put_result(dsq_buf *b, const dsq_result *r)
{
    int rc = put_n(b, (uint64_t)r->ncols, 4);
    for (int i = 0; rc == 0 && i < r->ncols; i++)
        rc = put_str(b, r->names[i]) | put_str(b, r->decltypes[i]);
    if (rc != 0 || put_n(b, r->nrows, 8) || put_n(b, (uint64_t)r->rows_affected, 8) ||
        put_n(b, (uint64_t)r->last_insert_rowid, 8))
        return -1;
    size_t count_at = b->len, pos = 0;
    uint64_t nvalues = 0;
    dsq_value v;
    if (put_n(b, 0, 8) != 0)
        return -1;
    while (dsq_result_next(r, &pos, &v)) {
        if (put_value(b, &v) != 0)
            return -1;
        nvalues++;
    }
    le64((uint8_t *)b->data + count_at, nvalues);
    return 0;
}

static int encode_answer(const dsq_call *c, dsq_buf *b)
{
    size_t n = c->op == DSQ_OP_COMMIT ? 0 : c->nresults;
    int rc = put_n(b, n, 4);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = put_result(b, &c->results[i]);
    return rc;
}

/* A record being read: where, and whether it ran short. */
typedef struct reader {
    const uint8_t *p, *end;
    bool bad;
} reader;

static const uint8_t *take(reader *r, uint64_t n)
{
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static uint64_t take_n(reader *r, int n)
{
    const uint8_t *p = take(r, (uint64_t)n);
    return p ? get_le(p, n) : 0;
}

/* A name or declared type, owned; *s NULL for a missing one. */
static void take_str(reader *r, char **s)
{
    uint64_t n = take_n(r, 4);
    *s = NULL;
    if (n == UINT32_MAX || r->bad)
        return;
    const uint8_t *p = take(r, n);
    if (p != NULL && (*s = malloc(n + 1)) != NULL) {
        memcpy(*s, p, n);
        (*s)[n] = '\0';
    } else {
        r->bad = true;
    }
}

static void take_value(reader *r, dsq_result *res)
{
    dsq_value v = {.type = (dsq_vtype)take_n(r, 1)};
    switch (v.type) {
    case DSQ_V_NULL: break;
    case DSQ_V_INT: v.i = (int64_t)take_n(r, 8); break;
    case DSQ_V_REAL: {
        uint64_t bits = take_n(r, 8);
        memcpy(&v.d, &bits, 8);
        break;
    }
    case DSQ_V_TEXT:
    case DSQ_V_BLOB:
        v.n = (size_t)take_n(r, 4);
        v.p = (const char *)take(r, v.n);
        break;
    default: r->bad = true;
    }
    if (!r->bad && dsq_result_add_value(res, &v) != 0)
        r->bad = true;
}

static void take_result(reader *r, dsq_result *res)
{
    uint64_t ncols = take_n(r, 4);
    if (ncols > (uint64_t)(r->end - r->p) / 8) { /* (each column takes 8 bytes at least) */
        r->bad = true;
        return;
    }
    if (ncols > 0) {
        res->names = calloc(ncols, sizeof *res->names);
        res->decltypes = calloc(ncols, sizeof *res->decltypes);
        if (res->names == NULL || res->decltypes == NULL) {
            r->bad = true;
            return;
        }
        res->ncols = (int)ncols;
    }
    for (uint64_t i = 0; i < ncols && !r->bad; i++) {
        take_str(r, &res->names[i]);
        take_str(r, &res->decltypes[i]);
        if (res->names[i] == NULL)
            r->bad = true;
    }
    res->nrows = (size_t)take_n(r, 8);
    res->rows_affected = (int64_t)take_n(r, 8);
    res->last_insert_rowid = (int64_t)take_n(r, 8);
    uint64_t nvalues = take_n(r, 8);
    for (uint64_t i = 0; i < nvalues && !r->bad; i++)
        take_value(r, res);
}

/* The recorded answer into the call's results, each at LSN lsn. 0, or -1
 * (the record is damaged, or out of memory: the call failed). */
static int decode_answer(dsq_call *c, const uint8_t *p, size_t len, uint64_t lsn)
{
    reader r = {.p = p, .end = p + len};
    uint64_t n = take_n(&r, 4);
    size_t want = c->op == DSQ_OP_COMMIT ? 0 : c->op == DSQ_OP_QUERY ? 1 : c->nstmts;
    if (r.bad || n != want) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "the idempotency record of this request is damaged");
        return -1;
    }
    if (n > 0 && dsq__alloc_results(c, (size_t)n) != 0)
        return -1;
    for (size_t i = 0; i < n && !r.bad; i++) {
        take_result(&r, &c->results[i]);
        c->results[i].lsn = lsn;
    }
    if (r.bad || r.p != r.end) {
        dsq_call_free_results(c);
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "the idempotency record of this request is damaged (or out of memory)");
        return -1;
    }
    c->lsn = lsn;
    return 0;
}

/* ---- looking a key up ----------------------------------------------------------------- */

/* The lookup on db failed with rc: the call runs again once a page in
 * the object store is here (from where it was: the lookup comes first),
 * or fails. */
static void sql_failed(run_ctx *x, sqlite3 *db, int rc)
{
    if (dsq__cold(x)) {
        x->retry = true;
        return;
    }
    sqlite3 *was = x->db;
    x->db = db;
    dsq__fail_sqlite(x, rc);
    x->db = was;
}

/* The key's live record on db: 1 and its columns in st (stepped to
 * it), 0 none, -1 failed (the call, or x->retry). */
static int find(run_ctx *x, sqlite3 *db, sqlite3_stmt **st)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    uint64_t now = dsq_wall_ms(), window = x->e->cfg.idempotency_window_ms;
    o->internal = true;
    int rc = sqlite3_prepare_v2(db, "SELECT digest, lsn, answer FROM _dsq_idempotency WHERE key = ?1 AND created > ?2",
                                -1, st, NULL);
    if (rc != SQLITE_OK) {
        o->internal = false;
        if (!dsq__cold(x) && strstr(sqlite3_errmsg(db), "no such table") != NULL)
            return 0; /* no key was ever recorded here */
        sql_failed(x, db, rc);
        return -1;
    }
    sqlite3_bind_blob(*st, 1, c->idem_key, (int)c->idem_key_len, SQLITE_STATIC);
    sqlite3_bind_int64(*st, 2, now > window ? (int64_t)(now - window) : 0);
    rc = sqlite3_step(*st);
    o->internal = false;
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    sql_failed(x, db, rc);
    return -1;
}

int dsq__idem_replay(run_ctx *x, sqlite3 *db)
{
    dsq_call *c = x->c;
    if (!dsq__idem_keyed(x))
        return 0;
    if (c->op == DSQ_OP_BATCH && !c->atomic) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                  "idempotencyKey needs an atomic batch (atomic: false commits each statement on its own)");
        return 1;
    }
    if (db == NULL)
        db = x->o->db;
    sqlite3_stmt *st = NULL;
    int found = find(x, db, &st);
    if (found <= 0) {
        sqlite3_finalize(st);
        return found < 0 ? 1 : 0;
    }
    uint8_t want[DIGEST_LEN];
    if (request_digest(c, want) != 0) {
        sqlite3_finalize(st);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return 1;
    }
    const void *digest = sqlite3_column_blob(st, 0);
    if (sqlite3_column_bytes(st, 0) != DIGEST_LEN || memcmp(digest, want, DIGEST_LEN) != 0) {
        sqlite3_finalize(st);
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                  "idempotencyKey \"%.*s\" was used for a different request (keys are remembered for %llu s)",
                  (int)c->idem_key_len, c->idem_key,
                  (unsigned long long)(x->e->cfg.idempotency_window_ms / 1000));
        return 1;
    }
    uint64_t lsn = (uint64_t)sqlite3_column_int64(st, 1);
    const uint8_t *answer = sqlite3_column_blob(st, 2);
    size_t len = (size_t)sqlite3_column_bytes(st, 2);
    if (decode_answer(c, answer, len, lsn) == 0) {
        c->replayed = true;
        atomic_fetch_add(&x->e->idem_replays, 1);
    }
    sqlite3_finalize(st);
    return 1;
}

/* ---- recording one ---------------------------------------------------------------------- */

/* Run one statement of ours with the record's values bound (those not in
 * it unused); SQLITE_OK or the error. */
static int run_bound(actor_open *o, const char *sql, const dsq_call *c, const uint8_t *digest, uint64_t now,
                     uint64_t lsn, const dsq_buf *answer)
{
    sqlite3_stmt *st = NULL;
    o->internal = true;
    int rc = sqlite3_prepare_v2(o->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        int np = sqlite3_bind_parameter_count(st);
        if (np >= 5) {
            sqlite3_bind_blob(st, 1, c->idem_key, (int)c->idem_key_len, SQLITE_STATIC);
            sqlite3_bind_blob(st, 2, digest, DIGEST_LEN, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, (int64_t)lsn);
            sqlite3_bind_blob64(st, 5, answer->data ? answer->data : "", answer->len, SQLITE_STATIC);
        }
        sqlite3_bind_int64(st, np >= 5 ? 3 : 1, (int64_t)now);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    o->internal = false;
    return rc;
}

int dsq__idem_record(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (!dsq__idem_keyed(x))
        return 0;
    if (c->op != DSQ_OP_COMMIT && sqlite3_txn_state(o->db, "main") != SQLITE_TXN_WRITE)
        return 0; /* it wrote nothing: running it again answers as well */
    uint8_t digest[DIGEST_LEN];
    dsq_buf answer = DSQ_BUF_INIT;
    if (request_digest(c, digest) != 0 || encode_answer(c, &answer) != 0) {
        dsq_buf_free(&answer);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory recording the idempotency key");
        return -1;
    }
    uint64_t now = dsq_wall_ms(), window = x->e->cfg.idempotency_window_ms;
    uint64_t lsn = o->in_txn && c->op != DSQ_OP_COMMIT ? o->lsn : o->lsn + 1;
    int rc = dsq__internal_exec(o, create_sql);
    if (rc == SQLITE_OK)
        rc = run_bound(o,
                       /* more than the one record written: the table shrinks back after a burst */
                       "DELETE FROM _dsq_idempotency WHERE key IN (SELECT key FROM _dsq_idempotency "
                       "WHERE created <= ?1 ORDER BY created LIMIT 16)",
                       c, digest, now > window ? now - window : 0, lsn, &answer);
    if (rc == SQLITE_OK) /* (an expired record of the key is replaced) */
        rc = run_bound(o, "INSERT OR REPLACE INTO _dsq_idempotency VALUES (?1, ?2, ?3, ?4, ?5)", c, digest, now,
                       lsn, &answer);
    dsq_buf_free(&answer);
    if (rc != SQLITE_OK) {
        sqlite3 *was = x->db;
        x->db = NULL; /* (the actor's connection's error) */
        dsq__fail_sqlite(x, rc);
        x->db = was;
        return -1;
    }
    return 0;
}
