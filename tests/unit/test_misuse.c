/*
 * test_misuse.c - unit tests of libsimdr used in ways that once lost data,
 * hung or killed the process: a handle written through in a forked child,
 * opens of a FIFO or a directory, a write crossing the process's file-size
 * limit (RLIMIT_FSIZE, default SIGXFSZ), and a stream source that calls
 * back into the store it feeds.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- use after fork ---- */

static int64_t one_chunk(void *ctx, void *buf, size_t cap) {
    int *done = ctx;
    if (*done || cap < 5) return 0;
    *done = 1;
    memcpy(buf, "chunk", 5);
    return 5;
}

/* The child's checks; returns the number of failed expectations, each
 * named on stderr. */
static int expect_rc(const char *what, int got, int want) {
    if (got == want) return 0;
    fprintf(stderr, "child: %s returned %d, want %d (%s)\n", what, got, want,
            simdr_last_error());
    return 1;
}

static int child_checks(simdr_store *s) {
    int bad = expect_rc("put", simdr_put(s, TU_STR("child"), "c", 1, NULL), SIMDR_EINVAL);
    if (!strstr(simdr_last_error(), "forked child")) {
        fprintf(stderr, "child: message \"%s\" does not say why\n", simdr_last_error());
        bad++;
    }
    bad += expect_rc("delete", simdr_delete(s, TU_STR("a"), NULL), SIMDR_EINVAL);
    simdr_kv kv = {"k", 1, "v", 1};
    bad += expect_rc("put_batch", simdr_put_batch(s, &kv, 1, NULL), SIMDR_EINVAL);
    int done = 0;
    bad += expect_rc("put_stream", simdr_put_stream(s, TU_STR("st"), one_chunk, &done, NULL),
                     SIMDR_EINVAL);
    bad += expect_rc("sync", simdr_sync(s), SIMDR_EINVAL);
    bad += expect_rc("compact", simdr_compact(s), SIMDR_EINVAL);
    /* Reads still work: the map and the index came with the fork. */
    char buf[8];
    size_t n = 0;
    bad += expect_rc("get_copy", simdr_get_copy(s, TU_STR("a"), buf, sizeof buf, &n), SIMDR_OK);
    bad += expect_rc("value", n == 1 && buf[0] == '1', 1);
    bad += expect_rc("close", simdr_close(s), SIMDR_OK);
    return bad;
}

