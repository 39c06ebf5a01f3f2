/*
 * adapter_simdr.c - benchmark adapter for simdr itself, through the public
 * header only.
 *
 * Default configuration (aligned layout, SIMDR_SYNC_NONE); variant 1 selects
 * the unaligned layout, variant 2 mapped appends; durable mode is
 * SIMDR_SYNC_DATA. Gets are zero-copy,
 * compared in place: one read scope per get (simdr_read_begin/get/end) for
 * R1 and R2, simdr_get + simdr_entry_data for R1h; the batch read is
 * simdr_read_get_batch in a scope per call; a scan is simdr_for_each (one
 * thread); compaction is simdr_compact. drop_hints deletes every file beside
 * store.bin so that an open must rebuild its index from the store file alone.
 *
 * SIMDR_BENCH_VERIFY=0 in the environment opens with verify_reads = 0 (no CRC
 * check on reads), so the cost of the default check can be measured: run R1
 * and R1b once with and once without it.
 */
#include "adapter.h"

#include <dirent.h>
#include <simdr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIMDR_BENCH_FILE "store.bin"

typedef struct sd_thread {
    simdr_store *st;
    size_t cap;       /* capacity of keys and out */
    simdr_key *keys;
    const void **vals;
    size_t *lens;
    simdr_entry **out; /* before read scopes */
    size_t kvcap;     /* capacity of kv */
    simdr_kv *kv;
} sd_thread;

typedef struct sd_scan_ctx {
    bench_scan_fn fn;
    void *ctx;
} sd_scan_ctx;

static int sd_fail(const char *what, int rc)
{
    fprintf(stderr, "simdr: %s: %s (%s)\n", what, simdr_strerror(rc), simdr_last_error());
    return BENCH_ERROR;
}

static void *sd_open(const char *dir, const bench_open_opts *o)
{
    char path[4096];
    simdr_options opts;
    simdr_store *st = NULL;
    int rc;
    simdr_options_init(&opts);
    opts.open_mode = o->create ? SIMDR_OPEN_CREATE : SIMDR_OPEN_EXISTING;
    opts.layout = o->variant == 1 ? SIMDR_LAYOUT_UNALIGNED : SIMDR_LAYOUT_ALIGNED64;
    if (o->variant == 2) opts.append_mode = SIMDR_APPEND_MAPPED;
    if (o->variant == 3) opts.append_mode = SIMDR_APPEND_ZEROED;
    opts.durability = o->durable ? SIMDR_SYNC_DATA : SIMDR_SYNC_NONE;
    const char *verify = getenv("SIMDR_BENCH_VERIFY");
    opts.verify_reads = !(verify && !strcmp(verify, "0"));
    /* SIMDR_BENCH_EXPECTED_KEYS=N: the index sized for N keys at open
     * (simdr_options.expected_keys), as a bulk load of a known size would. */
    const char *expected = getenv("SIMDR_BENCH_EXPECTED_KEYS");
    if (expected) opts.expected_keys = strtoull(expected, NULL, 10);
    snprintf(path, sizeof path, "%s/" SIMDR_BENCH_FILE, dir);
    if ((rc = simdr_open(&st, path, &opts)) != SIMDR_OK) {
        sd_fail("open", rc);
        return NULL;
    }
    return st;
}

/* The unaligned layout as an engine of its own, so both layouts run in one
 * interleaved run. */
static void *sd_open_unaligned(const char *dir, const bench_open_opts *o)
{
    bench_open_opts u = *o;
    u.variant = 1;
    return sd_open(dir, &u);
}

static int sd_close(void *p)
{
    int rc = simdr_close(p);
    return rc == SIMDR_OK ? 0 : sd_fail("close", rc);
}

static void *sd_thread_begin(void *p)
{
    sd_thread *t = calloc(1, sizeof(*t));
    if (t)
        t->st = p;
    return t;
}

static void sd_thread_end(void *p, void *tp)
{
    sd_thread *t = tp;
    (void)p;
    free(t->keys);
    free(t->vals);
    free(t->lens);
    free(t->out);
    free(t->kv);
    free(t);
}

