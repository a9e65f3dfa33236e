/* cdcsub — a CDC subscription (see cdcsub.h).
 *
 * Divisions: rendering events; requests; rendered commits, shared;
 * messages of whole batches, shared; the cache's life; the subscription. */
#include "protocol/cdcsub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "protocol/value.h"

#define LOG_BATCH (256u << 10) /* change bytes per log read */
#define FEED_BATCH (64u << 10) /* per read of the feed */

/* ---- rendering events ------------------------------------------------------------------ */

static void put_cdc_value(dsq_buf *b, const dsq_cdc_value *cv, dsq_dosql_enc enc)
{
    dsq_value v = {0};
    switch (cv->type) {
    case SQLITE_INTEGER: v.type = DSQ_V_INT; v.i = cv->i; break;
    case SQLITE_FLOAT: v.type = DSQ_V_REAL; v.d = cv->r; break;
    case SQLITE_TEXT: v.type = DSQ_V_TEXT; v.p = (const char *)cv->p; v.n = cv->n; break;
    case SQLITE_BLOB: v.type = DSQ_V_BLOB; v.p = (const char *)cv->p; v.n = cv->n; break;
    default: v.type = DSQ_V_NULL; break;
    }
    if (enc == DSQ_ENC_CAPNWEB)
        dsq_cw_value(b, &v);
    else
        dsq_json_value(b, &v);
}

static void put_int(dsq_buf *b, int64_t i, dsq_dosql_enc enc)
{
    dsq_value v = {.type = DSQ_V_INT, .i = i};
    if (enc == DSQ_ENC_CAPNWEB)
        dsq_cw_value(b, &v);
    else
        dsq_json_value(b, &v);
}

/* {"col": value, ...} of the columns (only primary-key ones when pk). */
static void put_row(dsq_buf *b, const dsq_cdc_event *ev, const dsq_cdc_value *vals, bool pk,
                    dsq_dosql_enc enc)
{
    dsq_buf_puts(b, "{");
    bool first = true;
    for (uint16_t k = 0; k < ev->ncols; k++) {
        if ((pk && ev->cols[k].pk == 0) || ev->cols[k].len == 0) /* (no name: a VIRTUAL generated column) */
            continue;
        if (!first)
            dsq_buf_puts(b, ",");
        first = false;
        dsq_json_string(b, ev->cols[k].name, ev->cols[k].len);
        dsq_buf_puts(b, ":");
        put_cdc_value(b, &vals[k], enc);
    }
    dsq_buf_puts(b, "}");
}

static bool wanted(const dsq_cdc_event *ev, const char *const *tables, size_t ntables, unsigned ops)
{
    if (ev->op == DSQ_CDC_DDL)
        return (ops & DSQ_CDCSUB_DDL) != 0;
    unsigned bit = ev->op == DSQ_CDC_INSERT ? DSQ_CDCSUB_INSERT
                   : ev->op == DSQ_CDC_UPDATE ? DSQ_CDCSUB_UPDATE
                                              : DSQ_CDCSUB_DELETE;
    if (!(ops & bit))
        return false;
    if (tables == NULL)
        return true;
    for (size_t i = 0; i < ntables; i++)
        if (strlen(tables[i]) == ev->table_len && memcmp(tables[i], ev->table, ev->table_len) == 0)
            return true;
    return false;
}

