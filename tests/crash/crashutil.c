/*
 * crashutil.c - implementation of the helpers shared by the crash suites
 * (see crashutil.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "crashutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char replay_hint[512];

void cu_set_replay_hint(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(replay_hint, sizeof replay_hint, fmt, ap);
    va_end(ap);
}

void cu_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (replay_hint[0]) fprintf(stderr, "replay: %s\n", replay_hint);
    fflush(stderr);
    exit(1);
}

void cu_check_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: check failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (replay_hint[0]) fprintf(stderr, "replay: %s\n", replay_hint);
    fflush(stderr);
    exit(1);
}

uint64_t cu_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

uint64_t cu_rand(uint64_t *state) {
    *state += UINT64_C(0x9e3779b97f4a7c15);
    return cu_mix64(*state);
}

uint64_t cu_range(uint64_t *state, uint64_t lo, uint64_t hi) {
    return lo + cu_rand(state) % (hi - lo + 1);
}

static const char *arg_value(int argc, char **argv, const char *name) {
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}

uint64_t cu_seed(int argc, char **argv, const char *prog) {
    const char *s = arg_value(argc, argv, "--seed");
    if (!s) s = getenv("SIMDR_TEST_SEED");
    uint64_t seed;
    if (s && *s) {
        seed = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = cu_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid());
        seed &= UINT64_C(0xffffffffffff); /* short enough to type */
    }
    printf("%s: seed %llu (replay: SIMDR_TEST_SEED=%llu or --seed %llu)\n", prog,
           (unsigned long long)seed, (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    cu_set_replay_hint("%s --seed %llu", prog, (unsigned long long)seed);
    return seed;
}

int cu_mapped, cu_zeroed, cu_space_ahead;

int cu_parse_mapped(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mapped")) cu_mapped = 1;
        if (!strcmp(argv[i], "--zeroed")) cu_zeroed = 1;
    }
    if (cu_mapped) printf("append mode: SIMDR_APPEND_MAPPED\n");
    if (cu_zeroed) printf("append mode: SIMDR_APPEND_ZEROED\n");
    cu_space_ahead = cu_mapped || cu_zeroed;
    return cu_space_ahead;
}

void cu_options_init(simdr_options *o) {
    simdr_options_init(o);
    if (cu_mapped) o->append_mode = SIMDR_APPEND_MAPPED;
    if (cu_zeroed) o->append_mode = SIMDR_APPEND_ZEROED;
}

int cu_scale(int argc, char **argv) {
    const char *s = arg_value(argc, argv, "--scale");
    if (!s) s = getenv("SIMDR_TEST_SCALE");
    int scale = (s && *s) ? atoi(s) : 10;
    if (scale < 1) scale = 1;
    if (scale > 1000) scale = 1000;
    return scale;
}

uint64_t cu_scaled(uint64_t n, int scale, uint64_t min) {
    uint64_t v = n * (uint64_t)scale / 10;
    return v < min ? min : v;
}

double cu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- values ---- */

#define VALUE_MAGIC UINT32_C(0x56524453) /* "SDRV" */

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t header_check(uint32_t key, uint64_t gen, uint64_t len) {
    return cu_mix64(cu_mix64(VALUE_MAGIC ^ ((uint64_t)key << 32)) ^ cu_mix64(gen) ^ len);
}

static void header_bytes(uint8_t h[32], uint32_t key, uint64_t gen, uint64_t len) {
    put32(h, VALUE_MAGIC);
    put32(h + 4, key);
    put64(h + 8, gen);
    put64(h + 16, len);
    put64(h + 24, header_check(key, gen, len));
}

