/*
 * test_batch.c - unit tests of the batch calls of libsimdr: batch put (by key
 * and by hash), validation of the whole batch before writing, later-wins for
 * a key repeated in one batch, batch get with absent keys, batch delete;
 * batch get checked key by key against simdr_get for every batch size around
 * the read pipeline's depths and window (0, 1, 2 keys up to several
 * windows) with absent, repeated and deleted keys, the lifetime of batch
 * handles (released in any order, on another thread, after dup, after
 * compaction and close), batches that cross index growths (repeated keys, a
 * rename's tombstone on either side of a growth), checksums of short and
 * long values; NULL keys and value lengths near SIZE_MAX refused.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N 2000

typedef struct fixture {
    tu_fixture tu; /* the directory, the store path and the store */
    char keys[N][16];
    uint8_t *vals[N];
    size_t vlen[N];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tu_fixture_init(&f->tu, 1);
    uint64_t seed = tu_seed(20240601);
    for (int i = 0; i < N; i++) {
        snprintf(f->keys[i], sizeof f->keys[i], "key-%05d", i);
        f->vlen[i] = 1 + (size_t)(tu_rand(&seed) % 300);
        f->vals[i] = malloc(f->vlen[i]);
        tu_fill(f->vals[i], f->vlen[i], seed + (uint64_t)i);
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    for (int i = 0; i < N; i++)
        free(f->vals[i]);
    tu_fixture_free(&f->tu);
    free(f);
    return 0;
}

static void put_all(fixture *f, uint64_t *tail) {
    simdr_kv *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].key = f->keys[i];
        items[i].key_len = strlen(f->keys[i]);
        items[i].value = f->vals[i];
        items[i].value_len = f->vlen[i];
    }
    assert_int_equal(simdr_put_batch(f->tu.s, items, N, tail), SIMDR_OK);
    free(items);
}

static void test_batch_put(void **state) {
    fixture *f = *state;
    uint64_t tail = 0;
    put_all(f, &tail);
    assert_int_equal(tail, simdr_file_size(f->tu.s));
    assert_int_equal(tu_file_size(f->tu.path), (int64_t)tail);
    assert_int_equal(simdr_count(f->tu.s), N);
    /* the index costs at most 16 bytes per live key */
    assert_true(simdr_index_bytes(f->tu.s) > 0);
    assert_true(simdr_index_bytes(f->tu.s) <= 16 * (uint64_t)N);
    for (int i = 0; i < N; i++)
        tu_expect_value(f->tu.s, TU_STR(f->keys[i]), f->vals[i], f->vlen[i]);
    /* entries are chained in batch order and payloads aligned */
    uint64_t prev_end = 0;
    for (int i = 0; i < N; i++) {
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(f->tu.s, TU_STR(f->keys[i]), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_start(e), prev_end);
        assert_int_equal(simdr_entry_offset(e) % 64, 0);
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        prev_end = simdr_entry_end(e);
        simdr_entry_release(e);
    }
    assert_int_equal(prev_end, tail);
    simdr_entry *last = NULL;
    assert_int_equal(simdr_get_last(f->tu.s, &last), SIMDR_OK);
    assert_int_equal(simdr_entry_key_hash(last), simdr_hash_key(TU_STR(f->keys[N - 1])));
    simdr_entry_release(last);
    /* persists */
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(f->tu.s), N);
    for (int i = 0; i < N; i += 7)
        tu_expect_value(f->tu.s, TU_STR(f->keys[i]), f->vals[i], f->vlen[i]);
}

static void test_batch_later_item_wins(void **state) {
    fixture *f = *state;
    simdr_kv items[4] = {
        {"dup", 3, "first", 5},
        {"other", 5, "o", 1},
        {"dup", 3, "second", 6},
        {"dup", 3, "third!", 6},
    };
    assert_int_equal(simdr_put_batch(f->tu.s, items, 4, NULL), SIMDR_OK);
    tu_expect_str(f->tu.s, "dup", "third!");
    tu_expect_str(f->tu.s, "other", "o");
    assert_int_equal(simdr_count(f->tu.s), 2);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->tu.s, "dup", "third!");
    assert_int_equal(simdr_count(f->tu.s), 2);
}

