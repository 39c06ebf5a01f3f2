/*
 * powercut_test.c - power cuts simulated at random points of a workload, in
 * the manner of SQLite's crash VFS (src/test6.c), through the system-call
 * table of src/io.h.
 *
 * A layer over the table watches the store's descriptor: writes go to the
 * file as usual (the library reads its own writes through the map) and are
 * also recorded as pending; a sync makes the pending writes durable in an
 * in-memory image of what the disk holds (no real sync is made: durability
 * is what the layer models). At a random system call the power is cut: that
 * call and every later one fail, and the file as the disk would hold it is
 * built from the durable image plus the pending writes, each of them kept,
 * dropped, or torn at 512-byte sectors (some sectors kept, some not, one cut
 * inside), applied in a random order, the file length anywhere between what
 * was applied and what the file had (a size that reached the disk before
 * its data reads as zeros). The side file "<store>.simdr" is modelled too:
 * the disk holds its page as of the last msync, or as a write-back may have
 * stored it at any call since (copies are taken at every call on the
 * store). A sync that writes the page to the device without flushing it
 * (sync_file_range, one-flush syncs) only adds a copy a write-back may have
 * stored; the store's next completed fdatasync or fsync, whose cache flush
 * carries it, makes that copy what the disk surely holds (a cut during that
 * flush leaves any copy and any mix of the store's pending writes). Both
 * images are written over the files in place and the store is
 * opened and checked against the history of the workload, entry by entry:
 *   - with SIMDR_SYNC_DATA every acknowledged write survives: the store is
 *     the state after every acknowledged operation, plus perhaps a prefix
 *     of the entries of the operation cut short;
 *   - with SIMDR_SYNC_NONE the store opens to the state after some prefix
 *     of the entries written (nothing invented, no value altered) that
 *     holds at least what an explicit simdr_sync acknowledged;
 * every value read is verified byte for byte, the count matches, and the
 * repaired store accepts a write that survives a reopen. Workloads mix
 * puts, batches, deletes and streams, and now and then close and reopen
 * the store or sync it explicitly.
 *
 * With --strict (what CI runs) any other outcome fails the test. Without
 * it three outcomes are counted rather than failed, for exploring a
 * library that does not meet it: a store refused as not a store (first
 * entry lost), refused as damaged (its salvaged read-only prefix must then
 * be a state of the history), or opened to a state that is not a prefix
 * (simdr_check must then report damage). All are printed at the end.
 *
 * --closed-page also lets the page a clean close marked reach the disk
 * before the next open flushes its own: a power cut after a clean close of
 * unsynced writes, which recovers in full (docs/RELIABILITY.md, the
 * remaining gap) and is not part of --strict.
 *
 * --mapped runs the writers with SIMDR_APPEND_MAPPED: their stores into the
 * shared mapping make no system call, so the layer compares the file with
 * what it last saw before each call on the store and at points between
 * operations (where the power may then go too), and records what changed
 * as pending writes. --zeroed runs them with SIMDR_APPEND_ZEROED: pwrite
 * appends into zeros written ahead and kept across syncs, so a cut can leave
 * any subset of the unsynced pages over those zeros.
 *
 * Usage: powercut_test [--seed N] [--scale N] [--rounds N] [--strict]
 * [--closed-page] [--flush one|two] [--mapped | --zeroed];
 * SIMDR_TEST_SEED and SIMDR_TEST_SCALE work too. Rounds alternate between
 * the two durability modes and the two layouts; three groups of four rounds
 * in four sync with one device flush (the side file's page pushed ahead of
 * the store's fdatasync), the fourth with two (fdatasync, then msync of the
 * page); --flush fixes one of them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashutil.h"
#include "io.h"
#include "simdr.h"

#define NKEYS 16u
#define MAX_OPS 48u
#define MAX_HIST (MAX_OPS * 8u + 1u)
#define SECTOR 512u

/* --strict: every cut store must open writable (see main). */
static int strict;
/* --closed-page: the side file's page as a clean close left it may reach
 * the disk (the remaining gap, docs/RELIABILITY.md). */
static int closed_page;
/* --flush: every round syncs with one device flush (1) or two (2); 0: both. */
static int flush_only;
static uint64_t pushes, pushes_flushed; /* over all rounds */

/* ---- the power-cut layer ---- */

/* The side file "<store>.simdr" is one page the library maps MAP_SHARED: its
 * stores reach the disk when the page is flushed (msync) or whenever the
 * kernel writes it back. The layer keeps the page as of the last msync (what
 * the disk surely holds) and copies of it taken at every call on the store
 * since (what a write-back may have put there); at the cut the disk holds
 * one of them. All its fields lie in its first sector, which the drive
 * writes whole. */
#define SIDE_PAGE 4096u

typedef struct pending_write {
    uint64_t off;
    size_t len;
    uint8_t *data;
} pending_write;

