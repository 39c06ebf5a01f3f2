"""simdr-server replicas following a compaction of the primary without a full
copy (REBASE, docs/CLUSTER.md): the replica rebuilds the compacted file's
prefix from its own copy of the old file and takes the rest as ordinary
LOG messages. Each case ends with the replica holding the primary's keys and
values and the primary's file byte for byte: a replica that followed the
compaction live while clients wrote; one that was stopped during the
compaction (it rebuilds when it held the old file up to where the
compaction listed its live entries, and copies in full when it held less);
and one whose copy was altered (its entries still pass their CRCs), which
must notice that its rebuilt prefix differs and copy the database in full."""
import os
import struct
import sys
import threading
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import wait_until  # noqa: E402
from clusterutil import cleanup, contents, db_file, replica_of, start  # noqa: E402

WAIT_MS = 30000  # far above what a replica needs here; bounds a failing run


def repl(server):
    return server.client().info("replication")


def compact(c):
    before = c.info("persistence")["simdr_compactions"]
    c.execute_command("BGREWRITEAOF")
    wait_until(lambda: c.info("persistence")["simdr_compactions"] > before
               and not c.info("persistence")["aof_rewrite_in_progress"], "compaction")


def caught_up(p, r):
    """The replica acknowledged everything and swapped its copy in."""
    c = p.client()
    c.set("sentinel", os.urandom(8).hex())
    assert c.wait(1, WAIT_MS) == 1
    wait_until(lambda: not repl(r)["master_sync_in_progress"], "replica synced")


def assert_same(p, r):
    assert contents(r) == contents(p)
    assert db_file(r) == db_file(p)


def write_with_garbage(c, n=4000, keys=1500, tag="a"):
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.set("k:%d" % (i % keys), "%s-%d-" % (tag, i) + "v" * (i % 300))
        if i % 17 == 0:
            pipe.delete("k:%d" % ((i * 7) % keys))
        if i % 29 == 0:
            pipe.delete("absent:%d" % i)
    pipe.execute()


def test_replica_follows_a_compaction_while_clients_write():
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        write_with_garbage(c)
        caught_up(p, r)
        copies = repl(r)["simdr_repl_full_copies"]
        stop = threading.Event()

        def writer():
            w = p.client()
            i = 0
            while not stop.is_set():
                w.set("during:%d" % (i % 500), "d" * (i % 200) + str(i))
                if i % 13 == 0:
                    w.delete("k:%d" % (i % 1500))
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            compact(c)
        finally:
            stop.set()
            t.join()
        write_with_garbage(c, n=500, tag="after")
        caught_up(p, r)
        info = repl(r)
        assert info["simdr_repl_rebases"] >= 1
        assert info["simdr_repl_full_copies"] == copies  # no full copy
        assert info["simdr_repl_rebase_failures"] == 0
        assert repl(p)["simdr_repl_rebases_sent"] >= 1
        assert_same(p, r)
        # and the stream goes on on the new file
        c.set("later", "1")
        caught_up(p, r)
        assert r.client().get("later") == b"1"
        assert_same(p, r)
    finally:
        cleanup(r, p)


def test_replica_stopped_during_the_compaction():
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        write_with_garbage(c)
        caught_up(p, r)
        # It held the old file up to where the compaction listed its live
        # entries: it rebuilds the prefix when it comes back.
        r.stop()
        compact(c)
        write_with_garbage(c, n=300, tag="while-away")
        r.start()
        caught_up(p, r)
        info = repl(r)
        assert info["simdr_repl_rebases"] == 1
        assert info["simdr_repl_full_copies"] == 0
        assert_same(p, r)
        # It misses writes made before the compaction: it holds less than
        # the compaction listed, and copies the database in full.
        r.stop()
        write_with_garbage(c, n=300, tag="missed")
        compact(c)
        r.start()
        caught_up(p, r)
        info = repl(r)
        assert info["simdr_repl_rebases"] == 0
        assert info["simdr_repl_full_copies"] >= 1
        assert_same(p, r)
    finally:
        cleanup(r, p)


def entries(data, aligned=True):
    """(payload start, payload end) of every entry of a store file, walking
    the chain down from its end (docs/FORMAT.md)."""
    out = []
    end = len(data)
    while end > 0:
        prev = struct.unpack_from("<Q", data, end - 12)[0]
        meta = end - 20
        pad = (64 - prev % 64) & 63 if aligned and meta - prev > 1 else 0
        out.append((prev + pad, meta))
        end = prev
    return out