static void test_batch_bad_item_refuses_all(void **state) {
    fixture *f = *state;
    tu_put_str(f->tu.s, "pre", "existing");
    uint64_t size = simdr_file_size(f->tu.s);
    const uint8_t zero = 0;
    simdr_kv bad1[3] = {{"a", 1, "x", 1}, {"b", 1, &zero, 1}, {"c", 1, "z", 1}};
    simdr_kv bad2[3] = {{"a", 1, "x", 1}, {"b", 1, "y", 1}, {"c", 1, "", 0}};
    uint64_t tail = 0;
    assert_int_equal(simdr_put_batch(f->tu.s, bad1, 3, &tail), SIMDR_EINVAL);
    assert_int_equal(simdr_put_batch(f->tu.s, bad2, 3, &tail), SIMDR_EINVAL);
    simdr_hashed_kv hb[2] = {{1, "x", 1}, {2, &zero, 1}};
    assert_int_equal(simdr_put_batch_hashed(f->tu.s, hb, 2, &tail), SIMDR_EINVAL);
    assert_int_equal(simdr_file_size(f->tu.s), size);
    assert_int_equal(tu_file_size(f->tu.path), (int64_t)size);
    tu_expect_absent(f->tu.s, TU_STR("a"));
    tu_expect_absent(f->tu.s, TU_STR("b"));
    tu_expect_absent(f->tu.s, TU_STR("c"));
    assert_int_equal(simdr_count(f->tu.s), 1);
    tu_expect_str(f->tu.s, "pre", "existing");
    /* two zero bytes are a valid regular value in a batch too */
    const uint8_t zz[2] = {0, 0};
    simdr_kv ok[1] = {{"zz", 2, zz, 2}};
    assert_int_equal(simdr_put_batch(f->tu.s, ok, 1, NULL), SIMDR_OK);
    tu_expect_value(f->tu.s, TU_STR("zz"), zz, 2);
}

static void test_batch_put_hashed(void **state) {
    fixture *f = *state;
    simdr_hashed_kv *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].key_hash = simdr_hash_key(TU_STR(f->keys[i]));
        items[i].value = f->vals[i];
        items[i].value_len = f->vlen[i];
    }
    uint64_t tail = 0;
    assert_int_equal(simdr_put_batch_hashed(f->tu.s, items, N, &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(f->tu.s));
    assert_int_equal(simdr_count(f->tu.s), N);
    for (int i = 0; i < N; i++)
        tu_expect_value(f->tu.s, TU_STR(f->keys[i]), f->vals[i], f->vlen[i]);
    free(items);
}

static void test_batch_get(void **state) {
    fixture *f = *state;
    put_all(f, NULL);
    /* every other key absent */
    enum { M = 600 };
    simdr_key keys[M];
    char absent[M][24];
    simdr_entry *out[M];
    for (int i = 0; i < M; i++) {
        if (i % 2 == 0) {
            keys[i].key = f->keys[i * 3];
            keys[i].key_len = strlen(f->keys[i * 3]);
        } else {
            snprintf(absent[i], sizeof absent[i], "absent-%d", i);
            keys[i].key = absent[i];
            keys[i].key_len = strlen(absent[i]);
        }
        out[i] = (simdr_entry *)(uintptr_t)0x1;
    }
    int64_t found = simdr_get_batch(f->tu.s, keys, M, out);
    assert_int_equal(found, M / 2);
    for (int i = 0; i < M; i++) {
        if (i % 2 == 0) {
            assert_non_null(out[i]);
            assert_int_equal(simdr_entry_size(out[i]), f->vlen[i * 3]);
            assert_memory_equal(simdr_entry_data(out[i]), f->vals[i * 3], f->vlen[i * 3]);
        } else {
            assert_null(out[i]);
        }
        simdr_entry_release(out[i]);
    }
    /* by hash, including a deleted key */
    assert_int_equal(simdr_delete(f->tu.s, TU_STR(f->keys[1]), NULL), SIMDR_OK);
    uint64_t hs[4] = {simdr_hash_key(TU_STR(f->keys[0])), simdr_hash_key(TU_STR(f->keys[1])),
                      simdr_hash_key(TU_STR("absent")), simdr_hash_key(TU_STR(f->keys[2]))};
    simdr_entry *ho[4];
    assert_int_equal(simdr_get_batch_hashed(f->tu.s, hs, 4, ho), 2);
    assert_non_null(ho[0]);
    assert_null(ho[1]);
    assert_null(ho[2]);
    assert_non_null(ho[3]);
    assert_memory_equal(simdr_entry_data(ho[3]), f->vals[2], f->vlen[2]);
    for (int i = 0; i < 4; i++)
        simdr_entry_release(ho[i]);
    /* empty request */
    assert_int_equal(simdr_get_batch(f->tu.s, keys, 0, out), 0);
}

