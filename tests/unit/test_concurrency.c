/*
 * test_concurrency.c - multi-threaded unit tests of libsimdr: four readers
 * read while one writer overwrites keys with self-checking values (key index,
 * sequence, length, CRC): readers never see a torn or foreign value and never
 * NOTFOUND for a present key; many handles held while megabytes are written;
 * an entry released on another thread after simdr_close; batch readers
 * while the writer overwrites, deletes and compacts, keeping batch handles
 * across writes and handing some to another thread that releases them after
 * simdr_close; concurrent writers, also with per-write fdatasync (group
 * commit), also while another thread compacts and syncs (under a watchdog);
 * puts of a key racing moves of it to another store; readers while the
 * index grows on two threads, and the same growth and a parallel scan where
 * no helper thread can be created.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

#define NKEYS 64
#define NREADERS 4
#define NWRITES 6000

typedef struct shared {
    simdr_store *s;
    _Atomic int done;
    _Atomic uint64_t reads, bad, notfound;
    _Atomic int next_id;
    uint64_t seed;
} shared;

static void key_of(int i, char *k, size_t cap) {
    snprintf(k, cap, "ckey-%02d", i);
}

/* value = [u32 key index][u32 seq][u32 len][filler][u32 crc of all before] */
static size_t make_value(uint8_t *buf, int key, uint32_t seq, size_t len) {
    uint32_t hdr[3] = {(uint32_t)key, seq, (uint32_t)len};
    memcpy(buf, hdr, 12);
    tu_fill(buf + 12, len - 16, (uint64_t)key << 32 | seq);
    uint32_t crc = tu_crc32(buf, len - 4);
    memcpy(buf + len - 4, &crc, 4);
    return len;
}

static int check_value(const uint8_t *v, size_t len, int key) {
    if (len < 16)
        return 0;
    uint32_t hdr[3], crc;
    memcpy(hdr, v, 12);
    memcpy(&crc, v + len - 4, 4);
    return hdr[0] == (uint32_t)key && hdr[2] == len && crc == tu_crc32(v, len - 4);
}

static void *reader(void *p) {
    shared *sh = p;
    uint64_t st = sh->seed + 1000u * (uint64_t)(atomic_fetch_add(&sh->next_id, 1) + 1);
    uint8_t *copy = malloc(8192);
    simdr_entry *held = NULL;
    int held_key = -1;
    while (!atomic_load(&sh->done)) {
        int k = (int)(tu_rand(&st) % NKEYS);
        char key[16];
        key_of(k, key, sizeof key);
        simdr_entry *e = NULL;
        int rc = simdr_get(sh->s, TU_STR(key), &e);
        atomic_fetch_add(&sh->reads, 1);
        if (rc == SIMDR_NOTFOUND) {
            atomic_fetch_add(&sh->notfound, 1);
            continue;
        }
        if (rc != SIMDR_OK) {
            atomic_fetch_add(&sh->bad, 1);
            continue;
        }
        if (!check_value(simdr_entry_data(e), simdr_entry_size(e), k))
            atomic_fetch_add(&sh->bad, 1);
        /* keep one entry across many writes, re-checking it */
        if (held && !check_value(simdr_entry_data(held), simdr_entry_size(held), held_key))
            atomic_fetch_add(&sh->bad, 1);
        if (tu_rand(&st) % 16 == 0) {
            simdr_entry_release(held);
            held = e;
            held_key = k;
        } else {
            simdr_entry_release(e);
        }
        /* a copying read and an existence check */
        size_t len = 0;
        rc = simdr_get_copy(sh->s, TU_STR(key), copy, 8192, &len);
        if (rc != SIMDR_OK || !check_value(copy, len, k))
            atomic_fetch_add(&sh->bad, 1);
        if (simdr_exists(sh->s, TU_STR(key)) != 1)
            atomic_fetch_add(&sh->notfound, 1);
    }
    simdr_entry_release(held);
    free(copy);
    return NULL;
}

