/* plan — how one statement on a keyspace is answered.
 *
 * The planner never interprets SQL itself: SQLite does. It prepares the
 * statement against the keyspace's schema (an empty copy of a shard's
 * tables and views, dsq_ks_schema) with an authorizer that reports every
 * table read and written, and uses sqlparse.h to find the parts of plain
 * statements. Then, in this order:
 *
 *   ONE      every table the statement reads or writes is on one shard:
 *            reference tables (on all), unsharded tables on that shard,
 *            sharded tables restricted to it by `key = value` or
 *            `key IN (...)` in the WHERE clause (or an inner join's ON),
 *            carried across joins on the key of tables with the same
 *            vindex. The statement goes to that shard unchanged.
 *   SCATTER  a simple SELECT (sqlparse.h) whose sharded tables are all
 *            joined on their keys with one vindex (co-sharded), with
 *            reference tables: each target shard runs a rewritten
 *            statement (filters, joins and projections as written;
 *            partial aggregates; ORDER BY and LIMIT offset + limit) and
 *            the router runs the final one over their rows (merge_sql on
 *            a table of them, merge_ddl), or just concatenates them.
 *   FETCH    any other read: the columns the statement reads of each
 *            table are fetched from the shards that hold it (with the
 *            WHERE conjuncts that concern that table alone, when that
 *            is exact), loaded into tables of the same names, types and
 *            collations at the router, and the statement runs there as
 *            written.
 *   SEQUENCE an INSERT that needs values of a sequence (auto_increment):
 *            the router takes `seq_count` of them from sequence
 *            `seq_table`, binds them as the parameters seq_q adds (after
 *            the request's positional ones, ?seq_first on; or named
 *            :_dsq_seq1 ...), and plans seq_q again.
 *   LOOKUP   a read that names a value of a lookup vindex's column: the
 *            router looks each value in `lookups` up (`SELECT to FROM
 *            table WHERE from = value`, through the keyspace), finds the
 *            owner's shard, and plans again with the answers
 *            (dsq_plan_make_hinted).
 *   ALL      DDL: the statement goes to every shard.
 *   MULTI    a write on several shards, in one cross-shard transaction
 *            (router.c's two-phase commit): INSERT rows split by shard
 *            (each shard gets its rows), UPDATE and DELETE not restricted
 *            to one shard (each target shard runs the statement), writes
 *            to reference tables (every shard).
 *   REFUSE   what the router cannot answer exactly: the reason in msg.
 *   ERROR    the statement is wrong (SQLite's message and code).
 *
 * Positional parameters in rewritten SQL are numbered (?N); each piece
 * of SQL says which of the request's parameters it needs. Loop thread
 * (a schema is not shared between threads). */
#ifndef DSQ_PLAN_H
#define DSQ_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"
#include "engine/engine.h"
#include "sharding/vschema.h"

typedef struct sqlite3 sqlite3;

/* A keyspace's schema at the router: its tables and views, empty. */
typedef struct sqlite3_stmt sqlite3_stmt;

typedef struct dsq_ks_schema {
    sqlite3 *db;
    sqlite3_stmt *view_q;  /* "is this name a view?", prepared once */
    char **ddl;    /* the CREATE statements it was made of (tables first) */
    size_t nddl;
} dsq_ks_schema;

/* A schema from CREATE statements (tables, then views): 0, or -1 with
 * the reason. */
int dsq_ks_schema_new(const char *const *ddl, size_t n, dsq_ks_schema **out, char *err, size_t errlen);
void dsq_ks_schema_free(dsq_ks_schema *s);

typedef enum {
    DSQ_PLAN_ONE,
    DSQ_PLAN_SCATTER,
    DSQ_PLAN_FETCH,
    DSQ_PLAN_ALL,
    DSQ_PLAN_REFUSE,
    DSQ_PLAN_ERROR,
    DSQ_PLAN_MULTI,
    DSQ_PLAN_SEQUENCE,
    DSQ_PLAN_LOOKUP,
} dsq_plan_kind;
#define DSQ_PLAN_KINDS 9

