/*
 * test_mapped_threads.c - mapped appends (SIMDR_APPEND_MAPPED) from several
 * threads at once: two writers (puts, batches, deletes, values across the
 * page, the 1 MiB growth step and the window's moves), a thread calling
 * simdr_sync (which cuts the preallocated zeros under the writers), one
 * compacting, and one reading in read scopes and through entry handles,
 * checking every value it meets. The same with zeroed appends
 * (SIMDR_APPEND_ZEROED), with one more thread moving the store between the
 * three append modes (simdr_set_append_mode) under the others. Small enough to
 * run under ThreadSanitizer (label "concurrency").
 */
#include "testutil.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define KEYS_PER_WRITER 32
#define WRITERS 2
#define OPS 2000

typedef struct shared {
    simdr_store *s;
    int switch_modes; /* a thread also changes the append mode */
    _Atomic uint64_t mode_changes;
    _Atomic int writers_done;
    _Atomic uint64_t reads, syncs, compactions;
    _Atomic int bad;
} shared;

typedef struct writer {
    shared *sh;
    unsigned id;
    uint64_t len[KEYS_PER_WRITER]; /* 0: absent */
    uint32_t gen[KEYS_PER_WRITER];
    int failed;
} writer;

/* Values describe themselves: (key, generation) in the first 16 bytes,
 * the rest derived from them and the length, so any reader can check any
 * value it meets. */
static void make_value(uint8_t *buf, unsigned key, uint32_t gen, size_t len) {
    uint64_t a = key, b = gen;
    memcpy(buf, &a, 8);
    memcpy(buf + 8, &b, 8);
    tu_fill(buf + 16, len - 16, (uint64_t)key << 40 ^ (uint64_t)gen << 8 ^ len);
}

static int value_ok(const uint8_t *v, size_t len, unsigned key, uint8_t *scratch) {
    if (len < 16) return 0;
    uint64_t a, b;
    memcpy(&a, v, 8);
    memcpy(&b, v + 8, 8);
    if (a != key) return 0;
    make_value(scratch, key, (uint32_t)b, len);
    return memcmp(v, scratch, len) == 0;
}

static const size_t sizes[] = {16, 63, 64, 65, 4095, 4096, 4097, 65537, (1u << 20) + 1, 300000};

static size_t key_name(char *buf, unsigned key) {
    return (size_t)snprintf(buf, 32, "t-%u", key);
}

static void *writer_main(void *arg) {
    writer *w = arg;
    uint64_t seed = 77 + w->id;
    uint8_t *v = malloc((1u << 20) + 64), *v2 = malloc(4096);
    uint32_t gen = 0;
    for (unsigned i = 0; i < OPS && v && v2 && !w->failed; i++) {
        unsigned slot = (unsigned)(tu_rand(&seed) % KEYS_PER_WRITER);
        unsigned key = w->id * KEYS_PER_WRITER + slot;
        char name[32];
        size_t nl = key_name(name, key);
        size_t len = sizes[tu_rand(&seed) % (i % 50 == 7 ? 10 : 8)];
        uint64_t r = tu_rand(&seed) % 10;
        if (r < 6) {
            make_value(v, key, ++gen, len);
            if (simdr_put(w->sh->s, name, nl, v, len, NULL) != SIMDR_OK) w->failed = 1;
            w->len[slot] = len;
            w->gen[slot] = gen;
        } else if (r < 8) {
            unsigned slot2 = (slot + 1) % KEYS_PER_WRITER, key2 = key - slot + slot2;
            char name2[32];
            size_t nl2 = key_name(name2, key2);
            make_value(v, key, ++gen, len);
            uint32_t gen2 = ++gen;
            make_value(v2, key2, gen2, 4096);
            simdr_kv kv[2] = {{name, nl, v, len}, {name2, nl2, v2, 4096}};
            if (simdr_put_batch(w->sh->s, kv, 2, NULL) != SIMDR_OK) w->failed = 1;
            w->len[slot] = len;
            w->gen[slot] = gen - 1;
            w->len[slot2] = 4096;
            w->gen[slot2] = gen2;
        } else {
            int rc = simdr_delete(w->sh->s, name, nl, NULL);
            if (rc != (w->len[slot] ? SIMDR_OK : SIMDR_NOTFOUND)) w->failed = 1;
            w->len[slot] = 0;
        }
    }
    free(v);
    free(v2);
    atomic_fetch_add(&w->sh->writers_done, 1);
    return NULL;
}

static void *syncer_main(void *arg) {
    shared *sh = arg;
    while (atomic_load(&sh->writers_done) < WRITERS) {
        if (simdr_sync(sh->s) != SIMDR_OK) atomic_fetch_add(&sh->bad, 1);
        atomic_fetch_add(&sh->syncs, 1);
        sched_yield();
    }
    return NULL;
}

/* Zeroed, write, zeroed, mapped, ... while the others run. */
static void *switcher_main(void *arg) {
    shared *sh = arg;
    static const int modes[] = {SIMDR_APPEND_ZEROED, SIMDR_APPEND_WRITE, SIMDR_APPEND_ZEROED,
                                SIMDR_APPEND_MAPPED};
    while (atomic_load(&sh->writers_done) < WRITERS) {
        for (int i = 0; i < 50 && atomic_load(&sh->writers_done) < WRITERS; i++) sched_yield();
        uint64_t k = atomic_fetch_add(&sh->mode_changes, 1) + 1;
        if (simdr_set_append_mode(sh->s, modes[k % 4]) != SIMDR_OK) atomic_fetch_add(&sh->bad, 1);
    }
    return NULL;
}

