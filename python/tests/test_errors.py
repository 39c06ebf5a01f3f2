"""Bad input and misuse raise the right exception, never crash, and lose nothing stored."""
import os

import pytest

import simdr


def test_hierarchy():
    for cls in (simdr.NotAStoreError, simdr.CorruptError, simdr.LockedError, simdr.ReadOnlyError,
                simdr.DiskFullError, simdr.InvalidArgumentError, simdr.ClosedError,
                simdr.StoreIOError, simdr.ChecksumError, simdr.StoreNotFoundError):
        assert issubclass(cls, simdr.Error)
    assert issubclass(simdr.ChecksumError, simdr.CorruptError)
    assert issubclass(simdr.InvalidArgumentError, ValueError)
    assert issubclass(simdr.StoreNotFoundError, FileNotFoundError)
    assert issubclass(simdr.DiskFullError, OSError)


@pytest.mark.parametrize("key", [1, None, 2.5, object(), [b"a"], (b"a",)])
def test_wrong_key_types(db, key):
    for call in (db.read, db.read_entry, db.read_stream, db.exists, db.delete):
        with pytest.raises(TypeError):
            call(key)
    with pytest.raises(TypeError):
        db.write(key, b"v")
    with pytest.raises(TypeError):
        db[key]
    with pytest.raises(TypeError):
        simdr.hash_key(key)


@pytest.mark.parametrize("value", ["text", 1, None, 3.0, [1, 2]])
def test_wrong_value_types(db, value):
    with pytest.raises(TypeError):
        db.write(b"k", value)
    with pytest.raises(TypeError):
        db[b"k"] = value
    with pytest.raises(TypeError):
        db.put_many([(b"k", value)])
    assert len(db) == 0


def _strided_buffers():
    import numpy as np
    yield "numpy every other element", np.arange(10, dtype=np.uint8)[::2]
    yield "numpy Fortran order", np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    yield "memoryview every other byte", memoryview(b"abcdef")[::2]


def test_strided_buffers_are_a_type_error_naming_the_way_out(db):
    # A buffer whose bytes are not laid out in one C-ordered run is refused as
    # the wrong kind of argument, as other non-bytes are, not with whichever
    # ValueError or BufferError its exporter raises, and the message says how
    # to pass it.
    for what, buf in _strided_buffers():
        for call in (lambda: db.write(b"k", buf), lambda: db.put_many([(b"k", buf)]),
                     lambda: db.read(buf), lambda: db.write(buf, b"v"), lambda: db.get_many([buf])):
            with pytest.raises(TypeError, match="C-contiguous"):
                call()
    assert len(db) == 0


def test_wrong_batch_shapes(db):
    for bad in (5, [b"ab"], [(b"k",)], [(b"k", b"v", b"x")], [None]):
        with pytest.raises(TypeError):
            db.put_many(bad)
    with pytest.raises(TypeError):
        db.get_many(5)
    with pytest.raises(TypeError):
        db.get_many([b"ok", 5])
    with pytest.raises(TypeError):
        db.write_stream(b"k", b"not a reader")
    with pytest.raises(TypeError):
        db.write(b"k")


def test_empty_and_zero_byte_values_refused(db):
    db.write(b"k", b"kept")
    for bad in (b"", b"\x00", bytearray()):
        with pytest.raises(simdr.InvalidArgumentError) as info:
            db.write(b"k", bad)
        assert info.value.code == -2 and str(info.value)
    import io
    with pytest.raises(simdr.InvalidArgumentError):
        db.write_stream(b"k", io.BytesIO(b""))
    assert db.read(b"k") == b"kept"


def test_closed_store_raises_closed_error(store_path):
    db = simdr.open(store_path)
    db.write(b"k", b"v")
    db.close()
    calls = [lambda: db.read(b"k"), lambda: db.write(b"k", b"v"), lambda: db[b"k"],
             lambda: len(db), lambda: b"k" in db, lambda: db.compact(), lambda: db.info(),
             lambda: db.check(), lambda: db.refresh(), lambda: list(db),
             lambda: db.get_many([b"k"]), lambda: db.put_many([(b"a", b"b")]),
             lambda: db.rename(b"k", b"j"), lambda: db.delete(b"k"), lambda: db.sync(),
             lambda: db.get(b"k"), lambda: db.get("k", None), lambda: db.read_entry(b"k"),
             lambda: db.read_stream(b"k"), lambda: db.exists(bytearray(b"k"))]
    for call in calls:
        with pytest.raises(simdr.ClosedError) as info:
            call()
        assert info.value.code == -2  # every simdr.Error has a code
    with pytest.raises(simdr.ClosedError):
        with db:
            pass


