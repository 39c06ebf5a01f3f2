/*
 * store.c - opening and closing a store: options, the file and its checks,
 * its lock, the side file handed to the writer, the leftovers of a dead
 * compaction; the recovery report; sizes and counts. Loading the file's
 * contents is load.c; views view.c; sync sync.c; refresh refresh.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ---- fork ----
 * A lock belongs to an open file description, and a child made by fork()
 * holds copies of the writer's descriptors (and maps: the mapped-append
 * window, the side file's page), so the store stayed locked, even for the
 * parent's next open, until every such child had exited. The child may not
 * write through the handle (simdr__forked), so a fork handler lets go of
 * everything in it that holds the lock: the window and the side file are
 * dropped, and the store's descriptor is replaced, at the same number, by
 * a read-only description of the same file, through which the child still
 * reads. */
static pthread_mutex_t open_stores_lock = PTHREAD_MUTEX_INITIALIZER;
static simdr_store *open_stores; /* writable stores open in this process */
static pthread_once_t open_stores_once = PTHREAD_ONCE_INIT;

static void open_stores_prepare(void) { pthread_mutex_lock(&open_stores_lock); }
static void open_stores_parent(void) { pthread_mutex_unlock(&open_stores_lock); }

static void open_stores_child(void) {
    for (simdr_store *s = open_stores; s; s = s->open_next) {
        /* A compaction in flight: its new file's descriptor, unless the
         * switch has made it the store's own (replaced just below). */
        int compact_fd = atomic_load(&s->compact_fd);
        if (compact_fd >= 0 && compact_fd != s->fd) close(compact_fd);
        simdr__mapped_release(s, s->alloc_end);
        simdr__side_forget(s->side);
        s->side = NULL;
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", s->fd);
        int ro = open(self, O_RDONLY | O_CLOEXEC);
        if (ro >= 0) {
            dup3(ro, s->fd, O_CLOEXEC);
            close(ro);
        }
    }
    pthread_mutex_unlock(&open_stores_lock);
}

static void open_stores_watch(void) {
    pthread_atfork(open_stores_prepare, open_stores_parent, open_stores_child);
}

static void open_stores_add(simdr_store *s) {
    pthread_once(&open_stores_once, open_stores_watch);
    pthread_mutex_lock(&open_stores_lock);
    s->open_prev = NULL;
    s->open_next = open_stores;
    if (open_stores) open_stores->open_prev = s;
    open_stores = s;
    pthread_mutex_unlock(&open_stores_lock);
}

static void open_stores_remove(simdr_store *s) {
    pthread_mutex_lock(&open_stores_lock);
    if (s->open_prev)
        s->open_prev->open_next = s->open_next;
    else if (open_stores == s)
        open_stores = s->open_next;
    if (s->open_next) s->open_next->open_prev = s->open_prev;
    s->open_prev = s->open_next = NULL;
    pthread_mutex_unlock(&open_stores_lock);
}

SIMDR_API void simdr_options_init(simdr_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->open_mode = SIMDR_OPEN_CREATE;
    opts->layout = SIMDR_LAYOUT_ALIGNED64;
    opts->durability = SIMDR_SYNC_NONE;
    opts->repair = 1;
    opts->use_hint = 1;
    opts->verify_reads = 1;
    opts->file_mode = 0644;
}

char *simdr__suffixed_path(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

/* Syncs the directory holding path. A directory that cannot be opened for
 * reading (EACCES: write and search rights only) or a file system that does
 * not sync directories (EINVAL, EBADF: some FUSE and network file systems)
 * cannot be synced at all, and that is not a failure: as PostgreSQL's
 * fsync_fname, those errors count as done. Any other error is returned
 * (errno set): the caller must not take the directory entry for durable. */
int simdr__fsync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    int dfd = simdr__io.open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    free(copy);
    if (dfd < 0) return errno == EACCES ? 0 : -1;
    int rc;
    while ((rc = simdr__io.fsync_dir(dfd)) != 0 && errno == EINTR) continue;
    int err = errno;
    close(dfd);
    if (rc != 0 && (err == EINVAL || err == EBADF)) rc = 0;
    errno = err;
    return rc;
}

