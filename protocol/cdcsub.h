/* cdcsub — one CDC subscription: a database's row changes after an LSN,
 * filtered, rendered and handed to a sink, in LSN order, exactly once,
 * as they become durable (subscribeCDC, docs/protocol.md).
 *
 * It reads the log (the engine's DSQ_OP_CDC_READ) until it has caught up,
 * then the database's feed of recent commits; whenever it falls behind
 * what the feed holds it reads the log again. It takes the next batch
 * only when the sink has room, so a slow client costs nothing but its own
 * lag; once it is so far behind that the log no longer holds the next
 * commit, it ends with BUFFER_OVERFLOW.
 *
 * Event objects (the sink wraps them):
 *   {"lsn", "timestamp" (ms since 1970), "table", "operation":
 *    "INSERT"|"UPDATE"|"DELETE", "rowid" (or "primaryKey": {...} for a
 *    WITHOUT ROWID table), "previousRowid" (an UPDATE that moved the row),
 *    "before" (UPDATE, DELETE), "after" (INSERT, UPDATE)}
 *   {"lsn", "timestamp", "operation": "DDL", "sql"}
 * in DESIGN 3.3's JSON, or Cap'n Web's encoding (LSN a BigInt, timestamp
 * a Date).
 *
 * Loop thread only. */
#ifndef DSQ_CDCSUB_H
#define DSQ_CDCSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"
#include "engine/engine.h"
#include "protocol/dosql.h"

enum {
    DSQ_CDCSUB_INSERT = 1,
    DSQ_CDCSUB_UPDATE = 2,
    DSQ_CDCSUB_DELETE = 4,
    DSQ_CDCSUB_DDL = 8,
    DSQ_CDCSUB_ALL = 15,
};

typedef struct dsq_cdcsub dsq_cdcsub;

/* What the subscriptions of one server share: commits rendered for one of
 * them, kept for the others (8 MiB at most, given back when not read for
 * a few seconds), and messages of whole batches (below). The server makes
 * it when it starts and frees it when it stops, after the engine (a
 * stopped subscription lives on until its last engine call returns). */
typedef struct dsq_cdc_cache dsq_cdc_cache;

/* NULL: out of memory. */
dsq_cdc_cache *dsq_cdc_cache_new(void);
void dsq_cdc_cache_free(dsq_cdc_cache *c);

typedef struct dsq_cdcsub_req {
    const char *db;          /* a valid name (copied) */
    bool has_from;           /* from: deliver the commits after this LSN */
    uint64_t from;           /* (else: from the durable end, only new commits) */
    const char *const *tables; /* row events of these tables only (copied); NULL: all */
    size_t ntables;
    unsigned ops;            /* DSQ_CDCSUB_* wanted; 0: all (with tables: all row events) */
    dsq_dosql_enc enc;
    uint64_t session;        /* the engine session of the calls */
} dsq_cdcsub_req;

typedef struct dsq_cdcsub_sink {
    /* The subscription is established (err 0), or could not be (err -1,
     * code and message: INVALID_LSN...). Called once, first. */
    void (*started)(void *ud, int err, dsq_code code, const char *msg);
    /* One event object; `last` is set on the last event of its commit
     * (resuming after that LSN loses nothing). 0, or -1: the sink is gone
     * (the subscription stops). */
    int (*event)(void *ud, const char *text, size_t len, uint64_t lsn, bool last);
    /* Room for more now? When it says no, the owner calls
     * dsq_cdcsub_writable() once there is. */
    bool (*can_send)(void *ud);
    /* The end of a batch of events (several commits, as many as were
     * ready): a sink that gathers events may send them now. May be NULL. */
    void (*flush)(void *ud);
    /* The subscription ended by itself (after started): BUFFER_OVERFLOW
     * (the log no longer holds what it needs) or an error reading it;
     * `last_lsn` is the last commit it delivered whole. */
    void (*ended)(void *ud, dsq_code code, const char *msg, uint64_t last_lsn);
    void *ud;
    /* May be NULL. The next batch is every event of database `db`'s
     * commits after LSN `after` up to `upto` (`epoch`: the database's
     * incarnation, dsq_engine_feed_epoch), without a table filter: 1 when
     * the sink sent them already (it had the same batch gathered for
     * another subscription of the same kind: no event calls follow); 0 to
     * have them one by one as usual, then flush. Called with `db` NULL
     * when the batch announced last will not come as announced (forget
     * it). */
    int (*batch)(void *ud, const char *db, uint64_t epoch, uint64_t after, uint64_t upto);
} dsq_cdcsub_sink;

