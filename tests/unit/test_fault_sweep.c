/*
 * test_fault_sweep.c - every system call an operation makes, failed in turn.
 *
 * For each operation (put, a put just past a buffer size, batches through
 * the copy and the vector path, streams, put_fd, deletes, rename, copy,
 * move, sync, compaction, close and reopen, open with a torn tail, open
 * without a hint, refresh of a read-only store, log_append) and each
 * durability mode, the operation is first run once to count the calls it
 * makes through the system-call table (src/io.h, all operations counted in
 * one sequence); then, on a fresh store each time, call number n fails
 * (n = 1 .. that count). A failed transfer first moves half its bytes, as a
 * device that wrote part of it would. After the failure:
 * - the call returned SIMDR_OK or an error with a message, without crashing;
 * - the handle serves, for every key, its value before or after the
 *   operation (after it when it succeeded), and counts what it serves;
 * - a write after it is either acknowledged or refused;
 * - a sync that failed is never followed by an acknowledged simdr_sync on
 *   the same handle (the failed state);
 * - closed and reopened without faults, the store holds every acknowledged
 *   write and passes simdr_check.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault_seq.h"

static int is_sync_op(int op) {
    return op == SIMDR__IO_FDATASYNC || op == SIMDR__IO_FSYNC || op == SIMDR__IO_FSYNC_DIR ||
           op == SIMDR__IO_MSYNC || op == SIMDR__IO_SYNC_FILE_RANGE;
}

/* ---- what each store should hold ---- */

#define KEYS 512
typedef struct model {
    uint32_t ver[2][KEYS]; /* 0: absent; store 0 is the sweep's, 1 the other */
    size_t len[2][KEYS];
} model;

static void key_name(char *out, size_t cap, int k) { snprintf(out, cap, "key-%d", k); }
static uint64_t value_seed(int k, uint32_t ver) { return (uint64_t)k << 32 | ver; }

static uint8_t *value_of(int k, uint32_t ver, size_t len) {
    uint8_t *v = malloc(len);
    assert_non_null(v);
    tu_fill(v, len, value_seed(k, ver));
    return v;
}

static void set_key(model *m, int store, int k, uint32_t ver, size_t len) {
    m->ver[store][k] = ver;
    m->len[store][k] = ver ? len : 0;
}

/* The key k of s holds its value in a or in b (strict: in b). Returns 1
 * when present. */
static int expect_key(simdr_store *s, int store, int k, const model *a, const model *b,
                      int strict, const char *where) {
    char key[32];
    key_name(key, sizeof key, k);
    simdr_entry *e = NULL;
    int rc = simdr_get(s, TU_STR(key), &e);
    int ok_b, ok_a = 0;
    if (rc == SIMDR_NOTFOUND) {
        ok_b = b->ver[store][k] == 0;
        if (!strict) ok_a = a->ver[store][k] == 0;
    } else {
        if (rc != SIMDR_OK) fprintf(stderr, "%s: get %s: %s\n", where, key, simdr_last_error());
        assert_int_equal(rc, SIMDR_OK);
        uint64_t size = simdr_entry_size(e);
        const uint8_t *data = simdr_entry_data(e);
        const model *ms[2] = {b, a};
        ok_b = 0;
        for (int i = 0; i < (strict ? 1 : 2); i++) {
            const model *m = ms[i];
            if (!m->ver[store][k] || m->len[store][k] != size) continue;
            uint8_t *want = value_of(k, m->ver[store][k], (size_t)size);
            int same = memcmp(want, data, (size_t)size) == 0;
            free(want);
            if (same) *(i ? &ok_a : &ok_b) = 1;
        }
        simdr_entry_release(e);
    }
    if (!ok_a && !ok_b)
        fprintf(stderr, "%s: store %d key %s: %s, expected version %u%s (or %u)\n", where,
                store, key, rc == SIMDR_OK ? "wrong value" : "absent", b->ver[store][k],
                strict ? " only" : "", a->ver[store][k]);
    assert_true(ok_a || ok_b);
    return rc == SIMDR_OK;
}

static void expect_store(simdr_store *s, int store, const model *a, const model *b, int strict,
                         const char *where) {
    uint64_t present = 0;
    for (int k = 0; k < KEYS; k++) present += (uint64_t)expect_key(s, store, k, a, b, strict, where);
    if (simdr_count(s) != present)
        fprintf(stderr, "%s: store %d counts %llu keys, serves %llu\n", where, store,
                (unsigned long long)simdr_count(s), (unsigned long long)present);
    assert_int_equal(simdr_count(s), present);
}

