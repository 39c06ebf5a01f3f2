/*
 * py_module.c - the _simdr module: the exception hierarchy mapped from the
 * engine's status codes, conversion of keys and values from Python objects,
 * NamespaceHasher, and the module-level functions (open, hash_key).
 */
#include "py_simdr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

PyObject *PySimdr_Error, *PySimdr_ClosedError, *PySimdr_InvalidArgumentError;

/* One row per exception class; `code` is the engine status it stands for
 * (0 for classes no status maps to directly). */
typedef struct {
    const char *name;
    int code;
    const char *parent;   /* another row's name, or NULL for Error */
    PyObject **builtin;   /* an extra built-in base, or NULL */
    const char *doc;
    PyObject *type;
} error_row;

static error_row error_rows[] = {
    {"InvalidArgumentError", SIMDR_EINVAL, NULL, &PyExc_ValueError,
     "A bad argument: an empty value, the value b'\\x00', equal keys for rename, ...", NULL},
    {"StoreIOError", SIMDR_EIO, NULL, &PyExc_OSError,
     "The operating system reported an I/O error.", NULL},
    {"DiskFullError", SIMDR_ENOSPC, NULL, &PyExc_OSError,
     "The disk is full or the file size limit was reached; nothing was appended.", NULL},
    {"CorruptError", SIMDR_ECORRUPT, NULL, NULL,
     "The file is a damaged store that is not safely repairable.", NULL},
    {"NotAStoreError", SIMDR_ENOTSTORE, NULL, NULL,
     "The file is not a simd-r-drive store (it was not modified).", NULL},
    {"LockedError", SIMDR_ELOCKED, NULL, NULL,
     "Another process has the file open for writing.", NULL},
    {"PermissionDeniedError", SIMDR_EACCES, NULL, &PyExc_PermissionError,
     "Permission denied.", NULL},
    {"OutOfMemoryError", SIMDR_ENOMEM, NULL, &PyExc_MemoryError,
     "Out of memory or address space.", NULL},
    {"ReadOnlyError", SIMDR_EREADONLY, NULL, NULL,
     "A write was attempted on a store opened read-only.", NULL},
    {"ChecksumError", SIMDR_ECHECKSUM, "CorruptError", NULL,
     "An entry's CRC-32 does not match its payload.", NULL},
    {"StoreNotFoundError", SIMDR_ENOENT, NULL, &PyExc_FileNotFoundError,
     "The file does not exist (read-only or create=False open).", NULL},
    {"TooBigError", SIMDR_ETOOBIG, NULL, NULL,
     "An offset or size beyond what the engine supports.", NULL},
    {"FailedError", SIMDR_EFAILED, NULL, NULL,
     "An earlier write failure could not be undone; close and reopen the store.", NULL},
    {"ClosedError", 0, NULL, &PyExc_ValueError,
     "The store was closed (or never opened).", NULL},
};

#define N_ERROR_ROWS (sizeof error_rows / sizeof error_rows[0])

static PyObject *error_type_for(int code) {
    for (size_t i = 0; i < N_ERROR_ROWS; i++)
        if (error_rows[i].code == code && code != 0) return error_rows[i].type;
    return PySimdr_Error;
}

static PyObject *row_type(const char *name) {
    for (size_t i = 0; i < N_ERROR_ROWS; i++)
        if (strcmp(error_rows[i].name, name) == 0) return error_rows[i].type;
    return NULL;
}

/* Error is an OSError: the Rust crate's binding raises OSError for every
 * failure of opening a store and of its writes, and code written for it
 * catches that (a bad argument stays a ValueError as well, as
 * io.UnsupportedOperation is both). */
int pysimdr_init_errors(PyObject *module) {
    /* Every Error has a code: a class default for the errors the binding
     * raises itself (a closed store, a call from inside write_stream's
     * reader, a reader that returned None), the engine's status otherwise. */
    PyObject *defaults = Py_BuildValue("{s:i}", "code", SIMDR_EINVAL);
    if (!defaults) return -1;
    PySimdr_Error = PyErr_NewExceptionWithDoc(
        "simdr.Error",
        "Base class of every error the engine reports, an OSError (as the Rust crate's\n"
        "binding raises). The `code` attribute holds the engine's status (a negative\n"
        "SIMDR_E* value; -2, SIMDR_EINVAL, for the errors the binding raises itself:\n"
        "a closed store, a call from inside write_stream's reader); the message is the\n"
        "engine's text.",
        PyExc_OSError, defaults);
    Py_DECREF(defaults);
    if (!PySimdr_Error || PyModule_AddObjectRef(module, "Error", PySimdr_Error) < 0) return -1;
    for (size_t i = 0; i < N_ERROR_ROWS; i++) {
        error_row *r = &error_rows[i];
        PyObject *parent = r->parent ? row_type(r->parent) : PySimdr_Error;
        PyObject *bases = r->builtin ? PyTuple_Pack(2, parent, *r->builtin)
                                     : PyTuple_Pack(1, parent);
        if (!bases) return -1;
        char qualified[64];
        snprintf(qualified, sizeof qualified, "simdr.%s", r->name);
        r->type = PyErr_NewExceptionWithDoc(qualified, r->doc, bases, NULL);
        Py_DECREF(bases);
        if (!r->type || PyModule_AddObjectRef(module, r->name, r->type) < 0) return -1;
    }
    PySimdr_ClosedError = row_type("ClosedError");
    PySimdr_InvalidArgumentError = row_type("InvalidArgumentError");
    return 0;
}

