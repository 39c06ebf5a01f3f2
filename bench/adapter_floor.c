/*
 * adapter_floor.c - a yardstick, NOT an engine: the least a store of simdr's
 * design can do, so simdr's figures can be read against the floor of its own
 * design in the same run ("floor" in the aligned layout simdr uses by
 * default, "floor-u" in the unaligned one). "floor-c" is "floor" plus the
 * one duty of simdr's reads it otherwise leaves out: it writes each value's
 * CRC-32 and checks it on every get (8-byte values with the same two
 * carry-less multiplications simdr uses, others with zlib), so a run shows
 * how much of simdr's distance to the floor is the check itself.
 *
 * The design, and nothing more: the file is simd-r-drive's format (optional
 * zero padding to a 64-byte payload start, the payload, 20 bytes of metadata:
 * key hash, previous tail, checksum), written with one pwrite per put or per
 * batch; the file is read through one read-only shared mapping reserved far
 * beyond its size; the index is open addressing with 16-byte slots holding
 * the full 64-bit key hash and the entry's end offset, so a get is one slot
 * read, then the metadata and value from the map. An open walks the chain
 * from the end to build the index.
 *
 * Everything an engine owes its users is left out on purpose: no checksum is
 * computed or checked (the field is written as 0; "floor-c" excepted), no locking (gets may run
 * on several threads only while nothing writes), no handles or pins, no
 * recovery of a torn tail, no deletes, no compaction, no error messages
 * beyond the first failure. Never use it to store anything.
 */
#include "adapter.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zlib.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <emmintrin.h>
#define FLOOR_CLMUL 1
/* CRC-32 (zlib's) of 8 bytes: the Barrett reduction of src/read.c. */
static inline uint32_t floor_crc8(uint64_t w)
{
    const __m128i k = _mm_set_epi64x(INT64_C(0x1db710640), (long long)UINT64_C(0xb4e5b025f7011640));
    __m128i x = _mm_cvtsi64_si128((long long)(w ^ 0xffffffffu));
    __m128i t = x;
    __asm__("pclmulqdq $0x00, %1, %0" : "+x"(t) : "x"(k));
    t = _mm_xor_si128(t, x);
    __asm__("pclmulqdq $0x10, %1, %0" : "+x"(t) : "x"(k));
    return ~(uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(t, 8));
}
#endif

#define FLOOR_FILE "floor.bin"
#define FLOOR_META 20u
#define FLOOR_RESERVE (UINT64_C(1) << 38) /* address space for the map, never all used */

typedef struct floor_slot {
    uint64_t hash;
    uint64_t end; /* 0: empty */
} floor_slot;

typedef struct floor_db {
    int fd;
    int aligned;
    int crc; /* "floor-c": values carry their CRC-32, checked on every get */
    uint64_t tail;
    const uint8_t *map;
    uint64_t reserve;   /* bytes of address space mapped */
    floor_slot *slots;
    uint64_t cap, used; /* cap is a power of two */
    uint8_t *buf;       /* a batch's bytes */
    size_t buf_cap;
} floor_db;

static uint64_t floor_pad(const floor_db *db, uint64_t at)
{
    return db->aligned ? (64 - at % 64) % 64 : 0;
}

static int floor_grow(floor_db *db)
{
    uint64_t cap = db->cap ? db->cap * 2 : 1024;
    floor_slot *s = calloc(cap, sizeof *s);
    if (!s)
        return -1;
    for (uint64_t i = 0; i < db->cap; i++) {
        if (!db->slots[i].end)
            continue;
        uint64_t j = db->slots[i].hash & (cap - 1);
        while (s[j].end)
            j = (j + 1) & (cap - 1);
        s[j] = db->slots[i];
    }
    free(db->slots);
    db->slots = s;
    db->cap = cap;
    return 0;
}

