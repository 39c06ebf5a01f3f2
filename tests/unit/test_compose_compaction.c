/*
 * test_compose_compaction.c - compaction and map growth composed with
 * everything that may hold on to the old file at the same moment.
 *
 * The store's map reservation is lowered to 2 MiB (a test hook), so the
 * file outgrows its map, and the map is replaced, every few writes. Meanwhile:
 * - a writer thread puts (small values, 3 MB values, values of 16 MiB - 1 and
 *   16 MiB + 1 around the copy buffers), batches and deletes;
 * - readers hold up to 64 handles across growth and compaction and re-check
 *   their bytes when they let go; read scopes and their batch gets; full
 *   iterations, each followed by calls of the size and count accessors;
 *   get_batch windows held for a round;
 * - a thread calls simdr_sync in a loop;
 * - a thread compacts, and every third compaction has one of its own system
 *   calls failed (a write of the new file, its fsync, the rename): that
 *   compaction must fail with the store unchanged and the next succeed;
 * - a forked read-only process refreshes and reads throughout.
 * Values carry their key, version and length and a body derived from them,
 * so a reader can tell a wrong or torn value wherever it reads one. At the
 * end every acknowledged write is checked, then again after a reopen, and
 * simdr_check must pass. Runs under a watchdog (and ThreadSanitizer).
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"

#define KEYS 512
#define HEADER 24
#define MAGIC UINT64_C(0x5a17c0de5a17c0de)
#define BIG3 ((size_t)3000000)
#define BIG16 ((size_t)16 << 20)

/* ---- self-describing values ---- */

static uint8_t body_byte(uint32_t key, uint32_t ver, uint64_t i) {
    return (uint8_t)((key * 131u + ver * 7u + i) ^ (i >> 9) ^ 0x5a);
}

static void make_value(uint8_t *v, size_t len, uint32_t key, uint32_t ver) {
    uint64_t magic = MAGIC ^ key;
    memcpy(v, &magic, 8);
    memcpy(v + 8, &key, 4);
    memcpy(v + 12, &ver, 4);
    uint64_t l = len;
    memcpy(v + 16, &l, 8);
    for (uint64_t i = HEADER; i < len; i++) v[i] = body_byte(key, ver, i);
}

/* The version a value of key holds, or 0 when its bytes are not a value of
 * key (wrong key, length, body). Large bodies are checked at 2,048 places
 * and their last 4 KiB. */
static uint32_t check_value(uint32_t key, const uint8_t *v, size_t len) {
    if (len < HEADER + 1) return 0;
    uint64_t magic, l;
    uint32_t k, ver;
    memcpy(&magic, v, 8);
    memcpy(&k, v + 8, 4);
    memcpy(&ver, v + 12, 4);
    memcpy(&l, v + 16, 8);
    if (magic != (MAGIC ^ key) || k != key || l != len || ver == 0) return 0;
    if (len <= 65536) {
        for (uint64_t i = HEADER; i < len; i++)
            if (v[i] != body_byte(key, ver, i)) return 0;
        return ver;
    }
    for (uint64_t j = 0; j < 2048; j++) {
        uint64_t i = HEADER + (j * 2654435761u) % (len - HEADER);
        if (v[i] != body_byte(key, ver, i)) return 0;
    }
    for (uint64_t i = len - 4096; i < len; i++)
        if (v[i] != body_byte(key, ver, i)) return 0;
    return ver;
}

static void key_name(char *out, size_t cap, uint32_t k) { snprintf(out, cap, "ck-%u", k); }

/* ---- shared state ---- */

typedef struct shared {
    simdr_store *s;
    atomic_int stop;
    atomic_int errors;
    char first_error[256];
    pthread_mutex_t err_lock;
    /* The writer's model: the acknowledged version of each key, 0 absent,
     * and its length. */
    uint32_t ver[KEYS];
    size_t len[KEYS];
    uint64_t reads, held_checks, scopes, iterations, syncs, compactions, compaction_failures,
        growths;
} shared;

