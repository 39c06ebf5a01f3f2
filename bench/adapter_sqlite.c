/*
 * adapter_sqlite.c - benchmark adapter for SQLite.
 *
 * Cheapest mode: journal_mode=WAL, synchronous=OFF, one table
 * kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID, prepared statements only.
 * Durable mode: synchronous=FULL. Each thread gets its own connection
 * (SQLITE_OPEN_NOMUTEX) with its own statements; a single put is one
 * autocommit INSERT OR REPLACE, a batch is BEGIN ... COMMIT. Compaction is
 * VACUUM followed by a WAL checkpoint(TRUNCATE).
 */
#include "adapter.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sq_db {
    char path[4096];
    int durable;
    sqlite3 *conn; /* schema, VACUUM */
} sq_db;

typedef struct sq_thread {
    sqlite3 *conn;
    sqlite3_stmt *ins, *sel, *begin, *commit, *scan;
} sq_thread;

static int sq_fail(sqlite3 *c, const char *what)
{
    fprintf(stderr, "sqlite: %s: %s\n", what, c ? sqlite3_errmsg(c) : "?");
    return BENCH_ERROR;
}

static sqlite3 *sq_connect(sq_db *d)
{
    sqlite3 *c = NULL;
    char sql[256];
    if (sqlite3_open_v2(d->path, &c,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        sq_fail(c, "open");
        sqlite3_close(c);
        return NULL;
    }
    sqlite3_busy_timeout(c, 60000);
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;",
             d->durable ? "FULL" : "OFF");
    if (sqlite3_exec(c, sql, NULL, NULL, NULL) != SQLITE_OK) {
        sq_fail(c, "pragma");
        sqlite3_close(c);
        return NULL;
    }
    return c;
}

static void *sq_open(const char *dir, const bench_open_opts *o)
{
    sq_db *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    snprintf(d->path, sizeof d->path, "%s/kv.sqlite", dir);
    d->durable = o->durable;
    d->conn = sq_connect(d);
    if (!d->conn) {
        free(d);
        return NULL;
    }
    if (sqlite3_exec(d->conn,
                     "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;",
                     NULL, NULL, NULL) != SQLITE_OK) {
        sq_fail(d->conn, "create table");
        sqlite3_close(d->conn);
        free(d);
        return NULL;
    }
    return d;
}

static int sq_close(void *p)
{
    sq_db *d = p;
    int rc = sqlite3_close(d->conn);
    free(d);
    return rc == SQLITE_OK ? 0 : BENCH_ERROR;
}

static void sq_thread_end(void *p, void *tp)
{
    sq_thread *t = tp;
    (void)p;
    sqlite3_finalize(t->ins);
    sqlite3_finalize(t->sel);
    sqlite3_finalize(t->begin);
    sqlite3_finalize(t->commit);
    sqlite3_finalize(t->scan);
    sqlite3_close(t->conn);
    free(t);
}

static void *sq_thread_begin(void *p)
{
    sq_db *d = p;
    sq_thread *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->conn = sq_connect(d);
    if (!t->conn)
        goto fail;
    if (sqlite3_prepare_v2(t->conn, "INSERT OR REPLACE INTO kv(k, v) VALUES(?1, ?2)", -1,
                           &t->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(t->conn, "SELECT v FROM kv WHERE k = ?1", -1, &t->sel, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(t->conn, "BEGIN IMMEDIATE", -1, &t->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(t->conn, "COMMIT", -1, &t->commit, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(t->conn, "SELECT k, v FROM kv", -1, &t->scan, NULL) != SQLITE_OK) {
        sq_fail(t->conn, "prepare");
        goto fail;
    }
    return t;
fail:
    if (t->conn)
        sq_thread_end(p, t);
    else
        free(t);
    return NULL;
}

static int sq_step_done(sq_thread *t, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : sq_fail(t->conn, what);
}

static int sq_insert(sq_thread *t, const char *key, size_t klen, const void *val, size_t vlen)
{
    sqlite3_bind_blob(t->ins, 1, key, (int)klen, SQLITE_STATIC);
    sqlite3_bind_blob(t->ins, 2, val, (int)vlen, SQLITE_STATIC);
    return sq_step_done(t, t->ins, "insert");
}

static int sq_put(void *tp, const char *key, size_t klen, const void *val, size_t vlen)
{
    return sq_insert(tp, key, klen, val, vlen);
}

static int sq_put_batch(void *tp, const bench_kv *items, size_t n)
{
    sq_thread *t = tp;
    if (sq_step_done(t, t->begin, "begin"))
        return BENCH_ERROR;
    for (size_t i = 0; i < n; i++)
        if (sq_insert(t, items[i].key, items[i].key_len, items[i].value, items[i].value_len)) {
            sqlite3_exec(t->conn, "ROLLBACK", NULL, NULL, NULL);
            return BENCH_ERROR;
        }
    return sq_step_done(t, t->commit, "commit");
}

static int sq_get(void *tp, const char *key, size_t klen, const void *expect, size_t elen)
{
    sq_thread *t = tp;
    int res;
    sqlite3_bind_blob(t->sel, 1, key, (int)klen, SQLITE_STATIC);
    int rc = sqlite3_step(t->sel);
    if (rc == SQLITE_ROW) {
        const void *v = sqlite3_column_blob(t->sel, 0);
        size_t vlen = (size_t)sqlite3_column_bytes(t->sel, 0);
        res = (vlen == elen && memcmp(v, expect, elen) == 0) ? 0 : BENCH_MISMATCH;
    } else if (rc == SQLITE_DONE) {
        res = BENCH_NOTFOUND;
    } else {
        res = sq_fail(t->conn, "select");
    }
    sqlite3_reset(t->sel);
    return res;
}

static int sq_scan(void *tp, bench_scan_fn fn, void *ctx)
{
    sq_thread *t = tp;
    int rc;
    while ((rc = sqlite3_step(t->scan)) == SQLITE_ROW) {
        const void *k = sqlite3_column_blob(t->scan, 0);
        size_t kl = (size_t)sqlite3_column_bytes(t->scan, 0);
        const void *v = sqlite3_column_blob(t->scan, 1);
        size_t vl = (size_t)sqlite3_column_bytes(t->scan, 1);
        if (fn(ctx, k, kl, v, vl)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(t->scan);
    return rc == SQLITE_DONE ? 0 : sq_fail(t->conn, "scan");
}

static int sq_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    sq_db *d = p;
    snprintf(measure_dir, cap, "%s", dir);
    if (sqlite3_exec(d->conn, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, NULL) !=
        SQLITE_OK)
        return sq_fail(d->conn, "vacuum");
    return 0;
}

const bench_adapter bench_adapter_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .thread_begin = sq_thread_begin,
    .thread_end = sq_thread_end,
    .put = sq_put,
    .put_batch = sq_put_batch,
    .get = sq_get,
    .get_batch = NULL,
    .scan = sq_scan,
    .compact = sq_compact,
    .index_bytes_per_key = NULL,
    .drop_hints = NULL,
};
