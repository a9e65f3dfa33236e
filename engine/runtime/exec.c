/* exec — running calls against an actor's SQLite connection (worker).
 *
 * Divisions: where a call runs; the operations; the engine's own
 * operations; the operation table; calls that wait for a page from the
 * object store; the entry point, dsq__exec.
 *
 * Each operation is one entry of a table (ops), which says how
 * dsq__exec runs it: whether it needs the database open, whether
 * cancelling stops it, whether its rows count against the request's
 * budget, and so on. The operations live where their concern does:
 * transactions in txn.c, queryStream in stream.c, CDC reads in cdcread.c;
 * the statements they run go through run.c, stmt.c and the sandbox
 * (sandbox.c); the connections they run on are conn.c's.
 *
 * Isolation. Writes are serializable: one transaction at a time, on the
 * actor's connection. Reads never wait for a writer: while a client's
 * explicit transaction is open, other clients' requests run on the last
 * commit through a second connection on a view of the store (the same
 * views time travel uses), and one that turns out to write waits for the
 * transaction to end (dsq__actor_repost). A read-only transaction
 * (beginTransaction readOnly) is such a view held across requests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/pagestore.h"

/* ---- where a call runs ------------------------------------------------------------- */

int dsq__alloc_results(dsq_call *c, size_t n)
{
    for (size_t i = 0; i < c->nresults; i++) /* a run after a cold page starts over */
        dsq__result_free(&c->results[i]);
    free(c->results);
    c->results = calloc(n ? n : 1, sizeof *c->results);
    if (c->results == NULL) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    c->nresults = n;
    return 0;
}

/* The connection a call that reads beside the open transaction, or in a
 * read-only transaction, runs on; NULL when it runs on the actor's own
 * (or it failed: c->err, or x->retry when a page is in the object store). */
static sqlite3 *view_db(run_ctx *x)
{
    dsq_call *c = x->c;
    if (x->snap != NULL)
        return x->snap->db;
    if (c->txn[0] != '\0' || !x->o->in_txn)
        return NULL;
    x->beside = true;
    return dsq__beside_db(x);
}

sqlite3 *dsq__beside_db(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (o->snap_db == NULL) {
        char err[600];
        if (dsq__view_conn(x->e, x->a, o, o->lsn, &o->snap_view, &o->snap_db, err, sizeof err) != 0) {
            if (dsq__cold(x) && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
                /* (A non-atomic batch, which cold_failed lets on.) The page
                 * it waited for to open the view did not come. */
                dsq__fail(c, c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR, "%s",
                          c->cold_msg);
            } else if (dsq__cold(x)) {
                x->retry = true;
                c->resume_off = 0;
            } else {
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
            }
            return NULL;
        }
    }
    return o->snap_db;
}

/* Run r on connection db (a view's): it only reads, and runs whole again
 * after a cold page. */
static int run_on(run_ctx *x, sqlite3 *db, const dsq_stmt_req *r, dsq_result *res)
{
    x->db = db;
    x->start_off = 0;
    x->o->on_view = true;
    int rc = dsq__run_sql(x, r, res);
    x->o->on_view = false;
    if (rc != 0 && dsq__cold(x)) {
        x->retry = true;
        x->c->resume_off = 0;
    }
    if (x->scratch)
        sqlite3_finalize(x->scratch);
    x->scratch = NULL;
    x->db = NULL;
    return rc;
}

/* ---- the operations ----------------------------------------------------------------- */

/* A read-only query on the database as it was at an LSN or a time
 * (DESIGN 3.3 asOf), through a connection on a view of the store. */
static void op_query_as_of(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (c->txn[0]) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "asOf reads a past state; it is not part of a transaction");
        return;
    }
    char err[600];
    uint64_t lsn = c->as_of_lsn;
    dsq_ps_view *v = NULL;
    sqlite3 *vdb = NULL;
    if (c->as_of == DSQ_AS_OF_TIME && dsq_ps_lsn_at(o->ps, c->as_of_time_us, &lsn, err, sizeof err) != 0) {
        if (dsq__cold(x)) { /* the log it reads was evicted: again once it is here */
            x->retry = true;
            c->resume_off = 0;
            return;
        }
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "%s", err);
        return;
    }
    int vrc = dsq__view_conn(x->e, x->a, o, lsn, &v, &vdb, err, sizeof err);
    if (vrc != 0) {
        if (dsq__cold(x)) { /* it read the log or the schema from an evicted file */
            x->retry = true;
            c->resume_off = 0;
            return;
        }
        dsq__fail(c, vrc == -1 ? DSQ_CODE_INVALID_LSN : DSQ_CODE_INTERNAL_ERROR, "%s", err);
        return;
    }
    x->db = vdb;
    x->past = true;
    if (dsq__run_sql(x, &c->stmts[0], &c->results[0]) != 0 && dsq__cold(x)) {
        x->retry = true; /* it only reads: it runs again from the start */
        c->resume_off = 0;
    }
    x->past = false;
    if (x->scratch)
        sqlite3_finalize(x->scratch);
    x->scratch = NULL;
    x->db = NULL;
    sqlite3_close(vdb);
    dsq_ps_view_close(v);
    c->results[0].lsn = c->lsn = lsn;
}

/* dosqld's own tables (_dsq_...: idempotency records, a shard's prepared
 * transactions) dropped from an export's file: they are the server's
 * bookkeeping, not the client's data, and an import refuses them. A
 * VACUUM then leaves none of their bytes in free pages. SQLITE_OK or the
 * error. */
