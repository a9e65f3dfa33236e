/* fuzz_capnweb — Cap'n Web message decoding and evaluation
 * (protocol/capnweb/): push, pull, resolve, reject, release, abort,
 * stream and pipe messages, expressions (escaped arrays, bigint, bytes,
 * date, error, import/pipeline paths and calls, export/promise, remap),
 * pipelining and the import/export tables, against a real engine opened
 * once per process on a directory under /dev/shm (one worker, fsync off,
 * short timeouts), so the calls reach the DoSQL methods and SQLite.
 *
 * Input: byte 0 = options: bit 0 a session bound to database "f" (else
 * unbound: database(name) gives stubs), bit 1 an HTTP batch (all lines
 * through dsq_cw_receive_lines, then dsq_cw_batch_end; else one WebSocket
 * message per line through dsq_cw_receive, stopping once the session
 * ended itself), bit 2 the engine polled between two WebSocket messages
 * (else not: as when one read brings several frames). The rest: messages,
 * one per line.
 *
 * Each input's calls are given time to come back (the engine is polled
 * as the loop would): until the batch is done, or until there were as
 * many answers as pulls, 200 ms at most; what is still running then
 * finishes while later inputs run, as on a server. Only databases "f" and
 * "g" may be used (others are FORBIDDEN), so the data stays small. Every
 * message the session sends must be valid JSON. */
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

#include "protocol/capnweb.h"
#include "protocol/cdcsub.h"
#include "tests/fuzz/fuzz.h"
#include "tests/unit/support/engine_cfg.h"

static dsq_engine *E;
static dsq_cw_stats *ST; /* for the life of the process, as the engine */
static dsq_cdc_cache *CC; /* likewise */
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcv = PTHREAD_COND_INITIALIZER;
static int wakes;
static uint64_t sessions;
static struct timespec last_tick;

static void wake(void *arg)
{
    pthread_mutex_lock(&wmu);
    wakes++;
    pthread_cond_signal(&wcv);
    pthread_mutex_unlock(&wmu);
}

typedef struct peer {
    bool ended;       /* the session ended itself */
    bool batch_done;  /* an HTTP batch's messages are all answered */
    int sent;
} peer;

/* Poll the engine until `*flag` or *count >= want, or it has been quiet
 * for `quiet_ms`, for at most `max_ms`. */
static void settle(const bool *flag, const int *count, int want, int quiet_ms, int max_ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        dsq_engine_poll(E);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((flag != NULL && *flag) || (count != NULL && *count >= want))
            break;
        long el = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (el >= max_ms)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)quiet_ms * 1000000;
        until.tv_sec += until.tv_nsec / 1000000000;
        until.tv_nsec %= 1000000000;
        pthread_mutex_lock(&wmu);
        int rc = 0;
        while (wakes == 0 && rc == 0)
            rc = pthread_cond_timedwait(&wcv, &wmu, &until);
        wakes = 0;
        pthread_mutex_unlock(&wmu);
        if (rc != 0)
            break; /* quiet */
    }
    if ((now.tv_sec - last_tick.tv_sec) * 1000 + (now.tv_nsec - last_tick.tv_nsec) / 1000000 > 200) {
        dsq_engine_tick(E);
        last_tick = now;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    char dir[256], err[512];
    snprintf(dir, sizeof dir, "%s/engine", fuzz_scratch());
    mkdir(dir, 0700);
    dsq_engine_cfg c = test_engine_cfg(dir);
    c.workers = 1;
    c.max_open_actors = 4;
    c.max_queue = 100;
    c.query_timeout_ms = 50;
    c.max_result_size = 1 << 18;
    c.txn_timeout_ms = 1000;
    c.max_sql_length = 10000;
    c.max_value_size = 1 << 18;
    c.page_size = 4096;
    c.sync = DSQ_SYNC_OFF;
    c.wake = wake;
    E = dsq_engine_new(&c, err, sizeof err);
    if (E == NULL) {
        fprintf(stderr, "fuzz_capnweb: %s\n", err);
        abort();
    }
    ST = dsq_cw_stats_new();
    CC = dsq_cdc_cache_new();
    if (ST == NULL || CC == NULL)
        abort();
    clock_gettime(CLOCK_MONOTONIC, &last_tick);
    return 0;
}

static int t_send(void *ud, const char *msg, size_t len)
{
    peer *p = ud;
    p->sent++;
    if (getenv("DSQ_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "fuzz: sent %.*s\n", (int)(len < 300 ? len : 300), msg);
    json_error_t je;
    json_t *j = json_loadb(msg, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        fprintf(stderr, "the session sent invalid JSON (%s): %.*s\n", je.text, (int)len, msg);
        abort();
    }
    json_decref(j);
    return 0;
}

static void t_end(void *ud) { ((peer *)ud)->ended = true; }
static void t_batch_done(void *ud) { ((peer *)ud)->batch_done = true; }

static unsigned t_scope(void *ud, const char *db)
{
    return strcmp(db, "f") == 0 || strcmp(db, "g") == 0 ? DSQ_SCOPE_R | DSQ_SCOPE_W : 0;
}

static const dsq_dosql_limits DL = {.max_params = 100, .max_batch = 100, .chunk_rows = 10, .max_chunk_rows = 1000};
static const dsq_cw_limits CL = {.max_depth = 16, .max_bigint_digits = 40, .max_entries = 64};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    peer *pe = calloc(1, sizeof *pe);
    if (pe == NULL)
        abort();
    dsq_cw_transport t = {.send = t_send, .end = t_end, .batch_done = t_batch_done, .scope = t_scope, .ud = pe};
    bool batch = (opt & 2) != 0;
    dsq_cw_session *s = dsq_cw_session_new(E, ST, CC, &DL, &CL, (opt & 1) ? "f" : NULL, ++sessions, batch, &t);
    if (s == NULL)
        abort();
    if (batch) {
        dsq_cw_receive_lines(s, p, n);
        dsq_cw_batch_end(s);
    } else {
        const char *end = p + n;
        while (p < end && !pe->ended) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (getenv("DSQ_FUZZ_VERBOSE") != NULL)
                fprintf(stderr, "fuzz: received %.*s\n", (int)(len < 300 ? len : 300), p);
            dsq_cw_receive(s, p, len);
            p += len + (nl != NULL);
            if (opt & 4)
                dsq_engine_poll(E);
        }
    }
    /* Wait for the answers: the batch's end, or as many as there were
     * pulls (a WebSocket session sends one resolve or reject per pull). */
    int pulls = 0;
    for (const char *q = (const char *)data + 1;
         (q = memmem(q, (size_t)((const char *)data + size - q), "\"pull\"", 6)) != NULL; q += 6)
        pulls++;
    if (batch)
        settle(&pe->batch_done, NULL, 0, 50, 200);
    else
        settle(&pe->ended, &pe->sent, pulls, pulls ? 50 : 1, 200);
    /* The session may live on while its calls run, but sends nothing
     * after close: its transport goes now (ASan sees any later use). */
    dsq_cw_session_close(s);
    free(pe);
    dsq_engine_session_closed(E, sessions);
    settle(NULL, NULL, 0, 1, 20);
    return 0;
}
