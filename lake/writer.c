/* writer — the lake writer (see writer.h).
 *
 * Divisions: waiting for the loop and the store; the object store's keys
 * and URIs; a table's columns and their evolution; a chunk of commits
 * into files; a table's commit; a database's state and its rounds; the
 * thread. */
#include "lake/writer.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/cdc/cdc.h"
#include "lake/changelog.h"
#include "lake/manifest.h"
#include "lake/parquet.h"
#include "lake/table.h"

#define UNFIT_ID 7     /* `_unfit`: after the changelog's six metadata columns */
#define FIRST_COL_ID 8 /* the source table's columns from here */
#define MAX_STEPS 64   /* chunks of one database in one round, at most */

/* ---- waiting for the loop and the store ---------------------------------------------------- */

/* One engine call or object store request the writer thread waits for.
 * If the lake stops first, the wait is abandoned and whoever finishes it
 * frees it. */
typedef struct lop {
    dsq_qnode link;
    struct dsq_lake *l;
    bool is_call, system;
    bool finished, abandoned;
    char db[129];
    dsq_call call;
    dsq_obj_req req;
    /* What the call or request points to, owned here: an abandoned one
     * still runs (the engine drains its mailboxes, the store finishes
     * what is on the wire), after its asker's frames and buffers went. */
    dsq_stmt_req st;
    dsq_buf own;            /* the statement's SQL, or the PUT's bytes */
} lop;

typedef struct lwaiter {
    dsq_qnode link;
    void (*done)(void *ud, const dsq_lake_stats *st);
    void *ud;
    uint64_t after; /* runs once rounds >= after */
    bool stopped;
    dsq_lake_stats st;
} lwaiter;

typedef struct lcol {
    char *name;
    dsq_lk_type type;
    int id;
    bool live; /* the source table has it (a dropped one stays in the lake's schema) */
} lcol;

typedef struct lfile {
    int64_t day;           /* its partition: the day of its commits (UTC), or 0 */
    dsq_changelog *cl;     /* NULL once finished */
    dsq_buf *bytes;        /* the Parquet file (the sink's) */
    uint64_t raw;          /* about how many bytes of values went in */
    dsq_pq_file_stats st;  /* once finished */
    uint64_t first_lsn, last_lsn;
} lfile;

typedef struct ltable {
    char *src;             /* the source table */
    char key[400];         /* lake/DB/SRC_changelog */
    json_t *md;            /* its metadata (the current version's, then this chunk's changes) */
    int version;           /* md's N in vN.metadata.json (0: the table is not made yet) */
    uint64_t pos;          /* the database's last commit the table has taken */
    lcol *cols;
    size_t ncols;
    dsq_lk_col *lk;        /* the changelog's view of cols */
    dsq_lk_table lkt;
    bool md_changed;       /* schema changes this chunk */
    lfile *files;          /* this chunk's */
    size_t nfiles;
    /* its current-state table (lake/DB/SRC) */
    json_t *smd;           /* its metadata (NULL: not made yet) */
    int sversion;
    uint64_t spos;         /* the database's commit it holds the table as of */
    uint64_t s_at_ms;      /* when it was last written (monotonic; 0: not since the start) */
    uint64_t m_at_ms;      /* when its maintenance last ran (monotonic; 0: not since the start) */
} ltable;

typedef struct ldb {
    dsq_qnode link;
    char name[129];
    bool loaded;
    bool known;            /* namespace.json exists */
    uint64_t floor;        /* every change up to it is in the lake */
    ltable **tables;
    size_t ntables;
    char failed[300];      /* the last failure said (logged once) */
    struct {
        char *name;
        int version;
    } *seen;               /* (loading) current-state tables and their highest version */
    size_t nseen;
} ldb;

struct dsq_lake {
    dsq_lake_cfg cfg;
    char **globs;
    char **table_parts;
    char *store_url;
    char *failpoint;       /* DSQ_LAKE_FAILPOINT (tests): the process ends there */
    int failpoint_hits;
    uv_async_t async;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping, flush_asked, in_round;
    dsq_queue calls;       /* lop: for the loop to submit */
    dsq_queue waiters;     /* lwaiter: for a round's end */
    dsq_queue ended;       /* lwaiter: for the loop to call */
    dsq_lake_stats stats;
    dsq_queue dbs;         /* ldb (the writer thread's) */
};

static void op_free(lop *o)
{
    if (o->is_call)
        dsq_call_reset(&o->call);
    else
        dsq_obj_req_clear(&o->req);
    dsq_buf_free(&o->own);
    free(o);
}

/* Finished (either thread): wake the writer, or free it if abandoned. */
static void op_finished(lop *o)
{
    dsq_lake *l = o->l;
    pthread_mutex_lock(&l->mu);
    bool orphan = o->abandoned;
    o->finished = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
    if (orphan)
        op_free(o);
}

static void call_done(dsq_call *c)
{
    lop *o = c->ud;
    dsq_lake *l = o->l;
    /* The databases this node feeds: with several nodes, those whose
     * primary copy is here (the question is the loop's to answer). */
    if (c->op == DSQ_OP_LIST && c->err == 0 && l->cfg.feeds != NULL && !o->abandoned) {
        size_t k = 0;
        for (size_t i = 0; i < c->nnames; i++) {
            if (l->cfg.feeds(l->cfg.feeds_ud, c->names[i]))
                c->names[k++] = c->names[i];
            else
                free(c->names[i]);
        }
        c->nnames = k;
    }
    op_finished(o);
}
static void req_done(dsq_obj_req *r) { op_finished(r->ud); }

/* The loop: submit the calls the writer queued; call the waiters whose
 * round ended. */
static void on_async(uv_async_t *h)
{
    dsq_lake *l = h->data;
    pthread_mutex_lock(&l->mu);
    dsq_queue calls = dsq_queue_take(&l->calls), ended = dsq_queue_take(&l->ended);
    pthread_mutex_unlock(&l->mu);
    for (dsq_qnode *n; (n = dsq_queue_pop(&calls)) != NULL;) {
        lop *o = dsq_container_of(n, lop, link);
        o->call.done = call_done;
        o->call.ud = o;
        int rc = o->system ? dsq_engine_submit_system(l->cfg.engine, &o->call)
                           : dsq_engine_submit(l->cfg.engine, o->db, &o->call);
        if (rc != 0) {
            o->call.err = -1;
            op_finished(o);
        }
    }
    for (dsq_qnode *n; (n = dsq_queue_pop(&ended)) != NULL;) {
        lwaiter *w = dsq_container_of(n, lwaiter, link);
        w->done(w->ud, w->stopped ? NULL : &w->st);
        free(w);
    }
}

/* Wait for o (writer thread). 0 when it finished; -1 when the lake is
 * stopping (o is then the finisher's to free). */
static int op_wait(dsq_lake *l, lop *o)
{
    pthread_mutex_lock(&l->mu);
    while (!o->finished && !l->stopping)
        pthread_cond_wait(&l->cond, &l->mu);
    int rc = o->finished ? 0 : -1;
    if (rc != 0)
        o->abandoned = true;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static lop *op_new(dsq_lake *l)
{
    lop *o = calloc(1, sizeof *o);
    if (o != NULL)
        o->l = l;
    return o;
}

/* Run engine call o->call on database db (NULL: the system actor). 0
 * (o->call.err says how it went), or -1 stopping / out of memory (o
 * gone). */
static int run_call(dsq_lake *l, lop *o, const char *db)
{
    o->is_call = true;
    o->system = db == NULL;
    if (db != NULL)
        snprintf(o->db, sizeof o->db, "%s", db);
    pthread_mutex_lock(&l->mu);
    dsq_queue_push(&l->calls, &o->link);
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
    return op_wait(l, o);
}

/* Run object store request o->req. 0 (o->req.status says how it went),
 * or -1 stopping (o gone). */
static int run_req(dsq_lake *l, lop *o)
{
    o->req.done = req_done;
    o->req.ud = o;
    dsq_obj_submit(l->cfg.objects, &o->req);
    return op_wait(l, o);
}

static bool stopping(dsq_lake *l)
{
    pthread_mutex_lock(&l->mu);
    bool s = l->stopping;
    pthread_mutex_unlock(&l->mu);
    return s;
}

/* Tests cut the writer at a point of a commit (docs/testing.md): the
 * process ends there as if killed. */
static void failpoint(dsq_lake *l, const char *at)
{
    /* POINT, or POINT:N for its Nth time */
    size_t n = strlen(at);
    if (l->failpoint != NULL && strncmp(l->failpoint, at, n) == 0 &&
        (l->failpoint[n] == '\0' || (l->failpoint[n] == ':' && ++l->failpoint_hits >= atoi(l->failpoint + n + 1)))) {
        DSQ_WARN("lake_failpoint", "at=%s", at);
        _exit(70);
    }
}

/* ---- the object store's keys and URIs -------------------------------------------------------- */

static void uri_of(dsq_lake *l, const char *key, char *out, size_t n) { snprintf(out, n, "%s/%s", l->store_url, key); }

/* The key of a URI of this store, or NULL. */
static const char *key_of(dsq_lake *l, const char *uri)
{
    size_t n = strlen(l->store_url);
    return strncmp(uri, l->store_url, n) == 0 && uri[n] == '/' ? uri + n + 1 : NULL;
}

/* GET key into *out (owned by the caller). 0, 1 not found, -1 with the
 * reason. */
static int obj_get(dsq_lake *l, const char *key, dsq_buf *out, char *err, size_t errlen)
{
    lop *o = op_new(l);
    if (o == NULL)
        return dsq_errf(err, errlen, "out of memory");
    o->req.op = DSQ_OBJ_GET;
    snprintf(o->req.key, sizeof o->req.key, "%s", key);
    if (run_req(l, o) != 0)
        return dsq_errf(err, errlen, "the lake is stopping");
    int rc = 0;
    if (o->req.status == DSQ_OBJ_NOT_FOUND)
        rc = 1;
    else if (o->req.status != DSQ_OBJ_OK)
        rc = dsq_errf(err, errlen, "cannot read %s from the object store: %s", key, o->req.msg);
    else {
        *out = o->req.data;
        o->req.data = (dsq_buf)DSQ_BUF_INIT;
    }
    op_free(o);
    return rc;
}

/* PUT p[0..n) at key (only if absent: 1 when an object has it). 0, 1, or
 * -1 with the reason. */
static int obj_put(dsq_lake *l, const char *key, const void *p, size_t n, bool if_absent, char *err, size_t errlen)
{
    lop *o = op_new(l);
    if (o == NULL)
        return dsq_errf(err, errlen, "out of memory");
    o->req.op = DSQ_OBJ_PUT;
    snprintf(o->req.key, sizeof o->req.key, "%s", key);
    if (dsq_buf_append(&o->own, p, n) != 0) {
        op_free(o);
        return dsq_errf(err, errlen, "out of memory");
    }
    o->req.body = o->own.data;
    o->req.body_len = n;
    o->req.if_absent = if_absent;
    if (run_req(l, o) != 0)
        return dsq_errf(err, errlen, "the lake is stopping");
    int rc = 0;
    if (o->req.status == DSQ_OBJ_EXISTS)
        rc = 1;
    else if (o->req.status != DSQ_OBJ_OK)
        rc = dsq_errf(err, errlen, "cannot write %s to the object store: %s", key, o->req.msg);
    op_free(o);
    return rc;
}

/* LIST prefix: the request, its items the keys (the caller frees it with
 * op_free). NULL with the reason. */
static lop *obj_list(dsq_lake *l, const char *prefix, char *err, size_t errlen)
{
    lop *o = op_new(l);
    if (o == NULL) {
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    o->req.op = DSQ_OBJ_LIST;
    snprintf(o->req.key, sizeof o->req.key, "%s", prefix);
    if (run_req(l, o) != 0) {
        dsq_errf(err, errlen, "the lake is stopping");
        return NULL;
    }
    if (o->req.status != DSQ_OBJ_OK) {
        dsq_errf(err, errlen, "cannot list %s in the object store: %s", prefix, o->req.msg);
        op_free(o);
        return NULL;
    }
    return o;
}

/* A random positive id of 53 bits: snapshot ids, which JSON readers that
 * hold numbers as doubles (JavaScript's) must read exactly. */
static int64_t random_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = dsq_wall_ms() ^ ((uint64_t)dsq_now_ms() << 20);
    v &= (1ULL << 53) - 1;
    return v == 0 ? 1 : (int64_t)v;
}

/* A UUID (version 4) as text. */
static void uuid4(char out[37])
{
    uint8_t b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        for (int i = 0; i < 2; i++) {
            int64_t r = random_id();
            memcpy(b + 8 * i, &r, 8);
        }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- a table's columns and their evolution ------------------------------------------------ */

static void table_free(ltable *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nfiles; i++) {
        if (t->files[i].cl != NULL) {
            char e[8];
            dsq_changelog_close(t->files[i].cl, &t->files[i].st, e, sizeof e);
        }
        dsq_pq_stats_free(&t->files[i].st);
        dsq_buf_free(t->files[i].bytes);
        free(t->files[i].bytes);
    }
    free(t->files);
    for (size_t i = 0; i < t->ncols; i++)
        free(t->cols[i].name);
    free(t->cols);
    free(t->lk);
    json_decref(t->md);
    json_decref(t->smd);
    free(t->src);
    free(t);
}

/* The changelog's view of the columns (after any change to them). */
static int table_view(ltable *t)
{
    dsq_lk_col *lk = realloc(t->lk, (t->ncols ? t->ncols : 1) * sizeof *lk);
    if (lk == NULL)
        return -1;
    t->lk = lk;
    for (size_t i = 0; i < t->ncols; i++)
        lk[i] = (dsq_lk_col){t->cols[i].name, t->cols[i].type, t->cols[i].id};
    t->lkt = (dsq_lk_table){.name = t->src, .cols = lk, .ncols = t->ncols, .unfit_id = UNFIT_ID};
    return 0;
}

static int add_col(ltable *t, const char *name, size_t len, dsq_lk_type type, int id)
{
    lcol *c = realloc(t->cols, (t->ncols + 1) * sizeof *c);
    if (c == NULL)
        return -1;
    t->cols = c;
    char *nm = strndup(name, len);
    if (nm == NULL)
        return -1;
    t->cols[t->ncols++] = (lcol){nm, type, id, true};
    return 0;
}

static lcol *col_named(ltable *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strlen(t->cols[i].name) == len && memcmp(t->cols[i].name, name, len) == 0)
            return &t->cols[i];
    return NULL;
}

