"""simdr-server replicas where features meet: histories that share their last
entry but not the bytes before it (a promoted replica that was behind
another replica and has been written since; a primary whose file lost its
end, as in a power cut before a sync, and has been written since), and an
entry larger than the primary's client-output-buffer-limit. Each time the
replica must end up with the primary's data, byte for byte. And the
clients of a primary that becomes a replica: one blocked in WAIT, one in
the middle of a transaction with writes, one sending a large SET. And a
server told to replicate itself, and a primary paused beyond the replica's
repl-timeout."""
import os
import socket
import struct
import sys
import threading
import time

import pytest
import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import encode as resp, wait_until  # noqa: E402
from clusterutil import cleanup, db_records, replica_of, start  # noqa: E402

WAIT_MS = 20000  # far above what a replica needs here; bounds a failing run


def contents(server):
    c = server.client()
    return {k: (c.get(k), c.pttl(k) >= 0) for k in c.keys("*")}


def write_base(c):
    for i in range(40):
        c.set("base:%d" % i, "value-%d" % i)


def test_promoted_replica_that_was_behind():
    """Replica a got two writes of the old primary that replica b never got;
    b is promoted and clients write the same keys again, the first with
    another value of the same length, the last one identical: b's last
    entry then equals a's, at the same offset, over different bytes. a,
    pointed at b, must copy b's data again, not keep the old value."""
    p = start()
    a = replica_of(p)
    b = replica_of(p)
    try:
        c = p.client()
        write_base(c)
        assert c.wait(2, WAIT_MS) == 2
        b.stop()  # b misses what follows
        c.set("status", "run-1111")
        c.set("heartbeat", "ok")
        assert c.wait(1, WAIT_MS) == 1
        assert a.client().get("status") == b"run-1111"
        p.stop()  # the primary is lost
        b.start()  # still a replica of the lost primary, link down
        bc = b.client()
        assert bc.execute_command("REPLICAOF", "NO", "ONE") == b"OK"
        bc.set("status", "run-2222")
        bc.set("heartbeat", "ok")
        assert a.client().execute_command("REPLICAOF", "127.0.0.1", str(b.port)) == b"OK"
        assert bc.wait(1, WAIT_MS) == 1
        assert a.client().get("status") == b"run-2222"
        assert contents(a) == contents(b)
        assert db_records(a) == db_records(b)
    finally:
        cleanup(a, b, p)


def test_primary_that_lost_the_end_of_its_file():
    """The primary's file loses its last two entries while it is down (what
    a power cut before the sync leaves), and after its restart clients write
    the same two keys again, the first with another value of the same
    length. The replica, which has the lost entries, must not keep them.
    The file's size is taken while the primary runs, so the primary runs
    without durability always, whose files run past their last record."""
    p = start("--durability", "everysec")
    r = replica_of(p)
    try:
        c = p.client()
        write_base(c)
        assert c.wait(1, WAIT_MS) == 1
        cut = os.path.getsize(os.path.join(p.dir, "db-0.simdr"))
        c.set("status", "run-1111")
        c.set("heartbeat", "ok")
        assert c.wait(1, WAIT_MS) == 1
        r.stop()
        p.stop()
        os.truncate(os.path.join(p.dir, "db-0.simdr"), cut)
        p.start()
        c = p.client()
        assert c.get("status") is None  # lost
        c.set("status", "run-2222")
        c.set("heartbeat", "ok")
        r.start()
        assert c.wait(1, WAIT_MS) == 1
        assert r.client().get("status") == b"run-2222"
        assert contents(r) == contents(p)
        assert db_records(r) == db_records(p)
        # a replica of this run resumes across its own restart (no copy)
        copies = r.log().count("full copy")
        r.stop()
        c.set("later", "1")
        r.start()
        assert c.wait(1, WAIT_MS) == 1
        assert r.client().get("later") == b"1"
        assert r.log().count("full copy") == copies
    finally:
        cleanup(r, p)


