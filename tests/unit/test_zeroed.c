/*
 * test_zeroed.c - unit tests of zeroed appends (SIMDR_APPEND_ZEROED): zeros
 * written ahead of the tail in steps once the store syncs in small groups
 * (none before the first sync, none while syncs cover more than 256 KiB),
 * kept by simdr_sync (whose fdatasync then changes no file length) and cut
 * by simdr_close and compaction; a
 * write longer than a step extending the file itself; a step of zeros that
 * cannot be written leaving the write to go on as a plain append; durable
 * writes; puts aimed at the zeros' end and a byte either side; a read-only
 * handle reading past the zeros; a writer killed with its
 * zeros ahead (a read-only open and simdr_check call the file sound, a
 * writable open cuts them unsaved); and simdr_set_append_mode moving a store
 * between the three modes. (The kill -9, torn-tail, process,
 * full-disk and power-cut suites run in this mode too: tests/crash, --zeroed;
 * and the fault sweep's "zeroed:" operations.)
 */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"

/* The smallest step of zeros (src/mapped.c, MIN_STEP). */
#define STEP (UINT64_C(1) << 20)

/* The file runs past the store's tail, and every byte past it is zero. */
static void expect_zeros_ahead(const char *path, simdr_store *s) {
    size_t len = 0;
    uint8_t *bytes = tu_read_file(path, &len);
    assert_non_null(bytes);
    uint64_t tail = simdr_file_size(s);
    assert_true(len > tail);
    for (size_t at = (size_t)tail; at < len; at++)
        if (bytes[at] != 0) fail_msg("byte %zu after the tail %llu is %u", at,
                                     (unsigned long long)tail, bytes[at]);
    free(bytes);
}

/* The file ends exactly at the store's tail. */
static void expect_exact(const char *path, simdr_store *s) {
    assert_int_equal(tu_file_size(path), (int64_t)simdr_file_size(s));
}

static simdr_store *open_zeroed(const char *path, int durability) {
    simdr_options o;
    simdr_options_init(&o);
    o.durability = durability;
    o.append_mode = SIMDR_APPEND_ZEROED;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s (%s)\n", simdr_strerror(rc), simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

/* A put and a sync: from then on the store writes zeros ahead. */
static simdr_store *open_zeroed_syncing(const char *path) {
    simdr_store *s = open_zeroed(path, SIMDR_SYNC_NONE);
    tu_put_str(s, "first", "sync");
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    expect_exact(path, s);
    return s;
}

static void key_of(char *k, size_t cap, unsigned i) { snprintf(k, cap, "key-%u", i); }

static size_t value_of(uint8_t *buf, unsigned i, size_t len) {
    tu_fill(buf, len, 0x5bd1u * (i + 1));
    return len;
}

static void put_numbered(simdr_store *s, unsigned i, size_t len) {
    static uint8_t v[4u << 20];
    char k[32];
    key_of(k, sizeof k, i);
    assert_true(len <= sizeof v);
    assert_int_equal(simdr_put(s, TU_STR(k), v, value_of(v, i, len), NULL), SIMDR_OK);
}

static void expect_numbered(simdr_store *s, unsigned i, size_t len) {
    static uint8_t want[4u << 20];
    char k[32];
    key_of(k, sizeof k, i);
    value_of(want, i, len);
    tu_expect_value(s, TU_STR(k), want, len);
}

/* Zeros ahead of the tail from the first put on, in whole steps; a sync
 * keeps them (the file's length does not change), a close cuts them, and
 * every entry reads back before and after. */
static void test_zeros_kept_by_sync_cut_by_close(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed(f->path, SIMDR_SYNC_NONE);
    /* Before the first sync: plain appends. */
    tu_put_str(s, "first", "sync");
    expect_exact(f->path, s);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    put_numbered(s, 0, 100);
    /* A whole step past the tail, up to a multiple of the step. */
    int64_t size = tu_file_size(f->path);
    assert_int_equal(size % (int64_t)STEP, 0);
    assert_true(size >= (int64_t)(simdr_file_size(s) + STEP - 200));
    assert_true(size <= (int64_t)(simdr_file_size(s) + 2 * STEP));
    expect_zeros_ahead(f->path, s);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), size);
    /* Puts across the first step's end: one more step of zeros. */
    unsigned n = 1;
    while (simdr_file_size(s) < STEP + 1000) put_numbered(s, n++, 3000);
    assert_true(tu_file_size(f->path) >= (int64_t)(2 * STEP));
    expect_zeros_ahead(f->path, s);
    int64_t grown = tu_file_size(f->path);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), grown);
    expect_numbered(s, 0, 100);
    for (unsigned i = 1; i < n; i++) expect_numbered(s, i, 3000);
    uint64_t tail = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    assert_int_equal(simdr_count(s), n + 1);
    for (unsigned i = 1; i < n; i += 37) expect_numbered(s, i, 3000);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A write longer than a step is written without zeros under it (the file
 * ends at its tail), and the next small write starts a new step. */
