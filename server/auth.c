/* auth — token store and decisions.
 *
 * Divisions: parsing token lines; loading from config; the decision. */
#include "server/auth.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct token {
    unsigned char digest[SHA256_DIGEST_LENGTH]; /* SHA-256 of the secret */
    unsigned scopes;                             /* DSQ_SCOPE_* with implied ones */
    char *glob;                                  /* owned */
} token;

struct dsq_auth {
    token *tokens; /* owned array */
    size_t n;
};

dsq_auth *dsq_auth_new(void) { return calloc(1, sizeof(dsq_auth)); }

void dsq_auth_free(dsq_auth *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->tokens[i].glob);
    free(a->tokens);
    free(a);
}

size_t dsq_auth_count(const dsq_auth *a) { return a ? a->n : 0; }

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_scopes(const char *s, unsigned *out)
{
    unsigned scopes = 0;
    char tmp[64];
    if (strlen(s) >= sizeof tmp)
        return -1;
    strcpy(tmp, s);
    char *save = NULL;
    for (char *w = strtok_r(tmp, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (strcmp(w, "read") == 0)
            scopes |= DSQ_SCOPE_READ;
        else if (strcmp(w, "write") == 0)
            scopes |= DSQ_SCOPE_READ | DSQ_SCOPE_WRITE;
        else if (strcmp(w, "admin") == 0)
            scopes |= DSQ_SCOPE_READ | DSQ_SCOPE_WRITE | DSQ_SCOPE_ADMIN;
        else
            return -1;
    }
    if (scopes == 0)
        return -1;
    *out = scopes;
    return 0;
}

int dsq_auth_add(dsq_auth *a, const char *line, char *err, size_t errlen)
{
    char secret[256], scopes[64], glob[160], extra[2];
    int n = sscanf(line, "%255s %63s %159s %1s", secret, scopes, glob, extra);
    if (n < 2 || n > 3) {
        snprintf(err, errlen, "a token line is SECRET SCOPES [GLOB]");
        return -1;
    }
    if (n == 2)
        strcpy(glob, "*");
    token t = {0};
    if (strncmp(secret, "sha256:", 7) == 0) {
        const char *hex = secret + 7;
        if (strlen(hex) != 2 * SHA256_DIGEST_LENGTH) {
            snprintf(err, errlen, "sha256: must be followed by 64 hex digits");
            return -1;
        }
        for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(err, errlen, "sha256: must be followed by 64 hex digits");
                return -1;
            }
            t.digest[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        size_t len = strlen(secret);
        if (len < 16) {
            snprintf(err, errlen, "a token must be at least 16 characters");
            return -1;
        }
        SHA256((const unsigned char *)secret, len, t.digest);
        OPENSSL_cleanse(secret, sizeof secret);
    }
    if (parse_scopes(scopes, &t.scopes) != 0) {
        snprintf(err, errlen, "scopes '%s' are not a comma-separated list of read, write, admin",
                 scopes);
        return -1;
    }
    for (const char *p = glob; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("._-*?[]!", *p)) {
            snprintf(err, errlen, "database glob '%s' has a character no name can hold", glob);
            return -1;
        }
    }
    token *grown = realloc(a->tokens, (a->n + 1) * sizeof *grown);
    if (grown == NULL || (t.glob = strdup(glob)) == NULL) {
        if (grown)
            a->tokens = grown;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->tokens = grown;
    a->tokens[a->n++] = t;
    return 0;
}

dsq_auth *dsq_auth_from_config(const dsq_config *cfg, dsq_buf *errs)
{
    dsq_auth *a = dsq_auth_new();
    int problems = 0;
    char err[256];
    if (a == NULL) {
        dsq_buf_puts(errs, "auth: out of memory\n");
        return NULL;
    }
    for (size_t i = 0; i < cfg->tokens.n; i++) {
        if (dsq_auth_add(a, cfg->tokens.items[i], err, sizeof err) != 0) {
            if (cfg->tokens.lines[i] > 0 && cfg->path)
                dsq_buf_printf(errs, "%s:%d: auth.token: %s\n", cfg->path, cfg->tokens.lines[i], err);
            else
                dsq_buf_printf(errs, "auth.token #%zu: %s\n", i + 1, err);
            problems++;
        }
    }
    if (cfg->tokens_file != NULL) {
        FILE *fp = fopen(cfg->tokens_file, "r");
        if (fp == NULL) {
            dsq_buf_printf(errs, "%s: cannot open: %s\n", cfg->tokens_file, strerror(errno));
            problems++;
        } else {
            char line[1024];
            int lineno = 0;
            while (fgets(line, sizeof line, fp) != NULL) {
                lineno++;
                char *p = line;
                while (isspace((unsigned char)*p))
                    p++;
                if (*p == '\0' || *p == '#')
                    continue;
                if (dsq_auth_add(a, p, err, sizeof err) != 0) {
                    dsq_buf_printf(errs, "%s:%d: %s\n", cfg->tokens_file, lineno, err);
                    problems++;
                }
            }
            OPENSSL_cleanse(line, sizeof line);
            fclose(fp);
        }
    }
    if (problems > 0) {
        dsq_auth_free(a);
        return NULL;
    }
    return a;
}

dsq_auth_result dsq_auth_check(const dsq_auth *a, const char *tok, size_t tok_len,
                               unsigned scope, const char *db)
{
    if (a == NULL || a->n == 0)
        return DSQ_AUTH_OK;
    if (tok == NULL || tok_len == 0)
        return DSQ_AUTH_UNAUTHORIZED;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, tok_len, d);
    /* Look at every entry whatever matched, so the time taken does not say
     * which entry (or how much of a digest) matched. */
    bool known = false, granted = false;
    for (size_t i = 0; i < a->n; i++) {
        const token *t = &a->tokens[i];
        if (CRYPTO_memcmp(d, t->digest, sizeof d) != 0)
            continue;
        known = true;
        if ((t->scopes & scope) == scope && (db == NULL || fnmatch(t->glob, db, 0) == 0))
            granted = true;
    }
    if (!known)
        return DSQ_AUTH_UNAUTHORIZED;
    return granted ? DSQ_AUTH_OK : DSQ_AUTH_FORBIDDEN;
}

const char *dsq_auth_bearer(const char *v, size_t len, size_t *tok_len)
{
    if (len < 7 || strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    size_t i = 6;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    size_t end = len;
    while (end > i && (v[end - 1] == ' ' || v[end - 1] == '\t'))
        end--;
    if (end == i)
        return NULL;
    *tok_len = end - i;
    return v + i;
}
