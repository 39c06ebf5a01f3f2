/*
 * test_fault_sequences.c - long random sequences of operations on one store
 * with a system call failing now and then, checked against a model after
 * every step. test_fault_sweep fails each call of one operation on a fresh
 * store; here failures land in the middle of histories: a write after an
 * undone write, a compaction after a failed one, a sync after a withdrawal,
 * a reopen after a failed close, and so on.
 *
 * The model keeps, for each key, the value the store acknowledged last
 * (cur) and the value at the last point known durable (synced). After an
 * operation that failed, a sync with the faults off tells whether the store
 * went on (then nothing may have changed: a failed write leaves the store as
 * it was) or failed (then the handle must serve exactly the synced values,
 * and after a reopen each key holds one of the values it had since). Every
 * value names its key and version, so any wrong byte shows.
 */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fault_seq.h"

/* ---- values and the model ---- */

#define KEYS 64
#define MAX_SEEN 64

typedef struct value {
    uint32_t src, ver; /* the key whose bytes these are (a rename moves them), version; 0 absent */
    uint32_t len;
} value;

typedef struct key_state {
    value cur, synced;
    value seen[MAX_SEEN]; /* every value since the last durable point (for a reopen) */
    int nseen;
} key_state;

typedef struct seq {
    char *dir;
    char path[4096];
    int durability, mapped;
    simdr_store *s;
    key_state k[KEYS];
    uint32_t next_ver;
    uint64_t rnd;
    uint64_t ops, faults_hit, failed_stores, undone;
} seq;

static void key_name(char *out, size_t cap, uint32_t k) { snprintf(out, cap, "fs-%u", k); }

static uint8_t *bytes_of(value v) {
    uint8_t *b = malloc(v.len);
    assert_non_null(b);
    tu_fill(b, v.len, (uint64_t)v.src << 32 | v.ver);
    return b;
}

static void note_seen(key_state *ks, value v) {
    for (int i = 0; i < ks->nseen; i++)
        if (ks->seen[i].ver == v.ver && ks->seen[i].src == v.src) return;
    if (ks->nseen < MAX_SEEN) ks->seen[ks->nseen++] = v;
}

/* An acknowledged write of v to key k. */
static void acked(seq *q, uint32_t k, value v) {
    q->k[k].cur = v;
    note_seen(&q->k[k], v);
    if (q->durability == SIMDR_SYNC_DATA) {
        q->k[k].synced = v;
        q->k[k].nseen = 0;
        note_seen(&q->k[k], v);
    }
}

/* Everything acknowledged is durable now. */
static void all_synced(seq *q) {
    for (uint32_t k = 0; k < KEYS; k++) {
        q->k[k].synced = q->k[k].cur;
        q->k[k].nseen = 0;
        note_seen(&q->k[k], q->k[k].cur);
    }
}

static int same_bytes(simdr_store *s, uint32_t k, value v) {
    char name[32];
    key_name(name, sizeof name, k);
    simdr_entry *e = NULL;
    int rc = simdr_get(s, TU_STR(name), &e);
    if (v.ver == 0 || rc != SIMDR_OK) {
        simdr_entry_release(rc == SIMDR_OK ? e : NULL);
        return v.ver == 0 && rc == SIMDR_NOTFOUND;
    }
    int same = simdr_entry_size(e) == v.len;
    if (same) {
        uint8_t *want = bytes_of(v);
        same = memcmp(want, simdr_entry_data(e), v.len) == 0;
        free(want);
    }
    simdr_entry_release(e);
    return same;
}

/* Every key serves exactly its cur (which = 1) or synced (which = 2) value
 * (only keys[0..n) when keys is not NULL; the count is checked anyway). */
static void expect_keys(seq *q, int which, const uint32_t *keys, int n, const char *where) {
    uint64_t present = 0;
    for (uint32_t k = 0; k < KEYS; k++) {
        value v = which == 1 ? q->k[k].cur : q->k[k].synced;
        present += v.ver != 0;
    }
    for (int i = 0; keys && i < n; i++) {
        value v = which == 1 ? q->k[keys[i]].cur : q->k[keys[i]].synced;
        if (!same_bytes(q->s, keys[i], v)) {
            fprintf(stderr, "%s: key %u does not hold its value\n", where, keys[i]);
            fail();
        }
    }
    assert_int_equal(simdr_count(q->s), present);
}

