/* router — keyspaces served (router.h). */
#include "sharding/router.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/storage/disk.h"
#include "sharding/merge.h"
#include "sharding/plan.h"
#include "sharding/vschema.h"

/* Values of a sequence taken from its shard and not handed out yet:
 * [next, limit). Lost at a restart (a gap, never a value twice). */
typedef struct seqcache {
    int64_t next, limit;
} seqcache;

/* A VSchema in force and what hangs on it: statements hold a reference
 * until they finish. */
typedef struct gen {
    int refs;
    uint64_t version;
    dsq_vschema *vs;          /* NULL: none */
    char *text;               /* its JSON, compact */
    dsq_ks_schema **schemas;  /* per keyspace (vs order): the schema at the router, or NULL */
    struct seqcache **seqs;   /* per keyspace, per table: a sequence's values taken and not used yet */
    uint64_t *schema_gen;     /* bumped when a schema change went through the keyspace */
} gen;

/* A cross-shard transaction this process runs now (recovery leaves it be). */
typedef struct inflight {
    char txid[33];
    struct inflight *next;
} inflight;

struct dsq_router {
    dsq_router_cfg cfg;
    char *state_path;
    gen *g;
    uint64_t counts[DSQ_PLAN_KINDS];
    inflight *txns;            /* cross-shard transactions in flight here */
    char crash_at[32];         /* DOSQLD_TEST_2PC_CRASH: a step to die at (tests) */
    bool recovering;           /* a recovery pass is running */
    uint64_t next_recovery_ms; /* when the next pass may start */
    uint64_t recovered;        /* transactions it resolved */
    uint64_t shard_rows;       /* rows shards sent to the router to merge or evaluate */
    struct ktxn *ktxns;        /* interactive transactions on keyspaces */
};

/* A call on database db, wherever it runs (cfg.submit, else this node's
 * engine): 0, or -1 with the call failed (done not called). */
static int rsubmit(const struct dsq_router *r, const char *db, dsq_call *c)
{
    if (r->cfg.submit != NULL)
        return r->cfg.submit(r->cfg.submit_ud, db, c);
    return dsq_engine_submit(r->cfg.engine, db, c);
}

int dsq_router_submit(dsq_router *r, const char *db, dsq_call *c) { return rsubmit(r, db, c); }

static void coordinator_of(const dsq_vs_keyspace *ks, char *out, size_t n);
static long ks_index(const gen *g, const char *ks);

/* Whether keyspace ks is served here (its coordinator's primary is this
 * node's): true, or false with the refusal in msg. */
static bool ks_home(const dsq_router *r, const dsq_vs_keyspace *ks, char *msg, size_t n)
{
    if (r->cfg.where == NULL)
        return true;
    char coord[160], node[80] = "";
    coordinator_of(ks, coord, sizeof coord);
    if (r->cfg.where(r->cfg.submit_ud, coord, node, sizeof node))
        return true;
    snprintf(msg, n, "keyspace '%.128s' is served by node %s (where its coordinator database %s has its primary): "
             "send its requests to /v1/ks/%.128s/ on any node, which passes them on there",
             ks->name, node, coord, ks->name);
    return false;
}

bool dsq_router_shards_here(dsq_router *r, const char *ks, char *msg, size_t n)
{
    long k = ks_index(r->g, ks);
    if (k < 0 || r->cfg.where == NULL)
        return true;
    const dsq_vs_keyspace *kspace = &r->g->vs->keyspaces[k];
    for (size_t s = 0; s < kspace->nshards; s++) {
        char node[80] = "";
        if (!r->cfg.where(r->cfg.submit_ud, kspace->shards[s], node, sizeof node)) {
            snprintf(msg, n, "shard '%.128s' of keyspace '%.128s' has its primary on node %s", kspace->shards[s],
                     ks, node);
            return false;
        }
    }
    return true;
}

static void gen_unref(gen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    for (size_t i = 0; g->vs && i < g->vs->nkeyspaces; i++) {
        dsq_ks_schema_free(g->schemas[i]);
        if (g->seqs)
            free(g->seqs[i]);
    }
    free(g->seqs);
    free(g->schemas);
    free(g->schema_gen);
    dsq_vschema_free(g->vs);
    free(g->text);
    free(g);
}

/* A generation for VSchema text (already checked or to check). */
static gen *gen_new(const char *text, size_t len, uint64_t version, char *err, size_t errlen)
{
    gen *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->refs = 1;
    g->version = version;
    if (text == NULL)
        return g;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        snprintf(err, errlen, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        free(g);
        return NULL;
    }
    g->text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (g->text == NULL || dsq_vschema_parse(g->text, strlen(g->text), &g->vs, err, errlen) != 0) {
        if (g->text == NULL)
            snprintf(err, errlen, "out of memory");
        free(g->text);
        free(g);
        return NULL;
    }
    size_t n = g->vs->nkeyspaces ? g->vs->nkeyspaces : 1;
    g->schemas = calloc(n, sizeof *g->schemas);
    g->schema_gen = calloc(n, sizeof *g->schema_gen);
    g->seqs = calloc(n, sizeof *g->seqs);
    for (size_t i = 0; g->seqs != NULL && i < g->vs->nkeyspaces; i++)
        if ((g->seqs[i] = calloc(g->vs->keyspaces[i].ntables + 1, sizeof **g->seqs)) == NULL) {
            g->schemas = g->schemas; /* (freed below) */
            break;
        }
    bool seq_oom = g->seqs == NULL;
    for (size_t i = 0; !seq_oom && i < g->vs->nkeyspaces; i++)
        seq_oom = g->seqs[i] == NULL;
    if (g->schemas == NULL || g->schema_gen == NULL || seq_oom) {
        snprintf(err, errlen, "out of memory");
        gen_unref(g);
        return NULL;
    }
    return g;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    dsq_buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (dsq_buf_append(&b, chunk, n) != 0) {
            fclose(f);
            dsq_buf_free(&b);
            snprintf(err, errlen, "%s: out of memory", path);
            return NULL;
        }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        dsq_buf_free(&b);
        snprintf(err, errlen, "%s: read error", path);
        return NULL;
    }
    *len = b.len;
    if (b.data == NULL && dsq_buf_reserve(&b, 1) != 0)
        return NULL;
    return b.data;
}

/* The state file: {"version": N, "vschema": {...}}, written whole. */
static int write_state(const char *path, uint64_t version, const char *text, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    dsq_buf b = {0};
    dsq_buf_printf(&b, "{\"version\":%llu,\"vschema\":%s}\n", (unsigned long long)version, text);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && b.data != NULL && write(fd, b.data, b.len) == (ssize_t)b.len && fsync(fd) == 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    dsq_buf_free(&b);
    if (!ok || rename(tmp, path) != 0) {
        e = ok ? errno : e;
        unlink(tmp);
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        return -1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        dsq_fsync_dir(dir[0] ? dir : "/");
    }
    return 0;
}

