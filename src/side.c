/*
 * side.c - the side file "<store>.simdr": where the writer publishes its
 * committed tail, so recovery and other processes never have to guess it
 * from the file's bytes.
 *
 * The simd-r-drive format has no commit marker: the end of the newest entry
 * is only recognisable by 20 bytes that link back and a CRC that matches, and
 * a payload can hold exactly such bytes. So a scan backwards from the end of a
 * file whose last append was torn, or that a writer is still appending to, can
 * be steered by payload content. The side file removes the guess, in the
 * spirit of LMDB's lock file: one page the writer maps MAP_SHARED and into
 * which it stores, after each successful append (no system call), the tail it
 * has just published to its own readers, together with the 20 metadata bytes
 * that end there. A killed process leaves the page in the page cache, so the
 * next open knows the committed tail exactly: bytes beyond it were never
 * acknowledged and are cut as a torn tail; nothing after it is scanned.
 *
 * Nothing here is trusted blindly. The page names the store file (device and
 * inode, under a header checksum), each record carries a checksum and the
 * metadata bytes that must be found in the store at its tail, and the open
 * then checks the chain ending there as on any open. A missing, damaged,
 * stale or foreign side file only means a full recovery (recover.c).
 * docs/FORMAT.md describes the page byte by byte.
 *
 * Records are written as plain 64-bit atomic stores, alternating between two
 * slots: a reader (another process) that catches one slot half-written finds
 * its checksum wrong and takes the other, which holds the previous commit. A
 * third slot holds the durable tail: the sync path writes it after each
 * successful fdatasync of the store and flushes the page (msync) before the
 * write is acknowledged, so with SIMDR_SYNC_DATA a power cut that loses the
 * page's later updates still leaves a record no lower than any acknowledged
 * write.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define SIDE_MAGIC UINT64_C(0x314c5452444d4953) /* "SIMDRTL1" little-endian */
#define SIDE_VERSION 1u
#define SIDE_BYTES 4096u
#define SIDE_WORDS (SIDE_BYTES / 8u)

/* Word indexes into the page (each a little-endian u64). */
enum {
    W_MAGIC = 0,
    W_VERSION = 1,  /* version (low 32 bits) | page size (high 32 bits) */
    W_DEV = 2,
    W_INO = 3,
    W_CLOSED = 6,   /* 0 while a writer has the store open; tail + 1 after a clean close */
    W_HCHECK = 7,   /* XXH3-64 of words 0..5 */
    W_LIVE0 = 8,    /* live slots at words 8 and 16, durable slot at 24 */
    W_LIVE1 = 16,
    W_DURABLE = 24,
    SLOT_WORDS = 8  /* seq, tail, meta[0..8], meta[8..16], meta[16..20] | 0, check, 0, 0 */
};

static _Atomic uint64_t *words(const simdr__side *sd) { return (_Atomic uint64_t *)sd->page; }

