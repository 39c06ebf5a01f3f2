"""The replica side of simdr-server against a hostile primary: a fake primary
(a Python socket server speaking server/replica.c's protocol: it reads the
replica's REPLSYNC, answers +OK, then RESET/FOLLOW/LOG/PING arrays) sends
wrong reply types, huge lengths, endless lines, truncated frames, bytes that
fail their CRC or their link, messages out of order, an identity change in
the middle of the stream, a silent link, and disconnects at every step of a
sound exchange. The replica must stay up, store none of it (its file stays
byte for byte as it was), log why, keep serving its data read-only, and
resume from its own tail when a sound primary comes back; the sound exchange
sent a byte at a time must be taken whole. The damaged bytes are the real
primary's own entries, damaged on their way."""
import os
import socket
import struct
import sys
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import Server, IO_TIMEOUT, encode as resp  # noqa: E402
from clusterutil import entry  # noqa: E402

# How long the replica may take to notice a bad message and close the link:
# far above what it needs, only there so a broken replica fails the test
# instead of hanging it.
CLOSE_TIMEOUT = 30.0
REPL_TIMEOUT_S = 2  # the replica's --repl-timeout (the silent-primary case)


def read_array(buf):
    """One RESP array of bulk strings from buf: (words, rest) or None."""
    if not buf.startswith(b"*") or b"\r\n" not in buf:
        return None
    head, rest = buf.split(b"\r\n", 1)
    words = []
    for _ in range(int(head[1:])):
        if b"\r\n" not in rest:
            return None
        h, rest = rest.split(b"\r\n", 1)
        n = int(h[1:])
        if len(rest) < n + 2:
            return None
        words.append(rest[:n])
        rest = rest[n + 2:]
    return words, rest


class FakePrimary:
    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(IO_TIMEOUT)
        self.port = self.lsock.getsockname()[1]

    def accept(self):
        """The replica's next connection, after its REPLSYNC: (conn, {db:
        (identity, tail)})."""
        conn, _ = self.lsock.accept()
        conn.settimeout(IO_TIMEOUT)
        buf = b""
        while True:
            got = read_array(buf)
            if got and got[0][0].upper() == b"REPLSYNC":
                words = got[0]
                break
            if got:  # AUTH or anything else before REPLSYNC
                buf = got[1]
                continue
            data = conn.recv(65536)
            assert data, "the replica closed the link before REPLSYNC"
            buf += data
        dbs = {}
        self.runs = {}  # the primary run each database last came from
        for i in range(2, len(words), 5):  # db identity tail meta run
            dbs[int(words[i])] = (int(words[i + 1]), int(words[i + 2]))
            self.runs[int(words[i])] = int(words[i + 4])
        return conn, dbs

    def close(self):
        self.lsock.close()


def wait_closed_by_replica(conn):
    """True when the replica closes the link within CLOSE_TIMEOUT."""
    conn.settimeout(CLOSE_TIMEOUT)
    try:
        while conn.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        conn.close()


