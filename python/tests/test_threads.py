"""Threads and processes: 8 threads hammering one store, close() while threads are inside
calls, and a read-only reader process that sees new entries through refresh()."""
import multiprocessing
import os
import random
import signal
import threading

import numpy as np
import pytest

import simdr

from conftest import scale

THREADS = 8


def test_eight_threads_hammering_one_store(db):
    rounds = int(400 * scale())
    shared = [b"shared%d" % i for i in range(16)]
    db.put_many([(k, b"init") for k in shared])
    errors = []
    barrier = threading.Barrier(THREADS + 1)

    def worker(t):
        rng = random.Random(t)
        mine = {}
        try:
            barrier.wait()
            for r in range(rounds):
                op = rng.randrange(8)
                key = b"t%d-%d" % (t, rng.randrange(40))
                if op == 0:
                    # Not the single byte 0x00 (the tombstone marker, refused).
                    value = os.urandom(rng.randrange(1, 300)).replace(b"\x00", b"\x01")
                    db.write(key, value)
                    mine[key] = value
                elif op == 1:
                    batch = {b"t%d-%d" % (t, rng.randrange(40)): b"b%d" % r for _ in range(5)}
                    db.put_many(batch)
                    mine.update(batch)
                elif op == 2 and key in mine:
                    db.delete(key)
                    del mine[key]
                elif op == 3:
                    h = db.read_entry(rng.choice(shared))
                    assert h is not None and len(bytes(h)) > 0
                elif op == 4:
                    db.write(rng.choice(shared), b"w%d" % t)
                elif op == 5:
                    got = db.get_many(list(mine)[:20])
                    assert [bytes(h) for h in got] == [mine[k] for k in list(mine)[:20]]
                elif op == 6:
                    sum(1 for _ in db)
                else:
                    assert db.read(key) == mine.get(key)
            for key, value in mine.items():
                assert db.read(key) == value
        except Exception as e:  # reported to the main thread
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    barrier.wait()
    for _ in range(3):
        db.compact()
    for th in threads:
        th.join()
    assert errors == []
    assert db.check()["ok"]


def test_close_while_threads_are_busy(store_path):
    db = simdr.open(store_path)
    db.put_many([(b"k%d" % i, os.urandom(64)) for i in range(200)])
    started = threading.Barrier(THREADS + 1)
    outcome = []

    def reader(t):
        n = 0
        started.wait()
        try:
            while True:
                if t % 2:
                    db.write(b"w%d" % (n % 50), b"x" * 100)
                else:
                    assert db.read(b"k%d" % (n % 200)) is not None
                    db.get_many([b"k1", b"k2"])
                n += 1
        except simdr.ClosedError:
            outcome.append(("closed", n))
        except Exception as e:
            outcome.append(("error", repr(e)))

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    started.wait()
    db.close()
    for th in threads:
        th.join()
    assert len(outcome) == THREADS and all(kind == "closed" for kind, _ in outcome), outcome
    with simdr.open(store_path) as again:
        assert again.check()["ok"]


def test_close_while_a_stream_write_runs(store_path):
    db = simdr.open(store_path)
    in_reader = threading.Event()
    release = threading.Event()
    result = []

    class Slow:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls == 1:
                in_reader.set()
                release.wait()
                return b"a" * n
            return b"" if self.calls > 3 else b"b" * n

    def streamer():
        try:
            db.write_stream(b"s", Slow())
            result.append("ok")
        except Exception as e:
            result.append(repr(e))

    th = threading.Thread(target=streamer)
    th.start()
    in_reader.wait()
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # close waits for the running write
    release.set()
    th.join()
    closer.join()
    assert result == ["ok"] and db.closed
    with simdr.open(store_path) as again:
        assert len(again.read(b"s")) > 0


