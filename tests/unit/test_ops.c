/*
 * test_ops.c - unit tests of delete, rename, copy and move between stores
 * (read-only stores and damaged values refused before anything is written),
 * get_last (tombstones included) and the size/statistics calls of libsimdr
 * (count, is_empty, file_size, compaction_savings) before and after reopen.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void reopen(tu_fixture *f) {
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
}

static void test_delete(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    tu_put_str(f->s, "b", "2");
    uint64_t tail = 0;
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(f->s));
    tu_expect_absent(f->s, TU_STR("a"));
    tu_expect_str(f->s, "b", "2");
    assert_int_equal(simdr_count(f->s), 1);
    /* delete of an absent or already deleted key: NOTFOUND, nothing appended */
    uint64_t size = simdr_file_size(f->s);
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), NULL), SIMDR_NOTFOUND);
    assert_int_equal(simdr_delete(f->s, TU_STR("never"), NULL), SIMDR_NOTFOUND);
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    reopen(f);
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), NULL), SIMDR_NOTFOUND);
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(simdr_count(f->s), 1);
    /* a deleted key can be written again */
    tu_put_str(f->s, "a", "again");
    tu_expect_str(f->s, "a", "again");
    assert_int_equal(simdr_count(f->s), 2);
    reopen(f);
    tu_expect_str(f->s, "a", "again");
    assert_int_equal(simdr_count(f->s), 2);
}

static void test_get_last(void **state) {
    tu_fixture *f = *state;
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get_last(f->s, &e), SIMDR_NOTFOUND);
    tu_put_str(f->s, "a", "alpha");
    tu_put_str(f->s, "b", "beta");
    assert_int_equal(simdr_get_last(f->s, &e), SIMDR_OK);
    assert_int_equal(simdr_entry_key_hash(e), simdr_hash_key(TU_STR("b")));
    assert_int_equal(simdr_entry_is_tombstone(e), 0);
    assert_int_equal(simdr_entry_size(e), 4);
    assert_memory_equal(simdr_entry_data(e), "beta", 4);
    assert_int_equal(simdr_entry_end(e), simdr_file_size(f->s));
    simdr_entry_release(e);
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), NULL), SIMDR_OK);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(simdr_get_last(f->s, &e), SIMDR_OK);
        assert_int_equal(simdr_entry_key_hash(e), simdr_hash_key(TU_STR("a")));
        assert_int_equal(simdr_entry_is_tombstone(e), 1);
        assert_int_equal(simdr_entry_size(e), 1);
        assert_int_equal(((const uint8_t *)simdr_entry_data(e))[0], 0);
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        assert_int_equal(simdr_entry_end(e), simdr_file_size(f->s));
        simdr_entry_release(e);
        reopen(f);
    }
}

