/*
 * test_path_reuse.c - a writable open of a path whose side file belongs to a
 * live writer of another file. The store lock is taken on the store file, the
 * side file's lock by path: when a file is renamed (or exchanged, as
 * simdr-server's SWAPDB does) into a path whose previous file a writer still
 * has open, the new file is unlocked but its side file is not. Such an open
 * must be refused with SIMDR_ELOCKED at once, never wait for the other writer
 * to close (a server's event loop would hang), and never take or remove the
 * other writer's side file.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

/* A closed store at path holding key = value. */
static void make_store(const char *path, const char *key, const char *value) {
    simdr_store *s = tu_open(path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(s, key, value);
    assert_int_equal(simdr_close(s), SIMDR_OK);
}

static void open_refused_while_side_file_held(void **state, int exchange) {
    tu_fixture *f = *state;
    simdr_store *w = tu_open(f->path, SIMDR_OPEN_CREATE, 0);
    tu_put_str(w, "held", "by the first writer");
    make_store(f->other, "moved", "into the path");
    if (exchange)
        assert_int_equal(renameat2(AT_FDCWD, f->other, AT_FDCWD, f->path, RENAME_EXCHANGE), 0);
    else
        assert_int_equal(rename(f->other, f->path), 0);

    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", f->path);
    struct stat before;
    assert_int_equal(stat(side, &before), 0);

    tu_watchdog_start(10, "a writable open of a path whose side file another writer holds");
    simdr_store *c = NULL;
    assert_int_equal(tu_open_status(&c, f->path, SIMDR_OPEN_EXISTING, 0), SIMDR_ELOCKED);
    assert_null(c);
    assert_int_equal(tu_open_status(&c, f->path, SIMDR_OPEN_CREATE, 0), SIMDR_ELOCKED);
    assert_null(c);
    tu_watchdog_stop();

    /* The first writer's side file is still the one it holds, and it keeps
     * working; read-only opens of the path see the file now there. */
    struct stat after;
    assert_int_equal(stat(side, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    tu_put_str(w, "held2", "still writing");
    assert_int_equal(tu_open_status(&c, f->path, SIMDR_OPEN_READONLY, 0), SIMDR_OK);
    tu_expect_str(c, "moved", "into the path");
    assert_int_equal(simdr_close(c), SIMDR_OK);
    assert_int_equal(simdr_close(w), SIMDR_OK);

    /* Once that writer is gone the path opens for writing as usual. */
    c = tu_open(f->path, SIMDR_OPEN_EXISTING, 0);
    tu_expect_str(c, "moved", "into the path");
    tu_put_str(c, "after", "the first writer closed");
    assert_int_equal(simdr_close(c), SIMDR_OK);
    c = tu_open(f->path, SIMDR_OPEN_READONLY, 0);
    tu_expect_str(c, "after", "the first writer closed");
    assert_int_equal(simdr_close(c), SIMDR_OK);
}

static void renamed_over_open_store(void **state) { open_refused_while_side_file_held(state, 0); }

static void exchanged_with_open_store(void **state) {
    open_refused_while_side_file_held(state, 1);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        TU_TEST_DIR(renamed_over_open_store),
        TU_TEST_DIR(exchanged_with_open_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