/* One batch far larger than a fresh index: it grows several times inside the
 * batch, and the second half of the batch rewrites keys of the first half. */
#define GROW_KEYS 4000
#define GROW_ITEMS 6000
#define RENAMES 2000
#define DELETES 1000

static void grow_key(char *out, size_t cap, const char *prefix, int i) {
    snprintf(out, cap, "%s-%05d", prefix, i);
}

static void expect_grown_store(simdr_store *s) {
    char key[32], val[32];
    for (int k = 0; k < GROW_KEYS; k++) {
        /* The newest version of key k is the last item j with j % GROW_KEYS == k. */
        int newest = k < GROW_ITEMS - GROW_KEYS ? k + GROW_KEYS : k;
        snprintf(val, sizeof val, "v%d", newest);
        grow_key(key, sizeof key, "g", k);
        if (k < RENAMES) {
            tu_expect_absent(s, key, strlen(key));
            grow_key(key, sizeof key, "r", k);
        }
        if (k >= GROW_KEYS - DELETES)
            tu_expect_absent(s, key, strlen(key));
        else
            tu_expect_str(s, key, val);
    }
    assert_int_equal(simdr_count(s), GROW_KEYS - DELETES);
}

static void test_batch_across_index_growth(void **state) {
    fixture *f = *state;
    static char keys[GROW_ITEMS][16], vals[GROW_ITEMS][16];
    simdr_kv *items = calloc(GROW_ITEMS, sizeof *items);
    for (int j = 0; j < GROW_ITEMS; j++) {
        grow_key(keys[j], sizeof keys[j], "g", j % GROW_KEYS);
        snprintf(vals[j], sizeof vals[j], "v%d", j);
        items[j] = (simdr_kv){keys[j], strlen(keys[j]), vals[j], strlen(vals[j])};
    }
    assert_int_equal(simdr_put_batch(f->tu.s, items, GROW_ITEMS, NULL), SIMDR_OK);
    free(items);
    assert_int_equal(simdr_count(f->tu.s), GROW_KEYS);
    assert_true(simdr_index_bytes(f->tu.s) <= 16 * simdr_count(f->tu.s));

    /* Each rename is one append of a new key and a tombstone and adds one
     * index slot, so one of them starts with room for exactly one more key:
     * its put lands before a growth and its tombstone after. */
    for (int k = 0; k < RENAMES; k++) {
        char from[32], to[32];
        grow_key(from, sizeof from, "g", k);
        grow_key(to, sizeof to, "r", k);
        assert_int_equal(simdr_rename(f->tu.s, from, strlen(from), to, strlen(to), NULL),
                         SIMDR_OK);
    }
    assert_int_equal(simdr_count(f->tu.s), GROW_KEYS);

    simdr_key *dels = calloc(DELETES, sizeof *dels);
    static char del_keys[DELETES][16];
    for (int i = 0; i < DELETES; i++) {
        grow_key(del_keys[i], sizeof del_keys[i], "g", GROW_KEYS - DELETES + i);
        dels[i] = (simdr_key){del_keys[i], strlen(del_keys[i])};
    }
    size_t deleted = 0;
    assert_int_equal(simdr_delete_batch(f->tu.s, dels, DELETES, &deleted, NULL), SIMDR_OK);
    assert_int_equal(deleted, DELETES);
    free(dels);

    expect_grown_store(f->tu.s);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    expect_grown_store(f->tu.s);
}

