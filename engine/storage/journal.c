/* journal — the node's commit journal (see journal.h).
 *
 * Divisions: formats; slots; replay; opening and closing; appending;
 * syncing; the flush thread. */
#include "engine/storage/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/check.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/storage/disk.h"

/* ---- formats ---------------------------------------------------------------------------- */

/* File header: magic[8] | version u32 | state u32 | seq u32 | pad u32 |
 * void_from u64 | created_us u64 | file_bytes u64 | zero to 60 | crc u32.
 * state LIVE: the file may hold entries not yet in the databases' durable
 * logs; DEAD: it does not (its seq is kept so that seqs only grow). A file
 * never used has a zero header. void_from, when not 0: every entry of an
 * older file at a position >= it is void (a sync failed). */
#define JNL_MAGIC "DSQJNL01"
#define JNL_VERSION 1
#define ST_LIVE 1
#define ST_DEAD 2

/* Entry: magic u32 | len u32 | seq u32 | seg u32 | off u64 | lsn u64 |
 * rec_len u32 | name_len u16 | flags u16 | name, zero-padded to 8 | the
 * record (unless IN_LOG) | crc u32 | 4 zero bytes. The crc covers every
 * byte before it with the seq field taken as zero (so that it can be
 * computed before the file is known); the seq must be the file's. */
#define ENT_MAGIC 0x4a515344u /* "DSQJ" */
#define F_IN_LOG 1            /* the record is durable in the database's own log */

static uint64_t pos_of(uint32_t seq, uint64_t off) { return (uint64_t)seq << 32 | off; }
static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

static void header_encode(uint8_t h[DSQ_JNL_HDR], uint32_t state, uint32_t seq, uint64_t void_from,
                          uint64_t file_bytes)
{
    memset(h, 0, DSQ_JNL_HDR);
    memcpy(h, JNL_MAGIC, 8);
    dsq_put32(h + 8, JNL_VERSION);
    dsq_put32(h + 12, state);
    dsq_put32(h + 16, seq);
    dsq_put64(h + 24, void_from);
    dsq_put64(h + 32, dsq_wall_ms() * 1000);
    dsq_put64(h + 40, file_bytes);
    dsq_put32(h + 60, dsq_crc32(h, 60));
}

/* 0 and the fields, or -1 when it is no valid header (a new file's). */
static int header_decode(const uint8_t h[DSQ_JNL_HDR], uint32_t *state, uint32_t *seq, uint64_t *void_from)
{
    if (memcmp(h, JNL_MAGIC, 8) != 0 || dsq_get32(h + 8) != JNL_VERSION || dsq_get32(h + 60) != dsq_crc32(h, 60))
        return -1;
    *state = dsq_get32(h + 12);
    *seq = dsq_get32(h + 16);
    *void_from = dsq_get64(h + 24);
    return *state == ST_LIVE || *state == ST_DEAD ? 0 : -1;
}

/* Between moves to a new file the flush thread has the logs write what
 * they hold, and push it to the disk, each time FLUSH_BYTES have been
 * appended; then a syncfs, or FLUSH_EVERY_MS after the first append since
 * the last: the databases' logs reach the disk a little at a time, not a
 * whole file's worth at the move (a burst that would hold up the
 * journal's own fdatasyncs behind it for a long while). A syncfs costs
 * for each file it covers besides each MiB (here 4 ms a MiB of one log,
 * 12 ms a MiB spread over 64): while more than LOGS_PER_FLUSH logs wrote
 * since the last, it waits for FLUSH_BYTES more for each LOGS_PER_FLUSH
 * of them, up to a quarter of a file. The logs' pushes (each waits for
 * its own writes, on this thread) leave the syncfs little to write: the
 * commit path's fdatasyncs no longer queue behind tens of ms of it. */
#define FLUSH_EVERY_MS 1000
#define FLUSH_BYTES (1u << 20)
#define LOGS_PER_FLUSH 8

/* For tests: FLUSH_EVERY_MS in its place when not 0. */
_Atomic unsigned dsq_jnl_flush_every_ms;

/* ---- slots ------------------------------------------------------------------------------ */

typedef struct slot {
    int fd;
    unsigned no;       /* the file NN.jnl */
    uint32_t seq;      /* 0: free (dead or never used) */
    uint64_t written;  /* bytes in use */
    uint64_t synced;   /* of them known durable */
    uint64_t held;     /* entries whose records are not yet in their logs */
    uint64_t zeroed;   /* bytes from the start whose blocks are written (see zeroing) */
} slot;

typedef struct void_range {
    uint64_t lo, hi;
    int eno; /* why: the failed write's or fdatasync's errno */
} void_range;

