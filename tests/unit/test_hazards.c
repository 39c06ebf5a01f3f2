/*
 * test_hazards.c - one test per data-loss case of REFERENCE-HAZARDS.md
 * (items 1-15, the library's), each named after it, showing that libsimdr
 * does not lose data where the Rust engine does.
 */
#include "testutil.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n keys "h<i>" with values "value of h<i> ..." */
static void write_keys(simdr_store *s, int from, int to) {
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "h%d", i);
        snprintf(v, sizeof v, "value of h%d %.*s", i, i % 30, "==============================");
        tu_put_str(s, k, v);
    }
}

static void expect_keys(simdr_store *s, int from, int to) {
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "h%d", i);
        snprintf(v, sizeof v, "value of h%d %.*s", i, i % 30, "==============================");
        tu_expect_str(s, k, v);
    }
}

static void expect_unchanged(const char *path, const uint8_t *data, size_t len) {
    size_t n = 0;
    uint8_t *now = tu_read_file(path, &n);
    assert_non_null(now);
    assert_int_equal(n, len);
    assert_memory_equal(now, data, len);
    free(now);
}

/* 1. A torn append whose bytes contain zero runs is not taken as a giant
 *    first entry: the real keys stay readable and nothing is lost. */
static void hazard01_zero_filled_torn_tail_not_taken_as_first_entry(void **state) {
    tu_fixture *f = *state;
    for (int layout = 0; layout < 2; layout++) {
        simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
        write_keys(s, 0, 20);
        uint64_t size = simdr_file_size(s);
        /* the append that will be torn: mostly zeros */
        uint8_t val[1000];
        memset(val, 0, sizeof val);
        val[0] = 1;
        assert_int_equal(simdr_put(s, TU_STR("torn"), val, sizeof val, NULL), SIMDR_OK);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        size_t full_len = 0;
        uint8_t *full = tu_read_file(f->path, &full_len);
        assert_non_null(full);
        /* cuts inside the zero run of the payload and of its metadata, and
         * pure zero-filled tails (preallocated or torn pages) */
        uint64_t cuts[] = {size + 1, size + 64, size + 100, size + 500, full_len - 20,
                           full_len - 12, full_len - 4, full_len - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0] + 2; c++) {
            if (c < sizeof cuts / sizeof cuts[0]) {
                tu_write_file(f->path, full, cuts[c]);
            } else {
                size_t z = c == sizeof cuts / sizeof cuts[0] ? 4096 : 28;
                uint8_t *zeros = calloc(1, z);
                tu_write_file(f->path, full, size);
                tu_append_file(f->path, zeros, z);
                free(zeros);
            }
            s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
            assert_int_equal(simdr_file_size(s), size);
            assert_int_equal(simdr_count(s), 20);
            expect_keys(s, 0, 20);
            tu_expect_absent(s, TU_STR("torn"));
            /* later writes keep everything */
            write_keys(s, 20, 25);
            assert_int_equal(simdr_close(s), SIMDR_OK);
            s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
            expect_keys(s, 0, 25);
            assert_int_equal(simdr_count(s), 25);
            assert_int_equal(simdr_close(s), SIMDR_OK);
        }
        free(full);
        tu_rmtree(f->dir);
        free(f->dir);
        f->dir = tu_mkdtemp();
        tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    }
}

/* Opens path in a child process (a crash there fails the test instead of
 * killing the suite); returns the status, or 1000 + signal on a crash. */
static int open_rc_in_child(const char *path, int open_mode) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* a crash must kill the child, not enter the test runner's handler */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGABRT, SIG_DFL);
        signal(SIGILL, SIG_DFL);
        signal(SIGFPE, SIG_DFL);
        simdr_store *s = NULL;
        int rc = tu_open_status(&s, path, open_mode, 0);
        if (rc == SIMDR_OK && s == NULL)
            rc = 99;
        simdr_close(s);
        _exit(rc < 0 ? -rc : rc);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        return 1000 + WTERMSIG(st);
    return -WEXITSTATUS(st);
}