/* Bitwise CRC-32 (IEEE, reflected), the definition the format refers to. */
static uint32_t reference_crc32(const uint8_t *p, size_t len) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void test_batch_checksums_match_reference(void **state) {
    fixture *f = *state;
    enum { LENGTHS = 200 };
    static uint8_t vals[LENGTHS][LENGTHS + 1];
    static char keys[LENGTHS][16];
    simdr_kv items[LENGTHS];
    for (int i = 0; i < LENGTHS; i++) {
        size_t len = (size_t)i + 1;
        tu_fill(vals[i], len, (uint64_t)i);
        vals[i][0] |= 1; /* never the reserved one-byte 0x00 value */
        snprintf(keys[i], sizeof keys[i], "crc-%d", i);
        items[i] = (simdr_kv){keys[i], strlen(keys[i]), vals[i], len};
    }
    assert_int_equal(simdr_put_batch(f->tu.s, items, LENGTHS, NULL), SIMDR_OK);
    for (int i = 0; i < LENGTHS; i++) {
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(f->tu.s, keys[i], strlen(keys[i]), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_checksum(e), reference_crc32(vals[i], (size_t)i + 1));
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        simdr_entry_release(e);
    }
}

static void test_batch_delete(void **state) {
    fixture *f = *state;
    put_all(f, NULL);
    simdr_key keys[6] = {{f->keys[0], strlen(f->keys[0])},
                         {"absent-1", 8},
                         {f->keys[5], strlen(f->keys[5])},
                         {f->keys[9], strlen(f->keys[9])},
                         {"absent-2", 8},
                         {f->keys[5], strlen(f->keys[5])}};
    size_t deleted = 0;
    uint64_t tail = 0;
    assert_int_equal(simdr_delete_batch(f->tu.s, keys, 6, &deleted, &tail), SIMDR_OK);
    assert_int_equal(deleted, 3);
    assert_int_equal(tail, simdr_file_size(f->tu.s));
    assert_int_equal(simdr_count(f->tu.s), N - 3);
    tu_expect_absent(f->tu.s, TU_STR(f->keys[0]));
    tu_expect_absent(f->tu.s, TU_STR(f->keys[5]));
    tu_expect_absent(f->tu.s, TU_STR(f->keys[9]));
    tu_expect_value(f->tu.s, TU_STR(f->keys[1]), f->vals[1], f->vlen[1]);
    /* deleting only absent keys appends nothing */
    uint64_t size = simdr_file_size(f->tu.s);
    deleted = 99;
    assert_int_equal(simdr_delete_batch(f->tu.s, keys, 2, &deleted, NULL), SIMDR_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(simdr_file_size(f->tu.s), size);
    assert_int_equal(tu_file_size(f->tu.path), (int64_t)size);
    /* survives reopen */
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(f->tu.s), N - 3);
    tu_expect_absent(f->tu.s, TU_STR(f->keys[5]));
    tu_expect_value(f->tu.s, TU_STR(f->keys[6]), f->vals[6], f->vlen[6]);
}

/* Checks one batch result against single gets of the same keys. */
static void expect_batch_matches_gets(simdr_store *s, const simdr_key *keys, size_t n,
                                      simdr_entry **out, int64_t found) {
    int64_t present = 0;
    for (size_t i = 0; i < n; i++) {
        simdr_entry *e = NULL;
        int rc = simdr_get(s, keys[i].key, keys[i].key_len, &e);
        if (rc == SIMDR_NOTFOUND) {
            assert_null(out[i]);
            continue;
        }
        assert_int_equal(rc, SIMDR_OK);
        assert_non_null(out[i]);
        present++;
        assert_int_equal(simdr_entry_size(out[i]), simdr_entry_size(e));
        assert_int_equal(simdr_entry_offset(out[i]), simdr_entry_offset(e));
        assert_int_equal(simdr_entry_key_hash(out[i]), simdr_hash_key(keys[i].key, keys[i].key_len));
        assert_memory_equal(simdr_entry_data(out[i]), simdr_entry_data(e), simdr_entry_size(e));
        assert_false(simdr_entry_is_tombstone(out[i]));
        assert_int_equal(simdr_entry_verify(out[i]), SIMDR_OK);
        simdr_entry_release(e);
    }
    assert_int_equal(found, present);
}

/* Every batch size around the pipeline depths (8, 16, 24) and the window
 * (256): present keys with known values, absent keys, deleted keys and keys
 * repeated within one batch, by key and by hash; handles released in an
 * order other than the batch's. */
