/* vschema — a VSchema parsed and checked (vschema.h). */
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "sharding/vschema.h"

/* The reason, after the path of the value at fault. */
typedef struct ctx {
    char *err;
    size_t errlen;
} ctx;

static int fail(ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A name of a keyspace, vindex, table or column (vschema.h). */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= DSQ_VS_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

/* Every key of object o is one of keys (NULL-terminated). */
static int only_keys(ctx *x, const char *path, json_t *o, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool known = false;
        for (const char *const *p = keys; *p != NULL && !known; p++)
            known = strcmp(*p, k) == 0;
        if (!known)
            return fail(x, "%s: unknown key \"%.64s\"", path, k);
    }
    return 0;
}

static int parse_vindex(ctx *x, const char *path, json_t *o, dsq_vs_keyspace *ks, dsq_vs_vindex *out)
{
    static const char *const keys[] = {"type", "boundaries", "virtual_nodes", NULL};
    static const char *const lookup_keys[] = {"type", "table", "from", "to", NULL};
    if (!json_is_object(o))
        return fail(x, "%s: a vindex is an object ({\"type\": ...})", path);
    const char *type = json_string_value(json_object_get(o, "type"));
    if (type != NULL && strcmp(type, "lookup_unique") == 0) {
        if (only_keys(x, path, o, lookup_keys) != 0)
            return -1;
        static const char *const fields[] = {"table", "from", "to"};
        char *dst[] = {out->table, out->from, out->to};
        for (size_t i = 0; i < 3; i++) {
            const char *v = json_string_value(json_object_get(o, fields[i]));
            if (v == NULL || !name_ok(v))
                return fail(x, "%s.%s: a lookup vindex needs the name of its %s", path, fields[i],
                            i == 0 ? "lookup table" : i == 1 ? "table's column of the values looked up"
                                                             : "table's column of the owners' shard keys");
            snprintf(dst[i], DSQ_VS_NAME_MAX, "%s", v);
        }
        out->lookup = true;
        return 0; /* (the table is checked once every table is read) */
    }
    if (only_keys(x, path, o, keys) != 0)
        return -1;
    int t = type != NULL ? dsq_vindex_type_parse(type) : -1;
    if (t < 0)
        return fail(x, "%s.type: one of \"hash\", \"fnv1a\", \"consistent_hash\", \"range\", \"lookup_unique\"%s%.64s%s", path,
                    type ? " (not \"" : "", type ? type : "", type ? "\")" : "");
    dsq_vindex_spec spec = {.type = (dsq_vindex_type)t};
    json_t *b = json_object_get(o, "boundaries");
    json_t *vn = json_object_get(o, "virtual_nodes");
    if (t != DSQ_VINDEX_RANGE && b != NULL)
        return fail(x, "%s.boundaries: only a range vindex has boundaries", path);
    if (t != DSQ_VINDEX_CONSISTENT && vn != NULL)
        return fail(x, "%s.virtual_nodes: only a consistent_hash vindex has virtual_nodes", path);
    int64_t *bounds = NULL;
    if (t == DSQ_VINDEX_RANGE) {
        if (!json_is_array(b))
            return fail(x, "%s.boundaries: a range vindex needs an array of integers (one fewer than the shards)",
                        path);
        size_t n = json_array_size(b);
        if ((bounds = malloc((n ? n : 1) * sizeof *bounds)) == NULL)
            return fail(x, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(b, i);
            if (!json_is_integer(e)) {
                free(bounds);
                return fail(x, "%s.boundaries[%zu]: an integer", path, i);
            }
            bounds[i] = (int64_t)json_integer_value(e);
        }
        spec.boundaries = bounds;
        spec.nboundaries = n;
    }
    if (vn != NULL) {
        if (!json_is_integer(vn) || json_integer_value(vn) < 1 || json_integer_value(vn) > DSQ_VINDEX_VNODES_MAX)
            return fail(x, "%s.virtual_nodes: an integer from 1 to %d", path, DSQ_VINDEX_VNODES_MAX);
        spec.virtual_nodes = (unsigned)json_integer_value(vn);
    }
    const char **names = malloc(ks->nshards * sizeof *names);
    if (names == NULL) {
        free(bounds);
        return fail(x, "out of memory");
    }
    for (size_t i = 0; i < ks->nshards; i++)
        names[i] = ks->shards[i];
    char why[300];
    out->v = dsq_vindex_new(&spec, names, ks->nshards, why, sizeof why);
    free(names);
    free(bounds);
    if (out->v == NULL)
        return fail(x, "%s: %s", path, why);
    return 0;
}