struct dsq_jnl {
    char *dir;
    int dirfd;
    uint64_t file_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a sync or a flush finished */
    pthread_cond_t fcv;     /* wakes the flush thread */
    slot slots[DSQ_JNL_MAX_FILES];
    unsigned nslots;
    int cur;                /* the slot appended to */
    uint32_t last_seq;
    uint64_t synced_pos;    /* every entry ending at or before it is durable or void */
    bool syncing;
    bool must_rotate;       /* a sync failed and the move to a new file did too */
    uint64_t void_from;     /* for the next file's header, when must_rotate */
    void_range *voids;
    size_t nvoids, vcap;
    pthread_t flusher;
    bool stop;
    uint64_t bytes_synced;  /* st.bytes at the flush thread's last syncfs */
    uint64_t bytes_written; /* st.bytes when it last had the logs write */
    unsigned logs_written;  /* the most logs that wrote at once since the syncfs */
    uint64_t flush_failures;
    bool zero_asked;        /* the flush thread was woken to zero ahead */
    bool zeroing;           /* it writes zeros to [zfrom, ...) of slot zslot */
    int zslot;
    uint64_t zfrom;
    /* Entries are copied here and written to the current file in one
     * pwrite by the next sync (or when the file changes, or the buffer
     * is large): the appenders' part is a copy. */
    dsq_buf buf;            /* entries of slot cur not yet written */
    uint64_t buf_off;       /* where buf's first byte goes in that file */
    dsq_buf spare;          /* the other buffer, swapped in by a sync */
    uint32_t writing;       /* the seq of the file a sync is writing a taken buffer to, or 0 */
    int write_errno;        /* a buffer could not be written: the next sync fails */
    pthread_mutex_t hmu;    /* holders (taken before a log's mutex, never inside mu) */
    pthread_mutex_t pmu;    /* a round of pushes (taken before hmu): removals wait for it */
    dsq_jnl_holder *holders;
    dsq_jnl_stats st;
};

#define BUF_MAX (4u << 20) /* written at once past this */

/* Write the buffered entries to the current file (mu held). A failure is
 * kept for the next sync to report: those entries are void. */
static void buf_write(dsq_jnl *j)
{
    if (j->buf.len == 0)
        return;
    int rc = dsq_pwrite_full(j->slots[j->cur].fd, j->buf.data, j->buf.len, (off_t)j->buf_off);
    if (rc != 0 && j->write_errno == 0)
        j->write_errno = -rc;
    j->buf_off += j->buf.len;
    dsq_buf_reset(&j->buf);
}

static void slot_path(const char *dir, unsigned no, char *out, size_t n)
{
    snprintf(out, n, "%s/%02u.jnl", dir, no);
}

/* Create slot file `no`, its space allocated (not written: the first pass
 * through it converts the extents as it goes). */
static int slot_create(dsq_jnl *j, unsigned no, char *err, size_t errlen)
{
    char path[4200];
    slot_path(j->dir, no, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %.3000s: %s", path, strerror(errno));
        return -1;
    }
    int rc = fallocate(fd, 0, 0, (off_t)j->file_bytes);
    if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
        rc = ftruncate(fd, (off_t)j->file_bytes);
    if (rc != 0 || fdatasync(fd) != 0) {
        int saved = errno;
        close(fd);
        unlink(path);
        snprintf(err, errlen, "cannot allocate %.3000s: %s", path, strerror(saved));
        errno = saved;
        return -1;
    }
    fsync(j->dirfd);
    j->slots[j->nslots++] = (slot){.fd = fd, .no = no};
    j->st.files = j->nslots;
    return 0;
}

/* Begin a new file (caller holds mu): a free slot, or a new one, gets the
 * next seq. The header is written now and made durable by the first sync
 * that covers an entry in the file. */
static int rotate(dsq_jnl *j, uint64_t void_from, char *err, size_t errlen)
{
    DSQ_ASSERT_HELD(&j->mu);
    if (j->cur >= 0) {
        buf_write(j); /* the file's last entries */
        slot *old = &j->slots[j->cur];
        if (old->written > old->zeroed) /* its blocks are written that far: no zeroing next time */
            old->zeroed = old->written;
    }
    int pick = -1;
    for (unsigned i = 0; i < j->nslots; i++)
        if (j->slots[i].seq == 0 && (int)i != j->cur) {
            pick = (int)i;
            break;
        }
    if (pick < 0) {
        if (j->nslots == DSQ_JNL_MAX_FILES) {
            snprintf(err, errlen, "the journal is full (%u files not yet flushed: the file system "
                     "cannot be synced)", j->nslots);
            errno = ENOSPC;
            return -1;
        }
        if (slot_create(j, j->nslots, err, errlen) != 0)
            return -1;
        pick = (int)j->nslots - 1;
    }
    slot *s = &j->slots[pick];
    uint8_t h[DSQ_JNL_HDR];
    header_encode(h, ST_LIVE, j->last_seq + 1, void_from, j->file_bytes);
    int rc = dsq_pwrite_full(s->fd, h, sizeof h, 0);
    if (rc != 0) {
        snprintf(err, errlen, "cannot write a journal header: %s", strerror(-rc));
        errno = -rc; /* for the caller: ENOSPC */
        return -1;
    }
    s->seq = ++j->last_seq;
    s->written = DSQ_JNL_HDR;
    s->synced = 0;
    j->cur = pick;
    j->buf_off = DSQ_JNL_HDR;
    j->st.live++;
    pthread_cond_signal(&j->fcv); /* the file before it can be flushed */
    return 0;
}

/* The errno of the failure that voided part of [first, end), or 0. */
static int voided(const dsq_jnl *j, uint64_t first, uint64_t end)
{
    if (first >= end)
        return 0;
    for (size_t i = 0; i < j->nvoids; i++)
        if (first < j->voids[i].hi && j->voids[i].lo < end)
            return j->voids[i].eno;
    return 0;
}

