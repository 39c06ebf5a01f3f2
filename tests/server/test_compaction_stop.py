"""A running compaction (BGREWRITEAOF) is stopped, not waited for, by what
must close a store: FLUSHDB, SWAPDB and SHUTDOWN. The log says so, the
compacted store stays on its old file with every key, and a later
BGREWRITEAOF completes. The commands go in one pipeline with the
BGREWRITEAOF, so they meet the compaction while it runs."""
import os

from serverutil import IO_TIMEOUT, Server, encode, wait_until

KEYS = 20000
VALUE = b"v" * 200


def load(c, db_keys):
    pipe = c.pipeline(transaction=False)
    for i in range(db_keys):
        pipe.set(b"k%06d" % i, VALUE + b"%d" % i)
        pipe.set(b"k%06d" % i, VALUE + b"%d!" % i)  # garbage for the compaction
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def expect_keys(c):
    for start in range(0, KEYS, 2000):
        got = c.mget([b"k%06d" % i for i in range(start, start + 2000)])
        for i, v in zip(range(start, start + 2000), got):
            assert v == VALUE + b"%d!" % i, "key %d: %r" % (i, v)


def test_flushdb_and_swapdb_stop_a_running_compaction():
    with Server() as srv:
        c = srv.client()
        load(c, KEYS)
        c1 = srv.client(db=1)
        c1.set("other", "x")
        c2 = srv.client(db=2)
        c2.set("third", "y")
        size = os.path.getsize(os.path.join(srv.dir, "db-0.simdr"))
        for command in (("FLUSHDB",), ("SWAPDB", "1", "2")):
            pipe = c1.pipeline(transaction=False)
            pipe.execute_command("BGREWRITEAOF")
            pipe.execute_command(*command)
            replies = pipe.execute()
            assert replies[1] in (True, b"OK", "OK")
            wait_until(lambda: srv.log().count("compaction stopped") >= 1 +
                       (command[0] == "SWAPDB"), "the log to say the compaction stopped")
            assert os.path.getsize(os.path.join(srv.dir, "db-0.simdr")) == size
            expect_keys(c)
        # FLUSHDB emptied database 1, and SWAPDB brought database 2's key in.
        assert c1.get("other") is None and c1.get("third") == b"y"
        assert "compaction finished" not in srv.log()
        # Not stopped, it completes and shrinks the file.
        c.execute_command("BGREWRITEAOF")
        wait_until(lambda: "compaction finished" in srv.log(), "the last compaction to finish")
        wait_until(lambda: os.path.getsize(os.path.join(srv.dir, "db-0.simdr")) < size,
                   "the compacted file to replace the store")
        expect_keys(c)


def test_shutdown_stops_a_running_compaction():
    # The file's size is taken while the server runs: not under durability
    # always (its files run past their last record); and no compaction of
    # its own may start and end during the load.
    srv = Server("--durability", "everysec", "--auto-compact-percent", "0", keep_dir=True)
    try:
        srv.start()
        c = srv.client()
        load(c, KEYS)
        size = os.path.getsize(os.path.join(srv.dir, "db-0.simdr"))
        # One write: SHUTDOWN runs in the turn that started the compaction.
        raw = srv.raw()
        raw.send(encode("BGREWRITEAOF") + encode("SHUTDOWN"))
        srv.proc.wait(timeout=IO_TIMEOUT)
        assert srv.stop() == 0
        assert "stopping the running compaction: shutting down" in srv.log(), srv.log()
        assert "compaction finished" not in srv.log(), srv.log()
        assert os.path.getsize(os.path.join(srv.dir, "db-0.simdr")) == size
        srv.start()
        expect_keys(srv.client())
    finally:
        srv.stop()
        srv.cleanup()
