/*
 * hint.c - the index hint file "<store>.hint": the index table saved at
 * close so the next open can skip walking the whole chain (as Bitcask's hint
 * files do). The store file stays pure simd-r-drive format; the hint is a
 * cache and is never trusted blindly:
 * - it names the store file's device and inode, the tail it covers, and that
 *   tail's 20 metadata bytes, which must all match the file;
 * - the file must be exactly as long as that tail, with the modification and
 *   change times it had when the hint was saved. Anything that wrote to the
 *   file since (appends after a crash, another writer, damage followed by
 *   growth, a rewrite in place with its mtime restored: the kernel sets the
 *   change time on every write and on utimensat, and no call sets it back)
 *   makes the open walk the whole chain, which checks every link and CRC, so
 *   damage is reported instead of being hidden behind the saved index;
 * - its header and the table of block checksums carry an XXH3 checksum;
 * - the newest entries of the chain it covers are CRC-checked as on any open.
 * Anything else and the open falls back to full recovery. A stale hint, or
 * one whose header is damaged, costs a rebuild, never data. Written to a
 * temporary name and renamed; read-only opens never write it.
 *
 * The table itself is not read at open: it is mapped privately (copy on
 * write) as the index's slots, and each block of SIMDR__INDEX_BLOCK_SLOTS
 * slots is checked against its own XXH3-64 the first time it is used
 * (index.c), so an open costs the same at any size. A block that fails its
 * check is never used: the keys whose lookups need it answer SIMDR_ECORRUPT
 * (not "not found"), the hint file is removed so the next open rebuilds, and
 * a writable store rebuilds its index from the chain before its next write
 * (simdr__index_settle).
 *
 * Layout (little-endian, this machine's struct layout; magic "SDRHINT5"):
 * the header, then one XXH3-64 per block of the table, then zeros up to
 * table_off (a multiple of HINT_TABLE_ALIGN, so the table can be mapped),
 * then the table (cap slots of 8 bytes). Hints of an earlier layout have
 * another magic and are ignored (the open rebuilds and the close replaces
 * them).
 *
 * Damage below the file system (bit rot, a lost write) changes neither time;
 * a hinted open does not read the file to find it (that is the rebuild the
 * hint saves). Every read checks what it serves instead: a slot whose
 * metadata lost its key's hash is SIMDR_ECORRUPT (index.c), a value that
 * fails its CRC is SIMDR_ECORRUPT (read.c), and simdr_check and compaction
 * walk every entry.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define HINT_MAGIC UINT64_C(0x35544e4948524453) /* "SDRHINT5" little-endian */
/* Where the table starts: a multiple of any page size in use. */
#define HINT_TABLE_ALIGN (UINT64_C(64) << 10)

typedef struct hint_header {
    uint64_t magic;
    uint64_t dev, ino;
    uint64_t tail;
    uint64_t cap, used, live;
    uint64_t block_slots;  /* SIMDR__INDEX_BLOCK_SLOTS when saved */
    uint64_t table_off;
    uint64_t header_hash;  /* XXH3-64 of this header (with 0 here) and the block sums */
    int64_t mtime_sec, mtime_nsec; /* the store file's mtime when the hint was saved */
    int64_t ctime_sec, ctime_nsec; /* ... and its change time */
    int32_t layout, layout_detected;
    uint8_t tail_meta[SIMDR__META_SIZE];
    uint8_t pad[4];
    uint64_t dead;         /* entries below tail that are not live (simdr_store.dead) */
} hint_header;

static uint64_t hint_blocks(uint64_t cap) {
    return (cap + SIMDR__INDEX_BLOCK_SLOTS - 1) / SIMDR__INDEX_BLOCK_SLOTS;
}

static uint64_t hint_table_off(uint64_t cap) {
    uint64_t end = sizeof(hint_header) + hint_blocks(cap) * 8;
    return (end + HINT_TABLE_ALIGN - 1) / HINT_TABLE_ALIGN * HINT_TABLE_ALIGN;
}

static uint64_t header_hash(const hint_header *h, const uint64_t *sums) {
    hint_header copy = *h;
    copy.header_hash = 0;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, &copy, sizeof copy);
    XXH3_64bits_update(&st, sums, (size_t)hint_blocks(h->cap) * 8);
    return XXH3_64bits_digest(&st);
}

/* The header and block sums of the hint at fd, when they are whole and
 * describe the store file as it is now (*sums malloc'd). */
