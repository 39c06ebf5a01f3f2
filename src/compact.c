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

/* Live metadata offsets in file order. */
static int sorted_live(simdr_store *s, simdr__view *v, uint64_t **offs, uint64_t *n) {
    if (simdr__live_offsets(s, v, offs, n) != SIMDR_OK)
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    simdr__sort_offsets(*offs, *n);
    return SIMDR_OK;
}

SIMDR_API uint64_t simdr_compaction_savings(simdr_store *s) {
    if (!s) return 0;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    int layout = atomic_load(&s->layout);
    uint64_t *offs = NULL, n = 0, size = 0;
    if (sorted_live(s, v, &offs, &n) == SIMDR_OK) {
        for (uint64_t i = 0; i < n; i++) {
            struct simdr_entry e;
            if (simdr__entry_decode(v->map->base, v->map->len, offs[i], layout, &e) != SIMDR_OK)
                continue;
            size += simdr__pad_for(size, layout == SIMDR_LAYOUT_ALIGNED64) + e.size +
                    SIMDR__META_SIZE;
        }
    }
    simdr__epoch_exit(&s->epoch, shard, tok);
    free(offs);
    return tail > size ? tail - size : 0;
}

typedef struct writer {
    int fd;
    uint8_t *buf;
    uint64_t buffered;
    uint64_t flushed; /* file offset of buf[0] */
} writer;

static int writer_flush(writer *w) {
    if (w->buffered && simdr__pwrite_all(w->fd, w->buf, (size_t)w->buffered, w->flushed) != 0)
        return -1;
    w->flushed += w->buffered;
    w->buffered = 0;
    return 0;
}

static int writer_put(writer *w, const void *p, uint64_t len) {
    if (w->buffered + len > COPY_BUFFER && writer_flush(w) != 0) return -1;
    if (len > COPY_BUFFER / 2) {
        /* Large payloads go straight from the map to the file. */
        if (simdr__pwrite_all(w->fd, p, (size_t)len, w->flushed) != 0) return -1;
        w->flushed += len;
        return 0;
    }
    memcpy(w->buf + w->buffered, p, (size_t)len);
    w->buffered += len;
    return 0;
}

static const uint8_t zero_pad[SIMDR__ALIGN];

/* Decodes the live entry whose metadata is at meta_off, its bytes read
 * through r. The metadata, when the buffer does not hold it, is read on its
 * own (20 bytes): a refill starting there would miss the entry's start,
 * which only the metadata names, and cost a second refill. */
static int read_entry(simdr__window *r, uint64_t meta_off, int layout, struct simdr_entry *e) {
    if (meta_off + SIMDR__META_SIZE > r->end) return SIMDR_ECORRUPT;
    uint8_t copy[SIMDR__META_SIZE];
    const uint8_t *meta = copy;
    if (meta_off >= r->lo && meta_off + SIMDR__META_SIZE <= r->hi)
        meta = r->buf + (meta_off - r->lo);
    else if (!r->buf || simdr__pread_all(r->fd, copy, sizeof copy, meta_off) != 0)
        meta = r->base + meta_off;
    uint64_t prev = simdr__load_u64le(meta + 8);
    if (prev >= meta_off) return SIMDR_ECORRUPT;
    return simdr__entry_decode_span(simdr__window_span(r, prev, meta_off + SIMDR__META_SIZE), prev,
                                    meta_off, layout, e);
}

