/*
 * iter.c - iteration over live entries (sequential and parallel) and the full
 * integrity check.
 *
 * The sequential iterator pins a snapshot (map + tail) and yields each live
 * key once, in its newest version, newest first. The index already names
 * each live key's newest entry: the iterator marks those entries in a bitmap
 * of the file (one bit per 16 bytes: two entries' metadata are at least 20
 * bytes apart, so a bit names one entry) and walks the chain from the tail
 * backwards, yielding the marked entries, until it has yielded as many as it
 * marked. That is the order the contract promises, reads the file in one
 * descending sweep, and needs neither an array of offsets nor a sort (a
 * 1M-key store's bitmap is 500 KB). A sparse file (more than 512 bytes per
 * live key: large values, or many dead versions between live ones) would make
 * that walk read entries no scan needs: there the live offsets are taken
 * from the index and radix-sorted, and only they are touched. When a
 * concurrent write has already moved the index past the snapshot, it walks
 * the chain instead, remembering the key hashes it has yielded so tombstones
 * and older versions stay hidden. A file that holds no dead entry (no older
 * version, no tombstone: only new keys written, or just compacted; the
 * store counts them, simdr_store.dead) is walked yielding every entry, with
 * neither the index nor a bitmap. A walk that cannot reach the start of the
 * file, or reaches it with marked entries not met, found damage the open did
 * not see: it says so (SIMDR_ECORRUPT) instead of ending there. The parallel
 * visit takes the live offsets from the index, in file order, and splits
 * them over threads.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hashtab.h"
#include "internal.h"

/* The key hashes a chain walk has met: a set of non-zero hashes
 * (hashtab.h), and 0 as a flag beside it. */
typedef struct hashset {
    simdr__u64table t;
    int has_zero;
} hashset;

/* 1 if h is new, 0 if met before, -1 without memory. */
static int hashset_add(hashset *hs, uint64_t h) {
    if (h == 0) {
        int added = !hs->has_zero;
        hs->has_zero = 1;
        return added;
    }
    return simdr__u64table_put(&hs->t, h, 0);
}

struct simdr_iter {
    simdr_store *store;
    simdr__map *map;   /* pinned */
    unsigned shard;
    int layout;
    /* End of the next entry to examine (the chain is walked from the
     * snapshot's tail backwards on both paths). */
    uint64_t pos;
    /* Index path: bit (metadata offset / 16) is set for each live entry of
     * the snapshot; left of them remain to be yielded. NULL with all_live:
     * no entry below the snapshot's tail is dead, so every one is yielded
     * (left then unbounded) and the index is not read at all. */
    uint64_t *live_bits;
    int all_live;
    size_t bits_bytes;
    uint64_t left;
    /* The next marked entries' metadata offsets, found ahead of their use
     * (see next_marked); batch[batch_at..batch_n) remain. */
    uint64_t batch[64];
    unsigned batch_at, batch_n;
    /* The end of the entry whose link does not lead down to a whole entry
     * (damage after open, e.g. bit rot), 0 while the walk met none; reported
     * once. */
    uint64_t broken_at;
    int end_reported;
    /* Index path in a sparse file: the live metadata offsets in ascending
     * file order, yielded from the end; offs[0..left) remain. */
    uint64_t *offs;
    size_t offs_bytes;
    /* Chain walk (when the index had moved past the snapshot): the key
     * hashes met so far. */
    int walk_chain;
    hashset seen;
    uint64_t tail;     /* the snapshot's */
    uint64_t file_gen; /* the file the snapshot is of (simdr__view.file_gen) */
    struct simdr_entry current;
};

_Atomic int simdr__iter_force_chain_walk;
_Atomic uint64_t simdr__iter_chain_walks;
_Atomic uint64_t simdr__iter_all_live_walks;
_Atomic int simdr__iter_all_live = 1;
_Atomic(simdr__iter_hook_fn) simdr__iter_after_tail;

/* Metadata offsets of distinct entries differ by at least 20 bytes (the
 * metadata itself), so one bit per 16 bytes of file tells them apart. */
#define LIVE_BIT_SHIFT 4u
/* Files holding at most this many bytes per live key are walked with the
 * bitmap (docs/BENCHMARKS.md, I1); 0: never. */
_Atomic uint64_t simdr__iter_dense_bytes_per_key = 512;

