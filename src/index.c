/*
 * index.c - the in-memory hash index: key hash -> offset of the newest
 * metadata block of that key, 8 bytes a slot.
 *
 * A slot packs 16 tag bits of the hash, a tombstone bit and a 47-bit offset.
 * A tag match is confirmed by reading the full 64-bit hash from the entry's
 * metadata in the map, which a read touches anyway. Capacity grows by 1.5x
 * when 80% full, so the table stays between 53% and 80% full: 10 to 15 bytes
 * per indexed key. The bucket comes from the low 32 hash bits, the tag from
 * the top 16, so the two are independent.
 *
 * The probe sequence is the library's one (hashtab.h): linear from the home
 * slot, wrapping. One writer, many concurrent readers: slots only go from empty to a value
 * or from one value to another, with atomic stores, and are never removed,
 * so a reader's probe sequence cannot lose the key it is looking for.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

#define TAG_MASK SIMDR__IDX_TAG_MASK
#define MIN_CAP 1024u

static uint64_t bucket_of(uint64_t hash, uint64_t cap) { return simdr__index_bucket(hash, cap); }

simdr__index *simdr__index_new(uint64_t expected_keys) {
    uint64_t cap = MIN_CAP;
    while (cap * 4 < expected_keys * 5 + 4) cap = cap + cap / 2;
    if (cap >= (UINT64_C(1) << 32)) return NULL;
    simdr__index *ix = malloc(sizeof *ix);
    if (!ix) return NULL;
    ix->cap = cap;
    ix->used = 0;
    ix->mapping = NULL;
    ix->mapping_len = 0;
    ix->slots = simdr__alloc_zeroed_populated((size_t)cap * sizeof *ix->slots);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    return ix;
}

void simdr__index_free(simdr__index *ix) {
    if (!ix) return;
    if (ix->mapping)
        munmap(ix->mapping, ix->mapping_len);
    else
        simdr__free_big((void *)ix->slots, (size_t)ix->cap * sizeof *ix->slots);
    free(ix);
}

/* Always inlined: the batch insert loop then keeps several prefetched
 * inserts in flight instead of waiting on a call per key. */
static inline __attribute__((always_inline)) uint64_t put(simdr__index *ix, const uint8_t *base,
                                                          uint64_t hash, uint64_t value,
                                                          int overwrite) {
    uint64_t i = bucket_of(hash, ix->cap);
    for (;;) {
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (v == 0) {
            atomic_store_explicit(&ix->slots[i], value, memory_order_release);
            ix->used++;
            return 0;
        }
        if (simdr__index_hash_matches(base, UINT64_MAX, v, hash, NULL)) {
            if (overwrite) atomic_store_explicit(&ix->slots[i], value, memory_order_release);
            return v;
        }
        i = simdr__probe_next(i, ix->cap);
    }
}

uint64_t simdr__index_put(simdr__index *ix, const uint8_t *base, uint64_t hash, uint64_t value) {
    return put(ix, base, hash, value, 1);
}

int simdr__index_put_if_absent(simdr__index *ix, const uint8_t *base, uint64_t hash,
                               uint64_t value) {
    return put(ix, base, hash, value, 0) == 0;
}

/* Growth and compaction: every key is known to be distinct, so the new slot
 * is the first empty one from the home bucket and no entry needs to be read
 * to confirm a tag (compaction never touches the new file's pages). */
void simdr__index_insert_distinct(simdr__index *ix, uint64_t hash, uint64_t value) {
    uint64_t i = bucket_of(hash, ix->cap);
    while (atomic_load_explicit(&ix->slots[i], memory_order_relaxed) != 0)
        i = simdr__probe_next(i, ix->cap);
    atomic_store_explicit(&ix->slots[i], value, memory_order_relaxed);
    ix->used++;
}

int simdr__index_needs_grow(const simdr__index *ix) { return ix->used * 5 >= ix->cap * 4; }

uint64_t simdr__index_room(const simdr__index *ix) {
    /* needs_grow turns true once used reaches ceil(4 cap / 5). */
    uint64_t limit = (ix->cap * 4 + 4) / 5;
    return ix->used < limit ? limit - ix->used : 0;
}

