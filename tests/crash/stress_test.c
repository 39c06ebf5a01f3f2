/*
 * stress_test.c - many reader threads, one writer, periodic compaction.
 *
 * Values carry their own key and checksum (crashutil's self-verifying
 * values). While one writer thread puts, batches, streams and deletes and a
 * compactor thread runs simdr_compact every 20-120 ms, reader threads check
 * that they never see a torn or foreign value, never NOTFOUND for a key that
 * is known present, never a generation older than one whose write had
 * already returned before the read began (the writer publishes each
 * returned write's generation; readers read it first), that entry handles
 * held across compactions keep their bytes, and that iterators list every
 * always-present key. Runs under ThreadSanitizer (label "concurrency").
 *
 * Usage: stress_test [--seed N] [--seconds S] [--readers N]; the duration
 * defaults to 6 s scaled by SIMDR_TEST_SCALE/10 (at least 2 s).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crashutil.h"
#include "simdr.h"

#define NKEYS 256u
#define STABLE 192u /* keys 0..STABLE-1 are written first and never deleted */
#define MAX_READERS 32
#define HELD 16

static simdr_store *store;
static _Atomic uint64_t pub_gen[NKEYS];   /* newest generation whose write returned */
static _Atomic int pub_present[NKEYS];
static _Atomic int stop;
static uint64_t run_seed;

typedef struct reader_stats {
    uint64_t gets, copies, batches, iters, held_checked;
} reader_stats;

typedef struct reader_arg {
    int id;
    reader_stats st;
} reader_arg;

static void verify_value(const void *data, uint64_t size, uint32_t k, uint64_t min_gen,
                         const char *how) {
    uint32_t vk;
    uint64_t vg;
    const char *why = "";
    CU_CHECK(cu_value_verify(data, size, &vk, &vg, &why) == 0, "%s of key %u: torn value: %s",
             how, k, why);
    CU_CHECK(vk == k, "%s of key %u returned key %u's value", how, k, vk);
    CU_CHECK(vg >= min_gen, "%s of key %u: generation %llu older than %llu already written", how,
             k, (unsigned long long)vg, (unsigned long long)min_gen);
}

static void *reader(void *p) {
    reader_arg *a = p;
    uint64_t rng = run_seed ^ (uint64_t)(a->id + 1) * 0x1234567;
    simdr_entry *held[HELD] = {0};
    uint64_t held_hash[HELD] = {0};
    uint8_t *buf = malloc(70000);
    char key[32];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint32_t k = (uint32_t)cu_range(&rng, 0, NKEYS - 1);
        size_t kl = cu_key(key, sizeof key, k);
        uint64_t min_gen = atomic_load_explicit(&pub_gen[k], memory_order_acquire);
        int must = k < STABLE;
        uint64_t r = cu_range(&rng, 0, 99);
        if (r < 60) {
            simdr_entry *e = NULL;
            int rc = simdr_get(store, key, kl, &e);
            if (rc == SIMDR_NOTFOUND) {
                CU_CHECK(!must, "key %u (always present) read as NOTFOUND", k);
                a->st.gets++;
                continue;
            }
            CU_OK(rc);
            verify_value(simdr_entry_data(e), simdr_entry_size(e), k,
                         k < STABLE ? min_gen : 0, "get");
            unsigned slot = (unsigned)cu_range(&rng, 0, HELD - 1);
            if (held[slot]) {
                CU_EQ_U64(cu_fnv(CU_FNV_INIT, simdr_entry_data(held[slot]),
                                 (size_t)simdr_entry_size(held[slot])),
                          held_hash[slot]);
                simdr_entry_release(held[slot]);
                a->st.held_checked++;
            }
            held[slot] = e;
            held_hash[slot] = cu_fnv(CU_FNV_INIT, simdr_entry_data(e), (size_t)simdr_entry_size(e));
            a->st.gets++;
        } else if (r < 80) {
            size_t n = 0;
            int rc = simdr_get_copy(store, key, kl, buf, 70000, &n);
            if (rc == SIMDR_NOTFOUND) {
                CU_CHECK(!must, "key %u (always present) copied as NOTFOUND", k);
            } else {
                CU_OK(rc);
                verify_value(buf, n, k, k < STABLE ? min_gen : 0, "get_copy");
            }
            a->st.copies++;
        } else if (r < 98) {
            simdr_key keys[8];
            char kb[8][32];
            uint32_t ids[8];
            uint64_t mins[8];
            for (int i = 0; i < 8; i++) {
                ids[i] = (uint32_t)cu_range(&rng, 0, NKEYS - 1);
                mins[i] = atomic_load_explicit(&pub_gen[ids[i]], memory_order_acquire);
                keys[i] = (simdr_key){kb[i], cu_key(kb[i], sizeof kb[i], ids[i])};
            }
            simdr_entry *out[8];
            int64_t found = simdr_get_batch(store, keys, 8, out);
            CU_CHECK(found >= 0, "get_batch: %s", simdr_strerror((int)found));
            for (int i = 0; i < 8; i++) {
                if (!out[i]) {
                    CU_CHECK(ids[i] >= STABLE, "key %u (always present) missing from get_batch",
                             ids[i]);
                    continue;
                }
                verify_value(simdr_entry_data(out[i]), simdr_entry_size(out[i]), ids[i],
                             ids[i] < STABLE ? mins[i] : 0, "get_batch");
                simdr_entry_release(out[i]);
            }
            a->st.batches++;
        } else {
            simdr_iter *it = NULL;
            CU_OK(simdr_iter_open(store, &it));
            const simdr_entry *e;
            int rc;
            uint32_t stable_seen = 0;
            while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
                uint32_t vk;
                const char *why = "";
                CU_CHECK(cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, NULL,
                                         &why) == 0,
                         "iterated value torn: %s", why);
                CU_CHECK(vk < NKEYS, "foreign key %u", vk);
                stable_seen += vk < STABLE;
            }
            CU_RC(rc, SIMDR_NOTFOUND);
            simdr_iter_close(it);
            CU_EQ_U64(stable_seen, STABLE);
            a->st.iters++;
        }
    }
    for (int i = 0; i < HELD; i++) {
        if (!held[i]) continue;
        CU_EQ_U64(cu_fnv(CU_FNV_INIT, simdr_entry_data(held[i]), (size_t)simdr_entry_size(held[i])),
                  held_hash[i]);
        simdr_entry_release(held[i]);
        a->st.held_checked++;
    }
    free(buf);
    return NULL;
}

