/* base64 — RFC 4648 base64 with padding (the standard alphabet). */
#ifndef DSQ_BASE64_H
#define DSQ_BASE64_H

#include <stddef.h>

#include "common/buf.h"

/* Append the base64 text of p[0..n) to out. */
void dsq_base64_encode(dsq_buf *out, const void *p, size_t n);

/* Decode s[0..n) (padded, or without the padding) into out, which must
 * hold n / 4 * 3 + 2 bytes. Returns the byte count, or -1 when s is not
 * base64. */
long dsq_base64_decode(const char *s, size_t n, unsigned char *out);

#endif
