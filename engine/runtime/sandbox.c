/* sandbox — what a client's SQL may do on an actor's connections (worker).
 *
 * Divisions: the authorizer and the PRAGMAs it allows; the lexical checks
 * of statement text, for what the authorizer does not see (VACUUM INTO,
 * a VACUUM that must stand alone, a stream's one statement); the progress
 * handler that stops a statement past its deadline or cancelled; the
 * limits and settings every connection of an actor gets.
 *
 * User SQL cannot begin, commit or roll back on its own: the authorizer
 * refuses it, so the engine always knows where commits happen (txn.c).
 * While o->internal is set, the engine's own SQL passes unchecked. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/runtime/exec_int.h"

/* ---- the authorizer ------------------------------------------------------------ */

/* PRAGMAs a client may run. Introspection takes any argument; read-only
 * ones none; the last group may also be set (they live in the database
 * file or in the current transaction, never in the shared connection). */
static const char *const pragma_introspect[] = {
    "table_info",   "table_xinfo",       "table_list",   "index_list",    "index_info",
    "index_xinfo",  "foreign_key_list",  "foreign_key_check", "integrity_check", "quick_check",
    "collation_list", "function_list",   "module_list",  "pragma_list",   "compile_options",
    "optimize",     NULL};
static const char *const pragma_readonly[] = {
    "page_count",   "page_size",         "freelist_count", "schema_version", "data_version",
    "encoding",     "auto_vacuum",       "foreign_keys", "max_page_count", "journal_mode",
    "synchronous",  NULL};
static const char *const pragma_settable[] = {"user_version", "application_id",
                                              "defer_foreign_keys", NULL};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcasecmp(*list, s) == 0)
            return true;
    return false;
}

static int deny(actor_open *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int deny(actor_open *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->deny, sizeof o->deny, fmt, ap);
    va_end(ap);
    return SQLITE_DENY;
}

static int authorizer(void *ud, int action, const char *a1, const char *a2, const char *a3,
                      const char *a4)
{
    actor_open *o = ud;
    /* A plain VACUUM (VACUUM INTO is refused before it runs) rebuilds the
     * database with statements of its own: BEGIN, a scratch ATTACH, reads
     * and writes of every table. They are SQLite's, not the client's. */
    if (o->internal || o->vacuum)
        return SQLITE_OK;
    /* An import: a dump writes its virtual tables' schema rows itself. */
    if (o->importing && action == SQLITE_PRAGMA && a1 != NULL && strcasecmp(a1, "writable_schema") == 0)
        return SQLITE_OK;
    /* dosqld's own tables (_dsq_...): the router's calls only. */
    bool table_action = action == SQLITE_READ || action == SQLITE_INSERT || action == SQLITE_UPDATE ||
                        action == SQLITE_DELETE || action == SQLITE_CREATE_TABLE || action == SQLITE_DROP_TABLE ||
                        action == SQLITE_ALTER_TABLE || action == SQLITE_CREATE_INDEX || action == SQLITE_DROP_INDEX ||
                        action == SQLITE_CREATE_TRIGGER || action == SQLITE_DROP_TRIGGER;
    const char *tname = action == SQLITE_ALTER_TABLE ? a2 : action == SQLITE_CREATE_INDEX ||
                                                                  action == SQLITE_DROP_INDEX ||
                                                                  action == SQLITE_CREATE_TRIGGER ||
                                                                  action == SQLITE_DROP_TRIGGER
                                                              ? a2
                                                              : a1;
    if (table_action && tname != NULL && strncasecmp(tname, "_dsq_", 5) == 0) {
        if (o->running == NULL || !o->running->internal_tables)
            return deny(o, "%s is one of dosqld's own tables (_dsq_...); it may not be used in SQL", tname);
        o->stmt_own = true;
    }
    switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        return deny(o, "ATTACH and DETACH are not allowed");
    case SQLITE_TRANSACTION:
        return deny(o, "%s is not allowed in SQL: use beginTransaction, commit and rollback",
                    a1 ? a1 : "transaction control");
    case SQLITE_SAVEPOINT:
        /* Beside another client's transaction it would be a no-op on the
         * view's connection, not the client's savepoint. */
        if (!o->in_txn || o->on_view)
            return deny(o, "SAVEPOINT, RELEASE and ROLLBACK TO need an open transaction "
                           "(beginTransaction)");
        dsq_strlcpy(o->sp_op, a1 ? a1 : "", sizeof o->sp_op);
        dsq_strlcpy(o->sp_name, a2 ? a2 : "", sizeof o->sp_name);
        return SQLITE_OK;
    case SQLITE_CREATE_TABLE:
        if (a1 && a2 && strcmp(a2, "main") == 0)
            dsq_strlcpy(o->stmt_created, a1, sizeof o->stmt_created);
        o->stmt_ddl = true;
        return SQLITE_OK;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_ALTER_TABLE:
        o->stmt_ddl = true;
        return SQLITE_OK;
    case SQLITE_ANALYZE:
    case SQLITE_REINDEX:
        o->stmt_writes = true; /* they write the database, whatever sqlite3_stmt_readonly() says */
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (a1 == NULL)
            return deny(o, "PRAGMA is not allowed");
        if (strcasecmp(a1, "optimize") == 0)
            o->stmt_writes = true; /* it may run ANALYZE (sqlite3_stmt_readonly() says no) */
        if (in_list(pragma_introspect, a1) || in_list(pragma_settable, a1))
            return SQLITE_OK;
        if (in_list(pragma_readonly, a1)) {
            if (a2 == NULL)
                return SQLITE_OK;
            return deny(o, "PRAGMA %s may be read, not set", a1);
        }
        return deny(o, "PRAGMA %s is not allowed", a1);
    case SQLITE_FUNCTION:
        if (a2 && (strcasecmp(a2, "load_extension") == 0 || strcasecmp(a2, "fts3_tokenizer") == 0))
            return deny(o, "%s() is not allowed", a2);
        return SQLITE_OK;
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
        return deny(o, "temporary tables, views, indexes and triggers are not allowed "
                       "(every client of a database shares its connection)");
    default:
        return SQLITE_OK;
    }
}

