/* shell — dosql's statement loop, independent of where input comes from.
 *
 * Divisions: errors; statements (SQL, BEGIN, COMMIT, ROLLBACK); input
 * lines; dot commands (.tables, .schema, .timing, .help, .quit).
 *
 * dosqld refuses BEGIN/COMMIT/ROLLBACK inside SQL: a transaction is
 * opened with the JSON-RPC method beginTransaction, and every statement
 * in it (getSchema included) carries its transactionId. While one is
 * open, a message without the id would wait behind the shell's own
 * transaction, so every call here passes sh->txid. */
#include "client/shell.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/csv.h"
#include "client/sql.h"
#include "common/util.h"
#include "server/dump.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <unistd.h>

/* ---- errors ------------------------------------------------------------------------ */

/* Print err as "Error: CODE: message" on stderr and record the exit
 * status (3 when the server could not be reached, else 1). Returns -1 when
 * the shell stops at errors, else 0. */
static int report(dosql_shell *sh, int rc, const dosql_err *err)
{
    fflush(sh->out);
    if (err->code[0] != '\0')
        fprintf(stderr, "Error: %s: %s\n", err->code, err->message);
    else
        fprintf(stderr, "Error: %s\n", err->message);
    sh->status = rc == DOSQL_EUNREACHABLE ? 3 : 1;
    return sh->bail ? -1 : 0;
}

/* The transaction is gone on the server: forget it. */
static void txn_forget(dosql_shell *sh)
{
    free(sh->txid);
    sh->txid = NULL;
}

/* ---- the names Tab completes ------------------------------------------------------- */

/* Forget the schema Tab completes from: the next Tab fetches it anew. */
static void names_forget(dosql_shell *sh)
{
    json_decref(sh->schema);
    free(sh->tables);
    free(sh->columns);
    sh->schema = NULL;
    sh->tables = NULL;
    sh->columns = NULL;
    sh->names.tables = NULL;
    sh->names.ntables = 0;
}

/* Complete from schema (a getSchema answer; a reference is taken): its
 * tables and views with their columns. */
static void names_take(dosql_shell *sh, json_t *schema)
{
    names_forget(sh);
    const json_t *lists[2] = {json_object_get(schema, "tables"), json_object_get(schema, "views")};
    size_t ntables = 0, ncolumns = 0, i, c;
    const json_t *o, *col;
    for (int l = 0; l < 2; l++)
        json_array_foreach(lists[l], i, o) {
            ntables++;
            ncolumns += json_array_size(json_object_get(o, "columns"));
        }
    sh->tables = calloc(ntables ? ntables : 1, sizeof *sh->tables);
    sh->columns = calloc(ncolumns ? ncolumns : 1, sizeof *sh->columns);
    if (sh->tables == NULL || sh->columns == NULL) {
        names_forget(sh);
        return;
    }
    size_t t = 0, k = 0;
    for (int l = 0; l < 2; l++)
        json_array_foreach(lists[l], i, o) {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (name == NULL)
                continue;
            dosql_table_names *tn = &sh->tables[t++];
            tn->name = name;
            tn->columns = &sh->columns[k];
            json_array_foreach(json_object_get(o, "columns"), c, col) {
                const char *cn = json_string_value(json_object_get(col, "name"));
                if (cn != NULL && k < ncolumns) {
                    sh->columns[k++] = cn;
                    tn->ncolumns++;
                }
            }
        }
    sh->schema = json_incref(schema);
    sh->names.tables = sh->tables;
    sh->names.ntables = t;
}

/* SQLite's keywords, once (sqlite3_keyword_name gives them unterminated). */
static void keywords_make(dosql_shell *sh)
{
    int n = sqlite3_keyword_count();
    sh->keywords = calloc((size_t)n + 1, sizeof *sh->keywords);
    if (sh->keywords == NULL)
        return;
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *z;
        int len;
        if (sqlite3_keyword_name(i, &z, &len) == SQLITE_OK && (sh->keywords[k] = strndup(z, (size_t)len)) != NULL)
            k++;
    }
    sh->names.keywords = (const char *const *)sh->keywords;
    sh->names.nkeywords = (size_t)k;
}

static int get_schema(dosql_shell *sh, json_t **schema, dosql_err *err);

const dosql_names *dosql_shell_names(dosql_shell *sh)
{
    if (sh->keywords == NULL)
        keywords_make(sh);
    if (sh->schema == NULL) {
        json_t *schema;
        dosql_err err;
        if (get_schema(sh, &schema, &err) == 0) {
            names_take(sh, schema);
            json_decref(schema);
        }
    }
    return &sh->names;
}

/* ---- statements -------------------------------------------------------------------- */

