"""Every DataStore, EntryHandle, EntryStream and NamespaceHasher member, one behaviour each."""
import io
import os
import struct

import pytest

import simdr


def test_open_function_and_constructor_are_the_same(store_path):
    with simdr.open(store_path) as a:
        a.write(b"k", b"v")
    b = simdr.DataStore(store_path)
    assert isinstance(b, simdr.DataStore)
    assert b.read(b"k") == b"v"
    b.close()


def test_path_like_and_bytes_paths(tmp_path):
    p = tmp_path / "p.bin"
    with simdr.open(p) as db:
        db[b"x"] = b"1"
        assert db.path == str(p)
    with simdr.open(os.fsencode(str(p))) as db:
        assert db[b"x"] == b"1"


def test_write_read_overwrite(db):
    assert db.write(b"k", b"one") is None
    assert db.read(b"k") == b"one"
    db.write(b"k", b"two")
    assert db.read(b"k") == b"two"
    assert db.read(b"absent") is None


def test_key_types_are_equivalent(db):
    db.write("clé", b"v1")
    assert db.read("clé".encode()) == b"v1"
    assert db.read(bytearray("clé".encode())) == b"v1"
    assert db.read(memoryview("clé".encode())) == b"v1"


def test_value_types(db):
    import array
    db.write(b"a", bytearray(b"ba"))
    db.write(b"b", memoryview(b"mv"))
    db.write(b"c", array.array("i", [1, 2]))
    assert db.read(b"a") == b"ba"
    assert db.read(b"b") == b"mv"
    assert db.read(b"c") == array.array("i", [1, 2]).tobytes()


def test_batch_write_and_put_many(db):
    assert db.batch_write([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]) is None
    assert db.read(b"a") == b"3"  # a later item for the same key wins
    db.put_many({b"c": b"4", "d": b"5"})
    db.put_many(iter([(b"e", b"6")]))
    db.put_many([])
    assert [db.read(k) for k in (b"b", b"c", b"d", b"e")] == [b"2", b"4", b"5", b"6"]
    assert len(db) == 5


def test_batch_refused_whole_when_one_value_is_bad(db):
    with pytest.raises(simdr.InvalidArgumentError):
        db.put_many([(b"a", b"1"), (b"b", b"")])
    assert len(db) == 0 and db.read(b"a") is None


def test_write_stream_and_read_stream(db):
    payload = os.urandom(300_000)
    assert db.write_stream(b"big", io.BytesIO(payload)) is None
    assert db.read(b"big") == payload
    stream = db.read_stream(b"big")
    assert isinstance(stream, simdr.EntryStream)
    assert stream.read(10) == payload[:10]
    rest = b"".join(stream)
    assert payload[:10] + rest == payload
    assert stream.read(5) == b""
    whole = db.read_stream(b"big")
    chunks = list(whole)
    assert all(len(c) <= 65536 for c in chunks) and b"".join(chunks) == payload
    assert db.read_stream(b"absent") is None
    again = db.read_stream(b"big")
    assert again.read() == payload and again.position == len(payload) == again.size


def test_write_stream_reader_returning_more_than_asked(db):
    class Greedy:
        def __init__(self):
            self.parts = [b"x" * 1_000_000, b"y" * 10]

        def read(self, n):
            return self.parts.pop(0) if self.parts else b""

    db.write_stream(b"g", Greedy())
    assert db.read(b"g") == b"x" * 1_000_000 + b"y" * 10


def test_write_stream_reader_exception_propagates_and_keeps_nothing(db):
    class Broken:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("source broke")
            return b"z" * n

    size_before = db.info()["file_size"]
    with pytest.raises(RuntimeError, match="source broke"):
        db.write_stream(b"s", Broken())
    assert db.read(b"s") is None
    assert db.info()["file_size"] == size_before


def test_write_stream_reader_cannot_write_same_store(db):
    class Reentrant:
        done = False

        def read(self, n):
            if not self.done:
                self.done = True
                db.write(b"other", b"1")  # would wait for the stream's own lock
            return b""

    with pytest.raises(simdr.Error, match="write_stream"):
        db.write_stream(b"s", Reentrant())
    db.write(b"after", b"ok")  # the store is usable afterwards
    assert db.read(b"after") == b"ok"


