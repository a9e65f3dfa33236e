/* cdcread — CDC catch-up reads (worker): the durable commits after an
 * LSN, read back from a database's log as a CDC batch (engine.h).
 *
 * Two ways: on the database's own actor, through its open log; or on the
 * system actor, from the log files alone (dsq_engine_submit_system with
 * target_db), so that a subscriber catching up does not take the actor
 * from its writers. */
#include <stdio.h>
#include <zstd.h>

#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/disk.h"
#include "engine/storage/journal.h"
#include "engine/storage/pagestore.h"

/* CDC catch-up: the durable commits after c->as_of_lsn, read from the log,
 * as a CDC batch (engine.h) of at most about c->chunk_rows bytes. */
typedef struct cdc_scan {
    dsq_buf *out;
    size_t max;
    uint64_t last;
    bool full;
    ZSTD_DCtx *dctx;       /* for row changes stored compressed */
} cdc_scan;

static int cdc_visit(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err,
                     size_t errlen)
{
    (void)loc;
    cdc_scan *s = ud;
    if (s->out->len > 0 && s->out->len + 20 + r->extra_len > s->max) {
        s->full = true;
        snprintf(err, errlen, "full");
        return -1; /* stop here: the caller reads on from s->last */
    }
    /* The batch entry's header, then the changes as they were captured. */
    size_t at = s->out->len;
    if (dsq_cdc_batch_put(s->out, r->lsn, r->time_us, NULL, 0) != 0 ||
        dsq_wal_rec_extra_get(rec, r, s->dctx, s->out) != 0) {
        snprintf(err, errlen, "the row changes of LSN %llu cannot be read", (unsigned long long)r->lsn);
        return -1;
    }
    size_t n = s->out->len - at - 20;
    dsq_put32((uint8_t *)s->out->data + at + 16, (uint32_t)n);
    s->last = r->lsn;
    return 0;
}

void dsq__op_cdc_read(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_wal *w = dsq_ps_wal(o->ps);
    uint64_t durable = x->e->cfg.sync == DSQ_SYNC_OFF ? o->lsn : dsq_wal_durable(w);
    if (durable > o->lsn)
        durable = o->lsn;
    uint64_t after = c->as_of == DSQ_AS_OF_NONE ? durable : c->as_of_lsn;
    uint32_t segs;
    uint64_t bytes, first;
    dsq_wal_usage(w, &segs, &bytes, &first);
    uint64_t oldest = first ? first - 1 : o->lsn; /* the log holds the commits after it */
    c->lsn = after;
    c->more = false;
    if (after > o->lsn) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "LSN %llu is after the last commit (%llu)",
                  (unsigned long long)after, (unsigned long long)o->lsn);
        return;
    }
    if (after < oldest) {
        c->lsn = oldest; /* (the log holds the commits after it) */
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "the changes after LSN %llu are no longer in the log; the oldest available LSN is %llu",
                  (unsigned long long)after, (unsigned long long)oldest);
        return;
    }
    c->upto_lsn = durable; /* the caller learns where the durable log ends */
    if (after >= durable)
        return;
    dsq_buf_reset(&c->out); /* (a run again after a cold segment starts over) */
    cdc_scan s = {.out = &c->out, .max = c->chunk_rows ? c->chunk_rows : 256u << 10, .last = after,
                  .dctx = ZSTD_createDCtx()};
    char err[400];
    int rc = s.dctx ? dsq_wal_scan(w, after, durable, cdc_visit, &s, err, sizeof err)
                    : (snprintf(err, sizeof err, "out of memory"), -1);
    ZSTD_freeDCtx(s.dctx);
    if (rc != 0 && !s.full && dsq__cold(x)) {
        x->retry = true;
        return;
    }
    if (rc != 0 && !s.full) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot read the log: %s", err);
        return;
    }
    c->lsn = s.last;
    c->more = s.last < durable;
}

/* The same, from the log files alone, on the system actor: catch-up
 * reads do not take the database's own actor from its writers. */
void dsq__op_cdc_read_files(run_ctx *x)
{
    dsq_engine *e = x->e;
    dsq_call *c = x->c;
    char dir[4200];
    dsq_buf_reset(&c->out); /* (a run again after a cold segment starts over) */
    c->lsn = c->as_of_lsn;
    c->more = false;
    if (c->target_db == NULL || !dsq_db_name_valid(c->target_db)) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "no database to read");
        return;
    }
    if (c->as_of_lsn >= c->upto_lsn)
        return;
    snprintf(dir, sizeof dir, "%s/db/%s/wal", e->data_dir, c->target_db);
    /* Its log may keep its newest records in memory (journal.h): written
     * now, since what follows reads the files. */
    if (e->jnl != NULL)
        dsq_jnl_write_held(e->jnl, c->target_db, false);
    cdc_scan s = {.out = &c->out, .max = c->chunk_rows ? c->chunk_rows : 256u << 10, .last = c->as_of_lsn,
                  .dctx = ZSTD_createDCtx()};
    char err[400];
    uint64_t oldest;
    int rc = s.dctx ? dsq_wal_scan_files(dir, e->warm ? &e->cold_src : NULL, c->as_of_lsn, c->upto_lsn, cdc_visit, &s, &oldest, err,
                                         sizeof err)
                    : (snprintf(err, sizeof err, "out of memory"), -1);
    ZSTD_freeDCtx(s.dctx);
    if (rc == 1) {
        c->lsn = oldest;
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "the changes after LSN %llu are no longer in the log; the oldest available LSN is %llu",
                  (unsigned long long)c->as_of_lsn, (unsigned long long)oldest);
        return;
    }
    if (rc != 0 && !s.full) {
        /* An evicted segment's chunk on its way: again once it is here. */
        x->retry = dsq__cold(x);
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "cannot read the log: %s", err);
        return;
    }
    c->lsn = s.last;
    c->more = s.last < c->upto_lsn;
}
