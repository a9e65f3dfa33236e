/* sse — GET /v1/db/{db}/cdc: a CDC subscription as Server-Sent Events.
 *
 *   GET /v1/db/NAME/cdc?from=LSN&tables=a,b&operations=INSERT,DELETE
 *   Last-Event-ID: LSN          (resumes after it; wins over from=)
 *
 * The response is text/event-stream: one "cdc" event per row change
 * (data: the event object of protocol/cdcsub.h); the last event of each
 * commit carries "id: LSN", so that a client's Last-Event-ID always names
 * a commit it received whole. If the subscription ends by itself (it fell
 * out of the retained log: BUFFER_OVERFLOW) an "end" event says why and
 * the response ends. Errors before the stream (a bad parameter, an LSN
 * outside the log) are plain JSON error responses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "protocol/cdcsub.h"
#include "protocol/value.h"
#include "server/server_int.h"

typedef struct sse {
    dsq_http_req *req;      /* NULL once the client is gone */
    dsq_cdcsub *sub;
    dsq_cdc_cache *cache;   /* the server's: batches kept for alike subscribers */
    dsq_waiter room;
    dsq_buf buf;            /* the events of a batch, gathered: one chunk */
    bool begun;
    int enc;
    unsigned ops;
    bool gathering;         /* the batch `key`, whole so far: keep its bytes */
    dsq_cdc_batch_key key;
} sse;

static void sse_free(sse *x)
{
    dsq_buf_free(&x->buf);
    free(x);
}

/* The connection went away: stop. */
static void sse_abandon(void *arg)
{
    sse *x = arg;
    x->req = NULL;
    dsq_cdcsub_stop(x->sub);
    sse_free(x);
}

static void sse_started(void *ud, int err, dsq_code code, const char *msg)
{
    sse *x = ud;
    if (err != 0) {
        dsq_http_req *req = x->req;
        req->abandon = NULL;
        x->req = NULL;
        x->sub = NULL; /* it stopped itself */
        dsq__respond_error(req, 0, code, "%s", msg);
        sse_free(x);
        return;
    }
    dsq__respond_begin(x->req, 200, "text/event-stream");
    x->begun = true;
    static const char hello[] = ": subscribed\n\n";
    dsq__respond_chunk(x->req, hello, sizeof hello - 1);
}

/* Send the events gathered, as one chunk (kept for alike subscribers when
 * they are a whole batch). */
static void sse_flush(void *ud)
{
    sse *x = ud;
    bool keep = x->gathering;
    x->gathering = false;
    if (keep)
        dsq_cdc_batch_keep(x->cache, &x->key, x->buf.data, x->buf.len);
    if (x->buf.len > 0 && x->req != NULL)
        dsq__respond_chunk(x->req, x->buf.data, x->buf.len);
    dsq_buf_reset(&x->buf);
}

static int sse_event(void *ud, const char *text, size_t len, uint64_t lsn, bool last)
{
    sse *x = ud;
    if (x->req == NULL)
        return -1;
    if (last)
        dsq_buf_printf(&x->buf, "id: %llu\n", (unsigned long long)lsn);
    dsq_buf_puts(&x->buf, "event: cdc\ndata: ");
    dsq_buf_append(&x->buf, text, len);
    dsq_buf_puts(&x->buf, "\n\n");
    if (x->buf.data == NULL)
        return -1;
    if (x->buf.len >= (256u << 10)) {
        x->gathering = false; /* the batch takes more than one chunk */
        sse_flush(x);
    }
    return 0;
}

static int sse_batch(void *ud, const char *db, uint64_t epoch, uint64_t after, uint64_t upto)
{
    sse *x = ud;
    x->gathering = false;
    if (db == NULL || x->req == NULL)
        return 0;
    dsq_cdc_batch_key k = {.epoch = epoch, .after = after, .upto = upto, .enc = x->enc, .ops = x->ops};
    dsq_strlcpy(k.db, db, sizeof k.db);
    dsq_strlcpy(k.tag, "sse", sizeof k.tag);
    const dsq_buf *m = dsq_cdc_batch_find(x->cache, &k, NULL);
    if (m != NULL) {
        if (m->len > 0)
            dsq__respond_chunk(x->req, m->data, m->len);
        return 1;
    }
    if (x->buf.len == 0) { /* nothing of an earlier batch gathered */
        x->key = k;
        x->gathering = true;
    }
    return 0;
}

static void sse_writable(void *arg)
{
    sse *x = arg;
    if (x->req != NULL)
        dsq_cdcsub_writable(x->sub);
}

static bool sse_can_send(void *ud)
{
    sse *x = ud;
    if (x->req == NULL)
        return false;
    dsq_conn *c = dsq__req_conn(x->req);
    if (dsq__respond_at_head(x->req) && dsq__conn_room(c))
        return true;
    dsq__conn_wait_room(c, &x->room);
    return false;
}

