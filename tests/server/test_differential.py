"""Differential test: the same scripted command sequences go to Debian's
redis-server (persistence off) and to simdr-server over raw sockets, and the
replies are compared byte for byte.

Intended differences (also listed in docs/SERVER.md), handled here:
- KEYS and SCAN return keys in a different order: compared as sorted sets
  (SCAN also has different cursor values: one full iteration is compared).
- HELLO: "server" is "simdr" (version field equal: 7.0.15 compatibility);
  client ids differ; INFO, CLIENT LIST/INFO, CONFIG GET values, COMMAND output, TIME and
  RANDOMKEY differ by nature and are not compared byte for byte here.
- OBJECT, DEBUG OBJECT, data types other than strings: not implemented, so
  they are not in the scripts.
"""
import os
import re

import pytest

from serverutil import RedisServer, Server, encode

# Each script runs on a fresh connection after FLUSHALL; every reply compared.
SCRIPTS = {
    "basics": [
        ["PING"], ["PING", "hello"], ["ECHO", "x y"], ["ping", "a", "b"],
        ["GET", "missing"], ["SET", "k", "v"], ["GET", "k"], ["get", "k", "extra"],
        ["SET", "k"], ["NOSUCHCMD", "a", "b"], ["nosuch"], ["SET", "e", ""], ["GET", "e"],
        ["STRLEN", "e"], ["STRLEN", "k"], ["STRLEN", "nokey"], ["TYPE", "k"], ["TYPE", "nokey"],
        ["EXISTS", "k", "k", "nokey"], ["DBSIZE"], ["DEL", "k", "nokey", "k"], ["DBSIZE"],
    ],
    "set_options": [
        ["SET", "a", "1", "NX"], ["SET", "a", "2", "NX"], ["GET", "a"], ["SET", "a", "3", "XX"],
        ["SET", "b", "3", "XX"], ["GET", "b"], ["SET", "a", "4", "GET"], ["SET", "nx", "1", "NX", "GET"],
        ["SET", "a", "5", "NX", "XX"], ["SET", "a", "5", "EX"], ["SET", "a", "5", "EX", "0"],
        ["SET", "a", "5", "EX", "-1"], ["SET", "a", "5", "EX", "abc"], ["SET", "a", "5", "PX", "0"],
        ["SET", "a", "5", "EX", "10", "PX", "10"], ["SET", "a", "5", "KEEPTTL", "EX", "10"],
        ["SET", "a", "5", "EX", "9223372036854775807"], ["SET", "a", "5", "BOGUS"],
        ["SET", "a", "6", "EXAT", "4102444800"], ["EXPIRETIME", "a"], ["SET", "a", "7", "KEEPTTL"],
        ["EXPIRETIME", "a"], ["SET", "a", "8"], ["EXPIRETIME", "a"], ["TTL", "a"],
        ["SET", "a", "9", "PXAT", "4102444800123"], ["PEXPIRETIME", "a"],
        ["SETNX", "a", "x"], ["SETNX", "z", "x"], ["SETEX", "s", "0", "v"], ["SETEX", "s", "x", "v"],
        ["SETEX", "s", "100", "v"], ["PSETEX", "p", "-5", "v"], ["GETSET", "s", "w"], ["TTL", "s"],
        ["GETSET", "new", "w"], ["GETDEL", "new"], ["GETDEL", "new"],
    ],
    "getex": [
        ["SET", "g", "v"], ["GETEX", "g"], ["GETEX", "g", "EXAT", "4102444800"], ["EXPIRETIME", "g"],
        ["GETEX", "g", "PERSIST"], ["TTL", "g"], ["GETEX", "g", "EX", "0"], ["GETEX", "g", "PERSIST", "EX", "5"],
        ["GETEX", "g", "BAD"], ["GETEX", "nokey", "EX", "10"], ["GETEX", "g", "PXAT", "1"], ["GET", "g"],
    ],
    "multi_keys": [
        ["MSET", "a", "1", "b", "2", "c", "3"], ["MGET", "a", "b", "nokey", "c"], ["MSET", "a"],
        ["MSET", "a", "1", "b"], ["MSETNX", "a", "1", "x", "2"], ["MSETNX", "x", "1", "y", "2"],
        ["MGET", "x", "y"], ["MSET", "d", "1", "d", "2"], ["GET", "d"], ["DBSIZE"],
        ["UNLINK", "a", "b"], ["TOUCH", "a", "c", "c"],
    ],
    "strings": [
        ["APPEND", "s", "hello"], ["APPEND", "s", " world"], ["GET", "s"],
        ["GETRANGE", "s", "0", "4"], ["GETRANGE", "s", "-5", "-1"], ["GETRANGE", "s", "5", "1"],
        ["GETRANGE", "s", "-1", "-5"], ["GETRANGE", "s", "0", "1000"], ["GETRANGE", "s", "x", "1"],
        ["GETRANGE", "nokey", "0", "1"], ["SETRANGE", "s", "6", "WORLD"], ["GET", "s"],
        ["SETRANGE", "r", "5", "x"], ["GET", "r"], ["SETRANGE", "r", "-1", "x"],
        ["SETRANGE", "nokey", "0", ""], ["EXISTS", "nokey"], ["SETRANGE", "s", "0", ""],
        ["SETRANGE", "s", "536870912", "x"], ["SETRANGE", "s", "abc", "x"],
    ],
    "counters": [
        ["INCR", "n"], ["INCRBY", "n", "10"], ["DECR", "n"], ["DECRBY", "n", "5"],
        ["INCRBY", "n", "abc"], ["INCRBY", "n", "1.5"], ["INCRBY", "n", " 1"], ["INCRBY", "n", "01"],
        ["SET", "big", "9223372036854775807"], ["INCR", "big"], ["SET", "small", "-9223372036854775808"],
        ["DECR", "small"], ["DECRBY", "n", "-9223372036854775808"], ["SET", "t", "abc"], ["INCR", "t"],
        ["SET", "sp", " 1"], ["INCR", "sp"], ["INCRBYFLOAT", "f", "1.5"], ["INCRBYFLOAT", "f", "0.1"],
        ["INCRBYFLOAT", "f", "-1.6"], ["INCRBYFLOAT", "f", "abc"], ["INCRBYFLOAT", "f", "1e3"],
        ["INCRBYFLOAT", "t", "1"], ["INCRBYFLOAT", "f", "inf"], ["INCRBYFLOAT", "g", "3.0e-5"],
        ["INCRBYFLOAT", "h", "5.0e3"], ["SET", "ex", "5"], ["EXPIREAT", "ex", "4102444800"],
        ["INCR", "ex"], ["EXPIRETIME", "ex"], ["INCRBYFLOAT", "ex", "0.5"], ["EXPIRETIME", "ex"],
    ],
    "expiry": [
        ["SET", "k", "v"], ["EXPIRE", "k", "abc"], ["EXPIRE", "k", "100", "NX", "XX"],
        ["EXPIRE", "k", "100", "GT", "LT"], ["EXPIRE", "k", "100", "FOO"], ["EXPIRE", "nokey", "100"],
        ["EXPIRE", "k", "100", "XX"], ["EXPIREAT", "k", "4102444800", "NX"], ["EXPIRETIME", "k"],
        ["EXPIREAT", "k", "4102444800", "NX"], ["PEXPIREAT", "k", "4102444801000", "GT"],
        ["PEXPIRETIME", "k"], ["EXPIREAT", "k", "4102444700", "GT"], ["EXPIREAT", "k", "4102444700", "LT"],
        ["EXPIRETIME", "k"], ["PERSIST", "k"], ["PERSIST", "k"], ["TTL", "k"], ["PTTL", "k"],
        ["EXPIREAT", "k", "4102444800", "GT"], ["EXPIREAT", "k", "4102444800", "LT"], ["EXPIRETIME", "k"],
        ["EXPIRE", "k", "9223372036854775807"], ["PEXPIRE", "k", "9223372036854775807"],
        ["TTL", "nokey"], ["EXPIRETIME", "nokey"], ["EXPIRE", "k", "-1"], ["GET", "k"], ["EXISTS", "k"],
        ["SET", "p", "v"], ["PEXPIREAT", "p", "1"], ["GET", "p"], ["SET", "q", "v", "PXAT", "1"],
    ],
    # The edges of the time arguments: zero, negative, the overflow of a
    # seconds-to-milliseconds product or of the sum with now, past 64 bits.
    "expiry_edges": [
        x for when in ["0", "-1", "-9223372036854775808", "9223372036854775807",
                       "9223372036854775806", "9223372036854776", "9223372036854775",
                       "4611686018427387904", "9223372036854775808", "1.5", "", "+5", " 5",
                       "253402300799", "00"]
        for cmd in ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"]
        for x in (["SET", "k", "v"], [cmd, "k", when], ["EXISTS", "k"])
    ] + [
        # absolute times far ahead: the rounding of EXPIRETIME must not overflow
        x for when in ["9223372036854775807", "9223372036854775499", "9223372036854775500",
                       "253402300799999", "4102444800499", "4102444800500"]
        for x in (["SET", "k", "v"], ["PEXPIREAT", "k", when], ["EXPIRETIME", "k"],
                  ["PEXPIRETIME", "k"], ["SET", "k", "v", "PXAT", when], ["EXPIRETIME", "k"])
    ] + [
        x for when in ["0", "-1", "9223372036854775807", "9223372036854776",
                       "9223372036854775", "4611686018427387904", "9223372036854775808"]
        for opt in ["EX", "PX", "EXAT", "PXAT"]
        for x in (["SET", "k", "v", opt, when], ["SET", "g", "v"], ["GETEX", "g", opt, when],
                  ["EXISTS", "g"], ["GETEX", "nokey", opt, when], ["SETEX", "s", when, "v"],
                  ["PSETEX", "s", when, "v"])
    ],
    "rename_copy": [
        ["SET", "a", "1"], ["RENAME", "a", "b"], ["GET", "a"], ["GET", "b"], ["RENAME", "nokey", "x"],
        ["RENAME", "b", "b"], ["RENAMENX", "b", "b"], ["SET", "c", "3"], ["RENAMENX", "b", "c"],
        ["RENAMENX", "b", "d"], ["EXPIREAT", "d", "4102444800"], ["RENAME", "d", "e"], ["EXPIRETIME", "e"],
        ["COPY", "e", "f"], ["EXPIRETIME", "f"], ["COPY", "e", "f"], ["COPY", "e", "f", "REPLACE"],
        ["COPY", "e", "e"], ["COPY", "nokey", "g"], ["COPY", "e", "g", "DB", "1"], ["COPY", "e", "g", "DB", "16"],
        ["COPY", "e", "g", "DB", "x"], ["COPY", "e", "g", "BAD"], ["SELECT", "1"], ["GET", "g"],
        ["SELECT", "0"], ["SELECT", "16"], ["SELECT", "x"], ["SELECT", "-1"],
        # Beyond 32 bits Redis 7.0 answers its own "value is out of range" text.
        ["SELECT", "2147483648"], ["SELECT", "-9223372036854775808"], ["SELECT", "2147483647"],
        ["SELECT", "99999999999999999999"], ["COPY", "e", "g", "DB", "4294967296"],
        ["COPY", "e", "g", "DB", "-2147483649"],
    ],
    "databases": [
        ["SET", "k", "db0"], ["SELECT", "2"], ["SET", "k", "db2"], ["DBSIZE"], ["SWAPDB", "0", "2"],
        ["GET", "k"], ["SELECT", "0"], ["GET", "k"], ["SWAPDB", "0", "x"], ["SWAPDB", "x", "0"],
        ["SWAPDB", "0", "99"], ["FLUSHDB", "BAD"], ["FLUSHDB", "ASYNC"], ["DBSIZE"], ["SELECT", "2"],
        ["DBSIZE"], ["FLUSHALL", "SYNC"], ["DBSIZE"], ["FLUSHALL", "A", "B"],
    ],
    "multi": [
        ["EXEC"], ["DISCARD"], ["MULTI"], ["MULTI"], ["SET", "a", "1"], ["INCR", "a"], ["GET", "a"],
        ["EXEC"], ["MULTI"], ["SET", "a"], ["NOPE"], ["GET", "a"], ["EXEC"], ["MULTI"], ["INCR", "a"],
        ["DISCARD"], ["GET", "a"], ["WATCH", "a"], ["MULTI"], ["WATCH", "b"], ["INCR", "a"], ["EXEC"],
        ["WATCH", "a"], ["SET", "a", "changed"], ["MULTI"], ["INCR", "a"], ["EXEC"], ["GET", "a"],
        ["UNWATCH"], ["MULTI"], ["SET", "t", "abc"], ["INCR", "t"], ["EXEC"],
        # the first record of a fresh file: a key created after WATCH
        ["FLUSHALL"], ["WATCH", "first"], ["SET", "first", "1"], ["MULTI"], ["GET", "first"],
        ["EXEC"], ["SET", "f2", "1"], ["WATCH", "f2"], ["DEL", "f2"], ["MULTI"], ["EXEC"],
        ["FLUSHALL"], ["SET", "f3", "1"], ["WATCH", "f3"], ["EXPIRE", "f3", "-1"], ["MULTI"],
        ["EXEC"],
        # commands refused inside MULTI abort the transaction
        ["MULTI"], ["SHUTDOWN", "NOSAVE", "ABORT"], ["SET", "a", "1"], ["EXEC"], ["MULTI"],
        ["SAVE"], ["EXEC"], ["MULTI"], ["WATCH", "x"], ["EXEC"], ["MULTI"], ["SELECT", "99"],
        ["INCR", "a", "b"], ["EXEC"],
    ],
    "scan_keys": [
        ["MSET", "user:1", "a", "user:2", "b", "item:1", "c", "u", "d"], ["KEYS", "user:*"],
        ["KEYS", "*"], ["KEYS", "u?er:[12]"], ["KEYS", "nomatch*"], ["SCAN", "x"], ["SCAN", "0", "COUNT", "0"],
        ["SCAN", "0", "COUNT", "x"], ["SCAN", "0", "BAD", "1"], ["SCAN", "0", "MATCH", "user:*", "COUNT", "1000"],
        ["SCAN", "0", "TYPE", "list", "COUNT", "1000"], ["SCAN", "0", "TYPE", "string", "COUNT", "1000"],
        # Ranges compare bytes as signed chars in Redis: 0x80-0xff sort below 0x00.
        ["MSET", b"\x00", "1", b"\xff", "1", b"\x80", "1", "a", "1", "b", "1"],
        ["KEYS", b"[\x00-\xff]"], ["KEYS", b"[\xff-a]"], ["KEYS", b"[a-\x80]"], ["KEYS", b"[^\x00-\x7f]"],
        ["KEYS", b"[\x80-\xff]"], ["SCAN", "0", "MATCH", b"[\xff-a]", "COUNT", "1000"],
    ],
    "connection": [
        ["AUTH", "x"], ["AUTH", "default", "x"], ["AUTH", "a", "b", "c"], ["HELLO", "4"], ["HELLO", "x"],
        ["HELLO", "2", "BAD"], ["CLIENT", "SETNAME", "has space"], ["CLIENT", "SETNAME", "ok"],
        ["CLIENT", "GETNAME"], ["CLIENT", "NOSUB"], ["CLIENT"], ["CONFIG", "GET"], ["CONFIG", "NOSUB"],
        ["CONFIG", "SET", "nosuchparam", "1"], ["WAIT", "0", "0"], ["WAIT", "0", "-1"], ["WAIT", "x", "0"],
        ["WAIT", "0", "x"], ["DEBUG", "SLEEP", "0"], ["COMMAND", "NOSUB"], ["SHUTDOWN", "BAD"],
        ["SHUTDOWN", "ABORT"], ["LASTSAVE", "x"], ["TIME", "x"], ["SAVE"], ["RESET"], ["CLIENT", "GETNAME"],
    ],
    "resp3": [
        ["HELLO", "3", "SETNAME", "x"], ["GET", "nokey"], ["MGET", "a", "nokey"], ["SET", "a", "1"],
        ["GET", "a"], ["INCR", "a"], ["WATCH", "a"], ["SET", "a", "2"], ["MULTI"], ["GET", "a"],
        ["EXEC"], ["CLIENT", "GETNAME"], ["HELLO", "2"], ["GET", "nokey"],
    ],
    "binary": [
        ["SET", b"k\x00\xff\r\n", b"\x00\x01\x02\r\n\xff"], ["GET", b"k\x00\xff\r\n"],
        ["STRLEN", b"k\x00\xff\r\n"], ["APPEND", b"k\x00\xff\r\n", b"\x00"], ["GET", b"k\x00\xff\r\n"],
        ["SET", "", "empty key"], ["GET", ""], ["EXISTS", ""],
    ],
}

