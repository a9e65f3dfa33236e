/* objstore — the object store under the storage tiers (DESIGN D6,
 * docs/storage.md "Object store").
 *
 * Five operations on named objects (put, get with an optional byte range,
 * head, list by key prefix, delete), put optionally conditional (only if no
 * object has the key), against one of two backends:
 *
 *   file://DIR            the embedded default: objects are files under DIR,
 *                         written whole or not at all (a temporary file,
 *                         fsync, rename, fsync of the directory).
 *   s3://BUCKET[/PREFIX]  an S3-compatible service over HTTP(S): libcurl's
 *                         multi interface driven by a libuv loop, requests
 *                         signed with AWS SigV4, TLS verified, each attempt
 *                         bounded in time, failed attempts (network errors,
 *                         5xx, 429, short bodies) retried with exponential
 *                         backoff and full jitter.
 *
 * Requests run on the store's own thread; many may be in flight at once.
 * A request's `done` runs on that thread when it has finished, however it
 * finished; dsq_obj_run waits for one instead. Keys are UTF-8 without a
 * leading '/', without empty, "." or ".." segments, at most
 * DSQ_OBJ_KEY_MAX bytes; the store's prefix (s3) is not part of them. */
#ifndef DSQ_OBJSTORE_H
#define DSQ_OBJSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/list.h"

#define DSQ_OBJ_KEY_MAX 900 /* bytes: S3 allows 1024 with the prefix */

typedef struct dsq_obj dsq_obj;

typedef struct dsq_obj_cfg {
    const char *url;        /* file://DIR or s3://BUCKET[/PREFIX] */
    /* s3 only; NULL takes the AWS_* environment variable named */
    const char *endpoint;   /* http(s)://HOST[:PORT] (AWS_ENDPOINT_URL; else AWS's for the region) */
    const char *region;     /* AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1 */
    const char *access_key; /* AWS_ACCESS_KEY_ID */
    const char *secret_key; /* AWS_SECRET_ACCESS_KEY */
    bool virtual_host;      /* BUCKET.HOST/KEY instead of HOST/BUCKET/KEY */
    unsigned timeout_ms;    /* one attempt (default 30 s) */
    unsigned connect_timeout_ms; /* default 5 s */
    unsigned retries;       /* attempts after the first (0: none) */
    unsigned backoff_ms;    /* the first retry's ceiling; doubles each time (default 100) */
    unsigned max_backoff_ms; /* default 5 s */
    unsigned max_inflight;  /* requests on the wire at once (default 16) */
} dsq_obj_cfg;

typedef enum dsq_obj_op {
    DSQ_OBJ_PUT,
    DSQ_OBJ_GET,
    DSQ_OBJ_HEAD,
    DSQ_OBJ_LIST,
    DSQ_OBJ_DELETE,
} dsq_obj_op;

typedef enum dsq_obj_status {
    DSQ_OBJ_OK = 0,
    DSQ_OBJ_NOT_FOUND, /* get/head: no object has the key */
    DSQ_OBJ_EXISTS,    /* conditional put: an object has the key */
    DSQ_OBJ_RANGE,     /* get: the range starts past the object's end */
    DSQ_OBJ_FAILED,    /* refused, or failed after the retries: msg says why */
    DSQ_OBJ_TIMEOUT,   /* the last attempt ran out of time */
    DSQ_OBJ_CANCELLED, /* the store was closed first */
} dsq_obj_status;

typedef struct dsq_obj_item {
    char *key;
    uint64_t size;
    int64_t mtime_ms;   /* when it was written (ms since 1970; 0: not said) */
} dsq_obj_item;

typedef struct dsq_obj_req dsq_obj_req;
typedef void (*dsq_obj_done_fn)(dsq_obj_req *r);

struct dsq_obj_req {
    /* in */
    dsq_obj_op op;
    char key[DSQ_OBJ_KEY_MAX + 1]; /* list: the prefix (may be empty) */
    const void *body;              /* put: the object's bytes, kept by the caller until done */
    size_t body_len;
    bool if_absent;                /* put only if no object has the key */
    uint64_t off, len;             /* get: bytes [off, off+len); len 0: to the end */
    dsq_obj_done_fn done;          /* on the store's thread; not with dsq_obj_run */
    void *ud;
    /* out */
    dsq_obj_status status;
    int http_status;               /* s3: of the last attempt (0: none answered) */
    unsigned attempts;
    char msg[256];                 /* why, when not OK */
    dsq_buf data;                  /* get: the bytes */
    uint64_t size;                 /* head: the object's size; get: its bytes received */
    dsq_obj_item *items;           /* list: keys under the prefix, ascending */
    size_t nitems;
    /* the store's */
    dsq_qnode link;                /* on the store's queue, or the S3 backend's */
    void *priv;
};

/* Open the store `cfg->url` names: its thread starts; a file:// directory
 * is made if missing. NULL with a message when the URL or settings are
 * wrong or the thread cannot start. Nothing is sent yet: a store that is
 * down shows in the requests. */
dsq_obj *dsq_obj_open(const dsq_obj_cfg *cfg, char *err, size_t errlen);

/* Start `r` (its out fields are reset). `done` runs exactly once, on the
 * store's thread, maybe before this returns. Any thread. */
void dsq_obj_submit(dsq_obj *o, dsq_obj_req *r);

/* Run `r` and wait for it; returns r->status. Not on the store's thread. */
dsq_obj_status dsq_obj_run(dsq_obj *o, dsq_obj_req *r);

/* Free what a finished request holds (data, items); it can be reused. */
void dsq_obj_req_clear(dsq_obj_req *r);

/* Requests queued and on the wire (any thread). */
size_t dsq_obj_pending(dsq_obj *o);

/* Cancel what has not finished (DSQ_OBJ_CANCELLED; its `done` runs), stop
 * the thread, free the store. */
void dsq_obj_close(dsq_obj *o);

/* "put", "get", ... and "ok", "not found", ... for messages. */
const char *dsq_obj_op_name(dsq_obj_op op);
const char *dsq_obj_status_name(dsq_obj_status s);

/* The wait before retry `attempt` (1, 2, ...) of anything that failed
 * against the store: uniform in [0, ceiling], the ceiling base *
 * 2^(attempt-1) up to cap ("full jitter"); `rnd` a random 64-bit number
 * (dsq_obj_backoff_rnd). Every retry loop against the store waits so:
 * a request's own retries (s3), the tier's uploads, drops and listing. */
uint64_t dsq_obj_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t rnd);

/* A random number for dsq_obj_backoff_ms (per thread; jitter, not secrets). */
uint64_t dsq_obj_backoff_rnd(void);

/* Is `key` a valid key (see above)? */
bool dsq_obj_key_valid(const char *key);

#endif