static void render_event(dsq_buf *b, const dsq_cdc_event *ev, uint64_t lsn, uint64_t time_us,
                         dsq_dosql_enc enc)
{
    /* Arrays of chars, not pointers: read-only data, nothing to relocate. */
    static const char ops[][24] = {"", ",\"operation\":\"INSERT\"", ",\"operation\":\"UPDATE\"",
                                   ",\"operation\":\"DELETE\"", ",\"operation\":\"DDL\""};
    dsq_buf_puts(b, "{\"lsn\":");
    if (enc == DSQ_ENC_CAPNWEB)
        dsq_cw_bigint(b, (int64_t)lsn);
    else
        dsq_buf_put_u64(b, lsn);
    dsq_buf_puts(b, enc == DSQ_ENC_CAPNWEB ? ",\"timestamp\":[\"date\"," : ",\"timestamp\":");
    dsq_buf_put_u64(b, time_us / 1000);
    if (enc == DSQ_ENC_CAPNWEB)
        dsq_buf_puts(b, "]");
    dsq_buf_puts(b, ops[ev->op]);
    if (ev->op == DSQ_CDC_DDL) {
        dsq_buf_puts(b, ",\"sql\":");
        dsq_json_string(b, ev->sql, ev->sql_len);
        dsq_buf_puts(b, "}");
        return;
    }
    dsq_buf_puts(b, ",\"table\":");
    dsq_json_string(b, ev->table, ev->table_len);
    const dsq_cdc_value *row = ev->after ? ev->after : ev->before;
    if (ev->without_rowid) {
        dsq_buf_puts(b, ",\"primaryKey\":");
        put_row(b, ev, row, true, enc);
    } else {
        dsq_buf_puts(b, ",\"rowid\":");
        put_int(b, ev->op == DSQ_CDC_UPDATE ? ev->new_rowid : ev->rowid, enc);
        if (ev->op == DSQ_CDC_UPDATE && ev->new_rowid != ev->rowid) {
            dsq_buf_puts(b, ",\"previousRowid\":");
            put_int(b, ev->rowid, enc);
        }
    }
    if (ev->before) {
        dsq_buf_puts(b, ",\"before\":");
        put_row(b, ev, ev->before, false, enc);
    }
    if (ev->after) {
        dsq_buf_puts(b, ",\"after\":");
        put_row(b, ev, ev->after, false, enc);
    }
    dsq_buf_puts(b, "}");
}

/* Render with the caller's two scratch buffers (kept between calls). */
static int render(const uint8_t *changes, uint32_t n, uint64_t lsn, uint64_t time_us, dsq_dosql_enc enc,
                  const char *const *tables, size_t ntables, unsigned ops,
                  int (*fn)(void *ud, const char *text, size_t len, bool last), void *ud, dsq_buf *scratch)
{
    dsq_cdc_reader r;
    if (dsq_cdc_read_begin(&r, changes, n) != 0)
        return -1;
    /* Each wanted event is rendered one step behind, so that the last one
     * of the commit is known to be the last. */
    dsq_buf cur = scratch[0], prev = scratch[1];
    dsq_buf_reset(&cur);
    dsq_buf_reset(&prev);
    bool have = false;
    int rc;
    dsq_cdc_event ev;
    while ((rc = dsq_cdc_read_next(&r, &ev)) == 1) {
        if (!wanted(&ev, tables, ntables, ops))
            continue;
        dsq_buf_reset(&cur);
        render_event(&cur, &ev, lsn, time_us, enc);
        if (have && fn(ud, prev.data, prev.len, false) != 0) {
            rc = -2;
            break;
        }
        dsq_buf t = prev;
        prev = cur;
        cur = t;
        have = true;
    }
    if (rc == 0 && have && fn(ud, prev.data, prev.len, true) != 0)
        rc = -2;
    scratch[0] = cur;
    scratch[1] = prev;
    dsq_cdc_read_end(&r);
    return rc; /* 0, -1 damaged, -2 fn said stop */
}


/* ---- requests ------------------------------------------------------------------------------ */

