/*
 * sort.c - ascending sort of file offsets (arrays of uint64_t), shared by the
 * iterator, the parallel visit and compaction, which all turn the index's
 * hash-ordered offsets into file order.
 *
 * Offsets are bounded by the file size, so a radix sort over only the bits
 * the largest offset uses beats a comparison sort several times. It runs in
 * two stages so that only one pass streams over the whole array: the top
 * bits scatter the offsets into buckets of a few thousand (tens of KB; a few
 * hundred scatter streams, which the caches absorb better than thousands),
 * and each bucket is then finished on its low bits by an LSD radix sort
 * inside the L2 cache. The iterator fills the buckets itself while reading
 * the index and calls only the second stage.
 *
 * Neither stage can fail: when a scratch buffer cannot be allocated, an
 * in-place heap sort does the work instead (slower, no memory).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SMALL 32u          /* at most this many: insertion sort */
#define MAX_TOP_BITS 16u   /* first stage: at most 65536 buckets */
#define BUCKET_TARGET 4096u /* offsets per bucket: 32 KB, sorted inside L2 */
#define LOW_DIGIT_BITS 8u  /* digits of the in-bucket passes: 2 KB of counters */

static void insertion_sort(uint64_t *v, uint64_t n) {
    for (uint64_t i = 1; i < n; i++) {
        uint64_t x = v[i], j = i;
        for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
}

static void sift_down(uint64_t *v, uint64_t root, uint64_t n) {
    for (;;) {
        uint64_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && v[child + 1] > v[child]) child++;
        if (v[root] >= v[child]) return;
        uint64_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void heap_sort(uint64_t *v, uint64_t n) {
    for (uint64_t i = n / 2; i-- > 0;) sift_down(v, i, n);
    for (uint64_t end = n; end-- > 1;) {
        uint64_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

/* LSD radix sort of v[0..n) on bits [0, bits), ping-ponging with tmp (room
 * for n); the result ends up in v. */
static void lsd_sort(uint64_t *v, uint64_t *tmp, uint64_t n, unsigned bits) {
    if (n <= SMALL || bits == 0) {
        insertion_sort(v, n);
        return;
    }
    unsigned passes = (bits + LOW_DIGIT_BITS - 1) / LOW_DIGIT_BITS;
    unsigned digit = (bits + passes - 1) / passes;
    uint64_t mask = (UINT64_C(1) << digit) - 1;
    uint64_t *src = v, *dst = tmp;
    for (unsigned p = 0; p < passes; p++) {
        unsigned shift = p * digit;
        uint64_t count[1u << LOW_DIGIT_BITS] = {0};
        for (uint64_t i = 0; i < n; i++) count[(src[i] >> shift) & mask]++;
        /* A digit every element shares would only copy the array. */
        if (count[(src[0] >> shift) & mask] == n) continue;
        uint64_t sum = 0;
        for (uint64_t b = 0; b <= mask; b++) {
            uint64_t k = count[b];
            count[b] = sum;
            sum += k;
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t x = src[i];
            dst[count[(x >> shift) & mask]++] = x;
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) memcpy(v, src, (size_t)n * sizeof *v);
}

unsigned simdr__sort_top_bits(uint64_t n, unsigned bits) {
    unsigned top = 0;
    while (top < MAX_TOP_BITS && top < bits && (n >> top) > BUCKET_TARGET) top++;
    return top;
}

void simdr__sort_buckets(uint64_t *v, const uint64_t *bucket_end, uint64_t buckets,
                         unsigned low_bits) {
    uint64_t largest = 0, begin = 0;
    for (uint64_t b = 0; b < buckets; b++) {
        if (bucket_end[b] - begin > largest) largest = bucket_end[b] - begin;
        begin = bucket_end[b];
    }
    uint64_t *tmp = NULL;
    if (largest > SMALL) {
        tmp = malloc((size_t)largest * sizeof *tmp);
        if (!tmp) {
            heap_sort(v, begin);
            return;
        }
    }
    begin = 0;
    for (uint64_t b = 0; b < buckets; b++) {
        lsd_sort(v + begin, tmp, bucket_end[b] - begin, low_bits);
        begin = bucket_end[b];
    }
    free(tmp);
}

void simdr__sort_offsets(uint64_t *v, uint64_t n) {
    if (n <= SMALL) {
        insertion_sort(v, n);
        return;
    }
    uint64_t any_bits = 0;
    for (uint64_t i = 0; i < n; i++) any_bits |= v[i];
    if (any_bits == 0) return;
    unsigned bits = 64u - (unsigned)__builtin_clzll(any_bits);
    unsigned top = simdr__sort_top_bits(n, bits), low = bits - top;
    uint64_t buckets = UINT64_C(1) << top;
    if (top == 0) {
        /* One bucket (and x >> 64 would be undefined for 64-bit offsets). */
        uint64_t *tmp = malloc((size_t)n * sizeof *tmp);
        if (!tmp) {
            heap_sort(v, n);
            return;
        }
        lsd_sort(v, tmp, n, bits);
        free(tmp);
        return;
    }

    size_t scratch_bytes = (size_t)n * sizeof(uint64_t);
    uint64_t *scratch = simdr__alloc_zeroed(scratch_bytes);
    uint64_t *end = calloc((size_t)buckets + 1, sizeof *end);
    if (!scratch || !end) {
        simdr__free_big(scratch, scratch_bytes);
        free(end);
        heap_sort(v, n);
        return;
    }
    /* end[b + 1] counts bucket b; the prefix sums make end[b] its start,
     * and the scatter advances it to its end. */
    for (uint64_t i = 0; i < n; i++) end[(v[i] >> low) + 1]++;
    for (uint64_t b = 1; b <= buckets; b++) end[b] += end[b - 1];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = v[i];
        scratch[end[x >> low]++] = x;
    }
    memcpy(v, scratch, scratch_bytes);
    simdr__free_big(scratch, scratch_bytes);
    simdr__sort_buckets(v, end, buckets, low);
    free(end);
}
