/* util — clocks, value parsers, UTF-8 validation.
 *
 * Divisions: clocks; number, duration, size and boolean parsers; UTF-8;
 * CPUs. */
#include "common/util.h"

#include <ctype.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

uint64_t dsq_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int dsq_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(cv, mu, &ts);
}

uint64_t dsq_now_ms(void) { return dsq_now_ns() / 1000000u; }

void dsq_thread_name(const char *name)
{
    char n[16];
    snprintf(n, sizeof n, "%s", name);
    pthread_setname_np(pthread_self(), n);
}

uint64_t dsq_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Parse leading decimal digits of s; *end points past them. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    *end = p;
    return 0;
}

static int mul_check(uint64_t v, uint64_t m, uint64_t *out)
{
    if (m != 0 && v > UINT64_MAX / m)
        return -1;
    *out = v * m;
    return 0;
}

int dsq_parse_u64(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t v;
    if (parse_digits(s, &v, &end) != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int dsq_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"", 1000},        {"ms", 1},          {"s", 1000},
                 {"m", 60 * 1000},  {"h", 3600 * 1000}, {"d", 86400 * 1000}};
    const char *end;
    uint64_t v;
    if (parse_digits(s, &v, &end) != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].suffix) == 0)
            return mul_check(v, units[i].ms, out);
    return -1;
}

int dsq_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"k", 1024},
                 {"kb", 1024},
                 {"kib", 1024},
                 {"m", 1024 * 1024},
                 {"mb", 1024 * 1024},
                 {"mib", 1024 * 1024},
                 {"g", 1024ull * 1024 * 1024},
                 {"gb", 1024ull * 1024 * 1024},
                 {"gib", 1024ull * 1024 * 1024}};
    const char *end;
    uint64_t v;
    if (parse_digits(s, &v, &end) != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].suffix) == 0)
            return mul_check(v, units[i].mul, out);
    return -1;
}

int dsq_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

size_t dsq_utf8_seq(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0; /* continuation byte, overlong lead, or > F4 */
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool dsq_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Runs of ASCII (most JSON) eight bytes at a time. */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        size_t len = dsq_utf8_seq(p + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

bool dsq_strn_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

bool dsq_db_name_valid(const char *name)
{
    size_t n = 0;
    if (name[0] == '.' || name[0] == '\0')
        return false;
    for (const char *p = name; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (n >= 128 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

size_t dsq_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    size_t k = n < size ? n : size - 1;
    memcpy(dst, src, k);
    dst[k] = '\0';
    return n;
}

int dsq_parse_rfc3339(const char *s, uint64_t *us)
{
    int y, mo, d, h, mi, sec, n = 0;
    char t;
    if (sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%n", &y, &mo, &d, &t, &h, &mi, &sec, &n) != 7 || n != 19 ||
        (t != 'T' && t != 't' && t != ' ') || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
        h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + n;
    uint64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 6)
                frac = frac * 10 + (uint64_t)(*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 6; digits++)
            frac *= 10;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
            return -1;
        offset = (*p == '+' ? 1 : -1) * (int64_t)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    /* Days from the civil date (proleptic Gregorian), no time zone games. */
    int yy = y - (mo <= 2);
    int era = yy / 400;
    int yoe = yy - era * 400;
    int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec) - offset;
    if (secs < 0)
        return -1;
    *us = (uint64_t)secs * 1000000 + frac;
    return 0;
}

void dsq_format_rfc3339_ms(uint64_t ms, char *out, size_t cap)
{
    /* RFC 3339's years have four digits: a time past 9999 (no clock it
     * shows gets there) is "?". */
    uint64_t secs = ms / 1000;
    time_t t = (time_t)secs;
    struct tm tm;
    if (secs > 253402300799ull || gmtime_r(&t, &tm) == NULL) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

size_t dsq_lower_bound_u32(const void *base, size_t n, size_t size, size_t off, uint32_t key)
{
    const unsigned char *b = base;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t k;
        memcpy(&k, b + mid * size + off, sizeof k);
        if (k < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t dsq_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ---- CPUs ---- */

/* Read a small file whole into buf (NUL-terminated); -1 when it cannot. */
static int read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

/* CPUs `quota` of every `period` allows, rounded up; 0 for none. */
static unsigned quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n > 4096 ? 4096 : (unsigned)n;
}

/* The least quota over dir ("" for the root, else "/a/b") below root,
 * and its parents up to the root. */
static unsigned walk_quota(const char *root, const char *dir, bool v2)
{
    char d[2048], path[4096 + 64], buf[128];
    unsigned best = 0;
    snprintf(d, sizeof d, "%s", dir);
    for (;;) {
        unsigned n = 0;
        long long q = -1, p = 0;
        if (v2) {
            snprintf(path, sizeof path, "%s%s/cpu.max", root, d);
            /* "QUOTA PERIOD"; "max PERIOD" does not scan: no quota */
            if (read_small(path, buf, sizeof buf) == 0 && sscanf(buf, "%lld %lld", &q, &p) == 2)
                n = quota_cpus(q, p);
        } else {
            snprintf(path, sizeof path, "%s%s/cpu.cfs_quota_us", root, d);
            if (read_small(path, buf, sizeof buf) == 0)
                q = strtoll(buf, NULL, 10);
            snprintf(path, sizeof path, "%s%s/cpu.cfs_period_us", root, d);
            if (read_small(path, buf, sizeof buf) == 0)
                p = strtoll(buf, NULL, 10);
            n = quota_cpus(q, p);
        }
        if (n > 0 && (best == 0 || n < best))
            best = n;
        char *slash = strrchr(d, '/');
        if (d[0] == '\0' || slash == NULL)
            break;
        *slash = '\0'; /* the parent ("" at the top: the root) */
    }
    return best;
}

unsigned dsq_cgroup_cpus(const char *sysfs, const char *self)
{
    unsigned best = 0;
    const char *line = self;
    while (line != NULL && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char l[2048];
        if (len < sizeof l) {
            memcpy(l, line, len);
            l[len] = '\0';
            /* "ID:CONTROLLERS:PATH" */
            char *c1 = strchr(l, ':');
            char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (c2 != NULL) {
                *c1 = '\0';
                *c2 = '\0';
                const char *ctl = c1 + 1, *path = c2 + 1;
                unsigned n = 0;
                char root[4096];
                if (strcmp(l, "0") == 0 && *ctl == '\0') {
                    n = walk_quota(sysfs, strcmp(path, "/") == 0 ? "" : path, true);
                } else {
                    /* v1: the line whose controllers include "cpu" */
                    char ctls[256];
                    snprintf(ctls, sizeof ctls, ",%s,", ctl);
                    if (strstr(ctls, ",cpu,") != NULL) {
                        snprintf(root, sizeof root, "%s/%s", sysfs, ctl);
                        n = walk_quota(root, strcmp(path, "/") == 0 ? "" : path, false);
                    }
                }
                if (n > 0 && (best == 0 || n < best))
                    best = n;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return best;
}

unsigned dsq_usable_cpus(void)
{
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    char self[4096];
    if (read_small("/proc/self/cgroup", self, sizeof self) == 0) {
        unsigned q = dsq_cgroup_cpus("/sys/fs/cgroup", self);
        if (q > 0 && q < (unsigned long)n)
            n = q;
    }
    return (unsigned)n;
}

int dsq_random_id(char out[33])
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", rnd[i]);
    return 0;
}

int dsq_errf(char *err, size_t n, const char *fmt, ...)
{
    if (err != NULL && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}
