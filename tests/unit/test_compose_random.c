/*
 * test_compose_random.c - random sequences of every kind of write, checked
 * against a model, where the features meet that other suites test one or
 * two at a time:
 * - value sizes on both sides of every buffer size of src/ (64-byte pads,
 *   4 KiB pages, 64 KiB, the 1 MiB windows and chunks, 2 MiB, 3 MiB, the
 *   4 MiB copy buffer, 8 MiB drops, 16 MiB batch copies and mapped windows);
 * - puts, batches (a later item of a key wins), batches mixing puts and
 *   deletes, streams fed in chunks of odd sizes, deletes of present and
 *   absent keys, renames;
 * - compactions, inline and (in half the runs) on a thread of their own
 *   while everything else goes on; syncs;
 * - reopens of the writer with a new draw of append mode (pwrite or
 *   mapped), durability, hint use and read checks, the layout detected
 *   from the file;
 * - a read-only handle in the same process refreshed and compared with the
 *   model, and reopened (with or without the hint);
 * - a forked read-only process that opens, refreshes, iterates and checks
 *   the store the whole time; every value carries its key, version and
 *   length, so that process can tell a wrong or torn value by itself.
 * Each run ends with a full comparison, a reopen and simdr_check. The seed
 * is $SIMDR_TEST_SEED or fixed; $SIMDR_TEST_SCALE scales the steps.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEYS 24
#define HEADER 16 /* key (4), version (4), length (8) */

/* ---- values that describe themselves ---- */

static uint8_t body_byte(uint32_t key, uint32_t ver, uint64_t i) {
    uint64_t x = (uint64_t)key * UINT64_C(0x9E3779B97F4A7C15) ^
                 (uint64_t)ver * UINT64_C(0xBF58476D1CE4E5B9) ^
                 (i / 8) * UINT64_C(0x94D049BB133111EB);
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i % 8))) | (uint8_t)(i == 0); /* never all zeros */
}

/* Byte i of the value of version ver of key, len bytes long: a header of
 * key, version and length when the value holds one, then the body. */
static uint8_t value_byte(uint32_t key, uint32_t ver, uint64_t len, uint64_t i) {
    if (len >= HEADER && i < HEADER) {
        uint64_t w = i < 8 ? ((uint64_t)ver << 32 | key) : len;
        return (uint8_t)(w >> (8 * (i % 8)));
    }
    return body_byte(key, ver, i);
}

static uint8_t *make_value(uint32_t key, uint32_t ver, size_t len) {
    uint8_t *v = malloc(len);
    assert_non_null(v);
    for (size_t i = 0; i < len; i++) v[i] = value_byte(key, ver, len, i);
    return v;
}

/* Bytes compared: all of a small value, a stride through a large one (and
 * always its first and last byte). */
static size_t stride_of(uint64_t len) { return len > 200000 ? 4093 : 1; }

/* 1 when data is a value made by make_value (whatever its key and version). */
static int value_describes_itself(const uint8_t *d, uint64_t len) {
    if (len < HEADER) return 1;
    uint64_t w0 = 0, w1 = 0;
    for (int i = 7; i >= 0; i--) {
        w0 = w0 << 8 | d[i];
        w1 = w1 << 8 | d[8 + i];
    }
    if (w1 != len) return 0;
    uint32_t key = (uint32_t)w0, ver = (uint32_t)(w0 >> 32);
    for (uint64_t i = HEADER; i < len; i += stride_of(len))
        if (d[i] != value_byte(key, ver, len, i)) return 0;
    return d[len - 1] == value_byte(key, ver, len, len - 1);
}

/* ---- sizes ---- */

static const size_t edge_sizes[] = {
    1, 2, 3, 17, 20, 21, 43, 44, 45, 63, 64, 65, 127, 128, 4075, 4076, 4095, 4096, 4097, 8192,
    65515, 65516, 65535, 65536, 65537,
    /* from here on: at most one a batch */
    (1u << 20) - 20, (1u << 20) - 1, 1u << 20, (1u << 20) + 1, (2u << 20) - 1, 2u << 20,
    (2u << 20) + 1, 3u << 20, (3u << 20) + 7, (4u << 20) - 1, 4u << 20, (4u << 20) + 1,
    (8u << 20) + 1, (16u << 20) - 20, (16u << 20) - 1, 16u << 20, (16u << 20) + 1};
