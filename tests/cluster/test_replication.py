"""simdr-server replicas (--replicaof, REPLICAOF, WAIT, INFO replication) on
loopback: a primary and two replicas under write load; a replica killed with
SIGKILL mid-stream and restarted (it resumes from its own tail); the primary
restarted; the primary compacted while a replica lags (it rebuilds or copies); a
replica promoted and the other pointed at it (it resumes); the password; a
hostile primary whose bytes do not chain onto the replica's tail. Every
write that WAIT confirmed is checked on the replicas, and their store files
must equal the primary's byte for byte."""
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest
import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import Server, IO_TIMEOUT, encode as resp, wait_until  # noqa: E402
from clusterutil import entry  # noqa: E402

PASSWORD = "repl-secret"


def start(*args, data_dir=None, port=None):
    return Server("--requirepass", PASSWORD, *args, data_dir=data_dir, port=port,
                  keep_dir=True).start()


def client(server, **kw):
    return server.client(password=PASSWORD, **kw)


def replica_of(primary, data_dir=None, port=None):
    return start("--replicaof", "127.0.0.1", str(primary.port), data_dir=data_dir, port=port)


def files_equal(a, b, db=0):
    """The same bytes, up to the zeros a running server may hold after its
    last record (durability always appends into zeros written ahead)."""
    pa = os.path.join(a.dir, "db-%d.simdr" % db)
    pb = os.path.join(b.dir, "db-%d.simdr" % db)
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        return fa.read().rstrip(b"\0") == fb.read().rstrip(b"\0")


def assert_same_data(primary, *replicas):
    p = client(primary)
    assert p.wait(len(replicas), 60000) >= len(replicas)
    keys = sorted(p.keys("*"))
    want = p.mget(keys) if keys else []
    for r in replicas:
        rc = client(r)
        assert sorted(rc.keys("*")) == keys
        if keys:
            assert rc.mget(keys) == want
        assert files_equal(primary, r)


class Load:
    """Writer threads: SET, INCR, DEL, MSET, EXPIRE against the primary;
    every few writes WAIT n confirms what this thread wrote so far."""

    def __init__(self, primary, replicas_wanted, threads=3):
        self.primary = primary
        self.n = replicas_wanted
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.values = {}     # key -> value the primary acknowledged last
        self.confirmed = {}  # key -> value some WAIT confirmed on n replicas
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(threads)]

    def run(self, t):
        c = client(self.primary)
        mine = {}
        i = 0
        while not self.stop_ev.is_set():
            key = "w:%d:%d" % (t, i % 400)
            val = "v%d-%d" % (t, i)
            if i % 7 == 3:
                c.mset({key: val, key + ":m": val})
                mine[key + ":m"] = val
            else:
                c.set(key, val)
            mine[key] = val
            if i % 13 == 5:
                c.delete(key)
                mine[key] = None
            if i % 17 == 0:
                c.incr("w:counter:%d" % t)
            i += 1
            if i % 25 == 0:
                got = c.wait(self.n, 2000)
                with self.lock:
                    self.values.update(mine)
                    if got >= self.n:
                        self.confirmed.update(mine)
        with self.lock:
            self.values.update(mine)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join()

    def count(self):
        with self.lock:
            return len(self.values)

    def wait_for(self, n):
        start = self.count()
        wait_until(lambda: self.count() >= start + n, "%d more writes" % n)


def check_confirmed(load, *replicas):
    with load.lock:
        confirmed = dict(load.confirmed)
    assert confirmed, "no write was confirmed by WAIT"
    keys = list(confirmed)
    for r in replicas:
        got = client(r).mget(keys)
        for k, v in zip(keys, got):
            # a later write may have changed it; the confirmed one or a newer
            # one acknowledged by the primary must be there
            if v != (confirmed[k].encode() if confirmed[k] is not None else None):
                assert v == (load.values[k].encode() if load.values[k] is not None else None), k


@pytest.fixture
def trio():
    p = start("--auto-compact-percent", "0")  # compactions come from the tests
    r1 = replica_of(p)
    r2 = replica_of(p)
    servers = [p, r1, r2]
    yield servers
    for s in servers:
        s.cleanup()
    import shutil
    for s in servers:
        shutil.rmtree(s.dir, ignore_errors=True)


def log_count(server, text):
    return server.log().count(text)


