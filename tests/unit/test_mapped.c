/*
 * test_mapped.c - unit tests of mapped appends (SIMDR_APPEND_MAPPED): writes
 * across the preallocation steps, the file cut back to its tail by
 * simdr_sync, simdr_close and compaction, a writer killed with SIGKILL in
 * the middle of its puts, a full disk (the file size limit, and failed
 * preallocation through the fault-injection table), a file system without
 * fallocate, read-only handles reading while the writer appends, and what
 * an open with repair 0 does after a crash (a tail of zeros only is cut, a
 * tail with another byte refused, zeros in the middle of the chain refused).
 */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"

/* The growth step for a small store (src/mapped.c, MIN_STEP). */
#define STEP (UINT64_C(1) << 20)

static simdr_store *open_mapped(const char *path, int layout) {
    simdr_options o;
    simdr_options_init(&o);
    o.layout = layout;
    o.append_mode = SIMDR_APPEND_MAPPED;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s (%s)\n", simdr_strerror(rc), simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

static void key_of(char *k, size_t cap, unsigned i) { snprintf(k, cap, "key-%u", i); }

static size_t value_of(uint8_t *buf, unsigned i, size_t len) {
    tu_fill(buf, len, 0x9e37u * (i + 1));
    return len;
}

static void expect_key(simdr_store *s, unsigned i, size_t len) {
    static uint8_t want[400000];
    char k[32];
    key_of(k, sizeof k, i);
    value_of(want, i, len);
    tu_expect_value(s, TU_STR(k), want, len);
}

static void expect_exact_length(const char *path, simdr_store *s) {
    assert_int_equal(tu_file_size(path), (int64_t)simdr_file_size(s));
}

/* Value sizes sweep so that entries start and end at every distance from
 * the step boundaries; puts, batches, deletes and a stream all cross them.
 * The file is longer than the tail while open (preallocated) and exactly as
 * long after close; everything reads back before and after reopening. */
static int64_t stream_source(void *ctx, void *buf, size_t cap) {
    size_t *left = ctx;
    size_t n = *left < cap ? *left : cap;
    memset(buf, 0x6b, n);
    *left -= n;
    return (int64_t)n;
}

static void test_growth_across_steps(void **state) {
    tu_fixture *f = *state;
    for (int layout = 0; layout < 2; layout++) {
        unlink(f->path);
        simdr_store *s = open_mapped(f->path, layout);
        static uint8_t v[400000];
        enum { N = 160 };
        size_t lens[N];
        uint64_t seed = tu_seed(11);
        unsigned steps = 0;
        int64_t last_size = tu_file_size(f->path);
        for (unsigned i = 0; i < N; i++) {
            lens[i] = i % 7 == 0 ? 1 + (size_t)(tu_rand(&seed) % 64)
                                 : 1000 + (size_t)(tu_rand(&seed) % 300000);
            char k[32];
            key_of(k, sizeof k, i);
            value_of(v, i, lens[i]);
            uint64_t tail = 0;
            assert_int_equal(simdr_put(s, TU_STR(k), v, lens[i], &tail), SIMDR_OK);
            assert_int_equal(tail, simdr_file_size(s));
            /* Preallocated: the file reaches past the tail, by at most a step
             * (an eighth of the file past 8 MiB) and a MiB. */
            int64_t size = tu_file_size(f->path);
            if (size != last_size) steps++;
            last_size = size;
            assert_true(size >= (int64_t)tail);
            uint64_t step = tail / 8 > STEP ? tail / 8 : STEP;
            assert_true(size <= (int64_t)(tail + step + (UINT64_C(1) << 20) + lens[i]));
            expect_key(s, i, lens[i]);
        }
        assert_true(steps >= 3);
        /* A batch that straddles the next boundary. */
        simdr_kv kv[8];
        static uint8_t bv[8][200000];
        char bk[8][32];
        for (unsigned j = 0; j < 8; j++) {
            key_of(bk[j], sizeof bk[j], N + j);
            value_of(bv[j], N + j, sizeof bv[j]);
            kv[j] = (simdr_kv){bk[j], strlen(bk[j]), bv[j], sizeof bv[j]};
        }
        assert_int_equal(simdr_put_batch(s, kv, 8, NULL), SIMDR_OK);
        /* A stream (pwrite) between mapped writes, then a delete. */
        size_t left = 3000000;
        assert_int_equal(simdr_put_stream(s, TU_STR("streamed"), stream_source, &left, NULL),
                         SIMDR_OK);
        char k0[32];
        key_of(k0, sizeof k0, 0);
        assert_int_equal(simdr_delete(s, TU_STR(k0), NULL), SIMDR_OK);
        tu_put_str(s, "after-stream", "mapped again");
        uint64_t tail = simdr_file_size(s);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        assert_int_equal(tu_file_size(f->path), (int64_t)tail);

        s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.bytes_cut, 0);
        assert_int_equal(simdr_file_size(s), tail);
        assert_int_equal(simdr_layout_of(s), layout);
        tu_expect_absent(s, TU_STR(k0));
        for (unsigned i = 1; i < N; i++) expect_key(s, i, lens[i]);
        for (unsigned j = 0; j < 8; j++) expect_key(s, N + j, sizeof bv[j]);
        tu_expect_str(s, "after-stream", "mapped again");
        simdr_check_report rep;
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

/* simdr_sync cuts the preallocated zeros; the next put preallocates again;
 * compaction leaves the new file exact; close cuts again. */
static void test_trim_on_sync_compact_close(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_mapped(f->path, SIMDR_LAYOUT_ALIGNED64);
    tu_put_str(s, "a", "1");
    tu_put_str(s, "b", "2");
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(s));
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    expect_exact_length(f->path, s);
    /* A sync with nothing new still leaves the file exact. */
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    expect_exact_length(f->path, s);
    tu_put_str(s, "a", "3");
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(s));
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    expect_exact_length(f->path, s);
    tu_put_str(s, "c", "4");
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(s));
    tu_expect_str(s, "a", "3");
    tu_expect_str(s, "b", "2");
    tu_expect_str(s, "c", "4");
    uint64_t tail = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 3);
    tu_expect_str(s, "a", "3");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A child puts through the map and reports each acknowledged put over a
 * pipe; after `acked` of them the parent kills it (it keeps putting). The
 * reopened store holds every acknowledged put, the zeros are cut without
 * being saved, and nothing is reported damaged. keep_side: 0 also removes
 * the side file first, so the whole file is recovered. */
