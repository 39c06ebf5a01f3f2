/*
 * test_faults.c - unit tests of libsimdr under injected I/O faults, through
 * the system-call table of src/io.h: failed and short writes, failed syncs,
 * truncations, renames, opens and maps, calls interrupted by a signal
 * (retried), and code run between two calls.
 * Each test arms rules on the table and resets it in its teardown.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

static simdr_store *open_with(const char *path, int durability) {
    simdr_options o;
    simdr_options_init(&o);
    o.durability = durability;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s\n", simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

static int setup_with(void **state, int durability) {
    simdr__io_reset();
    tu_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_fixture_init(f, 0);
    f->s = open_with(f->path, durability);
    *state = f;
    return 0;
}
static int setup(void **state) { return setup_with(state, SIMDR_SYNC_NONE); }
static int setup_durable(void **state) { return setup_with(state, SIMDR_SYNC_DATA); }

static int teardown(void **state) {
    simdr__io_reset();
    return tu_teardown(state);
}

static void reopen(tu_fixture *f, int durability) {
    simdr__io_reset();
    simdr_close(f->s);
    f->s = open_with(f->path, durability);
}

/* ---- the seam itself ---- */

static void test_failed_write_leaves_store_unchanged(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    uint64_t size = simdr_file_size(f->s);
    simdr__io_fail_nth(SIMDR__IO_PWRITEV, 1, ENOSPC);
    assert_int_equal(simdr_put(f->s, TU_STR("b"), "2", 1, NULL), SIMDR_ENOSPC);
    assert_int_equal(simdr__io_hits(SIMDR__IO_PWRITEV), 1);
    tu_expect_absent(f->s, TU_STR("b"));
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    /* The rule hit once: the store goes on. */
    tu_put_str(f->s, "c", "3");
    /* A batch goes through pwrite. */
    simdr__io_fail_nth(SIMDR__IO_PWRITE, 1, EIO);
    simdr_kv kv[2] = {{"d", 1, "4", 1}, {"e", 1, "5", 1}};
    assert_int_equal(simdr_put_batch(f->s, kv, 2, NULL), SIMDR_EIO);
    tu_expect_absent(f->s, TU_STR("d"));
    tu_expect_absent(f->s, TU_STR("e"));
    /* A put and a delete in one batch are refused together: no rename
     * leaves both keys, or neither. */
    simdr__io_fail_nth(SIMDR__IO_PWRITE, 1, ENOSPC);
    simdr_kv move[2] = {{"moved", 5, "1", 1}, {"a", 1, NULL, 0}};
    assert_int_equal(simdr_write_batch(f->s, move, 2, NULL), SIMDR_ENOSPC);
    tu_expect_absent(f->s, TU_STR("moved"));
    tu_expect_str(f->s, "a", "1");
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("b"));
    tu_expect_str(f->s, "c", "3");
    tu_expect_absent(f->s, TU_STR("d"));
    tu_expect_absent(f->s, TU_STR("moved"));
    assert_int_equal(simdr_count(f->s), 2);
}

static void test_short_writes_are_completed(void **state) {
    tu_fixture *f = *state;
    /* Every write moves at most 7 bytes: the retry loops must finish them. */
    simdr__io_fault w = {.op = SIMDR__IO_PWRITE, .nth = 1, .count = 0, .short_len = 7};
    simdr__io_fault v = {.op = SIMDR__IO_PWRITEV, .nth = 1, .count = 0, .short_len = 7};
    simdr__io_fault_arm(&w);
    simdr__io_fault_arm(&v);
    uint8_t big[3000];
    tu_fill(big, sizeof big, 42);
    assert_int_equal(simdr_put(f->s, TU_STR("big"), big, sizeof big, NULL), SIMDR_OK);
    simdr_kv kv[2] = {{"x", 1, "hello", 5}, {"y", 1, big, 999}};
    assert_int_equal(simdr_put_batch(f->s, kv, 2, NULL), SIMDR_OK);
    assert_true(simdr__io_hits(SIMDR__IO_PWRITEV) > sizeof big / 7);
    assert_true(simdr__io_hits(SIMDR__IO_PWRITE) > 1000 / 7);
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_value(f->s, TU_STR("big"), big, sizeof big);
    tu_expect_str(f->s, "x", "hello");
    tu_expect_value(f->s, TU_STR("y"), big, 999);
}

