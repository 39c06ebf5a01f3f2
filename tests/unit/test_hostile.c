/*
 * test_hostile.c - payloads crafted to look like metadata, and the other ways
 * the end of a store could be guessed wrong: recovery after a kill in the
 * middle of such a payload, refreshing readers in another process, a crash
 * during the first write into a new store, refreshes that fail and readers
 * whose file is cut under them, and integrity checks of a store that is being
 * appended to. The writer's committed tail lives in the side file
 * "<store>.simdr"; these tests show that no payload content can move it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

typedef struct fixture {
    char *dir;
    char path[4096];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_mkdtemp();
    tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

#define FAKE_KEY "nobody-wrote-this"
#define PREFIX_LEN 100u

/* The first bytes of a hostile value streamed at tail into a store of the
 * given layout: PREFIX_LEN bytes, then 20 bytes that are valid metadata of
 * an entry [tail, here) of key FAKE_KEY: prev_offset = tail and the CRC of
 * the payload before them. */
static void hostile_prefix(uint8_t out[PREFIX_LEN + 20], uint64_t tail) {
    memset(out, 'A', PREFIX_LEN);
    uint64_t h = simdr_hash_key(FAKE_KEY, strlen(FAKE_KEY));
    tu_put_le64(out + PREFIX_LEN, h);
    tu_put_le64(out + PREFIX_LEN + 8, tail);
    uint32_t crc = tu_crc32(out, PREFIX_LEN);
    for (int i = 0; i < 4; i++) out[PREFIX_LEN + 16 + i] = (uint8_t)(crc >> (8 * i));
}

static int fake_key_present(simdr_store *s) {
    return simdr_exists(s, FAKE_KEY, strlen(FAKE_KEY));
}

/* ---- a refreshing reader while a hostile value is streamed ---- */

typedef struct stream_ctx {
    uint64_t tail;      /* where the value starts (its entry's prev_offset) */
    int calls;
    simdr_store *reader; /* refreshed between chunks */
    int fake_seen;
    uint64_t cut_seen;  /* a read-only open between chunks: its bytes_cut */
    int check_rc;       /* ... and its simdr_check */
    const char *path;
    simdr_store *writer; /* checked between chunks */
    int writer_check_rc;
} stream_ctx;

static int64_t hostile_source(void *ctx, void *buf, size_t cap) {
    stream_ctx *c = ctx;
    assert_true(cap >= PREFIX_LEN + 20);
    switch (c->calls++) {
    case 0:
        hostile_prefix(buf, c->tail);
        return PREFIX_LEN + 20;
    case 1:
        /* The file now ends with metadata of the store's tail entry. */
        if (c->reader) {
            assert_int_equal(simdr_refresh(c->reader, NULL), SIMDR_OK);
            if (fake_key_present(c->reader)) c->fake_seen = 1;
        }
        if (c->path) {
            simdr_store *ro = tu_open(c->path, SIMDR_OPEN_READONLY, 0);
            simdr_recovery_info ri;
            assert_int_equal(simdr_recovery(ro, &ri), SIMDR_OK);
            c->cut_seen = ri.bytes_cut;
            if (fake_key_present(ro)) c->fake_seen = 1;
            c->check_rc = simdr_check(ro, NULL, NULL, NULL);
            simdr_close(ro);
        }
        if (c->writer) c->writer_check_rc = simdr_check(c->writer, NULL, NULL, NULL);
        memset(buf, 'B', 64);
        return 64;
    default:
        return 0;
    }
}

/* ---- a refresh that fails once must not stop later ones ---- */

static void test_refresh_retries_after_failed_reload(void **state) {
    fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "old", "file");
    simdr_close(w);
    simdr_store *r = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(r, "old", "file");
    /* A new file replaces the store, at first not readable as one ... */
    char next[4200];
    snprintf(next, sizeof next, "%s.next", f->path);
    const char junk[] = "not yet a store: being written";
    tu_write_file(next, junk, sizeof junk - 1);
    assert_int_equal(rename(next, f->path), 0);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_ENOTSTORE);
    /* ... the failed refresh changed nothing ... */
    tu_expect_str(r, "old", "file");
    assert_int_equal(simdr_count(r), 1);
    /* ... and once that same file holds a store, a refresh switches to it. */
    char built[4200];
    snprintf(built, sizeof built, "%s.built", f->path);
    w = tu_open(built, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "new", "file");
    tu_put_str(w, "second", "key");
    simdr_close(w);
    size_t len;
    uint8_t *bytes = tu_read_file(built, &len);
    int fd = open(f->path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    free(bytes);
    assert_int_equal(simdr_refresh(r, NULL), SIMDR_OK);
    tu_expect_str(r, "new", "file");
    tu_expect_str(r, "second", "key");
    assert_int_equal(simdr_exists(r, "old", 3), 0);
    simdr_close(r);
}

/* ---- readers whose file is cut under them (no SIGBUS) ---- */

typedef struct failing_src {
    int left;
} failing_src;

static int64_t failing_source(void *ctx, void *buf, size_t cap) {
    failing_src *src = ctx;
    if (src->left-- <= 0) return -1; /* the write fails: its bytes are cut */
    size_t n = cap < 256 * 1024 ? cap : 256 * 1024;
    memset(buf, 0x5a, n);
    return (int64_t)n;
}

