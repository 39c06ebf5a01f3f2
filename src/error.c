/*
 * error.c - status codes to text, and the per-thread message of the last
 * failure (file, offset, errno text) that callers can show to a person.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[1024];

SIMDR_API const char *simdr_version(void) { return SIMDR_VERSION_STRING; }

SIMDR_API const char *simdr_strerror(int code) {
    switch (code) {
    case SIMDR_OK: return "success";
    case SIMDR_NOTFOUND: return "key not found";
    case SIMDR_EINVAL: return "invalid argument";
    case SIMDR_EIO: return "I/O error";
    case SIMDR_ENOSPC: return "no space left on device or file size limit reached";
    case SIMDR_ECORRUPT: return "store is damaged";
    case SIMDR_ENOTSTORE: return "not a simd-r-drive store";
    case SIMDR_ELOCKED: return "store is locked by another process";
    case SIMDR_EACCES: return "permission denied";
    case SIMDR_ENOMEM: return "out of memory";
    case SIMDR_EREADONLY: return "store is open read-only";
    case SIMDR_ECHECKSUM: return "checksum mismatch";
    case SIMDR_ENOENT: return "file does not exist";
    case SIMDR_ESOURCE: return "stream source failed";
    case SIMDR_ETOOBIG: return "value or file too big";
    case SIMDR_ESTOPPED: return "stopped by callback";
    case SIMDR_EFAILED: return "store failed after an unrecoverable write error; reopen it";
    default: return "unknown error";
    }
}

SIMDR_API const char *simdr_last_error(void) { return last_error; }

int simdr__fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

int simdr__errno_status(int err) {
    switch (err) {
    case ENOSPC: case EFBIG: case EDQUOT: return SIMDR_ENOSPC;
    case EACCES: case EPERM: case EROFS: return SIMDR_EACCES;
    case ENOENT: return SIMDR_ENOENT;
    case ENOMEM: return SIMDR_ENOMEM;
    case EWOULDBLOCK: return SIMDR_ELOCKED;
    default: return SIMDR_EIO;
    }
}

int simdr__fail_errno(int err, const char *what, const char *path) {
    return simdr__fail(simdr__errno_status(err), "%s: %s: %s", path ? path : "", what,
                       strerror(err));
}