static void test_readers_while_writer_overwrites(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "c.bin");
    shared sh = {.seed = tu_seed(2024)};
    sh.s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    uint8_t buf[8192];
    for (int k = 0; k < NKEYS; k++) {
        char key[16];
        key_of(k, key, sizeof key);
        size_t n = make_value(buf, k, 0, 16 + (size_t)k);
        assert_int_equal(simdr_put(sh.s, TU_STR(key), buf, n, NULL), SIMDR_OK);
    }
    pthread_t r[NREADERS];
    for (int i = 0; i < NREADERS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, reader, &sh), 0);
    uint64_t st = sh.seed;
    for (uint32_t seq = 1; seq <= NWRITES; seq++) {
        int k = (int)(tu_rand(&st) % NKEYS);
        char key[16];
        key_of(k, key, sizeof key);
        size_t n = make_value(buf, k, seq, 16 + (size_t)(tu_rand(&st) % 8000));
        if (seq % 100 == 0) {
            /* a small batch now and then */
            simdr_kv kv[2] = {{key, strlen(key), buf, n}, {key, strlen(key), buf, n}};
            assert_int_equal(simdr_put_batch(sh.s, kv, 2, NULL), SIMDR_OK);
        } else {
            assert_int_equal(simdr_put(sh.s, TU_STR(key), buf, n, NULL), SIMDR_OK);
        }
    }
    atomic_store(&sh.done, 1);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(r[i], NULL);
    fprintf(stderr, "%llu reads during %d writes\n", (unsigned long long)atomic_load(&sh.reads),
            NWRITES);
    assert_int_equal(atomic_load(&sh.bad), 0);
    assert_int_equal(atomic_load(&sh.notfound), 0);
    assert_true(atomic_load(&sh.reads) > 0);
    assert_int_equal(simdr_count(sh.s), NKEYS);
    assert_int_equal(simdr_check(sh.s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(sh.s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_many_handles_while_writing(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "h.bin");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    enum { NH = 5000, NBIG = 600, BIG = 64 * 1024 };
    uint8_t v[64];
    for (int k = 0; k < 100; k++) {
        char key[16];
        key_of(k, key, sizeof key);
        size_t n = make_value(v, k, 1, 64);
        assert_int_equal(simdr_put(s, TU_STR(key), v, n, NULL), SIMDR_OK);
    }
    simdr_entry **held = calloc(NH, sizeof *held);
    for (int i = 0; i < NH; i++) {
        char key[16];
        key_of(i % 100, key, sizeof key);
        assert_int_equal(simdr_get(s, TU_STR(key), &held[i]), SIMDR_OK);
    }
    /* ~38 MiB of writes, overwriting the held keys too */
    uint8_t *big = malloc(BIG);
    for (int i = 0; i < NBIG; i++) {
        char key[16];
        key_of(i % 100, key, sizeof key);
        size_t n = make_value(big, i % 100, 2 + (uint32_t)i, BIG - (size_t)(i % 64));
        assert_int_equal(simdr_put(s, TU_STR(key), big, n, NULL), SIMDR_OK);
    }
    assert_true(simdr_file_size(s) > (uint64_t)NBIG * (BIG - 64));
    for (int i = 0; i < NH; i++) {
        assert_int_equal(simdr_entry_size(held[i]), 64);
        assert_true(check_value(simdr_entry_data(held[i]), 64, i % 100));
        simdr_entry_release(held[i]);
    }
    for (int k = 0; k < 100; k++) {
        char key[16];
        key_of(k, key, sizeof key);
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR(key), &e), SIMDR_OK);
        assert_true(check_value(simdr_entry_data(e), simdr_entry_size(e), k));
        simdr_entry_release(e);
    }
    free(big);
    free(held);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

typedef struct handoff {
    simdr_entry *e[16];
    const uint8_t *expect;
    size_t len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closed;
    int ok;
} handoff;

static void *late_reader(void *p) {
    handoff *h = p;
    pthread_mutex_lock(&h->mu);
    while (!h->closed)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    int ok = 1;
    for (int i = 0; i < 16; i++) {
        ok &= simdr_entry_size(h->e[i]) == h->len;
        ok &= memcmp(simdr_entry_data(h->e[i]), h->expect, h->len) == 0;
        ok &= simdr_entry_verify(h->e[i]) == SIMDR_OK;
        simdr_entry_release(h->e[i]);
    }
    h->ok = ok;
    return NULL;
}

static void test_release_after_close_on_other_thread(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "r.bin");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    size_t n = 300000;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 17);
    assert_int_equal(simdr_put(s, TU_STR("k"), v, n, NULL), SIMDR_OK);
    handoff h = {.expect = v, .len = n, .mu = PTHREAD_MUTEX_INITIALIZER,
                 .cv = PTHREAD_COND_INITIALIZER};
    for (int i = 0; i < 16; i++)
        assert_int_equal(simdr_get(s, TU_STR("k"), &h.e[i]), SIMDR_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, late_reader, &h), 0);
    /* grow the file (possibly remapping), compact, then close */
    for (int i = 0; i < 20; i++)
        assert_int_equal(simdr_put(s, TU_STR("k"), v, n, NULL), SIMDR_OK);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    pthread_mutex_lock(&h.mu);
    h.closed = 1;
    pthread_cond_signal(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(t, NULL);
    assert_int_equal(h.ok, 1);
    free(v);
    tu_rmtree(dir);
    free(dir);
}

