/*
 * test_mapped_compose.c - mapped appends (SIMDR_APPEND_MAPPED) composed with
 * the rest of the engine, at and just past every boundary they have: values
 * of the page size, the 1 MiB growth step, the 16 MiB window and 3 MB, each
 * exactly and one byte either side; entries (puts, streams, batches,
 * tombstones) ending exactly at, one byte before and one byte past the
 * preallocated end and the window's end; the growth rule (max(1 MiB, 1/8
 * of the file), rounded to a MiB) checked step by step; streams that fail
 * or are refused after crossing the preallocated end; compaction while
 * entry handles and another thread's read scopes are held; syncs in
 * between; a mapped replica fed by simdr_log_append; a read-only store in a
 * child process refreshing while the parent writes; RLIMIT_FSIZE at a limit
 * that is not a multiple of the step; and kill -9 at random points, after
 * which every acknowledged key must hold its exact bytes (checked with
 * repair 0 first, with the side file and without it). Every store is checked with simdr_check and reopened
 * with and without the hint.
 *
 * The tests read the writer's preallocated end and window (src/internal.h)
 * to aim entries at them; everything else goes through the public API.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"

#define MIB (UINT64_C(1) << 20)
#define NK 48
#define MAX_VALUE (17 * MIB)

/* ---- the model: each write has a generation of its own, from which (with
 * the length) its value is derived; a rename keeps the generation ---- */

typedef struct model {
    uint64_t len[NK]; /* 0: absent */
    uint32_t gen[NK];
    uint32_t next_gen;
} model;

static uint8_t *vbuf; /* MAX_VALUE bytes: values being written */
static uint8_t *wbuf; /* MAX_VALUE bytes: values expected on reads */

static void value_of(uint8_t *buf, uint32_t gen, uint64_t len) {
    tu_fill(buf, (size_t)len, UINT64_C(0x9e3779b97f4a7c15) * gen);
}

static size_t key_of(char *buf, unsigned k) { return (size_t)snprintf(buf, 32, "key-%u", k); }

static uint64_t present(const model *m) {
    uint64_t n = 0;
    for (unsigned k = 0; k < NK; k++) n += m->len[k] != 0;
    return n;
}