static struct {
    const char *path;      /* the store file to watch */
    int fd;                /* its writable descriptor, once opened */
    uint8_t *durable;      /* what the disk holds as of the last sync */
    size_t durable_len, durable_cap;
    pending_write *pending;
    size_t npending, cap_pending;
    uint64_t file_len;     /* the file's length as the page cache has it */
    uint64_t countdown;    /* calls on the store until the cut (0: never) */
    int cut;               /* the power is off */
    uint64_t rng;
    uint8_t *image;        /* the file as the disk holds it after the cut */
    size_t image_len;
    char side_path[4200];  /* the side file */
    int side_fd;           /* read-only descriptor on it, once it exists (-1: not yet) */
    uint8_t side_synced[SIDE_PAGE]; /* the page as of its last msync */
    int has_side_synced;
    uint8_t (*side_later)[SIDE_PAGE]; /* copies taken since, oldest first */
    size_t nside_later, cap_side_later;
    uint8_t side_image[SIDE_PAGE]; /* the page the disk holds after the cut */
    int has_side_image;
    uint64_t side_choices, side_stale; /* cuts; of which the disk kept an older page */
    uint8_t side_pushed[SIDE_PAGE]; /* the page as last written to the device unflushed */
    int has_side_pushed;
    size_t side_pushed_at; /* its copy's index in side_later */
    uint64_t pushes, pushes_flushed; /* pages pushed; made durable by a later flush */
    uint8_t *cache;        /* --mapped: the file as the layer last saw it in the page cache */
    size_t cache_len, cache_cap;
} pc;

static void durable_reserve(size_t len) {
    if (len <= pc.durable_cap) return;
    size_t cap = pc.durable_cap ? pc.durable_cap : 4096;
    while (cap < len) cap *= 2;
    pc.durable = realloc(pc.durable, cap);
    CU_CHECK(pc.durable, "out of memory");
    memset(pc.durable + pc.durable_cap, 0, cap - pc.durable_cap);
    pc.durable_cap = cap;
}

static void apply_to(uint8_t **buf, size_t *len, size_t *cap, uint64_t off, const uint8_t *data,
                     size_t n) {
    if (n == 0) return;
    size_t end = (size_t)off + n;
    if (end > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < end) c *= 2;
        *buf = realloc(*buf, c);
        CU_CHECK(*buf, "out of memory");
        memset(*buf + *cap, 0, c - *cap);
        *cap = c;
    }
    if (off > *len) memset(*buf + *len, 0, (size_t)off - *len);
    memcpy(*buf + off, data, n);
    if (end > *len) *len = end;
}

/* The page cache's length changed to len (a cut, or an allocation). */
static void cache_resize(uint64_t len) {
    if (len > pc.cache_len) {
        uint8_t zero = 0;
        apply_to(&pc.cache, &pc.cache_len, &pc.cache_cap, len - 1, &zero, 1);
    } else {
        pc.cache_len = (size_t)len;
    }
}

static void record_write(uint64_t off, const void *data, size_t n) {
    apply_to(&pc.cache, &pc.cache_len, &pc.cache_cap, off, data, n);
    if (pc.npending == pc.cap_pending) {
        pc.cap_pending = pc.cap_pending ? pc.cap_pending * 2 : 64;
        pc.pending = realloc(pc.pending, pc.cap_pending * sizeof *pc.pending);
        CU_CHECK(pc.pending, "out of memory");
    }
    pending_write *w = &pc.pending[pc.npending++];
    w->off = off;
    w->len = n;
    w->data = malloc(n ? n : 1);
    CU_CHECK(w->data, "out of memory");
    memcpy(w->data, data, n);
    if (off + n > pc.file_len) pc.file_len = off + n;
}

/* --mapped: stores into the writer's shared mapping make no system call,
 * so the layer finds them by comparing the file with what it last saw, up
 * to the newest tail the side file's live records name (mapped writes are
 * published there before any later system call), and records each changed
 * run as a pending write: at the cut it may be kept, dropped or torn like
 * any other. Called before every system call on the store and at the
 * points between operations where the power may go. */
static int side_page_now(uint8_t page[SIDE_PAGE]);
static void capture_mapped(void) {
    if (!cu_mapped || pc.fd < 0 || pc.cut) return;
    struct stat st;
    if (fstat(pc.fd, &st) != 0) return;
    uint64_t hi = (uint64_t)st.st_size;
    uint8_t page[SIDE_PAGE];
    if (side_page_now(page)) {
        uint64_t t0 = 0, t1 = 0;
        memcpy(&t0, page + 9 * 8, 8); /* the live slots' tails (side.c) */
        memcpy(&t1, page + 17 * 8, 8);
        uint64_t t = t0 > t1 ? t0 : t1;
        if (t < hi) hi = t;
    }
    if (hi > pc.cache_len) hi = pc.cache_len;
    if (hi == 0) return;
    uint8_t *now = malloc((size_t)hi);
    CU_CHECK(now, "out of memory");
    CU_CHECK(simdr__io_system.pread(pc.fd, now, (size_t)hi, 0) == (ssize_t)hi, "pread: %s",
             strerror(errno));
    for (uint64_t i = 0; i < hi;) {
        uint64_t block = hi - i < 4096 ? hi - i : 4096;
        if (i % 4096 == 0 && !memcmp(now + i, pc.cache + i, (size_t)block)) {
            i += block;
            continue;
        }
        if (now[i] == pc.cache[i]) {
            i++;
            continue;
        }
        uint64_t j = i;
        while (j < hi && now[j] != pc.cache[j]) j++;
        record_write(i, now + i, (size_t)(j - i));
        i = j;
    }
    free(now);
}

