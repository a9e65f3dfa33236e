/* util — clocks, value parsers shared by config and protocols, UTF-8. */
#ifndef DSQ_UTIL_H
#define DSQ_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds / milliseconds; wall clock in ms since the
 * Unix epoch. */
uint64_t dsq_now_ns(void);
uint64_t dsq_now_ms(void);
uint64_t dsq_wall_ms(void);
/* Wait on cv (mu held) for at most ms milliseconds (CLOCK_REALTIME, as
 * pthread_cond_timedwait counts). Returns pthread_cond_timedwait's. */
int dsq_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t ms);
/* Name the calling thread (at most 15 bytes are kept), for top -H, ps -L,
 * perf and gdb. */
void dsq_thread_name(const char *name);

/* "250ms", "10s", "5m", "2h", "1d"; a bare number is seconds.
 * Returns 0, or -1 for anything else (including overflow). */
int dsq_parse_duration_ms(const char *s, uint64_t *out);

/* "4096", "64K", "64KiB", "16M", "1G" (powers of 1024, case-insensitive).
 * Returns 0 or -1. */
int dsq_parse_size(const char *s, uint64_t *out);

/* A plain unsigned decimal that fits in uint64_t. Returns 0 or -1. */
int dsq_parse_u64(const char *s, uint64_t *out);

/* yes/no, true/false, on/off, 1/0. Returns 0 or -1. */
int dsq_parse_bool(const char *s, bool *out);

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF. */
bool dsq_utf8_valid(const uint8_t *p, size_t n);
/* The length (1 to 4) of the valid UTF-8 sequence at p[0..n), or 0. */
size_t dsq_utf8_seq(const uint8_t *p, size_t n);

/* The CPUs a cgroup's quota allows this process, rounded up: the least
 * over its cgroup and their parents, from cgroup v2's cpu.max or v1's
 * cpu.cfs_quota_us / cpu.cfs_period_us. `sysfs` is where cgroups are
 * mounted ("/sys/fs/cgroup"), `self` the text of /proc/self/cgroup.
 * 0: no quota (or none found). */
unsigned dsq_cgroup_cpus(const char *sysfs, const char *self);
/* The CPUs this process may use: its affinity mask's, fewer when a cgroup
 * quota allows fewer. At least 1. */
unsigned dsq_usable_cpus(void);

/* FNV-1a of a C string (hash tables keyed by names). */
uint64_t dsq_hash_str(const char *s);

/* A database name (DESIGN 3.2): [A-Za-z0-9._-]{1,128}, not starting
 * with '.'. */
bool dsq_db_name_valid(const char *name);

/* Case-insensitive ASCII comparison of a counted string with a C string. */
/* An RFC 3339 time ("2026-11-26T10:00:00Z", fractions of a second and
 * +HH:MM offsets allowed; 't'/'z' and a space for 'T' too) as µs since
 * the epoch. 0, or -1 when it is not one or before 1970. */
int dsq_parse_rfc3339(const char *s, uint64_t *us);
/* The other way: ms since the epoch as "2026-11-26T10:00:00.123Z" (UTC,
 * always three digits of ms: what dsq_parse_rfc3339 reads back) into
 * out[cap], cut to fit (DSQ_RFC3339_MS_LEN bytes are enough); past the
 * year 9999, "?". */
#define DSQ_RFC3339_MS_LEN 32
void dsq_format_rfc3339_ms(uint64_t ms, char *out, size_t cap);

/* In an array of n elements of `size` bytes sorted by the uint32_t at byte
 * `off` of each, the index of the first whose key is >= key (n if none). */
size_t dsq_lower_bound_u32(const void *base, size_t n, size_t size, size_t off, uint32_t key);

/* Copy the C string src into dst[size] (size > 0), cut to fit and always
 * terminated; returns strlen(src), so a result >= size means it was cut. */
size_t dsq_strlcpy(char *dst, const char *src, size_t size);

/* An error's message into err[n] (when err is not NULL and n > 0), as
 * printf formats it; returns -1, for `return dsq_errf(err, n, ...)`. */
int dsq_errf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 32 hex digits of 16 random bytes (getrandom) and a NUL into out: ids
 * others must not guess (transactions, batons). 0, or -1 when the
 * kernel gives no randomness. */
int dsq_random_id(char out[33]);

bool dsq_strn_ieq(const char *a, size_t alen, const char *b);

#endif
