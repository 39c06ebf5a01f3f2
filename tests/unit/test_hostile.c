/*
 * test_hostile.c - payloads crafted to look like metadata, and the other ways
 * the end of a store could be guessed wrong: recovery after a kill in the
 * middle of such a payload, refreshing readers in another process, a crash
 * during the first write into a new store, refreshes that fail and readers
 * whose file is cut under them, and integrity checks of a store that is being
 * appended to, and what a power cut leaves past the last sync. The writer's
 * committed tail lives in the side file "<store>.simdr"; these tests show
 * that no payload content can move it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define FAKE_KEY "nobody-wrote-this"
#define PREFIX_LEN 100u

/* The first bytes of a hostile value streamed at tail into a store of the
 * given layout: PREFIX_LEN bytes, then 20 bytes that are valid metadata of
 * an entry [tail, here) of key FAKE_KEY: prev_offset = tail and the CRC of
 * the payload before them. */
static void hostile_prefix(uint8_t out[PREFIX_LEN + 20], uint64_t tail) {
    memset(out, 'A', PREFIX_LEN);
    uint64_t h = simdr_hash_key(FAKE_KEY, strlen(FAKE_KEY));
    tu_put_le64(out + PREFIX_LEN, h);
    tu_put_le64(out + PREFIX_LEN + 8, tail);
    uint32_t crc = tu_crc32(out, PREFIX_LEN);
    for (int i = 0; i < 4; i++) out[PREFIX_LEN + 16 + i] = (uint8_t)(crc >> (8 * i));
}

static int fake_key_present(simdr_store *s) {
    return simdr_exists(s, FAKE_KEY, strlen(FAKE_KEY));
}

/* ---- a refreshing reader while a hostile value is streamed ---- */

typedef struct stream_ctx {
    uint64_t tail;      /* where the value starts (its entry's prev_offset) */
    int calls;
    simdr_store *reader; /* refreshed between chunks */
    int fake_seen;
    uint64_t cut_seen;  /* a read-only open between chunks: its bytes_cut */
    int check_rc;       /* ... and its simdr_check */
    const char *path;
    simdr_store *writer; /* checked between chunks */
    int writer_check_rc;
} stream_ctx;

static int64_t hostile_source(void *ctx, void *buf, size_t cap) {
    stream_ctx *c = ctx;
    assert_true(cap >= PREFIX_LEN + 20);
    switch (c->calls++) {
    case 0:
        hostile_prefix(buf, c->tail);
        return PREFIX_LEN + 20;
    case 1:
        /* The file now ends with metadata of the store's tail entry. */
        if (c->reader) {
            assert_int_equal(simdr_refresh(c->reader, NULL), SIMDR_OK);
            if (fake_key_present(c->reader)) c->fake_seen = 1;
        }
        if (c->path) {
            simdr_store *ro = tu_open(c->path, SIMDR_OPEN_READONLY, 0);
            simdr_recovery_info ri;
            assert_int_equal(simdr_recovery(ro, &ri), SIMDR_OK);
            c->cut_seen = ri.bytes_cut;
            if (fake_key_present(ro)) c->fake_seen = 1;
            c->check_rc = simdr_check(ro, NULL, NULL, NULL);
            simdr_close(ro);
        }
        if (c->writer) c->writer_check_rc = simdr_check(c->writer, NULL, NULL, NULL);
        memset(buf, 'B', 64);
        return 64;
    default:
        return 0;
    }
}

static void refresh_reader_ignores_metadata_lookalike(void **state, int layout) {
    tu_fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
    tu_put_str(w, "k1", "one");
    tu_put_str(w, "k2", "two");
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(r, "k2", "two");
    /* The look-alike's prev_offset is the tail; its CRC covers the payload
     * bytes before it (after the pad, as a padded entry's would). */
    stream_ctx c = {simdr_file_size(w), 0, r, 0, 0, 0, NULL, NULL, 0};
    assert_int_equal(simdr_put_stream(w, "big", 3, hostile_source, &c, NULL), SIMDR_OK);
    assert_int_equal(c.fake_seen, 0);
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 1);
    assert_int_equal(fake_key_present(r), 0);
    assert_int_equal(simdr_exists(r, "big", 3), 1);
    /* and the reader goes on seeing new writes */
    tu_put_str(w, "k3", "three");
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 1);
    tu_expect_str(r, "k3", "three");
    assert_int_equal(simdr_count(r), simdr_count(w));
    simdr_close(r);
    simdr_close(w);
}

