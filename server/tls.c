/* tls — OpenSSL sessions on memory BIOs.
 *
 * Divisions: the context (certificate, key, protocol floor); a session's
 * read path (feed rbio, drive the handshake, SSL_read until dry); its write
 * path (SSL_write, drain wbio). */
#include "server/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dsq_tls_ctx {
    SSL_CTX *ssl_ctx; /* owned */
};

struct dsq_tls {
    SSL *ssl;          /* owned; owns rbio and wbio */
    BIO *rbio;         /* ciphertext from the peer */
    BIO *wbio;         /* ciphertext for the peer */
    dsq_buf pending;   /* plaintext written before the handshake finished */
    char err[160];     /* last error */
};

static void ssl_err_text(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[120];
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "no detail");
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

dsq_tls_ctx *dsq_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    dsq_tls_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (c->ssl_ctx == NULL) {
        ssl_err_text(err, errlen, "SSL_CTX_new");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                         SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert) != 1) {
        ssl_err_text(err, errlen, cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err_text(err, errlen, key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(c->ssl_ctx) != 1) {
        ssl_err_text(err, errlen, "tls_key does not match tls_cert");
        goto fail;
    }
    return c;
fail:
    dsq_tls_ctx_free(c);
    return NULL;
}

void dsq_tls_ctx_free(dsq_tls_ctx *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ssl_ctx);
    free(c);
}

dsq_tls *dsq_tls_new(dsq_tls_ctx *ctx)
{
    dsq_tls *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->ssl = SSL_new(ctx->ssl_ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    /* An empty memory BIO reads as "retry", not end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void dsq_tls_free(dsq_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    dsq_buf_free(&t->pending);
    free(t);
}

/* Move whatever the session wants to send into `out`. */
static int drain_wbio(dsq_tls *t, dsq_buf *out)
{
    size_t avail = (size_t)BIO_ctrl_pending(t->wbio);
    if (avail == 0)
        return 0;
    if (dsq_buf_reserve(out, avail) != 0)
        return -1;
    int n = BIO_read(t->wbio, out->data + out->len, (int)avail);
    if (n > 0)
        out->len += (size_t)n;
    return 0;
}

static int encrypt(dsq_tls *t, const void *p, size_t n, dsq_buf *out)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = SSL_write(t->ssl, p, chunk);
        if (w <= 0) {
            ssl_err_text(t->err, sizeof t->err, "SSL_write");
            return -1;
        }
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return drain_wbio(t, out);
}

int dsq_tls_read(dsq_tls *t, const void *in, size_t n, dsq_buf *plain, dsq_buf *out)
{
    if (n > 0 && BIO_write(t->rbio, in, (int)n) != (int)n) {
        snprintf(t->err, sizeof t->err, "out of memory");
        return -1;
    }
    if (!SSL_is_init_finished(t->ssl)) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                ssl_err_text(t->err, sizeof t->err, "handshake");
                drain_wbio(t, out); /* the alert, if any */
                return -1;
            }
            return drain_wbio(t, out);
        }
        if (t->pending.len > 0) {
            if (encrypt(t, t->pending.data, t->pending.len, out) != 0)
                return -1;
            dsq_buf_free(&t->pending);
        }
    }
    for (;;) {
        char buf[16384];
        int r = SSL_read(t->ssl, buf, sizeof buf);
        if (r > 0) {
            if (dsq_buf_append(plain, buf, (size_t)r) != 0) {
                snprintf(t->err, sizeof t->err, "out of memory");
                return -1;
            }
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            snprintf(t->err, sizeof t->err, "peer sent close_notify");
            drain_wbio(t, out);
            return -1;
        }
        ssl_err_text(t->err, sizeof t->err, "SSL_read");
        drain_wbio(t, out);
        return -1;
    }
    return drain_wbio(t, out);
}

int dsq_tls_write(dsq_tls *t, const void *p, size_t n, dsq_buf *out)
{
    if (!SSL_is_init_finished(t->ssl))
        return dsq_buf_append(&t->pending, p, n);
    return encrypt(t, p, n, out);
}

int dsq_tls_shutdown(dsq_tls *t, dsq_buf *out)
{
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    return drain_wbio(t, out);
}

const char *dsq_tls_error(const dsq_tls *t) { return t->err; }