/* beginTransaction; keeps the id it returns. */
static int run_begin(dosql_shell *sh, bool immediate, dosql_err *err)
{
    if (sh->txid != NULL)
        return dosql_err_set(err, "INVALID_REQUEST",
                             "a transaction is already open: COMMIT or ROLLBACK it first");
    json_t *params = json_pack("{s:s}", "mode", immediate ? "immediate" : "deferred");
    json_t *res;
    int rc = dosql_http_rpc(sh->http, "beginTransaction", params, &res, err);
    if (rc != 0)
        return rc;
    const char *id = json_string_value(json_object_get(res, "transactionId"));
    if (id == NULL || (sh->txid = strdup(id)) == NULL) {
        json_decref(res);
        return dosql_err_set(err, "UNKNOWN", "beginTransaction returned no transactionId");
    }
    json_decref(res);
    if (sh->mode == DOSQL_MODE_TABLE)
        fputs("BEGIN\n", sh->out);
    return 0;
}

/* commit or rollback of the open transaction. */
static int run_end(dosql_shell *sh, bool commit, dosql_err *err)
{
    if (sh->txid == NULL)
        return dosql_err_set(err, "TRANSACTION_NOT_FOUND", "no transaction is open");
    json_t *params = json_pack("{s:s}", "transactionId", sh->txid);
    json_t *res;
    int rc = dosql_http_rpc(sh->http, commit ? "commit" : "rollback", params, &res, err);
    if (rc == DOSQL_EFAIL && strcmp(err->code, "TRANSACTION_NOT_FOUND") == 0)
        txn_forget(sh);
    if (rc != 0)
        return rc;
    json_decref(res);
    txn_forget(sh);
    if (sh->mode == DOSQL_MODE_TABLE)
        fputs(commit ? "COMMIT\n" : "ROLLBACK\n", sh->out);
    return 0;
}

/* Any other statement: /query, or JSON-RPC query inside a transaction. */
static int run_sql(dosql_shell *sh, const char *sql, size_t len, dosql_err *err)
{
    json_t *res;
    int rc = dosql_http_query(sh->http, sql, len, sh->txid, &res, err);
    if (rc == DOSQL_EFAIL && sh->txid != NULL && strcmp(err->code, "TRANSACTION_NOT_FOUND") == 0)
        txn_forget(sh);
    if (rc != 0)
        return rc;
    rc = dosql_format_result(sh->out, sh->mode, sh->headers, res);
    json_decref(res);
    if (rc != 0)
        return dosql_err_set(err, "UNKNOWN", "the server's answer is not a QueryResult");
    return 0;
}

/* Run the statement s[0..n) (its ';' included, if any) and print the
 * outcome. Returns 0, or -1 when the shell must stop. */
static int statement(dosql_shell *sh, const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)*s))
        s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    dosql_stmt_kind kind = dosql_sql_classify(s, n);
    if (kind == DOSQL_STMT_EMPTY)
        return 0;
    dosql_err err;
    uint64_t t0 = dsq_now_ns();
    int rc;
    switch (kind) {
    case DOSQL_STMT_BEGIN: rc = run_begin(sh, false, &err); break;
    case DOSQL_STMT_BEGIN_IMMEDIATE: rc = run_begin(sh, true, &err); break;
    case DOSQL_STMT_COMMIT: rc = run_end(sh, true, &err); break;
    case DOSQL_STMT_ROLLBACK: rc = run_end(sh, false, &err); break;
    default: rc = run_sql(sh, s, n, &err); break;
    }
    if (sh->schema != NULL && dosql_sql_may_change_schema(s, n))
        names_forget(sh);
    if (sh->timing && rc != DOSQL_EUNREACHABLE)
        fprintf(sh->out, "Time: %.3f ms\n", (double)(dsq_now_ns() - t0) / 1e6);
    fflush(sh->out);
    return rc == 0 ? 0 : report(sh, rc, &err);
}

/* ---- input lines ------------------------------------------------------------------- */

/* Whether the pending input holds nothing but blanks and comments. */
static bool pending_blank(const dosql_shell *sh)
{
    return sh->pending.len == 0 ||
           dosql_sql_classify(sh->pending.data, sh->pending.len) == DOSQL_STMT_EMPTY;
}

/* Run every whole statement at the front of the pending input; keep the
 * rest. Returns 0, or -1 when the shell must stop (the input is dropped). */
