/*
 * full_disk_test.c - writes that run out of space fail cleanly and lose nothing.
 *
 * --fsize: in a forked child with RLIMIT_FSIZE set (SIGXFSZ ignored), single
 *   puts, batches and streams that cross the limit must fail with
 *   SIMDR_ENOSPC, leave the file exactly at its last valid entry (size and
 *   bytes), keep serving reads and keep accepting writes that fit. A
 *   compaction whose new file hits the limit must fail and leave the old file
 *   byte-identical with every key readable. A fresh process without the
 *   limit then finds everything, writes again and compacts.
 * --tmpfs: the same against a real ENOSPC on a 1 MiB tmpfs mounted for the
 *   test; space is then freed and writes work again. Needs the right to
 *   mount: without it the case exits 77, which ctest reports as skipped.
 * --mapped: the same with SIMDR_APPEND_MAPPED writers (the growth step of
 *   preallocated space is what runs out); --zeroed: with SIMDR_APPEND_ZEROED
 *   writers (a step of zeros that does not fit is given up, and the write's
 *   own pwrite runs out).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashutil.h"
#include "simdr.h"

#define NKEYS 40u

typedef struct keystate {
    int present;
    uint64_t gen, len;
} keystate;

static keystate model[NKEYS];
static uint64_t next_gen = 1;
static uint64_t n_refused, n_after_ok;

static void expect_model(simdr_store *s) {
    uint64_t live = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        char key[32];
        size_t kl = cu_key(key, sizeof key, k);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, key, kl, &e);
        if (!model[k].present) {
            CU_RC(rc, SIMDR_NOTFOUND);
            continue;
        }
        live++;
        CU_OK(rc);
        CU_OK(simdr_entry_verify(e));
        uint32_t vk;
        uint64_t vg;
        const char *why = "";
        CU_CHECK(cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, &vg, &why) == 0,
                 "key %u: %s", k, why);
        CU_EQ_U64(vk, k);
        CU_EQ_U64(vg, model[k].gen);
        simdr_entry_release(e);
    }
    CU_EQ_U64(simdr_count(s), live);
}

static int put_value(simdr_store *s, uint32_t k, uint64_t len) {
    char key[32];
    size_t kl = cu_key(key, sizeof key, k);
    uint64_t gen = next_gen++;
    uint8_t *v = cu_value_new(k, gen, len);
    int rc = simdr_put(s, key, kl, v, (size_t)len, NULL);
    free(v);
    if (rc == SIMDR_OK) model[k] = (keystate){1, gen, len};
    return rc;
}

static int put_batch(simdr_store *s, uint32_t first, unsigned n, uint64_t len) {
    simdr_kv kv[16];
    char keys[16][32];
    uint8_t *vals[16];
    uint64_t gens[16];
    for (unsigned i = 0; i < n; i++) {
        uint32_t k = (first + i) % NKEYS;
        gens[i] = next_gen++;
        vals[i] = cu_value_new(k, gens[i], len);
        kv[i] = (simdr_kv){keys[i], cu_key(keys[i], sizeof keys[i], k), vals[i], (size_t)len};
    }
    int rc = simdr_put_batch(s, kv, n, NULL);
    for (unsigned i = 0; i < n; i++) {
        if (rc == SIMDR_OK) model[(first + i) % NKEYS] = (keystate){1, gens[i], len};
        free(vals[i]);
    }
    return rc;
}

static int put_stream(simdr_store *s, uint32_t k, uint64_t len) {
    char key[32];
    size_t kl = cu_key(key, sizeof key, k);
    cu_stream st = {.key = k, .gen = next_gen++, .len = len, .rng = len, .max_chunk = 9000,
                    .hash = CU_FNV_INIT};
    int rc = simdr_put_stream(s, key, kl, cu_stream_read, &st, NULL);
    if (rc == SIMDR_OK) model[k] = (keystate){1, st.gen, len};
    return rc;
}

/* One write that must be refused for lack of space, with nothing changed:
 * the file's size and bytes, the tail, the index. */