PyObject *pysimdr_raise(int code) {
    const char *msg = simdr_last_error();
    if (!msg || !*msg) msg = simdr_strerror(code);
    return pysimdr_raise_message(code, "%s", msg);
}

PyObject *pysimdr_raise_message(int code, const char *format, ...) {
    char msg[4400];
    va_list ap;
    va_start(ap, format);
    vsnprintf(msg, sizeof msg, format, ap);
    va_end(ap);
    PyObject *type = error_type_for(code);
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (!text) return NULL;
    PyObject *exc = PyObject_CallOneArg(type, text);
    Py_DECREF(text);
    if (!exc) return NULL;
    PyObject *code_obj = PyLong_FromLong(code);
    if (!code_obj || PyObject_SetAttrString(exc, "code", code_obj) < 0) {
        Py_XDECREF(code_obj);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code_obj);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

/* ---- keys and values ---- */

/* 1 if a PEP 3118 format string has an item of type 'O' (a PyObject *),
 * outside the :field names: of a struct. */
static int format_holds_objects(const char *format) {
    if (!format) return 0;
    for (int in_name = 0; *format; format++) {
        if (*format == ':') in_name = !in_name;
        else if (!in_name && *format == 'O') return 1;
    }
    return 0;
}

/*
 * A C-contiguous buffer of obj. The format is asked for too, to refuse
 * buffers of Python object pointers (numpy dtype=object, ctypes py_object):
 * their bytes are addresses of objects of this process, which no reader of
 * the file, this process included once they are freed, could make sense
 * of, and nothing would tell it. The format comes with the shape (PyBUF_ND,
 * still C-contiguous without strides): memoryview refuses a format without
 * one. An exporter that refuses to describe its format and shape is asked
 * again for its bytes alone.
 */
/* 1 when obj exports its bytes only with strides (a numpy slice with a step,
 * a Fortran-ordered array, memoryview(b)[::2]): they do not form one C-ordered
 * run the engine could take. Leaves no exception set. */
static int strided_only(PyObject *obj) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    int strided = !PyBuffer_IsContiguous(&view, 'C');
    PyBuffer_Release(&view);
    return strided;
}

