/* log — key=value lines on stderr.
 *
 * Divisions: level handling; value quoting; the line writer. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = DSQ_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dsq_log_set_level(int level)
{
    if (level >= DSQ_LOG_DEBUG && level <= DSQ_LOG_ERROR)
        atomic_store(&log_level, level);
}

int dsq_log_get_level(void) { return atomic_load(&log_level); }

int dsq_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return DSQ_LOG_WARN;
    return -1;
}

const char *dsq_log_level_name(int level)
{
    return level >= 0 && level < 4 ? level_names[level] : "?";
}

/* Quote when the value is empty or holds a byte that would break the
 * key=value grammar; escape quotes, backslashes and control bytes. */
const char *dsq_log_q(const char *s)
{
    static _Thread_local char ring[8][256];
    static _Thread_local unsigned next;
    char *out = ring[next++ % 8];
    if (s == NULL)
        return "-";
    int plain = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f)
            plain = 0;
    size_t o = 0, max = 240;
    if (plain) {
        size_t n = strlen(s);
        if (n <= max)
            return s;
        memcpy(out, s, max);
        memcpy(out + max, "...", 4);
        return out;
    }
    out[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o >= max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < ' ' || *p == 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

void dsq_log(int level, const char *event, const char *fmt, ...)
{
    if (level < atomic_load(&log_level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     dsq_log_level_name(level), event);
    size_t len = n > 0 ? (size_t)n : 0;
    if (fmt != NULL && len + 2 < sizeof line) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        n = vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
        va_end(ap);
        if (n > 0)
            len += (size_t)n;
    }
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
