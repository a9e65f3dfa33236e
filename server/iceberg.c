/* iceberg — the Iceberg REST catalog, read-only, at /v1/iceberg
 * (docs/lakehouse.md, "The catalog"; the OpenAPI of apache/iceberg,
 * open-api/rest-catalog-open-api.yaml).
 *
 * A namespace is a database's name; its tables are what the lake writer
 * committed under lake/D/ in the object store (server/iceberg.h has the
 * layout). The catalog only reads: every write operation of the spec is
 * refused with 406 (UnsupportedOperationException), the lake writer being
 * the only writer.
 *
 * Divisions:
 *   - the pure parts (server/iceberg.h): paths, names, keys, URIs;
 *   - answers: the spec's ErrorModel, JSON bodies;
 *   - the store's completions back on the loop: an operation submits an
 *     object store request; its `done` (on the store's thread) digests
 *     the answer there (names from keys, JSON checked) and queues the
 *     operation for the loop, woken by one uv_async_t per server; the
 *     loop then answers, or submits the operation's next request;
 *   - the operations (namespaces, tables, a table's metadata);
 *   - the handler: authorization, then the route.
 *
 * Shutdown: dsq__iceberg_close (from dsq_server_free, after the
 * connections closed, before the loop's handles are walked) stops the
 * wake-ups and closes the handle; a request still at the store then
 * frees its operation on the store's thread when dsq_obj_close cancels
 * it, and the last of them (or the handle's close) frees the state. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "server/iceberg.h"
#include "server/server_int.h"

#define NS_JSON_MAX (1u << 20)        /* bytes of a namespace.json */
#define METADATA_MAX (64u << 20)      /* bytes of a metadata.json */
#define LOAD_ATTEMPTS 3               /* a version gone between LIST and GET: list again */

/* ---- the pure parts ------------------------------------------------------------------ */

/* Split rest (after "/v1") into decoded segments. Returns the count
 * (at most `max`; more: max + 1), or -1 when malformed. */
static int split_segments(const char *rest, char (*segs)[1024], int max)
{
    int n = 0;
    const char *p = rest;
    while (*p == '/') {
        p++;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n == max)
            return max + 1;
        if (len >= 3 * 1024)
            return -1;
        char tmp[3 * 1024];
        long dl = dsq_http_pct_decode(p, len, tmp);
        if (dl < 0 || dl >= 1024)
            return -1;
        memcpy(segs[n], tmp, (size_t)dl + 1);
        n++;
        p += len;
    }
    return *p == '\0' ? n : -1;
}

int dsq_ice_parse_path(const char *rest, dsq_ice_path *p)
{
    char s[7][1024];
    memset(p, 0, sizeof *p);
    if (strncmp(rest, "/v1/", 4) != 0)
        return 0; /* (UNKNOWN) */
    int n = split_segments(rest + 3, s, 6);
    if (n < 0)
        return -1;
    if (n > 6 || n == 0)
        return 0;
#define IS(i, lit) (strcmp(s[i], lit) == 0)
    if (n == 1) {
        p->ep = IS(0, "config") ? DSQ_ICE_CONFIG : IS(0, "namespaces") ? DSQ_ICE_NAMESPACES : DSQ_ICE_UNKNOWN;
        return 0;
    }
    if (!IS(0, "namespaces")) {
        if (n == 2 && IS(0, "tables") && IS(1, "rename"))
            p->ep = DSQ_ICE_RENAME;
        else if (n == 2 && IS(0, "transactions") && IS(1, "commit"))
            p->ep = DSQ_ICE_COMMIT;
        else if (n == 2 && ((IS(0, "views") && IS(1, "rename")) || (IS(0, "oauth") && IS(1, "tokens"))))
            p->ep = DSQ_ICE_UNSERVED;
        return 0;
    }
    memcpy(p->ns, s[1], sizeof p->ns);
    if (n == 2) {
        p->ep = DSQ_ICE_NAMESPACE;
    } else if (n == 3) {
        p->ep = IS(2, "properties") ? DSQ_ICE_NS_PROPERTIES
                : IS(2, "tables")   ? DSQ_ICE_TABLES
                : IS(2, "register") ? DSQ_ICE_REGISTER
                : (IS(2, "views") || IS(2, "functions") || IS(2, "register-view")) ? DSQ_ICE_UNSERVED
                                                                                    : DSQ_ICE_UNKNOWN;
    } else if (IS(2, "views") || IS(2, "functions")) {
        p->ep = n == 4 ? DSQ_ICE_UNSERVED : DSQ_ICE_UNKNOWN;
    } else if (IS(2, "tables")) {
        memcpy(p->table, s[3], sizeof p->table);
        if (n == 4)
            p->ep = DSQ_ICE_TABLE;
        else if (n == 5 && IS(4, "metrics"))
            p->ep = DSQ_ICE_METRICS;
        else if ((n == 5 && (IS(4, "plan") || IS(4, "tasks") || IS(4, "credentials") || IS(4, "sign") ||
                             IS(4, "unregister"))) ||
                 (n == 6 && IS(4, "plan")))
            p->ep = DSQ_ICE_UNSERVED;
    }
#undef IS
    if (p->ep == DSQ_ICE_UNKNOWN)
        p->ns[0] = p->table[0] = '\0';
    return 0;
}

