/*
 * append.c - the write path: single puts, batches, streams, tombstones,
 * rename/copy/move. One writer at a time (store->wlock). An append is one
 * pwrite/pwritev at the tail; only after it succeeds are the index and the
 * tail published, so readers never see a partial entry. A failed append is
 * undone by truncating back to the old tail; if even that fails, the store
 * refuses further writes (SIMDR_EFAILED) and the next open's recovery cleans
 * up. Single writes use pwritev over the caller's buffers (no copy). With
 * SIMDR_APPEND_MAPPED, puts, batches and deletes are copied into a writable
 * mapping of preallocated file space instead (mapped.c): no system call.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define BATCH_COPY_LIMIT (UINT64_C(16) << 20)
#define STREAM_CHUNK (UINT64_C(1) << 20)

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

const uint8_t simdr__zero_pad[SIMDR__ALIGN];
static const uint8_t tombstone_byte[1] = {SIMDR__TOMBSTONE_BYTE};

/* ---- use after fork ----
 * A child process inherits the handle: the same open file description, so
 * the same flock, while each process keeps its own copy of the tail and the
 * index. Both appending would write over each other's acknowledged entries.
 * A fork handler bumps a counter in the child (cheaper than a getpid per
 * write); a handle whose recorded value differs was opened in another
 * process and refuses to write or sync. */
static _Atomic unsigned process_generation;
static pthread_once_t fork_watch_once = PTHREAD_ONCE_INIT;

static void child_after_fork(void) {
    atomic_fetch_add_explicit(&process_generation, 1, memory_order_relaxed);
}

static void watch_forks(void) { pthread_atfork(NULL, NULL, child_after_fork); }

unsigned simdr__process_generation(void) {
    pthread_once(&fork_watch_once, watch_forks);
    return atomic_load_explicit(&process_generation, memory_order_relaxed);
}

int simdr__forked(const simdr_store *s) {
    return atomic_load_explicit(&process_generation, memory_order_relaxed) != s->process_gen;
}

int simdr__writer_lock_usable(const simdr_store *s) {
    return !simdr__feeding(s) && !simdr__forked(s);
}

int simdr__refuse_forked(simdr_store *s) {
    return simdr__fail(SIMDR_EINVAL,
                       "%s: store handle used in a forked child; open the store again in this "
                       "process (writes, syncs, compaction and refresh are refused; reads still "
                       "see the store as it was at the fork)",
                       s->path);
}

/* ---- re-entry from a stream source ----
 * A stream source runs with the writer lock held; a write, sync or
 * compaction it made on the same store would wait for that lock forever.
 * The thread feeding a stream is marked, and those calls refuse instead. A
 * source may itself stream into another store, whose source may call back
 * into the first: the marks of one thread form a stack (one frame on each
 * feeding call's own stack), and every store on it counts as fed. A source
 * that hands the call to another thread and waits for it still deadlocks:
 * that cannot be told from outside. */
typedef struct feed_frame {
    const simdr_store *store;
    const struct feed_frame *outer;
} feed_frame;

static _Thread_local const feed_frame *feeding;

int simdr__feeding(const simdr_store *s) {
    for (const feed_frame *f = feeding; f; f = f->outer)
        if (f->store == s) return 1;
    return 0;
}

int simdr__check_reentry(simdr_store *s) {
    /* First, before any caller waits for the writer lock: in a child, a
     * thread of the parent that held it at the fork never lets it go. */
    if (simdr__forked(s)) return simdr__refuse_forked(s);
    if (simdr__in_read_scope(s))
        return simdr__fail(SIMDR_EINVAL,
                           "%s: call inside a read scope of the same store (end the scope "
                           "first: writes, syncs and compaction are refused there)",
                           s->path);
    if (!simdr__feeding(s)) return SIMDR_OK;
    return simdr__fail(SIMDR_EINVAL,
                       "%s: re-entrant call: a stream source called back into the store it is "
                       "feeding (writes, syncs and compaction are refused there; reads are "
                       "allowed)",
                       s->path);
}

static int refuse_failed(simdr_store *s) {
    return simdr__fail(SIMDR_EFAILED,
                       "%s: an earlier write or sync failed and could not be undone; the "
                       "store refuses writes and syncs until it is reopened (reopening "
                       "re-verifies the file)",
                       s->path);
}

int simdr__check_writable(simdr_store *s) {
    if (s->readonly) return simdr__fail(SIMDR_EREADONLY, "%s: store is open read-only", s->path);
    if (simdr__forked(s)) return simdr__refuse_forked(s);
    if (atomic_load_explicit(&s->failed, memory_order_acquire)) return refuse_failed(s);
    return SIMDR_OK;
}

int simdr__check_syncable(simdr_store *s) {
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    if (simdr__forked(s)) return simdr__refuse_forked(s);
    if (atomic_load_explicit(&s->failed, memory_order_acquire)) return refuse_failed(s);
    return SIMDR_OK;
}

/* The failed state after a failed sync (fsyncgate): the kernel may have
 * dropped the pages it could not write and will report success on the next
 * fdatasync, so nothing written since the last successful sync can be
 * trusted to be on disk. The handle stops serving it: the index is rebuilt
 * from the file prefix that sync confirmed and the tail goes back there, so
 * readers see the last durable state. The bytes stay in the file (a reader
 * in another process may hold them mapped, and cutting them would fault it);
 * the next open re-verifies them like any tail written before a crash.
 * Idempotent: every thread whose sync failed calls it before returning. */
