/*
 * bench.c - the side-by-side benchmark of simdr against LMDB, RocksDB,
 * LevelDB, SQLite, tkrzw and Kyoto Cabinet (issue 5).
 *
 * Every engine is driven through the same workload code (adapter.h). Each
 * engine of each run executes in its own forked child, on fresh databases in
 * a temporary directory, so its peak RSS can be read from wait4(); the child
 * sends its figures back through a pipe. With --runs K the table reports the
 * median of K runs. Every read checks the value it got; a wrong or missing
 * value aborts the benchmark with an error.
 *
 * Workloads (N keys "key{i}", value = i as 8-byte little-endian):
 *   W1  N single puts, each its own commit              (M puts/s)
 *   W2  the same N in batches of 1,000                   (M puts/s)
 *   W3  10,000 single puts of 4,096-byte random values   (MB/s)
 *   R1  N gets, fixed-seed random order, one thread      (ns/get)
 *       (R1w: the same gets again right after, the pages the first pass
 *       touched now mapped; R1h: the same through a handle that outlives the call, where the
 *       engine has one besides its fastest get)
 *   R1b R1 through the engine's batch read, 1,000 keys a call (ns/key)
 *   R2  R1 split over 2 threads                          (M gets/s, aggregate)
 *   O1  close, reopen, one get                           (ms; close timed apart)
 *   I1  full scan of live entries                        (ms)
 *   C1  overwrite every key once, then compact           (s; sizes before/after)
 *   W4  10,000 durable single puts, 1 and 2 threads      (puts/s)
 *   and memory: peak RSS per engine, index bytes per key, file size after W2.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Engines and metrics                                                       */
/* ------------------------------------------------------------------------ */

static const bench_adapter *const all_engines[] = {
#ifdef BENCH_WITH_SIMDR
    &bench_adapter_simdr, &bench_adapter_simdr_unaligned, &bench_adapter_simdr_mapped,
    &bench_adapter_simdr_zeroed,
    &bench_adapter_floor, &bench_adapter_floor_unaligned, &bench_adapter_floor_crc,
#endif
    &bench_adapter_lmdb,  &bench_adapter_rocksdb, &bench_adapter_leveldb,
    &bench_adapter_sqlite, &bench_adapter_tkrzw,  &bench_adapter_kyoto,
};
#define N_ENGINES (sizeof all_engines / sizeof all_engines[0])

enum { HIGHER = 1, LOWER = -1 };

enum metric {
    M_W1, M_W2, M_W3, M_R1, M_R1W, M_R1H, M_R1B, M_R1B_CALL, M_R2, M_O1, M_O1_COLD, M_CLOSE, M_I1,
    M_C1, M_C1_BEFORE, M_C1_AFTER, M_W4_1, M_W4_2, M_W4_SCALE, M_RSS, M_RSS_PRE_C1,
    M_IDX, M_SIZE_W2, M_SIZE_W2_FILE, M_SIZE_W2_UNAL, M_COUNT
};

typedef struct metric_info {
    const char *label;
    const char *unit;
    int better;     /* HIGHER or LOWER */
    const char *wl; /* workload that produces it */
} metric_info;

static const metric_info metrics[M_COUNT] = {
    [M_W1] = {"W1 single puts", "M/s", HIGHER, "W1"},
    [M_W2] = {"W2 batched puts", "M/s", HIGHER, "W2"},
    [M_W3] = {"W3 4 KiB puts", "MB/s", HIGHER, "W3"},
    [M_R1] = {"R1 random get", "ns/get", LOWER, "R1"},
    [M_R1W] = {"R1w random get, second pass", "ns/get", LOWER, "R1"},
    [M_R1H] = {"R1h get, handle", "ns/get", LOWER, "R1"},
    [M_R1B] = {"R1b batch get", "ns/key", LOWER, "R1b"},
    [M_R1B_CALL] = {"R1b in the call", "ns/key", LOWER, "R1b"},
    [M_R2] = {"R2 2-thread get", "M/s", HIGHER, "R2"},
    [M_O1] = {"O1 reopen+get", "ms", LOWER, "O1"},
    [M_O1_COLD] = {"O1 no hint file", "ms", LOWER, "O1"},
    [M_CLOSE] = {"close", "ms", LOWER, "O1"},
    [M_I1] = {"I1 full scan", "ms", LOWER, "I1"},
    [M_C1] = {"C1 compact", "s", LOWER, "C1"},
    [M_C1_BEFORE] = {"C1 size before", "MB", LOWER, "C1"},
    [M_C1_AFTER] = {"C1 size after", "MB", LOWER, "C1"},
    [M_W4_1] = {"W4 durable 1 thr", "puts/s", HIGHER, "W4"},
    [M_W4_2] = {"W4 durable 2 thr", "puts/s", HIGHER, "W4"},
    [M_W4_SCALE] = {"W4 2 thr / 1 thr", "x", HIGHER, "W4"},
    [M_RSS] = {"peak RSS", "MB", LOWER, "MEM"},
    [M_RSS_PRE_C1] = {"peak RSS before C1", "MB", LOWER, "MEM"},
    [M_IDX] = {"index", "B/key", LOWER, "MEM"},
    [M_SIZE_W2] = {"disk after W2", "MB", LOWER, "W2"},
    [M_SIZE_W2_FILE] = {"  of which store file", "MB", LOWER, "W2"},
    [M_SIZE_W2_UNAL] = {"store file unaligned", "MB", LOWER, "W2"},
};