# Replies that differ on purpose: compared after normalisation.
SORTED_ARRAY = {"KEYS"}


def normalise(cmd, reply):
    name = cmd[0].upper() if isinstance(cmd[0], str) else cmd[0]
    if name == "HELLO" and reply.startswith((b"*14", b"%7")):
        reply = re.sub(rb"\$2\r\nid\r\n:\d+", b"$2\r\nid\r\n:N", reply)
        return reply.replace(b"$5\r\nsimdr\r\n", b"$5\r\nredis\r\n")
    if name in SORTED_ARRAY and reply.startswith(b"*"):
        lines = reply.split(b"\r\n")
        items = sorted(zip(lines[1:-1:2], lines[2:-1:2]))
        return lines[0] + b"\r\n" + b"".join(a + b"\r\n" + b + b"\r\n" for a, b in items)
    if name == "SCAN" and reply.startswith(b"*2\r\n"):
        # cursor values differ: compare the keys of a one-call full scan only
        body = reply.split(b"\r\n", 3)[3]
        lines = body.split(b"\r\n")
        items = sorted(zip(lines[1:-1:2], lines[2:-1:2]))
        return b"SCAN " + lines[0] + b"".join(items[i][1] for i in range(len(items)))
    return reply


@pytest.fixture(scope="module")
def servers():
    with RedisServer() as ref, Server() as ours:
        yield ref, ours


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script(servers, name):
    ref, ours = servers
    a, b = ref.raw(), ours.raw()
    try:
        for conn in (a, b):
            assert conn.call("FLUSHALL") == b"+OK\r\n"
        for cmd in SCRIPTS[name]:
            ra, rb = a.call(*cmd), b.call(*cmd)
            na, nb = normalise(cmd, ra), normalise(cmd, rb)
            assert nb == na, "%s: %r\n redis-server: %r\n simdr-server: %r" % (name, cmd, ra, rb)
    finally:
        a.close()
        b.close()