dsq_router *dsq_router_new(const dsq_router_cfg *cfg, char *err, size_t errlen)
{
    dsq_router *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    const char *crash = getenv("DOSQLD_TEST_2PC_CRASH");
    if (crash != NULL)
        snprintf(r->crash_at, sizeof r->crash_at, "%s", crash);
    r->cfg.state_path = NULL;
    r->cfg.vschema_path = NULL;
    if (cfg->state_path != NULL && (r->state_path = strdup(cfg->state_path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(r);
        return NULL;
    }
    /* The last applied, else the configured file, else none. */
    size_t len = 0;
    char *text = NULL;
    if (r->state_path != NULL && access(r->state_path, F_OK) == 0) {
        char e2[300];
        text = read_file(r->state_path, &len, e2, sizeof e2);
        json_error_t je;
        json_t *st = text ? json_loadb(text, len, 0, &je) : NULL;
        json_t *v = json_object_get(st, "version"), *vs = json_object_get(st, "vschema");
        free(text);
        text = NULL;
        char *vtext = vs ? json_dumps(vs, JSON_COMPACT) : NULL;
        if (!json_is_integer(v) || vtext == NULL) {
            snprintf(err, errlen, "%s: not a VSchema state file (%s)", r->state_path,
                     st == NULL ? "unreadable or invalid JSON" : "no version or vschema");
            json_decref(st);
            free(vtext);
            dsq_router_free(r);
            return NULL;
        }
        char e3[400];
        r->g = gen_new(vtext, strlen(vtext), (uint64_t)json_integer_value(v), e3, sizeof e3);
        json_decref(st);
        free(vtext);
        if (r->g == NULL) {
            snprintf(err, errlen, "%s: %s", r->state_path, e3);
            dsq_router_free(r);
            return NULL;
        }
        return r;
    }
    if (cfg->vschema_path != NULL && cfg->vschema_path[0]) {
        char e2[400];
        text = read_file(cfg->vschema_path, &len, e2, sizeof e2);
        if (text == NULL) {
            snprintf(err, errlen, "sharding.vschema: %s", e2);
            dsq_router_free(r);
            return NULL;
        }
        r->g = gen_new(text, len, 1, e2, sizeof e2);
        free(text);
        if (r->g == NULL) {
            snprintf(err, errlen, "sharding.vschema: %s: %s", cfg->vschema_path, e2);
            dsq_router_free(r);
            return NULL;
        }
        return r;
    }
    r->g = gen_new(NULL, 0, 0, err, errlen);
    if (r->g == NULL) {
        dsq_router_free(r);
        return NULL;
    }
    return r;
}

static void ktxn_free(dsq_router *r, struct ktxn *k);

void dsq_router_free(dsq_router *r)
{
    if (r == NULL)
        return;
    /* Transactions left open: their parts end with the engine, and the
     * records they left are recovery's at the next start. */
    while (r->ktxns != NULL)
        ktxn_free(r, r->ktxns);
    gen_unref(r->g);
    free(r->state_path);
    free(r);
}

static int apply_at(dsq_router *r, const char *json, size_t len, uint64_t version, const char *from, char *err,
                    size_t errlen)
{
    gen *g = gen_new(json, len, version, err, errlen);
    if (g == NULL)
        return -1;
    if (r->state_path != NULL && write_state(r->state_path, g->version, g->text, err, errlen) != 0) {
        gen_unref(g);
        return -1;
    }
    gen_unref(r->g);
    r->g = g;
    DSQ_INFO("vschema_applied", "version=%llu keyspaces=%zu from=%s", (unsigned long long)g->version,
             g->vs->nkeyspaces, from);
    return 0;
}

int dsq_router_apply(dsq_router *r, const char *json, size_t len, uint64_t *version, char *err, size_t errlen)
{
    if (apply_at(r, json, len, r->g->version + 1, "client", err, errlen) != 0)
        return -1;
    *version = r->g->version;
    if (r->cfg.on_applied != NULL)
        r->cfg.on_applied(r->cfg.submit_ud, r->g->version, r->g->text);
    return 0;
}

int dsq_router_apply_shared(dsq_router *r, const char *json, size_t len, uint64_t version, const char *from,
                            char *err, size_t errlen)
{
    const char *mine = r->g->text ? r->g->text : "";
    size_t mlen = strlen(mine);
    if (version < r->g->version)
        return 0;
    if (version == r->g->version) {
        /* Two nodes applied different ones as the same version: the
         * greater text wins everywhere. */
        int c = memcmp(json, mine, len < mlen ? len : mlen);
        if (c < 0 || (c == 0 && len <= mlen))
            return 0;
    }
    return apply_at(r, json, len, version, from, err, errlen) == 0 ? 1 : -1;
}

char *dsq_router_get(dsq_router *r, uint64_t *version)
{
    *version = r->g->version;
    return r->g->text ? strdup(r->g->text) : NULL;
}

static long ks_index(const gen *g, const char *ks)
{
    for (size_t i = 0; g->vs && i < g->vs->nkeyspaces; i++)
        if (strcmp(g->vs->keyspaces[i].name, ks) == 0)
            return (long)i;
    return -1;
}

bool dsq_router_has_keyspace(dsq_router *r, const char *ks) { return ks_index(r->g, ks) >= 0; }

char (*dsq_router_shards(dsq_router *r, const char *ks, size_t *n))[129]
{
    long i = ks_index(r->g, ks);
    if (i < 0)
        return NULL;
    const dsq_vs_keyspace *k = &r->g->vs->keyspaces[i];
    char(*v)[129] = calloc(k->nshards, sizeof *v);
    if (v == NULL)
        return NULL;
    memcpy(v, k->shards, k->nshards * sizeof *v);
    *n = k->nshards;
    return v;
}

bool dsq_router_first_shard(dsq_router *r, const char *ks, char *out, size_t n)
{
    long i = ks_index(r->g, ks);
    if (i < 0)
        return false;
    snprintf(out, n, "%s", r->g->vs->keyspaces[i].shards[0]);
    return true;
}

void dsq_router_counts(const dsq_router *r, uint64_t out[DSQ_PLAN_KINDS])
{
    memcpy(out, r->counts, sizeof r->counts);
}

/* ---- a statement ---------------------------------------------------------------------------- */

typedef struct rop rop;

/* One call to a shard. */
typedef struct rcall {
    dsq_call call;
    dsq_stmt_req stmt;
    dsq_param *params;
    rop *op;
    size_t shard;
    size_t fetch;        /* FETCH: which fetch it answers */
} rcall;

struct rop {
    dsq_router *r;
    gen *g;
    long ks;
    const dsq_vs_keyspace *kspace;
    const dsq_stmt_req *req;
    unsigned scope;
    dsq_budget *budget;
    dsq_router_done_fn done;
    void *ud;
    dsq_plan plan;
    /* a batch (dsq_router_batch): every statement, each planned */
    const dsq_stmt_req *reqs;
    size_t nreqs;
    dsq_plan *plans;
    bool batch;
    dsq_router_batch_fn batch_done;
    dsq_result *results; /* its answers, nreqs of them */
    /* sequences: the statement (k) being given its values, rewritten */
    dsq_stmt_req *own_reqs;  /* a batch's statements, once one is rewritten (owned array) */
    dsq_stmt_req seq_req;    /* a single statement, rewritten */
    char **seq_sql;          /* the rewritten texts (owned) */
    dsq_param **seq_params;  /* and their parameters (owned) */
    size_t nseq;
    size_t seq_stmt;         /* the statement waiting for values */
    int64_t seq_block;       /* values asked of the shard */
    dsq_stmt_req seq_alloc[2];
    dsq_param seq_alloc_p[3];
    /* lookups: their questions, and the answers (the owners' shards) */
    long *hints;
    size_t nhints, hints_pending;
    char **look_sql;
    dsq_stmt_req *look_req;
    dsq_param *look_p;
    bool fresh_schema;   /* the schema was just read: a missing table is really missing */
    bool read_only;      /* a statement that writes is refused (queryStream) */
    uint64_t schema_gen; /* the keyspace's schema generation when its schema was asked for */
    struct twopc *tx;    /* MULTI: the cross-shard transaction */
    struct ktxn *ktx;    /* the interactive transaction the statement runs in, or NULL */
    size_t kstep;        /* in it: the piece or shard being worked on */
    rcall *calls;
    size_t ncalls, pending;
    /* the outcome */
    int err;
    dsq_code code;
    char msg[600];
    dsq_result res;
};

typedef struct twopc twopc;
static void tx_free(twopc *t);

static void op_finish(rop *o)
{
    o->r->counts[o->plan.kind < DSQ_PLAN_KINDS ? o->plan.kind : DSQ_PLAN_ERROR]++;
    if (o->batch) {
        if (o->err == 0)
            o->batch_done(o->ud, 0, DSQ_CODE_UNKNOWN, NULL, o->results, o->nreqs);
        else
            o->batch_done(o->ud, -1, o->code, o->msg, NULL, 0);
        for (size_t i = 0; o->results && i < o->nreqs; i++)
            dsq_result_free(&o->results[i]);
        free(o->results);
        for (size_t i = 0; o->plans && i < o->nreqs; i++)
            dsq_plan_free(&o->plans[i]);
        free(o->plans);
    } else if (o->err == 0) {
        o->done(o->ud, 0, DSQ_CODE_UNKNOWN, NULL, &o->res, dsq_plan_kind_name(o->plan.kind));
    } else {
        o->done(o->ud, -1, o->code, o->msg, NULL, dsq_plan_kind_name(o->plan.kind));
    }
    for (size_t i = 0; i < o->ncalls; i++) {
        dsq_call_reset(&o->calls[i].call);
        free(o->calls[i].params);
    }
    free(o->calls);
    for (size_t i = 0; i < o->nseq; i++) {
        free(o->seq_sql[i]);
        free(o->seq_params[i]);
    }
    free(o->seq_sql);
    free(o->seq_params);
    for (size_t i = 0; o->look_sql && i < o->nhints; i++)
        free(o->look_sql[i]);
    free(o->look_sql);
    free(o->look_req);
    free(o->look_p);
    free(o->hints);
    free(o->own_reqs);
    tx_free(o->tx);
    dsq_result_free(&o->res);
    dsq_plan_free(&o->plan);
    gen_unref(o->g);
    free(o);
}

static void op_fail(rop *o, dsq_code code, const char *msg)
{
    o->err = -1;
    o->code = code;
    size_t n = strlen(msg) < sizeof o->msg - 1 ? strlen(msg) : sizeof o->msg - 1;
    memcpy(o->msg, msg, n);
    o->msg[n] = '\0';
    op_finish(o);
}

static void plan_and_run(rop *o);

/* ---- the schema at the router ---- */

static void schema_done(dsq_call *c)
{
    rcall *rc = (rcall *)c;
    rop *o = rc->op;
    gen *g = o->g;
    if (c->err != 0) {
        char m[700];
        snprintf(m, sizeof m, "reading the schema of keyspace '%.128s' from shard '%.128s': %.300s", o->kspace->name,
                 o->kspace->shards[0], c->msg);
        dsq_code code = c->code;
        dsq_call_reset(c);
        free(o->calls);
        o->calls = NULL;
        o->ncalls = 0;
        op_fail(o, code, m);
        return;
    }
    /* Tables first, then views (a view names tables), then triggers (the
     * planner refuses writes to a table that has one). */
    const dsq_schema *s = c->schema;
    size_t n = s->tables.n + s->views.n + s->triggers.n, k = 0;
    const char **ddl = calloc(n ? n : 1, sizeof *ddl);
    for (size_t i = 0; ddl && i < s->tables.n; i++)
        if (s->tables.v[i].sql)
            ddl[k++] = s->tables.v[i].sql;
    for (size_t i = 0; ddl && i < s->views.n; i++)
        if (s->views.v[i].sql)
            ddl[k++] = s->views.v[i].sql;
    for (size_t i = 0; ddl && i < s->triggers.n; i++)
        if (s->triggers.v[i].sql)
            ddl[k++] = s->triggers.v[i].sql;
    dsq_ks_schema *ks = NULL;
    char err[400] = "out of memory";
    int rc2 = ddl ? dsq_ks_schema_new(ddl, k, &ks, err, sizeof err) : -1;
    free(ddl);
    dsq_call_reset(c);
    free(o->calls);
    o->calls = NULL;
    o->ncalls = 0;
    if (rc2 != 0) {
        char m[600];
        snprintf(m, sizeof m, "keyspace '%s': %s", o->kspace->name, err);
        op_fail(o, DSQ_CODE_INTERNAL_ERROR, m);
        return;
    }
    /* Kept unless a schema change went through meanwhile. */
    if (g->schema_gen[o->ks] == o->schema_gen) {
        dsq_ks_schema_free(g->schemas[o->ks]);
        g->schemas[o->ks] = ks;
    } else {
        dsq_ks_schema_free(ks);
        ks = NULL;
    }
    o->fresh_schema = true;
    if (ks == NULL) { /* read it again */
        o->fresh_schema = false;
    }
    plan_and_run(o);
}

/* The op's one call (its calls array of one), or NULL after failing it. */
static rcall *one_call(rop *o)
{
    o->calls = calloc(1, sizeof *o->calls);
    if (o->calls == NULL) {
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return NULL;
    }
    o->ncalls = 1;
    o->calls[0].op = o;
    return &o->calls[0];
}

static void fetch_schema(rop *o)
{
    rcall *rc = one_call(o);
    if (rc == NULL)
        return;
    rc->call.op = DSQ_OP_SCHEMA;
    rc->call.scope = o->scope;
    rc->call.done = schema_done;
    rc->call.ud = rc;
    o->schema_gen = o->g->schema_gen[o->ks];
    if (rsubmit(o->r, o->kspace->shards[0], &rc->call) != 0) {
        char m[600];
        snprintf(m, sizeof m, "shard '%s': %s", o->kspace->shards[0], rc->call.msg);
        dsq_code code = rc->call.code;
        free(o->calls);
        o->calls = NULL;
        o->ncalls = 0;
        op_fail(o, code, m);
    }
}

/* ---- calls to shards ---- */

static void merge_work(void *arg);
static void merge_after(void *arg);

static void all_done(rop *o)
{
    dsq_plan *p = &o->plan;
    /* A shard that failed fails the statement (named). */
    size_t failed = 0, first = 0;
    for (size_t i = 0; i < o->ncalls; i++)
        if (o->calls[i].call.err != 0 && failed++ == 0)
            first = i;
    if (failed) {
        rcall *f = &o->calls[first];
        o->err = -1;
        o->code = f->call.code;
        if (p->kind == DSQ_PLAN_ALL && failed < o->ncalls)
            snprintf(o->msg, sizeof o->msg, "the schema change failed on %zu of %zu shards of keyspace '%s' and "
                                            "was made on the others (run it again where it failed): shard '%s': %.300s",
                     failed, o->ncalls, o->kspace->name, o->kspace->shards[f->shard], f->call.msg);
        else if (p->kind == DSQ_PLAN_ONE)
            snprintf(o->msg, sizeof o->msg, "%.590s", f->call.msg);
        else
            snprintf(o->msg, sizeof o->msg, "shard '%s': %.500s", o->kspace->shards[f->shard], f->call.msg);
        if (p->kind == DSQ_PLAN_ALL)
            o->g->schema_gen[o->ks]++; /* some shards changed */
        op_finish(o);
        return;
    }
    switch (p->kind) {
    case DSQ_PLAN_ONE:
        o->res = o->calls[0].call.results[0];
        memset(&o->calls[0].call.results[0], 0, sizeof o->res);
        op_finish(o);
        return;
    case DSQ_PLAN_ALL: {
        /* Every shard changed: read the schema again next time. */
        dsq_ks_schema_free(o->g->schemas[o->ks]);
        o->g->schemas[o->ks] = NULL;
        o->g->schema_gen[o->ks]++;
        o->res = o->calls[0].call.results[0];
        memset(&o->calls[0].call.results[0], 0, sizeof o->res);
        o->res.lsn = 0;
        op_finish(o);
        return;
    }
    default:
        for (size_t i = 0; i < o->ncalls; i++)
            if (o->calls[i].call.nresults > 0)
                o->r->shard_rows += o->calls[i].call.results[0].nrows;
        if (o->r->cfg.offload != NULL)
            o->r->cfg.offload(o->r->cfg.offload_ud, merge_work, merge_after, o);
        else {
            merge_work(o);
            merge_after(o);
        }
        return;
    }
}

static void call_done(dsq_call *c)
{
    rcall *rc = (rcall *)c;
    rop *o = rc->op;
    if (--o->pending == 0)
        all_done(o);
}

static void merge_work(void *arg)
{
    rop *o = arg;
    dsq_plan *p = &o->plan;
    dsq_merge_limits lim = {.timeout_ms = o->r->cfg.timeout_ms, .max_bytes = o->r->cfg.max_result_bytes};
    int rc;
    if (p->kind == DSQ_PLAN_SCATTER) {
        const dsq_result **parts = calloc(o->ncalls ? o->ncalls : 1, sizeof *parts);
        if (parts == NULL) {
            o->err = -1;
            o->code = DSQ_CODE_RESOURCE_EXHAUSTED;
            snprintf(o->msg, sizeof o->msg, "out of memory at the router");
            return;
        }
        for (size_t i = 0; i < o->ncalls; i++)
            parts[i] = &o->calls[i].call.results[0];
        rc = dsq_merge_scatter(p, parts, o->ncalls, o->req, &lim, &o->res, &o->code, o->msg, sizeof o->msg);
        free(parts);
    } else {
        const dsq_result ***parts = calloc(p->nfetch ? p->nfetch : 1, sizeof *parts);
        size_t *np = calloc(p->nfetch ? p->nfetch : 1, sizeof *np);
        bool oom = parts == NULL || np == NULL;
        for (size_t k = 0; !oom && k < p->nfetch; k++)
            oom = (parts[k] = calloc(o->ncalls, sizeof **parts)) == NULL;
        if (oom) {
            for (size_t k = 0; parts && k < p->nfetch; k++)
                free(parts[k]);
            free(parts);
            free(np);
            o->err = -1;
            o->code = DSQ_CODE_RESOURCE_EXHAUSTED;
            snprintf(o->msg, sizeof o->msg, "out of memory at the router");
            return;
        }
        for (size_t i = 0; i < o->ncalls; i++) {
            size_t k = o->calls[i].fetch;
            parts[k][np[k]++] = &o->calls[i].call.results[0];
        }
        rc = dsq_merge_fetch(p, (const dsq_result *const *const *)parts, np, o->req, &lim, &o->res, &o->code,
                             o->msg, sizeof o->msg);
        for (size_t k = 0; k < p->nfetch; k++)
            free(parts[k]);
        free(parts);
        free(np);
    }
    if (rc != 0)
        o->err = -1;
}

static void merge_after(void *arg) { op_finish(arg); }

/* Add a call of q (the request's parameters it takes) to shard s. */
static const char *txn_of(const struct ktxn *k, size_t shard);

static int add_call(rop *o, size_t s, const dsq_plan_sql *q, const dsq_stmt_req *whole, size_t fetch)
{
    rcall *rc = &o->calls[o->ncalls];
    memset(rc, 0, sizeof *rc);
    rc->op = o;
    rc->shard = s;
    rc->fetch = fetch;
    if (q != NULL) {
        rc->params = calloc(o->req->nparams ? o->req->nparams : 1, sizeof *rc->params);
        if (rc->params == NULL)
            return -1;
        dsq_plan_params(q, o->req, rc->params, &rc->stmt);
    } else {
        rc->stmt = *whole;
    }
    rc->call.op = DSQ_OP_QUERY;
    rc->call.stmts = &rc->stmt;
    rc->call.nstmts = 1;
    rc->call.atomic = true;
    rc->call.scope = o->scope;
    rc->call.budget = o->budget;
    rc->call.done = call_done;
    rc->call.ud = rc;
    if (o->ktx != NULL) /* (a read in an interactive transaction: in its part there) */
        memcpy(rc->call.txn, txn_of(o->ktx, s), sizeof rc->call.txn);
    o->ncalls++;
    return 0;
}

static void submit_all(rop *o)
{
    o->pending = o->ncalls + 1; /* (held until every call is submitted) */
    for (size_t i = 0; i < o->ncalls; i++) {
        rcall *rc = &o->calls[i];
        if (rsubmit(o->r, o->kspace->shards[rc->shard], &rc->call) != 0)
            o->pending--; /* failed at once: err and msg are set */
    }
    if (--o->pending == 0)
        all_done(o);
}

/* ---- cross-shard transactions: two-phase commit ---------------------------------------------------
 *
 * A MULTI plan's participants each run their statement in a transaction
 * of their own, prepared (engine.h's prepare_id: a durable record on the
 * shard, which refuses other writes until it is resolved). The decision
 * is a row of the keyspace's coordinator database, _dsq_2pc.KEYSPACE:
 *
 *   1. the row, state 'prepare', with every participant's statement and
 *      parameters (what recovery needs to redo them);
 *   2. each participant in shard order, one after the other (so that two
 *      transactions never wait for each other): BEGIN (its record), its
 *      statement;
 *   3. any failure: each participant rolled back (its record gone), the
 *      row deleted; the client gets the failure.
 *   4. all prepared: the row's state 'commit' — the decision, durable;
 *   5. each participant: COMMIT (its record goes with its data);
 *   6. the row deleted; the client gets the rows affected.
 *
 * Recovery (dsq_router_tick) finishes what a crash interrupted: a row in
 * 'commit' is committed on every participant that still has its record
 * (the statement redone under the same id: the record kept every other
 * write out), a row in 'prepare' is rolled back everywhere, and records
 * on shards whose row is gone are removed (a transaction without a
 * decision aborts). Readers may see one shard's part before another's
 * during step 5: the transaction is atomic, not isolated across shards. */

typedef struct part {
    rop *o;
    size_t shard;
    dsq_call call;
    dsq_stmt_req *stmts; /* its statements, in the request's order */
    size_t nstmts;
    size_t *origin;      /* the request's statement each one comes from */
    dsq_param **owned;   /* the parameter arrays made for its statements */
    size_t nowned;
    dsq_stmt_req unmark; /* the removal of its record (after a failed BEGIN) */
    dsq_param unmark_p;
    dsq_result *res;     /* its statements' results (nstmts) */
    char txn[33];
    int stage;           /* PART_* */
    bool begun;          /* BEGIN succeeded: its record is there */
    int err;
    dsq_code code;
    char msg[400];
} part;

enum { PART_BEGIN, PART_QUERY, PART_COMMIT, PART_ROLLBACK, PART_UNMARK };

struct twopc {
    char txid[33];
    char coord[160];
    part *parts;
    size_t nparts, pending;
    size_t next;         /* phase one: the participant to begin next */
    dsq_call ccall;      /* the coordinator's calls, one at a time */
    dsq_stmt_req cstmt;
    dsq_param cparams[3];
    char *cjson;         /* the participants, as the row keeps them */
    int cstage;          /* COORD_* */
    bool failed;         /* a participant failed: abort */
    char check_state[16]; /* COORD_CHECK: the state the coordinator holds ("" when no row) */
    bool done_one;       /* a participant committed (the test crash point) */
    bool prebegun;       /* an interactive transaction's commit: its parts ran already */
};

enum { COORD_TABLE, COORD_INSERT, COORD_DECIDE, COORD_CHECK, COORD_FORGET, COORD_FORGET_ABORT };

void dsq_router_coordinator(const char *ks, char *out, size_t n) { snprintf(out, n, "_dsq_2pc.%s", ks); }

static void coordinator_of(const dsq_vs_keyspace *ks, char *out, size_t n) { dsq_router_coordinator(ks->name, out, n); }

static bool inflight_has(const dsq_router *r, const char *id)
{
    for (const inflight *f = r->txns; f != NULL; f = f->next)
        if (strcmp(f->txid, id) == 0)
            return true;
    return false;
}

static void inflight_remove(dsq_router *r, const char *id)
{
    for (inflight **pp = &r->txns; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->txid, id) == 0) {
            inflight *f = *pp;
            *pp = f->next;
            free(f);
            return;
        }
}

/* Tests: DOSQLD_TEST_2PC_CRASH=STEP makes the process die (SIGKILL) at
 * that step: prepared (every participant prepared, no decision yet),
 * decided (the decision durable, nothing committed), committed_one (one
 * participant committed). */
static void crash_point(dsq_router *r, const char *step)
{
    if (r->crash_at[0] && strcmp(r->crash_at, step) == 0) {
        DSQ_WARN("test_crash", "step=%s", step);
        raise(SIGKILL);
    }
}

/* ---- parameters, as the coordinator's row keeps them ---- */

/* [[name or null, "i"|"r"|"t"|"b"|"n", text], ...]: integers and reals
 * as decimal text (exact: %.17g), text and blobs in base64. */
static json_t *params_json(const dsq_stmt_req *r)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < r->nparams; i++) {
        const dsq_param *p = &r->params[i];
        char num[40] = "";
        const char *type = "n";
        dsq_buf b = {0};
        switch (p->v.type) {
        case DSQ_V_INT: type = "i"; snprintf(num, sizeof num, "%lld", (long long)p->v.i); break;
        case DSQ_V_REAL: type = "r"; snprintf(num, sizeof num, "%.17g", p->v.d); break;
        case DSQ_V_TEXT: type = "t"; dsq_base64_encode(&b, p->v.p, p->v.n); break;
        case DSQ_V_BLOB: type = "b"; dsq_base64_encode(&b, p->v.p, p->v.n); break;
        default: break;
        }
        json_t *e = json_pack("[o s s]", p->name ? json_string(p->name) : json_null(), type,
                              b.data ? b.data : num);
        dsq_buf_free(&b);
        if (e == NULL || json_array_append_new(a, e) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The parameters of a row's participant back: 0 and out (values point
 * into *arena, which the caller frees), or -1. */
static int params_back(json_t *a, dsq_stmt_req *out, char **arena)
{
    size_t n = json_array_size(a), need = n * sizeof(dsq_param);
    for (size_t i = 0; i < n; i++)
        need += json_string_length(json_array_get(json_array_get(a, i), 2)) + 1;
    char *mem = calloc(1, need ? need : 1);
    if (mem == NULL)
        return -1;
    *arena = mem;
    dsq_param *ps = (dsq_param *)mem;
    char *bytes = mem + n * sizeof(dsq_param);
    out->params = ps;
    out->nparams = n;
    out->named = false;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(a, i);
        json_t *name = json_array_get(e, 0), *type = json_array_get(e, 1), *val = json_array_get(e, 2);
        if (!json_is_string(type) || !json_is_string(val))
            return -1;
        ps[i].name = json_is_string(name) ? json_string_value(name) : NULL;
        out->named |= ps[i].name != NULL;
        const char *t = json_string_value(type), *v = json_string_value(val);
        switch (t[0]) {
        case 'i': ps[i].v.type = DSQ_V_INT; ps[i].v.i = strtoll(v, NULL, 10); break;
        case 'r': ps[i].v.type = DSQ_V_REAL; ps[i].v.d = strtod(v, NULL); break;
        case 't':
        case 'b': {
            long len = dsq_base64_decode(v, strlen(v), (unsigned char *)bytes);
            if (len < 0)
                return -1;
            ps[i].v.type = t[0] == 't' ? DSQ_V_TEXT : DSQ_V_BLOB;
            ps[i].v.p = bytes;
            ps[i].v.n = (size_t)len;
            bytes += len + 1;
            break;
        }
        default: ps[i].v.type = DSQ_V_NULL; break;
        }
    }
    return 0;
}