/* ---- zeroing ahead ---------------------------------------------------------------------- */

/* A new file's space is allocated (fallocate) but its blocks are
 * "unwritten": the first write into each block converts it, a change to
 * the file's metadata, and the fdatasync after it must then commit the
 * file system's journal too. Into blocks already written, an fdatasync
 * writes the data and flushes the disk's cache, nothing more — on this
 * project's VM 7,200 appends + fdatasync a second against 4,200 (8 KiB
 * each, docs/storage.md). So the flush thread writes zeros ahead of the
 * appends, a chunk at a time, each pushed to disk and synced there, off
 * the commit path; a file used once is written all through, and its next
 * passes need none. A journal used lightly never pays: zeroing begins once
 * a file has a chunk in use. */
_Atomic unsigned dsq_jnl_zero_delay_us;

static uint64_t zero_chunk(const dsq_jnl *j)
{
    uint64_t c = j->file_bytes / 16 & ~(uint64_t)4095;
    return c > (1u << 20) ? 1u << 20 : c < 4096 ? 4096 : c;
}

/* Should the current file be zeroed further? (mu held) */
static bool zero_wanted(const dsq_jnl *j)
{
    const slot *s = &j->slots[j->cur];
    uint64_t c = zero_chunk(j);
    return !j->zeroing && s->written >= c && s->zeroed < j->file_bytes && s->zeroed < s->written + 4 * c;
}

/* Zero the next chunk of the current file (mu held; released for the
 * I/O). Appends into that chunk wait until it is done (append_entry). A
 * failure costs only speed: the file is left as it is. */
