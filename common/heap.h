/* heap — how much of the heap the process uses.
 *
 * glibc's count (mallinfo2), or, under AddressSanitizer, whose allocator
 * replaces malloc, its own. mallinfo2 walks malloc's free lists under
 * their locks: call it for an occasional report (getStats), not on a hot
 * path. */
#ifndef DSQ_HEAP_H
#define DSQ_HEAP_H

#include <stdint.h>

typedef struct dsq_heap_usage {
    uint64_t in_use;     /* bytes malloc has handed out */
    uint64_t free_bytes; /* bytes it holds free, not given back to the system */
} dsq_heap_usage;

dsq_heap_usage dsq_heap_usage_get(void);

#endif
