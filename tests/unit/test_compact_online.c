/*
 * test_compact_online.c - compaction does not stop writers: puts, deletes,
 * syncs and growth of the map and the index made while a compaction copies
 * (through a test hook that runs on the compacting thread without the
 * store's locks, at both points where writes can land: after the first copy
 * and after the catch-up rounds) all reach the compacted file, with the live
 * and dead counts right (a scan of a file said to hold no dead entries walks
 * every entry: a wrong count would serve deleted keys). A writer thread
 * makes progress while a compaction is held at its copy; a store that fails
 * meanwhile, or a write of the catch-up that fails, leaves the old file and
 * every acknowledged write as they were. A child forked while a compaction
 * is in flight is refused a compaction of its own (it never waits for the
 * parent's) and still reads. A durable write that waits for its sync while
 * the compaction's directory fsync fails is not acknowledged. A compaction
 * its caller stops after such writes (simdr_compact_stoppable) leaves them
 * all in the old file, for the writer and a refreshing reader, in both
 * append modes.
 */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "fault_seq.h"
#include "io.h"

#define KEYS 12000
#define FIRST_KEYS 2000 /* written before the compaction */
#define BIG ((size_t)700000) /* two of them pass the unlocked catch-up's threshold */

typedef struct model {
    uint64_t seed[KEYS]; /* the value's seed (0: never written) */
    size_t len[KEYS];
    int live[KEYS];
} model;

static model m;
static uint64_t version = 1;

static void key_name(char *out, size_t cap, int k) { snprintf(out, cap, "online-%d", k); }

static void put_key(simdr_store *s, int k, size_t len) {
    char key[32];
    key_name(key, sizeof key, k);
    uint8_t *v = malloc(len);
    assert_non_null(v);
    uint64_t seed = (uint64_t)k * 1000003u + version++;
    tu_fill(v, len, seed);
    assert_int_equal(simdr_put(s, TU_STR(key), v, len, NULL), SIMDR_OK);
    free(v);
    m.seed[k] = seed;
    m.len[k] = len;
    m.live[k] = 1;
}

static void del_key(simdr_store *s, int k) {
    char key[32];
    key_name(key, sizeof key, k);
    int rc = simdr_delete(s, TU_STR(key), NULL);
    assert_true(rc == SIMDR_OK || rc == SIMDR_NOTFOUND);
    m.live[k] = 0;
}

static uint64_t live_count(void) {
    uint64_t n = 0;
    for (int k = 0; k < KEYS; k++) n += (uint64_t)m.live[k];
    return n;
}

/* Every key as the model has it, by get and by a full iteration. */
static void expect_model(simdr_store *s) {
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        key_name(key, sizeof key, k);
        if (!m.live[k]) {
            tu_expect_absent(s, TU_STR(key));
            continue;
        }
        uint8_t *v = malloc(m.len[k]);
        assert_non_null(v);
        tu_fill(v, m.len[k], m.seed[k]);
        tu_expect_value(s, TU_STR(key), v, m.len[k]);
        free(v);
    }
    assert_int_equal(simdr_count(s), live_count());
    simdr_iter *it = NULL;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    uint64_t seen = 0;
    const simdr_entry *e = NULL;
    int rc;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) seen++;
    assert_int_equal(rc, SIMDR_NOTFOUND);
    simdr_iter_close(it);
    assert_int_equal(seen, live_count());
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
}

/* The identity of the store's file: a compaction changes it. */
static uint64_t file_identity(simdr_store *s) {
    simdr_log_state st;
    assert_int_equal(simdr_log_info(s, &st), SIMDR_OK);
    return st.identity;
}

static void populate(simdr_store *s) {
    memset(&m, 0, sizeof m);
    for (int k = 0; k < FIRST_KEYS; k++) put_key(s, k, 1 + (size_t)(k * 37 % 300));
    for (int k = 0; k < FIRST_KEYS; k += 2) put_key(s, k, 1 + (size_t)(k * 11 % 500));
    for (int k = 0; k < FIRST_KEYS; k += 4) del_key(s, k);
}