static void drop_pending(void) {
    for (size_t i = 0; i < pc.npending; i++) free(pc.pending[i].data);
    pc.npending = 0;
}

static void make_durable(void) {
    for (size_t i = 0; i < pc.npending; i++)
        apply_to(&pc.durable, &pc.durable_len, &pc.durable_cap, pc.pending[i].off,
                 pc.pending[i].data, pc.pending[i].len);
    /* A truncation reached the disk with the sync. */
    if (pc.file_len < pc.durable_len) pc.durable_len = (size_t)pc.file_len;
    if (pc.file_len > pc.durable_len) {
        durable_reserve((size_t)pc.file_len);
        memset(pc.durable + pc.durable_len, 0, (size_t)pc.file_len - pc.durable_len);
        pc.durable_len = (size_t)pc.file_len;
    }
    drop_pending();
}

/* The side file's page as the page cache has it now: 1 when it exists. */
static int side_page_now(uint8_t page[SIDE_PAGE]) {
    if (pc.side_fd < 0) pc.side_fd = simdr__io_system.open(pc.side_path, O_RDONLY | O_CLOEXEC, 0);
    if (pc.side_fd < 0) return 0;
    ssize_t n = simdr__io_system.pread(pc.side_fd, page, SIDE_PAGE, 0);
    return n == (ssize_t)SIDE_PAGE;
}

/* A copy of the page as a write-back at this moment would store it. */
static void side_snapshot(void) {
    uint8_t page[SIDE_PAGE];
    if (!side_page_now(page)) return;
    if (pc.nside_later &&
        !memcmp(pc.side_later[pc.nside_later - 1], page, SIDE_PAGE))
        return;
    if (pc.nside_later == pc.cap_side_later) {
        pc.cap_side_later = pc.cap_side_later ? pc.cap_side_later * 2 : 16;
        pc.side_later = realloc(pc.side_later, pc.cap_side_later * sizeof *pc.side_later);
        CU_CHECK(pc.side_later, "out of memory");
    }
    memcpy(pc.side_later[pc.nside_later++], page, SIDE_PAGE);
}

/* The side file's page on disk after the cut: the one last flushed, or one
 * a write-back stored later (the latest possibly the page at the cut). */
static void side_cut(void) {
    side_snapshot();
    size_t choices = pc.nside_later + (pc.has_side_synced ? 1 : 0);
    pc.has_side_image = choices > 0;
    if (!choices) return;
    size_t pick = (size_t)cu_range(&pc.rng, 0, choices - 1);
    pc.side_choices++;
    if (pc.has_side_synced && pick == 0) {
        memcpy(pc.side_image, pc.side_synced, SIDE_PAGE);
    } else {
        memcpy(pc.side_image, pc.side_later[pick - (pc.has_side_synced ? 1 : 0)], SIDE_PAGE);
    }
    if (pick + 1 < choices) pc.side_stale++;
}

/* The power goes off: the disk keeps the durable image plus whatever of the
 * pending writes the drive happened to have written, in any order. */
static void power_cut(void) {
    capture_mapped();
    pc.cut = 1;
    side_cut();
    size_t cap = 0;
    pc.image = NULL;
    pc.image_len = 0;
    apply_to(&pc.image, &pc.image_len, &cap, 0, pc.durable, pc.durable_len);
    size_t n = pc.npending;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    CU_CHECK(order, "out of memory");
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n; i > 1; i--) { /* random order */
        size_t j = (size_t)cu_range(&pc.rng, 0, i - 1);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t k = 0; k < n; k++) {
        const pending_write *w = &pc.pending[order[k]];
        unsigned mode = (unsigned)cu_range(&pc.rng, 0, 3); /* 0 drop, 1 whole, 2-3 torn */
        if (mode == 0) continue;
        if (mode == 1) {
            apply_to(&pc.image, &pc.image_len, &cap, w->off, w->data, w->len);
            continue;
        }
        /* Torn: sector by sector (file-aligned sectors), each kept or not,
         * one of the kept ones possibly cut short. */
        for (uint64_t at = w->off; at < w->off + w->len;) {
            uint64_t sector_end = (at / SECTOR + 1) * SECTOR;
            uint64_t end = sector_end < w->off + w->len ? sector_end : w->off + w->len;
            unsigned what = (unsigned)cu_range(&pc.rng, 0, 5);
            if (what >= 2) {
                uint64_t len = end - at;
                if (what == 5) len = cu_range(&pc.rng, 1, len);
                apply_to(&pc.image, &pc.image_len, &cap, at, w->data + (at - w->off),
                         (size_t)len);
            }
            at = end;
        }
    }
    free(order);
    /* The length: anything from what was applied to what the file had (a
     * length that reached the disk before its data reads as zeros). */
    if (pc.file_len > pc.image_len && cu_range(&pc.rng, 0, 2) == 0) {
        uint64_t len = cu_range(&pc.rng, pc.image_len, pc.file_len);
        uint8_t zero = 0;
        if (len > pc.image_len) {
            apply_to(&pc.image, &pc.image_len, &cap, len - 1, &zero, 1);
        }
    }
    if (!pc.image) {
        pc.image = malloc(1);
        CU_CHECK(pc.image, "out of memory");
    }
}

