/*
 * test_damage.c - damaged bytes are never served unannounced nor hidden:
 * reads check CRCs (bit rot in a value is SIMDR_ECORRUPT on every read
 * path, and copy/move/rename never give bad bytes a fresh checksum); an
 * index slot whose metadata was damaged is reported, not taken for absence;
 * a hint file does not hide damage; salvage finds the sound prefix in front
 * of a run of zeros and check reports on any damaged file; and an open does
 * not leave a large newest entry resident.
 */
#include "testutil.h"

#include <stdatomic.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void key_of(char *k, size_t cap, int i) { snprintf(k, cap, "k%d", i); }

static size_t value_of(char *v, size_t cap, int i) {
    return (size_t)snprintf(v, cap, "value of k%d %.*s", i, i % 40,
                            "........................................");
}

static void write_keys(simdr_store *s, int from, int to) {
    for (int i = from; i < to; i++) {
        char k[32], v[96];
        key_of(k, sizeof k, i);
        value_of(v, sizeof v, i);
        tu_put_str(s, k, v);
    }
}

static simdr_store *open_opts(const char *path, int mode, int verify, int salvage, int hint,
                              int *rc) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    o.verify_reads = verify;
    o.salvage = salvage;
    o.use_hint = hint;
    simdr_store *s = NULL;
    *rc = simdr_open(&s, path, &o);
    return s;
}

static simdr_store *open_ok(const char *path, int mode, int verify) {
    int rc;
    simdr_store *s = open_opts(path, mode, verify, 0, 1, &rc);
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

/* Offset of key's payload (and its size) in a sound store. */
static uint64_t payload_at(simdr_store *s, const char *key, uint64_t *size) {
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_OK);
    uint64_t off = simdr_entry_offset(e);
    if (size) *size = simdr_entry_size(e);
    simdr_entry_release(e);
    return off;
}

static void flip_byte(const char *path, uint64_t off) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* Atomic: simdr_for_each_parallel calls the visitor from several threads. */
typedef struct count_ctx {
    _Atomic int n;
} count_ctx;

static int count_visit(void *ctx, const simdr_entry *e) {
    (void)e;
    atomic_fetch_add(&((count_ctx *)ctx)->n, 1);
    return 0;
}

/* ---- item 3: bit rot is never served ---- */

/* 50 keys; k5's payload gets one flipped byte after close (the newest entry
 * stays sound, so the store opens). Returns the damaged payload's offset. */
static uint64_t store_with_bitrot(tu_fixture *f) {
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 50);
    uint64_t off = payload_at(s, "k5", NULL);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    flip_byte(f->path, off + 3);
    return off;
}