static void test_batch_get_sizes(void **state) {
    fixture *f = *state;
    put_all(f, NULL);
    for (int i = 0; i < N; i += 7)
        assert_int_equal(simdr_delete(f->tu.s, TU_STR(f->keys[i]), NULL), SIMDR_OK);
    /* an overwritten key must come back with its newest value */
    static const char newer[] = "newer value";
    assert_int_equal(simdr_put(f->tu.s, TU_STR(f->keys[3]), newer, sizeof newer, NULL), SIMDR_OK);
    const size_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 33,
                            255, 256, 257, 511, 513, 1000, 3 * N};
    enum { MAXN = 3 * N };
    simdr_key *keys = calloc(MAXN, sizeof *keys);
    uint64_t *hashes = calloc(MAXN, sizeof *hashes);
    simdr_entry **out = calloc(MAXN, sizeof *out);
    char(*absent)[64] = calloc(MAXN, sizeof *absent);
    uint64_t seed = tu_seed(77);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (size_t i = 0; i < n; i++) {
            uint64_t r = tu_rand(&seed);
            if (r % 5 == 0) {
                snprintf(absent[i], sizeof absent[i], "absent-%zu-%zu", n, i);
                keys[i].key = absent[i];
            } else if (r % 5 == 1 && i > 0) {
                keys[i] = keys[(r >> 8) % i]; /* a repeat of an earlier key */
                hashes[i] = simdr_hash_key(keys[i].key, keys[i].key_len);
                continue;
            } else {
                keys[i].key = f->keys[(r >> 8) % N];
            }
            keys[i].key_len = strlen(keys[i].key);
            hashes[i] = simdr_hash_key(keys[i].key, keys[i].key_len);
        }
        for (int by_hash = 0; by_hash < 2; by_hash++) {
            for (size_t i = 0; i < n; i++) out[i] = (simdr_entry *)(uintptr_t)0x1;
            int64_t found = by_hash ? simdr_get_batch_hashed(f->tu.s, hashes, n, out)
                                    : simdr_get_batch(f->tu.s, keys, n, out);
            assert_true(found >= 0);
            expect_batch_matches_gets(f->tu.s, keys, n, out, found);
            /* spot-check values against what was written */
            for (size_t i = 0; i < n; i++) {
                if (!out[i] || keys[i].key == f->keys[3]) continue;
                assert_memory_equal(keys[i].key, "key-", 4);
                int k = atoi((const char *)keys[i].key + 4);
                assert_int_equal(simdr_entry_size(out[i]), f->vlen[k]);
                assert_memory_equal(simdr_entry_data(out[i]), f->vals[k], f->vlen[k]);
            }
            for (size_t i = 0; i < n; i++) {
                if (keys[i].key == f->keys[3]) {
                    assert_non_null(out[i]);
                    assert_memory_equal(simdr_entry_data(out[i]), newer, sizeof newer);
                } else if (memcmp(keys[i].key, "key-", 4) == 0 &&
                           atoi((const char *)keys[i].key + 4) % 7 == 0) {
                    assert_null(out[i]); /* deleted */
                }
            }
            /* release from both ends towards the middle */
            for (size_t i = 0; i < n / 2; i++) simdr_entry_release(out[i * 2 % n]);
            for (size_t i = 0; i < n; i++)
                if (!(i % 2 == 0 && i / 2 < n / 2)) simdr_entry_release(out[i]);
        }
    }
    free(keys);
    free(hashes);
    free(out);
    free(absent);
}

/* A batch where nothing is found, and a batch of only deleted keys. */
static void test_batch_get_none_found(void **state) {
    fixture *f = *state;
    simdr_key keys[40];
    simdr_entry *out[40];
    for (int i = 0; i < 40; i++) {
        keys[i].key = f->keys[i];
        keys[i].key_len = strlen(f->keys[i]);
    }
    assert_int_equal(simdr_get_batch(f->tu.s, keys, 40, out), 0); /* empty store */
    for (int i = 0; i < 40; i++) assert_null(out[i]);
    put_all(f, NULL);
    size_t deleted = 0;
    assert_int_equal(simdr_delete_batch(f->tu.s, keys, 40, &deleted, NULL), SIMDR_OK);
    assert_int_equal(deleted, 40);
    assert_int_equal(simdr_get_batch(f->tu.s, keys, 40, out), 0);
    for (int i = 0; i < 40; i++) assert_null(out[i]);
    assert_int_equal(simdr_get_batch(f->tu.s, NULL, 1, out), SIMDR_EINVAL);
    simdr_key null_key = {NULL, 3};
    simdr_key with_null[2] = {{f->keys[100], strlen(f->keys[100])}, null_key};
    out[0] = out[1] = (simdr_entry *)(uintptr_t)0x1;
    assert_int_equal(simdr_get_batch(f->tu.s, with_null, 2, out), SIMDR_EINVAL);
    assert_null(out[0]);
    assert_null(out[1]);
}

