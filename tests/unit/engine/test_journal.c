/* Unit tests: engine/storage/journal — entries read back in order, a damaged
 * or torn entry ends the replay there, stale entries of a reused file are not
 * taken, a clean close and a barrier leave nothing live, records too large
 * are journaled by place only, positions grow across files. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "engine/storage/disk.h"
#include "engine/storage/journal.h"
#include "tests/unit/support/wait.h"

#define FILE_BYTES (64u * 1024)

static char dir[64];
static char jdir[96];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/dsq-jnl-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(jdir, sizeof jdir, "%s/journal", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(journal, .init = setup, .fini = teardown);

/* A record of `len` bytes (a multiple of 8) whose bytes depend on lsn. */
static void record(uint8_t *p, size_t len, uint64_t lsn)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(lsn * 31 + i * 7);
}

#define SEEN_MAX 64

typedef struct seen {
    char name[SEEN_MAX][32];
    uint64_t lsn[SEEN_MAX];
    uint32_t seg[SEEN_MAX];
    uint64_t off[SEEN_MAX];
    uint32_t len[SEEN_MAX];
    bool has_rec[SEEN_MAX];
    bool rec_ok[SEEN_MAX];
    long n;
} seen;

static int visit(void *ud, const dsq_jnl_entry *en, char *err, size_t errlen)
{
    seen *s = ud;
    cr_assert_lt(s->n, SEEN_MAX);
    long i = s->n++;
    snprintf(s->name[i], sizeof s->name[i], "%s", en->name);
    s->lsn[i] = en->lsn;
    s->seg[i] = en->seg;
    s->off[i] = en->off;
    s->len[i] = en->len;
    s->has_rec[i] = en->rec != NULL;
    if (en->rec) {
        uint8_t want[4096];
        record(want, en->len, en->lsn);
        s->rec_ok[i] = en->len <= sizeof want && memcmp(want, en->rec, en->len) == 0;
    }
    return 0;
}

static dsq_jnl *open_j(void)
{
    char err[256];
    dsq_jnl *j = dsq_jnl_open(jdir, FILE_BYTES, err, sizeof err);
    cr_assert_not_null(j, "%s", err);
    return j;
}

static void append(dsq_jnl *j, const char *name, uint64_t lsn, size_t len, uint64_t *first, uint64_t *end)
{
    uint8_t rec[4096];
    char err[256];
    uint64_t f, e;
    record(rec, len, lsn);
    cr_assert_eq(dsq_jnl_append(j, name, 1, 64 + lsn * 1000, lsn, rec, len, &f, &e, err,
                                sizeof err),
                 0,
                 "%s", err);
    cr_assert_gt(e, f);
    if (first)
        *first = f;
    if (end)
        *end = e;
}

/* Leave the journal as a crash would: the files as they are, no close. */
static seen replay_now(void)
{
    seen s = {0};
    char err[256];
    long n = dsq_jnl_replay(jdir, visit, &s, err, sizeof err);
    cr_assert_eq(n, s.n, "%s", err);
    return s;
}

Test(journal, entries_come_back_in_order_with_their_places)
{
    dsq_jnl *j = open_j();
    const char *names[] = {"a", "bb", "a", "ccc.d-e_f", "bb"};
    uint64_t end = 0;
    for (int i = 0; i < 5; i++)
        append(j, names[i], (uint64_t)i + 1, 8 * (size_t)(i + 1) * 13, NULL, &end);
    char err[256];
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    seen s = replay_now(); /* as after a kill: the journal is live */
    cr_assert_eq(s.n, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(s.name[i], names[i]);
        cr_assert_eq(s.lsn[i], (uint64_t)i + 1);
        cr_assert_eq(s.seg[i], 1u);
        cr_assert_eq(s.off[i], 64 + ((uint64_t)i + 1) * 1000);
        cr_assert_eq(s.len[i], 8u * (uint32_t)(i + 1) * 13);
        cr_assert(s.has_rec[i] && s.rec_ok[i], "entry %d's record", i);
    }
    dsq_jnl_close(j);
    /* A clean close flushed: nothing is live any more. */
    s = replay_now();
    cr_assert_eq(s.n, 0);
}

