/*
 * py_entry.c - EntryHandle (a zero-copy view of one stored value, exporting
 * the buffer protocol over simdr_entry_data) and EntryStream (a value read in
 * pieces). Both own a simdr_entry; the engine's lifetime rule keeps its bytes
 * mapped until the entry is released, whatever happens to the store, so
 * neither needs the DataStore to stay open.
 */
#include "py_simdr.h"

#include <stdio.h>
#include <string.h>

/* Bytes of metadata after each payload (FORMAT.md): key hash, prev offset, CRC. */
#define ENTRY_METADATA_SIZE 20

/* ---- EntryHandle ---- */

/*
 * Released EntryHandle objects are kept for reuse (as CPython keeps floats
 * and tuples): a lookup loop that drops each handle before the next get
 * then takes its object from here instead of the object allocator, and gives
 * it back without freeing it (about 60 instructions less per get). The list
 * is guarded by the GIL; without one (free-threaded builds) every object is
 * allocated and freed.
 */
#ifndef Py_GIL_DISABLED
#define ENTRY_FREELIST_MAX 32
static PySimdrEntry *entry_freelist[ENTRY_FREELIST_MAX];
static int entry_freelist_len;
#endif

PySimdrEntry *pysimdr_entry_alloc(void) {
#ifndef Py_GIL_DISABLED
    if (entry_freelist_len > 0) {
        PySimdrEntry *self = entry_freelist[--entry_freelist_len];
        (void)PyObject_Init((PyObject *)self, &PySimdrEntry_Type);
        return self;
    }
#endif
    PySimdrEntry *self = PyObject_New(PySimdrEntry, &PySimdrEntry_Type);
    if (!self) return NULL;
    self->entry = NULL;
    self->data = NULL;
    self->size = 0;
    self->weakrefs = NULL;
    return self;
}

PyObject *pysimdr_entry_new(simdr_entry *entry) {
    PySimdrEntry *self = pysimdr_entry_alloc();
    if (!self) {
        simdr_entry_release(entry);
        return NULL;
    }
    pysimdr_entry_fill(self, entry, simdr_entry_data(entry), simdr_entry_size(entry));
    return (PyObject *)self;
}

static void entry_dealloc(PySimdrEntry *self) {
    if (self->weakrefs) {
        PyObject_ClearWeakRefs((PyObject *)self);
        self->weakrefs = NULL;
    }
    simdr_entry_release(self->entry);
    self->entry = NULL;
#ifndef Py_GIL_DISABLED
    if (entry_freelist_len < ENTRY_FREELIST_MAX) {
        entry_freelist[entry_freelist_len++] = self;
        return;
    }
#endif
    PyObject_Free(self);
}

static int entry_getbuffer(PySimdrEntry *self, Py_buffer *view, int flags) {
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError,
                        "EntryHandle is read-only: its bytes are the store file's map");
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->data, (Py_ssize_t)self->size,
                             1, flags);
}

static PyBufferProcs entry_as_buffer = {
    .bf_getbuffer = (getbufferproc)entry_getbuffer,
};

static Py_ssize_t entry_length(PySimdrEntry *self) { return (Py_ssize_t)self->size; }

/* Fills a new bytes object of size bytes from data: without the GIL from
 * PYSIMDR_NOGIL_COPY up, so any state deciding what data is must be settled
 * before the call. */
static void copy_into(PyObject *out, const char *data, uint64_t size) {
    char *dst = PyBytes_AS_STRING(out);
    if (size >= PYSIMDR_NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, data, size);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(dst, data, size);
    }
}

static PyObject *copy_out(const char *data, uint64_t size) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out) copy_into(out, data, size);
    return out;
}

static PyObject *entry_as_memoryview(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    return PyMemoryView_FromObject((PyObject *)self);
}

static PyObject *entry_as_slice(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    return copy_out(self->data, self->size);
}

static PyObject *entry_raw_checksum(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    uint32_t c = simdr_entry_checksum(self->entry);
    unsigned char le[4] = {(unsigned char)c, (unsigned char)(c >> 8), (unsigned char)(c >> 16),
                           (unsigned char)(c >> 24)};
    return PyBytes_FromStringAndSize((const char *)le, 4);
}

