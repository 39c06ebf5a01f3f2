/*
 * test_compact.c - unit tests of simdr_compact: only the newest live entry of
 * each key survives, the file shrinks by exactly the announced savings, the
 * same open store keeps working (and a reopen sees every write made after
 * compaction), entries and iterators held across it keep valid data, the
 * layout is kept, read-only opens can refresh onto the new file, and no
 * temporary file is left behind; values of 2 to 4 MiB behind small ones are
 * copied whole; damage under an open store (zeros, a broken link, a flipped
 * bit, a foreign hash) makes compaction refuse and leave the file as it was.
 * A compaction whose side file cannot be told about the new file leaves that
 * page naming no file at all, never a stale one. A stoppable compaction
 * stopped at any of its questions leaves the file byte for byte as it was.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

#define NK 200

typedef struct fixture {
    tu_fixture tu; /* the directory, the store path and the store */
    uint8_t val[NK][300];
    size_t len[NK];
    int live[NK];
} fixture;

static void key_of(int i, char *k, size_t cap) {
    snprintf(k, cap, "ckey-%d", i);
}

static void put(fixture *f, int i, uint64_t seed) {
    char k[32];
    key_of(i, k, sizeof k);
    f->len[i] = 1 + (size_t)(seed % 300);
    tu_fill(f->val[i], f->len[i], seed);
    assert_int_equal(simdr_put(f->tu.s, TU_STR(k), f->val[i], f->len[i], NULL), SIMDR_OK);
    f->live[i] = 1;
}

static void del(fixture *f, int i) {
    char k[32];
    key_of(i, k, sizeof k);
    assert_int_equal(simdr_delete(f->tu.s, TU_STR(k), NULL), SIMDR_OK);
    f->live[i] = 0;
}

static uint64_t nlive(const fixture *f) {
    uint64_t n = 0;
    for (int i = 0; i < NK; i++)
        n += (uint64_t)f->live[i];
    return n;
}

/* Every key of the fixture reads its value or is absent. */
static void verify_values(fixture *f, simdr_store *s) {
    for (int i = 0; i < NK; i++) {
        char k[32];
        key_of(i, k, sizeof k);
        if (f->live[i])
            tu_expect_value(s, TU_STR(k), f->val[i], f->len[i]);
        else
            tu_expect_absent(s, TU_STR(k));
    }
}

static void verify_all(fixture *f, simdr_store *s) {
    verify_values(f, s);
    assert_int_equal(simdr_count(s), nlive(f));
}

static void populate(fixture *f, int layout) {
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, layout);
    uint64_t seed = tu_seed(555);
    for (int i = 0; i < NK; i++)
        put(f, i, tu_rand(&seed));
    for (int i = 0; i < NK; i += 2)
        put(f, i, tu_rand(&seed));
    for (int i = 0; i < NK; i += 4)
        put(f, i, tu_rand(&seed));
    for (int i = 1; i < NK; i += 5)
        del(f, i);
    del(f, 0);
    put(f, 0, tu_rand(&seed)); /* written again after a delete */
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tu_fixture_init(&f->tu, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tu_fixture_free(&f->tu);
    free(f);
    return 0;
}

