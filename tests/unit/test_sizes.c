/*
 * test_sizes.c - size sweeps over every write and read path that buffers:
 * batch puts (a batch is copied into one buffer up to 16 MiB, written from
 * the caller's buffers beyond), streams (1 MiB chunks), compaction (a 4 MiB
 * copy buffer; payloads over 2 MiB written directly), copies between stores
 * and chunked reads. Every power of two up to 16 MiB and one byte either
 * side of it, in both layouts, each value checked byte for byte (CRC-32 of
 * the expected and of the stored bytes) after a reopen.
 *
 * One store per layout carries all sizes through the paths in turn, so each
 * value is written by a batch, read back in chunks, overwritten by a stream
 * (behind a small value of its own), compacted, and copied to a second store.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_SHIFT 24 /* 16 MiB */
#define MAX_SIZES (3 * (MAX_SHIFT + 1))

typedef struct sweep {
    size_t size[MAX_SIZES];
    uint32_t crc[MAX_SIZES]; /* of the value each key holds now */
    int n;
    uint8_t *buf; /* room for the largest value */
} sweep;

static void make_sizes(sweep *w) {
    w->n = 0;
    for (int k = 0; k <= MAX_SHIFT; k++) {
        size_t p = (size_t)1 << k;
        size_t cand[3] = {p - 1, p, p + 1};
        for (int c = 0; c < 3; c++)
            if (cand[c] > 0 && (w->n == 0 || cand[c] > w->size[w->n - 1]))
                w->size[w->n++] = cand[c];
    }
}

static uint32_t crc_of(const void *p, size_t len) {
    uLong c = crc32(0L, Z_NULL, 0);
    const uint8_t *b = p;
    while (len > 0) { /* zlib takes lengths as uInt */
        uInt step = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, b, step);
        b += step;
        len -= step;
    }
    return (uint32_t)c;
}

/* Value number i of a round: pseudo-random, never a lone 0x00 (tu_fill). */
static const uint8_t *value(sweep *w, int i, uint64_t round) {
    tu_fill(w->buf, w->size[i], round * 1000003u + (uint64_t)i);
    w->crc[i] = crc_of(w->buf, w->size[i]);
    return w->buf;
}

static void key_of(int i, char *k, size_t cap) {
    snprintf(k, cap, "size-%d", i);
}

/* Every key holds the value whose CRC is recorded: read whole (simdr_get),
 * or in chunks of max bytes (simdr_entry_chunk, pages handed back). */
static void verify(sweep *w, simdr_store *s, size_t chunk_max, int with_small) {
    assert_int_equal(simdr_count(s), (uint64_t)w->n * (with_small ? 2 : 1));
    for (int i = 0; i < w->n; i++) {
        char k[32];
        key_of(i, k, sizeof k);
        if (with_small) {
            char m[32];
            snprintf(m, sizeof m, "before-%d", i);
            tu_expect_str(s, m, k);
        }
        simdr_entry *e = NULL;
        assert_int_equal(simdr_get(s, TU_STR(k), &e), SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), w->size[i]);
        uint32_t crc;
        if (!chunk_max) {
            crc = crc_of(simdr_entry_data(e), w->size[i]);
        } else {
            uLong c = crc32(0L, Z_NULL, 0);
            uint64_t off = 0;
            const void *p;
            size_t len;
            while (simdr_entry_chunk(e, off, chunk_max, &p, &len, 1) == SIMDR_OK) {
                assert_true(len > 0 && len <= chunk_max);
                c = crc32(c, p, (uInt)len);
                off += len;
            }
            assert_int_equal(off, w->size[i]);
            crc = (uint32_t)c;
        }
        if (crc != w->crc[i])
            fail_msg("value of %zu bytes (key %s) differs after reopen", w->size[i], k);
        assert_int_equal(simdr_entry_checksum(e), crc);
        simdr_entry_release(e);
    }
}

static simdr_store *reopen(simdr_store *s, const char *path) {
    assert_int_equal(simdr_close(s), SIMDR_OK);
    return tu_open(path, SIMDR_OPEN_EXISTING, 0);
}

typedef struct source {
    const uint8_t *data;
    size_t len, at;
    unsigned calls;
} source;

/* Hands out the value in pieces of varying size: the full chunk asked for,
 * then a third of it plus one, so chunk and piece boundaries fall anywhere. */
static int64_t read_source(void *ctx, void *buf, size_t cap) {
    source *src = ctx;
    size_t n = src->len - src->at;
    size_t piece = (src->calls++ & 1) ? cap / 3 + 1 : cap;
    if (n > piece) n = piece;
    memcpy(buf, src->data + src->at, n);
    src->at += n;
    return (int64_t)n;
}

