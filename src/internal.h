/*
 * internal.h - the structures behind the opaque handles of simdr.h and the
 * functions the library's files share. Nothing here is installed.
 *
 * Concurrency design, in one place:
 * - The writer (one at a time, store->wlock) appends with pwrite/pwritev at
 *   the tail, then publishes: index slot (atomic store), then tail.
 * - Readers never lock. They enter a grace-period section (epoch.c: a
 *   per-thread-sharded counter, no shared cache line written), load the
 *   current view {map, index}, look up, and leave.
 * - The map is a MAP_SHARED mapping of a reserved length far beyond the file
 *   size, so appends do not remap; it is replaced only when the file outgrows
 *   it or compaction swaps the file. A replaced view is freed after a grace
 *   period; a replaced map lives until every entry handle pinning it is
 *   released (per-map sharded reference counts, map.c).
 * - Lock order, the one for the whole library: a store's compact_lock, then
 *   its sync_lock, then its wlock. Group commit (simdr__sync_to) holds the
 *   sync lock and takes the writer lock inside it to read the tail;
 *   compaction holds its own lock throughout, the writer lock alone to list
 *   the live entries, and both others, sync lock first, only for its last
 *   catch-up and the switch, because it swaps the file the sync would flush. No code
 *   takes a store's sync lock while it holds that store's writer lock: a
 *   writer drops wlock before it waits for its fdatasync. No code waits for
 *   one store's lock while holding another's: simdr_move (append.c), which
 *   holds the source's writer lock while it appends to the target, only
 *   tries the target's writer lock (and syncs the target's file itself) and
 *   on failure lets go of the source before it waits. Grace periods
 *   (epoch.c) are waited for with locks held; that is safe because readers
 *   never take a lock.
 */
#ifndef SIMDR_INTERNAL_H
#define SIMDR_INTERNAL_H

#define SIMDR_BUILDING_LIBRARY 1
#include "simdr.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "format.h"
#include "hashtab.h"
#include "io.h"

#define SIMDR__SLOTS 64u            /* reader shards; threads hash onto them */
#define SIMDR__CACHELINE 64u

/* ---- errors (error.c) ---- */
int simdr__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int simdr__errno_status(int err);
int simdr__fail_errno(int err, const char *what, const char *path);

/* ---- big allocations (alloc.c): free with the same size ---- */
void *simdr__alloc_zeroed(size_t bytes);
/* The same, with every page faulted in up front (arrays about to be filled). */
void *simdr__alloc_zeroed_populated(size_t bytes);
/* The same, faulted in only as it is touched when larger than 32 MiB (a
 * table sized from a hint; alloc.c says why not below). */
void *simdr__alloc_zeroed_sparse(size_t bytes);
void simdr__free_big(void *p, size_t bytes);

/* ---- I/O (io_posix.c): every system call on a file goes through the
 * table simdr__io of io.h; these helpers retry EINTR and short transfers. ---- */
int simdr__pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Reads the process's file size limit (RLIMIT_FSIZE), which the write
 * helpers then refuse to cross (errno EFBIG) rather than have the kernel
 * raise SIGXFSZ. Called at every open. */
void simdr__io_note_fsize_limit(void);
/* That limit (UINT64_MAX: none). */
uint64_t simdr__io_fsize_limit(void);
/* 0 when all len bytes at off were read. */
int simdr__pread_all(int fd, void *buf, size_t len, uint64_t off);

/* Whole-file passes (open without a hint, compaction) read the file with
 * pread through a buffer rather than through the map: the first touch of
 * each mapped page costs a page-table fill, dearer on virtual machines than
 * the copy, and the pass then holds none of the file's pages. Anything the
 * buffer cannot serve (a span larger than it, a failed read) comes from the
 * map, which is always correct. */
typedef struct simdr__window {
    int fd;
    const uint8_t *base; /* the map */
    uint64_t end;        /* bytes of the file that may be read */
    int backwards;       /* the pass goes downwards: a refill ends at the span's end */
    uint8_t *buf;        /* NULL: map only */
    uint64_t cap;        /* bytes buf holds */
    uint64_t lo, hi;     /* buf holds the file's bytes [lo, hi) */
} simdr__window;
/* The file's bytes [lo, hi), hi <= end. */
const uint8_t *simdr__window_span(simdr__window *w, uint64_t lo, uint64_t hi);
int simdr__pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off);
int simdr__fdatasync(int fd);
/* The table's calls, retried while a signal interrupts them (EINTR: network
 * and FUSE file systems, a handler installed without SA_RESTART); any other
 * failure is returned as the call gave it. */
int simdr__ftruncate(int fd, off_t len);
int simdr__fsync(int fd);
int simdr__msync(void *addr, size_t len, int flags);
int simdr__sync_file_range(int fd, off_t off, off_t len, unsigned flags);
/* 1 when a pass over a table of slots slots is worth splitting with one
 * helper thread (simdr__io.thread_create): the table has 2^17 slots or more
 * and the machine more than one CPU online. A pass that splits still runs
 * whole on the caller when the thread cannot be created. */
int simdr__split_worth(uint64_t slots);

/* ---- grace periods (epoch.c) ---- */
typedef struct simdr__epoch {
    _Atomic uint64_t epoch;
    struct {
        _Atomic uint64_t active[2];
        char pad[SIMDR__CACHELINE - 2 * sizeof(uint64_t)];
    } shard[SIMDR__SLOTS] __attribute__((aligned(SIMDR__CACHELINE)));
} simdr__epoch;

unsigned simdr__thread_shard(void);
/* Returns a token to pass to simdr__epoch_exit. shard must be the calling
 * thread's simdr__thread_shard(), and the section is left by the same thread
 * (a shard may be this thread's alone, counted without locked instructions). */
unsigned simdr__epoch_enter(simdr__epoch *e, unsigned shard);
void simdr__epoch_exit(simdr__epoch *e, unsigned shard, unsigned token);
/* Waits until every reader that entered before the call has left. */
void simdr__epoch_synchronize(simdr__epoch *e);

