/* objstore's insides: the store, its backends, and the parts of the S3
 * backend that unit tests reach. */
#ifndef DSQ_OBJSTORE_INT_H
#define DSQ_OBJSTORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "engine/tier/objstore.h"

typedef struct dsq_obj_backend {
    /* Caller's thread, before the store's thread starts: 0 or -1 with a message. */
    int (*open)(dsq_obj *o, char *err, size_t errlen);
    /* Store's thread: begin `r`; dsq__obj_finish(o, r) when it is done. */
    void (*start)(dsq_obj *o, dsq_obj_req *r);
    /* Store's thread, at close: finish every request begun (CANCELLED)
     * and release what the loop holds; the loop then runs until idle. */
    void (*stop)(dsq_obj *o);
    /* After the thread has ended. */
    void (*free)(dsq_obj *o);
} dsq_obj_backend;

struct dsq_obj {
    dsq_obj_cfg cfg;              /* strings owned */
    char *bucket, *prefix;        /* s3: prefix "" or ending in '/' */
    char *dir;                    /* file: the directory */
    const dsq_obj_backend *be;
    void *be_state;
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    dsq_queue queue;              /* submitted, not begun (dsq_obj_req.link; mu) */
    bool closing;                 /* mu */
    atomic_size_t pending;
};

extern const dsq_obj_backend dsq__obj_file;
extern const dsq_obj_backend dsq__obj_s3;

/* Store's thread: `r` is done (status and the rest set). */
void dsq__obj_finish(dsq_obj *o, dsq_obj_req *r);
void dsq__obj_fail(dsq_obj_req *r, dsq_obj_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Percent-encode `s` as SigV4 wants (RFC 3986 unreserved characters
 * kept; '/' kept when keep_slash). 0 or -1 out of memory. */
int dsq__s3_uri_encode(dsq_buf *b, const char *s, size_t n, bool keep_slash);

/* One page of a ListObjectsV2 answer: its keys (with `strip` bytes of
 * prefix taken off) appended to r->items; *truncated and the token for
 * the next page. 0, or -1 when the XML is not such an answer. */
int dsq__s3_list_parse(const char *xml, size_t len, size_t strip, dsq_obj_req *r, bool *truncated,
                       dsq_buf *token);

/* "Code: Message" of an S3 error document, or "" if it is not one. */
void dsq__s3_error_text(const char *xml, size_t len, char *out, size_t cap);

#endif
