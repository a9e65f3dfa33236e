/* etcd — a small, blocking client of etcd's v3 API, over the JSON
 * gateway every etcd member serves on its client URLs (HTTP/1.1 and
 * libcurl: no gRPC, no protobuf).
 *
 * For the cluster's topology in etcd: reads, writes, compare-and-swap
 * transactions on mod_revision (the primitive that makes two nodes never
 * both win), leases that keep a node's keys alive while it lives, and
 * watches that say what changed. Every call blocks until etcd answers or
 * its timeout passes: call them from a thread of their own, never from
 * the event loop.
 *
 *     dsq_etcd_cfg cfg = {.endpoints = "http://10.0.0.1:2379,http://10.0.0.2:2379",
 *                         .prefix = "/dosqld/", .timeout_ms = 2000};
 *     dsq_etcd *e = dsq_etcd_new(&cfg, err, sizeof err);
 *     int64_t lease, ttl, rev;
 *     dsq_etcd_lease_grant(e, 10, &lease, &ttl, err, sizeof err);
 *     dsq_etcd_kv cur = {0};
 *     int rc = dsq_etcd_cas(e, "leader", 0, "n1", 2, lease, &cur, &rev, err, sizeof err);
 *     // 0: n1 leads (its key's mod_revision is rev); DSQ_ETCD_ECONFLICT:
 *     // cur says who does, and from which revision to watch for a change
 *     dsq_etcd_kv_clear(&cur);
 *     dsq_etcd_free(e);
 *
 * Keys. Every key a caller passes is below the handle's prefix
 * (cfg.prefix, prepended as is: "/dosqld/" and "leader" make
 * "/dosqld/leader"), and every key handed back has it stripped. A
 * "prefix" argument (range, watch) is below it too: "" is every key under
 * the handle's prefix.
 *
 * Endpoints. cfg.endpoints is a comma-separated list; a request goes to
 * the endpoint that last answered and, when it cannot reach that one
 * (nothing was sent: connection refused, no route, the connect timeout,
 * TLS failing before the request), to the next, round the list once. A
 * member that answers "no leader" (it is cut off from the others; the
 * request was not applied) is passed over the same way. A request that
 * reached a member and then failed (the timeout after sending, the
 * connection dropped) is not sent again: it may have been applied, and
 * resending a compare-and-swap would misreport its own success as a
 * conflict. Each attempt has the whole timeout_ms.
 *
 * Auth. With cfg.user, the handle authenticates (/v3/auth/authenticate)
 * before its first request and sends the token it got in every request's
 * Authorization header; when etcd says the token is no longer valid it
 * authenticates again, once, and sends the request again (the refused one
 * was not applied).
 *
 * TLS. For https:// endpoints: cfg.ca_file verifies the members'
 * certificates (the system's CAs when NULL); cfg.cert_file and key_file
 * are the client certificate a member with --client-cert-auth asks for.
 *
 * Errors. Every call returns 0 or a negative DSQ_ETCD_E* code, and writes
 * a message for any code into err[errlen] (err may be NULL). Besides
 * DSQ_ETCD_EFAIL (etcd unreachable, a timeout, an error etcd answered
 * with, an answer that is not what the API says), some calls have codes
 * of their own for outcomes a caller acts on: a missing key, a failed
 * compare, a lease that is gone, a watch's start revision compacted away.
 *
 * Threads. A handle is one thread's at a time (it keeps its connection,
 * the endpoint that worked and the token); calls on one handle from two
 * threads at once are caught by DSQ_ASSERT in checked builds. A watch
 * blocks its handle for as long as it runs, so a thread that watches uses
 * a handle of its own. The only state shared between handles is libcurl's
 * (curl_global_init, once per process).
 *
 * What etcd 3.4's gateway does (found against etcd 3.4.23, and in its
 * api/etcdserverpb/rpc.proto), which the code relies on:
 * - Paths are POST /v3/kv/range, put, deleterange, txn, compaction;
 *   /v3/lease/grant, keepalive, revoke (also /v3/kv/lease/revoke),
 *   timetolive; /v3/watch; /v3/auth/authenticate. (3.3 served /v3beta,
 *   3.2 /v3alpha; 3.4 still answers /v3beta too.)
 * - Bytes (keys, values) are base64 with padding. int64 fields
 *   (revisions, lease ids, TTLs) come back as JSON strings
 *   ("revision":"12"); requests may give them as numbers or strings. Lease
 *   ids are above 2^53, so they are sent as strings.
 * - Fields at their default value are left out of answers (proto3 JSON):
 *   an empty value has no "value", a PUT event no "type", a transaction
 *   whose compares failed no "succeeded", a range that found nothing no
 *   "kvs" and no "count", a delete that removed nothing no "deleted", a
 *   keepalive of a lease that is gone no "TTL", and a watch's first
 *   answer no "watch_id" (it is 0).
 * - An error is an HTTP status from its gRPC code (404 for NotFound, 400
 *   for InvalidArgument, 401 for Unauthenticated...) and a body
 *   {"error":msg,"message":msg,"code":grpc_code}. The streaming calls
 *   (watch, keepalive) wrap each answer in {"result":{...}}, and their
 *   errors in {"error":{"grpc_code":...,"message":...}}.
 * - Keepalive is a streaming call: the request body is one request, the
 *   answer one {"result":...} line, then the stream ends. A lease that is
 *   gone is not an error there: the answer has its ID and no TTL. Revoking
 *   a lease that is gone is one: 404, code 5, "requested lease not found".
 * - A lease's TTL is at least 1.5 election timeouts, rounded up to whole
 *   seconds: with etcd's default 1000 ms election timeout a grant of 1 s
 *   becomes 2 s (the answer says the TTL it chose). The leader revokes
 *   expired leases in a sweep every 500 ms, so a lease's keys go up to
 *   about half a second after its TTL ran out.
 * - A watch's answer is a stream of JSON objects, one per line, in HTTP
 *   chunks that need not end where the objects do. The first says
 *   "created":true, with the store's current revision in its header even
 *   when events from an older start revision follow. Events from before
 *   the watch was created arrive together, several to an answer. A start
 *   revision already compacted away is no HTTP error: "created", then
 *   {"canceled":true,"compact_revision":"N"} with no revision in the
 *   header, and the server keeps the HTTP stream open after it (the
 *   client must close it). An invalid token is no HTTP error either: one
 *   answer with "created":true, "canceled":true, "watch_id":"-1" and the
 *   error in "cancel_reason".
 * - Auth: the token goes in the Authorization header as is (no
 *   "Bearer"). A request without a token to a cluster with auth on fails
 *   with code 3 "user name is empty"; a token the member does not know
 *   with code 16 "invalid auth token"; one issued before the auth store
 *   changed, with "revision of auth store is old". With the default
 *   "simple" tokens, a token is known only to the member that issued it
 *   (so a fail-over to another endpoint means authenticating again), and
 *   turning auth off and on again forgets every token.
 * - After a compaction (/v3/kv/compaction) at revision N, revisions
 *   below N are gone: a watch from one is canceled with
 *   compact_revision N (from N on it starts), a range at one fails with
 *   code 11, "required revision has been compacted".
 * - A range's "limit" cuts the answer at that many keys and says
 *   "more":true when keys were left (absent: none were); "count" is
 *   every key of the range, not those of the page. With "revision" the
 *   range reads the store as it was then (the header's revision is still
 *   the store's present one). */