/* ---- maps (map.c) ---- */
#define SIMDR__MAP_CLOSED (UINT64_C(1) << 63)
typedef struct simdr__map {
    struct {
        _Atomic uint64_t n; /* handles pinned through this shard (| CLOSED once retired) */
        char pad[SIMDR__CACHELINE - sizeof(uint64_t)];
    } refs[SIMDR__SLOTS] __attribute__((aligned(SIMDR__CACHELINE)));
    const uint8_t *base;
    uint64_t len;                /* mapped length (>= file size) */
    uint64_t populated;          /* writer: the prefix whose pages are mapped in, page aligned */
    _Atomic int64_t outstanding; /* handle count once retired */
    int fd;                      /* a read-only description of the mapped file, open as long as
                                    the map (a large value's check reads it: read.c); -1: none */
} simdr__map;

int simdr__map_create(int fd, uint64_t file_size, simdr__map **out, const char *path);
/* Pin/unpin: pin inside an epoch section, or while holding another pin. */
static inline void simdr__map_pin(simdr__map *m, unsigned shard) {
    uint64_t old = atomic_fetch_add_explicit(&m->refs[shard].n, 1, memory_order_relaxed);
    /* Only a pin taken from an already pinned entry (dup) can meet a retired
     * map; the retirer did not count it, so it counts itself. */
    if (old & SIMDR__MAP_CLOSED) atomic_fetch_add_explicit(&m->outstanding, 1, memory_order_relaxed);
}
void simdr__map_unpin(simdr__map *m, unsigned shard);
/* Unmaps from this process the whole pages of [0, end) of m. The map is a
 * shared, read-only file mapping, so that only drops page-table entries: the
 * pages stay in the page cache, and a later read maps them back, unchanged,
 * with a minor fault. Any thread, m pinned. */
void simdr__map_unmap_pages(const simdr__map *m, uint64_t end);
/* After it is unreachable for new pins (grace period passed): drop the
 * store's hold; it is unmapped when the last pin goes. */
void simdr__map_retire(simdr__map *m);
uint64_t simdr__map_reserve_for(uint64_t size);
/* Test hook: the least a map reserves (1 GiB). Tests lower it to make a
 * store outgrow its map, and so replace it, at a few MiB. */
extern _Atomic uint64_t simdr__map_min_reserve;

/* ---- index (index.c) ----
 * Open addressing, linear probing (hashtab.h's sequence), 8 bytes a slot: [tag:16][tomb:1][meta offset:47].
 * One writer mutates in place with atomic stores; readers probe concurrently.
 * Slots are never removed (a delete stores the tombstone's offset), so a
 * probe sequence a reader follows can only gain entries. */
#define SIMDR__IDX_OFF_MASK ((UINT64_C(1) << 47) - 1)
#define SIMDR__IDX_TOMB (UINT64_C(1) << 47)
/* A table loaded from the hint file is checked a block at a time, on the
 * first use of each block (index.c, hint.c): the per-block checksums. */
typedef struct simdr__index_blocks simdr__index_blocks;
/* Slots per checked block of a hinted table (32 KiB). */
#define SIMDR__INDEX_BLOCK_SLOTS UINT64_C(4096)
typedef struct simdr__index {
    uint64_t cap;
    uint64_t used;               /* writer only */
    _Atomic uint64_t *slots;
    void *mapping;               /* non-NULL: slots live in this private file mapping */
    size_t mapping_len;
    /* 1 while some block of a table loaded from the hint file has not been
     * checked yet: lookups then take simdr__index_get_checked. */
    _Atomic int unchecked;
    simdr__index_blocks *blocks; /* NULL unless loaded from the hint file */
    /* A table only reserved (sized from expected_keys beyond its keys): a
     * bit per page of SIMDR__INDEX_PAGE_SLOTS slots that an insert has
     * written, so walks of every slot skip the pages never touched (a walk
     * of the whole reservation cost seconds and its memory). NULL: none
     * skipped. */
    _Atomic uint64_t *touched;
} simdr__index;

#define SIMDR__INDEX_PAGE_SLOTS 512u /* 8-byte slots in a 4 KiB page */

/* 1 when slot i starts a whole page of ix that no insert has written (all
 * empty): a walk of every slot may step over the page. */
static inline int simdr__index_page_untouched(const simdr__index *ix, uint64_t i) {
    if (!ix->touched || i % SIMDR__INDEX_PAGE_SLOTS || ix->cap - i < SIMDR__INDEX_PAGE_SLOTS)
        return 0;
    uint64_t page = i / SIMDR__INDEX_PAGE_SLOTS;
    uint64_t word = atomic_load_explicit(&ix->touched[page / 64], memory_order_acquire);
    return !(word >> (page % 64) & 1);
}

/* The first slot at or after i that a walk of every slot of ix must read:
 * i itself, or the start of the first page after i's run of pages no
 * insert has written. Walks go for (i = from(ix, b); i < e; i = from(ix, i + 1)). */
static inline uint64_t simdr__index_walk_from(const simdr__index *ix, uint64_t i) {
    while (simdr__index_page_untouched(ix, i)) i += SIMDR__INDEX_PAGE_SLOTS;
    return i;
}

/* Home slot of a hash: the low 32 bits scaled to the capacity. */
static inline uint64_t simdr__index_bucket(uint64_t hash, uint64_t cap) {
    return ((hash & 0xffffffffu) * cap) >> 32;
}
simdr__index *simdr__index_new(uint64_t expected_keys);
/* The most keys an index holds (expected_keys above it is SIMDR_EINVAL). */
uint64_t simdr__index_max_keys(void);
void simdr__index_free(simdr__index *ix);
/* Lookup: returns the slot value (0 = absent). base/len: the map to confirm
 * full hashes in. *probe (may be NULL) gains SIMDR__PROBE_BEYOND when a
 * candidate lies past len (the caller retries with a newer view) and
 * SIMDR__PROBE_DAMAGED when a slot with the hash's tag names metadata
 * holding a hash of another tag (damage: with 0 returned, the key's answer
 * is SIMDR_ECORRUPT, not absence). */