static void compact_and_continue(fixture *f, int layout) {
    populate(f, layout);
    uint64_t size = simdr_file_size(f->tu.s);
    uint64_t savings = simdr_compaction_savings(f->tu.s);
    assert_true(savings > 0);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), size - savings);
    assert_int_equal(tu_file_size(f->tu.path), (int64_t)(size - savings));
    assert_int_equal(simdr_compaction_savings(f->tu.s), 0);
    assert_int_equal(simdr_layout_of(f->tu.s), layout);
    assert_int_equal(tu_dir_count(f->tu.dir), 1); /* no temporary file left */
    verify_all(f, f->tu.s);
    /* exactly one entry per live key is left */
    simdr_check_report rep;
    assert_int_equal(simdr_check(f->tu.s, NULL, NULL, &rep), SIMDR_OK);
    assert_int_equal(rep.entries, nlive(f));
    assert_int_equal(rep.bad_entries, 0);
    /* the same store keeps working: writes after compaction go to the new file */
    uint64_t seed = 99;
    for (int i = 0; i < NK; i += 3)
        put(f, i, tu_rand(&seed));
    del(f, 4);
    verify_all(f, f->tu.s);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, !layout);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(f->tu.s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    assert_int_equal(simdr_layout_of(f->tu.s), layout);
    verify_all(f, f->tu.s);
    /* compaction twice in a row; the second has nothing to remove beyond savings */
    savings = simdr_compaction_savings(f->tu.s);
    size = simdr_file_size(f->tu.s);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), size - savings);
    size = simdr_file_size(f->tu.s);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), size);
    verify_all(f, f->tu.s);
    assert_int_equal(tu_dir_count(f->tu.dir), 1);
}

static void test_compact_aligned(void **state) {
    compact_and_continue(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_compact_unaligned(void **state) {
    compact_and_continue(*state, SIMDR_LAYOUT_UNALIGNED);
}

static void test_handles_held_across_compaction(void **state) {
    fixture *f = *state;
    populate(f, SIMDR_LAYOUT_ALIGNED64);
    size_t bign = 2 * 1024 * 1024;
    uint8_t *big = malloc(bign);
    tu_fill(big, bign, 8);
    assert_int_equal(simdr_put(f->tu.s, TU_STR("big"), big, bign, NULL), SIMDR_OK);
    simdr_entry *held[NK + 1];
    const void *ptrs[NK + 1];
    for (int i = 0; i < NK; i++) {
        char k[32];
        key_of(i, k, sizeof k);
        held[i] = NULL;
        if (f->live[i]) {
            assert_int_equal(simdr_get(f->tu.s, TU_STR(k), &held[i]), SIMDR_OK);
            ptrs[i] = simdr_entry_data(held[i]);
        }
    }
    assert_int_equal(simdr_get(f->tu.s, TU_STR("big"), &held[NK]), SIMDR_OK);
    ptrs[NK] = simdr_entry_data(held[NK]);
    /* an iterator opened before compaction */
    simdr_iter *it = NULL;
    assert_int_equal(simdr_iter_open(f->tu.s, &it), SIMDR_OK);
    const simdr_entry *ie = NULL;
    assert_int_equal(simdr_iter_next(it, &ie), SIMDR_OK);

    /* delete the big one and overwrite everything, then compact */
    assert_int_equal(simdr_delete(f->tu.s, TU_STR("big"), NULL), SIMDR_OK);
    uint8_t saved[NK][300];
    size_t saved_len[NK];
    memcpy(saved, f->val, sizeof saved);
    memcpy(saved_len, f->len, sizeof saved_len);
    uint64_t seed = 4242;
    for (int i = 0; i < NK; i++)
        if (f->live[i])
            put(f, i, tu_rand(&seed));
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    /* write more so the new file grows over the old offsets */
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < NK; i++)
            if (f->live[i])
                put(f, i, tu_rand(&seed));

    for (int i = 0; i < NK; i++) {
        if (!held[i])
            continue;
        assert_ptr_equal(simdr_entry_data(held[i]), ptrs[i]);
        assert_int_equal(simdr_entry_size(held[i]), saved_len[i]);
        assert_memory_equal(simdr_entry_data(held[i]), saved[i], saved_len[i]);
        assert_int_equal(simdr_entry_verify(held[i]), SIMDR_OK);
        simdr_entry_release(held[i]);
    }
    assert_ptr_equal(simdr_entry_data(held[NK]), ptrs[NK]);
    assert_memory_equal(simdr_entry_data(held[NK]), big, bign);
    simdr_entry_release(held[NK]);
    /* the iterator's snapshot stays valid: it yields the pre-compaction
     * values of the live keys and the big one */
    uint64_t n = 1;
    int rc;
    while ((rc = simdr_iter_next(it, &ie)) == SIMDR_OK) {
        assert_int_equal(simdr_entry_verify(ie), SIMDR_OK);
        if (simdr_entry_key_hash(ie) == simdr_hash_key(TU_STR("big"))) {
            assert_memory_equal(simdr_entry_data(ie), big, bign);
        } else {
            int found = -1;
            for (int i = 0; i < NK; i++) {
                char k[32];
                key_of(i, k, sizeof k);
                if (simdr_hash_key(TU_STR(k)) == simdr_entry_key_hash(ie))
                    found = i;
            }
            assert_true(found >= 0);
            assert_int_equal(simdr_entry_size(ie), saved_len[found]);
            assert_memory_equal(simdr_entry_data(ie), saved[found], saved_len[found]);
        }
        n++;
    }
    assert_int_equal(rc, SIMDR_NOTFOUND);
    assert_int_equal(n, nlive(f) + 1);
    simdr_iter_close(it);
    verify_all(f, f->tu.s);
    tu_expect_absent(f->tu.s, TU_STR("big"));
    free(big);
}

static void test_readonly_refresh_after_compaction(void **state) {
    fixture *f = *state;
    populate(f, SIMDR_LAYOUT_ALIGNED64);
    simdr_store *ro = tu_open(f->tu.path, SIMDR_OPEN_READONLY, 0);
    verify_all(f, ro);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    uint64_t seed = 1;
    put(f, 3, tu_rand(&seed));
    put(f, 6, tu_rand(&seed));
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(ro, &added), SIMDR_OK);
    verify_all(f, ro);
    assert_int_equal(simdr_file_size(ro), simdr_file_size(f->tu.s));
    assert_int_equal(simdr_close(ro), SIMDR_OK);
    /* refresh on a writable store is a no-op */
    added = 77;
    assert_int_equal(simdr_refresh(f->tu.s, &added), SIMDR_OK);
    assert_int_equal(added, 0);
}