static void test_long_write_extends_the_file_itself(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed_syncing(f->path);
    put_numbered(s, 0, 10);
    put_numbered(s, 1, 3u << 20);
    expect_exact(f->path, s);
    put_numbered(s, 2, 10);
    assert_true(tu_file_size(f->path) >= (int64_t)(simdr_file_size(s) + STEP - 100));
    expect_zeros_ahead(f->path, s);
    expect_numbered(s, 0, 10);
    expect_numbered(s, 1, 3u << 20);
    expect_numbered(s, 2, 10);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* The step's zeros fail to be written (a full disk): the put goes on as a
 * plain append, the file ends at its tail, nothing is lost; the next put
 * writes a step again. */
static void test_failed_zeros_leave_a_plain_append(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed_syncing(f->path);
    /* The zeros go out as one pwritev, before the entry's own. */
    simdr__io_fault fault = {.op = SIMDR__IO_PWRITEV, .nth = 1, .count = 1, .err = ENOSPC};
    simdr__io_fault_arm(&fault);
    put_numbered(s, 0, 100);
    assert_int_equal(simdr__io_hits(SIMDR__IO_PWRITEV), 1);
    simdr__io_reset();
    expect_exact(f->path, s);
    expect_numbered(s, 0, 100);
    /* No space at all: the zeros and then the batch's own write fail, the
     * batch is refused, the file ends at its tail. */
    simdr__io_fault zeros = {.op = SIMDR__IO_PWRITEV, .nth = 1, .count = 0, .err = ENOSPC};
    simdr__io_fault entries = {.op = SIMDR__IO_PWRITE, .nth = 1, .count = 0, .err = ENOSPC};
    simdr__io_fault_arm(&zeros);
    simdr__io_fault_arm(&entries);
    simdr_kv kv[2] = {{"a", 1, "1", 1}, {"b", 1, "2", 1}};
    int rc = simdr_put_batch(s, kv, 2, NULL);
    uint64_t zero_tries = simdr__io_hits(SIMDR__IO_PWRITEV);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_ENOSPC);
    assert_int_equal(zero_tries, 1);
    expect_exact(f->path, s);
    tu_expect_absent(s, TU_STR("a"));
    put_numbered(s, 1, 100);
    expect_zeros_ahead(f->path, s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 3);
    expect_numbered(s, 0, 100);
    expect_numbered(s, 1, 100);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Durable writes (SIMDR_SYNC_DATA) and a compaction: the compacted file
 * ends at its tail, later puts write zeros again, a reopen finds all. */
static void test_durable_writes_and_compaction(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed(f->path, SIMDR_SYNC_DATA);
    for (unsigned i = 0; i < 200; i++) put_numbered(s, i % 50, 1 + i * 11);
    int64_t size = tu_file_size(f->path);
    assert_true(size > (int64_t)simdr_file_size(s));
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    expect_exact(f->path, s);
    put_numbered(s, 77, 500);
    expect_zeros_ahead(f->path, s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 51);
    for (unsigned i = 150; i < 200; i++) expect_numbered(s, i % 50, 1 + i * 11);
    expect_numbered(s, 77, 500);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A read-only handle opened beside the writer sees the entries, not the
 * zeros, and refreshes past later puts. */
static void test_readonly_reader_beside_zeros(void **state) {
    tu_fixture *f = *state;
    simdr_store *w = open_zeroed_syncing(f->path);
    for (unsigned i = 0; i < 100; i++) put_numbered(w, i, 1 + i * 17);
    assert_int_equal(simdr_sync(w), SIMDR_OK);
    expect_zeros_ahead(f->path, w);
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, simdr_file_size(w));
    assert_int_equal(ri.truncated, 0);
    assert_int_equal(simdr_count(r), 101);
    assert_int_equal(simdr_check(r, NULL, NULL, NULL), SIMDR_OK);
    for (unsigned i = 100; i < 200; i++) put_numbered(w, i, 1 + i * 17);
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 100);
    for (unsigned i = 0; i < 200; i += 7) expect_numbered(r, i, 1 + i * 17);
    assert_int_equal(simdr_close(w), SIMDR_OK);
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(simdr_count(r), 201);
    assert_int_equal(simdr_close(r), SIMDR_OK);
}

