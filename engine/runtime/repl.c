/* repl — the engine's side of replication (engine.h, "replication"):
 * a follower applies its primary's records; a primary reads its log back
 * for a follower that is behind; the role of a copy decides what a call
 * may do. Worker, during the actor's turn. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <zstd.h>

#include "common/log.h"

#include "common/util.h"
#include "engine/runtime/exec_int.h"
#include "engine/storage/disk.h"
#include "engine/storage/journal.h"
#include "engine/storage/pagestore.h"

int dsq_log_record(const void *p, size_t n, uint64_t *lsn, size_t *len)
{
    dsq_wal_rec r;
    if (n < DSQ_WAL_REC_HDR || dsq_wal_rec_header(p, &r) != 0 || r.len > n)
        return -1;
    *lsn = r.lsn;
    *len = r.len;
    return 0;
}

void dsq__repl_role(run_ctx *x)
{
    const dsq_repl_hooks *h = x->e->cfg.repl;
    x->primary[0] = '\0';
    x->role = h != NULL ? h->role(h->ud, x->a->name, x->primary, sizeof x->primary) : DSQ_ROLE_ALONE;
}

void dsq__fail_not_primary(run_ctx *x, const char *what)
{
    if (x->role == DSQ_ROLE_ELSEWHERE)
        dsq__fail(x->c, DSQ_CODE_NOT_PRIMARY, "this node holds no copy of database %s; its primary is node %s",
                  x->a->name, x->primary[0] ? x->primary : "(not known here now)");
    else if (x->primary[0])
        dsq__fail(x->c, DSQ_CODE_NOT_PRIMARY,
                  "this node holds a follower copy of database %s, which does not take %s; its primary is node %s",
                  x->a->name, what, x->primary);
    else
        dsq__fail(x->c, DSQ_CODE_NOT_PRIMARY,
                  "this node holds a follower copy of database %s, which does not take %s; its primary is not "
                  "known here now",
                  x->a->name, what);
}

/* Hand the row changes of applied record rec to the database's CDC feed. */
static void feed_record(dsq_feed *feed, const uint8_t *rec, const dsq_wal_rec *r, ZSTD_DCtx **dctx, dsq_buf *tmp)
{
    dsq_buf_reset(tmp);
    if (r->extra_len > 0) {
        if (*dctx == NULL)
            *dctx = ZSTD_createDCtx();
        if (*dctx == NULL || dsq_wal_rec_extra_get(rec, r, *dctx, tmp) != 0)
            dsq_buf_reset(tmp); /* (checked by its CRC already: only out of memory) */
    }
    dsq_feed_commit(feed, r->lsn, r->time_us, tmp->data, tmp->len);
}

void dsq__op_apply(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    if (x->role != DSQ_ROLE_FOLLOWER) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "database %s: this node's copy is not a follower", x->a->name);
        return;
    }
    if (o->in_txn) { /* (followers refuse transactions that write) */
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: a transaction is open on a follower", x->a->name);
        return;
    }
    if (c->recs_len > 0 && c->as_of_lsn != o->lsn) {
        /* The sender takes this copy's log for one that ends elsewhere:
         * nothing is applied (a record of another history at an LSN it
         * holds would pass for one it has), and it learns where it ends. */
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "database %s: the records follow LSN %llu; this copy's log ends at %llu",
                  x->a->name, (unsigned long long)c->as_of_lsn, (unsigned long long)o->lsn);
        c->lsn = o->lsn;
        return;
    }
    dsq_feed *feed = atomic_load(&x->a->feed);
    ZSTD_DCtx *dctx = NULL;
    dsq_buf tmp = DSQ_BUF_INIT;
    const uint8_t *p = c->recs, *end = c->recs + c->recs_len;
    while (p < end) {
        dsq_wal_rec r;
        if ((size_t)(end - p) < DSQ_WAL_REC_HDR || dsq_wal_rec_header(p, &r) != 0 || r.len > (size_t)(end - p)) {
            dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "database %s: the records from the primary are cut or damaged",
                      x->a->name);
            break;
        }
        if (r.lsn > o->lsn) { /* (up to as_of_lsn: sent again, and here already) */
            if (dsq_ps_apply(o->ps, p, r.len) != 0) {
                dsq__fail(c, dsq_ps_full(o->ps) ? DSQ_CODE_RESOURCE_EXHAUSTED : DSQ_CODE_INVALID_REQUEST,
                          "database %s: %s", x->a->name, dsq_ps_error(o->ps));
                break;
            }
            if (feed != NULL)
                feed_record(feed, p, &r, &dctx, &tmp);
            o->lsn = r.lsn;
        }
        p += r.len;
    }
    ZSTD_freeDCtx(dctx);
    dsq_buf_free(&tmp);
    dsq__beside_close(o); /* (a view of the last commit moves on) */
    c->lsn = o->lsn;
}