/* ---- the transaction ---- */

static void tx_coord(rop *o, int stage, const char *sql, size_t nparams);
static void tx_end_parts(rop *o, bool commit);

static void tx_finish(rop *o)
{
    twopc *t = o->tx;
    inflight_remove(o->r, t->txid);
    op_finish(o);
}

static void tx_free(twopc *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nparts; i++) {
        part *p = &t->parts[i];
        dsq_call_reset(&p->call);
        for (size_t k = 0; p->res && k < p->nstmts; k++)
            dsq_result_free(&p->res[k]);
        free(p->res);
        free(p->stmts);
        free(p->origin);
        for (size_t k = 0; k < p->nowned; k++)
            free(p->owned[k]);
        free(p->owned);
    }
    free(t->parts);
    dsq_call_reset(&t->ccall);
    free(t->cjson);
    free(t);
}

static void part_submit(part *p, dsq_op op);

/* Every participant answered the stage they were at. */
static void tx_parts_done(rop *o)
{
    twopc *t = o->tx;
    dsq_router *r = o->r;
    part *first = NULL;
    for (size_t i = 0; i < t->nparts; i++)
        if (t->parts[i].err != 0 && first == NULL)
            first = &t->parts[i];
    switch (t->parts[0].stage) {
    case PART_QUERY: /* phase one over */
        if (first != NULL) {
            o->err = -1;
            o->code = first->code;
            snprintf(o->msg, sizeof o->msg, "shard '%.128s': %.400s (the cross-shard transaction was rolled back)",
                     o->kspace->shards[first->shard], first->msg);
            tx_end_parts(o, false);
            return;
        }
        crash_point(r, "prepared");
        tx_coord(o, COORD_DECIDE, "UPDATE _dsq_txns SET state = 'commit' WHERE txid = ?1", 1);
        return;
    case PART_COMMIT:
        if (first != NULL) {
            /* Decided: recovery finishes it (the row stays). */
            o->err = -1;
            o->code = DSQ_CODE_INTERNAL_ERROR;
            snprintf(o->msg, sizeof o->msg,
                     "the cross-shard transaction %s is committed, but shard '%.128s' has not applied it yet (%.300s): "
                     "recovery will; its rows read there once it has",
                     t->txid, o->kspace->shards[first->shard], first->msg);
            tx_finish(o);
            return;
        }
        tx_coord(o, COORD_FORGET, "DELETE FROM _dsq_txns WHERE txid = ?1", 1);
        return;
    default: /* rolled back */
        tx_coord(o, COORD_FORGET_ABORT, "DELETE FROM _dsq_txns WHERE txid = ?1", 1);
        return;
    }
}

static void part_done(dsq_call *c)
{
    part *p = (part *)((char *)c - offsetof(part, call));
    rop *o = p->o;
    twopc *t = o->tx;
    if (c->err != 0 && p->err == 0) {
        p->err = -1;
        p->code = c->code;
        snprintf(p->msg, sizeof p->msg, "%.390s", c->msg);
    }
    if (c->err == 0) {
        switch (p->stage) {
        case PART_BEGIN:
            p->begun = true;
            memcpy(p->txn, c->txn_out, sizeof p->txn);
            dsq_call_reset(c);
            p->stage = PART_QUERY;
            part_submit(p, DSQ_OP_BATCH);
            return;
        case PART_QUERY:
            /* (an atomic batch in the transaction: a failed statement failed the call) */
            p->res = c->results;
            c->results = NULL;
            c->nresults = 0;
            dsq_call_reset(c);
            if (++t->next < t->nparts) { /* the next participant, in order */
                t->parts[t->next].stage = PART_BEGIN;
                part_submit(&t->parts[t->next], DSQ_OP_BEGIN);
                return;
            }
            t->pending = 1;
            break;
        case PART_COMMIT:
            if (!t->done_one) {
                t->done_one = true;
                crash_point(o->r, "committed_one");
            }
            break;
        default:
            break;
        }
    } else if (p->stage == PART_BEGIN || p->stage == PART_QUERY) {
        /* Phase one stops here: the others are not begun. */
        for (size_t i = 0; i < t->nparts; i++)
            t->parts[i].stage = PART_QUERY;
        t->pending = 1;
    }
    dsq_call_reset(c);
    if (--t->pending == 0)
        tx_parts_done(o);
}

static void part_submit(part *p, dsq_op op)
{
    rop *o = p->o;
    twopc *t = o->tx;
    dsq_call *c = &p->call;
    memset(c, 0, sizeof *c);
    c->op = op;
    c->scope = o->scope;
    c->atomic = true;
    c->done = part_done;
    c->ud = p;
    c->budget = o->budget;
    switch (op) {
    case DSQ_OP_BEGIN:
        c->immediate = true;
        c->internal_tables = true;
        c->target_db = t->coord;
        memcpy(c->prepare_id, t->txid, sizeof c->prepare_id);
        break;
    case DSQ_OP_QUERY:
        /* The removal of its record. */
        c->internal_tables = true;
        p->unmark.sql = "DELETE FROM _dsq_prepared WHERE txid = ?1";
        p->unmark.sql_len = strlen(p->unmark.sql);
        p->unmark_p = (dsq_param){NULL, {.type = DSQ_V_TEXT, .p = t->txid, .n = 32}};
        p->unmark.params = &p->unmark_p;
        p->unmark.nparams = 1;
        c->stmts = &p->unmark;
        c->nstmts = 1;
        break;
    case DSQ_OP_BATCH: /* its statements, in its transaction */
        memcpy(c->txn, p->txn, sizeof c->txn);
        c->stmts = p->stmts;
        c->nstmts = p->nstmts;
        break;
    default: /* COMMIT, ROLLBACK */
        c->internal_tables = true;
        memcpy(c->txn, p->txn, sizeof c->txn);
        memcpy(c->prepare_id, t->txid, sizeof c->prepare_id);
        break;
    }
    if (rsubmit(o->r, o->kspace->shards[p->shard], c) != 0) {
        c->err = -1; /* (code and msg set) */
        part_done(c);
    }
}

/* Phase two (commit), or the abort: each participant ends. */
static void tx_end_parts(rop *o, bool commit)
{
    twopc *t = o->tx;
    t->pending = t->nparts + 1; /* (held while they are submitted) */
    for (size_t i = 0; i < t->nparts; i++) {
        part *p = &t->parts[i];
        if (commit) {
            p->stage = PART_COMMIT;
            part_submit(p, DSQ_OP_COMMIT);
        } else if (p->begun) {
            p->stage = PART_ROLLBACK;
            part_submit(p, DSQ_OP_ROLLBACK);
        } else if (i <= t->next) {
            /* Its BEGIN failed after its record was made, perhaps. */
            p->stage = PART_UNMARK;
            part_submit(p, DSQ_OP_QUERY);
        } else {
            p->stage = PART_ROLLBACK; /* never begun: nothing to undo */
            t->pending--;
        }
    }
    if (--t->pending == 0)
        tx_parts_done(o);
}

static void coord_done(dsq_call *c)
{
    twopc *t = (twopc *)((char *)c - offsetof(twopc, ccall));
    rop *o = c->ud;
    int err = c->err;
    dsq_code code = c->code;
    char msg[400];
    snprintf(msg, sizeof msg, "%.390s", c->msg);
    if (t->cstage == COORD_CHECK) {
        t->check_state[0] = '\0';
        if (err == 0 && c->nresults > 0 && c->results[0].nrows > 0) {
            size_t pos = 0;
            dsq_value v;
            dsq_result_next(&c->results[0], &pos, &v);
            if (v.type == DSQ_V_TEXT)
                snprintf(t->check_state, sizeof t->check_state, "%.*s", (int)v.n, v.p);
        }
    }
    dsq_call_reset(c);
    switch (t->cstage) {
    case COORD_TABLE:
        if (err != 0 && t->prebegun) {
            o->err = -1;
            o->code = code;
            snprintf(o->msg, sizeof o->msg, "the keyspace's coordinator database '%s': %.300s (the transaction "
                     "was rolled back)", t->coord, msg);
            tx_end_parts(o, false);
            return;
        }
        if (err != 0)
            break;
        tx_coord(o, COORD_INSERT, "INSERT INTO _dsq_txns VALUES (?1, 'prepare', ?2, ?3)", 3);
        return;
    case COORD_INSERT:
        if (err != 0 && t->prebegun) {
            /* Not decided: the participants (begun already) roll back. */
            o->err = -1;
            o->code = code;
            snprintf(o->msg, sizeof o->msg, "the keyspace's coordinator database '%s': %.300s (the transaction "
                     "was rolled back)", t->coord, msg);
            tx_end_parts(o, false);
            return;
        }
        if (err != 0)
            break;
        if (t->prebegun) { /* (every participant prepared already: the decision) */
            crash_point(o->r, "prepared");
            tx_coord(o, COORD_DECIDE, "UPDATE _dsq_txns SET state = 'commit' WHERE txid = ?1", 1);
            return;
        }
        t->next = 0;
        t->pending = 1;
        t->parts[0].stage = PART_BEGIN;
        part_submit(&t->parts[0], DSQ_OP_BEGIN);
        return;
    case COORD_DECIDE:
        if (err != 0) {
            /* Recorded or not? Read it back before anything is undone: a
             * decision that is there must be carried out. */
            tx_coord(o, COORD_CHECK, "SELECT state FROM _dsq_txns WHERE txid = ?1", 1);
            return;
        }
        crash_point(o->r, "decided");
        tx_end_parts(o, true);
        return;
    case COORD_CHECK: {
        const char *state = NULL;
        if (err == 0 && t->check_state[0])
            state = t->check_state;
        if (state != NULL && strcmp(state, "commit") == 0) {
            tx_end_parts(o, true);
            return;
        }
        if (state != NULL && strcmp(state, "prepare") == 0) {
            o->err = -1;
            o->code = DSQ_CODE_SERIALIZATION_FAILURE;
            snprintf(o->msg, sizeof o->msg, "the cross-shard transaction's decision could not be recorded; it "
                                            "was rolled back (retry)");
            tx_end_parts(o, false);
            return;
        }
        /* Not known: the participants stay prepared; once their
         * transactions expire, recovery resolves it by what the
         * coordinator holds. */
        o->err = -1;
        o->code = DSQ_CODE_INTERNAL_ERROR;
        snprintf(o->msg, sizeof o->msg, "the outcome of cross-shard transaction %s is not known yet (the "
                                        "coordinator could not be read: %.200s); recovery will settle it",
                 t->txid, msg);
        tx_finish(o);
        return;
    }
    case COORD_FORGET: {
        /* Committed everywhere: each statement's answer is its parts'
         * together (rows affected added, rows one after another). */
        size_t n = o->batch ? o->nreqs : 1;
        dsq_result *all = o->batch ? calloc(n, sizeof *all) : &o->res;
        if (all == NULL) {
            o->err = -1;
            o->code = DSQ_CODE_RESOURCE_EXHAUSTED;
            snprintf(o->msg, sizeof o->msg, "the cross-shard transaction committed; its answer took more memory "
                                            "than there is");
            tx_finish(o);
            return;
        }
        if (!o->batch)
            memset(all, 0, sizeof *all);
        for (size_t i = 0; i < t->nparts; i++) {
            part *pt = &t->parts[i];
            for (size_t k = 0; pt->res && k < pt->nstmts; k++) {
                if (pt->origin[k] == SIZE_MAX)
                    continue;
                dsq_result *res = &all[pt->origin[k]], *pr = &pt->res[k];
                if (res->ncols == 0 && pr->ncols > 0) {
                    int64_t before = res->rows_affected;
                    dsq_result_free(res);
                    *res = *pr;
                    memset(pr, 0, sizeof *pr);
                    res->rows_affected += before;
                    continue;
                }
                res->rows_affected += pr->rows_affected;
                if (pr->ncols == res->ncols && pr->rows.len > 0) {
                    dsq_buf_append(&res->rows, pr->rows.data, pr->rows.len);
                    res->nrows += pr->nrows;
                }
            }
        }
        for (size_t k = 0; k < n; k++) {
            all[k].lsn = 0;
            all[k].last_insert_rowid = 0;
        }
        if (o->batch)
            o->results = all;
        tx_finish(o);
        return;
    }
    case COORD_FORGET_ABORT:
        tx_finish(o); /* (o->err set by the failure) */
        return;
    }
    o->err = -1;
    o->code = code;
    snprintf(o->msg, sizeof o->msg, "the keyspace's coordinator database '%s': %.300s", t->coord, msg);
    tx_finish(o);
}

