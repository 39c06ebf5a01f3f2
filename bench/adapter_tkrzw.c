/*
 * adapter_tkrzw.c - benchmark adapter for tkrzw's HashDBM (through
 * tkrzw_langc.h).
 *
 * Cheapest mode: a HashDBM file (".tkh"), default tuning, no sync. Durable
 * mode: each put is followed by tkrzw_dbm_synchronize(hard=true). Gets run a
 * read-only record processor that compares the value in place (no copy);
 * a batch is tkrzw_dbm_set_multi; compaction is tkrzw_dbm_rebuild.
 */
#include "adapter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tkrzw_langc.h>

typedef struct tk_db {
    TkrzwDBM *dbm;
    int durable;
} tk_db;

typedef struct tk_check {
    const void *expect;
    size_t elen;
    int res;
} tk_check;

typedef struct tk_scan_ctx {
    bench_scan_fn fn;
    void *ctx;
    int stop;
} tk_scan_ctx;

static int tk_fail(const char *what)
{
    TkrzwStatus st = tkrzw_get_last_status();
    fprintf(stderr, "tkrzw: %s: %s (%s)\n", what, tkrzw_status_code_name(st.code),
            st.message ? st.message : "");
    return BENCH_ERROR;
}

static void *tk_open(const char *dir, const bench_open_opts *o)
{
    char path[4096];
    tk_db *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    snprintf(path, sizeof path, "%s/kv.tkh", dir);
    d->durable = o->durable;
    d->dbm = tkrzw_dbm_open(path, true, o->create ? "truncate=true" : "");
    if (!d->dbm) {
        tk_fail("open");
        free(d);
        return NULL;
    }
    return d;
}

static int tk_close(void *p)
{
    tk_db *d = p;
    bool ok = tkrzw_dbm_close(d->dbm);
    free(d);
    return ok ? 0 : tk_fail("close");
}

static void *tk_thread_begin(void *p)
{
    return p;
}

static void tk_thread_end(void *p, void *t)
{
    (void)p;
    (void)t;
}

static int tk_put(void *p, const char *key, size_t klen, const void *val, size_t vlen)
{
    tk_db *d = p;
    if (!tkrzw_dbm_set(d->dbm, key, (int32_t)klen, val, (int32_t)vlen, true))
        return tk_fail("set");
    if (d->durable && !tkrzw_dbm_synchronize(d->dbm, true, NULL, NULL, ""))
        return tk_fail("synchronize");
    return 0;
}

static int tk_put_batch(void *p, const bench_kv *items, size_t n)
{
    tk_db *d = p;
    TkrzwKeyValuePair *recs = malloc((n ? n : 1) * sizeof(*recs));
    bool ok;
    if (!recs)
        return BENCH_ERROR;
    for (size_t i = 0; i < n; i++) {
        recs[i].key_ptr = items[i].key;
        recs[i].key_size = (int32_t)items[i].key_len;
        recs[i].value_ptr = items[i].value;
        recs[i].value_size = (int32_t)items[i].value_len;
    }
    ok = tkrzw_dbm_set_multi(d->dbm, recs, (int32_t)n, true);
    free(recs);
    return ok ? 0 : tk_fail("set_multi");
}

static const char *tk_check_proc(void *arg, const char *kp, int32_t ks, const char *vp,
                                 int32_t vs, int32_t *new_size)
{
    tk_check *c = arg;
    (void)kp;
    (void)ks;
    (void)new_size;
    if (!vp)
        c->res = BENCH_NOTFOUND;
    else if ((size_t)vs != c->elen || memcmp(vp, c->expect, c->elen) != 0)
        c->res = BENCH_MISMATCH;
    else
        c->res = 0;
    return TKRZW_REC_PROC_NOOP;
}

static int tk_get(void *p, const char *key, size_t klen, const void *expect, size_t elen)
{
    tk_db *d = p;
    tk_check c = {expect, elen, BENCH_ERROR};
    if (!tkrzw_dbm_process(d->dbm, key, (int32_t)klen, tk_check_proc, &c, false))
        return tk_fail("process");
    return c.res;
}

static const char *tk_scan_proc(void *arg, const char *kp, int32_t ks, const char *vp,
                                int32_t vs, int32_t *new_size)
{
    tk_scan_ctx *s = arg;
    (void)new_size;
    if (vp && kp && !s->stop)
        s->stop = s->fn(s->ctx, kp, (size_t)ks, vp, (size_t)vs);
    return TKRZW_REC_PROC_NOOP;
}

static int tk_scan(void *p, bench_scan_fn fn, void *ctx)
{
    tk_db *d = p;
    tk_scan_ctx s = {fn, ctx, 0};
    if (!tkrzw_dbm_process_each(d->dbm, tk_scan_proc, &s, false))
        return tk_fail("process_each");
    return 0;
}

static int tk_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    tk_db *d = p;
    snprintf(measure_dir, cap, "%s", dir);
    return tkrzw_dbm_rebuild(d->dbm, "") ? 0 : tk_fail("rebuild");
}

const bench_adapter bench_adapter_tkrzw = {
    .name = "tkrzw",
    .open = tk_open,
    .close = tk_close,
    .thread_begin = tk_thread_begin,
    .thread_end = tk_thread_end,
    .put = tk_put,
    .put_batch = tk_put_batch,
    .get = tk_get,
    .get_batch = NULL,
    .scan = tk_scan,
    .compact = tk_compact,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
