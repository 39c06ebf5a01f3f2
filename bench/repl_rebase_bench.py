#!/usr/bin/python3
"""What it costs a simdr-server replica to follow a compaction of its
primary: one primary and two replicas on loopback, one that rebuilds the
compacted file's prefix from its own copy (REBASE, the default) and one
started with --debug-repl-no-rebase 1, which copies the compacted database
in full, in one run: the store holds N keys written twice (about half of the
file is garbage) and is compacted while the full-copy replica is stopped
(SIGSTOP), then written over once more and compacted while the rebuilding
one is stopped, so each is timed alone on the machine's cores. Reports, per
replica, the bytes of LOG messages it received for the compaction
(INFO simdr_repl_log_bytes) and the time from BGREWRITEAOF until the
replica serves the compacted file (its offset equals the primary's and no
copy is in progress), beside the compaction's own time. docs/BENCHMARKS.md has a run's
numbers.

Usage: bench/repl_rebase_bench.py [-n KEYS] [-d VALUE_BYTES]
Environment: SIMDR_SERVER (default build/release/server/simdr-server).
"""
import argparse
import os
import shutil
import signal
import tempfile
import time

import redis

from replication_bench import start  # bench/, the script's own directory


def load(c, n, size, tag):
    value = (tag * size)[:size].encode()
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.set(b"key:%08d" % i, value)
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()


def in_sync(primary, replica):
    ri = replica.info("replication")
    return (not ri["master_sync_in_progress"] and
            ri["slave_repl_offset"] == primary.info("replication")["master_repl_offset"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000000)
    ap.add_argument("-d", type=int, default=100)
    a = ap.parse_args()
    server = os.environ.get("SIMDR_SERVER", "build/release/server/simdr-server")
    work = tempfile.mkdtemp(prefix="simdr-rebase-bench-")
    procs = []
    try:
        p, port, pdir = start(server, work)
        procs.append(p)
        names = ("rebase", "full copy")
        reps, logs = [], []
        for extra in ((), ("--debug-repl-no-rebase", "1", "--debug-repl-retry-ms", "10")):
            rp, rport, rdir = start(server, work, "--replicaof", "127.0.0.1", str(port), *extra)
            procs.append(rp)
            logs.append(os.path.join(rdir, "log"))
            reps.append(redis.Redis(port=rport))
        c = redis.Redis(port=port)
        while c.info("replication")["connected_slaves"] < 2:
            time.sleep(0.05)
        load(c, a.n, a.d, "a")
        for rnd, (name, follower, idle) in enumerate(((names[0], 0, 1), (names[1], 1, 0))):
            # every key again: about half of the file is garbage
            load(c, a.n, a.d, "bc"[rnd])
            assert c.wait(2, 600000) == 2
            while not all(in_sync(c, r) for r in reps):
                time.sleep(0.05)
            size = os.path.getsize(os.path.join(pdir, "db-0.simdr"))
            r = reps[follower]
            bytes_before = r.info("replication")["simdr_repl_log_bytes"]
            before = c.info("persistence")["simdr_compactions"]
            old_offset = c.info("replication")["master_repl_offset"]
            # the other replica sleeps through this compaction: the two
            # ways of following one are timed one at a time on two cores
            os.kill(procs[1 + idle].pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                c.execute_command("BGREWRITEAOF")
                t_compacted = done = None
                # One loop watches both: the compaction's end is seen by INFO
                # only at the server's next check (up to a second later), and
                # the replica may be done before that.
                while t_compacted is None or done is None:
                    now = time.monotonic()
                    ps = c.info("persistence")
                    if t_compacted is None and ps["simdr_compactions"] > before \
                            and not ps["aof_rewrite_in_progress"]:
                        t_compacted = now
                    switched = c.info("replication")["master_repl_offset"] != old_offset
                    if done is None and switched and in_sync(c, r):
                        done = now
                    time.sleep(0.002)
            finally:
                os.kill(procs[1 + idle].pid, signal.SIGCONT)
            compacted = os.path.getsize(os.path.join(pdir, "db-0.simdr"))
            info = r.info("replication")
            print("keys %d, value %d bytes: file %.1f MB, compacted %.1f MB, compaction seen "
                  "ended %.2f s after BGREWRITEAOF" % (a.n, a.d, size / 1e6, compacted / 1e6,
                                                        t_compacted - t0))
            print("%-9s: %8.1f MB received, serving the compacted file %.2f s after "
                  "BGREWRITEAOF (rebases %d, full copies %d)"
                  % (name, (info["simdr_repl_log_bytes"] - bytes_before) / 1e6, done - t0,
                     info["simdr_repl_rebases"], info["simdr_repl_full_copies"]))
        with open(logs[0]) as f:  # the replica's own account of its rebuild
            for line in f:
                if "rebuilt" in line:
                    print("rebase   : " + line.split(" * ", 1)[-1].strip())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