static void test_refresh_ignores_metadata_lookalike_aligned(void **state) {
    refresh_reader_ignores_metadata_lookalike(state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_refresh_ignores_metadata_lookalike_unaligned(void **state) {
    refresh_reader_ignores_metadata_lookalike(state, SIMDR_LAYOUT_UNALIGNED);
}

/* ---- kills in the middle of a hostile value ---- */

typedef struct killed_ctx {
    int fd;          /* tells the parent the chunks are written */
    int phase;
    const uint8_t *chunk;
    size_t chunk_len;
    int chunks;      /* how many times chunk is returned before blocking */
} killed_ctx;

static int64_t blocking_source(void *ctx, void *buf, size_t cap) {
    killed_ctx *k = ctx;
    if (k->phase < k->chunks) {
        size_t n = k->chunk_len < cap ? k->chunk_len : cap;
        memcpy(buf, k->chunk, n);
        k->phase++;
        return (int64_t)n;
    }
    /* Everything so far is in the file: wait to be killed. */
    char one = 1;
    if (write(k->fd, &one, 1) != 1) _exit(3);
    for (;;) pause();
}

typedef void (*chunk_fn)(uint8_t *chunk, size_t len, uint64_t tail);

/* Child: opens path (creating it), puts n_keys keys, syncs, then streams `chunks`
 * copies of the chunk make builds from the tail, and is killed while the
 * stream waits for more. Returns the tail before the stream. */
static uint64_t kill_during_stream(const char *path, int layout, int n_keys, chunk_fn make,
                                   size_t chunk_len, int chunks) {
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    int tfd[2];
    assert_int_equal(pipe(tfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        close(tfd[0]);
        simdr_options o;
        simdr_options_init(&o);
        o.layout = layout;
        simdr_store *s;
        if (simdr_open(&s, path, &o) != SIMDR_OK) _exit(1);
        for (int i = 0; i < n_keys; i++) {
            char k[32], v[64];
            snprintf(k, sizeof k, "key%d", i);
            snprintf(v, sizeof v, "value of key %d", i);
            if (simdr_put(s, k, strlen(k), v, strlen(v), NULL) != SIMDR_OK) _exit(2);
        }
        if (simdr_sync(s) != SIMDR_OK) _exit(2); /* a durable record */
        uint64_t tail = simdr_file_size(s);
        if (write(tfd[1], &tail, sizeof tail) != sizeof tail) _exit(3);
        uint8_t *chunk = malloc(chunk_len);
        make(chunk, chunk_len, tail);
        killed_ctx k = {pfd[1], 0, chunk, chunk_len, chunks};
        simdr_put_stream(s, "victim", 6, blocking_source, &k, NULL);
        _exit(4); /* never reached: the source blocks */
    }
    close(pfd[1]);
    close(tfd[1]);
    uint64_t tail = 0;
    assert_int_equal(read(tfd[0], &tail, sizeof tail), sizeof tail);
    char one;
    assert_int_equal(read(pfd[0], &one, 1), 1);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    close(pfd[0]);
    close(tfd[0]);
    return tail;
}

static void make_hostile_chunk(uint8_t *chunk, size_t len, uint64_t tail) {
    assert_int_equal(len, PREFIX_LEN + 20);
    hostile_prefix(chunk, tail);
}

/* What every reopen after a kill must show: the acknowledged keys, no fake
 * key, the cut bytes saved, and a store that takes writes. */
static void expect_recovered(const char *path, int n_keys, uint64_t tail) {
    uint64_t size = (uint64_t)tu_file_size(path);
    assert_true(size > tail);
    simdr_store *s;
    assert_int_equal(tu_open_status(&s, path, SIMDR_OPEN_EXISTING, 0), SIMDR_OK);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, tail);
    assert_int_equal(ri.bytes_cut, size - tail);
    assert_int_equal(ri.truncated, 1);
    assert_true(ri.saved_path[0] != '\0');
    assert_int_equal(tu_file_size(ri.saved_path), (int64_t)(size - tail));
    assert_int_equal(fake_key_present(s), 0);
    assert_int_equal(simdr_exists(s, "victim", 6), 0);
    assert_int_equal(simdr_count(s), (uint64_t)n_keys);
    for (int i = 0; i < n_keys; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "key%d", i);
        snprintf(v, sizeof v, "value of key %d", i);
        tu_expect_str(s, k, v);
    }
    tu_put_str(s, "after", "the crash");
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(s, "after", "the crash");
    assert_int_equal(simdr_count(s), (uint64_t)n_keys + 1);
    simdr_close(s);
}

static void killed_in_metadata_lookalike(void **state, int layout) {
    tu_fixture *f = *state;
    uint64_t tail = kill_during_stream(f->path, layout, 5, make_hostile_chunk, PREFIX_LEN + 20, 1);
    expect_recovered(f->path, 5, tail);
}

static void test_kill_in_metadata_lookalike_aligned(void **state) {
    killed_in_metadata_lookalike(state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_kill_in_metadata_lookalike_unaligned(void **state) {
    killed_in_metadata_lookalike(state, SIMDR_LAYOUT_UNALIGNED);
}

/* 1 MiB of one entry end repeated: every 8 bytes a link to a real entry. */
#define REPEAT_CHUNK (UINT64_C(1) << 20)
static void make_repeated_end(uint8_t *chunk, size_t len, uint64_t tail) {
    for (size_t i = 0; i + 8 <= len; i += 8) tu_put_le64(chunk + i, tail);
}

static void test_kill_in_repeated_entry_end(void **state) {
    tu_fixture *f = *state;
    uint64_t tail =
        kill_during_stream(f->path, SIMDR_LAYOUT_ALIGNED64, 20, make_repeated_end, REPEAT_CHUNK, 2);
    /* The same bytes without the side file: the full recovery must answer
     * too (bounded work), not give up. */
    char copy[4200], side[4300];
    snprintf(copy, sizeof copy, "%s.copy", f->path);
    tu_copy_file(f->path, copy);
    expect_recovered(f->path, 20, tail);
    snprintf(side, sizeof side, "%s.simdr", copy);
    assert_int_equal(tu_file_size(side), -1);
    expect_recovered(copy, 20, tail);
}

/* The durable record (written by every sync, and flushed before a
 * SIMDR_SYNC_DATA write is acknowledged) decides when the live records are
 * lost: a power cut can leave the side file's page torn. Killed in a hostile
 * value after a sync, the live records then wiped: the open must still cut
 * at the durable tail, not let the look-alike steer a full recovery. */
static void test_durable_record_decides_without_live_records(void **state) {
    tu_fixture *f = *state;
    uint64_t tail = kill_during_stream(f->path, SIMDR_LAYOUT_ALIGNED64, 3, make_hostile_chunk,
                                       PREFIX_LEN + 20, 1);
    char side[4300];
    snprintf(side, sizeof side, "%s.simdr", f->path);
    uint8_t zeros[128] = {0};
    tu_patch_file(side, 64, zeros, sizeof zeros); /* both live slots */
    expect_recovered(f->path, 3, tail);
}

/* Full recovery (no side file) of a torn tail holding long candidates that
 * link to more distinct entry ends than it makes forward passes for: those
 * beyond are checked from checkpoints of the running CRC. 70 look-alikes
 * with wrong CRCs sit above one with a right CRC: the open must stop exactly
 * at the right one (which a foreign program could have written: without a
 * side file nothing tells it from a real entry). */
static void test_full_recovery_checkpoint_crcs(void **state) {
    tu_fixture *f = *state;
    enum { N = 100, WRONG = 70, REGION = 1 << 20 };
    uint64_t ends[N];
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    for (int i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(simdr_put(s, k, strlen(k), "some value", 10, &ends[i]), SIMDR_OK);
    }
    simdr_close(s);
    size_t len;
    uint8_t *old = tu_read_file(f->path, &len);
    uint8_t *file = malloc(len + REGION);
    memcpy(file, old, len);
    memset(file + len, 0xa5, REGION);
    uint64_t right_end = 0;
    for (int k = 0; k <= WRONG; k++) {
        int right = k == WRONG;
        uint64_t meta = len + REGION - 100 - (uint64_t)(right ? WRONG + 5 : k) * 8192;
        uint64_t prev = ends[right ? 80 : k];
        tu_put_le64(file + meta, 0x1234u + (uint64_t)k);
        tu_put_le64(file + meta + 8, prev);
        uint32_t crc = right ? tu_crc32(file + prev, meta - prev) : 0x12345678u;
        for (int b = 0; b < 4; b++) file[meta + 16 + b] = (uint8_t)(crc >> (8 * b));
        if (right) right_end = meta + 20;
    }
    char copy[4200];
    snprintf(copy, sizeof copy, "%s.copy", f->path);
    tu_write_file(copy, file, len + REGION);
    s = tu_open(copy, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, right_end);
    /* its chain: itself, then entries 80 down to 0 */
    assert_int_equal(simdr_count(s), 81 + 1);
    simdr_close(s);
    free(old);
    free(file);
}

/* ---- item: a crash during the first write into a new store ---- */

static void make_plain_chunk(uint8_t *chunk, size_t len, uint64_t tail) {
    (void)tail;
    tu_fill(chunk, len, 7);
}

static void test_kill_during_first_write(void **state) {
    tu_fixture *f = *state;
    uint64_t tail =
        kill_during_stream(f->path, SIMDR_LAYOUT_ALIGNED64, 0, make_plain_chunk, 5000, 3);
    assert_int_equal(tail, 0);
    expect_recovered(f->path, 0, 0);
}

static void test_non_store_without_side_file_untouched(void **state) {
    tu_fixture *f = *state;
    const char text[] = "this is a text file, never a store\n";
    tu_write_file(f->path, text, sizeof text - 1);
    simdr_store *s;
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_ENOTSTORE);
    size_t len;
    uint8_t *after = tu_read_file(f->path, &len);
    assert_int_equal(len, sizeof text - 1);
    assert_memory_equal(after, text, len);
    free(after);
    assert_int_equal(tu_dir_count(f->dir), 1);
    char side[4300];
    snprintf(side, sizeof side, "%s.simdr", f->path);
    assert_int_equal(tu_file_size(side), -1);
}

/* ---- after a power cut: what lies past the durable record ---- */

/* A writer process that dies without closing its store (unaligned, so the
 * entries end at 120, 240, 360, ...): it puts n values of 100 bytes under
 * the keys "k0", "k1", ... and, when synced_after > 0, syncs once after
 * that many puts. */
static void writer_dies_after(const char *path, int durability, int n, int synced_after) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        simdr_options o;
        simdr_options_init(&o);
        o.layout = SIMDR_LAYOUT_UNALIGNED;
        o.durability = durability;
        simdr_store *s = NULL;
        if (simdr_open(&s, path, &o) != SIMDR_OK) _exit(1);
        for (int i = 0; i < n; i++) {
            char k[16], v[100];
            snprintf(k, sizeof k, "k%d", i);
            memset(v, 'a' + i, sizeof v);
            if (simdr_put(s, k, strlen(k), v, sizeof v, NULL) != SIMDR_OK) _exit(2);
            if (i + 1 == synced_after && simdr_sync(s) != SIMDR_OK) _exit(3);
        }
        _exit(0); /* no close: the side file keeps its live records */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void expect_k(simdr_store *s, int i) {
    char k[16], v[100];
    snprintf(k, sizeof k, "k%d", i);
    memset(v, 'a' + i, sizeof v);
    tu_expect_value(s, k, strlen(k), v, sizeof v);
}

/* A power cut tore the sector holding the key hash of an unsynced entry:
 * its hash reads as zeros while its link and CRC (which covers the payload
 * only) are intact, and the side file's live record, which reached the
 * disk, names a later tail whose metadata is whole. The entries past the
 * durable record do not add up to the live record's metadata sum, so they
 * are a torn tail: cut and saved, never a key nobody wrote (before: k1 lost
 * and a phantom key of hash 0 counted). */
static void test_torn_key_hash_past_durable_tail_is_cut(void **state) {
    tu_fixture *f = *state;
    writer_dies_after(f->path, SIMDR_SYNC_NONE, 3, 1);
    assert_int_equal(tu_file_size(f->path), 360);
    uint8_t zeros[8] = {0};
    tu_patch_file(f->path, 240 - 20, zeros, sizeof zeros); /* k1's key hash */
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.valid_size, 120);
    assert_int_equal(ri.bytes_cut, 240);
    assert_int_equal(ri.truncated, 1);
    assert_int_equal(tu_file_size(ri.saved_path), 240);
    assert_int_equal(simdr_count(s), 1);
    expect_k(s, 0);
    tu_expect_absent(s, TU_STR("k1"));
    tu_expect_absent(s, TU_STR("k2"));
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    simdr_close(s);
}

/* The same writer's whole, unsynced entries are kept: the live record
 * vouches for them (a killed process loses nothing it acknowledged). */
static void test_live_record_vouches_for_unsynced_entries(void **state) {
    tu_fixture *f = *state;
    writer_dies_after(f->path, SIMDR_SYNC_NONE, 3, 1);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    assert_int_equal(simdr_count(s), 3);
    for (int i = 0; i < 3; i++) expect_k(s, i);
    simdr_close(s);
}

/* Bytes below the durable record were synced: a file that lost some of
 * them is damaged, refused by a writable open with nothing changed (before:
 * cut back to the last whole entry, as if the synced write had been torn);
 * the salvaging read-only open serves the sound prefix. Three synced
 * writes: with one-flush syncs the durable record names the tail of the
 * sync before the last (side.c), here k1's end. */
static void test_lost_synced_bytes_are_damage_not_cut(void **state) {
    tu_fixture *f = *state;
    writer_dies_after(f->path, SIMDR_SYNC_DATA, 3, 0);
    tu_truncate(f->path, 200); /* inside k1, which was synced */
    simdr_store *s = NULL;
    assert_int_equal(tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(simdr_last_error(), "made durable by a sync"));
    assert_int_equal(tu_file_size(f->path), 200);
    assert_int_equal(tu_dir_count(f->dir), 1); /* no torn bytes saved: nothing cut */
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    o.salvage = 1;
    assert_int_equal(simdr_open(&s, f->path, &o), SIMDR_OK);
    assert_int_equal(simdr_count(s), 1);
    expect_k(s, 0);
    simdr_close(s);
}

/* The highest tail among the side file's 64-byte record slots from byte
 * `from` up to `to` (the tail is each slot's second word, docs/FORMAT.md). */
static uint64_t side_max_tail(const char *path, unsigned from, unsigned to) {
    char side[4300];
    snprintf(side, sizeof side, "%s.simdr", path);
    size_t len = 0;
    uint8_t *page = tu_read_file(side, &len);
    assert_true(len >= to);
    uint64_t best = 0;
    for (unsigned at = from; at < to; at += 64) {
        uint64_t t = tu_get_le64(page + at + 8);
        if (t > best) best = t;
    }
    free(page);
    return best;
}

/* The highest tail a sync recorded in the side file: its two durable slots
 * (bytes 192 and 256) and two commit slots (320 and 384; one-flush syncs). */
static uint64_t side_durable_tail(const char *path) { return side_max_tail(path, 192, 448); }

/* A writable open took everything it recovered as synced, so simdr_sync
 * after reopening a store whose writer never synced flushed nothing (and
 * recorded no durable tail): a power cut then lost what the sync had
 * acknowledged. */
static void test_sync_after_reopen_makes_previous_writes_durable(void **state) {
    tu_fixture *f = *state;
    writer_dies_after(f->path, SIMDR_SYNC_NONE, 2, 0);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(side_durable_tail(f->path), 0);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(side_durable_tail(f->path), 240);
    simdr_close(s);
}

/* The tail of the side file's newer durable slot (bytes 192 and 256). */
static uint64_t side_durable_slot_tail(const char *path) { return side_max_tail(path, 192, 320); }

/* With one-flush syncs the durable record lags one sync behind what was
 * acknowledged, and the acknowledged rest is kept by a commit record that
 * the next writer's page no longer carries: a writable open after a writer
 * died must make those bytes durable and name them in the durable record
 * (else a power cut after the reopen, before the next sync, loses them). */
static void test_reopen_after_death_keeps_acknowledged_tail_durable(void **state) {
    tu_fixture *f = *state;
    writer_dies_after(f->path, SIMDR_SYNC_DATA, 3, 0);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 3);
    assert_int_equal(side_durable_slot_tail(f->path), 360);
    simdr_close(s);
}