/* ---- writes from the compacting thread, between the copy's stages ---- */

static int hook_stages_seen;

static void write_during_copy(simdr_store *s, int stage) {
    hook_stages_seen |= 1 << stage;
    if (stage == 0) {
        /* Keys live at the start overwritten and deleted, deleted keys put
         * again, a delete of a key put and deleted again, thousands of new
         * keys (the index grows), values large enough to replace the map
         * (its reserve is lowered) and to start an unlocked catch-up. */
        for (int k = 1; k < FIRST_KEYS; k += 4) put_key(s, k, 40);
        for (int k = 3; k < FIRST_KEYS; k += 8) del_key(s, k);
        for (int k = 0; k < FIRST_KEYS; k += 8) put_key(s, k, 9);
        for (int k = FIRST_KEYS; k < KEYS - 100; k++) put_key(s, k, 8 + (size_t)(k % 64));
        put_key(s, KEYS - 1, BIG);
        put_key(s, KEYS - 2, BIG);
        del_key(s, KEYS - 3);
        put_key(s, KEYS - 3, 5);
        del_key(s, KEYS - 3);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
    } else {
        /* After the unlocked rounds: what the last catch-up copies under
         * the lock, deletes of keys added meanwhile included. */
        for (int k = FIRST_KEYS; k < FIRST_KEYS + 50; k++) del_key(s, k);
        put_key(s, 3, 77);
        put_key(s, KEYS - 1, 1000);
        for (int k = KEYS - 100; k < KEYS - 3; k++) put_key(s, k, 16);
        del_key(s, 5);
        assert_int_equal(simdr_sync(s), SIMDR_OK);
    }
}

static void writes_during_compaction_reach_the_new_file(tu_fixture *f, int layout) {
    simdr_close(f->s);
    f->s = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
    uint64_t saved_reserve = atomic_load(&simdr__map_min_reserve);
    atomic_store(&simdr__map_min_reserve, UINT64_C(2) << 20);
    populate(f->s);
    hook_stages_seen = 0;
    atomic_store(&simdr__compact_during_copy, write_during_copy);
    uint64_t identity_before = file_identity(f->s);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(hook_stages_seen, 3);
    assert_true(file_identity(f->s) != identity_before);
    assert_int_equal(simdr_layout_of(f->s), layout);
    expect_model(f->s);
    /* The writes made during the copy superseded entries it had copied:
     * the new file holds dead entries, and a second compaction finds them. */
    assert_true(simdr_compaction_savings(f->s) > 0);
    /* Writes after the switch, then the file as it is on disk. */
    put_key(f->s, 7, 123);
    del_key(f->s, 9);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, layout);
    expect_model(f->s);
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    assert_int_equal(simdr_compaction_savings(f->s), 0);
    expect_model(f->s);
    assert_int_equal(tu_dir_count(f->dir), 1); /* no temporary file left */
    atomic_store(&simdr__map_min_reserve, saved_reserve);
}

static void test_writes_during_compaction_aligned(void **state) {
    writes_during_compaction_reach_the_new_file(*state, SIMDR_LAYOUT_ALIGNED64);
}

static void test_writes_during_compaction_unaligned(void **state) {
    writes_during_compaction_reach_the_new_file(*state, SIMDR_LAYOUT_UNALIGNED);
}

/* ---- a writer thread goes on while the compaction is held at its copy ---- */

typedef struct progress {
    simdr_store *s;
    atomic_int go, stop;
    atomic_uint_fast64_t puts;
} progress;

static progress prog;