/* Counts a call on the store; 1 when this call is where the power goes.
 * The side file's page is copied at each call (a write-back may happen at
 * any time). */
static int cut_here(void) {
    if (pc.cut) return 1;
    side_snapshot();
    if (pc.countdown && --pc.countdown == 0) {
        power_cut();
        return 1;
    }
    return 0;
}

static int store_fd(int fd) { return pc.fd >= 0 && fd == pc.fd; }

static ssize_t pc_pwrite(int fd, const void *buf, size_t len, off_t off) {
    if (!store_fd(fd)) return simdr__io_system.pwrite(fd, buf, len, off);
    if (pc.cut) {
        errno = EIO;
        return -1;
    }
    capture_mapped();
    /* The call in flight at the cut may have reached the drive. */
    record_write((uint64_t)off, buf, len);
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    ssize_t n = simdr__io_system.pwrite(fd, buf, len, off);
    CU_CHECK(n == (ssize_t)len, "pwrite: %s", strerror(errno));
    return n;
}

static ssize_t pc_pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (!store_fd(fd)) return simdr__io_system.pwritev(fd, iov, cnt, off);
    size_t total = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    uint8_t *flat = malloc(total ? total : 1);
    CU_CHECK(flat, "out of memory");
    size_t at = 0;
    for (int i = 0; i < cnt; i++) {
        memcpy(flat + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    ssize_t n = pc_pwrite(fd, flat, total, off);
    free(flat);
    return n;
}

static int pc_sync(int fd, int (*real)(int)) {
    if (!store_fd(fd)) return real(fd);
    capture_mapped();
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    make_durable();
    /* The cache flush carries the side file's page pushed before it: that
     * copy (or a later one, the copies after it) is now on disk. */
    if (pc.has_side_pushed) {
        memcpy(pc.side_synced, pc.side_pushed, SIDE_PAGE);
        pc.has_side_synced = 1;
        size_t keep = pc.nside_later - (pc.side_pushed_at + 1);
        memmove(pc.side_later, pc.side_later + pc.side_pushed_at + 1,
                keep * sizeof *pc.side_later);
        pc.nside_later = keep;
        pc.has_side_pushed = 0;
        pc.pushes_flushed++;
    }
    return 0;
}
static int pc_fdatasync(int fd) { return pc_sync(fd, simdr__io_system.fdatasync); }
static int pc_fsync(int fd) { return pc_sync(fd, simdr__io_system.fsync); }

static int pc_ftruncate(int fd, off_t len) {
    if (!store_fd(fd)) return simdr__io_system.ftruncate(fd, len);
    capture_mapped();
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    int rc = simdr__io_system.ftruncate(fd, len);
    /* Pending writes beyond the new end no longer exist in the cache. */
    if (rc == 0) {
        for (size_t i = 0; i < pc.npending; i++) {
            pending_write *w = &pc.pending[i];
            if (w->off >= (uint64_t)len) w->len = 0;
            else if (w->off + w->len > (uint64_t)len) w->len = (size_t)((uint64_t)len - w->off);
        }
        pc.file_len = (uint64_t)len;
        cache_resize((uint64_t)len);
    }
    return rc;
}

/* Mapped appends' preallocation: the length may reach the disk before
 * anything written there (it then reads as zeros). */
static int pc_fallocate(int fd, int mode, off_t off, off_t len) {
    if (!store_fd(fd)) return simdr__io_system.fallocate(fd, mode, off, len);
    capture_mapped();
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    int rc = simdr__io_system.fallocate(fd, mode, off, len);
    if (rc == 0 && (uint64_t)(off + len) > pc.file_len) {
        pc.file_len = (uint64_t)(off + len);
        cache_resize(pc.file_len);
    }
    return rc;
}

/* msync is only used on the side file's page: what it flushes is on disk. */
static int pc_msync(void *addr, size_t len, int flags) {
    capture_mapped();
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    int rc = simdr__io_system.msync(addr, len, flags);
    if (rc == 0 && len >= SIDE_PAGE) {
        memcpy(pc.side_synced, addr, SIDE_PAGE);
        pc.has_side_synced = 1;
        pc.nside_later = 0; /* older write-backs can no longer be what the disk holds */
        pc.has_side_pushed = 0; /* an older push can no longer become the disk's page */
    }
    return rc;
}

/* sync_file_range on the store only starts its write-back early and passes
 * through; on the side file it writes the page to the device, not flushed:
 * one more copy a write-back may have stored (taken by cut_here), and the
 * one the store's next flush makes durable. */
static int pc_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
    if (store_fd(fd)) return simdr__io_system.sync_file_range(fd, off, len, flags);
    capture_mapped();
    if (cut_here()) {
        errno = EIO;
        return -1;
    }
    int rc = simdr__io_system.sync_file_range(fd, off, len, flags);
    if (rc == 0 && pc.nside_later) {
        memcpy(pc.side_pushed, pc.side_later[pc.nside_later - 1], SIDE_PAGE);
        pc.side_pushed_at = pc.nside_later - 1;
        pc.has_side_pushed = 1;
        pc.pushes++;
    }
    return rc;
}

