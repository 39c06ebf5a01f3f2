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
 *
 * Zeroed appends (SIMDR_APPEND_ZEROED) share the space ahead of the tail
 * and its rules for readers, but for a different end: a durable sync.
 * fdatasync after an append that made the file longer commits the file
 * system's journal (the new length, the new blocks) besides writing the
 * data; after an append that overwrote blocks already written inside the
 * file's length it writes the data and flushes the device cache, nothing
 * else. So the zeros are written (pwrite, not fallocate, whose unwritten
 * extents are converted, in the journal, at the first write into them) in
 * steps, one journal commit per step instead of per sync, and stay across
 * simdr_sync; the entries go in with pwrite as in SIMDR_APPEND_WRITE.
 * Zeros cost a copy into the page cache and a write to the disk for every
 * byte, a journal commit costs the same whatever a sync covers: they pay
 * only while the store syncs often and little at a time. So a step is
 * written only while the syncs so far covered on average at most
 * ZERO_SYNC_BYTES_MAX; otherwise (and before the first sync) the writes
 * extend the file as plain appends (docs/BENCHMARKS.md has both cases).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
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

/* A growth step from alloc_end: max(MIN_STEP, 1/8 of the file), at most
 * step_max. */
static uint64_t step_size(const simdr_store *s, uint64_t step_max) {
    uint64_t step = s->alloc_end / 8 > MIN_STEP ? s->alloc_end / 8 : MIN_STEP;
    return step < step_max ? step : step_max;
}

/* Where space ahead reaching at least end (and a step) ends: rounded up to
 * a GRANULE, then clamped to the file size limit and the format's largest
 * offset (so it may fall short of end). */
static uint64_t step_end(uint64_t alloc_end, uint64_t step, uint64_t end, uint64_t limit) {
    uint64_t want = alloc_end + step > end ? alloc_end + step : end;
    want = (want + GRANULE - 1) / GRANULE * GRANULE;
    if (want > limit) want = limit;
    if (want > SIMDR__MAX_OFFSET) want = SIMDR__MAX_OFFSET;
    return want;
}

/* Cuts the space ahead of the tail (wlock held): SIMDR_OK, or the error of
 * ftruncate with alloc_end unchanged. */
static int cut_ahead(simdr_store *s) {
    if (s->alloc_end <= s->tail) return SIMDR_OK;
    if (simdr__ftruncate(s->fd, (off_t)s->tail) != 0)
        return simdr__fail_errno(errno, "cutting the preallocated space after the tail",
                                 s->path);
    s->alloc_end = s->tail;
    return SIMDR_OK;
}

/* Allocates the file up to at least end. */
static int grow(simdr_store *s, uint64_t end) {
    uint64_t limit = simdr__io_fsize_limit();
    if (end > limit)
        return simdr__fail(SIMDR_ENOSPC,
                           "%s: the write would take the file to %llu bytes, past the "
                           "process's file size limit (RLIMIT_FSIZE, %llu bytes)",
                           s->path, (unsigned long long)end, (unsigned long long)limit);
    uint64_t want = step_end(s->alloc_end, step_size(s, UINT64_MAX), end, limit);
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

#define ZERO_STEP_MAX (UINT64_C(8) << 20)
#define ZERO_SYNC_BYTES_MAX (UINT64_C(256) << 10)

void simdr__zeroed_reserve(simdr_store *s, uint64_t end) {
    uint64_t per_sync = atomic_load(&s->sync_bytes_avg);
    if (per_sync == 0 || per_sync > ZERO_SYNC_BYTES_MAX) return;
    /* Big enough that a journal commit per step is rare next to the syncs
     * between steps, small enough that writing the step (under the writer
     * lock) and its first sync stay a few milliseconds. */
    uint64_t step = step_size(s, ZERO_STEP_MAX);
    /* A write longer than a step extends the file itself: zeros under it
     * would double its bytes for one journal commit that it amortizes
     * anyway. The next small write starts a step after it. */
    if (end > s->alloc_end + step) return;
    uint64_t want = step_end(s->alloc_end, step, end, simdr__io_fsize_limit());
    if (want <= end) return; /* at a limit: the pwrite reports it */
    /* Never written: a block of the zero page, read by pwrite. */
    static uint8_t zeros[1 << 16];
    struct iovec iov[16];
    for (int i = 0; i < 16; i++) iov[i] = (struct iovec){zeros, sizeof zeros};
    uint64_t from = s->alloc_end;
    for (uint64_t at = from; at < want;) {
        uint64_t len = want - at < sizeof zeros * 16 ? want - at : sizeof zeros * 16;
        int cnt = (int)((len + sizeof zeros - 1) / sizeof zeros);
        iov[cnt - 1].iov_len = (size_t)(len - (uint64_t)(cnt - 1) * sizeof zeros);
        int wr = simdr__pwritev_all(s->fd, iov, cnt, at);
        iov[cnt - 1].iov_len = sizeof zeros;
        if (wr != 0) {
            /* No room for the step (or any other failure): cut what was
             * written and let the write go on as a plain append. Failing
             * that, zeros past alloc_end remain: below the next step's start
             * or cut at close and open, never read as entries. */
            simdr__ftruncate(s->fd, (off_t)from);
            return;
        }
        at += len;
    }
    s->alloc_end = want;
}

int simdr__mapped_trim(simdr_store *s, int closing) {
    int rc = SIMDR_OK;
    pthread_mutex_lock(&s->wlock);
    /* A failed store keeps the bytes it withdrew (simdr__withdraw_unsynced). */
    if ((s->mapped || (s->zeroed && closing)) && !s->failed) rc = cut_ahead(s);
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

void simdr__mapped_release(simdr_store *s, uint64_t len) {
    drop_window(s);
    s->alloc_end = len;
}

SIMDR_API int simdr_set_append_mode(simdr_store *s, int mode) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "simdr_set_append_mode: NULL store");
    if (mode != SIMDR_APPEND_WRITE && mode != SIMDR_APPEND_MAPPED && mode != SIMDR_APPEND_ZEROED)
        return simdr__fail(SIMDR_EINVAL, "%s: unknown append mode %d", s->path, mode);
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    pthread_mutex_lock(&s->wlock);
    rc = simdr__check_writable(s);
    int now = s->mapped ? SIMDR_APPEND_MAPPED : s->zeroed ? SIMDR_APPEND_ZEROED : SIMDR_APPEND_WRITE;
    /* The same mode: nothing is left, so nothing is cut. */
    if (rc == SIMDR_OK && mode != now && (rc = cut_ahead(s)) == SIMDR_OK) {
        drop_window(s);
        s->mapped = mode == SIMDR_APPEND_MAPPED;
        s->zeroed = mode == SIMDR_APPEND_ZEROED;
    }
    pthread_mutex_unlock(&s->wlock);
    return rc;
}