int dsq_ice_namespace(const char *ns, char db[129])
{
    int levels = 0;
    const char *p = ns;
    for (;;) {
        const char *e = strchr(p, '\x1f');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char level[129];
        if (len == 0 || len >= sizeof level)
            return 0;
        memcpy(level, p, len);
        level[len] = '\0';
        if (!dsq_db_name_valid(level))
            return 0;
        if (levels++ == 0)
            memcpy(db, level, len + 1);
        if (e == NULL)
            break;
        p = e + 1;
    }
    return levels == 1 ? 1 : 2;
}

bool dsq_ice_table_name_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > DSQ_ICE_TABLE_MAX || strcmp(t, ".") == 0 || strcmp(t, "..") == 0 ||
        !dsq_utf8_valid((const uint8_t *)t, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f || t[i] == '/' || t[i] == '\\')
            return false;
    return true;
}

void dsq_ice_names_free(dsq_ice_names *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    *s = (dsq_ice_names){0};
}

static int names_add(dsq_ice_names *s, const char *p, size_t len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    char *x = strndup(p, len);
    if (x == NULL)
        return -1;
    s->v[s->n++] = x;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sort, and drop repeats. */
static void names_sort_unique(dsq_ice_names *s)
{
    if (s->n == 0)
        return;
    qsort(s->v, s->n, sizeof *s->v, cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[w - 1]) == 0)
            free(s->v[i]);
        else
            s->v[w++] = s->v[i];
    }
    s->n = w;
}

int dsq_ice_namespaces_of(const dsq_obj_item *items, size_t n, dsq_ice_names *out)
{
    static const char tail[] = "/namespace.json";
    for (size_t i = 0; i < n; i++) {
        const char *k = items[i].key;
        if (strncmp(k, "lake/", 5) != 0)
            continue;
        k += 5;
        const char *slash = strchr(k, '/');
        if (slash == NULL || strcmp(slash, tail) != 0 || (size_t)(slash - k) > 128)
            continue;
        char db[129];
        memcpy(db, k, (size_t)(slash - k));
        db[slash - k] = '\0';
        if (dsq_db_name_valid(db) && names_add(out, db, strlen(db)) != 0)
            return -1;
    }
    names_sort_unique(out);
    return 0;
}

uint64_t dsq_ice_metadata_version(const char *dir, const char *key)
{
    static const char tail[] = ".metadata.json";
    size_t dl = strlen(dir);
    if (strncmp(key, dir, dl) != 0 || key[dl] != 'v')
        return 0;
    const char *d = key + dl + 1;
    size_t nd = 0;
    uint64_t v = 0;
    while (d[nd] >= '0' && d[nd] <= '9') {
        if (nd == 18)
            return 0;
        v = v * 10 + (uint64_t)(d[nd] - '0');
        nd++;
    }
    if (nd == 0 || d[0] == '0' || strcmp(d + nd, tail) != 0)
        return 0;
    return v;
}

uint64_t dsq_ice_latest_version(const char *dir, const dsq_obj_item *items, size_t n)
{
    uint64_t best = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = dsq_ice_metadata_version(dir, items[i].key);
        if (v > best)
            best = v;
    }
    return best;
}

int dsq_ice_tables_of(const char *ns, const dsq_obj_item *items, size_t n, dsq_ice_names *out, bool *ns_found)
{
    char dir[160];
    int dl = snprintf(dir, sizeof dir, "lake/%s/", ns);
    *ns_found = false;
    if (dl < 0 || (size_t)dl >= sizeof dir)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = items[i].key;
        if (strncmp(k, dir, (size_t)dl) != 0)
            continue;
        k += dl;
        if (strcmp(k, "namespace.json") == 0) {
            *ns_found = true;
            continue;
        }
        const char *slash = strchr(k, '/');
        if (slash == NULL || strncmp(slash, "/metadata/", 10) != 0)
            continue;
        /* lake/NS/T/metadata/vN.metadata.json: the version's own test */
        if (dsq_ice_metadata_version("", slash + 10) == 0)
            continue;
        size_t tl = (size_t)(slash - k);
        char t[DSQ_ICE_TABLE_MAX + 1];
        if (tl > DSQ_ICE_TABLE_MAX)
            continue;
        memcpy(t, k, tl);
        t[tl] = '\0';
        /* (keys sorted: a table's versions come together) */
        if (out->n > 0 && strcmp(out->v[out->n - 1], t) == 0)
            continue;
        if (dsq_ice_table_name_valid(t) && names_add(out, t, tl) != 0)
            return -1;
    }
    names_sort_unique(out);
    return 0;
}

int dsq_ice_store_base(const char *url, const char *cwd, char *out, size_t outlen)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/' && !(n == 7 && strncmp(url, "file://", 7) == 0))
        n--;
    int w;
    if (strncmp(url, "file://", 7) == 0 && n > 7 && url[7] != '/') {
        const char *rel = url + 7;
        size_t rn = n - 7;
        while (rn >= 2 && rel[0] == '.' && rel[1] == '/') { /* "./data/objects" */
            rel += 2;
            rn -= 2;
            while (rn > 0 && rel[0] == '/') {
                rel++;
                rn--;
            }
        }
        size_t cn = strlen(cwd);
        while (cn > 0 && cwd[cn - 1] == '/')
            cn--;
        if (rn == 1 && rel[0] == '.')
            rn = 0;
        w = snprintf(out, outlen, "file://%.*s%s%.*s", (int)cn, cwd, rn ? "/" : "", (int)rn, rel);
    } else {
        w = snprintf(out, outlen, "%.*s", (int)n, url);
    }
    return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

