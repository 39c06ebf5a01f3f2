/*
 * fuzz_damage.c - libFuzzer target: damage to a store after it was opened.
 *
 * The open proves a file's chain sound; bit rot, a stray write or another
 * program can change the bytes afterwards, under an open handle whose
 * index still names every entry. The input builds a small store (keys,
 * overwrites, deletes, value sizes, layout: all drawn from its first bytes),
 * opens it a second time read-only, then damages the file through a
 * descriptor of its own: flipped bytes, and links (prev_offset) rewritten to
 * arbitrary offsets or to the ends of other entries. Both handles then go
 * through every read path (point reads, batch reads, read scopes, iteration
 * by each of its walks, the parallel visit, the full check) and the writable
 * one through a compaction.
 *
 * Promises judged (a broken one aborts):
 * - nothing crashes, hangs or trips a sanitizer;
 * - a value read as SIMDR_OK is the key's newest value; a live key is never
 *   SIMDR_NOTFOUND (unless its newest entry's metadata lost the key's hash,
 *   which no checksum of the format covers); a deleted or absent key is
 *   never served; a damage report (SIMDR_ECORRUPT, SIMDR_ECHECKSUM) is
 *   always allowed, damage being there;
 * - an iteration yields only values the store holds, each key under its
 *   own hash once and in its newest version (by every walk, also the one
 *   with a set of seen keys that a damaged key hash could lead astray), and,
 *   when it reports no damage, exactly the newest values of the live keys
 *   (but a key whose newest entry lost its hash): damage never hides an
 *   entry silently. The format's CRC covers the value, not the key hash in
 *   the metadata, so an entry under another hash is judged by its bytes;
 * - a compaction either refuses (SIMDR_ECORRUPT) or keeps every live key's
 *   newest value readable (but for a lost hash, as above), never a damaged
 *   value under a fresh CRC.
 * Every value is unique (it names its key and version), so a value tells
 * which entry was served.
 *
 * Built two ways (fuzz/CMakeLists.txt): libFuzzer, and with replay_main.c,
 * which runs every input in fuzz/corpus-damage/ in ordinary test runs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzzutil.h"
#include "simdr.h"

#define REQUIRE(cond, ...) FUZZ_REQUIRE("fuzz_damage", cond, __VA_ARGS__)

/* Library hooks (internal, in the static library): the iteration's walks. */
extern _Atomic int simdr__iter_force_chain_walk;
extern _Atomic int simdr__iter_all_live;
extern _Atomic uint64_t simdr__iter_dense_bytes_per_key;

/* BUILT_KEYS keys are written before the damage; BULK more after it (when
 * the input asks), enough to make the index grow past its first table. */
enum { BUILT_KEYS = 40, BULK = 900, MAX_KEYS = BUILT_KEYS + BULK, MAX_VERSIONS = 4,
       MAX_ENTRIES = MAX_KEYS * (MAX_VERSIONS + 1), MAX_DAMAGE = 12 };

typedef struct version {
    uint8_t *bytes;
    size_t len;
} version;

typedef struct model {
    int nkeys;
    version v[MAX_KEYS][MAX_VERSIONS];
    int nversions[MAX_KEYS];
    int live[MAX_KEYS];          /* the newest version is v[k][nversions[k] - 1] */
    uint64_t ends[MAX_ENTRIES];  /* end offset of every entry written */
    int nends;
    uint64_t newest_end[MAX_KEYS];
    int hash_damaged[MAX_KEYS];  /* the newest entry's metadata lost the key's hash */
} model;

static char dir[4096], path[4200];
static model m;