/* One call to the coordinator database (parameters ?1 txid, ?2 the
 * participants, ?3 the time). */
static void tx_coord(rop *o, int stage, const char *sql, size_t nparams)
{
    twopc *t = o->tx;
    t->cstage = stage;
    dsq_call *c = &t->ccall;
    memset(c, 0, sizeof *c);
    c->op = DSQ_OP_QUERY;
    c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    c->internal_tables = true;
    c->atomic = true;
    c->done = coord_done;
    c->ud = o;
    t->cstmt = (dsq_stmt_req){.sql = sql, .sql_len = strlen(sql), .params = t->cparams, .nparams = nparams};
    t->cparams[0] = (dsq_param){NULL, {.type = DSQ_V_TEXT, .p = t->txid, .n = 32}};
    t->cparams[1] = (dsq_param){NULL, {.type = DSQ_V_TEXT, .p = t->cjson, .n = strlen(t->cjson)}};
    t->cparams[2] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = (int64_t)dsq_wall_ms()}};
    c->stmts = &t->cstmt;
    c->nstmts = 1;
    if (rsubmit(o->r, t->coord, c) != 0) {
        c->err = -1;
        coord_done(c);
    }
}

static const char coord_ddl[] = "CREATE TABLE IF NOT EXISTS _dsq_txns(txid TEXT PRIMARY KEY, state TEXT NOT NULL, "
                                "participants TEXT NOT NULL, created INTEGER NOT NULL)";

/* Add statement k's piece q (the request's statement `whole` when q is
 * NULL) to shard s's participant. 0, or -1 (out of memory). */
static int tx_add(rop *o, size_t s, size_t k, const dsq_plan_sql *q, const dsq_stmt_req *whole)
{
    twopc *t = o->tx;
    part *pt = NULL;
    for (size_t i = 0; i < t->nparts && pt == NULL; i++)
        if (t->parts[i].shard == s)
            pt = &t->parts[i];
    if (pt == NULL) {
        pt = &t->parts[t->nparts++];
        pt->o = o;
        pt->shard = s;
    }
    dsq_stmt_req *ns = realloc(pt->stmts, (pt->nstmts + 1) * sizeof *ns);
    if (ns == NULL)
        return -1;
    pt->stmts = ns;
    size_t *no = realloc(pt->origin, (pt->nstmts + 1) * sizeof *no);
    if (no == NULL)
        return -1;
    pt->origin = no;
    pt->origin[pt->nstmts] = k;
    if (q == NULL) {
        pt->stmts[pt->nstmts++] = *whole; /* (its parameters are the request's: they outlive it) */
        return 0;
    }
    /* Its parameters: an array of its own (the participant frees it). */
    dsq_param *ps = calloc(whole->nparams + 1, sizeof *ps);
    dsq_param **owned = realloc(pt->owned, (pt->nstmts + 1) * sizeof *owned);
    if (owned != NULL)
        pt->owned = owned;
    if (ps == NULL || owned == NULL) {
        free(ps);
        return -1;
    }
    dsq_stmt_req one;
    dsq_plan_params(q, whole, ps, &one);
    pt->owned[pt->nowned++] = ps;
    pt->stmts[pt->nstmts++] = one;
    return 0;
}