/* ---- a refresh that fails once must not stop later ones ---- */

static void test_refresh_retries_after_failed_reload(void **state) {
    tu_fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "old", "file");
    simdr_close(w);
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(r, "old", "file");
    /* A new file replaces the store, at first not readable as one ... */
    char next[4200];
    snprintf(next, sizeof next, "%s.next", f->path);
    const char junk[] = "not yet a store: being written";
    tu_write_file(next, junk, sizeof junk - 1);
    assert_int_equal(rename(next, f->path), 0);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_ENOTSTORE);
    /* ... the failed refresh changed nothing ... */
    tu_expect_str(r, "old", "file");
    assert_int_equal(simdr_count(r), 1);
    /* ... and once that same file holds a store, a refresh switches to it. */
    char built[4200];
    snprintf(built, sizeof built, "%s.built", f->path);
    w = tu_open(built, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "new", "file");
    tu_put_str(w, "second", "key");
    simdr_close(w);
    size_t len;
    uint8_t *bytes = tu_read_file(built, &len);
    int fd = open(f->path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    free(bytes);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_OK);
    tu_expect_str(r, "new", "file");
    tu_expect_str(r, "second", "key");
    assert_int_equal(simdr_exists(r, "old", 3), 0);
    simdr_close(r);
}

/* ---- readers whose file is cut under them (no SIGBUS) ---- */

