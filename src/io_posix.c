/*
 * io_posix.c - the few file operations the library needs, retried on EINTR
 * and short transfers: writes (every write goes through here so that faults
 * can be injected in one place, simdr__io_fault, used by tests), reads, and
 * the read buffer of whole-file passes (simdr__window).
 */
#include <errno.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/* Test seam: when non-zero, the Nth following write fails with this errno. */
simdr__io_fault_t simdr__io_fault = {0, 0};

static int injected(void) {
    if (simdr__io_fault.countdown > 0 && --simdr__io_fault.countdown == 0) {
        errno = simdr__io_fault.err;
        return 1;
    }
    return 0;
}

int simdr__pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
    const uint8_t *p = buf;
    while (len > 0) {
        if (injected()) return -1;
        ssize_t n = pwrite(fd, p, len > (size_t)1 << 30 ? (size_t)1 << 30 : len, (off_t)off);
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
    while (cnt > 0) {
        if (injected()) return -1;
        int batch = cnt > IOV_MAX ? IOV_MAX : cnt;
        ssize_t n = pwritev(fd, iov, batch, (off_t)off);
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

/* Reads are an optimization over the map (callers fall back to it), so no
 * fault is injected here. */
int simdr__pread_all(int fd, void *buf, size_t len, uint64_t off) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
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
    if (injected()) return -1;
    while (fdatasync(fd) != 0) {
        if (errno != EINTR) return -1;
    }
    return 0;
}
