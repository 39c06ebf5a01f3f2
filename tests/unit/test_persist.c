/*
 * test_persist.c - unit tests of persistence in libsimdr: values survive
 * close/reopen, the byte-exact file of FORMAT.md's worked example in both
 * layouts, layout detection of existing files, 64-byte aligned payload
 * addresses in the aligned layout, and zero-copy reads (the data pointer lies
 * in a mapping of the store file and is stable across calls).
 */
#include "testutil.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void test_reopen(void **state) {
    tu_fixture *f = *state;
    uint64_t seed = tu_seed(7);
    enum { N = 500 };
    static uint8_t vals[N][200];
    size_t lens[N];
    int deleted[N];
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%d", i);
            lens[i] = 1 + (size_t)(tu_rand(&seed) % 200);
            tu_fill(vals[i], lens[i], tu_rand(&seed));
            assert_int_equal(simdr_put(s, TU_STR(k), vals[i], lens[i], NULL), SIMDR_OK);
            deleted[i] = 0;
        }
    }
    int ndel = 0;
    for (int i = 0; i < N; i += 5) {
        char k[32];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(simdr_delete(s, TU_STR(k), NULL), SIMDR_OK);
        deleted[i] = 1;
        ndel++;
    }
    uint64_t size = simdr_file_size(s);
    uint64_t savings = simdr_compaction_savings(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    for (int mode = 0; mode < 2; mode++) {
        s = tu_open(f->path, mode ? SIMDR_OPEN_READONLY : SIMDR_OPEN_EXISTING, 0);
        assert_int_equal(simdr_count(s), N - ndel);
        assert_int_equal(simdr_file_size(s), size);
        assert_int_equal(simdr_compaction_savings(s), savings);
        assert_int_equal(simdr_layout_of(s), SIMDR_LAYOUT_ALIGNED64);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.file_size, size);
        assert_int_equal(ri.valid_size, size);
        assert_int_equal(ri.bytes_cut, 0);
        assert_int_equal(ri.truncated, 0);
        assert_string_equal(ri.saved_path, "");
        for (int i = 0; i < N; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%d", i);
            if (deleted[i])
                tu_expect_absent(s, TU_STR(k));
            else
                tu_expect_value(s, TU_STR(k), vals[i], lens[i]);
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
}

static size_t build_meta(uint8_t *p, uint64_t hash, uint64_t prev, uint32_t crc) {
    tu_put_le64(p, hash);
    tu_put_le64(p + 8, prev);
    p[16] = (uint8_t)crc;
    p[17] = (uint8_t)(crc >> 8);
    p[18] = (uint8_t)(crc >> 16);
    p[19] = (uint8_t)(crc >> 24);
    return 20;
}

static void worked_example(tu_fixture *f, int layout) {
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
    uint64_t tail = 0;
    assert_int_equal(simdr_put(s, TU_STR("a"), TU_STR("hello"), &tail), SIMDR_OK);
    assert_int_equal(tail, 25);
    assert_int_equal(simdr_delete(s, TU_STR("a"), &tail), SIMDR_OK);
    assert_int_equal(tail, 46);
    assert_int_equal(simdr_put(s, TU_STR("b"), TU_STR("world"), &tail), SIMDR_OK);
    assert_int_equal(tail, layout == SIMDR_LAYOUT_ALIGNED64 ? 89 : 71);
    assert_int_equal(simdr_close(s), SIMDR_OK);

    uint8_t want[128];
    memset(want, 0, sizeof want);
    size_t n = 0;
    memcpy(want, "hello", 5);
    n = 5;
    n += build_meta(want + n, UINT64_C(0xe6c632b61e964e1f), 0, 0x3610a686u);
    assert_int_equal(n, 25);
    want[n++] = 0x00;
    n += build_meta(want + n, UINT64_C(0xe6c632b61e964e1f), 25, 0xd202ef8du);
    assert_int_equal(n, 46);
    if (layout == SIMDR_LAYOUT_ALIGNED64)
        n = 64; /* 18 zero bytes of pad */
    memcpy(want + n, "world", 5);
    n += 5;
    n += build_meta(want + n, UINT64_C(0x575a0b1c44d8843f), 46, 0x3a771143u);
    assert_int_equal(n, layout == SIMDR_LAYOUT_ALIGNED64 ? 89 : 71);
    /* the literal bytes FORMAT.md lists for the first 46 */
    static const uint8_t lit[46] = {
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x1f, 0x4e, 0x96, 0x1e, 0xb6, 0x32, 0xc6,
        0xe6, 0,    0,    0,    0,    0,    0,    0,    0,    0x86, 0xa6, 0x10,
        0x36, 0x00, 0x1f, 0x4e, 0x96, 0x1e, 0xb6, 0x32, 0xc6, 0xe6, 0x19, 0,
        0,    0,    0,    0,    0,    0,    0x8d, 0xef, 0x02, 0xd2};
    assert_memory_equal(want, lit, 46);

    size_t got_len = 0;
    uint8_t *got = tu_read_file(f->path, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, n);
    assert_memory_equal(got, want, n);
    free(got);

    s = tu_open(f->path, SIMDR_OPEN_READONLY, !layout);
    assert_int_equal(simdr_layout_of(s), layout);
    tu_expect_absent(s, TU_STR("a"));
    tu_expect_str(s, "b", "world");
    assert_int_equal(simdr_count(s), 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void test_worked_example_aligned(void **state) {
    worked_example(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_worked_example_unaligned(void **state) {
    worked_example(*state, SIMDR_LAYOUT_UNALIGNED);
}

/* Writes entries whose payloads would need padding, reopens asking for the
 * other layout, and checks the file's own layout is detected and kept. */
static void layout_detection(tu_fixture *f, int layout) {
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
    assert_int_equal(simdr_layout_of(s), layout);
    char k[16], v[64];
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "value-%d-%.*s", i, i % 23, "abcdefghijklmnopqrstuvwxyz");
        tu_put_str(s, k, v);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    int other = layout == SIMDR_LAYOUT_ALIGNED64 ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64;
    for (int mode = 0; mode < 2; mode++) {
        s = tu_open(f->path, mode ? SIMDR_OPEN_READONLY : SIMDR_OPEN_EXISTING, other);
        assert_int_equal(simdr_layout_of(s), layout);
        for (int i = 0; i < 40; i++) {
            snprintf(k, sizeof k, "k%d", i);
            snprintf(v, sizeof v, "value-%d-%.*s", i, i % 23, "abcdefghijklmnopqrstuvwxyz");
            tu_expect_str(s, k, v);
        }
        if (mode == 0) {
            /* new writes follow the file's layout, not the option */
            if (simdr_file_size(s) % 64 == 0)
                tu_put_str(s, "pad", "x");
            tu_put_str(s, "new", "a value after reopen");
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR("new"), &e), SIMDR_OK);
            uint64_t start = simdr_entry_start(e);
            assert_true(start % 64 != 0);
            if (layout == SIMDR_LAYOUT_ALIGNED64)
                assert_int_equal(simdr_entry_offset(e), start + ((64 - start % 64) & 63));
            else
                assert_int_equal(simdr_entry_offset(e), start);
            simdr_entry_release(e);
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    s = tu_open(f->path, SIMDR_OPEN_READONLY, other);
    assert_int_equal(simdr_layout_of(s), layout);
    tu_expect_str(s, "new", "a value after reopen");
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void test_layout_detection_aligned(void **state) {
    layout_detection(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_layout_detection_unaligned(void **state) {
    layout_detection(*state, SIMDR_LAYOUT_UNALIGNED);
}

static void test_aligned_payload_addresses(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    uint8_t buf[300];
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        tu_fill(buf, (size_t)i % 300 + 1, (uint64_t)i);
        assert_int_equal(simdr_put(s, TU_STR(k), buf, (size_t)i % 300 + 1, NULL), SIMDR_OK);
        if (i % 7 == 0)
            assert_int_equal(simdr_delete(s, TU_STR(k), NULL), SIMDR_OK);
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 300; i++) {
            if (i % 7 == 0)
                continue;
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR(k), &e), SIMDR_OK);
            assert_int_equal(simdr_entry_offset(e) % 64, 0);
            assert_int_equal((uintptr_t)simdr_entry_data(e) % 64, 0);
            tu_fill(buf, (size_t)i % 300 + 1, (uint64_t)i);
            assert_memory_equal(simdr_entry_data(e), buf, (size_t)i % 300 + 1);
            simdr_entry_release(e);
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
        s = tu_open(f->path, pass ? SIMDR_OPEN_EXISTING : SIMDR_OPEN_READONLY, 0);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 1 when [p, p+len) lies in a mapping of the file `path` (per /proc/self/maps). */
static int in_file_mapping(const void *p, size_t len, const char *path) {
    char real[PATH_MAX];
    if (!realpath(path, real))
        return 0;
    FILE *m = fopen("/proc/self/maps", "r");
    if (!m)
        return 0;
    char line[8192];
    int found = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, m)) {
        unsigned long lo, hi;
        int pos = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &pos) < 2 || pos == 0)
            continue;
        char *name = line + pos;
        name[strcspn(name, "\n")] = 0;
        if (a >= lo && a + len <= hi && strcmp(name, real) == 0) {
            found = 1;
            break;
        }
    }
    fclose(m);
    return found;
}

static void test_zero_copy(void **state) {
    tu_fixture *f = *state;
    for (int layout = 0; layout < 2; layout++) {
        char p[4096];
        tu_join(p, sizeof p, f->dir, layout ? "u.bin" : "a.bin");
        simdr_store *s = tu_open(p, SIMDR_OPEN_CREATE, layout);
        uint8_t v[5000];
        tu_fill(v, sizeof v, 3);
        tu_put_str(s, "first", "0123456789");
        assert_int_equal(simdr_put(s, TU_STR("big"), v, sizeof v, NULL), SIMDR_OK);
        simdr_entry *e1 = NULL, *e2 = NULL, *e3 = NULL;
        assert_int_equal(simdr_get(s, TU_STR("big"), &e1), SIMDR_OK);
        assert_int_equal(simdr_get(s, TU_STR("big"), &e2), SIMDR_OK);
        assert_int_equal(simdr_get(s, TU_STR("first"), &e3), SIMDR_OK);
        const uint8_t *d1 = simdr_entry_data(e1);
        /* the same bytes, not a per-call copy */
        assert_ptr_equal(d1, simdr_entry_data(e2));
        /* both entries sit in one mapping at their file offsets */
        assert_ptr_equal(d1 - simdr_entry_offset(e1),
                         (const uint8_t *)simdr_entry_data(e3) - simdr_entry_offset(e3));
        assert_true(in_file_mapping(d1, sizeof v, p));
        assert_true(in_file_mapping(simdr_entry_data(e3), 10, p));
        assert_memory_equal(d1, v, sizeof v);
        /* a read-only store maps the file too */
        simdr_store *r = tu_open(p, SIMDR_OPEN_READONLY, 0);
        simdr_entry *re = NULL;
        assert_int_equal(simdr_get(r, TU_STR("big"), &re), SIMDR_OK);
        assert_true(in_file_mapping(simdr_entry_data(re), sizeof v, p));
        simdr_entry_release(re);
        assert_int_equal(simdr_close(r), SIMDR_OK);
        /* the pointer is unchanged and valid after more writes */
        for (int i = 0; i < 100; i++)
            assert_int_equal(simdr_put(s, TU_STR("filler"), v, sizeof v, NULL), SIMDR_OK);
        assert_memory_equal(d1, v, sizeof v);
        simdr_entry_release(e1);
        simdr_entry_release(e2);
        simdr_entry_release(e3);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_reopen),
        TU_TEST_DIR(test_worked_example_aligned),
        TU_TEST_DIR(test_worked_example_unaligned),
        TU_TEST_DIR(test_layout_detection_aligned),
        TU_TEST_DIR(test_layout_detection_unaligned),
        TU_TEST_DIR(test_aligned_payload_addresses),
        TU_TEST_DIR(test_zero_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
