/*
 * test_hash_range.c - simdr_hashes_in_range: ranges that partition the hash
 * space return every live key exactly once (deleted keys never, overwritten
 * ones once), each inside its range; a cursor stepping through the space
 * while keys are added (the index grows), deleted and the store compacted
 * sees each key present throughout exactly once; a short buffer gets the
 * count; bad ranges are refused; a slot whose metadata lost its hash is
 * SIMDR_ECORRUPT, never a silent gap.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define KEYS 6000
#define SPACE (UINT64_C(1) << 32)

static uint64_t hash_of(int k) {
    char key[32];
    snprintf(key, sizeof key, "hr-%d", k);
    return simdr_hash_key(key, strlen(key));
}

static void put(simdr_store *s, int k, uint64_t version) {
    char key[32];
    snprintf(key, sizeof key, "hr-%d", k);
    assert_int_equal(simdr_put(s, TU_STR(key), &version, sizeof version, NULL), SIMDR_OK);
}

static void del(simdr_store *s, int k) {
    char key[32];
    snprintf(key, sizeof key, "hr-%d", k);
    assert_int_equal(simdr_delete(s, TU_STR(key), NULL), SIMDR_OK);
}

/* Every key's hash with its number, sorted by hash. */
typedef struct keyed {
    uint64_t hash;
    int key;
} keyed;
static keyed by_hash[KEYS];

static int cmp_keyed(const void *a, const void *b) {
    uint64_t x = ((const keyed *)a)->hash, y = ((const keyed *)b)->hash;
    return x < y ? -1 : x > y;
}

static int setup(void **state) {
    for (int k = 0; k < KEYS; k++) by_hash[k] = (keyed){hash_of(k), k};
    qsort(by_hash, KEYS, sizeof *by_hash, cmp_keyed);
    return tu_setup_store(state);
}

/* The key whose hash is h, or -1. */
static int key_of(uint64_t h) {
    keyed probe = {h, 0};
    const keyed *hit = bsearch(&probe, by_hash, KEYS, sizeof *by_hash, cmp_keyed);
    return hit ? hit->key : -1;
}

/* Adds the hashes of [from, to) to seen[] (counting each key), checking
 * that each lies in the range. */
static void collect(simdr_store *s, uint64_t from, uint64_t to, int *seen) {
    uint64_t buf[KEYS];
    int64_t n = simdr_hashes_in_range(s, from, to, buf, KEYS);
    assert_true(n >= 0 && n <= KEYS);
    for (int64_t i = 0; i < n; i++) {
        uint64_t low = buf[i] & 0xffffffffu;
        assert_true(low >= from && low < to);
        int k = key_of(buf[i]);
        assert_true(k >= 0);
        seen[k]++;
    }
}

static void test_partitions_return_each_live_key_once(void **state) {
    tu_fixture *f = *state;
    static int live[KEYS], seen[KEYS];
    for (int k = 0; k < KEYS; k++) {
        put(f->s, k, 1);
        live[k] = 1;
    }
    for (int k = 0; k < KEYS; k += 5) put(f->s, k, 2);
    for (int k = 3; k < KEYS; k += 7) {
        del(f->s, k);
        live[k] = 0;
    }
    uint64_t rng = tu_seed(17);
    for (int round = 0; round < 4; round++) {
        memset(seen, 0, sizeof seen);
        /* Widths from one hash value to a quarter of the space. */
        for (uint64_t from = 0; from < SPACE;) {
            uint64_t r = tu_rand(&rng);
            uint64_t width = round == 0 ? SPACE : (UINT64_C(1) << (r % 31)) + (r >> 40) % 997;
            uint64_t to = from + width < SPACE ? from + width : SPACE;
            collect(f->s, from, to, seen);
            from = to;
        }
        for (int k = 0; k < KEYS; k++) assert_int_equal(seen[k], live[k]);
    }
    /* A buffer too short gets the count and as many hashes as fit. */
    uint64_t two[2] = {0, 0};
    int64_t n = simdr_hashes_in_range(f->s, 0, SPACE, two, 2);
    assert_int_equal(n, (int64_t)simdr_count(f->s));
    assert_true(key_of(two[0]) >= 0 && key_of(two[1]) >= 0);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, NULL, 0), n);
}

