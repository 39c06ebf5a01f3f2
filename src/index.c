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
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define TAG_MASK SIMDR__IDX_TAG_MASK
#define MIN_CAP 1024u
/* The most slots a table can have: a home slot is 32 hash bits scaled to
 * the capacity (simdr__index_bucket). */
#define MAX_CAP ((UINT64_C(1) << 32) - 1)
/* Slots in a 4 KiB page. */
#define PAGE_SLOTS SIMDR__INDEX_PAGE_SLOTS

static uint64_t bucket_of(uint64_t hash, uint64_t cap) { return simdr__index_bucket(hash, cap); }

/* Keys fit in cap slots while needs_grow stays false: keys * 5 < cap * 4,
 * rounded as simdr__index_room rounds. */
static int keys_fit(uint64_t cap, uint64_t keys) { return cap * 4 >= keys * 5 + 4; }

uint64_t simdr__index_max_keys(void) { return (MAX_CAP * 4 - 4) / 5; }

/* The growth step after cap: 1.5x (at least one slot more, for the tiny
 * capacity a damaged hint may claim), the last step stopping at MAX_CAP. */
static uint64_t next_cap(uint64_t cap) {
    uint64_t next = cap + (cap / 2 ? cap / 2 : 1);
    return next > MAX_CAP ? MAX_CAP : next;
}

/* The capacity for keys, from cap up the growth steps (at least one step
 * when grow); 0 when no table holds that many (the caller's hint may be any
 * 64-bit number: checked before any arithmetic on it). */
static uint64_t cap_for(uint64_t cap, uint64_t keys, int grow) {
    if (keys > simdr__index_max_keys()) return 0;
    if (grow) {
        if (cap >= MAX_CAP) return 0;
        cap = next_cap(cap);
    }
    while (!keys_fit(cap, keys)) cap = next_cap(cap); /* MAX_CAP fits any keys allowed */
    return cap;
}

/*
 * A zeroed table of cap slots for keys_now keys about to be inserted. When
 * they touch most of its pages anyway (a growth, a compaction, recovery: a
 * key or more per 4 KiB page), every page is faulted in at once, cheaper
 * than a fault each. A table sized from a caller's hint (expected_keys)
 * beyond the keys it gets now is, above 32 MiB (alloc.c), only reserved: it
 * costs the pages that later inserts touch, so an overestimate costs address
 * space, not memory or open time (docs/BENCHMARKS.md, "A huge
 * expected_keys").
 */
static simdr__index *table_new(uint64_t cap, uint64_t keys_now) {
    if (cap == 0 || cap > SIZE_MAX / sizeof(uint64_t)) return NULL;
    simdr__index *ix = malloc(sizeof *ix);
    if (!ix) return NULL;
    ix->cap = cap;
    ix->used = 0;
    ix->mapping = NULL;
    ix->mapping_len = 0;
    atomic_init(&ix->unchecked, 0);
    ix->blocks = NULL;
    ix->touched = NULL;
    size_t bytes = (size_t)cap * sizeof *ix->slots;
    int sparse = keys_now < cap / PAGE_SLOTS;
    ix->slots = sparse ? simdr__alloc_zeroed_sparse(bytes) : simdr__alloc_zeroed_populated(bytes);
    if (sparse && ix->slots) {
        ix->touched = calloc((size_t)(cap / PAGE_SLOTS / 64 + 1), sizeof *ix->touched);
        if (!ix->touched) simdr__free_big((void *)ix->slots, bytes), ix->slots = NULL;
    }
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    return ix;
}

/* Before slot i goes from empty to a value: its page is touched. The bit
 * is set before the slot, so a walk that finds the bit clear may skip the
 * page (an insert after the walk read it is a concurrent one). */
static inline void touch_slot(simdr__index *ix, uint64_t i) {
    if (__builtin_expect(!ix->touched, 1)) return;
    uint64_t page = i / PAGE_SLOTS, bit = UINT64_C(1) << (page % 64);
    if (!(atomic_load_explicit(&ix->touched[page / 64], memory_order_relaxed) & bit))
        atomic_fetch_or_explicit(&ix->touched[page / 64], bit, memory_order_release);
}

simdr__index *simdr__index_new(uint64_t expected_keys) {
    return table_new(cap_for(MIN_CAP, expected_keys, 0), expected_keys);
}