static void report(shared *sh, const char *what, uint32_t key, int rc) {
    pthread_mutex_lock(&sh->err_lock);
    if (atomic_fetch_add(&sh->errors, 1) == 0)
        snprintf(sh->first_error, sizeof sh->first_error, "%s: key %u: %s (%s)", what, key,
                 rc == SIMDR_OK ? "wrong bytes" : simdr_strerror(rc), simdr_last_error());
    pthread_mutex_unlock(&sh->err_lock);
}
#define FAIL(sh, what, key, rc) report(sh, what, key, rc)

static uint64_t next_rand(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* ---- the writer ---- */

/* Writer operations: 400 at the full scale ($SIMDR_TEST_SCALE, default 10;
 * the sanitizer runs use 1, ThreadSanitizer by default), at least 80. */
#if defined(__SANITIZE_THREAD__)
#define DEFAULT_SCALE 1 /* ThreadSanitizer runs are not given a scale */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEFAULT_SCALE 1
#endif
#endif
#ifndef DEFAULT_SCALE
#define DEFAULT_SCALE 10
#endif
static int writer_ops(void) {
    const char *e = getenv("SIMDR_TEST_SCALE");
    int scale = e ? atoi(e) : DEFAULT_SCALE;
    int ops = 40 * (scale > 0 ? scale : 10);
    return ops < 80 ? 80 : ops;
}

/* Small values mostly, 3 MB ones now and then, and at fixed points one of
 * 16 MiB - 1, 16 MiB + 1 and 16 MiB (past every copy buffer). */
static int big16_at(int op, int ops) {
    if (op == ops / 7) return -1;
    if (op == ops / 2) return 1;
    if (op == ops * 5 / 6) return 0;
    return 2;
}

static size_t pick_len(uint64_t r, int op, int ops) {
    int big = big16_at(op, ops);
    if (big != 2) return (size_t)((int64_t)BIG16 + big);
    if (r % 1000 < 35) return BIG3;
    return HEADER + 1 + (size_t)((r >> 12) % 4000);
}

static void *writer_main(void *p) {
    shared *sh = p;
    uint64_t x = 0x9e3779b97f4a7c15u;
    uint8_t *buf = malloc(BIG16 + 2);
    uint8_t *batch_buf = malloc(8 * 4100);
    int ops = writer_ops();
    for (int op = 0; op < ops && !atomic_load(&sh->stop); op++) {
        uint64_t r = next_rand(&x);
        uint32_t key = (uint32_t)(r % KEYS);
        char name[32];
        key_name(name, sizeof name, key);
        unsigned kind = big16_at(op, ops) != 2 ? 99 : (unsigned)((r >> 32) % 100);
        if (kind < 6) {
            int rc = simdr_delete(sh->s, TU_STR(name), NULL);
            if (rc == SIMDR_OK)
                sh->ver[key] = 0;
            else if (rc != SIMDR_NOTFOUND || sh->ver[key] != 0)
                FAIL(sh, "delete", key, rc);
        } else if (kind < 12) {
            simdr_kv kv[8];
            char names[8][32];
            uint32_t keys[8], vers[8];
            size_t lens[8];
            for (int i = 0; i < 8; i++) {
                keys[i] = (uint32_t)((key + (uint32_t)i * 61u) % KEYS);
                vers[i] = sh->ver[keys[i]] + 1;
                lens[i] = HEADER + 1 + (size_t)((r >> (i * 4)) % 4000);
                key_name(names[i], sizeof names[i], keys[i]);
                make_value(batch_buf + i * 4100, lens[i], keys[i], vers[i]);
                kv[i] = (simdr_kv){names[i], strlen(names[i]), batch_buf + i * 4100, lens[i]};
            }
            int rc = simdr_put_batch(sh->s, kv, 8, NULL);
            if (rc != SIMDR_OK)
                FAIL(sh, "batch", key, rc);
            else
                for (int i = 0; i < 8; i++) {
                    sh->ver[keys[i]] = vers[i];
                    sh->len[keys[i]] = lens[i];
                }
        } else {
            size_t len = pick_len(next_rand(&x), op, ops);
            uint32_t ver = sh->ver[key] + 1;
            make_value(buf, len, key, ver);
            int rc = simdr_put(sh->s, TU_STR(name), buf, len, NULL);
            if (rc != SIMDR_OK) {
                FAIL(sh, "put", key, rc);
            } else {
                sh->ver[key] = ver;
                sh->len[key] = len;
            }
        }
    }
    free(buf);
    free(batch_buf);
    atomic_store(&sh->stop, 1);
    return NULL;
}

/* ---- readers ---- */

static void check_entry(shared *sh, const char *what, uint32_t key, const void *data,
                        uint64_t size) {
    if (check_value(key, data, (size_t)size) == 0) FAIL(sh, what, key, SIMDR_OK);
}

#define HELD 64
static void *holder_main(void *p) {
    shared *sh = p;
    uint64_t x = 12345;
    simdr_entry *held[HELD] = {0};
    uint32_t held_key[HELD] = {0};
    uint64_t reads = 0, checks = 0;
    while (!atomic_load(&sh->stop)) {
        uint64_t r = next_rand(&x);
        unsigned slot = (unsigned)(r % HELD);
        if (held[slot]) {
            /* The bytes a handle gave are still the same at release. */
            check_entry(sh, "held handle", held_key[slot], simdr_entry_data(held[slot]),
                        simdr_entry_size(held[slot]));
            simdr_entry_release(held[slot]);
            held[slot] = NULL;
            checks++;
        }
        uint32_t key = (uint32_t)((r >> 16) % KEYS);
        char name[32];
        key_name(name, sizeof name, key);
        simdr_entry *e = NULL;
        int rc = simdr_get(sh->s, TU_STR(name), &e);
        reads++;
        if (rc == SIMDR_OK) {
            check_entry(sh, "get", key, simdr_entry_data(e), simdr_entry_size(e));
            held[slot] = e;
            held_key[slot] = key;
        } else if (rc != SIMDR_NOTFOUND) {
            FAIL(sh, "get", key, rc);
        }
    }
    for (unsigned i = 0; i < HELD; i++)
        if (held[i]) {
            check_entry(sh, "held handle", held_key[i], simdr_entry_data(held[i]),
                        simdr_entry_size(held[i]));
            simdr_entry_release(held[i]);
        }
    __atomic_fetch_add(&sh->reads, reads, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sh->held_checks, checks, __ATOMIC_RELAXED);
    return NULL;
}

static void *scope_main(void *p) {
    shared *sh = p;
    uint64_t x = 777;
    uint64_t scopes = 0;
    while (!atomic_load(&sh->stop)) {
        simdr_read scope;
        if (simdr_read_begin(sh->s, &scope) != SIMDR_OK) {
            FAIL(sh, "read_begin", 0, SIMDR_EINVAL);
            break;
        }
        const void *vals[16];
        size_t lens[16];
        uint32_t keys[16];
        char names[16][32];
        simdr_key ks[16];
        for (int i = 0; i < 16; i++) {
            keys[i] = (uint32_t)(next_rand(&x) % KEYS);
            key_name(names[i], sizeof names[i], keys[i]);
            ks[i] = (simdr_key){names[i], strlen(names[i])};
            const void *v;
            size_t len;
            int rc = simdr_read_get(&scope, TU_STR(names[i]), &v, &len);
            if (rc == SIMDR_OK)
                check_entry(sh, "scope get", keys[i], v, len);
            else if (rc != SIMDR_NOTFOUND)
                FAIL(sh, "scope get", keys[i], rc);
        }
        int64_t found = simdr_read_get_batch(&scope, ks, 16, vals, lens);
        if (found < 0) FAIL(sh, "scope batch", 0, (int)found);
        /* Held to the end of the scope, whatever the writer and the
         * compaction do meanwhile. */
        sched_yield();
        for (int i = 0; found > 0 && i < 16; i++)
            if (vals[i]) check_entry(sh, "scope batch", keys[i], vals[i], lens[i]);
        simdr_read_end(&scope);
        scopes++;
    }
    __atomic_fetch_add(&sh->scopes, scopes, __ATOMIC_RELAXED);
    return NULL;
}

static void *iter_main(void *p) {
    shared *sh = p;
    uint64_t x = 4242, iterations = 0;
    simdr_entry *window[64] = {0};
    uint32_t window_key[64];
    while (!atomic_load(&sh->stop)) {
        simdr_iter *it = NULL;
        int rc = simdr_iter_open(sh->s, &it);
        if (rc != SIMDR_OK) {
            FAIL(sh, "iter_open", 0, rc);
            break;
        }
        const simdr_entry *e;
        uint64_t n = 0;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            /* The key is not in the entry; its bytes name it. */
            uint32_t key;
            memcpy(&key, (const uint8_t *)simdr_entry_data(e) + 8, 4);
            if (simdr_entry_size(e) < HEADER || key >= KEYS)
                FAIL(sh, "iterated entry", key, SIMDR_OK);
            else
                check_entry(sh, "iterated entry", key, simdr_entry_data(e), simdr_entry_size(e));
            n++;
        }
        if (rc != SIMDR_NOTFOUND) FAIL(sh, "iter_next", 0, rc);
        simdr_iter_close(it);
        /* The size and count accessors read the view a compaction or a
         * growth replaces and frees (simdr_file_size read it outside a grace
         * period: a read of freed memory, reported by ThreadSanitizer). */
        for (int j = 0; j < 256; j++) {
            if (simdr_file_size(sh->s) == 0 || simdr_index_bytes(sh->s) == 0)
                FAIL(sh, "size of a store with keys", 0, SIMDR_OK);
            (void)simdr_count(sh->s);
            (void)simdr_layout_of(sh->s);
        }
        /* A get_batch window: the previous one is checked and released
         * only now, a whole iteration (and maybe a compaction) later. */
        for (int i = 0; i < 64; i++)
            if (window[i]) {
                check_entry(sh, "batch window", window_key[i], simdr_entry_data(window[i]),
                            simdr_entry_size(window[i]));
                simdr_entry_release(window[i]);
                window[i] = NULL;
            }
        simdr_key ks[64];
        char names[64][32];
        for (int i = 0; i < 64; i++) {
            window_key[i] = (uint32_t)(next_rand(&x) % KEYS);
            key_name(names[i], sizeof names[i], window_key[i]);
            ks[i] = (simdr_key){names[i], strlen(names[i])};
        }
        int64_t found = simdr_get_batch(sh->s, ks, 64, window);
        if (found < 0) FAIL(sh, "get_batch", 0, (int)found);
        iterations++;
    }
    for (int i = 0; i < 64; i++)
        if (window[i]) {
            check_entry(sh, "batch window", window_key[i], simdr_entry_data(window[i]),
                        simdr_entry_size(window[i]));
            simdr_entry_release(window[i]);
        }
    __atomic_fetch_add(&sh->iterations, iterations, __ATOMIC_RELAXED);
    return NULL;
}

