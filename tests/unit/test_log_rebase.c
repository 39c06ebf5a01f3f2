/*
 * test_log_rebase.c - a replica follows a compaction without copying the
 * compacted file: simdr_log_origin tells what the new file was compacted
 * from (old file, the tail its live entries were listed at, the prefix they
 * make and its XXH3-64), and simdr_log_compact_prefix, run on a byte copy of
 * the old file that reaches that tail, writes the same prefix byte for byte,
 * so the rest of the new file chains onto it through simdr_log_append. Both
 * layouts, with overwrites, deletes (of present and absent keys), values of
 * many sizes (one beyond the copy buffer's direct-write size), and writes
 * made during the compaction's copy; then the refusals: an offset inside an
 * entry or beyond the tail, another file's identity, a damaged entry.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"

#define KEYS 3000
#define HUGE_VALUE ((size_t)(5u << 19)) /* 2.5 MiB: written past the copy buffer */

static const char *copy_path; /* where the hook copies the old file */
static int hook_runs;

static void key_name(char *out, size_t cap, int k) { snprintf(out, cap, "rebase-%d", k); }

static void put_key(simdr_store *s, int k, size_t len, uint64_t seed) {
    char key[32];
    key_name(key, sizeof key, k);
    uint8_t *v = malloc(len);
    assert_non_null(v);
    tu_fill(v, len, seed);
    assert_int_equal(simdr_put(s, TU_STR(key), v, len, NULL), SIMDR_OK);
    free(v);
}

static void del_key(simdr_store *s, int k) {
    char key[32];
    key_name(key, sizeof key, k);
    int rc = simdr_delete(s, TU_STR(key), NULL);
    assert_true(rc == SIMDR_OK || rc == SIMDR_NOTFOUND);
}

/* Sizes from 1 byte to 70 KB, with overwrites, deletes, deletes of keys
 * never written, a key deleted and written again, and one huge value. */
static void populate(simdr_store *s) {
    for (int k = 0; k < KEYS; k++) put_key(s, k, 1 + (size_t)((k * 7919) % (k % 50 ? 300 : 70000)), (uint64_t)k);
    for (int k = 0; k < KEYS; k += 3) put_key(s, k, 1 + (size_t)(k % 97), (uint64_t)k + 11);
    for (int k = 1; k < KEYS; k += 5) del_key(s, k);
    for (int k = KEYS; k < KEYS + 40; k++) del_key(s, k); /* never written */
    for (int k = 1; k < KEYS; k += 25) put_key(s, k, 33, (uint64_t)k + 29);
    put_key(s, 7, HUGE_VALUE, 7);
    put_key(s, 8, 1, 8);
}

/* On the compacting thread, after the live entries are copied: writes the
 * old file gets during the copy, a byte copy of it then (beyond the tail
 * the live entries were listed at), and more writes after the unlocked
 * catch-up. */
static void write_and_copy(simdr_store *s, int stage) {
    hook_runs++;
    if (stage == 0) {
        for (int k = 0; k < KEYS; k += 7) put_key(s, k, 20 + (size_t)(k % 130), (uint64_t)k + 101);
        for (int k = 2; k < KEYS; k += 11) del_key(s, k);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
        tu_copy_file(s->path, copy_path);
    } else {
        for (int k = 5; k < KEYS; k += 13) put_key(s, k, 64, (uint64_t)k + 202);
        del_key(s, 9);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
    }
}

static uint64_t identity_of(simdr_store *s) {
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    return st.identity;
}