static void kill_mid_puts(tu_fixture *f, unsigned acked, int keep_side) {
    unlink(f->path);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = SIMDR_APPEND_MAPPED;
        simdr_store *s = NULL;
        if (simdr_open(&s, f->path, &o) != SIMDR_OK) _exit(2);
        static uint8_t v[3000];
        for (unsigned i = 0;; i++) {
            char k[32];
            key_of(k, sizeof k, i % 5000);
            size_t len = value_of(v, i % 5000, 1 + (i * 37) % sizeof v);
            if (simdr_put(s, TU_STR(k), v, len, NULL) != SIMDR_OK) _exit(3);
            if (i < acked && write(pfd[1], &i, sizeof i) != (ssize_t)sizeof i) _exit(4);
        }
    }
    close(pfd[1]);
    unsigned got = 0, last = 0;
    while (got < acked) {
        ssize_t r = read(pfd[0], &last, sizeof last);
        if (r < 0 && errno == EINTR) continue;
        assert_int_equal(r, (ssize_t)sizeof last);
        assert_int_equal(last, got);
        got++;
    }
    tu_kill9(pid);
    close(pfd[0]);
    int64_t killed_size = tu_file_size(f->path);
    if (!keep_side) {
        char side[4200];
        snprintf(side, sizeof side, "%s.simdr", f->path);
        assert_int_equal(unlink(side), 0);
    }

    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.file_size, (uint64_t)killed_size);
    assert_true(ri.valid_size < ri.file_size); /* the preallocated zeros */
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(tu_file_size(f->path), (int64_t)ri.valid_size);
    /* At most the entry in flight is saved, and zeros after it only when
     * fewer than 128 KiB of them were left (src/torn.c). */
    if (ri.saved_path[0])
        assert_true(tu_file_size(ri.saved_path) <= (int64_t)((128u << 10) + 3000 + 64 + 20));
    for (unsigned i = 0; i < acked && i < 5000; i++) {
        /* Every acknowledged key is there, holding the bytes its puts
         * write (their length depends on which put came last). */
        char k[32];
        key_of(k, sizeof k, i);
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR(k), &e), SIMDR_OK);
        static uint8_t want[3000];
        size_t len = (size_t)simdr_entry_size(e);
        assert_true(len >= 1 && len <= sizeof want);
        value_of(want, i, len);
        assert_memory_equal(simdr_entry_data(e), want, len);
        simdr_entry_release(e);
    }
    simdr_check_report rep;
    assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
    assert_int_equal(rep.bad_entries, 0);
    tu_put_str(s, "after", "kill");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(s, "after", "kill");
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void test_reopen_after_kill(void **state) {
    tu_fixture *f = *state;
    kill_mid_puts(f, 3000, 1);
    kill_mid_puts(f, 1, 1);
}