static void *sync_main(void *p) {
    shared *sh = p;
    uint64_t syncs = 0;
    while (!atomic_load(&sh->stop)) {
        int rc = simdr_sync(sh->s);
        if (rc != SIMDR_OK) FAIL(sh, "sync", 0, rc);
        syncs++;
        usleep(2000);
    }
    __atomic_fetch_add(&sh->syncs, syncs, __ATOMIC_RELAXED);
    return NULL;
}

/* ---- the compactor, some of whose system calls fail ---- */

static _Thread_local int in_compactor;
static _Thread_local enum simdr__io_op fail_op = SIMDR__IO_OPS;
static _Thread_local unsigned fail_countdown;

/* Picks, in the compactor thread only, the call this round fails. */
static int compactor_call(void *ctx, enum simdr__io_op op, int fd) {
    (void)ctx;
    (void)fd;
    if (!in_compactor || op != fail_op || fail_countdown == 0) return 0;
    return --fail_countdown == 0;
}

static void *compactor_main(void *p) {
    shared *sh = p;
    in_compactor = 1;
    static const enum simdr__io_op plan[3] = {SIMDR__IO_PWRITE, SIMDR__IO_FSYNC,
                                              SIMDR__IO_RENAME};
    unsigned round = 0;
    while (!atomic_load(&sh->stop)) {
        int failing = round % 3 == 1;
        if (failing) {
            fail_op = plan[(round / 3) % 3];
            fail_countdown = fail_op == SIMDR__IO_PWRITE ? 2 : 1;
        }
        int rc = simdr_compact(sh->s);
        if (failing && fail_countdown == 0) {
            if (rc != SIMDR_EIO) FAIL(sh, "failed compaction", round, rc);
            sh->compaction_failures++;
        } else if (rc != SIMDR_OK) {
            FAIL(sh, "compaction", round, rc);
        } else {
            sh->compactions++;
        }
        fail_op = SIMDR__IO_OPS;
        fail_countdown = 0;
        round++;
        usleep(5000);
    }
    return NULL;
}

