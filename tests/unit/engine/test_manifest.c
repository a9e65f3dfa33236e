/* Unit tests: engine/tier/manifest — a manifest as the tier has always
 * written it decodes, field for field, and encodes back to the same bytes;
 * each field missing, or of the wrong type, is refused with a message
 * naming it; so are damage (the CRC-32 line), another database's
 * manifest, chunks that do not add up to their file, and a name that
 * leaves the database's directory. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/storage/disk.h"
#include "engine/tier/tier_int.h"

/* As tier.c wrote it before the manifest was a struct (jansson, compact,
 * the fields in this order): an inline file, a log segment in two chunks
 * whose inode reads negative (a uint64_t's bits), a checkpoint. */
static const char json_text[] =
    "{\"format\":\"dosqld-manifest 1\",\"db\":\"app\",\"lsn\":1234,\"time\":1795671662856,\"chunk\":2097152,"
    "\"next\":4,\"files\":["
    "{\"name\":\"format\",\"id\":1,\"size\":26,\"ino\":11042914,\"mtime\":1795671662842119517,\"append\":false,"
    "\"chunks\":[],\"data\":\"ZG9zcWxkLWRiIDEgcGFnZV9zaXplIDUxMgo=\",\"crc\":2450697840},"
    "{\"name\":\"wal/00000001.seg\",\"id\":2,\"size\":2097162,\"ino\":-2,\"mtime\":1795671662842119518,"
    "\"append\":true,\"chunks\":[[2097152,784075480],[10,4294967295]]},"
    "{\"name\":\"ckpt/0000000000000010.ckpt\",\"id\":3,\"size\":100,\"ino\":11042916,\"mtime\":17,"
    "\"append\":false,\"chunks\":[[100,0]]}]}";

/* text followed by its CRC-32 line, as the object is stored. */
static char *object(const char *text, size_t *len)
{
    size_t n = strlen(text);
    char *out = malloc(n + 32);
    cr_assert_not_null(out);
    *len = (size_t)snprintf(out, n + 32, "%s\n#crc32 %08x\n", text, dsq_crc32(text, n));
    return out;
}

/* Decode json (made into an object) as db's: rc, *m, the message. */
static int decode(const char *json, const char *db, dsq_manifest **m, char *err, size_t errlen)
{
    size_t len;
    char *obj = object(json, &len);
    err[0] = '\0';
    int rc = dsq__manifest_decode(obj, len, db, m, err, errlen);
    free(obj);
    return rc;
}