/* A writable open in the run's append mode (--mapped: SIMDR_APPEND_MAPPED). */
static int open_rw(simdr_store **s, const char *path) {
    simdr_options o;
    cu_options_init(&o);
    return simdr_open(s, path, &o);
}

static void expect_refused(simdr_store *s, const char *path, int kind, uint64_t len) {
    size_t before_len = 0;
    uint8_t *before = cu_read_file(path, &before_len);
    CU_CHECK(before != NULL, "read %s", path);
    uint64_t tail = simdr_file_size(s);
    /* Mapped appends: the file reaches past the tail (preallocated zeros). */
    if (cu_space_ahead)
        CU_CHECK(before_len >= tail, "file shorter than its tail");
    else
        CU_EQ_U64(tail, before_len);
    keystate saved[NKEYS];
    memcpy(saved, model, sizeof saved);
    int rc;
    const char *what;
    switch (kind) {
    case 0: rc = put_value(s, 3, len); what = "put"; break;
    case 1: rc = put_batch(s, 5, 8, len / 8 + CU_VALUE_MIN); what = "put_batch"; break;
    default: rc = put_stream(s, 7, len); what = "put_stream"; break;
    }
    CU_CHECK(rc == SIMDR_ENOSPC, "%s of %llu bytes past the limit: got %d (%s), last error: %s",
             what, (unsigned long long)len, rc, simdr_strerror(rc), simdr_last_error());
    CU_CHECK(simdr_last_error()[0] != '\0', "ENOSPC without a message");
    CU_CHECK(memcmp(saved, model, sizeof saved) == 0, "model changed by a refused write");
    CU_EQ_U64(simdr_file_size(s), tail);
    size_t after_len = 0;
    uint8_t *after = cu_read_file(path, &after_len);
    /* Mapped appends: the entries are untouched; the zeros after them may
     * have been cut (a failed stream cuts the file back to its tail). */
    size_t compared = cu_space_ahead ? (size_t)tail : before_len;
    CU_CHECK(after != NULL && (cu_space_ahead ? after_len >= tail : after_len == before_len) &&
                 memcmp(before, after, compared) == 0,
             "failed %s changed the file (size %zu -> %zu)", what, before_len, after_len);
    free(before);
    free(after);
    expect_model(s);
    CU_OK(simdr_check(s, NULL, NULL, NULL));
    n_refused++;
}

/* Fills the store with overwritten keys, so a compaction has work to do. */
static void fill(simdr_store *s, unsigned rounds) {
    for (unsigned r = 0; r < rounds; r++)
        for (uint32_t k = 0; k < NKEYS; k++) CU_OK(put_value(s, k, 200 + (k * 37 + r * 11) % 900));
    char key[32];
    size_t kl = cu_key(key, sizeof key, NKEYS - 1);
    CU_OK(simdr_delete(s, key, kl, NULL));
    model[NKEYS - 1].present = 0;
}

/* Runs fn in a child process; returns when it exited 0, fails otherwise. */
static void in_child(void (*fn)(void *), void *arg, const char *what) {
    fflush(stdout);
    pid_t pid = fork();
    CU_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(arg);
        fflush(stdout);
        _exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) CU_CHECK(errno == EINTR, "waitpid");
    CU_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child failed (status 0x%x)", what, st);
}

typedef struct fsize_arg {
    char path[4200];
    char dir[4096];
} fsize_arg;

static void set_fsize(uint64_t limit) {
    struct rlimit rl = {.rlim_cur = (rlim_t)limit, .rlim_max = RLIM_INFINITY};
    CU_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit: %s", strerror(errno));
}

