/*
 * iter.c - iteration over live entries (sequential and parallel) and the full
 * integrity check.
 *
 * The sequential iterator walks the chain of a snapshot (pinned map + tail)
 * from the newest entry backwards and remembers which key hashes it has
 * yielded, so each key appears once, in its newest version, and tombstones
 * hide their keys. The parallel visit takes the live offsets straight from
 * the index and splits them over threads.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A set of 64-bit hashes; 0 is stored as a flag. */
typedef struct hashset {
    uint64_t *keys;
    uint64_t cap, used;
    int has_zero;
} hashset;

static int hashset_add(hashset *hs, uint64_t h) {
    if (h == 0) {
        int added = !hs->has_zero;
        hs->has_zero = 1;
        return added;
    }
    if ((hs->used + 1) * 4 > hs->cap * 3) {
        uint64_t ncap = hs->cap ? hs->cap * 2 : 1024;
        uint64_t *nk = simdr__alloc_zeroed((size_t)ncap * sizeof *nk);
        if (!nk) return -1;
        for (uint64_t i = 0; i < hs->cap; i++) {
            if (!hs->keys[i]) continue;
            uint64_t j = hs->keys[i] & (ncap - 1);
            while (nk[j]) j = (j + 1) & (ncap - 1);
            nk[j] = hs->keys[i];
        }
        simdr__free_big(hs->keys, (size_t)hs->cap * sizeof *hs->keys);
        hs->keys = nk;
        hs->cap = ncap;
    }
    uint64_t j = h & (hs->cap - 1);
    while (hs->keys[j]) {
        if (hs->keys[j] == h) return 0;
        j = (j + 1) & (hs->cap - 1);
    }
    hs->keys[j] = h;
    hs->used++;
    return 1;
}

struct simdr_iter {
    simdr_store *store;
    simdr__map *map;   /* pinned */
    unsigned shard;
    int layout;
    uint64_t pos;      /* end of the next entry to examine */
    hashset seen;
    struct simdr_entry current;
};

SIMDR_API int simdr_iter_open(simdr_store *s, simdr_iter **out) {
    if (!s || !out) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_iter *it = calloc(1, sizeof *it);
    if (!it) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    it->store = s;
    it->shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, it->shard);
    simdr__view *v = simdr__current_view(s);
    it->map = v->map;
    it->pos = atomic_load_explicit(&v->tail, memory_order_acquire);
    simdr__map_pin(it->map, it->shard);
    simdr__epoch_exit(&s->epoch, it->shard, tok);
    it->layout = atomic_load(&s->layout);
    /* Size the seen-set for the live keys up front: no rehash while iterating. */
    uint64_t want = 1024;
    while (want * 3 < simdr_count(s) * 4 + 4) want *= 2;
    it->seen.keys = simdr__alloc_zeroed((size_t)want * sizeof *it->seen.keys);
    if (!it->seen.keys) {
        simdr__map_unpin(it->map, it->shard);
        free(it);
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    }
    it->seen.cap = want;
    *out = it;
    return SIMDR_OK;
}

SIMDR_API int simdr_iter_next(simdr_iter *it, const simdr_entry **entry) {
    if (!it || !entry) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    while (it->pos != 0) {
        struct simdr_entry e;
        int rc = simdr__entry_decode(it->map->base, it->map->len, it->pos - SIMDR__META_SIZE,
                                     it->layout, &e);
        if (rc != SIMDR_OK)
            return simdr__fail(rc, "%s: corrupt entry ending at %llu", it->store->path,
                               (unsigned long long)it->pos);
        it->pos = e.start;
        int added = hashset_add(&it->seen, e.key_hash);
        if (added < 0) return simdr__fail(SIMDR_ENOMEM, "out of memory");
        if (!added || e.tombstone) continue;
        e.map = it->map;
        e.shard = it->shard;
        it->current = e;
        *entry = &it->current;
        return SIMDR_OK;
    }
    return SIMDR_NOTFOUND;
}

SIMDR_API void simdr_iter_close(simdr_iter *it) {
    if (!it) return;
    simdr__map_unpin(it->map, it->shard);
    simdr__free_big(it->seen.keys, (size_t)it->seen.cap * sizeof *it->seen.keys);
    free(it);
}

SIMDR_API int simdr_for_each(simdr_store *s, simdr_visit_fn fn, void *ctx) {
    if (!s || !fn) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    simdr_iter *it;
    int rc = simdr_iter_open(s, &it);
    if (rc != SIMDR_OK) return rc;
    const simdr_entry *e;
    while ((rc = simdr_iter_next(it, &e)) == SIMDR_OK) {
        if (fn(ctx, e) != 0) {
            rc = simdr__fail(SIMDR_ESTOPPED, "stopped by the callback");
            break;
        }
    }
    simdr_iter_close(it);
    return rc == SIMDR_NOTFOUND ? SIMDR_OK : rc;
}

/* Live metadata offsets from the index, inside an epoch section. */
int simdr__live_offsets(simdr_store *s, simdr__view *v, uint64_t **out, uint64_t *n) {
    (void)s;
    uint64_t cap = v->index->cap, k = 0;
    uint64_t *offs = malloc((cap ? cap : 1) * sizeof *offs);
    if (!offs) return SIMDR_ENOMEM;
    for (uint64_t i = 0; i < cap; i++) {
        uint64_t val = atomic_load_explicit(&v->index->slots[i], memory_order_acquire);
        if (val && !(val & SIMDR__IDX_TOMB)) offs[k++] = val & SIMDR__IDX_OFF_MASK;
    }
    *out = offs;
    *n = k;
    return SIMDR_OK;
}