#define EDGES (sizeof edge_sizes / sizeof edge_sizes[0])
#define SMALL_EDGES 25 /* edge_sizes[0..25) are below 1 MiB */

/* ---- one run ---- */

typedef struct run_state {
    uint64_t rng;
    const char *path;
    simdr_store *w, *r;
    int layout;
    /* the model: per key, present, the key and version its bytes were made
     * for (a rename moves them), and their length */
    int has[KEYS];
    uint32_t src[KEYS], ver[KEYS];
    size_t len[KEYS];
    uint32_t next_ver;
    int step;
    /* a thread compacting while the steps run; handle_lock keeps the
     * writer's close and reopen away from it */
    pthread_rwlock_t handle_lock;
    atomic_int stop_compactor;
    atomic_int compactor_failures;
} run_state;

static uint64_t rnd(run_state *st) { return tu_rand(&st->rng); }

static size_t pick_size(run_state *st, int small_only) {
    if (rnd(st) % 3 == 0) return 1 + (size_t)(rnd(st) % 300);
    size_t n = edge_sizes[rnd(st) % (small_only ? SMALL_EDGES : EDGES)];
    /* Values over 4 MiB are drawn a quarter as often: they cost the time. */
    if (n > (4u << 20) && rnd(st) % 4) n = edge_sizes[rnd(st) % SMALL_EDGES];
    return n;
}

static void key_name(int k, char *out, size_t cap) { snprintf(out, cap, "key-%d", k); }

static void fail_at(const run_state *st, const char *who, const char *what, int k) {
    fail_msg("step %d, %s: key %d: %s (%s)", st->step, who, k, what, simdr_last_error());
}

static int print_issue(void *ctx, const simdr_check_issue *issue) {
    (void)ctx;
    fprintf(stderr, "check: %s at %llu..%llu (key hash %016llx, code %d)\n", issue->what,
            (unsigned long long)issue->offset, (unsigned long long)issue->end,
            (unsigned long long)issue->key_hash, issue->code);
    return 0;
}

/* Every key as the model says, the count, and with full also every byte
 * the stride reaches of large values, an iteration and simdr_check. */
static void expect_model(run_state *st, simdr_store *s, const char *who, int full) {
    uint64_t live = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        key_name(k, key, sizeof key);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, key, strlen(key), &e);
        if (!st->has[k]) {
            if (rc != SIMDR_NOTFOUND) fail_at(st, who, "present, the model says absent", k);
            continue;
        }
        live++;
        if (rc != SIMDR_OK) fail_at(st, who, "lookup failed", k);
        uint64_t n = simdr_entry_size(e);
        if (n != st->len[k]) fail_at(st, who, "wrong length", k);
        if (full || n < 100000) {
            const uint8_t *d = simdr_entry_data(e);
            for (uint64_t i = 0; i < n; i += stride_of(n))
                if (d[i] != value_byte(st->src[k], st->ver[k], n, i)) fail_at(st, who, "wrong byte", k);
            if (d[n - 1] != value_byte(st->src[k], st->ver[k], n, n - 1))
                fail_at(st, who, "wrong last byte", k);
        }
        if (simdr_layout_of(s) == SIMDR_LAYOUT_ALIGNED64 && n > 1 &&
            ((uintptr_t)simdr_entry_data(e) & 63) != 0)
            fail_at(st, who, "an aligned store's payload off its 64-byte boundary", k);
        simdr_entry_release(e);
    }
    if (simdr_count(s) != live) fail_at(st, who, "count differs from the model", -1);
    if (!full) return;
    if (simdr_check(s, print_issue, NULL, NULL) != SIMDR_OK) fail_at(st, who, "simdr_check", -1);
    simdr_iter *it = NULL;
    assert_int_equal(simdr_iter_open(s, &it), SIMDR_OK);
    const simdr_entry *e;
    uint64_t seen = 0;
    int rc;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) seen++;
    simdr_iter_close(it);
    if (rc != SIMDR_NOTFOUND || seen != live) fail_at(st, who, "iteration differs", -1);
}

