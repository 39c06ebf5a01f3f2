/*
 * test_interop.c - opens every store file the Rust crate simd-r-drive wrote
 * (the interop directory) and checks it against its JSON manifest (compiled
 * into interop_manifest.h): live count, every key's value (hex or SHA-256),
 * deleted and never-written keys absent, detected layout, valid size after
 * recovery; read-only opens never modify the files; torn files are repaired
 * on a writable copy (cut bytes saved); copies take new writes and compaction
 * and reopen intact.
 */
#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "interop_manifest.h"

#ifndef SIMDR_INTEROP_DIR
#error "SIMDR_INTEROP_DIR must be defined"
#endif

static void file_path(char *out, size_t cap, const im_file *m) {
    tu_join(out, cap, SIMDR_INTEROP_DIR, m->file);
}

typedef struct visit_ctx {
    uint64_t n, bytes;
} visit_ctx;

static int visit(void *ctx, const simdr_entry *e) {
    visit_ctx *v = ctx;
    v->n++;
    v->bytes += simdr_entry_size(e);
    return 0;
}

/* Checks every key of the manifest in the open store s. */
static void check_keys(simdr_store *s, const im_file *m) {
    uint8_t key[1024];
    uint64_t live_bytes = 0, live = 0;
    for (size_t i = 0; i < m->nkeys; i++) {
        const im_key *k = &m->keys[i];
        int64_t kl = tu_unhex(k->key_hex, key, sizeof key);
        assert_true(kl >= 0);
        assert_int_equal(simdr_hash_key(key, (size_t)kl), k->hash);
        simdr_entry *e = NULL;
        int rc = simdr_get(s, key, (size_t)kl, &e);
        if (!k->present) {
            if (rc != SIMDR_NOTFOUND)
                fprintf(stderr, "%s: deleted key %s reads %d\n", m->file, k->key_hex, rc);
            assert_int_equal(rc, SIMDR_NOTFOUND);
            assert_int_equal(simdr_exists(s, key, (size_t)kl), 0);
            continue;
        }
        if (rc != SIMDR_OK)
            fprintf(stderr, "%s: key %s reads %d\n", m->file, k->key_hex, rc);
        assert_int_equal(rc, SIMDR_OK);
        assert_int_equal(simdr_entry_size(e), k->value_len);
        assert_int_equal(simdr_entry_key_hash(e), k->hash);
        assert_int_equal(simdr_entry_verify(e), SIMDR_OK);
        assert_int_equal(simdr_entry_is_tombstone(e), 0);
        if (k->value_hex) {
            char *hex = malloc(2 * k->value_len + 1);
            tu_hex(simdr_entry_data(e), k->value_len, hex);
            assert_string_equal(hex, k->value_hex);
            free(hex);
        } else {
            uint8_t d[32];
            char hex[65];
            tu_sha256(simdr_entry_data(e), k->value_len, d);
            tu_hex(d, 32, hex);
            assert_string_equal(hex, k->value_sha256);
        }
        if (simdr_layout_of(s) == SIMDR_LAYOUT_ALIGNED64)
            assert_int_equal(simdr_entry_offset(e) % 64, 0);
        else
            assert_int_equal(simdr_entry_offset(e), simdr_entry_start(e));
        simdr_entry_release(e);
        live++;
        live_bytes += k->value_len;
    }
    for (size_t i = 0; i < m->nabsent; i++) {
        int64_t kl = tu_unhex(m->absent_hex[i], key, sizeof key);
        assert_true(kl >= 0);
        tu_expect_absent(s, key, (size_t)kl);
    }
    assert_int_equal(live, m->live_count);
    assert_int_equal(live_bytes, m->live_payload_bytes);
    assert_int_equal(simdr_count(s), m->live_count);
    assert_int_equal(simdr_is_empty(s), m->live_count == 0);
    assert_int_equal(simdr_layout_of(s), m->layout);
    visit_ctx v = {0, 0};
    assert_int_equal(simdr_for_each(s, visit, &v), SIMDR_OK);
    assert_int_equal(v.n, m->live_count);
    assert_int_equal(v.bytes, m->live_payload_bytes);
}