static uint64_t to_le(uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

static uint64_t hash_words(const uint64_t *w, unsigned n) {
    uint8_t bytes[8 * 8];
    for (unsigned i = 0; i < n; i++) simdr__store_u64le(bytes + 8 * i, w[i]);
    return simdr__xxh3(bytes, 8 * (size_t)n);
}

static uint64_t load(const simdr__side *sd, unsigned i, memory_order mo) {
    return to_le(atomic_load_explicit(&words(sd)[i], mo));
}

static void store(simdr__side *sd, unsigned i, uint64_t v, memory_order mo) {
    atomic_store_explicit(&words(sd)[i], to_le(v), mo);
}

static char *side_path(const char *store_path) {
    size_t n = strlen(store_path) + sizeof ".simdr";
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s.simdr", store_path);
    return p;
}

static void write_slot(simdr__side *sd, unsigned at, uint64_t seq, uint64_t tail,
                       const uint8_t meta[SIMDR__META_SIZE]) {
    uint64_t w[5];
    w[0] = seq;
    w[1] = tail;
    w[2] = simdr__load_u64le(meta);
    w[3] = simdr__load_u64le(meta + 8);
    w[4] = simdr__load_u32le(meta + 16);
    for (unsigned i = 0; i < 5; i++) store(sd, at + i, w[i], memory_order_relaxed);
    /* The checksum last: a reader that sees it also sees the words it covers. */
    store(sd, at + 5, hash_words(w, 5), memory_order_release);
}

/* 1 when the slot at word `at` holds a consistent record. */
static int read_slot(const simdr__side *sd, unsigned at, simdr__side_record *r) {
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t check = load(sd, at + 5, memory_order_acquire), w[5];
        for (unsigned i = 0; i < 5; i++) w[i] = load(sd, at + i, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (load(sd, at + 5, memory_order_relaxed) != check) continue;
        if (hash_words(w, 5) != check || (w[4] >> 32) != 0 || w[1] > SIMDR__MAX_OFFSET) return 0;
        r->seq = w[0];
        r->tail = w[1];
        simdr__store_u64le(r->meta, w[2]);
        simdr__store_u64le(r->meta + 8, w[3]);
        simdr__store_u32le(r->meta + 16, (uint32_t)w[4]);
        return 1;
    }
    return 0;
}

/* The metadata bytes ending at tail in fd's file (zeros for tail 0). */
static int tail_meta(int fd, uint64_t tail, uint8_t meta[SIMDR__META_SIZE]) {
    memset(meta, 0, SIMDR__META_SIZE);
    if (tail == 0) return 0;
    if (tail < SIMDR__META_SIZE) return -1;
    return simdr__pread_all(fd, meta, SIMDR__META_SIZE, tail - SIMDR__META_SIZE);
}

static simdr__side *map_side(int fd, int writable) {
    simdr__side *sd = malloc(sizeof *sd);
    if (!sd) return NULL;
    void *p = simdr__io.mmap(NULL, SIDE_BYTES, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                             MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        free(sd);
        return NULL;
    }
    sd->fd = fd;
    sd->page = p;
    sd->writable = writable;
    sd->seq = 0;
    struct stat st;
    sd->ino = simdr__io.fstat(fd, &st) == 0 ? st.st_ino : 0;
    return sd;
}

void simdr__side_close(simdr__side *sd) {
    if (!sd) return;
    munmap(sd->page, SIDE_BYTES);
    close(sd->fd);
    free(sd);
}

/* Writer: states which file the page describes and that its committed tail
 * is `tail`, also recorded as durable when it is. */
static int side_reset(simdr__side *sd, int store_fd, uint64_t tail, int durable) {
    struct stat st;
    uint8_t meta[SIMDR__META_SIZE];
    if (simdr__io.fstat(store_fd, &st) != 0 || tail_meta(store_fd, tail, meta) != 0) return -1;
    /* Invalidate the header first: a reader meanwhile finds no record. */
    store(sd, W_HCHECK, 0, memory_order_release);
    uint64_t h[6] = {SIDE_MAGIC, SIDE_VERSION | ((uint64_t)SIDE_BYTES << 32), (uint64_t)st.st_dev,
                     (uint64_t)st.st_ino, 0, 0};
    for (unsigned i = 0; i < 6; i++) store(sd, i, h[i], memory_order_relaxed);
    store(sd, W_CLOSED, 0, memory_order_relaxed);
    sd->seq++;
    write_slot(sd, W_LIVE0 + (unsigned)(sd->seq & 1) * SLOT_WORDS, sd->seq, tail, meta);
    sd->seq++;
    write_slot(sd, W_LIVE0 + (unsigned)(sd->seq & 1) * SLOT_WORDS, sd->seq, tail, meta);
    /* A durable record only once a sync (or the caller, durable) made one. */
    if (durable)
        write_slot(sd, W_DURABLE, 0, tail, meta);
    else
        for (unsigned i = 0; i < SLOT_WORDS; i++) store(sd, W_DURABLE + i, 0, memory_order_relaxed);
    store(sd, W_HCHECK, hash_words(h, 6), memory_order_release);
    return 0;
}

simdr__side *simdr__side_attach_writer(const char *store_path, int store_fd, uint64_t tail,
                                       unsigned mode) {
    char *path = side_path(store_path);
    if (!path) return NULL;
    int fd = simdr__io.open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode ? mode : 0644);
    simdr__side *sd = NULL;
    struct stat st;
    int created = 0;
    /* Readers only probe the lock for an instant (simdr__side_writer_active),
     * so waiting for it is short. */
    if (fd >= 0 && flock(fd, LOCK_EX) == 0 && simdr__io.fstat(fd, &st) == 0) {
        created = st.st_size == 0;
        if (st.st_size == SIDE_BYTES || simdr__io.ftruncate(fd, SIDE_BYTES) == 0)
            sd = map_side(fd, 1);
    }
    if (sd && side_reset(sd, store_fd, tail, 0) != 0) {
        simdr__side_close(sd);
        sd = NULL;
        fd = -1;
    }
    if (!sd) {
        /* A side file this writer cannot keep up to date would mislead the
         * next open: remove it (that only costs a full recovery). */
        if (fd >= 0) close(fd);
        unlink(path);
        free(path);
        return NULL;
    }
    if (created) {
        /* A new side file must exist on disk before the first write can be
         * acknowledged as durable. */
        simdr__io.msync(sd->page, SIDE_BYTES, MS_SYNC);
        simdr__fsync_dir(path);
    }
    free(path);
    return sd;
}