static void test_reopen_after_kill_without_side_file(void **state) {
    tu_fixture *f = *state;
    kill_mid_puts(f, 2000, 0);
}

/* ---- repair = 0 after a crash: a tail of zeros only is cut ---- */

/* A child opens path (mapped appends or pwrite), puts keys 0..n-1
 * (value_of, lengths 1 + (i * 37) % 3000), says so over a pipe and waits to
 * be killed (with sync_at > 0, simdr_sync after that many puts and after
 * one more): the SIGKILL lands between puts, so the file ends with the
 * committed entries and, in mapped mode, the preallocated zeros. */
static size_t killed_len(unsigned i) { return 1 + (i * 37) % 3000; }

static void kill_after_puts(const char *path, unsigned n, int mode, unsigned sync_at) {
    unlink(path);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = mode;
        simdr_store *s = NULL;
        if (simdr_open(&s, path, &o) != SIMDR_OK) _exit(2);
        static uint8_t v[3000];
        for (unsigned i = 0; i < n; i++) {
            char k[32];
            key_of(k, sizeof k, i);
            if (simdr_put(s, TU_STR(k), v, value_of(v, i, killed_len(i)), NULL) != SIMDR_OK)
                _exit(3);
            /* Two syncs: the second makes the first one's tail the side
             * file's durable record (one-flush syncs name it one sync late). */
            if (sync_at && (i + 1 == sync_at || i == sync_at) && simdr_sync(s) != SIMDR_OK)
                _exit(5);
        }
        char done = 1;
        if (write(pfd[1], &done, 1) != 1) _exit(4);
        for (;;) pause();
    }
    close(pfd[1]);
    char done = 0;
    ssize_t r;
    do r = read(pfd[0], &done, 1);
    while (r < 0 && errno == EINTR);
    assert_int_equal(r, 1);
    tu_kill9(pid);
    close(pfd[0]);
}

static int open_repair(simdr_store **s, const char *path, int repair) {
    simdr_options o;
    simdr_options_init(&o);
    o.repair = repair;
    o.append_mode = SIMDR_APPEND_MAPPED;
    *s = NULL;
    return simdr_open(s, path, &o);
}

static void expect_killed_keys(simdr_store *s, unsigned n) {
    assert_int_equal(simdr_count(s), n);
    for (unsigned i = 0; i < n; i++) expect_key(s, i, killed_len(i));
    simdr_check_report rep;
    assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
    assert_int_equal(rep.bad_entries, 0);
    assert_int_equal(rep.entries, n);
}

/* The end of the entries of a killed store, read by a read-only open (which
 * changes nothing). */
static uint64_t valid_end(const char *path) {
    simdr_store *r = tu_open(path, SIMDR_OPEN_READONLY, 0);
    uint64_t end = simdr_file_size(r);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    return end;
}

/* A killed mapped writer leaves its preallocated zeros; an open with
 * repair 0 cuts them (they hold no entry), reports them and saves nothing,
 * with the side file and with whole-file recovery alike. */