typedef struct issues_seen {
    int n;
    uint64_t offset, end;
} issues_seen;

static int on_issue(void *ctx, const simdr_check_issue *issue) {
    issues_seen *is = ctx;
    fprintf(stderr, "  check: %s at %llu..%llu\n", issue->what,
            (unsigned long long)issue->offset, (unsigned long long)issue->end);
    assert_int_equal(issue->code, SIMDR_ECORRUPT);
    is->n++;
    is->offset = issue->offset;
    is->end = issue->end;
    return 0;
}

static void test_every_file_listed(void **state) {
    (void)state;
    DIR *d = opendir(SIMDR_INTEROP_DIR);
    assert_non_null(d);
    struct dirent *de;
    int bins = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".bin") != 0)
            continue;
        bins++;
        int listed = 0;
        for (int i = 0; i < IM_NFILES; i++)
            listed |= strcmp(im_files[i].file, de->d_name) == 0;
        if (!listed)
            fprintf(stderr, "%s is not in index.json\n", de->d_name);
        assert_true(listed);
    }
    closedir(d);
    assert_int_equal(bins, IM_NFILES);
    assert_true(IM_NFILES > 0);
}

static void test_readonly_open_matches_manifest(void **state) {
    (void)state;
    for (int i = 0; i < IM_NFILES; i++) {
        const im_file *m = &im_files[i];
        char p[4096];
        file_path(p, sizeof p, m);
        fprintf(stderr, "checking %s (%s, %s)\n", m->file, m->kind,
                m->layout == SIMDR_LAYOUT_ALIGNED64 ? "aligned64" : "unaligned");
        uint8_t sha[32];
        char hex[65];
        tu_sha256_file(p, sha);
        tu_hex(sha, 32, hex);
        assert_string_equal(hex, m->file_sha256);
        assert_int_equal(tu_file_size(p), (int64_t)m->file_size);

        simdr_store *s = tu_open(p, SIMDR_OPEN_READONLY, !m->layout);
        assert_int_equal(simdr_file_size(s), m->valid_size);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.file_size, m->file_size);
        assert_int_equal(ri.valid_size, m->valid_size);
        assert_int_equal(ri.bytes_cut, m->file_size - m->valid_size);
        assert_int_equal(ri.truncated, 0);
        check_keys(s, m);
        simdr_check_report rep;
        memset(&rep, 0, sizeof rep);
        issues_seen is = {0, 0, 0};
        if (m->valid_size == m->file_size) {
            assert_int_equal(simdr_check(s, on_issue, &is, &rep), SIMDR_OK);
            assert_int_equal(is.n, 0);
        } else {
            /* a read-only open keeps the torn bytes: check reports them, as
             * one problem after the valid chain */
            assert_int_equal(simdr_check(s, on_issue, &is, &rep), SIMDR_ECORRUPT);
            assert_int_equal(is.n, 1);
            assert_int_equal(is.offset, m->valid_size);
            assert_int_equal(is.end, m->file_size);
        }
        assert_int_equal(rep.bad_entries, (uint64_t)is.n);
        assert_true(rep.entries >= m->live_count);
        simdr_entry *last = NULL;
        assert_int_equal(simdr_get_last(s, &last), SIMDR_OK);
        assert_int_equal(simdr_entry_end(last), m->valid_size);
        simdr_entry_release(last);
        assert_int_equal(simdr_close(s), SIMDR_OK);

        /* never modified */
        uint8_t sha2[32];
        tu_sha256_file(p, sha2);
        assert_memory_equal(sha, sha2, 32);
        assert_int_equal(tu_file_size(p), (int64_t)m->file_size);
    }
}

