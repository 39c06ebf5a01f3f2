/*
 * alloc.c - large zeroed allocations (index tables, open-time scratch).
 *
 * Arrays of many megabytes are mapped directly and marked for transparent
 * huge pages: a 12 MB index then costs a handful of page faults instead of
 * thousands (which dominate open time on virtual machines) and random
 * lookups miss the TLB far less. Small arrays use calloc.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

#define BIG (UINT64_C(2) << 20)

void *simdr__alloc_zeroed(size_t bytes) {
    if (bytes < BIG) return calloc(1, bytes ? bytes : 1);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void simdr__free_big(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < BIG)
        free(p);
    else
        munmap(p, bytes);
}
