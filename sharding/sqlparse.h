/* sqlparse — just enough of SQLite's SQL for the router to plan with.
 *
 * The router never decides what a statement means: SQLite does, on the
 * shards and at the router. What it needs is where the parts of a plain
 * statement are, to send them on unchanged or rewritten: the tokens
 * (SQLite's rules: comments, quoted strings and names, blobs, numbers,
 * parameters), and for a SELECT of the simple form
 *
 *   SELECT [DISTINCT|ALL] items FROM tables [WHERE e] [GROUP BY e, ...]
 *   [HAVING e] [ORDER BY term, ...] [LIMIT e [OFFSET e | , e]]
 *
 * (no WITH, no compound, no subquery anywhere, no WINDOW, no VALUES,
 * tables named, not nested joins or table-valued functions) the span of
 * each part. Anything else is "not simple": the caller evaluates the
 * statement some other way, never guesses. Spans are token index ranges
 * [b, e) into the token array. Pure functions; any thread. */
#ifndef DSQ_SQLPARSE_H
#define DSQ_SQLPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DSQ_TK_IDENT,   /* a bare word: a name or a keyword */
    DSQ_TK_QIDENT,  /* "name", `name` or [name] */
    DSQ_TK_STRING,  /* 'text' */
    DSQ_TK_NUMBER,
    DSQ_TK_BLOB,    /* x'hex' */
    DSQ_TK_PARAM,   /* ?, ?NNN, :name, @name, $name */
    DSQ_TK_LP,
    DSQ_TK_RP,
    DSQ_TK_COMMA,
    DSQ_TK_DOT,
    DSQ_TK_SEMI,
    DSQ_TK_OP,      /* any other operator: = == <> != < <= > >= || + - * / % & | ~ << >> -> ->> */
} dsq_tok_type;

typedef struct dsq_tok {
    dsq_tok_type type;
    uint32_t off, len; /* bytes of the SQL text */
} dsq_tok;

typedef struct dsq_span {
    size_t b, e;
} dsq_span;

/* The tokens of sql[0..len), spaces and comments left out: 0 and
 * *toks (malloc'd) with *n of them, or -1 with the reason (an unclosed
 * string, name or comment; a byte SQLite would not accept; out of
 * memory). */
int dsq_sql_tokenize(const char *sql, size_t len, dsq_tok **toks, size_t *n, char *err, size_t errlen);

/* Is token t the keyword kw (upper case; compared without regard to case)? */
bool dsq_tok_is(const char *sql, const dsq_tok *t, const char *kw);
/* Token t as a name (a bare word or a quoted name, unquoted): 0 and
 * out (NUL-terminated), or -1 (not a name, or longer than n - 1). */
int dsq_tok_name(const char *sql, const dsq_tok *t, char *out, size_t n);
/* The text from token b to the end of token e - 1 (b < e). */
static inline size_t dsq_span_off(const dsq_tok *t, dsq_span s) { return t[s.b].off; }
static inline size_t dsq_span_len(const dsq_tok *t, dsq_span s)
{
    return t[s.e - 1].off + t[s.e - 1].len - t[s.b].off;
}

#define DSQ_SEL_MAX 64 /* items, tables, terms of a simple SELECT */
#define DSQ_SQL_NAME 129

typedef enum { DSQ_JOIN_FIRST, DSQ_JOIN_INNER, DSQ_JOIN_LEFT, DSQ_JOIN_OUTER, DSQ_JOIN_CROSS } dsq_join_kind;

typedef struct dsq_from_table {
    char table[DSQ_SQL_NAME];
    char alias[DSQ_SQL_NAME]; /* "" when none */
    dsq_join_kind join;       /* how it joins what comes before it (FIRST: the first; a comma: CROSS) */
    dsq_span on;              /* its ON expression (b == e: none) */
    dsq_span using_;          /* its USING (names) list, parentheses left out (b == e: none) */
} dsq_from_table;

typedef struct dsq_sel_item {
    dsq_span expr;            /* the expression (or "*", "t.*") */
    char alias[DSQ_SQL_NAME]; /* its AS name, "" when none */
    bool star;                /* "*" or "t.*" */
} dsq_sel_item;

typedef struct dsq_order_term {
    dsq_span expr;            /* the term without its ASC/DESC/NULLS suffix */
    dsq_span suffix;          /* ASC, DESC, NULLS FIRST|LAST (b == e: none) */
} dsq_order_term;

typedef struct dsq_select {
    bool distinct;
    dsq_sel_item items[DSQ_SEL_MAX];
    size_t nitems;
    dsq_span from;            /* the FROM clause's text, without FROM */
    dsq_from_table tables[DSQ_SEL_MAX];
    size_t ntables;
    dsq_span where, having;   /* b == e: none */
    dsq_span group[DSQ_SEL_MAX];
    size_t ngroup;
    dsq_order_term order[DSQ_SEL_MAX];
    size_t norder;
    dsq_span limit, offset;   /* b == e: none */
    size_t end;               /* the token after the statement (a ';' or n) */
} dsq_select;

/* Parse toks[0..n) as a simple SELECT: 0 and *out, or -1 with why it is
 * not one (the caller's cue to take another way, not an error). */
int dsq_select_parse(const char *sql, const dsq_tok *t, size_t n, dsq_select *out, char *why, size_t whylen);

/* Split span s at its top-level ANDs (not those of BETWEEN ... AND, nor
 * inside parentheses or CASE ... END): up to max conjuncts in out; the
 * number found (which may be more than max). */
size_t dsq_sql_conjuncts(const char *sql, const dsq_tok *t, dsq_span s, dsq_span *out, size_t max);

/* Does span s hold the keyword kw at parenthesis depth 0? */
bool dsq_span_has_kw(const char *sql, const dsq_tok *t, dsq_span s, const char *kw);

/* The statement's first keyword (upper case, at most n - 1 bytes), "" if
 * it starts with no word. */
void dsq_sql_verb(const char *sql, const dsq_tok *t, size_t ntok, char *out, size_t n);

#endif