int dsq_cdcsub_parse(json_t *p, dsq_cdcsub_req *r, const char **tables, size_t max_tables, char *err,
                     size_t errlen)
{
    json_t *from = json_object_get(p, "fromLSN");
    if (from != NULL && !json_is_null(from)) {
        json_t *big = json_object_get(from, "$bigint");
        if (json_is_string(big) && json_object_size(from) == 1)
            from = big;
        if (json_is_integer(from) && json_integer_value(from) >= 0)
            r->from = (uint64_t)json_integer_value(from);
        else if (!json_is_string(from) || dsq_parse_u64(json_string_value(from), &r->from) != 0) {
            snprintf(err, errlen, "\"fromLSN\" must be an LSN (a whole number)");
            return -1;
        }
        r->has_from = true;
    }
    json_t *t = json_object_get(p, "tables");
    if (t != NULL && !json_is_null(t)) {
        if (!json_is_array(t) || json_array_size(t) > max_tables) {
            snprintf(err, errlen, "\"tables\" must be an array of up to %zu table names", max_tables);
            return -1;
        }
        for (size_t i = 0; i < json_array_size(t); i++) {
            json_t *x = json_array_get(t, i);
            if (!json_is_string(x) || json_string_length(x) == 0 ||
                json_string_length(x) != strlen(json_string_value(x))) {
                snprintf(err, errlen, "\"tables\"[%zu] must be a table name", i);
                return -1;
            }
            tables[i] = json_string_value(x);
        }
        r->tables = tables;
        r->ntables = json_array_size(t);
    }
    json_t *a = json_object_get(p, "operations");
    if (a != NULL && !json_is_null(a)) {
        static const char names[][8] = {"INSERT", "UPDATE", "DELETE", "DDL"};
        static const unsigned bits[] = {DSQ_CDCSUB_INSERT, DSQ_CDCSUB_UPDATE, DSQ_CDCSUB_DELETE, DSQ_CDCSUB_DDL};
        if (!json_is_array(a) || json_array_size(a) == 0) {
            snprintf(err, errlen, "\"operations\" must be a non-empty array of \"INSERT\", \"UPDATE\", "
                                  "\"DELETE\", \"DDL\"");
            return -1;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            const char *v = json_string_value(json_array_get(a, i));
            unsigned bit = 0;
            for (size_t k = 0; v && k < 4; k++)
                if (strcmp(v, names[k]) == 0)
                    bit = bits[k];
            if (bit == 0) {
                snprintf(err, errlen, "\"operations\"[%zu] must be \"INSERT\", \"UPDATE\", \"DELETE\" or \"DDL\"", i);
                return -1;
            }
            r->ops |= bit;
        }
    }
    return 0;
}

/* ---- rendered commits, shared ------------------------------------------------------------------
 *
 * Subscribers of one database read the same commits at about the same
 * time: a commit's events, rendered for one encoding and operation filter
 * (without a table filter), are kept in a direct-mapped cache and handed
 * to every other subscriber as they are. Consecutive commits of a
 * database take consecutive slots, so a batch of up to RC_SLOTS commits
 * (what a busy server gathers for a subscriber while it coalesces, feed.c)
 * is rendered once for all. The slots are the server's (dsq_cdc_cache),
 * shared by all its subscriptions. Loop thread only.
 *
 * A slot's buffers only grow, so without a bound each would keep the
 * largest commit it ever held (4096 slots of a 100 KiB DELETE are
 * 400 MiB, reached slowly over a long run): what the slots hold in all
 * stays within about RC_BUDGET (a commit that would pass it is rendered for its
 * subscriber and not kept), and a slot holding more than RC_SLOT_KEEP
 * lets it go when it is taken for another commit. A slot not used for
 * RC_IDLE_MS gives its memory back (a few slots are looked at with each
 * commit delivered): subscribers alike read a commit within moments of
 * each other, and the cache's memory follows what they read now rather
 * than filling up to the budget over hours. */

#define RC_SLOTS 4096
#define RC_BUDGET (8u << 20)
#define RC_SLOT_KEEP (16u << 10)
#define RC_IDLE_MS 5000
#define RC_SWEEP 64 /* slots looked at per commit delivered */