static int drop_own_tables(sqlite3 *dst)
{
    sqlite3_stmt *st = NULL;
    char *drops = NULL;
    int rc = sqlite3_prepare_v2(dst,
                                "SELECT group_concat(printf('DROP TABLE \"%w\";', name), '') FROM sqlite_schema "
                                "WHERE type = 'table' AND name LIKE '\\_dsq\\_%' ESCAPE '\\'",
                                -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(st, 0);
        rc = text != NULL && (drops = strdup((const char *)text)) == NULL ? SQLITE_NOMEM : SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK && drops != NULL)
        rc = sqlite3_exec(dst, drops, NULL, NULL, NULL);
    if (rc == SQLITE_OK && drops != NULL)
        rc = sqlite3_exec(dst, "VACUUM", NULL, NULL, NULL);
    free(drops);
    return rc;
}

/* The database as of an LSN (or its last commit) copied page by page,
 * by SQLite's backup, from a view of the store into a plain SQLite file:
 * every page of that commit and nothing after it. */
static void op_export(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (c->txn[0]) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "an export reads a committed state; it is not part of a transaction");
        return;
    }
    if (c->export_path == NULL) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "an export needs the file to write");
        return;
    }
    uint64_t lsn = c->as_of == DSQ_AS_OF_LSN ? c->as_of_lsn : o->lsn;
    if (lsn > o->lsn) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "LSN %llu is past database %s's last commit (%llu)",
                  (unsigned long long)lsn, x->a->name, (unsigned long long)o->lsn);
        return;
    }
    char err[600];
    dsq_ps_view *v = NULL;
    sqlite3 *vdb = NULL;
    int vrc = dsq__view_conn(x->e, x->a, o, lsn, &v, &vdb, err, sizeof err);
    if (vrc != 0) {
        if (dsq__cold(x)) { /* it read from an evicted file: again once it is here */
            x->retry = true;
            return;
        }
        dsq__fail(c, vrc == -1 ? DSQ_CODE_INVALID_LSN : DSQ_CODE_INTERNAL_ERROR, "%s", err);
        return;
    }
    unlink(c->export_path);
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(c->export_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", vdb, "main") : NULL;
    if (b == NULL) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot write the export to %s: %s", c->export_path,
                  dst ? sqlite3_errmsg(dst) : "out of memory");
    } else {
        rc = sqlite3_backup_step(b, -1);
        sqlite3_backup_finish(b);
        if (rc != SQLITE_DONE) {
            if (dsq__cold(x))
                x->retry = true;
            else
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "exporting database %s: %s", x->a->name,
                          sqlite3_errstr(rc));
        } else {
            rc = drop_own_tables(dst);
            /* A plain file whatever the store's journal: no WAL beside it. */
            if (rc == SQLITE_OK)
                rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
            if (rc != SQLITE_OK)
                dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "exporting database %s: %s", x->a->name, sqlite3_errmsg(dst));
        }
    }
    sqlite3_close(dst);
    sqlite3_close(vdb);
    dsq_ps_view_close(v);
    if (c->err != 0 || x->retry)
        unlink(c->export_path);
    c->lsn = lsn;
}

/* The identifier after keyword `kw` at the start of s[0..n) (comments
 * and blanks skipped), lower-cased into w; "" when there is none. */