typedef struct between_ctx {
    const char *path;
    int64_t size_seen;
} between_ctx;

static void note_file_size(void *ctx, enum simdr__io_op op) {
    between_ctx *c = ctx;
    (void)op;
    c->size_seen = tu_file_size(c->path);
}

static void test_code_runs_between_calls(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    int64_t after_first = tu_file_size(f->path);
    /* Before the second write from now: the first has landed, the second not. */
    between_ctx c = {f->path, -1};
    simdr__io_fault rule = {.op = SIMDR__IO_PWRITEV, .nth = 2, .count = 1,
                            .before = note_file_size, .ctx = &c};
    simdr__io_fault_arm(&rule);
    tu_put_str(f->s, "b", "2");
    int64_t after_second = tu_file_size(f->path);
    tu_put_str(f->s, "c", "3");
    assert_int_equal(simdr__io_hits(SIMDR__IO_PWRITEV), 1);
    assert_int_equal(c.size_seen, after_second);
    assert_true(after_second > after_first);
    assert_true(tu_file_size(f->path) > after_second);
}

static int select_anonymous(void *ctx, enum simdr__io_op op, int fd) {
    (void)ctx;
    (void)op;
    return fd == -1;
}

static int select_file_backed(void *ctx, enum simdr__io_op op, int fd) {
    (void)ctx;
    (void)op;
    return fd != -1;
}

static void test_open_and_map_faults(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_close(f->s);
    f->s = NULL;
    simdr_store *s = NULL;
    simdr__io_fail_nth(SIMDR__IO_OPEN, 1, EACCES);
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_EACCES);
    assert_null(s);
    /* The file maps (the store's and its side file's, not the anonymous
     * ones): without a side file map the open recovers in full; without the
     * store's map it fails. */
    simdr__io_fault maps = {.op = SIMDR__IO_MMAP, .nth = 1, .count = 0, .err = ENOMEM,
                            .select = select_file_backed};
    simdr__io_fault_arm(&maps);
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_ENOMEM);
    assert_null(s);
    simdr__io_reset();
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "a", "1");
}

static void test_compaction_faults_keep_the_store(void **state) {
    tu_fixture *f = *state;
    for (int i = 0; i < 20; i++) tu_put_str(f->s, "k", i % 2 ? "odd" : "even");
    tu_put_str(f->s, "other", "x");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.compact", f->path);
    int64_t size = tu_file_size(f->path);
    static const enum simdr__io_op ops[] = {SIMDR__IO_FSYNC, SIMDR__IO_RENAME, SIMDR__IO_OPEN};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        simdr__io_reset();
        simdr__io_fail_nth(ops[i], 1, EIO);
        assert_int_equal(simdr_compact(f->s), SIMDR_EIO);
        assert_int_equal(simdr__io_hits(ops[i]), 1);
        assert_int_equal(tu_file_size(f->path), size);
        assert_int_equal(tu_file_size(tmp), -1);
        tu_expect_str(f->s, "k", "odd");
        tu_expect_str(f->s, "other", "x");
    }
    simdr__io_reset();
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    assert_true(tu_file_size(f->path) < size);
    tu_put_str(f->s, "after", "y");
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_str(f->s, "k", "odd");
    tu_expect_str(f->s, "after", "y");
}

static void test_undo_that_fails_refuses_writes(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    /* The write fails, and the truncation that would undo whatever it
     * moved fails too: the store must refuse more writes. */
    simdr__io_fail_nth(SIMDR__IO_PWRITEV, 1, EIO);
    simdr__io_fail_nth(SIMDR__IO_FTRUNCATE, 1, EIO);
    assert_int_equal(simdr_put(f->s, TU_STR("b"), "2", 1, NULL), SIMDR_EIO);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FTRUNCATE), 1);
    assert_int_equal(simdr_put(f->s, TU_STR("c"), "3", 1, NULL), SIMDR_EFAILED);
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), NULL), SIMDR_EFAILED);
    tu_expect_str(f->s, "a", "1");
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("b"));
    tu_put_str(f->s, "c", "3");
}

/* The rename that switches a compaction's file in is durable only once
 * the directory is synced; until then a power cut may put the old file
 * back under the path, with none of the writes made to the new one. A
 * failed directory sync must therefore fail the store like a failed
 * fdatasync: no later durable write may be acknowledged on the handle. */
