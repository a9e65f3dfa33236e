/* evlog — a recorder of one instance's events, for unit tests whose code
 * under test calls back from a thread of its own: every event kept, in
 * order, and a check that two callbacks never run at once.
 *
 * Generic over the test's own event struct, whose `type` (an enum, read
 * as an int) and key (a char array: a database, a node) it is told at
 * init. The callback copies its event in, and makes its own checks, under
 * the lock:
 *
 *     static evlog l;
 *     EVLOG_INIT(&l, "a", my_ev, type, id);
 *     ...
 *     evlog_enter(&l, "on_event");           // two at once: l.bad, l.why
 *     my_ev *e = evlog_add(&l);              // zeroed
 *     e->type = ev->type; ...
 *     if (...) evlog_bad(&l, "%s ...", ...);
 *     evlog_leave(&l);
 *
 * The test reads it from its own thread: evlog_count, evlog_len,
 * evlog_last, evlog_dump for a failure's message. A test keeps state of
 * its own beside the events under evlog_lock, the callback's lock.
 *
 * Header-only: each test binary is one file. */
#ifndef DSQ_TEST_EVLOG_H
#define DSQ_TEST_EVLOG_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVLOG_ANY (-1)                 /* evlog_last's type: any */

typedef struct evlog {
    const char *name;
    pthread_mutex_t mu;
    char *evs;                         /* n events of `size` bytes, room for cap */
    size_t n, cap;
    size_t size, type_off, key_off;    /* an event's size, its type's and its key's offsets */
    atomic_int inside;                 /* callbacks under way */
    int bad;                           /* the checks that failed: two at once, or the test's own */
    char why[256];                     /* the last of them */
} evlog;

static inline void evlog_init(evlog *l, const char *name, size_t size, size_t type_off, size_t key_off)
{
    memset(l, 0, sizeof *l);
    l->name = name;
    l->size = size;
    l->type_off = type_off;
    l->key_off = key_off;
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->inside, 0);
}

/* evlog_init for events of struct type T, their fields `type` and `key`. */
#define EVLOG_INIT(l, name, T, type, key)                                                              \
    do {                                                                                               \
        _Static_assert(sizeof(((T *)0)->type) == sizeof(int), "an event's type is read as an int");    \
        _Static_assert(sizeof(((T *)0)->key) > sizeof(char *), "an event's key is a char array");      \
        evlog_init(l, name, sizeof(T), offsetof(T, type), offsetof(T, key));                           \
    } while (0)

static inline void evlog_free(evlog *l)
{
    free(l->evs);
    pthread_mutex_destroy(&l->mu);
}

static inline void evlog_lock(evlog *l) { pthread_mutex_lock(&l->mu); }

static inline void evlog_unlock(evlog *l) { pthread_mutex_unlock(&l->mu); }

/* A failed check (under the lock, or in the callback). */
__attribute__((format(printf, 2, 3))) static inline void evlog_bad(evlog *l, const char *fmt, ...)
{
    l->bad++;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->why, sizeof l->why, fmt, ap);
    va_end(ap);
}

/* A callback begins (`what`: its name, for why[]): counted, then the lock
 * taken; evlog_leave the reverse. */
static inline void evlog_enter(evlog *l, const char *what)
{
    if (atomic_fetch_add(&l->inside, 1) != 0)
        evlog_bad(l, "two %s calls at once", what);
    evlog_lock(l);
}

static inline void evlog_leave(evlog *l)
{
    evlog_unlock(l);
    atomic_fetch_sub(&l->inside, 1);
}

/* Event i (under the lock; i < n). */
static inline void *evlog_ev(evlog *l, size_t i) { return l->evs + i * l->size; }

static inline int evlog_type(evlog *l, size_t i)
{
    int t;
    memcpy(&t, l->evs + i * l->size + l->type_off, sizeof t);
    return t;
}

/* Whether event i is of type (EVLOG_ANY: any) and of key (NULL: any). */
static inline bool evlog_match(evlog *l, size_t i, int type, const char *key)
{
    return (type == EVLOG_ANY || evlog_type(l, i) == type) &&
           (key == NULL || strcmp(l->evs + i * l->size + l->key_off, key) == 0);
}

/* A new event at the end, zeroed, for the callback to fill (under the lock). */
static inline void *evlog_add(evlog *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->evs = realloc(l->evs, l->cap * l->size);
        cr_assert(l->evs != NULL);
    }
    void *e = evlog_ev(l, l->n++);
    memset(e, 0, l->size);
    return e;
}

/* Events of type (of key; NULL: any) from index `from` on. */
static inline size_t evlog_count(evlog *l, size_t from, int type, const char *key)
{
    size_t k = 0;
    evlog_lock(l);
    for (size_t i = from; i < l->n; i++)
        if (evlog_match(l, i, type, key))
            k++;
    evlog_unlock(l);
    return k;
}

static inline size_t evlog_len(evlog *l)
{
    evlog_lock(l);
    size_t n = l->n;
    evlog_unlock(l);
    return n;
}

/* Copy the last event of type (EVLOG_ANY: any) and key (NULL: any) to
 * out; false, out as it was, when none. */
static inline bool evlog_last(evlog *l, int type, const char *key, void *out)
{
    bool found = false;
    evlog_lock(l);
    for (size_t i = l->n; i-- > 0 && !found;)
        if (evlog_match(l, i, type, key)) {
            memcpy(out, evlog_ev(l, i), l->size);
            found = true;
        }
    evlog_unlock(l);
    return found;
}

/* The events, the last `most` of them (0: all), one a line as `line`
 * writes it (snprintf's way), while a line's `room` is left (a static
 * buffer: for a failure's message). */
static inline const char *evlog_dump(evlog *l, size_t most, size_t room, int (*line)(char *, size_t, const void *))
{
    static char out[4096];
    size_t o = 0;
    out[0] = '\0';
    evlog_lock(l);
    size_t from = most != 0 && l->n > most ? l->n - most : 0;
    for (size_t i = from; i < l->n && o < sizeof out - room; i++)
        o += (size_t)line(out + o, sizeof out - o, evlog_ev(l, i));
    evlog_unlock(l);
    return out;
}

#endif
