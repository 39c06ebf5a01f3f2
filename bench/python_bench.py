#!/usr/bin/python3
"""Python-level benchmark of the simdr binding against py-lmdb, sqlite3 and dbm.

Each engine gets the same workloads on a fresh database in a temporary directory, in a
child process of its own (so one engine's memory and page cache state do not skew the
next), and every read is checked outside the timed loop:

  put1    N single puts, each its own commit (lmdb: a write txn each; sqlite: autocommit)
  putB    N puts in batches of 1,000 (simdr put_many; lmdb one txn; sqlite executemany in
          one transaction; dbm has no batch: plain puts)
  putE    simdr only: putB on a store opened with expected_keys=N (the index sized at
          open, as LMDB's map is sized at open); its ratio is to each peer's putB
  get     N gets in a fixed-seed random order, each result dropped before the next get,
          zero-copy where the engine has it (simdr read_entry; lmdb txn.get with
          buffers=True in one read txn); values checked in a separate untimed pass
  getc    the same with a bytes copy of every value (simdr read; lmdb buffers=False)
  getF    not run: per engine the faster of get and getc (for an 8-byte value a bytes copy
          costs no more than a view; this is the fastest random get each engine offers)
  getH    N gets as in get, of the first 2,000 keys only (each 100 times for N = 200,000):
          everything they touch stays in the CPU caches, so this is the cost of a call
          itself, without the cache misses of a lookup in a large store
  getB    simdr get_many, 1,000 keys a call (simdr only)
  iter    a full scan of the N live values
  numpy   a 100 MB float32 value as a numpy array (median of 5): simdr read_entry +
          frombuffer (a view) on a store opened with verify_reads=False (no peer checks
          a checksum on read); lmdb the same inside a read txn (a view); sqlite and dbm
          fetch a bytes copy first
  numpyc  the same for simdr with its default verify_reads=True: the read checks the
          value's CRC-32 first, a pass over the 100 MB (simdr only)

--interleaved-gets runs instead only the random gets of simdr and lmdb, both stores in one
process, the engines' calls alternating in chunks of 2,000 keys (each call reading different
keys at any moment, so each finds the key objects as cold as the other): a burst of load from
other processes then hits every call alike, and the ratios hold where whole-run figures move
by a factor of 1.5 between runs.

Keys are b"key%d", values the 8-byte little-endian index. Usage:
    /usr/bin/python3 bench/python_bench.py [-n 200000] [--runs 3] [--numpy-mb 100]
                                           [--engines simdr,lmdb,sqlite3,dbm]
                                           [--clock wall|cpu] [--interleaved-gets]
--clock cpu times each workload with the process's CPU time (time.process_time) instead of
the wall clock: on a machine shared with other work, the time the process spends waiting
for a core is then left out, which the wall clock counts at random (a write's system time
is CPU time and still counted).
Needs Debian's python3-numpy, python3-lmdb (and python3-gdbm for dbm.gnu) and the simdr
package (pip install ./python, or PYTHONPATH pointing at a build).
"""
import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time

import numpy as np

BATCH = 1000


HOT = 2000


def prepare(n):
    keys = [b"key%d" % i for i in range(n)]
    values = [struct.pack("<Q", i) for i in range(n)]
    order = list(range(n))
    random.Random(42).shuffle(order)
    return keys, values, [keys[i] for i in order], order


def hot_keys(keys, rorder):
    return [keys[i % HOT] for i in rorder]


def each(fn, keys):
    """Calls fn on every key, dropping each result (as a lookup-and-use loop does)."""
    for k in keys:
        fn(k)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn):
    t0 = clock()
    fn()
    return clock() - t0


# ---- engines: each returns {workload: seconds} (numpy: microseconds, median) ----

