/*
 * test_read_scope.c - read scopes (simdr_read_begin/get/end): they answer as
 * simdr_get does in both layouts and for every value size, their pointers
 * stay valid until the scope ends while writers grow the index and the map
 * and compaction swaps the file, writes on the same store are refused
 * inside one, damage is reported, and readers in scopes run against a
 * writer and compaction (ThreadSanitizer, label concurrency).
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fixture {
    char *dir;
    char path[4096];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_mkdtemp();
    tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void key_of(char *out, size_t cap, unsigned i) { snprintf(out, cap, "key-%u", i); }

/* Value of key i, version ver: len bytes, the first 8 naming (i, ver). */
static size_t value_of(uint8_t *buf, unsigned i, unsigned ver) {
    size_t len = 8 + (i * 7u + ver) % 120u; /* short and long (inline and library CRC) */
    tu_fill(buf, len, (uint64_t)i << 20 | ver);
    tu_put_le64(buf, (uint64_t)i << 32 | ver);
    return len;
}

static void put_version(simdr_store *s, unsigned i, unsigned ver) {
    char key[32];
    uint8_t val[160];
    key_of(key, sizeof key, i);
    size_t len = value_of(val, i, ver);
    assert_int_equal(simdr_put(s, key, strlen(key), val, len, NULL), SIMDR_OK);
}

/* The scope answers exactly what simdr_get answers. */
static void expect_same_as_get(simdr_store *s, simdr_read *r, const char *key) {
    const void *p = NULL;
    size_t n = 0;
    simdr_entry *e = NULL;
    int want = simdr_get(s, key, strlen(key), &e);
    int got = simdr_read_get(r, key, strlen(key), &p, &n);
    assert_int_equal(got, want);
    if (want == SIMDR_OK) {
        assert_int_equal(n, simdr_entry_size(e));
        assert_memory_equal(p, simdr_entry_data(e), n);
        assert_int_equal(simdr_read_get_hashed(r, simdr_hash_key(key, strlen(key)), &p, &n),
                         SIMDR_OK);
        assert_memory_equal(p, simdr_entry_data(e), n);
    }
    simdr_entry_release(e);
}

