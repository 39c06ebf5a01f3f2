/*
 * test_hostile_interop.c - the Rust-written store files (the interop
 * directory) damaged at every byte of their last three entries: cut there
 * (a torn append) or with that byte flipped, then opened read-only and
 * writable (on a copy). Files of both layouts, so a damaged file must not
 * mislead the layout detection either.
 *
 * The history of each file comes from walking its chain: every entry's key
 * hash and payload. Whatever an open of a damaged file answers, it must be
 * SIMDR_OK, SIMDR_ECORRUPT or SIMDR_ENOTSTORE, a read-only open never
 * changes the file, and an open store never serves wrong data: each key
 * reads as one of the values it had in the history, and a key none of whose
 * entries was damaged reads exactly as in the undamaged file (its value, or
 * absent when deleted). A writable open that succeeded takes a new write
 * and reopens with the same answers.
 */
#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SIMDR_INTEROP_DIR
#error "SIMDR_INTEROP_DIR must be defined"
#endif

typedef struct entry {
    uint64_t hash;
    uint64_t start, end; /* the entry's bytes: [start, end), end = metadata end */
    uint64_t payload;    /* offset of the payload */
    uint64_t len;
    int tombstone;
} entry;

typedef struct history {
    uint8_t *bytes; /* the undamaged file */
    size_t size;
    uint64_t valid; /* end of its valid chain */
    entry *e;       /* oldest first */
    size_t n;
} history;

static uint64_t pad_for(uint64_t at, int aligned) { return aligned ? (64 - at % 64) % 64 : 0; }

/* Walks the chain ending at h->valid; the layout is the one the reference
 * open detected. */
static void walk(history *h, int layout) {
    int aligned = layout == SIMDR_LAYOUT_ALIGNED64;
    size_t cap = 64;
    h->e = malloc(cap * sizeof *h->e);
    h->n = 0;
    uint64_t end = h->valid;
    while (end > 0) {
        assert_true(end >= 21);
        const uint8_t *m = h->bytes + end - 20;
        uint64_t prev = tu_get_le64(m + 8);
        assert_true(prev < end - 20);
        entry x = {tu_get_le64(m), prev, end, prev, end - 20 - prev, 0};
        if (x.len == 1 && h->bytes[prev] == 0) {
            x.tombstone = 1;
        } else {
            x.payload = prev + pad_for(prev, aligned);
            x.len = end - 20 - x.payload;
        }
        uint32_t crc = (uint32_t)m[16] | (uint32_t)m[17] << 8 | (uint32_t)m[18] << 16 |
                       (uint32_t)m[19] << 24;
        assert_int_equal(tu_crc32(h->bytes + x.payload, (size_t)x.len), crc);
        if (h->n == cap) h->e = realloc(h->e, (cap *= 2) * sizeof *h->e);
        h->e[h->n++] = x;
        end = prev;
    }
    for (size_t i = 0; i < h->n / 2; i++) { /* oldest first */
        entry t = h->e[i];
        h->e[i] = h->e[h->n - 1 - i];
        h->e[h->n - 1 - i] = t;
    }
}

/* What the damaged store may answer for the key of entry k. dlo..dhi: the
 * damaged bytes (a cut: from the cut on); valid: the end of what the open
 * took as the store. A file without a side file (as the Rust crate writes
 * them) does not say what was made durable, so a checksum that fails near
 * its end is taken for a torn append, whose later entries are lost with it
 * as after a power cut (the store is then a prefix of its history; a
 * writable open saves what it cuts): entries past valid count as damaged.
 * Nothing below the first damaged entry may be lost (check_valid). */
static void check_key(simdr_store *s, const history *h, uint64_t hash, uint64_t dlo,
                      uint64_t dhi, uint64_t valid, const char *what) {
    int touched = 0;
    const entry *newest = NULL;
    for (size_t i = 0; i < h->n; i++) {
        if (h->e[i].hash != hash) continue;
        newest = &h->e[i];
        if ((h->e[i].end > dlo && h->e[i].start < dhi) || h->e[i].end > valid) touched = 1;
    }
    assert_non_null(newest);
    simdr_entry *e = NULL;
    int rc = simdr_get_hashed(s, hash, &e);
    int ok = 0;
    if (rc == SIMDR_OK) {
        uint64_t size = simdr_entry_size(e);
        const uint8_t *data = simdr_entry_data(e);
        if (!touched) {
            ok = !newest->tombstone && size == newest->len &&
                 !memcmp(data, h->bytes + newest->payload, (size_t)size);
        } else {
            for (size_t i = 0; i < h->n && !ok; i++)
                ok = h->e[i].hash == hash && !h->e[i].tombstone && h->e[i].len == size &&
                     !memcmp(data, h->bytes + h->e[i].payload, (size_t)size);
        }
        simdr_entry_release(e);
    } else if (rc == SIMDR_NOTFOUND) {
        ok = touched || newest->tombstone;
    } else if (rc == SIMDR_ECORRUPT) {
        ok = touched;
    }
    if (!ok)
        fprintf(stderr, "%s: key hash %016llx%s reads %s\n", what, (unsigned long long)hash,
                touched ? " (damaged)" : "", rc == SIMDR_OK ? "a wrong value" : simdr_strerror(rc));
    assert_true(ok);
}