static void test_rename(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "old", "payload");
    tu_put_str(f->s, "other", "x");
    uint64_t size = simdr_file_size(f->s);
    assert_int_equal(simdr_rename(f->s, TU_STR("old"), TU_STR("old"), NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_rename(f->s, TU_STR("missing"), TU_STR("new"), NULL),
                     SIMDR_NOTFOUND);
    assert_int_equal(simdr_file_size(f->s), size);
    uint64_t tail = 0;
    assert_int_equal(simdr_rename(f->s, TU_STR("old"), TU_STR("new"), &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(f->s));
    tu_expect_absent(f->s, TU_STR("old"));
    tu_expect_str(f->s, "new", "payload");
    assert_int_equal(simdr_count(f->s), 2);
    /* rename onto an existing key replaces it */
    assert_int_equal(simdr_rename(f->s, TU_STR("new"), TU_STR("other"), NULL), SIMDR_OK);
    tu_expect_str(f->s, "other", "payload");
    tu_expect_absent(f->s, TU_STR("new"));
    assert_int_equal(simdr_count(f->s), 1);
    reopen(f);
    tu_expect_str(f->s, "other", "payload");
    tu_expect_absent(f->s, TU_STR("old"));
    tu_expect_absent(f->s, TU_STR("new"));
    assert_int_equal(simdr_count(f->s), 1);
}

static void test_copy_move(void **state) {
    tu_fixture *f = *state;
    simdr_store *d = tu_open(f->other, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    uint8_t big[70000];
    tu_fill(big, sizeof big, 11);
    assert_int_equal(simdr_put(f->s, TU_STR("big"), big, sizeof big, NULL), SIMDR_OK);
    tu_put_str(f->s, "small", "s");
    uint64_t tail = 0;
    assert_int_equal(simdr_copy(f->s, TU_STR("big"), d, &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(d));
    tu_expect_value(d, TU_STR("big"), big, sizeof big);
    tu_expect_value(f->s, TU_STR("big"), big, sizeof big);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(d, TU_STR("big"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_checksum(e), tu_crc32(big, sizeof big));
    simdr_entry_release(e);
    assert_int_equal(simdr_copy(f->s, TU_STR("absent"), d, NULL), SIMDR_NOTFOUND);
    /* copy to the same store, or to another open of the same file: refused */
    uint64_t size = simdr_file_size(f->s);
    assert_int_equal(simdr_copy(f->s, TU_STR("big"), f->s, NULL), SIMDR_EINVAL);
    simdr_store *same = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_copy(same, TU_STR("big"), f->s, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_move(f->s, TU_STR("big"), same, NULL), SIMDR_EINVAL);
    /* into a read-only destination: refused */
    simdr_store *ro = tu_open(f->other, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_copy(f->s, TU_STR("small"), ro, NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_close(ro), SIMDR_OK);
    assert_int_equal(simdr_close(same), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->s), size);
    tu_expect_value(f->s, TU_STR("big"), big, sizeof big);

    uint64_t dsize = simdr_file_size(d);
    assert_int_equal(simdr_move(f->s, TU_STR("small"), d, &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(f->s));
    assert_true(simdr_file_size(d) > dsize);
    tu_expect_absent(f->s, TU_STR("small"));
    tu_expect_str(d, "small", "s");
    assert_int_equal(simdr_move(f->s, TU_STR("small"), d, NULL), SIMDR_NOTFOUND);
    assert_int_equal(simdr_count(f->s), 1);
    assert_int_equal(simdr_count(d), 2);
    assert_int_equal(simdr_close(d), SIMDR_OK);
    reopen(f);
    d = tu_open(f->other, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_layout_of(d), SIMDR_LAYOUT_UNALIGNED);
    tu_expect_value(d, TU_STR("big"), big, sizeof big);
    tu_expect_str(d, "small", "s");
    tu_expect_absent(f->s, TU_STR("small"));
    tu_expect_value(f->s, TU_STR("big"), big, sizeof big);
    assert_int_equal(simdr_close(d), SIMDR_OK);
}

typedef struct stats {
    uint64_t count, size, savings;
    int empty;
} stats;

static stats get_stats(simdr_store *s) {
    stats st = {simdr_count(s), simdr_file_size(s), simdr_compaction_savings(s),
                simdr_is_empty(s)};
    return st;
}

static void test_stats_and_reopen(void **state) {
    tu_fixture *f = *state;
    stats st = get_stats(f->s);
    assert_int_equal(st.count, 0);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.savings, 0);
    assert_int_equal(st.empty, 1);
    uint8_t v[1000];
    tu_fill(v, sizeof v, 1);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(simdr_put(f->s, TU_STR(k), v, 100 + (size_t)i, NULL), SIMDR_OK);
    }
    st = get_stats(f->s);
    assert_int_equal(st.count, 50);
    assert_int_equal(st.savings, 0);
    assert_int_equal(st.empty, 0);
    assert_int_equal(st.size, (uint64_t)tu_file_size(f->path));
    /* overwrite 10, delete 10: savings grow, count drops by 10 */
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(simdr_put(f->s, TU_STR(k), v, 7, NULL), SIMDR_OK);
        snprintf(k, sizeof k, "k%d", 20 + i);
        assert_int_equal(simdr_delete(f->s, TU_STR(k), NULL), SIMDR_OK);
    }
    assert_true(simdr_index_bytes(f->s) > 0);
    stats mid = get_stats(f->s);
    assert_int_equal(mid.count, 40);
    assert_true(mid.savings > 0);
    assert_true(mid.savings < mid.size);
    reopen(f);
    stats after = get_stats(f->s);
    assert_int_equal(after.count, mid.count);
    assert_int_equal(after.size, mid.size);
    assert_int_equal(after.savings, mid.savings);
    assert_int_equal(after.empty, 0);
    /* savings is exact: compaction removes exactly that many bytes */
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->s), mid.size - mid.savings);
    assert_int_equal(tu_file_size(f->path), (int64_t)(mid.size - mid.savings));
    assert_int_equal(simdr_compaction_savings(f->s), 0);
    assert_int_equal(simdr_count(f->s), 40);
    /* delete everything: empty again, before and after reopen */
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        int rc = simdr_delete(f->s, TU_STR(k), NULL);
        assert_int_equal(rc, (i >= 20 && i < 30) ? SIMDR_NOTFOUND : SIMDR_OK);
    }
    assert_int_equal(simdr_count(f->s), 0);
    assert_int_equal(simdr_is_empty(f->s), 1);
    reopen(f);
    assert_int_equal(simdr_count(f->s), 0);
    assert_int_equal(simdr_is_empty(f->s), 1);
    assert_string_equal(simdr_path(f->s), f->path);
}

