/* http — dosql's connection to one database of a dosqld: the /query route
 * and JSON-RPC over /rpc, through one libcurl easy handle (keep-alive). */
#ifndef DOSQL_HTTP_H
#define DOSQL_HTTP_H

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#include "common/buf.h"

/* Return values besides 0. */
enum {
    DOSQL_EFAIL = -1,        /* the server (or the shell) refused: err has code and message */
    DOSQL_EUNREACHABLE = -2, /* no answer from the server: err.message says why */
    DOSQL_EINTR = -3,        /* interrupted by SIGINT */
};

/* Why a call failed. code is a DESIGN error code ("SYNTAX_ERROR"), or
 * empty when there is none (unreachable, interrupted). */
typedef struct dosql_err {
    char code[48];     /* e.g. "SYNTAX_ERROR"; "" for transport failures */
    char message[1024]; /* human-readable, one line */
} dosql_err;

/* Fill err; returns DOSQL_EFAIL for convenience. */
int dosql_err_set(dosql_err *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef struct dosql_http {
    CURL *curl;                          /* owned; one handle, so the connection is reused */
    struct curl_slist *headers;          /* owned; Content-Type, Authorization, ... */
    char *base;                          /* owned: http://HOST:PORT/v1/db/NAME */
    char *query_url;                     /* owned: base + "/query" */
    char *rpc_url;                       /* owned: base + "/rpc" */
    dsq_buf body;                        /* the response being received */
    long next_id;                        /* the next JSON-RPC request id */
    volatile sig_atomic_t *interrupted;  /* not owned; non-zero aborts a transfer */
    char curl_err[CURL_ERROR_SIZE];      /* libcurl's message for the last failure */
} dosql_http;

/* Turn a user's URL into the canonical base http(s)://HOST[:PORT]/v1/db/NAME.
 * Accepts .../v1/db/NAME and .../db/NAME, with or without a trailing '/'.
 * Returns a malloc'd string (the caller frees it), or NULL with the reason
 * in why. */
char *dosql_http_parse_url(const char *url, char *why, size_t whylen);

/* Set up h for the database at base (canonical, from dosql_http_parse_url).
 * token may be NULL or "" (no Authorization header). interrupted is polled
 * during transfers. curl_global_init must have been called. Returns 0, or
 * -1 when out of memory. Close with dosql_http_close either way. */
int dosql_http_open(dosql_http *h, const char *base, const char *token,
                    volatile sig_atomic_t *interrupted);

/* Release everything h holds. */
void dosql_http_close(dosql_http *h);

/* GET the database's route `suffix` ("/export"): the body into out. 0,
 * or an error as the others. */
int dosql_http_get(dosql_http *h, const char *suffix, dsq_buf *out, dosql_err *err);

/* Run one statement: POST /query, or the JSON-RPC method query with
 * transactionId when txid is not NULL. On 0, *result is the QueryResult
 * (the caller json_decref's it). */
int dosql_http_query(dosql_http *h, const char *sql, size_t len, const char *txid,
                     json_t **result, dosql_err *err);

/* Call a JSON-RPC method on /rpc. params is stolen (may be NULL). On 0,
 * *result is the "result" member (the caller json_decref's it). */
int dosql_http_rpc(dosql_http *h, const char *method, json_t *params, json_t **result,
                   dosql_err *err);

#endif
