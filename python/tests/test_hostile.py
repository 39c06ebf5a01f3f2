"""Hostile callers: stream readers that misbehave, nested streams into several stores,
buffers that change under a call, keys and values of every odd shape, and use of a store
after close, after fork and from other threads. Each test asserts a clean error or the
exact bytes, never a crash, a hang or a leak."""
import contextlib
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import simdr


def run_isolated(code, tmp_path):
    """Runs code in a fresh interpreter and returns its stdout: a call that would deadlock
    fails the test (the timeout guards against a hang, it measures nothing)."""
    script = tmp_path / "isolated.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_nested_stream_reader_cannot_write_close_or_check_the_outer_store(tmp_path):
    # A's reader streams into B, whose reader calls back into A: A's write lock is
    # held by this very thread (A's stream is still running), so a write, close,
    # compaction, sync or check of A from there would wait for itself forever.
    out = run_isolated("""
        import os, sys
        import simdr
        d = sys.argv[1]
        a = simdr.open(os.path.join(d, "a.bin"))
        b = simdr.open(os.path.join(d, "b.bin"))
        a.write(b"k", b"v")
        refused = []

        class Inner:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls > 1:
                    return b""
                for call in (lambda: a.write(b"x", b"1"), lambda: a.delete(b"k"),
                             lambda: a.put_many([(b"y", b"2")]), lambda: a.compact(),
                             lambda: a.sync(), lambda: a.check(), lambda: a.close(),
                             lambda: a.rename(b"k", b"j"), lambda: b.copy(b"z", a)):
                    try:
                        call()
                        refused.append("allowed")
                    except simdr.Error as e:
                        refused.append("write_stream" in str(e))
                assert a.read(b"k") == b"v" and len(a) == 1  # reads are allowed
                return b"inner"

        class Outer:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls > 1:
                    return b""
                b.write(b"z", b"zz")
                b.write_stream(b"nested", Inner())
                return b"outer"

        a.write_stream(b"s", Outer())
        print(refused, a.read(b"s"), b.read(b"nested"), a.closed)
        a.close()
        b.close()
    """, tmp_path)
    assert out.split() == ["[True,"] + ["True,"] * 7 + ["True]", "b'outer'", "b'inner'", "False"]


def test_stream_chunk_kept_for_later_cannot_be_resized_meanwhile(db):
    # A reader may return more than the engine asked for; the rest is handed
    # out on the engine's next requests, between which the GIL is free. Another
    # thread shrinking that bytearray then must not make the binding copy
    # bytes past its end: the chunk stays exported (BufferError) until used.
    conclusive = 0
    for attempt in range(5):
        chunk = bytearray(os.urandom(32 << 20))
        expected = bytes(chunk)
        handed_out, outcome = [], []

        class Greedy:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls == 1:
                    handed_out.append(True)
                    return chunk
                resizer.join()  # the attempt was made before this stream ends
                return b""

        source = Greedy()

        def shrink():
            while not handed_out:  # spinning: ready to take the GIL the moment it is free
                pass
            still_pending = source.calls == 1  # the engine has not asked for more
            try:
                del chunk[16:]
                outcome.append((still_pending, "resized"))
            except BufferError:
                outcome.append((still_pending, "refused"))

        resizer = threading.Thread(target=shrink)
        resizer.start()
        db.write_stream(b"g", source)
        resizer.join()
        still_pending, result = outcome[0]
        if still_pending:  # else the resize came too late to tell: try again
            conclusive += 1
            assert result == "refused"
            assert db.read(b"g") == expected
            break
    assert conclusive > 0


# Every edge of the read paths, and one byte either side: the in-line check
# (INLINE_CHECK_MAX, 64), the old read-scope limit (256), the handle object
# list (32 kept), EntryStream's 64 KiB pieces, the 256 KiB above which values
# are checked and copied without the GIL, and the engine's 1 MiB (a stream
# write's request, a large value's check step).
EDGES = [1, 63, 64, 65, 255, 256, 257, (64 << 10) - 1, 64 << 10, (64 << 10) + 1,
         (256 << 10) - 1, 256 << 10, (256 << 10) + 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1]


def edge_value(n):
    """n random bytes that are never the lone 0x00 (the tombstone marker)."""
    return os.urandom(n).replace(b"\x00", b"\x01")


class Source:
    """A stream reader handing out data in pieces of at most piece bytes."""

    def __init__(self, data, piece):
        self.data, self.pos, self.piece = data, 0, piece

    def read(self, n):
        chunk = self.data[self.pos:self.pos + min(n, self.piece)]
        self.pos += len(chunk)
        return chunk