def test_read_entry_members(db):
    db.write(b"k", b"payload")
    h = db.read_entry(b"k")
    assert isinstance(h, simdr.EntryHandle)
    assert h.size == len(h) == h.len() == 7
    assert h.file_size == h.size_with_metadata == 7 + simdr.METADATA_SIZE
    assert h.key_hash == simdr.hash_key(b"k")
    assert h.as_slice() == bytes(h) == b"payload"
    assert h.as_memoryview().tobytes() == b"payload"
    assert h.is_valid_checksum() is True
    assert h.raw_checksum() == struct.pack("<I", h.checksum)
    import zlib
    assert h.checksum == zlib.crc32(b"payload")
    assert h.offset_range() == (h.start_offset, h.end_offset)
    assert h.end_offset - h.start_offset == 7
    with open(db.path, "rb") as f:
        f.seek(h.start_offset)
        assert f.read(7) == b"payload"
    start, end = h.address_range()
    assert end - start == 7
    c = h.clone_arc()
    assert bytes(c) == b"payload" and c.address_range() == h.address_range()
    assert db.read_entry(b"absent") is None
    assert "EntryHandle size=7" in repr(h)


def test_delete_and_exists(db):
    db.write(b"k", b"v")
    assert db.exists(b"k") and b"k" in db
    assert db.delete(b"k") is None
    assert not db.exists(b"k") and b"k" not in db
    assert db.read(b"k") is None
    db.delete(b"k")  # absent: no error, nothing appended
    assert len(db) == 0


def test_mapping_protocol(db):
    db[b"a"] = b"1"
    db["b"] = b"2"
    assert db[b"a"] == b"1" and db["b"] == b"2"
    assert len(db) == 2
    del db[b"a"]
    with pytest.raises(KeyError):
        db[b"a"]
    with pytest.raises(KeyError):
        del db[b"a"]
    assert db.get(b"a") is None and db.get(b"a", b"dflt") == b"dflt" and db.get(b"b") == b"2"


def test_get_many(db):
    db.put_many([(b"k%d" % i, b"v%d" % i) for i in range(600)])
    keys = [b"k%d" % i for i in range(0, 600, 2)] + [b"nope", "k1"]
    got = db.get_many(keys)
    assert len(got) == len(keys)
    for k, h in zip(keys[:-2], got):
        assert bytes(h) == b"v" + k[1:]
    assert got[-2] is None and bytes(got[-1]) == b"v1"
    assert db.get_many([]) == []


def test_rename(db):
    db.write(b"old", b"v")
    assert db.rename(b"old", b"new") is None
    assert db.read(b"old") is None and db.read(b"new") == b"v"
    with pytest.raises(KeyError):
        db.rename(b"old", b"x")
    with pytest.raises(simdr.InvalidArgumentError):
        db.rename(b"new", b"new")


def test_copy_and_move(tmp_path, db):
    with simdr.open(tmp_path / "other.bin") as other:
        db.write(b"a", b"1")
        db.write(b"b", b"2")
        db.copy(b"a", other)
        assert db.read(b"a") == b"1" and other.read(b"a") == b"1"
        db.move(b"b", other)
        assert db.read(b"b") is None and other.read(b"b") == b"2"
        with pytest.raises(KeyError):
            db.copy(b"zz", other)
        with pytest.raises(TypeError):
            db.copy(b"a", "not a store")
        with pytest.raises(simdr.InvalidArgumentError):
            db.copy(b"a", db)


def test_len_count_compact(db):
    for i in range(100):
        db.write(b"k%d" % (i % 10), b"v%d" % i)
    assert len(db) == db.count() == 10
    before = db.info()
    assert before["compaction_savings"] > 0
    assert db.compact() is None
    after = db.info()
    assert after["file_size"] == before["file_size"] - before["compaction_savings"]
    assert after["compaction_savings"] == 0
    assert [db.read(b"k%d" % i) for i in range(10)] == [b"v%d" % (90 + i) for i in range(10)]


def test_check_sound_and_damaged(store_path):
    with simdr.open(store_path) as db:
        db.write(b"a", b"A" * 100)
        db.write(b"b", b"B" * 100)
        report = db.check()
        assert report["ok"] is True and report["entries"] == 2 and report["issues"] == []
        offset = db.read_entry(b"a").start_offset
    with open(store_path, "r+b") as f:
        f.seek(offset + 10)
        f.write(b"X")
    with simdr.open(store_path, readonly=True) as ro:
        report = ro.check()
        assert report["ok"] is False and report["bad_entries"] == 1
        issue = report["issues"][0]
        assert issue["key_hash"] == simdr.hash_key(b"a")
        assert issue["code"] == -11  # SIMDR_ECHECKSUM
        # Reads verify the value's checksum: damaged bytes are never handed out.
        with pytest.raises(simdr.CorruptError):
            ro.read_entry(b"a")
        with pytest.raises(simdr.CorruptError):
            ro.read(b"a")


