/*
 * test_boundaries.c - writes sized to land exactly on, one byte under and
 * one byte over the internal limits that are sums rather than value sizes
 * (test_sizes sweeps value sizes): a batch whose entries with their pads and
 * metadata total the 16 MiB copy limit; a batch of exactly IOV_MAX iovecs
 * and one more past that limit; during compaction, an entry whose span
 * (the previous metadata, pad, value, metadata) is exactly the 4 MiB read
 * window, and a value that exactly fills the 4 MiB copy buffer behind the
 * entries already in it. Every value is checked byte for byte after a
 * reopen (and after the compaction).
 */
#include "testutil.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)
#define META 20u

static uint64_t pad_for(uint64_t at, int aligned) { return aligned ? (64 - at % 64) % 64 : 0; }

typedef struct written {
    char key[32];
    size_t len;
    uint64_t seed;
} written;

typedef struct fixture {
    tu_fixture tu;
    written w[1200];
    int n;
    int layout;
} fixture;

static simdr_store *open_layout(const char *path, int layout) {
    return tu_open(path, SIMDR_OPEN_CREATE, layout);
}

static uint8_t *value_for(const written *w) {
    uint8_t *v = malloc(w->len);
    assert_non_null(v);
    tu_fill(v, w->len, w->seed);
    return v;
}

static void expect_all(fixture *f) {
    for (int i = 0; i < f->n; i++) {
        uint8_t *v = value_for(&f->w[i]);
        tu_expect_value(f->tu.s, TU_STR(f->w[i].key), v, f->w[i].len);
        free(v);
    }
}

static written *add(fixture *f, size_t len) {
    written *w = &f->w[f->n];
    snprintf(w->key, sizeof w->key, "b%d", f->n);
    w->len = len;
    w->seed = 0xb0da000 + (uint64_t)f->n;
    f->n++;
    return w;
}

/* Puts the last m written values as one batch. */
static void put_batch_of(fixture *f, int m) {
    simdr_kv *kv = calloc((size_t)m, sizeof *kv);
    uint8_t **vals = calloc((size_t)m, sizeof *vals);
    assert_true(kv && vals);
    for (int i = 0; i < m; i++) {
        written *w = &f->w[f->n - m + i];
        vals[i] = value_for(w);
        kv[i] = (simdr_kv){w->key, strlen(w->key), vals[i], w->len};
    }
    assert_int_equal(simdr_put_batch(f->tu.s, kv, (size_t)m, NULL), SIMDR_OK);
    for (int i = 0; i < m; i++) free(vals[i]);
    free(vals);
    free(kv);
}

static void put_one(fixture *f, size_t len) {
    written *w = add(f, len);
    uint8_t *v = value_for(w);
    assert_int_equal(simdr_put(f->tu.s, TU_STR(w->key), v, len, NULL), SIMDR_OK);
    free(v);
}

static void reopen(fixture *f) {
    assert_int_equal(simdr_close(f->tu.s), SIMDR_OK);
    f->tu.s = tu_open(f->tu.path, SIMDR_OPEN_EXISTING, 0);
}

/* Two-value batches whose bytes in the file total 16 MiB - 1, 16 MiB and
 * 16 MiB + 1 (the copy limit: at most that is copied into one buffer). */
static void batch_total_at_copy_limit(fixture *f, int aligned) {
    for (int delta = -1; delta <= 1; delta++) {
        uint64_t at = simdr_file_size(f->tu.s);
        size_t a = MIB + 3;
        uint64_t first = pad_for(at, aligned) + a + META;
        uint64_t pad2 = pad_for(at + first, aligned);
        size_t b = (size_t)((int64_t)(16 * MIB) + delta - (int64_t)(first + pad2 + META));
        add(f, a);
        add(f, b);
        put_batch_of(f, 2);
        assert_int_equal(simdr_file_size(f->tu.s) - at, (uint64_t)((int64_t)(16 * MIB) + delta));
    }
}

/* Batches past the copy limit written from the callers' buffers with
 * exactly IOV_MAX iovecs, and two more. Two iovecs an entry (value and
 * metadata) when no pad precedes the value: unaligned stores, and aligned
 * ones whose tail is aligned and whose entries keep it so (values of
 * 64 KiB - 20 bytes). */