/* Writes a store of n entries to path and returns the offsets of the
 * metadata of entries 1 and n/2 in metas. */
/* Removes path and what the library may keep beside it: the index hint
 * cache and the side file. */
static void remove_store(const char *path) {
    char h[4096 + 16];
    unlink(path);
    snprintf(h, sizeof h, "%s.hint", path);
    unlink(h);
    snprintf(h, sizeof h, "%s.simdr", path);
    unlink(h);
}

static void damaged_store(const char *path, int n, uint64_t metas[2]) {
    remove_store(path);
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    simdr_kv *items = calloc((size_t)n, sizeof *items);
    char (*keys)[16] = calloc((size_t)n, 16);
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], 16, "d%d", i);
        items[i] = (simdr_kv){keys[i], strlen(keys[i]), keys[i], strlen(keys[i])};
    }
    assert_int_equal(simdr_put_batch(s, items, (size_t)n, NULL), SIMDR_OK);
    const int which[2] = {1, n / 2};
    for (int w = 0; w < 2; w++) {
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR(keys[which[w]]), &e), SIMDR_OK);
        metas[w] = simdr_entry_end(e) - 20;
        simdr_entry_release(e);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(items);
    free(keys);
}

/* Damages prev_offset of an early and a middle entry with several bad
 * values; every open must answer SIMDR_ECORRUPT and leave the file intact.
 * fresh: the damaged bytes are written to a new file (no cache of the
 * library beside it), else the store is damaged in place. */
static void damaged_prev_offsets(tu_fixture *f, int n, int fresh) {
    char built[4096 + 8], path[4096 + 8];
    snprintf(built, sizeof built, "%s", f->path);
    uint64_t metas[2];
    damaged_store(built, n, metas);
    size_t len = 0;
    uint8_t *orig = tu_read_file(built, &len);
    if (fresh)
        snprintf(path, sizeof path, "%s.copy", f->path);
    else
        snprintf(path, sizeof path, "%s", built);
    const uint64_t bad_values[] = {UINT64_C(0xdeadbeefcafe), 3, 0};
    for (int w = 0; w < 2; w++) {
        for (size_t b = 0; b < 3; b++) {
            uint8_t le[8];
            tu_put_le64(le, bad_values[b]);
            if (fresh)
                remove_store(path); /* a new file: nothing cached about it */
            tu_write_file(path, orig, len);
            tu_patch_file(path, metas[w] + 8, le, 8);
            size_t dlen = 0;
            uint8_t *damaged = tu_read_file(path, &dlen);
            const int modes[3] = {SIMDR_OPEN_EXISTING, SIMDR_OPEN_CREATE, SIMDR_OPEN_READONLY};
            for (int m = 0; m < 3; m++) {
                /* Linear recovery is what lets these opens finish within the
                 * suite's ctest timeout (the reference goes quadratic here). */
                int rc = open_rc_in_child(path, modes[m]);
                /* a read-only open may serve the sound part of the file */
                int ok = rc == SIMDR_ECORRUPT ||
                         (modes[m] == SIMDR_OPEN_READONLY && rc == SIMDR_OK);
                if (!ok)
                    fprintf(stderr, "%s, %d entries, entry %s prev=0x%llx, open mode %d: "
                            "rc %d (%s)\n", fresh ? "fresh copy" : "in place", n,
                            w ? "n/2" : "1", (unsigned long long)bad_values[b], modes[m], rc,
                            rc >= 1000 ? "crashed" : simdr_strerror(rc));
                assert_true(ok);
                expect_unchanged(path, damaged, dlen);
            }
            free(damaged);
        }
    }
    free(orig);
}

/* 2. A damaged prev_offset in the middle (or early) is reported, not
 *    answered by truncation, and recovery stays linear. */
static void hazard02_damaged_prev_offset_reported_not_truncated(void **state) {
    tu_fixture *f = *state;
    damaged_prev_offsets(f, 100000, 1);
    damaged_prev_offsets(f, 30, 1);
}