/* ---- a read-only process refreshing throughout ---- */

static int child_main(const char *path, int stop_fd) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    simdr_store *r = NULL;
    if (simdr_open(&r, path, &o) != SIMDR_OK) return 2;
    uint64_t x = 99, refreshes = 0, reads = 0;
    simdr_entry *held[8] = {0};
    uint32_t held_key[8] = {0};
    char c;
    int bad = 0;
    while (read(stop_fd, &c, 1) < 0 && errno == EAGAIN) {
        int rc = simdr_refresh(r, NULL);
        /* A refresh may fail while the replacing file cannot be loaded yet;
         * the store is then as it was. Wrong data is never allowed. */
        if (rc == SIMDR_OK)
            refreshes++;
        else if (getenv("SIMDR_TEST_VERBOSE"))
            fprintf(stderr, "child refresh: %s: %s\n", simdr_strerror(rc), simdr_last_error());
        for (int i = 0; i < 32; i++) {
            uint32_t key = (uint32_t)(next_rand(&x) % KEYS);
            char name[32];
            key_name(name, sizeof name, key);
            simdr_entry *e = NULL;
            rc = simdr_get(r, TU_STR(name), &e);
            reads++;
            if (rc == SIMDR_OK) {
                if (!check_value(key, simdr_entry_data(e), (size_t)simdr_entry_size(e))) bad++;
                unsigned slot = (unsigned)(x % 8);
                if (held[slot]) {
                    if (!check_value(held_key[slot], simdr_entry_data(held[slot]),
                                     (size_t)simdr_entry_size(held[slot])))
                        bad++;
                    simdr_entry_release(held[slot]);
                }
                held[slot] = e;
                held_key[slot] = key;
            } else if (rc != SIMDR_NOTFOUND) {
                bad++;
            }
        }
        usleep(1000);
    }
    for (int i = 0; i < 8; i++) {
        if (held[i] && !check_value(held_key[i], simdr_entry_data(held[i]),
                                    (size_t)simdr_entry_size(held[i])))
            bad++;
        simdr_entry_release(held[i]);
    }
    simdr_close(r);
    if (bad) return 1;
    return refreshes > 0 && reads > 0 ? 0 : 3;
}

