/*
 * py_store.c - DataStore: the Python face of a simdr_store, and its entry
 * iterator.
 *
 * Every call that writes, scans, syncs or copies large values runs with the
 * GIL released; single lookups keep it (they cost less than releasing it).
 * The close guard (pysimdr_store_enter/leave, see py_simdr.h) makes close()
 * safe while other threads are inside calls: close waits for them, and calls
 * that start after it raise ClosedError.
 */
#include "py_simdr.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <stdio.h>
#include <unistd.h>
#include <time.h>

/* The stores whose write_stream reader is running on this thread, innermost
 * first: a reader may stream into another store, whose reader may call back
 * into the first. The engine holds each one's write lock while its reader
 * runs, so a write or close of any of them from inside a reader would wait
 * for this thread itself forever; the engine only knows of the innermost. */
typedef struct stream_frame {
    PySimdrStore *store;
    struct stream_frame *outer;
} stream_frame;
static _Thread_local stream_frame *tls_streams;

/* 0: s is not streaming on this thread; 1: its reader is the innermost one
 * running; 2: an outer one (a reader of another store runs inside it). */
static int streaming_here(const PySimdrStore *s) {
    for (const stream_frame *f = tls_streams; f; f = f->outer)
        if (f->store == s) return f == tls_streams ? 1 : 2;
    return 0;
}

/* ---- use after fork ----
 *
 * A forked child has only the thread that forked. Calls other threads made
 * on a store at the fork never end in the child, yet their count in `users`
 * (and `mu`, if one of them held it) came along, as did a close() waiting
 * for them: the child's close() would wait forever. A store used in a
 * process that forked since it was last used starts afresh there: a new
 * mutex and condition, only this thread's own calls counted (those of
 * write_stream readers it is running), and a close begun by another thread
 * undone if it had not yet reached the file (the child still has it), or
 * finished if it had. A counter bumped in the child after each fork tells
 * (cheaper than a getpid per call). Every caller holds the GIL, so no other
 * thread of the child can meet the store half adopted.
 */
unsigned long pysimdr_forks_seen;

static void count_fork_in_child(void) { pysimdr_forks_seen++; }

void pysimdr_watch_forks(void) { pthread_atfork(NULL, NULL, count_fork_in_child); }

void pysimdr_adopt_after_fork(PySimdrStore *s) {
    s->forks = pysimdr_forks_seen;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->users = 0;
    for (const stream_frame *f = tls_streams; f; f = f->outer)
        if (f->store == s) s->users++;
    if (s->closing == PYSIMDR_CLOSING) s->closing = s->store ? 0 : PYSIMDR_CLOSED;
}

/* ---- the close guard ---- */

int pysimdr_store_closed_error(PySimdrStore *s) {
    PyErr_SetString(PySimdr_ClosedError, s->closing ? "the store is closed"
                                                    : "the store is not open");
    return -1;
}

int pysimdr_store_enter(PySimdrStore *s) {
    pysimdr_adopted(s);
    pthread_mutex_lock(&s->mu);
    if (s->closing || !s->store) {
        pthread_mutex_unlock(&s->mu);
        return pysimdr_store_closed_error(s);
    }
    s->users++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void pysimdr_store_leave(PySimdrStore *s) {
    pthread_mutex_lock(&s->mu);
    if (--s->users == 0 && s->closing) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
}

static int busy_streaming(const char *what) {
    PyErr_Format(PySimdr_Error,
                 "this store is busy with write_stream on this thread: a reader running "
                 "inside that call cannot %s the same store", what);
    return -1;
}

static int refuse_reentrant(PySimdrStore *s) {
    return streaming_here(s) ? busy_streaming("write to or close") : 0;
}

static int enter_for_write(PySimdrStore *s) {
    if (refuse_reentrant(s) < 0) return -1;
    return pysimdr_store_enter(s);
}

/* ---- open / close ---- */

static PyObject *store_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    PySimdrStore *self = (PySimdrStore *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->forks = pysimdr_forks_seen;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->idle, NULL);
    return (PyObject *)self;
}

/* obj is one of the names a, b and (when not NULL) c: *out gets its value. */
static int parse_choice(PyObject *obj, const char *what, const char *a, int va, const char *b,
                        int vb, const char *c, int vc, int *out) {
    char names[128];
    if (c)
        snprintf(names, sizeof names, "'%s', '%s' or '%s'", a, b, c);
    else
        snprintf(names, sizeof names, "'%s' or '%s'", a, b);
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be %s, not %.100s", what, names,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *name[3] = {a, b, c};
    int value[3] = {va, vb, vc};
    for (int i = 0; i < 3 && name[i]; i++)
        if (PyUnicode_CompareWithASCIIString(obj, name[i]) == 0) {
            *out = value[i];
            return 0;
        }
    PyErr_Format(PySimdr_InvalidArgumentError, "%s must be %s, not %R", what, names, obj);
    return -1;
}

/*
 * 1 if this process holds the write lock (flock) on the file at path: the
 * engine's "locked by another process" is then wrong, and the usual cause is
 * a DataStore of this process not closed yet (a notebook cell run again opens
 * the file before the old object is dropped). Read from /proc/locks, whose
 * FLOCK lines give the locking process and the file's device and inode; 0
 * where it cannot be read.
 */
static int locked_by_this_process(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f) return 0;
    char line[256];
    int mine = 0;
    long pid = (long)getpid();
    while (!mine && fgets(line, sizeof line, f)) {
        char kind[16], mode[16];
        long holder;
        unsigned maj, min;
        unsigned long long ino;
        if (sscanf(line, "%*d: %15s %*s %15s %ld %x:%x:%llu", kind, mode, &holder, &maj, &min,
                   &ino) == 6 &&
            strcmp(kind, "FLOCK") == 0 && strcmp(mode, "WRITE") == 0 && holder == pid &&
            maj == major(sb.st_dev) && min == minor(sb.st_dev) && ino == (unsigned long long)sb.st_ino)
            mine = 1;
    }
    fclose(f);
    return mine;
}

/* path made absolute against the current directory (PyMem_RawMalloc'd;
 * NULL: no memory). A path already absolute, or one whose directory cannot be
 * told (getcwd fails: the current directory was removed), is kept as it is. */
static char *absolute_path(const char *path) {
    size_t len = strlen(path);
    char *cwd = NULL;
    if (path[0] != '/' && path[0] != '\0') {
        size_t cap = 4096;
        for (;;) {
            char *grown = PyMem_RawRealloc(cwd, cap);
            if (!grown) {
                PyMem_RawFree(cwd);
                return NULL;
            }
            cwd = grown;
            if (getcwd(cwd, cap)) break;
            if (errno != ERANGE) {
                PyMem_RawFree(cwd);
                cwd = NULL;
                break;
            }
            cap *= 2;
        }
    }
    size_t cwd_len = cwd ? strlen(cwd) : 0;
    char *out = PyMem_RawMalloc(cwd_len + 1 + len + 1);
    if (out) {
        if (cwd)
            snprintf(out, cwd_len + 1 + len + 1, "%s%s%s", cwd,
                     cwd_len && cwd[cwd_len - 1] == '/' ? "" : "/", path);
        else
            memcpy(out, path, len + 1);
    }
    PyMem_RawFree(cwd);
    return out;
}

