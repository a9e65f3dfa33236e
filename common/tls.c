/* tls — OpenSSL sessions on memory BIOs.
 *
 * Divisions: the contexts (certificate, key, protocol floor; the mutual
 * one's CA and verification); a session's read path (feed rbio, drive the
 * handshake, SSL_read until dry); its write path (SSL_write, drain wbio);
 * the other end's name. */
#include "common/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
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
    bool peer_closed;  /* its close_notify came */
    char err[256];     /* last error */
};

/* A name is checked as a host name is, but only exactly: no wildcard. */
#define NAME_FLAGS X509_CHECK_FLAG_NO_WILDCARDS

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

/* ---- contexts ------------------------------------------------------------------------------- */

/* The settings both kinds share. */
static SSL_CTX *ctx_base(const SSL_METHOD *method, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(method);
    if (c == NULL) {
        ssl_err_text(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    return c;
}

dsq_tls_ctx *dsq_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    dsq_tls_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ssl_ctx = ctx_base(TLS_server_method(), err, errlen);
    if (c->ssl_ctx == NULL)
        goto fail;
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

dsq_tls_ctx *dsq_tls_ctx_new_mutual(const char *cert, const char *key, const char *ca, char *err, size_t errlen)
{
    char what[600];
    dsq_tls_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* Each end dials some nodes and accepts others: one context for both. */
    c->ssl_ctx = ctx_base(TLS_method(), err, errlen);
    if (c->ssl_ctx == NULL)
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert) != 1) {
        snprintf(what, sizeof what, "tls_cert: %.500s", cert);
        ssl_err_text(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof what, "tls_key: %.500s", key);
        ssl_err_text(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(c->ssl_ctx) != 1) {
        ssl_err_text(err, errlen, "tls_key: it does not match tls_cert");
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(c->ssl_ctx, ca, NULL) != 1) {
        snprintf(what, sizeof what, "tls_ca: %.500s", ca);
        ssl_err_text(err, errlen, what);
        goto fail;
    }
    /* The CAs' names in the server's certificate request (a hint). */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names != NULL)
        SSL_CTX_set_client_CA_list(c->ssl_ctx, names);
    ERR_clear_error();
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* Links are long-lived: no resumption, no tickets to send. */
    SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c->ssl_ctx, 0);
    SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_TICKET);
    return c;
fail:
    dsq_tls_ctx_free(c);
    return NULL;
}

int dsq_tls_ctx_check_own(dsq_tls_ctx *c, const char *name, char *err, size_t errlen)
{
    X509 *leaf = SSL_CTX_get0_certificate(c->ssl_ctx);
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(c->ssl_ctx, &chain);
    if (leaf == NULL) {
        snprintf(err, errlen, "tls_cert: no certificate");
        return -1;
    }
    /* As the other nodes will check it: as a server's (by those that dial
     * this node) and as a client's (by those it dials). */
    static const struct {
        int purpose;
        const char *as;
    } uses[] = {{X509_PURPOSE_SSL_SERVER, "a TLS server's (extended key usage serverAuth)"},
                {X509_PURPOSE_SSL_CLIENT, "a TLS client's (extended key usage clientAuth)"}};
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
        X509_STORE_CTX *sc = X509_STORE_CTX_new();
        if (sc == NULL || X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(c->ssl_ctx), leaf, chain) != 1) {
            X509_STORE_CTX_free(sc);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        X509_STORE_CTX_set_purpose(sc, uses[i].purpose);
        int ok = X509_verify_cert(sc) == 1;
        int e = X509_STORE_CTX_get_error(sc);
        X509_STORE_CTX_free(sc);
        ERR_clear_error();
        if (!ok) {
            snprintf(err, errlen, "tls_cert: it does not verify against tls_ca as %s: %s", uses[i].as,
                     X509_verify_cert_error_string(e));
            return -1;
        }
    }
    if (X509_check_host(leaf, name, 0, NAME_FLAGS, NULL) != 1) {
        ERR_clear_error();
        snprintf(err, errlen,
                 "tls_cert: it does not name %s (a DNS subjectAltName %s, or without DNS names the subject CN)", name,
                 name);
        return -1;
    }
    return 0;
}

