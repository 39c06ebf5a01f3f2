/*
 * test_composed.c - every pair of operations run at once: two threads for
 * each side, each doing its kind of operation a bounded number of times on
 * the same durable (SIMDR_SYNC_DATA) store, for every pair of {put, batch,
 * stream, delete, move, compact, sync, check, iterate} (an operation paired
 * with itself included). Two threads a side because some hangs need a
 * writer waiting in group commit behind another (two durable writers and a
 * compaction deadlocked where one writer did not). Each pair runs under
 * a watchdog, so a deadlock fails the test instead of hanging it; after the
 * pair, both stores are reopened and every acknowledged write is checked:
 * each key a thread put holds its value, each key it deleted or moved away is
 * absent here and (moved) present with its value in the other store.
 *
 * Threads write keys of their own, so what each one expects stays exact
 * whatever the other does; what the pair shares is the store: its locks,
 * index, map, views and file. The second side's moves go in the opposite
 * direction (two moves in opposite directions must not deadlock).
 */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_PUT, OP_BATCH, OP_STREAM, OP_DELETE, OP_MOVE, OP_COMPACT, OP_SYNC, OP_CHECK,
          OP_ITERATE, OP_COUNT };
static const char *const op_name[OP_COUNT] = {"put",  "batch",   "stream", "delete", "move",
                                              "compact", "sync", "check",  "iterate"};

#define THREADS 4     /* two for each operation of the pair */
#define ROUNDS 8      /* operations per thread and pair */
#define BATCH 4
#define MAX_KEYS (ROUNDS * BATCH)

typedef struct expect {
    char key[48];
    uint64_t seed;
    size_t len;
    int where; /* 0: absent from both stores, 1: in the first, 2: in the second */
} expect;

typedef struct worker {
    simdr_store *a, *b; /* this thread's source and other store (swapped for thread 1) */
    int id, which_a;    /* which_a: the "where" value of a */
    enum op op;
    int fails;
    const char *failed_what;
    int failed_rc;
    expect keys[MAX_KEYS];
    int nkeys;
} worker;

static void note_fail(worker *w, const char *what, int rc) {
    if (!w->fails++) {
        w->failed_what = what;
        w->failed_rc = rc;
    }
}

static expect *new_key(worker *w, int round, int j) {
    expect *x = &w->keys[w->nkeys++];
    snprintf(x->key, sizeof x->key, "%s-t%d-r%d-%d", op_name[w->op], w->id, round, j);
    x->seed = (uint64_t)w->id << 40 | (uint64_t)w->op << 32 | (uint64_t)(round * BATCH + j);
    x->len = 1 + (size_t)(x->seed * 2654435761u % 3000);
    x->where = 0;
    return x;
}

static int put_value(simdr_store *s, const expect *x) {
    uint8_t buf[3000];
    tu_fill(buf, x->len, x->seed);
    return simdr_put(s, TU_STR(x->key), buf, x->len, NULL);
}

typedef struct stream_src {
    uint64_t seed;
    size_t len, at;
    uint8_t *all;
} stream_src;

static int64_t stream_read(void *ctx, void *buf, size_t cap) {
    stream_src *src = ctx;
    size_t n = src->len - src->at;
    if (n > cap) n = cap;
    if (n > 1000) n = 1000; /* several pieces a value */
    memcpy(buf, src->all + src->at, n);
    src->at += n;
    return (int64_t)n;
}

static int check_visit(void *ctx, const simdr_check_issue *issue) {
    (void)issue;
    ++*(int *)ctx;
    return 0;
}

