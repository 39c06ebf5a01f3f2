/*
 * test_replicate.c - unit tests of the replication calls (simdr_log_info,
 * simdr_log_read, simdr_log_meta_at, simdr_log_append): a replica fed in
 * small chunks ends byte for byte equal to its primary in both layouts and
 * serves its values; a compaction changes the file's identity and stale
 * reads are refused; hostile bytes (a wrong link, a bad CRC, a torn entry,
 * non-zero padding, bytes of another store, an offset that is not the tail,
 * a sound prefix followed by damage) are refused with nothing written.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

typedef struct pair {
    char *dir;
    char ppath[4096], rpath[4096];
    simdr_store *p, *r;
} pair;

static pair *pair_new(int layout) {
    pair *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->dir = tu_mkdtemp();
    tu_join(x->ppath, sizeof x->ppath, x->dir, "primary.bin");
    tu_join(x->rpath, sizeof x->rpath, x->dir, "replica.bin");
    x->p = tu_open(x->ppath, SIMDR_OPEN_CREATE, layout);
    x->r = tu_open(x->rpath, SIMDR_OPEN_CREATE, layout);
    return x;
}

static void pair_free(pair *x) {
    simdr_close(x->p);
    simdr_close(x->r);
    tu_rmtree(x->dir);
    free(x->dir);
    free(x);
}

/* Puts of 1..700 bytes, overwrites and deletes, seeded. */
static void write_some(simdr_store *s, int n, uint64_t seed) {
    uint8_t val[700];
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "k%d", (int)((seed + (uint64_t)i) % 97));
        if (i % 11 == 5 && simdr_exists(s, TU_STR(k)) == 1) {
            assert_int_equal(simdr_delete(s, TU_STR(k), NULL), SIMDR_OK);
            continue;
        }
        size_t len = 1 + (size_t)((seed * 31 + (uint64_t)i * 17) % 700);
        tu_fill(val, len, seed + (uint64_t)i);
        assert_int_equal(simdr_put(s, TU_STR(k), val, len, NULL), SIMDR_OK);
    }
}

/* Feeds the replica from the primary in chunks of at most cap bytes. */
static void follow(pair *x, size_t cap) {
    simdr_log_state pi;
    assert_int_equal(simdr_log_info(x->p, &pi), SIMDR_OK);
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        uint64_t from = simdr_file_size(x->r);
        size_t len = 0;
        int rc = simdr_log_read(x->p, pi.identity, from, buf, cap, &len);
        if (rc == SIMDR_ETOOBIG) {
            assert_true(len > cap);
            uint8_t *big = malloc(len);
            assert_non_null(big);
            size_t got = 0;
            assert_int_equal(simdr_log_read(x->p, pi.identity, from, big, len, &got), SIMDR_OK);
            assert_int_equal(got, len);
            assert_int_equal(simdr_log_append(x->r, from, big, got, NULL), SIMDR_OK);
            free(big);
            continue;
        }
        assert_int_equal(rc, SIMDR_OK);
        if (len == 0) break;
        uint64_t tail = 0;
        assert_int_equal(simdr_log_append(x->r, from, buf, len, &tail), SIMDR_OK);
        assert_int_equal(tail, from + len);
    }
    free(buf);
}

static void assert_same_files(pair *x) {
    size_t pl = 0, rl = 0;
    uint8_t *pb = tu_read_file(x->ppath, &pl), *rb = tu_read_file(x->rpath, &rl);
    assert_non_null(pb);
    assert_non_null(rb);
    assert_int_equal(pl, simdr_file_size(x->p));
    assert_int_equal(rl, pl);
    assert_memory_equal(pb, rb, pl);
    free(pb);
    free(rb);
    assert_int_equal(simdr_count(x->r), simdr_count(x->p));
    for (int i = 0; i < 97; i++) {
        char k[32];
        snprintf(k, sizeof k, "k%d", i);
        simdr_entry *a = NULL, *b = NULL;
        int ra = simdr_get(x->p, TU_STR(k), &a), rb2 = simdr_get(x->r, TU_STR(k), &b);
        assert_int_equal(ra, rb2);
        if (ra == SIMDR_OK) {
            assert_int_equal(simdr_entry_size(a), simdr_entry_size(b));
            assert_memory_equal(simdr_entry_data(a), simdr_entry_data(b), simdr_entry_size(a));
        }
        simdr_entry_release(a);
        simdr_entry_release(b);
    }
}