static const char *const workload_names[] = {"W1", "W2", "W3", "R1", "R1b", "R2",
                                             "O1", "I1", "C1", "W4", "MEM"};
#define N_WORKLOADS (sizeof workload_names / sizeof workload_names[0])

/* ------------------------------------------------------------------------ */
/* Configuration and shared data                                             */
/* ------------------------------------------------------------------------ */

static struct {
    size_t n;
    size_t w3_count;
    size_t w4_count;
    size_t batch;
    int runs;
    int markdown;
    int no_hints; /* reads run on a store reopened without its side files */
    char csv[4096]; /* non-empty: the medians also go to this file as CSV */
    uint64_t seed;
    char basedir[4096];
    int engine_on[N_ENGINES];
    int wl_on[N_WORKLOADS];
} cfg;

static char (*keys)[16];     /* "key{i}" */
static uint8_t *klens;       /* their lengths */
static uint8_t (*vals)[8];   /* i as 8-byte little-endian */
static uint32_t *perm;       /* fixed-seed random order of 0..n-1 */
static unsigned char *randbuf; /* W3 value source */
#define RANDBUF_SIZE (1u << 20)
#define W3_VALUE 4096

static const char *cur_engine = "";

static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench: %s: ", cur_engine);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static int wl_enabled(const char *name)
{
    for (size_t i = 0; i < N_WORKLOADS; i++)
        if (!strcmp(workload_names[i], name))
            return cfg.wl_on[i];
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void make_data(void)
{
    size_t n = cfg.n;
    uint64_t s = cfg.seed;
    keys = malloc(n * sizeof *keys);
    klens = malloc(n);
    vals = malloc(n * sizeof *vals);
    perm = malloc(n * sizeof *perm);
    randbuf = malloc(RANDBUF_SIZE);
    if (!keys || !klens || !vals || !perm || !randbuf)
        die("out of memory for %zu keys", n);
    for (size_t i = 0; i < n; i++) {
        char digits[24];
        int d = 0;
        uint64_t x = i;
        do {
            digits[d++] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
        memcpy(keys[i], "key", 3);
        for (int j = 0; j < d; j++)
            keys[i][3 + j] = digits[d - 1 - j];
        klens[i] = (uint8_t)(3 + d);
        for (int b = 0; b < 8; b++)
            vals[i][b] = (uint8_t)((uint64_t)i >> (8 * b));
        perm[i] = (uint32_t)i;
    }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(splitmix64(&s) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < RANDBUF_SIZE; i += 8) {
        uint64_t r = splitmix64(&s);
        memcpy(randbuf + i, &r, 8);
    }
}

/* ------------------------------------------------------------------------ */
/* Directories                                                               */
/* ------------------------------------------------------------------------ */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_total, du_largest;
static int du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F && S_ISREG(sb->st_mode)) {
        du_total += (uint64_t)sb->st_size;
        if ((uint64_t)sb->st_size > du_largest)
            du_largest = (uint64_t)sb->st_size;
    }
    return 0;
}

/** Sum of the apparent sizes of the regular files under path. */
static uint64_t dir_size(const char *path)
{
    du_total = du_largest = 0;
    nftw(path, du_cb, 16, FTW_PHYS);
    return du_total;
}

static void fresh_dir(char *out, size_t cap, const char *root, const char *name)
{
    snprintf(out, cap, "%s/%s", root, name);
    rm_rf(out);
    if (mkdir(out, 0755) != 0)
        die("mkdir %s: %s", out, strerror(errno));
}

/* ------------------------------------------------------------------------ */
/* Workload helpers                                                          */
/* ------------------------------------------------------------------------ */

static void check_get(int rc, const char *wl, size_t i)
{
    if (rc == 0)
        return;
    if (rc == BENCH_NOTFOUND)
        die("%s: key %.*s not found", wl, (int)klens[i], keys[i]);
    if (rc == BENCH_MISMATCH)
        die("%s: wrong value for key %.*s", wl, (int)klens[i], keys[i]);
    die("%s: get of key %.*s failed (%d)", wl, (int)klens[i], keys[i], rc);
}

static void *open_or_die(const bench_adapter *a, const char *dir, int create, int durable,
                         int variant)
{
    bench_open_opts o = {create, durable, variant};
    void *db = a->open(dir, &o);
    if (!db)
        die("open %s failed", dir);
    return db;
}

static void close_or_die(const bench_adapter *a, void *db)
{
    if (a->close(db))
        die("close failed");
}

static void *tbegin_or_die(const bench_adapter *a, void *db)
{
    void *t = a->thread_begin(db);
    if (!t)
        die("thread_begin failed");
    return t;
}

/** Loads keys [0, n) in batches of cfg.batch; returns seconds. */
static double load_batches(const bench_adapter *a, void *db, size_t n)
{
    bench_kv *kv = malloc(cfg.batch * sizeof *kv);
    void *t = tbegin_or_die(a, db);
    double t0 = now_s();
    if (!kv)
        die("out of memory");
    for (size_t i = 0; i < n; i += cfg.batch) {
        size_t m = n - i < cfg.batch ? n - i : cfg.batch;
        for (size_t j = 0; j < m; j++) {
            kv[j].key = keys[i + j];
            kv[j].key_len = klens[i + j];
            kv[j].value = vals[i + j];
            kv[j].value_len = 8;
        }
        if (a->put_batch(t, kv, m))
            die("batch put failed at key %zu", i);
    }
    double el = now_s() - t0;
    a->thread_end(db, t);
    free(kv);
    return el;
}