/* Batch readers: keys [0, NKEYS) are always present, [NKEYS, NKEYS + NFLICKER)
 * are deleted and written again by the writer, "none-*" never exist. */
#define NFLICKER 16
#define NBATCH 100
#define NKEPT 8

typedef struct batch_shared {
    simdr_store *s;
    _Atomic int done;
    _Atomic uint64_t batches, bad;
    _Atomic int next_id;
    uint64_t seed;
    simdr_entry *leftover[2][NKEPT]; /* released by the main thread after close */
    int leftover_key[2][NKEPT];
} batch_shared;

static void *batch_reader(void *p) {
    batch_shared *sh = p;
    int id = atomic_fetch_add(&sh->next_id, 1);
    uint64_t st = sh->seed + 7919u * (uint64_t)(id + 1);
    char names[NBATCH][24];
    int which[NBATCH];
    simdr_key keys[NBATCH];
    simdr_entry *out[NBATCH];
    simdr_entry *kept[NKEPT] = {0};
    int kept_key[NKEPT];
    while (!atomic_load(&sh->done)) {
        size_t n = 1 + (size_t)(tu_rand(&st) % NBATCH);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = tu_rand(&st);
            if (r % 10 == 0) {
                which[i] = -1;
                snprintf(names[i], sizeof names[i], "none-%d", (int)(r % 1000));
            } else if (r % 10 == 1 && i > 0) {
                size_t j = (size_t)(r >> 8) % i; /* the same key twice */
                which[i] = which[j];
                memcpy(names[i], names[j], sizeof names[i]);
            } else {
                which[i] = (int)((r >> 8) % (NKEYS + NFLICKER));
                key_of(which[i], names[i], sizeof names[i]);
            }
            keys[i].key = names[i];
            keys[i].key_len = strlen(names[i]);
        }
        int64_t found = simdr_get_batch(sh->s, keys, n, out);
        atomic_fetch_add(&sh->batches, 1);
        int64_t seen = 0;
        for (size_t i = 0; i < n; i++) {
            if (!out[i]) {
                if (which[i] >= 0 && which[i] < NKEYS) atomic_fetch_add(&sh->bad, 1);
                continue;
            }
            seen++;
            if (which[i] < 0 ||
                !check_value(simdr_entry_data(out[i]), simdr_entry_size(out[i]), which[i]))
                atomic_fetch_add(&sh->bad, 1);
        }
        if (found != seen) atomic_fetch_add(&sh->bad, 1);
        /* keep one found handle of this batch in place of an older one */
        size_t keep = (size_t)(tu_rand(&st) % n);
        for (size_t i = 0; i < n; i++) {
            if (i == keep && out[i]) {
                int slot = (int)(tu_rand(&st) % NKEPT);
                simdr_entry_release(kept[slot]);
                kept[slot] = out[i];
                kept_key[slot] = which[i];
            } else {
                simdr_entry_release(out[i]);
            }
        }
        for (int k = 0; k < NKEPT; k++)
            if (kept[k] &&
                !check_value(simdr_entry_data(kept[k]), simdr_entry_size(kept[k]), kept_key[k]))
                atomic_fetch_add(&sh->bad, 1);
    }
    for (int k = 0; k < NKEPT; k++) {
        sh->leftover[id][k] = kept[k];
        sh->leftover_key[id][k] = kept_key[k];
    }
    return NULL;
}