/* The file that holds the entries: the one live header's. */
static int live_file(char *path, size_t n)
{
    for (int no = 0; no < 8; no++) {
        snprintf(path, n, "%s/%02d.jnl", jdir, no);
        int fd = open(path, O_RDWR);
        if (fd < 0)
            continue;
        uint8_t h[64];
        cr_assert_eq(pread(fd, h, 64, 0), 64);
        if (memcmp(h, "DSQJNL01", 8) == 0 && h[12] == 1)
            return fd;
        close(fd);
    }
    cr_assert_fail("no live journal file");
    return -1;
}

Test(journal, a_damaged_entry_ends_the_replay_there)
{
    dsq_jnl *j = open_j();
    uint64_t first[4], end;
    for (int i = 0; i < 4; i++)
        append(j, "db", (uint64_t)i + 1, 200, &first[i], &end);
    char err[256];
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    char path[160];
    int fd = live_file(path, sizeof path);
    /* One byte of the third entry's record. */
    uint64_t off = (first[2] & 0xffffffffu) + 60;
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x20;
    cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    seen s = replay_now();
    cr_assert_eq(s.n, 2, "entries before the damage, none after: %ld", s.n);
    /* Torn: the fourth's tail never written. */
    b ^= 0x20;
    cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    uint8_t zero[64] = {0};
    cr_assert_eq(pwrite(fd, zero, sizeof zero, (off_t)(first[3] & 0xffffffffu) + 100), (ssize_t)sizeof zero);
    s = replay_now();
    cr_assert_eq(s.n, 3);
    close(fd);
    dsq_jnl_close(j);
}

Test(journal, stale_entries_of_a_reused_file_are_not_taken)
{
    /* Fill several files so that slots are reused, then crash: only the
     * entries of the files still live come back, and in order. */
    dsq_jnl *j = open_j();
    uint64_t lsn = 0, end = 0;
    char err[256];
    while ((end >> 32) < 6) { /* into the sixth file */
        append(j, "x", ++lsn, 1000, NULL, &end);
        cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    }
    /* Let the flush thread retire the files before the current one. */
    cr_assert_eq(dsq_jnl_barrier(j, err, sizeof err), 0, "%s", err);
    uint64_t after = lsn;
    for (int i = 0; i < 3; i++)
        append(j, "x", ++lsn, 1000, NULL, &end);
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    seen s = replay_now();
    cr_assert_eq(s.n, 3, "only what follows the barrier: %ld", s.n);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(s.lsn[i], after + 1 + (uint64_t)i);
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    cr_assert_lt(st.files, 6u, "files are reused, not only added: %u (live %u, flushes %llu)", st.files, st.live, (unsigned long long)st.flushes);
    cr_assert_geq(st.flushes, 1u);
    dsq_jnl_close(j);
}

Test(journal, a_restart_replays_the_live_files_then_starts_clean)
{
    dsq_jnl *j = open_j();
    uint64_t end;
    append(j, "a", 1, 64, NULL, &end);
    append(j, "a", 2, 64, NULL, &end);
    char err[256];
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    /* No close: a crash. The next process replays, then opens. */
    seen s = replay_now();
    cr_assert_eq(s.n, 2);
    dsq_jnl *k = open_j();
    s = replay_now();
    cr_assert_eq(s.n, 0, "opened: what was live is dead");
    uint64_t first2, end2;
    append(k, "a", 3, 64, &first2, &end2);
    cr_assert_gt(first2, end, "positions keep growing across starts");
    cr_assert_eq(dsq_jnl_sync(k, first2, end2, err, sizeof err), 0, "%s", err);
    s = replay_now();
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.lsn[0], 3u);
    dsq_jnl_close(k);
    /* The crashed process's handle, put away last (closing it rewrites
     * headers of files the second one has used). */
    dsq_jnl_close(j);
}

Test(journal, a_large_record_is_journaled_by_place)
{
    dsq_jnl *j = open_j();
    cr_assert_eq(dsq_jnl_inline_max(j), FILE_BYTES / 8);
    uint64_t f, e;
    char err[256];
    cr_assert_eq(dsq_jnl_append(j, "big", 7, 4096, 42, NULL, 1u << 20, &f, &e, err, sizeof err), 0, "%s", err);
    cr_assert_lt(e - f, 512u, "only the place: %llu bytes", (unsigned long long)(e - f));
    cr_assert_eq(dsq_jnl_sync(j, f, e, err, sizeof err), 0, "%s", err);
    seen s = replay_now();
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.has_rec[0], false);
    cr_assert_eq(s.len[0], 1u << 20);
    cr_assert_eq(s.seg[0], 7u);
    cr_assert_eq(s.off[0], 4096u);
    cr_assert_eq(s.lsn[0], 42u);
    /* One too large to copy, given as a record, is refused. */
    uint8_t *big = calloc(1, FILE_BYTES);
    cr_assert_eq(dsq_jnl_append(j, "big", 7, 4096, 43, big, FILE_BYTES, &f, &e, err, sizeof err), -1);
    free(big);
    dsq_jnl_close(j);
}