static int sd_put(void *tp, const char *key, size_t klen, const void *val, size_t vlen)
{
    sd_thread *t = tp;
    int rc = simdr_put(t->st, key, klen, val, vlen, NULL);
    return rc == SIMDR_OK ? 0 : sd_fail("put", rc);
}

static int sd_put_batch(void *tp, const bench_kv *items, size_t n)
{
    sd_thread *t = tp;
    int rc;
    if (n > t->kvcap) {
        free(t->kv);
        t->kv = malloc(n * sizeof(*t->kv));
        t->kvcap = t->kv ? n : 0;
        if (!t->kv)
            return BENCH_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        t->kv[i].key = items[i].key;
        t->kv[i].key_len = items[i].key_len;
        t->kv[i].value = items[i].value;
        t->kv[i].value_len = items[i].value_len;
    }
    rc = simdr_put_batch(t->st, t->kv, n, NULL);
    return rc == SIMDR_OK ? 0 : sd_fail("put_batch", rc);
}

#ifdef SIMDR_HAS_READ_SCOPE
static int sd_get(void *tp, const char *key, size_t klen, const void *expect, size_t elen)
{
    sd_thread *t = tp;
    simdr_read scope;
    const void *v;
    size_t vlen;
    simdr_read_begin(t->st, &scope);
    int rc = simdr_read_get(&scope, key, klen, &v, &vlen);
    int res = rc == SIMDR_NOTFOUND ? BENCH_NOTFOUND
              : rc != SIMDR_OK     ? sd_fail("read_get", rc)
              : vlen != elen || memcmp(v, expect, elen) != 0 ? BENCH_MISMATCH
                                                            : 0;
    simdr_read_end(&scope);
    return res;
}

#endif

static int sd_get_handle(void *tp, const char *key, size_t klen, const void *expect, size_t elen)
{
    sd_thread *t = tp;
    simdr_entry *e;
    int res = 0;
    int rc = simdr_get(t->st, key, klen, &e);
    if (rc == SIMDR_NOTFOUND)
        return BENCH_NOTFOUND;
    if (rc != SIMDR_OK)
        return sd_fail("get", rc);
    if (simdr_entry_size(e) != elen || memcmp(simdr_entry_data(e), expect, elen) != 0)
        res = BENCH_MISMATCH;
    simdr_entry_release(e);
    return res;
}

#ifdef SIMDR_HAS_READ_SCOPE
static int sd_get_batch(void *tp, const bench_kv *keys, size_t n, const void *expect,
                        size_t elen)
{
    sd_thread *t = tp;
    const unsigned char *exp = expect;
    int res = 0;
    if (n > t->cap) {
        free(t->keys);
        free(t->vals);
        free(t->lens);
        t->keys = malloc(n * sizeof(*t->keys));
        t->vals = malloc(n * sizeof(*t->vals));
        t->lens = malloc(n * sizeof(*t->lens));
        if (!t->keys || !t->vals || !t->lens) {
            t->cap = 0;
            return BENCH_ERROR;
        }
        t->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        t->keys[i].key = keys[i].key;
        t->keys[i].key_len = keys[i].key_len;
    }
    simdr_read scope;
    simdr_read_begin(t->st, &scope);
    int64_t found = simdr_read_get_batch(&scope, t->keys, n, t->vals, t->lens);
    if (found < 0) {
        simdr_read_end(&scope);
        return sd_fail("read_get_batch", (int)found);
    }
    for (size_t i = 0; i < n; i++) {
        if (!t->vals[i])
            res = BENCH_NOTFOUND;
        else if (t->lens[i] != elen || memcmp(t->vals[i], exp + i * elen, elen))
            res = BENCH_MISMATCH;
    }
    simdr_read_end(&scope);
    return res;
}
#else
/* A library from before read scopes (for before/after runs): handles. */
static int sd_get_batch(void *tp, const bench_kv *keys, size_t n, const void *expect,
                        size_t elen)
{
    sd_thread *t = tp;
    const unsigned char *exp = expect;
    int res = 0;
    if (n > t->cap) {
        free(t->keys);
        free(t->out);
        t->keys = malloc(n * sizeof(*t->keys));
        t->out = malloc(n * sizeof(*t->out));
        if (!t->keys || !t->out) {
            t->cap = 0;
            return BENCH_ERROR;
        }
        t->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        t->keys[i].key = keys[i].key;
        t->keys[i].key_len = keys[i].key_len;
    }
    int64_t found = simdr_get_batch(t->st, t->keys, n, t->out);
    if (found < 0)
        return sd_fail("get_batch", (int)found);
    for (size_t i = 0; i < n; i++) {
        simdr_entry *e = t->out[i];
        if (!e) {
            res = BENCH_NOTFOUND;
            continue;
        }
        if (simdr_entry_size(e) != elen || memcmp(simdr_entry_data(e), exp + i * elen, elen))
            res = BENCH_MISMATCH;
        simdr_entry_release(e);
    }
    return res;
}
#endif