/* ---- one sweep case ---- */

typedef struct sweep {
    char *dir;
    char path[4096], other[4096], third[4096], input[4096];
    int durability;
    int mapped; /* SIMDR_APPEND_MAPPED for the sweep's store */
    simdr_store *s, *o, *reader, *prim;
    model pre, post; /* before and after the operation */
    model reader_pre; /* refreshes past a delete: what the reader served before */
    uint8_t *log_bytes;
    size_t log_len;
    uint64_t log_from;
} sweep;

/* The append mode of the next opens of the sweep's store (op_append_mode). */
static int open_append_mode;

static simdr_store *open_mode(const char *path, int mode, int durability) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    o.durability = durability;
    if (mode != SIMDR_OPEN_READONLY) o.append_mode = open_append_mode;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open %s: %s\n", path, simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

static void put_key(simdr_store *s, model *m, int store, int k, uint32_t ver, size_t len) {
    char key[32];
    key_name(key, sizeof key, k);
    uint8_t *v = value_of(k, ver, len);
    assert_int_equal(simdr_put(s, TU_STR(key), v, len, NULL), SIMDR_OK);
    free(v);
    set_key(m, store, k, ver, len);
}

/* A store of ten keys (one of 70,000 bytes), one deleted, synced; with_other:
 * the other store, with one key (copies and moves). */
static void sweep_setup(sweep *w, int durability, int with_other) {
    memset(w, 0, sizeof *w);
    w->dir = tu_mkdtemp();
    tu_join(w->path, sizeof w->path, w->dir, "store.bin");
    tu_join(w->other, sizeof w->other, w->dir, "other.bin");
    tu_join(w->third, sizeof w->third, w->dir, "primary.bin");
    tu_join(w->input, sizeof w->input, w->dir, "input");
    w->durability = durability;
    w->s = open_mode(w->path, SIMDR_OPEN_CREATE, durability);
    if (with_other) w->o = open_mode(w->other, SIMDR_OPEN_CREATE, durability);
    simdr_kv kv[10];
    uint8_t *vals[10];
    char keys[10][32];
    for (int k = 0; k < 10; k++) {
        size_t len = k == 3 ? 70000 : 10 + (size_t)k * 37;
        key_name(keys[k], sizeof keys[k], k);
        vals[k] = value_of(k, 1, len);
        kv[k] = (simdr_kv){keys[k], strlen(keys[k]), vals[k], len};
        set_key(&w->pre, 0, k, 1, len);
    }
    assert_int_equal(simdr_put_batch(w->s, kv, 10, NULL), SIMDR_OK);
    for (int k = 0; k < 10; k++) free(vals[k]);
    assert_int_equal(simdr_delete(w->s, TU_STR("key-9"), NULL), SIMDR_OK);
    set_key(&w->pre, 0, 9, 0, 0);
    assert_int_equal(simdr_sync(w->s), SIMDR_OK);
    if (w->o) {
        put_key(w->o, &w->pre, 1, 300, 1, 55);
        assert_int_equal(simdr_sync(w->o), SIMDR_OK);
    }
    w->post = w->pre;
}

static void sweep_free(sweep *w) {
    simdr_close(w->reader);
    simdr_close(w->prim);
    simdr_close(w->s);
    simdr_close(w->o);
    free(w->log_bytes);
    tu_rmtree(w->dir);
    free(w->dir);
}

typedef struct op {
    const char *name;
    void (*prepare)(sweep *w); /* before the faults: sets post (and pre) */
    int (*run)(sweep *w);      /* under the faults */
} op;

/* put */
static void prep_put(sweep *w) { set_key(&w->post, 0, 10, 1, 100); }
static int run_put(sweep *w) {
    uint8_t *v = value_of(10, 1, 100);
    int rc = simdr_put(w->s, TU_STR("key-10"), v, 100, NULL);
    free(v);
    return rc;
}

/* a put replacing a key with a value of 1 MiB + 1 (just past the chunk a
 * read's checksum goes by) */