static inline int live_bit(const uint64_t *bits, uint64_t meta_off) {
    uint64_t cell = meta_off >> LIVE_BIT_SHIFT;
    return (int)((bits[cell >> 6] >> (cell & 63)) & 1u);
}

/* One thread's share of mark_live: the slots [begin, end) of ix, into bits. */
typedef struct mark_job {
    const simdr__index *ix;
    uint64_t tail, begin, end;
    uint64_t *bits;
    uint64_t live;
    int beyond; /* a slot names an entry at or past tail */
} mark_job;

static void *mark_range(void *arg) {
    mark_job *j = arg;
    const simdr__index *ix = j->ix;
    uint64_t *bits = j->bits;
    uint64_t live = 0;
    /* The bits land at random over the bitmap: touching the word of a slot
     * a little ahead overlaps those cache misses. */
    enum { AHEAD = 16 };
    for (uint64_t i = simdr__index_walk_from(ix, j->begin); i < j->end;
         i = simdr__index_walk_from(ix, i + 1)) {
        if (i + AHEAD < j->end) {
            uint64_t ahead = atomic_load_explicit(&ix->slots[i + AHEAD], memory_order_relaxed);
            uint64_t cell = (ahead & SIMDR__IDX_OFF_MASK) >> LIVE_BIT_SHIFT;
            if (ahead && (ahead & SIMDR__IDX_OFF_MASK) < j->tail)
                __builtin_prefetch(&bits[cell >> 6], 1);
        }
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        uint64_t off = val & SIMDR__IDX_OFF_MASK;
        if (!val) continue;
        if (off >= j->tail) {
            j->beyond = 1;
            return NULL;
        }
        if (val & SIMDR__IDX_TOMB) continue;
        uint64_t cell = off >> LIVE_BIT_SHIFT;
        bits[cell >> 6] |= UINT64_C(1) << (cell & 63);
        live++;
    }
    j->live = live;
    return NULL;
}

/* Inside an epoch section: marks the live entries of ix as of the moment
 * the file ended at tail (it->live_bits, it->left). The writer only ever
 * stores offsets of entries it appended, which lie at or beyond any tail
 * published before, so a slot holding such an offset (live or tombstone)
 * means ix has moved past the snapshot: SIMDR_NOTFOUND then, and the caller
 * walks the chain instead. Slots still below tail are exactly the
 * snapshot's newest versions, since the acquire load of tail made every
 * earlier slot store visible. A large table is read in two halves, the
 * second by a helper thread into a bitmap of its own, merged after (the
 * section keeps the table alive until the helper is joined). */
static int mark_live(simdr_iter *it, const simdr__index *ix, uint64_t tail) {
    size_t words = (size_t)((tail >> LIVE_BIT_SHIFT) / 64 + 1);
    size_t bytes = words * sizeof(uint64_t);
    uint64_t *bits = simdr__alloc_zeroed_populated(bytes);
    if (!bits) return SIMDR_ENOMEM;
    mark_job first = {ix, tail, 0, ix->cap, bits, 0, 0};
    mark_job second = {ix, tail, ix->cap / 2, ix->cap, NULL, 0, 0};
    pthread_t helper;
    int started = 0;
    if (simdr__split_worth(ix->cap)) {
        second.bits = simdr__alloc_zeroed_populated(bytes);
        /* Without a second bitmap or a thread, this thread reads it all. */
        if (second.bits && simdr__io.thread_create(&helper, mark_range, &second) == 0) {
            started = 1;
            first.end = ix->cap / 2;
        }
    }
    mark_range(&first);
    if (started) {
        pthread_join(helper, NULL);
        for (size_t w = 0; w < words; w++) bits[w] |= second.bits[w];
        first.live += second.live;
        first.beyond |= second.beyond;
    }
    simdr__free_big(second.bits, bytes);
    if (first.beyond) {
        simdr__free_big(bits, bytes);
        return SIMDR_NOTFOUND;
    }
    it->live_bits = bits;
    it->bits_bytes = bytes;
    it->left = first.live;
    return SIMDR_OK;
}

