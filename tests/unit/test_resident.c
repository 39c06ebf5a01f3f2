/*
 * test_resident.c - what a store keeps mapped into the process: after
 * simdr_release_memory the store file's pages read through the map are no
 * longer in the process's resident memory (stores loaded by single puts, by
 * batches, and a read-only open), handles taken before keep their bytes,
 * every value reads back right and writes go on; measuring what a
 * compaction would save (a walk over every live entry, which a server
 * repeats as its files grow) leaves none mapped either, and measures
 * exactly; releasing on another thread throughout writes, reads and a
 * compaction changes no value. Resident bytes are read from the store
 * mapping's "Rss:" lines in /proc/self/smaps.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NKEYS 120000
#define BATCH 1000

/* Bytes of the mappings of path that are resident in this process, or -1
 * when /proc/self/smaps cannot be read. */
static long long resident_bytes_of(const char *path) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[8192];
    long long kb = 0;
    int in_file = 0;
    while (fgets(line, sizeof line, f)) {
        /* A mapping's header: "start-end perms offset dev inode path". */
        unsigned long long lo, hi;
        if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, ' ')) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            size_t n = strlen(line), p = strlen(path);
            in_file = n >= p && strcmp(line + n - p, path) == 0;
            continue;
        }
        long long v;
        if (in_file && sscanf(line, "Rss: %lld kB", &v) == 1) kb += v;
    }
    fclose(f);
    return kb * 1024;
}

static void key_of(unsigned i, char *k, size_t cap) { snprintf(k, cap, "resident-%08u", i); }

static void value_of(unsigned i, uint8_t v[8]) {
    for (unsigned b = 0; b < 8; b++) v[b] = (uint8_t)((i * 2654435761u) >> (b * 3)) ^ (uint8_t)b;
}

/* Puts keys [from, to) one by one, every step-th. */
static void put_keys(simdr_store *s, unsigned from, unsigned to, unsigned step) {
    for (unsigned i = from; i < to; i += step) {
        char k[32];
        uint8_t v[8];
        key_of(i, k, sizeof k);
        value_of(i, v);
        assert_int_equal(simdr_put(s, TU_STR(k), v, sizeof v, NULL), SIMDR_OK);
    }
}

/* Keys [from, to), every step-th, read back with their values. */
static void expect_values(simdr_store *s, unsigned from, unsigned to, unsigned step) {
    for (unsigned i = from; i < to; i += step) {
        char k[32];
        uint8_t v[8];
        key_of(i, k, sizeof k);
        value_of(i, v);
        tu_expect_value(s, TU_STR(k), v, sizeof v);
    }
}

/* The store file's pages mapped in this process are at most a quarter of
 * its size bytes. */
static void expect_mostly_unmapped(const char *path, long long size) {
    long long resident = resident_bytes_of(path);
    assert_true(resident >= 0);
    if (resident * 4 > size)
        fprintf(stderr, "resident %lld bytes of a %lld-byte store file\n", resident, size);
    assert_true(resident * 4 <= size);
}

/* Every key read through the map (which maps the file's pages in: asserted),
 * then simdr_release_memory: the file's pages mapped in this process are at
 * most a quarter of the file, a handle taken before still holds its bytes,
 * and every value reads back right. */
static void expect_release_unmaps(tu_fixture *f) {
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    char k[32];
    uint8_t v[8];
    key_of(7, k, sizeof k);
    value_of(7, v);
    simdr_entry *held;
    assert_int_equal(simdr_get(f->s, TU_STR(k), &held), SIMDR_OK);
    expect_values(f->s, 0, NKEYS, 1);
    assert_true(resident_bytes_of(f->path) * 2 > (long long)st.st_size);
    assert_int_equal(simdr_release_memory(f->s), SIMDR_OK);
    expect_mostly_unmapped(f->path, (long long)st.st_size);
    assert_int_equal(simdr_entry_size(held), sizeof v);
    assert_memory_equal(simdr_entry_data(held), v, sizeof v);
    simdr_entry_release(held);
    expect_values(f->s, 0, NKEYS, 1);
}

static void test_release_after_single_puts(void **state) {
    tu_fixture *f = *state;
    put_keys(f->s, 0, NKEYS, 1);
    expect_release_unmaps(f);
    /* Writes go on after it, index growths included. */
    put_keys(f->s, NKEYS, NKEYS * 2, 1);
    expect_values(f->s, NKEYS, NKEYS * 2, 97);
}

static void test_release_after_batches(void **state) {
    tu_fixture *f = *state;
    static char keys[BATCH][32];
    static uint8_t vals[BATCH][8];
    simdr_kv items[BATCH];
    for (unsigned i = 0; i < NKEYS; i += BATCH) {
        for (unsigned j = 0; j < BATCH; j++) {
            key_of(i + j, keys[j], sizeof keys[j]);
            value_of(i + j, vals[j]);
            items[j] = (simdr_kv){keys[j], strlen(keys[j]), vals[j], sizeof vals[j]};
        }
        assert_int_equal(simdr_put_batch(f->s, items, BATCH, NULL), SIMDR_OK);
    }
    expect_release_unmaps(f);
}

static void test_release_of_a_read_only_open(void **state) {
    tu_fixture *f = *state;
    put_keys(f->s, 0, NKEYS, 1);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    expect_release_unmaps(f);
    assert_int_equal(simdr_release_memory(NULL), SIMDR_EINVAL);
}

static void test_measuring_savings_leaves_file_pages_unmapped(void **state) {
    tu_fixture *f = *state;
    put_keys(f->s, 0, NKEYS, 1);
    put_keys(f->s, 0, NKEYS, 4); /* a quarter written again: the first versions are garbage */
    expect_values(f->s, 0, NKEYS, 1); /* maps every page in */
    uint64_t size = simdr_file_size(f->s);
    assert_true(resident_bytes_of(f->path) * 2 > (long long)size);
    uint64_t savings = simdr_compaction_savings(f->s);
    expect_mostly_unmapped(f->path, (long long)size);
    assert_true(savings > 0);
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->s), size - savings);
    expect_values(f->s, 0, NKEYS, 1);
}

/* Releases the store's pages again and again until told to stop. */
typedef struct releaser {
    simdr_store *s;
    atomic_int stop;
    atomic_uint calls, failed;
} releaser;

static void *release_again_and_again(void *p) {
    releaser *r = p;
    while (!atomic_load(&r->stop)) {
        /* counted, asserted on the test's thread */
        if (simdr_release_memory(r->s) != SIMDR_OK) atomic_fetch_add(&r->failed, 1);
        atomic_fetch_add(&r->calls, 1);
    }
    return NULL;
}

/* simdr_release_memory on another thread throughout puts that grow the
 * index, reads, a compaction (the map replaced under it) and reads after:
 * every value stays right. */
static void test_release_while_writing_reading_and_compacting(void **state) {
    tu_fixture *f = *state;
    releaser r = {f->s, 0, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_again_and_again, &r), 0);
    put_keys(f->s, 0, NKEYS, 1);
    expect_values(f->s, 0, NKEYS, 3);
    put_keys(f->s, 0, NKEYS, 2);
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    expect_values(f->s, 0, NKEYS, 1);
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    assert_true(atomic_load(&r.calls) > 0);
    assert_int_equal(atomic_load(&r.failed), 0);
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_release_after_single_puts),
        TU_TEST(test_release_after_batches),
        TU_TEST(test_release_of_a_read_only_open),
        TU_TEST(test_measuring_savings_leaves_file_pages_unmapped),
        TU_TEST(test_release_while_writing_reading_and_compacting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
