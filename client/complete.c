/* complete — Tab completion's choices, from the line typed and a list of
 * names.
 *
 * Divisions: the candidates (a growing list, matched by prefix); the
 * context (which kind of word is being completed); the entry point. */
#include "client/complete.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const dosql_dot_commands[] = {
    ".dump", ".exit", ".export", ".headers", ".help", ".import", ".mode", ".output",
    ".quit", ".read", ".schema", ".tables", ".timing", NULL,
};

static const char *const modes[] = {"csv", "json", "line", "markdown", "table", NULL};
static const char *const on_off[] = {"off", "on", NULL};

/* ---- the candidates ---------------------------------------------------------------- */

/* Whether s begins with prefix[0..n), ignoring ASCII case. */
static bool has_prefix(const char *s, const char *prefix, size_t n)
{
    return strlen(s) >= n && strncasecmp(s, prefix, n) == 0;
}

/* Append qual + s to out when s begins with prefix[0..n). 0, or -1. */
static int offer(dosql_completion *out, size_t *cap, const char *qual, size_t qlen, const char *s,
                 const char *prefix, size_t n)
{
    if (s == NULL || !has_prefix(s, prefix, n))
        return 0;
    if (out->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char **items = realloc(out->items, ncap * sizeof *items);
        if (items == NULL)
            return -1;
        out->items = items;
        *cap = ncap;
    }
    size_t len = strlen(s);
    char *item = malloc(qlen + len + 1);
    if (item == NULL)
        return -1;
    memcpy(item, qual, qlen);
    memcpy(item + qlen, s, len + 1);
    out->items[out->n++] = item;
    return 0;
}

/* Every word of a NULL-terminated list that begins with prefix. */
static int offer_list(dosql_completion *out, size_t *cap, const char *const *list, const char *prefix,
                      size_t n)
{
    for (; *list != NULL; list++)
        if (offer(out, cap, "", 0, *list, prefix, n) != 0)
            return -1;
    return 0;
}

static int cmp_items(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcasecmp(x, y);
    return c != 0 ? c : strcmp(x, y);
}

/* Sort, and drop repeats (a column of several tables is offered once). */
static void sort_unique(dosql_completion *out)
{
    if (out->n == 0)
        return;
    qsort(out->items, out->n, sizeof *out->items, cmp_items);
    size_t k = 1;
    for (size_t i = 1; i < out->n; i++) {
        if (strcmp(out->items[i], out->items[k - 1]) == 0)
            free(out->items[i]);
        else
            out->items[k++] = out->items[i];
    }
    out->n = k;
}

/* ---- the context ------------------------------------------------------------------- */

/* Where the words of line[0..end) begin: word k at starts[k], up to max;
 * returns how many there are. Blanks separate words, as the dot commands
 * split them. */
static size_t word_starts(const char *line, size_t end, size_t *starts, size_t max)
{
    size_t count = 0, i = 0;
    while (i < end) {
        while (i < end && isspace((unsigned char)line[i]))
            i++;
        if (i == end)
            break;
        if (count < max)
            starts[count] = i;
        count++;
        while (i < end && !isspace((unsigned char)line[i]))
            i++;
    }
    return count;
}

/* The argument of dot command cmd[0..len) at index arg (1 = the first
 * after the command) into out. */
static int complete_argument(const char *cmd, size_t len, size_t arg, const dosql_names *names,
                             const char *prefix, size_t n, dosql_completion *out, size_t *cap)
{
#define IS(name) (len == strlen(name) && memcmp(cmd, name, len) == 0)
    bool table = ((IS(".schema") || IS(".dump")) && arg == 1) || (IS(".import") && arg == 2);
    if ((IS(".read") || IS(".output") || IS(".export") || IS(".import")) && arg == 1) {
        out->files = true;
        return 0;
    }
    if (IS(".mode") && arg == 1)
        return offer_list(out, cap, modes, prefix, n);
    if ((IS(".headers") || IS(".header") || IS(".timing")) && arg == 1)
        return offer_list(out, cap, on_off, prefix, n);
#undef IS
    for (size_t i = 0; table && names != NULL && i < names->ntables; i++)
        if (offer(out, cap, "", 0, names->tables[i].name, prefix, n) != 0)
            return -1;
    return 0;
}

/* A word of SQL: "T.prefix" gives T's columns (T matched ignoring case),
 * anything else the tables, the columns and the keywords. */
static int complete_sql(const dosql_names *names, const char *word, size_t n, dosql_completion *out,
                        size_t *cap)
{
    if (names == NULL)
        return 0;
    const char *dot = memrchr(word, '.', n);
    if (dot != NULL) {
        size_t qlen = (size_t)(dot - word) + 1, tlen = qlen - 1;
        for (size_t i = 0; i < names->ntables; i++) {
            const dosql_table_names *t = &names->tables[i];
            if (t->name == NULL || strlen(t->name) != tlen || strncasecmp(t->name, word, tlen) != 0)
                continue;
            for (size_t c = 0; c < t->ncolumns; c++)
                if (offer(out, cap, word, qlen, t->columns[c], dot + 1, n - qlen) != 0)
                    return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < names->ntables; i++) {
        const dosql_table_names *t = &names->tables[i];
        if (offer(out, cap, "", 0, t->name, word, n) != 0)
            return -1;
        for (size_t c = 0; c < t->ncolumns; c++)
            if (offer(out, cap, "", 0, t->columns[c], word, n) != 0)
                return -1;
    }
    for (size_t i = 0; i < names->nkeywords; i++)
        if (offer(out, cap, "", 0, names->keywords[i], word, n) != 0)
            return -1;
    return 0;
}

/* ---- the entry point --------------------------------------------------------------- */

int dosql_complete(const char *line, size_t start, size_t end, bool in_statement,
                   const dosql_names *names, dosql_completion *out)
{
    memset(out, 0, sizeof *out);
    if (start > end)
        return 0;
    const char *word = line + start;
    size_t n = end - start, cap = 0;
    size_t first = 0;
    while (first < start && isspace((unsigned char)line[first]))
        first++;
    int rc;
    if (!in_statement && first < end && line[first] == '.') {
        /* A dot command: the command itself, or one of its arguments
         * (counted by the words before this one). */
        size_t starts[2];
        size_t before = word_starts(line, start, starts, 2);
        if (before == 0) {
            rc = offer_list(out, &cap, dosql_dot_commands, word, n);
        } else {
            size_t clen = 0;
            while (starts[0] + clen < start && !isspace((unsigned char)line[starts[0] + clen]))
                clen++;
            rc = complete_argument(line + starts[0], clen, before, names, word, n, out, &cap);
        }
    } else {
        rc = complete_sql(names, word, n, out, &cap);
    }
    if (rc != 0) {
        dosql_completion_free(out);
        return -1;
    }
    sort_unique(out);
    return 0;
}

void dosql_completion_free(dosql_completion *out)
{
    for (size_t i = 0; i < out->n; i++)
        free(out->items[i]);
    free(out->items);
    memset(out, 0, sizeof *out);
}