typedef struct thread_job {
    const bench_adapter *a;
    void *db;
    pthread_barrier_t *bar;
    int kind;      /* 0 = get (R2), 1 = put (W4) */
    size_t from, to, step;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *j = arg;
    void *t = tbegin_or_die(j->a, j->db);
    pthread_barrier_wait(j->bar);
    for (size_t i = j->from; i < j->to; i += j->step) {
        if (j->kind == 0) {
            size_t k = perm[i];
            check_get(j->a->get(t, keys[k], klens[k], vals[k], 8), "R2", k);
        } else if (j->a->put(t, keys[i], klens[i], vals[i], 8)) {
            die("W4: put failed");
        }
    }
    pthread_barrier_wait(j->bar);
    j->a->thread_end(j->db, t);
    return NULL;
}

/** Runs jobs on nthreads threads; returns the wall time between the two
 *  barriers (thread setup excluded). */
static double run_threads(thread_job *jobs, int nthreads)
{
    pthread_t th[8];
    pthread_barrier_t bar;
    double t0, t1;
    pthread_barrier_init(&bar, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        jobs[i].bar = &bar;
        if (pthread_create(&th[i], NULL, thread_main, &jobs[i]))
            die("pthread_create failed");
    }
    pthread_barrier_wait(&bar);
    t0 = now_s();
    pthread_barrier_wait(&bar);
    t1 = now_s();
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    return t1 - t0;
}

typedef struct scan_state {
    uint64_t count, sum, n;
    int bad;
} scan_state;

static int scan_cb(void *ctx, const void *key, size_t key_len, const void *value,
                   size_t value_len)
{
    scan_state *s = ctx;
    uint64_t v = 0;
    (void)key;
    (void)key_len;
    if (value_len != 8) {
        s->bad = 1;
        return 1;
    }
    const uint8_t *b = value;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    if (v >= s->n) {
        s->bad = 1;
        return 1;
    }
    s->count++;
    s->sum += v;
    return 0;
}

/** Prints the phase about to run with the child's current and peak RSS so
 *  far (from /proc/self/status), to see which phase sets the peak. */
static void proc_rss(long *rss, long *hwm)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    *rss = *hwm = -1;
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6))
            *rss = atol(line + 6);
        else if (!strncmp(line, "VmHWM:", 6))
            *hwm = atol(line + 6);
    }
    fclose(f);
}

static void progress(const char *what)
{
    long rss, hwm;
    proc_rss(&rss, &hwm);
    fprintf(stderr, "  %-8s %-24s (RSS now %ld MB, peak %ld MB)\n", cur_engine, what,
            rss / 1024, hwm / 1024);
}

/* ------------------------------------------------------------------------ */
/* One engine, one run (in a child process)                                  */
/* ------------------------------------------------------------------------ */

