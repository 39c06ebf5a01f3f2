/*
 * store.c - opening and closing a store: the file, its lock, recovery and the
 * saving of anything cut, the first index build; views; refresh for
 * read-only opens; sync; sizes and counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

SIMDR_API void simdr_options_init(simdr_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->open_mode = SIMDR_OPEN_CREATE;
    opts->layout = SIMDR_LAYOUT_ALIGNED64;
    opts->durability = SIMDR_SYNC_NONE;
    opts->repair = 1;
    opts->use_hint = 1;
    opts->verify_reads = 1;
    opts->file_mode = 0644;
}

int simdr__fsync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    int dfd = simdr__io.open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    free(copy);
    if (dfd < 0) return -1;
    int rc = simdr__io.fsync_dir(dfd);
    close(dfd);
    return rc;
}

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

static int new_view(simdr__map *map, simdr__index *index, uint64_t tail, simdr__view **out) {
    simdr__view *v = malloc(sizeof *v);
    if (!v) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    v->map = map;
    v->index = index;
    atomic_init(&v->tail, tail);
    *out = v;
    return SIMDR_OK;
}

int simdr__publish_view(simdr_store *s, simdr__map *map, simdr__index *index) {
    simdr__view *old = simdr__current_view(s);
    simdr__view *nv;
    uint64_t tail = atomic_load_explicit(&old->tail, memory_order_relaxed);
    if (new_view(map, index, tail, &nv) != SIMDR_OK) {
        if (map != old->map) simdr__map_retire(map);
        if (index != old->index) simdr__index_free(index);
        return SIMDR_ENOMEM;
    }
    atomic_store_explicit(&s->view, nv, memory_order_release);
    /* Once every reader that might have loaded the old view has left, its
     * parts that were replaced can go. */
    simdr__epoch_synchronize(&s->epoch);
    if (old->map != map) simdr__map_retire(old->map);
    if (old->index != index) simdr__index_free(old->index);
    free(old);
    return SIMDR_OK;
}

int simdr__ensure_mapped(simdr_store *s, uint64_t end) {
    simdr__view *v = simdr__current_view(s);
    if (end <= v->map->len) return SIMDR_OK;
    simdr__map *m;
    int rc = simdr__map_create(s->fd, end, &m, s->path);
    if (rc != SIMDR_OK) return rc;
    return simdr__publish_view(s, m, v->index);
}

/* Copies the bytes about to be cut into "<path>.torn-<offset>[.N]" and makes
 * that file durable, so a repair never destroys anything silently. */
static int save_cut_bytes(simdr_store *s, const uint8_t *base, uint64_t from, uint64_t to) {
    char name[sizeof s->recovery.saved_path];
    int fd = -1;
    for (int attempt = 0; attempt < 1000 && fd < 0; attempt++) {
        if (attempt == 0)
            snprintf(name, sizeof name, "%s.torn-%llu", s->path, (unsigned long long)from);
        else
            snprintf(name, sizeof name, "%s.torn-%llu.%d", s->path, (unsigned long long)from,
                     attempt);
        fd = simdr__io.open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) return simdr__fail_errno(errno, "saving torn tail", name);
    }
    if (fd < 0) return simdr__fail(SIMDR_EIO, "%s: no free name to save the torn tail", s->path);
    int rc = simdr__pwrite_all(fd, base + from, (size_t)(to - from), 0);
    if (rc == 0) rc = simdr__io.fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) {
        unlink(name);
        return simdr__fail_errno(err, "saving torn tail", name);
    }
    simdr__fsync_dir(name);
    snprintf(s->recovery.saved_path, sizeof s->recovery.saved_path, "%s", name);
    return SIMDR_OK;
}

static int open_fail(simdr_store *s, int rc) {
    simdr__side_close(s->side);
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s);
    return rc;
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
 * terms of its entries (side.c) must add up to the difference of the two
 * sums, so every metadata byte between them is the writer's. The payloads'
 * CRCs are checked by the recovery of the chain that follows. */
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
        sum += simdr__side_term(meta, p);
        p = prev;
    }
    free(w.buf);
    return p == d->tail && sum == r->sum - d->sum;
}

/* The ends the side file lets the open take, best first: the live records
 * that vouch for their bytes, then the durable record. floor: the durable
 * record, below whose tail nothing may be cut (the bytes were synced: if
 * they do not verify, that is damage); NULL with n = 0: recover the whole
 * file as without a side file. durable: the page's durable record, for the
 * next writer to keep (note_basis). */
