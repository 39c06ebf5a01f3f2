"""simdr-server driven by redis-py (Debian python3-redis) and redis-cli
(Debian redis-tools): every implemented command, RESP3, transactions,
expiry on access and by the active cycle, hash collisions, restarts."""
import os
import random
import struct
import shutil
import subprocess
import time

import pytest
import redis

from serverutil import Server


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        yield s


@pytest.fixture
def r(server):
    c = server.client()
    c.flushall()
    yield c
    c.close()


def test_strings(r):
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("k", "x", get=True) == b"w"
    assert r.setnx("k", "y") is False and r.setnx("k2", "y") is True
    assert r.setex("se", 100, "v") is True and 0 < r.ttl("se") <= 100
    assert r.psetex("pse", 100000, "v") is True and 0 < r.pttl("pse") <= 100000
    assert r.getset("k", "z") == b"x"
    assert r.getdel("k") == b"z" and r.get("k") is None
    r.set("g", "v")
    assert r.getex("g", ex=50) == b"v" and 0 < r.ttl("g") <= 50
    assert r.getex("g", persist=True) == b"v" and r.ttl("g") == -1
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "c") == [b"1", b"2", None]
    assert r.msetnx({"a": "9", "c": "3"}) is False and r.get("c") is None
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.append("s", "ab") == 2 and r.append("s", "cd") == 4 and r.get("s") == b"abcd"
    assert r.strlen("s") == 4 and r.strlen("none") == 0
    assert r.getrange("s", 1, 2) == b"bc"
    assert r.setrange("s", 6, "X") == 7 and r.get("s") == b"abcd\x00\x00X"
    assert r.incr("n") == 1 and r.incrby("n", 5) == 6 and r.decr("n") == 5 and r.decrby("n", 2) == 3
    assert r.incrbyfloat("f", 1.25) == 1.25
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("s")


def test_keys_and_expiry(r):
    r.mset({"user:1": "a", "user:2": "b", "other": "c"})
    assert r.exists("user:1", "user:2", "nope") == 2
    assert r.type("other") == b"string" and r.type("nope") == b"none"
    assert sorted(r.keys("user:*")) == [b"user:1", b"user:2"]
    assert sorted(r.scan_iter(match="user:*", count=1)) == [b"user:1", b"user:2"]
    assert r.dbsize() == 3
    assert r.randomkey() in (b"user:1", b"user:2", b"other")
    assert r.touch("user:1", "nope") == 1
    assert r.rename("other", "moved") is True and r.get("moved") == b"c"
    assert r.renamenx("moved", "user:1") is False
    assert r.copy("moved", "copied") is True and r.get("copied") == b"c"
    assert r.copy("moved", "x", destination_db=3) is True
    assert r.expire("moved", 100) is True and 95 <= r.ttl("moved") <= 100
    assert r.pexpire("moved", 100000) is True
    assert r.expire("moved", 50, gt=True) is False
    assert r.expireat("moved", 4102444800) is True and r.expiretime("moved") == 4102444800
    assert r.pexpireat("moved", 4102444800000) is True and r.pexpiretime("moved") == 4102444800000
    assert r.persist("moved") is True and r.ttl("moved") == -1
    assert r.delete("user:1", "user:2", "nope") == 2
    assert r.unlink("copied") == 1
    r.set("short", "v", px=50)
    deadline = time.time() + 60
    while r.get("short") is not None and time.time() < deadline:
        time.sleep(0.05)
    assert r.get("short") is None and r.exists("short") == 0
    r.select(3)
    assert r.get("x") == b"c"
    assert r.swapdb(3, 4) is True and r.get("x") is None
    r.select(4)
    assert r.get("x") == b"c"
    assert r.flushdb() is True and r.dbsize() == 0


def test_active_expiry_writes_tombstones(server):
    c = server.client(db=5)
    c.flushdb()
    for i in range(200):
        c.set("e%d" % i, "v", px=1)
    c.set("keep", "v")
    # Nobody touches the keys: only the background cycle can remove them.
    deadline = time.time() + 120
    while c.dbsize() > 1 and time.time() < deadline:
        time.sleep(0.1)
    assert c.dbsize() == 1
    info = c.info("stats")
    assert info["expired_keys"] >= 200
    c.close()


