/*
 * io.h - the system calls the library makes on files, behind one table of
 * function pointers (simdr__io): the seam where tests inject faults.
 *
 * Every file operation of the library (writes, reads of whole-file passes,
 * syncs, truncation, renames, opens, fstat, file maps), and the creation of
 * its helper threads, calls through simdr__io, never the system directly.
 * In production the table holds the plain system calls (simdr__io_system);
 * the entries keep their system-call meaning (-1 and errno on failure, short
 * transfers allowed), and the retrying helpers of io_posix.c sit above them.
 *
 * TESTING ONLY: everything below "Fault injection" exists for the test
 * suites, which link the static library and include this header. It is not
 * part of simdr.h and not installed. The table and the fault rules are plain
 * globals: change them while no other thread is inside the library.
 *
 * This header depends on nothing else of the library.
 */
#ifndef SIMDR_IO_H
#define SIMDR_IO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct simdr__io_table {
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int cnt, off_t off);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);          /* of a file */
    int (*fsync_dir)(int dir_fd);  /* of a directory, after a create or rename in it */
    int (*ftruncate)(int fd, off_t len);
    int (*rename)(const char *from, const char *to);
    int (*open)(const char *path, int flags, mode_t mode);
    int (*fstat)(int fd, struct stat *st);
    void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
    int (*msync)(void *addr, size_t len, int flags); /* the side file's durable record */
    /* The side file's page written to the device ahead of the store's
     * fdatasync, whose cache flush then makes it durable (side.c). */
    int (*sync_file_range)(int fd, off_t off, off_t len, unsigned flags);
    int (*fallocate)(int fd, int mode, off_t off, off_t len); /* mapped appends' growth */
    /* A helper thread (the second half of a growth's move, of a scan's
     * marking or of a hinted table's check; the threads of
     * simdr_for_each_parallel): 0, or an error number as pthread_create
     * returns it; a failure makes the caller do the work itself. */
    int (*thread_create)(pthread_t *thread, void *(*fn)(void *), void *arg);
} simdr__io_table;

/* What the library calls. */
extern simdr__io_table simdr__io;
/* The plain system calls (the initial contents of simdr__io). */
extern const simdr__io_table simdr__io_system;

/* ------------------------------------------------------------------------
 * Fault injection (TESTING ONLY)
 *
 * A test either replaces entries of simdr__io itself (saving the previous
 * entry to call through, as the power-cut layer of tests/crash does), or
 * arms rules below. A rule applies to one operation and counts its calls
 * from the moment it is armed (only those `select` accepts, when set): call
 * number `nth` (1 = the next call) and the `count - 1` calls after it
 * (count 0 = every call from nth on) are hit. A hit call first runs
 * `before` (when set), then either fails with `err` (when non-zero, no
 * system call made), or transfers at most `short_len` bytes (pwrite,
 * pwritev, pread; when non-zero), or goes through unchanged. Rules sit above
 * whatever the table held when they were armed.
 * ------------------------------------------------------------------------ */
enum simdr__io_op {
    SIMDR__IO_PWRITE,
    SIMDR__IO_PWRITEV,
    SIMDR__IO_PREAD,
    SIMDR__IO_FDATASYNC,
    SIMDR__IO_FSYNC,
    SIMDR__IO_FSYNC_DIR,
    SIMDR__IO_FTRUNCATE,
    SIMDR__IO_RENAME,
    SIMDR__IO_OPEN,
    SIMDR__IO_FSTAT,
    SIMDR__IO_MMAP,
    SIMDR__IO_MSYNC,
    SIMDR__IO_SYNC_FILE_RANGE,
    SIMDR__IO_FALLOCATE,
    SIMDR__IO_THREAD_CREATE,
    SIMDR__IO_OPS
};

typedef struct simdr__io_fault {
    enum simdr__io_op op;
    uint64_t nth;      /* first call hit, counted from arming (1 = the next) */
    uint64_t count;    /* calls hit from nth on; 0 = all of them */
    int err;           /* errno to fail with (EIO, ENOSPC, ...); 0 = do not fail */
    size_t short_len;  /* transfers: move at most this many bytes; 0 = no limit */
    /* Which calls count (NULL: all). fd is the call's descriptor: -1 for
     * rename and open, and for the anonymous maps of big allocations
     * (alloc.c), which also come through simdr__io.mmap: a rule selecting
     * fd == -1 on SIMDR__IO_MMAP fails an index growth. */
    int (*select)(void *ctx, enum simdr__io_op op, int fd);
    void (*before)(void *ctx, enum simdr__io_op op); /* run before a hit call */
    void *ctx;
} simdr__io_fault;

/* Arms f (replacing any rule armed for f->op). */
void simdr__io_fault_arm(const simdr__io_fault *f);
/* Shorthand: the nth call of op from now fails once with err. */
void simdr__io_fail_nth(enum simdr__io_op op, uint64_t nth, int err);
/* Calls of op made since its rule was armed (or since the last reset). */
uint64_t simdr__io_calls(enum simdr__io_op op);
/* Calls of op that a rule hit since it was armed. */
uint64_t simdr__io_hits(enum simdr__io_op op);
/* Disarms every rule and restores simdr__io to the system calls. */
void simdr__io_reset(void);

/* How a writer attached from now on makes a sync's side-file record durable
 * (side.c): SIMDR__SIDE_FLUSH_AUTO decides by the file system (the
 * default); ONE pushes the page to the device ahead of the store's
 * fdatasync, whose cache flush makes both durable; TWO flushes the page with
 * its own msync after the fdatasync. */
enum { SIMDR__SIDE_FLUSH_AUTO, SIMDR__SIDE_FLUSH_ONE, SIMDR__SIDE_FLUSH_TWO };
extern int simdr__side_flush_policy;

#endif