static void test_compact_empty_and_all_deleted(void **state) {
    fixture *f = *state;
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, 0);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), 0);
    tu_put_str(f->tu.s, "a", "1");
    tu_put_str(f->tu.s, "b", "2");
    assert_int_equal(simdr_delete(f->tu.s, TU_STR("a"), NULL), SIMDR_OK);
    assert_int_equal(simdr_delete(f->tu.s, TU_STR("b"), NULL), SIMDR_OK);
    assert_int_equal(simdr_compaction_savings(f->tu.s), simdr_file_size(f->tu.s));
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), 0);
    assert_int_equal(tu_file_size(f->tu.path), 0);
    assert_int_equal(simdr_is_empty(f->tu.s), 1);
    tu_put_str(f->tu.s, "c", "3");
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->tu.s, "c", "3");
    tu_expect_absent(f->tu.s, TU_STR("a"));
    tu_expect_absent(f->tu.s, TU_STR("b"));
    assert_int_equal(simdr_count(f->tu.s), 1);
    assert_int_equal(tu_dir_count(f->tu.dir), 1);
}

/* A store of tens of megabytes: compaction hands the old file's pages back as
 * it passes them and builds the new index from the hashes it copied. Handles
 * into the old file must still read their bytes, and every key must be found
 * in the new index, before and after a reopen. */
