"""simdr-server shards behind twemproxy (nutcracker, ketama), started by
scripts/cluster.sh: every command the proxy forwards, MGET/DEL split across
shards, the password, redis-benchmark through the proxy, a shard killed with
SIGKILL under load and restarted, and how evenly keys spread."""
import os
import shutil
import signal
import socket
import subprocess
import threading

import pytest
import redis

from clusterutil import Cluster, IO_TIMEOUT

PASSWORD = "cluster-secret"


@pytest.fixture(scope="module")
def cluster():
    with Cluster(shards=3, password=PASSWORD) as c:
        yield c


def home_shard(cluster, key):
    """The shards that hold key (asked directly, not through the proxy)."""
    return [i for i in range(cluster.shards) if cluster.shard(i).exists(key)]


def test_forwarded_commands(cluster):
    r = cluster.proxy()
    assert r.set("s", "v") is True
    assert r.get("s") == b"v"
    assert r.set("s", "w", nx=True) is None
    assert r.set("s", "w", xx=True, ex=100) is True
    assert 0 < r.ttl("s") <= 100
    assert 0 < r.pttl("s") <= 100000
    assert r.persist("s") is True and r.ttl("s") == -1
    assert r.expire("s", 50) is True and r.pexpire("s", 60000) is True
    assert r.expireat("s", 4000000000) is True and r.pexpireat("s", 4000000000000) is True
    assert 0 < r.ttl("s")
    assert r.setnx("nx", "1") is True and r.setnx("nx", "2") is False
    assert r.setex("ex", 100, "e") is True and r.psetex("px", 100000, "p") is True
    assert r.getset("nx", "3") == b"1"
    assert r.append("nx", "4") == 2 and r.strlen("nx") == 2
    assert r.getrange("nx", 0, 0) == b"3" and r.setrange("nx", 1, "9") == 2
    assert r.getdel("nx") == b"39" and r.get("nx") is None
    assert r.incr("n") == 1 and r.incrby("n", 5) == 6 and r.decr("n") == 5
    assert r.decrby("n", 2) == 3 and r.incrbyfloat("f", 1.5) == 1.5
    assert r.getex("n", ex=100) == b"3" and r.ttl("n") > 0
    assert r.type("n") == b"string" and r.touch("n") == 1
    assert r.unlink("n") == 1 and r.exists("n") == 0
    assert r.ping() is True


def test_mget_del_split_across_shards(cluster):
    r = cluster.proxy()
    keys = ["split:%d" % i for i in range(200)]
    assert r.mset({k: "v" + k for k in keys}) is True
    spread = {}
    for k in keys[:60]:
        homes = home_shard(cluster, k)
        assert len(homes) == 1
        spread.setdefault(homes[0], []).append(k)
    assert len(spread) == cluster.shards  # the keys really are on every shard
    got = r.mget(keys + ["split:absent"])
    assert got == [("v" + k).encode() for k in keys] + [None]
    # EXISTS is forwarded on its first key only (not split): one key a call
    assert all(r.exists(k) == 1 for k in keys[:50])
    assert r.delete(*keys[:150], "split:absent") == 150
    assert r.mget(keys) == [None] * 150 + [("v" + k).encode() for k in keys[150:]]
    assert sum(cluster.shard(i).dbsize() for i in range(cluster.shards)) >= 50


def test_hash_tags_keep_keys_together(cluster):
    r = cluster.proxy()
    r.set("{user1}:name", "a")
    r.set("{user1}:mail", "b")
    assert home_shard(cluster, "{user1}:name") == home_shard(cluster, "{user1}:mail")
    # COPY is forwarded on its first key: correct when both keys share a tag.
    assert r.copy("{user1}:name", "{user1}:copy") is True
    assert r.get("{user1}:copy") == b"a"


def test_password(cluster):
    r = redis.Redis(host="127.0.0.1", port=cluster.proxy_port, socket_timeout=IO_TIMEOUT)
    with pytest.raises(redis.exceptions.AuthenticationError):
        r.get("s")
    bad = redis.Redis(host="127.0.0.1", port=cluster.proxy_port, password="wrong",
                      socket_timeout=IO_TIMEOUT)
    with pytest.raises(redis.exceptions.AuthenticationError):
        bad.get("s")
    # the shards themselves refuse unauthenticated clients too
    direct = redis.Redis(host="127.0.0.1", port=cluster.ports[0], socket_timeout=IO_TIMEOUT)
    with pytest.raises(redis.exceptions.AuthenticationError):
        direct.get("s")