static void expect_key(simdr_store *s, const model *m, unsigned k) {
    char key[32];
    size_t kl = key_of(key, k);
    simdr_entry *e = NULL;
    if (!m->len[k]) {
        assert_int_equal(simdr_get(s, key, kl, &e), SIMDR_NOTFOUND);
        return;
    }
    int rc = simdr_get(s, key, kl, &e);
    if (rc != SIMDR_OK) fprintf(stderr, "key %u: %s (%s)\n", k, simdr_strerror(rc), simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(simdr_entry_size(e), m->len[k]);
    value_of(wbuf, m->gen[k], m->len[k]);
    assert_memory_equal(simdr_entry_data(e), wbuf, (size_t)m->len[k]);
    simdr_entry_release(e);
}

static void expect_model(simdr_store *s, const model *m) {
    for (unsigned k = 0; k < NK; k++) expect_key(s, m, k);
    assert_int_equal(simdr_count(s), present(m));
}

static void expect_sound(simdr_store *s) {
    simdr_check_report rep;
    int rc = simdr_check(s, NULL, NULL, &rep);
    if (rc != SIMDR_OK) fprintf(stderr, "check: %s\n", simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    assert_int_equal(rep.bad_entries, 0);
}

/* ---- operations that keep the model ---- */

static simdr_store *open_with(const char *path, int layout, int mapped, int use_hint,
                              int durability) {
    simdr_options o;
    simdr_options_init(&o);
    o.layout = layout;
    o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    o.use_hint = use_hint;
    o.durability = durability;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s (%s)\n", simdr_strerror(rc), simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

static void op_put(simdr_store *s, model *m, unsigned k, uint64_t len) {
    char key[32];
    size_t kl = key_of(key, k);
    uint32_t gen = ++m->next_gen;
    value_of(vbuf, gen, len);
    int rc = simdr_put(s, key, kl, vbuf, (size_t)len, NULL);
    if (rc != SIMDR_OK) fprintf(stderr, "put %llu: %s\n", (unsigned long long)len, simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    m->len[k] = len;
    m->gen[k] = gen;
}

typedef struct source {
    const uint8_t *data;
    uint64_t len, at, fail_at; /* fail_at: the source fails there (0: never) */
    size_t chunk;
} source;

static int64_t read_source(void *ctx, void *buf, size_t cap) {
    source *src = ctx;
    if (src->fail_at && src->at >= src->fail_at) return -1;
    uint64_t n = src->len - src->at;
    if (n > cap) n = cap;
    if (src->chunk && n > src->chunk) n = src->chunk;
    memcpy(buf, src->data + src->at, (size_t)n);
    src->at += n;
    return (int64_t)n;
}

static void op_stream(simdr_store *s, model *m, unsigned k, uint64_t len) {
    char key[32];
    size_t kl = key_of(key, k);
    uint32_t gen = ++m->next_gen;
    value_of(vbuf, gen, len);
    source src = {vbuf, len, 0, 0, 0};
    assert_int_equal(simdr_put_stream(s, key, kl, read_source, &src, NULL), SIMDR_OK);
    m->len[k] = len;
    m->gen[k] = gen;
}

/* A batch of n items: keys ks, lengths lens (each value allocated). */
static void op_batch(simdr_store *s, model *m, const unsigned *ks, const uint64_t *lens, size_t n) {
    simdr_kv kv[8];
    char keys[8][32];
    uint8_t *vals[8];
    uint32_t gens[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        gens[i] = ++m->next_gen;
        vals[i] = malloc((size_t)lens[i]);
        assert_non_null(vals[i]);
        value_of(vals[i], gens[i], lens[i]);
        kv[i] = (simdr_kv){keys[i], key_of(keys[i], ks[i]), vals[i], (size_t)lens[i]};
    }
    assert_int_equal(simdr_put_batch(s, kv, n, NULL), SIMDR_OK);
    for (size_t i = 0; i < n; i++) {
        m->len[ks[i]] = lens[i];
        m->gen[ks[i]] = gens[i];
        free(vals[i]);
    }
}

static void op_delete(simdr_store *s, model *m, unsigned k) {
    char key[32];
    size_t kl = key_of(key, k);
    assert_int_equal(simdr_delete(s, key, kl, NULL), m->len[k] ? SIMDR_OK : SIMDR_NOTFOUND);
    m->len[k] = 0;
}

static void op_delete_batch(simdr_store *s, model *m, const unsigned *ks, size_t n) {
    simdr_key keys[8];
    char names[8][32];
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        keys[i] = (simdr_key){names[i], key_of(names[i], ks[i])};
        if (m->len[ks[i]]) want++;
    }
    size_t deleted = 0;
    assert_int_equal(simdr_delete_batch(s, keys, n, &deleted, NULL), SIMDR_OK);
    assert_int_equal(deleted, want);
    for (size_t i = 0; i < n; i++) m->len[ks[i]] = 0;
}

static void op_rename(simdr_store *s, model *m, unsigned from, unsigned to) {
    char a[32], b[32];
    size_t al = key_of(a, from), bl = key_of(b, to);
    assert_int_equal(simdr_rename(s, a, al, b, bl, NULL), SIMDR_OK);
    /* The value keeps its bytes: remember them under the new key. */
    m->len[to] = m->len[from];
    m->gen[to] = m->gen[from];
    m->len[from] = 0;
}

/* ---- where an entry ends ---- */

static uint64_t pad_at(uint64_t tail, int layout) {
    return layout == SIMDR_LAYOUT_ALIGNED64 ? (64 - tail % 64) & 63 : 0;
}

/* The value length that makes a regular entry appended at tail end at
 * target; 0 when it cannot. */
static uint64_t len_ending_at(uint64_t tail, int layout, uint64_t target) {
    uint64_t over = tail + pad_at(tail, layout) + SIMDR__META_SIZE;
    return target > over ? target - over : 0;
}

static void expect_file_is_prealloc(simdr_store *s, const char *path) {
    /* While open, the file is the preallocated end; never shorter than the tail. */
    assert_int_equal(tu_file_size(path), (int64_t)s->alloc_end);
    assert_true(s->alloc_end >= s->tail);
    assert_int_equal(s->tail, simdr_file_size(s));
}

static uint64_t round_up_mib(uint64_t x) { return (x + MIB - 1) / MIB * MIB; }

/* The growth rule of src/mapped.c: a write ending at end past the
 * preallocated end old takes it to max(old + max(1 MiB, old / 8), end),
 * rounded up to a MiB. */
static uint64_t grown_end(uint64_t old, uint64_t end) {
    uint64_t step = old / 8 > MIB ? old / 8 : MIB;
    return round_up_mib(old + step > end ? old + step : end);
}

/* Closes s (exact file), then reopens it with and without the hint and
 * read-only: the same keys and bytes, nothing cut, simdr_check sound. */
static void close_and_verify(simdr_store *s, const char *path, const model *m) {
    uint64_t tail = simdr_file_size(s);
    int layout = simdr_layout_of(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(path), (int64_t)tail);
    for (int hint = 1; hint >= 0; hint--) {
        s = open_with(path, layout, 1, hint, SIMDR_SYNC_NONE);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.bytes_cut, 0);
        assert_int_equal(simdr_file_size(s), tail);
        assert_int_equal(simdr_layout_of(s), layout);
        expect_model(s, m);
        expect_sound(s);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        assert_int_equal(tu_file_size(path), (int64_t)tail);
    }
    s = tu_open(path, SIMDR_OPEN_READONLY, 0);
    expect_model(s, m);
    expect_sound(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* Values of every boundary size, exactly and one byte either side, written
 * in turn by a put, a stream and a batch, each read back at once. */
static const uint64_t boundary_sizes[] = {
    1,           2,       63,          64,          65,          4095,
    4096,        4097,    65535,       65536,       65537,       MIB - 1,
    MIB,         MIB + 1, 3000000 - 1, 3000000,     3000000 + 1, 16 * MIB - 1,
    16 * MIB,    16 * MIB + 1};

static void test_boundary_sizes(void **state) {
    tu_fixture *f = *state;
    for (int layout = 0; layout < 2; layout++) {
        unlink(f->path);
        simdr_store *s = open_with(f->path, layout, 1, 1, SIMDR_SYNC_NONE);
        model m = {{0}, {0}, 0};
        unsigned steps = 0;
        size_t n = sizeof boundary_sizes / sizeof boundary_sizes[0];
        for (size_t i = 0; i < n; i++) {
            unsigned k = (unsigned)(i % NK);
            uint64_t len = boundary_sizes[i];
            uint64_t alloc = s->alloc_end;
            int kind = (int)((i + (size_t)layout) % 3);
            switch (kind) {
            case 0: op_put(s, &m, k, len); break;
            case 1: op_stream(s, &m, k, len); break;
            default: {
                unsigned ks[2] = {k, (unsigned)(NK - 1 - i % 8)};
                uint64_t lens[2] = {len, 100 + i};
                op_batch(s, &m, ks, lens, 2);
            }
            }
            expect_file_is_prealloc(s, f->path);
            /* A put or batch past the preallocated end grows it by the
             * rule, from 1 MiB steps to an eighth of the file. */
            if (kind != 1 && s->alloc_end != alloc) {
                assert_int_equal(s->alloc_end, grown_end(alloc, simdr_file_size(s)));
                steps++;
            }
            expect_key(s, &m, k);
        }
        assert_true(steps >= 5);
        expect_model(s, &m);
        expect_sound(s);
        close_and_verify(s, f->path, &m);
    }
}

/* The kinds of writes aimed at a boundary. */
enum aim_kind { AIM_PUT, AIM_STREAM, AIM_BATCH, AIM_TOMBSTONE, AIM_DELETE_BATCH, AIM_KINDS };

/* Appends so that the last entry written ends exactly at target (a
 * tombstone batch: its first tombstone ends there, the second 21 bytes
 * past it). Returns 0 when target is too close to the tail to aim at. */
static int aim_at(simdr_store *s, model *m, int layout, uint64_t target, int kind, unsigned k) {
    uint64_t tail = simdr_file_size(s);
    unsigned other = (k + 7) % NK;
    switch (kind) {
    case AIM_PUT:
    case AIM_STREAM: {
        uint64_t len = len_ending_at(tail, layout, target);
        if (len < 1 || len > MAX_VALUE) return 0;
        if (kind == AIM_PUT)
            op_put(s, m, k, len);
        else
            op_stream(s, m, k, len);
        break;
    }
    case AIM_BATCH: {
        uint64_t first = 100 + k;
        uint64_t mid = tail + pad_at(tail, layout) + first + SIMDR__META_SIZE;
        uint64_t len = len_ending_at(mid, layout, target);
        if (len < 1 || len > MAX_VALUE) return 0;
        unsigned ks[2] = {other, k};
        uint64_t lens[2] = {first, len};
        op_batch(s, m, ks, lens, 2);
        break;
    }
    case AIM_TOMBSTONE:
    case AIM_DELETE_BATCH: {
        /* A put up to 21 bytes before target, then one or two tombstones. */
        uint64_t len = len_ending_at(tail, layout, target - 21);
        if (target < 21 || len < 1 || len > MAX_VALUE) return 0;
        if (!m->len[other]) op_put(s, m, other, 10);
        tail = simdr_file_size(s);
        len = len_ending_at(tail, layout, target - 21);
        if (len < 1) return 0;
        op_put(s, m, k, len);
        if (kind == AIM_TOMBSTONE) {
            op_delete(s, m, other);
        } else {
            unsigned third = (k + 13) % NK;
            if (!m->len[third]) op_put(s, m, third, 1);
            unsigned ks[3] = {other, (k + 29) % NK, third};
            /* the absent key in the middle is skipped: two tombstones */
            if (m->len[ks[1]]) op_delete(s, m, ks[1]);
            tail = simdr_file_size(s);
            len = len_ending_at(tail, layout, target - 21);
            if (len < 1) return 0;
            op_put(s, m, k, len);
            op_delete_batch(s, m, ks, 3);
            assert_int_equal(simdr_file_size(s), target + 21);
            return 1;
        }
        break;
    }
    }
    assert_int_equal(simdr_file_size(s), target);
    return 1;
}

/* Entries aimed to end one byte before, exactly at and one byte past the
 * preallocated end, the window's end and page boundaries, by puts, streams,
 * batches and tombstones; each growth follows the rule (max(1 MiB, 1/8 of
 * the file) rounded to a MiB, checked past 8 MiB too); syncs trim in
 * between and a compaction runs with an entry handle held. */
static void test_entries_aimed_at_boundaries(void **state) {
    tu_fixture *f = *state;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    for (int layout = 0; layout < 2; layout++) {
        unlink(f->path);
        simdr_store *s = open_with(f->path, layout, 1, 1, SIMDR_SYNC_NONE);
        model m = {{0}, {0}, 0};
        op_put(s, &m, 0, 3000000); /* held across the compaction below */
        simdr_entry *held = NULL;
        assert_int_equal(simdr_get(s, TU_STR("key-0"), &held), SIMDR_OK);
        uint32_t held_gen = m.gen[0];
        unsigned grown = 0, eighths = 0, hits = 0, visits[3] = {0, 0, 0}, hit[3][3];
        memset(hit, 0, sizeof hit);
        enum { AT_ALLOC, AT_PAGE, AT_WINDOW };
        for (unsigned i = 0; i < 40; i++) {
            uint64_t tail = simdr_file_size(s), alloc = s->alloc_end;
            uint64_t wend = s->wmap ? s->wmap_off + s->wmap_len : alloc + MIB;
            /* Each window visit fills up to 16 MiB: one in nine. */
            int at = i % 9 == 8 ? AT_WINDOW : i % 2 ? AT_PAGE : AT_ALLOC;
            int delta = (int)(visits[at]++ % 3) - 1;
            uint64_t base = at == AT_ALLOC ? alloc
                            : at == AT_WINDOW ? wend
                                              : (tail + 200 + page - 1) / page * page;
            uint64_t target = base + (uint64_t)(int64_t)delta;
            int kind = (int)((i * 7 + (unsigned)layout) % AIM_KINDS);
            unsigned k = 1 + i % (NK - 1);
            if (!aim_at(s, &m, layout, target, kind, k)) {
                /* Too close to aim at (a tombstone needs 21 bytes and a put
                 * 22): step over it, the next visit aims again. */
                op_put(s, &m, k, 333);
                visits[at]--;
                continue;
            }
            hits++;
            hit[at][delta + 1]++;
            expect_file_is_prealloc(s, f->path);
            /* A mapped put past the preallocated end grows it by the rule
             * (streams extend the file by their own bytes; the tombstone
             * kinds are several writes). */
            if (s->alloc_end != alloc && (kind == AIM_PUT || kind == AIM_BATCH)) {
                grown++;
                assert_int_equal(s->alloc_end, grown_end(alloc, simdr_file_size(s)));
                eighths += alloc / 8 > MIB && alloc + alloc / 8 >= simdr_file_size(s);
            }
            expect_key(s, &m, k);
            if (i % 11 == 10) {
                assert_int_equal(simdr_sync(s), SIMDR_OK);
                assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(s));
                assert_int_equal(s->alloc_end, simdr_file_size(s));
            }
            if (i == 20) {
                assert_int_equal(simdr_compact(s), SIMDR_OK);
                assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(s));
                expect_model(s, &m);
            }
        }
        assert_true(grown >= 1);
        assert_true(eighths >= 1); /* steps of an eighth of the file, not 1 MiB */
        assert_true(hits >= 24);
        for (int at = 0; at < 3; at++)
            for (int d = 0; d < 3; d++) assert_true(hit[at][d] > 0);
        assert_true(simdr_file_size(s) > 8 * MIB); /* the 1/8 rule was in force */
        /* The handle taken before everything still reads its bytes. */
        value_of(wbuf, held_gen, 3000000);
        assert_int_equal(simdr_entry_size(held), 3000000);
        assert_memory_equal(simdr_entry_data(held), wbuf, 3000000);
        simdr_entry_release(held);
        expect_model(s, &m);
        expect_sound(s);
        close_and_verify(s, f->path, &m);
    }
}

/* Streams write with pwrite into the preallocated space and past it; one
 * that fails, or is refused (zero bytes only), after crossing the
 * preallocated end cuts the file back to the tail, and the mapped writes
 * after it grow the file again. Handles into the window stay readable. */
static void test_failed_streams_between_mapped_writes(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    model m = {{0}, {0}, 0};
    for (unsigned round = 0; round < 6; round++) {
        /* Up to 1000 bytes before the preallocated end. */
        op_put(s, &m, 1, 5000 + round);
        uint64_t len = len_ending_at(simdr_file_size(s), SIMDR_LAYOUT_ALIGNED64,
                                     s->alloc_end - 1000);
        if (len) op_put(s, &m, 2, len);
        simdr_entry *held = NULL;
        assert_int_equal(simdr_get(s, TU_STR("key-2"), &held), SIMDR_OK);
        uint64_t tail = simdr_file_size(s), count = simdr_count(s);
        /* A source failing after 3 MB: past the preallocated end. */
        uint32_t gen = ++m.next_gen;
        value_of(vbuf, gen, 3000000);
        source src = {vbuf, 3000000, 0, 2500000 + round * 100000, 65536 + round};
        assert_int_equal(simdr_put_stream(s, TU_STR("key-3"), read_source, &src, NULL),
                         SIMDR_ESOURCE);
        assert_int_equal(simdr_file_size(s), tail);
        assert_int_equal(simdr_count(s), count);
        assert_int_equal(tu_file_size(f->path), (int64_t)tail);
        assert_int_equal(s->alloc_end, tail);
        /* Zero bytes only: refused, cut back the same way. */
        memset(vbuf, 0, 2 * MIB);
        source zeros = {vbuf, 2 * MIB, 0, 0, 0};
        assert_int_equal(simdr_put_stream(s, TU_STR("key-3"), read_source, &zeros, NULL),
                         SIMDR_EINVAL);
        assert_int_equal(tu_file_size(f->path), (int64_t)tail);
        /* Mapped again: into space allocated afresh, through the old window. */
        op_put(s, &m, 4, 100 + round);
        op_put(s, &m, 5, MIB + round);
        expect_file_is_prealloc(s, f->path);
        op_stream(s, &m, 6, MIB - 1 + round);
        op_put(s, &m, 7, 7);
        expect_model(s, &m);
        value_of(wbuf, m.gen[2], simdr_entry_size(held));
        assert_memory_equal(simdr_entry_data(held), wbuf, (size_t)simdr_entry_size(held));
        simdr_entry_release(held);
        if (round % 2) assert_int_equal(simdr_sync(s), SIMDR_OK);
    }
    expect_sound(s);
    close_and_verify(s, f->path, &m);
}

/* Another thread reads in read scopes (and keeps entry handles) while the
 * writer makes mapped writes across growth steps and window moves, syncs
 * and compacts; every value read must be one its key held. */
typedef struct scope_reader {
    simdr_store *s;
    _Atomic int stop;
    _Atomic uint64_t reads, scopes;
    int bad;
} scope_reader;

/* Values in this test carry their own description: the first 16 bytes are
 * (key, length), the rest derived from them, so a reader can check any
 * value it meets without knowing which write it came from. */
static void self_value(uint8_t *buf, unsigned k, uint64_t len, uint32_t gen) {
    tu_fill(buf, (size_t)len, (uint64_t)k << 40 ^ len ^ (uint64_t)gen << 20);
    if (len >= 16) {
        uint64_t a = k, b = gen;
        memcpy(buf, &a, 8);
        memcpy(buf + 8, &b, 8);
        tu_fill(buf + 16, (size_t)(len - 16), (uint64_t)k << 40 ^ len ^ (uint64_t)gen << 20);
    }
}

static int self_value_ok(const uint8_t *v, size_t len, unsigned k, uint8_t *scratch) {
    if (len < 16) return 0;
    uint64_t a, b;
    memcpy(&a, v, 8);
    memcpy(&b, v + 8, 8);
    if (a != k) return 0;
    self_value(scratch, k, len, (uint32_t)b);
    return memcmp(v, scratch, len) == 0;
}

static void *scope_reader_main(void *arg) {
    scope_reader *r = arg;
    uint8_t *scratch = malloc(4 * MIB);
    while (!atomic_load(&r->stop) && scratch) {
        simdr_read scope;
        if (simdr_read_begin(r->s, &scope) != SIMDR_OK) {
            r->bad++;
            break;
        }
        for (unsigned k = 0; k < 16; k++) {
            char key[32];
            size_t kl = key_of(key, k);
            const void *v;
            size_t vl;
            int rc = simdr_read_get(&scope, key, kl, &v, &vl);
            if (rc == SIMDR_NOTFOUND) continue;
            if (rc != SIMDR_OK || !self_value_ok(v, vl, k, scratch)) r->bad++;
            atomic_fetch_add(&r->reads, 1);
        }
        simdr_read_end(&scope);
        atomic_fetch_add(&r->scopes, 1);
        /* A handle kept across whatever the writer does next. */
        simdr_entry *e = NULL;
        if (simdr_get(r->s, TU_STR("key-1"), &e) == SIMDR_OK) {
            sched_yield();
            if (!self_value_ok(simdr_entry_data(e), (size_t)simdr_entry_size(e), 1, scratch))
                r->bad++;
            simdr_entry_release(e);
        }
    }
    free(scratch);
    return NULL;
}

static void test_compaction_under_read_scopes(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    uint8_t *v = malloc(4 * MIB);
    assert_non_null(v);
    uint64_t lens[16];
    uint32_t gens[16];
    uint32_t gen = 0;
    for (unsigned k = 0; k < 16; k++) {
        lens[k] = 16 + k * 1000;
        gens[k] = ++gen;
        self_value(v, k, lens[k], gens[k]);
        char key[32];
        assert_int_equal(simdr_put(s, key, key_of(key, k), v, (size_t)lens[k], NULL), SIMDR_OK);
    }
    scope_reader r = {.s = s};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, scope_reader_main, &r), 0);
    static const uint64_t sizes[] = {16, 4095, 4097, MIB - 1, MIB + 1, 3000000, 65537, 100};
    tu_watchdog_start(120, "writes under read scopes");
    for (unsigned i = 0; i < 400; i++) {
        unsigned k = i % 16;
        lens[k] = sizes[(i * 5 + k) % 8];
        gens[k] = ++gen;
        self_value(v, k, lens[k], gens[k]);
        char key[32];
        assert_int_equal(simdr_put(s, key, key_of(key, k), v, (size_t)lens[k], NULL), SIMDR_OK);
        if (i % 50 == 25) assert_int_equal(simdr_sync(s), SIMDR_OK);
        if (i % 100 == 99) {
            assert_int_equal(simdr_compact(s), SIMDR_OK);
            assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(s));
        }
    }
    /* Let the reader see the final state at least once more. */
    uint64_t seen = atomic_load(&r.scopes);
    while (atomic_load(&r.scopes) < seen + 2) sched_yield();
    atomic_store(&r.stop, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    tu_watchdog_stop();
    assert_int_equal(r.bad, 0);
    assert_true(atomic_load(&r.reads) > 0);
    for (unsigned k = 0; k < 16; k++) {
        char key[32];
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, key, key_of(key, k), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), lens[k]);
        self_value(v, k, lens[k], gens[k]);
        assert_memory_equal(simdr_entry_data(e), v, (size_t)lens[k]);
        simdr_entry_release(e);
    }
    expect_sound(s);
    uint64_t tail = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    free(v);
}