static void test_batch_readers_while_writer_compacts(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "b.bin");
    batch_shared sh = {.seed = tu_seed(4242)};
    sh.s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    uint8_t buf[4096];
    for (int k = 0; k < NKEYS + NFLICKER; k++) {
        char key[16];
        key_of(k, key, sizeof key);
        size_t n = make_value(buf, k, 0, 16 + (size_t)k);
        assert_int_equal(simdr_put(sh.s, TU_STR(key), buf, n, NULL), SIMDR_OK);
    }
    pthread_t r[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&r[i], NULL, batch_reader, &sh), 0);
    uint64_t st = sh.seed;
    for (uint32_t seq = 1; seq <= 4000; seq++) {
        int k = (int)(tu_rand(&st) % (NKEYS + NFLICKER));
        char key[16];
        key_of(k, key, sizeof key);
        if (k >= NKEYS && seq % 3 == 0) {
            int rc = simdr_delete(sh.s, TU_STR(key), NULL);
            assert_true(rc == SIMDR_OK || rc == SIMDR_NOTFOUND);
        } else {
            size_t n = make_value(buf, k, seq, 16 + (size_t)(tu_rand(&st) % 4000));
            assert_int_equal(simdr_put(sh.s, TU_STR(key), buf, n, NULL), SIMDR_OK);
        }
        if (seq % 1000 == 0) assert_int_equal(simdr_compact(sh.s), SIMDR_OK);
    }
    atomic_store(&sh.done, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(r[i], NULL);
    fprintf(stderr, "%llu batches during 4000 writes\n",
            (unsigned long long)atomic_load(&sh.batches));
    assert_int_equal(atomic_load(&sh.bad), 0);
    assert_true(atomic_load(&sh.batches) > 0);
    assert_int_equal(simdr_close(sh.s), SIMDR_OK);
    /* the handles the readers kept outlive the store */
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < NKEPT; k++) {
            simdr_entry *e = sh.leftover[i][k];
            if (!e) continue;
            assert_true(check_value(simdr_entry_data(e), simdr_entry_size(e), sh.leftover_key[i][k]));
            simdr_entry_release(e);
        }
    tu_rmtree(dir);
    free(dir);
}

typedef struct wr_arg {
    simdr_store *s;
    int id, n;
    int fails;
    _Atomic int *left; /* counted_writer: decremented when done */
} wr_arg;

static void *writer(void *p) {
    wr_arg *a = p;
    uint8_t buf[256];
    for (int i = 0; i < a->n; i++) {
        char key[32];
        snprintf(key, sizeof key, "w%d-%d", a->id, i);
        size_t n = make_value(buf, a->id * 10000 + i, 1, 16 + (size_t)(i % 200));
        int rc;
        if (i % 10 == 0) {
            simdr_kv kv = {key, strlen(key), buf, n};
            rc = simdr_put_batch(a->s, &kv, 1, NULL);
        } else {
            rc = simdr_put(a->s, TU_STR(key), buf, n, NULL);
        }
        a->fails += rc != SIMDR_OK;
    }
    return NULL;
}

/* Four writer threads, n writes each; durability as given (with
 * SIMDR_SYNC_DATA the writers share fdatasyncs: group commit). */
static void concurrent_writers(int durability, int n) {
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "w.bin");
    simdr_options o;
    simdr_options_init(&o);
    o.durability = durability;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, path, &o), SIMDR_OK);
    pthread_t t[4];
    wr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (wr_arg){s, i, n, 0, NULL};
        assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].fails, 0);
    }
    assert_int_equal(simdr_count(s), 4 * n);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_count(s), 4 * n);
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < n; i += 37) {
            char key[32];
            snprintf(key, sizeof key, "w%d-%d", w, i);
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR(key), &e), SIMDR_OK);
            assert_true(check_value(simdr_entry_data(e), simdr_entry_size(e), w * 10000 + i));
            simdr_entry_release(e);
        }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_concurrent_writers(void **state) {
    (void)state;
    concurrent_writers(SIMDR_SYNC_NONE, 1000);
}

/* Durable writers waiting for each other's fdatasync (group commit) lose
 * no write and leave a sound file. */
static void test_concurrent_durable_writers(void **state) {
    (void)state;
    concurrent_writers(SIMDR_SYNC_DATA, 150);
}

typedef struct compactor_arg {
    simdr_store *s;
    _Atomic int *writers_left;
    int rounds;
    int fails;
} compactor_arg;