static void zero_ahead(dsq_jnl *j)
{
    static const uint8_t zeros[64 * 1024];
    slot *s = &j->slots[j->cur];
    uint64_t from = s->written > s->zeroed ? (s->written + 4095) & ~(uint64_t)4095 : s->zeroed;
    uint64_t to = from + zero_chunk(j);
    if (to > j->file_bytes)
        to = j->file_bytes;
    if (from >= to) {
        s->zeroed = j->file_bytes;
        return;
    }
    char path[4200];
    slot_path(j->dir, s->no, path, sizeof path);
    j->zeroing = true;
    j->zslot = j->cur;
    j->zfrom = from;
    pthread_mutex_unlock(&j->mu);
    unsigned delay = atomic_load(&dsq_jnl_zero_delay_us);
    if (delay > 0)
        usleep(delay);
    /* A descriptor of its own: a write-back error reported to this
     * thread's syncs must still reach the commit path's fdatasync, and
     * the kernel tells each open file of it once (a dup would share the
     * commit path's). */
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : 0;
    for (uint64_t at = from; at < to && rc == 0; at += sizeof zeros) {
        size_t n = to - at < sizeof zeros ? (size_t)(to - at) : sizeof zeros;
        rc = dsq_pwrite_full(fd, zeros, n, (off_t)at);
    }
    /* To disk now, by this thread: a sync of the commit path must not find
     * the zeros dirty and write them itself. */
    if (rc == 0)
        rc = sync_file_range(fd, (off_t)from, (off_t)(to - from),
                             SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    if (rc == 0)
        rc = fdatasync(fd);
    int saved = errno;
    if (fd >= 0)
        close(fd);
    pthread_mutex_lock(&j->mu);
    j->zeroing = false;
    slot *z = &j->slots[j->zslot];
    if (rc == 0) {
        if (to > z->zeroed)
            z->zeroed = to;
        j->st.zeroed += to - from;
    } else {
        DSQ_WARN("journal_zeroing_failed", "dir=%s file=%02u reason=%s", j->dir, z->no,
                 dsq_log_q(strerror(saved)));
        z->zeroed = j->file_bytes; /* not again in this file */
    }
    pthread_cond_broadcast(&j->cv); /* appends waiting for the chunk */
}

/* ---- replay ----------------------------------------------------------------------------- */

typedef struct rfile {
    int fd;
    uint32_t seq;
    uint64_t void_from;
    uint64_t size;
} rfile;

static int cmp_rfile(const void *a, const void *b)
{
    uint32_t x = ((const rfile *)a)->seq, y = ((const rfile *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Read the entry at `off` of f into *buf: its length, 0 at the end of the
 * file's entries (anything else there is stale or torn), -1 on I/O error. */
static long read_entry(const rfile *f, uint64_t off, uint8_t **buf, size_t *cap, dsq_jnl_entry *en)
{
    uint8_t h[DSQ_JNL_ENTRY_HDR];
    if (off + DSQ_JNL_ENTRY_HDR + 8 > f->size)
        return 0;
    int rc = dsq_pread_full(f->fd, h, sizeof h, off);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    uint32_t len = dsq_get32(h + 4), rec_len = dsq_get32(h + 32);
    uint16_t name_len = (uint16_t)(h[36] | h[37] << 8), flags = (uint16_t)(h[38] | h[39] << 8);
    if (dsq_get32(h) != ENT_MAGIC || dsq_get32(h + 8) != f->seq || name_len == 0 ||
        name_len > DSQ_JNL_NAME_MAX || len % 8 != 0 || len > f->size - off ||
        (uint64_t)len != DSQ_JNL_ENTRY_HDR + pad8(name_len) + ((flags & F_IN_LOG) ? 0 : (uint64_t)rec_len) + 8)
        return 0;
    if (*cap < len + 1) {
        uint8_t *n = realloc(*buf, len + 1);
        if (n == NULL)
            return -1;
        *buf = n;
        *cap = len + 1;
    }
    if (dsq_pread_full(f->fd, *buf, len, off) != 0)
        return -1;
    uint8_t *p = *buf;
    dsq_put32(p + 8, 0);
    if (dsq_get32(p + len - 8) != dsq_crc32(p, len - 8))
        return 0;
    size_t name_end = DSQ_JNL_ENTRY_HDR + pad8(name_len);
    if (memchr(p + DSQ_JNL_ENTRY_HDR, '\0', name_len) != NULL)
        return 0;
    *en = (dsq_jnl_entry){.seg = dsq_get32(p + 12), .off = dsq_get64(p + 16), .lsn = dsq_get64(p + 24),
                          .len = rec_len, .rec = (flags & F_IN_LOG) ? NULL : p + name_end};
    return len;
}

long dsq_jnl_replay(const char *dir, dsq_jnl_visit_fn visit, void *ud, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %.3000s: %s", dir, strerror(errno));
        return -1;
    }
    rfile files[DSQ_JNL_MAX_FILES];
    size_t n = 0;
    long count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned no;
        char tail[8];
        if (strlen(de->d_name) != 6 || sscanf(de->d_name, "%2u.%3s", &no, tail) != 2 ||
            strcmp(tail, "jnl") != 0 || n == DSQ_JNL_MAX_FILES)
            continue;
        char path[4200];
        slot_path(dir, no, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        uint8_t h[DSQ_JNL_HDR];
        uint32_t state, seq;
        uint64_t void_from;
        if (fd < 0 || fstat(fd, &st) != 0) {
            snprintf(err, errlen, "cannot open %.3000s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            count = -1;
            break;
        }
        if (dsq_pread_full(fd, h, sizeof h, 0) != 0 || header_decode(h, &state, &seq, &void_from) != 0 ||
            state != ST_LIVE) {
            close(fd);
            continue;
        }
        files[n++] = (rfile){fd, seq, void_from, (uint64_t)st.st_size};
    }
    closedir(d);
    if (count == 0 && n > 1)
        qsort(files, n, sizeof *files, cmp_rfile);
    /* An entry is void when a later file's header says so. */
    uint64_t void_after[DSQ_JNL_MAX_FILES];
    uint64_t v = UINT64_MAX;
    for (size_t i = n; i-- > 0;) {
        void_after[i] = v;
        if (files[i].void_from != 0 && files[i].void_from < v)
            v = files[i].void_from;
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n && count >= 0; i++) {
        uint64_t off = DSQ_JNL_HDR;
        for (;;) {
            dsq_jnl_entry en;
            long len = read_entry(&files[i], off, &buf, &cap, &en);
            if (len < 0) {
                snprintf(err, errlen, "%.3000s: cannot read journal file %u at %llu: %s", dir,
                         files[i].seq, (unsigned long long)off, strerror(errno));
                count = -1;
                break;
            }
            if (len == 0 || pos_of(files[i].seq, off) >= void_after[i])
                break;
            uint8_t *p = buf;
            size_t name_len = (size_t)(p[36] | p[37] << 8);
            char name[DSQ_JNL_NAME_MAX + 1];
            memcpy(name, p + DSQ_JNL_ENTRY_HDR, name_len);
            name[name_len] = '\0';
            en.name = name;
            if (visit(ud, &en, err, errlen) != 0) {
                count = -1;
                break;
            }
            count++;
            off += (uint64_t)len;
        }
    }
    free(buf);
    for (size_t i = 0; i < n; i++)
        close(files[i].fd);
    return count;
}

/* ---- opening and closing ---------------------------------------------------------------- */

static void *flush_main(void *arg);

/* Mark slot i dead on disk: its seq stays, its entries no longer count. */
static int mark_dead(dsq_jnl *j, slot *s)
{
    uint8_t h[DSQ_JNL_HDR];
    header_encode(h, ST_DEAD, s->seq, 0, j->file_bytes);
    return dsq_pwrite_full(s->fd, h, sizeof h, 0) == 0 && fdatasync(s->fd) == 0 ? 0 : -1;
}

dsq_jnl *dsq_jnl_open(const char *dir, uint64_t file_bytes, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.3000s: %s", dir, strerror(errno));
        return NULL;
    }
    dsq_jnl *j = calloc(1, sizeof *j);
    if (j == NULL || (j->dir = strdup(dir)) == NULL) {
        if (j)
            free(j->dir);
        free(j);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->file_bytes = file_bytes;
    j->cur = -1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->hmu, NULL);
    pthread_mutex_init(&j->pmu, NULL);
    pthread_cond_init(&j->cv, NULL);
    pthread_cond_init(&j->fcv, NULL);
    j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        snprintf(err, errlen, "cannot open %.3000s: %s", dir, strerror(errno));
        goto fail;
    }
    /* What replay wrote into the databases' logs becomes durable. */
    if (syncfs(j->dirfd) != 0) {
        snprintf(err, errlen, "syncfs of %.3000s: %s", dir, strerror(errno));
        goto fail;
    }
    /* The slots there are: kept when of the right size, every one dead. */
    for (unsigned no = 0; no < DSQ_JNL_MAX_FILES; no++) {
        char path[4200];
        slot_path(dir, no, path, sizeof path);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            break;
        struct stat st;
        uint8_t h[DSQ_JNL_HDR];
        uint32_t state = 0, seq = 0;
        uint64_t void_from;
        if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != file_bytes) {
            close(fd);
            break; /* the size changed: this and later ones are made anew */
        }
        if (dsq_pread_full(fd, h, sizeof h, 0) == 0 && header_decode(h, &state, &seq, &void_from) == 0 &&
            seq > j->last_seq)
            j->last_seq = seq;
        j->slots[j->nslots++] = (slot){.fd = fd, .no = no, .seq = state == ST_LIVE ? seq : 0};
    }
    for (unsigned no = j->nslots; no < DSQ_JNL_MAX_FILES; no++) {
        char path[4200];
        slot_path(dir, no, path, sizeof path);
        if (unlink(path) != 0 && errno == ENOENT)
            break;
    }
    for (unsigned i = 0; i < j->nslots; i++) {
        slot *s = &j->slots[i];
        if (s->seq != 0 && mark_dead(j, s) != 0) {
            snprintf(err, errlen, "cannot retire journal file %02u: %s", s->no, strerror(errno));
            goto fail;
        }
        s->seq = 0;
    }
    while (j->nslots < 2)
        if (slot_create(j, j->nslots, err, errlen) != 0)
            goto fail;
    j->st.files = j->nslots;
    pthread_mutex_lock(&j->mu); /* (no other thread yet: rotate's rule) */
    int rrc = rotate(j, 0, err, errlen);
    pthread_mutex_unlock(&j->mu);
    if (rrc != 0)
        goto fail;
    j->synced_pos = pos_of(j->slots[j->cur].seq, 0);
    if (pthread_create(&j->flusher, NULL, flush_main, j) != 0) {
        snprintf(err, errlen, "cannot start the journal's thread");
        goto fail;
    }
    return j;
fail:
    for (unsigned i = 0; i < j->nslots; i++)
        close(j->slots[i].fd);
    if (j->dirfd >= 0)
        close(j->dirfd);
    pthread_cond_destroy(&j->fcv);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->hmu);
    pthread_mutex_destroy(&j->pmu);
    pthread_mutex_destroy(&j->mu);
    free(j->dir);
    free(j);
    return NULL;
}

