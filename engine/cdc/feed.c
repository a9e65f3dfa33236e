/* feed — each database's recent durable commits, for CDC subscribers
 * (feed.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

#include "engine/cdc/feed.h"
#include "engine/storage/disk.h"

typedef struct entry {
    uint64_t lsn, time_us;
    uint32_t len;
    uint8_t *bytes;
} entry;

struct dsq_feed_sub {
    dsq_feed *feed;
    dsq_feed_fn fn;
    void *ud;
    dsq_feed_sub *next;
    bool dead;        /* unsubscribed while callbacks ran */
    uint64_t round;   /* the feed's last round that called it */
    uint64_t cursor;  /* the last commit it delivered (under the feed's mu) */
    uint64_t epoch;   /* the feed's when it subscribed */
};

struct dsq_feed {
    pthread_mutex_t mu;
    entry *ring;          /* circular */
    size_t cap, head, n;
    size_t bytes;         /* held */
    uint64_t from;        /* every commit after this LSN is held; UINT64_MAX: none yet */
    uint64_t durable;
    uint64_t epoch;       /* one more each time the database is dropped */
    size_t budget;
    bool queued;          /* on the engine's list of feeds with news */
    dsq_feed *news_next;
    _Atomic size_t nsubs; /* read by the worker */
    /* loop thread */
    dsq_feed_sub *subs;
    bool dispatching;
    bool later;           /* on the engine's list of feeds held back */
    dsq_feed *later_next;
    uint64_t called_ns;   /* when a round of calls of its subscribers last began */
    uint64_t round;       /* that round's number */
    bool slicing;         /* the round is not over */
    bool renew;           /* news came during it: another round */
};

static dsq_feed *feed_new(size_t budget)
{
    dsq_feed *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->from = UINT64_MAX;
    f->budget = budget;
    return f;
}

static void drop_oldest(dsq_feed *f)
{
    entry *x = &f->ring[f->head];
    f->from = x->lsn;
    f->bytes -= x->len + sizeof *x;
    free(x->bytes);
    f->head = (f->head + 1) % f->cap;
    f->n--;
}

void dsq_feed_free(dsq_feed *f)
{
    if (f == NULL)
        return;
    while (f->n > 0)
        drop_oldest(f);
    free(f->ring);
    for (dsq_feed_sub *s = f->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* Hold nothing: the commits after `lsn` are the first to be held again
 * (mu held). */
static void restart(dsq_feed *f, uint64_t lsn)
{
    while (f->n > 0)
        drop_oldest(f);
    f->from = lsn;
}

void dsq_feed_commit(dsq_feed *f, uint64_t lsn, uint64_t time_us, const void *changes, size_t n)
{
    if (f == NULL || atomic_load(&f->nsubs) == 0)
        return;
    uint8_t *copy = n ? malloc(n) : NULL;
    pthread_mutex_lock(&f->mu);
    bool follows = f->n > 0 ? f->ring[(f->head + f->n - 1) % f->cap].lsn + 1 == lsn : true;
    if ((n && copy == NULL) || !follows) {
        /* Out of memory, or a commit went by unseen: start over from here
         * (subscribers behind read the log). */
        restart(f, lsn);
        free(copy);
        pthread_mutex_unlock(&f->mu);
        return;
    }
    if (n)
        memcpy(copy, changes, n);
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        entry *r = malloc(cap * sizeof *r);
        if (r == NULL) {
            restart(f, lsn);
            free(copy);
            pthread_mutex_unlock(&f->mu);
            return;
        }
        for (size_t i = 0; i < f->n; i++)
            r[i] = f->ring[(f->head + i) % f->cap];
        free(f->ring);
        f->ring = r;
        f->cap = cap;
        f->head = 0;
    }
    if (f->n == 0)
        f->from = lsn - 1;
    f->ring[(f->head + f->n) % f->cap] = (entry){lsn, time_us, (uint32_t)n, copy};
    f->n++;
    f->bytes += n + sizeof(entry);
    while (f->bytes > f->budget && f->n > 1)
        drop_oldest(f);
    pthread_mutex_unlock(&f->mu);
}

/* Tell the loop thread the feed has news for its subscribers (mu held on
 * entry; released). */
static void announce(dsq_feeds *fs, dsq_feed *f, bool news)
{
    bool queue = news && !f->queued && atomic_load(&f->nsubs) > 0;
    if (queue)
        f->queued = true;
    pthread_mutex_unlock(&f->mu);
    if (!queue)
        return;
    pthread_mutex_lock(&fs->mu);
    f->news_next = fs->news;
    fs->news = f;
    pthread_mutex_unlock(&fs->mu);
    if (fs->wake)
        fs->wake(fs->wake_arg);
}

void dsq_feed_durable(dsq_feeds *fs, dsq_feed *f, uint64_t lsn)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    bool news = lsn > f->durable;
    if (news)
        f->durable = lsn;
    announce(fs, f, news);
}

