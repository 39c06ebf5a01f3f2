/*
 * test_iter.c - unit tests of iteration in libsimdr: the iterator yields the
 * newest version of each live key once, newest first, tombstones and deleted
 * keys skipped; snapshot semantics; entries kept with simdr_entry_dup;
 * simdr_for_each (with stop) and simdr_for_each_parallel on 4 threads.
 * Iterators read the snapshot's newest offsets from the index and walk the
 * entry chain only when the index has moved past the snapshot: both paths
 * are checked against an exact model, and a writer racing iterators makes
 * the walk happen for real. A file without dead entries is walked without
 * the index: when that path is taken and left, and damage met on the way.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NK 300

/* Library hooks (internal, reachable through the static library): force the
 * chain walk; count the iterators that walked the chain; run a function
 * between an iterator taking its snapshot's tail and reading the index. */
typedef void (*iter_hook_fn)(simdr_store *s);
extern _Atomic int simdr__iter_force_chain_walk;
extern _Atomic uint64_t simdr__iter_chain_walks;
extern _Atomic uint64_t simdr__iter_dense_bytes_per_key;
extern _Atomic(iter_hook_fn) simdr__iter_after_tail;
extern _Atomic uint64_t simdr__iter_all_live_walks;
extern _Atomic int simdr__iter_all_live;

typedef struct fixture {
    tu_fixture tu; /* the directory, the store path and the store */
    uint64_t hash[NK];
    uint8_t val[NK][64];
    size_t len[NK];
    int live[NK];
    uint64_t nlive;
} fixture;

static void set_key(fixture *f, int i, uint64_t seed) {
    char k[16];
    snprintf(k, sizeof k, "key%d", i);
    f->hash[i] = simdr_hash_key(TU_STR(k));
    f->len[i] = 1 + (size_t)(seed % 64);
    tu_fill(f->val[i], f->len[i], seed);
    assert_int_equal(simdr_put(f->tu.s, TU_STR(k), f->val[i], f->len[i], NULL), SIMDR_OK);
    f->live[i] = 1;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tu_fixture_init(&f->tu, 1);
    uint64_t seed = tu_seed(1234);
    for (int i = 0; i < NK; i++)
        set_key(f, i, tu_rand(&seed));
    for (int i = 0; i < NK; i += 3)
        set_key(f, i, tu_rand(&seed)); /* overwrites */
    for (int i = 1; i < NK; i += 6) {
        char k[16];
        snprintf(k, sizeof k, "key%d", i);
        assert_int_equal(simdr_delete(f->tu.s, TU_STR(k), NULL), SIMDR_OK);
        f->live[i] = 0;
    }
    f->nlive = 0;
    for (int i = 0; i < NK; i++)
        f->nlive += (uint64_t)f->live[i];
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tu_fixture_free(&f->tu);
    free(f);
    return 0;
}

static int find(const fixture *f, uint64_t h) {
    for (int i = 0; i < NK; i++)
        if (f->hash[i] == h)
            return i;
    return -1;
}

/* Checks one yielded entry against the model; marks it seen. */
static void check_entry(const fixture *f, const simdr_entry *e, int *seen) {
    assert_int_equal(simdr_entry_is_tombstone(e), 0);
    int i = find(f, simdr_entry_key_hash(e));
    assert_true(i >= 0);
    assert_true(f->live[i]);
    assert_int_equal(seen[i], 0);
    seen[i] = 1;
    assert_int_equal(simdr_entry_size(e), f->len[i]);
    assert_memory_equal(simdr_entry_data(e), f->val[i], f->len[i]);
}

static void test_iter_newest_once(void **state) {
    fixture *f = *state;
    for (int pass = 0; pass < 2; pass++) {
        int seen[NK] = {0};
        simdr_iter *it = NULL;
        assert_int_equal(simdr_iter_open(f->tu.s, &it), SIMDR_OK);
        const simdr_entry *e = NULL;
        uint64_t n = 0, prev_end = UINT64_MAX;
        int rc;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            check_entry(f, e, seen);
            /* newest first */
            assert_true(simdr_entry_end(e) < prev_end);
            prev_end = simdr_entry_end(e);
            n++;
        }
        assert_int_equal(rc, SIMDR_NOTFOUND);
        assert_int_equal(simdr_iter_next(it, &e), SIMDR_NOTFOUND);
        simdr_iter_close(it);
        assert_int_equal(n, f->nlive);
        assert_int_equal(n, simdr_count(f->tu.s));
        /* and again after reopen */
        assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
        f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    }
}