static void check_store(simdr_store *s, const history *h, uint64_t dlo, uint64_t dhi,
                        const char *what) {
    simdr_recovery_info info;
    assert_int_equal(simdr_recovery(s, &info), SIMDR_OK);
    uint64_t valid = info.valid_size;
    /* The entries before the damaged one are whole: never cut. */
    uint64_t first_damaged = h->valid;
    for (size_t i = 0; i < h->n; i++)
        if (h->e[i].end > dlo && h->e[i].start < dhi) {
            first_damaged = h->e[i].start;
            break;
        }
    if (valid < first_damaged)
        fprintf(stderr, "%s: the open kept %llu bytes, the first damaged entry starts at %llu\n",
                what, (unsigned long long)valid, (unsigned long long)first_damaged);
    assert_true(valid >= first_damaged);
    for (size_t i = 0; i < h->n; i++) {
        /* Each key once: at its newest entry. */
        int newer = 0;
        for (size_t j = i + 1; j < h->n && !newer; j++) newer = h->e[j].hash == h->e[i].hash;
        if (!newer) check_key(s, h, h->e[i].hash, dlo, dhi, valid, what);
    }
}

static int open_as(simdr_store **s, const char *path, int mode) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    *s = NULL;
    return simdr_open(s, path, &o);
}