static void blocks_free(simdr__index_blocks *b);

void simdr__index_free(simdr__index *ix) {
    if (!ix) return;
    blocks_free(ix->blocks);
    free((void *)ix->touched);
    if (ix->mapping)
        munmap(ix->mapping, ix->mapping_len);
    else
        simdr__free_big((void *)ix->slots, (size_t)ix->cap * sizeof *ix->slots);
    free(ix);
}

/* 1 when slot value v, of hash's tag, names metadata holding another hash
 * of that tag that cannot be another key's: a key's own probe always finds
 * its slot, so a hash whose probe does not lead to v was damaged after the
 * slot was set (below the file system, or by another program), and the slot
 * may be hash's own. A hash damaged in bits that leave its probe unchanged
 * cannot be told from another key's this way (nor by nearness: hashes
 * passed to the *_hashed calls need not be random). */
static int slot_damaged_for(const simdr__index *ix, const uint8_t *base, uint64_t len, uint64_t v,
                            uint64_t hash) {
    uint64_t off = v & SIMDR__IDX_OFF_MASK;
    if (((v ^ hash) & SIMDR__IDX_TAG_MASK) != 0 || off + SIMDR__META_SIZE > len) return 0;
    uint64_t stored = simdr__load_u64le(base + off);
    if (stored == hash || ((stored ^ v) & SIMDR__IDX_TAG_MASK) != 0) return 0;
    return simdr__index_get(ix, base, len, stored, NULL) != v;
}

/* Writer: the slot a new entry of hash takes over instead of a fresh one,
 * one whose metadata lost the key's hash (slot_damaged_for), so the damaged
 * entry is replaced, not kept live beside the new one (a scan would yield
 * both); UINT64_MAX when there is none. A slot whose metadata holds a hash
 * of another tag is not taken: it may be another key's of the same tag. Out of line: only a probe that met
 * a slot of the hash's tag naming another hash gets here. */
static __attribute__((noinline)) uint64_t damaged_slot_of(const simdr__index *ix,
                                                          const uint8_t *base, uint64_t hash) {
    uint64_t i = bucket_of(hash, ix->cap);
    for (uint64_t n = 0; n < ix->cap; n++) { /* bounded, as a lookup's probe */
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (v == 0) return UINT64_MAX;
        if (slot_damaged_for(ix, base, UINT64_MAX, v, hash)) return i;
        i = simdr__probe_next(i, ix->cap);
    }
    return UINT64_MAX;
}

/* Always inlined: the batch insert loop then keeps several prefetched
 * inserts in flight instead of waiting on a call per key. */
