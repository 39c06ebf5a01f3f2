/*
 * adapter_kyoto.c - benchmark adapter for Kyoto Cabinet's HashDB (".kch",
 * through kclangc.h).
 *
 * Cheapest mode: a HashDB file, default tuning, no sync. Durable mode opens
 * with KCOAUTOSYNC (the database is synchronized after every update). Gets
 * copy into a stack buffer with kcdbgetbuf (no allocation); a batch is
 * kcdbsetbulk (non-atomic); a scan is kcdbiterate. The C API exposes no
 * explicit defragmentation, so compaction is not measured.
 */
#include "adapter.h"

#include <kclangc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kc_scan_ctx {
    bench_scan_fn fn;
    void *ctx;
    int stop;
} kc_scan_ctx;

static int kc_fail(KCDB *db, const char *what)
{
    fprintf(stderr, "kyoto: %s: %s (%s)\n", what, kcecodename(kcdbecode(db)), kcdbemsg(db));
    return BENCH_ERROR;
}

static void *kc_open(const char *dir, const bench_open_opts *o)
{
    char path[4096];
    KCDB *db = kcdbnew();
    uint32_t mode = KCOWRITER | KCOCREATE;
    if (!db)
        return NULL;
    if (o->create)
        mode |= KCOTRUNCATE;
    if (o->durable)
        mode |= KCOAUTOSYNC;
    snprintf(path, sizeof path, "%s/kv.kch", dir);
    if (!kcdbopen(db, path, mode)) {
        kc_fail(db, "open");
        kcdbdel(db);
        return NULL;
    }
    return db;
}

static int kc_close(void *p)
{
    KCDB *db = p;
    int ok = kcdbclose(db);
    if (!ok)
        kc_fail(db, "close");
    kcdbdel(db);
    return ok ? 0 : BENCH_ERROR;
}

static void *kc_thread_begin(void *p)
{
    return p;
}

static void kc_thread_end(void *p, void *t)
{
    (void)p;
    (void)t;
}

static int kc_put(void *p, const char *key, size_t klen, const void *val, size_t vlen)
{
    KCDB *db = p;
    return kcdbset(db, key, klen, val, vlen) ? 0 : kc_fail(db, "set");
}

static int kc_put_batch(void *p, const bench_kv *items, size_t n)
{
    KCDB *db = p;
    KCREC *recs = malloc((n ? n : 1) * sizeof(*recs));
    int64_t done;
    if (!recs)
        return BENCH_ERROR;
    for (size_t i = 0; i < n; i++) {
        recs[i].key.buf = (char *)items[i].key;
        recs[i].key.size = items[i].key_len;
        recs[i].value.buf = (char *)items[i].value;
        recs[i].value.size = items[i].value_len;
    }
    done = kcdbsetbulk(db, recs, n, 0);
    free(recs);
    return done == (int64_t)n ? 0 : kc_fail(db, "setbulk");
}

static int kc_get(void *p, const char *key, size_t klen, const void *expect, size_t elen)
{
    KCDB *db = p;
    char buf[64];
    int32_t n = kcdbgetbuf(db, key, klen, buf, sizeof buf);
    if (n < 0)
        return kcdbecode(db) == KCENOREC ? BENCH_NOTFOUND : kc_fail(db, "getbuf");
    return ((size_t)n == elen && memcmp(buf, expect, elen) == 0) ? 0 : BENCH_MISMATCH;
}

static const char *kc_scan_visit(const char *kbuf, size_t ksiz, const char *vbuf, size_t vsiz,
                                 size_t *sp, void *opq)
{
    kc_scan_ctx *s = opq;
    (void)sp;
    if (!s->stop)
        s->stop = s->fn(s->ctx, kbuf, ksiz, vbuf, vsiz);
    return KCVISNOP;
}

static int kc_scan(void *p, bench_scan_fn fn, void *ctx)
{
    KCDB *db = p;
    kc_scan_ctx s = {fn, ctx, 0};
    return kcdbiterate(db, kc_scan_visit, &s, 0) ? 0 : kc_fail(db, "iterate");
}

const bench_adapter bench_adapter_kyoto = {
    .name = "kyoto",
    .open = kc_open,
    .close = kc_close,
    .thread_begin = kc_thread_begin,
    .thread_end = kc_thread_end,
    .put = kc_put,
    .put_batch = kc_put_batch,
    .get = kc_get,
    .get_batch = NULL,
    .scan = kc_scan,
    .compact = NULL,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