/* ---- the test ---- */

static void expect_model(simdr_store *s, const shared *sh) {
    uint64_t present = 0;
    for (uint32_t k = 0; k < KEYS; k++) {
        char name[32];
        key_name(name, sizeof name, k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, TU_STR(name), &e);
        if (sh->ver[k] == 0) {
            assert_int_equal(rc, SIMDR_NOTFOUND);
            continue;
        }
        assert_int_equal(rc, SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), sh->len[k]);
        assert_int_equal(check_value(k, simdr_entry_data(e), (size_t)simdr_entry_size(e)),
                         sh->ver[k]);
        simdr_entry_release(e);
        present++;
    }
    assert_int_equal(simdr_count(s), present);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
}

static void compaction_composed_with_everything(void **state) {
    tu_fixture *f = *state;
    shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    pthread_mutex_init(&sh->err_lock, NULL);
    simdr__io_reset();
    uint64_t saved_reserve = atomic_load(&simdr__map_min_reserve);
    atomic_store(&simdr__map_min_reserve, UINT64_C(2) << 20);
    sh->s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    /* Something to compact from the start. */
    for (uint32_t k = 0; k < KEYS; k += 3) {
        uint8_t v[200];
        char name[32];
        key_name(name, sizeof name, k);
        make_value(v, sizeof v, k, 1);
        assert_int_equal(simdr_put(sh->s, TU_STR(name), v, sizeof v, NULL), SIMDR_OK);
        sh->ver[k] = 1;
        sh->len[k] = sizeof v;
    }
    /* The read-only process first, while this one has no other thread. */
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(pipefd[1]);
        fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
        _exit(child_main(f->path, pipefd[0]));
    }
    close(pipefd[0]);

    simdr__io_fault rules[3] = {
        {.op = SIMDR__IO_PWRITE, .nth = 1, .count = 0, .err = EIO, .select = compactor_call},
        {.op = SIMDR__IO_FSYNC, .nth = 1, .count = 0, .err = EIO, .select = compactor_call},
        {.op = SIMDR__IO_RENAME, .nth = 1, .count = 0, .err = EIO, .select = compactor_call},
    };
    for (int i = 0; i < 3; i++) simdr__io_fault_arm(&rules[i]);

    tu_watchdog_start(300, "compaction composed with readers, writer, sync and growth");
    pthread_t w, readers[3], syncer, compactor;
    assert_int_equal(pthread_create(&readers[0], NULL, holder_main, sh), 0);
    assert_int_equal(pthread_create(&readers[1], NULL, scope_main, sh), 0);
    assert_int_equal(pthread_create(&readers[2], NULL, iter_main, sh), 0);
    assert_int_equal(pthread_create(&syncer, NULL, sync_main, sh), 0);
    assert_int_equal(pthread_create(&compactor, NULL, compactor_main, sh), 0);
    assert_int_equal(pthread_create(&w, NULL, writer_main, sh), 0);
    pthread_join(w, NULL);
    pthread_join(compactor, NULL);
    pthread_join(syncer, NULL);
    for (int i = 0; i < 3; i++) pthread_join(readers[i], NULL);
    tu_watchdog_stop();
    simdr__io_reset();

    assert_int_equal(write(pipefd[1], "x", 1), 1);
    close(pipefd[1]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);

    if (atomic_load(&sh->errors)) fprintf(stderr, "first error: %s\n", sh->first_error);
    assert_int_equal(atomic_load(&sh->errors), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The run did what it is for. */
    assert_true(sh->compactions >= 1);
    assert_true(sh->compaction_failures >= 1);
    assert_true(sh->held_checks > 0 && sh->scopes > 0 && sh->iterations > 0);
    if (getenv("SIMDR_TEST_VERBOSE"))
        fprintf(stderr,
                "reads %llu, held checks %llu, scopes %llu, iterations %llu, syncs %llu, "
                "compactions %llu (+%llu failed), file %llu bytes\n",
                (unsigned long long)sh->reads, (unsigned long long)sh->held_checks,
                (unsigned long long)sh->scopes, (unsigned long long)sh->iterations,
                (unsigned long long)sh->syncs, (unsigned long long)sh->compactions,
                (unsigned long long)sh->compaction_failures,
                (unsigned long long)simdr_file_size(sh->s));

    expect_model(sh->s, sh);
    assert_int_equal(simdr_close(sh->s), SIMDR_OK);
    sh->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    expect_model(sh->s, sh);
    assert_int_equal(simdr_compact(sh->s), SIMDR_OK);
    expect_model(sh->s, sh);
    simdr_close(sh->s);
    atomic_store(&simdr__map_min_reserve, saved_reserve);
    pthread_mutex_destroy(&sh->err_lock);
    free(sh);
}