static inline __attribute__((always_inline)) uint64_t put(simdr__index *ix, const uint8_t *base,
                                                          uint64_t hash, uint64_t value,
                                                          int overwrite) {
    uint64_t i = bucket_of(hash, ix->cap);
    unsigned probe = 0;
    for (;;) {
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (v == 0) {
            if (__builtin_expect(overwrite && probe != 0, 0)) {
                uint64_t at = damaged_slot_of(ix, base, hash);
                if (at != UINT64_MAX) {
                    uint64_t old = atomic_load_explicit(&ix->slots[at], memory_order_relaxed);
                    atomic_store_explicit(&ix->slots[at], value, memory_order_release);
                    return old;
                }
            }
            touch_slot(ix, i);
            atomic_store_explicit(&ix->slots[i], value, memory_order_release);
            ix->used++;
            return 0;
        }
        if (simdr__index_hash_matches(base, UINT64_MAX, v, hash, &probe)) {
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
    touch_slot(ix, i);
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

/* ---- growth: moving every slot into a bigger table ----
 *
 * A slot keeps only 16 hash bits, so a key's bucket in the new table comes
 * from the full hash in its entry's metadata: one read at random in the map
 * per key, which dominates a growth. Prefetching a few slots ahead overlaps
 * those reads on one core; a large table is also split between the calling
 * thread and one helper, each moving half of the old slots, so a second
 * core's misses overlap too. Only the new table is written, and only from
 * empty to a value, so the two claim a slot with a compare-and-swap and the
 * join publishes their stores to the caller. */

enum { MOVE_AHEAD = 32 };

typedef struct move_job {
    const simdr__index *from;
    simdr__index *to;
    const uint8_t *base;
    uint64_t begin, end; /* old slots [begin, end) */
    uint64_t moved;
    int shared;          /* another thread inserts into to as well */
} move_job;

static inline void insert_claiming(simdr__index *ix, uint64_t hash, uint64_t value) {
    uint64_t i = bucket_of(hash, ix->cap);
    for (;;) {
        uint64_t empty = 0;
        if (atomic_load_explicit(&ix->slots[i], memory_order_relaxed) == 0 &&
            (touch_slot(ix, i), 1) &&
            atomic_compare_exchange_strong_explicit(&ix->slots[i], &empty, value,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed))
            return;
        i = simdr__probe_next(i, ix->cap);
    }
}

static void *move_slots(void *arg) {
    move_job *j = arg;
    const simdr__index *ix = j->from;
    uint64_t moved = 0;
    for (uint64_t i = simdr__index_walk_from(ix, j->begin); i < j->end;
         i = simdr__index_walk_from(ix, i + 1)) {
        if (i + MOVE_AHEAD < j->end) {
            uint64_t ahead = atomic_load_explicit(&ix->slots[i + MOVE_AHEAD], memory_order_relaxed);
            if (ahead) __builtin_prefetch(j->base + (ahead & SIMDR__IDX_OFF_MASK));
        }
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (!v) continue;
        uint64_t hash = simdr__load_u64le(j->base + (v & SIMDR__IDX_OFF_MASK));
        if (j->shared) {
            insert_claiming(j->to, hash, v);
            moved++;
        } else {
            simdr__index_insert_distinct(j->to, hash, v);
        }
    }
    j->moved = moved;
    return NULL;
}

static void move_slots_parallel(const simdr__index *ix, simdr__index *nx, const uint8_t *base) {
    move_job half[2] = {{ix, nx, base, 0, ix->cap / 2, 0, 1},
                        {ix, nx, base, ix->cap / 2, ix->cap, 0, 1}};
    pthread_t helper;
    if (!simdr__split_worth(ix->cap) ||
        simdr__io.thread_create(&helper, move_slots, &half[1]) != 0) {
        /* Alone (a small table, one CPU, no thread to be had): no claiming. */
        move_job only = {ix, nx, base, 0, ix->cap, 0, 0};
        move_slots(&only);
        return;
    }
    move_slots(&half[0]);
    pthread_join(helper, NULL);
    nx->used += half[0].moved + half[1].moved;
}

simdr__index *simdr__index_shrunk(const simdr__index *ix, const uint8_t *base) {
    if (simdr__index_check_all(ix) != 0) return NULL;
    uint64_t cap = cap_for(MIN_CAP, ix->used * 2, 0);
    if (cap == 0 || cap * 4 > ix->cap) return NULL;
    simdr__index *nx = table_new(cap, ix->used);
    if (!nx) return NULL;
    move_slots_parallel(ix, nx, base);
    return nx;
}

simdr__index *simdr__index_grown(const simdr__index *ix, const uint8_t *base) {
    return simdr__index_resized(ix, base, 0);
}

/* A copy of ix one growth step larger, or large enough that expected_keys
 * fit without another growth, whichever is larger; NULL without the memory
 * or when no table holds that many keys. */
simdr__index *simdr__index_resized(const simdr__index *ix, const uint8_t *base,
                                   uint64_t expected_keys) {
    /* Moving slots of a damaged block would hide the damage in the copy. */
    if (simdr__index_check_all(ix) != 0) return NULL;
    simdr__index *nx = table_new(cap_for(ix->cap, expected_keys, 1), ix->used);
    if (!nx) return NULL;
    move_slots_parallel(ix, nx, base);
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

/* ---- tables loaded from the hint file: checked a block at a time ----
 *
 * A hinted open maps the hint's table instead of reading it, so the open
 * costs the same at any size. Each block of SIMDR__INDEX_BLOCK_SLOTS slots
 * is checked against its XXH3-64 the first time a lookup needs it (two
 * threads may both check a block: same answer, harmless). Once every block
 * is sound, unchecked drops to 0 and lookups take the plain path again. A
 * damaged block is never read as slots: lookups that need it answer
 * SIMDR__PROBE_DAMAGED (SIMDR_ECORRUPT for the key, never "not found"),
 * the hint file is removed so the next open rebuilds, and the writer
 * replaces the table by a rebuilt one before its next change
 * (simdr__index_settle). */

enum { BLOCK_UNCHECKED = 0, BLOCK_SOUND = 1, BLOCK_DAMAGED = 2 };

struct simdr__index_blocks {
    uint64_t n;
    uint64_t *sums;
    _Atomic uint8_t *state;
    _Atomic uint64_t sound;   /* blocks found sound */
    /* Filled slots of the blocks found sound; once every block is, they
     * must number the header's used, else the table is taken for damaged
     * (miscounted): a table fuller than its count would let the writer
     * fill it up, and a probe in a table without an empty slot never ends. */
    _Atomic uint64_t occupied;
    _Atomic int miscounted;
    _Atomic int hint_removed;
    char *hint_path;
    uint64_t hint_dev, hint_ino; /* the file the table was mapped from */
};

static void blocks_free(simdr__index_blocks *b) {
    if (!b) return;
    free(b->sums);
    free((void *)b->state);
    free(b->hint_path);
    free(b);
}

simdr__index *simdr__index_from_hint(void *mapping, size_t mapping_len, _Atomic uint64_t *slots,
                                     uint64_t cap, uint64_t used, uint64_t *sums,
                                     char *hint_path, uint64_t hint_dev, uint64_t hint_ino) {
    uint64_t n = (cap + SIMDR__INDEX_BLOCK_SLOTS - 1) / SIMDR__INDEX_BLOCK_SLOTS;
    simdr__index *ix = malloc(sizeof *ix);
    simdr__index_blocks *b = malloc(sizeof *b);
    _Atomic uint8_t *state = calloc((size_t)n, sizeof *state);
    if (!ix || !b || !state) {
        free(ix);
        free(b);
        free((void *)state);
        return NULL;
    }
    b->n = n;
    b->sums = sums;
    b->state = state;
    atomic_init(&b->sound, 0);
    atomic_init(&b->occupied, 0);
    atomic_init(&b->miscounted, 0);
    atomic_init(&b->hint_removed, 0);
    b->hint_path = hint_path;
    b->hint_dev = hint_dev;
    b->hint_ino = hint_ino;
    ix->cap = cap;
    ix->used = used;
    ix->slots = slots;
    ix->mapping = mapping;
    ix->mapping_len = mapping_len;
    ix->touched = NULL;
    atomic_init(&ix->unchecked, 1);
    ix->blocks = b;
    return ix;
}

/* Removes the hint file the damaged table came from, so the next open
 * rebuilds. Not when the path names another file by now: a writer saves a
 * new hint by renaming it over the path, and that one is sound. (A rename
 * between the stat and the unlink still loses the new hint; that costs the
 * next open a rebuild, never data.) */
static void remove_damaged_hint(const simdr__index_blocks *b) {
    struct stat st;
    if (!b->hint_path || stat(b->hint_path, &st) != 0) return;
    if ((uint64_t)st.st_dev == b->hint_dev && (uint64_t)st.st_ino == b->hint_ino)
        unlink(b->hint_path);
}

/* 1 when block k of ix is sound (checking it now if nobody has), 0 when
 * damaged. */
static int block_sound(const simdr__index *ix, uint64_t k) {
    simdr__index_blocks *b = ix->blocks;
    uint8_t st = atomic_load_explicit(&b->state[k], memory_order_acquire);
    if (st != BLOCK_UNCHECKED) return st == BLOCK_SOUND;
    uint64_t first = k * SIMDR__INDEX_BLOCK_SLOTS;
    uint64_t slots = ix->cap - first < SIMDR__INDEX_BLOCK_SLOTS ? ix->cap - first
                                                                : SIMDR__INDEX_BLOCK_SLOTS;
    /* Hashed from atomic loads, a chunk at a time: a check that loses the
     * race below may still be reading while the writer changes the block. */
    XXH3_state_t state;
    uint64_t chunk[512], filled = 0;
    XXH3_64bits_reset(&state);
    for (uint64_t at = 0; at < slots; at += 512) {
        uint64_t n = slots - at < 512 ? slots - at : 512;
        for (uint64_t j = 0; j < n; j++) {
            chunk[j] = atomic_load_explicit(&ix->slots[first + at + j], memory_order_relaxed);
            filled += chunk[j] != 0;
        }
        XXH3_64bits_update(&state, chunk, (size_t)n * sizeof chunk[0]);
    }
    int sound = XXH3_64bits_digest(&state) == b->sums[k];
    uint8_t expect = BLOCK_UNCHECKED;
    /* The first verdict stands: once a block is sound the writer may change
     * its slots, so a check that lost the race may have hashed a block
     * already being changed. */
    if (!atomic_compare_exchange_strong(&b->state[k], &expect,
                                        sound ? BLOCK_SOUND : BLOCK_DAMAGED))
        return expect == BLOCK_SOUND;
    if (sound) {
        /* Counted before the block is: whoever counts the last block sees
         * every block's slots. */
        atomic_fetch_add(&b->occupied, filled);
        if (atomic_fetch_add(&b->sound, 1) + 1 == b->n) {
            if (atomic_load(&b->occupied) == ix->used)
                atomic_store(&((simdr__index *)ix)->unchecked, 0);
            else
                atomic_store(&b->miscounted, 1);
        }
    }
    if ((!sound || atomic_load(&b->miscounted)) && !atomic_exchange(&b->hint_removed, 1))
        remove_damaged_hint(b);
    return sound;
}

uint64_t simdr__index_get_checked(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                  uint64_t hash, unsigned *probe) {
    uint64_t i = simdr__index_bucket(hash, ix->cap);
    uint64_t block = UINT64_MAX;
    for (uint64_t steps = 0;; steps++) {
        /* A table with no empty slot left (a hint whose count lies) would
         * never end the probe. */
        if (steps > ix->cap || atomic_load_explicit(&ix->blocks->miscounted, memory_order_relaxed)) {
            if (probe) *probe |= SIMDR__PROBE_DAMAGED;
            return 0;
        }
        if (i / SIMDR__INDEX_BLOCK_SLOTS != block) {
            block = i / SIMDR__INDEX_BLOCK_SLOTS;
            if (!block_sound(ix, block)) {
                if (probe) *probe |= SIMDR__PROBE_DAMAGED | SIMDR__PROBE_BLOCK;
                return 0;
            }
        }
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (v == 0) return simdr__index_absent(ix, base, len, hash, probe);
        if (simdr__index_hash_matches(base, len, v, hash, probe)) return v;
        i = simdr__probe_next(i, ix->cap);
    }
}

/* One thread's share of simdr__index_check_all: blocks [begin, end). */
typedef struct check_job {
    const simdr__index *ix;
    uint64_t begin, end;
    int sound;
} check_job;

static void *check_blocks(void *arg) {
    check_job *j = arg;
    int sound = 1;
    for (uint64_t k = j->begin; k < j->end; k++) sound &= block_sound(j->ix, k);
    j->sound = sound;
    return NULL;
}

int simdr__index_tag_shared_damaged(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                    uint64_t hash) {
    uint64_t i = simdr__index_bucket(hash, ix->cap);
    /* Bounded: a table mapped from a hint whose slots lie may have no empty
     * one (its blocks' checks catch that, but only as the probe gets there). */
    for (uint64_t n = 0; n < ix->cap; n++) {
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (v == 0) return 0;
        if (slot_damaged_for(ix, base, len, v, hash)) return 1;
        i = simdr__probe_next(i, ix->cap);
    }
    return 0;
}

int simdr__index_check_all(const simdr__index *ix) {
    if (!atomic_load_explicit(&ix->unchecked, memory_order_acquire)) return 0;
    uint64_t n = ix->blocks->n;
    check_job first = {ix, 0, n, 1}, second = {ix, n / 2, n, 1};
    pthread_t helper;
    int started = 0;
    /* A large table (a 1M-key one is 12 MB of XXH3) is hashed in two halves,
     * the second by a helper thread; block_sound lets two threads check
     * blocks at once. */
    if (simdr__split_worth(ix->cap) &&
        simdr__io.thread_create(&helper, check_blocks, &second) == 0) {
        started = 1;
        first.end = n / 2;
    }
    check_blocks(&first);
    if (started) pthread_join(helper, NULL);
    if (!first.sound || !second.sound) return -1;
    /* Every block is sound; whoever checked the last one may still be
     * comparing the count, and its verdict (the plain path, or damage) must
     * be in before the caller trusts the table or changes it. */
    while (atomic_load(&ix->unchecked) && !atomic_load(&ix->blocks->miscounted)) sched_yield();
    return atomic_load(&ix->blocks->miscounted) ? -1 : 0;
}