/* Inside an epoch section: the live metadata offsets of ix as of the moment
 * the file ended at tail, in ascending order. The writer only ever stores
 * offsets of entries it appended, which lie at or beyond any tail published
 * before, so a slot holding such an offset (live or tombstone) means ix has
 * moved past the snapshot: SIMDR_NOTFOUND then, and the caller walks the
 * chain instead. Slots still below tail are exactly the snapshot's newest
 * versions, since the acquire load of tail made every earlier slot store
 * visible.
 *
 * The first read of the slots counts offsets per bucket of top bits, the
 * second drops each straight into its bucket, so sorting (out of the
 * section) needs no copy of the whole array and the only large allocation is
 * the result. */
typedef struct bucketed_offsets {
    uint64_t *offs;     /* n offsets, bucket by bucket */
    size_t bytes;       /* allocated for offs */
    uint64_t n;
    uint64_t *end;      /* end of each bucket in offs */
    uint64_t buckets;
    unsigned low;       /* bits below the bucket's */
} bucketed_offsets;

static int snapshot_offsets(const simdr__index *ix, uint64_t tail, bucketed_offsets *out) {
    /* Bucket by the top bits of the file size: tail < 2^bits bounds them. */
    unsigned bits = tail ? 64u - (unsigned)__builtin_clzll(tail) : 0;
    unsigned top = simdr__sort_top_bits(ix->cap, bits), low = bits - top;
    uint64_t buckets = UINT64_C(1) << top;
    /* fill[b] is where bucket b's next offset goes, end[b] where it stops. */
    uint64_t *fill = calloc((size_t)buckets + 1, sizeof *fill);
    uint64_t *end = malloc((size_t)buckets * sizeof *end);
    uint64_t *offs = NULL;
    size_t bytes = 0;
    int rc = SIMDR_ENOMEM;
    if (!fill || !end) goto done;
    for (uint64_t i = simdr__index_walk_from(ix, 0); i < ix->cap;
         i = simdr__index_walk_from(ix, i + 1)) {
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        uint64_t off = val & SIMDR__IDX_OFF_MASK;
        if (val && off >= tail) {
            rc = SIMDR_NOTFOUND;
            goto done;
        }
        if (val && !(val & SIMDR__IDX_TOMB)) fill[(off >> low) + 1]++;
    }
    for (uint64_t b = 1; b <= buckets; b++) fill[b] += fill[b - 1];
    uint64_t live = fill[buckets];
    for (uint64_t b = 0; b < buckets; b++) end[b] = fill[b + 1];
    bytes = (size_t)(live ? live : 1) * sizeof *offs;
    offs = simdr__alloc_zeroed(bytes);
    if (!offs) goto done;
    for (uint64_t i = simdr__index_walk_from(ix, 0); i < ix->cap;
         i = simdr__index_walk_from(ix, i + 1)) {
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_relaxed);
        if (!val || (val & SIMDR__IDX_TOMB)) continue;
        uint64_t off = val & SIMDR__IDX_OFF_MASK;
        /* A slot that changed since the count can only have moved past the
         * snapshot; the bound also keeps every store inside the array. */
        if (off >= tail || fill[off >> low] == end[off >> low]) {
            rc = SIMDR_NOTFOUND;
            goto done;
        }
        offs[fill[off >> low]++] = off;
    }
    for (uint64_t b = 0; b < buckets; b++)
        if (fill[b] != end[b]) {
            rc = SIMDR_NOTFOUND;
            goto done;
        }
    *out = (bucketed_offsets){offs, bytes, live, end, buckets, low};
    offs = NULL;
    end = NULL;
    rc = SIMDR_OK;
done:
    simdr__free_big(offs, bytes);
    free(fill);
    free(end);
    return rc;
}

/* Sets up the chain walk: a seen-set sized for the live keys up front, so
 * nothing rehashes while iterating. */
static int start_chain_walk(simdr_iter *it) {
    uint64_t want = 1024;
    while (want * 3 < simdr_count(it->store) * 4 + 4) want *= 2;
    simdr__u64table *t = &it->seen.t;
    /* Grows at 3/4 full; key hashes are random, so their low bits place them. */
    t->load_num = 3;
    t->load_den = 4;
    t->mix = 0;
    t->has_vals = 0;
    t->alloc = simdr__alloc_zeroed;
    t->release = simdr__free_big;
    t->keys = simdr__alloc_zeroed((size_t)want * sizeof *t->keys);
    if (!t->keys) return SIMDR_ENOMEM;
    t->cap = want;
    atomic_fetch_add_explicit(&simdr__iter_chain_walks, 1, memory_order_relaxed);
    return SIMDR_OK;
}

