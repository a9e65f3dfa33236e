/* docs — the JSON documents of the engine's answers that are not rows.
 *
 * The engine answers getSchema, getStats, ping, the list of databases and
 * a drop with structs (engine.h); these are their documents, as
 * docs/protocol.md gives them. Every protocol that answers them (JSON-RPC,
 * Cap'n Web, the HTTP routes) encodes through here. */
#ifndef DSQ_DOCS_H
#define DSQ_DOCS_H

#include <jansson.h>

#include "engine/engine.h"

/* The document of finished call c (SCHEMA, STATS, PING, LIST or DROP,
 * without an error); NULL for another operation, or out of memory. */
json_t *dsq_doc_of(const dsq_call *c);

/* The "server" object of getStats. NULL: out of memory. */
json_t *dsq_doc_server_stats(const dsq_engine_stats *s);

#endif
