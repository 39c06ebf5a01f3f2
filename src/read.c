/*
 * read.c - lookups and entry handles. Readers take no lock: an epoch section
 * (epoch.c) keeps the view they loaded alive, the index gives the newest
 * metadata offset, and a handle pins the map so its bytes outlive the
 * section, growth, compaction and close.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "crc_short.h"
#include "epoch_inline.h"

/* The key hash inline: a call into the shared library per key costs as much
 * as hashing a short key. Same XXH3-64 as simdr_hash_key (digest.c). */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zlib.h>

static __attribute__((noinline)) uint64_t key_hash_long(const void *key, size_t key_len) {
    return XXH3_64bits(key, key_len);
}

/* Keys up to 16 bytes (the common case) are hashed inline; longer ones in
 * a call, so a get's hot path needs no registers saved for them. */
static inline uint64_t key_hash(const void *key, size_t key_len) {
    if (__builtin_expect(key_len <= 16, 1)) return XXH3_64bits(key_len ? key : "", key_len);
    return key_hash_long(key, key_len);
}

int simdr__entry_decode_span(const uint8_t *span, uint64_t prev, uint64_t meta_off, int layout,
                             struct simdr_entry *e) {
    const uint8_t *meta = span + (meta_off - prev);
    e->map = NULL; /* set by whoever pins the entry's map */
    e->block = NULL;
    e->verified = 0;
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
    /* Not meta_off + 20 > map_len: a link into the file's first 20 bytes
     * makes meta_off wrap below zero, and the sum wrap back under map_len. */
    if (meta_off > map_len || map_len - meta_off < SIMDR__META_SIZE) return SIMDR_ECORRUPT;
    uint64_t prev = simdr__load_u64le(base + meta_off + 8);
    if (prev >= meta_off) return SIMDR_ECORRUPT;
    return simdr__entry_decode_span(base + prev, prev, meta_off, layout, e);
}

/* Values up to INLINE_CRC_MAX bytes are checked in line (crc_short.h):
 * a call into the checksum library costs more instructions than the check,
 * and each instruction between two gets delays the next get's misses. */
enum { INLINE_CRC_MAX = SIMDR__CRC_SHORT_MAX };

/* zlib's crc32(0, p, n), for n <= INLINE_CRC_MAX, out of line (serve_slot
 * checks 8 bytes itself). */
static __attribute__((noinline)) uint32_t crc_short(const uint8_t *p, size_t n) {
    return simdr__crc32_short(0, p, n);
}

/* 1 if a decoded entry's payload matches its CRC: short values inline. */
static inline int payload_sound_fast(const struct simdr_entry *e) {
#ifdef SIMDR__CRC_CLMUL
    if (e->size == 8 && __builtin_cpu_supports("pclmul"))
        return simdr__crc32_8_clmul(e->data) == e->checksum;
#endif
    if (e->size <= INLINE_CRC_MAX) return crc_short(e->data, (size_t)e->size) == e->checksum;
    return simdr__payload_sound(e);
}

/* What find answers for a key whose probe met a damaged slot and no sound
 * one: no slot holds it (offsets stay below 2^47, every bit set is none). */
#define DAMAGED_SLOT UINT64_MAX

/* Inside an epoch section: the slot value for hash in the freshest view, or
 * DAMAGED_SLOT. */
static uint64_t find(simdr_store *s, uint64_t hash, simdr__view **vout) {
    for (;;) {
        simdr__view *v = simdr__current_view(s);
        unsigned probe = 0;
        uint64_t val = simdr__index_get(v->index, v->map->base, v->map->len, hash, &probe);
        /* A candidate past this view's map was appended after the writer
         * grew the map into a newer view: look again there. */
        if (!val && (probe & SIMDR__PROBE_BEYOND)) continue;
        *vout = v;
        return !val && (probe & SIMDR__PROBE_DAMAGED) ? DAMAGED_SLOT : val;
    }
}

static int damaged_slot(const simdr_store *s, uint64_t hash) {
    return simdr__fail(SIMDR_ECORRUPT,
                       "%s: damaged store: the index names an entry for key hash %016llx whose "
                       "metadata no longer holds it (run the check command)",
                       s->path, (unsigned long long)hash);
}

/* Values up to this size are checked in one pass through the map; a larger
 * one a step at a time, each step's whole pages dropped from this process
 * after (the map is a shared file mapping, so dropped pages come back from
 * the page cache unchanged when read again). */
#define VERIFY_STEP (UINT64_C(1) << 20)

static void drop_pages(const uint8_t *p, uint64_t n) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)p + n) & ~(page - 1);
    if (to > from) madvise((void *)from, to - from, MADV_DONTNEED);
}

/* The CRC-32 of a large value in the map, read with pread from the mapped
 * file's own description into a buffer instead of through the map: a first
 * touch of each mapped page costs more than copying its bytes (measured in
 * docs/BENCHMARKS.md: 40 ms against 7 ms for 100 MB), and the check then
 * maps nothing in. 1 with *crc set; -1 when the file ends before the value
 * does (another program cut it: reading those pages through the map would
 * raise SIGBUS); 0 when it cannot (no description, no buffer, a failed
 * read): the caller checks through the map. */