static void test_compact_large_store_with_handles(void **state) {
    fixture *f = *state;
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, 0);
    enum { KEYS = 12000, VLEN = 2000, HELD = 64 };
    uint8_t *v = malloc(VLEN);
    char k[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < KEYS; i++) {
            if (round == 1 && i % 3 != 0) continue; /* overwrite a third */
            snprintf(k, sizeof k, "big-%d", i);
            tu_fill(v, VLEN, (uint64_t)i * 7 + (uint64_t)round);
            assert_int_equal(simdr_put(f->tu.s, TU_STR(k), v, VLEN, NULL), SIMDR_OK);
        }
    for (int i = 1; i < KEYS; i += 97) {
        snprintf(k, sizeof k, "big-%d", i);
        assert_int_equal(simdr_delete(f->tu.s, TU_STR(k), NULL), SIMDR_OK);
    }
    simdr_entry *held[HELD];
    int held_key[HELD];
    for (int h = 0; h < HELD; h++) {
        held_key[h] = (h * 181) % KEYS;
        if (held_key[h] % 97 == 1) held_key[h]++;
        snprintf(k, sizeof k, "big-%d", held_key[h]);
        assert_int_equal(simdr_get(f->tu.s, TU_STR(k), &held[h]), SIMDR_OK);
    }
    uint64_t live = simdr_count(f->tu.s);
    assert_true(simdr_file_size(f->tu.s) > 3 * (UINT64_C(8) << 20));
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_count(f->tu.s), live);
    for (int h = 0; h < HELD; h++) {
        int i = held_key[h];
        tu_fill(v, VLEN, (uint64_t)i * 7 + (i % 3 == 0 ? 1u : 0u));
        assert_int_equal(simdr_entry_size(held[h]), VLEN);
        assert_memory_equal(simdr_entry_data(held[h]), v, VLEN);
        simdr_entry_release(held[h]);
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < KEYS; i++) {
            snprintf(k, sizeof k, "big-%d", i);
            if (i % 97 == 1) {
                tu_expect_absent(f->tu.s, TU_STR(k));
                continue;
            }
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(f->tu.s, TU_STR(k), &e), SIMDR_OK);
            tu_fill(v, VLEN, (uint64_t)i * 7 + (i % 3 == 0 ? 1u : 0u));
            assert_int_equal(simdr_entry_size(e), VLEN);
            assert_memory_equal(simdr_entry_data(e), v, VLEN);
            assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
            simdr_entry_release(e);
        }
        assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
        f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
        assert_int_equal(simdr_count(f->tu.s), live);
    }
    free(v);
}

/* A value between half the copy buffer and the whole of it (2 to 4 MiB),
 * behind other buffered entries: the copy must not write it over them. Sizes
 * around both bounds, in both layouts, verified after a reopen. */
static void test_compact_large_value_behind_small_ones(void **state) {
    fixture *f = *state;
    static const size_t sizes[] = {(2u << 20) - 1, 2u << 20,         (2u << 20) + 1,
                                   3000000,        (4u << 20) - 100, (4u << 20) - 1,
                                   4u << 20,       (4u << 20) + 1};
    size_t nsizes = sizeof sizes / sizeof sizes[0];
    uint8_t *v = malloc((4u << 20) + 1);
    for (int layout = 0; layout < 2; layout++) {
        f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, layout);
        for (size_t i = 0; i < nsizes; i++) {
            char k[32];
            snprintf(k, sizeof k, "note-%zu", i);
            tu_put_str(f->tu.s, k, "hi");
            snprintf(k, sizeof k, "big-%zu", i);
            tu_fill(v, sizes[i], i + 1);
            assert_int_equal(simdr_put(f->tu.s, TU_STR(k), v, sizes[i], NULL), SIMDR_OK);
        }
        assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
        assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
        f->tu.s = NULL;
        f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, layout);
        assert_int_equal(simdr_count(f->tu.s), 2 * nsizes);
        for (size_t i = 0; i < nsizes; i++) {
            char k[32];
            snprintf(k, sizeof k, "note-%zu", i);
            tu_expect_str(f->tu.s, k, "hi");
            snprintf(k, sizeof k, "big-%zu", i);
            tu_fill(v, sizes[i], i + 1);
            tu_expect_value(f->tu.s, TU_STR(k), v, sizes[i]);
        }
        simdr_check_report rep;
        assert_int_equal(simdr_check(f->tu.s, NULL, NULL, &rep), SIMDR_OK);
        assert_int_equal(rep.bad_entries, 0);
        assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
        f->tu.s = NULL;
        char hint[4200];
        snprintf(hint, sizeof hint, "%s.hint", f->tu.path);
        unlink(f->tu.path);
        unlink(hint);
    }
    free(v);
}

