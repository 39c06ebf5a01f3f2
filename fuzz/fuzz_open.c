/*
 * fuzz_open.c - libFuzzer target: arbitrary bytes opened as a store.
 *
 * The input is written to a file and opened twice. Read-only: recovery,
 * iteration (every payload byte touched), point and batch reads, the last
 * entry, the full check - and the file must be left byte-identical. Writable
 * (a separate copy): either refused with a damage/not-a-store status and the
 * file untouched, or opened with exactly the promised repair (file cut to
 * valid_size, the cut bytes saved beside it); then writes, an overwrite of an
 * existing hash, a delete, a compaction and a reopen must all behave.
 * Broken promises abort(), which libFuzzer and the replay driver report.
 *
 * Built two ways (fuzz/CMakeLists.txt): with -fsanitize=fuzzer for libFuzzer,
 * and with fuzz/replay_main.c, which runs every file in fuzz/corpus/ through
 * this same function in ordinary test runs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "simdr.h"

#define REQUIRE(cond, ...)                                                          \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_open: broken promise at line %d: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, " (last error: %s)\n", simdr_last_error());            \
            abort();                                                                \
        }                                                                           \
    } while (0)

static char dir[4096];
static char ro_path[4200], rw_path[4200];

static void setup(void) {
    if (dir[0]) return;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/simdr-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(ro_path, sizeof ro_path, "%s/ro.bin", dir);
    snprintf(rw_path, sizeof rw_path, "%s/rw.bin", dir);
}

static void clear_dir(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void write_file(const char *path, const uint8_t *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        REQUIRE(w > 0, "write: %s", strerror(errno));
        done += (size_t)w;
    }
    close(fd);
}

static uint8_t *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}

static int same_file(const char *path, const uint8_t *data, size_t len) {
    size_t n = 0;
    uint8_t *b = read_file(path, &n);
    int same = b && n == len && (len == 0 || memcmp(b, data, len) == 0);
    free(b);
    return same;
}

static int files_in_dir(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && !strstr(e->d_name, ".hint")) n++;
    if (d) closedir(d);
    return n;
}

/* Touches every payload byte (so a bad bound faults under ASan) and checks
 * what the entry says about itself. */
static uint64_t touch(const simdr_entry *e, uint64_t file_size) {
    const uint8_t *p = simdr_entry_data(e);
    uint64_t n = simdr_entry_size(e), sum = 0;
    REQUIRE(n >= 1, "entry of size 0");
    REQUIRE(simdr_entry_end(e) <= file_size, "entry ends at %llu past %llu",
            (unsigned long long)simdr_entry_end(e), (unsigned long long)file_size);
    REQUIRE(simdr_entry_offset(e) + n + 20 == simdr_entry_end(e), "payload/metadata bounds");
    REQUIRE(simdr_entry_start(e) <= simdr_entry_offset(e), "start after payload");
    for (uint64_t i = 0; i < n; i++) sum += p[i];
    int v = simdr_entry_verify(e);
    REQUIRE(v == SIMDR_OK || v == SIMDR_ECHECKSUM, "verify returned %d", v);
    const void *cp;
    size_t cl;
    if (n > 1 && simdr_entry_chunk(e, n / 2, 7, &cp, &cl, 0) == SIMDR_OK)
        REQUIRE(cl >= 1 && cl <= 7 && (const uint8_t *)cp == p + n / 2, "chunk");
    return sum;
}

typedef struct seen {
    uint64_t hashes[64];
    unsigned n;
    uint64_t count;
} seen;

