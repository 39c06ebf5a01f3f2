/*
 * test_recovery.c - unit tests of recovery on open in libsimdr: a file cut
 * at every byte offset within its last three entries reopens as exactly the
 * longest valid prefix (both layouts, writable and read-only opens), garbage
 * after the end is cut, a writable open saves the cut bytes beside the file,
 * a read-only open never changes the file, a text file is refused unchanged,
 * a torn payload behind a complete metadata block is cut, and repair = 0
 * turns a torn tail into SIMDR_ECORRUPT without touching the file, a
 * damaged older tombstone is reported alike by get, exists, check and
 * iteration (which goes on past it), and
 * stores larger than the open's read buffer recover the same way.
 */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NE 9

/* iter.c's test hook: iterators walk the chain instead of reading the index. */
extern _Atomic int simdr__iter_force_chain_walk;

typedef struct op {
    char key[8];
    uint8_t val[160];
    size_t len; /* 0 = delete */
} op;

typedef struct fixture {
    tu_fixture tu; /* the directory, the store path and the store */
    op ops[NE];
    uint64_t ends[NE];
    uint8_t *full;
    size_t full_len;
    int layout;
} fixture;

/* Writes NE entries (overwrites and a tombstone among the last three) and
 * records where each ends. */
static void build(fixture *f, int layout) {
    f->layout = layout;
    uint64_t seed = tu_seed(31337) + (uint64_t)layout;
    const char *keys[NE] = {"a", "b", "c", "d", "e", "b", "c", "a", "f"};
    for (int i = 0; i < NE; i++) {
        snprintf(f->ops[i].key, sizeof f->ops[i].key, "%s", keys[i]);
        f->ops[i].len = 20 + (size_t)(tu_rand(&seed) % 130);
        tu_fill(f->ops[i].val, f->ops[i].len, tu_rand(&seed));
    }
    f->ops[7].len = 0;                  /* delete "a" */
    memset(f->ops[6].val + 1, 0, 40);   /* a zero run inside a payload */
    simdr_store *s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, layout);
    for (int i = 0; i < NE; i++) {
        if (f->ops[i].len)
            assert_int_equal(simdr_put(s, TU_STR(f->ops[i].key), f->ops[i].val, f->ops[i].len,
                                       &f->ends[i]),
                             SIMDR_OK);
        else
            assert_int_equal(simdr_delete(s, TU_STR(f->ops[i].key), &f->ends[i]), SIMDR_OK);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    f->full = tu_read_file(f->tu.path, &f->full_len);
    assert_non_null(f->full);
    assert_int_equal(f->full_len, f->ends[NE - 1]);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tu_fixture_init(&f->tu, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    free(f->full);
    tu_fixture_free(&f->tu);
    free(f);
    return 0;
}

/* Checks the store holds exactly the state after the first n entries. */
static void expect_prefix(fixture *f, simdr_store *s, int n) {
    const char *keys[] = {"a", "b", "c", "d", "e", "f"};
    uint64_t live = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        int last = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(f->ops[i].key, keys[k]) == 0)
                last = i;
        if (last < 0 || f->ops[last].len == 0) {
            tu_expect_absent(s, TU_STR(keys[k]));
        } else {
            tu_expect_value(s, TU_STR(keys[k]), f->ops[last].val, f->ops[last].len);
            live++;
        }
    }
    assert_int_equal(simdr_count(s), live);
    assert_int_equal(simdr_file_size(s), n ? f->ends[n - 1] : 0);
}

/* Opens path (holding cut bytes: the first `cut` of f->full, or whatever the
 * caller wrote) and checks recovery to the first n entries. */