#define BIG_PUT ((size_t)(1 << 20) + 1)
static void prep_put_big(sweep *w) { set_key(&w->post, 0, 0, 2, BIG_PUT); }
static int run_put_big(sweep *w) {
    uint8_t *v = value_of(0, 2, BIG_PUT);
    int rc = simdr_put(w->s, TU_STR("key-0"), v, BIG_PUT, NULL);
    free(v);
    return rc;
}

/* a small batch: new keys and a replaced one */
static void prep_batch(sweep *w) {
    for (int k = 11; k < 15; k++) set_key(&w->post, 0, k, 1, 20 + (size_t)k);
    set_key(&w->post, 0, 1, 2, 64);
}
static int run_batch(sweep *w) {
    simdr_kv kv[5];
    char keys[5][32];
    uint8_t *vals[5];
    int ks[5] = {11, 12, 13, 14, 1};
    for (int i = 0; i < 5; i++) {
        key_name(keys[i], sizeof keys[i], ks[i]);
        vals[i] = value_of(ks[i], w->post.ver[0][ks[i]], w->post.len[0][ks[i]]);
        kv[i] = (simdr_kv){keys[i], strlen(keys[i]), vals[i], w->post.len[0][ks[i]]};
    }
    int rc = simdr_put_batch(w->s, kv, 5, NULL);
    for (int i = 0; i < 5; i++) free(vals[i]);
    return rc;
}

/* A batch past the 16 MiB copy limit (one iovec list) with more iovecs
 * than one pwritev takes (IOV_MAX): 400 values of 42,000 bytes, odd so
 * that pads and values alternate. */
#define WIDE_N 400
#define WIDE_LEN 42001
static void prep_batch_wide(sweep *w) {
    for (int i = 0; i < WIDE_N; i++) set_key(&w->post, 0, 100 + i, 1, WIDE_LEN);
}
static int run_batch_wide(sweep *w) {
    simdr_kv *kv = calloc(WIDE_N, sizeof *kv);
    char(*keys)[32] = calloc(WIDE_N, sizeof *keys);
    uint8_t **vals = calloc(WIDE_N, sizeof *vals);
    assert_true(kv && keys && vals);
    for (int i = 0; i < WIDE_N; i++) {
        key_name(keys[i], sizeof keys[i], 100 + i);
        vals[i] = value_of(100 + i, 1, WIDE_LEN);
        kv[i] = (simdr_kv){keys[i], strlen(keys[i]), vals[i], WIDE_LEN};
    }
    int rc = simdr_put_batch(w->s, kv, WIDE_N, NULL);
    for (int i = 0; i < WIDE_N; i++) free(vals[i]);
    free(vals);
    free(keys);
    free(kv);
    return rc;
}

/* a stream of 2.5 MiB + 7 bytes, handed over in uneven pieces */
#define STREAM_LEN ((size_t)(5 << 19) + 7)
typedef struct src {
    const uint8_t *all;
    size_t len, at, step;
} src;
static int64_t read_src(void *ctx, void *buf, size_t cap) {
    src *s = ctx;
    size_t n = s->len - s->at;
    if (n > cap) n = cap;
    if (n > s->step) n = s->step;
    memcpy(buf, s->all + s->at, n);
    s->at += n;
    s->step = s->step * 3 + 1;
    return (int64_t)n;
}
static void prep_stream(sweep *w) { set_key(&w->post, 0, 15, 1, STREAM_LEN); }
static int run_stream(sweep *w) {
    (void)w;
    uint8_t *v = value_of(15, 1, STREAM_LEN);
    src s = {v, STREAM_LEN, 0, 4096};
    int rc = simdr_put_stream(w->s, TU_STR("key-15"), read_src, &s, NULL);
    free(v);
    return rc;
}