static void word_after(const char *s, size_t n, size_t kwlen, char *w, size_t wn)
{
    const char *end = s + n, *p = dsq__sql_skip_space(s, end) + kwlen;
    p = dsq__sql_skip_space(p, end);
    size_t k = 0;
    while (p < end && k + 1 < wn && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'))
        w[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p++ | 0x20 : *p++);
    w[k] = '\0';
}

/* Rows of the schema that name dosqld's own tables (o->internal set). */
static int own_schema_rows(actor_open *o)
{
    sqlite3_stmt *st = NULL;
    int n = -1;
    bool was = o->internal;
    o->internal = true;
    if (sqlite3_prepare_v2(o->db, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_dsq\\_%' ESCAPE '\\' "
                                  "OR tbl_name LIKE '\\_dsq\\_%' ESCAPE '\\'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    o->internal = was;
    return n;
}

static void op_import(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (c->txn[0] || o->in_txn) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "an import is a commit of its own: %s",
                  c->txn[0] ? "it is not part of a transaction" : "a transaction is open on the database; retry");
        return;
    }
    if (!(c->scope & DSQ_SCOPE_W)) {
        dsq__fail(c, DSQ_CODE_FORBIDDEN, "an import writes: the token has read scope only");
        return;
    }
    if (x->role == DSQ_ROLE_FOLLOWER) {
        dsq__fail_not_primary(x, "imports");
        return;
    }
    if (c->nstmts != 1 || dsq__alloc_results(c, 1) != 0) {
        if (c->err == 0)
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "an import takes one SQL text");
        return;
    }
    /* Into an empty database only: what is there would be mixed with it. */
    sqlite3_stmt *st = NULL;
    int objects = 0;
    o->internal = true;
    if (sqlite3_prepare_v2(o->db, "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                                  "AND name NOT LIKE '\\_dsq\\_%' ESCAPE '\\'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        objects = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    o->internal = false;
    if (objects > 0) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                  "database %s is not empty (%d tables, indexes, views or triggers): an import goes into an empty "
                  "database", x->a->name, objects);
        return;
    }
    const char *sql = c->stmts[0].sql, *end = sql + c->stmts[0].sql_len;
    if (memchr(sql, '\0', (size_t)(end - sql)) != NULL) { /* (SQLite would read up to it and no further) */
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "the import's SQL holds a NUL byte");
        return;
    }
    int own_before = own_schema_rows(o);
    if (dsq__begin_request(x) != 0)
        return;
    int64_t ran = 0;
    bool ok = true, schema_written = false;
    sqlite3_db_config(o->db, SQLITE_DBCONFIG_DEFENSIVE, 0, NULL); /* (a dump's virtual tables) */
    o->importing = true; /* (the authorizer's rules hold: no ATTACH, no other PRAGMA, no _dsq_ table) */
    while (ok && sql < end) {
        const char *tail = NULL;
        st = NULL;
        /* Where the statement ends (prepared without the authorizer: it
         * does not run), then its checks, then prepared again under the
         * authorizer's rules to run. */
        o->importing = false;
        o->internal = true;
        int rc = sqlite3_prepare_v2(o->db, sql, (int)(end - sql), &st, &tail);
        o->internal = false;
        o->importing = true;
        const char *text = sql;
        sql = tail && tail > sql ? tail : end;
        if (rc == SQLITE_OK && st != NULL) {
            sqlite3_finalize(st);
            st = NULL;
            bool skip = dsq__sql_starts_with(text, (size_t)(sql - text), "BEGIN") ||
                        dsq__sql_starts_with(text, (size_t)(sql - text), "COMMIT") ||
                        dsq__sql_starts_with(text, (size_t)(sql - text), "END");
            char w2[32] = "";
            if (dsq__sql_starts_with(text, (size_t)(sql - text), "PRAGMA"))
                word_after(text, (size_t)(sql - text), 6, w2, sizeof w2);
            if (skip || strcmp(w2, "foreign_keys") == 0)
                continue; /* (the import is one commit already) */
            if (!dsq__sql_starts_with(text, (size_t)(sql - text), "PRAGMA") ||
                strcmp(w2, "writable_schema") == 0) {
                bool refusedw = false;
                static const char *const no[] = {"ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH", "VACUUM"};
                for (size_t k = 0; k < sizeof no / sizeof no[0]; k++)
                    refusedw |= dsq__sql_starts_with(text, (size_t)(sql - text), no[k]);
                if (!refusedw)
                    rc = sqlite3_prepare_v2(o->db, text, (int)(sql - text), &st, NULL);
                else
                    rc = sqlite3_prepare_v2(o->db, "SELECT 1", -1, &st, NULL); /* (refused below, by name) */
            } else {
                rc = sqlite3_prepare_v2(o->db, "SELECT 1", -1, &st, NULL); /* (refused below, by name) */
            }
        }
        if (rc != SQLITE_OK) {
            bool denied = rc == SQLITE_AUTH && o->deny[0];
            dsq__fail(c, denied ? DSQ_CODE_FORBIDDEN : dsq_code_of_sqlite(rc, sqlite3_errmsg(o->db)),
                      "statement %lld: %s", (long long)ran, denied ? o->deny : sqlite3_errmsg(o->db));
            o->deny[0] = '\0';
            ok = false;
            break;
        }
        if (st == NULL)
            continue; /* (blank or a comment) */
        size_t tlen = (size_t)(sql - text);
        if (dsq__sql_starts_with(text, tlen, "BEGIN") || dsq__sql_starts_with(text, tlen, "COMMIT") ||
            dsq__sql_starts_with(text, tlen, "END")) {
            sqlite3_finalize(st); /* (the import is one commit already) */
            continue;
        }
        if (dsq__sql_starts_with(text, tlen, "PRAGMA")) {
            char w2[32];
            word_after(text, tlen, 6, w2, sizeof w2);
            if (strcmp(w2, "foreign_keys") == 0) {
                sqlite3_finalize(st);
                continue;
            }
            if (strcmp(w2, "writable_schema") == 0) {
                schema_written = true;
            } else {
                sqlite3_finalize(st);
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "statement %lld: PRAGMA %s is not imported (only a dump's "
                                                       "foreign_keys and writable_schema lines are)",
                          (long long)ran, w2);
                ok = false;
                break;
            }
        }
        /* dosqld's own tables stay its own (the authorizer refuses them
         * too: this names the statement). */
        bool own = false;
        for (const char *q = text; q + 5 <= sql && !own; q++)
            own = q[0] == '_' && (q[1] | 0x20) == 'd' && (q[2] | 0x20) == 's' && (q[3] | 0x20) == 'q' && q[4] == '_';
        if (own) {
            sqlite3_finalize(st);
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "statement %lld: names beginning with _dsq_ are dosqld's own",
                      (long long)ran);
            ok = false;
            break;
        }
        static const char *const refused[] = {"ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH", "VACUUM", NULL};
        const char *bad = NULL;
        for (size_t k = 0; refused[k] && bad == NULL; k++)
            if (dsq__sql_starts_with(text, tlen, refused[k]))
                bad = refused[k];
        if (bad != NULL) {
            sqlite3_finalize(st);
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "statement %lld: %s is not imported", (long long)ran, bad);
            ok = false;
            break;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        if (rc != SQLITE_DONE) {
            dsq__fail(c, dsq_code_of_sqlite(rc, sqlite3_errmsg(o->db)), "statement %lld: %s", (long long)ran,
                      sqlite3_errmsg(o->db));
            ok = false;
        }
        sqlite3_finalize(st);
        ran++;
    }
    o->importing = false;
    o->internal = true; /* (our own statements from here) */
    if (ok && schema_written && own_schema_rows(o) != own_before) {
        /* (a schema row renamed or written to one of dosqld's own tables) */
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "the import's schema rows name dosqld's own tables (_dsq_...)");
        ok = false;
    }
    if (ok && schema_written) {
        /* The schema's rows were written directly (a dump's virtual
         * tables): its version moves on, so that every connection reads
         * the schema again, this one included. */
        sqlite3_stmt *sv = NULL;
        int64_t ver = -1;
        if (sqlite3_prepare_v2(o->db, "PRAGMA schema_version", -1, &sv, NULL) == SQLITE_OK &&
            sqlite3_step(sv) == SQLITE_ROW)
            ver = sqlite3_column_int64(sv, 0);
        sqlite3_finalize(sv);
        char bump[80];
        snprintf(bump, sizeof bump, "PRAGMA schema_version = %lld", (long long)ver + 1);
        if (ver < 0 || sqlite3_exec(o->db, bump, NULL, NULL, NULL) != SQLITE_OK) {
            dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "the import's schema could not be read again: %s",
                      sqlite3_errmsg(o->db));
            ok = false;
        }
    }
    sqlite3_exec(o->db, "PRAGMA writable_schema = OFF", NULL, NULL, NULL);
    o->internal = false;
    sqlite3_db_config(o->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (ok && ran == 0) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "the import holds no statement");
        ok = false;
    }
    if (dsq__end_request(x, ok) == 0 && ok) {
        c->results[0].rows_affected = ran;
        c->results[0].lsn = o->lsn;
        c->lsn = o->lsn;
    }
}