void dsq_feed_dropped(dsq_feeds *fs, dsq_feed *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    restart(f, UINT64_MAX); /* a database made later under the name starts from LSN 0 */
    f->durable = 0;
    f->epoch++;
    announce(fs, f, true);
}

uint64_t dsq_engine_feed_epoch(dsq_feed_sub *s) { return s->epoch; }

bool dsq_engine_feed_gone(dsq_feed_sub *s)
{
    pthread_mutex_lock(&s->feed->mu);
    bool gone = s->epoch != s->feed->epoch;
    pthread_mutex_unlock(&s->feed->mu);
    return gone;
}

/* Has the process used cdc_coalesce_cpu % or more of the CPUs it may run
 * on since the last look, BUSY_WINDOW_NS or more ago? Once busy, it stays
 * busy until it uses less than BUSY_STAY % of that: coalescing itself
 * lowers the CPU the next look measures, and with one threshold the
 * server went in and out of coalescing from one window to the next (at
 * 100 subscribers a subscriber got a send every 13-20 ms instead of every
 * 50, and the writers paid for the extra sends). Loop thread. */
#define BUSY_WINDOW_NS 50000000ull
#define BUSY_STAY 70u

bool dsq_feed_busy_next(bool was, uint64_t cpu_ns, uint64_t wall_ns, unsigned ncpu, unsigned pct)
{
    double need = pct * (was ? BUSY_STAY : 100u) / 10000.0; /* a share of the CPUs */
    return (double)cpu_ns >= (double)wall_ns * ncpu * need; /* in double: a long window, many CPUs */
}

static bool busy(dsq_feeds *fs, uint64_t now)
{
    if (fs->coalesce_cpu == 0)
        return true;
    if (fs->busy_at_ns != 0 && now - fs->busy_at_ns < BUSY_WINDOW_NS)
        return fs->busy;
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return false;
    uint64_t cpu = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (fs->busy_at_ns != 0)
        fs->busy = dsq_feed_busy_next(fs->busy, cpu - fs->busy_cpu_ns, now - fs->busy_at_ns, fs->ncpu,
                                      fs->coalesce_cpu);
    fs->busy_at_ns = now;
    fs->busy_cpu_ns = cpu;
    return fs->busy;
}

bool dsq_feeds_busy(dsq_feeds *fs) { return busy(fs, dsq_now_ns()); }

bool dsq_feeds_pending(dsq_feeds *fs)
{
    if (fs->later != NULL)
        return true;
    pthread_mutex_lock(&fs->mu);
    bool news = fs->news != NULL;
    pthread_mutex_unlock(&fs->mu);
    return news;
}

/* How long a busy process leaves between calls of a feed's subscribers:
 * COALESCE_PER_SUB_NS for each (each call costs a socket write per
 * subscriber: a feed makes at most about 1 / COALESCE_PER_SUB_NS writes a
 * second), at most `most` (cdc_coalesce_ms). */
#define COALESCE_PER_SUB_NS 500000ull

static uint64_t gap_of(dsq_feed *f, uint64_t most)
{
    uint64_t g = (uint64_t)atomic_load(&f->nsubs) * COALESCE_PER_SUB_NS;
    return g < most ? g : most;
}

/* Call the feed's subscribers until the slice's time is up (at least one
 * call): a round over many of them is spread over loop iterations, so
 * that the loop serves replies and requests between slices. A coalesced
 * send is tens of KB, some 30 us of the loop each, and writers whose
 * replies wait behind a slice commit less: beside 100 subscribers they
 * committed 16 % more with slices of two calls than of sixteen (eight
 * alternating runs), and as much with slices of 50 us. True when the
 * round is over. */
#define DISPATCH_SLICE_NS 50000u