typedef struct side_plan {
    int n;
    const simdr__side_record *rec[3];
    const simdr__side_record *floor;
    const simdr__side_record *durable;
} side_plan;

static void plan_ends(const simdr__side_state *st, int fd, const uint8_t *base, uint64_t size,
                      side_plan *pl) {
    pl->n = 0;
    pl->floor = NULL;
    pl->durable = st->has_durable ? &st->durable : NULL;
    if (st->closed) {
        /* Closed cleanly: the newest record names the file exactly as it
         * was left (taken without walking back to the durable record, so an
         * open with the hint does not read the whole file). A file of any
         * other size was changed since (another program appended, or it was
         * cut): full recovery, as without a side file. */
        const simdr__side_record *r = simdr__side_newest(st);
        if (r && st->closed - 1 == size && r->tail == size && record_meta_found(base, size, r))
            pl->rec[pl->n++] = r;
        return;
    }
    if (!st->has_durable) return;
    pl->floor = &st->durable;
    if (!record_meta_found(base, size, pl->floor)) return;
    for (int i = 0; i < st->n_live; i++) {
        const simdr__side_record *r = &st->live[i];
        if (pl->n && r->tail >= pl->rec[pl->n - 1]->tail) continue;
        if (live_record_vouched(fd, base, size, r, pl->floor)) pl->rec[pl->n++] = r;
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
    uint64_t live = hint.live;
    int rc = index_range(map->base, end, hint.tail, &hint.index, &live);
    if (rc == SIMDR_OK) rc = new_view(map, hint.index, end, out);
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

/* Writable opens: saves [valid, size) beside the file and cuts it. */
static int cut_torn_tail(simdr_store *s, const uint8_t *base, uint64_t valid, uint64_t size,
                         int repair) {
    if (!repair)
        return simdr__fail(SIMDR_ECORRUPT,
                           "%s: torn tail: %llu bytes after offset %llu are not a complete "
                           "entry (repair disabled; nothing changed)",
                           s->path, (unsigned long long)(size - valid), (unsigned long long)valid);
    int rc = save_cut_bytes(s, base, valid, size);
    if (rc == SIMDR_OK && (simdr__io.ftruncate(s->fd, (off_t)valid) != 0 ||
                           simdr__io.fsync(s->fd) != 0))
        rc = simdr__fail_errno(errno, "truncating torn tail", s->path);
    if (rc == SIMDR_OK) s->recovery.truncated = 1;
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
    uint64_t live = r->live;
    int rc = ix ? SIMDR_OK : simdr__build_index(map->base, r->valid_len, &ix, &live);
    if (rc == SIMDR_OK) rc = new_view(map, ix, r->valid_len, out);
    if (rc != SIMDR_OK) {
        if (ix) simdr__index_free(ix);
        return rc;
    }
    s->tail = r->valid_len;
    atomic_store(&s->live, live);
    atomic_store(&s->synced, r->valid_len);
    return SIMDR_OK;
}

/* Maps the open file, finds its valid end (side file, then recovery), cuts
 * (writable) and indexes. */
static int load_file(simdr_store *s, int repair, int fallback_layout, simdr__view **out) {
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
    side_plan plan = {0, {NULL}, NULL, NULL};
    if (has_side) plan_ends(&side, s->fd, map->base, size, &plan);
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
     * neither torn nor part of the store yet. */
    if (taken && writer_active) s->recovery.bytes_cut = 0;
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

static char *compact_tmp_path(const char *path) {
    size_t n = strlen(path) + sizeof ".compact";
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s.compact", path);
    return p;
}

/* Only a regular file holds a store; the descriptor then goes back to
 * blocking I/O. */
static int check_file_type(simdr_store *s) {
    struct stat st;
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    if (S_ISDIR(st.st_mode)) return simdr__fail(SIMDR_EINVAL, "%s: is a directory", s->path);
    if (!S_ISREG(st.st_mode))
        return simdr__fail(SIMDR_EINVAL,
                           "%s: not a regular file (a FIFO, device or socket cannot hold a "
                           "store)",
                           s->path);
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
        return simdr__fail_errno(errno, "fcntl", s->path);
    return SIMDR_OK;
}

SIMDR_API int simdr_open(simdr_store **out, const char *path, const simdr_options *opts) {
    if (!out || !path || !*path) return simdr__fail(SIMDR_EINVAL, "simdr_open: NULL argument");
    *out = NULL;
    simdr_options defaults;
    if (!opts) {
        simdr_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->open_mode < SIMDR_OPEN_CREATE || opts->open_mode > SIMDR_OPEN_READONLY ||
        (opts->layout != SIMDR_LAYOUT_ALIGNED64 && opts->layout != SIMDR_LAYOUT_UNALIGNED) ||
        (opts->durability != SIMDR_SYNC_NONE && opts->durability != SIMDR_SYNC_DATA))
        return simdr__fail(SIMDR_EINVAL, "%s: invalid options", path);

    simdr_store *s;
    if (posix_memalign((void **)&s, SIMDR__CACHELINE, sizeof *s) != 0)
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->readonly = opts->open_mode == SIMDR_OPEN_READONLY;
    s->durability = opts->durability;
    s->new_file_layout = opts->layout;
    s->use_hint = opts->use_hint;
    s->salvage = opts->salvage;
    s->process_gen = simdr__process_generation();
    s->verify_reads = opts->verify_reads != 0;
    s->path = strdup(path);
    if (!s->path) return open_fail(s, simdr__fail(SIMDR_ENOMEM, "out of memory"));

    /* Non-blocking, so that a FIFO is refused rather than waited on. */
    int flags = O_CLOEXEC | O_NONBLOCK | (s->readonly ? O_RDONLY : O_RDWR);
    if (opts->open_mode == SIMDR_OPEN_CREATE) flags |= O_CREAT;
    s->fd = simdr__io.open(path, flags, opts->file_mode ? opts->file_mode : 0644);
    if (s->fd < 0) {
        int err = errno;
        if (err == ENOENT)
            return open_fail(s, simdr__fail(SIMDR_ENOENT, "%s: no such file", path));
        if (err == EISDIR)
            return open_fail(s, simdr__fail(SIMDR_EINVAL, "%s: is a directory", path));
        return open_fail(s, simdr__fail_errno(err, "open", path));
    }
    int rc = check_file_type(s);
    if (rc != SIMDR_OK) return open_fail(s, rc);
    simdr__io_note_fsize_limit();
    if (!s->readonly && flock(s->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK)
            return open_fail(s, simdr__fail(SIMDR_ELOCKED,
                                            "%s: locked by another process that has it open "
                                            "for writing",
                                            path));
        return open_fail(s, simdr__fail_errno(err, "flock", path));
    }
    /* The side file tells recovery the committed tail; a writer takes it
     * over (creating it for a new store) only once the file is accepted. */
    s->side = simdr__side_attach_reader(path);
    simdr__view *v;
    rc = load_file(s, opts->repair, opts->layout, &v);
    if (rc != SIMDR_OK) return open_fail(s, rc);
    if (!s->readonly) {
        simdr__side_close(s->side);
        simdr__side_basis *b = &s->side_basis;
        /* Bytes below the durable record must verify at the next open: the
         * file is synced before its tail may be recorded as durable. */
        if (!b->has_durable && simdr__fdatasync(s->fd) == 0) b->has_durable = 1;
        /* Only that much is known to be on disk: what a killed writer left
         * in the page cache is not, and a later simdr_sync must flush it. */
        atomic_store(&s->synced, b->has_durable ? b->durable.tail : 0);
        s->side = simdr__side_attach_writer(path, s->fd, s->tail, opts->file_mode, b);
    }
    atomic_init(&s->view, v);
    pthread_mutex_init(&s->wlock, NULL);
    pthread_mutex_init(&s->sync_lock, NULL);
    if (!s->readonly) {
        /* A compaction that died before its rename leaves its temporary
         * file; it is never merged into anything, only removed. */
        char *tmp = compact_tmp_path(path);
        if (tmp) {
            unlink(tmp);
            free(tmp);
        }
    }
    *out = s;
    return SIMDR_OK;
}

SIMDR_API int simdr_close(simdr_store *s) {
    if (!s) return SIMDR_OK;
    int rc = SIMDR_OK;
    /* A child that inherited the handle only lets go of it: the file and
     * its hint belong to the parent. */
    int owner = !s->readonly && !s->failed && !simdr__forked(s);
    if (owner && s->durability == SIMDR_SYNC_DATA && simdr__fdatasync(s->fd) != 0)
        rc = simdr__fail_errno(errno, "fdatasync", s->path);
    if (owner && s->use_hint && s->tail != s->hint_tail)
        simdr__hint_save(s);
    /* A clean close: an append by another program after it is not torn. */
    if (!s->readonly && s->side && !s->failed) simdr__side_mark_closed(s->side, s->tail);
    simdr__side_close(s->side);
    simdr__view *v = simdr__current_view(s);
    simdr__map_retire(v->map);
    simdr__index_free(v->index);
    free(v);
    close(s->fd);
    pthread_mutex_destroy(&s->wlock);
    pthread_mutex_destroy(&s->sync_lock);
    free(s->path);
    free(s);
    return rc;
}

SIMDR_API int simdr_sync(simdr_store *s) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "simdr_sync: NULL store");
    if (s->readonly) return SIMDR_OK;
    int refused = simdr__check_syncable(s);
    if (refused != SIMDR_OK) return refused;
    pthread_mutex_lock(&s->wlock);
    uint64_t end = s->tail;
    pthread_mutex_unlock(&s->wlock);
    return simdr__sync_to(s, end);
}

static uint64_t monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * UINT64_C(1000000000) + (uint64_t)t.tv_nsec;
}