static void test_forked_child_cannot_write(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    int64_t size = tu_file_size(f->path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child_checks(f->s) ? 1 : 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The child appended nothing and the parent goes on. */
    assert_int_equal(tu_file_size(f->path), size);
    tu_put_str(f->s, "b", "2");
    assert_int_equal(simdr_sync(f->s), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "a", "1");
    tu_expect_str(f->s, "b", "2");
    tu_expect_absent(f->s, TU_STR("child"));
    assert_int_equal(simdr_count(f->s), 2);
}

/* A source that holds the writer lock (a stream in progress) until told to
 * end: a thread of the parent inside a write when the process forks. */
typedef struct held_stream {
    int started[2], finish[2]; /* pipes: the source says it runs, the test lets it end */
    simdr_store *s;
    int rc; /* the source's calls so far, then the stream's result */
} held_stream;

static int64_t held_source(void *ctx, void *buf, size_t cap) {
    held_stream *h = ctx;
    char c;
    if (h->rc++) return 0; /* the value is the one byte of the first call */
    if (cap < 1 || write(h->started[1], "s", 1) != 1 || read(h->finish[0], &c, 1) != 1) return -1;
    memset(buf, 'h', 1);
    return 1;
}

static void *held_writer(void *arg) {
    held_stream *h = arg;
    h->rc = simdr_put_stream(h->s, TU_STR("held"), held_source, h, NULL);
    return NULL;
}

/* What a child that inherited s (and r, read-only) does while a thread of
 * the parent held s's writer lock at the fork; a call that waits for that
 * lock never returns (the watchdog's alarm ends the child). */
static int child_checks_lock_held(simdr_store *s, simdr_store *r, const char *fresh_path) {
    alarm(20);
    int bad = expect_rc("put", simdr_put(s, TU_STR("child"), "c", 1, NULL), SIMDR_EINVAL);
    simdr_kv kv = {"k", 1, "v", 1};
    bad += expect_rc("put_batch", simdr_put_batch(s, &kv, 1, NULL), SIMDR_EINVAL);
    bad += expect_rc("delete", simdr_delete(s, TU_STR("a"), NULL), SIMDR_EINVAL);
    bad += expect_rc("rename", simdr_rename(s, TU_STR("a"), TU_STR("z"), NULL), SIMDR_EINVAL);
    int done = 0;
    bad += expect_rc("put_stream", simdr_put_stream(s, TU_STR("st"), one_chunk, &done, NULL),
                     SIMDR_EINVAL);
    bad += expect_rc("sync", simdr_sync(s), SIMDR_EINVAL);
    bad += expect_rc("compact", simdr_compact(s), SIMDR_EINVAL);
    bad += expect_rc("refresh (read-only)", simdr_refresh(r, NULL), SIMDR_EINVAL);
    /* Reading calls work: the check, and a copy out of the inherited store
     * into one the child opened itself. */
    bad += expect_rc("check", simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
    simdr_store *fresh = NULL;
    bad += expect_rc("open fresh", simdr_open(&fresh, fresh_path, NULL), SIMDR_OK);
    if (fresh) {
        bad += expect_rc("copy out", simdr_copy(s, TU_STR("a"), fresh, NULL), SIMDR_OK);
        bad += expect_rc("copy in", simdr_copy(fresh, TU_STR("a"), s, NULL), SIMDR_EINVAL);
        bad += expect_rc("move out", simdr_move(s, TU_STR("a"), fresh, NULL), SIMDR_EINVAL);
        char buf[8];
        size_t n = 0;
        bad += expect_rc("copied", simdr_get_copy(fresh, TU_STR("a"), buf, sizeof buf, &n),
                         SIMDR_OK);
        bad += expect_rc("copied value", n == 1 && buf[0] == '1', 1);
        bad += expect_rc("close fresh", simdr_close(fresh), SIMDR_OK);
    }
    bad += expect_rc("close", simdr_close(s), SIMDR_OK);
    bad += expect_rc("close read-only", simdr_close(r), SIMDR_OK);
    return bad;
}

/* Every write, and simdr_check, simdr_copy and simdr_refresh, used to wait
 * for the writer lock before finding out they ran in a forked child: a
 * child forked while another thread of the parent was writing hung there
 * forever. They refuse (or read without the lock) first now. */
static void test_forked_child_does_not_wait_for_a_parent_thread(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_store *r = NULL;
    assert_int_equal(tu_open_status(&r, f->path, SIMDR_OPEN_READONLY, 0), SIMDR_OK);
    char fresh[4200];
    tu_join(fresh, sizeof fresh, f->dir, "child.bin");
    held_stream h = {.s = f->s};
    assert_int_equal(pipe(h.started), 0);
    assert_int_equal(pipe(h.finish), 0);
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, held_writer, &h), 0);
    char c;
    assert_int_equal(read(h.started[0], &c, 1), 1); /* the source runs: the lock is held */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child_checks_lock_held(f->s, r, fresh) ? 1 : 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(write(h.finish[1], "e", 1), 1);
    assert_int_equal(pthread_join(writer, NULL), 0);
    if (!WIFEXITED(status))
        fail_msg("the child hung (signal %d)", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(h.rc, SIMDR_OK);
    for (int i = 0; i < 2; i++) {
        close(h.started[i]);
        close(h.finish[i]);
    }
    tu_expect_str(f->s, "held", "h");
    tu_expect_str(f->s, "a", "1");
    tu_expect_absent(f->s, TU_STR("child"));
    assert_int_equal(simdr_close(r), SIMDR_OK);
}

/* The side file's "closed" word (docs/FORMAT.md: bytes 48..56): 0 while a
 * writer has the store open. */
static uint64_t side_closed_word(const char *store_path) {
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", store_path);
    uint8_t w[8];
    int fd = open(side, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, w, sizeof w, 48), (ssize_t)sizeof w);
    close(fd);
    return tu_get_le64(w);
}

/* A forked child closing the handle it inherited frees it and touches
 * nothing of the parent's. It used to mark the side file's page, which the
 * child shares with the parent (MAP_SHARED), as cleanly closed at the
 * child's stale tail while the parent went on writing: a read-only open in
 * another process then took the page for a closed store whose file had
 * grown since, and with mapped appends (zeros after the tail) its refreshes
 * never saw the parent's later writes; a crash of the parent lost the side
 * file's vouching (full recovery). */