#ifndef DSQ_ETCD_H
#define DSQ_ETCD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define DSQ_ETCD_EFAIL -1      /* any other failure: the message says which */
#define DSQ_ETCD_ENOTFOUND -2  /* get, delete: no such key */
#define DSQ_ETCD_ECONFLICT -3  /* cas, txn: a compare failed (nothing was written by then-ops) */
#define DSQ_ETCD_ELEASE -4     /* keepalive, revoke (and put under a lease): the lease is gone */
#define DSQ_ETCD_ECOMPACTED -5 /* watch, range_page: the revision asked for was compacted away */

typedef struct dsq_etcd dsq_etcd;

typedef struct dsq_etcd_cfg {
    const char *endpoints;       /* "http://127.0.0.1:2379,https://..." (copied) */
    const char *prefix;          /* before every key, e.g. "/dosqld/"; NULL: none (copied) */
    unsigned timeout_ms;         /* each request's bound, per endpoint tried; 0: 5000 */
    unsigned connect_timeout_ms; /* each endpoint's connection; 0: timeout_ms */
    const char *user;            /* auth; NULL: none (copied) */
    const char *password;        /* (copied, wiped at free) */
    const char *ca_file;         /* https: the members' CA; NULL: the system's (copied) */
    const char *cert_file;       /* https: a client certificate; NULL: none (copied) */
    const char *key_file;        /* its private key (copied) */
} dsq_etcd_cfg;