static uint64_t next_gen = 1, writer_ops, compactions;

static uint64_t value_len(uint64_t *rng) {
    return cu_range(rng, 0, 30) == 0 ? cu_range(rng, 8000, 65536) : cu_range(rng, CU_VALUE_MIN, 1500);
}

static void publish(uint32_t k, uint64_t gen, int present) {
    atomic_store_explicit(&pub_present[k], present, memory_order_relaxed);
    atomic_store_explicit(&pub_gen[k], gen, memory_order_release);
}

static void put_one(uint32_t k, uint64_t len) {
    char key[32];
    size_t kl = cu_key(key, sizeof key, k);
    uint64_t gen = next_gen++;
    uint8_t *v = cu_value_new(k, gen, len);
    CU_OK(simdr_put(store, key, kl, v, (size_t)len, NULL));
    free(v);
    publish(k, gen, 1);
}

static void *writer(void *p) {
    (void)p;
    uint64_t rng = run_seed ^ 0xabcdef;
    char key[32];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = cu_range(&rng, 0, 99);
        if (r < 45) {
            put_one((uint32_t)cu_range(&rng, 0, NKEYS - 1), value_len(&rng));
        } else if (r < 75) {
            simdr_kv kv[8];
            char kb[8][32];
            uint8_t *vals[8];
            uint32_t ids[8];
            uint64_t gens[8];
            unsigned n = (unsigned)cu_range(&rng, 2, 8);
            uint32_t first = (uint32_t)cu_range(&rng, 0, NKEYS - 1);
            for (unsigned i = 0; i < n; i++) {
                ids[i] = (first + i * 7) % NKEYS;
                gens[i] = next_gen++;
                uint64_t len = cu_range(&rng, CU_VALUE_MIN, 1500);
                vals[i] = cu_value_new(ids[i], gens[i], len);
                kv[i] = (simdr_kv){kb[i], cu_key(kb[i], sizeof kb[i], ids[i]), vals[i],
                                   (size_t)len};
            }
            CU_OK(simdr_put_batch(store, kv, n, NULL));
            for (unsigned i = 0; i < n; i++) {
                publish(ids[i], gens[i], 1);
                free(vals[i]);
            }
        } else if (r < 82) {
            uint32_t k = (uint32_t)cu_range(&rng, 0, NKEYS - 1);
            size_t kl = cu_key(key, sizeof key, k);
            cu_stream st = {.key = k, .gen = next_gen++, .len = cu_range(&rng, 2000, 65536),
                            .rng = r, .max_chunk = 3000, .hash = CU_FNV_INIT};
            CU_OK(simdr_put_stream(store, key, kl, cu_stream_read, &st, NULL));
            publish(k, st.gen, 1);
        } else {
            uint32_t k = (uint32_t)cu_range(&rng, STABLE, NKEYS - 1);
            size_t kl = cu_key(key, sizeof key, k);
            int rc = simdr_delete(store, key, kl, NULL);
            int was = atomic_load_explicit(&pub_present[k], memory_order_relaxed);
            CU_RC(rc, was ? SIMDR_OK : SIMDR_NOTFOUND);
            publish(k, atomic_load_explicit(&pub_gen[k], memory_order_relaxed), 0);
        }
        writer_ops++;
    }
    return NULL;
}

