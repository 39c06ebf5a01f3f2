"""simdr: a zero-copy Python binding of the simdr storage engine.

One file holds an append-only chain of binary entries (the simd-r-drive file
format); reads are views of the file's memory map, so a value comes out of the
store as an EntryHandle whose bytes are never copied: memoryview(handle) and
numpy.frombuffer(handle, dtype) look straight into the map (64-byte aligned
payloads in the default layout).

    import simdr
    with simdr.open("data.bin") as db:
        db[b"user:1"] = b"ada"             # or db.write(b"user:1", b"ada")
        db.read(b"user:1")                 # b"ada" (a copy), None when absent
        h = db.read_entry(b"user:1")       # EntryHandle, zero-copy
        bytes(memoryview(h))               # b"ada"

The API is a drop-in for the Rust crate's Python binding (`import simdr as
simd_r_drive`): DataStore, EntryHandle, EntryStream, NamespaceHasher with the
same members, plus rename, copy/move, len, compact, check, info, refresh,
the mapping protocol, get_many / put_many and iteration over entries.

Errors raise simdr.Error subclasses (NotAStoreError, CorruptError,
LockedError, ReadOnlyError, DiskFullError, ...) carrying the engine's message
and its status in `code`; simdr.Error is an OSError, as the Rust crate's
binding raises. Using a closed store raises ClosedError.

Reads check each value's CRC-32 first (verify_reads=True, the default;
CorruptError for damaged bytes); simdr.open(path, verify_reads=False) skips
the check, so a view of a large value costs no pass over it.

Threads: a DataStore may be shared by any number of threads; the GIL is
released during writes, batch reads, scans, compaction, and the copies and
checks of large values.
close() waits for calls running in other threads (Ctrl-C interrupts the wait
and leaves the store open). Other processes may open
the same file read-only and call refresh() to see new entries.
"""

from ._simdr import (
    METADATA_SIZE,
    ENGINE_VERSION,
    ChecksumError,
    ClosedError,
    CorruptError,
    DataStore,
    DiskFullError,
    EntryHandle,
    EntryIterator,
    EntryStream,
    Error,
    FailedError,
    InvalidArgumentError,
    LockedError,
    NamespaceHasher,
    NotAStoreError,
    OutOfMemoryError,
    PermissionDeniedError,
    ReadOnlyError,
    StoreIOError,
    StoreNotFoundError,
    TooBigError,
    engine_version,
    hash_key,
    open,
)

__version__ = engine_version()

__all__ = [
    "DataStore",
    "EntryHandle",
    "EntryIterator",
    "EntryStream",
    "NamespaceHasher",
    "open",
    "hash_key",
    "engine_version",
    "Error",
    "ChecksumError",
    "ClosedError",
    "CorruptError",
    "DiskFullError",
    "FailedError",
    "InvalidArgumentError",
    "LockedError",
    "NotAStoreError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "ReadOnlyError",
    "StoreIOError",
    "StoreNotFoundError",
    "TooBigError",
    "METADATA_SIZE",
    "ENGINE_VERSION",
]
