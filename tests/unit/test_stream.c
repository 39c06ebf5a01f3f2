/*
 * test_stream.c - unit tests of the streaming writes of libsimdr:
 * simdr_put_stream with a callback source and simdr_put_fd from a pipe
 * (values larger than 64 KiB), a source that fails midway (SIMDR_ESOURCE,
 * store unchanged), refusal of empty and zero-only streams, and of a
 * descriptor on the store file itself (which would never reach its end).
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A source over a buffer, handing out odd-sized pieces; fails with -1 once
 * fail_at bytes were delivered (fail_at < 0: never). */
typedef struct src {
    const uint8_t *data;
    size_t len, pos;
    size_t piece;
    int64_t fail_at;
    int calls_after_end;
} src;

static int64_t src_read(void *ctx, void *buf, size_t cap) {
    src *s = ctx;
    if (s->fail_at >= 0 && s->pos >= (size_t)s->fail_at)
        return -1;
    if (s->pos == s->len) {
        s->calls_after_end++;
        return 0;
    }
    size_t n = s->len - s->pos;
    if (n > cap)
        n = cap;
    if (s->piece && n > s->piece)
        n = s->piece;
    if (s->fail_at >= 0 && s->pos + n > (size_t)s->fail_at)
        n = (size_t)s->fail_at - s->pos;
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    return (int64_t)n;
}

static void test_stream_large(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "before", "x");
    size_t n = 3 * 1024 * 1024 + 12345;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 4242);
    src s = {v, n, 0, 70001, -1, 0};
    uint64_t tail = 0;
    assert_int_equal(simdr_put_stream(f->s, TU_STR("big"), src_read, &s, &tail), SIMDR_OK);
    assert_int_equal(tail, simdr_file_size(f->s));
    assert_int_equal(tu_file_size(f->path), (int64_t)tail);
    tu_expect_value(f->s, TU_STR("big"), v, n);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("big"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_checksum(e), tu_crc32(v, n));
    assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
    assert_int_equal(simdr_entry_offset(e) % 64, 0);
    assert_int_equal(simdr_entry_end(e), tail);
    simdr_entry_release(e);
    /* the next write chains correctly */
    tu_put_str(f->s, "after", "y");
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_value(f->s, TU_STR("big"), v, n);
    tu_expect_str(f->s, "before", "x");
    tu_expect_str(f->s, "after", "y");
    assert_int_equal(simdr_count(f->s), 3);
    /* by hash */
    s.pos = 0;
    uint64_t h = simdr_hash_key(TU_STR("big2"));
    assert_int_equal(simdr_put_stream_hashed(f->s, h, src_read, &s, NULL), SIMDR_OK);
    tu_expect_value(f->s, TU_STR("big2"), v, n);
    free(v);
}

typedef struct writer_arg {
    int fd;
    const uint8_t *data;
    size_t len;
    size_t chunk;         /* bytes a write (0: 5,000) */
    unsigned pause_us;    /* before each write: a reader finds the pipe empty between them */
} writer_arg;

static void *pipe_writer(void *p) {
    writer_arg *a = p;
    size_t step = a->chunk ? a->chunk : 5000, off = 0;
    while (off < a->len) {
        if (a->pause_us) usleep(a->pause_us);
        size_t chunk = a->len - off < step ? a->len - off : step;
        ssize_t r = write(a->fd, a->data + off, chunk);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    close(a->fd);
    return NULL;
}

/* A descriptor in non-blocking mode (a socket or a pipe its creator set
 * so): a read that finds no data yet fails with EAGAIN, which the stream
 * took for a failed input (SIMDR_ESOURCE, nothing stored). It waits for
 * data instead. */
static void test_put_fd_nonblocking_pipe(void **state) {
    tu_fixture *f = *state;
    size_t n = 300000;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 7);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK), 0);
    writer_arg a = {p[1], v, n, 100000, 20000}; /* fed slowly */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pipe_writer, &a), 0);
    int rc = simdr_put_fd(f->s, TU_STR("nonblocking"), p[0], NULL);
    /* Closed before the join: a writer blocked on a full pipe nobody reads
     * (the call gave up early) then fails (EPIPE, SIGPIPE ignored). */
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
    close(p[0]);
    pthread_join(t, NULL);
    signal(SIGPIPE, old_pipe);
    if (rc != SIMDR_OK) fail_msg("simdr_put_fd: %d %s", rc, simdr_last_error());
    tu_expect_value(f->s, TU_STR("nonblocking"), v, n);
    free(v);
}

