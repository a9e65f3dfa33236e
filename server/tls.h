/* tls — TLS 1.2+ over memory BIOs (OpenSSL).
 *
 * The socket stays with the connection: ciphertext read from it goes in
 * through dsq_tls_read(), ciphertext to send comes out in a buffer. This
 * keeps one read/write path for plain and TLS connections. */
#ifndef DSQ_TLS_H
#define DSQ_TLS_H

#include <stddef.h>

#include "common/buf.h"

typedef struct dsq_tls_ctx dsq_tls_ctx;
typedef struct dsq_tls dsq_tls;

/* Load a PEM certificate chain and private key. Returns NULL with the
 * reason in err. */
dsq_tls_ctx *dsq_tls_ctx_new(const char *cert_path, const char *key_path, char *err,
                             size_t errlen);
void dsq_tls_ctx_free(dsq_tls_ctx *ctx);

/* A server-side session. NULL when out of memory. */
dsq_tls *dsq_tls_new(dsq_tls_ctx *ctx);
void dsq_tls_free(dsq_tls *t);

/* Take `n` bytes of ciphertext. Decrypted bytes are appended to `plain`;
 * bytes the session must send (handshake, alerts, tickets) to `out`.
 * Returns 0, or -1 on a fatal error (see dsq_tls_error). */
int dsq_tls_read(dsq_tls *t, const void *in, size_t n, dsq_buf *plain, dsq_buf *out);

/* Encrypt `n` bytes into `out`. Before the handshake is done they are held
 * and sent when it completes. Returns 0 or -1. */
int dsq_tls_write(dsq_tls *t, const void *p, size_t n, dsq_buf *out);

/* Append a close_notify alert to `out`. */
int dsq_tls_shutdown(dsq_tls *t, dsq_buf *out);

/* The last error, as text. */
const char *dsq_tls_error(const dsq_tls *t);

#endif