# Two clients on each server: (client, command...) steps, or ("sleep", s).
# WATCH invalidated (or not) by what the other client does.
def _watch(setup, other):
    return ([(0, "SET", "w", "1")] + setup + [(0, "WATCH", "w")] + other +
            [(0, "MULTI"), (0, "INCR", "w"), (0, "SET", "x", "2"), (0, "EXEC"), (0, "GET", "x"),
             (0, "GET", "w")])


TWO_CLIENT_SCRIPTS = {
    "expire_later": _watch([], [(1, "PEXPIRE", "w", "20"), ("sleep", 0.1)]),
    "expire_negative": _watch([], [(1, "EXPIRE", "w", "-1")]),
    "expired_and_read": _watch([(0, "PEXPIRE", "w", "300")], [("sleep", 0.4), (1, "GET", "w")]),
    "expired_unread": [(0, "SET", "w", "1", "PX", "300"), (0, "WATCH", "w"), ("sleep", 0.4),
                       (0, "MULTI"), (0, "GET", "w"), (0, "EXEC")],
    "expired_before_watch_flushall": [(0, "SET", "w", "1", "PX", "20"), ("sleep", 0.1),
                                      (0, "WATCH", "w"), (1, "FLUSHALL"), (0, "MULTI"),
                                      (0, "GET", "w"), (0, "EXEC")],
    "rename_away": _watch([], [(1, "RENAME", "w", "z")]),
    "rename_onto": _watch([(0, "SET", "z", "9")], [(1, "RENAME", "z", "w")]),
    "renamenx_away": _watch([], [(1, "RENAMENX", "w", "z")]),
    "copy_onto": _watch([(0, "SET", "z", "9")], [(1, "COPY", "z", "w", "REPLACE")]),
    "copy_from": _watch([(0, "SET", "z", "9")], [(1, "COPY", "w", "z", "REPLACE")]),
    "flushall": _watch([], [(1, "FLUSHALL")]),
    "flushall_async": _watch([], [(1, "FLUSHALL", "ASYNC")]),
    "flushdb_other_db": _watch([], [(1, "SELECT", "3"), (1, "FLUSHDB")]),
    "flushall_absent_key": [(0, "SET", "o", "1"), (0, "WATCH", "a"), (1, "FLUSHALL"),
                            (0, "MULTI"), (0, "SET", "a", "1"), (0, "EXEC")],
    "swapdb": _watch([], [(1, "SWAPDB", "0", "1")]),
    "swapdb_unrelated": _watch([], [(1, "SWAPDB", "2", "3")]),
    "swapdb_absent_both": [(0, "SET", "o", "1"), (0, "WATCH", "a"), (1, "SWAPDB", "0", "1"),
                           (0, "MULTI"), (0, "SET", "a", "1"), (0, "EXEC")],
    "swapdb_present_other": [(1, "SELECT", "1"), (1, "SET", "a", "1"), (0, "WATCH", "a"),
                             (1, "SWAPDB", "0", "1"), (0, "MULTI"), (0, "GET", "a"), (0, "EXEC")],
    "flushall_then_unwatch": [(0, "SET", "a", "1"), (0, "WATCH", "a"), (1, "FLUSHALL"),
                              (0, "UNWATCH"), (0, "WATCH", "b"), (0, "MULTI"), (0, "GET", "a"),
                              (0, "EXEC")],
    # a watched key created and deleted again looks unchanged by its records
    "created_and_deleted": [(0, "WATCH", "a"), (1, "SET", "a", "1"), (1, "DEL", "a"),
                            (0, "MULTI"), (0, "SET", "x", "1"), (0, "EXEC"), (0, "GET", "x")],
    "created_and_expired": [(0, "WATCH", "a"), (1, "SET", "a", "1"), (1, "EXPIRE", "a", "-1"),
                            (0, "MULTI"), (0, "SET", "x", "1"), (0, "EXEC")],
    "created_and_renamed_away": [(0, "WATCH", "a"), (1, "SET", "a", "1"), (1, "RENAME", "a", "b"),
                                 (0, "MULTI"), (0, "SET", "x", "1"), (0, "EXEC")],
    "own_create_and_delete": [(0, "WATCH", "a"), (0, "INCR", "a"), (0, "UNLINK", "a"),
                              (0, "MULTI"), (0, "SET", "x", "1"), (0, "EXEC")],
    "deleted_absent_key": [(0, "WATCH", "a"), (1, "DEL", "a"), (0, "MULTI"), (0, "SET", "x", "1"),
                           (0, "EXEC")],
    "watch_other_db": [(0, "SELECT", "2"), (0, "SET", "w", "1"), (0, "WATCH", "w"),
                       (1, "SET", "w", "2"), (0, "MULTI"), (0, "GET", "w"), (0, "EXEC"),
                       (1, "SELECT", "2"), (0, "WATCH", "w"), (1, "SET", "w", "3"), (0, "MULTI"),
                       (0, "GET", "w"), (0, "EXEC")],
}


