/* manifest — a database's manifest, the object naming which files make the
 * database and where their bytes are: as a C struct (tier_int.h), and its
 * one decoder and one encoder.
 *
 * The object (docs/storage.md "Object layout"): one line of JSON, then a
 * line "#crc32 XXXXXXXX" with the CRC-32 of the JSON's bytes (hex), so
 * that damage is seen even where it leaves valid JSON:
 *
 *   {"format":"dosqld-manifest 1", "db":NAME, "lsn":LSN, "time":MS,
 *    "chunk":BYTES, "next":ID, "epoch":EPOCH, "files":[FILE...]}
 *   FILE: {"name":NAME, "id":ID, "size":BYTES, "ino":INO, "mtime":NS,
 *          "append":BOOL, "chunks":[[LENGTH, CRC32]...]}
 *         and, for a file kept inline, "data":BASE64 and "crc":CRC32 (its
 *         "chunks" then empty)
 *
 * Every field is an integer (JSON's are signed 64-bit: "ino" and "mtime"
 * hold the bits of a uint64_t, which may read negative), a string or a
 * boolean as shown, and all must be there but "epoch" (written with
 * replication: the epoch its writer was the database's primary in; read
 * as 0 when absent); fields not named here are ignored. A chunked file's chunk lengths add up to its size.
 *
 * Divisions: the struct; decoding; encoding; keys. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/storage/disk.h"
#include "engine/tier/tier_int.h"
#include "engine/tier/warm.h"

/* ---- the struct -------------------------------------------------------------------------------- */

dsq_manifest *dsq__manifest_new(const char *db)
{
    dsq_manifest *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    atomic_init(&m->refs, 1);
    dsq_strlcpy(m->db, db, sizeof m->db);
    m->next = 1;
    return m;
}

dsq_manifest *dsq__manifest_hold(dsq_manifest *m)
{
    if (m != NULL)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

static void file_clear(dsq_manifest_file *f)
{
    free(f->data);
    free(f->chunks);
}

void dsq__manifest_release(dsq_manifest *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->nfiles; i++)
        file_clear(&m->files[i]);
    free(m->files);
    free(m);
}

const dsq_manifest_file *dsq__manifest_file(const dsq_manifest *m, const char *name)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (strcmp(m->files[i].name, name) == 0)
            return &m->files[i];
    return NULL;
}

int dsq__manifest_file_copy(dsq_manifest_file *dst, const dsq_manifest_file *src)
{
    *dst = *src;
    dst->data = NULL;
    dst->chunks = NULL;
    if (src->data != NULL && (dst->data = strdup(src->data)) == NULL)
        return -1;
    if (src->nchunks > 0) {
        if ((dst->chunks = malloc(src->nchunks * sizeof *dst->chunks)) == NULL) {
            free(dst->data);
            dst->data = NULL;
            return -1;
        }
        memcpy(dst->chunks, src->chunks, src->nchunks * sizeof *dst->chunks);
    }
    return 0;
}

static bool file_equal(const dsq_manifest_file *a, const dsq_manifest_file *b)
{
    if (strcmp(a->name, b->name) != 0 || a->id != b->id || a->size != b->size || a->ino != b->ino ||
        a->mtime_ns != b->mtime_ns || a->append_only != b->append_only || (a->data == NULL) != (b->data == NULL) ||
        a->nchunks != b->nchunks)
        return false;
    if (a->data != NULL && (a->crc != b->crc || strcmp(a->data, b->data) != 0))
        return false;
    for (size_t k = 0; k < a->nchunks; k++)
        if (a->chunks[k].len != b->chunks[k].len || a->chunks[k].crc != b->chunks[k].crc)
            return false;
    return true;
}

bool dsq__manifest_files_equal(const dsq_manifest *a, const dsq_manifest *b)
{
    if (a->nfiles != b->nfiles)
        return false;
    for (size_t i = 0; i < a->nfiles; i++)
        if (!file_equal(&a->files[i], &b->files[i]))
            return false;
    return true;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

/* The integer `key` of object o (`where` names o in messages) into *out:
 * 0, or -1 with a message. It must be in [0, max]; with `bits`, it holds
 * the bits of a uint64_t (written through JSON's signed integers) and
 * may read negative. */
static int get_u64(json_t *o, const char *where, const char *key, uint64_t max, bool bits, uint64_t *out, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL) {
        snprintf(err, errlen, "%s%s is missing", where, key);
        return -1;
    }
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "%s%s is not an integer", where, key);
        return -1;
    }
    json_int_t i = json_integer_value(v);
    if (!bits && (i < 0 || (uint64_t)i > max)) {
        snprintf(err, errlen, "%s%s is out of range (%lld)", where, key, (long long)i);
        return -1;
    }
    *out = (uint64_t)i;
    return 0;
}

/* The chunks of a file kept in chunk objects: [length, CRC-32] each,
 * adding up to its size. */