def _child_calls_on_inherited_store(db, other_path):
    """Run in a forked child: each call on the inherited store must return
    (an exception for the writes) instead of waiting for a parent thread."""
    signal.alarm(20)  # a call that waits for the parent's thread never returns
    refused = []
    for name, call in [("write", lambda: db.write(b"c", b"1")),
                       ("put_many", lambda: db.put_many([(b"c", b"1")])),
                       ("delete", lambda: db.delete(b"k")),
                       ("rename", lambda: db.rename(b"k", b"k2")),
                       ("compact", db.compact)]:
        try:
            call()
        except simdr.InvalidArgumentError:
            refused.append(name)
    ok = len(refused) == 5 and db.read(b"k") == b"v" and db.check()["ok"]
    with simdr.open(other_path) as other:
        db.copy(b"k", other)
        ok = ok and other.read(b"k") == b"v"
    db.close()
    return ok


def test_forked_child_does_not_wait_for_a_writing_parent_thread(store_path, tmp_path):
    # A thread of the parent is inside a write (its stream reader blocks) when
    # the process forks: in the child that thread does not exist, and the
    # store's writer lock it held is never let go there. The child's calls on
    # the store it inherited hung on that lock before refusing.
    db = simdr.open(store_path)
    db[b"k"] = b"v"
    pipe = _Pipe()
    th = threading.Thread(target=db.write_stream, args=(b"s", pipe))
    th.start()
    try:
        assert pipe.in_reader.wait(10)
        pid = os.fork()
        if pid == 0:
            try:
                code = 0 if _child_calls_on_inherited_store(db, tmp_path / "other.bin") else 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        pipe.end(b"streamed")
        th.join()
    assert os.WIFEXITED(status), "the child hung (killed by its alarm)"
    assert os.WEXITSTATUS(status) == 0
    assert db.read(b"s") == b"streamed" and db.read(b"k") == b"v" and db.read(b"c") is None
    db.close()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Pipe:
    """A pipe a write_stream reader blocks on until end() writes its last bytes
    and closes it (once, whoever calls first: the test or its watchdog)."""

    def __init__(self):
        self.r, self.w = os.pipe()
        self.lock = threading.Lock()
        self.open = True
        self.in_reader = threading.Event()

    def read(self, n):
        self.in_reader.set()
        return os.read(self.r, n)

    def end(self, data):
        with self.lock:
            if self.open:
                os.write(self.w, data)
                os.close(self.w)
                self.open = False


def test_ctrl_c_interrupts_close_waiting_for_another_thread(store_path):
    """close() waits for calls running in other threads; one that never ends
    (a write_stream whose reader blocks on a pipe) must not make the program
    deaf to Ctrl-C. The interrupted close() leaves the store open and usable,
    and a close() another thread started meanwhile closes it in its place."""
    db = simdr.open(store_path)
    pipe = _Pipe()
    result = []

    def streamer():
        try:
            db.write_stream(b"s", pipe)
            result.append("ok")
        except Exception as e:
            result.append(repr(e))

    th = threading.Thread(target=streamer)
    th.start()
    pipe.in_reader.wait()
    # Without the interrupt close() would wait for ever: the watchdog ends the
    # stream much later, so the failure is a failed assertion, not a hang.
    watchdog = threading.Timer(20, pipe.end, (b"watchdog",))
    watchdog.start()
    second_close = threading.Timer(0.05, db.close)
    old = signal.signal(signal.SIGALRM, _raise_keyboard_interrupt)
    second_close.start()
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            db.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    watchdog.cancel()
    assert th.is_alive() and result == []
    pipe.end(b"streamed")
    th.join()
    second_close.join()
    os.close(pipe.r)
    assert result == ["ok"], result
    assert db.closed  # the second close() took over and closed the file
    with simdr.open(store_path) as again:
        assert again.read(b"s") == b"streamed"


