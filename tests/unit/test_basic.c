/*
 * test_basic.c - unit tests of the basic single-key operations of libsimdr:
 * put/get/exists/get_copy, overwrite, refusal of empty and lone-0x00 values,
 * tail offsets, hashed access, namespaced keys, entry accessors and the
 * XXH3-64 / CRC-32 test vectors of FORMAT.md.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_version_and_strerror(void **state) {
    (void)state;
    assert_string_equal(simdr_version(), SIMDR_VERSION_STRING);
    for (int c = SIMDR_EFAILED; c <= SIMDR_OK; c++) {
        const char *m = simdr_strerror(c);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        for (int d = c + 1; d <= SIMDR_OK; d++)
            assert_string_not_equal(m, simdr_strerror(d));
    }
    assert_non_null(simdr_strerror(-1000));
    assert_non_null(simdr_strerror(12345));
    assert_int_equal(simdr_close(NULL), SIMDR_OK);
}

static void test_hash_vectors(void **state) {
    (void)state;
    assert_int_equal(simdr_hash_key("", 0), UINT64_C(0x2d06800538d394c2));
    assert_int_equal(simdr_hash_key(TU_STR("a")), UINT64_C(0xe6c632b61e964e1f));
    assert_int_equal(simdr_hash_key(TU_STR("b")), UINT64_C(0x575a0b1c44d8843f));
    assert_int_equal(simdr_hash_key(TU_STR("key1")), UINT64_C(0x384d070cd5d829e2));
    assert_int_equal(simdr_hash_key(TU_STR("alice")), UINT64_C(0x4da10dd61a0116b0));
    assert_int_equal(simdr_hash_key(TU_STR("test_key")), UINT64_C(0xe0614cc5ecbeed92));
}

static void test_crc_vectors(void **state) {
    tu_fixture *f = *state;
    /* the helper itself */
    assert_int_equal(tu_crc32(TU_STR("123456789")), 0xcbf43926u);
    const struct {
        const char *k, *v;
        uint32_t crc;
    } vec[] = {{"h", "hello", 0x3610a686u},
               {"w", "world", 0x3a771143u},
               {"n", "123456789", 0xcbf43926u}};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        tu_put_str(f->s, vec[i].k, vec[i].v);
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(f->s, TU_STR(vec[i].k), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_checksum(e), vec[i].crc);
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        simdr_entry_release(e);
    }
    assert_int_equal(simdr_delete(f->s, TU_STR("h"), NULL), SIMDR_OK);
    simdr_entry *t = NULL;
    assert_int_equal(simdr_get_last(f->s, &t), SIMDR_OK);
    assert_true(simdr_entry_is_tombstone(t));
    assert_int_equal(simdr_entry_checksum(t), 0xd202ef8du);
    simdr_entry_release(t);
}

static void test_namespaced_key(void **state) {
    tu_fixture *f = *state;
    uint8_t out[16], want[16];
    simdr_namespaced_key(TU_STR("users"), TU_STR("alice"), out);
    tu_put_le64(want, simdr_hash_key(TU_STR("users")));
    tu_put_le64(want + 8, UINT64_C(0x4da10dd61a0116b0));
    assert_memory_equal(out, want, 16);
    /* a different namespace gives a different key */
    uint8_t other[16];
    simdr_namespaced_key(TU_STR("groups"), TU_STR("alice"), other);
    assert_memory_not_equal(out, other, 16);
    assert_memory_equal(other + 8, out + 8, 8);
    /* usable as an ordinary key */
    assert_int_equal(simdr_put(f->s, out, 16, "v1", 2, NULL), SIMDR_OK);
    assert_int_equal(simdr_put(f->s, other, 16, "v2", 2, NULL), SIMDR_OK);
    tu_expect_value(f->s, out, 16, "v1", 2);
    tu_expect_value(f->s, other, 16, "v2", 2);
    tu_expect_absent(f->s, TU_STR("alice"));
}

