#!/usr/bin/env python3
"""Integration tests of the simd-r-drive command-line tool: they run the
built binary the way a shell script would and check stdout bytes, stderr
text, exit codes and the store file itself.

    test_cli.py --cli PATH/simd-r-drive --interop DIR --group NAME

Groups: basic, binary, readonly, files, interop, tty, errors, memory, names,
usability, hostile, server (needs --server), fullfs (needs root), aslimit (not under sanitizers). Each check
prints what it verifies; the script exits 1 if any check failed.
"""
import argparse
import errno
import fcntl
import hashlib
import json
import os
import pty
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

CLI = None
INTEROP = None
SERVER = None
FAILURES = []
CHECKS = 0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def check(cond, what, detail=""):
    global CHECKS
    CHECKS += 1
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what + ("\n       " + detail if detail else ""))
        FAILURES.append(what)
    return cond


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return "rc=%d stdout=%r stderr=%r" % (self.rc, self.out[:200], self.err[:400])


def run(*args, stdin=None, input=None, cwd=None):
    """Runs the CLI; stdin is /dev/null unless input (bytes) or a file is given."""
    if input is not None:
        p = subprocess.run([CLI] + list(args), input=input, capture_output=True, cwd=cwd)
    else:
        p = subprocess.run([CLI] + list(args), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                           capture_output=True, cwd=cwd)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expect_ok(r, what):
    return check(r.rc == 0, what, repr(r))


def expect_rc(r, rc, what, err_contains=None):
    ok = r.rc == rc
    if err_contains is not None:
        ok = ok and err_contains.lower() in r.err.lower()
    return check(ok, what, repr(r))


