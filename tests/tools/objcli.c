/* objcli — engine/tier/objstore from the command line, for the object-store
 * integration tests (tests/integration/objstore.test.mjs).
 *
 *   objcli [options] URL put KEY FILE       (FILE "-": stdin)
 *   objcli [options] URL putnew KEY FILE    (only if absent)
 *   objcli [options] URL get KEY [OFF [LEN]]  (bytes to stdout)
 *   objcli [options] URL head KEY           (prints the size)
 *   objcli [options] URL list [PREFIX]      (prints "KEY SIZE" lines)
 *   objcli [options] URL delete KEY
 *   objcli [options] URL par N SIZE         (N puts at once, then N gets, compared)
 *   objcli [options] URL getbench KEY N     (N GETs one after another: latency, MB/s)
 *   objcli [options] URL putbench KEY N SIZE  (N PUTs of SIZE bytes one after another)
 *
 * Options: -e ENDPOINT -r REGION -k ACCESS_KEY -s SECRET_KEY -V (virtual
 * host style) -t TIMEOUT_MS -R RETRIES (4) -b BACKOFF_MS -i MAX_INFLIGHT.
 * Exit status: 0 ok, 2 not found, 3 exists, 4 range, 5 failed, 6 timed
 * out, 7 cancelled, 1 usage; stderr says "STATUS: MSG (attempts=N http=C)". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "engine/tier/objstore.h"

static int usage(void)
{
    fprintf(stderr, "usage: objcli [-e ENDPOINT] [-r REGION] [-k KEY] [-s SECRET] [-V] [-t MS] [-R N] [-b MS] "
                    "[-i N] URL put|putnew|get|head|list|delete|par|getbench|putbench ...\n");
    return 1;
}

static int report(const dsq_obj_req *r)
{
    if (r->status != DSQ_OBJ_OK)
        fprintf(stderr, "%s: %s (attempts=%u http=%d)\n", dsq_obj_status_name(r->status), r->msg, r->attempts,
                r->http_status);
    else
        fprintf(stderr, "ok (attempts=%u http=%d)\n", r->attempts, r->http_status);
    return r->status == DSQ_OBJ_OK ? 0 : 1 + (int)r->status;
}

static int read_all(const char *path, dsq_buf *b)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return -1;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (dsq_buf_append(b, tmp, n) != 0)
            return -1;
    if (f != stdin)
        fclose(f);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* N GETs (or PUTs of `size` bytes) of one object, one after another
 * (bench/tiering's raw figures). */
static int opbench(dsq_obj *o, dsq_obj_op op, const char *key, int n, size_t size)
{
    uint64_t *ns = calloc((size_t)(n > 0 ? n : 1), sizeof *ns), bytes = 0, total = 0;
    char *body = op == DSQ_OBJ_PUT ? calloc(1, size ? size : 1) : NULL;
    for (int i = 0; i < n; i++) {
        dsq_obj_req r;
        memset(&r, 0, sizeof r);
        r.op = op;
        snprintf(r.key, sizeof r.key, "%s", key);
        r.body = body;
        r.body_len = op == DSQ_OBJ_PUT ? size : 0;
        uint64_t t0 = dsq_now_ns();
        if (dsq_obj_run(o, &r) != DSQ_OBJ_OK) {
            int rc = report(&r);
            dsq_obj_req_clear(&r);
            free(ns);
            free(body);
            return rc;
        }
        ns[i] = dsq_now_ns() - t0;
        total += ns[i];
        bytes += op == DSQ_OBJ_PUT ? size : r.data.len;
        dsq_obj_req_clear(&r);
    }
    qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
    printf("%s=%d bytes=%llu p50_ms=%.3f p99_ms=%.3f mean_ms=%.3f mb_s=%.1f\n", op == DSQ_OBJ_PUT ? "puts" : "gets", n,
           (unsigned long long)bytes, ns[n / 2] / 1e6, ns[(size_t)((n - 1) * 0.99)] / 1e6, total / 1e6 / n,
           total ? bytes / (total / 1e9) / 1e6 : 0.0);
    free(ns);
    free(body);
    return 0;
}