/* A key-value pair as etcd holds it. */
typedef struct dsq_etcd_kv {
    char *key;                   /* owned; without the handle's prefix, NUL-terminated */
    size_t key_len;
    char *value;                 /* owned; value_len bytes (any), then a NUL; never NULL once filled */
    size_t value_len;
    int64_t create_revision;     /* the revision that created the key (since its last delete) */
    int64_t mod_revision;        /* the revision that last wrote it */
    int64_t version;             /* writes since its creation, 1 for the first */
    int64_t lease;               /* the lease it is under, 0 for none */
} dsq_etcd_kv;

/* Free a kv's key and value; the kv is zeroed (clearing a zeroed one is
 * a no-op). */
void dsq_etcd_kv_clear(dsq_etcd_kv *kv);

/* Free n kvs from dsq_etcd_range and the array. */
void dsq_etcd_kvs_free(dsq_etcd_kv *kvs, size_t n);

/* A handle on the etcd cluster cfg names (cfg is copied). Nothing is
 * sent yet: etcd need not be up. NULL, with a message, when cfg is not
 * valid (no endpoint, an endpoint neither http:// nor https://) or
 * memory runs out. */
dsq_etcd *dsq_etcd_new(const dsq_etcd_cfg *cfg, char *err, size_t errlen);

/* Close its connection and free it (NULL: nothing). */
void dsq_etcd_free(dsq_etcd *e);

/* The endpoint requests go to first: the one that last answered (the
 * list's first before any did). Valid while the handle is. */
const char *dsq_etcd_endpoint(const dsq_etcd *e);

/* One key's value and revisions, into *out (which the caller clears with
 * dsq_etcd_kv_clear), and the store's revision of the answer into *rev
 * (may be NULL). 0; DSQ_ETCD_ENOTFOUND when there is no such key (*rev
 * set, *out zeroed); DSQ_ETCD_EFAIL. */
int dsq_etcd_get(dsq_etcd *e, const char *key, dsq_etcd_kv *out, int64_t *rev, char *err, size_t errlen);

/* Every key below prefix, in key order, as an array of *n kvs that the
 * caller frees with dsq_etcd_kvs_free (NULL when there are none), and the
 * store's revision of the answer into *rev (may be NULL): a watch from
 * *rev + 1 misses no change after what this read. 0 or DSQ_ETCD_EFAIL.
 * The whole range is one answer: meant for the small sets of keys a
 * topology has; larger sets go page by page (dsq_etcd_range_page). */
int dsq_etcd_range(dsq_etcd *e, const char *prefix, dsq_etcd_kv **out, size_t *n, int64_t *rev, char *err,
                   size_t errlen);

/* One page of the keys below prefix, for sets too large for one answer:
 * at most limit keys (0: no bound) in key order, from the first key after
 * `after` (a key below prefix as the pages hand them back, without the
 * handle's prefix; NULL: from the first), as the store was at revision
 * at_rev (0: now). *more (may be NULL) says whether keys are left after
 * this page; *rev (may be NULL) is the revision read, at_rev or, with 0,
 * the answer's. The whole set as one snapshot: the first page at 0, the
 * next ones at its *rev, each after the last key of the one before, while
 * *more; a watch from *rev + 1 then misses nothing. The kvs are as
 * dsq_etcd_range's. 0; DSQ_ETCD_ECOMPACTED when at_rev was compacted away
 * meanwhile (start again from the first page); DSQ_ETCD_EFAIL. */
int dsq_etcd_range_page(dsq_etcd *e, const char *prefix, const char *after, size_t limit, int64_t at_rev,
                        dsq_etcd_kv **out, size_t *n, bool *more, int64_t *rev, char *err, size_t errlen);

