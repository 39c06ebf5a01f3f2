/*
 * epoch.c - grace periods that let readers run without locks while the writer
 * replaces shared structures (the view, an outgrown index table).
 *
 * A reader increments a counter in its own cache-line shard for the current
 * epoch parity, re-checks the epoch, works, and decrements. The writer flips
 * the epoch and waits for the old parity's counters to drain; after that no
 * reader can still hold a pointer it loaded before the flip. Readers never
 * wait, and no cache line is shared between threads on the read path (as
 * long as threads map to distinct shards).
 *
 * Why the fences: the reader stores (its counter) and then loads (the
 * epoch, then the view pointer); the writer stores (the new view, the epoch)
 * and then loads (the counters). That is the store-buffering pattern: unless
 * something orders each side's store before its load, both loads may return
 * the old values, and the writer frees a view the reader is about to use.
 * In the C11 model a seq_cst fence on each side (the reader's after its
 * increment, the writer's before its scan) orders them.
 *
 * A fence on the reader's side is a full barrier on every read, though: the
 * processor may not start the next lookup's loads before the last one's
 * finished, so consecutive reads cannot overlap their cache misses, which
 * made a random get several times the cost of its misses. So the reader's
 * side is made free where the system allows (the asymmetric barrier of
 * user-space RCU):
 * - A thread owns a shard alone (OWNED_SHARDS of them, handed out at a
 *   thread's first read and given back when it exits), so it registers with
 *   a plain load and store of its counter, no locked instruction.
 * - The writer, instead of the reader, pays for the order: after flipping the
 *   epoch it asks the kernel (membarrier, private expedited) to run a full
 *   barrier on every thread of the process that is running. A reader that
 *   registered before that point is seen by the scan; one that registers
 *   after it sees the new epoch and view. The reader's side then needs only
 *   to keep the compiler from moving its loads above its store.
 * Without membarrier (old kernel, a sandbox refusing it, ThreadSanitizer,
 * which does not model it), or for a thread beyond the owned shards (it
 * shares one of the last shards with locked increments), the reader takes
 * the seq_cst fence as before. Writers synchronize only when they replace a
 * view (map or index growth, compaction, refresh), so the system call costs
 * them little.
 */
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/membarrier.h>
#endif

#include "epoch_inline.h"

#define OWNED_SHARDS SIMDR__OWNED_SHARDS

#if defined(__SANITIZE_THREAD__)
#define SIMDR__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMDR__TSAN 1
#endif
#endif

static _Atomic uint64_t owned_mask;  /* bit i: shard i has an owner */
static _Atomic unsigned next_shared_shard;
_Thread_local simdr__reader simdr__this_reader
    __attribute__((tls_model("initial-exec"))) = {UINT32_MAX, 0, NULL};
static pthread_key_t shard_key;
static int asymmetric; /* 1: writers run membarrier, owning readers skip the fence */
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;

static void release_shard(void *arg) {
    unsigned shard = (unsigned)(uintptr_t)arg - 1;
    atomic_fetch_and_explicit(&owned_mask, ~(UINT64_C(1) << shard), memory_order_release);
}

static void setup(void) {
    int key_ok = pthread_key_create(&shard_key, release_shard) == 0;
    asymmetric = 0;
#if defined(__linux__) && defined(SYS_membarrier) && !defined(SIMDR__TSAN)
    /* Registration is per process and must succeed before the command may
     * be used; both fail cleanly where the kernel lacks them. */
    if (key_ok &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        asymmetric = 1;
#endif
    /* Without a key no owned shard could be given back at thread exit:
     * every thread then shares. */
    if (!key_ok) atomic_store(&owned_mask, ~UINT64_C(0));
}

/* A full barrier on every running thread of the process. Registration was
 * checked at setup; should the expedited command fail later (a process
 * forked from the one that registered), it registers again, and failing
 * that takes the slow global command, which waits for every CPU. */
static void process_barrier(void) {
#if defined(__linux__) && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
#endif
}

/* Called once per thread: an owned shard if one is free, else a shared one. */
static unsigned assign_shard(void) {
    pthread_once(&setup_once, setup);
    uint64_t mask = atomic_load_explicit(&owned_mask, memory_order_relaxed);
    for (;;) {
        uint64_t free_bits = ~mask & ((UINT64_C(1) << OWNED_SHARDS) - 1);
        if (!free_bits) break;
        unsigned shard = (unsigned)__builtin_ctzll(free_bits);
        if (atomic_compare_exchange_weak_explicit(&owned_mask, &mask,
                                                  mask | (UINT64_C(1) << shard),
                                                  memory_order_acquire, memory_order_relaxed)) {
            if (pthread_setspecific(shard_key, (void *)(uintptr_t)(shard + 1)) != 0) {
                release_shard((void *)(uintptr_t)(shard + 1));
                break;
            }
            return shard;
        }
    }
    return OWNED_SHARDS + atomic_fetch_add_explicit(&next_shared_shard, 1, memory_order_relaxed) %
                              (SIMDR__SLOTS - OWNED_SHARDS);
}

unsigned simdr__thread_shard(void) {
    simdr__reader *r = &simdr__this_reader;
    if (r->shard == UINT32_MAX) {
        unsigned shard = assign_shard(); /* runs setup, which sets asymmetric */
        r->fenceless = shard < OWNED_SHARDS && asymmetric;
        r->shard = shard;
    }
    return r->shard;
}

unsigned simdr__epoch_enter(simdr__epoch *e, unsigned shard) {
    /* Callers pass simdr__thread_shard(): a shard below OWNED_SHARDS is then
     * this thread's alone. */
    int owned = shard < OWNED_SHARDS;
    for (;;) {
        uint64_t ep = atomic_load_explicit(&e->epoch, memory_order_relaxed);
        unsigned parity = (unsigned)(ep & 1);
        _Atomic uint64_t *ctr = &e->shard[shard].active[parity];
        if (owned)
            atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
        else
            atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
        if (owned && asymmetric)
            atomic_signal_fence(memory_order_seq_cst); /* the writer's membarrier orders it */
        else
            atomic_thread_fence(memory_order_seq_cst); /* pairs with synchronize's fence */
        if (atomic_load_explicit(&e->epoch, memory_order_acquire) == ep) return parity;
        /* The writer flipped between our two loads: it may already be past
         * our shard, so this registration does not protect us. Retry. */
        simdr__epoch_exit(e, shard, parity);
    }
}

void simdr__epoch_exit(simdr__epoch *e, unsigned shard, unsigned token) {
    _Atomic uint64_t *ctr = &e->shard[shard].active[token];
    if (shard < OWNED_SHARDS)
        atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) - 1,
                              memory_order_release);
    else
        atomic_fetch_sub_explicit(ctr, 1, memory_order_release);
}

void simdr__epoch_synchronize(simdr__epoch *e) {
    uint64_t ep = atomic_fetch_add_explicit(&e->epoch, 1, memory_order_seq_cst);
    unsigned parity = (unsigned)(ep & 1);
    /* Orders the new view and the flip before the scan: on this side
     * (pairs with enter's fence), and, with membarrier, on every running
     * thread, standing in for the fence owning readers skip. */
    atomic_thread_fence(memory_order_seq_cst);
    pthread_once(&setup_once, setup);
    if (asymmetric) process_barrier();
    for (unsigned i = 0; i < SIMDR__SLOTS; i++) {
        unsigned spins = 0;
        while (atomic_load_explicit(&e->shard[i].active[parity], memory_order_acquire) != 0) {
            if (++spins > 64) sched_yield();
        }
    }
}
