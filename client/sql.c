/* sql — statement boundaries and the shell's own transaction statements.
 *
 * Divisions: boundaries (sqlite3_complete); a tiny tokenizer that skips
 * blanks and comments; classification. */
#include "client/sql.h"

#include <ctype.h>
#include <sqlite3.h>
#include <string.h>

#include "common/util.h"

/* ---- boundaries --------------------------------------------------------------- */

/* Whole statements ending in ';': sqlite3_complete() honours '...', "...",
 * `...`, [...], -- and block comments, and BEGIN...END of triggers. */
bool dosql_sql_complete(const char *s)
{
    return sqlite3_complete(s) != 0;
}

/* Try each ';' in turn: the first prefix that is complete is the first
 * statement. A ';' inside a string or trigger body leaves the prefix
 * incomplete, so it is skipped. */
size_t dosql_sql_next(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ';')
            continue;
        char saved = s[i + 1];
        s[i + 1] = '\0';
        int done = sqlite3_complete(s);
        s[i + 1] = saved;
        if (done)
            return i + 1;
    }
    return 0;
}

/* ---- tokens ------------------------------------------------------------------- */

/* Skip blanks, comments and semicolons from *p up to end. */
static void skip_blank(const char **p, const char *end)
{
    const char *s = *p;
    while (s < end) {
        if (isspace((unsigned char)*s) || *s == ';') {
            s++;
        } else if (*s == '-' && s + 1 < end && s[1] == '-') {
            while (s < end && *s != '\n')
                s++;
        } else if (*s == '/' && s + 1 < end && s[1] == '*') {
            s += 2;
            while (s < end && !(*s == '*' && s + 1 < end && s[1] == '/'))
                s++;
            s = s + 2 < end ? s + 2 : end;
        } else {
            break;
        }
    }
    *p = s;
}

/* The next token: a word of letters, digits and '_', or one other
 * character. Sets *len (0 at the end). Returns its start. */
static const char *next_token(const char **p, const char *end, size_t *len)
{
    skip_blank(p, end);
    const char *t = *p, *s = *p;
    if (s < end && (isalnum((unsigned char)*s) || *s == '_')) {
        while (s < end && (isalnum((unsigned char)*s) || *s == '_'))
            s++;
    } else if (s < end) {
        s++;
    }
    *len = (size_t)(s - t);
    *p = s;
    return t;
}

/* ---- classification ------------------------------------------------------------ */

/* Up to four tokens decide it: BEGIN [mode] [TRANSACTION], COMMIT|END
 * [TRANSACTION], ROLLBACK [TRANSACTION]; anything more (a savepoint name,
 * ROLLBACK TO, a transaction name) goes to the server as it is. */
dosql_stmt_kind dosql_sql_classify(const char *s, size_t n)
{
    const char *p = s, *end = s + n;
    const char *tok[4];
    size_t len[4];
    int count = 0;
    for (;;) {
        size_t l;
        const char *t = next_token(&p, end, &l);
        if (l == 0)
            break;
        if (count == 4)
            return DOSQL_STMT_SQL;
        tok[count] = t;
        len[count++] = l;
    }
    if (count == 0)
        return DOSQL_STMT_EMPTY;
    int i = 1;
    dosql_stmt_kind kind;
    if (dsq_strn_ieq(tok[0], len[0], "begin")) {
        kind = DOSQL_STMT_BEGIN;
        if (i < count && dsq_strn_ieq(tok[i], len[i], "deferred")) {
            i++;
        } else if (i < count && (dsq_strn_ieq(tok[i], len[i], "immediate") ||
                                 dsq_strn_ieq(tok[i], len[i], "exclusive"))) {
            kind = DOSQL_STMT_BEGIN_IMMEDIATE;
            i++;
        }
    } else if (dsq_strn_ieq(tok[0], len[0], "commit") || dsq_strn_ieq(tok[0], len[0], "end")) {
        kind = DOSQL_STMT_COMMIT;
    } else if (dsq_strn_ieq(tok[0], len[0], "rollback")) {
        kind = DOSQL_STMT_ROLLBACK;
    } else {
        return DOSQL_STMT_SQL;
    }
    if (i < count && dsq_strn_ieq(tok[i], len[i], "transaction"))
        i++;
    return i == count ? kind : DOSQL_STMT_SQL;
}

/* The first word decides (the shell looks at statements one at a time). */
bool dosql_sql_may_change_schema(const char *s, size_t n)
{
    const char *p = s;
    size_t len;
    const char *t = next_token(&p, s + n, &len);
    return dsq_strn_ieq(t, len, "create") || dsq_strn_ieq(t, len, "drop") ||
           dsq_strn_ieq(t, len, "alter") || dsq_strn_ieq(t, len, "rollback");
}
