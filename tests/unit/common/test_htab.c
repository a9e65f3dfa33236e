/* Unit tests: common/htab (an intrusive hash table by name). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/htab.h"

typedef struct item {
    char name[32];
    int id;
    dsq_hnode link;
} item;

static item *find(const dsq_htab *t, const char *name) { return dsq_container_of(dsq_htab_find(t, name), item, link); }

Test(htab, empty_table_finds_nothing)
{
    dsq_htab t = {0};
    cr_assert_null(dsq_htab_find(&t, "a"));
    dsq_htab_iter it = {0};
    cr_assert_null(dsq_htab_next(&t, &it));
    dsq_htab_free(&t);
}

/* Enough elements for several doublings: every one is found by name
 * (not by a name that is only a prefix of it), the walk meets each once,
 * and one taken out is gone while the rest stay. */
Test(htab, add_find_grow_walk_remove)
{
    enum { N = 1000 };
    item *v = calloc(N, sizeof *v);
    cr_assert_not_null(v);
    dsq_htab t = {0};
    for (int i = 0; i < N; i++) {
        snprintf(v[i].name, sizeof v[i].name, "db%d", i);
        v[i].id = i;
        cr_assert_eq(dsq_htab_add(&t, &v[i].link, v[i].name), 0);
    }
    cr_assert_eq(t.n, (size_t)N);
    cr_assert_geq(t.nb, (size_t)N, "the buckets doubled with the elements");
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "db%d", i);
        item *x = find(&t, name);
        cr_assert_not_null(x, "%s", name);
        cr_assert_eq(x->id, i);
    }
    cr_assert_null(find(&t, "db"));
    cr_assert_null(find(&t, "db10000"));

    char *seen = calloc(N, 1);
    dsq_htab_iter it = {0};
    size_t n = 0;
    for (dsq_hnode *h; (h = dsq_htab_next(&t, &it)) != NULL; n++) {
        item *x = dsq_container_of(h, item, link);
        cr_assert_eq(seen[x->id], 0, "%s met twice", x->name);
        seen[x->id] = 1;
    }
    cr_assert_eq(n, (size_t)N);
    free(seen);

    dsq_htab_remove(&t, &v[7].link);
    cr_assert_eq(t.n, (size_t)N - 1);
    cr_assert_null(find(&t, "db7"));
    cr_assert_not_null(find(&t, "db70"));
    cr_assert_not_null(find(&t, "db8"));
    dsq_htab_free(&t);
    cr_assert_eq(t.nb, 0);
    free(v);
}

/* A walk may take out and free the element it was handed. */
Test(htab, walk_frees_as_it_goes)
{
    dsq_htab t = {0};
    for (int i = 0; i < 300; i++) {
        item *x = calloc(1, sizeof *x);
        cr_assert_not_null(x);
        snprintf(x->name, sizeof x->name, "n%d", i);
        x->id = i;
        cr_assert_eq(dsq_htab_add(&t, &x->link, x->name), 0);
    }
    dsq_htab_iter it = {0};
    size_t n = 0;
    for (dsq_hnode *h; (h = dsq_htab_next(&t, &it)) != NULL; n++) {
        dsq_htab_remove(&t, h);
        free(dsq_container_of(h, item, link));
    }
    cr_assert_eq(n, 300);
    cr_assert_eq(t.n, 0);
    cr_assert_null(find(&t, "n1"));
    dsq_htab_free(&t);
}

/* A reserved table keeps its buckets until it holds more than that. */
Test(htab, reserve)
{
    dsq_htab t = {0};
    cr_assert_eq(dsq_htab_reserve(&t, 1000), 0);
    cr_assert_eq(t.nb, 1024);
    item v[3] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(dsq_htab_add(&t, &v[i].link, v[i].name), 0);
    cr_assert_eq(t.nb, 1024);
    cr_assert_eq(dsq_htab_reserve(&t, 10), 0, "never shrinks");
    cr_assert_eq(t.nb, 1024);
    cr_assert_eq(find(&t, "b"), &v[1]);
    dsq_htab_free(&t);
}
