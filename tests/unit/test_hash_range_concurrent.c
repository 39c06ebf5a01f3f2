/*
 * test_hash_range_concurrent.c - simdr_hashes_in_range while other threads
 * write, delete, sync and compact the store, with hashes chosen against the
 * index's order through the *_hashed calls: many keys sharing their low 32
 * bits (one home slot, a long probe run), low bits clustered at 0 and at
 * 0xffffffff (runs that wrap around the end of the table), hash 0. Keys
 * written before the walks and only ever overwritten are present
 * throughout: every walk of the hash space, in steps of any width (1 to the
 * whole space), sees each of them exactly once, each inside its step, while
 * the index grows, the map is replaced (its reserve is lowered) and
 * compactions switch the file. Labelled concurrency, so ThreadSanitizer runs
 * it.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define SPACE (UINT64_C(1) << 32)
#define STABLE 700
#define CHURN_KEYS 3000
#define WALKS 200
#define OUT_CAP 16384 /* more than the store ever holds */

static uint64_t stable[STABLE]; /* sorted after they are made */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The adversarial hashes: distinct 64-bit values, many sharing low bits. */
static void make_stable_hashes(void) {
    int n = 0;
    stable[n++] = 0;
    stable[n++] = UINT64_C(0xffffffff);
    /* One home slot for 150 keys, then clusters near 0 and near 2^32. */
    for (uint64_t i = 1; i <= 150; i++) stable[n++] = i << 32 | UINT64_C(0x80000000);
    for (uint64_t i = 1; i <= 150; i++) stable[n++] = i << 40 | (i % 16);
    for (uint64_t i = 1; i <= 150; i++) stable[n++] = i << 40 | (0xffffffffu - i % 16);
    uint64_t r = 0x5eed;
    while (n < STABLE) stable[n++] = tu_rand(&r) | 1; /* spread (checked distinct below) */
    qsort(stable, STABLE, sizeof *stable, cmp_u64);
    for (int i = 1; i < STABLE; i++) assert_true(stable[i] != stable[i - 1]);
}

static int stable_index(uint64_t h) {
    const uint64_t *hit = bsearch(&h, stable, STABLE, sizeof *stable, cmp_u64);
    return hit ? (int)(hit - stable) : -1;
}

static void put_stable(simdr_store *s, int i, uint64_t version) {
    uint64_t v[2] = {stable[i], version};
    assert_int_equal(simdr_put_hashed(s, stable[i], v, sizeof v, NULL), SIMDR_OK);
}

typedef struct shared {
    simdr_store *s;
    atomic_int stop;
    atomic_int compactions;
    atomic_int failed; /* a thread's call returned an error */
} shared;

/* Churn: new keys (the index grows), deletes, large values (the map is
 * replaced), overwrites of the stable keys (still present), syncs. */
static void *writer_main(void *p) {
    shared *sh = p;
    uint64_t r = 77;
    static uint8_t big[300000];
    memset(big, 0x5a, sizeof big);
    for (uint64_t op = 0; !atomic_load(&sh->stop); op++) {
        uint64_t x = tu_rand(&r);
        char key[32];
        snprintf(key, sizeof key, "churn-%llu", (unsigned long long)(x % CHURN_KEYS));
        int rc;
        switch (op % 8) {
        case 0: case 1: case 2:
            rc = simdr_put(sh->s, TU_STR(key), &x, sizeof x, NULL);
            break;
        case 3:
            rc = simdr_delete(sh->s, TU_STR(key), NULL);
            if (rc == SIMDR_NOTFOUND) rc = SIMDR_OK;
            break;
        case 4:
            put_stable(sh->s, (int)(x % STABLE), op);
            rc = SIMDR_OK;
            break;
        case 5:
            /* Four keys only: the live data stays small, the file grows. */
            snprintf(key, sizeof key, "big-%llu", (unsigned long long)(x % 4));
            rc = op % 512 == 5 ? simdr_put(sh->s, TU_STR(key), big, sizeof big, NULL) : SIMDR_OK;
            break;
        case 6:
            rc = op % 256 == 6 ? simdr_sync(sh->s) : SIMDR_OK;
            break;
        default:
            rc = simdr_put(sh->s, TU_STR(key), key, strlen(key), NULL);
        }
        if (rc != SIMDR_OK) {
            atomic_store(&sh->failed, 1);
            break;
        }
        /* A pause now and then: each compaction's catch-up ends (slow
         * builds, ThreadSanitizer's, copy slower than this loop writes). */
        if (op % 64 == 63) usleep(200);
    }
    return NULL;
}

static void *compactor_main(void *p) {
    shared *sh = p;
    while (!atomic_load(&sh->stop)) {
        if (simdr_compact(sh->s) != SIMDR_OK) {
            atomic_store(&sh->failed, 1);
            break;
        }
        atomic_fetch_add(&sh->compactions, 1);
    }
    return NULL;
}