static void test_iter_empty_store(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "e.bin");
    simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, 0);
    simdr_iter *it = NULL;
    const simdr_entry *e = NULL;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    assert_int_equal(simdr_iter_next(it, &e), SIMDR_NOTFOUND);
    simdr_iter_close(it);
    /* only deleted keys: nothing yielded */
    tu_put_str(s, "x", "y");
    assert_int_equal(simdr_delete(s, TU_STR("x"), NULL), SIMDR_OK);
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    assert_int_equal(simdr_iter_next(it, &e), SIMDR_NOTFOUND);
    simdr_iter_close(it);
    simdr_iter_close(NULL);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_iter_snapshot(void **state) {
    fixture *f = *state;
    simdr_iter *it = NULL;
    assert_int_equal(simdr_iter_open(f->tu.s, &it), SIMDR_OK);
    const simdr_entry *e = NULL;
    int seen[NK] = {0};
    /* take the first entry, then change the store under the iterator */
    assert_int_equal(simdr_iter_next(it, &e), SIMDR_OK);
    check_entry(f, e, seen);
    simdr_entry *kept = NULL;
    assert_int_equal(simdr_entry_dup(e, &kept), SIMDR_OK);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "late%d", i);
        tu_put_str(f->tu.s, k, "late value");
    }
    char k[16];
    snprintf(k, sizeof k, "key%d", 0);
    tu_put_str(f->tu.s, k, "changed after the snapshot");
    snprintf(k, sizeof k, "key%d", 2);
    assert_int_equal(simdr_delete(f->tu.s, TU_STR(k), NULL), SIMDR_OK);
    uint64_t n = 1;
    int rc;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
        check_entry(f, e, seen); /* old values, no "late" keys, key2 still there */
        n++;
    }
    assert_int_equal(rc, SIMDR_NOTFOUND);
    assert_int_equal(n, f->nlive);
    simdr_iter_close(it);
    /* the duplicated entry outlives the iterator */
    int i = find(f, simdr_entry_key_hash(kept));
    assert_true(i >= 0);
    assert_memory_equal(simdr_entry_data(kept), f->val[i], f->len[i]);
    simdr_entry_release(kept);
    /* a new iterator sees the new state */
    assert_int_equal(simdr_iter_open(f->tu.s, &it), SIMDR_OK);
    n = 0;
    while (simdr_iter_next(it, &e) == SIMDR_OK)
        n++;
    simdr_iter_close(it);
    assert_int_equal(n, f->nlive + 50 - 1);
    assert_int_equal(n, simdr_count(f->tu.s));
}

typedef struct visit_ctx {
    const fixture *f;
    _Atomic uint64_t n;
    _Atomic uint64_t bytes;
    _Atomic uint64_t xor_hash;
    _Atomic int bad;
    uint64_t stop_after;
    pthread_mutex_t mu;
    int threads_seen;
    pthread_t tids[64];
} visit_ctx;

static int visit(void *ctx, const simdr_entry *e) {
    visit_ctx *v = ctx;
    int i = find(v->f, simdr_entry_key_hash(e));
    if (i < 0 || !v->f->live[i] || simdr_entry_is_tombstone(e) ||
        simdr_entry_size(e) != v->f->len[i] ||
        memcmp(simdr_entry_data(e), v->f->val[i], v->f->len[i]) != 0)
        atomic_fetch_add(&v->bad, 1);
    atomic_fetch_add(&v->bytes, simdr_entry_size(e));
    atomic_fetch_xor(&v->xor_hash, simdr_entry_key_hash(e));
    pthread_t me = pthread_self();
    pthread_mutex_lock(&v->mu);
    int known = 0;
    for (int t = 0; t < v->threads_seen; t++)
        known |= pthread_equal(v->tids[t], me);
    if (!known && v->threads_seen < 64)
        v->tids[v->threads_seen++] = me;
    pthread_mutex_unlock(&v->mu);
    uint64_t n = atomic_fetch_add(&v->n, 1) + 1;
    return v->stop_after && n >= v->stop_after;
}

static void expected(const fixture *f, uint64_t *bytes, uint64_t *x) {
    *bytes = 0;
    *x = 0;
    for (int i = 0; i < NK; i++)
        if (f->live[i]) {
            *bytes += f->len[i];
            *x ^= f->hash[i];
        }
}