static void expect_exact(seq *q, int which, const char *where) {
    uint64_t present = 0;
    for (uint32_t k = 0; k < KEYS; k++) {
        value v = which == 1 ? q->k[k].cur : q->k[k].synced;
        if (!same_bytes(q->s, k, v)) {
            fprintf(stderr, "%s: key %u does not hold its %s value (version %u of key %u, %u "
                    "bytes)\n", where, k, which == 1 ? "acknowledged" : "durable", v.ver, v.src,
                    v.len);
            fail();
        }
        present += v.ver != 0;
    }
    if (simdr_count(q->s) != present)
        fprintf(stderr, "%s: count %llu, %llu present\n", where,
                (unsigned long long)simdr_count(q->s), (unsigned long long)present);
    assert_int_equal(simdr_count(q->s), present);
}

/* After a reopen: each key holds one of the values it had since its last
 * durable point (or that one); that is its value from now on. */
static void settle_after_reopen(seq *q, const char *where) {
    for (uint32_t k = 0; k < KEYS; k++) {
        key_state *ks = &q->k[k];
        int found = -1;
        if (same_bytes(q->s, k, ks->synced)) found = -2;
        for (int i = 0; i < ks->nseen && found == -1; i++)
            if (same_bytes(q->s, k, ks->seen[i])) found = i;
        if (found == -1) {
            fprintf(stderr, "%s: after reopen key %u holds none of its %d recent values\n",
                    where, k, ks->nseen);
            fail();
        }
        ks->cur = found == -2 ? ks->synced : ks->seen[found];
    }
    assert_int_equal(simdr_check(q->s, NULL, NULL, NULL), SIMDR_OK);
}

