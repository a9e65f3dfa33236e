/* peer — the links between the nodes of a cluster.
 *
 * One TCP connection per pair of nodes carries every message between
 * them, for every database. The node whose id sorts first dials, the
 * other accepts on its peer address; a link that breaks is dialed again,
 * after 100 ms doubling to 2 s while it keeps failing.
 *
 * Framing: each message is a 4-byte big-endian length (of what follows),
 * a type byte and its payload. Types below DSQ_PEER_MSG_MIN are the
 * link's own: the handshake and the heartbeat.
 *
 * Handshake: the dialer sends HELLO (its id, the id it means to reach, a
 * random 32-byte nonce); the acceptor answers with a nonce of its own and
 * an HMAC-SHA256, under the shared secret, of both ids and both nonces;
 * the dialer checks it and answers with its own HMAC of the same (under a
 * different label). Either side closes the connection when a check fails,
 * so only nodes that know the secret exchange messages, and a recorded
 * handshake cannot be replayed (the other side's nonce is new each time).
 * Without TLS, messages after it are not encrypted or signed: the links
 * are then meant for a private network (or loopback).
 *
 * TLS (cluster.tls): every connection is TLS 1.2+ from its first byte,
 * and the handshake and messages above run inside it. Both ends present
 * a certificate that must chain to the CA file (mutual TLS). The dialer
 * requires the acceptor's certificate to name the node it dials; the
 * acceptor requires the dialer's to name the node its HELLO says it is.
 * A certificate names a node when one of its DNS subjectAltNames is the
 * node's id, exactly (no wildcard), or, when it has no DNS name, its
 * subject CN is. A TLS failure before the link is up counts as a failed
 * authentication, as does a node that has TLS off talking to one that
 * has it on (either way round).
 *
 * Liveness: each side sends a heartbeat every `heartbeat_ms`; a link that
 * has received nothing for `dead_after_ms` is closed (and dialed again).
 *
 * Nodes: each has an index, the caller's name for it (on_message,
 * dsq_peer_send, ...), from the node set (nodeset.h, cfg.ids): the
 * configured ones (cfg.nodes) 0 to nnodes-1, in their order, then each
 * node added since (dsq_peers_add) the index the set gives its id. An
 * index the set gave to an id that was not added here is absent: no
 * address, not known (dsq_peer_known false), until it is added.
 * An index names one id for the life of the object: it is never given to
 * another id, not even after its node is removed, and an id that is
 * added again after its removal gets its old index back. So at most
 * DSQ_NODES_MAX ids, configured and added, over the object's life (the
 * callers keep arrays of that size by index). The acceptor takes a HELLO
 * only from a node it knows (configured or added, and not removed): one
 * it does not know yet is refused as a failed authentication, and gets
 * in once it is added (its dialer dials again, on the backoff above).
 * The rule of who dials is the same for added nodes. A node added again
 * at another address has moved: its connections, up or under way, are
 * closed (on_link(false) if it was up), and if this side dials it, it is
 * dialed at the new address at the next tick (the backoff starts over).
 * A removed node has left for good: its connections are closed, with
 * on_link(false) if its link was up (dsq_peer_known is already false
 * then), what was queued for it is dropped, sending to it fails, it is
 * not dialed and its HELLOs are refused.
 *
 * Sending never blocks: messages queue on the link. dsq_peer_queued tells
 * how much waits, so a sender can hold back (backpressure); when a link's
 * queue falls under half of `send_limit` after having been over it,
 * on_writable is called.
 *
 * Loop thread (the server's), for everything here, adding and removing
 * nodes included. */
#ifndef DSQ_PEER_H
#define DSQ_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/nodeset.h"

#define DSQ_PEER_MSG_MIN 16 /* the first message type that is the caller's */

typedef struct dsq_peers dsq_peers;