/* ---- a failed sync in the middle of all of it ---- */

#define DURABLE_WRITERS 3
#define DURABLE_PUTS 60

typedef struct durable_writer {
    shared *sh;
    uint32_t first_key;
    int rc[DURABLE_PUTS];
    size_t len[DURABLE_PUTS];
} durable_writer;

static void *durable_writer_main(void *p) {
    durable_writer *w = p;
    uint8_t buf[5000];
    for (int i = 0; i < DURABLE_PUTS; i++) {
        uint32_t key = w->first_key + (uint32_t)i;
        char name[32];
        key_name(name, sizeof name, key);
        w->len[i] = HEADER + 1 + (size_t)(key * 37u % 4000u);
        make_value(buf, w->len[i], key, 1);
        w->rc[i] = simdr_put(w->sh->s, TU_STR(name), buf, w->len[i], NULL);
    }
    return NULL;
}

static void *failing_compactor_main(void *p) {
    shared *sh = p;
    while (!atomic_load(&sh->stop)) {
        int rc = simdr_compact(sh->s);
        /* Refused once the store failed; an I/O error if the failure hit
         * the compaction itself. */
        if (rc == SIMDR_OK)
            sh->compactions++;
        else if (rc != SIMDR_EFAILED && rc != SIMDR_EIO)
            FAIL(sh, "compaction", 0, rc);
        usleep(3000);
    }
    return NULL;
}