def test_info(db, store_path):
    db.write(b"k", b"v")
    info = db.info()
    assert info["path"] == store_path and info["count"] == 1 and info["layout"] == "aligned"
    assert info["readonly"] is False and info["durability"] == "none"
    assert info["file_size"] == os.path.getsize(store_path)
    assert info["recovery"]["bytes_cut"] == 0


def test_info_names_the_saved_tail_in_the_type_of_the_path_whatever_its_bytes(tmp_path):
    # A directory whose name is not UTF-8 (Linux allows any bytes but / and NUL):
    # the open saves a torn tail beside the store, and info() names that file in
    # the type of the path the store was opened with, usable with os as is.
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff")
    os.mkdir(folder)
    store = os.path.join(folder, b"s.bin")
    for path in (store, os.fsdecode(store)):
        with simdr.open(path) as db:
            db.write(b"k", b"kept")
        with open(store, "ab") as f:
            f.write(b"torn tail")
        with simdr.open(path) as db:
            recovery = db.info()["recovery"]
            assert recovery["bytes_cut"] == len(b"torn tail")
            saved = recovery["saved_path"]
            assert type(saved) is type(path) and os.path.dirname(saved) == os.path.dirname(path)
            with open(saved, "rb") as f:
                assert f.read() == b"torn tail"
            assert db.info()["path"] == path and db.read(b"k") == b"kept"
        os.remove(saved)
    with simdr.open(store) as db:  # nothing cut: an empty name of the same type
        assert db.info()["recovery"]["saved_path"] == b""
    with simdr.open(os.fsdecode(store)) as db:
        assert db.info()["recovery"]["saved_path"] == ""


def test_options(tmp_path):
    p = tmp_path / "u.bin"
    with simdr.open(p, layout="unaligned", durability="data") as db:
        db.write(b"k", b"v")
        assert db.info()["layout"] == "unaligned" and db.info()["durability"] == "data"
        assert db.sync() is None
    with pytest.raises(simdr.StoreNotFoundError):
        simdr.open(tmp_path / "missing.bin", create=False)
    with pytest.raises(simdr.StoreNotFoundError):
        simdr.open(tmp_path / "missing.bin", readonly=True)
    with pytest.raises(simdr.InvalidArgumentError):
        simdr.open(p, durability="sometimes")
    with pytest.raises(TypeError):
        simdr.open(p, layout=3)


def test_expected_keys_sizes_the_index_at_open(tmp_path):
    # The engine's expected_keys: the index is sized for the count at open
    # (10 to 15 bytes a key), so a bulk load of that many keys never grows it.
    small = simdr.open(tmp_path / "small.bin")
    sized = simdr.open(tmp_path / "sized.bin", expected_keys=100_000)
    assert sized.info()["index_bytes"] >= 10 * 100_000 > small.info()["index_bytes"]
    before = sized.info()["index_bytes"]
    sized.put_many([(b"k%d" % i, b"v%d" % i) for i in range(100_000)])
    assert sized.info()["index_bytes"] == before and len(sized) == 100_000
    assert sized[b"k99999"] == b"v99999"
    small.close()
    sized.close()
    with simdr.DataStore(tmp_path / "none.bin", expected_keys=None) as db:
        db[b"a"] = b"1"
    with pytest.raises(ValueError):
        simdr.open(tmp_path / "neg.bin", expected_keys=-1)
    with pytest.raises(TypeError):
        simdr.open(tmp_path / "str.bin", expected_keys="10")
    with pytest.raises(simdr.InvalidArgumentError):
        simdr.open(tmp_path / "huge.bin", expected_keys=4_000_000_000)
    assert not os.path.exists(tmp_path / "huge.bin")


def test_readonly_open_and_refresh(store_path):
    w = simdr.open(store_path)
    w.write(b"a", b"1")
    ro = simdr.open(store_path, readonly=True)
    assert ro.readonly and ro.read(b"a") == b"1"
    with pytest.raises(simdr.ReadOnlyError):
        ro.write(b"b", b"2")
    with pytest.raises(simdr.ReadOnlyError):
        ro.compact()
    w.write(b"b", b"2")
    w.write(b"c", b"3")
    assert ro.read(b"b") is None
    assert ro.refresh() == 2
    assert ro.read(b"b") == b"2" and ro.read(b"c") == b"3"
    assert w.refresh() == 0
    ro.close()
    w.close()