/* The files whose writer handle was closed failed in this process (a failed
 * sync, or a write that could not be undone), by device and inode. After a
 * failed fdatasync the kernel may have marked the pages it could not write
 * clean: they still read as written, so the next open verifies them and
 * serves them, but they are not on the disk, and the next fdatasync (on a
 * new descriptor, which the error is not reported to again) would succeed
 * without writing them. A writable open of such a file therefore writes
 * everything above its durable record again, which dirties those pages,
 * and syncs it before it lets a sync be acknowledged. */
static pthread_mutex_t failed_files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct failed_file {
    dev_t dev;
    ino_t ino;
} *failed_files;
static size_t n_failed_files, cap_failed_files;

static void failed_file_remember(dev_t dev, ino_t ino) {
    pthread_mutex_lock(&failed_files_lock);
    size_t i = 0;
    while (i < n_failed_files && (failed_files[i].dev != dev || failed_files[i].ino != ino)) i++;
    if (i == n_failed_files) {
        if (n_failed_files == cap_failed_files) {
            size_t cap = cap_failed_files ? cap_failed_files * 2 : 8;
            struct failed_file *grown = realloc(failed_files, cap * sizeof *grown);
            if (grown) {
                failed_files = grown;
                cap_failed_files = cap;
            }
        }
        /* Without memory the file is not remembered: its next open then
         * trusts the page cache, as an open in another process would. */
        if (n_failed_files < cap_failed_files)
            failed_files[n_failed_files++] = (struct failed_file){dev, ino};
    }
    pthread_mutex_unlock(&failed_files_lock);
}

/* 1 (and forgotten) if the file was remembered. */
static int failed_file_take(dev_t dev, ino_t ino) {
    pthread_mutex_lock(&failed_files_lock);
    int found = 0;
    for (size_t i = 0; i < n_failed_files && !found; i++)
        if (failed_files[i].dev == dev && failed_files[i].ino == ino) {
            failed_files[i] = failed_files[--n_failed_files];
            found = 1;
        }
    pthread_mutex_unlock(&failed_files_lock);
    return found;
}

/* Writes [from, tail) of the file again from its verified bytes and syncs
 * it (see failed_files). Through a bounce buffer: the source is the map of
 * the very pages being written. */
static int rewrite_unconfirmed(simdr_store *s, const simdr__view *v, uint64_t from) {
    uint64_t end = atomic_load_explicit(&v->tail, memory_order_acquire);
    if (from >= end) return SIMDR_OK;
    size_t chunk = (size_t)1 << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf) return simdr__fail(SIMDR_ENOMEM, "out of memory");
    int rc = SIMDR_OK;
    for (uint64_t off = from; off < end && rc == SIMDR_OK;) {
        size_t n = end - off < chunk ? (size_t)(end - off) : chunk;
        memcpy(buf, v->map->base + off, n);
        if (simdr__pwrite_all(s->fd, buf, n, off) != 0)
            rc = simdr__fail_errno(errno, "rewriting what a failed sync left unconfirmed", s->path);
        off += n;
    }
    free(buf);
    if (rc == SIMDR_OK && simdr__fdatasync(s->fd) != 0)
        rc = simdr__fail_errno(errno, "syncing what a failed sync left unconfirmed", s->path);
    return rc;
}

static int open_fail(simdr_store *s, int rc) {
    simdr__side_close(s->side);
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s);
    return rc;
}

/* Only a regular file holds a store; the descriptor then goes back to
 * blocking I/O. */
static int check_file_type(simdr_store *s) {
    struct stat st;
    if (simdr__io.fstat(s->fd, &st) != 0) return simdr__fail_errno(errno, "fstat", s->path);
    if (S_ISDIR(st.st_mode)) return simdr__fail(SIMDR_EINVAL, "%s: is a directory", s->path);
    if (!S_ISREG(st.st_mode))
        return simdr__fail(SIMDR_EINVAL,
                           "%s: not a regular file (a FIFO, device or socket cannot hold a "
                           "store)",
                           s->path);
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
        return simdr__fail_errno(errno, "fcntl", s->path);
    return SIMDR_OK;
}