int simdr__index_rebuild(simdr_store *s, simdr__view *v, uint64_t end) {
    simdr__index *ix;
    uint64_t live;
    /* The dead count is left as it is: the prefix holds no more dead
     * entries than the whole file did. */
    int rc = simdr__build_index(v->map->base, end, &ix, &live, NULL);
    s->index_rebuilt = 1;
    if (rc == SIMDR_OK) rc = simdr__publish_view(s, v->map, ix);
    s->index_rebuilt = 0;
    if (rc == SIMDR_OK) atomic_store(&s->live, live);
    return rc;
}

void simdr__withdraw_unsynced(simdr_store *s) {
    pthread_mutex_lock(&s->wlock);
    uint64_t durable = atomic_load_explicit(&s->synced, memory_order_acquire);
    simdr__view *v = simdr__current_view(s);
    if (atomic_load_explicit(&v->tail, memory_order_acquire) > durable) {
        /* Without memory for the rebuild the unconfirmed entries stay
         * readable; writes and syncs are refused all the same. */
        if (simdr__index_rebuild(s, v, durable) == SIMDR_OK) {
            s->tail = durable;
            atomic_store_explicit(&simdr__current_view(s)->tail, durable, memory_order_release);
        }
    }
    pthread_mutex_unlock(&s->wlock);
}

static int value_allowed(const void *value, size_t len) {
    if (len == 0) return simdr__fail(SIMDR_EINVAL, "empty values cannot be stored");
    if ((uint64_t)len > SIMDR__MAX_OFFSET - SIMDR__META_SIZE)
        return simdr__fail(SIMDR_ETOOBIG, "a value of %zu bytes exceeds the 128 TiB a file "
                           "can hold", len);
    if (!value) return simdr__fail(SIMDR_EINVAL, "NULL value");
    if (len == 1 && *(const uint8_t *)value == SIMDR__TOMBSTONE_BYTE)
        return simdr__fail(SIMDR_EINVAL,
                           "the value consisting of the single byte 0x00 is reserved for "
                           "deletes and cannot be stored");
    return SIMDR_OK;
}

void simdr__index_entry(simdr_store *s, uint64_t hash, uint64_t meta_off, int tomb) {
    simdr__view *v = simdr__current_view(s);
    uint64_t prev = simdr__index_put(v->index, v->map->base, hash,
                                     simdr__index_value(hash, meta_off, tomb));
    int change = simdr__live_change(prev, tomb);
    /* One more entry: dead grows by 1 - change (an older live version
     * superseded, a tombstone, or both). */
    atomic_fetch_add_explicit(&s->dead, (uint64_t)(1 - change), memory_order_relaxed);
    if (change < 0)
        atomic_fetch_sub_explicit(&s->live, 1, memory_order_relaxed);
    else if (change > 0)
        atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
}

/* A growth reads the metadata of every indexed entry through the map, at
 * random. Mapping the pages written since the last growth in one call costs
 * a fraction of the page faults those reads would take one by one (costly,
 * most of all on virtual machines: docs/BENCHMARKS.md, "Machine"). Only done
 * while the file holds at least one indexed key a page on average: with
 * large values most pages are payload the growth never reads, and mapping
 * them would read them in and count them as resident for nothing. */
static void populate_map(simdr_store *s, simdr__map *m, const simdr__index *ix) {
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t end = s->tail < m->len ? s->tail : m->len;
    if (end <= m->populated || end / page > ix->used) return;
    /* Failure (a kernel before 5.14) only means the reads fault instead. */
    madvise((void *)(m->base + m->populated), (size_t)(end - m->populated), MADV_POPULATE_READ);
    m->populated = end / page * page;
}

int simdr__grow_index_if_needed(simdr_store *s) {
    simdr__view *v = simdr__current_view(s);
    if (!simdr__index_needs_grow(v->index)) return SIMDR_OK;
    populate_map(s, v->map, v->index);
    simdr__index *nx = simdr__index_grown(v->index, v->map->base);
    if (!nx) return simdr__fail(SIMDR_ENOMEM, "%s: out of memory growing the index", s->path);
    return simdr__publish_view(s, v->map, nx);
}

/* Grows the index until n more keys fit, before anything is written: once
 * the entries are in the file they are indexed without allocating, so a
 * batch is published whole or (out of memory) not written at all. A growth
 * only republishes the same keys in a bigger table. */
static int reserve_index(simdr_store *s, size_t n) {
    simdr__side_flush_attached(s->side);
    int settled = simdr__index_settle(s);
    if (settled != SIMDR_OK) return settled;
    for (;;) {
        simdr__view *v = simdr__current_view(s);
        if (simdr__index_room(v->index) >= n) return SIMDR_OK;
        populate_map(s, v->map, v->index);
        simdr__index *nx = simdr__index_grown(v->index, v->map->base);
        if (!nx) return simdr__fail(SIMDR_ENOMEM, "%s: out of memory growing the index", s->path);
        int rc = simdr__publish_view(s, v->map, nx);
        if (rc != SIMDR_OK) return rc;
    }
}

/* Cuts the file back to len after a failed or refused write; the store
 * fails when even that is impossible. Mapped appends learn the file's new
 * length (their preallocation past len is gone). */
static void cut_back(simdr_store *s, uint64_t len) {
    if (simdr__ftruncate(s->fd, (off_t)len) != 0)
        s->failed = 1;
    else
        s->alloc_end = len;
}

