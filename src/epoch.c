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
 * Why the two fences: the reader stores (its counter) and then loads (the
 * epoch, then the view pointer); the writer stores (the new view, the epoch)
 * and then loads (the counters). That is the store-buffering pattern: unless
 * something orders each side's store before its load, both loads may return
 * the old values, and the writer frees a view the reader is about to use.
 * Sequentially consistent operations alone do not order the release store of
 * the view or the acquire loads around them, and x86 only happens to give the
 * order because its locked add is a full barrier. In the C11 model a
 * seq_cst fence on each side (the reader's after its increment, the
 * writer's before its scan) does: the two fences are ordered one way or the
 * other, and whichever comes second sees the other side's store. The
 * reader's fence is one locked instruction on x86 and adds no shared write.
 */
#include <sched.h>

#include "internal.h"

static _Atomic unsigned next_thread_shard;
static _Thread_local unsigned thread_shard = UINT32_MAX;

unsigned simdr__thread_shard(void) {
    if (thread_shard == UINT32_MAX)
        thread_shard = atomic_fetch_add_explicit(&next_thread_shard, 1, memory_order_relaxed) %
                       SIMDR__SLOTS;
    return thread_shard;
}

unsigned simdr__epoch_enter(simdr__epoch *e, unsigned shard) {
    for (;;) {
        uint64_t ep = atomic_load_explicit(&e->epoch, memory_order_seq_cst);
        unsigned parity = (unsigned)(ep & 1);
        atomic_fetch_add_explicit(&e->shard[shard].active[parity], 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst); /* pairs with synchronize's fence */
        if (atomic_load_explicit(&e->epoch, memory_order_seq_cst) == ep) return parity;
        /* The writer flipped between our two loads: it may already be past
         * our shard, so this registration does not protect us. Retry. */
        atomic_fetch_sub_explicit(&e->shard[shard].active[parity], 1, memory_order_release);
    }
}

void simdr__epoch_exit(simdr__epoch *e, unsigned shard, unsigned token) {
    atomic_fetch_sub_explicit(&e->shard[shard].active[token], 1, memory_order_release);
}

void simdr__epoch_synchronize(simdr__epoch *e) {
    uint64_t ep = atomic_fetch_add_explicit(&e->epoch, 1, memory_order_seq_cst);
    unsigned parity = (unsigned)(ep & 1);
    /* Orders the new view and the flip before the scan (pairs with enter's). */
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned i = 0; i < SIMDR__SLOTS; i++) {
        unsigned spins = 0;
        while (atomic_load_explicit(&e->shard[i].active[parity], memory_order_acquire) != 0) {
            if (++spins > 64) sched_yield();
        }
    }
}