static int drain(dosql_shell *sh)
{
    size_t off = 0, n;
    while (off < sh->pending.len &&
           (n = dosql_sql_next(sh->pending.data + off, sh->pending.len - off)) > 0) {
        int rc = statement(sh, sh->pending.data + off, n);
        off += n;
        if (rc != 0) {
            dsq_buf_reset(&sh->pending);
            return -1;
        }
    }
    dsq_buf_consume(&sh->pending, off);
    if (pending_blank(sh))
        dsq_buf_reset(&sh->pending);
    return 0;
}

static int dot_command(dosql_shell *sh, const char *line, size_t len);

/* A dot command when no statement is under way; otherwise more SQL. */
int dosql_shell_line(dosql_shell *sh, const char *line, size_t len)
{
    if (pending_blank(sh)) {
        size_t i = 0;
        while (i < len && isspace((unsigned char)line[i]))
            i++;
        if (i < len && line[i] == '.') {
            dsq_buf_reset(&sh->pending);
            return dot_command(sh, line + i, len - i);
        }
    }
    if (dsq_buf_append(&sh->pending, line, len) != 0 || dsq_buf_append(&sh->pending, "\n", 1) != 0) {
        dosql_err err;
        dosql_err_set(&err, "RESOURCE_EXHAUSTED", "out of memory");
        dsq_buf_reset(&sh->pending);
        return report(sh, DOSQL_EFAIL, &err);
    }
    /* Only a whole input can hold a statement that ends at a line end;
     * the check keeps long statements from being re-scanned per ';'. */
    if (!dosql_sql_complete(sh->pending.data))
        return 0;
    return drain(sh);
}

/* Whole statements first, then the unterminated rest as one statement. */
int dosql_shell_end(dosql_shell *sh)
{
    int rc = drain(sh);
    if (rc == 0 && !pending_blank(sh))
        rc = statement(sh, sh->pending.data, sh->pending.len);
    dsq_buf_reset(&sh->pending);
    return rc;
}

/* Drop the unfinished statement. */
void dosql_shell_discard(dosql_shell *sh) { dsq_buf_reset(&sh->pending); }

/* A statement has begun and is not whole yet. */
bool dosql_shell_continuing(const dosql_shell *sh) { return !pending_blank(sh); }

/* A transaction is open. */
bool dosql_shell_in_txn(const dosql_shell *sh) { return sh->txid != NULL; }

/* No transaction, no input, exit status 0, timing off. */
void dosql_shell_init(dosql_shell *sh, dosql_http *http, FILE *out, dosql_mode mode, bool bail)
{
    memset(sh, 0, sizeof *sh);
    sh->http = http;
    sh->out = out;
    sh->mode = mode;
    sh->bail = bail;
}

/* Leaving with a transaction open would hold the database until the
 * server's timeout: roll it back now. */
void dosql_shell_close(dosql_shell *sh)
{
    if (sh->txid != NULL) {
        dosql_err err;
        json_t *res;
        json_t *params = json_pack("{s:s}", "transactionId", sh->txid);
        if (dosql_http_rpc(sh->http, "rollback", params, &res, &err) == 0) {
            json_decref(res);
            fprintf(stderr, "dosql: the open transaction was rolled back\n");
        } else {
            fprintf(stderr, "dosql: could not roll back the open transaction: %s%s%s\n",
                    err.code, err.code[0] ? ": " : "", err.message);
        }
        txn_forget(sh);
    }
    if (sh->stdout_ != NULL && sh->out != sh->stdout_) { /* (.output FILE) */
        fclose(sh->out);
        sh->out = sh->stdout_;
    }
    dsq_buf_free(&sh->pending);
    names_forget(sh);
    for (size_t i = 0; sh->keywords != NULL && sh->keywords[i] != NULL; i++)
        free(sh->keywords[i]);
    free(sh->keywords);
    sh->keywords = NULL;
}

/* ---- dot commands ------------------------------------------------------------------ */

#define MAX_ARGS 8

/* Split line[0..len) into words at blanks; '...' and "..." group a word
 * with blanks. Writes into buf (at least len + 1 bytes). Returns the
 * number of words, or -1 for more than MAX_ARGS or an open quote. */
static int split_args(const char *line, size_t len, char *buf, char *argv[MAX_ARGS])
{
    int argc = 0;
    size_t i = 0;
    char *o = buf;
    for (;;) {
        while (i < len && isspace((unsigned char)line[i]))
            i++;
        if (i == len)
            return argc;
        if (argc == MAX_ARGS)
            return -1;
        argv[argc++] = o;
        if (line[i] == '\'' || line[i] == '"') {
            char q = line[i++];
            while (i < len && line[i] != q)
                *o++ = line[i++];
            if (i == len)
                return -1;
            i++;
        } else {
            while (i < len && !isspace((unsigned char)line[i]))
                *o++ = line[i++];
        }
        *o++ = '\0';
    }
}