@pytest.mark.parametrize("name", sorted(TWO_CLIENT_SCRIPTS))
def test_two_clients(servers, name):
    import time
    ref, ours = servers
    a = [ref.raw(), ref.raw()]
    b = [ours.raw(), ours.raw()]
    try:
        for conn in (a[0], b[0]):
            assert conn.call("FLUSHALL") == b"+OK\r\n"
        for step in TWO_CLIENT_SCRIPTS[name]:
            if step[0] == "sleep":
                time.sleep(step[1])
                continue
            who, cmd = step[0], step[1:]
            ra, rb = a[who].call(*cmd), b[who].call(*cmd)
            assert rb == ra, "%s: client %d %r\n redis-server: %r\n simdr-server: %r" % (
                name, who, cmd, ra, rb)
    finally:
        for conn in a + b:
            conn.close()


# Random two-client sequences: string commands, expiry at absolute times,
# MULTI/EXEC/WATCH, SELECT, SWAPDB and FLUSHDB over a few keys, some
# pipelined, compared reply by reply. Time-dependent replies (TTL, DBSIZE
# with expired keys counted, KEYS order) are left out. The seeds are fixed so
# that a run is repeatable; SIMDR_DIFF_SEED=N explores another one.
def _random_command(rnd):
    keys = ["a", "b", "c", "d", "n", ""]
    k = rnd.choice(keys)

    def key():
        return rnd.choice(keys)

    def val():
        r = rnd.random()
        if r < 0.3:
            return str(rnd.choice([0, 1, -1, 10, 9223372036854775807, -9223372036854775808]))
        if r < 0.4:
            return rnd.choice(["1.5", "abc", "", " 1", "1e3", "-0"])
        if r < 0.95:
            return "v" * rnd.randrange(1, 20)
        return "x" * rnd.choice([16384, 65519, 65520, 70000])

    def num():
        return str(rnd.choice([0, 1, -1, 5, 100, -100, 9223372036854775807, -9223372036854775808,
                               4102444800123, "x", "1.5"]))

    def at():
        return str(rnd.choice([4102444800, 4102444801, 1, 0, -1, 253402300799, 9223372036854775]))

    return rnd.choice([
        ["SET", k, val()], ["SET", k, val(), rnd.choice(["NX", "XX", "GET", "KEEPTTL"])],
        ["SET", k, val(), "EXAT", at()], ["SET", k, val(), "PXAT", at() + "000", "GET"],
        ["GET", k], ["GETSET", k, val()], ["GETDEL", k],
        ["GETEX", k, rnd.choice(["PERSIST", "EXAT", "PXAT"]), at()][:rnd.choice([3, 4])],
        ["SETNX", k, val()], ["MGET", k, key(), key()], ["MSET", k, val(), key(), val()],
        ["MSETNX", k, val(), key(), val()], ["APPEND", k, val()], ["STRLEN", k],
        ["GETRANGE", k, num(), num()], ["SETRANGE", k, rnd.choice(["0", "5", "-1", "20000"]), val()],
        ["INCR", k], ["DECR", k], ["INCRBY", k, num()], ["DECRBY", k, num()],
        ["INCRBYFLOAT", k, rnd.choice(["1.5", "-2", "abc", "1e3", "0.1"])],
        ["DEL", k, key()], ["UNLINK", k], ["EXISTS", k, key()], ["TOUCH", k], ["TYPE", k],
        ["RENAME", k, key()], ["RENAMENX", k, key()],
        ["COPY", k, key()] + rnd.choice([[], ["REPLACE"], ["DB", "1"], ["DB", "1", "REPLACE"]]),
        ["EXPIREAT", k, at()] + rnd.choice([[], ["NX"], ["XX"], ["GT"], ["LT"]]),
        ["PEXPIREAT", k, at() + "500"] + rnd.choice([[], ["GT"], ["LT"]]),
        ["EXPIRE", k, rnd.choice(["-1", "0", "x"])], ["EXPIRETIME", k], ["PEXPIRETIME", k],
        ["PERSIST", k], ["SELECT", rnd.choice(["0", "1", "2"])],
        ["SWAPDB", rnd.choice(["0", "1"]), rnd.choice(["1", "2"])],
        ["FLUSHDB"] if rnd.random() < 0.1 else ["PING"], ["MULTI"], ["EXEC"], ["DISCARD"],
        ["WATCH", k, key()], ["UNWATCH"], ["SET", k], ["NOSUCH"], ["ECHO", val()],
    ])