#define SIMDR__PROBE_BEYOND 1u
#define SIMDR__PROBE_DAMAGED 2u
/* A slot with the hash's tag named metadata holding another hash of the same
 * tag: another key, or this key's entry whose hash was damaged in bits the
 * tag does not cover. A lookup that ends empty after one asks
 * simdr__index_tag_shared_damaged which (rare: tags are 16 bits), and adds
 * SIMDR__PROBE_DAMAGED when it may be this key's. */
#define SIMDR__PROBE_TAG_SHARED 4u
/* With SIMDR__PROBE_DAMAGED: the damage is a block of a hinted table that
 * failed its check (the slots, not the file's metadata). */
#define SIMDR__PROBE_BLOCK 8u
#define SIMDR__IDX_TAG_MASK UINT64_C(0xffff000000000000)
/* A slot's tag was taken from the hash its metadata holds, so metadata
 * whose hash has another tag is not another key: the bytes were damaged
 * after the slot was set (below the file system, or under a hint). That is
 * flagged (SIMDR__PROBE_DAMAGED), never silently taken for absence. */
static inline int simdr__index_hash_matches(const uint8_t *base, uint64_t len, uint64_t v,
                                            uint64_t hash, unsigned *probe) {
    if (((v ^ hash) & SIMDR__IDX_TAG_MASK) != 0) return 0;
    uint64_t off = v & SIMDR__IDX_OFF_MASK;
    if (off + SIMDR__META_SIZE > len) {
        if (probe) *probe |= SIMDR__PROBE_BEYOND;
        return 0;
    }
    uint64_t stored = simdr__load_u64le(base + off);
    if (stored == hash) return 1;
    if (probe)
        *probe |= ((stored ^ v) & SIMDR__IDX_TAG_MASK) != 0 ? SIMDR__PROBE_DAMAGED
                                                            : SIMDR__PROBE_TAG_SHARED;
    return 0;
}
/* After a probe for hash that ended empty with SIMDR__PROBE_TAG_SHARED: 1
 * when a slot it passed (the hash's tag) names metadata holding another hash
 * of that tag whose own probe does not lead to the slot, so it was damaged
 * after the slot was set and the slot may be hash's own (its answer is
 * SIMDR_ECORRUPT, not absence); 0 when each such slot is a key of its own. A
 * writer's put of hash takes such a slot over. */
int simdr__index_tag_shared_damaged(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                    uint64_t hash);
/* The end of a lookup's probe at an empty slot: absent (0), with
 * SIMDR__PROBE_DAMAGED added when a slot it passed may be the key's own
 * whose metadata lost its hash. */
static inline uint64_t simdr__index_absent(const simdr__index *ix, const uint8_t *base,
                                           uint64_t len, uint64_t hash, unsigned *probe) {
    if (probe && __builtin_expect((*probe & SIMDR__PROBE_TAG_SHARED) != 0, 0) &&
        simdr__index_tag_shared_damaged(ix, base, len, hash))
        *probe |= SIMDR__PROBE_DAMAGED;
    return 0;
}
/* Inline: a random read is bound by how many lookups the processor keeps in
 * flight at once, and that shrinks with every instruction between them. */
/* simdr__index_get on a table with blocks still to check: each block the
 * probe enters is checked first; a damaged block answers 0 with
 * SIMDR__PROBE_DAMAGED (never a silent absence). */
uint64_t simdr__index_get_checked(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                  uint64_t hash, unsigned *probe);
static inline uint64_t simdr__index_get(const simdr__index *ix, const uint8_t *base,
                                        uint64_t len, uint64_t hash, unsigned *probe) {
    if (__builtin_expect(atomic_load_explicit(&ix->unchecked, memory_order_relaxed), 0))
        return simdr__index_get_checked(ix, base, len, hash, probe);
    uint64_t i = ((hash & 0xffffffffu) * ix->cap) >> 32;
    for (;;) {
        uint64_t v = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (v == 0) return simdr__index_absent(ix, base, len, hash, probe);
        /* Past a damaged slot the probe goes on: the key may have been
         * written again since, into a later slot. */
        if (simdr__index_hash_matches(base, len, v, hash, probe)) return v;
        i = simdr__probe_next(i, ix->cap);
    }
}
/* A table whose slots are the private mapping of a hint file's table (cap
 * slots at slots; mapping/mapping_len unmapped at free), checked lazily
 * against sums (one XXH3-64 per SIMDR__INDEX_BLOCK_SLOTS slots; taken over).
 * hint_path (taken over) is removed when a block is found damaged, so the
 * next open rebuilds, but only while it still names the file the table came
 * from (hint_dev, hint_ino): a writer may have renamed a sound newer hint
 * there since. NULL without memory (nothing taken over then). */
simdr__index *simdr__index_from_hint(void *mapping, size_t mapping_len, _Atomic uint64_t *slots,
                                     uint64_t cap, uint64_t used, uint64_t *sums,
                                     char *hint_path, uint64_t hint_dev, uint64_t hint_ino);
/* Checks every block not yet checked: 0 when the whole table is sound (always
 * for a table not loaded from a hint), -1 when a block is damaged. Whole-table
 * readers (iteration, growth, the hint's save) call it first. */
int simdr__index_check_all(const simdr__index *ix);
/* Writer (lock held), before changing the index or trusting an absence: a
 * table loaded from the hint is checked whole; a damaged one is replaced by
 * one rebuilt from the chain [0, s->tail) (hint.c). */