static void follow_compaction(int layout, int writes_during_copy) {
    char *dir = tu_mkdtemp();
    char path[4096], copy[4096], prefix[4096];
    tu_join(path, sizeof path, dir, "primary.simdr");
    tu_join(copy, sizeof copy, dir, "replica.simdr");
    tu_join(prefix, sizeof prefix, dir, "rebased.simdr");
    copy_path = copy;
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, layout);
    populate(s);
    simdr_log_origin_info origin;
    assert_int_equal(simdr_log_origin(s, &origin), SIMDR_ENOENT); /* not compacted yet */
    simdr_log_state before;
    assert_int_equal(simdr_log_info(s, &before), SIMDR_OK);
    if (!writes_during_copy) tu_copy_file(path, copy);
    hook_runs = 0;
    if (writes_during_copy) atomic_store(&simdr__compact_during_copy, write_and_copy);
    int rc = simdr_compact(s);
    atomic_store(&simdr__compact_during_copy, NULL);
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(hook_runs, writes_during_copy ? 2 : 0);

    assert_int_equal(simdr_log_origin(s, &origin), SIMDR_OK);
    simdr_log_state after;
    assert_int_equal(simdr_log_info(s, &after), SIMDR_OK);
    assert_true(origin.identity == after.identity);
    assert_true(origin.old_identity == before.identity);
    assert_true(origin.old_tail == before.tail);
    assert_int_equal(origin.layout, layout);
    assert_true(origin.prefix_len > 0 && origin.prefix_len <= after.tail);
    if (writes_during_copy)
        assert_true(origin.prefix_len < after.tail);
    else
        assert_true(origin.prefix_len == after.tail);

    /* The replica's copy reaches the listed tail (or beyond it). */
    simdr_store *r = tu_open(copy, SIMDR_OPEN_EXISTING, layout);
    simdr_log_state rst;
    assert_int_equal(simdr_log_info(r, &rst), SIMDR_OK);
    assert_true(rst.tail >= origin.old_tail);
    assert_true(writes_during_copy ? rst.tail > origin.old_tail : rst.tail == origin.old_tail);
    uint64_t size = 0, hash = 0;
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, origin.old_tail, prefix, &size, &hash),
                     SIMDR_OK);
    assert_true(size == origin.prefix_len);
    assert_true(hash == origin.prefix_hash);
    size_t new_len = 0, rebased_len = 0;
    uint8_t *new_file = tu_read_file(path, &new_len);
    uint8_t *rebased = tu_read_file(prefix, &rebased_len);
    assert_true(rebased_len == origin.prefix_len);
    assert_true(new_len >= rebased_len);
    assert_memory_equal(new_file, rebased, rebased_len);
    free(rebased);

    /* The rest of the new file chains onto the rebuilt prefix. */
    simdr_store *p = tu_open(prefix, SIMDR_OPEN_EXISTING, layout);
    size_t cap = (size_t)(after.tail - origin.prefix_len) + 1, got = 0;
    uint8_t *rest = malloc(cap);
    assert_non_null(rest);
    assert_int_equal(simdr_log_read(s, after.identity, origin.prefix_len, rest, cap, &got), SIMDR_OK);
    assert_true(got == after.tail - origin.prefix_len);
    uint64_t end = 0;
    assert_int_equal(simdr_log_append(p, origin.prefix_len, rest, got, &end), SIMDR_OK);
    assert_true(end == after.tail);
    free(rest);
    assert_int_equal(simdr_close(p), SIMDR_OK);
    rebased = tu_read_file(prefix, &rebased_len);
    assert_true(rebased_len == new_len);
    assert_memory_equal(new_file, rebased, new_len);
    free(rebased);
    free(new_file);

    /* The copy itself is no compaction's result, and the refusals. */
    simdr_log_origin_info none;
    assert_int_equal(simdr_log_origin(r, &none), SIMDR_ENOENT);
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, rst.tail + 1, prefix, NULL, NULL),
                     SIMDR_EINVAL);
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, origin.old_tail - 1, prefix, NULL,
                                              NULL),
                     SIMDR_EINVAL);
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity ^ 1, origin.old_tail, prefix, NULL,
                                              NULL),
                     SIMDR_ENOENT);
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, origin.old_tail, NULL, NULL, NULL),
                     SIMDR_EINVAL);
    /* 0 is an entry end: an empty prefix. */
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, 0, prefix, &size, &hash), SIMDR_OK);
    assert_true(size == 0);
    assert_int_equal(tu_file_size(prefix), 0);
    /* The whole copy, up to its own tail, is the prefix of a compaction
     * listed there: as simdr_compact of the copy writes it (no writes
     * during that one: the file is that prefix). */
    assert_int_equal(simdr_log_compact_prefix(r, rst.identity, rst.tail, prefix, &size, &hash),
                     SIMDR_OK);
    assert_int_equal(simdr_compact(r), SIMDR_OK);
    simdr_log_origin_info own;
    assert_int_equal(simdr_log_origin(r, &own), SIMDR_OK);
    assert_true(own.old_identity == rst.identity && own.old_tail == rst.tail);
    assert_true(own.prefix_len == size && own.prefix_hash == hash);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    rebased = tu_read_file(prefix, &rebased_len);
    uint8_t *compacted = tu_read_file(copy, &new_len);
    assert_true(rebased_len == new_len);
    assert_memory_equal(compacted, rebased, new_len);
    free(rebased);
    free(compacted);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void rebase_aligned(void **state) {
    (void)state;
    follow_compaction(SIMDR_LAYOUT_ALIGNED64, 1);
}
static void rebase_unaligned(void **state) {
    (void)state;
    follow_compaction(SIMDR_LAYOUT_UNALIGNED, 1);
}
static void rebase_quiet_aligned(void **state) {
    (void)state;
    follow_compaction(SIMDR_LAYOUT_ALIGNED64, 0);
}
static void rebase_quiet_unaligned(void **state) {
    (void)state;
    follow_compaction(SIMDR_LAYOUT_UNALIGNED, 0);
}