static void test_forked_child_close_leaves_the_side_file_alone(void **state) {
    tu_fixture *f = *state;
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = SIMDR_APPEND_MAPPED;
    assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
    tu_put_str(f->s, "a", "1");
    assert_int_equal(side_closed_word(f->path), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(simdr_close(f->s) == SIMDR_OK ? 0 : 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(side_closed_word(f->path), 0);
    simdr_store *r = NULL;
    assert_int_equal(tu_open_status(&r, f->path, SIMDR_OPEN_READONLY, 0), SIMDR_OK);
    tu_expect_str(r, "a", "1");
    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof k, "after-%d", i);
        tu_put_str(f->s, k, "2");
        uint64_t added = 0;
        assert_int_equal(simdr_refresh(r, &added), SIMDR_OK);
        assert_int_equal(added, 1);
        tu_expect_str(r, k, "2");
    }
    assert_int_equal(simdr_close(r), SIMDR_OK);
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    assert_true(side_closed_word(f->path) != 0); /* the parent's own close marks it */
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(f->s), 4);
}

/* A child forked while the store was open (a worker process) holds copies
 * of the store's descriptors, and a lock belongs to the open file
 * description, not to a process: the parent's simdr_close used to leave the
 * store locked for as long as the child lived, so the parent could not open
 * it again (SIMDR_ELOCKED), nor could any other process. The child keeps
 * reading through its handle. Both append modes. */
static void test_parent_reopens_while_forked_child_lives(void **state) {
    tu_fixture *f = *state;
    for (int mapped = 0; mapped <= 1; mapped++) {
        assert_int_equal(simdr_close(f->s), SIMDR_OK);
        simdr_options o;
        simdr_options_init(&o);
        o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
        assert_int_equal(simdr_open(&f->s, f->path, &o), SIMDR_OK);
        tu_put_str(f->s, "a", "1");
        int go[2], done[2];
        assert_int_equal(pipe(go), 0);
        assert_int_equal(pipe(done), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* Waits until the parent has closed and reopened, then reads
             * through the handle it inherited. */
            close(go[1]);
            close(done[0]);
            char c;
            int bad = read(go[0], &c, 1) != 1;
            char buf[8];
            size_t n = 0;
            bad |= simdr_get_copy(f->s, TU_STR("a"), buf, sizeof buf, &n) != SIMDR_OK || n != 1 ||
                   buf[0] != '1';
            bad |= simdr_check(f->s, NULL, NULL, NULL) != SIMDR_OK;
            bad |= simdr_close(f->s) != SIMDR_OK;
            bad |= write(done[1], "x", 1) != 1;
            _exit(bad);
        }
        close(go[0]);
        close(done[1]);
        assert_int_equal(simdr_close(f->s), SIMDR_OK);
        int rc = simdr_open(&f->s, f->path, &o);
        if (rc != SIMDR_OK) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("mapped %d: reopen while the forked child lives: %d (%s)", mapped, rc,
                     simdr_last_error());
        }
        tu_put_str(f->s, "b", "2");
        assert_int_equal(write(go[1], "x", 1), 1);
        char c;
        assert_int_equal(read(done[0], &c, 1), 1);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        close(go[1]);
        close(done[0]);
        tu_expect_str(f->s, "a", "1");
        tu_expect_str(f->s, "b", "2");
        assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
        assert_int_equal(side_closed_word(f->path), 0);
    }
}

/* A writer killed while a child it forked (a worker) lives on: the store's
 * lock used to stay with the child's copies of the writer's descriptors
 * and maps, so no process could open the store for writing until the child
 * exited. The child lets go of them at the fork. */
