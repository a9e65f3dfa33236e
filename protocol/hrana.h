/* hrana — libSQL's Hrana protocol (versions 1 and 2, JSON) on the engine,
 * so that libSQL's clients (@libsql/client, and the ORMs on it) work
 * against dosqld unchanged.
 *
 * A Hrana *stream* is a SQLite connection as its client sees it: its
 * statements run one after another, and a transaction it opens with SQL
 * (BEGIN ... COMMIT) is its own. Here a stream is an engine session of
 * its own; the SQL that opens and ends transactions is read here and
 * becomes the engine's beginTransaction, commit and rollback (the engine
 * refuses it as SQL), and `PRAGMA foreign_keys = OFF|ON` becomes the
 * stream's setting, passed on its calls (dsq_call.fk_off).
 *
 * This module is the streams and their requests ("execute", "batch",
 * "sequence", "store_sql", "close_sql", "close", "get_autocommit") and the
 * JSON of Hrana's values and results. The transports (HTTP's /v2/pipeline
 * with its batons, WebSocket's hrana1/hrana2 messages) are the server's
 * (server/hrana.c). Everything here runs on the loop thread except the
 * calls' encoders (workers). */
#ifndef DSQ_HRANA_H
#define DSQ_HRANA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct dsq_hrana_limits {
    size_t max_params;   /* values in one statement's args and named_args */
    size_t max_steps;    /* steps of a batch, statements of a sequence */
    size_t max_sqls;     /* stored SQL texts (store_sql) of one owner */
} dsq_hrana_limits;

/* SQL texts stored by store_sql: a WebSocket connection's (shared by its
 * streams), or an HTTP stream's own. */
typedef struct dsq_hrana_sqls dsq_hrana_sqls;

dsq_hrana_sqls *dsq_hrana_sqls_new(void);
void dsq_hrana_sqls_free(dsq_hrana_sqls *q);
/* store_sql {sql_id, sql} and close_sql {sql_id}: 0, or -1 with Hrana's
 * error message in why. */
int dsq_hrana_sqls_store(dsq_hrana_sqls *q, json_t *req, size_t max, char *why, size_t n);
int dsq_hrana_sqls_close(dsq_hrana_sqls *q, json_t *req, char *why, size_t n);
/* A request whose statements name stored SQL (sql_id) gets the text in
 * their place ("sql"), so that a later close_sql does not change what
 * it runs. 0, or -1 with the message (no such id, both or neither). */
int dsq_hrana_sqls_resolve(const dsq_hrana_sqls *q, json_t *req, char *why, size_t n);

typedef struct dsq_hrana_stream dsq_hrana_stream;

/* A request's outcome: ok with the response object (JSON text:
 * {"type": "execute", "result": ...}), or not with an error object
 * ({"message", "code"}). Called exactly once per request, on the loop
 * thread, possibly before dsq_hrana_stream_request returns. A request
 * dropped by dsq_hrana_stream_close is called there with json NULL (no
 * answer: free what ud holds); never later. */
typedef void (*dsq_hrana_done_fn)(void *ud, bool ok, const char *json, size_t len);

/* A stream on database `db` for a client holding `scope` (DSQ_SCOPE_*),
 * engine session `session` (unique: the stream's transactions end with
 * it). `sqls`: the stored texts it may name, borrowed (it outlives the
 * stream); NULL: the stream keeps its own (HTTP). */
dsq_hrana_stream *dsq_hrana_stream_new(dsq_engine *e, const dsq_hrana_limits *lim, const char *db,
                                       unsigned scope, uint64_t session, dsq_hrana_sqls *sqls);
/* The scope of later requests (an HTTP request's token, checked again). */
void dsq_hrana_stream_set_scope(dsq_hrana_stream *s, unsigned scope);
/* Queue one stream request (a JSON object with "type"; anything else is
 * answered with an error in its turn; a reference is taken). Requests run
 * and are answered in the order queued, one at a time. A "close"
 * request answers, then the stream is closed as by dsq_hrana_stream_close
 * except that the caller still frees it with that call. */
void dsq_hrana_stream_request(dsq_hrana_stream *s, json_t *req, dsq_hrana_done_fn done, void *ud);
/* The results that requests keep for their answers (rows of execute and
 * batch steps) are bounded together by engine.max_result_bytes, as one
 * request's are elsewhere: past it a statement fails with
 * RESOURCE_EXHAUSTED and the later ones do not run. By default each
 * request has a budget of its own (a WebSocket answers each at once);
 * after this call the requests queued from now on share one (an HTTP
 * pipeline, answered in one response), until the next call. Only while
 * the stream is idle. */
void dsq_hrana_stream_share_budget(dsq_hrana_stream *s);
/* Is a request running or queued? */
bool dsq_hrana_stream_busy(const dsq_hrana_stream *s);
/* Did a "close" request end it? */
bool dsq_hrana_stream_ended(const dsq_hrana_stream *s);
/* Is a transaction open on it? */
bool dsq_hrana_stream_in_txn(const dsq_hrana_stream *s);
/* The client is done with it (or gone): its requests not answered yet
 * are dropped (their done is called with NULL now), its transaction rolls
 * back, and it is freed once the call it has with the engine (if any)
 * returns. */
void dsq_hrana_stream_close(dsq_hrana_stream *s);

/* Hrana's error object for a dosqld code and message: SQLite's codes
 * (SQLITE_CONSTRAINT, ...) where the error is SQLite's, else dosqld's own
 * code name. Appends to out. */
void dsq_hrana_error_json(dsq_buf *out, dsq_code code, const char *msg);

#endif