def one_line_error(r):
    lines = [l for l in r.err.splitlines() if l.strip()]
    return len(lines) == 1 and lines[0].startswith("simd-r-drive: ")


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="simdr-cli-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def run_pty(args, stdin_tty=False, stdout_tty=False, stderr_tty=False, input=None, timeout=120, typed=None,
            cols=None):
    """Runs the CLI with chosen standard streams on a pseudo-terminal (cols
    columns wide if given); typed (bytes) is typed on the terminal. Returns
    (rc, stdout bytes, stderr bytes, tty bytes)."""
    master, slave = pty.openpty()
    if cols:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    try:
        stdin = slave if stdin_tty else (subprocess.PIPE if input is not None else subprocess.DEVNULL)
        stdout = slave if stdout_tty else subprocess.PIPE
        stderr = slave if stderr_tty else subprocess.PIPE
        p = subprocess.Popen([CLI] + list(args), stdin=stdin, stdout=stdout, stderr=stderr)
        os.close(slave)
        slave = None
        if typed:
            os.write(master, typed)
        tty = bytearray()
        outs = {}

        def drain(name, f):
            outs[name] = f.read()

        threads = []
        if p.stdout:
            threads.append(threading.Thread(target=drain, args=("out", p.stdout)))
        if p.stderr:
            threads.append(threading.Thread(target=drain, args=("err", p.stderr)))
        for t in threads:
            t.start()
        if input is not None and p.stdin:
            def feed():
                try:
                    p.stdin.write(input)
                    p.stdin.close()
                except BrokenPipeError:
                    pass
            threads.append(threading.Thread(target=feed))
            threads[-1].start()
        while True:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                tty += data
            elif p.poll() is not None:
                # drain what is left on the terminal
                while select.select([master], [], [], 0.05)[0]:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    tty += data
                break
        rc = p.wait(timeout=timeout)
        for t in threads:
            t.join()
        return rc, outs.get("out", b""), outs.get("err", b""), bytes(tty)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def run_measured(args, feed=None, consume=None):
    """Runs the CLI, feeding stdin and/or consuming stdout in threads, and
    samples the peak anonymous resident memory (RssAnon) of the process.
    Returns (rc, stdout bytes unless consumed, stderr bytes, peak MiB)."""
    p = subprocess.Popen([CLI] + list(args), stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        path = "/proc/%d/status" % p.pid
        while not done.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except (OSError, ValueError):
                pass
            done.wait(0.005)

    outs = {}
    threads = [threading.Thread(target=sample)]
    if feed:
        threads.append(threading.Thread(target=feed, args=(p.stdin,)))
    if consume:
        threads.append(threading.Thread(target=consume, args=(p.stdout,)))
    else:
        threads.append(threading.Thread(target=lambda: outs.setdefault("out", p.stdout.read())))
    threads.append(threading.Thread(target=lambda: outs.setdefault("err", p.stderr.read())))
    for t in threads[1:]:
        t.start()
    threads[0].start()
    for t in threads[1:]:
        t.join()
    rc = p.wait()
    done.set()
    threads[0].join()
    return rc, outs.get("out", b""), outs.get("err", b""), peak[0] / 1024.0


def write_value(store, key, value, *extra):
    return run(store, "write", key, *extra, input=value)


def read_value(store, key, *extra):
    return run(store, "read", key, *extra)


# ---------------------------------------------------------------------------
# group: basic - every command and option on a fresh store
# ---------------------------------------------------------------------------

def group_basic():
    r = run("--help")
    expect_ok(r, "--help exits 0")
    help_text = r.out.decode()
    for cmd in ["read", "write", "copy", "move", "rename", "delete", "compact", "info",
                "metadata", "check", "list", "dump", "import", "export"]:
        check(("simd-r-drive data.bin " + cmd) in help_text, "--help has an example of " + cmd)
    check("--key-hex" in help_text and "--json" in help_text and "--buffer-size" in help_text,
          "--help documents --key-hex, --json, --buffer-size")
    check("Exit status" in help_text, "--help documents exit codes")
    check(r.err == "", "--help writes nothing to stderr")
    r = run("-h")
    expect_ok(r, "-h is --help")
    r = run("x.bin", "read", "--help")
    check(r.rc == 0 and b"Usage" in r.out, "--help after a command prints help", repr(r))
    r = run("--version")
    v = r.out.split()  # simd-r-drive X.Y.Z (libsimdr X.Y.Z); install_version checks X.Y.Z
    check(r.rc == 0 and len(v) == 4 and v[0] == b"simd-r-drive" and v[1].count(b".") == 2
          and v[2:] == [b"(libsimdr", v[1] + b")"],
          "--version prints program and library version", repr(r))
    check(run("-V").out == r.out, "-V is --version")

    with TempDir() as d:
        s = os.path.join(d, "s.bin")
        # write with VALUE argument
        r = run(s, "write", "greeting", "hello, world")
        expect_ok(r, "write KEY VALUE exits 0")
        check(r.out == b"", "write prints nothing on stdout")
        check("Stored 'greeting'" in r.err, "write confirms on stderr", repr(r))
        r = run(s, "read", "greeting")
        check(r.rc == 0 and r.out == b"hello, world", "read returns the exact value, no newline in a pipe",
              repr(r))
        check(r.err == "", "read prints nothing on stderr", repr(r))
        # write from stdin
        r = write_value(s, "piped", b"from stdin\n")
        expect_ok(r, "write KEY with piped stdin exits 0")
        check(read_value(s, "piped").out == b"from stdin\n", "piped value reads back exactly")
        # overwrite
        expect_ok(run(s, "write", "greeting", "hello again"), "overwrite exits 0")
        check(read_value(s, "greeting").out == b"hello again", "read returns the newest value")
        # -q suppresses confirmations
        r = run(s, "-q", "write", "quiet", "v")
        check(r.rc == 0 and r.err == "", "--quiet/-q silences the confirmation", repr(r))
        r = run(s, "write", "quiet2", "v", "--quiet")
        check(r.rc == 0 and r.err == "", "--quiet accepted after the arguments", repr(r))

        # --buffer-size forms
        for opt in (["--buffer-size", "1"], ["--buffer-size=7"], ["-b", "4096"], ["-b32K"],
                    ["--buffer-size", "1MB"], ["--buffer-size", "1G"], ["--buffer-size", "2kb"],
                    ["--buffer-size", " 3m "]):
            r = run(s, "read", "greeting", *opt)
            check(r.rc == 0 and r.out == b"hello again", "read with %s" % " ".join(opt), repr(r))
        r = run(s, "--buffer-size", "16", "read", "greeting")
        check(r.rc == 0 and r.out == b"hello again", "--buffer-size before the command", repr(r))
        for bad in ["0", "abc", "10XZ", "-5", "1.5M", "", "99999999999999999999", "1T"]:
            r = run(s, "read", "greeting", "--buffer-size", bad)
            expect_rc(r, 2, "invalid buffer size %r is a usage error (exit 2)" % bad, "buffer size")
        r = run(s, "read", "greeting", "--buffer-size")
        expect_rc(r, 2, "--buffer-size without a value is a usage error", "needs a value")

        # info
        r = run(s, "info")
        expect_ok(r, "info exits 0")
        text = r.out.decode()
        for label in ["STORAGE INFO", "STORAGE FILE:", "TOTAL SIZE:", "ACTIVE ENTRIES:",
                      "COMPACTION SAVINGS:", "LAYOUT:"]:
            check(label in text, "info shows " + label, text)
        check('"%s"' % s in text, "info names the file", text)
        check("ACTIVE ENTRIES:           4" in text, "info counts 4 active entries", text)
        r = run(s, "info", "--json")
        expect_ok(r, "info --json exits 0")
        info = json.loads(r.out)
        check(info["active_entries"] == 4 and info["storage_file"] == s,
              "info --json: active_entries and storage_file", repr(info))
        check(info["total_size"] == os.path.getsize(s), "info --json: total_size is the file size",
              repr(info))
        check(info["compaction_savings"] > 0, "info --json: overwrite makes compaction_savings > 0",
              repr(info))
        check(info["layout"] == "aligned64", "info --json: new files use the aligned layout", repr(info))
        r = run(s, "info", "--detailed")
        check(r.rc == 0 and b"COMPACTION SAVINGS" in r.out, "info --detailed accepted (Rust tool option)",
              repr(r))

        # metadata
        r = run(s, "metadata", "greeting")
        expect_ok(r, "metadata exits 0")
        text = r.out.decode()
        for label in ["METADATA SUMMARY", "PAYLOAD SIZE:", "TOTAL SIZE (W/ METADATA):", "OFFSET RANGE:",
                      "KEY HASH:", "CHECKSUM:", "CHECKSUM VALIDITY:", "LAYOUT:"]:
            check(label in text, "metadata shows " + label, text)
        check("PAYLOAD SIZE:             11 bytes" in text, "metadata payload size", text)
        check("TOTAL SIZE (W/ METADATA): 31 bytes" in text, "metadata total size with metadata", text)
        check("VALID" in text and "INVALID" not in text, "metadata checksum VALID", text)
        r = run(s, "metadata", "greeting", "--json")
        md = json.loads(r.out)
        check(md["payload_size"] == 11 and md["total_size_with_metadata"] == 31,
              "metadata --json sizes", repr(md))
        check(md["offset_range"]["end"] - md["offset_range"]["start"] == 11 and
              md["offset_range"]["start"] % 64 == 0, "metadata --json offset range (aligned start)", repr(md))
        check("OFFSET RANGE:             %d..%d" % (md["offset_range"]["start"], md["offset_range"]["end"])
              in text, "metadata text shows the offset range as start..end", text)
        check(md["checksum_valid"] is True and md["key"] == "greeting" and md["key_hex"] == b"greeting".hex(),
              "metadata --json key, key_hex, checksum_valid", repr(md))
        check(md["checksum"] == int(md["checksum_hex"], 16), "metadata --json checksum and checksum_hex agree")
        # key hash of "a" is a FORMAT.md test vector
        run(s, "write", "a", "hello")
        md = json.loads(run(s, "metadata", "a", "--json").out)
        check(md["key_hash"] == "e6c632b61e964e1f", "metadata key_hash of 'a' is XXH3 test vector", repr(md))
        check(md["checksum"] == 0x3610a686, "metadata checksum of 'hello' is the CRC-32 test vector", repr(md))
        check("KEY HASH:                 %d (0xe6c632b61e964e1f)" % 0xe6c632b61e964e1f in
              run(s, "metadata", "a").out.decode(), "metadata text key hash decimal and hex")

        # list / dump
        r = run(s, "list")
        expect_ok(r, "list exits 0")
        lines = r.out.decode().splitlines()
        check(len(lines) == 5, "list prints one line per live entry (5)", r.out.decode())
        fields = [l.split(" ") for l in lines]
        check(all(len(f) >= 3 and len(f[0]) == 16 for f in fields), "list lines are: hash offset size [name]",
              repr(fields))
        check(["e6c632b61e964e1f", None, "5"] in [[f[0], None, f[2]] for f in fields],
              "list shows key 'a' with its hash and size", repr(fields))
        check(run(s, "dump").out == r.out, "dump is an alias of list")
        js = json.loads(run(s, "list", "--json").out)
        check(len(js) == 5 and all({"key_hash", "offset", "size"} <= set(e) <=
                                   {"key_hash", "offset", "size", "key", "key_hex"} for e in js),
              "list --json is an array of {key_hash, offset, size[, key, key_hex]}", repr(js))
        check(sorted((e["key_hash"], e["offset"], e["size"]) for e in js) ==
              sorted((f[0], int(f[1]), int(f[2])) for f in fields), "list and list --json agree")

        # check
        r = run(s, "check")
        check(r.rc == 0 and b"OK" in r.out, "check on a sound store exits 0 and says OK", repr(r))
        cj = json.loads(run(s, "check", "--json").out)
        check(cj["sound"] is True and cj["bad_entries"] == 0 and cj["issues"] == [] and cj["entries"] >= 6,
              "check --json on a sound store", repr(cj))

        # --key-hex: binary key with zero byte and invalid UTF-8
        bkey = "62696e006b6579ff01"
        r = run(s, "--key-hex", "write", bkey, "binary key value")
        expect_ok(r, "--key-hex write (key with 0x00 and 0xff)")
        r = run(s, "read", bkey, "--key-hex")
        check(r.rc == 0 and r.out == b"binary key value", "--key-hex after the arguments reads it back", repr(r))
        r = run(s, "read", "0x" + bkey.upper(), "--key-hex")
        check(r.rc == 0 and r.out == b"binary key value", "--key-hex accepts 0x prefix and upper case", repr(r))
        r = run(s, "read", bkey)
        expect_rc(r, 1, "without --key-hex the hex text is a different key (not found)")
        md = json.loads(run(s, "--key-hex", "metadata", bkey, "--json").out)
        check(md["key_hex"] == bkey, "metadata --json key_hex of a binary key is exact", repr(md))
        # --key-hex with text keys: "greeting" in hex
        r = run(s, "--key-hex", "read", b"greeting".hex())
        check(r.out == b"hello again", "--key-hex names a text key by its bytes", repr(r))
        for bad in ["abc", "zz", "0xg0"]:
            r = run(s, "--key-hex", "read", bad)
            expect_rc(r, 2, "--key-hex %r is a usage error" % bad, "hex")
        # key that starts with '-' after --
        expect_ok(run(s, "write", "--", "-dash", "dash value"), "-- lets a key start with '-'")
        check(run(s, "read", "--", "-dash").out == b"dash value", "read a key that starts with '-'")

        # rename
        r = run(s, "rename", "piped", "renamed")
        check(r.rc == 0 and "Renamed" in r.err, "rename exits 0 and confirms", repr(r))
        check(read_value(s, "renamed").out == b"from stdin\n", "renamed key has the value")
        expect_rc(read_value(s, "piped"), 1, "old key is gone after rename", "not found")
        expect_rc(run(s, "rename", "piped", "x"), 1, "rename of a missing key exits 1", "not found")
        expect_rc(run(s, "rename", "renamed", "renamed"), 1, "rename to the same key exits 1", "same")
        r = run(s, "--key-hex", "rename", b"renamed".hex(), b"hexnamed".hex())
        check(r.rc == 0 and read_value(s, "hexnamed").out == b"from stdin\n", "rename with --key-hex", repr(r))

        # delete
        r = run(s, "delete", "hexnamed")
        check(r.rc == 0 and "Deleted" in r.err, "delete exits 0", repr(r))
        expect_rc(read_value(s, "hexnamed"), 1, "deleted key reads as not found", "not found")
        expect_rc(run(s, "delete", "hexnamed"), 1, "deleting a deleted key exits 1", "not found")
        expect_ok(run(s, "--key-hex", "delete", bkey), "delete with --key-hex")
        expect_rc(run(s, "--key-hex", "read", bkey), 1, "binary key deleted")

        # copy / move
        t = os.path.join(d, "target.bin")
        r = run(s, "copy", "greeting", t)
        check(r.rc == 0 and os.path.exists(t), "copy creates the target store", repr(r))
        check(read_value(t, "greeting").out == b"hello again", "copied value in target")
        check(read_value(s, "greeting").out == b"hello again", "copy keeps the source")
        r = run(s, "move", "a", t)
        check(r.rc == 0 and "Moved" in r.err, "move exits 0", repr(r))
        check(read_value(t, "a").out == b"hello", "moved value in target")
        expect_rc(read_value(s, "a"), 1, "move deletes from the source")
        expect_rc(run(s, "copy", "nokey", t), 1, "copy of a missing key exits 1", "not found")
        expect_rc(run(s, "move", "nokey", t), 1, "move of a missing key exits 1", "not found")
        expect_rc(run(s, "copy", "greeting", s), 1, "copy to the same file exits 1", "same file")
        expect_rc(run(s, "move", "greeting", s), 1, "move to the same file exits 1", "same file")
        run(s, "--key-hex", "write", bkey, "bin")
        r = run(s, "--key-hex", "copy", bkey, t)
        check(r.rc == 0 and run(t, "--key-hex", "read", bkey).out == b"bin",
              "--key-hex copy uses hex for KEY, TARGET stays a path", repr(r))

        # compact
        before = os.path.getsize(s)
        savings = json.loads(run(s, "info", "--json").out)["compaction_savings"]
        keys = {}
        for e in json.loads(run(s, "list", "--json").out):
            keys[e["key_hash"]] = e["size"]
        r = run(s, "compact")
        check(r.rc == 0 and "Compacted" in r.err, "compact exits 0", repr(r))
        after = os.path.getsize(s)
        check(after == before - savings, "compact frees exactly the compaction savings (%d - %d = %d)"
              % (before, savings, after))
        check(json.loads(run(s, "info", "--json").out)["compaction_savings"] == 0, "no savings left after compact")
        after_keys = {e["key_hash"]: e["size"] for e in json.loads(run(s, "list", "--json").out)}
        check(after_keys == keys, "compact keeps every live entry")
        check(read_value(s, "greeting").out == b"hello again", "value readable after compact")
        expect_ok(run(s, "check"), "check after compact")


# ---------------------------------------------------------------------------
# group: errors - usage errors, exit codes, one-line messages
# ---------------------------------------------------------------------------

def group_errors():
    with TempDir() as d:
        # An empty storage path (an unset shell variable) is named as such by
        # every command, not as a missing file for some and a NULL argument for others.
        for cmd in (["write", "k", "v"], ["read", "k"], ["compact"], ["info"], ["import", d]):
            r = run("", *cmd)
            check(r.rc == 1 and one_line_error(r) and "cannot open '': the path is empty" in r.err,
                  "an empty storage path, %s: one error naming the empty path" % cmd[0], repr(r))
        s = os.path.join(d, "s.bin")
        run(s, "write", "k", "v")
        cases = [
            ([], "no arguments"),
            ([s], "store without command"),
            ([s, "frobnicate"], "unknown command"),
            ([s, "read"], "read without KEY"),
            ([s, "read", "a", "b"], "read with two keys"),
            ([s, "write"], "write without KEY"),
            ([s, "write", "k", "v", "extra"], "write with three arguments"),
            ([s, "copy", "k"], "copy without TARGET"),
            ([s, "move", "k"], "move without TARGET"),
            ([s, "rename", "k"], "rename without NEW"),
            ([s, "delete"], "delete without KEY"),
            ([s, "compact", "x"], "compact with an argument"),
            ([s, "info", "x"], "info with an argument"),
            ([s, "metadata"], "metadata without KEY"),
            ([s, "check", "x"], "check with an argument"),
            ([s, "list", "x"], "list with an argument"),
            ([s, "import"], "import without DIR"),
            ([s, "export"], "export without DIR"),
            ([s, "info", "--frob"], "unknown option"),
            ([s, "write", "k", "v", "--json"], "--json on write"),
            ([s, "info", "--buffer-size", "4K"], "--buffer-size on info"),
            ([s, "list", "--detailed"], "--detailed on list"),
        ]
        for args, what in cases:
            sha = sha256_file(s)
            r = run(*args)
            expect_rc(r, 2, "usage error exits 2: " + what)
            check("--help" in r.err and r.out == b"", "usage error explains on stderr only: " + what, repr(r))
            check(sha256_file(s) == sha, "usage error leaves the store untouched: " + what)
        r = run(os.path.join(d, "new.bin"), "write", "k")
        check(r.rc == 2 or r.rc == 1, "write without VALUE and empty stdin fails", repr(r))

        # one-line errors naming file and key
        r = run(s, "read", "absent")
        expect_rc(r, 1, "missing key exits 1")
        check(one_line_error(r) and "'absent'" in r.err and s in r.err and "not found" in r.err,
              "missing key: one line naming file, key and cause", repr(r))
        r = run(s, "metadata", "absent")
        check(r.rc == 1 and one_line_error(r) and "not found" in r.err, "metadata of a missing key exits 1", repr(r))

        # output errors other than a closed pipe fail loudly
        if os.path.exists("/dev/full"):
            for args in (["read", "k"], ["info"], ["list", "--json"]):
                with open("/dev/full", "wb") as full:
                    p = subprocess.run([CLI, s] + args, stdout=full, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL)
                err = p.stderr.decode()
                check(p.returncode == 1 and "write error on standard output" in err and "space" in err,
                      "%s to a full disk (/dev/full) exits 1 and says why" % args[0], repr((p.returncode, err)))

        # refused values
        for value, what in [(b"", "empty stdin"), (b"\0", "single zero byte"), (b"\0" * 5000, "only zero bytes")]:
            r = write_value(s, "z", value)
            check(r.rc == 1 and "refused" in r.err and one_line_error(r), "write refuses %s (exit 1)" % what, repr(r))
            expect_rc(read_value(s, "z"), 1, "nothing stored after refusing %s" % what)
        r = run(s, "write", "z", "")
        check(r.rc == 1 and "refused" in r.err, "write refuses an empty VALUE argument", repr(r))
        expect_ok(run(s, "check"), "store sound after refused writes")

        # not a store: never modified
        txt = os.path.join(d, "notes.txt")
        with open(txt, "wb") as f:
            f.write(b"this is a plain text file, not a store\n" * 10)
        sha = sha256_file(txt)
        for args in (["info"], ["read", "k"], ["check"], ["list"], ["write", "k", "v"], ["compact"],
                     ["delete", "k"]):
            r = run(txt, *args)
            check(r.rc == 1 and one_line_error(r) and "notes.txt" in r.err,
                  "not a store: %s exits 1 with one line naming the file" % args[0], repr(r))
        check(sha256_file(txt) == sha, "a file that is not a store is never modified")
        r = run(txt, "info")
        check("not a simd-r-drive store" in r.err, "not a store: the cause is named", repr(r))

        # locked by another process
        with open(s, "rb+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = run(s, "write", "k", "v2")
            check(r.rc == 1 and "locked" in r.err and one_line_error(r),
                  "writing a store locked by another process exits 1 and says locked", repr(r))
            r = run(s, "read", "k")
            check(r.rc == 0 and r.out == b"v", "read-only commands work while another process holds the lock",
                  repr(r))
        check(read_value(s, "k").out == b"v", "locked write changed nothing")

        # damaged entry: check reports it by offset, nothing is modified
        c = os.path.join(d, "c.bin")
        run(c, "write", "good", "good value")
        run(c, "write", "bad", "this value will be damaged")
        run(c, "write", "tail", "last value")
        md = json.loads(run(c, "metadata", "bad", "--json").out)
        with open(c, "rb+") as f:
            f.seek(md["offset_range"]["start"] + 3)
            f.write(b"X")
        sha = sha256_file(c)
        r = run(c, "check")
        check(r.rc == 1 and b" at offset " in r.out and b"DAMAGED" in r.out,
              "check finds the damage and exits 1", repr(r))
        check(("at offset %d.." % md["prev_offset"]).encode() in r.out,
              "check reports the damaged entry's start offset (%d)" % md["prev_offset"], repr(r))
        cj = json.loads(run(c, "check", "--json").out)
        check(cj["sound"] is False and cj["bad_entries"] >= 1 and len(cj["issues"]) >= 1 and
              cj["issues"][0]["offset"] == md["prev_offset"] and
              cj["issues"][0]["problem"] in ("checksum", "corrupt"),
              "check --json lists the damage with its offset", repr(cj))
        r = run(c, "metadata", "bad")
        check(r.rc == 1 or b"CHECKSUM VALIDITY:        INVALID" in r.out,
              "metadata of the damaged entry is not reported VALID", repr(r))
        check(sha256_file(c) == sha, "check and metadata did not modify the damaged file")
        # One damaged entry is named by one range everywhere: check's, the
        # failed read's and the refused compaction's.
        where = ("at offset %d..%d" % (md["prev_offset"], md["entry_end"]))
        r_read, r_compact = run(c, "read", "bad"), run(c, "compact")
        check(r_read.rc != 0 and where in r_read.err and r_compact.rc != 0 and where in r_compact.err
              and where.encode() in run(c, "check").out,
              "check, read and compact name the damaged entry by the same offsets (%s)" % where,
              repr((r_read, r_compact)))
        check(sha256_file(c) == sha, "the refused compaction did not modify the damaged file")


# ---------------------------------------------------------------------------
# group: binary - byte-exact round trips through stdin/stdout
# ---------------------------------------------------------------------------

def group_binary():
    rnd = random.Random(int(os.environ.get("SIMDR_TEST_SEED", "12345")))
    print("seed %s" % os.environ.get("SIMDR_TEST_SEED", "12345"))
    with TempDir() as d:
        s = os.path.join(d, "b.bin")
        values = {
            "all-bytes": bytes(range(256)) * 4,
            "zeros-inside": b"\0\0\0a\0\0\0",
            "leading-zero": b"\0\x01",
            "trailing-newline": b"line\n",
            "crlf": b"a\r\nb\r\n",
            "ff": b"\xff" * 10,
            "one-byte": b"\x01",
            "big-random": rnd.randbytes(200 * 1024 + 17),
            "big-64k-boundary": rnd.randbytes(64 * 1024),
            "big-64k-plus-one": rnd.randbytes(64 * 1024 + 1),
            "big-zeros-then-one": b"\0" * (100 * 1024) + b"\x01",
        }
        for k, v in values.items():
            r = write_value(s, k, v)
            check(r.rc == 0, "stdin write of %s (%d bytes)" % (k, len(v)), repr(r))
        for k, v in values.items():
            for bs in (None, "1", "7", "4096", "64K", "1MB"):
                extra = [] if bs is None else ["--buffer-size", bs]
                r = read_value(s, k, *extra)
                check(r.rc == 0 and r.out == v, "byte-exact read of %s (%d bytes)%s" %
                      (k, len(v), "" if bs is None else " with buffer " + bs),
                      "rc=%d len=%d" % (r.rc, len(r.out)))
            md = json.loads(run(s, "metadata", k, "--json").out)
            check(md["payload_size"] == len(v) and md["checksum_valid"], "metadata size of %s" % k)
        # a value from a regular file on stdin (not a pipe)
        src = os.path.join(d, "src.dat")
        data = rnd.randbytes(300 * 1024)
        with open(src, "wb") as f:
            f.write(data)
        with open(src, "rb") as f:
            r = run(s, "write", "from-file", stdin=f)
        check(r.rc == 0 and read_value(s, "from-file").out == data, "stdin redirected from a regular file")
        # round trip through an export file too
        out = os.path.join(d, "out")
        r = run(s, "export", out, "big-random", "all-bytes")
        with open(os.path.join(out, "big-random"), "rb") as f:
            check(r.rc == 0 and f.read() == values["big-random"], "export writes the exact bytes")
        expect_ok(run(s, "check"), "store sound after binary writes")

        # a large stream in constant memory, read back by sha256
        mib = int(float(os.environ.get("SIMDR_TEST_SCALE", "1")) * 192)
        total = mib << 20
        chunk = rnd.randbytes(1 << 20)
        h = hashlib.sha256()
        for i in range(mib):
            h.update(bytes([i & 0xff]) + chunk[1:])

        def feed(pipe):
            try:
                for i in range(mib):
                    pipe.write(bytes([i & 0xff]) + chunk[1:])
                pipe.close()
            except BrokenPipeError:
                pass

        rc, _, err_b, anon = run_measured([s, "write", "huge"], feed=feed)
        check(rc == 0, "write of a %d MiB pipe exits 0" % mib, repr(err_b))
        # Anonymous memory (heap, buffers) is what must stay constant; file
        # pages mapped from the store are page cache the kernel can drop.
        limit = 48
        check(anon < limit, "write of a %d MiB pipe stays in constant memory (peak anonymous RSS %.1f MiB < %d)"
              % (mib, anon, limit))
        rh = hashlib.sha256()
        count = [0]

        def consume(pipe):
            for block in iter(lambda: pipe.read(1 << 20), b""):
                rh.update(block)
                count[0] += len(block)

        rc, _, err_b, anon = run_measured([s, "read", "huge"], consume=consume)
        check(rc == 0 and count[0] == total and rh.hexdigest() == h.hexdigest(),
              "read of the %d MiB value is byte-exact (sha256)" % mib, "rc=%d n=%d %r" % (rc, count[0], err_b))
        check(anon < limit, "read of a %d MiB value stays in constant memory (peak anonymous RSS %.1f MiB < %d)"
              % (mib, anon, limit))

        # closed pipe: the reader goes away after 10 bytes
        p = subprocess.Popen([CLI, s, "read", "huge"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = p.stdout.read(10)
        p.stdout.close()
        err_b = p.stderr.read()
        rc = p.wait(timeout=120)
        check(len(first) == 10 and rc == 0 and err_b == b"",
              "a closed stdout pipe ends read quietly with exit 0", "rc=%d err=%r" % (rc, err_b))
        # same through a shell pipeline with head
        r = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" "$1" read huge | head -c 5 >/dev/null',
                            CLI, s], capture_output=True)
        check(r.returncode == 0 and r.stderr == b"", "read | head -c 5 under pipefail exits 0, silent", repr(r))
        # a listing larger than a pipe buffer, so the reader really goes away
        tree = os.path.join(d, "many")
        os.makedirs(tree)
        for i in range(4000):
            with open(os.path.join(tree, "f%05d" % i), "wb") as f:
                f.write(b"v%d" % i)
        expect_ok(run(s, "-q", "import", tree), "import of 4000 small files")
        full = run(s, "list")
        check(len(full.out) > 64 * 1024, "listing is larger than a pipe buffer (%d bytes)" % len(full.out))
        r = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" "$1" list | head -n 1 >/dev/null',
                            CLI, s], capture_output=True)
        check(r.returncode == 0 and r.stderr == b"", "list | head -n 1 under pipefail exits 0, silent", repr(r))
        r = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" "$1" list --json | head -c 100 >/dev/null',
                            CLI, s], capture_output=True)
        check(r.returncode == 0 and r.stderr == b"", "list --json | head exits 0, silent", repr(r))