static void explore(simdr_store *s, uint64_t file_size, seen *sn) {
    simdr_iter *it = NULL;
    memset(sn, 0, sizeof *sn);
    int rc = simdr_iter_open(s, &it);
    REQUIRE(rc == SIMDR_OK, "iter_open %d", rc);
    const simdr_entry *e;
    /* A damaged live entry is reported (SIMDR_ECORRUPT) and the iteration
     * goes on past it. */
    uint64_t damaged = 0;
    for (;;) {
        rc = simdr_iter_next(it, &e);
        if (rc == SIMDR_ECORRUPT) {
            REQUIRE(++damaged <= simdr_count(s), "more damaged entries than live keys");
            continue;
        }
        if (rc != SIMDR_OK) break;
        REQUIRE(!simdr_entry_is_tombstone(e), "iterator yielded a tombstone");
        touch(e, file_size);
        if (sn->n < 64) sn->hashes[sn->n++] = simdr_entry_key_hash(e);
        sn->count++;
    }
    REQUIRE(rc == SIMDR_NOTFOUND, "iter_next ended with %d", rc);
    simdr_iter_close(it);
    sn->count += damaged; /* live keys: yielded or reported damaged */
    REQUIRE(simdr_count(s) == sn->count, "count %llu but %llu iterated (%llu of them damaged)",
            (unsigned long long)simdr_count(s), (unsigned long long)sn->count,
            (unsigned long long)damaged);

    for (unsigned i = 0; i < sn->n; i++) {
        simdr_entry *g = NULL;
        rc = simdr_get_hashed(s, sn->hashes[i], &g);
        REQUIRE(rc == SIMDR_OK, "iterated hash not readable: %d", rc);
        REQUIRE(simdr_entry_key_hash(g) == sn->hashes[i], "get returned another hash");
        touch(g, file_size);
        simdr_entry_release(g);
    }
    if (sn->n) {
        simdr_entry *out[64];
        int64_t found = simdr_get_batch_hashed(s, sn->hashes, sn->n, out);
        REQUIRE(found == (int64_t)sn->n, "get_batch found %lld of %u", (long long)found, sn->n);
        for (unsigned i = 0; i < sn->n; i++) simdr_entry_release(out[i]);
    }
    static const char *probes[] = {"a", "b", "key1", "alice", "test_key", ""};
    for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        uint8_t buf[64];
        size_t n = 0;
        rc = simdr_get_copy(s, probes[i], strlen(probes[i]), buf, sizeof buf, &n);
        /* a damaged value is reported, never copied (verify_reads) */
        REQUIRE(rc == SIMDR_OK || rc == SIMDR_NOTFOUND || rc == SIMDR_ETOOBIG ||
                    rc == SIMDR_EINVAL || rc == SIMDR_ECORRUPT,
                "get_copy %d", rc);
    }
    simdr_entry *last = NULL;
    rc = simdr_get_last(s, &last);
    REQUIRE(rc == SIMDR_OK || (rc == SIMDR_NOTFOUND && simdr_file_size(s) == 0), "get_last %d",
            rc);
    if (last) {
        REQUIRE(simdr_entry_end(last) == simdr_file_size(s), "last entry does not end the file");
        touch(last, file_size);
        simdr_entry_release(last);
    }
    simdr_check_report rep;
    rc = simdr_check(s, NULL, NULL, &rep);
    REQUIRE(rc == SIMDR_OK || rc == SIMDR_ECORRUPT, "check %d", rc);
    REQUIRE((rc == SIMDR_OK) == (rep.bad_entries == 0), "check status vs report");
}

static void read_only(const uint8_t *data, size_t size) {
    write_file(ro_path, data, size);
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_READONLY;
    simdr_store *s = NULL;
    int rc = simdr_open(&s, ro_path, &o);
    REQUIRE(rc == SIMDR_OK || rc == SIMDR_ENOTSTORE || rc == SIMDR_ECORRUPT ||
                rc == SIMDR_ETOOBIG,
            "read-only open returned %d", rc);
    if (rc == SIMDR_OK) {
        simdr_recovery_info ri;
        REQUIRE(simdr_recovery(s, &ri) == SIMDR_OK, "recovery info");
        REQUIRE(ri.file_size == size && ri.valid_size <= size &&
                    ri.bytes_cut == size - ri.valid_size && !ri.truncated,
                "read-only recovery info");
        REQUIRE(simdr_file_size(s) == ri.valid_size, "file_size vs valid_size");
        seen sn;
        explore(s, size, &sn);
        REQUIRE(simdr_put(s, "k", 1, "v", 1, NULL) == SIMDR_EREADONLY, "read-only put");
        REQUIRE(simdr_compact(s) == SIMDR_EREADONLY, "read-only compact");
        uint64_t added = 0;
        REQUIRE(simdr_refresh(s, &added) == SIMDR_OK && added == 0, "refresh of a still file");
        REQUIRE(simdr_close(s) == SIMDR_OK, "close");
    }
    REQUIRE(same_file(ro_path, data, size), "read-only open modified the file");
    REQUIRE(files_in_dir() == 1, "read-only open created files");
}