static void op_query(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (dsq__alloc_results(c, 1) != 0)
        return;
    if (c->min_lsn > o->lsn) { /* a bookmark this copy has not reached */
        x->park_lsn = true;
        return;
    }
    if (c->as_of != DSQ_AS_OF_NONE) {
        op_query_as_of(x);
        return;
    }
    if (dsq__check_txn(x) != 0)
        return;
    const dsq_stmt_req *r = &c->stmts[0];
    dsq_result *res = &c->results[0];
    sqlite3 *vdb = view_db(x);
    if (c->err == 0 && !x->retry && dsq__idem_replay(x, vdb) != 0)
        return; /* its first answer, or it failed */
    if (vdb != NULL || c->err != 0 || x->retry) {
        if (vdb != NULL)
            run_on(x, vdb, r, res);
        res->lsn = c->lsn = x->snap ? x->snap->lsn : o->lsn;
        return;
    }
    if (!o->in_txn && dsq__sql_starts_with(r->sql, r->sql_len, "VACUUM")) {
        /* SQLite runs VACUUM only outside a transaction: so it must be the
         * request's only statement; the LSN then advances in a
         * transaction of its own. */
        if (!dsq__sql_lone_statement(r->sql, r->sql_len)) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "VACUUM must be the only statement of its request");
        } else if (dsq__run_sql(x, r, res) == 0) {
            dsq__took_commit(x, NULL, 0); /* VACUUM commits on its own */
        } else if (dsq__cold(x)) {
            x->retry = true;
            c->resume_off = 0;
        }
    } else if (dsq__begin_request(x) == 0) {
        x->start_off = o->in_txn ? c->resume_off : 0;
        int rc = dsq__run_sql(x, r, res);
        dsq__end_request(x, rc == 0);
    }
    res->lsn = c->lsn = o->lsn;
}

/* A non-atomic batch's statement failed: the failure goes into its
 * result (c->code and c->msg), and the call goes on. */
static void keep_failure(dsq_call *c, dsq_result *res)
{
    dsq__result_free(res);
    res->code = c->code;
    res->error = strdup(c->msg);
    c->err = 0;
    c->msg[0] = '\0';
}

/* A batch on a view's connection (view_db): it only reads, and atomic or
 * not differ only in how a failure ends it. After a cold page it goes on
 * with statement `from` (the view is the same: nothing ends a transaction
 * while a call waits for a page); a statement that writes sends it back
 * to run whole once the transaction ends. */
static void batch_on(run_ctx *x, sqlite3 *db, size_t from)
{
    dsq_call *c = x->c;
    uint64_t lsn = x->snap ? x->snap->lsn : x->o->lsn;
    c->resume_stmt = 0;
    x->bytes_before = 0;
    for (size_t i = 0; i < from; i++)
        x->bytes_before += c->results[i].rows.len;
    for (size_t i = from; i < c->nstmts; i++) {
        dsq_result *res = &c->results[i];
        if (i == from && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
            /* (Non-atomic: cold_failed ended an atomic one.) Its page did
             * not come: this statement fails, the rest run. */
            res->code = c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR;
            res->error = strdup(c->cold_msg);
            res->lsn = lsn;
            continue;
        }
        int rc = run_on(x, db, &c->stmts[i], res);
        if (x->park)
            return;
        if (x->retry) {
            c->resume_stmt = i;
            return;
        }
        if (rc != 0 && c->atomic) {
            char first[sizeof c->msg];
            snprintf(first, sizeof first, "%s", c->msg);
            snprintf(c->msg, sizeof c->msg, "statement %zu: %.470s", i, first);
            return;
        }
        if (rc != 0)
            keep_failure(c, res);
        x->bytes_before += res->rows.len;
        res->lsn = lsn;
    }
    c->lsn = lsn;
}

