/*
 * compact.c - rewriting the store with only the newest live entry of each
 * key, and the exact size such a rewrite would save.
 *
 * The new file "<path>.compact" is written in the old file's order, made
 * durable, mapped and indexed, and only then renamed over the store (and the
 * directory fsynced). A crash before the rename leaves the old file whole (the
 * temporary is deleted, never merged, at the next writable open); after it,
 * the new file is complete. The open store then switches to the new file;
 * readers are never blocked and handles into the old map keep it alive.
 * Every entry is verified before it is copied: a damaged store is refused
 * and left as it is, never rewritten with its damage under fresh links.
 *
 * Writers are not stopped for the copy. The live entries are listed under
 * the writer lock at a tail T0 and copied without it; the entries appended
 * meanwhile are then copied as they are (every put and delete, in order,
 * relinked), first without the lock while there are many, and last under
 * both locks, which stay held through the switch. So a writer waits only for
 * that last catch-up, the index's finishing touches and the rename, however
 * large the store.
 *
 * The new file's prefix (the entries live at T0) depends only on the old
 * file's bytes below T0: the handle records where it came from
 * (simdr_log_origin), and simdr_log_compact_prefix writes the same prefix
 * from any copy of those bytes (a replica's), through the same copying code.
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

#define COPY_BUFFER (UINT64_C(4) << 20)
#define DROP_BEHIND (UINT64_C(8) << 20) /* a power of two, a multiple of the page size */
#define PREFETCH_AHEAD 16

/* The live index slots in file order, each as (metadata offset << 16 | the
 * top 16 bits of its key's hash): the slot's tag comes along so the copy can
 * check that the metadata it reads holds the key the index filed there. */
#define LIVE_OFF(x) ((x) >> 16)
#define LIVE_TAG(x) ((x) & 0xffffu)
/* Lists up to max of them into live (NULL: only counts them). */
static uint64_t list_live_into(const simdr__index *ix, uint64_t *live, uint64_t max) {
    uint64_t k = 0;
    for (uint64_t i = simdr__index_walk_from(ix, 0); i < ix->cap && k < max;
         i = simdr__index_walk_from(ix, i + 1)) {
        uint64_t val = atomic_load_explicit(&ix->slots[i], memory_order_acquire);
        if (!val || (val & SIMDR__IDX_TOMB)) continue;
        if (live) live[k] = (val & SIMDR__IDX_OFF_MASK) << 16 | val >> 48;
        k++;
    }
    return k;
}

/* Under the writer lock (no insert meanwhile): counted first, so the list
 * is as long as the live entries, not the table (a table reserved from a
 * huge expected_keys has far more slots than keys). */
static int listed_live(simdr__view *v, uint64_t **out, uint64_t *n) {
    uint64_t count = list_live_into(v->index, NULL, UINT64_MAX);
    uint64_t *live = malloc((count ? count : 1) * sizeof *live);
    if (!live) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    *out = live;
    *n = list_live_into(v->index, live, count);
    return SIMDR_OK;
}

/*
 * Reads the metadata of every live entry, so its walk maps in the pages of
 * a dense file, and is called again and again by a server as its files grow
 * (to decide when to compact): the pages it mapped are unmapped again at the
 * end, or a store whose data lives in the file would keep all of it counted
 * in the process's resident memory. The index is read inside an epoch
 * section, the entries with only the map pinned: a section held for the
 * whole walk would hold up every writer publishing a view meanwhile.
 */