/* Writer, lock held, items validated: everything after the old tail is undone
 * on failure. */
static int undo_append(simdr_store *s, uint64_t old_tail, int err, const char *what) {
    int rc = simdr__fail_errno(err, what, s->path);
    cut_back(s, old_tail);
    return rc;
}

/* last: the metadata ending at tail, recorded in the side file with it;
 * sum: the side file's metadata sum at tail (side_sum). */
static void publish_tail(simdr_store *s, uint64_t tail, const simdr__meta *last, uint64_t sum) {
    s->tail = tail;
    atomic_store_explicit(&simdr__current_view(s)->tail, tail, memory_order_release);
    if (s->side) simdr__side_publish(s->side, tail, last, sum);
}

/* The side file's sum with the entry whose metadata bytes end at end added
 * (side.c explains it): a few multiplications per entry, only with a side
 * file. */
static inline uint64_t side_sum(const simdr_store *s, uint64_t sum, const simdr__meta *m,
                                uint64_t end) {
    return s->side ? sum + simdr__side_term(m, end) : sum;
}

/* Indexes entries already written; metas[i] is the metadata offset of
 * items[i]. The index grows exactly where one put at a time would make it
 * grow, but between growths the items go in as one run: the table and view
 * are looked up once, home slots are prefetched ahead, and the live and
 * dead counts, atomic read-modify-writes that would stall every cache miss
 * behind them, change once. */
static int index_items(simdr_store *s, const simdr__item *items, size_t n,
                       const uint64_t *metas) {
    int rc = SIMDR_OK;
    int64_t live_delta = 0;
    size_t done = 0;
    while (done < n) {
        rc = simdr__grow_index_if_needed(s);
        if (rc != SIMDR_OK) break;
        simdr__view *v = simdr__current_view(s);
        uint64_t room = simdr__index_room(v->index);
        size_t run = room < n - done ? (size_t)room : n - done;
        live_delta += simdr__index_put_items(v->index, v->map->base, items + done, metas + done,
                                             run);
        done += run;
    }
    /* Every entry indexed is live or dead: dead grows by the rest. */
    atomic_fetch_add_explicit(&s->dead, (uint64_t)((int64_t)done - live_delta),
                              memory_order_relaxed);
    if (live_delta > 0)
        atomic_fetch_add_explicit(&s->live, (uint64_t)live_delta, memory_order_relaxed);
    else if (live_delta < 0)
        atomic_fetch_sub_explicit(&s->live, (uint64_t)-live_delta, memory_order_relaxed);
    return rc;
}

/* Lays out the entries of items[0..n) as the file holds them from offset
 * start, at dst: pads, values, metadata. metas[i] receives item i's
 * metadata offset, *last the newest metadata, *sum the side file's sum with
 * the entries added. Returns the end of the last entry. */
static uint64_t fill_entries(const simdr_store *s, uint8_t *dst, uint64_t start,
                             const simdr__item *items, size_t n, int aligned, uint64_t *metas,
                             simdr__meta *last, uint64_t *sum) {
    uint64_t at = start;
    for (size_t i = 0; i < n; i++) {
        uint64_t pad = items[i].tombstone ? 0 : simdr__pad_for(at, aligned);
        simdr__meta m = {items[i].hash, at, simdr__crc32(0, items[i].value, items[i].len)};
        uint8_t *p = dst + (at - start);
        memset(p, 0, (size_t)pad);
        memcpy(p + pad, items[i].value, items[i].len);
        simdr__meta_encode(p + pad + items[i].len, &m);
        at += pad + items[i].len + SIMDR__META_SIZE;
        *sum = side_sum(s, *sum, &m, at);
        metas[i] = at - SIMDR__META_SIZE;
        *last = m;
    }
    return at;
}

/* Mapped appends: the entries are copied into the window at dst (file
 * offset s->tail), then indexed and published like written ones. */
static int append_mapped(simdr_store *s, const simdr__item *items, size_t n, int aligned,
                         uint8_t *dst, uint64_t *metas, uint64_t *end_out) {
    simdr__meta last;
    uint64_t sum = s->side ? s->side->sum : 0;
    uint64_t end = fill_entries(s, dst, s->tail, items, n, aligned, metas, &last, &sum);
    int rc = index_items(s, items, n, metas);
    /* Not reached (reserve_index made room): see append_locked. */
    if (rc != SIMDR_OK) s->failed = 1;
    publish_tail(s, end, &last, sum);
    *end_out = end;
    return rc;
}