def test_active_expiry_resumes_after_idle_walks_and_restarts():
    """The background cycle stops walking a database after a full walk met no
    TTL; a later write with a TTL, or a restart over a file holding TTLs,
    must start it again."""
    with Server() as srv:
        c = srv.client()
        for i in range(100):
            c.set("plain%d" % i, "v")
        time.sleep(1.0)  # several ticks: the walk over TTL-free records ends
        for i in range(100):
            c.set("t%d" % i, "v", px=1)
        deadline = time.time() + 120
        while c.dbsize() > 100 and time.time() < deadline:
            time.sleep(0.05)
        assert c.dbsize() == 100
        for i in range(50):
            c.set("later%d" % i, "v", px=1500)
        c.close()
        srv.stop()
        srv.start()
        c = srv.client()
        deadline = time.time() + 120
        while c.dbsize() > 100 and time.time() < deadline:
            time.sleep(0.05)
        assert c.dbsize() == 100
        assert c.info("stats")["expired_keys"] >= 50
        c.close()


def test_auto_compaction_starts_when_garbage_passes_the_percentage():
    with Server("--auto-compact-percent", "50") as srv:
        c = srv.client()
        value = b"v" * 1000
        for round_ in range(4):  # 4 MiB written, 3 of them overwritten
            p = c.pipeline(transaction=False)
            for i in range(1024):
                p.set("k%d" % i, value + str(round_).encode())
            p.execute()
        # A compaction may run between the rounds too, and the rounds after
        # it leave garbage of their own: in the end at least one compaction
        # ran and less than half the file is garbage (at 50% or more the
        # server would compact again). Which rounds a compaction fell between
        # decides the final size, so that is not asserted.
        def settled():
            p = c.info("persistence")
            return (p["simdr_compactions"] >= 1 and
                    p["simdr_compaction_savings"] * 100 < p["simdr_file_bytes"] * 50)
        deadline = time.time() + 120
        while not settled() and time.time() < deadline:
            time.sleep(0.1)
        p = c.info("persistence")
        assert p["simdr_compactions"] >= 1, p
        assert p["simdr_compaction_savings"] * 100 < p["simdr_file_bytes"] * 50, p
        assert p["simdr_file_bytes"] < 4 * 1024 * 1024  # less than the 4 MiB written
        assert c.dbsize() == 1024 and c.get("k7") == value + b"3"
        c.close()


def test_garbage_is_measured_with_auto_compaction_off():
    """INFO persistence reports a store's garbage as measured in the
    background (never on the event loop): overwrites show up within a few
    cron ticks even with auto-compaction off, and a compaction (BGREWRITEAOF
    compacts every open store) brings it back to nothing."""
    with Server("--auto-compact-percent", "0") as srv:
        c = srv.client()
        value = b"g" * 1000
        for round_ in range(3):  # 3 MiB written, 2 of them overwritten
            p = c.pipeline(transaction=False)
            for i in range(1024):
                p.set("k%d" % i, value + str(round_).encode())
            p.execute()
        def garbage():
            return c.info("persistence")["simdr_compaction_savings"]
        deadline = time.time() + 60
        while garbage() < 2 * 1024 * 1000 and time.time() < deadline:
            time.sleep(0.1)
        assert garbage() >= 2 * 1024 * 1000
        assert c.info("persistence")["simdr_compactions"] == 0
        c.execute_command("BGREWRITEAOF")
        deadline = time.time() + 60
        while garbage() != 0 and time.time() < deadline:
            time.sleep(0.1)
        p = c.info("persistence")
        assert p["simdr_compaction_savings"] == 0 and p["simdr_compactions"] == 1, p
        assert c.dbsize() == 1024 and c.get("k5") == value + b"2"
        c.close()


def test_scan_returns_each_key_present_throughout_once():
    """SCAN steps through the index's own order (docs/SERVER.md): with keys
    added between steps (the index grows), others deleted, values rewritten
    and a compaction (BGREWRITEAOF) in the middle, every key present from the
    first step to the last comes back exactly once; MATCH filters; the cursor
    ends at 0. RANDOMKEY draws live keys and, over many draws, every one."""
    with Server("--auto-compact-percent", "0") as srv:
        c = srv.client()
        throughout = ["t:%d" % i for i in range(3000)]
        p = c.pipeline(transaction=False)
        for k in throughout:
            p.set(k, "v")
        p.execute()
        gone = ["g:%d" % i for i in range(200)]
        c.mset({k: "x" for k in gone})
        seen, cursor, steps, added = {}, 0, 0, 0
        while True:
            cursor, keys = c.scan(cursor, count=25)
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
            steps += 1
            if cursor == 0:
                break
            p = c.pipeline(transaction=False)
            for _ in range(40):
                p.set("n:%d" % added, "new")
                added += 1
            if steps <= len(gone):
                p.delete(gone[steps - 1])
            p.set(throughout[steps % len(throughout)], "rewritten")
            p.execute()
            if steps == 60:
                c.execute_command("BGREWRITEAOF")
        assert steps > 60
        for k in throughout:
            assert seen.get(k.encode()) == 1, k
        assert all(n == 1 for n in seen.values())
        cursor, matched = 0, set()
        while True:
            cursor, keys = c.scan(cursor, match="t:1*", count=100)
            matched.update(keys)
            if cursor == 0:
                break
        assert matched == {k.encode() for k in throughout if k.startswith("t:1")}
        c.flushall()
        small = {"r:%d" % i for i in range(100)}
        c.mset({k: "1" for k in small})
        p = c.pipeline(transaction=False)
        for _ in range(6000):
            p.randomkey()
        drawn = {k.decode() for k in p.execute()}
        assert drawn == small
        c.close()


