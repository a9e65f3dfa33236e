/* complete — what Tab offers in the dosql shell, as a pure function of
 * the line typed and a list of names: no terminal, no server, so that it
 * is tested alone. dosql.c hands it to libedit's readline completion;
 * the shell keeps the names (shell.c, from getSchema). */
#ifndef DOSQL_COMPLETE_H
#define DOSQL_COMPLETE_H

#include <stdbool.h>
#include <stddef.h>

/* One table or view and its columns (borrowed strings). */
typedef struct dosql_table_names {
    const char *name;
    const char **columns;
    size_t ncolumns;
} dosql_table_names;

/* What may be completed besides the dot commands (all borrowed). */
typedef struct dosql_names {
    const dosql_table_names *tables;
    size_t ntables;
    const char *const *keywords; /* SQL keywords, offered in SQL beside the names */
    size_t nkeywords;
} dosql_names;

/* The words that may replace the one being completed. */
typedef struct dosql_completion {
    bool files;   /* the word is a file name: the line editor's own completion */
    char **items; /* owned: sorted (ignoring case), without repeats */
    size_t n;
} dosql_completion;

/* Complete the word line[start..end) of the line typed so far (line
 * holds at least end bytes; the rest is not looked at). in_statement:
 * an SQL statement is under way on earlier lines, so a '.' first is SQL,
 * not a dot command. names may be NULL (no schema known).
 *
 * - the first word of a dot command: the commands;
 * - .schema, .dump, .import's TABLE: tables and views;
 * - .read, .output, .export, .import's FILE: files (out->files);
 * - .mode: its modes; .headers and .timing: on, off;
 * - in SQL: "T.prefix" gives T's columns as "T.column"; any other word,
 *   the tables and views, every column and the keywords.
 * A candidate matches when it begins with the word, ignoring ASCII case.
 * Returns 0, or -1 when out of memory (out is then empty). */
int dosql_complete(const char *line, size_t start, size_t end, bool in_statement,
                   const dosql_names *names, dosql_completion *out);

/* Free what out holds and empty it. */
void dosql_completion_free(dosql_completion *out);

/* The dot commands Tab offers (those .help lists), NULL-terminated. */
extern const char *const dosql_dot_commands[];

#endif