static void check_recovered(fixture *f, uint64_t file_len, int n, int writable) {
    uint64_t valid = n ? f->ends[n - 1] : 0;
    size_t before_len = 0;
    uint8_t *before = tu_read_file(f->tu.path, &before_len);
    assert_non_null(before);
    assert_int_equal(before_len, file_len);
    simdr_store *s = tu_open(f->tu.path, writable ? SIMDR_OPEN_EXISTING : SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.file_size, file_len);
    assert_int_equal(ri.valid_size, valid);
    assert_int_equal(ri.bytes_cut, file_len - valid);
    expect_prefix(f, s, n);
    if (writable && file_len != valid) {
        assert_int_equal(ri.truncated, 1);
        assert_int_equal(tu_file_size(f->tu.path), (int64_t)valid);
        /* A cut of zero bytes only holds no entry and is not saved. */
        int zeros_only = 1;
        for (uint64_t i = valid; i < file_len && zeros_only; i++) zeros_only = before[i] == 0;
        assert_int_equal(strlen(ri.saved_path) > 0, !zeros_only);
        char saved_path[sizeof ri.saved_path];
        memcpy(saved_path, ri.saved_path, sizeof saved_path);
        size_t saved_len = 0;
        uint8_t *saved = zeros_only ? NULL : tu_read_file(ri.saved_path, &saved_len);
        assert_true(zeros_only || saved != NULL);
        if (saved) {
            assert_int_equal(saved_len, file_len - valid);
            assert_memory_equal(saved, before + valid, saved_len);
        }
        free(saved);
        /* the store still takes writes at the cut point */
        uint64_t tail = 0;
        assert_int_equal(simdr_put(s, TU_STR("post"), TU_STR("after-recovery"), &tail), SIMDR_OK);
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR("post"), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_start(e), valid);
        simdr_entry_release(e);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        s = tu_open(f->tu.path, SIMDR_OPEN_READONLY, 0);
        tu_expect_str(s, "post", "after-recovery");
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.bytes_cut, 0);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        unlink(saved_path);
    } else {
        assert_int_equal(ri.truncated, 0);
        if (writable)
            assert_string_equal(ri.saved_path, "");
        assert_int_equal(simdr_close(s), SIMDR_OK);
        /* unchanged, byte for byte */
        size_t after_len = 0;
        uint8_t *after = tu_read_file(f->tu.path, &after_len);
        assert_non_null(after);
        assert_int_equal(after_len, before_len);
        assert_memory_equal(after, before, before_len);
        free(after);
    }
    free(before);
    /* nothing else appeared beside the store except saved tails (removed above) */
    assert_int_equal(tu_dir_count(f->tu.dir), 1);
}

static void truncate_everywhere(fixture *f, int layout) {
    build(f, layout);
    uint64_t from = f->ends[NE - 4];
    int cases = 0;
    for (uint64_t cut = from; cut <= f->full_len; cut++) {
        int n = 0;
        while (n < NE && f->ends[n] <= cut)
            n++;
        for (int writable = 0; writable < 2; writable++) {
            tu_write_file(f->tu.path, f->full, cut);
            check_recovered(f, cut, n, writable);
            cases++;
        }
    }
    fprintf(stderr, "layout %d: %d truncation cases from %llu to %zu\n", layout, cases,
            (unsigned long long)from, f->full_len);
}