static int append_locked(simdr_store *s, const simdr__item *items, size_t n, uint64_t *end_out) {
    int rc = simdr__check_writable(s);
    if (rc != SIMDR_OK) return rc;
    int aligned = atomic_load_explicit(&s->layout, memory_order_relaxed) == SIMDR_LAYOUT_ALIGNED64;
    uint64_t start = s->tail, pos = start;
    for (size_t i = 0; i < n; i++) {
        /* Compared before adding: the sum of sizes near SIZE_MAX would wrap. */
        uint64_t need = (items[i].tombstone ? 0 : simdr__pad_for(pos, aligned)) +
                        SIMDR__META_SIZE;
        if (pos + need > SIMDR__MAX_OFFSET || items[i].len > SIMDR__MAX_OFFSET - need - pos)
            return simdr__fail(SIMDR_ETOOBIG, "%s: the file would exceed 128 TiB", s->path);
        pos += need + items[i].len;
    }
    rc = simdr__ensure_mapped(s, pos);
    if (rc == SIMDR_OK) rc = reserve_index(s, n);
    if (rc != SIMDR_OK) return rc;
    if (s->mapped) {
        uint64_t one, *metas = n == 1 ? &one : malloc(n * sizeof *metas);
        if (!metas) return simdr__fail(SIMDR_ENOMEM, "out of memory for a batch of %zu", n);
        uint8_t *dst = NULL;
        rc = simdr__mapped_span(s, start, pos, &dst);
        if (rc == SIMDR_OK) rc = append_mapped(s, items, n, aligned, dst, metas, end_out);
        if (metas != &one) free(metas);
        /* Without fallocate the store has gone over to pwrite: go on below. */
        if (rc != SIMDR__MAPPED_UNSUPPORTED) return rc;
    }
    if (s->zeroed && pos > s->alloc_end) simdr__zeroed_reserve(s, pos);
    simdr__meta last; /* the metadata of the entry ending at pos */
    uint64_t sum = s->side ? s->side->sum : 0;

    if (n == 1) {
        /* The common case: three iovecs over the caller's buffer, no copy. */
        uint8_t meta[SIMDR__META_SIZE];
        uint64_t pad = items[0].tombstone ? 0 : simdr__pad_for(start, aligned);
        simdr__meta m = {items[0].hash, start, simdr__crc32(0, items[0].value, items[0].len)};
        simdr__meta_encode(meta, &m);
        last = m;
        sum = side_sum(s, sum, &m, pos);
        struct iovec iov[3] = {{(void *)simdr__zero_pad, (size_t)pad},
                               {(void *)items[0].value, items[0].len},
                               {meta, sizeof meta}};
        int first = pad ? 0 : 1;
        if (simdr__pwritev_all(s->fd, iov + first, 3 - first, start) != 0)
            return undo_append(s, start, errno, "append");
        uint64_t meta_off = pos - SIMDR__META_SIZE;
        rc = index_items(s, items, 1, &meta_off);
    } else {
        uint64_t *metas = malloc(n * sizeof *metas);
        uint8_t *buf = NULL;
        struct iovec *iov = NULL;
        uint8_t *meta_bytes = NULL;
        uint64_t total = pos - start;
        if (total <= BATCH_COPY_LIMIT)
            buf = malloc((size_t)total);
        else {
            iov = malloc(3 * n * sizeof *iov);
            meta_bytes = malloc(n * SIMDR__META_SIZE);
        }
        if (!metas || (total <= BATCH_COPY_LIMIT ? !buf : (!iov || !meta_bytes))) {
            free(metas); free(buf); free(iov); free(meta_bytes);
            return simdr__fail(SIMDR_ENOMEM, "out of memory for a batch of %zu", n);
        }
        uint64_t at = start;
        int cnt = 0;
        if (buf) fill_entries(s, buf, start, items, n, aligned, metas, &last, &sum);
        for (size_t i = 0; !buf && i < n; i++) {
            uint64_t pad = items[i].tombstone ? 0 : simdr__pad_for(at, aligned);
            simdr__meta m = {items[i].hash, at, simdr__crc32(0, items[i].value, items[i].len)};
            last = m;
            uint8_t *mb = meta_bytes + i * SIMDR__META_SIZE;
            simdr__meta_encode(mb, &m);
            if (pad) iov[cnt++] = (struct iovec){(void *)simdr__zero_pad, (size_t)pad};
            iov[cnt++] = (struct iovec){(void *)items[i].value, items[i].len};
            iov[cnt++] = (struct iovec){mb, SIMDR__META_SIZE};
            at += pad + items[i].len + SIMDR__META_SIZE;
            sum = side_sum(s, sum, &m, at);
            metas[i] = at - SIMDR__META_SIZE;
        }
        int wr = buf ? simdr__pwrite_all(s->fd, buf, (size_t)total, start)
                     : simdr__pwritev_all(s->fd, iov, cnt, start);
        int err = errno;
        free(buf); free(iov); free(meta_bytes);
        if (wr != 0) {
            free(metas);
            return undo_append(s, start, err, "append");
        }
        rc = index_items(s, items, n, metas);
        free(metas);
    }
    if (rc != SIMDR_OK) {
        /* Not reached (reserve_index made room); were it, the bytes are
         * valid entries, so the tail moves on and a reopen indexes them. */
        s->failed = 1;
    }
    /* The write made the file longer than the space ahead of the tail. */
    if (pos > s->alloc_end) s->alloc_end = pos;
    publish_tail(s, pos, &last, sum);
    *end_out = pos;
    return rc;
}

int simdr__append(simdr_store *s, const simdr__item *items, size_t n, uint64_t *tail_out) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    for (size_t i = 0; i < n; i++) {
        if (items[i].tombstone) continue;
        int rc = value_allowed(items[i].value, items[i].len);
        if (rc != SIMDR_OK) return rc;
    }
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    uint64_t end = 0;
    pthread_mutex_lock(&s->wlock);
    rc = n ? append_locked(s, items, n, &end) : simdr__check_writable(s);
    if (!n) end = s->tail;
    pthread_mutex_unlock(&s->wlock);
    if (rc == SIMDR_OK && n && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, end);
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}

/* simdr__append that writes only if the store's tail is still expect
 * (replication: the entries must land at the offsets they had on the
 * primary); SIMDR_ECORRUPT, nothing written, when it moved. */
