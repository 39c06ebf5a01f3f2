/*
 * sync.c - making appended data durable: simdr_sync and the group commit
 * (simdr__sync_to) that lets one fdatasync cover every writer queued on it,
 * and the order of the flushes behind it (make_durable).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <time.h>

#include "internal.h"

SIMDR_API int simdr_sync(simdr_store *s) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "simdr_sync: NULL store");
    if (s->readonly) return SIMDR_OK;
    int refused = simdr__check_syncable(s);
    if (refused != SIMDR_OK) return refused;
    /* Mapped appends: cut the preallocated zeros first, so the sync leaves
     * the file as long as its entries (mapped.c). Zeroed appends keep them:
     * they are what makes this sync cheap. */
    int trimmed = simdr__mapped_trim(s, 0);
    pthread_mutex_lock(&s->wlock);
    uint64_t end = s->tail;
    pthread_mutex_unlock(&s->wlock);
    int rc = simdr__sync_to(s, end);
    return rc != SIMDR_OK ? rc : trimmed;
}

static uint64_t monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * UINT64_C(1000000000) + (uint64_t)t.tv_nsec;
}

/* The writer's tail and the file it is in (compaction swaps both). */
static uint64_t writer_tail(simdr_store *s, int *fd, uint64_t *sum) {
    pthread_mutex_lock(&s->wlock);
    uint64_t tail = s->tail;
    *fd = s->fd;
    *sum = s->side ? s->side->sum : 0; /* the side file's metadata sum at tail */
    pthread_mutex_unlock(&s->wlock);
    return tail;
}

/* Makes the store file durable up to target (sum: the side file's sum
 * there), with a record in the side file that keeps it after a power cut,
 * before the caller acknowledges anything. Where the file system allows
 * (side.c, simdr__side_one_flush) one device flush does both: the side
 * file's page, naming target in a commit slot, goes to the device first and
 * the store's fdatasync flushes the cache over both. Otherwise two: the
 * fdatasync, then the durable record and its own msync. 0 or -1 (errno). */
static int make_durable(simdr_store *s, int fd, uint64_t target, uint64_t sum) {
    if (simdr__side_one_flush(s->side)) {
        /* The store's new bytes start on their way to the device while the
         * page's write is waited for, instead of after it. Only a head
         * start: the fdatasync writes whatever this did not, so a failure
         * here changes nothing. */
#ifdef SYNC_FILE_RANGE_WRITE
        uint64_t from = atomic_load_explicit(&s->synced, memory_order_acquire);
        if (target > from)
            simdr__sync_file_range(fd, (off_t)from, (off_t)(target - from),
                                   SYNC_FILE_RANGE_WRITE);
#endif
        if (simdr__side_commit(s->side, fd, target, sum) != 0 || simdr__fdatasync(fd) != 0)
            return -1;
        simdr__side_committed(s->side, target);
        return 0;
    }
    return simdr__fdatasync(fd) != 0 || simdr__side_sync(s->side, fd, target, sum) != 0 ? -1 : 0;
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
         * its next write long before an fdatasync ends), wait a fraction
         * of an fdatasync for that write to land, so one sync covers both
         * instead of two writers alternating one sync each. Writers already
         * queued behind us appended before they queued and are covered
         * anyway. */
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
        if (make_durable(s, fd, target, sum) != 0) {
            /* A failed sync is final: see simdr__withdraw_unsynced. */
            rc = simdr__fail_errno(errno, "fdatasync", s->path);
            atomic_store_explicit(&s->failed, 1, memory_order_release);
        } else {
            atomic_store(&s->last_sync_ns, monotonic_ns() - t0);
            /* What zeroed appends decide by (mapped.c): the writes one sync
             * covers, averaged over the last few syncs. */
            uint64_t from = atomic_load_explicit(&s->synced, memory_order_acquire);
            if (target > from) {
                uint64_t avg = atomic_load(&s->sync_bytes_avg), bytes = target - from;
                atomic_store(&s->sync_bytes_avg, avg ? avg - avg / 8 + bytes / 8 : bytes);
            }
            /* Only forwards: simdr_move syncs a target store's file under
             * its writer lock, not this lock, and may have moved it further
             * meanwhile (a lower value would later withdraw its copy). */
            uint64_t was = atomic_load_explicit(&s->synced, memory_order_acquire);
            while (was < target &&
                   !atomic_compare_exchange_weak_explicit(&s->synced, &was, target,
                                                          memory_order_release,
                                                          memory_order_acquire)) {
            }
        }
    }
    pthread_mutex_unlock(&s->sync_lock);
    atomic_fetch_sub(&s->syncers, 1);
    if (rc == SIMDR_EFAILED || (rc != SIMDR_OK && atomic_load(&s->failed)))
        simdr__withdraw_unsynced(s);
    return rc;
}