static void replica_equals_primary(int layout) {
    pair *x = pair_new(layout);
    write_some(x->p, 300, 1);
    follow(x, 500); /* smaller than many entries: exercises SIMDR_ETOOBIG */
    assert_same_files(x);
    write_some(x->p, 200, 2);
    follow(x, 64 * 1024);
    assert_same_files(x);
    /* the replica reopens at its tail and keeps following */
    simdr_close(x->r);
    x->r = tu_open(x->rpath, SIMDR_OPEN_EXISTING, layout);
    write_some(x->p, 50, 3);
    follow(x, 4096);
    assert_same_files(x);
    simdr_log_state pi, ri;
    assert_int_equal(simdr_log_info(x->p, &pi), SIMDR_OK);
    assert_int_equal(simdr_log_info(x->r, &ri), SIMDR_OK);
    assert_int_equal(pi.tail, ri.tail);
    assert_memory_equal(pi.tail_meta, ri.tail_meta, 20);
    assert_int_equal(pi.layout, layout);
    assert_true(pi.identity != ri.identity); /* two files */
    uint8_t meta[20];
    assert_int_equal(simdr_log_meta_at(x->p, pi.identity, ri.tail, meta), SIMDR_OK);
    assert_memory_equal(meta, ri.tail_meta, 20);
    pair_free(x);
}

static void test_follow_aligned(void **state) {
    (void)state;
    replica_equals_primary(SIMDR_LAYOUT_ALIGNED64);
}

static void test_follow_unaligned(void **state) {
    (void)state;
    replica_equals_primary(SIMDR_LAYOUT_UNALIGNED);
}

static void test_identity_and_compaction(void **state) {
    (void)state;
    pair *x = pair_new(SIMDR_LAYOUT_ALIGNED64);
    write_some(x->p, 300, 4);
    simdr_log_state a, b, c;
    assert_int_equal(simdr_log_info(x->p, &a), SIMDR_OK);
    assert_true(a.identity != 0);
    write_some(x->p, 10, 5);
    assert_int_equal(simdr_log_info(x->p, &b), SIMDR_OK);
    assert_true(a.identity == b.identity); /* appends keep it */
    assert_true(b.tail > a.tail);
    /* reopening the same file keeps it */
    simdr_close(x->p);
    x->p = tu_open(x->ppath, SIMDR_OPEN_EXISTING, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_log_info(x->p, &b), SIMDR_OK);
    assert_true(a.identity == b.identity);
    assert_int_equal(simdr_compact(x->p), SIMDR_OK);
    assert_int_equal(simdr_log_info(x->p, &c), SIMDR_OK);
    assert_true(c.identity != b.identity);
    uint8_t buf[4096];
    size_t len = 99;
    assert_int_equal(simdr_log_read(x->p, b.identity, 0, buf, sizeof buf, &len), SIMDR_ENOENT);
    assert_int_equal(len, 0);
    uint8_t meta[20];
    assert_int_equal(simdr_log_meta_at(x->p, b.identity, c.tail, meta), SIMDR_ENOENT);
    /* a second compaction gives yet another identity */
    write_some(x->p, 100, 6);
    assert_int_equal(simdr_compact(x->p), SIMDR_OK);
    simdr_log_state d;
    assert_int_equal(simdr_log_info(x->p, &d), SIMDR_OK);
    assert_true(d.identity != c.identity && d.identity != b.identity);
    /* beyond the tail, inside an entry */
    assert_int_equal(simdr_log_read(x->p, d.identity, d.tail + 1, buf, sizeof buf, &len),
                     SIMDR_EINVAL);
    assert_int_equal(simdr_log_read(x->p, d.identity, d.tail, buf, sizeof buf, &len), SIMDR_OK);
    assert_int_equal(len, 0);
    pair_free(x);
}

