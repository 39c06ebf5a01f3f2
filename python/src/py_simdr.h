/*
 * py_simdr.h - declarations shared by the files of the _simdr CPython
 * extension: the object layouts, the exception table, argument conversion
 * and the close guard. The extension uses only the public simdr.h.
 */
#ifndef PY_SIMDR_H
#define PY_SIMDR_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

#include "simdr.h"

/* Values at least this large are copied with the GIL released: a changeable
 * one as it is written (py_module.c, pysimdr_value). */
#define PYSIMDR_NOGIL_COPY (256 * 1024)

typedef struct PySimdrIter PySimdrIter;

/*
 * A DataStore. The engine forbids simdr_close() while another call on the
 * store runs, so every call counts itself in `users` (store_enter/leave) and
 * close() sets `closing`, waits (GIL released) until `users` is 0, closes the
 * open iterators and only then the store; a close() that finds another one
 * running waits for it to finish. `mu` is never held while waiting
 * for the GIL, so the two locks cannot deadlock.
 */
enum { PYSIMDR_CLOSING = 1, PYSIMDR_CLOSED = 2 };

typedef struct {
    PyObject_HEAD
    simdr_store *store;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    Py_ssize_t users;
    int closing;           /* 0 open, PYSIMDR_CLOSING, then PYSIMDR_CLOSED once the file is closed */
    int readonly;
    int durability;
    int append_mode;       /* SIMDR_APPEND_WRITE or SIMDR_APPEND_MAPPED (writable opens) */
    int verify_reads;      /* the binding checks each value's CRC (py_store.c) */
    PyObject *path;        /* the path as given, after os.fspath */
    PySimdrIter *iters;    /* live iterators, closed before the store */
    unsigned long forks;   /* the process's fork count when mu, idle and users were last
                              valid here (py_store.c, "use after fork") */
    PyObject *weakrefs;
} PySimdrStore;

/* An EntryHandle owns one simdr_entry, released when the handle dies; the
 * buffers it exports keep the handle alive, so views never dangle. */
typedef struct {
    PyObject_HEAD
    simdr_entry *entry;
    const char *data;
    uint64_t size;
    PyObject *weakrefs;
} PySimdrEntry;

struct PySimdrIter {
    PyObject_HEAD
    PySimdrStore *owner;   /* strong reference */
    simdr_iter *it;        /* NULL once exhausted or the store closed */
    PySimdrIter *prev, *next;
};

/* A key or value borrowed from a Python object for the length of a call.
 * It holds its own reference (through the buffer view, or `ref` for bytes and
 * str), so the bytes stay put even if another thread empties the list they
 * came from while the GIL is released. */
typedef struct {
    Py_buffer view;
    int has_view;
    int changeable;    /* values: borrowed bytes another thread may change (pysimdr_value) */
    PyObject *ref;
    const char *ptr;
    size_t len;
} pysimdr_bytes;

extern PyTypeObject PySimdrStore_Type;
extern PyTypeObject PySimdrEntry_Type;
extern PyTypeObject PySimdrStream_Type;
extern PyTypeObject PySimdrIter_Type;
extern PyTypeObject PySimdrHasher_Type;

/* Exceptions (module globals, created once at import). */
extern PyObject *PySimdr_Error, *PySimdr_ClosedError, *PySimdr_InvalidArgumentError;

/* Raises the exception class for an engine status, with the thread's
 * simdr_last_error() text and the code in the `code` attribute. */
PyObject *pysimdr_raise(int code);
/* The same with a message of the binding's own (printf format). */
PyObject *pysimdr_raise_message(int code, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int pysimdr_init_errors(PyObject *module);
/* Builds the table of the binding's in-line CRC-32 (py_store.c). */
void pysimdr_init_crc(void);

/* Keys: bytes-like (C-contiguous, no object pointers) or str (UTF-8).
 * Values: bytes-like only; one whose bytes may change (anything but bytes,
 * an EntryHandle or a memoryview of either, read-only or not) is copied when
 * shorter than PYSIMDR_NOGIL_COPY (py_module.c says why); a longer one stays
 * borrowed with `changeable` set for the caller to copy, without the GIL,
 * before the engine sees it. */
int pysimdr_key(PyObject *obj, pysimdr_bytes *out);
int pysimdr_value(PyObject *obj, pysimdr_bytes *out);
void pysimdr_bytes_release(pysimdr_bytes *b);
/* A C-contiguous buffer of obj's bytes, refusing buffers of Python object
 * pointers (TypeError naming `what`). */
int pysimdr_get_buffer(PyObject *obj, Py_buffer *view, const char *what);

/*
 * Arguments of a METH_FASTCALL | METH_KEYWORDS method taking up to n
 * parameters, by position or by the names in names (the Rust binding's
 * methods are PyO3 functions, whose parameters have names): out[i] is the
 * argument for names[i] (borrowed), NULL for an optional one not given.
 * The first `required` are required. 0, or -1 with TypeError set.
 */
int pysimdr_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, Py_ssize_t required, Py_ssize_t n, PyObject **out);