typedef struct rc_entry {
    char db[129];
    uint64_t epoch;   /* the database's incarnation: a name dropped and made again starts at LSN 1 */
    uint64_t lsn;
    int enc;
    unsigned ops;
    bool valid;
    uint64_t used_ms; /* last filled or read */
    dsq_buf text;     /* the events back to back */
    uint32_t *ends;   /* where each ends in text */
    uint8_t *last;    /* the last of its commit */
    size_t n, cap;
} rc_entry;

/* The rendered commits, as the subscriptions reach them (one server's). */
typedef struct rc_cache {
    rc_entry slot[RC_SLOTS];
    size_t held;      /* bytes the slots' buffers hold */
    size_t next;      /* the next slot the sweep looks at */
} rc_cache;

static size_t rc_size(const rc_entry *e) { return e->text.cap + e->cap * (sizeof *e->ends + sizeof *e->last); }

/* Slot e (of c) holds nothing (and no commit). */
static void rc_release(rc_cache *c, rc_entry *e)
{
    c->held -= rc_size(e);
    dsq_buf_free(&e->text);
    free(e->ends);
    free(e->last);
    e->ends = NULL;
    e->last = NULL;
    e->n = e->cap = 0;
    e->valid = false;
}

/* Give back the memory of the next RC_SWEEP slots that were not used for
 * RC_IDLE_MS. */
static void rc_sweep(rc_cache *c, uint64_t now)
{
    for (int i = 0; i < RC_SWEEP; i++) {
        rc_entry *e = &c->slot[c->next++ % RC_SLOTS];
        if (rc_size(e) > 0 && now - e->used_ms >= RC_IDLE_MS)
            rc_release(c, e);
    }
}

static rc_entry *rc_slot(rc_cache *c, const char *db, uint64_t epoch, uint64_t lsn, int enc, unsigned ops)
{
    uint64_t h = (dsq_hash_str(db) ^ (epoch * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)ops << 3) ^ (uint64_t)enc) + lsn;
    return &c->slot[h % RC_SLOTS];
}

static bool rc_match(const rc_entry *e, const char *db, uint64_t epoch, uint64_t lsn, int enc, unsigned ops)
{
    return e->valid && e->lsn == lsn && e->epoch == epoch && e->enc == enc && e->ops == ops &&
           strcmp(e->db, db) == 0;
}

static int rc_add(rc_cache *c, rc_entry *e, const char *text, size_t len, bool last)
{
    size_t before = rc_size(e);
    if (c->held + len > RC_BUDGET)
        return -1;
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 8;
        uint32_t *ends = realloc(e->ends, cap * sizeof *ends);
        if (ends == NULL)
            return -1;
        e->ends = ends;
        uint8_t *l = realloc(e->last, cap);
        if (l == NULL)
            return -1;
        e->last = l;
        e->cap = cap;
    }
    int rc = dsq_buf_append(&e->text, text, len) != 0 || e->text.len > UINT32_MAX ? -1 : 0;
    c->held += rc_size(e) - before;
    if (rc != 0)
        return -1;
    e->ends[e->n] = (uint32_t)e->text.len;
    e->last[e->n++] = last;
    return 0;
}

/* ---- messages of whole batches, shared ------------------------------------------------------ */

#define BATCH_SLOTS 16

typedef struct batch_msg {
    dsq_cdc_batch_key key;
    bool valid;
    dsq_buf msg;
    dsq_alt alt; /* the message's other form, made by a transport */
} batch_msg;

/* What one server's subscriptions share: the rendered commits and the
 * messages of whole batches. */
struct dsq_cdc_cache {
    rc_cache rc;
    batch_msg batches[BATCH_SLOTS];
};

static batch_msg *batch_slot(dsq_cdc_cache *c, const dsq_cdc_batch_key *k)
{
    uint64_t h = dsq_hash_str(k->db) ^ (dsq_hash_str(k->tag) * 31) ^ (k->after * 0x9E3779B97F4A7C15ull) ^ k->upto;
    return &c->batches[h % BATCH_SLOTS];
}

