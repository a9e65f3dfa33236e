/* tier_int — tier.c's decoders of what it reads back from the object
 * store, for the fuzz targets (tests/fuzz/fuzz_tier.c). Not for other
 * modules: they go through tier.h. */
#ifndef DSQ_TIER_INT_H
#define DSQ_TIER_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A manifest object's bytes, CRC and shape checked: a new reference, or
 * NULL when damaged or not database `db`'s (manifest_parse). */
json_t *dsq__tier_manifest_parse(const char *p, size_t n, const char *db);

/* Whether p[0..n) holds intact log records after LSN `after` up to
 * `upto` and nothing else (a tail object's body; tail_whole). */
bool dsq__tier_tail_whole(const uint8_t *p, size_t n, uint64_t after, uint64_t upto);

/* The LSNs a tail object's key names; false: not a tail's key (tail_range). */
bool dsq__tier_tail_range(const char *key, uint64_t *after, uint64_t *upto);

#endif