def test_second_writer_is_locked_out(store_path):
    with simdr.open(store_path):
        with pytest.raises(simdr.LockedError) as info:
            # flock is per open file description: a second open in this process is refused too
            simdr.open(store_path)
        assert info.value.code == -7 and "lock" in str(info.value)


def test_iteration_yields_live_entries_newest_first(db):
    db.write(b"a", b"1")
    db.write(b"b", b"2")
    db.write(b"a", b"3")
    db.write(b"c", b"4")
    db.delete(b"b")
    got = [(h.key_hash, bytes(h)) for h in db]
    assert got == [(simdr.hash_key(b"c"), b"4"), (simdr.hash_key(b"a"), b"3")]
    it = iter(db)
    first = next(it)
    db.write(b"d", b"5")  # the iterator's snapshot does not see later appends
    assert [bytes(first)] + [bytes(h) for h in it] == [b"4", b"3"]


def test_iteration_is_a_snapshot_across_deletes_overwrites_and_compaction(db):
    db.put_many([(b"k%d" % i, b"v%d" % i) for i in range(1000)])
    it = iter(db)
    seen = [bytes(next(it)) for _ in range(10)]
    db.put_many([(b"n%d" % i, b"new") for i in range(3000)])  # the index grows
    for i in range(500):
        db.delete(b"k%d" % i)
    db.compact()
    db.put_many([(b"k%d" % i, b"changed") for i in range(500, 600)])
    seen += [bytes(h) for h in it]
    assert sorted(seen) == sorted(b"v%d" % i for i in range(1000))
    assert len(db) == 3500 and sum(1 for _ in db) == 3500


def test_context_manager_closes(store_path):
    with simdr.open(store_path) as db:
        assert not db.closed
    assert db.closed
    db.close()  # twice is fine
    assert "closed" in repr(db)


def test_namespace_hasher_matches_the_reference_rule():
    ns = simdr.NamespaceHasher(b"namespaceA")
    out = ns.namespace(b"user:1")
    expected = (simdr.hash_key(b"namespaceA").to_bytes(8, "little")
                + simdr.hash_key(b"user:1").to_bytes(8, "little"))
    assert out == expected and len(out) == 16
    assert out != simdr.NamespaceHasher(b"namespaceB").namespace(b"user:1")
    assert ns.namespace(b"user:1") == out
    assert simdr.NamespaceHasher("namespaceA").namespace("user:1") == out
    assert ns.prefix == b"namespaceA"


def test_namespaced_keys_work_as_keys(db):
    a, b = simdr.NamespaceHasher(b"A"), simdr.NamespaceHasher(b"B")
    db.write(a.namespace(b"k"), b"1")
    db.write(b.namespace(b"k"), b"2")
    assert db.read(a.namespace(b"k")) == b"1" and db.read(b.namespace(b"k")) == b"2"


def test_hash_key_is_xxh3_64():
    # XXH3-64 with seed 0 of the empty input, a published test vector of xxHash
    assert simdr.hash_key(b"") == 0x2D06800538D394C2


def test_version():
    assert simdr.engine_version() == simdr.ENGINE_VERSION
    assert simdr.__version__


def test_help_renders():
    import pydoc
    text = pydoc.render_doc(simdr, renderer=pydoc.plaintext)
    for name in ("DataStore", "EntryHandle", "read_entry", "get_many", "zero-copy"):
        assert name in text


def test_write_stream_reader_cannot_close_same_store(db):
    class Closer:
        def read(self, n):
            db.close()  # would wait for the stream's own call to end
            return b""

    with pytest.raises(simdr.Error, match="write_stream"):
        db.write_stream(b"s", Closer())
    assert not db.closed
    db.write(b"k", b"v")
    assert db.read(b"k") == b"v"


def test_context_manager_closes_on_exception(store_path):
    with pytest.raises(RuntimeError):
        with simdr.open(store_path) as db:
            db.write(b"k", b"v")
            raise RuntimeError("boom")
    assert db.closed
    with simdr.open(store_path) as again:  # the lock was released
        assert again.read(b"k") == b"v"