/* A mapped replica fed by simdr_log_append in pieces of every boundary
 * size (whole entries up to a cap of a page, a MiB, 3 MB, ...) from a
 * primary written by puts, streams, batches, deletes and renames; a sync
 * and a reopen of the replica in between. Closed, the two files are equal
 * byte for byte, and the replica holds the primary's keys. */
static void ship(simdr_store *primary, simdr_store **replica, const char *rpath, uint8_t *buf,
                 size_t *cap_turn) {
    static const size_t caps[] = {4096, 4097, MIB - 1, MIB, MIB + 1, 3000000, 17 * MIB};
    simdr_log_state st;
    assert_int_equal(simdr_log_info(primary, &st), SIMDR_OK);
    for (;;) {
        uint64_t from = simdr_file_size(*replica);
        if (from == st.tail) break;
        size_t cap = caps[(*cap_turn)++ % (sizeof caps / sizeof caps[0])], got = 0;
        int rc = simdr_log_read(primary, st.identity, from, buf, cap, &got);
        if (rc == SIMDR_ETOOBIG) {
            assert_true(got > cap && got <= 17 * MIB + 64);
            rc = simdr_log_read(primary, st.identity, from, buf, got, &got);
        }
        assert_int_equal(rc, SIMDR_OK);
        uint64_t tail = 0;
        rc = simdr_log_append(*replica, from, buf, got, &tail);
        if (rc != SIMDR_OK) fprintf(stderr, "log_append: %s\n", simdr_last_error());
        assert_int_equal(rc, SIMDR_OK);
        assert_int_equal(tail, from + got);
        if (*cap_turn % 5 == 0) assert_int_equal(simdr_sync(*replica), SIMDR_OK);
        if (*cap_turn % 9 == 0) {
            assert_int_equal(simdr_close(*replica), SIMDR_OK);
            *replica = open_with(rpath, SIMDR_LAYOUT_ALIGNED64, 1, *cap_turn % 2, SIMDR_SYNC_NONE);
        }
    }
}

