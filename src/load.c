/*
 * load.c - loading an open store file: the ends the side file vouches for
 * (bytes up to its durable record must verify; past it, only what a live
 * record's metadata sum vouches for is kept), the index from the hint file,
 * else recovery of the chain; the cut of a torn tail (writable opens) and the
 * first index build; what the writer's side file starts from. Used by open
 * and by a refresh that follows a compaction to a new file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#include <xxhash.h>

/* Indexes the entries between stop and end (a chain known to be sound),
 * oldest first, on a bare index (open time, no readers yet), adding to the
 * live and dead counts. */
static int index_range(const uint8_t *base, uint64_t end, uint64_t stop, simdr__index **ixp,
                       uint64_t *live, uint64_t *dead) {
    uint64_t n = 0, live_before = *live;
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
    *dead += n - (*live - live_before); /* modulo 2^64: live may have shrunk */
    return SIMDR_OK;
}

/* ---- what the side file vouches for (side.c, docs/FORMAT.md) ---- */

/* Bytes a vouching walk reads at a time, backwards with pread. */
#define VOUCH_WINDOW (UINT64_C(1) << 20)

/* 1 when the file's 20 bytes ending at the record's tail are the record's. */
static int record_meta_found(const uint8_t *base, uint64_t size, const simdr__side_record *r) {
    static const uint8_t zeros[SIMDR__META_SIZE];
    if (r->tail == 0) return !memcmp(r->meta, zeros, sizeof zeros);
    return r->tail <= size && r->tail > SIMDR__META_SIZE &&
           !memcmp(base + r->tail - SIMDR__META_SIZE, r->meta, SIMDR__META_SIZE);
}

/* Does the live record r vouch for the bytes between the durable record d
 * and its tail? Bytes past d were never promised durable: after a power cut
 * any of their sectors may be lost or torn, and the format's CRC covers
 * payloads only (a key hash torn to zeros passes it). The chain from r's
 * tail must lead exactly to d's through links going strictly down, and the
 * terms of its entries (simdr__side_term) must add up to the difference of
 * the two sums, so every metadata byte between them is the writer's. The
 * payloads' CRCs are checked by the recovery of the chain that follows. */
static int live_record_vouched(int fd, const uint8_t *base, uint64_t size,
                               const simdr__side_record *r, const simdr__side_record *d) {
    if (r->anchor != d->anchor || r->tail <= d->tail || !record_meta_found(base, size, r))
        return 0;
    simdr__window w = {fd, base, r->tail, 1, fd >= 0 ? malloc(VOUCH_WINDOW) : NULL,
                       VOUCH_WINDOW, 0, 0};
    uint64_t sum = 0, p = r->tail;
    while (p >= d->tail + SIMDR__META_SIZE + 1) {
        uint64_t m = p - SIMDR__META_SIZE;
        const uint8_t *meta = simdr__window_span(&w, m, p);
        uint64_t prev = simdr__load_u64le(meta + 8);
        if (prev >= m || prev < d->tail) break;
        simdr__meta decoded = simdr__meta_decode(meta);
        sum += simdr__side_term(&decoded, p);
        p = prev;
    }
    free(w.buf);
    return p == d->tail && sum == r->sum - d->sum;
}

/* The ends the side file lets the open take, best first: the live and
 * commit records that vouch for their bytes, then the durable record.
 * floor: the durable record, below whose tail nothing may be cut (the bytes
 * were synced: if they do not verify, that is damage); NULL with n = 0:
 * recover the whole file as without a side file. durable: the page's
 * durable record, for the next writer to keep (note_basis). promised: the
 * highest commit record above the floor that vouches for its bytes (a tail
 * a sync may have acknowledged); promised_durable: known durable (the
 * writer closed cleanly after syncing it). */
typedef struct side_plan {
    int n;
    const simdr__side_record *rec[5];
    const simdr__side_record *floor;
    const simdr__side_record *durable;
    const simdr__side_record *promised;
    int promised_durable;
} side_plan;

static int same_record(const simdr__side_record *a, const simdr__side_record *b) {
    return a->tail == b->tail && a->anchor == b->anchor && a->sum == b->sum &&
           !memcmp(a->meta, b->meta, SIMDR__META_SIZE);
}