static void test_for_each(void **state) {
    fixture *f = *state;
    uint64_t bytes, x;
    expected(f, &bytes, &x);
    visit_ctx v = {.f = f, .mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(simdr_for_each(f->tu.s, visit, &v), SIMDR_OK);
    assert_int_equal(atomic_load(&v.n), f->nlive);
    assert_int_equal(atomic_load(&v.bytes), bytes);
    assert_int_equal(atomic_load(&v.xor_hash), x);
    assert_int_equal(atomic_load(&v.bad), 0);
    assert_int_equal(v.threads_seen, 1);
    assert_true(pthread_equal(v.tids[0], pthread_self()));
    /* stop after 10 */
    visit_ctx s = {.f = f, .stop_after = 10, .mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(simdr_for_each(f->tu.s, visit, &s), SIMDR_ESTOPPED);
    assert_int_equal(atomic_load(&s.n), 10);
}

static void test_for_each_parallel(void **state) {
    fixture *f = *state;
    uint64_t bytes, x;
    expected(f, &bytes, &x);
    unsigned threads[] = {4, 1, 0};
    for (size_t t = 0; t < 3; t++) {
        visit_ctx v = {.f = f, .mu = PTHREAD_MUTEX_INITIALIZER};
        assert_int_equal(simdr_for_each_parallel(f->tu.s, threads[t], visit, &v), SIMDR_OK);
        assert_int_equal(atomic_load(&v.n), f->nlive);
        assert_int_equal(atomic_load(&v.bytes), bytes);
        assert_int_equal(atomic_load(&v.xor_hash), x);
        assert_int_equal(atomic_load(&v.bad), 0);
        if (threads[t])
            assert_true(v.threads_seen <= (int)threads[t]);
    }
    /* a stop request ends the walk early on every thread */
    visit_ctx s = {.f = f, .stop_after = 5, .mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(simdr_for_each_parallel(f->tu.s, 4, visit, &s), SIMDR_ESTOPPED);
    assert_true(atomic_load(&s.n) >= 5);
    assert_true(atomic_load(&s.n) < f->nlive);
}

/* ---- exact order against a model: puts, overwrites and deletes ---- */

#define MK 10000 /* enough keys for the iterator to sort in several buckets */

typedef struct model {
    uint64_t end[MK];  /* end offset of the key's newest entry */
    uint64_t seq[MK];  /* the op that wrote it (the value's content) */
    int live[MK];
} model;

typedef struct yielded {
    uint64_t hash, end, seq;
} yielded;

static uint64_t model_key_hash(int k) {
    char key[16];
    snprintf(key, sizeof key, "m%d", k);
    return simdr_hash_key(TU_STR(key));
}

/* Applies op seq to key k in the store and the model: a put of the 8-byte
 * value seq (padded to a length that varies with seq), or a delete. */
static void model_op(simdr_store *s, model *m, int k, uint64_t seq, int del) {
    char key[16];
    snprintf(key, sizeof key, "m%d", k);
    uint64_t end = 0;
    if (del) {
        int rc = simdr_delete(s, TU_STR(key), &end);
        if (rc == SIMDR_NOTFOUND) return;
        assert_int_equal(rc, SIMDR_OK);
        m->live[k] = 0;
    } else {
        uint8_t v[40] = {0};
        memcpy(v, &seq, sizeof seq);
        assert_int_equal(simdr_put(s, TU_STR(key), v, 8 + (size_t)(seq % 32), &end), SIMDR_OK);
        m->live[k] = 1;
        m->seq[k] = seq;
    }
    m->end[k] = end;
}

static int by_end_desc(const void *a, const void *b) {
    const yielded *x = a, *y = b;
    return x->end < y->end ? 1 : x->end > y->end ? -1 : 0;
}

/* The model's live keys, newest first: what an iterator must yield. */
static size_t model_expect(const model *m, yielded *out) {
    size_t n = 0;
    for (int k = 0; k < MK; k++)
        if (m->live[k]) out[n++] = (yielded){model_key_hash(k), m->end[k], m->seq[k]};
    qsort(out, n, sizeof *out, by_end_desc);
    return n;
}

/* Everything an iterator yields, checked for shape on the way. */
static size_t collect(simdr_store *s, yielded *out, size_t cap) {
    simdr_iter *it = NULL;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    const simdr_entry *e;
    size_t n = 0;
    int rc;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
        assert_true(n < cap);
        assert_false(simdr_entry_is_tombstone(e));
        assert_true(simdr_entry_size(e) >= 8);
        uint64_t seq;
        memcpy(&seq, simdr_entry_data(e), sizeof seq);
        assert_int_equal(simdr_entry_size(e), 8 + seq % 32);
        out[n++] = (yielded){simdr_entry_key_hash(e), simdr_entry_end(e), seq};
    }
    assert_int_equal(rc, SIMDR_NOTFOUND);
    simdr_iter_close(it);
    return n;
}

static void expect_same(const yielded *got, size_t n_got, const yielded *want, size_t n_want) {
    assert_int_equal(n_got, n_want);
    for (size_t i = 0; i < n_got; i++) {
        assert_int_equal(got[i].hash, want[i].hash);
        assert_int_equal(got[i].end, want[i].end);
        assert_int_equal(got[i].seq, want[i].seq);
    }
}

/* Both ways of iterating yield the model's sequence exactly. */
static void expect_model(simdr_store *s, const model *m) {
    static yielded want[MK], got[MK];
    size_t n_want = model_expect(m, want);
    uint64_t walks = atomic_load(&simdr__iter_chain_walks);
    expect_same(got, collect(s, got, MK), want, n_want);
    /* the index read both ways: live entries marked in a bitmap while the
     * chain is walked, and their offsets sorted (also where no entry is
     * dead, which would be walked without the index) */
    atomic_store(&simdr__iter_all_live, 0);
    uint64_t per_key = atomic_load(&simdr__iter_dense_bytes_per_key);
    atomic_store(&simdr__iter_dense_bytes_per_key, UINT64_MAX);
    expect_same(got, collect(s, got, MK), want, n_want);
    atomic_store(&simdr__iter_dense_bytes_per_key, 0);
    expect_same(got, collect(s, got, MK), want, n_want);
    atomic_store(&simdr__iter_dense_bytes_per_key, per_key);
    assert_int_equal(atomic_load(&simdr__iter_chain_walks), walks); /* read the index */
    atomic_store(&simdr__iter_force_chain_walk, 1);
    expect_same(got, collect(s, got, MK), want, n_want);
    atomic_store(&simdr__iter_force_chain_walk, 0);
    atomic_store(&simdr__iter_all_live, 1);
    assert_int_equal(atomic_load(&simdr__iter_chain_walks), walks + 1);
    assert_int_equal(simdr_count(s), n_want);
}

/* An iterator of s yields the model's live keys, newest first, with their
 * values (offsets are not compared: compaction moves them), and takes the
 * path for files without dead entries exactly when all_live says so. */
static void expect_keys(simdr_store *s, const model *m, int all_live) {
    static yielded want[MK], got[MK];
    size_t n_want = model_expect(m, want);
    uint64_t before = atomic_load(&simdr__iter_all_live_walks);
    size_t n_got = collect(s, got, MK);
    assert_int_equal(atomic_load(&simdr__iter_all_live_walks), before + (all_live ? 1 : 0));
    assert_int_equal(n_got, n_want);
    for (size_t i = 0; i < n_got; i++) {
        assert_int_equal(got[i].hash, want[i].hash);
        assert_int_equal(got[i].seq, want[i].seq);
    }
}

/* Sets the model's ends of the live keys among [from, to) from what an
 * iterator yields (keys written in a batch, or moved by a compaction). */
static void learn_ends(simdr_store *s, model *m, int from, int to) {
    static yielded got[MK];
    size_t n = collect(s, got, MK);
    for (int k = from; k < to; k++) {
        if (!m->live[k]) continue;
        uint64_t h = model_key_hash(k);
        for (size_t i = 0; i < n; i++)
            if (got[i].hash == h) m->end[k] = got[i].end;
        assert_true(m->end[k] != 0);
    }
}

/* A store written only with new keys has no dead entry, and is iterated
 * without reading the index; an overwrite or a delete (written through this
 * handle, or seen by a read-only one through refresh, or in the file at a
 * reopen) turns that off until a compaction leaves none again. A delete of
 * an absent key writes nothing and changes nothing. */
static void test_iter_all_live(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "alllive.bin");
    simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, 0);
    static model m;
    memset(&m, 0, sizeof m);
    uint64_t seq = 1;
    expect_keys(s, &m, 1); /* empty */
    for (int k = 0; k < 300; k++) model_op(s, &m, k, seq++, 0);
    /* a batch of new keys */
    simdr_kv items[20];
    char keys[20][16];
    uint8_t vals[20][40] = {{0}};
    for (int i = 0; i < 20; i++) {
        int k = 300 + i;
        snprintf(keys[i], sizeof keys[i], "m%d", k);
        uint64_t v = seq++;
        memcpy(vals[i], &v, 8);
        items[i] = (simdr_kv){keys[i], strlen(keys[i]), vals[i], 8 + (size_t)(v % 32)};
        m.live[k] = 1;
        m.seq[k] = v;
    }
    assert_int_equal(simdr_put_batch(s, items, 20, NULL), SIMDR_OK);
    learn_ends(s, &m, 300, 320);
    expect_keys(s, &m, 1);
    expect_model(s, &m);
    model_op(s, &m, 5000, seq++, 1); /* absent: nothing written */
    expect_keys(s, &m, 1);

    simdr_store *ro = tu_open(p, SIMDR_OPEN_READONLY, 0);
    expect_keys(ro, &m, 1);
    model_op(s, &m, 7, seq++, 0); /* an overwrite */
    expect_keys(s, &m, 0);
    assert_int_equal(simdr_refresh(ro, NULL), SIMDR_OK);
    expect_keys(ro, &m, 0);
    model_op(s, &m, 400, seq++, 0); /* new keys after it change nothing */
    expect_keys(s, &m, 0);
    expect_model(s, &m);
    /* a batch of new keys and one overwrite, on a file without dead entries */
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    expect_keys(s, &m, 1);
    learn_ends(s, &m, 0, 600);
    for (int i = 0; i < 20; i++) {
        int k = i < 19 ? 500 + i : 11;
        snprintf(keys[i], sizeof keys[i], "m%d", k);
        uint64_t v = seq++;
        memcpy(vals[i], &v, 8);
        items[i] = (simdr_kv){keys[i], strlen(keys[i]), vals[i], 8 + (size_t)(v % 32)};
        m.live[k] = 1;
        m.seq[k] = v;
    }
    assert_int_equal(simdr_put_batch(s, items, 20, NULL), SIMDR_OK);
    learn_ends(s, &m, 500, 519);
    learn_ends(s, &m, 11, 12);
    expect_keys(s, &m, 0);

    assert_int_equal(simdr_compact(s), SIMDR_OK);
    expect_keys(s, &m, 1);
    assert_int_equal(simdr_refresh(ro, NULL), SIMDR_OK); /* follows the compaction */
    expect_keys(ro, &m, 1);
    model_op(s, &m, 3, seq++, 1); /* a delete */
    expect_keys(s, &m, 0);
    assert_int_equal(simdr_refresh(ro, NULL), SIMDR_OK);
    expect_keys(ro, &m, 0);
    assert_int_equal(simdr_close(ro), SIMDR_OK);

    /* the count at a reopen: the chain is walked, no hint (few keys) */
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(p, SIMDR_OPEN_EXISTING, 0);
    expect_keys(s, &m, 0);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    learn_ends(s, &m, 0, 600);
    model_op(s, &m, 401, seq++, 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(p, SIMDR_OPEN_EXISTING, 0);
    expect_keys(s, &m, 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

/* Overwrites the 8-byte link (prev) of the entry ending at end, through a
 * descriptor of its own, as damage after open would (the map shares the
 * page cache). Returns the link it replaced. */
static uint64_t set_link(const char *path, uint64_t end, uint64_t link) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t old[8], now[8];
    assert_int_equal(pread(fd, old, 8, (off_t)(end - 20 + 8)), 8);
    for (int i = 0; i < 8; i++) now[i] = (uint8_t)(link >> (8 * i));
    assert_int_equal(pwrite(fd, now, 8, (off_t)(end - 20 + 8)), 8);
    close(fd);
    uint64_t was = 0;
    for (int i = 0; i < 8; i++) was |= (uint64_t)old[i] << (8 * i);
    return was;
}

static int count_entries(void *ctx, const simdr_entry *e) {
    (void)e;
    (*(int *)ctx)++;
    return 0;
}

typedef struct walk_result {
    int ok, errors, breaks, skips;
    int stale; /* yields of stale_hash whose 8-byte prefix is not fresh_seq */
} walk_result;

static uint64_t stale_hash, fresh_seq;

/* One iterator to its end, going on past errors. */
static walk_result walk_all(simdr_store *s) {
    walk_result w = {0, 0, 0, 0, 0};
    simdr_iter *it;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    const simdr_entry *e;
    int rc;
    while ((rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
        assert_true(w.ok + w.errors < 1000);
        if (rc == SIMDR_OK) {
            w.ok++;
            uint64_t seq = 0;
            if (simdr_entry_size(e) >= 8) memcpy(&seq, simdr_entry_data(e), 8);
            w.stale += simdr_entry_key_hash(e) == stale_hash && seq != fresh_seq;
            continue;
        }
        assert_int_equal(rc, SIMDR_ECORRUPT);
        w.errors++;
        w.breaks += strstr(simdr_last_error(), "chain of entries breaks") != NULL;
        w.skips += strstr(simdr_last_error(), "skips 1 live entries") != NULL;
    }
    simdr_iter_close(it);
    return w;
}

/* A link damaged after open (the open found the chain sound) is reported by
 * the walk as SIMDR_ECORRUPT, never taken for the start of the file with the
 * entries below it missing: a link that does not lead down, on a file with
 * and without dead entries; a link that skips entries, against the bitmap
 * of live ones. */
static void test_iter_broken_link_reported(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    for (int dead = 0; dead < 2; dead++) {
        tu_join(p, sizeof p, dir, dead ? "broken_dead.bin" : "broken.bin");
        simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, 0);
        static model m;
        memset(&m, 0, sizeof m);
        uint64_t seq = 1;
        for (int k = 0; k < 100; k++) model_op(s, &m, k, seq++, 0);
        if (dead) model_op(s, &m, 99, seq++, 0);
        expect_keys(s, &m, !dead);
        uint64_t was = set_link(p, m.end[50], m.end[50] + 64);
        int n = 0;
        assert_int_equal(simdr_for_each(s, count_entries, &n), SIMDR_ECORRUPT);
        assert_int_equal(n, 49); /* the keys above the damaged entry */
        /* Iterated on: the damaged entry, then the break, then the end. */
        walk_result w = walk_all(s);
        assert_int_equal(w.ok, 49);
        assert_int_equal(w.errors, 2);
        assert_true(w.breaks);
        set_link(p, m.end[50], was);
        n = 0;
        assert_int_equal(simdr_for_each(s, count_entries, &n), SIMDR_OK);
        assert_int_equal(n, 100);
        if (dead) {
            /* Key 50's entry now links below key 49's: its value fails
             * its check, and key 49, never met, is reported at the end. */
            set_link(p, m.end[50], m.end[48]);
            w = walk_all(s);
            assert_int_equal(w.ok, 98);
            assert_int_equal(w.errors, 2);
            assert_true(w.skips);
            set_link(p, m.end[50], was);
        }
        /* The walk with a set of seen keys (the index ahead of the
         * snapshot): a link pointing up, and one into the first bytes of
         * the file, where no entry can end. */
        atomic_store(&simdr__iter_force_chain_walk, 1);
        for (int to = 0; to < 2; to++) {
            was = set_link(p, m.end[50], to ? 5 : m.end[50] + 64);
            w = walk_all(s);
            assert_true(w.ok <= 49);
            assert_true(w.errors >= 1);
            assert_true(w.breaks);
            set_link(p, m.end[50], was);
        }
        atomic_store(&simdr__iter_force_chain_walk, 0);
        /* simdr_check walks the same chain */
        was = set_link(p, m.end[50], 5);
        simdr_check_report rep;
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_ECORRUPT);
        assert_true(rep.bad_entries >= 1);
        set_link(p, m.end[50], was);
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    tu_rmtree(dir);
    free(dir);
}

/* Flips bits of the key hash in the metadata of the entry ending at end
 * (the format's CRC covers the value, not this hash). */
static void flip_hash_bits(const char *path, uint64_t end, uint64_t mask) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b[8];
    assert_int_equal(pread(fd, b, 8, (off_t)(end - 20)), 8);
    for (int i = 0; i < 8; i++) b[i] ^= (uint8_t)(mask >> (8 * i));
    assert_int_equal(pwrite(fd, b, 8, (off_t)(end - 20)), 8);
    close(fd);
}

/* A key hash damaged in its metadata after open, in the 16 bits the index
 * keeps or in bits that move the key's home slot: a lookup of the key
 * reports SIMDR_ECORRUPT on every read path instead of answering that the
 * key is absent; the walk with a set of seen keys neither resurrects a
 * deleted key whose tombstone lost its hash nor yields an older version,
 * under its own or a damaged hash, as the newest. */
static void test_iter_damaged_key_hash(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "hash.bin");
    simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, 0);
    static model m;
    memset(&m, 0, sizeof m);
    uint64_t seq = 1;
    for (int k = 0; k < 50; k++) model_op(s, &m, k, seq++, 0);
    uint64_t old10 = m.end[10];
    model_op(s, &m, 10, seq++, 0); /* key 10 again */
    model_op(s, &m, 20, seq++, 1); /* key 20 deleted */

    /* key 10's newest entry: a bit of the hash's tag, then one that moves
     * the key's home slot */
    for (int round = 0; round < 2; round++) {
        uint64_t mask = round ? UINT64_C(1) << 31 : UINT64_C(1) << 60;
        flip_hash_bits(p, m.end[10], mask);
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR("m10"), &e), SIMDR_ECORRUPT);
        assert_int_equal(simdr_exists(s, TU_STR("m10")), SIMDR_ECORRUPT);
        simdr_read scope;
        assert_int_equal(simdr_read_begin(s, &scope), SIMDR_OK);
        const void *v;
        size_t vlen;
        assert_int_equal(simdr_read_get(&scope, TU_STR("m10"), &v, &vlen), SIMDR_ECORRUPT);
        simdr_read_end(&scope);
        simdr_key k = {"m10", 3};
        assert_int_equal(simdr_get_batch(s, &k, 1, &e), SIMDR_ECORRUPT);
        /* the walk never yields the older version as key 10's: it reports
         * it (and yields or reports the newest, under its damaged hash) */
        stale_hash = simdr_hash_key(TU_STR("m10"));
        fresh_seq = m.seq[10];
        atomic_store(&simdr__iter_force_chain_walk, 1);
        walk_result w = walk_all(s);
        atomic_store(&simdr__iter_force_chain_walk, 0);
        assert_int_equal(w.stale, 0);
        assert_true(w.errors >= 1);
        assert_int_equal(w.ok + w.errors, 50);
        flip_hash_bits(p, m.end[10], mask);
        assert_int_equal(simdr_get(s, TU_STR("m10"), &e), SIMDR_OK);
        simdr_entry_release(e);
    }
    /* key 20's tombstone loses its hash: the deleted key stays deleted */
    flip_hash_bits(p, m.end[20], UINT64_C(1) << 31);
    atomic_store(&simdr__iter_force_chain_walk, 1);
    walk_result w = walk_all(s);
    assert_int_equal(w.ok, 49); /* 50 keys, one deleted */
    assert_int_equal(w.errors, 1);
    flip_hash_bits(p, m.end[20], UINT64_C(1) << 31);
    /* key 10's older entry takes a hash the store never held */
    flip_hash_bits(p, old10, UINT64_C(0xff) << 8);
    w = walk_all(s);
    assert_int_equal(w.ok, 49);
    assert_int_equal(w.errors, 1);
    flip_hash_bits(p, old10, UINT64_C(0xff) << 8);
    w = walk_all(s);
    atomic_store(&simdr__iter_force_chain_walk, 0);
    assert_int_equal(w.ok, 49);
    assert_int_equal(w.errors, 0);
    /* key 10 written again while its newest entry's hash is damaged (in bits
     * that move its home slot): the new entry takes the damaged one's slot,
     * so no walk yields both (the chain walk reports the damaged one) and
     * the count stays */
    for (int round = 0; round < 2; round++) {
        uint64_t mask = round ? UINT64_C(1) << 30 : UINT64_C(1) << 31;
        flip_hash_bits(p, m.end[10], mask);
        model_op(s, &m, 10, seq++, 0);
        assert_int_equal(simdr_count(s), 49);
        for (int how = 0; how < 2; how++) {
            atomic_store(&simdr__iter_all_live, 0);
            atomic_store(&simdr__iter_force_chain_walk, how);
            w = walk_all(s);
            atomic_store(&simdr__iter_force_chain_walk, 0);
            atomic_store(&simdr__iter_all_live, 1);
            assert_int_equal(w.ok, 49);
            /* the chain walk meets the damaged older entry and says so */
            assert_int_equal(w.errors, how * (round + 1)); /* each round leaves one */
        }
        expect_keys(s, &m, 0); /* newest values, in order, by the index */
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_iter_exact_order(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "order.bin");
    for (int layout = 0; layout < 2; layout++) {
        simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, layout);
        static model m;
        memset(&m, 0, sizeof m);
        expect_model(s, &m); /* empty */
        uint64_t rnd = tu_seed(99), seq = 1;
        for (int k = 0; k < MK; k++) model_op(s, &m, k, seq++, 0);
        expect_model(s, &m); /* no overwrites */
        for (int i = 0; i < 3 * MK; i++) {
            int k = (int)(tu_rand(&rnd) % MK);
            model_op(s, &m, k, seq++, tu_rand(&rnd) % 4 == 0);
        }
        expect_model(s, &m); /* overwrites, deletes, keys deleted and put again */
        for (int k = 0; k < MK; k++) model_op(s, &m, k, seq++, 1);
        expect_model(s, &m); /* everything deleted */
        model_op(s, &m, 7, seq++, 0);
        expect_model(s, &m);
        /* the index loaded from the hint file, and rebuilt from the chain */
        assert_int_equal(simdr_close(s), SIMDR_OK);
        s = tu_open(p, SIMDR_OPEN_EXISTING, 0);
        expect_model(s, &m);
        assert_int_equal(simdr_compact(s), SIMDR_OK);
        for (int k = 0; k < MK; k++) m.end[k] = 0;
        yielded one[1];
        assert_int_equal(collect(s, one, 1), 1);
        m.end[7] = one[0].end; /* compaction moved it */
        expect_model(s, &m);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        remove(p);
        char hint[4200];
        snprintf(hint, sizeof hint, "%s.hint", p);
        remove(hint);
        snprintf(hint, sizeof hint, "%s.simdr", p);
        remove(hint);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- the offset sort the iterator, the parallel visit and compaction use ---- */

void simdr__sort_offsets(uint64_t *v, uint64_t n);

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_sort_offsets(void **state) {
    (void)state;
    static const uint64_t sizes[] = {0, 1, 2, 31, 32, 33, 100, 513, 4096, 100000, 300000};
    static const unsigned widths[] = {1, 8, 20, 27, 47, 64};
    uint64_t rnd = tu_seed(7);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
            for (int skew = 0; skew < 2; skew++) {
                uint64_t n = sizes[si];
                uint64_t *v = malloc((n ? n : 1) * sizeof *v);
                uint64_t *want = malloc((n ? n : 1) * sizeof *want);
                assert_non_null(v);
                assert_non_null(want);
                uint64_t mask = widths[wi] == 64 ? UINT64_MAX : (UINT64_C(1) << widths[wi]) - 1;
                for (uint64_t i = 0; i < n; i++) {
                    v[i] = tu_rand(&rnd) & mask;
                    /* skewed: most values crowd into one narrow range, with repeats */
                    if (skew && i % 8) v[i] = (mask / 3) + (tu_rand(&rnd) & 1023 & mask);
                }
                memcpy(want, v, (size_t)n * sizeof *v);
                qsort(want, (size_t)n, sizeof *want, cmp_u64);
                simdr__sort_offsets(v, n);
                assert_memory_equal(v, want, (size_t)n * sizeof *v);
                free(v);
                free(want);
            }
}

/* ---- writes between the snapshot and the index read ---- */

static model hook_model;
static uint64_t hook_seq;

/* Overwrites m1, deletes m2 and adds a new key m450, as a writer that got in
 * just after the iterator took its tail would. */
static void write_under_open(simdr_store *s) {
    model_op(s, &hook_model, 1, hook_seq++, 0);
    model_op(s, &hook_model, 2, hook_seq++, 1);
    model_op(s, &hook_model, 450, hook_seq++, 0);
}

static void test_iter_writes_during_open(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "during.bin");
    simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, 0);
    memset(&hook_model, 0, sizeof hook_model);
    hook_seq = 1;
    for (int k = 0; k < 100; k++) model_op(s, &hook_model, k, hook_seq++, 0);
    model_op(s, &hook_model, 5, hook_seq++, 1);
    static yielded want[MK], got[MK];
    size_t n_want = model_expect(&hook_model, want);
    uint64_t walks = atomic_load(&simdr__iter_chain_walks);
    atomic_store(&simdr__iter_after_tail, write_under_open);
    size_t n_got = collect(s, got, MK);
    atomic_store(&simdr__iter_after_tail, NULL);
    /* The index had moved past the snapshot: the chain was walked, and the
     * three writes are not seen. */
    assert_int_equal(atomic_load(&simdr__iter_chain_walks), walks + 1);
    expect_same(got, n_got, want, n_want);
    expect_model(s, &hook_model); /* a new iterator sees them */
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

