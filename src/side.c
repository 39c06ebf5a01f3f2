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
 * its checksum wrong and takes the other, which holds the previous commit.
 * Two more slots, alternating the same way, hold the durable tail: a tail
 * whose bytes a completed fdatasync made durable, below which everything
 * must verify at the next open.
 *
 * A sync must leave on disk, before it is acknowledged, a record that keeps
 * what it acknowledges. Two ways (simdr__side_one_flush decides per writer):
 * - two flushes: fdatasync of the store, then the durable record written
 *   and the page flushed (msync);
 * - one flush (version 3): two more slots, the commit records, alternating,
 *   written only by syncs. Before the store's fdatasync the sync writes the
 *   tail it is about to acknowledge into a commit slot (and the tail of the
 *   previous, completed sync into the durable slots) and writes the page to
 *   the device without a cache flush (sync_file_range); the fdatasync's
 *   cache flush then makes the page and the store's bytes durable together.
 *   A power cut during that flush may keep either without the other: a
 *   commit record whose bytes are missing vouches for nothing (the chain
 *   does not reach it), bytes without their record are a torn tail; neither
 *   was acknowledged. A commit record vouches like a live record (below),
 *   but unlike the live slots, which every append rewrites and any
 *   write-back of the page may carry to the disk, the commit slots change
 *   only at the next sync, whose page goes out after this sync's flush
 *   completed, and which keeps this sync's record in the other slot while
 *   its own is written. The durable record lags one sync behind, never
 *   naming bytes not yet durable. This depends on the file system: the
 *   page overwritten in place (no copy-on-write), the store's fdatasync
 *   issuing a cache flush, both files on one device; docs/RELIABILITY.md.
 *
 * After a power cut the page on disk may hold live records from any moment
 * since its last flush, and the store's unsynced bytes any mix of what was
 * written. Bytes up to the durable tail were synced; a live record above it
 * vouches for the bytes between the two only when they are exactly what its
 * writer appended, and the format's CRC covers payloads only (a sector torn
 * inside a key hash passes it). So every record also carries the sum of a
 * 64-bit hash of each entry's metadata and end offset, over the entries
 * appended since an anchor (the tail at which the records' writer, or an
 * earlier one whose durable record it kept, started counting): the entries
 * between the durable tail and a live one must add up to the difference of
 * their sums (load.c, live_record_vouched). A sum, unlike a chained hash,
 * can be checked walking the chain backwards without buffering it, and
 * costs the put path a few multiplications per entry (simdr__side_term).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#include "internal.h"
#include "io.h"

#define SIDE_MAGIC UINT64_C(0x314c5452444d4953) /* "SIMDRTL1" little-endian */
/* 2: records carry an anchor and a metadata sum, two durable slots.
 * 3: two commit slots besides (one-flush syncs); a version-2 page is read
 * as before (no commit records). A page of another version is not read
 * (full recovery) and is rewritten by the next writer. */
#define SIDE_VERSION 3u
#define SIDE_VERSION_NO_COMMITS 2u
#define SIDE_BYTES 4096u

