#!/usr/bin/python3
"""How long writes wait while simdr-server compacts: a store of N keys is
loaded and half of it overwritten (garbage to compact), then one client sends
SET after SET (a closed loop, one request in flight) while BGREWRITEAOF runs,
and the script reports the longest SET latency and the SETs per second during
the compaction against the same client's rate before it. Several servers
(e.g. two builds) can be compared in one run; they take turns, round by
round. docs/BENCHMARKS.md has a run's numbers.

Usage: bench/compaction_stall.py [-n KEYS] [-d VALUE_BYTES] [--rounds R] SERVER [SERVER ...]
"""
import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, workdir):
    port = free_port()
    d = tempfile.mkdtemp(dir=workdir)
    p = subprocess.Popen([server, "--dir", d, "--port", str(port), "--bind", "127.0.0.1",
                          "--logfile", os.path.join(d, "log"), "--auto-compact-percent", "0",
                          "--durability", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = redis.Redis(port=port)
    for _ in range(600):
        try:
            c.ping()
            return p, c, port, d
        except redis.ConnectionError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{server} did not start")


def load(port, keys, value_bytes):
    for n in (keys, keys // 2):
        subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(n), "-r",
                        str(keys), "-d", str(value_bytes), "-P", "64", "-q"],
                       check=True, stdout=subprocess.DEVNULL)


def probe(c, store_file):
    """SETs in a closed loop until the compaction ends (the store file is
    replaced: polled with stat, since INFO persistence measures the garbage
    and would add its own pauses): (longest latency in ms, SETs/s during it,
    SETs/s in the second before it, the compaction's seconds)."""
    t_end = time.perf_counter() + 1.0
    before = 0
    while time.perf_counter() < t_end:
        c.set("probe:%d" % before, b"x")
        before += 1
    inode = os.stat(store_file).st_ino
    c.execute_command("BGREWRITEAOF")
    start = time.perf_counter()
    worst, n, i = 0.0, 0, 0
    while True:
        t0 = time.perf_counter()
        c.set("probe:%d" % i, b"y")
        dt = time.perf_counter() - t0
        worst = max(worst, dt)
        n += 1
        i += 1
        if os.stat(store_file).st_ino != inode:
            break
    elapsed = time.perf_counter() - start
    return worst * 1000, n / elapsed, before / 1.0, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000000)
    ap.add_argument("-d", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="simdr-stall-")
    try:
        print("| server | round | compaction s | longest SET ms | SETs/s during | SETs/s before |")
        print("|---|---|---|---|---|---|")
        for r in range(a.rounds):
            for srv in a.servers:
                p, c, port, d = start(srv, work)
                try:
                    load(port, a.n, a.d)
                    worst, during, before, secs = probe(c, os.path.join(d, "db-0.simdr"))
                    print(f"| {srv} | {r + 1} | {secs:.2f} | {worst:.1f} | {during:,.0f} | "
                          f"{before:,.0f} |", flush=True)
                finally:
                    p.terminate()
                    p.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
