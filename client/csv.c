/* csv — RFC 4180 records (csv.h). */
#include "client/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dosql_csv_init(dosql_csv *c, const char *text, size_t n)
{
    memset(c, 0, sizeof *c);
    c->p = text;
    c->end = text + n;
    c->line = 1;
    if (n >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) /* a BOM */
        c->p += 3;
}

void dosql_csv_free(dosql_csv *c)
{
    dsq_buf_free(&c->fields);
    free(c->off);
    free(c->len);
}

/* End the field begun at `start` (an offset in c->fields). 0 or -1. */
static int end_field(dosql_csv *c, size_t start)
{
    if (c->nfields == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 16;
        size_t *o = realloc(c->off, ncap * sizeof *o);
        if (o != NULL)
            c->off = o;
        size_t *l = realloc(c->len, ncap * sizeof *l);
        if (l != NULL)
            c->len = l;
        if (o == NULL || l == NULL)
            return -1;
        c->cap = ncap;
    }
    c->off[c->nfields] = start;
    c->len[c->nfields] = c->fields.len - start;
    c->nfields++;
    return dsq_buf_append(&c->fields, "", 1);
}

int dosql_csv_next(dosql_csv *c, char *why, size_t whylen)
{
    /* Empty lines are passed over. */
    while (c->p < c->end && (*c->p == '\n' || *c->p == '\r')) {
        if (*c->p == '\n')
            c->line++;
        c->p++;
    }
    if (c->p >= c->end)
        return 0;
    dsq_buf_reset(&c->fields);
    c->nfields = 0;
    size_t start_line = c->line;
    for (;;) {
        size_t start = c->fields.len;
        if (c->p < c->end && *c->p == '"') { /* a quoted field */
            c->p++;
            for (;;) {
                if (c->p >= c->end) {
                    snprintf(why, whylen, "line %zu: a quote is left open", start_line);
                    return -1;
                }
                if (*c->p == '"') {
                    if (c->p + 1 < c->end && c->p[1] == '"') {
                        dsq_buf_append(&c->fields, "\"", 1);
                        c->p += 2;
                        continue;
                    }
                    c->p++;
                    break;
                }
                if (*c->p == '\n')
                    c->line++;
                dsq_buf_append(&c->fields, c->p, 1);
                c->p++;
            }
            if (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
                snprintf(why, whylen, "line %zu: '%c' after a closing quote", c->line, *c->p);
                return -1;
            }
        } else {
            const char *q = c->p;
            while (q < c->end && *q != ',' && *q != '\n' && *q != '\r')
                q++;
            dsq_buf_append(&c->fields, c->p, (size_t)(q - c->p));
            c->p = q;
        }
        if (end_field(c, start) != 0) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        /* The record's end: CRLF, LF, CR or the text's end. */
        if (c->p < c->end && *c->p == '\r')
            c->p++;
        if (c->p < c->end && *c->p == '\n') {
            c->p++;
            c->line++;
        }
        return 1;
    }
}

const char *dosql_csv_field(const dosql_csv *c, size_t i, size_t *len)
{
    *len = c->len[i];
    return c->fields.data + c->off[i];
}
