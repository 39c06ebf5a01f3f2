"""Zero-copy reads: views point into the map, numpy arrays are views, nothing is copied,
and views outlive later writes, compaction and close()."""
import gc
import os
import tracemalloc
import weakref

import numpy as np
import pytest

import simdr

from conftest import scale


def test_memoryview_points_into_the_entry(db):
    db.write(b"k", b"0123456789")
    h = db.read_entry(b"k")
    mv = memoryview(h)
    assert mv.readonly and mv.obj is h and mv.nbytes == 10
    start, end = h.address_range()
    view_address = np.frombuffer(mv, np.uint8).ctypes.data
    assert start <= view_address < end and view_address == start
    assert h.as_memoryview().obj is h


def _mapping_of(address):
    """The /proc/self/maps line whose range holds address: (start, file offset, path)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].strip() if len(fields) > 5 else ""
                return start, int(fields[2], 16), path
    raise AssertionError(f"address {address:#x} is not mapped")


def test_view_lies_inside_the_store_files_map(db, store_path):
    db.write(b"a", os.urandom(5000))
    db.write(b"k", b"value bytes")
    h = db.read_entry(b"k")
    address = np.frombuffer(memoryview(h), np.uint8).ctypes.data
    start, file_offset, path = _mapping_of(address)
    assert os.path.realpath(path) == os.path.realpath(store_path)
    assert address - start + file_offset == h.start_offset  # the file byte the payload is at
    db.compact()  # the handle keeps the old file's map: now a deleted file
    start, file_offset, path = _mapping_of(address)
    assert path.endswith("(deleted)") and bytes(h) == b"value bytes"


def test_views_are_read_only(db):
    db.write(b"k", b"abc")
    h = db.read_entry(b"k")
    with pytest.raises(TypeError):
        memoryview(h)[0] = 0
    arr = np.frombuffer(h, np.uint8)
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1
    with pytest.raises(ValueError):
        arr.setflags(write=True)


def test_numpy_array_is_an_aligned_view_of_the_map(db):
    data = np.arange(4096, dtype=np.float32)
    db.write(b"zero", b"\x01")  # shifts the next payload, which the layout realigns
    db.write(b"arr", data)
    h = db.read_entry(b"arr")
    arr = np.frombuffer(h, dtype=np.float32)
    assert np.array_equal(arr, data)
    assert arr.ctypes.data % 64 == 0
    assert arr.ctypes.data == h.address_range()[0]
    base = arr
    while isinstance(base, (np.ndarray, memoryview)) and not isinstance(base, simdr.EntryHandle):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert base is h


def test_unaligned_layout_still_zero_copy(tmp_path):
    with simdr.open(tmp_path / "u.bin", layout="unaligned") as db:
        db.write(b"a", b"\x07")
        db.write(b"b", b"xyz")
        h = db.read_entry(b"b")
        assert np.frombuffer(h, np.uint8).ctypes.data == h.address_range()[0]


def test_100mb_read_allocates_nothing(store_path):
    n = int(25_000_000 * scale())  # float32: 100 MB at scale 1
    db = simdr.open(store_path)
    try:
        db.write(b"big", np.ones(n, dtype=np.float32))
        gc.collect()
        tracemalloc.start()
        try:
            h = db.read_entry(b"big")
            arr = np.frombuffer(h, dtype=np.float32)
            assert arr.shape == (n,)
            assert float(arr[::4096].sum()) == float(len(range(0, n, 4096)))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, peak  # a copy would be n * 4 bytes
        del arr, h
    finally:
        db.close()
        os.unlink(store_path)  # pytest keeps recent temporary directories: free the space


def test_handle_kept_alive_by_its_views(db):
    db.write(b"k", b"payload")
    h = db.read_entry(b"k")
    ref = weakref.ref(h)
    mv = memoryview(h)
    arr = np.frombuffer(h, np.uint8)
    del h
    gc.collect()
    assert ref() is not None  # the views keep the handle (and its entry) alive
    mv.release()
    del arr
    gc.collect()
    assert ref() is None


def test_views_survive_overwrite_compaction_and_close(store_path):
    db = simdr.open(store_path)
    value = os.urandom(1 << 20)
    db.write(b"k", value)
    arr = np.frombuffer(db.read_entry(b"k"), np.uint8)
    mv = db.read_entry(b"k").as_memoryview()
    db.write(b"k", b"replacement")
    for i in range(50):
        db.write(b"filler%d" % i, os.urandom(4096))
    db.compact()
    assert arr.tobytes() == value and mv.tobytes() == value
    assert db.read(b"k") == b"replacement"
    db.close()
    # the file itself is gone too: the old map is what keeps the bytes
    os.unlink(store_path)
    assert arr.tobytes() == value and mv.tobytes() == value
    assert bytes(mv[:16]) == value[:16]


def test_handle_survives_close_and_reopen(store_path):
    with simdr.open(store_path) as db:
        db.write(b"k", b"v1")
        h = db.read_entry(b"k")
    with simdr.open(store_path) as db:
        db.write(b"k", b"v2")
        db.compact()
    assert bytes(h) == b"v1" and h.is_valid_checksum()
    assert h.clone_arc().as_slice() == b"v1"


def test_iteration_handles_survive_close(db):
    db.put_many([(b"k%d" % i, b"v%d" % i) for i in range(10)])
    handles = list(db)
    db.close()
    assert sorted(bytes(h) for h in handles) == sorted(b"v%d" % i for i in range(10))


def test_get_many_handles_are_zero_copy(db):
    db.put_many([(b"k%d" % i, np.full(16, i, np.float32)) for i in range(300)])
    hs = db.get_many([b"k%d" % i for i in range(300)])
    for i, h in enumerate(hs):
        a = np.frombuffer(h, np.float32)
        assert a.ctypes.data == h.address_range()[0] and a.ctypes.data % 64 == 0
        assert (a == i).all()