def run_simdr(d, keys, values, rkeys, rorder, big):
    import simdr
    out = {}
    db = simdr.open(os.path.join(d, "single.bin"))
    w = db.write
    out["put1"] = timed(lambda: [w(k, v) for k, v in zip(keys, values)])
    db.close()
    pairs = list(zip(keys, values))
    sized = simdr.open(os.path.join(d, "sized.bin"), expected_keys=len(pairs))
    out["putE"] = timed(lambda: [sized.put_many(pairs[i:i + BATCH])
                                 for i in range(0, len(pairs), BATCH)])
    sized.close()
    db = simdr.open(os.path.join(d, "batch.bin"))
    out["putB"] = timed(lambda: [db.put_many(pairs[i:i + BATCH]) for i in range(0, len(pairs), BATCH)])
    re = db.read_entry
    out["get"] = timed(lambda: each(re, rkeys))
    assert [bytes(re(k)) for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
    hot = hot_keys(keys, rorder)
    out["getH"] = timed(lambda: each(re, hot))
    rd = db.read
    out["getc"] = timed(lambda: each(rd, rkeys))
    assert [rd(k) for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
    gm = db.get_many
    batches = [rkeys[i:i + BATCH] for i in range(0, len(rkeys), BATCH)]
    out["getB"] = timed(lambda: each(gm, batches))  # each call's handles dropped before the next
    assert [bytes(h) for h in gm(rkeys[:1000])] == [values[i] for i in rorder[:1000]]
    total = [0]

    def scan():
        s = 0
        for h in db:
            s += len(h)
        total[0] = s
    out["iter"] = timed(scan)
    assert total[0] == 8 * len(keys)
    db.write(b"big", big)
    path = db.path
    db.close()
    for key, verify in (("numpy", False), ("numpyc", True)):
        db = simdr.open(path, verify_reads=verify)
        samples = []
        for _ in range(5):
            t0 = clock()
            arr = np.frombuffer(db.read_entry(b"big"), dtype=np.float32)
            samples.append(clock() - t0)
            assert arr.shape == big.shape and arr[12345] == big[12345]
            del arr
        out[key] = statistics.median(samples) * 1e6
        db.close()
    return out


def run_lmdb(d, keys, values, rkeys, rorder, big):
    import lmdb
    out = {}
    env = lmdb.open(os.path.join(d, "single"), map_size=1 << 34, sync=False, metasync=False)

    def put1():
        for k, v in zip(keys, values):
            with env.begin(write=True) as txn:
                txn.put(k, v)
    out["put1"] = timed(put1)
    env.close()
    env = lmdb.open(os.path.join(d, "batch"), map_size=1 << 34, sync=False, metasync=False)

    def putB():
        for i in range(0, len(keys), BATCH):
            with env.begin(write=True) as txn:
                for k, v in zip(keys[i:i + BATCH], values[i:i + BATCH]):
                    txn.put(k, v)
    out["putB"] = timed(putB)
    with env.begin(buffers=True) as txn:
        g = txn.get
        out["get"] = timed(lambda: each(g, rkeys))
        assert [bytes(g(k)) for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
        hot = hot_keys(keys, rorder)
        out["getH"] = timed(lambda: each(g, hot))
    with env.begin() as txn:
        g = txn.get
        out["getc"] = timed(lambda: each(g, rkeys))
        assert [g(k) for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
    total = [0]

    def scan():
        s = 0
        with env.begin(buffers=True) as txn:
            for _, v in txn.cursor():
                s += len(v)
        total[0] = s
    out["iter"] = timed(scan)
    assert total[0] == 8 * len(keys)
    with env.begin(write=True) as txn:
        txn.put(b"big", big)
    samples = []
    with env.begin(buffers=True) as txn:
        for _ in range(5):
            t0 = clock()
            arr = np.frombuffer(txn.get(b"big"), dtype=np.float32)
            samples.append(clock() - t0)
            assert arr.shape == big.shape and arr[12345] == big[12345]
            del arr
    out["numpy"] = statistics.median(samples) * 1e6
    env.close()
    return out


def run_sqlite(d, keys, values, rkeys, rorder, big):
    import sqlite3
    out = {}

    def connect(name):
        con = sqlite3.connect(os.path.join(d, name), isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        return con
    con = connect("single.db")
    ex = con.execute
    out["put1"] = timed(lambda: [ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
                                 for k, v in zip(keys, values)])
    con.close()
    con = connect("batch.db")
    pairs = list(zip(keys, values))

    def putB():
        for i in range(0, len(pairs), BATCH):
            con.execute("BEGIN")
            con.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", pairs[i:i + BATCH])
            con.execute("COMMIT")
    out["putB"] = timed(putB)
    ex = con.execute

    def get(k):
        return ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()[0]
    out["get"] = timed(lambda: each(get, rkeys))
    assert [get(k) for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
    out["getc"] = out["get"]  # sqlite3 always copies
    hot = hot_keys(keys, rorder)
    out["getH"] = timed(lambda: each(get, hot))
    total = [0]

    def scan():
        total[0] = sum(len(v) for (v,) in con.execute("SELECT v FROM kv"))
    out["iter"] = timed(scan)
    assert total[0] == 8 * len(keys)
    con.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (b"big", big.tobytes()))
    samples = []
    for _ in range(5):
        t0 = clock()
        blob = con.execute("SELECT v FROM kv WHERE k = ?", (b"big",)).fetchone()[0]
        arr = np.frombuffer(blob, dtype=np.float32)
        samples.append(clock() - t0)
        assert arr.shape == big.shape and arr[12345] == big[12345]
        del arr, blob
    out["numpy"] = statistics.median(samples) * 1e6
    con.close()
    return out


def run_dbm(d, keys, values, rkeys, rorder, big):
    import dbm
    out = {}
    db = dbm.open(os.path.join(d, "single"), "n")
    out["engine"] = dbm.whichdb(os.path.join(d, "single")) or "dbm"

    def puts():
        for k, v in zip(keys, values):
            db[k] = v
    out["put1"] = timed(puts)
    db.close()
    db = dbm.open(os.path.join(d, "batch"), "n")
    out["putB"] = timed(puts)  # no batch API
    out["get"] = timed(lambda: each(db.__getitem__, rkeys))
    assert [db[k] for k in rkeys[:1000]] == [values[i] for i in rorder[:1000]]
    out["getc"] = out["get"]
    hot = hot_keys(keys, rorder)
    out["getH"] = timed(lambda: each(db.__getitem__, hot))
    total = [0]

    def scan():
        s = 0
        k = db.firstkey() if hasattr(db, "firstkey") else None
        if k is None and not hasattr(db, "firstkey"):
            for key in db.keys():
                s += len(db[key])
        while k is not None:
            s += len(db[k])
            k = db.nextkey(k)
        total[0] = s
    out["iter"] = timed(scan)
    assert total[0] == 8 * len(keys)
    db[b"big"] = big.tobytes()
    samples = []
    for _ in range(5):
        t0 = clock()
        arr = np.frombuffer(db[b"big"], dtype=np.float32)
        samples.append(clock() - t0)
        assert arr.shape == big.shape and arr[12345] == big[12345]
        del arr
    out["numpy"] = statistics.median(samples) * 1e6
    db.close()
    return out


def run_interleaved_gets(d, keys, values, rkeys, rorder, rounds, chunk=2000):
    """Per-get seconds of each random-get call, simdr and lmdb alternating chunk by chunk."""
    import lmdb
    import simdr
    n = len(keys)
    db = simdr.open(os.path.join(d, "interleaved.bin"))
    for i in range(0, n, BATCH):
        db.put_many(list(zip(keys[i:i + BATCH], values[i:i + BATCH])))
    env = lmdb.open(os.path.join(d, "interleaved"), map_size=1 << 34, sync=False, metasync=False)
    for i in range(0, n, BATCH):
        with env.begin(write=True) as txn:
            for k, v in zip(keys[i:i + BATCH], values[i:i + BATCH]):
                txn.put(k, v)
    view_txn, copy_txn = env.begin(buffers=True), env.begin()
    calls = [("simdr read_entry (zero-copy handle)", db.read_entry),
             ("lmdb txn.get, buffers=True (memoryview)", view_txn.get),
             ("simdr read (bytes)", db.read), ("lmdb txn.get (bytes)", copy_txn.get),
             ("simdr exists", db.exists), ("the loop alone (len)", len)]
    for _, fn in calls[:4]:
        got = [bytes(fn(k)) for k in rkeys[:1000]]
        assert got == [values[i] for i in rorder[:1000]]
    total = {name: 0.0 for name, _ in calls}
    chunks = n // chunk
    for _ in range(rounds):
        for step in range(chunks):
            for j, (name, fn) in enumerate(calls):
                c = (step + j * 17) % chunks
                ks = rkeys[c * chunk:(c + 1) * chunk]
                t0 = clock()
                each(fn, ks)
                total[name] += clock() - t0
    view_txn.abort()
    copy_txn.abort()
    env.close()
    db.close()
    return {name: t / (rounds * chunks * chunk) for name, t in total.items()}


def interleaved_child(n, rounds, clock_name, conn):
    global clock
    clock = CLOCKS[clock_name]
    try:
        keys, values, rkeys, rorder = prepare(n)
        d = tempfile.mkdtemp(prefix="pybench-", dir=os.environ.get("BENCH_DIR"))
        try:
            conn.send(run_interleaved_gets(d, keys, values, rkeys, rorder, rounds))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    except Exception as e:
        conn.send({"error": repr(e)})


def interleaved_main(args):
    parent, kid = multiprocessing.get_context("fork").Pipe()
    p = multiprocessing.get_context("fork").Process(
        target=interleaved_child, args=(args.n, args.runs, args.clock, kid))
    p.start()
    got = parent.recv()
    p.join()
    if "error" in got:
        sys.exit(f"interleaved gets: {got['error']}")
    print(f"N = {args.n:,}; random gets interleaved in chunks of 2,000 keys, {args.runs} pass(es) "
          f"over all keys; {args.clock} clock; simdr {__import__('simdr').engine_version()}; "
          f"Python {sys.version.split()[0]}")
    print()
    print("| call | ns per get | gets/s |")
    print("|---|---|---|")
    for name, t in got.items():
        print(f"| {name} | {t * 1e9:,.1f} | {1 / t:,.0f} |")
    ns = {name.split(" (")[0]: t for name, t in got.items()}
    print()
    print("simdr / lmdb: read_entry vs buffers=True %.2fx; read vs buffers=True %.2fx; "
          "read vs bytes %.2fx" % (ns["lmdb txn.get, buffers=True"] / ns["simdr read_entry"],
                                   ns["lmdb txn.get, buffers=True"] / ns["simdr read"],
                                   ns["lmdb txn.get"] / ns["simdr read"]))


ENGINES = {"simdr": run_simdr, "lmdb": run_lmdb, "sqlite3": run_sqlite, "dbm": run_dbm}


def child(name, n, numpy_mb, clock_name, conn):
    global clock
    clock = CLOCKS[clock_name]
    try:
        keys, values, rkeys, rorder = prepare(n)
        big = np.arange(numpy_mb * (1 << 20) // 4, dtype=np.float32)
        d = tempfile.mkdtemp(prefix="pybench-", dir=os.environ.get("BENCH_DIR"))
        try:
            conn.send(ENGINES[name](d, keys, values, rkeys, rorder, big))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    except Exception as e:
        conn.send({"error": repr(e)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--numpy-mb", type=int, default=100)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: the process's CPU time (see above)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--runs", type=int, default=1, help="rounds over all engines")
    ap.add_argument("--stat", choices=["median", "best"], default="median",
                    help="per cell: the median of the rounds, or the best (least disturbed)")
    ap.add_argument("--interleaved-gets", action="store_true",
                    help="only the random gets of simdr and lmdb, interleaved (see above)")
    args = ap.parse_args()
    if args.interleaved_gets:
        interleaved_main(args)
        return
    names = args.engines.split(",")
    ctx = multiprocessing.get_context("fork")
    rounds = {name: [] for name in names}
    for r in range(args.runs):
        for name in names:  # engines interleaved, so a burst of load hits all of them
            parent, kid = ctx.Pipe()
            p = ctx.Process(target=child, args=(name, args.n, args.numpy_mb, args.clock, kid))
            p.start()
            got = parent.recv()
            p.join()
            if "error" in got:
                sys.exit(f"{name}: {got['error']}")
            rounds[name].append(got)
            print(f"# round {r + 1}: {name} done", file=sys.stderr)
    results = {}
    for name, runs in rounds.items():
        # every figure is a duration, so the best round is the shortest
        pick = statistics.median if args.stat == "median" else min
        results[name] = {k: (pick(x[k] for x in runs) if k != "engine" else v)
                         for k, v in runs[0].items()}
        results[name]["getF"] = min(results[name]["get"], results[name]["getc"])
    n = args.n
    rows = [("put1", "single puts", "ops/s"), ("putB", "batched puts (1,000)", "ops/s"),
            ("putE", "batched puts (1,000), simdr with expected_keys (peers: their batched puts)",
             "ops/s"),
            ("get", "random gets, zero-copy where offered", "ops/s"),
            ("getc", "random gets, bytes copy", "ops/s"),
            ("getF", "random gets, the faster of the two rows above", "ops/s"),
            ("getH", f"random gets of {HOT:,} keys (cached), zero-copy where offered", "ops/s"),
            ("getB", "batch gets (get_many)", "ops/s"),
            ("iter", "iteration", "values/s"),
            ("numpy", f"{args.numpy_mb} MB float32 into numpy (simdr verify_reads=False)", "us"),
            ("numpyc", f"{args.numpy_mb} MB float32 into numpy, checked (simdr default)", "us")]
    peers = [x for x in names if x != "simdr"]
    label = {x: x if x != "dbm" else f"dbm ({results[x].get('engine')})" for x in names}
    print(f"N = {n:,}; {args.stat} of {args.runs} run(s); {args.clock} clock; simdr {__import__('simdr').engine_version()}; "
          f"Python {sys.version.split()[0]}")
    print()
    print("| workload | unit | " + " | ".join(label[x] for x in names) + " | "
          + " | ".join(f"simdr / {x}" for x in peers) + " |")
    print("|---" * (2 + len(names) + len(peers)) + "|")
    for key, what, unit in rows:
        cells, vals = [], {}
        for x in names:
            # putE is simdr's alone; each peer stands with its batched puts
            r = results[x].get("putB" if key == "putE" and x != "simdr" else key)
            if r is None:
                cells.append("n/a")
                continue
            timing = key.startswith("numpy")
            v = r if timing else n / r
            vals[x] = v
            cells.append(f"{v:,.1f}" if timing else f"{v:,.0f}")
        ratios = []
        for x in peers:
            if "simdr" in vals and x in vals:
                s, p = vals["simdr"], vals[x]
                ratio = p / s if key.startswith("numpy") else s / p
                ratios.append(f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x")
            else:
                ratios.append("n/a")
        print(f"| {what} | {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print()
    print("Ratios: how many times faster simdr is (for numpy: peer time / simdr time).")


if __name__ == "__main__":
    main()