static void test_failed_directory_sync_after_compaction_is_final(void **state) {
    tu_fixture *f = *state;
    for (int i = 0; i < 10; i++) tu_put_str(f->s, "k", i % 2 ? "odd" : "even");
    tu_put_str(f->s, "other", "x");
    simdr__io_fail_nth(SIMDR__IO_FSYNC_DIR, 1, EIO);
    assert_int_equal(simdr_compact(f->s), SIMDR_EIO);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FSYNC_DIR), 1);
    assert_true(strstr(simdr_last_error(), "directory") != NULL);
    /* The handle stays on the old file (a power cut could bring it back)
     * and serves every key as it was. */
    tu_expect_str(f->s, "k", "odd");
    tu_expect_str(f->s, "other", "x");
    assert_int_equal(simdr_count(f->s), 2);
    /* Nothing later is acknowledged as durable. */
    assert_int_equal(simdr_put(f->s, TU_STR("after"), "y", 1, NULL), SIMDR_EFAILED);
    assert_int_equal(simdr_sync(f->s), SIMDR_EFAILED);
    assert_int_equal(simdr_compact(f->s), SIMDR_EFAILED);
    reopen(f, SIMDR_SYNC_DATA);
    tu_expect_str(f->s, "k", "odd");
    tu_expect_str(f->s, "other", "x");
    tu_expect_absent(f->s, TU_STR("after"));
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
    tu_put_str(f->s, "after", "y");
    tu_expect_str(f->s, "after", "y");
}

/* A repair saves the bytes it cuts "durably, before the cut": the saved
 * file's name too. When its directory cannot be synced the open fails and
 * leaves the store uncut (a power cut could otherwise keep the cut and lose
 * the copy). */
static void test_torn_tail_not_cut_unless_its_copy_is_durable(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    uint8_t junk[3000];
    tu_fill(junk, sizeof junk, 5);
    tu_append_file(f->path, junk, sizeof junk);
    int64_t size = tu_file_size(f->path);
    simdr__io_fail_nth(SIMDR__IO_FSYNC_DIR, 1, EIO);
    simdr_store *s = NULL;
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_EIO);
    assert_null(s);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FSYNC_DIR), 1);
    assert_int_equal(tu_file_size(f->path), size);
    /* Only the store file and the store's own beside files remain. */
    assert_int_equal(tu_dir_count(f->dir), 1);
    simdr__io_reset();
    f->s = open_with(f->path, SIMDR_SYNC_NONE);
    simdr_recovery_info info;
    assert_int_equal(simdr_recovery(f->s, &info), SIMDR_OK);
    assert_int_equal(info.truncated, 1);
    assert_true(info.saved_path[0] != '\0');
    assert_int_equal(tu_file_size(info.saved_path), (int64_t)sizeof junk);
    tu_expect_str(f->s, "a", "1");
}

/* A new store's name must be durable before a write to it is
 * acknowledged as durable (the side file beside it may already exist, and
 * then nothing else syncs the directory): an open that creates the file
 * syncs its directory, and fails, removing the file, when it cannot. */
static void test_new_store_is_named_durably(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    /* The store file is gone, its side file stays. */
    assert_int_equal(unlink(f->path), 0);
    simdr__io_fault count = {.op = SIMDR__IO_FSYNC_DIR, .nth = UINT64_MAX};
    simdr__io_fault_arm(&count);
    f->s = open_with(f->path, SIMDR_SYNC_DATA);
    assert_true(simdr__io_calls(SIMDR__IO_FSYNC_DIR) >= 1);
    tu_put_str(f->s, "b", "2");
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    assert_int_equal(unlink(f->path), 0);
    simdr__io_fail_nth(SIMDR__IO_FSYNC_DIR, 1, EIO);
    simdr_store *s = NULL;
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_CREATE, 0), SIMDR_EIO);
    assert_null(s);
    assert_int_equal(tu_file_size(f->path), -1);
    simdr__io_reset();
    f->s = open_with(f->path, SIMDR_SYNC_DATA);
    tu_expect_absent(f->s, TU_STR("a"));
    tu_put_str(f->s, "c", "3");
    tu_expect_str(f->s, "c", "3");
    /* A symbolic link to a file yet to be made still creates it. */
    char target[4200], link_path[4200];
    snprintf(target, sizeof target, "%s/target.bin", f->dir);
    snprintf(link_path, sizeof link_path, "%s/link.bin", f->dir);
    assert_int_equal(symlink(target, link_path), 0);
    simdr_store *l = open_with(link_path, SIMDR_SYNC_DATA);
    tu_put_str(l, "d", "4");
    assert_int_equal(simdr_close(l), SIMDR_OK);
    assert_true(tu_file_size(target) > 0);
}