static void test_truncate_every_byte_aligned(void **state) {
    truncate_everywhere(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_truncate_every_byte_unaligned(void **state) {
    truncate_everywhere(*state, SIMDR_LAYOUT_UNALIGNED);
}

static void garbage_after_end(fixture *f, int layout) {
    build(f, layout);
    uint64_t seed = tu_seed(31337);
    size_t glens[] = {1, 7, 19, 20, 21, 64, 100, 4096};
    uint8_t g[4096 + 64];
    for (size_t gi = 0; gi < sizeof glens / sizeof glens[0]; gi++) {
        for (int kind = 0; kind < 3; kind++) {
            size_t gl = glens[gi];
            if (kind == 0)
                tu_fill(g, gl, tu_rand(&seed)); /* random bytes */
            else if (kind == 1)
                memset(g, 0, gl); /* zero-filled tail (preallocation, torn page) */
            else
                memset(g, 0xff, gl);
            for (int writable = 0; writable < 2; writable++) {
                tu_write_file(f->tu.path, f->full, f->full_len);
                tu_append_file(f->tu.path, g, gl);
                check_recovered(f, f->full_len + gl, NE, writable);
            }
        }
    }
    /* a plausible fake entry: real key hash, prev_offset = the true tail,
     * but its checksum does not match its payload */
    uint8_t fake[3 + 20];
    memcpy(fake, "xyz", 3);
    tu_put_le64(fake + 3, simdr_hash_key(TU_STR("a")));
    tu_put_le64(fake + 11, f->full_len);
    uint32_t bad = tu_crc32("xyz", 3) ^ 1u;
    memcpy(fake + 19, &bad, 4);
    for (int writable = 0; writable < 2; writable++) {
        tu_write_file(f->tu.path, f->full, f->full_len);
        tu_append_file(f->tu.path, fake, sizeof fake);
        check_recovered(f, f->full_len + sizeof fake, NE, writable);
    }
}

static void test_garbage_appended_aligned(void **state) {
    garbage_after_end(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_garbage_appended_unaligned(void **state) {
    garbage_after_end(*state, SIMDR_LAYOUT_UNALIGNED);
}

/* A store whose file name is 250 bytes long: "<name>.torn-<offset>" would
 * pass the file system's 255-byte limit, and the writable open that must save
 * a torn tail before cutting it failed ("File name too long") at every
 * attempt, so the store could never be written again. The saved copy's name
 * is shortened instead. */
static void test_torn_tail_of_a_store_with_a_long_name_is_saved(void **state) {
    fixture *f = *state;
    char path[4096];
    char name[251];
    memset(name, 'z', 250);
    name[250] = '\0';
    snprintf(path, sizeof path, "%s/%s", f->tu.dir, name);
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    tu_put_str(s, "a", "1");
    simdr_close(s);
    static const char garbage[] = "the torn remains of a write";
    FILE *fp = fopen(path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite(garbage, 1, sizeof garbage, fp), sizeof garbage);
    fclose(fp);
    s = NULL;
    int rc = tu_open_status(&s, path, SIMDR_OPEN_EXISTING, 0);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s\n", simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(ri.bytes_cut, sizeof garbage);
    const char *base = strrchr(ri.saved_path, '/');
    assert_non_null(base);
    assert_true(strlen(base + 1) <= 255);
    assert_memory_equal(base + 1, name, 200); /* still says whose tail it is */
    fp = fopen(ri.saved_path, "rb");
    assert_non_null(fp);
    char saved[sizeof garbage];
    assert_int_equal(fread(saved, 1, sizeof saved, fp), sizeof garbage);
    fclose(fp);
    assert_memory_equal(saved, garbage, sizeof garbage);
    tu_expect_str(s, "a", "1");
    tu_put_str(s, "b", "2");
    simdr_close(s);
}

/* The saved copy of a torn tail holds the store's bytes (the value being
 * written when the writer died): it was created 0644 whatever the store's
 * permissions, so a private store's data became readable by everyone. It
 * takes no wider access than the store file has, as the hint does. */
static void test_torn_tail_copy_is_no_more_readable_than_the_store(void **state) {
    fixture *f = *state;
    char path[4096];
    snprintf(path, sizeof path, "%s/private.bin", f->tu.dir);
    mode_t old_mask = umask(022);
    simdr_options o;
    simdr_options_init(&o);
    o.file_mode = 0600;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, path, &o), SIMDR_OK);
    tu_put_str(s, "a", "1");
    simdr_close(s);
    static const char secret[] = "half of a secret value";
    tu_append_file(path, secret, sizeof secret);
    s = NULL;
    assert_int_equal(tu_open_status(&s, path, SIMDR_OPEN_EXISTING, 0), SIMDR_OK);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.truncated, 1);
    struct stat st;
    assert_int_equal(stat(ri.saved_path, &st), 0);
    if ((st.st_mode & 0077) != 0)
        fail_msg("%s: mode %03o, the store's is 0600", ri.saved_path, (unsigned)(st.st_mode & 0777));
    simdr_close(s);
    /* The side file names the newest entry's key hash: made anew for a
     * store whose permissions were narrowed since it was created, it takes
     * the store's, not the default of simdr_options.file_mode. */
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", path);
    assert_int_equal(unlink(side), 0);
    s = tu_open(path, SIMDR_OPEN_EXISTING, 0);
    tu_put_str(s, "b", "2");
    assert_int_equal(stat(side, &st), 0);
    if ((st.st_mode & 0077) != 0)
        fail_msg("%s: mode %03o, the store's is 0600", side, (unsigned)(st.st_mode & 0777));
    simdr_close(s);
    umask(old_mask);
}

static void test_text_file_refused(void **state) {
    fixture *f = *state;
    char text[8192];
    size_t n = 0;
    while (n + 64 < sizeof text)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "line %zu: this is a plain text file, not a store\n", n);
    const size_t sizes[] = {1, 19, 20, 21, 100, n};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        tu_write_file(f->tu.path, text, sizes[i]);
        uint8_t sha[32], sha2[32];
        tu_sha256_file(f->tu.path, sha);
        const int modes[] = {SIMDR_OPEN_READONLY, SIMDR_OPEN_EXISTING, SIMDR_OPEN_CREATE};
        for (int m = 0; m < 3; m++) {
            simdr_store *s = NULL;
            int rc = tu_open_status(&s, f->tu.path, modes[m], 0);
            assert_int_equal(rc, SIMDR_ENOTSTORE);
            assert_null(s);
            assert_true(strlen(simdr_last_error()) > 0);
            assert_int_equal(tu_file_size(f->tu.path), (int64_t)sizes[i]);
            tu_sha256_file(f->tu.path, sha2);
            assert_memory_equal(sha, sha2, 32);
            assert_int_equal(tu_dir_count(f->tu.dir), 1);
        }
    }
}