static void test_log_append_into_mapped_replica(void **state) {
    tu_fixture *f = *state;
    for (int primary_mapped = 0; primary_mapped < 2; primary_mapped++) {
        unlink(f->path);
        unlink(f->other);
        simdr_store *p = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, primary_mapped, 1,
                                   SIMDR_SYNC_NONE);
        simdr_store *r = open_with(f->other, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
        uint8_t *buf = malloc(17 * MIB + 64);
        assert_non_null(buf);
        model m = {{0}, {0}, 0};
        size_t turn = 0;
        uint64_t seed = tu_seed(5);
        for (unsigned i = 0; i < 60; i++) {
            unsigned k = (unsigned)(tu_rand(&seed) % 20);
            uint64_t len = boundary_sizes[tu_rand(&seed) % 17]; /* up to 3 MB + 1 */
            switch (i % 6) {
            case 0: op_put(p, &m, k, len); break;
            case 1: op_stream(p, &m, k, len); break;
            case 2: {
                unsigned ks[3] = {k, (k + 1) % 20, (k + 2) % 20};
                uint64_t lens[3] = {len, 64, 4096};
                op_batch(p, &m, ks, lens, 3);
                break;
            }
            case 3: op_delete(p, &m, k); break;
            case 4:
                if (m.len[k] && !m.len[(k + 5) % 20]) op_rename(p, &m, k, (k + 5) % 20);
                else op_put(p, &m, k, 4096);
                break;
            default: {
                unsigned ks[2] = {k, (k + 3) % 20};
                op_delete_batch(p, &m, ks, 2);
            }
            }
            if (i % 4 == 3) ship(p, &r, f->other, buf, &turn);
        }
        ship(p, &r, f->other, buf, &turn);
        expect_model(r, &m);
        expect_sound(r);
        assert_int_equal(simdr_close(p), SIMDR_OK);
        assert_int_equal(simdr_close(r), SIMDR_OK);
        size_t pl = 0, rl = 0;
        uint8_t *pb = tu_read_file(f->path, &pl), *rb = tu_read_file(f->other, &rl);
        assert_non_null(pb);
        assert_non_null(rb);
        assert_int_equal(pl, rl);
        assert_memory_equal(pb, rb, pl);
        free(pb);
        free(rb);
        free(buf);
        r = open_with(f->other, SIMDR_LAYOUT_ALIGNED64, 1, 0, SIMDR_SYNC_NONE);
        expect_model(r, &m);
        assert_int_equal(simdr_close(r), SIMDR_OK);
    }
}

/* How many keys do not hold what the model says (no assertions: for child
 * processes, and for the kill test's either-or states). */
static unsigned key_mismatch(simdr_store *s, const model *m, unsigned k, uint8_t *scratch) {
    char key[32];
    size_t kl = key_of(key, k);
    simdr_entry *e = NULL;
    int rc = simdr_get(s, key, kl, &e);
    if (!m->len[k]) {
        if (rc == SIMDR_OK) simdr_entry_release(e);
        return rc != SIMDR_NOTFOUND;
    }
    if (rc != SIMDR_OK) return 1;
    int bad = simdr_entry_size(e) != m->len[k];
    if (!bad) {
        value_of(scratch, m->gen[k], m->len[k]);
        bad = memcmp(simdr_entry_data(e), scratch, (size_t)m->len[k]) != 0;
    }
    simdr_entry_release(e);
    return (unsigned)bad;
}

static unsigned model_mismatches(simdr_store *s, const model *m, uint8_t *scratch) {
    unsigned bad = 0;
    for (unsigned k = 0; k < NK; k++) bad += key_mismatch(s, m, k, scratch);
    return bad + (simdr_count(s) != present(m));
}

typedef struct round_msg {
    uint64_t tail;
    model m;
    int last;
} round_msg;