static void open_writer(run_state *st) {
    simdr_options o;
    simdr_options_init(&o);
    o.layout = st->layout; /* used for the new file only */
    o.append_mode = rnd(st) % 2 ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    o.use_hint = rnd(st) % 4 != 0;
    o.verify_reads = rnd(st) % 3 != 0;
    o.durability = rnd(st) % 4 == 0 ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
    int rc = simdr_open(&st->w, st->path, &o);
    if (rc != SIMDR_OK) fail_at(st, "writer", "open failed", -1);
}

static void open_reader(run_state *st) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    o.use_hint = (int)(rnd(st) % 2);
    int rc = simdr_open(&st->r, st->path, &o);
    if (rc != SIMDR_OK) fail_at(st, "reader", "open failed", -1);
}

static void note_value(run_state *st, int k, uint32_t ver, size_t len) {
    st->has[k] = 1;
    st->src[k] = (uint32_t)k;
    st->ver[k] = ver;
    st->len[k] = len;
}

typedef struct stream_src {
    run_state *st;
    uint32_t key, ver;
    size_t len, pos;
} stream_src;

/* Chunks of 1 byte to cap, often not what was asked for. */
static int64_t stream_read(void *ctx, void *buf, size_t cap) {
    stream_src *s = ctx;
    size_t left = s->len - s->pos;
    size_t want = rnd(s->st) % 3 == 0 ? cap : 1 + (size_t)(rnd(s->st) % (cap < 70000 ? cap : 70000));
    if (want > left) want = left;
    for (size_t i = 0; i < want; i++)
        ((uint8_t *)buf)[i] = value_byte(s->key, s->ver, s->len, s->pos + i);
    s->pos += want;
    return (int64_t)want;
}

static void *compactor(void *arg) {
    run_state *st = arg;
    while (!atomic_load(&st->stop_compactor)) {
        pthread_rwlock_rdlock(&st->handle_lock);
        int rc = simdr_compact(st->w);
        pthread_rwlock_unlock(&st->handle_lock);
        if (rc != SIMDR_OK) {
            fprintf(stderr, "background compaction: %d %s\n", rc, simdr_last_error());
            atomic_fetch_add(&st->compactor_failures, 1);
        }
        usleep(2000);
    }
    return NULL;
}

/* The forked reader: until the pipe closes, opens now and then, refreshes,
 * walks every entry checking it describes itself, and checks the store. */
static int watching_reader(const char *path, int stop_fd) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    simdr_store *s = NULL;
    for (long round = 0;; round++) {
        char c;
        if (read(stop_fd, &c, 1) == 0) break; /* EAGAIN: go on */
        if (!s && simdr_open(&s, path, &o) != SIMDR_OK) {
            fprintf(stderr, "watching reader: open: %s\n", simdr_last_error());
            return 2;
        }
        uint64_t added;
        if (simdr_refresh(s, &added) != SIMDR_OK) {
            fprintf(stderr, "watching reader: refresh: %s\n", simdr_last_error());
            return 3;
        }
        simdr_iter *it = NULL;
        if (simdr_iter_open(s, &it) != SIMDR_OK) return 4;
        const simdr_entry *e;
        int rc;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            if (!value_describes_itself(simdr_entry_data(e), simdr_entry_size(e))) {
                fprintf(stderr, "watching reader: a wrong value of %llu bytes at %llu\n",
                        (unsigned long long)simdr_entry_size(e),
                        (unsigned long long)simdr_entry_offset(e));
                return 5;
            }
        }
        simdr_iter_close(it);
        if (rc != SIMDR_NOTFOUND) {
            fprintf(stderr, "watching reader: iteration: %d %s\n", rc, simdr_last_error());
            return 6;
        }
        if (simdr_check(s, NULL, NULL, NULL) != SIMDR_OK) {
            fprintf(stderr, "watching reader: check: %s\n", simdr_last_error());
            return 7;
        }
        if (round % 7 == 6) {
            simdr_close(s);
            s = NULL;
        }
    }
    simdr_close(s);
    return 0;
}

