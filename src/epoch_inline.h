/*
 * epoch_inline.h - the reader's side of grace periods (epoch.c) inline, for
 * the read paths (read.c): a random get is bound by how many gets the
 * processor keeps in flight at once, and every instruction between two gets,
 * a call into epoch.c included, delays the next get's cache misses. Entering
 * a section is then a load and a store of the thread's own counter and two
 * loads of the epoch; the cases that need more (a thread's first read, a
 * shard shared with other threads, no membarrier, an epoch flipped meanwhile)
 * go to epoch.c.
 */
#ifndef SIMDR_EPOCH_INLINE_H
#define SIMDR_EPOCH_INLINE_H

#include "internal.h"

/* Shards [0, SIMDR__OWNED_SHARDS) are owned by one thread each; the rest
 * are shared (locked increments) by threads that found none free. */
#define SIMDR__OWNED_SHARDS (SIMDR__SLOTS - 8u)

/* What a thread needs on every read, in one thread-local block so a read
 * finds it with one address computation. */
typedef struct simdr__reader {
    unsigned shard;   /* UINT32_MAX until the thread's first read (simdr__thread_shard) */
    int fenceless;    /* the shard is this thread's alone and writers run membarrier: entering
                         needs no fence */
    void *scopes;     /* the thread's open read scopes, innermost first (read.c) */
} simdr__reader;

/* Initial-exec: a read must not pay a call to find its thread's variables
 * (the general model's __tls_get_addr); the few bytes come from the static
 * TLS reserve even when the library is loaded with dlopen. */
extern _Thread_local simdr__reader simdr__this_reader __attribute__((tls_model("initial-exec")));

/* The common case of simdr__epoch_enter for the calling thread, no call
 * made: 1 with *shard and *token (pass both to simdr__epoch_leave) when the
 * thread has a shard of its own and needs no fence; 0, nothing changed, when
 * it must go through simdr__epoch_join. */
static inline int simdr__epoch_join_fast(simdr__epoch *e, unsigned *shard, unsigned *token) {
    simdr__reader *r = &simdr__this_reader;
    if (__builtin_expect(!r->fenceless, 0)) return 0; /* also before the first read */
    unsigned sh = r->shard;
    uint64_t ep = atomic_load_explicit(&e->epoch, memory_order_relaxed);
    unsigned parity = (unsigned)(ep & 1);
    _Atomic uint64_t *ctr = &e->shard[sh].active[parity];
    uint64_t n = atomic_load_explicit(ctr, memory_order_relaxed);
    atomic_store_explicit(ctr, n + 1, memory_order_relaxed);
    /* The writer's membarrier orders the store before the load below. */
    atomic_signal_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(&e->epoch, memory_order_acquire) != ep, 0)) {
        /* The writer flipped between the two loads: undo, and let epoch.c
         * retry. */
        atomic_store_explicit(ctr, n, memory_order_release);
        return 0;
    }
    *shard = sh;
    *token = parity;
    return 1;
}

/* simdr__epoch_enter for the calling thread, whose shard goes to *shard
 * (pass it to simdr__epoch_leave). */
static inline unsigned simdr__epoch_join(simdr__epoch *e, unsigned *shard) {
    unsigned token;
    if (__builtin_expect(simdr__epoch_join_fast(e, shard, &token), 1)) return token;
    *shard = simdr__thread_shard();
    return simdr__epoch_enter(e, *shard);
}

/* simdr__epoch_exit, inline. */
static inline void simdr__epoch_leave(simdr__epoch *e, unsigned shard, unsigned token) {
    _Atomic uint64_t *ctr = &e->shard[shard].active[token];
    if (__builtin_expect(shard < SIMDR__OWNED_SHARDS, 1))
        atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) - 1,
                              memory_order_release);
    else
        atomic_fetch_sub_explicit(ctr, 1, memory_order_release);
}

#endif
