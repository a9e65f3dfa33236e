/* router — DESIGN 3.2's route table: path and method → route. */
#ifndef DSQ_ROUTER_H
#define DSQ_ROUTER_H

#include <stdbool.h>

typedef enum dsq_route_id {
    DSQ_ROUTE_NONE = 0,   /* no route (404, 405, bad request) */
    DSQ_ROUTE_HEALTHZ,    /* GET /healthz */
    DSQ_ROUTE_METRICS,    /* GET /metrics */
    DSQ_ROUTE_DB_LIST,    /* GET /v1/db */
    DSQ_ROUTE_DB_DROP,    /* DELETE /v1/db/{db} */
    DSQ_ROUTE_DB_QUERY,   /* POST /v1/db/{db}/query */
    DSQ_ROUTE_DB_RPC,     /* POST or WebSocket /v1/db/{db}/rpc */
    DSQ_ROUTE_DB_CAPNWEB, /* POST or WebSocket /v1/db/{db}/capnweb */
    DSQ_ROUTE_DB_CDC,     /* GET /v1/db/{db}/cdc (SSE) */
    DSQ_ROUTE_RPC,        /* POST or WebSocket /v1/rpc */
    DSQ_ROUTE_CAPNWEB,    /* POST or WebSocket /v1/capnweb */
    DSQ_ROUTE_CLUSTER,    /* GET /v1/cluster */
    DSQ_ROUTE_PROMOTE,    /* POST /v1/admin/promote */
    DSQ_ROUTE_MOVE,       /* POST /v1/admin/move */
    DSQ_ROUTE_DRAIN,      /* POST /v1/admin/drain */
    DSQ_ROUTE_LAKE,       /* GET /v1/admin/lake (the lake writer's counts), POST (a round now) */
    DSQ_ROUTE_KS_QUERY,   /* POST /v1/ks/{ks}/query */
    DSQ_ROUTE_KS_RPC,     /* POST or WebSocket /v1/ks/{ks}/rpc */
    DSQ_ROUTE_KS_CAPNWEB, /* POST or WebSocket /v1/ks/{ks}/capnweb */
    DSQ_ROUTE_DB_EXPORT,  /* GET /v1/db/{db}/export[?lsn=N] */
    DSQ_ROUTE_DB_IMPORT,  /* PUT /v1/db/{db}/import */
    DSQ_ROUTE_DB_HRANA_V2,       /* GET /v1/db/{db}/v2 (Hrana over HTTP: version check) */
    DSQ_ROUTE_DB_HRANA_PIPELINE, /* POST /v1/db/{db}/v2/pipeline */
    DSQ_ROUTE_DB_HRANA_WS,       /* WebSocket /v1/db/{db}/ (hrana2, hrana1) */
    DSQ_ROUTE_ICEBERG,           /* /v1/iceberg/...: the Iceberg REST catalog (server/iceberg.c) */
    DSQ__ROUTE_COUNT
} dsq_route_id;

typedef struct dsq_route_match {
    dsq_route_id route;   /* the route, or NONE with status set */
    int status;           /* 0 on a match; else 400, 404 or 405 */
    const char *why;      /* reason for status (static text) */
    const char *allow;    /* for 405: the Allow header value */
    bool websocket;       /* the route also takes a WebSocket upgrade */
    unsigned scope;       /* DSQ_SCOPE_* needed (0: public) */
    char db[129];         /* the {db} segment, decoded and validated */
    char ks[129];         /* the {ks} segment (a keyspace's name), decoded and validated */
} dsq_route_match;

/* Match a decoded-on-the-fly path and llhttp method. */
void dsq_route(int method, const char *path, dsq_route_match *m);

/* "healthz", "db_query", ... for metrics labels and logs. */
const char *dsq_route_name(dsq_route_id id);

/* The path pattern, e.g. "/v1/db/{db}/query". */
const char *dsq_route_pattern(dsq_route_id id);

#endif
