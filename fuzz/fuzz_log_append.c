/*
 * fuzz_log_append.c - libFuzzer target: the bytes a hostile primary sends a
 * replica, appended with simdr_log_append.
 *
 * A small valid store (either layout; empty, or a few entries including a
 * tombstone) receives one or more appends whose bytes and start offsets come
 * from the input, so an entry split across two calls, a start offset that is
 * not the tail, damaged links, CRCs, padding and huge claimed sizes are all
 * reached. Every answer is judged against an independent reading of the
 * format (docs/FORMAT.md), written apart from the engine:
 *   - a call succeeds exactly when its bytes are whole, sound entries that
 *     chain onto the store's tail; it then returns the new tail and the file
 *     is the old file followed by those bytes, byte for byte;
 *   - a refused call returns an error code with a message and leaves the
 *     file bytes, the tail, the count and every key's value as they were;
 *   - afterwards the store passes simdr_check, simdr_log_read gives back the
 *     file, and a writable and a read-only reopen cut nothing and read every
 *     key as the model does (only valid, chained entries).
 * A broken promise calls abort(), which libFuzzer and the replay driver
 * report.
 *
 * Input layout (short inputs read as zero-padded):
 *   byte 0   bit 0: unaligned layout; bits 1-2: the starting store (empty,
 *            the FORMAT.md worked example, the example plus larger values,
 *            or twenty small entries); bit 3: mapped appends; bit 4: close
 *            and reopen between calls; bits 5-7: calls - 1
 *   byte 1   how each call picks its start offset (low nibble: first call,
 *            high nibble: later calls; see pick_from)
 *   2..9     an explicit offset (u64 little-endian) for pick_from
 *   then     u16 little-endian length of each call but the last
 *   rest     the bytes, cut into the calls in order (the last takes the rest)
 *
 * Built with -fsanitize=fuzzer (fuzz/CMakeLists.txt, SIMDR_BUILD_FUZZ=ON) and
 * with fuzz/replay_main.c as fuzz_log_append_replay, which replays
 * fuzz/corpus-log-append/ in every test run. fuzz/gen_log_append.py writes
 * the seed inputs.
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

#define REQUIRE(cond, ...) FUZZ_REQUIRE("fuzz_log_append", cond, __VA_ARGS__)

#define META 20
#define MAX_CALLS 8
#define MAX_KEYS 256

static char dir[4096];
static char path[4200];

static void setup(void) {
    if (dir[0]) return;
    fuzz_make_scratch_dir(dir, sizeof dir, "simdr-fuzz-log");
    snprintf(path, sizeof path, "%s/replica.simdr", dir);
}

static void clear_dir(void) { fuzz_clear_dir(dir); }

static uint8_t *read_whole(const char *p, size_t *len) {
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0, "open %s: %s", p, strerror(errno));
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    REQUIRE(buf, "out of memory");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        REQUIRE(r > 0, "read: %s", strerror(errno));
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

static void write_whole(const char *p, const uint8_t *data, size_t len) {
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0, "open %s: %s", p, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        REQUIRE(w > 0, "write: %s", strerror(errno));
        done += (size_t)w;
    }
    close(fd);
}

/* ---- the independent reading of the format ---- */

static uint64_t pad_at(uint64_t prev, int aligned) { return aligned ? (64 - prev % 64) & 63 : 0; }

/* One entry ending at end (bytes p[0..end) hold the file up to it): its start
 * (the link), payload and hash, when it is a sound entry of the layout. */
typedef struct model_entry {
    uint64_t start, hash;
    const uint8_t *payload;
    uint64_t size;
    int tombstone;
} model_entry;

static int model_entry_at(const uint8_t *p, uint64_t lowest, uint64_t end, int aligned,
                          model_entry *e) {
    if (end < lowest + META + 1) return 0;
    uint64_t meta = end - META, prev = fuzz_load_u64(p + meta + 8);
    if (prev < lowest || prev >= meta) return 0;
    e->start = prev;
    e->hash = fuzz_load_u64(p + meta);
    if (meta - prev == 1 && p[prev] == 0) {
        e->tombstone = 1;
        e->payload = p + prev;
        e->size = 1;
    } else {
        uint64_t pad = pad_at(prev, aligned);
        if (meta - prev <= pad) return 0;
        for (uint64_t i = 0; i < pad; i++)
            if (p[prev + i]) return 0;
        e->tombstone = 0;
        e->payload = p + prev + pad;
        e->size = meta - prev - pad;
        /* [0x00] is the tombstone's byte: a padded copy of it is no value */
        if (e->size == 1 && e->payload[0] == 0) return 0;
    }
    return fuzz_crc32(e->payload, e->size) == fuzz_load_u32(p + meta + 16);
}

