/*
 * load.c - loading an open store file: the end the side file lets recovery
 * trust, the index from the hint file, else recovery of the chain; the cut
 * of a torn tail (writable opens) and the first index build. Used by open
 * and by a refresh that follows a compaction to a new file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Indexes the entries between stop and end (a chain known to be sound),
 * oldest first, on a bare index (open time, no readers yet). */
static int index_range(const uint8_t *base, uint64_t end, uint64_t stop, simdr__index **ixp,
                       uint64_t *live) {
    uint64_t n = 0;
    for (uint64_t p = end; p != stop; n++) p = simdr__load_u64le(base + p - 12);
    uint64_t *metas = malloc((n ? n : 1) * sizeof *metas);
    if (!metas) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    uint64_t k = n;
    for (uint64_t p = end; p != stop; p = simdr__load_u64le(base + p - 12))
        metas[--k] = p - SIMDR__META_SIZE;
    for (uint64_t i = 0; i < n; i++) {
        if (simdr__index_needs_grow(*ixp)) {
            simdr__index *nx = simdr__index_grown(*ixp, base);
            if (!nx) {
                free(metas);
                return simdr__fail(SIMDR_ENOMEM, "out of memory growing the index");
            }
            simdr__index_free(*ixp);
            *ixp = nx;
        }
        uint64_t m = metas[i], hash = simdr__load_u64le(base + m);
        int tomb = simdr__is_tombstone_at(base, simdr__load_u64le(base + m + 8), m);
        uint64_t prev = simdr__index_put(*ixp, base, hash, simdr__index_value(hash, m, tomb));
        int was_live = prev != 0 && !(prev & SIMDR__IDX_TOMB);
        if (was_live && tomb) (*live)--;
        if (!was_live && !tomb) (*live)++;
    }
    free(metas);
    return SIMDR_OK;
}

/* The end the side file lets recovery trust: its newest committed tail (or,
 * when that is not in the file, the durable one, or the other way round
 * when the durable one is higher), when the page describes
 * this file, the tail lies within it, the recorded metadata bytes are found
 * there, and the file has not grown since a clean close (another program
 * appended: its entries are not torn). Candidates in *ends, best first;
 * returns how many (0: recover the whole file). */
static int committed_ends(const simdr__side_state *st, const uint8_t *base, uint64_t size,
                          uint64_t ends[2]) {
    if (st->closed && st->closed - 1 != size) return 0;
    const simdr__side_record *recs[2] = {&st->live, st->has_durable ? &st->durable : NULL};
    /* A durable record above the live one means the live one is stale (a
     * power cut lost the page's later updates): the higher end first. */
    if (recs[1] && recs[1]->tail > recs[0]->tail) {
        recs[0] = &st->durable;
        recs[1] = &st->live;
    }
    int n = 0;
    for (int i = 0; i < 2; i++) {
        const simdr__side_record *r = recs[i];
        if (!r || r->tail > size || (n && r->tail == ends[0])) continue;
        if (r->tail && (r->tail <= SIMDR__META_SIZE ||
                        memcmp(base + r->tail - SIMDR__META_SIZE, r->meta, SIMDR__META_SIZE)))
            continue;
        ends[n++] = r->tail;
    }
    return n;
}

/* The index from the hint file, if it covers a prefix of [0, end) that the
 * rest chains onto. 1 on success (view made), 0 to recover instead, or an
 * error. */
static int load_with_hint(simdr_store *s, simdr__map *map, uint64_t end, simdr__view **out) {
    simdr__hint hint;
    if (!s->use_hint || !simdr__hint_load(s, map->base, end, &hint)) return 0;
    uint64_t live = hint.live;
    int rc = index_range(map->base, end, hint.tail, &hint.index, &live);
    if (rc == SIMDR_OK) rc = simdr__new_view(map, hint.index, end, out);
    if (rc != SIMDR_OK) {
        simdr__index_free(hint.index);
        return rc;
    }
    atomic_store(&s->layout, hint.layout);
    s->layout_detected = hint.layout_detected || !s->readonly;
    s->hint_tail = end == hint.tail ? end : 0;
    s->tail = end;
    atomic_store(&s->live, live);
    atomic_store(&s->synced, end);
    return 1;
}

/* Recovery of [0, size): first to the ends the side file names, each of
 * which must be a sound chain; else the whole file (recover.c). *committed
 * is set when a side file end was taken. */
static int recover_ends(simdr_store *s, const uint8_t *base, uint64_t size, const uint64_t *ends,
                        int n_ends, simdr__recover_result *r, int *committed) {
    *committed = 0;
    for (int i = 0; i < n_ends; i++) {
        int rc = simdr__recover(base, ends[i], s->fd, r);
        if (rc == SIMDR_ENOMEM) return rc;
        if (rc == SIMDR_OK && r->status == SIMDR__RECOVER_SOUND) {
            *committed = 1;
            return SIMDR_OK;
        }
        simdr__index_free(r->index);
    }
    return simdr__recover(base, size, s->fd, r);
}