def test_interrupted_close_leaves_the_store_usable(store_path):
    db = simdr.open(store_path)
    pipe = _Pipe()
    th = threading.Thread(target=db.write_stream, args=(b"s", pipe))
    th.start()
    pipe.in_reader.wait()
    watchdog = threading.Timer(20, pipe.end, (b"watchdog",))
    watchdog.start()
    old = signal.signal(signal.SIGALRM, _raise_keyboard_interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            db.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    watchdog.cancel()
    assert not db.closed
    assert db.read(b"absent") is None
    pipe.end(b"value")
    th.join()
    os.close(pipe.r)
    db.write(b"after", b"1")
    assert db.read(b"s") == b"value" and db.read(b"after") == b"1"
    db.close()
    assert db.closed


def test_signal_handler_closing_the_store_during_close_does_not_hang(store_path):
    """A close() waiting for another thread lets signal handlers run; one that
    closes the same store (a SIGTERM handler's cleanup) runs on the very thread
    whose close() is waiting, so it must not wait for that close() to finish:
    it returns, and the close() it interrupted closes the file."""
    db = simdr.open(store_path)
    pipe = _Pipe()
    th = threading.Thread(target=db.write_stream, args=(b"s", pipe))
    th.start()
    pipe.in_reader.wait()
    calls = []

    def handler(signum, frame):
        if calls:  # the watchdog's signal: break a hang with an error
            raise RuntimeError("the handler's close() hung")
        calls.append("handler")
        db.close()
        calls.append("handler's close returned")

    old = signal.signal(signal.SIGALRM, handler)
    ender = threading.Timer(0.5, pipe.end, (b"v",))
    watchdog = threading.Timer(20, signal.raise_signal, (signal.SIGALRM,))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        ender.start()
        watchdog.start()
        db.close()
    finally:
        watchdog.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    th.join()
    ender.join()
    os.close(pipe.r)
    assert calls == ["handler", "handler's close returned"] and db.closed
    with simdr.open(store_path) as again:
        assert again.read(b"s") == b"v"


def _reader_process(path, expected, conn):
    try:
        ro = simdr.open(path, readonly=True)
        seen = ro.read(b"go")
        conn.send(("opened", seen))
        conn.recv()  # the parent appended
        added = ro.refresh()
        values = [ro.read(b"k%d" % i) for i in range(expected)]
        arr = np.frombuffer(ro.read_entry(b"array"), np.float32)
        conn.send(("refreshed", added, values, float(arr.sum())))
        ro.close()
    except Exception as e:
        conn.send(("error", repr(e)))


def test_multiprocessing_reader_refresh(store_path):
    ctx = multiprocessing.get_context("fork")
    db = simdr.open(store_path)
    db.write(b"go", b"1")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader_process, args=(store_path, 50, child))
    proc.start()
    try:
        assert parent.recv() == ("opened", b"1")
        for i in range(50):
            db.write(b"k%d" % i, b"v%d" % i)
        db.write(b"array", np.ones(1000, np.float32))
        parent.send("appended")
        msg = parent.recv()
        assert msg[0] == "refreshed", msg
        _, added, values, total = msg
        assert added == 51
        assert values == [b"v%d" % i for i in range(50)]
        assert total == 1000.0
    finally:
        proc.join(30)
        db.close()
    assert proc.exitcode == 0


def test_blocked_writers_do_not_hold_the_gil(store_path):
    """A stream write holds the store's write lock while its reader waits; a write and a
    compaction started meanwhile block inside the engine. If they kept the GIL there, this
    thread could never run again to let the reader finish (the test would hang)."""
    db = simdr.open(store_path)
    db.write(b"k", b"v")
    reader_waiting, release = threading.Event(), threading.Event()
    done = []

    class Held:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls == 1:
                reader_waiting.set()
                release.wait()
                return b"s" * 10
            return b""

    streamer = threading.Thread(target=lambda: (db.write_stream(b"s", Held()), done.append("s")))
    streamer.start()
    reader_waiting.wait()
    writer = threading.Thread(target=lambda: (db.write(b"w", b"1"), done.append("w")))
    compactor = threading.Thread(target=lambda: (db.compact(), done.append("c")))
    writer.start()
    compactor.start()
    writer.join(0.3)
    compactor.join(0.1)
    assert writer.is_alive() and compactor.is_alive() and done == []
    assert db.read(b"k") == b"v"  # readers are not blocked by the writer lock
    release.set()
    for th in (streamer, writer, compactor):
        th.join()
    assert sorted(done) == ["c", "s", "w"]
    assert db.read(b"w") == b"1" and db.read(b"s") == b"s" * 10
    db.close()
