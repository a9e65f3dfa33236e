/* disk — what every on-disk format in engine/ shares: little-endian
 * integers, CRC-32 (zlib's), whole-buffer pread/pwrite, and fsync of a
 * directory so that an entry made or removed in it is durable. */
#ifndef DSQ_DISK_H
#define DSQ_DISK_H

#include <stddef.h>
#include <stdint.h>

static inline void dsq_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void dsq_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t dsq_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t dsq_get64(const uint8_t *p)
{
    return (uint64_t)dsq_get32(p) | (uint64_t)dsq_get32(p + 4) << 32;
}

/* CRC-32 (zlib's: polynomial 0xEDB88320 reflected) of p[0..n), and of
 * more bytes after those whose CRC is crc. */
uint32_t dsq_crc32(const void *p, size_t n);
uint32_t dsq_crc32_more(uint32_t crc, const void *p, size_t n);

/* All n bytes at off: 0, 1 when the file ends first, or the negated
 * errno of the failed pread (-EIO...). Retries EINTR and short transfers.
 * errno is left as the failed call set it, for callers inside storage
 * that test it together with other system calls in one condition. */
int dsq_pread_full(int fd, void *buf, size_t n, uint64_t off);
/* 0, or the negated errno of the failed pwrite (-ENOSPC...), errno left
 * set as with dsq_pread_full. */
int dsq_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);

/* fsync directory `path` (its entries); errors are left to the next
 * fsync of a file in it to report. */
void dsq_fsync_dir(const char *path);

#endif