/* Compacts and syncs until the writers are done (and at least rounds times). */
static void *compactor(void *p) {
    compactor_arg *a = p;
    for (int i = 0; i < a->rounds || atomic_load(a->writers_left) > 0; i++) {
        a->fails += simdr_compact(a->s) != SIMDR_OK;
        a->fails += simdr_sync(a->s) != SIMDR_OK;
    }
    return NULL;
}

static void *counted_writer(void *p) {
    wr_arg *a = p;
    writer(a);
    atomic_fetch_sub(a->left, 1);
    return NULL;
}

/* Compaction takes both of the store's locks; durable writers and
 * simdr_sync take the sync lock and, inside it, the writer lock. Taken in
 * opposite orders they deadlocked on the first compaction. Two durable
 * writers, a thread compacting and syncing, and the main thread syncing,
 * under a watchdog; every acknowledged write is there after a reopen. */
static void test_compaction_against_durable_writers(void **state) {
    (void)state;
    enum { N = 80, ROUNDS = 10 };
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "d.bin");
    simdr_options o;
    simdr_options_init(&o);
    o.durability = SIMDR_SYNC_DATA;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, path, &o), SIMDR_OK);
    tu_watchdog_start(120, "durable writers, compaction and simdr_sync");
    _Atomic int left = 2;
    pthread_t t[3];
    wr_arg a[2];
    for (int i = 0; i < 2; i++) {
        a[i] = (wr_arg){s, i, N, 0, &left};
        assert_int_equal(pthread_create(&t[i], NULL, counted_writer, &a[i]), 0);
    }
    compactor_arg c = {s, &left, ROUNDS, 0};
    assert_int_equal(pthread_create(&t[2], NULL, compactor, &c), 0);
    int sync_fails = 0;
    while (atomic_load(&left) > 0)
        sync_fails += simdr_sync(s) != SIMDR_OK;
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    tu_watchdog_stop();
    assert_int_equal(sync_fails, 0);
    assert_int_equal(c.fails, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(a[i].fails, 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = tu_open(path, SIMDR_OPEN_READONLY, 0);
    assert_int_equal(simdr_count(s), 2 * N);
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < N; i++) {
            char key[32];
            snprintf(key, sizeof key, "w%d-%d", w, i);
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR(key), &e), SIMDR_OK);
            assert_true(check_value(simdr_entry_data(e), simdr_entry_size(e), w * 10000 + i));
            simdr_entry_release(e);
        }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

enum { MOVE_PUTS = 3000 };

typedef struct move_race {
    simdr_store *a, *b;
    _Atomic int putter_done;
    uint64_t put_tail[MOVE_PUTS + 1]; /* a's tail after put number i */
    uint64_t moved_seq[MOVE_PUTS + 1], move_tail[MOVE_PUTS + 1];
    int moves;
    int put_fails, move_fails;
} move_race;

static void *race_putter(void *p) {
    move_race *r = p;
    for (uint32_t i = 1; i <= MOVE_PUTS; i++)
        r->put_fails += simdr_put(r->a, TU_STR("key"), &i, sizeof i, &r->put_tail[i]) != SIMDR_OK;
    atomic_store(&r->putter_done, 1);
    return NULL;
}

static void *race_mover(void *p) {
    move_race *r = p;
    while (r->moves < MOVE_PUTS) {
        int done = atomic_load(&r->putter_done);
        uint64_t tail = 0;
        int rc = simdr_move(r->a, TU_STR("key"), r->b, &tail);
        if (rc == SIMDR_OK) {
            /* only this thread writes b: its value is the one just moved */
            uint32_t seq = 0;
            size_t len = 0;
            r->move_fails +=
                simdr_get_copy(r->b, TU_STR("key"), &seq, sizeof seq, &len) != SIMDR_OK;
            r->moved_seq[r->moves] = seq;
            r->move_tail[r->moves++] = tail;
        } else if (rc != SIMDR_NOTFOUND) {
            r->move_fails++;
        } else if (done) {
            break;
        }
    }
    return NULL;
}

/* simdr_move copied the value and then deleted the key in a second step,
 * so a put landing in between was deleted without having been copied. One
 * thread puts the same key (values 1, 2, ...) while another moves it to a
 * second store. Each move's delete is in the source's file: the newest put
 * before it must be the value the move copied. */
