/* merge — the router's part of a SCATTER or FETCH plan (plan.h): the
 * shards' rows loaded into an in-memory SQLite database of the request's
 * own, and the plan's final statement run over them.
 *
 * A merge owns nothing shared: it runs on any thread (the server runs it
 * off its loop). It stops after `timeout_ms` (SQLite's progress handler)
 * and when its answer passes `max_bytes`. */
#ifndef DSQ_MERGE_H
#define DSQ_MERGE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "sharding/plan.h"

/* The parameters piece q takes from the request: *out points at `buf`
 * (req->nparams entries), filled with positional ones 1..q->npos or the
 * named ones q flags. */
void dsq_plan_params(const dsq_plan_sql *q, const dsq_stmt_req *req, dsq_param *buf, dsq_stmt_req *out);

typedef struct dsq_merge_limits {
    uint64_t timeout_ms;   /* 0: none */
    size_t max_bytes;      /* of the answer's rows; 0: none */
} dsq_merge_limits;

/* SCATTER: parts[i] is shard_q's result on the i-th target shard. FETCH:
 * parts[k] is fetch[k]'s result, for a fetch from every shard the
 * results of all of them one after another (nparts[k] of them). The
 * answer goes to *out (its columns named as the plan says): 0, or -1
 * with the code and the message. */
int dsq_merge_scatter(const dsq_plan *p, const dsq_result *const *parts, size_t nparts, const dsq_stmt_req *req,
                      const dsq_merge_limits *lim, dsq_result *out, dsq_code *code, char *msg, size_t msglen);
int dsq_merge_fetch(const dsq_plan *p, const dsq_result *const *const *parts, const size_t *nparts,
                    const dsq_stmt_req *req, const dsq_merge_limits *lim, dsq_result *out, dsq_code *code,
                    char *msg, size_t msglen);

#endif
