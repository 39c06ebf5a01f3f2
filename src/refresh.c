/*
 * refresh.c - read-only opens catching up with a writer in another process:
 * following a compaction to its new file, or indexing the entries appended
 * after our tail up to the end the writer committed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

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
    int rc = simdr__load_file(s, 0, s->new_file_layout, &v);
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
    if (rc == SIMDR_OK) rc = simdr__index_settle(s);
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
 * close) the end of the file. 1 when the side file decided, 0 when not, a
 * negative status when the file could not be read. */
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
        if (*end > size || *end <= SIMDR__META_SIZE) {
            *end = s->tail; /* not provable (a stale record): nothing new this time */
            return 1;
        }
        /* A read that fails is an error, not a stale record: answering OK
         * would tell the caller it has caught up with entries it never saw. */
        errno = 0;
        if (simdr__pread_all(s->fd, meta, sizeof meta, *end - SIMDR__META_SIZE) != 0) {
            if (errno == 0) { /* end of file: the record is stale after all */
                *end = s->tail;
                return 1;
            }
            return simdr__fail_errno(errno, "reading the committed tail", s->path);
        }
        if (memcmp(meta, newest->meta, sizeof meta) != 0) *end = s->tail;
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
    /* The side file is read before the size is taken (see simdr__load_file). */
    simdr__side_state side;
    int has_side = side_state(s, &side);
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    uint64_t end, tail = s->tail;
    has_side = refresh_end(s, &side, has_side, (uint64_t)st.st_size, &end);
    if (has_side < 0) return has_side;
    if (end <= tail || end < tail + SIMDR__META_SIZE + 1) return SIMDR_OK;
    int layout = s->layout_detected ? atomic_load(&s->layout) : -1;
    simdr__chain_rec *recs = NULL;
    uint64_t n = 0;
    int found = simdr__chain_reaches_fd(s->fd, end, tail, &layout, &recs, &n);
    if (found < 0) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    /* More new entries than one walk takes (a bulk load since the last
     * refresh): not damage, and a walk can never catch up with them, so the
     * file is loaded afresh as an open would, as after a compaction. */
    if (found == 2) return reload_locked(s, added);
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
    if (s->readonly && simdr__forked(s))
        /* An inherited handle shows the store as it was at the fork, and a
         * thread of the parent refreshing then would hold the lock below in
         * this process forever. */
        return simdr__refuse_forked(s);
    if (s->readonly) {
        pthread_mutex_lock(&s->wlock);
        rc = refresh_locked(s, &added);
        pthread_mutex_unlock(&s->wlock);
    }
    if (new_entries) *new_entries = added;
    return rc;
}