static void sse_ended(void *ud, dsq_code code, const char *msg, uint64_t last_lsn)
{
    sse *x = ud;
    dsq_http_req *req = x->req;
    x->sub = NULL; /* it stopped itself */
    if (req == NULL)
        return;
    x->gathering = false; /* what it gathered may not be the whole batch */
    sse_flush(x);         /* what it delivered goes first */
    req->abandon = NULL;
    x->req = NULL;
    dsq_buf_printf(&x->buf, "event: end\ndata: {\"lastLsn\":%llu,\"error\":{\"code\":\"%s\",\"message\":",
                   (unsigned long long)last_lsn, dsq_code_name(code));
    dsq_json_string(&x->buf, msg, strlen(msg));
    dsq_buf_puts(&x->buf, "}}\n\n");
    if (x->buf.data)
        dsq__respond_chunk(req, x->buf.data, x->buf.len);
    dsq__respond_end(req);
    sse_free(x);
}

/* A comma-separated list from the query into `names` (pointers into buf).
 * Returns how many, or -1 when malformed. */
static long split_list(char *buf, const char **names, size_t max)
{
    size_t n = 0;
    for (char *p = buf; *p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*p == '\0' || n == max)
            return -1;
        names[n++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return (long)n;
}

void dsq__handle_cdc(dsq_server *srv, dsq_http_req *req)
{
    if (req->upgrade) {
        dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST,
                           "this route streams Server-Sent Events; over WebSocket, call subscribeCDC on "
                           "/v1/db/%s/rpc", req->db);
        return;
    }
    if (req->method == HTTP_HEAD) {
        dsq__respond(req, 200, "text/event-stream", NULL, 0, NULL);
        return;
    }
    dsq_cdcsub_req r = {.db = req->db, .enc = DSQ_ENC_JSON};
    char from[32], tables[4096], ops[128];
    size_t len = 0;
    const char *last = dsq_http_header_get(req, "Last-Event-ID", &len);
    if (last != NULL && len > 0) {
        char v[32];
        if (len >= sizeof v || (memcpy(v, last, len), v[len] = '\0', dsq_parse_u64(v, &r.from) != 0)) {
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "Last-Event-ID must be an LSN");
            return;
        }
        r.has_from = true;
    } else if (dsq_http_query_get(req, "from", from, sizeof from) >= 0) {
        if (dsq_parse_u64(from, &r.from) != 0) {
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST, "from must be an LSN (a whole number)");
            return;
        }
        r.has_from = true;
    }
    const char *names[256];
    if (dsq_http_query_get(req, "tables", tables, sizeof tables) >= 0) {
        long n = split_list(tables, names, sizeof names / sizeof names[0]);
        if (n < 0) {
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST,
                               "tables must be a comma-separated list of up to 256 table names");
            return;
        }
        r.tables = names;
        r.ntables = (size_t)n;
    }
    if (dsq_http_query_get(req, "operations", ops, sizeof ops) >= 0) {
        const char *o[8];
        long n = split_list(ops, o, 8);
        for (long i = 0; i < n; i++) {
            unsigned bit = strcmp(o[i], "INSERT") == 0   ? DSQ_CDCSUB_INSERT
                           : strcmp(o[i], "UPDATE") == 0 ? DSQ_CDCSUB_UPDATE
                           : strcmp(o[i], "DELETE") == 0 ? DSQ_CDCSUB_DELETE
                           : strcmp(o[i], "DDL") == 0    ? DSQ_CDCSUB_DDL
                                                         : 0;
            if (bit == 0) {
                n = -1;
                break;
            }
            r.ops |= bit;
        }
        if (n <= 0) {
            dsq__respond_error(req, 400, DSQ_CODE_INVALID_REQUEST,
                               "operations must be a comma-separated list of INSERT, UPDATE, DELETE, DDL");
            return;
        }
    }
    sse *x = calloc(1, sizeof *x);
    if (x == NULL) {
        dsq__respond_error(req, 503, DSQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    x->req = req;
    x->cache = srv->cdc_cache;
    x->enc = (int)r.enc;
    x->ops = r.ops;
    x->room.fn = sse_writable;
    x->room.arg = x;
    dsq_cdcsub_sink sink = {
        .started = sse_started,
        .event = sse_event,
        .can_send = sse_can_send,
        .flush = sse_flush,
        .ended = sse_ended,
        .ud = x,
        .batch = sse_batch,
    };
    dsq_code code;
    char msg[600];
    x->sub = dsq_cdcsub_start(srv->engine, srv->cdc_cache, &r, &sink, &code, msg, sizeof msg);
    if (x->sub == NULL) {
        sse_free(x);
        dsq__respond_error(req, 0, code, "%s", msg);
        return;
    }
    req->abandon = sse_abandon;
    req->abandon_arg = x;
}