# ---------------------------------------------------------------------------
# group: readonly - read-only commands never create or modify a file
# ---------------------------------------------------------------------------

def group_readonly():
    with TempDir() as d:
        s = os.path.join(d, "s.bin")
        run(s, "write", "k", "value")
        run(s, "write", "k2", "other")
        run(s, "write", "k", "newer")
        run(s, "delete", "k2")
        out = os.path.join(d, "out")
        ro_cmds = [["read", "k"], ["info"], ["info", "--json"], ["metadata", "k"], ["metadata", "k", "--json"],
                   ["check"], ["check", "--json"], ["list"], ["list", "--json"], ["dump"],
                   ["export", out, "k"], ["read", "k2"], ["metadata", "missing"], ["copy", "k", os.path.join(d, "t.bin")]]
        sha = sha256_file(s)
        st = os.stat(s)
        side_before = {n: sha256_file(os.path.join(d, n)) for n in os.listdir(d)}
        for args in ro_cmds:
            run(s, *args)
            check(sha256_file(s) == sha, "%s leaves the store byte-identical (sha256)" % " ".join(args[:2]))
        st2 = os.stat(s)
        check(st.st_mtime_ns == st2.st_mtime_ns and st.st_size == st2.st_size,
              "read-only commands leave size and mtime unchanged")
        side_after = {n: sha256_file(os.path.join(d, n)) for n in os.listdir(d)
                      if n != "out" and not n.startswith("t.bin")}
        check(side_after == side_before, "read-only commands create, change or remove no file beside the store",
              repr((side_before, side_after)))
        # read-only commands work on a file without write permission (a read-only open)
        os.chmod(s, 0o444)
        r = run(s, "read", "k")
        check(r.rc == 0 and r.out == b"newer", "read works on a mode 0444 file", repr(r))
        os.chmod(s, 0o644)

        # missing file: error for read-only and existing-only commands, no file created
        m = os.path.join(d, "missing.bin")
        for args in (["read", "k"], ["info"], ["info", "--json"], ["metadata", "k"], ["check"], ["list"],
                     ["dump"], ["export", out, "k"], ["delete", "k"], ["rename", "a", "b"], ["compact"],
                     ["copy", "k", os.path.join(d, "t2.bin")], ["move", "k", os.path.join(d, "t3.bin")]):
            r = run(m, *args)
            check(r.rc == 1 and one_line_error(r) and "missing.bin" in r.err and "does not exist" in r.err,
                  "missing file: %s exits 1 naming the file" % args[0], repr(r))
            check(not os.path.exists(m), "missing file: %s does not create it" % args[0])
        check(not os.path.exists(os.path.join(d, "t2.bin")) and not os.path.exists(os.path.join(d, "t3.bin")),
              "copy/move from a missing store create no target")
        # writable commands create it
        r = run(m, "write", "k", "v")
        check(r.rc == 0 and os.path.exists(m), "write creates a missing store")

        # torn tail: read-only commands ignore it and never cut it
        t = os.path.join(d, "torn.bin")
        run(t, "write", "a", "first value")
        run(t, "write", "b", "second value")
        with open(t, "ab") as f:
            f.write(b"partial append that never finished")
        sha = sha256_file(t)
        r = run(t, "read", "a")
        check(r.rc == 0 and r.out == b"first value" and "torn" in r.err,
              "read of a torn file works and warns on stderr", repr(r))
        info = json.loads(run(t, "info", "--json").out)
        check(info["ignored_tail_bytes"] == 34 and info["active_entries"] == 2,
              "info --json reports the ignored torn tail", repr(info))
        r = run(t, "check")
        check(r.rc == 1 and b"UNREADABLE TAIL: 34 bytes" in r.out, "check reports a torn tail and exits 1", repr(r))
        check(b"BAD" not in r.out and b"0 bad entries, an unreadable tail: DAMAGED" in r.out and r.err == "",
              "check reports the torn tail once: not also as bad data, a bad entry or a note on stderr",
              repr(r))
        cj = json.loads(run(t, "check", "--json").out)
        check(cj["issues"] == [] and cj["bad_entries"] == 0 and cj["ignored_tail_bytes"] == 34
              and not cj["sound"], "check --json: the torn tail is ignored_tail_bytes only", repr(cj))
        r = run(t, "info")
        check(b"IGNORED TAIL:             34 bytes" in r.out and r.err == "",
              "info reports the torn tail once (no note on stderr)", repr(r))
        for args in (["read", "a"], ["info"], ["metadata", "b"], ["check"], ["list"]):
            run(t, *args)
        check(sha256_file(t) == sha, "read-only commands never cut a torn tail")
        r = run(t, "write", "c", "third")
        check(r.rc == 0 and "repaired" in r.err, "a writable command repairs the torn tail and says so", repr(r))
        expect_ok(run(t, "check"), "check exits 0 after the repair")
        check(read_value(t, "b").out == b"second value" and read_value(t, "c").out == b"third",
              "values intact after the repair")

        # a tail of zeros only (what a mapped or zeroed writer leaves at a
        # crash, or a length that reached the disk before its data): no
        # entry, so check calls the file sound and says what it saw; one
        # non-zero byte in it makes it a torn tail again
        z = os.path.join(d, "zeros.bin")
        run(z, "write", "a", "first value")
        run(z, "write", "b", "second value")
        size = os.path.getsize(z)
        with open(z, "ab") as f:
            f.write(bytes(65536))
        sha = sha256_file(z)
        r = run(z, "check")
        check(r.rc == 0 and b"ZERO TAIL: 65536 zero bytes" in r.out and b"OK" in r.out
              and r.err == "", "check: a tail of zeros is reported once, the file sound", repr(r))
        j = json.loads(run(z, "check", "--json").out)
        check(j["sound"] and j["zero_tail_bytes"] == 65536 and j["ignored_tail_bytes"] == 0,
              "check --json: zero_tail_bytes", repr(j))
        j = json.loads(run(z, "info", "--json").out)
        check(j["zero_tail_bytes"] == 65536 and j["ignored_tail_bytes"] == 0,
              "info --json counts a tail of zeros as check does", repr(j))
        r = run(z, "read", "a")
        check(r.rc == 0 and "zero bytes" in r.err, "other read-only commands note the zeros on stderr",
              repr(r))
        check(sha256_file(z) == sha, "check leaves the zeros where they are")
        flip_byte(z, size + 30000)
        r = run(z, "check")
        check(r.rc == 1 and b"UNREADABLE TAIL" in r.out and b"DAMAGED" in r.out,
              "check: a non-zero byte among the zeros is a torn tail", repr(r))
        flip_byte(z, size + 30000)
        r = run(z, "write", "c", "third")
        check(r.rc == 0 and os.path.getsize(z) < size + 200 and
              not [n for n in os.listdir(d) if n.startswith("zeros.bin.torn")],
              "a writable command cuts the zeros without saving them", repr(r))


# ---------------------------------------------------------------------------
# group: files - import and export
# ---------------------------------------------------------------------------