/* The writer's tail, the file it is in (compaction swaps both) and the
 * side file's metadata sum at that tail. */
static uint64_t writer_tail(simdr_store *s, int *fd, uint64_t *sum) {
    pthread_mutex_lock(&s->wlock);
    uint64_t tail = s->tail;
    *fd = s->fd;
    *sum = s->side ? s->side->sum : 0;
    pthread_mutex_unlock(&s->wlock);
    return tail;
}

int simdr__sync_to(simdr_store *s, uint64_t end) {
    if (atomic_load_explicit(&s->synced, memory_order_acquire) >= end) return SIMDR_OK;
    int refused = simdr__check_syncable(s);
    if (refused != SIMDR_OK) {
        /* Once failed, synced no longer moves: data it covers was
         * confirmed before the failure. */
        if (refused == SIMDR_EFAILED) {
            if (atomic_load_explicit(&s->synced, memory_order_acquire) >= end) return SIMDR_OK;
            simdr__withdraw_unsynced(s);
        }
        return refused;
    }
    atomic_fetch_add(&s->syncers, 1);
    atomic_fetch_add(&s->sync_queued, 1);
    pthread_mutex_lock(&s->sync_lock);
    atomic_fetch_sub(&s->sync_queued, 1);
    int rc = SIMDR_OK;
    if (atomic_load_explicit(&s->synced, memory_order_acquire) < end)
        rc = simdr__check_syncable(s);
    if (rc == SIMDR_EFAILED && atomic_load_explicit(&s->synced, memory_order_acquire) >= end)
        rc = SIMDR_OK;
    if (rc == SIMDR_OK && atomic_load_explicit(&s->synced, memory_order_acquire) < end) {
        /* Everything appended so far rides on this one fdatasync: writers
         * that queued behind us find their data already synced (group
         * commit). When the previous sync's leader is still on its way
         * out (in sync_to, not queued for the lock: it will be back with
         * its next write in microseconds), wait a fraction of an fdatasync
         * for that write to land, so one sync covers both instead of two
         * writers alternating one sync each. Writers already queued behind
         * us appended before they queued and are covered anyway. */
        int fd;
        uint64_t sum;
        uint64_t target = writer_tail(s, &fd, &sum);
        if (atomic_load(&s->syncers) > atomic_load(&s->sync_queued) + 1) {
            uint64_t wait = atomic_load(&s->last_sync_ns) / 4;
            if (wait > 100000) wait = 100000;
            uint64_t deadline = monotonic_ns() + wait;
            while (monotonic_ns() < deadline) {
                sched_yield();
                uint64_t now_tail = writer_tail(s, &fd, &sum);
                if (now_tail != target) {
                    target = now_tail;
                    break;
                }
            }
        }
        uint64_t t0 = monotonic_ns();
        if (simdr__fdatasync(fd) != 0 || simdr__side_sync(s->side, fd, target, sum) != 0) {
            /* A failed sync is final: see simdr__withdraw_unsynced. */
            rc = simdr__fail_errno(errno, "fdatasync", s->path);
            atomic_store_explicit(&s->failed, 1, memory_order_release);
        } else {
            atomic_store(&s->last_sync_ns, monotonic_ns() - t0);
            if (target > atomic_load(&s->synced))
                atomic_store_explicit(&s->synced, target, memory_order_release);
        }
    }
    pthread_mutex_unlock(&s->sync_lock);
    atomic_fetch_sub(&s->syncers, 1);
    if (rc == SIMDR_EFAILED || (rc != SIMDR_OK && atomic_load(&s->failed)))
        simdr__withdraw_unsynced(s);
    return rc;
}

