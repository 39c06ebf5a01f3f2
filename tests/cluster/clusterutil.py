"""Helpers of the cluster tests: a sharded cluster started with
scripts/cluster.sh (simdr-server shards behind nutcracker) on free loopback
ports in a temporary directory; single servers and replicas for the
replication suites; the bytes of a store entry."""
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from serverutil import Server, free_port, IO_TIMEOUT  # noqa: E402


def start(*args, data_dir=None, port=None):
    """A simdr-server kept with its directory (for restarts); compactions come from the
    tests only."""
    return Server("--auto-compact-percent", "0", *args, data_dir=data_dir, port=port,
                  keep_dir=True).start()


def replica_of(primary, *args):
    return start("--replicaof", "127.0.0.1", str(primary.port), *args)


def db_file(server, db=0):
    with open(os.path.join(server.dir, "db-%d.simdr" % db), "rb") as f:
        return f.read()


def db_records(server, db=0):
    """The store file's bytes without trailing zero bytes, to compare two
    files by what they store: a running server under durability always holds
    zeros after its last record. Only for comparing files with each other (a
    record may itself end with a zero byte, which both sides then lose), not
    for the file's length."""
    return db_file(server, db).rstrip(b"\0")


def contents(server):
    """Every key of database 0 and its value."""
    c = server.client()
    return {k: c.get(k) for k in c.keys("*")}


def cleanup(*servers):
    for s in servers:
        s.cleanup()
        shutil.rmtree(s.dir, ignore_errors=True)



def entry(payload, prev, key_hash, aligned=True):
    """The bytes of one store entry appended at offset prev (docs/FORMAT.md): the zero pad of
    the aligned layout, the payload, then its metadata (key hash, link, CRC-32)."""
    pad = (64 - prev % 64) & 63 if aligned else 0
    return (b"\0" * pad + payload +
            struct.pack("<QQI", key_hash, prev, zlib.crc32(payload) & 0xFFFFFFFF))


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "cluster.sh")
SERVER_BIN = os.environ.get("SIMDR_SERVER_BIN", "")
NUTCRACKER_BIN = os.environ.get("SIMDR_NUTCRACKER_BIN", "") or shutil.which("nutcracker") \
    or "/usr/sbin/nutcracker"


class Cluster:
    def __init__(self, shards=3, password="", durability="everysec"):
        self.dir = tempfile.mkdtemp(prefix="simdr-cluster-test-")
        self.shards = shards
        self.password = password
        self.ports = [free_port() for _ in range(shards)]
        self.proxy_port = free_port()
        self.stats_port = free_port()
        self.conf = os.path.join(self.dir, "cluster.conf")
        with open(self.conf, "w") as f:
            f.write("CLUSTER_DIR=%s\n" % os.path.join(self.dir, "c"))
            f.write("SHARD_PORTS='%s'\n" % " ".join(map(str, self.ports)))
            f.write("PROXY_PORT=%d\nSTATS_PORT=%d\n" % (self.proxy_port, self.stats_port))
            f.write("SERVER_BIN=%s\nNUTCRACKER_BIN=%s\n" % (SERVER_BIN, NUTCRACKER_BIN))
            f.write("DURABILITY=%s\n" % durability)
            if password:
                f.write("PASSWORD=%s\n" % shlex.quote(password))

    def run(self, cmd, check=True):
        return subprocess.run(["bash", SCRIPT, cmd, self.conf], check=check, timeout=IO_TIMEOUT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        self.run("start")
        return self

    def stop(self):
        self.run("stop", check=False)

    def pid(self, name):
        with open(os.path.join(self.dir, "c", name + ".pid")) as f:
            return int(f.read())

    def proxy(self, **kw):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.proxy_port, socket_timeout=IO_TIMEOUT,
                           password=self.password or None, **kw)

    def shard(self, i, **kw):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=IO_TIMEOUT,
                           password=self.password or None, **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