/* Set key to value[0..len), under lease (0: none), and the store's
 * revision after it (the key's new mod_revision) into *rev (may be NULL).
 * 0; DSQ_ETCD_ELEASE when the lease is gone (nothing written);
 * DSQ_ETCD_EFAIL. */
int dsq_etcd_put(dsq_etcd *e, const char *key, const void *value, size_t len, int64_t lease, int64_t *rev, char *err,
                 size_t errlen);

/* Delete one key, and the store's revision after it into *rev (may be
 * NULL). 0; DSQ_ETCD_ENOTFOUND when there was no such key (nothing
 * changed); DSQ_ETCD_EFAIL. */
int dsq_etcd_delete(dsq_etcd *e, const char *key, int64_t *rev, char *err, size_t errlen);

/* Compare-and-swap: set key to value[0..len) (under lease, 0: none) only
 * if its mod_revision is mod_revision now, where 0 means that the key
 * must not exist. One transaction: of two callers that expect the same
 * revision, exactly one succeeds.
 * 0: written; *rev (may be NULL) is the store's revision after it, the
 * key's new mod_revision (the one to expect next time).
 * DSQ_ETCD_ECONFLICT: not written, because the key is not at that
 * revision: *cur (may be NULL; clear it with dsq_etcd_kv_clear) is the
 * key as it is, or zeroed (mod_revision 0) when it does not exist, so
 * the caller can decide and retry with cur->mod_revision; *rev is the
 * store's revision of that answer.
 * DSQ_ETCD_ELEASE, DSQ_ETCD_EFAIL as dsq_etcd_put. */
int dsq_etcd_cas(dsq_etcd *e, const char *key, int64_t mod_revision, const void *value, size_t len, int64_t lease,
                 dsq_etcd_kv *cur, int64_t *rev, char *err, size_t errlen);

/* A general transaction, for what cas does not cover (release a key only
 * while it is still ours, write two keys together): if every compare
 * holds, the `then` ops run, else the `otherwise` ops, all in one
 * revision. A key may be written only once in a transaction (etcd's
 * rule). */
enum {
    DSQ_ETCD_CMP_VERSION,        /* the key's version (0: it does not exist) */
    DSQ_ETCD_CMP_CREATE,         /* its create_revision (0: it does not exist) */
    DSQ_ETCD_CMP_MOD,            /* its mod_revision (0: it does not exist) */
    DSQ_ETCD_CMP_VALUE,          /* its value, bytewise */
};
enum { DSQ_ETCD_EQ, DSQ_ETCD_NE, DSQ_ETCD_LT, DSQ_ETCD_GT };

typedef struct dsq_etcd_cmp {
    const char *key;
    int target;                  /* DSQ_ETCD_CMP_* */
    int op;                      /* the key's target OP num (or value): DSQ_ETCD_EQ... */
    int64_t num;                 /* VERSION, CREATE, MOD */
    const void *value;           /* VALUE */
    size_t value_len;
} dsq_etcd_cmp;

enum { DSQ_ETCD_PUT, DSQ_ETCD_DELETE };

typedef struct dsq_etcd_op {
    int type;                    /* DSQ_ETCD_PUT or DSQ_ETCD_DELETE (of the one key) */
    const char *key;
    const void *value;           /* PUT */
    size_t value_len;
    int64_t lease;               /* PUT: 0 for none */
} dsq_etcd_op;

/* 0: the compares held and the `then` ops ran; DSQ_ETCD_ECONFLICT: one
 * did not, the `otherwise` ops ran. Either way *rev (may be NULL) is the
 * store's revision after it. DSQ_ETCD_ELEASE, DSQ_ETCD_EFAIL as
 * dsq_etcd_put (nothing ran). */
int dsq_etcd_txn(dsq_etcd *e, const dsq_etcd_cmp *cmp, size_t ncmp, const dsq_etcd_op *then, size_t nthen,
                 const dsq_etcd_op *otherwise, size_t notherwise, int64_t *rev, char *err, size_t errlen);