/* ---- answers ------------------------------------------------------------------------- */

/* The spec's ErrorModel: {"error": {"message", "type", "code"}}. `extra`:
 * header lines (WWW-Authenticate, Allow) or NULL. */
static void ice_error_extra(dsq_http_req *req, int status, const char *type, const char *extra, const char *fmt,
                            ...) __attribute__((format(printf, 5, 6)));
static void ice_error_extra(dsq_http_req *req, int status, const char *type, const char *extra, const char *fmt,
                            ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *doc = json_pack("{s:{s:s, s:s, s:i}}", "error", "message", msg, "type", type, "code", status);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"ServiceUnavailableException\",\"code\":503}}\n";
        dsq__respond(req, 503, "application/json", oom, sizeof oom - 1, NULL);
        return;
    }
    size_t n = strlen(text);
    char *body = realloc(text, n + 2);
    if (body != NULL) {
        body[n++] = '\n';
        body[n] = '\0';
        text = body;
    }
    dsq__respond(req, status, "application/json", text, n, extra);
    free(text);
}

#define ice_error(req, status, type, ...) ice_error_extra(req, status, type, NULL, __VA_ARGS__)

static void ice_json(dsq_http_req *req, int status, json_t *doc)
{
    if (doc == NULL) {
        ice_error(req, 503, "ServiceUnavailableException", "out of memory");
        return;
    }
    dsq__respond_json(req, status, doc);
    json_decref(doc);
}

/* A request to the store that did not answer. */
static void ice_store_error(dsq_http_req *req, const dsq_obj_req *r)
{
    ice_error(req, 503, "ServiceUnavailableException", "the object store could not %s %s: %s%s%s",
              dsq_obj_op_name(r->op), r->key, dsq_obj_status_name(r->status), r->msg[0] ? ": " : "", r->msg);
}

/* ---- the store's completions back on the loop ------------------------------------------ */

struct dsq_iceberg {
    uv_async_t async;        /* wakes the loop: operations done (data = this) */
    pthread_mutex_t mu;      /* over done, inflight, closing, handle_gone */
    dsq_queue done;          /* ice_op.link: back from the store, for the loop */
    size_t inflight;         /* operations at the store or on `done` */
    bool closing;            /* dsq__iceberg_close began: no more wake-ups */
    bool handle_gone;        /* the async handle is closed */
    dsq_server *srv;
    char base[4200];         /* the URI the keys go after (dsq_ice_store_base) */
};

typedef enum op_kind {
    OP_NS_LIST,     /* GET namespaces: LIST lake/ */
    OP_NS_PARENT,   /* GET namespaces?parent=D: HEAD lake/D/namespace.json, then [] */
    OP_NS_GET,      /* GET namespaces/D: GET lake/D/namespace.json */
    OP_NS_HEAD,     /* HEAD namespaces/D: HEAD lake/D/namespace.json */
    OP_TABLES,      /* GET namespaces/D/tables: LIST lake/D/ */
    OP_TABLE_LOAD,  /* GET .../tables/T: LIST lake/D/T/metadata/, then GET the highest version */
    OP_TABLE_HEAD,  /* HEAD .../tables/T: LIST lake/D/T/metadata/ */
} op_kind;

typedef struct ice_op {
    dsq_server *srv;
    dsq_iceberg *ice;        /* NULL without an object store */
    dsq_http_req *req;       /* NULL once abandoned (the connection went) */
    op_kind kind;
    dsq_obj_req r;           /* the store's request in flight */
    dsq_qnode link;          /* on ice->done */
    char ns[129];
    char table[DSQ_ICE_TABLE_MAX + 1];
    bool paged;              /* pageToken was sent: answer a page */
    char after[DSQ_ICE_TABLE_MAX + 1]; /* the page starts after this name ("" the first) */
    size_t page_size;        /* names per page (0: all the rest) */
    int attempts;            /* OP_TABLE_LOAD's lists */
    /* digested on the store's thread */
    dsq_ice_names names;     /* OP_NS_LIST, OP_TABLES */
    bool ns_found;           /* OP_TABLES */
    uint64_t version;        /* OP_TABLE_*: the highest version listed; 0 none */
    bool loading;            /* OP_TABLE_LOAD: r is the GET of `version` */
    json_t *props;           /* OP_NS_GET: the properties (owned) */
    char bad[DSQ_OBJ_KEY_MAX + 300]; /* a file that is not what it should be: why ("" none) */
} ice_op;

static void op_free(ice_op *op)
{
    dsq_obj_req_clear(&op->r);
    dsq_ice_names_free(&op->names);
    json_decref(op->props);
    free(op);
}

static void ice_free(dsq_iceberg *ice)
{
    pthread_mutex_destroy(&ice->mu);
    free(ice);
}

