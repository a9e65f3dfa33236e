/* vschema — how the tables of each keyspace are split over its shards.
 *
 * A VSchema is JSON:
 *
 *   {"keyspaces": {"shop": {
 *      "shards": ["shop-0", "shop-1", "shop-2", "shop-3"],
 *      "vindexes": {"h": {"type": "hash"},
 *                   "r": {"type": "range", "boundaries": [1000, 5000, 9000]},
 *                   "c": {"type": "consistent_hash", "virtual_nodes": 128}},
 *      "tables": {"orders": {"column": "customer_id", "vindex": "h"},
 *                 "countries": {"type": "reference"},
 *                 "settings": {"type": "unsharded", "shard": "shop-0"}}}}}
 *
 * Each shard is a database (its name a database name), in one keyspace
 * only. A table is `sharded` (the default type: its rows split by the
 * value of `column` through vindex `vindex`), `reference` (a copy on
 * every shard) or `unsharded` (on `shard` alone). A `sequence`
 * ({"type": "sequence", "shard"?, "start"?, "cache"?}) is no SQL table
 * but a counter kept on its shard (the first by default): a table's
 * "auto_increment": {"column", "sequence"} fills that column from it
 * in INSERTs that leave it out or give NULL. A sharded table's
 * "lookups": [{"column", "vindex"}] name columns found through lookup
 * vindexes ({"type": "lookup_unique", "table", "from", "to"}: a sharded
 * table of the keyspace, sharded by `from`, mapping each value to the
 * owner row's shard key in `to`). Vindex types:
 * vindex.h. Names of keyspaces, vindexes, tables and columns are 1 to 128
 * characters: letters, digits and '_' (not starting with a digit);
 * tables and columns compare without regard to ASCII case, as SQLite's.
 * Anything else — an unknown key, a wrong type, a name used twice, a
 * vindex or shard not defined — is refused with the path of the value at
 * fault ("keyspaces.shop.tables.orders.vindex: ..."). Immutable once
 * parsed; any thread. */
#ifndef DSQ_VSCHEMA_H
#define DSQ_VSCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "sharding/vindex.h"

#define DSQ_VS_NAME_MAX 129

typedef enum { DSQ_VS_SHARDED, DSQ_VS_REFERENCE, DSQ_VS_UNSHARDED, DSQ_VS_SEQUENCE } dsq_vs_table_type;

#define DSQ_VS_LOOKUPS_MAX 8

/* A sharded table's secondary vindex: a column found through a lookup. */
typedef struct dsq_vs_lookup {
    char column[DSQ_VS_NAME_MAX];
    size_t vindex;                /* a lookup vindex: index in the keyspace's vindexes */
} dsq_vs_lookup;

#define DSQ_VS_SEQ_CACHE_DEFAULT 100
#define DSQ_VS_SEQ_CACHE_MAX 1000000

typedef struct dsq_vs_table {
    char name[DSQ_VS_NAME_MAX];
    dsq_vs_table_type type;
    char column[DSQ_VS_NAME_MAX]; /* sharded */
    size_t vindex;                /* sharded: index in the keyspace's vindexes */
    size_t shard;                 /* unsharded, sequence: index in the keyspace's shards */
    int64_t seq_start;            /* sequence: its first value (default 1) */
    int64_t seq_cache;            /* sequence: values the router takes at a time (default 100) */
    /* auto_increment: a column an INSERT that leaves it out (or gives
     * NULL) gets the next values of a sequence of the keyspace */
    char auto_column[DSQ_VS_NAME_MAX]; /* "" when none */
    size_t auto_seq;              /* the sequence: index in the keyspace's tables */
    char auto_seq_name[DSQ_VS_NAME_MAX];
    dsq_vs_lookup lookups[DSQ_VS_LOOKUPS_MAX]; /* sharded: columns found through lookup vindexes */
    size_t nlookups;
} dsq_vs_table;

typedef struct dsq_vs_vindex {
    char name[DSQ_VS_NAME_MAX];
    dsq_vindex *v;                /* NULL for a lookup vindex */
    /* lookup_unique: a value of a table's column is found in `table`
     * (a sharded table of the keyspace, sharded by its column `from`),
     * whose column `to` holds the owner row's shard key */
    bool lookup;
    char table[DSQ_VS_NAME_MAX], from[DSQ_VS_NAME_MAX], to[DSQ_VS_NAME_MAX];
    size_t table_idx;             /* the lookup table: index in the keyspace's tables */
} dsq_vs_vindex;


typedef struct dsq_vs_keyspace {
    char name[DSQ_VS_NAME_MAX];
    char (*shards)[DSQ_VS_NAME_MAX];
    size_t nshards;
    dsq_vs_vindex *vindexes;
    size_t nvindexes;
    dsq_vs_table *tables;
    size_t ntables;
} dsq_vs_keyspace;

typedef struct dsq_vschema {
    dsq_vs_keyspace *keyspaces;
    size_t nkeyspaces;
} dsq_vschema;

/* Parse and check text[0..len): 0 and *out, or -1 with the reason. */
int dsq_vschema_parse(const char *text, size_t len, dsq_vschema **out, char *err, size_t errlen);
void dsq_vschema_free(dsq_vschema *vs);

/* Keyspace `name`, or NULL. */
const dsq_vs_keyspace *dsq_vschema_keyspace(const dsq_vschema *vs, const char *name);
/* Table `name` of keyspace ks (without regard to ASCII case), or NULL. */
const dsq_vs_table *dsq_vs_table_find(const dsq_vs_keyspace *ks, const char *name);

#endif
