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
        atomic_fetch_add_explicit(&e->shard[shard].active[parity], 1, memory_order_seq_cst);
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
    for (unsigned i = 0; i < SIMDR__SLOTS; i++) {
        unsigned spins = 0;
        while (atomic_load_explicit(&e->shard[i].active[parity], memory_order_acquire) != 0) {
            if (++spins > 64) sched_yield();
        }
    }
}
