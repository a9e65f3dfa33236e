/* rcall — a call on a database whose primary is another node's, sent
 * over the link to that node: what the call asks (its op, statements
 * and parameters, transaction, scope, flags) in a CALL message, and what
 * the engine there answered (error, results, schema, transaction id,
 * LSN) in a REPLY. Only the calls the sharding router makes travel:
 * QUERY, BATCH, BEGIN, COMMIT, ROLLBACK and SCHEMA.
 *
 * Values travel in a form of their own (big-endian, lengths checked), not
 * the engine's packed rows, so the two nodes need not agree on byte
 * order. Every length is checked against what arrived: a message that
 * does not hold together is refused whole.
 *
 * Pure functions; cluster.c sends and receives them. */
#ifndef DSQ_RCALL_H
#define DSQ_RCALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "engine/engine.h"

/* Whether a call with op may run on another node. */
bool dsq_rcall_op_ok(dsq_op op);

/* CALL: request `id` of call c on database db. 0, or -1 (out of memory,
 * or a name too long). */
int dsq_rcall_encode_call(dsq_buf *b, uint64_t id, const char *db, const dsq_call *c);

/* A CALL as received: the call to submit (its statements and parameters
 * point into the decoded copy, freed with it), its id and database. */
typedef struct dsq_rcall_in {
    uint64_t id;
    char db[129];
    dsq_call call;
    dsq_stmt_req *stmts;
    dsq_param *params;
    char *mem; /* strings and bytes */
    char target[129];
    size_t node;  /* (the caller's: who asked) */
    void *owner;  /* (the caller's) */
} dsq_rcall_in;

/* Decode a CALL: NULL when it does not hold together (or no memory). The
 * call has only what the message says: the caller sets done, ud. */
dsq_rcall_in *dsq_rcall_decode_call(const void *p, size_t n);
void dsq_rcall_in_free(dsq_rcall_in *in);

/* REPLY: the outcome of call c (its out fields) for request `id`. */
int dsq_rcall_encode_reply(dsq_buf *b, uint64_t id, const dsq_call *c);

/* The request id a REPLY answers: 0 when it has none (ids start at 1). */
uint64_t dsq_rcall_reply_id(const void *p, size_t n);

/* Decode a REPLY into c's out fields (err, code, msg, results, lsn,
 * txn_out, schema): 0, or -1 when it does not hold together (c then
 * fails with INTERNAL_ERROR and no results). */
int dsq_rcall_decode_reply(const void *p, size_t n, dsq_call *c);

#endif