def group_files():
    rnd = random.Random(7)
    proc_dir = "/proc/sys/kernel/random"
    if os.path.exists(os.path.join(proc_dir, "boot_id")):
        # Files whose size says 0 but that have bytes (procfs, some FUSE
        # file systems) are not empty: their bytes are imported, as cp copies
        # them. Only a file that reads as nothing is skipped as empty.
        with TempDir() as d:
            s = os.path.join(d, "proc.bin")
            r = run(s, "import", proc_dir)
            with open(os.path.join(proc_dir, "boot_id"), "rb") as f:
                boot_id = f.read()
            check(r.rc == 0 and "empty" not in r.err, "import of %s: no file taken for empty" % proc_dir, repr(r))
            check(read_value(s, "boot_id").out == boot_id,
                  "a file of size 0 with bytes (procfs) is imported whole", repr(read_value(s, "boot_id")))
    with TempDir() as d:
        src = os.path.join(d, "tree")
        files = {
            "a.txt": b"alpha\n",
            "sub/b.bin": bytes(range(256)),
            "sub/deeper/c.dat": rnd.randbytes(150 * 1024),
            "sub/deeper/with space.txt": b"spaces are fine",
            "\u00e9t\u00e9/\u65e5\u672c.txt": "unicode path".encode(),
        }
        for rel, data in files.items():
            p = os.path.join(src, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        os.symlink("a.txt", os.path.join(src, "link-to-a"))
        s = os.path.join(d, "s.bin")
        r = run(s, "import", src)
        check(r.rc == 0 and "Imported 5 of 5" in r.err, "import stores every regular file (5)", repr(r))
        check("Skipped 1" in r.err, "import reports the skipped symlink", repr(r))
        check(r.out == b"", "import prints nothing on stdout")
        for rel, data in files.items():
            r = read_value(s, rel)
            check(r.rc == 0 and r.out == data, "imported key %r has the file's bytes" % rel)
        expect_rc(read_value(s, "link-to-a"), 1, "symlinks are not imported")
        check(json.loads(run(s, "info", "--json").out)["active_entries"] == 5, "import: 5 entries")

        # export everything back
        out = os.path.join(d, "out")
        r = run(s, "export", out, *files.keys())
        check(r.rc == 0 and "Exported 5 of 5" in r.err, "export exits 0", repr(r))
        for rel, data in files.items():
            with open(os.path.join(out, rel), "rb") as f:
                check(f.read() == data, "exported file %r matches" % rel)
        # export overwrites an existing file with the value
        with open(os.path.join(out, "a.txt"), "wb") as f:
            f.write(b"old content that is longer than the value")
        expect_ok(run(s, "export", out, "a.txt", "--force"), "export --force over an existing file")
        with open(os.path.join(out, "a.txt"), "rb") as f:
            check(f.read() == b"alpha\n", "export truncates and replaces an existing file")

        # export refuses unsafe keys before writing anything
        run(s, "write", "../escape", "x")
        run(s, "write", "/abs", "x")
        run(s, "write", "sub/../../up", "x")
        out2 = os.path.join(d, "out2")
        for key in ["../escape", "/abs", "sub/../../up", "..", "dir/", ""]:
            r = run(s, "export", out2, "a.txt", key)
            check(r.rc == 2 and "cannot be used as a file name" in r.err, "export refuses key %r (exit 2)" % key,
                  repr(r))
        check(not os.path.exists(out2), "refused export wrote nothing")
        check(not os.path.exists(os.path.join(d, "escape")) and not os.path.exists("/abs"), "nothing escaped")
        r = run(s, "--key-hex", "export", out2, b"a\0b".hex())
        check(r.rc == 2 and "zero byte" in r.err, "export refuses a key with a zero byte", repr(r))
        # --key-hex export of a normal key
        r = run(s, "--key-hex", "export", out2, b"sub/b.bin".hex())
        with open(os.path.join(out2, "sub", "b.bin"), "rb") as f:
            check(r.rc == 0 and f.read() == bytes(range(256)), "export with --key-hex")
        # missing key: others still exported, exit 1
        out3 = os.path.join(d, "out3")
        r = run(s, "export", out3, "a.txt", "no/such/key")
        check(r.rc == 1 and "not found" in r.err and os.path.exists(os.path.join(out3, "a.txt")),
              "export with a missing key exports the rest and exits 1", repr(r))
        r = run(s, "export", out3, "a.txt", "--buffer-size", "1", "--force")
        check(r.rc == 0, "export accepts --buffer-size", repr(r))

        # import: empty and all-zero files cannot be stored; the rest is imported, exit 1
        src2 = os.path.join(d, "tree2")
        os.makedirs(src2)
        for name, data in [("ok.txt", b"fine"), ("empty", b""), ("zeros", b"\0" * 100)]:
            with open(os.path.join(src2, name), "wb") as f:
                f.write(data)
        s2 = os.path.join(d, "s2.bin")
        r = run(s2, "import", src2)
        check(r.rc == 1 and "Imported 1 of 3" in r.err and "refused" in r.err,
              "import reports files that cannot be stored and exits 1", repr(r))
        check(read_value(s2, "ok.txt").out == b"fine", "the storable file was imported")
        expect_ok(run(s2, "check"), "store sound after refused imports")

        # import: the store inside the imported directory is skipped
        s3 = os.path.join(src2, "inside.bin")
        r = run(s3, "import", src2)
        check("Imported 1 of 3" in r.err, "import into a store inside DIR does not count the store", repr(r))
        expect_rc(read_value(s3, "inside.bin"), 1, "the store itself is not imported into itself")
        os.unlink(s3)

        # import errors
        expect_rc(run(s, "import", os.path.join(d, "nope")), 1, "import of a missing DIR exits 1", "nope")
        expect_rc(run(s, "import", os.path.join(src, "a.txt")), 1, "import of a file (not DIR) exits 1",
                  "not a directory")
        r = run(os.path.join(d, "never.bin"), "import", os.path.join(d, "nope"))
        check(r.rc == 1 and not os.path.exists(os.path.join(d, "never.bin")),
              "failed import of a missing DIR creates no store", repr(r))


# ---------------------------------------------------------------------------
# group: tty - behaviour that depends on terminals
# ---------------------------------------------------------------------------

def group_tty():
    with TempDir() as d:
        s = os.path.join(d, "s.bin")
        run(s, "write", "k", "value")
        rc, out, err, tty = run_pty([s, "read", "k"], stdout_tty=True)
        check(rc == 0 and tty.replace(b"\r\n", b"\n") == b"value\n",
              "read adds a newline only when stdout is a terminal", repr(tty))
        rc, out, err, tty = run_pty([s, "write", "k2"], stdin_tty=True)
        check(rc == 2 and b"terminal" in err and not tty, "write without VALUE on a terminal stdin is a usage error",
              repr((rc, err)))
        check(read_value(s, "k2").rc == 1, "nothing written when stdin was a terminal")
        big = os.urandom(9 << 20)
        rc, out, err, tty = run_pty([s, "write", "big"], stderr_tty=True, input=big)
        check(rc == 0 and b"write 'big'" in tty and b"\r" in tty and b"\033[K" in tty,
              "write of a 9 MiB pipe draws a progress line when stderr is a terminal", repr(tty[-300:]))
        rc, out, err, tty = run_pty([s, "read", "big"], stderr_tty=True)
        check(rc == 0 and out == big, "read with stderr on a terminal still writes exact bytes to stdout")
        check(b"read 'big'" in tty and b"100%" in tty and b"[" in tty,
              "read of a 9 MiB value draws a progress bar on a terminal", repr(tty[-300:]))
        check(not tty.replace(b"\033[K", b"").replace(b"\r", b"").endswith(b"%") or tty.endswith(b"\033[K"),
              "the progress line is erased at the end", repr(tty[-80:]))
        r = run(s, "read", "big")
        check(r.rc == 0 and r.err == "", "no progress output when stderr is not a terminal", repr(r.err[:200]))
        rc, out, err, tty = run_pty([s, "compact"], stderr_tty=True)
        check(rc == 0 and b"compacting" in tty, "compact shows activity on a terminal", repr(tty[-200:]))
        rc, out, err, tty = run_pty([s, "check"], stderr_tty=True)
        check(rc == 0 and b"checking" in tty and b"OK" in out, "check shows activity on a terminal", repr(tty[-200:]))
        r = run(s, "compact")
        check(r.rc == 0 and "\r" not in r.err and "\033" not in r.err, "compact without a terminal: no control chars",
              repr(r.err))
        r = run(s, "check")
        check(r.rc == 0 and r.err == "", "check without a terminal: silent stderr", repr(r.err))
        tree = os.path.join(d, "tree")
        os.makedirs(tree)
        for i in range(3):
            with open(os.path.join(tree, "f%d" % i), "wb") as f:
                f.write(os.urandom(4 << 20))
        rc, out, err, tty = run_pty([os.path.join(d, "i.bin"), "import", tree], stderr_tty=True)
        check(rc == 0 and b"import" in tty and b"%" in tty, "import of 12 MiB draws a progress bar", repr(tty[-300:]))
        r = run(os.path.join(d, "j.bin"), "import", tree)
        check(r.rc == 0 and "\r" not in r.err and "\033" not in r.err, "import without a terminal: no progress",
              repr(r.err))
        # A progress line wider than the terminal wraps, and the carriage
        # return of each redraw then goes back to its last row only: every
        # redraw would leave a row behind. Each line must fit the width.
        long_key = "holiday-photos-2024-from-the-big-camera.tar"
        for cols in (80, 40, 12):
            rc, out, err, tty = run_pty([s, "write", long_key], stderr_tty=True, input=big, cols=cols)
            # the drawn lines, not the messages (ending in a newline) after the bar
            lines = [l for l in tty.replace(b"\r\n", b"\n").split(b"\r\033[K") if l.strip() and b"\n" not in l]
            widest = max((len(l.decode("utf-8", "replace")) for l in lines), default=0)
            check(rc == 0 and lines and widest < cols,
                  "write's progress line fits a terminal %d columns wide" % cols,
                  "widest %d: %r" % (widest, lines[:2]))
            rc, out, err, tty = run_pty([s, "read", long_key], stderr_tty=True, cols=cols)
            lines = [l for l in tty.replace(b"\r\n", b"\n").split(b"\r\033[K") if l.strip() and b"\n" not in l]
            widest = max((len(l.decode("utf-8", "replace")) for l in lines), default=0)
            check(rc == 0 and out == big and lines and widest < cols,
                  "read's progress line fits a terminal %d columns wide" % cols,
                  "widest %d: %r" % (widest, lines[:2]))


# ---------------------------------------------------------------------------
# group: interop - files written by the Rust simd-r-drive
# ---------------------------------------------------------------------------

def check_manifest_values(store, m, label):
    bad = []
    for k in m["keys"]:
        r = run(store, "--key-hex", "read", k["key_hex"])
        if k["state"] == "present":
            if r.rc != 0:
                bad.append((k["key_hex"], "rc=%d %s" % (r.rc, r.err)))
            elif "value_hex" in k and r.out.hex() != k["value_hex"]:
                bad.append((k["key_hex"], "value differs"))
            elif "value_sha256" in k and hashlib.sha256(r.out).hexdigest() != k["value_sha256"]:
                bad.append((k["key_hex"], "sha256 differs"))
            elif len(r.out) != k["value_len"]:
                bad.append((k["key_hex"], "length differs"))
        else:
            if r.rc != 1 or "not found" not in r.err:
                bad.append((k["key_hex"], "deleted key readable: rc=%d" % r.rc))
    present = sum(1 for k in m["keys"] if k["state"] == "present")
    check(not bad, "%s: %d present values match the manifest, %d deleted keys absent" %
          (label, present, len(m["keys"]) - present), repr(bad[:5]))
    bad = []
    for k in m.get("absent_probe_keys", []):
        r = run(store, "--key-hex", "read", k["key_hex"])
        if r.rc != 1:
            bad.append(k["key_hex"])
    check(not bad, "%s: absent probe keys read as not found" % label, repr(bad))


def group_interop():
    if not INTEROP or not os.path.isdir(INTEROP):
        # A clone without the sibling shared/ folder: exit 77, reported by ctest as skipped.
        print("cli_interop: SKIPPED: the Rust-written interop files are not in %s (a clone without "
              "the sibling shared/ folder), pass -DSIMDR_INTEROP_DIR=DIR to run it" % INTEROP)
        sys.exit(77)
    index = json.load(open(os.path.join(INTEROP, "index.json")))
    check(len(index["files"]) >= 6, "interop index lists the Rust-written files")
    for entry in index["files"]:
        orig = os.path.join(INTEROP, entry["file"])
        m = json.load(open(os.path.join(INTEROP, entry["manifest"])))
        name = entry["file"]
        sha_before = sha256_file(orig)
        check(sha_before == m["file_sha256"], "%s: shipped file matches its manifest sha256" % name)
        expect_layout = "unaligned" if m["layout"].startswith("unaligned") else "aligned64"
        torn = m["valid_size_after_recovery"] != m["file_size"]

        # read-only commands run on the original (read-only on disk)
        r = run(orig, "info", "--json")
        expect_ok(r, "%s: info --json exits 0" % name)
        info = json.loads(r.out or b"{}")
        check(info.get("active_entries") == m["live_count"], "%s: active_entries == live_count (%d)"
              % (name, m["live_count"]), repr(info))
        check(info.get("total_size") == m["valid_size_after_recovery"], "%s: total_size == valid size (%d)"
              % (name, m["valid_size_after_recovery"]), repr(info))
        check(info.get("ignored_tail_bytes") == m["file_size"] - m["valid_size_after_recovery"],
              "%s: ignored_tail_bytes" % name, repr(info))
        check(info.get("layout") == expect_layout, "%s: layout detected as %s" % (name, expect_layout), repr(info))
        r = run(orig, "info")
        check(r.rc == 0 and ("ACTIVE ENTRIES:           %d" % m["live_count"]).encode() in r.out,
              "%s: info text" % name, repr(r))
        check_manifest_values(orig, m, name)
        present = {k["key_hash_xxh3"]: k for k in m["keys"] if k["state"] == "present"}
        listed = json.loads(run(orig, "list", "--json").out)
        check(sorted(e["key_hash"] for e in listed) == sorted(present),
              "%s: list --json shows exactly the present key hashes" % name)
        check(all(e["size"] == present[e["key_hash"]]["value_len"] for e in listed),
              "%s: list --json sizes match value_len" % name)
        bad = []
        for k in list(present.values())[:20]:
            md = json.loads(run(orig, "--key-hex", "metadata", k["key_hex"], "--json").out)
            if md["key_hash"] != k["key_hash_xxh3"] or md["payload_size"] != k["value_len"] or not md["checksum_valid"]:
                bad.append(md)
        check(not bad, "%s: metadata --json key_hash, payload_size, checksum_valid" % name, repr(bad[:2]))
        r = run(orig, "check")
        if torn:
            check(r.rc == 1 and b"UNREADABLE TAIL" in r.out, "%s: check reports the torn tail (exit 1)" % name, repr(r))
        else:
            check(r.rc == 0 and b"OK" in r.out, "%s: check says the file is sound" % name, repr(r))
        # copy reads the source read-only, so it works on the read-only original
        with TempDir() as d:
            first = list(present.values())[0]
            tgt = os.path.join(d, "target.bin")
            r = run(orig, "--key-hex", "copy", first["key_hex"], tgt)
            got = run(tgt, "--key-hex", "read", first["key_hex"]).out
            ok = ("value_hex" in first and got.hex() == first["value_hex"]) or \
                 ("value_sha256" in first and hashlib.sha256(got).hexdigest() == first["value_sha256"])
            check(r.rc == 0 and ok, "%s: copy from the read-only original into a new store" % name, repr(r))
        check(sha256_file(orig) == sha_before, "%s: read-only commands left the file byte-identical" % name)

        # writable commands on a copy
        with TempDir() as d:
            w = os.path.join(d, name)
            shutil.copyfile(orig, w)
            r = run(w, "write", "cli/new-key", "written by the C tool")
            check(r.rc == 0 and (("repaired" in r.err) == torn), "%s (copy): write exits 0%s" %
                  (name, ", repairing the torn tail" if torn else ""), repr(r))
            check(os.path.getsize(w) > m["valid_size_after_recovery"], "%s (copy): the write appended" % name)
            check(json.loads(run(w, "info", "--json").out)["layout"] == expect_layout,
                  "%s (copy): layout unchanged after a write" % name)
            expect_ok(run(w, "check"), "%s (copy): check sound after the write" % name)
            check_manifest_values(w, m, name + " (copy, after write)")
            pre = json.loads(run(w, "info", "--json").out)
            r = run(w, "compact")
            expect_ok(r, "%s (copy): compact exits 0" % name)
            post = json.loads(run(w, "info", "--json").out)
            check(post["total_size"] == pre["total_size"] - pre["compaction_savings"],
                  "%s (copy): compact removes exactly the estimated savings" % name, repr((pre, post)))
            check(post["active_entries"] == m["live_count"] + 1, "%s (copy): entries kept by compact" % name)
            check_manifest_values(w, m, name + " (copy, after compact)")
            check(read_value(w, "cli/new-key").out == b"written by the C tool", "%s (copy): new key after compact" % name)
            expect_ok(run(w, "check"), "%s (copy): check sound after compact" % name)
            # delete, rename and move on Rust data
            first = list(present.values())[0]
            second = list(present.values())[1]
            t = os.path.join(d, "moved.bin")
            expect_ok(run(w, "--key-hex", "move", first["key_hex"], t), "%s (copy): move a Rust-written key" % name)
            expect_rc(run(w, "--key-hex", "read", first["key_hex"]), 1, "%s (copy): moved key gone" % name)
            expect_ok(run(w, "--key-hex", "rename", second["key_hex"], b"renamed".hex()),
                      "%s (copy): rename a Rust-written key" % name)
            expect_ok(run(w, "delete", "renamed"), "%s (copy): delete the renamed key" % name)
            check(json.loads(run(w, "info", "--json").out)["active_entries"] == m["live_count"] - 1,
                  "%s (copy): counts after move, rename, delete" % name)


# ---------------------------------------------------------------------------
# group: damage - damaged bytes are never printed, exported or copied with a
# zero exit status; check reports on any damaged file without changing it
# ---------------------------------------------------------------------------

def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x20]))