SIMDR_API int simdr_compact(simdr_store *s) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    pthread_mutex_lock(&s->wlock);
    int rc = simdr__check_writable(s);
    if (rc != SIMDR_OK) {
        pthread_mutex_unlock(&s->wlock);
        return rc;
    }
    simdr__view *v = simdr__current_view(s);
    int layout = atomic_load(&s->layout);
    int aligned = layout == SIMDR_LAYOUT_ALIGNED64;
    uint64_t *offs = NULL, n = 0;
    uint64_t *new_meta = NULL;
    simdr__map *map = NULL;
    simdr__index *ix = NULL;
    simdr__view *nv = NULL;
    writer w = {-1, NULL, 0, 0};
    /* The old file is read forwards through a buffer (see simdr__window). */
    simdr__window rd = {s->fd, v->map->base, s->tail, 0, NULL, COPY_BUFFER, 0, 0};
    size_t plen = strlen(s->path) + sizeof ".compact";
    char *tmp = malloc(plen);
    struct stat st;
    if (!tmp || fstat(s->fd, &st) != 0) {
        rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(tmp, plen, "%s.compact", s->path);
    rc = sorted_live(s, v, &offs, &n);
    if (rc != SIMDR_OK) goto fail;
    new_meta = malloc((n ? n : 1) * sizeof *new_meta);
    w.buf = malloc(COPY_BUFFER);
    rd.buf = malloc(COPY_BUFFER);
    if (!new_meta || !w.buf || !rd.buf) {
        rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
        goto fail;
    }
    unlink(tmp);
    w.fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
    if (w.fd < 0 || flock(w.fd, LOCK_EX | LOCK_NB) != 0) {
        rc = simdr__fail_errno(errno, "creating the compaction file", tmp);
        goto fail;
    }
    uint64_t pos = 0, dropped = 0;
    for (uint64_t i = 0; i < n; i++) {
        /* The old file is read once, in order: hand its pages back as the
         * copy passes them so the process does not hold both files at once
         * (the data stays in the page cache; a reader still holding the old
         * map faults it back in). */
        if (offs[i] - dropped >= DROP_BEHIND) {
            uint64_t upto = offs[i] & ~(DROP_BEHIND - 1);
            madvise((void *)(v->map->base + dropped), (size_t)(upto - dropped), MADV_DONTNEED);
            dropped = upto;
        }
        struct simdr_entry e;
        if (read_entry(&rd, offs[i], layout, &e) != SIMDR_OK) {
            rc = simdr__fail(SIMDR_ECORRUPT, "%s: corrupt metadata at %llu", s->path,
                             (unsigned long long)offs[i]);
            goto fail;
        }
        uint64_t pad = simdr__pad_for(pos, aligned);
        uint8_t meta[SIMDR__META_SIZE];
        simdr__meta m = {e.key_hash, pos, e.checksum};
        simdr__meta_encode(meta, &m);
        if (writer_put(&w, zero_pad, pad) != 0 || writer_put(&w, e.data, e.size) != 0 ||
            writer_put(&w, meta, sizeof meta) != 0) {
            rc = simdr__fail_errno(errno, "writing the compacted file", tmp);
            goto fail;
        }
        pos += pad + e.size + SIMDR__META_SIZE;
        new_meta[i] = pos - SIMDR__META_SIZE;
        offs[i] = e.key_hash; /* the old offset is spent; the index build needs the hash */
    }
    if (writer_flush(&w) != 0 || fsync(w.fd) != 0) {
        rc = simdr__fail_errno(errno, "writing the compacted file", tmp);
        goto fail;
    }
    rc = simdr__map_create(w.fd, pos, &map, tmp);
    if (rc != SIMDR_OK) goto fail;
    ix = simdr__index_new(n);
    nv = malloc(sizeof *nv);
    if (!ix || !nv) {
        rc = simdr__fail(SIMDR_ENOMEM, "out of memory");
        goto fail;
    }
    /* Keys are distinct and their hashes in hand, so the index is built
     * without reading the new file; home slots are prefetched a few keys
     * ahead because each insert is otherwise a dependent cache miss. */
    for (uint64_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) simdr__index_prefetch(ix, offs[i + PREFETCH_AHEAD]);
        simdr__index_insert_distinct(ix, offs[i], simdr__index_value(offs[i], new_meta[i], 0));
    }
    if (rename(tmp, s->path) != 0) {
        rc = simdr__fail_errno(errno, "renaming the compacted file over the store", s->path);
        goto fail;
    }
    /* From here the compacted file is the store; a failed directory fsync
     * only delays the rename's durability. */
    simdr__fsync_dir(s->path);

    nv->map = map;
    nv->index = ix;
    atomic_init(&nv->tail, pos);
    pthread_mutex_lock(&s->sync_lock);
    int old_fd = s->fd;
    s->fd = w.fd;
    atomic_store(&s->synced, pos);
    /* The side file now describes the new file (a crash before this line
     * leaves it naming the old one: the next open recovers in full). */
    simdr__side_rebind(s->side, w.fd, pos);
    pthread_mutex_unlock(&s->sync_lock);
    close(old_fd);
    fstat(s->fd, &st);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->tail = pos;
    s->hint_tail = 0; /* the hint on disk describes the old file */
    atomic_store(&s->live, n);
    atomic_store_explicit(&s->view, nv, memory_order_release);
    simdr__epoch_synchronize(&s->epoch);
    simdr__map_retire(v->map);
    simdr__index_free(v->index);
    free(v);
    pthread_mutex_unlock(&s->wlock);
    free(offs);
    free(new_meta);
    free(w.buf);
    free(rd.buf);
    free(tmp);
    return SIMDR_OK;

fail:
    if (map) simdr__map_retire(map);
    simdr__index_free(ix);
    free(nv);
    if (w.fd >= 0) {
        close(w.fd);
        unlink(tmp);
    }
    pthread_mutex_unlock(&s->wlock);
    free(offs);
    free(new_meta);
    free(w.buf);
    free(rd.buf);
    free(tmp);
    return rc;
}
