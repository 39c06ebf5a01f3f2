"""simdr-server stopped while clients write: SIGTERM, SHUTDOWN from another
client and kill -9 (with each durability mode), with one and two I/O threads.
The writers mix plain SETs, pipelines, MULTI/EXEC, INCR, APPEND and values
past the batch record size (64 KiB) and the spool threshold (1 MiB); after
the restart every acknowledged write must be there, and a counter must hold
at least its last acknowledged value (an unacknowledged INCR may have
landed)."""
import os
import shutil
import signal
import threading
import time

import pytest

from serverutil import Server, encode

WRITERS = 3
MIN_ACKED = 300


def _value(w, i):
    size = (10, 70000, 1200000)[i % 3] if i % 7 == 0 else 20
    tag = b"%d:%d:" % (w, i)
    return (tag * (size // len(tag) + 1))[:size]


def _writer(server, w, acked, counters, lock, stop):
    try:
        c = server.raw()
        i = 0
        while not stop.is_set():
            key, val = b"w%d:%d" % (w, i), _value(w, i)
            kind = i % 4
            if kind == 0:
                assert c.call("SET", key, val) == b"+OK\r\n"
                got = {key: val}
            elif kind == 1:  # pipelined writes: one batch append
                batch = {key + b":%d" % j: val for j in range(5)}
                c.send(b"".join(encode("SET", k, v) for k, v in batch.items()))
                assert all(c.read_reply() == b"+OK\r\n" for _ in batch)
                got = batch
            elif kind == 2:
                c.send(encode("MULTI") + encode("SET", key, val) + encode("APPEND", key, b"+") +
                       encode("EXEC"))
                replies = [c.read_reply() for _ in range(4)]
                assert replies[3] == b"*2\r\n+OK\r\n:%d\r\n" % (len(val) + 1), replies
                got = {key: val + b"+"}
            else:
                r = c.call("INCR", b"ctr%d" % w)
                assert r[:1] == b":", r
                with lock:
                    counters[w] = int(r[1:-2])
                got = {}
            with lock:
                acked.update(got)
            i += 1
    except (ConnectionError, OSError):
        pass  # the server went away under us


def _run_and_stop(args, how):
    s = Server(*args, keep_dir=True)
    s.start()
    acked, counters, lock, stop = {}, {}, threading.Lock(), threading.Event()
    threads = [threading.Thread(target=_writer, args=(s, w, acked, counters, lock, stop))
               for w in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while len(acked) < MIN_ACKED and time.time() < deadline:
        time.sleep(0.02)
    if how == "kill9":
        s.kill9()
    elif how == "sigterm":
        assert s.stop(signal.SIGTERM) == 0
    else:
        c = s.raw()
        c.send(encode("SHUTDOWN"))
        assert c.closed_by_peer()
        assert s.proc.wait(timeout=120) == 0
        s.stop()
    stop.set()
    for t in threads:
        t.join()
    with lock:
        snapshot, last = dict(acked), dict(counters)
    assert len(snapshot) >= MIN_ACKED
    s.start()
    try:
        c = s.raw()
        for k, v in snapshot.items():
            got = c.call("GET", k)
            assert got == b"$%d\r\n%s\r\n" % (len(v), v), (k, got[:40], len(v))
        for w, n in last.items():
            got = c.call("GET", b"ctr%d" % w)
            assert int(got.split(b"\r\n")[1]) >= n
        c.close()
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("how", ["sigterm", "shutdown"])
def test_clean_stop_under_load_keeps_acknowledged_writes(how, threads):
    _run_and_stop(["--durability", "no", "--threads", threads], how)


@pytest.mark.parametrize("mode", ["no", "everysec", "always"])
def test_kill9_under_mixed_load_with_io_threads(mode):
    _run_and_stop(["--durability", mode, "--threads", "2"], "kill9")