def test_entry_larger_than_the_output_buffer_limit():
    """One value of 32 MiB on a primary whose client-output-buffer-limit is
    1 MiB: the entry can only go whole, and the replica's link must not be
    closed for it (it was, again and again, and nothing after that entry
    ever reached the replica)."""
    p = start("--client-output-buffer-limit", "1mb")
    r = replica_of(p)
    try:
        c = p.client()
        big = os.urandom(1 << 20) * 32
        c.set("big", big)
        c.set("after", "1")
        assert c.wait(1, WAIT_MS) == 1
        rc = r.client()
        assert rc.get("big") == big and rc.get("after") == b"1"
        assert db_records(r) == db_records(p)
        assert "output buffer over" not in p.log()  # the link was never closed
    finally:
        cleanup(r, p)


def test_wait_blocked_when_the_primary_turns_replica():
    """WAIT 1 0 (no timeout) on a primary without replicas blocks; when the
    primary becomes a replica (REPLICAOF host port) nothing can ever
    acknowledge for it: the client gets Redis's UNBLOCKED error (it stayed
    blocked for ever)."""
    p = start()
    other = start()
    try:
        p.client().set("k", "v")
        waiter = redis.Redis(host="127.0.0.1", port=p.port, socket_timeout=WAIT_MS / 1000)
        result = []

        def wait_forever():
            try:
                result.append(waiter.wait(1, 0))
            except redis.exceptions.RedisError as e:
                result.append(e)

        thread = threading.Thread(target=wait_forever)
        thread.start()
        wait_until(lambda: p.client().info("clients")["blocked_clients"] == 1, "WAIT to block")
        assert p.client().execute_command("REPLICAOF", "127.0.0.1", str(other.port)) == b"OK"
        thread.join()
        assert len(result) == 1 and isinstance(result[0], redis.exceptions.ResponseError), result
        assert "UNBLOCKED" in str(result[0])
        assert p.client().info("clients")["blocked_clients"] == 0
        assert waiter.ping()  # the connection goes on
    finally:
        cleanup(p, other)


def test_transaction_queued_before_the_primary_turned_replica():
    """A client queues a SET in MULTI on a primary; the primary becomes a
    replica; EXEC must be refused whole, as Redis does (it ran the SET on
    the replica and answered OK: a write acknowledged, then wiped by the
    full copy from the new primary, or splicing the replica's file)."""
    p = start()
    other = start()
    try:
        other.client().set("theirs", "1")
        tx = p.client()
        tx.execute_command("MULTI")
        tx.execute_command("SET", "mine", "1")
        tx.execute_command("GET", "theirs")
        assert p.client().execute_command("REPLICAOF", "127.0.0.1", str(other.port)) == b"OK"
        try:
            tx.execute_command("EXEC")
            raise AssertionError("EXEC ran a write on a replica")
        except redis.exceptions.ResponseError as e:
            assert "READONLY" in str(e)
        assert other.client().wait(1, WAIT_MS) == 1
        rc = p.client()
        assert rc.get("mine") is None and rc.get("theirs") == b"1"
        assert db_records(p) == db_records(other)
        # a read-only transaction still runs
        tx.execute_command("MULTI")
        tx.execute_command("GET", "theirs")
        assert tx.execute_command("EXEC") == [b"1"]
    finally:
        cleanup(p, other)