/* newest_first: the chain walk of an open meets each key's newest entry first. */
static int floor_index(floor_db *db, uint64_t hash, uint64_t end, int newest_first)
{
    if ((db->used + 1) * 4 > db->cap * 3 && floor_grow(db))
        return -1;
    uint64_t j = hash & (db->cap - 1);
    while (db->slots[j].end) {
        if (db->slots[j].hash == hash) {
            if (!newest_first)
                db->slots[j].end = end;
            return 0;
        }
        j = (j + 1) & (db->cap - 1);
    }
    db->slots[j] = (floor_slot){hash, end};
    db->used++;
    return 0;
}

static void floor_store_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t floor_load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void *floor_open_layout(const char *dir, const bench_open_opts *o, int aligned, int crc)
{
    char path[4096];
    floor_db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->aligned = aligned;
    db->crc = crc;
    snprintf(path, sizeof path, "%s/" FLOOR_FILE, dir);
    db->fd = open(path, O_RDWR | O_CREAT | (o->create ? O_TRUNC : 0), 0644);
    struct stat st;
    if (db->fd < 0 || fstat(db->fd, &st) != 0 || floor_grow(db))
        goto fail;
    db->tail = (uint64_t)st.st_size;
    /* The reservation shrinks where the address space is limited (valgrind
     * refuses 256 GiB), as long as it still covers the file with room. */
    void *m = MAP_FAILED;
    for (db->reserve = FLOOR_RESERVE; m == MAP_FAILED && db->reserve >= 2 * db->tail + (1u << 30);
         db->reserve /= 2)
        m = mmap(NULL, db->reserve, PROT_READ, MAP_SHARED | MAP_NORESERVE, db->fd, 0);
    if (m == MAP_FAILED)
        goto fail;
    db->reserve *= 2; /* undo the loop's last halving */
    db->map = m;
    for (uint64_t end = db->tail; end >= FLOOR_META;) {
        const uint8_t *meta = db->map + end - FLOOR_META;
        if (floor_index(db, floor_load_u64(meta), end, 1))
            goto fail;
        end = floor_load_u64(meta + 8);
    }
    return db;
fail:
    fprintf(stderr, "floor: cannot open %s\n", path);
    if (db->fd >= 0)
        close(db->fd);
    free(db->slots);
    free(db);
    return NULL;
}

static void *floor_open_aligned(const char *dir, const bench_open_opts *o)
{
    return floor_open_layout(dir, o, 1, 0);
}

static void *floor_open_unaligned(const char *dir, const bench_open_opts *o)
{
    return floor_open_layout(dir, o, 0, 0);
}

static void *floor_open_crc(const char *dir, const bench_open_opts *o)
{
    return floor_open_layout(dir, o, 1, 1);
}

static int floor_close(void *p)
{
    floor_db *db = p;
    munmap((void *)db->map, db->reserve);
    close(db->fd);
    free(db->slots);
    free(db->buf);
    free(db);
    return 0;
}

static void *floor_thread_begin(void *db) { return db; }
static void floor_thread_end(void *db, void *t)
{
    (void)db;
    (void)t;
}

/* Appends one entry to buf at file offset at; returns its length. */
static size_t floor_encode(const floor_db *db, uint8_t *buf, uint64_t at, uint64_t hash,
                           const void *value, size_t len)
{
    uint64_t pad = floor_pad(db, at);
    memset(buf, 0, pad);
    memcpy(buf + pad, value, len);
    floor_store_u64(buf + pad + len, hash);
    floor_store_u64(buf + pad + len + 8, at);
    uint32_t crc = db->crc ? (uint32_t)crc32(0, value, (uInt)len) : 0; /* else none */
    memcpy(buf + pad + len + 16, &crc, 4);
    return pad + len + FLOOR_META;
}

static int floor_reserve(floor_db *db, size_t need)
{
    if (need <= db->buf_cap)
        return 0;
    free(db->buf);
    db->buf = malloc(need);
    db->buf_cap = db->buf ? need : 0;
    return db->buf ? 0 : -1;
}

