/* heap — the process's heap use (heap.h). */
#include "common/heap.h"

#include <malloc.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define DSQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DSQ_ASAN 1
#endif
#endif
#ifndef DSQ_ASAN
#define DSQ_ASAN 0
#else
/* AddressSanitizer's allocator (sanitizer/allocator_interface.h, which
 * gcc does not ship). */
size_t __sanitizer_get_current_allocated_bytes(void);
size_t __sanitizer_get_free_bytes(void);
#endif

dsq_heap_usage dsq_heap_usage_get(void)
{
#if DSQ_ASAN
    return (dsq_heap_usage){__sanitizer_get_current_allocated_bytes(), __sanitizer_get_free_bytes()};
#else
    struct mallinfo2 mi = mallinfo2();
    return (dsq_heap_usage){mi.uordblks + mi.hblkhd, mi.fordblks};
#endif
}