def test_replicas_follow_under_load(trio):
    p, r1, r2 = trio
    with Load(p, 2) as load:
        load.wait_for(1500)
    check_confirmed(load, r1, r2)
    assert_same_data(p, r1, r2)
    # replicas serve reads and refuse writes as Redis does
    rc = client(r1)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        rc.set("x", "1")
    with pytest.raises(redis.exceptions.ReadOnlyError):
        rc.execute_command("DEL", "w:0:1")
    with pytest.raises(redis.exceptions.ResponseError):
        rc.execute_command("BGREWRITEAOF")
    with pytest.raises(redis.exceptions.ResponseError):
        rc.wait(1, 10)
    info = rc.info("replication")
    assert info["role"] == "slave" and info["master_link_status"] == "up"
    assert info["master_port"] == p.port and info["slave_read_only"] == 1
    pinfo = client(p).info("replication")
    assert pinfo["role"] == "master" and pinfo["connected_slaves"] == 2
    assert pinfo["slave0"]["offset"] == pinfo["master_repl_offset"]
    # other databases replicate too, and FLUSHDB reaches the replicas
    c5 = client(p, db=5)
    c5.set("in5", "five")
    assert c5.wait(2, 60000) == 2
    assert client(r2, db=5).get("in5") == b"five"
    c5.flushdb()
    assert c5.wait(2, 60000) == 2
    assert client(r2, db=5).dbsize() == 0
    # expired keys: the replica hides them, the primary deletes them
    pc = client(p)
    pc.set("short", "x", px=50)
    time.sleep(0.2)
    assert client(r1).get("short") is None
    assert pc.get("short") is None
    assert_same_data(p, r1, r2)


def test_kill9_replica_mid_stream_and_restart(trio):
    p, r1, r2 = trio
    with Load(p, 2) as load:
        load.wait_for(500)
        r1.kill9()
        load.wait_for(500)  # the primary and r2 go on; WAIT 2 now times out at 1
        full_copies = log_count(r1, "full copy")
        r1.start()  # same directory and port
        load.wait_for(500)
    assert log_count(r1, "full copy") == full_copies  # it resumed from its own tail
    check_confirmed(load, r1, r2)
    assert_same_data(p, r1, r2)


def test_primary_restart(trio):
    p, r1, r2 = trio
    with Load(p, 2) as load:
        load.wait_for(300)
    p.kill9()
    p.start()  # same directory and port
    wait_until(lambda: client(p).info("replication")["connected_slaves"] == 2, "reconnects")
    c = client(p)
    c.set("after-restart", "1")
    assert c.wait(2, 60000) == 2
    assert client(r2).get("after-restart") == b"1"
    assert log_count(r1, "full copy") == 0 and log_count(r2, "full copy") == 0
    assert_same_data(p, r1, r2)


def test_compaction_while_a_replica_lags(trio):
    p, r1, r2 = trio
    c = client(p)
    for i in range(3000):
        c.set("ow:%d" % (i % 300), "x" * 200 + str(i))
    assert c.wait(2, 60000) == 2
    os.kill(r1.proc.pid, signal.SIGSTOP)
    try:
        for i in range(3000):
            c.set("ow:%d" % (i % 300), "y" * 200 + str(i))
        before = c.info("persistence")["simdr_compactions"]
        c.execute_command("BGREWRITEAOF")
        wait_until(lambda: c.info("persistence")["simdr_compactions"] > before
                   and not c.info("persistence")["aof_rewrite_in_progress"], "compaction")
        c.set("after-compaction", "1")
        assert c.wait(2, 200) <= 1  # r1 is stopped
    finally:
        os.kill(r1.proc.pid, signal.SIGCONT)
    assert c.wait(2, 60000) == 2
    # the stopped replica had the old file up to where the compaction listed
    # its live entries (rebuilt there, test_replica_rebase.py) or copies it
    assert log_count(r1, "full copy") + log_count(r1, "rebuilt the compacted file") >= 1
    assert client(r1).get("after-compaction") == b"1"
    assert_same_data(p, r1, r2)


def test_wait_across_a_compaction():
    """A WAIT that blocks while a compaction replaces the file it waits on is
    answered once the replica holds the new file: the old file's identity is
    never acknowledged again, so waiting on it would block to the timeout."""
    p = start("--auto-compact-percent", "0")
    r = replica_of(p)
    try:
        c = client(p)
        for i in range(2000):
            c.set("k%d" % (i % 100), "v" * 100 + str(i))
        assert c.wait(1, 60000) == 1
        os.kill(r.proc.pid, signal.SIGSTOP)
        result = []
        try:
            # more than the socket buffers hold: the primary cannot send the
            # old file's tail to the stopped replica before the compaction
            for i in range(24):
                c.set("big%d" % (i % 4), os.urandom(1 << 20))
            c.set("during", "1")
            waiter = threading.Thread(target=lambda: result.append(client(p).wait(1, 60000)))
            waiter.start()
            wait_until(lambda: c.info("clients")["blocked_clients"] == 1, "the WAIT to block")
            before = c.info("persistence")["simdr_compactions"]
            c.execute_command("BGREWRITEAOF")
            wait_until(lambda: c.info("persistence")["simdr_compactions"] > before, "compaction")
        finally:
            os.kill(r.proc.pid, signal.SIGCONT)
        waiter.join()
        assert result == [1]
        assert client(r).get("during") == b"1"
    finally:
        import shutil
        for s in (r, p):
            s.cleanup()
            shutil.rmtree(s.dir, ignore_errors=True)


