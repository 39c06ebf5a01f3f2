/*
 * fuzzutil.h - what the engine's fuzz targets share: the abort on a broken
 * promise (with the engine's last error) and a scratch folder on a RAM file
 * system when there is one. Static functions: each target is a program of
 * its own.
 */
#ifndef SIMDR_FUZZUTIL_H
#define SIMDR_FUZZUTIL_H

#include <dirent.h>
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

#endif