static void test_writer_killed_while_forked_child_lives(void **state) {
    tu_fixture *f = *state;
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    for (int mapped = 0; mapped <= 1; mapped++) {
        int ready[2], release[2];
        assert_int_equal(pipe(ready), 0);
        assert_int_equal(pipe(release), 0);
        pid_t writer = fork();
        assert_true(writer >= 0);
        if (writer == 0) {
            simdr_options o;
            simdr_options_init(&o);
            o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
            simdr_store *s = NULL;
            if (simdr_open(&s, f->path, &o) != SIMDR_OK ||
                simdr_put(s, TU_STR("w"), "1", 1, NULL) != SIMDR_OK)
                _exit(1);
            pid_t worker = fork();
            if (worker == 0) {
                /* Lives until told; reads through the handle it inherited. */
                char c;
                size_t n = 0;
                char buf[4];
                int bad = simdr_get_copy(s, TU_STR("w"), buf, sizeof buf, &n) != SIMDR_OK;
                bad |= write(ready[1], bad ? "b" : "r", 1) != 1;
                bad |= read(release[0], &c, 1) != 1;
                _exit(bad);
            }
            if (worker < 0) _exit(1);
            for (;;) pause(); /* killed here, the store open */
        }
        char c;
        assert_int_equal(read(ready[0], &c, 1), 1); /* the worker runs: forked */
        assert_int_equal(c, 'r');
        kill(writer, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(writer, &status, 0), writer);
        simdr_store *s = NULL;
        int rc = tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0);
        /* The worker (now the init process's child) goes either way. */
        assert_int_equal(write(release[1], "x", 1), 1);
        if (rc != SIMDR_OK)
            fail_msg("mapped %d: open after the writer was killed, its worker alive: %d (%s)",
                     mapped, rc, simdr_last_error());
        tu_expect_str(s, "w", "1");
        tu_put_str(s, "after", "2");
        assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
        assert_int_equal(simdr_close(s), SIMDR_OK);
        for (int i = 0; i < 2; i++) {
            close(ready[i]);
            close(release[i]);
        }
    }
}

static void test_child_may_open_its_own_handle(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    assert_int_equal(simdr_close(f->s), SIMDR_OK);
    f->s = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        simdr_store *s = NULL;
        int ok = tu_open_status(&s, f->path, SIMDR_OPEN_EXISTING, 0) == SIMDR_OK &&
                 simdr_put(s, TU_STR("child"), "c", 1, NULL) == SIMDR_OK &&
                 simdr_close(s) == SIMDR_OK;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "child", "c");
}

/* ---- hangs and kills, each run in a child under a watchdog ---- */

/* Runs fn(arg) in a child; returns its exit status, or fails the test when
 * the child hangs (no answer in 30 s, a watchdog, not a timing check) or
 * dies of a signal. */
static int in_child(int (*fn)(void *), void *arg, const char *what) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fn(arg));
    int status = 0;
    for (int waited_ms = 0;; waited_ms += 10) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        assert_true(got >= 0);
        if (got == pid) break;
        if (waited_ms >= 30000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("%s: hung (killed after 30 s)", what);
        }
        usleep(10000);
    }
    if (WIFSIGNALED(status)) fail_msg("%s: killed by signal %d", what, WTERMSIG(status));
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int open_readonly(void *arg) {
    simdr_store *s = NULL;
    int rc = tu_open_status(&s, arg, SIMDR_OPEN_READONLY, 0);
    if (rc == SIMDR_OK) simdr_close(s);
    fprintf(stderr, "open: %d %s\n", rc, simdr_last_error());
    return rc == SIMDR_EINVAL && strstr(simdr_last_error(), "not a regular file") ? 0 : 1;
}

static void test_fifo_is_refused_not_waited_on(void **state) {
    tu_fixture *f = *state;
    char fifo[4200];
    tu_join(fifo, sizeof fifo, f->dir, "pipe");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(in_child(open_readonly, fifo, "read-only open of a FIFO"), 0);
    simdr_store *s = NULL;
    assert_int_equal(tu_open_status(&s, fifo, SIMDR_OPEN_EXISTING, 0), SIMDR_EINVAL);
    assert_non_null(strstr(simdr_last_error(), "not a regular file"));
}

/* A FIFO where the store's hint file goes ("<store>.hint"): every open,
 * read-only or writable, read the hint with a blocking open and waited for
 * a writer of the FIFO forever. It is no hint: the store opens without it. */
static int open_both_ways(void *arg) {
    const char *path = arg;
    static const int modes[] = {SIMDR_OPEN_READONLY, SIMDR_OPEN_EXISTING};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        simdr_store *s = NULL;
        int rc = tu_open_status(&s, path, modes[i], 0);
        if (rc != SIMDR_OK) {
            fprintf(stderr, "open (mode %d): %d %s\n", modes[i], rc, simdr_last_error());
            return 1;
        }
        char buf[8];
        size_t n = 0;
        if (simdr_get_copy(s, "a", 1, buf, sizeof buf, &n) != SIMDR_OK || n != 1 || buf[0] != '1')
            return 2;
        simdr_close(s);
    }
    return 0;
}