static void op_batch(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    /* After a cold page it goes on with statement resume_stmt: the ones
     * before it are done (kept), except in an atomic batch outside a
     * transaction, which was undone whole. */
    size_t from = c->resume_stmt;
    if (c->atomic && !o->in_txn)
        from = 0;
    if (c->results == NULL || from == 0) {
        if (dsq__alloc_results(c, c->nstmts) != 0)
            return;
    } else {
        for (size_t i = from; i < c->nresults; i++) {
            dsq__result_free(&c->results[i]);
            memset(&c->results[i], 0, sizeof c->results[i]);
        }
    }
    if (dsq__check_txn(x) != 0)
        return;
    sqlite3 *vdb = view_db(x);
    if (c->err == 0 && !x->retry && from == 0 && dsq__idem_replay(x, vdb) != 0)
        return; /* its first answer, or it failed */
    if (vdb != NULL || c->err != 0 || x->retry) {
        if (vdb != NULL)
            batch_on(x, vdb, from);
        return;
    }
    for (size_t i = 0; i < from; i++)
        x->bytes_before += c->results[i].rows.len;
    if (c->atomic) {
        if (dsq__begin_request(x) != 0)
            return;
        bool ok = true;
        for (size_t i = from; i < c->nstmts && ok; i++) {
            x->start_off = o->in_txn && i == from ? c->resume_off : 0;
            if (dsq__run_sql(x, &c->stmts[i], &c->results[i]) != 0) {
                c->resume_stmt = i;
                char first[sizeof c->msg];
                snprintf(first, sizeof first, "%s", c->msg);
                snprintf(c->msg, sizeof c->msg, "statement %zu: %.470s", i, first);
                ok = false;
            }
            x->bytes_before += c->results[i].rows.len;
        }
        dsq__end_request(x, ok);
        if (x->retry && !o->in_txn)
            c->resume_stmt = 0;
    } else {
        /* Each statement commits (or fails) on its own; a failure is kept
         * in its result and the batch goes on. */
        for (size_t i = from; i < c->nstmts; i++) {
            dsq_result *res = &c->results[i];
            if (i == from && c->cold_retry && c->cold_how != DSQ_WARM_READY) {
                /* Its page did not come: this statement fails, the rest run. */
                res->code = c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR;
                res->error = strdup(c->cold_msg);
                res->lsn = o->lsn;
                continue;
            }
            if (c->txn[0] && !o->in_txn) {
                res->code = DSQ_CODE_TRANSACTION_NOT_FOUND;
                res->error = strdup("the transaction was rolled back by an earlier statement");
                continue;
            }
            int rc = dsq__begin_request(x);
            if (rc == 0) {
                x->start_off = o->in_txn && i == from ? c->resume_off : 0;
                rc = dsq__run_sql(x, &c->stmts[i], res);
                int kept = dsq__end_request(x, rc == 0); /* commit failures land in c->msg */
                if (rc == 0)
                    rc = kept;
            }
            if (x->retry) {
                c->resume_stmt = i;
                return;
            }
            if (rc != 0)
                keep_failure(c, res);
            x->bytes_before += res->rows.len;
            res->lsn = o->lsn;
        }
    }
    c->lsn = o->lsn;
    for (size_t i = 0; i < c->nresults; i++)
        if (c->atomic)
            c->results[i].lsn = o->lsn;
}

/* The last commit's LSN (a read-only transaction's, when the call names
 * one) and the time. */
static void op_ping(run_ctx *x)
{
    if (dsq__check_txn(x) != 0)
        return;
    x->c->lsn = x->snap ? x->snap->lsn : x->o->lsn; /* (a read-only transaction's: its commit) */
    x->c->time_ms = dsq_wall_ms();
}

static void op_schema(run_ctx *x)
{
    dsq_call *c = x->c;
    char err[256];
    sqlite3 *vdb = dsq__check_txn(x) == 0 ? view_db(x) : NULL;
    if (c->err == 0 && !x->retry && (c->schema = dsq__schema(x->o, vdb ? vdb : x->o->db, err, sizeof err)) == NULL)
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "%s", err);
    c->lsn = x->snap ? x->snap->lsn : x->o->lsn;
}

static void op_stats(run_ctx *x)
{
    dsq_call *c = x->c;
    /* Beside another client's transaction: the last commit's size. */
    sqlite3 *vdb = c->txn[0] == '\0' ? view_db(x) : NULL;
    if (c->err == 0 && !x->retry && (c->stats = dsq__stats(x->e, x->a, vdb ? vdb : x->o->db)) == NULL)
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
    c->lsn = x->o->lsn;
}

/* (On the system actor.) */
static void op_list(run_ctx *x)
{
    if (dsq__store_list(x->e->data_dir, &x->c->names, &x->c->nnames) != 0)
        dsq__fail(x->c, DSQ_CODE_INTERNAL_ERROR, "cannot list databases");
}

/* Close the database and delete its files; its CDC subscribers end. */
static void op_drop(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    char err[512];
    if (c->txn[0]) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "dropping a database is not part of a transaction");
        return;
    }
    dsq__actor_close(a);
    x->o = NULL; /* (freed) */
    int rc = dsq__store_drop(x->e, a->name, err, sizeof err);
    if (rc == 1) {
        c->not_found = true;
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "no such database: %s", a->name);
    } else if (rc == 2) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "cannot drop %s: %s", a->name, err);
    } else if (rc != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot drop %s: %s", a->name, err);
    } else {
        if (a->life != ACTOR_UNOPENED) /* a new database of that name starts from nothing */
            dsq__actor_life(a, ACTOR_UNOPENED);
        dsq_feed_dropped(&x->e->feeds, atomic_load(&a->feed)); /* its subscribers end */
    }
}

/* An operation the table does not have; it fails once the database is
 * open. */
static void op_unknown(run_ctx *x)
{
    dsq__fail(x->c, DSQ_CODE_INVALID_REQUEST, "unknown operation %d", op_of(x->c));
}

/* ---- the engine's own operations ---------------------------------------------------- */

/* DSQ__OP_HIBERNATE: close the database unless a transaction or a stream
 * holds it. */
static void op_hibernate(run_ctx *x)
{
    dsq_actor *a = x->a;
    pthread_mutex_lock(&a->mu);
    bool held = a->txn[0] != '\0' || a->stream_id != 0 || a->nsnaps > 0 || a->nsstreams > 0;
    pthread_mutex_unlock(&a->mu);
    if (!held) {
        dsq__checkpoint_before_close(a);
        dsq__actor_close(a);
    }
}