int64_t simdr__index_put_items(simdr__index *ix, const uint8_t *base, const simdr__item *items,
                               const uint64_t *metas, size_t n) {
    /* Home slots are random over the table, so each insert would wait for a
     * cache miss; touching the home slot of a later item first lets those
     * misses overlap. */
    enum { AHEAD = 32 };
    for (size_t i = 0; i < n && i < AHEAD; i++)
        __builtin_prefetch((const void *)&ix->slots[bucket_of(items[i].hash, ix->cap)], 1);
    int64_t live_delta = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + AHEAD < n)
            __builtin_prefetch(
                (const void *)&ix->slots[bucket_of(items[i + AHEAD].hash, ix->cap)], 1);
        int tomb = items[i].tombstone;
        uint64_t prev = put(ix, base, items[i].hash,
                            simdr__index_value(items[i].hash, metas[i], tomb), 1);
        live_delta += simdr__live_change(prev, tomb);
    }
    return live_delta;
}

simdr__index *simdr__index_grown(const simdr__index *ix, const uint8_t *base) {
    return simdr__index_resized(ix, base, 0);
}

/* A copy of ix one growth step larger, or large enough that expected_keys
 * fit without another growth, whichever is larger. */
simdr__index *simdr__index_resized(const simdr__index *ix, const uint8_t *base,
                                   uint64_t expected_keys) {
    uint64_t cap = ix->cap + ix->cap / 2;
    while (cap < (UINT64_C(1) << 32) && cap * 4 < expected_keys * 5 + 4) cap = cap + cap / 2;
    if (cap >= (UINT64_C(1) << 32)) return NULL;
    simdr__index *nx = malloc(sizeof *nx);
    if (!nx) return NULL;
    nx->cap = cap;
    nx->used = 0;
    nx->mapping = NULL;
    nx->mapping_len = 0;
    nx->slots = simdr__alloc_zeroed_populated((size_t)cap * sizeof *nx->slots);
    if (!nx->slots) {
        free(nx);
        return NULL;
    }
    /* A slot keeps only 16 hash bits, so the bucket in the new table comes
     * from the full hash in the entry's metadata. Prefetching a few slots
     * ahead overlaps those map reads. */
    enum { AHEAD = 16 };
    for (uint64_t i = 0; i < ix->cap; i++) {
        if (i + AHEAD < ix->cap) {
            uint64_t ahead = atomic_load_explicit(&ix->slots[i + AHEAD], memory_order_relaxed);
            if (ahead) __builtin_prefetch(base + (ahead & SIMDR__IDX_OFF_MASK));
        }
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (!v) continue;
        simdr__index_insert_distinct(nx, simdr__load_u64le(base + (v & SIMDR__IDX_OFF_MASK)), v);
    }
    return nx;
}

/* Batch reads, second stage (after simdr__index_prefetch, once the home
 * slot is in cache): start loading the metadata that the probe run names for
 * hash. The run almost always stays in the home line, so the scan is short;
 * it loads relaxed because its answer is a prefetch address, never a result
 * (the lookup itself runs later with simdr__index_get). */
void simdr__index_prefetch_meta(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                uint64_t hash) {
    enum { SCAN = 4 };
    uint64_t i = bucket_of(hash, ix->cap);
    for (int k = 0; k < SCAN; k++) {
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (v == 0) return;
        if (((v ^ hash) & TAG_MASK) == 0) {
            uint64_t off = v & SIMDR__IDX_OFF_MASK;
            if (off + SIMDR__META_SIZE <= len) __builtin_prefetch(base + off);
            return;
        }
        i = simdr__probe_next(i, ix->cap);
    }
}

/* Batch reads: one step of the read pipeline in one call (three calls per
 * key across files cost a tenth of a cached lookup). slot_hash and
 * meta_hash, when not NULL, are the keys whose home slot and metadata to
 * prefetch; then hash is looked up as simdr__index_get does. */
uint64_t simdr__index_pipeline_step(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                    const uint64_t *slot_hash, const uint64_t *meta_hash,
                                    uint64_t hash, unsigned *probe) {
    if (slot_hash) simdr__index_prefetch(ix, *slot_hash);
    if (meta_hash) simdr__index_prefetch_meta(ix, base, len, *meta_hash);
    return simdr__index_get(ix, base, len, hash, probe);
}