int simdr__append_at(simdr_store *s, const simdr__item *items, size_t n, uint64_t expect,
                     uint64_t *tail_out) {
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    uint64_t end = 0;
    pthread_mutex_lock(&s->wlock);
    if (s->tail != expect)
        rc = simdr__fail(SIMDR_ECORRUPT, "%s: the bytes start at offset %llu, the store ends at "
                         "%llu", s->path, (unsigned long long)expect, (unsigned long long)s->tail);
    else
        rc = n ? append_locked(s, items, n, &end) : simdr__check_writable(s);
    if (rc == SIMDR_OK && !n) end = s->tail;
    pthread_mutex_unlock(&s->wlock);
    if (rc == SIMDR_OK && n && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, end);
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}

SIMDR_API int simdr_put_hashed(simdr_store *s, uint64_t key_hash, const void *value,
                               size_t value_len, uint64_t *tail_out) {
    simdr__item it = {key_hash, value, value_len, 0};
    return simdr__append(s, &it, 1, tail_out);
}

SIMDR_API int simdr_put(simdr_store *s, const void *key, size_t key_len, const void *value,
                        size_t value_len, uint64_t *tail_out) {
    if (!key && key_len) return simdr__fail(SIMDR_EINVAL, "NULL key");
    return simdr_put_hashed(s, simdr_hash_key(key, key_len), value, value_len, tail_out);
}

static int put_batch_items(simdr_store *s, size_t n, uint64_t *tail_out,
                           void (*fill)(const void *src, size_t i, simdr__item *it),
                           const void *src) {
    if (n == 0) return simdr__fail(SIMDR_EINVAL, "empty batch");
    simdr__item stack[64];
    simdr__item *items = n <= 64 ? stack : malloc(n * sizeof *items);
    if (!items) return simdr__fail(SIMDR_ENOMEM, "out of memory for a batch of %zu", n);
    for (size_t i = 0; i < n; i++) fill(src, i, &items[i]);
    int rc = simdr__append(s, items, n, tail_out);
    if (items != stack) free(items);
    return rc;
}

static void fill_kv(const void *src, size_t i, simdr__item *it) {
    const simdr_kv *kv = (const simdr_kv *)src + i;
    *it = (simdr__item){simdr_hash_key(kv->key, kv->key_len), kv->value, kv->value_len, 0};
}

static void fill_hashed(const void *src, size_t i, simdr__item *it) {
    const simdr_hashed_kv *kv = (const simdr_hashed_kv *)src + i;
    *it = (simdr__item){kv->key_hash, kv->value, kv->value_len, 0};
}

/* simdr_write_batch: a NULL value of length 0 is a delete. */
static void delete_if_empty(simdr__item *it) {
    if (!it->value && !it->len) *it = (simdr__item){it->hash, tombstone_byte, 1, 1};
}

static void fill_kv_or_delete(const void *src, size_t i, simdr__item *it) {
    fill_kv(src, i, it);
    delete_if_empty(it);
}

static void fill_hashed_or_delete(const void *src, size_t i, simdr__item *it) {
    fill_hashed(src, i, it);
    delete_if_empty(it);
}

/* A batch of keys (not hashes), checked, then filled by fill. */
static int kv_batch(simdr_store *s, const simdr_kv *items, size_t n, uint64_t *tail_out,
                    void (*fill)(const void *src, size_t i, simdr__item *it)) {
    if (!items && n) return simdr__fail(SIMDR_EINVAL, "NULL items");
    for (size_t i = 0; i < n; i++)
        if (!items[i].key && items[i].key_len)
            return simdr__fail(SIMDR_EINVAL, "NULL key at batch index %zu", i);
    return put_batch_items(s, n, tail_out, fill, items);
}

SIMDR_API int simdr_put_batch(simdr_store *s, const simdr_kv *items, size_t n,
                              uint64_t *tail_out) {
    return kv_batch(s, items, n, tail_out, fill_kv);
}

SIMDR_API int simdr_put_batch_hashed(simdr_store *s, const simdr_hashed_kv *items, size_t n,
                                     uint64_t *tail_out) {
    if (!items && n) return simdr__fail(SIMDR_EINVAL, "NULL items");
    return put_batch_items(s, n, tail_out, fill_hashed, items);
}

SIMDR_API int simdr_write_batch(simdr_store *s, const simdr_kv *items, size_t n,
                                uint64_t *tail_out) {
    return kv_batch(s, items, n, tail_out, fill_kv_or_delete);
}

SIMDR_API int simdr_write_batch_hashed(simdr_store *s, const simdr_hashed_kv *items, size_t n,
                                       uint64_t *tail_out) {
    if (!items && n) return simdr__fail(SIMDR_EINVAL, "NULL items");
    return put_batch_items(s, n, tail_out, fill_hashed_or_delete, items);
}

/* ---- streams ---- */