static int read_all(int fd, void *buf, size_t len) {
    uint8_t *p = buf;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* The child: a read-only store that refreshes up to each tail the parent
 * announces and checks every key there. Exit status: 0, or what failed. */
static int follow_as_reader(const char *path, int in, int out) {
    alarm(120); /* a hang fails the test */
    uint8_t *scratch = malloc(MAX_VALUE);
    simdr_store *r = NULL;
    if (!scratch || tu_open_status(&r, path, SIMDR_OPEN_READONLY, 0) != SIMDR_OK) return 2;
    for (unsigned round = 0;; round++) {
        round_msg msg;
        if (read_all(in, &msg, sizeof msg) != 0) return 3;
        for (unsigned tries = 0; simdr_file_size(r) != msg.tail; tries++) {
            if (simdr_refresh(r, NULL) != SIMDR_OK && tries > 100000) return 4;
            if (tries > 10) sched_yield();
        }
        unsigned bad = model_mismatches(r, &msg.m, scratch);
        simdr_check_report rep;
        if (simdr_check(r, NULL, NULL, &rep) != SIMDR_OK) bad++;
        if (bad) {
            fprintf(stderr, "reader: round %u: %u keys differ\n", round, bad);
            return 5;
        }
        char ok = 1;
        if (write(out, &ok, 1) != 1) return 6;
        if (msg.last) break;
    }
    simdr_close(r);
    free(scratch);
    return 0;
}

static void test_readonly_child_follows_mapped_writer(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    model m = {{0}, {0}, 0};
    op_put(s, &m, 0, 100);
    int to_child[2], from_child[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(to_child[1]);
        close(from_child[0]);
        _exit(follow_as_reader(f->path, to_child[0], from_child[1]));
    }
    close(to_child[0]);
    close(from_child[1]);
    uint64_t seed = tu_seed(9);
    const unsigned rounds = 30;
    for (unsigned round = 0; round < rounds; round++) {
        for (unsigned j = 0; j < 6; j++) {
            unsigned k = (unsigned)(tu_rand(&seed) % 24);
            uint64_t len = boundary_sizes[tu_rand(&seed) % 17];
            switch ((round + j) % 5) {
            case 0: op_put(s, &m, k, len); break;
            case 1: op_stream(s, &m, k, len); break;
            case 2: {
                unsigned ks[2] = {k, (k + 1) % 24};
                uint64_t lens[2] = {len, 4097};
                op_batch(s, &m, ks, lens, 2);
                break;
            }
            case 3: op_delete(s, &m, k); break;
            default:
                if (m.len[k] && !m.len[(k + 3) % 24]) op_rename(s, &m, k, (k + 3) % 24);
                else op_put(s, &m, k, MIB + 1);
            }
        }
        if (round % 4 == 1) assert_int_equal(simdr_sync(s), SIMDR_OK);
        if (round % 10 == 7) assert_int_equal(simdr_compact(s), SIMDR_OK);
        round_msg msg = {simdr_file_size(s), m, round + 1 == rounds};
        assert_int_equal(write(to_child[1], &msg, sizeof msg), (ssize_t)sizeof msg);
        char ok = 0;
        assert_int_equal(read_all(from_child[0], &ok, 1), 0);
        assert_int_equal(ok, 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(to_child[1]);
    close(from_child[0]);
    close_and_verify(s, f->path, &m);
}

/* The same child without waiting for the writer: it refreshes and reads
 * while the parent makes mapped writes of self-describing values across
 * the boundaries, syncs and compacts; every value it meets must be whole,
 * and it must see the writer's last key. */
static int read_while_written(const char *path) {
    alarm(120);
    uint8_t *scratch = malloc(4 * MIB);
    simdr_store *r = NULL;
    if (!scratch || tu_open_status(&r, path, SIMDR_OPEN_READONLY, 0) != SIMDR_OK) return 2;
    uint64_t refreshes = 0, values = 0;
    for (int done = 0; !done;) {
        if (simdr_refresh(r, NULL) == SIMDR_OK) refreshes++;
        done = simdr_exists(r, TU_STR("done")) == 1;
        for (unsigned k = 0; k < 16; k++) {
            char key[32];
            size_t kl = key_of(key, k);
            simdr_entry *e = NULL;
            int rc = simdr_get(r, key, kl, &e);
            if (rc == SIMDR_NOTFOUND) continue;
            if (rc != SIMDR_OK) return 3;
            int ok = self_value_ok(simdr_entry_data(e), (size_t)simdr_entry_size(e), k, scratch);
            simdr_entry_release(e);
            if (!ok) return 4;
            values++;
        }
    }
    if (simdr_check(r, NULL, NULL, NULL) != SIMDR_OK) return 5;
    printf("reader process: %llu refreshes, %llu values checked\n",
           (unsigned long long)refreshes, (unsigned long long)values);
    fflush(stdout);
    simdr_close(r);
    free(scratch);
    return values ? 0 : 6;
}

static void test_readonly_child_reads_while_written(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    uint8_t *v = malloc(4 * MIB);
    assert_non_null(v);
    self_value(v, 0, 16, 1);
    assert_int_equal(simdr_put(s, TU_STR("key-0"), v, 16, NULL), SIMDR_OK);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(read_while_written(f->path));
    static const uint64_t sizes[] = {16, 4095, 4096, 4097, MIB - 1, MIB + 1, 3000000, 100};
    for (unsigned i = 0; i < 500; i++) {
        unsigned k = i % 16;
        uint64_t len = sizes[(i * 3 + k) % 8];
        self_value(v, k, len, i + 2);
        char key[32];
        size_t kl = key_of(key, k);
        if (i % 7 == 3) {
            uint64_t left = len;
            source src = {v, left, 0, 0, 70000};
            assert_int_equal(simdr_put_stream(s, key, kl, read_source, &src, NULL), SIMDR_OK);
        } else {
            assert_int_equal(simdr_put(s, key, kl, v, (size_t)len, NULL), SIMDR_OK);
        }
        if (i % 40 == 39) assert_int_equal(simdr_sync(s), SIMDR_OK);
        if (i % 150 == 149) assert_int_equal(simdr_compact(s), SIMDR_OK);
        if (i % 50 == 0) {
            char other[32];
            simdr_rename(s, key, kl, other, key_of(other, 16 + k), NULL);
            simdr_delete(s, other, strlen(other), NULL);
        }
    }
    assert_int_equal(simdr_put(s, TU_STR("done"), "1", 1, NULL), SIMDR_OK);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) fprintf(stderr, "reader died of signal %d\n", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    expect_sound(s);
    uint64_t tail = simdr_file_size(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    free(v);
}

/* simdr_copy and simdr_move between two mapped stores, values of every
 * boundary size crossing the destination's preallocated end and window;
 * copying a store into itself is refused. Both stores end exact and sound. */
static void test_copy_and_move_between_mapped_stores(void **state) {
    tu_fixture *f = *state;
    simdr_store *a = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    simdr_store *b = open_with(f->other, SIMDR_LAYOUT_UNALIGNED, 1, 1, SIMDR_SYNC_NONE);
    model ma = {{0}, {0}, 0}, mb = {{0}, {0}, 0};
    for (unsigned k = 0; k < 20; k++) op_put(a, &ma, k, boundary_sizes[k]);
    mb.next_gen = ma.next_gen;
    for (unsigned k = 0; k < 20; k++) {
        char key[32];
        size_t kl = key_of(key, k);
        if (k % 3 == 0) {
            assert_int_equal(simdr_move(a, key, kl, b, NULL), SIMDR_OK);
            ma.len[k] = 0;
        } else {
            assert_int_equal(simdr_copy(a, key, kl, b, NULL), SIMDR_OK);
        }
        mb.len[k] = boundary_sizes[k];
        mb.gen[k] = ma.gen[k];
        assert_int_equal(simdr_copy(a, key, kl, a, NULL), SIMDR_EINVAL);
        expect_key(b, &mb, k);
        if (k == 10) assert_int_equal(simdr_sync(b), SIMDR_OK);
    }
    expect_model(a, &ma);
    expect_model(b, &mb);
    assert_int_equal(simdr_compact(a), SIMDR_OK);
    close_and_verify(a, f->path, &ma);
    close_and_verify(b, f->other, &mb);
}

/* ---- the file size limit ---- */

#define CK(cond)                                                                          \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "child: line %d: %s failed (last error: %s)\n", __LINE__, #cond, \
                    simdr_last_error());                                                  \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

static int put_len(simdr_store *s, model *m, unsigned k, uint64_t len) {
    char key[32];
    size_t kl = key_of(key, k);
    uint32_t gen = ++m->next_gen;
    value_of(vbuf, gen, len);
    int rc = simdr_put(s, key, kl, vbuf, (size_t)len, NULL);
    if (rc == SIMDR_OK) {
        m->len[k] = len;
        m->gen[k] = gen;
    }
    return rc;
}

/* Under RLIMIT_FSIZE at 5 MiB + 12,345 bytes (not a multiple of the
 * step), SIGXFSZ at its default: the preallocation stops at the limit; an
 * entry ending exactly at it is stored; one byte more is SIMDR_ENOSPC for a
 * put, a stream, a batch and a delete, with nothing changed; a stream that
 * fits below it still goes in; the file is exact after close. */
static int writes_at_the_limit(const char *path) {
    const uint64_t limit = 5 * MIB + 12345;
    signal(SIGXFSZ, SIG_DFL);
    struct rlimit rl = {.rlim_cur = limit, .rlim_max = RLIM_INFINITY};
    CK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    simdr_store *s = NULL;
    CK(simdr_open(&s, path, &o) == SIMDR_OK);
    model m = {{0}, {0}, 0};
    for (unsigned k = 0; k < 4; k++) {
        CK(put_len(s, &m, k, MIB + 1) == SIMDR_OK);
        CK(s->alloc_end <= limit);
    }
    /* A stream ending 100 bytes before the limit, then a put ending on it. */
    uint64_t tail = simdr_file_size(s);
    uint64_t slen = len_ending_at(tail, SIMDR_LAYOUT_ALIGNED64, limit - 100);
    uint32_t gen = ++m.next_gen;
    value_of(vbuf, gen, slen);
    source src = {vbuf, slen, 0, 0, 0};
    CK(simdr_put_stream(s, TU_STR("key-4"), read_source, &src, NULL) == SIMDR_OK);
    m.len[4] = slen;
    m.gen[4] = gen;
    uint64_t plen = len_ending_at(simdr_file_size(s), SIMDR_LAYOUT_ALIGNED64, limit);
    CK(plen >= 1 && put_len(s, &m, 5, plen + 1) == SIMDR_ENOSPC);
    CK(put_len(s, &m, 5, plen) == SIMDR_OK);
    CK(simdr_file_size(s) == limit);
    CK(s->alloc_end == limit);
    uint64_t count = simdr_count(s);
    /* Nothing more fits: every kind of write is refused whole. */
    CK(put_len(s, &m, 6, 1) == SIMDR_ENOSPC);
    value_of(vbuf, 1, 10);
    source one = {vbuf, 10, 0, 0, 0};
    CK(simdr_put_stream(s, TU_STR("key-6"), read_source, &one, NULL) == SIMDR_ENOSPC);
    simdr_kv kv[2] = {{"a", 1, vbuf, 1}, {"b", 1, vbuf, 1}};
    CK(simdr_put_batch(s, kv, 2, NULL) == SIMDR_ENOSPC);
    CK(simdr_delete(s, TU_STR("key-0"), NULL) == SIMDR_ENOSPC);
    CK(simdr_file_size(s) == limit && simdr_count(s) == count);
    CK(model_mismatches(s, &m, wbuf) == 0);
    CK(simdr_sync(s) == SIMDR_OK);
    CK(simdr_close(s) == SIMDR_OK);
    struct stat st;
    CK(stat(path, &st) == 0 && (uint64_t)st.st_size == limit);
    s = NULL;
    CK(simdr_open(&s, path, &o) == SIMDR_OK);
    CK(model_mismatches(s, &m, wbuf) == 0);
    CK(simdr_check(s, NULL, NULL, NULL) == SIMDR_OK);
    /* Reopened, the limit holds as before. */
    CK(simdr_delete(s, TU_STR("key-0"), NULL) == SIMDR_ENOSPC);
    CK(simdr_close(s) == SIMDR_OK);
    return 0;
}

static void test_file_size_limit_off_the_step(void **state) {
    tu_fixture *f = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(writes_at_the_limit(f->path));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) fprintf(stderr, "child died of signal %d\n", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(tu_file_size(f->path), (int64_t)(5 * MIB + 12345));
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(s), 6);
    expect_sound(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

/* ---- kill -9 at random points ---- */

enum { K_PUT, K_STREAM, K_BATCH, K_DELETE, K_DELETE_BATCH, K_RENAME, K_SYNC, K_COMPACT };

typedef struct gen_op {
    int kind;
    unsigned k, k2;
    uint64_t len;
} gen_op;

/* The next operation of a round, from its seed and the model (so the
 * parent derives the same sequence without a store). */
static gen_op next_op(uint64_t *seed, const model *m) {
    gen_op op = {K_PUT, (unsigned)(tu_rand(seed) % 24), 0, 0};
    op.k2 = (op.k + 1 + (unsigned)(tu_rand(seed) % 23)) % 24;
    uint64_t r = tu_rand(seed) % 100;
    if (r < 70)
        op.len = 1 + tu_rand(seed) % 5000;
    else if (r < 98)
        op.len = boundary_sizes[tu_rand(seed) % 17];
    else
        op.len = boundary_sizes[17 + tu_rand(seed) % 3]; /* 16 MiB and either side */
    r = tu_rand(seed) % 100;
    op.kind = r < 30 ? K_PUT : r < 45 ? K_STREAM : r < 60 ? K_BATCH : r < 70 ? K_DELETE
            : r < 78 ? K_DELETE_BATCH : r < 88 ? K_RENAME : r < 96 ? K_SYNC : K_COMPACT;
    if ((op.kind == K_DELETE && !m->len[op.k]) ||
        (op.kind == K_RENAME && (!m->len[op.k] || m->len[op.k2])))
        op.kind = K_PUT;
    if (op.kind == K_BATCH && op.len > 3 * MIB) op.len = 3 * MIB;
    return op;
}

/* Applies op to the model, and with s to the store first (the model only
 * changes when the store took it). Returns the store's answer. */
static int do_op(simdr_store *s, model *m, const gen_op *op) {
    char key[32], key2[32];
    size_t kl = key_of(key, op->k), kl2 = key_of(key2, op->k2);
    unsigned bk[3] = {op->k, op->k2, (op->k2 + 1) % 24};
    uint64_t blen[3] = {op->len, 64, 4097};
    uint32_t gen = m->next_gen + 1;
    int rc = SIMDR_OK;
    if (s) {
        switch (op->kind) {
        case K_PUT:
            value_of(vbuf, gen, op->len);
            rc = simdr_put(s, key, kl, vbuf, (size_t)op->len, NULL);
            break;
        case K_STREAM: {
            value_of(vbuf, gen, op->len);
            source src = {vbuf, op->len, 0, 0, 100000};
            rc = simdr_put_stream(s, key, kl, read_source, &src, NULL);
            break;
        }
        case K_BATCH: {
            simdr_kv kv[3];
            char names[3][32];
            uint8_t *vals[3];
            for (int i = 0; i < 3; i++) {
                vals[i] = malloc((size_t)blen[i]);
                if (!vals[i]) return SIMDR_ENOMEM;
                value_of(vals[i], gen + (uint32_t)i, blen[i]);
                kv[i] = (simdr_kv){names[i], key_of(names[i], bk[i]), vals[i], (size_t)blen[i]};
            }
            rc = simdr_put_batch(s, kv, 3, NULL);
            for (int i = 0; i < 3; i++) free(vals[i]);
            break;
        }
        case K_DELETE: rc = simdr_delete(s, key, kl, NULL); break;
        case K_DELETE_BATCH: {
            simdr_key keys[2] = {{key, kl}, {key2, kl2}};
            rc = simdr_delete_batch(s, keys, 2, NULL, NULL);
            break;
        }
        case K_RENAME: rc = simdr_rename(s, key, kl, key2, kl2, NULL); break;
        case K_SYNC: rc = simdr_sync(s); break;
        default: rc = simdr_compact(s);
        }
        if (rc != SIMDR_OK) return rc;
    }
    switch (op->kind) {
    case K_PUT:
    case K_STREAM:
        m->len[op->k] = op->len;
        m->gen[op->k] = ++m->next_gen;
        break;
    case K_BATCH:
        for (int i = 0; i < 3; i++) {
            m->len[bk[i]] = blen[i];
            m->gen[bk[i]] = ++m->next_gen;
        }
        break;
    case K_DELETE: m->len[op->k] = 0; break;
    case K_DELETE_BATCH: m->len[op->k] = m->len[op->k2] = 0; break;
    case K_RENAME:
        m->len[op->k2] = m->len[op->k];
        m->gen[op->k2] = m->gen[op->k];
        m->len[op->k] = 0;
        break;
    default: break;
    }
    return rc;
}

/* The child: opens the store with mapped appends and writes the round's
 * operations, reporting each acknowledged one, until it is killed. */
static void writer_until_killed(const char *path, uint64_t seed, int durability, int out) {
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    o.durability = durability;
    simdr_store *s = NULL;
    if (simdr_open(&s, path, &o) != SIMDR_OK) _exit(2);
    model m = {{0}, {0}, 0};
    for (uint32_t i = 0;; i++) {
        gen_op op = next_op(&seed, &m);
        if (do_op(s, &m, &op) != SIMDR_OK) {
            fprintf(stderr, "writer: op %u (kind %d): %s\n", i, op.kind, simdr_last_error());
            _exit(3);
        }
        if (write(out, &i, sizeof i) != (ssize_t)sizeof i) _exit(4);
    }
}

static void test_kill_at_random_points(void **state) {
    tu_fixture *f = *state;
    uint64_t seed = tu_seed(2024);
    unsigned zero_cuts = 0, refused = 0, landed = 0;
    for (unsigned round = 0; round < 16; round++) {
        char side[4200], hint[4200];
        snprintf(side, sizeof side, "%s.simdr", f->path);
        snprintf(hint, sizeof hint, "%s.hint", f->path);
        unlink(f->path);
        unlink(side);
        unlink(hint);
        uint64_t round_seed = tu_rand(&seed);
        int durability = round % 3 == 2 ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
        uint32_t kill_after = 3 + (uint32_t)(tu_rand(&seed) % 40);
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            writer_until_killed(f->path, round_seed, durability, pfd[1]);
        }
        close(pfd[1]);
        uint32_t acked = 0, idx;
        while (acked < kill_after) {
            assert_int_equal(read_all(pfd[0], &idx, sizeof idx), 0);
            assert_int_equal(idx, acked);
            acked++;
        }
        /* Sometimes right after an acknowledgement, sometimes a little
         * later, in the middle of whatever the writer does then. */
        if (round % 2) usleep((useconds_t)(tu_rand(&seed) % 3000));
        tu_kill9(pid);
        while (read_all(pfd[0], &idx, sizeof idx) == 0) {
            assert_int_equal(idx, acked);
            acked++;
        }
        close(pfd[0]);

        /* The acknowledged state, and the one the operation in flight
         * would have made. */
        model m_acked = {{0}, {0}, 0}, m_next;
        uint64_t s2 = round_seed;
        for (uint32_t i = 0; i < acked; i++) {
            gen_op op = next_op(&s2, &m_acked);
            do_op(NULL, &m_acked, &op);
        }
        m_next = m_acked;
        gen_op inflight = next_op(&s2, &m_next);
        do_op(NULL, &m_next, &inflight);

        /* One round in four without the side file: the whole file is
         * recovered (only once an entry is sure to be there: a file
         * without one is not a store). */
        if (round % 4 == 3 && present(&m_acked)) assert_int_equal(unlink(side), 0);
        /* repair 0 first: a tail of zeros only is cut, anything else
         * refused untouched. */
        size_t pre_len = 0;
        uint8_t *pre = tu_read_file(f->path, &pre_len);
        assert_non_null(pre);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = SIMDR_APPEND_MAPPED;
        o.repair = 0;
        simdr_store *s = NULL;
        int rc = simdr_open(&s, f->path, &o);
        int was_refused = rc == SIMDR_ECORRUPT;
        if (was_refused) {
            size_t now_len = 0;
            uint8_t *now = tu_read_file(f->path, &now_len);
            assert_int_equal(now_len, pre_len);
            assert_memory_equal(now, pre, pre_len);
            free(now);
            refused++;
            o.repair = 1;
            rc = simdr_open(&s, f->path, &o);
        }
        if (rc != SIMDR_OK) fprintf(stderr, "reopen: %s\n", simdr_last_error());
        assert_int_equal(rc, SIMDR_OK);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.file_size, pre_len);
        int zeros_only = 1;
        for (uint64_t i = ri.valid_size; i < pre_len && zeros_only; i++) zeros_only = pre[i] == 0;
        assert_int_equal(zeros_only, !was_refused);
        if (zeros_only && ri.bytes_cut) {
            assert_string_equal(ri.saved_path, "");
            zero_cuts++;
        }
        free(pre);

        /* Every key holds its acknowledged bytes, or those of the
         * operation in flight. */
        uint64_t count = 0;
        int took_next = 0;
        for (unsigned k = 0; k < NK; k++) {
            int as_acked = key_mismatch(s, &m_acked, k, wbuf) == 0;
            int as_next = key_mismatch(s, &m_next, k, wbuf) == 0;
            if (!as_acked && !as_next)
                fprintf(stderr, "round %u: key %u holds neither its acknowledged state (len %llu) "
                        "nor the one in flight (kind %d, len %llu)\n", round, k,
                        (unsigned long long)m_acked.len[k], inflight.kind,
                        (unsigned long long)m_next.len[k]);
            assert_true(as_acked || as_next);
            if (!as_acked) took_next = 1;
            count += (as_acked ? m_acked.len[k] : m_next.len[k]) != 0;
        }
        landed += took_next;
        assert_int_equal(simdr_count(s), count);
        expect_sound(s);
        op_put(s, &m_next, 0, MIB + 1);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 0, SIMDR_SYNC_NONE);
        expect_key(s, &m_next, 0);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        if (ri.saved_path[0]) unlink(ri.saved_path);
    }
    printf("kill rounds: 16, %u zero tails cut with repair 0, %u other tails refused with "
           "repair 0, %u operations in flight landed\n", zero_cuts, refused, landed);
}

/* A read-only handle opened while a mapped writer (another process) holds
 * preallocated zeros keeps reading through everything that follows: the
 * writer's SIGKILL, the next writer's open with repair 0 cutting the zeros
 * under the reader's map, that writer's mapped puts across growth steps,
 * its compaction. */
static void puts_for_reader(simdr_store *s, model *m, unsigned from, unsigned to) {
    for (unsigned k = from; k < to; k++) {
        gen_op op = {K_PUT, k % NK, 0, boundary_sizes[(k * 7) % 17]};
        if (s)
            assert_int_equal(do_op(s, m, &op), SIMDR_OK);
        else
            do_op(NULL, m, &op);
    }
}

static void expect_reader(simdr_store *r, const model *m) {
    assert_int_equal(model_mismatches(r, m, wbuf), 0);
    expect_sound(r);
}

static void test_reader_across_writer_crash_and_cut(void **state) {
    tu_fixture *f = *state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = SIMDR_APPEND_MAPPED;
        simdr_store *s = NULL;
        if (simdr_open(&s, f->path, &o) != SIMDR_OK) _exit(2);
        model cm = {{0}, {0}, 0};
        for (unsigned k = 0; k < 40; k++) {
            gen_op op = {K_PUT, k % NK, 0, boundary_sizes[(k * 7) % 17]};
            if (do_op(s, &cm, &op) != SIMDR_OK) _exit(3);
        }
        char done = 1;
        if (write(pfd[1], &done, 1) != 1) _exit(4);
        for (;;) pause();
    }
    close(pfd[1]);
    char done = 0;
    assert_int_equal(read_all(pfd[0], &done, 1), 0);
    close(pfd[0]);
    model m = {{0}, {0}, 0};
    puts_for_reader(NULL, &m, 0, 40);

    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(r, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(r));
    expect_reader(r, &m);

    tu_kill9(pid);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_OK);
    expect_reader(r, &m);

    /* The next writer cuts the zeros under the reader's map. */
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    o.repair = 0;
    simdr_store *w = NULL;
    assert_int_equal(simdr_open(&w, f->path, &o), SIMDR_OK);
    assert_int_equal(simdr_recovery(w, &ri), SIMDR_OK);
    assert_true(ri.bytes_cut > 0);
    assert_string_equal(ri.saved_path, "");
    assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(r));
    expect_reader(r, &m);

    puts_for_reader(w, &m, 40, 70);
    uint64_t added = 0;
    assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
    assert_int_equal(added, 30);
    expect_reader(r, &m);
    assert_int_equal(simdr_sync(w), SIMDR_OK);
    puts_for_reader(w, &m, 70, 80);
    assert_int_equal(simdr_compact(w), SIMDR_OK);
    puts_for_reader(w, &m, 80, 90);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_OK);
    expect_reader(r, &m);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    close_and_verify(w, f->path, &m);
}

