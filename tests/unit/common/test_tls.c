/* Unit tests: common/tls — a real OpenSSL client against dsq_tls, both on
 * memory BIOs, with a certificate made here. */
#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/tls.h"

static char cert_path[] = "/tmp/dsq-test-cert-XXXXXX";
static char key_path[] = "/tmp/dsq-test-key-XXXXXX";

static void make_cert(void)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    cr_assert_not_null(pkey);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, n);
    cr_assert(X509_sign(x, pkey, EVP_sha256()) > 0);
    int fd = mkstemp(cert_path);
    FILE *f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    fd = mkstemp(key_path);
    f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

/* Every test gets a server context and session on a fresh certificate. */
static dsq_tls_ctx *ctx;
static dsq_tls *t;

static void setup(void)
{
    char err[256];
    make_cert();
    ctx = dsq_tls_ctx_new(cert_path, key_path, err, sizeof err);
    cr_assert_not_null(ctx, "%s", err);
    t = dsq_tls_new(ctx);
    cr_assert_not_null(t);
}

static void cleanup(void)
{
    dsq_tls_free(t);
    dsq_tls_ctx_free(ctx);
    unlink(cert_path);
    unlink(key_path);
}

TestSuite(tls, .init = setup, .fini = cleanup);

typedef struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
} client;

static void client_init(client *c, int max_version)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    if (max_version) {
        SSL_CTX_set_min_proto_version(c->ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
        SSL_CTX_set_security_level(c->ctx, 0);
    }
    c->ssl = SSL_new(c->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
}

static void client_free(client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Move client output to the server and server output to the client until
 * neither has anything to say. Returns the server's last result. */
static int pump(client *c, dsq_tls *server, dsq_buf *plain)
{
    int rv = 0;
    for (int round = 0; round < 20; round++) {
        SSL_do_handshake(c->ssl);
        char buf[16384];
        int n = BIO_read(c->wbio, buf, sizeof buf);
        dsq_buf out = DSQ_BUF_INIT;
        if (n > 0)
            rv = dsq_tls_read(server, buf, (size_t)n, plain, &out);
        if (out.len)
            BIO_write(c->rbio, out.data, (int)out.len);
        dsq_buf_free(&out);
        if (n <= 0 || rv != 0)
            break;
    }
    return rv;
}

Test(tls, handshake_and_data_both_ways)
{
    client c;
    client_init(&c, 0);
    dsq_buf plain = DSQ_BUF_INIT;

    /* Written before the handshake: held, then sent. */
    dsq_buf early = DSQ_BUF_INIT;
    cr_assert_eq(dsq_tls_write(t, "early", 5, &early), 0);
    cr_assert_eq(early.len, 0);

    cr_assert_not(dsq_tls_established(t));
    cr_assert_eq(pump(&c, t, &plain), 0);
    cr_assert(SSL_is_init_finished(c.ssl), "handshake did not finish");
    cr_assert(dsq_tls_established(t));
    cr_assert_geq(SSL_version(c.ssl), TLS1_2_VERSION);

    cr_assert_eq(SSL_write(c.ssl, "hello", 5), 5);
    char buf[16384];
    int n = BIO_read(c.wbio, buf, sizeof buf);
    dsq_buf out = DSQ_BUF_INIT;
    cr_assert_eq(dsq_tls_read(t, buf, (size_t)n, &plain, &out), 0);
    cr_assert_eq(plain.len, 5);
    cr_assert(memcmp(plain.data, "hello", 5) == 0);
    if (out.len)
        BIO_write(c.rbio, out.data, (int)out.len);

    dsq_buf_reset(&out);
    cr_assert_eq(dsq_tls_write(t, "world", 5, &out), 0);
    BIO_write(c.rbio, out.data, (int)out.len);
    char got[64] = "";
    int total = 0, r;
    while ((r = SSL_read(c.ssl, got + total, (int)sizeof got - total)) > 0)
        total += r;
    cr_assert_eq(total, 10, "early bytes, then ours");
    cr_assert(memcmp(got, "earlyworld", 10) == 0);

    dsq_buf_free(&out);
    dsq_buf_free(&early);
    dsq_buf_free(&plain);
    client_free(&c);
}

/* The other end's close_notify ends the session in order: told apart
 * from a failure. */
Test(tls, close_notify_is_an_orderly_end)
{
    client c;
    client_init(&c, 0);
    dsq_buf plain = DSQ_BUF_INIT, out = DSQ_BUF_INIT;
    cr_assert_eq(pump(&c, t, &plain), 0);
    cr_assert_eq(SSL_write(c.ssl, "last", 4), 4);
    SSL_shutdown(c.ssl);
    char buf[16384];
    int n = BIO_read(c.wbio, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_not(dsq_tls_peer_closed(t));
    cr_assert_eq(dsq_tls_read(t, buf, (size_t)n, &plain, &out), -1);
    cr_assert(dsq_tls_peer_closed(t));
    cr_assert_eq(plain.len, 4, "what came before it is read");
    cr_assert(memcmp(plain.data, "last", 4) == 0);
    dsq_buf_free(&plain);
    dsq_buf_free(&out);
    client_free(&c);
}

Test(tls, refuses_tls_1_1)
{
    client c;
    client_init(&c, TLS1_1_VERSION);
    dsq_buf plain = DSQ_BUF_INIT;
    cr_assert_eq(pump(&c, t, &plain), -1);
    cr_assert_not(SSL_is_init_finished(c.ssl));
    dsq_buf_free(&plain);
    client_free(&c);
}

Test(tls, garbage_is_fatal)
{
    dsq_buf plain = DSQ_BUF_INIT, out = DSQ_BUF_INIT;
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(dsq_tls_read(t, junk, sizeof junk - 1, &plain, &out), -1);
    cr_assert_eq(plain.len, 0);
    cr_assert_not(dsq_tls_peer_closed(t));
    cr_assert_not(dsq_tls_established(t));
    cr_assert(strlen(dsq_tls_error(t)) > 0);
    dsq_buf_free(&plain);
    dsq_buf_free(&out);
}

Test(tls, bad_files)
{
    char err[256];
    cr_assert_null(dsq_tls_ctx_new("/nonexistent.pem", key_path, err, sizeof err));
    cr_assert(strstr(err, "/nonexistent.pem") != NULL, "%s", err);
    cr_assert_null(dsq_tls_ctx_new(cert_path, cert_path, err, sizeof err), "a cert is not a key");
}