static void damage_bitrot_reported_on_every_read_path(void **state) {
    tu_fixture *f = *state;
    store_with_bitrot(f);
    simdr_store *s = open_ok(f->path, SIMDR_OPEN_EXISTING, 1);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("k5"), &e), SIMDR_ECORRUPT);
    assert_null(e);
    assert_non_null(strstr(simdr_last_error(), "checksum"));
    assert_int_equal(simdr_get_hashed(s, simdr_hash_key(TU_STR("k5")), &e), SIMDR_ECORRUPT);
    assert_null(e);
    char buf[128];
    size_t n = 0;
    memset(buf, 0x55, sizeof buf);
    assert_int_equal(simdr_get_copy(s, TU_STR("k5"), buf, sizeof buf, &n), SIMDR_ECORRUPT);
    assert_int_equal((unsigned char)buf[0], 0x55); /* nothing copied */
    assert_int_equal(simdr_exists(s, TU_STR("k5")), SIMDR_ECORRUPT);
    simdr_key keys[3] = {{TU_STR("k4")}, {TU_STR("k5")}, {TU_STR("k6")}};
    simdr_entry *out[3];
    assert_int_equal(simdr_get_batch(s, keys, 3, out), SIMDR_ECORRUPT);
    for (int i = 0; i < 3; i++) assert_null(out[i]);
    /* iteration reports it once and yields every other key */
    simdr_iter *it;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    const simdr_entry *ie;
    int yielded = 0, damaged = 0, rc;
    while ((rc = simdr_iter_next(it, &ie)) != SIMDR_NOTFOUND) {
        if (rc == SIMDR_ECORRUPT) {
            damaged++;
            continue;
        }
        assert_int_equal(rc, SIMDR_OK);
        assert_int_equal(simdr_entry_verify(ie), SIMDR_OK);
        yielded++;
    }
    simdr_iter_close(it);
    assert_int_equal(damaged, 1);
    assert_int_equal(yielded, 49);
    count_ctx c = {0};
    assert_int_equal(simdr_for_each_parallel(s, 2, count_visit, &c), SIMDR_ECORRUPT);
    /* the sound keys still read */
    tu_expect_str(s, "k4", "value of k4 ....");
    assert_int_equal(simdr_exists(s, TU_STR("k6")), 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);

    /* verify_reads = 0: the caller checks (simdr_entry_verify) */
    s = open_ok(f->path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_get(s, TU_STR("k5"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_verify(e), SIMDR_ECHECKSUM);
    simdr_entry_release(e);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void damage_copy_move_rename_never_rechecksum(void **state) {
    tu_fixture *f = *state;
    store_with_bitrot(f);
    for (int verify = 0; verify <= 1; verify++) {
        simdr_store *src = open_ok(f->path, SIMDR_OPEN_EXISTING, verify);
        simdr_store *dst = tu_open(f->other, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
        uint64_t src_size = simdr_file_size(src);
        assert_int_equal(simdr_copy(src, TU_STR("k5"), dst, NULL), SIMDR_ECORRUPT);
        assert_int_equal(simdr_move(src, TU_STR("k5"), dst, NULL), SIMDR_ECORRUPT);
        assert_int_equal(simdr_rename(src, TU_STR("k5"), TU_STR("k5-renamed"), NULL),
                         SIMDR_ECORRUPT);
        /* nothing written anywhere: the damage stays detectable where it is */
        assert_int_equal(simdr_file_size(dst), 0);
        assert_int_equal(simdr_file_size(src), src_size);
        tu_expect_absent(dst, TU_STR("k5"));
        tu_expect_absent(src, TU_STR("k5-renamed"));
        /* a sound key still copies and moves */
        assert_int_equal(simdr_copy(src, TU_STR("k4"), dst, NULL), SIMDR_OK);
        assert_int_equal(simdr_move(src, TU_STR("k6"), dst, NULL), SIMDR_OK);
        tu_expect_str(dst, "k4", "value of k4 ....");
        assert_int_equal(simdr_close(dst), SIMDR_OK);
        assert_int_equal(simdr_close(src), SIMDR_OK);
        unlink(f->other);
        /* put k6 back for the next round */
        src = open_ok(f->path, SIMDR_OPEN_EXISTING, 1);
        write_keys(src, 6, 7);
        assert_int_equal(simdr_close(src), SIMDR_OK);
    }
}

/* A value larger than the step the check works in (1 MiB) is checked too,
 * whichever way it is read. */
static void damage_large_value_reported(void **state) {
    tu_fixture *f = *state;
    size_t big = (3u << 20) + 17;
    uint8_t *v = malloc(big);
    tu_fill(v, big, 77);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_put(s, TU_STR("big"), v, big, NULL), SIMDR_OK);
    write_keys(s, 0, 3);
    uint64_t off = payload_at(s, "big", NULL);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    flip_byte(f->path, off + big - 5); /* in the last chunk */
    s = open_ok(f->path, SIMDR_OPEN_READONLY, 1);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_ECORRUPT);
    size_t n = 0;
    assert_int_equal(simdr_get_copy(s, TU_STR("big"), v, big, &n), SIMDR_ECORRUPT);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    /* unverified handle (verify_reads = 0): the chunk that ends the value
     * reports the mismatch */
    s = open_ok(f->path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_OK);
    uint64_t at = 0;
    int rc = SIMDR_OK;
    while (rc == SIMDR_OK) {
        const void *p;
        size_t len;
        rc = simdr_entry_chunk(e, at, 1u << 20, &p, &len, 1);
        if (rc == SIMDR_OK) at += len;
    }
    assert_int_equal(rc, SIMDR_ECHECKSUM);
    assert_true(at < big); /* the last chunk is not handed out */
    simdr_entry_release(e);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(v);
}

/* len malloc'd bytes of tu_fill(seed): a value for the large-value cases. */
static uint8_t *big_value(size_t len, uint64_t seed) {
    uint8_t *v = malloc(len);
    assert_non_null(v);
    tu_fill(v, len, seed);
    return v;
}

/* Stores v under "big" and returns a handle of it (checked if s checks). */
static simdr_entry *put_big(simdr_store *s, const uint8_t *v, size_t len) {
    assert_int_equal(simdr_put(s, TU_STR("big"), v, len, NULL), SIMDR_OK);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_OK);
    return e;
}