static void sweep_layout(int layout) {
    sweep *w = calloc(1, sizeof *w);
    make_sizes(w);
    w->buf = malloc(((size_t)1 << MAX_SHIFT) + 1);
    char *dir = tu_mkdtemp();
    char path[4096], path2[4096];
    tu_join(path, sizeof path, dir, "sizes.bin");
    tu_join(path2, sizeof path2, dir, "copy.bin");
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, layout);

    /* Batches: each value behind a small one, so the batch buffer holds two
     * entries and the 16 MiB boundary falls between the sweep's sizes. */
    static const char marker[] = "marker value";
    for (int i = 0; i < w->n; i++) {
        char k[32];
        key_of(i, k, sizeof k);
        simdr_kv kv[2] = {{"marker", 6, marker, sizeof marker},
                          {k, strlen(k), value(w, i, 1), w->size[i]}};
        assert_int_equal(simdr_put_batch(s, kv, 2, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_delete(s, TU_STR("marker"), NULL), SIMDR_OK);
    s = reopen(s, path);
    verify(w, s, layout == SIMDR_LAYOUT_ALIGNED64 ? 65536 : ((size_t)1 << 20) + 1, 0);

    /* Streams overwrite every value, largest first, each behind a small live
     * value; compaction then copies them past the dead batch values, in file
     * order, through its buffer: every size meets a buffer that holds only
     * the small value before it. */
    for (int i = w->n - 1; i >= 0; i--) {
        char k[32], m[32];
        key_of(i, k, sizeof k);
        snprintf(m, sizeof m, "before-%d", i);
        tu_put_str(s, m, k);
        source src = {value(w, i, 2), w->size[i], 0, 0};
        assert_int_equal(simdr_put_stream(s, TU_STR(k), read_source, &src, NULL), SIMDR_OK);
    }
    /* (checked after the compaction: it refuses a value that does not
     * match its checksum, and the reopen after it must find the expected
     * bytes) */
    s = reopen(s, path);
    assert_int_equal(simdr_compact(s), SIMDR_OK);
    s = reopen(s, path);
    assert_int_equal(simdr_layout_of(s), layout);
    verify(w, s, 0, 1);

    /* Copies into a store of the other layout. */
    simdr_store *d = tu_open(path2, SIMDR_OPEN_CREATE, !layout);
    for (int i = 0; i < w->n; i++) {
        char k[32];
        key_of(i, k, sizeof k);
        assert_int_equal(simdr_copy(s, TU_STR(k), d, NULL), SIMDR_OK);
    }
    d = reopen(d, path2);
    verify(w, d, 0, 0);
    assert_int_equal(simdr_check(d, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(d), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
    free(w->buf);
    free(w);
}

static void test_sizes_aligned(void **state) {
    (void)state;
    sweep_layout(SIMDR_LAYOUT_ALIGNED64);
}

static void test_sizes_unaligned(void **state) {
    (void)state;
    sweep_layout(SIMDR_LAYOUT_UNALIGNED);
}

/* ---- checksums of short values against zlib ----
 * Values up to 32 bytes take the library's inline CRC (on x86-64 folded 8
 * bytes at a time with carry-less multiplies, a 4-7 byte first piece as
 * one shifted word, 1-3 bytes through the byte table); a stream chains it
 * from a running CRC. Every length from 1 to 80, written by a put, a batch
 * and a stream handing out 1 to 5 bytes at a time, must store zlib's
 * crc32 and read back (checked) in both layouts. */
typedef struct dribble {
    const uint8_t *p;
    size_t left, step;
} dribble;

static int64_t dribble_read(void *ctx, void *buf, size_t cap) {
    dribble *d = ctx;
    size_t n = d->left < d->step ? d->left : d->step;
    if (n > cap) n = cap;
    memcpy(buf, d->p, n);
    d->p += n;
    d->left -= n;
    d->step = d->step % 5 + 1;
    return (int64_t)n;
}

static void expect_zlib_crc(simdr_store *s, const char *key, const uint8_t *want, size_t len) {
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(s, key, strlen(key), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_size(e), len);
    assert_memory_equal(simdr_entry_data(e), want, len);
    assert_int_equal(simdr_entry_checksum(e), (uint32_t)crc32(0, want, (uInt)len));
    simdr_entry_release(e);
}

static void short_checksums_layout(int layout) {
    enum { MAXLEN = 80 };
    char *dir = tu_mkdtemp();
    char path[4200];
    snprintf(path, sizeof path, "%s/crc.bin", dir);
    uint8_t vals[MAXLEN + 1][MAXLEN];
    srand(1234 + layout);
    for (size_t len = 1; len <= MAXLEN; len++)
        for (size_t i = 0; i < len; i++) vals[len][i] = (uint8_t)(rand() >> 7);
    vals[1][0] |= 1; /* never the single byte 0x00 (the tombstone) */
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, layout);
    simdr_kv items[MAXLEN];
    char bkeys[MAXLEN][16];
    for (size_t len = 1; len <= MAXLEN; len++) {
        char k[16];
        snprintf(k, sizeof k, "p%zu", len);
        assert_int_equal(simdr_put(s, k, strlen(k), vals[len], len, NULL), SIMDR_OK);
        snprintf(bkeys[len - 1], sizeof bkeys[len - 1], "b%zu", len);
        items[len - 1] = (simdr_kv){bkeys[len - 1], strlen(bkeys[len - 1]), vals[len], len};
        snprintf(k, sizeof k, "s%zu", len);
        dribble d = {vals[len], len, len % 5 + 1};
        assert_int_equal(simdr_put_stream(s, k, strlen(k), dribble_read, &d, NULL), SIMDR_OK);
    }
    assert_int_equal(simdr_put_batch(s, items, MAXLEN, NULL), SIMDR_OK);
    for (int round = 0; round < 2; round++) {
        for (size_t len = 1; len <= MAXLEN; len++) {
            char k[16];
            for (const char *pre = "pbs"; *pre; pre++) {
                snprintf(k, sizeof k, "%c%zu", *pre, len);
                expect_zlib_crc(s, k, vals[len], len);
            }
        }
        assert_int_equal(simdr_close(s), SIMDR_OK);
        if (round == 0) s = tu_open(path, SIMDR_OPEN_EXISTING, layout);
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_short_checksums_aligned(void **state) {
    (void)state;
    short_checksums_layout(SIMDR_LAYOUT_ALIGNED64);
}

static void test_short_checksums_unaligned(void **state) {
    (void)state;
    short_checksums_layout(SIMDR_LAYOUT_UNALIGNED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_aligned),
        cmocka_unit_test(test_sizes_unaligned),
        cmocka_unit_test(test_short_checksums_aligned),
        cmocka_unit_test(test_short_checksums_unaligned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