def read_back_every_way(db, key, value):
    """Asserts that every read call returns value for key, byte for byte."""
    assert db.read(key) == value and db.get(key) == value and db[key] == value
    assert key in db and db.exists(key)
    h = db.read_entry(key)
    assert len(h) == len(value) and bytes(h) == value and h.as_slice() == value
    assert memoryview(h).tobytes() == value
    assert np.array_equal(np.frombuffer(h, np.uint8), np.frombuffer(value, np.uint8))
    assert h.is_valid_checksum()
    stream = db.read_stream(key)
    pieces = list(stream)
    assert all(len(p) == 64 << 10 for p in pieces[:-1]) and b"".join(pieces) == value
    assert db.read_stream(key).read() == value


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_every_edge_size_reads_back_every_way(tmp_path, verify, append_mode):
    path = tmp_path / "edges.bin"
    values = {b"edge%d" % n: edge_value(n) for n in EDGES}
    with simdr.open(path, verify_reads=verify, append_mode=append_mode) as db:
        keys = list(values)
        half = len(keys) // 2
        for k in keys[:half]:
            db.write(k, values[k])
        db.put_many([(k, values[k]) for k in keys[half:]])
        for k in keys:
            read_back_every_way(db, k, values[k])
        # the same values again through a stream, read in odd pieces, and from
        # writable buffers (copied first, the large ones a piece at a time)
        for n, k in zip(EDGES, keys):
            db.write_stream(k + b"s", Source(values[k], max(1, n // 3)))
            read_back_every_way(db, k + b"s", values[k])
            db.write(k + b"w", bytearray(values[k]))
            db[k + b"n"] = np.frombuffer(values[k], np.uint8).copy()
            read_back_every_way(db, k + b"w", values[k])
            read_back_every_way(db, k + b"n", values[k])
        got = db.get_many(keys + [b"absent"] + keys)
        assert got[len(keys)] is None
        assert [bytes(h) for h in got[:len(keys)]] == [values[k] for k in keys]
        by_size = sorted(bytes(h) for h in db)
        assert by_size == sorted(list(values.values()) * 4)
        # more handles alive at once than the object list keeps, all dropped at once
        handles = [db.read_entry(k) for k in keys for _ in range(3)]
        assert [bytes(h) for h in handles] == [values[k] for k in keys for _ in range(3)]
        del handles, got
        for k in keys:
            read_back_every_way(db, k, values[k])
    with simdr.open(path, readonly=True, verify_reads=verify) as ro:
        for k in values:
            read_back_every_way(ro, k, values[k])


def flip_last_byte(path, handle):
    with open(path, "r+b") as f:
        f.seek(handle.end_offset - 1)
        last = f.read(1)
        f.seek(handle.end_offset - 1)
        f.write(bytes([last[0] ^ 0x40]))


def test_damage_at_every_edge_size_is_caught_by_every_read(tmp_path):
    # The last byte of each value is flipped: a check that stops one byte
    # short, or a chunked check that skips the final piece, lets it through.
    path = tmp_path / "damaged.bin"
    values = {b"edge%d" % n: edge_value(n) for n in EDGES}
    with simdr.open(path) as db:
        db.put_many(list(values.items()))
        db.write(b"sound", b"ok")
        handles = {k: db.read_entry(k) for k in values}
    for h in handles.values():
        flip_last_byte(path, h)
    with simdr.open(path, readonly=True) as ro:
        for k in values:
            for read in (ro.read, ro.get, ro.__getitem__, ro.read_entry, ro.exists,
                         ro.__contains__, ro.read_stream, lambda k: ro.get_many([b"sound", k])):
                with pytest.raises(simdr.CorruptError):
                    read(k)
        it, sound, damaged = iter(ro), [], 0
        while True:
            try:
                sound.append(bytes(next(it)))
            except simdr.CorruptError:
                damaged += 1
            except StopIteration:
                break
        assert sound == [b"ok"] and damaged == len(values)
    with simdr.open(path, readonly=True, verify_reads=False) as ro:
        for k, v in values.items():
            damaged_value = v[:-1] + bytes([v[-1] ^ 0x40])
            assert ro.read(k) == damaged_value and bytes(ro.read_entry(k)) == damaged_value
            assert not ro.read_entry(k).is_valid_checksum()
    # handles taken before the damage are views of the same map: they see it too
    assert all(not h.is_valid_checksum() for h in handles.values())


def test_second_close_returns_only_once_the_store_is_closed(store_path):
    # close() waits for calls running in other threads. A second close(),
    # made while the first one waits, must wait as well: returning at once
    # would leave the file open and locked after close() returned.
    db = simdr.open(store_path)
    in_reader, second_returned, order = threading.Event(), threading.Event(), []

    class Held:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                return b""
            in_reader.set()
            second_returned.wait(0.5)  # only ever set early by a close that did not wait
            order.append("stream ends")
            return b"v"

    streamer = threading.Thread(target=db.write_stream, args=(b"s", Held()))
    streamer.start()
    in_reader.wait()
    first = threading.Thread(target=db.close)
    first.start()
    while not db.closed:  # the first close() has begun and waits for the stream
        threading.Event().wait(0.001)

    def second_close():
        db.close()
        order.append("second close returned")
        second_returned.set()

    second = threading.Thread(target=second_close)
    second.start()
    for th in (second, streamer, first):
        th.join()
    assert order == ["stream ends", "second close returned"]
    with simdr.open(store_path) as again:  # not locked: the first close has finished
        assert again.read(b"s") == b"v"


def test_a_finalizer_closing_the_store_while_copy_or_move_fails_does_not_hang(tmp_path):
    # An object whose __del__ closes the store (a wrapper's usual cleanup) may
    # be collected by any allocation of a container object, among them the
    # exception a failing call raises. Collection is forced at every one of
    # the first few allocations after the call starts; close() must never
    # wait for a call its own thread is in the middle of.
    out = run_isolated("""
        import gc, os, sys
        import simdr
        d = sys.argv[1]
        simdr.open(os.path.join(d, "target.bin")).close()
        outcomes = set()
        for name in ("copy", "move"):
            for failure in ("read-only target", "missing key"):
                for threshold in range(1, 9):
                    db = simdr.open(os.path.join(d, "source.bin"))
                    target = simdr.open(os.path.join(d, "target.bin"), readonly=True)
                    db.write(b"k", b"v")

                    class Closer:
                        def __del__(self):
                            db.close()

                    gc.collect()
                    closer = Closer()
                    closer.cycle = closer
                    del closer
                    call = getattr(db, name)
                    try:
                        raise RuntimeError("handled: a KeyError is chained to it at once")
                    except RuntimeError:
                        gc.set_threshold(threshold)
                        try:
                            if failure == "missing key":
                                call(b"absent", target)
                            else:
                                call(b"k", target)
                        except (simdr.ReadOnlyError, simdr.ClosedError, KeyError) as e:
                            outcomes.add(type(e).__name__)
                        finally:
                            gc.set_threshold(700)
                    gc.collect()
                    assert db.closed
                    target.close()
        print(sorted(outcomes))
    """, tmp_path)
    assert "ReadOnlyError" in out and "KeyError" in out


def key_calls(db):
    """Every call that takes a key, as one-argument functions."""
    return [db.read, db.read_entry, db.read_stream, db.exists, db.delete, db.get,
            db.__getitem__, db.__contains__, lambda k: db.write(k, b"v"),
            lambda k: db.get_many([b"ok", k]), lambda k: db.put_many([(b"ok", b"1"), (k, b"v")]),
            lambda k: db.rename(k, b"other"), lambda k: db.rename(b"ok", k),
            lambda k: db.write_stream(k, Source(b"v", 1)), simdr.hash_key,
            simdr.NamespaceHasher(b"ns").namespace]


def test_every_key_shape_accepted_or_refused_the_same_everywhere(db):
    flat = np.frombuffer(b"k2d-key!", np.uint8)
    accepted = [b"k2d-key!", bytearray(b"k2d-key!"), memoryview(b"k2d-key!"),
                memoryview(bytearray(b"k2d-key!")).toreadonly(), "k2d-key!",
                flat.reshape(2, 4), memoryview(flat.reshape(2, 2, 2))]
    db.write(b"k2d-key!", b"value")
    for key in accepted:  # the same 8 bytes, whatever holds them
        assert db.read(key) == b"value" and bytes(db.read_entry(key)) == b"value"
        assert simdr.hash_key(key) == simdr.hash_key(b"k2d-key!")
    db.write(db.read_entry(b"k2d-key!"), b"keyed by a view of the map")
    assert db.read(b"value") == b"keyed by a view of the map"
    released = memoryview(b"gone")
    released.release()
    refused = [(memoryview(b"abcdef")[::2], TypeError),  # strided: the wrong kind of argument
               (np.arange(16, dtype=np.uint8).reshape(4, 4).T, TypeError),
               (released, ValueError), ("\udc80", UnicodeEncodeError),
               (5, TypeError), (None, TypeError), (2.5, TypeError), ([b"a"], TypeError)]
    count, size = len(db), db.info()["file_size"]
    for key, error in refused:
        for call in key_calls(db):
            with pytest.raises(error):
                call(key)
    assert len(db) == count and db.info()["file_size"] == size  # nothing was appended
    assert db.read(b"ok") is None


def test_every_value_shape_accepted_or_refused(db):
    import array
    grid = np.arange(12, dtype=np.float64).reshape(3, 4)
    db.write(b"stored", b"a value of the map")
    accepted = [bytearray(b"ba"), memoryview(b"mv"), array.array("i", [1, 2]), grid,
                memoryview(grid), np.zeros(3, np.uint8), db.read_entry(b"stored"),
                memoryview(bytearray(b"ro")).toreadonly()]
    for i, value in enumerate(accepted):
        db.write(b"v%d" % i, value)
        assert db.read(b"v%d" % i) == memoryview(value).tobytes()
        db.put_many([(b"p%d" % i, value)])
        assert db.read(b"p%d" % i) == memoryview(value).tobytes()
    db.write(b"copy of a view", db.read_entry(b"v3"))  # a value straight from the map
    assert db.read(b"copy of a view") == grid.tobytes()
    released = memoryview(b"gone")
    released.release()
    refused = [(np.arange(10)[::2], TypeError), (np.asfortranarray(grid), TypeError),  # strided
               (memoryview(b"abcdef")[::-1], TypeError), (released, ValueError),
               (np.zeros(0), simdr.InvalidArgumentError), (b"", simdr.InvalidArgumentError),
               (b"\x00", simdr.InvalidArgumentError), ("text", TypeError), (None, TypeError),
               (7, TypeError)]
    count, size = len(db), db.info()["file_size"]
    for value, error in refused:
        for call in (lambda v: db.write(b"bad", v), lambda v: db.__setitem__(b"bad", v),
                     lambda v: db.put_many([(b"good", b"1"), (b"bad", v)])):
            with pytest.raises(error):
                call(value)
    assert len(db) == count and db.info()["file_size"] == size


def object_pointer_buffers():
    """Buffers whose items are Python object pointers (PEP 3118 format 'O'):
    their bytes are addresses in this process, meaningless once stored."""
    import ctypes
    return [np.array([1, "a"], dtype=object), np.zeros((2, 2), dtype=object),
            memoryview(np.array([None], dtype=object)),
            np.zeros(2, dtype=[("n", "i4"), ("obj", "O")]),
            np.zeros(2, dtype=[("outer", [("o", "O")])]), (ctypes.py_object * 2)(1, 2)]


class OneChunk:
    """A stream reader handing out one object as its only chunk, whatever it is."""

    def __init__(self, chunk):
        self.chunk = chunk

    def read(self, n):
        chunk, self.chunk = self.chunk, b""
        return chunk


def test_buffers_of_object_pointers_are_refused_as_keys_and_values(db):
    # numpy exports an object array's buffer (and hashes and bytes() take it):
    # stored, it would be the addresses of objects of this process, read back
    # by any other as garbage, with nothing to tell.
    db.write(b"ok", b"1")
    count, size = len(db), db.info()["file_size"]
    for buf in object_pointer_buffers():
        for call in key_calls(db):
            with pytest.raises(TypeError, match="object"):
                call(buf)
        for call in (lambda v: db.write(b"bad", v), lambda v: db.__setitem__(b"bad", v),
                     lambda v: db.put_many([(b"good", b"1"), (b"bad", v)]),
                     lambda v: db.write_stream(b"bad", OneChunk(v))):
            with pytest.raises(TypeError, match="object"):
                call(buf)
    assert len(db) == count and db.info()["file_size"] == size  # nothing was appended
    # A field whose name merely contains an O holds no object.
    named = np.ones(2, dtype=[("Obj", "i4"), ("O", "f8")])
    db.write(b"named", named)
    assert db.read(b"named") == named.tobytes()
    assert simdr.hash_key(named) == simdr.hash_key(named.tobytes())


# A buffer exporter that runs Python code while it exports, as a Cython class's
# __getbuffer__ does and, from Python 3.12, any class with __buffer__: built
# here with ctypes, whose callback is the type's bf_getbuffer slot.
EXPORTER_RUNNING_PYTHON = """
    import ctypes

    class Slot(ctypes.Structure):
        _fields_ = [("slot", ctypes.c_int), ("pfunc", ctypes.c_void_p)]

    class Spec(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("basicsize", ctypes.c_int),
                    ("itemsize", ctypes.c_int), ("flags", ctypes.c_uint),
                    ("slots", ctypes.POINTER(Slot))]

    api = ctypes.pythonapi
    api.PyType_FromSpec.restype = ctypes.py_object
    api.PyType_FromSpec.argtypes = [ctypes.POINTER(Spec)]
    api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
    GETBUFFER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p, ctypes.c_int)
    PY_BF_GETBUFFER, PY_TPFLAGS_BASETYPE = 1, 1 << 10

    def exporter(on_export):
        # Exporter(data): exporting it calls on_export(), then exports data's bytes.
        def getbuffer(obj, view, flags):
            on_export()
            return api.PyObject_GetBuffer(obj.data, view, flags)
        callback = GETBUFFER(getbuffer)
        slots = (Slot * 2)(Slot(PY_BF_GETBUFFER, ctypes.cast(callback, ctypes.c_void_p)),
                           Slot(0, None))
        spec = Spec(b"hostile.Exporter", 0, 0, PY_TPFLAGS_BASETYPE, slots)
        base = api.PyType_FromSpec(ctypes.byref(spec))
        return type("Exporter", (base,), {"__init__": lambda self, d: setattr(self, "data", d),
                                          "keep": (callback, slots, spec)})
"""


def test_an_exporter_emptying_the_list_being_read_cannot_crash_a_batch(tmp_path):
    # get_many and put_many turn each key and value into bytes while walking the
    # list they were given; an export that empties or shrinks that list (or the
    # [key, value] list of a pair) must not leave them reading freed slots.
    out = run_isolated(EXPORTER_RUNNING_PYTHON + """
    import os, sys
    import simdr
    db = simdr.open(os.path.join(sys.argv[1], "batch.bin"))
    db.put_many([(b"key", b"value"), (b"x1", b"1")])
    keys = []
    ClearsKeys = exporter(keys.clear)
    keys += [b"x1", ClearsKeys(b"key")] + [b"x%d" % i for i in range(2, 200)]
    found = db.get_many(keys)  # the keys as passed, whatever became of the list
    print(len(found), bytes(found[0]), bytes(found[1]), found[2])
    items = []
    ClearsItems = exporter(items.clear)
    items += [(b"a", b"1"), (ClearsItems(b"b"), b"2")] + [(b"c%d" % i, b"3") for i in range(200)]
    db.put_many(items)
    print(len(items), db.read(b"a"), db.read(b"b"), db.read(b"c199"))
    pair = [None, b"paired"]
    pair[0] = exporter(pair.clear)(b"p")
    db.put_many([pair])
    print(db.read(b"p"), db.check()["ok"])
    """, tmp_path)
    assert out.split("\n")[:3] == ["200 b'1' b'value' None", "0 b'1' b'2' b'3'", "b'paired' True"]


def test_values_past_2_gib_refused_cleanly_at_the_file_size_limit(tmp_path):
    # A 2 GiB + 1 value from an anonymous map (untouched: no memory used). With
    # the file size limit far below it the write fails as a full disk, leaves
    # the store as it was, and the store goes on working. Mapped appends fail
    # when they reserve the space, before any pass over the value (the write
    # mode's CRC pass over 2 GiB would take seconds).
    import mmap
    import resource
    import signal
    append_mode = "mapped"
    huge = memoryview(mmap.mmap(-1, (2 << 30) + 1)).toreadonly()
    path = tmp_path / "limited.bin"
    db = simdr.open(path, append_mode=append_mode)
    db.write(b"k", b"kept")
    size = db.info()["file_size"]
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, old[1]))
        for call in (lambda: db.write(b"big", huge),
                     lambda: db.put_many([(b"a", huge[:1 << 30]), (b"b", huge)])):
            with pytest.raises(simdr.DiskFullError):
                call()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert db.info()["file_size"] == size and len(db) == 1
    assert db.read(b"big") is None and db.read(b"a") is None and db.read(b"k") == b"kept"
    db.write(b"after", b"works")
    db.close()
    huge.release()
    with simdr.open(path) as again:
        assert again.check()["ok"] and again.read(b"after") == b"works" and len(again) == 2


def test_get_many_refuses_a_single_key(db):
    # A str or bytes is itself iterable: get_many("abc") looked up "a", "b"
    # and "c" and answered three entries for what was one key.
    db.put_many([(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"abc", b"4")])
    for single in ("abc", b"abc", bytearray(b"abc"), memoryview(b"abc")):
        with pytest.raises(TypeError, match="iterable of keys"):
            db.get_many(single)
    assert [bytes(h) for h in db.get_many(("a", b"abc"))] == [b"1", b"4"]
    assert [bytes(h) for h in db.get_many({b"b": None, "c": None})] == [b"2", b"3"]
    assert [bytes(h) for h in db.get_many(iter([b"c"]))] == [b"3"]
    assert [bytes(h) for h in db.get_many(np.array([b"a", b"abc"]))] == [b"1", b"4"]


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_views_outlive_the_store_object(tmp_path, append_mode):
    import gc
    import weakref
    db = simdr.open(tmp_path / "gone.bin", append_mode=append_mode)
    values = {b"k%d" % i: edge_value(100 + 5000 * i) for i in range(20)}
    db.put_many(list(values.items()))
    arrays = [np.frombuffer(db.read_entry(k), np.uint8) for k in values]
    views = [memoryview(h) for h in db.get_many(list(values))]
    stream = db.read_stream(b"k3")
    first = next(iter(db))  # the iterator dies here; the handle it gave stays
    db.compact()
    store = weakref.ref(db)
    del db
    gc.collect()
    assert store() is None  # deleted without close(): freed, file closed
    with simdr.open(tmp_path / "gone.bin") as again:  # the lock went with it
        assert again.read(b"k0") == values[b"k0"]
    assert [a.tobytes() for a in arrays] == list(values.values())
    assert [v.tobytes() for v in views] == list(values.values())
    assert stream.read() == values[b"k3"] and bytes(first) in values.values()


def test_a_dead_handle_weakref_never_points_to_a_reused_handle(db):
    import weakref
    db.write(b"a", b"first")
    db.write(b"b", b"second")
    h = db.read_entry(b"a")
    ref = weakref.ref(h)
    del h  # its object goes on the list of handles kept for reuse
    assert ref() is None
    reused = db.read_entry(b"b")
    assert ref() is None and bytes(reused) == b"second"


def _forked_child_checks(db, arr, expected):
    """Runs in the child: reads, views and refusals, then close(); exit status tells."""
    writes_refused = 0
    try:
        assert arr.tobytes() == expected
        assert db.read(b"k5") == b"v5" * 50 and len(db) == 100
        assert len(list(db)) == 100 and all(db.get_many([b"k%d" % i for i in range(100)]))
        for call in (lambda: db.write(b"child", b"1"), lambda: db.put_many([(b"c", b"1")]),
                     lambda: db.delete(b"k1"), db.compact, db.sync):
            try:
                call()
            except simdr.InvalidArgumentError:
                writes_refused += 1
        assert writes_refused == 5
        db.close()  # only frees the child's copy of the handle
        assert arr.tobytes() == expected
        return 0
    except BaseException:
        import traceback
        traceback.print_exc()
        return 1


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_forked_child_reads_and_keeps_views_but_cannot_write(tmp_path, append_mode):
    path = tmp_path / "forked.bin"
    db = simdr.open(path, append_mode=append_mode)
    db.put_many([(b"k%d" % i, b"v%d" % i * 50) for i in range(100)])
    arr = np.frombuffer(db.read_entry(b"k5"), np.uint8)
    pid = os.fork()
    if pid == 0:
        os._exit(_forked_child_checks(db, arr, b"v5" * 50))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's store is untouched by the child's close(): it goes on appending
    for i in range(100, 3000):
        db.write(b"k%d" % i, b"w%d" % i)
    assert arr.tobytes() == b"v5" * 50
    db.close()
    with simdr.open(path) as again:
        assert len(again) == 3000 and again.check()["ok"]
        assert again.info()["recovery"]["bytes_cut"] == 0


def test_forked_child_closes_a_store_another_thread_was_using_or_closing_at_the_fork(tmp_path):
    # The child of a fork has only the forking thread: a call another thread was
    # making at the fork (here a write_stream held in its reader), or a close()
    # waiting for that call, never ends in the child. Its close() must not wait
    # for them, and the parent's calls go on as if nothing happened.
    out = run_isolated("""
        import os, signal, sys, threading
        import simdr
        db = simdr.open(os.path.join(sys.argv[1], "forked.bin"))
        db.write(b"k", b"v")
        inside, release = threading.Event(), threading.Event()

        class Held:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls > 1:
                    return b""
                inside.set()
                release.wait()
                return b"streamed"

        def child(step):
            signal.alarm(20)  # a child that hangs ends instead of outliving the test
            before = db.closed
            value = db.read(b"k")
            db.close()
            try:
                db.read(b"k")
                after = "open"
            except simdr.ClosedError:
                after = "closed"
            print(step, before, value, db.closed, after, flush=True)
            os._exit(0)

        streamer = threading.Thread(target=db.write_stream, args=(b"s", Held()))
        streamer.start()
        inside.wait()
        if os.fork() == 0:
            child("during-a-call")
        os.wait()
        closer = threading.Thread(target=db.close)
        closer.start()
        while not db.closed:  # the close has begun and waits for the stream
            threading.Event().wait(0.001)
        if os.fork() == 0:
            child("during-a-close")
        os.wait()
        release.set()
        streamer.join()
        closer.join()
        with simdr.open(os.path.join(sys.argv[1], "forked.bin")) as again:
            print("parent", again.read(b"s"), again.read(b"k"))
    """, tmp_path)
    assert out.split("\n")[:3] == ["during-a-call False b'v' True closed",
                                   "during-a-close False b'v' True closed",
                                   "parent b'streamed' b'v'"]


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_a_forked_childs_close_leaves_readers_of_the_parents_store_seeing_its_appends(
        tmp_path, append_mode):
    # The writer publishes its committed tail in a page shared with every
    # process that has the store (docs/FORMAT.md, the side file); a child
    # letting go of the handle it inherited must not mark that page closed
    # under the parent, which goes on appending. Mapped appends leave the file
    # longer than the tail, so readers go by that page alone.
    path = tmp_path / "shared.bin"
    db = simdr.open(path, append_mode=append_mode)
    db.put_many([(b"k%d" % i, b"v%d" % i) for i in range(100)])
    reader = simdr.open(path, readonly=True)
    assert len(reader) == 100
    pid = os.fork()
    if pid == 0:
        db.close()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(100, 200):
        db.write(b"k%d" % i, b"v%d" % i)
    assert reader.refresh() == 100 and len(reader) == 200 and reader.read(b"k199") == b"v199"
    reader.close()
    db.close()
    with simdr.open(path) as again:
        assert len(again) == 200 and again.check()["ok"]


def _refreshing_reader(path, index, progress, stop, conn):
    try:
        ro = simdr.open(path, readonly=True)
        pinned = np.frombuffer(ro.read_entry(b"pinned"), np.uint8)
        while not stop.is_set():
            ro.refresh()
            for i in range(0, 100, 9):
                assert ro.read(b"k%d" % i) == b"v%d" % i * 20
            assert sum(1 for _ in ro) >= 101
            progress[index] += 1
        ro.refresh()
        conn.send((progress[index], ro.read(b"last"), pinned.tobytes() == b"P" * 4096))
        ro.close()
    except BaseException as e:
        conn.send(("error", repr(e), None))


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_reader_processes_refresh_while_the_writer_compacts(tmp_path, append_mode):
    # Each compaction replaces the file; each reader refreshes, reads and
    # iterates after every one of them, holding a view of the first file.
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / "shared.bin")
    db = simdr.open(path, append_mode=append_mode)
    db.write(b"pinned", b"P" * 4096)
    db.put_many([(b"k%d" % i, b"v%d" % i * 20) for i in range(100)])
    db.sync()
    stop, progress = ctx.Event(), ctx.Array("i", 2, lock=False)
    pipes = [ctx.Pipe() for _ in range(2)]
    readers = [ctx.Process(target=_refreshing_reader, args=(path, i, progress, stop, child))
               for i, (_, child) in enumerate(pipes)]
    for r in readers:
        r.start()

    def wait_for_a_step_of_each_reader():
        seen = list(progress)
        while any(progress[i] <= seen[i] for i in range(2)) and all(r.is_alive() for r in readers):
            threading.Event().wait(0.001)

    try:
        for round_ in range(8):
            wait_for_a_step_of_each_reader()
            db.put_many([(b"junk%d" % i, os.urandom(500)) for i in range(100)])
            for i in range(100):
                db.delete(b"junk%d" % i)
            db.compact()
        db.write(b"last", b"L")
        db.sync()
        wait_for_a_step_of_each_reader()
    finally:
        stop.set()
        results = [parent.recv() for parent, _ in pipes]
        for r in readers:
            r.join(30)
        db.close()
    for steps, last, pinned_intact in results:
        assert steps != "error", last
        assert steps >= 9 and last == b"L" and pinned_intact
    assert all(r.exitcode == 0 for r in readers)


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_eight_threads_mixing_everything_then_one_closes(tmp_path, append_mode):
    # Reads, writes, deletes, compaction, get_many, iteration, streams in and
    # out, and views taken by one thread checked by another after compactions;
    # thread 0 closes the store part way. Every thread ends with ClosedError,
    # every view still shows its bytes, and the file reopens sound.
    import io
    import random
    path = tmp_path / "mixed.bin"
    db = simdr.open(path, append_mode=append_mode)
    values = {b"k%d" % i: edge_value(1 + (i * 37) % 3000) for i in range(200)}
    db.put_many(list(values.items()))
    views, views_lock, outcome = [], threading.Lock(), []
    start = threading.Barrier(8)

    def worker(t):
        rng, steps = random.Random(t), 0
        start.wait()
        try:
            while True:
                op, key = rng.randrange(12), b"k%d" % rng.randrange(200)
                if op == 0:
                    db.write(b"w%d" % rng.randrange(50), edge_value(rng.randrange(1, 5000)))
                elif op == 1:
                    assert db.read(key) == values[key]
                elif op == 2:
                    with views_lock:
                        views.append((np.frombuffer(db.read_entry(key), np.uint8), values[key]))
                elif op == 3:
                    db.delete(b"w%d" % rng.randrange(50))
                elif op == 4:
                    db.compact()
                elif op == 5:
                    keys = rng.sample(list(values), 20)
                    assert [bytes(h) for h in db.get_many(keys)] == [values[k] for k in keys]
                elif op == 6:
                    assert sum(1 for _ in db) >= 200
                elif op == 7:
                    db.write_stream(b"s%d" % t, io.BytesIO(edge_value(20_000)))
                elif op == 8:
                    with views_lock:
                        shared = views[rng.randrange(len(views))] if views else None
                    if shared:  # taken by any thread, perhaps before a compaction
                        assert shared[0].tobytes() == shared[1]
                elif op == 9:
                    assert db.read_stream(key).read() == values[key]
                elif op == 10:
                    assert key in db and len(db) >= 200 and db.info()["count"] >= 200
                elif t == 0 and steps > 150:
                    db.close()
                steps += 1
        except simdr.ClosedError:
            outcome.append("closed")
        except BaseException as e:
            import traceback
            outcome.append(traceback.format_exc())
            db.close()  # let the other threads finish

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outcome == ["closed"] * 8, outcome
    assert all(a.tobytes() == v for a, v in views)
    with simdr.open(path) as again:
        assert again.check()["ok"]
        assert all(again.read(k) == v for k, v in values.items())