static void *release_all(void *p) {
    simdr_entry **hs = p;
    for (int i = 0; hs[i]; i++) simdr_entry_release(hs[i]);
    return NULL;
}

/* Handles of one batch share memory: each must still live exactly as long
 * as the lifetime rule says, whatever happens to its siblings. */
static void test_batch_handle_lifetime(void **state) {
    fixture *f = *state;
    put_all(f, NULL);
    enum { M = 300 };
    simdr_key keys[M];
    simdr_entry *out[M];
    for (int i = 0; i < M; i++) {
        keys[i].key = f->keys[i];
        keys[i].key_len = strlen(f->keys[i]);
    }
    assert_int_equal(simdr_get_batch(f->tu.s, keys, M, out), M);
    /* a dup outlives the original and its whole batch */
    simdr_entry *dup = NULL;
    assert_int_equal(simdr_entry_dup(out[5], &dup), SIMDR_OK);
    /* some handles go on another thread, some here, two are kept */
    simdr_entry *other[M + 1];
    int n_other = 0;
    for (int i = 0; i < M; i++) {
        if (i == 7 || i == 290) continue;
        if (i % 3 == 0)
            other[n_other++] = out[i];
        else
            simdr_entry_release(out[i]);
    }
    other[n_other] = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_all, other), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* the kept handles survive overwrites, compaction and close */
    for (int i = 0; i < 20; i++) tu_put_str(f->tu.s, f->keys[i], "overwritten");
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = NULL;
    assert_memory_equal(simdr_entry_data(out[7]), f->vals[7], f->vlen[7]);
    assert_memory_equal(simdr_entry_data(out[290]), f->vals[290], f->vlen[290]);
    assert_memory_equal(simdr_entry_data(dup), f->vals[5], f->vlen[5]);
    simdr_entry_release(out[290]);
    simdr_entry_release(dup);
    assert_int_equal(simdr_entry_verify(out[7]), SIMDR_OK);
    simdr_entry_release(out[7]);
}

/* Arguments a caller can get wrong: a NULL key with a length (batch put and
 * delete crashed on it), value lengths whose sum wraps around SIZE_MAX (a
 * heap overflow: the batch buffer was sized by the wrapped sum), a value of
 * SIZE_MAX bytes (SIMDR_EIO instead of SIMDR_ETOOBIG). Each is refused with
 * nothing written. */
static void test_batch_argument_checks(void **state) {
    fixture *f = *state;
    tu_put_str(f->tu.s, "before", "b");
    uint64_t size = simdr_file_size(f->tu.s);
    uint8_t small[128] = {1};
    simdr_kv kv[2] = {{f->keys[0], 9, small, 10}, {NULL, 3, small, 10}};
    assert_int_equal(simdr_put_batch(f->tu.s, kv, 2, NULL), SIMDR_EINVAL);
    simdr_key keys[2] = {{"before", 6}, {NULL, 5}};
    size_t deleted = 77;
    assert_int_equal(simdr_delete_batch(f->tu.s, keys, 2, &deleted, NULL), SIMDR_EINVAL);
    assert_int_equal(deleted, 77);
    tu_expect_str(f->tu.s, "before", "b");

    kv[1] = (simdr_kv){f->keys[1], 9, small, SIZE_MAX - 10};
    assert_int_equal(simdr_put_batch(f->tu.s, kv, 2, NULL), SIMDR_ETOOBIG);
    kv[0].value_len = SIZE_MAX / 2 + 1;
    kv[1].value_len = SIZE_MAX / 2 + 1;
    assert_int_equal(simdr_put_batch(f->tu.s, kv, 2, NULL), SIMDR_ETOOBIG);
    simdr_hashed_kv hk[2] = {{1, small, 100}, {2, small, SIZE_MAX}};
    assert_int_equal(simdr_put_batch_hashed(f->tu.s, hk, 2, NULL), SIMDR_ETOOBIG);
    /* each below the limit, together beyond the 128 TiB a file can hold */
    kv[0].value_len = (size_t)1 << 46;
    kv[1].value_len = (size_t)1 << 46;
    assert_int_equal(simdr_put_batch(f->tu.s, kv, 2, NULL), SIMDR_ETOOBIG);
    assert_int_equal(simdr_put(f->tu.s, TU_STR("huge"), small, SIZE_MAX, NULL), SIMDR_ETOOBIG);
    assert_int_equal(simdr_put(f->tu.s, TU_STR("huge"), small, SIZE_MAX - 19, NULL),
                     SIMDR_ETOOBIG);
    assert_int_equal(simdr_file_size(f->tu.s), size);
    assert_int_equal(tu_file_size(f->tu.path), (int64_t)size);
    assert_int_equal(simdr_count(f->tu.s), 1);
    tu_put_str(f->tu.s, "after", "a");
    tu_expect_str(f->tu.s, "after", "a");
}

