/*
 * fault_seq.c - the test fault layer of fault_seq.h: the system-call table
 * replaced by functions that count every call and fail the chosen one.
 */
#include "fault_seq.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static simdr__io_table real;
static uint64_t calls, fail_at;
static int fail_on; /* every call from fail_at on fails (a device gone), not only that one */
static int injected_op = -1;

static int hit(enum simdr__io_op op) {
    uint64_t c = ++calls;
    if (fail_at && (c == fail_at || (fail_on && c > fail_at))) {
        if (c == fail_at) injected_op = (int)op;
        return 1;
    }
    return 0;
}

static ssize_t f_pwrite(int fd, const void *buf, size_t len, off_t off) {
    if (hit(SIMDR__IO_PWRITE)) {
        if (len > 1) real.pwrite(fd, buf, len / 2, off);
        errno = EIO;
        return -1;
    }
    return real.pwrite(fd, buf, len, off);
}

static ssize_t f_pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (hit(SIMDR__IO_PWRITEV)) {
        size_t total = 0;
        for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
        size_t left = total / 2;
        for (int i = 0; i < cnt && left > 0; i++) {
            size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
            real.pwrite(fd, iov[i].iov_base, n, off);
            off += (off_t)n;
            left -= n;
        }
        errno = EIO;
        return -1;
    }
    return real.pwritev(fd, iov, cnt, off);
}

static ssize_t f_pread(int fd, void *buf, size_t len, off_t off) {
    if (hit(SIMDR__IO_PREAD)) {
        errno = EIO;
        return -1;
    }
    return real.pread(fd, buf, len, off);
}

#define FAIL_OR_CALL(OP, call) \
    do {                       \
        if (hit(OP)) {         \
            errno = EIO;       \
            return -1;         \
        }                      \
        return call;           \
    } while (0)

static int f_fdatasync(int fd) { FAIL_OR_CALL(SIMDR__IO_FDATASYNC, real.fdatasync(fd)); }
static int f_fsync(int fd) { FAIL_OR_CALL(SIMDR__IO_FSYNC, real.fsync(fd)); }
static int f_fsync_dir(int fd) { FAIL_OR_CALL(SIMDR__IO_FSYNC_DIR, real.fsync_dir(fd)); }
static int f_ftruncate(int fd, off_t len) {
    FAIL_OR_CALL(SIMDR__IO_FTRUNCATE, real.ftruncate(fd, len));
}
static int f_rename(const char *a, const char *b) {
    FAIL_OR_CALL(SIMDR__IO_RENAME, real.rename(a, b));
}
static int f_open(const char *p, int flags, mode_t mode) {
    FAIL_OR_CALL(SIMDR__IO_OPEN, real.open(p, flags, mode));
}
static int f_fstat(int fd, struct stat *st) { FAIL_OR_CALL(SIMDR__IO_FSTAT, real.fstat(fd, st)); }
static int f_msync(void *a, size_t len, int flags) {
    FAIL_OR_CALL(SIMDR__IO_MSYNC, real.msync(a, len, flags));
}
static int f_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
    FAIL_OR_CALL(SIMDR__IO_SYNC_FILE_RANGE, real.sync_file_range(fd, off, len, flags));
}
static int f_fallocate(int fd, int mode, off_t off, off_t len) {
    FAIL_OR_CALL(SIMDR__IO_FALLOCATE, real.fallocate(fd, mode, off, len));
}
static void *f_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (hit(SIMDR__IO_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return real.mmap(addr, len, prot, flags, fd, off);
}

static int f_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg) {
    if (hit(SIMDR__IO_THREAD_CREATE)) return EAGAIN;
    return real.thread_create(thread, fn, arg);
}

const char *const fault_seq_op_names[SIMDR__IO_OPS] = {
    "pwrite", "pwritev", "pread", "fdatasync", "fsync", "fsync_dir", "ftruncate",
    "rename", "open", "fstat", "mmap", "msync", "sync_file_range", "fallocate",
    "thread_create"};

void fault_seq_on(uint64_t n, int every_after) {
    real = simdr__io_system;
    simdr__io = (simdr__io_table){f_pwrite, f_pwritev, f_pread, f_fdatasync, f_fsync,
                                  f_fsync_dir, f_ftruncate, f_rename, f_open, f_fstat, f_mmap,
                                  f_msync, f_sync_file_range, f_fallocate, f_thread_create};
    calls = 0;
    fail_at = n;
    fail_on = every_after;
    injected_op = -1;
}

void fault_seq_off(void) { simdr__io = simdr__io_system; }

uint64_t fault_seq_calls(void) { return calls; }

int fault_seq_injected_op(void) { return injected_op; }
