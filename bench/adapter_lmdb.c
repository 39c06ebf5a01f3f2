/*
 * adapter_lmdb.c - benchmark adapter for LMDB.
 *
 * Cheapest mode: MDB_NOSYNC (no fsync on commit), default flags otherwise
 * (no MDB_WRITEMAP), a 64 GiB map size. Durable mode drops MDB_NOSYNC (LMDB's
 * default: fsync on every commit). Every put is its own write transaction;
 * every get is its own read transaction (mdb_txn_renew/mdb_txn_reset on a
 * per-thread handle, no allocation); a scan is one read transaction with a
 * cursor. Compaction: mdb_env_copy2(MDB_CP_COMPACT) into a subdirectory.
 */
#include "adapter.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct lmdb_db {
    MDB_env *env;
    MDB_dbi dbi;
} lmdb_db;

typedef struct lmdb_thread {
    lmdb_db *db;
    MDB_txn *rtxn; /* reset read transaction, renewed for each read */
} lmdb_thread;

static int lmdb_fail(const char *what, int rc)
{
    fprintf(stderr, "lmdb: %s: %s\n", what, mdb_strerror(rc));
    return BENCH_ERROR;
}

static void *lmdb_open_db(const char *dir, const bench_open_opts *opts)
{
    lmdb_db *db = calloc(1, sizeof(*db));
    MDB_txn *txn;
    int rc;
    if (!db)
        return NULL;
    if ((rc = mdb_env_create(&db->env)) != 0)
        goto fail;
    if ((rc = mdb_env_set_mapsize(db->env, (size_t)64 << 30)) != 0)
        goto fail;
    if ((rc = mdb_env_set_maxreaders(db->env, 64)) != 0)
        goto fail;
    if ((rc = mdb_env_open(db->env, dir, opts->durable ? 0 : MDB_NOSYNC, 0644)) != 0)
        goto fail;
    if ((rc = mdb_txn_begin(db->env, NULL, 0, &txn)) != 0)
        goto fail;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &db->dbi)) != 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        goto fail;
    return db;
fail:
    lmdb_fail("open", rc);
    if (db->env)
        mdb_env_close(db->env);
    free(db);
    return NULL;
}

static int lmdb_close_db(void *p)
{
    lmdb_db *db = p;
    mdb_env_close(db->env);
    free(db);
    return 0;
}

static void *lmdb_thread_begin(void *p)
{
    lmdb_thread *t = calloc(1, sizeof(*t));
    if (t)
        t->db = p;
    return t;
}

static void lmdb_thread_end(void *p, void *tp)
{
    lmdb_thread *t = tp;
    (void)p;
    if (t->rtxn)
        mdb_txn_abort(t->rtxn);
    free(t);
}

static int lmdb_put(void *tp, const char *key, size_t klen, const void *val, size_t vlen)
{
    lmdb_thread *t = tp;
    MDB_txn *txn;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    int rc = mdb_txn_begin(t->db->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail("txn_begin", rc);
    if ((rc = mdb_put(txn, t->db->dbi, &k, &v, 0)) != 0) {
        mdb_txn_abort(txn);
        return lmdb_fail("put", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("commit", rc);
    return 0;
}

static int lmdb_put_batch(void *tp, const bench_kv *items, size_t n)
{
    lmdb_thread *t = tp;
    MDB_txn *txn;
    int rc = mdb_txn_begin(t->db->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail("txn_begin", rc);
    for (size_t i = 0; i < n; i++) {
        MDB_val k = {items[i].key_len, (void *)items[i].key};
        MDB_val v = {items[i].value_len, (void *)items[i].value};
        if ((rc = mdb_put(txn, t->db->dbi, &k, &v, 0)) != 0) {
            mdb_txn_abort(txn);
            return lmdb_fail("put", rc);
        }
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("commit", rc);
    return 0;
}

static int lmdb_read_begin(lmdb_thread *t)
{
    int rc;
    if (!t->rtxn)
        rc = mdb_txn_begin(t->db->env, NULL, MDB_RDONLY, &t->rtxn);
    else
        rc = mdb_txn_renew(t->rtxn);
    return rc ? lmdb_fail("read txn", rc) : 0;
}

static int lmdb_get(void *tp, const char *key, size_t klen, const void *expect, size_t elen)
{
    lmdb_thread *t = tp;
    MDB_val k = {klen, (void *)key}, v;
    int rc, res = 0;
    if (lmdb_read_begin(t))
        return BENCH_ERROR;
    rc = mdb_get(t->rtxn, t->db->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        res = BENCH_NOTFOUND;
    else if (rc)
        res = lmdb_fail("get", rc);
    else if (v.mv_size != elen || memcmp(v.mv_data, expect, elen) != 0)
        res = BENCH_MISMATCH;
    mdb_txn_reset(t->rtxn);
    return res;
}

static int lmdb_scan(void *tp, bench_scan_fn fn, void *ctx)
{
    lmdb_thread *t = tp;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;
    if (lmdb_read_begin(t))
        return BENCH_ERROR;
    if ((rc = mdb_cursor_open(t->rtxn, t->db->dbi, &cur)) != 0) {
        mdb_txn_reset(t->rtxn);
        return lmdb_fail("cursor", rc);
    }
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
        if (fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size))
            break;
    mdb_cursor_close(cur);
    mdb_txn_reset(t->rtxn);
    return (rc == 0 || rc == MDB_NOTFOUND) ? 0 : lmdb_fail("cursor_get", rc);
}

static int lmdb_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    lmdb_db *db = p;
    int rc;
    snprintf(measure_dir, cap, "%s/compacted", dir);
    if (mkdir(measure_dir, 0755) != 0)
        return BENCH_ERROR;
    if ((rc = mdb_env_copy2(db->env, measure_dir, MDB_CP_COMPACT)) != 0)
        return lmdb_fail("env_copy2", rc);
    return 0;
}

const bench_adapter bench_adapter_lmdb = {
    .name = "lmdb",
    .open = lmdb_open_db,
    .close = lmdb_close_db,
    .thread_begin = lmdb_thread_begin,
    .thread_end = lmdb_thread_end,
    .put = lmdb_put,
    .put_batch = lmdb_put_batch,
    .get = lmdb_get,
    .get_batch = NULL,
    .scan = lmdb_scan,
    .compact = lmdb_compact,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