static void one_step(run_state *st) {
    int op = (int)(rnd(st) % 100), k = (int)(rnd(st) % KEYS), rc;
    char key[32];
    key_name(k, key, sizeof key);
    if (op < 30) {
        size_t n = pick_size(st, 0);
        uint32_t v = st->next_ver++;
        uint8_t *b = make_value((uint32_t)k, v, n);
        rc = simdr_put(st->w, key, strlen(key), b, n, NULL);
        free(b);
        if (rc != SIMDR_OK) fail_at(st, "put", "failed", k);
        note_value(st, k, v, n);
    } else if (op < 40) {
        enum { MAX_ITEMS = 6 };
        int m = 1 + (int)(rnd(st) % MAX_ITEMS), ks[MAX_ITEMS];
        simdr_kv items[MAX_ITEMS];
        char names[MAX_ITEMS][32];
        uint8_t *bufs[MAX_ITEMS];
        uint32_t vs[MAX_ITEMS];
        /* Half the batches are simdr_write_batch, a third of their items deletes. */
        int mixed = (int)(rnd(st) % 2);
        for (int i = 0; i < m; i++) {
            ks[i] = (int)(rnd(st) % KEYS);
            key_name(ks[i], names[i], sizeof names[i]);
            if (mixed && rnd(st) % 3 == 0) {
                bufs[i] = NULL;
                items[i] = (simdr_kv){names[i], strlen(names[i]), NULL, 0};
                continue;
            }
            size_t n = pick_size(st, i > 0); /* one large value at most */
            vs[i] = st->next_ver++;
            bufs[i] = make_value((uint32_t)ks[i], vs[i], n);
            items[i] = (simdr_kv){names[i], strlen(names[i]), bufs[i], n};
        }
        rc = mixed ? simdr_write_batch(st->w, items, (size_t)m, NULL)
                   : simdr_put_batch(st->w, items, (size_t)m, NULL);
        if (rc != SIMDR_OK) fail_at(st, mixed ? "write batch" : "batch", "failed", ks[0]);
        for (int i = 0; i < m; i++) {
            if (bufs[i])
                note_value(st, ks[i], vs[i], items[i].value_len);
            else
                st->has[ks[i]] = 0;
            free(bufs[i]);
        }
    } else if (op < 50) {
        stream_src src = {st, (uint32_t)k, st->next_ver++, pick_size(st, 0), 0};
        rc = simdr_put_stream(st->w, key, strlen(key), stream_read, &src, NULL);
        if (rc != SIMDR_OK) fail_at(st, "stream", "failed", k);
        note_value(st, k, src.ver, src.len);
    } else if (op < 58) {
        rc = simdr_delete(st->w, key, strlen(key), NULL);
        if (rc != (st->has[k] ? SIMDR_OK : SIMDR_NOTFOUND)) fail_at(st, "delete", "wrong answer", k);
        st->has[k] = 0;
    } else if (op < 63) {
        int to = (int)(rnd(st) % KEYS);
        if (to == k) return;
        char new_key[32];
        key_name(to, new_key, sizeof new_key);
        rc = simdr_rename(st->w, key, strlen(key), new_key, strlen(new_key), NULL);
        if (rc != (st->has[k] ? SIMDR_OK : SIMDR_NOTFOUND)) fail_at(st, "rename", "wrong answer", k);
        if (rc == SIMDR_OK) {
            st->has[to] = 1;
            st->src[to] = st->src[k];
            st->ver[to] = st->ver[k];
            st->len[to] = st->len[k];
            st->has[k] = 0;
        }
    } else if (op < 68) {
        if (simdr_compact(st->w) != SIMDR_OK) fail_at(st, "compact", "failed", -1);
    } else if (op < 73) {
        if (simdr_sync(st->w) != SIMDR_OK) fail_at(st, "sync", "failed", -1);
    } else if (op < 80) {
        pthread_rwlock_wrlock(&st->handle_lock);
        rc = simdr_close(st->w);
        st->w = NULL;
        if (rc == SIMDR_OK) open_writer(st);
        pthread_rwlock_unlock(&st->handle_lock);
        if (rc != SIMDR_OK) fail_at(st, "close", "failed", -1);
    } else if (op < 90) {
        uint64_t added;
        if (simdr_refresh(st->r, &added) != SIMDR_OK) fail_at(st, "reader", "refresh failed", -1);
        expect_model(st, st->r, "reader after refresh", rnd(st) % 4 == 0);
    } else if (op < 93) {
        simdr_close(st->r);
        open_reader(st);
        expect_model(st, st->r, "reader reopened", 1);
    } else {
        expect_model(st, st->w, "writer", 1);
    }
}