SIMDR_API int simdr_iter_open(simdr_store *s, simdr_iter **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_iter *it = calloc(1, sizeof *it);
    if (!it) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    it->store = s;
    it->shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, it->shard);
    simdr__view *v = simdr__current_view(s);
    it->map = v->map;
    it->pos = atomic_load_explicit(&v->tail, memory_order_acquire);
    it->tail = it->pos;
    it->file_gen = v->file_gen;
    /* The index lists each live key's newest entry: in descending file order
     * those are what the chain walk would yield, without remembering every
     * key met. It must be read inside the section that keeps it alive. */
    simdr__iter_hook_fn hook = atomic_load_explicit(&simdr__iter_after_tail, memory_order_relaxed);
    if (hook) hook(s);
    int rc = SIMDR_NOTFOUND;
    /* A dense file (few bytes per live key: small values, little garbage)
     * is walked with the bitmap; in a sparse one (large values, or many
     * dead versions between live ones) the walk would read entries no scan
     * needs, so the live offsets are sorted and only they are touched. */
    uint64_t live = atomic_load_explicit(&s->live, memory_order_relaxed);
    uint64_t per_key = atomic_load_explicit(&simdr__iter_dense_bytes_per_key, memory_order_relaxed);
    int dense = per_key && it->pos / per_key <= live;
    bucketed_offsets bo = {0};
    int force_walk = atomic_load_explicit(&simdr__iter_force_chain_walk, memory_order_relaxed);
    /* The dead count, loaded after the tail, only grows, and counts every
     * entry below that tail: unchanged since this file had none dead, no
     * entry of the snapshot is dead (a store only ever written with new
     * keys, or just compacted). Then the walk yields every entry and the
     * index is not read, nor are later writes a reason to leave it. */
    if (!force_walk && atomic_load_explicit(&simdr__iter_all_live, memory_order_relaxed) &&
        atomic_load_explicit(&s->dead, memory_order_relaxed) == v->dead_base) {
        it->all_live = 1;
        it->left = UINT64_MAX;
        dense = 1;
        rc = SIMDR_OK;
        atomic_fetch_add_explicit(&simdr__iter_all_live_walks, 1, memory_order_relaxed);
    } else if (!force_walk && simdr__index_check_all(v->index) == 0) {
        /* A hinted table with a damaged block cannot list the live keys:
         * the chain walk does not need it. */
        rc = dense ? mark_live(it, v->index, it->pos) : snapshot_offsets(v->index, it->pos, &bo);
    }
    simdr__map_pin(it->map, it->shard);
    simdr__epoch_exit(&s->epoch, it->shard, tok);
    it->layout = atomic_load(&s->layout);
    if (rc == SIMDR_OK && !dense) {
        simdr__sort_buckets(bo.offs, bo.end, bo.buckets, bo.low);
        free(bo.end);
        it->offs = bo.offs;
        it->offs_bytes = bo.bytes;
        it->left = bo.n;
    }
    if (rc == SIMDR_NOTFOUND) {
        it->walk_chain = 1;
        rc = start_chain_walk(it);
    }
    if (rc != SIMDR_OK) {
        simdr__map_unpin(it->map, it->shard);
        free(it);
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    }
    *out = it;
    return SIMDR_OK;
}

/* Entries ahead whose metadata is prefetched: the offsets are known in
 * advance, so the cache misses of a stretch of entries overlap instead of
 * stalling one entry at a time. */
#define PREFETCH_AHEAD 16u

static int next_from_offsets(simdr_iter *it, const simdr_entry **entry) {
    if (it->left == 0) return SIMDR_NOTFOUND;
    uint64_t meta_off = it->offs[it->left - 1];
    if (it->left > PREFETCH_AHEAD) {
        const uint8_t *ahead = it->map->base + it->offs[it->left - 1 - PREFETCH_AHEAD];
        __builtin_prefetch(ahead);
        __builtin_prefetch(ahead + SIMDR__META_SIZE - 1);
    }
    struct simdr_entry e;
    int rc = simdr__entry_decode(it->map->base, it->map->len, meta_off, it->layout, &e);
    it->left--; /* a damaged entry is reported once; the next call goes on */
    if (rc != SIMDR_OK)
        return simdr__fail(rc, "%s: damaged entry (metadata at %llu)", it->store->path,
                           (unsigned long long)meta_off);
    e.map = it->map; /* the check reads the value through the map's file */
    if (it->store->verify_reads) {
        rc = simdr__verify_payload(it->store, &e);
        if (rc != SIMDR_OK) return rc;
        e.verified = 1;
    }
    e.shard = it->shard;
    it->current = e;
    *entry = &it->current;
    return SIMDR_OK;
}