/* Three durable writers share syncs while readers hold handles and scopes,
 * a thread compacts, and one fdatasync fails (then would succeed again).
 * Every put that returned OK is served, now and after a reopen, with its
 * bytes; every put that failed is not served by the failed handle; readers
 * never see a wrong value, and the withdrawal of the unconfirmed entries
 * (a new index published under them) leaves their handles intact. */
static void failed_sync_composed_with_readers_and_compaction(void **state) {
    tu_fixture *f = *state;
    shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    pthread_mutex_init(&sh->err_lock, NULL);
    simdr__io_reset();
    simdr_options o;
    simdr_options_init(&o);
    o.durability = SIMDR_SYNC_DATA;
    assert_int_equal(simdr_open(&sh->s, f->path, &o), SIMDR_OK);
    for (uint32_t k = 300; k < 340; k++) {
        uint8_t v[100];
        char name[32];
        key_name(name, sizeof name, k);
        make_value(v, sizeof v, k, 1);
        assert_int_equal(simdr_put(sh->s, TU_STR(name), v, sizeof v, NULL), SIMDR_OK);
    }
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 40, EIO);
    tu_watchdog_start(120, "a failed sync composed with readers and compaction");
    pthread_t readers[2], compactor, writers[DURABLE_WRITERS];
    durable_writer dw[DURABLE_WRITERS];
    assert_int_equal(pthread_create(&readers[0], NULL, holder_main, sh), 0);
    assert_int_equal(pthread_create(&readers[1], NULL, scope_main, sh), 0);
    assert_int_equal(pthread_create(&compactor, NULL, failing_compactor_main, sh), 0);
    for (int i = 0; i < DURABLE_WRITERS; i++) {
        dw[i] = (durable_writer){.sh = sh, .first_key = (uint32_t)i * 100};
        assert_int_equal(pthread_create(&writers[i], NULL, durable_writer_main, &dw[i]), 0);
    }
    for (int i = 0; i < DURABLE_WRITERS; i++) pthread_join(writers[i], NULL);
    atomic_store(&sh->stop, 1);
    pthread_join(compactor, NULL);
    for (int i = 0; i < 2; i++) pthread_join(readers[i], NULL);
    tu_watchdog_stop();
    assert_int_equal(simdr__io_hits(SIMDR__IO_FDATASYNC), 1);
    simdr__io_reset();
    if (atomic_load(&sh->errors)) fprintf(stderr, "first error: %s\n", sh->first_error);
    assert_int_equal(atomic_load(&sh->errors), 0);

    uint64_t acked = 0, refused = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < DURABLE_WRITERS; i++)
            for (int j = 0; j < DURABLE_PUTS; j++) {
                uint32_t key = dw[i].first_key + (uint32_t)j;
                char name[32];
                key_name(name, sizeof name, key);
                simdr_entry *e = NULL;
                int rc = simdr_get(sh->s, TU_STR(name), &e);
                if (dw[i].rc[j] == SIMDR_OK) {
                    assert_int_equal(rc, SIMDR_OK);
                    assert_int_equal(simdr_entry_size(e), dw[i].len[j]);
                    assert_int_equal(check_value(key, simdr_entry_data(e), dw[i].len[j]), 1);
                    simdr_entry_release(e);
                    if (!pass) acked++;
                } else {
                    assert_true(dw[i].rc[j] == SIMDR_EIO || dw[i].rc[j] == SIMDR_EFAILED);
                    if (pass == 0) {
                        /* Not served by the failed handle. */
                        assert_int_equal(rc, SIMDR_NOTFOUND);
                        refused++;
                    } else if (rc == SIMDR_OK) {
                        /* After reopen: whole, like a write in flight at a crash. */
                        assert_int_equal(check_value(key, simdr_entry_data(e),
                                                     (size_t)simdr_entry_size(e)), 1);
                        simdr_entry_release(e);
                    }
                }
            }
        if (pass == 0) {
            assert_int_equal(simdr_put(sh->s, TU_STR("after"), "x", 1, NULL), SIMDR_EFAILED);
            simdr_close(sh->s);
            assert_int_equal(simdr_open(&sh->s, f->path, &o), SIMDR_OK);
            assert_int_equal(simdr_check(sh->s, NULL, NULL, NULL), SIMDR_OK);
        }
    }
    assert_true(acked > 0 && refused > 0);
    simdr_close(sh->s);
    pthread_mutex_destroy(&sh->err_lock);
    free(sh);
}