Test(journal, bad_names_are_refused)
{
    dsq_jnl *j = open_j();
    uint64_t f, e;
    char err[256], name[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    cr_assert_eq(dsq_jnl_append(j, "", 1, 64, 1, "12345678", 8, &f, &e, err, sizeof err), -1);
    cr_assert_eq(dsq_jnl_append(j, name, 1, 64, 1, "12345678", 8, &f, &e, err, sizeof err), -1);
    dsq_jnl_close(j);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

Test(journal, entries_a_later_file_voids_are_skipped)
{
    /* What a failed sync leaves: the journal went on in a new file whose
     * header voids the old one from the first entry not synced. Written
     * here by hand, in the documented format (docs/storage.md). */
    dsq_jnl *j = open_j();
    uint64_t first[4], end;
    for (int i = 0; i < 4; i++)
        append(j, "v", (uint64_t)i + 1, 96, &first[i], &end);
    char err[256];
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    char path[160], other[160];
    int fd = live_file(path, sizeof path);
    close(fd);
    snprintf(other, sizeof other, "%s/%s", jdir, strcmp(path + strlen(path) - 6, "00.jnl") == 0 ? "01.jnl" : "00.jnl");
    uint8_t h[64] = {0};
    memcpy(h, "DSQJNL01", 8);
    put32(h + 8, 1);
    put32(h + 12, 1);                         /* live */
    put32(h + 16, (uint32_t)(first[0] >> 32) + 1); /* the next seq */
    put64(h + 24, first[2]);                  /* void from the third entry */
    put64(h + 40, FILE_BYTES);
    put32(h + 60, (uint32_t)crc32(0L, h, 60));
    int ofd = open(other, O_RDWR);
    cr_assert_geq(ofd, 0);
    cr_assert_eq(pwrite(ofd, h, 64, 0), 64);
    close(ofd);
    seen s = replay_now();
    cr_assert_eq(s.n, 2, "the void entries are skipped: %ld", s.n);
    cr_assert_eq(s.lsn[1], 2u);
    dsq_jnl_close(j);
}

static dsq_jnl_stats stats(dsq_jnl *j)
{
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    return st;
}

/* Live files, after waiting for the flush thread to bring them down to
 * `want` (the test fails after WAIT_MS). */
static uint32_t live_after(dsq_jnl *j, uint32_t want)
{
    WAIT_UNTIL(stats(j).live <= want, WAIT_MS, "live files: %u, want %u", stats(j).live, want);
    return stats(j).live;
}

/* Append a held entry of database "a" (64 bytes, LSN lsn); its position. */
static uint64_t append_held(dsq_jnl *j, uint64_t lsn, uint64_t *end)
{
    uint8_t rec[64];
    char err[256];
    uint64_t first;
    record(rec, sizeof rec, lsn);
    cr_assert_eq(dsq_jnl_append_held(j, "a", 1, 64, lsn, rec, sizeof rec, &first, end, err, sizeof err), 0, "%s",
                 err);
    return first;
}

Test(journal, a_held_entry_keeps_its_file_live_until_released)
{
    dsq_jnl *j = open_j();
    char err[256];
    uint64_t end, held = append_held(j, 1, &end);
    for (uint64_t lsn = 2; lsn < 20; lsn++) /* into the next file */
        append(j, "b", lsn, 4000, NULL, &end);
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    cr_assert_eq(st.held, 1u);
    cr_assert_geq(st.live, 2u);
    /* The flush thread would retire the first file now; the held entry's
     * record is not in its log yet, so the file stays and replays. That it
     * does not retire it shows in no state to wait for: it looks again
     * every 100 ms; give it three looks. */
    let_time_pass(300);
    dsq_jnl_stats_get(j, &st);
    cr_assert_eq(st.flushes, 0u, "no flush while an entry is held");
    seen s = replay_now();
    cr_assert_eq(s.lsn[0], 1u);
    cr_assert_str_eq(s.name[0], "a");
    /* Released (the log has it): the file goes. */
    dsq_jnl_release(j, &held, 1);
    cr_assert_eq(live_after(j, 1), 1u);
    dsq_jnl_stats_get(j, &st);
    cr_assert_eq(st.held, 0u);
    s = replay_now();
    cr_assert(s.n == 0 || s.lsn[0] != 1u, "the retired file replays nothing");
    dsq_jnl_close(j);
}

Test(journal, a_close_with_an_entry_still_held_leaves_its_file_to_replay)
{
    dsq_jnl *j = open_j();
    char err[256];
    uint64_t end;
    append_held(j, 5, &end);
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    dsq_jnl_close(j);
    seen s = replay_now();
    cr_assert_eq(s.n, 1, "the next start writes the record to its log");
    cr_assert_eq(s.lsn[0], 5u);
    cr_assert(s.rec_ok[0]);
}

Test(journal, appended_entries_reach_the_file_with_the_sync)
{
    dsq_jnl *j = open_j();
    uint64_t first, end;
    append(j, "a", 1, 64, &first, NULL);
    append(j, "a", 2, 64, NULL, &end);
    seen s = replay_now();
    cr_assert_eq(s.n, 0, "copied, not yet written: %ld", s.n);
    char err[256];
    cr_assert_eq(dsq_jnl_sync(j, first, end, err, sizeof err), 0, "%s", err);
    s = replay_now();
    cr_assert_eq(s.n, 2);
    /* Appends during and after go on into the other buffer. */
    append(j, "a", 3, 64, NULL, &end);
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    s = replay_now();
    cr_assert_eq(s.n, 3);
    cr_assert_eq(s.lsn[2], 3u);
    cr_assert(s.rec_ok[2]);
    dsq_jnl_close(j);
}

typedef struct fake_holder { /* (called on the journal's thread) */
    dsq_jnl *j;
    _Atomic uint64_t pos; /* its held entry, 0 once released */
    atomic_bool can;      /* whether its "write" succeeds */
    atomic_int asked;
} fake_holder;

static void no_push(void *ud) { (void)ud; }

static bool fake_write(void *ud)
{
    fake_holder *f = ud;
    f->asked++;
    uint64_t pos = f->pos;
    if (f->can && pos != 0) {
        dsq_jnl_release(f->j, &pos, 1);
        f->pos = 0;
        return true;
    }
    return false;
}

Test(journal, the_flush_has_the_holders_write_before_it_retires_a_file)
{
    dsq_jnl *j = open_j();
    fake_holder f = {.j = j};
    dsq_jnl_holder h = {.write = fake_write, .push = no_push, .ud = &f, .name = "a"};
    dsq_jnl_holder_add(j, &h);
    char err[256];
    uint64_t end;
    f.pos = append_held(j, 1, &end);
    for (uint64_t lsn = 2; lsn < 20; lsn++) /* into the next file */
        append(j, "b", lsn, 4000, NULL, &end);
    cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    /* A holder that cannot write keeps the file, and is asked again (every
     * 100 ms): once asked twice, the flush thread found the file held. */
    WAIT_UNTIL(f.asked >= 2, WAIT_MS, "asked %d times", f.asked);
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    cr_assert_eq(st.flushes, 0u);
    cr_assert_geq(f.asked, 2, "asked %d times", f.asked);
    /* Once it can, the flush goes on by itself. */
    f.can = true;
    cr_assert_eq(live_after(j, 1), 1u);
    cr_assert_eq(f.pos, 0u);
    dsq_jnl_holder_remove(j, &h);
    int asked = f.asked;
    dsq_jnl_write_held(j, NULL, false);
    cr_assert_eq(f.asked, asked, "removed: not asked any more");
    dsq_jnl_close(j);
}

/* Replay into a count of database "z"'s entries, which must come in LSN
 * order from 1 with their records intact. */
typedef struct run {
    long n;
    bool ok;
} run;

static int visit_run(void *ud, const dsq_jnl_entry *en, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    run *r = ud;
    uint8_t want[256];
    r->n++;
    record(want, sizeof want, en->lsn);
    if (strcmp(en->name, "z") != 0 || en->lsn != (uint64_t)r->n || en->rec == NULL || en->len != sizeof want ||
        memcmp(en->rec, want, sizeof want) != 0)
        r->ok = false;
    return 0;
}

/* A file's zeroing chunk (FILE_BYTES / 16); the journal's thread zeroes up
 * to 4 of them ahead of the appends. */
#define CHUNK (FILE_BYTES / 16)

/* Whether the zeroing keeps up with the appends (bytes since a start):
 * some zeroed, and within 4 chunks of the appended bytes. */
static bool kept_up(uint64_t zeroed, uint64_t appended) { return zeroed > 0 && zeroed + 4 * CHUNK >= appended; }

/* Append `count` entries of "z" (256-byte records; 320 bytes of journal
 * each) in bursts of ten, each burst synced. `zeroing`: the appends go
 * where the journal's thread should zero ahead of them (a file's first
 * pass); after each burst, wait for it to keep up. It never zeroes the
 * start of a file, before it first runs there, so the bytes zeroed trail
 * the bytes appended; once 2 chunks were appended it has zeroed some, and
 * from then on it keeps the zeroed bytes within 4 chunks of the appended
 * ones (it catches up each time it runs). Else the thread should zero
 * nothing, which shows in no state to wait for: let 1 ms pass after each
 * burst, a turn for it to zero what it should not. */
static void append_z(dsq_jnl *j, uint64_t *lsn, int count, bool zeroing)
{
    char err[256];
    uint64_t end = 0, zeroed0 = stats(j).zeroed;
    for (int i = 0; i < count; i++) {
        append(j, "z", ++*lsn, 256, NULL, &end);
        if (i % 10 != 9 && i != count - 1)
            continue;
        cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
        uint64_t appended = (uint64_t)(i + 1) * 320;
        if (!zeroing) {
            let_time_pass(1);
            continue;
        }
        WAIT_UNTIL(appended < 2 * CHUNK || kept_up(stats(j).zeroed - zeroed0, appended), WAIT_MS,
                   "zeroed %llu bytes after %llu appended", (unsigned long long)(stats(j).zeroed - zeroed0),
                   (unsigned long long)appended);
    }
}

/* The bytes zeroed, once they are at least `at_least` (the test fails
 * after WAIT_MS). A chunk may still be being written then: no state shows
 * when the journal's thread is done with it, so give it 50 ms to finish
 * (only the end of the file is left to zero after the appends: the counts
 * the tests compare leave room for that chunk). */
static uint64_t zeroed_after(dsq_jnl *j, uint64_t at_least)
{
    WAIT_UNTIL(stats(j).zeroed >= at_least, WAIT_MS, "zeroed %llu bytes, want %llu",
               (unsigned long long)stats(j).zeroed, (unsigned long long)at_least);
    let_time_pass(50);
    return stats(j).zeroed;
}

/* The bytes zeroed, once the journal's thread is done with the current
 * file: a barrier moves to a new file, which the thread does not zero
 * before it holds a chunk, and waits for the thread's flush, which comes
 * after any chunk it was zeroing. */
static uint64_t zeroed_final(dsq_jnl *j)
{
    char err[256];
    cr_assert_eq(dsq_jnl_barrier(j, err, sizeof err), 0, "%s", err);
    return stats(j).zeroed;
}

Test(journal, zeros_go_ahead_of_the_appends_never_over_them)
{
    dsq_jnl *j = open_j();
    uint64_t lsn = 0;
    /* Most of one file (200 x 320 bytes of 64 KiB), written while the
     * flush thread zeroes ahead in 4 KiB chunks: bursts of appends catch
     * up with it and wait for its chunk. */
    append_z(j, &lsn, 200, true);
    cr_assert_geq(zeroed_after(j, 16 * 1024), 16 * 1024u);
    run r = {.ok = true};
    char err[256];
    long n = dsq_jnl_replay(jdir, visit_run, &r, err, sizeof err);
    cr_assert_eq(n, 200, "%s", err);
    cr_assert_eq(r.n, 200);
    cr_assert(r.ok, "every entry intact after the zeros");
    dsq_jnl_close(j);
}

Test(journal, appends_wait_for_a_chunk_being_zeroed)
{
    dsq_jnl *j = open_j();
    uint64_t lsn = 0;
    /* The journal's thread takes 150 ms between choosing a chunk and
     * zeroing it: a burst of appends gets there first and must wait, or
     * its entries would be zeroed over. (30 ms was not always enough on a
     * loaded machine: 150 synced appends could take longer, and none
     * waited.) */
    atomic_store(&dsq_jnl_zero_delay_us, 150000);
    char err[256];
    uint64_t end = 0;
    for (int i = 0; i < 150; i++) {
        append(j, "z", ++lsn, 256, NULL, &end);
        cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
    }
    atomic_store(&dsq_jnl_zero_delay_us, 0);
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    cr_assert_gt(st.zero_waits, 0u);
    zeroed_after(j, 0);
    run r = {.ok = true};
    long n = dsq_jnl_replay(jdir, visit_run, &r, err, sizeof err);
    cr_assert_eq(n, 150, "%s", err);
    cr_assert(r.ok, "every entry intact after the zeros");
    dsq_jnl_close(j);
}

Test(journal, a_journal_used_lightly_is_not_zeroed)
{
    dsq_jnl *j = open_j();
    uint64_t lsn = 0;
    append_z(j, &lsn, 10, false); /* 3,200 bytes: less than a chunk */
    /* That nothing is zeroed shows in no state to wait for: the journal's
     * thread, woken by the appends, would have started in 100 ms. */
    let_time_pass(100);
    dsq_jnl_stats st;
    dsq_jnl_stats_get(j, &st);
    cr_assert_eq(st.zeroed, 0u);
    dsq_jnl_close(j);
}

Test(journal, a_file_written_once_is_not_zeroed_again)
{
    dsq_jnl *j = open_j();
    uint64_t lsn = 0;
    append_z(j, &lsn, 200, true); /* the first file */
    uint64_t first = zeroed_after(j, 32 * 1024);
    cr_assert_geq(first, 32 * 1024u);
    append_z(j, &lsn, 200, true); /* on into the second, new: zeroed too */
    cr_assert_eq(live_after(j, 1), 1u, "the first file is retired, free for the third pass");
    uint64_t second = zeroed_after(j, first + 32 * 1024);
    cr_assert_geq(second, first + 32 * 1024);
    append_z(j, &lsn, 200, false); /* the third pass: back into the first file */
    cr_assert_eq(live_after(j, 1), 1u);
    uint64_t third = zeroed_final(j);
    cr_assert_leq(third - second, 8 * 1024u, "only the end the first pass left: %llu bytes",
                  (unsigned long long)(third - second));
    dsq_jnl_close(j);
}

typedef struct busy_log { /* a holder that always has something to write */
    atomic_int asked, pushed;
} busy_log;

static bool busy_write(void *ud)
{
    busy_log *b = ud;
    b->asked++;
    return true;
}

static void busy_push(void *ud)
{
    busy_log *b = ud;
    b->pushed++;
}

/* A holder whose push waits for the disk (here: for the test to let it
 * go). Meanwhile another database can register and a reader can have a
 * log write (they do not wait behind the round of pushes), but a removal
 * waits for the round: the push never runs for a holder that is gone. */
typedef struct slow_log {
    sem_t go;
    atomic_bool pushing, pushed;
} slow_log;

static bool slow_write(void *ud)
{
    (void)ud;
    return true;
}

static void slow_push(void *ud)
{
    slow_log *l = ud;
    l->pushing = true;
    sem_wait(&l->go);
    l->pushed = true;
}

typedef struct round_arg {
    dsq_jnl *j;
    dsq_jnl_holder *h;
    atomic_bool done;
} round_arg;

static void *push_round(void *arg)
{
    round_arg *r = arg;
    dsq_jnl_write_held(r->j, "slow", true);
    r->done = true;
    return NULL;
}

static void *remove_holder(void *arg)
{
    round_arg *r = arg;
    dsq_jnl_holder_remove(r->j, r->h);
    r->done = true;
    return NULL;
}

Test(journal, a_round_of_pushes_holds_up_removals_only, .timeout = 20)
{
    dsq_jnl *j = open_j();
    slow_log l = {0};
    sem_init(&l.go, 0, 0);
    dsq_jnl_holder h = {.write = slow_write, .push = slow_push, .ud = &l, .name = "slow"};
    dsq_jnl_holder_add(j, &h);
    round_arg round = {.j = j}, rm = {.j = j, .h = &h};
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, push_round, &round), 0);
    WAIT_UNTIL(l.pushing, WAIT_MS, "the push did not start");
    cr_assert(l.pushing, "the push is under way");
    /* These return while it waits (else the test hangs and times out). */
    fake_holder f = {.j = j};
    dsq_jnl_holder other = {.write = fake_write, .push = no_push, .ud = &f, .name = "other"};
    dsq_jnl_holder_add(j, &other);
    cr_assert_eq(dsq_jnl_write_held(j, "other", false), 0u);
    cr_assert_geq(f.asked, 1);
    cr_assert_eq(dsq_jnl_write_held(j, "slow", false), 1u, "a reader has the slow log write");
    cr_assert_eq(pthread_create(&t2, NULL, remove_holder, &rm), 0);
    /* That the removal waits shows in no state to wait for: give it 100 ms
     * to return, which it must not. */
    let_time_pass(100);
    cr_assert(!rm.done, "the removal waits for the round");
    sem_post(&l.go);
    pthread_join(t2, NULL);
    pthread_join(t1, NULL);
    cr_assert(l.pushed, "the push ended before its holder was removed");
    cr_assert(round.done);
    dsq_jnl_holder_remove(j, &other);
    sem_destroy(&l.go);
    dsq_jnl_close(j);
}