/* SQL for a shard and the parameters it takes from the request:
 * positional ones 1..npos, or the named ones flagged in named[]. */
typedef struct dsq_plan_sql {
    char *sql;
    size_t npos;
    bool *named;   /* nparams of them when the request's are named, else NULL */
} dsq_plan_sql;

typedef struct dsq_plan_fetch {
    char table[129];
    dsq_plan_sql q;  /* the rows to fetch */
    char **cols;     /* the columns it returns, in order */
    size_t ncols;
    long shard;      /* -1: every shard, else that one */
} dsq_plan_fetch;

/* A value to look up (LOOKUP plans). */
typedef struct dsq_plan_lookup {
    size_t vindex;          /* the lookup vindex */
    size_t owner;           /* the owner table (index in the keyspace's tables) */
    dsq_value value;        /* text and blobs in `bytes` */
    char *bytes;            /* owned */
} dsq_plan_lookup;

typedef struct dsq_plan {
    dsq_plan_kind kind;
    bool write;             /* the statement writes (ONE, ALL) */
    size_t shard;           /* ONE */
    bool *targets;          /* SCATTER: nshards flags */
    size_t nshards;
    dsq_plan_sql shard_q;   /* SCATTER */
    char *merge_ddl;        /* SCATTER: CREATE TABLE of the shards' rows (NULL: concatenate) */
    dsq_plan_sql merge_q;   /* SCATTER: the final statement over them */
    size_t shard_cols;      /* SCATTER: columns each shard returns */
    size_t ncols;           /* columns of the answer */
    char **names;           /* their names */
    char **decltypes;       /* their declared types (NULL entries: expressions) */
    dsq_plan_sql *writes;   /* MULTI: each participant's statement ... */
    size_t *write_shard;    /* ... and its shard */
    bool *write_aux;        /* ... and whether it only keeps a lookup table in step (its rows are
                               not the statement's: not counted in its answer) */
    size_t nwrites, wcap;
    dsq_plan_sql seq_q;     /* SEQUENCE: the INSERT with the values to fill as parameters */
    size_t seq_table;       /* SEQUENCE: the sequence (index in the keyspace's tables) */
    size_t seq_count;       /* SEQUENCE: values it needs */
    size_t seq_first;       /* SEQUENCE: positional: the index of the first added parameter */
    struct dsq_plan_lookup *lookups; /* LOOKUP: the values to look up, in order */
    size_t nlookups;
    dsq_plan_fetch *fetch;  /* FETCH */
    size_t nfetch;
    char *fetch_ddl;        /* FETCH: the tables and views at the router (';'-separated) */
    dsq_code code;          /* REFUSE, ERROR */
    char msg[512];          /* REFUSE, ERROR; else how it was planned, for logs and tests */
} dsq_plan;

/* Plan `req` (one statement and its parameters) on keyspace ks with schema
 * s. Always fills *out (dsq_plan_free it); kind says what came of it. */
void dsq_plan_make(dsq_ks_schema *s, const dsq_vs_keyspace *ks, const dsq_stmt_req *req, dsq_plan *out);

/* The answers to a LOOKUP plan's lookups, in order: the owner's shard,
 * or -1 when the value has no row (no shard holds an owner of it). */
typedef struct dsq_plan_hints {
    const long *shard;
    size_t n;
} dsq_plan_hints;

void dsq_plan_make_hinted(dsq_ks_schema *s, const dsq_vs_keyspace *ks, const dsq_stmt_req *req,
                          const dsq_plan_hints *hints, dsq_plan *out);

/* The shard of value v for table `table` of ks (its key's affinity
 * applied): 0 and *shard, or -1. */
int dsq_plan_shard_of(dsq_ks_schema *s, const dsq_vs_keyspace *ks, size_t table, const dsq_value *v, size_t *shard);
void dsq_plan_free(dsq_plan *p);

/* "one", "scatter", ... */
const char *dsq_plan_kind_name(dsq_plan_kind k);

#endif
