"""Hostile callers: stream readers that misbehave, nested streams into several stores,
buffers that change under a call, keys and values of every odd shape, and use of a store
after close, after fork and from other threads. Each test asserts a clean error or the
exact bytes, never a crash, a hang or a leak."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import simdr


def run_isolated(code, tmp_path):
    """Runs code in a fresh interpreter and returns its stdout: a call that would deadlock
    fails the test (the timeout guards against a hang, it measures nothing)."""
    script = tmp_path / "isolated.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_nested_stream_reader_cannot_write_close_or_check_the_outer_store(tmp_path):
    # A's reader streams into B, whose reader calls back into A: A's write lock is
    # held by this very thread (A's stream is still running), so a write, close,
    # compaction, sync or check of A from there would wait for itself forever.
    out = run_isolated("""
        import os, sys
        import simdr
        d = sys.argv[1]
        a = simdr.open(os.path.join(d, "a.bin"))
        b = simdr.open(os.path.join(d, "b.bin"))
        a.write(b"k", b"v")
        refused = []

        class Inner:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls > 1:
                    return b""
                for call in (lambda: a.write(b"x", b"1"), lambda: a.delete(b"k"),
                             lambda: a.put_many([(b"y", b"2")]), lambda: a.compact(),
                             lambda: a.sync(), lambda: a.check(), lambda: a.close(),
                             lambda: a.rename(b"k", b"j"), lambda: b.copy(b"z", a)):
                    try:
                        call()
                        refused.append("allowed")
                    except simdr.Error as e:
                        refused.append("write_stream" in str(e))
                assert a.read(b"k") == b"v" and len(a) == 1  # reads are allowed
                return b"inner"

        class Outer:
            calls = 0

            def read(self, n):
                self.calls += 1
                if self.calls > 1:
                    return b""
                b.write(b"z", b"zz")
                b.write_stream(b"nested", Inner())
                return b"outer"

        a.write_stream(b"s", Outer())
        print(refused, a.read(b"s"), b.read(b"nested"), a.closed)
        a.close()
        b.close()
    """, tmp_path)
    assert out.split() == ["[True,"] + ["True,"] * 7 + ["True]", "b'outer'", "b'inner'", "False"]


def test_stream_chunk_kept_for_later_cannot_be_resized_meanwhile(db):
    # A reader may return more than the engine asked for; the rest is handed
    # out on the engine's next requests, between which the GIL is free. Another
    # thread shrinking that bytearray then must not make the binding copy
    # bytes past its end: the chunk stays exported (BufferError) until used.
    chunk = bytearray(os.urandom(64 << 20))
    expected = bytes(chunk)
    handed_out, resized = threading.Event(), []

    class Greedy:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls == 1:
                handed_out.set()
                return chunk
            resizer.join()  # the resize attempt was made while the chunk was pending
            return b""

    def shrink():
        handed_out.wait()
        try:
            del chunk[16:]
            resized.append("resized")
        except BufferError:
            resized.append("refused")

    resizer = threading.Thread(target=shrink)
    resizer.start()
    db.write_stream(b"g", Greedy())
    assert resized == ["refused"]
    assert db.read(b"g") == expected
