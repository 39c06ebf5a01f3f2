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
 * - its table carries an XXH3 checksum;
 * - the newest entries of the chain it covers are CRC-checked as on any open.
 * Anything else and the open falls back to full recovery. A stale or damaged
 * hint costs a rebuild, never data. Written to a temporary name and renamed;
 * read-only opens never write it.
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

#define HINT_MAGIC UINT64_C(0x33544e4948524453) /* "SDRHINT3" little-endian */

typedef struct hint_header {
    uint64_t magic;
    uint64_t dev, ino;
    uint64_t tail;
    uint64_t cap, used, live;
    uint64_t table_hash;
    int64_t mtime_sec, mtime_nsec; /* the store file's mtime when the hint was saved */
    int64_t ctime_sec, ctime_nsec; /* ... and its change time */
    int32_t layout, layout_detected;
    uint8_t tail_meta[SIMDR__META_SIZE];
    uint8_t pad[4];
} hint_header;

int simdr__hint_load(simdr_store *s, const uint8_t *base, uint64_t size, simdr__hint *out) {
    char *path = simdr__suffixed_path(s->path, ".hint");
    if (!path) return 0;
    int fd = simdr__io.open(path, O_RDONLY | O_CLOEXEC, 0);
    free(path);
    if (fd < 0) return 0;
    hint_header h;
    simdr__index *ix = NULL;
    struct stat store_st;
    int ok = simdr__io.fstat(s->fd, &store_st) == 0 && simdr__pread_all(fd, &h, sizeof h, 0) == 0 &&
             h.magic == HINT_MAGIC && h.mtime_sec == (int64_t)store_st.st_mtim.tv_sec &&
             h.mtime_nsec == (int64_t)store_st.st_mtim.tv_nsec &&
             h.ctime_sec == (int64_t)store_st.st_ctim.tv_sec &&
             h.ctime_nsec == (int64_t)store_st.st_ctim.tv_nsec &&
             h.dev == (uint64_t)s->dev && h.ino == (uint64_t)s->ino && h.tail == size &&
             h.tail > SIMDR__META_SIZE && h.cap >= 1 && h.cap < (UINT64_C(1) << 32) &&
             h.used <= h.cap && h.live <= h.used &&
             (h.layout == SIMDR_LAYOUT_ALIGNED64 || h.layout == SIMDR_LAYOUT_UNALIGNED) &&
             memcmp(base + h.tail - SIMDR__META_SIZE, h.tail_meta, SIMDR__META_SIZE) == 0;
    if (ok) {
        /* The table is mapped privately rather than copied into memory: the
         * writer's later slot updates copy only the pages they touch. */
        size_t bytes = (size_t)h.cap * sizeof(uint64_t);
        struct stat st;
        ix = malloc(sizeof *ix);
        void *slots = MAP_FAILED;
        uint64_t table_hash = 0;
        /* The checksum reads the table with pread, not through the
         * mapping: the first touch of each mapped page costs a page-table
         * fill (dear on virtual machines), and lookups touch only the pages
         * they need. */
        if (ix && simdr__io.fstat(fd, &st) == 0 && (uint64_t)st.st_size == sizeof h + bytes &&
            simdr__xxh3_file(fd, sizeof h, bytes, &table_hash) == 0 &&
            table_hash == h.table_hash)
            slots = simdr__io.mmap(NULL, sizeof h + bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (slots == MAP_FAILED) {
            free(ix);
            ix = NULL;
            ok = 0;
        } else {
            ix->cap = h.cap;
            ix->used = h.used;
            ix->slots = (_Atomic uint64_t *)((uint8_t *)slots + sizeof h);
            ix->mapping = slots;
            ix->mapping_len = sizeof h + bytes;
        }
    }
    close(fd);
    if (!ok) return 0;
    int layout = h.layout;
    if (!simdr__tail_sound(s->fd, base, h.tail, &layout)) {
        simdr__index_free(ix);
        return 0;
    }
    out->index = ix;
    out->tail = h.tail;
    out->live = h.live;
    out->layout = h.layout;
    out->layout_detected = h.layout_detected;
    return 1;
}

/* Below this many indexed keys a rebuild costs less than reading a hint
 * (docs/BENCHMARKS.md, open times): no hint file, and a stale one is removed. */
#define HINT_MIN_KEYS 65536u

void simdr__hint_save(simdr_store *s) {
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = s->tail;
    if (tail <= SIMDR__META_SIZE || v->index->used < HINT_MIN_KEYS) {
        char *stale = simdr__suffixed_path(s->path, ".hint");
        if (stale) unlink(stale);
        free(stale);
        return;
    }
    char *tmp = simdr__suffixed_path(s->path, ".hint.tmp"), *final = simdr__suffixed_path(s->path, ".hint");
    struct stat store_st;
    int fd = tmp && final && simdr__io.fstat(s->fd, &store_st) == 0
                 /* The index reveals what the store holds: no wider access than the store's. */
                 ? simdr__io.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                                  store_st.st_mode & 0666)
                 : -1;
    if (fd >= 0) {
        size_t bytes = (size_t)v->index->cap * sizeof(uint64_t);
        hint_header h;
        memset(&h, 0, sizeof h);
        h.magic = HINT_MAGIC;
        h.dev = (uint64_t)s->dev;
        h.ino = (uint64_t)s->ino;
        h.tail = tail;
        h.cap = v->index->cap;
        h.used = v->index->used;
        h.live = atomic_load(&s->live);
        h.table_hash = simdr__xxh3((const void *)v->index->slots, bytes);
        h.mtime_sec = (int64_t)store_st.st_mtim.tv_sec;
        h.mtime_nsec = (int64_t)store_st.st_mtim.tv_nsec;
        h.ctime_sec = (int64_t)store_st.st_ctim.tv_sec;
        h.ctime_nsec = (int64_t)store_st.st_ctim.tv_nsec;
        h.layout = atomic_load(&s->layout);
        h.layout_detected = s->layout_detected;
        memcpy(h.tail_meta, v->map->base + tail - SIMDR__META_SIZE, SIMDR__META_SIZE);
        int ok = simdr__pwrite_all(fd, &h, sizeof h, 0) == 0 &&
                 simdr__pwrite_all(fd, (const void *)v->index->slots, bytes, sizeof h) == 0;
        close(fd);
        /* A hint that could not be written whole is removed: the next open
         * simply rebuilds. */
        if (!ok || simdr__io.rename(tmp, final) != 0) unlink(tmp);
    }
    free(tmp);
    free(final);
}