@pytest.mark.parametrize("seed", [int(os.environ["SIMDR_DIFF_SEED"])]
                         if os.environ.get("SIMDR_DIFF_SEED") else [1, 14, 139])
def test_random_two_client_sequences(servers, seed):
    _random_two_client_sequences(servers, seed, compact_every=0)


# The same with simdr-server compacting every database (BGREWRITEAOF from a
# third connection, which redis-server does not get) every few steps: the
# online compaction runs on its own thread while the commands go on, across
# SWAPDB, FLUSHDB, RENAME, COPY, expiry, transactions and streamed values,
# and no reply may differ.
@pytest.mark.parametrize("seed", [int(os.environ["SIMDR_DIFF_SEED"])]
                         if os.environ.get("SIMDR_DIFF_SEED") else [3, 77])
def test_random_sequences_through_compactions(servers, seed):
    _random_two_client_sequences(servers, seed, compact_every=25)


# The same with simdr-server told to keep only a few bits of each key's
# hash, so that keys collide and probe (slot chains, holes, chain marks)
# wherever the sequence goes: MSET of a large value over two new colliding
# keys, RENAME and DEL of a key another key's chain passes, WATCH of a key
# whose record a chain mark rewrote. Redis sees none of it, so no reply may
# differ. Seeds and widths are ones that found a difference once.
@pytest.mark.parametrize("seed,bits", [(int(os.environ["SIMDR_DIFF_SEED"]), 4)]
                         if os.environ.get("SIMDR_DIFF_SEED") else
                         [(201, 4), (203, 4), (310, 4), (316, 6)])