/* Some file systems (FUSE, network ones) do not sync directories and say
 * so with EINVAL: that is not a failed sync, and must not fail a
 * compaction, a repair or the creation of a store. */
static void test_directories_that_cannot_be_synced_are_no_failure(void **state) {
    tu_fixture *f = *state;
    simdr__io_fault unsupported = {.op = SIMDR__IO_FSYNC_DIR, .nth = 1, .count = 0,
                                   .err = EINVAL};
    simdr__io_fault_arm(&unsupported);
    for (int i = 0; i < 6; i++) tu_put_str(f->s, "k", i % 2 ? "odd" : "even");
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    tu_put_str(f->s, "after", "y");
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    uint8_t junk[300];
    tu_fill(junk, sizeof junk, 9);
    tu_append_file(f->path, junk, sizeof junk);
    f->s = open_with(f->path, SIMDR_SYNC_DATA);
    simdr_recovery_info info;
    assert_int_equal(simdr_recovery(f->s, &info), SIMDR_OK);
    assert_int_equal(info.truncated, 1);
    tu_expect_str(f->s, "k", "odd");
    tu_expect_str(f->s, "after", "y");
    simdr_store *fresh = open_with(f->other, SIMDR_SYNC_DATA);
    tu_put_str(fresh, "new", "z");
    assert_int_equal(simdr_close(fresh), SIMDR_OK);
    assert_true(simdr__io_hits(SIMDR__IO_FSYNC_DIR) >= 3);
}

/* A map is made through a description of its own (/proc/self/fd), because
 * a mapping keeps its description open and the store's description holds
 * the writer lock: a map made through the store's descriptor kept the lock
 * after simdr_close while an entry pinned it, so the next writable open,
 * even in this process, found the store locked. When that second
 * description cannot be had for want of descriptors (EMFILE), the call
 * fails instead. */
static int (*plain_open)(const char *path, int flags, mode_t mode);
static int open_without_fds_for_proc(const char *path, int flags, mode_t mode) {
    if (strncmp(path, "/proc/self/fd/", 14) == 0) {
        errno = EMFILE;
        return -1;
    }
    return plain_open(path, flags, mode);
}

static void test_map_never_holds_the_writer_lock(void **state) {
    tu_fixture *f = *state;
    for (int i = 0; i < 6; i++) tu_put_str(f->s, "k", i % 2 ? "odd" : "even");
    plain_open = simdr__io.open;
    simdr__io.open = open_without_fds_for_proc;
    int rc = simdr_compact(f->s);
    simdr__io.open = plain_open;
    /* The compaction either failed (store unchanged) or mapped its file
     * through a description of its own. */
    assert_true(rc == SIMDR_OK || rc == SIMDR_EIO || rc == SIMDR_ENOMEM);
    simdr_entry *held = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("k"), &held), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    simdr_store *again = NULL;
    assert_int_equal(tu_open_status(&again, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_OK);
    tu_expect_str(again, "k", "odd");
    assert_int_equal(simdr_entry_size(held), 3);
    assert_memory_equal(simdr_entry_data(held), "odd", 3);
    simdr_entry_release(held);
    f->s = again;
}

/* ---- a failed sync (fsyncgate) ---- */

