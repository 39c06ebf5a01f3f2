/*
 * process_test.c - two processes on one store file.
 *
 * Locking: while one process has the store open for writing, a writable open
 * from another process fails with SIMDR_ELOCKED (with a message) and a
 * read-only open works; the lock goes away with a close and with the death
 * of the holder (SIGKILL).
 *
 * Refresh: a writer process appends (puts, batches, streams of up to 300 KB,
 * overwrites, one compaction that replaces the file) while this process,
 * holding a read-only open, calls simdr_refresh() in a loop. Every value it
 * can read must be complete and self-verifying, a key once seen never goes
 * back to an older generation or disappears, entry handles held across
 * refreshes keep their bytes, and once the writer is done one more refresh
 * shows exactly its final state.
 *
 * Usage: process_test [--seed N] [--scale N] [--mapped | --zeroed] (--mapped: the
 * writers use SIMDR_APPEND_MAPPED, --zeroed SIMDR_APPEND_ZEROED, so the reader
 * refreshes past preallocated zeros).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashutil.h"
#include "simdr.h"

#define NKEYS 64u
#define HELD_MAX 64

typedef struct keystate {
    int present;
    uint64_t gen, len;
} keystate;

static char *dir;
static char path[4200];

/* ---- locking ---- */

static pid_t fork_checked(void) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CU_CHECK(pid >= 0, "fork: %s", strerror(errno));
    return pid;
}

static void wait_ok(pid_t pid, const char *what) {
    int st;
    while (waitpid(pid, &st, 0) < 0) CU_CHECK(errno == EINTR, "waitpid");
    CU_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child failed (status 0x%x)", what, st);
}

/* Options of a writable open in the run's append mode (--mapped, --zeroed). */
static const simdr_options *wopts(void) {
    static simdr_options o;
    cu_options_init(&o);
    return &o;
}

static void locking(void) {
    simdr_store *w = NULL;
    CU_OK(simdr_open(&w, path, wopts()));
    CU_OK(simdr_put(w, "k", 1, "locked value", 12, NULL));

    pid_t pid = fork_checked();
    if (pid == 0) {
        simdr_store *s = NULL;
        CU_RC(simdr_open(&s, path, wopts()), SIMDR_ELOCKED);
        CU_CHECK(strstr(simdr_last_error(), "lock") != NULL, "ELOCKED message: \"%s\"",
                 simdr_last_error());
        simdr_options o;
        cu_options_init(&o);
        o.open_mode = SIMDR_OPEN_EXISTING;
        CU_RC(simdr_open(&s, path, &o), SIMDR_ELOCKED);
        o.open_mode = SIMDR_OPEN_READONLY;
        CU_OK(simdr_open(&s, path, &o));
        char buf[32];
        size_t n = 0;
        CU_OK(simdr_get_copy(s, "k", 1, buf, sizeof buf, &n));
        CU_CHECK(n == 12 && memcmp(buf, "locked value", 12) == 0, "reader sees the value");
        CU_OK(simdr_close(s));
        _exit(0);
    }
    wait_ok(pid, "second writable open while locked");
    CU_OK(simdr_close(w));

    /* Closed: another process may write now. Then it holds the lock and
     * dies by SIGKILL: the lock must die with it. */
    int pfd[2];
    CU_CHECK(pipe(pfd) == 0, "pipe");
    pid = fork_checked();
    if (pid == 0) {
        close(pfd[0]);
        simdr_store *s = NULL;
        CU_OK(simdr_open(&s, path, wopts()));
        CU_OK(simdr_put(s, "k2", 2, "from child", 10, NULL));
        char c = 'r';
        if (write(pfd[1], &c, 1) != 1) _exit(3);
        for (;;) pause();
    }
    close(pfd[1]);
    char c;
    CU_CHECK(read(pfd[0], &c, 1) == 1, "child did not get the lock");
    close(pfd[0]);
    CU_RC(simdr_open(&w, path, wopts()), SIMDR_ELOCKED);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CU_OK(simdr_open(&w, path, wopts()));
    char buf[32];
    size_t n = 0;
    CU_OK(simdr_get_copy(w, "k2", 2, buf, sizeof buf, &n));
    CU_CHECK(n == 10 && memcmp(buf, "from child", 10) == 0, "child's write kept");
    CU_OK(simdr_close(w));
    printf("process_test: locking: second writer refused with SIMDR_ELOCKED, reader allowed, "
           "lock released by close and by SIGKILL\n");
}