static void test_put_get_exists(void **state) {
    tu_fixture *f = *state;
    assert_int_equal(simdr_is_empty(f->s), 1);
    assert_int_equal(simdr_count(f->s), 0);
    tu_expect_absent(f->s, TU_STR("alice"));
    uint64_t tail = 0;
    assert_int_equal(simdr_put(f->s, TU_STR("alice"), TU_STR("hello"), &tail), SIMDR_OK);
    assert_int_equal(tail, 25);
    tu_expect_str(f->s, "alice", "hello");
    assert_int_equal(simdr_exists(f->s, TU_STR("bob")), 0);
    assert_int_equal(simdr_count(f->s), 1);
    assert_int_equal(simdr_is_empty(f->s), 0);
    /* binary keys with NUL bytes are distinct from their prefixes */
    const uint8_t bk[] = {'x', 0, 'y'};
    assert_int_equal(simdr_put(f->s, bk, 3, "bin", 3, NULL), SIMDR_OK);
    tu_expect_value(f->s, bk, 3, "bin", 3);
    tu_expect_absent(f->s, bk, 1);
    /* the empty key is a key like any other (XXH3 of "") */
    assert_int_equal(simdr_put(f->s, "", 0, "empty-key", 9, NULL), SIMDR_OK);
    tu_expect_value(f->s, "", 0, "empty-key", 9);
    assert_int_equal(simdr_count(f->s), 3);
}

static void test_get_copy(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "k", "0123456789");
    char buf[32];
    size_t len = 0;
    memset(buf, '#', sizeof buf);
    assert_int_equal(simdr_get_copy(f->s, TU_STR("k"), buf, sizeof buf, &len), SIMDR_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123456789", 10);
    assert_int_equal(buf[10], '#');
    /* exact fit */
    len = 0;
    assert_int_equal(simdr_get_copy(f->s, TU_STR("k"), buf, 10, &len), SIMDR_OK);
    assert_int_equal(len, 10);
    /* too small: ETOOBIG, size reported, buffer untouched, and the message
     * is this call's (it was the last failed call's before) */
    assert_int_equal(simdr_put(f->s, TU_STR("zero"), "", 1, NULL), SIMDR_EINVAL);
    memset(buf, '#', sizeof buf);
    len = 0;
    assert_int_equal(simdr_get_copy(f->s, TU_STR("k"), buf, 9, &len), SIMDR_ETOOBIG);
    assert_int_equal(len, 10);
    assert_non_null(strstr(simdr_last_error(), "the value has 10 bytes, the buffer 9"));
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], '#');
    /* absent */
    assert_int_equal(simdr_get_copy(f->s, TU_STR("nope"), buf, sizeof buf, &len),
                     SIMDR_NOTFOUND);
}

static void test_overwrite(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "k", "first");
    tu_put_str(f->s, "k", "second value");
    tu_expect_str(f->s, "k", "second value");
    assert_int_equal(simdr_count(f->s), 1);
    tu_put_str(f->s, "k", "3");
    tu_expect_str(f->s, "k", "3");
    assert_int_equal(simdr_count(f->s), 1);
    assert_true(simdr_compaction_savings(f->s) > 0);
}

