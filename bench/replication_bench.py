#!/usr/bin/python3
"""Replication cost and lag of simdr-server: redis-benchmark -t set against a
primary with 0, 1 and 2 replicas (all on loopback, one machine), reporting
the primary's SET throughput, the largest replication lag seen while the
benchmark ran (bytes the slowest replica had not acknowledged, sampled every
20 ms through INFO replication), and how long after the benchmark's last
reply every replica had acknowledged everything (WAIT). docs/BENCHMARKS.md
has a run's numbers.

Usage: bench/replication_bench.py [-n REQUESTS] [-c CLIENTS] [-P PIPELINE] [-d VALUE_BYTES]
Environment: SIMDR_SERVER (default build/release/server/simdr-server).
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, workdir, *args):
    """A simdr-server on a free loopback port over a new directory in workdir:
    (process, port, directory) once it answers."""
    port = free_port()
    d = tempfile.mkdtemp(dir=workdir)
    p = subprocess.Popen([server, "--dir", d, "--port", str(port), "--bind", "127.0.0.1",
                          "--logfile", os.path.join(d, "log"), "--auto-compact-percent", "0"]
                         + list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = redis.Redis(port=port)
    for _ in range(600):
        try:
            c.ping()
            return p, port, d
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def run(server, replicas, n, clients, pipeline, size):
    work = tempfile.mkdtemp(prefix="simdr-repl-bench-")
    procs = []
    try:
        p, port, _ = start(server, work)
        procs.append(p)
        for _ in range(replicas):
            rp, _, _ = start(server, work, "--replicaof", "127.0.0.1", str(port))
            procs.append(rp)
        c = redis.Redis(port=port)
        while c.info("replication")["connected_slaves"] < replicas:
            time.sleep(0.05)
        max_lag = [0]
        stop = threading.Event()

        def sample():
            s = redis.Redis(port=port)
            while not stop.is_set():
                info = s.info("replication")
                for i in range(replicas):
                    max_lag[0] = max(max_lag[0], info["slave%d" % i]["lag_bytes"])
                time.sleep(0.02)

        t = threading.Thread(target=sample)
        if replicas:
            t.start()
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(n),
                              "-c", str(clients), "-P", str(pipeline), "-d", str(size),
                              "-r", "100000", "-q", "--csv"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        t0 = time.time()
        caught_up = c.wait(replicas, 0) if replicas else 0
        catch_up_ms = (time.time() - t0) * 1000
        stop.set()
        if replicas:
            t.join()
        rps = float([l for l in out.splitlines() if l.startswith('"SET"')][0].split(",")[1]
                    .strip('"'))
        size_bytes = c.info("replication")["master_repl_offset"]
        return rps, max_lag[0], catch_up_ms, caught_up, size_bytes
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            pr.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("-P", type=int, default=1)
    ap.add_argument("-d", type=int, default=100)
    a = ap.parse_args()
    server = os.environ.get("SIMDR_SERVER", "build/release/server/simdr-server")
    if not shutil.which("redis-benchmark"):
        sys.exit("redis-benchmark missing (redis-tools)")
    print("replicas,set_rps,ratio_to_none,max_lag_bytes,catch_up_ms,acked_by,primary_bytes")
    base = None
    for replicas in (0, 1, 2):
        rps, lag, ms, acked, size = run(server, replicas, a.n, a.c, a.P, a.d)
        base = base or rps
        print("%d,%.0f,%.2f,%d,%.1f,%d,%d" % (replicas, rps, rps / base, lag, ms, acked, size))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
