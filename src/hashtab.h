/*
 * hashtab.h - the library's open-addressing hash tables in one place: the
 * probe sequence they all follow, and the growable table of non-zero 64-bit
 * keys (with an optional byte per key) behind the iterator's set of key
 * hashes met (iter.c) and recovery's memo of classified positions
 * (recover.c). The index (index.c) follows the same probe sequence over its
 * own slots, which readers probe concurrently and whose capacity is not a
 * power of two.
 *
 * All of them use linear probing: a lookup starts at a key's home slot and
 * walks forward (wrapping) until it finds the key or an empty slot, so a
 * slot is never emptied again (deletions are values, not holes).
 */
#ifndef SIMDR_HASHTAB_H
#define SIMDR_HASHTAB_H

#include <stdint.h>
#include <stdlib.h>

/* The slot after i in a table of cap slots. */
static inline uint64_t simdr__probe_next(uint64_t i, uint64_t cap) { return ++i == cap ? 0 : i; }

/* A growable table of non-zero 64-bit keys; 0 marks an empty slot. The
 * capacity is a power of two that doubles from 1024 whenever an insert
 * would take the table past load_num / load_den full. With vals (has_vals)
 * it maps each key to a byte; without, it is a set. */
typedef struct simdr__u64table {
    uint64_t *keys;
    uint8_t *vals;         /* NULL for a set */
    uint64_t cap, used;
    unsigned load_num, load_den;
    int mix;               /* 1: the home slot comes from a multiplicative mix of the key
                              (keys with structure, e.g. file positions); 0: from its low
                              bits (keys that are already hashes) */
    int has_vals;
    void *(*alloc)(size_t bytes);        /* zeroed memory */
    void (*release)(void *p, size_t bytes);
} simdr__u64table;

static inline uint64_t simdr__u64table_home(const simdr__u64table *t, uint64_t key) {
    return (t->mix ? key * UINT64_C(0x9E3779B97F4A7C15) : key) & (t->cap - 1);
}

/* The slot holding key, or the empty slot where it would go (cap > 0). */
static inline uint64_t simdr__u64table_slot(const simdr__u64table *t, uint64_t key) {
    uint64_t i = simdr__u64table_home(t, key);
    while (t->keys[i] && t->keys[i] != key) i = simdr__probe_next(i, t->cap);
    return i;
}

/* 1 and *val (may be NULL) when key is present, else 0. */
static inline int simdr__u64table_get(const simdr__u64table *t, uint64_t key, uint8_t *val) {
    if (t->cap == 0) return 0;
    uint64_t i = simdr__u64table_slot(t, key);
    if (!t->keys[i]) return 0;
    if (val) *val = t->has_vals ? t->vals[i] : 0;
    return 1;
}

static inline void simdr__u64table_free(simdr__u64table *t) {
    if (t->keys) t->release(t->keys, (size_t)t->cap * sizeof *t->keys);
    if (t->vals) t->release(t->vals, (size_t)t->cap);
    t->keys = NULL;
    t->vals = NULL;
    t->cap = t->used = 0;
}

/* Room for one more key: doubles the table when it would pass its load.
 * 0, or -1 without memory (the table is unchanged). */
static inline int simdr__u64table_reserve_one(simdr__u64table *t) {
    if ((t->used + 1) * t->load_den <= t->cap * t->load_num) return 0;
    simdr__u64table bigger = *t;
    bigger.cap = t->cap ? t->cap * 2 : 1024;
    bigger.keys = t->alloc((size_t)bigger.cap * sizeof *bigger.keys);
    bigger.vals = t->has_vals ? t->alloc((size_t)bigger.cap) : NULL;
    if (!bigger.keys || (t->has_vals && !bigger.vals)) {
        if (bigger.keys) t->release(bigger.keys, (size_t)bigger.cap * sizeof *bigger.keys);
        if (bigger.vals) t->release(bigger.vals, (size_t)bigger.cap);
        return -1;
    }
    for (uint64_t i = 0; i < t->cap; i++) {
        if (!t->keys[i]) continue;
        uint64_t j = simdr__u64table_slot(&bigger, t->keys[i]);
        bigger.keys[j] = t->keys[i];
        if (t->has_vals) bigger.vals[j] = t->vals[i];
    }
    simdr__u64table_free(t);
    *t = bigger;
    return 0;
}

/* Sets key (non-zero) to val (ignored for a set). 1 if the key is new, 0 if
 * it was present, -1 without memory. */
static inline int simdr__u64table_put(simdr__u64table *t, uint64_t key, uint8_t val) {
    if (simdr__u64table_reserve_one(t) != 0) return -1;
    uint64_t i = simdr__u64table_slot(t, key);
    int added = !t->keys[i];
    if (added) t->used++;
    t->keys[i] = key;
    if (t->has_vals) t->vals[i] = val;
    return added;
}

#endif