SIMDR_API int simdr_open(simdr_store **out, const char *path, const simdr_options *opts) {
    if (!out || !path) return simdr__fail(SIMDR_EINVAL, "simdr_open: NULL argument");
    if (!*path) return simdr__fail(SIMDR_EINVAL, "simdr_open: empty path");
    *out = NULL;
    simdr_options defaults;
    if (!opts) {
        simdr_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->open_mode < SIMDR_OPEN_CREATE || opts->open_mode > SIMDR_OPEN_READONLY ||
        (opts->layout != SIMDR_LAYOUT_ALIGNED64 && opts->layout != SIMDR_LAYOUT_UNALIGNED) ||
        (opts->durability != SIMDR_SYNC_NONE && opts->durability != SIMDR_SYNC_DATA) ||
        (opts->append_mode != SIMDR_APPEND_WRITE && opts->append_mode != SIMDR_APPEND_MAPPED &&
         opts->append_mode != SIMDR_APPEND_ZEROED))
        return simdr__fail(SIMDR_EINVAL, "%s: invalid options", path);
    if (opts->expected_keys > simdr__index_max_keys())
        return simdr__fail(SIMDR_EINVAL,
                           "%s: expected_keys %llu is more keys than an index holds (%llu)", path,
                           (unsigned long long)opts->expected_keys,
                           (unsigned long long)simdr__index_max_keys());

    simdr_store *s;
    if (posix_memalign((void **)&s, SIMDR__CACHELINE, sizeof *s) != 0)
        return simdr__fail(SIMDR_ENOMEM, "out of memory");
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->readonly = opts->open_mode == SIMDR_OPEN_READONLY;
    s->durability = opts->durability;
    s->new_file_layout = opts->layout;
    s->use_hint = opts->use_hint;
    s->salvage = opts->salvage;
    s->process_gen = simdr__process_generation();
    s->verify_reads = opts->verify_reads != 0;
    s->path = strdup(path);
    if (!s->path) return open_fail(s, simdr__fail(SIMDR_ENOMEM, "out of memory"));

    /* Non-blocking, so that a FIFO is refused rather than waited on. */
    int flags = O_CLOEXEC | O_NONBLOCK | (s->readonly ? O_RDONLY : O_RDWR);
    mode_t mode = opts->file_mode ? opts->file_mode : 0644;
    int created = 0; /* 1: made by this open; -1: perhaps (not removed on failure) */
    s->fd = simdr__io.open(path, flags, mode);
    /* A file this open creates is named durably (its directory synced)
     * before anything written to it can be acknowledged as durable: a power
     * cut must not take the whole file with the directory entry. Created
     * with O_EXCL so that only a file made here is removed should that
     * sync fail. EEXIST then means another process created it meanwhile,
     * or the path is a symbolic link to a file yet to be made: opened with
     * O_CREAT as before, and the directory synced all the same. */
    if (s->fd < 0 && errno == ENOENT && opts->open_mode == SIMDR_OPEN_CREATE) {
        s->fd = simdr__io.open(path, flags | O_CREAT | O_EXCL, mode);
        created = s->fd >= 0;
        if (s->fd < 0 && errno == EEXIST) {
            s->fd = simdr__io.open(path, flags | O_CREAT, mode);
            created = s->fd >= 0 ? -1 : 0;
        }
    }
    if (created && simdr__fsync_dir(path) != 0) {
        int err = errno;
        if (created > 0) unlink(path);
        return open_fail(s, simdr__fail_errno(err, "creating the store (syncing its directory)",
                                              path));
    }
    if (s->fd < 0) {
        int err = errno;
        if (err == ENOENT && opts->open_mode == SIMDR_OPEN_CREATE)
            return open_fail(s, simdr__fail(SIMDR_ENOENT, "%s: no such directory to create it in",
                                            path));
        if (err == ENOENT)
            return open_fail(s, simdr__fail(SIMDR_ENOENT, "%s: no such file", path));
        if (err == EISDIR)
            return open_fail(s, simdr__fail(SIMDR_EINVAL, "%s: is a directory", path));
        return open_fail(s, simdr__fail_errno(err, "open", path));
    }
    int rc = check_file_type(s);
    if (rc != SIMDR_OK) return open_fail(s, rc);
    /* Opened through a symbolic link (data.bin -> disk2/data.bin): the files
     * named from the path (the side file, the compacted file renamed over
     * the store, a saved torn tail, what a refresh looks for) go by the file
     * the link names, or compaction would replace the link with a new store
     * and leave the old one behind. */
    struct stat link_st;
    if (lstat(path, &link_st) == 0 && S_ISLNK(link_st.st_mode)) {
        char *target = realpath(path, NULL);
        if (target) {
            free(s->path);
            s->path = target;
        }
    }
    path = s->path;
    simdr__io_note_fsize_limit();
    if (!s->readonly && flock(s->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK)
            return open_fail(s, simdr__fail(SIMDR_ELOCKED,
                                            "%s: locked by another process that has it open "
                                            "for writing",
                                            path));
        return open_fail(s, simdr__fail_errno(err, "flock", path));
    }
    /* The side file tells recovery the committed tail; a writer takes it
     * over (creating it for a new store) only once the file is accepted. */
    s->side = simdr__side_attach_reader(path);
    simdr__view *v;
    rc = simdr__load_file(s, opts->repair, opts->layout, &v);
    if (rc != SIMDR_OK) return open_fail(s, rc);
    if (!s->readonly && failed_file_take(s->dev, s->ino)) {
        const simdr__side_basis *b = &s->side_basis;
        rc = rewrite_unconfirmed(s, v, b->has_durable ? b->durable.tail : 0);
        if (rc != SIMDR_OK) {
            failed_file_remember(s->dev, s->ino);
            simdr__map_retire(v->map);
            simdr__index_free(v->index);
            free(v);
            return open_fail(s, rc);
        }
    }
    if (!s->readonly && opts->expected_keys > v->index->cap * 4 / 5) {
        /* Sized once now instead of grown step by step (each growth copies
         * the table and reads every moved key's metadata). A hint: without
         * the memory for it the index grows as usual. */
        simdr__index *sized = simdr__index_resized(v->index, v->map->base, opts->expected_keys);
        if (sized) {
            simdr__index_free(v->index);
            v->index = sized;
        }
    }
    if (!s->readonly) {
        simdr__side_close(s->side);
        simdr__side_basis *b = &s->side_basis;
        /* Bytes below the durable record must verify at the next open: the
         * file is synced before its tail may be recorded as durable. */
        if (!b->has_durable && simdr__fdatasync(s->fd) == 0) b->has_durable = 1;
        /* Only that much is known to be on disk: what a killed writer left
         * in the page cache is not, and a later simdr_sync must flush it. */
        atomic_store(&s->synced, b->has_durable ? b->durable.tail : 0);
        /* The page names the newest entry's key hash: no wider access than
         * the store file has now (its mode may have been narrowed since it
         * was created with opts->file_mode). */
        struct stat store_st;
        unsigned side_mode = simdr__io.fstat(s->fd, &store_st) == 0
                                 ? (unsigned)(store_st.st_mode & 0666)
                                 : opts->file_mode;
        int held_elsewhere = 0;
        s->side = simdr__side_attach_writer(path, s->fd, s->tail, side_mode, b, &held_elsewhere);
        if (held_elsewhere) {
            simdr__map_retire(v->map);
            simdr__index_free(v->index);
            free(v);
            return open_fail(s, simdr__fail(SIMDR_ELOCKED,
                                            "%s: locked by another process that has it open "
                                            "for writing (its side file %s.simdr is held by "
                                            "the writer of the file this path named before)",
                                            path, path));
        }
    }
    /* A writable open leaves the file exactly as long as its tail. */
    s->mapped = !s->readonly && opts->append_mode == SIMDR_APPEND_MAPPED;
    s->zeroed = !s->readonly && opts->append_mode == SIMDR_APPEND_ZEROED;
    s->alloc_end = s->tail;
    atomic_init(&s->view, v);
    pthread_mutex_init(&s->wlock, NULL);
    pthread_mutex_init(&s->sync_lock, NULL);
    pthread_mutex_init(&s->compact_lock, NULL);
    atomic_init(&s->compact_fd, -1);
    if (!s->readonly) {
        /* A compaction that died before its rename leaves its temporary
         * file; it is never merged into anything, only removed. */
        char *tmp = simdr__suffixed_path(path, SIMDR__COMPACT_SUFFIX);
        if (tmp) {
            unlink(tmp);
            free(tmp);
        }
    }
    if (!s->readonly) open_stores_add(s);
    *out = s;
    return SIMDR_OK;
}

