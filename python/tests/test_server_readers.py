"""Read-only opens of a live simdr-server's store files (DIR/db-N.simdr) in
other processes: while the server writes, appends, expires, swaps and flushes
databases, compacts, and is killed and restarted, readers that refresh and
iterate must never crash and never see a value the server did not hold (each
value here names its key and describes its own bytes), and memoryviews they
hold keep their bytes. Needs simdr-server (SIMDR_SERVER_BIN, set by ctest when
it is built) and the redis module."""
import hashlib
import multiprocessing
import os
import random
import struct
import sys
import threading
import time

import pytest

import simdr

SERVER_BIN = os.environ.get("SIMDR_SERVER_BIN", "")
redis = pytest.importorskip("redis")
pytestmark = pytest.mark.skipif(not SERVER_BIN, reason="SIMDR_SERVER_BIN not set")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "server"))

KEYS = [b"k%d" % i for i in range(60)]


def segment(key, seq, n):
    """A value part that names its key and whose n bytes follow from (key, seq)."""
    block = hashlib.sha256(key + b"%d" % seq).digest()
    return b"<%s|%08d|%010d>" % (key, seq, n) + (block * (n // 32 + 1))[:n]


def value_problem(key, value):
    """None when value is a run of segments of key, else what is wrong."""
    i = 0
    while i < len(value):
        end = value.find(b">", i)
        if value[i:i + 1] != b"<" or end < 0:
            return "no segment at %d" % i
        parts = value[i + 1:end].split(b"|")
        if len(parts) != 3 or parts[0] != key:
            return "segment of another key at %d: %r" % (i, value[i:end + 1][:60])
        seq, n = int(parts[1]), int(parts[2])
        if value[i:end + 1 + n] != segment(key, seq, n):
            return "segment bytes differ at %d" % i
        i = end + 1 + n
    return None


def record_problem(record, expect_key=None):
    """Checks a server record (docs/FORMAT.md, "Server records")."""
    if len(record) < 16 or record[:3] != b"SR\x01":
        return "not a server record: %r" % record[:24]
    if record[3] & 0x02:  # a hole: no key
        return None
    klen = struct.unpack_from("<I", record, 4)[0]
    key = record[16:16 + klen]
    if key not in KEYS:
        return "record of a key never written: %r" % key[:40]
    if expect_key is not None and key != expect_key:
        return "read(%r) gave the record of %r" % (expect_key, key)
    return value_problem(key, record[16 + klen:])


def reader(path, stop, problems, seen):
    held = []
    store = None
    rounds = 0
    try:
        while not stop.is_set():
            rounds += 1
            if store is None or rounds % 25 == 0:
                try:
                    fresh = simdr.open(path, readonly=True)
                except (simdr.StoreNotFoundError, simdr.NotAStoreError):
                    time.sleep(0.01)
                    continue
                if store is not None:
                    store.close()
                store = fresh
            try:
                store.refresh()
            except simdr.StoreNotFoundError:
                pass  # FLUSHDB removed the file: the store stays as it was
            for entry in store:
                problem = record_problem(bytes(entry))
                if problem:
                    problems.put("%s: %s" % (path, problem))
                    return
                with seen.get_lock():
                    seen.value += 1
                if len(held) < 100 and random.random() < 0.02:
                    held.append((memoryview(entry), bytes(entry)))
            for key in random.sample(KEYS, 10):
                record = store.read(key)
                problem = record and record_problem(record, key)
                if problem:
                    problems.put("%s: %s" % (path, problem))
                    return
            for view, copy in held:
                if bytes(view) != copy:
                    problems.put("%s: a held view changed" % path)
                    return
    except Exception as e:  # reported, not lost in the child
        problems.put("%s: %r" % (path, e))


def load(port, seed, stop, failures):
    rnd = random.Random(seed)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
    seq = seed * 10000000
    while not stop.is_set():
        seq += 1
        key = rnd.choice(KEYS)
        op = rnd.random()
        try:
            if op < 0.5:
                size = rnd.choice([1, 100, 5000, 70000]) if rnd.random() < 0.97 else (1 << 20) + 7
                r.set(key, segment(key, seq, size))  # 1 MiB and more is spooled
            elif op < 0.65:
                r.append(key, segment(key, seq, rnd.choice([1, 50, 3000])))
            elif op < 0.78:
                r.delete(key)
            elif op < 0.84:
                r.pexpire(key, rnd.randrange(1, 40))
            elif op < 0.9:
                r.set(key, segment(key, seq, rnd.randrange(1, 300)), px=rnd.randrange(1, 80))
            elif op < 0.94:
                r.execute_command("SELECT", rnd.randrange(2))
            elif op < 0.96:
                r.swapdb(0, 1)
            elif op < 0.965:
                r.flushdb()
            elif op < 0.97:
                r.bgrewriteaof()
        except redis.ConnectionError:
            time.sleep(0.05)  # the server is being restarted
            r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
        except redis.ResponseError as e:
            if "in progress" not in str(e):
                failures.append(repr(e))
                return


def test_readers_beside_a_busy_server():
    from serverutil import Server
    ctx = multiprocessing.get_context("spawn")
    stop_readers, problems, seen = ctx.Event(), ctx.Queue(), ctx.Value("q", 0)
    stop_load, failures = threading.Event(), []
    srv = Server("--auto-compact-percent", "10", "--hz", "50")
    srv.start()
    try:
        paths = [os.path.join(srv.dir, "db-%d.simdr" % db) for db in (0, 1)]
        readers = [ctx.Process(target=reader, args=(p, stop_readers, problems, seen))
                   for p in paths + paths[:1]]
        for p in readers:
            p.start()
        loaders = [threading.Thread(target=load, args=(srv.port, i, stop_load, failures))
                   for i in range(2)]
        for t in loaders:
            t.start()
        for _ in range(3):
            time.sleep(3)
            srv.kill9()
            srv.start()
        time.sleep(3)
        stop_load.set()
        for t in loaders:
            t.join(60)
        stop_readers.set()
        for p in readers:
            p.join(60)
        found = []
        while not problems.empty():
            found.append(problems.get())
        assert not found, found
        assert not failures, failures
        assert [p.exitcode for p in readers] == [0] * len(readers)
        assert seen.value > 0  # the readers did read records
    finally:
        stop_load.set()
        stop_readers.set()
        srv.cleanup()