def test_random_sequences_with_colliding_key_hashes(seed, bits):
    with RedisServer() as ref, Server("--debug-slot-hash-bits", str(bits)) as ours:
        _random_two_client_sequences((ref, ours), seed, compact_every=0)


def _random_two_client_sequences(servers, seed, compact_every):
    import random
    rnd = random.Random(seed)
    ref, ours = servers
    a = [ref.raw(), ref.raw()]
    b = [ours.raw(), ours.raw()]
    compactor = ours.raw()
    history = []
    compactions = 0
    try:
        for conn in (a[0], b[0]):
            assert conn.call("FLUSHALL") == b"+OK\r\n"
        for step in range(1500):
            if compact_every and step % compact_every == 0:
                r = compactor.call("BGREWRITEAOF")
                assert r.startswith(b"+") or b"in progress" in r, r
                compactions += r.startswith(b"+")
            who = rnd.randrange(2)
            cmds = [_random_command(rnd) for _ in range(rnd.choice([1, 1, 1, 1, 2, 4]))]
            history.append((who, cmds))
            data = b"".join(encode(*c) for c in cmds)
            a[who].send(data)
            b[who].send(data)
            for cmd in cmds:
                ra, rb = a[who].read_reply(), b[who].read_reply()
                assert rb == ra, "seed %d: client %d %r\n redis-server: %r\n simdr-server: %r" \
                    "\n last steps: %r" % (seed, who, cmd, ra[:200], rb[:200], history[-8:])
        if compact_every:
            assert compactions > 0
    finally:
        for conn in a + b + [compactor]:
            conn.close()