int pysimdr_get_buffer(PyObject *obj, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_ND | PyBUF_FORMAT) < 0) {
        /* The exporter's refusal of a strided buffer is a ValueError
         * (numpy) or a BufferError (memoryview): either way the argument is
         * of the wrong kind, a TypeError as for any other non-bytes. */
        if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (strided_only(obj)) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            PyErr_Format(PyExc_TypeError,
                         "%s is a buffer whose bytes are not C-contiguous (a strided %.100s): "
                         "pass bytes(x) or numpy.ascontiguousarray(x)",
                         what, Py_TYPE(obj)->tp_name);
            return -1;
        }
        if (!PyErr_GivenExceptionMatches(type, PyExc_BufferError)) {
            PyErr_Restore(type, value, tb);
            return -1;
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
    }
    if (format_holds_objects(view->format)) {
        PyErr_Format(PyExc_TypeError,
                     "%s is a buffer of Python object pointers (format '%.20s' of %.100s), "
                     "not of bytes: store a serialized form of the objects instead",
                     what, view->format, Py_TYPE(obj)->tp_name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int borrow_buffer(PyObject *obj, pysimdr_bytes *out, const char *what) {
    if (pysimdr_get_buffer(obj, &out->view, what) < 0) return -1;
    out->has_view = 1;
    out->ptr = out->view.buf;
    out->len = (size_t)out->view.len;
    return 0;
}

/* bytes are immutable: with a reference held their storage can be used
 * directly, even with the GIL released (cheaper than a buffer view). */
static int borrow_bytes(PyObject *obj, pysimdr_bytes *out) {
    out->ref = Py_NewRef(obj);
    out->ptr = PyBytes_AS_STRING(obj);
    out->len = (size_t)PyBytes_GET_SIZE(obj);
    return 0;
}

int pysimdr_key(PyObject *obj, pysimdr_bytes *out) {
    out->has_view = 0;
    out->ref = NULL;
    if (PyBytes_CheckExact(obj)) return borrow_bytes(obj, out);
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(obj, &n);
        if (!p) return -1;
        out->ref = Py_NewRef(obj); /* the UTF-8 form lives as long as the str */
        out->ptr = p;
        out->len = (size_t)n;
        return 0;
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "key must be bytes, bytearray, memoryview or str, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return borrow_buffer(obj, out, "key");
}

/* 1 if obj's bytes cannot change while it is borrowed: bytes, a stored value
 * (EntryHandle: the engine never changes mapped bytes a handle holds), or a
 * memoryview of either. */
static int bytes_fixed(PyObject *obj) {
    if (PyMemoryView_Check(obj)) {
        obj = PyMemoryView_GET_BASE(obj);
        if (!obj) return 0;
    }
    return PyBytes_Check(obj) || PyObject_TypeCheck(obj, &PySimdrEntry_Type);
}

/*
 * A buffer may change while the engine, without the GIL, computes the
 * value's CRC and then writes the value (two passes over it): the stored
 * bytes would then disagree with their stored CRC, an entry that reads back
 * as damaged. That a buffer is read-only says nothing of that: a read-only
 * numpy array or memoryview may look at memory another thread changes
 * through a writable one, so only bytes that provably cannot change
 * (bytes_fixed) are used in place. Any other value shorter than
 * PYSIMDR_NOGIL_COPY is copied into a bytes object of its own here (with the
 * GIL held); a longer one is left borrowed with `changeable` set, for the
 * caller to write through a copy of its own made without the GIL (put_one
 * streams it through a bounded buffer, a batch copies it whole). A change
 * made during a copy can still mix old and new bytes, as any unsynchronised
 * use of the buffer would, but what is stored always matches its checksum.
 */
int pysimdr_value(PyObject *obj, pysimdr_bytes *out) {
    out->has_view = 0;
    out->ref = NULL;
    out->changeable = 0;
    if (PyBytes_CheckExact(obj)) return borrow_bytes(obj, out);
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "value must be a bytes-like object, not %.100s%s",
                     Py_TYPE(obj)->tp_name,
                     PyUnicode_Check(obj) ? " (encode str values first)" : "");
        return -1;
    }
    if (borrow_buffer(obj, out, "value") < 0) return -1;
    if (bytes_fixed(obj)) return 0;
    if (out->len >= PYSIMDR_NOGIL_COPY) {
        out->changeable = 1;
        return 0;
    }
    PyObject *copy = PyBytes_FromStringAndSize(out->ptr, (Py_ssize_t)out->len);
    pysimdr_bytes_release(out);
    if (!copy) return -1;
    out->ref = copy;
    out->ptr = PyBytes_AS_STRING(copy);
    out->len = (size_t)PyBytes_GET_SIZE(copy);
    return 0;
}

void pysimdr_bytes_release(pysimdr_bytes *b) {
    if (b->has_view) PyBuffer_Release(&b->view);
    b->has_view = 0;
    Py_CLEAR(b->ref);
}

/* ---- arguments by position or by name ---- */

int pysimdr_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, Py_ssize_t required, Py_ssize_t n, PyObject **out) {
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(name, names[i]) != 0) i++;
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %zd)", fname,
                         names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* ---- NamespaceHasher ---- */

typedef struct {
    PyObject_HEAD
    PyObject *prefix; /* bytes */
} PySimdrHasher;

static int hasher_init(PySimdrHasher *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"prefix", NULL};
    PyObject *prefix;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:NamespaceHasher", kwlist, &prefix)) return -1;
    pysimdr_bytes p;
    if (pysimdr_key(prefix, &p) < 0) return -1;
    PyObject *copy = PyBytes_FromStringAndSize(p.ptr, (Py_ssize_t)p.len);
    pysimdr_bytes_release(&p);
    if (!copy) return -1;
    Py_XSETREF(self->prefix, copy);
    return 0;
}