static int pc_open(const char *path, int flags, mode_t mode) {
    int fd = simdr__io_system.open(path, flags, mode);
    if (fd >= 0 && pc.path && !strcmp(path, pc.path) && (flags & O_ACCMODE) == O_RDWR)
        pc.fd = fd;
    return fd;
}

static void layer_install(const char *path, uint64_t countdown, uint64_t rng) {
    memset(&pc, 0, sizeof pc);
    pc.path = path;
    pc.fd = -1;
    pc.side_fd = -1;
    snprintf(pc.side_path, sizeof pc.side_path, "%s.simdr", path);
    pc.countdown = countdown;
    pc.rng = rng;
    simdr__io.pwrite = pc_pwrite;
    simdr__io.pwritev = pc_pwritev;
    simdr__io.fdatasync = pc_fdatasync;
    simdr__io.fsync = pc_fsync;
    simdr__io.ftruncate = pc_ftruncate;
    simdr__io.open = pc_open;
    simdr__io.msync = pc_msync;
    simdr__io.sync_file_range = pc_sync_file_range;
    simdr__io.fallocate = pc_fallocate;
}

static void layer_remove(void) {
    simdr__io_reset();
    drop_pending();
    free(pc.pending);
    free(pc.durable);
    free(pc.side_later);
    free(pc.cache);
    if (pc.side_fd >= 0) close(pc.side_fd);
    pc.pending = NULL;
    pc.durable = NULL;
    pc.side_later = NULL;
}

/* ---- the workload and its history ---- */

typedef struct keystate {
    uint8_t present;
    uint64_t gen, len;
} keystate;

typedef struct state {
    keystate k[NKEYS];
} state;

static state hist[MAX_HIST]; /* hist[i]: the store after i entries */
static size_t nhist;

static void push_entry(uint32_t key, int present, uint64_t gen, uint64_t len) {
    CU_CHECK(nhist < MAX_HIST, "history overflow");
    hist[nhist] = hist[nhist - 1];
    hist[nhist].k[key] = (keystate){(uint8_t)present, gen, len};
    nhist++;
}

static uint64_t value_len(uint64_t *rng) {
    unsigned r = (unsigned)cu_range(rng, 0, 9);
    if (r < 6) return cu_range(rng, CU_VALUE_MIN, 300);
    if (r < 9) return cu_range(rng, 301, 5000);
    return cu_range(rng, 5001, 40000);
}

typedef struct round_stats {
    uint64_t rounds, cut, cut_bytes, refused, notstore, unsound, ops_acked, side_stale;
    uint64_t reopens, syncs;
    uint64_t entries_acked, entries_kept; /* history entries acknowledged / found after the cut */
} round_stats;

/* Runs operations until the power goes or MAX_OPS are done. Returns the
 * history positions: *acked after the last acknowledged operation, *started
 * after every entry of the operation the cut interrupted. */