/* Walks the chain down from it->pos past the entries that are not marked
 * (older versions, tombstones) and collects the next marked ones. The walk
 * is a chain of dependent loads, so it runs on its own in a tight loop (the
 * bytes below are prefetched as it goes) instead of waiting behind each
 * entry's checks and callback; the entries it collected are then in cache.
 * It stops once every marked entry is found, so the oldest dead entries are
 * never touched. */
static void collect_marked(simdr_iter *it) {
    const uint8_t *base = it->map->base;
    unsigned n = 0;
    uint64_t pos = it->pos;
    while (n < sizeof it->batch / sizeof it->batch[0] && it->left > 0 && pos != 0) {
        if (pos <= SIMDR__META_SIZE) {
            it->broken_at = pos; /* no whole entry ends here */
            pos = 0;
            break;
        }
        uint64_t meta_off = pos - SIMDR__META_SIZE;
        simdr__prefetch_behind(base, pos);
        if (!it->live_bits || live_bit(it->live_bits, meta_off)) {
            it->batch[n++] = meta_off;
            it->left--;
        }
        uint64_t prev = simdr__load_u64le(base + meta_off + 8);
        /* a link that does not go down is damage: the walk ends there */
        if (prev >= meta_off) {
            it->broken_at = pos;
            prev = 0;
        }
        pos = prev;
    }
    it->pos = pos;
    it->batch_at = 0;
    it->batch_n = n;
}

/* The end of a walk against the bitmap or over a file without dead
 * entries: a walk that could not reach the start of the file, or reached it
 * with marked entries not met (a link skipped them), met damage the open
 * did not see (the chain was sound then); it is reported once, never passed
 * off as the end of the entries. */
static int walk_end(simdr_iter *it) {
    if (it->end_reported) return SIMDR_NOTFOUND;
    it->end_reported = 1;
    if (it->broken_at)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: damaged store: the chain of entries breaks at the entry ending "
                           "at offset %llu; the entries below it were not visited",
                           it->store->path, (unsigned long long)it->broken_at);
    if (!it->all_live && it->left > 0)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: damaged store: the chain of entries skips %llu live entries; "
                           "they were not visited",
                           it->store->path, (unsigned long long)it->left);
    return SIMDR_NOTFOUND;
}

static int next_marked(simdr_iter *it, const simdr_entry **entry) {
    uint64_t meta_off;
    /* Decoded in place: the caller sees it->current only after SIMDR_OK. */
    struct simdr_entry *e = &it->current;
    int rc;
    do {
        if (it->batch_at == it->batch_n) collect_marked(it);
        if (it->batch_at == it->batch_n) return walk_end(it);
        meta_off = it->batch[it->batch_at++];
        rc = simdr__entry_decode(it->map->base, it->map->len, meta_off, it->layout, e);
        /* No entry of a file without dead ones is a tombstone; were one
         * met, it is not yielded. */
    } while (rc == SIMDR_OK && it->all_live && e->tombstone);
    /* a damaged entry is reported once; the next call goes on */
    if (rc != SIMDR_OK)
        return simdr__fail(rc, "%s: damaged entry (metadata at %llu)", it->store->path,
                           (unsigned long long)meta_off);
    e->map = it->map; /* the check reads the value through the map's file */
    if (it->store->verify_reads) {
        rc = simdr__verify_payload(it->store, e);
        if (rc != SIMDR_OK) return rc;
        e->verified = 1;
    }
    e->shard = it->shard;
    *entry = e;
    return SIMDR_OK;
}