/* Reads the primary's whole log (it is small) into a fresh buffer. */
static uint8_t *whole_log(simdr_store *s, size_t *len) {
    simdr_log_state info;
    assert_int_equal(simdr_log_info(s, &info), SIMDR_OK);
    uint8_t *buf = malloc(info.tail + 1);
    assert_non_null(buf);
    assert_int_equal(simdr_log_read(s, info.identity, 0, buf, info.tail, len), SIMDR_OK);
    assert_int_equal(*len, info.tail);
    return buf;
}

/* The replica must be untouched after a refused append. */
static void expect_refused(pair *x, uint64_t from, const uint8_t *bytes, size_t len) {
    uint64_t size = simdr_file_size(x->r), count = simdr_count(x->r);
    int64_t on_disk = tu_file_size(x->rpath);
    assert_int_equal(simdr_log_append(x->r, from, bytes, len, NULL), SIMDR_ECORRUPT);
    assert_int_equal(simdr_file_size(x->r), size);
    assert_int_equal(simdr_count(x->r), count);
    assert_int_equal(tu_file_size(x->rpath), on_disk);
}

static void test_hostile_bytes(void **state) {
    (void)state;
    pair *x = pair_new(SIMDR_LAYOUT_ALIGNED64);
    tu_put_str(x->p, "a", "hello");
    tu_put_str(x->p, "b", "world, a longer value to pad after");
    assert_int_equal(simdr_delete(x->p, TU_STR("a"), NULL), SIMDR_OK);
    tu_put_str(x->p, "c", "sea");
    size_t len = 0;
    uint8_t *log = whole_log(x->p, &len);
    uint8_t *bad = malloc(len);
    assert_non_null(bad);

    /* a bad CRC: one payload byte flipped ("hello" starts at 0) */
    memcpy(bad, log, len);
    bad[1] ^= 0x20;
    expect_refused(x, 0, bad, len);
    /* a wrong link: the newest entry's prev_offset moved by 64 */
    memcpy(bad, log, len);
    bad[len - 12] = (uint8_t)(bad[len - 12] + 64);
    expect_refused(x, 0, bad, len);
    /* a torn entry: the last bytes missing */
    expect_refused(x, 0, log, len - 7);
    /* trailing garbage after sound entries */
    uint8_t *more = malloc(len + 30);
    memcpy(more, log, len);
    memset(more + len, 0x5a, 30);
    expect_refused(x, 0, more, len + 30);
    /* too short to be an entry */
    expect_refused(x, 0, log, 10);
    /* non-zero padding before "world..." (the first entry ends at 25) */
    memcpy(bad, log, len);
    bad[30] = 1;
    expect_refused(x, 0, bad, len);

    /* sound: the first two entries, then the rest must chain onto them */
    uint64_t second_end = 64 + strlen("world, a longer value to pad after") + 20;
    assert_int_equal(simdr_log_append(x->r, 0, log, (size_t)second_end, NULL), SIMDR_OK);
    /* not from the tail */
    expect_refused(x, 0, log, (size_t)second_end);
    expect_refused(x, second_end + 1, log + second_end + 1, len - (size_t)second_end - 1);
    /* bytes of another store at the same offset: its entries link to 0 */
    char other_path[4096];
    tu_join(other_path, sizeof other_path, x->dir, "other.bin");
    simdr_store *o = tu_open(other_path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    tu_put_str(o, "zz", "another store's value, long enough to matter");
    tu_put_str(o, "yy", "more");
    size_t olen = 0;
    uint8_t *olog = whole_log(o, &olen);
    expect_refused(x, second_end, olog, olen);
    /* the other store's bytes from its own offset second_end have links
     * below that offset or a different shape: refused as well */
    if (olen > second_end) expect_refused(x, second_end, olog + second_end, olen - second_end);
    simdr_close(o);
    free(olog);
    /* a sound rest followed by a damaged entry: nothing of it is written */
    memcpy(bad, log, len);
    bad[len - 21] ^= 1; /* the payload of "sea" */
    expect_refused(x, second_end, bad + second_end, len - (size_t)second_end);
    /* and the real rest is accepted */
    assert_int_equal(simdr_log_append(x->r, second_end, log + second_end,
                                      len - (size_t)second_end, NULL), SIMDR_OK);
    assert_int_equal(simdr_file_size(x->r), len);
    tu_expect_value(x->r, TU_STR("c"), TU_STR("sea"));
    assert_int_equal(simdr_exists(x->r, TU_STR("a")), 0);
    /* len 0 at the tail is a no-op; elsewhere it is refused */
    assert_int_equal(simdr_log_append(x->r, len, log, 0, NULL), SIMDR_OK);
    assert_int_equal(simdr_log_append(x->r, 0, log, 0, NULL), SIMDR_ECORRUPT);
    /* a read-only store refuses */
    simdr_close(x->r);
    x->r = tu_open(x->rpath, SIMDR_OPEN_READONLY, SIMDR_LAYOUT_ALIGNED64);
    assert_int_equal(simdr_log_append(x->r, len, log, len, NULL), SIMDR_EREADONLY);
    assert_int_equal(simdr_log_append(NULL, 0, log, len, NULL), SIMDR_EINVAL);
    free(more);
    free(bad);
    free(log);
    pair_free(x);
}

static void test_read_limits(void **state) {
    (void)state;
    pair *x = pair_new(SIMDR_LAYOUT_ALIGNED64);
    uint8_t big[5000];
    tu_fill(big, sizeof big, 9);
    assert_int_equal(simdr_put(x->p, TU_STR("big"), big, sizeof big, NULL), SIMDR_OK);
    tu_put_str(x->p, "small", "s");
    simdr_log_state info;
    assert_int_equal(simdr_log_info(x->p, &info), SIMDR_OK);
    uint8_t buf[6000];
    size_t len = 0;
    assert_int_equal(simdr_log_read(x->p, info.identity, 0, buf, 100, &len), SIMDR_ETOOBIG);
    assert_int_equal(len, 5000 + 20);
    /* room for the big entry but not the small one: only the big one */
    assert_int_equal(simdr_log_read(x->p, info.identity, 0, buf, 5030, &len), SIMDR_OK);
    assert_int_equal(len, 5020);
    /* an offset inside the big entry: refused when the walk down from the
     * tail passes it; otherwise the bytes go out and the replica refuses them */
    assert_int_equal(simdr_log_read(x->p, info.identity, 100, buf, 10, &len), SIMDR_EINVAL);
    assert_int_equal(simdr_log_read(x->p, info.identity, 100, buf, sizeof buf, &len), SIMDR_OK);
    assert_int_equal(simdr_log_append(x->r, 0, buf, len, NULL), SIMDR_ECORRUPT);
    assert_int_equal(simdr_log_meta_at(x->p, info.identity, info.tail + 1, buf), SIMDR_EINVAL);
    assert_int_equal(simdr_log_meta_at(x->p, info.identity, 5020, buf), SIMDR_OK);
    assert_int_equal(tu_get_le64(buf + 8), 0); /* the big entry's prev_offset */
    pair_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follow_aligned),
        cmocka_unit_test(test_follow_unaligned),
        cmocka_unit_test(test_identity_and_compaction),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_read_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