/* N puts at once, then N gets at once, each object's bytes compared. */
static int par(dsq_obj *o, int n, size_t size)
{
    dsq_obj_req *rs = calloc((size_t)n, sizeof *rs);
    char **bodies = calloc((size_t)n, sizeof *bodies);
    for (int i = 0; i < n; i++) {
        bodies[i] = malloc(size ? size : 1);
        for (size_t k = 0; k < size; k++)
            bodies[i][k] = (char)('a' + (i * 7 + (int)k) % 26);
    }
    int rc = 0;
    for (int phase = 0; phase < 2 && rc == 0; phase++) {
        for (int i = 0; i < n; i++) {
            dsq_obj_req *r = &rs[i];
            r->op = phase == 0 ? DSQ_OBJ_PUT : DSQ_OBJ_GET;
            snprintf(r->key, sizeof r->key, "par/%04d", i);
            r->body = bodies[i];
            r->body_len = size;
        }
        /* submit all, then wait for each */
        for (int i = 0; i < n; i++)
            dsq_obj_submit(o, &rs[i]);
        while (dsq_obj_pending(o) > 0)
            usleep(1000);
        for (int i = 0; i < n && rc == 0; i++) {
            if (rs[i].status != DSQ_OBJ_OK) {
                rc = report(&rs[i]);
            } else if (phase == 1 && (rs[i].data.len != size || memcmp(rs[i].data.data, bodies[i], size) != 0)) {
                fprintf(stderr, "par/%04d: read back %zu bytes that differ\n", i, rs[i].data.len);
                rc = 5;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        dsq_obj_req_clear(&rs[i]);
        free(bodies[i]);
    }
    free(rs);
    free(bodies);
    if (rc == 0)
        printf("%d objects of %zu bytes written and read back\n", n, size);
    return rc;
}

int main(int argc, char **argv)
{
    dsq_obj_cfg cfg = {.retries = 4};
    int opt;
    while ((opt = getopt(argc, argv, "e:r:k:s:Vt:R:b:i:")) != -1) {
        switch (opt) {
        case 'e': cfg.endpoint = optarg; break;
        case 'r': cfg.region = optarg; break;
        case 'k': cfg.access_key = optarg; break;
        case 's': cfg.secret_key = optarg; break;
        case 'V': cfg.virtual_host = true; break;
        case 't': cfg.timeout_ms = (unsigned)atoi(optarg); break;
        case 'R': cfg.retries = (unsigned)atoi(optarg); break;
        case 'b': cfg.backoff_ms = (unsigned)atoi(optarg); break;
        case 'i': cfg.max_inflight = (unsigned)atoi(optarg); break;
        default: return usage();
        }
    }
    if (argc - optind < 2)
        return usage();
    cfg.url = argv[optind];
    const char *cmd = argv[optind + 1];
    char **args = argv + optind + 2;
    int nargs = argc - optind - 2;
    char err[512];
    dsq_obj *o = dsq_obj_open(&cfg, err, sizeof err);
    if (o == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    dsq_obj_req r;
    memset(&r, 0, sizeof r);
    dsq_buf body = DSQ_BUF_INIT;
    int rc;
    if ((strcmp(cmd, "put") == 0 || strcmp(cmd, "putnew") == 0) && nargs == 2) {
        if (read_all(args[1], &body) != 0) {
            perror(args[1]);
            dsq_obj_close(o);
            return 1;
        }
        r.op = DSQ_OBJ_PUT;
        r.if_absent = cmd[3] == 'n';
        r.body = body.data;
        r.body_len = body.len;
    } else if (strcmp(cmd, "get") == 0 && nargs >= 1 && nargs <= 3) {
        r.op = DSQ_OBJ_GET;
        r.off = nargs > 1 ? strtoull(args[1], NULL, 10) : 0;
        r.len = nargs > 2 ? strtoull(args[2], NULL, 10) : 0;
    } else if (strcmp(cmd, "head") == 0 && nargs == 1) {
        r.op = DSQ_OBJ_HEAD;
    } else if (strcmp(cmd, "list") == 0 && nargs <= 1) {
        r.op = DSQ_OBJ_LIST;
    } else if (strcmp(cmd, "delete") == 0 && nargs == 1) {
        r.op = DSQ_OBJ_DELETE;
    } else if (strcmp(cmd, "getbench") == 0 && nargs == 2 && atoi(args[1]) > 0) {
        rc = opbench(o, DSQ_OBJ_GET, args[0], atoi(args[1]), 0);
        dsq_obj_close(o);
        return rc;
    } else if (strcmp(cmd, "putbench") == 0 && nargs == 3 && atoi(args[1]) > 0) {
        rc = opbench(o, DSQ_OBJ_PUT, args[0], atoi(args[1]), (size_t)strtoull(args[2], NULL, 10));
        dsq_obj_close(o);
        return rc;
    } else if (strcmp(cmd, "par") == 0 && nargs == 2) {
        rc = par(o, atoi(args[0]), (size_t)strtoull(args[1], NULL, 10));
        dsq_obj_close(o);
        return rc;
    } else {
        dsq_obj_close(o);
        return usage();
    }
    if (nargs > 0)
        snprintf(r.key, sizeof r.key, "%s", args[0]);
    dsq_obj_run(o, &r);
    rc = report(&r);
    if (rc == 0) {
        if (r.op == DSQ_OBJ_GET)
            fwrite(r.data.data, 1, r.data.len, stdout);
        else if (r.op == DSQ_OBJ_HEAD)
            printf("%llu\n", (unsigned long long)r.size);
        else if (r.op == DSQ_OBJ_LIST)
            for (size_t i = 0; i < r.nitems; i++)
                printf("%s %llu\n", r.items[i].key, (unsigned long long)r.items[i].size);
    }
    dsq_obj_req_clear(&r);
    dsq_buf_free(&body);
    dsq_obj_close(o);
    return rc;
}