/* Zeroes (part of) the payload of the last entry: the metadata block is
 * complete, but the CRC no longer matches, so the entry is torn. */
static void torn_payload(fixture *f, int layout) {
    build(f, layout);
    uint64_t meta = f->ends[NE - 1] - 20;
    uint64_t start = f->ends[NE - 2];
    uint64_t pay = layout == SIMDR_LAYOUT_ALIGNED64 ? start + ((64 - start % 64) & 63) : start;
    assert_int_equal(meta - pay, f->ops[NE - 1].len);
    struct {
        uint64_t off, len;
    } zap[] = {{pay, meta - pay}, {pay + 5, 9}, {meta - 1, 1}, {pay, 1}};
    for (size_t z = 0; z < sizeof zap / sizeof zap[0]; z++) {
        for (int writable = 0; writable < 2; writable++) {
            uint8_t *copy = malloc(f->full_len);
            memcpy(copy, f->full, f->full_len);
            memset(copy + zap[z].off, 0, zap[z].len);
            if (memcmp(copy, f->full, f->full_len) == 0) { /* already zero: nothing torn */
                free(copy);
                continue;
            }
            tu_write_file(f->tu.path, copy, f->full_len);
            free(copy);
            check_recovered(f, f->full_len, NE - 1, writable);
        }
    }
    /* the same with a damaged (non-zero) byte */
    uint8_t *copy = malloc(f->full_len);
    memcpy(copy, f->full, f->full_len);
    copy[pay + 3] ^= 0x40;
    tu_write_file(f->tu.path, copy, f->full_len);
    free(copy);
    check_recovered(f, f->full_len, NE - 1, 1);
}