static void op_abandon(void *arg) { ((ice_op *)arg)->req = NULL; }

/* The request's answer (or not: it was abandoned), and the operation
 * ends. */
static dsq_http_req *op_take_req(ice_op *op)
{
    dsq_http_req *req = op->req;
    if (req != NULL)
        req->abandon = NULL; /* (answering may free it) */
    op->req = NULL;
    return req;
}

static void op_digest(ice_op *op);

/* Store's thread: digest the answer, then hand the operation to the
 * loop (or, when the catalog is closing, free it). */
static void op_store_done(dsq_obj_req *r)
{
    ice_op *op = r->ud;
    dsq_iceberg *ice = op->ice;
    op_digest(op);
    pthread_mutex_lock(&ice->mu);
    if (!ice->closing) {
        dsq_queue_push(&ice->done, &op->link);
        uv_async_send(&ice->async); /* (under the lock: the handle is open while !closing) */
        pthread_mutex_unlock(&ice->mu);
        return;
    }
    ice->inflight--;
    bool last = ice->handle_gone && ice->inflight == 0;
    pthread_mutex_unlock(&ice->mu);
    op_free(op);
    if (last)
        ice_free(ice);
}

/* Send op->r (its op and key set) to the store. */
static void op_submit(ice_op *op)
{
    dsq_iceberg *ice = op->ice;
    op->r.done = op_store_done;
    op->r.ud = op;
    pthread_mutex_lock(&ice->mu);
    ice->inflight++;
    pthread_mutex_unlock(&ice->mu);
    dsq_obj_submit(ice->srv->objects, &op->r);
}

static void op_step(ice_op *op);

static void on_async(uv_async_t *h)
{
    dsq_iceberg *ice = h->data;
    pthread_mutex_lock(&ice->mu);
    dsq_queue q = dsq_queue_take(&ice->done);
    for (dsq_qnode *n = q.head; n != NULL; n = n->next)
        ice->inflight--;
    pthread_mutex_unlock(&ice->mu);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&q)) != NULL)
        op_step(dsq_container_of(n, ice_op, link));
}

/* The catalog's state, made on its first request (loop thread). */
static dsq_iceberg *ice_get(dsq_server *srv)
{
    if (srv->iceberg != NULL)
        return srv->iceberg;
    dsq_iceberg *ice = calloc(1, sizeof *ice);
    if (ice == NULL)
        return NULL;
    ice->srv = srv;
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == NULL)
        snprintf(cwd, sizeof cwd, "/");
    const char *url = srv->cfg->object_store ? srv->cfg->object_store : "";
    if (dsq_ice_store_base(url, cwd, ice->base, sizeof ice->base) != 0) {
        free(ice);
        return NULL;
    }
    if (uv_async_init(&srv->loop, &ice->async, on_async) != 0) {
        free(ice);
        return NULL;
    }
    ice->async.data = ice;
    uv_unref((uv_handle_t *)&ice->async);
    pthread_mutex_init(&ice->mu, NULL);
    srv->iceberg = ice;
    return ice;
}

static void on_async_closed(uv_handle_t *h)
{
    dsq_iceberg *ice = h->data;
    pthread_mutex_lock(&ice->mu);
    ice->handle_gone = true;
    bool last = ice->inflight == 0;
    pthread_mutex_unlock(&ice->mu);
    if (last)
        ice_free(ice);
}

void dsq__iceberg_close(dsq_server *srv)
{
    dsq_iceberg *ice = srv->iceberg;
    if (ice == NULL)
        return;
    srv->iceberg = NULL;
    pthread_mutex_lock(&ice->mu);
    ice->closing = true;
    dsq_queue q = dsq_queue_take(&ice->done);
    for (dsq_qnode *n = q.head; n != NULL; n = n->next)
        ice->inflight--;
    pthread_mutex_unlock(&ice->mu);
    dsq_qnode *n;
    while ((n = dsq_queue_pop(&q)) != NULL) {
        ice_op *op = dsq_container_of(n, ice_op, link);
        dsq_http_req *req = op_take_req(op);
        if (req != NULL) /* (the connections are closed first: none is left) */
            ice_error(req, 503, "ServiceUnavailableException", "the server is stopping");
        op_free(op);
    }
    uv_close((uv_handle_t *)&ice->async, on_async_closed);
}

/* ---- the operations -------------------------------------------------------------------- */

/* Store's thread: what the answer says, into op (nothing of the loop's
 * is touched here, op->req least of all). */