/* ---- iterators racing a writer yield exactly their snapshot ---- */

#define RK 300
#define ROPS 400000
#define RMAX_ITERS 3000

typedef struct race_op {
    uint64_t end;
    int key, del;
    uint64_t seq;
} race_op;

typedef struct race {
    simdr_store *s;
    race_op *log; /* written by the writer, read after it is joined */
    size_t nlog;
    _Atomic int stop;
    _Atomic int wrote; /* set after the writer's first write */
} race;

static void *race_writer(void *arg) {
    race *r = arg;
    uint64_t rnd = 4242;
    uint64_t seq = 1;
    while (r->nlog < ROPS && !atomic_load(&r->stop)) {
        int k = (int)(tu_rand(&rnd) % RK), del = tu_rand(&rnd) % 5 == 0;
        char key[16];
        snprintf(key, sizeof key, "m%d", k);
        uint64_t end = 0;
        int rc;
        if (del) {
            rc = simdr_delete(r->s, TU_STR(key), &end);
        } else {
            uint8_t v[40] = {0};
            memcpy(v, &seq, sizeof seq);
            rc = simdr_put(r->s, TU_STR(key), v, 8 + (size_t)(seq % 32), &end);
        }
        if (rc == SIMDR_NOTFOUND) continue;
        if (rc != SIMDR_OK) break;
        r->log[r->nlog++] = (race_op){end, k, del, seq++};
        atomic_store(&r->wrote, 1);
    }
    atomic_store(&r->wrote, 1); /* also when it stopped before writing */
    return NULL;
}