static void run_seed(uint64_t seed, int steps, int background_compactions) {
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "store.bin");
    run_state *st = calloc(1, sizeof *st);
    assert_non_null(st);
    st->rng = seed * UINT64_C(2654435761) + 1;
    st->path = path;
    st->layout = (int)(seed & 1) ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64;
    st->next_ver = 1;
    pthread_rwlock_init(&st->handle_lock, NULL);
    fprintf(stderr, "seed %llu: %d steps, layout %d, background compactions %d\n",
            (unsigned long long)seed, steps, st->layout, background_compactions);
    open_writer(st);
    open_reader(st);

    int stop[2];
    assert_int_equal(pipe(stop), 0);
    assert_int_equal(fcntl(stop[0], F_SETFL, O_NONBLOCK), 0);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        signal(SIGBUS, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        close(stop[1]);
        _exit(watching_reader(path, stop[0]));
    }
    close(stop[0]);
    pthread_t compacting;
    if (background_compactions)
        assert_int_equal(pthread_create(&compacting, NULL, compactor, st), 0);

    for (st->step = 0; st->step < steps; st->step++) {
        one_step(st);
        if (st->step % 5 == 0) expect_model(st, st->w, "writer", 0);
    }

    if (background_compactions) {
        atomic_store(&st->stop_compactor, 1);
        pthread_join(compacting, NULL);
        assert_int_equal(atomic_load(&st->compactor_failures), 0);
    }
    close(stop[1]);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    if (WIFSIGNALED(status)) fail_msg("the watching reader died of signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) != 0) fail_msg("the watching reader failed (%d)", WEXITSTATUS(status));

    expect_model(st, st->w, "writer at the end", 1);
    assert_int_equal(simdr_close(st->w), SIMDR_OK);
    simdr_close(st->r);
    open_writer(st);
    expect_model(st, st->w, "writer reopened", 1);
    assert_int_equal(simdr_close(st->w), SIMDR_OK);
    pthread_rwlock_destroy(&st->handle_lock);
    free(st);
    tu_rmtree(dir);
    free(dir);
}

/* Steps a run: 250 at the full scale ($SIMDR_TEST_SCALE, default 10; the
 * sanitizer runs use less), at least 60. */
static int steps_per_run(void) {
    const char *e = getenv("SIMDR_TEST_SCALE");
    int scale = e ? atoi(e) : 10;
    int steps = 25 * (scale > 0 ? scale : 10);
    return steps < 60 ? 60 : steps;
}

static void test_random_compositions(void **state) {
    (void)state;
    uint64_t base = tu_seed(20261207);
    int steps = steps_per_run();
    tu_watchdog_start(600, "random compositions");
    /* both layouts, each with and without a compacting thread */
    for (uint64_t i = 0; i < 4; i++) run_seed(base + i, steps, (int)(i / 2));
    tu_watchdog_stop();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_compositions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
