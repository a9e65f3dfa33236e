/* Unit tests: server/auth — token lines, scopes, globs, decisions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "server/auth.h"

#define T_READ "read-token-0123456789"
#define T_WRITE "write-token-0123456789"
#define T_ADMIN "admin-token-0123456789"

static dsq_auth *store(void)
{
    dsq_auth *a = dsq_auth_new();
    char err[256];
    cr_assert_eq(dsq_auth_add(a, T_READ " read", err, sizeof err), 0, "%s", err);
    cr_assert_eq(dsq_auth_add(a, T_WRITE " write app-*", err, sizeof err), 0, "%s", err);
    /* sha256("admin-token-0123456789") */
    cr_assert_eq(dsq_auth_add(a,
                              "sha256:ca8d40e6ce4716b552f1c69863335b50"
                              "2f2afb57ffae171d6675fd56d91ca5b2 admin",
                              err, sizeof err),
                 0, "%s", err);
    return a;
}

static dsq_auth_result check(dsq_auth *a, const char *tok, unsigned scope, const char *db)
{
    return dsq_auth_check(a, tok, tok ? strlen(tok) : 0, scope, db);
}

Test(auth, no_tokens_allows_everything)
{
    dsq_auth *a = dsq_auth_new();
    cr_assert_eq(dsq_auth_count(a), 0);
    cr_assert_eq(check(a, NULL, DSQ_SCOPE_ADMIN, "x"), DSQ_AUTH_OK);
    dsq_auth_free(a);
}

Test(auth, decisions)
{
    dsq_auth *a = store();
    cr_assert_eq(check(a, NULL, DSQ_SCOPE_READ, "x"), DSQ_AUTH_UNAUTHORIZED);
    cr_assert_eq(check(a, "", DSQ_SCOPE_READ, "x"), DSQ_AUTH_UNAUTHORIZED);
    cr_assert_eq(check(a, "wrong-token-0123456789", DSQ_SCOPE_READ, "x"), DSQ_AUTH_UNAUTHORIZED);
    cr_assert_eq(check(a, T_READ "x", DSQ_SCOPE_READ, "x"), DSQ_AUTH_UNAUTHORIZED, "a prefix match is no match");
    cr_assert_eq(check(a, T_READ, DSQ_SCOPE_READ, "anything"), DSQ_AUTH_OK);
    cr_assert_eq(check(a, T_READ, DSQ_SCOPE_WRITE, "anything"), DSQ_AUTH_FORBIDDEN);
    cr_assert_eq(check(a, T_WRITE, DSQ_SCOPE_WRITE, "app-1"), DSQ_AUTH_OK);
    cr_assert_eq(check(a, T_WRITE, DSQ_SCOPE_READ, "app-1"), DSQ_AUTH_OK, "write implies read");
    cr_assert_eq(check(a, T_WRITE, DSQ_SCOPE_READ, "other"), DSQ_AUTH_FORBIDDEN, "outside its glob");
    cr_assert_eq(check(a, T_WRITE, DSQ_SCOPE_ADMIN, "app-1"), DSQ_AUTH_FORBIDDEN);
    cr_assert_eq(check(a, T_WRITE, DSQ_SCOPE_READ, NULL), DSQ_AUTH_OK, "unbound routes skip the glob");
    cr_assert_eq(check(a, T_ADMIN, DSQ_SCOPE_ADMIN, "x"), DSQ_AUTH_OK, "matched by its sha256");
    cr_assert_eq(check(a, T_ADMIN, DSQ_SCOPE_READ, "x"), DSQ_AUTH_OK, "admin implies read");
    dsq_auth_free(a);
}

Test(auth, bad_lines)
{
    dsq_auth *a = dsq_auth_new();
    char err[256];
    const char *bad[] = {
        "short read",                           /* under 16 characters */
        "long-enough-token-1234",               /* no scopes */
        "long-enough-token-1234 read,fly",      /* unknown scope */
        "long-enough-token-1234 read a b",      /* too many fields */
        "long-enough-token-1234 read db/x",     /* a glob no name can match */
        "sha256:1234 read",                     /* short digest */
        "sha256:zz3d3c9f3a1ad0542f2f09b5a0dbd1a076f86aaa6e0af1be6bd2c8f2a87c2c4a4 read",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(dsq_auth_add(a, bad[i], err, sizeof err), -1, "accepted '%s'", bad[i]);
    cr_assert_eq(dsq_auth_count(a), 0);
    dsq_auth_free(a);
}

Test(auth, bearer_header)
{
    size_t n;
    const char *t = dsq_auth_bearer("Bearer abc", 10, &n);
    cr_assert_not_null(t);
    cr_assert_eq(n, 3);
    cr_assert(strncmp(t, "abc", 3) == 0);
    t = dsq_auth_bearer("bearer   xyz  ", 14, &n);
    cr_assert_not_null(t);
    cr_assert_eq(n, 3);
    cr_assert_null(dsq_auth_bearer("Basic abc", 9, &n));
    cr_assert_null(dsq_auth_bearer("Bearer", 6, &n));
    cr_assert_null(dsq_auth_bearer("Bearer    ", 10, &n));
    cr_assert_null(dsq_auth_bearer("Bearerabc", 9, &n));
}

Test(auth, from_config_with_file)
{
    char path[] = "/tmp/dsq-test-tokens-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "# tokens\n\n  file-token-0123456789 read app\nbroken\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    dsq_config_init(&cfg);
    cr_assert_eq(dsq_config_set_flag(&cfg, "auth.token", T_READ " read", &errs), 0);
    cr_assert_eq(dsq_config_set_flag(&cfg, "auth.tokens_file", path, &errs), 0);
    dsq_auth *a = dsq_auth_from_config(&cfg, &errs);
    cr_assert_null(a, "a broken line fails the whole set");
    cr_assert(strstr(errs.data, ":4: a token line is SECRET SCOPES [GLOB]") != NULL, "%s", errs.data);

    fd = open(path, O_WRONLY | O_TRUNC);
    text = "file-token-0123456789 read app\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    dsq_buf_reset(&errs);
    a = dsq_auth_from_config(&cfg, &errs);
    cr_assert_not_null(a, "%s", errs.data);
    cr_assert_eq(dsq_auth_count(a), 2);
    cr_assert_eq(check(a, "file-token-0123456789", DSQ_SCOPE_READ, "app"), DSQ_AUTH_OK);
    cr_assert_eq(check(a, "file-token-0123456789", DSQ_SCOPE_READ, "app2"), DSQ_AUTH_FORBIDDEN);
    dsq_auth_free(a);
    unlink(path);

    cr_assert_null(dsq_auth_from_config(&cfg, &errs), "a missing tokens file is an error");
    cr_assert(strstr(errs.data, "cannot open") != NULL);
    dsq_config_free(&cfg);
    dsq_buf_free(&errs);
}