typedef struct failing_src {
    int left;
} failing_src;

static int64_t failing_source(void *ctx, void *buf, size_t cap) {
    failing_src *src = ctx;
    if (src->left-- <= 0) return -1; /* the write fails: its bytes are cut */
    size_t n = cap < 256 * 1024 ? cap : 256 * 1024;
    memset(buf, 0x5a, n);
    return (int64_t)n;
}

/* Child: a writer that appends, makes writes fail (the library cuts their
 * bytes again), and restarts with a torn tail that its next open cuts. */
static void cutting_writer(const char *path, int rounds) {
    for (int round = 0; round < rounds; round++) {
        simdr_store *s;
        if (simdr_open(&s, path, NULL) != SIMDR_OK) _exit(1);
        for (int i = 0; i < 8; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-%d", round, i);
            if (simdr_put(s, k, strlen(k), "value", 5, NULL) != SIMDR_OK) _exit(2);
            failing_src src = {1 + i % 4};
            if (simdr_put_stream(s, "fails", 5, failing_source, &src, NULL) != SIMDR_ESOURCE)
                _exit(3);
        }
        simdr_close(s);
        /* a torn append, as a killed writer leaves it */
        int fd = open(path, O_WRONLY | O_APPEND);
        static uint8_t torn[300000];
        memset(torn, 0x11, sizeof torn);
        if (fd < 0 || write(fd, torn, sizeof torn) != (ssize_t)sizeof torn) _exit(4);
        close(fd);
    }
    _exit(0);
}