/* simdr_set_append_mode: leaving a mode with space ahead cuts it; entering
 * one starts it at the next write; setting the mode a store has changes
 * nothing; refused for unknown modes and
 * read-only stores; every entry survives each move. */
static void test_set_append_mode(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed_syncing(f->path);
    put_numbered(s, 0, 100);
    expect_zeros_ahead(f->path, s);
    assert_int_equal(simdr_set_append_mode(s, SIMDR_APPEND_WRITE), SIMDR_OK);
    expect_exact(f->path, s);
    put_numbered(s, 1, 100);
    expect_exact(f->path, s);
    assert_int_equal(simdr_set_append_mode(s, SIMDR_APPEND_MAPPED), SIMDR_OK);
    put_numbered(s, 2, 100);
    expect_zeros_ahead(f->path, s);
    assert_int_equal(simdr_set_append_mode(s, SIMDR_APPEND_ZEROED), SIMDR_OK);
    expect_exact(f->path, s);
    put_numbered(s, 3, 100);
    expect_zeros_ahead(f->path, s);
    /* The mode it has: not left, so its zeros stay. */
    int64_t ahead = tu_file_size(f->path);
    assert_int_equal(simdr_set_append_mode(s, SIMDR_APPEND_ZEROED), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), ahead);
    assert_int_equal(simdr_set_append_mode(s, 9), SIMDR_EINVAL);
    assert_int_equal(simdr_set_append_mode(NULL, SIMDR_APPEND_WRITE), SIMDR_EINVAL);
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_set_append_mode(r, SIMDR_APPEND_ZEROED), SIMDR_EREADONLY);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    for (unsigned i = 0; i < 4; i++) expect_numbered(s, i, 100);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 5);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Syncs that cover more than 256 KiB on average: no zeros (each byte would
 * be written twice to save one journal commit per sync); once they cover
 * little again, zeros again. */
static void test_no_zeros_while_syncs_are_large(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_zeroed(f->path, SIMDR_SYNC_NONE);
    unsigned i = 0;
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 10; k++) put_numbered(s, i++, 60000);
        expect_exact(f->path, s);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
    }
    /* Small syncs bring the average under the limit within a few dozen. */
    int zeros_seen = 0;
    for (int round = 0; round < 100 && !zeros_seen; round++) {
        put_numbered(s, i++, 100);
        zeros_seen = tu_file_size(f->path) > (int64_t)simdr_file_size(s);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
    }
    assert_true(zeros_seen);
    expect_zeros_ahead(f->path, s);
    for (unsigned k = 0; k < 200; k += 13) expect_numbered(s, k, 60000);
    uint64_t tail = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), i);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Puts aimed to end one byte before, exactly at and one byte past the
 * zeros' end, and one a step and a byte past it (a plain append, no zeros
 * under it), in both layouts: each reads back at once, the file is exact
 * or zeros ahead as the rule says, and a reopen finds every value sound. */
static void aim_at_the_zeros_end(const char *path, int layout) {
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_ZEROED;
    o.layout = layout;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, path, &o), SIMDR_OK);
    tu_put_str(s, "first", "sync");
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    static const int64_t aims[] = {-1, 0, 1, -1, (int64_t)STEP + 1};
    size_t lens[sizeof aims / sizeof aims[0]];
    unsigned fillers = 100;
    for (size_t a = 0; a < sizeof aims / sizeof aims[0]; a++) {
        /* Small puts until zeros lie ahead with room for an entry before
         * their end (the last aim may have ended the file). */
        do
            put_numbered(s, fillers++, 100);
        while (tu_file_size(path) - (int64_t)simdr_file_size(s) < 200);
        int64_t zeros_end = tu_file_size(path);
        uint64_t tail = simdr_file_size(s);
        uint64_t start = layout == SIMDR_LAYOUT_ALIGNED64 ? (tail + 63) / 64 * 64 : tail;
        /* the zeros' end as the file shows it, or a step past it */
        uint64_t end = (uint64_t)(zeros_end + aims[a]);
        if (aims[a] > 1) end = (uint64_t)zeros_end + STEP + 1;
        assert_true(end > start + 20);
        lens[a] = (size_t)(end - start - 20);
        put_numbered(s, 1 + (unsigned)a, lens[a]);
        assert_int_equal(simdr_file_size(s), end);
        expect_numbered(s, 1 + (unsigned)a, lens[a]);
        if (aims[a] < 0) expect_zeros_ahead(path, s);   /* inside the step */
        if (aims[a] == 0 || aims[a] > 1) expect_exact(path, s); /* at its end; a plain append */
        if (aims[a] == 1) expect_zeros_ahead(path, s);  /* one byte past: the next step */
    }
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(path, SIMDR_OPEN_EXISTING, 0);
    for (size_t a = 0; a < sizeof aims / sizeof aims[0]; a++)
        expect_numbered(s, 1 + (unsigned)a, lens[a]);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void test_entries_aimed_at_the_zeros_end(void **state) {
    tu_fixture *f = *state;
    aim_at_the_zeros_end(f->path, SIMDR_LAYOUT_ALIGNED64);
    char other[4200];
    snprintf(other, sizeof other, "%s.unaligned", f->path);
    aim_at_the_zeros_end(other, SIMDR_LAYOUT_UNALIGNED);
}

