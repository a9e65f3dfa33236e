/* Unit tests: engine/storage/fdcache — the bound, least recently used out
 * first, descriptors in use never closed, forgotten files opened again. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/storage/fdcache.h"

static char dir[64];

static void path_of(int i, char *out, size_t n) { snprintf(out, n, "%s/f%d", dir, i); }

static void write_file(int i, const char *text)
{
    char p[128];
    path_of(i, p, sizeof p);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static char first_byte(int fd)
{
    char c = 0;
    cr_assert_eq(pread(fd, &c, 1, 0), 1);
    return c;
}

static bool is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/dsq-fdc-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    for (int i = 0; i < 6; i++)
        write_file(i, (char[]){(char)('a' + i), 0});
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(fdcache, .init = setup, .fini = teardown);

Test(fdcache, keeps_at_most_its_bound_least_recently_used_out_first)
{
    dsq_fdc *c = dsq_fdc_new(3);
    char p[128];
    int fds[6];
    for (int i = 0; i < 3; i++) {
        path_of(i, p, sizeof p);
        fds[i] = dsq_fdc_get(c, (uint64_t)i, p);
        cr_assert_geq(fds[i], 0);
        cr_assert_eq(first_byte(fds[i]), 'a' + i);
        dsq_fdc_put(c, fds[i]);
    }
    cr_assert_eq(dsq_fdc_open_count(c), 3);
    /* File 0 used again: file 1 is now the least recently used. */
    path_of(0, p, sizeof p);
    cr_assert_eq(dsq_fdc_get(c, 0, p), fds[0]);
    dsq_fdc_put(c, fds[0]);
    path_of(3, p, sizeof p);
    fds[3] = dsq_fdc_get(c, 3, p);
    cr_assert_eq(first_byte(fds[3]), 'd');
    dsq_fdc_put(c, fds[3]);
    cr_assert_eq(dsq_fdc_open_count(c), 3);
    cr_assert(is_open(fds[0]) && is_open(fds[2]) && is_open(fds[3]));
    cr_assert(!is_open(fds[1]) || fds[1] == fds[3], "file 1's descriptor was closed");
    dsq_fdc_free(c);
}

Test(fdcache, never_closes_a_descriptor_in_use)
{
    dsq_fdc *c = dsq_fdc_new(2);
    char p[128];
    int fds[4];
    for (int i = 0; i < 4; i++) { /* all in use at once: past the bound */
        path_of(i, p, sizeof p);
        fds[i] = dsq_fdc_get(c, (uint64_t)i, p);
        cr_assert_geq(fds[i], 0);
    }
    cr_assert_eq(dsq_fdc_open_count(c), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(first_byte(fds[i]), 'a' + i);
    for (int i = 0; i < 4; i++)
        dsq_fdc_put(c, fds[i]);
    cr_assert_eq(dsq_fdc_open_count(c), 2, "back to the bound once given back");
    dsq_fdc_free(c);
}

Test(fdcache, forget_reopens_a_replaced_file)
{
    dsq_fdc *c = dsq_fdc_new(4);
    char p[128];
    path_of(5, p, sizeof p);
    int fd = dsq_fdc_get(c, 5, p);
    cr_assert_eq(first_byte(fd), 'f');
    /* Replaced (as a merged checkpoint's rename does) while in use. */
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s/new", dir);
    FILE *f = fopen(tmp, "w");
    fputs("z", f);
    fclose(f);
    cr_assert_eq(rename(tmp, p), 0);
    dsq_fdc_forget(c, 5);
    cr_assert(is_open(fd), "in use: closed only when given back");
    cr_assert_eq(first_byte(fd), 'f');
    int fd2 = dsq_fdc_get(c, 5, p);
    cr_assert_eq(first_byte(fd2), 'z');
    dsq_fdc_put(c, fd);
    dsq_fdc_put(c, fd2);
    cr_assert_eq(dsq_fdc_open_count(c), 1);
    dsq_fdc_free(c);
}

Test(fdcache, a_missing_file_is_an_error_with_errno)
{
    dsq_fdc *c = dsq_fdc_new(2);
    char p[128];
    snprintf(p, sizeof p, "%s/none", dir);
    errno = 0;
    cr_assert_eq(dsq_fdc_get(c, 9, p), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(dsq_fdc_open_count(c), 0);
    dsq_fdc_free(c);
}
