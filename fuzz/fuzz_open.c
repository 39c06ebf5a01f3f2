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
 * Every answer is judged against an independent reading of the chain (the
 * model below): a key's value must be its newest entry's bytes, and a damage
 * report (SIMDR_ECORRUPT, SIMDR_ECHECKSUM) is allowed only for an entry the
 * model proves damaged. Broken promises abort(), which libFuzzer and the
 * replay driver report.
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

#include "fuzzutil.h"
#include "simdr.h"

#define REQUIRE(cond, ...) FUZZ_REQUIRE("fuzz_open", cond, __VA_ARGS__)

static char dir[4096];
static char ro_path[4200], rw_path[4200];

static void setup(void) {
    if (dir[0]) return;
    fuzz_make_scratch_dir(dir, sizeof dir, "simdr-fuzz");
    snprintf(ro_path, sizeof ro_path, "%s/ro.bin", dir);
    snprintf(rw_path, sizeof rw_path, "%s/rw.bin", dir);
}

static void clear_dir(void) { fuzz_clear_dir(dir); }

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

/* An independent reading of the chain (docs/FORMAT.md), written apart from
 * the engine, to judge its answers: the newest entry of a hash walking back
 * from the valid end, and whether that entry is a sound value. A damage
 * report is accepted only for an entry this model proves damaged; a value
 * returned as OK must be the entry's exact bytes with a matching CRC-32. */
typedef enum { MODEL_ABSENT, MODEL_VALUE, MODEL_DAMAGED } model_kind;

typedef struct model_answer {
    model_kind kind;
    const uint8_t *data; /* payload when it can be located (also when damaged) */
    uint64_t size;
    int crc_ok;
} model_answer;

static model_answer model_lookup(const uint8_t *file, uint64_t valid, int layout, uint64_t hash) {
    model_answer a = {MODEL_ABSENT, NULL, 0, 0};
    uint64_t end = valid;
    while (end > 0) {
        REQUIRE(end >= 20, "chain from the valid end reaches %llu, inside a metadata block",
                (unsigned long long)end);
        uint64_t meta = end - 20, prev = fuzz_load_u64(file + meta + 8);
        REQUIRE(prev < end, "chain link %llu does not decrease (entry ending at %llu)",
                (unsigned long long)prev, (unsigned long long)end);
        if (fuzz_load_u64(file + meta) != hash) {
            end = prev;
            continue;
        }
        if (prev >= meta) {
            a.kind = MODEL_DAMAGED; /* no room for a payload */
            return a;
        }
        if (meta - prev == 1 && file[prev] == 0) return a; /* tombstone */
        uint64_t pad = layout == SIMDR_LAYOUT_ALIGNED64 ? (64 - prev % 64) & 63 : 0;
        if (meta - prev <= pad) {
            a.kind = MODEL_DAMAGED; /* a padded payload cannot fit */
            return a;
        }
        int clean_pad = 1;
        for (uint64_t i = 0; i < pad; i++) clean_pad &= file[prev + i] == 0;
        a.data = file + prev + pad;
        a.size = meta - prev - pad;
        a.crc_ok = fuzz_crc32(a.data, a.size) == fuzz_load_u32(file + meta + 16);
        a.kind = a.crc_ok && clean_pad ? MODEL_VALUE : MODEL_DAMAGED;
        return a;
    }
    return a;
}

static int is_damage_report(int rc) { return rc == SIMDR_ECORRUPT || rc == SIMDR_ECHECKSUM; }

/* A value copied out as OK must be exactly the newest entry's stored bytes.
 * REFUSE_UNVERIFIED_COPY 1 also refuses stored bytes that fail their CRC-32;
 * it stays 0 while simdr_get_copy copies without verifying. */
#define REFUSE_UNVERIFIED_COPY 1
static void require_right_value(model_answer m, const uint8_t *got, uint64_t n, const char *what) {
    REQUIRE(m.data, "%s: OK for an entry that has no payload", what);
    REQUIRE(m.crc_ok || !REFUSE_UNVERIFIED_COPY, "%s: OK for a payload that fails its CRC-32",
            what);
    REQUIRE(n == m.size && memcmp(got, m.data, (size_t)n) == 0,
            "%s: OK with %llu bytes that are not the newest entry's %llu", what,
            (unsigned long long)n, (unsigned long long)m.size);
}

/* Judges simdr_get_copy(key, buf[64]) against the model. */
static void judge_copy(model_answer m, int rc, const uint8_t *buf, size_t n,
                       const char *key) {
    switch (m.kind) {
    case MODEL_ABSENT:
        REQUIRE(rc == SIMDR_NOTFOUND, "get_copy(\"%s\") of an absent key returned %d", key, rc);
        return;
    case MODEL_VALUE:
        REQUIRE(rc == SIMDR_OK || rc == SIMDR_ETOOBIG,
                "get_copy(\"%s\") of a sound entry returned %d", key, rc);
        break;
    case MODEL_DAMAGED:
        REQUIRE(rc == SIMDR_OK || rc == SIMDR_ETOOBIG || is_damage_report(rc),
                "get_copy(\"%s\") of a damaged entry returned %d", key, rc);
        break;
    }
    if (rc == SIMDR_ETOOBIG)
        REQUIRE(m.data && n == m.size && m.size > 64, "get_copy(\"%s\") ETOOBIG with size %zu",
                key, n);
    if (rc == SIMDR_OK) require_right_value(m, buf, n, "get_copy");
}