static void op_digest(ice_op *op)
{
    dsq_obj_req *r = &op->r;
    if (r->status != DSQ_OBJ_OK)
        return;
    switch (op->kind) {
    case OP_NS_LIST:
        if (dsq_ice_namespaces_of(r->items, r->nitems, &op->names) != 0)
            snprintf(op->bad, sizeof op->bad, "out of memory");
        dsq_obj_req_clear(r); /* (the keys of every file of the lake: let them go now) */
        break;
    case OP_TABLES:
        if (dsq_ice_tables_of(op->ns, r->items, r->nitems, &op->names, &op->ns_found) != 0)
            snprintf(op->bad, sizeof op->bad, "out of memory");
        dsq_obj_req_clear(r);
        break;
    case OP_TABLE_LOAD:
    case OP_TABLE_HEAD:
        if (!op->loading) {
            char dir[DSQ_OBJ_KEY_MAX + 1];
            snprintf(dir, sizeof dir, "%s", r->key);
            op->version = dsq_ice_latest_version(dir, r->items, r->nitems);
            dsq_obj_req_clear(r);
            break;
        }
        if (r->data.len > METADATA_MAX) {
            snprintf(op->bad, sizeof op->bad, "%s is larger than %u bytes", r->key, METADATA_MAX);
            break;
        }
        {
            json_error_t jerr;
            json_t *m = json_loadb(r->data.data ? r->data.data : "", r->data.len, 0, &jerr);
            if (!json_is_object(m))
                snprintf(op->bad, sizeof op->bad, "%s is not a JSON object%s%s", r->key, m ? "" : ": ",
                         m ? "" : jerr.text);
            json_decref(m); /* (the bytes themselves are passed on, as stored) */
        }
        break;
    case OP_NS_GET: {
        if (r->data.len > NS_JSON_MAX) {
            snprintf(op->bad, sizeof op->bad, "%s is larger than %u bytes", r->key, NS_JSON_MAX);
            break;
        }
        json_error_t jerr;
        json_t *doc = json_loadb(r->data.data ? r->data.data : "", r->data.len, 0, &jerr);
        json_t *props = json_object_get(doc, "properties");
        bool ok = json_is_object(doc) && (props == NULL || json_is_object(props));
        const char *k;
        json_t *v;
        if (ok && props != NULL)
            json_object_foreach(props, k, v) ok = ok && json_is_string(v);
        if (!ok)
            snprintf(op->bad, sizeof op->bad, "%s is not {\"properties\": {NAME: STRING, ...}}", r->key);
        else
            op->props = props ? json_incref(props) : json_object();
        json_decref(doc);
        dsq_obj_req_clear(r);
        break;
    }
    case OP_NS_PARENT:
    case OP_NS_HEAD:
        break;
    }
}

/* A page of sorted names: those after op->after, at most op->page_size
 * of them when paged; *next the name to go on after, or NULL at the end. */
static void page_of(const ice_op *op, size_t *from, size_t *to, const char **next)
{
    size_t i = 0;
    if (op->paged && op->after[0] != '\0')
        while (i < op->names.n && strcmp(op->names.v[i], op->after) <= 0)
            i++;
    size_t end = op->names.n;
    *next = NULL;
    if (op->paged && op->page_size > 0 && end - i > op->page_size) {
        end = i + op->page_size;
        *next = op->names.v[end - 1];
    }
    *from = i;
    *to = end;
}

static void answer_namespaces(ice_op *op, dsq_http_req *req)
{
    dsq_server *srv = op->srv;
    /* Only those the token may read: the rest are dropped before paging,
     * so pages hold what this token sees. */
    size_t w = 0;
    for (size_t i = 0; i < op->names.n; i++) {
        if (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_READ, op->names.v[i]) == DSQ_AUTH_OK)
            op->names.v[w++] = op->names.v[i];
        else
            free(op->names.v[i]);
    }
    op->names.n = w;
    size_t from, to;
    const char *next;
    page_of(op, &from, &to, &next);
    json_t *list = json_array();
    for (size_t i = from; i < to; i++)
        json_array_append_new(list, json_pack("[s]", op->names.v[i]));
    ice_json(req, 200, json_pack("{s:o, s:s?}", "namespaces", list, "next-page-token", next));
}

static void answer_tables(ice_op *op, dsq_http_req *req)
{
    if (!op->ns_found) {
        ice_error(req, 404, "NoSuchNamespaceException", "Namespace does not exist: %s", op->ns);
        return;
    }
    size_t from, to;
    const char *next;
    page_of(op, &from, &to, &next);
    json_t *list = json_array();
    for (size_t i = from; i < to; i++)
        json_array_append_new(list, json_pack("{s:[s], s:s}", "namespace", op->ns, "name", op->names.v[i]));
    ice_json(req, 200, json_pack("{s:o, s:s?}", "identifiers", list, "next-page-token", next));
}