static void *writer_main(void *p) {
    progress *pr = p;
    while (!atomic_load(&pr->go)) sched_yield();
    for (uint64_t i = 0; !atomic_load(&pr->stop); i++) {
        char key[32];
        snprintf(key, sizeof key, "thread-%llu", (unsigned long long)(i % 5000));
        uint64_t v = i;
        if (simdr_put(pr->s, TU_STR(key), &v, sizeof v, NULL) != SIMDR_OK) break;
        atomic_fetch_add(&pr->puts, 1);
    }
    return NULL;
}

/* Stage 0: waits until the writer thread has completed 1,000 puts. A
 * compaction that held the writer lock here would wait forever (the
 * watchdog fails the test). */
static void wait_for_writer(simdr_store *s, int stage) {
    (void)s;
    if (stage != 0) return;
    uint64_t from = atomic_load(&prog.puts);
    atomic_store(&prog.go, 1);
    while (atomic_load(&prog.puts) < from + 1000) sched_yield();
}

static void test_writer_thread_runs_during_compaction(void **state) {
    tu_fixture *f = *state;
    memset(&m, 0, sizeof m);
    populate(f->s);
    prog.s = f->s;
    atomic_store(&prog.go, 0);
    atomic_store(&prog.stop, 0);
    atomic_store(&prog.puts, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &prog), 0);
    tu_watchdog_start(120, "a compaction waiting for a writer thread");
    atomic_store(&simdr__compact_during_copy, wait_for_writer);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    atomic_store(&prog.stop, 1);
    pthread_join(t, NULL);
    tu_watchdog_stop();
    assert_int_equal(rc, SIMDR_OK);
    uint64_t puts = atomic_load(&prog.puts);
    assert_true(puts >= 1000);
    /* Every put of the thread is there: the newest value of each key. */
    for (uint64_t k = 0; k < 5000 && k < puts; k++) {
        uint64_t last = k + ((puts - 1 - k) / 5000) * 5000;
        char key[32];
        snprintf(key, sizeof key, "thread-%llu", (unsigned long long)k);
        tu_expect_value(f->s, TU_STR(key), &last, sizeof last);
    }
    for (int k = 0; k < FIRST_KEYS; k++) {
        char key[32];
        key_name(key, sizeof key, k);
        if (!m.live[k]) tu_expect_absent(f->s, TU_STR(key));
    }
}

/* ---- failures while the copy runs ---- */

/* Stage 0: a sync fails (the store fails: nothing unconfirmed is trusted). */
static void fail_a_sync(simdr_store *s, int stage) {
    if (stage != 0) return;
    put_key(s, 1, 33);
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    assert_int_not_equal(simdr_sync(s), SIMDR_OK);
    simdr__io_reset();
}

static void test_store_failing_during_compaction_keeps_old_file(void **state) {
    tu_fixture *f = *state;
    populate(f->s);
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    int64_t size = tu_file_size(f->path);
    uint8_t before[32], after[32];
    tu_sha256_file(f->path, before);
    atomic_store(&simdr__compact_during_copy, fail_a_sync);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    assert_int_equal(rc, SIMDR_EFAILED);
    /* The old file is the store: its synced prefix as it was, the put made
     * during the copy after it (never acknowledged durable). */
    assert_true(tu_file_size(f->path) > size);
    assert_int_equal(tu_dir_count(f->dir), 1);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    tu_truncate(f->path, (uint64_t)size);
    tu_sha256_file(f->path, after);
    assert_memory_equal(before, after, 32);
}

/* Stage 1: the next write to the new file fails (the last catch-up's). */
static void fail_next_new_file_write(simdr_store *s, int stage) {
    if (stage != 1) return;
    put_key(s, 2, 44);
    del_key(s, 6);
    simdr__io_fail_nth(SIMDR__IO_PWRITE, 2, ENOSPC); /* the put's own write is the first */
    put_key(s, 10, 55);
}