static void *compactor_main(void *arg) {
    shared *sh = arg;
    while (atomic_load(&sh->writers_done) < WRITERS && atomic_load(&sh->compactions) < 4) {
        for (int i = 0; i < 2000 && atomic_load(&sh->writers_done) < WRITERS; i++) sched_yield();
        if (simdr_compact(sh->s) != SIMDR_OK) atomic_fetch_add(&sh->bad, 1);
        atomic_fetch_add(&sh->compactions, 1);
    }
    return NULL;
}

static void *reader_main(void *arg) {
    shared *sh = arg;
    uint8_t *scratch = malloc((1u << 20) + 64);
    while (scratch && atomic_load(&sh->writers_done) < WRITERS) {
        simdr_read scope;
        if (simdr_read_begin(sh->s, &scope) != SIMDR_OK) break;
        for (unsigned key = 0; key < WRITERS * KEYS_PER_WRITER; key += 3) {
            char name[32];
            size_t nl = key_name(name, key);
            const void *v;
            size_t vl;
            int rc = simdr_read_get(&scope, name, nl, &v, &vl);
            if (rc == SIMDR_NOTFOUND) continue;
            if (rc != SIMDR_OK || !value_ok(v, vl, key, scratch)) atomic_fetch_add(&sh->bad, 1);
            atomic_fetch_add(&sh->reads, 1);
        }
        simdr_read_end(&scope);
        char name[32];
        unsigned key = (unsigned)(atomic_load(&sh->reads) % (WRITERS * KEYS_PER_WRITER));
        size_t nl = key_name(name, key);
        simdr_entry *e = NULL;
        if (simdr_get(sh->s, name, nl, &e) == SIMDR_OK) {
            sched_yield(); /* the writers, the syncer and the compactor move on */
            if (!value_ok(simdr_entry_data(e), (size_t)simdr_entry_size(e), key, scratch))
                atomic_fetch_add(&sh->bad, 1);
            simdr_entry_release(e);
        }
    }
    free(scratch);
    return NULL;
}

static void expect_writer_keys(simdr_store *s, const writer *w, uint8_t *scratch) {
    for (unsigned slot = 0; slot < KEYS_PER_WRITER; slot++) {
        unsigned key = w->id * KEYS_PER_WRITER + slot;
        char name[32];
        size_t nl = key_name(name, key);
        simdr_entry *e = NULL;
        if (!w->len[slot]) {
            assert_int_equal(simdr_get(s, name, nl, &e), SIMDR_NOTFOUND);
            continue;
        }
        assert_int_equal(simdr_get(s, name, nl, &e), SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), w->len[slot]);
        make_value(scratch, key, w->gen[slot], (size_t)w->len[slot]);
        assert_memory_equal(simdr_entry_data(e), scratch, (size_t)w->len[slot]);
        simdr_entry_release(e);
    }
}

static void run_threads(tu_fixture *f, int append_mode, int switch_modes) {
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = append_mode;
    shared sh = {0};
    sh.switch_modes = switch_modes;
    assert_int_equal(simdr_open(&sh.s, f->path, &o), SIMDR_OK);
    writer w[WRITERS];
    memset(w, 0, sizeof w);
    pthread_t tw[WRITERS], ts, tc, tr;
    tu_watchdog_start(300, "mapped threads");
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i].sh = &sh;
        w[i].id = i;
        assert_int_equal(pthread_create(&tw[i], NULL, writer_main, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&ts, NULL, syncer_main, &sh), 0);
    assert_int_equal(pthread_create(&tc, NULL, compactor_main, &sh), 0);
    assert_int_equal(pthread_create(&tr, NULL, reader_main, &sh), 0);
    pthread_t tm;
    if (switch_modes) assert_int_equal(pthread_create(&tm, NULL, switcher_main, &sh), 0);
    for (unsigned i = 0; i < WRITERS; i++) assert_int_equal(pthread_join(tw[i], NULL), 0);
    assert_int_equal(pthread_join(ts, NULL), 0);
    assert_int_equal(pthread_join(tc, NULL), 0);
    assert_int_equal(pthread_join(tr, NULL), 0);
    if (switch_modes) {
        assert_int_equal(pthread_join(tm, NULL), 0);
        assert_true(atomic_load(&sh.mode_changes) > 0);
    }
    tu_watchdog_stop();
    assert_int_equal(atomic_load(&sh.bad), 0);
    for (unsigned i = 0; i < WRITERS; i++) assert_int_equal(w[i].failed, 0);
    printf("%llu values read by the reader, %llu syncs, %llu compactions, %llu mode changes\n",
           (unsigned long long)atomic_load(&sh.reads), (unsigned long long)atomic_load(&sh.syncs),
           (unsigned long long)atomic_load(&sh.compactions),
           (unsigned long long)atomic_load(&sh.mode_changes));
    assert_true(atomic_load(&sh.syncs) > 0);
    assert_true(atomic_load(&sh.compactions) > 0);
    uint8_t *scratch = malloc((1u << 20) + 64);
    assert_non_null(scratch);
    for (unsigned i = 0; i < WRITERS; i++) expect_writer_keys(sh.s, &w[i], scratch);
    assert_int_equal(simdr_check(sh.s, NULL, NULL, NULL), SIMDR_OK);
    uint64_t tail = simdr_file_size(sh.s);
    assert_int_equal(simdr_close(sh.s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    for (unsigned i = 0; i < WRITERS; i++) expect_writer_keys(s, &w[i], scratch);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(scratch);
}

static void test_threads_write_sync_compact_read(void **state) {
    run_threads(*state, SIMDR_APPEND_MAPPED, 0);
}

static void test_zeroed_threads_switching_modes(void **state) {
    run_threads(*state, SIMDR_APPEND_ZEROED, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_threads_write_sync_compact_read),
        TU_TEST_DIR(test_zeroed_threads_switching_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
