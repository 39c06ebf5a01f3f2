/*
 * io_posix.c - the file operations of the library: the table of system calls
 * (io.h) every call site goes through, the helpers above it that retry on
 * EINTR and short transfers, the read buffer of whole-file passes
 * (simdr__window), and the fault rules tests arm on the table.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/* ---- the table ---- */

static ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off) {
    return pwrite(fd, buf, len, off);
}
static ssize_t sys_pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    return pwritev(fd, iov, cnt, off);
}
static ssize_t sys_pread(int fd, void *buf, size_t len, off_t off) {
    return pread(fd, buf, len, off);
}
static int sys_fsync_dir(int dir_fd) { return fsync(dir_fd); }
/* A process started with a standard stream closed hands that number to the
 * next open. A store opened as descriptor 2 would receive whatever the
 * process writes to stderr (a command run with 2>&- wrote its own messages
 * over the start of its store). So a new descriptor below 3 moves up, and
 * /dev/null, read-only so that a stray write fails, takes the low number,
 * as SQLite does. */
static int sys_open(const char *path, int flags, mode_t mode) {
    int fd = open(path, flags, mode);
    if (fd < 0 || fd > STDERR_FILENO) return fd;
    int high = fcntl(fd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, STDERR_FILENO + 1);
    int err = errno;
    close(fd);
    if (high < 0) {
        errno = err;
        return -1;
    }
    int hold = open("/dev/null", O_RDONLY);
    if (hold > STDERR_FILENO) close(hold); /* another thread took the low number first */
    return high;
}
static int sys_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
#ifdef __linux__
    return sync_file_range(fd, off, len, flags);
#else
    (void)fd, (void)off, (void)len, (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}
static int sys_fallocate(int fd, int mode, off_t off, off_t len) {
    return fallocate(fd, mode, off, len);
}

/* Helper threads take no signals: those stay with the application's own
 * threads (the new thread inherits the mask in force while it is made). */
static int sys_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

#define SYSTEM_TABLE                                                                      \
    {sys_pwrite, sys_pwritev, sys_pread, fdatasync, fsync, sys_fsync_dir, ftruncate, rename, \
     sys_open, fstat, mmap, msync, sys_sync_file_range, sys_fallocate, sys_thread_create}
const simdr__io_table simdr__io_system = SYSTEM_TABLE;
simdr__io_table simdr__io = SYSTEM_TABLE;

/* ---- retrying helpers ---- */

/* A write crossing RLIMIT_FSIZE would raise SIGXFSZ, which kills the
 * process unless the program handles it; the library must not change the
 * process's signal dispositions, so it refuses such a write itself. */
static _Atomic uint64_t fsize_limit = UINT64_MAX;

void simdr__io_note_fsize_limit(void) {
    struct rlimit rl;
    uint64_t limit = UINT64_MAX;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        limit = (uint64_t)rl.rlim_cur;
    atomic_store_explicit(&fsize_limit, limit, memory_order_relaxed);
}

uint64_t simdr__io_fsize_limit(void) {
    return atomic_load_explicit(&fsize_limit, memory_order_relaxed);
}

static int crosses_fsize_limit(uint64_t off, uint64_t len) {
    uint64_t limit = atomic_load_explicit(&fsize_limit, memory_order_relaxed);
    if (limit == UINT64_MAX || (off <= limit && len <= limit - off)) return 0;
    errno = EFBIG;
    return 1;
}

int simdr__pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
    const uint8_t *p = buf;
    if (crosses_fsize_limit(off, len)) return -1;
    while (len > 0) {
        ssize_t n = simdr__io.pwrite(fd, p, len > (size_t)1 << 30 ? (size_t)1 << 30 : len,
                                     (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) { errno = EIO; return -1; }
        p += n; len -= (size_t)n; off += (uint64_t)n;
    }
    return 0;
}