static void test_failed_catch_up_keeps_every_write(void **state) {
    tu_fixture *f = *state;
    populate(f->s);
    uint64_t gen = file_identity(f->s);
    atomic_store(&simdr__compact_during_copy, fail_next_new_file_write);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_ENOSPC);
    assert_int_equal(file_identity(f->s), gen);
    assert_int_equal(tu_dir_count(f->dir), 1);
    expect_model(f->s);
    /* The next compaction succeeds, and the store keeps working. */
    assert_int_equal(simdr_compact(f->s), SIMDR_OK);
    put_key(f->s, 11, 66);
    expect_model(f->s);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    expect_model(f->s);
}

/* ---- a durable write waiting for its sync when the directory sync fails ----
 *
 * A durable writer appends during the copy and waits for the sync lock,
 * which the compaction takes first: the last catch-up copies the write, the
 * rename goes through and the directory fsync fails. A power cut could
 * bring the old file back, where the write was never synced, so the writer
 * must not be told it is durable. The interleaving is forced: a helper
 * thread holds the sync lock until the compaction waits for it, lets the
 * writer queue behind it (each thread seen asleep in /proc), then lets go;
 * the lock goes to the first waiter, the compaction. */

typedef struct parked {
    simdr_store *s;
    atomic_int holding, compactor_tid, writer_tid, writer_done;
    int writer_rc;
    pthread_t holder, writer;
} parked;

static parked pk;

static int thread_id(void) { return (int)syscall(SYS_gettid); }

/* 1 when thread tid of this process sleeps (state S: here, on a mutex). */
static int asleep(int tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'S';
}

static void *durable_writer_main(void *p) {
    (void)p;
    atomic_store(&pk.writer_tid, thread_id());
    pk.writer_rc = simdr_put(pk.s, TU_STR("late"), "durable?", 8, NULL);
    atomic_store(&pk.writer_done, 1);
    return NULL;
}

static void *sync_lock_holder_main(void *p) {
    (void)p;
    pthread_mutex_lock(&pk.s->sync_lock);
    atomic_store(&pk.holding, 1);
    while (!asleep(atomic_load(&pk.compactor_tid))) sched_yield();
    assert_int_equal(pthread_create(&pk.writer, NULL, durable_writer_main, NULL), 0);
    while (atomic_load(&pk.s->sync_queued) == 0 || !atomic_load(&pk.writer_tid) ||
           !asleep(atomic_load(&pk.writer_tid)))
        sched_yield();
    /* The writer's entry is in the old file, unsynced, and it sleeps on the
     * lock behind the compaction. */
    simdr__io_fail_nth(SIMDR__IO_FSYNC_DIR, 1, EIO);
    pthread_mutex_unlock(&pk.s->sync_lock);
    return NULL;
}

static void park_a_durable_writer(simdr_store *s, int stage) {
    if (stage != 1) return;
    atomic_store(&pk.compactor_tid, thread_id());
    assert_int_equal(pthread_create(&pk.holder, NULL, sync_lock_holder_main, NULL), 0);
    while (!atomic_load(&pk.holding)) sched_yield();
    (void)s;
}

