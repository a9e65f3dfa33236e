/* stmt — prepared statements of an actor's connection (worker).
 *
 * Divisions: the statement cache (the client's statements, kept prepared
 * across requests); binding a request's parameters; the engine's own
 * transaction-control statements, prepared once. */
#include <stdlib.h>
#include <string.h>

#include "engine/runtime/exec_int.h"

/* ---- the statement cache ------------------------------------------------------ */

/* The cache is keyed by the whole text that remains of a request from the
 * statement on (so "SELECT 1; " and "SELECT 1;" are different keys, each
 * always found again); a slot remembers how much of it the statement used. */
sqlite3_stmt *dsq__cache_get(actor_open *o, const char *rest, size_t len, size_t *consumed)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        stmt_slot *s = &o->cache[i];
        if (s->stmt && s->len == len && memcmp(s->sql, rest, len) == 0) {
            s->used = ++o->clock;
            o->cache_hits++;
            *consumed = s->consumed;
            return s->stmt;
        }
    }
    o->cache_misses++;
    return NULL;
}

/* Keep `st` for `rest`. On failure (out of memory) st is finalized. */
int dsq__cache_put(actor_open *o, const char *rest, size_t len, size_t consumed, sqlite3_stmt *st)
{
    stmt_slot *victim = &o->cache[0];
    for (int i = 0; i < STMT_CACHE; i++) {
        if (o->cache[i].stmt == NULL) {
            victim = &o->cache[i];
            break;
        }
        if (o->cache[i].used < victim->used)
            victim = &o->cache[i];
    }
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        sqlite3_finalize(st);
        return -1;
    }
    memcpy(copy, rest, len);
    sqlite3_finalize(victim->stmt);
    free(victim->sql);
    victim->stmt = st;
    victim->sql = copy;
    victim->len = len;
    victim->consumed = consumed;
    victim->used = ++o->clock;
    return 0;
}

/* Finalize every statement of the connection and free the cache's keys
 * (it closes). */
void dsq__stmts_free(actor_open *o)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(o->cache[i].stmt);
        free(o->cache[i].sql);
    }
    for (size_t i = 0; i < sizeof o->ctl / sizeof o->ctl[0]; i++)
        sqlite3_finalize(o->ctl[i]);
}

/* ---- binding -------------------------------------------------------------------- */

static int bind_value(sqlite3_stmt *st, int i, const dsq_value *v)
{
    switch (v->type) {
    case DSQ_V_INT: return sqlite3_bind_int64(st, i, v->i);
    case DSQ_V_REAL: return sqlite3_bind_double(st, i, v->d);
    case DSQ_V_TEXT: return sqlite3_bind_text64(st, i, v->p, v->n, SQLITE_STATIC, SQLITE_UTF8);
    case DSQ_V_BLOB: return sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_STATIC);
    default: return sqlite3_bind_null(st, i);
    }
}

/* Bind the request's parameters to `st`, marking which were used. */
int dsq__bind_params(dsq_call *c, sqlite3_stmt *st, const dsq_stmt_req *r, unsigned char *used)
{
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (r->named) {
            if (name == NULL || name[0] == '?') {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses positional parameters (?) but params is an object");
                return -1;
            }
            size_t k;
            for (k = 0; k < r->nparams; k++)
                if (strcmp(r->params[k].name, name + 1) == 0)
                    break;
            if (k == r->nparams) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "missing parameter %s", name);
                return -1;
            }
            used[k] = 1;
            if (bind_value(st, i, &r->params[k].v) != SQLITE_OK) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "cannot bind parameter %s", name);
                return -1;
            }
        } else {
            if (name != NULL && name[0] != '?') {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses named parameter %s but params is an array", name);
                return -1;
            }
            if ((size_t)i > r->nparams) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST,
                          "the SQL uses %d parameter%s but params has %zu", n, n == 1 ? "" : "s",
                          r->nparams);
                return -1;
            }
            used[i - 1] = 1;
            if (bind_value(st, i, &r->params[i - 1].v) != SQLITE_OK) {
                dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "cannot bind parameter ?%d", i);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- the engine's own statements ------------------------------------------------------ */

/* The transaction-control statements every request runs: prepared once
 * per connection instead of parsed each time. */
static const char *const ctl_sql[] = {"BEGIN", "COMMIT", "ROLLBACK", "BEGIN IMMEDIATE",
                                      "BEGIN DEFERRED"};
_Static_assert(sizeof ctl_sql / sizeof ctl_sql[0] == sizeof ((actor_open *)0)->ctl /
                                                         sizeof(sqlite3_stmt *),
               "one prepared slot per control statement");

/* Run our own SQL (the authorizer lets it pass). Returns SQLITE_OK or the
 * error. */
int dsq__internal_exec(actor_open *o, const char *sql)
{
    int rc = SQLITE_OK;
    size_t i = 0;
    while (i < sizeof ctl_sql / sizeof ctl_sql[0] && strcmp(ctl_sql[i], sql) != 0)
        i++;
    o->internal = true;
    if (i == sizeof ctl_sql / sizeof ctl_sql[0]) {
        rc = sqlite3_exec(o->db, sql, NULL, NULL, NULL);
    } else {
        if (o->ctl[i] == NULL)
            rc = sqlite3_prepare_v3(o->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &o->ctl[i], NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(o->ctl[i]);
            int rc2 = sqlite3_reset(o->ctl[i]);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc2 != SQLITE_OK ? rc2 : rc;
        }
    }
    o->internal = false;
    return rc;
}