/* The chain walk's check of an entry it is about to yield as its key's
 * newest. Every key of the file keeps a slot (a tombstone once deleted), and
 * a key's own probe finds it. So the current index naming another entry of
 * that key (or a tombstone) below the snapshot's tail, or no slot found for
 * its hash at all, means the walk passed the key's newest entry unknowing,
 * or this entry's hash is not its key's: a key hash damaged in metadata,
 * which no CRC of the format covers. A slot at or past the tail (the key
 * written since), a hinted table's damaged block, or a file or index
 * replaced since tells nothing. */
static int passed_newer_version(simdr_iter *it, const struct simdr_entry *e) {
    simdr_store *s = it->store;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    int passed = 0;
    if (v->file_gen == it->file_gen) {
        unsigned probe = 0;
        const uint8_t *base = v->map->base;
        uint64_t val = simdr__index_get(v->index, base, v->map->len, e->key_hash, &probe);
        uint64_t off = val & SIMDR__IDX_OFF_MASK;
        if (val)
            passed = off < it->tail && off != e->meta_off;
        else /* unless a damaged block of a hinted table hides the slot */
            passed = !(probe & SIMDR__PROBE_BLOCK);
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    return passed;
}

SIMDR_API int simdr_iter_next(simdr_iter *it, const simdr_entry **entry) {
    if (!it || !entry) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (!it->walk_chain) return it->offs ? next_from_offsets(it, entry) : next_marked(it, entry);
    while (it->pos != 0) {
        if (it->pos <= SIMDR__META_SIZE) {
            it->broken_at = it->pos; /* no whole entry ends here */
            break;
        }
        struct simdr_entry e;
        uint64_t meta_off = it->pos - SIMDR__META_SIZE;
        int rc = simdr__entry_decode(it->map->base, it->map->len, meta_off, it->layout, &e);
        if (rc != SIMDR_OK) {
            /* Damaged but linked (the chain was proven sound at open): go on
             * behind it, and report it only where the index path would, as
             * the newest entry of its key. */
            uint64_t end = it->pos;
            simdr__meta m = simdr__meta_decode(it->map->base + meta_off);
            it->pos = m.prev < meta_off ? m.prev : 0;
            if (m.prev >= meta_off) it->broken_at = end; /* a link that does not go down */
            int added = hashset_add(&it->seen, m.key_hash);
            if (added < 0) return simdr__fail(SIMDR_ENOMEM, "out of memory");
            if (!added) continue;
            return simdr__fail(rc, "%s: damaged entry (ending at %llu)", it->store->path,
                               (unsigned long long)end);
        }
        it->pos = e.start;
        int added = hashset_add(&it->seen, e.key_hash);
        if (added < 0) return simdr__fail(SIMDR_ENOMEM, "out of memory");
        if (!added || e.tombstone) {
            /* Passed over, but its link is followed: a link damaged to skip
             * entries gives the entry another payload, which its CRC
             * catches, so the skip is reported, never silent. */
            if (it->store->verify_reads && simdr__verify_payload(it->store, &e) != SIMDR_OK)
                return SIMDR_ECORRUPT;
            continue;
        }
        if (passed_newer_version(it, &e))
            return simdr__fail(SIMDR_ECORRUPT,
                               "%s: damaged store: the entry ending at %llu is not its key's "
                               "newest (the index names another, which this walk passed under "
                               "a damaged key hash); not served",
                               it->store->path, (unsigned long long)e.meta_off + SIMDR__META_SIZE);
        e.map = it->map; /* the check reads the value through the map's file */
        if (it->store->verify_reads) {
            rc = simdr__verify_payload(it->store, &e);
            if (rc != SIMDR_OK) return rc;
            e.verified = 1;
        }
        e.shard = it->shard;
        it->current = e;
        *entry = &it->current;
        return SIMDR_OK;
    }
    it->pos = 0;
    return walk_end(it);
}

SIMDR_API void simdr_iter_close(simdr_iter *it) {
    if (!it) return;
    simdr__map_unpin(it->map, it->shard);
    simdr__free_big(it->live_bits, it->bits_bytes);
    simdr__free_big(it->offs, it->offs_bytes);
    simdr__u64table_free(&it->seen.t);
    free(it);
}

SIMDR_API int simdr_for_each(simdr_store *s, simdr_visit_fn fn, void *ctx) {
    if (!s || !fn) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_iter *it;
    int rc = simdr_iter_open(s, &it);
    if (rc != SIMDR_OK) return rc;
    const simdr_entry *e;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
        if (fn(ctx, e) != 0) {
            rc = simdr__fail(SIMDR_ESTOPPED, "stopped by the callback");
            break;
        }
    }
    simdr_iter_close(it);
    return rc == SIMDR_NOTFOUND ? SIMDR_OK : rc;
}