/* ---- the primary reads its log back ----------------------------------------------------------- */

typedef struct log_scan {
    dsq_buf *out;
    size_t max;
    uint64_t last;
    bool full;
} log_scan;

static int log_visit(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err, size_t errlen)
{
    (void)loc;
    log_scan *s = ud;
    if (s->out->len > 0 && s->out->len + r->len > s->max) {
        s->full = true;
        snprintf(err, errlen, "full");
        return -1; /* stop here: the caller reads on from s->last */
    }
    if (dsq_buf_append(s->out, rec, r->len) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->last = r->lsn;
    return 0;
}

void dsq__op_log_read(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_wal *w = dsq_ps_wal(o->ps);
    uint64_t after = c->as_of_lsn;
    uint32_t segs;
    uint64_t bytes, first;
    dsq_wal_usage(w, &segs, &bytes, &first);
    c->lsn = after;
    c->more = false;
    dsq_buf_reset(&c->out); /* (a run again after a cold segment starts over) */
    if (after > o->lsn) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "database %s: LSN %llu is after the last commit here (%llu)", x->a->name,
                  (unsigned long long)after, (unsigned long long)o->lsn);
        return;
    }
    if (after == o->lsn)
        return;
    if (first == 0 || after + 1 < first) {
        c->lsn = first != 0 ? first : o->lsn + 1;
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "database %s: the records after LSN %llu are no longer in the log (it starts at %llu)", x->a->name,
                  (unsigned long long)after, (unsigned long long)first);
        return;
    }
    log_scan s = {.out = &c->out, .max = c->chunk_rows ? c->chunk_rows : 1u << 20, .last = after};
    char err[400];
    int rc = dsq_wal_scan(w, after, o->lsn, log_visit, &s, err, sizeof err);
    if (rc != 0 && !s.full && dsq__cold(x)) {
        x->retry = true;
        return;
    }
    if (rc != 0 && !s.full) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: cannot read the log: %s", x->a->name, err);
        return;
    }
    c->lsn = s.last;
    c->more = s.last < o->lsn;
}

/* ---- cutting a log back ---------------------------------------------------------------------- */

typedef struct find_loc {
    dsq_wal_loc loc;
    bool found;
} find_loc;

static int loc_visit(void *ud, const dsq_wal_rec *r, const uint8_t *rec, dsq_wal_loc loc, char *err, size_t errlen)
{
    (void)r, (void)rec, (void)err, (void)errlen;
    find_loc *f = ud;
    f->loc = loc;
    f->found = true;
    return 0;
}