static void test_put_fd_pipe(void **state) {
    tu_fixture *f = *state;
    size_t n = 1024 * 1024 + 7;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 99);
    int p[2];
    assert_int_equal(pipe(p), 0);
    writer_arg a = {p[1], v, n, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pipe_writer, &a), 0);
    uint64_t tail = 0;
    assert_int_equal(simdr_put_fd(f->s, TU_STR("piped"), p[0], &tail), SIMDR_OK);
    pthread_join(t, NULL);
    close(p[0]);
    assert_int_equal(tail, simdr_file_size(f->s));
    tu_expect_value(f->s, TU_STR("piped"), v, n);
    /* an empty pipe is an empty value: refused, nothing appended */
    uint64_t size = simdr_file_size(f->s);
    assert_int_equal(pipe(p), 0);
    close(p[1]);
    assert_int_equal(simdr_put_fd(f->s, TU_STR("empty"), p[0], NULL), SIMDR_EINVAL);
    close(p[0]);
    /* a pipe of zero bytes only: refused */
    uint8_t *z = calloc(1, 100000);
    assert_int_equal(pipe(p), 0);
    writer_arg za = {p[1], z, 100000, 0, 0};
    assert_int_equal(pthread_create(&t, NULL, pipe_writer, &za), 0);
    assert_int_equal(simdr_put_fd(f->s, TU_STR("zeros"), p[0], NULL), SIMDR_EINVAL);
    close(p[0]);
    pthread_join(t, NULL);
    free(z);
    /* a bad descriptor */
    assert_true(simdr_put_fd(f->s, TU_STR("bad"), -1, NULL) < 0);
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    tu_expect_absent(f->s, TU_STR("empty"));
    tu_expect_absent(f->s, TU_STR("zeros"));
    tu_expect_absent(f->s, TU_STR("bad"));
    free(v);
}

static void check_unchanged(tu_fixture *f, uint64_t size, uint64_t count, const uint8_t *sha) {
    uint8_t now[32];
    assert_int_equal(simdr_file_size(f->s), size);
    assert_int_equal(tu_file_size(f->path), (int64_t)size);
    assert_int_equal(simdr_count(f->s), count);
    tu_sha256_file(f->path, now);
    assert_memory_equal(now, sha, 32);
}

static void test_stream_source_fails_midway(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "victim", "old value");
    uint64_t size = simdr_file_size(f->s);
    uint8_t sha[32];
    tu_sha256_file(f->path, sha);
    size_t n = 500000;
    uint8_t *v = malloc(n);
    tu_fill(v, n, 5);
    int64_t fail_points[] = {0, 1, 65536, 200001, (int64_t)n - 1};
    for (size_t i = 0; i < sizeof fail_points / sizeof fail_points[0]; i++) {
        src s = {v, n, 0, 8192, fail_points[i], 0};
        uint64_t tail = 777;
        assert_int_equal(simdr_put_stream(f->s, TU_STR("victim"), src_read, &s, &tail),
                         SIMDR_ESOURCE);
        check_unchanged(f, size, 1, sha);
        tu_expect_str(f->s, "victim", "old value");
        s.pos = 0;
        assert_int_equal(simdr_put_stream(f->s, TU_STR("newkey"), src_read, &s, NULL),
                         SIMDR_ESOURCE);
        check_unchanged(f, size, 1, sha);
        tu_expect_absent(f->s, TU_STR("newkey"));
    }
    /* the next write lands at the old tail and everything reopens */
    uint64_t tail = 0;
    assert_int_equal(simdr_put(f->s, TU_STR("next"), TU_STR("value"), &tail), SIMDR_OK);
    simdr_entry *e = NULL;
    assert_int_equal(simdr_get(f->s, TU_STR("next"), &e), SIMDR_OK);
    assert_int_equal(simdr_entry_start(e), size);
    simdr_entry_release(e);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    simdr_recovery_info ri;
    assert_int_equal(simdr_recovery(f->s, &ri), SIMDR_OK);
    assert_int_equal(ri.bytes_cut, 0);
    tu_expect_str(f->s, "victim", "old value");
    tu_expect_str(f->s, "next", "value");
    assert_int_equal(simdr_count(f->s), 2);
    free(v);
}

