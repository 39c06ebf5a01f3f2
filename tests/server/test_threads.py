"""simdr-server --threads 2: many clients at once, each pipelining GET, SET,
MSET, MGET, INCR and MULTI/EXEC, beside a client that sends a malformed
request, a slow reader and a client over the query buffer limit. Every reply
is checked byte for byte; the shared counter's INCR replies must be exactly
1..N (commands still run one at a time), and the limits must close only the
clients that broke them. Run once with the default fan-out threshold and once
with every turn shared out to the I/O threads, a worker thread taking the
first client of each step (--debug-io-worker-first): that run asserts from
INFO that the worker, not only the event-loop thread, read and wrote."""
import os
import threading

import pytest

from serverutil import Server, encode

CLIENTS = 24
ROUNDS = 40
BIG = bytes(range(256)) * 4  # 1 KiB: GET answers it zero-copy from the map


def bulk(v):
    return b"$%d\r\n%s\r\n" % (len(v), v)


@pytest.fixture(params=["default", "fanout-1"])
def server(request):
    args = ["--threads", "2", "--durability", "no", "--client-output-buffer-limit", "1mb",
            "--client-query-buffer-limit", "1mb"]
    if request.param == "fanout-1":
        # every turn goes to the I/O job, and a worker thread takes the first
        # client of each: the workers' share is certain, whatever the scheduler
        args += ["--debug-io-fanout-min", "1", "--debug-io-worker-first", "1"]
    with Server(*args) as s:
        yield s


def client_rounds(server, idx, shared_seen, errors):
    try:
        c = server.raw()
        for r in range(ROUNDS):
            key = b"k%d:%d" % (idx, r)
            val = b"v%d:%d:" % (idx, r) + os.urandom(8).hex().encode()
            a, b = b"a%d:%d" % (idx, r), b"b%d:%d" % (idx, r)
            cmds, want = [], []

            def add(cmd, reply):
                cmds.append(encode(*cmd))
                want.append(reply)

            add(("SET", key, val), b"+OK\r\n")
            add(("GET", key), bulk(val))
            add(("MSET", a, b"x%d" % r, b, b"y%d" % r), b"+OK\r\n")
            add(("MGET", a, b, b"nosuchkey"),
                b"*3\r\n" + bulk(b"x%d" % r) + bulk(b"y%d" % r) + b"$-1\r\n")
            add(("INCR", b"ctr%d" % idx), b":%d\r\n" % (r + 1))
            add(("INCR", "shared"), None)  # checked below
            add(("MULTI",), b"+OK\r\n")
            add(("INCR", b"tx%d" % idx), b"+QUEUED\r\n")
            add(("GET", key), b"+QUEUED\r\n")
            add(("EXEC",), b"*2\r\n:%d\r\n" % (r + 1) + bulk(val))
            add(("GET", "big"), bulk(BIG))
            add(("INCRBY", key, 1), b"-ERR value is not an integer or out of range\r\n")
            c.send(b"".join(cmds))
            for w in want:
                got = c.read_reply()
                if w is None:
                    assert got[:1] == b":", got
                    shared_seen.append(int(got[1:-2]))
                else:
                    assert got == w, (idx, r, got, w)
        c.close()
    except Exception as e:  # reported by the test
        errors.append((idx, repr(e)))