static void plan_ends(const simdr__side_state *st, int fd, const uint8_t *base, uint64_t size,
                      int writer_active, side_plan *pl) {
    pl->n = 0;
    pl->floor = NULL;
    pl->promised = NULL;
    pl->promised_durable = 0;
    pl->durable = st->has_durable ? &st->durable : NULL;
    if (st->closed) {
        /* Closed cleanly: the newest record names the file exactly as it
         * was left (taken without walking back to the durable record, so an
         * open with the hint does not read the whole file). A file of any
         * other size was changed since (another program appended, or it was
         * cut): full recovery, as without a side file. */
        const simdr__side_record *r = simdr__side_newest(st);
        if (r && st->closed - 1 == size && r->tail == size && record_meta_found(base, size, r)) {
            pl->rec[pl->n++] = r;
            /* The close synced its tail before marking the page: a commit
             * record of that tail names durable bytes. */
            for (int i = 0; i < st->n_commit && !pl->promised; i++)
                if (same_record(&st->commit[i], r)) {
                    pl->promised = &st->commit[i];
                    pl->promised_durable = 1;
                }
        }
        return;
    }
    if (!st->has_durable) return;
    pl->floor = &st->durable;
    if (!record_meta_found(base, size, pl->floor)) return;
    /* The live and commit records, highest tail first. */
    const simdr__side_record *cand[4];
    int is_commit[4], nc = 0;
    for (int i = 0; i < st->n_live; i++, nc++) {
        cand[nc] = &st->live[i];
        is_commit[nc] = 0;
    }
    for (int i = 0; i < st->n_commit; i++, nc++) {
        cand[nc] = &st->commit[i];
        is_commit[nc] = 1;
    }
    for (int i = 1; i < nc; i++)
        for (int j = i; j > 0 && cand[j]->tail > cand[j - 1]->tail; j--) {
            const simdr__side_record *t = cand[j];
            int c = is_commit[j];
            cand[j] = cand[j - 1];
            is_commit[j] = is_commit[j - 1];
            cand[j - 1] = t;
            is_commit[j - 1] = c;
        }
    for (int i = 0; i < nc; i++) {
        const simdr__side_record *r = cand[i];
        if (r->tail <= pl->floor->tail) break;
        if (pl->n && r->tail >= pl->rec[pl->n - 1]->tail) {
            /* A commit record equal to an end already taken vouches too. */
            if (is_commit[i] && !pl->promised && same_record(r, pl->rec[pl->n - 1]))
                pl->promised = r;
            continue;
        }
        /* A writer holding the side file's lock is alive: its page is the
         * page cache's, never one a power cut left behind, so a record
         * whose metadata is found needs no walk (a read-only open, such as
         * simdr_check's, of a store being appended to stays one pass). */
        int live_page = writer_active && r->anchor == pl->floor->anchor &&
                        record_meta_found(base, size, r);
        if (live_page || live_record_vouched(fd, base, size, r, pl->floor)) {
            pl->rec[pl->n++] = r;
            if (is_commit[i] && !pl->promised) pl->promised = r;
        }
    }
    if (!pl->n || pl->rec[pl->n - 1]->tail != pl->floor->tail) pl->rec[pl->n++] = pl->floor;
}

/* What the writer's side file starts from: the anchor and sum of the record
 * whose end the open took, and a durable record known to be true of the
 * file: the page's (still below the end), or the end itself once a cut
 * synced the file. Without a record (full recovery) the sums start afresh at
 * the end. When no durable record is known, simdr_open syncs the file and
 * takes the end as durable. */
static void note_basis(simdr_store *s, const uint8_t *base, const side_plan *pl,
                       const simdr__side_record *taken, uint64_t end, int synced) {
    simdr__side_basis *b = &s->side_basis;
    memset(b, 0, sizeof *b);
    if (taken) {
        b->anchor = taken->anchor;
        b->sum = taken->sum;
        b->durable = *taken;
        b->has_durable = synced;
        const simdr__side_record *d = pl->durable;
        if (!synced && d && d->anchor == taken->anchor && d->tail <= end) {
            b->durable = *d;
            b->has_durable = 1;
        }
        /* Bytes a sync acknowledged above the durable record (one-flush
         * syncs, side.c) are kept by a commit record, which the next
         * writer's page no longer carries: they must become durable and
         * the durable record's. Known durable after a clean close; else
         * simdr_open syncs the file and takes the end as durable. */
        const simdr__side_record *p = pl->promised;
        if (!synced && p && p->anchor == taken->anchor && p->tail <= end &&
            (!b->has_durable || p->tail > b->durable.tail)) {
            b->durable = pl->promised_durable ? *p : *taken;
            b->has_durable = pl->promised_durable;
        }
        return;
    }
    b->anchor = end;
    b->has_durable = synced || end == 0;
    b->durable.tail = end;
    b->durable.anchor = end;
    if (end) memcpy(b->durable.meta, base + end - SIMDR__META_SIZE, SIMDR__META_SIZE);
}