static void writable(const uint8_t *data, size_t size) {
    write_file(rw_path, data, size);
    simdr_store *s = NULL;
    int rc = simdr_open(&s, rw_path, NULL);
    REQUIRE(rc == SIMDR_OK || rc == SIMDR_ENOTSTORE || rc == SIMDR_ECORRUPT ||
                rc == SIMDR_ETOOBIG,
            "writable open returned %d", rc);
    if (rc != SIMDR_OK) {
        REQUIRE(same_file(rw_path, data, size), "refused open (%d) modified the file", rc);
        REQUIRE(files_in_dir() == 1, "refused open created files");
        return;
    }
    simdr_recovery_info ri;
    REQUIRE(simdr_recovery(s, &ri) == SIMDR_OK, "recovery info");
    REQUIRE(ri.file_size == size && ri.valid_size <= size && ri.bytes_cut == size - ri.valid_size,
            "recovery sizes");
    if (ri.bytes_cut) {
        REQUIRE(ri.truncated, "bytes cut but not truncated");
        REQUIRE(same_file(rw_path, data, (size_t)ri.valid_size), "file is not the valid prefix");
        REQUIRE(same_file(ri.saved_path, data + ri.valid_size, (size_t)ri.bytes_cut),
                "saved tail differs from the bytes cut");
    } else {
        REQUIRE(same_file(rw_path, data, size), "sound file modified by open");
    }
    seen sn;
    explore(s, ri.valid_size, &sn);

    /* Writes on whatever was recovered. */
    uint64_t tail = 0;
    static const char val[] = "fuzzed store still takes writes";
    REQUIRE(simdr_put(s, "fuzz-key", 8, val, sizeof val, &tail) == SIMDR_OK, "put");
    REQUIRE(tail == simdr_file_size(s), "tail");
    uint8_t buf[64];
    size_t n = 0;
    REQUIRE(simdr_get_copy(s, "fuzz-key", 8, buf, sizeof buf, &n) == SIMDR_OK && n == sizeof val &&
                memcmp(buf, val, n) == 0,
            "put not readable");
    if (sn.n) {
        REQUIRE(simdr_put_hashed(s, sn.hashes[0], "over", 4, NULL) == SIMDR_OK, "overwrite");
        REQUIRE(simdr_count(s) == sn.count + 1 - (sn.hashes[0] == simdr_hash_key("fuzz-key", 8)),
                "count after overwrite");
    }
    REQUIRE(simdr_delete(s, "fuzz-key", 8, NULL) == SIMDR_OK, "delete");
    REQUIRE(simdr_exists(s, "fuzz-key", 8) == 0, "deleted key exists");
    REQUIRE(simdr_put(s, "fuzz-key2", 9, val, sizeof val, NULL) == SIMDR_OK, "put 2");
    uint64_t count = simdr_count(s);
    rc = simdr_compact(s);
    REQUIRE(rc == SIMDR_OK || rc == SIMDR_ECORRUPT || rc == SIMDR_ECHECKSUM, "compact %d", rc);
    REQUIRE(simdr_count(s) == count, "compaction changed the count");
    REQUIRE(simdr_exists(s, "fuzz-key", 8) == 0, "compaction resurrected a deleted key");
    REQUIRE(simdr_get_copy(s, "fuzz-key2", 9, buf, sizeof buf, &n) == SIMDR_OK && n == sizeof val,
            "key lost by compaction");
    uint64_t end = simdr_file_size(s);
    REQUIRE(simdr_close(s) == SIMDR_OK, "close");

    s = NULL;
    rc = simdr_open(&s, rw_path, NULL);
    REQUIRE(rc == SIMDR_OK, "reopen after writes: %d", rc);
    REQUIRE(simdr_recovery(s, &ri) == SIMDR_OK && ri.bytes_cut == 0 && ri.valid_size == end,
            "reopen cut what was written");
    REQUIRE(simdr_count(s) == count, "count after reopen");
    REQUIRE(simdr_exists(s, "fuzz-key", 8) == 0 && simdr_exists(s, "fuzz-key2", 9) == 1,
            "keys after reopen");
    REQUIRE(simdr_close(s) == SIMDR_OK, "close 2");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    clear_dir();
    read_only(data, size);
    clear_dir();
    writable(data, size);
    clear_dir();
    return 0;
}