static void test_move_against_concurrent_put(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char pa[4096], pb[4096];
    tu_join(pa, sizeof pa, dir, "a.bin");
    tu_join(pb, sizeof pb, dir, "b.bin");
    move_race *r = calloc(1, sizeof *r);
    r->a = tu_open(pa, SIMDR_OPEN_CREATE, 0);
    r->b = tu_open(pb, SIMDR_OPEN_CREATE, 0);
    tu_watchdog_start(120, "puts racing moves");
    pthread_t t[2];
    assert_int_equal(pthread_create(&t[0], NULL, race_putter, r), 0);
    assert_int_equal(pthread_create(&t[1], NULL, race_mover, r), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    tu_watchdog_stop();
    assert_int_equal(r->put_fails, 0);
    assert_int_equal(r->move_fails, 0);
    assert_true(r->moves > 0);
    uint32_t newest = 0; /* the newest put before the move's delete */
    int lost = 0;
    for (int m = 0; m < r->moves; m++) {
        while (newest < MOVE_PUTS && r->put_tail[newest + 1] < r->move_tail[m])
            newest++;
        if (r->moved_seq[m] != newest) {
            if (!lost)
                fprintf(stderr, "move %d copied put %llu but deleted put %u\n", m,
                        (unsigned long long)r->moved_seq[m], newest);
            lost++;
        }
    }
    assert_int_equal(lost, 0);
    assert_int_equal(simdr_close(r->a), SIMDR_OK);
    assert_int_equal(simdr_close(r->b), SIMDR_OK);
    free(r);
    tu_rmtree(dir);
    free(dir);
}

/* A large index grows on two threads (index.c, the move of its slots split
 * with a helper thread). Two readers look up keys already written, and must
 * find each with its own value, and a third thread scans (grow_scanner),
 * while the writer adds 260,000 keys in
 * batches (three growths past the size at which the helper joins) and
 * deletes every tenth: after the growths every key, every tombstone and the
 * count are as written, in the store, in a read-only open refreshed after
 * the writes, and after reopens with and without the hint. */
#define GROW_KEYS 260000
#define GROW_BATCH 500

typedef struct grow_shared {
    simdr_store *s;
    _Atomic uint32_t written; /* keys [0, written) are in the store */
    _Atomic int done;
    _Atomic uint64_t reads, bad;
    _Atomic uint64_t scans, large_scans, scan_bad;
    uint64_t seed;
} grow_shared;

static void grow_key(uint32_t i, char *k, size_t cap) { snprintf(k, cap, "grow-%07u", i); }

static void *grow_reader(void *p) {
    grow_shared *g = p;
    uint64_t st = g->seed;
    while (!atomic_load(&g->done)) {
        uint32_t n = atomic_load(&g->written);
        if (n == 0) continue;
        uint32_t i = (uint32_t)(tu_rand(&st) % n);
        if (i % 10 == 0) continue; /* deleted, or about to be */
        char key[24];
        grow_key(i, key, sizeof key);
        uint64_t v = 0;
        size_t len = 0;
        int rc = simdr_get_copy(g->s, TU_STR(key), &v, sizeof v, &len);
        if (rc != SIMDR_OK || len != sizeof v || v != i) atomic_fetch_add(&g->bad, 1);
        atomic_fetch_add(&g->reads, 1);
    }
    return NULL;
}

/* Counts the entries a scan visits and sums their values (sums[0], sums[1]). */
static int count_visit(void *ctx, const simdr_entry *e) {
    uint64_t *sums = ctx;
    sums[0]++;
    uint64_t v = 0;
    memcpy(&v, simdr_entry_data(e), sizeof v);
    sums[1] += v;
    return 0;
}

/* Marks each visited value in a bitmap; a value seen twice is counted. */
typedef struct scan_seen {
    uint8_t *bits;
    uint64_t twice, out_of_range;
} scan_seen;

static int mark_seen(void *ctx, const simdr_entry *e) {
    scan_seen *m = ctx;
    uint64_t v = 0;
    memcpy(&v, simdr_entry_data(e), sizeof v);
    if (v >= GROW_KEYS) {
        m->out_of_range++;
        return 0;
    }
    if (m->bits[v / 8] & (1u << (v % 8))) m->twice++;
    m->bits[v / 8] |= (uint8_t)(1u << (v % 8));
    return 0;
}

/* Scans while the writer loads and the index grows under them: each scan is
 * one snapshot, so it visits no key twice, and every key acknowledged before
 * it began is there unless deleted (every tenth, deleted in the same round).
 * A scan that finds the index already ahead of its snapshot walks the chain
 * instead of marking the table (iter.c); it must hold to the snapshot either
 * way. It goes on until a scan of a table past 2^17 slots has completed. */
static void *grow_scanner(void *p) {
    grow_shared *g = p;
    uint8_t *bits = malloc(GROW_KEYS / 8 + 1);
    if (!bits) {
        atomic_fetch_add(&g->scan_bad, 1);
        return NULL;
    }
    while (!atomic_load(&g->done) || atomic_load(&g->large_scans) == 0) {
        uint32_t before = atomic_load(&g->written);
        memset(bits, 0, GROW_KEYS / 8 + 1);
        scan_seen m = {bits, 0, 0};
        int bad = simdr_for_each(g->s, mark_seen, &m) != SIMDR_OK || m.twice || m.out_of_range;
        for (uint32_t i = 0; i < before && !bad; i++) {
            int seen = (bits[i / 8] >> (i % 8)) & 1;
            bad = seen != (i % 10 != 0);
        }
        if (bad) atomic_fetch_add(&g->scan_bad, 1);
        atomic_fetch_add(&g->scans, 1);
        if (before >= 110000) atomic_fetch_add(&g->large_scans, 1); /* 132,859 slots by then */
    }
    free(bits);
    return NULL;
}

static void check_grown(simdr_store *s) {
    for (uint32_t i = 0; i < GROW_KEYS; i++) {
        char key[24];
        grow_key(i, key, sizeof key);
        uint64_t v = 0;
        size_t len = 0;
        int rc = simdr_get_copy(s, TU_STR(key), &v, sizeof v, &len);
        if (i % 10 == 0) {
            assert_int_equal(rc, SIMDR_NOTFOUND);
        } else {
            assert_int_equal(rc, SIMDR_OK);
            assert_int_equal(v, i);
        }
    }
    assert_int_equal(simdr_count(s), GROW_KEYS - GROW_KEYS / 10);
    /* A scan of a table this large marks the live entries on two threads
     * (iter.c, mark_live): each live key once, no deleted one. */
    uint64_t sums[2] = {0, 0}, want = 0;
    for (uint32_t i = 0; i < GROW_KEYS; i++)
        if (i % 10) want += i;
    assert_int_equal(simdr_for_each(s, count_visit, sums), SIMDR_OK);
    assert_int_equal(sums[0], GROW_KEYS - GROW_KEYS / 10);
    assert_int_equal(sums[1], want);
}

/* Writes keys 0 .. GROW_KEYS - 1 (value: the key's number) in batches of
 * GROW_BATCH, deleting every tenth after its batch; *written (may be NULL)
 * follows the keys in the store. */
static void grow_load(simdr_store *s, _Atomic uint32_t *written) {
    static char keys[GROW_BATCH][24];
    static uint64_t vals[GROW_BATCH];
    simdr_kv kv[GROW_BATCH];
    simdr_key dels[GROW_BATCH / 10];
    for (uint32_t at = 0; at < GROW_KEYS; at += GROW_BATCH) {
        size_t nd = 0;
        for (uint32_t j = 0; j < GROW_BATCH; j++) {
            grow_key(at + j, keys[j], sizeof keys[j]);
            vals[j] = at + j;
            kv[j] = (simdr_kv){keys[j], strlen(keys[j]), &vals[j], sizeof vals[j]};
            if ((at + j) % 10 == 0) dels[nd++] = (simdr_key){keys[j], strlen(keys[j])};
        }
        assert_int_equal(simdr_put_batch(s, kv, GROW_BATCH, NULL), SIMDR_OK);
        size_t deleted = 0;
        assert_int_equal(simdr_delete_batch(s, dels, nd, &deleted, NULL), SIMDR_OK);
        assert_int_equal(deleted, nd);
        if (written) atomic_store(written, at + GROW_BATCH);
    }
}

static void test_readers_while_index_grows_on_two_threads(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "g.bin");
    grow_shared *g = calloc(1, sizeof *g);
    g->seed = tu_seed(77);
    g->s = tu_open(path, SIMDR_OPEN_CREATE, 0);
    /* A read-only open from before the writes grows its own index when it
     * refreshes (refresh.c). */
    simdr_options ro;
    simdr_options_init(&ro);
    ro.open_mode = SIMDR_OPEN_READONLY;
    simdr_store *reader_store = NULL;
    assert_int_equal(simdr_open(&reader_store, path, &ro), SIMDR_OK);
    tu_watchdog_start(240, "readers while the index grows");
    pthread_t r[3];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&r[i], NULL, grow_reader, g), 0);
    }
    assert_int_equal(pthread_create(&r[2], NULL, grow_scanner, g), 0);
    grow_load(g->s, &g->written);
    atomic_store(&g->done, 1);
    for (int i = 0; i < 3; i++) pthread_join(r[i], NULL);
    tu_watchdog_stop();
    fprintf(stderr, "%llu reads, %llu scans (%llu of a large table) during the load\n",
            (unsigned long long)atomic_load(&g->reads), (unsigned long long)atomic_load(&g->scans),
            (unsigned long long)atomic_load(&g->large_scans));
    assert_int_equal(atomic_load(&g->bad), 0);
    assert_int_equal(atomic_load(&g->scan_bad), 0);
    assert_true(atomic_load(&g->reads) > 0);
    assert_true(atomic_load(&g->large_scans) > 0);
    /* The table went past the size from which growths use the helper
     * (2^17 slots of 8 bytes, grown 1.5x). */
    assert_true(simdr_index_bytes(g->s) >= (UINT64_C(1) << 17) * 8 * 3 / 2);
    check_grown(g->s);
    assert_int_equal(simdr_check(g->s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(g->s), SIMDR_OK);
    uint64_t fresh = 0;
    assert_int_equal(simdr_refresh(reader_store, &fresh), SIMDR_OK);
    assert_true(fresh > 0);
    check_grown(reader_store);
    assert_int_equal(simdr_close(reader_store), SIMDR_OK);
    simdr_store *again = tu_open(path, 0, 0);
    check_grown(again);
    assert_int_equal(simdr_close(again), SIMDR_OK);
    /* Without the hint the open rebuilds the index from the chain (load.c),
     * growing it as it goes. */
    simdr_options nohint;
    simdr_options_init(&nohint);
    nohint.use_hint = 0;
    assert_int_equal(simdr_open(&again, path, &nohint), SIMDR_OK);
    check_grown(again);
    assert_int_equal(simdr_close(again), SIMDR_OK);
    free(g);
    tu_rmtree(dir);
    free(dir);
}