/* simdr_write_batch: puts and deletes in one append, in order, a later item
 * of a key winning; the deletes are tombstones the file keeps. */
static void test_write_batch_puts_and_deletes(void **state) {
    fixture *f = *state;
    put_all(f, NULL);
    uint64_t size = simdr_file_size(f->tu.s);
    simdr_kv ops[6] = {{"renamed", 7, f->vals[0], f->vlen[0]},
                       {f->keys[0], strlen(f->keys[0]), NULL, 0},   /* delete */
                       {"fresh", 5, "new", 3},
                       {"fresh", 5, NULL, 0},                       /* put, then delete */
                       {f->keys[1], strlen(f->keys[1]), NULL, 0},
                       {f->keys[1], strlen(f->keys[1]), "back", 4}}; /* delete, then put */
    uint64_t tail = 0;
    assert_int_equal(simdr_write_batch(f->tu.s, ops, 6, &tail), SIMDR_OK);
    assert_true(tail > size);
    assert_int_equal(tail, simdr_file_size(f->tu.s));
    for (int pass = 0; pass < 2; pass++) {
        tu_expect_value(f->tu.s, TU_STR("renamed"), f->vals[0], f->vlen[0]);
        tu_expect_absent(f->tu.s, TU_STR(f->keys[0]));
        tu_expect_absent(f->tu.s, TU_STR("fresh"));
        tu_expect_str(f->tu.s, f->keys[1], "back");
        tu_expect_value(f->tu.s, TU_STR(f->keys[2]), f->vals[2], f->vlen[2]);
        assert_int_equal(simdr_count(f->tu.s), N);
        assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
        f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    }
    /* The hashed form; a delete of an absent key still appends its tombstone. */
    size = simdr_file_size(f->tu.s);
    simdr_hashed_kv hk[2] = {{simdr_hash_key(TU_STR("renamed")), NULL, 0},
                             {simdr_hash_key(TU_STR("never-stored")), NULL, 0}};
    assert_int_equal(simdr_write_batch_hashed(f->tu.s, hk, 2, NULL), SIMDR_OK);
    assert_true(simdr_file_size(f->tu.s) > size);
    tu_expect_absent(f->tu.s, TU_STR("renamed"));
    assert_int_equal(simdr_count(f->tu.s), N - 1);
    /* One bad put refuses the deletes with it; NULL with a length is no delete. */
    size = simdr_file_size(f->tu.s);
    simdr_kv bad[2] = {{f->keys[2], strlen(f->keys[2]), NULL, 0}, {"x", 1, "\0", 1}};
    assert_int_equal(simdr_write_batch(f->tu.s, bad, 2, NULL), SIMDR_EINVAL);
    bad[1] = (simdr_kv){"x", 1, NULL, 5};
    assert_int_equal(simdr_write_batch(f->tu.s, bad, 2, NULL), SIMDR_EINVAL);
    bad[1] = (simdr_kv){NULL, 3, "v", 1};
    assert_int_equal(simdr_write_batch(f->tu.s, bad, 2, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_write_batch(f->tu.s, bad, 0, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_write_batch(f->tu.s, NULL, 1, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_file_size(f->tu.s), size);
    tu_expect_value(f->tu.s, TU_STR(f->keys[2]), f->vals[2], f->vlen[2]);
    simdr_store *ro = tu_open(f->tu.path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_write_batch(ro, bad, 1, NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_close(ro), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_later_item_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_bad_item_refuses_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_put_hashed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_get_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_get_none_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_handle_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_across_index_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_checksums_match_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_argument_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_batch_puts_and_deletes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