def test_no_call_leaks_references_or_memory(tmp_path):
    # Every method, on its success and on its error paths, many times over:
    # the arguments' reference counts come back and traced memory stays flat.
    import gc
    import io
    import sys
    import tracemalloc
    db = simdr.open(tmp_path / "leak.bin")
    other = simdr.open(tmp_path / "other.bin")
    closed = simdr.open(tmp_path / "closed.bin")
    closed.close()
    key, value, key_array, default = b"key", b"value" * 30, bytearray(b"key2"), object()
    db.put_many([(key, value), (key_array, value), (b"big", b"B" * 300_000)])
    held = [key, value, key_array, default, db, other]

    class Broken:
        def read(self, n):
            raise RuntimeError("reader broke")

    calls = [
        lambda: db.write(key, value), lambda: db.read(key), lambda: db.read(b"absent"),
        lambda: db.get(b"absent", default), lambda: db[key], lambda: db[b"absent"],
        lambda: db.read_entry(key_array), lambda: db.read_entry(b"absent"),
        lambda: db.read_stream(b"big").read(), lambda: db.read(b"big"),
        lambda: db.get_many([key, b"absent", key_array]), lambda: db.get_many(key),
        lambda: db.get_many([key, 5]), lambda: db.put_many([(key, value), (key_array, value)]),
        lambda: db.put_many({key: value}), lambda: db.put_many([(key, value), (key_array, b"")]),
        lambda: db.put_many([(key, value), (key_array, 5)]), lambda: db.put_many([(key,)]),
        lambda: key in db, lambda: db.exists(key_array), lambda: db.delete(b"absent"),
        lambda: db.__delitem__(b"absent"), lambda: db.rename(b"absent", key),
        lambda: db.rename(key, key), lambda: db.copy(key, other), lambda: db.copy(key, closed),
        lambda: db.move(b"absent", other), lambda: db.write_stream(b"s", io.BytesIO(value)),
        lambda: db.write_stream(b"s", Broken()), lambda: db.write_stream(b"s", io.BytesIO(b"")),
        lambda: list(db), lambda: db.info(), lambda: len(db), lambda: closed.read(key),
        lambda: closed.write(key, value), lambda: closed.get_many([key]),
        lambda: db.write(key, "str"), lambda: db.read(5), lambda: db.read("\\udc80"),
        lambda: simdr.hash_key(key_array),
        lambda: [h.as_slice() + h.raw_checksum() for h in [db.read_entry(key).clone_arc()]],
    ]
    rounds = 100
    gc.disable()  # nothing here makes cycles; a collection costs more than a call
    try:
        for call in calls:
            # The interpreter's caches and free lists settle first: some fill over
            # the first few hundred calls of a kind (see below).
            for _ in range(3 * rounds):
                try:
                    call()
                except Exception:
                    pass
            counts = [sys.getrefcount(o) for o in held]
            tracemalloc.start()
            traced = []
            for _ in range(4):  # what the first round leaves, the next ones must not add to
                for _ in range(rounds):
                    try:
                        call()
                    except Exception:
                        pass
                traced.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.stop()
            assert [sys.getrefcount(o) for o in held] == counts
            # A leaked object is at least 16 bytes: each round of calls would add
            # 16 * rounds. The interpreter's own caches fill over the first few
            # hundred calls of some kinds (exceptions raised through a stream
            # reader) and then stop growing: a leak grows in every round.
            growth = min(b - a for a, b in zip(traced, traced[1:]))
            assert growth < 8 * rounds, (traced, calls.index(call))
    finally:
        gc.enable()
        tracemalloc.stop()
    db.close()
    other.close()