int simdr__pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off) {
    uint64_t total = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    if (crosses_fsize_limit(off, total)) return -1;
    while (cnt > 0) {
        int batch = cnt > IOV_MAX ? IOV_MAX : cnt;
        ssize_t n = simdr__io.pwritev(fd, iov, batch, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) { errno = EIO; return -1; }
        off += (uint64_t)n;
        size_t left = (size_t)n;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++; cnt--;
        }
        if (cnt > 0 && left > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

int simdr__pread_all(int fd, void *buf, size_t len, uint64_t off) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = simdr__io.pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

const uint8_t *simdr__window_span(simdr__window *w, uint64_t lo, uint64_t hi) {
    if (lo >= w->lo && hi <= w->hi) return w->buf + (lo - w->lo);
    if (!w->buf || hi - lo > w->cap) return w->base + lo;
    uint64_t start, end;
    if (w->backwards) {
        start = hi > w->cap ? hi - w->cap : 0;
        end = hi;
    } else {
        start = lo;
        end = w->end - lo < w->cap ? w->end : lo + w->cap;
    }
    if (hi > end || simdr__pread_all(w->fd, w->buf, (size_t)(end - start), start) != 0) {
        w->lo = w->hi = 0;
        return w->base + lo;
    }
    w->lo = start;
    w->hi = end;
    return w->buf + (lo - start);
}

int simdr__fdatasync(int fd) {
    while (simdr__io.fdatasync(fd) != 0) {
        if (errno != EINTR) return -1;
    }
    return 0;
}

int simdr__ftruncate(int fd, off_t len) {
    /* Growing a file past RLIMIT_FSIZE raises SIGXFSZ as a write would (the
     * side file's page is sized this way); shrinking never does, and a
     * store larger than the limit must still be cut back to its tail. */
    uint64_t limit = atomic_load_explicit(&fsize_limit, memory_order_relaxed);
    if (limit != UINT64_MAX && (uint64_t)len > limit) {
        struct stat st;
        if (simdr__io.fstat(fd, &st) != 0) return -1;
        if ((uint64_t)st.st_size < (uint64_t)len) {
            errno = EFBIG;
            return -1;
        }
    }
    int rc;
    while ((rc = simdr__io.ftruncate(fd, len)) != 0 && errno == EINTR) continue;
    return rc;
}

int simdr__fsync(int fd) {
    int rc;
    while ((rc = simdr__io.fsync(fd)) != 0 && errno == EINTR) continue;
    return rc;
}

int simdr__msync(void *addr, size_t len, int flags) {
    int rc;
    while ((rc = simdr__io.msync(addr, len, flags)) != 0 && errno == EINTR) continue;
    return rc;
}

int simdr__sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
    int rc;
    while ((rc = simdr__io.sync_file_range(fd, off, len, flags)) != 0 && errno == EINTR) continue;
    return rc;
}

#define SPLIT_MIN_SLOTS (UINT64_C(1) << 17) /* below, a thread costs more than it saves */

int simdr__split_worth(uint64_t slots) {
    /* sysconf reads /sys on each call: asked once. */
    static _Atomic long cpus;
    long n = atomic_load_explicit(&cpus, memory_order_relaxed);
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1) n = 1;
        atomic_store_explicit(&cpus, n, memory_order_relaxed);
    }
    return slots >= SPLIT_MIN_SLOTS && n > 1;
}

/* ---- fault rules (testing only, see io.h) ---- */

typedef struct fault_rule {
    simdr__io_fault f;
    int armed;
    _Atomic uint64_t calls, hits;
} fault_rule;

static fault_rule rules[SIMDR__IO_OPS];
static simdr__io_table below; /* per op: what the table held when its rule was armed */

/* Decides a call of op on fd: -1 fail it (errno set), otherwise the byte
 * limit of the call (SIZE_MAX: none). */
static int64_t decide(enum simdr__io_op op, int fd, size_t *limit) {
    fault_rule *r = &rules[op];
    *limit = SIZE_MAX;
    if (!r->armed || (r->f.select && !r->f.select(r->f.ctx, op, fd))) return 0;
    uint64_t call = atomic_fetch_add(&r->calls, 1) + 1;
    if (call < r->f.nth || (r->f.count && call >= r->f.nth + r->f.count)) return 0;
    atomic_fetch_add(&r->hits, 1);
    if (r->f.before) r->f.before(r->f.ctx, op);
    if (r->f.err) {
        errno = r->f.err;
        return -1;
    }
    if (r->f.short_len) *limit = r->f.short_len;
    return 0;
}

static ssize_t fault_pwrite(int fd, const void *buf, size_t len, off_t off) {
    size_t limit;
    if (decide(SIMDR__IO_PWRITE, fd, &limit) < 0) return -1;
    return below.pwrite(fd, buf, len < limit ? len : limit, off);
}

static ssize_t fault_pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    size_t limit;
    if (decide(SIMDR__IO_PWRITEV, fd, &limit) < 0) return -1;
    if (limit == SIZE_MAX) return below.pwritev(fd, iov, cnt, off);
    /* A short transfer: the first limit bytes of the vector. */
    struct iovec *cut = malloc((size_t)(cnt ? cnt : 1) * sizeof *cut);
    if (!cut) {
        errno = ENOMEM;
        return -1;
    }
    int k = 0;
    for (size_t left = limit; k < cnt && left > 0; k++) {
        cut[k] = iov[k];
        if (cut[k].iov_len > left) cut[k].iov_len = left;
        left -= cut[k].iov_len;
    }
    ssize_t n = below.pwritev(fd, cut, k, off);
    free(cut);
    return n;
}

static ssize_t fault_pread(int fd, void *buf, size_t len, off_t off) {
    size_t limit;
    if (decide(SIMDR__IO_PREAD, fd, &limit) < 0) return -1;
    return below.pread(fd, buf, len < limit ? len : limit, off);
}