/* Live metadata offsets from the index, inside an epoch section. */
int simdr__live_offsets(simdr_store *s, simdr__view *v, uint64_t **out, uint64_t *n) {
    (void)s;
    if (simdr__index_check_all(v->index) != 0) return SIMDR_ECORRUPT;
    const simdr__index *ix = v->index;
    /* Counted first, so that the list is as long as the live entries, not
     * the table (one reserved from a huge expected_keys has far more slots
     * than keys); a key the writer adds between the two passes may be left
     * out, as any key written during a walk may. */
    uint64_t count = 0, k = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint64_t *offs = NULL;
        if (pass == 1 && !(offs = malloc((count ? count : 1) * sizeof *offs))) return SIMDR_ENOMEM;
        for (uint64_t i = simdr__index_walk_from(ix, 0); i < ix->cap && (pass == 0 || k < count);
             i = simdr__index_walk_from(ix, i + 1)) {
            uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
            if (!val || (val & SIMDR__IDX_TOMB)) continue;
            if (pass == 0)
                count++;
            else
                offs[k++] = val & SIMDR__IDX_OFF_MASK;
        }
        if (pass == 1) *out = offs;
    }
    *n = k;
    return SIMDR_OK;
}

typedef struct par_job {
    simdr__map *map;
    int layout;
    int verify;
    const uint64_t *offs;
    uint64_t begin, end;
    simdr_visit_fn fn;
    void *ctx;
    _Atomic int *stop;
    int rc;
    int started;
} par_job;

static void *par_worker(void *arg) {
    par_job *j = arg;
    for (uint64_t i = j->begin; i < j->end; i++) {
        if (atomic_load_explicit(j->stop, memory_order_relaxed)) break;
        struct simdr_entry e;
        int decoded = simdr__entry_decode(j->map->base, j->map->len, j->offs[i], j->layout, &e);
        e.map = j->map; /* the check reads the value through the map's file */
        if (decoded != SIMDR_OK || (j->verify && !simdr__payload_sound(&e))) {
            j->rc = SIMDR_ECORRUPT;
            atomic_store(j->stop, 1);
            break;
        }
        e.verified = j->verify;
        e.map = j->map;
        e.shard = 0;
        if (j->fn(j->ctx, &e) != 0) {
            j->rc = SIMDR_ESTOPPED;
            atomic_store(j->stop, 1);
            break;
        }
    }
    return NULL;
}