/* getSchema (inside the open transaction, if any). */
static int get_schema(dosql_shell *sh, json_t **schema, dosql_err *err)
{
    json_t *params = sh->txid ? json_pack("{s:s}", "transactionId", sh->txid) : json_object();
    int rc = dosql_http_rpc(sh->http, "getSchema", params, schema, err);
    if (rc == DOSQL_EFAIL && sh->txid != NULL && strcmp(err->code, "TRANSACTION_NOT_FOUND") == 0)
        txn_forget(sh);
    return rc;
}

/* qsort comparison of two C strings, ignoring ASCII case. */
static int cmp_names(const void *a, const void *b)
{
    return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/* .tables: the names of tables and views, sorted, one per line. */
static int dot_tables(dosql_shell *sh, dosql_err *err)
{
    json_t *schema;
    int rc = get_schema(sh, &schema, err);
    if (rc != 0)
        return rc;
    names_take(sh, schema); /* (what Tab completes is refreshed too) */
    const json_t *tables = json_object_get(schema, "tables");
    const json_t *views = json_object_get(schema, "views");
    size_t n = json_array_size(tables) + json_array_size(views), k = 0;
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (names == NULL) {
        json_decref(schema);
        return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    }
    const json_t *lists[2] = {tables, views}, *o;
    size_t i;
    for (int l = 0; l < 2; l++)
        json_array_foreach(lists[l], i, o) {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (name != NULL)
                names[k++] = name;
        }
    qsort(names, k, sizeof *names, cmp_names);
    for (i = 0; i < k; i++)
        fprintf(sh->out, "%s\n", names[i]);
    free(names);
    json_decref(schema);
    return 0;
}

/* Print the "sql" of each object in list whose field key equals name
 * (ignoring case), or of every object when name is NULL. Returns how many
 * matched. */
static size_t print_sql(dosql_shell *sh, const json_t *list, const char *key, const char *name)
{
    size_t i, count = 0;
    const json_t *o;
    json_array_foreach(list, i, o) {
        const char *v = json_string_value(json_object_get(o, key));
        const char *sql = json_string_value(json_object_get(o, "sql"));
        if (name != NULL && (v == NULL || strcasecmp(v, name) != 0))
            continue;
        count++;
        if (sql != NULL)
            fprintf(sh->out, "%s;\n", sql);
    }
    return count;
}

/* .schema [NAME]: every CREATE statement (tables, indexes, views,
 * triggers), or those of one table or view with its indexes and
 * triggers. */
static int dot_schema(dosql_shell *sh, const char *name, dosql_err *err)
{
    json_t *schema;
    int rc = get_schema(sh, &schema, err);
    if (rc != 0)
        return rc;
    names_take(sh, schema); /* (what Tab completes is refreshed too) */
    const json_t *tables = json_object_get(schema, "tables");
    const json_t *indexes = json_object_get(schema, "indexes");
    const json_t *views = json_object_get(schema, "views");
    const json_t *triggers = json_object_get(schema, "triggers");
    if (name == NULL) {
        print_sql(sh, tables, "name", NULL);
        print_sql(sh, indexes, "name", NULL);
        print_sql(sh, views, "name", NULL);
        print_sql(sh, triggers, "name", NULL);
    } else if (print_sql(sh, tables, "name", name) + print_sql(sh, views, "name", name) == 0) {
        rc = dosql_err_set(err, "TABLE_NOT_FOUND", "no such table or view: %s", name);
    } else {
        print_sql(sh, indexes, "table", name);
        print_sql(sh, triggers, "table", name);
    }
    json_decref(schema);
    return rc;
}

/* .dump [TABLE]: the database (or TABLE) as SQL, as `sqlite3 .dump`
 * writes it: its export dumped here. */
static int dot_dump(dosql_shell *sh, const char *table, dosql_err *err)
{
    dsq_buf file = DSQ_BUF_INIT, sql = DSQ_BUF_INIT;
    int rc = dosql_http_get(sh->http, "/export", &file, err);
    if (rc != 0) {
        dsq_buf_free(&file);
        return rc;
    }
    char why[400];
    const char *tmp = getenv("TMPDIR");
    rc = dsq_sqlite_dump_bytes(tmp && *tmp ? tmp : "/tmp", file.data, file.len, table, &sql, why, sizeof why);
    dsq_buf_free(&file);
    if (rc != 0) {
        dsq_buf_free(&sql);
        return dosql_err_set(err, "", "%s", why);
    }
    fputs("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n", sh->out);
    if (sql.len > 0)
        fwrite(sql.data, 1, sql.len, sh->out);
    fputs("COMMIT;\n", sh->out);
    dsq_buf_free(&sql);
    return 0;
}

/* Read a whole file into b. 0, or -1 with errno. */
static int slurp(const char *name, dsq_buf *b)
{
    FILE *f = fopen(name, "rb");
    if (f == NULL)
        return -1;
    char chunk[1 << 16];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (dsq_buf_append(b, chunk, n) != 0) {
            errno = ENOMEM;
            rc = -1;
        }
    if (rc == 0 && ferror(f))
        rc = -1;
    fclose(f);
    return rc;
}

/* A quoted identifier ("name", its quotes doubled) into b. */
static void put_ident(dsq_buf *b, const char *s, size_t n)
{
    dsq_buf_puts(b, "\"");
    for (size_t i = 0; i < n; i++)
        dsq_buf_append(b, s[i] == '"' ? "\"\"" : s + i, s[i] == '"' ? 2 : 1);
    dsq_buf_puts(b, "\"");
}

/* Run one batch of statements (stolen), atomic, in the transaction txid
 * (or as one commit of its own when NULL). */
static int run_batch(dosql_shell *sh, json_t *statements, const char *txid, dosql_err *err)
{
    json_t *params = json_pack("{s:o, s:b}", "statements", statements, "atomic", 1);
    if (params != NULL && txid != NULL)
        json_object_set_new(params, "transactionId", json_string(txid));
    if (params == NULL)
        return dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    json_t *res = NULL;
    int rc = dosql_http_rpc(sh->http, "batch", params, &res, err);
    json_decref(res);
    return rc;
}

/* Whether SIGINT has asked the shell to stop. */
static bool interrupted(const dosql_shell *sh)
{
    return sh->http->interrupted != NULL && *sh->http->interrupted;
}

/* A JSON-RPC call on the transaction txid that SIGINT must not abandon
 * halfway (beginTransaction, commit, rollback): its outcome would be
 * unknown, and with it what is committed, or a transaction would be left
 * open holding the database until its timeout. The interrupt stays
 * recorded and is acted on after the call. params is stolen. */
static int rpc_whole(dosql_shell *sh, const char *method, json_t *params, json_t **res, dosql_err *err)
{
    volatile sig_atomic_t *flag = sh->http->interrupted;
    sh->http->interrupted = NULL;
    *res = NULL;
    int rc = params != NULL ? dosql_http_rpc(sh->http, method, params, res, err)
                            : dosql_err_set(err, "RESOURCE_EXHAUSTED", "out of memory");
    sh->http->interrupted = flag;
    return rc;
}

/* One batch of .import (statements stolen). Inside the shell's open
 * transaction it is part of it; otherwise it runs in a transaction of
 * its own, begun, filled and committed in three calls rather than as one
 * atomic batch, because a request abandoned by Ctrl-C may or may not have
 * committed by the time the server sees the connection go: here the batch
 * is what is abandoned, its transaction is rolled back, and the commit
 * (never abandoned) is what makes the rows count as imported. */
static int import_batch(dosql_shell *sh, json_t *statements, dosql_err *err)
{
    if (sh->txid != NULL)
        return run_batch(sh, statements, sh->txid, err);
    json_t *res;
    int rc = rpc_whole(sh, "beginTransaction", json_pack("{s:s}", "mode", "immediate"), &res, err);
    const char *got = rc == 0 ? json_string_value(json_object_get(res, "transactionId")) : NULL;
    char *id = got != NULL ? strdup(got) : NULL;
    json_decref(res);
    if (id == NULL) {
        json_decref(statements);
        return rc != 0 ? rc : dosql_err_set(err, "UNKNOWN", "beginTransaction returned no transactionId");
    }
    rc = run_batch(sh, statements, id, err);
    if (rc == 0) {
        rc = rpc_whole(sh, "commit", json_pack("{s:s}", "transactionId", id), &res, err);
    } else {
        dosql_err ignored; /* (err says why the batch failed; the rollback's fate adds nothing) */
        rpc_whole(sh, "rollback", json_pack("{s:s}", "transactionId", id), &res, &ignored);
    }
    json_decref(res);
    free(id);
    return rc;
}

/* .import FILE TABLE: CSV rows into TABLE. The first record is the
 * header: the columns inserted into, and those of the table made when
 * there is none (TEXT columns, as sqlite3 makes them). Rows go in
 * multi-row INSERTs, several to a batch, each batch one commit (or part
 * of the open transaction); a progress line on stderr every 100,000
 * rows. Ctrl-C stops it between batches or abandons the batch under way
 * (rolled back), and the error says how many rows were committed. */
static int dot_import(dosql_shell *sh, const char *file, const char *table, dosql_err *err)
{
    dsq_buf text = DSQ_BUF_INIT;
    if (slurp(file, &text) != 0) {
        dsq_buf_free(&text);
        return dosql_err_set(err, "", "cannot read %s: %s", file, strerror(errno));
    }
    dosql_csv csv;
    dosql_csv_init(&csv, text.data ? text.data : "", text.len);
    char why[300];
    int rc = dosql_csv_next(&csv, why, sizeof why);
    if (rc <= 0) {
        rc = dosql_err_set(err, "", "%s: %s", file, rc == 0 ? "no header row" : why);
        goto out;
    }
    size_t ncols = csv.nfields;
    dsq_buf cols = DSQ_BUF_INIT, ddl = DSQ_BUF_INIT;
    dsq_buf_puts(&cols, "(");
    for (size_t i = 0; i < ncols; i++) {
        size_t n;
        const char *f = dosql_csv_field(&csv, i, &n);
        if (i)
            dsq_buf_puts(&cols, ", ");
        put_ident(&cols, f, n);
    }
    dsq_buf_puts(&cols, ")");
    /* The table made when there is none. */
    dsq_buf_puts(&ddl, "CREATE TABLE IF NOT EXISTS ");
    put_ident(&ddl, table, strlen(table));
    dsq_buf_puts(&ddl, "(");
    for (size_t i = 0; i < ncols; i++) {
        size_t n;
        const char *f = dosql_csv_field(&csv, i, &n);
        if (i)
            dsq_buf_puts(&ddl, ", ");
        put_ident(&ddl, f, n);
        dsq_buf_puts(&ddl, " TEXT");
    }
    dsq_buf_puts(&ddl, ")");
    json_t *res = NULL;
    rc = dosql_http_query(sh->http, ddl.data, ddl.len, sh->txid, &res, err);
    json_decref(res);
    dsq_buf_free(&ddl);
    /* Rows per INSERT: within SQLite's parameter limit (32766). */
    size_t per = 32000 / (ncols ? ncols : 1);
    if (per > 500)
        per = 500;
    if (per == 0)
        per = 1;
    size_t rows = 0, done = 0, line = 0, next_report = 100000; /* (done: rows in batches run) */
    json_t *statements = json_array(), *params = NULL;
    size_t in_stmt = 0;
    dsq_buf ins = DSQ_BUF_INIT;
    dosql_err bad; /* a bad record: the rows before it go in first, then it is the error */
    bad.code[0] = bad.message[0] = '\0';
    while (rc == 0) {
        line = csv.line;
        int got = dosql_csv_next(&csv, why, sizeof why);
        if (got < 0) {
            dosql_err_set(&bad, "", "%s: %s (rows before it were imported)", file, why);
            got = 0;
        } else if (got == 1 && csv.nfields != ncols) {
            dosql_err_set(&bad, "", "%s: line %zu: %zu fields, the header has %zu (rows before it were imported)",
                          file, line, csv.nfields, ncols);
            got = 0;
        }
        if (got == 1) {
            if (params == NULL) {
                params = json_array();
                dsq_buf_reset(&ins);
                dsq_buf_puts(&ins, "INSERT INTO ");
                put_ident(&ins, table, strlen(table));
                dsq_buf_append(&ins, cols.data, cols.len);
                dsq_buf_puts(&ins, " VALUES ");
            }
            dsq_buf_puts(&ins, in_stmt ? ", (" : "(");
            for (size_t i = 0; i < ncols; i++) {
                size_t n;
                const char *f = dosql_csv_field(&csv, i, &n);
                json_array_append_new(params, json_stringn(f, n));
                dsq_buf_puts(&ins, i ? ", ?" : "?");
            }
            dsq_buf_puts(&ins, ")");
            in_stmt++;
            rows++;
        }
        /* A whole INSERT goes into the batch; ten of them make a call. */
        if (params != NULL && (in_stmt == per || got == 0)) {
            json_array_append_new(statements, json_pack("{s:s%, s:o}", "sql", ins.data, ins.len, "params", params));
            params = NULL;
            in_stmt = 0;
        }
        if (json_array_size(statements) > 0 && (json_array_size(statements) == 10 || got == 0)) {
            rc = import_batch(sh, statements, err);
            statements = json_array();
            if (rc == 0)
                done = rows - in_stmt; /* (in_stmt: rows of an INSERT not yet sent) */
            if (rc == 0 && got != 0 && interrupted(sh)) /* (between batches) */
                rc = DOSQL_EINTR;
            if (rc == 0 && rows >= next_report) { /* the progress line */
                fprintf(stderr, "\r%zu rows", rows);
                while (next_report <= rows)
                    next_report += 100000;
            }
        }
        if (got == 0)
            break;
    }
    if (rc == 0 && bad.message[0] != '\0') {
        *err = bad;
        rc = DOSQL_EFAIL;
    }
    /* In the open transaction a statement abandoned undoes only itself:
     * the batch's INSERTs before it stay there, uncommitted. */
    if (rc == DOSQL_EINTR && sh->txid != NULL)
        dosql_err_set(err, "", "interrupted: %zu rows imported into the open transaction (not committed), "
                      "and perhaps part of the batch under way; ROLLBACK undoes them", done);
    else if (rc == DOSQL_EINTR)
        dosql_err_set(err, "", "interrupted: %zu rows imported and committed, none after them", done);
    if (rows >= 100000)
        fprintf(stderr, "\n");
    json_decref(statements);
    json_decref(params);
    dsq_buf_free(&ins);
    dsq_buf_free(&cols);
out:
    dosql_csv_free(&csv);
    dsq_buf_free(&text);
    return rc;
}

/* .export FILE: the database as a SQLite file. */
static int dot_export(dosql_shell *sh, const char *file, dosql_err *err)
{
    dsq_buf b = DSQ_BUF_INIT;
    int rc = dosql_http_get(sh->http, "/export", &b, err);
    if (rc == 0) {
        FILE *f = fopen(file, "wb");
        if (f == NULL || (b.len > 0 && fwrite(b.data, 1, b.len, f) != b.len) || fclose(f) != 0)
            rc = dosql_err_set(err, "", "cannot write %s: %s", file, strerror(errno));
    }
    dsq_buf_free(&b);
    return rc;
}

int dosql_shell_feed(dosql_shell *sh, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        rc = dosql_shell_line(sh, line, (size_t)n);
    }
    if (rc == 0 && ferror(f))
        rc = -2;
    free(line);
    return rc;
}

