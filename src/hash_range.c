/*
 * hash_range.c - the live keys whose hashes fall in a range of the index's
 * own order: the base of cursors that step through a store a few keys at a
 * time (simdr-server's SCAN and RANDOMKEY) without a snapshot of every key.
 *
 * A key's home slot is its hash's low 32 bits scaled to the table's
 * capacity (simdr__index_bucket), so the homes of the hashes whose low 32
 * bits lie in [from, to) are the slots from bucket(from) to bucket(to - 1),
 * in any capacity: a cursor in that order survives growth and compaction.
 * Linear probing places a key at the first free slot at or after its home
 * and slots are never emptied, so every slot between a key's home and its
 * place is taken: the keys of the range are in the slots from bucket(from)
 * up to the first free slot after bucket(to - 1) (around the end of the
 * table and back). Keys displaced into that stretch from homes before it
 * are told apart by their hashes, read from their metadata.
 */
#include "internal.h"

/* A hinted table with a damaged block, rebuilt from the chain as the next
 * write would rebuild it: by a writable handle whose writer lock is free
 * (only tried: readers never wait for writers), outside a read scope of the
 * store (the rebuild waits for the readers of the old table). Without it a
 * store nobody writes to would answer SIMDR_ECORRUPT until it is reopened.
 * 1 when the table is sound now. */
static int settle_damaged_table(simdr_store *s) {
    if (s->readonly || simdr__forked(s) || simdr__in_read_scope(s)) return 0;
    if (pthread_mutex_trylock(&s->wlock) != 0) return 0;
    int sound = simdr__check_writable(s) == SIMDR_OK && simdr__index_settle(s) == SIMDR_OK;
    pthread_mutex_unlock(&s->wlock);
    return sound;
}

SIMDR_API int64_t simdr_hashes_in_range(simdr_store *s, uint64_t from, uint64_t to,
                                        uint64_t *out, size_t cap) {
    if (!s || from >= to || to > (UINT64_C(1) << 32) || (cap && !out))
        return simdr__fail(SIMDR_EINVAL, "simdr_hashes_in_range: need from < to <= 2^32 and "
                                         "out for cap hashes");
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    const simdr__index *ix = v->index;
    int64_t found = 0;
    /* A hinted table with a damaged block names no trustworthy keys. */
    if (simdr__index_check_all(ix) != 0) {
        simdr__epoch_exit(&s->epoch, shard, tok);
        if (settle_damaged_table(s)) return simdr_hashes_in_range(s, from, to, out, cap);
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: a block of the index loaded from the hint file is damaged; it "
                           "is rebuilt at the next write (or reopen the store)",
                           s->path);
    }
    const uint8_t *base = v->map->base;
    uint64_t len = v->map->len, slots = ix->cap;
    uint64_t first = simdr__index_bucket(from, slots);
    uint64_t span = simdr__index_bucket(to - 1, slots) - first; /* steps to the last home */
    uint64_t i = first;
    for (uint64_t step = 0; step < slots; step++, i = simdr__probe_next(i, slots)) {
        if (simdr__index_page_untouched(ix, i)) { /* a reserved table: a page of empty slots */
            if (step + SIMDR__INDEX_PAGE_SLOTS - 1 > span) break;
            step += SIMDR__INDEX_PAGE_SLOTS - 1;
            i += SIMDR__INDEX_PAGE_SLOTS - 1;
            continue;
        }
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (val == 0) {
            if (step > span) break;
            continue;
        }
        if (val & SIMDR__IDX_TOMB) continue;
        uint64_t off = val & SIMDR__IDX_OFF_MASK;
        if (off > len || len - off < SIMDR__META_SIZE) continue; /* not in this view's map */
        uint64_t hash = simdr__load_u64le(base + off);
        if (((hash ^ val) & SIMDR__IDX_TAG_MASK) != 0) {
            simdr__epoch_exit(&s->epoch, shard, tok);
            return simdr__fail(SIMDR_ECORRUPT,
                               "%s: damaged store: the metadata at offset %llu no longer holds "
                               "the hash its index slot was filed under (run the check command)",
                               s->path, (unsigned long long)off);
        }
        uint64_t low = hash & 0xffffffffu;
        if (low < from || low >= to) continue;
        if ((uint64_t)found < cap) out[found] = hash;
        found++;
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    return found;
}
