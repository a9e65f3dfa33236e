/* log — the process-wide logger: one `key=value` line per event on stderr.
 *
 *   ts=2026-11-25T04:24:00.123Z level=info event=listening addr=127.0.0.1:8787
 *
 * `event` is a stable identifier that operators can grep for; the rest are
 * fields. Values that may hold spaces, quotes or control characters go
 * through dsq_log_q(), which quotes and escapes them. Safe from any thread:
 * each line is one write(2). */
#ifndef DSQ_LOG_H
#define DSQ_LOG_H

enum dsq_log_level {
    DSQ_LOG_DEBUG = 0,
    DSQ_LOG_INFO = 1,
    DSQ_LOG_WARN = 2,
    DSQ_LOG_ERROR = 3,
};

void dsq_log_set_level(int level);
int dsq_log_get_level(void);

/* "debug", "info", "warn", "error" → level; -1 for anything else. */
int dsq_log_level_parse(const char *s);
const char *dsq_log_level_name(int level);

/* Log `event` with the fields that `fmt` formats (may be NULL). */
void dsq_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A quoted, escaped copy of `s` for a field value, valid until this thread's
 * eighth next call (a small ring of buffers); long values are cut at 240
 * bytes and end in "...". NULL gives "-". */
const char *dsq_log_q(const char *s);

#define DSQ_DEBUG(ev, ...) dsq_log(DSQ_LOG_DEBUG, ev, __VA_ARGS__)
#define DSQ_INFO(ev, ...) dsq_log(DSQ_LOG_INFO, ev, __VA_ARGS__)
#define DSQ_WARN(ev, ...) dsq_log(DSQ_LOG_WARN, ev, __VA_ARGS__)
#define DSQ_ERROR(ev, ...) dsq_log(DSQ_LOG_ERROR, ev, __VA_ARGS__)

#endif