static void open_store(seq *q) {
    simdr_options o;
    simdr_options_init(&o);
    o.durability = q->durability;
    if (q->mapped) o.append_mode = SIMDR_APPEND_MAPPED;
    q->s = NULL;
    int rc = simdr_open(&q->s, q->path, &o);
    if (rc != SIMDR_OK) fprintf(stderr, "open: %s\n", simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
}

/* Reopens without faults, settles the model on what the file holds, and
 * makes it durable (so the next failed sync withdraws nothing older). */
static void reopen(seq *q, const char *where) {
    if (q->s) simdr_close(q->s);
    open_store(q);
    settle_after_reopen(q, where);
    assert_int_equal(simdr_sync(q->s), SIMDR_OK);
    all_synced(q);
}

static uint32_t pick(seq *q, uint32_t n) { return (uint32_t)(tu_rand(&q->rnd) % n); }

static value new_value(seq *q, uint32_t k) {
    uint32_t r = pick(q, 100);
    uint32_t len = r < 2 ? (1u << 20) + 1 : r < 10 ? 70000 + pick(q, 1000) : 1 + pick(q, 3000);
    return (value){k, ++q->next_ver, len};
}

/* ---- one step ---- */

enum { OP_PUT, OP_BATCH, OP_DELETE, OP_DELETE_BATCH, OP_RENAME, OP_STREAM, OP_SYNC,
       OP_COMPACT, OP_REOPEN, OP_KINDS };
static const char *const op_names[OP_KINDS] = {"put",    "batch",  "delete", "delete_batch",
                                               "rename", "stream", "sync",   "compact",
                                               "reopen"};

typedef struct src {
    const uint8_t *all;
    size_t len, at;
} src;
static int64_t read_src(void *ctx, void *buf, size_t cap) {
    src *s = ctx;
    size_t n = s->len - s->at < cap ? s->len - s->at : cap;
    if (n > 100000) n = 100000;
    memcpy(buf, s->all + s->at, n);
    s->at += n;
    return (int64_t)n;
}

/* Runs one operation; fills the writes it would make (keys, values) so the
 * caller can apply them when it is acknowledged. */
static int run_op(seq *q, int kind, uint32_t *keys, value *vals, int *n) {
    char names[8][32];
    *n = 0;
    switch (kind) {
    case OP_PUT:
    case OP_STREAM: {
        uint32_t k = pick(q, KEYS);
        value v = new_value(q, k);
        if (kind == OP_STREAM && v.len < 2) v.len = 2;
        keys[0] = k;
        vals[0] = v;
        *n = 1;
        key_name(names[0], sizeof names[0], k);
        uint8_t *b = bytes_of(v);
        int rc;
        if (kind == OP_PUT) {
            rc = simdr_put(q->s, TU_STR(names[0]), b, v.len, NULL);
        } else {
            src s = {b, v.len, 0};
            rc = simdr_put_stream(q->s, TU_STR(names[0]), read_src, &s, NULL);
        }
        free(b);
        return rc;
    }
    case OP_BATCH: {
        int m = 2 + (int)pick(q, 5);
        simdr_kv kv[8];
        uint8_t *bs[8];
        int mixed = (int)pick(q, 2); /* simdr_write_batch, a third of its items deletes */
        for (int i = 0; i < m; i++) {
            uint32_t k = pick(q, KEYS);
            keys[i] = k;
            key_name(names[i], sizeof names[i], k);
            if (mixed && pick(q, 3) == 0) {
                vals[i] = (value){0, 0, 0};
                bs[i] = NULL;
                kv[i] = (simdr_kv){names[i], strlen(names[i]), NULL, 0};
                continue;
            }
            value v = new_value(q, k);
            if (v.len > 100000) v.len = 5000;
            vals[i] = v;
            bs[i] = bytes_of(v);
            kv[i] = (simdr_kv){names[i], strlen(names[i]), bs[i], v.len};
        }
        *n = m;
        int rc = mixed ? simdr_write_batch(q->s, kv, (size_t)m, NULL)
                       : simdr_put_batch(q->s, kv, (size_t)m, NULL);
        for (int i = 0; i < m; i++) free(bs[i]);
        return rc;
    }
    case OP_DELETE: {
        uint32_t k = pick(q, KEYS);
        keys[0] = k;
        vals[0] = (value){0, 0, 0};
        *n = 1;
        key_name(names[0], sizeof names[0], k);
        int rc = simdr_delete(q->s, TU_STR(names[0]), NULL);
        if (rc == SIMDR_NOTFOUND && q->k[k].cur.ver == 0) {
            *n = 0;
            return SIMDR_OK;
        }
        return rc;
    }
    case OP_DELETE_BATCH: {
        simdr_key ks[4];
        for (int i = 0; i < 4; i++) {
            keys[i] = pick(q, KEYS);
            vals[i] = (value){0, 0, 0};
            key_name(names[i], sizeof names[i], keys[i]);
            ks[i] = (simdr_key){names[i], strlen(names[i])};
        }
        *n = 4;
        return simdr_delete_batch(q->s, ks, 4, NULL, NULL);
    }
    case OP_RENAME: {
        uint32_t a = pick(q, KEYS), b = pick(q, KEYS);
        if (a == b || q->k[a].cur.ver == 0) return SIMDR_OK;
        keys[0] = b;
        vals[0] = q->k[a].cur;
        keys[1] = a;
        vals[1] = (value){0, 0, 0};
        *n = 2;
        key_name(names[0], sizeof names[0], a);
        key_name(names[1], sizeof names[1], b);
        return simdr_rename(q->s, TU_STR(names[0]), TU_STR(names[1]), NULL);
    }
    case OP_SYNC:
        return simdr_sync(q->s);
    case OP_COMPACT:
        return simdr_compact(q->s);
    case OP_REOPEN: {
        int rc = simdr_close(q->s);
        q->s = NULL;
        simdr_options o;
        simdr_options_init(&o);
        o.durability = q->durability;
        if (q->mapped) o.append_mode = SIMDR_APPEND_MAPPED;
        int rc2 = simdr_open(&q->s, q->path, &o);
        if (rc2 != SIMDR_OK) q->s = NULL;
        return rc != SIMDR_OK ? rc : rc2;
    }
    }
    return SIMDR_OK;
}

static void step(seq *q, uint64_t round) {
    int kind = (int)pick(q, 100);
    kind = kind < 30 ? OP_PUT : kind < 45 ? OP_BATCH : kind < 55 ? OP_DELETE
         : kind < 62 ? OP_DELETE_BATCH : kind < 70 ? OP_RENAME : kind < 76 ? OP_STREAM
         : kind < 86 ? OP_SYNC : kind < 94 ? OP_COMPACT : OP_REOPEN;
    uint64_t fault = pick(q, 100) < 45 ? 1 + pick(q, 8) : 0;
    char where[128];
    snprintf(where, sizeof where, "round %llu, %s%s", (unsigned long long)round,
             op_names[kind], fault ? " with a fault" : "");
    uint32_t keys[8];
    value vals[8];
    int n = 0;
    fault_seq_on(fault, 0);
    int rc = run_op(q, kind, keys, vals, &n);
    fault_seq_off();
    int injected = fault_seq_injected_op() >= 0;
    q->ops++;
    q->faults_hit += (uint64_t)injected;
    if (rc == SIMDR_OK) {
        assert_non_null(q->s);
        for (int i = 0; i < n; i++) acked(q, keys[i], vals[i]);
        if (kind == OP_SYNC || kind == OP_COMPACT) all_synced(q);
        if (kind == OP_REOPEN) {
            /* A clean close made everything durable; the open found it. */
            all_synced(q);
        }
        if (round % 25 == 0 || kind == OP_REOPEN || kind == OP_COMPACT)
            expect_exact(q, 1, where);
        else
            expect_keys(q, 1, keys, n, where);
        return;
    }
    if (!injected) fprintf(stderr, "%s: %s without a fault\n", where, simdr_last_error());
    assert_true(injected);
    assert_true(simdr_last_error()[0] != '\0');
    /* Which writes may have landed: the operation's own. */
    for (int i = 0; i < n; i++) note_seen(&q->k[keys[i]], vals[i]);
    if (kind == OP_REOPEN) {
        /* The close's sync or the open failed: like a crash, each key holds
         * one of its recent values (open again without faults if needed). */
        q->failed_stores++;
        if (q->s) {
            settle_after_reopen(q, where);
            assert_int_equal(simdr_sync(q->s), SIMDR_OK);
            all_synced(q);
        } else {
            reopen(q, where);
        }
        return;
    }
    int probe = simdr_sync(q->s);
    if (probe == SIMDR_OK) {
        /* The store went on: the failed operation changed nothing (a sync
         * that goes on failed only its trim of mapped appends' zeros). */
        q->undone++;
        expect_exact(q, 1, where);
        all_synced(q);
        return;
    }
    assert_int_equal(probe, SIMDR_EFAILED);
    q->failed_stores++;
    /* The failed handle serves what the last successful sync left; a
     * compaction fails the store only after its file (synced whole)
     * replaced the store. */
    expect_exact(q, kind == OP_COMPACT ? 1 : 2, where);
    assert_int_equal(simdr_put(q->s, TU_STR("refused"), "x", 1, NULL), SIMDR_EFAILED);
    reopen(q, where);
}

static void run_sequence(int durability, int mapped, uint64_t seed, uint64_t rounds) {
    seq *q = calloc(1, sizeof *q);
    assert_non_null(q);
    q->dir = tu_mkdtemp();
    tu_join(q->path, sizeof q->path, q->dir, "store.bin");
    q->durability = durability;
    q->mapped = mapped;
    q->rnd = seed;
    open_store(q);
    for (uint64_t r = 0; r < rounds; r++) {
        step(q, r);
        if (r % 50 == 49) assert_int_equal(simdr_check(q->s, NULL, NULL, NULL), SIMDR_OK);
    }
    reopen(q, "the end");
    expect_exact(q, 1, "the end");
    if (getenv("SIMDR_TEST_VERBOSE"))
        fprintf(stderr, "%llu operations, %llu faults hit, %llu undone, %llu stores failed\n",
                (unsigned long long)q->ops, (unsigned long long)q->faults_hit,
                (unsigned long long)q->undone, (unsigned long long)q->failed_stores);
    assert_true(q->faults_hit > 0 && q->failed_stores > 0 && q->undone > 0);
    simdr_close(q->s);
    tu_rmtree(q->dir);
    free(q->dir);
    free(q);
}

static uint64_t rounds(void) {
    const char *e = getenv("SIMDR_TEST_SCALE");
    int scale = e ? atoi(e) : 10;
    return scale > 0 && scale < 10 ? 150 : 600;
}

static void sequences_sync_none(void **state) {
    (void)state;
    run_sequence(SIMDR_SYNC_NONE, 0, tu_seed(20261206), rounds());
}
static void sequences_sync_data(void **state) {
    (void)state;
    run_sequence(SIMDR_SYNC_DATA, 0, tu_seed(20261206) + 1, rounds() / 2);
}
static void sequences_mapped(void **state) {
    (void)state;
    run_sequence(SIMDR_SYNC_NONE, 1, tu_seed(20261206) + 2, rounds() / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequences_sync_none),
        cmocka_unit_test(sequences_sync_data),
        cmocka_unit_test(sequences_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