static void run_engine(const bench_adapter *a, const char *root, double *res)
{
    char dir[4200], mdir[4300];
    const size_t n = cfg.n;
    void *db, *t;
    double t0;
    int is_simdr = !strcmp(a->name, "simdr");

    for (int m = 0; m < M_COUNT; m++)
        res[m] = NAN;

    if (wl_enabled("W1")) {
        progress("W1");
        fresh_dir(dir, sizeof dir, root, "w1");
        db = open_or_die(a, dir, 1, 0, 0);
        t = tbegin_or_die(a, db);
        t0 = now_s();
        for (size_t i = 0; i < n; i++)
            if (a->put(t, keys[i], klens[i], vals[i], 8))
                die("W1: put %zu failed", i);
        res[M_W1] = (double)n / (now_s() - t0) / 1e6;
        a->thread_end(db, t);
        close_or_die(a, db);
        rm_rf(dir);
    }

    if (wl_enabled("W3")) {
        progress("W3");
        fresh_dir(dir, sizeof dir, root, "w3");
        db = open_or_die(a, dir, 1, 0, 0);
        t = tbegin_or_die(a, db);
        size_t cnt = cfg.w3_count < n ? cfg.w3_count : n;
        t0 = now_s();
        for (size_t i = 0; i < cnt; i++) {
            size_t off = (i * 4099u) % (RANDBUF_SIZE - W3_VALUE);
            if (a->put(t, keys[i], klens[i], randbuf + off, W3_VALUE))
                die("W3: put %zu failed", i);
        }
        res[M_W3] = (double)cnt * W3_VALUE / (now_s() - t0) / 1e6;
        a->thread_end(db, t);
        close_or_die(a, db);
        rm_rf(dir);
    }

    if (wl_enabled("W4") && !a->no_durable_writes) {
        size_t cnt = cfg.w4_count < n ? cfg.w4_count : n;
        for (int nt = 1; nt <= 2; nt++) {
            thread_job jobs[2];
            progress(nt == 1 ? "W4 (1 thread)" : "W4 (2 threads)");
            fresh_dir(dir, sizeof dir, root, "w4");
            db = open_or_die(a, dir, 1, 1, 0);
            for (int i = 0; i < nt; i++) {
                jobs[i] = (thread_job){a, db, NULL, 1, (size_t)i, cnt, (size_t)nt};
            }
            double el = run_threads(jobs, nt);
            res[nt == 1 ? M_W4_1 : M_W4_2] = (double)cnt / el;
            close_or_die(a, db);
            rm_rf(dir);
        }
        res[M_W4_SCALE] = res[M_W4_2] / res[M_W4_1];
    }

    int need_main = wl_enabled("W2") || wl_enabled("R1") || wl_enabled("R1b") ||
                    wl_enabled("R2") || wl_enabled("O1") || wl_enabled("I1") ||
                    wl_enabled("C1") || wl_enabled("MEM");
    if (!need_main) {
        progress("done");
        return;
    }

    /* W2: batched load of the main database used by everything below. */
    progress("W2");
    fresh_dir(dir, sizeof dir, root, "main");
    db = open_or_die(a, dir, 1, 0, 0);
    double el = load_batches(a, db, n);
    if (wl_enabled("W2"))
        res[M_W2] = (double)n / el / 1e6;
    close_or_die(a, db);
    res[M_SIZE_W2] = (double)dir_size(dir) / 1e6;
    if (is_simdr) /* the store file is the largest; the rest are side files */
        res[M_SIZE_W2_FILE] = (double)du_largest / 1e6;
    if (cfg.no_hints && a->drop_hints && a->drop_hints(dir))
        die("cannot remove side files");
    db = open_or_die(a, dir, 0, 0, 0);
    if (a->index_bytes_per_key)
        res[M_IDX] = a->index_bytes_per_key(db);

    if (wl_enabled("R1")) {
        progress("R1");
        t = tbegin_or_die(a, db);
        t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            size_t k = perm[i];
            check_get(a->get(t, keys[k], klens[k], vals[k], 8), "R1", k);
        }
        res[M_R1] = (now_s() - t0) * 1e9 / (double)n;
        /* The same gets again: the pages and page-table entries the first
         * pass faulted in are there now (an engine whose open read the
         * whole file, as the floors' index rebuild does, started R1 with
         * them; one whose open reads nothing pays them inside R1). */
        t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            size_t k = perm[i];
            check_get(a->get(t, keys[k], klens[k], vals[k], 8), "R1w", k);
        }
        res[M_R1W] = (now_s() - t0) * 1e9 / (double)n;
        if (a->get_handle) {
            t0 = now_s();
            for (size_t i = 0; i < n; i++) {
                size_t k = perm[i];
                check_get(a->get_handle(t, keys[k], klens[k], vals[k], 8), "R1h", k);
            }
            res[M_R1H] = (now_s() - t0) * 1e9 / (double)n;
        }
        a->thread_end(db, t);
    }

    if (wl_enabled("R1b") && a->get_batch) {
        progress("R1b");
        bench_kv *kv = malloc(cfg.batch * sizeof *kv);
        uint8_t(*exp)[8] = malloc(cfg.batch * 8);
        if (!kv || !exp)
            die("out of memory");
        t = tbegin_or_die(a, db);
        double in_calls = 0;
        t0 = now_s();
        for (size_t i = 0; i < n; i += cfg.batch) {
            size_t m = n - i < cfg.batch ? n - i : cfg.batch;
            for (size_t j = 0; j < m; j++) {
                size_t k = perm[i + j];
                kv[j].key = keys[k];
                kv[j].key_len = klens[k];
                memcpy(exp[j], vals[k], 8);
            }
            double c0 = now_s();
            int rc = a->get_batch(t, kv, m, exp, 8);
            in_calls += now_s() - c0;
            if (rc)
                die("R1b: batch at %zu: %s", i,
                    rc == BENCH_NOTFOUND   ? "a key was not found"
                    : rc == BENCH_MISMATCH ? "a value was wrong"
                                           : "error");
        }
        res[M_R1B] = (now_s() - t0) * 1e9 / (double)n;
        /* The engine's share: the calls alone, without the gathering of
         * each batch's keys and expected values from the benchmark's
         * arrays (three random reads a key) before each call. */
        res[M_R1B_CALL] = in_calls * 1e9 / (double)n;
        a->thread_end(db, t);
        free(kv);
        free(exp);
    }

    if (wl_enabled("R2")) {
        progress("R2");
        thread_job jobs[2] = {{a, db, NULL, 0, 0, n / 2, 1}, {a, db, NULL, 0, n / 2, n, 1}};
        res[M_R2] = (double)n / run_threads(jobs, 2) / 1e6;
    }

    if (wl_enabled("O1")) {
        progress("O1");
        size_t k = perm[0];
        t0 = now_s();
        close_or_die(a, db);
        res[M_CLOSE] = (now_s() - t0) * 1e3;
        t0 = now_s();
        db = open_or_die(a, dir, 0, 0, 0);
        t = tbegin_or_die(a, db);
        check_get(a->get(t, keys[k], klens[k], vals[k], 8), "O1", k);
        res[M_O1] = (now_s() - t0) * 1e3;
        a->thread_end(db, t);
        if (a->drop_hints) {
            close_or_die(a, db);
            if (a->drop_hints(dir))
                die("O1: cannot remove side files");
            t0 = now_s();
            db = open_or_die(a, dir, 0, 0, 0);
            t = tbegin_or_die(a, db);
            check_get(a->get(t, keys[k], klens[k], vals[k], 8), "O1", k);
            res[M_O1_COLD] = (now_s() - t0) * 1e3;
            a->thread_end(db, t);
        }
    }

    if (wl_enabled("I1")) {
        progress("I1");
        scan_state s = {0, 0, n, 0};
        t = tbegin_or_die(a, db);
        t0 = now_s();
        if (a->scan(t, scan_cb, &s))
            die("I1: scan failed");
        res[M_I1] = (now_s() - t0) * 1e3;
        a->thread_end(db, t);
        uint64_t want = (uint64_t)n * (n - 1) / 2;
        if (s.bad || s.count != n || s.sum != want)
            die("I1: scan saw %llu records (want %zu), checksum %s",
                (unsigned long long)s.count, n, s.bad || s.sum != want ? "wrong" : "ok");
    }

    {
        long rss, hwm;
        proc_rss(&rss, &hwm);
        res[M_RSS_PRE_C1] = (double)hwm / 1024.0;
    }
    if (wl_enabled("C1") && a->compact) {
        progress("C1");
        load_batches(a, db, n);
        res[M_C1_BEFORE] = (double)dir_size(dir) / 1e6;
        t0 = now_s();
        if (a->compact(db, dir, mdir, sizeof mdir))
            die("C1: compaction failed");
        res[M_C1] = now_s() - t0;
        close_or_die(a, db);
        res[M_C1_AFTER] = (double)dir_size(mdir) / 1e6;
        db = open_or_die(a, dir, 0, 0, 0);
        t = tbegin_or_die(a, db);
        for (size_t i = 0; i < n; i += n / 1000 + 1)
            check_get(a->get(t, keys[i], klens[i], vals[i], 8), "C1", i);
        a->thread_end(db, t);
    }
    close_or_die(a, db);
    rm_rf(dir);

    if (is_simdr && wl_enabled("W2")) {
        progress("W2 (unaligned layout)");
        fresh_dir(dir, sizeof dir, root, "w2u");
        db = open_or_die(a, dir, 1, 0, 1);
        load_batches(a, db, n);
        close_or_die(a, db);
        dir_size(dir);
        res[M_SIZE_W2_UNAL] = (double)du_largest / 1e6;
        rm_rf(dir);
    }
    progress("done");
}