static void test_refusals(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "k", "keep");
    uint64_t size = simdr_file_size(f->s);
    uint64_t tail = 12345;
    const uint8_t zero = 0;
    assert_int_equal(simdr_put(f->s, TU_STR("k"), "", 0, &tail), SIMDR_EINVAL);
    assert_int_equal(simdr_put(f->s, TU_STR("k"), &zero, 1, &tail), SIMDR_EINVAL);
    assert_int_equal(simdr_put(f->s, TU_STR("new"), &zero, 1, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_put_hashed(f->s, simdr_hash_key(TU_STR("k")), &zero, 1, NULL),
                     SIMDR_EINVAL);
    assert_int_equal(simdr_put_hashed(f->s, simdr_hash_key(TU_STR("k")), "x", 0, NULL),
                     SIMDR_EINVAL);
    assert_int_equal(simdr_put(f->s, TU_STR("k"), NULL, 5, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_put(NULL, TU_STR("k"), "v", 1, NULL), SIMDR_EINVAL);
    assert_true(strlen(simdr_last_error()) > 0);
    /* nothing appended, nothing changed */
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    tu_expect_str(f->s, "k", "keep");
    tu_expect_absent(f->s, TU_STR("new"));
    assert_int_equal(simdr_count(f->s), 1);
    /* the next write lands right at the old tail */
    assert_int_equal(simdr_put(f->s, TU_STR("k2"), TU_STR("ok"), &tail), SIMDR_OK);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("k2"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), size);
    assert_int_equal(simdr_entry_end(e), tail);
    simdr_entry_release(e);
    /* two zero bytes are a regular value (only the lone 0x00 is the tombstone) */
    const uint8_t zz[2] = {0, 0};
    assert_int_equal(simdr_put(f->s, TU_STR("zz"), zz, 2, NULL), SIMDR_OK);
    tu_expect_value(f->s, TU_STR("zz"), zz, 2);
    /* a one-byte non-zero value is fine */
    assert_int_equal(simdr_put(f->s, TU_STR("one"), "\x01", 1, NULL), SIMDR_OK);
    tu_expect_value(f->s, TU_STR("one"), "\x01", 1);
}

static void test_tail_offsets_aligned(void **state) {
    tu_fixture *f = *state;
    uint64_t tail = 0;
    assert_int_equal(simdr_put(f->s, TU_STR("a"), TU_STR("hello"), &tail), SIMDR_OK);
    assert_int_equal(tail, 25);
    assert_int_equal(simdr_file_size(f->s), 25);
    assert_int_equal(tu_file_size(f->path), 25);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("a"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), 0);
    assert_int_equal(simdr_entry_offset(e), 0);
    assert_int_equal(simdr_entry_end(e), 25);
    assert_int_equal(simdr_entry_size(e), 5);
    assert_int_equal(simdr_entry_key_hash(e), UINT64_C(0xe6c632b61e964e1f));
    simdr_entry_release(e);

    assert_int_equal(simdr_put(f->s, TU_STR("b"), TU_STR("world"), &tail), SIMDR_OK);
    assert_int_equal(tail, 89);
    assert_int_equal(simdr_file_size(f->s), 89);
    assert_int_equal(tu_file_size(f->path), 89);
    assert_int_equal(simdr_get(f->s, TU_STR("b"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), 25);
    assert_int_equal(simdr_entry_offset(e), 64);
    assert_int_equal(simdr_entry_end(e), 89);
    simdr_entry_release(e);

    /* a tombstone is never padded */
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), &tail), SIMDR_OK);
    assert_int_equal(tail, 89 + 1 + 20);
    assert_int_equal(simdr_get_last(f->s, &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), 89);
    assert_int_equal(simdr_entry_offset(e), 89);
    assert_int_equal(simdr_entry_end(e), 110);
    assert_int_equal(simdr_entry_size(e), 1);
    assert_true(simdr_entry_is_tombstone(e));
    simdr_entry_release(e);
}