/* DSQ__OP_SHUTDOWN: roll back, close, and refuse every call that follows. */
static void op_shutdown(run_ctx *x)
{
    dsq_actor *a = x->a;
    if (a->life == ACTOR_SHUT)
        return;
    if (x->o) {
        if (x->o->stream_stmt)
            dsq__stream_finish(x);
        if (x->o->in_txn) {
            dsq__internal_exec(x->o, "ROLLBACK");
            dsq__end_txn(x);
        }
        dsq__checkpoint_before_close(a);
        dsq__actor_close(a);
    }
    dsq__actor_life(a, ACTOR_SHUT);
}

/* DSQ__OP_HEAP_TRIM (the system actor). */
static void op_heap_trim(run_ctx *x) { dsq__heap_trim(x->e); }

/* ---- the operation table ------------------------------------------------------------- */

/* What dsq__exec needs to know of an operation. */
typedef struct exec_op {
    void (*run)(run_ctx *x);       /* the operation */
    void (*run_files)(run_ctx *x); /* instead, when the call names another database (c->target_db:
                                      the system actor reads that one's log files) */
    bool own;          /* the engine's own (engine_int.h): none of the checks; completed, not
                          replied to through the output gate */
    bool open;         /* it runs on the actor's database, opened first */
    bool cancellable;  /* dsq_engine_cancel stops it (before it starts, or through the progress
                          handler) */
    bool budgeted;     /* its rows count against the request's max_result_bytes (c->budget) */
    bool retry_cold;   /* it only reads, and leaves it to dsq__exec to run it again when it
                          failed on a page that is in the object store */
    bool streams;      /* it answers in chunks (c->chunk, c->more) */
    bool by_statement; /* unless atomic, its statements fail one by one: a page that did not
                          come fails only the statement that waited for it (op_batch) */
    bool ungated;      /* its reply leaves at once, not through the output gate (what it
                          appended is synced behind it) */
} exec_op;

/* Indexed by operation; the engine's own start at 100 (the entries
 * between are empty). */
static const exec_op ops[] = {
    [DSQ_OP_QUERY] = {.run = op_query, .open = true, .cancellable = true, .budgeted = true},
    [DSQ_OP_BATCH] = {.run = op_batch, .open = true, .cancellable = true, .budgeted = true,
                      .by_statement = true},
    [DSQ_OP_STREAM] = {.run = dsq__op_stream, .open = true, .cancellable = true, .streams = true},
    [DSQ_OP_BEGIN] = {.run = dsq__op_begin, .open = true, .cancellable = true},
    [DSQ_OP_COMMIT] = {.run = dsq__op_commit, .open = true},
    [DSQ_OP_ROLLBACK] = {.run = dsq__op_rollback, .open = true},
    [DSQ_OP_SCHEMA] = {.run = op_schema, .open = true, .cancellable = true, .retry_cold = true},
    [DSQ_OP_STATS] = {.run = op_stats, .open = true, .retry_cold = true},
    [DSQ_OP_PING] = {.run = op_ping, .open = true, .retry_cold = true},
    [DSQ_OP_DROP] = {.run = op_drop},
    [DSQ_OP_LIST] = {.run = op_list},
    [DSQ_OP_APPLY] = {.run = dsq__op_apply, .open = true, .ungated = true},
    [DSQ_OP_LOG_READ] = {.run = dsq__op_log_read, .open = true, .retry_cold = true, .ungated = true},
    [DSQ_OP_TRUNCATE] = {.run = dsq__op_truncate, .open = true, .ungated = true},
    [DSQ_OP_RESET] = {.run = dsq__op_reset, .open = true, .ungated = true},
    [DSQ_OP_REBUILD] = {.run = dsq__op_rebuild, .open = true, .ungated = true},
    [DSQ_OP_CDC_READ] = {.run = dsq__op_cdc_read, .run_files = dsq__op_cdc_read_files, .open = true},
    [DSQ_OP_EXPORT] = {.run = op_export, .open = true},
    [DSQ_OP_IMPORT] = {.run = op_import, .open = true},
    [DSQ__OP_HIBERNATE] = {.run = op_hibernate, .own = true},
    [DSQ__OP_TXN_EXPIRE] = {.run = dsq__op_txn_expire, .own = true},
    [DSQ__OP_STREAM_END] = {.run = dsq__op_stream_end, .own = true},
    [DSQ__OP_SHUTDOWN] = {.run = op_shutdown, .own = true},
    [DSQ__OP_HEAP_TRIM] = {.run = op_heap_trim, .own = true},
};

/* Operations no entry has: in the engine's own range one does nothing;
 * any other fails once the database is open. */
static const exec_op own_unknown = {.own = true};
static const exec_op unknown = {.run = op_unknown, .open = true};

static const exec_op *op_for(const dsq_call *c)
{
    int op = op_of(c);
    if (op >= 0 && (size_t)op < sizeof ops / sizeof ops[0] && ops[op].run != NULL)
        return &ops[op];
    return op >= DSQ__OP_HIBERNATE ? &own_unknown : &unknown;
}

bool dsq__cancellable(const dsq_call *c) { return op_for(c)->cancellable; }

/* ---- calls that wait for a page from the object store ------------------------------------ */

/* The running call (or the stream) ended: the chunks it waited for may
 * leave the warm cache again. */
void dsq__pins_release(dsq_engine *e, dsq_actor *a)
{
    for (size_t i = 0; i < a->npins; i++)
        dsq_warm_release(e->warm, a->pins[i]);
    free(a->pins);
    a->pins = NULL;
    a->npins = a->pins_cap = 0;
}