#define FAULT_FD_CALL(name, OP)                                     \
    static int fault_##name(int fd) {                               \
        size_t limit;                                               \
        if (decide(OP, fd, &limit) < 0) return -1;                  \
        return below.name(fd);                                      \
    }
FAULT_FD_CALL(fdatasync, SIMDR__IO_FDATASYNC)
FAULT_FD_CALL(fsync, SIMDR__IO_FSYNC)
FAULT_FD_CALL(fsync_dir, SIMDR__IO_FSYNC_DIR)

static int fault_ftruncate(int fd, off_t len) {
    size_t limit;
    if (decide(SIMDR__IO_FTRUNCATE, fd, &limit) < 0) return -1;
    return below.ftruncate(fd, len);
}

static int fault_rename(const char *from, const char *to) {
    size_t limit;
    if (decide(SIMDR__IO_RENAME, -1, &limit) < 0) return -1;
    return below.rename(from, to);
}

static int fault_open(const char *path, int flags, mode_t mode) {
    size_t limit;
    if (decide(SIMDR__IO_OPEN, -1, &limit) < 0) return -1;
    return below.open(path, flags, mode);
}

static int fault_fstat(int fd, struct stat *st) {
    size_t limit;
    if (decide(SIMDR__IO_FSTAT, fd, &limit) < 0) return -1;
    return below.fstat(fd, st);
}

static int fault_fallocate(int fd, int mode, off_t off, off_t len) {
    size_t limit;
    if (decide(SIMDR__IO_FALLOCATE, fd, &limit) < 0) return -1;
    return below.fallocate(fd, mode, off, len);
}

static void *fault_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    size_t limit;
    if (decide(SIMDR__IO_MMAP, fd, &limit) < 0) return MAP_FAILED;
    return below.mmap(addr, len, prot, flags, fd, off);
}

static int fault_msync(void *addr, size_t len, int flags) {
    size_t limit;
    if (decide(SIMDR__IO_MSYNC, -1, &limit) < 0) return -1;
    return below.msync(addr, len, flags);
}

static int fault_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
    size_t limit;
    if (decide(SIMDR__IO_SYNC_FILE_RANGE, fd, &limit) < 0) return -1;
    return below.sync_file_range(fd, off, len, flags);
}

static int fault_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg) {
    size_t limit;
    if (decide(SIMDR__IO_THREAD_CREATE, -1, &limit) < 0) return errno;
    return below.thread_create(thread, fn, arg);
}

void simdr__io_fault_arm(const simdr__io_fault *f) {
    if ((unsigned)f->op >= SIMDR__IO_OPS) return;
    fault_rule *r = &rules[f->op];
    if (!r->armed) {
        /* Stack the rule on top of the current entry. */
        switch (f->op) {
#define STACK(OP, name)                       \
    case OP:                                  \
        below.name = simdr__io.name;          \
        simdr__io.name = fault_##name;        \
        break;
        STACK(SIMDR__IO_PWRITE, pwrite)
        STACK(SIMDR__IO_PWRITEV, pwritev)
        STACK(SIMDR__IO_PREAD, pread)
        STACK(SIMDR__IO_FDATASYNC, fdatasync)
        STACK(SIMDR__IO_FSYNC, fsync)
        STACK(SIMDR__IO_FSYNC_DIR, fsync_dir)
        STACK(SIMDR__IO_FTRUNCATE, ftruncate)
        STACK(SIMDR__IO_RENAME, rename)
        STACK(SIMDR__IO_OPEN, open)
        STACK(SIMDR__IO_FSTAT, fstat)
        STACK(SIMDR__IO_MMAP, mmap)
        STACK(SIMDR__IO_MSYNC, msync)
        STACK(SIMDR__IO_SYNC_FILE_RANGE, sync_file_range)
        STACK(SIMDR__IO_FALLOCATE, fallocate)
        STACK(SIMDR__IO_THREAD_CREATE, thread_create)
#undef STACK
        default: return;
        }
    }
    r->f = *f;
    atomic_store(&r->calls, 0);
    atomic_store(&r->hits, 0);
    r->armed = 1;
}

void simdr__io_fail_nth(enum simdr__io_op op, uint64_t nth, int err) {
    simdr__io_fault f = {.op = op, .nth = nth, .count = 1, .err = err};
    simdr__io_fault_arm(&f);
}

uint64_t simdr__io_calls(enum simdr__io_op op) {
    return (unsigned)op < SIMDR__IO_OPS ? atomic_load(&rules[op].calls) : 0;
}

uint64_t simdr__io_hits(enum simdr__io_op op) {
    return (unsigned)op < SIMDR__IO_OPS ? atomic_load(&rules[op].hits) : 0;
}

void simdr__io_reset(void) {
    for (unsigned i = 0; i < SIMDR__IO_OPS; i++) {
        rules[i].armed = 0;
        atomic_store(&rules[i].calls, 0);
        atomic_store(&rules[i].hits, 0);
    }
    simdr__io = simdr__io_system;
}
