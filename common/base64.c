/* base64 — RFC 4648 with padding, the alphabet of "$bytes" values. */
#include "common/base64.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void dsq_base64_encode(dsq_buf *out, const void *p, size_t n)
{
    const unsigned char *s = p;
    if (dsq_buf_reserve(out, (n + 2) / 3 * 4) != 0)
        return;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
}

static int b64_index(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long dsq_base64_decode(const char *s, size_t n, unsigned char *out)
{
    /* Without padding the last group has 2 or 3 characters (Cap'n Web's
     * client sends it so); with it, 4 ending in "=" or "==". */
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t len = n - i < 4 ? n - i : 4;
        int v[4] = {0, 0, 0, 0};
        int have = 0; /* digits in this group */
        for (size_t k = 0; k < len; k++) {
            if (s[i + k] == '=') {
                /* padding: only at the very end, after 2 or 3 digits */
                if (i + 4 != n || k < 2)
                    return -1;
                for (size_t r = k; r < len; r++)
                    if (s[i + r] != '=')
                        return -1;
                break;
            }
            if ((v[k] = b64_index(s[i + k])) < 0)
                return -1;
            have++;
        }
        if (have < 2)
            return -1;
        unsigned x = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        out[o++] = (unsigned char)(x >> 16);
        if (have >= 3)
            out[o++] = (unsigned char)(x >> 8);
        if (have == 4)
            out[o++] = (unsigned char)x;
    }
    return (long)o;
}