void cu_value_fill(void *out, uint64_t off, size_t n, uint32_t key, uint64_t gen, uint64_t len) {
    uint8_t *o = out;
    uint8_t h[32];
    header_bytes(h, key, gen, len);
    uint64_t seed = cu_mix64(((uint64_t)key << 40) ^ gen ^ UINT64_C(0x5eed));
    uint64_t end = off + n;
    uint64_t p = off;
    while (p < end && p < 32) *o++ = h[p++];
    while (p < end) {
        uint64_t w = cu_mix64(seed + (p >> 3));
        unsigned b = (unsigned)(p & 7);
        if (b == 0 && end - p >= 8) {
            memcpy(o, &w, 8); /* byte order does not matter: fill and verify agree */
            o += 8;
            p += 8;
            continue;
        }
        uint8_t wb[8];
        memcpy(wb, &w, 8);
        *o++ = wb[b];
        p++;
    }
}

uint8_t *cu_value_new(uint32_t key, uint64_t gen, uint64_t len) {
    uint8_t *v = malloc(len ? len : 1);
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    cu_value_fill(v, 0, len, key, gen, len);
    return v;
}

int cu_value_verify(const void *data, uint64_t size, uint32_t *key, uint64_t *gen,
                    const char **why) {
    const uint8_t *d = data;
    const char *dummy;
    if (!why) why = &dummy;
    if (size < CU_VALUE_MIN) {
        *why = "shorter than a value header";
        return -1;
    }
    if (get32(d) != VALUE_MAGIC) {
        *why = "bad magic";
        return -1;
    }
    uint32_t k = get32(d + 4);
    uint64_t g = get64(d + 8), len = get64(d + 16);
    if (get64(d + 24) != header_check(k, g, len)) {
        *why = "bad header check";
        return -1;
    }
    if (len != size) {
        *why = "length differs from the header (torn or foreign)";
        return -1;
    }
    uint8_t buf[4096];
    for (uint64_t off = 32; off < size; off += sizeof buf) {
        size_t n = (size_t)(size - off < sizeof buf ? size - off : sizeof buf);
        cu_value_fill(buf, off, n, k, g, len);
        if (memcmp(buf, d + off, n) != 0) {
            *why = "payload bytes differ";
            return -1;
        }
    }
    if (key) *key = k;
    if (gen) *gen = g;
    return 0;
}

uint64_t cu_fnv(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint64_t cu_value_hash(uint32_t key, uint64_t gen, uint64_t len) {
    uint8_t buf[4096];
    uint64_t h = CU_FNV_INIT;
    for (uint64_t off = 0; off < len; off += sizeof buf) {
        size_t n = (size_t)(len - off < sizeof buf ? len - off : sizeof buf);
        cu_value_fill(buf, off, n, key, gen, len);
        h = cu_fnv(h, buf, n);
    }
    return h;
}

size_t cu_key(char *buf, size_t cap, uint32_t k) {
    int n = snprintf(buf, cap, "key-%u", k);
    return (size_t)n;
}

int64_t cu_stream_read(void *ctx, void *buf, size_t cap) {
    cu_stream *s = ctx;
    if (s->off >= s->len) return 0;
    size_t n = (size_t)cu_range(&s->rng, 1, s->max_chunk);
    if (n > cap) n = cap;
    if (n > s->len - s->off) n = (size_t)(s->len - s->off);
    cu_value_fill(buf, s->off, n, s->key, s->gen, s->len);
    s->hash = cu_fnv(s->hash, buf, n);
    s->off += n;
    return (int64_t)n;
}

/* ---- files ---- */

char *cu_mkdtemp(const char *tag) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    size_t cap = strlen(base) + strlen(tag) + 32;
    char *p = malloc(cap);
    if (!p) exit(1);
    snprintf(p, cap, "%s/simdr-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        exit(1);
    }
    return p;
}

void cu_rmtree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                cu_rmtree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

uint8_t *cu_read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = 0;
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != n) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

void cu_write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "write %s: %s\n", path, strerror(errno));
            exit(1);
        }
        done += (size_t)w;
    }
    close(fd);
}

int64_t cu_file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return (int64_t)st.st_size;
}

int cu_dir_count(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

int cu_count_matching(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, needle)) n++;
    closedir(d);
    return n;
}

int cu_remove_matching(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strstr(e->d_name, needle)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) n++;
    }
    closedir(d);
    return n;
}
