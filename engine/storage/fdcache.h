/* fdcache — a bounded set of open read-only descriptors of one
 * database's files (storage.max_open_files_per_database).
 *
 * Time travel and reads of pages whose newest version is old reach into
 * any log segment or checkpoint file a database keeps; holding each of
 * them open made a long-written database hold hundreds of descriptors.
 * Readers ask the cache instead: it opens a file on demand and, at its
 * bound, closes the least recently used descriptor no one is reading
 * through. Descriptors the write path needs (the newest log segment, a
 * segment not yet synced: wal.c) are not in here.
 *
 * A file is known by a key chosen by its owners (wal.c: the segment's
 * sequence number; ckpt.c: its LSN with the top bit set). Threads: any;
 * a descriptor handed out stays open until it is given back. */
#ifndef DSQ_FDCACHE_H
#define DSQ_FDCACHE_H

#include <stddef.h>
#include <stdint.h>


typedef struct dsq_fdc dsq_fdc;

/* A cache that keeps at most `max` (>= 1) descriptors open while no one
 * reads through them. NULL when out of memory. */
dsq_fdc *dsq_fdc_new(unsigned max);
/* Close every descriptor; none may still be in use. */
void dsq_fdc_free(dsq_fdc *c);

/* A read-only descriptor of file `path` (known as `key`), open until
 * dsq_fdc_put. On EMFILE/ENFILE a descriptor no one uses is closed and the
 * open tried again. Returns it, or -1 with errno. */
int dsq_fdc_get(dsq_fdc *c, uint64_t key, const char *path);
/* Give back a descriptor dsq_fdc_get returned. */
void dsq_fdc_put(dsq_fdc *c, int fd);
/* File `key` was removed or replaced: its descriptor goes (once given
 * back, if in use), and the next get opens the file again. */
void dsq_fdc_forget(dsq_fdc *c, uint64_t key);
/* Descriptors open now. */
unsigned dsq_fdc_open_count(dsq_fdc *c);

#endif