/* 1 or 16 logs writing: the journal's thread runs a syncfs after each
 * MiB for one, after 3 MiB for sixteen (a syncfs costs for each file).
 * Counted are the syncfs the MiB bring, not the one a second after the
 * last: on a slow machine (a sanitizer build, others' load) a MiB of
 * appends can take longer than that, so that timer is set out of reach.
 * The syncfs itself can take long there too: the count is read once it
 * reaches `want` (the test fails after WAIT_MS) and 50 ms more, to see
 * none too many. */
static uint64_t bulk_syncs_after(int logs, int mib, uint64_t want)
{
    char err[256];
    atomic_store(&dsq_jnl_flush_every_ms, 600000);
    dsq_jnl *j = dsq_jnl_open(jdir, 16u << 20, err, sizeof err);
    cr_assert_not_null(j, "%s", err);
    busy_log b[16] = {0};
    dsq_jnl_holder h[16];
    char names[16][8];
    for (int i = 0; i < logs; i++) {
        snprintf(names[i], sizeof names[i], "l%d", i);
        h[i] = (dsq_jnl_holder){.write = busy_write, .push = busy_push, .ud = &b[i], .name = names[i]};
        dsq_jnl_holder_add(j, &h[i]);
    }
    uint64_t lsn = 0, end = 0;
    int per_mib = (1 << 20) / 4000 + 1;
    dsq_jnl_stats st;
    for (int m = 1; m <= mib; m++) {
        for (int i = 0; i < per_mib; i++)
            append(j, "l0", ++lsn, 4000, NULL, &end);
        cr_assert_eq(dsq_jnl_sync(j, 0, end, err, sizeof err), 0, "%s", err);
        WAIT_UNTIL(b[0].pushed >= m, WAIT_MS, "pushed %d times after %d MiB", b[0].pushed, m);
        cr_assert_geq(b[0].asked, m, "asked after each MiB");
        cr_assert_eq(b[0].pushed, b[0].asked, "and told to push");
    }
    WAIT_UNTIL(stats(j).bulk_syncs >= want, WAIT_MS, "%llu bulk syncs, want %llu",
               (unsigned long long)stats(j).bulk_syncs, (unsigned long long)want);
    /* None too many: a syncfs that should not come shows in no state to
     * wait for; give it 50 ms. */
    let_time_pass(50);
    dsq_jnl_stats_get(j, &st);
    for (int i = 0; i < logs; i++)
        dsq_jnl_holder_remove(j, &h[i]);
    dsq_jnl_close(j);
    atomic_store(&dsq_jnl_flush_every_ms, 0);
    return st.bulk_syncs;
}

Test(journal, many_logs_writing_space_the_bulk_syncs_out)
{
    cr_assert_eq(bulk_syncs_after(1, 2, 2), 2u, "one log: a syncfs each MiB");
    cr_assert_eq(bulk_syncs_after(16, 2, 0), 0u, "sixteen: not yet after 2 MiB");
    cr_assert_eq(bulk_syncs_after(16, 3, 1), 1u, "sixteen: one after 3 MiB");
}
