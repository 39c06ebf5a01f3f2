/*
 * adapter_rocksdb.c - benchmark adapter for RocksDB (through rocksdb/c.h).
 *
 * Cheapest mode: default options plus create_if_missing, writes with
 * sync=false (the WAL is written, not fsynced). Durable mode: sync=true,
 * which RocksDB group-commits across writer threads. Gets use
 * rocksdb_get_pinned (no value copy); a batch is one rocksdb_writebatch;
 * compaction is rocksdb_compact_range over the whole key space.
 */
#include "adapter.h"

#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rdb_db {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
} rdb_db;

static int rdb_fail(const char *what, char *err)
{
    fprintf(stderr, "rocksdb: %s: %s\n", what, err ? err : "?");
    rocksdb_free(err);
    return BENCH_ERROR;
}

static void *rdb_open(const char *dir, const bench_open_opts *o)
{
    rdb_db *d = calloc(1, sizeof(*d));
    char *err = NULL;
    if (!d)
        return NULL;
    d->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(d->opts, 1);
    d->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(d->wopts, o->durable ? 1 : 0);
    d->ropts = rocksdb_readoptions_create();
    d->db = rocksdb_open(d->opts, dir, &err);
    if (!d->db) {
        rdb_fail("open", err);
        rocksdb_writeoptions_destroy(d->wopts);
        rocksdb_readoptions_destroy(d->ropts);
        rocksdb_options_destroy(d->opts);
        free(d);
        return NULL;
    }
    return d;
}

static int rdb_close(void *p)
{
    rdb_db *d = p;
    rocksdb_close(d->db);
    rocksdb_writeoptions_destroy(d->wopts);
    rocksdb_readoptions_destroy(d->ropts);
    rocksdb_options_destroy(d->opts);
    free(d);
    return 0;
}

static void *rdb_thread_begin(void *p)
{
    return p;
}

static void rdb_thread_end(void *p, void *t)
{
    (void)p;
    (void)t;
}

static int rdb_put(void *p, const char *key, size_t klen, const void *val, size_t vlen)
{
    rdb_db *d = p;
    char *err = NULL;
    rocksdb_put(d->db, d->wopts, key, klen, val, vlen, &err);
    return err ? rdb_fail("put", err) : 0;
}

static int rdb_put_batch(void *p, const bench_kv *items, size_t n)
{
    rdb_db *d = p;
    char *err = NULL;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++)
        rocksdb_writebatch_put(wb, items[i].key, items[i].key_len, items[i].value,
                               items[i].value_len);
    rocksdb_write(d->db, d->wopts, wb, &err);
    rocksdb_writebatch_destroy(wb);
    return err ? rdb_fail("write", err) : 0;
}

static int rdb_get(void *p, const char *key, size_t klen, const void *expect, size_t elen)
{
    rdb_db *d = p;
    char *err = NULL;
    size_t vlen;
    int res = 0;
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned(d->db, d->ropts, key, klen, &err);
    if (err)
        return rdb_fail("get", err);
    if (!ps)
        return BENCH_NOTFOUND;
    const char *v = rocksdb_pinnableslice_value(ps, &vlen);
    if (!v)
        res = BENCH_NOTFOUND;
    else if (vlen != elen || memcmp(v, expect, elen) != 0)
        res = BENCH_MISMATCH;
    rocksdb_pinnableslice_destroy(ps);
    return res;
}

static int rdb_scan(void *p, bench_scan_fn fn, void *ctx)
{
    rdb_db *d = p;
    char *err = NULL;
    size_t kl, vl;
    rocksdb_iterator_t *it = rocksdb_create_iterator(d->db, d->ropts);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (fn(ctx, k, kl, v, vl))
            break;
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? rdb_fail("iterate", err) : 0;
}

static int rdb_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    rdb_db *d = p;
    snprintf(measure_dir, cap, "%s", dir);
    rocksdb_compact_range(d->db, NULL, 0, NULL, 0);
    return 0;
}

const bench_adapter bench_adapter_rocksdb = {
    .name = "rocksdb",
    .open = rdb_open,
    .close = rdb_close,
    .thread_begin = rdb_thread_begin,
    .thread_end = rdb_thread_end,
    .put = rdb_put,
    .put_batch = rdb_put_batch,
    .get = rdb_get,
    .get_batch = NULL,
    .scan = rdb_scan,
    .compact = rdb_compact,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