static int store_init(PySimdrStore *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", "readonly", "create", "durability", "layout",
                             "repair", "salvage", "use_hint", "verify_reads", "append_mode",
                             "expected_keys", NULL};
    PyObject *path_arg, *durability = NULL, *layout = NULL, *append_mode = NULL;
    PyObject *expected_keys = NULL;
    int readonly = 0, create = 1, repair = 1, salvage = 0, use_hint = 1, verify_reads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|ppOO$ppppOO:DataStore", kwlist, &path_arg,
                                     &readonly, &create, &durability, &layout, &repair,
                                     &salvage, &use_hint, &verify_reads, &append_mode,
                                     &expected_keys))
        return -1;
    if (self->store || self->closing) {
        PyErr_SetString(PySimdr_Error, "DataStore.__init__ called on an already opened store");
        return -1;
    }
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = readonly ? SIMDR_OPEN_READONLY : create ? SIMDR_OPEN_CREATE
                                                             : SIMDR_OPEN_EXISTING;
    opts.repair = repair;
    opts.salvage = salvage;
    opts.use_hint = use_hint;
    /* The binding checks values itself (see verify_value): the engine's check
     * runs inside the lookup, where a large value's pass would hold the GIL. */
    opts.verify_reads = 0;
    if (durability && parse_choice(durability, "durability", "none", SIMDR_SYNC_NONE, "data",
                                   SIMDR_SYNC_DATA, NULL, 0, &opts.durability) < 0)
        return -1;
    if (layout && parse_choice(layout, "layout", "aligned", SIMDR_LAYOUT_ALIGNED64, "unaligned",
                               SIMDR_LAYOUT_UNALIGNED, NULL, 0, &opts.layout) < 0)
        return -1;
    if (append_mode && parse_choice(append_mode, "append_mode", "write", SIMDR_APPEND_WRITE,
                                    "mapped", SIMDR_APPEND_MAPPED, "zeroed", SIMDR_APPEND_ZEROED,
                                    &opts.append_mode) < 0)
        return -1;
    if (expected_keys && expected_keys != Py_None) {
        if (!PyLong_Check(expected_keys)) {
            PyErr_Format(PyExc_TypeError, "expected_keys must be an int, not %.100s",
                         Py_TYPE(expected_keys)->tp_name);
            return -1;
        }
        unsigned long long n = PyLong_AsUnsignedLongLong(expected_keys);
        if (n == (unsigned long long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError,
                                "expected_keys must be a count of keys (0 or more)");
            }
            return -1;
        }
        opts.expected_keys = (uint64_t)n;
    }

    PyObject *fs_path = PyOS_FSPath(path_arg);
    if (!fs_path) return -1;
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(fs_path, &encoded)) {
        Py_DECREF(fs_path);
        return -1;
    }
    simdr_store *store = NULL;
    int rc;
    /* The engine names the store's files (the compacted file, the side file,
     * a saved torn tail, the file a refresh looks for) from the path it is
     * given, each time: a relative path would name files in whatever
     * directory an os.chdir made current since. It gets the absolute path. */
    char *absolute = absolute_path(PyBytes_AS_STRING(encoded));
    if (!absolute) {
        Py_DECREF(encoded);
        Py_DECREF(fs_path);
        PyErr_NoMemory();
        return -1;
    }
    const char *cpath = absolute;
    Py_BEGIN_ALLOW_THREADS
    rc = simdr_open(&store, cpath, &opts);
    Py_END_ALLOW_THREADS
    if (rc == SIMDR_ELOCKED && !readonly && locked_by_this_process(cpath)) {
        pysimdr_raise_message(rc, "%s: already open for writing in this process (a DataStore "
                                  "on this file is not closed yet: close it, or use it)",
                              PyBytes_AS_STRING(encoded));
        PyMem_RawFree(absolute);
        Py_DECREF(encoded);
        Py_DECREF(fs_path);
        return -1;
    }
    PyMem_RawFree(absolute);
    Py_DECREF(encoded);
    if (rc != SIMDR_OK) {
        Py_DECREF(fs_path);
        pysimdr_raise(rc);
        return -1;
    }
    if (self->store || self->closing) {
        /* Another thread's __init__ opened this object while the GIL was let
         * go: keep that store, not a second one over it. */
        Py_BEGIN_ALLOW_THREADS
        (void)simdr_close(store);
        Py_END_ALLOW_THREADS
        Py_DECREF(fs_path);
        PyErr_SetString(PySimdr_Error, "DataStore.__init__ called on an already opened store");
        return -1;
    }
    self->store = store;
    self->readonly = readonly;
    self->durability = opts.durability;
    self->append_mode = readonly ? SIMDR_APPEND_WRITE : opts.append_mode;
    self->verify_reads = verify_reads;
    Py_XSETREF(self->path, fs_path);
    return 0;
}

/* Closes every live iterator (GIL held, no users left). */
static void close_iterators(PySimdrStore *self) {
    for (PySimdrIter *it = self->iters; it; it = it->next) {
        simdr_iter_close(it->it);
        it->it = NULL;
    }
}

/*
 * Waits until calls of other threads have left (`closing` is ours) or until
 * another thread's close() has finished (`closing` is someone else's): mu is
 * held on entry and on return. The wait is cut into slices with the GIL taken
 * back between them, so a signal handler (Ctrl-C's KeyboardInterrupt) can run:
 * a call that never ends (a write_stream reader blocked on a pipe) must not
 * leave the program deaf to Ctrl-C. mu is let go before the GIL is taken back:
 * a thread holding the GIL may be waiting for mu in pysimdr_store_enter.
 * Returns -1 with the handler's exception set.
 */
#define CLOSE_WAIT_SLICE_NS (50 * 1000 * 1000)

/* The store whose close() waits on this thread, if any: a signal handler run
 * between the wait's slices that closes the same store must not wait for the
 * close() it interrupted (store_close). */
static _Thread_local PySimdrStore *tls_closing;

static int close_wait(PySimdrStore *self, int for_users) {
    for (;;) {
        if (for_users ? self->users == 0 : self->closing != PYSIMDR_CLOSING) return 0;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += CLOSE_WAIT_SLICE_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&self->idle, &self->mu, &until);
        pthread_mutex_unlock(&self->mu);
        Py_END_ALLOW_THREADS
        int interrupted = PyErr_CheckSignals() < 0;
        pthread_mutex_lock(&self->mu);
        if (interrupted) return -1;
    }
}

static PyObject *store_close(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    if (refuse_reentrant(self) < 0) return NULL;
    /* Called by a signal handler inside this thread's own close() of the
     * store: that close() closes the file once the handler returns. */
    if (tls_closing == self) Py_RETURN_NONE;
    pysimdr_adopted(self);
    pthread_mutex_lock(&self->mu);
    while (self->closing == PYSIMDR_CLOSING) {
        /* Another thread's close() waits for calls to end or is closing the
         * file: return when it is done, so that after close() returns the
         * file is closed (and unlocked), whichever call did it. If that
         * close() was interrupted instead, the store is open again and this
         * one closes it. */
        if (close_wait(self, 0) < 0) {
            pthread_mutex_unlock(&self->mu);
            return NULL;
        }
    }
    if (self->closing || !self->store) {
        pthread_mutex_unlock(&self->mu);
        Py_RETURN_NONE;
    }
    self->closing = PYSIMDR_CLOSING;
    PySimdrStore *outer_closing = tls_closing;
    tls_closing = self;
    int waited = close_wait(self, 1);
    tls_closing = outer_closing;
    if (waited < 0) {
        /* Interrupted: the store stays open (calls made meanwhile were
         * refused with ClosedError); a close() waiting behind this one now
         * closes it. */
        self->closing = 0;
        pthread_cond_broadcast(&self->idle);
        pthread_mutex_unlock(&self->mu);
        return NULL;
    }
    pthread_mutex_unlock(&self->mu);
    close_iterators(self);
    simdr_store *store = self->store;
    self->store = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = simdr_close(store);
    pthread_mutex_lock(&self->mu);
    self->closing = PYSIMDR_CLOSED;
    pthread_cond_broadcast(&self->idle);
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    if (rc != SIMDR_OK) return pysimdr_raise(rc);
    Py_RETURN_NONE;
}

static void store_dealloc(PySimdrStore *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    /* Nobody else can be inside a call: every call holds a reference. */
    if (self->store) {
        close_iterators(self);
        simdr_store *store = self->store;
        self->store = NULL;
        Py_BEGIN_ALLOW_THREADS
        (void)simdr_close(store);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->path);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->mu);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int store_traverse(PySimdrStore *self, visitproc visit, void *arg) {
    Py_VISIT(self->path);
    return 0;
}

static PyObject *store_enter_ctx(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    if (pysimdr_store_enter(self) < 0) return NULL;
    pysimdr_store_leave(self);
    return Py_NewRef(self);
}