/* A subscribeCDC request object {fromLSN?, tables?, operations?} into r
 * (db, enc and session are the caller's). fromLSN: a whole number,
 * {"$bigint": "..."} or a decimal string. Table names point into `p`;
 * `tables` holds up to max_tables of them. 0, or -1 with the reason. */
int dsq_cdcsub_parse(json_t *p, dsq_cdcsub_req *r, const char **tables, size_t max_tables, char *err,
                     size_t errlen);

/* Start a subscription, sharing rendered commits through `cache` (which
 * must outlive it); sink->started says later how it went. NULL, with the
 * code and message, when it cannot start at all (out of memory, the
 * database's mailbox full); then no sink function is called. */
dsq_cdcsub *dsq_cdcsub_start(dsq_engine *e, dsq_cdc_cache *cache, const dsq_cdcsub_req *req,
                             const dsq_cdcsub_sink *sink, dsq_code *code, char *msg, size_t msglen);

/* The sink has room again. */
void dsq_cdcsub_writable(dsq_cdcsub *s);

/* A database's CDC served by another node: in a cluster, a keyspace's
 * shard whose primary is elsewhere (the server's, server/rcdc.c). start:
 * 1 when db's primary is this node (start it with dsq_cdcsub_start); 0
 * when started there (*h its handle, the sink called as dsq_cdcsub's,
 * its started() later); -1 when it cannot start (code, msg; no sink call).
 * The other functions are dsq_cdcsub_writable, _stop and _lsn's. */
typedef struct dsq_cdc_remote {
    int (*start)(void *ud, const dsq_cdcsub_req *req, const dsq_cdcsub_sink *sink, void **h, dsq_code *code,
                 char *msg, size_t msglen);
    void (*writable)(void *h);
    void (*stop)(void *h);
    uint64_t (*lsn)(const void *h);
    void *ud;
} dsq_cdc_remote;

/* Stop: the sink is called no more. Frees the subscription (once no
 * engine call of it is in flight). */
void dsq_cdcsub_stop(dsq_cdcsub *s);

/* The last commit delivered whole, and how far the log is durable as
 * far as the subscription knows (lag = the difference). */
uint64_t dsq_cdcsub_lsn(const dsq_cdcsub *s);

/* ---- messages of whole batches, shared (dsq_cdcsub_sink.batch) ----
 * Subscriptions that would send the same bytes for a batch — the same
 * database, incarnation, LSN range, encoding, operations, and sink `tag`
 * (its kind and whatever else goes into its bytes: a JSON-RPC
 * subscription's id) — send the message the first of them made. A
 * direct-mapped cache of the latest batches, in the server's
 * dsq_cdc_cache; loop thread only. */
typedef struct dsq_cdc_batch_key {
    char db[129];
    char tag[32];
    uint64_t epoch, after, upto;
    int enc;
    unsigned ops;
} dsq_cdc_batch_key;

/* The message kept for k (len 0: the batch sends nothing), or NULL; *alt
 * (when alt is not NULL) its other form, for the transport to make once. */
const dsq_buf *dsq_cdc_batch_find(dsq_cdc_cache *c, const dsq_cdc_batch_key *k, dsq_alt **alt);
/* Keep msg[0..len) for k (out of memory: nothing kept, NULL); its other
 * form, empty. */
dsq_alt *dsq_cdc_batch_keep(dsq_cdc_cache *c, const dsq_cdc_batch_key *k, const void *msg, size_t len);

#endif