static void test_kill_then_open_without_repair(void **state) {
    tu_fixture *f = *state;
    static const unsigned counts[] = {1, 700};
    for (int keep_side = 1; keep_side >= 0; keep_side--)
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            unsigned n = counts[c];
            kill_after_puts(f->path, n, SIMDR_APPEND_MAPPED, 0);
            if (!keep_side) {
                char side[4200];
                snprintf(side, sizeof side, "%s.simdr", f->path);
                assert_int_equal(unlink(side), 0);
            }
            int64_t killed = tu_file_size(f->path);
            uint64_t end = valid_end(f->path);
            assert_true(end < (uint64_t)killed);
            simdr_store *s = NULL;
            int rc = open_repair(&s, f->path, 0);
            if (rc != SIMDR_OK) fprintf(stderr, "open: %s\n", simdr_last_error());
            assert_int_equal(rc, SIMDR_OK);
            simdr_recovery_info ri;
            assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
            assert_int_equal(ri.file_size, (uint64_t)killed);
            assert_int_equal(ri.valid_size, end);
            assert_int_equal(ri.bytes_cut, (uint64_t)killed - end);
            assert_int_equal(ri.truncated, 1);
            assert_string_equal(ri.saved_path, "");
            assert_int_equal(tu_dir_count(f->dir), 1); /* no <file>.torn-* */
            assert_int_equal(tu_file_size(f->path), (int64_t)end);
            expect_killed_keys(s, n);
            tu_put_str(s, "after", "kill");
            assert_int_equal(simdr_close(s), SIMDR_OK);
            assert_int_equal(open_repair(&s, f->path, 0), SIMDR_OK);
            assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
            assert_int_equal(ri.bytes_cut, 0);
            tu_expect_str(s, "after", "kill");
            assert_int_equal(simdr_close(s), SIMDR_OK);
        }
}

/* One non-zero byte among the zeros (first, middle or last byte of the
 * tail) could be data: repair 0 refuses the file, byte-identical; the
 * default repair cuts it and saves what it cut up to that byte. */
static void test_nonzero_byte_in_zero_tail_needs_repair(void **state) {
    tu_fixture *f = *state;
    kill_after_puts(f->path, 300, SIMDR_APPEND_MAPPED, 0);
    size_t len = 0;
    uint8_t *killed = tu_read_file(f->path, &len);
    assert_non_null(killed);
    uint64_t end = valid_end(f->path);
    assert_true(end + 3 < len);
    for (uint64_t i = end; i < len; i++) assert_int_equal(killed[i], 0);
    const uint64_t at[] = {end, end + (len - end) / 2, len - 1};
    for (size_t j = 0; j < sizeof at / sizeof at[0]; j++) {
        tu_write_file(f->path, killed, len);
        uint8_t one = 0x5a;
        tu_patch_file(f->path, at[j], &one, 1);
        simdr_store *s = NULL;
        assert_int_equal(open_repair(&s, f->path, 0), SIMDR_ECORRUPT);
        assert_null(s);
        size_t now_len = 0;
        uint8_t *now = tu_read_file(f->path, &now_len);
        assert_int_equal(now_len, len);
        assert_memory_equal(now, killed, at[j]);
        assert_int_equal(now[at[j]], 0x5a);
        free(now);
        assert_int_equal(tu_dir_count(f->dir), 1);
        assert_int_equal(open_repair(&s, f->path, 1), SIMDR_OK);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.valid_size, end);
        assert_int_equal(ri.bytes_cut, len - end);
        assert_true(ri.saved_path[0] != '\0');
        /* Saved up to the byte, or whole when fewer than 128 KiB of zeros
         * follow it (src/torn.c). */
        int64_t saved = tu_file_size(ri.saved_path);
        uint64_t upto = at[j] + 1 - end;
        assert_true(saved == (int64_t)upto ||
                    (saved == (int64_t)(len - end) && len - at[j] - 1 < (128u << 10)));
        assert_int_equal(unlink(ri.saved_path), 0);
        expect_killed_keys(s, 300);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    free(killed);
}

