/* format — QueryResults as an aligned table, JSON lines or CSV.
 *
 * Divisions: values as text (numbers, base64 blobs, bigints); the table;
 * JSON lines; CSV; the entry point.
 *
 * Values arrive in the wire encoding of DESIGN 3.3: JSON numbers,
 * strings and null, {"$bigint": "..."}, {"$bytes": "<base64>"}; the
 * transport adds {"$real": "Infinity"} for dosqld's 1e999. */
#include "client/format.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"

/* ---- values as text ---------------------------------------------------------------- */

/* The shortest text that reads back as d, with ".0" when it would look
 * like an integer (a REAL stays visibly REAL, as dosqld writes it). */
static void real_text(char *buf, size_t n, double d)
{
    if (isinf(d)) {
        snprintf(buf, n, "%s", d > 0 ? "Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (strpbrk(buf, ".eEn") == NULL && strlen(buf) + 2 < n)
        strcat(buf, ".0");
}

/* Append x'<hex>' for the base64 text s[0..n) to b. Returns 0, or -1 when
 * s is not base64 (b may hold part of the output). */
static int hex_blob(dsq_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char *bytes = malloc(n / 4 * 3 + 2);
    long len = bytes ? dsq_base64_decode(s, n, bytes) : -1;
    int rv = len < 0 ? -1 : dsq_buf_puts(b, "x'");
    for (long i = 0; rv == 0 && i < len; i++) {
        char two[2] = {hex[bytes[i] >> 4], hex[bytes[i] & 15]};
        rv = dsq_buf_append(b, two, 2);
    }
    free(bytes);
    return rv == 0 ? dsq_buf_puts(b, "'") : -1;
}

/* Append the text of v (see format.h). */
int dosql_format_value(dsq_buf *b, const json_t *v, const char *null_text)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_NULL:
        return dsq_buf_puts(b, null_text);
    case JSON_INTEGER:
        return dsq_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        real_text(num, sizeof num, json_real_value(v));
        return dsq_buf_puts(b, num);
    case JSON_STRING:
        return dsq_buf_append(b, json_string_value(v), json_string_length(v));
    case JSON_TRUE:
        return dsq_buf_puts(b, "true");
    case JSON_FALSE:
        return dsq_buf_puts(b, "false");
    case JSON_OBJECT: {
        const json_t *x;
        if ((x = json_object_get(v, "$bigint")) != NULL && json_is_string(x))
            return dsq_buf_append(b, json_string_value(x), json_string_length(x));
        if ((x = json_object_get(v, "$real")) != NULL && json_is_string(x))
            return dsq_buf_puts(b, strcmp(json_string_value(x), "Infinity") == 0 ? "Inf" : "-Inf");
        size_t mark = b->len;
        if ((x = json_object_get(v, "$bytes")) != NULL && json_is_string(x) &&
            hex_blob(b, json_string_value(x), json_string_length(x)) == 0)
            return 0;
        b->len = mark; /* not a blob after all: show the JSON */
    }
        /* fall through */
    case JSON_ARRAY:
    default: {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        int rc = s ? dsq_buf_puts(b, s) : -1;
        free(s);
        return rc;
    }
    }
}

/* Whether v is shown right-aligned (a number). */
static bool is_number(const json_t *v)
{
    return json_is_number(v) || json_object_get(v, "$bigint") != NULL ||
           json_object_get(v, "$real") != NULL;
}

/* Columns shown on a terminal: UTF-8 code points (not bytes). */
static size_t text_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += ((unsigned char)s[i] & 0xc0) != 0x80;
    return w;
}

/* Append s[0..n) to b with control characters escaped (\n, \r, \t,
 * \xNN), so that every row of the table is one line. */