typedef struct dsq_peers_cfg {
    uv_loop_t *loop;
    const dsq_node *nodes;   /* the nodes known at the start, this one included (copied); more
                                can be added (dsq_peers_add) */
    size_t nnodes;           /* 1 (this one alone) to DSQ_NODES_MAX */
    size_t self;             /* this node's index in nodes */
    dsq_nodeset *ids;        /* the indices (borrowed; outlives the object), in which nodes[i] has
                                index i; NULL: the object keeps a set of its own */
    const char *secret;      /* the shared secret (copied) */
    uint64_t heartbeat_ms;
    uint64_t dead_after_ms;
    uint64_t send_limit;     /* queued bytes per link over which senders should wait */
    uint64_t max_message;    /* a longer message closes the link */
    /* cluster.tls: the PEM files of this node's certificate chain, its
     * private key and the CA certificates every node's certificate must
     * chain to, read by dsq_peers_start (not kept). tls_cert NULL: plain
     * TCP. */
    const char *tls_cert, *tls_key, *tls_ca;
    /* A message of type >= DSQ_PEER_MSG_MIN from node `node`; p is valid
     * during the call. */
    void (*on_message)(void *ud, size_t node, uint8_t type, const uint8_t *p, size_t n);
    /* The link to `node` came up (authenticated) or went down. */
    void (*on_link)(void *ud, size_t node, bool up);
    /* The link to `node` has room again (see above). */
    void (*on_writable)(void *ud, size_t node);
    void *ud;
} dsq_peers_cfg;

/* Listen on this node's peer address and start dialing the nodes this
 * one dials. 0, or -1 with a message (the address cannot be bound; with
 * TLS, a file cannot be read, or this node's own certificate does not
 * verify against the CA file or does not name it: the message starts
 * with the key, e.g. "cluster.tls_cert: ..."). */
int dsq_peers_start(const dsq_peers_cfg *cfg, dsq_peers **out, char *err, size_t errlen);

/* Close every link and the listener; `done` is called (on the loop) once
 * every handle is closed and the object freed. */
void dsq_peers_stop(dsq_peers *p, void (*done)(void *ud), void *ud);

/* Whether the link to `node` is up (authenticated). */
bool dsq_peer_up(const dsq_peers *p, size_t node);

/* Queue a message of `type` for `node`: the concatenation of parts
 * a[0..alen) and b[0..blen) (b may be NULL). 0, or -1 when the link is
 * not up (nothing is queued) or memory ran out (the link is closed). */
int dsq_peer_send(dsq_peers *p, size_t node, uint8_t type, const void *a, size_t alen, const void *b,
                  size_t blen);

/* Bytes queued on the link to `node` and not yet written. */
size_t dsq_peer_queued(const dsq_peers *p, size_t node);

/* Counters for metrics (cluster.h). */
void dsq_peers_stats(const dsq_peers *p, dsq_peer_stats *out);

/* ---- nodes added and removed while running (see "Nodes" above) ---- */

/* Add `node` (id and address, as dsq_node_parse makes it; copied): 0 and
 * its index in *index, or -1 with a message. A new id gets the next
 * index; this side starts dialing it at the next tick when its id sorts
 * after this node's, else it now accepts its HELLOs. An id known already
 * gives its index: at the same address (IP and port) nothing changes;
 * at another the node has moved (its links are closed and redialed
 * there); a removed one is known again. -1: DSQ_NODES_MAX ids were known
 * already, `node` is malformed, it is this node's id at another address,
 * or the object is stopping. */
int dsq_peers_add(dsq_peers *p, const dsq_node *node, size_t *index, char *err, size_t errlen);

/* Node `node` left for good: close its connections (on_link(false) if
 * its link was up), drop what was queued for it, stop dialing it and
 * refuse its HELLOs. 0 (also when it was removed already), or -1 for
 * this node or an index not given. */
int dsq_peers_remove(dsq_peers *p, size_t node);

/* Indices given so far, removed ones included: every index is below
 * this. */
size_t dsq_peers_count(const dsq_peers *p);

/* Whether `node` is an index given and not removed. */
bool dsq_peer_known(const dsq_peers *p, size_t node);

/* The node at index `node` (a removed one too: its id and last address),
 * or NULL past dsq_peers_count. Valid while the object lives; the
 * address in it changes when the node moves. */
const dsq_node *dsq_peers_node(const dsq_peers *p, size_t node);

/* The index of id `id` (removed or not), or SIZE_MAX when it was never
 * known. */
size_t dsq_peers_find(const dsq_peers *p, const char *id);

/* ---- the handshake's proofs (pure; unit-tested) ---- */

/* HMAC-SHA256 under `secret` of label, dialer id, acceptor id and both
 * nonces, into mac[32]. */
void dsq_peer_proof(const char *secret, const char *label, const char *dialer, const char *acceptor,
                    const uint8_t nonce_d[32], const uint8_t nonce_a[32], uint8_t mac[32]);

#endif