static void workload(simdr_store **sp, const char *path, const simdr_options *o, uint64_t *rng,
                     uint64_t *gen, size_t *acked, size_t *started, size_t *synced,
                     round_stats *st) {
    *acked = *started = *synced = nhist - 1;
    for (unsigned op = 0; op < MAX_OPS && !pc.cut; op++) {
        /* --mapped: puts make no system call, so the power may also go
         * between operations (what they copied is then pending). */
        if (cu_mapped) {
            capture_mapped();
            if (cut_here()) break;
        }
        simdr_store *s = *sp;
        const state *now = &hist[nhist - 1];
        /* Now and then the store is closed and opened again (the next
         * writer keeps the side file's durable record and sums), or synced
         * explicitly (what was acknowledged before must then survive). */
        unsigned extra = (unsigned)cu_range(rng, 0, 24);
        if (extra == 0) {
            int closed = simdr_close(s);
            *sp = NULL;
            /* --closed-page: a write-back may store the page marked closed
             * before the next writer's open flushes its own. */
            if (closed_page) side_snapshot();
            if (pc.cut) break;
            CU_OK(closed);
            int opened = simdr_open(sp, path, o);
            if (opened != SIMDR_OK) {
                CU_CHECK(pc.cut, "reopen failed before the cut: %s", simdr_last_error());
                *sp = NULL;
                break;
            }
            st->reopens++;
            continue;
        }
        if (extra == 1) {
            if (simdr_sync(s) == SIMDR_OK) {
                CU_CHECK(!pc.cut, "a sync succeeded after the power was cut");
                *synced = nhist - 1;
                st->syncs++;
            }
            continue;
        }
        unsigned kind = (unsigned)cu_range(rng, 0, 9);
        uint32_t key = (uint32_t)cu_range(rng, 0, NKEYS - 1);
        char kb[32];
        size_t kl = cu_key(kb, sizeof kb, key);
        int rc;
        if (kind < 5) {
            uint64_t len = value_len(rng), g = ++*gen;
            uint8_t *v = cu_value_new(key, g, len);
            push_entry(key, 1, g, len);
            rc = simdr_put(s, kb, kl, v, (size_t)len, NULL);
            free(v);
        } else if (kind < 7) {
            /* A batch: later items for the same key win, entries in order. */
            unsigned n = (unsigned)cu_range(rng, 2, 6);
            simdr_kv kv[6];
            uint8_t *vals[6];
            char keys[6][32];
            for (unsigned i = 0; i < n; i++) {
                uint32_t k = (uint32_t)cu_range(rng, 0, NKEYS - 1);
                uint64_t len = value_len(rng), g = ++*gen;
                size_t l = cu_key(keys[i], sizeof keys[i], k);
                vals[i] = cu_value_new(k, g, len);
                kv[i] = (simdr_kv){keys[i], l, vals[i], (size_t)len};
                push_entry(k, 1, g, len);
            }
            rc = simdr_put_batch(s, kv, n, NULL);
            for (unsigned i = 0; i < n; i++) free(vals[i]);
        } else if (kind < 9) {
            if (!now->k[key].present) continue;
            push_entry(key, 0, 0, 0);
            rc = simdr_delete(s, kb, kl, NULL);
        } else {
            uint64_t len = value_len(rng), g = ++*gen;
            cu_stream src = {key, g, len, 0, *rng, 4096, CU_FNV_INIT};
            push_entry(key, 1, g, len);
            rc = simdr_put_stream(s, kb, kl, cu_stream_read, &src, NULL);
        }
        if (rc == SIMDR_OK) {
            CU_CHECK(!pc.cut, "an operation was acknowledged after the power was cut");
            *acked = *started = nhist - 1;
            st->ops_acked++;
        } else {
            CU_CHECK(pc.cut, "operation failed before the cut: %s", simdr_last_error());
            *started = nhist - 1;
        }
    }
}

/* Reads every key of the workload into out; returns how many reads gave
 * bytes that are not a value written to that key, or a damage error. */
static unsigned read_state(simdr_store *s, state *out, uint64_t *present,
                           unsigned damaged_key[NKEYS], char *why_out, size_t why_cap) {
    unsigned damaged = 0;
    *present = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        damaged_key[k] = 0;
        char kb[32];
        size_t kl = cu_key(kb, sizeof kb, k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, kb, kl, &e);
        out->k[k] = (keystate){0, 0, 0};
        if (rc == SIMDR_NOTFOUND) continue;
        if (rc == SIMDR_ECORRUPT || rc == SIMDR_ECHECKSUM) {
            snprintf(why_out, why_cap, "key %u: %s", k, simdr_last_error());
            damaged_key[k] = 1;
            damaged++;
            continue;
        }
        CU_OK(rc);
        uint32_t vk;
        uint64_t vg;
        const char *why = NULL;
        if (cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, &vg, &why) != 0 ||
            vk != k) {
            snprintf(why_out, why_cap, "key %u: served bytes never written to it (%s)", k,
                     why ? why : "another key's value");
            damaged_key[k] = 1;
            damaged++;
        } else {
            out->k[k] = (keystate){1, vg, simdr_entry_size(e)};
            (*present)++;
        }
        simdr_entry_release(e);
    }
    return damaged;
}

static int same_key(const keystate *a, const keystate *b) {
    return a->present == b->present && (!a->present || (a->gen == b->gen && a->len == b->len));
}

static int same_state(const state *a, const state *b) {
    for (uint32_t k = 0; k < NKEYS; k++) {
        if (a->k[k].present != b->k[k].present) return 0;
        if (a->k[k].present && (a->k[k].gen != b->k[k].gen || a->k[k].len != b->k[k].len))
            return 0;
    }
    return 1;
}

/* The first history position in [lo, hi] equal to the state, or -1. */
static long find_in_history(const state *got, size_t lo, size_t hi) {
    for (size_t i = lo; i <= hi; i++)
        if (same_state(got, &hist[i])) return (long)i;
    return -1;
}