def test_commands_that_cannot_cross_shards_are_refused(cluster):
    # The proxy closes the connection on commands it does not forward; the
    # shard-local ones are listed in each shard's INFO.
    for cmd in (("KEYS", "*"), ("DBSIZE",), ("FLUSHDB",), ("MULTI",), ("SCAN", "0"),
                ("EXPIRETIME", "s"), ("RENAME", "a", "b"), ("MSETNX", "a", "1")):
        r = cluster.proxy()
        with pytest.raises(redis.exceptions.ConnectionError):
            r.execute_command(*cmd)
    info = cluster.shard(0).info("cluster")
    local = info["simdr_shard_local_commands"]
    for name in ("keys", "scan", "dbsize", "flushdb", "multi", "rename", "msetnx"):
        assert name in local.split(",")


def test_keys_spread_evenly(cluster):
    r = cluster.proxy()
    n = 30000
    before = [cluster.shard(i).dbsize() for i in range(cluster.shards)]
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set("spread:%d" % i, "x")
    pipe.execute()
    counts = [cluster.shard(i).dbsize() - before[i] for i in range(cluster.shards)]
    assert sum(counts) == n
    even = n / cluster.shards
    for c in counts:
        assert abs(c - even) <= 0.10 * even, counts


def test_redis_benchmark_through_proxy(cluster):
    bench = shutil.which("redis-benchmark")
    assert bench, "redis-benchmark (redis-tools) is needed"
    out = subprocess.run([bench, "-h", "127.0.0.1", "-p", str(cluster.proxy_port),
                          "-a", PASSWORD, "-t", "set,get,incr,mset", "-n", "4000", "-c", "8",
                          "-r", "1000", "-q", "--csv"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=IO_TIMEOUT)
    assert out.returncode == 0, out.stdout
    lines = [l for l in out.stdout.splitlines() if l.startswith('"')]
    tests = {l.split(",")[0].strip('"') for l in lines[1:]}
    assert {"SET", "GET", "INCR"} <= tests, out.stdout
    assert any(t.startswith("MSET") for t in tests), out.stdout
    assert "error" not in out.stdout.lower(), out.stdout
    r = cluster.proxy()
    assert r.exists("key:__rand_int__") == 0  # -r replaced the placeholder
    assert int(r.get("counter:000000000999") or r.get("counter:000000000000") or 1) >= 1


def test_kill_one_shard_under_load(cluster):
    r = cluster.proxy()
    acked = {}
    errors = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(t):
        c = cluster.proxy()
        i = 0
        while not stop.is_set():
            key = "load:%d:%d" % (t, i)
            val = "v%d" % i
            try:
                c.set(key, val)
                with lock:
                    acked[key] = val
            except redis.exceptions.RedisError as e:
                with lock:
                    errors.append((key, str(e)))
                c = cluster.proxy()
            i += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 2000:
        threading.Event().wait(0.01)
    victim = 1
    os.kill(cluster.pid("shard%d" % victim), signal.SIGKILL)
    # keep writing while the shard is down: the other shards keep acknowledging
    with lock:
        acked_at_kill = len(acked)
    while True:
        with lock:
            if len(acked) >= acked_at_kill + 2000 and len(errors) >= 20:
                break
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    cluster.run("start")  # restarts only the dead shard
    status = cluster.run("status")
    assert status.returncode == 0, status.stdout
    # every acknowledged write is back, on exactly one shard
    pipe = cluster.proxy().pipeline(transaction=False)
    keys = list(acked)
    for k in keys:
        pipe.get(k)
    got = pipe.execute()
    missing = [k for k, v in zip(keys, got) if v is None or v.decode() != acked[k]]
    assert not missing, missing[:10]
    # the failed writes were exactly the dead shard's keys
    for key, msg in errors[:50]:
        assert home_or_victim(cluster, key, victim), (key, msg)


def home_or_victim(cluster, key, victim):
    """A write that failed while `victim` was down must belong to it: write
    it again now and see where it lands."""
    r = cluster.proxy()
    r.set(key, "probe")
    homes = home_shard(cluster, key)
    return homes == [victim]


def test_password_with_yaml_characters():
    """The password goes into nutcracker.yml: " #" (a YAML comment), a
    leading "!" or "*", ": ", quotes and backslashes must reach the proxy
    as they are, and the proxy's AUTH must still open the shards."""
    for password in ['a #b: c', '!*&x\\y"z\'', '{[%@`']:
        with Cluster(shards=2, password=password) as c:
            r = c.proxy()
            assert r.set("{t}k", "v") is True
            assert r.get("{t}k") == b"v"
            assert c.shard(0).ping() and c.shard(1).ping()
    bad = Cluster(shards=1, password="two\nlines")
    try:
        out = bad.run("start", check=False)
        assert out.returncode != 0 and "control characters" in out.stdout
    finally:
        bad.stop()
        shutil.rmtree(bad.dir, ignore_errors=True)


def test_stale_pid_file_names_another_process():
    """A pid file left by a crash names a number another process may have
    taken since: start must start the shard anyway, and stop must not kill
    that process."""
    with Cluster(shards=1) as c:
        os.kill(c.pid("shard0"), signal.SIGKILL)
        other = subprocess.Popen(["sleep", "600"])
        try:
            with open(os.path.join(c.dir, "c", "shard0.pid"), "w") as f:
                f.write("%d\n" % other.pid)
            c.run("start")
            assert c.shard(0).ping()
            assert c.run("status").returncode == 0
            shard = c.pid("shard0")
            with open(os.path.join(c.dir, "c", "shard0.pid"), "w") as f:
                f.write("%d\n" % other.pid)
            c.run("stop")
            assert other.poll() is None, "stop killed a process that is not a shard"
            with open(os.path.join(c.dir, "c", "shard0.pid"), "w") as f:
                f.write("%d\n" % shard)  # so that the cluster's own stop ends it
        finally:
            other.kill()
            other.wait()


def test_port_taken_by_another_program():
    """A shard's port already answered by another program: start must fail
    and say so, not take that program for the shard (the shard itself fails
    to bind and exits, after the port was seen open)."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c = Cluster(shards=2)
    try:
        squatter.bind(("127.0.0.1", c.ports[1]))
        squatter.listen(8)
        out = c.run("start", check=False)
        assert out.returncode != 0, out.stdout
        assert "in use by another process" in out.stdout
    finally:
        squatter.close()
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)


def test_fail_over_a_shard_to_its_replica():
    """docs/CLUSTER.md's fail-over with scripts/cluster.sh: a replica of
    shard1 started by hand, shard1 lost, the replica promoted and named in
    SHARD_PORTS as HOST:PORT under shard1's place; `reload` restarts the
    proxy alone. Every key of the lost shard is served again through the
    proxy, the other shards kept running, and stop leaves the replica (not
    the script's) running."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
    from serverutil import Server
    with Cluster(shards=3, password=PASSWORD) as c:
        px = c.proxy()
        keys = ["fo:%d" % i for i in range(300)]
        px.mset({k: "v-" + k for k in keys})
        replica = Server("--requirepass", PASSWORD, "--replicaof", "127.0.0.1",
                         str(c.ports[1]), keep_dir=True).start()
        try:
            assert c.shard(1).wait(1, 20000) == 1
            held = c.shard(1).keys("fo:*")  # the keys only shard1 has
            assert held
            others = [c.pid("shard0"), c.pid("shard2")]
            os.kill(c.pid("shard1"), signal.SIGKILL)  # shard1 is lost
            rc = replica.client(password=PASSWORD)
            assert rc.execute_command("REPLICAOF", "NO", "ONE") == b"OK"
            with open(c.conf, "a") as f:
                f.write("SHARD_PORTS='%d 127.0.0.1:%d %d'\n"
                        % (c.ports[0], replica.port, c.ports[2]))
            out = c.run("reload", check=False)
            assert out.returncode == 0, out.stdout
            assert [c.pid("shard0"), c.pid("shard2")] == others  # not restarted
            px = c.proxy()
            assert px.mget(keys) == [("v-" + k).encode() for k in keys]
            px.set("fo:after", "1")
            assert c.run("status").returncode == 0
            c.run("stop")
            assert rc.ping()  # the replica is not the script's to stop
            assert rc.mget(held) == [b"v-" + k for k in held]
        finally:
            replica.cleanup()
            shutil.rmtree(replica.dir, ignore_errors=True)