typedef struct seen {
    uint64_t hashes[64];
    unsigned n;
    uint64_t count;
} seen;

/* Judges a zero-copy entry handle returned as OK for hash: the model's bytes
 * at the model's place; a damaged payload is allowed only when the handle's
 * own check says so (the caller can tell before trusting it). */
static void judge_entry(model_answer m, const simdr_entry *e, const char *what) {
    REQUIRE(m.kind != MODEL_ABSENT, "%s: an entry for a key the file does not hold", what);
    REQUIRE(m.data && simdr_entry_size(e) == m.size &&
                memcmp(simdr_entry_data(e), m.data, (size_t)m.size) == 0,
            "%s: not the bytes of the newest entry", what);
    REQUIRE((simdr_entry_verify(e) == SIMDR_OK) == m.crc_ok, "%s: verify disagrees with the CRC",
            what);
}

static void explore(simdr_store *s, const uint8_t *file, uint64_t file_size, seen *sn) {
    simdr_iter *it = NULL;
    memset(sn, 0, sizeof *sn);
    const uint64_t valid = simdr_file_size(s);
    const int layout = simdr_layout_of(s);
    int rc = simdr_iter_open(s, &it);
    REQUIRE(rc == SIMDR_OK, "iter_open %d", rc);
    const simdr_entry *e;
    /* A damaged live entry is reported and the iteration goes on past it. */
    uint64_t damaged = 0;
    for (;;) {
        rc = simdr_iter_next(it, &e);
        if (is_damage_report(rc)) {
            REQUIRE(++damaged <= simdr_count(s), "more damaged entries than live keys");
            continue;
        }
        if (rc != SIMDR_OK) break;
        REQUIRE(!simdr_entry_is_tombstone(e), "iterator yielded a tombstone");
        touch(e, file_size);
        uint64_t h = simdr_entry_key_hash(e);
        judge_entry(model_lookup(file, valid, layout, h), e, "iterator");
        if (sn->n < 64) sn->hashes[sn->n++] = h;
        sn->count++;
    }
    REQUIRE(rc == SIMDR_NOTFOUND, "iter_next ended with %d", rc);
    simdr_iter_close(it);
    sn->count += damaged; /* live keys: yielded or reported damaged */
    REQUIRE(simdr_count(s) == sn->count, "count %llu but %llu iterated (%llu of them damaged)",
            (unsigned long long)simdr_count(s), (unsigned long long)sn->count,
            (unsigned long long)damaged);

    int any_damaged = 0;
    for (unsigned i = 0; i < sn->n; i++) {
        model_answer m = model_lookup(file, valid, layout, sn->hashes[i]);
        any_damaged |= m.kind == MODEL_DAMAGED;
        simdr_entry *g = NULL;
        rc = simdr_get_hashed(s, sn->hashes[i], &g);
        if (rc != SIMDR_OK) {
            REQUIRE(is_damage_report(rc) && m.kind == MODEL_DAMAGED,
                    "iterated hash not readable: %d", rc);
            continue;
        }
        REQUIRE(simdr_entry_key_hash(g) == sn->hashes[i], "get returned another hash");
        touch(g, file_size);
        judge_entry(m, g, "get");
        simdr_entry_release(g);
    }
    if (sn->n) {
        simdr_entry *out[64];
        int64_t found = simdr_get_batch_hashed(s, sn->hashes, sn->n, out);
        REQUIRE(found == (int64_t)sn->n || (is_damage_report((int)found) && any_damaged),
                "get_batch found %lld of %u", (long long)found, sn->n);
        for (unsigned i = 0; found > 0 && i < sn->n; i++) simdr_entry_release(out[i]);
    }
    static const char *probes[] = {"a", "b", "key1", "alice", "test_key", ""};
    for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        uint8_t buf[64];
        size_t n = 0;
        size_t klen = strlen(probes[i]);
        rc = simdr_get_copy(s, probes[i], klen, buf, sizeof buf, &n);
        judge_copy(model_lookup(file, valid, layout, simdr_hash_key(probes[i], klen)), rc, buf,
                   n, probes[i]);
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
        explore(s, data, size, &sn);
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
        int zeros_only = 1;
        for (uint64_t i = ri.valid_size; i < size && zeros_only; i++) zeros_only = data[i] == 0;
        /* A cut of zero bytes only holds no entry and is not saved. */
        REQUIRE(zeros_only ? ri.saved_path[0] == '\0'
                           : same_file(ri.saved_path, data + ri.valid_size, (size_t)ri.bytes_cut),
                "saved tail differs from the bytes cut");
    } else {
        REQUIRE(same_file(rw_path, data, size), "sound file modified by open");
    }
    seen sn;
    explore(s, data, ri.valid_size, &sn);

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