typedef struct race_iter {
    uint64_t size_before, size_after; /* the snapshot's tail lies between */
    size_t n;
    yielded *got;
} race_iter;

/* Whether got equals the state after some prefix of the log ending in
 * [before, after]. */
static int matches_a_snapshot(const race *r, const race_iter *ri, model *m, yielded *want) {
    memset(m, 0, sizeof *m);
    size_t i = 0;
    for (; i < r->nlog && r->log[i].end <= ri->size_before; i++) {
        const race_op *op = &r->log[i];
        m->live[op->key] = !op->del;
        m->end[op->key] = op->end;
        m->seq[op->key] = op->seq;
    }
    for (;;) {
        size_t n = model_expect(m, want);
        if (n == ri->n && memcmp(want, ri->got, n * sizeof *want) == 0) return 1;
        if (i == r->nlog || r->log[i].end > ri->size_after) return 0;
        const race_op *op = &r->log[i++];
        m->live[op->key] = !op->del;
        m->end[op->key] = op->end;
        m->seq[op->key] = op->seq;
    }
}

/* Widens the window between an iterator reading the tail and reading the
 * index, so the writer thread lands a write inside it even when a loaded
 * machine schedules the two threads far apart; the write itself is still
 * the other thread's. */
static void pause_after_tail(simdr_store *s) {
    (void)s;
    /* Every other iterator only: the rest race the writer unhelped and
     * mostly take the index path. */
    static _Atomic unsigned calls;
    if (atomic_fetch_add(&calls, 1) % 2) return;
    sched_yield();
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
}