SIMDR_API int simdr_close(simdr_store *s) {
    if (!s) return SIMDR_OK;
    if (!s->readonly) open_stores_remove(s);
    int rc = SIMDR_OK;
    /* A child that inherited the handle only lets go of it: the file and
     * its hint belong to the parent. */
    int owner = !s->readonly && !s->failed && !simdr__forked(s);
    if (!s->readonly && s->failed && !simdr__forked(s)) failed_file_remember(s->dev, s->ino);
    /* A clean close is a durability point in every mode: the page marked
     * closed may reach the disk at any time after, and a later open trusts a
     * file that matches it, so the bytes it names go to stable storage (and
     * into the durable record) first. Without it a power cut after closing
     * unsynced writes could leave the mark without the data. */
    if (owner) {
        /* Mapped appends: the file ends at its tail again before the sync,
         * which then covers the new length, and before the hint, which
         * needs the file exactly as long as the tail. */
        int trimmed = simdr__mapped_trim(s, 1);
        rc = simdr__sync_to(s, s->tail);
        if (rc == SIMDR_OK) rc = trimmed;
    }
    if (owner && rc == SIMDR_OK && s->use_hint && s->tail != s->hint_tail)
        simdr__hint_save(s);
    /* A clean close: an append by another program after it is not torn. Not
     * a child's: the page is shared with the parent, which still appends. */
    if (owner && s->side && rc == SIMDR_OK) simdr__side_mark_closed(s->side, s->tail);
    /* The locks go explicitly: closing a descriptor releases its lock only
     * when no other descriptor (a forked child's copy, made before the fork
     * handler in the child could let go of it) shares the description. A
     * child must not unlock: the description and its lock are the
     * parent's. */
    int lock_owner = !s->readonly && !simdr__forked(s);
    if (lock_owner && s->side) flock(s->side->fd, LOCK_UN);
    simdr__side_close(s->side);
    simdr__view *v = simdr__current_view(s);
    simdr__map_retire(v->map);
    simdr__index_free(v->index);
    free(v);
    simdr__mapped_release(s, 0);
    if (lock_owner) flock(s->fd, LOCK_UN);
    close(s->fd);
    /* A child's copies of the locks may be held by parent threads it lacks
     * (a compaction in flight at the fork): destroying a locked mutex is
     * undefined, and a mutex holds nothing that needs freeing. */
    if (!simdr__forked(s)) {
        pthread_mutex_destroy(&s->wlock);
        pthread_mutex_destroy(&s->sync_lock);
        pthread_mutex_destroy(&s->compact_lock);
    }
    free(s->path);
    free(s);
    return rc;
}