const dsq_buf *dsq_cdc_batch_find(dsq_cdc_cache *c, const dsq_cdc_batch_key *k, dsq_alt **alt)
{
    batch_msg *m = batch_slot(c, k);
    bool same = m->valid && m->key.epoch == k->epoch && m->key.after == k->after && m->key.upto == k->upto &&
                m->key.enc == k->enc && m->key.ops == k->ops && strcmp(m->key.tag, k->tag) == 0 &&
                strcmp(m->key.db, k->db) == 0;
    if (alt != NULL)
        *alt = same ? &m->alt : NULL;
    return same ? &m->msg : NULL;
}

dsq_alt *dsq_cdc_batch_keep(dsq_cdc_cache *c, const dsq_cdc_batch_key *k, const void *msg, size_t len)
{
    batch_msg *m = batch_slot(c, k);
    m->valid = false;
    m->key = *k;
    dsq_buf_reset(&m->msg);
    m->alt.kind = 0;
    dsq_buf_reset(&m->alt.buf);
    m->valid = len == 0 || dsq_buf_append(&m->msg, msg, len) == 0;
    if (m->msg.cap > (1u << 20) && !m->valid)
        dsq_buf_free(&m->msg);
    return m->valid ? &m->alt : NULL;
}

/* ---- the cache's life ------------------------------------------------------------------------- */

dsq_cdc_cache *dsq_cdc_cache_new(void) { return calloc(1, sizeof(dsq_cdc_cache)); }

void dsq_cdc_cache_free(dsq_cdc_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < RC_SLOTS; i++)
        rc_release(&c->rc, &c->rc.slot[i]);
    for (size_t i = 0; i < BATCH_SLOTS; i++) {
        dsq_buf_free(&c->batches[i].msg);
        dsq_buf_free(&c->batches[i].alt.buf);
    }
    free(c);
}

/* ---- the subscription ---------------------------------------------------------------------- */

struct dsq_cdcsub {
    dsq_engine *e;
    dsq_cdc_cache *cache;   /* the server's: rendered commits, shared */
    dsq_cdcsub_sink sink;
    char db[129];
    char **tables;
    size_t ntables;
    unsigned ops;
    dsq_dosql_enc enc;
    uint64_t session;
    bool has_from;
    uint64_t cursor;        /* the last commit delivered whole */
    uint64_t current;       /* the commit being delivered */
    dsq_feed_sub *feed;
    dsq_call call;          /* the log read in flight */
    bool reading;
    bool started;
    bool waiting;           /* for the sink's room */
    bool stopped;
    int depth;              /* inside sink callbacks */
    dsq_buf batch;
    dsq_buf scratch[2];     /* rendering */
};

static void sub_free(dsq_cdcsub *s)
{
    dsq_call_reset(&s->call);
    dsq_buf_free(&s->batch);
    dsq_buf_free(&s->scratch[0]);
    dsq_buf_free(&s->scratch[1]);
    for (size_t i = 0; i < s->ntables; i++)
        free(s->tables[i]);
    free(s->tables);
    free(s);
}

/* Free it if stopped and nothing holds it. */
static bool gone(dsq_cdcsub *s)
{
    if (!s->stopped)
        return false;
    if (!s->reading && s->depth == 0)
        sub_free(s);
    return true;
}

static void end_with(dsq_cdcsub *s, dsq_code code, const char *msg)
{
    if (s->stopped)
        return;
    s->depth++;
    s->sink.ended(s->sink.ud, code, msg, s->cursor);
    s->depth--;
    if (!s->stopped) {
        s->stopped = true;
        dsq_engine_feed_unsubscribe(s->e, s->feed);
        s->feed = NULL;
    }
}

static int on_event(void *ud, const char *text, size_t len, bool last)
{
    dsq_cdcsub *s = ud;
    if (s->stopped)
        return -1;
    return s->sink.event(s->sink.ud, text, len, s->current, last) == 0 && !s->stopped ? 0 : -1;
}