int simdr__index_settle(simdr_store *s);
/* Writer: set hash -> value. Returns the previous value (0 = new key). */
uint64_t simdr__index_put(simdr__index *ix, const uint8_t *base, uint64_t hash, uint64_t value);
/* Writer: insert only if absent (index build walking newest-first). 1 if inserted. */
int simdr__index_put_if_absent(simdr__index *ix, const uint8_t *base, uint64_t hash,
                               uint64_t value);
/* Writer, on a table no reader sees yet: insert a hash known to be absent. */
void simdr__index_insert_distinct(simdr__index *ix, uint64_t hash, uint64_t value);
int simdr__index_needs_grow(const simdr__index *ix);
/* Batch work: touch the home slot of a hash early so its cache line is
 * there when the lookup or insert runs. */
static inline void simdr__index_prefetch(const simdr__index *ix, uint64_t hash) {
    __builtin_prefetch((const void *)&ix->slots[simdr__index_bucket(hash, ix->cap)]);
}
/* Batch reads, second stage: prefetch the metadata the (cached) home slot's
 * probe run names for hash; a hint only, the lookup itself decides. */
void simdr__index_prefetch_meta(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                uint64_t hash);
/* Batch reads: both prefetch stages (for the keys given, either may be
 * NULL) and the lookup of hash, in one call. */
uint64_t simdr__index_pipeline_step(const simdr__index *ix, const uint8_t *base, uint64_t len,
                                    const uint64_t *slot_hash, const uint64_t *meta_hash,
                                    uint64_t hash, unsigned *probe);
/* How many new keys fit before needs_grow turns true. */
uint64_t simdr__index_room(const simdr__index *ix);
struct simdr__item;
/* Writer: simdr__index_put of items[i].hash -> metas[i] (tombstone bit from
 * the item) for each i in order, with at most simdr__index_room new keys.
 * Returns the change in the number of live keys. */
int64_t simdr__index_put_items(simdr__index *ix, const uint8_t *base,
                               const struct simdr__item *items, const uint64_t *metas, size_t n);
simdr__index *simdr__index_grown(const simdr__index *ix, const uint8_t *base);
/* A copy of ix in a table with room for twice its keys, when ix is more than
 * four times that (sized from a large expected_keys): what the hint file
 * saves. NULL otherwise, or without memory. */
simdr__index *simdr__index_shrunk(const simdr__index *ix, const uint8_t *base);
simdr__index *simdr__index_resized(const simdr__index *ix, const uint8_t *base,
                                   uint64_t expected_keys);
/* How the live key count changes when a slot that held prev (0: none) is
 * set to an entry that is (tomb) or is not a tombstone. */
static inline int simdr__live_change(uint64_t prev, int tomb) {
    int was_live = prev != 0 && !(prev & SIMDR__IDX_TOMB);
    return (was_live && tomb) ? -1 : (!was_live && !tomb) ? 1 : 0;
}
static inline uint64_t simdr__index_value(uint64_t hash, uint64_t meta_off, int tomb) {
    return (hash & UINT64_C(0xffff000000000000)) | (tomb ? SIMDR__IDX_TOMB : 0) | meta_off;
}

/* ---- the side file "<store>.simdr" (side.c): the writer's committed tail ---- */
typedef struct simdr__side_record {
    uint64_t seq, tail;
    uint64_t anchor; /* the tail from which sum counts */
    uint64_t sum;    /* sum of simdr__side_term over the entries ending in (anchor, tail] */
    uint8_t meta[SIMDR__META_SIZE]; /* the store's 20 bytes ending at tail (zeros for 0) */
} simdr__side_record;
typedef struct simdr__side {
    int fd;
    void *page;     /* the writer's MAP_SHARED page; NULL for a reader (side.c) */
    int writable;
    ino_t ino;      /* the side file's own inode (a reader notices a new one) */
    /* Writer: the live records' sequence and the sum at the writer's tail
     * (both under the store's writer lock), the anchor of the sums (changes
     * only with both of the store's locks held). */
    uint64_t seq, sum, anchor;
    /* The durable slots: written by the sync path and by a move's target
     * under this lock (a leaf: nothing is taken inside it). */
    pthread_mutex_t dlock;
    uint64_t dseq, durable_tail;
    /* One-flush syncs (simdr__side_commit): the page goes to the device
     * ahead of the store's fdatasync, whose cache flush carries it. cseq
     * numbers the commit slots; pending is the commit record of the sync in
     * flight, confirmed the newest one whose fdatasync succeeded (the next
     * durable record). All under dlock. */
    int one_flush;
    uint64_t cseq;
    simdr__side_record pending, confirmed;
    int has_pending, has_confirmed;
    /* Writer: the page as this writer attached it is not on disk yet; it
     * must be before the first append (simdr__side_flush_attached). */
    int attach_unflushed;
} simdr__side;
typedef struct simdr__side_state {
    simdr__side_record live[2]; /* the readable live records, newest first */
    int n_live;
    simdr__side_record durable; /* the newest tail made durable by a sync */
    int has_durable;
    /* Version 3: the tails the last two syncs acknowledged, newest first;
     * they vouch like live records, only syncs write them (side.c). */
    simdr__side_record commit[2];
    int n_commit;
    uint64_t closed;            /* 0: a writer has it open (or died); tail + 1: closed cleanly */
} simdr__side_state;
/* What a writer's records start from: the anchor and the sum at its tail,
 * and the durable record, when one is known to be true of the file. */
typedef struct simdr__side_basis {
    int has_durable;
    simdr__side_record durable;
    uint64_t anchor, sum;
} simdr__side_basis;
/* The finalizer of MurmurHash3: a bijection of 64-bit words that spreads
 * every input bit over the output. */
static inline uint64_t simdr__mix64(uint64_t x) {
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}
/* The hash an entry adds to the sums: of its metadata (key hash,
 * prev_offset, CRC) and the offset at which it ends. Inline and a few
 * multiplications, since the put path computes it for every entry. For
 * fixed other fields it is a bijection of each field (odd multipliers, then
 * a bijective mix), so an entry whose metadata differs in any one of them
 * always changes the sum (a key hash torn to zeros included); changes to
 * several collide with chance 2^-64. */