/* Child: writes under a file size limit just above the store. */
static void fsize_writes(void *p) {
    fsize_arg *a = p;
    signal(SIGXFSZ, SIG_IGN);
    simdr_store *s = NULL;
    CU_OK(open_rw(&s, a->path));
    expect_model(s);
    uint64_t size = simdr_file_size(s);
    set_fsize(size + 3000);
    for (int kind = 0; kind < 3; kind++) {
        expect_refused(s, a->path, kind, 5000);
        expect_refused(s, a->path, kind, 200000);
    }
    /* Writes that fit still work, up to the limit and then are refused. */
    CU_OK(put_value(s, 11, 500));
    CU_OK(put_stream(s, 12, 700));
    n_after_ok += 2;
    expect_refused(s, a->path, 0, 2500);
    uint64_t left = size + 3000 - simdr_file_size(s);
    CU_CHECK(left < 3000, "limit accounting");
    CU_OK(simdr_close(s));
    /* The hint file beside the store may not fit either: never mind, it is
     * a cache. The store file must be sound and whole. */
    s = NULL;
    simdr_options o;
    cu_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    CU_OK(simdr_open(&s, a->path, &o));
    expect_model(s);
    CU_OK(simdr_close(s));
    printf("full_disk_test: RLIMIT_FSIZE: %llu writes refused with SIMDR_ENOSPC, file intact; "
           "%llu writes that fit accepted\n",
           (unsigned long long)n_refused, (unsigned long long)n_after_ok);
    /* The parent's model is updated by replaying the same writes: pass the
     * model back through the file instead (see fsize_case). */
}

/* Child: compaction under a limit below the compacted size. */
static void fsize_compact(void *p) {
    fsize_arg *a = p;
    signal(SIGXFSZ, SIG_IGN);
    simdr_store *s = NULL;
    CU_OK(open_rw(&s, a->path));
    uint64_t savings = simdr_compaction_savings(s);
    uint64_t size = simdr_file_size(s);
    CU_CHECK(savings > 0 && savings < size, "savings %llu of %llu", (unsigned long long)savings,
             (unsigned long long)size);
    uint64_t compacted = size - savings;
    size_t before_len = 0;
    uint8_t *before = cu_read_file(a->path, &before_len);
    int files_before = cu_dir_count(a->dir);
    set_fsize(compacted / 2);
    int rc = simdr_compact(s);
    CU_CHECK(rc == SIMDR_ENOSPC, "compaction over the limit: got %d (%s) %s", rc,
             simdr_strerror(rc), simdr_last_error());
    size_t after_len = 0;
    uint8_t *after = cu_read_file(a->path, &after_len);
    CU_CHECK(after && after_len == before_len && memcmp(before, after, after_len) == 0,
             "failed compaction changed the store file");
    CU_EQ_U64(cu_dir_count(a->dir), files_before); /* no temporary left behind */
    expect_model(s);
    CU_OK(simdr_check(s, NULL, NULL, NULL));
    CU_EQ_U64(simdr_file_size(s), size);
    /* The store file is past the limit now: appends are refused too. */
    CU_RC(put_value(s, 1, 100), SIMDR_ENOSPC);
    expect_model(s);
    CU_OK(simdr_close(s));
    free(before);
    free(after);
    printf("full_disk_test: RLIMIT_FSIZE: compaction refused with SIMDR_ENOSPC, old file "
           "byte-identical, every key readable\n");
}

static void reopen_and_write(const char *path, const char *when) {
    simdr_store *s = NULL;
    CU_OK(open_rw(&s, path));
    simdr_recovery_info ri;
    CU_OK(simdr_recovery(s, &ri));
    CU_CHECK(ri.bytes_cut == 0, "%s: reopen cut %llu bytes", when,
             (unsigned long long)ri.bytes_cut);
    expect_model(s);
    CU_OK(put_value(s, 2, 100000));
    CU_OK(put_batch(s, 20, 10, 3000));
    CU_OK(put_stream(s, 30, 250000));
    expect_model(s);
    CU_OK(simdr_compact(s));
    expect_model(s);
    CU_OK(simdr_check(s, NULL, NULL, NULL));
    CU_OK(simdr_close(s));
}