static void test_durable_write_not_acknowledged_when_directory_sync_fails(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_CREATE;
    o.durability = SIMDR_SYNC_DATA;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    /* Distinct keys, each written once: the compacted file is exactly as
     * long as the old one, the writer's entry included. */
    for (int k = 0; k < 200; k++) {
        char key[32];
        key_name(key, sizeof key, k);
        assert_int_equal(simdr_put(f->s, TU_STR(key), key, strlen(key), NULL), SIMDR_OK);
    }
    memset(&pk, 0, sizeof pk);
    pk.s = f->s;
    tu_watchdog_start(60, "a compaction with a durable writer parked on its sync");
    simdr__io_reset();
    atomic_store(&simdr__compact_during_copy, park_a_durable_writer);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    pthread_join(pk.holder, NULL);
    pthread_join(pk.writer, NULL);
    tu_watchdog_stop();
    uint64_t fdatasyncs = simdr__io_calls(SIMDR__IO_FDATASYNC);
    simdr__io_reset();
    assert_int_equal(rc, SIMDR_EIO);
    assert_true(strstr(simdr_last_error(), "directory") != NULL);
    /* The writer's entry was never synced in the old file ... */
    assert_int_equal(fdatasyncs, 0);
    /* ... so its put is not acknowledged. */
    assert_int_equal(pk.writer_rc, SIMDR_EFAILED);
    /* The handle serves what it promised, and refuses the rest. */
    for (int k = 0; k < 200; k += 37) {
        char key[32];
        key_name(key, sizeof key, k);
        tu_expect_value(f->s, TU_STR(key), key, strlen(key));
    }
    assert_int_equal(simdr_put(f->s, TU_STR("after"), "y", 1, NULL), SIMDR_EFAILED);
    assert_int_equal(simdr_sync(f->s), SIMDR_EFAILED);
    assert_int_equal(simdr_compact(f->s), SIMDR_EFAILED);
    /* Reopened, the store is the compacted file (the rename did happen):
     * every acknowledged key, and no temporary file. */
    simdr_close(f->s);
    o.open_mode = SIMDR_OPEN_EXISTING;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    for (int k = 0; k < 200; k++) {
        char key[32];
        key_name(key, sizeof key, k);
        tu_expect_value(f->s, TU_STR(key), key, strlen(key));
    }
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(tu_dir_count(f->dir), 1);
}

/* ---- every system call of a compaction with writes during it, failed in turn ----
 *
 * The copy, the writes made between its stages (on the compacting thread,
 * as above: puts of new keys, one large enough for an unlocked catch-up,
 * overwrites, deletes, a sync) and the switch make some hundred calls
 * through the system-call table; each fails in turn (fault_seq.h: a failed
 * write moves half its bytes first). Whatever failed, every acknowledged
 * write is served, every key a failed write touched is either as it was or
 * as written (and, once a sync failed, what came after the last successful
 * one may be withdrawn), and so after a reopen without faults; the store
 * passes its check and no temporary file is left. Then the same with every
 * call failing from the nth on. */

#define SWEEP_BASE 64      /* keys written before the compaction */
#define SWEEP_KEYS 96      /* ... and by the writes during it */

typedef struct sweep_model {
    uint64_t seed[SWEEP_KEYS]; /* newest acknowledged value's seed, 0 = absent */
    size_t len[SWEEP_KEYS];
    uint64_t maybe_seed[SWEEP_KEYS]; /* a failed write's value: may or may not be there */
    size_t maybe_len[SWEEP_KEYS];
    int maybe_absent[SWEEP_KEYS];    /* a failed delete */
    /* The values at the last successful sync: after a failed one (the
     * failed state) the handle withdraws what came after, and a reopen
     * may or may not find it. */
    uint64_t synced_seed[SWEEP_KEYS];
    size_t synced_len[SWEEP_KEYS];
    int sync_failed;
} sweep_model;

static sweep_model sm;

static void sweep_put(simdr_store *s, int k, size_t len) {
    char key[32];
    snprintf(key, sizeof key, "sweep-%d", k);
    uint8_t *v = malloc(len);
    assert_non_null(v);
    uint64_t seed = (uint64_t)k << 32 | version++;
    tu_fill(v, len, seed);
    int rc = simdr_put(s, TU_STR(key), v, len, NULL);
    free(v);
    if (rc == SIMDR_OK) {
        sm.seed[k] = seed;
        sm.len[k] = len;
        sm.maybe_seed[k] = 0;
        sm.maybe_absent[k] = 0;
    } else {
        sm.maybe_seed[k] = seed;
        sm.maybe_len[k] = len;
    }
}

static void sweep_del(simdr_store *s, int k) {
    char key[32];
    snprintf(key, sizeof key, "sweep-%d", k);
    int rc = simdr_delete(s, TU_STR(key), NULL);
    if (rc == SIMDR_OK || rc == SIMDR_NOTFOUND) {
        sm.seed[k] = 0;
        sm.maybe_seed[k] = 0;
        sm.maybe_absent[k] = 0;
    } else {
        sm.maybe_absent[k] = 1;
    }
}

