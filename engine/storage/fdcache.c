/* fdcache — bounded open read-only descriptors (see fdcache.h).
 *
 * A small array searched linearly: the bound is tens of entries, and a
 * lookup costs far less than the pread and decompression it precedes.
 * Opens run outside the mutex (a second thread asking for the same file
 * meanwhile keeps the first descriptor installed); closes run under it.
 * Entries in use are never closed: while every entry is in use the array
 * grows past the bound, and shrinks back as they are given back. */
#include "engine/storage/fdcache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct ent {
    uint64_t key;
    int fd;
    unsigned users;   /* gets not yet given back */
    bool doomed;      /* forgotten while in use: closed at the last put */
    uint64_t used;    /* clock of the last get (LRU) */
} ent;

struct dsq_fdc {
    pthread_mutex_t mu;
    unsigned max;
    ent *v;           /* owned */
    size_t n, cap;
    uint64_t clock;
};

dsq_fdc *dsq_fdc_new(unsigned max)
{
    dsq_fdc *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->max = max ? max : 1;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void dsq_fdc_free(dsq_fdc *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        close(c->v[i].fd);
    free(c->v);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Close entry i and drop it (mu held). */
static void drop(dsq_fdc *c, size_t i)
{
    close(c->v[i].fd);
    c->v[i] = c->v[--c->n];
}

/* Close the least recently used entry no one uses (mu held). false: none. */
static bool drop_lru(dsq_fdc *c)
{
    size_t best = c->n;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].users == 0 && (best == c->n || c->v[i].used < c->v[best].used))
            best = i;
    if (best == c->n)
        return false;
    drop(c, best);
    return true;
}

/* Back to the bound, as far as entries are unused (mu held). */
static void trim(dsq_fdc *c)
{
    while (c->n > c->max && drop_lru(c)) {
    }
}

int dsq_fdc_get(dsq_fdc *c, uint64_t key, const char *path)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].key == key && !c->v[i].doomed) {
            c->v[i].users++;
            c->v[i].used = ++c->clock;
            int fd = c->v[i].fd;
            pthread_mutex_unlock(&c->mu);
            return fd;
        }
    }
    /* Room first: at the bound, the least recently used one goes. */
    while (c->n >= c->max && drop_lru(c)) {
    }
    pthread_mutex_unlock(&c->mu);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        /* The process is at its limit: give back what only speeds reads. */
        pthread_mutex_lock(&c->mu);
        bool freed = drop_lru(c);
        pthread_mutex_unlock(&c->mu);
        if (freed)
            fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].key == key && !c->v[i].doomed) { /* another thread opened it meanwhile */
            c->v[i].users++;
            c->v[i].used = ++c->clock;
            int have = c->v[i].fd;
            pthread_mutex_unlock(&c->mu);
            close(fd);
            return have;
        }
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : (c->max < 8 ? 8 : c->max + 1);
        ent *v = realloc(c->v, cap * sizeof *v);
        if (v == NULL) {
            pthread_mutex_unlock(&c->mu);
            close(fd);
            errno = ENOMEM;
            return -1;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = (ent){.key = key, .fd = fd, .users = 1, .used = ++c->clock};
    trim(c);
    pthread_mutex_unlock(&c->mu);
    return fd;
}

void dsq_fdc_put(dsq_fdc *c, int fd)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].fd == fd && c->v[i].users > 0) {
            if (--c->v[i].users == 0 && c->v[i].doomed)
                drop(c, i);
            break;
        }
    }
    trim(c);
    pthread_mutex_unlock(&c->mu);
}

void dsq_fdc_forget(dsq_fdc *c, uint64_t key)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n;) {
        if (c->v[i].key == key && c->v[i].users == 0) {
            drop(c, i);
            continue;
        }
        if (c->v[i].key == key)
            c->v[i].doomed = true;
        i++;
    }
    pthread_mutex_unlock(&c->mu);
}

unsigned dsq_fdc_open_count(dsq_fdc *c)
{
    pthread_mutex_lock(&c->mu);
    unsigned n = (unsigned)c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}