SIMDR_API int simdr_recovery(const simdr_store *s, simdr_recovery_info *info) {
    if (!s || !info) return simdr__fail(SIMDR_EINVAL, "simdr_recovery: NULL argument");
    *info = s->recovery;
    return SIMDR_OK;
}

/* What a reload changes, kept so that a failed reload leaves the store
 * exactly as it was (a later refresh then tries the new file again). */
typedef struct store_state {
    int fd;
    dev_t dev;
    ino_t ino;
    uint64_t tail, live, synced, hint_tail;
    int layout, layout_detected;
    simdr_recovery_info recovery;
} store_state;

static void state_save(const simdr_store *s, store_state *st) {
    st->fd = s->fd;
    st->dev = s->dev;
    st->ino = s->ino;
    st->tail = s->tail;
    st->live = atomic_load(&s->live);
    st->synced = atomic_load(&s->synced);
    st->hint_tail = s->hint_tail;
    st->layout = atomic_load(&s->layout);
    st->layout_detected = s->layout_detected;
    st->recovery = s->recovery;
}

static void state_restore(simdr_store *s, const store_state *st) {
    s->fd = st->fd;
    s->dev = st->dev;
    s->ino = st->ino;
    s->tail = st->tail;
    atomic_store(&s->live, st->live);
    atomic_store(&s->synced, st->synced);
    s->hint_tail = st->hint_tail;
    atomic_store(&s->layout, st->layout);
    s->layout_detected = st->layout_detected;
    s->recovery = st->recovery;
}