/* LoadTableResult: the metadata file's bytes as stored, spliced in. */
static void answer_table(ice_op *op, dsq_http_req *req)
{
    char uri[sizeof op->ice->base + DSQ_OBJ_KEY_MAX + 2];
    snprintf(uri, sizeof uri, "%s/%s", op->ice->base, op->r.key);
    json_t *loc = json_string(uri);
    char *loc_text = loc ? json_dumps(loc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(loc);
    /* (the whitespace around the object, a file's last newline, left out) */
    const char *m = op->r.data.data;
    size_t ml = op->r.data.len;
    while (ml > 0 && (m[0] == ' ' || m[0] == '\t' || m[0] == '\n' || m[0] == '\r')) {
        m++;
        ml--;
    }
    while (ml > 0 && (m[ml - 1] == ' ' || m[ml - 1] == '\t' || m[ml - 1] == '\n' || m[ml - 1] == '\r'))
        ml--;
    dsq_buf b = DSQ_BUF_INIT;
    int rc = loc_text == NULL || dsq_buf_reserve(&b, ml + strlen(loc_text) + 64) != 0;
    if (rc == 0) {
        dsq_buf_puts(&b, "{\"metadata-location\":");
        dsq_buf_puts(&b, loc_text);
        dsq_buf_puts(&b, ",\"metadata\":");
        dsq_buf_append(&b, m, ml);
        dsq_buf_puts(&b, ",\"config\":{}}");
    }
    free(loc_text);
    if (rc != 0)
        ice_error(req, 503, "ServiceUnavailableException", "out of memory");
    else
        dsq__respond_line(req, 200, "application/json", b.data, b.len);
    dsq_buf_free(&b);
}

/* Loop thread: the store answered op's request; answer, or go on. */
static void op_step(ice_op *op)
{
    dsq_obj_req *r = &op->r;
    if (op->req == NULL) { /* abandoned */
        op_free(op);
        return;
    }
    bool missing = r->status == DSQ_OBJ_NOT_FOUND;
    if (r->status != DSQ_OBJ_OK && !missing) {
        ice_store_error(op_take_req(op), r);
        op_free(op);
        return;
    }
    if (op->bad[0] != '\0') {
        dsq_http_req *req = op_take_req(op);
        DSQ_WARN("iceberg_bad_object", "why=%s", dsq_log_q(op->bad));
        ice_error(req, 500, "InternalServerError", "%s", op->bad);
        op_free(op);
        return;
    }
    if (op->kind == OP_TABLE_LOAD && op->loading && missing && ++op->attempts < LOAD_ATTEMPTS) {
        /* (a version gone since the list: list again) */
        op->loading = false;
        op->version = 0;
        snprintf(r->key, sizeof r->key, "lake/%s/%s/metadata/", op->ns, op->table);
        r->op = DSQ_OBJ_LIST;
        op_submit(op);
        return;
    }
    if (op->kind == OP_TABLE_LOAD && !op->loading && op->version > 0) {
        op->loading = true;
        char dir[DSQ_OBJ_KEY_MAX + 1];
        snprintf(dir, sizeof dir, "%s", r->key);
        int kn = snprintf(r->key, sizeof r->key, "%sv%llu.metadata.json", dir, (unsigned long long)op->version);
        if (kn < 0 || (size_t)kn >= sizeof r->key) { /* (names are bounded far below: not seen) */
            ice_error(op_take_req(op), 500, "InternalServerError", "a metadata file's key is too long");
            op_free(op);
            return;
        }
        r->op = DSQ_OBJ_GET;
        r->off = 0;
        r->len = (uint64_t)METADATA_MAX + 1; /* (bounded: more is refused) */
        op_submit(op);
        return;
    }
    dsq_http_req *req = op_take_req(op);
    switch (op->kind) {
    case OP_NS_LIST: answer_namespaces(op, req); break;
    case OP_TABLES:
        if (missing)
            op->ns_found = false;
        answer_tables(op, req);
        break;
    case OP_NS_PARENT:
        if (missing)
            ice_error(req, 404, "NoSuchNamespaceException", "Namespace does not exist: %s", op->ns);
        else /* one level: no namespace is under another */
            ice_json(req, 200, json_pack("{s:[], s:n}", "namespaces", "next-page-token"));
        break;
    case OP_NS_GET:
        if (missing) {
            ice_error(req, 404, "NoSuchNamespaceException", "Namespace does not exist: %s", op->ns);
        } else {
            ice_json(req, 200, json_pack("{s:[s], s:O}", "namespace", op->ns, "properties", op->props));
        }
        break;
    case OP_NS_HEAD:
        if (missing)
            ice_error(req, 404, "NoSuchNamespaceException", "Namespace does not exist: %s", op->ns);
        else
            dsq__respond(req, 204, NULL, NULL, 0, NULL);
        break;
    case OP_TABLE_HEAD:
    case OP_TABLE_LOAD:
        if (missing || op->version == 0)
            ice_error(req, 404, "NoSuchTableException", "Table does not exist: %s.%s", op->ns, op->table);
        else if (op->kind == OP_TABLE_HEAD)
            dsq__respond(req, 204, NULL, NULL, 0, NULL);
        else
            answer_table(op, req);
        break;
    }
    op_free(op);
}

/* Begin op: its first request to the store, or (no store: an empty
 * lake) its answer at once. */
static void op_start(dsq_server *srv, dsq_http_req *req, ice_op *op, dsq_obj_op first, const char *key)
{
    op->req = req;
    op->srv = srv;
    snprintf(op->r.key, sizeof op->r.key, "%s", key);
    op->r.op = first;
    if (first == DSQ_OBJ_GET)
        op->r.len = NS_JSON_MAX + 1;
    if (srv->objects == NULL) { /* storage.object_store = none: no lake */
        op->r.status = first == DSQ_OBJ_LIST ? DSQ_OBJ_OK : DSQ_OBJ_NOT_FOUND;
        op_step(op);
        return;
    }
    dsq_iceberg *ice = ice_get(srv);
    if (ice == NULL) {
        op_free(op);
        ice_error(req, 503, "ServiceUnavailableException", "out of memory");
        return;
    }
    op->ice = ice;
    req->abandon = op_abandon;
    req->abandon_arg = op;
    op_submit(op);
}

/* ---- the handler --------------------------------------------------------------------- */

/* A query parameter: its decoded value into out, its length; -2 when it
 * is absent, -1 when it is there but too long or malformed. */
static long query_param(const dsq_http_req *req, const char *name, char *out, size_t outlen)
{
    long n = dsq_http_query_get(req, name, out, outlen);
    if (n >= 0)
        return n;
    size_t nl = strlen(name);
    for (const char *q = req->query; *q;) {
        size_t kl = strcspn(q, "=&");
        if (kl == nl && memcmp(q, name, nl) == 0)
            return -1;
        q += strcspn(q, "&");
        if (*q == '&')
            q++;
    }
    return -2;
}

/* pageToken and pageSize into op. 0, or -1 with the answer given. */
static int paging(dsq_http_req *req, ice_op *op)
{
    char size[32];
    long tl = query_param(req, "pageToken", op->after, sizeof op->after);
    long sl = query_param(req, "pageSize", size, sizeof size);
    if (tl == -1) {
        ice_error(req, 400, "BadRequestException", "pageToken: not a token this catalog gave");
        return -1;
    }
    if (sl != -2) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = sl > 0 ? strtoull(size, &end, 10) : 0;
        if (sl <= 0 || *end != '\0' || size[0] == '-' || size[0] == '+' || v == 0 || errno != 0 ||
            v > 1000000000ULL) {
            ice_error(req, 400, "BadRequestException", "pageSize: a whole number from 1");
            return -1;
        }
        op->page_size = (size_t)v;
    }
    /* Without pageToken, every name in one answer (the spec's rule). */
    op->paged = tl >= 0;
    if (!op->paged)
        op->after[0] = '\0';
    return 0;
}