Test(manifest, decodes_what_was_written_and_encodes_it_back)
{
    dsq_manifest *m;
    char err[300];
    cr_assert_eq(decode(json_text, "app", &m, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(m->db, "app");
    cr_assert_eq(m->lsn, 1234);
    cr_assert_eq(m->time_ms, 1795671662856u);
    cr_assert_eq(m->chunk_bytes, 2097152);
    cr_assert_eq(m->next, 4);
    cr_assert_eq(m->nfiles, 3);
    const dsq_manifest_file *f = &m->files[0];
    cr_assert_str_eq(f->name, "format");
    cr_assert_eq(f->id, 1);
    cr_assert_eq(f->size, 26);
    cr_assert_eq(f->ino, 11042914);
    cr_assert_eq(f->mtime_ns, 1795671662842119517u);
    cr_assert_not(f->append_only);
    cr_assert_str_eq(f->data, "ZG9zcWxkLWRiIDEgcGFnZV9zaXplIDUxMgo=");
    cr_assert_eq(f->crc, 2450697840u);
    cr_assert_eq(f->nchunks, 0);
    f = dsq__manifest_file(m, "wal/00000001.seg");
    cr_assert_eq(f, &m->files[1]);
    cr_assert_eq(f->ino, UINT64_MAX - 1, "an inode above 2^63 comes back as it was");
    cr_assert(f->append_only);
    cr_assert_null(f->data);
    cr_assert_eq(f->nchunks, 2);
    cr_assert_eq(f->chunks[0].len, 2097152);
    cr_assert_eq(f->chunks[0].crc, 784075480);
    cr_assert_eq(f->chunks[1].len, 10);
    cr_assert_eq(f->chunks[1].crc, UINT32_MAX);
    cr_assert_null(dsq__manifest_file(m, "wal/00000002.seg"));

    size_t len, want_len;
    char *text = dsq__manifest_encode(m, &len), *want = object(json_text, &want_len);
    cr_assert_not_null(text);
    cr_assert_eq(len, want_len);
    cr_assert_eq(memcmp(text, want, len), 0, "encoded as it was written:\n%.*s", (int)len, text);
    dsq_manifest *again;
    cr_assert_eq(dsq__manifest_decode(text, len, "app", &again, err, sizeof err), 0, "%s", err);
    cr_assert(dsq__manifest_files_equal(again, m));
    dsq__manifest_release(again);
    free(text);
    free(want);
    dsq__manifest_release(m);
}

Test(manifest, empty_one_encodes)
{
    dsq_manifest *m = dsq__manifest_new("x"), *again;
    cr_assert_not_null(m);
    size_t len;
    char *text = dsq__manifest_encode(m, &len), err[300];
    cr_assert_not_null(text);
    cr_assert_eq(dsq__manifest_decode(text, len, "x", &again, err, sizeof err), 0, "%s", err);
    cr_assert_eq(again->next, 1);
    cr_assert_eq(again->nfiles, 0);
    cr_assert(dsq__manifest_files_equal(again, m));
    dsq__manifest_release(again);
    dsq__manifest_release(m);
    free(text);
}

Test(manifest, the_epoch_is_written_when_set_and_read_as_0_when_absent)
{
    dsq_manifest *m;
    char err[300];
    cr_assert_eq(decode(json_text, "app", &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m->epoch, 0, "written without replication");
    m->epoch = 7;
    size_t len;
    char *text = dsq__manifest_encode(m, &len);
    cr_assert_not_null(text);
    cr_assert_not_null(strstr(text, "\"epoch\":7"), "%s", text);
    dsq_manifest *again;
    cr_assert_eq(dsq__manifest_decode(text, len, "app", &again, err, sizeof err), 0, "%s", err);
    cr_assert_eq(again->epoch, 7);
    dsq__manifest_release(again);
    free(text);
    dsq__manifest_release(m);
    json_t *j = json_loads(json_text, 0, NULL);
    json_object_set_new(j, "epoch", json_string("7"));
    text = json_dumps(j, JSON_COMPACT);
    cr_assert_neq(decode(text, "app", &m, err, sizeof err), 0, "an epoch that is not an integer is refused");
    cr_assert_not_null(strstr(err, "epoch"), "%s", err);
    free(text);
    json_decref(j);
}

Test(manifest, fields_not_known_are_ignored)
{
    json_t *j = json_loads(json_text, 0, NULL);
    json_object_set_new(j, "later", json_string("a field a later version adds"));
    json_object_set_new(json_array_get(json_object_get(j, "files"), 1), "crc", json_integer(5));
    char *text = json_dumps(j, JSON_COMPACT), err[300];
    dsq_manifest *m;
    cr_assert_eq(decode(text, "app", &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m->files[1].crc, 0, "a chunked file's crc means nothing");
    dsq__manifest_release(m);
    free(text);
    json_decref(j);
}

/* json_text with field `key` of files[file] (file -1: of the manifest)
 * set to v, or removed (v NULL): refused, with a message that has `says`. */
static void refused(int file, const char *key, json_t *v, const char *says)
{
    json_t *j = json_loads(json_text, 0, NULL);
    cr_assert_not_null(j);
    json_t *o = file < 0 ? j : json_array_get(json_object_get(j, "files"), (size_t)file);
    if (v != NULL)
        json_object_set_new(o, key, v);
    else
        json_object_del(o, key);
    char *text = json_dumps(j, JSON_COMPACT), err[300];
    static dsq_manifest sentinel;
    dsq_manifest *m = &sentinel;
    cr_assert_eq(decode(text, "app", &m, err, sizeof err), -1, "%s %s: decoded", key, v ? "changed" : "missing");
    cr_assert_null(m);
    cr_assert_not_null(strstr(err, says), "%s %s: \"%s\" does not say \"%s\"", key, v ? "changed" : "missing", err,
                       says);
    free(text);
    json_decref(j);
}

Test(manifest, each_field_missing_is_refused)
{
    static const char *const top[] = {"lsn", "time", "chunk", "next", "files"};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++) {
        char says[64];
        snprintf(says, sizeof says, "%s is missing", top[i]);
        refused(-1, top[i], NULL, says);
    }
    refused(-1, "format", NULL, "format is not \"dosqld-manifest 1\"");
    refused(-1, "db", NULL, "db is not \"app\"");
    static const char *const file[] = {"name", "id", "size", "ino", "mtime", "append", "chunks", "crc"};
    for (size_t i = 0; i < sizeof file / sizeof *file; i++) {
        char says[64];
        snprintf(says, sizeof says, "files[0].%s is missing", file[i]);
        refused(0, file[i], NULL, says);
    }
}

Test(manifest, each_field_of_the_wrong_type_is_refused)
{
    static const char *const ints[] = {"lsn", "time", "chunk", "next"};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        char says[64];
        snprintf(says, sizeof says, "%s is not an integer", ints[i]);
        refused(-1, ints[i], json_string("1"), says);
    }
    refused(-1, "format", json_integer(1), "format is not");
    refused(-1, "db", json_integer(1), "db is not");
    refused(-1, "files", json_object(), "files is not an array");
    static const char *const fints[] = {"id", "size", "ino", "mtime", "crc"};
    for (size_t i = 0; i < sizeof fints / sizeof *fints; i++) {
        char says[64];
        snprintf(says, sizeof says, "files[0].%s is not an integer", fints[i]);
        refused(0, fints[i], json_real(1.5), says);
    }
    refused(0, "name", json_integer(1), "files[0].name is not a string");
    refused(0, "append", json_integer(0), "files[0].append is not a boolean");
    refused(0, "chunks", json_null(), "files[0].chunks is not an array");
    refused(0, "data", json_true(), "files[0].data is not a string");
    refused(1, "chunks", json_pack("[[I]]", (json_int_t)2097162), "files[1].chunks[0] is not [length, crc]");
    refused(1, "chunks", json_pack("[[s,i]]", "2097162", 0), "files[1].chunks[0] is not [length, crc]");
    refused(1, "chunks", json_pack("[i]", 1), "files[1].chunks[0] is not [length, crc]");
}

Test(manifest, values_out_of_range_or_inconsistent_are_refused)
{
    refused(-1, "lsn", json_integer(-1), "lsn is out of range");
    refused(1, "size", json_integer(-5), "files[1].size is out of range");
    refused(0, "crc", json_integer(1ll << 32), "files[0].crc is out of range");
    refused(1, "chunks", json_pack("[[I,I]]", (json_int_t)2097162, (json_int_t)1 << 32),
            "files[1].chunks[0] is out of range");
    refused(1, "chunks", json_pack("[[i,i]]", 10, 0), "files[1].chunks do not add up to its size");
    refused(1, "chunks", json_pack("[[I,i],[I,i]]", INT64_MAX, 0, INT64_MAX, 0),
            "files[1].chunks do not add up to its size");
    refused(0, "chunks", json_pack("[[i,i]]", 26, 0), "files[0].has both data and chunks");
    refused(0, "size", json_integer(DSQ_TIER_INLINE_MAX + 1), "files[0].size is too large");
    refused(2, "name", json_string("../../etc/passwd"), "files[2].name is not a file of a database's directory");
    refused(2, "name", json_string("/etc/passwd"), "files[2].name is not a file of a database's directory");
    refused(2, "name", json_string("ckpt/0123456789012345678901234567890123456789.ckpt"),
            "files[2].name is not a file of a database's directory");
    refused(-1, "format", json_string("dosqld-manifest 2"), "format is not \"dosqld-manifest 1\"");
    refused(-1, "db", json_string("other"), "db is not \"app\"");
}

Test(manifest, damage_is_refused)
{
    size_t len;
    char *obj = object(json_text, &len), err[300];
    dsq_manifest *m;
    obj[40] ^= 1;
    cr_assert_eq(dsq__manifest_decode(obj, len, "app", &m, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "CRC-32 does not match"), "%s", err);
    cr_assert_eq(dsq__manifest_decode(obj, len - 17, "app", &m, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "no \"#crc32\" line"), "%s", err);
    cr_assert_eq(dsq__manifest_decode(obj, 0, "app", &m, err, sizeof err), -1);
    free(obj);
    cr_assert_eq(decode("{\"format\":", "app", &m, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "not JSON"), "%s", err);
    cr_assert_eq(decode("[]", "app", &m, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "not a JSON object"), "%s", err);
    cr_assert_eq(decode("{\"format\":\"dosqld-manifest 1\",\"db\":\"app\",\"files\":[7]}", "app", &m, err, sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "is missing"), "%s", err);
}
