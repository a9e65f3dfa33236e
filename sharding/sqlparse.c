/* sqlparse — tokens and the parts of a simple SELECT (sqlparse.h). */
#include "sharding/sqlparse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- tokens ------------------------------------------------------------------------------ */

static bool id_start(unsigned char c) { return isalpha(c) || c == '_' || c >= 0x80; }
static bool id_char(unsigned char c) { return isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

/* The length of the token at s[0..n) (n > 0, not a space or a comment),
 * its type in *type; 0 when it is not one. */
static size_t scan(const char *s, size_t n, dsq_tok_type *type)
{
    unsigned char c = (unsigned char)s[0];
    size_t i = 1;
    switch (c) {
    case '(': *type = DSQ_TK_LP; return 1;
    case ')': *type = DSQ_TK_RP; return 1;
    case ',': *type = DSQ_TK_COMMA; return 1;
    case ';': *type = DSQ_TK_SEMI; return 1;
    case '+': case '*': case '/': case '%': case '&': case '~':
        *type = DSQ_TK_OP;
        return 1;
    case '-':
        *type = DSQ_TK_OP;
        if (n > 1 && s[1] == '>')
            return n > 2 && s[2] == '>' ? 3 : 2;
        return 1;
    case '=':
        *type = DSQ_TK_OP;
        return n > 1 && s[1] == '=' ? 2 : 1;
    case '<':
        *type = DSQ_TK_OP;
        return n > 1 && (s[1] == '=' || s[1] == '>' || s[1] == '<') ? 2 : 1;
    case '>':
        *type = DSQ_TK_OP;
        return n > 1 && (s[1] == '=' || s[1] == '>') ? 2 : 1;
    case '!':
        *type = DSQ_TK_OP;
        return n > 1 && s[1] == '=' ? 2 : 0;
    case '|':
        *type = DSQ_TK_OP;
        return n > 1 && s[1] == '|' ? 2 : 1;
    case '\'': case '"': case '`': {
        *type = c == '\'' ? DSQ_TK_STRING : DSQ_TK_QIDENT;
        for (; i < n; i++) {
            if ((unsigned char)s[i] == c) {
                if (i + 1 < n && (unsigned char)s[i + 1] == c) {
                    i++;
                    continue;
                }
                return i + 1;
            }
        }
        return 0;
    }
    case '[':
        *type = DSQ_TK_QIDENT;
        for (; i < n; i++)
            if (s[i] == ']')
                return i + 1;
        return 0;
    case '?':
        *type = DSQ_TK_PARAM;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        return i;
    case ':': case '@': case '$':
        *type = DSQ_TK_PARAM;
        while (i < n && id_char((unsigned char)s[i]))
            i++;
        return i > 1 ? i : 0;
    case '.':
        if (!(n > 1 && isdigit((unsigned char)s[1]))) {
            *type = DSQ_TK_DOT;
            return 1;
        }
        break; /* a number: .5 */
    default:
        break;
    }
    if ((c == 'x' || c == 'X') && n > 1 && s[1] == '\'') {
        *type = DSQ_TK_BLOB;
        for (i = 2; i < n && isxdigit((unsigned char)s[i]); i++)
            ;
        return i < n && s[i] == '\'' && (i - 2) % 2 == 0 ? i + 1 : 0;
    }
    if (isdigit(c) || c == '.') {
        *type = DSQ_TK_NUMBER;
        if (c == '0' && n > 2 && (s[1] == 'x' || s[1] == 'X') && isxdigit((unsigned char)s[2])) {
            for (i = 2; i < n && isxdigit((unsigned char)s[i]); i++)
                ;
            return i;
        }
        i = 0;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i < n && s[i] == '.')
            for (i++; i < n && isdigit((unsigned char)s[i]); i++)
                ;
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1;
            if (j < n && (s[j] == '+' || s[j] == '-'))
                j++;
            if (j < n && isdigit((unsigned char)s[j])) {
                for (i = j; i < n && isdigit((unsigned char)s[i]); i++)
                    ;
            }
        }
        return i;
    }
    if (id_start(c)) {
        *type = DSQ_TK_IDENT;
        while (i < n && id_char((unsigned char)s[i]))
            i++;
        return i;
    }
    return 0;
}

