/*
 * read.c - lookups and entry handles. Readers take no lock: an epoch section
 * (epoch.c) keeps the view they loaded alive, the index gives the newest
 * metadata offset, and a handle pins the map so its bytes outlive the
 * section, growth, compaction and close.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

int simdr__entry_decode_span(const uint8_t *span, uint64_t prev, uint64_t meta_off, int layout,
                             struct simdr_entry *e) {
    const uint8_t *meta = span + (meta_off - prev);
    e->key_hash = simdr__load_u64le(meta);
    e->checksum = simdr__load_u32le(meta + 16);
    e->start = prev;
    e->meta_off = meta_off;
    uint64_t payload_at = 0;
    if (meta_off - prev == 1 && span[0] == SIMDR__TOMBSTONE_BYTE) {
        e->tombstone = 1;
    } else {
        payload_at = simdr__pad_for(prev, layout == SIMDR_LAYOUT_ALIGNED64);
        if (meta_off - prev <= payload_at) return SIMDR_ECORRUPT;
        e->tombstone = 0;
    }
    e->payload_off = prev + payload_at;
    e->data = span + payload_at;
    e->size = meta_off - e->payload_off;
    return SIMDR_OK;
}

int simdr__entry_decode(const uint8_t *base, uint64_t map_len, uint64_t meta_off, int layout,
                        struct simdr_entry *e) {
    if (meta_off + SIMDR__META_SIZE > map_len) return SIMDR_ECORRUPT;
    uint64_t prev = simdr__load_u64le(base + meta_off + 8);
    if (prev >= meta_off) return SIMDR_ECORRUPT;
    return simdr__entry_decode_span(base + prev, prev, meta_off, layout, e);
}

/* Inside an epoch section: the slot value for hash in the freshest view. */
static uint64_t find(simdr_store *s, uint64_t hash, simdr__view **vout) {
    for (;;) {
        simdr__view *v = simdr__current_view(s);
        int beyond = 0;
        uint64_t val = simdr__index_get(v->index, v->map->base, v->map->len, hash, &beyond);
        /* A candidate past this view's map was appended after the writer
         * grew the map into a newer view: look again there. */
        if (!val && beyond) continue;
        *vout = v;
        return val;
    }
}

static int make_handle(simdr_store *s, simdr__view *v, uint64_t val, unsigned shard,
                       simdr_entry **out) {
    simdr_entry *e = malloc(sizeof *e);
    if (!e) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    int rc = simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK,
                                 atomic_load_explicit(&s->layout, memory_order_relaxed), e);
    if (rc != SIMDR_OK) {
        free(e);
        return simdr__fail(rc, "%s: corrupt metadata at offset %llu", s->path,
                           (unsigned long long)(val & SIMDR__IDX_OFF_MASK));
    }
    e->map = v->map;
    e->shard = shard;
    simdr__map_pin(v->map, shard);
    *out = e;
    return SIMDR_OK;
}

int simdr__lookup(simdr_store *s, uint64_t hash, simdr_entry **out) {
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v;
    uint64_t val = find(s, hash, &v);
    int rc = (!val || (val & SIMDR__IDX_TOMB)) ? SIMDR_NOTFOUND : make_handle(s, v, val, shard, out);
    simdr__epoch_exit(&s->epoch, shard, tok);
    return rc;
}

SIMDR_API int simdr_get_hashed(simdr_store *s, uint64_t key_hash, simdr_entry **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    return simdr__lookup(s, key_hash, out);
}

