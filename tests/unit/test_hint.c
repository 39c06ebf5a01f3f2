/*
 * test_hint.c - the index hint file ("<store>.hint"): a hinted open maps the
 * saved table and checks each block of it on first use, so a damaged block
 * must never hide or misserve a key (every read is the right value or
 * SIMDR_ECORRUPT, never "not found"), must not be saved again, and is
 * replaced by a rebuilt index before the next write; a stale hint, one of
 * another store, one of an earlier layout or with a damaged header is
 * ignored (the open rebuilds); tables whose size is not a whole number of
 * blocks load and check right; and readers checking blocks while the
 * writer's first write settles the table never see damage that is not
 * there.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* hint.c: how many opens took their index from a hint file. */
extern _Atomic uint64_t simdr__hint_loads;
extern _Atomic int simdr__iter_all_live;
extern _Atomic uint64_t simdr__iter_all_live_walks;

/* Header fields (hint.c, little-endian u64s): cap at 32, table_off at 64. */
#define HINT_CAP_AT 32
#define HINT_TABLE_OFF_AT 64
#define BLOCK_BYTES (4096 * 8)

static void key_of(char *k, size_t cap, int i) { snprintf(k, cap, "key-%d", i); }
static void value_of(char *v, size_t cap, int i) { snprintf(v, cap, "value %d", i * 7); }

static void hint_path(const char *store, char *out, size_t cap) {
    size_t n = strlen(store);
    assert_true(n + sizeof ".hint" <= cap);
    memcpy(out, store, n);
    memcpy(out + n, ".hint", sizeof ".hint");
}