void dsq__op_truncate(run_ctx *x)
{
    dsq_call *c = x->c;
    actor_open *o = x->o;
    dsq_actor *a = x->a;
    uint64_t keep = c->as_of_lsn;
    c->lsn = o->lsn;
    if (keep >= o->lsn)
        return;
    if (o->in_txn) {
        dsq__fail(c, DSQ_CODE_SERIALIZATION_FAILURE, "database %s: a transaction is open", a->name);
        return;
    }
    uint64_t ck = dsq_ps_checkpoint_lsn(o->ps);
    if (ck > keep) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "database %s: a checkpoint holds its commits up to LSN %llu, after %llu",
                  a->name, (unsigned long long)ck, (unsigned long long)keep);
        return;
    }
    /* Where the first record to go begins. */
    find_loc f = {.found = false};
    char err[400];
    if (dsq_wal_scan(dsq_ps_wal(o->ps), keep, keep + 1, loc_visit, &f, err, sizeof err) != 0 || !f.found) {
        if (dsq__cold(x)) {
            x->retry = true;
            return;
        }
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: cannot find LSN %llu in the log: %s", a->name,
                  (unsigned long long)keep + 1, f.found ? err : "not there");
        return;
    }
    dsq_engine *e = x->e;
    dsq__actor_close(a);
    x->o = NULL;
    /* No journal entry of what goes may be put back at the next start. */
    if (e->jnl != NULL && dsq_jnl_barrier(e->jnl, err, sizeof err) != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: %s", a->name, err);
        return;
    }
    char dir[4200], seg[4400];
    snprintf(dir, sizeof dir, "%s/db/%s/wal", e->data_dir, a->name);
    if (dsq_wal_cut_after(dir, f.loc.seg, f.loc.off, err, sizeof err) != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: %s", a->name, err);
        return;
    }
    dsq_wal_seg_path(dir, f.loc.seg, seg, sizeof seg);
    int fd = open(seg, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    dsq_fsync_dir(dir);
    DSQ_WARN("log_truncated", "db=%s kept_lsn=%llu dropped_after=%llu", a->name, (unsigned long long)keep,
             (unsigned long long)c->lsn);
    c->lsn = keep;
}

/* Close and remove this node's copy (a follower's): 0, or -1 (failed). */
static int forget_copy(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    char err[512];
    if (x->role != DSQ_ROLE_FOLLOWER && !(c->op == DSQ_OP_RESET && x->role == DSQ_ROLE_ELSEWHERE)) {
        dsq__fail(c, DSQ_CODE_INVALID_REQUEST, "database %s: only a follower copy is made again", a->name);
        return -1;
    }
    dsq__actor_close(a);
    x->o = NULL;
    if (dsq__store_forget(x->e, a->name, err, sizeof err) != 0) {
        dsq__fail(c, DSQ_CODE_INTERNAL_ERROR, "database %s: %s", a->name, err);
        return -1;
    }
    if (a->life != ACTOR_UNOPENED)
        dsq__actor_life(a, ACTOR_UNOPENED);
    dsq_feed_dropped(&x->e->feeds, atomic_load(&a->feed)); /* its CDC subscribers here end */
    return 0;
}

void dsq__op_reset(run_ctx *x)
{
    if (forget_copy(x) != 0)
        return;
    DSQ_WARN("copy_reset", "db=%s", x->a->name);
    x->c->lsn = 0;
}

/* How far a copy in the store written in `epoch` agrees with this node's
 * history (dsq_tier_limit_fn). */
static uint64_t rebuild_limit(void *ud, uint64_t epoch)
{
    run_ctx *x = ud;
    const dsq_repl_hooks *h = x->e->cfg.repl;
    return h->epoch_end != NULL ? h->epoch_end(h->ud, x->a->name, epoch) : UINT64_MAX;
}

void dsq__op_rebuild(run_ctx *x)
{
    dsq_call *c = x->c;
    dsq_actor *a = x->a;
    c->lsn = 0;
    if (x->e->tier == NULL) {
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "database %s: there is no object store to make the copy from", a->name);
        return;
    }
    if (forget_copy(x) != 0)
        return;
    char err[700];
    uint64_t at = 0;
    if (dsq_tier_restore_within(x->e->tier, a->name, rebuild_limit, x, &at, err, sizeof err) != 0) {
        DSQ_WARN("copy_rebuild_failed", "db=%s reason=%s", a->name, dsq_log_q(err));
        dsq__fail(c, DSQ_CODE_INVALID_LSN, "database %s: the object store cannot make the copy: %s", a->name, err);
        return;
    }
    c->lsn = at;
    if (at + 1 < c->as_of_lsn) {
        DSQ_WARN("copy_rebuild_short", "db=%s lsn=%llu need=%llu", a->name, (unsigned long long)at,
                 (unsigned long long)c->as_of_lsn - 1);
        dsq__fail(c, DSQ_CODE_INVALID_LSN,
                  "database %s: the object store's copy ends at LSN %llu, before %llu, where its primary's log "
                  "takes over",
                  a->name, (unsigned long long)at, (unsigned long long)c->as_of_lsn - 1);
        return;
    }
    DSQ_WARN("copy_rebuilt", "db=%s lsn=%llu", a->name, (unsigned long long)at);
}