static int append_visible(dsq_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if (c == '\n')
            rc = dsq_buf_puts(b, "\\n");
        else if (c == '\r')
            rc = dsq_buf_puts(b, "\\r");
        else if (c == '\t')
            rc = dsq_buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            rc = dsq_buf_printf(b, "\\x%02x", c);
        else
            rc = dsq_buf_append(b, s + i, 1);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- the table --------------------------------------------------------------------- */

/* One cell of the table. */
typedef struct cell {
    char *text;   /* owned; visible text */
    size_t len;   /* bytes of text */
    size_t width; /* columns on screen */
    bool right;   /* right-aligned (numbers) */
} cell;

/* Make c from wire value v (header cells pass a string). */
static int cell_make(cell *c, const json_t *v, bool header)
{
    dsq_buf raw = DSQ_BUF_INIT, vis = DSQ_BUF_INIT;
    int rc = dosql_format_value(&raw, v, "NULL");
    if (rc == 0)
        rc = append_visible(&vis, raw.data ? raw.data : "", raw.len);
    if (rc == 0)
        rc = dsq_buf_reserve(&vis, 0);
    dsq_buf_free(&raw);
    if (rc != 0) {
        dsq_buf_free(&vis);
        return -1;
    }
    c->text = dsq_buf_steal(&vis, &c->len);
    c->width = text_width(c->text, c->len);
    c->right = !header && is_number(v);
    return 0;
}

/* Print one line of cells padded to widths; the last column is not padded
 * when left-aligned, so lines carry no trailing blanks. */
static void table_line(FILE *out, const cell *cells, const size_t *widths, size_t ncol)
{
    for (size_t i = 0; i < ncol; i++) {
        const cell *c = &cells[i];
        size_t pad = widths[i] - c->width;
        fputs(i == 0 ? " " : " | ", out);
        if (c->right)
            fprintf(out, "%*s", (int)pad, "");
        fwrite(c->text, 1, c->len, out);
        if (!c->right && i + 1 < ncol)
            fprintf(out, "%*s", (int)pad, "");
    }
    fputc('\n', out);
}

/* Header, a line of dashes, the rows, then "(N rows)". Every cell is
 * rendered first to know the column widths. */
static int print_table(FILE *out, const json_t *cols, const json_t *rows)
{
    size_t ncol = json_array_size(cols), nrow = json_array_size(rows);
    cell *cells = calloc((nrow + 1) * ncol, sizeof *cells);
    size_t *widths = calloc(ncol, sizeof *widths);
    int rc = cells && widths ? 0 : -1;
    for (size_t r = 0; rc == 0 && r <= nrow; r++) {
        const json_t *row = r == 0 ? cols : json_array_get(rows, r - 1);
        for (size_t i = 0; rc == 0 && i < ncol; i++) {
            const json_t *v = json_array_get(row, i);
            cell *c = &cells[r * ncol + i];
            rc = cell_make(c, v ? v : json_null(), r == 0);
            if (rc == 0 && c->width > widths[i])
                widths[i] = c->width;
        }
    }
    if (rc == 0) {
        table_line(out, cells, widths, ncol);
        for (size_t i = 0; i < ncol; i++) {
            if (i > 0)
                fputc('+', out);
            for (size_t k = 0; k < widths[i] + 2; k++)
                fputc('-', out);
        }
        fputc('\n', out);
        for (size_t r = 1; r <= nrow; r++)
            table_line(out, &cells[r * ncol], widths, ncol);
        fprintf(out, "(%zu row%s)\n", nrow, nrow == 1 ? "" : "s");
    }
    if (cells != NULL)
        for (size_t i = 0; i < (nrow + 1) * ncol; i++)
            free(cells[i].text);
    free(cells);
    free(widths);
    return rc;
}

/* ---- JSON lines -------------------------------------------------------------------- */

/* Append v as JSON: the wire encoding, with REALs in their shortest form
 * and infinities as dosqld writes them (1e999). */
static int json_value(dsq_buf *b, const json_t *v)
{
    const json_t *inf = json_object_get(v, "$real");
    if (json_is_real(v) || json_is_string(inf)) {
        double d = json_is_real(v) ? json_real_value(v)
                   : strcmp(json_string_value(inf), "Infinity") == 0 ? INFINITY
                                                                    : -INFINITY;
        if (isinf(d))
            return dsq_buf_puts(b, d > 0 ? "1e999" : "-1e999");
        return dosql_format_value(b, v, "null");
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = s ? dsq_buf_puts(b, s) : -1;
    free(s);
    return rc;
}

/* One object per row, {"column": value, ...} in column order. Written by
 * hand so that order (and a repeated column name) is kept. */
static int print_json(FILE *out, const json_t *cols, const json_t *rows)
{
    size_t ncol = json_array_size(cols);
    dsq_buf b = DSQ_BUF_INIT;
    const json_t *row;
    size_t r;
    int rc = 0;
    json_array_foreach(rows, r, row) {
        dsq_buf_reset(&b);
        rc = dsq_buf_puts(&b, "{");
        for (size_t i = 0; rc == 0 && i < ncol; i++) {
            const json_t *v = json_array_get(row, i);
            rc = (i > 0 ? dsq_buf_puts(&b, ",") : 0) |
                 json_value(&b, json_array_get(cols, i)) | dsq_buf_puts(&b, ":") |
                 json_value(&b, v ? v : json_null());
        }
        if (rc == 0)
            rc = dsq_buf_puts(&b, "}\n");
        if (rc != 0)
            break;
        fwrite(b.data, 1, b.len, out);
    }
    dsq_buf_free(&b);
    return rc ? -1 : 0;
}

/* ---- CSV --------------------------------------------------------------------------- */

/* Append one field: quoted when it holds a comma, quote, CR or LF, or is
 * the empty string (so that "" differs from NULL, which is empty). */
static int csv_field(dsq_buf *b, const json_t *v)
{
    dsq_buf t = DSQ_BUF_INIT;
    int rc = dosql_format_value(&t, v, "");
    const char *s = t.data ? t.data : "";
    bool quote = (t.len == 0 && json_is_string(v)) || strpbrk(s, ",\"\r\n") != NULL ||
                 memchr(s, '\0', t.len) != NULL;
    if (rc == 0 && !quote) {
        rc = dsq_buf_append(b, s, t.len);
    } else if (rc == 0) {
        rc = dsq_buf_puts(b, "\"");
        for (size_t i = 0; rc == 0 && i < t.len; i++)
            rc = s[i] == '"' ? dsq_buf_puts(b, "\"\"") : dsq_buf_append(b, s + i, 1);
        if (rc == 0)
            rc = dsq_buf_puts(b, "\"");
    }
    dsq_buf_free(&t);
    return rc;
}

/* A header row of column names (when headers), then one record per row,
 * CRLF-ended. */
static int print_csv(FILE *out, bool headers, const json_t *cols, const json_t *rows)
{
    size_t ncol = json_array_size(cols), nrow = json_array_size(rows);
    dsq_buf b = DSQ_BUF_INIT;
    int rc = 0;
    for (size_t r = headers ? 0 : 1; rc == 0 && r <= nrow; r++) {
        const json_t *row = r == 0 ? cols : json_array_get(rows, r - 1);
        dsq_buf_reset(&b);
        for (size_t i = 0; rc == 0 && i < ncol; i++) {
            const json_t *v = json_array_get(row, i);
            rc = (i > 0 ? dsq_buf_puts(&b, ",") : 0) | csv_field(&b, v ? v : json_null());
        }
        if (rc == 0)
            rc = dsq_buf_puts(&b, "\r\n");
        if (rc == 0)
            fwrite(b.data, 1, b.len, out);
    }
    dsq_buf_free(&b);
    return rc ? -1 : 0;
}

/* ---- line and Markdown ---------------------------------------------------------------- */

/* "name = value" per column (names right-aligned), a blank line between
 * rows; NULL shows as NULL. */
static int print_line(FILE *out, const json_t *cols, const json_t *rows)
{
    size_t ncol = json_array_size(cols), width = 0;
    for (size_t i = 0; i < ncol; i++) {
        const char *n = json_string_value(json_array_get(cols, i));
        size_t w = n ? strlen(n) : 0;
        width = w > width ? w : width;
    }
    dsq_buf b = DSQ_BUF_INIT;
    const json_t *row;
    size_t r;
    int rc = 0;
    json_array_foreach(rows, r, row) {
        dsq_buf_reset(&b);
        if (r > 0)
            rc |= dsq_buf_puts(&b, "\n");
        for (size_t i = 0; rc == 0 && i < ncol; i++) {
            const char *n = json_string_value(json_array_get(cols, i));
            const json_t *v = json_array_get(row, i);
            rc = dsq_buf_printf(&b, "%*s = ", (int)width, n ? n : "") |
                 dosql_format_value(&b, v ? v : json_null(), "NULL") | dsq_buf_puts(&b, "\n");
        }
        if (rc != 0)
            break;
        fwrite(b.data, 1, b.len, out);
    }
    dsq_buf_free(&b);
    return rc ? -1 : 0;
}

/* A Markdown table; '|' in a value is escaped, a line end shown as <br>. */
static int md_cell(dsq_buf *b, const json_t *v)
{
    dsq_buf t = DSQ_BUF_INIT;
    int rc = dosql_format_value(&t, v, "NULL");
    for (size_t i = 0; rc == 0 && i < t.len; i++)
        rc = t.data[i] == '|' ? dsq_buf_puts(b, "\\|")
             : t.data[i] == '\n' ? dsq_buf_puts(b, "<br>")
             : t.data[i] == '\r' ? 0
                                 : dsq_buf_append(b, t.data + i, 1);
    dsq_buf_free(&t);
    return rc;
}

static int print_markdown(FILE *out, const json_t *cols, const json_t *rows)
{
    size_t ncol = json_array_size(cols), nrow = json_array_size(rows);
    dsq_buf b = DSQ_BUF_INIT;
    int rc = 0;
    for (size_t r = 0; rc == 0 && r <= nrow + 1; r++) {
        dsq_buf_reset(&b);
        rc = dsq_buf_puts(&b, "|");
        for (size_t i = 0; rc == 0 && i < ncol; i++) {
            if (r == 1) {
                rc = dsq_buf_puts(&b, "---|");
                continue;
            }
            const json_t *row = r == 0 ? cols : json_array_get(rows, r - 2);
            const json_t *v = json_array_get(row, i);
            rc = dsq_buf_puts(&b, " ") | md_cell(&b, v ? v : json_null()) | dsq_buf_puts(&b, " |");
        }
        if (rc == 0)
            rc = dsq_buf_puts(&b, "\n");
        if (rc == 0)
            fwrite(b.data, 1, b.len, out);
    }
    dsq_buf_free(&b);
    return rc ? -1 : 0;
}

/* ---- the entry point --------------------------------------------------------------- */

/* Check the shape, then print in the chosen mode. */
int dosql_format_result(FILE *out, dosql_mode mode, bool headers, const json_t *result)
{
    const json_t *cols = json_object_get(result, "columns");
    const json_t *rows = json_object_get(result, "rows");
    if (!json_is_array(cols) || !json_is_array(rows))
        return -1;
    if (json_array_size(cols) == 0) {
        if (mode != DOSQL_MODE_TABLE)
            return 0;
        const json_t *n = json_object_get(result, "rowsAffected");
        dsq_buf b = DSQ_BUF_INIT;
        int rc = n ? dosql_format_value(&b, n, "0") : dsq_buf_puts(&b, "0");
        if (rc == 0) {
            bool one = json_is_integer(n) && json_integer_value(n) == 1;
            fprintf(out, "OK, %s row%s affected\n", b.data, one ? "" : "s");
        }
        dsq_buf_free(&b);
        return rc;
    }
    switch (mode) {
    case DOSQL_MODE_JSON: return print_json(out, cols, rows);
    case DOSQL_MODE_CSV: return print_csv(out, headers, cols, rows);
    case DOSQL_MODE_LINE: return print_line(out, cols, rows);
    case DOSQL_MODE_MARKDOWN: return print_markdown(out, cols, rows);
    case DOSQL_MODE_TABLE:
    default: return print_table(out, cols, rows);
    }
}