/* Child: a writer that appends, makes writes fail (the library cuts their
 * bytes again), and restarts with a torn tail that its next open cuts. */
static void cutting_writer(const char *path, int rounds) {
    for (int round = 0; round < rounds; round++) {
        simdr_store *s;
        if (simdr_open(&s, path, NULL) != SIMDR_OK) _exit(1);
        for (int i = 0; i < 8; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-%d", round, i);
            if (simdr_put(s, k, strlen(k), "value", 5, NULL) != SIMDR_OK) _exit(2);
            failing_src src = {1 + i % 4};
            if (simdr_put_stream(s, "fails", 5, failing_source, &src, NULL) != SIMDR_ESOURCE)
                _exit(3);
        }
        simdr_close(s);
        /* a torn append, as a killed writer leaves it */
        int fd = open(path, O_WRONLY | O_APPEND);
        static uint8_t torn[300000];
        memset(torn, 0x11, sizeof torn);
        if (fd < 0 || write(fd, torn, sizeof torn) != (ssize_t)sizeof torn) _exit(4);
        close(fd);
    }
    _exit(0);
}

/* Child: opens the store read-only, says so on ready, then refreshes and
 * reads until done reaches end of file; exits 0. */
static void refreshing_reader(const char *path, int ready, int done) {
    simdr_store *r = NULL;
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    if (simdr_open(&r, path, &o) != SIMDR_OK) _exit(6);
    char one = 1;
    if (write(ready, &one, 1) != 1) _exit(7);
    for (;;) {
        int rc = simdr_refresh(r, NULL);
        if (rc != SIMDR_OK) {
            fprintf(stderr, "refresh: %s\n", simdr_last_error());
            _exit(5);
        }
        char v[16];
        size_t n;
        simdr_get_copy(r, "r0-0", 4, v, sizeof v, &n);
        simdr_entry *e = NULL;
        if (simdr_get_last(r, &e) == SIMDR_OK) simdr_entry_release(e);
        struct pollfd p = {done, POLLIN, 0};
        if (poll(&p, 1, 0) == 1) break;
    }
    simdr_close(r);
    _exit(0);
}

static void test_reader_survives_writer_cutting(void **state) {
    fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "seed", "value");
    simdr_close(s);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    fflush(NULL);
    pid_t readers[2];
    for (int i = 0; i < 2; i++) {
        readers[i] = fork();
        assert_true(readers[i] >= 0);
        if (readers[i] == 0) {
            close(done[1]);
            close(ready[0]);
            refreshing_reader(f->path, ready[1], done[0]);
        }
    }
    close(ready[1]);
    close(done[0]);
    char two[2];
    assert_int_equal(read(ready[0], two, 1), 1);
    assert_int_equal(read(ready[0], two + 1, 1), 1);
    pid_t writer = fork();
    assert_true(writer >= 0);
    if (writer == 0) cutting_writer(f->path, 40);
    int st;
    assert_int_equal(waitpid(writer, &st, 0), writer);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(done[1]); /* the readers stop */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(waitpid(readers[i], &st, 0), readers[i]);
        if (WIFSIGNALED(st)) fprintf(stderr, "reader died of signal %d\n", WTERMSIG(st));
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    close(ready[0]);
}

/* ---- integrity checks of a store being appended to ---- */

typedef struct appender {
    simdr_store *s;
    atomic_int stop;
    atomic_int n;
    atomic_int failed;
} appender;

static void *append_loop(void *arg) {
    appender *a = arg;
    uint8_t v[3000];
    memset(v, 'v', sizeof v);
    while (!atomic_load(&a->stop)) {
        char k[32];
        snprintf(k, sizeof k, "live%d", a->n % 500);
        if (simdr_put(a->s, k, strlen(k), v, 1 + (size_t)(a->n % 2999), NULL) != SIMDR_OK)
            atomic_store(&a->failed, 1);
        atomic_fetch_add(&a->n, 1);
    }
    return NULL;
}

static void test_check_of_live_store_is_clean(void **state) {
    fixture *f = *state;
    simdr_store *s = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, "first", "entry");
    appender a = {s, 0, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, append_loop, &a), 0);
    int checks = 0;
    while (checks < 200 || a.n < 50) {
        simdr_check_report rep;
        assert_int_equal(simdr_check(s, NULL, NULL, &rep), SIMDR_OK);
        assert_int_equal(rep.bad_entries, 0);
        checks++;
    }
    atomic_store(&a.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&a.failed), 0);
    simdr_close(s);
}

/* A live writer's bytes in flight are not damage to a check of its own
 * handle (the tail was taken, then the file's size found more bytes). */
static void test_check_during_own_stream_is_clean(void **state) {
    fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "k", "v");
    stream_ctx c = {simdr_file_size(w), 0, NULL, 0, 0, 0, NULL, w, 99};
    assert_int_equal(simdr_put_stream(w, "big", 3, hostile_source, &c, NULL), SIMDR_OK);
    assert_int_equal(c.writer_check_rc, SIMDR_OK);
    simdr_close(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refresh_retries_after_failed_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_survives_writer_cutting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_of_live_store_is_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_during_own_stream_is_clean, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