static void test_fifo_as_hint_file_is_not_waited_on(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_close(f->s);
    f->s = NULL;
    char hint[4200];
    snprintf(hint, sizeof hint, "%s.hint", f->path);
    unlink(hint);
    assert_int_equal(mkfifo(hint, 0600), 0);
    assert_int_equal(in_child(open_both_ways, f->path, "opens with a FIFO as the hint file"), 0);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
}

static void test_directory_is_named_as_such(void **state) {
    tu_fixture *f = *state;
    static const int modes[] = {SIMDR_OPEN_READONLY, SIMDR_OPEN_EXISTING, SIMDR_OPEN_CREATE};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        simdr_store *s = NULL;
        assert_int_equal(tu_open_status(&s, f->dir, modes[i], 0), SIMDR_EINVAL);
        assert_null(s);
        assert_non_null(strstr(simdr_last_error(), "is a directory"));
    }
}

typedef struct limit_arg {
    const char *path;
} limit_arg;

static int64_t big_source(void *ctx, void *buf, size_t cap) {
    size_t *left = ctx;
    size_t n = *left < cap ? *left : cap;
    memset(buf, 0x5a, n);
    *left -= n;
    return (int64_t)n;
}

/* With SIGXFSZ at its default (terminate), writes that would cross the
 * limit must come back as SIMDR_ENOSPC. */
static int writes_under_fsize_limit(void *arg) {
    limit_arg *a = arg;
    signal(SIGXFSZ, SIG_DFL);
    struct rlimit rl = {.rlim_cur = 64 * 1024, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 2;
    simdr_store *s = NULL;
    if (tu_open_status(&s, a->path, SIMDR_OPEN_CREATE, 0) != SIMDR_OK) return 3;
    static uint8_t value[20000];
    memset(value, 0x33, sizeof value);
    int bad = 0, rc = SIMDR_OK, stored = 0;
    for (int i = 0; i < 10 && rc == SIMDR_OK; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        rc = simdr_put(s, key, strlen(key), value, sizeof value, NULL);
        if (rc == SIMDR_OK) stored++;
    }
    bad += rc != SIMDR_ENOSPC || stored != 3;
    simdr_kv kv[2] = {{"b1", 2, value, sizeof value}, {"b2", 2, value, sizeof value}};
    bad += simdr_put_batch(s, kv, 2, NULL) != SIMDR_ENOSPC;
    size_t left = 30000;
    bad += simdr_put_stream(s, TU_STR("st"), big_source, &left, NULL) != SIMDR_ENOSPC;
    /* What fits still goes in; what was stored is intact. */
    bad += simdr_put(s, TU_STR("small"), "x", 1, NULL) != SIMDR_OK;
    char buf[8];
    size_t n = 0;
    bad += simdr_get_copy(s, TU_STR("small"), buf, sizeof buf, &n) != SIMDR_OK || n != 1;
    bad += simdr_count(s) != 4;
    bad += simdr_close(s) != SIMDR_OK;
    return bad ? 1 : 0;
}

static void test_file_size_limit_is_enospc_not_sigxfsz(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    f->s = NULL;
    unlink(f->path);
    limit_arg a = {f->path};
    assert_int_equal(in_child(writes_under_fsize_limit, &a, "writes under RLIMIT_FSIZE"), 0);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_count(f->s), 4);
    tu_expect_str(f->s, "small", "x");
}

/* A limit below the side file's page (4 KiB): the writer's open sized that
 * page with ftruncate, which the kernel answers with SIGXFSZ when it would
 * grow a file past the limit, so simdr_open of a new store killed the
 * process. The store must open (without a side file), take what fits,
 * refuse the rest with SIMDR_ENOSPC, compact and close. */
typedef struct small_limit_arg {
    const char *path;
    rlim_t limit;
    int append_mode;
} small_limit_arg;

