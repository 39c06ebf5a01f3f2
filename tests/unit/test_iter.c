/*
 * test_iter.c - unit tests of iteration in libsimdr: the iterator yields the
 * newest version of each live key once, newest first, tombstones and deleted
 * keys skipped; snapshot semantics; entries kept with simdr_entry_dup;
 * simdr_for_each (with stop) and simdr_for_each_parallel on 4 threads.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NK 300

typedef struct fixture {
    char *dir;
    char path[4096];
    simdr_store *s;
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
    assert_int_equal(simdr_put(f->s, TU_STR(k), f->val[i], f->len[i], NULL), SIMDR_OK);
    f->live[i] = 1;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_mkdtemp();
    tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    f->s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    uint64_t seed = tu_seed(1234);
    for (int i = 0; i < NK; i++)
        set_key(f, i, tu_rand(&seed));
    for (int i = 0; i < NK; i += 3)
        set_key(f, i, tu_rand(&seed)); /* overwrites */
    for (int i = 1; i < NK; i += 6) {
        char k[16];
        snprintf(k, sizeof k, "key%d", i);
        assert_int_equal(simdr_delete(f->s, TU_STR(k), NULL), SIMDR_OK);
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
    simdr_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
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
        assert_int_equal(simdr_iter_open(f->s, &it), SIMDR_OK);
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
        assert_int_equal(n, simdr_count(f->s));
        /* and again after reopen */
        assert_int_equal(simdr_close(f->s), SIMDR_OK);
        f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
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
    assert_int_equal(simdr_iter_open(f->s, &it), SIMDR_OK);
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
        tu_put_str(f->s, k, "late value");
    }
    char k[16];
    snprintf(k, sizeof k, "key%d", 0);
    tu_put_str(f->s, k, "changed after the snapshot");
    snprintf(k, sizeof k, "key%d", 2);
    assert_int_equal(simdr_delete(f->s, TU_STR(k), NULL), SIMDR_OK);
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
    assert_int_equal(simdr_iter_open(f->s, &it), SIMDR_OK);
    n = 0;
    while (simdr_iter_next(it, &e) == SIMDR_OK)
        n++;
    simdr_iter_close(it);
    assert_int_equal(n, f->nlive + 50 - 1);
    assert_int_equal(n, simdr_count(f->s));
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
    assert_int_equal(simdr_for_each(f->s, visit, &v), SIMDR_OK);
    assert_int_equal(atomic_load(&v.n), f->nlive);
    assert_int_equal(atomic_load(&v.bytes), bytes);
    assert_int_equal(atomic_load(&v.xor_hash), x);
    assert_int_equal(atomic_load(&v.bad), 0);
    assert_int_equal(v.threads_seen, 1);
    assert_true(pthread_equal(v.tids[0], pthread_self()));
    /* stop after 10 */
    visit_ctx s = {.f = f, .stop_after = 10, .mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(simdr_for_each(f->s, visit, &s), SIMDR_ESTOPPED);
    assert_int_equal(atomic_load(&s.n), 10);
}

static void test_for_each_parallel(void **state) {
    fixture *f = *state;
    uint64_t bytes, x;
    expected(f, &bytes, &x);
    unsigned threads[] = {4, 1, 0};
    for (size_t t = 0; t < 3; t++) {
        visit_ctx v = {.f = f, .mu = PTHREAD_MUTEX_INITIALIZER};
        assert_int_equal(simdr_for_each_parallel(f->s, threads[t], visit, &v), SIMDR_OK);
        assert_int_equal(atomic_load(&v.n), f->nlive);
        assert_int_equal(atomic_load(&v.bytes), bytes);
        assert_int_equal(atomic_load(&v.xor_hash), x);
        assert_int_equal(atomic_load(&v.bad), 0);
        if (threads[t])
            assert_true(v.threads_seen <= (int)threads[t]);
    }
    /* a stop request ends the walk early on every thread */
    visit_ctx s = {.f = f, .stop_after = 5, .mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(simdr_for_each_parallel(f->s, 4, visit, &s), SIMDR_ESTOPPED);
    assert_true(atomic_load(&s.n) >= 5);
    assert_true(atomic_load(&s.n) < f->nlive);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_iter_newest_once, setup, teardown),
        cmocka_unit_test(test_iter_empty_store),
        cmocka_unit_test_setup_teardown(test_iter_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_for_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_for_each_parallel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