# A pipeline mixing reads and writes, cut at a boundary or inside a bulk (a
# small one, a 40 KB one read into reserved room, a 1.2 MB one spooled to a
# file, inside MULTI) and half-closed there: both servers must answer the
# same complete commands, drop the partial one and keep the same data.
_CUT_PIPELINE = [
    ("SET", "a", "1"), ("GET", "a"), ("INCR", "n"), ("SET", "b", b"\x01" * 40000),
    ("APPEND", "b", "x"), ("MULTI",), ("SET", "c", "1"), ("INCR", "n"), ("EXEC",),
    ("SET", "h", b"h" * 1200000), ("GET", "b"), ("MSET", "d", "1", "e", b"e" * 40000),
    ("SETRANGE", "g", 70000, "z"), ("SET", "h2", b"i" * 1200000, "EX", "1000"), ("DEL", "a"),
]
_CUT_KEYS = ["a", "n", "b", "c", "d", "e", "g", "h", "h2"]


def _cut_points():
    ends, pos = [], 0
    for cmd in _CUT_PIPELINE:
        pos += len(encode(*cmd))
        ends.append(pos)
    # after a command, inside a small bulk, inside the 40 KB bulk, inside
    # MULTI, inside the spooled value, inside its final CRLF, inside a bulk
    # header, the whole pipeline
    return [ends[1], ends[2] + 20, ends[2] + 20000, ends[6] + 5, ends[8] + 600000,
            ends[9] - 1, ends[12] + 3, ends[13] - 100, ends[-1]]