SIMDR_API int simdr_get(simdr_store *s, const void *key, size_t key_len, simdr_entry **out) {
    if (!s || !out || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    return simdr__lookup(s, simdr_hash_key(key, key_len), out);
}

SIMDR_API int simdr_exists(simdr_store *s, const void *key, size_t key_len) {
    if (!s || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v;
    uint64_t val = find(s, simdr_hash_key(key, key_len), &v);
    int rc = val != 0 && !(val & SIMDR__IDX_TOMB);
    if (rc) {
        /* Agree with simdr_get: a newest entry whose metadata cannot be
         * decoded (damage) is an error, not a present key. */
        struct simdr_entry e;
        if (simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK,
                                atomic_load_explicit(&s->layout, memory_order_relaxed),
                                &e) != SIMDR_OK)
            rc = simdr__fail(SIMDR_ECORRUPT, "%s: corrupt metadata at offset %llu", s->path,
                             (unsigned long long)(val & SIMDR__IDX_OFF_MASK));
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    return rc;
}

SIMDR_API int simdr_get_copy(simdr_store *s, const void *key, size_t key_len, void *buf,
                             size_t cap, size_t *value_len) {
    if (!s || (!key && key_len) || (!buf && cap)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v;
    uint64_t val = find(s, simdr_hash_key(key, key_len), &v);
    int rc = SIMDR_NOTFOUND;
    if (val && !(val & SIMDR__IDX_TOMB)) {
        struct simdr_entry e;
        rc = simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK,
                                 atomic_load_explicit(&s->layout, memory_order_relaxed), &e);
        if (rc == SIMDR_OK) {
            if (value_len) *value_len = (size_t)e.size;
            if (e.size > cap)
                rc = SIMDR_ETOOBIG;
            else
                memcpy(buf, e.data, (size_t)e.size); /* safe: the section keeps the map */
        }
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    return rc;
}

SIMDR_API int64_t simdr_get_batch_hashed(simdr_store *s, const uint64_t *hashes, size_t n,
                                         simdr_entry **out) {
    if (!s || (!hashes && n) || (!out && n)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    enum { SLOT_AHEAD = 16, META_AHEAD = 8 };
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    int64_t found = 0;
    int rc = SIMDR_OK;
    simdr__view *v0 = simdr__current_view(s);
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    /* Two-stage software pipeline: the home slot of key i+16 is prefetched,
     * then the metadata that slot names for key i+8, so by the time key i is
     * looked up both of its cache misses are already in flight. */
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++) simdr__index_prefetch(v0->index, hashes[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + SLOT_AHEAD < n) simdr__index_prefetch(v0->index, hashes[i + SLOT_AHEAD]);
        if (i + META_AHEAD < n) {
            uint64_t peek = simdr__index_peek(v0->index, hashes[i + META_AHEAD]);
            uint64_t off = peek & SIMDR__IDX_OFF_MASK;
            if (peek && off < v0->map->len) __builtin_prefetch(v0->map->base + off);
        }
        simdr__view *v;
        uint64_t val = find(s, hashes[i], &v);
        if (!val || (val & SIMDR__IDX_TOMB)) continue;
        rc = make_handle(s, v, val, shard, &out[i]);
        if (rc != SIMDR_OK) break;
        found++;
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    if (rc != SIMDR_OK) {
        for (size_t i = 0; i < n; i++) {
            simdr_entry_release(out[i]);
            out[i] = NULL;
        }
        return rc;
    }
    return found;
}

SIMDR_API int64_t simdr_get_batch(simdr_store *s, const simdr_key *keys, size_t n,
                                  simdr_entry **out) {
    if (!s || (!keys && n) || (!out && n)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (n == 0) return 0;
    uint64_t stack[256];
    uint64_t *hashes = n <= 256 ? stack : malloc(n * sizeof *hashes);
    if (!hashes) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) hashes[i] = simdr_hash_key(keys[i].key, keys[i].key_len);
    int64_t rc = simdr_get_batch_hashed(s, hashes, n, out);
    if (hashes != stack) free(hashes);
    return rc;
}

SIMDR_API int simdr_get_last(simdr_store *s, simdr_entry **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    int rc = tail == 0 ? SIMDR_NOTFOUND
                       : make_handle(s, v, tail - SIMDR__META_SIZE, shard, out);
    simdr__epoch_exit(&s->epoch, shard, tok);
    return rc;
}

SIMDR_API void simdr_entry_release(simdr_entry *e) {
    if (!e) return;
    simdr__map_unpin(e->map, e->shard);
    free(e);
}

SIMDR_API int simdr_entry_dup(const simdr_entry *e, simdr_entry **out) {
    if (!e || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_entry *d = malloc(sizeof *d);
    if (!d) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    *d = *e;
    d->shard = simdr__thread_shard();
    simdr__map_pin(d->map, d->shard);
    *out = d;
    return SIMDR_OK;
}

SIMDR_API const void *simdr_entry_data(const simdr_entry *e) { return e ? e->data : NULL; }
SIMDR_API uint64_t simdr_entry_size(const simdr_entry *e) { return e ? e->size : 0; }
SIMDR_API uint64_t simdr_entry_key_hash(const simdr_entry *e) { return e ? e->key_hash : 0; }
SIMDR_API uint32_t simdr_entry_checksum(const simdr_entry *e) { return e ? e->checksum : 0; }
SIMDR_API uint64_t simdr_entry_offset(const simdr_entry *e) { return e ? e->payload_off : 0; }
SIMDR_API uint64_t simdr_entry_end(const simdr_entry *e) {
    return e ? e->meta_off + SIMDR__META_SIZE : 0;
}
SIMDR_API uint64_t simdr_entry_start(const simdr_entry *e) { return e ? e->start : 0; }
SIMDR_API int simdr_entry_is_tombstone(const simdr_entry *e) { return e ? e->tombstone : 0; }

SIMDR_API int simdr_entry_verify(const simdr_entry *e) {
    if (!e) return simdr__fail(SIMDR_EINVAL, "NULL entry");
    if (simdr__crc32(0, e->data, e->size) != e->checksum)
        return simdr__fail(SIMDR_ECHECKSUM, "checksum mismatch in the entry at offset %llu",
                           (unsigned long long)e->payload_off);
    return SIMDR_OK;
}

SIMDR_API int simdr_entry_chunk(const simdr_entry *e, uint64_t offset, size_t max,
                                const void **ptr, size_t *len, int advise_done) {
    if (!e || !ptr || !len || !max) return simdr__fail(SIMDR_EINVAL, "invalid argument");
    if (offset >= e->size) return SIMDR_NOTFOUND;
    uint64_t n = e->size - offset;
    if (n > max) n = max;
    *ptr = e->data + offset;
    *len = (size_t)n;
    if (advise_done && offset > 0) {
        /* Drop the whole pages of the chunk just consumed (the max bytes
         * before offset) so a huge value streams through memory instead of
         * accumulating in this process. Only that window: re-advising the
         * whole consumed prefix on every call would make a read quadratic. */
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t first = ((uintptr_t)e->data + page - 1) & ~(page - 1);
        uintptr_t back = (uintptr_t)(offset < max ? offset : max);
        uintptr_t from = ((uintptr_t)e->data + offset - back) & ~(page - 1);
        if (from < first) from = first;
        uintptr_t to = ((uintptr_t)e->data + offset) & ~(page - 1);
        if (to > from) madvise((void *)from, to - from, MADV_DONTNEED);
    }
    return SIMDR_OK;
}