/* Whether p[from..end) (p holds the file up to end) is a run of sound entries
 * chained from from. */
static int model_chain_ok(const uint8_t *p, uint64_t from, uint64_t end, int aligned) {
    while (end > from) {
        model_entry e;
        if (!model_entry_at(p, from, end, aligned, &e)) return 0;
        end = e.start;
    }
    return end == from;
}

/* The newest entry of hash in p[0..end): 1 and *e when it holds a value, 0
 * when the key is absent or deleted. The chain must be sound. */
static int model_lookup(const uint8_t *p, uint64_t end, int aligned, uint64_t hash,
                        model_entry *e) {
    while (end > 0) {
        REQUIRE(model_entry_at(p, 0, end, aligned, e), "the file holds an unsound entry "
                "ending at %llu", (unsigned long long)end);
        if (e->hash == hash) return !e->tombstone;
        end = e->start;
    }
    return 0;
}

/* ---- the keys and what the store says about them ---- */

typedef struct keyset {
    uint64_t hash[MAX_KEYS];
    unsigned n;
} keyset;

static void keys_add(keyset *k, uint64_t h) {
    for (unsigned i = 0; i < k->n; i++)
        if (k->hash[i] == h) return;
    if (k->n < MAX_KEYS) k->hash[k->n++] = h;
}

static void keys_from_file(keyset *k, const uint8_t *p, uint64_t end, int aligned) {
    model_entry e;
    while (end > 0) {
        REQUIRE(model_entry_at(p, 0, end, aligned, &e), "unsound entry ending at %llu",
                (unsigned long long)end);
        keys_add(k, e.hash);
        end = e.start;
    }
}

static uint64_t model_count(const keyset *k, const uint8_t *p, uint64_t end, int aligned) {
    uint64_t n = 0;
    model_entry e;
    for (unsigned i = 0; i < k->n; i++) n += model_lookup(p, end, aligned, k->hash[i], &e);
    return n;
}

/* Every known key reads as the model of p[0..end) says, and the count agrees. */
static void require_store_matches(simdr_store *s, const keyset *k, const uint8_t *p,
                                  uint64_t end, int aligned, const char *when) {
    REQUIRE(simdr_file_size(s) == end, "%s: file size %llu, want %llu", when,
            (unsigned long long)simdr_file_size(s), (unsigned long long)end);
    for (unsigned i = 0; i < k->n; i++) {
        model_entry e;
        int present = model_lookup(p, end, aligned, k->hash[i], &e);
        simdr_entry *got = NULL;
        int rc = simdr_get_hashed(s, k->hash[i], &got);
        if (!present) {
            REQUIRE(rc == SIMDR_NOTFOUND, "%s: key %016llx should be absent, get gave %d", when,
                    (unsigned long long)k->hash[i], rc);
            continue;
        }
        REQUIRE(rc == SIMDR_OK, "%s: key %016llx should hold %llu bytes, get gave %d", when,
                (unsigned long long)k->hash[i], (unsigned long long)e.size, rc);
        REQUIRE(simdr_entry_size(got) == e.size &&
                    memcmp(simdr_entry_data(got), e.payload, (size_t)e.size) == 0 &&
                    simdr_entry_end(got) <= end,
                "%s: key %016llx does not read as its newest entry", when,
                (unsigned long long)k->hash[i]);
        REQUIRE(simdr_entry_verify(got) == SIMDR_OK, "%s: verify", when);
        simdr_entry_release(got);
    }
    REQUIRE(simdr_count(s) == model_count(k, p, end, aligned), "%s: count %llu, model %llu",
            when, (unsigned long long)simdr_count(s),
            (unsigned long long)model_count(k, p, end, aligned));
}

/* The file on disk: its first end bytes are want's; with mapped appends the
 * store may keep zeroed preallocated space after them while open. */
static void require_file(const uint8_t *want, uint64_t end, int mapped, const char *when) {
    size_t n = 0;
    uint8_t *got = read_whole(path, &n);
    REQUIRE(n >= end && (end == 0 || memcmp(got, want, (size_t)end) == 0),
            "%s: the file's first %llu bytes changed (file is %zu bytes)", when,
            (unsigned long long)end, n);
    int zeros = 1;
    for (size_t i = (size_t)end; i < n; i++) zeros &= got[i] == 0;
    REQUIRE(n == end || (mapped && zeros), "%s: %zu bytes after the tail %llu", when,
            n - (size_t)end, (unsigned long long)end);
    free(got);
}

/* ---- the starting stores ---- */