static void remove_beside(const char *dir) {
    /* A fresh directory per case would cost more than the case: remove the
     * store's beside files (side file, hint, saved torn bytes) instead. */
    tu_rmtree(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
}

/* One damaged file: data[0..len), the damage at [dlo, dhi). */
static void try_damaged(const char *dir, const history *h, const uint8_t *data, size_t len,
                        uint64_t dlo, uint64_t dhi, const char *what) {
    char path[4200];
    tu_join(path, sizeof path, dir, "damaged.bin");
    remove_beside(dir);
    tu_write_file(path, data, len);
    simdr_store *s;
    int rc = open_as(&s, path, SIMDR_OPEN_READONLY);
    if (rc != SIMDR_OK && rc != SIMDR_ECORRUPT && rc != SIMDR_ENOTSTORE)
        fprintf(stderr, "%s: read-only open: %s\n", what, simdr_last_error());
    assert_true(rc == SIMDR_OK || rc == SIMDR_ECORRUPT || rc == SIMDR_ENOTSTORE);
    if (rc == SIMDR_OK) {
        check_store(s, h, dlo, dhi, what);
        simdr_close(s);
    }
    size_t after_len = 0;
    uint8_t *after = tu_read_file(path, &after_len);
    assert_non_null(after);
    assert_int_equal(after_len, len);
    assert_true(memcmp(after, data, len) == 0);
    free(after);

    rc = open_as(&s, path, SIMDR_OPEN_EXISTING);
    if (rc != SIMDR_OK && rc != SIMDR_ECORRUPT && rc != SIMDR_ENOTSTORE)
        fprintf(stderr, "%s: writable open: %s\n", what, simdr_last_error());
    assert_true(rc == SIMDR_OK || rc == SIMDR_ECORRUPT || rc == SIMDR_ENOTSTORE);
    if (rc != SIMDR_OK) return;
    check_store(s, h, dlo, dhi, what);
    assert_int_equal(simdr_put(s, TU_STR("written after the damage"), "new", 3, NULL), SIMDR_OK);
    assert_int_equal(simdr_close(s), SIMDR_OK);
    assert_int_equal(open_as(&s, path, SIMDR_OPEN_EXISTING), SIMDR_OK);
    check_store(s, h, dlo, dhi, what);
    tu_expect_str(s, "written after the damage", "new");
    simdr_close(s);
}

/* The offsets of entry x worth damaging: the ends of its pad, its
 * metadata, and the first, last and (spread) middle bytes of its payload;
 * up to max_middle of the latter. */
static size_t offsets_of(const entry *x, uint64_t *out, size_t max_middle) {
    size_t n = 0;
    if (x->payload > x->start) { /* the pad: its first and last byte */
        out[n++] = x->start;
        if (x->payload - 1 > x->start) out[n++] = x->payload - 1;
    }
    uint64_t pl = x->len;
    for (uint64_t i = 0; i < pl && i < 3; i++) out[n++] = x->payload + i;
    for (uint64_t k = 1; pl > 6 && k <= max_middle; k++) out[n++] = x->payload + pl * k / (max_middle + 1);
    for (uint64_t i = pl > 3 ? pl - 3 : pl; i < pl; i++) out[n++] = x->payload + i;
    for (uint64_t o = x->end - 20; o < x->end; o++) out[n++] = o;
    return n;
}

/* For files of several MiB: the metadata and the payload's first and last
 * bytes only. */
static size_t big_offsets_of(const entry *x, uint64_t *out) {
    size_t n = 0;
    out[n++] = x->payload;
    out[n++] = x->payload + x->len - 1;
    for (uint64_t o = x->end - 20; o < x->end; o++) out[n++] = o;
    return n;
}

/* $SIMDR_TEST_SCALE below the full 10 (the sanitizer runs use 1): the
 * last two entries of each file and fewer payload bytes. */
static int reduced(void) {
    const char *e = getenv("SIMDR_TEST_SCALE");
    return e && atoi(e) > 0 && atoi(e) < 10;
}

static void damage_file(const char *name, const char *dir) {
    char src[4200], ref[4200];
    snprintf(src, sizeof src, "%s/%s", SIMDR_INTEROP_DIR, name);
    history h = {0};
    h.bytes = tu_read_file(src, &h.size);
    assert_non_null(h.bytes);
    /* The reference: what an open of the undamaged file (a copy) finds. */
    remove_beside(dir);
    tu_join(ref, sizeof ref, dir, "reference.bin");
    tu_write_file(ref, h.bytes, h.size);
    simdr_store *s;
    assert_int_equal(open_as(&s, ref, SIMDR_OPEN_READONLY), SIMDR_OK);
    simdr_recovery_info info;
    simdr_recovery(s, &info);
    h.valid = info.valid_size;
    int layout = simdr_layout_of(s);
    simdr_close(s);
    walk(&h, layout);
    assert_true(h.n >= 3);
    /* A torn file keeps its torn bytes: the damage goes into the chain. */
    uint8_t *buf = malloc(h.size ? h.size : 1);
    assert_non_null(buf);
    int big = h.size > (1u << 20);
    uint64_t offs[600];
    size_t cases = 0;
    /* Files of several MiB cost a copy per case: fewer cases there. */
    for (size_t k = h.n - (big ? 1 : reduced() ? 2 : 3); k < h.n; k++) {
        size_t n = big ? big_offsets_of(&h.e[k], offs)
                       : offsets_of(&h.e[k], offs, reduced() ? 2 : 8);
        if (big && reduced()) { /* the metadata's first, middle and last byte */
            offs[0] = h.e[k].end - 20;
            offs[1] = h.e[k].end - 11;
            offs[2] = h.e[k].end - 1;
            n = 3;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t at = offs[i];
            char what[256];
            /* Cut at the offset: everything from there is gone. */
            snprintf(what, sizeof what, "%s cut at %llu", name, (unsigned long long)at);
            try_damaged(dir, &h, h.bytes, (size_t)at, at, UINT64_MAX, what);
            /* One bit flipped, and (metadata) the whole byte inverted. */
            int in_meta = at >= h.e[k].end - 20;
            for (int flip = 0; flip < 2 && !(big && flip) && !(flip && !in_meta); flip++) {
                memcpy(buf, h.bytes, h.size);
                buf[at] ^= flip ? 0xff : 0x01;
                snprintf(what, sizeof what, "%s byte %llu ^ %s", name, (unsigned long long)at,
                         flip ? "0xff" : "0x01");
                try_damaged(dir, &h, buf, h.size, at, at + 1, what);
            }
            cases++;
        }
    }
    assert_true(cases >= (big ? (reduced() ? 3u : 20u) : reduced() ? 40u : 60u));
    free(buf);
    free(h.e);
    free(h.bytes);
}

static void test_damaged_interop_files(void **state) {
    (void)state;
    /* tmpfs when there is one: a repair syncs what it saves and cuts, and
     * thousands of them would wait on a disk for nothing this test checks. */
    char *dir = NULL;
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
        char tmpl[] = "/dev/shm/simdr-hostile-XXXXXX";
        char *d = mkdtemp(tmpl);
        if (d) dir = strdup(d);
    }
    if (!dir) dir = tu_mkdtemp();
    char work[4200];
    tu_join(work, sizeof work, dir, "case");
    assert_int_equal(mkdir(work, 0700), 0);
    DIR *d = opendir(SIMDR_INTEROP_DIR);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".bin") != 0) continue;
        damage_file(de->d_name, work);
        files++;
    }
    closedir(d);
    assert_true(files >= 2);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_damaged_interop_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
