/*
 * replicate.c - the store file as a replication log (simdr.h, "Replication").
 * A replica's file is a byte-for-byte prefix of its primary's: the primary
 * hands out whole entries from any entry end up to its committed tail, and
 * the replica appends them only after checking that every entry links onto
 * the one before, starting at its own tail, with zero padding and a matching
 * CRC-32. The bytes are then written by the ordinary append path, which
 * produces exactly the same bytes from (key hash, payload) at the same
 * offset in the same layout, so the replica never writes a byte it did not
 * verify and its file stays identical to the primary's.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format.h"
#include "internal.h"

/* The file's name for replicas: its device and inode, which a compaction's
 * rename changes, and its birth time, which tells a new file from an old
 * inode number reused after two compactions. statx is metadata only and
 * may be unsupported (then the birth time counts as 0): it is called
 * directly, outside the I/O table, whose faults concern data. */
uint64_t simdr__file_identity(const simdr_store *s) {
    uint64_t words[4] = {(uint64_t)s->dev, (uint64_t)s->ino, 0, 0};
    struct statx sx;
    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0 && (sx.stx_mask & STATX_BTIME)) {
        words[2] = (uint64_t)sx.stx_btime.tv_sec;
        words[3] = (uint64_t)sx.stx_btime.tv_nsec;
    }
    uint64_t h = simdr__xxh3(words, sizeof words);
    return h ? h : 1;
}

/* Takes the writer lock: the file, its map and its tail stay as they are
 * (a compaction swaps them under this lock). */
static int lock_for_log(simdr_store *s) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    pthread_mutex_lock(&s->wlock);
    return SIMDR_OK;
}