static int sd_visit(void *ctx, const simdr_entry *e)
{
    sd_scan_ctx *s = ctx;
    return s->fn(s->ctx, NULL, 0, simdr_entry_data(e), (size_t)simdr_entry_size(e));
}

static int sd_scan(void *tp, bench_scan_fn fn, void *ctx)
{
    sd_thread *t = tp;
    sd_scan_ctx s = {fn, ctx};
    int rc = simdr_for_each(t->st, sd_visit, &s);
    return (rc == SIMDR_OK || rc == SIMDR_ESTOPPED) ? 0 : sd_fail("for_each", rc);
}

static int sd_compact(void *p, const char *dir, char *measure_dir, size_t cap)
{
    int rc = simdr_compact(p);
    snprintf(measure_dir, cap, "%s", dir);
    return rc == SIMDR_OK ? 0 : sd_fail("compact", rc);
}

static double sd_index_bytes_per_key(void *p)
{
    uint64_t n = simdr_count(p);
    return n ? (double)simdr_index_bytes(p) / (double)n : 0.0;
}

static int sd_drop_hints(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[4096];
    if (!d)
        return BENCH_ERROR;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, SIMDR_BENCH_FILE))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    return 0;
}

/* The columns of simdr: one adapter each, differing only in how they open. */
#ifdef SIMDR_HAS_READ_SCOPE
#define SD_GETS .get = sd_get, .get_handle = sd_get_handle
#else
#define SD_GETS .get = sd_get_handle
#endif
#define SD_ADAPTER(label, open_fn)                                                        \
    {                                                                                     \
        .name = label, .not_a_peer = 1, .open = open_fn, .close = sd_close,               \
        .thread_begin = sd_thread_begin, .thread_end = sd_thread_end, .put = sd_put,      \
        .put_batch = sd_put_batch, SD_GETS, .get_batch = sd_get_batch, .scan = sd_scan,   \
        .compact = sd_compact, .index_bytes_per_key = sd_index_bytes_per_key,             \
        .drop_hints = sd_drop_hints,                                                      \
    }

const bench_adapter bench_adapter_simdr = SD_ADAPTER("simdr", sd_open);
const bench_adapter bench_adapter_simdr_unaligned = SD_ADAPTER("simdr-u", sd_open_unaligned);

/* ---- simdr-m: mapped appends (simdr_options.append_mode) ----
 * The default configuration with SIMDR_APPEND_MAPPED: puts, batches and
 * deletes copy into a writable mapping of preallocated file space instead
 * of one pwrite each. Reads are the default engine's; the SIMDR_BENCH_*
 * variables apply as to the default engine. */
static void *sd_open_mapped(const char *dir, const bench_open_opts *o)
{
    bench_open_opts m = *o;
    m.variant = 2;
    return sd_open(dir, &m);
}

const bench_adapter bench_adapter_simdr_mapped = SD_ADAPTER("simdr-m", sd_open_mapped);

/* ---- simdr-z: zeroed appends (simdr_options.append_mode) ----
 * The default configuration with SIMDR_APPEND_ZEROED: pwrite appends into
 * zeros written ahead of the tail once the store syncs in small groups, so
 * the durable puts of W4 overwrite blocks inside the file's length instead
 * of growing it. Elsewhere it writes as the default engine (no syncs: no
 * zeros). */
static void *sd_open_zeroed(const char *dir, const bench_open_opts *o)
{
    bench_open_opts m = *o;
    m.variant = 3;
    return sd_open(dir, &m);
}

const bench_adapter bench_adapter_simdr_zeroed = SD_ADAPTER("simdr-z", sd_open_zeroed);