static dsq_lk_type type_of_name(const char *t)
{
    return strcmp(t, "long") == 0     ? DSQ_LK_LONG
           : strcmp(t, "double") == 0 ? DSQ_LK_DOUBLE
           : strcmp(t, "string") == 0 ? DSQ_LK_STRING
                                      : DSQ_LK_BINARY;
}

/* The columns of table md's current schema (the source table's: ids from
 * FIRST_COL_ID; all taken for live until an event says otherwise). */
static int cols_from_md(ltable *t)
{
    json_t *schemas = json_object_get(t->md, "schemas"), *s, *cur = NULL;
    json_int_t id = json_integer_value(json_object_get(t->md, "current-schema-id"));
    size_t i;
    json_array_foreach(schemas, i, s) {
        if (json_integer_value(json_object_get(s, "schema-id")) == id)
            cur = s;
    }
    json_t *f;
    json_array_foreach(json_object_get(cur, "fields"), i, f) {
        int fid = (int)json_integer_value(json_object_get(f, "id"));
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *type = json_string_value(json_object_get(f, "type"));
        if (fid < FIRST_COL_ID || name == NULL || type == NULL)
            continue;
        if (add_col(t, name, strlen(name), type_of_name(type), fid) != 0)
            return -1;
    }
    return table_view(t);
}

/* Run query `sql` on database db as of commit lsn (as_of DSQ_AS_OF_LSN)
 * or now (DSQ_AS_OF_NONE): the call (its results[0]), or NULL with the
 * reason. */
static lop *query_at(dsq_lake *l, const char *db, const dsq_buf *sql, int as_of, uint64_t lsn, char *err,
                     size_t errlen)
{
    lop *o = op_new(l);
    if (o == NULL || sql->data == NULL || dsq_buf_append(&o->own, sql->data, sql->len) != 0) {
        if (o != NULL)
            op_free(o);
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    o->st = (dsq_stmt_req){.sql = o->own.data, .sql_len = o->own.len};
    o->call.op = DSQ_OP_QUERY;
    o->call.stmts = &o->st;
    o->call.nstmts = 1;
    o->call.scope = DSQ_SCOPE_R;
    o->call.as_of = as_of;
    o->call.as_of_lsn = lsn;
    if (run_call(l, o, db) != 0) {
        dsq_errf(err, errlen, "the lake is stopping");
        return NULL;
    }
    if (o->call.err != 0 || o->call.nresults != 1) {
        dsq_errf(err, errlen, "reading %s as of LSN %llu: %s", db, (unsigned long long)lsn, o->call.msg);
        op_free(o);
        return NULL;
    }
    return o;
}

/* Append a SQL string literal of s ('...', quotes doubled) to b. */
static void put_literal(dsq_buf *b, const char *s)
{
    dsq_buf_puts(b, "'");
    for (const char *p = s; *p; p++) {
        dsq_buf_append(b, p, 1);
        if (*p == '\'')
            dsq_buf_append(b, p, 1);
    }
    dsq_buf_puts(b, "'");
}

/* The declared types of table src's columns in database db as of commit
 * lsn (time travel), or now when the log no longer reaches back there:
 * name, type pairs appended to *out ("name\ttype\n" lines). 0 or -1. */
static int declared_types(dsq_lake *l, const char *db, const char *src, uint64_t lsn, dsq_buf *out, char *err,
                          size_t errlen)
{
    dsq_buf sql = DSQ_BUF_INIT;
    dsq_buf_puts(&sql, "SELECT name, type FROM pragma_table_xinfo(");
    put_literal(&sql, src);
    dsq_buf_puts(&sql, ")");
    lop *o = query_at(l, db, &sql, DSQ_AS_OF_LSN, lsn, err, errlen);
    if (o == NULL && !stopping(l))
        o = query_at(l, db, &sql, DSQ_AS_OF_NONE, 0, err, errlen);
    dsq_buf_free(&sql);
    if (o == NULL) {
        char why[300];
        snprintf(why, sizeof why, "%s", err);
        return dsq_errf(err, errlen, "cannot read the columns of %s.%s: %s", db, src, why);
    }
    const dsq_result *r = &o->call.results[0];
    size_t pos = 0;
    dsq_value v;
    for (int k = 0; dsq_result_next(r, &pos, &v); k++) {
        if (v.type == DSQ_V_TEXT)
            dsq_buf_append(out, v.p, v.n);
        dsq_buf_puts(out, k % 2 == 0 ? "\t" : "\n");
    }
    op_free(o);
    return 0;
}

/* The declared type of column name in `types` (declared_types' lines);
 * NULL: not there. */
static const char *type_in(const dsq_buf *types, const char *name, size_t len, char *out, size_t n)
{
    const char *p = types->data, *end = p + types->len;
    while (p != NULL && p < end) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        const char *nl = tab ? memchr(tab, '\n', (size_t)(end - tab)) : NULL;
        if (tab == NULL || nl == NULL)
            break;
        if ((size_t)(tab - p) == len && memcmp(p, name, len) == 0) {
            snprintf(out, n, "%.*s", (int)(nl - tab - 1), tab + 1);
            return out;
        }
        p = nl + 1;
    }
    return NULL;
}

/* The table's columns made to match event ev's (in a chunk where the
 * source table's columns changed, or the first event of a table new to
 * the lake): a name the lake has is that column; a new name where a
 * column the lake has is gone, at the same place, is that column renamed
 * (SQLite's RENAME COLUMN keeps places); other new names are new columns
 * (types declared as of the event's commit); columns gone stay in the
 * lake's schema, no longer filled. */