/* put_fd from a file of 1 MiB + 1 bytes */
static void prep_put_fd(sweep *w) {
    uint8_t *v = value_of(16, 1, BIG_PUT);
    tu_write_file(w->input, v, BIG_PUT);
    free(v);
    set_key(&w->post, 0, 16, 1, BIG_PUT);
}
static int run_put_fd(sweep *w) {
    int fd = open(w->input, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    int rc = simdr_put_fd(w->s, TU_STR("key-16"), fd, NULL);
    close(fd);
    return rc;
}

static void prep_delete(sweep *w) { set_key(&w->post, 0, 2, 0, 0); }
static int run_delete(sweep *w) { return simdr_delete(w->s, TU_STR("key-2"), NULL); }

static void prep_delete_batch(sweep *w) {
    set_key(&w->post, 0, 3, 0, 0);
    set_key(&w->post, 0, 4, 0, 0);
}
static int run_delete_batch(sweep *w) {
    simdr_key keys[3] = {{TU_STR("key-3")}, {TU_STR("key-4")}, {TU_STR("key-200")}};
    size_t deleted = 0;
    int rc = simdr_delete_batch(w->s, keys, 3, &deleted, NULL);
    if (rc == SIMDR_OK) assert_int_equal(deleted, 2);
    return rc;
}

/* rename key-5 to key-17: the value moves with it (same bytes, new key) */
static void prep_rename(sweep *w) {
    /* The renamed value keeps key-5's bytes: model it as key-17 holding
     * key-5's version, checked by a special case below. */
    set_key(&w->post, 0, 5, 0, 0);
}
static int run_rename(sweep *w) { return simdr_rename(w->s, TU_STR("key-5"), TU_STR("key-17"), NULL); }

static void prep_copy(sweep *w) { set_key(&w->post, 1, 6, 1, w->pre.len[0][6]); }
static int run_copy(sweep *w) { return simdr_copy(w->s, TU_STR("key-6"), w->o, NULL); }

static void prep_move(sweep *w) {
    set_key(&w->post, 1, 7, 1, w->pre.len[0][7]);
    set_key(&w->post, 0, 7, 0, 0);
}
static int run_move(sweep *w) { return simdr_move(w->s, TU_STR("key-7"), w->o, NULL); }

/* sync after an acknowledged, unsynced put: a failed sync may withdraw it */
static void prep_sync(sweep *w) { put_key(w->s, &w->post, 0, 18, 1, 333); }
static int run_sync(sweep *w) { return simdr_sync(w->s); }

/* compaction of a store with garbage (and a value of 3 MB) */
static void prep_compact(sweep *w) {
    put_key(w->s, &w->pre, 0, 1, 5, 900);
    put_key(w->s, &w->pre, 0, 1, 6, 901);
    put_key(w->s, &w->pre, 0, 19, 1, 3000000);
    put_key(w->s, &w->pre, 0, 2, 7, 17);
    assert_int_equal(simdr_sync(w->s), SIMDR_OK);
    w->post = w->pre;
}
static int run_compact(sweep *w) { return simdr_compact(w->s); }

/* close (its sync, hint and closed mark), then open again */
static void prep_close(sweep *w) { put_key(w->s, &w->post, 0, 20, 1, 4000); }
static int run_close(sweep *w) {
    int rc = simdr_close(w->s);
    w->s = NULL;
    simdr_options o;
    simdr_options_init(&o);
    o.durability = w->durability;
    o.append_mode = open_append_mode;
    int rc2 = simdr_open(&w->s, w->path, &o);
    if (rc2 != SIMDR_OK) w->s = NULL;
    return rc != SIMDR_OK ? rc : rc2;
}

/* open of a file with a torn tail (saved, cut) and no hint */
static void prep_open_torn(sweep *w) {
    assert_int_equal(simdr_close(w->s), SIMDR_OK);
    w->s = NULL;
    uint8_t junk[5000];
    tu_fill(junk, sizeof junk, 77);
    tu_append_file(w->path, junk, sizeof junk);
}
static int run_open(sweep *w) {
    simdr_options o;
    simdr_options_init(&o);
    o.durability = w->durability;
    o.append_mode = open_append_mode;
    int rc = simdr_open(&w->s, w->path, &o);
    if (rc != SIMDR_OK) w->s = NULL;
    return rc;
}
static void prep_open_nohint(sweep *w) {
    assert_int_equal(simdr_close(w->s), SIMDR_OK);
    w->s = NULL;
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", w->path);
    unlink(hint);
}
static void prep_open_hint(sweep *w) {
    assert_int_equal(simdr_close(w->s), SIMDR_OK);
    w->s = NULL;
}

/* a read-only store refreshing past a put of the writer */
static void prep_refresh(sweep *w) {
    w->reader = open_mode(w->path, SIMDR_OPEN_READONLY, SIMDR_SYNC_NONE);
    put_key(w->s, &w->post, 0, 21, 1, 5000);
    w->pre = w->post; /* the writer already holds it */
}
static int run_refresh(sweep *w) { return simdr_refresh(w->reader, NULL); }

/* a read-only store refreshing past the writer's delete: a tombstone's
 * 1-byte payload read to tell it from a 1-byte value (a failed read there
 * must not index the deleted key as a value) */
static void prep_refresh_delete(sweep *w) {
    w->reader = open_mode(w->path, SIMDR_OPEN_READONLY, SIMDR_SYNC_NONE);
    w->reader_pre = w->pre;
    assert_int_equal(simdr_delete(w->s, TU_STR("key-2"), NULL), SIMDR_OK);
    set_key(&w->post, 0, 2, 0, 0);
    w->pre = w->post; /* the writer already holds it */
}

/* log_append of a primary's bytes continuing the store */
static void prep_log(sweep *w) {
    assert_int_equal(simdr_close(w->s), SIMDR_OK);
    tu_copy_file(w->path, w->third);
    w->s = open_mode(w->path, SIMDR_OPEN_EXISTING, w->durability);
    w->prim = open_mode(w->third, SIMDR_OPEN_EXISTING, SIMDR_SYNC_NONE);
    put_key(w->prim, &w->post, 0, 22, 1, 2500);
    put_key(w->prim, &w->post, 0, 1, 9, 70);
    simdr_log_state st;
    assert_int_equal(simdr_log_info(w->prim, &st), SIMDR_OK);
    w->log_from = simdr_file_size(w->s);
    w->log_bytes = malloc(1 << 16);
    assert_int_equal(simdr_log_read(w->prim, st.identity, w->log_from, w->log_bytes, 1 << 16,
                                    &w->log_len),
                     SIMDR_OK);
    assert_true(w->log_len > 0);
}
static int run_log(sweep *w) {
    return simdr_log_append(w->s, w->log_from, w->log_bytes, w->log_len, NULL);
}

/* a read-only store refreshing onto the file a compaction put in place */
static void prep_refresh_reload(sweep *w) {
    w->reader = open_mode(w->path, SIMDR_OPEN_READONLY, SIMDR_SYNC_NONE);
    put_key(w->s, &w->post, 0, 21, 1, 5000);
    put_key(w->s, &w->post, 0, 1, 3, 40);
    assert_int_equal(simdr_compact(w->s), SIMDR_OK);
    w->pre = w->post;
}

/* writes into a store whose index came from its hint (checked block by
 * block on first use) */
static void prep_hinted_writes(sweep *w) {
    assert_int_equal(simdr_close(w->s), SIMDR_OK);
    w->s = open_mode(w->path, SIMDR_OPEN_EXISTING, w->durability);
    set_key(&w->post, 0, 23, 1, 77);
    set_key(&w->post, 0, 6, 0, 0);
}
static int run_hinted_writes(sweep *w) {
    uint8_t *v = value_of(23, 1, 77);
    int rc = simdr_put(w->s, TU_STR("key-23"), v, 77, NULL);
    free(v);
    if (rc == SIMDR_OK) rc = simdr_delete(w->s, TU_STR("key-6"), NULL);
    return rc;
}

static const op ops[] = {
    {"put", prep_put, run_put},
    {"put 1 MiB + 1", prep_put_big, run_put_big},
    {"batch", prep_batch, run_batch},
    {"batch past 16 MiB, > IOV_MAX iovecs", prep_batch_wide, run_batch_wide},
    {"stream", prep_stream, run_stream},
    {"put_fd", prep_put_fd, run_put_fd},
    {"delete", prep_delete, run_delete},
    {"delete_batch", prep_delete_batch, run_delete_batch},
    {"rename", prep_rename, run_rename},
    {"copy", prep_copy, run_copy},
    {"move", prep_move, run_move},
    {"sync", prep_sync, run_sync},
    {"compact", prep_compact, run_compact},
    {"close and reopen", prep_close, run_close},
    {"open with a torn tail", prep_open_torn, run_open},
    {"open without a hint", prep_open_nohint, run_open},
    {"open with a hint", prep_open_hint, run_open},
    {"refresh", prep_refresh, run_refresh},
    {"refresh past a delete", prep_refresh_delete, run_refresh},
    {"log_append", prep_log, run_log},
    {"refresh onto a compacted file", prep_refresh_reload, run_refresh},
    {"put and delete in a hinted store", prep_hinted_writes, run_hinted_writes},
    /* The same through mapped appends (the names say so: is_mapped_op). */
    {"mapped: put", prep_put, run_put},
    {"mapped: batch", prep_batch, run_batch},
    {"mapped: delete_batch", prep_delete_batch, run_delete_batch},
    {"mapped: stream", prep_stream, run_stream},
    {"mapped: sync", prep_sync, run_sync},
    {"mapped: compact", prep_compact, run_compact},
    {"mapped: close and reopen", prep_close, run_close},
    /* And through zeroed appends (the zeros' own writes fail too). */
    {"zeroed: put", prep_put, run_put},
    {"zeroed: batch", prep_batch, run_batch},
    {"zeroed: stream", prep_stream, run_stream},
    {"zeroed: sync", prep_sync, run_sync},
    {"zeroed: compact", prep_compact, run_compact},
    {"zeroed: close and reopen", prep_close, run_close},
};
#define N_OPS (sizeof ops / sizeof ops[0])

static int op_append_mode(const op *o) {
    if (strncmp(o->name, "mapped: ", 8) == 0) return SIMDR_APPEND_MAPPED;
    if (strncmp(o->name, "zeroed: ", 8) == 0) return SIMDR_APPEND_ZEROED;
    return SIMDR_APPEND_WRITE;
}

/* key-17 is the renamed key-5: it holds key-5's version-1 bytes. */
static void expect_renamed(simdr_store *s, const sweep *w, int rc, int strict) {
    size_t len = w->pre.len[0][5];
    uint8_t *want = value_of(5, 1, len);
    simdr_entry *e = NULL;
    int got = simdr_get(s, TU_STR("key-17"), &e);
    if (got == SIMDR_OK) {
        assert_int_equal(simdr_entry_size(e), len);
        assert_memory_equal(simdr_entry_data(e), want, len);
        simdr_entry_release(e);
    } else {
        assert_int_equal(got, SIMDR_NOTFOUND);
        assert_false(strict && rc == SIMDR_OK);
    }
    free(want);
}

static int check_ok(simdr_store *s) {
    simdr_check_report rep;
    int rc = simdr_check(s, NULL, NULL, &rep);
    if (rc != SIMDR_OK) fprintf(stderr, "check: %s\n", simdr_last_error());
    return rc;
}

/* The state of both stores: b strictly (the operation succeeded) or a/b. */
static void expect_both(sweep *w, const op *o, int rc, int strict, const char *where) {
    int is_rename = o->run == run_rename;
    model a = w->pre, b = w->post;
    if (is_rename) {
        /* key-17 is checked on its own; the count includes it. */
        a.ver[0][17] = b.ver[0][17] = 0;
    }
    uint64_t renamed = 0;
    if (is_rename) {
        expect_renamed(w->s, w, rc, strict);
        renamed = (uint64_t)simdr_exists(w->s, TU_STR("key-17"));
    }
    uint64_t present = 0;
    for (int k = 0; k < KEYS; k++)
        if (!is_rename || k != 17) present += (uint64_t)expect_key(w->s, 0, k, &a, &b, strict, where);
    assert_int_equal(simdr_count(w->s), present + renamed);
    if (w->o) expect_store(w->o, 1, &a, &b, strict, where);
}

static void run_case(const op *o, int durability, uint64_t n, int persist,
                     uint64_t *calls_out) {
    sweep w;
    sweep_setup(&w, durability, o->run == run_copy || o->run == run_move);
    o->prepare(&w);
    char where[160];
    snprintf(where, sizeof where, "%s (%s), call %llu%s", o->name,
             durability == SIMDR_SYNC_DATA ? "sync data" : "sync none", (unsigned long long)n,
             persist ? " and every one after" : "");
    fault_seq_on(n, persist);
    int rc = o->run(&w);
    fault_seq_off();
    int injected = fault_seq_injected_op();
    if (calls_out) {
        *calls_out = fault_seq_calls();
        if (rc != SIMDR_OK) fprintf(stderr, "%s: %s\n", where, simdr_last_error());
        assert_int_equal(rc, SIMDR_OK);
    }
    if (n && injected < 0) {
        /* Fewer calls than counted (a path taken only sometimes). */
        sweep_free(&w);
        return;
    }
    if (n) snprintf(where + strlen(where), sizeof where - strlen(where), " (%s)", fault_seq_op_names[injected]);
    if (rc != SIMDR_OK) {
        assert_true(rc < 0 && rc >= SIMDR_EFAILED);
        assert_true(simdr_last_error()[0] != '\0');
    }
    int sync_failed = injected >= 0 && is_sync_op(injected);
    int after_acked = 0;
    /* A failed sync that the operation shrugged off: the handle must not
     * acknowledge a sync after it (unless the call was only a head start). */
    if (w.s) {
        expect_both(&w, o, rc, rc == SIMDR_OK, where);
        if (w.reader) {
            /* The reader sees the writer's state before or after its puts. */
            model before = w.pre;
            set_key(&before, 0, 21, 0, 0);
            if (o->prepare == prep_refresh_reload) set_key(&before, 0, 1, 1, 10 + 37);
            if (o->prepare == prep_refresh_delete) before = w.reader_pre;
            char rwhere[200];
            snprintf(rwhere, sizeof rwhere, "%s, the reader", where);
            expect_store(w.reader, 0, &before, &w.post, rc == SIMDR_OK, rwhere);
            assert_int_equal(simdr_refresh(w.reader, NULL), SIMDR_OK);
            snprintf(rwhere, sizeof rwhere, "%s, the reader refreshed again", where);
            expect_store(w.reader, 0, &before, &w.post, 1, rwhere);
        }
        /* The handle goes on or refuses; a sync after a failed one never
         * succeeds. */
        int after = simdr_put(w.s, TU_STR("after"), "after", 5, NULL);
        assert_true(after == SIMDR_OK || after == SIMDR_EFAILED || after == SIMDR_EIO);
        int synced = simdr_sync(w.s);
        /* A failed sync of this store's own file that the call reported
         * (not one of the other store, or of a compaction's new file,
         * which leaves the store as it was) is final. */
        if (sync_failed && rc != SIMDR_OK && o->run != run_copy && o->run != run_move &&
            o->run != run_compact && o->run != run_close) {
            if (synced == SIMDR_OK)
                fprintf(stderr, "%s: a failed %s (the call returned %s) was followed by a "
                        "successful simdr_sync\n", where, fault_seq_op_names[injected], simdr_strerror(rc));
            assert_int_not_equal(synced, SIMDR_OK);
        }
        after_acked = after == SIMDR_OK && synced == SIMDR_OK;
        simdr_close(w.s);
        w.s = NULL;
    }
    w.s = open_mode(w.path, SIMDR_OPEN_EXISTING, durability);
    if (w.o) {
        simdr_close(w.o);
        w.o = open_mode(w.other, SIMDR_OPEN_EXISTING, durability);
    }
    /* key-499 "after" is not a value_of(): checked apart. */
    simdr_entry *e = NULL;
    int got = simdr_get(w.s, TU_STR("after"), &e);
    if (got == SIMDR_OK) {
        assert_int_equal(simdr_entry_size(e), 5);
        assert_memory_equal(simdr_entry_data(e), "after", 5);
        simdr_entry_release(e);
    } else {
        assert_int_equal(got, SIMDR_NOTFOUND);
        if (after_acked) fprintf(stderr, "%s: an acknowledged, synced put was lost\n", where);
        assert_false(after_acked);
    }
    int is_rename = o->run == run_rename;
    uint64_t extra = (got == SIMDR_OK) + (is_rename ? (uint64_t)simdr_exists(w.s, TU_STR("key-17")) : 0);
    if (is_rename) expect_renamed(w.s, &w, rc, 1);
    uint64_t present = 0;
    model ra = w.pre, rb = w.post;
    if (is_rename) ra.ver[0][17] = rb.ver[0][17] = 0;
    for (int k = 0; k < KEYS; k++)
        if (!is_rename || k != 17)
            present += (uint64_t)expect_key(w.s, 0, k, &ra, &rb, rc == SIMDR_OK, where);
    assert_int_equal(simdr_count(w.s), present + extra);
    assert_int_equal(check_ok(w.s), SIMDR_OK);
    if (w.o) {
        expect_store(w.o, 1, &ra, &rb, rc == SIMDR_OK, where);
        assert_int_equal(check_ok(w.o), SIMDR_OK);
    }
    sweep_free(&w);
}

static void sweep_op(const op *o) {
    open_append_mode = op_append_mode(o);
    /* Opens and refreshes do not depend on the durability mode. */
    /* $SIMDR_TEST_SCALE below the full 10 (the sanitizer runs): the
     * durable mode, whose syncs cost the time, only for the sync paths. */
    const char *scale = getenv("SIMDR_TEST_SCALE");
    int reduced = scale && atoi(scale) > 0 && atoi(scale) < 10;
    int modes = o->run == run_open || o->run == run_refresh ||
                        open_append_mode == SIMDR_APPEND_MAPPED
                    ? 1
                    : 2;
    if (reduced && o->run != run_sync && o->run != run_put && o->run != run_move) modes = 1;
    for (int d = 0; d < modes; d++) {
        int durability = d ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
        uint64_t total = 0;
        run_case(o, durability, 0, 0, &total);
        if (getenv("SIMDR_SWEEP_VERBOSE"))
            fprintf(stderr, "%s, durability %d: %llu calls\n", o->name, durability,
                    (unsigned long long)total);
        for (uint64_t n = 1; n <= total; n++) run_case(o, durability, n, 0, NULL);
        /* A device gone: the undo paths, the same in both modes. */
        for (uint64_t n = 1; d == 0 && n <= total; n++) run_case(o, durability, n, 1, NULL);
    }
}

#define SWEEP_TEST(i)                                  \
    static void test_sweep_##i(void **state) {         \
        (void)state;                                   \
        assert_true((i) < sizeof ops / sizeof ops[0]); \
        sweep_op(&ops[i]);                             \
    }