/* A new lease of ttl_s seconds: its id into *id, the TTL etcd chose (at
 * least its minimum, see above) into *ttl (may be NULL). 0 or
 * DSQ_ETCD_EFAIL. */
int dsq_etcd_lease_grant(dsq_etcd *e, int64_t ttl_s, int64_t *id, int64_t *ttl, char *err, size_t errlen);

/* Renew a lease once: its TTL starts again; the seconds it now has into
 * *ttl (may be NULL). 0; DSQ_ETCD_ELEASE when it is gone (expired or
 * revoked: its keys are deleted); DSQ_ETCD_EFAIL. Call it well within the
 * TTL (a third of it, say), and take a failure as "it may expire". */
int dsq_etcd_lease_keepalive(dsq_etcd *e, int64_t id, int64_t *ttl, char *err, size_t errlen);

/* End a lease now; its keys are deleted in the same revision. 0;
 * DSQ_ETCD_ELEASE when it was gone already; DSQ_ETCD_EFAIL. */
int dsq_etcd_lease_revoke(dsq_etcd *e, int64_t id, char *err, size_t errlen);

/* A watch's callback, for each change in revision order: type is
 * DSQ_ETCD_PUT or DSQ_ETCD_DELETE, kv the key as written (its key without
 * the handle's prefix; for a DELETE an empty value, mod_revision the
 * delete's revision and the other revisions 0). kv and what it points to
 * are the watch's, valid during the call. Return 0 to go on, anything
 * else to stop the watch. The changes of one revision (a transaction)
 * arrive together, one call each. */
typedef int (*dsq_etcd_watch_fn)(void *arg, int type, const dsq_etcd_kv *kv);

/* Watch every key below prefix from revision start_rev on (inclusive; 0:
 * from now), calling fn for each change, until one of:
 * - fn returns non-zero: 0;
 * - *cancel (may be NULL) is true, set from any thread: 0, within about
 *   100 ms even when nothing changes;
 * - start_rev was compacted away: DSQ_ETCD_ECOMPACTED, and the first
 *   revision still kept into *compact_rev (may be NULL). The caller reads
 *   the keys again (dsq_etcd_range) and watches from that read's
 *   revision + 1;
 * - the stream breaks, or could not start (no endpoint reached, an
 *   error): DSQ_ETCD_EFAIL. The caller may watch again from the last
 *   mod_revision it saw + 1.
 * No timeout bounds a watch (a quiet stream is a good one): a dead
 * connection is noticed by TCP keepalive, or cancel it. */
int dsq_etcd_watch(dsq_etcd *e, const char *prefix, int64_t start_rev, const atomic_bool *cancel,
                   dsq_etcd_watch_fn fn, void *arg, int64_t *compact_rev, char *err, size_t errlen);

/* ---- internal, for its unit test ------------------------------------------------------------ */

/* An incremental splitter of a stream of JSON objects ("{...}" values one
 * after another, whitespace between them allowed) into whole objects,
 * however the bytes arrive: an object split over many feeds, several in
 * one. It tracks nesting and strings (braces inside strings and escaped
 * quotes do not count), and does not validate the JSON inside. A zeroed
 * splitter is ready. */
typedef struct dsq__etcd_split {
    dsq_buf buf;                 /* the object under way, from its '{' */
    size_t scan;                 /* bytes of buf already scanned */
    int depth;                   /* objects and arrays open; 0 between objects */
    bool in_str;                 /* inside a string */
    bool esc;                    /* right after a backslash in a string */
} dsq__etcd_split;

/* Called with each whole object (not NUL-terminated); a positive return
 * stops the feed. */
typedef int (*dsq__etcd_split_fn)(void *arg, const char *obj, size_t len);

/* Take p[0..n), calling fn for each object it completes. 0; fn's positive
 * return, at once (the bytes after that object stay, for the next feed);
 * -1 when something other than whitespace stands between objects, an
 * object passes max bytes, or memory runs out. */
int dsq__etcd_split_feed(dsq__etcd_split *sp, const char *p, size_t n, size_t max, dsq__etcd_split_fn fn,
                         void *arg);

/* Free its buffer; it is zeroed and ready again. */
void dsq__etcd_split_free(dsq__etcd_split *sp);

#endif