/* ---- duplicated handles while their map is retired ---- */

typedef struct dup_churn {
    simdr_store *s;
    atomic_int *stop;
    uint64_t rounds, bad;
} dup_churn;

/* Keeps one handle alive at every moment, but always a fresh duplicate of
 * the one before: the duplicate is pinned while the map may be in the
 * middle of its retirement, and the handle it came from released at once. */
static void *dup_churn_main(void *p) {
    dup_churn *c = p;
    while (!atomic_load(c->stop)) {
        simdr_entry *e = NULL;
        if (simdr_get(c->s, TU_STR("ck-1"), &e) != SIMDR_OK) {
            c->bad++;
            break;
        }
        for (int i = 0; i < 300; i++) {
            simdr_entry *d = NULL;
            if (simdr_entry_dup(e, &d) != SIMDR_OK) {
                c->bad++;
                break;
            }
            simdr_entry_release(e);
            e = d;
            /* The bytes stay mapped as long as a handle holds them. */
            if (check_value(1, simdr_entry_data(e), (size_t)simdr_entry_size(e)) != 1) c->bad++;
        }
        simdr_entry_release(e);
        c->rounds++;
    }
    return NULL;
}

/* A duplicate taken from a handle of a map being retired counted itself
 * into the map's shared counter before the retirement had added the pins
 * it found: the release of the original could then bring the counter to
 * zero, and the map was unmapped (and later freed twice) under the
 * duplicate. Compactions retire a map each; two threads duplicate and
 * release handles of it all the while. */
static void dup_races_map_retirement(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    uint8_t v[300];
    make_value(v, sizeof v, 1, 1);
    assert_int_equal(simdr_put(s, TU_STR("ck-1"), v, sizeof v, NULL), SIMDR_OK);
    atomic_int stop = 0;
    dup_churn c[2] = {{s, &stop, 0, 0}, {s, &stop, 0, 0}};
    tu_watchdog_start(120, "duplicates against map retirement");
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, dup_churn_main, &c[i]), 0);
    int compactions = writer_ops() * 3 / 4; /* 300 at the full scale, 60 at 1 */
    for (int i = 0; i < compactions; i++) assert_int_equal(simdr_compact(s), SIMDR_OK);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    tu_watchdog_stop();
    assert_int_equal(c[0].bad + c[1].bad, 0);
    assert_true(c[0].rounds + c[1].rounds > 0);
    tu_expect_value(s, TU_STR("ck-1"), v, sizeof v);
    simdr_close(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(compaction_composed_with_everything),
        TU_TEST_DIR(failed_sync_composed_with_readers_and_compaction),
        TU_TEST_DIR(dup_races_map_retirement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
