"""simdr-server replicas across restarts that change a server's role: a
replica restarted without --replicaof (promoted the way a configuration file
is edited and the server restarted) and written as a primary, then made a
replica of its old primary again. Its store file then holds bytes its old
primary never had, however its last entry looks, so it must copy the data
again and end with the primary's data byte for byte, while the old primary's
other replicas resume on it. And either server killed with SIGKILL right
after a flush, a swap or a compaction."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from clusterutil import cleanup, contents, db_file, start  # noqa: E402

WAIT_MS = 20000  # far above what a replica needs here; bounds a failing run


def test_replica_restarted_as_a_primary_and_written_then_replica_again():
    """The old primary p takes two writes that r never gets, then dies and
    comes back; r, restarted without --replicaof, takes the same two keys,
    the first with another value of the same length, the last identical: its
    last entry then equals p's, at the same offset, over different bytes.
    Pointed at p again, r must not keep its own value."""
    p = start()
    r = start("--replicaof", "127.0.0.1", str(p.port))
    try:
        c = p.client()
        for i in range(40):
            c.set("base:%d" % i, "value-%d" % i)
        assert c.wait(1, WAIT_MS) == 1
        r.stop()
        c.set("status", "run-1111")  # r misses these
        c.set("heartbeat", "ok")
        p.stop()  # the primary is lost for a while
        r.args = ["--auto-compact-percent", "0"]  # promoted by its configuration
        r.start()
        rc = r.client()
        assert rc.info("replication")["role"] == "master"
        rc.set("status", "run-2222")
        rc.set("heartbeat", "ok")
        p.start()  # back, with its file whole
        c = p.client()
        assert c.get("status") == b"run-1111"
        assert rc.execute_command("REPLICAOF", "127.0.0.1", str(p.port)) == b"OK"
        assert c.wait(1, WAIT_MS) == 1
        assert rc.get("status") == b"run-1111"
        assert contents(r) == contents(p)
        assert db_file(r) == db_file(p)
    finally:
        cleanup(r, p)


def write_dbs(server, round_, n=1500):
    """Overwrites keys in databases 0..2 (half of them garbage for a compaction)."""
    for db in range(3):
        pipe = server.client(db=db).pipeline(transaction=False)
        for i in range(n):
            pipe.set("k%d" % (i % (n // 2)), "r%d-db%d-%d-" % (round_, db, i) + "x" * 200)
        pipe.execute()


def assert_converged(p, r):
    c = p.client()
    assert c.wait(1, WAIT_MS) == 1
    for db in range(16):
        pc, rc = p.client(db=db), r.client(db=db)
        keys = sorted(pc.keys("*"))
        assert sorted(rc.keys("*")) == keys, "db %d" % db
        if keys:
            assert rc.mget(keys) == pc.mget(keys), "db %d" % db
        pf = os.path.join(p.dir, "db-%d.simdr" % db)
        if os.path.exists(pf) and os.path.getsize(pf):
            assert db_file(r, db) == db_file(p, db), "db %d" % db


def test_kill9_right_after_flushes_swaps_and_compactions():
    """The primary or the replica killed with SIGKILL right after FLUSHALL,
    FLUSHDB, SWAPDB or BGREWRITEAOF (the replica then in the middle of a full
    copy, a prefix rebuild or the switch to the new file), both restarted:
    the replica ends with every database of the primary byte for byte, and
    a write WAIT confirmed before the primary died is on the replica."""
    p = start()
    r = start("--replicaof", "127.0.0.1", str(p.port))
    try:
        events = [("flushall",), ("swapdb", 0, 1), ("bgrewriteaof",), ("flushdb",)]
        round_ = 0
        for victim in ("replica", "primary"):
            for ev in events:
                round_ += 1
                write_dbs(p, round_)
                c = p.client(db=1)
                assert c.wait(1, WAIT_MS) == 1
                c.execute_command(*ev)
                c.set("marker", str(round_))
                confirmed = c.wait(1, WAIT_MS)
                write_dbs(p, round_, 300)  # in flight when the kill comes
                server = r if victim == "replica" else p
                server.kill9()
                if victim == "primary" and confirmed == 1:
                    assert r.client(db=1).get("marker") == str(round_).encode(), ev
                server.start()
                assert_converged(p, r)
    finally:
        cleanup(r, p)


def test_replica_promoted_by_restart_keeps_the_old_primarys_replicas():
    """A replica restarted without --replicaof is promoted as by REPLICAOF
    NO ONE: the other replica of the lost primary, pointed at it, resumes
    from its own tail (no full copy) and gets the writes made since."""
    p = start()
    b = start("--replicaof", "127.0.0.1", str(p.port))
    c = start("--replicaof", "127.0.0.1", str(p.port))
    try:
        pc = p.client()
        for i in range(2000):
            pc.set("k%d" % (i % 300), "v%d" % i)
        assert pc.wait(2, WAIT_MS) == 2
        p.stop()
        b.stop()
        b.args = ["--auto-compact-percent", "0"]
        b.start()
        assert "started without --replicaof after running as a replica" in b.log()
        bc = b.client()
        bc.set("after-promotion", "1")
        assert c.client().execute_command("REPLICAOF", "127.0.0.1", str(b.port)) == b"OK"
        assert bc.wait(1, WAIT_MS) == 1
        assert c.client().get("after-promotion") == b"1"
        assert c.log().count("full copy") == 0
        assert contents(c) == contents(b)
        assert db_file(c) == db_file(b)
    finally:
        cleanup(c, b, p)