static inline uint64_t simdr__side_term(const simdr__meta *m, uint64_t end) {
    return simdr__mix64(m->key_hash ^ (m->prev * UINT64_C(0x9e3779b97f4a7c15)) ^
                        (end * UINT64_C(0xd6e8feb86659fd93)) ^
                        ((uint64_t)m->checksum * UINT64_C(0x2545f4914f6cdd1d)));
}
/* Writer, after recovery: opens or creates the side file, locks it, maps it
 * and states the file, its tail and basis. NULL when that fails (the file is
 * then removed: the store works, every open costs a full recovery), except
 * when another writer holds the side file's lock (a file moved into the path
 * of a store still open): NULL with *held_elsewhere = 1, the file untouched,
 * and the open must be refused. */
simdr__side *simdr__side_attach_writer(const char *store_path, int store_fd, uint64_t tail,
                                       unsigned mode, const simdr__side_basis *basis,
                                       int *held_elsewhere);
/* Read-only opens: the side file mapped read-only, or NULL when there is none. */
simdr__side *simdr__side_attach_reader(const char *store_path);
void simdr__side_close(simdr__side *sd);
/* In a forked child: lets go of the side file a writer inherited (its map
 * and descriptor hold the parent's lock) without writing to it. */
void simdr__side_forget(simdr__side *sd);
/* Writer, after each append's publication: no system call. sum: the
 * writer's sum with the terms of the entries just appended added. */
void simdr__side_publish(simdr__side *sd, uint64_t tail, const simdr__meta *last, uint64_t sum);
/* After a successful fdatasync of store_fd up to durable, whose sum is sum:
 * records it and flushes the page. 0 or -1 (errno set). sd may be NULL. */
int simdr__side_sync(simdr__side *sd, int store_fd, uint64_t durable, uint64_t sum);
/* 1 when syncs of this writer use one device flush: simdr__side_commit,
 * the store's fdatasync, simdr__side_committed (sd may be NULL: 0). */
int simdr__side_one_flush(const simdr__side *sd);
/* One-flush sync, before the store's fdatasync: records tail (sum) in a
 * commit slot, the last confirmed commit as durable, and writes the page to
 * the device without a cache flush. 0 or -1 (errno set). */
int simdr__side_commit(simdr__side *sd, int store_fd, uint64_t tail, uint64_t sum);
/* After that fdatasync succeeded: the commit is confirmed (durable), the
 * next commit records it as the durable tail. */
void simdr__side_committed(simdr__side *sd, uint64_t tail);
/* Compaction, at its swap: the page now describes store_fd's file, whose
 * committed and durable tail (and anchor) is tail; flushed. -1 when it
 * could not be rewritten: it then names no file. sd may be NULL. */
int simdr__side_rebind(simdr__side *sd, int store_fd, uint64_t tail);
void simdr__side_mark_closed(simdr__side *sd, uint64_t tail);
/* Writer, before its first append: puts the page as attached on disk (once;
 * sd may be NULL). An open that never writes leaves it to the kernel. */
void simdr__side_flush_attached(simdr__side *sd);
/* 1 and *out when the page is sound and describes the file (dev, ino). */
int simdr__side_read(const simdr__side *sd, dev_t dev, ino_t ino, simdr__side_state *out);
/* The newest record of a state: a live one, else the durable one; NULL if
 * neither. */
const simdr__side_record *simdr__side_newest(const simdr__side_state *st);
/* 1 when a writer holds the store open (it holds the side file's lock). */
int simdr__side_writer_active(const simdr__side *sd);
/* 1 when the path no longer names the side file sd maps. */
int simdr__side_replaced(const simdr__side *sd, const char *store_path);

/* ---- the store ---- */
typedef struct simdr__view {
    simdr__map *map;
    simdr__index *index;
    _Atomic uint64_t tail; /* valid length of the file this view maps */
    /* The store's dead count (simdr_store.dead) when this view's file held
     * none dead: the file holds dead - dead_base dead entries, or fewer. */
    uint64_t dead_base;
    uint64_t file_gen; /* which of the files the store had (simdr_store.file_gens) */
} simdr__view;

struct simdr_store {
    char *path;
    int fd;
    int readonly;
    int durability;
    int new_file_layout;
    _Atomic int layout;              /* SIMDR_LAYOUT_* of this file */
    int layout_detected;             /* 0: assumed (no entry could tell yet) */
    int use_hint;
    int salvage;
    int verify_reads;                /* lookups check the CRC of what they hand out */
    uint64_t hint_tail;              /* tail covered by the hint file on disk (0: none) */
    _Atomic(simdr__view *) view;
    uint64_t tail;                   /* writer's tail (under wlock); readers use view->tail */
    _Atomic uint64_t live;           /* live keys */
    /* Entries that are not the newest live version of their key (older
     * versions, tombstones), counted since open over every file the store
     * had: it only grows, so a reader that loads it after a view's tail and
     * finds dead == view->dead_base knows no entry below that tail is dead.
     * Counted before the tail that covers them is published. */
    _Atomic uint64_t dead;
    _Atomic uint64_t file_gens;      /* files the store has had since open */
    int index_rebuilt;               /* writer: the next view published holds a rebuilt index */
    _Atomic uint64_t synced;         /* file prefix known to be on stable storage */
    pthread_mutex_t wlock;           /* serializes writers */
    pthread_mutex_t sync_lock;       /* one fdatasync at a time (group commit) */
    pthread_mutex_t compact_lock;    /* one compaction at a time (compact.c) */
    /* The new file of the compaction in flight (-1: none), for the fork
     * handler: a child closes its copy, whose description holds the new
     * file's lock, which becomes the store's writer lock at the switch. */
    _Atomic int compact_fd;
    _Atomic unsigned syncers;        /* threads inside simdr__sync_to */
    _Atomic unsigned sync_queued;    /* ... of which waiting for sync_lock */
    _Atomic uint64_t last_sync_ns;   /* duration of the latest fdatasync */
    _Atomic uint64_t sync_bytes_avg; /* bytes a sync covers, moving average; 0: none yet */
    _Atomic int failed;              /* a write could not be undone or a sync failed */
    unsigned process_gen;            /* simdr__process_generation() at open */
    simdr__side *side;               /* the side file, or NULL (side.c) */
    simdr__side_basis side_basis;    /* writable open: what load_file learnt for the side file */
    dev_t dev;
    ino_t ino;
    simdr_recovery_info recovery;
    /* read-only open: XXH3 of the first bytes of the torn tail it skipped
     * (simdr__file_range_hash), so a check can tell them from what a writer
     * wrote there since */
    uint64_t torn_hash;
    /* Space ahead of the tail (mapped.c); writer only, under wlock. */
    int mapped;                      /* SIMDR_APPEND_MAPPED (off again without fallocate) */
    int zeroed;                      /* SIMDR_APPEND_ZEROED */
    uint64_t alloc_end;              /* the file's length: the tail, then preallocated zeros */
    uint8_t *wmap;                   /* writable window on the file's [wmap_off, +wmap_len) */
    uint64_t wmap_off, wmap_len;
    /* Writable stores open in this process, for the fork handler (store.c). */
    struct simdr_store *open_prev, *open_next;
    simdr__epoch epoch;
    /* What the current file was compacted from by this handle (compact.c,
     * simdr_log_origin); has_origin 0: nothing known. Under wlock. */
    int has_origin;
    simdr_log_origin_info origin;
};