static void test_tail_offsets_unaligned(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "u.bin");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    assert_int_equal(simdr_layout_of(s), SIMDR_LAYOUT_UNALIGNED);
    uint64_t tail = 0;
    assert_int_equal(simdr_put(s, TU_STR("a"), TU_STR("hello"), &tail), SIMDR_OK);
    assert_int_equal(tail, 25);
    assert_int_equal(simdr_put(s, TU_STR("b"), TU_STR("world"), &tail), SIMDR_OK);
    assert_int_equal(tail, 50);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("b"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), 25);
    assert_int_equal(simdr_entry_offset(e), 25);
    assert_int_equal(simdr_entry_end(e), 50);
    simdr_entry_release(e);
    assert_int_equal(tu_file_size(path), 50);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_hashed_access(void **state) {
    tu_fixture *f = *state;
    uint64_t h = simdr_hash_key(TU_STR("alice"));
    assert_int_equal(simdr_put_hashed(f->s, h, TU_STR("by-hash"), NULL), SIMDR_OK);
    tu_expect_str(f->s, "alice", "by-hash");
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get_hashed(f->s, h, &e), SIMDR_OK);
    assert_int_equal(simdr_entry_size(e), 7);
    assert_memory_equal(simdr_entry_data(e), "by-hash", 7);
    assert_int_equal(simdr_entry_key_hash(e), h);
    simdr_entry_release(e);
    assert_int_equal(simdr_get_hashed(f->s, h ^ 1, &e), SIMDR_NOTFOUND);
}

static void test_entry_dup_verify_chunk(void **state) {
    tu_fixture *f = *state;
    size_t n = 100000;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 77);
    assert_int_equal(simdr_put(f->s, TU_STR("big"), v, n, NULL), SIMDR_OK);
    simdr_entry *e = NULL, *d = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("big"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_dup(e, &d), SIMDR_OK);
    assert_non_null(d);
    simdr_entry_release(e);
    assert_int_equal(simdr_entry_size(d), n);
    assert_memory_equal(simdr_entry_data(d), v, n);
    assert_int_equal(simdr_entry_verify(d), SIMDR_OK);
    assert_int_equal(simdr_entry_checksum(d), tu_crc32(v, n));
    /* chunks reassemble the value, each at most max bytes, zero-copy */
    uint64_t off = 0;
    int chunks = 0;
    while (off < n) {
        const void *p = NULL;
        size_t len = 0;
        assert_int_equal(simdr_entry_chunk(d, off, 4096, &p, &len, 1), SIMDR_OK);
        assert_true(len > 0 && len <= 4096);
        assert_ptr_equal(p, (const uint8_t *)simdr_entry_data(d) + off);
        assert_memory_equal(p, v + off, len);
        off += len;
        chunks++;
    }
    assert_int_equal(off, n);
    assert_true(chunks >= (int)(n / 4096));
    const void *p = NULL;
    size_t len = 0;
    assert_int_equal(simdr_entry_chunk(d, n, 4096, &p, &len, 0), SIMDR_NOTFOUND);
    assert_int_equal(simdr_entry_chunk(d, n + 10, 4096, &p, &len, 0), SIMDR_NOTFOUND);
    /* advise_done must not have dropped data we still read */
    assert_memory_equal(simdr_entry_data(d), v, n);
    simdr_entry_release(d);
    simdr_entry_release(NULL);
    free(v);
}

static void test_open_modes(void **state) {
    tu_fixture *f = *state;
    char p[4096];
    tu_join(p, sizeof p, f->dir, "missing.bin");
    simdr_store *s = NULL;
    assert_int_equal(tu_open_status(&s, p, SIMDR_OPEN_EXISTING, 0), SIMDR_ENOENT);
    assert_null(s);
    assert_true(strlen(simdr_last_error()) > 0);
    assert_int_equal(tu_open_status(&s, p, SIMDR_OPEN_READONLY, 0), SIMDR_ENOENT);
    assert_int_equal(tu_file_size(p), -1);
    assert_int_equal(simdr_open(&s, NULL, NULL), SIMDR_EINVAL);
    /* read-only store refuses writes */
    tu_put_str(f->s, "k", "v");
    s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(s, "k", "v");
    assert_int_equal(simdr_put(s, TU_STR("k"), TU_STR("w"), NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_delete(s, TU_STR("k"), NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_compact(s), SIMDR_EREADONLY);
    assert_string_equal(simdr_path(s), f->path);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_expect_str(f->s, "k", "v");
    /* a new empty file opened CREATE is an empty store */
    tu_join(p, sizeof p, f->dir, "new.bin");
    assert_int_equal(tu_open_status(&s, p, SIMDR_OPEN_CREATE, 0), SIMDR_OK);
    assert_int_equal(simdr_is_empty(s), 1);
    assert_int_equal(simdr_file_size(s), 0);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get_last(s, &e), SIMDR_NOTFOUND);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(p), 0);
}

