/* router — keyspaces served (router.h). */
#include "sharding/router.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/log.h"
#include "engine/storage/disk.h"
#include "sharding/merge.h"
#include "sharding/plan.h"
#include "sharding/vschema.h"

/* A VSchema in force and what hangs on it: statements hold a reference
 * until they finish. */
typedef struct gen {
    int refs;
    uint64_t version;
    dsq_vschema *vs;          /* NULL: none */
    char *text;               /* its JSON, compact */
    dsq_ks_schema **schemas;  /* per keyspace (vs order): the schema at the router, or NULL */
    uint64_t *schema_gen;     /* bumped when a schema change went through the keyspace */
} gen;

struct dsq_router {
    dsq_router_cfg cfg;
    char *state_path;
    gen *g;
    uint64_t counts[6];
};

static void gen_unref(gen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    for (size_t i = 0; g->vs && i < g->vs->nkeyspaces; i++)
        dsq_ks_schema_free(g->schemas[i]);
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
    if (g->schemas == NULL || g->schema_gen == NULL) {
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

void dsq_router_free(dsq_router *r)
{
    if (r == NULL)
        return;
    gen_unref(r->g);
    free(r->state_path);
    free(r);
}

int dsq_router_apply(dsq_router *r, const char *json, size_t len, uint64_t *version, char *err, size_t errlen)
{
    gen *g = gen_new(json, len, r->g->version + 1, err, errlen);
    if (g == NULL)
        return -1;
    if (r->state_path != NULL && write_state(r->state_path, g->version, g->text, err, errlen) != 0) {
        gen_unref(g);
        return -1;
    }
    gen_unref(r->g);
    r->g = g;
    *version = g->version;
    DSQ_INFO("vschema_applied", "version=%llu keyspaces=%zu", (unsigned long long)g->version, g->vs->nkeyspaces);
    return 0;
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

bool dsq_router_first_shard(dsq_router *r, const char *ks, char *out, size_t n)
{
    long i = ks_index(r->g, ks);
    if (i < 0)
        return false;
    snprintf(out, n, "%s", r->g->vs->keyspaces[i].shards[0]);
    return true;
}

void dsq_router_counts(const dsq_router *r, uint64_t out[6]) { memcpy(out, r->counts, sizeof r->counts); }

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
    bool fresh_schema;   /* the schema was just read: a missing table is really missing */
    uint64_t schema_gen; /* the keyspace's schema generation when its schema was asked for */
    rcall *calls;
    size_t ncalls, pending;
    /* the outcome */
    int err;
    dsq_code code;
    char msg[600];
    dsq_result res;
};

static void op_finish(rop *o)
{
    o->r->counts[o->plan.kind < 6 ? o->plan.kind : DSQ_PLAN_ERROR]++;
    if (o->err == 0)
        o->done(o->ud, 0, DSQ_CODE_UNKNOWN, NULL, &o->res, dsq_plan_kind_name(o->plan.kind));
    else
        o->done(o->ud, -1, o->code, o->msg, NULL, dsq_plan_kind_name(o->plan.kind));
    for (size_t i = 0; i < o->ncalls; i++) {
        dsq_call_reset(&o->calls[i].call);
        free(o->calls[i].params);
    }
    free(o->calls);
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
    /* Tables first, then views (a view names tables). */
    const dsq_schema *s = c->schema;
    size_t n = s->tables.n + s->views.n, k = 0;
    const char **ddl = calloc(n ? n : 1, sizeof *ddl);
    for (size_t i = 0; ddl && i < s->tables.n; i++)
        if (s->tables.v[i].sql)
            ddl[k++] = s->tables.v[i].sql;
    for (size_t i = 0; ddl && i < s->views.n; i++)
        if (s->views.v[i].sql)
            ddl[k++] = s->views.v[i].sql;
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

static void fetch_schema(rop *o)
{
    o->calls = calloc(1, sizeof *o->calls);
    if (o->calls == NULL) {
        op_fail(o, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory at the router");
        return;
    }
    o->ncalls = 1;
    rcall *rc = &o->calls[0];
    rc->op = o;
    rc->call.op = DSQ_OP_SCHEMA;
    rc->call.scope = o->scope;
    rc->call.done = schema_done;
    rc->call.ud = rc;
    o->schema_gen = o->g->schema_gen[o->ks];
    if (dsq_engine_submit(o->r->cfg.engine, o->kspace->shards[0], &rc->call) != 0) {
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
    o->ncalls++;
    return 0;
}

static void submit_all(rop *o)
{
    o->pending = o->ncalls + 1; /* (held until every call is submitted) */
    for (size_t i = 0; i < o->ncalls; i++) {
        rcall *rc = &o->calls[i];
        if (dsq_engine_submit(o->r->cfg.engine, o->kspace->shards[rc->shard], &rc->call) != 0)
            o->pending--; /* failed at once: err and msg are set */
    }
    if (--o->pending == 0)
        all_done(o);
}

static void plan_and_run(rop *o)
{
    gen *g = o->g;
    dsq_ks_schema *schema = g->schemas[o->ks];
    if (schema == NULL) {
        fetch_schema(o);
        return;
    }
    dsq_plan_free(&o->plan);
    dsq_plan_make(schema, o->kspace, o->req, &o->plan);
    dsq_plan *p = &o->plan;
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

void dsq_router_query(dsq_router *r, const char *ks, const dsq_stmt_req *req, unsigned scope, dsq_budget *budget,
                      dsq_router_done_fn done, void *ud)
{
    long k = ks_index(r->g, ks);
    if (k < 0) {
        char m[300];
        snprintf(m, sizeof m, "no keyspace '%.128s' in the VSchema%s", ks,
                 r->g->vs == NULL ? " (none is in force: set [sharding] vschema or call applyVSchema)" : "");
        done(ud, -1, DSQ_CODE_INVALID_REQUEST, m, NULL, "refuse");
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
    plan_and_run(o);
}