typedef struct cold_wait {
    dsq_engine *e;
    dsq_call *c;
} cold_wait;

static void cold_back(void *ud, int how, const char *msg)
{
    cold_wait *w = ud;
    dsq_call *c = w->c;
    dsq_engine *e = w->e;
    free(w);
    c->cold_how = how;
    snprintf(c->cold_msg, sizeof c->cold_msg, "database %.40s: %.200s", c->db, msg);
    dsq__actor_cold_back(e, c->actor, c);
}

/* Set the call aside until chunk k is in the warm cache; the actor runs
 * nothing else meanwhile, and its worker goes on with other actors. */
static void cold_park(run_ctx *x, const exec_op *op, dsq_warm_chunk *k)
{
    dsq_engine *e = x->e;
    dsq_actor *a = x->a;
    dsq_call *c = x->c;
    cold_wait *w = malloc(sizeof *w);
    if (a->npins == a->pins_cap) {
        size_t cap = a->pins_cap ? a->pins_cap * 2 : 8;
        dsq_warm_chunk **p = realloc(a->pins, cap * sizeof *p);
        if (p != NULL) {
            a->pins = p;
            a->pins_cap = cap;
        }
    }
    if (w == NULL || a->npins == a->pins_cap) {
        free(w);
        dsq_warm_release(e->warm, k);
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        if (op->budgeted)
            dsq__budget_settle(c);
        dsq__reply(e, a, c);
        return;
    }
    *w = (cold_wait){.e = e, .c = c};
    a->pins[a->npins++] = k; /* until the call ends */
    c->err = 0;
    c->msg[0] = '\0';
    c->cold_retry = true;
    c->cold_how = DSQ_WARM_READY;
    pthread_mutex_lock(&a->mu);
    a->cold_wait = true;
    pthread_mutex_unlock(&a->mu);
    dsq_warm_wait(e->warm, k, cold_back, w);
}

/* A second run whose page did not come (timeout, or the store failed):
 * the call fails with why; 1 when so. A batch of independent statements
 * fails only that statement (op_batch); a stream ends. */
static int cold_failed(run_ctx *x, const exec_op *op)
{
    dsq_call *c = x->c;
    if (!c->cold_retry || c->cold_how == DSQ_WARM_READY || (op->by_statement && !c->atomic && x->a->open != NULL))
        return 0;
    dsq__fail(c, c->cold_how == DSQ_WARM_TIMEOUT ? DSQ_CODE_TIMEOUT : DSQ_CODE_INTERNAL_ERROR, "%s", c->cold_msg);
    if (op->streams)
        dsq__stream_abandon(x);
    c->cold_retry = false;
    return 1;
}

/* After a run, with an object store behind the disk (e->warm): a call
 * that must wait for a page is set aside (true), and the chunks the
 * actor's calls waited for go once nothing holds them. */
static bool cold_settle(run_ctx *x, const exec_op *op)
{
    dsq_engine *e = x->e;
    dsq_actor *a = x->a;
    dsq_warm_chunk *k = dsq_cold_miss_take();
    if (k != NULL && x->retry) {
        cold_park(x, op, k);
        return true;
    }
    if (k != NULL)
        dsq_warm_release(e->warm, k);
    pthread_mutex_lock(&a->mu);
    bool other_waits = a->cold_wait; /* (a cancelled call ran while another waits for its page) */
    pthread_mutex_unlock(&a->mu);
    if (a->npins > 0 && !other_waits && (a->open == NULL || (a->open->stream_stmt == NULL && a->nsstreams == 0)))
        dsq__pins_release(e, a);
    return false;
}

/* ---- the entry point ---------------------------------------------------------------- */

/* A call that fails before it runs: the server shuts down, the call
 * waited too long for another client's transaction, or it was cancelled.
 * True when so. */
static bool refused(run_ctx *x, const exec_op *op, bool shut)
{
    dsq_call *c = x->c;
    if (shut) {
        dsq__fail(c, DSQ_CODE_RESOURCE_EXHAUSTED, "the server is shutting down");
    } else if ((op->open || c->op == DSQ_OP_DROP) && x->role == DSQ_ROLE_ELSEWHERE && c->op != DSQ_OP_RESET) {
        /* (a copy taken out of its set is reset there: its files go) */
        dsq__fail_not_primary(x, "calls");
    } else if (c->op == DSQ_OP_DROP && x->role != DSQ_ROLE_ALONE) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                  "database %s has copies on several nodes: dropping it is not supported yet", x->a->name);
    } else if (x->role == DSQ_ROLE_FOLLOWER && c->state == DSQ__CALL_NEW && c->txn[0] == '\0' && !c->replica_ok &&
               (c->op == DSQ_OP_BATCH || c->op == DSQ_OP_STREAM ||
                ((c->op == DSQ_OP_QUERY || c->op == DSQ_OP_EXPORT) && c->as_of == DSQ_AS_OF_NONE))) {
        /* A read of the newest state is the primary's to answer, unless the
         * client takes a follower's (time travel and read-only transactions
         * read a state they name). */
        dsq__fail_not_primary(x, "reads of the newest state unless asked with consistency \"replica\"");
    } else if (c->wait_expired && c->wait_lsn) {
        dsq__fail(c, DSQ_CODE_TIMEOUT, "it waited %llu ms for this copy of %s to reach LSN %llu (minLSN); it is at %llu",
                  (unsigned long long)(dsq_now_ms() - c->wait_since_ms), x->a->name, (unsigned long long)c->min_lsn,
                  (unsigned long long)x->a->lsn_seen);
    } else if (c->wait_expired) {
        dsq__fail(c, DSQ_CODE_TIMEOUT,
                  "it waited %llu ms for another client's transaction to end (write_wait_timeout)",
                  (unsigned long long)(dsq_now_ms() - (c->wait_since_ms ? c->wait_since_ms : c->posted_ms)));
    } else if (c->state == DSQ__CALL_NEW && op->cancellable && dsq__cancelled(c)) {
        dsq__fail(c, DSQ_CODE_TIMEOUT, "the request was cancelled");
        if (op->streams) {
            dsq__alloc_results(c, 1);
            c->more = false;
        }
    } else {
        return false;
    }
    return true;
}