/* A move out of a read-only store used to copy the value and only then fail
 * on the delete (the key ended up in both stores); into a read-only store it
 * must fail as well. Both are refused before anything is written. */
static void test_move_refuses_readonly_stores(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "k", "value");
    simdr_store *d = tu_open(f->other, SIMDR_OPEN_CREATE, 0);
    tu_put_str(d, "other", "x");
    assert_int_equal(simdr_close(d), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    d = tu_open(f->other, SIMDR_OPEN_EXISTING, 0);
    uint64_t src_size = simdr_file_size(f->s), dst_size = simdr_file_size(d);
    assert_int_equal(simdr_move(f->s, TU_STR("k"), d, NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_file_size(d), dst_size);
    tu_expect_absent(d, TU_STR("k"));
    assert_int_equal(simdr_file_size(f->s), src_size);
    tu_expect_str(f->s, "k", "value");
    assert_int_equal(simdr_close(d), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    /* the other way round: a writable source, a read-only target */
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    d = tu_open(f->other, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_move(f->s, TU_STR("k"), d, NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_file_size(f->s), src_size);
    tu_expect_str(f->s, "k", "value");
    assert_int_equal(simdr_close(d), SIMDR_OK);
    assert_int_equal(tu_file_size(f->other), (int64_t)dst_size);
}

/* A value whose bytes no longer match their checksum is not copied (the copy
 * would certify them with a fresh checksum), nor moved. */
static void test_copy_move_refuse_damaged_value(void **state) {
    tu_fixture *f = *state;
    uint8_t v[500];
    tu_fill(v, sizeof v, 5);
    assert_int_equal(simdr_put(f->s, TU_STR("k"), v, sizeof v, NULL), SIMDR_OK);
    tu_put_str(f->s, "after", "a");
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("k"), &e), SIMDR_OK);
    uint64_t off = simdr_entry_offset(e) + 100;
    simdr_entry_release(e);
    uint8_t flipped = v[100] ^ 1;
    tu_patch_file(f->path, off, &flipped, 1);
    simdr_store *d = tu_open(f->other, SIMDR_OPEN_CREATE, 0);
    assert_int_equal(simdr_copy(f->s, TU_STR("k"), d, NULL), SIMDR_ECORRUPT);
    assert_int_equal(simdr_move(f->s, TU_STR("k"), d, NULL), SIMDR_ECORRUPT);
    assert_int_equal(simdr_file_size(d), 0);
    /* Still there (not deleted by the refused move), still reported as damaged. */
    assert_int_equal(simdr_exists(f->s, TU_STR("k")), SIMDR_ECORRUPT);
    assert_int_equal(simdr_close(d), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_delete),
        TU_TEST(test_get_last),
        TU_TEST(test_rename),
        TU_TEST(test_copy_move),
        TU_TEST(test_move_refuses_readonly_stores),
        TU_TEST(test_copy_move_refuse_damaged_value),
        TU_TEST(test_stats_and_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