static void one_round(const char *dir, int durability, int layout, uint64_t seed, unsigned round,
                      round_stats *st) {
    char path[4096], side_path[4200];
    snprintf(path, sizeof path, "%s/store.bin", dir);
    snprintf(side_path, sizeof side_path, "%s.simdr", path);
    const char *image_path = path; /* the disk after the cut, in place (same inode) */
    uint64_t rng = cu_mix64(seed ^ (0x9e3779b97f4a7c15ull * (round + 1)));
    /* Calls on the store: about one (three with syncs: the store's and the
     * side file's flush) per operation. */
    uint64_t calls = MAX_OPS * (durability == SIMDR_SYNC_DATA ? 3u : 1u) + 8u;
    layer_install(path, cu_range(&rng, 1, calls), cu_mix64(rng));

    simdr_options o;
    cu_options_init(&o);
    o.durability = durability;
    o.layout = layout;
    o.use_hint = 0;
    simdr_store *s = NULL;
    CU_OK(simdr_open(&s, path, &o));
    CU_CHECK(pc.fd >= 0, "the layer did not see the store's descriptor");
    memset(&hist[0], 0, sizeof hist[0]);
    nhist = 1;
    uint64_t gen = 0;
    size_t acked, started, synced;
    workload(&s, path, &o, &rng, &gen, &acked, &started, &synced, st);
    if (!pc.cut) power_cut(); /* after the last operation */
    st->cut++;
    if (s) simdr_close(s);
    uint8_t *image = pc.image;
    size_t image_len = pc.image_len;
    uint8_t side_image[SIDE_PAGE];
    int has_side_image = pc.has_side_image;
    memcpy(side_image, pc.side_image, SIDE_PAGE);
    st->side_stale += pc.side_stale;
    pushes += pc.pushes;
    pushes_flushed += pc.pushes_flushed;
    layer_remove();

    /* What the disk holds, written over the files in place: the store keeps
     * its inode, which the side file names. */
    cu_write_file(image_path, image, image_len);
    free(image);
    if (has_side_image)
        cu_write_file(side_path, side_image, SIDE_PAGE);
    else
        unlink(side_path);
    simdr_options ro;
    cu_options_init(&ro);
    ro.use_hint = 0;
    simdr_store *r = NULL;
    int rc = simdr_open(&r, image_path, &ro);
    if (rc == SIMDR_ENOTSTORE && !strict && (durability == SIMDR_SYNC_NONE || acked == 0)) {
        /* The first entry of a new file was lost or torn and nothing
         * acknowledged as durable depends on it: counted (the file must
         * then be unchanged). */
        st->notstore++;
        CU_EQ_U64(cu_file_size(image_path), image_len);
        cu_remove_matching(dir, ".bin");
        st->rounds++;
        return;
    }
    if (rc == SIMDR_ECORRUPT && !strict) {
        /* Entries of the cut writes left whole behind a lost or torn one:
         * damage that a writable open refuses rather than cut. Counted;
         * whatever the salvaging read-only open serves is checked below
         * like any open's. */
        st->refused++;
        ro.open_mode = SIMDR_OPEN_READONLY;
        ro.salvage = 1;
        rc = simdr_open(&r, image_path, &ro);
    }
    CU_OK(rc);
    simdr_recovery_info info;
    CU_OK(simdr_recovery(r, &info));
    if (info.bytes_cut) st->cut_bytes++;

    /* Every value read is one written to its key, byte for byte, unless
     * the read is counted as damaged. */
    state got;
    uint64_t present;
    char damage[600] = "";
    unsigned damaged_key[NKEYS];
    unsigned damaged = read_state(r, &got, &present, damaged_key, damage, sizeof damage);
    int salvaged = ro.open_mode == SIMDR_OPEN_READONLY;
    if (durability == SIMDR_SYNC_DATA && !salvaged) {
        /* Nothing acknowledged is lost: each key holds its acknowledged
         * value, or one the interrupted operation was writing. */
        for (uint32_t k = 0; k < NKEYS; k++) {
            int ok = damaged_key[k] && !strict;
            for (size_t j = acked; j <= started && !ok; j++)
                ok = same_key(&got.k[k], &hist[j].k[k]);
            CU_CHECK(ok,
                     "round %u (SYNC_DATA): key %u lost its acknowledged state (present %d gen "
                     "%llu after the cut, acknowledged: present %d gen %llu)%s%s",
                     round, k, got.k[k].present, (unsigned long long)got.k[k].gen,
                     hist[acked].k[k].present, (unsigned long long)hist[acked].k[k].gen,
                     damaged_key[k] ? "; the read was damaged: " : "", damage);
        }
    }
    /* Without syncs of every write, what an explicit sync covered must
     * survive all the same. */
    size_t lo = salvaged ? 0 : durability == SIMDR_SYNC_DATA ? acked : synced;
    long at = find_in_history(&got, lo, started);
    st->entries_acked += acked;
    if (at >= 0) st->entries_kept += (uint64_t)at < acked ? (uint64_t)at : acked;
    if (damaged || at < 0 || simdr_count(r) != present) {
        long any = find_in_history(&got, 0, nhist - 1);
        char what[1200];
        snprintf(what, sizeof what,
                 "round %u (%s): the store after the cut is not the state after entries %zu to "
                 "%zu of the history (%s %ld; %llu keys counted, %llu of the workload's "
                 "present; %u damaged reads%s%s); image %zu bytes",
                 round, durability == SIMDR_SYNC_DATA ? "SYNC_DATA" : "SYNC_NONE", lo, started,
                 any >= 0 ? "it matches entry" : "it matches no entry at all", any,
                 (unsigned long long)simdr_count(r), (unsigned long long)present, damaged,
                 damaged ? ": " : "", damage, image_len);
        /* Writes that reached the disk out of order can leave a lost or
         * torn entry (a run of zeros read as metadata, say) behind later
         * whole ones, which the open does not verify: counted when
         * simdr_check at least reports the damage. */
        if (strict) cu_fail(__FILE__, __LINE__, "%s", what);
        int check = simdr_check(r, NULL, NULL, NULL);
        CU_CHECK(check == SIMDR_ECORRUPT, "%s, and simdr_check finds nothing (%d)", what, check);
        st->unsound++;
    }
    if (ro.open_mode != SIMDR_OPEN_READONLY) {
        /* The repaired store takes a write that survives a reopen. */
        uint8_t *v = cu_value_new(0, ++gen, 100);
        char kb[32];
        size_t kl = cu_key(kb, sizeof kb, 0);
        CU_OK(simdr_put(r, kb, kl, v, 100, NULL));
        CU_OK(simdr_close(r));
        CU_OK(simdr_open(&r, image_path, &ro));
        simdr_entry *e = NULL;
        CU_OK(simdr_get(r, kb, kl, &e));
        CU_CHECK(simdr_entry_size(e) == 100 && !memcmp(simdr_entry_data(e), v, 100),
                 "the write after repair was lost");
        simdr_entry_release(e);
        free(v);
    }
    CU_OK(simdr_close(r));
    cu_remove_matching(dir, ".bin");
    st->rounds++;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t seed = cu_seed(argc, argv, "powercut_test");
    cu_parse_mapped(argc, argv);
    int scale = cu_scale(argc, argv);
    uint64_t rounds = cu_scaled(400, scale, 100);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = strtoull(argv[i + 1], NULL, 0);
        if (!strcmp(argv[i], "--strict")) strict = 1;
        if (!strcmp(argv[i], "--closed-page")) closed_page = 1;
        if (!strcmp(argv[i], "--flush") && i + 1 < argc)
            flush_only = !strcmp(argv[i + 1], "one") ? 1 : !strcmp(argv[i + 1], "two") ? 2 : -1;
    }
    CU_CHECK(flush_only >= 0, "--flush takes one or two");
    /* Nothing here needs a real disk: durability is what the layer models. */
    if (!getenv("TMPDIR") && access("/dev/shm", W_OK) == 0) setenv("TMPDIR", "/dev/shm", 1);
    char *dir = cu_mkdtemp("powercut");
    double t0 = cu_now();
    round_stats st[2] = {{0}, {0}};
    uint64_t one_flush_rounds = 0;
    for (unsigned r = 0; r < rounds; r++) {
        int one = flush_only ? flush_only == 1 : (r / 4) % 4 != 3;
        simdr__side_flush_policy = one ? SIMDR__SIDE_FLUSH_ONE : SIMDR__SIDE_FLUSH_TWO;
        one_flush_rounds += (uint64_t)one;
        int durability = r % 2 ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
        int layout = (r / 2) % 2 ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64;
        cu_set_replay_hint("powercut_test --seed %llu --rounds %llu (round %u)",
                           (unsigned long long)seed, (unsigned long long)rounds, r);
        one_round(dir, durability, layout, seed, r, &st[durability]);
    }
    cu_rmtree(dir);
    free(dir);
    for (int d = 0; d < 2; d++)
        printf("powercut_test: %s: %llu rounds, %llu operations acknowledged before the cut, "
               "%llu opens cut a torn tail, %llu refused as damaged (salvaged read-only), "
               "%llu refused as not a store (first entry lost), %llu opened to a state "
               "that is not a prefix (simdr_check reports the damage); the side file's "
               "page on disk older than at the cut in %llu; %llu reopens and %llu explicit "
               "syncs during the workloads; %llu of %llu acknowledged entries kept\n",
               d ? "SYNC_DATA" : "SYNC_NONE", (unsigned long long)st[d].rounds,
               (unsigned long long)st[d].ops_acked, (unsigned long long)st[d].cut_bytes,
               (unsigned long long)st[d].refused, (unsigned long long)st[d].notstore,
               (unsigned long long)st[d].unsound, (unsigned long long)st[d].side_stale,
               (unsigned long long)st[d].reopens, (unsigned long long)st[d].syncs,
               (unsigned long long)st[d].entries_kept, (unsigned long long)st[d].entries_acked);
    printf("powercut_test: %llu rounds synced with one device flush (%llu side pages pushed "
           "ahead of the store's flush, %llu of them made durable by it), %llu with two\n",
           (unsigned long long)one_flush_rounds, (unsigned long long)pushes,
           (unsigned long long)pushes_flushed, (unsigned long long)(rounds - one_flush_rounds));
    /* The one-flush order must have been exercised, not only configured:
     * 20 rounds of it sync many times over. */
    CU_CHECK(one_flush_rounds < 20 || pushes_flushed > 0,
             "%llu rounds synced with one flush, yet no side page was pushed and then made "
             "durable by the store's flush", (unsigned long long)one_flush_rounds);
    printf("powercut_test: OK in %.1f s\n", cu_now() - t0);
    return 0;
}
