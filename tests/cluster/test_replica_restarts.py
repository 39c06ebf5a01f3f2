"""simdr-server replicas across restarts that change a server's role: a
replica restarted without --replicaof (promoted the way a configuration file
is edited and the server restarted) and written as a primary, then made a
replica of its old primary again. Its store file then holds bytes its old
primary never had, however its last entry looks, so it must copy the data
again and end with the primary's data byte for byte."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import Server  # noqa: E402

WAIT_MS = 20000  # far above what a replica needs here; bounds a failing run


def start(*args, data_dir=None, port=None):
    return Server("--auto-compact-percent", "0", *args, data_dir=data_dir, port=port,
                  keep_dir=True).start()


def db_file(server, db=0):
    with open(os.path.join(server.dir, "db-%d.simdr" % db), "rb") as f:
        return f.read()


def contents(server):
    c = server.client()
    return {k: c.get(k) for k in c.keys("*")}


def cleanup(*servers):
    for s in servers:
        s.cleanup()
        shutil.rmtree(s.dir, ignore_errors=True)


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
