"""Big SET values are spooled, not buffered (server/net.c): a "SET key value"
whose value is 1 MiB or more goes to an unnamed file as it arrives and is then
streamed into the store, so the server's own memory stays far below the
value's size; a client that disconnects midway leaves nothing; limits and
the other SET forms still behave as before."""
import hashlib
import os
import struct
import threading
import time

from serverutil import Server, encode

MIB = 1 << 20


def big_value(mib):
    block = os.urandom(MIB - 8)
    return b"".join(block + struct.pack("<Q", i) for i in range(mib))


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class AnonPeak:
    """Samples the server's anonymous memory (heap: buffers, the index)
    while a transfer runs; file pages of the mapped store are not counted."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, status_kib(self.pid, "RssAnon"))
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


def spool_files(srv):
    """The unnamed files (O_TMPFILE) the server has open in its directory."""
    out = []
    fd_dir = "/proc/%d/fd" % srv.proc.pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith(srv.dir) and target.endswith("(deleted)"):
            out.append(target)
    return out


def send_set(conn, key, value, chunk=4 * MIB):
    conn.send(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value)))
    view = memoryview(value)
    for i in range(0, len(value), chunk):
        conn.send(view[i:i + chunk])
    conn.send(b"\r\n")


def test_value_over_64_mib_is_stored_without_holding_it_in_memory():
    value = big_value(80)
    with Server() as srv:
        conn = srv.raw()
        assert conn.call("SET", "small", "x") == b"+OK\r\n"
        before = status_kib(srv.proc.pid, "RssAnon")
        with AnonPeak(srv.proc.pid) as peak:
            send_set(conn, b"big", value)
            assert conn.read_reply() == b"+OK\r\n"
        assert not spool_files(srv)
        # the value is 80 MiB; the server held at most a small read buffer of it
        assert peak.peak - before < 16 * 1024, "anonymous memory grew by %d KiB" % (
            peak.peak - before)
        assert conn.call("STRLEN", "big") == b":%d\r\n" % len(value)
        got = conn.call("GET", "big")
        header = b"$%d\r\n" % len(value)
        assert got.startswith(header) and got.endswith(b"\r\n")
        assert hashlib.sha256(got[len(header):-2]).digest() == hashlib.sha256(value).digest()
        conn.close()
        # and it is in the file: it survives a restart
        srv.stop()
        srv.start()
        conn = srv.raw()
        assert conn.call("STRLEN", "big") == b":%d\r\n" % len(value)
        assert conn.call("GETRANGE", "big", str(len(value) - 8), "-1") == \
            b"$8\r\n" + value[-8:] + b"\r\n"
        conn.close()


def test_disconnect_midway_leaves_nothing():
    value = big_value(40)
    with Server() as srv:
        conn = srv.raw()
        assert conn.call("SET", "k", "old") == b"+OK\r\n"
        store = os.path.join(srv.dir, "db-0.simdr")
        size_before = os.path.getsize(store)
        files_before = sorted(os.listdir(srv.dir))
        conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % len(value))
        conn.send(value[:len(value) // 2])
        other = srv.raw()
        # the value is being spooled: the server has an unnamed file open
        deadline = time.time() + 60
        while not spool_files(srv) and time.time() < deadline:
            time.sleep(0.01)
        assert spool_files(srv)
        conn.close()
        # the server notices the close and drops the file; the key is unchanged
        deadline = time.time() + 60
        while spool_files(srv) and time.time() < deadline:
            time.sleep(0.01)
        assert not spool_files(srv)
        assert other.call("CLIENT", "LIST").count(b"id=") == 1
        assert other.call("GET", "k") == b"$3\r\nold\r\n"
        assert os.path.getsize(store) - size_before < MIB
        assert sorted(os.listdir(srv.dir)) == files_before
        other.close()


def test_spooled_set_in_a_pipeline_keeps_order_and_semantics():
    value = big_value(3)
    with Server() as srv:
        conn = srv.raw()
        conn.send(encode("SET", "big", "short", "EX", "100") + encode("TTL", "big"))
        assert conn.read_reply() == b"+OK\r\n"
        assert conn.read_reply() == b":100\r\n"
        # a plain SET clears the TTL, as Redis's does; the commands after the
        # value, sent in the same write, run after it and see it
        conn.send(encode("SET", "big", value) + encode("TTL", "big") + encode("STRLEN", "big") +
                  encode("INCR", "n") + encode("GETRANGE", "big", "0", "3"))
        assert conn.read_reply() == b"+OK\r\n"
        assert conn.read_reply() == b":-1\r\n"
        assert conn.read_reply() == b":%d\r\n" % len(value)
        assert conn.read_reply() == b":1\r\n"
        assert conn.read_reply() == b"$4\r\n" + value[:4] + b"\r\n"
        # forms that are not spooled: options after the value, MULTI
        assert conn.call("SET", "opt", value, "EX", "100") == b"+OK\r\n"
        assert conn.call("TTL", "opt") == b":100\r\n"
        conn.send(encode("MULTI") + encode("SET", "tx", value) + encode("STRLEN", "tx") +
                  encode("EXEC"))
        assert [conn.read_reply() for _ in range(4)] == [
            b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n",
            b"*2\r\n+OK\r\n:%d\r\n" % len(value)]
        conn.close()


def test_bulk_limit_still_applies_to_spooled_values():
    with Server("--proto-max-bulk-len", "2mb") as srv:
        conn = srv.raw()
        # The header alone: value bytes still unread when the server closes would
        # make its kernel answer with a reset, which can discard the error reply.
        conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (3 * MIB))
        assert conn.closed_by_peer()
        assert conn.buf == b"-ERR Protocol error: invalid bulk length\r\n"
        conn.close()
        conn = srv.raw()
        assert conn.call("EXISTS", "k") == b":0\r\n"
        conn.close()


def test_a_spooled_value_past_the_file_size_limit_is_refused_not_fatal():
    # Under a file size limit (ulimit -f) the spool file's write past it
    # raised SIGXFSZ, which killed the server; it is now an error reply.
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 * MIB, 4 * MIB))

    with Server(preexec_fn=limit) as srv:
        r = srv.client()
        small = big_value(2)
        assert r.set(b"a", small)
        conn = srv.raw()
        send_set(conn, b"b", big_value(6))
        reply = conn.read_reply()
        assert reply.startswith(b"-ERR storage error: spooling the value failed: File too large"), reply
        assert srv.proc.poll() is None, "the server died: %s" % srv.proc.returncode
        assert r.get(b"a") == small
        assert r.get(b"b") is None
