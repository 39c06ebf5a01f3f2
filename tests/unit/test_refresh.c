/*
 * test_refresh.c - simdr_refresh of a read-only open that has fallen far
 * behind its writer: more new entries than one walk of the chain takes
 * (2^24; a test hook of src/internal.h lowers it), with and without the
 * writer's side file, in both layouts and with mapped appends. Such a
 * refresh used to answer SIMDR_ECORRUPT ("do not chain back") for a sound
 * store, or, without a side file, SIMDR_OK with nothing new, for ever.
 */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

enum { WALK = 50, KEYS = 40 };

static void key_of(int i, char *out, size_t cap) { snprintf(out, cap, "key-%d", i); }

static void value_of(int i, int round, char *out, size_t cap) {
    snprintf(out, cap, "value %d of round %d", i, round);
}

/* Every key holds its value of the round it was last written in, or is
 * absent (deleted), and the count agrees. */
static void expect_model(simdr_store *s, const int *round_of) {
    uint64_t live = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[32], v[64];
        key_of(i, k, sizeof k);
        if (round_of[i] < 0) {
            tu_expect_absent(s, k, strlen(k));
            continue;
        }
        value_of(i, round_of[i], v, sizeof v);
        tu_expect_str(s, k, v);
        live++;
    }
    assert_int_equal(simdr_count(s), live);
    assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
}

/* rounds of writes between refreshes: more entries than a walk takes, then
 * fewer (the walk itself again), then far more once more. */
static void run_case(int layout, int mapped, int without_side_file) {
    char *dir = tu_mkdtemp();
    char path[4096], side[4200];
    tu_join(path, sizeof path, dir, "store.bin");
    snprintf(side, sizeof side, "%s.simdr", path);
    simdr_options o;
    simdr_options_init(&o);
    o.layout = layout;
    o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    simdr_store *w = NULL, *r = NULL;
    assert_int_equal(simdr_open(&w, path, &o), SIMDR_OK);
    int round_of[KEYS];
    for (int i = 0; i < KEYS; i++) round_of[i] = -1;
    tu_put_str(w, "key-0", "value 0 of round 0");
    round_of[0] = 0;
    /* Without a side file a refresh takes only a chain ending at the file's
     * end: the writer syncs before each refresh (mapped: cuts its zeros). */
    if (without_side_file) assert_int_equal(unlink(side), 0);
    assert_int_equal(simdr_sync(w), SIMDR_OK);
    simdr_options ro;
    simdr_options_init(&ro);
    ro.open_mode = SIMDR_OPEN_READONLY;
    assert_int_equal(simdr_open(&r, path, &ro), SIMDR_OK);
    expect_model(r, round_of);
    simdr_entry *held = NULL;
    assert_int_equal(simdr_get(r, TU_STR("key-0"), &held), SIMDR_OK);

    const int entries_per_round[] = {WALK * 4, WALK / 2, WALK + 1, WALK * 10, WALK - 1};
    for (int round = 1; round <= 5; round++) {
        int want = entries_per_round[round - 1], written = 0;
        for (int i = 0; written < want; i = (i + 7) % KEYS) {
            char k[32], v[64];
            key_of(i, k, sizeof k);
            if (written % 5 == 4 && round_of[i] >= 0) {
                assert_int_equal(simdr_delete(w, k, strlen(k), NULL), SIMDR_OK);
                round_of[i] = -1;
            } else {
                value_of(i, round, v, sizeof v);
                assert_int_equal(simdr_put(w, k, strlen(k), v, strlen(v), NULL), SIMDR_OK);
                round_of[i] = round;
            }
            written++;
        }
        assert_int_equal(simdr_sync(w), SIMDR_OK);
        uint64_t added = 0;
        int rc = simdr_refresh(r, &added);
        if (rc != SIMDR_OK)
            fail_msg("round %d (%d entries, layout %d, mapped %d, side file %d): refresh %d: %s",
                     round, want, layout, mapped, !without_side_file, rc, simdr_last_error());
        assert_int_equal(simdr_file_size(r), simdr_file_size(w));
        expect_model(r, round_of);
        /* A handle from before the refresh keeps its bytes. */
        assert_int_equal(simdr_entry_size(held), strlen("value 0 of round 0"));
        assert_memory_equal(simdr_entry_data(held), "value 0 of round 0",
                            strlen("value 0 of round 0"));
    }
    simdr_entry_release(held);
    assert_int_equal(simdr_close(r), SIMDR_OK);
    assert_int_equal(simdr_close(w), SIMDR_OK);
    tu_rmtree(dir);
    free(dir);
}

static void test_refresh_far_behind(void **state) {
    (void)state;
    uint64_t saved = atomic_load(&simdr__chain_walk_max_steps);
    atomic_store(&simdr__chain_walk_max_steps, WALK);
    for (int layout = 0; layout <= 1; layout++)
        for (int mapped = 0; mapped <= 1; mapped++)
            for (int no_side = 0; no_side <= 1; no_side++) run_case(layout, mapped, no_side);
    atomic_store(&simdr__chain_walk_max_steps, saved);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_far_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