/* A zeroed writer (durable puts) killed in a child: a read-only open sees
 * every acknowledged put, reports the zeros it skipped as zeros_only, and
 * simdr_check finds the file sound; one non-zero byte among them is a torn
 * tail again (reported, and saved by the writable open that cuts it); the
 * writable open of the untouched file cuts the zeros without saving them. */
static void test_killed_writer_leaves_a_sound_file(void **state) {
    tu_fixture *f = *state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = SIMDR_APPEND_ZEROED;
        o.durability = SIMDR_SYNC_DATA;
        simdr_store *s = NULL;
        if (simdr_open(&s, f->path, &o) != SIMDR_OK) _exit(2);
        static uint8_t v[300];
        for (unsigned i = 0;; i++) {
            char k[32];
            key_of(k, sizeof k, i);
            if (simdr_put(s, TU_STR(k), v, value_of(v, i, 1 + i % sizeof v), NULL) != SIMDR_OK)
                _exit(3);
            if (write(pfd[1], &i, sizeof i) != (ssize_t)sizeof i) _exit(4);
        }
    }
    close(pfd[1]);
    unsigned acked = 0, got;
    while (acked < 300 && read(pfd[0], &got, sizeof got) == (ssize_t)sizeof got) acked = got + 1;
    tu_kill9(pid);
    close(pfd[0]);
    assert_true(acked >= 300);
    int64_t size = tu_file_size(f->path);

    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_true(ri.bytes_cut > 0);
    assert_int_equal(ri.zeros_only, 1);
    assert_int_equal(ri.truncated, 0);
    for (unsigned i = 0; i < acked; i += 7) expect_numbered(r, i, 1 + i % 300);
    simdr_check_report rep;
    assert_int_equal(simdr_check(r, NULL, NULL, &rep), SIMDR_OK);
    assert_int_equal(rep.bad_entries, 0);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), size);

    /* One byte that is not zero, in a copy: a torn tail like any other. */
    char copy[4200];
    snprintf(copy, sizeof copy, "%s.copy", f->path);
    tu_copy_file(f->path, copy);
    uint8_t x = 0x5a;
    tu_patch_file(copy, (uint64_t)size - 10, &x, 1);
    r = tu_open(copy, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_int_equal(ri.zeros_only, 0);
    assert_int_equal(simdr_check(r, NULL, NULL, &rep), SIMDR_ECORRUPT);
    assert_int_equal(rep.bad_entries, 1);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    simdr_store *w = tu_open(copy, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_recovery(w, &ri), SIMDR_OK);
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(ri.zeros_only, 0);
    assert_true(ri.saved_path[0] != '\0');
    assert_int_equal(simdr_close(w), SIMDR_OK);

    w = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_recovery(w, &ri), SIMDR_OK);
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(ri.zeros_only, 1);
    assert_string_equal(ri.saved_path, "");
    assert_true(simdr_count(w) >= acked);
    for (unsigned i = 0; i < acked; i += 5) expect_numbered(w, i, 1 + i % 300);
    assert_int_equal(simdr_check(w, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(w), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_zeros_kept_by_sync_cut_by_close),
        TU_TEST_DIR(test_long_write_extends_the_file_itself),
        TU_TEST_DIR(test_failed_zeros_leave_a_plain_append),
        TU_TEST_DIR(test_durable_writes_and_compaction),
        TU_TEST_DIR(test_readonly_reader_beside_zeros),
        TU_TEST_DIR(test_set_append_mode),
        TU_TEST_DIR(test_no_zeros_while_syncs_are_large),
        TU_TEST_DIR(test_entries_aimed_at_the_zeros_end),
        TU_TEST_DIR(test_killed_writer_leaves_a_sound_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