static void test_cursor_across_growth_deletes_and_compaction(void **state) {
    tu_fixture *f = *state;
    static int present[KEYS], seen[KEYS];
    for (int k = 0; k < KEYS / 4; k++) {
        put(f->s, k, 1);
        present[k] = 1; /* present from the start to the end */
    }
    int next_new = KEYS / 4, steps = 0;
    uint64_t width = SPACE / 64;
    for (uint64_t from = 0; from < SPACE; from += width, steps++) {
        collect(f->s, from, from + width, seen);
        /* Between steps: new keys (the index grows several times), deletes
         * of keys added meanwhile, overwrites of keys present throughout,
         * and a compaction halfway. */
        for (int j = 0; j < 70 && next_new < KEYS; j++) put(f->s, next_new++, 7);
        if (next_new > KEYS / 4 + 10) del(f->s, next_new - 10);
        put(f->s, steps % (KEYS / 4), 9);
        if (steps == 32) assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    }
    for (int k = 0; k < KEYS; k++) {
        if (present[k]) assert_int_equal(seen[k], 1);
        else assert_true(seen[k] <= 1);
    }
}

static void test_bad_ranges_and_empty_store(void **state) {
    tu_fixture *f = *state;
    uint64_t buf[4];
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, buf, 4), 0);
    assert_int_equal(simdr_hashes_in_range(f->s, 5, 5, buf, 4), SIMDR_EINVAL);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE + 1, buf, 4), SIMDR_EINVAL);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, 1, NULL, 4), SIMDR_EINVAL);
    assert_int_equal(simdr_hashes_in_range(NULL, 0, 1, buf, 4), SIMDR_EINVAL);
}

static void test_lost_hash_is_corrupt_not_a_gap(void **state) {
    tu_fixture *f = *state;
    put(f->s, 1, 1);
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    /* The only entry's metadata is the file's last 20 bytes; its hash is
     * the first 8 of them. Flip a bit of the top 16, which the slot keeps. */
    int64_t size = tu_file_size(f->path);
    uint8_t meta[8];
    tu_put_le64(meta, hash_of(1) ^ (UINT64_C(1) << 60));
    tu_patch_file(f->path, (uint64_t)size - 20, meta, sizeof meta);
    uint64_t buf[4];
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, buf, 4), SIMDR_ECORRUPT);
}

/* A table loaded from a hint file with a damaged block names no trustworthy
 * keys. A writable store rebuilds it from the chain at once, as its next
 * write would, and answers (a server's SCAN of a database nobody writes
 * must not fail until a restart); a read-only one cannot, and says
 * SIMDR_ECORRUPT. */
#define HINT_KEYS 70000 /* above the fewest keys a hint is kept for */
#define HINT_CAP_AT 32
#define HINT_TABLE_OFF_AT 64

static void test_damaged_hint_block_rebuilt_by_a_writable_store(void **state) {
    tu_fixture *f = *state;
    enum { BATCH = 1000 };
    static char keys[BATCH][32];
    simdr_kv kv[BATCH];
    for (int i = 0; i < HINT_KEYS; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            snprintf(keys[j], sizeof keys[j], "hinted-%d", i + j);
            kv[j] = (simdr_kv){keys[j], strlen(keys[j]), keys[j], strlen(keys[j])};
        }
        assert_int_equal(simdr_put_batch(f->s, kv, BATCH, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    size_t len = 0;
    uint8_t *bytes = tu_read_file(hint, &len);
    assert_non_null(bytes);
    uint64_t table = tu_get_le64(bytes + HINT_TABLE_OFF_AT), cap = tu_get_le64(bytes + HINT_CAP_AT);
    assert_int_equal(len, table + cap * 8);
    bytes[table + 3] ^= 0x40; /* a slot of the first block */

    tu_write_file(hint, bytes, len);
    simdr_store *ro = tu_open(f->path, SIMDR_OPEN_READONLY, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_hashes_in_range(ro, 0, SPACE, NULL, 0), SIMDR_ECORRUPT);
    assert_int_equal(simdr_close(ro), SIMDR_OK);

    tu_write_file(hint, bytes, len); /* the read-only open removed the damaged hint */
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, NULL, 0), HINT_KEYS);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE / 2, NULL, 0) +
                         simdr_hashes_in_range(f->s, SPACE / 2, SPACE, NULL, 0),
                     HINT_KEYS);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    /* Inside a read scope the store cannot rebuild (the rebuild waits for
     * readers): the same damage there is SIMDR_ECORRUPT, never a wait. */
    tu_write_file(hint, bytes, len);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    simdr_read scope;
    assert_int_equal(simdr_read_begin(f->s, &scope), SIMDR_OK);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, NULL, 0), SIMDR_ECORRUPT);
    simdr_read_end(&scope);
    assert_int_equal(simdr_hashes_in_range(f->s, 0, SPACE, NULL, 0), HINT_KEYS);
    free(bytes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_partitions_return_each_live_key_once, setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_cursor_across_growth_deletes_and_compaction, setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_ranges_and_empty_store, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lost_hash_is_corrupt_not_a_gap, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_hint_block_rebuilt_by_a_writable_store,
                                        setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