/* The index from the hint file, if it covers a prefix of [0, end) that the
 * rest chains onto. 1 on success (view made), 0 to recover instead, or an
 * error. */
static int load_with_hint(simdr_store *s, simdr__map *map, uint64_t end, simdr__view **out) {
    simdr__hint hint;
    if (!s->use_hint || !simdr__hint_load(s, map->base, end, &hint)) return 0;
    uint64_t live = hint.live, dead = hint.dead;
    int rc = index_range(map->base, end, hint.tail, &hint.index, &live, &dead);
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
    simdr__view_new_file(s, *out, dead);
    atomic_store(&s->synced, end);
    return 1;
}

/* Recovery of [0, size): first to the ends of the plan, each of which must
 * be a sound chain (*taken: the record whose end was taken); else the whole
 * file (*taken NULL). Synced bytes that do not verify are damage, never a
 * tail to cut (*lost_durable). */
static int recover_planned(simdr_store *s, const uint8_t *base, uint64_t size,
                           const side_plan *pl, simdr__recover_result *r,
                           const simdr__side_record **taken, int *lost_durable) {
    *taken = NULL;
    *lost_durable = 0;
    for (int i = 0; i < pl->n; i++) {
        int rc = simdr__recover(base, pl->rec[i]->tail, s->fd, r);
        if (rc == SIMDR_ENOMEM) return rc;
        /* Past the floor every payload must be whole too: a CRC that fails
         * there is a sector the power cut lost, not damage to report. */
        if (rc == SIMDR_OK && r->status == SIMDR__RECOVER_SOUND &&
            (!pl->floor || r->bad_crc_end <= pl->floor->tail)) {
            *taken = pl->rec[i];
            if (r->valid_len < size) r->status = SIMDR__RECOVER_TORN;
            return SIMDR_OK;
        }
        simdr__index_free(r->index);
    }
    int rc = simdr__recover(base, size, s->fd, r);
    if (rc == SIMDR_OK && pl->floor && r->status != SIMDR__RECOVER_SOUND &&
        r->valid_len < pl->floor->tail) {
        *lost_durable = 1;
        r->status = SIMDR__RECOVER_DAMAGED;
        r->damage_at = pl->floor->tail;
    }
    return rc;
}

/* 1 when [from, to) holds only zero bytes. A chunk at a time, so a large
 * tail of data is told at its first chunk instead of read whole. */
static int range_all_zero(const uint8_t *base, uint64_t from, uint64_t to) {
    const uint64_t chunk = UINT64_C(1) << 16;
    for (uint64_t at = from; at < to; at += chunk)
        if (!simdr__all_zero(base + at, (size_t)(to - at < chunk ? to - at : chunk))) return 0;
    return 1;
}

int simdr__file_range_zero(int fd, uint64_t from, uint64_t to) {
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    if (!buf) return 0;
    int zero = 1;
    for (uint64_t at = from; at < to && zero;) {
        size_t want = to - at < cap ? (size_t)(to - at) : cap;
        ssize_t got = simdr__io.pread(fd, buf, want, (off_t)at);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) zero = 0;
        if (got <= 0) break;
        zero = simdr__all_zero(buf, (size_t)got);
        at += (uint64_t)got;
    }
    free(buf);
    return zero;
}