/* 2, on the store file the library itself wrote and closed (whatever it
 *    keeps beside the file must not hide the damage, nor crash the open). */
static void hazard02_damaged_prev_offset_in_place_reported(void **state) {
    tu_fixture *f = *state;
    damaged_prev_offsets(f, 30, 0);
    damaged_prev_offsets(f, 100000, 0);
}

/* 3. A file that is not a store is never cut; a read-only use never writes;
 *    an old-layout file is recognised, not truncated. */
static void hazard03_non_store_file_never_cut(void **state) {
    tu_fixture *f = *state;
    const char *text = "Dear diary,\nthis is not a key/value store.\n"
                       "It has lines, and it has no metadata at all.\n";
    uint8_t rnd[10000];
    tu_fill(rnd, sizeof rnd, tu_seed(3));
    struct {
        const void *d;
        size_t n;
    } files[] = {{text, strlen(text)}, {rnd, sizeof rnd}, {rnd, 21}};
    for (size_t i = 0; i < 3; i++) {
        tu_write_file(f->path, files[i].d, files[i].n);
        for (int mode = 0; mode < 3; mode++) {
            simdr_store *s = NULL;
            assert_int_equal(tu_open_status(&s, f->path, mode, 0), SIMDR_ENOTSTORE);
            assert_null(s);
            expect_unchanged(f->path, files[i].d, files[i].n);
        }
    }
    /* an unaligned (0.4.x) file opened with the aligned default is read as
     * what it is */
    char p2[4096];
    tu_join(p2, sizeof p2, f->dir, "old.bin");
    simdr_store *s = tu_open(p2, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    write_keys(s, 0, 30);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    size_t n = 0;
    uint8_t *old = tu_read_file(p2, &n);
    s = tu_open(p2, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_layout_of(s), SIMDR_LAYOUT_UNALIGNED);
    expect_keys(s, 0, 30);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    expect_unchanged(p2, old, n);
    /* read-only open of a torn file changes nothing */
    tu_truncate(p2, n - 5);
    free(old);
    old = tu_read_file(p2, &n);
    s = tu_open(p2, SIMDR_OPEN_READONLY, 0);
    expect_keys(s, 0, 29);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    expect_unchanged(p2, old, n);
    free(old);
}

/* 4. CRCs are checked: a torn payload behind complete metadata is cut at
 *    open, and a damaged payload in the middle is found by verify/check. */
static void hazard04_torn_payload_crc_checked(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 10);
    uint64_t size = simdr_file_size(s);
    tu_put_str(s, "h3", "a newer value for h3 that will be torn");
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("h3"), &e), SIMDR_OK);
    uint64_t off = simdr_entry_offset(e), plen = simdr_entry_size(e);
    simdr_entry_release(e);
    assert_int_equal(simdr_get(s, TU_STR("h5"), &e), SIMDR_OK);
    uint64_t mid_off = simdr_entry_offset(e);
    simdr_entry_release(e);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    /* the payload pages never reached the disk: zeros behind valid metadata */
    uint8_t *z = calloc(1, plen);
    tu_patch_file(f->path, off, z, plen);
    free(z);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, size);
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(simdr_file_size(s), size);
    expect_keys(s, 0, 10); /* h3 has its previous value */
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    /* a flipped byte in the middle of the file: detected, never cut; either
     * the open refuses the damaged store, or it opens and verify/check find
     * the bad entry */
    size_t dlen = 0;
    uint8_t x = 'X';
    tu_patch_file(f->path, mid_off + 2, &x, 1);
    uint8_t *damaged = tu_read_file(f->path, &dlen);
    int rc = tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0);
    if (rc == SIMDR_ECORRUPT) {
        expect_unchanged(f->path, damaged, dlen);
    } else {
        assert_int_equal(rc, SIMDR_OK);
        assert_int_equal(simdr_file_size(s), size); /* not a tail problem: nothing cut */
        /* reads check the CRC: the damaged value is never served */
        assert_int_equal(simdr_get(s, TU_STR("h5"), &e), SIMDR_ECORRUPT);
        assert_null(e);
        assert_int_equal(simdr_get(s, TU_STR("h4"), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        simdr_entry_release(e);
        simdr_check_report rep;
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_ECORRUPT);
        assert_int_equal(rep.bad_entries, 1);
        assert_int_equal(rep.entries, 10);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    free(damaged);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
}

typedef struct src {
    const uint8_t *d;
    size_t n, pos;
    int64_t fail_at;
} src;

static int64_t src_read(void *ctx, void *buf, size_t cap) {
    src *s = ctx;
    if (s->fail_at >= 0 && s->pos >= (size_t)s->fail_at)
        return -5;
    size_t k = s->n - s->pos < cap ? s->n - s->pos : cap;
    if (k > 10000)
        k = 10000;
    memcpy(buf, s->d + s->pos, k);
    s->pos += k;
    return (int64_t)k;
}

/* 5. A failed stream write (empty, all zeros, failing source) leaves file,
 *    index and tail exactly as before; the next write is indexed right. */
static void hazard05_failed_stream_leaves_store_unchanged(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    write_keys(s, 0, 5);
    uint64_t size = simdr_file_size(s);
    size_t n0 = 0;
    uint8_t *before = tu_read_file(f->path, &n0);
    uint8_t *data = malloc(300000);
    tu_fill(data, 300000, 5);
    uint8_t *zeros = calloc(1, 300000);
    src cases[] = {{data, 0, 0, -1}, {zeros, 300000, 0, -1}, {data, 300000, 0, 150000}};
    for (size_t c = 0; c < 3; c++) {
        assert_true(simdr_put_stream(s, TU_STR("h1"), src_read, &cases[c], NULL) < 0);
        assert_int_equal(simdr_file_size(s), size);
        expect_unchanged(f->path, before, n0);
        expect_keys(s, 0, 5);
        assert_int_equal(simdr_count(s), 5);
    }
    uint64_t tail = 0;
    assert_int_equal(simdr_put(s, TU_STR("next"), TU_STR("indexed right"), &tail), SIMDR_OK);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("next"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), size);
    assert_int_equal(simdr_entry_end(e), tail);
    simdr_entry_release(e);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    expect_keys(s, 0, 5);
    tu_expect_str(s, "next", "indexed right");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(before);
    free(data);
    free(zeros);
}

