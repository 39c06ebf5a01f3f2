"""DataStore.release_memory(): after it, the store file's pages read through
the map are no longer resident in this process ("Rss:" of the file's
mappings in /proc/self/smaps), while a memoryview and a numpy array taken
before keep their bytes and every value reads back right."""
import os

import numpy as np

import simdr

KEYS = 60000


def resident_bytes(path):
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = len(head) >= 6 and head[5] == path
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


def test_release_memory_unmaps_and_views_survive(tmp_path):
    path = os.path.realpath(str(tmp_path / "m.bin"))
    with simdr.open(path) as db:
        db.put_many({b"k%06d" % i: b"value-%06d" % i for i in range(KEYS)})
        floats = np.arange(4096, dtype=np.float32)
        db[b"array"] = floats.tobytes()
        view = memoryview(db.read_entry(b"k000042"))
        array = np.frombuffer(db.read_entry(b"array"), dtype=np.float32)
        for i in range(KEYS):
            assert db.read(b"k%06d" % i) == b"value-%06d" % i
        size = os.path.getsize(path)
        assert resident_bytes(path) * 2 > size
        assert db.release_memory() is None
        assert resident_bytes(path) * 4 <= size
        assert bytes(view) == b"value-000042"
        assert np.array_equal(array, floats)
        for i in range(0, KEYS, 7):
            assert db.read(b"k%06d" % i) == b"value-%06d" % i
    with simdr.open(path, readonly=True) as ro:
        assert ro.read(b"k000001") == b"value-000001"
        ro.release_memory()
        assert ro.read(b"k000002") == b"value-000002"


def test_release_memory_of_a_closed_store_raises(tmp_path):
    db = simdr.open(str(tmp_path / "c.bin"))
    db.close()
    try:
        db.release_memory()
    except simdr.Error:
        pass
    else:
        raise AssertionError("release_memory on a closed store did not raise")
