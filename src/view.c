/*
 * view.c - the view readers load (map, index, tail) and its replacement:
 * a new view is published, and the old one's replaced parts are freed only
 * after a grace period, so no reader ever holds freed memory.
 */
#include <stdlib.h>

#include "internal.h"

int simdr__new_view(simdr__map *map, simdr__index *index, uint64_t tail, simdr__view **out) {
    simdr__view *v = malloc(sizeof *v);
    if (!v) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    v->map = map;
    v->index = index;
    atomic_init(&v->tail, tail);
    v->dead_base = 0;
    v->file_gen = 0;
    *out = v;
    return SIMDR_OK;
}

int simdr__publish_view(simdr_store *s, simdr__map *map, simdr__index *index) {
    simdr__view *old = simdr__current_view(s);
    simdr__view *nv = NULL;
    uint64_t tail = atomic_load_explicit(&old->tail, memory_order_relaxed);
    if (simdr__new_view(map, index, tail, &nv) != SIMDR_OK) {
        if (map != old->map) simdr__map_retire(map);
        if (index != old->index) simdr__index_free(index);
        return SIMDR_ENOMEM;
    }
    nv->dead_base = old->dead_base; /* the same file */
    /* A rebuilt index (withdrawn entries, a damaged hinted table) may lack
     * keys of earlier snapshots: readers must not take it for the same. */
    nv->file_gen = s->index_rebuilt ? atomic_fetch_add_explicit(&s->file_gens, 1,
                                                                memory_order_relaxed) + 1
                                    : old->file_gen;
    s->index_rebuilt = 0;
    atomic_store_explicit(&s->view, nv, memory_order_release);
    /* Once every reader that might have loaded the old view has left, its
     * parts that were replaced can go. */
    simdr__epoch_synchronize(&s->epoch);
    if (old->map != map) simdr__map_retire(old->map);
    if (old->index != index) simdr__index_free(old->index);
    free(old);
    return SIMDR_OK;
}

void simdr__view_new_file(simdr_store *s, simdr__view *v, uint64_t dead) {
    /* The count goes up by the new file's dead entries instead of being
     * set: a reader still holding a view of the old file then sees its
     * count grow (never a false "none dead"). */
    v->dead_base = atomic_fetch_add_explicit(&s->dead, dead, memory_order_relaxed);
    v->file_gen = atomic_fetch_add_explicit(&s->file_gens, 1, memory_order_relaxed) + 1;
}

int simdr__ensure_mapped(simdr_store *s, uint64_t end) {
    simdr__view *v = simdr__current_view(s);
    if (end <= v->map->len) return SIMDR_OK;
    simdr__map *m;
    int rc = simdr__map_create(s->fd, end, &m, s->path);
    if (rc != SIMDR_OK) return rc;
    return simdr__publish_view(s, m, v->index);
}