static uint64_t next_rand(uint64_t *s) {
    /* splitmix64: the store's contents follow from the input's seed */
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void key_name(char *out, size_t cap, int k) { snprintf(out, cap, "key-%d", k); }

/* A value unique to key k's version ver, of len bytes (at least 8). */
static uint8_t *make_value(int k, int ver, size_t len, uint64_t *rnd) {
    uint8_t *b = malloc(len);
    REQUIRE(b != NULL, "out of memory");
    for (size_t i = 0; i < len; i++) b[i] = (uint8_t)next_rand(rnd);
    b[0] = (uint8_t)k;
    b[1] = (uint8_t)(k >> 8);
    b[2] = (uint8_t)ver;
    b[3] = 0xA5; /* never a lone tombstone byte */
    memcpy(b + 4, "val", 3);
    return b;
}

static void model_free(void) {
    for (int k = 0; k < m.nkeys; k++)
        for (int i = 0; i < m.nversions[k]; i++) free(m.v[k][i].bytes);
    memset(&m, 0, sizeof m);
}

/* Which (key, version) these bytes are: 1 and *k, *ver when one matches. */
static int which_value(const void *data, size_t len, int *k, int *ver) {
    if (len < 8) return 0;
    const uint8_t *b = data;
    int kk = b[0] | b[1] << 8, vv = b[2];
    if (kk >= m.nkeys || vv >= m.nversions[kk]) return 0;
    const version *v = &m.v[kk][vv];
    if (v->len != len || memcmp(v->bytes, data, len) != 0) return 0;
    *k = kk;
    *ver = vv;
    return 1;
}

static int newest(int k) { return m.nversions[k] - 1; }

/* Writes the store the input's header describes. */
static void build_store(const uint8_t *data, size_t size) {
    uint64_t rnd = size >= 8 ? fuzz_load_u64(data) : 1;
    uint8_t nk = size > 8 ? data[8] : 5, flags = size > 9 ? data[9] : 0;
    m.nkeys = 1 + nk % BUILT_KEYS;
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_CREATE;
    o.layout = (flags & 1) ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64;
    o.use_hint = 0;
    simdr_store *s;
    REQUIRE(simdr_open(&s, path, &o) == SIMDR_OK, "create");
    /* Sizes around the short-value check (8, 16, 32, 64) and past a page. */
    static const size_t sizes[] = {8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 4095, 4097};
    int ops = m.nkeys;
    if (flags & 2) ops += m.nkeys;     /* overwrites */
    if (flags & 4) ops += m.nkeys / 2; /* deletes */
    for (int i = 0; i < ops; i++) {
        int k = i < m.nkeys ? i : (int)(next_rand(&rnd) % (uint64_t)m.nkeys);
        int del = i >= m.nkeys && (flags & 4) && next_rand(&rnd) % 3 == 0;
        char key[32];
        key_name(key, sizeof key, k);
        uint64_t end = 0;
        if (del) {
            if (!m.live[k]) continue;
            REQUIRE(simdr_delete(s, key, strlen(key), &end) == SIMDR_OK, "delete");
            m.live[k] = 0;
        } else {
            if (m.nversions[k] == MAX_VERSIONS) continue;
            size_t len = sizes[next_rand(&rnd) % (sizeof sizes / sizeof sizes[0])];
            if (!(flags & 8) && len > 200) len = 64;
            int ver = m.nversions[k];
            m.v[k][ver] = (version){make_value(k, ver, len, &rnd), len};
            REQUIRE(simdr_put(s, key, strlen(key), m.v[k][ver].bytes, len, &end) == SIMDR_OK,
                    "put");
            m.nversions[k]++;
            m.live[k] = 1;
        }
        m.ends[m.nends++] = end;
        m.newest_end[k] = end;
    }
    REQUIRE(simdr_close(s) == SIMDR_OK, "close after building");
}

static simdr_store *open_store(int mode, int mapped) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    o.use_hint = 0;
    simdr_store *s;
    REQUIRE(simdr_open(&s, path, &o) == SIMDR_OK, "open of the sound store");
    return s;
}

static void write_le64(int fd, uint64_t at, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    REQUIRE(pwrite(fd, b, 8, (off_t)at) == 8, "pwrite: %s", strerror(errno));
}