static int payload_crc_by_read(const struct simdr_entry *e, uint32_t *crc) {
    const simdr__map *m = e->map;
    if (!m || m->fd < 0 || e->data != m->base + e->payload_off) return 0;
    uint8_t *buf = malloc(VERIFY_STEP);
    if (!buf) return 0;
    uint32_t c = 0;
    int rc = 1;
    for (uint64_t at = 0; rc == 1 && at < e->size;) {
        uint64_t want = e->size - at < VERIFY_STEP ? e->size - at : VERIFY_STEP;
        ssize_t n = simdr__io.pread(m->fd, buf, (size_t)want, (off_t)(e->payload_off + at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = 0;
        } else if (n == 0) {
            rc = -1;
        } else {
            c = simdr__crc32(c, buf, (uint64_t)n);
            at += (uint64_t)n;
        }
    }
    free(buf);
    if (rc == 1) *crc = c;
    return rc;
}

int simdr__payload_sound(const struct simdr_entry *e) {
    if (e->size <= VERIFY_STEP) return simdr__crc32(0, e->data, e->size) == e->checksum;
    uint32_t crc = 0;
    int read = payload_crc_by_read(e, &crc);
    if (read != 0) return read == 1 && crc == e->checksum;
    for (uint64_t at = 0; at < e->size; at += VERIFY_STEP) {
        uint64_t n = e->size - at < VERIFY_STEP ? e->size - at : VERIFY_STEP;
        crc = simdr__crc32(crc, e->data + at, n);
        drop_pages(e->data + at, n);
    }
    return crc == e->checksum;
}

int simdr__fail_checksum(int code, const char *path, const char *head,
                         const struct simdr_entry *e, const char *tail) {
    return simdr__fail(code,
                       "%s%s%schecksum mismatch in the entry at offset %llu..%llu (a %llu-byte "
                       "value at %llu)%s",
                       path ? path : "", path ? ": " : "", head, (unsigned long long)e->start,
                       (unsigned long long)(e->meta_off + SIMDR__META_SIZE),
                       (unsigned long long)e->size, (unsigned long long)e->payload_off, tail);
}

int simdr__verify_payload(const simdr_store *s, const struct simdr_entry *e) {
    if (payload_sound_fast(e)) return SIMDR_OK;
    return simdr__fail_checksum(SIMDR_ECORRUPT, s->path, "damaged value: ", e,
                                "; its bytes are not served");
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

/* The CRC check of a handle just made, outside the epoch section (a large
 * value takes a while and must not hold up a writer's grace period). */
static int verify_handle(simdr_store *s, int verify, simdr_entry **out) {
    if (!verify) return SIMDR_OK;
    /* The full check again only to name the damage. */
    int rc = payload_sound_fast(*out) ? SIMDR_OK : simdr__verify_payload(s, *out);
    if (rc != SIMDR_OK) {
        simdr_entry_release(*out);
        *out = NULL;
        return rc;
    }
    (*out)->verified = 1;
    return SIMDR_OK;
}

static int lookup(simdr_store *s, uint64_t hash, int verify, simdr_entry **out) {
    unsigned shard;
    unsigned tok = simdr__epoch_join(&s->epoch, &shard);
    simdr__view *v;
    uint64_t val = find(s, hash, &v);
    int rc = val == DAMAGED_SLOT                    ? damaged_slot(s, hash)
             : (!val || (val & SIMDR__IDX_TOMB)) ? SIMDR_NOTFOUND
                                                 : make_handle(s, v, val, shard, out);
    simdr__epoch_leave(&s->epoch, shard, tok);
    return rc == SIMDR_OK ? verify_handle(s, verify, out) : rc;
}

int simdr__lookup(simdr_store *s, uint64_t hash, simdr_entry **out) {
    return lookup(s, hash, 1, out);
}

SIMDR_API int simdr_get_hashed(simdr_store *s, uint64_t key_hash, simdr_entry **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    return lookup(s, key_hash, s->verify_reads, out);
}

SIMDR_API int simdr_get(simdr_store *s, const void *key, size_t key_len, simdr_entry **out) {
    if (!s || !out || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    return lookup(s, key_hash(key, key_len), s->verify_reads, out);
}

SIMDR_API int simdr_exists(simdr_store *s, const void *key, size_t key_len) {
    if (!s || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    unsigned shard;
    unsigned tok = simdr__epoch_join(&s->epoch, &shard);
    simdr__view *v;
    uint64_t hash = key_hash(key, key_len);
    uint64_t val = find(s, hash, &v);
    int rc = val != 0 && !(val & SIMDR__IDX_TOMB);
    if (val == DAMAGED_SLOT) {
        rc = damaged_slot(s, hash);
    } else if (rc) {
        /* Agree with simdr_get: a newest entry whose metadata cannot be
         * decoded (damage) is an error, not a present key. */
        struct simdr_entry e;
        if (simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK,
                                atomic_load_explicit(&s->layout, memory_order_relaxed),
                                &e) != SIMDR_OK)
            rc = simdr__fail(SIMDR_ECORRUPT, "%s: corrupt metadata at offset %llu", s->path,
                             (unsigned long long)(val & SIMDR__IDX_OFF_MASK));
        else if (s->verify_reads)
            rc = simdr__verify_payload(s, &e) == SIMDR_OK ? 1 : SIMDR_ECORRUPT;
    }
    simdr__epoch_leave(&s->epoch, shard, tok);
    return rc;
}

SIMDR_API int simdr_get_copy(simdr_store *s, const void *key, size_t key_len, void *buf,
                             size_t cap, size_t *value_len) {
    if (!s || (!key && key_len) || (!buf && cap)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    unsigned shard;
    unsigned tok = simdr__epoch_join(&s->epoch, &shard);
    simdr__view *v;
    uint64_t hash = key_hash(key, key_len);
    uint64_t val = find(s, hash, &v);
    int rc = SIMDR_NOTFOUND;
    uint64_t size = 0;
    if (val == DAMAGED_SLOT) {
        rc = damaged_slot(s, hash);
    } else if (val && !(val & SIMDR__IDX_TOMB)) {
        struct simdr_entry e;
        rc = simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK,
                                 atomic_load_explicit(&s->layout, memory_order_relaxed), &e);
        if (rc == SIMDR_OK) {
            size = e.size;
            if (value_len) *value_len = (size_t)e.size;
            if (e.size > cap)
                rc = SIMDR_ETOOBIG;
            else if (s->verify_reads && (rc = simdr__verify_payload(s, &e)) != SIMDR_OK)
                ; /* buf untouched: damaged bytes are not handed out */
            else
                memcpy(buf, e.data, (size_t)e.size); /* safe: the section keeps the map */
        }
    }
    simdr__epoch_leave(&s->epoch, shard, tok);
    if (rc == SIMDR_ETOOBIG) /* the message after the section: formatting is no read */
        return simdr__fail(rc, "%s: the value has %llu bytes, the buffer %zu", s->path,
                           (unsigned long long)size, cap);
    return rc;
}

/* One allocation and one map pin for the handles a batch read returns from
 * one window of keys: a malloc, a pin and a free per key cost more than the
 * lookup itself. Each handle still belongs to the caller alone and is
 * released alone (in any order, from any thread); the block counts them and
 * goes, with its pin, when the last one is released. A window is small, so a
 * handle kept long after its siblings holds at most BATCH_WINDOW handles'
 * memory (about 22 KB), never more. */
struct simdr__entry_block {
    _Atomic uint64_t live; /* handles not yet released */
    simdr__map *map;       /* pinned once for all of them */
    unsigned shard;
    struct simdr_entry entries[];
};

/* Keys looked up together: small enough for the stack and for the block a
 * long-kept handle holds on to, large enough that filling the pipeline (one
 * chain of miss latencies) and the block's malloc and pin stay a small share. */
enum { BATCH_WINDOW = 256 };

/* The lookups of one window as a software pipeline, so that the cache misses
 * of different keys overlap instead of following one another. A keyed lookup
 * costs three dependent misses: the key's bytes, its home slot, then the
 * metadata the slot names. While key i is looked up, key i + META_AHEAD's
 * metadata, key i + SLOT_AHEAD's slot and key i + KEY_AHEAD's bytes are on
 * their way, so each stage finds its line in cache. The early stages only
 * prefetch; the answer comes from simdr__index_get, so a writer changing a
 * slot in between costs at most a miss, never a wrong result.
 * Distances (in keys) measured on 1M keys: anything from 16/10/5 to 64/48/24
 * performs the same; the shortest that does keeps small batches cheap.
 * With keys, hashes[0..n) is filled here from them; without, it holds the
 * caller's hashes. vals[i] receives the slot value; retry[i] = 1 where a
 * candidate lay past this view's map. Returns how many retry[i] are set. */
static size_t lookup_window(const simdr__view *v, const simdr_key *keys, uint64_t *hashes,
                            size_t n, uint64_t *vals, unsigned char *retry) {
    enum { KEY_AHEAD = 24, SLOT_AHEAD = 16, META_AHEAD = 8 };
    const simdr__index *ix = v->index;
    const uint8_t *base = v->map->base;
    uint64_t len = v->map->len;
    size_t retries = 0;
    /* Prologue: the first keys run the early stages back to back. */
    if (keys) {
        for (size_t i = 0; i < n && i < KEY_AHEAD; i++) __builtin_prefetch(keys[i].key);
        for (size_t i = 0; i < n && i < SLOT_AHEAD; i++)
            hashes[i] = key_hash(keys[i].key, keys[i].key_len);
    }
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++) simdr__index_prefetch(ix, hashes[i]);
    for (size_t i = 0; i < n && i < META_AHEAD; i++)
        simdr__index_prefetch_meta(ix, base, len, hashes[i]);
    for (size_t i = 0; i < n; i++) {
        if (keys && i + KEY_AHEAD < n) __builtin_prefetch(keys[i + KEY_AHEAD].key);
        if (keys && i + SLOT_AHEAD < n) {
            size_t k = i + SLOT_AHEAD;
            hashes[k] = key_hash(keys[k].key, keys[k].key_len);
        }
        unsigned probe = 0;
        vals[i] = simdr__index_pipeline_step(ix, base, len,
                                             i + SLOT_AHEAD < n ? &hashes[i + SLOT_AHEAD] : NULL,
                                             i + META_AHEAD < n ? &hashes[i + META_AHEAD] : NULL,
                                             hashes[i], &probe);
        retry[i] = (unsigned char)(vals[i] == 0 && (probe & SIMDR__PROBE_BEYOND));
        if (vals[i] == 0 && !retry[i] && (probe & SIMDR__PROBE_DAMAGED)) vals[i] = DAMAGED_SLOT;
        retries += retry[i];
    }
    return retries;
}

/* One window of a batch read, inside the caller's epoch section. keys (may
 * be NULL) or hashes name the n keys; out[0..n) receives the handles and
 * *found counts them. */
static int get_window(simdr_store *s, unsigned shard, const simdr_key *keys,
                      const uint64_t *given_hashes, size_t n, simdr_entry **out,
                      int64_t *found) {
    uint64_t hashes[BATCH_WINDOW];
    uint64_t vals[BATCH_WINDOW];
    unsigned char retry[BATCH_WINDOW];
    /* A copy of the caller's hashes costs a few ns per window and keeps one
     * path for both calls. */
    if (!keys) memcpy(hashes, given_hashes, n * sizeof *hashes);
    simdr__view *v = simdr__current_view(s);
    size_t retries = lookup_window(v, keys, hashes, n, vals, retry);
    for (size_t i = 0; i < n; i++)
        if (vals[i] == DAMAGED_SLOT) return damaged_slot(s, hashes[i]);
    size_t wanted = 0;
    for (size_t i = 0; i < n; i++) wanted += vals[i] != 0 && !(vals[i] & SIMDR__IDX_TOMB);
    int rc = SIMDR_OK;
    if (wanted) {
        simdr__entry_block *b = malloc(sizeof *b + wanted * sizeof b->entries[0]);
        if (!b) return simdr__fail(SIMDR_ENOMEM, "out of memory");
        int layout = atomic_load_explicit(&s->layout, memory_order_relaxed);
        uint64_t used = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t val = vals[i];
            if (!val || (val & SIMDR__IDX_TOMB)) continue;
            struct simdr_entry *e = &b->entries[used];
            rc = simdr__entry_decode(v->map->base, v->map->len, val & SIMDR__IDX_OFF_MASK, layout,
                                     e);
            if (rc != SIMDR_OK) {
                rc = simdr__fail(rc, "%s: corrupt metadata at offset %llu", s->path,
                                 (unsigned long long)(val & SIMDR__IDX_OFF_MASK));
                break;
            }
            e->map = v->map;
            e->shard = shard;
            e->block = b;
            out[i] = e;
            used++;
        }
        /* The handles are not visible to any other thread before this call
         * returns, so the count can be set after they are filled. */
        if (used) {
            atomic_init(&b->live, used);
            b->map = v->map;
            b->shard = shard;
            simdr__map_pin(v->map, shard);
            *found += (int64_t)used;
        } else {
            free(b);
        }
        if (rc != SIMDR_OK) return rc;
    }
    /* Rare: a candidate lay past this view's map (appended after the map was
     * replaced); look those keys up one by one in the newest view. */
    for (size_t i = 0; retries && i < n; i++) {
        if (!retry[i]) continue;
        retries--;
        simdr__view *nv;
        uint64_t val = find(s, hashes[i], &nv);
        if (val == DAMAGED_SLOT) return damaged_slot(s, hashes[i]);
        if (!val || (val & SIMDR__IDX_TOMB)) continue;
        rc = make_handle(s, nv, val, shard, &out[i]);
        if (rc != SIMDR_OK) return rc;
        ++*found;
    }
    return SIMDR_OK;
}

/* Both batch calls: exactly one of keys and hashes is non-NULL (when n > 0). */
static int64_t get_batch(simdr_store *s, const simdr_key *keys, const uint64_t *hashes, size_t n,
                         simdr_entry **out) {
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    unsigned shard;
    unsigned tok = simdr__epoch_join(&s->epoch, &shard);
    int64_t found = 0;
    int rc = SIMDR_OK;
    for (size_t at = 0; at < n && rc == SIMDR_OK; at += BATCH_WINDOW) {
        size_t m = n - at < BATCH_WINDOW ? n - at : BATCH_WINDOW;
        rc = get_window(s, shard, keys ? keys + at : NULL, hashes ? hashes + at : NULL, m,
                        out + at, &found);
    }
    simdr__epoch_leave(&s->epoch, shard, tok);
    /* One damaged value fails the whole call, as damaged metadata does: a
     * NULL would say "absent". */
    for (size_t i = 0; i < n && rc == SIMDR_OK && s->verify_reads; i++) {
        if (!out[i]) continue;
        rc = simdr__verify_payload(s, out[i]);
        out[i]->verified = 1;
    }
    if (rc != SIMDR_OK) {
        for (size_t i = 0; i < n; i++) {
            simdr_entry_release(out[i]);
            out[i] = NULL;
        }
        return rc;
    }
    return found;
}

SIMDR_API int64_t simdr_get_batch_hashed(simdr_store *s, const uint64_t *hashes, size_t n,
                                         simdr_entry **out) {
    if (!s || (!hashes && n) || (!out && n)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    return get_batch(s, NULL, hashes, n, out);
}

SIMDR_API int64_t simdr_get_batch(simdr_store *s, const simdr_key *keys, size_t n,
                                  simdr_entry **out) {
    if (!s || (!keys && n) || (!out && n)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    for (size_t i = 0; i < n; i++) {
        if (!keys[i].key && keys[i].key_len) {
            for (size_t j = 0; j < n; j++) out[j] = NULL; /* as for any error */
            return simdr__fail(SIMDR_EINVAL, "NULL key");
        }
    }
    return get_batch(s, keys, NULL, n, out);
}

SIMDR_API int simdr_get_last(simdr_store *s, simdr_entry **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *out = NULL;
    unsigned shard;
    unsigned tok = simdr__epoch_join(&s->epoch, &shard);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    int rc = tail == 0 ? SIMDR_NOTFOUND
                       : make_handle(s, v, tail - SIMDR__META_SIZE, shard, out);
    simdr__epoch_leave(&s->epoch, shard, tok);
    return rc == SIMDR_OK ? verify_handle(s, s->verify_reads, out) : rc;
}

SIMDR_API void simdr_entry_release(simdr_entry *e) {
    if (!e) return;
    simdr__entry_block *b = e->block;
    if (!b) {
        simdr__map_unpin(e->map, e->shard);
        free(e);
        return;
    }
    /* acq_rel: every other handle's last use happens before the free. */
    if (atomic_fetch_sub_explicit(&b->live, 1, memory_order_acq_rel) == 1) {
        simdr__map_unpin(b->map, b->shard);
        free(b);
    }
}

SIMDR_API int simdr_entry_dup(const simdr_entry *e, simdr_entry **out) {
    if (!e || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_entry *d = malloc(sizeof *d);
    if (!d) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    *d = *e;
    d->block = NULL; /* pinned and released on its own */
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
    if (!simdr__payload_sound(e)) return simdr__fail_checksum(SIMDR_ECHECKSUM, NULL, "", e, "");
    return SIMDR_OK;
}

SIMDR_API int simdr_entry_chunk(const simdr_entry *e, uint64_t offset, size_t max,
                                const void **ptr, size_t *len, int advise_done) {
    if (!e || !ptr || !len || !max) return simdr__fail(SIMDR_EINVAL, "invalid argument");
    if (offset >= e->size) return SIMDR_NOTFOUND;
    uint64_t n = e->size - offset;
    if (n > max) n = max;
    /* A handle not checked at lookup (verify_reads = 0) is checked before
     * the chunk that ends the value is handed out, so a chunked read of a
     * damaged value never completes silently. */
    if (offset + n == e->size && !e->verified && !simdr__payload_sound(e))
        return simdr__fail_checksum(SIMDR_ECHECKSUM, NULL, "damaged value: ", e, "");
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

/* ---- read scopes ----
 * A scope is one epoch section held from begin to end: every map a get of
 * the scope pointed into stays mapped until then (a replaced map is retired
 * only after a grace period, which waits for the section). Gets in it take
 * no pin, allocate nothing and make no locked write, so consecutive gets
 * overlap their cache misses as far as the processor allows. The thread's
 * open scopes form a list, so a write on a store with an open scope in this
 * thread is refused instead of waiting for its own grace period. */
typedef struct read_scope {
    simdr_store *store;
    struct read_scope *outer; /* the thread's scope opened before this one */
    uintptr_t shard, token;
} read_scope;
_Static_assert(sizeof(read_scope) <= sizeof(simdr_read), "simdr_read holds a read_scope");

int simdr__in_read_scope(const simdr_store *s) {
    for (const read_scope *sc = simdr__this_reader.scopes; sc; sc = sc->outer)
        if (sc->store == s) return 1;
    return 0;
}

static void link_scope(read_scope *sc, simdr_store *s, unsigned shard, unsigned token) {
    sc->token = token;
    sc->shard = shard;
    sc->store = s;
    simdr__reader *r = &simdr__this_reader;
    sc->outer = r->scopes;
    r->scopes = sc;
}

/* A begin that needs epoch.c (first read of the thread, a shared shard, no
 * membarrier, an epoch flipped meanwhile), out of line so the common begin
 * makes no call. */
static __attribute__((noinline)) int begin_slow(simdr_store *s, read_scope *sc) {
    unsigned shard;
    unsigned token = simdr__epoch_join(&s->epoch, &shard);
    link_scope(sc, s, shard, token);
    return SIMDR_OK;
}

SIMDR_API int simdr_read_begin(simdr_store *s, simdr_read *scope) {
    if (__builtin_expect(!s || !scope, 0)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    read_scope *sc = (read_scope *)(void *)scope;
    unsigned shard, token;
    if (__builtin_expect(!simdr__epoch_join_fast(&s->epoch, &shard, &token), 0))
        return begin_slow(s, sc);
    link_scope(sc, s, shard, token);
    return SIMDR_OK;
}

SIMDR_API void simdr_read_end(simdr_read *scope) {
    read_scope *sc = (read_scope *)(void *)scope;
    if (__builtin_expect(!sc || !sc->store, 0)) return;
    /* Scopes usually end innermost first; any order is unlinked correctly. */
    simdr__reader *r = &simdr__this_reader;
    if (__builtin_expect(r->scopes == sc, 1)) {
        r->scopes = sc->outer;
    } else {
        for (read_scope **p = (read_scope **)&r->scopes; *p; p = &(*p)->outer) {
            if (*p == sc) {
                *p = sc->outer;
                break;
            }
        }
    }
    simdr__epoch_leave(&sc->store->epoch, (unsigned)sc->shard, (unsigned)sc->token);
    sc->store = NULL;
}

/* A live slot's entry decoded in full and, with verify_reads, its whole
 * value checked: the slow half of serve_slot, out of line. */
static __attribute__((noinline)) int serve_checked(simdr_store *s, const uint8_t *base,
                                                   uint64_t map_len, uint64_t val,
                                                   const void **value, size_t *value_len) {
    struct simdr_entry e;
    if (simdr__entry_decode(base, map_len, val & SIMDR__IDX_OFF_MASK,
                            atomic_load_explicit(&s->layout, memory_order_relaxed),
                            &e) != SIMDR_OK)
        return simdr__fail(SIMDR_ECORRUPT, "%s: corrupt metadata at offset %llu", s->path,
                           (unsigned long long)(val & SIMDR__IDX_OFF_MASK));
    if (s->verify_reads) {
        int rc = simdr__verify_payload(s, &e);
        if (rc != SIMDR_OK) return rc;
    }
    *value = e.data;
    *value_len = (size_t)e.size;
    return SIMDR_OK;
}

/* serve_slot with verify_reads for a value of any size: a short one checked
 * inline, a longer one (or one failing the short check, answered in full) by
 * serve_checked. */
static __attribute__((noinline)) int serve_any_size(simdr_store *s, const uint8_t *base,
                                                    uint64_t map_len, uint64_t val,
                                                    const void **value, size_t *value_len) {
    uint64_t meta_off = val & SIMDR__IDX_OFF_MASK;
    uint64_t prev = simdr__load_u64le(base + meta_off + 8);
    int aligned = atomic_load_explicit(&s->layout, memory_order_relaxed) == SIMDR_LAYOUT_ALIGNED64;
    uint64_t payload = prev + simdr__pad_for(prev, aligned);
    uint64_t size = meta_off - payload; /* the caller checked that payload < meta_off */
    if (size > INLINE_CRC_MAX ||
        crc_short(base + payload, (size_t)size) != simdr__load_u32le(base + meta_off + 16))
        return serve_checked(s, base, map_len, val, value, value_len);
    *value = base + payload;
    *value_len = (size_t)size;
    return SIMDR_OK;
}

/* The slow case of a scope's lookup, out of line: a candidate past this
 * view's map (look again in the newest view) or a damaged slot. */
static __attribute__((noinline)) int read_get_slow(simdr_store *s, uint64_t hash,
                                                   const void **value, size_t *value_len) {
    simdr__view *v;
    uint64_t val = find(s, hash, &v);
    if (val == DAMAGED_SLOT) return damaged_slot(s, hash);
    if (!val || (val & SIMDR__IDX_TOMB)) return SIMDR_NOTFOUND;
    return serve_checked(s, v->map->base, v->map->len, val, value, value_len);
}

/* A live slot's value for a scope, in as few instructions as it takes:
 * decode the entry (a live slot names a regular entry), check a short
 * value's CRC. Anything else (a long value to check, damaged metadata or a
 * short value failing its CRC, answered in full) goes to serve_checked. */
static inline __attribute__((always_inline)) int serve_slot(simdr_store *s, const uint8_t *base,
                                                            uint64_t map_len, uint64_t val,
                                                            const void **value,
                                                            size_t *value_len) {
    uint64_t meta_off = val & SIMDR__IDX_OFF_MASK; /* its metadata lies inside the map */
    const uint8_t *meta = base + meta_off;
    uint64_t prev = simdr__load_u64le(meta + 8);
    int aligned = atomic_load_explicit(&s->layout, memory_order_relaxed) == SIMDR_LAYOUT_ALIGNED64;
    uint64_t payload = prev + simdr__pad_for(prev, aligned);
    if (__builtin_expect(prev >= meta_off || payload >= meta_off, 0))
        return serve_checked(s, base, map_len, val, value, value_len);
    uint64_t size = meta_off - payload;
    if (s->verify_reads) {
#ifdef SIMDR__CRC_CLMUL
        /* 8 bytes, the commonest short value, here; any other size in a
         * call made last, so the hot path saves no registers for it. */
        if (__builtin_expect(size != 8, 0) ||
            __builtin_expect(!__builtin_cpu_supports("pclmul"), 0))
            return serve_any_size(s, base, map_len, val, value, value_len);
        if (__builtin_expect(simdr__crc32_8_clmul(base + payload) != simdr__load_u32le(meta + 16),
                             0))
            return serve_checked(s, base, map_len, val, value, value_len);
#else
        return serve_any_size(s, base, map_len, val, value, value_len);
#endif
    }
    *value = base + payload;
    *value_len = (size_t)size;
    return SIMDR_OK;
}

/* One get of a scope on s (checked arguments). The probe of
 * simdr__index_get for the common cases only: the key's slot, or an empty
 * slot before any slot with the key's tag (absent). Anything else (another
 * key with the same tag, an entry past this view's map, damage) goes to
 * read_get_slow, which probes again in full; so the hot path keeps few
 * values live and saves no registers. */
_Static_assert(SIMDR__IDX_TAG_MASK == UINT64_MAX << 48, "scope_get takes the tag as the top 16 bits");
static inline __attribute__((always_inline)) int scope_get(simdr_store *s, uint64_t hash,
                                                           const void **value,
                                                           size_t *value_len) {
    const simdr__view *v = simdr__current_view(s);
    const simdr__index *ix = v->index;
    const uint8_t *base = v->map->base;
    uint64_t len = v->map->len;
    /* A table mapped from the hint with blocks still to check: an empty
     * slot read from an unchecked block could be damage, so the full probe
     * (simdr__index_get) checks each block it enters. */
    if (__builtin_expect(atomic_load_explicit(&ix->unchecked, memory_order_relaxed), 0))
        return read_get_slow(s, hash, value, value_len);
    uint64_t i = simdr__index_bucket(hash, ix->cap);
    for (;;) {
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (!val) return SIMDR_NOTFOUND;
        if (((val ^ hash) >> 48) == 0) { /* the tag (SIMDR__IDX_TAG_MASK) matches */
            uint64_t off = val & SIMDR__IDX_OFF_MASK;
            if (__builtin_expect(off + SIMDR__META_SIZE > len, 0) ||
                __builtin_expect(simdr__load_u64le(base + off) != hash, 0))
                return read_get_slow(s, hash, value, value_len);
            if (__builtin_expect(val & SIMDR__IDX_TOMB, 0)) return SIMDR_NOTFOUND;
            return serve_slot(s, base, len, val, value, value_len);
        }
        i = simdr__probe_next(i, ix->cap);
    }
}

SIMDR_API int simdr_read_get_hashed(simdr_read *scope, uint64_t hash, const void **value,
                                    size_t *value_len) {
    read_scope *sc = (read_scope *)(void *)scope;
    if (__builtin_expect(!sc || !sc->store || !value || !value_len, 0))
        return simdr__fail(SIMDR_EINVAL, "NULL argument or no open scope");
    return scope_get(sc->store, hash, value, value_len);
}

/* simdr_read_get of a key longer than 16 bytes: its hash in a call, here,
 * so that simdr_read_get makes none but its last. */
static __attribute__((noinline)) int scope_get_long_key(simdr_store *s, const void *key,
                                                        size_t key_len, const void **value,
                                                        size_t *value_len) {
    return scope_get(s, key_hash_long(key, key_len), value, value_len);
}

SIMDR_API int simdr_read_get(simdr_read *scope, const void *key, size_t key_len,
                             const void **value, size_t *value_len) {
    read_scope *sc = (read_scope *)(void *)scope;
    if (__builtin_expect(!sc || !sc->store || !value || !value_len || (!key && key_len), 0))
        return simdr__fail(SIMDR_EINVAL, "NULL argument or no open scope");
    if (__builtin_expect(key_len > 16, 0))
        return scope_get_long_key(sc->store, key, key_len, value, value_len);
    return scope_get(sc->store, XXH3_64bits(key_len ? key : "", key_len), value, value_len);
}

/* A scope's get that the batch pipeline could not finish from the
 * candidate it prefetched (a tag shared with another key, an entry past the
 * view's map, damage): the single get, out of line. */
static __attribute__((noinline)) int batch_get_full(simdr_store *s, uint64_t hash,
                                                    const void **value, size_t *value_len) {
    return scope_get(s, hash, value, value_len);
}

/* The gets of one window of a scope's batch, as a software pipeline whose
 * stages overlap the cache misses of different keys. A get costs three
 * dependent misses: the key's bytes, its home slot, then the metadata (and
 * the short value beside it) the slot names. While key i is served, key
 * i + META_AHEAD's slot is read (in cache by then) and its candidate's
 * metadata prefetched, key i + SLOT_AHEAD is hashed and its home slot
 * prefetched, and key i + KEY_AHEAD's bytes are prefetched. The candidate
 * is the first slot of the probe run with the key's tag, or none when the
 * run ends first: an answer as of that moment, which a get may give. Only
 * a candidate whose metadata holds the key's full hash is served from; any
 * other goes through the single get. Distances as in lookup_window. */
static int scope_window(simdr_store *s, const simdr_key *keys, size_t n, const void **values,
                        size_t *value_lens, int64_t *found) {
    enum { KEY_AHEAD = 24, SLOT_AHEAD = 16, META_AHEAD = 8 };
    uint64_t hashes[BATCH_WINDOW], cands[BATCH_WINDOW];
    const simdr__view *v = simdr__current_view(s);
    const simdr__index *ix = v->index;
    const uint8_t *base = v->map->base;
    uint64_t len = v->map->len;
    /* Unchecked hint blocks: the pipeline's slot reads would take an empty
     * slot of a damaged block for an absence; each key takes the full probe
     * instead (scope_get), which checks the blocks it enters. */
    if (__builtin_expect(atomic_load_explicit(&ix->unchecked, memory_order_relaxed), 0)) {
        for (size_t i = 0; i < n; i++) {
            uint64_t h = key_hash(keys[i].key, keys[i].key_len);
            int rc = scope_get(s, h, &values[i], &value_lens[i]);
            if (rc == SIMDR_OK)
                ++*found;
            else if (rc != SIMDR_NOTFOUND)
                return rc;
        }
        return SIMDR_OK;
    }
#define HASH_STAGE(k)                                                                    \
    do {                                                                                 \
        uint64_t h_ = key_hash(keys[k].key, keys[k].key_len);                            \
        hashes[k] = h_;                                                                  \
        simdr__index_prefetch(ix, h_);                                                   \
    } while (0)
#define SLOT_STAGE(k)                                                                    \
    do {                                                                                 \
        uint64_t h_ = hashes[k];                                                         \
        uint64_t i_ = simdr__index_bucket(h_, ix->cap), v_;                              \
        for (;;) {                                                                       \
            v_ = atomic_load_explicit(&ix->slots[i_], memory_order_acquire);             \
            if (!v_ || ((v_ ^ h_) & SIMDR__IDX_TAG_MASK) == 0) break;                    \
            i_ = simdr__probe_next(i_, ix->cap);                                         \
        }                                                                                \
        cands[k] = v_;                                                                   \
        uint64_t off_ = v_ & SIMDR__IDX_OFF_MASK;                                        \
        if (v_ && off_ + SIMDR__META_SIZE <= len) {                                      \
            /* the metadata, and a short value just below it */                          \
            __builtin_prefetch(base + (off_ >= 8 ? off_ - 8 : 0));                       \
            __builtin_prefetch(base + off_ + SIMDR__META_SIZE - 1);                      \
        }                                                                                \
    } while (0)
    for (size_t i = 0; i < n && i < KEY_AHEAD; i++) __builtin_prefetch(keys[i].key);
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++) HASH_STAGE(i);
    for (size_t i = 0; i < n && i < META_AHEAD; i++) SLOT_STAGE(i);
    for (size_t i = 0; i < n; i++) {
        if (i + KEY_AHEAD < n) __builtin_prefetch(keys[i + KEY_AHEAD].key);
        if (i + SLOT_AHEAD < n) HASH_STAGE(i + SLOT_AHEAD);
        if (i + META_AHEAD < n) SLOT_STAGE(i + META_AHEAD);
        uint64_t h = hashes[i], cand = cands[i];
        if (!cand) continue; /* absent: values[i] stays NULL */
        uint64_t off = cand & SIMDR__IDX_OFF_MASK;
        int rc;
        if (__builtin_expect(off + SIMDR__META_SIZE > len || simdr__load_u64le(base + off) != h, 0))
            rc = batch_get_full(s, h, &values[i], &value_lens[i]);
        else if (__builtin_expect(cand & SIMDR__IDX_TOMB, 0))
            rc = SIMDR_NOTFOUND;
        else
            rc = serve_slot(s, base, len, cand, &values[i], &value_lens[i]);
        if (__builtin_expect(rc == SIMDR_OK, 1))
            ++*found;
        else if (rc != SIMDR_NOTFOUND)
            return rc;
    }
#undef HASH_STAGE
#undef SLOT_STAGE
    return SIMDR_OK;
}

SIMDR_API int64_t simdr_read_get_batch(simdr_read *scope, const simdr_key *keys, size_t n,
                                       const void **values, size_t *value_lens) {
    read_scope *sc = (read_scope *)(void *)scope;
    if (!sc || !sc->store || (n && (!keys || !values || !value_lens)))
        return simdr__fail(SIMDR_EINVAL, "NULL argument or no open scope");
    for (size_t i = 0; i < n; i++) {
        values[i] = NULL;
        value_lens[i] = 0;
        if (!keys[i].key && keys[i].key_len) return simdr__fail(SIMDR_EINVAL, "NULL key");
    }
    int64_t found = 0;
    for (size_t at = 0; at < n; at += BATCH_WINDOW) {
        size_t m = n - at < BATCH_WINDOW ? n - at : BATCH_WINDOW;
        int rc = scope_window(sc->store, keys + at, m, values + at, value_lens + at, &found);
        if (rc != SIMDR_OK) {
            for (size_t j = 0; j < n; j++) values[j] = NULL;
            return rc;
        }
    }
    return found;
}
