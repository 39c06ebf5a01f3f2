"""Other processes beside a live simdr-server's store files (DIR/db-N.simdr):
another writer of a database file the server has not opened must make
SWAPDB and FLUSHDB fail cleanly (no hang of the event loop, nothing exchanged
or removed), a second server on the same directory refuse to start, and the
simd-r-drive tool's read-only commands run while the server writes, swaps,
flushes and compacts must never crash, never call a sound store damaged and
never name a record after a key the server did not hold."""
import json
import os
import random
import shutil
import subprocess
import threading
import time

import pytest
import redis

from serverutil import Server

CLI = os.environ.get("SIMDR_CLI_BIN", "")

pytestmark = pytest.mark.skipif(not CLI, reason="SIMDR_CLI_BIN not set (simd-r-drive not built)")


def held_for_writing(path):
    """simd-r-drive streaming a value from a pipe into path: it holds the store
    open for writing until the pipe is closed. Returns the process once its
    open has created the store."""
    p = subprocess.Popen([CLI, path, "write", "outside"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"value from another process")
    p.stdin.flush()
    deadline = time.time() + 30
    while not os.path.exists(path + ".simdr"):
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "simd-r-drive did not open %s" % path
        time.sleep(0.02)
    return p


def test_swapdb_beside_another_writer():
    with Server() as srv:
        r = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=30)
        r.set("a", "in db 0")
        db1 = os.path.join(srv.dir, "db-1.simdr")
        outside = held_for_writing(db1)
        try:
            # Before: the event loop blocked in the engine's open until the
            # other writer closed (a socket timeout here); then an error reply
            # for a swap half done, db 0's keys in neither database.
            with pytest.raises(redis.ResponseError, match="locked"):
                r.swapdb(0, 1)
            assert r.ping()
            assert r.get("a") == b"in db 0"
            assert r.dbsize() == 1
        finally:
            outside.stdin.close()
            assert outside.wait(timeout=30) == 0, outside.stderr.read()
            outside.stdout.close()
            outside.stderr.close()
        assert r.swapdb(0, 1)
        assert r.get("a") is None
        r.execute_command("SELECT", 1)
        assert r.get("a") == b"in db 0"


def test_flushdb_beside_another_writer_removes_nothing():
    with Server() as srv:
        r = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=30)
        r.execute_command("SELECT", 1)
        path = os.path.join(srv.dir, "db-1.simdr")
        outside = held_for_writing(path)
        try:
            # FLUSHDB removed the file the other process was writing, whose
            # writes were then lost; it is now refused while that process
            # holds the file (the server opens it, under its lock, first).
            with pytest.raises(redis.ResponseError, match="locked"):
                r.flushdb()
            assert os.path.exists(path)
            with pytest.raises(redis.ResponseError, match="locked"):
                r.set("k", "v")
            assert r.ping()
        finally:
            outside.stdin.close()
            assert outside.wait(timeout=30) == 0, outside.stderr.read()
            outside.stdout.close()
            outside.stderr.close()
        got = subprocess.run([CLI, path, "read", "outside"], capture_output=True)
        assert got.stdout == b"value from another process", got
        assert r.flushdb()
        assert not os.path.exists(path)
        assert r.set("k", "v")
        assert r.get("k") == b"v"


def test_a_second_server_on_the_same_directory_refuses_to_start():
    # Stores are locked only while open, and a database without a file has
    # none: a second server on a fresh directory started, each came to own
    # the databases it wrote first, and one's FLUSHALL removed the file the
    # other had written. The directory is now locked by the first.
    with Server(keep_dir=True) as first:
        r = first.client()
        second = Server(data_dir=first.dir)
        with pytest.raises(RuntimeError):
            second.start()
        assert "in use by another simdr-server" in open(second.log_path).read()
        assert r.set("k", "v")
    try:
        with Server(data_dir=first.dir) as again:  # the lock went with the first server
            assert again.client().get("k") == b"v"
    finally:
        shutil.rmtree(first.dir, ignore_errors=True)