def test_one_stream_read_by_threads_at_once_hands_out_each_byte_once(db):
    # EntryStream.read copies a large piece without the GIL; the piece must
    # be taken before that, or two threads take the same one and the
    # position runs past the end (the next read then copied past the value).
    value = edge_value(8 << 20)
    db.write(b"big", value)
    piece = 300 << 10  # above the size copied without the GIL
    for _ in range(3):
        stream = db.read_stream(b"big")
        pieces, lock = [], threading.Lock()

        def drain():
            while True:
                got = stream.read(piece)
                if not got:
                    return
                with lock:
                    pieces.append(got)

        threads = [threading.Thread(target=drain) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert stream.position == stream.size == len(value) and stream.read(10) == b""
        spans = sorted((value.find(p), len(p)) for p in pieces)
        assert [start for start, _ in spans] == list(range(0, len(value), piece))
        assert sum(n for _, n in spans) == len(value)


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_misbehaving_stream_readers_keep_nothing_and_leave_the_store_working(tmp_path,
                                                                          append_mode):
    db = simdr.open(tmp_path / "readers.bin", append_mode=append_mode)
    db.write(b"k", b"kept")
    db.write(b"source", edge_value(3 << 20))

    def reader(*chunks):
        class Reader:
            left = list(chunks)

            def read(self, n):
                chunk = self.left.pop(0) if self.left else b""
                if isinstance(chunk, BaseException):
                    raise chunk
                return chunk(n) if callable(chunk) else chunk
        return Reader()

    size = db.info()["file_size"]
    refused = [
        (reader(b"ok", "str"), TypeError), (reader(5), TypeError), (reader(None), simdr.Error),
        (reader([b"a"]), TypeError), (reader(memoryview(b"abcdef")[::2]), TypeError),
        (reader(b"x" * (3 << 20), RuntimeError("late")), RuntimeError),
        (reader(lambda n: b"y" * n, lambda n: b"y" * n, KeyboardInterrupt()), KeyboardInterrupt),
        (reader(b""), simdr.InvalidArgumentError), (reader(b"\x00" * 5000), simdr.InvalidArgumentError),
    ]
    for source, error in refused:
        with pytest.raises(error):
            db.write_stream(b"s", source)
        assert db.read(b"s") is None and db.info()["file_size"] == size
    # accepted: pieces larger and smaller than asked, views, the store's own map
    whole = db.read(b"source")
    db.write_stream(b"a", reader(lambda n: b"a" * (n + 1)))
    assert len(db.read(b"a")) == (1 << 20) + 1
    db.write_stream(b"own", reader(db.read_entry(b"source"), memoryview(whole)[:10],
                                   bytearray(b"tail")))
    assert db.read(b"own") == whole + whole[:10] + b"tail"
    db.write(b"after", b"works")
    assert db.read(b"k") == b"kept" and db.read(b"after") == b"works"
    db.close()
    with simdr.open(tmp_path / "readers.bin") as again:
        assert again.check()["ok"] and len(again) == 5


def test_malformed_batches_append_nothing(db):
    db.write(b"k", b"kept")

    def broken_pairs():
        yield (b"a", b"1")
        raise RuntimeError("source of pairs broke")

    class BrokenMapping:
        def keys(self):
            return [b"a"]

        def items(self):
            raise RuntimeError("items broke")

    size = db.info()["file_size"]
    for items, error in ((broken_pairs(), RuntimeError), (BrokenMapping(), RuntimeError),
                         ([((b"a", b"b"), b"1")], TypeError), ({b"a": 5}, TypeError),
                         ([(b"a", b"1"), (b"b", b"2", b"3")], TypeError), ("ab", TypeError),
                         (b"ab", TypeError), (None, TypeError), ([(b"a", b"1"), (5, b"2")], TypeError),
                         ([(b"a", b"1")] * 3 + [(b"b", b"")], simdr.InvalidArgumentError)):
        with pytest.raises(error):
            db.put_many(items)
        assert db.info()["file_size"] == size and db.read(b"a") is None
    db.put_many([[b"list", b"pair"]])
    db.put_many(zip([b"z1", b"z2"], [b"1", b"2"]))
    db.put_many({b"d": b"1"}.items())
    assert [db.read(k) for k in (b"list", b"z2", b"d", b"k")] == [b"pair", b"2", b"1", b"kept"]


def test_init_racing_in_two_threads_opens_one_store(tmp_path):
    # __init__ lets the GIL go while the engine opens the file; a second
    # __init__ on the same object meanwhile must not open a second store over
    # the first (which was then never closed, its file locked until exit).
    for attempt in range(5):
        db = simdr.DataStore.__new__(simdr.DataStore)
        paths = [tmp_path / ("race%d-%d.bin" % (attempt, i)) for i in range(2)]
        start, refused = threading.Barrier(2), []

        def init(path):
            start.wait()
            try:
                db.__init__(path)
            except simdr.Error:
                refused.append(path)

        threads = [threading.Thread(target=init, args=(p,)) for p in paths]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(refused) == 1
        db.close()
        for p in paths:  # neither file is left open and locked
            simdr.open(p).close()


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_closed_store_refuses_every_call_without_running_callbacks(tmp_path, append_mode):
    db = simdr.open(tmp_path / "c.bin", append_mode=append_mode)
    target = simdr.open(tmp_path / "t.bin")
    db.write(b"k", b"v")
    handle, it = db.read_entry(b"k"), iter(db)
    db.close()
    db.close()
    called = []

    class Watched:
        def read(self, n):
            called.append(n)
            return b""

    for call in (lambda: db.write_stream(b"s", Watched()), lambda: db.copy(b"k", target),
                 lambda: db.move(b"k", target), lambda: target.copy(b"k", db),
                 lambda: db.read_stream(b"k"), lambda: db.count(), lambda: db.exists(b"k"),
                 lambda: db.put_many([]), lambda: db.get_many([]), lambda: db.compact(),
                 lambda: db.sync(), lambda: db.refresh(), lambda: db.check(), lambda: next(it),
                 lambda: db.__setitem__(b"k", b"v"), lambda: db.__delitem__(b"k"),
                 lambda: db.rename(b"k", b"j"), lambda: iter(db), db.__enter__):
        with pytest.raises(simdr.ClosedError):
            call()
    assert called == [] and bytes(handle) == b"v" and db.closed
    assert "closed" in repr(db) and db.path == str(tmp_path / "c.bin")
    target.close()


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_read_only_store_refreshed_by_one_thread_while_others_read(tmp_path, append_mode):
    # One read-only handle shared by four threads that read, take views, batch
    # and iterate, and refresh it now and then, while the writer (same process,
    # its own handle) appends, deletes and compacts: every read and every view
    # keeps its bytes across the refreshes and the replaced files.
    path = tmp_path / "ro.bin"
    writer = simdr.open(path, append_mode=append_mode)
    values = {b"k%d" % i: edge_value(1 + i * 13) for i in range(300)}
    writer.put_many(list(values.items()))
    writer.sync()
    ro = simdr.open(path, readonly=True)
    stop, errors, views = threading.Event(), [], []

    def reader(t):
        try:
            step = 0
            while not stop.is_set() or step < 50:
                key = b"k%d" % ((step * 7 + t) % 300)
                assert ro.read(key) == values[key]
                if step % 5 == 0:
                    views.append((np.frombuffer(ro.read_entry(key), np.uint8), values[key]))
                if step % 17 == 0:
                    assert all(h is not None for h in ro.get_many(list(values)[:40]))
                if step % 41 == 0:
                    assert sum(1 for _ in ro) >= 300
                if step % 11 == t:
                    ro.refresh()
                step += 1
        except BaseException:
            import traceback
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    try:
        for round_ in range(10):
            writer.put_many([(b"j%d" % i, os.urandom(300)) for i in range(100)])
            for i in range(100):
                writer.delete(b"j%d" % i)
            writer.compact()
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert errors == []
    assert all(a.tobytes() == v for a, v in views)
    ro.refresh()
    assert len(ro) == 300
    ro.close()
    writer.close()


@contextlib.contextmanager
def scribbled(array, small):
    """While the block runs, another thread flips bytes of array and small."""
    started, stop = threading.Event(), threading.Event()

    def scribble():
        i = 0
        while not stop.is_set():
            array[(i * 4099) % array.size] ^= 0xFF
            small[i % 1000] ^= 0x01
            i += 1
            started.set()

    scribbler = threading.Thread(target=scribble)
    scribbler.start()
    started.wait()
    try:
        yield
    finally:
        stop.set()
        scribbler.join()


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_value_changed_by_another_thread_during_its_write_is_stored_whole(tmp_path,
                                                                          append_mode):
    # Writes run without the GIL, so another thread may change a writable
    # value (bytearray, numpy array) while the engine checksums and writes it.
    # Whatever mix of old and new bytes is stored, its checksum must match
    # it: the entry must never read back as damaged.
    db = simdr.open(tmp_path / "racy.bin", append_mode=append_mode)
    array = np.zeros(4 << 20, np.uint8)
    array[0] = 1
    small = bytearray(b"s" * 1000)
    with scribbled(array, small):
        for r in range(8):
            db.write(b"a%d" % r, array)
            db.write(b"s%d" % r, small)
            db.put_many([(b"pa%d" % r, array), (b"ps%d" % r, small)])
    for r in range(8):
        for key in (b"a%d" % r, b"s%d" % r, b"pa%d" % r, b"ps%d" % r):
            assert db.read_entry(key).is_valid_checksum(), key
    assert db.check()["ok"]
    # a large writable value of zero bytes only is stored as simdr_put stores it
    # (a stream of zero bytes only would be refused)
    db.write(b"zeros", np.zeros(1 << 20, np.uint8))
    assert db.read(b"zeros") == bytes(1 << 20)
    frozen_zeros = np.zeros(1 << 20, np.uint8)
    frozen_zeros.flags.writeable = False  # read-only: the same path
    db.write(b"frozen zeros", frozen_zeros)
    assert db.read(b"frozen zeros") == bytes(1 << 20)
    db.close()


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_a_read_only_view_of_memory_another_thread_changes_is_stored_whole(tmp_path,
                                                                           append_mode):
    # A read-only view says nothing of the memory behind it: a numpy array
    # made read-only, or memoryview(bytearray).toreadonly(), still shows bytes
    # another thread changes through the writable original while the engine
    # checksums and writes them. Below 256 KiB such a value is copied first,
    # so the stored entry matches its checksum whatever the other thread does.
    import tracemalloc
    db = simdr.open(tmp_path / "racy-views.bin", append_mode=append_mode)
    array = np.zeros(60_000, np.uint8)
    frozen = array.view()
    frozen.flags.writeable = False
    small = bytearray(b"s" * 1000)
    views = {b"array": frozen, b"view": memoryview(small).toreadonly()}
    with scribbled(array, small):
        for r in range(300):
            for name, view in views.items():
                db.write(b"%s %d" % (name, r), view)
                db.put_many([(b"batch %s %d" % (name, r), view)])
    report = db.check()
    assert report["ok"] and report["entries"] == 1200, report["issues"][:3]
    # From 256 KiB up a single write streams the value through the engine's
    # bounded buffer: no copy of its size, read-only or not.
    big = np.ones(64 << 20, np.uint8)
    big.flags.writeable = False
    tracemalloc.start()
    db.write(b"big", memoryview(big))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20 and db.read_entry(b"big").is_valid_checksum()
    db.close()


@pytest.mark.parametrize("append_mode", ["write", "mapped", "zeroed"])
def test_a_large_read_only_view_of_memory_another_thread_changes_is_stored_whole(
        tmp_path, append_mode):
    # The same from 256 KiB up, where the engine is left to read the value
    # without the GIL: a read-only numpy array, a memoryview of it, and a
    # read-only memoryview of a bytearray, all over memory another thread keeps
    # changing, written alone and in batches. Each entry must read back as some
    # value of the right length whose checksum matches it.
    db = simdr.open(tmp_path / "racy-big-views.bin", append_mode=append_mode)
    array = np.zeros(4 << 20, np.uint8)
    array[0] = 1
    frozen = array.view()
    frozen.flags.writeable = False
    scribbled_bytes = bytearray(b"s" * (1 << 20))
    views = {b"array": frozen, b"view": memoryview(frozen),
             b"bytes view": memoryview(scribbled_bytes).toreadonly()}
    with scribbled(array, scribbled_bytes):
        for r in range(6):
            for name, view in views.items():
                db.write(b"%s %d" % (name, r), view)
                db.put_many([(b"batch %s %d" % (name, r), view), (b"small %d" % r, b"x")])
    for r in range(6):
        for name, view in views.items():
            for key in (b"%s %d" % (name, r), b"batch %s %d" % (name, r)):
                assert db.read_entry(key).is_valid_checksum(), key
                assert len(db.read(key)) == view.nbytes, key
    report = db.check()
    assert report["ok"], report["issues"][:3]
    db.close()


def test_a_batch_holds_one_copy_of_a_large_value_that_may_change(tmp_path):
    # A batch is one append, so its values cannot be streamed one at a time:
    # a large value whose bytes may change is copied (without the GIL) for the
    # length of the call, one copy of its size, while bytes are used in place.
    import tracemalloc
    db = simdr.open(tmp_path / "batch-copy.bin")
    big = np.ones(16 << 20, np.uint8)
    big.flags.writeable = False
    frozen_bytes = big.tobytes()
    tracemalloc.start()
    db.put_many([(b"in place", frozen_bytes)])
    in_place_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    db.put_many([(b"copied", big)])
    copied_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert in_place_peak < 1 << 20
    assert big.nbytes <= copied_peak < big.nbytes + (1 << 20)
    assert db.read(b"copied") == frozen_bytes == db.read(b"in place")
    db.close()