static void hasher_dealloc(PySimdrHasher *self) {
    Py_XDECREF(self->prefix);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *hasher_namespace(PySimdrHasher *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    static const char *const names[] = {"key"};
    PyObject *key;
    if (pysimdr_args("namespace", args, nargs, kwnames, names, 1, 1, &key) < 0) return NULL;
    if (!self->prefix) {
        PyErr_SetString(PyExc_TypeError, "NamespaceHasher was not initialised");
        return NULL;
    }
    pysimdr_bytes k;
    if (pysimdr_key(key, &k) < 0) return NULL;
    uint8_t out[16];
    simdr_namespaced_key(PyBytes_AS_STRING(self->prefix), (size_t)PyBytes_GET_SIZE(self->prefix),
                         k.ptr, k.len, out);
    pysimdr_bytes_release(&k);
    return PyBytes_FromStringAndSize((const char *)out, sizeof out);
}

static PyObject *hasher_get_prefix(PySimdrHasher *self, void *closure) {
    (void)closure;
    if (!self->prefix) Py_RETURN_NONE;
    return Py_NewRef(self->prefix);
}

static PyMethodDef hasher_methods[] = {
    {"namespace", (PyCFunction)(void (*)(void))hasher_namespace, METH_FASTCALL | METH_KEYWORDS,
     "namespace($self, key)\n--\n\n"
     "The 16-byte namespaced key: XXH3-64 of the prefix then XXH3-64 of key, both\n"
     "little-endian (the Rust crate's NamespaceHasher). Use it as an ordinary key."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hasher_getset[] = {
    {"prefix", (getter)hasher_get_prefix, NULL, "The namespace prefix (bytes).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PySimdrHasher_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simdr.NamespaceHasher",
    .tp_basicsize = sizeof(PySimdrHasher),
    .tp_dealloc = (destructor)hasher_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "NamespaceHasher(prefix)\n--\n\n"
              "Builds keys scoped to a namespace, equal to the Rust crate's NamespaceHasher:\n"
              "namespace(key) returns XXH3-64(prefix) + XXH3-64(key), 16 bytes.",
    .tp_methods = hasher_methods,
    .tp_getset = hasher_getset,
    .tp_init = (initproc)hasher_init,
    .tp_new = PyType_GenericNew,
};

/* ---- module functions ---- */

static PyObject *module_open(PyObject *module, PyObject *args, PyObject *kwds) {
    (void)module;
    return PyObject_Call((PyObject *)&PySimdrStore_Type, args, kwds);
}

static PyObject *module_hash_key(PyObject *module, PyObject *key) {
    (void)module;
    pysimdr_bytes k;
    if (pysimdr_key(key, &k) < 0) return NULL;
    uint64_t h = simdr_hash_key(k.ptr, k.len);
    pysimdr_bytes_release(&k);
    return PyLong_FromUnsignedLongLong(h);
}

static PyObject *module_engine_version(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(simdr_version());
}

static PyMethodDef module_methods[] = {
    {"open", (PyCFunction)(void (*)(void))module_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, readonly=False, create=True, durability='none', layout='aligned', *,\n"
     "     repair=True, salvage=False, use_hint=True, verify_reads=True,\n"
     "     append_mode='write', expected_keys=0)\n--\n\n"
     "Opens (or creates) the store at path and returns a DataStore; the same as\n"
     "DataStore(path, ...). See DataStore for the options."},
    {"hash_key", (PyCFunction)module_hash_key, METH_O,
     "hash_key($module, key, /)\n--\n\n"
     "XXH3-64 (seed 0) of key: the only thing the file stores of a key (EntryHandle.key_hash)."},
    {"engine_version", (PyCFunction)module_engine_version, METH_NOARGS,
     "engine_version($module, /)\n--\n\nThe version string of the linked simdr engine."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef simdr_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "simdr._simdr",
    .m_doc = "The C core of the simdr package; import simdr instead.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_type(PyObject *module, PyTypeObject *type, const char *name) {
    if (PyType_Ready(type) < 0) return -1;
    return PyModule_AddObjectRef(module, name, (PyObject *)type);
}

PyMODINIT_FUNC PyInit__simdr(void) {
    pysimdr_init_crc();
    pysimdr_watch_forks();
    PyObject *m = PyModule_Create(&simdr_module);
    if (!m) return NULL;
    if (pysimdr_init_errors(m) < 0 || add_type(m, &PySimdrStore_Type, "DataStore") < 0 ||
        add_type(m, &PySimdrEntry_Type, "EntryHandle") < 0 ||
        add_type(m, &PySimdrStream_Type, "EntryStream") < 0 ||
        add_type(m, &PySimdrIter_Type, "EntryIterator") < 0 ||
        add_type(m, &PySimdrHasher_Type, "NamespaceHasher") < 0 ||
        PyModule_AddIntConstant(m, "METADATA_SIZE", 20) < 0 ||
        PyModule_AddStringConstant(m, "ENGINE_VERSION", simdr_version()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