void dsq_jnl_close(dsq_jnl *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_broadcast(&j->fcv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->flusher, NULL);
    buf_write(j);
    /* Nothing is appended any more: one syncfs makes every database's log
     * durable, and no file is live for the next start to replay. */
    if (j->nvoids == 0 && !j->must_rotate && j->write_errno == 0 && syncfs(j->dirfd) == 0) {
        for (unsigned i = 0; i < j->nslots; i++) {
            if (j->slots[i].seq == 0)
                continue;
            if (j->slots[i].held > 0) { /* a log still had them in memory: replay them */
                DSQ_WARN("journal_held_at_close", "dir=%s file=%02u entries=%llu", j->dir, j->slots[i].no,
                         (unsigned long long)j->slots[i].held);
                continue;
            }
            if (mark_dead(j, &j->slots[i]) != 0)
                break;
        }
    }
    for (unsigned i = 0; i < j->nslots; i++)
        close(j->slots[i].fd);
    close(j->dirfd);
    pthread_cond_destroy(&j->fcv);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->hmu);
    pthread_mutex_destroy(&j->pmu);
    pthread_mutex_destroy(&j->mu);
    free(j->voids);
    dsq_buf_free(&j->buf);
    dsq_buf_free(&j->spare);
    free(j->dir);
    free(j);
}

/* ---- appending -------------------------------------------------------------------------- */