int dsq_sql_tokenize(const char *sql, size_t len, dsq_tok **toks, size_t *n, char *err, size_t errlen)
{
    size_t cap = 32, cnt = 0;
    dsq_tok *v = malloc(cap * sizeof *v);
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)sql[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            i++;
            continue;
        }
        if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (sql[j] == '*' && sql[j + 1] == '/') {
                    end = sql + j + 2;
                    break;
                }
            i = end ? (size_t)(end - sql) : len; /* (SQLite lets a comment run to the end) */
            continue;
        }
        dsq_tok_type type = DSQ_TK_OP;
        size_t tl = scan(sql + i, len - i, &type);
        if (tl == 0) {
            snprintf(err, errlen, "unrecognized token at byte %zu: \"%.*s\"", i, (int)(len - i < 20 ? len - i : 20),
                     sql + i);
            free(v);
            return -1;
        }
        if (cnt == cap) {
            dsq_tok *nv = realloc(v, 2 * cap * sizeof *v);
            if (nv == NULL) {
                snprintf(err, errlen, "out of memory");
                free(v);
                return -1;
            }
            v = nv;
            cap *= 2;
        }
        v[cnt++] = (dsq_tok){type, (uint32_t)i, (uint32_t)tl};
        i += tl;
    }
    *toks = v;
    *n = cnt;
    return 0;
}

bool dsq_tok_is(const char *sql, const dsq_tok *t, const char *kw)
{
    return t->type == DSQ_TK_IDENT && strlen(kw) == t->len && strncasecmp(sql + t->off, kw, t->len) == 0;
}

int dsq_tok_name(const char *sql, const dsq_tok *t, char *out, size_t n)
{
    const char *p = sql + t->off;
    size_t len = t->len, k = 0;
    if (t->type == DSQ_TK_IDENT) {
        if (len >= n)
            return -1;
        memcpy(out, p, len);
        out[len] = '\0';
        return 0;
    }
    if (t->type != DSQ_TK_QIDENT)
        return -1;
    char q = p[0] == '[' ? ']' : p[0];
    for (size_t i = 1; i + 1 < len; i++) {
        if (p[i] == q && q != ']')
            i++; /* a doubled quote */
        if (k + 1 >= n)
            return -1;
        out[k++] = p[i];
    }
    out[k] = '\0';
    return 0;
}

/* ---- simple SELECTs ------------------------------------------------------------------------ */

/* Keywords that end a FROM table reference or an expression list. */
static bool clause_kw(const char *sql, const dsq_tok *t)
{
    static const char *const kws[] = {"WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "UNION",
                                      "INTERSECT", "EXCEPT", "OFFSET", NULL};
    for (size_t i = 0; kws[i]; i++)
        if (dsq_tok_is(sql, t, kws[i]))
            return true;
    return false;
}

static bool join_kw(const char *sql, const dsq_tok *t)
{
    static const char *const kws[] = {"JOIN", "LEFT", "RIGHT", "FULL", "INNER", "CROSS", "NATURAL", "OUTER",
                                      NULL};
    for (size_t i = 0; kws[i]; i++)
        if (dsq_tok_is(sql, t, kws[i]))
            return true;
    return false;
}

typedef struct parser {
    const char *sql;
    const dsq_tok *t;
    size_t n, i;
    char *why;
    size_t whylen;
} parser;

static int notsimple(parser *p, const char *what)
{
    snprintf(p->why, p->whylen, "%s", what);
    return -1;
}

static bool at(parser *p, const char *kw) { return p->i < p->n && dsq_tok_is(p->sql, &p->t[p->i], kw); }

/* Move to the next token at depth 0 for which stop() is true (or the end
 * or a ';'), skipping balanced parentheses and CASE ... END. -1 on a
 * parenthesis that does not balance. */
static int skip_expr(parser *p, bool (*stop)(parser *p))
{
    int depth = 0, cases = 0;
    for (; p->i < p->n; p->i++) {
        const dsq_tok *t = &p->t[p->i];
        if (t->type == DSQ_TK_LP) {
            depth++;
        } else if (t->type == DSQ_TK_RP) {
            if (--depth < 0)
                return -1;
        } else if (depth == 0 && dsq_tok_is(p->sql, t, "CASE")) {
            cases++;
        } else if (depth == 0 && cases > 0 && dsq_tok_is(p->sql, t, "END")) {
            cases--;
        } else if (depth == 0 && cases == 0 && (t->type == DSQ_TK_SEMI || stop(p))) {
            return 0;
        }
    }
    return depth == 0 ? 0 : -1;
}