def test_transactions(r, server):
    p = r.pipeline(transaction=True)
    p.set("a", 1).incr("a").get("a")
    assert p.execute() == [True, 2, b"2"]
    other = server.client()
    with r.pipeline() as p:
        p.watch("a")
        other.set("a", "changed")
        p.multi()
        p.incr("a")
        with pytest.raises(redis.WatchError):
            p.execute()
    with r.pipeline() as p:
        p.watch("a")
        p.multi()
        p.set("a", "mine")
        assert p.execute() == [True]
    assert r.get("a") == b"mine"
    other.close()


def _compact(r):
    assert r.execute_command("BGREWRITEAOF")
    deadline = time.time() + 120
    while r.info("persistence")["aof_rewrite_in_progress"] and time.time() < deadline:
        time.sleep(0.02)


def test_watch_across_a_compaction(r, server):
    """A compaction moves every record: it must not fail a transaction
    whose watched keys nobody wrote, and must not hide a write that did
    happen (even one of the same value) or a watched key that expired."""
    other = server.client()
    for i in range(200):
        r.set("filler%d" % (i % 20), "x" * i)
    r.set("w", "1")

    def exec_after(keys, meanwhile, value):
        """WATCH keys, run the steps of meanwhile, then MULTI SET out EXEC."""
        with r.pipeline() as p:
            p.watch(*keys)
            for step in meanwhile:
                step()
            p.multi()
            p.set("out", value)
            return p.execute()

    compact = lambda: _compact(r)  # noqa: E731
    # untouched: executes
    assert exec_after(["w", "absent"], [compact], "1") == [True]
    aborted = [  # (set up before WATCH, watched keys, between WATCH and MULTI)
        (None, ["w"], [lambda: other.set("w", "1"), compact]),  # the same value, before it
        (None, ["w"], [compact, lambda: other.set("w", "1")]),  # after it
        (None, ["absent"], [compact, lambda: other.set("absent", "now")]),  # created
        (lambda: r.set("short", "1", px=300), ["short"],
         [compact, lambda: time.sleep(0.4)]),  # expired meanwhile
    ]
    for n, (setup, keys, meanwhile) in enumerate(aborted, 2):
        if setup:
            setup()
        with pytest.raises(redis.WatchError):
            exec_after(keys, meanwhile, str(n))
    assert r.get("out") == b"1"
    other.close()


def test_server_commands(r, server):
    assert r.client_setname("me") is True and r.client_getname() == "me"
    assert isinstance(r.client_id(), int)
    assert any(c.get("name") == "me" for c in r.client_list())
    assert r.client_info()["name"] == "me"
    victim = server.raw()
    vid = int(victim.call("CLIENT", "ID")[1:-2])
    assert r.client_kill_filter(_id=vid) == 1
    assert victim.closed_by_peer()
    victim.close()
    info = r.info()
    assert info["redis_version"] == "7.0.15" and "connected_clients" in info
    assert info["used_memory"] > 0 and info["used_memory_rss"] >= info["used_memory"]
    cfg = r.config_get("*")
    assert cfg["durability"] in ("no", "everysec", "always") and cfg["requirepass"] == ""
    assert cfg["repl-timeout"] == "60"  # the default, as Redis's
    assert r.config_set("timeout", 0) is True
    with pytest.raises(redis.ResponseError):
        r.config_set("maxclients", "abc")
    assert r.command_count() > 60
    assert r.save() is True and r.lastsave() is not None
    assert r.bgsave() is True
    t = r.time()
    assert isinstance(t[0], int)
    assert r.execute_command("WAIT", 0, 0) == 0
    assert r.execute_command("DEBUG", "SLEEP", "0") == b"OK"
    assert r.execute_command("RESET") in ("RESET", b"RESET")


