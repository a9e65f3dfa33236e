/* Unit tests: cluster/epochs — accepted epochs and log histories, kept
 * on disk across a restart, a torn last entry dropped. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/epochs.h"

static char dir[64];
static dsq_nodeset *ids;
static uv_loop_t loop;

static void setup(void)
{
    strcpy(dir, "/tmp/dsq-epochs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ids = dsq_nodeset_new();
    const char *spec[] = {"n1", "n2", "n3"};
    for (uint32_t i = 0, ix; i < 3; i++) {
        cr_assert_eq(dsq_nodeset_intern(ids, spec[i], &ix), 0);
        cr_assert_eq(ix, i);
    }
    uv_loop_init(&loop);
}

static void teardown(void)
{
    uv_loop_close(&loop);
    dsq_nodeset_free(ids);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(epochs, .init = setup, .fini = teardown);

static void on_set(void *ud, int rc)
{
    cr_assert_eq(rc, 0);
    (*(int *)ud)++;
}

static void set(dsq_epochs *e, const char *db, uint64_t epoch, uint32_t primary, uint64_t start)
{
    int n = 0;
    cr_assert_eq(dsq_epochs_set(e, &loop, db, epoch, primary, start, on_set, &n), 0);
    /* (in memory only once durable) */
    dsq_epoch_state s;
    dsq_epochs_get(e, db, &s);
    while (n == 0)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(dsq_epochs_pending(e), 0);
}

static dsq_epochs *open_it(void)
{
    dsq_epochs *e;
    char err[256];
    cr_assert_eq(dsq_epochs_open(dir, ids, &e, err, sizeof err), 0, "%s", err);
    return e;
}

Test(epochs, defaults_then_what_was_set_survives_a_restart)
{
    dsq_epochs *e = open_it();
    dsq_epoch_state s;
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.accepted, 1);
    cr_assert(!s.primary_known);
    cr_assert_eq(s.nhist, 0);
    cr_assert_eq(dsq_epoch_of(&s, 100), 1);
    set(e, "a", 2, 2, 0);   /* accepted, no record yet */
    set(e, "a", 2, 2, 11);  /* its records from 11 on */
    set(e, "b", 5, 1, 0);
    set(e, "a", 3, 0, 20);
    dsq_epochs_close(e);

    e = open_it();
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.accepted, 3);
    cr_assert_eq(s.primary, 0);
    cr_assert_eq(s.nhist, 2);
    cr_assert_eq(dsq_epoch_of(&s, 10), 1);
    cr_assert_eq(dsq_epoch_of(&s, 11), 2);
    cr_assert_eq(dsq_epoch_of(&s, 19), 2);
    cr_assert_eq(dsq_epoch_of(&s, 25), 3);
    cr_assert_eq(dsq_epoch_end(&s, 1, 30), 10);
    cr_assert_eq(dsq_epoch_end(&s, 2, 30), 19);
    cr_assert_eq(dsq_epoch_end(&s, 3, 30), 30);
    dsq_epochs_get(e, "b", &s);
    cr_assert_eq(s.accepted, 5);
    cr_assert_eq(s.primary, 1);
    /* A lower epoch accepted later does not lower what was accepted. */
    set(e, "b", 4, 2, 0);
    dsq_epochs_get(e, "b", &s);
    cr_assert_eq(s.accepted, 5);
    cr_assert_eq(s.primary, 1);
    /* A log cut back and taken over by a newer epoch from an earlier
     * LSN: the history from there is replaced. */
    set(e, "a", 4, 1, 15);
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.nhist, 2);
    cr_assert_eq(s.hist[1].epoch, 4);
    cr_assert_eq(s.hist[1].start, 15);
    cr_assert_eq(dsq_epoch_end(&s, 2, 30), 14);
    dsq_epochs_close(e);
}

Test(epochs, a_torn_last_entry_is_dropped)
{
    dsq_epochs *e = open_it();
    set(e, "a", 2, 1, 5);
    set(e, "a", 3, 2, 9);
    dsq_epochs_close(e);
    char path[128];
    snprintf(path, sizeof path, "%s/cluster/epochs", dir);
    int fd = open(path, O_RDWR);
    off_t size = lseek(fd, 0, SEEK_END);
    cr_assert_eq(ftruncate(fd, size - 3), 0); /* the second entry, torn */
    close(fd);
    e = open_it();
    dsq_epoch_state s;
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.accepted, 2);
    cr_assert_eq(s.nhist, 1);
    set(e, "a", 3, 2, 9); /* appends after the good part */
    dsq_epochs_close(e);
    e = open_it();
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.accepted, 3);
    dsq_epochs_close(e);
}

/* A node numbered otherwise after a restart (with etcd the numbers follow
 * the order nodes are met in), or not met yet: the entries keep their
 * primary by id, and an id not known yet gets the next number. */