/* ------------------------------------------------------------------------ */
/* Parent: fork per engine, collect, report                                  */
/* ------------------------------------------------------------------------ */

/** Runs fn in a child; fills res (M_COUNT doubles) and the child's peak RSS
 *  in MB. Exits the benchmark when the child fails. */
static void in_child(const bench_adapter *a, const char *root, double *res)
{
    int fds[2];
    pid_t pid;
    int status;
    struct rusage ru;
    if (pipe(fds))
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        double r[M_COUNT];
        close(fds[0]);
        if (a)
            run_engine(a, root, r);
        else
            for (int m = 0; m < M_COUNT; m++)
                r[m] = NAN;
        if (write(fds[1], r, sizeof r) != (ssize_t)sizeof r)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], res, M_COUNT * sizeof(double));
    close(fds[0]);
    if (wait4(pid, &status, 0, &ru) < 0)
        die("wait4: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != (ssize_t)(M_COUNT * sizeof(double))) {
        fprintf(stderr, "bench: %s failed (%s %d); benchmark aborted\n", a ? a->name : "baseline",
                WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        exit(2);
    }
    res[M_RSS] = (double)ru.ru_maxrss / 1024.0;
}

/** The machine's floor for one-system-call-per-put designs: the cost of a
 *  null system call and of a 28-byte two-buffer pwritev appended to a file. */
static void syscall_floor(const char *root, double *null_ns, double *pwritev_ns)
{
    enum { ITERS = 200000 };
    char path[4300], buf[64];
    double t0;
    int fd;
    memset(buf, 1, sizeof buf);
    t0 = now_s();
    for (int i = 0; i < ITERS; i++)
        (void)getppid();
    *null_ns = (now_s() - t0) * 1e9 / ITERS;
    snprintf(path, sizeof path, "%s/floor.bin", root);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        *pwritev_ns = NAN;
        return;
    }
    t0 = now_s();
    for (int i = 0; i < ITERS; i++) {
        struct iovec v[2] = {{buf, 8}, {buf + 8, 20}};
        if (pwritev(fd, v, 2, (off_t)i * 64) != 28)
            break;
    }
    *pwritev_ns = (now_s() - t0) * 1e9 / ITERS;
    close(fd);
    unlink(path);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(const double *v, int k)
{
    double tmp[64];
    int m = 0;
    for (int i = 0; i < k; i++)
        if (!isnan(v[i]))
            tmp[m++] = v[i];
    if (!m)
        return NAN;
    qsort(tmp, (size_t)m, sizeof tmp[0], cmp_double);
    return m % 2 ? tmp[m / 2] : (tmp[m / 2 - 1] + tmp[m / 2]) / 2;
}

