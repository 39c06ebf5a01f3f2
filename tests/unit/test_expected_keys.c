/*
 * test_expected_keys.c - simdr_options.expected_keys as a size hint: a huge
 * hint reserves the index table without faulting it in (the process's
 * resident memory grows by what the keys written touch, not by the table's
 * size), and a value no index can hold (up to UINT64_MAX, including those
 * whose table size would overflow 64-bit arithmetic) is refused with
 * SIMDR_EINVAL and a message naming the option, never a crash, a hang or a
 * silently wrong table.
 */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

/* Opens that took their index from a hint file (src/hint.c). */
extern _Atomic uint64_t simdr__hint_loads;

/* The most keys an index holds: 4/5 of 2^32 - 1 slots (src/index.c). */
#define MAX_KEYS UINT64_C(3435973835)

/* Resident memory of this process, in bytes (/proc/self/statm). */
static uint64_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%llu %llu", &size, &resident), 2);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int open_with_hint(simdr_store **s, const char *path, uint64_t expected_keys,
                          int open_mode) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = open_mode;
    o.expected_keys = expected_keys;
    return simdr_open(s, path, &o);
}

/* A hint of 20M keys sizes a table of about 200 MiB, far above the 32 MiB
 * faulted in up front. Opening must not fault it in, nor must writing a few
 * thousand keys and reading them back (each touches at most one 4 KiB page
 * of the table); the reopen without the hint still finds them all. */
static void test_a_huge_hint_costs_only_the_pages_keys_touch(void **state) {
    tu_fixture *f = *state;
    enum { KEYS = 4000 };
    const uint64_t hint = 20000000;
    const uint64_t slack = UINT64_C(64) << 20;

    uint64_t before = resident_bytes();
    simdr_store *s = NULL;
    assert_int_equal(open_with_hint(&s, f->path, hint, SIMDR_OPEN_CREATE), SIMDR_OK);
    uint64_t table = simdr_index_bytes(s);
    assert_true(table >= hint * 8 * 5 / 4); /* sized for the hint, not grown */
    uint64_t opened = resident_bytes();
    printf("# index %llu MiB; resident before open %llu MiB, after %llu MiB\n",
           (unsigned long long)(table >> 20), (unsigned long long)(before >> 20),
           (unsigned long long)(opened >> 20));
    assert_true(opened < before + slack);

    char key[32];
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(key, sizeof key, "hinted-%d", i);
        assert_int_equal(simdr_put(s, key, (size_t)n, &i, sizeof i, NULL), SIMDR_OK);
    }
    for (int i = 0; i < KEYS; i += 7) {
        int n = snprintf(key, sizeof key, "hinted-%d", i);
        tu_expect_value(s, key, (size_t)n, &i, sizeof i);
    }
    tu_expect_absent(s, TU_STR("never written"));
    assert_int_equal(simdr_index_bytes(s), table);
    uint64_t filled = resident_bytes();
    printf("# after %d puts: resident %llu MiB\n", KEYS, (unsigned long long)(filled >> 20));
    assert_true(filled < before + slack + (uint64_t)KEYS * 4096);
    assert_int_equal(simdr_close(s), SIMDR_OK);

    assert_int_equal(open_with_hint(&s, f->path, 0, SIMDR_OPEN_EXISTING), SIMDR_OK);
    assert_int_equal(simdr_count(s), KEYS);
    for (int i = 0; i < KEYS; i += 13) {
        int n = snprintf(key, sizeof key, "hinted-%d", i);
        tu_expect_value(s, key, (size_t)n, &i, sizeof i);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static int count_visit(void *ctx, const simdr_entry *e) {
    (void)e;
    ++*(uint64_t *)ctx;
    return 0;
}

/* The walks of every index slot (the garbage measure, a compaction's list of
 * live entries, the hash-order scan, iteration) read the whole reserved
 * table of a huge hint: seconds and its size in resident memory for a few
 * keys, and a compaction held the writer lock for all of it. They now step
 * over the pages no key was written to, and still find every key, wherever
 * its slot lies. */
static void test_walks_of_a_reserved_table_cost_only_its_written_pages(void **state) {
    tu_fixture *f = *state;
    enum { KEYS = 300 };
    const uint64_t hint = 100000000; /* a table of about 1 GiB */
    const uint64_t slack = UINT64_C(64) << 20;
    uint64_t before = resident_bytes();
    simdr_store *s = NULL;
    assert_int_equal(open_with_hint(&s, f->path, hint, SIMDR_OPEN_CREATE), SIMDR_OK);
    char key[32];
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(key, sizeof key, "walked-%d", i);
        assert_int_equal(simdr_put(s, key, (size_t)n, &i, sizeof i, NULL), SIMDR_OK);
    }
    for (int i = 0; i < KEYS; i += 3) {
        int n = snprintf(key, sizeof key, "walked-%d", i);
        assert_int_equal(simdr_delete(s, key, (size_t)n, NULL), SIMDR_OK);
    }
    const uint64_t live = KEYS - (KEYS + 2) / 3;
    assert_true(simdr_compaction_savings(s) > 0);
    uint64_t measured = resident_bytes();
    uint64_t hashes[KEYS];
    assert_int_equal(simdr_hashes_in_range(s, 0, UINT64_C(1) << 32, hashes, KEYS), (int64_t)live);
    uint64_t visited = 0;
    assert_int_equal(simdr_for_each(s, count_visit, &visited), SIMDR_OK);
    assert_int_equal(visited, live);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    visited = 0;
    assert_int_equal(simdr_for_each(s, count_visit, &visited), SIMDR_OK);
    assert_int_equal(visited, live);
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(key, sizeof key, "walked-%d", i);
        if (i % 3 == 0)
            tu_expect_absent(s, key, (size_t)n);
        else
            tu_expect_value(s, key, (size_t)n, &i, sizeof i);
    }
    uint64_t after = resident_bytes();
    printf("# resident before open %llu MiB, after the garbage measure %llu MiB, after the "
           "walks %llu MiB\n", (unsigned long long)(before >> 20),
           (unsigned long long)(measured >> 20), (unsigned long long)(after >> 20));
    assert_true(measured < before + slack + (uint64_t)KEYS * 2 * 4096);
    assert_true(after < before + slack + (uint64_t)KEYS * 2 * 4096);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Each value above what an index holds is SIMDR_EINVAL at once, whatever the
 * open mode, the file never created; the message names the option. Among
 * them: values whose table size (keys * 5 / 4 slots of 8 bytes) or the
 * sizing loop's keys * 5 wraps around 64 bits. */