/* Values past the 1 MiB step are checked by reading the mapped file with
 * pread, those up to it through the map: a flipped byte at the start, the
 * middle or the end of a value on either side of that size and of a second
 * step is reported by every checked read, and the same value sound again is
 * served whole. */
static void damage_large_value_sizes_and_places(void **state) {
    tu_fixture *f = *state;
    const size_t sizes[] = {1u << 20, (1u << 20) + 1, 2u << 20, (2u << 20) + 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t big = sizes[k];
        uint8_t *v = big_value(big, 300 + k), *got = malloc(big);
        assert_non_null(got);
        unlink(f->path);
        simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
        write_keys(s, 0, 3);
        assert_int_equal(simdr_put(s, TU_STR("big"), v, big, NULL), SIMDR_OK);
        write_keys(s, 3, 6);
        uint64_t off = payload_at(s, "big", NULL);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        const size_t places[] = {0, big / 2, big - 1};
        for (size_t p = 0; p < 3; p++) {
            flip_byte(f->path, off + places[p]);
            s = open_ok(f->path, SIMDR_OPEN_READONLY, 1);
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_ECORRUPT);
            assert_null(e);
            size_t n = 0;
            assert_int_equal(simdr_get_copy(s, TU_STR("big"), got, big, &n), SIMDR_ECORRUPT);
            assert_int_equal(simdr_close(s), SIMDR_OK);
            flip_byte(f->path, off + places[p]); /* sound again */
            s = open_ok(f->path, SIMDR_OPEN_READONLY, 1);
            assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_OK);
            assert_int_equal(simdr_entry_size(e), big);
            assert_memory_equal(simdr_entry_data(e), v, big);
            simdr_entry_release(e);
            assert_int_equal(simdr_close(s), SIMDR_OK);
        }
        free(v);
        free(got);
    }
}

/* A handle taken before a compaction replaced the store's file is checked
 * against the file it was read from (the old one, which its map keeps),
 * not against whatever lies at its offsets in the new file. */
static void damage_check_after_compaction_reads_the_handles_file(void **state) {
    tu_fixture *f = *state;
    size_t big = (3u << 20) + 17;
    uint8_t *v = big_value(big, 41);
    simdr_store *s = open_ok(f->path, SIMDR_OPEN_CREATE, 0); /* handles unchecked */
    write_keys(s, 0, 50);
    write_keys(s, 0, 50); /* garbage: the compaction moves "big" to another offset */
    simdr_entry *e = put_big(s, v, big);
    uint64_t before = simdr_entry_offset(e);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    simdr_entry *now = NULL;
    assert_int_equal(simdr_get(s, TU_STR("big"), &now), SIMDR_OK);
    assert_true(simdr_entry_offset(now) != before);
    simdr_entry_release(now);
    uint64_t at = 0;
    while (at < big) {
        const void *p;
        size_t len;
        assert_int_equal(simdr_entry_chunk(e, at, 1u << 20, &p, &len, 1), SIMDR_OK);
        assert_memory_equal(p, v + at, len);
        at += len;
    }
    simdr_entry_release(e);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(v);
}