/* Handles returned by one batch read share one allocation and one map pin
 * (read.c); the block goes when its last handle is released. */
typedef struct simdr__entry_block simdr__entry_block;

struct simdr_entry {
    simdr__map *map;      /* pinned (by the entry itself, or by its block) */
    unsigned shard;
    simdr__entry_block *block; /* NULL: allocated and pinned alone */
    const uint8_t *data;
    uint64_t size;
    uint64_t key_hash;
    uint32_t checksum;
    int tombstone;
    int verified;         /* its CRC was checked when it was looked up */
    uint64_t start;       /* prev_offset */
    uint64_t payload_off;
    uint64_t meta_off;
};

/* Decodes the entry whose metadata is at meta_off into e (not pinned).
 * 0 on success, SIMDR_ECORRUPT if the metadata is not a valid entry. */
int simdr__entry_decode(const uint8_t *base, uint64_t map_len, uint64_t meta_off, int layout,
                        struct simdr_entry *e);
/* The same from a copy of the entry's bytes [prev, meta_off + 20) at span
 * (e->data then points into span). */
int simdr__entry_decode_span(const uint8_t *span, uint64_t prev, uint64_t meta_off, int layout,
                             struct simdr_entry *e);

/* ---- views (view.c) ---- */
/* A new view of map and index ending at tail (not published). */
int simdr__new_view(simdr__map *map, simdr__index *index, uint64_t tail, simdr__view **out);
/* Replaces the current view with one holding map and index (either may be
 * the current one's), waits for a grace period, frees the old view and
 * whichever of its parts were replaced. Writer only. */
int simdr__publish_view(simdr_store *s, simdr__map *map, simdr__index *index);
/* Before a view of another file (open, compaction, a refresh that follows
 * a compaction) is published: the file holds dead dead entries. */
void simdr__view_new_file(simdr_store *s, simdr__view *v, uint64_t dead);

/* Writer: make the map cover [0, end). */
int simdr__ensure_mapped(simdr_store *s, uint64_t end);
static inline simdr__view *simdr__current_view(simdr_store *s) {
    return atomic_load_explicit(&s->view, memory_order_acquire);
}

/* ---- the files beside a store (store.c) ---- */
int simdr__fsync_dir(const char *path);
/* path followed by suffix, malloc'd (NULL without memory). */
char *simdr__suffixed_path(const char *path, const char *suffix);
/* The temporary file a compaction writes before renaming it over the store. */
#define SIMDR__COMPACT_SUFFIX ".compact"

/* ---- loading an open file (load.c) ----
 * Maps s->fd, finds its valid end (side file, hint, recovery), cuts a torn
 * tail (writable opens; only with repair) and indexes it into *out. */
int simdr__load_file(simdr_store *s, int repair, int fallback_layout, simdr__view **out);
/* torn.c: copies [from, to) of base into "<path>.torn-<from>[.N]", durably. */
int simdr__save_cut_bytes(simdr_store *s, const uint8_t *base, uint64_t from, uint64_t to);

/* Chain walks go backwards through the file, each step's address loaded by
 * the step before, which hardware prefetchers do not follow: touch the bytes
 * a little below the current position so the next steps find them cached. */
#define SIMDR__WALK_PREFETCH 16384u
static inline void simdr__prefetch_behind(const uint8_t *base, uint64_t p) {
    if (p > SIMDR__WALK_PREFETCH) __builtin_prefetch(base + p - SIMDR__WALK_PREFETCH);
}

/* ---- recovery (recover.c) ---- */
enum simdr__recover_status {
    SIMDR__RECOVER_SOUND = 0, /* the whole file is a valid chain */
    SIMDR__RECOVER_TORN = 1,  /* a torn/garbage tail follows a valid prefix */
    SIMDR__RECOVER_DAMAGED = 2, /* valid entries follow a break: not a torn tail */
    SIMDR__RECOVER_NOTSTORE = 3
};
typedef struct simdr__recover_result {
    int status;
    uint64_t valid_len;
    int layout;          /* SIMDR_LAYOUT_*, or -1 when the file cannot tell */
    uint64_t damage_at;  /* DAMAGED: where the chain from the end breaks */
    uint64_t bad_crc_end; /* SOUND: end of the newest entry whose CRC fails (0: none) */
    simdr__index *index; /* SOUND: the chain's index (caller owns); NULL otherwise or
                            when there was no memory for it */
    uint64_t live;       /* with index: live keys in it */
    uint64_t entries;    /* with index: entries in the chain */
} simdr__recover_result;
/* fd: the store file, read with pread on the fast path (-1: the map only). */
int simdr__recover(const uint8_t *base, uint64_t size, int fd, simdr__recover_result *r);
/* Builds the index of the sound chain ending at end (recover.c), reading it
 * through the map: the open path after a cut, for a salvaged prefix, or when
 * recovery had no memory to build it. */