static void batch_iovecs_at_iov_max(fixture *f, int aligned) {
    size_t len = aligned ? 65536 - META : 40000;
    if (aligned) {
        /* A value of 64k + 44 bytes starts aligned and ends an entry on an
         * aligned offset. */
        put_one(f, 64 * 1024 + 44);
        assert_int_equal(simdr_file_size(f->tu.s) % 64, 0);
    }
    for (int extra = 0; extra <= 1; extra++) {
        int m = IOV_MAX / 2 + extra; /* 2m iovecs: IOV_MAX, IOV_MAX + 2 */
        assert_true((uint64_t)m * (len + META) > 16 * MIB);
        for (int i = 0; i < m; i++) add(f, len);
        put_batch_of(f, m);
        if (aligned) assert_int_equal(simdr_file_size(f->tu.s) % 64, 0);
    }
}

/* Where the compacted file will end after the entries written so far (all
 * live: nothing is overwritten; it keeps them in file order). */
static uint64_t compacted_end(const fixture *f, int aligned) {
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) pos += pad_for(pos, aligned) + f->w[i].len + META;
    return pos;
}

/* Compaction reads the old file through a 4 MiB window (an entry's span
 * larger than that comes from the map) and writes through a 4 MiB buffer
 * (a payload over 2 MiB goes straight to the file, after a flush, leaving
 * only its metadata buffered). Entries are written so that in the old file
 * one span is 4 MiB - 1, 4 MiB and 4 MiB + 1, and in the new file a value
 * following a direct one and one of 2 MiB brings the buffer to 4 MiB - 1,
 * exactly 4 MiB, and 4 MiB + 1 (a flush first). */
static void compaction_windows(fixture *f, int aligned) {
    for (int delta = -1; delta <= 1; delta++) {
        uint64_t at = simdr_file_size(f->tu.s);
        /* span = META (the previous metadata) + pad + value + META */
        size_t len = (size_t)((int64_t)(4 * MIB) + delta - (int64_t)(2 * META) -
                              (int64_t)pad_for(at, aligned));
        put_one(f, len); /* > 2 MiB: written directly by the compaction */
    }
    for (int delta = -1; delta <= 1; delta++) {
        /* The buffer holds the direct value's metadata (20 bytes). */
        uint64_t pos = compacted_end(f, aligned);
        uint64_t pad_a = pad_for(pos, aligned);
        size_t a = 2 * MIB; /* not over 2 MiB: buffered */
        uint64_t pos_b = pos + pad_a + a + META;
        uint64_t pad_b = pad_for(pos_b, aligned);
        uint64_t buffered = META + pad_a + a + META + pad_b;
        size_t b = (size_t)((int64_t)(4 * MIB) + delta - (int64_t)buffered);
        assert_true(b <= 2 * MIB);
        put_one(f, a);
        put_one(f, b);
        put_one(f, 2 * MIB + 1); /* direct again: the next round starts alike */
    }
    /* Garbage at the end, so the compaction has something to drop. */
    put_one(f, 100);
    char key[32];
    snprintf(key, sizeof key, "b%d", f->n - 1);
    assert_int_equal(simdr_delete(f->tu.s, TU_STR(key), NULL), SIMDR_OK);
    f->n--;
    uint64_t end = compacted_end(f, aligned);
    assert_int_equal(simdr_compact(f->tu.s), SIMDR_OK);
    assert_int_equal(simdr_file_size(f->tu.s), end);
    expect_all(f);
    assert_int_equal(simdr_check(f->tu.s, NULL, NULL, NULL), SIMDR_OK);
}

static void run(void **state, int layout) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_fixture_init(&f->tu, 0);
    f->tu.s = open_layout(f->tu.path, layout);
    int aligned = layout == SIMDR_LAYOUT_ALIGNED64;
    put_one(f, 7); /* the file does not start aligned */
    batch_total_at_copy_limit(f, aligned);
    batch_iovecs_at_iov_max(f, aligned);
    reopen(f);
    expect_all(f);
    compaction_windows(f, aligned);
    reopen(f);
    expect_all(f);
    assert_int_equal(simdr_check(f->tu.s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_count(f->tu.s), (uint64_t)f->n);
    tu_fixture_free(&f->tu);
    free(f);
    (void)state;
}

static void boundaries_aligned(void **state) { run(state, SIMDR_LAYOUT_ALIGNED64); }
static void boundaries_unaligned(void **state) { run(state, SIMDR_LAYOUT_UNALIGNED); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(boundaries_aligned),
        cmocka_unit_test(boundaries_unaligned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