Test(epochs, entries_name_their_primary_by_id_across_numberings)
{
    dsq_epochs *e = open_it();
    set(e, "a", 4, 2, 7); /* n3 */
    set(e, "b", 2, 1, 0); /* n2 */
    dsq_epochs_close(e);
    dsq_nodeset_free(ids);
    ids = dsq_nodeset_new();
    uint32_t ix;
    cr_assert_eq(dsq_nodeset_intern(ids, "n1", &ix), 0);
    e = open_it();
    cr_assert_eq(dsq_nodeset_count(ids), 3, "n3 and n2 numbered as met");
    dsq_epoch_state st;
    dsq_epochs_get(e, "a", &st);
    cr_assert_eq(st.accepted, 4);
    cr_assert(st.primary_known);
    cr_assert_str_eq(dsq_nodeset_id(ids, st.primary), "n3");
    cr_assert_eq(st.nhist, 1);
    cr_assert_eq(st.hist[0].start, 7);
    dsq_epochs_get(e, "b", &st);
    cr_assert_eq(st.accepted, 2);
    cr_assert_str_eq(dsq_nodeset_id(ids, st.primary), "n2");
    /* Written under the new numbers, read back by id. */
    set(e, "b", 3, 0, 0); /* n1 */
    dsq_epochs_close(e);
    e = open_it();
    dsq_epochs_get(e, "b", &st);
    cr_assert_eq(st.accepted, 3);
    cr_assert_str_eq(dsq_nodeset_id(ids, st.primary), "n1");
    dsq_epochs_close(e);
}

/* DATA_DIR/cluster/running: a run that ends without dsq_epochs_stopped
 * (killed) is seen by the next one; once seen, it stays seen over clean
 * runs until one resumed every copy that needed it. */
Test(epochs, a_run_that_did_not_stop_cleanly_is_seen_by_the_next)
{
    dsq_epochs *e = open_it();
    cr_assert(!dsq_epochs_unclean(e), "a new data directory");
    dsq_epochs_stopped(e, false);
    dsq_epochs_close(e);

    e = open_it();
    cr_assert(!dsq_epochs_unclean(e), "after a clean stop");
    dsq_epochs_close(e); /* killed: no dsq_epochs_stopped */

    e = open_it();
    cr_assert(dsq_epochs_unclean(e), "after a run that was killed");
    dsq_epochs_stopped(e, false);
    dsq_epochs_close(e);

    e = open_it();
    cr_assert(dsq_epochs_unclean(e), "still, after a clean run that began unclean and resumed not all");
    dsq_epochs_stopped(e, true);
    dsq_epochs_close(e);

    e = open_it();
    cr_assert(!dsq_epochs_unclean(e), "after a clean run that resumed all");
    dsq_epochs_close(e);
}

Test(epochs, a_copy_set_survives_a_restart_and_an_older_one_never_replaces_it)
{
    dsq_epochs *e = open_it();
    dsq_epoch_state s;
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.set.epoch, 0, "no copy set recorded: the placement's");
    int n = 0;
    dsq_copyset cs = {.epoch = 4, .nodes = {0, 2, 1}, .n = 3};
    cr_assert_eq(dsq_epochs_set_copies(e, &loop, "a", 4, 0, 0, &cs, on_set, &n), 0);
    dsq_copyset old = {.epoch = 3, .nodes = {0, 1}, .n = 2};
    cr_assert_eq(dsq_epochs_set_copies(e, &loop, "a", 4, 0, 0, &old, on_set, &n), 0);
    while (n < 2)
        uv_run(&loop, UV_RUN_ONCE);
    dsq_copyset joint = {.epoch = 6, .nodes = {0, 2}, .n = 2, .prev = {0, 1}, .nprev = 2};
    cr_assert_eq(dsq_epochs_set_copies(e, &loop, "b", 6, 0, 0, &joint, on_set, &n), 0);
    while (n < 3)
        uv_run(&loop, UV_RUN_ONCE);
    set(e, "a", 5, 2, 30); /* a later entry without one keeps it */
    dsq_epochs_close(e);
    e = open_it();
    dsq_epochs_get(e, "a", &s);
    cr_assert_eq(s.accepted, 5);
    cr_assert_eq(s.set.epoch, 4);
    cr_assert_eq(s.set.n, 3);
    cr_assert_eq(s.set.nodes[0], 0);
    cr_assert_eq(s.set.nodes[1], 2);
    cr_assert_eq(s.set.nodes[2], 1);
    cr_assert_eq(s.set.nprev, 0);
    dsq_epochs_get(e, "b", &s);
    cr_assert_eq(s.set.epoch, 6);
    cr_assert_eq(s.set.n, 2);
    cr_assert_eq(s.set.nprev, 2);
    cr_assert_eq(s.set.prev[1], 1);
    /* The same epoch's set established (no prev) is newer; joint again is not. */
    dsq_copyset done = {.epoch = 6, .nodes = {0, 2}, .n = 2};
    cr_assert(dsq_copyset_newer(&done, &s.set));
    cr_assert(!dsq_copyset_newer(&s.set, &done));
    dsq_epochs_close(e);
}