void dsq_tls_ctx_free(dsq_tls_ctx *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ssl_ctx);
    free(c);
}

/* ---- sessions ------------------------------------------------------------------------------- */

static dsq_tls *session(dsq_tls_ctx *ctx)
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
    return t;
}

dsq_tls *dsq_tls_new(dsq_tls_ctx *ctx)
{
    dsq_tls *t = session(ctx);
    if (t != NULL)
        SSL_set_accept_state(t->ssl);
    return t;
}

dsq_tls *dsq_tls_new_client(dsq_tls_ctx *ctx, const char *name)
{
    dsq_tls *t = session(ctx);
    if (t == NULL)
        return NULL;
    SSL_set_connect_state(t->ssl);
    SSL_set_hostflags(t->ssl, NAME_FLAGS);
    if (name != NULL && SSL_set1_host(t->ssl, name) != 1) {
        ERR_clear_error();
        dsq_tls_free(t);
        return NULL;
    }
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

/* A failed handshake's reason, with the certificate check's when that is
 * what failed. */
static void handshake_err(dsq_tls *t)
{
    ssl_err_text(t->err, sizeof t->err, "handshake");
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK) {
        size_t len = strlen(t->err);
        snprintf(t->err + len, sizeof t->err - len, " (certificate: %s)", X509_verify_cert_error_string(v));
    }
}

static int encrypt(dsq_tls *t, const void *p, size_t n, dsq_buf *out)
{
    /* In pieces, each drained at once: the memory BIO holds one piece's
     * ciphertext, not the whole message's. */
    while (n > 0) {
        int chunk = n > (256u << 10) ? (256 << 10) : (int)n;
        int w = SSL_write(t->ssl, p, chunk);
        if (w <= 0) {
            ssl_err_text(t->err, sizeof t->err, "SSL_write");
            return -1;
        }
        p = (const char *)p + w;
        n -= (size_t)w;
        if (drain_wbio(t, out) != 0) {
            snprintf(t->err, sizeof t->err, "out of memory");
            return -1;
        }
    }
    return 0;
}

int dsq_tls_start(dsq_tls *t, dsq_buf *out)
{
    dsq_buf plain = DSQ_BUF_INIT;
    int rv = dsq_tls_read(t, NULL, 0, &plain, out);
    dsq_buf_free(&plain);
    return rv;
}

int dsq_tls_read(dsq_tls *t, const void *in, size_t n, dsq_buf *plain, dsq_buf *out)
{
    ERR_clear_error(); /* SSL_get_error reads the thread's queue */
    if (n > 0 && BIO_write(t->rbio, in, (int)n) != (int)n) {
        snprintf(t->err, sizeof t->err, "out of memory");
        return -1;
    }
    if (!SSL_is_init_finished(t->ssl)) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                handshake_err(t);
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
            t->peer_closed = true;
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
    ERR_clear_error();
    return encrypt(t, p, n, out);
}

int dsq_tls_shutdown(dsq_tls *t, dsq_buf *out)
{
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    return drain_wbio(t, out);
}

/* ---- the other end -------------------------------------------------------------------------- */

bool dsq_tls_peer_named(const dsq_tls *t, const char *name)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    bool ok = x != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK &&
              X509_check_host(x, name, 0, NAME_FLAGS, NULL) == 1;
#else
    X509 *x = SSL_get_peer_certificate(t->ssl);
    bool ok = x != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK &&
              X509_check_host(x, name, 0, NAME_FLAGS, NULL) == 1;
    X509_free(x);
#endif
    ERR_clear_error();
    return ok;
}

bool dsq_tls_established(const dsq_tls *t) { return SSL_is_init_finished(t->ssl); }

bool dsq_tls_peer_closed(const dsq_tls *t) { return t->peer_closed; }

const char *dsq_tls_error(const dsq_tls *t) { return t->err; }
