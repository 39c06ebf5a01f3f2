/*
 * fuzzutil.h - what the engine's fuzz targets share: the abort on a broken
 * promise (with the engine's last error), a scratch folder on a RAM file
 * system when there is one, and the pieces of their own reading of the
 * format (little-endian fields, the CRC-32), written from docs/FORMAT.md
 * rather than taken from the library so that a mistake there is not shared.
 * Static functions: each target is a program of its own.
 */
#ifndef SIMDR_FUZZUTIL_H
#define SIMDR_FUZZUTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "simdr.h"

/* Aborts (a finding for libFuzzer) when cond is false, saying which target,
 * line and promise, then the message and the engine's last error. */
#define FUZZ_REQUIRE(target, cond, ...)                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s: broken promise at line %d: %s: ", target, __LINE__, \
                    #cond);                                                          \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, " (last error: %s)\n", simdr_last_error());             \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* Makes dir (cap bytes) a new folder "<base>/<prefix>-XXXXXX", base being
 * $TMPDIR, else /dev/shm when writable, else /tmp. Aborts on failure. */
static void fuzz_make_scratch_dir(char *dir, size_t cap, const char *prefix) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, cap, "%s/%s-XXXXXX", base, prefix);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
}

/* Removes every file in dir (the targets make no subfolders). */
static void fuzz_clear_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

/* The format's fields are little-endian. */
static inline uint64_t fuzz_load_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static inline uint32_t fuzz_load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* CRC-32/IEEE (zlib's crc32), bit by bit. */
static inline uint32_t fuzz_crc32(const uint8_t *p, uint64_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (uint64_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

#endif