static void handle_config(dsq_http_req *req)
{
    json_t *doc = json_pack("{s:{}, s:{}, s:[s, s, s, s, s, s]}", "defaults", "overrides", "endpoints",
                            "GET /v1/{prefix}/namespaces", "GET /v1/{prefix}/namespaces/{namespace}",
                            "HEAD /v1/{prefix}/namespaces/{namespace}",
                            "GET /v1/{prefix}/namespaces/{namespace}/tables",
                            "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
                            "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}");
    ice_json(req, 200, doc);
}

/* The namespace of the path (p->ns) as a database's name into db; on
 * anything else the answer is given and -1 returned. */
static int path_namespace(dsq_server *srv, dsq_http_req *req, const char *ns, char db[129])
{
    int k = dsq_ice_namespace(ns, db);
    if (k == 0) {
        ice_error(req, 400, "BadRequestException",
                  "invalid namespace: a namespace here is a database's name (1-128 of A-Z a-z 0-9 . _ -, not "
                  "starting with '.')");
        return -1;
    }
    if (k == 2) { /* (well formed, and none such exists: namespaces here have one level) */
        ice_error(req, 404, "NoSuchNamespaceException",
                  "Namespace does not exist: a namespace here has one level, a database's name");
        return -1;
    }
    switch (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_READ, db)) {
    case DSQ_AUTH_OK: return 0;
    case DSQ_AUTH_UNAUTHORIZED: /* (checked before) */
    case DSQ_AUTH_FORBIDDEN: break;
    }
    ice_error(req, 403, "ForbiddenException", "the token does not grant read on database %s", db);
    return -1;
}

static void refuse_write(dsq_http_req *req)
{
    ice_error(req, 406, "UnsupportedOperationException",
              "this catalog is read-only: dosqld's lake writer is the only writer of its tables and namespaces");
}

static void method_not_allowed(dsq_http_req *req, const char *allow)
{
    char extra[80];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    ice_error_extra(req, 405, "BadRequestException", extra, "method not allowed here: %s", allow);
}