/* ---- refresh while another process appends ---- */

typedef struct wop {
    int kind; /* 0 put, 1 batch, 2 stream, 3 compact */
    unsigned n;
    uint32_t key[8];
    uint64_t gen[8], len[8];
} wop;

static void writer_op(uint64_t *rng, uint32_t i, uint32_t nops, wop *o) {
    memset(o, 0, sizeof *o);
    if (i == nops / 2) {
        o->kind = 3;
        return;
    }
    uint64_t r = cu_range(rng, 0, 99);
    o->kind = r < 50 ? 0 : r < 80 ? 1 : 2;
    o->n = o->kind == 1 ? (unsigned)cu_range(rng, 2, 8) : 1;
    uint32_t first = i < NKEYS ? i : (uint32_t)cu_range(rng, 0, NKEYS - 1);
    for (unsigned j = 0; j < o->n; j++) {
        o->key[j] = (first + j) % NKEYS;
        o->gen[j] = ((uint64_t)i << 4) | j;
        o->len[j] = o->kind == 2   ? cu_range(rng, 10000, 300000)
                    : r % 10 == 0 ? cu_range(rng, 20000, 120000)
                                  : cu_range(rng, CU_VALUE_MIN, 3000);
    }
}

static void writer_process(uint64_t seed, uint32_t nops) {
    simdr_store *s = NULL;
    CU_OK(simdr_open(&s, path, wopts()));
    uint64_t rng = seed;
    for (uint32_t i = 0; i < nops; i++) {
        wop o;
        writer_op(&rng, i, nops, &o);
        if (o.kind == 3) {
            CU_OK(simdr_compact(s));
            continue;
        }
        if (o.kind == 2) {
            char key[32];
            size_t kl = cu_key(key, sizeof key, o.key[0]);
            cu_stream st = {.key = o.key[0], .gen = o.gen[0], .len = o.len[0], .rng = i,
                            .max_chunk = 5000, .hash = CU_FNV_INIT};
            CU_OK(simdr_put_stream(s, key, kl, cu_stream_read, &st, NULL));
            continue;
        }
        simdr_kv kv[8];
        char keys[8][32];
        uint8_t *vals[8];
        for (unsigned j = 0; j < o.n; j++) {
            vals[j] = cu_value_new(o.key[j], o.gen[j], o.len[j]);
            kv[j] = (simdr_kv){keys[j], cu_key(keys[j], sizeof keys[j], o.key[j]), vals[j],
                               (size_t)o.len[j]};
        }
        if (o.kind == 0)
            CU_OK(simdr_put(s, kv[0].key, kv[0].key_len, kv[0].value, kv[0].value_len, NULL));
        else
            CU_OK(simdr_put_batch(s, kv, o.n, NULL));
        for (unsigned j = 0; j < o.n; j++) free(vals[j]);
        if (i % 16 == 0) usleep(200); /* let the reader interleave */
    }
    CU_OK(simdr_close(s));
}

static void final_model(uint64_t seed, uint32_t nops, keystate *m) {
    memset(m, 0, sizeof(keystate) * NKEYS);
    uint64_t rng = seed;
    for (uint32_t i = 0; i < nops; i++) {
        wop o;
        writer_op(&rng, i, nops, &o);
        for (unsigned j = 0; j < o.n; j++) m[o.key[j]] = (keystate){1, o.gen[j], o.len[j]};
    }
}

typedef struct held {
    simdr_entry *e;
    uint64_t hash; /* FNV of its bytes when taken */
} held;

