/*
 * kill_compact_test.c - kill -9 of a process whose writer threads run while
 * other threads compact without pause must lose nothing acknowledged and
 * resurrect no delete.
 *
 * Each round a child opens the store and starts two writer threads (each
 * owning half of the keys: puts of 8 bytes to 3 KiB, now and then 40 KiB,
 * and deletes) and a thread that calls simdr_compact in a loop, so kills land
 * in every stage of the online compaction: the copy, the catch-up rounds,
 * the locked finish, the rename and the switch. Before a write a writer
 * records the version it is about to write for its key in memory shared with
 * the parent, and after the call returns the version acknowledged. The parent
 * SIGKILLs the child after a random delay, reopens the store and checks, for
 * every key: its value is the acknowledged version, or the one in flight; a
 * key whose acknowledged write is a delete is absent unless the write in
 * flight is a put; simdr_check finds the file sound. Rounds alternate
 * between pwrite and mapped appends, and durable and non-durable writers.
 *
 * Usage: kill_compact_test [--seed N] [--rounds N] [--scale N]; the kill
 * timing and the thread interleaving are the machine's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashutil.h"

#define KEYS 2000
#define DELETED UINT64_C(1) /* the low bit of a version: the write is a delete */

/* Versions are (n << 1) | DELETED-bit, n counted by each writer from 1. */
typedef struct shared_state {
    _Atomic uint64_t acked[KEYS];
    _Atomic uint64_t inflight[KEYS];
} shared_state;

static shared_state *sh;
static simdr_store *child_store;
static uint64_t round_seed;

static void key_of(char *buf, size_t cap, int k) { snprintf(buf, cap, "kc-%d", k); }

static void *writer_main(void *arg) {
    int half = (int)(intptr_t)arg;
    uint64_t r = round_seed ^ (uint64_t)(half + 1) * 0x9E3779B97F4A7C15ull;
    static uint8_t bufs[2][40 * 1024];
    uint8_t *buf = bufs[half];
    for (uint64_t n = 1;; n++) {
        uint64_t x = cu_rand(&r);
        int k = half * (KEYS / 2) + (int)(x % (KEYS / 2));
        int del = (x >> 20) % 5 == 0;
        uint64_t ver = n << 1 | (del ? DELETED : 0);
        char key[32];
        key_of(key, sizeof key, k);
        atomic_store(&sh->inflight[k], ver);
        int rc;
        if (del) {
            rc = simdr_delete(child_store, key, strlen(key), NULL);
            if (rc == SIMDR_NOTFOUND) rc = SIMDR_OK;
        } else {
            size_t len = 8 + (size_t)((x >> 30) % 3000);
            if ((x >> 12) % 300 == 0) len = sizeof bufs[0];
            memset(buf, (int)(ver & 0x7f) | 1, len);
            memcpy(buf, &ver, sizeof ver);
            rc = simdr_put(child_store, key, strlen(key), buf, len, NULL);
        }
        if (rc != SIMDR_OK) {
            fprintf(stderr, "child: write failed: %s\n", simdr_last_error());
            _exit(3);
        }
        atomic_store(&sh->acked[k], ver);
    }
    return NULL;
}

static void *compactor_main(void *arg) {
    (void)arg;
    for (;;) {
        if (simdr_compact(child_store) != SIMDR_OK) {
            fprintf(stderr, "child: compaction failed: %s\n", simdr_last_error());
            _exit(4);
        }
    }
    return NULL;
}

static void options_for(simdr_options *o, int round) {
    simdr_options_init(o);
    o->append_mode = round % 2 ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    o->durability = round % 4 >= 2 ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
}

static _Noreturn void run_child(const char *path, int round) {
    simdr_options o;
    options_for(&o, round);
    if (simdr_open(&child_store, path, &o) != SIMDR_OK) {
        fprintf(stderr, "child: open failed: %s\n", simdr_last_error());
        _exit(2);
    }
    pthread_t t[3];
    pthread_create(&t[0], NULL, writer_main, (void *)(intptr_t)0);
    pthread_create(&t[1], NULL, writer_main, (void *)(intptr_t)1);
    pthread_create(&t[2], NULL, compactor_main, NULL);
    for (;;) pause();
}

/* Checks every key after the kill and makes what the store holds the next
 * round's acknowledged state. */
static void check_round(const char *path, int round) {
    simdr_options o;
    options_for(&o, round);
    o.open_mode = SIMDR_OPEN_EXISTING;
    simdr_store *s = NULL;
    CU_OK(simdr_open(&s, path, &o));
    for (int k = 0; k < KEYS; k++) {
        uint64_t acked = atomic_load(&sh->acked[k]), inflight = atomic_load(&sh->inflight[k]);
        char key[32];
        key_of(key, sizeof key, k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, key, strlen(key), &e);
        uint64_t got = 0;
        if (rc == SIMDR_OK) {
            CU_CHECK(simdr_entry_size(e) >= sizeof got, "key %d: a value of %llu bytes", k,
                     (unsigned long long)simdr_entry_size(e));
            memcpy(&got, simdr_entry_data(e), sizeof got);
            simdr_entry_release(e);
            CU_CHECK(got == acked || got == inflight,
                     "round %d key %d holds version %llx; acknowledged %llx, in flight %llx",
                     round, k, (unsigned long long)got, (unsigned long long)acked,
                     (unsigned long long)inflight);
        } else {
            CU_RC(rc, SIMDR_NOTFOUND);
            CU_CHECK(acked == 0 || (acked & DELETED) || (inflight != acked && (inflight & DELETED)),
                     "round %d key %d is absent; acknowledged %llx, in flight %llx", round, k,
                     (unsigned long long)acked, (unsigned long long)inflight);
        }
        uint64_t now = rc == SIMDR_OK ? got : (acked ? acked | DELETED : 0);
        atomic_store(&sh->acked[k], now);
        atomic_store(&sh->inflight[k], now);
    }
    CU_OK(simdr_check(s, NULL, NULL, NULL));
    CU_OK(simdr_close(s));
}

int main(int argc, char **argv) {
    uint64_t seed = cu_seed(argc, argv, "kill_compact_test");
    int scale = cu_scale(argc, argv);
    int rounds = (int)cu_scaled(40, scale, 4);
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CU_CHECK(sh != MAP_FAILED, "mmap of the shared state");
    char *dir = cu_mkdtemp("kill_compact");
    char path[4200];
    snprintf(path, sizeof path, "%s/store.bin", dir);
    uint64_t r = seed;
    for (int round = 0; round < rounds; round++) {
        round_seed = cu_rand(&r);
        pid_t pid = fork();
        CU_CHECK(pid >= 0, "fork");
        if (pid == 0) run_child(path, round);
        /* Long enough for several compactions, short enough for many rounds. */
        usleep((useconds_t)cu_range(&r, 50000, 400000));
        kill(pid, SIGKILL);
        int st = 0;
        CU_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
        CU_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                 "round %d: the child ended by itself (status %d)", round,
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        check_round(path, round);
    }
    printf("kill_compact_test: %d rounds, every acknowledged write kept\n", rounds);
    cu_rmtree(dir);
    free(dir);
    return 0;
}