SIMDR_API int simdr_put_stream_hashed(simdr_store *s, uint64_t key_hash, simdr_read_fn fn,
                                      void *ctx, uint64_t *tail_out) {
    if (!s || !fn) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (simdr__check_reentry(s) != SIMDR_OK) return SIMDR_EINVAL;
    uint8_t *buf = malloc(STREAM_CHUNK);
    if (!buf) return simdr__fail(SIMDR_ENOMEM, "out of memory for the stream buffer");
    pthread_mutex_lock(&s->wlock);
    int rc = simdr__check_writable(s);
    uint64_t start = s->tail, pos = start;
    if (rc == SIMDR_OK) rc = reserve_index(s, 1);
    if (rc != SIMDR_OK) goto out;
    int aligned = atomic_load(&s->layout) == SIMDR_LAYOUT_ALIGNED64;
    uint64_t pad = simdr__pad_for(start, aligned);
    if (pad && simdr__pwrite_all(s->fd, simdr__zero_pad, (size_t)pad, pos) != 0) {
        rc = undo_append(s, start, errno, "stream write");
        goto out;
    }
    pos += pad;
    uint32_t crc = 0;
    uint64_t total = 0;
    int nonzero = 0;
    feed_frame frame = {s, feeding};
    for (;;) {
        feeding = &frame;
        int64_t got = fn(ctx, buf, STREAM_CHUNK);
        feeding = frame.outer;
        if (got < 0 || (uint64_t)got > STREAM_CHUNK) {
            rc = simdr__fail(SIMDR_ESOURCE, "%s: the stream source failed after %llu bytes; "
                             "nothing was stored", s->path, (unsigned long long)total);
            cut_back(s, start);
            goto out;
        }
        if (got == 0) break;
        if (pos + (uint64_t)got + SIMDR__META_SIZE > SIMDR__MAX_OFFSET) {
            rc = simdr__fail(SIMDR_ETOOBIG, "%s: the file would exceed 128 TiB", s->path);
            cut_back(s, start);
            goto out;
        }
        if (!nonzero) nonzero = !simdr__all_zero(buf, (size_t)got);
        crc = simdr__crc32(crc, buf, (uint64_t)got);
        if (simdr__pwrite_all(s->fd, buf, (size_t)got, pos) != 0) {
            rc = undo_append(s, start, errno, "stream write");
            goto out;
        }
        pos += (uint64_t)got;
        total += (uint64_t)got;
    }
    if (total == 0 || !nonzero) {
        rc = simdr__fail(SIMDR_EINVAL, total == 0 ? "empty stream: empty values cannot be stored"
                                                  : "a value of zero bytes only cannot be "
                                                    "stored (it would read as a delete)");
        cut_back(s, start);
        goto out;
    }
    uint8_t meta[SIMDR__META_SIZE];
    simdr__meta m = {key_hash, start, crc};
    simdr__meta_encode(meta, &m);
    if (simdr__pwrite_all(s->fd, meta, sizeof meta, pos) != 0) {
        rc = undo_append(s, start, errno, "stream write");
        goto out;
    }
    pos += SIMDR__META_SIZE;
    rc = simdr__ensure_mapped(s, pos);
    if (rc != SIMDR_OK) {
        cut_back(s, start);
        goto out;
    }
    /* pwrite past the preallocated space made the file longer. */
    if (pos > s->alloc_end) s->alloc_end = pos;
    simdr__item it = {key_hash, NULL, (size_t)total, 0};
    uint64_t meta_off = pos - SIMDR__META_SIZE;
    rc = index_items(s, &it, 1, &meta_off);
    if (rc != SIMDR_OK) s->failed = 1;
    publish_tail(s, pos, &m, side_sum(s, s->side ? s->side->sum : 0, &m, pos));
out:
    pthread_mutex_unlock(&s->wlock);
    free(buf);
    if (rc == SIMDR_OK && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, pos);
    if (rc == SIMDR_OK && tail_out) *tail_out = pos;
    return rc;
}

SIMDR_API int simdr_put_stream(simdr_store *s, const void *key, size_t key_len, simdr_read_fn fn,
                               void *ctx, uint64_t *tail_out) {
    if (!key && key_len) return simdr__fail(SIMDR_EINVAL, "NULL key");
    return simdr_put_stream_hashed(s, simdr_hash_key(key, key_len), fn, ctx, tail_out);
}

typedef struct fd_source {
    int fd;
    int err;
    simdr_store *store;
    int checked;   /* the descriptor was compared with the store file */
    int same_file; /* ... and is the store file itself */
} fd_source;

static int64_t read_fd(void *ctx, void *buf, size_t cap) {
    fd_source *src = ctx;
    /* A descriptor on the store file itself would never reach its end: each
     * chunk appended makes the file longer by what was just read, so the
     * write would go on until the disk is full. Compared here, under the
     * writer lock, where the store's file cannot be swapped by a compaction
     * (a descriptor on a file a compaction has replaced reads to its end). */
    if (!src->checked) {
        src->checked = 1;
        struct stat st;
        if (simdr__io.fstat(src->fd, &st) == 0 && (uint64_t)st.st_dev == (uint64_t)src->store->dev &&
            (uint64_t)st.st_ino == (uint64_t)src->store->ino) {
            src->same_file = 1;
            src->err = EINVAL;
            return -1;
        }
    }
    for (;;) {
        ssize_t n = read(src->fd, buf, cap);
        if (n >= 0) return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* A non-blocking descriptor with no data yet: wait for some (a
             * hang-up or an error is then what the next read says). */
            struct pollfd pfd = {src->fd, POLLIN, 0};
            if (poll(&pfd, 1, -1) >= 0 || errno == EINTR) continue;
        }
        if (errno != EINTR) {
            src->err = errno;
            return -1;
        }
    }
}