SIMDR_API int simdr_for_each_parallel(simdr_store *s, unsigned nthreads, simdr_visit_fn fn,
                                      void *ctx) {
    if (!s || !fn) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (nthreads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (nthreads > 256) nthreads = 256;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    simdr__map *map = v->map;
    uint64_t *offs, n;
    int rc = simdr__live_offsets(s, v, &offs, &n);
    if (rc == SIMDR_OK) simdr__map_pin(map, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    if (rc == SIMDR_ECORRUPT)
        return simdr__fail(rc, "%s: the index loaded from the hint file is damaged (the hint "
                               "is removed; the next write or open rebuilds the index)",
                           s->path);
    if (rc != SIMDR_OK) return simdr__fail(rc, "out of memory");
    /* In file order each thread reads one contiguous stretch of the map
     * (sequential, prefetchable, its pages touched by one thread) instead of
     * entries scattered over the whole file. */
    simdr__sort_offsets(offs, n);
    par_job *jobs = calloc(nthreads, sizeof *jobs);
    pthread_t *tids = calloc(nthreads, sizeof *tids);
    _Atomic int stop = 0;
    if (!jobs || !tids) {
        free(jobs); free(tids); free(offs);
        simdr__map_unpin(map, shard);
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    }
    int layout = atomic_load(&s->layout);
    for (unsigned t = 0; t < nthreads; t++)
        jobs[t] = (par_job){map, layout, s->verify_reads, offs, n * t / nthreads,
                            n * (t + 1) / nthreads,
                            fn, ctx, &stop, SIMDR_OK, 0};
    /* The calling thread takes the first share; a thread that cannot be
     * created has its share run here instead. */
    for (unsigned t = 1; t < nthreads; t++)
        jobs[t].started = simdr__io.thread_create(&tids[t], par_worker, &jobs[t]) == 0;
    par_worker(&jobs[0]);
    for (unsigned t = 1; t < nthreads; t++) {
        if (jobs[t].started)
            pthread_join(tids[t], NULL);
        else
            par_worker(&jobs[t]);
    }
    rc = SIMDR_OK;
    for (unsigned t = 0; t < nthreads && rc == SIMDR_OK; t++) rc = jobs[t].rc;
    free(jobs);
    free(tids);
    free(offs);
    simdr__map_unpin(map, shard);
    if (rc == SIMDR_ESTOPPED) return simdr__fail(rc, "stopped by the callback");
    if (rc != SIMDR_OK) return simdr__fail(rc, "%s: corrupt entry met during iteration", s->path);
    return SIMDR_OK;
}

SIMDR_API int simdr_check(simdr_store *s, simdr_check_fn fn, void *ctx,
                          simdr_check_report *report) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    simdr_check_report rep = {0, 0, 0};
    /* The tail and the file's size are taken between two writes (an append
     * in flight is not damage), and the file descriptor is the one a
     * compaction or a refresh may replace under this lock. */
    /* Not taken by a stream source of s (it holds the lock already), nor in
     * a forked child (a thread of the parent may hold it there forever; an
     * inherited handle is not written or compacted in the child). */
    int locked = simdr__writer_lock_usable(s);
    if (locked) pthread_mutex_lock(&s->wlock);
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    simdr__map *map = v->map;
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    simdr__map_pin(map, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    int layout = atomic_load(&s->layout);
    int stopped = 0;
    uint64_t skipped_end = 0;
    if (s->readonly && s->recovery.bytes_cut && !s->recovery.truncated &&
        !s->recovery.zeros_only && s->recovery.valid_size == tail &&
        /* still there: a writer's open since cuts them and may write sound
         * entries over them (or a mapped one leaves zeros there), and they
         * are damage no more */
        simdr__file_range_hash(s->fd, tail, tail + s->recovery.bytes_cut) == s->torn_hash)
        skipped_end = s->recovery.valid_size + s->recovery.bytes_cut;
    if (locked) pthread_mutex_unlock(&s->wlock);

    /* Bytes beyond the valid chain that a read-only open found and skipped
     * (a torn or damaged file) are a problem in themselves. They are taken
     * from what the open saw, not from the file's size now: bytes a live
     * writer has in flight beyond its committed tail are neither. */
    if (skipped_end) {
        simdr_check_issue is = {tail, skipped_end, 0, SIMDR_ECORRUPT,
                                "bytes after the end of the valid chain (torn append, "
                                "garbage, or a break in the chain)"};
        rep.bad_entries++;
        if (fn && fn(ctx, &is)) stopped = 1;
    }
    for (uint64_t p = tail; p != 0 && !stopped;) {
        struct simdr_entry e;
        if (simdr__entry_decode(map->base, map->len, p - SIMDR__META_SIZE, layout, &e) !=
            SIMDR_OK) {
            simdr_check_issue is = {0, p, 0, SIMDR_ECORRUPT, "broken chain link"};
            rep.bad_entries++;
            if (fn) fn(ctx, &is);
            break;
        }
        rep.entries++;
        rep.bytes_checked += p - e.start;
        int layout_probe = layout;
        if (!simdr__entry_crc_ok(map->base, e.start, e.meta_off, e.checksum, &layout_probe)) {
            simdr_check_issue is = {e.start, p, e.key_hash, SIMDR_ECHECKSUM,
                                    "checksum mismatch"};
            rep.bad_entries++;
            if (fn && fn(ctx, &is)) stopped = 1;
        }
        p = e.start;
    }
    simdr__map_unpin(map, shard);
    if (report) *report = rep;
    if (rep.bad_entries)
        return simdr__fail(SIMDR_ECORRUPT, "%s: %llu damaged entr%s found", s->path,
                           (unsigned long long)rep.bad_entries,
                           rep.bad_entries == 1 ? "y" : "ies");
    return SIMDR_OK;
}