class BytesKey(bytes):
    pass


class StrKey(str):
    pass


def test_every_read_agrees_on_small_and_large_values(db):
    # Copying reads and presence serve values from a read scope: checked ones
    # up to 64 bytes (checked in line), unchecked ones below 256 KiB; larger
    # ones go through a handle (from 256 KiB without the GIL). Handles check
    # values up to 64 bytes in line. Every size on and around those edges
    # reads back the same through every read call.
    sizes = [1, 7, 8, 9, 15, 16, 63, 64, 65, 255, 256, 257, 511, 512, 513, 4096,
             256 * 1024 - 1, 256 * 1024, 300_000]
    for n in sizes:
        value = os.urandom(n)
        if value == b"\x00":  # the single byte 0x00 is the tombstone marker: refused
            value = b"\x01"
        key = b"size%d" % n
        db.write(key, value)
        for k in (key, bytearray(key), memoryview(key), BytesKey(key), key.decode()):
            assert db.read(k) == value
            assert db.get(k) == value and db.get(k, b"d") == value
            assert db[k] == value
            assert bytes(db.read_entry(k)) == value
            assert k in db and db.exists(k)
    assert db.read(StrKey("size8")) == db.read(b"size8")
    assert db.get(b"absent") is None and db.get(b"absent", b"d") == b"d"
    with pytest.raises(KeyError):
        db[b"absent"]
    assert b"absent" not in db and db.read(b"absent") is None
    with pytest.raises(TypeError):
        db.read(12)
    with pytest.raises(TypeError):
        db.get()


def damage_value(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset + 3)
        byte = f.read(1)
        f.seek(offset + 3)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_every_read_agrees_without_the_check(tmp_path):
    with simdr.open(tmp_path / "v.bin", verify_reads=False) as db:
        test_every_read_agrees_on_small_and_large_values(db)


def test_verify_reads_option(store_path):
    # small: checked in line (up to 64 bytes); medium and large: checked by
    # the engine, large ones without the GIL.
    small, medium, large = b"s" * 20, b"m" * 200, b"L" * 5000
    with simdr.open(store_path) as db:
        db.write(b"small", small)
        db.write(b"medium", medium)
        db.write(b"large", large)
        db.write(b"sound", b"ok")
        offsets = [db.read_entry(k).start_offset for k in (b"small", b"medium", b"large")]
    for offset in offsets:
        damage_value(store_path, offset)
    with simdr.open(store_path, readonly=True) as ro:  # verify_reads=True by default
        for key in (b"small", b"medium", b"large"):
            for read in (ro.read, ro.read_entry, ro.get, ro.__getitem__, ro.exists,
                         ro.__contains__, ro.read_stream):
                with pytest.raises(simdr.CorruptError):
                    read(key)
        assert ro.read(b"sound") == b"ok"
        for keys in ([b"small"], [b"sound", b"large"]):
            with pytest.raises(simdr.CorruptError):
                ro.get_many(keys)
        assert bytes(ro.get_many([b"sound", b"absent"])[0]) == b"ok"
        # Iteration reports each damaged value once and goes on past it.
        it, sizes, damaged = iter(ro), [], 0
        while True:
            try:
                sizes.append(len(next(it)))
            except simdr.CorruptError:
                damaged += 1
            except StopIteration:
                break
        assert sizes == [2] and damaged == 3
        assert ro.info()["verify_reads"] is True
    with simdr.open(store_path, readonly=True, verify_reads=False) as ro:
        assert ro.info()["verify_reads"] is False
        assert [h is not None for h in ro.get_many([b"small", b"medium", b"large"])] == [True] * 3
        for key, value in ((b"small", small), (b"medium", medium), (b"large", large)):
            handle = ro.read_entry(key)
            assert handle.is_valid_checksum() is False
            got = ro.read(key)
            assert len(got) == len(value) and got != value
            assert ro.exists(key)
        assert sorted(len(h) for h in ro) == [2, 20, 200, 5000]


