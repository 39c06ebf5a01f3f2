/*
 * test_misuse.c - unit tests of libsimdr used in ways that once lost data,
 * hung or killed the process: a handle written through in a forked child,
 * opens of a FIFO or a directory, a write crossing the process's file-size
 * limit (RLIMIT_FSIZE, default SIGXFSZ), and a stream source that calls
 * back into the store it feeds.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct fixture {
    char *dir;
    char path[4096];
    simdr_store *s;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_mkdtemp();
    tu_join(f->path, sizeof f->path, f->dir, "store.bin");
    f->s = tu_open(f->path, SIMDR_OPEN_CREATE, SIMDR_LAYOUT_ALIGNED64);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    simdr_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

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
    fixture *f = *state;
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

static void test_child_may_open_its_own_handle(void **state) {
    fixture *f = *state;
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_forked_child_cannot_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_may_open_its_own_handle, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