/* .read FILE: its lines as if typed. */
static int dot_read(dosql_shell *sh, const char *name, dosql_err *err)
{
    if (sh->depth >= 8)
        return dosql_err_set(err, "", ".read nested too deep (8 levels)");
    FILE *f = fopen(name, "r");
    if (f == NULL)
        return dosql_err_set(err, "", "cannot open %s: %s", name, strerror(errno));
    sh->depth++;
    int rc = dosql_shell_feed(sh, f);
    fclose(f);
    sh->depth--;
    return rc == 0 ? 0 : DOSQL_EFAIL;
}

/* .output [FILE]: results to FILE (created or emptied), or back to the
 * standard output. */
static int dot_output(dosql_shell *sh, const char *name, dosql_err *err)
{
    FILE *f = NULL;
    if (name != NULL && strcmp(name, "stdout") != 0 && (f = fopen(name, "w")) == NULL)
        return dosql_err_set(err, "", "cannot write %s: %s", name, strerror(errno));
    if (sh->stdout_ == NULL)
        sh->stdout_ = sh->out;
    if (sh->out != sh->stdout_)
        fclose(sh->out);
    sh->out = f != NULL ? f : sh->stdout_;
    return 0;
}

static const char help_text[] =
    "SQL statements end with ';' and may span lines. BEGIN [IMMEDIATE], COMMIT\n"
    "and ROLLBACK run a transaction on the server (the prompt shows dosql*>).\n"
    "\n"
    ".dump [TABLE]     the database (or TABLE) as SQL, as sqlite3 .dump writes it\n"
    ".export FILE      the database as a SQLite file\n"
    ".headers on|off   a header row of column names in csv mode (off unless\n"
    "                  --csv; the other modes always name the columns)\n"
    ".help             this text\n"
    ".import FILE TABLE  CSV rows into TABLE (the header names the columns; TABLE\n"
    "                  is made when there is none); Ctrl-C stops it and says how\n"
    "                  many rows were committed\n"
    ".mode MODE        how results are printed: table, csv, json, line, markdown\n"
    ".output [FILE]    results to FILE, or back to the standard output\n"
    ".quit, .exit      leave the shell (an open transaction is rolled back)\n"
    ".read FILE        run FILE's statements and commands\n"
    ".schema [TABLE]   the CREATE statements of every object, or of TABLE\n"
    "                  with its indexes and triggers\n"
    ".tables           the names of the tables and views\n"
    ".timing on|off    print the time each statement takes\n"
    "\n"
    "On a terminal, Tab completes dot commands, file names after .read, .import,\n"
    ".output and .export, table and column names (T.col after T.) and keywords.\n";