/* Word indexes into the page (each a little-endian u64). */
enum {
    W_MAGIC = 0,
    W_VERSION = 1,  /* version (low 32 bits) | page size (high 32 bits) */
    W_DEV = 2,
    W_INO = 3,
    W_CLOSED = 6,   /* 0 while a writer has the store open; tail + 1 after a clean close */
    W_HCHECK = 7,   /* XXH3-64 of words 0..5 */
    W_LIVE0 = 8,    /* live slots at words 8 and 16, durable slots at 24 and 32 */
    W_LIVE1 = 16,
    W_DURABLE0 = 24,
    W_DURABLE1 = 32,
    W_COMMIT0 = 40, /* commit slots at words 40 and 48 (version 3); every slot
                     * lies in the page's first 512 bytes, one sector */
    W_COMMIT1 = 48,
    SLOT_WORDS = 8, /* seq, tail, meta[0..8], meta[8..16], meta[16..20] | 0, anchor, sum, check */
    RECORD_WORDS = 7
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

/* Words as read: the writer's own map, or a reader's copy (read_words). */
static uint64_t load(const _Atomic uint64_t *w, unsigned i, memory_order mo) {
    return to_le(atomic_load_explicit(&w[i], mo));
}

static void store(simdr__side *sd, unsigned i, uint64_t v, memory_order mo) {
    atomic_store_explicit(&words(sd)[i], to_le(v), mo);
}

static void write_slot(simdr__side *sd, unsigned at, const simdr__side_record *r) {
    uint64_t w[RECORD_WORDS];
    w[0] = r->seq;
    w[1] = r->tail;
    w[2] = simdr__load_u64le(r->meta);
    w[3] = simdr__load_u64le(r->meta + 8);
    w[4] = simdr__load_u32le(r->meta + 16);
    w[5] = r->anchor;
    w[6] = r->sum;
    for (unsigned i = 0; i < RECORD_WORDS; i++) store(sd, at + i, w[i], memory_order_relaxed);
    /* The checksum last: a reader that sees it also sees the words it covers. */
    store(sd, at + RECORD_WORDS, hash_words(w, RECORD_WORDS), memory_order_release);
}

static void clear_slot(simdr__side *sd, unsigned at) {
    for (unsigned i = 0; i < SLOT_WORDS; i++) store(sd, at + i, 0, memory_order_relaxed);
}

/* 1 when the slot at word `at` holds a consistent record. */
static int read_slot(const _Atomic uint64_t *page, unsigned at, simdr__side_record *r) {
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t check = load(page, at + RECORD_WORDS, memory_order_acquire), w[RECORD_WORDS];
        for (unsigned i = 0; i < RECORD_WORDS; i++) w[i] = load(page, at + i, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (load(page, at + RECORD_WORDS, memory_order_relaxed) != check) continue;
        if (hash_words(w, RECORD_WORDS) != check || (w[4] >> 32) != 0 ||
            w[1] > SIMDR__MAX_OFFSET || w[5] > w[1])
            return 0;
        r->seq = w[0];
        r->tail = w[1];
        simdr__store_u64le(r->meta, w[2]);
        simdr__store_u64le(r->meta + 8, w[3]);
        simdr__store_u32le(r->meta + 16, (uint32_t)w[4]);
        r->anchor = w[5];
        r->sum = w[6];
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

/* A writer maps the page (its stores into it are the appends' only cost).
 * A reader does not: another program may shorten the file in place (a
 * shell's '>', truncate, cp over it), and a map of a page past the end of
 * the file faults (SIGBUS) where a read just comes back short. It reads
 * the words it needs with pread each time (read_words). */
static simdr__side *map_side(int fd, int writable) {
    simdr__side *sd = calloc(1, sizeof *sd);
    if (!sd) return NULL;
    void *p = NULL;
    if (writable) {
        p = simdr__io.mmap(NULL, SIDE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            free(sd);
            return NULL;
        }
    }
    sd->fd = fd;
    sd->page = p;
    sd->writable = writable;
    pthread_mutex_init(&sd->dlock, NULL);
    struct stat st;
    sd->ino = simdr__io.fstat(fd, &st) == 0 ? st.st_ino : 0;
    return sd;
}

void simdr__side_close(simdr__side *sd) {
    if (!sd) return;
    if (sd->page) munmap(sd->page, SIDE_BYTES);
    close(sd->fd);
    pthread_mutex_destroy(&sd->dlock);
    free(sd);
}

void simdr__side_forget(simdr__side *sd) {
    if (!sd) return;
    if (sd->page) munmap(sd->page, SIDE_BYTES);
    close(sd->fd);
    /* dlock is not destroyed: a thread of the parent may have held it at
     * the fork, and the child has no such thread to release it. */
    free(sd);
}

/* Writes the durable record (tail, sum) into the older durable slot; the
 * caller holds dlock or owns the page alone. */
static void write_durable(simdr__side *sd, const simdr__side_record *d) {
    simdr__side_record r = *d;
    r.seq = ++sd->dseq;
    r.anchor = sd->anchor;
    write_slot(sd, (sd->dseq & 1) ? W_DURABLE1 : W_DURABLE0, &r);
    sd->durable_tail = r.tail;
}

/* Writer: states which file the page describes, that its committed tail is
 * `tail` and the basis of the records' sums (b). */
static int side_reset(simdr__side *sd, int store_fd, uint64_t tail, const simdr__side_basis *b) {
    struct stat st;
    simdr__side_record live = {0};
    if (simdr__io.fstat(store_fd, &st) != 0 || tail_meta(store_fd, tail, live.meta) != 0) return -1;
    /* Invalidate the header first: a reader meanwhile finds no record. */
    store(sd, W_HCHECK, 0, memory_order_release);
    uint64_t h[6] = {SIDE_MAGIC, SIDE_VERSION | ((uint64_t)SIDE_BYTES << 32), (uint64_t)st.st_dev,
                     (uint64_t)st.st_ino, 0, 0};
    for (unsigned i = 0; i < 6; i++) store(sd, i, h[i], memory_order_relaxed);
    store(sd, W_CLOSED, 0, memory_order_relaxed);
    pthread_mutex_lock(&sd->dlock);
    sd->anchor = b->anchor;
    sd->sum = b->sum;
    live.tail = tail;
    live.anchor = b->anchor;
    live.sum = b->sum;
    for (int i = 0; i < 2; i++) {
        live.seq = ++sd->seq;
        write_slot(sd, W_LIVE0 + (unsigned)(sd->seq & 1) * SLOT_WORDS, &live);
    }
    /* The durable record in both slots, or none: only a sync (or a basis
     * that knows one) makes one. */
    sd->durable_tail = 0;
    /* Commits of another file or basis vouch for nothing here. */
    clear_slot(sd, W_COMMIT0);
    clear_slot(sd, W_COMMIT1);
    sd->cseq = 0;
    sd->has_pending = sd->has_confirmed = 0;
    if (b->has_durable) {
        write_durable(sd, &b->durable);
        write_durable(sd, &b->durable);
    } else {
        clear_slot(sd, W_DURABLE0);
        clear_slot(sd, W_DURABLE1);
    }
    pthread_mutex_unlock(&sd->dlock);
    store(sd, W_HCHECK, hash_words(h, 6), memory_order_release);
    return 0;
}

int simdr__side_flush_policy = SIMDR__SIDE_FLUSH_AUTO;

/* May syncs of this side file use one device flush? Only where the store's
 * fdatasync is known to flush the device's cache and the page is
 * overwritten in place: ext2/3/4 and XFS (barriers on, their default), and
 * tmpfs, which has no device; both files on one file system. Elsewhere (a
 * copy-on-write file system would need its own commit to make the page's
 * new copy reachable, a network file system need not order them at all)
 * two flushes. */
static int one_flush_fs(int side_fd, int store_fd) {
    if (simdr__side_flush_policy != SIMDR__SIDE_FLUSH_AUTO)
        return simdr__side_flush_policy == SIMDR__SIDE_FLUSH_ONE;
#ifdef __linux__
    struct stat a, b;
    struct statfs fs;
    if (simdr__io.fstat(side_fd, &a) != 0 || simdr__io.fstat(store_fd, &b) != 0 ||
        a.st_dev != b.st_dev ||
        fstatfs(side_fd, &fs) != 0)
        return 0;
    switch ((unsigned long)fs.f_type) {
    case 0xEF53UL:     /* ext2, ext3, ext4 */
    case 0x58465342UL: /* XFS */
    case 0x01021994UL: /* tmpfs */
        return 1;
    default:
        return 0;
    }
#else
    (void)side_fd;
    (void)store_fd;
    return 0;
#endif
}

/*
 * Gives the page its disk blocks before it is stored into through the map: a
 * page sized by ftruncate alone is a hole, and a store into a hole the file
 * system cannot fill (a full disk) raises SIGBUS instead of failing. fallocate
 * does it (nothing to do for a page already written); a file system without
 * it gets the page's bytes written back with pwrite, which fails with ENOSPC
 * where the store would fault. -1 with errno when the page has no blocks.
 */
static int side_allocate(int fd) {
    for (;;) {
        if (simdr__io.fallocate(fd, 0, 0, SIDE_BYTES) == 0) return 0;
        if (errno == EINTR) continue;
        if (errno != EOPNOTSUPP && errno != ENOSYS) return -1;
        break;
    }
    uint8_t page[SIDE_BYTES];
    if (simdr__pread_all(fd, page, SIDE_BYTES, 0) != 0) return -1;
    return simdr__pwrite_all(fd, page, SIDE_BYTES, 0);
}

/*
 * Takes the side file's lock for a writer. Readers hold it only for an
 * instant (simdr__side_writer_active), so a few short retries outlast them. A
 * writer holds it for as long as it has its store open, and that writer has
 * another file: the store lock is taken on the store file, this one by path,
 * so a file renamed or exchanged into the path of a store that is still open
 * (simdr-server's SWAPDB exchanges two stores' files) finds its own file
 * unlocked and this one held. Waiting would wait for that writer's close: 0,
 * or -1 with errno (EWOULDBLOCK when another writer holds it).
 */
static int side_lock_writer(int fd) {
    for (int tries = 0;; tries++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
        if (errno == EINTR) continue;
        if (errno != EWOULDBLOCK || tries >= 200) return -1;
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

simdr__side *simdr__side_attach_writer(const char *store_path, int store_fd, uint64_t tail,
                                       unsigned mode, const simdr__side_basis *basis,
                                       int *held_elsewhere) {
    *held_elsewhere = 0;
    char *path = simdr__suffixed_path(store_path, ".simdr");
    if (!path) return NULL;
    /* Never through a link: one planted there (a directory others may write
     * to) would have this writer cut and overwrite the file it names. The
     * link is then removed below, as any side file the writer cannot use. */
    int fd = simdr__io.open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode ? mode : 0644);
    simdr__side *sd = NULL;
    struct stat st;
    int created = 0;
    int locked = fd >= 0 && side_lock_writer(fd) == 0;
    if (fd >= 0 && !locked && errno == EWOULDBLOCK) {
        /* Another live writer's page: neither taken over nor removed. */
        close(fd);
        free(path);
        *held_elsewhere = 1;
        return NULL;
    }
    if (locked && simdr__io.fstat(fd, &st) == 0) {
        created = st.st_size == 0;
        if ((st.st_size == SIDE_BYTES || simdr__ftruncate(fd, SIDE_BYTES) == 0) &&
            side_allocate(fd) == 0)
            sd = map_side(fd, 1);
    }
    if (sd) sd->one_flush = one_flush_fs(fd, store_fd);
    if (sd && side_reset(sd, store_fd, tail, basis) != 0) {
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
    /* On disk before this writer's first append: a new side file must exist
     * before a write can be acknowledged as durable, and the page an
     * earlier writer left marked closed must not outlive the start of this
     * one (after a power cut it would pass this writer's appends off as
     * another program's, recovered in full). An existing page is flushed
     * only when the first append comes (simdr__side_flush_attached): until
     * then the file is exactly what either version of the page says, and an
     * open that only reads costs no disk write. */
    if (created) {
        simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
        simdr__fsync_dir(path);
    } else {
        sd->attach_unflushed = 1;
    }
    free(path);
    return sd;
}

simdr__side *simdr__side_attach_reader(const char *store_path) {
    char *path = simdr__suffixed_path(store_path, ".simdr");
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
    char *path = simdr__suffixed_path(store_path, ".simdr");
    if (!path) return 0;
    struct stat st;
    int replaced = stat(path, &st) == 0 ? st.st_ino != sd->ino : 1;
    free(path);
    return replaced;
}

void simdr__side_publish(simdr__side *sd, uint64_t tail, const simdr__meta *last, uint64_t sum) {
    simdr__side_record r;
    simdr__meta_encode(r.meta, last);
    r.seq = ++sd->seq;
    r.tail = tail;
    r.anchor = sd->anchor;
    r.sum = sd->sum = sum;
    write_slot(sd, W_LIVE0 + (unsigned)(sd->seq & 1) * SLOT_WORDS, &r);
}

/* A durable or commit record for tail (the store's 20 metadata bytes
 * ending there, read from store_fd) with running sum; 0, or -1 with errno
 * EIO when those bytes cannot be read. */
static int record_of_tail(int store_fd, uint64_t tail, uint64_t sum, simdr__side_record *out) {
    *out = (simdr__side_record){0};
    if (tail_meta(store_fd, tail, out->meta) != 0) {
        errno = EIO;
        return -1;
    }
    out->tail = tail;
    out->sum = sum;
    return 0;
}

int simdr__side_sync(simdr__side *sd, int store_fd, uint64_t durable, uint64_t sum) {
    if (!sd) return 0;
    simdr__side_record d;
    if (record_of_tail(store_fd, durable, sum, &d) != 0) return -1;
    /* The live sequence is the writer's (its lock is not held here); the
     * durable slots have their own lock, and only move forwards. */
    pthread_mutex_lock(&sd->dlock);
    if (durable > sd->durable_tail) write_durable(sd, &d);
    pthread_mutex_unlock(&sd->dlock);
    /* Flushed even when another thread wrote a newer record: it may not
     * have flushed it yet, and this caller's write needs it on disk. */
    return simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
}

int simdr__side_one_flush(const simdr__side *sd) { return sd && sd->one_flush; }

/* Writes the page to the device and waits for the write, without a cache
 * flush: on the device, not yet durable. Where that is not supported, the
 * page is flushed on its own (msync) and the writer goes back to two
 * flushes. */
static int push_page(simdr__side *sd) {
#ifdef __linux__
    unsigned how = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
    if (simdr__sync_file_range(sd->fd, 0, SIDE_BYTES, how) == 0) return 0;
    if (errno != ENOSYS && errno != EINVAL && errno != ESPIPE) return -1;
#endif
    sd->one_flush = 0;
    return simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
}

int simdr__side_commit(simdr__side *sd, int store_fd, uint64_t tail, uint64_t sum) {
    simdr__side_record c;
    if (record_of_tail(store_fd, tail, sum, &c) != 0) return -1;
    pthread_mutex_lock(&sd->dlock);
    c.anchor = sd->anchor;
    c.seq = ++sd->cseq;
    /* The older slot: the newer one keeps the last acknowledged tail while
     * this one is written and until this sync's flush has completed. */
    write_slot(sd, (c.seq & 1) ? W_COMMIT1 : W_COMMIT0, &c);
    sd->pending = c;
    sd->has_pending = 1;
    /* The previous commit's bytes are durable (its fdatasync returned): it
     * becomes the floor below which everything must verify. */
    if (sd->has_confirmed && sd->confirmed.tail > sd->durable_tail)
        write_durable(sd, &sd->confirmed);
    pthread_mutex_unlock(&sd->dlock);
    return push_page(sd);
}

void simdr__side_committed(simdr__side *sd, uint64_t tail) {
    pthread_mutex_lock(&sd->dlock);
    if (sd->has_pending && sd->pending.tail == tail) {
        sd->confirmed = sd->pending;
        sd->has_confirmed = 1;
        sd->has_pending = 0;
    }
    pthread_mutex_unlock(&sd->dlock);
}

int simdr__side_rebind(simdr__side *sd, int store_fd, uint64_t tail) {
    if (!sd) return 0;
    simdr__side_basis b = {1, {0, tail, tail, 0, {0}}, tail, 0};
    if (tail_meta(store_fd, tail, b.durable.meta) != 0 || side_reset(sd, store_fd, tail, &b) != 0) {
        /* The page still names the replaced file, whose inode number the
         * file system may give to a later file (the next compaction's):
         * under it these records would be read as that file's. Naming no
         * file instead costs the next open a full recovery, nothing more;
         * the next open of a writer rewrites the page. Without its magic it
         * is no page at all to a reader, who would otherwise read it again
         * as a header caught mid-rewrite. */
        store(sd, W_HCHECK, 0, memory_order_release);
        store(sd, W_MAGIC, 0, memory_order_release);
        simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
        return -1;
    }
    return simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
}

void simdr__side_flush_attached(simdr__side *sd) {
    if (!sd || !sd->attach_unflushed) return;
    sd->attach_unflushed = 0;
    simdr__msync(sd->page, SIDE_BYTES, MS_SYNC);
}

void simdr__side_mark_closed(simdr__side *sd, uint64_t tail) {
    store(sd, W_CLOSED, tail + 1, memory_order_release);
}

/* The words a reader uses (every slot lies in them), copied from the file:
 * a copy made while the writer stores into its page may hold a record
 * half-written, which its checksum rejects as it would in the map. 0, or
 * -1 when the file no longer holds them (cut short since it was opened). */
#define READ_WORDS (W_COMMIT1 + SLOT_WORDS)
static int read_words(const simdr__side *sd, _Atomic uint64_t copy[READ_WORDS]) {
    return simdr__pread_all(sd->fd, (void *)copy, READ_WORDS * sizeof(uint64_t), 0);
}

int simdr__side_read(const simdr__side *sd, dev_t dev, ino_t ino, simdr__side_state *out) {
    if (!sd) return 0;
    uint64_t h[6];
    _Atomic uint64_t copy[READ_WORDS];
    for (int attempt = 0; attempt < 4; attempt++) {
        const _Atomic uint64_t *page = words(sd);
        if (!sd->page) {
            if (read_words(sd, copy) != 0) return 0;
            page = copy;
        }
        uint64_t check = load(page, W_HCHECK, memory_order_acquire);
        for (unsigned i = 0; i < 6; i++) h[i] = load(page, i, memory_order_relaxed);
        uint64_t closed = load(page, W_CLOSED, memory_order_relaxed);
        simdr__side_record a, b, d0, d1, c0, c1;
        int has_a = read_slot(page, W_LIVE0, &a), has_b = read_slot(page, W_LIVE1, &b);
        int has_d0 = read_slot(page, W_DURABLE0, &d0), has_d1 = read_slot(page, W_DURABLE1, &d1);
        int has_c0 = read_slot(page, W_COMMIT0, &c0), has_c1 = read_slot(page, W_COMMIT1, &c1);
        atomic_thread_fence(memory_order_acquire);
        if (load(page, W_HCHECK, memory_order_relaxed) != check) continue;
        uint32_t version = (uint32_t)h[1];
        if (h[0] != SIDE_MAGIC || (version != SIDE_VERSION && version != SIDE_VERSION_NO_COMMITS))
            return 0;
        /* Caught while the writer rewrote the header (a compaction names its
         * new file): read it again. */
        if (check != hash_words(h, 6)) continue;
        if (version == SIDE_VERSION_NO_COMMITS) has_c0 = has_c1 = 0;
        if (h[2] != (uint64_t)dev || h[3] != (uint64_t)ino ||
            (!has_a && !has_b && !has_d0 && !has_d1 && !has_c0 && !has_c1))
            return 0;
        out->n_live = 0;
        if (has_a && has_b && b.seq > a.seq) {
            simdr__side_record t = a;
            a = b;
            b = t;
        } else if (!has_a && has_b) {
            a = b;
            has_a = 1;
            has_b = 0;
        }
        if (has_a) out->live[out->n_live++] = a;
        if (has_b) out->live[out->n_live++] = b;
        out->has_durable = has_d0 || has_d1;
        if (out->has_durable) out->durable = has_d0 && (!has_d1 || d0.seq > d1.seq) ? d0 : d1;
        out->n_commit = 0;
        if (has_c0 && has_c1 && c1.seq > c0.seq) {
            out->commit[out->n_commit++] = c1;
            out->commit[out->n_commit++] = c0;
        } else {
            if (has_c0) out->commit[out->n_commit++] = c0;
            if (has_c1) out->commit[out->n_commit++] = c1;
        }
        out->closed = closed;
        return 1;
    }
    return 0;
}

const simdr__side_record *simdr__side_newest(const simdr__side_state *st) {
    /* Neither live slot readable (a torn page after a power cut): the
     * durable record stands in for them. */
    return st->n_live ? &st->live[0] : st->has_durable ? &st->durable : NULL;
}

int simdr__side_writer_active(const simdr__side *sd) {
    if (!sd) return 0;
    if (flock(sd->fd, LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
    flock(sd->fd, LOCK_UN);
    return 0;
}