SIMDR_API uint64_t simdr_compaction_savings(simdr_store *s) {
    if (!s) return 0;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    int layout = atomic_load(&s->layout);
    uint64_t n = 0, size = 0;
    /* Mapped apart from the heap and unmapped after, so that a server
     * measuring from a thread of its own does not leave the list's memory
     * in that thread's malloc arena. */
    size_t bytes = (size_t)(v->index->cap ? v->index->cap : 1) * sizeof(uint64_t);
    uint64_t *offs = simdr__alloc_zeroed(bytes);
    /* A hinted table with a damaged block names no trustworthy offsets:
     * no estimate (0) until the writer has rebuilt it. */
    if (!offs || simdr__index_check_all(v->index) != 0) {
        simdr__epoch_exit(&s->epoch, shard, tok);
        simdr__free_big(offs, bytes);
        return 0;
    }
    n = list_live_into(v->index, offs, v->index->cap);
    simdr__map *map = v->map;
    simdr__map_pin(map, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    simdr__sort_offsets(offs, n);
    for (uint64_t i = 0; i < n; i++) {
        struct simdr_entry e;
        if (simdr__entry_decode(map->base, map->len, LIVE_OFF(offs[i]), layout, &e) != SIMDR_OK)
            continue;
        size += simdr__pad_for(size, layout == SIMDR_LAYOUT_ALIGNED64) + e.size + SIMDR__META_SIZE;
    }
    simdr__map_unmap_pages(map, tail);
    simdr__map_unpin(map, shard);
    simdr__free_big(offs, bytes);
    return tail > size ? tail - size : 0;
}

typedef struct writer {
    int fd;
    uint8_t *buf;
    uint64_t buffered;
    uint64_t flushed;       /* file offset of buf[0] */
    simdr__digest *digest;  /* while the prefix is written: every byte put goes in */
} writer;

static int writer_flush(writer *w) {
    if (w->buffered && simdr__pwrite_all(w->fd, w->buf, (size_t)w->buffered, w->flushed) != 0)
        return -1;
    w->flushed += w->buffered;
    w->buffered = 0;
    return 0;
}

static int writer_put(writer *w, const void *p, uint64_t len) {
    /* A large payload goes straight from the map to the file, after what is
     * buffered before it (it is written at the buffer's end, so the buffer
     * must be empty); anything that does not fit flushes the buffer first. */
    int direct = len > COPY_BUFFER / 2;
    if (w->digest) simdr__digest_add(w->digest, p, (size_t)len);
    if ((direct || w->buffered + len > COPY_BUFFER) && writer_flush(w) != 0) return -1;
    if (direct) {
        if (simdr__pwrite_all(w->fd, p, (size_t)len, w->flushed) != 0) return -1;
        w->flushed += len;
        return 0;
    }
    memcpy(w->buf + w->buffered, p, (size_t)len);
    w->buffered += len;
    return 0;
}

/* Decodes and verifies the live entry whose metadata is at meta_off, its
 * bytes read through r; tag is the top of the hash its index slot holds and
 * floor the end of the entry copied before it. The metadata, when the buffer
 * does not hold it, is read on its own (20 bytes): a refill starting there
 * would miss the entry's start, which only the metadata names, and cost a
 * second refill. A copy rewrites every link and is checksummed again by
 * nobody, so whatever it copies must be the entry the index names, whole:
 * its metadata holds the slot's key, it lies after the entry before it (a
 * link into copied bytes would resurrect them), its link lands on the end of
 * an entry (metadata whose own link points below it) and its bytes match
 * their checksum. Returns a static description of the failed check, or NULL. */
static const char checksum_mismatch[] = "a checksum mismatch";

static const char *read_entry(simdr__window *r, uint64_t meta_off, unsigned tag, uint64_t floor,
                              int layout, struct simdr_entry *e) {
    if (meta_off + SIMDR__META_SIZE > r->end) return "metadata beyond the end of the file";
    uint8_t copy[SIMDR__META_SIZE];
    const uint8_t *meta = copy;
    if (meta_off >= r->lo && meta_off + SIMDR__META_SIZE <= r->hi)
        meta = r->buf + (meta_off - r->lo);
    else if (!r->buf || simdr__pread_all(r->fd, copy, sizeof copy, meta_off) != 0)
        meta = r->base + meta_off;
    if ((simdr__load_u64le(meta) >> 48) != tag) return "metadata without its key's hash";
    uint64_t prev = simdr__load_u64le(meta + 8);
    if (prev >= meta_off || prev < floor) return "a link outside the entry's place";
    if (prev > 0 && prev < SIMDR__META_SIZE) return "a link into the first metadata";
    uint64_t lo = prev ? prev - SIMDR__META_SIZE : 0;
    const uint8_t *span = simdr__window_span(r, lo, meta_off + SIMDR__META_SIZE);
    if (prev && simdr__load_u64le(span + 8) >= lo) return "a link that lands on no entry's end";
    if (simdr__entry_decode_span(span + (prev - lo), prev, meta_off, layout, e) != SIMDR_OK ||
        e->tombstone)
        return "no value between its link and its metadata";
    if (simdr__crc32(0, e->data, e->size) != e->checksum) return checksum_mismatch;
    return NULL;
}

/* While more than this many bytes were appended since the last catch-up, a
 * catch-up runs without the writer lock; the last one, under it, copies what
 * remains (after at most CATCH_UP_ROUNDS rounds, however much that is: writers
 * that outpace the copy are then held for one round). */
#define CATCH_UP_UNLOCKED_MIN (UINT64_C(1) << 20)
#define CATCH_UP_ROUNDS 4

_Atomic(simdr__compact_hook_fn) simdr__compact_during_copy;

static void run_test_hook(simdr_store *s, int stage) {
    simdr__compact_hook_fn hook = atomic_load(&simdr__compact_during_copy);
    if (hook) hook(s, stage);
}

/* One compaction: the old file it reads and the new file it writes. */
typedef struct compaction {
    simdr_store *s;
    simdr__map *src;    /* the old file's map at the start, pinned until the end */
    unsigned shard;     /* the pin's shard */
    int layout;
    char *tmp;          /* "<path>.compact" */
    struct stat st;     /* the store file's (for the new file's permission bits), then
                           the new file's (its identity) */
    uint64_t *offs;     /* the live slots at the start in file order; after the copy,
                           their key hashes */
    uint64_t *new_meta; /* each copied entry's metadata offset in the new file */
    uint64_t n;
    uint64_t size;      /* bytes written to the new file */
    uint64_t durable;   /* ... of which fsynced */
    uint64_t caught_up; /* the old file's entries up to this offset are in the new file */
    /* The entries copied by catch-up, oldest first: key hash, metadata offset
     * in the new file, tombstone. */
    simdr__chain_rec *delta;
    uint64_t n_delta, delta_cap;
    uint64_t live, dead; /* the new file's live keys and dead entries */
    writer w;
    simdr__window rd;   /* the old file, read forwards through a buffer (see simdr__window) */
    simdr__map *map;    /* the new file's, then its index and view */
    simdr__index *ix;
    simdr__view *nv;
    /* What a replica of the old file needs to rebuild the new file's prefix
     * (simdr_log_origin): the old file, the tail the live entries were
     * listed at, and the prefix they make. */
    uint64_t old_identity, listed_at, prefix_len, prefix_hash;
    /* simdr_compact_stoppable's caller's question, asked between steps. */
    int (*should_stop)(void *ctx);
    void *stop_ctx;
} compaction;

/* Entries copied between two questions to the caller: a few milliseconds. */
#define STOP_POLL_ENTRIES 4096u

/* SIMDR_ESTOPPED when the caller of simdr_compact_stoppable asks to stop. */
static int stop_asked(compaction *c) {
    if (!c->should_stop || !c->should_stop(c->stop_ctx)) return SIMDR_OK;
    return simdr__fail(SIMDR_ESTOPPED, "%s: compaction stopped by its caller; the store is "
                       "still on its old file", c->s->path);
}

/* Under the writer lock: the tail to copy up to, the live entries there, and
 * a pin on the map that holds them (a growth may replace the map while the
 * copy runs without the lock). */
static int compaction_start(compaction *c, simdr_store *s) {
    simdr__view *v = simdr__current_view(s);
    c->layout = atomic_load(&s->layout);
    c->caught_up = s->tail;
    c->listed_at = s->tail;
    c->old_identity = simdr__file_identity(s);
    c->shard = simdr__thread_shard();
    c->src = v->map;
    simdr__map_pin(c->src, c->shard);
    c->rd = (simdr__window){s->fd, c->src->base, s->tail, 0, NULL, COPY_BUFFER, 0, 0};
    return listed_live(v, &c->offs, &c->n); /* sorted into file order after the lock */
}

/* The buffers and the new file, created empty (a leftover of an earlier
 * compaction is replaced) and locked. The store's descriptor is only
 * replaced by a compaction, and this is the only one running. */
static int create_new_file(compaction *c) {
    simdr_store *s = c->s;
    c->tmp = simdr__suffixed_path(s->path, SIMDR__COMPACT_SUFFIX);
    if (!c->tmp) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    if (simdr__io.fstat(s->fd, &c->st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    c->new_meta = malloc((c->n ? c->n : 1) * sizeof *c->new_meta);
    c->w.buf = malloc(COPY_BUFFER);
    c->rd.buf = malloc(COPY_BUFFER);
    if (!c->new_meta || !c->w.buf || !c->rd.buf) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    unlink(c->tmp);
    c->w.fd = simdr__io.open(c->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->st.st_mode & 07777);
    if (c->w.fd >= 0) atomic_store(&s->compact_fd, c->w.fd); /* for the fork handler */
    if (c->w.fd < 0 || flock(c->w.fd, LOCK_EX | LOCK_NB) != 0)
        return simdr__fail_errno(errno, "creating the compaction file", c->tmp);
    /* The new file's identity, taken now: after the rename nothing may fail. */
    if (simdr__io.fstat(c->w.fd, &c->st) != 0)
        return simdr__fail_errno(errno, "fstat", c->tmp);
    return SIMDR_OK;
}

static int damaged(compaction *c, uint64_t meta_off, const char *bad) {
    return simdr__fail(SIMDR_ECORRUPT,
                       "%s: damaged store: the entry whose metadata is at offset %llu has %s; "
                       "nothing was compacted, the file is unchanged (run the check command)",
                       c->s->path, (unsigned long long)meta_off, bad);
}

/* A decoded entry whose value fails its checksum. */
static int damaged_value(compaction *c, const struct simdr_entry *e) {
    return simdr__fail_checksum(SIMDR_ECORRUPT, c->s->path, "damaged store: a ", e,
                                "; nothing was compacted, the file is unchanged (run the check "
                                "command)");
}

/* Appends one entry's payload to the new file after its padding (none for a
 * tombstone), with metadata linking it to the entry before; returns the
 * offset of that metadata in *meta_off. */
static int append_copy(compaction *c, const struct simdr_entry *e, uint64_t *meta_off) {
    uint64_t pad =
        e->tombstone ? 0 : simdr__pad_for(c->size, c->layout == SIMDR_LAYOUT_ALIGNED64);
    uint8_t meta[SIMDR__META_SIZE];
    simdr__meta m = {e->key_hash, c->size, e->checksum};
    simdr__meta_encode(meta, &m);
    if (writer_put(&c->w, simdr__zero_pad, pad) != 0 ||
        writer_put(&c->w, e->data, e->size) != 0 || writer_put(&c->w, meta, sizeof meta) != 0)
        return simdr__fail_errno(errno, "writing the compacted file", c->tmp);
    c->size += pad + e->size + SIMDR__META_SIZE;
    *meta_off = c->size - SIMDR__META_SIZE;
    return SIMDR_OK;
}

/* Copies every entry live at the start, verified, into the new file in the
 * old file's order, relinked and padded for the layout. */
static int copy_live_entries(compaction *c) {
    const uint8_t *old_base = c->src->base;
    uint64_t dropped = 0, copied_end = 0;
    for (uint64_t i = 0; i < c->n; i++) {
        if (i % STOP_POLL_ENTRIES == STOP_POLL_ENTRIES - 1) {
            int stop = stop_asked(c);
            if (stop != SIMDR_OK) return stop;
        }
        uint64_t meta_off = LIVE_OFF(c->offs[i]);
        /* The old file is read once, in order: hand its pages back as the
         * copy passes them so the process does not hold both files at once
         * (the data stays in the page cache; a reader still holding the old
         * map faults it back in). */
        if (meta_off - dropped >= DROP_BEHIND) {
            uint64_t upto = meta_off & ~(DROP_BEHIND - 1);
            madvise((void *)(old_base + dropped), (size_t)(upto - dropped), MADV_DONTNEED);
            dropped = upto;
        }
        struct simdr_entry e;
        const char *bad = read_entry(&c->rd, meta_off, (unsigned)LIVE_TAG(c->offs[i]), copied_end,
                                     c->layout, &e);
        if (bad == checksum_mismatch) return damaged_value(c, &e);
        if (bad) return damaged(c, meta_off, bad);
        copied_end = meta_off + SIMDR__META_SIZE;
        int rc = append_copy(c, &e, &c->new_meta[i]);
        if (rc != SIMDR_OK) return rc;
        c->offs[i] = e.key_hash; /* the old offset is spent; the index build needs the hash */
    }
    return SIMDR_OK;
}

/* The new file's prefix: the live entries listed at c->listed_at, copied by
 * copy_live_entries, with the XXH3-64 of every byte written for it. Both
 * simdr_compact and simdr_log_compact_prefix write their prefix here, so
 * the bytes a replica rebuilds are the bytes the primary wrote. */
static int copy_prefix(compaction *c) {
    c->w.digest = simdr__digest_new();
    if (!c->w.digest) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    int rc = copy_live_entries(c);
    c->prefix_len = c->size;
    c->prefix_hash = simdr__digest_end(c->w.digest);
    c->w.digest = NULL;
    return rc;
}

/* Copies the entries appended to the old file in (c->caught_up, to], read
 * through base (len bytes mapped; every one of them published, so none of
 * those bytes changes), oldest first. Each is verified as the first copy
 * verifies: a chain that steps from to down to c->caught_up exactly, and
 * every payload's checksum. Puts and deletes alike are copied, since a delete
 * may hide a key the new file already holds; their keys, new metadata
 * offsets and kinds go to c->delta for the index. */
static int catch_up(compaction *c, const uint8_t *base, uint64_t len, uint64_t to) {
    uint64_t from = c->caught_up;
    if (to <= from) return SIMDR_OK;
    if (to > len) return damaged(c, to, "an end beyond the map");
    uint64_t *metas = NULL, n = 0, cap = 0;
    int rc = SIMDR_OK;
    for (uint64_t p = to; p > from && rc == SIMDR_OK;) {
        if (p - from <= SIMDR__META_SIZE) {
            rc = damaged(c, p, "a link outside the entries appended during the compaction");
            break;
        }
        uint64_t m = p - SIMDR__META_SIZE;
        uint64_t prev = simdr__load_u64le(base + m + 8);
        if (prev >= m || prev < from) {
            rc = damaged(c, m, "a link outside the entries appended during the compaction");
            break;
        }
        if (n == cap) {
            uint64_t ncap = cap ? cap * 2 : 256;
            uint64_t *grown = realloc(metas, ncap * sizeof *metas);
            if (!grown) {
                rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
                break;
            }
            metas = grown;
            cap = ncap;
        }
        metas[n++] = m;
        p = prev;
    }
    if (rc == SIMDR_OK && c->n_delta + n > c->delta_cap) {
        uint64_t ncap = (c->n_delta + n) * 2;
        simdr__chain_rec *grown = realloc(c->delta, ncap * sizeof *grown);
        if (!grown)
            rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
        else {
            c->delta = grown;
            c->delta_cap = ncap;
        }
    }
    for (uint64_t i = n; i-- > 0 && rc == SIMDR_OK;) {
        struct simdr_entry e;
        if (simdr__entry_decode(base, len, metas[i], c->layout, &e) != SIMDR_OK) {
            rc = damaged(c, metas[i], "no value between its link and its metadata");
            break;
        }
        if (simdr__crc32(0, e.data, e.size) != e.checksum) {
            rc = damaged_value(c, &e);
            break;
        }
        simdr__chain_rec *d = &c->delta[c->n_delta];
        rc = append_copy(c, &e, &d->meta);
        if (rc != SIMDR_OK) break;
        d->hash = e.key_hash;
        d->tomb = e.tombstone;
        c->n_delta++;
    }
    free(metas);
    if (rc == SIMDR_OK) c->caught_up = to;
    return rc;
}

/* Without the writer lock: catch-up rounds while writers append faster than
 * a round copies, each against the newest published tail, read through that
 * view's map, pinned for the round. */
static int catch_up_unlocked(compaction *c) {
    simdr_store *s = c->s;
    for (int round = 0; round < CATCH_UP_ROUNDS; round++) {
        int stop = stop_asked(c);
        if (stop != SIMDR_OK) return stop;
        unsigned tok = simdr__epoch_enter(&s->epoch, c->shard);
        simdr__view *v = simdr__current_view(s);
        uint64_t to = atomic_load_explicit(&v->tail, memory_order_acquire);
        simdr__map *m = v->map;
        simdr__map_pin(m, c->shard);
        simdr__epoch_exit(&s->epoch, c->shard, tok);
        int rc = SIMDR_OK, more = to > c->caught_up && to - c->caught_up >= CATCH_UP_UNLOCKED_MIN;
        if (more) rc = catch_up(c, m->base, m->len, to);
        simdr__map_unpin(m, c->shard);
        if (rc != SIMDR_OK || !more) return rc;
    }
    return SIMDR_OK;
}

/* What is written so far, on stable storage. */
static int make_new_file_durable(compaction *c) {
    if (c->durable == c->size && c->w.buffered == 0) return SIMDR_OK;
    if (writer_flush(&c->w) != 0 || simdr__fsync(c->w.fd) != 0)
        return simdr__fail_errno(errno, "writing the compacted file", c->tmp);
    c->durable = c->size;
    return SIMDR_OK;
}

/* The index of the entries live at the start, built without the writer
 * lock and without reading the new file: keys are distinct and their hashes
 * in hand. Home slots are prefetched a few keys ahead because each insert is
 * otherwise a dependent cache miss. Room is left for the keys catch-up has
 * added so far and a quarter more. */
static int index_live_entries(compaction *c) {
    c->ix = simdr__index_new(c->n + c->n_delta + c->n_delta / 4);
    if (!c->ix) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < c->n; i++) {
        if (i + PREFETCH_AHEAD < c->n) simdr__index_prefetch(c->ix, c->offs[i + PREFETCH_AHEAD]);
        simdr__index_insert_distinct(c->ix, c->offs[i],
                                     simdr__index_value(c->offs[i], c->new_meta[i], 0));
    }
    c->live = c->n;
    return SIMDR_OK;
}

/* Under both locks: the last catch-up, to the writer's tail; the new file
 * durable and mapped; the caught-up entries indexed over the live ones (as
 * the writer indexes them: live and dead counts included); its view. */
static int finish_new_file(compaction *c) {
    simdr_store *s = c->s;
    int rc = simdr__check_writable(s);
    if (rc != SIMDR_OK) return rc;
    if (s->tail < c->caught_up)
        return simdr__fail(SIMDR_EFAILED, "%s: the store's tail went back during the compaction",
                           s->path);
    rc = simdr__ensure_mapped(s, s->tail);
    if (rc != SIMDR_OK) return rc;
    simdr__view *v = simdr__current_view(s);
    rc = catch_up(c, v->map->base, v->map->len, s->tail);
    if (rc == SIMDR_OK) rc = make_new_file_durable(c);
    if (rc == SIMDR_OK) rc = simdr__map_create(c->w.fd, c->size, &c->map, c->tmp);
    if (rc != SIMDR_OK) return rc;
    if (simdr__index_room(c->ix) < c->n_delta) {
        simdr__index *bigger = simdr__index_resized(c->ix, c->map->base, c->ix->used + c->n_delta);
        if (!bigger) return simdr__fail(SIMDR_ENOMEM, "out of memory");
        simdr__index_free(c->ix);
        c->ix = bigger;
    }
    for (uint64_t i = 0; i < c->n_delta; i++) {
        const simdr__chain_rec *d = &c->delta[i];
        uint64_t prev = simdr__index_put(c->ix, c->map->base, d->hash,
                                         simdr__index_value(d->hash, d->meta, d->tomb));
        int change = simdr__live_change(prev, d->tomb);
        c->live += (uint64_t)(int64_t)change;
        c->dead += (uint64_t)(1 - change);
    }
    c->nv = malloc(sizeof *c->nv);
    if (!c->nv) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    c->nv->map = c->map;
    c->nv->index = c->ix;
    atomic_init(&c->nv->tail, c->size);
    return SIMDR_OK;
}

/* Renames the new file over the store, syncs the directory and switches the
 * open store to the new file; the old view goes after a grace period. A
 * failure before the switch leaves the handle on the old file (*renamed
 * says whether the path already names the new one). Both locks held. */
static int switch_to_new_file(compaction *c, int *renamed) {
    simdr_store *s = c->s;
    if (simdr__io.rename(c->tmp, s->path) != 0)
        return simdr__fail_errno(errno, "renaming the compacted file over the store", s->path);
    *renamed = 1;
    /* Until the directory is synced a power cut may bring the old file back
     * under the path. A failed directory fsync is a failed sync, and the
     * handle stays on the old file: s->synced is that file's synced prefix,
     * which is all it can promise. Switching would set it to the new file's
     * size, and a durable writer that appended during the copy and waits for
     * its sync (its tail an offset in the old file, no higher than that size)
     * would be told its write is durable, when its only durable copy is in a
     * file the power cut unlinks. Staying, that writer gets SIMDR_EFAILED and
     * the handle withdraws what was never synced, as after any failed sync. */
    if (simdr__fsync_dir(s->path) != 0) {
        int err = errno ? errno : EIO;
        atomic_store_explicit(&s->failed, 1, memory_order_release);
        return simdr__fail(simdr__errno_status(err),
                           "%s: the compacted file replaced the store, but syncing its "
                           "directory failed (%s): the rename may not survive a power cut, so "
                           "this handle keeps serving the old file and refuses writes and syncs "
                           "until the store is reopened",
                           s->path, strerror(err));
    }

    simdr__view *old = simdr__current_view(s);
    int old_fd = s->fd;
    s->fd = c->w.fd;
    atomic_store(&s->compact_fd, -1);
    /* Mapped appends start over in the new file, exactly c->size long. */
    simdr__mapped_release(s, c->size);
    atomic_store(&s->synced, c->size);
    /* The side file now describes the new file (a crash before this line
     * leaves it naming the old one: the next open recovers in full). A
     * failure leaves it naming no file, with the same effect; the data is
     * all in place, so the compaction has still succeeded. */
    (void)simdr__side_rebind(s->side, c->w.fd, c->size);
    close(old_fd);
    s->dev = c->st.st_dev;
    s->ino = c->st.st_ino;
    s->tail = c->size;
    s->hint_tail = 0; /* the hint on disk describes the old file */
    atomic_store(&s->live, c->live);
    simdr__view_new_file(s, c->nv, c->dead);
    atomic_store_explicit(&s->view, c->nv, memory_order_release);
    simdr__epoch_synchronize(&s->epoch);
    simdr__map_retire(old->map);
    simdr__index_free(old->index);
    free(old);
    return SIMDR_OK;
}

/* A compaction that failed: the handle stays on the old file; the new file
 * goes, unless it was renamed over the store already (renamed). */
static void abandon_new_file(compaction *c, int renamed) {
    if (c->map) simdr__map_retire(c->map);
    simdr__index_free(c->ix);
    free(c->nv);
    if (c->w.fd >= 0) {
        /* Forgotten by the fork handler before the number can be reused. */
        atomic_store(&c->s->compact_fd, -1);
        close(c->w.fd);
        if (!renamed) unlink(c->tmp);
    }
}

static void compaction_free(compaction *c) {
    if (c->src) simdr__map_unpin(c->src, c->shard);
    free(c->offs);
    free(c->new_meta);
    free(c->delta);
    free(c->w.buf);
    free(c->rd.buf);
    free(c->tmp);
}

SIMDR_API int simdr_compact(simdr_store *s) { return simdr_compact_stoppable(s, NULL, NULL); }

SIMDR_API int simdr_compact_stoppable(simdr_store *s, int (*should_stop)(void *ctx), void *ctx) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    if (simdr__check_reentry(s) != SIMDR_OK) return SIMDR_EINVAL;
    /* Refused before the compaction lock is waited for: a child forked while
     * the parent compacted inherits that lock held by a thread it lacks. */
    int refused = simdr__check_writable(s);
    if (refused != SIMDR_OK) return refused;
    compaction c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.w = (writer){-1, NULL, 0, 0, NULL};
    c.should_stop = should_stop;
    c.stop_ctx = ctx;
    /* One compaction at a time (the lock order, internal.h: the compaction
     * lock, then the sync lock, then the writer lock). The start needs only
     * the writer lock: the tail and the index must agree. */
    pthread_mutex_lock(&s->compact_lock);
    pthread_mutex_lock(&s->wlock);
    int rc = simdr__check_writable(s);
    /* Compaction copies what the index names: a hinted table is checked
     * whole first (rebuilt from the chain if damaged). */
    if (rc == SIMDR_OK) rc = simdr__index_settle(s);
    if (rc == SIMDR_OK) rc = compaction_start(&c, s);
    pthread_mutex_unlock(&s->wlock);
    /* The bulk of the work, with writers and syncs going on. */
    if (rc == SIMDR_OK) simdr__sort_offsets(c.offs, c.n);
    if (rc == SIMDR_OK) rc = create_new_file(&c);
    if (rc == SIMDR_OK) rc = copy_prefix(&c);
    if (rc == SIMDR_OK) run_test_hook(s, 0);
    if (rc == SIMDR_OK) rc = catch_up_unlocked(&c);
    if (rc == SIMDR_OK) run_test_hook(s, 1);
    if (rc == SIMDR_OK) rc = stop_asked(&c);
    if (rc == SIMDR_OK) rc = make_new_file_durable(&c);
    if (rc == SIMDR_OK) rc = stop_asked(&c);
    if (rc == SIMDR_OK) rc = index_live_entries(&c);
    if (rc == SIMDR_OK) rc = stop_asked(&c);
    /* The switch: the file descriptor and the synced prefix change with the
     * file, so both locks are held; a durable writer waiting for its sync
     * meanwhile is covered by the new file's fsync. */
    int renamed = 0;
    if (rc == SIMDR_OK) {
        pthread_mutex_lock(&s->sync_lock);
        pthread_mutex_lock(&s->wlock);
        rc = finish_new_file(&c);
        if (rc == SIMDR_OK) rc = switch_to_new_file(&c, &renamed);
        if (rc == SIMDR_OK) {
            s->origin = (simdr_log_origin_info){simdr__file_identity(s), c.old_identity,
                                                c.listed_at, c.prefix_len, c.prefix_hash,
                                                c.layout};
            s->has_origin = 1;
        }
        if (rc != SIMDR_OK) abandon_new_file(&c, renamed);
        pthread_mutex_unlock(&s->wlock);
        pthread_mutex_unlock(&s->sync_lock);
    } else {
        abandon_new_file(&c, 0);
    }
    compaction_free(&c);
    pthread_mutex_unlock(&s->compact_lock);
    return rc;
}

/* ---- a compaction's prefix, rebuilt from a copy of the old file ----
 * simdr_log_compact_prefix lists the live entries at an offset by walking
 * the chain down from it (the index describes the whole file, not a prefix
 * of it) and copies them with copy_prefix, as simdr_compact does. */

/* The key hashes a walk down the chain has met: the first met of each key
 * is its newest entry. Open addressing, the slot picked by the hash mixed
 * again (keys chosen so their hashes share low bits would otherwise make
 * every probe walk one run); hash 0 is kept aside, since 0 marks an empty
 * slot. */
static inline uint64_t seen_slot(uint64_t h, uint64_t cap) {
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h & (cap - 1);
}

typedef struct seen_keys {
    uint64_t *slots;
    uint64_t cap, used;
    int zero;
} seen_keys;

static int seen_grow(seen_keys *t) {
    uint64_t ncap = t->cap ? t->cap * 2 : 4096;
    uint64_t *slots = calloc(ncap, sizeof *slots);
    if (!slots) return -1;
    for (uint64_t i = 0; i < t->cap; i++) {
        uint64_t h = t->slots[i];
        if (!h) continue;
        uint64_t j = seen_slot(h, ncap);
        while (slots[j]) j = (j + 1) & (ncap - 1);
        slots[j] = h;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = ncap;
    return 0;
}

/* 1 when h is met for the first time, 0 when it was met before, -1 without
 * memory. */
static int seen_first(seen_keys *t, uint64_t h) {
    if (!h) {
        int first = !t->zero;
        t->zero = 1;
        return first;
    }
    if ((t->used + 1) * 2 > t->cap && seen_grow(t) != 0) return -1;
    uint64_t j = seen_slot(h, t->cap);
    for (; t->slots[j]; j = (j + 1) & (t->cap - 1))
        if (t->slots[j] == h) return 0;
    t->slots[j] = h;
    t->used++;
    return 1;
}

/* 1 when an entry ends at upto: the chain from tail steps down onto it. A
 * link that does not go down is damage (ECORRUPT through *rc). */
static int ends_an_entry(compaction *c, uint64_t tail, uint64_t upto, int *rc) {
    const uint8_t *base = c->src->base;
    uint64_t pos = tail;
    while (pos > upto) {
        if (pos <= SIMDR__META_SIZE) break;
        uint64_t prev = simdr__load_u64le(base + pos - SIMDR__META_SIZE + 8);
        if (prev >= pos - SIMDR__META_SIZE) {
            *rc = damaged(c, pos - SIMDR__META_SIZE, "a link that does not go down");
            return 0;
        }
        pos = prev;
    }
    return pos == upto;
}

/* c->offs and c->n: the live entries below upto (as listed_live encodes
 * them), in file order. */
static int list_live_below(compaction *c, uint64_t upto) {
    const uint8_t *base = c->src->base;
    seen_keys seen = {NULL, 0, 0, 0};
    uint64_t cap = 0;
    int rc = SIMDR_OK;
    for (uint64_t p = upto; p > 0 && rc == SIMDR_OK;) {
        struct simdr_entry e;
        if (p <= SIMDR__META_SIZE) {
            rc = damaged(c, p, "a link into the first metadata");
            break;
        }
        uint64_t meta_off = p - SIMDR__META_SIZE;
        if (simdr__entry_decode(base, upto, meta_off, c->layout, &e) != SIMDR_OK) {
            rc = damaged(c, meta_off, "no value between its link and its metadata");
            break;
        }
        int first = seen_first(&seen, e.key_hash);
        if (first < 0) rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
        if (first > 0 && !e.tombstone) {
            if (c->n == cap) {
                uint64_t ncap = cap ? cap * 2 : 1024;
                uint64_t *grown = realloc(c->offs, ncap * sizeof *grown);
                if (!grown) {
                    rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
                    break;
                }
                c->offs = grown;
                cap = ncap;
            }
            c->offs[c->n++] = meta_off << 16 | e.key_hash >> 48;
        }
        p = e.start;
    }
    free(seen.slots);
    if (rc == SIMDR_OK) simdr__sort_offsets(c->offs, c->n);
    return rc;
}

/* Under the compaction lock (no compaction replaces the file meanwhile) and
 * the writer lock: the file's map pinned, a descriptor of its own for the
 * window (a read-only handle's refresh may replace the store's), the tail. */
static int prefix_start(compaction *c, uint64_t identity, uint64_t upto, uint64_t *tail) {
    simdr_store *s = c->s;
    if (simdr__file_identity(s) != identity)
        return simdr__fail(SIMDR_ENOENT, "%s: the file was replaced (compacted or recreated) "
                           "since its identity was taken", s->path);
    simdr__view *v = simdr__current_view(s);
    *tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    if (upto > *tail)
        return simdr__fail(SIMDR_EINVAL, "%s: offset %llu is beyond the tail %llu", s->path,
                           (unsigned long long)upto, (unsigned long long)*tail);
    c->rd.fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
    if (c->rd.fd < 0) return simdr__fail_errno(errno, "dup", s->path);
    c->layout = atomic_load(&s->layout);
    c->listed_at = upto;
    c->shard = simdr__thread_shard();
    c->src = v->map;
    simdr__map_pin(c->src, c->shard);
    return SIMDR_OK;
}

static int write_prefix(compaction *c, uint64_t upto) {
    if (simdr__io.fstat(c->rd.fd, &c->st) != 0)
        return simdr__fail_errno(errno, "fstat", c->s->path);
    c->rd = (simdr__window){c->rd.fd, c->src->base, upto, 0, NULL, COPY_BUFFER, 0, 0};
    c->new_meta = malloc((c->n ? c->n : 1) * sizeof *c->new_meta);
    c->w.buf = malloc(COPY_BUFFER);
    c->rd.buf = malloc(COPY_BUFFER);
    if (!c->new_meta || !c->w.buf || !c->rd.buf) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    /* Opened without O_TRUNC, and cut only once it is known not to be one
     * of the store's own files: truncating the store file (by its path or
     * a hard link) would destroy the live store under its map, its side
     * file or hint the pages its handles map. */
    int fd = simdr__io.open(c->tmp, O_RDWR | O_CREAT | O_CLOEXEC, c->st.st_mode & 07777);
    if (fd < 0) return simdr__fail_errno(errno, "creating", c->tmp);
    struct stat dest;
    if (simdr__io.fstat(fd, &dest) != 0) {
        int err = errno;
        close(fd);
        return simdr__fail_errno(err, "fstat", c->tmp);
    }
    const char *own = dest.st_dev == c->st.st_dev && dest.st_ino == c->st.st_ino ? "the store file"
                                                                                  : NULL;
    static const char *const suffixes[] = {".simdr", ".hint"};
    for (size_t i = 0; !own && i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char *p = simdr__suffixed_path(c->s->path, suffixes[i]);
        struct stat st;
        if (p && stat(p, &st) == 0 && st.st_dev == dest.st_dev && st.st_ino == dest.st_ino)
            own = i == 0 ? "the store's side file" : "the store's hint file";
        free(p);
    }
    if (own) {
        close(fd);
        return simdr__fail(SIMDR_EINVAL, "%s: %s is %s; nothing was written", c->s->path, c->tmp,
                           own);
    }
    c->w.fd = fd; /* from here on a failure removes it */
    if (S_ISREG(dest.st_mode) && simdr__ftruncate(fd, 0) != 0)
        return simdr__fail_errno(errno, "truncating", c->tmp);
    int rc = copy_prefix(c);
    if (rc == SIMDR_OK) rc = make_new_file_durable(c);
    return rc;
}

SIMDR_API int simdr_log_compact_prefix(simdr_store *s, uint64_t identity, uint64_t upto,
                                       const char *dest_path, uint64_t *size_out,
                                       uint64_t *hash_out) {
    if (!s || !dest_path) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    /* Not waited for in a child: the parent's compaction lock may be held
     * by a thread the child lacks. */
    if (simdr__forked(s))
        return simdr__fail(SIMDR_EINVAL, "%s: store handle inherited across fork", s->path);
    compaction c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.w = (writer){-1, NULL, 0, 0, NULL};
    c.rd.fd = -1;
    c.tmp = strdup(dest_path);
    if (!c.tmp) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    uint64_t tail = 0;
    pthread_mutex_lock(&s->compact_lock);
    pthread_mutex_lock(&s->wlock);
    rc = prefix_start(&c, identity, upto, &tail);
    pthread_mutex_unlock(&s->wlock);
    /* The bytes below the committed tail never change: the rest runs without
     * the writer lock. */
    if (rc == SIMDR_OK && !ends_an_entry(&c, tail, upto, &rc) && rc == SIMDR_OK)
        rc = simdr__fail(SIMDR_EINVAL, "%s: offset %llu is not the end of an entry", s->path,
                         (unsigned long long)upto);
    if (rc == SIMDR_OK) rc = list_live_below(&c, upto);
    int created = 0;
    if (rc == SIMDR_OK) {
        rc = write_prefix(&c, upto);
        created = c.w.fd >= 0;
    }
    if (c.w.fd >= 0 && close(c.w.fd) != 0 && rc == SIMDR_OK)
        rc = simdr__fail_errno(errno, "closing", c.tmp);
    if (rc != SIMDR_OK && created) unlink(c.tmp);
    if (rc == SIMDR_OK) {
        if (size_out) *size_out = c.prefix_len;
        if (hash_out) *hash_out = c.prefix_hash;
    }
    if (c.rd.fd >= 0) close(c.rd.fd);
    compaction_free(&c);
    pthread_mutex_unlock(&s->compact_lock);
    return rc;
}