SIMDR_API int simdr_put_fd(simdr_store *s, const void *key, size_t key_len, int fd,
                           uint64_t *tail_out) {
    if (fd < 0) return simdr__fail(SIMDR_EINVAL, "invalid file descriptor");
    fd_source src = {fd, 0, s, 0, 0};
    int rc = simdr_put_stream(s, key, key_len, read_fd, &src, tail_out);
    if (rc == SIMDR_ESOURCE && src.same_file)
        return simdr__fail(SIMDR_EINVAL,
                           "%s: the input is the store file itself, which grows with every "
                           "chunk appended (the write would never end); nothing was stored",
                           s->path);
    if (rc == SIMDR_ESOURCE)
        simdr__fail(rc, "%s: reading the input failed: %s; nothing was stored",
                    s ? s->path : "", strerror(src.err));
    return rc;
}

/* ---- deletes ---- */

static int present_locked(simdr_store *s, uint64_t hash) {
    /* An absence read from an unchecked hinted table could be damage: a
     * table that cannot be settled counts every key as present (a
     * tombstone too many is harmless, a delete skipped is not). */
    if (simdr__index_settle(s) != SIMDR_OK) return 1;
    simdr__view *v = simdr__current_view(s);
    uint64_t val = simdr__index_get(v->index, v->map->base, v->map->len, hash, NULL);
    return val != 0 && !(val & SIMDR__IDX_TOMB);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

SIMDR_API int simdr_delete_batch(simdr_store *s, const simdr_key *keys, size_t n,
                                 size_t *deleted, uint64_t *tail_out) {
    if (!s || (!keys && n)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!keys[i].key && keys[i].key_len)
            return simdr__fail(SIMDR_EINVAL, "NULL key at batch index %zu", i);
    uint64_t *hashes = malloc((n ? n : 1) * sizeof *hashes);
    simdr__item *items = malloc((n ? n : 1) * sizeof *items);
    if (!hashes || !items) {
        free(hashes); free(items);
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) hashes[i] = simdr_hash_key(keys[i].key, keys[i].key_len);
    qsort(hashes, n, sizeof *hashes, cmp_u64);
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) {
        free(hashes);
        free(items);
        return rc;
    }
    pthread_mutex_lock(&s->wlock);
    rc = simdr__check_writable(s);
    size_t k = 0;
    uint64_t end = s->tail;
    if (rc == SIMDR_OK) {
        for (size_t i = 0; i < n; i++) {
            if (i && hashes[i] == hashes[i - 1]) continue;
            if (present_locked(s, hashes[i]))
                items[k++] = (simdr__item){hashes[i], tombstone_byte, 1, 1};
        }
        if (k) rc = append_locked(s, items, k, &end);
    }
    pthread_mutex_unlock(&s->wlock);
    free(hashes);
    free(items);
    if (rc == SIMDR_OK && k && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, end);
    if (rc == SIMDR_OK) {
        if (deleted) *deleted = k;
        if (tail_out) *tail_out = end;
    }
    return rc;
}

