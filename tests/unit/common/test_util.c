/* Unit tests: common/util and common/buf. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"

Test(util, durations)
{
    uint64_t v;
    cr_assert_eq(dsq_parse_duration_ms("10", &v), 0);
    cr_assert_eq(v, 10000);
    cr_assert_eq(dsq_parse_duration_ms("250ms", &v), 0);
    cr_assert_eq(v, 250);
    cr_assert_eq(dsq_parse_duration_ms("3s", &v), 0);
    cr_assert_eq(v, 3000);
    cr_assert_eq(dsq_parse_duration_ms("5m", &v), 0);
    cr_assert_eq(v, 300000);
    cr_assert_eq(dsq_parse_duration_ms("2h", &v), 0);
    cr_assert_eq(v, 7200000);
    cr_assert_eq(dsq_parse_duration_ms("1d", &v), 0);
    cr_assert_eq(v, 86400000);
    const char *bad[] = {"", "s", "-1s", "1.5s", "10 s", "10sec", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(dsq_parse_duration_ms(bad[i], &v), -1, "accepted '%s'", bad[i]);
    cr_assert_eq(dsq_parse_duration_ms("18446744073709551615d", &v), -1, "overflow accepted");
}

Test(util, sizes)
{
    uint64_t v;
    cr_assert_eq(dsq_parse_size("4096", &v), 0);
    cr_assert_eq(v, 4096);
    cr_assert_eq(dsq_parse_size("64K", &v), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(dsq_parse_size("64kib", &v), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(dsq_parse_size("16M", &v), 0);
    cr_assert_eq(v, 16u << 20);
    cr_assert_eq(dsq_parse_size("1GiB", &v), 0);
    cr_assert_eq(v, 1u << 30);
    cr_assert_eq(dsq_parse_size("1T", &v), -1);
    cr_assert_eq(dsq_parse_size("K", &v), -1);
    cr_assert_eq(dsq_parse_size("99999999999999999G", &v), -1);
}

Test(util, bools)
{
    bool b;
    cr_assert_eq(dsq_parse_bool("yes", &b), 0);
    cr_assert(b);
    cr_assert_eq(dsq_parse_bool("Off", &b), 0);
    cr_assert_not(b);
    cr_assert_eq(dsq_parse_bool("y", &b), -1);
}

Test(util, utf8)
{
    cr_assert(dsq_utf8_valid((const uint8_t *)"", 0));
    cr_assert(dsq_utf8_valid((const uint8_t *)"plain", 5));
    cr_assert(dsq_utf8_valid((const uint8_t *)"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xc3",             /* truncated */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* invalid lead */
        "\xe2\x82",         /* truncated euro */
        "\xe2\x28\xa1",     /* bad continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(dsq_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])), "case %zu", i);
    /* The same behind runs of ASCII of every length (the 8-byte fast path
     * must hand over at any alignment), and good text around them. */
    for (size_t pre = 0; pre < 20; pre++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char buf[64];
            memset(buf, 'a', pre);
            size_t n = strlen(bad[i]);
            memcpy(buf + pre, bad[i], n);
            memset(buf + pre + n, 'b', 9);
            cr_assert_not(dsq_utf8_valid((const uint8_t *)buf, pre + n + 9), "pre %zu case %zu", pre, i);
        }
        char good[64];
        memset(good, 'a', pre);
        memcpy(good + pre, "\xc3\xa9\xf0\x9f\x98\x80", 6);
        memset(good + pre + 6, 'z', 11);
        cr_assert(dsq_utf8_valid((const uint8_t *)good, pre + 17), "pre %zu", pre);
    }
}

Test(util, db_names)
{
    cr_assert(dsq_db_name_valid("a"));
    cr_assert(dsq_db_name_valid("My_db-1.v2"));
    char long_ok[129], too_long[130];
    memset(long_ok, 'a', 128);
    long_ok[128] = '\0';
    memset(too_long, 'a', 129);
    too_long[129] = '\0';
    cr_assert(dsq_db_name_valid(long_ok));
    cr_assert_not(dsq_db_name_valid(too_long));
    cr_assert_not(dsq_db_name_valid(""));
    cr_assert_not(dsq_db_name_valid(".hidden"));
    cr_assert_not(dsq_db_name_valid("a/b"));
    cr_assert_not(dsq_db_name_valid("a b"));
    cr_assert_not(dsq_db_name_valid("caf\xc3\xa9"));
}

Test(buf, grows_and_formats)
{
    dsq_buf b = DSQ_BUF_INIT;
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(dsq_buf_printf(&b, "%d,", i), 0);
    cr_assert(strncmp(b.data, "0,1,2,", 6) == 0);
    cr_assert(strcmp(b.data + b.len - 4, "999,") == 0);
    size_t before = b.len;
    dsq_buf_consume(&b, 2);
    cr_assert_eq(b.len, before - 2);
    cr_assert(strncmp(b.data, "1,2,", 4) == 0);
    size_t n;
    char *p = dsq_buf_steal(&b, &n);
    cr_assert_eq(n, before - 2);
    cr_assert_eq(b.data, NULL);
    free(p);
    dsq_buf_free(&b);
}

