/* shell — what dosql does with its input: lines gathered into statements,
 * statements run on the server (BEGIN/COMMIT/ROLLBACK as JSON-RPC calls),
 * results printed, and the dot commands. The input source (terminal,
 * file, -c) is the caller's business. */
#ifndef DOSQL_SHELL_H
#define DOSQL_SHELL_H

#include <stdbool.h>
#include <stdio.h>

#include "client/complete.h"
#include "client/format.h"
#include "client/http.h"
#include "common/buf.h"

typedef struct dosql_shell {
    dosql_http *http; /* not owned */
    FILE *out;        /* not owned; where results go (errors go to stderr) */
    dosql_mode mode;  /* table, JSON lines or CSV */
    bool timing;      /* .timing on: "Time: X.XXX ms" after each statement */
    bool headers;     /* .headers on: CSV results begin with the column names */
    bool bail;        /* stop at the first error (scripts and -c) */
    char *txid;       /* owned; the open transaction's id, or NULL */
    dsq_buf pending;  /* input read but not yet a whole statement */
    int status;       /* exit status so far: 0, 1 (a statement failed), 3 (unreachable) */
    FILE *stdout_;    /* not owned: where results go without .output (out is then its file) */
    int depth;        /* .read inside .read: how deep */
    /* What Tab completes from: the last getSchema's answer (NULL until
     * Tab needs it, and again after a statement that may change the
     * schema), its tables and columns, and SQLite's keywords. */
    json_t *schema;             /* owned, or NULL */
    dosql_table_names *tables;  /* owned array; its strings are schema's */
    const char **columns;       /* owned array: every table's columns back to back */
    char **keywords;            /* owned, each malloc'd; made once */
    dosql_names names;          /* the above, as dosql_complete takes them */
} dosql_shell;

/* Start a shell on http, printing to out. */
void dosql_shell_init(dosql_shell *sh, dosql_http *http, FILE *out, dosql_mode mode, bool bail);

/* Roll back a transaction left open (saying so on stderr) and free what
 * the shell holds. */
void dosql_shell_close(dosql_shell *sh);

/* Take one line of input (without its newline). A dot command runs at
 * once; SQL runs as soon as a statement is whole (ends with ';').
 * Returns 0 to read on, or -1 to stop: .quit, or an error when bailing. */
int dosql_shell_line(dosql_shell *sh, const char *line, size_t len);

/* Every line of f, as dosql_shell_line takes them (line ends of LF or
 * CRLF). Returns 0, or -1 to stop (as dosql_shell_line), or -2 when f
 * could not be read (errno). */
int dosql_shell_feed(dosql_shell *sh, FILE *f);

/* The input has ended: run whatever is left, even without its ';'.
 * Returns 0, or -1 after an error. */
int dosql_shell_end(dosql_shell *sh);

/* Forget the input of a statement not yet whole (Ctrl-C at the prompt). */
void dosql_shell_discard(dosql_shell *sh);

/* True while a statement has begun but is not whole (continuation prompt). */
bool dosql_shell_continuing(const dosql_shell *sh);

/* True while a transaction is open. */
bool dosql_shell_in_txn(const dosql_shell *sh);

/* The names Tab completes: the tables, views and their columns (fetched
 * with getSchema when the shell has none) and SQL's keywords. When the
 * schema cannot be had, the keywords alone (nothing is printed: the
 * line being edited is on the screen). */
const dosql_names *dosql_shell_names(dosql_shell *sh);

#endif