/* Child: opens the store read-only, says so on ready, then refreshes and
 * reads until done reaches end of file; exits 0. */
static void refreshing_reader(const char *path, int ready, int done) {
    simdr_store *r = NULL;
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    if (simdr_open(&r, path, &o) != SIMDR_OK) _exit(6);
    char one = 1;
    if (write(ready, &one, 1) != 1) _exit(7);
    for (;;) {
        int rc = simdr_refresh(r, NULL);
        if (rc != SIMDR_OK) {
            fprintf(stderr, "refresh: %s\n", simdr_last_error());
            _exit(5);
        }
        char v[16];
        size_t n;
        simdr_get_copy(r, "r0-0", 4, v, sizeof v, &n);
        simdr_entry *e = NULL;
        if (simdr_get_last(r, &e) == SIMDR_OK) simdr_entry_release(e);
        struct pollfd p = {done, POLLIN, 0};
        if (poll(&p, 1, 0) == 1) break;
    }
    simdr_close(r);
    _exit(0);
}

/* A reader whose side file is shortened in place (truncate(1), a shell's
 * '>', cp over it): it read the page through a shared map and died of
 * SIGBUS at its next refresh. In a child, since that is what it died of:
 * a writer appends after the reader opened, the side file is cut to
 * cut_to bytes, and the reader must refresh (taking the end of the file,
 * as without a side file), see the new key and open again. The writer
 * then only exits: its own page is mapped for writing (simdr.h). */
