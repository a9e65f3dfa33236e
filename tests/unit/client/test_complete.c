/* Unit tests: client/complete (what Tab offers in the dosql shell) and
 * client/sql's test of statements that may change the schema (after
 * which the shell fetches the names anew). */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <string.h>

#include "client/complete.h"
#include "client/sql.h"

static const char *people_cols[] = {"id", "fullname", "note"};
static const char *pets_cols[] = {"id", "owner", "Name"};
static const dosql_table_names tables[] = {
    {"people", people_cols, 3},
    {"pets", pets_cols, 3},
    {"People_view", NULL, 0},
};
static const char *const keywords[] = {"SELECT", "SET", "PRAGMA", "FROM"};
static const dosql_names names = {tables, 3, keywords, 4};

/* Complete the word ending at the end of line (it starts after the last
 * blank) and check the choices are exactly the NULL-terminated rest. */
static void expect(const char *line, bool in_statement, const dosql_names *with, ...)
{
    size_t end = strlen(line), start = end;
    while (start > 0 && line[start - 1] != ' ')
        start--;
    dosql_completion c;
    cr_assert_eq(dosql_complete(line, start, end, in_statement, with, &c), 0, "%s", line);
    cr_assert_not(c.files, "'%s': files", line);
    va_list ap;
    va_start(ap, with);
    size_t i = 0;
    const char *want;
    while ((want = va_arg(ap, const char *)) != NULL) {
        cr_assert_lt(i, c.n, "'%s': %zu choices, wanted more (%s)", line, c.n, want);
        cr_assert_str_eq(c.items[i], want, "'%s': choice %zu", line, i);
        i++;
    }
    va_end(ap);
    cr_assert_eq(c.n, i, "'%s': %zu choices, wanted %zu (the first extra: %s)", line, c.n, i,
                 c.n > i ? c.items[i] : "");
    dosql_completion_free(&c);
}

Test(complete, dot_commands)
{
    expect(".", false, &names, ".dump", ".exit", ".export", ".headers", ".help", ".import", ".mode",
           ".output", ".quit", ".read", ".schema", ".tables", ".timing", NULL);
    expect(".t", false, &names, ".tables", ".timing", NULL);
    expect("  .he", false, &names, ".headers", ".help", NULL);
    expect(".IM", false, &names, ".import", NULL);
    expect(".nothing", false, &names, NULL);
    /* Without a schema the commands are still there. */
    expect(".qu", false, NULL, ".quit", NULL);
}

Test(complete, dot_arguments)
{
    expect(".schema pe", false, &names, "people", "People_view", "pets", NULL);
    expect(".dump pets", false, &names, "pets", NULL);
    expect(".import data.csv p", false, &names, "people", "People_view", "pets", NULL);
    expect(".mode m", false, &names, "markdown", NULL);
    expect(".mode ", false, &names, "csv", "json", "line", "markdown", "table", NULL);
    expect(".headers o", false, &names, "off", "on", NULL);
    expect(".timing of", false, &names, "off", NULL);
    /* Past the arguments a command takes, or for one that takes none: nothing. */
    expect(".schema people x", false, &names, NULL);
    expect(".tables p", false, &names, NULL);
    expect(".mode csv x", false, &names, NULL);
    /* File names are the line editor's. */
    const char *files[] = {".read sc", ".output /tmp/o", ".export x", ".import da"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        dosql_completion c;
        size_t end = strlen(files[i]), start = strrchr(files[i], ' ') - files[i] + 1;
        cr_assert_eq(dosql_complete(files[i], start, end, false, &names, &c), 0);
        cr_assert(c.files, "%s", files[i]);
        cr_assert_eq(c.n, 0);
        dosql_completion_free(&c);
    }
}

Test(complete, sql_names_and_keywords)
{
    /* Tables, views, every column once, keywords; ignoring case. */
    expect("SELECT * FROM pe", false, &names, "people", "People_view", "pets", NULL);
    expect("sel", false, &names, "SELECT", NULL);
    expect("SELECT i", false, &names, "id", NULL);
    expect("SELECT n", false, &names, "Name", "note", NULL);
    expect("s", false, &names, "SELECT", "SET", NULL);
    expect("SELECT zz", false, &names, NULL);
    /* T.prefix: T's columns, qualified as typed. */
    expect("SELECT people.", false, &names, "people.fullname", "people.id", "people.note", NULL);
    expect("SELECT PETS.n", false, &names, "PETS.Name", NULL);
    expect("SELECT nosuch.i", false, &names, NULL);
    /* Without a schema, nothing (not even keywords: they come with it). */
    expect("SELECT pe", false, NULL, NULL);
}

Test(complete, dot_inside_a_statement_is_sql)
{
    /* A line beginning with '.' while a statement is under way is SQL. */
    expect(".pe", true, &names, NULL);
    expect("  pe", true, &names, "people", "People_view", "pets", NULL);
    expect(".t", false, &names, ".tables", ".timing", NULL);
}

Test(complete, word_in_the_middle)
{
    /* Only the line up to the word's end counts. */
    const char *line = ".mode markdown and more";
    dosql_completion c;
    cr_assert_eq(dosql_complete(line, 6, 8, false, &names, &c), 0);
    cr_assert_eq(c.n, 1);
    cr_assert_str_eq(c.items[0], "markdown");
    dosql_completion_free(&c);
    cr_assert_eq(dosql_complete(line, 0, 3, false, &names, &c), 0);
    cr_assert_eq(c.n, 1);
    cr_assert_str_eq(c.items[0], ".mode");
    dosql_completion_free(&c);
}

Test(complete, schema_changes)
{
    const char *yes[] = {"CREATE TABLE t(x)", "  drop index i", "/* c */ ALTER TABLE t ADD y",
                         "ROLLBACK", "rollback to sp", "create virtual table v using fts5(a)"};
    const char *no[] = {"SELECT 1", "INSERT INTO created VALUES (1)", "-- CREATE\nSELECT 1", "", "UPDATE drop_me SET x = 1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(dosql_sql_may_change_schema(yes[i], strlen(yes[i])), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(dosql_sql_may_change_schema(no[i], strlen(no[i])), "%s", no[i]);
}