static void test_writable_copies(void **state) {
    (void)state;
    for (int i = 0; i < IM_NFILES; i++) {
        const im_file *m = &im_files[i];
        char src[4096], dst[4096];
        file_path(src, sizeof src, m);
        char *dir = tu_mkdtemp();
        tu_join(dst, sizeof dst, dir, m->file);
        tu_copy_file(src, dst);
        size_t orig_len = 0;
        uint8_t *orig = tu_read_file(src, &orig_len);
        assert_non_null(orig);

        simdr_store *s = tu_open(dst, SIMDR_OPEN_EXISTING, !m->layout);
        simdr_recovery_info ri;
        assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
        assert_int_equal(ri.file_size, m->file_size);
        assert_int_equal(ri.valid_size, m->valid_size);
        assert_int_equal(tu_file_size(dst), (int64_t)m->valid_size);
        if (m->valid_size != m->file_size) {
            assert_int_equal(ri.truncated, 1);
            assert_int_equal(ri.bytes_cut, m->file_size - m->valid_size);
            size_t cut_len = 0;
            uint8_t *cut = tu_read_file(ri.saved_path, &cut_len);
            assert_non_null(cut);
            assert_int_equal(cut_len, m->file_size - m->valid_size);
            assert_memory_equal(cut, orig + m->valid_size, cut_len);
            free(cut);
            /* the valid prefix is untouched */
            size_t now_len = 0;
            uint8_t *now = tu_read_file(dst, &now_len);
            assert_memory_equal(now, orig, now_len);
            free(now);
        } else {
            assert_int_equal(ri.truncated, 0);
            assert_int_equal(ri.bytes_cut, 0);
        }
        check_keys(s, m);

        /* new writes follow the file's layout */
        for (int j = 0; j < 20; j++) {
            char k[32], v[64];
            snprintf(k, sizeof k, "interop-new-%d", j);
            snprintf(v, sizeof v, "new value %d for %s", j, m->file);
            tu_put_str(s, k, v);
            simdr_entry *e = NULL;
            assert_int_equal(simdr_get(s, TU_STR(k), &e), SIMDR_OK);
            if (m->layout == SIMDR_LAYOUT_ALIGNED64)
                assert_int_equal(simdr_entry_offset(e) % 64, 0);
            else
                assert_int_equal(simdr_entry_offset(e), simdr_entry_start(e));
            simdr_entry_release(e);
        }
        assert_int_equal(simdr_count(s), m->live_count + 20);
        assert_int_equal(simdr_close(s), SIMDR_OK);

        for (int pass = 0; pass < 2; pass++) {
            s = tu_open(dst, SIMDR_OPEN_EXISTING, !m->layout);
            assert_int_equal(simdr_recovery(s, &ri), SIMDR_OK);
            assert_int_equal(ri.bytes_cut, 0);
            assert_int_equal(simdr_layout_of(s), m->layout);
            assert_int_equal(simdr_count(s), m->live_count + 20);
            for (int j = 0; j < 20; j++) {
                char k[32], v[64];
                snprintf(k, sizeof k, "interop-new-%d", j);
                snprintf(v, sizeof v, "new value %d for %s", j, m->file);
                tu_expect_str(s, k, v);
            }
            /* the reference's keys still read as the manifest says (the new
             * keys are counted apart) */
            uint8_t key[1024];
            for (size_t k = 0; k < m->nkeys; k++) {
                int64_t kl = tu_unhex(m->keys[k].key_hex, key, sizeof key);
                assert_int_equal(simdr_exists(s, key, (size_t)kl), m->keys[k].present);
            }
            assert_int_equal(simdr_check(s, NULL, NULL, NULL), SIMDR_OK);
            if (pass == 0)
                assert_int_equal(simdr_compact(s), SIMDR_OK);
            assert_int_equal(simdr_close(s), SIMDR_OK);
        }
        free(orig);
        tu_rmtree(dir);
        free(dir);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_file_listed),
        cmocka_unit_test(test_readonly_open_matches_manifest),
        cmocka_unit_test(test_writable_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