static int floor_put_batch(void *p, const bench_kv *items, size_t n)
{
    floor_db *db = p;
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += 63 + items[i].value_len + FLOOR_META;
    if (floor_reserve(db, need))
        return BENCH_ERROR;
    uint64_t at = db->tail;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t hash = XXH3_64bits(items[i].key, items[i].key_len);
        len += floor_encode(db, db->buf + len, at + len, hash, items[i].value,
                            items[i].value_len);
        if (floor_index(db, hash, at + len, 0))
            return BENCH_ERROR;
    }
    if (pwrite(db->fd, db->buf, len, (off_t)at) != (ssize_t)len) {
        fprintf(stderr, "floor: pwrite failed\n");
        return BENCH_ERROR;
    }
    db->tail = at + len;
    return 0;
}

static int floor_put(void *p, const char *key, size_t klen, const void *val, size_t vlen)
{
    bench_kv kv = {key, klen, val, vlen};
    return floor_put_batch(p, &kv, 1);
}

static int floor_get(void *p, const char *key, size_t klen, const void *expect, size_t elen)
{
    const floor_db *db = p;
    uint64_t hash = XXH3_64bits(key, klen);
    for (uint64_t j = hash & (db->cap - 1);; j = (j + 1) & (db->cap - 1)) {
        const floor_slot *s = &db->slots[j];
        if (!s->end)
            return BENCH_NOTFOUND;
        if (s->hash != hash)
            continue;
        const uint8_t *meta = db->map + s->end - FLOOR_META;
        uint64_t prev = floor_load_u64(meta + 8);
        uint64_t start = prev + floor_pad(db, prev);
        uint64_t size = s->end - FLOOR_META - start;
        if (db->crc) {
            uint32_t want, got;
            memcpy(&want, meta + 16, 4);
#ifdef FLOOR_CLMUL
            if (size == 8 && __builtin_cpu_supports("pclmul"))
                got = floor_crc8(floor_load_u64(db->map + start));
            else
#endif
                got = (uint32_t)crc32(0, db->map + start, (uInt)size);
            if (got != want)
                return BENCH_MISMATCH;
        }
        return size == elen && memcmp(db->map + start, expect, elen) == 0 ? 0 : BENCH_MISMATCH;
    }
}

static int floor_scan(void *p, bench_scan_fn fn, void *ctx)
{
    const floor_db *db = p;
    for (uint64_t j = 0; j < db->cap; j++) {
        const floor_slot *s = &db->slots[j];
        if (!s->end)
            continue;
        uint64_t prev = floor_load_u64(db->map + s->end - FLOOR_META + 8);
        uint64_t start = prev + floor_pad(db, prev);
        if (fn(ctx, NULL, 0, db->map + start, s->end - FLOOR_META - start))
            break;
    }
    return 0;
}

static double floor_index_bytes_per_key(void *p)
{
    const floor_db *db = p;
    return db->used ? (double)(db->cap * sizeof(floor_slot)) / (double)db->used : 0.0;
}

/* The three yardsticks differ only in how they open. */
#define FLOOR_ADAPTER(label, open_fn)                                                     \
    {                                                                                     \
        .name = label, .not_a_peer = 1, .open = open_fn, .close = floor_close,            \
        .no_durable_writes = 1, .thread_begin = floor_thread_begin,                       \
        .thread_end = floor_thread_end, .put = floor_put, .put_batch = floor_put_batch,   \
        .get = floor_get, .scan = floor_scan,                                             \
        .index_bytes_per_key = floor_index_bytes_per_key,                                 \
    }

const bench_adapter bench_adapter_floor = FLOOR_ADAPTER("floor", floor_open_aligned);
const bench_adapter bench_adapter_floor_unaligned = FLOOR_ADAPTER("floor-u", floor_open_unaligned);
const bench_adapter bench_adapter_floor_crc = FLOOR_ADAPTER("floor-c", floor_open_crc);