def test_large_set_arriving_while_the_primary_turns_replica():
    """A SET of a large value is written to disk as it arrives (spooled);
    the primary becomes a replica before its last byte: the SET must get
    READONLY (it was written into the replica's file and answered OK)."""
    p = start()
    other = start()
    try:
        other.client().set("theirs", "1")
        value = b"v" * (4 << 20)
        raw = socket.create_connection(("127.0.0.1", p.port), timeout=WAIT_MS / 1000)
        command = resp("SET", "big", value)
        raw.sendall(command[:len(command) // 2])
        assert p.client().execute_command("REPLICAOF", "127.0.0.1", str(other.port)) == b"OK"
        raw.sendall(command[len(command) // 2:])
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += raw.recv(4096)
        assert reply.startswith(b"-READONLY"), reply
        raw.close()
        assert other.client().wait(1, WAIT_MS) == 1
        assert p.client().get("big") is None
        assert db_records(p) == db_records(other)
    finally:
        cleanup(p, other)


def read_words(conn, buf=b""):
    """The replica's next RESP array of bulk strings: (words, rest)."""
    while True:
        if buf.startswith(b"*") and b"\r\n" in buf:
            head, rest = buf.split(b"\r\n", 1)
            words = []
            for _ in range(int(head[1:])):
                if b"\r\n" not in rest:
                    break
                h, rest = rest.split(b"\r\n", 1)
                n = int(h[1:])
                if len(rest) < n + 2:
                    break
                words.append(rest[:n])
                rest = rest[n + 2:]
            else:
                return words, rest
        data = conn.recv(65536)
        assert data, "the replica closed the link"
        buf += data


class HalfCopy:
    """A primary p with 20 keys, its replica r, and a fake primary that
    makes r copy db 0 again: it announces a new file (made by a third
    server: records as a primary writes them, half the keys with new
    values) and sends only its entries before the last one."""

    def __init__(self):
        self.p = start()
        self.r = replica_of(self.p)
        self.q = start()
        self.lsock = socket.socket()
        c = self.p.client()
        self.old = {"k%d" % i: "old-%d" % i for i in range(20)}
        c.mset(self.old)
        assert c.wait(1, WAIT_MS) == 1
        self.new = {"k%d" % i: "new-%d" % i for i in range(0, 20, 2)}
        self.q.client().mset(self.new)
        self.q.stop()
        self.new_file = db_records(self.q)
        self.last_start = struct.unpack("<Q", self.new_file[-12:-4])[0]  # the last entry's link
        assert 0 < self.last_start < len(self.new_file)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(WAIT_MS / 1000)
        rc = self.r.client()
        rc.execute_command("REPLICAOF", "127.0.0.1", str(self.lsock.getsockname()[1]))
        self.conn, _ = self.lsock.accept()
        self.conn.settimeout(WAIT_MS / 1000)
        rest = b""
        while True:
            words, rest = read_words(self.conn, rest)
            if words[0].upper() == b"REPLSYNC":
                break
        self.conn.sendall(b"+OK\r\n" + resp("RESET", 0, 4242, 0, 77, len(self.new_file)) +
                          resp("LOG", 0, 0, len(self.new_file), self.new_file[:self.last_start]))
        wait_until(lambda: rc.info("replication")["simdr_repl_lag_bytes"] ==
                   len(self.new_file) - self.last_start, "the first half to be taken")

    def serves_old(self, rc):
        return {k: v.decode() for k, v in zip(self.old, rc.mget(list(self.old)))} == self.old

    def close(self):
        self.conn.close()
        self.lsock.close()
        cleanup(self.r, self.p, self.q)


def test_full_copy_is_built_beside_the_served_data():
    """A replica holding data that must copy a database again (the primary
    compacted, flushed, swapped, or lost its tail) keeps serving its old
    copy until the new one has reached the tail the primary announced: the
    primary stands still after the first half of the new file, and all the
    old keys must still be there with their old values (the database was
    emptied at once and refilled, so half the keys read as missing).
    REPLICAOF naming the same primary does not start it over. Then the new
    copy replaces the old one whole, and survives a restart."""
    h = HalfCopy()
    try:
        rc = h.r.client()
        assert rc.info("replication")["master_sync_in_progress"] == 1
        assert h.serves_old(rc)
        assert db_records(h.r) == db_records(h.p)  # the served file is untouched
        # the same primary again (as Redis: nothing to do): the copy goes on
        fake_port = str(h.lsock.getsockname()[1])
        assert rc.execute_command("REPLICAOF", "127.0.0.1", fake_port) == \
            b"OK Already connected to specified master"
        h.conn.sendall(resp("LOG", 0, h.last_start, len(h.new_file),
                            h.new_file[h.last_start:]))
        wait_until(lambda: rc.info("replication")["master_sync_in_progress"] == 0, "the swap")
        assert rc.mget(list(h.old)) == [h.new[k].encode() if k in h.new else None for k in h.old]
        assert db_records(h.r) == h.new_file
        rc.execute_command("REPLICAOF", "NO", "ONE")
        h.r.stop()
        h.r.args = ["--auto-compact-percent", "0"]  # not a replica of p again
        h.r.start()
        assert h.r.client().mget(list(h.new)) == [v.encode() for v in h.new.values()]
        assert db_records(h.r) == h.new_file
    finally:
        h.close()


def test_full_copy_cut_short_by_a_crash():
    """The replica is killed in the middle of such a copy: restarted (a
    replica of the real primary again, by its command line) it serves its
    old copy, leaves no partial copy behind, and resumes on the primary."""
    h = HalfCopy()
    try:
        assert os.path.exists(os.path.join(h.r.dir, "db-0.simdr.sync"))
        copies = h.r.log().count("full copy")
        h.r.kill9()
        h.r.start()
        rc = h.r.client()
        assert h.serves_old(rc)
        assert not os.path.exists(os.path.join(h.r.dir, "db-0.simdr.sync"))
        pc = h.p.client()
        pc.set("after", "1")
        assert pc.wait(1, WAIT_MS) == 1
        assert rc.get("after") == b"1"
        assert db_records(h.r) == db_records(h.p)
        assert h.r.log().count("full copy") == copies  # resumed on its own tail
    finally:
        h.close()


def test_no_room_beside_falls_back_to_a_copy_in_place():
    """When the copy cannot be built beside the served one (a full disk; here
    a directory in the way of its file), the replica must not retry that for
    ever, never catching up: the next copy replaces the database in place."""
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        for i in range(200):
            c.set("k%d" % (i % 50), "v%d" % i)
        assert c.wait(1, WAIT_MS) == 1
        os.mkdir(os.path.join(r.dir, "db-0.simdr.sync"))
        before = c.info("persistence")["simdr_compactions"]
        c.execute_command("BGREWRITEAOF")
        wait_until(lambda: c.info("persistence")["simdr_compactions"] > before and
                   not c.info("persistence")["aof_rewrite_in_progress"], "the compaction")
        c.set("after", "1")
        assert c.wait(1, WAIT_MS) == 1
        assert r.client().get("after") == b"1"
        assert db_records(r) == db_records(p)
        assert "cannot build the copy beside the served one" in r.log()
    finally:
        cleanup(r, p)


def test_replica_follows_swapdb_flushall_and_transactions_across_databases():
    """SWAPDB, FLUSHDB and FLUSHALL replace or exchange whole files, COPY DB
    and MULTI/EXEC with SELECT write to several databases in one command,
    BGREWRITEAOF compacts while they run, and keys expire meanwhile: after
    each round the replica holds every database as the primary does, and
    again after a restart of its own (it resumes from its files)."""
    import random
    p = start()
    r = replica_of(p)
    rng = random.Random(41)
    try:
        c = [p.client(db=db) for db in range(4)]

        def round_of_writes(n):
            for step in range(n):
                db = rng.randrange(4)
                k, k2 = "k%d" % rng.randrange(12), "k%d" % rng.randrange(12)
                op = rng.randrange(11)
                try:
                    if op == 0:
                        c[db].set(k, "v%d" % step)
                    elif op == 1:
                        c[db].set(k, "e%d" % step, px=rng.randrange(1, 200))
                    elif op == 2:
                        c[db].swapdb(db, rng.randrange(4))
                    elif op == 3 and rng.random() < 0.3:
                        c[db].flushdb()
                    elif op == 4 and rng.random() < 0.1:
                        c[db].flushall()
                    elif op == 5:
                        c[db].rename(k, k2)
                    elif op == 6:
                        c[db].copy(k, k2, destination_db=rng.randrange(4), replace=True)
                    elif op == 7:
                        t = c[db].pipeline(transaction=True)
                        t.execute_command("SELECT", rng.randrange(4))
                        t.set(k, "m%d" % step)
                        t.execute_command("SWAPDB", rng.randrange(4), rng.randrange(4))
                        t.append(k2, "zz")
                        t.execute()
                    elif op == 8 and rng.random() < 0.2:
                        c[db].bgrewriteaof()
                    elif op == 9:
                        c[db].append(k, "a" * rng.choice([1, 70000, 1100000]))
                    else:
                        c[db].expire(k, 1)
                except redis.ResponseError:
                    pass  # a missing key to rename, a compaction already running

        def same_everywhere():
            assert c[0].wait(1, WAIT_MS) == 1
            # Keys of up to 200 ms expire on each side by its own clock: one
            # read on each side can fall either side of that moment (a slow
            # sanitizer build saw the replica's value and then the primary's
            # None). The sides must agree once such a key has expired on
            # both: the comparison is repeated until it holds, for a while.
            deadline = time.time() + 5
            while True:
                seen = []
                for db in range(4):
                    pc, rc = p.client(db=db), r.client(db=db)
                    keys = sorted(pc.keys("*"))
                    seen.append((db, keys, sorted(rc.keys("*")),
                                 pc.mget(keys) if keys else [], rc.mget(keys) if keys else [],
                                 pc.dbsize(), rc.dbsize()))
                if all(k == rk and v == rv and n == rn for _, k, rk, v, rv, n, rn in seen):
                    return
                if time.time() > deadline:
                    break
                time.sleep(0.1)
            for db, keys, rkeys, values, rvalues, n, rn in seen:
                assert rkeys == keys, db
                assert rvalues == values, db
                assert rn == n, db

        for _ in range(3):
            round_of_writes(150)
            same_everywhere()
        r.stop()
        round_of_writes(100)
        r.start()
        same_everywhere()
    finally:
        cleanup(r, p)


def test_wait_counts_a_flush_only_once_the_replica_emptied_the_database():
    """WAIT after FLUSHALL, FLUSHDB or a SWAPDB with an empty database
    counts a replica only once it has dropped the data too. A database
    without a file has tail 0, and databases of tail 0 were left out of
    the count: WAIT answered 1 at once while the replica, stopped, still
    served every key the flush removed."""
    import signal as sig
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        c1 = p.client(db=1)
        for flush in ("FLUSHALL", "FLUSHDB", "SWAPDB"):
            c.set("k", "v")
            c1.set("k1", "v1")
            assert c.wait(1, WAIT_MS) == 1
            r.proc.send_signal(sig.SIGSTOP)
            try:
                if flush == "SWAPDB":
                    c.execute_command("SWAPDB", 0, 5)  # db 5 is empty
                else:
                    c.execute_command(flush)
                assert c.wait(1, 300) == 0  # the stopped replica still has k
            finally:
                r.proc.send_signal(sig.SIGCONT)
            assert c.wait(1, WAIT_MS) == 1
            assert r.client().exists("k") == 0
            assert r.client(db=1).exists("k1") == (0 if flush == "FLUSHALL" else 1)
            c.flushall()
    finally:
        cleanup(r, p)


def test_replicaof_itself():
    """REPLICAOF naming the server's own address answers OK as in Redis, and
    the server, now a read-only replica, says in its log what is wrong (not
    that a replica does not feed replicas); its data stays, and REPLICAOF
    NO ONE makes it a primary again."""
    s = start()
    try:
        c = s.client()
        c.set("k", "v")
        assert c.execute_command("REPLICAOF", "127.0.0.1", str(s.port)) == b"OK"
        wait_until(lambda: "cannot replicate itself" in s.log(), "the refusal logged", timeout=10)
        assert "does not feed replicas" not in s.log()
        assert c.info("replication")["master_link_status"] == "down"
        assert c.get("k") == b"v"
        assert c.execute_command("REPLICAOF", "NO", "ONE") == b"OK"
        assert c.set("k2", "v2")
        assert c.get("k") == b"v"
    finally:
        cleanup(s)


def test_primary_paused_beyond_repl_timeout():
    """The primary stopped (SIGSTOP) longer than the replica's repl-timeout:
    the replica drops the link and connects again, its attempts queueing on
    the paused primary; resumed, the primary writes and compacts, and the
    replica ends with its data byte for byte, the stale links gone."""
    import signal
    import time
    p = start()
    r = replica_of(p, "--repl-timeout", "1")
    try:
        c = p.client()
        for i in range(2000):
            c.set("k%d" % (i % 300), "a%d" % i + "x" * 100)
        assert c.wait(1, WAIT_MS) == 1
        os.kill(p.proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "repl-timeout" in r.log(), "the replica to time out")
            time.sleep(1.5)  # a reconnection waits on the paused primary too
        finally:
            os.kill(p.proc.pid, signal.SIGCONT)
        for i in range(2000):
            c.set("k%d" % (i % 300), "b%d" % i + "x" * 100)
        c.execute_command("BGREWRITEAOF")
        wait_until(lambda: not c.info("persistence")["aof_rewrite_in_progress"], "compaction")
        c.set("after", "1")
        assert c.wait(1, WAIT_MS) == 1
        wait_until(lambda: c.info("replication")["connected_slaves"] == 1, "stale links closed")
        assert r.client().get("after") == b"1"
        assert contents(r) == contents(p)
        assert db_records(r) == db_records(p)
    finally:
        cleanup(r, p)


def test_watch_on_a_replica_sees_the_primarys_writes():
    """A client of the replica WATCHes keys; the primary then creates one
    and deletes it again, overwrites another, deletes a third: each EXEC on
    the replica fails, as on a Redis replica (the replica applied the
    primary's bytes without telling its watchers, so a key created and
    deleted since WATCH, which reads as absent again, let EXEC run). An
    untouched watched key lets it run."""
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        c.set("kept", "1")
        c.set("old", "1")
        c.set("gone", "1")
        assert c.wait(1, WAIT_MS) == 1
        rc = r.client()

        def exec_after(key, primary_writes):
            pipe = rc.pipeline()
            pipe.watch(key)
            primary_writes()
            assert c.wait(1, WAIT_MS) == 1
            pipe.multi()
            pipe.get(key)
            try:
                return pipe.execute()
            except redis.WatchError:
                return None
            finally:
                pipe.reset()

        assert exec_after("new", lambda: (c.set("new", "1"), c.delete("new"))) is None
        assert exec_after("old", lambda: c.set("old", "2")) is None
        assert exec_after("gone", lambda: c.delete("gone")) is None
        assert exec_after("kept", lambda: c.set("other", "1")) == [b"1"]
    finally:
        cleanup(p, r)


def test_replica_readers_see_each_mset_whole():
    """The primary sends its file's bytes in LOG chunks cut by size; a
    replica that applied each chunk as it arrived showed an MGET of the keys
    one MSET writes with some of the next MSET's values (3-9 reads of about
    500 in this setting). Each MSET here writes 200 keys of 30 KB with
    one tag; every MGET on the replica must see a single tag."""
    p = start()
    r = replica_of(p)
    stop = threading.Event()
    mixed, reads = [], [0]

    def read_replica():
        c = r.client()
        keys = ["k%d" % i for i in range(200)]
        while not stop.is_set():
            tags = {v[:8] if v else None for v in c.mget(keys)}
            reads[0] += 1
            if len(tags) > 1:
                mixed.append(sorted(map(str, tags))[:3])

    reader = threading.Thread(target=read_replica)
    reader.start()
    try:
        c = p.client()
        for n in range(80):
            c.mset({"k%d" % i: b"%08d" % n + b"x" * 30000 for i in range(200)})
        assert c.wait(1, WAIT_MS) == 1
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
        cleanup(p, r)
    assert reads[0] > 0 and not mixed, (reads[0], mixed[:3])


@pytest.mark.parametrize("inside", ["", "WAIT"])
def test_replica_readers_see_a_transaction_over_two_databases_whole(inside):
    """A MULTI/EXEC writing db 0 and db 1 reaches a replica as two databases'
    LOG chunks; a replica that applied each database's part when it arrived
    showed a reader db 0 after the transaction and db 1 before it. Each
    transaction here writes 60 keys of 30 KB in each database with one tag;
    a transaction on the replica reading both must see a single tag. With a
    WAIT between the two parts (WAIT feeds the replicas at once), the feed
    must not mark the middle of the transaction as a turn's end."""
    p = start()
    r = replica_of(p)
    stop = threading.Event()
    mixed, reads = [], [0]

    def read_replica():
        c = r.client()
        while not stop.is_set():
            t = c.pipeline(transaction=True)
            t.execute_command("SELECT", 0)
            t.get("k0")
            t.get("k59")
            t.execute_command("SELECT", 1)
            t.get("k0")
            t.get("k59")
            t.execute_command("SELECT", 0)
            got = t.execute()
            tags = {v[:8] if v else None for v in (got[1], got[2], got[4], got[5])}
            reads[0] += 1
            if len(tags) > 1:
                mixed.append(sorted(map(str, tags)))

    reader = threading.Thread(target=read_replica)
    reader.start()
    try:
        c = p.client()
        for n in range(40):
            value = {"k%d" % i: b"%08d" % n + b"x" * 30000 for i in range(60)}
            t = c.pipeline(transaction=True)
            t.execute_command("SELECT", 0)
            t.mset(value)
            if inside:
                t.execute_command("WAIT", 0, 0)
            t.execute_command("SELECT", 1)
            t.mset(value)
            t.execute_command("SELECT", 0)
            t.execute()
        assert c.wait(1, WAIT_MS) == 1
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
        cleanup(p, r)
    assert reads[0] > 0 and not mixed, (reads[0], mixed[:3])


def test_replica_reports_its_link_up_only_once_it_serves_the_primarys_data():
    """A replica restarted after its primary replaced a database reported
    master_link_status:up at the primary's first message, while it still
    served its old copy of that database until the new copy was whole, so a
    client that waited for "up" read the old value. Now "up" means every
    database is named and no copy is under way."""
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        c.set("key", "old")
        assert c.wait(1, WAIT_MS) == 1
        r.stop()
        c.flushall()  # a new file for db 0: the replica must copy it
        c.set("key", "new")
        for i in range(300):
            c.set("fill:%d" % i, b"x" * 100000)
        r.start()
        rc = r.client()
        wait_until(lambda: rc.info("replication")["master_link_status"] == "up",
                   "the replica's link up", timeout=20)
        assert rc.get("key") == b"new"
    finally:
        cleanup(p, r)


def test_replica_readers_see_each_swapdb_whole():
    """SWAPDB gives both databases new files, which a replica copies again;
    it swapped each copy in as it was whole, so a reader could see both
    databases holding the same side. A transaction on the replica reading
    both must see one of them holding "a" and the other "b"."""
    p = start()
    r = replica_of(p)
    stop = threading.Event()
    seen, reads = set(), [0]
    try:
        c = p.client()
        for db, tag in ((0, b"a"), (1, b"b")):
            t = c.pipeline(transaction=True)
            t.execute_command("SELECT", db)
            t.mset({"k%d" % i: tag * 10000 for i in range(200)})
            t.execute_command("SELECT", 0)
            t.execute()
        assert c.wait(1, WAIT_MS) == 1

        def read_replica():
            rc = r.client()
            while not stop.is_set():
                t = rc.pipeline(transaction=True)
                t.execute_command("SELECT", 0)
                t.get("k7")
                t.execute_command("SELECT", 1)
                t.get("k7")
                t.execute_command("SELECT", 0)
                got = t.execute()
                seen.add((got[1][:1], got[3][:1]))
                reads[0] += 1

        reader = threading.Thread(target=read_replica)
        reader.start()
        try:
            for _ in range(20):
                c.execute_command("SWAPDB", 0, 1)
                assert c.wait(1, WAIT_MS) == 1
        finally:
            stop.set()
            reader.join()
    finally:
        cleanup(p, r)
    assert reads[0] > 0 and seen <= {(b"a", b"b"), (b"b", b"a")}, (reads[0], seen)