enum damage { DAMAGE_ZERO_ENTRY, DAMAGE_ZERO_PAGE, DAMAGE_LINK_BACK, DAMAGE_LINK_SHIFT,
              DAMAGE_PAYLOAD_BIT, DAMAGE_HASH };

/* The store is opened (index built from a sound file), then its file is
 * damaged underneath in the middle, at one live entry: compaction must
 * refuse with SIMDR_ECORRUPT and leave the file byte for byte as it was,
 * with no temporary left, instead of copying an index slot's metadata as
 * an entry (a phantom spanning old bytes) or re-checksumming bad bytes. */
static void compact_refuses_damage(fixture *f, int layout, enum damage d) {
    populate(f, layout);
    char k[32];
    key_of(102, k, sizeof k);
    assert_true(f->live[102]);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->tu.s, TU_STR(k), &e), SIMDR_OK);
    uint64_t start = simdr_entry_start(e), end = simdr_entry_end(e);
    uint64_t meta = end - 20, payload = simdr_entry_offset(e);
    simdr_entry_release(e);
    uint8_t buf[4096] = {0};
    switch (d) {
    case DAMAGE_ZERO_ENTRY: /* the entry, metadata included, reads as zeros */
        tu_patch_file(f->tu.path, start, buf, (size_t)(end - start));
        break;
    case DAMAGE_ZERO_PAGE: /* a lost page under the entry's metadata */
        tu_patch_file(f->tu.path, meta & ~UINT64_C(4095), buf, sizeof buf);
        break;
    case DAMAGE_LINK_BACK: /* the link points into the entry before */
        tu_put_le64(buf, start - 7);
        tu_patch_file(f->tu.path, meta + 8, buf, 8);
        break;
    case DAMAGE_LINK_SHIFT: /* the link skips the entry's first bytes */
        tu_put_le64(buf, start + 1);
        tu_patch_file(f->tu.path, meta + 8, buf, 8);
        break;
    case DAMAGE_PAYLOAD_BIT: { /* one flipped payload bit */
        size_t len = 0;
        uint8_t *file = tu_read_file(f->tu.path, &len);
        buf[0] = file[payload + 3] ^ 0x10;
        free(file);
        tu_patch_file(f->tu.path, payload + 3, buf, 1);
        break;
    }
    case DAMAGE_HASH: /* the metadata names another key */
        tu_put_le64(buf, simdr_hash_key(TU_STR("someone else")));
        tu_patch_file(f->tu.path, meta, buf, 8);
        break;
    }
    uint8_t before[32], after[32];
    tu_sha256_file(f->tu.path, before);
    int64_t size = tu_file_size(f->tu.path);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_ECORRUPT);
    tu_sha256_file(f->tu.path, after);
    assert_memory_equal(before, after, 32);
    assert_int_equal(tu_file_size(f->tu.path), size);
    assert_int_equal(tu_dir_count(f->tu.dir), 1);
    /* the store goes on serving the sound entries */
    key_of(150, k, sizeof k);
    tu_expect_value(f->tu.s, TU_STR(k), f->val[150], f->len[150]);
}

static void test_compact_refuses_zeroed_entry(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_ALIGNED64, DAMAGE_ZERO_ENTRY);
}
static void test_compact_refuses_zeroed_page(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_UNALIGNED, DAMAGE_ZERO_PAGE);
}
static void test_compact_refuses_link_into_entry_before(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_UNALIGNED, DAMAGE_LINK_BACK);
}
static void test_compact_refuses_shifted_link(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_ALIGNED64, DAMAGE_LINK_SHIFT);
}
static void test_compact_refuses_flipped_payload_bit(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_ALIGNED64, DAMAGE_PAYLOAD_BIT);
}
static void test_compact_refuses_foreign_hash(void **state) {
    compact_refuses_damage(*state, SIMDR_LAYOUT_UNALIGNED, DAMAGE_HASH);
}