static bool stop_comma_or_clause(parser *p)
{
    const dsq_tok *t = &p->t[p->i];
    return t->type == DSQ_TK_COMMA || clause_kw(p->sql, t) || dsq_tok_is(p->sql, t, "FROM");
}

static bool stop_clause(parser *p) { return clause_kw(p->sql, &p->t[p->i]); }

static bool stop_on(parser *p)
{
    const dsq_tok *t = &p->t[p->i];
    return t->type == DSQ_TK_COMMA || clause_kw(p->sql, t) || join_kw(p->sql, t);
}

static bool stop_limit(parser *p)
{
    const dsq_tok *t = &p->t[p->i];
    return t->type == DSQ_TK_COMMA || dsq_tok_is(p->sql, t, "OFFSET");
}

static bool is_name(const dsq_tok *t) { return t->type == DSQ_TK_IDENT || t->type == DSQ_TK_QIDENT; }

/* Words that cannot be a bare alias (they carry on the statement). */
static bool reserved(const char *sql, const dsq_tok *t)
{
    static const char *const kws[] = {"ON", "USING", "INDEXED", "NOT", "AS", "ASC", "DESC", "NULLS", "COLLATE",
                                      NULL};
    if (t->type != DSQ_TK_IDENT)
        return false;
    for (size_t i = 0; kws[i]; i++)
        if (dsq_tok_is(sql, t, kws[i]))
            return true;
    return clause_kw(sql, t) || join_kw(sql, t) || dsq_tok_is(sql, t, "FROM");
}

/* [AS] alias after an item or a table, into out. */
static int opt_alias(parser *p, char *out)
{
    out[0] = '\0';
    if (at(p, "AS")) {
        p->i++;
        if (p->i >= p->n || !(is_name(&p->t[p->i]) || p->t[p->i].type == DSQ_TK_STRING))
            return notsimple(p, "AS without a name");
    } else if (!(p->i < p->n && (is_name(&p->t[p->i]) || p->t[p->i].type == DSQ_TK_STRING) &&
                 !reserved(p->sql, &p->t[p->i]))) {
        return 0;
    }
    const dsq_tok *t = &p->t[p->i];
    dsq_tok as_name = *t;
    if (t->type == DSQ_TK_STRING)
        as_name.type = DSQ_TK_QIDENT; /* 'alias' reads as a name */
    if (dsq_tok_name(p->sql, &as_name, out, DSQ_SQL_NAME) != 0)
        return notsimple(p, "an alias too long");
    p->i++;
    return 0;
}

