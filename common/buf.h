/* buf — a growable byte buffer, the one every module uses for output. */
#ifndef DSQ_BUF_H
#define DSQ_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dsq_buf {
    char *data; /* owned; NUL-terminated when len < cap */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
} dsq_buf;

#define DSQ_BUF_INIT {NULL, 0, 0}

/* Release the memory; the buffer is empty and reusable afterwards. */
void dsq_buf_free(dsq_buf *b);

/* Make room for `extra` more bytes. Returns 0, or -1 when out of memory
 * (the buffer is unchanged). */
int dsq_buf_reserve(dsq_buf *b, size_t extra);

int dsq_buf_append(dsq_buf *b, const void *p, size_t n);
int dsq_buf_puts(dsq_buf *b, const char *s);
int dsq_buf_printf(dsq_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int dsq_buf_vprintf(dsq_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Decimal integers, without printf's cost (they sit on every reply's
 * path). */
int dsq_buf_put_u64(dsq_buf *b, uint64_t v);
int dsq_buf_put_i64(dsq_buf *b, int64_t v);

/* Drop the first n bytes, keeping the rest. */
void dsq_buf_consume(dsq_buf *b, size_t n);

/* Hand the memory to the caller (who frees it with free()); the buffer is
 * left empty. */
char *dsq_buf_steal(dsq_buf *b, size_t *len);

static inline void dsq_buf_reset(dsq_buf *b) { b->len = 0; }

/* A form of a message made from it once and kept beside it (its compressed
 * WebSocket payload, for the many sessions it goes to alike). kind 0: none
 * made yet; the maker alone says what other kinds mean. */
typedef struct dsq_alt {
    dsq_buf buf;
    int kind;
} dsq_alt;

#endif
