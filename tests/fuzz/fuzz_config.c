/* fuzz_config — the configuration file parser (server/config.c: inih and
 * our key table, sizes, durations, booleans, lists), the flags layered over
 * it, the final checks (addresses, TLS, storage), and the [auth] token
 * lines built from it (server/auth.c).
 *
 * Input: the INI file up to the first NUL byte; after it, NUL-separated
 * "key=value" flags. The file is read from a memfd through
 * /proc/self/fd: nothing is written to disk. auth.tokens_file is dropped
 * before the tokens are built, so that no input names a file to read. */
#include <sys/mman.h>

#include "server/auth.h"
#include "server/config.h"
#include "tests/fuzz/fuzz.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    memfd = memfd_create("dosqld.conf", MFD_CLOEXEC);
    if (memfd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, flen, 0) != (ssize_t)flen)
        abort();

    dsq_config cfg;
    dsq_buf errs = DSQ_BUF_INIT;
    dsq_config_init(&cfg);
    (void)dsq_config_load_file(&cfg, path, &errs);

    /* The flags: copies, NUL-terminated. */
    if (nul != NULL) {
        size_t rest = size - flen - 1;
        char *flags = malloc(rest + 1);
        if (flags == NULL)
            abort();
        memcpy(flags, nul + 1, rest);
        flags[rest] = '\0';
        for (char *f = flags; f < flags + rest; f += strlen(f) + 1) {
            char *eq = strchr(f, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            (void)dsq_config_set_flag(&cfg, f, eq + 1, &errs);
            *eq = '=';
        }
        free(flags);
    }
    (void)dsq_config_finish(&cfg, &errs);

    free(cfg.tokens_file);
    cfg.tokens_file = NULL;
    dsq_auth_free(dsq_auth_from_config(&cfg, &errs));

    for (size_t i = 0; i < cfg.listen.n; i++) {
        struct sockaddr_storage ss;
        if (dsq_parse_addr(cfg.listen.items[i], &ss) == 0)
            (void)dsq_addr_is_loopback(&ss);
    }
    if (errs.len > 0)
        (void)((volatile char *)errs.data)[errs.len - 1];
    dsq_buf_free(&errs);
    dsq_config_free(&cfg);
    return 0;
}