def test_errors_the_binding_raises_itself_have_a_code(store_path):
    # `except simdr.Error as e: log(e.code)` must not raise AttributeError.
    import io
    with pytest.raises(simdr.InvalidArgumentError) as info:
        simdr.open(store_path, durability="full")
    assert info.value.code == -2
    with simdr.open(store_path) as db:
        class NoneReader:
            def read(self, n):
                return None
        with pytest.raises(simdr.Error) as info:
            db.write_stream(b"k", NoneReader())
        assert info.value.code == -2
        with pytest.raises(simdr.Error) as info:
            db.__init__(store_path)
        assert info.value.code == -2
    never_opened = simdr.DataStore.__new__(simdr.DataStore)
    with pytest.raises(simdr.Error) as info:
        never_opened.read(b"k")
    assert info.value.code == -2


def test_iterator_after_close(db):
    db.put_many([(b"a", b"1"), (b"b", b"2")])
    it = iter(db)
    first = next(it)
    db.close()
    with pytest.raises(simdr.ClosedError):
        next(it)
    assert bytes(first) in (b"1", b"2")


def test_copy_to_closed_store(tmp_path, db):
    other = simdr.open(tmp_path / "o.bin")
    other.close()
    db.write(b"k", b"v")
    with pytest.raises(simdr.ClosedError):
        db.copy(b"k", other)
    assert db.read(b"k") == b"v"


def test_not_a_store(tmp_path):
    p = tmp_path / "text.bin"
    p.write_bytes(b"this is plainly not a store file, just text\n" * 10)
    before = p.read_bytes()
    with pytest.raises(simdr.NotAStoreError) as info:
        simdr.open(p)
    assert str(p) in str(info.value) and info.value.code == -6
    assert p.read_bytes() == before


def test_corrupt_middle(tmp_path):
    p = tmp_path / "c.bin"
    with simdr.open(p) as db:
        for i in range(20):
            db.write(b"k%d" % i, os.urandom(200))
        offset = db.read_entry(b"k5").end_offset
    with open(p, "r+b") as f:  # break the chain: garble entry 5's metadata
        f.seek(offset + 8)
        f.write(b"\xff" * 8)
    with pytest.raises(simdr.CorruptError):
        simdr.open(p)
    with simdr.open(p, readonly=True, salvage=True) as ro:
        assert ro.read(b"k19") is None or len(ro.read(b"k19")) == 200


def test_uninitialised_store_object():
    db = simdr.DataStore.__new__(simdr.DataStore)
    with pytest.raises(simdr.ClosedError):
        db.read(b"k")
    db.close()


def test_init_twice_refused(store_path):
    db = simdr.open(store_path)
    with pytest.raises(simdr.Error):
        db.__init__(store_path)
    db.close()


def test_entry_handle_cannot_be_created_directly():
    with pytest.raises(TypeError):
        simdr.EntryHandle()
    with pytest.raises(TypeError):
        simdr.EntryStream()


def test_empty_path_named_as_such():
    # The engine's check of a missing path argument also refuses "", but a
    # message about a NULL argument sends a Python user looking for a None.
    for readonly in (False, True):
        with pytest.raises(simdr.InvalidArgumentError, match="empty path"):
            simdr.open("", readonly=readonly)


def test_second_writable_open_in_this_process_says_so(store_path):
    # A notebook cell run twice (db = simdr.open(p)) opens the file again
    # before the first DataStore is dropped: "locked by another process" sends
    # the user looking for a process that does not exist.
    import subprocess
    import sys
    db = simdr.open(store_path)
    with pytest.raises(simdr.LockedError, match="in this process"):
        simdr.open(store_path)
    db.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import simdr, sys; d = simdr.open(sys.argv[1]); print('open', flush=True); "
         "sys.stdin.read()", store_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(simdr.LockedError, match="another process") as caught:
            simdr.open(store_path)
        assert "in this process" not in str(caught.value)
    finally:
        holder.stdin.close()
        holder.wait()
    simdr.open(store_path).close()


def test_create_in_a_missing_directory_names_the_directory(tmp_path):
    # "no such file" is what creating a store is meant to cure: the
    # directory is what is missing.
    with pytest.raises(simdr.StoreNotFoundError, match="directory"):
        simdr.open(tmp_path / "missing" / "x.bin")
    with pytest.raises(simdr.StoreNotFoundError, match="no such file"):
        simdr.open(tmp_path / "x.bin", create=False)


def test_directory_path(tmp_path):
    with pytest.raises(simdr.Error):
        simdr.open(tmp_path)


def test_disk_full_via_file_size_limit(store_path):
    import resource
    import signal
    db = simdr.open(store_path)
    db.write(b"k", b"kept")
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old[1]))
        with pytest.raises(simdr.DiskFullError) as info:
            db.write(b"big", b"x" * (2 << 20))
        assert info.value.code == -4
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert db.read(b"big") is None and db.read(b"k") == b"kept"
    db.close()