static void test_failed_sync_is_final(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    uint64_t durable_size = simdr_file_size(f->s);
    /* The kernel reports the write-back failure once; the next fdatasync
     * succeeds although the lost pages never reached the disk. */
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    assert_int_equal(simdr_put(f->s, TU_STR("b"), "2", 1, NULL), SIMDR_EIO);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FDATASYNC), 1);
    /* The value whose durability was not confirmed is not served... */
    tu_expect_absent(f->s, TU_STR("b"));
    assert_int_equal(simdr_count(f->s), 1);
    assert_int_equal(simdr_file_size(f->s), durable_size);
    tu_expect_str(f->s, "a", "1");
    /* ... and the store does not go on as if it were on disk. */
    assert_int_equal(simdr_put(f->s, TU_STR("c"), "3", 1, NULL), SIMDR_EFAILED);
    assert_int_equal(simdr_sync(f->s), SIMDR_EFAILED);
    assert_int_equal(simdr_delete(f->s, TU_STR("a"), NULL), SIMDR_EFAILED);
    assert_int_equal(simdr_compact(f->s), SIMDR_EFAILED);
    tu_expect_absent(f->s, TU_STR("c"));
    /* Reopening re-verifies the file: everything acknowledged is there,
     * nothing refused is; the put that failed is like a write in flight at
     * a crash: present whole (its bytes verified) or absent. */
    reopen(f, SIMDR_SYNC_DATA);
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("c"));
    simdr_entry *e = NULL;
    int got = simdr_get(f->s, TU_STR("b"), &e);
    assert_true(got == SIMDR_OK || got == SIMDR_NOTFOUND);
    if (got == SIMDR_OK) {
        assert_int_equal(simdr_entry_size(e), 1);
        assert_memory_equal(simdr_entry_data(e), "2", 1);
        simdr_entry_release(e);
    }
    assert_int_equal(simdr_count(f->s), got == SIMDR_OK ? 2 : 1);
    tu_put_str(f->s, "d", "4");
    tu_expect_str(f->s, "d", "4");
}

/* With one-flush syncs the side file's page is written to the device ahead
 * of the store's fdatasync; a failed write of it fails the sync like a
 * failed fdatasync (the head start on the store's bytes, also a
 * sync_file_range, may fail without consequence). */
static void test_failed_side_page_write_is_final(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    simdr__side_flush_policy = SIMDR__SIDE_FLUSH_ONE;
    f->s = open_with(f->path, SIMDR_SYNC_DATA);
    simdr__side_flush_policy = SIMDR__SIDE_FLUSH_AUTO;
    tu_put_str(f->s, "a", "1");
    simdr__io_fault fault = {.op = SIMDR__IO_SYNC_FILE_RANGE, .nth = 1, .count = 0, .err = EIO};
    simdr__io_fault_arm(&fault);
    assert_int_equal(simdr_put(f->s, TU_STR("b"), "2", 1, NULL), SIMDR_EIO);
    assert_true(simdr__io_hits(SIMDR__IO_SYNC_FILE_RANGE) >= 1);
    tu_expect_absent(f->s, TU_STR("b"));
    assert_int_equal(simdr_put(f->s, TU_STR("c"), "3", 1, NULL), SIMDR_EFAILED);
    simdr__io_reset();
    reopen(f, SIMDR_SYNC_DATA);
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("c"));
}

/* The side file's page is written through a shared map. Sized with
 * ftruncate alone it is a hole, and on a full disk the first store into it
 * raised SIGBUS in the open of a new store (the CLI's write, Python's open):
 * its blocks are allocated first, and a writer whose side page cannot be
 * allocated goes on without a side file. A file system without fallocate
 * gets the page written with pwrite instead. */
static void test_side_page_allocated_before_it_is_mapped(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    f->s = NULL;
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", f->other);
    struct stat st;
    simdr__io_fault full = {.op = SIMDR__IO_FALLOCATE, .nth = 1, .count = 0, .err = ENOSPC};
    simdr__io_fault_arm(&full);
    simdr_store *s = tu_open(f->other, SIMDR_OPEN_CREATE, 0);
    assert_true(simdr__io_hits(SIMDR__IO_FALLOCATE) >= 1);
    assert_int_equal(stat(side, &st), -1); /* no side file it could not keep */
    tu_put_str(s, "a", "1");
    simdr_close(s);
    simdr__io_reset();
    simdr__io_fault unsupported = {.op = SIMDR__IO_FALLOCATE, .nth = 1, .count = 0,
                                   .err = EOPNOTSUPP};
    simdr__io_fault_arm(&unsupported);
    s = tu_open(f->other, SIMDR_OPEN_EXISTING, 0);
    assert_true(simdr__io_hits(SIMDR__IO_FALLOCATE) >= 1);
    assert_int_equal(stat(side, &st), 0);
    assert_int_equal(st.st_size, 4096);
    assert_true(st.st_blocks > 0); /* written, not a hole */
    tu_put_str(s, "b", "2");
    simdr_close(s);
    simdr__io_reset();
    f->s = tu_open(f->other, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "a", "1");
    tu_expect_str(f->s, "b", "2");
}