static bool dispatch(dsq_feed *f, uint64_t now, uint64_t deadline)
{
    if (!f->slicing) {
        f->slicing = true;
        f->round++;
        f->called_ns = now;
    }
    bool called = false, over = true;
    f->dispatching = true;
    for (dsq_feed_sub *s = f->subs; s; s = s->next) {
        if (s->dead || s->round == f->round)
            continue;
        if (called && dsq_now_ns() >= deadline) {
            over = false;
            break;
        }
        s->round = f->round;
        called = true;
        s->fn(s->ud);
    }
    f->dispatching = false;
    pthread_mutex_lock(&f->mu);
    for (dsq_feed_sub **pp = &f->subs; *pp;) {
        dsq_feed_sub *s = *pp;
        if (s->dead) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (over)
        f->slicing = false;
    return over;
}

static void later(dsq_feeds *fs, dsq_feed *f)
{
    f->later = true;
    f->later_next = fs->later;
    fs->later = f;
}

void dsq_feed_poll(dsq_feeds *fs)
{
    pthread_mutex_lock(&fs->mu);
    dsq_feed *list = fs->news;
    fs->news = NULL;
    pthread_mutex_unlock(&fs->mu);
    if (list == NULL && fs->later == NULL)
        return;
    uint64_t now = dsq_now_ns();
    uint64_t most = (uint64_t)fs->coalesce_ms * 1000000u;
    bool hold = most > 0 && busy(fs, now);
    uint64_t deadline = now + (fs->slice_ns ? fs->slice_ns : DISPATCH_SLICE_NS);
    dsq_feed *waiting = fs->later;
    fs->later = NULL;
    while (list) {
        dsq_feed *f = list;
        list = f->news_next;
        pthread_mutex_lock(&f->mu);
        f->queued = false;
        pthread_mutex_unlock(&f->mu);
        if (f->later) {
            /* Its turn comes; subscribers a round in progress has called
             * already need another one for this news. */
            if (f->slicing)
                f->renew = true;
            continue;
        }
        if (hold && now - f->called_ns < gap_of(f, most)) {
            later(fs, f);
            atomic_fetch_add(&fs->held, 1);
            continue;
        }
        if (!dispatch(f, now, deadline))
            later(fs, f);
    }
    /* Feeds held back whose turn came, and rounds going on in slices; a
     * round that news came during is followed by another, in its turn. */
    while (waiting) {
        dsq_feed *f = waiting;
        waiting = f->later_next;
        f->later = false;
        if (!f->slicing && hold && now - f->called_ns < gap_of(f, most)) {
            later(fs, f);
            continue;
        }
        if (!dispatch(f, now, deadline)) {
            later(fs, f);
        } else if (f->renew) {
            f->renew = false;
            later(fs, f);
            atomic_fetch_add(&fs->held, 1);
        }
    }
    fs->due_ns = 0;
    for (dsq_feed *f = fs->later; f; f = f->later_next) {
        uint64_t due = f->slicing || !hold ? now : f->called_ns + gap_of(f, most);
        if (fs->due_ns == 0 || due < fs->due_ns)
            fs->due_ns = due;
    }
}

int64_t dsq_feeds_due_ms(dsq_feeds *fs)
{
    if (fs->due_ns == 0)
        return -1;
    uint64_t now = dsq_now_ns();
    return now >= fs->due_ns ? 0 : (int64_t)((fs->due_ns - now + 999999) / 1000000);
}

void dsq_feeds_init(dsq_feeds *fs)
{
    pthread_mutex_init(&fs->mu, NULL);
    atomic_init(&fs->subscriptions, 0);
    atomic_init(&fs->held, 0);
    fs->news = fs->later = NULL;
    fs->due_ns = fs->busy_at_ns = fs->busy_cpu_ns = 0;
    fs->busy = false;
}

void dsq_feeds_destroy(dsq_feeds *fs) { pthread_mutex_destroy(&fs->mu); }

dsq_feed_sub *dsq_feed_subscribe(dsq_feeds *fs, _Atomic(dsq_feed *) *slot, dsq_feed_fn fn, void *ud)
{
    dsq_feed *f = atomic_load(slot);
    if (f == NULL) {
        if ((f = feed_new(fs->buffer_bytes)) == NULL)
            return NULL;
        atomic_store(slot, f);
    }
    dsq_feed_sub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&f->mu);
    *s = (dsq_feed_sub){.feed = f, .fn = fn, .ud = ud, .next = f->subs, .epoch = f->epoch};
    f->subs = s;
    pthread_mutex_unlock(&f->mu);
    atomic_fetch_add(&f->nsubs, 1);
    atomic_fetch_add(&fs->subscriptions, 1);
    return s;
}

void dsq_feed_unsubscribe(dsq_feeds *fs, dsq_feed_sub *s)
{
    if (s == NULL)
        return;
    dsq_feed *f = s->feed;
    atomic_fetch_sub(&f->nsubs, 1);
    atomic_fetch_sub(&fs->subscriptions, 1);
    pthread_mutex_lock(&f->mu);
    if (f->dispatching) {
        s->dead = true;
    } else {
        for (dsq_feed_sub **pp = &f->subs; *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        }
        free(s);
    }
    if (atomic_load(&f->nsubs) == 0) /* nobody reads it: let it go */
        restart(f, UINT64_MAX);
    pthread_mutex_unlock(&f->mu);
}