static int writes_under_a_limit_below_a_page(void *arg) {
    small_limit_arg *a = arg;
    signal(SIGXFSZ, SIG_DFL);
    struct rlimit rl = {.rlim_cur = a->limit, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 2;
    simdr_options o;
    simdr_options_init(&o);
    o.append_mode = a->append_mode;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, a->path, &o);
    if (rc != SIMDR_OK) {
        fprintf(stderr, "open under a %llu-byte limit: %d %s\n", (unsigned long long)a->limit, rc,
                simdr_last_error());
        return 3;
    }
    static uint8_t value[6561]; /* 3^8: more than any limit tried here */
    memset(value, 0x42, sizeof value);
    int bad = 0;
    uint64_t stored = 0;
    /* Values of 1, 3, 9, ... bytes until one does not fit. */
    for (size_t n = 1; n <= sizeof value; n *= 3) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", n);
        rc = simdr_put(s, key, strlen(key), value, n, NULL);
        if (rc != SIMDR_OK) break;
        stored++;
    }
    bad += rc != SIMDR_ENOSPC;
    bad += simdr_count(s) != stored;
    bad += simdr_file_size(s) > (uint64_t)a->limit;
    bad += simdr_compact(s) != SIMDR_OK;
    bad += simdr_count(s) != stored;
    bad += simdr_close(s) != SIMDR_OK;
    if (bad) fprintf(stderr, "limit %llu: %d checks failed (%s)\n", (unsigned long long)a->limit,
                     bad, simdr_last_error());
    return bad ? 1 : (int)(10 + stored);
}

static void test_file_size_limit_below_a_page_is_enospc_not_sigxfsz(void **state) {
    tu_fixture *f = *state;
    simdr_close(f->s);
    f->s = NULL;
    const rlim_t limits[] = {0, 100, 2048, 4095, 4096, 5000};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        for (int mode = SIMDR_APPEND_WRITE; mode <= SIMDR_APPEND_MAPPED; mode++) {
            char side[4200];
            snprintf(side, sizeof side, "%s.simdr", f->path);
            unlink(f->path);
            unlink(side);
            small_limit_arg a = {f->path, limits[i], mode};
            char what[96];
            snprintf(what, sizeof what, "a new store under a %llu-byte RLIMIT_FSIZE, append mode %d",
                     (unsigned long long)limits[i], mode);
            int rc = in_child(writes_under_a_limit_below_a_page, &a, what);
            if (rc < 10) fail_msg("%s: exit status %d", what, rc);
            /* Every value that was acknowledged is there after a reopen. */
            f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
            assert_int_equal(simdr_count(f->s), (uint64_t)(rc - 10));
            assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
            simdr_close(f->s);
            f->s = NULL;
        }
    }
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
}

typedef struct reentry_ctx {
    simdr_store *s, *other;
    int calls;
    int put_rc, delete_rc, sync_rc, compact_rc, stream_rc, get_rc;
    int rename_rc, move_rc, copy_rc, check_rc;
} reentry_ctx;

static int64_t nested_source(void *ctx, void *buf, size_t cap);

static int64_t reentrant_source(void *ctx, void *buf, size_t cap) {
    reentry_ctx *c = ctx;
    if (c->calls++) return 0;
    c->put_rc = simdr_put(c->s, TU_STR("inner"), "i", 1, NULL);
    c->delete_rc = simdr_delete(c->s, TU_STR("a"), NULL);
    c->sync_rc = simdr_sync(c->s);
    c->compact_rc = simdr_compact(c->s);
    c->stream_rc = simdr_put_stream(c->s, TU_STR("nested"), nested_source, NULL, NULL);
    char tmp[8];
    size_t n = 0;
    c->get_rc = simdr_get_copy(c->s, TU_STR("a"), tmp, sizeof tmp, &n);
    /* Writes to the fed store through rename and move are refused too; reads
     * of it (a check, a copy out of it into another store) work. */
    c->rename_rc = simdr_rename(c->s, TU_STR("a"), TU_STR("b"), NULL);
    c->move_rc = simdr_move(c->s, TU_STR("a"), c->other, NULL);
    c->copy_rc = simdr_copy(c->s, TU_STR("a"), c->other, NULL);
    c->check_rc = simdr_check(c->s, NULL, NULL, NULL);
    (void)cap;
    memcpy(buf, "outer", 5);
    return 5;
}

static int64_t nested_source(void *ctx, void *buf, size_t cap) {
    (void)ctx;
    (void)buf;
    (void)cap;
    return 0;
}