/* Damage from the input's tail, 8 bytes a change: flip a byte, or rewrite
 * an entry's link to an arbitrary offset or to another entry's end. */
static void damage(const uint8_t *data, size_t size) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0, "open for damage: %s", strerror(errno));
    off_t len = lseek(fd, 0, SEEK_END);
    REQUIRE(len > 0, "file size");
    for (size_t at = 10, n = 0; at + 8 <= size && n < MAX_DAMAGE; at += 8, n++) {
        uint8_t kind = data[at] % 3, arg = data[at + 1];
        uint32_t a = fuzz_load_u32(data + at + 2);
        uint16_t b = (uint16_t)(data[at + 6] | data[at + 7] << 8);
        uint64_t end = m.ends[a % (uint32_t)m.nends];
        if (kind == 0) {
            uint8_t byte;
            off_t where = (off_t)(a % (uint64_t)len);
            REQUIRE(pread(fd, &byte, 1, where) == 1, "pread");
            byte ^= (uint8_t)(arg | 1);
            REQUIRE(pwrite(fd, &byte, 1, where) == 1, "pwrite");
        } else if (kind == 1) {
            write_le64(fd, end - 20 + 8, (uint64_t)b % ((uint64_t)len + 64));
        } else {
            write_le64(fd, end - 20 + 8, m.ends[b % (uint16_t)m.nends]);
        }
    }
    for (int k = 0; k < m.nkeys; k++) {
        uint8_t h[8];
        char key[32];
        key_name(key, sizeof key, k);
        REQUIRE(pread(fd, h, 8, (off_t)(m.newest_end[k] - 20)) == 8, "pread");
        m.hash_damaged[k] = fuzz_load_u64(h) != simdr_hash_key(key, strlen(key));
    }
    close(fd);
}

static int damage_status(int rc) { return rc == SIMDR_ECORRUPT || rc == SIMDR_ECHECKSUM; }

static void check_value(int k, int rc, const void *data, size_t len, const char *how) {
    if (damage_status(rc)) return;
    if (m.live[k]) {
        if (rc == SIMDR_NOTFOUND && m.hash_damaged[k]) return;
        REQUIRE(rc == SIMDR_OK, "%s of live key %d: status %d", how, k, rc);
        int kk, ver;
        REQUIRE(which_value(data, len, &kk, &ver) && kk == k && ver == newest(k),
                "%s of key %d served a value that is not its newest", how, k);
    } else {
        REQUIRE(rc == SIMDR_NOTFOUND, "%s of deleted or absent key %d: status %d", how, k, rc);
    }
}

static void write_after_damage(simdr_store *s, const uint8_t *data, size_t size) {
    uint64_t rnd = (size >= 8 ? fuzz_load_u64(data) : 1) ^ UINT64_C(0x5bd1e995);
    char key[32];
    if (m.nversions[0] < MAX_VERSIONS) { /* key 0 again */
        int ver = m.nversions[0];
        version v = {make_value(0, ver, 24, &rnd), 24};
        key_name(key, sizeof key, 0);
        int rc = simdr_put(s, key, strlen(key), v.bytes, v.len, NULL);
        REQUIRE(rc == SIMDR_OK || damage_status(rc), "put after damage: status %d", rc);
        if (rc == SIMDR_OK) {
            m.v[0][ver] = v;
            m.nversions[0]++;
            m.live[0] = 1;
            m.hash_damaged[0] = 0;
        } else {
            free(v.bytes);
        }
    }
    if (m.nkeys > 1 && m.live[1]) {
        key_name(key, sizeof key, 1);
        int rc = simdr_delete(s, key, strlen(key), NULL);
        REQUIRE(rc == SIMDR_OK || rc == SIMDR_NOTFOUND || damage_status(rc),
                "delete after damage: status %d", rc);
        if (rc == SIMDR_OK) {
            m.live[1] = 0;
            m.hash_damaged[1] = 0;
        }
    }
    enum { B = 100 };
    for (int first = m.nkeys; first + B <= MAX_KEYS; first += B) {
        char names[B][32];
        simdr_kv kv[B];
        for (int i = 0; i < B; i++) {
            int k = first + i;
            key_name(names[i], sizeof names[i], k);
            m.v[k][0] = (version){make_value(k, 0, 8, &rnd), 8};
            kv[i] = (simdr_kv){names[i], strlen(names[i]), m.v[k][0].bytes, 8};
        }
        int rc = simdr_put_batch(s, kv, B, NULL);
        REQUIRE(rc == SIMDR_OK, "batch after damage: status %d", rc);
        for (int i = 0; i < B; i++) {
            m.nversions[first + i] = 1;
            m.live[first + i] = 1;
        }
        m.nkeys = first + B;
    }
}