def test_many_pipelining_clients_and_hostile_ones(server):
    setup = server.raw()
    assert setup.call("SET", "big", BIG) == b"+OK\r\n"
    assert setup.call("SET", "huge", b"h" * 400000) == b"+OK\r\n"
    assert setup.call("CONFIG", "GET", "threads") == b"*2\r\n$7\r\nthreads\r\n$1\r\n2\r\n"

    # A slow reader: a small receive buffer and 100 GETs of 400 kB it never
    # reads: its output buffer passes the 1 MB limit and it is closed.
    import socket
    slow_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", server.port))
    slow_sock.sendall(encode("GET", "huge") * 100)

    shared_seen, errors = [], []
    workers = [threading.Thread(target=client_rounds, args=(server, i, shared_seen, errors))
               for i in range(CLIENTS)]
    for t in workers:
        t.start()

    # While they run: a malformed request after a valid one gets the valid
    # reply, Redis's protocol error and the close; so does a client whose
    # unparsed input passes the query buffer limit (without a reply).
    bad = server.raw()
    bad.send(encode("PING") + b"*2\r\n$3\r\nGET\r\n$abc\r\n" + encode("PING"))
    assert bad.closed_by_peer()
    assert bad.buf == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    bad.close()
    flood = server.raw()
    try:
        flood.send(b"*2\r\n$3\r\nGET\r\n$3000000\r\n" + b"z" * 1500000)
    except OSError:
        pass
    assert flood.closed_by_peer()
    assert flood.buf == b""
    flood.close()

    for t in workers:
        t.join()
    assert not errors, errors[:3]
    total = CLIENTS * ROUNDS
    assert sorted(shared_seen) == list(range(1, total + 1))

    slow_sock.settimeout(120)
    got = 0
    try:
        while True:
            chunk = slow_sock.recv(1 << 16)
            if not chunk:
                break
            got += len(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    slow_sock.close()
    assert got < 100 * 400000
    assert "output buffer over" in server.log()
    assert "max query buffer length" in server.log()

    assert setup.call("GET", "shared") == b"$%d\r\n%d\r\n" % (len(str(total)), total)
    info = setup.call("INFO", "stats").decode()
    fields = dict(l.split(":", 1) for l in info.split("\r\n") if ":" in l)
    assert fields["simdr_threads"] == "2"
    if "--debug-io-fanout-min" in server.args:
        # every turn with a read or a write went through the I/O threads' job,
        # and the worker thread (not only the event-loop thread) ran reads and
        # writes of it: at least the first client of each job
        reads, writes = (int(fields["io_threaded_reads_processed"]),
                         int(fields["io_threaded_writes_processed"]))
        worker_reads, worker_writes = (int(fields["simdr_io_worker_reads"]),
                                       int(fields["simdr_io_worker_writes"]))
        assert reads > 0 and writes > 0
        assert 0 < worker_reads <= reads and 0 < worker_writes <= writes, fields
        assert int(fields["simdr_io_worker_steps"]) == worker_reads + worker_writes
    setup.close()


def test_watch_across_clients(server):
    a, b = server.raw(), server.raw()
    assert a.call("SET", "w", "1") == b"+OK\r\n"
    assert a.call("WATCH", "w") == b"+OK\r\n"
    assert b.call("SET", "w", "2") == b"+OK\r\n"
    a.send(encode("MULTI") + encode("SET", "w", "3") + encode("EXEC"))
    assert [a.read_reply() for _ in range(3)] == [b"+OK\r\n", b"+QUEUED\r\n", b"*-1\r\n"]
    assert b.call("GET", "w") == b"$1\r\n2\r\n"
    a.close()
    b.close()


def test_threads_option_is_checked():
    import subprocess
    from serverutil import SERVER_BIN
    for bad in ["0", "65", "x"]:
        r = subprocess.run([SERVER_BIN, "--threads", bad, "--port", "1"], capture_output=True,
                           text=True)
        assert r.returncode == 1 and "invalid thread count" in r.stderr, r.stderr


def test_threads_in_config_file_and_config_get(tmp_path):
    import subprocess
    from serverutil import SERVER_BIN, RawClient, free_port, wait_port
    port = free_port()
    conf = tmp_path / "simdr.conf"
    log = tmp_path / "log"
    conf.write_text("dir %s\nport %d\nbind 127.0.0.1\nthreads 3\nlogfile %s\n" % (
        tmp_path, port, log))
    proc = subprocess.Popen([SERVER_BIN, str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log_path=str(log))
        c = RawClient(port)
        assert c.call("CONFIG", "GET", "threads") == b"*2\r\n$7\r\nthreads\r\n$1\r\n3\r\n"
        assert c.call("CONFIG", "GET", "io-threads") == b"*2\r\n$10\r\nio-threads\r\n$1\r\n3\r\n"
        assert c.call("CONFIG", "SET", "threads", "1") == (
            b"-ERR CONFIG SET failed (possibly related to argument 'threads') - "
            b"can't set immutable config\r\n")
        assert c.call("SET", "k", "v") == b"+OK\r\n" and c.call("GET", "k") == b"$1\r\nv\r\n"
        c.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=120) == 0
    assert "threads 3" in log.read_text()