static int fsize_case(void) {
    fsize_arg a;
    char *dir = cu_mkdtemp("fsize");
    snprintf(a.dir, sizeof a.dir, "%s", dir);
    int n = snprintf(a.path, sizeof a.path, "%s/store.bin", dir);
    CU_CHECK(n > 0 && (size_t)n < sizeof a.path, "path too long");
    simdr_store *s = NULL;
    CU_OK(open_rw(&s, a.path));
    fill(s, 4);
    CU_OK(simdr_close(s));

    in_child(fsize_writes, &a, "writes under RLIMIT_FSIZE");
    /* The child also wrote keys 11 and 12 (500 and 700 bytes) with
     * generations from its copy of the counter: read them back. */
    model[11] = (keystate){1, 0, 500};
    model[12] = (keystate){1, 0, 700};
    {
        simdr_options o;
        cu_options_init(&o);
        o.open_mode = SIMDR_OPEN_READONLY;
        CU_OK(simdr_open(&s, a.path, &o));
        for (uint32_t k = 11; k <= 12; k++) {
            char key[32];
            size_t kl = cu_key(key, sizeof key, k);
            simdr_entry *e = NULL;
            CU_OK(simdr_get(s, key, kl, &e));
            uint32_t vk;
            uint64_t vg;
            CU_CHECK(cu_value_verify(simdr_entry_data(e), simdr_entry_size(e), &vk, &vg, NULL) == 0,
                     "key %u", k);
            CU_CHECK(vg >= next_gen, "key %u generation %llu is older than the child's writes", k,
                     (unsigned long long)vg);
            model[k].gen = vg;
            if (vg >= next_gen) next_gen = vg + 1;
            simdr_entry_release(e);
        }
        CU_OK(simdr_close(s));
    }
    reopen_and_write(a.path, "after RLIMIT_FSIZE writes");

    CU_OK(open_rw(&s, a.path));
    fill(s, 3);
    CU_OK(simdr_close(s));
    in_child(fsize_compact, &a, "compaction under RLIMIT_FSIZE");
    reopen_and_write(a.path, "after RLIMIT_FSIZE compaction");
    cu_rmtree(dir);
    free(dir);
    return 0;
}

/* ---- real ENOSPC on a tiny tmpfs ---- */

static const uint8_t junk_value[60000];