/* A file system that stops answering fallocate (EOPNOTSUPP) after the
 * store preallocated: the write that meets it goes in with pwrite, over the
 * preallocated zeros and past them, and so do the writes after it (streams
 * too); the file is exactly its entries after sync and close (the side
 * file's closed record and the hint match it). */
static void test_fallback_to_pwrite_keeps_trimming(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    model m = {{0}, {0}, 0};
    op_put(s, &m, 0, 1000);
    assert_true(s->alloc_end > simdr_file_size(s));
    simdr__io_fault fault = {.op = SIMDR__IO_FALLOCATE, .nth = 1, .count = 0, .err = EOPNOTSUPP};
    simdr__io_fault_arm(&fault);
    /* Past the preallocated end: the growth meets EOPNOTSUPP. */
    op_put(s, &m, 1, MIB + 1);
    assert_int_equal(simdr__io_hits(SIMDR__IO_FALLOCATE), 1);
    op_put(s, &m, 2, 10);
    op_stream(s, &m, 3, 5000);
    expect_model(s, &m);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(s));
    op_put(s, &m, 4, 3000000);
    simdr__io_reset();
    close_and_verify(s, f->path, &m);
    /* Again from a reopened store, meeting it on a 2 MiB put. */
    simdr_store *w = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    op_put(w, &m, 5, 100);
    uint64_t tail = simdr_file_size(w);
    assert_true(tu_file_size(f->path) > (int64_t)tail);
    simdr__io_fault_arm(&fault);
    op_put(w, &m, 6, 2 * MIB); /* falls back with zeros after the tail */
    op_put(w, &m, 7, 10);
    simdr__io_reset();
    close_and_verify(w, f->path, &m);
}