int simdr__build_index(const uint8_t *base, uint64_t end, simdr__index **out, uint64_t *live_out,
                       uint64_t *entries_out);
/* Walks a chain that must reach stop exactly from end: 1 if valid (structure
 * and CRC of each entry), 0 otherwise. Used by refresh. */
int simdr__chain_reaches(const uint8_t *base, uint64_t end, uint64_t stop, int *layout,
                         uint64_t max_steps);
/* An entry met by simdr__chain_reaches_fd. */
typedef struct simdr__chain_rec {
    uint64_t hash, meta; /* key hash, metadata offset */
    int tomb;
} simdr__chain_rec;
/* simdr__chain_reaches reading the file with pread only (the bytes may be
 * cut by another process at any moment, so they are never touched through
 * the map): each link must lead strictly down to no lower than stop and each
 * entry's CRC match. 1 when the chain from end reaches stop exactly, its
 * entries in *recs (malloc'd, newest first, *n of them); 0 when it does not
 * (or the file changed under the walk); 2 when every entry of the walk was
 * sound but stop lies more than simdr__chain_walk_max_steps entries below
 * end (the caller loads the file afresh instead); -1 without memory. */
extern _Atomic uint64_t simdr__chain_walk_max_steps; /* 2^24; tests lower it */
int simdr__chain_reaches_fd(int fd, uint64_t end, uint64_t stop, int *layout,
                            simdr__chain_rec **recs, uint64_t *n);
/* CRC check of one entry under a layout; detects the layout when *layout < 0. */
int simdr__entry_crc_ok(const uint8_t *base, uint64_t prev, uint64_t meta_off, uint32_t crc,
                        int *layout);

/* Checks the CRCs of the newest entries of a structurally sound chain;
 * large entries are read with pread from fd (-1: through the map). */
int simdr__tail_sound(int fd, const uint8_t *base, uint64_t end, int *layout);

/* ---- the index hint file (hint.c) ---- */
typedef struct simdr__hint {
    simdr__index *index;
    uint64_t tail, live, dead;
    int layout, layout_detected;
} simdr__hint;
/* 1 and *out filled when a valid hint covers the whole file, unchanged
 * since the hint was saved; 0 otherwise (rebuild). */
int simdr__hint_load(simdr_store *s, const uint8_t *base, uint64_t size, simdr__hint *out);
void simdr__hint_save(simdr_store *s);
/* Test hook: how many opens have taken their index from a hint file. */
extern _Atomic uint64_t simdr__hint_loads;

/* ---- the append path (append.c) ---- */
typedef struct simdr__item {
    uint64_t hash;
    const void *value;
    size_t len;
    int tombstone;
} simdr__item;
int simdr__append(simdr_store *s, const simdr__item *items, size_t n, uint64_t *tail_out);
/* The same, only while the store's tail is expect (replicate.c). */
int simdr__append_at(simdr_store *s, const simdr__item *items, size_t n, uint64_t expect,
                     uint64_t *tail_out);
int simdr__check_writable(simdr_store *s);
/* SIMDR_EFAILED (with its message) once the store failed, else SIMDR_OK. */
int simdr__check_syncable(simdr_store *s);
/* SIMDR_EINVAL (with its message) when called from a stream source feeding
 * s, which holds s's writer lock; call before taking it. */
int simdr__check_reentry(simdr_store *s);
/* 1 when this thread is inside a stream source of s (and so holds its
 * writer lock): calls that only read under the lock must not take it. */
int simdr__feeding(const simdr_store *s);
/* Counts forks in this process's ancestry of handles: record it at open;
 * simdr__forked(s) is then true in a child that inherited s. */
unsigned simdr__process_generation(void);
int simdr__forked(const simdr_store *s);
/* 0 when the calling thread must not take s's writer lock to read what it
 * guards: a stream source of s holds it already, and in a forked child a
 * thread of the parent may hold it forever. */
int simdr__writer_lock_usable(const simdr_store *s);
/* 1 when the file's [from, to) holds only zero bytes, read with pread: a
 * read-only open must not read past the chain through the map (a writer may
 * cut those bytes meanwhile, and a map read past the file's end faults).
 * Bytes cut meanwhile count as zeros; a read error as not (load.c). */
int simdr__file_range_zero(int fd, uint64_t from, uint64_t to);
/* XXH3-64 of the file's bytes [from, min(to, from + 64 KiB)) as read now,
 * seeded with how many were read (fewer when the file is shorter). */
uint64_t simdr__file_range_hash(int fd, uint64_t from, uint64_t to);
/* code, with the message "[path: ]<head>checksum mismatch in the entry at
 * offset S..E (a N-byte value at P)<tail>": the range S..E (the entry's start
 * to its metadata's end) is the one simdr_check reports for it (read.c). */
int simdr__fail_checksum(int code, const char *path, const char *head,
                         const struct simdr_entry *e, const char *tail);
/* SIMDR_EINVAL for a handle used in a forked child, with the message. */
int simdr__refuse_forked(simdr_store *s);
/* After a failed sync (the store is failed): readers see the durable prefix. */
void simdr__withdraw_unsynced(simdr_store *s);
/* Writer: the index rebuilt from the chain ending at end in v's map and
 * published with the live count (a damaged hinted table, withdrawn
 * unsynced entries). SIMDR_OK or the build's or publication's error. */
int simdr__index_rebuild(simdr_store *s, simdr__view *v, uint64_t end);
/* Index the entry at meta_off (already in the file) and adjust the live and
 * dead counts. */
