/* capnweb — the Cap'n Web protocol's server side, on the DoSQL API.
 *
 * One session per WebSocket connection or HTTP batch. The session keeps the
 * two tables of the protocol: exports (what the client imports: the main
 * object at 0, results of its pushes at 1, 2, ..., stubs we send at -1,
 * -2, ...) and imports (the client's exports: stubs and promises it
 * passes, and results of the calls we make to them). Messages: push, pull,
 * resolve, reject, release, abort, stream; pipe answers with a rejected
 * entry. Expressions: escaped arrays, undefined, inf/-inf/nan, bytes,
 * bigint, date, error, import/pipeline (paths and calls), export/promise,
 * remap (.map()).
 *
 * The main object is a database's API (bound sessions) or has
 * database(name) returning one (unbound). A push's call waits for the
 * pushes it references, and pushes are delivered in the order they came.
 * Everything runs on the loop thread.
 *
 * The implementation is in protocol/capnweb/ (capnweb_int.h lists its
 * files); this header is its one entry point. */
#ifndef DSQ_CAPNWEB_H
#define DSQ_CAPNWEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "protocol/dosql.h"

typedef struct dsq_cw_limits {
    int max_depth;           /* nesting of one expression */
    size_t max_bigint_digits;/* digits of a ["bigint", ...] */
    size_t max_entries;      /* imports plus exports alive in one session */
    size_t max_running;      /* WebSocket: engine calls in progress at once (0: no limit);
                                later pushes wait to be delivered */
} dsq_cw_limits;

typedef struct dsq_cw_transport {
    /* Send one message (WebSocket: a frame; HTTP batch: a line). Returns 0,
     * or -1 when it cannot. */
    int (*send)(void *ud, const char *msg, size_t len);
    /* The session ended (it aborted, or the peer did): close the transport.
     * Not called after dsq_cw_session_close(). */
    void (*end)(void *ud);
    /* HTTP batch: every message has been answered that will be; send the
     * response now. */
    void (*batch_done)(void *ud);
    /* Scopes (DSQ_SCOPE_R/W) on a database, as for dosql. */
    unsigned (*scope)(void *ud, const char *db);
    void *ud;
    /* May be NULL. Is there room for more output? While it says no, no
     * push is delivered (its call does not start); the transport calls
     * dsq_cw_writable() once there is room again. */
    bool (*room)(void *ud);
} dsq_cw_transport;

/* What the sessions of one server share: the count of their table
 * entries. The server makes it when it starts and frees it when it
 * stops, once every session is gone (a closed session lives on until its
 * last engine call returns). */
typedef struct dsq_cw_stats dsq_cw_stats;

/* NULL: out of memory. */
dsq_cw_stats *dsq_cw_stats_new(void);
void dsq_cw_stats_free(dsq_cw_stats *st);

/* Entries alive in all its sessions (exports + imports), for /metrics. */
uint64_t dsq_cw_stats_entries(const dsq_cw_stats *st);

typedef struct dsq_cw_session dsq_cw_session;

/* A session whose main object is database `db`'s API, or (db NULL) the
 * object with database(name); its entries count in `stats`, its CDC
 * subscriptions share `cdc` (both the server's). `batch`: an HTTP batch
 * (no calls back to the client; the response ends it). */
struct dsq_router;
/* The keyspaces of router r: keyspace(name) on the main object; with ks,
 * the main object is that keyspace's API (/v1/ks/{ks}/capnweb). */
void dsq_cw_session_set_router(dsq_cw_session *s, struct dsq_router *r, const char *ks);
/* Where a keyspace's CDC reaches shards on other nodes (borrowed). */
struct dsq_cdc_remote;
void dsq_cw_session_set_cdc_remote(dsq_cw_session *s, const struct dsq_cdc_remote *rem);

dsq_cw_session *dsq_cw_session_new(dsq_engine *e, dsq_cw_stats *stats, dsq_cdc_cache *cdc,
                                   const dsq_dosql_limits *dl, const dsq_cw_limits *cl, const char *db,
                                   uint64_t session_id, bool batch, const dsq_cw_transport *t);

/* The transport has room again (see room): deliver the pushes that wait. */
void dsq_cw_writable(dsq_cw_session *s);

/* One message from the client. */
void dsq_cw_receive(dsq_cw_session *s, const char *msg, size_t len);

/* An HTTP batch's body: messages one per line (empty lines skipped). */
void dsq_cw_receive_lines(dsq_cw_session *s, const char *body, size_t len);

/* HTTP batch: the request's messages are all in; batch_done follows once
 * every pulled result is settled (maybe at once). */
void dsq_cw_batch_end(dsq_cw_session *s);

/* The transport is gone: stop sending, release everything; the session is
 * freed when its last engine call returns. */
void dsq_cw_session_close(dsq_cw_session *s);

#endif