void dsq__iceberg_handle(dsq_server *srv, dsq_http_req *req)
{
    /* The token: every operation needs a known one when tokens are set
     * (a namespace's operations then read on that database). */
    if (req->token == NULL) {
        size_t hl = 0, tl = 0;
        const char *h = dsq_http_header_get(req, "authorization", &hl);
        const char *tok = h ? dsq_auth_bearer(h, hl, &tl) : NULL;
        if (tok != NULL && (req->token = strndup(tok, tl)) != NULL)
            req->token_len = tl;
    }
    if (dsq_auth_check(srv->auth, req->token, req->token_len, DSQ_SCOPE_READ, NULL) != DSQ_AUTH_OK) {
        ice_error_extra(req, 401, "NotAuthorizedException", "WWW-Authenticate: Bearer realm=\"dosqld\"\r\n",
                        "%s", req->token ? "invalid token" : "missing bearer token");
        return;
    }
    dsq_ice_path p;
    const char *rest = req->path + strlen(DSQ_ICE_PREFIX);
    if (dsq_ice_parse_path(rest, &p) != 0) {
        ice_error(req, 400, "BadRequestException", "malformed request path");
        return;
    }
    int m = req->method;
    bool get = m == HTTP_GET, head = m == HTTP_HEAD, post = m == HTTP_POST, del = m == HTTP_DELETE;
    char db[129];
    ice_op *op = NULL;
    switch (p.ep) {
    case DSQ_ICE_UNKNOWN:
        ice_error(req, 404, "NotFoundException",
                  "no such route of the Iceberg REST catalog (its URI is http://HOST:PORT" DSQ_ICE_PREFIX ")");
        return;
    case DSQ_ICE_UNSERVED:
        ice_error(req, 406, "UnsupportedOperationException",
                  "not served by this catalog: it serves namespaces and tables, read-only (GET /v1/config lists "
                  "its endpoints)");
        return;
    case DSQ_ICE_CONFIG:
        if (get || head)
            handle_config(req);
        else
            method_not_allowed(req, "GET, HEAD");
        return;
    case DSQ_ICE_NS_PROPERTIES:
    case DSQ_ICE_REGISTER:
    case DSQ_ICE_RENAME:
    case DSQ_ICE_COMMIT:
        if (post)
            refuse_write(req);
        else
            method_not_allowed(req, "POST");
        return;
    case DSQ_ICE_METRICS:
        /* A client's scan report: taken, and not kept. */
        if (post)
            dsq__respond(req, 204, NULL, NULL, 0, NULL);
        else
            method_not_allowed(req, "POST");
        return;
    case DSQ_ICE_NAMESPACES:
    case DSQ_ICE_TABLES:
        if (post) {
            refuse_write(req);
            return;
        }
        if (!get && !head) {
            method_not_allowed(req, "GET, HEAD, POST");
            return;
        }
        break;
    case DSQ_ICE_NAMESPACE:
    case DSQ_ICE_TABLE:
        if (del || (post && p.ep == DSQ_ICE_TABLE)) {
            refuse_write(req);
            return;
        }
        if (!get && !head) {
            method_not_allowed(req, p.ep == DSQ_ICE_TABLE ? "GET, HEAD, POST, DELETE" : "GET, HEAD, DELETE");
            return;
        }
        break;
    }
    /* Reads. */
    if (p.ep != DSQ_ICE_NAMESPACES && path_namespace(srv, req, p.ns, db) != 0)
        return;
    if (p.ep == DSQ_ICE_TABLE && !dsq_ice_table_name_valid(p.table)) {
        ice_error(req, 400, "BadRequestException",
                  "invalid table name: 1-%d bytes of UTF-8, without '/', '\\' or control characters",
                  DSQ_ICE_TABLE_MAX);
        return;
    }
    op = calloc(1, sizeof *op);
    if (op == NULL) {
        ice_error(req, 503, "ServiceUnavailableException", "out of memory");
        return;
    }
    char key[DSQ_OBJ_KEY_MAX + 1];
    switch (p.ep) {
    case DSQ_ICE_NAMESPACES: {
        char parent[1024];
        long pl = query_param(req, "parent", parent, sizeof parent);
        if (pl == -1) {
            op_free(op);
            ice_error(req, 400, "BadRequestException", "parent: malformed");
            return;
        }
        if (paging(req, op) != 0) {
            op_free(op);
            return;
        }
        if (pl > 0) { /* ("" is absent, the spec says) */
            if (path_namespace(srv, req, parent, db) != 0) {
                op_free(op);
                return;
            }
            op->kind = OP_NS_PARENT;
            snprintf(op->ns, sizeof op->ns, "%s", db);
            snprintf(key, sizeof key, "lake/%s/namespace.json", db);
            op_start(srv, req, op, DSQ_OBJ_HEAD, key);
            return;
        }
        op->kind = OP_NS_LIST;
        op_start(srv, req, op, DSQ_OBJ_LIST, "lake/");
        return;
    }
    case DSQ_ICE_NAMESPACE:
        op->kind = head ? OP_NS_HEAD : OP_NS_GET;
        snprintf(op->ns, sizeof op->ns, "%s", db);
        snprintf(key, sizeof key, "lake/%s/namespace.json", db);
        op_start(srv, req, op, head ? DSQ_OBJ_HEAD : DSQ_OBJ_GET, key);
        return;
    case DSQ_ICE_TABLES:
        if (paging(req, op) != 0) {
            op_free(op);
            return;
        }
        op->kind = OP_TABLES;
        snprintf(op->ns, sizeof op->ns, "%s", db);
        snprintf(key, sizeof key, "lake/%s/", db);
        op_start(srv, req, op, DSQ_OBJ_LIST, key);
        return;
    case DSQ_ICE_TABLE: {
        char snaps[16];
        long sl = query_param(req, "snapshots", snaps, sizeof snaps);
        if (sl != -2 && (sl < 0 || (strcmp(snaps, "all") != 0 && strcmp(snaps, "refs") != 0))) {
            op_free(op);
            ice_error(req, 400, "BadRequestException", "snapshots: all or refs");
            return;
        }
        /* (refs: all of them are sent, which holds those of the refs) */
        op->kind = head ? OP_TABLE_HEAD : OP_TABLE_LOAD;
        snprintf(op->ns, sizeof op->ns, "%s", db);
        dsq_strlcpy(op->table, p.table, sizeof op->table); /* (valid: at most DSQ_ICE_TABLE_MAX bytes) */
        snprintf(key, sizeof key, "lake/%s/%s/metadata/", db, op->table);
        op_start(srv, req, op, DSQ_OBJ_LIST, key);
        return;
    }
    default:
        op_free(op);
        ice_error(req, 500, "InternalServerError", "unrouted");
        return;
    }
}