/* Under an address-space limit (ulimit -v) the store's map cannot reserve its
 * usual 1 GiB: no store could be opened at all. The reservation shrinks to
 * what fits, and the file outgrowing it only means a new map. Here every
 * file map over 32 MiB fails as the limit would make it fail. */
#define AS_LIMITED_MAP ((size_t)32 << 20)
static void *(*unlimited_mmap)(void *, size_t, int, int, int, off_t);
static void *mmap_under_as_limit(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fd != -1 && len > AS_LIMITED_MAP) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return unlimited_mmap(addr, len, prot, flags, fd, off);
}

static void test_map_fits_an_address_space_limit(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    f->s = NULL;
    unlimited_mmap = simdr__io.mmap;
    simdr__io.mmap = mmap_under_as_limit;
    simdr_store *s = NULL;
    int rc = tu_open_status(&s, f->other, SIMDR_OPEN_CREATE, 0);
    if (rc != SIMDR_OK) simdr__io.mmap = unlimited_mmap;
    assert_int_equal(rc, SIMDR_OK);
    static char value[1 << 20];
    for (int i = 0; i < 20; i++) { /* 20 MiB: the file outgrows the first maps */
        char key[16];
        memset(value, 'a' + i, sizeof value);
        snprintf(key, sizeof key, "v%d", i);
        assert_int_equal(simdr_put(s, key, strlen(key), value, sizeof value, NULL), SIMDR_OK);
    }
    simdr_close(s);
    s = tu_open(f->other, SIMDR_OPEN_READONLY, 0);
    for (int i = 0; i < 20; i++) {
        char key[16];
        simdr_entry *e = NULL;
        snprintf(key, sizeof key, "v%d", i);
        assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), sizeof value);
        const char *d = simdr_entry_data(e);
        assert_true(d[0] == 'a' + i && d[sizeof value - 1] == 'a' + i);
        simdr_entry_release(e);
    }
    simdr_close(s);
    simdr__io.mmap = unlimited_mmap;
}

static void test_failed_explicit_sync_is_final(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    tu_put_str(f->s, "b", "2");
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    assert_int_equal(simdr_sync(f->s), SIMDR_EIO);
    /* Served: the prefix the last successful sync made durable. */
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("b"));
    assert_int_equal(simdr_count(f->s), 1);
    assert_int_equal(simdr_sync(f->s), SIMDR_EFAILED);
    assert_int_equal(simdr_put(f->s, TU_STR("c"), "3", 1, NULL), SIMDR_EFAILED);
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("c"));
    tu_put_str(f->s, "c", "3");
}

/* After a failed fdatasync the kernel may keep the pages it could not write
 * as clean: they read as written, so a reopen verifies and serves them, and
 * the next fdatasync, on a new descriptor, succeeds without writing them. A
 * writable reopen in the same process therefore writes everything above the
 * durable record again and syncs it; when that sync fails, the open fails
 * and the next one tries again. Checked by recording the range the open's
 * pwrites cover. */
static uint64_t rewrite_lo, rewrite_hi;
static ssize_t (*pwrite_below)(int, const void *, size_t, off_t);

static ssize_t range_pwrite(int fd, const void *buf, size_t len, off_t off) {
    ssize_t n = pwrite_below(fd, buf, len, off);
    if (n > 0) {
        if ((uint64_t)off < rewrite_lo) rewrite_lo = (uint64_t)off;
        if ((uint64_t)off + (uint64_t)n > rewrite_hi) rewrite_hi = (uint64_t)off + (uint64_t)n;
    }
    return n;
}

static void open_recording_pwrites(tu_fixture *f) {
    rewrite_lo = UINT64_MAX;
    rewrite_hi = 0;
    pwrite_below = simdr__io.pwrite;
    simdr__io.pwrite = range_pwrite;
    f->s = open_with(f->path, SIMDR_SYNC_NONE);
    simdr__io.pwrite = pwrite_below;
}