static void sweep_sync(simdr_store *s) {
    if (simdr_sync(s) != SIMDR_OK) {
        sm.sync_failed = 1;
        return;
    }
    memcpy(sm.synced_seed, sm.seed, sizeof sm.seed);
    memcpy(sm.synced_len, sm.len, sizeof sm.len);
}

static void sweep_writes(simdr_store *s, int stage) {
    if (stage == 0) {
        for (int k = SWEEP_BASE; k < SWEEP_KEYS - 8; k++) sweep_put(s, k, 10 + (size_t)k);
        sweep_put(s, SWEEP_KEYS - 1, (size_t)1200000); /* past the unlocked catch-up's threshold */
        for (int k = 0; k < SWEEP_BASE; k += 5) sweep_del(s, k);
        for (int k = 1; k < SWEEP_BASE; k += 7) sweep_put(s, k, 33);
        sweep_sync(s);
    } else {
        for (int k = SWEEP_KEYS - 8; k < SWEEP_KEYS - 1; k++) sweep_put(s, k, 20);
        sweep_del(s, SWEEP_BASE + 1);
        sweep_put(s, 2, 44);
    }
}

/* Each key holds its acknowledged value, or what a failed write left. */
static void sweep_expect(simdr_store *s, uint64_t nth) {
    for (int k = 0; k < SWEEP_KEYS; k++) {
        char key[32];
        snprintf(key, sizeof key, "sweep-%d", k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, TU_STR(key), &e);
        int ok;
        int withdrawn = sm.sync_failed;
        if (rc == SIMDR_NOTFOUND) {
            ok = sm.seed[k] == 0 || sm.maybe_absent[k] || (withdrawn && sm.synced_seed[k] == 0);
        } else {
            assert_int_equal(rc, SIMDR_OK);
            size_t len = simdr_entry_size(e);
            uint8_t *want = malloc(len);
            assert_non_null(want);
            ok = 0;
            if (sm.seed[k] && len == sm.len[k]) {
                tu_fill(want, len, sm.seed[k]);
                ok = memcmp(want, simdr_entry_data(e), len) == 0;
            }
            if (!ok && sm.maybe_seed[k] && len == sm.maybe_len[k]) {
                tu_fill(want, len, sm.maybe_seed[k]);
                ok = memcmp(want, simdr_entry_data(e), len) == 0;
            }
            if (!ok && withdrawn && sm.synced_seed[k] && len == sm.synced_len[k]) {
                tu_fill(want, len, sm.synced_seed[k]);
                ok = memcmp(want, simdr_entry_data(e), len) == 0;
            }
            free(want);
            simdr_entry_release(e);
        }
        if (!ok)
            fail_msg("call %llu failed: key %d is %s, acknowledged %s",
                     (unsigned long long)nth, k, rc == SIMDR_NOTFOUND ? "absent" : "another value",
                     sm.seed[k] ? "a value" : "absent");
    }
}