/* A file cut by another program in the middle of a large value a handle
 * holds: checking the handle answers a mismatch (the check reads the file,
 * which ends early) instead of faulting on the map's missing pages. */
static void damage_check_of_a_value_cut_short_by_another_program(void **state) {
    tu_fixture *f = *state;
    size_t big = (3u << 20) + 17;
    uint8_t *v = big_value(big, 47);
    simdr_store *s = open_ok(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 3);
    simdr_entry *e = put_big(s, v, big);
    assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
    tu_truncate(f->path, simdr_entry_offset(e) + (1u << 20) + 100);
    assert_int_equal(simdr_entry_verify(e), SIMDR_ECHECKSUM);
    simdr_entry_release(e);
    simdr_close(s); /* its own result is about the cut file, not this test's */
    free(v);
}

/* The descriptor a map keeps for those checks is closed with the map: when
 * the last handle outliving simdr_close is released, no descriptor is left. */
static int open_descriptors(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static void damage_check_descriptor_closed_with_the_map(void **state) {
    tu_fixture *f = *state;
    int before = open_descriptors();
    if (before < 0) skip();
    size_t big = (2u << 20) + 5;
    uint8_t *v = big_value(big, 43);
    simdr_store *s = open_ok(f->path, SIMDR_OPEN_CREATE, 1);
    simdr_entry *e = put_big(s, v, big); /* checked by pread */
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_memory_equal(simdr_entry_data(e), v, big);
    assert_true(open_descriptors() > before); /* the handle keeps the map */
    simdr_entry_release(e);
    assert_int_equal(open_descriptors(), before);
    free(v);
}

/* ---- item 5: the index and the hint file do not hide damage ---- */

/* End offset of key's entry (just past its metadata). */
static uint64_t entry_end_of(simdr_store *s, const char *key) {
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_OK);
    uint64_t end = simdr_entry_end(e);
    simdr_entry_release(e);
    return end;
}

static void zero_range(const char *path, uint64_t off, size_t len) {
    uint8_t *z = calloc(1, len);
    tu_patch_file(path, off, z, len);
    free(z);
}

/* A slot whose metadata no longer holds its key's hash (damage in the file
 * under an open store, or under an index loaded from a hint) is damage:
 * SIMDR_ECORRUPT, never NOTFOUND. */
static void damage_index_slot_damaged_is_corrupt_not_absent(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 1000);
    uint64_t end = entry_end_of(s, "k500");
    /* the bytes change below the open store (its map shares them) */
    zero_range(f->path, end - 20, 20);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("k500"), &e), SIMDR_ECORRUPT);
    assert_null(e);
    assert_int_equal(simdr_exists(s, TU_STR("k500")), SIMDR_ECORRUPT);
    char buf[64];
    size_t n;
    assert_int_equal(simdr_get_copy(s, TU_STR("k500"), buf, sizeof buf, &n), SIMDR_ECORRUPT);
    simdr_key keys[2] = {{TU_STR("k499")}, {TU_STR("k500")}};
    simdr_entry *out[2];
    assert_int_equal(simdr_get_batch(s, keys, 2, out), SIMDR_ECORRUPT);
    /* other keys answer as before; a key written again reads again */
    tu_expect_str(s, "k499", "value of k499 ...................");
    tu_expect_absent(s, TU_STR("never written"));
    tu_put_str(s, "k500", "rewritten");
    tu_expect_str(s, "k500", "rewritten");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

enum { HINT_KEYS = 70000 };