SIMDR_API int simdr_log_info(simdr_store *s, simdr_log_state *out) {
    if (!out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    int rc = lock_for_log(s);
    if (rc != SIMDR_OK) return rc;
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    memset(out, 0, sizeof *out);
    out->identity = simdr__file_identity(s);
    out->tail = tail;
    out->layout = atomic_load(&s->layout);
    if (tail >= SIMDR__META_SIZE)
        memcpy(out->tail_meta, v->map->base + tail - SIMDR__META_SIZE, SIMDR__META_SIZE);
    pthread_mutex_unlock(&s->wlock);
    return SIMDR_OK;
}

static int check_identity(simdr_store *s, uint64_t identity) {
    if (simdr__file_identity(s) == identity) return SIMDR_OK;
    return simdr__fail(SIMDR_ENOENT, "%s: the file was replaced (compacted or recreated) since "
                       "its identity was taken", s->path);
}

SIMDR_API int simdr_log_read(simdr_store *s, uint64_t identity, uint64_t from, void *buf,
                             size_t cap, size_t *len_out) {
    if (!len_out || (!buf && cap)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    *len_out = 0;
    int rc = lock_for_log(s);
    if (rc != SIMDR_OK) return rc;
    rc = check_identity(s, identity);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    const uint8_t *base = v->map->base;
    if (rc == SIMDR_OK && from > tail)
        rc = simdr__fail(SIMDR_EINVAL, "%s: offset %llu is beyond the tail %llu", s->path,
                         (unsigned long long)from, (unsigned long long)tail);
    uint64_t limit = cap > tail - from ? tail : from + cap, pos = tail;
    while (rc == SIMDR_OK && pos > limit) {
        if (pos <= SIMDR__META_SIZE) { /* no entry ends here: damage after open */
            rc = simdr__fail(SIMDR_ECORRUPT, "%s: broken link at %llu", s->path,
                             (unsigned long long)pos);
            break;
        }
        simdr__meta m = simdr__meta_decode(base + pos - SIMDR__META_SIZE);
        if (m.prev >= pos - SIMDR__META_SIZE) {
            rc = simdr__fail(SIMDR_ECORRUPT, "%s: broken link at %llu", s->path,
                             (unsigned long long)pos);
        } else if (m.prev < from) {
            rc = simdr__fail(SIMDR_EINVAL, "%s: offset %llu is inside the entry [%llu, %llu)",
                             s->path, (unsigned long long)from, (unsigned long long)m.prev,
                             (unsigned long long)pos);
        } else if (m.prev == from) {
            *len_out = (size_t)(pos - from);
            rc = simdr__fail(SIMDR_ETOOBIG, "%s: the entry at %llu needs %llu bytes", s->path,
                             (unsigned long long)from, (unsigned long long)(pos - from));
        } else {
            pos = m.prev;
        }
    }
    if (rc == SIMDR_OK) {
        memcpy(buf, base + from, (size_t)(pos - from));
        *len_out = (size_t)(pos - from);
    }
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

SIMDR_API int simdr_log_meta_at(simdr_store *s, uint64_t identity, uint64_t end,
                                uint8_t meta[20]) {
    if (!meta) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    int rc = lock_for_log(s);
    if (rc != SIMDR_OK) return rc;
    rc = check_identity(s, identity);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    if (rc == SIMDR_OK && (end > tail || end <= SIMDR__META_SIZE))
        rc = simdr__fail(SIMDR_EINVAL, "%s: no entry can end at %llu (tail %llu)", s->path,
                         (unsigned long long)end, (unsigned long long)tail);
    if (rc == SIMDR_OK) memcpy(meta, v->map->base + end - SIMDR__META_SIZE, SIMDR__META_SIZE);
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

static int refuse(const simdr_store *s, uint64_t at, const char *what) {
    return simdr__fail(SIMDR_ECORRUPT, "%s: replicated bytes refused at offset %llu: %s",
                       s->path, (unsigned long long)at, what);
}

/* Walks the bytes [from, from + len) down from their end: each entry's
 * metadata must link to an offset no lower than from and below itself, the
 * last link landing on from exactly. Fills *items_out oldest first. */
static int parse_entries(const simdr_store *s, uint64_t from, const uint8_t *p, size_t len,
                         int aligned, simdr__item **items_out, size_t *n_out) {
    size_t cap = 64, n = 0;
    simdr__item *items = malloc(cap * sizeof *items);
    if (!items) return simdr__fail(SIMDR_ENOMEM, "out of memory for replicated entries");
    uint64_t end = from + len;
    int rc = SIMDR_OK;
    while (end > from) {
        if (end - from < SIMDR__META_SIZE + 1) {
            rc = refuse(s, from, "torn entry (fewer bytes than an entry)");
            break;
        }
        uint64_t meta_off = end - SIMDR__META_SIZE;
        simdr__meta m = simdr__meta_decode(p + (meta_off - from));
        if (m.prev < from || m.prev >= meta_off) {
            rc = refuse(s, meta_off, m.prev < from ? "the chain does not lead to the tail"
                                                   : "a link that does not go down");
            break;
        }
        simdr__item it = {m.key_hash, NULL, 0, 0};
        const uint8_t *rel = p + (m.prev - from);
        if (meta_off - m.prev == 1 && rel[0] == SIMDR__TOMBSTONE_BYTE) {
            it.tombstone = 1;
            it.value = rel;
            it.len = 1;
        } else {
            uint64_t pad = simdr__pad_for(m.prev, aligned);
            if (m.prev + pad >= meta_off) {
                rc = refuse(s, m.prev, "an entry without payload");
                break;
            }
            for (uint64_t i = 0; i < pad && rc == SIMDR_OK; i++)
                if (rel[i]) rc = refuse(s, m.prev + i, "padding that is not zero");
            if (rc != SIMDR_OK) break;
            it.value = rel + pad;
            it.len = (size_t)(meta_off - m.prev - pad);
            if (it.len == 1 && rel[pad] == SIMDR__TOMBSTONE_BYTE) {
                rc = refuse(s, m.prev, "a padded lone 0x00 payload (reserved)");
                break;
            }
        }
        if (simdr__crc32(0, it.value, it.len) != m.checksum) {
            rc = refuse(s, meta_off, "CRC-32 mismatch");
            break;
        }
        if (n == cap) {
            simdr__item *grown = realloc(items, 2 * cap * sizeof *items);
            if (!grown) {
                rc = simdr__fail(SIMDR_ENOMEM, "out of memory for replicated entries");
                break;
            }
            items = grown;
            cap *= 2;
        }
        items[n++] = it;
        end = m.prev;
    }
    if (rc != SIMDR_OK) {
        free(items);
        return rc;
    }
    for (size_t i = 0; i < n / 2; i++) {
        simdr__item t = items[i];
        items[i] = items[n - 1 - i];
        items[n - 1 - i] = t;
    }
    *items_out = items;
    *n_out = n;
    return SIMDR_OK;
}

SIMDR_API int simdr_log_append(simdr_store *s, uint64_t from, const void *bytes, size_t len,
                               uint64_t *tail_out) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    if (!bytes && len) return simdr__fail(SIMDR_EINVAL, "NULL bytes");
    if (s->readonly) return simdr__fail(SIMDR_EREADONLY, "%s: opened read-only", s->path);
    if ((uint64_t)len > SIMDR__MAX_OFFSET || from > SIMDR__MAX_OFFSET - len)
        return simdr__fail(SIMDR_ETOOBIG, "%s: the file would exceed 128 TiB", s->path);
    int aligned = atomic_load(&s->layout) == SIMDR_LAYOUT_ALIGNED64;
    simdr__item *items = NULL;
    size_t n = 0;
    int rc = parse_entries(s, from, bytes, len, aligned, &items, &n);
    if (rc != SIMDR_OK) return rc;
    uint64_t end = 0;
    rc = simdr__append_at(s, items, n, from, &end);
    free(items);
    if (rc == SIMDR_OK && end != from + len) /* not reached: the same entries give the same bytes */
        rc = refuse(s, from, "the entries did not rebuild the same bytes");
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}

SIMDR_API int simdr_log_origin(simdr_store *s, simdr_log_origin_info *out) {
    if (!out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    int rc = lock_for_log(s);
    if (rc != SIMDR_OK) return rc;
    if (s->has_origin && s->origin.identity == simdr__file_identity(s))
        *out = s->origin;
    else
        rc = simdr__fail(SIMDR_ENOENT, "%s: the file was not written by a compaction through "
                         "this handle", s->path);
    pthread_mutex_unlock(&s->wlock);
    return rc;
}
