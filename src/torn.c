/*
 * torn.c - saving the bytes a repair cuts into a file beside the store,
 * made durable before the cut, so a repair never destroys anything silently.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A run of zero bytes at least this long ending a cut is not copied: it
 * holds nothing, and the preallocated space of mapped appends (mapped.c)
 * leaves one of up to an eighth of the file after every crash. */
#define UNSAVED_ZERO_RUN (UINT64_C(128) << 10)
#define ZERO_PROBE 4096u

/* The end of [from, to) without its trailing zero bytes. */
static uint64_t end_without_zeros(const uint8_t *base, uint64_t from, uint64_t to) {
    uint64_t end = to;
    while (end - from >= ZERO_PROBE && simdr__all_zero(base + end - ZERO_PROBE, ZERO_PROBE))
        end -= ZERO_PROBE;
    while (end > from && base[end - 1] == 0) end--;
    return end;
}

/* "<path><suffix>" with the store's file name shortened as much as the
 * suffix needs to keep the name within NAME_MAX: a store named with 250 bytes
 * would otherwise have no name for its saved tail, and a torn write could
 * never be repaired. */
static void saved_name(char *out, size_t cap, const char *path, const char *suffix) {
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    size_t base_len = strlen(path) - dir_len, suffix_len = strlen(suffix);
    if (base_len + suffix_len > NAME_MAX)
        base_len = NAME_MAX > suffix_len ? NAME_MAX - suffix_len : 0;
    snprintf(out, cap, "%.*s%.*s%s", (int)dir_len, path, (int)base_len, path + dir_len, suffix);
}

/* Copies the bytes about to be cut into "<path>.torn-<offset>[.N]" and makes
 * that file durable, so a repair never destroys anything silently. A
 * trailing zero run of UNSAVED_ZERO_RUN bytes or more is left out (nothing
 * is saved when the cut is all zeros). */
int simdr__save_cut_bytes(simdr_store *s, const uint8_t *base, uint64_t from, uint64_t to) {
    uint64_t data_end = end_without_zeros(base, from, to);
    if (to - data_end >= UNSAVED_ZERO_RUN) to = data_end;
    if (to == from) return SIMDR_OK;
    char name[sizeof s->recovery.saved_path];
    /* The copy holds the store's bytes: no wider access than the store's. */
    struct stat st;
    mode_t mode = simdr__io.fstat(s->fd, &st) == 0 ? (st.st_mode & 0666) : 0600;
    int fd = -1;
    for (int attempt = 0; attempt < 1000 && fd < 0; attempt++) {
        char suffix[48];
        if (attempt == 0)
            snprintf(suffix, sizeof suffix, ".torn-%llu", (unsigned long long)from);
        else
            snprintf(suffix, sizeof suffix, ".torn-%llu.%d", (unsigned long long)from, attempt);
        saved_name(name, sizeof name, s->path, suffix);
        fd = simdr__io.open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST) return simdr__fail_errno(errno, "saving torn tail", name);
    }
    if (fd < 0) return simdr__fail(SIMDR_EIO, "%s: no free name to save the torn tail", s->path);
    int rc = simdr__pwrite_all(fd, base + from, (size_t)(to - from), 0);
    if (rc == 0) rc = simdr__fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) {
        unlink(name);
        return simdr__fail_errno(err, "saving torn tail", name);
    }
    /* The name too must be durable before the cut: otherwise a power cut
     * right after it could leave the store cut and the copy gone. */
    if (simdr__fsync_dir(name) != 0) {
        err = errno;
        unlink(name);
        return simdr__fail_errno(err, "saving torn tail (syncing its directory)", name);
    }
    snprintf(s->recovery.saved_path, sizeof s->recovery.saved_path, "%s", name);
    return SIMDR_OK;
}
