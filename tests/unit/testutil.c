/*
 * testutil.c - implementation of the unit-test helpers declared in
 * testutil.h (temporary directories, file I/O, CRC-32, hex, seeded values,
 * store shortcuts, the shared fixture).
 */
#define _GNU_SOURCE 1
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *tu_mkdtemp(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/simdr-unit-XXXXXX", base);
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *r = strdup(d);
    assert_non_null(r);
    return r;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void tu_rmtree(const char *dir) {
    if (dir)
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

int tu_dir_count(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        /* the library's index hint cache beside a store is not a leftover */
        if (len > 5 && !strcmp(e->d_name + len - 5, ".hint"))
            continue;
        /* nor is its side file (the writer's committed tail) */
        if (len > 6 && !strcmp(e->d_name + len - 6, ".simdr"))
            continue;
        n++;
    }
    closedir(d);
    return n;
}

uint8_t *tu_read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void write_all(int fd, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r > 0);
        p += r;
        len -= (size_t)r;
    }
}

void tu_write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    write_all(fd, data, len);
    assert_int_equal(close(fd), 0);
}

void tu_append_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    write_all(fd, data, len);
    assert_int_equal(close(fd), 0);
}

int64_t tu_file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return (int64_t)st.st_size;
}

void tu_copy_file(const char *src, const char *dst) {
    size_t n = 0;
    uint8_t *b = tu_read_file(src, &n);
    assert_non_null(b);
    tu_write_file(dst, b, n);
    free(b);
}

void tu_truncate(const char *path, uint64_t len) {
    assert_int_equal(truncate(path, (off_t)len), 0);
}

void tu_patch_file(const char *path, uint64_t off, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

void tu_sha256_file(const char *path, uint8_t out[32]) {
    size_t n = 0;
    uint8_t *b = tu_read_file(path, &n);
    assert_non_null(b);
    tu_sha256(b, n, out);
    free(b);
}

uint32_t tu_crc32(const void *data, size_t len) {
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

void tu_hex(const void *data, size_t len, char *out) {
    static const char d[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * len] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int64_t tu_unhex(const char *hex, uint8_t *out, size_t cap) {
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (int64_t)(n / 2);
}

void tu_put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t tu_get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint64_t tu_seed(uint64_t def) {
    static int printed;
    uint64_t s = def;
    const char *e = getenv("SIMDR_TEST_SEED");
    if (e && *e)
        s = strtoull(e, NULL, 0);
    if (!printed) {
        printed = 1;
        fprintf(stderr, "seed: %" PRIu64 " (set SIMDR_TEST_SEED to replay)\n", s);
    }
    return s;
}

uint64_t tu_rand(uint64_t *state) {
    /* splitmix64 */
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void tu_fill(void *buf, size_t len, uint64_t seed) {
    uint8_t *p = buf;
    uint64_t st = seed;
    size_t i = 0;
    while (i + 8 <= len) {
        uint64_t r = tu_rand(&st);
        memcpy(p + i, &r, 8);
        i += 8;
    }
    if (i < len) {
        uint64_t r = tu_rand(&st);
        memcpy(p + i, &r, len - i);
    }
    if (len && p[0] == 0)
        p[0] = 0x5a;
}

int tu_open_status(simdr_store **out, const char *path, int open_mode, int layout) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = open_mode;
    o.layout = layout;
    *out = NULL;
    return simdr_open(out, path, &o);
}

simdr_store *tu_open(const char *path, int open_mode, int layout) {
    simdr_store *s = NULL;
    int rc = tu_open_status(&s, path, open_mode, layout);
    if (rc != SIMDR_OK)
        fprintf(stderr, "simdr_open(%s): %s (%s)\n", path, simdr_strerror(rc),
                simdr_last_error());
    assert_int_equal(rc, SIMDR_OK);
    assert_non_null(s);
    return s;
}

void tu_put_str(simdr_store *s, const char *key, const char *value) {
    assert_int_equal(simdr_put(s, key, strlen(key), value, strlen(value), NULL), SIMDR_OK);
}

void tu_expect_value(simdr_store *s, const void *key, size_t klen, const void *value,
                     size_t vlen) {
    simdr_entry *e = NULL;
    int rc = simdr_get(s, key, klen, &e);
    assert_int_equal(rc, SIMDR_OK);
    assert_non_null(e);
    assert_int_equal(simdr_entry_size(e), vlen);
    assert_memory_equal(simdr_entry_data(e), value, vlen);
    assert_int_equal(simdr_entry_is_tombstone(e), 0);
    assert_int_equal(simdr_entry_key_hash(e), simdr_hash_key(key, klen));
    simdr_entry_release(e);
    assert_int_equal(simdr_exists(s, key, klen), 1);
}

void tu_expect_str(simdr_store *s, const char *key, const char *value) {
    tu_expect_value(s, key, strlen(key), value, strlen(value));
}

void tu_expect_absent(simdr_store *s, const void *key, size_t klen) {
    simdr_entry *e = (simdr_entry *)(uintptr_t)1;
    assert_int_equal(simdr_get(s, key, klen, &e), SIMDR_NOTFOUND);
    assert_int_equal(simdr_exists(s, key, klen), 0);
}

/* ---- the shared fixture ---- */

void tu_fixture_init(tu_fixture *f, int open_store) {
    f->dir = tu_mkdtemp();
    tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    tu_join(f->other, sizeof f->other, f->dir, "other.bin");
    f->s = open_store ? tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64) : NULL;
}

void tu_fixture_free(tu_fixture *f) {
    simdr_close(f->s);
    f->s = NULL;
    tu_rmtree(f->dir);
    free(f->dir);
    f->dir = NULL;
}

static int setup_fixture(void **state, int open_store) {
    tu_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_fixture_init(f, open_store);
    *state = f;
    return 0;
}

int tu_setup_store(void **state) { return setup_fixture(state, 1); }
int tu_setup_dir(void **state) { return setup_fixture(state, 0); }

int tu_teardown(void **state) {
    tu_fixture *f = *state;
    tu_fixture_free(f);
    free(f);
    return 0;
}

/* ---- hangs ---- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int armed;
    unsigned seconds;
    const char *what;
} watchdog = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *watchdog_main(void *arg) {
    (void)arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    pthread_mutex_lock(&watchdog.lock);
    deadline.tv_sec += (time_t)watchdog.seconds;
    while (watchdog.armed) {
        if (pthread_cond_timedwait(&watchdog.cond, &watchdog.lock, &deadline) == ETIMEDOUT &&
            watchdog.armed) {
            fprintf(stderr, "watchdog: %s did not finish in %u s (deadlock?)\n", watchdog.what,
                    watchdog.seconds);
            fflush(stderr);
            abort();
        }
    }
    pthread_mutex_unlock(&watchdog.lock);
    return NULL;
}

void tu_watchdog_start(unsigned seconds, const char *what) {
    pthread_mutex_lock(&watchdog.lock);
    assert_false(watchdog.armed);
    watchdog.armed = 1;
    watchdog.seconds = seconds;
    watchdog.what = what;
    pthread_mutex_unlock(&watchdog.lock);
    assert_int_equal(pthread_create(&watchdog.thread, NULL, watchdog_main, NULL), 0);
}

void tu_watchdog_stop(void) {
    pthread_mutex_lock(&watchdog.lock);
    watchdog.armed = 0;
    pthread_cond_signal(&watchdog.cond);
    pthread_mutex_unlock(&watchdog.lock);
    pthread_join(watchdog.thread, NULL);
}

void tu_kill9(int pid) {
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}