static void point_reads(simdr_store *s) {
    char keys[MAX_KEYS + 1][32];
    simdr_key ks[MAX_KEYS + 1];
    for (int k = 0; k <= m.nkeys; k++) { /* one more: a key never written */
        key_name(keys[k], sizeof keys[k], k);
        ks[k] = (simdr_key){keys[k], strlen(keys[k])};
    }
    for (int k = 0; k < m.nkeys; k++) {
        simdr_entry *e = NULL;
        int rc = simdr_get(s, keys[k], strlen(keys[k]), &e);
        check_value(k, rc, rc == SIMDR_OK ? simdr_entry_data(e) : NULL,
                    rc == SIMDR_OK ? (size_t)simdr_entry_size(e) : 0, "simdr_get");
        if (rc == SIMDR_OK) simdr_entry_release(e);
        simdr_read scope;
        REQUIRE(simdr_read_begin(s, &scope) == SIMDR_OK, "read_begin");
        const void *v = NULL;
        size_t vlen = 0;
        rc = simdr_read_get(&scope, keys[k], strlen(keys[k]), &v, &vlen);
        check_value(k, rc, v, vlen, "simdr_read_get");
        simdr_read_end(&scope);
    }
    simdr_entry *e = NULL;
    int rc = simdr_get(s, keys[m.nkeys], strlen(keys[m.nkeys]), &e);
    REQUIRE(rc == SIMDR_NOTFOUND || damage_status(rc), "absent key: status %d", rc);
    if (rc == SIMDR_OK) simdr_entry_release(e);
    simdr_entry *out[MAX_KEYS + 1];
    int64_t found = simdr_get_batch(s, ks, (size_t)m.nkeys + 1, out);
    REQUIRE(found >= 0 || damage_status((int)found), "batch: status %lld", (long long)found);
    if (found < 0) return;
    for (int k = 0; k <= m.nkeys; k++) {
        if (k == m.nkeys) {
            REQUIRE(out[k] == NULL, "batch served a key never written");
            continue;
        }
        check_value(k, out[k] ? SIMDR_OK : SIMDR_NOTFOUND, out[k] ? simdr_entry_data(out[k]) : NULL,
                    out[k] ? (size_t)simdr_entry_size(out[k]) : 0, "simdr_get_batch");
        if (out[k]) simdr_entry_release(out[k]);
    }
}