static void test_iter_racing_writer(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "race.bin");
    race r = {.s = tu_open(p, SIMDR_OPEN_CREATE, 0)};
    r.log = calloc(ROPS, sizeof *r.log);
    race_iter *iters = calloc(RMAX_ITERS, sizeof *iters);
    assert_non_null(r.log);
    assert_non_null(iters);
    uint64_t walks = atomic_load(&simdr__iter_chain_walks);
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, race_writer, &r), 0);
    /* Iterators of an empty store are quick enough to use up their number
     * before a writer thread that has not been scheduled yet writes once. */
    while (!atomic_load(&r.wrote)) sched_yield();
    atomic_store(&simdr__iter_after_tail, pause_after_tail);
    size_t niters = 0;
    time_t t0 = time(NULL);
    /* Until the writer has caught iterators mid-open a few times (then they
     * walk the chain), and a bounded time or number of iterators. */
    while (niters < RMAX_ITERS && time(NULL) - t0 < 20 &&
           (niters < 200 || atomic_load(&simdr__iter_chain_walks) - walks < 3)) {
        race_iter *ri = &iters[niters++];
        ri->got = malloc(RK * sizeof *ri->got);
        assert_non_null(ri->got);
        ri->size_before = simdr_file_size(r.s);
        simdr_iter *it = NULL;
        assert_int_equal(simdr_iter_open(r.s, &it), SIMDR_OK);
        ri->size_after = simdr_file_size(r.s);
        const simdr_entry *e;
        int rc;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            assert_true(ri->n < RK);
            uint64_t seq;
            assert_true(simdr_entry_size(e) >= 8);
            memcpy(&seq, simdr_entry_data(e), sizeof seq);
            ri->got[ri->n++] = (yielded){simdr_entry_key_hash(e), simdr_entry_end(e), seq};
        }
        assert_int_equal(rc, SIMDR_NOTFOUND);
        simdr_iter_close(it);
    }
    atomic_store(&simdr__iter_after_tail, NULL);
    atomic_store(&r.stop, 1);
    pthread_join(tid, NULL);
    uint64_t walked = atomic_load(&simdr__iter_chain_walks) - walks;
    print_message("%zu iterators raced %zu writes; %llu walked the chain\n", niters, r.nlog,
                  (unsigned long long)walked);
    assert_true(walked > 0);
    static model m;
    static yielded want[MK];
    for (size_t i = 0; i < niters; i++) {
        assert_true(matches_a_snapshot(&r, &iters[i], &m, want));
        free(iters[i].got);
    }
    free(iters);
    free(r.log);
    assert_int_equal(simdr_close(r.s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

/* ---- a file without dead entries, iterated while a writer adds keys ---- */

#define LK 20000

typedef struct load_race {
    simdr_store *s;
    _Atomic int acked;       /* keys n0..n(acked-1) are written */
    _Atomic int overwritten; /* n7 has been written a second time */
} load_race;

static void *load_writer(void *arg) {
    load_race *r = arg;
    enum { B = 10 };
    for (int i = 0; i < LK; i += B) {
        char keys[B][16];
        uint64_t vals[B];
        simdr_kv kv[B];
        for (int j = 0; j < B; j++) {
            snprintf(keys[j], sizeof keys[j], "n%d", i + j);
            vals[j] = (uint64_t)(i + j);
            kv[j] = (simdr_kv){keys[j], strlen(keys[j]), &vals[j], 8};
        }
        if (simdr_put_batch(r->s, kv, B, NULL) != SIMDR_OK) break;
        atomic_store(&r->acked, i + B);
        if (i == LK / 2) {
            uint64_t seven = 7;
            if (simdr_put(r->s, TU_STR("n7"), &seven, 8, NULL) != SIMDR_OK) break;
            atomic_store(&r->overwritten, 1);
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&r->acked, LK + 1); /* done (or failed: the count tells) */
    return NULL;
}

/* Iterators racing a writer that adds new keys (and, half-way, writes one
 * key again): each yields every key acknowledged before it opened, no key
 * twice, each with its own value, in descending file order, never a key
 * written after it opened beyond the batch in flight; before the overwrite
 * they take the path for files without dead entries, after it they do not. */
static void test_iter_all_live_racing_writer(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char p[4096];
    tu_join(p, sizeof p, dir, "loadrace.bin");
    load_race r = {.s = tu_open(p, SIMDR_OPEN_CREATE, 0)};
    uint8_t *seen = malloc(LK);
    assert_non_null(seen);
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, load_writer, &r), 0);
    int iters_all_live = 0, iters_after_overwrite = 0;
    while (atomic_load(&r.acked) <= LK) {
        int before = atomic_load(&r.acked), overwritten = atomic_load(&r.overwritten);
        uint64_t walks = atomic_load(&simdr__iter_all_live_walks);
        simdr_iter *it;
        assert_int_equal(simdr_iter_open(r.s, &it), SIMDR_OK);
        int all_live = atomic_load(&simdr__iter_all_live_walks) != walks;
        memset(seen, 0, LK);
        const simdr_entry *e;
        int rc, n = 0;
        uint64_t last_end = UINT64_MAX;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            uint64_t v;
            assert_int_equal(simdr_entry_size(e), 8);
            memcpy(&v, simdr_entry_data(e), 8);
            assert_true(v < LK);
            assert_int_equal(seen[v], 0);
            seen[v] = 1;
            char key[16];
            snprintf(key, sizeof key, "n%d", (int)v);
            assert_int_equal(simdr_entry_key_hash(e), simdr_hash_key(TU_STR(key)));
            assert_true(simdr_entry_end(e) < last_end);
            last_end = simdr_entry_end(e);
            n++;
        }
        assert_int_equal(rc, SIMDR_NOTFOUND);
        simdr_iter_close(it);
        int after = atomic_load(&r.acked);
        assert_true(n >= before);
        assert_true(n <= (after > LK ? LK : after + 10));
        for (int i = 0; i < before; i++) assert_int_equal(seen[i], 1);
        iters_all_live += all_live;
        if (overwritten) {
            assert_false(all_live);
            iters_after_overwrite++;
        }
    }
    pthread_join(tid, NULL);
    assert_int_equal(atomic_load(&r.acked), LK + 1);
    print_message("%d iterators without dead entries, %d after the overwrite\n", iters_all_live,
                  iters_after_overwrite);
    assert_true(iters_all_live > 0);
    assert_int_equal(simdr_count(r.s), LK);
    free(seen);
    assert_int_equal(simdr_close(r.s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_iter_newest_once, setup, teardown),
        cmocka_unit_test(test_iter_empty_store),
        cmocka_unit_test_setup_teardown(test_iter_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_for_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_for_each_parallel, setup, teardown),
        cmocka_unit_test(test_sort_offsets),
        cmocka_unit_test(test_iter_exact_order),
        cmocka_unit_test(test_iter_writes_during_open),
        cmocka_unit_test(test_iter_racing_writer),
        cmocka_unit_test(test_iter_all_live),
        cmocka_unit_test(test_iter_broken_link_reported),
        cmocka_unit_test(test_iter_damaged_key_hash),
        cmocka_unit_test(test_iter_all_live_racing_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
