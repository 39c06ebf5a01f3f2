/*
 * iothreads.c - the I/O threads of simdr-server (--threads N): N-1 worker
 * threads that, together with the event-loop thread, run one per-client step
 * (reading a socket into its query buffer, or writing its replies out) for
 * every client of a turn. Commands still run on the event-loop thread alone,
 * so MULTI/WATCH, the per-turn batch append, replication and expiry keep
 * their single-threaded semantics; only system calls and copies move.
 *
 * A job is a list of clients. The loop thread opens it, wakes sleeping
 * workers and then claims clients itself from a shared counter, like the
 * workers do: a worker that is slow to be scheduled (two cores, a benchmark
 * beside the server) costs nothing, the loop thread simply takes its share.
 * The loop thread returns once every claimed client is done; a worker never
 * touches a client outside a job, and a client is in one job at a time, so
 * the per-client state needs no lock. Idle workers spin briefly (the next
 * turn usually follows within microseconds) and then sleep on a futex.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

/* How long a worker spins for the next job before it sleeps, and the loop
 * thread for a worker's last client before it sleeps: about one turn of a
 * busy loop. Longer spinning takes a core from whatever else runs (with two
 * cores: the clients). */
#define WORKER_SPIN_NS 20000
#define LOOP_SPIN_NS 50000

static struct {
    int nworkers;
    pthread_t *tids;
    /* The open job: written by the loop thread only while no worker is
     * attached and the job is closed, read by workers only while attached
     * to an open job. */
    io_job_fn fn;
    client **items;
    size_t n;
    _Atomic size_t next;       /* next item to claim */
    _Atomic uint32_t finished; /* items done (futex word of the loop thread) */
    _Atomic uint32_t gen;      /* bumped per job (futex word of the workers) */
    _Atomic int open;
    _Atomic int attached;      /* workers inside a job */
    _Atomic int sleepers;      /* workers asleep on gen */
    _Atomic int loop_waiting;  /* the loop thread asleep on finished */
    _Atomic int stop;
} io;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spin-wait bookkeeping: 1 while the caller may go on spinning. */
typedef struct spinner {
    unsigned n;
    uint64_t until;
} spinner;

static int spin_more(spinner *s, uint64_t budget_ns) {
    cpu_relax();
    if (++s->n % 16) return 1; /* the clock is read every 16 pauses */
    uint64_t now = mono_ns();
    if (!s->until) s->until = now + budget_ns;
    return now < s->until;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int n) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Claims and runs items of the open job; returns how many it ran. */
static uint32_t run_claims(int slot) {
    uint32_t done = 0;
    size_t i;
    while ((i = atomic_fetch_add(&io.next, 1)) < io.n) {
        io.fn(io.items[i], slot);
        done++;
    }
    return done;
}

static void *worker_main(void *arg) {
    int slot = (int)(intptr_t)arg;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        spinner spin = {0, 0};
        while ((g = atomic_load(&io.gen)) == seen && !atomic_load(&io.stop)) {
            if (spin_more(&spin, WORKER_SPIN_NS)) continue;
            atomic_fetch_add(&io.sleepers, 1);
            /* Checked after counting itself a sleeper: the loop thread bumps
             * gen before it reads sleepers, so one of the two sees the other. */
            if (atomic_load(&io.gen) == seen && !atomic_load(&io.stop)) futex_wait(&io.gen, seen);
            atomic_fetch_sub(&io.sleepers, 1);
            spin = (spinner){0, 0};
        }
        if (atomic_load(&io.stop)) return NULL;
        seen = g;
        atomic_fetch_add(&io.attached, 1);
        if (atomic_load(&io.open)) {
            uint32_t done = run_claims(slot);
            if (done) {
                atomic_fetch_add(&io.finished, done);
                if (atomic_load(&io.loop_waiting)) futex_wake(&io.finished, 1);
            }
        }
        atomic_fetch_sub(&io.attached, 1);
    }
}

int iothreads_start(int threads) {
    if (threads <= 1) return 0;
    io.tids = calloc((size_t)threads - 1, sizeof *io.tids);
    if (!io.tids) return -1;
    /* Signals (SIGTERM, SIGINT) stay with the event-loop thread: the workers
     * start with all of them blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (int i = 0; i < threads - 1 && !rc; i++) {
        if (pthread_create(&io.tids[i], NULL, worker_main, (void *)(intptr_t)(i + 1)) != 0)
            rc = -1;
        else
            io.nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) iothreads_stop();
    return rc;
}

void iothreads_stop(void) {
    if (!io.tids) return;
    atomic_store(&io.stop, 1);
    atomic_fetch_add(&io.gen, 1);
    futex_wake(&io.gen, INT_MAX);
    for (int i = 0; i < io.nworkers; i++) pthread_join(io.tids[i], NULL);
    free(io.tids);
    io.tids = NULL;
    io.nworkers = 0;
}

int iothreads_workers(void) { return io.nworkers; }

int iothreads_run(io_job_fn fn, client **items, size_t n) {
    if (io.nworkers == 0 || n < (size_t)srv.cfg.io_fanout_min || n > UINT32_MAX) {
        for (size_t i = 0; i < n; i++) fn(items[i], 0);
        return 0;
    }
    /* A worker of the previous job may still be on its way out. */
    spinner spin = {0, 0};
    while (atomic_load(&io.attached))
        if (!spin_more(&spin, LOOP_SPIN_NS)) sched_yield();
    io.fn = fn;
    io.items = items;
    io.n = n;
    atomic_store(&io.next, 0);
    atomic_store(&io.finished, 0);
    atomic_store(&io.open, 1);
    atomic_fetch_add(&io.gen, 1);
    if (atomic_load(&io.sleepers)) futex_wake(&io.gen, INT_MAX);
    /* Tests only: a worker has to take the first client, so a test can see
     * the workers' share without depending on the scheduler. */
    spin = (spinner){0, 0};
    while (srv.cfg.io_worker_first && atomic_load(&io.next) == 0)
        if (!spin_more(&spin, LOOP_SPIN_NS)) sched_yield();
    uint32_t done = run_claims(0);
    atomic_fetch_add(&io.finished, done);
    uint32_t f;
    spin = (spinner){0, 0};
    while ((f = atomic_load(&io.finished)) != (uint32_t)n) {
        if (spin_more(&spin, LOOP_SPIN_NS)) continue;
        /* A worker holds a claimed client: sleep until it reports. The
         * worker reads loop_waiting after adding to finished, so either it
         * sees the flag or the futex sees the new count. */
        atomic_store(&io.loop_waiting, 1);
        if (atomic_load(&io.finished) == f) futex_wait(&io.finished, f);
        atomic_store(&io.loop_waiting, 0);
    }
    atomic_store(&io.open, 0);
    return 1;
}