/* Width of the next step: 1, a cluster's few values, a middling step, or
 * the rest of the space, in turn. */
static uint64_t step_width(uint64_t *r, uint64_t from) {
    uint64_t x = tu_rand(r), w;
    switch (x % 5) {
    case 0: w = 1; break;
    case 1: w = 1 + (x >> 8) % 32; break;
    case 2: w = 1 + (x >> 8) % (SPACE / 64); break;
    case 3: w = 1 + (x >> 8) % (SPACE / 4); break;
    default: w = SPACE; break;
    }
    /* Steps of one at the clusters' edges now and then. */
    if (from < 16 || from >= SPACE - 16 || from == 0x80000000u) w = 1 + x % 3;
    return w > SPACE - from ? SPACE - from : w;
}

/* One walk of the whole space; NULL, or what went wrong (the threads are
 * stopped before the test asserts). */
static const char *walk_once(simdr_store *s, uint64_t *r, uint64_t *out, char *why, size_t cap) {
    int seen[STABLE];
    memset(seen, 0, sizeof seen);
    for (uint64_t from = 0; from < SPACE;) {
        uint64_t to = from + step_width(r, from);
        int64_t n = simdr_hashes_in_range(s, from, to, out, OUT_CAP);
        if (n < 0 || n > OUT_CAP) {
            snprintf(why, cap, "[%llu, %llu): %lld (%s)", (unsigned long long)from,
                     (unsigned long long)to, (long long)n, simdr_last_error());
            return why;
        }
        for (int64_t i = 0; i < n; i++) {
            uint64_t low = out[i] & 0xffffffffu;
            if (low < from || low >= to) {
                snprintf(why, cap, "hash %016llx outside [%llu, %llu)",
                         (unsigned long long)out[i], (unsigned long long)from,
                         (unsigned long long)to);
                return why;
            }
            int k = stable_index(out[i]);
            if (k >= 0) seen[k]++;
        }
        from = to;
    }
    for (int k = 0; k < STABLE; k++) {
        if (seen[k] != 1) {
            snprintf(why, cap, "stable hash %016llx seen %d times in a walk",
                     (unsigned long long)stable[k], seen[k]);
            return why;
        }
    }
    return NULL;
}

static void walks_under_writers_and_compaction(tu_fixture *f, int append_mode) {
    simdr_close(f->s);
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_CREATE;
    o.append_mode = append_mode;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    uint64_t saved_reserve = atomic_load(&simdr__map_min_reserve);
    atomic_store(&simdr__map_min_reserve, UINT64_C(4) << 20);
    for (int i = 0; i < STABLE; i++) put_stable(f->s, i, 0);
    shared sh;
    memset(&sh, 0, sizeof sh);
    sh.s = f->s;
    pthread_t writer, compactor;
    tu_watchdog_start(240, "hash-range walks beside writers and compaction");
    assert_int_equal(pthread_create(&writer, NULL, writer_main, &sh), 0);
    assert_int_equal(pthread_create(&compactor, NULL, compactor_main, &sh), 0);
    uint64_t r = 4242, *out = malloc(OUT_CAP * sizeof *out);
    assert_non_null(out);
    /* At least WALKS walks, and at least three compactions during them. */
    char why[200];
    const char *bad = NULL;
    for (int w = 0; !bad && (w < WALKS || atomic_load(&sh.compactions) < 3); w++) {
        bad = walk_once(f->s, &r, out, why, sizeof why);
        if (atomic_load(&sh.failed)) break;
    }
    atomic_store(&sh.stop, 1);
    pthread_join(writer, NULL);
    pthread_join(compactor, NULL);
    tu_watchdog_stop();
    free(out);
    atomic_store(&simdr__map_min_reserve, saved_reserve);
    if (bad) fail_msg("%s", bad);
    assert_int_equal(atomic_load(&sh.failed), 0);
    /* The stable keys hold their newest values. */
    for (int i = 0; i < STABLE; i++) {
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get_hashed(f->s, stable[i], &e), SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), 16);
        uint64_t v[2];
        memcpy(v, simdr_entry_data(e), sizeof v);
        assert_true(v[0] == stable[i]);
        simdr_entry_release(e);
    }
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
}

static void test_walks_under_writers_and_compaction(void **state) {
    walks_under_writers_and_compaction(*state, SIMDR_APPEND_WRITE);
}

static void test_walks_under_mapped_writers_and_compaction(void **state) {
    walks_under_writers_and_compaction(*state, SIMDR_APPEND_MAPPED);
}

int main(void) {
    make_stable_hashes();
    const struct CMUnitTest tests[] = {
        TU_TEST(test_walks_under_writers_and_compaction),
        TU_TEST(test_walks_under_mapped_writers_and_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