static int reader_after_side_file_cut(const char *path, off_t cut_to, int layout) {
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", path);
    unlink(path);
    unlink(side);
    simdr_store *w = NULL, *r = NULL;
    if (tu_open_status(&w, path, SIMDR_OPEN_CREATE, layout) != SIMDR_OK) return 2;
    if (simdr_put(w, "old", 3, "value", 5, NULL) != SIMDR_OK) return 3;
    if (tu_open_status(&r, path, SIMDR_OPEN_READONLY, layout) != SIMDR_OK) return 4;
    if (simdr_put(w, "new", 3, "later", 5, NULL) != SIMDR_OK || simdr_sync(w) != SIMDR_OK)
        return 5;
    if (truncate(side, cut_to) != 0) return 6;
    uint64_t added = 0;
    int rc = simdr_refresh(r, &added);
    if (rc != SIMDR_OK) {
        fprintf(stderr, "refresh after the side file was cut to %lld bytes: %d %s\n",
                (long long)cut_to, rc, simdr_last_error());
        return 7;
    }
    char buf[16];
    size_t n = 0;
    if (simdr_get_copy(r, "new", 3, buf, sizeof buf, &n) != SIMDR_OK || n != 5 ||
        memcmp(buf, "later", 5) != 0)
        return 8;
    if (simdr_check(r, NULL, NULL, NULL) != SIMDR_OK) return 9;
    simdr_close(r);
    /* A new read-only open finds the short side file too. */
    if (tu_open_status(&r, path, SIMDR_OPEN_READONLY, layout) != SIMDR_OK) return 10;
    if (simdr_count(r) != 2) return 11;
    simdr_close(r);
    return 0;
}

