/* buf — growable byte buffer.
 *
 * Capacity grows by doubling from 256 bytes; a terminating NUL is kept
 * after the data whenever there is room for it, so text built with
 * dsq_buf_printf can be used as a C string. */
#include "common/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dsq_buf_free(dsq_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int dsq_buf_reserve(dsq_buf *b, size_t extra)
{
    if (extra >= SIZE_MAX - b->len)
        return -1;
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dsq_buf_append(dsq_buf *b, const void *p, size_t n)
{
    if (dsq_buf_reserve(b, n) != 0)
        return -1;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int dsq_buf_puts(dsq_buf *b, const char *s)
{
    return dsq_buf_append(b, s, strlen(s));
}

int dsq_buf_vprintf(dsq_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    if ((size_t)n >= room) {
        if (dsq_buf_reserve(b, (size_t)n) != 0)
            return -1;
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        if (n < 0)
            return -1;
    }
    b->len += (size_t)n;
    return 0;
}

int dsq_buf_printf(dsq_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rv = dsq_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rv;
}

int dsq_buf_put_u64(dsq_buf *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return dsq_buf_append(b, tmp + sizeof tmp - n, n);
}

int dsq_buf_put_i64(dsq_buf *b, int64_t v)
{
    if (v >= 0)
        return dsq_buf_put_u64(b, (uint64_t)v);
    if (dsq_buf_append(b, "-", 1) != 0)
        return -1;
    return dsq_buf_put_u64(b, (uint64_t)0 - (uint64_t)v); /* INT64_MIN too */
}

void dsq_buf_consume(dsq_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

char *dsq_buf_steal(dsq_buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