/* Writable opens: saves [valid, size) beside the file and cuts it. */
static int cut_torn_tail(simdr_store *s, const uint8_t *base, uint64_t valid, uint64_t size,
                         int repair) {
    if (!repair)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: torn tail: %llu bytes after offset %llu are not a complete "
                           "entry (repair disabled; nothing changed)",
                           s->path, (unsigned long long)(size - valid), (unsigned long long)valid);
    int rc = simdr__save_cut_bytes(s, base, valid, size);
    if (rc == SIMDR_OK && (simdr__io.ftruncate(s->fd, (off_t)valid) != 0 ||
                           simdr__io.fsync(s->fd) != 0))
        rc = simdr__fail_errno(errno, "truncating torn tail", s->path);
    if (rc == SIMDR_OK) s->recovery.truncated = 1;
    return rc;
}

/* Maps the open file, finds its valid end (side file, then recovery), cuts
 * (writable) and indexes. */
int simdr__load_file(simdr_store *s, int repair, int fallback_layout, simdr__view **out) {
    struct stat st;
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    if (!S_ISREG(st.st_mode)) return simdr__fail(SIMDR_EINVAL, "%s: not a regular file", s->path);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    /* The side file is read before the size is taken: a writer publishes a
     * tail only after its bytes are in the file, so the size covers it. */
    simdr__side_state side;
    int has_side = simdr__side_read(s->side, s->dev, s->ino, &side);
    int writer_active = has_side && s->readonly && simdr__side_writer_active(s->side);
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    uint64_t size = (uint64_t)st.st_size;
    if (size > SIMDR__MAX_OFFSET)
        return simdr__fail(SIMDR_ETOOBIG, "%s: file larger than 128 TiB", s->path);
    simdr__map *map;
    int rc = simdr__map_create(s->fd, size, &map, s->path);
    if (rc != SIMDR_OK) return rc;
    memset(&s->recovery, 0, sizeof s->recovery);
    s->recovery.file_size = size;
    s->recovery.valid_size = size;
    uint64_t ends[2];
    int n_ends = has_side ? committed_ends(&side, map->base, size, ends) : 0;
    /* Fast path: the file ends at its committed tail (or there is no side
     * file) and the hint covers it. */
    if (!n_ends || ends[0] == size) {
        rc = load_with_hint(s, map, size, out);
        if (rc != 0) {
            if (rc != 1) simdr__map_retire(map);
            return rc == 1 ? SIMDR_OK : rc;
        }
    }
    s->hint_tail = 0;
    simdr__recover_result r;
    int committed;
    rc = recover_ends(s, map->base, size, ends, n_ends, &r, &committed);
    if (rc != SIMDR_OK) {
        simdr__map_retire(map);
        if (rc != SIMDR_ECORRUPT) return rc;
        char cause[512]; /* the message is rewritten in place: copy it first */
        snprintf(cause, sizeof cause, "%s", simdr_last_error());
        return simdr__fail(rc, "%s: %s", s->path, cause);
    }
    if (committed && r.valid_len < size) r.status = SIMDR__RECOVER_TORN;
    s->recovery.valid_size = r.valid_len;
    s->recovery.bytes_cut = size - r.valid_len;
    if (r.status == SIMDR__RECOVER_NOTSTORE) {
        simdr__map_retire(map);
        return simdr__fail(SIMDR_ENOTSTORE,
                           "%s: not a simd-r-drive store (no valid entry chain in its %llu "
                           "bytes); the file was not changed",
                           s->path, (unsigned long long)size);
    }
    if (r.status == SIMDR__RECOVER_DAMAGED && !(s->readonly && s->salvage)) {
        simdr__index_free(r.index);
        simdr__map_retire(map);
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: damaged store: valid entries end at %llu but the chain from "
                           "there breaks at offset %llu (the longest sound prefix is %llu "
                           "bytes); nothing was changed. Open it read-only to read the sound "
                           "prefix (salvage option), or run the check command",
                           s->path, (unsigned long long)size, (unsigned long long)r.damage_at,
                           (unsigned long long)r.valid_len);
    }
    /* Bytes a live writer has in flight beyond its committed tail are
     * neither torn nor part of the store yet. */
    if (committed && writer_active) s->recovery.bytes_cut = 0;
    if (r.status == SIMDR__RECOVER_TORN && !s->readonly) {
        rc = cut_torn_tail(s, map->base, r.valid_len, size, repair);
        if (rc != SIMDR_OK) {
            simdr__index_free(r.index);
            simdr__map_retire(map);
            return rc;
        }
    }
    int layout = r.layout >= 0 ? r.layout : fallback_layout;
    atomic_store(&s->layout, layout);
    /* A writer fixes an undetected layout by writing in it; a reader must
     * still let later entries (from another process) decide. */
    s->layout_detected = r.layout >= 0 || !s->readonly;
    simdr__index *ix;
    uint64_t live;
    if (r.index) {
        ix = r.index;
        live = r.live;
        rc = SIMDR_OK;
    } else {
        rc = simdr__build_index(map->base, r.valid_len, &ix, &live);
    }
    if (rc != SIMDR_OK) {
        simdr__map_retire(map);
        return rc;
    }
    rc = simdr__new_view(map, ix, r.valid_len, out);
    if (rc != SIMDR_OK) {
        simdr__index_free(ix);
        simdr__map_retire(map);
        return rc;
    }
    s->tail = r.valid_len;
    atomic_store(&s->live, live);
    atomic_store(&s->synced, r.valid_len);
    return SIMDR_OK;
}