static void test_torn_payload_aligned(void **state) {
    torn_payload(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_torn_payload_unaligned(void **state) {
    torn_payload(*state, SIMDR_LAYOUT_UNALIGNED);
}

/* Aligned layout: the newest entry's link changed to another offset within
 * the padding before its payload still frames the same payload, so its CRC
 * matches; the chain breaks at that link, and the newest entry is torn (cut
 * to the previous one), not damage behind a sound tail. */
static void test_newest_link_changed_within_pad_is_torn(void **state) {
    fixture *f = *state;
    build(f, SIMDR_LAYOUT_ALIGNED64);
    uint64_t prev = f->ends[NE - 2];
    uint64_t pay = prev + ((64 - prev % 64) & 63);
    uint64_t other = prev + 1 <= pay && prev % 64 != 0 ? prev + 1 : prev - 1;
    assert_int_equal(other + ((64 - other % 64) & 63), pay);
    uint8_t link[8];
    for (int i = 0; i < 8; i++) link[i] = (uint8_t)(other >> (8 * i));
    uint8_t *copy = malloc(f->full_len);
    memcpy(copy, f->full, f->full_len);
    memcpy(copy + f->full_len - 12, link, 8); /* the link: metadata bytes 8..16 */
    for (int writable = 0; writable < 2; writable++) {
        tu_write_file(f->tu.path, copy, f->full_len);
        check_recovered(f, f->full_len, NE - 1, writable);
    }
    free(copy);
}

static void test_repair_off_reports_corrupt(void **state) {
    fixture *f = *state;
    build(f, SIMDR_LAYOUT_ALIGNED64);
    tu_write_file(f->tu.path, f->full, f->full_len - 7);
    uint8_t sha[32], sha2[32];
    tu_sha256_file(f->tu.path, sha);
    simdr_options o;
    simdr_options_init(&o);
    assert_int_equal(o.repair, 1);
    assert_int_equal(o.open_mode, SIMDR_OPEN_CREATE);
    assert_int_equal(o.layout, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(o.durability, SIMDR_SYNC_NONE);
    o.repair = 0;
    o.open_mode = SIMDR_OPEN_EXISTING;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->tu.path, &o), SIMDR_ECORRUPT);
    assert_null(s);
    tu_sha256_file(f->tu.path, sha2);
    assert_memory_equal(sha, sha2, 32);
    assert_int_equal(tu_dir_count(f->tu.dir), 1);
    /* with repair (the default) it is cut to the previous entry */
    check_recovered(f, f->full_len - 7, NE - 1, 1);
}

/* A flipped byte in an older tombstone (aligned layout: a one-byte entry
 * that is not 0x00 cannot hold its pad) opens, is reported by simdr_check,
 * and simdr_get and simdr_exists agree that the key's newest entry is
 * damaged; the other keys read as before. */
static void test_damaged_tombstone_get_and_exists_agree(void **state) {
    fixture *f = *state;
    build(f, SIMDR_LAYOUT_ALIGNED64);
    uint8_t flipped = 0x01;
    assert_int_equal(f->full[f->ends[6]], 0x00); /* the tombstone of "a" */
    tu_patch_file(f->tu.path, f->ends[6], &flipped, 1);
    simdr_store *s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    simdr_check_report rep;
    assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_ECORRUPT);
    assert_int_equal(rep.bad_entries, 1);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("a"), &e), SIMDR_ECORRUPT);
    assert_null(e);
    assert_int_equal(simdr_exists(s, TU_STR("a")), SIMDR_ECORRUPT);
    tu_expect_value(s, TU_STR("f"), f->ops[8].val, f->ops[8].len);
    assert_int_equal(simdr_exists(s, TU_STR("f")), 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* The same damaged tombstone, iterated: both iteration paths (offsets from
 * the index, and the chain walk) report it once with SIMDR_ECORRUPT and go
 * on, so every other live key is still yielded. */
static void test_damaged_tombstone_iteration_goes_on(void **state) {
    fixture *f = *state;
    build(f, SIMDR_LAYOUT_ALIGNED64);
    uint8_t flipped = 0x01;
    tu_patch_file(f->tu.path, f->ends[6], &flipped, 1);
    simdr_store *s = tu_open(f->tu.path, SIMDR_OPEN_READONLY, SIMDR_LAYOUT_ALIGNED64);
    for (int walk = 0; walk < 2; walk++) {
        atomic_store(&simdr__iter_force_chain_walk, walk);
        simdr_iter *it = NULL;
        assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
        const simdr_entry *e;
        uint64_t yielded = 0, damaged = 0;
        int rc, saw_f = 0;
        while ((rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
            if (rc == SIMDR_ECORRUPT) {
                damaged++;
                assert_true(damaged <= 1);
                continue;
            }
            assert_int_equal(rc, SIMDR_OK);
            saw_f |= simdr_entry_key_hash(e) == simdr_hash_key(TU_STR("f"));
            yielded++;
        }
        simdr_iter_close(it);
        assert_int_equal(damaged, 1);
        assert_true(saw_f);
        assert_int_equal(yielded + damaged, simdr_count(s));
    }
    atomic_store(&simdr__iter_force_chain_walk, 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A store of several MiB, small entries among ones larger than the buffer the
 * open reads the file through (1 MiB), tombstones between them: it reopens
 * with every key; a link rewritten in the middle to skip an entry makes the
 * open refuse it unchanged; a flipped payload byte in a large entry in the
 * middle opens and is reported by check. */
static void large_store_walk(fixture *f, int layout) {
    enum { N = 3000, BIG = 1536 * 1024 };
    uint64_t *ends = calloc(N, sizeof *ends);
    uint8_t *big = malloc(BIG);
    uint8_t small[300];
    char k[32];
    simdr_store *s = tu_open(f->tu.path, SIMDR_OPEN_CREATE, layout);
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "w%d", i % 2500);
        if (i % 500 == 250) {
            tu_fill(big, BIG, (uint64_t)i);
            assert_int_equal(simdr_put(s, TU_STR(k), big, BIG, &ends[i]), SIMDR_OK);
        } else if (i >= 2500 && i % 37 == 36) { /* the key exists: written at i - 2500 */
            assert_int_equal(simdr_delete(s, TU_STR(k), &ends[i]), SIMDR_OK);
        } else {
            size_t len = 1 + (size_t)(i * 7919 % 300);
            tu_fill(small, len, (uint64_t)i);
            assert_int_equal(simdr_put(s, TU_STR(k), small, len, &ends[i]), SIMDR_OK);
        }
    }
    uint64_t live = simdr_count(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    uint64_t size = (uint64_t)tu_file_size(f->tu.path);
    assert_true(size > 8 * (UINT64_C(1) << 20));

    s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, layout);
    assert_int_equal(simdr_count(s), live);
    for (int key = 0; key < 2500; key++) {
        int newest = key + 2500 < N ? key + 2500 : key;
        snprintf(k, sizeof k, "w%d", key);
        if (newest >= 2500 && newest % 37 == 36) {
            tu_expect_absent(s, TU_STR(k));
        } else if (newest % 500 == 250) {
            tu_fill(big, BIG, (uint64_t)newest);
            tu_expect_value(s, TU_STR(k), big, BIG);
        } else {
            size_t len = 1 + (size_t)(newest * 7919 % 300);
            tu_fill(small, len, (uint64_t)newest);
            tu_expect_value(s, TU_STR(k), small, len);
        }
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);

    /* a big entry about 4 MiB below the end, and the small one after it */
    int bi = 0;
    for (int i = 250; i < N; i += 500)
        if (size - ends[i] > 4 * (UINT64_C(1) << 20)) bi = i;
    assert_true(bi > 0);
    uint8_t saved[8], link[8];
    uint64_t link_at = ends[bi + 1] - 12;
    size_t whole_len = 0;
    uint8_t *whole = tu_read_file(f->tu.path, &whole_len);
    memcpy(saved, whole + link_at, 8);
    free(whole);
    tu_put_le64(link, ends[bi - 1]); /* skip the big entry */
    tu_patch_file(f->tu.path, link_at, link, 8);
    simdr_store *bad = NULL;
    assert_int_equal(tu_open_status(&bad, f->tu.path, SIMDR_OPEN_EXISTING, layout), SIMDR_ECORRUPT);
    assert_null(bad);
    assert_int_equal((uint64_t)tu_file_size(f->tu.path), size);
    tu_patch_file(f->tu.path, link_at, saved, 8);

    uint8_t flip = 0xff;
    tu_patch_file(f->tu.path, ends[bi] - 20 - BIG / 2, &flip, 1);
    s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, layout);
    simdr_check_report rep;
    assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_ECORRUPT);
    assert_int_equal(rep.bad_entries, 1);
    assert_int_equal(simdr_count(s), live);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(big);
    free(ends);
}