typedef struct base {
    uint8_t *bytes;
    size_t len;
} base;

static base bases[2][4];

static simdr_store *open_store(int aligned, int mapped, int mode) {
    simdr_options o;
    simdr_options_init(&o);
    o.layout = aligned ? SIMDR_LAYOUT_ALIGNED64 : SIMDR_LAYOUT_UNALIGNED;
    o.append_mode = mapped ? SIMDR_APPEND_MAPPED : SIMDR_APPEND_WRITE;
    o.open_mode = mode;
    o.repair = 0; /* a torn tail would be a broken promise: never cut it */
    simdr_store *s = NULL;
    int rc = simdr_open(&s, path, &o);
    REQUIRE(rc == SIMDR_OK, "open (mode %d) gave %d", mode, rc);
    return s;
}

static void build_base(int aligned, int variant, base *b) {
    clear_dir();
    simdr_store *s = open_store(aligned, 0, SIMDR_OPEN_CREATE);
    static const char big[] = "a value long enough to need more than one cache line of "
                              "payload, so a replicated copy spans a pad and a boundary";
    if (variant == 1 || variant == 2) {
        REQUIRE(simdr_put(s, "a", 1, "hello", 5, NULL) == SIMDR_OK, "put a");
        REQUIRE(simdr_delete(s, "a", 1, NULL) == SIMDR_OK, "delete a");
        REQUIRE(simdr_put(s, "b", 1, "world", 5, NULL) == SIMDR_OK, "put b");
    }
    if (variant == 2) {
        REQUIRE(simdr_put(s, "key1", 4, big, sizeof big - 1, NULL) == SIMDR_OK, "put key1");
        REQUIRE(simdr_put(s, "alice", 5, "x", 1, NULL) == SIMDR_OK, "put alice");
        REQUIRE(simdr_put(s, "b", 1, big, 70, NULL) == SIMDR_OK, "overwrite b");
    }
    for (int i = 0; variant == 3 && i < 20; i++) {
        char k[8], v[8];
        snprintf(k, sizeof k, "k%d", i % 12);
        snprintf(v, sizeof v, "v%d", i);
        REQUIRE(simdr_put(s, k, strlen(k), v, strlen(v), NULL) == SIMDR_OK, "put %s", k);
        if (i % 7 == 6) REQUIRE(simdr_delete(s, k, strlen(k), NULL) == SIMDR_OK, "del %s", k);
    }
    REQUIRE(simdr_close(s) == SIMDR_OK, "close base");
    b->bytes = read_whole(path, &b->len);
}

static const base *get_base(int aligned, int variant) {
    base *b = &bases[aligned][variant];
    if (!b->bytes) build_base(aligned, variant, b);
    return b;
}

/* ---- the run ---- */

typedef struct input {
    const uint8_t *p;
    size_t n, pos;
} input;

static unsigned take_u8(input *in) { return in->pos < in->n ? in->p[in->pos++] : 0; }

static uint64_t take_le(input *in, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)take_u8(in) << (8 * i);
    return v;
}

/* The start offset of a call, relative to the store's tail. */
static uint64_t pick_from(unsigned mode, uint64_t tail, uint64_t explicit_from,
                          const uint8_t *file) {
    switch (mode & 7) {
    case 0: return tail;
    case 1: return 0;
    case 2: return tail ? tail - 1 : 0;
    case 3: return tail + 1;
    case 4: return tail >= META ? fuzz_load_u64(file + tail - META + 8) : tail; /* an older end */
    case 5: return explicit_from;
    case 6: return tail + explicit_from % 128;
    default: return UINT64_MAX - (explicit_from & 0xff);
    }
}

static int allowed_refusal(int rc) {
    return rc == SIMDR_ECORRUPT || rc == SIMDR_ETOOBIG || rc == SIMDR_EINVAL;
}

static void require_log_read(simdr_store *s, const uint8_t *file, uint64_t end,
                             uint64_t from) {
    simdr_log_state st;
    REQUIRE(simdr_log_info(s, &st) == SIMDR_OK && st.tail == end, "log_info");
    REQUIRE(end < META || memcmp(st.tail_meta, file + end - META, META) == 0,
            "log_info tail_meta");
    uint8_t *buf = malloc((size_t)(end - from) + 1);
    REQUIRE(buf, "out of memory");
    size_t len = 0;
    int rc = simdr_log_read(s, st.identity, from, buf, (size_t)(end - from), &len);
    REQUIRE(rc == SIMDR_OK && len == end - from &&
                (len == 0 || memcmp(buf, file + from, len) == 0),
            "log_read from %llu gave %d, %zu bytes", (unsigned long long)from, rc, len);
    free(buf);
}