static int decode_chunks(json_t *chunks, const char *where, dsq_manifest_file *f, char *err, size_t errlen)
{
    size_t n = json_array_size(chunks);
    if (n > 0 && (f->chunks = calloc(n, sizeof *f->chunks)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->nchunks = n;
    uint64_t total = 0;
    for (size_t k = 0; k < n; k++) {
        json_t *c = json_array_get(chunks, k);
        if (!json_is_array(c) || json_array_size(c) != 2 || !json_is_integer(json_array_get(c, 0)) ||
            !json_is_integer(json_array_get(c, 1))) {
            snprintf(err, errlen, "%schunks[%zu] is not [length, crc]", where, k);
            return -1;
        }
        json_int_t len = json_integer_value(json_array_get(c, 0)), crc = json_integer_value(json_array_get(c, 1));
        if (len < 0 || crc < 0 || crc > UINT32_MAX) {
            snprintf(err, errlen, "%schunks[%zu] is out of range", where, k);
            return -1;
        }
        f->chunks[k] = (dsq_manifest_chunk){(uint64_t)len, (uint32_t)crc};
        total += (uint64_t)len;
        if (total > f->size)
            break; /* not back to back from 0 to size: said below (and no overflow) */
    }
    if (total != f->size) {
        snprintf(err, errlen, "%schunks do not add up to its size", where);
        return -1;
    }
    return 0;
}

/* A file kept inline: its bytes in base64, their CRC-32, no chunks. */
static int decode_inline(json_t *o, json_t *data, const char *where, dsq_manifest_file *f, char *err, size_t errlen)
{
    uint64_t crc;
    if (!json_is_string(data)) {
        snprintf(err, errlen, "%sdata is not a string", where);
        return -1;
    }
    if (json_array_size(json_object_get(o, "chunks")) != 0) {
        snprintf(err, errlen, "%shas both data and chunks", where);
        return -1;
    }
    if (f->size > DSQ_TIER_INLINE_MAX) {
        snprintf(err, errlen, "%ssize is too large for a file kept inline", where);
        return -1;
    }
    if (get_u64(o, where, "crc", UINT32_MAX, false, &crc, err, errlen) != 0)
        return -1;
    f->crc = (uint32_t)crc;
    if ((f->data = strdup(json_string_value(data))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Entry i of "files" into *f (which the caller clears, decoded or not). */
static int decode_file(json_t *o, size_t i, dsq_manifest_file *f, char *err, size_t errlen)
{
    char where[40];
    snprintf(where, sizeof where, "files[%zu].", i);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "files[%zu] is not an object", i);
        return -1;
    }
    json_t *name = json_object_get(o, "name");
    if (!json_is_string(name)) {
        snprintf(err, errlen, "%sname is %s", where, name ? "not a string" : "missing");
        return -1;
    }
    /* A path under the database's directory, and no way out of it. */
    const char *s = json_string_value(name);
    if (strlen(s) >= sizeof f->name || strstr(s, "..") != NULL || s[0] == '/') {
        snprintf(err, errlen, "%sname is not a file of a database's directory", where);
        return -1;
    }
    dsq_strlcpy(f->name, s, sizeof f->name);
    json_t *append = json_object_get(o, "append"), *chunks = json_object_get(o, "chunks");
    if (get_u64(o, where, "id", UINT64_MAX, false, &f->id, err, errlen) != 0 ||
        get_u64(o, where, "size", UINT64_MAX, false, &f->size, err, errlen) != 0 ||
        get_u64(o, where, "ino", 0, true, &f->ino, err, errlen) != 0 ||
        get_u64(o, where, "mtime", 0, true, &f->mtime_ns, err, errlen) != 0)
        return -1;
    if (!json_is_boolean(append)) {
        snprintf(err, errlen, "%sappend is %s", where, append ? "not a boolean" : "missing");
        return -1;
    }
    f->append_only = json_is_true(append);
    if (!json_is_array(chunks)) {
        snprintf(err, errlen, "%schunks is %s", where, chunks ? "not an array" : "missing");
        return -1;
    }
    json_t *data = json_object_get(o, "data");
    return data != NULL ? decode_inline(o, data, where, f, err, errlen) : decode_chunks(chunks, where, f, err, errlen);
}

/* The manifest of database `db` that JSON tree j holds: 0 and *out, or
 * -1 with a message. */
static int decode_tree(json_t *j, const char *db, dsq_manifest **out, char *err, size_t errlen)
{
    if (!json_is_object(j)) {
        snprintf(err, errlen, "not a JSON object");
        return -1;
    }
    json_t *format = json_object_get(j, "format"), *name = json_object_get(j, "db"), *files = json_object_get(j, "files");
    if (!json_is_string(format) || strcmp(json_string_value(format), DSQ_MANIFEST_FORMAT) != 0) {
        snprintf(err, errlen, "format is not \"%s\"", DSQ_MANIFEST_FORMAT);
        return -1;
    }
    if (!json_is_string(name) || strcmp(json_string_value(name), db) != 0) {
        snprintf(err, errlen, "db is not \"%.128s\"", db);
        return -1;
    }
    if (!json_is_array(files)) {
        snprintf(err, errlen, "files is %s", files ? "not an array" : "missing");
        return -1;
    }
    dsq_manifest *m = dsq__manifest_new(db);
    size_t n = json_array_size(files);
    if (m == NULL || (n > 0 && (m->files = calloc(n, sizeof *m->files)) == NULL)) {
        dsq__manifest_release(m);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = get_u64(j, "", "lsn", UINT64_MAX, false, &m->lsn, err, errlen) != 0 ||
                     get_u64(j, "", "time", UINT64_MAX, false, &m->time_ms, err, errlen) != 0 ||
                     get_u64(j, "", "chunk", UINT64_MAX, false, &m->chunk_bytes, err, errlen) != 0 ||
                     get_u64(j, "", "next", UINT64_MAX, false, &m->next, err, errlen) != 0 ||
                     (json_object_get(j, "epoch") != NULL &&
                      get_u64(j, "", "epoch", UINT64_MAX, false, &m->epoch, err, errlen) != 0)
                 ? -1
                 : 0;
    /* nfiles counts the entries begun, so that release frees each. */
    for (size_t i = 0; i < n && rc == 0; i++, m->nfiles++)
        rc = decode_file(json_array_get(files, i), i, &m->files[i], err, errlen);
    if (rc != 0) {
        dsq__manifest_release(m);
        return -1;
    }
    *out = m;
    return 0;
}

int dsq__manifest_decode(const char *p, size_t n, const char *db, dsq_manifest **out, char *err, size_t errlen)
{
    *out = NULL;
    if (n < 17 || p[n - 1] != '\n' || p[n - 17] != '\n' || memcmp(p + n - 16, "#crc32 ", 7) != 0) {
        snprintf(err, errlen, "no \"#crc32\" line at its end");
        return -1;
    }
    const char *t = p + n - 16; /* "#crc32 XXXXXXXX\n" */
    unsigned crc;
    if (sscanf(t, "#crc32 %8x", &crc) != 1 || dsq_crc32(p, (size_t)(t - 1 - p)) != crc) {
        snprintf(err, errlen, "its CRC-32 does not match (damaged)");
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb(p, (size_t)(t - 1 - p), 0, &je);
    if (j == NULL) {
        snprintf(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return -1;
    }
    int rc = decode_tree(j, db, out, err, errlen);
    json_decref(j);
    return rc;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

static json_t *encode_file(const dsq_manifest_file *f)
{
    json_t *chunks = json_array();
    for (size_t k = 0; chunks != NULL && k < f->nchunks; k++)
        if (json_array_append_new(chunks, json_pack("[I,I]", (json_int_t)f->chunks[k].len,
                                                    (json_int_t)f->chunks[k].crc)) != 0) {
            json_decref(chunks);
            return NULL;
        }
    json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:I,s:b,s:o}", "name", f->name, "id", (json_int_t)f->id, "size",
                          (json_int_t)f->size, "ino", (json_int_t)f->ino, "mtime", (json_int_t)f->mtime_ns, "append",
                          f->append_only, "chunks", chunks);
    if (o != NULL && f->data != NULL &&
        (json_object_set_new(o, "data", json_string(f->data)) != 0 ||
         json_object_set_new(o, "crc", json_integer((json_int_t)f->crc)) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *dsq__manifest_encode(const dsq_manifest *m, size_t *len)
{
    json_t *files = json_array();
    for (size_t i = 0; files != NULL && i < m->nfiles; i++)
        if (json_array_append_new(files, encode_file(&m->files[i])) != 0) {
            json_decref(files);
            return NULL;
        }
    json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:o}", "format", DSQ_MANIFEST_FORMAT, "db", m->db, "lsn",
                          (json_int_t)m->lsn, "time", (json_int_t)m->time_ms, "chunk", (json_int_t)m->chunk_bytes,
                          "next", (json_int_t)m->next, "files", files);
    if (j != NULL && m->epoch != 0 && json_object_set_new(j, "epoch", json_integer((json_int_t)m->epoch)) != 0) {
        json_decref(j);
        j = NULL;
    }
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return NULL;
    size_t n = strlen(text);
    char *out = malloc(n + 32);
    if (out != NULL)
        *len = (size_t)snprintf(out, n + 32, "%s\n#crc32 %08x\n", text, dsq_crc32(text, n));
    free(text);
    return out;
}

/* ---- keys -------------------------------------------------------------------------------------- */

void dsq__manifest_key(char *out, size_t n, const char *db) { snprintf(out, n, "db/%s/manifest.json", db); }

void dsq__manifest_chunk_keys(const dsq_manifest *m, json_t *keys)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        const dsq_manifest_file *f = &m->files[i];
        for (size_t k = 0; k < f->nchunks; k++) {
            char key[DSQ_OBJ_KEY_MAX + 1];
            dsq_chunk_key(key, sizeof key, m->db, f->id, k, f->chunks[k].len);
            json_object_set_new(keys, key, json_true());
        }
    }
}