static int header_matches(simdr_store *s, int fd, const uint8_t *base, uint64_t size,
                          hint_header *h, uint64_t **sums) {
    struct stat store_st, st;
    *sums = NULL;
    if (simdr__io.fstat(s->fd, &store_st) != 0 || simdr__io.fstat(fd, &st) != 0 ||
        !S_ISREG(st.st_mode) || simdr__pread_all(fd, h, sizeof *h, 0) != 0)
        return 0;
    int ok = h->magic == HINT_MAGIC && h->mtime_sec == (int64_t)store_st.st_mtim.tv_sec &&
             h->mtime_nsec == (int64_t)store_st.st_mtim.tv_nsec &&
             h->ctime_sec == (int64_t)store_st.st_ctim.tv_sec &&
             h->ctime_nsec == (int64_t)store_st.st_ctim.tv_nsec &&
             h->dev == (uint64_t)s->dev && h->ino == (uint64_t)s->ino && h->tail == size &&
             h->tail > SIMDR__META_SIZE && h->cap >= 1 && h->cap < (UINT64_C(1) << 32) &&
             /* never fuller than a growth leaves a table (index.c) */
             h->used <= h->cap && h->used * 5 <= h->cap * 4 + 4 && h->live <= h->used &&
             h->dead < h->tail &&
             h->block_slots == SIMDR__INDEX_BLOCK_SLOTS && h->table_off == hint_table_off(h->cap) &&
             (uint64_t)st.st_size == h->table_off + h->cap * 8 &&
             (h->layout == SIMDR_LAYOUT_ALIGNED64 || h->layout == SIMDR_LAYOUT_UNALIGNED) &&
             memcmp(base + h->tail - SIMDR__META_SIZE, h->tail_meta, SIMDR__META_SIZE) == 0;
    if (!ok) return 0;
    size_t bytes = (size_t)hint_blocks(h->cap) * 8;
    *sums = malloc(bytes);
    if (!*sums || simdr__pread_all(fd, *sums, bytes, sizeof *h) != 0 ||
        header_hash(h, *sums) != h->header_hash) {
        free(*sums);
        *sums = NULL;
        return 0;
    }
    return 1;
}

_Atomic uint64_t simdr__hint_loads;

int simdr__hint_load(simdr_store *s, const uint8_t *base, uint64_t size, simdr__hint *out) {
    char *path = simdr__suffixed_path(s->path, ".hint");
    if (!path) return 0;
    /* Non-blocking: a FIFO found there would wait for a writer forever. */
    int fd = simdr__io.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0) {
        free(path);
        return 0;
    }
    hint_header h;
    uint64_t *sums;
    simdr__index *ix = NULL;
    if (header_matches(s, fd, base, size, &h, &sums)) {
        /* The table is mapped privately rather than read: the writer's
         * later slot updates copy only the pages they touch, and each block
         * is checked when first used (index.c). */
        size_t bytes = (size_t)h.cap * sizeof(uint64_t);
        struct stat st;
        if (simdr__io.fstat(fd, &st) != 0) memset(&st, 0, sizeof st);
        void *slots = simdr__io.mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                                     (off_t)h.table_off);
        if (slots != MAP_FAILED) {
            ix = simdr__index_from_hint(slots, bytes, (_Atomic uint64_t *)slots, h.cap, h.used,
                                        sums, path, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
            if (!ix) munmap(slots, bytes);
        }
        if (ix) {
            sums = NULL;
            path = NULL;
        }
    }
    free(sums);
    free(path);
    close(fd);
    if (!ix) return 0;
    int layout = h.layout;
    if (!simdr__tail_sound(s->fd, base, h.tail, &layout)) {
        simdr__index_free(ix);
        return 0;
    }
    atomic_fetch_add_explicit(&simdr__hint_loads, 1, memory_order_relaxed);
    out->index = ix;
    out->tail = h.tail;
    out->live = h.live;
    out->dead = h.dead;
    out->layout = h.layout;
    out->layout_detected = h.layout_detected;
    return 1;
}

int simdr__index_settle(simdr_store *s) {
    simdr__view *v = simdr__current_view(s);
    if (simdr__index_check_all(v->index) == 0) return SIMDR_OK;
    /* A block of the hinted table is damaged: the chain is the truth. */
    int rc = simdr__index_rebuild(s, v, s->tail);
    if (rc != SIMDR_OK) return rc;
    s->hint_tail = 0;
    return SIMDR_OK;
}

