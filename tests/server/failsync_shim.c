/*
 * failsync_shim.c - an LD_PRELOAD library for test_failing_sync.py: makes
 * fsync and fdatasync fail with EIO while the file named by
 * SIMDR_FAILSYNC_FLAG exists, and opening a store file for writing fail with
 * EIO while SIMDR_FAILOPEN_FLAG exists, so the test can switch a running
 * simdr-server's disk from working to failing and back.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int flag_set(const char *env) {
    const char *path = getenv(env);
    return path && access(path, F_OK) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (flag_set("SIMDR_FAILSYNC_FLAG")) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (flag_set("SIMDR_FAILSYNC_FLAG")) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

/* A store file (DIR/db-N.simdr) opened for writing; its side file and the
 * directory are left alone. */
static int refused_open(const char *path, int flags) {
    size_t n = strlen(path);
    return (flags & O_ACCMODE) != O_RDONLY && n > 6 && strcmp(path + n - 6, ".simdr") == 0 &&
           (n < 12 || strcmp(path + n - 12, ".simdr.simdr") != 0) &&
           flag_set("SIMDR_FAILOPEN_FLAG");
}

int open(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...);
    if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (refused_open(path, flags)) {
        errno = EIO;
        return -1;
    }
    return real(path, flags, mode);
}