SIMDR_API int simdr_recovery(const simdr_store *s, simdr_recovery_info *info) {
    if (!s || !info) return simdr__fail(SIMDR_EINVAL, "simdr_recovery: NULL argument");
    *info = s->recovery;
    return SIMDR_OK;
}

SIMDR_API uint64_t simdr_count(simdr_store *s) { return s ? atomic_load(&s->live) : 0; }
SIMDR_API int simdr_is_empty(simdr_store *s) { return simdr_count(s) == 0; }
SIMDR_API uint64_t simdr_file_size(simdr_store *s) {
    if (!s) return 0;
    /* Inside a grace period: a compaction (or a growth) frees the view it
     * replaces once the readers that may hold it have left. */
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    uint64_t tail = atomic_load_explicit(&simdr__current_view(s)->tail, memory_order_acquire);
    simdr__epoch_exit(&s->epoch, shard, tok);
    return tail;
}
SIMDR_API int simdr_layout_of(simdr_store *s) { return s ? atomic_load(&s->layout) : -1; }
SIMDR_API const char *simdr_path(simdr_store *s) { return s ? s->path : NULL; }

SIMDR_API uint64_t simdr_index_bytes(simdr_store *s) {
    if (!s) return 0;
    unsigned shard = simdr__thread_shard();
    unsigned tok = simdr__epoch_enter(&s->epoch, shard);
    uint64_t bytes = simdr__current_view(s)->index->cap * sizeof(uint64_t) + sizeof(simdr__index);
    simdr__epoch_exit(&s->epoch, shard, tok);
    return bytes;
}