/* Run the operation on the actor's open database, within query_timeout. */
static void run_open(run_ctx *x, const exec_op *op)
{
    dsq_call *c = x->c;
    x->o = x->a->open;
    x->o->role = x->role;
    x->o->deadline_ns = dsq_now_ns() + x->e->cfg.query_timeout_ms * 1000000u;
    x->o->running = c;
    if (!op->budgeted || dsq__budget_spent(x) == 0)
        op->run(x);
    if (x->o == NULL) /* the operation closed the database (DSQ_OP_TRUNCATE) */
        return;
    x->o->deadline_ns = 0;
    x->o->running = NULL;
    if (c->err != 0 && dsq__cold(x) && op->retry_cold)
        x->retry = true; /* it only reads */
    dsq__txn_touch(x);
}

/* Run the operation where it runs: on another database's files, without
 * the database, or on it once it is open. */
static void dispatch(run_ctx *x, const exec_op *op)
{
    dsq_call *c = x->c;
    if (op->run_files != NULL && c->target_db != NULL) {
        if (cold_failed(x, op) == 0) /* (else its log chunk did not come: failed) */
            op->run_files(x);
    } else if (!op->open) {
        op->run(x);
    } else if (cold_failed(x, op) == 0 && dsq__actor_open(x->e, x->a, c) == 0) {
        run_open(x, op);
    } else if (x->a->open == NULL && dsq__cold(x)) {
        x->retry = true; /* opening read a page that is in the object store */
    } else if (op->streams) {
        c->more = false;
    }
}

/* The call is done: its results are encoded (a stream's chunk handed
 * over) and the reply goes, through the output gate. */
static void reply(run_ctx *x, const exec_op *op)
{
    dsq_call *c = x->c;
    c->cold_retry = false;
    if (op->budgeted)
        dsq__budget_settle(c);
    if (op->streams) {
        if (c->err != 0)
            c->more = false;
        if (c->chunk)
            c->chunk(c);
    } else if (c->encode) {
        c->encode(c);
    }
    if (op->ungated) {
        dsq__complete(x->e, c);
        if (x->a->open != NULL)
            dsq__gate_kick(x->e, &x->a->open->gate);
        return;
    }
    dsq__reply(x->e, x->a, c);
}

void dsq__exec(dsq_engine *e, dsq_actor *a, dsq_call *c)
{
    const exec_op *op = op_for(c);
    run_ctx x = {.e = e, .a = a, .o = a->open, .c = c};
    c->err = 0;
    c->not_found = false;
    c->replayed = false;
    c->msg[0] = '\0';
    c->wait_writer = false;
    if (e->warm != NULL)
        dsq_cold_miss_clear(&e->cold_src);
    if (op->own) {
        if (op->run != NULL)
            op->run(&x);
        dsq__complete(e, c);
        return;
    }
    DSQ_ASSERT((a->open != NULL) == (a->life == ACTOR_OPEN));
    bool shut = a->life == ACTOR_SHUT; /* (its own worker writes it) */
    if (a->open && dsq__gate_failed(&a->open->gate)) {
        /* An fsync failed: start again from what is durable. */
        if (a->open->in_txn) {
            x.o = a->open;
            dsq__end_txn(&x);
        }
        dsq__actor_close(a);
        x.o = NULL;
    }
    c->ran_as_primary = false;
    /* (a read of another database's log files, by the system actor, opens
     * nothing here: the system actor's own placement does not matter) */
    bool files = op->run_files != NULL && c->target_db != NULL;
    if ((op->open && !files) || c->op == DSQ_OP_DROP) {
        /* The generation first, then the role: a role read as primary
         * before a step-down comes with the generation before it. */
        uint64_t gen = atomic_load(&a->repl_gen);
        dsq__repl_role(&x);
        c->ran_as_primary = x.role == DSQ_ROLE_PRIMARY;
        c->repl_gen = gen;
    }
    if (!refused(&x, op, shut))
        dispatch(&x, op);
    if (a->open != NULL && (c->op == DSQ_OP_APPLY || c->internal_tables))
        a->open->prepared_known = false; /* (it may have changed _dsq_prepared) */
    if (e->warm != NULL && cold_settle(&x, op))
        return; /* it waits for a page */
    if (a->open != NULL && a->open->lsn != a->lsn_seen) { /* (read by calls that wait for an LSN; the
                                                               operation may have closed the database) */
        pthread_mutex_lock(&a->mu);
        a->lsn_seen = a->open->lsn;
        pthread_mutex_unlock(&a->mu);
    }
    if (x.park_lsn) { /* it waits, in its place, for this copy to reach its LSN */
        c->err = 0;
        c->msg[0] = '\0';
        c->cold_retry = false;
        c->wait_lsn = true;
        dsq__actor_repost(e, a, c);
        return;
    }
    if (x.park) { /* it writes: it waits, in its place, for the open transaction to end */
        c->err = 0;
        c->msg[0] = '\0';
        c->cold_retry = false; /* it runs whole again: no page it waited for is owed to it */
        c->wait_writer = true;
        dsq__actor_repost(e, a, c);
        return;
    }
    reply(&x, op);
}