static PyObject *entry_is_valid_checksum(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    int rc;
    if (self->size >= PYSIMDR_NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        rc = simdr_entry_verify(self->entry);
        Py_END_ALLOW_THREADS
    } else {
        rc = simdr_entry_verify(self->entry);
    }
    return PyBool_FromLong(rc == SIMDR_OK);
}

static PyObject *entry_offset_range(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    uint64_t start = simdr_entry_offset(self->entry);
    return Py_BuildValue("(KK)", (unsigned long long)start,
                         (unsigned long long)(start + self->size));
}

static PyObject *entry_address_range(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    uintptr_t start = (uintptr_t)self->data;
    return Py_BuildValue("(KK)", (unsigned long long)start,
                         (unsigned long long)(start + self->size));
}

static PyObject *entry_clone_arc(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    simdr_entry *dup;
    int rc = simdr_entry_dup(self->entry, &dup);
    if (rc != SIMDR_OK) return pysimdr_raise(rc);
    return pysimdr_entry_new(dup);
}

static PyObject *entry_len(PySimdrEntry *self, PyObject *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *entry_repr(PySimdrEntry *self) {
    char text[128];
    snprintf(text, sizeof text, "<simdr.EntryHandle size=%llu key_hash=0x%016llx offset=%llu>",
             (unsigned long long)self->size,
             (unsigned long long)simdr_entry_key_hash(self->entry),
             (unsigned long long)simdr_entry_offset(self->entry));
    return PyUnicode_FromString(text);
}

static PyObject *entry_get_size(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *entry_get_file_size(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->size + ENTRY_METADATA_SIZE);
}

static PyObject *entry_get_key_hash(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(simdr_entry_key_hash(self->entry));
}

static PyObject *entry_get_checksum(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLong(simdr_entry_checksum(self->entry));
}

static PyObject *entry_get_start(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(simdr_entry_offset(self->entry));
}

static PyObject *entry_get_end(PySimdrEntry *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(simdr_entry_offset(self->entry) + self->size);
}

static PyMethodDef entry_methods[] = {
    {"as_memoryview", (PyCFunction)entry_as_memoryview, METH_NOARGS,
     "as_memoryview($self, /)\n--\n\n"
     "A read-only memoryview of the payload, zero-copy (the same as memoryview(self))."},
    {"as_slice", (PyCFunction)entry_as_slice, METH_NOARGS,
     "as_slice($self, /)\n--\n\nThe payload copied into a new bytes object."},
    {"__bytes__", (PyCFunction)entry_as_slice, METH_NOARGS,
     "__bytes__($self, /)\n--\n\nThe payload copied into a new bytes object."},
    {"raw_checksum", (PyCFunction)entry_raw_checksum, METH_NOARGS,
     "raw_checksum($self, /)\n--\n\nThe stored CRC-32 as its 4 little-endian bytes."},
    {"is_valid_checksum", (PyCFunction)entry_is_valid_checksum, METH_NOARGS,
     "is_valid_checksum($self, /)\n--\n\n"
     "True if the payload's CRC-32 matches the stored checksum (reads the whole payload)."},
    {"offset_range", (PyCFunction)entry_offset_range, METH_NOARGS,
     "offset_range($self, /)\n--\n\n"
     "(start, end) file offsets of the payload: (start_offset, end_offset)."},
    {"address_range", (PyCFunction)entry_address_range, METH_NOARGS,
     "address_range($self, /)\n--\n\n"
     "(start, end) virtual addresses of the payload inside this process's map."},
    {"clone_arc", (PyCFunction)entry_clone_arc, METH_NOARGS,
     "clone_arc($self, /)\n--\n\nA second handle to the same mapped bytes (no copy)."},
    {"len", (PyCFunction)entry_len, METH_NOARGS,
     "len($self, /)\n--\n\nThe payload size in bytes (the same as len(self) and size)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef entry_getset[] = {
    {"size", (getter)entry_get_size, NULL, "Payload size in bytes.", NULL},
    {"file_size", (getter)entry_get_file_size, NULL,
     "Payload plus its 20 bytes of metadata (alignment padding not counted).", NULL},
    {"size_with_metadata", (getter)entry_get_file_size, NULL,
     "The same as file_size (the older name).", NULL},
    {"key_hash", (getter)entry_get_key_hash, NULL, "XXH3-64 of the key (simdr.hash_key).", NULL},
    {"checksum", (getter)entry_get_checksum, NULL, "The stored CRC-32 of the payload.", NULL},
    {"start_offset", (getter)entry_get_start, NULL, "File offset of the payload's first byte.",
     NULL},
    {"end_offset", (getter)entry_get_end, NULL, "File offset just past the payload.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods entry_as_sequence = {
    .sq_length = (lenfunc)entry_length,
};

PyTypeObject PySimdrEntry_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simdr.EntryHandle",
    .tp_basicsize = sizeof(PySimdrEntry),
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_repr = (reprfunc)entry_repr,
    .tp_as_sequence = &entry_as_sequence,
    .tp_as_buffer = &entry_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A stored value, zero-copy: its bytes are the store file's map.\n\n"
              "Returned by DataStore.read_entry, get_many and iteration; not created directly.\n"
              "Supports the buffer protocol (read-only): memoryview(h), numpy.frombuffer(h, dtype),\n"
              "bytes(h). The bytes stay valid and unchanged while the handle or any view of it\n"
              "lives, even after later writes, compaction or close() of the store.",
    .tp_weaklistoffset = offsetof(PySimdrEntry, weakrefs),
    .tp_methods = entry_methods,
    .tp_getset = entry_getset,
};

/* ---- EntryStream ---- */

#define STREAM_CHUNK (64 * 1024)

typedef struct {
    PyObject_HEAD
    simdr_entry *entry;
    const char *data;
    uint64_t size;
    uint64_t pos;
} PySimdrStream;

PyObject *pysimdr_stream_new(simdr_entry *entry) {
    PySimdrStream *self = PyObject_New(PySimdrStream, &PySimdrStream_Type);
    if (!self) {
        simdr_entry_release(entry);
        return NULL;
    }
    self->entry = entry;
    self->data = simdr_entry_data(entry);
    self->size = simdr_entry_size(entry);
    self->pos = 0;
    return (PyObject *)self;
}

static void stream_dealloc(PySimdrStream *self) {
    simdr_entry_release(self->entry);
    PyObject_Free(self);
}

/* The next piece of at most want bytes. The piece is claimed (the position
 * moved past it) with the GIL held, before a large copy lets the GIL go:
 * threads reading one stream at once get disjoint pieces, as from a file. */
static PyObject *stream_take(PySimdrStream *self, uint64_t want) {
    uint64_t left = self->size - self->pos;
    uint64_t n = want < left ? want : left;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!out) return NULL;
    const char *piece = self->data + self->pos;
    self->pos += n;
    copy_into(out, piece, n);
    return out;
}

static PyObject *stream_read(PySimdrStream *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    static const char *const names[] = {"size"};
    PyObject *size;
    if (pysimdr_args("read", args, nargs, kwnames, names, 0, 1, &size) < 0) return NULL;
    uint64_t want = self->size;
    if (size && size != Py_None) {
        Py_ssize_t n = PyNumber_AsSsize_t(size, PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred()) return NULL;
        if (n >= 0) want = (uint64_t)n;
    }
    return stream_take(self, want);
}

static PyObject *stream_next(PySimdrStream *self) {
    if (self->pos >= self->size) return NULL; /* StopIteration */
    return stream_take(self, STREAM_CHUNK);
}

static PyObject *stream_get_pos(PySimdrStream *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->pos);
}

static PyObject *stream_get_size(PySimdrStream *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyMethodDef stream_methods[] = {
    {"read", (PyCFunction)(void (*)(void))stream_read, METH_FASTCALL | METH_KEYWORDS,
     "read($self, size=-1)\n--\n\n"
     "Up to size bytes from the current position (all the rest for -1 or None);\n"
     "b'' at the end."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"position", (getter)stream_get_pos, NULL, "Bytes consumed so far.", NULL},
    {"size", (getter)stream_get_size, NULL, "The value's total size.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PySimdrStream_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simdr.EntryStream",
    .tp_basicsize = sizeof(PySimdrStream),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A stored value read in pieces (DataStore.read_stream): read(size), or\n"
              "iterate for chunks of 64 KiB. Each piece is a new bytes object. Threads\n"
              "reading one stream at once get disjoint pieces, as from one file.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)stream_next,
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
};