/* A live entry whose payload was damaged is refused, and nothing is left at
 * the destination; a prefix below the damaged entry does not read it. */
static void damaged_copy_is_refused(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096], prefix[4096];
    tu_join(path, sizeof path, dir, "damaged.simdr");
    tu_join(prefix, sizeof prefix, dir, "rebased.simdr");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    static const char marker[] = "MARKER-VALUE-0123456789-MARKER-VALUE";
    tu_put_str(s, "early", marker);
    for (int k = 0; k < 200; k++) put_key(s, k, 50, (uint64_t)k);
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    size_t len = 0;
    uint8_t *bytes = tu_read_file(path, &len);
    uint8_t *at = memmem(bytes, len, marker, sizeof marker - 1);
    assert_non_null(at);
    uint64_t off = (uint64_t)(at - bytes) + 3;
    free(bytes);
    tu_patch_file(path, off, "x", 1);
    s = tu_open(path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    uint64_t ident = identity_of(s);
    assert_int_equal(simdr_log_compact_prefix(s, ident, st.tail, prefix, NULL, NULL),
                     SIMDR_ECORRUPT);
    assert_int_equal(access(prefix, F_OK), -1);
    /* Below the damaged entry: nothing of it is read. */
    uint64_t size = 1;
    assert_int_equal(simdr_log_compact_prefix(s, ident, 0, prefix, &size, NULL), SIMDR_OK);
    assert_true(size == 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

/* ---- failures of the rebuild's own I/O ----
 * A failed write or fsync of the destination is the call's error and leaves
 * no file behind; a failed read of the source falls back to the map (the
 * window's rule), and the bytes are the same. */
static void failed_io_leaves_nothing(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096], prefix[4096], good[4096];
    tu_join(path, sizeof path, dir, "src.simdr");
    tu_join(prefix, sizeof prefix, dir, "rebased.simdr");
    tu_join(good, sizeof good, dir, "good.simdr");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    populate(s);
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    uint64_t size = 0, hash = 0, size2 = 0, hash2 = 0;
    assert_int_equal(simdr_log_compact_prefix(s, st.identity, st.tail, good, &size, &hash),
                     SIMDR_OK);
    simdr__io_fail_nth(SIMDR__IO_PWRITE, 2, ENOSPC);
    int rc = simdr_log_compact_prefix(s, st.identity, st.tail, prefix, NULL, NULL);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_ENOSPC);
    assert_int_equal(access(prefix, F_OK), -1);
    simdr__io_fail_nth(SIMDR__IO_FSYNC, 1, EIO);
    rc = simdr_log_compact_prefix(s, st.identity, st.tail, prefix, NULL, NULL);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_EIO);
    assert_int_equal(access(prefix, F_OK), -1);
    simdr__io_fail_nth(SIMDR__IO_PREAD, 1, EIO);
    rc = simdr_log_compact_prefix(s, st.identity, st.tail, prefix, &size2, &hash2);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_OK);
    assert_true(size2 == size && hash2 == hash);
    size_t l1 = 0, l2 = 0;
    uint8_t *b1 = tu_read_file(good, &l1), *b2 = tu_read_file(prefix, &l2);
    assert_true(l1 == l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);
    /* the store is untouched and goes on */
    put_key(s, 1, 10, 1);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

/* ---- a prefix rebuilt while another thread writes and compacts ---- */

static atomic_int writer_stop;

/* The prefix written over the store's own files: dest_path was opened with
 * O_TRUNC, so naming the store file (by its path or a hard link) cut the
 * live store to nothing under its map (SIGBUS, every value lost), and the
 * cleanup after the failure unlinked it; naming its side file cut the page
 * the writer stores into. Refused with nothing changed. */