/* Where no thread can be created (a process limit, a sandbox), a growth
 * moves every slot on the writing thread, a scan marks the live entries on
 * it, and simdr_for_each_parallel runs every share on the calling thread:
 * nothing is lost or visited twice. */

static void test_no_helper_threads(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[4096];
    tu_join(path, sizeof path, dir, "n.bin");
    simdr__io_fault no_threads = {.op = SIMDR__IO_THREAD_CREATE, .nth = 1, .count = 0,
                                  .err = EAGAIN};
    simdr__io_fault_arm(&no_threads);
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, 0);
    grow_load(s, NULL);
    uint64_t growth_attempts = simdr__io_hits(SIMDR__IO_THREAD_CREATE);
    assert_true(growth_attempts >= 1); /* the growths past 2^17 slots asked for a helper */
    check_grown(s); /* its scan asks for one more */
    assert_int_equal(simdr__io_hits(SIMDR__IO_THREAD_CREATE), growth_attempts + 1);
    uint64_t sums[2] = {0, 0}, want = 0;
    for (uint32_t i = 0; i < GROW_KEYS; i++)
        if (i % 10) want += i;
    assert_int_equal(simdr_for_each_parallel(s, 4, count_visit, sums), SIMDR_OK);
    assert_int_equal(simdr__io_hits(SIMDR__IO_THREAD_CREATE), growth_attempts + 4);
    assert_int_equal(sums[0], GROW_KEYS - GROW_KEYS / 10);
    assert_int_equal(sums[1], want);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    simdr__io_reset();
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_while_writer_overwrites),
        cmocka_unit_test(test_many_handles_while_writing),
        cmocka_unit_test(test_release_after_close_on_other_thread),
        cmocka_unit_test(test_batch_readers_while_writer_compacts),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_concurrent_durable_writers),
        cmocka_unit_test(test_compaction_against_durable_writers),
        cmocka_unit_test(test_move_against_concurrent_put),
        cmocka_unit_test(test_readers_while_index_grows_on_two_threads),
        cmocka_unit_test(test_no_helper_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