/* Below this many indexed keys a rebuild costs less than reading a hint
 * (docs/BENCHMARKS.md, open times): no hint file, and a stale one is removed. */
#define HINT_MIN_KEYS 65536u

void simdr__hint_save(simdr_store *s) {
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = s->tail;
    /* A table with a damaged block (loaded from a hint and never settled by
     * a write) is never saved under fresh checksums. */
    if (tail <= SIMDR__META_SIZE || v->index->used < HINT_MIN_KEYS ||
        simdr__index_check_all(v->index) != 0) {
        char *stale = simdr__suffixed_path(s->path, ".hint");
        if (stale) unlink(stale);
        free(stale);
        return;
    }
    char *tmp = simdr__suffixed_path(s->path, ".hint.tmp"), *final = simdr__suffixed_path(s->path, ".hint");
    struct stat store_st;
    /* A file of our own, made new (a leftover of a save that died is
     * removed first): O_EXCL never opens what a link planted there names,
     * which O_TRUNC would have cut and overwritten with the index. */
    if (tmp) unlink(tmp);
    int fd = tmp && final && simdr__io.fstat(s->fd, &store_st) == 0
                 /* The index reveals what the store holds: no wider access than the store's. */
                 ? simdr__io.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                                  store_st.st_mode & 0666)
                 : -1;
    uint64_t *sums = NULL;
    /* A table sized from a large expected_keys and holding few keys is saved
     * in a table sized for them: the hint file, and the close that writes
     * it, cost what the keys need, not the hint's reservation. */
    simdr__index *shrunk = fd >= 0 ? simdr__index_shrunk(v->index, v->map->base) : NULL;
    const simdr__index *ix = shrunk ? shrunk : v->index;
    uint64_t cap = ix->cap;
    if (fd >= 0) sums = malloc((size_t)hint_blocks(cap) * 8);
    if (fd >= 0 && !sums) {
        close(fd);
        fd = -1;
        unlink(tmp);
    }
    if (fd >= 0) {
        size_t bytes = (size_t)cap * sizeof(uint64_t);
        const uint8_t *table = (const uint8_t *)ix->slots;
        hint_header h;
        memset(&h, 0, sizeof h);
        h.magic = HINT_MAGIC;
        h.dev = (uint64_t)s->dev;
        h.ino = (uint64_t)s->ino;
        h.tail = tail;
        h.cap = ix->cap;
        h.used = ix->used;
        h.live = atomic_load(&s->live);
        h.dead = atomic_load(&s->dead) - v->dead_base;
        h.block_slots = SIMDR__INDEX_BLOCK_SLOTS;
        h.table_off = hint_table_off(cap);
        for (uint64_t k = 0; k < hint_blocks(cap); k++) {
            uint64_t first = k * SIMDR__INDEX_BLOCK_SLOTS;
            uint64_t n = cap - first < SIMDR__INDEX_BLOCK_SLOTS ? cap - first : SIMDR__INDEX_BLOCK_SLOTS;
            sums[k] = simdr__xxh3(table + first * 8, (size_t)n * 8);
        }
        h.mtime_sec = (int64_t)store_st.st_mtim.tv_sec;
        h.mtime_nsec = (int64_t)store_st.st_mtim.tv_nsec;
        h.ctime_sec = (int64_t)store_st.st_ctim.tv_sec;
        h.ctime_nsec = (int64_t)store_st.st_ctim.tv_nsec;
        h.layout = atomic_load(&s->layout);
        h.layout_detected = s->layout_detected;
        memcpy(h.tail_meta, v->map->base + tail - SIMDR__META_SIZE, SIMDR__META_SIZE);
        h.header_hash = header_hash(&h, sums);
        /* The zeros between the sums and the table come from the file size. */
        int ok = simdr__pwrite_all(fd, &h, sizeof h, 0) == 0 &&
                 simdr__pwrite_all(fd, sums, (size_t)hint_blocks(cap) * 8, sizeof h) == 0 &&
                 simdr__pwrite_all(fd, table, bytes, h.table_off) == 0;
        close(fd);
        /* A hint that could not be written whole is removed: the next open
         * simply rebuilds. */
        if (!ok || simdr__io.rename(tmp, final) != 0) unlink(tmp);
    }
    simdr__index_free(shrunk);
    free(sums);
    free(tmp);
    free(final);
}