static int parse_table(ctx *x, const char *path, json_t *o, const dsq_vs_keyspace *ks, dsq_vs_table *out)
{
    static const char *const keys[] = {"type", "column", "vindex", "shard", "start", "cache", "auto_increment",
                                       "lookups", NULL};
    if (!json_is_object(o))
        return fail(x, "%s: a table is an object", path);
    if (only_keys(x, path, o, keys) != 0)
        return -1;
    json_t *jt = json_object_get(o, "type");
    const char *type = jt != NULL ? json_string_value(jt) : "sharded";
    const char *column = json_string_value(json_object_get(o, "column"));
    const char *vindex = json_string_value(json_object_get(o, "vindex"));
    const char *shard = json_string_value(json_object_get(o, "shard"));
    bool has_col = json_object_get(o, "column") != NULL, has_vdx = json_object_get(o, "vindex") != NULL,
         has_shard = json_object_get(o, "shard") != NULL;
    if (type == NULL)
        return fail(x, "%s.type: \"sharded\", \"reference\", \"unsharded\" or \"sequence\"", path);
    if (strcmp(type, "sequence") != 0 &&
        (json_object_get(o, "start") != NULL || json_object_get(o, "cache") != NULL))
        return fail(x, "%s.%s: only a sequence has one", path, json_object_get(o, "start") ? "start" : "cache");
    json_t *ai = json_object_get(o, "auto_increment");
    if (ai != NULL) {
        static const char *const ai_keys[] = {"column", "sequence", NULL};
        char p[700];
        snprintf(p, sizeof p, "%s.auto_increment", path);
        if (strcmp(type, "sequence") == 0)
            return fail(x, "%s: a sequence has no auto_increment", p);
        if (!json_is_object(ai))
            return fail(x, "%s: an object {\"column\", \"sequence\"}", p);
        if (only_keys(x, p, ai, ai_keys) != 0)
            return -1;
        const char *c = json_string_value(json_object_get(ai, "column"));
        const char *sq = json_string_value(json_object_get(ai, "sequence"));
        if (c == NULL || !name_ok(c))
            return fail(x, "%s.column: the name of the column to fill", p);
        if (sq == NULL || !name_ok(sq))
            return fail(x, "%s.sequence: the name of a sequence of this keyspace", p);
        snprintf(out->auto_column, sizeof out->auto_column, "%s", c);
        /* (the sequence is looked up once every table is read) */
        snprintf(out->auto_seq_name, sizeof out->auto_seq_name, "%s", sq);
    }
    if (strcmp(type, "sequence") == 0) {
        out->type = DSQ_VS_SEQUENCE;
        if (has_col || has_vdx)
            return fail(x, "%s.%s: a sequence has no %s", path, has_col ? "column" : "vindex",
                        has_col ? "column" : "vindex");
        out->shard = 0;
        if (has_shard) {
            size_t k = 0;
            while (shard != NULL && k < ks->nshards && strcmp(ks->shards[k], shard) != 0)
                k++;
            if (shard == NULL || k == ks->nshards)
                return fail(x, "%s.shard: not a shard of keyspace %s", path, ks->name);
            out->shard = k;
        }
        json_t *st = json_object_get(o, "start"), *ca = json_object_get(o, "cache");
        if (st != NULL && !json_is_integer(st))
            return fail(x, "%s.start: a whole number", path);
        if (ca != NULL && (!json_is_integer(ca) || json_integer_value(ca) < 1 ||
                           json_integer_value(ca) > DSQ_VS_SEQ_CACHE_MAX))
            return fail(x, "%s.cache: a whole number from 1 to %d", path, DSQ_VS_SEQ_CACHE_MAX);
        out->seq_start = st ? json_integer_value(st) : 1;
        out->seq_cache = ca ? json_integer_value(ca) : DSQ_VS_SEQ_CACHE_DEFAULT;
        return 0;
    }
    if (strcmp(type, "sharded") == 0) {
        out->type = DSQ_VS_SHARDED;
        if (has_shard)
            return fail(x, "%s.shard: only an unsharded table names a shard", path);
        if (column == NULL || !name_ok(column))
            return fail(x, "%s.column: a sharded table needs the name of the column that places its rows", path);
        if (vindex == NULL)
            return fail(x, "%s.vindex: a sharded table needs the name of one of the keyspace's vindexes", path);
        size_t k = 0;
        while (k < ks->nvindexes && strcmp(ks->vindexes[k].name, vindex) != 0)
            k++;
        if (k == ks->nvindexes)
            return fail(x, "%s.vindex: keyspace %s has no vindex \"%.64s\"", path, ks->name, vindex);
        if (ks->vindexes[k].lookup)
            return fail(x, "%s.vindex: \"%.64s\" is a lookup vindex: a table's rows are placed by a hash, range "
                           "or consistent_hash vindex (a lookup is for its \"lookups\")",
                        path, vindex);
        snprintf(out->column, sizeof out->column, "%s", column);
        out->vindex = k;
        json_t *lk = json_object_get(o, "lookups");
        if (lk != NULL) {
            if (!json_is_array(lk) || json_array_size(lk) > DSQ_VS_LOOKUPS_MAX)
                return fail(x, "%s.lookups: an array of at most %d {\"column\", \"vindex\"}", path,
                            DSQ_VS_LOOKUPS_MAX);
            for (size_t i = 0; i < json_array_size(lk); i++) {
                json_t *e = json_array_get(lk, i);
                const char *c = json_string_value(json_object_get(e, "column"));
                const char *v = json_string_value(json_object_get(e, "vindex"));
                size_t j = 0;
                while (v != NULL && j < ks->nvindexes && strcmp(ks->vindexes[j].name, v) != 0)
                    j++;
                if (!json_is_object(e) || json_object_size(e) != 2 || c == NULL || !name_ok(c) || v == NULL)
                    return fail(x, "%s.lookups[%zu]: {\"column\", \"vindex\"}", path, i);
                if (j == ks->nvindexes || !ks->vindexes[j].lookup)
                    return fail(x, "%s.lookups[%zu].vindex: keyspace %s has no lookup vindex \"%.64s\"", path, i,
                                ks->name, v);
                snprintf(out->lookups[i].column, sizeof out->lookups[i].column, "%s", c);
                out->lookups[i].vindex = j;
                out->nlookups++;
            }
        }
    } else if (strcmp(type, "reference") == 0 || strcmp(type, "unsharded") == 0) {
        bool ref = type[0] == 'r';
        out->type = ref ? DSQ_VS_REFERENCE : DSQ_VS_UNSHARDED;
        if (has_col || has_vdx)
            return fail(x, "%s.%s: only a sharded table has a %s", path, has_col ? "column" : "vindex",
                        has_col ? "column" : "vindex");
        if (json_object_get(o, "lookups") != NULL)
            return fail(x, "%s.lookups: only a sharded table has lookups", path);
        if (ref && has_shard)
            return fail(x, "%s.shard: a reference table is on every shard", path);
        if (!ref) {
            if (shard == NULL)
                return fail(x, "%s.shard: an unsharded table needs the name of the shard it lives on", path);
            size_t k = 0;
            while (k < ks->nshards && strcmp(ks->shards[k], shard) != 0)
                k++;
            if (k == ks->nshards)
                return fail(x, "%s.shard: \"%.64s\" is not a shard of keyspace %s", path, shard, ks->name);
            out->shard = k;
        }
    } else {
        return fail(x, "%s.type: \"sharded\", \"reference\", \"unsharded\" or \"sequence\" (not \"%.64s\")",
                    path, type);
    }
    return 0;
}

