/* iceberg — the Iceberg REST catalog's pure parts (docs/lakehouse.md,
 * "The catalog"): its request paths, the names it accepts, and what the
 * lake's object keys say about namespaces, tables and their versions.
 *
 * The lake's layout in the object store:
 *
 *   lake/D/namespace.json                namespace D (a database's name): {"properties": {...}}
 *   lake/D/T/metadata/vN.metadata.json   table T of D, version N = 1, 2, ... (the highest is current)
 *
 * Nothing here does I/O: server/iceberg.c serves the routes with these. */
#ifndef DSQ_ICEBERG_H
#define DSQ_ICEBERG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tier/objstore.h"

#define DSQ_ICE_PREFIX "/v1/iceberg" /* the catalog's URI path: its REST paths follow */
#define DSQ_ICE_TABLE_MAX 255        /* bytes of a table's name */

/* What a path after DSQ_ICE_PREFIX names (the OpenAPI's operations, with
 * no {prefix}). */
typedef enum dsq_ice_ep {
    DSQ_ICE_UNKNOWN = 0,   /* not a path of the REST catalog */
    DSQ_ICE_CONFIG,        /* /v1/config */
    DSQ_ICE_NAMESPACES,    /* /v1/namespaces */
    DSQ_ICE_NAMESPACE,     /* /v1/namespaces/{ns} */
    DSQ_ICE_NS_PROPERTIES, /* /v1/namespaces/{ns}/properties */
    DSQ_ICE_TABLES,        /* /v1/namespaces/{ns}/tables */
    DSQ_ICE_REGISTER,      /* /v1/namespaces/{ns}/register */
    DSQ_ICE_TABLE,         /* /v1/namespaces/{ns}/tables/{t} */
    DSQ_ICE_METRICS,       /* /v1/namespaces/{ns}/tables/{t}/metrics */
    DSQ_ICE_RENAME,        /* /v1/tables/rename */
    DSQ_ICE_COMMIT,        /* /v1/transactions/commit */
    DSQ_ICE_UNSERVED,      /* the spec's, not served here: views, functions, scan planning,
                              credentials, signing, unregister, OAuth tokens */
} dsq_ice_ep;

typedef struct dsq_ice_path {
    dsq_ice_ep ep;
    char ns[1024];    /* the {namespace} segment, percent-decoded (levels split by 0x1F), or "" */
    char table[1024]; /* the {table} segment, percent-decoded, or "" */
} dsq_ice_path;

/* Match `rest`, the path after DSQ_ICE_PREFIX ("/v1/namespaces", ...).
 * 0, or -1 when it is malformed (a bad or NUL escape, a segment too
 * long); p->ep is DSQ_ICE_UNKNOWN for a path that is no operation's. */
int dsq_ice_parse_path(const char *rest, dsq_ice_path *p);

/* A namespace as sent (levels split by 0x1F): 1 one level, a database's
 * name (copied to db); 2 several levels, each a database's name (no
 * namespace here has them); 0 anything else (empty, a level not a
 * database's name). */
int dsq_ice_namespace(const char *ns, char db[129]);

/* Can `t` be a table's name: 1-255 bytes of UTF-8, no '/', '\\' or
 * control characters, not "." or ".." (one object key segment)? */
bool dsq_ice_table_name_valid(const char *t);

/* A growing, owned array of strings. */
typedef struct dsq_ice_names {
    char **v;
    size_t n, cap;
} dsq_ice_names;

void dsq_ice_names_free(dsq_ice_names *s);

/* From the keys of a LIST of "lake/": the namespaces (each D with
 * lake/D/namespace.json, D a database's name), sorted, once each.
 * 0, or -1 out of memory. */
int dsq_ice_namespaces_of(const dsq_obj_item *items, size_t n, dsq_ice_names *out);

/* From the keys of a LIST of "lake/NS/": the tables of namespace ns (each
 * T with some lake/NS/T/metadata/vN.metadata.json), sorted, once each;
 * *ns_found when lake/NS/namespace.json is among them. 0, or -1 out of
 * memory. */
int dsq_ice_tables_of(const char *ns, const dsq_obj_item *items, size_t n, dsq_ice_names *out, bool *ns_found);

/* The N of key `key` if it is `dir` + "vN.metadata.json" (N decimal, at
 * least 1, no leading zero, at most 18 digits), else 0. */
uint64_t dsq_ice_metadata_version(const char *dir, const char *key);

/* The highest such N among items (0: none). */
uint64_t dsq_ice_latest_version(const char *dir, const dsq_obj_item *items, size_t n);

/* The URI base of the objects of the store at `url` into out: the URL
 * without trailing '/', and for a relative file:// directory that
 * directory made absolute from `cwd`. Keys go after it with a '/'.
 * 0, or -1 when it does not fit. */
int dsq_ice_store_base(const char *url, const char *cwd, char *out, size_t outlen);

#endif