static int parse_items(parser *p, dsq_select *s)
{
    for (;;) {
        if (s->nitems == DSQ_SEL_MAX)
            return notsimple(p, "too many result columns");
        dsq_sel_item *it = &s->items[s->nitems++];
        size_t b = p->i;
        if (skip_expr(p, stop_comma_or_clause) != 0)
            return notsimple(p, "unbalanced parentheses");
        /* The expression may end in [AS] alias: find it from the end. */
        size_t e = p->i;
        if (e == b)
            return notsimple(p, "an empty result column");
        it->alias[0] = '\0';
        const dsq_tok *last = &p->t[e - 1];
        if (e - b >= 2 && (is_name(last) || last->type == DSQ_TK_STRING) &&
            dsq_tok_is(p->sql, &p->t[e - 2], "AS")) {
            dsq_tok nm = *last;
            if (nm.type == DSQ_TK_STRING)
                nm.type = DSQ_TK_QIDENT;
            if (dsq_tok_name(p->sql, &nm, it->alias, sizeof it->alias) != 0)
                return notsimple(p, "an alias too long");
            e -= 2;
        } else if (e - b >= 2 && is_name(last) && !reserved(p->sql, last) &&
                   p->t[e - 2].type != DSQ_TK_DOT && p->t[e - 2].type != DSQ_TK_OP &&
                   p->t[e - 2].type != DSQ_TK_COMMA && !dsq_tok_is(p->sql, &p->t[e - 2], "COLLATE") &&
                   (is_name(&p->t[e - 2]) || p->t[e - 2].type == DSQ_TK_RP || p->t[e - 2].type == DSQ_TK_NUMBER ||
                    p->t[e - 2].type == DSQ_TK_STRING || p->t[e - 2].type == DSQ_TK_PARAM ||
                    p->t[e - 2].type == DSQ_TK_BLOB)) {
            /* "expr alias": a name after a complete operand. Keywords
             * ending an expression (END, NULL, ...) are not aliases. */
            static const char *const ends[] = {"END", "NULL", "TRUE", "FALSE", "CURRENT_TIME", "CURRENT_DATE",
                                               "CURRENT_TIMESTAMP", "ISNULL", "NOTNULL", NULL};
            bool kw = false;
            for (size_t k = 0; ends[k]; k++)
                kw |= dsq_tok_is(p->sql, last, ends[k]);
            /* Two bare words in a row that are not keyword + alias
             * (e.g. "x IS NOT NULL", "a NOT LIKE b") are checked by
             * the operand before: a keyword operator never ends one. */
            static const char *const ops[] = {"IS", "NOT", "AND", "OR", "LIKE", "GLOB", "IN", "BETWEEN",
                                              "ESCAPE", "MATCH", "REGEXP", "THEN", "ELSE", "WHEN", "CASE",
                                              "DISTINCT", NULL};
            bool op = false;
            for (size_t k = 0; ops[k]; k++)
                op |= dsq_tok_is(p->sql, &p->t[e - 2], ops[k]);
            if (!kw && !op) {
                if (dsq_tok_name(p->sql, last, it->alias, sizeof it->alias) != 0)
                    return notsimple(p, "an alias too long");
                e -= 1;
            }
        }
        it->expr = (dsq_span){b, e};
        it->star = (e - b == 1 && p->t[b].type == DSQ_TK_OP && p->t[b].len == 1 && p->sql[p->t[b].off] == '*') ||
                   (e - b == 3 && is_name(&p->t[b]) && p->t[b + 1].type == DSQ_TK_DOT &&
                    p->t[b + 2].type == DSQ_TK_OP && p->sql[p->t[b + 2].off] == '*');
        if (p->i < p->n && p->t[p->i].type == DSQ_TK_COMMA) {
            p->i++;
            continue;
        }
        return 0;
    }
}

static int parse_from(parser *p, dsq_select *s)
{
    size_t start = p->i;
    dsq_join_kind kind = DSQ_JOIN_FIRST;
    for (;;) {
        if (p->i >= p->n)
            return notsimple(p, "FROM without a table");
        if (p->t[p->i].type == DSQ_TK_LP)
            return notsimple(p, "a subquery or nested join in FROM");
        if (!is_name(&p->t[p->i]) || reserved(p->sql, &p->t[p->i]))
            return notsimple(p, "FROM without a table name");
        if (s->ntables == DSQ_SEL_MAX)
            return notsimple(p, "too many tables");
        dsq_from_table *ft = &s->tables[s->ntables++];
        memset(ft, 0, sizeof *ft);
        ft->join = kind;
        if (dsq_tok_name(p->sql, &p->t[p->i], ft->table, sizeof ft->table) != 0)
            return notsimple(p, "a table name too long");
        p->i++;
        if (p->i < p->n && p->t[p->i].type == DSQ_TK_DOT)
            return notsimple(p, "a table named with its schema");
        if (p->i < p->n && p->t[p->i].type == DSQ_TK_LP)
            return notsimple(p, "a table-valued function");
        if (opt_alias(p, ft->alias) != 0)
            return -1;
        if (at(p, "INDEXED")) {
            p->i += 3; /* INDEXED BY name */
        } else if (at(p, "NOT") && p->i + 1 < p->n && dsq_tok_is(p->sql, &p->t[p->i + 1], "INDEXED")) {
            p->i += 2;
        }
        if (at(p, "ON")) {
            if (kind == DSQ_JOIN_FIRST)
                return notsimple(p, "ON on the first table");
            size_t b = ++p->i;
            if (skip_expr(p, stop_on) != 0)
                return notsimple(p, "unbalanced parentheses");
            ft->on = (dsq_span){b, p->i};
        } else if (at(p, "USING")) {
            p->i++;
            if (p->i >= p->n || p->t[p->i].type != DSQ_TK_LP)
                return notsimple(p, "USING without a list");
            size_t b = ++p->i;
            while (p->i < p->n && p->t[p->i].type != DSQ_TK_RP)
                p->i++;
            if (p->i >= p->n)
                return notsimple(p, "unbalanced parentheses");
            ft->using_ = (dsq_span){b, p->i};
            p->i++;
        }
        if (p->i >= p->n || p->t[p->i].type == DSQ_TK_SEMI || clause_kw(p->sql, &p->t[p->i]))
            break;
        /* The next join. */
        if (p->t[p->i].type == DSQ_TK_COMMA) {
            kind = DSQ_JOIN_CROSS;
            p->i++;
            continue;
        }
        kind = DSQ_JOIN_INNER;
        if (at(p, "NATURAL"))
            return notsimple(p, "a NATURAL join");
        if (at(p, "LEFT")) {
            kind = DSQ_JOIN_LEFT;
            p->i++;
        } else if (at(p, "RIGHT") || at(p, "FULL")) {
            kind = DSQ_JOIN_OUTER;
            p->i++;
        } else if (at(p, "INNER")) {
            p->i++;
        } else if (at(p, "CROSS")) {
            kind = DSQ_JOIN_CROSS;
            p->i++;
        }
        if (at(p, "OUTER"))
            p->i++;
        if (!at(p, "JOIN"))
            return notsimple(p, "a join not understood");
        p->i++;
    }
    s->from = (dsq_span){start, p->i};
    return 0;
}