/* expected_keys sizes the index once at a writable open: inserting that many
 * keys never grows it (simdr_index_bytes stays put), every key reads back,
 * the sizing survives a reopen of a filled store, and a read-only open
 * ignores the option. */
static void test_expected_keys_presizes_the_index(void **state) {
    tu_fixture *f = *state;
    enum { N = 50000 };
    simdr_options o;
    simdr_options_init(&o);
    assert_int_equal(o.expected_keys, 0);
    simdr_store *small = NULL;
    assert_int_equal(simdr_open(&small, f->other, &o), SIMDR_OK);
    uint64_t small_bytes = simdr_index_bytes(small);
    assert_int_equal(simdr_close(small), SIMDR_OK);

    o.expected_keys = N;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    uint64_t sized = simdr_index_bytes(s);
    assert_true(sized > small_bytes);
    assert_true(sized >= (uint64_t)N * 8 * 5 / 4);
    char key[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        assert_int_equal(simdr_put(s, key, (size_t)n, &i, sizeof i, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_index_bytes(s), sized);
    assert_int_equal(simdr_count(s), N);
    for (int i = 0; i < N; i += 97) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        tu_expect_value(s, key, (size_t)n, &i, sizeof i);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);

    o.expected_keys = 4 * N; /* a filled store is resized with its keys in it */
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    assert_true(simdr_index_bytes(s) >= (uint64_t)4 * N * 8 * 5 / 4);
    assert_int_equal(simdr_count(s), N);
    for (int i = 0; i < N; i += 89) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        tu_expect_value(s, key, (size_t)n, &i, sizeof i);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);

    o.open_mode = SIMDR_OPEN_READONLY; /* read-only: the index is built for what is there */
    o.use_hint = 0;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    assert_true(simdr_index_bytes(s) < (uint64_t)4 * N * 8 * 5 / 4);
    assert_int_equal(simdr_count(s), N);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A store opened through a symbolic link (data.bin -> disk2/data.bin): its
 * compaction renamed the compacted file over the link, which became a file of
 * its own; the store it named stayed as it was, and writes made through the
 * link no longer reached it. The link's target is the store. */
static void test_store_opened_through_a_symbolic_link(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    tu_put_str(f->s, "a", "2");
    tu_put_str(f->s, "b", "3");
    simdr_close(f->s);
    f->s = NULL;
    uint64_t before = (uint64_t)tu_file_size(f->path);
    assert_int_equal(symlink(f->path, f->other), 0);
    simdr_store *s = tu_open(f->other, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    tu_put_str(s, "c", "4");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    struct stat st;
    assert_int_equal(lstat(f->other, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* still a link */
    assert_true((uint64_t)tu_file_size(f->path) < before + 64);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "a", "2");
    tu_expect_str(f->s, "c", "4");
    assert_int_equal(simdr_compaction_savings(f->s), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_and_strerror),
        cmocka_unit_test(test_hash_vectors),
        TU_TEST(test_crc_vectors),
        TU_TEST(test_namespaced_key),
        TU_TEST(test_put_get_exists),
        TU_TEST_DIR(test_expected_keys_presizes_the_index),
        TU_TEST(test_get_copy),
        TU_TEST(test_overwrite),
        TU_TEST(test_refusals),
        TU_TEST(test_tail_offsets_aligned),
        cmocka_unit_test(test_tail_offsets_unaligned),
        TU_TEST(test_hashed_access),
        TU_TEST(test_entry_dup_verify_chunk),
        TU_TEST(test_open_modes),
        TU_TEST(test_store_opened_through_a_symbolic_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