static void dest_on_the_stores_own_files_is_refused(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096], link_path[4096], side[4200], good[4096];
    tu_join(path, sizeof path, dir, "src.simdr");
    tu_join(link_path, sizeof link_path, dir, "hard-link.simdr");
    tu_join(good, sizeof good, dir, "good.simdr");
    snprintf(side, sizeof side, "%s.simdr", path);
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    populate(s);
    assert_int_equal(link(path, link_path), 0);
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    uint64_t count = simdr_count(s), size = simdr_file_size(s);
    uint8_t store_sum[32], side_sum[32], sum[32];
    tu_sha256_file(path, store_sum);
    tu_sha256_file(side, side_sum);
    const char *dests[] = {path, link_path, side};
    for (size_t i = 0; i < sizeof dests / sizeof dests[0]; i++) {
        int rc = simdr_log_compact_prefix(s, st.identity, st.tail, dests[i], NULL, NULL);
        if (rc != SIMDR_EINVAL) fail_msg("dest %s: %d %s", dests[i], rc, simdr_last_error());
        assert_int_equal(access(dests[i], F_OK), 0);
        tu_sha256_file(path, sum);
        assert_memory_equal(sum, store_sum, sizeof sum);
        tu_sha256_file(side, sum);
        assert_memory_equal(sum, side_sum, sizeof sum);
    }
    assert_int_equal(simdr_count(s), count);
    assert_int_equal(simdr_file_size(s), size);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    /* The store goes on, and the call still works with another file. */
    put_key(s, 1, 100, 42);
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    assert_int_equal(simdr_log_compact_prefix(s, st.identity, st.tail, good, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    simdr_close(s);
    tu_rmtree(dir);
    free(dir);
}

static void *keep_writing(void *arg) {
    simdr_store *s = arg;
    for (int i = 0; !atomic_load(&writer_stop); i++) {
        put_key(s, i % KEYS, 1 + (size_t)(i % 500), (uint64_t)i + 5000);
        if (i % 9 == 0) del_key(s, (i * 3) % KEYS);
    }
    return NULL;
}

static void *compact_once(void *arg) {
    /* waits for the prefix call (the compaction lock), then replaces the
     * file: the call's identity was taken before */
    assert_int_equal(simdr_compact(arg), SIMDR_OK);
    return NULL;
}

/* The bytes below upto never change, so a rebuild while a writer appends
 * (and a compaction waits to replace the file) equals one made when all is
 * quiet. */
static void rebuild_while_writing(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096], first[4096], second[4096];
    tu_join(path, sizeof path, dir, "busy.simdr");
    tu_join(first, sizeof first, dir, "first.simdr");
    tu_join(second, sizeof second, dir, "second.simdr");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    populate(s);
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    atomic_store(&writer_stop, 0);
    pthread_t writer, compactor;
    assert_int_equal(pthread_create(&writer, NULL, keep_writing, s), 0);
    uint64_t size1 = 0, hash1 = 0, size2 = 0, hash2 = 0;
    assert_int_equal(simdr_log_compact_prefix(s, st.identity, st.tail, first, &size1, &hash1),
                     SIMDR_OK);
    assert_int_equal(pthread_create(&compactor, NULL, compact_once, s), 0);
    int rc = simdr_log_compact_prefix(s, st.identity, st.tail, second, &size2, &hash2);
    assert_int_equal(pthread_join(compactor, NULL), 0);
    atomic_store(&writer_stop, 1);
    assert_int_equal(pthread_join(writer, NULL), 0);
    /* before the compaction took the file: the same bytes; after: the
     * identity names a file that is gone */
    assert_true(rc == SIMDR_OK || rc == SIMDR_ENOENT);
    if (rc == SIMDR_OK) {
        assert_true(size1 == size2 && hash1 == hash2);
        size_t l1 = 0, l2 = 0;
        uint8_t *b1 = tu_read_file(first, &l1), *b2 = tu_read_file(second, &l2);
        assert_true(l1 == l2 && l1 == size1);
        assert_memory_equal(b1, b2, l1);
        free(b1);
        free(b2);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rebase_aligned),
        cmocka_unit_test(rebase_unaligned),
        cmocka_unit_test(rebase_quiet_aligned),
        cmocka_unit_test(rebase_quiet_unaligned),
        cmocka_unit_test(damaged_copy_is_refused),
        cmocka_unit_test(failed_io_leaves_nothing),
        cmocka_unit_test(dest_on_the_stores_own_files_is_refused),
        cmocka_unit_test(rebuild_while_writing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