uint64_t simdr__file_range_hash(int fd, uint64_t from, uint64_t to) {
    uint8_t buf[1 << 16];
    size_t want = to - from < sizeof buf ? (size_t)(to - from) : sizeof buf, got = 0;
    while (got < want) {
        ssize_t n = simdr__io.pread(fd, buf + got, want - got, (off_t)(from + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    return XXH3_64bits_withSeed(buf, got, got);
}

/* Writable opens: saves [valid, size) beside the file and cuts it. A torn
 * tail made only of zero bytes holds no entry (recovery never reads an
 * all-zero metadata block as one, and without its metadata no payload can
 * be told apart or checked): it is the preallocated space a mapped writer
 * leaves at every crash, or a length that reached the disk before the data
 * did. It is cut whatever repair says, and not saved. A tail with any other
 * byte could be data: repair 0 refuses it, untouched. */
static int cut_torn_tail(simdr_store *s, const uint8_t *base, uint64_t valid, uint64_t size,
                         int repair) {
    int zeros_only = range_all_zero(base, valid, size);
    if (!repair && !zeros_only)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: torn tail: %llu bytes after offset %llu are not a complete "
                           "entry (repair disabled; nothing changed)",
                           s->path, (unsigned long long)(size - valid), (unsigned long long)valid);
    int rc = zeros_only ? SIMDR_OK : simdr__save_cut_bytes(s, base, valid, size);
    if (rc == SIMDR_OK && (simdr__ftruncate(s->fd, (off_t)valid) != 0 ||
                           simdr__fsync(s->fd) != 0))
        rc = simdr__fail_errno(errno, "truncating torn tail", s->path);
    if (rc == SIMDR_OK) {
        s->recovery.truncated = 1;
        s->recovery.zeros_only = zeros_only;
    }
    return rc;
}

/* The file's identity and size, with the side file's state read in
 * between: a writer publishes a tail only after its bytes are in the file,
 * so a size taken after the side file covers it. */
static int stat_with_side(simdr_store *s, simdr__side_state *side, int *has_side,
                          int *writer_active, uint64_t *size) {
    struct stat st;
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    if (!S_ISREG(st.st_mode)) return simdr__fail(SIMDR_EINVAL, "%s: not a regular file", s->path);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    *has_side = simdr__side_read(s->side, s->dev, s->ino, side);
    *writer_active = *has_side && s->readonly && simdr__side_writer_active(s->side);
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    *size = (uint64_t)st.st_size;
    if (*size > SIMDR__MAX_OFFSET)
        return simdr__fail(SIMDR_ETOOBIG, "%s: file larger than 128 TiB", s->path);
    return SIMDR_OK;
}

/* What an open cannot use: not a store, or damage (served only to a
 * salvaging read-only open). SIMDR_OK when the result can be opened. */
static int refuse_unusable(simdr_store *s, const simdr__recover_result *r, uint64_t size,
                           int lost_durable) {
    if (r->status == SIMDR__RECOVER_NOTSTORE)
        return simdr__fail(SIMDR_ENOTSTORE,
                           "%s: not a simd-r-drive store (no valid entry chain in its %llu "
                           "bytes); the file was not changed",
                           s->path, (unsigned long long)size);
    if (r->status != SIMDR__RECOVER_DAMAGED || (s->readonly && s->salvage)) return SIMDR_OK;
    if (lost_durable)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: damaged store: its first %llu bytes were made durable by a "
                           "sync but do not verify as a chain of entries (the longest sound "
                           "prefix is %llu bytes); nothing was changed. Open it read-only to "
                           "read the sound prefix (salvage option), or run the check command",
                           s->path, (unsigned long long)r->damage_at,
                           (unsigned long long)r->valid_len);
    return simdr__fail(SIMDR_ECORRUPT,
                       "%s: damaged store: valid entries end at %llu but the chain from "
                       "there breaks at offset %llu (the longest sound prefix is %llu "
                       "bytes); nothing was changed. Open it read-only to read the sound "
                       "prefix (salvage option), or run the check command",
                       s->path, (unsigned long long)size, (unsigned long long)r->damage_at,
                       (unsigned long long)r->valid_len);
}

/* The first view: the recovery's index (or one built now) over
 * [0, r->valid_len), the layout it detected, the tail. */
static int first_view(simdr_store *s, simdr__map *map, simdr__recover_result *r,
                      int fallback_layout, simdr__view **out) {
    atomic_store(&s->layout, r->layout >= 0 ? r->layout : fallback_layout);
    /* A writer fixes an undetected layout by writing in it; a reader must
     * still let later entries (from another process) decide. */
    s->layout_detected = r->layout >= 0 || !s->readonly;
    simdr__index *ix = r->index;
    uint64_t live = r->live, entries = r->entries;
    int rc = ix ? SIMDR_OK : simdr__build_index(map->base, r->valid_len, &ix, &live, &entries);
    if (rc == SIMDR_OK) rc = simdr__new_view(map, ix, r->valid_len, out);
    if (rc != SIMDR_OK) {
        if (ix) simdr__index_free(ix);
        return rc;
    }
    s->tail = r->valid_len;
    atomic_store(&s->live, live);
    simdr__view_new_file(s, *out, entries - live);
    atomic_store(&s->synced, r->valid_len);
    return SIMDR_OK;
}

/* Maps the open file, finds its valid end (side file, then recovery), cuts
 * (writable) and indexes. */
int simdr__load_file(simdr_store *s, int repair, int fallback_layout, simdr__view **out) {
    simdr__side_state side;
    int has_side = 0, writer_active = 0;
    uint64_t size = 0;
    int rc = stat_with_side(s, &side, &has_side, &writer_active, &size);
    if (rc != SIMDR_OK) return rc;
    simdr__map *map;
    rc = simdr__map_create(s->fd, size, &map, s->path);
    if (rc != SIMDR_OK) return rc;
    memset(&s->recovery, 0, sizeof s->recovery);
    s->recovery.file_size = size;
    s->recovery.valid_size = size;
    side_plan plan = {0, {NULL}, NULL, NULL, NULL, 0};
    if (has_side) plan_ends(&side, s->fd, map->base, size, writer_active, &plan);
    /* Fast path: the file ends where the side file vouches (or there is no
     * side file) and the hint covers it. */
    if (plan.n ? plan.rec[0]->tail == size : !plan.floor) {
        rc = load_with_hint(s, map, size, out);
        if (rc == 1) note_basis(s, map->base, &plan, plan.n ? plan.rec[0] : NULL, size, 0);
        if (rc != 0) {
            if (rc != 1) simdr__map_retire(map);
            return rc == 1 ? SIMDR_OK : rc;
        }
    }
    s->hint_tail = 0;
    simdr__recover_result r;
    const simdr__side_record *taken;
    int lost_durable;
    rc = recover_planned(s, map->base, size, &plan, &r, &taken, &lost_durable);
    if (rc != SIMDR_OK) {
        simdr__map_retire(map);
        if (rc != SIMDR_ECORRUPT) return rc;
        char cause[512]; /* the message is rewritten in place: copy it first */
        snprintf(cause, sizeof cause, "%s", simdr_last_error());
        return simdr__fail(rc, "%s: %s", s->path, cause);
    }
    rc = refuse_unusable(s, &r, size, lost_durable);
    s->recovery.valid_size = r.valid_len;
    s->recovery.bytes_cut = size - r.valid_len;
    /* Bytes a live writer has in flight beyond its committed tail are
     * neither torn nor part of the store yet. So are those beyond the
     * chain of a file its page does not describe while it holds the side
     * file's lock (a compaction switching files, a page it rewrites): a
     * live writer cuts any torn tail itself. Damage is still reported. */
    if (taken && writer_active) s->recovery.bytes_cut = 0;
    /* Also when no record was taken: the page may describe this file as
     * closed at another size (read in the moment a writer closed and
     * reopened it, as a server's SWAPDB or FLUSHDB does, before the size
     * was read), and the bytes after its chain are then the reopened
     * writer's, in flight. */
    if (s->readonly && !taken && !lost_durable && r.status != SIMDR__RECOVER_DAMAGED &&
        simdr__side_writer_active(s->side))
        s->recovery.bytes_cut = 0;
    /* A torn tail a read-only open skips (past any durable record: lost
     * durable bytes are damage, not a tail) that is all zeros held no entry. */
    if (s->readonly && r.status == SIMDR__RECOVER_TORN && s->recovery.bytes_cut > 0)
        s->recovery.zeros_only = simdr__file_range_zero(s->fd, r.valid_len, size);
    if (s->readonly && s->recovery.bytes_cut > 0 && !s->recovery.zeros_only)
        s->torn_hash = simdr__file_range_hash(s->fd, r.valid_len, size);
    int cut = r.status == SIMDR__RECOVER_TORN && !s->readonly;
    if (rc == SIMDR_OK && cut) rc = cut_torn_tail(s, map->base, r.valid_len, size, repair);
    if (rc != SIMDR_OK) {
        simdr__index_free(r.index);
        simdr__map_retire(map);
        return rc;
    }
    rc = first_view(s, map, &r, fallback_layout, out);
    if (rc != SIMDR_OK) {
        simdr__map_retire(map);
        return rc;
    }
    note_basis(s, map->base, &plan, taken, r.valid_len, cut);
    return SIMDR_OK;
}
