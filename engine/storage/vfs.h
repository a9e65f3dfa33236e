/* vfs — the SQLite VFS "dosqld" (see vfs.c): SQLite connections whose
 * main database is a page store or a view of one.
 *
 * A read of a page whose file was evicted to the object store, and whose
 * chunk is not in the warm cache, fails as SQLITE_IOERR; the miss itself
 * is kept per thread for the executor (cold.h, "a miss, from the read
 * that met it to the call that waits"). The VFS reads on the
 * calling thread and leaves that miss in place. */
#ifndef DSQ_VFS_H
#define DSQ_VFS_H

#include <sqlite3.h>
#include <stddef.h>

struct dsq_ps;
struct dsq_ps_view;

/* Open a SQLite connection whose main database is store `ps`; `path` is
 * only its name. Sets the connection's journal, sync and temp settings.
 * 0, or a negative code with a message: the negated errno of the store's
 * failure (-EMFILE...), -ENOMEM, or -EIO when there was none. */
int dsq__vfs_open(struct dsq_ps *ps, const char *path, sqlite3 **db, char *err, size_t errlen);
/* A read-only connection on a view of a store (time travel, reads beside
 * a transaction, read-only transactions). Returns as dsq__vfs_open. */
int dsq__vfs_open_view(struct dsq_ps_view *v, const char *path, sqlite3 **db, char *err, size_t errlen);
/* The errno of the store's last failure on this thread (a file it could
 * not open, write or sync), 0 when there was none since the last call;
 * cleared. SQLite does not ask for it on every path (a failed commit's
 * second phase leaves sqlite3_system_errno at 0), so the engine takes it
 * here when a statement fails with SQLITE_IOERR, to tell "too many open
 * files" from the rest. */
int dsq__vfs_take_errno(void);

#endif