/* Fails every read of exactly one entry's metadata (20 bytes) while armed:
 * the read with which a compaction's switch tells the side file the tail of
 * the file it now describes. */
static ssize_t (*pread_below)(int, void *, size_t, off_t);
static int fail_meta_reads;
static ssize_t pread_failing_meta(int fd, void *buf, size_t len, off_t off) {
    if (fail_meta_reads && len == 20) {
        errno = EIO;
        return -1;
    }
    return pread_below(fd, buf, len, off);
}

/* The side page's check word (word 7) and the inode it names (word 3),
 * read from the file "<store>.simdr" (docs/FORMAT.md, "simdr's side file"). */
static void read_side_header(const char *store_path, uint64_t *ino, uint64_t *check) {
    char side[4096];
    snprintf(side, sizeof side, "%s.simdr", store_path);
    int fd = open(side, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t w[64];
    assert_int_equal(pread(fd, w, sizeof w, 0), (ssize_t)sizeof w);
    close(fd);
    uint64_t words[8] = {0};
    for (unsigned i = 0; i < 8; i++)
        for (unsigned b = 0; b < 8; b++) words[i] |= (uint64_t)w[i * 8 + b] << (8 * b);
    *ino = words[3];
    *check = words[7];
}

/* The side file names the store file it describes (device and inode, under
 * a check word). A compaction replaces that file; when the side page cannot
 * be rewritten for the new one, it must not keep naming the old file, whose
 * inode number the file system may hand to a later file (the next
 * compaction's), under which its records would be read. It is invalidated
 * instead: the next open recovers in full, and finds every write. */
static void test_side_file_never_names_a_replaced_file(void **state) {
    fixture *f = *state;
    populate(f, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_sync(f->tu.s), SIMDR_OK);
    struct stat before, after;
    assert_int_equal(stat(f->tu.path, &before), 0);
    pread_below = simdr__io.pread;
    simdr__io.pread = pread_failing_meta;
    fail_meta_reads = 1;
    int rc = simdr_compact(f->tu.s);
    fail_meta_reads = 0;
    simdr__io.pread = pread_below;
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(stat(f->tu.path, &after), 0);
    assert_true(after.st_ino != before.st_ino);
    uint64_t ino, check;
    read_side_header(f->tu.path, &ino, &check);
    assert_true(check == 0 || ino == (uint64_t)after.st_ino);
    /* The store goes on, and a reopen (full recovery) finds every write. */
    uint64_t seed = tu_seed(77);
    put(f, 5, tu_rand(&seed));
    del(f, 8);
    assert_int_equal(simdr_sync(f->tu.s), SIMDR_OK);
    verify_all(f, f->tu.s);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, 0, 0);
    verify_all(f, f->tu.s);
}

/* Counts the questions of a stoppable compaction and says stop at the
 * stop_at-th (0: never). */
typedef struct stop_counter {
    int asked;
    int stop_at;
} stop_counter;

static int stop_when_counted(void *ctx) {
    stop_counter *sc = ctx;
    return ++sc->asked == sc->stop_at;
}

/* A store large enough for the copy to ask several times (one question
 * every 4,096 entries), with garbage: NK keys and 30,000 more written twice. */
static void populate_large(fixture *f) {
    populate(f, SIMDR_LAYOUT_ALIGNED64);
    for (int round = 0; round < 2; round++)
        for (unsigned i = 0; i < 30000; i++) {
            char k[32], v[32];
            snprintf(k, sizeof k, "bulk-%u", i);
            snprintf(v, sizeof v, "value-%u-%d", i, round);
            assert_int_equal(simdr_put(f->tu.s, TU_STR(k), v, strlen(v), NULL), SIMDR_OK);
        }
}