static void test_reopen_after_failed_sync_writes_unconfirmed_bytes_again(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    uint64_t durable = simdr_file_size(f->s);
    char key[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        tu_put_str(f->s, key, "v");
    }
    uint64_t tail = simdr_file_size(f->s);
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    assert_int_equal(simdr_sync(f->s), SIMDR_EIO);
    simdr__io_reset();
    simdr_close(f->s);
    f->s = NULL;
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    simdr_options o;
    simdr_options_init(&o);
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_EIO);
    simdr__io_reset();
    open_recording_pwrites(f);
    assert_true(rewrite_lo <= durable);
    assert_true(rewrite_hi >= tail);
    tu_expect_str(f->s, "a", "1");
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        tu_expect_str(f->s, key, "v");
    }
    assert_int_equal(simdr_count(f->s), 51);
    /* Written again and synced, the file is like any other: the next
     * reopen writes nothing. */
    simdr_close(f->s);
    open_recording_pwrites(f);
    assert_int_equal(rewrite_hi, 0);
    tu_put_str(f->s, "after", "1");
}

/* A system call interrupted by a signal (EINTR: network and FUSE file
 * systems, a handler without SA_RESTART) is made again, never taken for a
 * failure: each of the library's syncs, truncations and flushes is
 * interrupted once and the operation succeeds, the store usable after. */
static void test_interrupted_calls_are_retried(void **state) {
    tu_fixture *f = *state;
    for (int i = 0; i < 20; i++) tu_put_str(f->s, "k", i % 2 ? "odd" : "even");
    int64_t size = tu_file_size(f->path);
    simdr__io_fail_nth(SIMDR__IO_FSYNC, 1, EINTR);
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FSYNC), 1);
    assert_true(tu_file_size(f->path) < size);
    tu_expect_str(f->s, "k", "odd");
    simdr__io_reset();
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EINTR);
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FDATASYNC), 1);

    /* The side file's page: pushed ahead of the store's flush, or flushed
     * on its own after it. */
    static const struct { int policy; enum simdr__io_op op; } side[] = {
        {SIMDR__SIDE_FLUSH_ONE, SIMDR__IO_SYNC_FILE_RANGE},
        {SIMDR__SIDE_FLUSH_TWO, SIMDR__IO_MSYNC},
    };
    for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
        simdr__io_reset();
        simdr_close(f->s);
        simdr__side_flush_policy = side[i].policy;
        f->s = open_with(f->path, SIMDR_SYNC_DATA);
        simdr__side_flush_policy = SIMDR__SIDE_FLUSH_AUTO;
        tu_put_str(f->s, "warm", "up"); /* the first append's own flushes */
        simdr__io_fail_nth(side[i].op, 1, EINTR);
        assert_int_equal(simdr_put(f->s, TU_STR("b"), "2", 1, NULL), SIMDR_OK);
        assert_int_equal(simdr__io_hits(side[i].op), 1);
        tu_put_str(f->s, "c", "3");
    }

    /* Mapped appends cut their preallocated space at a sync. */
    simdr__io_reset();
    simdr_close(f->s);
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    tu_put_str(f->s, "m", "mapped");
    simdr__io_fail_nth(SIMDR__IO_FTRUNCATE, 1, EINTR);
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FTRUNCATE), 1);
    assert_int_equal((uint64_t)tu_file_size(f->path), simdr_file_size(f->s));
    reopen(f, SIMDR_SYNC_NONE);
    tu_expect_str(f->s, "k", "odd");
    tu_expect_str(f->s, "b", "2");
    tu_expect_str(f->s, "c", "3");
    tu_expect_str(f->s, "m", "mapped");
}

/* ---- a batch is all or nothing ---- */

