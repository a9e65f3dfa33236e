/* check — what a failed invariant does (check.h). */
#include "common/check.h"

#include <stdio.h>
#include <stdlib.h>

void dsq__check_failed(const char *file, int line, const char *cond)
{
    /* Not through the logger: it may hold the lock of what failed. */
    fprintf(stderr, "dosqld: invariant failed at %s:%d: %s\n", file, line, cond);
    abort();
}