simdr__side *simdr__side_attach_reader(const char *store_path) {
    char *path = side_path(store_path);
    if (!path) return NULL;
    int fd = simdr__io.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    free(path);
    if (fd < 0) return NULL;
    struct stat st;
    simdr__side *sd = NULL;
    if (simdr__io.fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= SIDE_BYTES)
        sd = map_side(fd, 0);
    if (!sd) close(fd);
    return sd;
}

int simdr__side_replaced(const simdr__side *sd, const char *store_path) {
    char *path = side_path(store_path);
    if (!path) return 0;
    struct stat st;
    int replaced = stat(path, &st) == 0 ? st.st_ino != sd->ino : 1;
    free(path);
    return replaced;
}

void simdr__side_publish(simdr__side *sd, uint64_t tail, const simdr__meta *last) {
    uint8_t meta[SIMDR__META_SIZE];
    simdr__meta_encode(meta, last);
    sd->seq++;
    write_slot(sd, W_LIVE0 + (unsigned)(sd->seq & 1) * SLOT_WORDS, sd->seq, tail, meta);
}

int simdr__side_sync(simdr__side *sd, int store_fd, uint64_t durable) {
    if (!sd) return 0;
    uint8_t meta[SIMDR__META_SIZE];
    if (tail_meta(store_fd, durable, meta) != 0) {
        errno = EIO;
        return -1;
    }
    /* Under the sync lock, not the writer's: the live sequence is not ours
     * to read, and the durable record needs none. */
    write_slot(sd, W_DURABLE, 0, durable, meta);
    return simdr__io.msync(sd->page, SIDE_BYTES, MS_SYNC);
}

int simdr__side_rebind(simdr__side *sd, int store_fd, uint64_t tail) {
    if (!sd) return 0;
    if (side_reset(sd, store_fd, tail, 1) != 0) return -1;
    return simdr__io.msync(sd->page, SIDE_BYTES, MS_SYNC);
}

void simdr__side_mark_closed(simdr__side *sd, uint64_t tail) {
    store(sd, W_CLOSED, tail + 1, memory_order_release);
}

int simdr__side_read(const simdr__side *sd, dev_t dev, ino_t ino, simdr__side_state *out) {
    if (!sd) return 0;
    uint64_t h[6];
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t check = load(sd, W_HCHECK, memory_order_acquire);
        for (unsigned i = 0; i < 6; i++) h[i] = load(sd, i, memory_order_relaxed);
        uint64_t closed = load(sd, W_CLOSED, memory_order_relaxed);
        simdr__side_record a, b, d;
        int has_a = read_slot(sd, W_LIVE0, &a), has_b = read_slot(sd, W_LIVE1, &b);
        int has_d = read_slot(sd, W_DURABLE, &d);
        atomic_thread_fence(memory_order_acquire);
        if (load(sd, W_HCHECK, memory_order_relaxed) != check) continue;
        if (check != hash_words(h, 6) || h[0] != SIDE_MAGIC || (uint32_t)h[1] != SIDE_VERSION)
            return 0;
        if (h[2] != (uint64_t)dev || h[3] != (uint64_t)ino || (!has_a && !has_b && !has_d))
            return 0;
        /* Neither live slot readable (a torn page after a power cut): the
         * durable record stands in for them. */
        out->live = has_a && (!has_b || a.seq > b.seq) ? a : has_b ? b : d;
        out->has_durable = has_d;
        if (has_d) out->durable = d;
        out->closed = closed;
        return 1;
    }
    return 0;
}

int simdr__side_writer_active(const simdr__side *sd) {
    if (!sd) return 0;
    if (flock(sd->fd, LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
    flock(sd->fd, LOCK_UN);
    return 0;
}