static int stream_calls_back(simdr_store *s) {
    char other_path[4200];
    snprintf(other_path, sizeof other_path, "%s.other", simdr_path(s));
    unlink(other_path);
    reentry_ctx c = {s, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (tu_open_status(&c.other, other_path, SIMDR_OPEN_CREATE, 0) != SIMDR_OK) return 4;
    int rc = simdr_put_stream(s, TU_STR("outer"), reentrant_source, &c, NULL);
    int bad = rc != SIMDR_OK;
    bad += c.put_rc != SIMDR_EINVAL || c.delete_rc != SIMDR_EINVAL ||
           c.sync_rc != SIMDR_EINVAL || c.compact_rc != SIMDR_EINVAL ||
           c.stream_rc != SIMDR_EINVAL || c.rename_rc != SIMDR_EINVAL ||
           c.move_rc != SIMDR_EINVAL;
    bad += c.get_rc != SIMDR_OK || c.copy_rc != SIMDR_OK || c.check_rc != SIMDR_OK;
    bad += simdr_close(c.other) != SIMDR_OK;
    /* Outside the source the same calls work again. */
    bad += simdr_put(s, TU_STR("after"), "y", 1, NULL) != SIMDR_OK;
    if (bad)
        fprintf(stderr,
                "stream %d (%s) put %d delete %d sync %d compact %d nested %d get %d rename %d "
                "move %d copy %d check %d\n",
                rc, simdr_last_error(), c.put_rc, c.delete_rc, c.sync_rc, c.compact_rc,
                c.stream_rc, c.get_rc, c.rename_rc, c.move_rc, c.copy_rc, c.check_rc);
    return bad ? 1 : 0;
}

/* A source feeding A streams into B, and B's source calls back into A:
 * A's writer lock is held two frames up, so writes to A (and to B) are
 * refused, and reads and a check of A work, instead of waiting forever. */
typedef struct nested_ctx {
    simdr_store *a, *b;
    int calls, inner_calls;
    int inner_stream_rc, put_a_rc, put_b_rc, sync_a_rc, check_a_rc, get_a_rc;
} nested_ctx;

static int64_t inner_source(void *ctx, void *buf, size_t cap) {
    nested_ctx *c = ctx;
    (void)cap;
    if (c->inner_calls++) return 0;
    c->put_a_rc = simdr_put(c->a, TU_STR("from-inner"), "i", 1, NULL);
    c->put_b_rc = simdr_put(c->b, TU_STR("from-inner"), "i", 1, NULL);
    c->sync_a_rc = simdr_sync(c->a);
    c->check_a_rc = simdr_check(c->a, NULL, NULL, NULL);
    char tmp[8];
    size_t n = 0;
    c->get_a_rc = simdr_get_copy(c->a, TU_STR("a"), tmp, sizeof tmp, &n);
    memcpy(buf, "inner", 5);
    return 5;
}

static int64_t outer_source(void *ctx, void *buf, size_t cap) {
    nested_ctx *c = ctx;
    (void)cap;
    if (c->calls++) return 0;
    c->inner_stream_rc = simdr_put_stream(c->b, TU_STR("inner"), inner_source, c, NULL);
    memcpy(buf, "outer", 5);
    return 5;
}

static int nested_streams_call_back(void *arg) {
    simdr_store *a = NULL, *b = NULL;
    char other_path[4200];
    snprintf(other_path, sizeof other_path, "%s.nested", (const char *)arg);
    unlink(other_path);
    if (tu_open_status(&a, arg, SIMDR_OPEN_EXISTING, 0) != SIMDR_OK) return 2;
    if (tu_open_status(&b, other_path, SIMDR_OPEN_CREATE, 0) != SIMDR_OK) return 2;
    nested_ctx c = {a, b, 0, 0, 0, 0, 0, 0, 0, 0};
    int rc = simdr_put_stream(a, TU_STR("outer"), outer_source, &c, NULL);
    int bad = rc != SIMDR_OK || c.inner_stream_rc != SIMDR_OK;
    bad += c.put_a_rc != SIMDR_EINVAL || c.put_b_rc != SIMDR_EINVAL ||
           c.sync_a_rc != SIMDR_EINVAL;
    bad += c.check_a_rc != SIMDR_OK || c.get_a_rc != SIMDR_OK;
    /* Once both streams are done, both stores take writes again. */
    bad += simdr_put(a, TU_STR("after"), "y", 1, NULL) != SIMDR_OK;
    bad += simdr_put(b, TU_STR("after"), "y", 1, NULL) != SIMDR_OK;
    if (bad)
        fprintf(stderr, "outer %d inner %d put a %d put b %d sync a %d check a %d get a %d\n",
                rc, c.inner_stream_rc, c.put_a_rc, c.put_b_rc, c.sync_a_rc, c.check_a_rc,
                c.get_a_rc);
    bad += simdr_close(b) != SIMDR_OK;
    bad += simdr_close(a) != SIMDR_OK;
    return bad ? 1 : 0;
}

static void test_nested_stream_sources_calling_back_are_refused(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_close(f->s);
    assert_int_equal(in_child(nested_streams_call_back, f->path,
                              "nested stream sources writing to the outer store"), 0);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(f->s, "outer", "outer");
    tu_expect_str(f->s, "after", "y");
    tu_expect_absent(f->s, TU_STR("from-inner"));
}

/* A process whose standard streams are closed: the store must not be opened
 * as descriptor 0, 1 or 2, or what the process writes to stderr lands in it. */
static int open_with_standard_streams_closed(void *arg) {
    const char *path = arg;
    close(0);
    close(1);
    close(2);
    simdr_store *s = NULL;
    simdr_options o;
    simdr_options_init(&o);
    if (simdr_open(&s, path, &o) != SIMDR_OK) return 2;
    if (simdr_put(s, TU_STR("k"), "value", 5, NULL) != SIMDR_OK) return 3;
    /* What a program writes to its closed streams. */
    static const char noise[] = "Stored 'k' (5 bytes)\n";
    for (int fd = 0; fd <= 2; fd++) (void)!write(fd, noise, sizeof noise - 1);
    if (simdr_compact(s) != SIMDR_OK) return 4; /* opens the new file too */
    if (simdr_put(s, TU_STR("after"), "x", 1, NULL) != SIMDR_OK) return 5;
    for (int fd = 0; fd <= 2; fd++) (void)!write(fd, noise, sizeof noise - 1);
    return simdr_close(s) == SIMDR_OK ? 0 : 6;
}

static void test_store_never_takes_a_standard_stream(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_close(f->s);
    f->s = NULL;
    assert_int_equal(in_child(open_with_standard_streams_closed, f->path,
                              "a store opened with stdin, stdout and stderr closed"), 0);
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(simdr_check(f->s, NULL, NULL, NULL), SIMDR_OK);
    tu_expect_str(f->s, "a", "1");
    tu_expect_str(f->s, "k", "value");
    tu_expect_str(f->s, "after", "x");
}

/* The child opens its own handle (an inherited one refuses to write). */
static int stream_calls_back_in_child(void *arg) {
    simdr_store *s = NULL;
    if (tu_open_status(&s, arg, SIMDR_OPEN_EXISTING, 0) != SIMDR_OK) return 2;
    int rc = stream_calls_back(s);
    return simdr_close(s) == SIMDR_OK ? rc : 3;
}

static void test_stream_source_calling_back_is_refused(void **state) {
    tu_fixture *f = *state;
    tu_put_str(f->s, "a", "1");
    simdr_close(f->s);
    assert_int_equal(in_child(stream_calls_back_in_child, f->path,
                              "a stream source writing to its store"), 0);
    /* In this process too, now that the child showed it does not hang. */
    f->s = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    assert_int_equal(stream_calls_back(f->s), 0);
    tu_expect_str(f->s, "outer", "outer");
    tu_expect_str(f->s, "a", "1");
    tu_expect_str(f->s, "after", "y");
    tu_expect_absent(f->s, TU_STR("inner"));
    tu_expect_absent(f->s, TU_STR("nested"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_forked_child_cannot_write),
        TU_TEST(test_forked_child_does_not_wait_for_a_parent_thread),
        TU_TEST(test_child_may_open_its_own_handle),
        TU_TEST(test_forked_child_close_leaves_the_side_file_alone),
        TU_TEST(test_parent_reopens_while_forked_child_lives),
        TU_TEST(test_writer_killed_while_forked_child_lives),
        TU_TEST(test_fifo_is_refused_not_waited_on),
        TU_TEST(test_directory_is_named_as_such),
        TU_TEST(test_fifo_as_hint_file_is_not_waited_on),
        TU_TEST(test_file_size_limit_is_enospc_not_sigxfsz),
        TU_TEST(test_file_size_limit_below_a_page_is_enospc_not_sigxfsz),
        TU_TEST(test_stream_source_calling_back_is_refused),
        TU_TEST(test_nested_stream_sources_calling_back_are_refused),
        TU_TEST(test_store_never_takes_a_standard_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
