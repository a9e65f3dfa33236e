/* fuzz_vschema — the VSchema parser and checks (sharding/vschema.c) and
 * the vindexes it builds (sharding/vindex.c). Checks more than "no
 * crash": a VSchema accepted names only vindexes and shards it has, and
 * every vindex places keys (integers, reals, text) on one of the
 * keyspace's shards, the same shard each time.
 *
 * Input: the VSchema's JSON text. */
#include "sharding/vschema.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dsq_vschema *vs;
    char err[512];
    if (dsq_vschema_parse((const char *)data, size, &vs, err, sizeof err) != 0) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    for (size_t i = 0; i < vs->nkeyspaces; i++) {
        const dsq_vs_keyspace *ks = &vs->keyspaces[i];
        if (ks->nshards == 0 || dsq_vschema_keyspace(vs, ks->name) != ks)
            abort();
        for (size_t t = 0; t < ks->ntables; t++) {
            const dsq_vs_table *tb = &ks->tables[t];
            if ((tb->type == DSQ_VS_SHARDED && tb->vindex >= ks->nvindexes) ||
                (tb->type == DSQ_VS_UNSHARDED && tb->shard >= ks->nshards) || dsq_vs_table_find(ks, tb->name) != tb)
                abort();
        }
        const dsq_skey keys[] = {
            {.kind = DSQ_SKEY_INT, .i = 0},          {.kind = DSQ_SKEY_INT, .i = INT64_MIN},
            {.kind = DSQ_SKEY_INT, .i = INT64_MAX}, {.kind = DSQ_SKEY_REAL, .r = -1e300},
            {.kind = DSQ_SKEY_REAL, .r = 2.5},       {.kind = DSQ_SKEY_TEXT, .p = data, .n = size < 16 ? size : 16},
        };
        for (size_t v = 0; v < ks->nvindexes; v++) {
            if (ks->vindexes[v].lookup)
                continue; /* (no shards of its own: a table finds its values) */
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
                size_t a, b;
                int rc = dsq_vindex_shard(ks->vindexes[v].v, &keys[k], &a, err, sizeof err);
                if (rc == 0 && (a >= ks->nshards || dsq_vindex_shard(ks->vindexes[v].v, &keys[k], &b, err,
                                                                    sizeof err) != 0 || a != b))
                    abort();
                if (rc != 0 && dsq_vindex_kind(ks->vindexes[v].v) != DSQ_VINDEX_RANGE)
                    abort(); /* (only a range vindex refuses a value that is not NULL) */
            }
        }
        for (size_t t = 0; t < ks->ntables; t++)
            for (size_t l = 0; l < ks->tables[t].nlookups; l++)
                if (!ks->vindexes[ks->tables[t].lookups[l].vindex].lookup)
                    abort(); /* a lookup names a lookup vindex */
    }
    dsq_vschema_free(vs);
    return 0;
}