def group_damage():
    with TempDir() as d:
        store = os.path.join(d, "s.bin")
        wrote = [run(store, "write", "k%d" % i, "value of k%d ........" % i).rc for i in range(50)]
        check(wrote == [0] * 50, "50 keys written")
        meta = json.loads(run(store, "metadata", "k5", "--json").out)
        flip_byte(store, meta["offset_range"]["start"] + 3)
        before = sha256_file(store)
        r = run(store, "read", "k5")
        expect_rc(r, 1, "read of a damaged value fails", "checksum")
        check(r.out == b"", "read of a damaged value prints none of its bytes", repr(r))
        r = run(store, "metadata", "k5", "--json")
        check(r.rc == 0 and json.loads(r.out)["checksum_valid"] is False,
              "metadata shows the damaged entry with checksum_valid false", repr(r))
        out = os.path.join(d, "out")
        r = run(store, "export", out, "k4", "k5")
        check(r.rc != 0, "export including a damaged value exits non-zero", repr(r))
        check(not os.path.exists(os.path.join(out, "k5")), "export writes no file for it")
        target = os.path.join(d, "t.bin")
        r = run(store, "copy", "k5", target)
        check(r.rc != 0, "copy of a damaged value fails", repr(r))
        r = run(store, "move", "k5", target)
        check(r.rc != 0, "move of a damaged value fails", repr(r))
        check(not os.path.exists(target) or run(target, "read", "k5").rc != 0,
              "the target holds no re-checksummed copy")
        expect_rc(run(store, "check"), 1, "check reports the damage")
        check(sha256_file(store) == before, "nothing changed the damaged file")
        r = run(store, "read", "k4")
        check(r.rc == 0 and r.out == b"value of k4 ........", "a sound key still reads", repr(r))
        # the way out: compaction refuses to copy the damaged value, so it
        # must be deletable (delete used to refuse: "store is damaged")
        expect_rc(run(store, "compact"), 1, "compact refuses the store with a damaged value")
        r = run(store, "delete", "k5")
        expect_ok(r, "delete removes the damaged value")
        expect_rc(run(store, "read", "k5"), 1, "... which is gone", "not found")
        check("k5" not in list_names(store)[0], "... its name with it")
        expect_ok(run(store, "compact"), "compact then succeeds")
        expect_ok(run(store, "check"), "... and the compacted store checks sound")
        r = run(store, "read", "k4")
        check(r.rc == 0 and r.out == b"value of k4 ........", "every other key still reads", repr(r))
        check(len(list_names(store)[0]) == 49, "... 49 named keys listed")

    # a lost page in the middle: check reports on the file (read-only), the
    # open's message names a sound prefix that is not empty
    with TempDir() as d:
        store = os.path.join(d, "s.bin")
        for i in range(300):
            run(store, "write", "k%d" % i, "value of k%d ........" % i)
        size = os.path.getsize(store)
        page = (size // 2) & ~4095
        with open(store, "r+b") as f:
            f.seek(page)
            f.write(bytes(4096))
        before = sha256_file(store)
        r = run(store, "check")
        check(r.rc == 1 and b"DAMAGED" in r.out, "check reports a store with a zeroed page", repr(r))
        r = run(store, "check", "--json")
        ok = r.rc == 1
        try:
            j = json.loads(r.out)
            ok = ok and j["sound"] is False and j["entries"] > 100
        except ValueError:
            ok = False
        check(ok, "check --json reports it, with the entries of the sound prefix", repr(r))
        r = run(store, "read", "k0")
        check(r.rc == 1 and "prefix is 0 bytes" not in r.err, "the refusal names a sound prefix",
              repr(r))
        check(sha256_file(store) == before, "neither check nor read changed the file")


# ---------------------------------------------------------------------------
# group: memory - streaming a large value out keeps the resident set bounded
# ---------------------------------------------------------------------------

def vm_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def stream_and_sample(argv, source, total, late=0.9):
    """Runs the CLI with argv, reads the value it streams from source (its
    stdout, or a FIFO it writes to) and samples the child's whole resident
    set (VmRSS: heap, stack and mapped file pages) once `late` of the value
    has gone through. Returns (rc, bytes, sha256, rss MiB late, peak MiB)."""
    p = subprocess.Popen([CLI] + argv, stdout=subprocess.PIPE if source is None else subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    f = p.stdout if source is None else open(source, "rb")
    h = hashlib.sha256()
    got, sampled = 0, -1.0
    for block in iter(lambda: f.read(1 << 20), b""):
        got += len(block)
        h.update(block)
        if sampled < 0 and got >= late * total:
            sampled = vm_rss_mib(p.pid)
    f.close()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, got, h.hexdigest(), sampled, usage.ru_maxrss / 1024.0


def group_memory():
    # The pages of a value already written out must leave the process: a
    # reader that keeps them holds the whole value resident (a 600 MB value
    # kept ~570 MB). Sampled late in the stream, the resident set holds only
    # what is not yet written (which opening the store may have read in) plus
    # a bounded window; a leak of consumed pages shows as the whole value.
    mib = 200
    total = mib << 20
    limit = mib * 0.1 + 64  # the unwritten tenth, plus the runtime (ASan's is ~30 MiB)
    with TempDir() as d:
        s = os.path.join(d, "m.bin")
        src = os.path.join(d, "value")
        chunk = random.Random(7).randbytes(1 << 20)
        want = hashlib.sha256()
        with open(src, "wb") as f:
            for i in range(mib):
                block = bytes([i & 0xff]) + chunk[1:]
                f.write(block)
                want.update(block)
        with open(src, "rb") as f:
            expect_ok(run(s, "write", "big", stdin=f), "write a %d MiB value from a file" % mib)
        os.unlink(src)
        expect_ok(run(s, "write", "after", "small"), "a small entry after it")

        rc, got, digest, late, peak = stream_and_sample([s, "read", "big"], None, total)
        check(rc == 0 and got == total and digest == want.hexdigest(),
              "read streams the %d MiB value byte-exact" % mib, "rc=%d bytes=%d" % (rc, got))
        check(0 <= late < limit,
              "read to a pipe: resident set at 90%% of a %d MiB value is %.1f MiB < %.0f MiB "
              "(peak over the whole run, opening included: %.1f MiB)" % (mib, late, limit, peak))

        rc, got, digest, late, peak = stream_and_sample([s, "read", "big", "--buffer-size", "4096"],
                                                        None, total)
        check(rc == 0 and got == total and 0 <= late < limit,
              "read with 4 KiB chunks: resident set at 90%% is %.1f MiB < %.0f MiB (peak %.1f MiB)"
              % (late, limit, peak))

        out = os.path.join(d, "out")
        os.makedirs(out)
        fifo = os.path.join(out, "big")
        os.mkfifo(fifo)
        rc, got, digest, late, peak = stream_and_sample([s, "-q", "--force", "export", out, "big"],
                                                        fifo, total)
        check(rc == 0 and got == total and digest == want.hexdigest(),
              "export streams the %d MiB value byte-exact" % mib, "rc=%d bytes=%d" % (rc, got))
        check(0 <= late < limit,
              "export: resident set at 90%% of a %d MiB value is %.1f MiB < %.0f MiB (peak %.1f MiB)"
              % (mib, late, limit, peak))


# ---------------------------------------------------------------------------
# group: names - key names kept for keys written through the tool
# ---------------------------------------------------------------------------

def list_names(store):
    """{key name: key hash} from list --json, and the number of rows."""
    r = run(store, "list", "--json")
    rows = json.loads(r.out) if r.rc == 0 else []
    return {e["key"]: e["key_hash"] for e in rows if "key" in e}, len(rows)


def append_tombstone(store, key_hash_hex):
    """Deletes a key the way another program would (the Rust crate, the Python
    binding): a tombstone appended after the store was closed, no name touched."""
    import zlib
    size = os.path.getsize(store)
    with open(store, "ab") as f:
        f.write(b"\x00" + struct.pack("<QQI", int(key_hash_hex, 16), size, zlib.crc32(b"\x00")))


def group_names():
    with TempDir() as d:
        # A name whose key another program deleted is kept by list and export
        # out of sight; compact drops it, or it would stay in the file for ever.
        s = os.path.join(d, "orphan.bin")
        expect_ok(run(s, "write", "gone", "value", "-q"), "write a key to be deleted elsewhere")
        expect_ok(run(s, "write", "kept", "value", "-q"), "and one that stays")
        meta = json.loads(run(s, "metadata", "gone", "--json").out)
        append_tombstone(s, meta["key_hash"])
        info = json.loads(run(s, "info", "--json").out)
        check(info["active_entries"] == 1 and info["name_records"] == 2 and info["named_entries"] == 1,
              "a key deleted by another program leaves its name record behind", repr(info))
        expect_ok(run(s, "compact", "-q"), "compact")
        info = json.loads(run(s, "info", "--json").out)
        check(info["name_records"] == 1 and info["named_entries"] == 1,
              "compact drops the name record of a key no longer stored", repr(info))
        names, n = list_names(s)
        check(list(names) == ["kept"] and n == 1, "... and keeps the names of live keys", repr(names))
        # A stored name that cannot be a file name is reported by its whole
        # bytes, escaped as list shows them: cut at a zero byte, 'a\x00b'
        # would read as the key 'a', which may well exist and export fine.
        s = os.path.join(d, "zero.bin")
        expect_ok(run(s, "--key-hex", "write", b"a\x00b".hex(), "v", "-q"), "write the key a\\x00b")
        r = run(s, "export", os.path.join(d, "zero-out"))
        check(r.rc == 1 and "key 'a\\x00b' cannot be used as a file name: contains a zero byte" in r.err,
              "export names a key with a zero byte in full, \\x00 escaped", repr(r))
        s = os.path.join(d, "n.bin")
        expect_ok(run(s, "write", "greeting", "hello"), "write a key")
        r = run(s, "list")
        check(r.rc == 0 and r.out.decode().split()[3:] == ["greeting"],
              "list shows the key's name beside its hash", repr(r))
        names, rows = list_names(s)
        check(list(names) == ["greeting"] and rows == 1,
              "list --json: one row with key 'greeting'; the name record itself is not listed", repr(names))
        check(read_value(s, "greeting").out == b"hello", "the value is untouched")
        meta = json.loads(run(s, "metadata", "greeting", "--json").out)
        check(meta["payload_size"] == 5, "the entry holds only the value (payload 5 bytes)", repr(meta))
        info = json.loads(run(s, "info", "--json").out)
        check(info["active_entries"] == 1 and info["named_entries"] == 1 and info["name_records"] == 1,
              "info counts values, not name records", repr(info))
        size = os.path.getsize(s)
        run(s, "write", "greeting", "hello again")
        info = json.loads(run(s, "info", "--json").out)
        check(info["name_records"] == 1 and os.path.getsize(s) - size < 128,
              "rewriting a key does not store its name again", repr(info))
        expect_ok(run(s, "check"), "a store with names is a sound simd-r-drive file")

        # a value that merely looks like a name record is a value
        fake = b"SDRKNAM1" + bytes(8) + b"x"
        expect_ok(write_value(s, "lookalike", fake), "write a value that begins with the name magic")
        names, rows = list_names(s)
        check("lookalike" in names and rows == 2, "a look-alike value is listed as a value", repr(names))
        check(read_value(s, "lookalike").out == fake, "and read back exactly")

        # import keeps names; export without keys restores the tree
        tree = os.path.join(d, "tree")
        files = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)), "sub/deeper/c": b"c" * 5000}
        for rel, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(tree, rel)), exist_ok=True)
            with open(os.path.join(tree, rel), "wb") as f:
                f.write(data)
        s2 = os.path.join(d, "i.bin")
        expect_ok(run(s2, "import", tree), "import a tree")
        names, rows = list_names(s2)
        check(sorted(names) == sorted(files) and rows == 3, "list shows every imported path", repr(names))
        out = os.path.join(d, "out")
        r = run(s2, "export", out)
        check(r.rc == 0 and "Exported 3 of 3 keys" in r.err, "export DIR without keys exports every name", repr(r))
        check(all(open(os.path.join(out, rel), "rb").read() == data for rel, data in files.items()),
              "exported files match the imported ones")

        # delete, rename, move carry the name
        expect_ok(run(s2, "delete", "a.txt"), "delete a named key")
        info = json.loads(run(s2, "info", "--json").out)
        check(info["name_records"] == 2 and info["active_entries"] == 2, "delete removes the name record too",
              repr(info))
        expect_ok(run(s2, "rename", "sub/b.bin", "b2"), "rename a named key")
        names, _ = list_names(s2)
        check(sorted(names) == ["b2", "sub/deeper/c"], "rename moves the name", repr(names))
        t = os.path.join(d, "t.bin")
        expect_ok(run(s2, "move", "b2", t), "move a named key")
        check(list(list_names(t)[0]) == ["b2"] and sorted(list_names(s2)[0]) == ["sub/deeper/c"],
              "move takes the name to the target")
        check(json.loads(run(s2, "info", "--json").out)["name_records"] == 1, "and removes it from the source")
        expect_ok(run(s2, "copy", "sub/deeper/c", t), "copy a named key")
        check(sorted(list_names(t)[0]) == ["b2", "sub/deeper/c"], "copy names the key in the target")

        # compaction keeps live names and drops the dead ones
        expect_ok(run(s2, "compact"), "compact")
        names, rows = list_names(s2)
        info = json.loads(run(s2, "info", "--json").out)
        check(list(names) == ["sub/deeper/c"] and rows == 1 and info["name_records"] == 1,
              "compaction keeps the live key's name", repr((names, info)))

        # an entry without a name (a key too long to name) is reported by export
        long_key = "k" * 70000
        expect_ok(run(s2, "write", long_key, "v"), "write a 70000-byte key (too long to keep a name)")
        out2 = os.path.join(d, "out2")
        r = run(s2, "export", out2)
        check(r.rc == 0 and "Exported 1 of 1 key " in r.err and "1 entry has no name" in r.err,
              "export without keys says how many entries have no name", repr(r))
        check("longer than 64 KiB" in r.err,
              "... and that a key too long to name is one reason, not only another program", repr(r))


# ---------------------------------------------------------------------------
# group: usability - first-hour frictions of the command line
# ---------------------------------------------------------------------------

