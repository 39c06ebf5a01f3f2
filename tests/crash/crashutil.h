/*
 * crashutil.h - helpers shared by the crash, recovery, full-disk, process and
 * stress suites of libsimdr: fatal assertions that print both operands and
 * the replay seed, self-verifying values, deterministic randomness, the
 * SIMDR_TEST_SCALE knob and small file utilities.
 *
 * The suites fork and kill processes, so they use these plain assertions
 * instead of a test framework: a failed check prints what differed and exits
 * the process with status 1.
 */
#ifndef SIMDR_CRASHUTIL_H
#define SIMDR_CRASHUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "simdr.h"

/* ---- assertions ---- */

/* Text appended to every failure message (how to replay). */
void cu_set_replay_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void cu_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void cu_check_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CU_CHECK(cond, ...)                                                        \
    do {                                                                           \
        if (!(cond)) cu_check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);        \
    } while (0)

#define CU_EQ_U64(a, b)                                                            \
    do {                                                                           \
        uint64_t cu_a_ = (uint64_t)(a), cu_b_ = (uint64_t)(b);                     \
        if (cu_a_ != cu_b_)                                                        \
            cu_fail(__FILE__, __LINE__, "%s == %s: %llu != %llu", #a, #b,          \
                    (unsigned long long)cu_a_, (unsigned long long)cu_b_);         \
    } while (0)

/* Expects a simdr status; prints both codes and the library's message. */
#define CU_RC(got, want)                                                           \
    do {                                                                           \
        int cu_g_ = (int)(got), cu_w_ = (int)(want);                               \
        if (cu_g_ != cu_w_)                                                        \
            cu_fail(__FILE__, __LINE__, "%s: got %d (%s), want %d (%s); last error: %s", \
                    #got, cu_g_, simdr_strerror(cu_g_), cu_w_, simdr_strerror(cu_w_), \
                    simdr_last_error());                                           \
    } while (0)

#define CU_OK(expr) CU_RC(expr, SIMDR_OK)

/* ---- randomness, seed, scale ---- */

uint64_t cu_mix64(uint64_t x);          /* splitmix64 finaliser */
uint64_t cu_rand(uint64_t *state);      /* splitmix64 step */
/* Uniform in [lo, hi] (inclusive). */
uint64_t cu_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* The run's seed: "--seed N" or "--seed=N" in argv, else $SIMDR_TEST_SEED,
 * else a fresh one from the clock. Printed, and recorded as the replay hint. */
uint64_t cu_seed(int argc, char **argv, const char *prog);

/* "--mapped" in argv: the suite's writers open with SIMDR_APPEND_MAPPED
 * (cu_options_init), so the suite runs against mapped appends; "--zeroed":
 * with SIMDR_APPEND_ZEROED. Returns and records the choice (cu_mapped for
 * the first, cu_zeroed for the second; cu_space_ahead for either: the file
 * may reach past its tail while a writer has it open). */
extern int cu_mapped, cu_zeroed, cu_space_ahead;
int cu_parse_mapped(int argc, char **argv);
/* simdr_options_init, with the append mode of the run. */
void cu_options_init(simdr_options *o);

/* The work scale: "--scale N" in argv, else $SIMDR_TEST_SCALE, else 10.
 * Amounts of work are proportional to it; sanitizer runs use 1. */
int cu_scale(int argc, char **argv);
/* n * scale / 10, at least min. */
uint64_t cu_scaled(uint64_t n, int scale, uint64_t min);

/* Monotonic time in seconds. */
double cu_now(void);

/* ---- self-verifying values ----
 * A value is a 32-byte header {magic, key id, generation, length, check}
 * followed by bytes derived from (key id, generation). Anyone holding the
 * bytes can verify them without knowing what was written; anyone knowing
 * (key id, generation, length) can recompute them. Never all zero bytes. */
#define CU_VALUE_MIN 32u

/* Writes bytes [off, off + n) of the value (key, gen, len) into out. */
void cu_value_fill(void *out, uint64_t off, size_t n, uint32_t key, uint64_t gen, uint64_t len);
/* Allocates and fills a whole value. */
uint8_t *cu_value_new(uint32_t key, uint64_t gen, uint64_t len);
/* 0 if data is a complete, intact value; *key and *gen receive its identity.
 * -1 otherwise, with a reason in why (may be NULL). */
int cu_value_verify(const void *data, uint64_t size, uint32_t *key, uint64_t *gen,
                    const char **why);
/* FNV-1a 64 over bytes, continuing from h (start with CU_FNV_INIT) */
#define CU_FNV_INIT UINT64_C(0xcbf29ce484222325)
uint64_t cu_fnv(uint64_t h, const void *data, size_t n);
/* FNV-1a of the whole value (key, gen, len), computed in chunks. */
uint64_t cu_value_hash(uint32_t key, uint64_t gen, uint64_t len);

/* The key bytes of key id k ("key-<k>"); returns the length. */
size_t cu_key(char *buf, size_t cap, uint32_t k);

/* Stream source producing the value (key, gen, len) in chunks of random
 * size (1..max_chunk), for simdr_put_stream. hash accumulates what was
 * handed out. */
typedef struct cu_stream {
    uint32_t key;
    uint64_t gen, len, off;
    uint64_t rng;
    size_t max_chunk;
    uint64_t hash;
} cu_stream;
int64_t cu_stream_read(void *ctx, void *buf, size_t cap);

/* ---- files ---- */

/* A fresh temporary directory (under $TMPDIR or /tmp); malloc'd path. */
char *cu_mkdtemp(const char *tag);
void cu_rmtree(const char *dir);
/* Whole file, malloc'd (non-NULL for an empty file), or NULL. */
uint8_t *cu_read_file(const char *path, size_t *len);
void cu_write_file(const char *path, const void *data, size_t len);
int64_t cu_file_size(const char *path);
/* Number of entries in dir ("." and ".." excluded). */
int cu_dir_count(const char *dir);
/* Number of entries in dir whose name contains needle. */
int cu_count_matching(const char *dir, const char *needle);
/* Removes every file in dir whose name contains needle; returns how many. */
int cu_remove_matching(const char *dir, const char *needle);

#endif /* SIMDR_CRASHUTIL_H */