/* Zeros where entries were, in the middle of the chain, are damage and not
 * a tail, also with zeros after the entries that follow them, and so are
 * synced entries zeroed up to the end of the file. Repair 0
 * always refuses the file, byte-identical. Where the zeroed entries were
 * synced (the side file's durable record is past them), or no side file
 * says what was synced (whole-file recovery), the default repair refuses it
 * too; past the durable record (bytes a power cut may have torn) it cuts
 * back to that record and saves every non-zero byte it cut. Mapped (killed)
 * and pwrite (killed, with a length ahead of its data) stores. */
static void test_zero_run_in_middle_refused(void **state) {
    tu_fixture *f = *state;
    enum { SYNCED, SYNCED_ZEROED_TO_END, NO_SIDE_FILE, UNSYNCED };
    for (int mode = 0; mode < 2; mode++)
        for (int how = SYNCED; how <= UNSYNCED; how++) {
            kill_after_puts(f->path, 200, mode, how <= SYNCED_ZEROED_TO_END ? 150 : 0);
            if (mode == SIMDR_APPEND_WRITE) {
                static const uint8_t zeros[8192];
                tu_append_file(f->path, zeros, sizeof zeros);
            }
            if (how == NO_SIDE_FILE) {
                char side[4200];
                snprintf(side, sizeof side, "%s.simdr", f->path);
                assert_int_equal(unlink(side), 0);
            }
            uint64_t end = valid_end(f->path);
            size_t len = 0;
            uint8_t *img = tu_read_file(f->path, &len);
            assert_non_null(img);
            /* Ten entries' worth of bytes well before the end (and before
             * the 150th put) read as zeros. */
            uint64_t from = end / 3, to = end / 3 + 10 * 1600;
            assert_true(to + 3000 < end);
            /* Or everything from there on: synced entries lost to zeros
             * that end the file are damage too, never a zero tail to cut. */
            if (how == SYNCED_ZEROED_TO_END) to = len;
            memset(img + from, 0, to - from);
            tu_write_file(f->path, img, len);
            for (int repair = 0; repair < 2; repair++) {
                simdr_store *s = NULL;
                int rc = open_repair(&s, f->path, repair);
                if (rc == SIMDR_OK && repair && how == UNSYNCED) {
                    simdr_recovery_info ri;
                    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
                    assert_true(ri.valid_size <= from);
                    int64_t saved_len = tu_file_size(ri.saved_path);
                    assert_true(saved_len > 0 && (uint64_t)saved_len <= ri.bytes_cut);
                    uint8_t *saved = tu_read_file(ri.saved_path, &(size_t){0});
                    assert_memory_equal(saved, img + ri.valid_size, (size_t)saved_len);
                    for (size_t i = ri.valid_size + (size_t)saved_len; i < len; i++)
                        assert_int_equal(img[i], 0);
                    free(saved);
                    assert_int_equal(unlink(ri.saved_path), 0);
                    assert_int_equal(simdr_close(s), SIMDR_OK);
                    continue;
                }
                if (rc != SIMDR_ECORRUPT)
                    fprintf(stderr, "store %d, case %d, repair %d: %s\n", mode, how, repair,
                            simdr_strerror(rc));
                assert_int_equal(rc, SIMDR_ECORRUPT);
                size_t now_len = 0;
                uint8_t *now = tu_read_file(f->path, &now_len);
                assert_int_equal(now_len, len);
                assert_memory_equal(now, img, len);
                free(now);
                assert_int_equal(tu_dir_count(f->dir), 1);
            }
            free(img);
        }
}

/* pwrite appends after a power cut: the file's length reached the disk
 * before its last blocks, which read as zeros. Fewer than 128 KiB of them,
 * so before they were saved beside the file; repair 0 refused the store. */
static void test_pwrite_zero_tail_cut_without_repair(void **state) {
    tu_fixture *f = *state;
    kill_after_puts(f->path, 100, SIMDR_APPEND_WRITE, 0);
    uint64_t end = (uint64_t)tu_file_size(f->path);
    static const uint8_t zeros[4096 + 17];
    tu_append_file(f->path, zeros, sizeof zeros);
    for (int repair = 0; repair < 2; repair++) {
        if (repair) tu_append_file(f->path, zeros, sizeof zeros);
        simdr_store *s = NULL;
        assert_int_equal(open_repair(&s, f->path, repair), SIMDR_OK);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.valid_size, end);
        assert_int_equal(ri.bytes_cut, sizeof zeros);
        assert_int_equal(ri.truncated, 1);
        assert_string_equal(ri.saved_path, "");
        assert_int_equal(tu_dir_count(f->dir), 1);
        assert_int_equal(tu_file_size(f->path), (int64_t)end);
        expect_killed_keys(s, 100);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        end = (uint64_t)tu_file_size(f->path);
    }
}