static void refresh_while_appending(uint64_t seed, uint32_t nops) {
    /* The file exists before the reader opens it. */
    simdr_store *w = NULL;
    CU_OK(simdr_open(&w, path, wopts()));
    CU_OK(simdr_close(w));

    simdr_options o;
    cu_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    simdr_store *r = NULL;
    CU_OK(simdr_open(&r, path, &o));

    pid_t pid = fork_checked();
    if (pid == 0) {
        writer_process(seed, nops);
        _exit(0);
    }

    uint64_t seen_gen[NKEYS];
    int seen[NKEYS] = {0};
    held h[HELD_MAX];
    unsigned nheld = 0;
    uint64_t refreshes = 0, reads = 0, added = 0, rng = seed ^ 77;
    int writer_done = 0, st = 0;
    for (;;) {
        if (!writer_done && waitpid(pid, &st, WNOHANG) == pid) writer_done = 1;
        uint64_t nnew = 0;
        CU_OK(simdr_refresh(r, &nnew));
        refreshes++;
        added += nnew;
        simdr_iter *it = NULL;
        CU_OK(simdr_iter_open(r, &it));
        const simdr_entry *e;
        int rc;
        uint64_t count = 0;
        while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
            uint32_t vk;
            uint64_t vg;
            const char *why = "";
            CU_CHECK(cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, &vg, &why) == 0,
                     "reader saw an incomplete or foreign value at %llu: %s",
                     (unsigned long long)simdr_entry_offset(e), why);
            CU_OK(simdr_entry_verify(e));
            CU_CHECK(vk < NKEYS, "foreign key %u", vk);
            char key[32];
            size_t kl = cu_key(key, sizeof key, vk);
            CU_EQ_U64(simdr_entry_key_hash(e), simdr_hash_key(key, kl));
            CU_CHECK(!seen[vk] || vg >= seen_gen[vk], "key %u went back from gen %llu to %llu",
                     vk, (unsigned long long)seen_gen[vk], (unsigned long long)vg);
            seen[vk] = 1;
            seen_gen[vk] = vg;
            count++;
            reads++;
            if (nheld < HELD_MAX && cu_range(&rng, 0, 50) == 0) {
                CU_OK(simdr_entry_dup(e, &h[nheld].e));
                h[nheld].hash = cu_fnv(CU_FNV_INIT, simdr_entry_data(e),
                                       (size_t)simdr_entry_size(e));
                nheld++;
            }
        }
        CU_RC(rc, SIMDR_NOTFOUND);
        simdr_iter_close(it);
        uint64_t known = 0;
        for (uint32_t k = 0; k < NKEYS; k++) known += seen[k];
        CU_EQ_U64(count, known); /* no key once seen disappears */
        CU_EQ_U64(simdr_count(r), count);
        if (writer_done) break;
        usleep(500);
    }
    CU_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer process failed (status 0x%x)", st);

    /* After the writer is done, the reader's view is exactly its final state. */
    keystate m[NKEYS];
    final_model(seed, nops, m);
    for (uint32_t k = 0; k < NKEYS; k++) {
        CU_CHECK(seen[k] == m[k].present && (!seen[k] || seen_gen[k] == m[k].gen),
                 "key %u: reader ends at present=%d gen=%llu, writer wrote present=%d gen=%llu",
                 k, seen[k], (unsigned long long)(seen[k] ? seen_gen[k] : 0), m[k].present,
                 (unsigned long long)m[k].gen);
    }
    for (unsigned i = 0; i < nheld; i++) {
        CU_EQ_U64(cu_fnv(CU_FNV_INIT, simdr_entry_data(h[i].e), (size_t)simdr_entry_size(h[i].e)),
                  h[i].hash);
        simdr_entry_release(h[i].e);
    }
    CU_OK(simdr_check(r, NULL, NULL, NULL));
    CU_OK(simdr_close(r));
    printf("process_test: refresh: %u writer operations (one compaction), %llu refreshes, "
           "%llu entries added by refresh, %llu values read and verified, %u handles held "
           "across refreshes\n",
           nops, (unsigned long long)refreshes, (unsigned long long)added,
           (unsigned long long)reads, nheld);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t seed = cu_seed(argc, argv, "process_test");
    cu_parse_mapped(argc, argv);
    int scale = cu_scale(argc, argv);
    dir = cu_mkdtemp("proc");
    snprintf(path, sizeof path, "%s/store.bin", dir);
    locking();
    unlink(path);
    cu_remove_matching(dir, "store.bin");
    uint32_t nops = (uint32_t)cu_scaled(3000, scale, 300);
    refresh_while_appending(seed, nops);
    printf("process_test: PASS\n");
    cu_rmtree(dir);
    free(dir);
    return 0;
}