/* e [, e ...] into v (at most DSQ_SEL_MAX). */
static int parse_list(parser *p, dsq_span *v, size_t *nv)
{
    for (;;) {
        if (*nv == DSQ_SEL_MAX)
            return notsimple(p, "too many terms");
        size_t b = p->i;
        if (skip_expr(p, stop_comma_or_clause) != 0)
            return notsimple(p, "unbalanced parentheses");
        if (p->i == b)
            return notsimple(p, "an empty term");
        v[(*nv)++] = (dsq_span){b, p->i};
        if (p->i < p->n && p->t[p->i].type == DSQ_TK_COMMA) {
            p->i++;
            continue;
        }
        return 0;
    }
}

static int parse_order(parser *p, dsq_select *s)
{
    dsq_span v[DSQ_SEL_MAX];
    size_t nv = 0;
    if (parse_list(p, v, &nv) != 0)
        return -1;
    for (size_t k = 0; k < nv; k++) {
        dsq_order_term *o = &s->order[s->norder++];
        size_t e = v[k].e;
        /* Suffix: [ASC|DESC] [NULLS FIRST|LAST], from the end. */
        size_t se = e;
        if (e - v[k].b >= 3 && dsq_tok_is(p->sql, &p->t[e - 2], "NULLS") &&
            (dsq_tok_is(p->sql, &p->t[e - 1], "FIRST") || dsq_tok_is(p->sql, &p->t[e - 1], "LAST")))
            e -= 2;
        if (e - v[k].b >= 2 && (dsq_tok_is(p->sql, &p->t[e - 1], "ASC") || dsq_tok_is(p->sql, &p->t[e - 1], "DESC")))
            e -= 1;
        o->expr = (dsq_span){v[k].b, e};
        o->suffix = (dsq_span){e, se};
    }
    return 0;
}