SWEEP_TEST(0)
SWEEP_TEST(1)
SWEEP_TEST(2)
SWEEP_TEST(3)
SWEEP_TEST(4)
SWEEP_TEST(5)
SWEEP_TEST(6)
SWEEP_TEST(7)
SWEEP_TEST(8)
SWEEP_TEST(9)
SWEEP_TEST(10)
SWEEP_TEST(11)
SWEEP_TEST(12)
SWEEP_TEST(13)
SWEEP_TEST(14)
SWEEP_TEST(15)
SWEEP_TEST(16)
SWEEP_TEST(17)
SWEEP_TEST(18)
SWEEP_TEST(19)
SWEEP_TEST(20)
SWEEP_TEST(21)
SWEEP_TEST(22)
SWEEP_TEST(23)
SWEEP_TEST(24)
SWEEP_TEST(25)
SWEEP_TEST(26)
SWEEP_TEST(27)
SWEEP_TEST(28)
SWEEP_TEST(29)
SWEEP_TEST(30)
SWEEP_TEST(31)
SWEEP_TEST(32)
SWEEP_TEST(33)
SWEEP_TEST(34)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_0),  cmocka_unit_test(test_sweep_1),
        cmocka_unit_test(test_sweep_2),  cmocka_unit_test(test_sweep_3),
        cmocka_unit_test(test_sweep_4),  cmocka_unit_test(test_sweep_5),
        cmocka_unit_test(test_sweep_6),  cmocka_unit_test(test_sweep_7),
        cmocka_unit_test(test_sweep_8),  cmocka_unit_test(test_sweep_9),
        cmocka_unit_test(test_sweep_10), cmocka_unit_test(test_sweep_11),
        cmocka_unit_test(test_sweep_12), cmocka_unit_test(test_sweep_13),
        cmocka_unit_test(test_sweep_14), cmocka_unit_test(test_sweep_15),
        cmocka_unit_test(test_sweep_16), cmocka_unit_test(test_sweep_17),
        cmocka_unit_test(test_sweep_18), cmocka_unit_test(test_sweep_19),
        cmocka_unit_test(test_sweep_20), cmocka_unit_test(test_sweep_21),
        cmocka_unit_test(test_sweep_22), cmocka_unit_test(test_sweep_23),
        cmocka_unit_test(test_sweep_24), cmocka_unit_test(test_sweep_25),
        cmocka_unit_test(test_sweep_26), cmocka_unit_test(test_sweep_27),
        cmocka_unit_test(test_sweep_28), cmocka_unit_test(test_sweep_29),
        cmocka_unit_test(test_sweep_30), cmocka_unit_test(test_sweep_31),
        cmocka_unit_test(test_sweep_32), cmocka_unit_test(test_sweep_33),
        cmocka_unit_test(test_sweep_34),
    };
    /* One test per operation: an operation added without its test would
     * go unswept. */
    if (sizeof tests / sizeof tests[0] != N_OPS) {
        fprintf(stderr, "%zu sweep tests for %zu operations\n", sizeof tests / sizeof tests[0],
                N_OPS);
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
