/*
 * adapter.h - the common interface the benchmark drives every engine through.
 *
 * Each engine (simdr and its peers) provides one struct bench_adapter of
 * function pointers in its own adapter_<engine>.c. The driver (bench.c) only
 * talks to engines through this table, so every engine runs exactly the same
 * workload code.
 *
 * Model: open() returns a database handle for a fresh or existing directory.
 * Every thread that touches the database first calls thread_begin() to get a
 * per-thread context (a read transaction slot, a connection, prepared
 * statements, ...) and passes it to put/get/scan; thread_end() frees it.
 * Return values: 0 = success; BENCH_NOTFOUND / BENCH_MISMATCH from get();
 * BENCH_NOTSUP where an engine has no such operation; any other non-zero value
 * is an error and the adapter has already printed what failed to stderr.
 */
#ifndef BENCH_ADAPTER_H
#define BENCH_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_NOTFOUND 1
#define BENCH_MISMATCH 2
#define BENCH_NOTSUP 3
#define BENCH_ERROR (-1)

/** How a database is opened. */
typedef struct bench_open_opts {
    int create;    /**< 1: fresh database (the directory is empty); 0: reopen */
    int durable;   /**< 1: every write is durable when it returns (W4) */
    int variant;   /**< engine-specific switch (simdr: 1 = unaligned layout, 2 = mapped appends,
                        3 = zeroed appends) */
} bench_open_opts;

typedef struct bench_kv {
    const char *key;
    size_t key_len;
    const void *value;
    size_t value_len;
} bench_kv;

/** Called by scan() for each live record; key may be NULL when the engine
 *  does not keep keys (simdr keeps only a hash). Return non-zero to stop. */
typedef int (*bench_scan_fn)(void *ctx, const void *key, size_t key_len, const void *value,
                             size_t value_len);

typedef struct bench_adapter {
    const char *name;
    /** 1: simdr itself (in another layout) or a yardstick, left out of
     *  "best peer" ratios. */
    int not_a_peer;
    /** 1: no durable writes and no lock for writers on several threads (the
     *  floor yardsticks): W4 is not run. */
    int no_durable_writes;
    /** Opens the database stored in dir; NULL on failure. */
    void *(*open)(const char *dir, const bench_open_opts *opts);
    /** Closes and frees; returns 0 or an error. */
    int (*close)(void *db);
    void *(*thread_begin)(void *db);
    void (*thread_end)(void *db, void *tctx);
    /** One write, committed on its own (its own transaction). */
    int (*put)(void *tctx, const char *key, size_t key_len, const void *value, size_t value_len);
    /** n writes in one commit / batch. */
    int (*put_batch)(void *tctx, const bench_kv *items, size_t n);
    /** Reads key and compares its value with expect/expect_len. */
    int (*get)(void *tctx, const char *key, size_t key_len, const void *expect,
               size_t expect_len);
    /** Optional (NULL): get through a handle that outlives the call (simdr:
     *  simdr_get), for the R1h metric; get is then the engine's fastest
     *  read that still compares in place. */
    int (*get_handle)(void *tctx, const char *key, size_t key_len, const void *expect,
                      size_t expect_len);
    /** Optional (NULL): reads n keys in one call, checking each value;
     *  expect is n values of expect_len bytes each, back to back. */
    int (*get_batch)(void *tctx, const bench_kv *keys, size_t n, const void *expect,
                     size_t expect_len);
    /** Visits every live record once. */
    int (*scan)(void *tctx, bench_scan_fn fn, void *ctx);
    /** Optional (NULL): the engine's compaction. *measure_dir receives the
     *  directory whose size is the compacted size (dir itself, or a copy). */
    int (*compact)(void *db, const char *dir, char *measure_dir, size_t cap);
    /** Optional (NULL): bytes per key of the in-memory index. */
    double (*index_bytes_per_key)(void *db);
    /** Optional (NULL): delete any side files (index hints) so the next open
     *  must rebuild from the data file alone. */
    int (*drop_hints)(const char *dir);
} bench_adapter;

extern const bench_adapter bench_adapter_simdr;
extern const bench_adapter bench_adapter_simdr_unaligned;
extern const bench_adapter bench_adapter_simdr_mapped; /* SIMDR_APPEND_MAPPED */
extern const bench_adapter bench_adapter_simdr_zeroed; /* SIMDR_APPEND_ZEROED */
/* Yardsticks, not engines (adapter_floor.c): the floor of simdr's design. */
extern const bench_adapter bench_adapter_floor;
extern const bench_adapter bench_adapter_floor_unaligned;
/* The aligned floor plus a CRC-32 check of every value it reads. */
extern const bench_adapter bench_adapter_floor_crc;
extern const bench_adapter bench_adapter_lmdb;
extern const bench_adapter bench_adapter_rocksdb;
extern const bench_adapter bench_adapter_leveldb;
extern const bench_adapter bench_adapter_sqlite;
extern const bench_adapter bench_adapter_tkrzw;
extern const bench_adapter bench_adapter_kyoto;

#endif /* BENCH_ADAPTER_H */