static void sweep_one(tu_fixture *f, uint64_t nth, int every_after, uint64_t *calls) {
    simdr_close(f->s);
    f->s = NULL;
    unlink(f->path);
    f->s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    memset(&sm, 0, sizeof sm);
    for (int k = 0; k < SWEEP_BASE; k++) sweep_put(f->s, k, 1 + (size_t)(k * 13 % 200));
    for (int k = 0; k < SWEEP_BASE; k += 3) sweep_put(f->s, k, 7); /* garbage to drop */
    sweep_sync(f->s);
    atomic_store(&simdr__compact_during_copy, sweep_writes);
    fault_seq_on(nth, every_after);
    int rc = simdr_compact(f->s);
    if (calls) *calls = fault_seq_calls();
    fault_seq_off();
    atomic_store(&simdr__compact_during_copy, NULL);
    if (rc != SIMDR_OK) assert_non_null(strstr(simdr_last_error(), f->path));
    /* A failed store (a failed sync) withdraws what it never synced. */
    if (simdr_put(f->s, TU_STR("probe"), "p", 1, NULL) == SIMDR_EFAILED) sm.sync_failed = 1;
    sweep_expect(f->s, nth);
    assert_int_equal(simdr_close(f->s) == SIMDR_OK || rc != SIMDR_OK, 1);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    sweep_expect(f->s, nth);
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
    /* No temporary file left (a torn tail the reopen saved may be). */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.compact", f->path);
    assert_int_equal(tu_file_size(tmp), -1);
}

static void test_each_call_of_an_online_compaction_failed_in_turn(void **state) {
    tu_fixture *f = *state;
    uint64_t calls = 0;
    sweep_one(f, 0, 0, &calls); /* counting only */
    assert_true(calls > 20);
    /* One call failed, then every call from it on (a device gone). */
    for (uint64_t nth = 1; nth <= calls; nth++) sweep_one(f, nth, 0, NULL);
    for (uint64_t nth = 1; nth <= calls; nth++) sweep_one(f, nth, 1, NULL);
}

/* ---- a compaction stopped by its caller after writes landed meanwhile ---- */

/* simdr_compact_stoppable's question: stop as soon as the writes of the
 * copy's first stage have landed (the first catch-up round asks next). */
static int stop_after_writes(void *ctx) {
    (void)ctx;
    return hook_stages_seen & 1;
}

/* Writes made during the copy (thousands of new keys, values that replace
 * the map and the index), then the caller stops the compaction: the store
 * stays on its old file holding every one of them, by the writer, by a
 * read-only handle opened before that refreshes, and after a reopen; a
 * compaction left to run then completes. In both append modes. */
static void stopped_after_writes_keeps_them(tu_fixture *f, int append_mode) {
    simdr_close(f->s);
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = append_mode;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    uint64_t saved_reserve = atomic_load(&simdr__map_min_reserve);
    atomic_store(&simdr__map_min_reserve, UINT64_C(2) << 20);
    populate(f->s);
    simdr_store *ro = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    uint64_t identity_before = file_identity(f->s);
    hook_stages_seen = 0;
    atomic_store(&simdr__compact_during_copy, write_during_copy);
    int rc = simdr_compact_stoppable(f->s, stop_after_writes, NULL);
    atomic_store(&simdr__compact_during_copy, NULL);
    assert_int_equal(rc, SIMDR_ESTOPPED);
    assert_int_equal(hook_stages_seen, 1); /* stopped before the second stage */
    assert_int_equal(file_identity(f->s), identity_before);
    assert_int_equal(tu_dir_count(f->dir), 1); /* the new file removed */
    expect_model(f->s);
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(ro, &added), SIMDR_OK);
    assert_true(added > 0);
    expect_model(ro);
    assert_int_equal(simdr_close(ro), SIMDR_OK);
    put_key(f->s, 7, 123);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    expect_model(f->s);
    hook_stages_seen = 0; /* no writes meanwhile now: the question is never yes */
    assert_int_equal(simdr_compact_stoppable(f->s, stop_after_writes, NULL), SIMDR_OK);
    assert_true(file_identity(f->s) != identity_before);
    assert_int_equal(simdr_compaction_savings(f->s), 0);
    expect_model(f->s);
    atomic_store(&simdr__map_min_reserve, saved_reserve);
}

static void test_stopped_compaction_keeps_writes_made_meanwhile(void **state) {
    stopped_after_writes_keeps_them(*state, SIMDR_APPEND_WRITE);
}

static void test_stopped_compaction_keeps_mapped_writes_made_meanwhile(void **state) {
    stopped_after_writes_keeps_them(*state, SIMDR_APPEND_MAPPED);
}