/* The body runs in a child so the parent unmounts whatever happens. */
static void tmpfs_body(void *arg) {
    const char *dir = arg;
    char path[4200], filler[4200];
    snprintf(path, sizeof path, "%s/store.bin", dir);
    snprintf(filler, sizeof filler, "%s/filler", dir);
    /* A filler file to delete later, freeing space. */
    uint8_t *junk = calloc(1, 512 << 10);
    cu_write_file(filler, junk, 512 << 10);
    free(junk);

    simdr_store *s = NULL;
    CU_OK(open_rw(&s, path));
    /* Fill until the file system is full. */
    int rc = SIMDR_OK;
    unsigned writes = 0;
    for (uint32_t i = 0; rc == SIMDR_OK; i++) {
        rc = put_value(s, i % NKEYS, 4000 + (i % 7) * 100);
        if (rc == SIMDR_OK) writes++;
    }
    CU_CHECK(rc == SIMDR_ENOSPC, "write on a full file system: got %d (%s) %s", rc,
             simdr_strerror(rc), simdr_last_error());
    CU_CHECK(writes > 10, "only %u writes fit", writes);
    expect_model(s);
    for (int kind = 0; kind < 3; kind++) expect_refused(s, path, kind, 60000);
    CU_OK(simdr_check(s, NULL, NULL, NULL));

    /* Compaction needs room for the new file: refused, old file intact. */
    size_t before_len = 0;
    uint8_t *before = cu_read_file(path, &before_len);
    int files_before = cu_dir_count(dir);
    rc = simdr_compact(s);
    CU_CHECK(rc == SIMDR_ENOSPC, "compaction on a full file system: got %d (%s) %s", rc,
             simdr_strerror(rc), simdr_last_error());
    size_t after_len = 0;
    uint8_t *after = cu_read_file(path, &after_len);
    CU_CHECK(after && after_len == before_len && memcmp(before, after, after_len) == 0,
             "failed compaction changed the store file");
    CU_EQ_U64(cu_dir_count(dir), files_before);
    free(before);
    free(after);
    expect_model(s);

    /* Opens on the full file system. A writer's side file ("<store>.simdr")
     * is a page it stores into through a shared map: one created here must
     * have its block allocated by a system call that can fail, not by the
     * first store, which would die of SIGBUS (the child's death fails this
     * case). Reopened with its side file gone, the store keeps everything;
     * a new store opens or is refused, and refuses writes. */
    CU_OK(simdr_close(s));
    s = NULL;
    char side[4300];
    snprintf(side, sizeof side, "%s.simdr", path);
    CU_CHECK(unlink(side) == 0, "unlink %s: %s", side, strerror(errno));
    CU_OK(open_rw(&s, path));
    expect_model(s);
    rc = put_value(s, 2, 60000);
    CU_CHECK(rc == SIMDR_ENOSPC, "write after reopening full: got %d (%s)", rc,
             simdr_strerror(rc));
    char fresh[4300];
    snprintf(fresh, sizeof fresh, "%s/fresh.bin", dir);
    simdr_store *fresh_store = NULL;
    rc = open_rw(&fresh_store, fresh);
    if (rc == SIMDR_OK) {
        rc = simdr_put(fresh_store, "k", 1, junk_value, sizeof junk_value, NULL);
        CU_CHECK(rc == SIMDR_ENOSPC, "write to a store created full: got %d (%s)", rc,
                 simdr_strerror(rc));
        CU_OK(simdr_close(fresh_store));
    } else {
        CU_CHECK(rc == SIMDR_ENOSPC, "creating a store on a full file system: got %d (%s) %s",
                 rc, simdr_strerror(rc), simdr_last_error());
    }

    /* Space freed: the same open store compacts and writes again. */
    CU_CHECK(unlink(filler) == 0, "unlink filler");
    CU_OK(simdr_compact(s));
    expect_model(s);
    CU_OK(put_value(s, 1, 50000));
    CU_OK(put_batch(s, 10, 6, 4000));
    CU_OK(put_stream(s, 5, 30000));
    expect_model(s);
    CU_OK(simdr_close(s));
    s = NULL;
    CU_OK(open_rw(&s, path));
    expect_model(s);
    CU_OK(simdr_check(s, NULL, NULL, NULL));
    CU_OK(simdr_close(s));

    printf("full_disk_test: tmpfs: %u writes filled 1 MiB, %llu writes refused with "
           "SIMDR_ENOSPC leaving the file intact, compaction refused, writes and compaction "
           "work again after freeing space\n",
           writes, (unsigned long long)n_refused);
}

static int tmpfs_case(void) {
    char *dir = cu_mkdtemp("tmpfs");
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700") != 0) {
        printf("full_disk_test: SKIPPED: real ENOSPC case: cannot mount a 1 MiB tmpfs (%s); "
               "not counted as passed\n", strerror(errno));
        rmdir(dir);
        free(dir);
        return 77;
    }
    fflush(stdout);
    pid_t pid = fork();
    CU_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        tmpfs_body(dir);
        fflush(stdout);
        _exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) CU_CHECK(errno == EINTR, "waitpid");
    int um = umount(dir);
    int um_err = errno;
    rmdir(dir);
    CU_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tmpfs case failed (status 0x%x)", st);
    CU_CHECK(um == 0, "umount %s: %s", dir, strerror(um_err));
    free(dir);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int do_fsize = 0, do_tmpfs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fsize")) do_fsize = 1;
        if (!strcmp(argv[i], "--tmpfs")) do_tmpfs = 1;
    }
    if (!do_fsize && !do_tmpfs) do_fsize = do_tmpfs = 1;
    cu_parse_mapped(argc, argv);
    cu_set_replay_hint("full_disk_test%s%s (deterministic)", do_fsize ? " --fsize" : "",
                       do_tmpfs ? " --tmpfs" : "");
    int rc = 0;
    if (do_fsize) {
        fsize_case();
        printf("full_disk_test: PASS: RLIMIT_FSIZE cases\n");
    }
    if (do_tmpfs) {
        memset(model, 0, sizeof model);
        n_refused = 0;
        rc = tmpfs_case();
        if (rc == 0) printf("full_disk_test: PASS: tmpfs ENOSPC case\n");
    }
    return rc;
}