static void test_stream_empty_and_zero_refused(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "k", "v");
    uint64_t size = simdr_file_size(f->s);
    uint8_t sha[32];
    tu_sha256_file(f->path, sha);
    src empty = {(const uint8_t *)"", 0, 0, 0, -1, 0};
    assert_int_equal(simdr_put_stream(f->s, TU_STR("e"), src_read, &empty, NULL), SIMDR_EINVAL);
    check_unchanged(f, size, 1, sha);
    uint8_t *z = calloc(1, 200000);
    size_t zlens[] = {1, 2, 64, 65536, 200000};
    for (size_t i = 0; i < sizeof zlens / sizeof zlens[0]; i++) {
        src s = {z, zlens[i], 0, 4096, -1, 0};
        assert_int_equal(simdr_put_stream(f->s, TU_STR("z"), src_read, &s, NULL), SIMDR_EINVAL);
        check_unchanged(f, size, 1, sha);
        s.pos = 0;
        assert_int_equal(simdr_put_stream_hashed(f->s, 42, src_read, &s, NULL), SIMDR_EINVAL);
        check_unchanged(f, size, 1, sha);
    }
    tu_expect_absent(f->s, TU_STR("z"));
    tu_expect_absent(f->s, TU_STR("e"));
    /* zeros with one non-zero byte at the very end is a value */
    z[199999] = 1;
    src s = {z, 200000, 0, 4096, -1, 0};
    assert_int_equal(simdr_put_stream(f->s, TU_STR("z"), src_read, &s, NULL), SIMDR_OK);
    tu_expect_value(f->s, TU_STR("z"), z, 200000);
    free(z);
}


/* simdr_put_fd of a descriptor on the store file itself: every chunk
 * appended makes the input longer by what was just read, so the write used
 * to run until the disk was full (then SIMDR_ENOSPC). It is refused at once,
 * the store unchanged; a descriptor on the file a compaction has replaced
 * is an ordinary finite input. The store runs under a 16 MiB file size
 * limit so that a regression fails the test instead of filling the disk. */
static void test_put_fd_of_the_store_file_refused(void **state) {
    tu_fixture *f = *state;
    struct rlimit old_limit, limit;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    limit = old_limit;
    limit.rlim_cur = 16u << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    char link_path[sizeof f->path + 8];
    snprintf(link_path, sizeof link_path, "%s.link", f->path);
    for (int mapped = 0; mapped <= 1; mapped++) {
        assert_int_equal(simdr_close(f->s), SIMDR_OK);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
        assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK); /* reads the limit */
        size_t n = 300000;
        uint8_t *v = malloc(n);
        tu_fill(v, n, 1234 + (uint64_t)mapped);
        assert_int_equal(simdr_put(f->s, TU_STR("big"), v, n, NULL), SIMDR_OK);
        tu_put_str(f->s, "small", "value");
        assert_int_equal(simdr_sync(f->s), SIMDR_OK); /* mapped: the file ends at the tail */
        uint64_t size = simdr_file_size(f->s), count = simdr_count(f->s);
        uint8_t sha[32];
        tu_sha256_file(f->path, sha);
        unlink(link_path);
        assert_int_equal(link(f->path, link_path), 0);
        const char *paths[] = {f->path, link_path};
        for (size_t i = 0; i < 2; i++) {
            int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
            assert_true(fd >= 0);
            assert_int_equal(simdr_put_fd(f->s, TU_STR("self"), fd, NULL), SIMDR_EINVAL);
            assert_non_null(strstr(simdr_last_error(), "store file itself"));
            close(fd);
            check_unchanged(f, size, count, sha);
            tu_expect_absent(f->s, TU_STR("self"));
        }
        unlink(link_path);
        /* The file a compaction replaced is finite: stored as it was. */
        size_t old_len = 0;
        uint8_t *old_bytes = tu_read_file(f->path, &old_len);
        assert_non_null(old_bytes);
        int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(simdr_compact(f->s), SIMDR_OK);
        assert_int_equal(simdr_put_fd(f->s, TU_STR("old file"), fd, NULL), SIMDR_OK);
        close(fd);
        tu_expect_value(f->s, TU_STR("old file"), old_bytes, old_len);
        tu_expect_value(f->s, TU_STR("big"), v, n);
        tu_expect_str(f->s, "small", "value");
        assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
        free(old_bytes);
        free(v);
    }
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
    signal(SIGXFSZ, old_xfsz);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        TU_TEST(test_stream_large),
        TU_TEST(test_put_fd_pipe),
        TU_TEST(test_put_fd_nonblocking_pipe),
        TU_TEST(test_stream_source_fails_midway),
        TU_TEST(test_stream_empty_and_zero_refused),
        TU_TEST(test_put_fd_of_the_store_file_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
