/*
 * testutil.h - helpers shared by the unit test suites of libsimdr: temporary
 * directories, whole-file I/O, SHA-256 and CRC-32 digests, hex, deterministic
 * pseudo-random values, small store shortcuts built on cmocka assertions, the
 * shared fixture (a temporary directory, a store in it) and a watchdog that
 * turns a hang into a failure.
 */
#ifndef SIMDR_TESTUTIL_H
#define SIMDR_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "simdr.h"

/* ---- temporary directories and paths ---- */

/* Creates a fresh temporary directory (under $TMPDIR or /tmp); returns a
 * malloc'd path. Fails the test when it cannot. */
char *tu_mkdtemp(void);
/* Removes dir and everything below it (best effort), frees nothing. */
void tu_rmtree(const char *dir);
/* out = dir + "/" + name. */
void tu_join(char *out, size_t cap, const char *dir, const char *name);
/* Number of directory entries in dir: ".", ".." and the library's index
 * hint files ("*.hint") and side files ("*.simdr") excluded. */
int tu_dir_count(const char *dir);

/* ---- files ---- */

/* Reads a whole file; *len receives its size. Returns malloc'd bytes (a
 * non-NULL pointer even for an empty file) or NULL if it cannot be read. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* Writes (creating or replacing) path with data. Asserts success. */
void tu_write_file(const char *path, const void *data, size_t len);
/* Appends data to path. Asserts success. */
void tu_append_file(const char *path, const void *data, size_t len);
/* File size, or -1 when it does not exist. */
int64_t tu_file_size(const char *path);
/* Copies src to dst (dst created 0644). Asserts success. */
void tu_copy_file(const char *src, const char *dst);
/* Truncates path to len bytes. Asserts success. */
void tu_truncate(const char *path, uint64_t len);
/* Overwrites len bytes at off in path. Asserts success. */
void tu_patch_file(const char *path, uint64_t off, const void *data, size_t len);
/* SHA-256 of a whole file into out; asserts the file can be read. */
void tu_sha256_file(const char *path, uint8_t out[32]);

/* ---- digests and hex ---- */

void tu_sha256(const void *data, size_t len, uint8_t out[32]);
uint32_t tu_crc32(const void *data, size_t len);
/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void tu_hex(const void *data, size_t len, char *out);
/* Parses hex into out (cap bytes); returns the number of bytes or -1. */
int64_t tu_unhex(const char *hex, uint8_t *out, size_t cap);
void tu_put_le64(uint8_t *p, uint64_t v);
uint64_t tu_get_le64(const uint8_t *p);

/* ---- deterministic randomness ---- */

/* The suite seed: $SIMDR_TEST_SEED if set, else def. Printed once. */
uint64_t tu_seed(uint64_t def);
uint64_t tu_rand(uint64_t *state);
/* Fills buf with pseudo-random bytes derived from seed; the first byte is
 * never 0, so the value is never a lone 0x00 or all zero bytes. */
void tu_fill(void *buf, size_t len, uint64_t seed);

/* ---- store shortcuts (assert on failure) ---- */

simdr_store *tu_open(const char *path, int open_mode, int layout);
/* Opens with options; returns the status, *out set on success. */
int tu_open_status(simdr_store **out, const char *path, int open_mode, int layout);
void tu_put_str(simdr_store *s, const char *key, const char *value);
/* Asserts key holds exactly value (via simdr_get and simdr_get_copy). */
void tu_expect_value(simdr_store *s, const void *key, size_t klen, const void *value,
                     size_t vlen);
void tu_expect_str(simdr_store *s, const char *key, const char *value);
void tu_expect_absent(simdr_store *s, const void *key, size_t klen);

/* ---- the fixture every suite starts from ---- */

/* A fresh temporary directory with two file names in it and, for suites
 * that want one, a store open on the first. Suites with data of their own
 * embed it as the first member of their fixture. */
typedef struct tu_fixture {
    char *dir;         /* removed with everything in it at teardown */
    char path[4096];   /* dir/store.bin */
    char other[4096];  /* dir/other.bin: a second file (copies, moves, a second store) */
    simdr_store *s;    /* NULL unless opened; closed at teardown */
} tu_fixture;

/* Makes the directory and the names (and, with open_store, creates and opens
 * path in the aligned layout). */
void tu_fixture_init(tu_fixture *f, int open_store);
/* Closes s, removes the directory, frees dir (not f). */
void tu_fixture_free(tu_fixture *f);
/* cmocka setups (with a store open, or only the directory) and teardown;
 * *state is the calloc'd tu_fixture. */
int tu_setup_store(void **state);
int tu_setup_dir(void **state);
int tu_teardown(void **state);
/* A cmocka test run in a fresh tu_fixture: with a store open, or only the
 * directory. */
#define TU_TEST(fn) cmocka_unit_test_setup_teardown(fn, tu_setup_store, tu_teardown)
#define TU_TEST_DIR(fn) cmocka_unit_test_setup_teardown(fn, tu_setup_dir, tu_teardown)

/* ---- hangs ---- */

/* Starts a watchdog: unless tu_watchdog_stop is called within seconds, it
 * prints "watchdog: <what> did not finish in N s" and aborts the process, so
 * a deadlock fails the test instead of hanging the run. One at a time. */
void tu_watchdog_start(unsigned seconds, const char *what);
void tu_watchdog_stop(void);

/* ---- child processes ---- */

/* Kills child pid with SIGKILL and reaps it, asserting it died of that
 * signal (not of an exit or a crash of its own before the kill). */
void tu_kill9(int pid);

#define TU_STR(s) (s), strlen(s)

#endif /* SIMDR_TESTUTIL_H */