/* The hint file of a store whose table was sized from a huge expected_keys
 * holds a table sized for the keys it has (writing the 200 MiB table at
 * every close cost seconds and as much disk), and the next open still takes
 * its index from it. */
static void test_the_hint_of_a_huge_table_is_sized_for_its_keys(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = NULL;
    assert_int_equal(open_with_hint(&s, f->path, UINT64_C(20000000), SIMDR_OPEN_CREATE), SIMDR_OK);
    enum { KEYS = 70000 }; /* above the fewest keys a hint is saved for */
    static char names[KEYS][16];
    simdr_kv *items = calloc(KEYS, sizeof *items);
    assert_non_null(items);
    for (int i = 0; i < KEYS; i++) {
        snprintf(names[i], sizeof names[i], "sp-%d", i);
        size_t len = strlen(names[i]);
        items[i] = (simdr_kv){names[i], len, names[i], len};
    }
    assert_int_equal(simdr_put_batch(s, items, KEYS, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    struct stat st;
    assert_int_equal(stat(hint, &st), 0);
    /* The table would be about 200 MiB; 70,000 keys need 2-4 MiB of slots. */
    assert_true(st.st_size < (off_t)8 << 20);
    uint64_t loads = atomic_load(&simdr__hint_loads);
    assert_int_equal(open_with_hint(&s, f->path, 0, SIMDR_OPEN_EXISTING), SIMDR_OK);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
    assert_int_equal(simdr_count(s), KEYS);
    for (int i = 0; i < KEYS; i += 997) tu_expect_str(s, names[i], names[i]);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(items);
}

static void test_an_impossible_hint_is_invalid(void **state) {
    tu_fixture *f = *state;
    const uint64_t impossible[] = {
        UINT64_MAX,
        UINT64_MAX - 1,
        UINT64_MAX / 5 + 1,         /* keys * 5 wraps to a small number */
        UINT64_MAX / 8 + 1,         /* keys * 8 bytes wraps */
        (UINT64_C(1) << 62) + 1,
        (UINT64_C(1) << 32),        /* one key a slot of the largest table would not fit */
        MAX_KEYS + 1,
    };
    const int modes[] = {SIMDR_OPEN_CREATE, SIMDR_OPEN_EXISTING, SIMDR_OPEN_READONLY};
    for (size_t i = 0; i < sizeof impossible / sizeof impossible[0]; i++) {
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            simdr_store *s = (simdr_store *)&s;
            assert_int_equal(open_with_hint(&s, f->path, impossible[i], modes[m]), SIMDR_EINVAL);
            assert_null(s);
            const char *msg = simdr_last_error();
            assert_non_null(msg);
            assert_non_null(strstr(msg, "expected_keys"));
            assert_int_equal(tu_file_size(f->path), -1);
        }
    }
    printf("# %s\n", simdr_last_error());
}

/* The largest hint allowed is a hint like any other: the open succeeds
 * (with a table of 32 GiB reserved, or, where the system will not reserve
 * that much, with the small table the index then grows from), and the store
 * works; nothing is faulted in either way. */
static void test_the_largest_hint_opens(void **state) {
    tu_fixture *f = *state;
    uint64_t before = resident_bytes();
    simdr_store *s = NULL;
    assert_int_equal(open_with_hint(&s, f->path, MAX_KEYS, SIMDR_OPEN_CREATE), SIMDR_OK);
    printf("# index %llu MiB\n", (unsigned long long)(simdr_index_bytes(s) >> 20));
    assert_true(resident_bytes() < before + (UINT64_C(64) << 20));
    tu_put_str(s, "k", "v");
    tu_expect_str(s, "k", "v");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(open_with_hint(&s, f->path, MAX_KEYS, SIMDR_OPEN_READONLY), SIMDR_OK);
    tu_expect_str(s, "k", "v");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_a_huge_hint_costs_only_the_pages_keys_touch),
        TU_TEST_DIR(test_walks_of_a_reserved_table_cost_only_its_written_pages),
        TU_TEST_DIR(test_the_hint_of_a_huge_table_is_sized_for_its_keys),
        TU_TEST_DIR(test_an_impossible_hint_is_invalid),
        TU_TEST_DIR(test_the_largest_hint_opens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