def test_altered_copy_falls_back_to_a_full_copy():
    p = start()
    r = replica_of(p)
    try:
        c = p.client()
        write_with_garbage(c)
        c.set("marker", "marker-value-0123456789")
        caught_up(p, r)
        r.stop()
        # One value changed on the replica, its CRC-32 recomputed: every
        # check of the file passes, but the bytes are not the primary's.
        path = os.path.join(r.dir, "db-0.simdr")
        data = bytearray(db_file(r))
        for lo, hi in entries(bytes(data)):
            at = data.find(b"marker-value-0123456789", lo, hi)
            if at >= 0:
                data[at] = ord("M")
                struct.pack_into("<I", data, hi + 16, zlib.crc32(bytes(data[lo:hi])) & 0xFFFFFFFF)
                break
        else:
            raise AssertionError("marker entry not found")
        with open(path, "wb") as f:
            f.write(data)
        try:
            os.unlink(path + ".hint")
        except FileNotFoundError:
            pass
        compact(c)
        r.start()
        caught_up(p, r)
        info = repl(r)
        assert info["simdr_repl_rebase_failures"] >= 1
        assert info["simdr_repl_full_copies"] >= 1
        assert "the rebuilt prefix is not the primary's" in r.log()
        assert r.client().get("marker") == b"marker-value-0123456789"
        assert_same(p, r)
    finally:
        cleanup(r, p)


def test_hostile_rebase_changes_nothing():
    """REBASE from a primary that lies (a prefix whose hash or length is not
    what the replica's copy gives, a file the replica does not follow, a
    prefix beyond the tail, a word missing): the replica's file stays byte
    for byte as it was, it keeps serving, and after a REBASE it could not
    follow it asks for the database with no identity (a full copy)."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_replica_hostile import FakePrimary, wait_closed_by_replica
    from serverutil import encode as resp

    p = start()
    fake = FakePrimary()
    r = start("--replicaof", "127.0.0.1", str(p.port), "--debug-repl-retry-ms", "50")
    try:
        c = p.client()
        write_with_garbage(c, n=1000, keys=300)
        caught_up(p, r)
        before = db_file(r)
        data = contents(r)
        rc = r.client()
        assert rc.execute_command("REPLICAOF", "127.0.0.1", str(fake.port)) == b"OK"
        conn, dbs = fake.accept()
        ident, tail = dbs[0]
        assert ident and tail == len(before)

        def rebase(*words):
            conn.sendall(b"+OK\r\n" + resp("REBASE", *[str(w) for w in words]))

        cases = [
            # a prefix beyond the tail named, a word missing: malformed
            ((0, 77, ident, tail, 3000, 12345, 0, 1, 2000), False),
            ((0, 77, ident, tail, 1000, 12345, 0, 1), False),
            # the replica's own file at its own tail, but another hash
            ((0, 77, ident, tail, 1000, 12345, 0, 1, 2000), True),
            # a file it does not follow
            ((0, 77, ident + 1, tail, 1000, 12345, 0, 1, 2000), True),
            # more than it holds of the file
            ((0, 77, ident, tail + 64, 1000, 12345, 0, 1, 2000), True),
        ]
        failures = 0
        for words, asks_full in cases:
            rebase(*words)
            assert wait_closed_by_replica(conn)
            failures += asks_full
            conn, dbs = fake.accept()
            # after a REBASE it could not follow, and until a RESET, it
            # names no identity for the database
            assert dbs[0] == ((0 if failures else ident), tail), words
            assert db_file(r) == before
            assert contents(r) == data
        assert repl(r)["simdr_repl_rebase_failures"] == failures
        log = r.log()
        for why in ("REBASE of a prefix beyond the tail", "unexpected message from the primary",
                    "the rebuilt prefix is not the primary's",
                    "it does not hold the file the primary compacted",
                    "it holds less of that file than the compaction listed"):
            assert why in log, why
        conn.close()
        assert rc.execute_command("REPLICAOF", "127.0.0.1", str(p.port)) == b"OK"
        caught_up(p, r)
        assert_same(p, r)
    finally:
        fake.close()
        cleanup(r, p)