def test_tool_reads_beside_a_busy_server():
    keys = [b"key%d" % i for i in range(40)]
    stop = threading.Event()
    failures = []

    with Server("--auto-compact-percent", "10", "--hz", "50") as srv:
        def load(seed):
            try:
                load_until_stopped(seed)
            except Exception as e:  # a thread's exception would pass unseen
                failures.append("load: %r" % e)

        def load_until_stopped(seed):
            rnd = random.Random(seed)
            r = srv.client()
            n = 0
            while not stop.is_set():
                n += 1
                key = rnd.choice(keys)
                op = rnd.random()
                if op < 0.55:
                    size = rnd.choice([1, 100, 5000, 70000, 300000])
                    r.set(key, bytes([65 + n % 26]) * size)
                elif op < 0.7:
                    r.append(key, b"+" * rnd.randrange(1, 2000))
                elif op < 0.85:
                    r.delete(key)
                elif op < 0.9:
                    r.pexpire(key, rnd.randrange(1, 30))
                elif op < 0.93:
                    r.execute_command("SELECT", rnd.randrange(2))
                elif op < 0.95:
                    r.swapdb(0, 1)
                elif op < 0.96:
                    r.flushdb()
                elif op < 0.97:
                    try:
                        r.bgrewriteaof()
                    except redis.ResponseError as e:
                        if "in progress" not in str(e):
                            raise

        def tool(db):
            path = os.path.join(srv.dir, "db-%d.simdr" % db)
            while not stop.is_set():
                if not os.path.exists(path):
                    time.sleep(0.01)
                    continue
                for args in (["check"], ["list", "--json"]):
                    p = subprocess.run([CLI, path] + args, capture_output=True)
                    gone = b"No such file" in p.stderr or b"does not exist" in p.stderr
                    if p.returncode < 0 or (p.returncode != 0 and not gone):
                        failures.append("%s %s: exit %d: %s %s" % (
                            path, args, p.returncode, p.stdout[-400:], p.stderr[-400:]))
                        return
                    if args[0] != "list" or p.returncode != 0:
                        continue
                    for entry in json.loads(p.stdout):
                        if entry.get("name_source") == "server record":
                            name = bytes.fromhex(entry["key_hex"])
                            if name not in keys:
                                failures.append("%s lists a key never written: %r" % (path, name))
                                return

        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        threads += [threading.Thread(target=tool, args=(db,)) for db in (0, 1)]
        for t in threads:
            t.start()
        time.sleep(8)
        stop.set()
        for t in threads:
            t.join(60)
        assert not failures, failures
        # Sound at rest too.
        for db in (0, 1):
            path = os.path.join(srv.dir, "db-%d.simdr" % db)
            if os.path.exists(path):
                p = subprocess.run([CLI, path, "check"], capture_output=True)
                assert p.returncode == 0, p.stdout + p.stderr


def test_records_the_tool_moved_are_not_listed_as_keys():
    """The tool's rename stores a record under another key's hash, and its
    read prints a record that write can store under any name: such a record
    is not where the server looks its key up, so KEYS, SCAN and RANDOMKEY
    must not name it (they listed keys GET and EXISTS called absent, and the
    copied record's key twice)."""
    with Server() as srv:
        r = srv.client()
        r.set("old", "v1")
        r.set("kept", "v2")
        srv.stop()
        path = os.path.join(srv.dir, "db-0.simdr")
        subprocess.run([CLI, path, "rename", "old", "new"], check=True, capture_output=True)
        record = subprocess.run([CLI, path, "read", "kept"], check=True,
                                capture_output=True).stdout
        assert record[:3] == b"SR\x01"
        subprocess.run([CLI, path, "write", "dump-of-kept"], input=record, check=True,
                       capture_output=True)
        srv.start()
        r = srv.client()
        assert r.get("old") is None and r.get("new") is None
        assert r.get("kept") == b"v2"
        assert sorted(r.keys("*")) == [b"kept"]
        assert sorted(r.scan(0, count=1000)[1]) == [b"kept"]
        for _ in range(20):
            assert r.randomkey() == b"kept"