def group_usability():
    with TempDir() as d:
        s = os.path.join(d, "u.bin")
        # import: an empty file is skipped with a warning, the rest imported, exit 0
        tree = os.path.join(d, "tree")
        os.makedirs(tree)
        for name, data in [("ok.txt", b"fine"), ("empty", b"")]:
            with open(os.path.join(tree, name), "wb") as f:
                f.write(data)
        r = run(s, "import", tree)
        check(r.rc == 0 and "skipping 'empty': empty file" in r.err and "Skipped 1 empty file " in r.err,
              "import skips an empty file with a warning, counts it, exits 0", repr(r))
        check(read_value(s, "ok.txt").out == b"fine", "the other file was imported")

        # export asks before overwriting
        out = os.path.join(d, "out")
        os.makedirs(out)
        target = os.path.join(out, "ok.txt")
        with open(target, "wb") as f:
            f.write(b"precious")
        r = run(s, "export", out, "ok.txt")
        check(r.rc == 1 and "exists; not overwritten (use --force" in r.err and
              open(target, "rb").read() == b"precious",
              "export without a terminal refuses to overwrite, exit 1", repr(r))
        rc, _, _, tty = run_pty([s, "export", out, "ok.txt"], stdin_tty=True, stderr_tty=True, typed=b"n\n")
        check(rc == 1 and b"overwrite" in tty and open(target, "rb").read() == b"precious",
              "export asks on a terminal; 'n' keeps the file", repr(tty))
        rc, _, _, tty = run_pty([s, "export", out, "ok.txt"], stdin_tty=True, stderr_tty=True, typed=b"y\n")
        check(rc == 0 and open(target, "rb").read() == b"fine", "'y' overwrites", repr(tty))
        with open(target, "wb") as f:
            f.write(b"precious")
        r = run(s, "export", out, "ok.txt", "--force")
        check(r.rc == 0 and open(target, "rb").read() == b"fine", "--force overwrites", repr(r))

        # per-command help
        for argv in (["read", "--help"], ["help", "read"], [s, "read", "--help"]):
            r = run(*argv)
            check(r.rc == 0 and r.out.startswith(b"Usage: simd-r-drive <storage-file> read KEY") and
                  b"--buffer-size" in r.out and b"import" not in r.out,
                  "%s prints the help of read alone" % " ".join(argv[-2:]), repr(r))
        expect_rc(run("help", "frobnicate"), 2, "help of an unknown command is a usage error")
        r = run("help", "help")
        check(r.rc == 0 and b"Commands:" in r.out, "help help prints the general help (help is listed as a command)", repr(r))
        r = run("help")
        check(r.rc == 0 and b"Commands:" in r.out, "help alone prints the general help")

        # errors say each thing once
        text = os.path.join(d, "notes.txt")
        with open(text, "w") as f:
            f.write("just some text, not a store\n" * 10)
        r = run(text, "info")
        check(r.rc == 1 and one_line_error(r) and r.err.count("not a simd-r-drive store") == 1 and
              r.err.count("notes.txt") == 1, "not-a-store error says it once", repr(r))
        r = run(os.path.join(d, "missing.bin"), "read", "k")
        check(r.rc == 1 and one_line_error(r) and r.err.count("missing.bin") == 1 and
              r.err.count("not exist") + r.err.count("no such") == 1, "missing-file error says it once", repr(r))
        cmds = [["read", "k"], ["write", "k", "v"], ["info"], ["list"], ["check"], ["delete", "k"],
                ["compact"], ["import", tree], ["export", out, "k"], ["copy", "k", s], ["metadata", "k"]]
        for args in cmds:
            r = run(d, *args)
            check(r.rc == 1 and one_line_error(r) and "it is a directory, not a store file" in r.err,
                  "a directory as the store: %s names it as such" % args[0], repr(r))
        nodir = os.path.join(d, "no-such-dir", "s.bin")
        for args in cmds:
            r = run(nodir, *args)
            check(r.rc == 1 and one_line_error(r) and "directory '%s' does not exist" % os.path.dirname(nodir) in r.err
                  and not os.path.exists(os.path.dirname(nodir)),
                  "a store in a missing directory: %s names the directory" % args[0], repr(r))

        # write's VALUE may start with '-'
        r = run(s, "write", "temp", "-5")
        check(r.rc == 0 and read_value(s, "temp").out == b"-5", "write temp -5 stores '-5'", repr(r))
        r = run(s, "write", "temp", "-5", "-q")
        check(r.rc == 0 and r.err == "", "a known option after the value is still an option", repr(r))
        expect_rc(run(s, "read", "--frob"), 2, "an unknown option elsewhere is still a usage error")

        # sizes with IEC units and B
        for size in ("1MiB", "4096B", "1KiB", "2kib", "1MB", "32K"):
            r = run(s, "read", "ok.txt", "--buffer-size", size)
            check(r.rc == 0 and r.out == b"fine", "--buffer-size %s accepted" % size, repr(r))
        for size in ("1XiB", "0B", "1iB", "1MiBs"):
            expect_rc(run(s, "read", "ok.txt", "--buffer-size", size), 2, "--buffer-size %s refused" % size)

        # failed commands leave nothing behind
        new = [os.path.join(d, "new%d.bin" % i) for i in range(4)]
        r = run(s, "copy", "missing-key", new[0])
        check(r.rc == 1 and "not found" in r.err and not os.path.exists(new[0]),
              "copy of a missing key creates no target file", repr(r))
        r = run(new[1], "write", "k", "")
        check(r.rc == 1 and "refused" in r.err and not os.path.exists(new[1]),
              "a refused empty write creates no store file", repr(r))
        r = run(new[2], "write", "k", input=b"\0" * 1000)
        check(r.rc == 1 and "refused" in r.err and not os.path.exists(new[2]),
              "a refused all-zero stream creates no store file", repr(r))
        zeros_tree = os.path.join(d, "zeros-only")
        os.makedirs(zeros_tree)
        with open(os.path.join(zeros_tree, "z"), "wb") as f:
            f.write(b"\0" * 10)
        r = run(new[3], "import", zeros_tree)
        check(r.rc == 1 and not os.path.exists(new[3]), "an import that stored nothing creates no store file",
              repr(r))

        # --layout unaligned for new stores
        un = os.path.join(d, "old.bin")
        expect_ok(run(un, "write", "a", "hello", "--layout", "unaligned"), "write --layout unaligned")
        expect_ok(run(un, "write", "b", "world"), "a second write keeps the file's layout")
        info = json.loads(run(un, "info", "--json").out)
        offsets = [e["offset"] for e in json.loads(run(un, "list", "--json").out)]
        check(info["layout"] == "unaligned" and any(o % 64 for o in offsets),
              "the new store is unaligned (payloads not on 64-byte offsets)", repr((info, offsets)))
        r = run(s, "write", "x", "y", "--layout", "unaligned")
        check(r.rc == 0 and "--layout unaligned ignored" in r.err, "--layout on an existing store is reported", repr(r))
        expect_rc(run(un, "write", "c", "d", "--layout", "diagonal"), 2, "an unknown layout is a usage error")
        # a key given twice to export is exported once (the second copy found
        # the first one's file and failed the export)
        r = run(un, "export", os.path.join(d, "twice"), "a", "a")
        check(r.rc == 0 and "Exported 1 of 1" in r.err
              and open(os.path.join(d, "twice", "a"), "rb").read() == b"hello",
              "export DIR a a exports 'a' once, exit 0", repr(r))
        # copy and move: --layout is the new target's; the source is not warned about
        for verb in ("copy", "move"):
            tgt = os.path.join(d, "%s-target.bin" % verb)
            r = run(s, verb, "x", tgt, "--layout", "unaligned")
            check(r.rc == 0 and "ignored" not in r.err
                  and json.loads(run(tgt, "info", "--json").out)["layout"] == "unaligned",
                  "%s --layout unaligned creates an unaligned target, no warning about the source" % verb,
                  repr(r))

        # wording: singular and plural
        zt = os.path.join(d, "ztree")
        os.makedirs(zt)
        with open(os.path.join(zt, "zeros"), "wb") as f:
            f.write(b"\0" * 100)
        r = run(s, "import", zt)
        check(r.rc == 1 and "1 file was not imported" in r.err, "'1 file was not imported'", repr(r))
        bad = os.path.join(d, "bad.bin")
        run(bad, "write", "k1", "a value long enough to damage")
        run(bad, "write", "k2", "another")
        data = bytearray(open(bad, "rb").read())
        data[3] ^= 0xff
        open(bad, "wb").write(bytes(data))
        r = run(bad, "check")
        check(r.rc == 1 and b" 1 bad entry:" in r.out, "check says '1 bad entry'", repr(r))

        # progress: compaction shows a percentage; a bar is erased before a
        # warning; a piped write shows no rate from its first instant
        big = os.path.join(d, "big.bin")
        for i in range(3):
            run(big, "write", "v%d" % i, input=os.urandom(4 << 20))
        run(big, "delete", "v0")
        rc, _, _, tty = run_pty([big, "compact"], stderr_tty=True)
        check(rc == 0 and b"compacting" in tty and b"%" in tty, "compact shows a percentage", repr(tty[-200:]))
        wt = os.path.join(d, "wtree")
        os.makedirs(wt)
        for i in range(3):
            with open(os.path.join(wt, "f%d" % i), "wb") as f:
                f.write(os.urandom(4 << 20))
        open(os.path.join(wt, "z-empty"), "wb").close()
        rc, _, _, tty = run_pty([os.path.join(d, "w.bin"), "import", wt], stderr_tty=True)
        at = tty.find(b"simd-r-drive: import: skipping")
        check(rc == 0 and b"%" in tty[:max(at, 0)] and at > 0 and
              (tty[:at].endswith(b"\033[K") or tty[:at].endswith(b"\n")),
              "a progress bar is erased before a warning line", repr(tty[max(at - 120, 0):at + 40]))
        rc, _, _, tty = run_pty([os.path.join(d, "p.bin"), "write", "piped"], stderr_tty=True,
                                input=os.urandom(9 << 20))
        check(rc == 0 and b"write 'piped'" in tty and b" 0 bytes/s" not in tty,
              "a piped write's progress does not start with a rate of 0 bytes/s", repr(tty[:200]))


# ---------------------------------------------------------------------------
# group: hostile - what an unfriendly caller or file tree does: closed
# standard streams, damage in the middle of a store, trees with odd entries
# ---------------------------------------------------------------------------