static int parse_keyspace(ctx *x, const char *name, json_t *o, const dsq_vschema *done, dsq_vs_keyspace *ks)
{
    static const char *const keys[] = {"shards", "vindexes", "tables", NULL};
    char path[400];
    snprintf(path, sizeof path, "keyspaces.%s", name);
    if (!name_ok(name))
        return fail(x, "%s: a keyspace's name is letters, digits and '_' (1 to 128, not starting with a digit)",
                    path);
    snprintf(ks->name, sizeof ks->name, "%s", name);
    if (!json_is_object(o))
        return fail(x, "%s: a keyspace is an object", path);
    if (only_keys(x, path, o, keys) != 0)
        return -1;
    json_t *shards = json_object_get(o, "shards"), *vindexes = json_object_get(o, "vindexes"),
           *tables = json_object_get(o, "tables");
    if (!json_is_array(shards) || json_array_size(shards) == 0)
        return fail(x, "%s.shards: an array of one or more database names", path);
    ks->nshards = json_array_size(shards);
    if ((ks->shards = calloc(ks->nshards, sizeof *ks->shards)) == NULL)
        return fail(x, "out of memory");
    for (size_t i = 0; i < ks->nshards; i++) {
        const char *s = json_string_value(json_array_get(shards, i));
        if (s == NULL || !dsq_db_name_valid(s))
            return fail(x, "%s.shards[%zu]: a database name", path, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(ks->shards[j], s) == 0)
                return fail(x, "%s.shards[%zu]: \"%s\" is named twice", path, i, s);
        for (size_t k = 0; k < done->nkeyspaces; k++)
            for (size_t j = 0; j < done->keyspaces[k].nshards; j++)
                if (strcmp(done->keyspaces[k].shards[j], s) == 0)
                    return fail(x, "%s.shards[%zu]: \"%s\" is a shard of keyspace %s already", path, i, s,
                                done->keyspaces[k].name);
        snprintf(ks->shards[i], sizeof ks->shards[i], "%s", s);
    }
    if (vindexes != NULL && !json_is_object(vindexes))
        return fail(x, "%s.vindexes: an object of vindexes by name", path);
    if ((ks->vindexes = calloc(json_object_size(vindexes) + 1, sizeof *ks->vindexes)) == NULL)
        return fail(x, "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(vindexes, k, v) {
        char p[600];
        snprintf(p, sizeof p, "%s.vindexes.%.128s", path, k);
        if (!name_ok(k))
            return fail(x, "%s: a vindex's name is letters, digits and '_' (1 to 128, not starting with a digit)", p);
        dsq_vs_vindex *vx = &ks->vindexes[ks->nvindexes];
        snprintf(vx->name, sizeof vx->name, "%s", k);
        if (parse_vindex(x, p, v, ks, vx) != 0)
            return -1;
        ks->nvindexes++;
    }
    if (tables != NULL && !json_is_object(tables))
        return fail(x, "%s.tables: an object of tables by name", path);
    if ((ks->tables = calloc(json_object_size(tables) + 1, sizeof *ks->tables)) == NULL)
        return fail(x, "out of memory");
    json_object_foreach(tables, k, v) {
        char p[600];
        snprintf(p, sizeof p, "%s.tables.%.128s", path, k);
        if (!name_ok(k))
            return fail(x, "%s: a table's name is letters, digits and '_' (1 to 128, not starting with a digit)", p);
        if (dsq_vs_table_find(ks, k) != NULL)
            return fail(x, "%s: a table of that name (without regard to case) is there already", p);
        dsq_vs_table *t = &ks->tables[ks->ntables];
        snprintf(t->name, sizeof t->name, "%s", k);
        if (parse_table(x, p, v, ks, t) != 0)
            return -1;
        ks->ntables++;
    }
    /* Each lookup vindex's table: a sharded table of the keyspace, sharded
     * by the column it looks values up in. */
    for (size_t i = 0; i < ks->nvindexes; i++) {
        dsq_vs_vindex *vx = &ks->vindexes[i];
        if (!vx->lookup)
            continue;
        const dsq_vs_table *lt = dsq_vs_table_find(ks, vx->table);
        if (lt == NULL || lt->type != DSQ_VS_SHARDED || strcasecmp(lt->column, vx->from) != 0)
            return fail(x, "%s.vindexes.%s.table: \"%s\" must be a sharded table of keyspace %s, sharded by its "
                           "column \"%s\"",
                        path, vx->name, vx->table, ks->name, vx->from);
        if (lt->nlookups > 0)
            return fail(x, "%s.vindexes.%s.table: a lookup table has no lookups of its own", path, vx->name);
        vx->table_idx = (size_t)(lt - ks->tables);
    }
    /* Each auto_increment's sequence, now that every table is known. */
    for (size_t i = 0; i < ks->ntables; i++) {
        dsq_vs_table *t = &ks->tables[i];
        if (t->auto_column[0] == '\0')
            continue;
        const dsq_vs_table *sq = dsq_vs_table_find(ks, t->auto_seq_name);
        if (sq == NULL || sq->type != DSQ_VS_SEQUENCE)
            return fail(x, "%s.tables.%s.auto_increment.sequence: keyspace %s has no sequence \"%s\"", path,
                        t->name, ks->name, t->auto_seq_name);
        t->auto_seq = (size_t)(sq - ks->tables);
    }
    return 0;
}