static int part_cmp(const void *a, const void *b)
{
    const part *x = a, *y = b;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* The cross-shard transaction of the statement (MULTI) or the batch. */
static void run_multi(rop *o)
{
    if (!(o->scope & DSQ_SCOPE_W)) {
        op_fail(o, DSQ_CODE_FORBIDDEN, "this statement writes; the token has read scope only");
        return;
    }
    twopc *t = calloc(1, sizeof *t);
    inflight *f = calloc(1, sizeof *f);
    json_t *all = json_array();
    size_t nreq = o->batch ? o->nreqs : 1;
    if (t == NULL || f == NULL || all == NULL || dsq_random_id(t->txid) != 0) {
        free(t);
        free(f);
        json_decref(all);
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    o->tx = t;
    coordinator_of(o->kspace, t->coord, sizeof t->coord);
    t->parts = calloc(o->kspace->nshards, sizeof *t->parts);
    bool oom = t->parts == NULL;
    for (size_t k = 0; !oom && k < nreq; k++) {
        const dsq_plan *p = o->batch ? &o->plans[k] : &o->plan;
        const dsq_stmt_req *req = o->batch ? &o->reqs[k] : o->req;
        if (p->kind == DSQ_PLAN_ONE) {
            oom = tx_add(o, p->shard, k, NULL, req) != 0;
        } else {
            for (size_t i = 0; !oom && i < p->nwrites; i++)
                /* (a lookup table's rows: no statement's answer) */
                oom = tx_add(o, p->write_shard[i], p->write_aux && p->write_aux[i] ? SIZE_MAX : k, &p->writes[i],
                             req) != 0;
        }
    }
    /* Begun in shard order: two transactions never wait in a cycle. */
    if (!oom)
        qsort(t->parts, t->nparts, sizeof *t->parts, part_cmp);
    for (size_t i = 0; !oom && i < t->nparts; i++) {
        part *pt = &t->parts[i];
        json_t *stmts = json_array();
        for (size_t k = 0; stmts != NULL && k < pt->nstmts; k++) {
            json_t *pj = params_json(&pt->stmts[k]);
            json_t *e = pj ? json_pack("{s:s%, s:o}", "sql", pt->stmts[k].sql, pt->stmts[k].sql_len, "params", pj)
                           : NULL;
            if (e == NULL || json_array_append_new(stmts, e) != 0) {
                json_decref(stmts);
                stmts = NULL;
            }
        }
        json_t *e = stmts ? json_pack("{s:s, s:o}", "shard", o->kspace->shards[pt->shard], "statements", stmts)
                          : NULL;
        oom = e == NULL || json_array_append_new(all, e) != 0;
    }
    t->cjson = oom ? NULL : json_dumps(all, JSON_COMPACT);
    json_decref(all);
    if (oom || t->cjson == NULL) {
        free(f);
        o->tx = NULL;
        tx_free(t);
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    for (size_t i = 0; i < t->nparts; i++)
        t->parts[i].o = o;
    memcpy(f->txid, t->txid, sizeof f->txid);
    f->next = o->r->txns;
    o->r->txns = f;
    tx_coord(o, COORD_TABLE, coord_ddl, 0);
}

static void plan_batch(rop *o);
static void run_in_txn(rop *o);
static void run_calls(rop *o);

/* ---- sequences ---- */

static void seq_fill(rop *o, int64_t first);

static void seq_alloc_done(dsq_call *c)
{
    rcall *rc = (rcall *)c;
    rop *o = rc->op;
    int64_t first = 0;
    bool ok = c->err == 0 && c->nresults == 2 && c->results[1].nrows == 1;
    if (ok) {
        size_t pos = 0;
        dsq_value v;
        dsq_result_next(&c->results[1], &pos, &v);
        first = v.i;
        ok = v.type == DSQ_V_INT;
    }
    char m[600];
    snprintf(m, sizeof m, "taking values of a sequence: %.500s", c->err ? c->msg : "no value came back");
    dsq_code code = c->err ? c->code : DSQ_CODE_INTERNAL_ERROR;
    dsq_call_reset(c);
    free(o->calls);
    o->calls = NULL;
    o->ncalls = 0;
    if (!ok) {
        op_fail(o, code, m);
        return;
    }
    const dsq_plan *p = o->batch ? &o->plans[o->seq_stmt] : &o->plan;
    int64_t n = (int64_t)p->seq_count;
    seqcache *sc = &o->g->seqs[o->ks][p->seq_table];
    sc->next = first + n; /* the rest of the block, for the next ones */
    sc->limit = first + o->seq_block;
    seq_fill(o, first);
}

/* The statement's values: from the cache, else a block from the
 * sequence's shard. */
static void seq_take(rop *o)
{
    const dsq_plan *p = o->batch ? &o->plans[o->seq_stmt] : &o->plan;
    const dsq_vs_table *sq = &o->kspace->tables[p->seq_table];
    seqcache *sc = &o->g->seqs[o->ks][p->seq_table];
    int64_t n = (int64_t)p->seq_count;
    if (sc->limit - sc->next >= n) {
        int64_t first = sc->next;
        sc->next += n;
        seq_fill(o, first);
        return;
    }
    o->seq_block = n > sq->seq_cache ? n : sq->seq_cache;
    rcall *rc = one_call(o);
    if (rc == NULL)
        return;
    static const char ddl[] = "CREATE TABLE IF NOT EXISTS _dsq_sequences(name TEXT PRIMARY KEY, next INTEGER NOT NULL)";
    static const char take[] = "INSERT INTO _dsq_sequences VALUES (?1, ?2 + ?3) ON CONFLICT(name) DO UPDATE SET "
                               "next = next + ?3 RETURNING next - ?3";
    o->seq_alloc[0] = (dsq_stmt_req){.sql = ddl, .sql_len = sizeof ddl - 1};
    o->seq_alloc_p[0] = (dsq_param){NULL, {.type = DSQ_V_TEXT, .p = sq->name, .n = strlen(sq->name)}};
    o->seq_alloc_p[1] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = sq->seq_start}};
    o->seq_alloc_p[2] = (dsq_param){NULL, {.type = DSQ_V_INT, .i = o->seq_block}};
    o->seq_alloc[1] = (dsq_stmt_req){.sql = take, .sql_len = sizeof take - 1, .params = o->seq_alloc_p, .nparams = 3};
    rc->call.op = DSQ_OP_BATCH;
    rc->call.stmts = o->seq_alloc;
    rc->call.nstmts = 2;
    rc->call.atomic = true;
    rc->call.scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    rc->call.internal_tables = true;
    rc->call.done = seq_alloc_done;
    rc->call.ud = rc;
    if (rsubmit(o->r, o->kspace->shards[sq->shard], &rc->call) != 0)
        seq_alloc_done(&rc->call);
}

/* The statement with values first..first+n-1 bound to the parameters its
 * rewrite added; planned again. */
static void seq_fill(rop *o, int64_t first)
{
    const dsq_plan *p = o->batch ? &o->plans[o->seq_stmt] : &o->plan;
    const dsq_stmt_req *req = o->batch ? &o->reqs[o->seq_stmt] : o->req;
    size_t n = p->seq_count, np;
    if (!req->named && req->nparams != p->seq_first - 1) {
        char m[200];
        snprintf(m, sizeof m, "the SQL uses %zu parameters but params has %zu", p->seq_first - 1, req->nparams);
        op_fail(o, DSQ_CODE_INVALID_REQUEST, m);
        return;
    }
    /* Named: the added parameters are :_dsq_seq1 ... (eight at most). */
    static const char *const names[] = {"_dsq_seq1", "_dsq_seq2", "_dsq_seq3", "_dsq_seq4", "_dsq_seq5",
                                        "_dsq_seq6", "_dsq_seq7", "_dsq_seq8"};
    if (req->named && n > sizeof names / sizeof *names) {
        op_fail(o, DSQ_CODE_INVALID_REQUEST,
                "an INSERT with named parameters takes at most 8 rows' values from a sequence at once; use "
                "positional parameters, or fewer rows");
        return;
    }
    np = req->nparams + n;
    char **ns = realloc(o->seq_sql, (o->nseq + 1) * sizeof *ns);
    if (ns != NULL)
        o->seq_sql = ns;
    dsq_param **npp = realloc(o->seq_params, (o->nseq + 1) * sizeof *npp);
    if (npp != NULL)
        o->seq_params = npp;
    char *sql = strdup(p->seq_q.sql);
    dsq_param *ps = calloc(np, sizeof *ps);
    if (ns == NULL || npp == NULL || sql == NULL || ps == NULL) {
        free(sql);
        free(ps);
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    if (req->nparams > 0)
        memcpy(ps, req->params, req->nparams * sizeof *ps);
    for (size_t i = 0; i < n; i++) {
        dsq_param *q = &ps[req->nparams + i];
        q->v = (dsq_value){.type = DSQ_V_INT, .i = first + (int64_t)i};
        q->name = req->named ? names[i] : NULL;
    }
    o->seq_sql[o->nseq] = sql;
    o->seq_params[o->nseq] = ps;
    o->nseq++;
    dsq_stmt_req nr = {.sql = sql, .sql_len = strlen(sql), .params = ps, .nparams = np, .named = req->named};
    if (o->batch) {
        if (o->own_reqs == NULL) {
            o->own_reqs = calloc(o->nreqs, sizeof *o->own_reqs);
            if (o->own_reqs == NULL) {
                op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
                return;
            }
            memcpy(o->own_reqs, o->reqs, o->nreqs * sizeof *o->own_reqs);
            o->reqs = o->own_reqs;
        }
        o->own_reqs[o->seq_stmt] = nr;
    } else {
        o->seq_req = nr;
        o->req = &o->seq_req;
    }
    plan_and_run(o); /* again, with the values */
}

/* ---- lookups ---- */

typedef struct lookq {
    rop *o;
    size_t i;
} lookq;

static void look_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    lookq *q = ud;
    rop *o = q->o;
    size_t i = q->i;
    (void)plan;
    free(q);
    o->hints[i] = -1;
    if (err != 0 && o->err == 0) {
        o->err = -1;
        o->code = code;
        snprintf(o->msg, sizeof o->msg, "looking a value up in lookup table '%.128s': %.400s",
                 o->kspace->tables[o->kspace->vindexes[o->plan.lookups[i].vindex].table_idx].name, msg);
    } else if (err == 0 && res->nrows > 0) {
        size_t pos = 0, shard;
        dsq_value v;
        dsq_result_next(res, &pos, &v);
        if (dsq_plan_shard_of(o->g->schemas[o->ks], o->kspace, o->plan.lookups[i].owner, &v, &shard) == 0)
            o->hints[i] = (long)shard;
    }
    if (--o->hints_pending > 0)
        return;
    if (o->err != 0) {
        op_finish(o);
        return;
    }
    plan_and_run(o); /* again, with the answers */
}

/* Each value of the LOOKUP plan looked up (through the keyspace: the
 * lookup table is one of its sharded tables). */
static void run_lookups(rop *o)
{
    const dsq_plan *p = &o->plan;
    size_t n = p->nlookups;
    o->hints = calloc(n ? n : 1, sizeof *o->hints);
    o->look_sql = calloc(n ? n : 1, sizeof *o->look_sql);
    o->look_req = calloc(n ? n : 1, sizeof *o->look_req);
    o->look_p = calloc(n ? n : 1, sizeof *o->look_p);
    if (o->hints == NULL || o->look_sql == NULL || o->look_req == NULL || o->look_p == NULL) {
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    o->nhints = n;
    o->hints_pending = n + 1; /* (held while they are sent) */
    for (size_t i = 0; i < n; i++) {
        const dsq_vs_vindex *vx = &o->kspace->vindexes[p->lookups[i].vindex];
        dsq_buf b = {0};
        dsq_buf_printf(&b, "SELECT \"%s\" FROM \"%s\" WHERE \"%s\" = ?1", vx->to, vx->table, vx->from);
        o->look_sql[i] = dsq_buf_steal(&b, NULL);
        o->look_p[i] = (dsq_param){NULL, p->lookups[i].value};
        o->look_req[i] = (dsq_stmt_req){.sql = o->look_sql[i] ? o->look_sql[i] : "",
                                        .sql_len = o->look_sql[i] ? strlen(o->look_sql[i]) : 0,
                                        .params = &o->look_p[i], .nparams = 1};
        lookq *q = malloc(sizeof *q);
        if (q == NULL || o->look_sql[i] == NULL) {
            free(q);
            if (o->err == 0) {
                o->err = -1;
                o->code = DSQ_CODE_RESOURCE_EXHAUSTED;
                snprintf(o->msg, sizeof o->msg, "out of memory at the router");
            }
            o->hints_pending--;
            continue;
        }
        *q = (lookq){o, i};
        dsq_router_query(o->r, o->kspace->name, &o->look_req[i], o->scope, o->budget, look_done, q);
    }
    if (--o->hints_pending == 0) {
        if (o->err != 0)
            op_finish(o);
        else
            plan_and_run(o);
    }
}

static void plan_and_run(rop *o)
{
    gen *g = o->g;
    dsq_ks_schema *schema = g->schemas[o->ks];
    if (schema == NULL) {
        fetch_schema(o);
        return;
    }
    if (o->batch) {
        plan_batch(o);
        return;
    }
    /* (the lookups' answers stay with the plan they answer until then) */
    dsq_plan_hints h = {o->hints, o->nhints};
    dsq_plan next;
    dsq_plan_make_hinted(schema, o->kspace, o->req, o->hints ? &h : NULL, &next);
    dsq_plan_free(&o->plan);
    o->plan = next;
    dsq_plan *p = &o->plan;
    if (p->kind == DSQ_PLAN_LOOKUP) {
        if (o->ktx != NULL) {
            /* (its lookup would read outside the transaction: not the
             * lookup rows the transaction itself wrote) */
            op_fail(o, DSQ_CODE_INVALID_REQUEST, "in a transaction on a keyspace a statement cannot find its shard "
                                                 "through a lookup vindex; name the table's shard key");
            return;
        }
        if (o->hints != NULL) {
            op_fail(o, DSQ_CODE_INTERNAL_ERROR, "a statement asked for lookups twice");
            return;
        }
        run_lookups(o);
        return;
    }
    if (p->kind == DSQ_PLAN_ERROR && !o->fresh_schema &&
        (p->code == DSQ_CODE_TABLE_NOT_FOUND || p->code == DSQ_CODE_COLUMN_NOT_FOUND)) {
        /* Perhaps changed on the shards directly: read it again, once. */
        dsq_ks_schema_free(g->schemas[o->ks]);
        g->schemas[o->ks] = NULL;
        fetch_schema(o);
        return;
    }
    if (p->kind == DSQ_PLAN_ERROR || p->kind == DSQ_PLAN_REFUSE) {
        op_fail(o, p->code, p->msg);
        return;
    }
    if (o->read_only && (p->write || p->kind == DSQ_PLAN_MULTI || p->kind == DSQ_PLAN_ALL ||
                         p->kind == DSQ_PLAN_SEQUENCE)) {
        op_fail(o, DSQ_CODE_INVALID_REQUEST, "queryStream takes a statement that only reads");
        return;
    }
    if (p->kind == DSQ_PLAN_SEQUENCE) {
        seq_take(o);
        return;
    }
    if (o->ktx != NULL) {
        run_in_txn(o);
        return;
    }
    if (p->kind == DSQ_PLAN_MULTI) {
        run_multi(o);
        return;
    }
    run_calls(o);
}

/* The plan's calls on the shards, all at once (in a transaction: in its
 * parts, begun already), then its merge. */
static void run_calls(rop *o)
{
    const dsq_plan *p = &o->plan;
    size_t n = o->kspace->nshards;
    size_t max = p->kind == DSQ_PLAN_FETCH ? p->nfetch * n : n;
    o->calls = calloc(max ? max : 1, sizeof *o->calls);
    if (o->calls == NULL) {
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    int rc = 0;
    switch (p->kind) {
    case DSQ_PLAN_ONE:
        rc = add_call(o, p->shard, NULL, o->req, 0);
        break;
    case DSQ_PLAN_ALL:
        for (size_t s = 0; s < n && rc == 0; s++)
            rc = add_call(o, s, NULL, o->req, 0);
        break;
    case DSQ_PLAN_SCATTER:
        for (size_t s = 0; s < n && rc == 0; s++)
            if (p->targets[s])
                rc = add_call(o, s, &p->shard_q, NULL, 0);
        break;
    case DSQ_PLAN_FETCH:
        for (size_t k = 0; k < p->nfetch && rc == 0; k++)
            for (size_t s = 0; s < n && rc == 0; s++)
                if (p->fetch[k].shard < 0 || (size_t)p->fetch[k].shard == s)
                    rc = add_call(o, s, &p->fetch[k].q, NULL, k);
        break;
    default:
        break;
    }
    if (rc != 0) {
        for (size_t i = 0; i < o->ncalls; i++)
            free(o->calls[i].params);
        free(o->calls);
        o->calls = NULL;
        o->ncalls = 0;
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    submit_all(o);
}

/* An atomic batch: planned whole, then one batch on one shard, or one
 * cross-shard transaction. */
static void one_shard_batch_done(dsq_call *c)
{
    rcall *rc = (rcall *)c;
    rop *o = rc->op;
    if (c->err != 0) {
        o->err = -1;
        o->code = c->code;
        snprintf(o->msg, sizeof o->msg, "%.590s", c->msg);
    } else {
        o->results = c->results; /* (nreqs of them) */
        c->results = NULL;
        c->nresults = 0;
    }
    op_finish(o);
}

static void plan_batch(rop *o)
{
    dsq_ks_schema *schema = o->g->schemas[o->ks];
    bool one = true, stale = false;
    size_t shard = 0;
    for (size_t k = 0; k < o->nreqs; k++) {
        dsq_plan_free(&o->plans[k]);
        dsq_plan_make(schema, o->kspace, &o->reqs[k], &o->plans[k]);
        dsq_plan *p = &o->plans[k];
        if (p->kind == DSQ_PLAN_ERROR && !o->fresh_schema &&
            (p->code == DSQ_CODE_TABLE_NOT_FOUND || p->code == DSQ_CODE_COLUMN_NOT_FOUND))
            stale = true;
    }
    if (stale) {
        dsq_ks_schema_free(o->g->schemas[o->ks]);
        o->g->schemas[o->ks] = NULL;
        fetch_schema(o);
        return;
    }
    for (size_t k = 0; k < o->nreqs; k++)
        if (o->plans[k].kind == DSQ_PLAN_SEQUENCE) { /* its values first, then the batch again */
            o->seq_stmt = k;
            seq_take(o);
            return;
        }
    for (size_t k = 0; k < o->nreqs; k++) {
        dsq_plan *p = &o->plans[k];
        char m[600];
        if (p->kind == DSQ_PLAN_ERROR || p->kind == DSQ_PLAN_REFUSE) {
            snprintf(m, sizeof m, "statement %zu: %.500s", k + 1, p->msg);
            op_fail(o, p->code, m);
            return;
        }
        if (p->kind == DSQ_PLAN_LOOKUP) {
            snprintf(m, sizeof m, "statement %zu: a statement that finds its shard through a lookup vindex is not "
                                  "supported in an atomic batch on a keyspace (send it on its own, or by its key)",
                     k + 1);
            op_fail(o, DSQ_CODE_INVALID_REQUEST, m);
            return;
        }
        if (p->kind != DSQ_PLAN_ONE && p->kind != DSQ_PLAN_MULTI) {
            snprintf(m, sizeof m, "statement %zu: an atomic batch on a keyspace takes statements that each go to one "
                                  "shard, and writes (this one is answered by %s)",
                     k + 1, dsq_plan_kind_name(p->kind));
            op_fail(o, DSQ_CODE_INVALID_REQUEST, m);
            return;
        }
        if (p->kind == DSQ_PLAN_MULTI || (k > 0 && p->shard != shard))
            one = false;
        shard = p->shard;
    }
    o->plan.kind = one ? DSQ_PLAN_ONE : DSQ_PLAN_MULTI;
    if (!one) {
        run_multi(o);
        return;
    }
    /* All on one shard: a batch there, atomic as asked. */
    rcall *rc = one_call(o);
    if (rc == NULL)
        return;
    rc->shard = shard;
    rc->call.op = DSQ_OP_BATCH;
    rc->call.stmts = (dsq_stmt_req *)o->reqs;
    rc->call.nstmts = o->nreqs;
    rc->call.atomic = true;
    rc->call.scope = o->scope;
    rc->call.budget = o->budget;
    rc->call.done = one_shard_batch_done;
    rc->call.ud = rc;
    if (rsubmit(o->r, o->kspace->shards[shard], &rc->call) != 0)
        one_shard_batch_done(&rc->call);
}

static bool ktxn_doom(dsq_router *r, const char *id);

/* A batch that is not atomic, or one in an interactive transaction: each
 * statement on its own, in order. */
typedef struct seqb {
    dsq_router *r;
    char ks[129];
    const dsq_stmt_req *reqs;
    size_t n, next;
    unsigned scope;
    dsq_budget *budget;
    dsq_router_batch_fn done;
    void *ud;
    dsq_result *results;
    char txid[33];   /* in this interactive transaction ("" none) */
    bool atomic;     /* (in one) the first failure ends it */
} seqb;

static void seqb_step(seqb *b);

static void seqb_one(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    seqb *b = ud;
    (void)plan;
    dsq_result *out = &b->results[b->next];
    if (err == 0) {
        *out = *res;
        memset(res, 0, sizeof *res);
    } else if (b->atomic) {
        /* Statements ran before it: the transaction cannot keep them
         * without it, so it only rolls back now. */
        bool doomed = b->next > 0 && ktxn_doom(b->r, b->txid);
        char m[700];
        snprintf(m, sizeof m, "statements[%zu]: %.500s%s", b->next, msg ? msg : "failed",
                 doomed ? " (the transaction can only be rolled back now)" : "");
        b->done(b->ud, -1, code, m, NULL, 0);
        for (size_t i = 0; i < b->n; i++)
            dsq_result_free(&b->results[i]);
        free(b->results);
        free(b);
        return;
    } else {
        out->code = code;
        out->error = strdup(msg ? msg : "failed");
    }
    b->next++;
    seqb_step(b);
}

static void seqb_step(seqb *b)
{
    if (b->next < b->n) {
        if (b->txid[0])
            dsq_router_query_txn(b->r, b->ks, b->txid, &b->reqs[b->next], b->scope, b->budget, seqb_one, b);
        else
            dsq_router_query(b->r, b->ks, &b->reqs[b->next], b->scope, b->budget, seqb_one, b);
        return;
    }
    b->done(b->ud, 0, DSQ_CODE_UNKNOWN, NULL, b->results, b->n);
    for (size_t i = 0; i < b->n; i++)
        dsq_result_free(&b->results[i]);
    free(b->results);
    free(b);
}

void dsq_router_batch(dsq_router *r, const char *ks, const dsq_stmt_req *reqs, size_t n, bool atomic, unsigned scope,
                      dsq_budget *budget, dsq_router_batch_fn done, void *ud)
{
    long k = ks_index(r->g, ks);
    if (k < 0) {
        char m[300];
        snprintf(m, sizeof m, "no keyspace '%.128s' in the VSchema", ks);
        done(ud, -1, DSQ_CODE_INVALID_REQUEST, m, NULL, 0);
        return;
    }
    char away[600];
    if (!ks_home(r, &r->g->vs->keyspaces[k], away, sizeof away)) {
        done(ud, -1, DSQ_CODE_NOT_PRIMARY, away, NULL, 0);
        return;
    }
    if (!atomic || n == 0) {
        seqb *b = calloc(1, sizeof *b);
        if (b != NULL && (b->results = calloc(n ? n : 1, sizeof *b->results)) == NULL) {
            free(b);
            b = NULL;
        }
        if (b == NULL) {
            done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router", NULL, 0);
            return;
        }
        *b = (seqb){.r = r, .reqs = reqs, .n = n, .scope = scope, .budget = budget, .done = done, .ud = ud,
                    .results = b->results};
        snprintf(b->ks, sizeof b->ks, "%s", ks);
        seqb_step(b);
        return;
    }
    rop *o = calloc(1, sizeof *o);
    dsq_plan *plans = calloc(n, sizeof *plans);
    if (o == NULL || plans == NULL) {
        free(o);
        free(plans);
        done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router", NULL, 0);
        return;
    }
    o->r = r;
    o->g = r->g;
    o->g->refs++;
    o->ks = k;
    o->kspace = &o->g->vs->keyspaces[k];
    o->req = &reqs[0];
    o->reqs = reqs;
    o->nreqs = n;
    o->plans = plans;
    o->batch = true;
    o->batch_done = done;
    o->scope = scope;
    o->budget = budget;
    o->ud = ud;
    plan_and_run(o);
}

static void query_as(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope, dsq_budget *budget,
                     dsq_router_done_fn done, void *ud, bool read_only);

void dsq_router_query_read(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope,
                           dsq_budget *budget, dsq_router_done_fn done, void *ud)
{
    query_as(r, ks, req, scope, budget, done, ud, true);
}

void dsq_router_query(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope, dsq_budget *budget,
                      dsq_router_done_fn done, void *ud)
{
    query_as(r, ks, req, scope, budget, done, ud, false);
}

static void query_as(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope, dsq_budget *budget,
                     dsq_router_done_fn done, void *ud, bool read_only)
{
    long k = ks_index(r->g, ks);
    if (k < 0) {
        char m[300];
        snprintf(m, sizeof m, "no keyspace '%.128s' in the VSchema%s", ks,
                 r->g->vs == NULL ? " (none is in force: set [sharding] vschema or call applyVSchema)" : "");
        done(ud, -1, DSQ_CODE_INVALID_REQUEST, m, NULL, "refuse");
        return;
    }
    char away[600];
    if (!ks_home(r, &r->g->vs->keyspaces[k], away, sizeof away)) {
        done(ud, -1, DSQ_CODE_NOT_PRIMARY, away, NULL, "refuse");
        return;
    }
    rop *o = calloc(1, sizeof *o);
    if (o == NULL) {
        done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router", NULL, "error");
        return;
    }
    o->r = r;
    o->g = r->g;
    o->g->refs++;
    o->ks = k;
    o->kspace = &o->g->vs->keyspaces[k];
    o->req = req;
    o->scope = scope;
    o->budget = budget;
    o->done = done;
    o->ud = ud;
    o->read_only = read_only;
    plan_and_run(o);
}

/* ---- recovery of cross-shard transactions ---------------------------------------------------------- */

/* One pass over every keyspace, one engine call at a time: the
 * coordinator's rows (each resolved), then each shard's records (those
 * without a row removed). */
typedef struct recov {
    dsq_router *r;
    gen *g;
    size_t ks;            /* keyspace */
    int phase;            /* REC_* */
    dsq_call call;
    dsq_stmt_req stmt;
    dsq_param params[2];
    char coord[160];
    json_t *rows;         /* the coordinator's rows: [[txid, state, participants], ...] */
    size_t row;
    json_t *parts;        /* the row's participants */
    size_t part;
    dsq_stmt_req *redo;   /* a participant's statements, to redo */
    size_t nredo;
    char **arenas;        /* their parameters' memory */
    char txn[33];
    bool row_ok;          /* every participant of the row resolved */
    size_t shard;         /* the shard whose records are looked at */
    json_t *marks;        /* its records: [[txid], ...] */
    size_t mark;
} recov;

enum { REC_ROWS, REC_ROW_STATE, REC_PART_CHECK, REC_PART_BEGIN, REC_PART_REDO, REC_PART_COMMIT, REC_PART_ABANDON, REC_PART_UNMARK,
       REC_ROW_FORGET,
       REC_MARKS, REC_MARK_ROW, REC_MARK_DROP };

static void rec_step(recov *v);
static void rec_redo_free(recov *v);

static void rec_call_done(dsq_call *c) { rec_step(c->ud); }

static void rec_submit(recov *v, const char *db, dsq_op op, const char *sql, const char *arg)
{
    dsq_call *c = &v->call;
    memset(c, 0, sizeof *c);
    c->op = op;
    c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
    c->internal_tables = true;
    c->atomic = true;
    c->done = rec_call_done; /* (the call is the first member) */
    c->ud = v;
    if (sql != NULL) {
        v->params[0] = (dsq_param){NULL, {.type = DSQ_V_TEXT, .p = arg, .n = arg ? strlen(arg) : 0}};
        v->stmt = (dsq_stmt_req){.sql = sql, .sql_len = strlen(sql), .params = v->params, .nparams = arg ? 1 : 0};
        c->stmts = &v->stmt;
        c->nstmts = 1;
    }
    if (rsubmit(v->r, db, c) != 0) {
        c->err = -1;
        rec_step(v);
    }
}

/* The result's rows as JSON arrays of strings/integers. */
static json_t *rows_of(const dsq_call *c)
{
    json_t *a = json_array();
    if (c->err != 0 || c->nresults == 0)
        return a;
    const dsq_result *res = &c->results[0];
    size_t pos = 0;
    for (size_t i = 0; i < res->nrows && a; i++) {
        json_t *row = json_array();
        for (int k = 0; k < res->ncols; k++) {
            dsq_value x;
            dsq_result_next(res, &pos, &x);
            json_array_append_new(row, x.type == DSQ_V_INT    ? json_integer(x.i)
                                       : x.type == DSQ_V_TEXT ? json_stringn(x.p, x.n)
                                                              : json_null());
        }
        json_array_append_new(a, row);
    }
    return a;
}

static const char *row_str(json_t *rows, size_t i, size_t k)
{
    const char *s = json_string_value(json_array_get(json_array_get(rows, i), k));
    return s ? s : "";
}

static void rec_next_keyspace(recov *v);

static void rec_marks_of_shard(recov *v)
{
    const dsq_vs_keyspace *ks = &v->g->vs->keyspaces[v->ks];
    if (v->shard >= ks->nshards) {
        v->ks++;
        rec_next_keyspace(v);
        return;
    }
    v->phase = REC_MARKS;
    rec_submit(v, ks->shards[v->shard], DSQ_OP_QUERY, "SELECT txid FROM _dsq_prepared", NULL);
}

static void rec_next_mark(recov *v)
{
    const dsq_vs_keyspace *ks = &v->g->vs->keyspaces[v->ks];
    while (v->mark < json_array_size(v->marks) && inflight_has(v->r, row_str(v->marks, v->mark, 0)))
        v->mark++;
    if (v->mark >= json_array_size(v->marks)) {
        json_decref(v->marks);
        v->marks = NULL;
        v->shard++;
        rec_marks_of_shard(v);
        return;
    }
    (void)ks;
    v->phase = REC_MARK_ROW;
    rec_submit(v, v->coord, DSQ_OP_QUERY, "SELECT count(*) FROM _dsq_txns WHERE txid = ?1",
               row_str(v->marks, v->mark, 0));
}

static void rec_next_part(recov *v);
static void rec_row_fresh(recov *v, json_t *fresh);

static void rec_next_row(recov *v)
{
    while (v->row < json_array_size(v->rows) && inflight_has(v->r, row_str(v->rows, v->row, 0)))
        v->row++;
    if (v->row >= json_array_size(v->rows)) {
        json_decref(v->rows);
        v->rows = NULL;
        v->shard = 0;
        rec_marks_of_shard(v);
        return;
    }
    /* Its state now (the pass read every row at its start: one in flight
     * then may have moved on since). */
    v->phase = REC_ROW_STATE;
    rec_submit(v, v->coord, DSQ_OP_QUERY, "SELECT txid, state, participants FROM _dsq_txns WHERE txid = ?1",
               row_str(v->rows, v->row, 0));
}

/* The row as it is now (REC_ROW_STATE's answer): resolved, or gone. */
static void rec_row_fresh(recov *v, json_t *fresh)
{
    json_t *row = json_array_get(fresh, 0);
    if (row == NULL || inflight_has(v->r, row_str(v->rows, v->row, 0))) { /* gone (resolved), or begun again */
        v->row++;
        rec_next_row(v);
        return;
    }
    json_array_set(v->rows, v->row, row);
    json_decref(v->parts);
    json_error_t je;
    const char *pj = row_str(v->rows, v->row, 2);
    v->parts = json_loads(pj, 0, &je);
    v->part = 0;
    v->row_ok = true;
    if (!json_is_array(v->parts)) {
        DSQ_WARN("twopc_row_unreadable", "txid=%s", row_str(v->rows, v->row, 0));
        v->row++;
        rec_next_row(v);
        return;
    }
    rec_next_part(v);
}

static void rec_next_part(recov *v)
{
    const char *txid = row_str(v->rows, v->row, 0);
    bool commit = strcmp(row_str(v->rows, v->row, 1), "commit") == 0;
    if (v->part >= json_array_size(v->parts)) {
        if (v->row_ok) {
            v->phase = REC_ROW_FORGET;
            rec_submit(v, v->coord, DSQ_OP_QUERY, "DELETE FROM _dsq_txns WHERE txid = ?1", txid);
            return;
        }
        v->row++;
        rec_next_row(v);
        return;
    }
    const char *shard = json_string_value(json_object_get(json_array_get(v->parts, v->part), "shard"));
    if (shard == NULL) {
        v->row_ok = false;
        v->part++;
        rec_next_part(v);
        return;
    }
    if (commit) {
        v->phase = REC_PART_CHECK;
        rec_submit(v, shard, DSQ_OP_QUERY, "SELECT count(*) FROM _dsq_prepared WHERE txid = ?1", txid);
    } else {
        v->phase = REC_PART_UNMARK;
        rec_submit(v, shard, DSQ_OP_QUERY, "DELETE FROM _dsq_prepared WHERE txid = ?1", txid);
    }
}

static void rec_redo_free(recov *v)
{
    for (size_t k = 0; v->arenas && k < v->nredo; k++)
        free(v->arenas[k]);
    free(v->arenas);
    free(v->redo);
    v->arenas = NULL;
    v->redo = NULL;
    v->nredo = 0;
}

static void rec_done(recov *v)
{
    json_decref(v->rows);
    json_decref(v->parts);
    json_decref(v->marks);
    rec_redo_free(v);
    gen_unref(v->g);
    v->r->recovering = false;
    free(v);
}

static void rec_next_keyspace(recov *v)
{
    if (v->g->vs == NULL || v->ks >= v->g->vs->nkeyspaces) {
        rec_done(v);
        return;
    }
    char away[600];
    if (!ks_home(v->r, &v->g->vs->keyspaces[v->ks], away, sizeof away)) { /* (its home's to recover) */
        v->ks++;
        rec_next_keyspace(v);
        return;
    }
    coordinator_of(&v->g->vs->keyspaces[v->ks], v->coord, sizeof v->coord);
    v->phase = REC_ROWS;
    rec_submit(v, v->coord, DSQ_OP_QUERY, "SELECT txid, state, participants FROM _dsq_txns", NULL);
}

static bool no_table(const dsq_call *c) { return c->err != 0 && strstr(c->msg, "no such table") != NULL; }

static void rec_step(recov *v)
{
    dsq_call *c = &v->call;
    const char *txid = v->rows ? row_str(v->rows, v->row, 0) : "";
    json_t *pt = v->parts ? json_array_get(v->parts, v->part) : NULL;
    const char *shard = pt ? json_string_value(json_object_get(pt, "shard")) : NULL;
    switch (v->phase) {
    case REC_ROWS:
        if (c->err != 0 && !no_table(c))
            DSQ_WARN("twopc_recovery_failed", "db=%s reason=%s", v->coord, dsq_log_q(c->msg));
        v->rows = rows_of(c);
        v->row = 0;
        dsq_call_reset(c);
        rec_next_row(v);
        return;
    case REC_ROW_STATE: {
        bool failed = c->err != 0;
        if (failed)
            DSQ_WARN("twopc_recovery_failed", "db=%s txid=%s reason=%s", v->coord, txid, dsq_log_q(c->msg));
        json_t *fresh = rows_of(c);
        dsq_call_reset(c);
        if (failed) { /* the next pass tries again */
            json_decref(fresh);
            v->row++;
            rec_next_row(v);
            return;
        }
        rec_row_fresh(v, fresh);
        json_decref(fresh);
        return;
    }
    case REC_PART_CHECK: {
        bool marked = c->err == 0 && c->nresults > 0 && c->results[0].nrows > 0;
        int64_t n = 0;
        if (marked) {
            size_t pos = 0;
            dsq_value x;
            dsq_result_next(&c->results[0], &pos, &x);
            n = x.i;
        }
        bool failed = c->err != 0 && !no_table(c);
        if (failed) {
            DSQ_WARN("twopc_recovery_failed", "db=%s txid=%s reason=%s", shard, txid, dsq_log_q(c->msg));
            v->row_ok = false;
        }
        dsq_call_reset(c);
        if (failed || n == 0) { /* committed there already (or not reached) */
            v->part++;
            rec_next_part(v);
            return;
        }
        /* Redo it under its id: the record kept every other write out. */
        rec_redo_free(v);
        json_t *stmts = json_object_get(pt, "statements");
        size_t ns = json_array_size(stmts);
        v->redo = calloc(ns ? ns : 1, sizeof *v->redo);
        v->arenas = calloc(ns ? ns : 1, sizeof *v->arenas);
        bool bad = ns == 0 || v->redo == NULL || v->arenas == NULL;
        for (size_t k = 0; !bad && k < ns; k++) {
            json_t *st = json_array_get(stmts, k);
            const char *sql = json_string_value(json_object_get(st, "sql"));
            bad = sql == NULL || params_back(json_object_get(st, "params"), &v->redo[k], &v->arenas[k]) != 0;
            if (!bad) {
                v->redo[k].sql = sql;
                v->redo[k].sql_len = json_string_length(json_object_get(st, "sql"));
            }
            v->nredo = k + 1;
        }
        if (bad) {
            DSQ_WARN("twopc_recovery_failed", "db=%s txid=%s reason=unreadable", shard, txid);
            v->row_ok = false;
            v->part++;
            rec_next_part(v);
            return;
        }
        /* Begun under its id (its record is there: kept as it is), so
         * that its writes are its own, not refused as another's. */
        v->phase = REC_PART_BEGIN;
        memset(c, 0, sizeof *c);
        c->op = DSQ_OP_BEGIN;
        c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
        c->internal_tables = true;
        c->immediate = true;
        c->target_db = v->coord;
        memcpy(c->prepare_id, txid, sizeof c->prepare_id);
        c->done = rec_call_done;
        c->ud = v;
        if (rsubmit(v->r, shard, c) != 0) {
            c->err = -1;
            rec_step(v);
        }
        return;
    }
    case REC_PART_BEGIN:
    case REC_PART_REDO:
    case REC_PART_COMMIT:
        if (c->err != 0) {
            DSQ_WARN("twopc_recovery_failed", "db=%s txid=%s step=%d reason=%s", shard, txid, v->phase,
                     dsq_log_q(c->msg));
            v->row_ok = false;
            if (v->phase == REC_PART_REDO) { /* end the transaction it began */
                dsq_call_reset(c);
                v->phase = REC_PART_ABANDON;
                memset(c, 0, sizeof *c);
                c->op = DSQ_OP_ROLLBACK;
                c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
                memcpy(c->txn, v->txn, sizeof c->txn); /* (no prepare id: its record stays) */
                c->done = rec_call_done;
                c->ud = v;
                c->err = 0;
                if (rsubmit(v->r, shard, c) == 0)
                    return;
            }
            dsq_call_reset(c);
            v->part++;
            rec_next_part(v);
            return;
        }
        if (v->phase == REC_PART_BEGIN) {
            memcpy(v->txn, c->txn_out, sizeof v->txn);
            dsq_call_reset(c);
            v->phase = REC_PART_REDO;
            memset(c, 0, sizeof *c);
            c->op = DSQ_OP_BATCH;
            c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
            c->atomic = true;
            memcpy(c->txn, v->txn, sizeof c->txn);
            c->stmts = v->redo;
            c->nstmts = v->nredo;
            c->done = rec_call_done;
            c->ud = v;
            if (rsubmit(v->r, shard, c) != 0) {
                c->err = -1;
                rec_step(v);
            }
            return;
        }
        if (v->phase == REC_PART_REDO) {
            dsq_call_reset(c);
            v->phase = REC_PART_COMMIT;
            memset(c, 0, sizeof *c);
            c->op = DSQ_OP_COMMIT;
            c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
            c->internal_tables = true;
            memcpy(c->txn, v->txn, sizeof c->txn);
            memcpy(c->prepare_id, txid, sizeof c->prepare_id);
            c->done = rec_call_done;
            c->ud = v;
            if (rsubmit(v->r, shard, c) != 0) {
                c->err = -1;
                rec_step(v);
            }
            return;
        }
        DSQ_INFO("twopc_recovered", "txid=%s db=%s outcome=committed", txid, shard);
        dsq_call_reset(c);
        v->part++;
        rec_next_part(v);
        return;
    case REC_PART_ABANDON: /* (the redo failed: the record stays, the next pass tries again) */
        dsq_call_reset(c);
        v->part++;
        rec_next_part(v);
        return;
    case REC_PART_UNMARK:
        if (c->err != 0 && !no_table(c)) {
            DSQ_WARN("twopc_recovery_failed", "db=%s txid=%s reason=%s", shard, txid, dsq_log_q(c->msg));
            v->row_ok = false;
        } else if (c->err == 0 && c->nresults > 0 && c->results[0].rows_affected > 0) {
            DSQ_INFO("twopc_recovered", "txid=%s db=%s outcome=rolled_back", txid, shard);
        }
        dsq_call_reset(c);
        v->part++;
        rec_next_part(v);
        return;
    case REC_ROW_FORGET:
        if (c->err == 0)
            v->r->recovered++;
        dsq_call_reset(c);
        v->row++;
        rec_next_row(v);
        return;
    case REC_MARKS:
        if (c->err != 0 && !no_table(c))
            DSQ_WARN("twopc_recovery_failed", "db=%s reason=%s", v->g->vs->keyspaces[v->ks].shards[v->shard],
                     dsq_log_q(c->msg));
        v->marks = rows_of(c);
        v->mark = 0;
        dsq_call_reset(c);
        rec_next_mark(v);
        return;
    case REC_MARK_ROW: {
        int64_t n = 1; /* (unknown: keep it) */
        if (c->err == 0 && c->nresults > 0 && c->results[0].nrows > 0) {
            size_t pos = 0;
            dsq_value x;
            dsq_result_next(&c->results[0], &pos, &x);
            n = x.i;
        } else if (no_table(c)) {
            n = 0;
        }
        dsq_call_reset(c);
        if (n == 0) { /* no decision was ever recorded for it: it aborted */
            v->phase = REC_MARK_DROP;
            rec_submit(v, v->g->vs->keyspaces[v->ks].shards[v->shard], DSQ_OP_QUERY,
                       "DELETE FROM _dsq_prepared WHERE txid = ?1", row_str(v->marks, v->mark, 0));
            return;
        }
        v->mark++;
        rec_next_mark(v);
        return;
    }
    case REC_MARK_DROP:
        if (c->err == 0) {
            DSQ_INFO("twopc_recovered", "txid=%s db=%s outcome=rolled_back", row_str(v->marks, v->mark, 0),
                     v->g->vs->keyspaces[v->ks].shards[v->shard]);
            v->r->recovered++;
        }
        dsq_call_reset(c);
        v->mark++;
        rec_next_mark(v);
        return;
    }
}

/* ---- interactive transactions on keyspaces -------------------------------------------------------
 *
 * beginTransaction on a keyspace makes a cross-shard transaction that
 * takes its shards as its statements reach them: each shard is begun as
 * a prepared participant (its record, as in run_multi) the first time,
 * and the statement's pieces run in the participants' transactions, which
 * keep every piece that ran (SQL and parameters, copied) for the
 * coordinator's row. commit is the two-phase commit of those
 * participants (one: its commit alone); rollback rolls each back. A
 * statement that fails on one of its several shards leaves the others'
 * pieces done: the transaction then only rolls back. Each statement goes
 * to one shard or is a write; shards are taken in the order statements
 * reach them, so two transactions may wait for each other — the wait
 * ends after write_wait_timeout with SERIALIZATION_FAILURE. */

typedef struct kshard {
    bool begun;
    char txn[33];           /* its participant's transaction */
    dsq_stmt_req *log;      /* the pieces it ran */
    size_t nlog;
    char **mem;             /* their SQL and parameters' memory */
    size_t nmem;
} kshard;

typedef struct ktxn {
    struct ktxn *next;
    char id[33];
    gen *g;
    long ks;
    const dsq_vs_keyspace *kspace;
    uint64_t session;
    unsigned scope;
    uint64_t timeout_ms, deadline_ms;
    bool busy;              /* a statement, commit or rollback runs */
    bool doomed;            /* a statement failed on some of its shards: rollback only */
    bool ending;            /* its client went: rolled back once the statement ends */
    kshard *sh;             /* per shard */
    char coord[160];        /* its coordinator's name (its BEGINs borrow it) */
} ktxn;

static void ktxn_free(dsq_router *r, ktxn *k)
{
    for (ktxn **pp = &r->ktxns; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    inflight_remove(r, k->id);
    for (size_t s = 0; s < k->kspace->nshards; s++) {
        for (size_t m = 0; m < k->sh[s].nmem; m++)
            free(k->sh[s].mem[m]);
        free(k->sh[s].mem);
        free(k->sh[s].log);
    }
    free(k->sh);
    gen_unref(k->g);
    free(k);
}

static ktxn *ktxn_find(dsq_router *r, const char *id)
{
    for (ktxn *k = r->ktxns; k; k = k->next)
        if (strcmp(k->id, id) == 0)
            return k;
    return NULL;
}

static const char *txn_of(const ktxn *k, size_t shard) { return k->sh[shard].txn; }

static bool ktxn_doom(dsq_router *r, const char *id)
{
    ktxn *k = ktxn_find(r, id);
    if (k != NULL)
        k->doomed = true;
    return k != NULL;
}

/* Keep a piece that ran on shard s: its SQL and parameters copied. */
static int ktxn_log(ktxn *k, size_t s, const dsq_stmt_req *q)
{
    kshard *sh = &k->sh[s];
    size_t need = q->sql_len + 1 + q->nparams * sizeof(dsq_param);
    for (size_t i = 0; i < q->nparams; i++) {
        const dsq_value *v = &q->params[i].v;
        need += (v->type == DSQ_V_TEXT || v->type == DSQ_V_BLOB ? v->n : 0) +
                (q->params[i].name ? strlen(q->params[i].name) + 1 : 0);
    }
    char *mem = malloc(need ? need : 1);
    dsq_stmt_req *nl = realloc(sh->log, (sh->nlog + 1) * sizeof *nl);
    if (nl != NULL)
        sh->log = nl;
    char **nm = realloc(sh->mem, (sh->nmem + 1) * sizeof *nm);
    if (nm != NULL)
        sh->mem = nm;
    if (mem == NULL || nl == NULL || nm == NULL) {
        free(mem);
        return -1;
    }
    sh->mem[sh->nmem++] = mem;
    dsq_param *ps = (dsq_param *)mem;
    char *at = mem + q->nparams * sizeof(dsq_param);
    for (size_t i = 0; i < q->nparams; i++) {
        ps[i] = q->params[i];
        const dsq_value *v = &q->params[i].v;
        if (v->type == DSQ_V_TEXT || v->type == DSQ_V_BLOB) {
            if (v->n)
                memcpy(at, v->p, v->n);
            ps[i].v.p = at;
            at += v->n;
        }
        if (q->params[i].name) {
            size_t l = strlen(q->params[i].name) + 1;
            memcpy(at, q->params[i].name, l);
            ps[i].name = at;
            at += l;
        }
    }
    memcpy(at, q->sql, q->sql_len);
    at[q->sql_len] = '\0';
    sh->log[sh->nlog++] = (dsq_stmt_req){.sql = at, .sql_len = q->sql_len, .params = ps, .nparams = q->nparams,
                                         .named = q->named};
    return 0;
}

/* The first shard (ascending) the statement's plan needs that its
 * transaction has not begun yet, or -1. */
static long txn_next_begin(const rop *o)
{
    const dsq_plan *p = &o->plan;
    const ktxn *k = o->ktx;
    if (p->kind == DSQ_PLAN_ONE)
        return k->sh[p->shard].begun ? -1 : (long)p->shard;
    if (p->kind == DSQ_PLAN_SCATTER || p->kind == DSQ_PLAN_FETCH) {
        for (size_t s = 0; s < o->kspace->nshards; s++) {
            bool need = false;
            if (p->kind == DSQ_PLAN_SCATTER)
                need = p->targets[s];
            for (size_t f = 0; p->kind == DSQ_PLAN_FETCH && f < p->nfetch && !need; f++)
                need = p->fetch[f].shard < 0 || (size_t)p->fetch[f].shard == s;
            if (need && !k->sh[s].begun)
                return (long)s;
        }
        return -1;
    }
    long first = -1;
    for (size_t i = 0; i < p->nwrites; i++) {
        size_t s = p->write_shard[i];
        if (!k->sh[s].begun && (first < 0 || (long)s < first))
            first = (long)s;
    }
    return first;
}

static void txn_step(rop *o);

static void txn_call_done(dsq_call *c)
{
    rcall *rc = (rcall *)c;
    rop *o = rc->op;
    ktxn *k = o->ktx;
    if (c->err != 0) {
        o->err = -1;
        o->code = c->code;
        snprintf(o->msg, sizeof o->msg, "%.590s", c->msg);
        /* A piece failed after others of its statement ran: the
         * transaction can no longer commit what the statement meant. */
        if (o->plan.kind == DSQ_PLAN_MULTI && o->kstep > 0)
            k->doomed = true;
        /* Its part on a shard ended under it (that shard's transaction
         * expired): what ran there is gone. */
        if (c->code == DSQ_CODE_TRANSACTION_NOT_FOUND && c->op != DSQ_OP_BEGIN) {
            k->doomed = true;
            snprintf(o->msg, sizeof o->msg, "the transaction's part on shard '%.128s' ended (it idled past its "
                     "timeout there): the transaction can only be rolled back", o->kspace->shards[rc->shard]);
        }
        /* Its shard's node out of reach (or not its primary now): what ran
         * there may be gone, or may have run without the router knowing. */
        if (c->code == DSQ_CODE_NOT_PRIMARY) {
            k->doomed = true;
            snprintf(o->msg, sizeof o->msg, "shard '%.128s': %.300s (the transaction can only be rolled back)",
                     o->kspace->shards[rc->shard], c->msg);
        }
        op_finish(o);
        return;
    }
    if (c->op == DSQ_OP_BEGIN) {
        kshard *sh = &k->sh[rc->shard];
        sh->begun = true;
        memcpy(sh->txn, c->txn_out, sizeof sh->txn);
        dsq_call_reset(c);
        txn_step(o); /* (begins come before any piece: kstep still 0) */
        return;
    }
    /* A piece ran: kept for the coordinator, its answer added up. */
    if (ktxn_log(k, rc->shard, &rc->stmt) != 0) {
        k->doomed = true;
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router (the transaction only rolls back now)");
        return;
    }
    dsq_result *r = &c->results[0];
    bool aux = o->plan.kind == DSQ_PLAN_MULTI && o->plan.write_aux && o->plan.write_aux[rc->fetch];
    if (!aux) {
        if (o->res.ncols == 0 && r->ncols > 0) {
            int64_t before = o->res.rows_affected;
            dsq_result_free(&o->res);
            o->res = *r;
            memset(r, 0, sizeof *r);
            o->res.rows_affected += before;
        } else {
            o->res.rows_affected += r->rows_affected;
            if (r->ncols == o->res.ncols && r->rows.len > 0) {
                dsq_buf_append(&o->res.rows, r->rows.data, r->rows.len);
                o->res.nrows += r->nrows;
            }
        }
    }
    dsq_call_reset(c);
    o->kstep++;
    txn_step(o);
}

/* The statement's next step: the next shard to begin (in order), then
 * each piece in its shard's transaction. */
static void txn_step(rop *o)
{
    ktxn *k = o->ktx;
    const dsq_plan *p = &o->plan;
    size_t npieces = p->kind == DSQ_PLAN_ONE ? 1 : p->nwrites;
    rcall *rc = &o->calls[0];
    dsq_call_reset(&rc->call);
    free(rc->params);
    rc->params = NULL;
    memset(rc, 0, sizeof *rc);
    rc->op = o;
    /* A shard the statement needs and the transaction has not begun: begun
     * first, as a prepared participant (in ascending order). */
    long b = txn_next_begin(o);
    if (b >= 0) {
        rc->shard = (size_t)b;
        rc->call.op = DSQ_OP_BEGIN;
        rc->call.immediate = true;
        rc->call.internal_tables = true;
        memcpy(rc->call.prepare_id, k->id, sizeof rc->call.prepare_id);
        coordinator_of(k->kspace, k->coord, sizeof k->coord);
        rc->call.target_db = k->coord;
        rc->call.scope = k->scope;
        /* The router ends the transaction when it idles: the part on a
         * shard lasts as long as the operator lets any. */
        rc->call.txn_timeout_ms = o->r->cfg.max_txn_timeout_ms > k->timeout_ms ? o->r->cfg.max_txn_timeout_ms
                                                                                : k->timeout_ms;
        rc->call.done = txn_call_done;
        rc->call.ud = rc;
        if (rsubmit(o->r, o->kspace->shards[rc->shard], &rc->call) != 0)
            txn_call_done(&rc->call);
        return;
    }
    if (p->kind == DSQ_PLAN_SCATTER || p->kind == DSQ_PLAN_FETCH) {
        /* Every shard it reads is in the transaction: its calls there, in
         * the parts, then the merge. */
        free(o->calls);
        o->calls = NULL;
        o->ncalls = 0;
        run_calls(o);
        return;
    }
    if (o->kstep >= npieces) { /* done */
        o->res.lsn = 0;
        o->res.last_insert_rowid = 0;
        op_finish(o);
        return;
    }
    size_t i = o->kstep;
    rc->fetch = i; /* (the piece's index, for its aux flag) */
    if (p->kind == DSQ_PLAN_ONE) {
        rc->shard = p->shard;
        rc->stmt = *o->req;
    } else {
        rc->shard = p->write_shard[i];
        rc->params = calloc(o->req->nparams + 1, sizeof *rc->params);
        if (rc->params == NULL) {
            op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
            return;
        }
        dsq_plan_params(&p->writes[i], o->req, rc->params, &rc->stmt);
    }
    rc->call.op = DSQ_OP_QUERY;
    rc->call.stmts = &rc->stmt;
    rc->call.nstmts = 1;
    rc->call.atomic = true;
    rc->call.scope = k->scope;
    rc->call.budget = o->budget;
    memcpy(rc->call.txn, k->sh[rc->shard].txn, sizeof rc->call.txn);
    rc->call.done = txn_call_done;
    rc->call.ud = rc;
    if (rsubmit(o->r, o->kspace->shards[rc->shard], &rc->call) != 0)
        txn_call_done(&rc->call);
}

static void run_in_txn(rop *o)
{
    const dsq_plan *p = &o->plan;
    if (o->ktx->doomed) {
        op_fail(o, DSQ_CODE_INVALID_REQUEST, "a statement of this transaction failed on some of its shards: it "
                                             "can only be rolled back");
        return;
    }
    if (p->kind != DSQ_PLAN_ONE && p->kind != DSQ_PLAN_MULTI && p->kind != DSQ_PLAN_SCATTER &&
        p->kind != DSQ_PLAN_FETCH) {
        char m[300];
        snprintf(m, sizeof m, "in a transaction on a keyspace a statement reads or writes rows (this one is "
                              "answered by %s)", dsq_plan_kind_name(p->kind));
        op_fail(o, DSQ_CODE_INVALID_REQUEST, m);
        return;
    }
    if (p->kind == DSQ_PLAN_MULTI && !(o->scope & DSQ_SCOPE_W)) {
        op_fail(o, DSQ_CODE_FORBIDDEN, "this statement writes; the token has read scope only");
        return;
    }
    if (one_call(o) == NULL)
        return;
    o->kstep = 0;
    txn_step(o);
}

void dsq_router_begin(dsq_router *r, const char *ks, unsigned scope, uint64_t session, uint64_t timeout_ms,
                      char id[33], dsq_code *code, char *msg, size_t msglen)
{
    id[0] = '\0';
    long i = ks_index(r->g, ks);
    if (i < 0) {
        *code = DSQ_CODE_INVALID_REQUEST;
        snprintf(msg, msglen, "no keyspace '%.128s' in the VSchema", ks);
        return;
    }
    if (!ks_home(r, &r->g->vs->keyspaces[i], msg, msglen)) {
        *code = DSQ_CODE_NOT_PRIMARY;
        return;
    }
    if (r->cfg.max_txn_timeout_ms != 0 && timeout_ms > r->cfg.max_txn_timeout_ms) {
        *code = DSQ_CODE_INVALID_REQUEST;
        snprintf(msg, msglen, "timeoutMs %llu is above max_transaction_timeout (%llu ms)",
                 (unsigned long long)timeout_ms, (unsigned long long)r->cfg.max_txn_timeout_ms);
        return;
    }
    ktxn *k = calloc(1, sizeof *k);
    inflight *f = calloc(1, sizeof *f);
    if (k != NULL)
        k->sh = calloc(r->g->vs->keyspaces[i].nshards, sizeof *k->sh);
    if (k == NULL || f == NULL || k->sh == NULL || dsq_random_id(k->id) != 0) {
        if (k)
            free(k->sh);
        free(k);
        free(f);
        *code = DSQ_CODE_RESOURCE_EXHAUSTED;
        snprintf(msg, msglen, "out of memory at the router");
        return;
    }
    k->g = r->g;
    k->g->refs++;
    k->ks = i;
    k->kspace = &k->g->vs->keyspaces[i];
    k->session = session;
    k->scope = scope;
    k->timeout_ms = timeout_ms ? timeout_ms : r->cfg.txn_timeout_ms;
    k->deadline_ms = dsq_now_ms() + k->timeout_ms;
    k->next = r->ktxns;
    r->ktxns = k;
    /* Its records on shards are not orphans while it lives. */
    memcpy(f->txid, k->id, sizeof f->txid);
    f->next = r->txns;
    r->txns = f;
    memcpy(id, k->id, 33);
}

/* The transaction `id` of keyspace ks, free for a statement: NULL with
 * the reason otherwise. */
static ktxn *ktxn_take(dsq_router *r, const char *ks, const char *id, dsq_code *code, char *msg, size_t n)
{
    ktxn *k = ktxn_find(r, id);
    if (k == NULL || strcmp(k->kspace->name, ks) != 0) {
        *code = DSQ_CODE_TRANSACTION_NOT_FOUND;
        snprintf(msg, n, "no transaction '%.40s' on keyspace '%.128s' (it ended, or expired)", id, ks);
        return NULL;
    }
    if (k->busy) {
        *code = DSQ_CODE_INVALID_REQUEST;
        snprintf(msg, n, "transaction '%.40s' runs one statement at a time", id);
        return NULL;
    }
    k->busy = true;
    k->deadline_ms = dsq_now_ms() + k->timeout_ms;
    return k;
}

typedef struct ktxn_wrap {
    dsq_router_done_fn done;
    void *ud;
    ktxn *k;
    dsq_router *r;
} ktxn_wrap;

static void ktxn_stmt_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    ktxn_wrap *w = ud;
    ktxn *k = w->k;
    dsq_router *r = w->r;
    dsq_router_done_fn done = w->done;
    void *dud = w->ud;
    free(w);
    k->busy = false;
    k->deadline_ms = dsq_now_ms() + k->timeout_ms; /* (idle from now) */
    /* k is not touched after done: what it runs may end the transaction
     * (a commit held behind this statement), and free it there. */
    if (k->ending)
        dsq_router_txn_end(r, k->kspace->name, k->id, false, NULL, NULL);
    done(dud, err, code, msg, res, plan);
}

void dsq_router_query_txn(dsq_router *r, const char *ks, const char *id, const dsq_stmt_req *req, unsigned scope,
                          dsq_budget *budget, dsq_router_done_fn done, void *ud)
{
    dsq_code code;
    char msg[300];
    ktxn *k = ktxn_take(r, ks, id, &code, msg, sizeof msg);
    ktxn_wrap *w = k ? malloc(sizeof *w) : NULL;
    rop *o = w ? calloc(1, sizeof *o) : NULL;
    if (o == NULL) {
        if (k)
            k->busy = false;
        free(w);
        done(ud, -1, k ? DSQ_CODE_RESOURCE_EXHAUSTED : code, k ? "out of memory at the router" : msg, NULL, "refuse");
        return;
    }
    *w = (ktxn_wrap){done, ud, k, r};
    o->r = r;
    o->g = k->g;
    o->g->refs++;
    o->ks = k->ks;
    o->kspace = k->kspace;
    o->req = req;
    o->scope = scope & k->scope;
    o->budget = budget;
    o->done = ktxn_stmt_done;
    o->ud = w;
    o->ktx = k;
    plan_and_run(o);
}

void dsq_router_batch_txn(dsq_router *r, const char *ks, const char *id, const dsq_stmt_req *reqs, size_t n,
                          bool atomic, unsigned scope, dsq_budget *budget, dsq_router_batch_fn done, void *ud)
{
    seqb *b = calloc(1, sizeof *b);
    if (b != NULL && (b->results = calloc(n ? n : 1, sizeof *b->results)) == NULL) {
        free(b);
        b = NULL;
    }
    if (b == NULL) {
        done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router", NULL, 0);
        return;
    }
    *b = (seqb){.r = r, .reqs = reqs, .n = n, .scope = scope, .budget = budget, .done = done, .ud = ud,
                .results = b->results, .atomic = atomic};
    snprintf(b->ks, sizeof b->ks, "%s", ks);
    snprintf(b->txid, sizeof b->txid, "%s", id);
    seqb_step(b);
}

/* ---- the end of an interactive transaction ---- */

typedef struct kend {
    dsq_router *r;
    ktxn *k;
    bool commit;
    dsq_router_end_fn done;
    void *ud;
    size_t pending;
    int err;
    dsq_code code;
    char msg[500];
    dsq_call *calls;
} kend;

static void kend_finish(kend *e)
{
    if (e->done != NULL)
        e->done(e->ud, e->err, e->code, e->err ? e->msg : NULL);
    for (size_t s = 0; e->calls && s < e->k->kspace->nshards; s++)
        dsq_call_reset(&e->calls[s]);
    free(e->calls);
    ktxn_free(e->r, e->k);
    free(e);
}

static void kend_call_done(dsq_call *c)
{
    kend *e = c->ud;
    if (c->err != 0 && e->err == 0 && e->commit) {
        e->err = -1;
        e->code = c->code;
        snprintf(e->msg, sizeof e->msg, "%.490s", c->msg);
    }
    if (--e->pending == 0)
        kend_finish(e);
}

/* Commit of several participants: the two-phase commit, as run_multi's
 * from its decision on. */
static void kend_2pc_done(void *ud, int err, dsq_code code, const char *msg, dsq_result *res, const char *plan)
{
    kend *e = ud;
    (void)res;
    (void)plan;
    if (err != 0) {
        e->err = -1;
        e->code = code;
        snprintf(e->msg, sizeof e->msg, "%.490s", msg);
    }
    kend_finish(e);
}

void dsq_router_txn_end(dsq_router *r, const char *ks, const char *id, bool commit, dsq_router_end_fn done,
                        void *ud)
{
    ktxn *k = ktxn_find(r, id);
    if (k == NULL || strcmp(k->kspace->name, ks) != 0) {
        if (done != NULL) {
            char m[300];
            snprintf(m, sizeof m, "no transaction '%.40s' on keyspace '%.128s' (it ended, or expired)", id, ks);
            done(ud, -1, DSQ_CODE_TRANSACTION_NOT_FOUND, m);
        }
        return;
    }
    if (k->busy) {
        if (done == NULL) {
            k->ending = true; /* (its client went: once the statement ends) */
            return;
        }
        done(ud, -1, DSQ_CODE_INVALID_REQUEST, "the transaction runs a statement: end it after");
        return;
    }
    bool doomed_commit = commit && k->doomed;
    if (doomed_commit)
        commit = false; /* (rolled back, and said so below) */
    kend *e = calloc(1, sizeof *e);
    size_t n = k->kspace->nshards, begun = 0, last = 0;
    for (size_t s = 0; s < n; s++)
        if (k->sh[s].begun) {
            begun++;
            last = s;
        }
    if (e == NULL || (e->calls = calloc(n, sizeof *e->calls)) == NULL) {
        free(e);
        if (done != NULL)
            done(ud, -1, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    *e = (kend){.r = r, .k = k, .commit = commit, .done = done, .ud = ud, .calls = e->calls};
    k->busy = true;
    if (doomed_commit) {
        e->err = -1;
        e->code = DSQ_CODE_INVALID_REQUEST;
        snprintf(e->msg, sizeof e->msg, "a statement of this transaction failed on some of its shards: it was "
                                        "rolled back");
    }
    if (commit && begun > 1) {
        /* Two-phase commit of the participants, through run_multi's
         * machinery: its parts are begun and ran their statements. */
        rop *o = calloc(1, sizeof *o);
        twopc *t = o ? calloc(1, sizeof *t) : NULL;
        json_t *all = json_array();
        if (t != NULL)
            t->parts = calloc(begun, sizeof *t->parts);
        bool oom = o == NULL || t == NULL || all == NULL || t->parts == NULL;
        for (size_t s = 0; !oom && s < n; s++) {
            kshard *sh = &k->sh[s];
            if (!sh->begun)
                continue;
            part *pt = &t->parts[t->nparts++];
            pt->o = o;
            pt->shard = s;
            pt->begun = true;
            memcpy(pt->txn, sh->txn, sizeof pt->txn);
            json_t *stmts = json_array();
            for (size_t q = 0; stmts && q < sh->nlog; q++) {
                json_t *pj = params_json(&sh->log[q]);
                json_t *x = pj ? json_pack("{s:s%, s:o}", "sql", sh->log[q].sql, sh->log[q].sql_len, "params", pj)
                               : NULL;
                if (x == NULL || json_array_append_new(stmts, x) != 0) {
                    json_decref(stmts);
                    stmts = NULL;
                }
            }
            json_t *x = stmts ? json_pack("{s:s, s:o}", "shard", k->kspace->shards[s], "statements", stmts) : NULL;
            oom = x == NULL || json_array_append_new(all, x) != 0;
        }
        if (!oom)
            t->cjson = json_dumps(all, JSON_COMPACT);
        json_decref(all);
        if (oom || t->cjson == NULL) {
            if (t)
                free(t->parts);
            free(t);
            free(o);
            /* (not decided: roll back) */
            e->commit = commit = false;
            e->err = -1;
            e->code = DSQ_CODE_RESOURCE_EXHAUSTED;
            snprintf(e->msg, sizeof e->msg, "out of memory at the router: the transaction was rolled back");
        } else {
            memcpy(t->txid, k->id, sizeof t->txid);
            coordinator_of(k->kspace, t->coord, sizeof t->coord);
            t->prebegun = true;
            o->r = r;
            o->g = k->g;
            o->g->refs++;
            o->ks = k->ks;
            o->kspace = k->kspace;
            o->scope = k->scope;
            o->tx = t;
            o->plan.kind = DSQ_PLAN_MULTI;
            o->done = kend_2pc_done;
            o->ud = e;
            /* (tx_finish takes it off the in-flight list: ktxn_free finds it gone) */
            tx_coord(o, COORD_TABLE, coord_ddl, 0);
            return;
        }
    }
    /* One participant's commit, or every participant's rollback. */
    e->pending = 1;
    for (size_t s = 0; s < n; s++) {
        if (!k->sh[s].begun || (commit && s != last))
            continue;
        dsq_call *c = &e->calls[s];
        c->op = commit ? DSQ_OP_COMMIT : DSQ_OP_ROLLBACK;
        c->scope = DSQ_SCOPE_R | DSQ_SCOPE_W;
        c->internal_tables = true;
        memcpy(c->txn, k->sh[s].txn, sizeof c->txn);
        memcpy(c->prepare_id, k->id, sizeof c->prepare_id);
        c->done = kend_call_done;
        c->ud = e;
        e->pending++;
        if (rsubmit(r, k->kspace->shards[s], c) != 0) {
            c->err = -1;
            kend_call_done(c);
        }
    }
    if (--e->pending == 0)
        kend_finish(e);
}

void dsq_router_session_closed(dsq_router *r, uint64_t session)
{
    if (session == 0)
        return;
    for (ktxn *k = r->ktxns, *next; k; k = next) {
        next = k->next;
        if (k->session == session)
            dsq_router_txn_end(r, k->kspace->name, k->id, false, NULL, NULL);
    }
}

/* Transactions idle past their timeout: rolled back. */
static void ktxn_expire(dsq_router *r)
{
    uint64_t now = dsq_now_ms();
    for (ktxn *k = r->ktxns, *next; k; k = next) {
        next = k->next;
        if (!k->busy && now > k->deadline_ms) {
            DSQ_INFO("keyspace_transaction_expired", "keyspace=%s txid=%s", k->kspace->name, k->id);
            dsq_router_txn_end(r, k->kspace->name, k->id, false, NULL, NULL);
        }
    }
}

void dsq_router_tick(dsq_router *r)
{
    ktxn_expire(r);
    uint64_t now = dsq_now_ms();
    if (r->recovering || now < r->next_recovery_ms || r->g->vs == NULL)
        return;
    r->next_recovery_ms = now + 2000;
    recov *v = calloc(1, sizeof *v);
    if (v == NULL)
        return;
    v->r = r;
    v->g = r->g;
    v->g->refs++;
    r->recovering = true;
    rec_next_keyspace(v);
}

uint64_t dsq_router_recovered(const dsq_router *r) { return r->recovered; }

uint64_t dsq_router_shard_rows(const dsq_router *r) { return r->shard_rows; }