/* A store of keys [0, n) closed with its hint; the hint's bytes in *hint. */
static uint8_t *hinted_store(const char *path, int n, size_t *hint_len) {
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    enum { BATCH = 1000 };
    char keys[BATCH][32], vals[BATCH][32];
    simdr_kv kv[BATCH];
    for (int i = 0; i < n; i += BATCH) {
        int m = 0;
        for (int j = i; j < n && j < i + BATCH; j++, m++) {
            key_of(keys[m], sizeof keys[m], j);
            value_of(vals[m], sizeof vals[m], j);
            kv[m] = (simdr_kv){keys[m], strlen(keys[m]), vals[m], strlen(vals[m])};
        }
        assert_int_equal(simdr_put_batch(s, kv, (size_t)m, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_close(s), SIMDR_OK);
    char hp[4200];
    hint_path(path, hp, sizeof hp);
    int64_t len = tu_file_size(hp);
    assert_true(len > 0);
    uint8_t *bytes = malloc((size_t)len);
    assert_non_null(bytes);
    FILE *fp = fopen(hp, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(bytes, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *hint_len = (size_t)len;
    return bytes;
}

/* Writes bytes as the hint of path (the store file itself is untouched, so
 * a hint that matched it still does). */
static void put_hint(const char *path, const uint8_t *bytes, size_t len) {
    char hp[4200];
    hint_path(path, hp, sizeof hp);
    FILE *fp = fopen(hp, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static int hint_exists(const char *path) {
    char hp[4200];
    hint_path(path, hp, sizeof hp);
    return tu_file_size(hp) >= 0;
}

static simdr_store *open_mode(const char *path, int mode) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    simdr_store *s = NULL;
    assert_int_equal(simdr_open(&s, path, &o), SIMDR_OK);
    return s;
}

/* Reads keys [0, n) (skipping `deleted`, which must be absent): each is its
 * value or SIMDR_ECORRUPT, never absent or another value. Returns how many
 * were SIMDR_ECORRUPT. */
static int read_all(simdr_store *s, int n, int deleted) {
    int corrupt = 0;
    for (int i = 0; i < n; i++) {
        char k[32], want[32], got[64];
        key_of(k, sizeof k, i);
        value_of(want, sizeof want, i);
        size_t len = 0;
        int rc = simdr_get_copy(s, k, strlen(k), got, sizeof got, &len);
        if (i == deleted) {
            if (rc != SIMDR_NOTFOUND && rc != SIMDR_ECORRUPT)
                fail_msg("deleted %s: got %d", k, rc);
            corrupt += rc == SIMDR_ECORRUPT;
            continue;
        }
        if (rc == SIMDR_ECORRUPT) {
            corrupt++;
            continue;
        }
        if (rc != SIMDR_OK) fail_msg("%s: got %d (%s), want its value or SIMDR_ECORRUPT", k, rc,
                                     simdr_last_error());
        if (len != strlen(want) || memcmp(got, want, len) != 0)
            fail_msg("%s: wrong value %.*s", k, (int)len, got);
    }
    return corrupt;
}

/* read_all through a read scope: how 1 is simdr_read_get per key, how 2
 * simdr_read_get_batch over runs of 64 keys (a batch refused as
 * SIMDR_ECORRUPT counts once; otherwise every key in it must be served
 * right). The scope's fast paths read slots directly, so they must not take
 * an unchecked block's empty slot for an absence either. */
static int read_all_scoped(simdr_store *s, int n, int how) {
    int corrupt = 0;
    simdr_read scope;
    assert_int_equal(simdr_read_begin(s, &scope), SIMDR_OK);
    for (int i = 0; i < n; i += 64) {
        int m = n - i < 64 ? n - i : 64;
        char keys[64][32];
        simdr_key ks[64];
        const void *vals[64];
        size_t lens[64];
        for (int j = 0; j < m; j++) {
            key_of(keys[j], sizeof keys[j], i + j);
            ks[j].key = keys[j];
            ks[j].key_len = strlen(keys[j]);
        }
        if (how == 2) {
            int64_t got = simdr_read_get_batch(&scope, ks, (size_t)m, vals, lens);
            if (got == SIMDR_ECORRUPT) {
                corrupt++;
                continue;
            }
            assert_int_equal(got, m);
        } else {
            for (int j = 0; j < m; j++) {
                int rc = simdr_read_get(&scope, ks[j].key, ks[j].key_len, &vals[j], &lens[j]);
                if (rc == SIMDR_ECORRUPT) {
                    corrupt++;
                    vals[j] = NULL;
                    continue;
                }
                if (rc != SIMDR_OK) fail_msg("%s: got %d, want its value or SIMDR_ECORRUPT",
                                             keys[j], rc);
            }
        }
        for (int j = 0; j < m; j++) {
            if (!vals[j]) continue;
            char want[32];
            value_of(want, sizeof want, i + j);
            if (lens[j] != strlen(want) || memcmp(vals[j], want, lens[j]) != 0)
                fail_msg("%s: wrong value", keys[j]);
        }
    }
    simdr_read_end(&scope);
    return corrupt;
}

typedef struct scan_count {
    int n;
    uint64_t sum;
} scan_count;

static int count_visit(void *ctx, const simdr_entry *e) {
    scan_count *c = ctx;
    c->n++;
    c->sum += simdr_entry_size(e);
    return 0;
}

static uint64_t table_off_of(const uint8_t *hint) { return tu_get_le64(hint + HINT_TABLE_OFF_AT); }
static uint64_t cap_of(const uint8_t *hint) { return tu_get_le64(hint + HINT_CAP_AT); }

enum { KEYS = 70000 };

/* A byte of the table flipped in the first block, a middle one and the last
 * (partial) one: a read-only open reads every key right or SIMDR_ECORRUPT,
 * at least one key is refused, the hint file is removed, and a scan still
 * visits every key once; a writable open does the same until its first
 * write, which rebuilds the index: then every key reads right, a delete
 * holds, and the next open (a fresh hint) agrees. */
static void hint_damaged_block_never_misserves(void **state) {
    tu_fixture *f = *state;
    for (int t = 0; t < 3; t++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/round%d.bin", f->dir, t);
        size_t len;
        uint8_t *bad = hinted_store(path, KEYS, &len);
        uint64_t table = table_off_of(bad), cap = cap_of(bad);
        assert_int_equal(len, table + cap * 8);
        assert_true(cap % 4096 != 0); /* the last block is partial */
        uint64_t spot = t == 0 ? 3 : t == 1 ? (cap / 2) * 8 + 5 : cap * 8 - 1;
        bad[table + spot] ^= 0x40;

        for (int how = 1; how <= 2; how++) {
            put_hint(path, bad, len);
            simdr_store *rs = open_mode(path, SIMDR_OPEN_READONLY);
            assert_true(read_all_scoped(rs, KEYS, how) > 0);
            assert_false(hint_exists(path));
            assert_int_equal(simdr_close(rs), SIMDR_OK);
        }

        put_hint(path, bad, len);
        uint64_t loads = atomic_load(&simdr__hint_loads);
        simdr_store *s = open_mode(path, SIMDR_OPEN_READONLY);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
        assert_true(read_all(s, KEYS, -1) > 0);
        assert_false(hint_exists(path));
        scan_count c = {0, 0};
        assert_int_equal(simdr_for_each(s, count_visit, &c), SIMDR_OK);
        assert_int_equal(c.n, KEYS);
        assert_int_equal(simdr_close(s), SIMDR_OK);

        put_hint(path, bad, len);
        s = open_mode(path, SIMDR_OPEN_EXISTING);
        assert_true(read_all(s, KEYS, -1) > 0);
        char k[32];
        key_of(k, sizeof k, 1000 * t + 1);
        assert_int_equal(simdr_delete(s, k, strlen(k), NULL), SIMDR_OK);
        assert_int_equal(read_all(s, KEYS, 1000 * t + 1), 0);
        tu_put_str(s, "after", "the rebuild");
        assert_int_equal(simdr_close(s), SIMDR_OK);
        assert_true(hint_exists(path));

        loads = atomic_load(&simdr__hint_loads);
        s = open_mode(path, SIMDR_OPEN_EXISTING);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
        assert_int_equal(read_all(s, KEYS, 1000 * t + 1), 0);
        tu_expect_absent(s, k, strlen(k));
        tu_expect_str(s, "after", "the rebuild");
        assert_int_equal(simdr_close(s), SIMDR_OK);
        free(bad);
    }
}

/* A table of 2^17 slots or more is checked whole on two threads, each
 * taking half of the blocks (index.c, simdr__index_check_all): damage in
 * either half is found by the first scan that reads the table (a store of
 * only new keys is scanned without it), which then walks the chain and
 * still visits every key once, and the hint is removed; lookups read every
 * key right or SIMDR_ECORRUPT; a compaction rebuilds the table first and
 * keeps every key. */
static void hint_large_table_checked_on_two_threads(void **state) {
    tu_fixture *f = *state;
    enum { BIG = 200000 };
    for (int t = 0; t < 2; t++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/big%d.bin", f->dir, t);
        size_t len;
        uint8_t *bad = hinted_store(path, BIG, &len);
        uint64_t table = table_off_of(bad), cap = cap_of(bad);
        assert_true(cap >= (UINT64_C(1) << 17));
        /* An offset bit of the first used slot from a quarter (the first
         * thread's half) or three quarters in (the helper's). */
        uint64_t slot = t == 0 ? cap / 4 : cap * 3 / 4;
        while (tu_get_le64(bad + table + slot * 8) == 0) slot++;
        bad[table + slot * 8] ^= 0x40;
        put_hint(path, bad, len);
        uint64_t loads = atomic_load(&simdr__hint_loads);
        simdr_store *s = open_mode(path, SIMDR_OPEN_READONLY);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
        /* Only new keys were written: the scan yields every entry without
         * reading the table. */
        scan_count c = {0, 0};
        assert_int_equal(simdr_for_each(s, count_visit, &c), SIMDR_OK);
        assert_int_equal(c.n, BIG);
        assert_true(hint_exists(path));
        /* A scan that reads the table checks it first. */
        atomic_store(&simdr__iter_all_live, 0);
        c = (scan_count){0, 0};
        assert_int_equal(simdr_for_each(s, count_visit, &c), SIMDR_OK);
        atomic_store(&simdr__iter_all_live, 1);
        assert_int_equal(c.n, BIG);
        assert_false(hint_exists(path));
        assert_true(read_all(s, BIG, -1) > 0);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        /* A compaction copies what the table names: it must be found
         * damaged and rebuilt first, or a key would be lost. */
        put_hint(path, bad, len);
        s = open_mode(path, SIMDR_OPEN_EXISTING);
        assert_int_equal(simdr_compact(s), SIMDR_OK);
        assert_int_equal(read_all(s, BIG, -1), 0);
        assert_int_equal(simdr_count(s), BIG);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        free(bad);
    }
}

/* A process that finds a damaged block removes the hint it loaded, not a
 * sound hint renamed over the same path since (a writer saving at close):
 * that one stays and the next open loads it and reads every key. */
static void hint_damage_spares_a_newer_hint(void **state) {
    tu_fixture *f = *state;
    size_t len;
    uint8_t *good = hinted_store(f->path, KEYS, &len);
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    memcpy(bad, good, len);
    bad[table_off_of(bad) + 3] ^= 0x40; /* the first block */
    put_hint(f->path, bad, len);
    uint64_t loads = atomic_load(&simdr__hint_loads);
    simdr_store *rs = open_mode(f->path, SIMDR_OPEN_READONLY);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);

    char hp[4200], tmp[4300];
    hint_path(f->path, hp, sizeof hp);
    snprintf(tmp, sizeof tmp, "%s.new", hp);
    FILE *fp = fopen(tmp, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(good, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(rename(tmp, hp), 0);

    assert_true(read_all(rs, KEYS, -1) > 0); /* the damage is found now */
    assert_true(hint_exists(f->path));
    assert_int_equal(simdr_close(rs), SIMDR_OK);

    loads = atomic_load(&simdr__hint_loads);
    rs = open_mode(f->path, SIMDR_OPEN_READONLY);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
    assert_int_equal(read_all(rs, KEYS, -1), 0);
    assert_int_equal(simdr_close(rs), SIMDR_OK);
    free(bad);
    free(good);
}

/* Deletes and compaction on a damaged hinted table: the writer rebuilds
 * first, so a delete of a key in the damaged block holds and compaction
 * keeps every key. */
static void hint_damaged_block_delete_and_compact(void **state) {
    tu_fixture *f = *state;
    size_t len;
    uint8_t *bad = hinted_store(f->path, KEYS, &len);
    uint64_t table = table_off_of(bad), cap = cap_of(bad);
    for (uint64_t b = 0; b < cap * 8; b += BLOCK_BYTES) bad[table + b + 11] ^= 1;
    put_hint(f->path, bad, len);
    uint64_t loads = atomic_load(&simdr__hint_loads);
    simdr_store *s = open_mode(f->path, SIMDR_OPEN_EXISTING);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1); /* the damaged table is used */
    assert_int_equal(simdr_delete(s, TU_STR("key-5"), NULL), SIMDR_OK);
    assert_int_equal(read_all(s, KEYS, 5), 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);

    put_hint(f->path, bad, len); /* the old damaged hint no longer matches the file */
    s = open_mode(f->path, SIMDR_OPEN_EXISTING);
    assert_int_equal(read_all(s, KEYS, 5), 0);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(bad);

    bad = hinted_store(f->other, KEYS, &len);
    table = table_off_of(bad);
    bad[table + 4096 * 8 * 2 + 100] ^= 0x80;
    put_hint(f->other, bad, len);
    loads = atomic_load(&simdr__hint_loads);
    s = open_mode(f->other, SIMDR_OPEN_EXISTING);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    assert_int_equal(read_all(s, KEYS, -1), 0);
    assert_int_equal(simdr_count(s), KEYS);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(bad);
}

/* A hint saved before later writes, and the hint of another store, are
 * ignored: the open rebuilds and every key (the later ones too) is found. */
static void hint_stale_or_foreign_is_ignored(void **state) {
    tu_fixture *f = *state;
    size_t len, other_len;
    uint8_t *old = hinted_store(f->path, KEYS, &len);
    simdr_store *s = open_mode(f->path, SIMDR_OPEN_EXISTING);
    tu_put_str(s, "later", "write");
    assert_int_equal(simdr_close(s), SIMDR_OK);
    put_hint(f->path, old, len);
    uint64_t loads = atomic_load(&simdr__hint_loads);
    s = open_mode(f->path, SIMDR_OPEN_READONLY);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads);
    assert_int_equal(read_all(s, KEYS, -1), 0);
    tu_expect_str(s, "later", "write");
    assert_int_equal(simdr_close(s), SIMDR_OK);

    uint8_t *foreign = hinted_store(f->other, KEYS + 10, &other_len);
    put_hint(f->path, foreign, other_len);
    s = open_mode(f->path, SIMDR_OPEN_READONLY);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads);
    assert_int_equal(read_all(s, KEYS, -1), 0);
    tu_expect_absent(s, TU_STR("key-70005"));
    assert_int_equal(simdr_close(s), SIMDR_OK);
    free(old);
    free(foreign);
}

/* A hint of the earlier layout (magic "SDRHINT3"), one with a damaged block
 * sum or header field, and a truncated one are ignored; the intact one is
 * taken. */
static void hint_old_or_damaged_header_is_ignored(void **state) {
    tu_fixture *f = *state;
    size_t len;
    uint8_t *good = hinted_store(f->path, KEYS, &len);
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    for (int t = 0; t < 5; t++) {
        memcpy(bad, good, len);
        size_t use = len;
        if (t == 0) bad[7] = '3';            /* "SDRHINT3": the layout before blocks */
        if (t == 1) bad[200] ^= 1;           /* a block sum */
        if (t == 2) bad[40] ^= 1;            /* the used count */
        if (t == 3) use = len - 8;           /* truncated */
        put_hint(f->path, bad, use);
        uint64_t loads = atomic_load(&simdr__hint_loads);
        simdr_store *s = open_mode(f->path, SIMDR_OPEN_READONLY);
        if (atomic_load(&simdr__hint_loads) != loads + (t == 4))
            fail_msg("case %d: the hint was %s", t, t == 4 ? "not taken" : "taken");
        assert_int_equal(read_all(s, KEYS, -1), 0);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
    free(bad);
    free(good);
}

/* Tables of several sizes, none a whole number of blocks: a hinted open
 * reads every key, and damage in the last slot of the partial last block
 * or in the first slot of the block before it is caught. */
static void hint_sizes_across_block_boundaries(void **state) {
    tu_fixture *f = *state;
    static const int sizes[] = {66000, 110000};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/size%zu.bin", f->dir, t);
        size_t len;
        uint8_t *hint = hinted_store(path, sizes[t], &len);
        uint64_t table = table_off_of(hint), cap = cap_of(hint);
        assert_int_equal(len, table + cap * 8);
        uint64_t loads = atomic_load(&simdr__hint_loads);
        simdr_store *s = open_mode(path, SIMDR_OPEN_READONLY);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
        assert_int_equal(read_all(s, sizes[t], -1), 0);
        scan_count c = {0, 0};
        assert_int_equal(simdr_for_each(s, count_visit, &c), SIMDR_OK);
        assert_int_equal(c.n, sizes[t]);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        uint64_t last_block = (cap - 1) / 4096 * 4096 * 8;
        uint64_t spots[2] = {cap * 8 - 8, last_block - BLOCK_BYTES};
        for (int d = 0; d < 2; d++) {
            hint[table + spots[d]] ^= 0x01;
            put_hint(path, hint, len);
            s = open_mode(path, SIMDR_OPEN_READONLY);
            assert_true(read_all(s, sizes[t], -1) > 0);
            assert_int_equal(simdr_close(s), SIMDR_OK);
            hint[table + spots[d]] ^= 0x01;
        }
        free(hint);
    }
}

/* Readers checking blocks of a hinted table while the writer's first write
 * checks the rest and starts changing slots: no reader ever sees a sound
 * block as damaged, or a key as absent. */
typedef struct reader_arg {
    simdr_store *s;
    _Atomic int *stop;
    int bad;
} reader_arg;

static void *hint_reader(void *p) {
    reader_arg *a = p;
    for (int round = 0; !atomic_load(a->stop) || round < 1; round++) {
        for (int i = round % 7; i < KEYS; i += 7) {
            char k[32], want[32], got[64];
            key_of(k, sizeof k, i);
            value_of(want, sizeof want, i);
            size_t len = 0;
            if (simdr_get_copy(a->s, k, strlen(k), got, sizeof got, &len) != SIMDR_OK ||
                len != strlen(want) || memcmp(got, want, len) != 0)
                a->bad++;
        }
    }
    return NULL;
}

static void hint_readers_race_the_first_write(void **state) {
    tu_fixture *f = *state;
    size_t len;
    free(hinted_store(f->path, KEYS, &len));
    for (int t = 0; t < 3; t++) {
        uint64_t loads = atomic_load(&simdr__hint_loads);
        simdr_store *s = open_mode(f->path, SIMDR_OPEN_EXISTING);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1); /* blocks left to check */
        _Atomic int stop = 0;
        reader_arg args[2] = {{s, &stop, 0}, {s, &stop, 0}};
        pthread_t tid[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&tid[i], NULL, hint_reader, &args[i]), 0);
        char k[32];
        snprintf(k, sizeof k, "extra-%d", t);
        tu_put_str(s, k, "written while readers check blocks");
        atomic_store(&stop, 1);
        for (int i = 0; i < 2; i++) {
            pthread_join(tid[i], NULL);
            assert_int_equal(args[i].bad, 0);
        }
        assert_int_equal(read_all(s, KEYS, -1), 0);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

/* The hint carries the count of dead entries: a store of only new keys,
 * opened from its hint, is scanned without reading the table; after one
 * overwrite and a close, the hinted open knows the file has a dead entry,
 * and the scan (reading the table then) yields each key once, its newest
 * version; after a compaction and a close, the hinted open knows there is
 * none again. */
static void hint_keeps_the_dead_count(void **state) {
    tu_fixture *f = *state;
    char path[4200];
    snprintf(path, sizeof path, "%s/dead.bin", f->dir);
    size_t len;
    free(hinted_store(path, KEYS, &len));
    for (int round = 0; round < 3; round++) {
        uint64_t loads = atomic_load(&simdr__hint_loads);
        uint64_t walks = atomic_load(&simdr__iter_all_live_walks);
        simdr_store *s = open_mode(path, SIMDR_OPEN_EXISTING);
        assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
        scan_count c = {0, 0};
        assert_int_equal(simdr_for_each(s, count_visit, &c), SIMDR_OK);
        assert_int_equal(c.n, KEYS);
        assert_int_equal(atomic_load(&simdr__iter_all_live_walks), walks + (round != 1));
        assert_int_equal(read_all(s, KEYS, -1), 0);
        if (round == 0) {
            /* key-5 again, with its value: the file now holds a dead entry */
            char k[32], v[32];
            key_of(k, sizeof k, 5);
            value_of(v, sizeof v, 5);
            tu_put_str(s, k, v);
        }
        if (round == 1) assert_int_equal(simdr_compact(s), SIMDR_OK);
        assert_int_equal(simdr_close(s), SIMDR_OK);
    }
}

/* Header fields (hint.c): used at 40, header_hash at 72; the header is 152
 * bytes, the block sums follow it. */
#define HINT_USED_AT 40
#define HINT_HASH_AT 72
#define HINT_HEADER_BYTES 152

/* Makes the forged hint consistent again: each block's XXH3, then the
 * header's (hint.c header_hash), as anyone who can write the file can. */
static void reseal_hint(uint8_t *hint) {
    uint64_t cap = cap_of(hint), blocks = (cap + 4095) / 4096;
    const uint8_t *table = hint + table_off_of(hint);
    for (uint64_t k = 0; k < blocks; k++) {
        uint64_t n = cap - k * 4096 < 4096 ? cap - k * 4096 : 4096;
        tu_put_le64(hint + HINT_HEADER_BYTES + k * 8, XXH3_64bits(table + k * BLOCK_BYTES, n * 8));
    }
    /* The header (its hash field 0) and the sums lie one after the other. */
    tu_put_le64(hint + HINT_HASH_AT, 0);
    tu_put_le64(hint + HINT_HASH_AT, XXH3_64bits(hint, HINT_HEADER_BYTES + blocks * 8));
}

/* A hint whose checksums hold but whose count lies about its table (a
 * hostile file, or one written by a broken tool): a table with no empty
 * slot left made every lookup of an absent key probe for ever, and a count
 * below the table's filled slots let the writer fill it up and then spin
 * in its next insert. Now the count is checked against the slots as the
 * blocks are: such a table is damage (SIMDR_ECORRUPT for reads, the hint
 * removed, the writer rebuilds from the chain). Under a watchdog: the
 * failure was a hang. */
static void hint_whose_count_lies_never_hangs(void **state) {
    tu_fixture *f = *state;
    size_t len = 0;
    uint8_t *good = hinted_store(f->path, KEYS, &len);
    uint64_t cap = cap_of(good), off = table_off_of(good);
    assert_true(tu_get_le64(good + HINT_USED_AT) >= KEYS);
    tu_watchdog_start(120, "lookups and writes through a hint whose count lies");

    /* Every empty slot filled with a copy of a filled one, the count kept. */
    uint8_t *full = malloc(len);
    assert_non_null(full);
    memcpy(full, good, len);
    uint64_t some = 0;
    for (uint64_t i = 0; i < cap && !some; i++) some = tu_get_le64(full + off + i * 8);
    for (uint64_t i = 0; i < cap; i++)
        if (!tu_get_le64(full + off + i * 8)) tu_put_le64(full + off + i * 8, some);
    reseal_hint(full);
    put_hint(f->path, full, len);
    uint64_t loads = atomic_load(&simdr__hint_loads);
    simdr_store *s = open_mode(f->path, SIMDR_OPEN_READONLY);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1); /* it was taken */
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "absent-%d", i);
        int rc = simdr_exists(s, k, strlen(k));
        if (rc != SIMDR_ECORRUPT) fail_msg("absent key through a full table: %d", rc);
    }
    read_all(s, KEYS, -1); /* each key its value or SIMDR_ECORRUPT */
    assert_false(hint_exists(f->path));
    assert_int_equal(simdr_close(s), SIMDR_OK);
    s = open_mode(f->path, SIMDR_OPEN_READONLY); /* no hint now: rebuilt */
    assert_int_equal(read_all(s, KEYS, -1), 0);
    tu_expect_absent(s, TU_STR("absent-0"));
    assert_int_equal(simdr_close(s), SIMDR_OK);

    /* The table intact, its count 0: the writer must not trust it. */
    uint8_t *low = malloc(len);
    assert_non_null(low);
    memcpy(low, good, len);
    tu_put_le64(low + HINT_USED_AT, 0);
    tu_put_le64(low + HINT_USED_AT + 8, 0); /* live <= used */
    reseal_hint(low);
    put_hint(f->path, low, len);
    loads = atomic_load(&simdr__hint_loads);
    s = open_mode(f->path, SIMDR_OPEN_EXISTING);
    assert_int_equal(atomic_load(&simdr__hint_loads), loads + 1);
    enum { MORE = 120000 };
    char keys[1000][32];
    simdr_kv kv[1000];
    for (int i = 0; i < MORE; i += 1000) {
        for (int j = 0; j < 1000; j++) {
            snprintf(keys[j], sizeof keys[j], "more-%d", i + j);
            kv[j] = (simdr_kv){keys[j], strlen(keys[j]), "m", 1};
        }
        assert_int_equal(simdr_put_batch(s, kv, 1000, NULL), SIMDR_OK);
    }
    assert_int_equal(read_all(s, KEYS, -1), 0);
    tu_expect_str(s, "more-0", "m");
    tu_expect_str(s, "more-119999", "m");
    tu_expect_absent(s, TU_STR("absent-0"));
    assert_int_equal(simdr_count(s), KEYS + MORE);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_watchdog_stop();
    free(low);
    free(full);
    free(good);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(hint_damaged_block_never_misserves),
        TU_TEST_DIR(hint_large_table_checked_on_two_threads),
        TU_TEST_DIR(hint_damaged_block_delete_and_compact),
        TU_TEST_DIR(hint_damage_spares_a_newer_hint),
        TU_TEST_DIR(hint_stale_or_foreign_is_ignored),
        TU_TEST_DIR(hint_old_or_damaged_header_is_ignored),
        TU_TEST_DIR(hint_sizes_across_block_boundaries),
        TU_TEST_DIR(hint_readers_race_the_first_write),
        TU_TEST_DIR(hint_keeps_the_dead_count),
        TU_TEST_DIR(hint_whose_count_lies_never_hangs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