static void scope_answers_as_get_in_both_layouts(void **state) {
    fixture *f = *state;
    for (int layout = SIMDR_LAYOUT_ALIGNED64; layout <= SIMDR_LAYOUT_UNALIGNED; layout++) {
        unlink(f->path);
        simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, layout);
        for (unsigned i = 0; i < 3000; i++) put_version(s, i, 0);
        for (unsigned i = 0; i < 3000; i += 3) put_version(s, i, 1);
        for (unsigned i = 1; i < 3000; i += 5) {
            char key[32];
            key_of(key, sizeof key, i);
            assert_int_equal(simdr_delete(s, key, strlen(key), NULL), SIMDR_OK);
        }
        /* a large value (checked a MiB at a time) and a one-byte one */
        size_t big = (size_t)3 << 20;
        uint8_t *v = malloc(big);
        tu_fill(v, big, 99);
        assert_int_equal(simdr_put(s, TU_STR("big"), v, big, NULL), SIMDR_OK);
        assert_int_equal(simdr_put(s, TU_STR("one"), "x", 1, NULL), SIMDR_OK);
        free(v);
        for (int reopened = 0; reopened < 2; reopened++) {
            simdr_read r;
            assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
            for (unsigned i = 0; i < 3100; i++) {
                char key[32];
                key_of(key, sizeof key, i);
                expect_same_as_get(s, &r, key);
            }
            /* the batch call answers the same, key by key */
            simdr_key keys[300];
            char names[300][32];
            const void *vals[300];
            size_t lens[300];
            int64_t want_found = 0;
            for (unsigned i = 0; i < 300; i++) {
                key_of(names[i], sizeof names[i], i * 11u);
                keys[i].key = names[i];
                keys[i].key_len = strlen(names[i]);
            }
            int64_t found = simdr_read_get_batch(&r, keys, 300, vals, lens);
            for (unsigned i = 0; i < 300; i++) {
                simdr_entry *e = NULL;
                int rc = simdr_get(s, names[i], strlen(names[i]), &e);
                if (rc == SIMDR_OK) {
                    want_found++;
                    assert_non_null(vals[i]);
                    assert_int_equal(lens[i], simdr_entry_size(e));
                    assert_memory_equal(vals[i], simdr_entry_data(e), lens[i]);
                } else {
                    assert_int_equal(rc, SIMDR_NOTFOUND);
                    assert_null(vals[i]);
                }
                simdr_entry_release(e);
            }
            assert_int_equal(found, want_found);
            expect_same_as_get(s, &r, "big");
            expect_same_as_get(s, &r, "one");
            expect_same_as_get(s, &r, "");
            simdr_read_end(&r);
            assert_int_equal(simdr_close(s), SIMDR_OK);
            s = tu_open(f->path, SIMDR_OPEN_EXISTING, layout);
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

static void scope_argument_checks(void **state) {
    fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    simdr_read r;
    const void *p;
    size_t n;
    assert_int_equal(simdr_read_begin(NULL, &r), SIMDR_EINVAL);
    assert_int_equal(simdr_read_begin(s, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
    assert_int_equal(simdr_read_get(&r, NULL, 3, &p, &n), SIMDR_EINVAL);
    assert_int_equal(simdr_read_get(&r, TU_STR("a"), NULL, &n), SIMDR_EINVAL);
    assert_int_equal(simdr_read_get(&r, TU_STR("a"), &p, NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_read_get(NULL, TU_STR("a"), &p, &n), SIMDR_EINVAL);
    assert_int_equal(simdr_read_get(&r, TU_STR("a"), &p, &n), SIMDR_NOTFOUND);
    simdr_read_end(&r);
    /* an ended scope answers nothing, and ending it again does nothing */
    assert_int_equal(simdr_read_get(&r, TU_STR("a"), &p, &n), SIMDR_EINVAL);
    simdr_read_end(&r);
    simdr_read_end(NULL);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Inside a scope, the same store's writes, sync and compaction would wait
 * for the scope's own grace period: refused. Another store is not held. */
static void scope_refuses_writes_on_its_store(void **state) {
    fixture *f = *state;
    char other_path[4200];
    snprintf(other_path, sizeof other_path, "%s.other", f->path);
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    simdr_store *o = tu_open(other_path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_UNALIGNED);
    tu_put_str(s, "a", "1");
    simdr_read outer, inner;
    assert_int_equal(simdr_read_begin(s, &outer), SIMDR_OK);
    assert_int_equal(simdr_read_begin(o, &inner), SIMDR_OK);
    assert_int_equal(simdr_put(s, TU_STR("b"), "2", 1, NULL), SIMDR_EINVAL);
    assert_non_null(strstr(simdr_last_error(), "read scope"));
    assert_int_equal(simdr_delete(s, TU_STR("a"), NULL), SIMDR_EINVAL);
    assert_int_equal(simdr_sync(s), SIMDR_EINVAL);
    assert_int_equal(simdr_compact(s), SIMDR_EINVAL);
    assert_int_equal(simdr_put(o, TU_STR("b"), "2", 1, NULL), SIMDR_EINVAL);
    simdr_read_end(&inner);
    /* the other store is free again; the first still held by outer */
    assert_int_equal(simdr_put(o, TU_STR("b"), "2", 1, NULL), SIMDR_OK);
    assert_int_equal(simdr_put(s, TU_STR("b"), "2", 1, NULL), SIMDR_EINVAL);
    const void *p;
    size_t n;
    assert_int_equal(simdr_read_get(&outer, TU_STR("a"), &p, &n), SIMDR_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(p, "1", 1);
    simdr_read_end(&outer);
    assert_int_equal(simdr_put(s, TU_STR("b"), "2", 1, NULL), SIMDR_OK);
    tu_expect_str(s, "b", "2");
    assert_int_equal(simdr_close(o), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    unlink(other_path);
}

/* ---- pointers outlive growth and compaction until the scope ends ---- */

typedef struct grow_job {
    simdr_store *s;
    unsigned from, count;
    int rc;
} grow_job;

static void *grow_and_compact(void *arg) {
    grow_job *j = arg;
    j->rc = SIMDR_OK;
    for (unsigned i = j->from; i < j->from + j->count && j->rc == SIMDR_OK; i++) {
        char key[32];
        uint8_t val[160];
        key_of(key, sizeof key, i);
        size_t len = value_of(val, i, 0);
        j->rc = simdr_put(j->s, key, strlen(key), val, len, NULL);
    }
    if (j->rc == SIMDR_OK) j->rc = simdr_compact(j->s);
    return NULL;
}

static void scope_pointers_outlive_growth_and_compaction(void **state) {
    fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    for (unsigned i = 0; i < 200; i++) put_version(s, i, 0);
    for (unsigned i = 0; i < 200; i++) put_version(s, i, 1); /* compaction will move them */
    tu_watchdog_start(120, "scope_pointers_outlive_growth_and_compaction");
    simdr_read r;
    assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
    const void *held[200];
    size_t held_len[200];
    for (unsigned i = 0; i < 200; i++) {
        char key[32];
        key_of(key, sizeof key, i);
        assert_int_equal(simdr_read_get(&r, key, strlen(key), &held[i], &held_len[i]), SIMDR_OK);
    }
    /* The writer grows the index and the map, then compacts: each view it
     * replaces waits for this scope, so it cannot finish before the end. */
    grow_job j = {s, 1000, 60000, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grow_and_compact, &j), 0);
    for (int round = 0; round < 50; round++) {
        for (unsigned i = 0; i < 200; i++) {
            uint8_t want[160];
            size_t len = value_of(want, i, 1);
            assert_int_equal(held_len[i], len);
            assert_memory_equal(held[i], want, len);
        }
        usleep(2000);
    }
    simdr_read_end(&r);
    assert_int_equal(pthread_join(th, NULL), 0);
    tu_watchdog_stop();
    assert_int_equal(j.rc, SIMDR_OK);
    for (unsigned i = 0; i < 200; i += 7) {
        char key[32];
        uint8_t want[160];
        key_of(key, sizeof key, i);
        size_t len = value_of(want, i, 1);
        tu_expect_value(s, key, strlen(key), want, len);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* ---- damage ---- */

static void patch_bytes(const char *path, uint64_t off, const void *b, size_t n) {
    tu_patch_file(path, off, b, n);
}

static void scope_reports_damage(void **state) {
    fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    for (unsigned i = 0; i < 100; i++) put_version(s, i, 0);
    simdr_entry *e;
    assert_int_equal(simdr_get(s, TU_STR("key-10"), &e), SIMDR_OK);
    uint64_t payload = simdr_entry_offset(e);
    simdr_entry_release(e);
    assert_int_equal(simdr_get(s, TU_STR("key-20"), &e), SIMDR_OK);
    uint64_t end20 = simdr_entry_end(e);
    simdr_entry_release(e);
    /* bit rot in a value; metadata of another key zeroed (the open store's
     * map shares the file's pages) */
    uint8_t b = 0;
    int fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)payload + 9), 1);
    close(fd);
    b ^= 0x40;
    patch_bytes(f->path, payload + 9, &b, 1);
    uint8_t zeros[20] = {0};
    patch_bytes(f->path, end20 - 20, zeros, sizeof zeros);
    simdr_read r;
    const void *p = NULL;
    size_t n = 0;
    assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
    assert_int_equal(simdr_read_get(&r, TU_STR("key-10"), &p, &n), SIMDR_ECORRUPT);
    assert_non_null(strstr(simdr_last_error(), "checksum"));
    assert_int_equal(simdr_read_get(&r, TU_STR("key-20"), &p, &n), SIMDR_ECORRUPT);
    assert_int_equal(simdr_read_get(&r, TU_STR("key-30"), &p, &n), SIMDR_OK);
    simdr_key keys[3] = {{TU_STR("key-30")}, {TU_STR("key-10")}, {TU_STR("key-31")}};
    const void *vals[3];
    size_t lens[3];
    assert_int_equal(simdr_read_get_batch(&r, keys, 3, vals, lens), SIMDR_ECORRUPT);
    for (int i = 0; i < 3; i++) assert_null(vals[i]);
    keys[1] = (simdr_key){TU_STR("key-20")};
    assert_int_equal(simdr_read_get_batch(&r, keys, 3, vals, lens), SIMDR_ECORRUPT);
    keys[1] = (simdr_key){TU_STR("absent")};
    assert_int_equal(simdr_read_get_batch(&r, keys, 3, vals, lens), 2);
    assert_null(vals[1]);
    simdr_read_end(&r);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Every value length the inline check handles in pieces (1 to 3 leftover
 * bytes through a table, 4 to 7 as a shifted word, whole words), and some
 * past it, in both layouts: a scope, a batch and simdr_get serve each value
 * intact, and each refuses it once one bit of it has flipped. */
static void scope_checks_every_short_length(void **state) {
    fixture *f = *state;
    enum { MAX_LEN = 48 };
    for (int layout = 0; layout < 2; layout++) {
        char path[4096];
        tu_join(path, sizeof path, f->dir, layout ? "unaligned.bin" : "aligned.bin");
        simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE,
                                 layout ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64);
        uint8_t want[MAX_LEN + 1][MAX_LEN];
        char key[32];
        for (unsigned len = 1; len <= MAX_LEN; len++) {
            tu_fill(want[len], len, 1000u * (unsigned)layout + len);
            want[len][0] |= 1; /* never the single tombstone byte 0x00 */
            snprintf(key, sizeof key, "len-%u", len);
            assert_int_equal(simdr_put(s, key, strlen(key), want[len], len, NULL), SIMDR_OK);
        }
        simdr_read r;
        const void *p;
        size_t n;
        assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
        for (unsigned len = 1; len <= MAX_LEN; len++) {
            snprintf(key, sizeof key, "len-%u", len);
            assert_int_equal(simdr_read_get(&r, key, strlen(key), &p, &n), SIMDR_OK);
            assert_int_equal(n, len);
            assert_memory_equal(p, want[len], len);
            simdr_key k = {key, strlen(key)};
            assert_int_equal(simdr_read_get_batch(&r, &k, 1, &p, &n), 1);
            assert_int_equal(n, len);
            assert_memory_equal(p, want[len], len);
        }
        simdr_read_end(&r);
        for (unsigned len = 1; len <= MAX_LEN; len++) {
            snprintf(key, sizeof key, "len-%u", len);
            simdr_entry *e;
            assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_OK);
            uint64_t at = simdr_entry_offset(e) + (len * 5u) % len;
            simdr_entry_release(e);
            uint8_t b = (uint8_t)(want[len][(len * 5u) % len] ^ (1u << (len % 8)));
            tu_patch_file(path, at, &b, 1);
            assert_int_equal(simdr_read_begin(s, &r), SIMDR_OK);
            assert_int_equal(simdr_read_get(&r, key, strlen(key), &p, &n), SIMDR_ECORRUPT);
            simdr_key k = {key, strlen(key)};
            assert_int_equal(simdr_read_get_batch(&r, &k, 1, &p, &n), SIMDR_ECORRUPT);
            simdr_read_end(&r);
            assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_ECORRUPT);
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

/* ---- readers in scopes against a writer and compaction (TSan) ---- */

enum { KEYS = 2000, READERS = 2 };

typedef struct race {
    simdr_store *s;
    _Atomic int stop;
    _Atomic unsigned long reads;
    _Atomic int reader_error;
    int writer_rc;
} race;

static void *race_reader(void *arg) {
    race *rc = arg;
    uint64_t rng = 12345 + (uint64_t)(uintptr_t)&rng;
    while (!atomic_load(&rc->stop)) {
        simdr_read r;
        if (simdr_read_begin(rc->s, &r) != SIMDR_OK) {
            rc->reader_error = 1;
            break;
        }
        /* several gets per scope; all their pointers checked at the end */
        const void *p[8];
        size_t n[8];
        unsigned idx[8];
        for (int k = 0; k < 8; k++) {
            idx[k] = (unsigned)(tu_rand(&rng) % KEYS);
            char key[32];
            key_of(key, sizeof key, idx[k]);
            if (simdr_read_get(&r, key, strlen(key), &p[k], &n[k]) != SIMDR_OK) {
                rc->reader_error = 2;
                n[k] = 0;
            }
        }
        for (int k = 0; k < 8; k++) {
            if (n[k] < 8) continue;
            uint64_t tag = tu_get_le64(p[k]);
            unsigned ver = (unsigned)(tag & 0xffffffffu);
            uint8_t want[160];
            size_t len = value_of(want, idx[k], ver);
            if ((tag >> 32) != idx[k] || len != n[k] || memcmp(want, p[k], len) != 0)
                rc->reader_error = 3;
        }
        simdr_read_end(&r);
        atomic_fetch_add(&rc->reads, 1);
    }
    return NULL;
}

static void scope_readers_race_writer_and_compaction(void **state) {
    fixture *f = *state;
    race rc = {0};
    rc.s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    for (unsigned i = 0; i < KEYS; i++) put_version(rc.s, i, 0);
    tu_watchdog_start(240, "scope_readers_race_writer_and_compaction");
    pthread_t th[READERS];
    for (int t = 0; t < READERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, race_reader, &rc), 0);
    /* overwrites grow the map; new keys beyond KEYS grow the index; every
     * round ends with a compaction, which swaps the file */
    unsigned extra = KEYS;
    for (unsigned round = 1; round <= 6 && rc.writer_rc == SIMDR_OK; round++) {
        for (unsigned i = 0; i < KEYS && rc.writer_rc == SIMDR_OK; i++) {
            char key[32];
            uint8_t val[160];
            key_of(key, sizeof key, i);
            size_t len = value_of(val, i, round);
            rc.writer_rc = simdr_put(rc.s, key, strlen(key), val, len, NULL);
        }
        for (unsigned i = 0; i < 3000 && rc.writer_rc == SIMDR_OK; i++, extra++)
            put_version(rc.s, extra, 0);
        if (rc.writer_rc == SIMDR_OK) rc.writer_rc = simdr_compact(rc.s);
    }
    atomic_store(&rc.stop, 1);
    for (int t = 0; t < READERS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    tu_watchdog_stop();
    assert_int_equal(rc.writer_rc, SIMDR_OK);
    assert_int_equal(rc.reader_error, 0);
    assert_true(atomic_load(&rc.reads) > 0);
    assert_int_equal(simdr_close(rc.s), SIMDR_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(scope_answers_as_get_in_both_layouts, setup, teardown),
        cmocka_unit_test_setup_teardown(scope_argument_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(scope_refuses_writes_on_its_store, setup, teardown),
        cmocka_unit_test_setup_teardown(scope_pointers_outlive_growth_and_compaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(scope_reports_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(scope_checks_every_short_length, setup, teardown),
        cmocka_unit_test_setup_teardown(scope_readers_race_writer_and_compaction, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