/* One iteration to its end, going on past reported damage. */
static void iterate(simdr_store *s) {
    int seen[MAX_KEYS] = {0};
    int errors = 0;
    simdr_iter *it;
    REQUIRE(simdr_iter_open(s, &it) == SIMDR_OK, "iter_open");
    const simdr_entry *e;
    int rc, calls = 0;
    while ((rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
        REQUIRE(++calls <= 4 * MAX_ENTRIES + 16, "the iteration does not end");
        if (rc != SIMDR_OK) {
            REQUIRE(damage_status(rc), "iter_next: status %d", rc);
            errors++;
            continue;
        }
        int k, ver;
        REQUIRE(which_value(simdr_entry_data(e), (size_t)simdr_entry_size(e), &k, &ver),
                "the iteration yielded bytes the store never held as a value");
        char key[32];
        key_name(key, sizeof key, k);
        /* Under a hash that is not its key's (damaged metadata), an entry is
         * not that key's answer: only its bytes are judged. */
        if (simdr_entry_key_hash(e) != simdr_hash_key(key, strlen(key))) continue;
        REQUIRE(!seen[k], "the iteration yielded key %d twice", k);
        REQUIRE(m.live[k] && ver == newest(k),
                "the iteration yielded an older or deleted version of key %d", k);
        seen[k] = 1;
    }
    simdr_iter_close(it);
    if (errors) return;
    for (int k = 0; k < m.nkeys; k++)
        REQUIRE(seen[k] == m.live[k] || (!seen[k] && m.hash_damaged[k]), "key %d %s without any damage reported", k,
                seen[k] ? "yielded though deleted" : "left out");
}

static int visit_parallel(void *ctx, const simdr_entry *e) {
    (void)ctx;
    int k, ver;
    REQUIRE(which_value(simdr_entry_data(e), (size_t)simdr_entry_size(e), &k, &ver),
            "the parallel visit served bytes the store never held as a value");
    char key[32];
    key_name(key, sizeof key, k);
    REQUIRE(simdr_entry_key_hash(e) != simdr_hash_key(key, strlen(key)) ||
                (m.live[k] && ver == newest(k)),
            "the parallel visit served a value that is not key %d's newest", k);
    return 0;
}

static void read_everything(simdr_store *s) {
    point_reads(s);
    /* Every walk of the iterator: the default, the bitmap, the sorted
     * offsets, and the walk with a set of seen keys. */
    iterate(s);
    atomic_store(&simdr__iter_all_live, 0);
    iterate(s);
    uint64_t per_key = atomic_load(&simdr__iter_dense_bytes_per_key);
    atomic_store(&simdr__iter_dense_bytes_per_key, 0);
    iterate(s);
    atomic_store(&simdr__iter_dense_bytes_per_key, per_key);
    atomic_store(&simdr__iter_force_chain_walk, 1);
    iterate(s);
    atomic_store(&simdr__iter_force_chain_walk, 0);
    atomic_store(&simdr__iter_all_live, 1);
    int rc = simdr_for_each_parallel(s, 2, visit_parallel, NULL);
    REQUIRE(rc == SIMDR_OK || damage_status(rc), "for_each_parallel: status %d", rc);
    simdr_check_report rep;
    rc = simdr_check(s, NULL, NULL, &rep);
    REQUIRE(rc == SIMDR_OK || damage_status(rc), "check: status %d", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        fuzz_make_scratch_dir(dir, sizeof dir, "simdr-fuzz-damage");
        snprintf(path, sizeof path, "%s/store.bin", dir);
    }
    fuzz_clear_dir(dir);
    build_store(data, size);
    if (m.nends == 0) {
        model_free();
        return 0;
    }
    uint8_t flags = size > 9 ? data[9] : 0;
    simdr_store *rw = open_store(SIMDR_OPEN_EXISTING, flags & 16);
    simdr_store *ro = open_store(SIMDR_OPEN_READONLY, 0);
    damage(data, size);
    read_everything(ro);
    read_everything(rw);
    if (flags & 32) {
        /* Writes on the damaged store, the index growing on the way (its
         * growth reads every key's hash from the metadata); the read-only
         * handle follows them by refresh. */
        write_after_damage(rw, data, size);
        read_everything(rw);
        int rc = simdr_refresh(ro, NULL);
        REQUIRE(rc == SIMDR_OK || damage_status(rc), "refresh: status %d", rc);
        if (rc == SIMDR_OK) read_everything(ro);
    }
    int rc = simdr_compact(rw);
    REQUIRE(rc == SIMDR_OK || damage_status(rc), "compact: status %d", rc);
    if (rc == SIMDR_OK) point_reads(rw);
    simdr_close(ro);
    simdr_close(rw);
    model_free();
    return 0;
}