static void fmt_value(char *out, size_t cap, double v)
{
    if (isnan(v))
        snprintf(out, cap, "n/a");
    else if (v >= 1000)
        snprintf(out, cap, "%.0f", v);
    else if (v >= 100)
        snprintf(out, cap, "%.1f", v);
    else if (v >= 10)
        snprintf(out, cap, "%.2f", v);
    else
        snprintf(out, cap, "%.3f", v);
}

static double med[N_ENGINES][M_COUNT];
static double best_peer[M_COUNT];
static double baseline_rss;

static void compute_best(void)
{
    for (int m = 0; m < M_COUNT; m++) {
        best_peer[m] = NAN;
        for (size_t e = 0; e < N_ENGINES; e++) {
            double v = med[e][m];
            if (!cfg.engine_on[e] || all_engines[e]->not_a_peer || isnan(v))
                continue;
            if (isnan(best_peer[m]) ||
                (metrics[m].better == HIGHER ? v > best_peer[m] : v < best_peer[m]))
                best_peer[m] = v;
        }
    }
}

static void print_table(void)
{
    const char *sep = cfg.markdown ? " | " : "  ";
    char cell[64], val[32];
    if (cfg.markdown) {
        printf("| metric | unit | better |");
        for (size_t e = 0; e < N_ENGINES; e++)
            if (cfg.engine_on[e])
                printf(" %s |", all_engines[e]->name);
        printf("\n|---|---|---|");
        for (size_t e = 0; e < N_ENGINES; e++)
            if (cfg.engine_on[e])
                printf("---:|");
        printf("\n");
    } else {
        printf("%-20s%s%-7s%s%-6s", "metric", sep, "unit", sep, "better");
        for (size_t e = 0; e < N_ENGINES; e++)
            if (cfg.engine_on[e])
                printf("%s%18s", sep, all_engines[e]->name);
        printf("\n");
    }
    for (int m = 0; m < M_COUNT; m++) {
        int any = 0;
        for (size_t e = 0; e < N_ENGINES; e++)
            if (cfg.engine_on[e] && !isnan(med[e][m]))
                any = 1;
        if (!any)
            continue;
        if (cfg.markdown)
            printf("| %s | %s | %s |", metrics[m].label, metrics[m].unit,
                   metrics[m].better == HIGHER ? "higher" : "lower");
        else
            printf("%-20s%s%-7s%s%-6s", metrics[m].label, sep, metrics[m].unit, sep,
                   metrics[m].better == HIGHER ? "higher" : "lower");
        for (size_t e = 0; e < N_ENGINES; e++) {
            if (!cfg.engine_on[e])
                continue;
            double v = med[e][m];
            fmt_value(val, sizeof val, v);
            if (!isnan(v) && !isnan(best_peer[m]) && best_peer[m] != 0)
                snprintf(cell, sizeof cell, "%s (%.2fx)", val, v / best_peer[m]);
            else
                snprintf(cell, sizeof cell, "%s", val);
            if (cfg.markdown)
                printf(" %s |", cell);
            else
                printf("%s%18s", sep, cell);
        }
        printf("\n");
    }
    printf("\nRatios are to the best peer (simdr excluded) on the same run: above 1 is more,\n"
           "below 1 is less than that peer. Baseline RSS of the benchmark's own key arrays\n"
           "(a child that touches them and opens no engine): %.1f MB.\n",
           baseline_rss);
}

/** The medians as CSV (metric, unit, better, engine, value, best peer's
 *  value), for bench/chart.sh. */
static void write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "metric,unit,better,engine,value,best_peer\n");
    for (int m = 0; m < M_COUNT; m++)
        for (size_t e = 0; e < N_ENGINES; e++) {
            if (!cfg.engine_on[e] || isnan(med[e][m]))
                continue;
            fprintf(f, "\"%s\",%s,%s,%s,%.6g,%.6g\n", metrics[m].label, metrics[m].unit,
                    metrics[m].better == HIGHER ? "higher" : "lower", all_engines[e]->name,
                    med[e][m], best_peer[m]);
        }
    fclose(f);
}

static void target(const char *name, double ours, double ref, double goal, int higher,
                   const char *how)
{
    char line[256];
    if (isnan(ours) || isnan(ref)) {
        printf("  %-4s n/a (not measured in this run)\n", name);
        return;
    }
    double ratio = ours / ref;
    int met = higher ? ratio >= goal : ratio <= goal;
    snprintf(line, sizeof line, "%s%.3g vs %.3g = %.2fx (goal %s %.2fx %s)",
             met ? "MET     " : "MISSED  ", ours, ref, ratio, higher ? ">=" : "<=", goal, how);
    printf("  %-4s %s\n", name, line);
}