/* The path names a new file (a compaction replaced it): load that one. */
static int reload_locked(simdr_store *s, uint64_t *added) {
    int fd = simdr__io.open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0) return simdr__fail_errno(errno, "open", s->path);
    store_state saved;
    state_save(s, &saved);
    s->fd = fd;
    simdr__view *v;
    int rc = load_file(s, 0, s->new_file_layout, &v);
    if (rc != SIMDR_OK) {
        state_restore(s, &saved);
        close(fd);
        return rc;
    }
    simdr__view *old = simdr__current_view(s);
    atomic_store_explicit(&s->view, v, memory_order_release);
    simdr__epoch_synchronize(&s->epoch);
    simdr__map_retire(old->map);
    simdr__index_free(old->index);
    free(old);
    close(saved.fd);
    uint64_t live = atomic_load(&s->live);
    *added = live > saved.live ? live - saved.live : 0;
    return SIMDR_OK;
}

/* Indexes the entries between the reader's tail and end (newest first in
 * recs), then publishes end. The bytes below end are proven in the file. */
static int index_new_entries(simdr_store *s, const simdr__chain_rec *recs, uint64_t n,
                             uint64_t end) {
    int rc = simdr__ensure_mapped(s, end);
    for (uint64_t i = n; rc == SIMDR_OK && i-- > 0;) {
        rc = simdr__grow_index_if_needed(s);
        if (rc == SIMDR_OK) simdr__index_entry(s, recs[i].hash, recs[i].meta, recs[i].tomb);
    }
    if (rc != SIMDR_OK) return rc;
    s->tail = end;
    atomic_store_explicit(&simdr__current_view(s)->tail, end, memory_order_release);
    return SIMDR_OK;
}

/* The side file's state for the current file (re-attached when the path
 * names a new side file, attached when one appeared): 1 and *st, or 0. */
static int side_state(simdr_store *s, simdr__side_state *st) {
    if (s->side && simdr__side_replaced(s->side, s->path)) {
        simdr__side_close(s->side);
        s->side = NULL;
    }
    if (!s->side) s->side = simdr__side_attach_reader(s->path);
    return simdr__side_read(s->side, s->dev, s->ino, st);
}