/* ---- lexical checks --------------------------------------------------------------- */

/* Skip white space and comments. */
const char *dsq__sql_skip_space(const char *p, const char *end)
{
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f') {
            p++;
        } else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < end && !(p[0] == '*' && p[1] == '/'))
                p++;
            p = p + 1 < end ? p + 2 : end;
        } else {
            break;
        }
    }
    return p;
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (unsigned char)c >= 0x80;
}

/* Does the statement text start with keyword `kw`? */
bool dsq__sql_starts_with(const char *sql, size_t len, const char *kw)
{
    const char *end = sql + len;
    const char *p = dsq__sql_skip_space(sql, end);
    size_t k = strlen(kw);
    return (size_t)(end - p) >= k && strncasecmp(p, kw, k) == 0 &&
           (p + k == end || !is_word_char(p[k]));
}

/* Does keyword `kw` appear as a token (outside quotes and comments)? */
static bool has_word(const char *sql, size_t len, const char *kw)
{
    const char *end = sql + len, *p = sql;
    size_t k = strlen(kw);
    while (p < end) {
        p = dsq__sql_skip_space(p, end);
        if (p >= end)
            break;
        char q = *p;
        if (q == '\'' || q == '"' || q == '`' || q == '[') {
            char close = q == '[' ? ']' : q;
            for (p++; p < end; p++) {
                if (*p == close) {
                    if (close != ']' && p + 1 < end && p[1] == close) {
                        p++; /* doubled quote */
                        continue;
                    }
                    p++;
                    break;
                }
            }
            continue;
        }
        if (is_word_char(q)) {
            const char *w = p;
            while (p < end && is_word_char(*p))
                p++;
            if ((size_t)(p - w) == k && strncasecmp(w, kw, k) == 0)
                return true;
            continue;
        }
        p++;
    }
    return false;
}

/* Is the statement VACUUM INTO, which writes a file? It is refused before
 * it runs: while a VACUUM runs, the authorizer lets its statements pass. */
bool dsq__sql_vacuum_into(const char *sql, size_t len)
{
    return dsq__sql_starts_with(sql, len, "VACUUM") && has_word(sql, len, "INTO");
}

/* Is there nothing but white space, comments and one ';' after the first
 * statement? (The first ';' outside quotes and comments ends it; SQL's
 * only other use of ';' is inside CREATE TRIGGER, which VACUUM is not.) */
bool dsq__sql_lone_statement(const char *sql, size_t len)
{
    const char *end = sql + len, *p = sql;
    while (p < end) {
        p = dsq__sql_skip_space(p, end);
        if (p >= end)
            return true;
        char q = *p;
        if (q == '\'' || q == '"' || q == '`' || q == '[') {
            char close = q == '[' ? ']' : q;
            for (p++; p < end && *p != close; p++)
                ;
            p++;
            continue;
        }
        if (q == ';')
            return dsq__sql_skip_space(p + 1, end) == end;
        p++;
    }
    return true;
}

/* ---- the progress handler and the limits -------------------------------------------- */

static int progress(void *ud)
{
    actor_open *o = ud;
    if (o->running != NULL && dsq__cancelled(o->running))
        return 1;
    return o->deadline_ns != 0 && dsq_now_ns() > o->deadline_ns;
}

/* Limits, settings and the authorizer every connection of an actor gets. */
void dsq__sandbox(actor_open *o, sqlite3 *db, const dsq_engine_cfg *cfg)
{
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    /* No value can be larger than a whole result may be. */
    size_t length = cfg->max_value_size < cfg->max_result_size ? cfg->max_value_size : cfg->max_result_size;
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, length > INT32_MAX ? INT32_MAX : (int)length);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, (int)cfg->max_sql_length);
    sqlite3_limit(db, SQLITE_LIMIT_COLUMN, cfg->max_columns);
    sqlite3_limit(db, SQLITE_LIMIT_EXPR_DEPTH, cfg->max_expr_depth);
    sqlite3_limit(db, SQLITE_LIMIT_VARIABLE_NUMBER, cfg->max_params);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 1); /* VACUUM's scratch database; the authorizer refuses users' */
    sqlite3_limit(db, SQLITE_LIMIT_TRIGGER_DEPTH, 100);
    sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0);
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size=%d", cfg->cache_pages);
    sqlite3_exec(db, pragma, NULL, NULL, NULL);
    sqlite3_set_authorizer(db, authorizer, o);
    sqlite3_progress_handler(db, 1000, progress, o);
    /* Builtins that can work for long inside one call, between two looks
     * of the progress handler, replaced by bounded ones (sqlfn.c) that ask
     * it themselves. */
    o->fn_stop = (dsq_sqlfn_stop){.fn = progress, .arg = o};
    if (dsq__sqlfn_register(db, &o->fn_stop) != SQLITE_OK)
        DSQ_ERROR("sql_functions_failed", "error=%s", dsq_log_q(sqlite3_errmsg(db)));
}