/* on_event, keeping what it renders for the next subscriber. */
typedef struct recording {
    dsq_cdcsub *s;
    rc_entry *e;
} recording;

static int on_event_kept(void *ud, const char *text, size_t len, bool last)
{
    recording *r = ud;
    rc_cache *c = &r->s->cache->rc;
    if (r->e != NULL && rc_add(c, r->e, text, len, last) != 0) {
        rc_release(c, r->e); /* not kept: out of memory, or over the budget */
        r->e = NULL;
    }
    return on_event(r->s, text, len, last);
}

/* One commit's events to the sink: from the shared cache, or rendered
 * (and kept there). 0, -1 damaged, -2 the sink stopped. */
static int deliver_commit(dsq_cdcsub *s, const uint8_t *changes, uint32_t n, uint64_t lsn, uint64_t t)
{
    if (s->tables != NULL)
        return render(changes, n, lsn, t, s->enc, (const char *const *)s->tables, s->ntables, s->ops,
                      on_event, s, s->scratch);
    uint64_t epoch = s->feed != NULL ? dsq_engine_feed_epoch(s->feed) : 0;
    uint64_t now = dsq_now_ms();
    rc_cache *c = &s->cache->rc;
    rc_sweep(c, now);
    rc_entry *e = rc_slot(c, s->db, epoch, lsn, (int)s->enc, s->ops);
    e->used_ms = now;
    if (rc_match(e, s->db, epoch, lsn, (int)s->enc, s->ops)) {
        for (size_t k = 0; k < e->n; k++) {
            size_t from = k ? e->ends[k - 1] : 0;
            if (on_event(s, e->text.data + from, e->ends[k] - from, e->last[k]) != 0)
                return -2;
        }
        return 0;
    }
    if (rc_size(e) > RC_SLOT_KEEP)
        rc_release(c, e);
    e->valid = false;
    dsq_strlcpy(e->db, s->db, sizeof e->db);
    e->epoch = epoch;
    e->lsn = lsn;
    e->enc = (int)s->enc;
    e->ops = s->ops;
    e->n = 0;
    dsq_buf_reset(&e->text);
    recording r = {s, e};
    int rc = render(changes, n, lsn, t, s->enc, NULL, 0, s->ops, on_event_kept, &r, s->scratch);
    if (rc == 0 && r.e != NULL && !s->stopped)
        e->valid = true; /* whole: every event was rendered */
    return rc;
}

/* Hand a batch's commits to the sink; the cursor follows. */
static void deliver(dsq_cdcsub *s, const dsq_buf *b)
{
    /* An empty batch may have no buffer at all: NULL + 0 is undefined. */
    const uint8_t *p = (const uint8_t *)b->data, *end = b->len ? p + b->len : p;
    uint64_t lsn, t;
    const uint8_t *changes;
    uint32_t n;
    int rc;
    s->depth++;
    while (!s->stopped && (rc = dsq_cdc_batch_next(&p, end, &lsn, &t, &changes, &n)) == 1) {
        if (lsn <= s->cursor)
            continue;
        if (n > 0) {
            s->current = lsn;
            if (deliver_commit(s, changes, n, lsn, t) == -1 &&
                !s->stopped) {
                s->depth--;
                char msg[160];
                snprintf(msg, sizeof msg, "the change record of LSN %llu is damaged",
                         (unsigned long long)lsn);
                end_with(s, DSQ_CODE_INTERNAL_ERROR, msg);
                return;
            }
        }
        s->cursor = lsn;
    }
    if (!s->stopped && s->sink.flush != NULL)
        s->sink.flush(s->sink.ud);
    s->depth--;
}

static void read_log(dsq_cdcsub *s);