static void test_batch_index_growth_failure_shows_nothing(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "before", "x");
    enum { N = 20000 };
    simdr_kv *kv = calloc(N, sizeof *kv);
    char (*keys)[16] = calloc(N, sizeof *keys);
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        kv[i] = (simdr_kv){keys[i], strlen(keys[i]), "v", 1};
    }
    uint64_t size = simdr_file_size(f->s);
    /* Anonymous maps hold the bigger index tables: every one fails, so the
     * index cannot grow past what 20,000 new keys need. */
    simdr__io_fault oom = {.op = SIMDR__IO_MMAP, .nth = 1, .count = 0, .err = ENOMEM,
                           .select = select_anonymous};
    simdr__io_fault_arm(&oom);
    assert_int_equal(simdr_put_batch(f->s, kv, N, NULL), SIMDR_ENOMEM);
    assert_true(simdr__io_hits(SIMDR__IO_MMAP) >= 1);
    for (size_t i = 0; i < N; i += 997) tu_expect_absent(f->s, keys[i], strlen(keys[i]));
    tu_expect_absent(f->s, keys[0], strlen(keys[0]));
    tu_expect_absent(f->s, keys[N - 1], strlen(keys[N - 1]));
    assert_int_equal(simdr_count(f->s), 1);
    assert_int_equal(simdr_file_size(f->s), size);
    /* Nothing was lost or wedged: with memory back the batch goes in. */
    simdr__io_reset();
    assert_int_equal(simdr_put_batch(f->s, kv, N, NULL), SIMDR_OK);
    assert_int_equal(simdr_count(f->s), N + 1);
    reopen(f, SIMDR_SYNC_NONE);
    assert_int_equal(simdr_count(f->s), N + 1);
    tu_expect_str(f->s, "k19999", "v");
    free(kv);
    free(keys);
}

/* ---- a failed sync under group commit ---- */

enum { WRITERS = 4, PUTS_EACH = 40 };

typedef struct writer_arg {
    simdr_store *s;
    int id;
    int rc[PUTS_EACH];
} writer_arg;

static void *durable_writer(void *p) {
    writer_arg *a = p;
    for (int i = 0; i < PUTS_EACH; i++) {
        char key[32];
        snprintf(key, sizeof key, "w%d-%d", a->id, i);
        a->rc[i] = simdr_put(a->s, key, strlen(key), key, strlen(key), NULL);
    }
    return NULL;
}

static void test_failed_group_sync_unpublishes_every_unconfirmed_write(void **state) {
    tu_fixture *f = *state;
    /* Several writers share each fdatasync; one of them fails. Afterwards
     * a put that returned OK is readable (now and after reopen), and one
     * that returned an error is not served by the failed handle. */
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 15, EIO);
    pthread_t t[WRITERS];
    writer_arg args[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        args[w] = (writer_arg){.s = f->s, .id = w};
        assert_int_equal(pthread_create(&t[w], NULL, durable_writer, &args[w]), 0);
    }
    for (int w = 0; w < WRITERS; w++) pthread_join(t[w], NULL);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FDATASYNC), 1);
    uint64_t ok = 0, refused = 0;
    for (int w = 0; w < WRITERS; w++)
        for (int i = 0; i < PUTS_EACH; i++) {
            char key[32];
            snprintf(key, sizeof key, "w%d-%d", w, i);
            int rc = args[w].rc[i];
            if (rc == SIMDR_OK) {
                ok++;
                tu_expect_str(f->s, key, key);
            } else {
                assert_true(rc == SIMDR_EIO || rc == SIMDR_EFAILED);
                refused++;
                tu_expect_absent(f->s, key, strlen(key));
            }
        }
    assert_true(refused > 0);
    assert_int_equal(simdr_count(f->s), ok);
    reopen(f, SIMDR_SYNC_DATA);
    for (int w = 0; w < WRITERS; w++)
        for (int i = 0; i < PUTS_EACH; i++) {
            if (args[w].rc[i] != SIMDR_OK) continue;
            char key[32];
            snprintf(key, sizeof key, "w%d-%d", w, i);
            tu_expect_str(f->s, key, key);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failed_write_leaves_store_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_side_page_write_is_final, setup_durable,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_short_writes_are_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_runs_between_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_and_map_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_faults_keep_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undo_that_fails_refuses_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_directory_sync_after_compaction_is_final,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_not_cut_unless_its_copy_is_durable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_store_is_named_durably, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directories_that_cannot_be_synced_are_no_failure,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_never_holds_the_writer_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_is_final, setup_durable, teardown),
        cmocka_unit_test_setup_teardown(test_failed_explicit_sync_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_failed_sync_writes_unconfirmed_bytes_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_side_page_allocated_before_it_is_mapped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_fits_an_address_space_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_calls_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_index_growth_failure_shows_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_failed_group_sync_unpublishes_every_unconfirmed_write, setup_durable, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
