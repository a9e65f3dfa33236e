/* tail — sync_to_object_store = commit: a database's log records go to the
 * object store as they become durable, in tail objects
 * (db/NAME/tail/AFTER-UPTO, LSNs in hex: the records after AFTER up to
 * UPTO, as the log holds them); once a manifest covers a tail's last LSN
 * the tail goes; a restore appends the tails that follow the log it
 * downloaded (tier.h has the model, docs/storage.md the layout).
 *
 * Divisions: putting a tail; tail keys and trimming; applying tails to a
 * restored log. */
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/storage/wal.h"
#include "engine/tier/tier.h"
#include "engine/tier/tier_int.h"

/* ---- putting a tail ---------------------------------------------------------------------------- */

static void tail_key(char *out, size_t n, const char *db, uint64_t after, uint64_t upto)
{
    snprintf(out, n, "db/%s/tail/%016llx-%016llx", db, (unsigned long long)after, (unsigned long long)upto);
}

typedef struct tail_put {
    dsq_obj_req r;
    dsq_buf body;
    dsq_tier *t;
    dsq_tier_tail_fn fn;
    void *ud;
    uint64_t upto;
} tail_put;

static int tail_collect(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err,
                        size_t errlen)
{
    if (dsq_buf_append(ud, rec, r->len) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void tail_done(dsq_obj_req *r)
{
    tail_put *p = r->ud;
    bool ok = r->status == DSQ_OBJ_OK;
    if (ok) {
        atomic_fetch_add(&p->t->uploads, 1);
        atomic_fetch_add(&p->t->bytes, p->body.len);
    } else {
        dsq__tier_note_error(p->t, r->key, r->msg);
    }
    p->fn(p->ud, ok, p->upto, ok ? "" : r->msg);
    dsq_obj_req_clear(&p->r);
    dsq_buf_free(&p->body);
    free(p);
}

void dsq_tier_tail(dsq_tier *t, const char *db, struct dsq_wal *w, uint64_t after, uint64_t upto,
                   dsq_tier_tail_fn fn, void *ud)
{
    tail_put *p = calloc(1, sizeof *p);
    char err[300] = "out of memory";
    /* The records from the log's copy in memory; if it does not have
     * them all (a failed tail, a rewind), from the log. */
    bool have = p != NULL && dsq_wal_tee_take(w, after, upto, &p->body) == 0;
    if (p != NULL && !have)
        dsq_buf_reset(&p->body);
    if (p == NULL || (!have && dsq_wal_scan(w, after, upto, tail_collect, &p->body, err, sizeof err) != 0)) {
        if (p)
            dsq_buf_free(&p->body);
        free(p);
        fn(ud, false, upto, err);
        return;
    }
    p->t = t;
    p->fn = fn;
    p->ud = ud;
    p->upto = upto;
    p->r.op = DSQ_OBJ_PUT;
    tail_key(p->r.key, sizeof p->r.key, db, after, upto);
    p->r.body = p->body.data ? p->body.data : "";
    p->r.body_len = p->body.len;
    p->r.done = tail_done;
    p->r.ud = p;
    dsq_obj_submit(t->cfg.obj, &p->r);
}

/* ---- tail keys and trimming ------------------------------------------------------------------- */

/* The tail objects of db, ascending by their first LSN; the caller
 * clears r. 0, or -1 (r->msg). */
static int tails_list(dsq_tier *t, const char *db, dsq_obj_req *r)
{
    memset(r, 0, sizeof *r);
    r->op = DSQ_OBJ_LIST;
    snprintf(r->key, sizeof r->key, "db/%s/tail/", db);
    return dsq_obj_run(t->cfg.obj, r) == DSQ_OBJ_OK ? 0 : -1;
}

/* The LSNs a tail object's key names (false: not a tail's key). */
bool dsq__tier_tail_range(const char *key, uint64_t *after, uint64_t *upto)
{
    const char *p = strstr(key, "/tail/");
    unsigned long long a, b;
    char extra;
    if (p == NULL || sscanf(p + 6, "%16llx-%16llx%c", &a, &b, &extra) != 2)
        return false;
    *after = a;
    *upto = b;
    return true;
}

/* The manifest of db now covers every commit up to lsn: its tails up to
 * there go. */
void dsq__tier_tails_trim(dsq_tier *t, const char *db, uint64_t lsn)
{
    dsq_obj_req r;
    if (tails_list(t, db, &r) != 0) {
        dsq_obj_req_clear(&r);
        return; /* they go with a later manifest */
    }
    json_t *keys = json_object();
    for (size_t i = 0; i < r.nitems; i++) {
        uint64_t a, b;
        if (dsq__tier_tail_range(r.items[i].key, &a, &b) && b <= lsn)
            json_object_set_new(keys, r.items[i].key, json_true());
    }
    dsq_obj_req_clear(&r);
    dsq__tier_delete_keys(t, keys, NULL, 0);
    json_decref(keys);
}

/* ---- applying tails to a restored log ------------------------------------------------------------ */

/* Whether p[0..n) holds intact records after LSN `after` up to `upto`,
 * one after another, and nothing else. */
bool dsq__tier_tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto)
{
    const uint8_t *end = p + n;
    uint64_t next = after + 1;
    while (end - p >= DSQ_WAL_REC_HDR) {
        dsq_wal_rec h;
        if (dsq_wal_rec_header(p, &h) != 0 || h.len > (size_t)(end - p) || !dsq_wal_rec_valid(p, &h) ||
            h.lsn != next)
            return false;
        next++;
        p += h.len;
    }
    return p == end && next == upto + 1;
}

/* After a restore's files are in `dir`: append to its log the records of
 * the tail objects that follow the log's last record; with ends_at, the
 * LSN the log then ends at (the log is opened, and so recovered, for it
 * even when there is no tail). */
int dsq__tier_tails_apply(dsq_tier *t, const char *db, const char *dir, uint64_t *ends_at, char *err, size_t errlen)
{
    dsq_obj_req r;
    if (tails_list(t, db, &r) != 0) {
        snprintf(err, errlen, "cannot list the tails of %s: %.200s", db, r.msg);
        dsq_obj_req_clear(&r);
        return -1;
    }
    if (r.nitems == 0 && ends_at == NULL) {
        dsq_obj_req_clear(&r);
        return 0;
    }
    char path[8192];
    unsigned page_size = 0;
    snprintf(path, sizeof path, "%s/format", dir);
    FILE *fp = fopen(path, "r");
    if (fp == NULL || fscanf(fp, "dosqld-db 1 page_size %u", &page_size) != 1) {
        if (fp)
            fclose(fp);
        dsq_obj_req_clear(&r);
        snprintf(err, errlen, "the format file of %s cannot be read", db);
        return -1;
    }
    fclose(fp);
    /* The log is read from the newest checkpoint on, as its open does. */
    uint64_t from = 0;
    snprintf(path, sizeof path, "%s/ckpt", dir);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            unsigned long long v;
            char tail[8];
            if (sscanf(de->d_name, "%16llx.%5s", &v, tail) == 2 && strcmp(tail, "ckpt") == 0 && v > from)
                from = v;
        }
        closedir(d);
    }
    snprintf(path, sizeof path, "%s/wal", dir);
    mkdir(path, 0700);
    dsq_wal_cfg wc = {.page_size = page_size, .segment_bytes = t->cfg.segment_bytes, .known_durable = true};
    dsq_wal *w = NULL;
    uint64_t last = 0;
    if (dsq_wal_open(path, &wc, from, NULL, NULL, &w, &last, err, errlen) != 0) {
        dsq_obj_req_clear(&r);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < r.nitems && rc == 0; i++) {
        uint64_t a, b;
        if (!dsq__tier_tail_range(r.items[i].key, &a, &b) || b <= last || a > last)
            continue; /* covered already, or after a gap (then so is every later one) */
        /* A tail is whole when its records run from A+1 to B, each
         * intact, and nothing follows; one that arrives otherwise is
         * fetched again (damaged on the way), twice at most. */
        dsq_obj_req g;
        bool whole = false;
        for (int attempt = 0; attempt < 3 && !whole; attempt++) {
            if (attempt > 0) {
                DSQ_WARN("restore_tail_damaged", "db=%s key=%s attempt=%d", db, g.key, attempt);
                dsq_obj_req_clear(&g);
            }
            memset(&g, 0, sizeof g);
            g.op = DSQ_OBJ_GET;
            dsq_strlcpy(g.key, r.items[i].key, sizeof g.key);
            if (dsq_obj_run(t->cfg.obj, &g) != DSQ_OBJ_OK)
                break;
            whole = dsq__tier_tail_whole((const uint8_t *)g.data.data, g.data.len, a, b);
        }
        if (!whole) {
            snprintf(err, errlen, "%.120s: %.150s", g.key, g.status != DSQ_OBJ_OK ? g.msg : "its records are damaged");
            dsq_obj_req_clear(&g);
            rc = -1;
            break;
        }
        for (const uint8_t *p = (const uint8_t *)g.data.data, *end = p + g.data.len; p < end && rc == 0;) {
            dsq_wal_rec h;
            dsq_wal_rec_header(p, &h); /* checked by tail_whole */
            if (h.lsn == last + 1) {
                dsq_wal_loc loc;
                if (dsq_wal_append(w, p, h.len, h.lsn, &loc, err, errlen) != 0)
                    rc = -1;
                else
                    last = h.lsn;
            }
            p += h.len;
        }
        dsq_obj_req_clear(&g);
    }
    dsq_obj_req_clear(&r);
    uint64_t durable;
    if (rc == 0 && dsq_wal_sync(w, &durable, err, errlen) != 0)
        rc = -1;
    dsq_wal_close(w);
    if (ends_at != NULL)
        *ends_at = last > from ? last : from;
    return rc;
}