static void test_reader_survives_a_side_file_cut_in_place(void **state) {
    tu_fixture *f = *state;
    const off_t cuts[] = {0, 100, 4095};
    for (int layout = 0; layout <= 1; layout++) {
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            fflush(NULL);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                /* cmocka's handlers would report a fault as a failed test in
                 * the child: let it die of the signal instead. */
                signal(SIGBUS, SIG_DFL);
                signal(SIGSEGV, SIG_DFL);
                _exit(reader_after_side_file_cut(f->path, cuts[i], layout));
            }
            int st;
            assert_int_equal(waitpid(pid, &st, 0), pid);
            if (WIFSIGNALED(st))
                fail_msg("side file cut to %lld bytes (layout %d): the reader died of signal %d",
                         (long long)cuts[i], layout, WTERMSIG(st));
            assert_true(WIFEXITED(st));
            if (WEXITSTATUS(st) != 0)
                fail_msg("side file cut to %lld bytes (layout %d): step %d failed",
                         (long long)cuts[i], layout, WEXITSTATUS(st));
        }
    }
}

/* Links planted where a writer creates its side file and its hint's
 * temporary file (a directory others can write to, such as /tmp): the
 * writer opened them following the link, cut the file it named and wrote
 * its page or its index there. Those files must stay as they were, and the
 * store must still work and reopen whole. */
static void test_links_planted_as_side_or_hint_files_are_not_followed(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    f->s = NULL;
    unlink(f->path);
    char side[4200], hint_tmp[4200], victim_side[4200], victim_hint[4200];
    snprintf(side, sizeof side, "%s.simdr", f->path);
    snprintf(hint_tmp, sizeof hint_tmp, "%s.hint.tmp", f->path);
    tu_join(victim_side, sizeof victim_side, f->dir, "precious-1");
    tu_join(victim_hint, sizeof victim_hint, f->dir, "precious-2");
    static const char precious[] = "someone else's file";
    tu_write_file(victim_side, precious, sizeof precious);
    tu_write_file(victim_hint, precious, sizeof precious);
    unlink(side);
    assert_int_equal(symlink(victim_side, side), 0);
    assert_int_equal(symlink(victim_hint, hint_tmp), 0);
    /* Enough keys for the close to save a hint (65,536). */
    enum { KEYS = 70000 };
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    for (int i = 0; i < KEYS; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(simdr_put(s, k, (size_t)n, k, (size_t)n, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    const char *victims[] = {victim_side, victim_hint};
    for (int v = 0; v < 2; v++) {
        size_t len = 0;
        uint8_t *got = tu_read_file(victims[v], &len);
        if (len != sizeof precious || memcmp(got, precious, len) != 0)
            fail_msg("%s was written through a link (%zu bytes now)", victims[v], len);
        free(got);
    }
    s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), KEYS);
    tu_expect_str(s, "k69999", "k69999");
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    f->s = s;
}

static void test_reader_survives_writer_cutting(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "seed", "value");
    simdr_close(s);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    fflush(NULL);
    pid_t readers[2];
    for (int i = 0; i < 2; i++) {
        readers[i] = fork();
        assert_true(readers[i] >= 0);
        if (readers[i] == 0) {
            close(done[1]);
            close(ready[0]);
            refreshing_reader(f->path, ready[1], done[0]);
        }
    }
    close(ready[1]);
    close(done[0]);
    char two[2];
    assert_int_equal(read(ready[0], two, 1), 1);
    assert_int_equal(read(ready[0], two + 1, 1), 1);
    pid_t writer = fork();
    assert_true(writer >= 0);
    if (writer == 0) cutting_writer(f->path, 40);
    int st;
    assert_int_equal(waitpid(writer, &st, 0), writer);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(done[1]); /* the readers stop */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(waitpid(readers[i], &st, 0), readers[i]);
        if (WIFSIGNALED(st)) fprintf(stderr, "reader died of signal %d\n", WTERMSIG(st));
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    close(ready[0]);
}

/* ---- integrity checks of a store being appended to ---- */

typedef struct appender {
    simdr_store *s;
    atomic_int stop;
    atomic_int n;
    atomic_int failed;
} appender;

/* Each check reads the whole file, so an appender that outpaces the checks
 * (a loaded machine starving the checking thread) grew the file faster than
 * they could read it and the test ran into ctest's timeout: it stops after
 * this many puts (about 6 MB). */
#define APPENDS_MAX 4000

static void *append_loop(void *arg) {
    appender *a = arg;
    uint8_t v[3000];
    memset(v, 'v', sizeof v);
    while (!atomic_load(&a->stop) && atomic_load(&a->n) < APPENDS_MAX) {
        char k[32];
        snprintf(k, sizeof k, "live%d", a->n % 500);
        if (simdr_put(a->s, k, strlen(k), v, 1 + (size_t)(a->n % 2999), NULL) != SIMDR_OK)
            atomic_store(&a->failed, 1);
        atomic_fetch_add(&a->n, 1);
    }
    return NULL;
}

