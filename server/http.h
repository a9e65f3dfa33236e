/* http — HTTP/1.1 request parsing (llhttp) and response heads.
 *
 * The codec knows nothing of sockets: feed it bytes, it hands back whole
 * requests through callbacks. It enforces the header and body size limits
 * and tells upgrades, pauses and errors apart. The connection (conn.c) owns
 * the requests it is handed and answers them in order. */
#ifndef DSQ_HTTP_H
#define DSQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "common/buf.h"
#include "common/errors.h"
#include "common/list.h"

typedef struct dsq_http_header {
    const char *name;  /* NUL-terminated, as sent */
    const char *value; /* NUL-terminated, surrounding whitespace trimmed */
    size_t value_len;
} dsq_http_header;

typedef struct dsq_http_req dsq_http_req;
struct dsq_http_req {
    /* Parsed by the codec. Strings point into `raw` and live as long as the
     * request. */
    int method;               /* llhttp_method_t */
    uint8_t http_major;       /* 1 */
    uint8_t http_minor;       /* 0 or 1 */
    const char *target;       /* request target as sent ("/a/b?x=1") */
    const char *path;         /* target up to '?' (NUL-terminated copy) */
    const char *query;        /* after '?', or "" */
    dsq_http_header *headers; /* owned array */
    size_t nheaders;
    int64_t content_length;   /* -1 when absent */
    bool chunked;             /* Transfer-Encoding: chunked */
    bool keep_alive;          /* the client allows another request after this */
    bool upgrade;             /* a complete Upgrade request (WebSocket) */
    bool expect_continue;     /* Expect: 100-continue */
    bool discard_body;        /* set in on_head: read the body, keep none */
    dsq_buf body;             /* the request body (de-chunked) */
    dsq_buf raw;              /* owned storage for target and header bytes */

    /* Owned by whoever holds the request after on_request (conn.c). */
    dsq_qnode link;           /* on its connection's pipeline */
    void *owner;              /* the connection */
    uint64_t start_ns;        /* when its first byte arrived */
    int route;                /* router's route id */
    char db[129];             /* database name from the path, or "" */
    char ks[129];             /* keyspace name from the path, or "" */
    int status;               /* response status once answered, else 0 */
    bool answered;            /* a complete response is in `out` */
    bool close_after;         /* close the connection after this response */
    bool streaming;           /* a chunked response has begun and not ended */
    dsq_buf out;              /* response bytes waiting for their turn */
    char *token;              /* owned; the bearer token presented, or NULL */
    size_t token_len;
    /* Set by a handler answering later: called if the connection goes away
     * before the response is complete (the request is then freed). */
    void (*abandon)(void *arg);
    void *abandon_arg;
};

/* Callbacks from the codec to its owner. */
typedef struct dsq_http_parser_cb {
    /* The head (request line and headers) of `req` is complete; the body, if
     * any, has not been read. Return 0 to read on, or 1 to stop here: the
     * feed then returns DSQ_HTTP_REJECT and dsq_http_parser_take() yields the
     * request. The callee may set req->discard_body. */
    int (*on_head)(void *ud, dsq_http_req *req);
    /* `req` is complete and now belongs to the callee. Return 0 to go on
     * parsing, 1 to pause (the feed returns DSQ_HTTP_PAUSED). */
    int (*on_request)(void *ud, dsq_http_req *req);
} dsq_http_parser_cb;

enum dsq_http_feed_result {
    DSQ_HTTP_OK = 0,  /* all bytes consumed */
    DSQ_HTTP_PAUSED,  /* on_request asked to pause; resume later */
    DSQ_HTTP_UPGRADE, /* an upgrade request was handed over; the rest of the
                         bytes belong to the new protocol */
    DSQ_HTTP_REJECT,  /* on_head refused the request; take it */
    DSQ_HTTP_ERROR,   /* malformed or over a limit: see err_status */
};