static int evolve(dsq_lake *l, const char *db, ltable *t, const dsq_cdc_event *ev, uint64_t lsn, int64_t now_ms,
                  char *err, size_t errlen)
{
    dsq_buf types = DSQ_BUF_INIT;
    bool have_types = false;
    int rc = 0;
    /* The live columns in order, as the lake knows them. */
    size_t nlive = 0;
    for (size_t i = 0; i < t->ncols; i++)
        nlive += t->cols[i].live;
    lcol **live = calloc(nlive + 1, sizeof *live);
    bool *seen = calloc(t->ncols + 1, sizeof *seen);
    if (live == NULL || seen == NULL) {
        free(live);
        free(seen);
        return dsq_errf(err, errlen, "out of memory");
    }
    for (size_t i = 0, k = 0; i < t->ncols; i++)
        if (t->cols[i].live)
            live[k++] = &t->cols[i];
    for (uint16_t i = 0; i < ev->ncols && rc == 0; i++) {
        const char *name = ev->cols[i].name;
        size_t len = ev->cols[i].len;
        lcol *c = col_named(t, name, len);
        if (c != NULL && c->live) {
            seen[c - t->cols] = true;
            continue;
        }
        /* A rename: the live column at this place is not among the event's. */
        lcol *old = i < nlive ? live[i] : NULL;
        bool old_gone = old != NULL;
        for (uint16_t k = 0; old_gone && k < ev->ncols; k++)
            if (strlen(old->name) == ev->cols[k].len && memcmp(old->name, ev->cols[k].name, ev->cols[k].len) == 0)
                old_gone = false;
        if (c != NULL) {
            /* The name of a column dropped earlier: that one is renamed out
             * of the way ("NAME_dropped_ID"), the name is a new column's. */
            char moved[300];
            snprintf(moved, sizeof moved, "%s_dropped_%d", c->name, c->id);
            if (dsq_ice_table_rename_column(t->md, c->id, moved, now_ms, err, errlen) != 0) {
                rc = -1;
                break;
            }
            char *nm = strdup(moved);
            if (nm == NULL) {
                rc = dsq_errf(err, errlen, "out of memory");
                break;
            }
            free(c->name);
            c->name = nm;
            t->md_changed = true;
        }
        if (old_gone && old->live && !seen[old - t->cols]) {
            char *nm = strndup(name, len);
            if (nm == NULL || dsq_ice_table_rename_column(t->md, old->id, nm, now_ms, err, errlen) != 0) {
                free(nm);
                rc = nm == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
                break;
            }
            DSQ_INFO("lake_column_renamed", "db=%s table=%s from=%s to=%s", db, t->src, dsq_log_q(old->name),
                     dsq_log_q(nm));
            free(old->name);
            old->name = nm;
            seen[old - t->cols] = true;
            t->md_changed = true;
            continue;
        }
        if (!have_types) {
            if (declared_types(l, db, t->src, lsn, &types, err, errlen) != 0) {
                rc = -1;
                break;
            }
            have_types = true;
        }
        char decl[200];
        const char *d = type_in(&types, name, len, decl, sizeof decl);
        dsq_lk_type ty = dsq_lk_type_of(d);
        char *nm = strndup(name, len);
        int id = 0;
        if (nm == NULL || dsq_ice_table_add_column(t->md, nm, dsq_lk_type_name(ty), now_ms, &id, err, errlen) != 0) {
            rc = nm == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
            free(nm);
            break;
        }
        /* (add_col may move t->cols: live[] and old are not used after) */
        size_t at = t->ncols;
        if (add_col(t, nm, strlen(nm), ty, id) != 0) {
            free(nm);
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        free(nm);
        bool *grown = realloc(seen, (t->ncols + 1) * sizeof *grown);
        if (grown == NULL) {
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        seen = grown;
        seen[at] = true;
        /* live[] points into the old array: rebuild it */
        for (size_t q = 0, k = 0; q < t->ncols && k < nlive; q++)
            if (t->cols[q].live && q != at)
                live[k++] = &t->cols[q];
        t->md_changed = true;
        DSQ_INFO("lake_column_added", "db=%s table=%s column=%s type=%s", db, t->src, dsq_log_q(t->cols[at].name),
                 dsq_lk_type_name(ty));
    }
    if (rc == 0)
        for (size_t i = 0; i < t->ncols; i++)
            t->cols[i].live = seen[i];
    free(live);
    free(seen);
    dsq_buf_free(&types);
    if (rc == 0 && table_view(t) != 0)
        rc = dsq_errf(err, errlen, "out of memory");
    return rc;
}

/* Whether ev's columns are the table's live columns, in order. */
static bool same_cols(const ltable *t, const dsq_cdc_event *ev)
{
    size_t k = 0;
    for (size_t i = 0; i < t->ncols; i++) {
        if (!t->cols[i].live)
            continue;
        if (k >= ev->ncols || strlen(t->cols[i].name) != ev->cols[k].len ||
            memcmp(t->cols[i].name, ev->cols[k].name, ev->cols[k].len) != 0)
            return false;
        k++;
    }
    return k == ev->ncols;
}

/* ---- a chunk of commits into files ------------------------------------------------------------ */

static int buf_sink(void *ctx, const void *p, size_t n) { return dsq_buf_append(ctx, p, n); }

/* Finish file f (its Parquet bytes complete, its statistics kept). */
static int file_finish(lfile *f, char *err, size_t errlen)
{
    if (f->cl == NULL)
        return 0;
    int rc = dsq_changelog_close(f->cl, &f->st, err, errlen);
    f->cl = NULL;
    return rc;
}

/* Finish every open file of t; the commit being written, if any, goes on
 * numbering in the files opened after. */
static int files_finish(ltable *t, uint64_t *seq_lsn, int64_t *seq, char *err, size_t errlen)
{
    *seq_lsn = UINT64_MAX;
    *seq = 0;
    for (size_t i = 0; i < t->nfiles; i++) {
        if (t->files[i].cl == NULL)
            continue;
        uint64_t sl;
        int64_t sq;
        dsq_changelog_next_seq(t->files[i].cl, &sl, &sq);
        if (sl != UINT64_MAX && (*seq_lsn == UINT64_MAX || sl > *seq_lsn || (sl == *seq_lsn && sq > *seq))) {
            *seq_lsn = sl;
            *seq = sq;
        }
        if (file_finish(&t->files[i], err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* The open file of t for partition day, opened if need be. */
static lfile *file_for(dsq_lake *l, const char *db, ltable *t, int64_t day, char *err, size_t errlen)
{
    for (size_t i = 0; i < t->nfiles; i++)
        if (t->files[i].cl != NULL && t->files[i].day == day)
            return &t->files[i];
    lfile *grown = realloc(t->files, (t->nfiles + 1) * sizeof *grown);
    if (grown == NULL) {
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    t->files = grown;
    lfile *f = &t->files[t->nfiles];
    memset(f, 0, sizeof *f);
    f->day = day;
    f->first_lsn = UINT64_MAX;
    if ((f->bytes = calloc(1, sizeof *f->bytes)) == NULL) {
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    dsq_pq_options o;
    dsq_pq_options_init(&o);
    if (o.row_group_bytes > l->cfg.file_target_size)
        o.row_group_bytes = l->cfg.file_target_size;
    f->cl = dsq_changelog_open(&t->lkt, db, &o, buf_sink, f->bytes, err, errlen);
    if (f->cl == NULL) {
        free(f->bytes);
        return NULL;
    }
    t->nfiles++;
    return f;
}

/* About the bytes ev adds to a file. */
static uint64_t raw_size(const dsq_cdc_event *ev)
{
    uint64_t n = 64;
    const dsq_cdc_value *v = ev->after ? ev->after : ev->before;
    for (uint16_t i = 0; v != NULL && i < ev->ncols; i++)
        n += v[i].type == SQLITE_TEXT || v[i].type == SQLITE_BLOB ? v[i].n + 4u : 8u;
    return n;
}

/* ---- a table's commit -------------------------------------------------------------------------- */

/* The current schema and default partition spec of md, as JSON text. */
static json_t *current_of(json_t *md, const char *list, const char *id_key, const char *cur_key)
{
    json_int_t id = json_integer_value(json_object_get(md, cur_key));
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(md, list), i, s) {
        if (json_integer_value(json_object_get(s, id_key)) == id)
            return s;
    }
    return NULL;
}

static void day_text(int64_t day, char *out, size_t n)
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d", &tm);
}

static const char *summary_get(json_t *md, const char *key)
{
    json_t *cur = json_object_get(md, "current-snapshot-id");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(md, "snapshots"), i, s) {
        if (json_equal(json_object_get(s, "snapshot-id"), cur))
            return json_string_value(json_object_get(json_object_get(s, "summary"), key));
    }
    return NULL;
}

static uint64_t summary_num(json_t *md, const char *key)
{
    const char *v = summary_get(md, key);
    return v ? strtoull(v, NULL, 10) : 0;
}

/* The commit of a table's next version: `next` (made from version
 * `version` of table `key`, last updated at last_ms) notes the file it
 * replaces and is written as v(version+1) only if no object has that
 * name. 0, 1 (another writer's has it), or -1 with the reason. With
 * `cut`, the failpoints around the put apply (a snapshot's commit). */
static int put_version(dsq_lake *l, const char *key, json_t *next, int version, json_int_t last_ms, bool cut,
                       char *err, size_t errlen)
{
    char k[DSQ_OBJ_KEY_MAX + 1], prev[2048];
    snprintf(k, sizeof k, "%s/metadata/v%d.metadata.json", key, version);
    uri_of(l, k, prev, sizeof prev);
    if (version > 0 && dsq_ice_table_log_previous(next, prev, last_ms) != 0)
        return dsq_errf(err, errlen, "out of memory");
    char *text = json_dumps(next, JSON_COMPACT);
    if (text == NULL)
        return dsq_errf(err, errlen, "out of memory");
    snprintf(k, sizeof k, "%s/metadata/v%d.metadata.json", key, version + 1);
    if (cut)
        failpoint(l, "before-commit");
    int rc = obj_put(l, k, text, strlen(text), true, err, errlen);
    free(text);
    if (rc == 0 && cut)
        failpoint(l, "after-commit");
    return rc;
}

/* What a commit makes: the next version of table `key`, with `files`. */
typedef struct ltarget {
    char key[400];
    json_t *md;                /* in: the current metadata; out: the committed one */
    int version;               /* its N */
    lfile *files;              /* (freed by the commit, whatever it returns) */
    size_t nfiles;
    const dsq_lk_table *lkt;
    bool state;                /* a current-state table: the files replace the last snapshot's */
    const char *what;          /* the source table (for the log) */
} ltarget;

/* Commit x's files, which hold the database's changes up to `upto`: 0;
 * 1 when another writer committed that version first; -1 with the
 * reason. */
static int commit_target(dsq_lake *l, const char *db, ltarget *x, uint64_t upto, char *err, size_t errlen)
{
    int64_t now_ms = (int64_t)dsq_wall_ms();
    json_int_t last = json_integer_value(json_object_get(x->md, "last-updated-ms"));
    if (now_ms <= last)
        now_ms = last + 1; /* (the clock went back: the metadata's times must not) */
    json_t *schema = current_of(x->md, "schemas", "schema-id", "current-schema-id");
    json_t *spec = current_of(x->md, "partition-specs", "spec-id", "default-spec-id");
    char *schema_json = json_dumps(schema, JSON_COMPACT);
    char *spec_json = json_dumps(json_object_get(spec, "fields"), JSON_COMPACT);
    int spec_id = (int)json_integer_value(json_object_get(spec, "spec-id"));
    int schema_id = (int)json_integer_value(json_object_get(schema, "schema-id"));
    dsq_ice_pfield pf[2];
    size_t npf = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(spec, "fields"), i, f) {
        if (npf == 2)
            break;
        pf[npf].name = json_string_value(json_object_get(f, "name"));
        pf[npf].field_id = (int)json_integer_value(json_object_get(f, "field-id"));
        pf[npf].type = strcmp(json_string_value(json_object_get(f, "transform")), "day") == 0 ? DSQ_ICE_P_DATE
                                                                                              : DSQ_ICE_P_STRING;
        npf++;
    }
    int64_t sid = random_id();
    int64_t seq = json_integer_value(json_object_get(x->md, "last-sequence-number")) + 1;
    char uuid[37], key[DSQ_OBJ_KEY_MAX + 1], uri[2048];
    int rc = 0;
    dsq_manifest *m = NULL;
    dsq_buf mbytes = DSQ_BUF_INIT, lbytes = DSQ_BUF_INIT, prev = DSQ_BUF_INIT;
    dsq_ice_mlist old = {0};
    dsq_ice_mfile *all = NULL;
    json_t *next = NULL;
    uint64_t added_rows = 0, added_bytes = 0;
    if (schema_json == NULL || spec_json == NULL) {
        rc = dsq_errf(err, errlen, "out of memory");
        goto out;
    }
    if (x->nfiles > 0) {
        m = dsq_manifest_new(schema_json, schema_id, spec_json, spec_id, pf, npf, 0, err, errlen);
        if (m == NULL) {
            rc = -1;
            goto out;
        }
    }
    /* The data files: uploaded, then listed in the manifest. */
    failpoint(l, "before-upload");
    for (size_t k = 0; k < x->nfiles && rc == 0; k++) {
        lfile *fl = &x->files[k];
        char part[200] = "", day[32];
        dsq_ice_pvalue pv[2];
        for (size_t q = 0; q < npf; q++) {
            size_t pl = strlen(part);
            if (pf[q].type == DSQ_ICE_P_DATE) {
                day_text(fl->day, day, sizeof day);
                snprintf(part + pl, sizeof part - pl, "%s=%s/", pf[q].name, day);
                pv[q] = (dsq_ice_pvalue){.i = fl->day};
            } else {
                snprintf(part + pl, sizeof part - pl, "%s=%s/", pf[q].name, db);
                pv[q] = (dsq_ice_pvalue){.s = db};
            }
        }
        uuid4(uuid);
        snprintf(key, sizeof key, "%s/data/%s%020llu-%s.parquet", x->key, part, (unsigned long long)fl->first_lsn,
                 uuid);
        if ((rc = obj_put(l, key, fl->bytes->data, fl->bytes->len, true, err, errlen)) != 0) {
            if (rc == 1)
                rc = dsq_errf(err, errlen, "%s exists already", key);
            break;
        }
        uri_of(l, key, uri, sizeof uri);
        json_t *fields = x->state ? dsq_lk_state_fields(x->lkt) : dsq_lk_fields(x->lkt);
        size_t nc = fl->st.ncols;
        dsq_ice_colstats *cs = calloc(nc ? nc : 1, sizeof *cs);
        int64_t *splits = calloc(fl->st.nrow_groups ? fl->st.nrow_groups : 1, sizeof *splits);
        if (fields == NULL || cs == NULL || splits == NULL) {
            json_decref(fields);
            free(cs);
            free(splits);
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        for (size_t c = 0; c < nc; c++) {
            const dsq_pq_col_stats *ps = &fl->st.cols[c];
            cs[c] = (dsq_ice_colstats){
                .field_id = (int)json_integer_value(json_object_get(json_array_get(fields, c), "id")),
                .size = (int64_t)ps->compressed_bytes,
                .values = (int64_t)ps->values,
                .nulls = (int64_t)ps->nulls,
                .nans = -1,
            };
            const char *ty = json_string_value(json_object_get(json_array_get(fields, c), "type"));
            if (ty != NULL && strcmp(ty, "double") == 0)
                cs[c].nans = (int64_t)ps->nans;
            if (ps->has_minmax) {
                cs[c].lower = ps->min.data;
                cs[c].lower_len = ps->min.len;
                cs[c].upper = ps->max.data;
                cs[c].upper_len = ps->max.len;
            }
        }
        for (size_t g = 0; g < fl->st.nrow_groups; g++)
            splits[g] = (int64_t)fl->st.row_group_offsets[g];
        dsq_ice_entry e = {.status = DSQ_ICE_ADDED, .snapshot_id = -1, .sequence_number = -1,
                           .file_sequence_number = -1,
                           .file = {.content = 0, .path = uri, .format = "parquet", .partition = pv,
                                    .record_count = (int64_t)fl->st.rows, .file_size = (int64_t)fl->bytes->len,
                                    .cols = cs, .ncols = nc, .split_offsets = splits, .nsplits = fl->st.nrow_groups,
                                    .sort_order_id = 0}};
        rc = dsq_manifest_add(m, &e, err, errlen);
        added_rows += fl->st.rows;
        added_bytes += fl->bytes->len;
        json_decref(fields);
        free(cs);
        free(splits);
    }
    if (rc != 0)
        goto out;
    /* The manifest list: this snapshot's manifest, then the earlier ones. */
    const char *prev_list = NULL;
    json_t *cur_id = json_object_get(x->md, "current-snapshot-id");
    size_t j;
    json_t *s;
    json_array_foreach(json_object_get(x->md, "snapshots"), j, s) {
        if (json_equal(json_object_get(s, "snapshot-id"), cur_id))
            prev_list = json_string_value(json_object_get(s, "manifest-list"));
    }
    if (prev_list != NULL && !x->state) { /* (a current-state snapshot replaces the files) */
        const char *pk = key_of(l, prev_list);
        if (pk == NULL) {
            rc = dsq_errf(err, errlen, "the manifest list %s is not in this object store", prev_list);
            goto out;
        }
        int g = obj_get(l, pk, &prev, err, errlen);
        if (g != 0 || dsq_manifest_list_read(prev.data, prev.len, &old, err, errlen) != 0) {
            if (g == 1)
                dsq_errf(err, errlen, "the manifest list %s is missing", prev_list);
            rc = -1;
            goto out;
        }
    }
    all = calloc(old.n + 1, sizeof *all);
    if (all == NULL) {
        rc = dsq_errf(err, errlen, "out of memory");
        goto out;
    }
    size_t nall = 0;
    char muri[2048];
    if (m != NULL) {
        dsq_ice_mfile mf;
        if (dsq_manifest_finish(m, &mbytes, &mf) != 0) {
            rc = dsq_errf(err, errlen, "out of memory");
            goto out;
        }
        uuid4(uuid);
        snprintf(key, sizeof key, "%s/metadata/%s-m0.avro", x->key, uuid);
        if ((rc = obj_put(l, key, mbytes.data, mbytes.len, true, err, errlen)) != 0) {
            if (rc == 1)
                rc = dsq_errf(err, errlen, "%s exists already", key);
            goto out;
        }
        uri_of(l, key, muri, sizeof muri);
        mf.path = muri;
        mf.length = (int64_t)mbytes.len;
        mf.sequence_number = seq;
        mf.min_sequence_number = seq;
        mf.added_snapshot_id = sid;
        all[nall++] = mf;
    }
    for (size_t k = 0; k < old.n; k++)
        all[nall++] = old.files[k];
    uuid4(uuid);
    snprintf(key, sizeof key, "%s/metadata/snap-%lld-1-%s.avro", x->key, (long long)sid, uuid);
    int64_t parent = json_is_integer(cur_id) && json_integer_value(cur_id) > 0 ? json_integer_value(cur_id) : -1;
    if (dsq_manifest_list(all, nall, sid, parent, seq, &lbytes, err, errlen) != 0) {
        rc = -1;
        goto out;
    }
    if ((rc = obj_put(l, key, lbytes.data, lbytes.len, true, err, errlen)) != 0) {
        if (rc == 1)
            rc = dsq_errf(err, errlen, "%s exists already", key);
        goto out;
    }
    char luri[2048];
    uri_of(l, key, luri, sizeof luri);
    /* The next metadata: the snapshot appended, the version it replaces
     * noted; written only if no other writer made that version. */
    next = json_deep_copy(x->md);
    char upto_s[24], rows_s[24], files_s[24], bytes_s[24], trows[24], tfiles[24], tbytes[24];
    snprintf(upto_s, sizeof upto_s, "%llu", (unsigned long long)upto);
    snprintf(rows_s, sizeof rows_s, "%llu", (unsigned long long)added_rows);
    snprintf(files_s, sizeof files_s, "%zu", x->nfiles);
    snprintf(bytes_s, sizeof bytes_s, "%llu", (unsigned long long)added_bytes);
    uint64_t keep = x->state ? 0 : 1; /* (a current-state snapshot keeps none of the last one's files) */
    snprintf(trows, sizeof trows, "%llu",
             (unsigned long long)(keep * summary_num(x->md, "total-records") + added_rows));
    snprintf(tfiles, sizeof tfiles, "%llu",
             (unsigned long long)(keep * summary_num(x->md, "total-data-files") + x->nfiles));
    snprintf(tbytes, sizeof tbytes, "%llu",
             (unsigned long long)(keep * summary_num(x->md, "total-files-size") + added_bytes));
    const char *const sum[] = {"operation", x->state ? "overwrite" : "append", "dosqld.lsn", upto_s, "dosqld.database", db, "added-data-files", files_s,
                               "added-records", rows_s, "added-files-size", bytes_s, "total-records", trows,
                               "total-data-files", tfiles, "total-files-size", tbytes, "total-delete-files", "0",
                               "total-position-deletes", "0", "total-equality-deletes", "0", NULL};
    if (next == NULL || dsq_ice_table_append(next, sid, luri, now_ms, sum, err, errlen) != 0) {
        rc = next == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
        goto out;
    }
    if ((rc = put_version(l, x->key, next, x->version, last, true, err, errlen)) != 0)
        goto out;
    /* Committed. The version hint is for readers that open a table by
     * its directory (it may lag; the highest vN is the truth). */
    x->version++;
    json_decref(x->md);
    x->md = next;
    next = NULL;
    char hint[24];
    int hn = snprintf(hint, sizeof hint, "%d", x->version);
    snprintf(key, sizeof key, "%s/metadata/version-hint.text", x->key);
    char e2[300];
    obj_put(l, key, hint, (size_t)hn, false, e2, sizeof e2);
    pthread_mutex_lock(&l->mu);
    l->stats.commits++;
    l->stats.files += x->nfiles;
    l->stats.rows += added_rows;
    l->stats.bytes += added_bytes;
    pthread_mutex_unlock(&l->mu);
    DSQ_INFO("lake_commit", "db=%s table=%s%s version=%d lsn=%llu files=%zu rows=%llu", db, x->what,
             x->state ? "" : "_changelog", x->version,
             (unsigned long long)upto, x->nfiles, (unsigned long long)added_rows);
out:
    json_decref(next);
    free(all);
    dsq_ice_mlist_free(&old);
    dsq_manifest_free(m);
    dsq_buf_free(&mbytes);
    dsq_buf_free(&lbytes);
    dsq_buf_free(&prev);
    free(schema_json);
    free(spec_json);
    /* This chunk's files are gone either way: committed, or to be made
     * again from the log. */
    for (size_t k = 0; k < x->nfiles; k++) {
        dsq_pq_stats_free(&x->files[k].st);
        dsq_buf_free(x->files[k].bytes);
        free(x->files[k].bytes);
    }
    free(x->files);
    x->files = NULL;
    x->nfiles = 0;
    return rc;
}

/* Commit t's changelog files of this chunk, which took the database's
 * changes up to `upto`: as commit_target. */
static int table_commit(dsq_lake *l, const char *db, ltable *t, uint64_t upto, char *err, size_t errlen)
{
    uint64_t sl;
    int64_t sq;
    if (files_finish(t, &sl, &sq, err, errlen) != 0)
        return -1;
    if (t->nfiles == 0 && !t->md_changed)
        return 0;
    ltarget x = {.md = t->md, .version = t->version, .files = t->files, .nfiles = t->nfiles, .lkt = &t->lkt,
                 .what = t->src};
    snprintf(x.key, sizeof x.key, "%s", t->key);
    t->files = NULL;
    t->nfiles = 0;
    int rc = commit_target(l, db, &x, upto, err, errlen);
    t->md = x.md;
    t->version = x.version;
    if (rc == 0) {
        t->pos = upto;
        t->md_changed = false;
    }
    return rc;
}

/* ---- a database's state and its rounds ---------------------------------------------------------- */

static void db_forget(ldb *d)
{
    for (size_t i = 0; i < d->ntables; i++)
        table_free(d->tables[i]);
    free(d->tables);
    d->tables = NULL;
    d->ntables = 0;
    d->loaded = false;
}

static ltable *table_find(ldb *d, const char *name, size_t len)
{
    for (size_t i = 0; i < d->ntables; i++)
        if (strlen(d->tables[i]->src) == len && memcmp(d->tables[i]->src, name, len) == 0)
            return d->tables[i];
    return NULL;
}

static ltable *table_add(ldb *d, const char *name, size_t len)
{
    ltable **grown = realloc(d->tables, (d->ntables + 1) * sizeof *grown);
    ltable *t = calloc(1, sizeof *t);
    if (grown == NULL || t == NULL || (t->src = strndup(name, len)) == NULL) {
        free(t);
        if (grown != NULL)
            d->tables = grown;
        return NULL;
    }
    d->tables = grown;
    d->tables[d->ntables++] = t;
    snprintf(t->key, sizeof t->key, "lake/%s/%s_changelog", d->name, t->src);
    return t;
}

/* The source keeps its log after the lake's position. */
static void hold_log(dsq_lake *l, ldb *d)
{
    if (l->cfg.hold != NULL && l->cfg.hold(l->cfg.hold_ud, d->name, d->floor) != 0)
        DSQ_WARN("lake_hold_failed", "db=%s reason=%s", d->name, dsq_log_q("out of memory"));
}

static void seen_free(ldb *d)
{
    for (size_t i = 0; i < d->nseen; i++)
        free(d->seen[i].name);
    free(d->seen);
    d->seen = NULL;
    d->nseen = 0;
}

/* Key k (after lake/DB/) of a current-state table's metadata, NAME/
 * metadata/vN.metadata.json with NAME not a changelog's: noted. 0, or
 * -1 out of memory. */
static int state_version_seen(ldb *d, const char *k)
{
    const char *slash = strchr(k, '/');
    int v = 0;
    char tail[32];
    size_t n = slash ? (size_t)(slash - k) : 0;
    if (slash == NULL || strncmp(slash, "/metadata/v", 11) != 0 || sscanf(slash + 11, "%d%31s", &v, tail) != 2 ||
        strcmp(tail, ".metadata.json") != 0 || v <= 0 || (n >= 10 && memcmp(slash - 10, "_changelog", 10) == 0))
        return 0;
    for (size_t i = 0; i < d->nseen; i++)
        if (strlen(d->seen[i].name) == n && memcmp(d->seen[i].name, k, n) == 0) {
            if (v > d->seen[i].version)
                d->seen[i].version = v;
            return 0;
        }
    void *grown = realloc(d->seen, (d->nseen + 1) * sizeof *d->seen);
    if (grown == NULL)
        return -1;
    d->seen = grown;
    if ((d->seen[d->nseen].name = strndup(k, n)) == NULL)
        return -1;
    d->seen[d->nseen++].version = v;
    return 0;
}

/* What the lake holds of database d: its position and its tables'. */
static int db_load(dsq_lake *l, ldb *d, char *err, size_t errlen)
{
    db_forget(d);
    char key[DSQ_OBJ_KEY_MAX + 1];
    dsq_buf b = DSQ_BUF_INIT;
    snprintf(key, sizeof key, "lake/%s/namespace.json", d->name);
    int rc = obj_get(l, key, &b, err, errlen);
    if (rc < 0)
        return -1;
    d->known = rc == 0;
    d->floor = 0;
    if (rc == 0) {
        json_t *ns = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
        const char *v = json_string_value(json_object_get(json_object_get(ns, "properties"), "dosqld.lsn"));
        if (v == NULL) {
            json_decref(ns);
            dsq_buf_free(&b);
            return dsq_errf(err, errlen, "%s has no position (properties.dosqld.lsn)", key);
        }
        d->floor = strtoull(v, NULL, 10);
        json_decref(ns);
    }
    dsq_buf_free(&b);
    /* Its tables: the highest vN.metadata.json of each. */
    snprintf(key, sizeof key, "lake/%s/", d->name);
    lop *o = obj_list(l, key, err, errlen);
    if (o == NULL)
        return -1;
    size_t plen = strlen(key);
    rc = 0;
    for (size_t i = 0; i < o->req.nitems && rc == 0; i++) {
        const char *k = o->req.items[i].key + plen;
        if (state_version_seen(d, k) != 0) {
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        const char *slash = strstr(k, "_changelog/metadata/v");
        int v = 0;
        char tail[32];
        if (slash == NULL || strchr(k, '/') != slash + strlen("_changelog") ||
            sscanf(slash + strlen("_changelog/metadata/v"), "%d%31s", &v, tail) != 2 ||
            strcmp(tail, ".metadata.json") != 0 || v <= 0)
            continue;
        ltable *t = table_find(d, k, (size_t)(slash - k));
        if (t == NULL && (t = table_add(d, k, (size_t)(slash - k))) == NULL)
            rc = dsq_errf(err, errlen, "out of memory");
        else if (v > t->version)
            t->version = v;
    }
    op_free(o);
    for (size_t i = 0; i < d->ntables && rc == 0; i++) {
        ltable *t = d->tables[i];
        snprintf(key, sizeof key, "%s/metadata/v%d.metadata.json", t->key, t->version);
        if ((rc = obj_get(l, key, &b, err, errlen)) != 0) {
            if (rc == 1)
                rc = dsq_errf(err, errlen, "%s went away", key);
            break;
        }
        json_error_t je;
        t->md = json_loadb(b.data ? b.data : "", b.len, 0, &je);
        dsq_buf_free(&b);
        if (t->md == NULL) {
            rc = dsq_errf(err, errlen, "%s: %s", key, je.text);
            break;
        }
        t->pos = summary_num(t->md, "dosqld.lsn");
        if (cols_from_md(t) != 0)
            rc = dsq_errf(err, errlen, "out of memory");
        /* its current-state table, if made */
        for (size_t k = 0; rc == 0 && k < d->nseen; k++) {
            if (strcmp(d->seen[k].name, t->src) != 0)
                continue;
            t->sversion = d->seen[k].version;
            snprintf(key, sizeof key, "lake/%s/%s/metadata/v%d.metadata.json", d->name, t->src, t->sversion);
            if ((rc = obj_get(l, key, &b, err, errlen)) != 0) {
                if (rc == 1)
                    rc = dsq_errf(err, errlen, "%s went away", key);
                break;
            }
            t->smd = json_loadb(b.data ? b.data : "", b.len, 0, &je);
            dsq_buf_free(&b);
            if (t->smd == NULL)
                rc = dsq_errf(err, errlen, "%s: %s", key, je.text);
            else
                t->spos = summary_num(t->smd, "dosqld.lsn");
        }
    }
    seen_free(d);
    if (rc != 0) {
        seen_free(d);
        db_forget(d);
        return -1;
    }
    d->loaded = true;
    hold_log(l, d);
    return 0;
}

/* A new lake table for source table t, first seen in event ev. */
static int table_make(dsq_lake *l, ldb *d, ltable *t, const dsq_cdc_event *ev, uint64_t lsn, char *err,
                      size_t errlen)
{
    int64_t now_ms = (int64_t)dsq_wall_ms();
    dsq_lk_table empty = {.name = t->src, .unfit_id = UNFIT_ID};
    json_t *fields = dsq_lk_fields(&empty);
    json_t *spec = json_array();
    json_t *props = json_pack("{s:s, s:s, s:s}", "dosqld.source-database", d->name, "dosqld.source-table", t->src,
                              "write.format.default", "parquet");
    /* The spec: the first table_partitioning line whose glob matches
     * DB.TABLE, else partitioning's. */
    bool by_day = l->cfg.part_day, by_db = l->cfg.part_database;
    char full[300];
    snprintf(full, sizeof full, "%s.%s", d->name, t->src);
    for (size_t i = 0; i < l->cfg.ntable_parts; i++) {
        char *sp = strchr(l->table_parts[i], ' ');
        if (sp == NULL)
            continue;
        *sp = '\0';
        bool match = fnmatch(l->table_parts[i], full, 0) == 0;
        *sp = ' ';
        if (match) {
            by_day = strstr(sp + 1, "day") != NULL;
            by_db = strstr(sp + 1, "database") != NULL;
            break;
        }
    }
    int fid = 1000;
    if (by_day)
        json_array_append_new(spec, json_pack("{s:s, s:s, s:i, s:i}", "name", "_commit_ts_day", "transform", "day",
                                              "source-id", DSQ_LK_ID_COMMIT_TS, "field-id", fid++));
    if (by_db)
        json_array_append_new(spec, json_pack("{s:s, s:s, s:i, s:i}", "name", "_database", "transform", "identity",
                                              "source-id", DSQ_LK_ID_DATABASE, "field-id", fid++));
    char uuid[37], loc[2048];
    uuid4(uuid);
    uri_of(l, t->key, loc, sizeof loc);
    json_t *md = fields && spec && props ? dsq_ice_table_new(uuid, loc, fields, spec, props, now_ms, err, errlen)
                                         : NULL;
    if (md == NULL && (fields == NULL || spec == NULL || props == NULL))
        dsq_errf(err, errlen, "out of memory");
    json_decref(fields);
    json_decref(spec);
    json_decref(props);
    if (md == NULL)
        return -1;
    t->md = md;
    t->md_changed = true;
    if (table_view(t) != 0)
        return dsq_errf(err, errlen, "out of memory");
    return evolve(l, d->name, t, ev, lsn, now_ms, err, errlen);
}

/* One row event of commit lsn into its table's files. */
static int take_event(dsq_lake *l, ldb *d, const dsq_cdc_event *ev, uint64_t lsn, int64_t ts_us, char *err,
                      size_t errlen)
{
    ltable *t = table_find(d, ev->table, ev->table_len);
    if (t == NULL) {
        if ((t = table_add(d, ev->table, ev->table_len)) == NULL)
            return dsq_errf(err, errlen, "out of memory");
    }
    if (lsn <= t->pos)
        return 0; /* the table has it: committed before a crash cut the round */
    if (t->md == NULL) {
        if (table_make(l, d, t, ev, lsn, err, errlen) != 0)
            return -1;
    } else if (!same_cols(t, ev)) {
        uint64_t sl;
        int64_t sq;
        if (files_finish(t, &sl, &sq, err, errlen) != 0 ||
            evolve(l, d->name, t, ev, lsn, (int64_t)dsq_wall_ms(), err, errlen) != 0)
            return -1;
        int64_t day = l->cfg.part_day ? ts_us / 86400000000LL : 0;
        lfile *f = file_for(l, d->name, t, day, err, errlen);
        if (f == NULL)
            return -1;
        if (sl == lsn)
            dsq_changelog_continue(f->cl, sl, sq);
    }
    int64_t day = l->cfg.part_day ? (ts_us >= 0 ? ts_us / 86400000000LL : (ts_us + 1) / 86400000000LL - 1) : 0;
    lfile *f = file_for(l, d->name, t, day, err, errlen);
    if (f == NULL)
        return -1;
    if (dsq_changelog_add(f->cl, ev, lsn, ts_us, err, errlen) != 0)
        return -1;
    if (f->first_lsn == UINT64_MAX)
        f->first_lsn = lsn;
    f->last_lsn = lsn;
    f->raw += raw_size(ev);
    return 0;
}

/* Files past the target size are finished at a commit's end (a commit's
 * rows stay in one file, but for a schema change in its middle). */
static int roll_files(dsq_lake *l, ldb *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->ntables; i++)
        for (size_t k = 0; k < d->tables[i]->nfiles; k++) {
            lfile *f = &d->tables[i]->files[k];
            if (f->cl != NULL && f->raw >= l->cfg.file_target_size && file_finish(f, err, errlen) != 0)
                return -1;
        }
    return 0;
}

/* Write namespace.json: the database's position. */
static int put_floor(dsq_lake *l, ldb *d, uint64_t floor, char *err, size_t errlen)
{
    char key[DSQ_OBJ_KEY_MAX + 1], lsn[24];
    snprintf(lsn, sizeof lsn, "%llu", (unsigned long long)floor);
    json_t *ns = json_pack("{s:{s:s, s:s}}", "properties", "dosqld.lsn", lsn, "dosqld.source-database", d->name);
    char *text = ns ? json_dumps(ns, JSON_COMPACT) : NULL;
    json_decref(ns);
    if (text == NULL)
        return dsq_errf(err, errlen, "out of memory");
    snprintf(key, sizeof key, "lake/%s/namespace.json", d->name);
    int rc = obj_put(l, key, text, strlen(text), false, err, errlen);
    free(text);
    if (rc == 0) {
        d->floor = floor;
        d->known = true;
        hold_log(l, d);
    }
    return rc;
}

/* One chunk of database d: 1 more is waiting, 0 caught up, -1 failed. */
static int db_step(dsq_lake *l, ldb *d, char *err, size_t errlen)
{
    if (!d->loaded && db_load(l, d, err, errlen) != 0)
        return -1;
    lop *o = op_new(l);
    if (o == NULL)
        return dsq_errf(err, errlen, "out of memory");
    o->call.op = DSQ_OP_CDC_READ;
    o->call.as_of = DSQ_AS_OF_LSN;
    o->call.as_of_lsn = d->floor;
    o->call.chunk_rows = (size_t)l->cfg.flush_bytes;
    o->call.scope = DSQ_SCOPE_R;
    if (run_call(l, o, d->name) != 0)
        return dsq_errf(err, errlen, "the lake is stopping");
    if (o->call.err != 0) {
        if (o->call.code == DSQ_CODE_INVALID_LSN && !d->known && d->ntables == 0 && o->call.lsn > d->floor) {
            /* New to the lake, and its log no longer starts at its first
             * commit: the lake takes what the log still holds (the
             * commits after call.lsn). */
            DSQ_WARN("lake_history_partial", "db=%s first_lsn=%llu", d->name, (unsigned long long)o->call.lsn + 1);
            uint64_t from = o->call.lsn;
            op_free(o);
            return put_floor(l, d, from, err, errlen) == 0 ? 1 : -1;
        }
        dsq_errf(err, errlen, "reading the changes of %s after LSN %llu: %s", d->name,
                 (unsigned long long)d->floor, o->call.msg);
        op_free(o);
        return -1;
    }
    const uint8_t *p = (const uint8_t *)o->call.out.data, *end = p + o->call.out.len;
    bool more = o->call.more;
    uint64_t upto = d->floor, lsn, time_us;
    const uint8_t *changes;
    uint32_t n;
    int rc = 0, got;
    while (rc == 0 && p != NULL && (got = dsq_cdc_batch_next(&p, end, &lsn, &time_us, &changes, &n)) != 0) {
        if (got < 0) {
            rc = dsq_errf(err, errlen, "a damaged batch of changes of %s", d->name);
            break;
        }
        dsq_cdc_reader r;
        if (dsq_cdc_read_begin(&r, changes, n) != 0) {
            rc = dsq_errf(err, errlen, "the changes of %s at LSN %llu do not decode", d->name,
                          (unsigned long long)lsn);
            break;
        }
        dsq_cdc_event ev;
        int e;
        while (rc == 0 && (e = dsq_cdc_read_next(&r, &ev)) != 0) {
            if (e < 0)
                rc = dsq_errf(err, errlen, "the changes of %s at LSN %llu do not decode", d->name,
                              (unsigned long long)lsn);
            else if (ev.op != DSQ_CDC_DDL)
                rc = take_event(l, d, &ev, lsn, (int64_t)time_us, err, errlen);
        }
        dsq_cdc_read_end(&r);
        if (rc == 0)
            rc = roll_files(l, d, err, errlen);
        upto = lsn;
    }
    op_free(o);
    if (rc != 0 || upto == d->floor)
        return rc;
    for (size_t i = 0; i < d->ntables && rc == 0; i++) {
        rc = table_commit(l, d->name, d->tables[i], upto, err, errlen);
        if (rc == 1) {
            pthread_mutex_lock(&l->mu);
            l->stats.conflicts++;
            pthread_mutex_unlock(&l->mu);
            rc = dsq_errf(err, errlen, "another writer committed to table %s first", d->tables[i]->src);
        }
    }
    if (rc == 0)
        rc = put_floor(l, d, upto, err, errlen);
    return rc != 0 ? -1 : more ? 1 : 0;
}

/* ---- current-state tables ---------------------------------------------------------------- */

/* Append SQL identifier name, quoted, to b. */
static void put_ident(dsq_buf *b, const char *name)
{
    dsq_buf_puts(b, "\"");
    for (const char *p = name; *p; p++) {
        dsq_buf_append(b, p, 1);
        if (*p == '"')
            dsq_buf_append(b, p, 1);
    }
    dsq_buf_puts(b, "\"");
}

static dsq_cdc_value cdc_value(const dsq_value *v)
{
    dsq_cdc_value c = {.type = SQLITE_NULL};
    switch (v->type) {
    case DSQ_V_INT: c.type = SQLITE_INTEGER; c.i = v->i; break;
    case DSQ_V_REAL: c.type = SQLITE_FLOAT; c.r = v->d; break;
    case DSQ_V_TEXT: c.type = SQLITE_TEXT; c.p = (const uint8_t *)v->p; c.n = (uint32_t)v->n; break;
    case DSQ_V_BLOB: c.type = SQLITE_BLOB; c.p = (const uint8_t *)v->p; c.n = (uint32_t)v->n; break;
    default: break;
    }
    return c;
}

#define STATE_PAGE 4096 /* rows read at a time */

/* Write table t's current-state table: its rows as of the database's
 * commit `at`, read page by page (by rowid, or by primary key), replacing
 * the table's files. 0, 1 (another writer committed first), or -1. */
static int state_write(dsq_lake *l, ldb *d, ltable *t, uint64_t at, char *err, size_t errlen)
{
    /* Its columns as of `at` (virtual generated ones have no value in a
     * row: left out, as in the changelog), primary key and kind. */
    dsq_buf sql = DSQ_BUF_INIT;
    dsq_buf lit = DSQ_BUF_INIT;
    put_literal(&lit, t->src);
    dsq_buf_printf(&sql,
                   "SELECT (SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = %.*s), name, pk "
                   "FROM pragma_table_xinfo(%.*s) WHERE hidden IN (0, 3) ORDER BY cid",
                   (int)lit.len, lit.data, (int)lit.len, lit.data);
    dsq_buf_free(&lit);
    lop *o = query_at(l, d->name, &sql, DSQ_AS_OF_LSN, at, err, errlen);
    dsq_buf_free(&sql);
    if (o == NULL)
        return -1;
    const dsq_result *r = &o->call.results[0];
    size_t n = r->nrows, pos = 0;
    dsq_cdc_col *cols = calloc(n ? n : 1, sizeof *cols);
    char **names = calloc(n ? n : 1, sizeof *names);
    bool wr = false;
    int rc = cols == NULL || names == NULL ? dsq_errf(err, errlen, "out of memory") : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        dsq_value v[3];
        for (int k = 0; k < 3; k++)
            if (!dsq_result_next(r, &pos, &v[k]))
                v[k].type = DSQ_V_NULL;
        wr = v[0].type == DSQ_V_INT && v[0].i != 0;
        names[i] = v[1].type == DSQ_V_TEXT ? strndup(v[1].p, v[1].n) : strdup("");
        if (names[i] == NULL) {
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        cols[i] = (dsq_cdc_col){.name = names[i], .len = (uint16_t)strlen(names[i]),
                                .pk = (uint8_t)(v[2].type == DSQ_V_INT ? v[2].i : 0)};
    }
    op_free(o);
    /* The files, page by page. */
    lfile *files = NULL;
    size_t nfiles = 0;
    dsq_cdc_value *vals = calloc(n ? n : 1, sizeof *vals);
    if (rc == 0 && vals == NULL)
        rc = dsq_errf(err, errlen, "out of memory");
    int64_t after = INT64_MIN;
    uint64_t offset = 0;
    lfile *f = NULL;
    for (bool more = n > 0; rc == 0 && more && !stopping(l);) {
        dsq_buf q = DSQ_BUF_INIT;
        dsq_buf_puts(&q, wr ? "SELECT " : "SELECT rowid");
        for (size_t i = 0; i < n; i++) {
            if (i > 0 || !wr)
                dsq_buf_puts(&q, ", ");
            put_ident(&q, names[i]);
        }
        dsq_buf_puts(&q, " FROM ");
        put_ident(&q, t->src);
        if (wr) {
            dsq_buf_puts(&q, " ORDER BY ");
            int np = 0;
            for (int k = 1; k <= (int)n; k++)
                for (size_t i = 0; i < n; i++)
                    if (cols[i].pk == k) {
                        if (np++ > 0)
                            dsq_buf_puts(&q, ", ");
                        put_ident(&q, names[i]);
                    }
            dsq_buf_printf(&q, " LIMIT %d OFFSET %llu", STATE_PAGE, (unsigned long long)offset);
        } else {
            dsq_buf_printf(&q, " WHERE rowid > %lld ORDER BY rowid LIMIT %d", (long long)after, STATE_PAGE);
        }
        lop *p = query_at(l, d->name, &q, DSQ_AS_OF_LSN, at, err, errlen);
        dsq_buf_free(&q);
        if (p == NULL) {
            rc = -1;
            break;
        }
        const dsq_result *pr = &p->call.results[0];
        size_t at_v = 0;
        for (size_t row = 0; rc == 0 && row < pr->nrows; row++) {
            dsq_value v;
            int64_t rowid = 0;
            if (!wr && dsq_result_next(pr, &at_v, &v))
                rowid = after = v.i;
            for (size_t i = 0; i < n; i++)
                vals[i] = dsq_result_next(pr, &at_v, &v) ? cdc_value(&v) : (dsq_cdc_value){.type = SQLITE_NULL};
            dsq_cdc_event ev = {.op = DSQ_CDC_INSERT, .table = t->src, .table_len = (uint16_t)strlen(t->src),
                                .without_rowid = wr, .rowid = rowid, .new_rowid = rowid, .ncols = (uint16_t)n,
                                .cols = cols, .after = vals};
            if (f == NULL || f->raw >= l->cfg.file_target_size) {
                if (f != NULL && file_finish(f, err, errlen) != 0) {
                    rc = -1;
                    break;
                }
                lfile *grown = realloc(files, (nfiles + 1) * sizeof *grown);
                if (grown == NULL) {
                    rc = dsq_errf(err, errlen, "out of memory");
                    break;
                }
                files = grown;
                f = &files[nfiles];
                memset(f, 0, sizeof *f);
                f->first_lsn = at;
                dsq_pq_options o2;
                dsq_pq_options_init(&o2);
                if (o2.row_group_bytes > l->cfg.file_target_size)
                    o2.row_group_bytes = l->cfg.file_target_size;
                if ((f->bytes = calloc(1, sizeof *f->bytes)) == NULL ||
                    (f->cl = dsq_changelog_open_state(&t->lkt, &o2, buf_sink, f->bytes, err, errlen)) == NULL) {
                    free(f->bytes);
                    rc = f->bytes == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
                    break;
                }
                nfiles++;
            }
            if (dsq_changelog_add(f->cl, &ev, at, 0, err, errlen) != 0)
                rc = -1;
            f->raw += raw_size(&ev);
        }
        more = pr->nrows == STATE_PAGE;
        offset += pr->nrows;
        op_free(p);
    }
    if (rc == 0 && f != NULL)
        rc = file_finish(f, err, errlen);
    for (size_t i = 0; names != NULL && i < n; i++)
        free(names[i]);
    free(names);
    free(cols);
    free(vals);
    if (rc == 0 && stopping(l))
        rc = dsq_errf(err, errlen, "the lake is stopping");
    /* The table made, or its schema brought up to the changelog's. */
    int64_t now_ms = (int64_t)dsq_wall_ms();
    json_t *fields = rc == 0 ? dsq_lk_state_fields(&t->lkt) : NULL;
    if (rc == 0 && fields == NULL)
        rc = dsq_errf(err, errlen, "out of memory");
    json_t *md = NULL;
    if (rc == 0 && t->smd == NULL) {
        json_t *spec = json_array();
        json_t *props = json_pack("{s:s, s:s, s:s, s:s}", "dosqld.source-database", d->name, "dosqld.source-table",
                                  t->src, "dosqld.table-kind", "current-state", "write.format.default", "parquet");
        char uuid[37], loc[2048], key[600];
        uuid4(uuid);
        snprintf(key, sizeof key, "lake/%s/%s", d->name, t->src);
        uri_of(l, key, loc, sizeof loc);
        md = spec && props ? dsq_ice_table_new(uuid, loc, fields, spec, props, now_ms, err, errlen) : NULL;
        if (md == NULL)
            rc = spec && props ? -1 : dsq_errf(err, errlen, "out of memory");
        json_decref(spec);
        json_decref(props);
    } else if (rc == 0) {
        json_int_t last = json_integer_value(json_object_get(t->smd, "last-updated-ms"));
        if (now_ms <= last)
            now_ms = last + 1;
        md = json_deep_copy(t->smd);
        if (md == NULL || dsq_ice_table_set_schema(md, fields, now_ms, err, errlen) != 0)
            rc = md == NULL ? dsq_errf(err, errlen, "out of memory") : -1;
    }
    json_decref(fields);
    if (rc != 0) {
        json_decref(md);
        for (size_t i = 0; i < nfiles; i++) {
            if (files[i].cl != NULL) {
                char e[8];
                dsq_changelog_close(files[i].cl, &files[i].st, e, sizeof e);
            }
            dsq_pq_stats_free(&files[i].st);
            dsq_buf_free(files[i].bytes);
            free(files[i].bytes);
        }
        free(files);
        return rc;
    }
    ltarget x = {.md = md, .version = t->sversion, .files = files, .nfiles = nfiles, .lkt = &t->lkt,
                 .state = true, .what = t->src};
    snprintf(x.key, sizeof x.key, "lake/%s/%s", d->name, t->src);
    rc = commit_target(l, d->name, &x, at, err, errlen);
    if (rc == 0) {
        json_decref(t->smd);
        t->smd = x.md;
        t->sversion = x.version;
        t->spos = at;
    } else {
        json_decref(x.md);
    }
    return rc;
}

/* The current-state tables of d that are behind their changelogs and due
 * (current_state_interval since the last write). 0, or -1 with the reason. */
static int db_states(dsq_lake *l, ldb *d, char *err, size_t errlen)
{
    if (!l->cfg.state)
        return 0;
    uint64_t now = dsq_now_ms();
    for (size_t i = 0; i < d->ntables && !stopping(l); i++) {
        ltable *t = d->tables[i];
        size_t n = strlen(t->src);
        if (t->md == NULL || t->spos >= t->pos || (n >= 10 && strcmp(t->src + n - 10, "_changelog") == 0))
            continue; /* (T_changelog's current state would be T's changelog: not kept) */
        if (t->s_at_ms != 0 && now - t->s_at_ms < l->cfg.state_interval_ms)
            continue;
        t->s_at_ms = now;
        int rc = state_write(l, d, t, d->floor, err, errlen);
        if (rc == 1)
            return dsq_errf(err, errlen, "another writer committed to table %s first", t->src);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- maintenance: expired snapshots and orphan files -------------------------------------- */

/* Whether uri is in the sorted array v[0..n). */
static bool in_set(char **v, size_t n, const char *uri)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(v[mid], uri);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int set_add(char ***v, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        char **g = realloc(*v, nc * sizeof *g);
        if (g == NULL)
            return -1;
        *v = g;
        *cap = nc;
    }
    if (((*v)[*n] = strdup(s)) == NULL)
        return -1;
    (*n)++;
    return 0;
}

/* Every file the snapshots of md reference: manifest lists, manifests,
 * data and delete files (URIs, sorted, into *out). 0, or -1. */
static int referenced(dsq_lake *l, json_t *md, char ***out, size_t *nout, char *err, size_t errlen)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    size_t i;
    json_t *s;
    char **lists = NULL; /* the manifests already read (a list carries the last one's forward) */
    size_t nlists = 0, lcap = 0;
    json_array_foreach(json_object_get(md, "snapshots"), i, s) {
        const char *list = json_string_value(json_object_get(s, "manifest-list"));
        const char *k = list ? key_of(l, list) : NULL;
        if (k == NULL || rc != 0)
            continue;
        if (set_add(&v, &n, &cap, list) != 0) {
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        dsq_buf b = DSQ_BUF_INIT;
        dsq_ice_mlist ml;
        int g = obj_get(l, k, &b, err, errlen);
        if (g != 0 || dsq_manifest_list_read(b.data, b.len, &ml, err, errlen) != 0) {
            if (g == 0)
                dsq_ice_mlist_free(&ml);
            dsq_buf_free(&b);
            rc = g == 1 ? dsq_errf(err, errlen, "the manifest list %s is missing", list) : -1;
            break;
        }
        dsq_buf_free(&b);
        for (size_t m = 0; rc == 0 && m < ml.n; m++) {
            const char *mp = ml.files[m].path;
            bool seen = false;
            for (size_t q = 0; q < nlists && !seen; q++)
                seen = strcmp(lists[q], mp) == 0;
            if (seen)
                continue;
            const char *mk = key_of(l, mp);
            dsq_ice_fileref *fr = NULL;
            size_t nf = 0;
            if (mk == NULL || set_add(&lists, &nlists, &lcap, mp) != 0 || set_add(&v, &n, &cap, mp) != 0) {
                rc = mk == NULL ? dsq_errf(err, errlen, "the manifest %s is not in this object store", mp)
                                : dsq_errf(err, errlen, "out of memory");
                break;
            }
            g = obj_get(l, mk, &b, err, errlen);
            if (g != 0 || dsq_manifest_files(b.data, b.len, &fr, &nf, err, errlen) != 0) {
                rc = g == 1 ? dsq_errf(err, errlen, "the manifest %s is missing", mp) : -1;
            } else {
                for (size_t f = 0; rc == 0 && f < nf; f++)
                    if (fr[f].status != DSQ_ICE_DELETED && set_add(&v, &n, &cap, fr[f].path) != 0)
                        rc = dsq_errf(err, errlen, "out of memory");
            }
            dsq_ice_filerefs_free(fr, nf);
            dsq_buf_free(&b);
        }
        dsq_ice_mlist_free(&ml);
    }
    for (size_t q = 0; q < nlists; q++)
        free(lists[q]);
    free(lists);
    if (v != NULL)
        qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    *nout = n;
    return rc;
}

/* Table `key`'s maintenance: snapshots older than snapshot_retention go
 * (not the current one, nor one a ref names), committed as the next
 * version; then files under data/ and metadata/ that no snapshot left
 * references (manifest lists, manifests, data files: an expired
 * snapshot's, or a cut commit's) and older than orphan_age are removed.
 * The metadata files stay. 0, 1 (another writer's version), or -1. */
static int table_maintain(dsq_lake *l, const char *db, const char *key, json_t **mdp, int *version, char *err,
                          size_t errlen)
{
    json_t *md = *mdp;
    int64_t now = (int64_t)dsq_wall_ms();
    int64_t cutoff = now - (int64_t)l->cfg.snapshot_retention_ms;
    json_t *cur = json_object_get(md, "current-snapshot-id");
    json_t *keep = json_array(), *keep_ids = json_array();
    size_t i, nexp = 0;
    json_t *s;
    json_array_foreach(json_object_get(md, "snapshots"), i, s) {
        json_t *id = json_object_get(s, "snapshot-id");
        bool named = json_equal(id, cur);
        const char *rk;
        json_t *ref;
        json_object_foreach(json_object_get(md, "refs"), rk, ref) {
            named = named || json_equal(json_object_get(ref, "snapshot-id"), id);
        }
        if (named || json_integer_value(json_object_get(s, "timestamp-ms")) >= cutoff) {
            json_array_append(keep, s);
            json_array_append(keep_ids, id);
        } else {
            nexp++;
        }
    }
    int rc = 0;
    if (nexp > 0) {
        json_t *next = json_deep_copy(md);
        json_t *log = json_array();
        json_array_foreach(json_object_get(md, "snapshot-log"), i, s) {
            size_t k;
            json_t *id;
            json_array_foreach(keep_ids, k, id) {
                if (json_equal(id, json_object_get(s, "snapshot-id")))
                    json_array_append(log, s);
            }
        }
        json_int_t last = json_integer_value(json_object_get(md, "last-updated-ms"));
        if (next == NULL || log == NULL || json_object_set(next, "snapshots", keep) != 0 ||
            json_object_set_new(next, "snapshot-log", log) != 0 ||
            json_object_set_new(next, "last-updated-ms", json_integer(now > last ? now : last + 1)) != 0) {
            if (next == NULL)
                json_decref(log);
            rc = dsq_errf(err, errlen, "out of memory");
        } else {
            rc = put_version(l, key, next, *version, last, false, err, errlen);
        }
        if (rc == 0) {
            json_decref(*mdp);
            *mdp = md = next;
            (*version)++;
            pthread_mutex_lock(&l->mu);
            l->stats.expired += nexp;
            pthread_mutex_unlock(&l->mu);
            DSQ_INFO("lake_expired", "db=%s table=%s snapshots=%zu version=%d", db, key, nexp, *version);
        } else {
            json_decref(next);
        }
    }
    json_decref(keep);
    json_decref(keep_ids);
    if (rc != 0)
        return rc;
    /* Orphans: what the snapshots left do not reference. */
    char **refs = NULL;
    size_t nrefs = 0;
    rc = referenced(l, md, &refs, &nrefs, err, errlen);
    char prefix[DSQ_OBJ_KEY_MAX + 1];
    snprintf(prefix, sizeof prefix, "%s/", key);
    lop *o = rc == 0 ? obj_list(l, prefix, err, errlen) : NULL;
    if (rc == 0 && o == NULL)
        rc = -1;
    size_t removed = 0;
    for (size_t k = 0; rc == 0 && k < o->req.nitems && !stopping(l); k++) {
        const dsq_obj_item *it = &o->req.items[k];
        const char *rel = it->key + strlen(prefix);
        char uri[2048];
        bool meta = strncmp(rel, "metadata/", 9) == 0, data = strncmp(rel, "data/", 5) == 0;
        size_t rn = strlen(rel);
        if ((!meta && !data) || (meta && (rn < 5 || strcmp(rel + rn - 5, ".avro") != 0)))
            continue; /* (vN.metadata.json and version-hint.text stay) */
        if (it->mtime_ms <= 0 || now - it->mtime_ms < (int64_t)l->cfg.orphan_age_ms)
            continue; /* (maybe a commit under way: only old files go) */
        uri_of(l, it->key, uri, sizeof uri);
        if (in_set(refs, nrefs, uri))
            continue;
        lop *del = op_new(l);
        if (del == NULL) {
            rc = dsq_errf(err, errlen, "out of memory");
            break;
        }
        del->req.op = DSQ_OBJ_DELETE;
        snprintf(del->req.key, sizeof del->req.key, "%s", it->key);
        if (run_req(l, del) != 0) {
            rc = dsq_errf(err, errlen, "the lake is stopping");
            break;
        }
        if (del->req.status != DSQ_OBJ_OK && del->req.status != DSQ_OBJ_NOT_FOUND)
            rc = dsq_errf(err, errlen, "cannot remove %s: %s", it->key, del->req.msg);
        else
            removed++;
        op_free(del);
    }
    if (o != NULL)
        op_free(o);
    for (size_t k = 0; k < nrefs; k++)
        free(refs[k]);
    free(refs);
    if (removed > 0) {
        pthread_mutex_lock(&l->mu);
        l->stats.removed += removed;
        pthread_mutex_unlock(&l->mu);
        DSQ_INFO("lake_removed", "db=%s table=%s files=%zu", db, key, removed);
    }
    return rc;
}

/* The maintenance of d's tables that is due (maintenance_interval since
 * the last). 0, or -1 with the reason. */
static int db_maintain(dsq_lake *l, ldb *d, char *err, size_t errlen)
{
    uint64_t now = dsq_now_ms();
    for (size_t i = 0; i < d->ntables && !stopping(l); i++) {
        ltable *t = d->tables[i];
        if (t->md == NULL || (t->m_at_ms != 0 && now - t->m_at_ms < l->cfg.maintenance_interval_ms))
            continue;
        t->m_at_ms = now;
        int rc = table_maintain(l, d->name, t->key, &t->md, &t->version, err, errlen);
        if (rc == 0 && t->smd != NULL) {
            char key[600];
            snprintf(key, sizeof key, "lake/%s/%s", d->name, t->src);
            rc = table_maintain(l, d->name, key, &t->smd, &t->sversion, err, errlen);
        }
        if (rc == 1)
            return dsq_errf(err, errlen, "another writer committed to table %s first", t->src);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static bool selected(dsq_lake *l, const char *name)
{
    for (size_t i = 0; i < l->cfg.ndatabases; i++)
        if (fnmatch(l->globs[i], name, 0) == 0)
            return true;
    return false;
}

static ldb *db_get(dsq_lake *l, const char *name)
{
    ldb *d;
    dsq_queue_foreach(d, &l->dbs, link) {
        if (strcmp(d->name, name) == 0)
            return d;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    snprintf(d->name, sizeof d->name, "%s", name);
    dsq_queue_push(&l->dbs, &d->link);
    return d;
}

/* The databases that feed the lake now: a LIST call whose names are the
 * selected ones (the caller frees it with op_free), or NULL. */
static lop *list_selected(dsq_lake *l)
{
    lop *o = op_new(l);
    if (o == NULL)
        return NULL;
    o->call.op = DSQ_OP_LIST;
    if (run_call(l, o, NULL) != 0)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < o->call.nnames; i++) {
        if (selected(l, o->call.names[i]))
            o->call.names[k++] = o->call.names[i];
        else
            free(o->call.names[i]);
    }
    o->call.nnames = k;
    return o;
}

/* At the start: each selected database's lake state loaded, so that its
 * log is held from its position from now on (nothing is written). */
static void round_load(dsq_lake *l)
{
    lop *o = list_selected(l);
    for (size_t i = 0; o != NULL && i < o->call.nnames && !stopping(l); i++) {
        ldb *d = db_get(l, o->call.names[i]);
        char err[300];
        if (d != NULL && !d->loaded && db_load(l, d, err, sizeof err) != 0)
            DSQ_WARN("lake_failed", "db=%s reason=%s", d->name, dsq_log_q(err));
    }
    if (o != NULL)
        op_free(o);
}

static void round_run(dsq_lake *l)
{
    lop *o = list_selected(l);
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->call.nnames && !stopping(l); i++) {
        ldb *d = db_get(l, o->call.names[i]);
        if (d == NULL)
            break;
        for (int k = 0; k < MAX_STEPS && !stopping(l); k++) {
            char err[300] = "";
            int rc = db_step(l, d, err, sizeof err);
            if (rc < 0) {
                /* Made again from the store and the log next time. */
                db_forget(d);
                if (strcmp(err, d->failed) != 0)
                    DSQ_WARN("lake_failed", "db=%s reason=%s", d->name, dsq_log_q(err));
                snprintf(d->failed, sizeof d->failed, "%s", err);
                pthread_mutex_lock(&l->mu);
                l->stats.errors++;
                snprintf(l->stats.last_error, sizeof l->stats.last_error, "%s: %s", d->name, err);
                pthread_mutex_unlock(&l->mu);
                break;
            }
            if (d->failed[0] != '\0') {
                DSQ_INFO("lake_recovered", "db=%s", d->name);
                d->failed[0] = '\0';
            }
            if (rc == 0) {
                char err2[300] = "";
                if (db_states(l, d, err2, sizeof err2) != 0 || db_maintain(l, d, err2, sizeof err2) != 0) {
                    db_forget(d);
                    DSQ_WARN("lake_failed", "db=%s reason=%s", d->name, dsq_log_q(err2));
                    pthread_mutex_lock(&l->mu);
                    l->stats.errors++;
                    snprintf(l->stats.last_error, sizeof l->stats.last_error, "%s: %s", d->name, err2);
                    pthread_mutex_unlock(&l->mu);
                }
                break;
            }
        }
    }
    op_free(o);
}

/* ---- the thread -------------------------------------------------------------------------------- */

static void *writer_main(void *arg)
{
    dsq_lake *l = arg;
    round_load(l);
    uint64_t next = dsq_now_ms() + l->cfg.flush_interval_ms;
    pthread_mutex_lock(&l->mu);
    while (!l->stopping) {
        uint64_t now = dsq_now_ms();
        if (!l->flush_asked && now < next) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = next - now;
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&l->cond, &l->mu, &ts);
            continue;
        }
        l->flush_asked = false;
        l->in_round = true;
        pthread_mutex_unlock(&l->mu);
        round_run(l);
        next = dsq_now_ms() + l->cfg.flush_interval_ms;
        pthread_mutex_lock(&l->mu);
        l->in_round = false;
        l->stats.rounds++;
        /* The waiters whose round this was. */
        bool any = false;
        for (dsq_qnode *prev = NULL, *n = dsq_queue_first(&l->waiters); n != NULL;) {
            lwaiter *w = dsq_container_of(n, lwaiter, link);
            dsq_qnode *after = n->next;
            if (l->stats.rounds >= w->after) {
                dsq_queue_remove_after(&l->waiters, prev);
                w->st = l->stats;
                dsq_queue_push(&l->ended, &w->link);
                any = true;
            } else {
                prev = n;
            }
            n = after;
        }
        if (any) {
            pthread_mutex_unlock(&l->mu);
            uv_async_send(&l->async);
            pthread_mutex_lock(&l->mu);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void closed_free(uv_handle_t *h) { dsq_lake_free(h->data); }

dsq_lake *dsq_lake_start(const dsq_lake_cfg *cfg, char *err, size_t errlen)
{
    dsq_lake *l = calloc(1, sizeof *l);
    if (l == NULL) {
        dsq_errf(err, errlen, "out of memory");
        return NULL;
    }
    l->cfg = *cfg;
    l->globs = calloc(cfg->ndatabases + 1, sizeof *l->globs);
    l->store_url = strdup(cfg->store_url);
    const char *fp = getenv("DSQ_LAKE_FAILPOINT");
    l->failpoint = fp != NULL && fp[0] != '\0' ? strdup(fp) : NULL;
    l->table_parts = calloc(cfg->ntable_parts + 1, sizeof *l->table_parts);
    bool ok = l->globs != NULL && l->store_url != NULL && l->table_parts != NULL;
    for (size_t i = 0; ok && i < cfg->ndatabases; i++)
        ok = (l->globs[i] = strdup(cfg->databases[i])) != NULL;
    for (size_t i = 0; ok && i < cfg->ntable_parts; i++)
        ok = (l->table_parts[i] = strdup(cfg->table_parts[i])) != NULL;
    /* (a trailing '/' would double in every key's URI) */
    size_t n = ok ? strlen(l->store_url) : 0;
    while (n > 0 && l->store_url[n - 1] == '/')
        l->store_url[--n] = '\0';
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    if (!ok || uv_async_init(cfg->loop, &l->async, on_async) != 0) {
        dsq_errf(err, errlen, "out of memory");
        dsq_lake_free(l);
        return NULL;
    }
    l->async.data = l;
    uv_unref((uv_handle_t *)&l->async); /* (the server's loop ends when its listeners do) */
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
        dsq_errf(err, errlen, "cannot start the lake writer's thread");
        uv_close((uv_handle_t *)&l->async, closed_free);
        return NULL;
    }
    l->started = true;
    DSQ_INFO("lake_started", "databases=%zu flush_interval_ms=%llu", cfg->ndatabases,
             (unsigned long long)cfg->flush_interval_ms);
    return l;
}

int dsq_lake_flush(dsq_lake *l, void (*done)(void *ud, const dsq_lake_stats *st), void *ud)
{
    lwaiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    w->done = done;
    w->ud = ud;
    pthread_mutex_lock(&l->mu);
    /* A round under way may have passed the changes made before this
     * call: the one after it. */
    w->after = l->stats.rounds + (l->in_round ? 2 : 1);
    if (l->stopping) {
        w->stopped = true;
        dsq_queue_push(&l->ended, &w->link);
    } else {
        dsq_queue_push(&l->waiters, &w->link);
    }
    l->flush_asked = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
    return 0;
}

void dsq_lake_stats_get(dsq_lake *l, dsq_lake_stats *st)
{
    pthread_mutex_lock(&l->mu);
    *st = l->stats;
    pthread_mutex_unlock(&l->mu);
}

void dsq_lake_stop(dsq_lake *l)
{
    if (l == NULL || !l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = false;
    /* Waiters told the lake stopped; the calls the loop had not submitted
     * are dropped (the writer gave up on them). */
    pthread_mutex_lock(&l->mu);
    for (dsq_qnode *n; (n = dsq_queue_pop(&l->waiters)) != NULL;) {
        lwaiter *w = dsq_container_of(n, lwaiter, link);
        w->stopped = true;
        dsq_queue_push(&l->ended, &w->link);
    }
    dsq_queue calls = dsq_queue_take(&l->calls);
    pthread_mutex_unlock(&l->mu);
    for (dsq_qnode *n; (n = dsq_queue_pop(&calls)) != NULL;)
        op_free(dsq_container_of(n, lop, link));
    on_async(&l->async);
    uv_close((uv_handle_t *)&l->async, NULL);
}

void dsq_lake_free(dsq_lake *l)
{
    if (l == NULL)
        return;
    for (dsq_qnode *n; (n = dsq_queue_pop(&l->dbs)) != NULL;) {
        ldb *d = dsq_container_of(n, ldb, link);
        db_forget(d);
        free(d);
    }
    for (size_t i = 0; l->globs != NULL && i < l->cfg.ndatabases; i++)
        free(l->globs[i]);
    free(l->globs);
    for (size_t i = 0; l->table_parts != NULL && i < l->cfg.ntable_parts; i++)
        free(l->table_parts[i]);
    free(l->table_parts);
    free(l->store_url);
    free(l->failpoint);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
    free(l);
}
