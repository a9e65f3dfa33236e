/* fuzz — what the libFuzzer targets in tests/fuzz/ share: a scratch
 * directory per process, writing an input to a file there, and a quiet
 * logger. Header-only: each target is one file (docs/testing.md). */
#ifndef DSQ_FUZZ_H
#define DSQ_FUZZ_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A directory of this process's own for the files a decoder reads, under
 * $DSQ_FUZZ_SCRATCH (tests/fuzz/run makes one and removes it: libFuzzer
 * ends with _Exit, so atexit handlers do not run after fuzzing), else
 * /dev/shm when there is one (no disk writes per input), else /tmp. */
static char fuzz_dir[4096];

static inline void fuzz_dir_remove(void)
{
    char cmd[200];
    if (fuzz_dir[0] != '\0') {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
    }
}

static inline const char *fuzz_scratch(void)
{
    if (fuzz_dir[0] == '\0') {
        const char *base = getenv("DSQ_FUZZ_SCRATCH");
        if (base == NULL || *base == '\0')
            base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/dsq-fuzz-XXXXXX", base);
        if (mkdtemp(fuzz_dir) == NULL) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir;
}

/* Write p[0..n) to `path` (created or truncated). Aborts on failure: the
 * harness, not the code under test, is broken then. */
static inline void fuzz_write(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (n > 0 && write(fd, p, n) != (ssize_t)n) || close(fd) != 0) {
        perror(path);
        abort();
    }
}

/* DSQ_FUZZ_VERBOSE=1: say why an input was refused (to check that a seed
 * gets as far as it should). */
static inline void fuzz_note(const char *what, int rc, const char *err)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("DSQ_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "fuzz: %s -> %d%s%s\n", what, rc, rc != 0 && err ? ": " : "", rc != 0 && err ? err : "");
}

/* Errors only: a decoder's warnings would drown libFuzzer's output. */
static inline void fuzz_quiet(void) { dsq_log_set_level(DSQ_LOG_ERROR); }

#endif