static void print_targets(void)
{
    int s = -1, l = -1, su = -1, fl = -1, flu = -1, flc = -1;
    for (size_t e = 0; e < N_ENGINES; e++) {
        if (!cfg.engine_on[e])
            continue;
        const char *name = all_engines[e]->name;
        if (!strcmp(name, "simdr"))
            s = (int)e;
        if (!strcmp(name, "simdr-u"))
            su = (int)e;
        if (!strcmp(name, "floor"))
            fl = (int)e;
        if (!strcmp(name, "floor-u"))
            flu = (int)e;
        if (!strcmp(name, "floor-c"))
            flc = (int)e;
        if (!strcmp(name, "lmdb"))
            l = (int)e;
    }
    if (s >= 0 || su >= 0) {
        /* The read targets against the yardstick of simdr's own design. */
        double r1 = s >= 0 ? med[s][M_R1] : NAN, r1u = su >= 0 ? med[su][M_R1] : NAN;
        printf("\nread targets (medians; floor = the design's yardstick, same layout):\n");
        target("R1", r1, fl >= 0 ? med[fl][M_R1] : NAN, 1.1, 0, "of floor's ns/get");
        target("R1u", r1u, flu >= 0 ? med[flu][M_R1] : NAN, 1.1, 0, "of floor-u's ns/get");
        target("R1a", r1, r1u, 1.1, 0, "of simdr-u's ns/get");
        /* Not a target: the same after a first pass, when neither side
         * pays the first touch of its pages any more. */
        if (s >= 0 && fl >= 0 && !isnan(med[fl][M_R1W]))
            printf("  (R1w, the second pass, against the floor's: %.3g vs %.3g = %.2fx)\n",
                   med[s][M_R1W], med[fl][M_R1W], med[s][M_R1W] / med[fl][M_R1W]);
        /* Not a target: how far simdr is from the floor once the floor also
         * checks each value's CRC, as simdr does by default. */
        if (flc >= 0 && s >= 0 && !isnan(med[flc][M_R1]))
            printf("  (R1 against floor-c, the floor with the CRC check: %.3g vs %.3g = %.2fx; "
                   "floor-c / floor = %.2fx)\n",
                   r1, med[flc][M_R1], r1 / med[flc][M_R1],
                   fl >= 0 ? med[flc][M_R1] / med[fl][M_R1] : NAN);
        target("R1b", s >= 0 ? med[s][M_R1B] : NAN, 60.0, 1.0, 0, "of 60 ns/key");
        target("R2", s >= 0 ? med[s][M_R2] : NAN, isnan(r1) ? NAN : 1e3 / r1, 1.9, 1,
               "of simdr's R1 rate");
        target("R2u", su >= 0 ? med[su][M_R2] : NAN, isnan(r1u) ? NAN : 1e3 / r1u, 1.9, 1,
               "of simdr-u's R1 rate");
    }
    if (s < 0)
        return;
    double *o = med[s];
    double lm_i1 = l >= 0 ? med[l][M_I1] : NAN, lm_rss = l >= 0 ? med[l][M_RSS] : NAN;
    printf("\nissue-5 targets for simdr (medians):\n");
    target("W1", o[M_W1], best_peer[M_W1], 1.0, 1, "of the best peer");
    target("W2", o[M_W2], best_peer[M_W2], 3.0, 1, "of the best peer");
    target("W3", o[M_W3], best_peer[M_W3], 1.5, 1, "of the best peer");
    target("R1", o[M_R1], best_peer[M_R1], 0.25, 0, "of the best peer's ns/get");
    target("R1b", o[M_R1B], 60.0, 1.0, 0, "of 60 ns/key");
    target("R2", o[M_R2], isnan(o[M_R1]) ? NAN : 1e3 / o[M_R1], 1.8, 1, "of our R1 rate");
    target("O1", o[M_O1], 1.0, 1.0, 0, "of 1 ms");
    target("O1c", o[M_O1_COLD], 50.0, 1.0, 0, "of 50 ms, no hint file");
    target("I1", o[M_I1], lm_i1, 1.0, 0, "of LMDB's scan");
    target("C1", o[M_C1], 0.5, 1.0, 0, "of 0.5 s");
    target("IDX", o[M_IDX], 16.0, 1.0, 0, "of 16 B/key");
    target("RSS", o[M_RSS], lm_rss, 1.0, 0, "of LMDB's peak RSS");
    target("W4", o[M_W4_SCALE], 1.0, 1.6, 1, "2 threads / 1 thread");
}

