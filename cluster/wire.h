/* wire — the binary fields of the nodes' messages: big-endian integers
 * and length-prefixed strings and byte runs, written to a dsq_buf and read
 * back with every length checked against what arrived. */
#ifndef DSQ_WIRE_H
#define DSQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"

/* ---- writing: each returns 0, or -1 when out of memory ---- */

static inline int dsq_w_u8(dsq_buf *b, uint8_t v) { return dsq_buf_append(b, &v, 1); }

static inline int dsq_w_u32(dsq_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return dsq_buf_append(b, p, 4);
}

static inline int dsq_w_u64(dsq_buf *b, uint64_t v)
{
    return dsq_w_u32(b, (uint32_t)(v >> 32)) | dsq_w_u32(b, (uint32_t)v);
}

/* A string of fewer than 256 bytes: its length in one byte, then it. */
static inline int dsq_w_str(dsq_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > 255)
        return -1;
    return dsq_w_u8(b, (uint8_t)n) | dsq_buf_append(b, s, n);
}

/* ---- reading: a cursor that fails once and stays failed ---- */

typedef struct dsq_rd {
    const uint8_t *p, *end;
    bool bad; /* a read ran past the end */
} dsq_rd;

static inline dsq_rd dsq_rd_of(const void *p, size_t n) { return (dsq_rd){p, (const uint8_t *)p + n, false}; }

static inline bool dsq_rd_take(dsq_rd *r, size_t n, const uint8_t **out)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    *out = r->p;
    r->p += n;
    return true;
}

static inline uint8_t dsq_r_u8(dsq_rd *r)
{
    const uint8_t *p;
    return dsq_rd_take(r, 1, &p) ? p[0] : 0;
}

static inline uint32_t dsq_r_u32(dsq_rd *r)
{
    const uint8_t *p;
    if (!dsq_rd_take(r, 4, &p))
        return 0;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t dsq_r_u64(dsq_rd *r)
{
    uint64_t hi = dsq_r_u32(r);
    return hi << 32 | dsq_r_u32(r);
}

/* A string into out[cap] (NUL-terminated); longer than cap - 1 is bad. */
static inline void dsq_r_str(dsq_rd *r, char *out, size_t cap)
{
    size_t n = dsq_r_u8(r);
    const uint8_t *p;
    if (n >= cap)
        r->bad = true;
    if (!dsq_rd_take(r, n, &p)) {
        out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Bytes left after the cursor. */
static inline size_t dsq_rd_left(const dsq_rd *r) { return r->bad ? 0 : (size_t)(r->end - r->p); }

#endif