/* The end up to which new entries may be indexed: the side file's committed
 * tail when it tells (its writer is alive, died, or closed at that tail and
 * nothing was appended since), with its metadata bytes found in the file of
 * size bytes; else (no side file, or another program appended after a clean
 * close) the end of the file. 1 when the side file decided. */
static int refresh_end(simdr_store *s, const simdr__side_state *st, int has_side, uint64_t size,
                       uint64_t *end) {
    if (!has_side || (st->closed && st->closed - 1 < size)) {
        *end = size;
        return 0;
    }
    const simdr__side_record *newest = simdr__side_newest(st);
    *end = newest->tail;
    if (*end > s->tail) {
        uint8_t meta[SIMDR__META_SIZE];
        if (*end > size || *end <= SIMDR__META_SIZE ||
            simdr__pread_all(s->fd, meta, sizeof meta, *end - SIMDR__META_SIZE) != 0 ||
            memcmp(meta, newest->meta, sizeof meta) != 0)
            *end = s->tail; /* not provable (a stale record): nothing new this time */
    }
    return 1;
}

/* Read-only stores: follow a compaction (the path names a new file) by
 * reloading, or index the entries appended after our tail. The end of what
 * the writer committed comes from the side file; without one, only a chain
 * that ends exactly at the file's end and leads exactly to our tail is
 * taken. Bytes beyond the tail are read with pread, never through the map:
 * a writer may cut them (a failed write, a torn tail) at any moment. */
static int refresh_locked(simdr_store *s, uint64_t *added) {
    struct stat st;
    if (stat(s->path, &st) != 0) return simdr__fail_errno(errno, "stat", s->path);
    if (st.st_dev != s->dev || st.st_ino != s->ino) return reload_locked(s, added);
    /* The side file is read before the size is taken (see load_file). */
    simdr__side_state side;
    int has_side = side_state(s, &side);
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    uint64_t end, tail = s->tail;
    has_side = refresh_end(s, &side, has_side, (uint64_t)st.st_size, &end);
    if (end <= tail || end < tail + SIMDR__META_SIZE + 1) return SIMDR_OK;
    int layout = s->layout_detected ? atomic_load(&s->layout) : -1;
    simdr__chain_rec *recs = NULL;
    uint64_t n = 0;
    int found = simdr__chain_reaches_fd(s->fd, end, tail, &layout, &recs, &n);
    if (found < 0) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    if (!found) {
        free(recs);
        /* A committed tail whose chain does not lead to ours is damage; with
         * no side file the writer is simply mid-append. */
        if (has_side)
            return simdr__fail(SIMDR_ECORRUPT,
                               "%s: the entries committed up to offset %llu do not chain "
                               "back to offset %llu",
                               s->path, (unsigned long long)end, (unsigned long long)tail);
        return SIMDR_OK;
    }
    if (layout >= 0 && !s->layout_detected) {
        atomic_store(&s->layout, layout);
        s->layout_detected = 1;
    }
    int rc = index_new_entries(s, recs, n, end);
    free(recs);
    if (rc == SIMDR_OK) *added = n;
    return rc;
}

SIMDR_API int simdr_refresh(simdr_store *s, uint64_t *new_entries) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "simdr_refresh: NULL store");
    uint64_t added = 0;
    int rc = SIMDR_OK;
    if (s->readonly) {
        pthread_mutex_lock(&s->wlock);
        rc = refresh_locked(s, &added);
        pthread_mutex_unlock(&s->wlock);
    }
    if (new_entries) *new_entries = added;
    return rc;
}

SIMDR_API uint64_t simdr_count(simdr_store *s) { return s ? atomic_load(&s->live) : 0; }
SIMDR_API int simdr_is_empty(simdr_store *s) { return simdr_count(s) == 0; }
SIMDR_API uint64_t simdr_file_size(simdr_store *s) {
    return s ? atomic_load_explicit(&simdr__current_view(s)->tail, memory_order_acquire) : 0;
}
SIMDR_API int simdr_layout_of(simdr_store *s) { return s ? atomic_load(&s->layout) : -1; }
SIMDR_API const char *simdr_path(simdr_store *s) { return s ? s->path : NULL; }

SIMDR_API uint64_t simdr_index_bytes(simdr_store *s) {
    if (!s) return 0;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    uint64_t bytes = simdr__current_view(s)->index->cap * sizeof(uint64_t) + sizeof(simdr__index);
    simdr__epoch_exit(&s->epoch, shard, tok);
    return bytes;
}