SIMDR_API int simdr_delete(simdr_store *s, const void *key, size_t key_len, uint64_t *tail_out) {
    if (!s || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    uint64_t hash = simdr_hash_key(key, key_len);
    simdr__item it = {hash, tombstone_byte, 1, 1};
    uint64_t end = 0;
    int rc = simdr__check_reentry(s);
    if (rc != SIMDR_OK) return rc;
    pthread_mutex_lock(&s->wlock);
    rc = simdr__check_writable(s);
    if (rc == SIMDR_OK && !present_locked(s, hash))
        rc = simdr__fail(SIMDR_NOTFOUND, "%s: key not found; nothing deleted", s->path);
    if (rc == SIMDR_OK) rc = append_locked(s, &it, 1, &end);
    pthread_mutex_unlock(&s->wlock);
    if (rc == SIMDR_OK && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, end);
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}

/* ---- rename, copy, move ---- */

SIMDR_API int simdr_rename(simdr_store *s, const void *old_key, size_t old_len,
                           const void *new_key, size_t new_len, uint64_t *tail_out) {
    if (!s || (!old_key && old_len) || (!new_key && new_len))
        return simdr__fail(SIMDR_EINVAL, "NULL argument");
    uint64_t oh = simdr_hash_key(old_key, old_len), nh = simdr_hash_key(new_key, new_len);
    if (oh == nh)
        return simdr__fail(SIMDR_EINVAL, "cannot rename a key to itself%s",
                           old_len == new_len && !memcmp(old_key, new_key, old_len)
                               ? ""
                               : " (the two keys have the same 64-bit hash)");
    if (simdr__check_reentry(s) != SIMDR_OK) return SIMDR_EINVAL;
    pthread_mutex_lock(&s->wlock);
    simdr_entry *e = NULL;
    int rc = simdr__check_writable(s);
    if (rc == SIMDR_OK) rc = simdr__lookup(s, oh, &e);
    if (rc == SIMDR_NOTFOUND) simdr__fail(rc, "%s: key to rename not found", s->path);
    uint64_t end = 0;
    if (rc == SIMDR_OK) {
        /* One append holds both entries: a crash keeps none, the copy, or both. */
        simdr__item items[2] = {{nh, e->data, (size_t)e->size, 0},
                                {oh, tombstone_byte, 1, 1}};
        rc = append_locked(s, items, 2, &end);
    }
    pthread_mutex_unlock(&s->wlock);
    simdr_entry_release(e);
    if (rc == SIMDR_OK && s->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(s, end);
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}

/* Two handles of one file: copying into it is a rename. The file's identity
 * changes with a compaction, under the writer lock: read it there. */
static int same_file(simdr_store *a, simdr_store *b) {
    if (a == b) return 1;
    /* A stream source copying out of the store it feeds already holds its
     * writer lock (this thread), and a handle inherited across fork is
     * never compacted in the child (while its lock may stay held there by
     * a thread of the parent): neither identity can change unlocked. */
    int lock_a = simdr__writer_lock_usable(a), lock_b = simdr__writer_lock_usable(b);
    if (lock_a) pthread_mutex_lock(&a->wlock);
    dev_t dev = a->dev;
    ino_t ino = a->ino;
    if (lock_a) pthread_mutex_unlock(&a->wlock);
    if (lock_b) pthread_mutex_lock(&b->wlock);
    int same = b->dev == dev && b->ino == ino;
    if (lock_b) pthread_mutex_unlock(&b->wlock);
    return same;
}

static int refuse_same_store(simdr_store *src) {
    return simdr__fail(SIMDR_EINVAL, "%s: cannot copy an entry into the same store (use rename)",
                       src->path);
}

SIMDR_API int simdr_copy(simdr_store *src, const void *key, size_t key_len, simdr_store *dst,
                         uint64_t *tail_out) {
    if (!src || !dst || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (same_file(src, dst)) return refuse_same_store(src);
    simdr_entry *e;
    int rc = simdr__lookup(src, simdr_hash_key(key, key_len), &e);
    if (rc == SIMDR_NOTFOUND) return simdr__fail(rc, "%s: key not found", src->path);
    if (rc != SIMDR_OK) return rc;
    /* simdr__lookup checked the value's CRC: damage is never re-certified
     * with the copy's fresh checksum. */
    rc = simdr_put_hashed(dst, e->key_hash, e->data, (size_t)e->size, tail_out);
    simdr_entry_release(e);
    return rc;
}

/* Writer, dst->wlock held: appends e to dst, durable when dst asks for it
 * (the source's tombstone must not precede a durable copy). A failed
 * fdatasync puts dst in the failed state; the caller withdraws the
 * unconfirmed entries once it has let go of both writer locks. */
static int append_copy_locked(simdr_store *dst, const simdr_entry *e) {
    simdr__item it = {e->key_hash, e->data, (size_t)e->size, 0};
    uint64_t end = 0;
    int rc = append_locked(dst, &it, 1, &end);
    if (rc != SIMDR_OK || dst->durability != SIMDR_SYNC_DATA) return rc;
    /* The durable record too, as the sync path writes it: the copy must
     * survive a power cut that loses the side file's live records. */
    if (simdr__fdatasync(dst->fd) != 0 ||
        simdr__side_sync(dst->side, dst->fd, end, dst->side ? dst->side->sum : 0) != 0) {
        rc = simdr__fail_errno(errno, "fdatasync", dst->path);
        atomic_store(&dst->failed, 1);
        return rc;
    }
    uint64_t synced = atomic_load(&dst->synced);
    while (synced < end && !atomic_compare_exchange_weak(&dst->synced, &synced, end)) {
    }
    return SIMDR_OK;
}

/* A move holds the source's writer lock from the lookup to the delete, so
 * that no write to the source falls between copy and delete, and the
 * target's while it appends (and syncs) the copy. Two moves in opposite
 * directions would each hold the lock the other waits for, so the target's
 * is only tried: when it is busy, the move lets go of the source, waits for
 * the target with no lock held and starts again (lock order in internal.h). */
SIMDR_API int simdr_move(simdr_store *src, const void *key, size_t key_len, simdr_store *dst,
                         uint64_t *tail_out) {
    if (!src || !dst || (!key && key_len)) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (simdr__check_reentry(src) != SIMDR_OK || simdr__check_reentry(dst) != SIMDR_OK)
        return SIMDR_EINVAL;
    if (same_file(src, dst)) return refuse_same_store(src);
    if (dst->readonly) return simdr__check_writable(dst);
    uint64_t hash = simdr_hash_key(key, key_len), end = 0;
    simdr_entry *e = NULL;
    int rc;
    for (;;) {
        pthread_mutex_lock(&src->wlock);
        rc = simdr__check_writable(src);
        if (rc == SIMDR_OK) rc = simdr__lookup(src, hash, &e);
        if (rc != SIMDR_OK) {
            if (rc == SIMDR_NOTFOUND) simdr__fail(rc, "%s: key not found", src->path);
            pthread_mutex_unlock(&src->wlock);
            return rc;
        }
        if (pthread_mutex_trylock(&dst->wlock) == 0) break;
        pthread_mutex_unlock(&src->wlock);
        simdr_entry_release(e);
        e = NULL;
        pthread_mutex_lock(&dst->wlock);
        pthread_mutex_unlock(&dst->wlock);
    }
    rc = append_copy_locked(dst, e);
    pthread_mutex_unlock(&dst->wlock);
    if (rc == SIMDR_OK) {
        simdr__item it = {hash, tombstone_byte, 1, 1};
        rc = append_locked(src, &it, 1, &end);
    }
    pthread_mutex_unlock(&src->wlock);
    /* Withdrawing takes dst's writer lock again: only once src's is let go
     * (no waiting for one store's lock while holding another's). */
    if (atomic_load(&dst->failed)) simdr__withdraw_unsynced(dst);
    simdr_entry_release(e);
    if (rc == SIMDR_OK && src->durability == SIMDR_SYNC_DATA) rc = simdr__sync_to(src, end);
    if (rc == SIMDR_OK && tail_out) *tail_out = end;
    return rc;
}