/* A 70,000-key store closed with its hint; returns the offset of a page in
 * its middle and the file's times. */
static uint64_t hinted_store(tu_fixture *f, struct timespec times[2]) {
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, HINT_KEYS);
    uint64_t size = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    assert_true(tu_file_size(hint) > 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    return (size / 2) & ~UINT64_C(4095);
}

/* The hint holds every key's hash and offset: it is created with no wider
 * access than the store file (a 0600 store gets a 0600 hint). */
static void hint_mode_follows_the_store(void **state) {
    tu_fixture *f = *state;
    simdr_options o;
    simdr_options_init(&o);
    o.file_mode = 0600;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    write_keys(s, 0, HINT_KEYS);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    struct stat st;
    assert_int_equal(stat(hint, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void expect_refused_both_ways(tu_fixture *f, const char *what) {
    uint8_t before[32], after[32];
    tu_sha256_file(f->path, before);
    for (int hint = 1; hint >= 0; hint--) {
        for (int mode = SIMDR_OPEN_EXISTING; mode <= SIMDR_OPEN_READONLY; mode++) {
            int rc;
            simdr_store *s = open_opts(f->path, mode, 1, 0, hint, &rc);
            if (rc != SIMDR_ECORRUPT)
                fail_msg("%s: open (hint %d, mode %d) gave %d, want SIMDR_ECORRUPT", what, hint,
                         mode, rc);
            assert_null(s);
        }
    }
    tu_sha256_file(f->path, after);
    assert_memory_equal(before, after, 32);
}

static void damage_hint_zeros_with_mtime_restored(void **state) {
    tu_fixture *f = *state;
    struct timespec times[2];
    uint64_t page = hinted_store(f, times);
    zero_range(f->path, page, 4096);
    /* what damage below the file system leaves: the same mtime */
    assert_int_equal(utimensat(AT_FDCWD, f->path, times, 0), 0);
    expect_refused_both_ways(f, "zeros, mtime restored");
}

static void damage_hint_broken_link_with_mtime_restored(void **state) {
    tu_fixture *f = *state;
    struct timespec times[2];
    hinted_store(f, times);
    simdr_store *s = open_ok(f->path, SIMDR_OPEN_READONLY, 1);
    uint64_t end = entry_end_of(s, "k35000");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    /* its prev_offset points at 0 now */
    zero_range(f->path, end - 12, 8);
    assert_int_equal(utimensat(AT_FDCWD, f->path, times, 0), 0);
    expect_refused_both_ways(f, "broken link, mtime restored");
}

/* Damage, then a sound entry appended after it: the hint's tail still
 * matches and the new entry chains onto it. */
static void damage_hint_damage_then_growth(void **state) {
    tu_fixture *f = *state;
    struct timespec times[2];
    uint64_t page = hinted_store(f, times);
    zero_range(f->path, page, 4096);
    uint64_t size = (uint64_t)tu_file_size(f->path);
    uint8_t entry[64 + 8 + 20];
    size_t pad = (size_t)((64 - size % 64) % 64);
    memset(entry, 0, sizeof entry);
    memcpy(entry + pad, "grown!!!", 8);
    uint8_t *meta = entry + pad + 8;
    tu_put_le64(meta, simdr_hash_key(TU_STR("grown")));
    tu_put_le64(meta + 8, size);
    uint32_t crc = tu_crc32("grown!!!", 8);
    memcpy(meta + 16, &crc, 4); /* little-endian host */
    tu_append_file(f->path, entry, pad + 8 + 20);
    expect_refused_both_ways(f, "damage then growth");
}

/* ---- item 6: salvage and check on a store with a run of zeros ---- */

typedef struct salvage_case {
    uint64_t page;       /* the zeroed page */
    uint64_t k3_start;   /* where k3's entry begins */
    uint64_t k3_payload; /* and its payload */
    uint64_t ends[300];  /* end of each key's entry */
} salvage_case;

static void store_of_300(tu_fixture *f, salvage_case *c) {
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 300);
    for (int i = 0; i < 300; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        c->ends[i] = entry_end_of(s, k);
    }
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("k3"), &e), SIMDR_OK);
    c->k3_start = simdr_entry_start(e);
    c->k3_payload = simdr_entry_offset(e);
    simdr_entry_release(e);
    c->page = (simdr_file_size(s) / 2) & ~UINT64_C(4095);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Opens read-only with salvage; every key whose entry ends within the sound
 * prefix reads back; returns how many do. */
static int salvage_and_count(tu_fixture *f, const salvage_case *c, uint64_t *valid) {
    int rc;
    simdr_store *s = open_opts(f->path, SIMDR_OPEN_READONLY, 1, 1, 1, &rc);
    assert_int_equal(rc, SIMDR_OK);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    *valid = ri.valid_size;
    assert_int_equal(simdr_file_size(s), ri.valid_size);
    int n = 0;
    for (int i = 0; i < 300; i++) {
        char k[32], v[96];
        key_of(k, sizeof k, i);
        value_of(v, sizeof v, i);
        if (c->ends[i] <= ri.valid_size) {
            tu_expect_str(s, k, v);
            n++;
        } else {
            tu_expect_absent(s, k, strlen(k));
        }
    }
    assert_int_equal(simdr_count(s), (uint64_t)n);
    simdr_check_report rep;
    assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_ECORRUPT);
    assert_true(rep.bad_entries >= 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    return n;
}

static void damage_salvage_serves_prefix_before_zeros(void **state) {
    tu_fixture *f = *state;
    salvage_case c;
    store_of_300(f, &c);
    zero_range(f->path, c.page, 4096); /* a lost page */
    uint8_t before[32], after[32];
    tu_sha256_file(f->path, before);
    /* refused without salvage, with a sound prefix named in the message */
    int rc;
    simdr_store *s = open_opts(f->path, SIMDR_OPEN_READONLY, 1, 0, 1, &rc);
    assert_int_equal(rc, SIMDR_ECORRUPT);
    assert_null(s);
    assert_null(strstr(simdr_last_error(), "prefix is 0 bytes"));
    uint64_t valid = 0;
    int n = salvage_and_count(f, &c, &valid);
    /* every entry that ends before the lost page is served */
    int before_page = 0;
    for (int i = 0; i < 300; i++) before_page += c.ends[i] <= c.page;
    assert_true(before_page > 100);
    assert_int_equal(n, before_page);
    assert_true(valid <= c.page);
    tu_sha256_file(f->path, after);
    assert_memory_equal(before, after, 32);
}

/* Truncated in the middle, extended again with zeros, then written to:
 * intact entries lie before the zeros and a sound entry after them. */
static void damage_salvage_truncated_and_extended(void **state) {
    tu_fixture *f = *state;
    salvage_case c;
    store_of_300(f, &c);
    tu_truncate(f->path, c.page);
    tu_truncate(f->path, c.page + 3 * 4096);
    uint64_t size = c.page + 3 * 4096;
    uint8_t entry[64 + 8 + 20];
    memset(entry, 0, sizeof entry);
    memcpy(entry, "after!!!", 8); /* size is 64-aligned: no pad */
    tu_put_le64(entry + 8, simdr_hash_key(TU_STR("after")));
    tu_put_le64(entry + 16, size);
    uint32_t crc = tu_crc32("after!!!", 8);
    memcpy(entry + 24, &crc, 4);
    tu_append_file(f->path, entry, 28);
    uint64_t valid = 0;
    int n = salvage_and_count(f, &c, &valid);
    int before_cut = 0;
    for (int i = 0; i < 300; i++) before_cut += c.ends[i] <= c.page;
    assert_true(before_cut > 100);
    assert_int_equal(n, before_cut);
}

/* A salvaged prefix is a chain from 0 whose every CRC is sound: an entry
 * with a flipped byte ends it. */
static void damage_salvage_prefix_has_every_crc_sound(void **state) {
    tu_fixture *f = *state;
    salvage_case c;
    store_of_300(f, &c);
    zero_range(f->path, c.page, 4096);
    flip_byte(f->path, c.k3_payload + 2);
    uint64_t valid = 0;
    int n = salvage_and_count(f, &c, &valid);
    assert_int_equal(valid, c.k3_start);
    assert_int_equal(n, 3);
}

/* ---- item 16 (open): a large newest entry is not left resident ---- */

static uint64_t resident_bytes(void) {
    FILE *fp = fopen("/proc/self/statm", "r");
    assert_non_null(fp);
    unsigned long long size = 0, resident = 0;
    assert_int_equal(fscanf(fp, "%llu %llu", &size, &resident), 2);
    fclose(fp);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Opens path in each mode and checks the open did not fault in the value
 * (64 MiB): the process grows by far less than the value. */
static void expect_open_leaves_value_out(const char *path, const char *what) {
    for (int mode = SIMDR_OPEN_EXISTING; mode <= SIMDR_OPEN_READONLY; mode++) {
        uint64_t before = resident_bytes();
        simdr_store *s = open_ok(path, mode, 1);
        uint64_t grown = resident_bytes() - before;
        if (grown > (UINT64_C(16) << 20))
            fail_msg("%s: open (mode %d) left %llu bytes resident", what, mode,
                     (unsigned long long)grown);
        /* a checked get of it neither: the check drops what it read */
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR("big"), &e), SIMDR_OK);
        grown = resident_bytes() - before;
        if (grown > (UINT64_C(16) << 20))
            fail_msg("%s: get (mode %d) left %llu bytes resident", what, mode,
                     (unsigned long long)grown);
        simdr_entry_release(e);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

static void damage_open_leaves_large_newest_entry_out(void **state) {
    tu_fixture *f = *state;
    size_t big = 64u << 20;
    uint8_t *v = malloc(big);
    tu_fill(v, big, 16);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 10);
    assert_int_equal(simdr_put(s, TU_STR("big"), v, big, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(v); /* handed back to the system: it does not count below */
    expect_open_leaves_value_out(f->path, "full walk");
    /* the same behind a hint (the open checks the newest entries' CRCs) */
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    write_keys(s, 10, HINT_KEYS);
    v = malloc(big);
    tu_fill(v, big, 17);
    assert_int_equal(simdr_put(s, TU_STR("big"), v, big, NULL), SIMDR_OK);
    free(v);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    assert_true(tu_file_size(hint) > 0);
    expect_open_leaves_value_out(f->path, "hinted open");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(damage_bitrot_reported_on_every_read_path),
        TU_TEST_DIR(damage_copy_move_rename_never_rechecksum),
        TU_TEST_DIR(damage_large_value_reported),
        TU_TEST_DIR(damage_large_value_sizes_and_places),
        TU_TEST_DIR(damage_check_after_compaction_reads_the_handles_file),
        TU_TEST_DIR(damage_check_descriptor_closed_with_the_map),
        TU_TEST_DIR(damage_check_of_a_value_cut_short_by_another_program),
        TU_TEST_DIR(damage_index_slot_damaged_is_corrupt_not_absent),
        TU_TEST_DIR(damage_hint_zeros_with_mtime_restored),
        TU_TEST_DIR(hint_mode_follows_the_store),
        TU_TEST_DIR(damage_hint_broken_link_with_mtime_restored),
        TU_TEST_DIR(damage_hint_damage_then_growth),
        TU_TEST_DIR(damage_salvage_serves_prefix_before_zeros),
        TU_TEST_DIR(damage_salvage_truncated_and_extended),
        TU_TEST_DIR(damage_salvage_prefix_has_every_crc_sound),
        TU_TEST_DIR(damage_open_leaves_large_newest_entry_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