static int parse_list(const char *arg, const char *const *names, size_t count, int *on,
                      const char *what)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", arg);
    memset(on, 0, count * sizeof *on);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        size_t i;
        if (!strcmp(tok, "all")) {
            for (i = 0; i < count; i++)
                on[i] = 1;
            continue;
        }
        for (i = 0; i < count; i++)
            if (!strcasecmp(tok, names[i])) {
                on[i] = 1;
                break;
            }
        if (i == count) {
            fprintf(stderr, "bench: unknown %s '%s'\n", what, tok);
            return -1;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench [options]\n"
            "  -n, --n N            keys (default 1000000)\n"
            "  -r, --runs K         runs; the table shows medians (default 1)\n"
            "  -e, --engines LIST   comma list of:");
    for (size_t e = 0; e < N_ENGINES; e++)
        fprintf(f, " %s", all_engines[e]->name);
    fprintf(f, " (default all)\n"
               "  -w, --workloads LIST comma list of:");
    for (size_t w = 0; w < N_WORKLOADS; w++)
        fprintf(f, " %s", workload_names[w]);
    fprintf(f, " (default all)\n"
               "  -d, --dir DIR        where temporary databases go (default $TMPDIR or /tmp;\n"
               "                       must be a real disk for W4)\n"
               "      --w3 COUNT       W3 puts (default 10000)\n"
               "      --w4 COUNT       W4 durable puts (default 10000)\n"
               "      --seed S         random order seed (default 42)\n"
               "      --no-hints       delete side files (simdr: the index hint) before the\n"
               "                       reopen that R1..C1 run on, so the index is rebuilt\n"
               "      --csv FILE       also write the medians to FILE (for bench/chart.sh)\n"
               "  -m, --markdown       print the table in Markdown\n");
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"n", required_argument, NULL, 'n'},       {"runs", required_argument, NULL, 'r'},
        {"engines", required_argument, NULL, 'e'}, {"workloads", required_argument, NULL, 'w'},
        {"dir", required_argument, NULL, 'd'},     {"w3", required_argument, NULL, '3'},
        {"w4", required_argument, NULL, '4'},      {"seed", required_argument, NULL, 's'},
        {"markdown", no_argument, NULL, 'm'},      {"help", no_argument, NULL, 'h'},
        {"no-hints", no_argument, NULL, 'H'},      {"csv", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0}};
    const char *const *engine_names;
    const char *names[N_ENGINES];
    char root[4200];
    int c;

    cfg.n = 1000000;
    cfg.w3_count = 10000;
    cfg.w4_count = 10000;
    cfg.batch = 1000;
    cfg.runs = 1;
    cfg.seed = 42;
    snprintf(cfg.basedir, sizeof cfg.basedir, "%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    for (size_t e = 0; e < N_ENGINES; e++) {
        names[e] = all_engines[e]->name;
        cfg.engine_on[e] = 1;
    }
    engine_names = names;
    for (size_t w = 0; w < N_WORKLOADS; w++)
        cfg.wl_on[w] = 1;

    while ((c = getopt_long(argc, argv, "n:r:e:w:d:mh", lopts, NULL)) != -1) {
        switch (c) {
        case 'n': cfg.n = strtoull(optarg, NULL, 10); break;
        case 'r': cfg.runs = atoi(optarg); break;
        case 'e':
            if (parse_list(optarg, engine_names, N_ENGINES, cfg.engine_on, "engine"))
                return 1;
            break;
        case 'w':
            if (parse_list(optarg, workload_names, N_WORKLOADS, cfg.wl_on, "workload"))
                return 1;
            break;
        case 'd': snprintf(cfg.basedir, sizeof cfg.basedir, "%s", optarg); break;
        case '3': cfg.w3_count = strtoull(optarg, NULL, 10); break;
        case '4': cfg.w4_count = strtoull(optarg, NULL, 10); break;
        case 's': cfg.seed = strtoull(optarg, NULL, 10); break;
        case 'm': cfg.markdown = 1; break;
        case 'H': cfg.no_hints = 1; break;
        case 'C': snprintf(cfg.csv, sizeof cfg.csv, "%s", optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (cfg.n < 2 || cfg.n > UINT32_MAX || cfg.runs < 1 || cfg.runs > 64) {
        usage(stderr);
        return 1;
    }

    make_data();
    snprintf(root, sizeof root, "%s/simdr-bench-XXXXXX", cfg.basedir);
    if (!mkdtemp(root)) {
        fprintf(stderr, "bench: mkdtemp %s: %s\n", root, strerror(errno));
        return 1;
    }

    static double raw[64][N_ENGINES][M_COUNT];
    double base[64], fl_null[64], fl_pw[64];
    for (int r = 0; r < cfg.runs; r++) {
        double b[M_COUNT];
        fprintf(stderr, "run %d/%d (N = %zu)\n", r + 1, cfg.runs, cfg.n);
        cur_engine = "baseline";
        in_child(NULL, root, b);
        base[r] = b[M_RSS];
        syscall_floor(root, &fl_null[r], &fl_pw[r]);
        for (size_t e = 0; e < N_ENGINES; e++) {
            if (!cfg.engine_on[e])
                continue;
            char edir[4300];
            cur_engine = all_engines[e]->name;
            snprintf(edir, sizeof edir, "%s/%s", root, all_engines[e]->name);
            mkdir(edir, 0755);
            in_child(all_engines[e], edir, raw[r][e]);
            rm_rf(edir);
            if (!wl_enabled("MEM"))
                raw[r][e][M_RSS] = raw[r][e][M_RSS_PRE_C1] = NAN;
        }
    }
    rm_rf(root);

    for (size_t e = 0; e < N_ENGINES; e++)
        for (int m = 0; m < M_COUNT; m++) {
            double v[64];
            for (int r = 0; r < cfg.runs; r++)
                v[r] = raw[r][e][m];
            med[e][m] = median(v, cfg.runs);
        }
    baseline_rss = median(base, cfg.runs);
    compute_best();
    printf("N = %zu, runs = %d (medians), W3 = %zu x %d B, W4 = %zu durable puts, batch = %zu\n\n",
           cfg.n, cfg.runs, cfg.w3_count, W3_VALUE, cfg.w4_count, cfg.batch);
    {
        double la[3] = {NAN, NAN, NAN};
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3)
                la[0] = la[1] = la[2] = NAN;
            fclose(f);
        }
        printf("machine floor (median): null system call %.0f ns, 28-byte pwritev %.0f ns; "
               "load average at the end %.2f %.2f %.2f\n\n",
               median(fl_null, cfg.runs), median(fl_pw, cfg.runs), la[0], la[1], la[2]);
    }
    print_table();
    print_targets();
    if (cfg.csv[0])
        write_csv(cfg.csv);
    return 0;
}