typedef struct dsq_http_parser {
    llhttp_t llh;                   /* the llhttp state */
    llhttp_settings_t settings;     /* its callbacks (point back to us) */
    const dsq_http_parser_cb *cb;   /* our owner's callbacks */
    void *ud;                       /* passed to cb */
    size_t max_header_size;         /* request line + headers */
    size_t max_headers;             /* header count */
    size_t max_body_size;           /* body bytes */
    dsq_http_req *cur;              /* owned; the request being parsed */
    int hstate;                     /* in a header name, a value, or neither */
    struct dsq_http_hoff *offs;     /* owned; header offsets while parsing */
    size_t noffs, capoffs;          /* used and allocated entries of offs */
    size_t head_bytes;              /* head bytes of the current request */
    size_t target_len;              /* request-target bytes */
    bool rejecting;                 /* on_head refused the current request */
    const char *feed_end;           /* end of the bytes being fed */
    uint64_t chunk_left;            /* data bytes left in the current chunk */
    int crlf_want;                  /* bytes of a chunk's closing CRLF not yet checked */
    int err_status;                 /* on DSQ_HTTP_ERROR: 400, 413, 431, 505 */
    const char *err_reason;         /* on DSQ_HTTP_ERROR: static text */
} dsq_http_parser;

void dsq_http_parser_init(dsq_http_parser *p, const dsq_http_parser_cb *cb, void *ud,
                          size_t max_header_size, size_t max_body_size);
void dsq_http_parser_free(dsq_http_parser *p);

/* Parse `len` bytes. *consumed says how many were used (all of them unless
 * the result is PAUSED, UPGRADE or REJECT). After ERROR the parser is dead. */
int dsq_http_parser_feed(dsq_http_parser *p, const char *data, size_t len, size_t *consumed);

/* Continue after DSQ_HTTP_PAUSED. */
void dsq_http_parser_resume(dsq_http_parser *p);

/* The half-parsed request after DSQ_HTTP_REJECT (caller owns it), else NULL. */
dsq_http_req *dsq_http_parser_take(dsq_http_parser *p);

/* True between requests (no byte of a next request seen yet). */
bool dsq_http_parser_idle(const dsq_http_parser *p);

/* True while reading a body (its head has been parsed). */
bool dsq_http_parser_in_body(const dsq_http_parser *p);

void dsq_http_req_free(dsq_http_req *req);

/* The value of header `name` (case-insensitive), or NULL. */
const char *dsq_http_header_get(const dsq_http_req *req, const char *name, size_t *len);

/* Does a comma-separated header list contain `token` (case-insensitive)? */
bool dsq_http_header_has_token(const dsq_http_req *req, const char *name, const char *token);

/* Copy the decoded value of query parameter `name` into out (NUL-terminated).
 * Returns its length, or -1 when absent, malformed or longer than outlen-1. */
long dsq_http_query_get(const dsq_http_req *req, const char *name, char *out, size_t outlen);

/* Percent-decode `in[0..n)` into out (size ≥ n+1). '+' stays '+'. Returns
 * the length, or -1 for a bad escape or a decoded NUL. */
long dsq_http_pct_decode(const char *in, size_t n, char *out);

/* Standard reason phrase ("Not Found"); "Unknown" for others. */
const char *dsq_http_reason(int status);

/* The status an error code answers with over HTTP (docs/protocol.md):
 * 400 a request the client must change; 401/403 auth; 404 a named thing
 * that does not exist; 408 a time limit; 409 a conflict with other writers
 * or constraints; 413 a size limit; 429 a quota; 500 our fault; 503 a
 * server limit, or a server that is going away. */
int dsq_http_status_of(dsq_code code);

/* Append a response head: status line, Date, Server, Content-Type (if
 * ctype), Content-Length (if content_length ≥ 0) or chunked encoding (if
 * -1), Connection: close or keep-alive, the `extra` header lines (each ending
 * in \r\n; may be NULL), and the blank line. */
int dsq_http_format_head(dsq_buf *out, int status, const char *ctype, int64_t content_length,
                         bool keep_alive, const char *extra);

#endif