static void test_check_of_live_store_is_clean(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "first", "entry");
    appender a = {s, 0, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, append_loop, &a), 0);
    int checks = 0;
    while (checks < 200 || a.n < 50) {
        simdr_check_report rep;
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
        assert_int_equal(rep.bad_entries, 0);
        checks++;
    }
    atomic_store(&a.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&a.failed), 0);
    simdr_close(s);
}

/* A live writer's bytes in flight are not damage to a check of its own
 * handle (the tail was taken, then the file's size found more bytes). */
static void test_check_during_own_stream_is_clean(void **state) {
    tu_fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "k", "v");
    stream_ctx c = {simdr_file_size(w), 0, NULL, 0, 0, 0, NULL, w, 99};
    assert_int_equal(simdr_put_stream(w, "big", 3, hostile_source, &c, NULL), SIMDR_OK);
    assert_int_equal(c.writer_check_rc, SIMDR_OK);
    simdr_close(w);
}

/* Nor to a read-only open in another handle (as the CLI's check and read
 * make) in the middle of the write: no bytes reported cut, a clean check. */
static void test_readonly_open_during_stream_is_clean(void **state) {
    tu_fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "k", "v");
    stream_ctx c = {simdr_file_size(w), 0, NULL, 0, 99, 99, f->path, NULL, 0};
    assert_int_equal(simdr_put_stream(w, "big", 3, hostile_source, &c, NULL), SIMDR_OK);
    assert_int_equal(c.cut_seen, 0);
    assert_int_equal(c.check_rc, SIMDR_OK);
    assert_int_equal(c.fake_seen, 0);
    simdr_close(w);
}

/* A read-only open while a mapped writer runs, at a moment its side page
 * does not describe the file (a compaction has renamed the new file into
 * place and not yet named it in the page, or the page is unreadable):
 * the open recovers the whole file, and took the preallocated zeros after
 * the writer's tail for a torn tail, so simdr_check (and the CLI's check)
 * called a sound store damaged. A writer holding the side file's lock
 * means those bytes are in flight, whatever its page says. Here the page
 * names another inode for good (one byte of it changed). */
static void test_readonly_open_beside_a_page_naming_another_file_is_clean(void **state) {
    tu_fixture *f = *state;
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    simdr_store *w = NULL;
    assert_int_equal(simdr_open(&w, f->path, &o), SIMDR_OK);
    tu_put_str(w, "k", "v");
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(w)); /* zeros after the tail */
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", f->path);
    uint8_t byte;
    int fd = open(side, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &byte, 1, 24), 1); /* the inode word */
    byte ^= 0x5a;
    assert_int_equal(pwrite(fd, &byte, 1, 24), 1);
    close(fd);
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    assert_int_equal(simdr_check(r, NULL, NULL, NULL), SIMDR_OK);
    tu_expect_str(r, "k", "v");
    simdr_close(r);
    simdr_close(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_refresh_ignores_metadata_lookalike_aligned),
        TU_TEST_DIR(test_refresh_ignores_metadata_lookalike_unaligned),
        TU_TEST_DIR(test_kill_in_metadata_lookalike_aligned),
        TU_TEST_DIR(test_kill_in_metadata_lookalike_unaligned),
        TU_TEST_DIR(test_kill_in_repeated_entry_end),
        TU_TEST_DIR(test_durable_record_decides_without_live_records),
        TU_TEST_DIR(test_full_recovery_checkpoint_crcs),
        TU_TEST_DIR(test_kill_during_first_write),
        TU_TEST_DIR(test_non_store_without_side_file_untouched),
        TU_TEST_DIR(test_torn_key_hash_past_durable_tail_is_cut),
        TU_TEST_DIR(test_live_record_vouches_for_unsynced_entries),
        TU_TEST_DIR(test_lost_synced_bytes_are_damage_not_cut),
        TU_TEST_DIR(test_sync_after_reopen_makes_previous_writes_durable),
        TU_TEST_DIR(test_reopen_after_death_keeps_acknowledged_tail_durable),
        TU_TEST_DIR(test_refresh_retries_after_failed_reload),
        TU_TEST_DIR(test_reader_survives_writer_cutting),
        TU_TEST(test_links_planted_as_side_or_hint_files_are_not_followed),
        TU_TEST_DIR(test_readonly_open_beside_a_page_naming_another_file_is_clean),
        TU_TEST_DIR(test_reader_survives_a_side_file_cut_in_place),
        TU_TEST_DIR(test_check_of_live_store_is_clean),
        TU_TEST_DIR(test_check_during_own_stream_is_clean),
        TU_TEST_DIR(test_readonly_open_during_stream_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