/* ---- faults where mapped appends meet the system ---- */

static int on_fd(void *ctx, enum simdr__io_op op, int fd) {
    (void)op;
    return fd == *(const int *)ctx;
}

static simdr_store *open_repair0(const char *path) {
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    o.repair = 0;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s\n", simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    return s;
}

/* The window cannot be mapped (ENOMEM) when a put or batch crosses its
 * end: the write fails with nothing published and the store goes on once
 * mappings work again. Growth failing with EIO: the same. A trim that
 * cannot cut (ftruncate EIO) fails simdr_sync after the sync, and a close
 * after it, leaving zeros only: the next open (repair 0) cuts them. */
static void test_faults_at_window_growth_and_trim(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    model m = {{0}, {0}, 0};
    op_put(s, &m, 0, 100);
    int fd = s->fd;
    /* Up to 100 bytes before the window's end. */
    uint64_t wend = s->wmap_off + s->wmap_len;
    while (simdr_file_size(s) + 2 * MIB < wend) op_put(s, &m, 1 + m.next_gen % 20, MIB + 1);
    uint64_t len = len_ending_at(simdr_file_size(s), SIMDR_LAYOUT_ALIGNED64, wend - 100);
    op_put(s, &m, 21, len);
    assert_int_equal(s->wmap_off + s->wmap_len, wend);
    uint64_t tail = simdr_file_size(s), count = simdr_count(s);
    simdr__io_fault nomap = {.op = SIMDR__IO_MMAP, .nth = 1, .count = 0, .err = ENOMEM,
                             .select = on_fd, .ctx = &fd};
    simdr__io_fault_arm(&nomap);
    value_of(vbuf, 999999, 5000);
    assert_int_equal(simdr_put(s, TU_STR("key-22"), vbuf, 5000, NULL), SIMDR_ENOMEM);
    simdr_kv kv[2] = {{"key-22", 6, vbuf, 50}, {"key-23", 6, vbuf, 5000}};
    assert_int_equal(simdr_put_batch(s, kv, 2, NULL), SIMDR_ENOMEM);
    assert_true(simdr__io_hits(SIMDR__IO_MMAP) >= 2);
    simdr__io_reset();
    assert_int_equal(simdr_file_size(s), tail);
    assert_int_equal(simdr_count(s), count);
    expect_model(s, &m);
    op_put(s, &m, 22, 5000);
    op_batch(s, &m, (unsigned[]){23, 24}, (uint64_t[]){50, 5000}, 2);
    expect_model(s, &m);

    /* Growth failing with EIO. */
    len = len_ending_at(simdr_file_size(s), SIMDR_LAYOUT_ALIGNED64, s->alloc_end - 10);
    if (len) op_put(s, &m, 25, len);
    tail = simdr_file_size(s);
    simdr__io_fail_nth(SIMDR__IO_FALLOCATE, 1, EIO);
    value_of(vbuf, 999998, 100);
    assert_int_equal(simdr_put(s, TU_STR("key-26"), vbuf, 100, NULL), SIMDR_EIO);
    simdr__io_reset();
    assert_int_equal(simdr_file_size(s), tail);
    assert_int_equal(tu_file_size(f->path), (int64_t)s->alloc_end);
    op_put(s, &m, 26, 100);

    /* The trim cannot cut. */
    simdr__io_fault notrunc = {.op = SIMDR__IO_FTRUNCATE, .nth = 1, .count = 0, .err = EIO,
                               .select = on_fd, .ctx = &fd};
    simdr__io_fault_arm(&notrunc);
    assert_int_equal(simdr_sync(s), SIMDR_EIO);
    simdr__io_reset();
    assert_true(tu_file_size(f->path) > (int64_t)simdr_file_size(s));
    op_put(s, &m, 27, 4097); /* the store goes on */
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    assert_int_equal(tu_file_size(f->path), (int64_t)simdr_file_size(s));
    op_put(s, &m, 28, MIB);
    fd = s->fd;
    simdr__io_fault_arm(&notrunc);
    assert_int_equal(simdr_close(s), SIMDR_EIO);
    simdr__io_reset();
    s = open_repair0(f->path);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
    assert_true(ri.bytes_cut > 0);
    assert_string_equal(ri.saved_path, "");
    expect_model(s, &m);
    expect_sound(s);
    close_and_verify(s, f->path, &m);
}