static void run_round(worker *w, int round) {
    int rc = SIMDR_OK;
    switch (w->op) {
    case OP_PUT: {
        expect *x = new_key(w, round, 0);
        if ((rc = put_value(w->a, x)) != SIMDR_OK) return note_fail(w, "put", rc);
        x->where = w->which_a;
        break;
    }
    case OP_BATCH: {
        uint8_t bufs[BATCH][3000];
        simdr_kv kv[BATCH];
        expect *x[BATCH];
        for (int j = 0; j < BATCH; j++) {
            x[j] = new_key(w, round, j);
            tu_fill(bufs[j], x[j]->len, x[j]->seed);
            kv[j] = (simdr_kv){x[j]->key, strlen(x[j]->key), bufs[j], x[j]->len};
        }
        if ((rc = simdr_put_batch(w->a, kv, BATCH, NULL)) != SIMDR_OK)
            return note_fail(w, "batch", rc);
        for (int j = 0; j < BATCH; j++)
            x[j]->where = w->which_a;
        break;
    }
    case OP_STREAM: {
        expect *x = new_key(w, round, 0);
        x->len = 1500 + (size_t)round * 100; /* pieces of 1000 bytes and a rest */
        stream_src src = {x->seed, x->len, 0, malloc(x->len)};
        tu_fill(src.all, x->len, x->seed);
        rc = simdr_put_stream(w->a, TU_STR(x->key), stream_read, &src, NULL);
        free(src.all);
        if (rc != SIMDR_OK) return note_fail(w, "stream", rc);
        x->where = w->which_a;
        break;
    }
    case OP_DELETE: {
        expect *x = new_key(w, round, 0);
        if ((rc = put_value(w->a, x)) != SIMDR_OK) return note_fail(w, "put to delete", rc);
        x->where = w->which_a;
        if ((rc = simdr_delete(w->a, TU_STR(x->key), NULL)) != SIMDR_OK)
            return note_fail(w, "delete", rc);
        x->where = 0;
        break;
    }
    case OP_MOVE: {
        expect *x = new_key(w, round, 0);
        if ((rc = put_value(w->a, x)) != SIMDR_OK) return note_fail(w, "put to move", rc);
        x->where = w->which_a;
        if ((rc = simdr_move(w->a, TU_STR(x->key), w->b, NULL)) != SIMDR_OK)
            return note_fail(w, "move", rc);
        x->where = 3 - w->which_a;
        break;
    }
    case OP_COMPACT:
        if ((rc = simdr_compact(w->a)) != SIMDR_OK) return note_fail(w, "compact", rc);
        break;
    case OP_SYNC: { /* a write to make durable first: with nothing new, sync returns at once */
        expect *x = new_key(w, round, 0);
        if ((rc = put_value(w->a, x)) != SIMDR_OK) return note_fail(w, "put to sync", rc);
        x->where = w->which_a;
        if ((rc = simdr_sync(w->a)) != SIMDR_OK) return note_fail(w, "sync", rc);
        break;
    }
    case OP_CHECK: {
        int issues = 0;
        /* a live store is not damaged, whatever is written meanwhile */
        rc = simdr_check(w->a, check_visit, &issues, NULL);
        if (rc != SIMDR_OK || issues) return note_fail(w, "check", rc);
        break;
    }
    case OP_ITERATE: {
        simdr_iter *it = NULL;
        if ((rc = simdr_iter_open(w->a, &it)) != SIMDR_OK) return note_fail(w, "iter_open", rc);
        const simdr_entry *e;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK)
            if (simdr_entry_verify(e) != SIMDR_OK) note_fail(w, "iterated entry", SIMDR_OK);
        simdr_iter_close(it);
        if (rc != SIMDR_NOTFOUND) return note_fail(w, "iterate", rc);
        break;
    }
    case OP_COUNT:
        break;
    }
}

static void *worker_main(void *p) {
    worker *w = p;
    for (int r = 0; r < ROUNDS && !w->fails; r++)
        run_round(w, r);
    return NULL;
}

static void expect_key(simdr_store *s, const expect *x, int here) {
    if (!here) {
        tu_expect_absent(s, TU_STR(x->key));
        return;
    }
    uint8_t buf[3000];
    tu_fill(buf, x->len, x->seed);
    tu_expect_value(s, TU_STR(x->key), buf, x->len);
}

static void run_pair(enum op op0, enum op op1) {
    char *dir = tu_mkdtemp();
    char pa[4096], pb[4096];
    tu_join(pa, sizeof pa, dir, "a.bin");
    tu_join(pb, sizeof pb, dir, "b.bin");
    simdr_options o;
    simdr_options_init(&o);
    o.durability = SIMDR_SYNC_DATA; /* writers meet in group commit, and its lock */
    simdr_store *a = NULL, *b = NULL;
    assert_int_equal(simdr_open(&a, pa, &o), SIMDR_OK);
    o.layout = SIMDR_LAYOUT_UNALIGNED;
    assert_int_equal(simdr_open(&b, pb, &o), SIMDR_OK);
    /* something to compact, check and iterate from the start */
    for (int i = 0; i < 20; i++) {
        char k[32];
        snprintf(k, sizeof k, "seed-%d", i);
        tu_put_str(a, k, "first");
        tu_put_str(a, k, "second");
    }
    worker *w = calloc(THREADS, sizeof *w);
    for (int i = 0; i < THREADS; i++) {
        enum op op = i < THREADS / 2 ? op0 : op1;
        w[i] = (worker){.a = a, .b = b, .id = i, .which_a = 1, .op = op};
        if (i >= THREADS / 2 && op == OP_MOVE) { /* the other way round */
            w[i].a = b;
            w[i].b = a;
            w[i].which_a = 2;
        }
    }
    char what[64];
    snprintf(what, sizeof what, "the pair %s + %s", op_name[op0], op_name[op1]);
    tu_watchdog_start(120, what);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    tu_watchdog_stop();
    for (int i = 0; i < THREADS; i++)
        if (w[i].fails)
            fail_msg("%s: thread %d's %s failed: %s (%s)", what, i, w[i].failed_what,
                     simdr_strerror(w[i].failed_rc), simdr_last_error());
    assert_int_equal(simdr_close(a), SIMDR_OK);
    assert_int_equal(simdr_close(b), SIMDR_OK);
    a = tu_open(pa, SIMDR_OPEN_READONLY, 0);
    b = tu_open(pb, SIMDR_OPEN_READONLY, 0);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < w[i].nkeys; k++) {
            expect_key(a, &w[i].keys[k], w[i].keys[k].where == 1);
            expect_key(b, &w[i].keys[k], w[i].keys[k].where == 2);
        }
    for (int i = 0; i < 20; i++) {
        char k[32];
        snprintf(k, sizeof k, "seed-%d", i);
        tu_expect_str(a, k, "second");
    }
    assert_int_equal(simdr_check(a, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_check(b, NULL, NULL, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(a), SIMDR_OK);
    assert_int_equal(simdr_close(b), SIMDR_OK);
    free(w);
    tu_rmtree(dir);
    free(dir);
}

static void test_every_pair(void **state) {
    (void)state;
    for (int i = 0; i < OP_COUNT; i++)
        for (int j = i; j < OP_COUNT; j++)
            run_pair((enum op)i, (enum op)j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_pair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