@pytest.mark.parametrize("cut", range(len(_cut_points())))
def test_pipeline_cut_and_half_closed(servers, cut):
    import socket
    stream = b"".join(encode(*c) for c in _CUT_PIPELINE)[:_cut_points()[cut]]
    results = []
    for srv in servers:
        admin = srv.raw()
        assert admin.call("FLUSHALL") == b"+OK\r\n"
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        replies = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            replies += chunk
        sock.close()
        results.append((replies, admin.call("MGET", *_CUT_KEYS), admin.call("EXISTS", "h2")))
        admin.close()
    assert results[1] == results[0]


# Raw protocol inputs: the reply bytes must be equal, and so must the
# connection's fate. Inputs marked OPEN end on a command boundary: an ECHO
# marker follows them and is read back; CLOSE inputs are read to the close.
OPEN, CLOSE = "open", "close"
PROTOCOL_CASES = [
    (b"*1\r\n$4\r\nPING\r\n", OPEN),
    (b"PING\r\n", OPEN),
    (b"  set inl 'a b' \"c\\x41\\n\"  \r\nGET inl\r\nset \"\" ''\r\nget ''\r\n", OPEN),
    (b"\r\n\r\nPING\r\n", OPEN),
    (b"*0\r\nPING\r\n", OPEN),
    (b"*-1\r\nPING\r\n", OPEN),
    (b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n", OPEN),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$5\r\n\x00\r\n\xff\n\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n", OPEN),
    # pipelined plain SETs (written as one batch) interleaved with other commands
    (b"SET a 1\r\nSET b 2\r\nSET a 3\r\nGET a\r\nSET c x EX 100\r\nSET c 4\r\nTTL c\r\n"
     b"SET n 5\r\nINCR n\r\nSET n 7\r\nMGET a b c n\r\nSET\r\nSET a\r\nSET k v\r\nGET k\r\n", OPEN),
    (b"SET a 1\r\nSET b 2\r\n*abc\r\n", CLOSE),
    (b"*abc\r\n", CLOSE),
    (b"*3000000000\r\n", CLOSE),
    (b"*1\r\n$-1\r\n", CLOSE),
    (b"*1\r\n$abc\r\n", CLOSE),
    (b"*1\r\n$600000000\r\n", CLOSE),
    (b"*1\r\n%4\r\nPING\r\n", CLOSE),
    (b"*2\r\n$4\r\nECHO\r\n:5\r\n", CLOSE),
    (b"SET x \"unbalanced\r\n", CLOSE),
    (b"SET x \"a\"b\r\n", CLOSE),
    (b"SET x 'a'b\r\n", CLOSE),
    (b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n*1\r\n$4\r\nQUIT\r\nPING\r\n", CLOSE),
    (b"quit\r\n", CLOSE),
    (b"*1\r\n$" + b"1" * 70000 + b"\r\n", CLOSE),
    (b"*" + b"1" * 70000, CLOSE),
    (b"x" * 70000, CLOSE),
]
MARKER = b"*2\r\n$4\r\nECHO\r\n$7\r\n__end__\r\n"


def run_case(srv, data, fate):
    conn = srv.raw()
    try:
        if fate == OPEN:
            conn.send(data + MARKER)
            while not conn.buf.endswith(b"$7\r\n__end__\r\n"):
                conn._fill()
            return conn.buf
        conn.send(data)
        assert conn.closed_by_peer(), "connection not closed after %r" % data[:80]
        return conn.buf
    finally:
        conn.close()


@pytest.mark.parametrize("case", range(len(PROTOCOL_CASES)))
def test_protocol(servers, case):
    ref, ours = servers
    data, fate = PROTOCOL_CASES[case]
    want, got = run_case(ref, data, fate), run_case(ours, data, fate)
    assert got == want, "input %r\n redis-server: %r\n simdr-server: %r" % (data[:100], want, got)