/* A read-only open of a store with a torn tail reports the skipped bytes in
 * simdr_check while they are in the file; once a writer's open has cut them
 * (or a mapped writer left only zeros there, or wrote sound entries over
 * them) they are damage no more. The
 * check went on reporting them after the repair, refreshed or not (a false
 * SIMDR_ECORRUPT on a sound file). */
static void test_readonly_check_forgets_a_torn_tail_a_writer_cut(void **state) {
    fixture *f = *state;
    for (int mapped = 0; mapped <= 1; mapped++) {
        build(f, SIMDR_LAYOUT_ALIGNED64);
        uint8_t junk[500];
        memset(junk, 0x5a, sizeof junk);
        tu_append_file(f->tu.path, junk, sizeof junk);
        simdr_store *r = tu_open(f->tu.path, SIMDR_OPEN_READONLY, 0);
        simdr_check_report rep;
        assert_int_equal(simdr_check(r, NULL, NULL, &rep), SIMDR_ECORRUPT);
        assert_int_equal(rep.bad_entries, 1);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
        simdr_store *w = NULL;
        assert_int_equal(simdr_open(&w, f->tu.path, &o), SIMDR_OK);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(w, &ri), SIMDR_OK);
        assert_int_equal(ri.truncated, 1);
        /* ... and once it has written sound entries over the cut range
         * (these were taken for the torn bytes still there: only zeros or
         * a shorter file told them apart) */
        uint8_t value[200];
        memset(value, 0x33, sizeof value);
        for (int i = 0; i < 6; i++) {
            char key[16];
            snprintf(key, sizeof key, "over%d", i);
            assert_int_equal(simdr_put(w, key, strlen(key), value, sizeof value, NULL), SIMDR_OK);
        }
        /* before the reader refreshes, and after */
        if (simdr_check(r, NULL, NULL, &rep) != SIMDR_OK)
            fail_msg("mapped %d: check before refresh: %s", mapped, simdr_last_error());
        uint64_t added = 1;
        assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
        assert_int_equal(added, 6);
        if (simdr_check(r, NULL, NULL, &rep) != SIMDR_OK)
            fail_msg("mapped %d: check after refresh: %s", mapped, simdr_last_error());
        assert_int_equal(rep.bad_entries, 0);
        assert_int_equal(simdr_close(w), SIMDR_OK);
        assert_int_equal(simdr_close(r), SIMDR_OK);
        free(f->full);
        f->full = NULL;
        assert_int_equal(unlink(f->tu.path), 0);
    }
}

static void test_large_store_walk_aligned(void **state) {
    large_store_walk(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_large_store_walk_unaligned(void **state) {
    large_store_walk(*state, SIMDR_LAYOUT_UNALIGNED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_truncate_every_byte_aligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_copy_is_no_more_readable_than_the_store, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncate_every_byte_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_appended_aligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_appended_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_payload_aligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_payload_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newest_link_changed_within_pad_is_torn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_repair_off_reports_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_tombstone_get_and_exists_agree, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_tombstone_iteration_goes_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_of_a_store_with_a_long_name_is_saved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_readonly_check_forgets_a_torn_tail_a_writer_cut,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_store_walk_aligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_store_walk_unaligned, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