def write_every_way(db, values):
    """values written by single puts (the first half) and one batch (the
    rest), then k7 deleted (from values too)."""
    items = list(values.items())
    for k, v in items[:len(items) // 2]:
        db.write(k, v)
    db.batch_write(items[len(items) // 2:])
    db.delete(b"k7")
    del values[b"k7"]


def test_append_mode_mapped(tmp_path):
    # Mapped appends: the file runs ahead of its last entry (preallocated
    # zeros) while open and is cut back to it by sync() and close(); every
    # write path reads back, in this handle, a read-only one and after reopen.
    path = tmp_path / "mapped.bin"
    values = {b"k%d" % i: os.urandom(1 + i % 300) + b"!" for i in range(2000)}
    with simdr.open(path, append_mode="mapped") as db:
        assert db.info()["append_mode"] == "mapped"
        write_every_way(db, values)
        assert os.path.getsize(path) > db.info()["file_size"]  # the preallocated zeros
        assert all(db.read(k) == v for k, v in values.items())
        with simdr.open(path, readonly=True) as ro:
            assert ro.info()["append_mode"] == "write"
            assert all(ro.read(k) == v for k, v in values.items())
            assert ro.read(b"k7") is None
        db.sync()
        assert os.path.getsize(path) == db.info()["file_size"]
        db.write(b"after sync", b"x" * 100)
        values[b"after sync"] = b"x" * 100
    size = os.path.getsize(path)
    with simdr.open(path) as db:
        assert db.info()["file_size"] == size and db.info()["recovery"]["bytes_cut"] == 0
        assert len(db) == len(values)
        assert all(db.read(k) == v for k, v in values.items())
    with pytest.raises(simdr.InvalidArgumentError):
        simdr.open(tmp_path / "bad.bin", append_mode="mmap")
    with pytest.raises(TypeError):
        simdr.open(tmp_path / "bad.bin", append_mode=1)


def test_append_mode_zeroed(tmp_path):
    # Zeroed appends: zeros written ahead of the last entry stay across
    # sync() (its fdatasync changes no file length) and are cut by close();
    # durable writes, a read-only reader and a reopen see every write.
    path = tmp_path / "zeroed.bin"
    values = {b"k%d" % i: os.urandom(1 + i % 300) + b"!" for i in range(2000)}
    with simdr.open(path, append_mode="zeroed", durability="data") as db:
        assert db.info()["append_mode"] == "zeroed"
        write_every_way(db, values)
        ahead = os.path.getsize(path)
        assert ahead > db.info()["file_size"]
        with open(path, "rb") as f:
            f.seek(db.info()["file_size"])
            assert f.read().strip(b"\0") == b""
        db.sync()
        assert os.path.getsize(path) == ahead
        with simdr.open(path, readonly=True) as ro:
            assert all(ro.read(k) == v for k, v in values.items())
            assert ro.read(b"k7") is None
        tail = db.info()["file_size"]
    assert os.path.getsize(path) == tail
    with simdr.open(path) as db:
        assert db.info()["recovery"]["bytes_cut"] == 0
        assert len(db) == len(values)
        assert all(db.read(k) == v for k, v in values.items())
    # What a crash leaves (zeros after the last entry): a read-only open
    # reports them as zeros_only and check() finds the store sound.
    with open(path, "ab") as f:
        f.write(bytes(1 << 16))
    with simdr.open(path, readonly=True) as ro:
        rec = ro.info()["recovery"]
        assert rec["bytes_cut"] == 1 << 16 and rec["zeros_only"] is True
        ro.check()
        assert len(ro) == len(values)
    with simdr.open(path) as db:
        rec = db.info()["recovery"]
        assert rec["truncated"] is True and rec["zeros_only"] is True and not rec["saved_path"]
    with pytest.raises(simdr.InvalidArgumentError, match="'write', 'mapped' or 'zeroed'"):
        simdr.open(tmp_path / "bad.bin", append_mode="zero")


def test_a_relative_path_keeps_naming_the_store_after_chdir(tmp_path, monkeypatch):
    # The engine names the store's files (the compacted file, the side file,
    # a saved torn tail, the file a refresh looks for) from the path it was
    # given: a relative one, read again after os.chdir, named files in the new
    # directory: compaction wrote the store there and later writes went to it.
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    db = simdr.open("rel.bin")
    ro = simdr.open("rel.bin", readonly=True)
    db[b"k"] = b"1"
    db[b"k"] = b"2"
    monkeypatch.chdir(elsewhere)
    db.compact()
    db[b"after"] = b"3"
    assert ro.refresh() >= 0 and ro.read(b"after") == b"3"
    db.close()
    ro.close()
    assert os.listdir(elsewhere) == []
    assert db.path == "rel.bin"  # the path as given
    with simdr.open(home / "rel.bin") as again:
        assert again.read(b"k") == b"2" and again.read(b"after") == b"3"