/* Under RLIMIT_FSIZE (SIGXFSZ at its default, which would kill the
 * process): growth stops at the limit, a write past it is SIMDR_ENOSPC with
 * nothing stored, what fits still goes in. Runs in a child. */
static int writes_under_limit(void *arg) {
    const char *path = arg;
    signal(SIGXFSZ, SIG_DFL);
    struct rlimit rl = {.rlim_cur = 3u << 20, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 2;
    simdr_store *s = open_mapped(path, SIMDR_LAYOUT_ALIGNED64);
    static uint8_t v[200000];
    int rc = SIMDR_OK, stored = 0;
    for (unsigned i = 0; i < 100 && rc == SIMDR_OK; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        value_of(v, i, sizeof v);
        rc = simdr_put(s, TU_STR(k), v, sizeof v, NULL);
        if (rc == SIMDR_OK) stored++;
    }
    int bad = rc != SIMDR_ENOSPC;
    bad += stored != 15; /* 15 x 200,084 bytes fit in 3 MiB, 16 do not */
    uint64_t tail = simdr_file_size(s);
    bad += tu_file_size(path) > (int64_t)(3u << 20);
    bad += simdr_put(s, TU_STR("small"), "x", 1, NULL) != SIMDR_OK;
    bad += simdr_file_size(s) <= tail;
    bad += simdr_count(s) != 16;
    bad += simdr_close(s) != SIMDR_OK;
    bad += tu_file_size(path) != (int64_t)(tail + 64 - tail % 64 + 1 + 20);
    if (bad) fprintf(stderr, "child: stored %d, rc %d, %d failed checks\n", stored, rc, bad);
    return bad ? 1 : 0;
}

static void test_file_size_limit_is_enospc(void **state) {
    tu_fixture *f = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(writes_under_limit(f->path));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) fprintf(stderr, "child died of signal %d\n", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 16);
    tu_expect_str(s, "small", "x");
    expect_key(s, 14, 200000);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A full disk at a growth step: the first try (a whole step) and the
 * fallback (the write alone) fail; the write is SIMDR_ENOSPC, the store and
 * file as before; once space is back the write goes in. */
static void test_failed_preallocation_is_enospc(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_mapped(f->path, SIMDR_LAYOUT_ALIGNED64);
    static uint8_t v[100000];
    unsigned i = 0;
    /* Up to the first step's end: the next put needs a growth step. */
    for (; (simdr_file_size(s) + 63) / 64 * 64 + sizeof v + 20 <= STEP; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        value_of(v, i, sizeof v);
        assert_int_equal(simdr_put(s, TU_STR(k), v, sizeof v, NULL), SIMDR_OK);
    }
    uint64_t tail = simdr_file_size(s), count = simdr_count(s);
    int64_t size = tu_file_size(f->path);
    simdr__io_fault fault = {.op = SIMDR__IO_FALLOCATE, .nth = 1, .count = 0, .err = ENOSPC};
    simdr__io_fault_arm(&fault);
    char k[32];
    key_of(k, sizeof k, i);
    value_of(v, i, sizeof v);
    assert_int_equal(simdr_put(s, TU_STR(k), v, sizeof v, NULL), SIMDR_ENOSPC);
    simdr_kv kv[2] = {{"x", 1, v, sizeof v}, {"y", 1, v, sizeof v}};
    assert_int_equal(simdr_put_batch(s, kv, 2, NULL), SIMDR_ENOSPC);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FALLOCATE), 4);
    simdr__io_reset();
    assert_int_equal(simdr_file_size(s), tail);
    assert_int_equal(simdr_count(s), count);
    assert_int_equal(tu_file_size(f->path), size);
    tu_expect_absent(s, TU_STR(k));
    assert_int_equal(simdr_put(s, TU_STR(k), v, sizeof v, NULL), SIMDR_OK);
    expect_key(s, i, sizeof v);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), count + 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Without fallocate (EOPNOTSUPP) the store writes with pwrite: the file is
 * never longer than its tail, and nothing is lost. */