static int append_entry(dsq_jnl *j, const char *name, uint32_t seg, uint64_t off, uint64_t lsn,
                        const void *rec, size_t len, bool held, uint64_t *first, uint64_t *end, char *err,
                        size_t errlen)
{
    size_t name_len = strlen(name);
    size_t head = DSQ_JNL_ENTRY_HDR + pad8(name_len);
    size_t elen = head + (rec ? len : 0) + 8;
    if (name_len == 0 || name_len > DSQ_JNL_NAME_MAX || len >= UINT32_MAX ||
        elen > j->file_bytes - DSQ_JNL_HDR) {
        snprintf(err, errlen, "a journal entry of %zu bytes does not fit", elen);
        errno = EINVAL;
        return -1;
    }
    uint8_t h[DSQ_JNL_ENTRY_HDR + DSQ_JNL_NAME_MAX + 8], tail[8] = {0};
    memset(h, 0, head);
    dsq_put32(h, ENT_MAGIC);
    dsq_put32(h + 4, (uint32_t)elen);
    dsq_put32(h + 12, seg);
    dsq_put64(h + 16, off);
    dsq_put64(h + 24, lsn);
    dsq_put32(h + 32, (uint32_t)len);
    h[36] = (uint8_t)name_len;
    h[37] = (uint8_t)(name_len >> 8);
    h[38] = rec ? 0 : F_IN_LOG;
    memcpy(h + DSQ_JNL_ENTRY_HDR, name, name_len);
    uint32_t crc = dsq_crc32(h, head);
    if (rec)
        crc = dsq_crc32_more(crc, rec, len);
    dsq_put32(tail, crc);
    struct iovec iov[3] = {{h, head}, {(void *)rec, rec ? len : 0}, {tail, 8}};

    pthread_mutex_lock(&j->mu);
    int rc = 0;
    for (;;) {
        if (j->must_rotate || j->slots[j->cur].written + elen > j->file_bytes) {
            rc = rotate(j, j->must_rotate ? j->void_from : 0, err, errlen);
            if (rc == 0)
                j->must_rotate = false;
        }
        /* Not into a chunk the flush thread is zeroing (it is ahead of the
         * appends by several chunks: only a burst catches up with it). */
        if (rc != 0 || !j->zeroing || j->zslot != j->cur || j->slots[j->cur].written + elen <= j->zfrom)
            break;
        j->st.zero_waits++;
        pthread_cond_wait(&j->cv, &j->mu);
    }
    if (rc == 0) {
        slot *s = &j->slots[j->cur];
        dsq_put32(h + 8, s->seq);
        uint64_t at = s->written;
        if (j->buf.len > 0 && j->buf.len + elen > BUF_MAX)
            buf_write(j);
        if (dsq_buf_reserve(&j->buf, elen) != 0) {
            snprintf(err, errlen, "out of memory");
            errno = ENOMEM;
            rc = -1;
        } else {
            for (int k = 0; k < 3; k++)
                if (iov[k].iov_len > 0)
                    dsq_buf_append(&j->buf, iov[k].iov_base, iov[k].iov_len);
        }
        if (rc == 0) {
            *first = pos_of(s->seq, at);
            *end = pos_of(s->seq, at + elen);
            s->written = at + elen;
            j->st.bytes += elen;
            if (held) {
                s->held++;
                j->st.held++;
            }
            if (j->st.bytes - j->bytes_written >= FLUSH_BYTES) {
                pthread_cond_signal(&j->fcv);
            } else if (!j->zero_asked && zero_wanted(j)) {
                j->zero_asked = true;
                pthread_cond_signal(&j->fcv);
            }
        }
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int dsq_jnl_append(dsq_jnl *j, const char *name, uint32_t seg, uint64_t off, uint64_t lsn,
                   const void *rec, size_t len, uint64_t *first, uint64_t *end, char *err, size_t errlen)
{
    return append_entry(j, name, seg, off, lsn, rec, len, false, first, end, err, errlen);
}

int dsq_jnl_append_held(dsq_jnl *j, const char *name, uint32_t seg, uint64_t off, uint64_t lsn,
                        const void *rec, size_t len, uint64_t *first, uint64_t *end, char *err,
                        size_t errlen)
{
    return append_entry(j, name, seg, off, lsn, rec, len, true, first, end, err, errlen);
}

void dsq_jnl_release(dsq_jnl *j, const uint64_t *first, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&j->mu);
    bool freed = false;
    for (size_t k = 0; k < n; k++) {
        uint32_t seq = (uint32_t)(first[k] >> 32);
        for (unsigned i = 0; i < j->nslots; i++) {
            slot *s = &j->slots[i];
            if (s->seq == seq && s->held > 0) {
                s->held--;
                j->st.held--;
                freed |= s->held == 0;
                break;
            }
        }
    }
    if (freed)
        pthread_cond_broadcast(&j->cv); /* the flush may be waiting */
    pthread_mutex_unlock(&j->mu);
}

void dsq_jnl_holder_add(dsq_jnl *j, dsq_jnl_holder *h)
{
    pthread_mutex_lock(&j->hmu);
    h->prev = NULL;
    h->next = j->holders;
    if (j->holders)
        j->holders->prev = h;
    j->holders = h;
    pthread_mutex_unlock(&j->hmu);
}

void dsq_jnl_holder_remove(dsq_jnl *j, dsq_jnl_holder *h)
{
    pthread_mutex_lock(&j->pmu); /* not while a round of pushes may call it */
    pthread_mutex_lock(&j->hmu);
    if (h->prev)
        h->prev->next = h->next;
    else if (j->holders == h)
        j->holders = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    pthread_mutex_unlock(&j->hmu);
    pthread_mutex_unlock(&j->pmu);
}

unsigned dsq_jnl_write_held(dsq_jnl *j, const char *name, bool push)
{
    unsigned n = 0;
    if (push)
        pthread_mutex_lock(&j->pmu);
    pthread_mutex_lock(&j->hmu);
    dsq_jnl_holder *first = j->holders;
    for (dsq_jnl_holder *h = first; h; h = h->next)
        if ((name == NULL || strcmp(h->name, name) == 0) && h->write(h->ud))
            n++;
    pthread_mutex_unlock(&j->hmu);
    if (push) {
        /* Without hmu: holders added meanwhile go in front of `first` and
         * change no `next` after it; none is removed while pmu is held. */
        for (dsq_jnl_holder *h = first; h; h = h->next)
            if (name == NULL || strcmp(h->name, name) == 0)
                h->push(h->ud);
        pthread_mutex_unlock(&j->pmu);
    }
    return n;
}

/* ---- syncing ---------------------------------------------------------------------------- */

typedef struct sync_job {
    int idx;
    uint32_t seq;
    uint64_t written;
} sync_job;

int dsq_jnl_sync(dsq_jnl *j, uint64_t first, uint64_t end, char *err, size_t errlen)
{
    pthread_mutex_lock(&j->mu);
    for (;;) {
        int eno = voided(j, first, end);
        if (eno != 0) {
            pthread_mutex_unlock(&j->mu);
            snprintf(err, errlen, "a write or fdatasync of the journal failed: %s", strerror(eno));
            errno = eno;
            return -1;
        }
        if (j->synced_pos >= end)
            break;
        if (j->syncing) {
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        /* This caller syncs for everyone: the files written since their
         * last sync, oldest first, up to what is written now. */
        j->syncing = true;
        sync_job jobs[DSQ_JNL_MAX_FILES];
        size_t n = 0;
        slot *c = &j->slots[j->cur];
        uint64_t target = pos_of(c->seq, c->written);
        uint32_t lo_seq = (uint32_t)(j->synced_pos >> 32);
        for (unsigned i = 0; i < j->nslots; i++) {
            slot *s = &j->slots[i];
            if (s->seq != 0 && s->seq >= lo_seq && s->written > s->synced)
                jobs[n++] = (sync_job){(int)i, s->seq, s->written};
        }
        for (size_t a = 1; a < n; a++) /* oldest first */
            for (size_t b = a; b > 0 && jobs[b - 1].seq > jobs[b].seq; b--) {
                sync_job t = jobs[b];
                jobs[b] = jobs[b - 1];
                jobs[b - 1] = t;
            }
        /* The buffered entries: this thread writes them, in one piece,
         * while appends go on into the other buffer. */
        dsq_buf taken = j->buf;
        int tfd = j->slots[j->cur].fd;
        uint64_t toff = j->buf_off;
        j->buf = j->spare;
        j->spare = (dsq_buf)DSQ_BUF_INIT;
        j->buf_off += taken.len;
        int rc = 0, saved = 0;
        if (j->write_errno != 0) { /* an earlier write of entries in range failed */
            saved = j->write_errno;
            j->write_errno = 0;
            rc = -1;
        }
        j->writing = j->slots[j->cur].seq;
        pthread_mutex_unlock(&j->mu);
        int wrc = rc == 0 && taken.len > 0 ? dsq_pwrite_full(tfd, taken.data, taken.len, (off_t)toff) : 0;
        if (wrc != 0) {
            saved = -wrc;
            rc = -1;
        }
        for (size_t k = 0; k < n && rc == 0; k++) {
            if (fdatasync(j->slots[jobs[k].idx].fd) != 0) {
                saved = errno;
                rc = -1;
            }
        }
        pthread_mutex_lock(&j->mu);
        j->writing = 0;
        dsq_buf_reset(&taken);
        if (j->spare.cap == 0)
            j->spare = taken; /* kept for the next swap */
        else
            dsq_buf_free(&taken);
        j->st.syncs++;
        if (rc == 0) {
            for (size_t k = 0; k < n; k++) {
                slot *s = &j->slots[jobs[k].idx];
                if (s->seq == jobs[k].seq && s->synced < jobs[k].written)
                    s->synced = jobs[k].written;
            }
            if (target > j->synced_pos)
                j->synced_pos = target;
        } else {
            /* What was written since the last good sync may or may not be
             * on disk: it is void, and the journal goes on in a new file
             * that says so. */
            DSQ_ERROR("journal_sync_failed", "dir=%s reason=%s", j->dir, dsq_log_q(strerror(saved)));
            if (j->nvoids == j->vcap) {
                size_t cap = j->vcap ? j->vcap * 2 : 4;
                void_range *v = realloc(j->voids, cap * sizeof *v);
                if (v != NULL) {
                    j->voids = v;
                    j->vcap = cap;
                }
            }
            uint64_t lo = j->synced_pos, hi = pos_of(j->last_seq + 1, 0);
            if (j->nvoids < j->vcap) {
                j->voids[j->nvoids++] = (void_range){lo, hi, saved};
            } else { /* out of memory: nothing before hi counts any more */
                j->voids[0] = (void_range){0, hi, saved};
            }
            char rerr[300];
            j->void_from = lo;
            if (rotate(j, lo, rerr, sizeof rerr) == 0) {
                fdatasync(j->slots[j->cur].fd); /* the void mark, at once */
                j->must_rotate = false;
            } else {
                j->must_rotate = true;
            }
            j->synced_pos = hi;
        }
        j->syncing = false;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* ---- the flush thread ------------------------------------------------------------------- */

/* The oldest live slot that is not the current one, or -1. mu held. */
static int flushable(dsq_jnl *j)
{
    int best = -1;
    for (unsigned i = 0; i < j->nslots; i++) {
        slot *s = &j->slots[i];
        if ((int)i != j->cur && s->seq != 0 && (best < 0 || s->seq < j->slots[best].seq))
            best = (int)i;
    }
    return best;
}

/* Whether a live file before seq `upto` holds entries whose records are
 * not yet in their logs. mu held. */
static bool held_before(const dsq_jnl *j, uint32_t upto)
{
    for (unsigned i = 0; i < j->nslots; i++)
        if (j->slots[i].seq != 0 && j->slots[i].seq < upto && j->slots[i].held > 0)
            return true;
    return false;
}

/* One flush: syncfs, then every live file before the current one dies,
 * oldest first. First the holders write the records they keep in memory;
 * a file whose records are not all written waits (the holders are asked
 * again). mu held on entry and exit. 0, -1 (the syncfs failed), or 1
 * (stopping while waiting). */
static int flush_once(dsq_jnl *j)
{
    uint32_t upto = j->slots[j->cur].seq;
    /* The logs write what they hold (a holder that cannot is asked again
     * every 100 ms); a sync writing entries it took from the buffer may be
     * writing to one of these files: it finishes first (later syncs write
     * to later files, so this wait ends). */
    for (;;) {
        pthread_mutex_unlock(&j->mu);
        dsq_jnl_write_held(j, NULL, true);
        pthread_mutex_lock(&j->mu);
        if (!held_before(j, upto) && (j->writing == 0 || j->writing >= upto))
            break;
        if (j->stop)
            return 1;
        dsq_cond_wait_ms(&j->cv, &j->mu, 100);
    }
    j->bytes_synced = j->bytes_written = j->st.bytes;
    j->logs_written = 0;
    pthread_mutex_unlock(&j->mu);
    int rc = syncfs(j->dirfd);
    int saved = errno;
    pthread_mutex_lock(&j->mu);
    if (rc != 0) {
        DSQ_ERROR("journal_flush_failed", "dir=%s reason=%s", j->dir, dsq_log_q(strerror(saved)));
        return -1;
    }
    for (;;) {
        int i = flushable(j);
        if (i < 0 || j->slots[i].seq >= upto)
            break;
        slot *s = &j->slots[i];
        pthread_mutex_unlock(&j->mu);
        rc = mark_dead(j, s); /* the slot is not appended to: only this thread writes it */
        saved = errno;
        pthread_mutex_lock(&j->mu);
        if (rc != 0) {
            DSQ_ERROR("journal_flush_failed", "dir=%s reason=%s", j->dir, dsq_log_q(strerror(saved)));
            return -1;
        }
        s->seq = 0;
        s->written = s->synced = 0;
        j->st.live--;
    }
    j->st.flushes++;
    return 0;
}


static void *flush_main(void *arg)
{
    dsq_thread_name("dsq-jnl-flush");
    dsq_jnl *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        j->zero_asked = false;
        if (zero_wanted(j)) {
            zero_ahead(j);
            continue;
        }
        if (flushable(j) < 0) {
            int rc = 0; /* (a MiB may have come while this thread was zeroing) */
            unsigned every_ms = atomic_load(&dsq_jnl_flush_every_ms);
            if (j->st.bytes - j->bytes_written < FLUSH_BYTES)
                rc = dsq_cond_wait_ms(&j->fcv, &j->mu, every_ms ? every_ms : FLUSH_EVERY_MS);
            /* (Held entries: a log's write failed or is still to come.) */
            bool idle = rc == ETIMEDOUT && (j->st.bytes > j->bytes_synced || j->st.held > 0);
            if ((!idle && j->st.bytes - j->bytes_written < FLUSH_BYTES) || flushable(j) >= 0)
                continue;
            uint64_t at = j->st.bytes;
            pthread_mutex_unlock(&j->mu);
            unsigned n = dsq_jnl_write_held(j, NULL, true);
            pthread_mutex_lock(&j->mu);
            j->bytes_written = at;
            if (n > j->logs_written)
                j->logs_written = n;
            uint64_t every = (uint64_t)FLUSH_BYTES * (j->logs_written / LOGS_PER_FLUSH + 1);
            if (every > j->file_bytes / 4)
                every = j->file_bytes / 4;
            if (!idle && at - j->bytes_synced < every)
                continue;
            j->bytes_synced = at;
            j->logs_written = 0;
            pthread_mutex_unlock(&j->mu);
            syncfs(j->dirfd); /* a failure shows at the flush that retires a file */
            pthread_mutex_lock(&j->mu);
            j->st.bulk_syncs++;
            continue;
        }
        int rc = flush_once(j);
        if (rc == 1)
            continue;
        if (rc != 0) {
            j->flush_failures++;
            pthread_cond_broadcast(&j->cv);
            dsq_cond_wait_ms(&j->fcv, &j->mu, 1000); /* try again in a second */
            continue;
        }
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int dsq_jnl_barrier(dsq_jnl *j, char *err, size_t errlen)
{
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    if (j->must_rotate || j->slots[j->cur].written > DSQ_JNL_HDR) {
        rc = rotate(j, j->must_rotate ? j->void_from : 0, err, errlen);
        if (rc == 0)
            j->must_rotate = false;
    }
    uint32_t upto = j->slots[j->cur].seq;
    uint64_t failures = j->flush_failures;
    while (rc == 0) {
        int i = flushable(j);
        if (i < 0 || j->slots[i].seq >= upto)
            break;
        if (j->flush_failures != failures) {
            snprintf(err, errlen, "the file system could not be synced (see journal_flush_failed)");
            rc = -1;
            break;
        }
        pthread_cond_signal(&j->fcv);
        pthread_cond_wait(&j->cv, &j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

uint64_t dsq_jnl_inline_max(const dsq_jnl *j) { return j->file_bytes / 8; }

void dsq_jnl_stats_get(dsq_jnl *j, dsq_jnl_stats *out)
{
    pthread_mutex_lock(&j->mu);
    *out = j->st;
    pthread_mutex_unlock(&j->mu);
}