def test_resp3(server):
    c = server.raw()  # redis-py 4.3 speaks RESP2 only
    assert c.call("HELLO", "3").startswith(b"%7\r\n")
    assert c.call("SET", "a", "1") == b"+OK\r\n"
    assert c.call("GET", "none") == b"_\r\n"
    assert c.call("CONFIG", "GET", "port") == b"%%1\r\n$4\r\nport\r\n$%d\r\n%d\r\n" % (
        len(str(server.port)), server.port)
    assert c.call("INFO", "clients").startswith(b"=")
    c.close()


def test_compaction_keeps_data(r):
    for i in range(300):
        r.set("c%d" % (i % 30), "v%d" % i)
    assert r.execute_command("BGREWRITEAOF")
    deadline = time.time() + 120
    while r.info("persistence")["aof_rewrite_in_progress"] and time.time() < deadline:
        time.sleep(0.05)
    for k in range(30):
        assert r.get("c%d" % k) == b"v%d" % (270 + k)


def test_compaction_under_mixed_load():
    """Compactions run back to back while clients write, append, expire and
    read values up to 1.1 MB (big GET replies come from the map), run
    MULTI/EXEC, swap two databases and flush a third: every read sees what
    its client wrote, and the server stops cleanly (under ASan: no leak)."""
    import hashlib
    import threading
    from serverutil import encode

    def value(tag, n):
        h = hashlib.sha256(tag).digest()
        return (h * (n // 32 + 1))[:n]

    errors, done = [], threading.Event()

    def writer(s, idx):
        try:
            c = s.raw()
            c.call("SELECT", str(idx))
            model, rnd = {}, random.Random(idx)
            for i in range(100):
                k = b"k%d" % rnd.randrange(20)
                v = value(b"%d:%d" % (idx, i), rnd.choice([10, 300, 70000, 1100000]))
                op = rnd.random()
                if op < 0.35:
                    assert c.call("SET", k, v) == b"+OK\r\n"
                    model[k] = v
                elif op < 0.45:
                    assert c.call("PEXPIRE", k, "1") in (b":0\r\n", b":1\r\n")
                    model.pop(k, None)
                elif op < 0.55:
                    model[k] = model.get(k, b"") + b"xy"
                    assert c.call("APPEND", k, b"xy") == b":%d\r\n" % len(model[k])
                elif op < 0.65:
                    c.send(encode("MULTI") + encode("SET", k, v) + encode("GET", k) + encode("EXEC"))
                    replies = [c.read_reply() for _ in range(4)]
                    assert replies[3] == b"*2\r\n+OK\r\n$%d\r\n%s\r\n" % (len(v), v)
                    model[k] = v
                else:
                    want = model.get(k)
                    got = c.call("GET", k)
                    assert got == (b"$%d\r\n%s\r\n" % (len(want), want) if want is not None
                                   else b"$-1\r\n"), (idx, k, got[:30])
            c.close()
        except Exception as e:  # reported by the test
            errors.append(("writer", idx, repr(e)[:300]))

    def compactor(s):
        try:
            c = s.raw()
            while not done.is_set():
                # an auto-compaction may have started meanwhile
                assert c.call("BGREWRITEAOF") in (
                    b"+Background append only file rewriting started\r\n",
                    b"-ERR Background append only file rewriting already in progress\r\n")
                while b"aof_rewrite_in_progress:1" in c.call("INFO", "persistence") \
                        and not done.is_set():
                    time.sleep(0.01)
            c.close()
        except Exception as e:
            errors.append(("compactor", repr(e)[:300]))

    def swapper_and_flusher(s):
        try:
            c = s.raw()
            for db, name in (("10", b"ten"), ("11", b"eleven")):
                c.call("SELECT", db)
                c.call("SET", "id", name)
                c.call("SET", "big", value(name, 500000))
            c.call("SELECT", "10")
            current = b"ten"
            while not done.is_set():
                assert c.call("SWAPDB", "10", "11") == b"+OK\r\n"
                current = b"eleven" if current == b"ten" else b"ten"
                assert c.call("GET", "id") == b"$%d\r\n%s\r\n" % (len(current), current)
                v = value(current, 500000)
                assert c.call("GET", "big") == b"$%d\r\n%s\r\n" % (len(v), v)
                c.send(encode("SELECT", "12") + encode("SET", "f", v) +
                       encode("FLUSHDB", "ASYNC") + encode("GET", "f") + encode("SELECT", "10"))
                replies = [c.read_reply() for _ in range(5)]
                assert replies[3] == b"$-1\r\n", replies[3][:30]
            c.close()
        except Exception as e:
            errors.append(("swapper", repr(e)[:300]))

    with Server("--auto-compact-percent", "10") as s:
        writers = [threading.Thread(target=writer, args=(s, i)) for i in range(3)]
        others = [threading.Thread(target=compactor, args=(s,)),
                  threading.Thread(target=swapper_and_flusher, args=(s,))]
        for t in writers + others:
            t.start()
        for t in writers:
            t.join()
        done.set()
        for t in others:
            t.join()
        assert not errors, errors
        info = s.raw().call("INFO", "persistence").decode()
        assert int(info.split("simdr_compactions:")[1].split("\r\n")[0]) > 0


def test_redis_cli(server):
    cli = shutil.which("redis-cli")
    if not cli:
        pytest.skip("redis-cli not installed")
    base = [cli, "-p", str(server.port)]
    run = lambda *a: subprocess.run(base + list(a), capture_output=True, timeout=120, text=True)
    assert run("SET", "cli", "value").stdout.strip() == "OK"
    assert run("GET", "cli").stdout.strip() == "value"
    assert run("--raw", "MGET", "cli", "nope").stdout == "value\n\n"
    assert "unknown command" in run("NOPE").stdout
    out = subprocess.run(base, input="SET p q\nGET p\n", capture_output=True, timeout=120, text=True)
    assert out.stdout.split() == ["OK", "q"]
    assert run("-3", "HELLO", "3").returncode == 0


def test_collisions_kept_apart():
    """With 6-bit slot hashes nearly every key collides; a random workload
    must agree with a dict, across a restart too."""
    with Server("--debug-slot-hash-bits", "6", keep_dir=True) as s:
        c = s.client()
        rng = random.Random(1234)
        print("seed 1234")
        model = {}
        names = ["key%d" % i for i in range(40)]
        for step in range(3000):
            k = rng.choice(names)
            op = rng.random()
            if op < 0.4:
                v = "v%d" % step
                c.set(k, v)
                model[k] = v.encode()
            elif op < 0.6:
                assert c.delete(k) == (1 if k in model else 0)
                model.pop(k, None)
            elif op < 0.7:
                ks = rng.sample(names, 3)
                vals = {x: "m%d" % step for x in ks}
                c.mset(vals)
                for x in ks:
                    model[x] = vals[x].encode()
            elif op < 0.72:
                p = c.pipeline(transaction=False)  # a run of plain SETs: one batch
                for x in rng.sample(names, 8) + [k, k]:
                    p.set(x, "p%d%s" % (step, x))
                    model[x] = ("p%d%s" % (step, x)).encode()
                p.get(k)
                assert p.execute()[-1] == model[k]
            elif op < 0.75 and k in model:
                dst = rng.choice(names)
                c.rename(k, dst)
                model[dst] = model.pop(k)
            else:
                assert c.get(k) == model.get(k), (step, k)
        assert sorted(c.keys("*")) == sorted(x.encode() for x in model)
        assert c.mget(names) == [model.get(n) for n in names]
        c.close()
        s.stop()
        s.start()
        c = s.client()
        assert c.mget(names) == [model.get(n) for n in names]
        assert sorted(c.scan_iter(count=7)) == sorted(x.encode() for x in model)
        c.close()
    shutil.rmtree(s.dir, ignore_errors=True)


def test_store_file_is_simd_r_drive_with_documented_records():
    """docs/FORMAT.md "Server records": the file is read by the CLI, a key's
    entry is found by its name, and its payload is header + key + value."""
    cli = os.environ.get("SIMDR_CLI_BIN")
    if not cli:
        pytest.skip("simd-r-drive not built")
    s = Server(keep_dir=True)
    s.start()
    r = s.client()
    r.set("hello", "world")
    r.set("ttl", "v", pxat=4102444800123)
    r.close()
    s.stop()
    path = os.path.join(s.dir, "db-0.simdr")
    assert subprocess.run([cli, path, "check"], capture_output=True, timeout=120).returncode == 0
    out = subprocess.run([cli, path, "read", "hello"], capture_output=True, timeout=120).stdout
    assert out == b"SR\x01\x00" + struct.pack("<IQ", 5, 0) + b"hello" + b"world"
    out = subprocess.run([cli, path, "read", "ttl"], capture_output=True, timeout=120).stdout
    assert out == b"SR\x01\x00" + struct.pack("<IQ", 3, 4102444800123) + b"ttl" + b"v"
    shutil.rmtree(s.dir, ignore_errors=True)