void simdr__index_entry(simdr_store *s, uint64_t hash, uint64_t meta_off, int tomb);
int simdr__grow_index_if_needed(simdr_store *s);
int simdr__sync_to(simdr_store *s, uint64_t end);

/* ---- mapped appends (mapped.c) ----
 * Writer, wlock held. simdr__mapped_span makes the file's [start, end)
 * allocated (growing the preallocation) and writable through the window,
 * and points *dst at start: SIMDR_OK, an error with nothing changed
 * (SIMDR_ENOSPC for a full disk or the file size limit), or
 * SIMDR__MAPPED_UNSUPPORTED when the file system has no fallocate (the
 * store has then switched to pwrite appends). */
#define SIMDR__MAPPED_UNSUPPORTED 1
int simdr__mapped_span(simdr_store *s, uint64_t start, uint64_t end, uint8_t **dst);
/* Zeroed appends: writes zeros from alloc_end on, so that the file's
 * [start of zeros, at least end) exists on written blocks before a pwrite
 * puts entries there. Never fails: without room for the zeros the caller's
 * pwrite extends the file itself, as a plain append. */
void simdr__zeroed_reserve(simdr_store *s, uint64_t end);
/* Cuts the preallocated zeros: the file ends at the tail again (zeroed
 * appends keep theirs unless closing). Takes wlock.
 * SIMDR_OK or the error of ftruncate (the file then keeps its zeros, which
 * the next trim or open cuts; nothing written is affected). The write path
 * keeps alloc_end true when it cuts or extends the file itself (an undone
 * write, a stream). */
int simdr__mapped_trim(simdr_store *s, int closing);
/* The store's file changed (compaction: the new one is exactly len long):
 * drops the window. Also at close (len ignored). */
void simdr__mapped_release(simdr_store *s, uint64_t len);

/* ---- reads (read.c) ---- */
/* Lookup of the newest entry of hash, its CRC checked whatever the store's
 * verify_reads says (copy and rename must never give damaged bytes a fresh
 * checksum); fills *out (pinned) on success, SIMDR_ECORRUPT for damage. */
int simdr__lookup(simdr_store *s, uint64_t hash, struct simdr_entry **out);
/* 1 if the payload of a decoded entry matches its CRC-32. A large payload
 * is read a step at a time and the steps' pages are dropped from this
 * process after, so a check never leaves a huge value resident. */
int simdr__payload_sound(const struct simdr_entry *e);
/* SIMDR_OK, or SIMDR_ECORRUPT with a message naming the entry. */
int simdr__verify_payload(const simdr_store *s, const struct simdr_entry *e);

/* 1 when this thread has a read scope (simdr_read_begin) open on s: a write
 * there could wait for its own grace period, so it is refused. */
int simdr__in_read_scope(const simdr_store *s);

/* ---- live entries (iter.c): the metadata offsets of the live slots ---- */
int simdr__live_offsets(simdr_store *s, simdr__view *v, uint64_t **out, uint64_t *n);

/* ---- compaction (compact.c) ----
 * Test hook: when set, runs on the compacting thread without the store's
 * locks, after the copy of the live entries (stage 0) and after the unlocked
 * catch-up rounds (stage 1), so a test can write there deterministically. */
typedef void (*simdr__compact_hook_fn)(simdr_store *s, int stage);
extern _Atomic(simdr__compact_hook_fn) simdr__compact_during_copy;

/* The file's name for replicas (replicate.c, simdr_log_state.identity). */
uint64_t simdr__file_identity(const simdr_store *s);

/* Streaming XXH3-64 (digest.c): a compaction's prefix hash is taken over the
 * bytes as they are written. new returns NULL without memory; end frees. */
typedef struct simdr__digest simdr__digest;
simdr__digest *simdr__digest_new(void);
void simdr__digest_add(simdr__digest *d, const void *buf, size_t len);
uint64_t simdr__digest_end(simdr__digest *d);

/* ---- sorting offsets into file order (sort.c) ----
 * Ascending, in place. Neither fails: without memory for a scratch buffer
 * they fall back to a slower in-place sort. */
void simdr__sort_offsets(uint64_t *v, uint64_t n);
/* The two stages for a caller that fills buckets itself: for n offsets of
 * `bits` significant bits, how many top bits pick the bucket; then, with
 * bucket b holding v[bucket_end[b - 1] .. bucket_end[b]) (from 0 for b = 0),
 * every offset of it sharing those top bits, sort each bucket on its
 * low_bits (= bits - top bits). */
unsigned simdr__sort_top_bits(uint64_t n, unsigned bits);
void simdr__sort_buckets(uint64_t *v, const uint64_t *bucket_end, uint64_t buckets,
                         unsigned low_bits);

/* ---- iteration (iter.c) ----
 * Test hooks: force_chain_walk makes iterators walk the chain instead of
 * reading the index; chain_walks counts the iterators that walked it;
 * after_tail, when set, runs inside simdr_iter_open between taking the
 * snapshot's tail and reading the index (to write there deterministically;
 * such a write must not need to grow the map or the index). */
typedef void (*simdr__iter_hook_fn)(simdr_store *s);
extern _Atomic int simdr__iter_force_chain_walk;
extern _Atomic uint64_t simdr__iter_chain_walks;
/* all_live_walks counts the iterators that walked a file without dead
 * entries, yielding every entry without reading the index; all_live = 0
 * turns that path off (tests). */
extern _Atomic uint64_t simdr__iter_all_live_walks;
extern _Atomic int simdr__iter_all_live;
extern _Atomic(simdr__iter_hook_fn) simdr__iter_after_tail;
/* Files of at most this many bytes per live key are iterated by walking the
 * chain against a bitmap of the live entries, others through their sorted
 * offsets (0: always sorted; tests set it to pick a path). */
extern _Atomic uint64_t simdr__iter_dense_bytes_per_key;

#endif