/* Run one dot command line ('.' first). Returns 0, or -1 to stop
 * (.quit, or an error when bailing). */
static int dot_command(dosql_shell *sh, const char *line, size_t len)
{
    char *buf = malloc(len + 1);
    char *argv[MAX_ARGS];
    dosql_err err;
    err.code[0] = err.message[0] = '\0';
    int rc = 0;
    int argc = buf ? split_args(line, len, buf, argv) : -1;
    const char *cmd = argc > 0 ? argv[0] : "";
    if (argc < 0) {
        rc = dosql_err_set(&err, "", "cannot parse: %.*s", (int)len, line);
    } else if (strcmp(cmd, ".quit") == 0 || strcmp(cmd, ".exit") == 0) {
        free(buf);
        return -1;
    } else if (strcmp(cmd, ".help") == 0) {
        fputs(help_text, sh->out);
    } else if (strcmp(cmd, ".tables") == 0 && argc == 1) {
        rc = dot_tables(sh, &err);
    } else if (strcmp(cmd, ".schema") == 0 && argc <= 2) {
        rc = dot_schema(sh, argc == 2 ? argv[1] : NULL, &err);
    } else if (strcmp(cmd, ".timing") == 0 && argc <= 2) {
        if (argc == 1)
            fprintf(sh->out, "timing is %s\n", sh->timing ? "on" : "off");
        else if (dsq_parse_bool(argv[1], &sh->timing) != 0)
            rc = dosql_err_set(&err, "", "usage: .timing on|off");
    } else if ((strcmp(cmd, ".headers") == 0 || strcmp(cmd, ".header") == 0) && argc <= 2) {
        if (argc == 1)
            fprintf(sh->out, "headers are %s\n", sh->headers ? "on" : "off");
        else if (dsq_parse_bool(argv[1], &sh->headers) != 0)
            rc = dosql_err_set(&err, "", "usage: .headers on|off");
    } else if (strcmp(cmd, ".dump") == 0 && argc <= 2) {
        rc = dot_dump(sh, argc == 2 ? argv[1] : NULL, &err);
    } else if (strcmp(cmd, ".import") == 0 && argc == 3) {
        rc = dot_import(sh, argv[1], argv[2], &err);
        names_forget(sh); /* (it may have made the table) */
    } else if (strcmp(cmd, ".export") == 0 && argc == 2) {
        rc = dot_export(sh, argv[1], &err);
    } else if (strcmp(cmd, ".import") == 0 || strcmp(cmd, ".export") == 0) {
        rc = dosql_err_set(&err, "", "usage: %s", strcmp(cmd, ".import") == 0 ? ".import FILE TABLE" : ".export FILE");
    } else if (strcmp(cmd, ".read") == 0 && argc == 2) {
        rc = dot_read(sh, argv[1], &err);
        if (rc != 0) {
            free(buf);
            return err.message[0] ? report(sh, rc, &err) : (sh->bail ? -1 : 0);
        }
    } else if (strcmp(cmd, ".output") == 0 && argc <= 2) {
        rc = dot_output(sh, argc == 2 ? argv[1] : NULL, &err);
    } else if (strcmp(cmd, ".mode") == 0 && argc == 2) {
        if (strcmp(argv[1], "table") == 0)
            sh->mode = DOSQL_MODE_TABLE;
        else if (strcmp(argv[1], "csv") == 0)
            sh->mode = DOSQL_MODE_CSV;
        else if (strcmp(argv[1], "json") == 0)
            sh->mode = DOSQL_MODE_JSON;
        else if (strcmp(argv[1], "line") == 0)
            sh->mode = DOSQL_MODE_LINE;
        else if (strcmp(argv[1], "markdown") == 0)
            sh->mode = DOSQL_MODE_MARKDOWN;
        else
            rc = dosql_err_set(&err, "", "usage: .mode table|csv|json|line|markdown");
    } else if (strcmp(cmd, ".read") == 0 || strcmp(cmd, ".mode") == 0) {
        rc = dosql_err_set(&err, "", "usage: %s %s", cmd,
                           strcmp(cmd, ".read") == 0 ? "FILE" : "table|csv|json|line|markdown");
    } else if (strcmp(cmd, ".tables") == 0 || strcmp(cmd, ".schema") == 0 ||
               strcmp(cmd, ".timing") == 0 || strcmp(cmd, ".dump") == 0 || strcmp(cmd, ".output") == 0 ||
               strcmp(cmd, ".headers") == 0 || strcmp(cmd, ".header") == 0) {
        rc = dosql_err_set(&err, "", "too many arguments to %s (see .help)", cmd);
    } else {
        rc = dosql_err_set(&err, "", "unknown command %s (see .help)", cmd);
    }
    free(buf);
    fflush(sh->out);
    return rc == 0 ? 0 : report(sh, rc, &err);
}