/* Whether off is 0 or the end of an entry of the chain ending at end; *next
 * gets the end of the entry that starts there (end itself when off == end). */
static int model_is_entry_end(const uint8_t *p, uint64_t end, int aligned, uint64_t off,
                              uint64_t *next) {
    *next = end;
    while (end > off) {
        model_entry e;
        REQUIRE(model_entry_at(p, 0, end, aligned, &e), "unsound entry ending at %llu",
                (unsigned long long)end);
        if (e.start == off) *next = end;
        end = e.start;
    }
    return end == off;
}

/* simdr_log_read as a primary answers a replica's offset, whatever it is:
 * whole entries from an entry end, never more than cap, the room needed
 * when the first entry does not fit, a refusal of an offset beyond the tail
 * or (when the walk passes it) inside an entry. */
static void require_log_read_any(simdr_store *s, const uint8_t *file, uint64_t end, int aligned,
                                 uint64_t from, size_t cap) {
    simdr_log_state st;
    REQUIRE(simdr_log_info(s, &st) == SIMDR_OK, "log_info");
    uint8_t *buf = malloc(cap + 1);
    REQUIRE(buf, "out of memory");
    size_t len = 12345;
    int rc = simdr_log_read(s, st.identity, from, buf, cap, &len);
    uint64_t next = 0;
    int at_entry = from <= end && model_is_entry_end(file, end, aligned, from, &next);
    if (from > end) {
        REQUIRE(rc == SIMDR_EINVAL && len == 0, "log_read beyond the tail gave %d", rc);
    } else if (rc == SIMDR_OK) {
        uint64_t to = from + len, dummy;
        REQUIRE(len <= cap && to <= end && memcmp(buf, file + from, len) == 0,
                "log_read from %llu cap %zu gave %zu bytes", (unsigned long long)from, cap, len);
        REQUIRE(to == end || model_is_entry_end(file, end, aligned, to, &dummy),
                "log_read from %llu ended at %llu, inside an entry", (unsigned long long)from,
                (unsigned long long)to);
        REQUIRE(!at_entry || len > 0 || from == end, "log_read gave nothing from %llu",
                (unsigned long long)from);
    } else if (rc == SIMDR_ETOOBIG) {
        REQUIRE(at_entry && len == next - from && len > cap,
                "log_read ETOOBIG from %llu cap %zu: needs %zu", (unsigned long long)from, cap,
                len);
    } else {
        REQUIRE(rc == SIMDR_EINVAL && !at_entry && len == 0,
                "log_read from %llu cap %zu gave %d", (unsigned long long)from, cap, rc);
    }
    free(buf);
}