def read_file(server, db=0):
    try:
        with open(os.path.join(server.dir, "db-%d.simdr" % db), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def test_hostile_primary_never_gets_a_bad_entry_in():
    # The files are read while the servers run: not under durability always,
    # whose files run past their last record.
    primary = Server("--auto-compact-percent", "0", "--durability", "everysec").start()
    fake = FakePrimary()
    replica = Server("--replicaof", "127.0.0.1", str(primary.port), "--durability", "everysec",
                     "--debug-repl-retry-ms", "50", "--repl-timeout", str(REPL_TIMEOUT_S)).start()
    try:
        p = primary.client()
        r = replica.client()
        assert r.config_get("repl-timeout") == {"repl-timeout": str(REPL_TIMEOUT_S)}
        data = {"k%d" % i: "value-%d" % i for i in range(20)}
        p.mset(data)
        p.delete("k3")
        del data["k3"]
        assert p.wait(1, int(IO_TIMEOUT * 1000)) == 1

        def serves_its_data():
            assert replica.proc.poll() is None, "the replica died:\n" + replica.log()
            assert r.ping()
            keys = sorted(data)
            assert r.mget(keys) == [data[k].encode() for k in keys]
            assert r.get("k3") is None
            try:
                r.set("k0", "write")
                raise AssertionError("the replica took a write")
            except redis.exceptions.ReadOnlyError:
                pass

        serves_its_data()
        # The replica now follows the fake primary; the real one goes on
        # writing, and its new entries are what the fake damages.
        r.execute_command("REPLICAOF", "127.0.0.1", str(fake.port))
        conn, dbs = fake.accept()
        identity, tail = dbs[0]
        mine = read_file(replica)
        assert tail == len(mine) and mine == read_file(primary)[:tail]
        p.mset({"n%d" % i: "new-%d" % i for i in range(5)})
        extra = read_file(primary)[tail:]
        assert len(extra) > 40
        conn.close()

        # it claims to be the same run of the primary (it replays its bytes)
        follow = resp("FOLLOW", 0, identity, fake.runs[0])

        def log(payload, frm=tail, db=0):
            return resp("LOG", db, frm, frm + len(payload), payload)

        flipped = bytearray(extra)
        flipped[-21] ^= 0x20  # the last payload byte
        wrong_link = bytearray(extra)
        wrong_link[-12] ^= 0x01  # the last entry's link: no longer the end of the one before
        huge = b"*5\r\n$3\r\nLOG\r\n$1\r\n0\r\n$%d\r\n%d\r\n$1\r\n1\r\n$%d\r\n" % (
            len(str(tail)), tail, 1 << 39)
        # (what the primary sends after +OK, what the replica must log)
        cases = [
            (b":5\r\n", "not an array, status or error"),
            (b"$5\r\nhello\r\n", "not an array, status or error"),
            (b"*2\r\n:1\r\n:2\r\n", "not a bulk string"),
            (b"*99999\r\n", "too many elements"),
            (b"*1\r\n$4\r\nPINGxx\r\n", "not ended by CRLF"),
            (b"+" + b"x" * 20000, "a header line without end"),
            (b"*1\r\n$" + b"9" * 5000, "a header line without end"),
            (follow + huge, "longer than any message"),
            (follow + log(bytes(flipped)), "CRC-32 mismatch"),
            (follow + log(bytes(wrong_link)), "replicated bytes refused"),
            (follow + log(extra[:-7]), "replicated bytes refused"),
            (follow + log(extra[1:], tail + 1), "replicated bytes refused"),
            (follow + log(extra, tail - 1), "replicated bytes refused"),
            (log(extra), "LOG before RESET or FOLLOW"),
            (follow + resp("FOLLOW", 0, identity + 1) + log(extra), "an identity change needs RESET"),
            (resp("FOLLOW", 0, identity, "x") + log(extra), "unexpected message"),
            (resp("RESET", 0, identity, 0, "x", 5) + log(extra), "malformed run or tail"),
            (resp("RESET", 0, identity, 0, 5, "-1") + log(extra), "malformed run or tail"),
            (resp("RESET", 0, identity + 1, 7), "RESET with an unknown layout"),
            # a full copy starts beside the served file: bad bytes in it leave
            # the served file as it was, and the partial copy is thrown away
            (resp("RESET", 0, identity + 1, 0, 5, len(extra)) + log(bytes(flipped), frm=0),
             "replicated bytes refused"),
            (follow + log(extra, db=99), "a message for no database"),
            (follow + resp("LOG", 0, tail, "x", extra), "unexpected message"),
            (follow + resp("LOG", 0, tail, 1, extra, "more"), "unexpected message"),
            (follow + resp("NONSENSE", 0, 1), "unexpected message"),
            (follow + resp("LOG", 0, tail, tail + 1, extra), "beyond the primary's tail"),
        ]
        for sent, why in cases:
            before = replica.log().count(why)
            conn, dbs = fake.accept()
            assert dbs[0] == (identity, tail)  # it resumes where it was
            conn.sendall(b"+OK\r\n" + sent)
            assert wait_closed_by_replica(conn), "the replica kept the link after %r" % sent[:60]
            assert read_file(replica) == mine, "bytes stored after %r" % sent[:60]
            serves_its_data()
            assert replica.log().count(why) > before, "no log of %r:\n%s" % (why, replica.log())
            assert not os.path.exists(os.path.join(replica.dir, "db-0.simdr.sync"))

        # A silent primary (a frame cut short, then nothing) is dropped
        # after repl-timeout.
        before = replica.log().count("repl-timeout")
        conn, dbs = fake.accept()
        conn.sendall(b"+OK\r\n" + follow + log(extra)[:30])
        assert wait_closed_by_replica(conn)
        assert replica.log().count("repl-timeout") > before
        assert read_file(replica) == mine

        # Disconnects at every step of a sound exchange store nothing ...
        closed = "replication link to 127.0.0.1:%d closed" % fake.port
        sound = b"+OK\r\n" + follow + log(extra) + resp("PING")
        cuts = sorted(set([0, 3, 5, 5 + len(follow) // 2, 5 + len(follow),
                           5 + len(follow) + 20] +
                          list(range(5 + len(follow) + 40, len(sound) - len(resp("PING")),
                                     max(1, len(extra) // 6))) +
                          [len(sound) - len(resp("PING")) - 1]))
        for cut in cuts:
            closes = replica.log().count(closed)
            conn, dbs = fake.accept()
            assert dbs[0] == (identity, tail)
            conn.sendall(sound[:cut])
            conn.close()
            deadline = time.time() + CLOSE_TIMEOUT
            while replica.log().count(closed) == closes:
                assert time.time() < deadline, "the replica did not see the close at %d" % cut
                time.sleep(0.02)
            assert read_file(replica) == mine, "bytes stored from the first %d bytes" % cut
            serves_its_data()
        # ... and the whole of it is taken, as the primary wrote it, also
        # when it arrives a byte at a time (a frame cut at every point).
        conn, dbs = fake.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(sound)):
            conn.sendall(sound[i:i + 1])
            if i % 4 == 0:
                time.sleep(0.001)
        deadline = time.time() + CLOSE_TIMEOUT
        while read_file(replica) != mine + extra and time.time() < deadline:
            time.sleep(0.02)
        assert read_file(replica) == mine + extra
        assert r.get("n4") == b"new-4"
        conn.close()

        # A primary whose file has the unaligned layout (simd-r-drive 0.4):
        # a RESET names it, and the replica's new file takes it, also when
        # the link drops before the first LOG and the next one resumes with
        # FOLLOW (which names no layout).
        e1 = entry(b"first", 0, 0x1111, aligned=False)
        e2 = entry(b"second value", len(e1), 0x2222, aligned=False)
        conn, dbs = fake.accept()
        conn.sendall(b"+OK\r\n" + resp("RESET", 5, 777, 1))
        acks = b""
        while resp("REPLACK", 5, 777, 0) not in acks:  # the RESET was taken
            got = conn.recv(65536)
            assert got, "the replica closed the link after a sound RESET"
            acks += got
        conn.close()
        conn, dbs = fake.accept()
        assert dbs[5] == (777, 0)
        conn.sendall(b"+OK\r\n" + resp("FOLLOW", 5, 777) + resp("LOG", 5, 0, len(e1 + e2), e1 + e2))
        deadline = time.time() + CLOSE_TIMEOUT
        while read_file(replica, 5) != e1 + e2 and time.time() < deadline:
            if "refused" in replica.log()[-2000:] and "db 5" in replica.log()[-2000:]:
                break
            time.sleep(0.02)
        assert read_file(replica, 5) == e1 + e2, replica.log()[-2000:]
        conn.close()

        # Entries sound in the file format but not server records (garbage
        # payloads, a header claiming a huge key): stored as the primary's
        # bytes, never served as keys, and the replica keeps working.
        junk = [b"\xffgarbage", b"SR\x01\x00" + struct.pack("<IQ", 0xFFFFFFF0, 0) + b"k",
                b"\x00" * 5 + b"z"]
        stream = b""
        for i, payload in enumerate(junk):
            stream += entry(payload, len(stream), 0x3333 + i)
        conn, dbs = fake.accept()
        conn.sendall(b"+OK\r\n" + resp("RESET", 2, 888, 0) + resp("LOG", 2, 0, len(stream), stream))
        deadline = time.time() + CLOSE_TIMEOUT
        while read_file(replica, 2) != stream and time.time() < deadline:
            time.sleep(0.02)
        assert read_file(replica, 2) == stream
        r2 = replica.client(db=2)
        assert r2.keys("*") == []
        assert r2.scan(0, count=100)[1] == []
        assert r2.get("garbage") is None
        assert r2.ping()
        conn.close()
        serves_its_data()

        # The sound primary again: the replica resumes from its tail (no
        # full copy of db 0) and follows new writes.
        copies = replica.log().count("db 0: full copy")
        r.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        p.set("after", "sound")
        assert p.wait(1, int(IO_TIMEOUT * 1000)) == 1
        assert r.get("after") == b"sound"
        assert read_file(replica) == read_file(primary)
        assert replica.log().count("db 0: full copy") == copies
        assert replica.proc.poll() is None
    finally:
        fake.close()
        replica.cleanup()
        primary.cleanup()


def test_link_reports_up_after_a_copy_in_place_is_replaced_by_another():
    # A full copy into a database the replica did not have is made in place,
    # and the link reports down until it reaches the primary's tail; when a
    # RESET replaced that copy with one built beside, the target stayed and
    # the link reported down for good.
    fake = FakePrimary()
    replica = Server("--replicaof", "127.0.0.1", str(fake.port), "--debug-repl-retry-ms", "50",
                     "--repl-timeout", "60").start()
    try:
        conn, dbs = fake.accept()
        first = entry(b"first copy", 0, 0x1111)
        second = entry(b"the copy that replaced it", 0, 0x2222)
        msgs = b"+OK\r\n"
        for db in range(1, 16):
            msgs += resp("FOLLOW", db, 0)
        msgs += resp("RESET", 0, 111, 0, 7, 100000)  # in place: nothing here yet
        msgs += resp("LOG", 0, 0, 100000, first) + resp("PING", "turn")
        msgs += resp("RESET", 0, 222, 0, 7, len(second))  # beside: the first copy is served
        msgs += resp("LOG", 0, 0, len(second), second) + resp("PING", "turn")
        conn.sendall(msgs)
        r = replica.client()
        deadline = time.time() + CLOSE_TIMEOUT
        while time.time() < deadline:
            if read_file(replica, 0) == second and \
                    r.info("replication")["master_link_status"] == "up":
                break
            time.sleep(0.05)
        assert read_file(replica, 0) == second, replica.log()[-2000:]
        assert r.info("replication")["master_link_status"] == "up"
        conn.close()
    finally:
        replica.stop()
        fake.close()