static void test_no_fallocate_falls_back_to_pwrite(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_mapped(f->path, SIMDR_LAYOUT_ALIGNED64);
    simdr__io_fault fault = {.op = SIMDR__IO_FALLOCATE, .nth = 1, .count = 0, .err = EOPNOTSUPP};
    simdr__io_fault_arm(&fault);
    for (unsigned i = 0; i < 100; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        tu_put_str(s, k, "value");
        expect_exact_length(f->path, s);
    }
    assert_int_equal(simdr__io_hits(SIMDR__IO_FALLOCATE), 1);
    simdr__io_reset();
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 100);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* A read-only handle opened while the writer appends through the map: it
 * sees the committed entries, counts none of the zeros as torn, never
 * changes the file, and picks up later puts with simdr_refresh. */
static void test_readonly_open_during_mapped_writes(void **state) {
    tu_fixture *f = *state;
    simdr_store *w = open_mapped(f->path, SIMDR_LAYOUT_ALIGNED64);
    static uint8_t v[5000];
    for (unsigned i = 0; i < 300; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        assert_int_equal(simdr_put(w, TU_STR(k), v, value_of(v, i, 1 + i * 13), NULL), SIMDR_OK);
    }
    int64_t size = tu_file_size(f->path);
    assert_true(size > (int64_t)simdr_file_size(w));
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, simdr_file_size(w));
    assert_int_equal(ri.bytes_cut, 0);
    assert_int_equal(ri.truncated, 0);
    assert_int_equal(simdr_count(r), 300);
    for (unsigned i = 0; i < 300; i++) expect_key(r, i, 1 + i * 13);
    assert_int_equal(simdr_check(r, NULL, NULL, NULL), SIMDR_OK);
    for (unsigned i = 300; i < 600; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        assert_int_equal(simdr_put(w, TU_STR(k), v, value_of(v, i, 1 + i * 7), NULL), SIMDR_OK);
    }
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 300);
    for (unsigned i = 300; i < 600; i++) expect_key(r, i, 1 + i * 7);
    assert_int_equal(simdr_file_size(r), simdr_file_size(w));
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(w));
    /* The writer's sync cuts the zeros under the reader: it reads on. */
    assert_int_equal(simdr_sync(w), SIMDR_OK);
    expect_exact_length(f->path, w);
    tu_put_str(w, "late", "entry");
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 1);
    tu_expect_str(r, "late", "entry");
    for (unsigned i = 0; i < 600; i += 50) expect_key(r, i, i < 300 ? 1 + i * 13 : 1 + i * 7);
    assert_int_equal(simdr_close(w), SIMDR_OK);
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    tu_expect_str(r, "late", "entry");
    assert_int_equal(simdr_close(r), SIMDR_OK);
}

/* An unknown append mode is refused. */
static void test_bad_append_mode_refused(void **state) {
    tu_fixture *f = *state;
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = 7;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_EINVAL);
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_growth_across_steps),
        TU_TEST_DIR(test_trim_on_sync_compact_close),
        TU_TEST_DIR(test_reopen_after_kill),
        TU_TEST_DIR(test_reopen_after_kill_without_side_file),
        TU_TEST_DIR(test_kill_then_open_without_repair),
        TU_TEST_DIR(test_nonzero_byte_in_zero_tail_needs_repair),
        TU_TEST_DIR(test_zero_run_in_middle_refused),
        TU_TEST_DIR(test_pwrite_zero_tail_cut_without_repair),
        TU_TEST_DIR(test_file_size_limit_is_enospc),
        TU_TEST_DIR(test_failed_preallocation_is_enospc),
        TU_TEST_DIR(test_no_fallocate_falls_back_to_pwrite),
        TU_TEST_DIR(test_readonly_open_during_mapped_writes),
        TU_TEST_DIR(test_bad_append_mode_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