uint64_t dsq_engine_feed_durable(dsq_feed_sub *s)
{
    pthread_mutex_lock(&s->feed->mu);
    uint64_t d = s->feed->durable;
    pthread_mutex_unlock(&s->feed->mu);
    return d;
}

void dsq_engine_feed_note_durable(dsq_feed_sub *s, uint64_t lsn)
{
    pthread_mutex_lock(&s->feed->mu);
    if (lsn > s->feed->durable)
        s->feed->durable = lsn;
    pthread_mutex_unlock(&s->feed->mu);
}

void dsq_engine_feed_progress(dsq_feed_sub *s, uint64_t lsn)
{
    pthread_mutex_lock(&s->feed->mu);
    s->cursor = lsn;
    pthread_mutex_unlock(&s->feed->mu);
}

int dsq_feed_stats(dsq_feed *f, uint64_t durable, dsq_sub_stats **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (f == NULL)
        return 0;
    int rc = 0;
    size_t cap = 0;
    pthread_mutex_lock(&f->mu);
    for (dsq_feed_sub *s = f->subs; s; s = s->next)
        cap += !s->dead;
    if (cap > 0 && (*out = calloc(cap, sizeof **out)) == NULL)
        rc = -1;
    for (dsq_feed_sub *s = f->subs; rc == 0 && s; s = s->next) {
        if (s->dead)
            continue;
        /* Bytes of row changes after its cursor that the feed holds; one
         * behind the feed reads the log, and is at least that far behind. */
        uint64_t bytes = 0;
        for (size_t i = 0; i < f->n; i++) {
            entry *x = &f->ring[(f->head + i) % f->cap];
            if (x->lsn > s->cursor && x->lsn <= durable)
                bytes += x->len;
        }
        (*out)[(*n)++] = (dsq_sub_stats){
            .lsn = s->cursor,
            .lag_lsn = durable > s->cursor ? durable - s->cursor : 0,
            .lag_bytes = bytes,
            .reading_log = f->from == UINT64_MAX || s->cursor < f->from,
        };
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int dsq_cdc_batch_put(dsq_buf *out, uint64_t lsn, uint64_t time_us, const void *changes, uint32_t n)
{
    uint8_t h[20];
    dsq_put64(h, lsn);
    dsq_put64(h + 8, time_us);
    dsq_put32(h + 16, n);
    return dsq_buf_append(out, h, sizeof h) | (n ? dsq_buf_append(out, changes, n) : 0);
}

int dsq_cdc_batch_next(const uint8_t **p, const uint8_t *end, uint64_t *lsn, uint64_t *time_us,
                       const uint8_t **changes, uint32_t *n)
{
    if (*p == end)
        return 0;
    if (end - *p < 20)
        return -1;
    *lsn = dsq_get64(*p);
    *time_us = dsq_get64(*p + 8);
    *n = dsq_get32(*p + 16);
    if ((size_t)(end - *p - 20) < *n)
        return -1;
    *changes = *p + 20;
    *p += 20 + (size_t)*n;
    return 1;
}

int dsq_engine_feed_read(dsq_feed_sub *s, uint64_t after, uint64_t limit, size_t max_bytes, dsq_buf *out,
                         uint64_t *upto, bool *more)
{
    dsq_feed *f = s->feed;
    *upto = after;
    *more = false;
    pthread_mutex_lock(&f->mu);
    if (f->from == UINT64_MAX || after < f->from) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    int rc = 1;
    size_t len = out != NULL ? out->len : 0;
    /* The entries hold consecutive LSNs: the one after `after` is at a known place. */
    size_t first = f->n > 0 && after >= f->ring[f->head].lsn ? (size_t)(after - f->ring[f->head].lsn + 1) : 0;
    for (size_t i = first; i < f->n; i++) {
        entry *x = &f->ring[(f->head + i) % f->cap];
        if (x->lsn > f->durable)
            break;
        if (x->lsn > limit) {
            *more = true;
            break;
        }
        if (len > 0 && len + x->len + 20 > max_bytes) {
            *more = true;
            break;
        }
        if (out != NULL && dsq_cdc_batch_put(out, x->lsn, x->time_us, x->bytes, x->len) != 0) {
            rc = -1;
            break;
        }
        len += x->len + 20;
        *upto = x->lsn;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}
