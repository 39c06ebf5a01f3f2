/*
 * mapped.c - mapped appends (SIMDR_APPEND_MAPPED): a write copies its
 * entries into a writable shared mapping of file space allocated ahead of
 * the tail, so a put makes no system call.
 *
 * Why this cannot raise SIGBUS or lose a write:
 * - A store into a shared mapping past the file's end raises SIGBUS, and so
 *   does a write fault on a page the file system cannot back (a full disk
 *   under a sparse file). The window is written only below alloc_end, and
 *   every byte below alloc_end was allocated with fallocate(2) (mode 0:
 *   blocks reserved, file length extended) before anything is copied there,
 *   so a full disk is an error of the growth step, with nothing written.
 *   Growing a sparse file with ftruncate would move that error into the
 *   copy as a signal: a file system without fallocate switches the store
 *   to pwrite appends instead.
 * - The library shortens the file only here (the trim) and in the write
 *   path's undo, and both set alloc_end to the new length first thing.
 * - Readers (this process's read map, other processes' pread and maps) read
 *   only below a published tail. The zeros after it are, for every open, a
 *   torn tail: ignored while the writer lives (it holds the side file's
 *   lock), cut after a crash (load.c), cut by the writer itself on
 *   simdr_sync and simdr_close, so a closed store is as long as its entries.
 * - The page cache holds what was copied: a killed process loses nothing
 *   acknowledged, exactly as with pwrite (the side file's live records,
 *   updated after each append, vouch for it at the next open).
 * Growth steps are max(MIN_STEP, 1/8 of the file): a few fallocate calls
 * per doubling of the file, and the zeros past the tail stay within an
 * eighth of the file (1 MiB for a small store, which a RAM file system
 * zeroes at once). The window is a bounded
 * stretch from the tail (WINDOW bytes, or one entry when that is larger),
 * moved as the tail passes its end, so the pages written leave the
 * process's resident set with it.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define MIN_STEP (UINT64_C(1) << 20)
#define WINDOW (UINT64_C(16) << 20)
#define GRANULE (UINT64_C(1) << 20)

static void drop_window(simdr_store *s) {
    if (s->wmap) munmap(s->wmap, (size_t)s->wmap_len);
    s->wmap = NULL;
    s->wmap_off = s->wmap_len = 0;
}

/* Allocates the file up to at least end. */
static int grow(simdr_store *s, uint64_t end) {
    uint64_t limit = simdr__io_fsize_limit();
    if (end > limit)
        return simdr__fail(SIMDR_ENOSPC,
                           "%s: the write would take the file to %llu bytes, past the "
                           "process's file size limit (RLIMIT_FSIZE, %llu bytes)",
                           s->path, (unsigned long long)end, (unsigned long long)limit);
    uint64_t step = s->alloc_end / 8 > MIN_STEP ? s->alloc_end / 8 : MIN_STEP;
    uint64_t want = s->alloc_end + step > end ? s->alloc_end + step : end;
    want = (want + GRANULE - 1) / GRANULE * GRANULE;
    if (want > limit) want = limit;
    if (want > SIMDR__MAX_OFFSET) want = SIMDR__MAX_OFFSET;
    if (want < end) want = end;
    for (;;) {
        if (simdr__io.fallocate(s->fd, 0, (off_t)s->alloc_end,
                                (off_t)(want - s->alloc_end)) == 0) {
            s->alloc_end = want;
            return SIMDR_OK;
        }
        int err = errno;
        if (err == EINTR) continue;
        /* A failed allocation may have extended the file part of the way:
         * what lies past alloc_end is never written, cut it again (failing
         * that, it only leaves zeros, cut at the next trim or open). */
        simdr__ftruncate(s->fd, (off_t)s->alloc_end);
        if (err == EOPNOTSUPP || err == ENOSYS) {
            s->mapped = 0;
            drop_window(s);
            return SIMDR__MAPPED_UNSUPPORTED;
        }
        /* Out of space (or past a file size limit set after the open) for a
         * whole step: perhaps there is room for this write alone. */
        if ((err == ENOSPC || err == EDQUOT || err == EFBIG) && want > end) {
            want = end;
            continue;
        }
        return simdr__fail_errno(err, "preallocating file space for mapped appends", s->path);
    }
}

static int move_window(simdr_store *s, uint64_t start, uint64_t end) {
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t off = start / page * page;
    uint64_t len = (end - off + page - 1) / page * page;
    if (len < WINDOW) len = WINDOW;
    drop_window(s);
    /* The window may reach past the file's end: those pages are never
     * touched before a growth step has allocated them. */
    void *p = simdr__io.mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
                             (off_t)off);
    if (p == MAP_FAILED) {
        int err = errno;
        return simdr__fail(err == ENOMEM ? SIMDR_ENOMEM : SIMDR_EIO,
                           "%s: mapping the file for appends at offset %llu: %s", s->path,
                           (unsigned long long)off, strerror(err));
    }
    s->wmap = p;
    s->wmap_off = off;
    s->wmap_len = len;
    return SIMDR_OK;
}

int simdr__mapped_span(simdr_store *s, uint64_t start, uint64_t end, uint8_t **dst) {
    if (end > s->alloc_end) {
        int rc = grow(s, end);
        if (rc != SIMDR_OK) return rc;
    }
    if (!s->wmap || start < s->wmap_off || end > s->wmap_off + s->wmap_len) {
        int rc = move_window(s, start, end);
        if (rc != SIMDR_OK) return rc;
    }
    *dst = s->wmap + (start - s->wmap_off);
    return SIMDR_OK;
}

int simdr__mapped_trim(simdr_store *s) {
    int rc = SIMDR_OK;
    pthread_mutex_lock(&s->wlock);
    /* A failed store keeps the bytes it withdrew (simdr__withdraw_unsynced). */
    if (s->mapped && !s->failed && s->alloc_end > s->tail) {
        if (simdr__ftruncate(s->fd, (off_t)s->tail) == 0)
            s->alloc_end = s->tail;
        else
            rc = simdr__fail_errno(errno, "cutting the preallocated space after the tail",
                                   s->path);
    }
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

void simdr__mapped_release(simdr_store *s, uint64_t len) {
    drop_window(s);
    s->alloc_end = len;
}
