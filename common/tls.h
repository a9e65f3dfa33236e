/* tls — TLS 1.2+ over memory BIOs (OpenSSL).
 *
 * The socket stays with the connection: ciphertext read from it goes in
 * through dsq_tls_read(), ciphertext to send comes out in a buffer. This
 * keeps one read/write path for plain and TLS connections.
 *
 * Two kinds of context: the clients' (server/: a certificate and key, no
 * client certificates asked for) and a mutual one (cluster/: both ends
 * present a certificate, each verified against a CA file, and each end
 * may act as client or server). */
#ifndef DSQ_TLS_H
#define DSQ_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

typedef struct dsq_tls_ctx dsq_tls_ctx;
typedef struct dsq_tls dsq_tls;

/* Load a PEM certificate chain and private key (a server context: no
 * client certificate is asked for). Returns NULL with the reason in err. */
dsq_tls_ctx *dsq_tls_ctx_new(const char *cert_path, const char *key_path, char *err,
                             size_t errlen);

/* A mutual-TLS context: this end's PEM certificate chain and key, and the
 * PEM file of the CA certificates the other end's certificate must chain
 * to. Sessions made from it present the certificate and refuse a peer
 * without one, or with one that does not verify. Returns NULL with the
 * reason in err, which starts with the name of the file's key:
 * "tls_cert: PATH: ...", "tls_key: ..." or "tls_ca: ...". */
dsq_tls_ctx *dsq_tls_ctx_new_mutual(const char *cert_path, const char *key_path, const char *ca_path,
                                    char *err, size_t errlen);

/* A mutual context's own certificate: it must verify against the CA file
 * for both a server's and a client's use, and name `name` (see
 * dsq_tls_peer_named). 0, or -1 with the reason in err ("tls_cert: ..."). */
int dsq_tls_ctx_check_own(dsq_tls_ctx *ctx, const char *name, char *err, size_t errlen);

void dsq_tls_ctx_free(dsq_tls_ctx *ctx);

/* A server-side session. NULL when out of memory. */
dsq_tls *dsq_tls_new(dsq_tls_ctx *ctx);

/* A client-side session (a mutual context). The server's certificate must
 * name `name` (dsq_tls_peer_named's rule), or the handshake fails. Start
 * it with dsq_tls_start. NULL when out of memory. */
dsq_tls *dsq_tls_new_client(dsq_tls_ctx *ctx, const char *name);

void dsq_tls_free(dsq_tls *t);

/* A client's first flight (its ClientHello), appended to `out`. 0 or -1. */
int dsq_tls_start(dsq_tls *t, dsq_buf *out);

/* Take `n` bytes of ciphertext. Decrypted bytes are appended to `plain`;
 * bytes the session must send (handshake, alerts, tickets) to `out`.
 * Returns 0, or -1 on a fatal error (see dsq_tls_error). */
int dsq_tls_read(dsq_tls *t, const void *in, size_t n, dsq_buf *plain, dsq_buf *out);

/* Encrypt `n` bytes into `out`. Before the handshake is done they are held
 * and sent when it completes. Returns 0 or -1. */
int dsq_tls_write(dsq_tls *t, const void *p, size_t n, dsq_buf *out);

/* Append a close_notify alert to `out`. */
int dsq_tls_shutdown(dsq_tls *t, dsq_buf *out);

/* Whether the other end presented a (verified) certificate that names
 * `name`: one of its DNS subjectAltNames is `name` exactly (no wildcard;
 * letters compared without case), or, when it has no DNS name, its
 * subject's CN is. */
bool dsq_tls_peer_named(const dsq_tls *t, const char *name);

/* Whether the handshake is done (for a server with a mutual context: the
 * client's certificate verified). */
bool dsq_tls_established(const dsq_tls *t);

/* Whether the other end ended the session (its close_notify: the -1 of
 * dsq_tls_read that came with it is an orderly end, not a failure). */
bool dsq_tls_peer_closed(const dsq_tls *t);

/* The last error, as text. */
const char *dsq_tls_error(const dsq_tls *t);

#endif