def test_promote_and_repoint(trio):
    p, r1, r2 = trio
    with Load(p, 2) as load:
        load.wait_for(600)
    check_confirmed(load, r1, r2)
    assert client(p).wait(2, 60000) == 2
    p.stop()  # the primary is lost
    assert client(r1).execute_command("REPLICAOF", "NO", "ONE") == b"OK"
    assert client(r2).execute_command("REPLICAOF", "127.0.0.1", str(r1.port)) == b"OK"
    n1 = client(r1)
    assert n1.info("replication")["role"] == "master"
    n1.set("after-promotion", "yes")
    assert n1.wait(1, 60000) == 1
    assert client(r2).get("after-promotion") == b"yes"
    assert log_count(r2, "full copy") == 0  # resumed on the promoted replica
    with Load(r1, 1) as load2:
        load2.wait_for(300)
    check_confirmed(load2, r2)
    assert_same_data(r1, r2)
    # the promoted replica's acknowledged writes survive its restart
    r1.stop()
    r1.start()
    assert client(r1).get("after-promotion") == b"yes"


def test_password_and_authentication():
    p = start()
    bad = start("--replicaof", "127.0.0.1", str(p.port), "--masterauth", "wrong")
    good = start("--replicaof", "127.0.0.1", str(p.port), "--masterauth", PASSWORD)
    try:
        client(p).set("k", "v")
        assert client(p).wait(1, 60000) == 1
        assert client(good).get("k") == b"v"
        assert client(bad).info("replication")["master_link_status"] == "down"
        assert client(bad).get("k") is None
        assert "refused" in bad.log()
        # the stream itself needs the password
        anon = redis.Redis(host="127.0.0.1", port=p.port, socket_timeout=IO_TIMEOUT)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anon.execute_command("REPLSYNC", "1")
    finally:
        for s in (p, bad, good):
            s.cleanup()


KEY_HASH = 0x1234567890ABCDEF  # the entries of the hostile-bytes test


def test_hostile_primary_bytes_are_refused():
    """A fake primary sends a bad CRC, a wrong link and bytes that do not
    start at the replica's tail: the replica writes none of them, drops the
    link each time, and accepts only the sound entry."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(IO_TIMEOUT)
    port = lsock.getsockname()[1]
    r = Server("--replicaof", "127.0.0.1", str(port)).start()
    good = entry(b"hello", 0, KEY_HASH)
    bad_crc = bytearray(good)
    bad_crc[1] ^= 1
    wrong_link = entry(b"hello", 0, KEY_HASH)[:-12] + struct.pack("<Q", 7) + good[-4:]
    second = entry(b"second value", len(good), KEY_HASH)
    sessions = [
        [resp("RESET", 0, 42, 0), resp("LOG", 0, 0, len(good), bytes(bad_crc))],
        [resp("RESET", 0, 42, 0), resp("LOG", 0, 0, len(good), wrong_link)],
        # torn: ends before the entry does (a turn that ends there, so that
        # the replica does not wait for the rest of it)
        [resp("RESET", 0, 42, 0), resp("LOG", 0, 0, len(good) - 3, good[:-3])],
        [resp("RESET", 0, 42, 0), resp("LOG", 0, 0, len(good), good),
         resp("LOG", 0, 5, 999, second)],  # not at the tail: refused
    ]
    try:
        for msgs in sessions:
            conn, _ = lsock.accept()
            conn.settimeout(IO_TIMEOUT)
            hello = b""
            while b"REPLSYNC" not in hello or not hello.endswith(b"\r\n"):
                hello += conn.recv(65536)
            conn.sendall(b"+OK\r\n" + b"".join(msgs))
            # the replica closes the link after the refused bytes
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            conn.close()
        path = os.path.join(r.dir, "db-0.simdr")
        with open(path, "rb") as f:
            assert f.read() == good  # only the sound entry, nothing after it
        assert r.log().count("db 0: replicated bytes refused") == 4
    finally:
        r.cleanup()
        lsock.close()