int dsq_select_parse(const char *sql, const dsq_tok *t, size_t n, dsq_select *s, char *why, size_t whylen)
{
    parser p = {sql, t, n, 0, why, whylen};
    memset(s, 0, sizeof *s);
    /* Nothing nested, nothing compound. */
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (dsq_tok_is(sql, &t[i], "SELECT") || dsq_tok_is(sql, &t[i], "VALUES")))
            return notsimple(&p, "a subquery");
        if (dsq_tok_is(sql, &t[i], "UNION") || dsq_tok_is(sql, &t[i], "INTERSECT") ||
            dsq_tok_is(sql, &t[i], "EXCEPT"))
            return notsimple(&p, "a compound SELECT");
        if (dsq_tok_is(sql, &t[i], "OVER") || dsq_tok_is(sql, &t[i], "WINDOW") || dsq_tok_is(sql, &t[i], "FILTER"))
            return notsimple(&p, "a window function or FILTER");
        if (t[i].type == DSQ_TK_SEMI) {
            for (size_t j = i + 1; j < n; j++)
                if (t[j].type != DSQ_TK_SEMI)
                    return notsimple(&p, "more than one statement");
            n = i;
            p.n = n;
            break;
        }
    }
    if (!at(&p, "SELECT"))
        return notsimple(&p, "not a SELECT");
    p.i++;
    if (at(&p, "DISTINCT")) {
        s->distinct = true;
        p.i++;
    } else if (at(&p, "ALL")) {
        p.i++;
    }
    if (parse_items(&p, s) != 0)
        return -1;
    if (!at(&p, "FROM"))
        return notsimple(&p, "no FROM");
    p.i++;
    if (parse_from(&p, s) != 0)
        return -1;
    if (at(&p, "WHERE")) {
        size_t b = ++p.i;
        if (skip_expr(&p, stop_clause) != 0)
            return notsimple(&p, "unbalanced parentheses");
        s->where = (dsq_span){b, p.i};
        if (b == p.i)
            return notsimple(&p, "an empty WHERE");
    }
    if (at(&p, "GROUP")) {
        p.i++;
        if (!at(&p, "BY"))
            return notsimple(&p, "GROUP without BY");
        p.i++;
        if (parse_list(&p, s->group, &s->ngroup) != 0)
            return -1;
    }
    if (at(&p, "HAVING")) {
        size_t b = ++p.i;
        if (skip_expr(&p, stop_clause) != 0)
            return notsimple(&p, "unbalanced parentheses");
        s->having = (dsq_span){b, p.i};
        if (b == p.i)
            return notsimple(&p, "an empty HAVING");
    }
    if (at(&p, "ORDER")) {
        p.i++;
        if (!at(&p, "BY"))
            return notsimple(&p, "ORDER without BY");
        p.i++;
        if (parse_order(&p, s) != 0)
            return -1;
    }
    if (at(&p, "LIMIT")) {
        size_t b = ++p.i;
        if (skip_expr(&p, stop_limit) != 0)
            return notsimple(&p, "unbalanced parentheses");
        dsq_span first = {b, p.i};
        if (b == p.i)
            return notsimple(&p, "an empty LIMIT");
        if (p.i < n && (t[p.i].type == DSQ_TK_COMMA || at(&p, "OFFSET"))) {
            bool comma = t[p.i].type == DSQ_TK_COMMA;
            size_t b2 = ++p.i;
            if (skip_expr(&p, stop_clause) != 0 || p.i == b2)
                return notsimple(&p, "an empty OFFSET");
            dsq_span second = {b2, p.i};
            /* LIMIT a, b: a is the offset. */
            s->limit = comma ? second : first;
            s->offset = comma ? first : second;
        } else {
            s->limit = first;
        }
    }
    if (p.i != n)
        return notsimple(&p, "a clause not understood");
    s->end = n;
    return 0;
}

size_t dsq_sql_conjuncts(const char *sql, const dsq_tok *t, dsq_span s, dsq_span *out, size_t max)
{
    size_t cnt = 0, b = s.b;
    int depth = 0, cases = 0, between = 0;
    for (size_t i = s.b; i < s.e; i++) {
        if (t[i].type == DSQ_TK_LP) {
            depth++;
        } else if (t[i].type == DSQ_TK_RP) {
            depth--;
        } else if (depth == 0) {
            if (dsq_tok_is(sql, &t[i], "CASE"))
                cases++;
            else if (cases > 0 && dsq_tok_is(sql, &t[i], "END"))
                cases--;
            else if (cases == 0 && dsq_tok_is(sql, &t[i], "BETWEEN"))
                between++;
            else if (cases == 0 && dsq_tok_is(sql, &t[i], "AND")) {
                if (between > 0) {
                    between--;
                    continue;
                }
                if (cnt < max)
                    out[cnt] = (dsq_span){b, i};
                cnt++;
                b = i + 1;
            }
        }
    }
    if (b < s.e) {
        if (cnt < max)
            out[cnt] = (dsq_span){b, s.e};
        cnt++;
    }
    return cnt;
}

bool dsq_span_has_kw(const char *sql, const dsq_tok *t, dsq_span s, const char *kw)
{
    int depth = 0;
    for (size_t i = s.b; i < s.e; i++) {
        if (t[i].type == DSQ_TK_LP)
            depth++;
        else if (t[i].type == DSQ_TK_RP)
            depth--;
        else if (depth == 0 && dsq_tok_is(sql, &t[i], kw))
            return true;
    }
    return false;
}

void dsq_sql_verb(const char *sql, const dsq_tok *t, size_t ntok, char *out, size_t n)
{
    out[0] = '\0';
    if (ntok == 0 || t[0].type != DSQ_TK_IDENT || t[0].len >= n)
        return;
    for (size_t i = 0; i < t[0].len; i++)
        out[i] = (char)toupper((unsigned char)sql[t[0].off + i]);
    out[t[0].len] = '\0';
}