static void expect_bulk(simdr_store *s) {
    for (unsigned i = 0; i < 30000; i += 7) {
        char k[32], v[32];
        snprintf(k, sizeof k, "bulk-%u", i);
        snprintf(v, sizeof v, "value-%u-1", i);
        tu_expect_value(s, TU_STR(k), v, strlen(v));
    }
}

/* Stopped at each question in turn (the first, a middle one, the last): the
 * call says SIMDR_ESTOPPED, the file is byte for byte as it was, no new file
 * is left beside it, every value reads as before, writes go on, and a later
 * compaction that is not stopped completes. */
static void test_stoppable_compaction_stops_and_leaves_the_store_as_it_was(void **state) {
    fixture *f = *state;
    populate_large(f);
    assert_int_equal(simdr_sync(f->tu.s), SIMDR_OK);
    stop_counter never = {0, 0};
    /* How often an unstopped run asks: the copy, the catch-up rounds and the
     * steps before the switch. Measured on a copy of the store. */
    uint64_t size = simdr_file_size(f->tu.s);
    char *before = malloc((size_t)size);
    assert_non_null(before);
    FILE *fp = fopen(f->tu.path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(before, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    assert_int_equal(simdr_compact_stoppable(f->tu.s, stop_when_counted, &never), SIMDR_OK);
    int questions = never.asked;
    assert_true(questions >= 5); /* 90,000+ entries: several in the copy, and the steps */
    /* Back to the uncompacted file for the stopped runs. */
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    fp = fopen(f->tu.path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(before, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    f->tu.s = tu_open(f->tu.path, 0, 0);
    int entries_before = tu_dir_count(f->tu.dir);
    int stops[] = {1, questions / 2, questions};
    for (unsigned t = 0; t < sizeof stops / sizeof stops[0]; t++) {
        stop_counter sc = {0, stops[t]};
        assert_int_equal(simdr_compact_stoppable(f->tu.s, stop_when_counted, &sc), SIMDR_ESTOPPED);
        assert_int_equal(sc.asked, stops[t]);
        assert_int_equal(simdr_file_size(f->tu.s), size);
        assert_int_equal(tu_dir_count(f->tu.dir), entries_before);
        fp = fopen(f->tu.path, "rb");
        assert_non_null(fp);
        char *now = malloc((size_t)size);
        assert_non_null(now);
        assert_int_equal(fread(now, 1, (size_t)size, fp), (size_t)size);
        fclose(fp);
        assert_memory_equal(now, before, (size_t)size);
        free(now);
        verify_values(f, f->tu.s);
        assert_int_equal(simdr_count(f->tu.s), nlive(f) + 30000);
        expect_bulk(f->tu.s);
    }
    uint64_t seed = tu_seed(99);
    put(f, 11, tu_rand(&seed));
    assert_int_equal(simdr_compact_stoppable(f->tu.s, NULL, NULL), SIMDR_OK);
    assert_true(simdr_file_size(f->tu.s) < size);
    verify_values(f, f->tu.s);
    assert_int_equal(simdr_count(f->tu.s), nlive(f) + 30000);
    expect_bulk(f->tu.s);
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, 0, 0);
    verify_values(f, f->tu.s);
    assert_int_equal(simdr_count(f->tu.s), nlive(f) + 30000);
    expect_bulk(f->tu.s);
    free(before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_compact_aligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handles_held_across_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_refresh_after_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_empty_and_all_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_large_store_with_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_large_value_behind_small_ones, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_zeroed_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_zeroed_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_link_into_entry_before, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_shifted_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_flipped_payload_bit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compact_refuses_foreign_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_side_file_never_names_a_replaced_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_stoppable_compaction_stops_and_leaves_the_store_as_it_was, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