Test(buf, integers_match_printf)
{
    const int64_t cases[] = {0, 1, -1, 9, 10, -10, 99, 100, 123456789, -987654321,
                             INT64_MAX, INT64_MIN, INT64_MIN + 1, (int64_t)1 << 53};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsq_buf b = DSQ_BUF_INIT;
        char want[32];
        snprintf(want, sizeof want, "x%lld", (long long)cases[i]);
        dsq_buf_puts(&b, "x");
        cr_assert_eq(dsq_buf_put_i64(&b, cases[i]), 0);
        cr_assert_str_eq(b.data, want);
        dsq_buf_free(&b);
    }
    dsq_buf b = DSQ_BUF_INIT;
    dsq_buf_put_u64(&b, UINT64_MAX);
    cr_assert_str_eq(b.data, "18446744073709551615");
    dsq_buf_free(&b);
}

Test(util, rfc3339)
{
    uint64_t us;
    cr_assert_eq(dsq_parse_rfc3339("1970-01-01T00:00:00Z", &us), 0);
    cr_assert_eq(us, 0);
    cr_assert_eq(dsq_parse_rfc3339("2026-11-26T00:53:52Z", &us), 0);
    cr_assert_eq(us, 1795654432ull * 1000000);
    cr_assert_eq(dsq_parse_rfc3339("2026-11-26T00:53:52.123Z", &us), 0);
    cr_assert_eq(us, 1795654432ull * 1000000 + 123000);
    cr_assert_eq(dsq_parse_rfc3339("2026-11-26T02:53:52.5+02:00", &us), 0);
    cr_assert_eq(us, 1795654432ull * 1000000 + 500000);
    cr_assert_eq(dsq_parse_rfc3339("2000-02-29 12:00:00-01:30", &us), 0);
    cr_assert_eq(us, (951825600ull + 5400) * 1000000);
    const char *bad[] = {"", "2026-11-26", "2026-11-26T00:53:52", "2026-13-01T00:00:00Z",
                         "1969-12-31T23:59:59Z", "2026-11-26T00:53:52.Z", "2026-11-26T00:53:52Zx",
                         "2026-11-26T00:53:52+2:00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(dsq_parse_rfc3339(bad[i], &us), -1, "%s", bad[i]);
}

Test(util, rfc3339_format)
{
    char t[DSQ_RFC3339_MS_LEN];
    dsq_format_rfc3339_ms(0, t, sizeof t);
    cr_assert_str_eq(t, "1970-01-01T00:00:00.000Z");
    dsq_format_rfc3339_ms(1795654432123ull, t, sizeof t);
    cr_assert_str_eq(t, "2026-11-26T00:53:52.123Z");
    dsq_format_rfc3339_ms(951825600007ull, t, sizeof t);
    cr_assert_str_eq(t, "2000-02-29T12:00:00.007Z");
    /* what it writes, dsq_parse_rfc3339 reads back */
    uint64_t us;
    cr_assert_eq(dsq_parse_rfc3339(t, &us), 0);
    cr_assert_eq(us, 951825600007ull * 1000);
    dsq_format_rfc3339_ms(253402300799999ull, t, sizeof t);
    cr_assert_str_eq(t, "9999-12-31T23:59:59.999Z");
    dsq_format_rfc3339_ms(UINT64_MAX, t, sizeof t);
    cr_assert_str_eq(t, "?", "past four digits of years");
    char small[8];
    dsq_format_rfc3339_ms(0, small, sizeof small);
    cr_assert_str_eq(small, "1970-01", "cut to fit, terminated");
}

/* ---- CPU quotas of cgroups (a fake /sys/fs/cgroup in a temporary directory) ---- */

static void put_file(const char *dir, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

Test(util, cgroup_cpu_quotas)
{
    char dir[] = "/tmp/dsq-test-cgroup-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    /* v2: the service's own limit is 2.5 CPUs (3), its parent's 2: 2 */
    put_file(dir, "cpu.max", "max 100000\n");
    put_file(dir, "system.slice/cpu.max", "200000 100000\n");
    put_file(dir, "system.slice/dosqld.service/cpu.max", "250000 100000\n");
    cr_assert_eq(dsq_cgroup_cpus(dir, "0::/system.slice/dosqld.service\n"), 2);
    /* no quota anywhere up the tree */
    put_file(dir, "user.slice/cpu.max", "max 100000\n");
    cr_assert_eq(dsq_cgroup_cpus(dir, "0::/user.slice\n"), 0);
    cr_assert_eq(dsq_cgroup_cpus(dir, "0::/\n"), 0);
    /* half a CPU is one */
    put_file(dir, "small/cpu.max", "50000 100000\n");
    cr_assert_eq(dsq_cgroup_cpus(dir, "0::/small\n"), 1);
    /* v1: the line naming the cpu controller; -1 is no quota */
    put_file(dir, "cpu,cpuacct/box/cpu.cfs_quota_us", "300000\n");
    put_file(dir, "cpu,cpuacct/box/cpu.cfs_period_us", "100000\n");
    put_file(dir, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put_file(dir, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    cr_assert_eq(dsq_cgroup_cpus(dir, "4:memory:/box\n3:cpu,cpuacct:/box\n0::/\n"), 3);
    cr_assert_eq(dsq_cgroup_cpus(dir, "3:cpu,cpuacct:/\n"), 0);
    /* nothing readable: no quota */
    cr_assert_eq(dsq_cgroup_cpus(dir, "0::/missing/here\n"), 0);
    cr_assert_eq(dsq_cgroup_cpus(dir, ""), 0);
    cr_assert_geq(dsq_usable_cpus(), 1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