static PyObject *store_exit_ctx(PySimdrStore *self, PyObject *args) {
    (void)args;
    PyObject *r = store_close(self, NULL);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* ---- writing ---- */

/* A value of PYSIMDR_NOGIL_COPY bytes or more that may change (pysimdr_value),
 * read-only or not: written as a stream whose source copies it a piece at a time into the
 * engine's buffer, which the engine then checksums and writes, so the entry
 * always matches its checksum without a copy of the whole value. The engine
 * refuses a stream of zero bytes only, which simdr_put stores: a value found
 * to hold zeros only is written by simdr_put from a read-only anonymous
 * mapping of as many zeros, whose pages are the kernel's shared zero page
 * (address space, not a copy in memory). No GIL. */
typedef struct {
    const char *next;
    size_t left;
} buffer_source;

static int64_t buffer_fill(void *ctx, void *buf, size_t cap) {
    buffer_source *src = ctx;
    size_t n = src->left < cap ? src->left : cap;
    memcpy(buf, src->next, n);
    src->next += n;
    src->left -= n;
    return (int64_t)n;
}

static int all_zero(const char *p, size_t n) {
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* put_changeable's own mapping failed (no engine message to report). */
#define COPY_NOMEM INT_MIN

static int put_changeable(simdr_store *store, const pysimdr_bytes *k, const pysimdr_bytes *v) {
    if (!all_zero(v->ptr, v->len)) {
        buffer_source src = {v->ptr, v->len};
        return simdr_put_stream(store, k->ptr, k->len, buffer_fill, &src, NULL);
    }
    void *zeros = mmap(NULL, v->len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (zeros == MAP_FAILED) return COPY_NOMEM;
    int rc = simdr_put(store, k->ptr, k->len, zeros, v->len, NULL);
    munmap(zeros, v->len);
    return rc;
}

static int put_one(PySimdrStore *self, PyObject *key, PyObject *value) {
    pysimdr_bytes k, v;
    if (pysimdr_key(key, &k) < 0) return -1;
    if (pysimdr_value(value, &v) < 0) {
        pysimdr_bytes_release(&k);
        return -1;
    }
    int changeable = v.changeable;
    int rc = -1;
    if (enter_for_write(self) == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = changeable ? put_changeable(self->store, &k, &v)
                      : simdr_put(self->store, k.ptr, k.len, v.ptr, v.len, NULL);
        Py_END_ALLOW_THREADS
        pysimdr_store_leave(self);
        if (rc == COPY_NOMEM) PyErr_NoMemory();
        else if (rc != SIMDR_OK) pysimdr_raise(rc);
    }
    pysimdr_bytes_release(&k);
    pysimdr_bytes_release(&v);
    return rc == SIMDR_OK ? 0 : -1;
}

static PyObject *store_write(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    static const char *const names[] = {"key", "data"};
    PyObject *kv[2];
    if (pysimdr_args("write", args, nargs, kwnames, names, 2, 2, kv) < 0) return NULL;
    if (put_one(self, kv[0], kv[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

/*
 * The items of a batch argument as a sequence nothing else can change: a
 * list is copied into a tuple (PySequence_Fast would hand out the caller's
 * list itself). Turning an item into bytes may run Python code (a buffer
 * export written in Python or Cython), which could empty or refill the
 * caller's list under a walk over its slots.
 */
static PyObject *items_snapshot(PyObject *obj, const char *message) {
    if (PyList_Check(obj)) return PyList_AsTuple(obj);
    return PySequence_Fast(obj, message);
}

/*
 * A batch's borrowed keys and values, kept until the append returns. A batch
 * is one append, so unlike put_one it cannot stream a value that may change
 * (pysimdr_value's `changeable`, 256 KiB or more) while it writes the others:
 * those values are copied into one block of their total size, without the
 * GIL, just before the append, and the items point into the copy. A batch of
 * such values thus holds one copy of them for the length of the call (taken
 * with PyMem_RawMalloc, so tracemalloc counts it); bytes and EntryHandle
 * views are used in place.
 */
typedef struct {
    PyObject *seq;        /* fast sequence of pairs */
    simdr_kv *items;
    pysimdr_bytes *bufs;  /* 2 per item */
    Py_ssize_t n, filled;
    size_t copy_bytes;    /* total size of the changeable values */
    char *copy;           /* their copy, once made */
} batch_args;

static void batch_free(batch_args *b) {
    for (Py_ssize_t i = 0; i < b->filled * 2; i++) pysimdr_bytes_release(&b->bufs[i]);
    PyMem_Free(b->items);
    PyMem_Free(b->bufs);
    PyMem_RawFree(b->copy);
    Py_XDECREF(b->seq);
}

/* Copies the changeable values into b->copy and points their items there.
 * No GIL: the views stay exported until batch_free. */
static void batch_copy_changeable(batch_args *b) {
    char *at = b->copy;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        const pysimdr_bytes *vb = &b->bufs[2 * i + 1];
        if (!vb->changeable) continue;
        memcpy(at, vb->ptr, vb->len);
        b->items[i].value = at;
        at += vb->len;
    }
}

static int batch_collect(PyObject *items, batch_args *b) {
    memset(b, 0, sizeof *b);
    PyObject *src;
    if (PyDict_Check(items)) {
        src = PyDict_Items(items);
    } else if (!PyList_Check(items) && !PyTuple_Check(items) &&
               PyObject_HasAttrString(items, "keys") && PyObject_HasAttrString(items, "items")) {
        src = PyMapping_Items(items);
    } else {
        src = Py_NewRef(items);
    }
    if (!src) return -1;
    /* A mapping's items are a list of this call's own already. */
    const char *shape = "expected a mapping or an iterable of (key, value) pairs";
    b->seq = src == items ? items_snapshot(src, shape) : PySequence_Fast(src, shape);
    Py_DECREF(src);
    if (!b->seq) return -1;
    b->n = PySequence_Fast_GET_SIZE(b->seq);
    if (b->n == 0) return 0;
    b->items = PyMem_Calloc((size_t)b->n, sizeof *b->items);
    b->bufs = PyMem_Calloc((size_t)b->n * 2, sizeof *b->bufs);
    if (!b->items || !b->bufs) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject **pairs = PySequence_Fast_ITEMS(b->seq);
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject *pair = pairs[i];
        if (!(PyTuple_Check(pair) || PyList_Check(pair)) || PySequence_Fast_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError, "item %zd must be a (key, value) pair, not %.100s", i,
                         Py_TYPE(pair)->tp_name);
            return -1;
        }
        pysimdr_bytes *kb = &b->bufs[2 * i], *vb = &b->bufs[2 * i + 1];
        /* Both held first: the key's export may change a pair that is a list. */
        PyObject *key = Py_NewRef(PySequence_Fast_GET_ITEM(pair, 0));
        PyObject *value = Py_NewRef(PySequence_Fast_GET_ITEM(pair, 1));
        int rc = pysimdr_key(key, kb);
        if (rc == 0 && (rc = pysimdr_value(value, vb)) < 0) pysimdr_bytes_release(kb);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) return -1;
        b->filled = i + 1;
        if (vb->changeable) {
            if (vb->len > PY_SSIZE_T_MAX - b->copy_bytes) {
                PyErr_NoMemory(); /* more than any allocation could hold */
                return -1;
            }
            b->copy_bytes += vb->len;
        }
        b->items[i] = (simdr_kv){kb->ptr, kb->len, vb->ptr, vb->len};
    }
    if (b->copy_bytes && !(b->copy = PyMem_RawMalloc(b->copy_bytes))) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *store_put_many(PySimdrStore *self, PyObject *items) {
    batch_args b;
    if (batch_collect(items, &b) < 0) {
        batch_free(&b);
        return NULL;
    }
    PyObject *result = NULL;
    if (b.n == 0) {
        if (pysimdr_store_enter(self) == 0) {
            pysimdr_store_leave(self);
            result = Py_NewRef(Py_None);
        }
    } else if (enter_for_write(self) == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        if (b.copy) batch_copy_changeable(&b);
        rc = simdr_put_batch(self->store, b.items, (size_t)b.n, NULL);
        Py_END_ALLOW_THREADS
        pysimdr_store_leave(self);
        result = rc == SIMDR_OK ? Py_NewRef(Py_None) : pysimdr_raise(rc);
    }
    batch_free(&b);
    return result;
}

/* write_stream: the engine pulls bytes from the Python reader. */
typedef struct {
    PyObject *reader_read;  /* bound reader.read */
    PyThreadState *tstate;  /* saved while the GIL is released */
    /* The chunk the reader returned last, exported until every byte of it was
     * handed to the engine: it may hold more than the engine asked for, and
     * between two requests the GIL is free, so another thread could resize a
     * bytearray that was not exported. */
    Py_buffer pending;
    int has_pending;
    Py_ssize_t pending_off;
    int failed;             /* a Python exception is set (restored after the call) */
    PyObject *exc_type, *exc_value, *exc_tb;
} stream_src;

static void stream_drop_pending(stream_src *src) {
    if (src->has_pending) PyBuffer_Release(&src->pending);
    src->has_pending = 0;
}

static int64_t stream_fill(void *ctx, void *buf, size_t cap) {
    stream_src *src = ctx;
    PyEval_RestoreThread(src->tstate);
    int64_t result = -1;
    if (!src->has_pending) {
        PyObject *chunk = PyObject_CallFunction(src->reader_read, "n", (Py_ssize_t)cap);
        if (!chunk) goto fail;
        if (chunk == Py_None) {
            Py_DECREF(chunk);
            PyErr_SetString(PySimdr_Error,
                            "write_stream: reader.read() returned None (non-blocking "
                            "readers are not supported)");
            goto fail;
        }
        if (!PyObject_CheckBuffer(chunk)) {
            PyErr_Format(PyExc_TypeError, "write_stream: reader.read() must return bytes, not %.100s",
                         Py_TYPE(chunk)->tp_name);
            Py_DECREF(chunk);
            goto fail;
        }
        int got = pysimdr_get_buffer(chunk, &src->pending,
                                     "write_stream: a chunk of reader.read()");
        Py_DECREF(chunk); /* the export holds its own reference */
        if (got < 0) goto fail;
        src->has_pending = 1;
        src->pending_off = 0;
    }
    size_t left = (size_t)(src->pending.len - src->pending_off);
    size_t n = left < cap ? left : cap;
    memcpy(buf, (const char *)src->pending.buf + src->pending_off, n);
    src->pending_off += (Py_ssize_t)n;
    if (left == n) stream_drop_pending(src);
    result = (int64_t)n;
    src->tstate = PyEval_SaveThread();
    return result;
fail:
    stream_drop_pending(src);
    if (!src->failed) {
        src->failed = 1;
        PyErr_Fetch(&src->exc_type, &src->exc_value, &src->exc_tb);
    } else {
        PyErr_Clear();
    }
    src->tstate = PyEval_SaveThread();
    return -1;
}

static PyObject *store_write_stream(PySimdrStore *self, PyObject *const *positional,
                                    Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "reader"};
    PyObject *args[2];
    if (pysimdr_args("write_stream", positional, nargs, kwnames, names, 2, 2, args) < 0)
        return NULL;
    stream_src src = {0};
    src.reader_read = PyObject_GetAttrString(args[1], "read");
    if (!src.reader_read) {
        PyErr_Format(PyExc_TypeError, "write_stream: reader must have a read(size) method, "
                     "not %.100s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    pysimdr_bytes k;
    if (pysimdr_key(args[0], &k) < 0) {
        Py_DECREF(src.reader_read);
        return NULL;
    }
    PyObject *result = NULL;
    if (enter_for_write(self) == 0) {
        stream_frame frame = {self, tls_streams};
        tls_streams = &frame;
        int rc;
        src.tstate = PyEval_SaveThread();
        rc = simdr_put_stream(self->store, k.ptr, k.len, stream_fill, &src, NULL);
        PyEval_RestoreThread(src.tstate);
        tls_streams = frame.outer;
        pysimdr_store_leave(self);
        if (src.failed) {
            PyErr_Restore(src.exc_type, src.exc_value, src.exc_tb);
        } else if (rc != SIMDR_OK) {
            pysimdr_raise(rc);
        } else {
            result = Py_NewRef(Py_None);
        }
    }
    stream_drop_pending(&src);
    Py_DECREF(src.reader_read);
    pysimdr_bytes_release(&k);
    return result;
}

/* ---- reading ---- */

/*
 * Damaged values. The engine store is opened with verify_reads = 0 and the
 * binding makes the check the engine's reads would make (verify_reads=True,
 * the default): a value whose bytes no longer match their CRC-32 raises
 * CorruptError and is never handed out. The check runs after the lookup,
 * when the value's size is known, so that a large value's pass over its
 * bytes (page faults from disk included) runs without the GIL.
 * simdr_entry_chunk checks an unchecked handle's whole value when asked for
 * its last byte, a MiB at a time with the pages of a large value dropped
 * again, as the engine's own read check does.
 */

/* CRC-32 (the format's: reflected, polynomial 0xEDB88320, as zlib's crc32)
 * of a short value in line, eight bytes a step (slicing by 8). The tables are
 * built at import.
 *
 * INLINE_CHECK_MAX is where every read path stops checking in line: up to
 * it, this table check costs less than reaching the engine's check and
 * running it (carry-less multiplication, a fraction of a cycle per byte);
 * past it, the table's cost per byte loses. Reaching the engine's check is
 * a call on the handle a lookup made (read_entry, get_many, iteration), or
 * a handle looked up after a read scope found the value (read, get, in):
 * the first crosses over near 64 bytes, the second near 128, and a 64-byte
 * limit costs the second a few ns between the two (docs/BENCHMARKS.md,
 * "The in-line check's limit"). One limit keeps every read path's edges at
 * the same sizes. */
#define INLINE_CHECK_MAX 64
static uint32_t crc_tables[8][256];

void pysimdr_init_crc(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tables[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tables[t][i] = (crc_tables[t - 1][i] >> 8) ^ crc_tables[0][crc_tables[t - 1][i] & 0xFF];
}

static inline uint32_t crc_short(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        lo ^= c;
        c = crc_tables[7][lo & 0xFF] ^ crc_tables[6][(lo >> 8) & 0xFF] ^
            crc_tables[5][(lo >> 16) & 0xFF] ^ crc_tables[4][lo >> 24] ^
            crc_tables[3][p[4]] ^ crc_tables[2][p[5]] ^ crc_tables[1][p[6]] ^
            crc_tables[0][p[7]];
    }
    for (; n > 0; p++, n--) c = crc_tables[0][(c ^ *p) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* No Python calls: SIMDR_OK, or the engine's failure (message set). A short
 * value that fails the check in line is checked again by the engine, which
 * then reports it in its own words. */
static int verify_value(const simdr_entry *e) {
    uint64_t size = simdr_entry_size(e);
    if (size == 0) return SIMDR_OK;
    if (size <= INLINE_CHECK_MAX &&
        crc_short(simdr_entry_data(e), (size_t)size) == simdr_entry_checksum(e))
        return SIMDR_OK;
    const void *p;
    size_t n;
    return simdr_entry_chunk(e, size - 1, 1, &p, &n, 0);
}

/* The check with the GIL held on entry: let go while a large value is
 * read. 0 sound, -1 CorruptError set (entry left to the caller). */
static int verify_value_gil(const simdr_entry *e) {
    int rc;
    if (simdr_entry_size(e) >= PYSIMDR_NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        rc = verify_value(e);
        Py_END_ALLOW_THREADS
    } else {
        rc = verify_value(e);
    }
    if (rc == SIMDR_OK) return 0;
    pysimdr_raise(rc == SIMDR_ECHECKSUM ? SIMDR_ECORRUPT : rc);
    return -1;
}

/* simdr_get for a Python key, checked: 1 found (*out set, with its data and
 * size in *data and *size), 0 absent, -1 error set. The lookup keeps the
 * GIL: a lookup of a resident entry costs less than letting the GIL go and
 * taking it back (docs/BENCHMARKS.md). */
static int get_entry(PySimdrStore *self, PyObject *key, simdr_entry **out, const void **data,
                     uint64_t *size) {
    pysimdr_bytes k;
    if (pysimdr_key_held(key, &k) < 0) return -1;
    int rc;
    if (pysimdr_read_enter(self) < 0) {
        rc = -100;
    } else {
        rc = simdr_get(self->store, k.ptr, k.len, out);
        pysimdr_read_leave(self);
    }
    pysimdr_bytes_release_fast(&k);
    if (rc == SIMDR_OK) {
        *data = simdr_entry_data(*out);
        *size = simdr_entry_size(*out);
        /* A short value's check in line here; the rest (or a short value
         * that fails it, reported in the engine's words) in verify_value_gil. */
        if (self->verify_reads &&
            !(*size <= INLINE_CHECK_MAX &&
              crc_short(*data, (size_t)*size) == simdr_entry_checksum(*out)) &&
            verify_value_gil(*out) < 0) {
            simdr_entry_release(*out);
            *out = NULL;
            return -1;
        }
        return 1;
    }
    if (rc == SIMDR_NOTFOUND) return 0;
    if (rc != -100) pysimdr_raise(rc);
    return -1;
}

/* The value of e copied into a new bytes object, checked first when verify
 * is set; large values are checked and copied without the GIL. Releases e. */
static PyObject *entry_to_bytes(simdr_entry *e, int verify) {
    const char *data = simdr_entry_data(e);
    uint64_t size = simdr_entry_size(e);
    PyObject *out = NULL;
    int rc = SIMDR_OK;
    if (size < PYSIMDR_NOGIL_COPY) {
        if (verify) rc = verify_value(e);
        if (rc == SIMDR_OK) out = PyBytes_FromStringAndSize(data, (Py_ssize_t)size);
    } else {
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (out) {
            char *dst = PyBytes_AS_STRING(out);
            Py_BEGIN_ALLOW_THREADS
            if (verify) rc = verify_value(e);
            if (rc == SIMDR_OK) memcpy(dst, data, size);
            Py_END_ALLOW_THREADS
            if (rc != SIMDR_OK) Py_CLEAR(out);
        }
    }
    if (rc != SIMDR_OK) pysimdr_raise(rc == SIMDR_ECHECKSUM ? SIMDR_ECORRUPT : rc);
    simdr_entry_release(e);
    return out;
}

/*
 * Copying reads (read, get, db[k]) and presence (exists, in) go through a
 * read scope (simdr_read_begin/get/end) around one lookup: the engine hands
 * out a pointer into the map, valid until the scope ends, without allocating,
 * pinning, unpinning and freeing a handle (about 230 instructions, two of
 * them locked); the value is checked and copied into its bytes object before
 * the scope ends. The scope is one epoch
 * section held for a lookup and a copy of at most PYSIMDR_NOGIL_COPY bytes,
 * with the GIL held throughout and no Python code run inside it (bytes
 * objects are not tracked by the collector), so no write of this thread can
 * fall inside it. Larger values, and checked values longer than
 * INLINE_CHECK_MAX, take the handle path: the engine checks them, and from
 * PYSIMDR_NOGIL_COPY up checks and copies them without the GIL, outside any
 * scope.
 */

/* The stored CRC-32 of a value the engine handed out: the entry's metadata
 * follows its payload directly, the checksum in its bytes 16..20, little
 * endian (FORMAT.md, "One entry"); the map holds the whole entry. */
static inline uint32_t stored_checksum(const void *value, size_t len) {
    const unsigned char *m = (const unsigned char *)value + len + 16;
    return (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24;
}

/* 1 if a value found in a scope may be served from it: short enough to be
 * copied with the GIL held and, when checked, to be checked in line, and
 * sound. 0 sends it down the handle path (which reports a damaged one). */
static inline int scope_serves(const PySimdrStore *self, const void *value, size_t len) {
    if (!self->verify_reads) return len < PYSIMDR_NOGIL_COPY;
    return len <= INLINE_CHECK_MAX && crc_short(value, len) == stored_checksum(value, len);
}

/* The newest value of key as a new bytes object in *out: 1 found, 0 absent,
 * -1 error set. */
static int value_bytes(PySimdrStore *self, PyObject *key, PyObject **out) {
    pysimdr_bytes k;
    if (pysimdr_key_held(key, &k) < 0) return -1;
    if (pysimdr_read_enter(self) < 0) {
        pysimdr_bytes_release_fast(&k);
        return -1;
    }
    simdr_read scope;
    const void *value = NULL;
    size_t len = 0;
    PyObject *copy = NULL;
    int served = 0;
    simdr_read_begin(self->store, &scope);
    int rc = simdr_read_get(&scope, k.ptr, k.len, &value, &len);
    if (rc == SIMDR_OK && scope_serves(self, value, len)) {
        copy = PyBytes_FromStringAndSize(value, (Py_ssize_t)len);
        served = 1;
    }
    simdr_read_end(&scope);
    simdr_entry *e = NULL;
    if (rc == SIMDR_OK && !served) rc = simdr_get(self->store, k.ptr, k.len, &e);
    pysimdr_read_leave(self);
    pysimdr_bytes_release_fast(&k);
    if (served) {
        *out = copy;
        return copy ? 1 : -1;
    }
    if (rc == SIMDR_NOTFOUND) return 0;
    if (rc != SIMDR_OK) {
        pysimdr_raise(rc);
        return -1;
    }
    *out = entry_to_bytes(e, self->verify_reads);
    return *out ? 1 : -1;
}

static PyObject *store_read(PySimdrStore *self, PyObject *key) {
    PyObject *v;
    int found = value_bytes(self, key, &v);
    if (found < 0) return NULL;
    if (!found) Py_RETURN_NONE;
    return v;
}

static PyObject *store_read_entry(PySimdrStore *self, PyObject *key) {
    /* The handle's object is taken before the lookup, so that less work
     * follows the lookup's cache misses. */
    PySimdrEntry *h = pysimdr_entry_alloc();
    if (!h) return NULL;
    simdr_entry *e;
    const void *data;
    uint64_t size;
    int found = get_entry(self, key, &e, &data, &size);
    if (found <= 0) {
        Py_DECREF(h);
        if (found < 0) return NULL;
        Py_RETURN_NONE;
    }
    pysimdr_entry_fill(h, e, data, size);
    return (PyObject *)h;
}

static PyObject *store_read_stream(PySimdrStore *self, PyObject *key) {
    simdr_entry *e;
    const void *data;
    uint64_t size;
    int found = get_entry(self, key, &e, &data, &size);
    if (found < 0) return NULL;
    if (!found) Py_RETURN_NONE;
    return pysimdr_stream_new(e);
}

static PyObject *store_get(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *v;
    int found = value_bytes(self, args[0], &v);
    if (found < 0) return NULL;
    if (!found) return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return v;
}

static PyObject *store_subscript(PySimdrStore *self, PyObject *key) {
    PyObject *v;
    int found = value_bytes(self, key, &v);
    if (found < 0) return NULL;
    if (!found) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return v;
}

static PyObject *store_get_many(PySimdrStore *self, PyObject *keys) {
    /* A str, bytes, bytearray or memoryview is iterable too, by character or
     * byte: one key passed alone would be looked up as many short keys. (An
     * array of keys, numpy's included, is a sequence of keys.) */
    if (PyUnicode_Check(keys) || PyBytes_Check(keys) || PyByteArray_Check(keys) ||
        PyMemoryView_Check(keys)) {
        PyErr_Format(PyExc_TypeError,
                     "get_many expects an iterable of keys, not a single key (%.100s); "
                     "pass [key]", Py_TYPE(keys)->tp_name);
        return NULL;
    }
    PyObject *seq = items_snapshot(keys, "get_many expects an iterable of keys");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    simdr_key *ks = PyMem_Calloc((size_t)n + 1, sizeof *ks);
    pysimdr_bytes *bufs = PyMem_Calloc((size_t)n + 1, sizeof *bufs);
    simdr_entry **out = PyMem_Calloc((size_t)n + 1, sizeof *out);
    Py_ssize_t filled = 0;
    if (!ks || !bufs || !out) {
        PyErr_NoMemory();
        goto done;
    }
    for (; filled < n; filled++) {
        if (pysimdr_key(PySequence_Fast_GET_ITEM(seq, filled), &bufs[filled]) < 0) goto done;
        ks[filled] = (simdr_key){bufs[filled].ptr, bufs[filled].len};
    }
    if (pysimdr_store_enter(self) < 0) goto done;
    int64_t rc = 0;
    if (n > 0) {
        int verify = self->verify_reads;
        Py_BEGIN_ALLOW_THREADS
        rc = simdr_get_batch(self->store, ks, (size_t)n, out);
        /* One damaged value fails the call, as the engine's checked batch. */
        for (Py_ssize_t i = 0; verify && rc > 0 && i < n; i++) {
            int vrc = out[i] ? verify_value(out[i]) : SIMDR_OK;
            if (vrc != SIMDR_OK) {
                for (Py_ssize_t j = 0; j < n; j++) {
                    simdr_entry_release(out[j]);
                    out[j] = NULL;
                }
                rc = vrc == SIMDR_ECHECKSUM ? SIMDR_ECORRUPT : vrc;
            }
        }
        Py_END_ALLOW_THREADS
    }
    pysimdr_store_leave(self);
    if (rc < 0) {
        pysimdr_raise((int)rc);
        goto done;
    }
    result = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item;
        if (!out[i]) {
            item = Py_NewRef(Py_None);
        } else if (result) {
            item = pysimdr_entry_new(out[i]);
            out[i] = NULL;
            if (!item) Py_CLEAR(result);
        } else {
            simdr_entry_release(out[i]);
            out[i] = NULL;
            continue;
        }
        if (result) PyList_SET_ITEM(result, i, item);
        else Py_DECREF(item);
    }
done:
    for (Py_ssize_t i = 0; i < filled; i++) pysimdr_bytes_release(&bufs[i]);
    PyMem_Free(ks);
    PyMem_Free(bufs);
    PyMem_Free(out);
    Py_DECREF(seq);
    return result;
}

/* 1 present, 0 absent, -1 error set. Checked, presence is a lookup and the
 * value's check (as the engine's checked simdr_exists), in a scope for a
 * short value, through a handle for a long one. */
static int store_contains(PySimdrStore *self, PyObject *key) {
    pysimdr_bytes k;
    if (pysimdr_key_held(key, &k) < 0) return -1;
    if (pysimdr_read_enter(self) < 0) {
        pysimdr_bytes_release_fast(&k);
        return -1;
    }
    simdr_read scope;
    const void *value = NULL;
    size_t len = 0;
    simdr_read_begin(self->store, &scope);
    int rc = simdr_read_get(&scope, k.ptr, k.len, &value, &len);
    int present = rc == SIMDR_OK && (!self->verify_reads || scope_serves(self, value, len));
    simdr_read_end(&scope);
    simdr_entry *e = NULL;
    if (rc == SIMDR_OK && !present) rc = simdr_get(self->store, k.ptr, k.len, &e);
    pysimdr_read_leave(self);
    pysimdr_bytes_release_fast(&k);
    if (present) return 1;
    if (rc == SIMDR_NOTFOUND) return 0;
    if (rc != SIMDR_OK) {
        pysimdr_raise(rc);
        return -1;
    }
    rc = verify_value_gil(e);
    simdr_entry_release(e);
    return rc < 0 ? -1 : 1;
}

static PyObject *store_exists(PySimdrStore *self, PyObject *key) {
    int rc = store_contains(self, key);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/* ---- deleting, renaming, copying ---- */

/* 1 deleted, 0 absent, -1 error set. */
static int delete_one(PySimdrStore *self, PyObject *key) {
    pysimdr_bytes k;
    if (pysimdr_key(key, &k) < 0) return -1;
    int rc = -100;
    if (enter_for_write(self) == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = simdr_delete(self->store, k.ptr, k.len, NULL);
        Py_END_ALLOW_THREADS
        pysimdr_store_leave(self);
    }
    pysimdr_bytes_release(&k);
    if (rc == SIMDR_OK) return 1;
    if (rc == SIMDR_NOTFOUND) return 0;
    if (rc != -100) pysimdr_raise(rc);
    return -1;
}

static PyObject *store_delete(PySimdrStore *self, PyObject *key) {
    int r = delete_one(self, key);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

static int store_ass_subscript(PySimdrStore *self, PyObject *key, PyObject *value) {
    if (value) return put_one(self, key, value);
    int r = delete_one(self, key);
    if (r == 0) PyErr_SetObject(PyExc_KeyError, key);
    return r == 1 ? 0 : -1;
}

static PyObject *store_rename(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "rename() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    pysimdr_bytes a, b;
    if (pysimdr_key(args[0], &a) < 0) return NULL;
    if (pysimdr_key(args[1], &b) < 0) {
        pysimdr_bytes_release(&a);
        return NULL;
    }
    PyObject *result = NULL;
    if (enter_for_write(self) == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = simdr_rename(self->store, a.ptr, a.len, b.ptr, b.len, NULL);
        Py_END_ALLOW_THREADS
        pysimdr_store_leave(self);
        if (rc == SIMDR_NOTFOUND) PyErr_SetObject(PyExc_KeyError, args[0]);
        else if (rc != SIMDR_OK) pysimdr_raise(rc);
        else result = Py_NewRef(Py_None);
    }
    pysimdr_bytes_release(&a);
    pysimdr_bytes_release(&b);
    return result;
}

static PyObject *transfer(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs,
                          int move) {
    const char *name = move ? "move" : "copy";
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 2 arguments (%zd given)", name, nargs);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[1], &PySimdrStore_Type)) {
        PyErr_Format(PyExc_TypeError, "%s(): target must be a DataStore, not %.100s", name,
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    PySimdrStore *dst = (PySimdrStore *)args[1];
    pysimdr_bytes k;
    if (pysimdr_key(args[0], &k) < 0) return NULL;
    PyObject *result = NULL;
    int rc = 1; /* not run: a Python exception is set (engine statuses are <= 0) */
    if (refuse_reentrant(dst) == 0 && enter_for_write(self) == 0) {
        if (pysimdr_store_enter(dst) == 0) {
            Py_BEGIN_ALLOW_THREADS
            rc = move ? simdr_move(self->store, k.ptr, k.len, dst->store, NULL)
                      : simdr_copy(self->store, k.ptr, k.len, dst->store, NULL);
            Py_END_ALLOW_THREADS
            pysimdr_store_leave(dst);
        }
        /* Left before the exception is made: making it may run the
         * collector, and a finalizer that closes this store would wait for
         * this very call. */
        pysimdr_store_leave(self);
    }
    if (rc == SIMDR_NOTFOUND) PyErr_SetObject(PyExc_KeyError, args[0]);
    else if (rc == SIMDR_OK) result = Py_NewRef(Py_None);
    else if (rc < 0) pysimdr_raise(rc);
    pysimdr_bytes_release(&k);
    return result;
}

static PyObject *store_copy(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs) {
    return transfer(self, args, nargs, 0);
}

static PyObject *store_move(PySimdrStore *self, PyObject *const *args, Py_ssize_t nargs) {
    return transfer(self, args, nargs, 1);
}

/* ---- size, maintenance ---- */

static Py_ssize_t store_length(PySimdrStore *self) {
    if (pysimdr_store_enter(self) < 0) return -1;
    uint64_t n = simdr_count(self->store);
    pysimdr_store_leave(self);
    return (Py_ssize_t)n;
}

static PyObject *store_count(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    Py_ssize_t n = store_length(self);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* Runs one whole-store engine call with the GIL released. */
static PyObject *run_unlocked(PySimdrStore *self, int (*fn)(simdr_store *), int writes) {
    if ((writes ? enter_for_write(self) : pysimdr_store_enter(self)) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fn(self->store);
    Py_END_ALLOW_THREADS
    pysimdr_store_leave(self);
    if (rc != SIMDR_OK) return pysimdr_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *store_compact(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    return run_unlocked(self, simdr_compact, 1);
}

static PyObject *store_release_memory(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    return run_unlocked(self, simdr_release_memory, 0);
}

static PyObject *store_sync(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    return run_unlocked(self, simdr_sync, 1);
}

static PyObject *store_refresh(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    if (pysimdr_store_enter(self) < 0) return NULL;
    uint64_t added = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = simdr_refresh(self->store, &added);
    Py_END_ALLOW_THREADS
    pysimdr_store_leave(self);
    if (rc != SIMDR_OK) return pysimdr_raise(rc);
    return PyLong_FromUnsignedLongLong(added);
}

/* simdr_check's problems, gathered without the GIL. */
typedef struct {
    simdr_check_issue *items;
    size_t n, cap;
    char (*what)[96];
    int oom;
} issue_list;

static int collect_issue(void *ctx, const simdr_check_issue *issue) {
    issue_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        simdr_check_issue *items = realloc(l->items, cap * sizeof *items);
        if (items) l->items = items;
        char(*what)[96] = realloc(l->what, cap * sizeof *what);
        if (what) l->what = what;
        if (!items || !what) {
            l->oom = 1;
            return 1;
        }
        l->cap = cap;
    }
    l->items[l->n] = *issue;
    snprintf(l->what[l->n], sizeof l->what[0], "%s", issue->what ? issue->what : "");
    l->n++;
    return 0;
}

static PyObject *store_check(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    /* The check takes the write lock, unless the engine sees that the
     * innermost stream reader of this thread already holds it. */
    if (streaming_here(self) == 2) {
        busy_streaming("check");
        return NULL;
    }
    if (pysimdr_store_enter(self) < 0) return NULL;
    issue_list issues = {0};
    simdr_check_report report = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = simdr_check(self->store, collect_issue, &issues, &report);
    Py_END_ALLOW_THREADS
    pysimdr_store_leave(self);
    PyObject *result = NULL;
    if (issues.oom) {
        PyErr_NoMemory();
    } else if (rc != SIMDR_OK && rc != SIMDR_ECORRUPT) {
        pysimdr_raise(rc);
    } else {
        PyObject *list = PyList_New((Py_ssize_t)issues.n);
        for (size_t i = 0; list && i < issues.n; i++) {
            simdr_check_issue *is = &issues.items[i];
            PyObject *d = Py_BuildValue("{sKsKsKsiss}", "offset", (unsigned long long)is->offset,
                                        "end", (unsigned long long)is->end, "key_hash",
                                        (unsigned long long)is->key_hash, "code", is->code,
                                        "what", issues.what[i]);
            if (!d) Py_CLEAR(list);
            else PyList_SET_ITEM(list, (Py_ssize_t)i, d);
        }
        if (list)
            result = Py_BuildValue("{sOsKsKsKsN}", "ok", rc == SIMDR_OK ? Py_True : Py_False,
                                   "entries", (unsigned long long)report.entries, "bad_entries",
                                   (unsigned long long)report.bad_entries, "bytes_checked",
                                   (unsigned long long)report.bytes_checked, "issues", list);
    }
    free(issues.items);
    free(issues.what);
    return result;
}

static PyObject *store_info(PySimdrStore *self, PyObject *unused) {
    (void)unused;
    if (pysimdr_store_enter(self) < 0) return NULL;
    simdr_recovery_info rec;
    int rrc = simdr_recovery(self->store, &rec);
    uint64_t count = simdr_count(self->store), size = simdr_file_size(self->store);
    uint64_t savings;
    /* A walk over every live entry (tens of milliseconds a million keys):
     * other threads run meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    savings = simdr_compaction_savings(self->store);
    Py_END_ALLOW_THREADS
    uint64_t index_bytes = simdr_index_bytes(self->store);
    int layout = simdr_layout_of(self->store);
    pysimdr_store_leave(self);
    if (rrc != SIMDR_OK) return pysimdr_raise(rrc);
    /* The saved tail's name is the path's with a suffix, in bytes that need
     * not be UTF-8: given back as the path was given, bytes for bytes, else
     * decoded as os.fsdecode does. */
    PyObject *saved = PyBytes_Check(self->path) ? PyBytes_FromString(rec.saved_path)
                                                : PyUnicode_DecodeFSDefault(rec.saved_path);
    if (!saved) return NULL;
    return Py_BuildValue(
        "{sOsKsKsKsKsssOsOsssss{sKsKsKsOsOsN}}", "path", self->path, "count",
        (unsigned long long)count, "file_size", (unsigned long long)size, "compaction_savings",
        (unsigned long long)savings, "index_bytes", (unsigned long long)index_bytes, "layout",
        layout == SIMDR_LAYOUT_UNALIGNED ? "unaligned" : "aligned", "readonly",
        self->readonly ? Py_True : Py_False, "verify_reads",
        self->verify_reads ? Py_True : Py_False, "durability",
        self->durability == SIMDR_SYNC_DATA ? "data" : "none", "append_mode",
        self->append_mode == SIMDR_APPEND_MAPPED   ? "mapped"
        : self->append_mode == SIMDR_APPEND_ZEROED ? "zeroed"
                                                   : "write",
        "recovery", "file_size",
        (unsigned long long)rec.file_size, "valid_size", (unsigned long long)rec.valid_size,
        "bytes_cut", (unsigned long long)rec.bytes_cut, "truncated",
        rec.truncated ? Py_True : Py_False, "zeros_only", rec.zeros_only ? Py_True : Py_False,
        "saved_path", saved);
}

/* ---- properties, repr ---- */

static PyObject *store_get_closed(PySimdrStore *self, void *c) {
    (void)c;
    pysimdr_adopted(self);
    pthread_mutex_lock(&self->mu);
    int closed = self->closing || !self->store;
    pthread_mutex_unlock(&self->mu);
    return PyBool_FromLong(closed);
}

static PyObject *store_get_path(PySimdrStore *self, void *c) {
    (void)c;
    return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *store_get_readonly(PySimdrStore *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->readonly);
}

static PyObject *store_repr(PySimdrStore *self) {
    PyObject *closed = store_get_closed(self, NULL);
    PyObject *r = PyUnicode_FromFormat("<simdr.DataStore path=%R%s%s>",
                                       self->path ? self->path : Py_None,
                                       self->readonly ? " readonly" : "",
                                       closed == Py_True ? " closed" : "");
    Py_XDECREF(closed);
    return r;
}

/* ---- iteration ---- */

static void iter_unlink(PySimdrIter *it) {
    if (!it->owner) return;
    if (it->prev) it->prev->next = it->next;
    else if (it->owner->iters == it) it->owner->iters = it->next;
    if (it->next) it->next->prev = it->prev;
    it->prev = it->next = NULL;
}

static PyObject *store_iter(PySimdrStore *self) {
    /* The object exists and is linked before the guard is left, so a close()
     * waiting for this call always finds the iterator and ends it first. */
    PySimdrIter *it = PyObject_New(PySimdrIter, &PySimdrIter_Type);
    if (!it) return NULL;
    it->owner = NULL;
    it->it = NULL;
    it->prev = it->next = NULL;
    if (pysimdr_store_enter(self) < 0) {
        Py_DECREF(it);
        return NULL;
    }
    simdr_iter *raw = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = simdr_iter_open(self->store, &raw);
    Py_END_ALLOW_THREADS
    if (rc == SIMDR_OK) {
        it->owner = (PySimdrStore *)Py_NewRef(self);
        it->it = raw;
        it->next = self->iters;
        if (self->iters) self->iters->prev = it;
        self->iters = it;
    }
    pysimdr_store_leave(self);
    if (rc != SIMDR_OK) {
        Py_DECREF(it);
        return pysimdr_raise(rc);
    }
    return (PyObject *)it;
}

static PyObject *iter_next(PySimdrIter *self) {
    if (!self->owner) return NULL; /* exhausted */
    PySimdrStore *owner = self->owner;
    int owner_verify = owner->verify_reads;
    if (pysimdr_read_enter(owner) < 0) return NULL;
    /* Entered, so close() has not begun and has not ended this iterator. */
    PyObject *result = NULL;
    const simdr_entry *borrowed;
    int rc = simdr_iter_next(self->it, &borrowed);
    int exhausted = 0;
    simdr_entry *own = NULL;
    if (rc == SIMDR_OK) {
        rc = simdr_entry_dup(borrowed, &own);
        if (rc != SIMDR_OK) pysimdr_raise(rc);
    } else if (rc == SIMDR_NOTFOUND) {
        simdr_iter_close(self->it);
        self->it = NULL;
        iter_unlink(self);
        exhausted = 1;
    } else {
        pysimdr_raise(rc); /* the iterator moved past the damage: next() goes on */
    }
    pysimdr_read_leave(owner);
    if (exhausted) Py_CLEAR(self->owner);
    /* Checked outside the guard: the copy is the store's no longer. A damaged
     * value raises; the iterator has moved past it, so next() goes on. */
    if (own) {
        if (owner_verify && verify_value_gil(own) < 0) simdr_entry_release(own);
        else result = pysimdr_entry_new(own);
    }
    return result;
}

static void iter_dealloc(PySimdrIter *self) {
    if (self->it) {
        simdr_iter_close(self->it);
        self->it = NULL;
    }
    iter_unlink(self);
    Py_CLEAR(self->owner);
    PyObject_Free(self);
}

PyTypeObject PySimdrIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simdr.EntryIterator",
    .tp_basicsize = sizeof(PySimdrIter),
    .tp_dealloc = (destructor)iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Iterates the live entries of a snapshot taken when iteration began: the newest\n"
              "version of each key once, newest first, as EntryHandle objects. A damaged entry\n"
              "raises CorruptError; calling next() again continues past it. close() of the\n"
              "store ends the iteration (ClosedError).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)iter_next,
};

/* ---- the type ---- */

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
#define FASTCALL_KW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

/* The one argument of a method of the Rust binding's, by position or by its
 * name there; a single positional argument takes no parsing. */
static inline int one_arg(const char *fname, const char *const *name, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames, PyObject **out) {
    if (nargs == 1 && !kwnames) {
        *out = args[0];
        return 0;
    }
    return pysimdr_args(fname, args, nargs, kwnames, name, 1, 1, out);
}

static const char *const key_name[] = {"key"}, *const items_name[] = {"items"};

/* Defines method `name` of the one parameter `param` (its keyword name) over fn. */
#define ONE_ARG_METHOD(name, param, fn)                                                    \
    static PyObject *store_##name##_kw(PySimdrStore *self, PyObject *const *args,           \
                                       Py_ssize_t nargs, PyObject *kwnames) {              \
        PyObject *arg;                                                                     \
        if (one_arg(#name, param, args, nargs, kwnames, &arg) < 0) return NULL;            \
        return fn(self, arg);                                                              \
    }

ONE_ARG_METHOD(read, key_name, store_read)
ONE_ARG_METHOD(read_entry, key_name, store_read_entry)
ONE_ARG_METHOD(read_stream, key_name, store_read_stream)
ONE_ARG_METHOD(delete, key_name, store_delete)
ONE_ARG_METHOD(exists, key_name, store_exists)
ONE_ARG_METHOD(batch_write, items_name, store_put_many)
ONE_ARG_METHOD(put_many, items_name, store_put_many)

static PyMethodDef store_methods[] = {
    {"write", FASTCALL_KW(store_write),
     "write($self, key, data)\n--\n\n"
     "Appends key = data (key: bytes-like or str; data: any non-empty bytes-like object)."},
    {"batch_write", FASTCALL_KW(store_batch_write_kw),
     "batch_write($self, items)\n--\n\n"
     "Appends many (key, value) pairs in one write; a later pair for the same key wins.\n"
     "One bad value refuses the whole batch. The same as put_many."},
    {"put_many", FASTCALL_KW(store_put_many_kw),
     "put_many($self, items)\n--\n\n"
     "Appends a mapping or an iterable of (key, value) pairs with one lock and one write.\n"
     "A value of 256 KiB or more that another thread could change (anything but bytes, an\n"
     "EntryHandle or a memoryview of them; read-only views too) is copied for the call."},
    {"write_stream", FASTCALL_KW(store_write_stream),
     "write_stream($self, key, reader)\n--\n\n"
     "Appends a value read from reader.read(size) until it returns b'' (constant memory).\n"
     "An exception raised by the reader is re-raised and nothing is kept. The reader must\n"
     "not write to or close this store."},
    {"read", FASTCALL_KW(store_read_kw),
     "read($self, key)\n--\n\nThe newest value of key copied into bytes, or None."},
    {"read_entry", FASTCALL_KW(store_read_entry_kw),
     "read_entry($self, key)\n--\n\n"
     "The newest value of key as a zero-copy EntryHandle, or None."},
    {"read_stream", FASTCALL_KW(store_read_stream_kw),
     "read_stream($self, key)\n--\n\nThe newest value of key as an EntryStream, or None."},
    {"get", FASTCALL(store_get),
     "get($self, key, default=None, /)\n--\n\nThe value of key as bytes, or default."},
    {"get_many", (PyCFunction)store_get_many, METH_O,
     "get_many($self, keys, /)\n--\n\n"
     "One EntryHandle (or None when absent) per key of the iterable keys, looked up together\n"
     "with their memory accesses overlapped (simdr_get_batch). A single str or bytes key is\n"
     "refused (TypeError): pass [key]."},
    {"delete", FASTCALL_KW(store_delete_kw),
     "delete($self, key)\n--\n\n"
     "Deletes key (appends a tombstone); an absent key is left alone (del db[key] raises\n"
     "KeyError instead)."},
    {"exists", FASTCALL_KW(store_exists_kw),
     "exists($self, key)\n--\n\nTrue if key is present (the same as key in store)."},
    {"rename", FASTCALL(store_rename),
     "rename($self, old_key, new_key, /)\n--\n\n"
     "Stores old_key's value under new_key and deletes old_key, in one append.\n"
     "KeyError if old_key is absent; InvalidArgumentError if the keys are equal."},
    {"copy", FASTCALL(store_copy),
     "copy($self, key, target, /)\n--\n\n"
     "Appends key's newest value to the DataStore target. KeyError if absent."},
    {"move", FASTCALL(store_move),
     "move($self, key, target, /)\n--\n\n"
     "copy(key, target), then deletes key from this store. KeyError if absent."},
    {"count", (PyCFunction)store_count, METH_NOARGS,
     "count($self, /)\n--\n\nThe number of live keys (the same as len(store))."},
    {"compact", (PyCFunction)store_compact, METH_NOARGS,
     "compact($self, /)\n--\n\n"
     "Rewrites the file with only the newest live entry of each key. Entry handles and views\n"
     "taken before stay valid; readers in other threads are not blocked."},
    {"release_memory", (PyCFunction)store_release_memory, METH_NOARGS,
     "release_memory($self, /)\n--\n\n"
     "Unmaps the store file's pages from this process: they stay in the page cache, and\n"
     "later reads map back what they touch. After a bulk load (an index growth reads every\n"
     "entry through the map) or a scan, when the process's resident size matters. Entry\n"
     "handles, memoryviews and numpy arrays taken before stay valid and unchanged."},
    {"check", (PyCFunction)store_check, METH_NOARGS,
     "check($self, /)\n--\n\n"
     "Verifies every entry (links, bounds, CRC-32). Returns a dict: ok, entries,\n"
     "bad_entries, bytes_checked, issues (a list of dicts: offset, end, key_hash, code, what)."},
    {"info", (PyCFunction)store_info, METH_NOARGS,
     "info($self, /)\n--\n\n"
     "A dict: path, count, file_size, compaction_savings, index_bytes, layout, readonly,\n"
     "verify_reads, durability and recovery (what the open found and cut: file_size,\n"
     "valid_size, bytes_cut, truncated, zeros_only (the bytes past the last entry were all\n"
     "zero: no entry was there), and saved_path, where the cut bytes were saved,\n"
     "bytes when the store was opened with a bytes path, else str)."},
    {"refresh", (PyCFunction)store_refresh, METH_NOARGS,
     "refresh($self, /)\n--\n\n"
     "Read-only stores: picks up entries another process appended since the open (or the\n"
     "last refresh) and returns how many. Writable stores: 0."},
    {"sync", (PyCFunction)store_sync, METH_NOARGS,
     "sync($self, /)\n--\n\nfdatasync the file now, whatever the durability mode."},
    {"close", (PyCFunction)store_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Closes the store; waits for calls running in other threads to finish, then ends open\n"
     "iterators. Later calls raise ClosedError. Entry handles and views stay valid.\n"
     "Closing twice is allowed. Ctrl-C interrupts the wait (KeyboardInterrupt); the\n"
     "store then stays open."},
    {"__enter__", (PyCFunction)store_enter_ctx, METH_NOARGS,
     "__enter__($self, /)\n--\n\nReturns the store (ClosedError if it is closed)."},
    {"__exit__", (PyCFunction)store_exit_ctx, METH_VARARGS,
     "__exit__($self, *exc_info, /)\n--\n\nCloses the store; exceptions propagate."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef store_getset[] = {
    {"closed", (getter)store_get_closed, NULL, "True once close() was called.", NULL},
    {"path", (getter)store_get_path, NULL, "The path the store was opened with.", NULL},
    {"readonly", (getter)store_get_readonly, NULL, "True for a read-only open.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods store_as_mapping = {
    .mp_length = (lenfunc)store_length,
    .mp_subscript = (binaryfunc)store_subscript,
    .mp_ass_subscript = (objobjargproc)store_ass_subscript,
};

static PySequenceMethods store_as_sequence = {
    .sq_contains = (objobjproc)store_contains,
};

PyTypeObject PySimdrStore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simdr.DataStore",
    .tp_basicsize = sizeof(PySimdrStore),
    .tp_dealloc = (destructor)store_dealloc,
    .tp_repr = (reprfunc)store_repr,
    .tp_as_sequence = &store_as_sequence,
    .tp_as_mapping = &store_as_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc =
        "DataStore(path, readonly=False, create=True, durability='none', layout='aligned', *,\n"
        "          repair=True, salvage=False, use_hint=True, verify_reads=True,\n"
        "          append_mode='write', expected_keys=0)\n"
        "--\n\n"
        "An open simd-r-drive store file: an append-only key/value store whose reads are\n"
        "zero-copy views of the file's memory map.\n\n"
        "path: str, bytes or os.PathLike. readonly: never modify the file, take no lock (other\n"
        "processes may write; see refresh()). create=False: the file must exist.\n"
        "durability: 'none' (page cache; survives a process kill) or 'data' (fdatasync before\n"
        "each write returns). layout: 'aligned' (64-byte payloads, simd-r-drive >= 0.15) or\n"
        "'unaligned' (<= 0.13); new files only. repair: cut a torn tail on a writable open\n"
        "(saved beside the file). salvage: read-only opens serve the sound prefix of a store\n"
        "damaged in the middle. use_hint: keep/load the index in '<path>.hint'.\n"
        "verify_reads: every read checks the value's CRC-32 before handing it out\n"
        "(CorruptError for damaged bytes); it reads the whole value, so a view of a large one\n"
        "costs a pass over it. False skips the check (EntryHandle.is_valid_checksum() does it\n"
        "on demand): a view of any size then costs the same few microseconds.\n"
        "append_mode: 'write' (one system call per write) or 'mapped' (writes copied into a\n"
        "writable shared mapping of preallocated space, no system call per put; the file is\n"
        "longer than its last entry until sync() or close(), which other readers, the Rust\n"
        "crate among them, should not open meanwhile; docs/RELIABILITY.md, \"Mapped appends\")\n"
        "or 'zeroed' (writes as 'write', into zeros written ahead of the last entry and kept\n"
        "by sync(): with durability='data' each sync then changes no file length, which\n"
        "makes it cheaper on ext4 and XFS; the file is longer than its last entry until\n"
        "close(), as with 'mapped').\n"
        "expected_keys: writable opens size the in-memory index for this many keys at once\n"
        "(0: start small and grow), so a bulk load of a known size never stops to grow it; an\n"
        "overestimate costs address space, not memory (the engine's expected_keys).\n\n"
        "Keys are bytes-like or str (UTF-8); values any non-empty bytes-like object. The file\n"
        "stores only a key's XXH3-64 hash, so iteration yields entries, not keys.\n"
        "Mapping protocol: db[k] (bytes; KeyError), db[k] = v, del db[k], k in db, len(db).\n"
        "Thread-safe: any number of threads may read and write one DataStore.",
    .tp_traverse = (traverseproc)store_traverse,
    .tp_weaklistoffset = offsetof(PySimdrStore, weakrefs),
    .tp_iter = (getiterfunc)store_iter,
    .tp_methods = store_methods,
    .tp_getset = store_getset,
    .tp_init = (initproc)store_init,
    .tp_new = store_new,
};