static void pump(dsq_cdcsub *s)
{
    if (!s->stopped && s->feed != NULL && dsq_engine_feed_gone(s->feed)) {
        char msg[200];
        snprintf(msg, sizeof msg, "database '%s' was dropped", s->db);
        end_with(s, DSQ_CODE_SUBSCRIPTION_ERROR, msg);
        return;
    }
    while (!s->stopped && !s->reading) {
        if (s->sink.can_send != NULL && !s->sink.can_send(s->sink.ud)) {
            s->waiting = true;
            return;
        }
        /* The feed first; the log only for what it no longer (or not yet)
         * holds and is durable. */
        uint64_t upto, limit = UINT64_MAX;
        bool more;
        /* A batch the sink has sent already, to a subscription like this
         * one, goes as it is (nothing copied, nothing rendered); if not,
         * the sink gathers exactly that batch. */
        if (s->sink.batch != NULL && s->tables == NULL &&
            dsq_engine_feed_read(s->feed, s->cursor, UINT64_MAX, FEED_BATCH, NULL, &upto, &more) == 1 &&
            upto > s->cursor) {
            limit = upto;
            s->depth++;
            int sent = s->sink.batch(s->sink.ud, s->db, dsq_engine_feed_epoch(s->feed), s->cursor, upto);
            s->depth--;
            if (s->stopped)
                return;
            if (sent == 1) {
                s->cursor = upto;
                dsq_engine_feed_progress(s->feed, s->cursor);
                if (!more)
                    return;
                continue;
            }
        }
        dsq_buf_reset(&s->batch);
        int rc = dsq_engine_feed_read(s->feed, s->cursor, limit, FEED_BATCH, &s->batch, &upto, &more);
        if (limit != UINT64_MAX && (rc != 1 || upto != limit)) {
            s->depth++;
            s->sink.batch(s->sink.ud, NULL, 0, 0, 0);
            s->depth--;
            if (s->stopped)
                return;
        }
        if (rc < 0) {
            end_with(s, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        if (rc == 0) {
            if (dsq_engine_feed_durable(s->feed) <= s->cursor)
                return; /* nothing durable after the cursor yet: wait for news */
            read_log(s);
            return;
        }
        deliver(s, &s->batch);
        if (!s->stopped && upto > s->cursor)
            s->cursor = upto;
        if (!s->stopped)
            dsq_engine_feed_progress(s->feed, s->cursor);
        if (!more)
            return;
    }
}

static void on_read(dsq_call *c)
{
    dsq_cdcsub *s = c->ud;
    s->reading = false;
    if (gone(s))
        return;
    if (c->err != 0) {
        if (!s->started) {
            s->started = true;
            s->stopped = true;
            dsq_engine_feed_unsubscribe(s->e, s->feed);
            s->feed = NULL;
            s->depth++;
            s->sink.started(s->sink.ud, -1, c->code, c->msg);
            s->depth--;
            gone(s);
            return;
        }
        if (c->code == DSQ_CODE_INVALID_LSN) {
            char msg[700];
            snprintf(msg, sizeof msg,
                     "the subscriber fell behind the retained log (%.500s); the last LSN delivered is %llu",
                     c->msg, (unsigned long long)s->cursor);
            end_with(s, DSQ_CODE_BUFFER_OVERFLOW, msg);
        } else {
            end_with(s, c->code, c->msg);
        }
        gone(s);
        return;
    }
    if (!s->started) {
        s->started = true;
        dsq_engine_feed_note_durable(s->feed, c->upto_lsn);
        if (!s->has_from)
            s->cursor = c->lsn; /* from the durable end on */
        s->depth++;
        s->sink.started(s->sink.ud, 0, DSQ_CODE_UNKNOWN, "");
        s->depth--;
        if (gone(s))
            return;
    }
    deliver(s, &c->out);
    if (gone(s))
        return;
    if (c->lsn > s->cursor)
        s->cursor = c->lsn;
    dsq_engine_feed_progress(s->feed, s->cursor);
    pump(s);
    gone(s);
}

/* Submit the next log read; 0, or -1 when the engine cannot queue it
 * (s->call.code and msg say why). */
static int submit_read(dsq_cdcsub *s)
{
    dsq_call_reset(&s->call);
    memset(&s->call, 0, sizeof s->call);
    s->call.op = DSQ_OP_CDC_READ;
    /* The first read opens the database and learns where its durable log
     * ends; catch-up reads after it read the log files beside its actor. */
    if (s->started) {
        s->call.target_db = s->db;
        s->call.upto_lsn = dsq_engine_feed_durable(s->feed);
    }
    s->call.as_of = s->started || s->has_from ? DSQ_AS_OF_LSN : DSQ_AS_OF_NONE;
    s->call.as_of_lsn = s->cursor;
    s->call.chunk_rows = LOG_BATCH;
    s->call.scope = DSQ_SCOPE_R;
    s->call.session = s->session;
    s->call.done = on_read;
    s->call.ud = s;
    s->reading = true;
    if ((s->started ? dsq_engine_submit_system(s->e, &s->call) : dsq_engine_submit(s->e, s->db, &s->call)) != 0) {
        s->reading = false;
        s->call.err = -1;
        return -1;
    }
    return 0;
}

static void read_log(dsq_cdcsub *s)
{
    if (submit_read(s) != 0)
        on_read(&s->call);
}

static void on_news(void *ud)
{
    dsq_cdcsub *s = ud;
    if (s->started && !s->waiting && !s->reading && !s->stopped) {
        pump(s);
        gone(s);
    }
}

dsq_cdcsub *dsq_cdcsub_start(dsq_engine *e, dsq_cdc_cache *cache, const dsq_cdcsub_req *req,
                             const dsq_cdcsub_sink *sink, dsq_code *code, char *msg, size_t msglen)
{
    *code = DSQ_CODE_RESOURCE_EXHAUSTED;
    snprintf(msg, msglen, "out of memory");
    dsq_cdcsub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->e = e;
    s->cache = cache;
    s->sink = *sink;
    dsq_strlcpy(s->db, req->db, sizeof s->db);
    /* By default everything; with a table filter, the row events of those
     * tables (a schema event names no one table) unless DDL is asked for. */
    s->ops = req->ops ? req->ops : req->tables ? DSQ_CDCSUB_ALL & ~DSQ_CDCSUB_DDL : DSQ_CDCSUB_ALL;
    s->enc = req->enc;
    s->session = req->session;
    s->has_from = req->has_from;
    s->cursor = req->has_from ? req->from : 0;
    if (req->tables != NULL) {
        s->tables = calloc(req->ntables ? req->ntables : 1, sizeof *s->tables);
        if (s->tables == NULL) {
            sub_free(s);
            return NULL;
        }
        s->ntables = req->ntables;
        for (size_t i = 0; i < req->ntables; i++) {
            if ((s->tables[i] = strdup(req->tables[i])) == NULL) {
                sub_free(s);
                return NULL;
            }
        }
    }
    /* The feed keeps commits from now on; the log has the ones before. */
    if ((s->feed = dsq_engine_feed_subscribe(e, s->db, on_news, s)) == NULL) {
        sub_free(s);
        return NULL;
    }
    if (submit_read(s) != 0) {
        *code = s->call.code;
        snprintf(msg, msglen, "%s", s->call.msg);
        dsq_engine_feed_unsubscribe(e, s->feed);
        sub_free(s);
        return NULL;
    }
    return s;
}

void dsq_cdcsub_writable(dsq_cdcsub *s)
{
    if (!s->waiting || s->stopped)
        return;
    s->waiting = false;
    pump(s);
    gone(s);
}

void dsq_cdcsub_stop(dsq_cdcsub *s)
{
    if (s == NULL)
        return;
    if (!s->stopped) {
        s->stopped = true;
        dsq_engine_feed_unsubscribe(s->e, s->feed);
        s->feed = NULL;
    }
    gone(s);
}

uint64_t dsq_cdcsub_lsn(const dsq_cdcsub *s) { return s->cursor; }