static void *compactor(void *p) {
    (void)p;
    uint64_t rng = run_seed ^ 0xc0ffee;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct timespec ts = {0, (long)cu_range(&rng, 20, 120) * 1000000L};
        nanosleep(&ts, NULL);
        if (atomic_load_explicit(&stop, memory_order_relaxed)) break;
        CU_OK(simdr_compact(store));
        compactions++;
    }
    return NULL;
}

static void final_check(simdr_store *s) {
    uint64_t live = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        char key[32];
        size_t kl = cu_key(key, sizeof key, k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, key, kl, &e);
        if (!atomic_load(&pub_present[k])) {
            CU_RC(rc, SIMDR_NOTFOUND);
            continue;
        }
        live++;
        CU_OK(rc);
        uint32_t vk;
        uint64_t vg;
        CU_CHECK(cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, &vg, NULL) == 0,
                 "final value of key %u", k);
        CU_EQ_U64(vk, k);
        CU_EQ_U64(vg, atomic_load(&pub_gen[k]));
        simdr_entry_release(e);
    }
    CU_EQ_U64(simdr_count(s), live);
    CU_OK(simdr_check(s, NULL, NULL, NULL));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_seed = cu_seed(argc, argv, "stress_test");
    int scale = cu_scale(argc, argv);
    double seconds = 6.0 * scale / 10.0;
    if (seconds < 2.0) seconds = 2.0;
    int nreaders = 8;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        if (!strcmp(argv[i], "--readers")) nreaders = atoi(argv[i + 1]);
    }
    if (nreaders < 1) nreaders = 1;
    if (nreaders > MAX_READERS) nreaders = MAX_READERS;

    char *dir = cu_mkdtemp("stress");
    char path[4200];
    snprintf(path, sizeof path, "%s/store.bin", dir);
    CU_OK(simdr_open(&store, path, NULL));
    uint64_t rng = run_seed;
    for (uint32_t k = 0; k < NKEYS; k++) put_one(k, value_len(&rng));

    pthread_t rt[MAX_READERS], wt, ct;
    reader_arg ra[MAX_READERS];
    double t0 = cu_now();
    for (int i = 0; i < nreaders; i++) {
        memset(&ra[i], 0, sizeof ra[i]);
        ra[i].id = i;
        CU_CHECK(pthread_create(&rt[i], NULL, reader, &ra[i]) == 0, "pthread_create");
    }
    CU_CHECK(pthread_create(&wt, NULL, writer, NULL) == 0, "pthread_create");
    CU_CHECK(pthread_create(&ct, NULL, compactor, NULL) == 0, "pthread_create");
    while (cu_now() - t0 < seconds) usleep(20000);
    atomic_store(&stop, 1);
    for (int i = 0; i < nreaders; i++) pthread_join(rt[i], NULL);
    pthread_join(wt, NULL);
    pthread_join(ct, NULL);
    double dt = cu_now() - t0;

    final_check(store);
    CU_OK(simdr_close(store));
    simdr_store *s = NULL;
    CU_OK(simdr_open(&s, path, NULL));
    final_check(s);
    CU_OK(simdr_close(s));

    reader_stats tot = {0};
    for (int i = 0; i < nreaders; i++) {
        tot.gets += ra[i].st.gets;
        tot.copies += ra[i].st.copies;
        tot.batches += ra[i].st.batches;
        tot.iters += ra[i].st.iters;
        tot.held_checked += ra[i].st.held_checked;
    }
    uint64_t reads = tot.gets + tot.copies + tot.batches * 8;
    printf("stress_test: PASS: %d reader threads x %llu reads each on average (%llu gets, %llu "
           "copies, %llu batches of 8, %llu full iterations, %llu held handles re-checked), 1 "
           "writer x %llu writes, %llu compactions, %.1f s\n",
           nreaders, (unsigned long long)(reads / (uint64_t)nreaders),
           (unsigned long long)tot.gets, (unsigned long long)tot.copies,
           (unsigned long long)tot.batches, (unsigned long long)tot.iters,
           (unsigned long long)tot.held_checked, (unsigned long long)writer_ops,
           (unsigned long long)compactions, dt);
    cu_rmtree(dir);
    free(dir);
    return 0;
}