def run_sh(script, **env):
    """Runs a shell line with $C the CLI (for redirections like 2>&-)."""
    e = dict(os.environ, C=CLI, **env)
    p = subprocess.run(["/bin/sh", "-c", script], capture_output=True, env=e, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def group_hostile():
    with TempDir() as d:
        # closed standard streams: the store must not become fd 0, 1 or 2
        s = os.path.join(d, "std.bin")
        expect_ok(run(s, "write", "a", "first"), "std: a store to start from")
        r = run_sh('"$C" "$S" write k2 "value" 2>&-', S=s)
        check(r.rc == 0 and run(s, "check").rc == 0,
              "write with stderr closed leaves a sound store (its message is not written into it)", repr(r))
        check(read_value(s, "k2").out == b"value", "write with stderr closed stored the value")
        r = run_sh('"$C" "$S" write k3 <&-', S=s)
        check(r.rc == 1 and "Bad file descriptor" in r.err and "nothing was stored" in r.err,
              "write with stdin closed fails: reading standard input", repr(r))
        check(run(s, "check").rc == 0 and read_value(s, "k3").rc == 1,
              "write with stdin closed stores nothing and leaves the store sound")
        r = run_sh('"$C" "$S" read a >&-', S=s)
        check(r.rc == 1 and "standard output" in r.err, "read with stdout closed fails (exit 1)", repr(r))
        r = run_sh('"$C" "$S" delete a 2>&-; "$C" "$S" check', S=s)
        check(r.rc == 0, "delete with stderr closed leaves a sound store", repr(r))

        # a damaged value in the middle: list and export go on past it,
        # say so and exit 1
        s = os.path.join(d, "dmg.bin")
        for i in range(5):
            run(s, "write", "k%d" % i, "value number %d" % i)
        meta = json.loads(run(s, "metadata", "k2", "--json").out)
        flip_byte(s, meta["offset_range"]["start"] + 3)
        r = run(s, "list")
        names = sorted(line.split()[-1] for line in r.out.decode().splitlines())
        check(r.rc == 1 and names == ["k0", "k1", "k3", "k4"] and "damaged" in r.err,
              "list of a store damaged in the middle lists every sound key and exits 1", repr(r))
        r = run(s, "list", "--json")
        ok = r.rc == 1
        try:
            ok = ok and sorted(x["key"] for x in json.loads(r.out)) == ["k0", "k1", "k3", "k4"]
        except ValueError:
            ok = False
        check(ok, "list --json of it is valid JSON with every sound key, exit 1", repr(r))
        out = os.path.join(d, "dmg-out")
        r = run(s, "export", out)
        check(r.rc == 1 and "k2" in r.err and "Exported 4 of 5" in r.err and "no name" not in r.err,
              "export of every key reports the damaged one and exits 1", repr(r))
        check(sorted(os.listdir(out)) == ["k0", "k1", "k3", "k4"], "export wrote the sound keys")

    # a hostile tree: nothing but the regular files is opened (a FIFO would
    # hang the import), links are not followed, odd names are kept exactly
    with TempDir() as d:
        src = os.path.join(d, "tree")
        os.makedirs(os.path.join(src, "sub"))
        files = {b"a": b"alpha", b"sub/b": b"beta", b"new\nline": b"nl", b"ctl\x01\x1b[31m": b"ctl",
                 b"bad\xff\xfe": b"utf8", b"q\"uote\\": b"quote"}
        for rel, data in files.items():
            with open(os.path.join(os.fsencode(src), rel), "wb") as f:
                f.write(data)
        open(os.path.join(src, "empty"), "wb").close()
        os.mkfifo(os.path.join(src, "fifo"))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.path.join(src, "sock"))
        os.symlink("a", os.path.join(src, "link-file"))
        os.symlink("sub", os.path.join(src, "link-dir"))
        os.symlink("loop", os.path.join(src, "loop"))
        os.symlink("nowhere", os.path.join(src, "dangling"))
        os.symlink("/etc/passwd", os.path.join(src, "outside"))
        s = os.path.join(d, "s.bin")
        p = subprocess.run([CLI, s, "import", src], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        r = Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))
        check(r.rc == 0 and "Imported 6 of 7" in r.err and "Skipped 7 entries" in r.err
              and "skipping 'empty'" in r.err,
              "import of a tree with a FIFO, a socket, links and an empty file ends and counts them", repr(r))
        sock.close()
        for rel, data in files.items():
            r = run(s, "--key-hex", "read", rel.hex())
            check(r.rc == 0 and r.out == data, "hostile name %r imported exactly" % rel, repr(r))
        r = run(s, "list", "--json")
        try:
            keys = sorted(bytes.fromhex(x["key_hex"]) for x in json.loads(r.out))
        except ValueError:
            keys = None
        check(keys == sorted(files), "list --json with hostile names is valid JSON, key_hex exact", repr(r))
        r = run(s, "list")
        check(b"bad\\xff\\xfe" in r.out and b"ctl\\x01\\x1b[31m" in r.out and b"\xff" not in r.out,
              "list shows bytes that are not UTF-8 and control bytes as \\xNN", repr(r.out))
        run(s, "--key-hex", "write", b"c1\xc2\x9b".hex(), "v")
        r = run(s, "list")
        check(b"c1\\xc2\\x9b" in r.out, "list shows a C1 control (U+009B, CSI) as \\xNN", repr(r.out))
        r = run(s, "read", "bad\udcff")
        check(r.rc == 1 and "'bad\\xff' not found" in r.err, "messages quote bytes that are not UTF-8 as \\xNN",
              repr(r))
        run(s, "--key-hex", "delete", b"c1\xc2\x9b".hex())
        out = os.path.join(d, "out")
        r = run(s, "export", out)
        ok = r.rc == 0
        for rel, data in files.items():
            with open(os.path.join(os.fsencode(out), rel), "rb") as f:
                ok = ok and f.read() == data
        check(ok, "export writes the hostile names back exactly", repr(r))

        # deeper than PATH_MAX: imported and exported through descriptors
        deep = os.path.join(d, "deep")
        os.mkdir(deep)
        fd = os.open(deep, os.O_RDONLY)
        comp = "x" * 250
        for i in range(18):
            os.mkdir(comp, dir_fd=fd)
            nfd = os.open(comp, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        f = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"deep value")
        os.close(f)
        os.close(fd)
        s = os.path.join(d, "deep.bin")
        r = run(s, "import", deep)
        check(r.rc == 0 and "Imported 1 of 1" in r.err, "import of a path longer than PATH_MAX", repr(r)[:600])
        key = "/".join([comp] * 18 + ["leaf"])
        check(read_value(s, key).out == b"deep value", "its key is the whole relative path")
        r = run(s, "export", os.path.join(d, "deep-out"))
        check(r.rc == 0 and "Exported 1 of 1" in r.err, "export of a key longer than PATH_MAX", repr(r)[:600])

        # export: keys that cannot all be files, or would alias another key
        s = os.path.join(d, "x.bin")
        for k in ["a", "a/b"]:
            run(s, "write", k, "v:" + k)
        out = os.path.join(d, "xo")
        for extra in [[], ["--force"]]:
            r = run(s, "export", out, *extra)
            check(r.rc == 1 and "directory of that name is in the way" in r.err and "Exported 1 of 2" in r.err
                  and "--force" not in r.err.split("in the way")[0][-80:],
                  "export of keys 'a' and 'a/b' writes one, says the directory is in the way %s" % extra, repr(r))
        run(s, "write", "f", "file")
        r = run(s, "export", out, "f", "f/inner")
        for key in ["c//d", "e/./f", "./g", "g/."]:
            r = run(s, "export", out, key)
            check(r.rc == 2 and "cannot be used as a file name" in r.err,
                  "export refuses key %r, which would name another key's file" % key, repr(r))

        # export: a file size limit (ulimit -f) fails the export with exit 1
        # and leaves no truncated file; an existing file is not destroyed
        s = os.path.join(d, "big.bin")
        big = random.Random(3).randbytes(300 * 1024)
        run(s, "write", "big", input=big)
        out = os.path.join(d, "limited")
        os.makedirs(out)
        with open(os.path.join(out, "big"), "wb") as f:
            f.write(b"precious")
        p = subprocess.run([CLI, s, "export", out, "big", "--force"], capture_output=True,
                           stdin=subprocess.DEVNULL,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024)))
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 1 and "File too large" in err, "export past the file size limit fails, exit 1",
              "rc=%d %s" % (p.returncode, err))
        with open(os.path.join(out, "big"), "rb") as f:
            check(f.read() == b"precious", "the file it would have replaced is unchanged")
        check(os.listdir(out) == ["big"], "no partial or temporary file is left", repr(os.listdir(out)))

    # a file size limit (a full disk) met between a value and its name
    # record (appended after it): a write, move or rename stopped there said
    # it failed (exit 1) when the value was already stored, moved or renamed.
    # Swept across the limit: either it fails and nothing changed, or it
    # succeeds (exit 0), named, or saying that the name could not follow.
    def limited(*args, input=None):
        lim = LIMIT_KIB * 1024
        return subprocess.run([CLI] + list(args), input=input, capture_output=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim)))

    def names(store):
        return {e.get("key") for e in json.loads(run(store, "list", "--json").out)}

    def named_or_said(store, key, p):
        said = "its name could not be recorded" in p.stderr.decode()
        if said:
            unnamed_said.add(p.args[2])
        return key in names(store) or said

    LIMIT_KIB = 200
    pad = random.Random(5).randbytes(150_000)
    with TempDir() as d:
        outcomes = {"write": set(), "move": set(), "rename": set()}
        unnamed_said = set()
        s, t = os.path.join(d, "s.bin"), os.path.join(d, "t.bin")

        def sweep(what, padded, prepare, act, landed, stayed):
            """Each step: a fresh store padded near the limit, then prepare's
            value (sized from the room left) and the command act runs on it;
            it either did it (landed) or changed nothing (stayed)."""
            for step in range(0, 480, 16):
                for f in os.listdir(d):
                    os.unlink(os.path.join(d, f))
                run(padded, "write", "pad", input=pad)
                room = LIMIT_KIB * 1024 - os.path.getsize(padded)
                value = prepare(random.Random(step).randbytes(room - 400 + step))
                p = act(value)
                if p.returncode == 0:
                    check(landed(value, p), "a %s that succeeds under the limit did it (%d bytes)"
                          % (what, len(value)), p.stderr.decode())
                else:
                    check(stayed(value), "a %s that fails under the limit changed nothing (%d bytes)"
                          % (what, len(value)), p.stderr.decode())
                outcomes[what].add(p.returncode)

        def stored_as(key, value, store=s):
            run(store, "write", key, input=value)
            return value

        sweep("write", s, lambda v: v, lambda v: limited(s, "write", "new", input=v),
              lambda v, p: run(s, "read", "new").out == v and named_or_said(s, "new", p),
              lambda v: run(s, "read", "new").rc != 0)
        sweep("move", t, lambda v: stored_as("key", v), lambda v: limited(s, "move", "key", t),
              lambda v, p: (run(t, "read", "key").out == v and named_or_said(t, "key", p)
                            and run(s, "read", "key").rc != 0),
              lambda v: run(s, "read", "key").out == v and run(t, "read", "key").rc != 0)
        sweep("rename", s, lambda v: stored_as("old", v[:len(v) // 2]),
              lambda v: limited(s, "rename", "old", "new"),
              lambda v, p: (run(s, "read", "new").out == v and named_or_said(s, "new", p)
                            and run(s, "read", "old").rc != 0),
              lambda v: run(s, "read", "old").out == v and run(s, "read", "new").rc != 0)
        for what, rcs in outcomes.items():
            check(0 in rcs and len(rcs) > 1, "the %s sweep met the limit both ways" % what, repr(rcs))
        check({"write", "move"} <= unnamed_said,
              "the sweeps met a name that could not follow its value", repr(unnamed_said))

    # a store another process holds open for writing: every writable
    # command fails at once with one clear line; read-only ones still work
    with TempDir() as d:
        s = os.path.join(d, "locked.bin")
        run(s, "write", "a", "value")
        holder = subprocess.Popen([CLI, s, "write", "held"], stdin=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        holder.stdin.write(b"x")
        holder.stdin.flush()
        def holder_has_it_locked():
            ino = ":%d " % os.stat(s).st_ino
            with open("/proc/locks") as f:
                return any(" %d " % holder.pid in line and ino in line for line in f)
        for _ in range(3000):  # until the holder has locked the store for writing
            if holder_has_it_locked() or holder.poll() is not None:
                break
            time.sleep(0.01)
        check(holder_has_it_locked(), "a writer holds the store locked")
        for args in (["write", "b", "v"], ["delete", "a"], ["compact"], ["rename", "a", "c"]):
            r = run(s, *args)
            check(r.rc == 1 and r.err.count("locked by another process") == 1 and r.err.count("\n") == 1,
                  "%s on a store held by another writer: exit 1, one line saying so once" % args[0], repr(r))
        r = read_value(s, "a")
        check(r.rc == 0 and r.out == b"value", "read works while another process writes", repr(r))
        holder.stdin.close()
        holder.wait()

    # values one byte around the 64 KiB default buffer, read with chunk
    # sizes one byte around it
    with TempDir() as d:
        s = os.path.join(d, "buf.bin")
        rnd = random.Random(11)
        vals = {n: rnd.randbytes(n) for n in (65535, 65536, 65537, 131073)}
        for n, v in vals.items():
            check(run(s, "write", "v%d" % n, input=v).rc == 0, "write of %d bytes from a pipe" % n)
        bad = [(n, bs) for n, v in vals.items() for bs in (None, "65535", "65536", "65537")
               if read_value(s, "v%d" % n, *([] if bs is None else ["-b", bs])).out != v]
        check(bad == [], "reads around the buffer size are byte-exact", repr(bad))
        for bs in ("0", "-1", "1T", "18446744073709551616", "1.5K", "64KB2"):
            r = run(s, "read", "v65535", "--buffer-size", bs)
            check(r.rc == 2 and "invalid buffer size" in r.err and r.out == b"",
                  "--buffer-size %s is a usage error (exit 2)" % bs, repr(r))

    # SIGINT or SIGTERM while a value streams in: nothing half-stored, no
    # torn tail left for 'check' to call damage, and the process ends by the
    # signal (so a shell sees the interrupt)
    with TempDir() as d:
        s = os.path.join(d, "int.bin")
        run(s, "write", "a", "before")
        base = os.path.getsize(s)
        for sig in (signal.SIGINT, signal.SIGTERM):
            p = subprocess.Popen([CLI, s, "write", "big"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            p.stdin.write(os.urandom(1 << 20))
            p.stdin.flush()
            for _ in range(2000):  # until the value is being appended
                if os.path.getsize(s) > base:
                    break
                time.sleep(0.01)
            p.send_signal(sig)
            rc = p.wait()
            err = p.stderr.read().decode()
            p.stdin.close()
            p.stderr.close()
            check(rc == -sig and "interrupted (nothing was stored)" in err,
                  "write interrupted by %s says nothing was stored and ends by the signal" % sig.name,
                  "rc=%d %s" % (rc, err))
            r = run(s, "check")
            check(r.rc == 0 and os.path.getsize(s) == base and read_value(s, "big").rc == 1,
                  "after %s the store is sound and unchanged" % sig.name, repr(r))

    # a write that fails on a new store (file size limit, as a full disk)
    # leaves no file at all: neither the store nor its side file
    with TempDir() as d:
        sub = os.path.join(d, "new")
        os.makedirs(sub)
        p = subprocess.run([CLI, os.path.join(sub, "s.bin"), "write", "big"], capture_output=True,
                           input=random.Random(5).randbytes(300 * 1024),
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024)))
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 1 and "file size limit" in err, "write past the file size limit fails, exit 1",
              "rc=%d %s" % (p.returncode, err))
        check(os.listdir(sub) == [], "the failed write on a new store leaves no file behind", repr(os.listdir(sub)))

    # SIGINT during an export: the unfinished file is removed (its temporary
    # name too), the file it would replace is kept, the process ends by the
    # signal. One-byte chunks keep the export going until the test sees it.
    with TempDir() as d:
        s = os.path.join(d, "e.bin")
        run(s, "write", "big", input=random.Random(9).randbytes(8 << 20))
        run(s, "write", "small", "v")
        out = os.path.join(d, "out")
        os.makedirs(out)
        with open(os.path.join(out, "big"), "wb") as f:
            f.write(b"kept")
        p = subprocess.Popen([CLI, s, "export", out, "big", "small", "--force", "-b", "1"],
                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(3000):  # until the temporary file is being written
            if any(n.startswith(".simd-r-drive-export") for n in os.listdir(out)) or p.poll() is not None:
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGINT)
        rc = p.wait()
        err = p.stderr.read().decode()
        p.stderr.close()
        with open(os.path.join(out, "big"), "rb") as f:
            kept = f.read()
        check(rc == -signal.SIGINT and sorted(os.listdir(out)) == ["big"] and kept == b"kept",
              "export interrupted mid-file leaves the old file and no temporary or later file",
              "rc=%d files=%r kept=%r %s" % (rc, os.listdir(out), kept[:10], err))

    # unreadable entries (EACCES): reported, the rest imported, exit 1
    with TempDir() as d:
        os.chmod(d, 0o755)
        src = os.path.join(d, "tree")
        os.makedirs(os.path.join(src, "closed"))
        for rel in ["ok1", "closed/inner", "secret", "z-ok2"]:
            with open(os.path.join(src, rel), "wb") as f:
                f.write(b"v-" + rel.encode())
        os.chmod(os.path.join(src, "secret"), 0)
        os.chmod(os.path.join(src, "closed"), 0)
        s = os.path.join(d, "s.bin")
        open(s, "wb").close()
        os.chmod(s, 0o666)
        os.chmod(d, 0o777)

        def unprivileged():
            if os.getuid() == 0:
                os.setgid(65534)
                os.setgroups([])
                os.setuid(65534)
        # The user nobody may not reach the build tree (a clone in a private
        # folder): it runs a copy of the program from this folder.
        cli = os.path.join(d, "simd-r-drive")
        shutil.copy(CLI, cli)
        os.chmod(cli, 0o755)
        p = subprocess.run([cli, s, "import", src], capture_output=True, stdin=subprocess.DEVNULL,
                           preexec_fn=unprivileged)
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 1 and "cannot read directory 'closed'" in err and "cannot open 'secret'" in err,
              "import reports an unreadable directory and file and exits 1", "rc=%d %s" % (p.returncode, err))
        check(read_value(s, "ok1").rc == 0 and read_value(s, "z-ok2").rc == 0,
              "the readable files around them were imported")
        ro = os.path.join(d, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        p = subprocess.run([cli, s, "export", os.path.join(ro, "sub"), "ok1"], capture_output=True,
                           stdin=subprocess.DEVNULL, preexec_fn=unprivileged)
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 1 and "Permission denied" in err, "export into a read-only directory fails, exit 1",
              "rc=%d %s" % (p.returncode, err))
        os.chmod(os.path.join(src, "closed"), 0o755)

    with TempDir() as d:
        # "write KEY < STORE": the input grows with every chunk appended, so
        # the write used to run until the disk was full. Run under a 64 MiB
        # file size limit so that a regression fails here, not the disk.
        s = os.path.join(d, "self.bin")
        expect_ok(run(s, "write", "a", input=b"x" * 300000), "self: a store to start from")
        link = os.path.join(d, "link.bin")
        os.link(s, link)
        before = sha256_file(s)

        def limited():
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, resource.RLIM_INFINITY))
        for src, what in ((s, "the store file"), (link, "a hard link to the store file")):
            with open(src, "rb") as f:
                p = subprocess.run([CLI, s, "write", "k"], stdin=f, capture_output=True,
                                   preexec_fn=limited, timeout=300)
            err = p.stderr.decode("utf-8", "replace")
            check(p.returncode == 1 and "standard input is the store file itself" in err,
                  "write with %s as standard input is refused, exit 1" % what,
                  "rc=%d %s" % (p.returncode, err[-300:]))
            check(sha256_file(s) == before, "... and leaves the store byte for byte as it was")
        expect_rc(read_value(s, "k"), 1, "... nothing stored under the key")

    with TempDir() as d:
        # export is read-only: a key named like the store (or its side file
        # or hint) exported into the store's own directory, even with
        # --force, used to rename its value over the store and destroy it.
        s = os.path.join(d, "data.bin")
        expect_ok(run(s, "write", "data.bin", "a value, not a store"), "own: a key named like the store")
        expect_ok(run(s, "write", "data.bin.simdr", "a value, not a side file"), "own: one like its side file")
        expect_ok(run(s, "write", "other", "o"), "own: and another key")
        store_sum, side_sum = sha256_file(s), sha256_file(s + ".simdr")
        for args in (["export", d, "--force"], ["export", d + "/", "data.bin", "--force"],
                     ["export", ".", "--force"]):
            r = run(s, *args, cwd=d)
            check(r.rc == 1 and "it is the store file itself; not overwritten" in r.err,
                  "%s refuses to write over the store it reads, exit 1" % " ".join(args[2:] or args), repr(r))
            check(sha256_file(s) == store_sum and sha256_file(s + ".simdr") == side_sum,
                  "... the store and its side file are unchanged")
        r = run(s, "check")
        expect_ok(r, "... and the store checks sound")
        check(open(os.path.join(d, "other"), "rb").read() == b"o", "the other key was exported beside it")
        r = run(s, "export", d, "data.bin.simdr", "--force")
        check(r.rc == 1 and "it is the store's side file" in r.err, "export refuses to replace the side file", repr(r))
        out = os.path.join(d, "out")
        expect_ok(run(s, "export", out), "export into another directory writes all three")
        check(open(os.path.join(out, "data.bin"), "rb").read() == b"a value, not a store",
              "... the value named like the store among them")

        # standard streams left non-blocking by whoever started the tool
        # (O_NONBLOCK belongs to the shared description: node, some CI
        # runners): EAGAIN is a wait for data or room, not an error
        s = os.path.join(d, "nonblocking.bin")
        value = bytes(random.Random(5).getrandbits(8) for _ in range(300000))
        rfd, wfd = os.pipe()
        fcntl.fcntl(rfd, fcntl.F_SETFL, fcntl.fcntl(rfd, fcntl.F_GETFL) | os.O_NONBLOCK)
        p = subprocess.Popen([CLI, s, "write", "nb"], stdin=rfd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        os.close(rfd)
        try:
            for at in range(0, len(value), 100000):
                time.sleep(0.2)  # the tool finds the pipe empty meanwhile
                os.write(wfd, value[at:at + 100000])
        except BrokenPipeError:
            pass
        os.close(wfd)
        err = p.stderr.read().decode("utf-8", "replace")
        check(p.wait() == 0, "write from a non-blocking stdin pipe waits for its data", err)
        check(read_value(s, "nb").out == value, "... and stores all of it")
        rfd, wfd = os.pipe()
        fcntl.fcntl(wfd, fcntl.F_SETFL, fcntl.fcntl(wfd, fcntl.F_GETFL) | os.O_NONBLOCK)
        p = subprocess.Popen([CLI, s, "read", "nb"], stdin=subprocess.DEVNULL, stdout=wfd,
                             stderr=subprocess.PIPE)
        os.close(wfd)
        time.sleep(0.3)  # the pipe (64 KiB) is full long before the value is out
        got = b""
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            got += chunk
        os.close(rfd)
        err = p.stderr.read().decode("utf-8", "replace")
        check(p.wait() == 0 and got == value, "read into a non-blocking stdout pipe waits for room",
              "rc=%s err=%r got %d of %d bytes" % (p.returncode, err, len(got), len(value)))


# ---------------------------------------------------------------------------
# server: stores written by simdr-server (docs/FORMAT.md, "Server records")
# ---------------------------------------------------------------------------

def resp_command(sock, *args):
    """Sends one RESP command and returns the first line of its reply."""
    msg = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        msg += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(msg)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def server_write(directory, commands):
    """Runs simdr-server on a free loopback port over directory, sends each
    command, and stops it with SHUTDOWN (the store is synced and closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = os.path.join(directory, "server.log")
    proc = subprocess.Popen([SERVER, "--dir", directory, "--port", str(port), "--bind", "127.0.0.1",
                             "--logfile", log], stdin=subprocess.DEVNULL)
    ready = "ready on port %d " % port
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and ready in open(log, errors="replace").read():
            break
        time.sleep(0.05)
    replies = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            for cmd in commands:
                replies.append(resp_command(c, *cmd))
            resp_command(c, "SHUTDOWN")
    finally:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return replies


def server_record(key, value):
    return b"SR\x01\x00" + len(key).to_bytes(4, "little") + bytes(8) + key + value


def group_server():
    if not SERVER:
        check(False, "the server group needs --server PATH/simdr-server")
        return
    with TempDir() as d:
        replies = server_write(d, [("SET", "greeting", "hello"),
                                   ("SET", b"bin\x00\xffkey", "v"),
                                   ("SET", "ttl", "v", "PX", "100000000"),
                                   ("SET", "gone", "x"), ("DEL", "gone")])
        check(replies[:3] == [b"+OK\r\n"] * 3, "simdr-server stored three keys", repr(replies))
        store = os.path.join(d, "db-0.simdr")
        r = run(store, "list")
        expect_ok(r, "list of a store simdr-server wrote")
        lines = r.out.decode("utf-8", "replace").splitlines()
        check(len(lines) == 3, "... one line per live key", repr(r.out))
        check(any(l.endswith(" greeting") for l in lines), "... the key of a server record is its name",
              repr(r.out))
        check(any(l.endswith(" bin\\x00\\xffkey") for l in lines),
              "... a binary server key escaped as \\xNN", repr(r.out))
        check(any(l.endswith(" ttl") for l in lines), "... a key with an expiry named too", repr(r.out))
        r = run(store, "list", "--json")
        rows = json.loads(r.out) if r.rc == 0 else []
        by_key = {e.get("key"): e for e in rows}
        check(set(by_key) == {"greeting", "bin\u0000\ufffdkey", "ttl"} or
              {e.get("key_hex") for e in rows} == {b"greeting".hex(), b"bin\x00\xffkey".hex(), b"ttl".hex()},
              "list --json gives each server key with key_hex", repr(rows))
        check(all(e.get("name_source") == "server record" for e in rows),
              "... and says the name comes from the server record", repr(rows))
        # A value the tool writes is named by its own name record, and keeps that name.
        expect_ok(run(store, "write", "cli-key", "cli value", "-q"), "the tool writes into the server's store")
        names, n = list_names(store)
        check("cli-key" in names and "greeting" in names and n == 4,
              "... list names the tool's key and the server's keys", repr(names))
    with TempDir() as d:
        # A value that looks like the server record of another key is not taken
        # for one: the entry's key hash must be that key's slot hash. Keys over
        # 64 KiB get no name record, so nothing else names this entry.
        long_key = "k" * (65 * 1024)
        s = os.path.join(d, "foreign.bin")
        expect_ok(run(s, "write", long_key, "-q", input=server_record(b"impostor", b"value")),
                  "write a value shaped like a server record of another key")
        expect_ok(run(s, "write", long_key + "2", "-q",
                      input=server_record((long_key + "2").encode(), b"value")),
                  "write a value shaped like a server record of its own key")
        r = run(s, "list")
        lines = r.out.decode().splitlines()
        check(r.rc == 0 and len(lines) == 2, "list shows both entries", repr(r))
        check(not any("impostor" in l for l in lines),
              "... never the key a value merely claims", repr(r.out[:300]))
        check(sum(l.endswith(long_key + "2") for l in lines) == 1,
              "... a record whose key hashes to its entry is named", repr(r.out[:300]))


# ---------------------------------------------------------------------------
# fullfs: a file system with no space left (a small tmpfs, mounted when the
# test may mount one; ctest reports the group skipped otherwise)
# ---------------------------------------------------------------------------

def group_fullfs():
    if os.geteuid() != 0 or not shutil.which("mount"):
        print("skip: mounting a small tmpfs needs root")
        sys.exit(77)
    with TempDir() as d:
        mnt = os.path.join(d, "full")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                          capture_output=True).returncode != 0:
            print("skip: cannot mount a tmpfs here")
            sys.exit(77)
        try:
            with open(os.path.join(mnt, "filler"), "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            s = os.path.join(mnt, "new.bin")
            # A new store's side page used to be a hole written through a map:
            # on a full disk the first store into it raised SIGBUS.
            r = run(s, "write", "k", "v")
            check(r.rc == 1 and "no space" in r.err and one_line_error(r),
                  "write into a new store on a full disk: exit 1, one 'no space' line, no SIGBUS", repr(r))
            check(not os.path.exists(s) and not os.path.exists(s + ".simdr"),
                  "... and no file left behind", repr(os.listdir(mnt)))
            r = run(s, "write", "k", input=b"streamed value")
            check(r.rc == 1 and "no space" in r.err, "a streamed write likewise", repr(r))
            r = run(s, "import", d)
            check(r.rc == 1 and r.rc != -signal.SIGBUS, "import into a new store on a full disk fails cleanly",
                  repr(r))
            os.unlink(os.path.join(mnt, "filler"))
            expect_ok(run(s, "write", "k", "v", "-q"), "with space again, the same write works")
            check(read_value(s, "k").out == b"v", "... and reads back")
        finally:
            subprocess.run(["umount", mnt], capture_output=True)


# ---------------------------------------------------------------------------
# aslimit: an address-space limit (ulimit -v), as shared hosts and batch
# systems set; not under the sanitizers, whose shadow memory needs far more
# ---------------------------------------------------------------------------

def sanitized(binary):
    with open(binary, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data or b"__msan_init" in data


def group_aslimit():
    if sanitized(CLI):
        print("skip: a sanitizer's shadow memory does not fit an address-space limit")
        sys.exit(77)
    limit = 256 << 20

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def run_limited(*args, input=None):
        p = subprocess.run([CLI] + list(args), input=input, capture_output=True, preexec_fn=limited,
                           stdin=None if input is not None else subprocess.DEVNULL)
        return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))

    with TempDir() as d:
        s = os.path.join(d, "small.bin")
        # The store's map reserved 1 GiB of address space up front (so that it
        # never moves as the file grows): under `ulimit -v 262144` no store
        # could be opened at all, "out of memory (mmap of 101 bytes)".
        expect_ok(run_limited(s, "write", "k", "v"), "write under a 256 MiB address-space limit")
        r = run_limited(s, "read", "k")
        check(r.rc == 0 and r.out == b"v", "read under the limit", repr(r))
        expect_ok(run_limited(s, "write", "big", input=os.urandom(40 << 20)),
                  "a 40 MiB value streamed in under the limit (the file outgrows a smaller map)")
        for cmd in (["info"], ["list"], ["check"], ["compact"], ["metadata", "big"]):
            expect_ok(run_limited(s, *cmd), "%s under the limit" % cmd[0])
        r = run_limited(s, "read", "big")
        check(r.rc == 0 and len(r.out) == 40 << 20, "the 40 MiB value reads back under the limit",
              repr(r)[:200])


GROUPS = {
    "basic": group_basic,
    "damage": group_damage,
    "errors": group_errors,
    "binary": group_binary,
    "readonly": group_readonly,
    "files": group_files,
    "tty": group_tty,
    "interop": group_interop,
    "memory": group_memory,
    "names": group_names,
    "usability": group_usability,
    "hostile": group_hostile,
    "server": group_server,
    "fullfs": group_fullfs,
    "aslimit": group_aslimit,
}


def main():
    global CLI, INTEROP, SERVER
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--interop")
    ap.add_argument("--server", help="simdr-server, for the server group")
    ap.add_argument("--group", action="append", choices=sorted(GROUPS))
    a = ap.parse_args()
    CLI = os.path.abspath(a.cli)
    INTEROP = a.interop
    SERVER = a.server and os.path.abspath(a.server)
    for g in a.group or sorted(GROUPS):
        print("== group %s" % g)
        try:
            GROUPS[g]()
        except Exception:
            import traceback
            traceback.print_exc()
            check(False, "group %s ran to the end without an exception" % g)
    print("%d checks, %d failed" % (CHECKS, len(FAILURES)))
    for f in FAILURES:
        print("  failed: " + f)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