/* ---- fork while a compaction is in flight ---- */

static int child_status = -1;

/* Stage 0: a child forked here inherits the compaction in flight (its lock
 * held by a thread the child lacks). Its own compaction must be refused at
 * once, not wait forever (the alarm turns a hang into a failure), and its
 * reads must work. */
static void fork_during_copy(simdr_store *s, int stage) {
    if (stage != 0) return;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20);
        int bad = simdr_compact(s) != SIMDR_EINVAL;
        char key[32];
        key_name(key, sizeof key, 1);
        simdr_entry *e = NULL;
        bad |= simdr_get(s, TU_STR(key), &e) != SIMDR_OK;
        if (e) simdr_entry_release(e);
        simdr_close(s);
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_child_forked_during_compaction_is_refused_not_stuck(void **state) {
    tu_fixture *f = *state;
    populate(f->s);
    child_status = -1;
    atomic_store(&simdr__compact_during_copy, fork_during_copy);
    int rc = simdr_compact(f->s);
    atomic_store(&simdr__compact_during_copy, NULL);
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(child_status, 0);
    expect_model(f->s);
}

/* Stage 0: a child forked here lives on (until killed) and sends its pid
 * down the pipe. */
static int sleeper_pipe[2];

static void fork_a_sleeper(simdr_store *s, int stage) {
    (void)s;
    if (stage != 0) return;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pid_t me = getpid();
        if (write(sleeper_pipe[1], &me, sizeof me) != (ssize_t)sizeof me) _exit(1);
        for (;;) pause();
    }
}

/* A child forked during a compaction inherits the new file's descriptor,
 * whose description holds the lock that becomes the store's writer lock at
 * the switch. The fork handler closes the child's copy: when the parent
 * dies without closing the store, the next writer may open it while the
 * child lives (it got SIMDR_ELOCKED until the child exited). */
static void test_child_forked_during_compaction_holds_no_lock(void **state) {
    tu_fixture *f = *state;
    assert_int_equal(pipe(sleeper_pipe), 0);
    pid_t parent = fork();
    assert_true(parent >= 0);
    if (parent == 0) {
        simdr_store *s = tu_open(f->other, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
        for (int k = 0; k < 100; k++) put_key(s, k, 10);
        for (int k = 0; k < 100; k += 2) del_key(s, k);
        atomic_store(&simdr__compact_during_copy, fork_a_sleeper);
        int rc = simdr_compact(s);
        _exit(rc == SIMDR_OK ? 0 : 1); /* dies holding the store open */
    }
    int st = 0;
    assert_int_equal(waitpid(parent, &st, 0), parent);
    pid_t sleeper = 0;
    ssize_t got = read(sleeper_pipe[0], &sleeper, sizeof sleeper);
    close(sleeper_pipe[0]);
    close(sleeper_pipe[1]);
    assert_int_equal(got, (ssize_t)sizeof sleeper);
    simdr_store *again = NULL;
    int rc = tu_open_status(&again, f->other, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(simdr_count(again), 50);
    simdr_close(again);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_writes_during_compaction_aligned),
        TU_TEST(test_writes_during_compaction_unaligned),
        TU_TEST(test_writer_thread_runs_during_compaction),
        TU_TEST(test_store_failing_during_compaction_keeps_old_file),
        TU_TEST(test_failed_catch_up_keeps_every_write),
        TU_TEST(test_child_forked_during_compaction_is_refused_not_stuck),
        TU_TEST(test_child_forked_during_compaction_holds_no_lock),
        TU_TEST(test_durable_write_not_acknowledged_when_directory_sync_fails),
        TU_TEST(test_each_call_of_an_online_compaction_failed_in_turn),
        TU_TEST(test_stopped_compaction_keeps_writes_made_meanwhile),
        TU_TEST(test_stopped_compaction_keeps_mapped_writes_made_meanwhile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