typedef struct par_job {
    simdr__map *map;
    int layout;
    const uint64_t *offs;
    uint64_t begin, end;
    simdr_visit_fn fn;
    void *ctx;
    _Atomic int *stop;
    int rc;
    int started;
} par_job;

static void *par_worker(void *arg) {
    par_job *j = arg;
    for (uint64_t i = j->begin; i < j->end; i++) {
        if (atomic_load_explicit(j->stop, memory_order_relaxed)) break;
        struct simdr_entry e;
        if (simdr__entry_decode(j->map->base, j->map->len, j->offs[i], j->layout, &e) != SIMDR_OK) {
            j->rc = SIMDR_ECORRUPT;
            atomic_store(j->stop, 1);
            break;
        }
        e.map = j->map;
        e.shard = 0;
        if (j->fn(j->ctx, &e) != 0) {
            j->rc = SIMDR_ESTOPPED;
            atomic_store(j->stop, 1);
            break;
        }
    }
    return NULL;
}

SIMDR_API int simdr_for_each_parallel(simdr_store *s, unsigned nthreads, simdr_visit_fn fn,
                                      void *ctx) {
    if (!s || !fn) return simdr__fail(SIMDR_EINVAL, "NULL argument");
    if (nthreads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (nthreads > 256) nthreads = 256;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    simdr__map *map = v->map;
    uint64_t *offs, n;
    int rc = simdr__live_offsets(s, v, &offs, &n);
    if (rc == SIMDR_OK) simdr__map_pin(map, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    if (rc != SIMDR_OK) return simdr__fail(rc, "out of memory");
    par_job *jobs = calloc(nthreads, sizeof *jobs);
    pthread_t *tids = calloc(nthreads, sizeof *tids);
    _Atomic int stop = 0;
    if (!jobs || !tids) {
        free(jobs); free(tids); free(offs);
        simdr__map_unpin(map, shard);
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    }
    int layout = atomic_load(&s->layout);
    for (unsigned t = 0; t < nthreads; t++)
        jobs[t] = (par_job){map, layout, offs, n * t / nthreads, n * (t + 1) / nthreads,
                            fn, ctx, &stop, SIMDR_OK, 0};
    /* The calling thread takes the first share; a thread that cannot be
     * created has its share run here instead. */
    for (unsigned t = 1; t < nthreads; t++)
        jobs[t].started = pthread_create(&tids[t], NULL, par_worker, &jobs[t]) == 0;
    par_worker(&jobs[0]);
    for (unsigned t = 1; t < nthreads; t++) {
        if (jobs[t].started)
            pthread_join(tids[t], NULL);
        else
            par_worker(&jobs[t]);
    }
    rc = SIMDR_OK;
    for (unsigned t = 0; t < nthreads && rc == SIMDR_OK; t++) rc = jobs[t].rc;
    free(jobs);
    free(tids);
    free(offs);
    simdr__map_unpin(map, shard);
    if (rc == SIMDR_ESTOPPED) return simdr__fail(rc, "stopped by the callback");
    if (rc != SIMDR_OK) return simdr__fail(rc, "%s: corrupt entry met during iteration", s->path);
    return SIMDR_OK;
}

SIMDR_API int simdr_check(simdr_store *s, simdr_check_fn fn, void *ctx,
                          simdr_check_report *report) {
    if (!s) return simdr__fail(SIMDR_EINVAL, "NULL store");
    simdr_check_report rep = {0, 0, 0};
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    simdr__view *v = simdr__current_view(s);
    simdr__map *map = v->map;
    uint64_t tail = atomic_load_explicit(&v->tail, memory_order_acquire);
    simdr__map_pin(map, shard);
    simdr__epoch_exit(&s->epoch, shard, tok);
    int layout = atomic_load(&s->layout);
    int stopped = 0;

    /* Bytes in the file beyond the valid chain (a read-only open of a torn or
     * damaged file) are a problem in themselves. */
    struct stat st;
    if (fstat(s->fd, &st) == 0 && (uint64_t)st.st_size > tail) {
        simdr_check_issue is = {tail, (uint64_t)st.st_size, 0, SIMDR_ECORRUPT,
                                "bytes after the end of the valid chain (torn append, "
                                "garbage, or a break in the chain)"};
        rep.bad_entries++;
        if (fn && fn(ctx, &is)) stopped = 1;
    }
    for (uint64_t p = tail; p != 0 && !stopped;) {
        struct simdr_entry e;
        if (simdr__entry_decode(map->base, map->len, p - SIMDR__META_SIZE, layout, &e) !=
            SIMDR_OK) {
            simdr_check_issue is = {0, p, 0, SIMDR_ECORRUPT, "broken chain link"};
            rep.bad_entries++;
            if (fn) fn(ctx, &is);
            break;
        }
        rep.entries++;
        rep.bytes_checked += p - e.start;
        int layout_probe = layout;
        if (!simdr__entry_crc_ok(map->base, e.start, e.meta_off, e.checksum, &layout_probe)) {
            simdr_check_issue is = {e.start, p, e.key_hash, SIMDR_ECHECKSUM,
                                    "checksum mismatch"};
            rep.bad_entries++;
            if (fn && fn(ctx, &is)) stopped = 1;
        }
        p = e.start;
    }
    simdr__map_unpin(map, shard);
    if (report) *report = rep;
    if (rep.bad_entries)
        return simdr__fail(SIMDR_ECORRUPT, "%s: %llu damaged entr%s found", s->path,
                           (unsigned long long)rep.bad_entries,
                           rep.bad_entries == 1 ? "y" : "ies");
    return SIMDR_OK;
}