static void run(const uint8_t *data, size_t size) {
    static int verbose = -1; /* SIMDR_FUZZ_VERBOSE=1: each call's outcome on stderr */
    if (verbose < 0) verbose = getenv("SIMDR_FUZZ_VERBOSE") != NULL;
    input in = {data, size, 0};
    unsigned cfg = take_u8(&in), from_modes = take_u8(&in);
    uint64_t explicit_from = take_le(&in, 8);
    const int aligned = !(cfg & 1), variant = (cfg >> 1) & 3, mapped = (cfg >> 3) & 1,
              reopen_between = (cfg >> 4) & 1, calls = 1 + (int)(cfg >> 5);
    size_t call_len[MAX_CALLS];
    for (int i = 0; i + 1 < calls; i++) call_len[i] = (size_t)take_le(&in, 2);
    const uint8_t *stream = in.pos < size ? data + in.pos : data + size;
    size_t stream_len = size - (in.pos < size ? in.pos : size), used = 0;

    const base *b = get_base(aligned, variant);
    clear_dir();
    write_whole(path, b->bytes, b->len);
    /* the model's file: grows by each accepted call */
    uint8_t *file = malloc(b->len + stream_len + 1);
    REQUIRE(file, "out of memory");
    memcpy(file, b->bytes, b->len);
    uint64_t end = b->len;
    keyset keys = {{0}, 0};
    keys_from_file(&keys, file, end, aligned);
    static const char *probes[] = {"a", "b", "key1", "alice", "k0", "k11", "fresh"};
    for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++)
        keys_add(&keys, simdr_hash_key(probes[i], strlen(probes[i])));

    simdr_store *s = open_store(aligned, mapped, SIMDR_OPEN_EXISTING);
    REQUIRE(simdr_layout_of(s) == (aligned ? SIMDR_LAYOUT_ALIGNED64 : SIMDR_LAYOUT_UNALIGNED) ||
                end == 0,
            "layout");
    require_store_matches(s, &keys, file, end, aligned, "start");

    for (int c = 0; c < calls; c++) {
        size_t len = c + 1 < calls ? call_len[c] : stream_len - used;
        if (len > stream_len - used) len = stream_len - used;
        const uint8_t *bytes = stream + used;
        used += len;
        uint64_t from = pick_from(c ? from_modes >> 4 : from_modes, end, explicit_from, file);

        /* what the model expects: sound entries chained from the tail */
        int sound = from == end;
        if (sound && len) {
            memcpy(file + end, bytes, len);
            sound = model_chain_ok(file, end, end + len, aligned);
        }
        uint64_t count_before = simdr_count(s), tail_out = 12345;
        int rc = simdr_log_append(s, from, len ? bytes : NULL, len, &tail_out);
        if (verbose)
            fprintf(stderr, "call %d: %zu bytes at %llu (tail %llu): %d %s\n", c, len,
                    (unsigned long long)from, (unsigned long long)end, rc,
                    rc ? simdr_last_error() : "");
        if (rc == SIMDR_OK) {
            REQUIRE(sound, "call %d: accepted %zu bytes at %llu that are not sound entries "
                    "chained onto the tail %llu", c, len, (unsigned long long)from,
                    (unsigned long long)end);
            REQUIRE(tail_out == end + len, "call %d: tail_out %llu, want %llu", c,
                    (unsigned long long)tail_out, (unsigned long long)(end + len));
            uint64_t old_end = end;
            end += len;
            keys_from_file(&keys, file, end, aligned);
            require_file(file, end, mapped, "after an accepted call");
            require_store_matches(s, &keys, file, end, aligned, "after an accepted call");
            require_log_read(s, file, end, old_end);
        } else {
            REQUIRE(!sound, "call %d: refused (%d) %zu sound bytes at the tail %llu", c, rc,
                    len, (unsigned long long)end);
            REQUIRE(allowed_refusal(rc), "call %d: refused with unexpected code %d", c, rc);
            const char *msg = simdr_last_error();
            REQUIRE(msg && *msg, "call %d: refused without a message", c);
            REQUIRE(tail_out == 12345, "call %d: refused but wrote tail_out", c);
            REQUIRE(simdr_count(s) == count_before, "call %d: refused but the count moved", c);
            require_file(file, end, mapped, "after a refused call");
            require_store_matches(s, &keys, file, end, aligned, "after a refused call");
        }
        if (reopen_between) {
            REQUIRE(simdr_close(s) == SIMDR_OK, "close between calls");
            require_file(file, end, 0, "closed between calls");
            s = open_store(aligned, mapped, SIMDR_OPEN_EXISTING);
            require_store_matches(s, &keys, file, end, aligned, "reopened between calls");
        }
    }

    /* The whole run: checked, readable as a log, and the same after reopen. */
    simdr_check_report rep;
    REQUIRE(simdr_check(s, NULL, NULL, &rep) == SIMDR_OK && rep.bad_entries == 0,
            "check after the calls");
    require_log_read(s, file, end, 0);
    /* offsets and room a replica could ask for, from the same input bytes */
    const uint64_t room = explicit_from >> 40;
    require_log_read_any(s, file, end, aligned, explicit_from % (end + 2), (size_t)(room % (end + 65)));
    require_log_read_any(s, file, end, aligned, (explicit_from >> 8) % (end + 2),
                         (size_t)((room >> 8) % 200));
    require_log_read_any(s, file, end, aligned, explicit_from, (size_t)(room % 4096));
    REQUIRE(simdr_close(s) == SIMDR_OK, "close");
    require_file(file, end, 0, "closed");
    for (int readonly = 0; readonly < 2; readonly++) {
        s = open_store(aligned, 0, readonly ? SIMDR_OPEN_READONLY : SIMDR_OPEN_EXISTING);
        simdr_recovery_info ri;
        REQUIRE(simdr_recovery(s, &ri) == SIMDR_OK && ri.bytes_cut == 0 &&
                    ri.valid_size == end && !ri.truncated,
                "reopen (read-only %d) cut %llu bytes", readonly,
                (unsigned long long)ri.bytes_cut);
        REQUIRE(simdr_check(s, NULL, NULL, &rep) == SIMDR_OK && rep.bad_entries == 0,
                "check after reopen (read-only %d)", readonly);
        require_store_matches(s, &keys, file, end, aligned,
                              readonly ? "reopened read-only" : "reopened writable");
        REQUIRE(simdr_close(s) == SIMDR_OK, "close after reopen");
        require_file(file, end, 0, "after reopen");
    }
    free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    run(data, size);
    clear_dir();
    return 0;
}