/* Takes ownership of entry (released even on failure). */
PyObject *pysimdr_entry_new(simdr_entry *entry);
/* An EntryHandle without an entry yet (reused when one is free): a lookup
 * takes it before it starts, fills it when it finds the key, and drops it
 * (Py_DECREF) when it does not. */
PySimdrEntry *pysimdr_entry_alloc(void);
/* Gives h its entry, whose data and size the caller already has. */
static inline void pysimdr_entry_fill(PySimdrEntry *h, simdr_entry *entry, const void *data,
                                      uint64_t size) {
    h->entry = entry;
    h->data = data;
    h->size = size;
}
PyObject *pysimdr_stream_new(simdr_entry *entry);

/* Counts forks in the children (pthread_atfork), once at import. */
void pysimdr_watch_forks(void);
extern unsigned long pysimdr_forks_seen;
/* Makes s usable in a child forked since it was last used (py_store.c, "use
 * after fork"); GIL held. */
void pysimdr_adopt_after_fork(PySimdrStore *s);
static inline void pysimdr_adopted(PySimdrStore *s) {
    if (s->forks != pysimdr_forks_seen) pysimdr_adopt_after_fork(s);
}

/* The close guard: enter fails with ClosedError once close() began. */
int pysimdr_store_enter(PySimdrStore *s);
void pysimdr_store_leave(PySimdrStore *s);
int pysimdr_store_closed_error(PySimdrStore *s);

/*
 * The close guard of a call that holds the GIL from this check until its
 * engine call has returned (single lookups, iteration steps). close() flips
 * `closing` with the GIL held and only closes the store after taking the GIL
 * back, so a call that saw the store open under the GIL, and does not let
 * the GIL go before its engine call returns, cannot overlap simdr_close():
 * counting itself in `users` (a mutex lock and unlock, a third of a cached
 * lookup) buys nothing there. Nothing between the check and the end of the
 * engine call may run Python code (no allocation of GC-tracked objects, no
 * buffer export, no callbacks). Without a GIL (free-threaded builds) these
 * calls count themselves like every other.
 */
#ifdef Py_GIL_DISABLED
#define pysimdr_read_enter(s) pysimdr_store_enter(s)
#define pysimdr_read_leave(s) pysimdr_store_leave(s)
#else
static inline int pysimdr_read_enter(PySimdrStore *s) {
    pysimdr_adopted(s);
    if (s->closing || !s->store) return pysimdr_store_closed_error(s);
    return 0;
}
#define pysimdr_read_leave(s) ((void)(s))
#endif

/*
 * A key for a call that keeps the GIL until it no longer needs the bytes:
 * the caller's reference to the argument keeps them alive, so bytes and str
 * are used in place without a reference of their own (other objects go
 * through pysimdr_key). Released with pysimdr_bytes_release as usual.
 */
static inline int pysimdr_key_held(PyObject *obj, pysimdr_bytes *out) {
    if (PyBytes_CheckExact(obj)) {
        out->has_view = 0;
        out->ref = NULL;
        out->ptr = PyBytes_AS_STRING(obj);
        out->len = (size_t)PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(obj, &n);
        if (!p) return -1;
        out->has_view = 0;
        out->ref = NULL;
        out->ptr = p;
        out->len = (size_t)n;
        return 0;
    }
    return pysimdr_key(obj, out);
}

static inline void pysimdr_bytes_release_fast(pysimdr_bytes *b) {
    if (b->has_view || b->ref) pysimdr_bytes_release(b);
}

#endif /* PY_SIMDR_H */