/* 6. A source read error fails the write; no truncated value is stored. */
static void hazard06_source_error_fails_write(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "k", "original");
    uint8_t data[100000];
    tu_fill(data, sizeof data, 6);
    src sr = {data, sizeof data, 0, 50000};
    assert_int_equal(simdr_put_stream(s, TU_STR("k"), src_read, &sr, NULL), SIMDR_ESOURCE);
    sr = (src){data, sizeof data, 0, 50000};
    assert_int_equal(simdr_put_stream(s, TU_STR("fresh"), src_read, &sr, NULL), SIMDR_ESOURCE);
    tu_expect_str(s, "k", "original");
    tu_expect_absent(s, TU_STR("fresh"));
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(s, "k", "original");
    tu_expect_absent(s, TU_STR("fresh"));
    assert_int_equal(simdr_count(s), 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 7. An empty streamed value is refused; nothing is lost on reopen. */
static void hazard07_empty_stream_refused(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 10);
    uint64_t size = simdr_file_size(s);
    src sr = {(const uint8_t *)"", 0, 0, -1};
    assert_int_equal(simdr_put_stream(s, TU_STR("empty"), src_read, &sr, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_put_stream_hashed(s, 7, src_read, &sr, NULL), SIMDR_EINVAL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[1]);
    assert_int_equal(simdr_put_fd(s, TU_STR("empty"), p[0], NULL), SIMDR_EINVAL);
    close(p[0]);
    assert_int_equal(simdr_file_size(s), size);
    write_keys(s, 10, 12);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    expect_keys(s, 0, 12);
    tu_expect_absent(s, TU_STR("empty"));
    assert_int_equal(simdr_count(s), 12);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 8. One rule everywhere: the lone 0x00 is refused on every write path,
 *    zero-only streams are refused, and [0x00 0x00] (accepted by put) goes
 *    through rename, copy, move and compaction intact. */
static void hazard08_zero_only_values_refused_everywhere(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "keep", "v");
    uint64_t size = simdr_file_size(s);
    const uint8_t z1[1] = {0};
    const uint8_t z2[2] = {0, 0};
    assert_int_equal(simdr_put(s, TU_STR("a"), z1, 1, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_put_hashed(s, 1, z1, 1, NULL), SIMDR_EINVAL);
    simdr_kv kv = {"a", 1, z1, 1};
    assert_int_equal(simdr_put_batch(s, &kv, 1, NULL), SIMDR_EINVAL);
    simdr_hashed_kv hkv = {1, z1, 1};
    assert_int_equal(simdr_put_batch_hashed(s, &hkv, 1, NULL), SIMDR_EINVAL);
    src sr = {z1, 1, 0, -1};
    assert_int_equal(simdr_put_stream(s, TU_STR("a"), src_read, &sr, NULL), SIMDR_EINVAL);
    sr = (src){z2, 2, 0, -1};
    assert_int_equal(simdr_put_stream(s, TU_STR("a"), src_read, &sr, NULL), SIMDR_EINVAL);
    sr = (src){z2, 2, 0, -1};
    assert_int_equal(simdr_put_stream_hashed(s, 1, src_read, &sr, NULL), SIMDR_EINVAL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], z2, 2), 2);
    close(p[1]);
    assert_int_equal(simdr_put_fd(s, TU_STR("a"), p[0], NULL), SIMDR_EINVAL);
    close(p[0]);
    assert_int_equal(simdr_file_size(s), size);
    assert_int_equal(simdr_count(s), 1);

    /* [0x00 0x00] through every path */
    assert_int_equal(simdr_put(s, TU_STR("zz"), z2, 2, NULL), SIMDR_OK);
    tu_expect_value(s, TU_STR("zz"), z2, 2);
    assert_int_equal(simdr_rename(s, TU_STR("zz"), TU_STR("zz2"), NULL), SIMDR_OK);
    tu_expect_value(s, TU_STR("zz2"), z2, 2);
    tu_expect_absent(s, TU_STR("zz"));
    char p2[4096];
    tu_join(p2, sizeof p2, f->dir, "other.bin");
    simdr_store *d = tu_open(p2, SIMDR_OPEN_CREATE, 0);
    assert_int_equal(simdr_copy(s, TU_STR("zz2"), d, NULL), SIMDR_OK);
    tu_expect_value(d, TU_STR("zz2"), z2, 2);
    assert_int_equal(simdr_delete(s, TU_STR("zz2"), NULL), SIMDR_OK);
    assert_int_equal(simdr_move(d, TU_STR("zz2"), s, NULL), SIMDR_OK);
    tu_expect_absent(d, TU_STR("zz2"));
    tu_expect_value(s, TU_STR("zz2"), z2, 2);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    tu_expect_value(s, TU_STR("zz2"), z2, 2);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(simdr_close(d), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_value(s, TU_STR("zz2"), z2, 2);
    tu_expect_str(s, "keep", "v");
    assert_int_equal(simdr_count(s), 2);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static int count_maps(void) {
    FILE *m = fopen("/proc/self/maps", "r");
    assert_non_null(m);
    int n = 0, c;
    while ((c = fgetc(m)) != EOF)
        n += c == '\n';
    fclose(m);
    return n;
}

/* 9. Writes do not remap per write: 70000 held handles cost no mappings and
 *    writes keep working. */
static void hazard09_many_handles_no_remap(void **state) {
    tu_fixture *f = *state;
    enum { NH = 70000 };
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 100);
    int maps0 = count_maps();
    simdr_entry **h = calloc(NH, sizeof *h);
    for (int i = 0; i < NH; i++) {
        char k[32];
        snprintf(k, sizeof k, "h%d", i % 100);
        assert_int_equal(simdr_get(s, TU_STR(k), &h[i]), SIMDR_OK);
        if (i % 7 == 0) {
            /* keep writing while the handles pile up */
            char v[32];
            snprintf(v, sizeof v, "w%d", i);
            tu_put_str(s, v, "a write among many handles");
        }
    }
    uint8_t big[8192];
    tu_fill(big, sizeof big, 9);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(simdr_put(s, TU_STR("big"), big, sizeof big, NULL), SIMDR_OK);
    int maps1 = count_maps();
    fprintf(stderr, "mappings: %d before, %d with %d handles\n", maps0, maps1, NH);
    assert_true(maps1 - maps0 < 64);
    for (int i = 0; i < NH; i++) {
        char v[64];
        int k = i % 100;
        snprintf(v, sizeof v, "value of h%d %.*s", k, k % 30, "==============================");
        assert_int_equal(simdr_entry_size(h[i]), strlen(v));
        assert_memory_equal(simdr_entry_data(h[i]), v, strlen(v));
        simdr_entry_release(h[i]);
    }
    free(h);
    tu_expect_value(s, TU_STR("big"), big, sizeof big);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 10. Durable mode: SIMDR_SYNC_DATA writes, explicit sync, close report OK
 *     and the data is there on reopen. */
static void hazard10_sync_mode(void **state) {
    tu_fixture *f = *state;
    simdr_options o;
    simdr_options_init(&o);
    o.durability = SIMDR_SYNC_DATA;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    write_keys(s, 0, 50);
    simdr_kv kv[2] = {{"b1", 2, "x", 1}, {"b2", 2, "y", 1}};
    assert_int_equal(simdr_put_batch(s, kv, 2, NULL), SIMDR_OK);
    assert_int_equal(simdr_delete(s, TU_STR("h0"), NULL), SIMDR_OK);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    expect_keys(s, 1, 50);
    tu_expect_absent(s, TU_STR("h0"));
    tu_expect_str(s, "b2", "y");
    /* explicit sync in the default mode */
    tu_put_str(s, "later", "z");
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 11. After compaction the same store writes into the new file (nothing lost
 *     on reopen), and a stale compaction file never resurrects deleted keys. */
static void hazard11_compaction_writes_survive_and_no_resurrection(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 40);
    /* a leftover from an earlier failed compaction holding every key */
    char stale[4096 + 16];
    snprintf(stale, sizeof stale, "%s.compact", f->path);
    tu_copy_file(f->path, stale);
    for (int i = 0; i < 40; i += 2) {
        char k[32];
        snprintf(k, sizeof k, "h%d", i);
        assert_int_equal(simdr_delete(s, TU_STR(k), NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    write_keys(s, 40, 60);
    assert_int_equal(simdr_delete(s, TU_STR("h41"), NULL), SIMDR_OK);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    write_keys(s, 60, 70);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    for (int i = 0; i < 70; i++) {
        char k[32];
        snprintf(k, sizeof k, "h%d", i);
        if ((i < 40 && i % 2 == 0) || i == 41)
            tu_expect_absent(s, TU_STR(k));
        else
            expect_keys(s, i, i + 1);
    }
    assert_int_equal(simdr_count(s), 70 - 20 - 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(stale), -1);
    assert_int_equal(tu_dir_count(f->dir), 1);
}

typedef struct gate {
    sem_t entered, release;
    uint8_t data[1000];
} gate;

static int64_t gated_read(void *ctx, void *buf, size_t cap) {
    gate *g = ctx;
    static _Thread_local int calls;
    if (calls++ == 0) {
        sem_post(&g->entered);
        sem_wait(&g->release);
    }
    if (calls > 1) {
        calls = 0;
        return 0;
    }
    size_t n = cap < sizeof g->data ? cap : sizeof g->data;
    memcpy(buf, g->data, n);
    return (int64_t)n;
}

typedef struct stream_job {
    simdr_store *s;
    gate *g;
    int rc;
} stream_job;

static void *stream_writer(void *p) {
    stream_job *j = p;
    j->rc = simdr_put_stream(j->s, TU_STR("h1"), gated_read, j->g, NULL);
    return NULL;
}

typedef struct rd {
    simdr_store *s;
    _Atomic int stop;
    _Atomic uint64_t reads, absent;
} rd;

static void *overwrite_reader(void *p) {
    rd *r = p;
    while (!atomic_load(&r->stop)) {
        for (int i = 0; i < 8; i++) {
            char k[32];
            snprintf(k, sizeof k, "h%d", i);
            if (simdr_exists(r->s, TU_STR(k)) != 1)
                atomic_fetch_add(&r->absent, 1);
            atomic_fetch_add(&r->reads, 1);
        }
    }
    return NULL;
}

/* 12. Readers never see a present key as absent while it is overwritten, and
 *     never wait for a writer (a stream write holding the writer stalls). */
static void hazard12_readers_never_see_present_key_absent(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 8);
    rd r = {.s = s};
    pthread_t rt[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&rt[i], NULL, overwrite_reader, &r), 0);
    for (int n = 0; n < 3000; n++) {
        char k[32], v[48];
        snprintf(k, sizeof k, "h%d", n % 8);
        snprintf(v, sizeof v, "overwrite %d", n);
        tu_put_str(s, k, v);
        if (n % 500 == 0)
            assert_int_equal(simdr_compact(s), SIMDR_OK);
    }
    /* a writer stalled inside a stream write: reads still complete */
    gate g;
    sem_init(&g.entered, 0, 0);
    sem_init(&g.release, 0, 0);
    memset(g.data, 'g', sizeof g.data);
    stream_job j = {s, &g, -1};
    pthread_t wt;
    assert_int_equal(pthread_create(&wt, NULL, stream_writer, &j), 0);
    sem_wait(&g.entered);
    uint64_t before = atomic_load(&r.reads);
    double t0 = now_s();
    while (atomic_load(&r.reads) < before + 1000 && now_s() - t0 < 20)
        usleep(1000);
    assert_true(atomic_load(&r.reads) >= before + 1000);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, TU_STR("h2"), &e), SIMDR_OK);
    simdr_entry_release(e);
    sem_post(&g.release);
    pthread_join(wt, NULL);
    assert_int_equal(j.rc, SIMDR_OK);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(rt[i], NULL);
    assert_int_equal(atomic_load(&r.absent), 0);
    tu_expect_value(s, TU_STR("h1"), g.data, sizeof g.data);
    sem_destroy(&g.entered);
    sem_destroy(&g.release);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

typedef struct cnt {
    uint64_t n;
} cnt;

static int count_cb(void *ctx, const simdr_entry *e) {
    (void)e;
    ((cnt *)ctx)->n++;
    return 0;
}

/* 13. Counts and deletes agree before and after reopen. */
static void hazard13_counts_agree_after_reopen(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    write_keys(s, 0, 30);
    for (int i = 0; i < 30; i += 3) {
        char k[32];
        snprintf(k, sizeof k, "h%d", i);
        assert_int_equal(simdr_delete(s, TU_STR(k), NULL), SIMDR_OK);
    }
    write_keys(s, 0, 1); /* h0 back */
    uint64_t count = simdr_count(s), savings = simdr_compaction_savings(s);
    assert_int_equal(count, 21);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(simdr_close(s), SIMDR_OK);
        s = tu_open(f->path, pass ? SIMDR_OPEN_READONLY : SIMDR_OPEN_EXISTING, 0);
        assert_int_equal(simdr_count(s), count);
        assert_int_equal(simdr_compaction_savings(s), savings);
        cnt c = {0};
        assert_int_equal(simdr_for_each(s, count_cb, &c), SIMDR_OK);
        assert_int_equal(c.n, count);
        uint64_t size = simdr_file_size(s);
        for (int i = 3; i < 30; i += 3) {
            char k[32];
            snprintf(k, sizeof k, "h%d", i);
            int rc = simdr_delete(s, TU_STR(k), NULL);
            assert_int_equal(rc, pass ? SIMDR_EREADONLY : SIMDR_NOTFOUND);
            assert_int_equal(simdr_exists(s, TU_STR(k)), 0);
        }
        assert_int_equal(simdr_file_size(s), size);
        assert_int_equal(simdr_count(s), count);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 14. Keys are identified by their 64-bit hash only: writing under the same
 *     hash replaces the value, whatever key produced it (documented rule). */
static void hazard14_hash_collision_documented(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "alice", "by key");
    uint64_t h = simdr_hash_key(TU_STR("alice"));
    assert_int_equal(simdr_put_hashed(s, h, TU_STR("by hash"), NULL), SIMDR_OK);
    tu_expect_str(s, "alice", "by hash");
    assert_int_equal(simdr_count(s), 1);
    simdr_hashed_kv kv = {h, "batch", 5};
    assert_int_equal(simdr_put_batch_hashed(s, &kv, 1, NULL), SIMDR_OK);
    tu_expect_str(s, "alice", "batch");
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get_hashed(s, h, &e), SIMDR_OK);
    assert_memory_equal(simdr_entry_data(e), "batch", 5);
    simdr_entry_release(e);
    /* distinct hashes stay distinct */
    tu_put_str(s, "bob", "other");
    assert_int_equal(simdr_count(s), 2);
    tu_expect_str(s, "alice", "batch");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* 15. A second writable open from another process is refused (lock);
 *     read-only opens from other processes work. */
static void hazard15_second_writer_process_locked(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "k", "parent");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        simdr_store *c = NULL;
        if (tu_open_status(&c, f->path, SIMDR_OPEN_EXISTING, 0) != SIMDR_ELOCKED || c)
            bad |= 1;
        if (tu_open_status(&c, f->path, SIMDR_OPEN_CREATE, 0) != SIMDR_ELOCKED || c)
            bad |= 2;
        if (tu_open_status(&c, f->path, SIMDR_OPEN_READONLY, 0) != SIMDR_OK) {
            bad |= 4;
        } else {
            char buf[16];
            size_t n = 0;
            if (simdr_get_copy(c, TU_STR("k"), buf, sizeof buf, &n) != SIMDR_OK || n != 6 ||
                memcmp(buf, "parent", 6) != 0)
                bad |= 8;
            simdr_close(c);
        }
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* the refused opens changed nothing */
    tu_expect_str(s, "k", "parent");
    tu_put_str(s, "k2", "still writing");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    /* once closed, another process can write */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        simdr_store *c = NULL;
        int bad = tu_open_status(&c, f->path, SIMDR_OPEN_EXISTING, 0) != SIMDR_OK;
        if (!bad)
            bad = simdr_put(c, TU_STR("child"), TU_STR("wrote"), NULL) != SIMDR_OK;
        simdr_close(c);
        _exit(bad);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    s = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(s, "child", "wrote");
    tu_expect_str(s, "k2", "still writing");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(hazard01_zero_filled_torn_tail_not_taken_as_first_entry),
        TU_TEST_DIR(hazard02_damaged_prev_offset_reported_not_truncated),
        TU_TEST_DIR(hazard02_damaged_prev_offset_in_place_reported),
        TU_TEST_DIR(hazard03_non_store_file_never_cut),
        TU_TEST_DIR(hazard04_torn_payload_crc_checked),
        TU_TEST_DIR(hazard05_failed_stream_leaves_store_unchanged),
        TU_TEST_DIR(hazard06_source_error_fails_write),
        TU_TEST_DIR(hazard07_empty_stream_refused),
        TU_TEST_DIR(hazard08_zero_only_values_refused_everywhere),
        TU_TEST_DIR(hazard09_many_handles_no_remap),
        TU_TEST_DIR(hazard10_sync_mode),
        TU_TEST_DIR(hazard11_compaction_writes_survive_and_no_resurrection),
        TU_TEST_DIR(hazard12_readers_never_see_present_key_absent),
        TU_TEST_DIR(hazard13_counts_agree_after_reopen),
        TU_TEST_DIR(hazard14_hash_collision_documented),
        TU_TEST_DIR(hazard15_second_writer_process_locked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
