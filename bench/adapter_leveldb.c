/*
 * adapter_leveldb.c - benchmark adapter for LevelDB (through leveldb/c.h).
 *
 * Cheapest mode: default options plus create_if_missing, writes with
 * sync=false. Durable mode: sync=true (LevelDB group-commits queued
 * writers). The C API's get returns a malloc'ed copy of the value, freed with
 * leveldb_free. A batch is one leveldb_writebatch; compaction is
 * leveldb_compact_range over the whole key space.
 */
#include "adapter.h"

#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ldb_db {
    leveldb_t *db;
    leveldb_options_t *opts;
    leveldb_writeoptions_t *wopts;
    leveldb_readoptions_t *ropts;
} ldb_db;

static int ldb_fail(const char *what, char *err)
{
    fprintf(stderr, "leveldb: %s: %s\n", what, err ? err : "?");
    leveldb_free(err);
    return BENCH_ERROR;
}

static void *ldb_open(const char *dir, const bench_open_opts *o)
{
    ldb_db *d = calloc(1, sizeof(*d));
    char *err = NULL;
    if (!d)
        return NULL;
    d->opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(d->opts, 1);
    d->wopts = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(d->wopts, o->durable ? 1 : 0);
    d->ropts = leveldb_readoptions_create();
    d->db = leveldb_open(d->opts, dir, &err);
    if (!d->db) {
        ldb_fail("open", err);
        leveldb_writeoptions_destroy(d->wopts);
        leveldb_readoptions_destroy(d->ropts);
        leveldb_options_destroy(d->opts);
        free(d);
        return NULL;
    }
    return d;
}

static int ldb_close(void *p)
{
    ldb_db *d = p;
    leveldb_close(d->db);
    leveldb_writeoptions_destroy(d->wopts);
    leveldb_readoptions_destroy(d->ropts);
    leveldb_options_destroy(d->opts);
    free(d);
    return 0;
}

static void *ldb_thread_begin(void *p)
{
    return p;
}

static void ldb_thread_end(void *p, void *t)
{
    (void)p;
    (void)t;
}

static int ldb_put(void *p, const char *key, size_t klen, const void *val, size_t vlen)
{
    ldb_db *d = p;
    char *err = NULL;
    leveldb_put(d->db, d->wopts, key, klen, val, vlen, &err);
    return err ? ldb_fail("put", err) : 0;
}

static int ldb_put_batch(void *p, const bench_kv *items, size_t n)
{
    ldb_db *d = p;
    char *err = NULL;
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    for (size_t i = 0; i < n; i++)
        leveldb_writebatch_put(wb, items[i].key, items[i].key_len, items[i].value,
                               items[i].value_len);
    leveldb_write(d->db, d->wopts, wb, &err);
    leveldb_writebatch_destroy(wb);
    return err ? ldb_fail("write", err) : 0;
}

static int ldb_get(void *p, const char *key, size_t klen, const void *expect, size_t elen)
{
    ldb_db *d = p;
    char *err = NULL;
    size_t vlen;
    int res = 0;
    char *v = leveldb_get(d->db, d->ropts, key, klen, &vlen, &err);
    if (err)
        return ldb_fail("get", err);
    if (!v)
        return BENCH_NOTFOUND;
    if (vlen != elen || memcmp(v, expect, elen) != 0)
        res = BENCH_MISMATCH;
    leveldb_free(v);
    return res;
}

static int ldb_scan(void *p, bench_scan_fn fn, void *ctx)
{
    ldb_db *d = p;
    char *err = NULL;
    size_t kl, vl;
    leveldb_iterator_t *it = leveldb_create_iterator(d->db, d->ropts);
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        const char *k = leveldb_iter_key(it, &kl);
        const char *v = leveldb_iter_value(it, &vl);
        if (fn(ctx, k, kl, v, vl))
            break;
    }
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    return err ? ldb_fail("iterate", err) : 0;
}

static int ldb_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    ldb_db *d = p;
    snprintf(measure_dir, cap, "%s", dir);
    leveldb_compact_range(d->db, NULL, 0, NULL, 0);
    return 0;
}

const bench_adapter bench_adapter_leveldb = {
    .name = "leveldb",
    .open = ldb_open,
    .close = ldb_close,
    .thread_begin = ldb_thread_begin,
    .thread_end = ldb_thread_end,
    .put = ldb_put,
    .put_batch = ldb_put_batch,
    .get = ldb_get,
    .get_batch = NULL,
    .scan = ldb_scan,
    .compact = ldb_compact,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
