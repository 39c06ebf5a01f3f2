/*
 * map.c - the read-only memory map of the store file.
 *
 * One mapping reserves far more address space than the file holds, so the
 * file grows under it without remapping (pages become readable as pwrite
 * extends the file). Entry handles pin the map through per-thread shards of a
 * reference count; when the map is replaced (the file outgrew it, or
 * compaction swapped the file) it is retired: each shard is closed with an
 * atomic OR, the pinned total moves into one counter, and whoever brings that
 * counter to zero (the retirer or the last handle) unmaps it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define MIN_RESERVE (UINT64_C(1) << 30)
#define RESERVE_GRANULE (UINT64_C(2) << 20)

_Atomic uint64_t simdr__map_min_reserve = MIN_RESERVE;

uint64_t simdr__map_reserve_for(uint64_t size) {
    uint64_t min = atomic_load_explicit(&simdr__map_min_reserve, memory_order_relaxed);
    uint64_t want = size > min / 2 ? size * 2 : min;
    return (want + RESERVE_GRANULE - 1) & ~(RESERVE_GRANULE - 1);
}

int simdr__map_create(int fd, uint64_t file_size, simdr__map **out, const char *path) {
    simdr__map *m;
    if (posix_memalign((void **)&m, SIMDR__CACHELINE, sizeof *m) != 0)
        return simdr__fail(SIMDR_ENOMEM, "%s: out of memory for the map", path);
    for (unsigned i = 0; i < SIMDR__SLOTS; i++) atomic_init(&m->refs[i].n, 0);
    atomic_init(&m->outstanding, 0);
    m->len = simdr__map_reserve_for(file_size);
    /* Map through a separate open file description: a mapping holds its
     * description open, and the store's write lock (flock) belongs to the
     * store's own description, which must be released by simdr_close even
     * while handles keep this map alive. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int map_fd = simdr__io.open(self, O_RDONLY | O_CLOEXEC, 0);
    if (map_fd < 0 && errno != ENOENT && errno != EACCES) {
        /* Out of descriptors (or memory): mapping through fd instead would
         * keep the writer lock past simdr_close for as long as an entry
         * pins the map. Only without /proc is fd used (and then so). */
        int err = errno;
        free(m);
        return simdr__fail(simdr__errno_status(err), "%s: opening the file again to map it: %s",
                           path, strerror(err));
    }
    int map_from = map_fd >= 0 ? map_fd : fd;
    void *p = simdr__io.mmap(NULL, (size_t)m->len, PROT_READ, MAP_SHARED, map_from, 0);
    /* Under an address-space limit (ulimit -v) the reservation may not fit:
     * it is halved down to the file's own size. A map the file outgrows
     * sooner only means a new map sooner (view.c). */
    uint64_t need = (file_size + RESERVE_GRANULE - 1) & ~(RESERVE_GRANULE - 1);
    if (need == 0) need = RESERVE_GRANULE;
    while (p == MAP_FAILED && errno == ENOMEM && m->len > need) {
        uint64_t half = ((m->len / 2) + RESERVE_GRANULE - 1) & ~(RESERVE_GRANULE - 1);
        m->len = half > need ? half : need;
        p = simdr__io.mmap(NULL, (size_t)m->len, PROT_READ, MAP_SHARED, map_from, 0);
    }
    if (p == MAP_FAILED) {
        int err = errno;
        unsigned long long reserved = (unsigned long long)m->len;
        if (map_fd >= 0) close(map_fd);
        free(m);
        return simdr__fail(err == ENOMEM ? SIMDR_ENOMEM : SIMDR_EIO,
                           "%s: mapping a file of %llu bytes (%llu bytes of address space): %s",
                           path, (unsigned long long)file_size, reserved, strerror(err));
    }
    m->base = p;
    m->populated = 0;
    /* Kept: it names the mapped file even after a compaction gave the store
     * another one, so a check can read a value's bytes without mapping its
     * pages in (read.c, simdr__payload_sound). */
    m->fd = map_fd;
    *out = m;
    return SIMDR_OK;
}

void simdr__map_unmap_pages(const simdr__map *m, uint64_t end) {
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (end > m->len) end = m->len;
    end = end / page * page;
    /* Failure (a locked mapping) only leaves them mapped. */
    if (end) madvise((void *)m->base, (size_t)end, MADV_DONTNEED);
}

SIMDR_API int simdr_release_memory(simdr_store *s) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__map *m = simdr__current_view(s)->map;
    simdr__map_pin(m, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    /* The writer's record of what an index growth mapped in (populated) is
     * not reset: the next growth then faults those pages in one by one
     * instead of mapping them in one call; slower, never wrong. */
    simdr__map_unmap_pages(m, m->len);
    simdr__map_unpin(m, shard);
    return SIMDR_OK;
}

static void map_destroy(simdr__map *m) {
    munmap((void *)m->base, (size_t)m->len);
    if (m->fd >= 0) close(m->fd);
    free(m);
}

void simdr__map_unpin(simdr__map *m, unsigned shard) {
    uint64_t old = atomic_fetch_sub_explicit(&m->refs[shard].n, 1, memory_order_acq_rel);
    if (old & SIMDR__MAP_CLOSED) {
        /* Counted by the retirer: settle in the shared counter. */
        if (atomic_fetch_sub_explicit(&m->outstanding, 1, memory_order_acq_rel) == 1)
            map_destroy(m);
    }
}

/* Held in the shared counter while a retirement counts the shards: see
 * simdr__map_retire. Far above any number of handles. */
#define RETIRING_BIAS (INT64_C(1) << 62)

void simdr__map_retire(simdr__map *m) {
    /* While the shards are being closed, the shared counter only holds what
     * happened in shards already closed: releases (-1 each) and duplicates
     * of handles pinned elsewhere (+1 each, simdr__map_pin). A duplicate
     * counted there, then the release of the handle it came from, would
     * bring it to zero, and the map would be unmapped under the duplicate
     * before the pins found below are added. The bias keeps it above zero
     * until they are. */
    atomic_fetch_add_explicit(&m->outstanding, RETIRING_BIAS, memory_order_acq_rel);
    int64_t pinned = 0;
    for (unsigned i = 0; i < SIMDR__SLOTS; i++) {
        uint64_t old = atomic_fetch_or_explicit(&m->refs[i].n, SIMDR__MAP_CLOSED,
                                                memory_order_acq_rel);
        pinned += (int64_t)(old & ~SIMDR__MAP_CLOSED);
    }
    /* Releases that happened after their shard closed already subtracted
     * themselves; adding the total (and taking the bias back) brings the
     * counter to the true count. */
    int64_t add = pinned - RETIRING_BIAS;
    if (atomic_fetch_add_explicit(&m->outstanding, add, memory_order_acq_rel) + add == 0)
        map_destroy(m);
}
