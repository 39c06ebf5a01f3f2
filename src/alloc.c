/*
 * alloc.c - large zeroed allocations (index tables, open-time scratch).
 *
 * Arrays of 64 KiB and more are mapped directly; from 2 MiB on they are
 * placed on a 2 MiB boundary and marked for transparent huge pages, so a
 * 12 MB index costs a handful of page faults instead of thousands and random
 * lookups miss the TLB far less. Small arrays use calloc.
 *
 * Index tables are touched all over as soon as they exist (a growth fills the
 * new table at once), so their pages are populated in one call rather than
 * faulted in one by one: a page fault is costly, most of all on virtual
 * machines (docs/BENCHMARKS.md, "Machine"). A table sized from a caller's
 * hint is the exception (simdr__alloc_zeroed_sparse): it may stay mostly
 * empty, so beyond SPARSE_EAGER_MAX it is only reserved, with small pages,
 * since a huge page would cost 2 MiB for each key landing in it. Up to that
 * size it is populated as any other: a bounded cost, and a bulk load into
 * it then runs as it does after a growth, without faults or compaction for
 * huge pages on its way.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define MAPPED (UINT64_C(64) << 10)
#define HUGE_PAGE (UINT64_C(2) << 20)
/* The largest sparse array populated up front (a 1M-key index is 12 MB). */
#define SPARSE_EAGER_MAX (UINT64_C(32) << 20)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void *map_zeroed(size_t bytes, int huge) {
    if (bytes < HUGE_PAGE) {
        void *p = simdr__io.mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    /* Over-map by one huge page and keep the aligned part, so every whole
     * 2 MiB stretch of the array can be one huge page. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t keep = (bytes + page - 1) / page * page;
    size_t span = keep + HUGE_PAGE;
    uint8_t *p = simdr__io.mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (aligned > p) munmap(p, (size_t)(aligned - p));
    if (aligned + keep < p + span) munmap(aligned + keep, (size_t)(p + span - (aligned + keep)));
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
    /* NOHUGEPAGE too, for kernels whose huge pages are "always". */
    madvise(aligned, keep, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
    (void)huge;
#endif
    return aligned;
}

void *simdr__alloc_zeroed(size_t bytes) {
    if (bytes < MAPPED) return calloc(1, bytes ? bytes : 1);
    return map_zeroed(bytes, 1);
}

void *simdr__alloc_zeroed_sparse(size_t bytes) {
    if (bytes <= SPARSE_EAGER_MAX) return simdr__alloc_zeroed_populated(bytes);
    return map_zeroed(bytes, 0);
}

void *simdr__alloc_zeroed_populated(size_t bytes) {
    void *p = simdr__alloc_zeroed(bytes);
    /* Failure (a kernel before 5.14) only means the pages fault in later. */
    if (p && bytes >= MAPPED) madvise(p, bytes, MADV_POPULATE_WRITE);
    return p;
}

void simdr__free_big(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < MAPPED)
        free(p);
    else
        munmap(p, bytes);
}