/* A failed fdatasync (the failed state) in a mapped store: entries after
 * the last good sync are withdrawn, writes refused; the zeros stay with
 * them. Reopened with repair 0: everything synced is there, the rest is
 * there whole or not at all, the store is sound. */
static void test_failed_sync_in_mapped_store(void **state) {
    tu_fixture *f = *state;
    simdr_store *s = open_with(f->path, SIMDR_LAYOUT_ALIGNED64, 1, 1, SIMDR_SYNC_NONE);
    model m = {{0}, {0}, 0};
    for (unsigned k = 0; k < 10; k++) op_put(s, &m, k, boundary_sizes[(k * 3) % 17]);
    assert_int_equal(simdr_sync(s), SIMDR_OK);
    model synced = m;
    for (unsigned k = 5; k < 15; k++) op_put(s, &m, k, boundary_sizes[(k * 5) % 17]);
    simdr__io_fail_nth(SIMDR__IO_FDATASYNC, 1, EIO);
    assert_int_equal(simdr_sync(s), SIMDR_EIO);
    simdr__io_reset();
    assert_int_equal(simdr_put(s, TU_STR("key-40"), "x", 1, NULL), SIMDR_EFAILED);
    expect_model(s, &synced);
    simdr_close(s);
    s = open_repair0(f->path);
    for (unsigned k = 0; k < NK; k++)
        assert_true(key_mismatch(s, &synced, k, wbuf) == 0 || key_mismatch(s, &m, k, wbuf) == 0);
    expect_sound(s);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static int setup(void **state) {
    (void)state;
    vbuf = malloc(MAX_VALUE);
    wbuf = malloc(MAX_VALUE);
    if (!vbuf || !wbuf) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(vbuf);
    free(wbuf);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(test_boundary_sizes),
        TU_TEST_DIR(test_entries_aimed_at_boundaries),
        TU_TEST_DIR(test_failed_streams_between_mapped_writes),
        TU_TEST_DIR(test_compaction_under_read_scopes),
        TU_TEST_DIR(test_log_append_into_mapped_replica),
        TU_TEST_DIR(test_readonly_child_follows_mapped_writer),
        TU_TEST_DIR(test_readonly_child_reads_while_written),
        TU_TEST_DIR(test_file_size_limit_off_the_step),
        TU_TEST_DIR(test_kill_at_random_points),
        TU_TEST_DIR(test_fallback_to_pwrite_keeps_trimming),
        TU_TEST_DIR(test_reader_across_writer_crash_and_cut),
        TU_TEST_DIR(test_faults_at_window_growth_and_trim),
        TU_TEST_DIR(test_failed_sync_in_mapped_store),
        TU_TEST_DIR(test_copy_and_move_between_mapped_stores),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
