/* csv — reading RFC 4180 CSV for the shell's .import: fields separated by
 * commas, quoted with '"' (a doubled quote inside is one), quoted fields
 * may hold commas and line ends; lines end with LF or CRLF; a UTF-8 BOM
 * at the start and empty lines are passed over. */
#ifndef DOSQL_CSV_H
#define DOSQL_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

typedef struct dosql_csv {
    const char *p, *end; /* what is left of the text */
    size_t line;         /* the line the next record starts on (from 1) */
    dsq_buf fields;      /* the last record's fields, each NUL-terminated, back to back */
    size_t *off, *len;   /* each field's offset in `fields`, and length */
    size_t nfields, cap;
} dosql_csv;

/* Read text[0..n) (borrowed while reading). */
void dosql_csv_init(dosql_csv *c, const char *text, size_t n);
void dosql_csv_free(dosql_csv *c);

/* The next record into c->fields: 1, 0 at the end, or -1 with the reason
 * in why (a quote left open, a character after a closing quote). */
int dosql_csv_next(dosql_csv *c, char *why, size_t whylen);

/* Field i of the last record (NUL-terminated), its length in *len. */
const char *dosql_csv_field(const dosql_csv *c, size_t i, size_t *len);

#endif