int dsq_vschema_parse(const char *text, size_t len, dsq_vschema **out, char *err, size_t errlen)
{
    ctx x = {.err = err, .errlen = errlen};
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        fail(&x, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return -1;
    }
    static const char *const keys[] = {"keyspaces", NULL};
    json_t *kss = json_object_get(doc, "keyspaces");
    dsq_vschema *vs = calloc(1, sizeof *vs);
    int rc = -1;
    if (vs == NULL) {
        fail(&x, "out of memory");
    } else if (!json_is_object(doc)) {
        fail(&x, "a VSchema is an object: {\"keyspaces\": {...}}");
    } else if (only_keys(&x, "(top)", doc, keys) != 0) {
        /* (said) */
    } else if (!json_is_object(kss)) {
        fail(&x, "keyspaces: an object of keyspaces by name");
    } else if ((vs->keyspaces = calloc(json_object_size(kss) + 1, sizeof *vs->keyspaces)) == NULL) {
        fail(&x, "out of memory");
    } else {
        rc = 0;
        const char *k;
        json_t *v;
        json_object_foreach(kss, k, v) {
            if (parse_keyspace(&x, k, v, vs, &vs->keyspaces[vs->nkeyspaces]) != 0) {
                vs->nkeyspaces++; /* (freed with the rest) */
                rc = -1;
                break;
            }
            vs->nkeyspaces++;
        }
    }
    json_decref(doc);
    if (rc != 0) {
        dsq_vschema_free(vs);
        return -1;
    }
    *out = vs;
    return 0;
}

void dsq_vschema_free(dsq_vschema *vs)
{
    if (vs == NULL)
        return;
    for (size_t i = 0; i < vs->nkeyspaces; i++) {
        dsq_vs_keyspace *ks = &vs->keyspaces[i];
        for (size_t j = 0; ks->vindexes != NULL && j <= ks->nvindexes; j++)
            dsq_vindex_free(ks->vindexes[j].v); /* (j == n: one being parsed, or NULL) */
        free(ks->vindexes);
        free(ks->tables);
        free(ks->shards);
    }
    free(vs->keyspaces);
    free(vs);
}

const dsq_vs_keyspace *dsq_vschema_keyspace(const dsq_vschema *vs, const char *name)
{
    for (size_t i = 0; i < vs->nkeyspaces; i++)
        if (strcmp(vs->keyspaces[i].name, name) == 0)
            return &vs->keyspaces[i];
    return NULL;
}

const dsq_vs_table *dsq_vs_table_find(const dsq_vs_keyspace *ks, const char *name)
{
    for (size_t i = 0; i < ks->ntables; i++)
        if (strcasecmp(ks->tables[i].name, name) == 0)
            return &ks->tables[i];
    return NULL;
}
