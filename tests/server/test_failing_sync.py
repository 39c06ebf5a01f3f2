"""simdr-server when the disk fails its syncs: an LD_PRELOAD library
(failsync_shim.c) makes fsync/fdatasync fail with EIO while a flag file
exists, and store opens for writing too while another one does. A failed
sync fails the engine's handle, which then stops serving what no sync
confirmed; the server reopens the store (as a restart would) so that no
acknowledged write is hidden, refuses writes with MISCONF while the disk
fails, serves reads read-only when the store cannot be opened for writing,
and takes writes again once the disk works."""
import os
import shutil
import signal
import time

import pytest
import redis

from serverutil import Server, wait_until

SHIM = os.environ.get("SIMDR_FAILSYNC_SHIM", "")
MISCONF = "MISCONF Errors writing to the store file"


def shim_env(tmp_path):
    if not SHIM or not os.path.exists(SHIM):
        pytest.skip("SIMDR_FAILSYNC_SHIM not built: not counted as passed")
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"LD_PRELOAD": SHIM,
            "SIMDR_FAILSYNC_FLAG": str(tmp_path / "fail-sync"),
            "SIMDR_FAILOPEN_FLAG": str(tmp_path / "fail-open"),
            # the shim comes before the sanitizer's runtime in a sanitized build
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


refusals = {"MISCONF": 0}


def try_set(r, key, value):
    try:
        return r.set(key, value) is True
    except redis.ConnectionError:
        return False  # its turn's sync failed: not acknowledged
    except redis.ResponseError as e:
        assert str(e).startswith(MISCONF), str(e)
        refusals["MISCONF"] += 1
        return False


def check_all(r, acked):
    missing = [k for k, v in acked.items() if r.get(k) != v]
    assert not missing, "%d acknowledged keys not served: %r" % (len(missing), missing[:5])


@pytest.mark.parametrize("durability", ["everysec", "always"])
def test_failing_syncs_hide_nothing(tmp_path, durability):
    env = shim_env(tmp_path)
    fail_sync, fail_open = tmp_path / "fail-sync", tmp_path / "fail-open"
    srv = Server("--durability", durability, "--auto-compact-percent", "0", env=env,
                 keep_dir=True)  # the restart below reads its files
    with srv:
        r = srv.client()
        acked = {}
        for i in range(200):
            if try_set(r, "k%d" % i, "v%d" % i):
                acked[b"k%d" % i] = b"v%d" % i
        assert len(acked) == 200
        fail_sync.touch()
        # Writes go on until a sync fails (at once with always, within a
        # second with everysec); from then on MISCONF.
        deadline = time.time() + 30
        i = 200
        while r.info("persistence")["simdr_last_write_status"] == "ok":
            assert time.time() < deadline, "no sync failed"
            if try_set(r, "k%d" % i, "v%d" % i):
                acked[b"k%d" % i] = b"v%d" % i
            i += 1
            time.sleep(0.01)
        # Writes are refused with MISCONF (or, when tried after the refusal
        # window on a loaded machine, dropped with their turn): never taken.
        refusals["MISCONF"] = 0
        for _ in range(5):
            assert not try_set(r, "refused", "1")
        assert refusals["MISCONF"] > 0
        # Nothing acknowledged is hidden, now and while the failures go on
        # (every write that is tried fails the store again).
        for _ in range(3):
            check_all(r, acked)
            time.sleep(0.6)
            if try_set(r, "k%d" % i, "v%d" % i):
                acked[b"k%d" % i] = b"v%d" % i
            i += 1
        # The store cannot be opened for writing either: reads go on.
        fail_open.touch()
        time.sleep(1.2)
        try_set(r, "k%d" % i, "v%d" % i)  # fails the store once more
        i += 1
        time.sleep(0.3)
        check_all(r, acked)
        assert "read-only until" in srv.log()
        # The disk works again: within a retry period writes are taken.
        fail_open.unlink()
        fail_sync.unlink()
        deadline = time.time() + 30
        while not try_set(r, "after", "1"):
            assert time.time() < deadline, "writes never came back"
            time.sleep(0.2)
        acked[b"after"] = b"1"
        assert r.save() is True
        assert r.info("persistence")["simdr_last_write_status"] == "ok"
        check_all(r, acked)
        assert "reopened after a failed write or sync" in srv.log()
    # A restart over the same files serves the same.
    try:
        with Server("--durability", durability, data_dir=srv.dir, keep_dir=True) as again:
            check_all(again.client(), acked)
    finally:
        shutil.rmtree(srv.dir, ignore_errors=True)


def test_replica_whose_sync_fails_catches_up(tmp_path):
    """A replica's sync fails while its primary is written: its store is
    reopened, the link starts again from the reopened store's tail, and once
    the disk works the replica holds the primary's data byte for byte."""
    env = shim_env(tmp_path)
    fail_sync = tmp_path / "fail-sync"
    with Server("--auto-compact-percent", "0") as primary:
        replica = Server("--replicaof", "127.0.0.1", str(primary.port), "--durability",
                         "everysec", env=env)
        with replica:
            pc, rc = primary.client(), replica.client()
            expected = {}

            def write(lo, hi):
                for i in range(lo, hi):
                    pc.set("k%d" % i, "v%d" % i)
                    expected[b"k%d" % i] = b"v%d" % i

            write(0, 100)
            assert pc.execute_command("WAIT", 1, 20000) == 1
            fail_sync.touch()
            write(100, 200)
            # Its store cannot be reopened for writing while syncs fail (the
            # reopen syncs what the failed one left unconfirmed): read-only.
            wait_until(lambda: "read-only until it can be opened for writing" in replica.log(),
                       "the replica reopening its failed store")
            for k in list(expected)[:100]:  # what it had stays served
                assert rc.get(k) == expected[k]
            fail_sync.unlink()
            write(200, 300)
            wait_until(lambda: all(rc.get(k) == v for k, v in expected.items()),
                       "the replica catching up")
            assert "reopened after a failed write or sync" in replica.log()
            assert pc.execute_command("WAIT", 1, 20000) == 1
            # (without the zeros a running server under durability always
            # holds after its last record)
            with open(os.path.join(primary.dir, "db-0.simdr"), "rb") as f:
                want = f.read().rstrip(b"\0")
            with open(os.path.join(replica.dir, "db-0.simdr"), "rb") as f:
                assert f.read().rstrip(b"\0") == want


def test_a_shutdown_whose_last_sync_fails_exits_with_status_1(tmp_path):
    # The shutdown's last sync failing was logged per store and the server
    # exited 0: a supervisor could not tell a clean stop from one whose
    # last writes the disk had not confirmed.
    env = shim_env(tmp_path)
    srv = Server("--durability", "everysec", env=env)
    with srv:
        r = srv.client()
        assert r.set("k", "v")
        (tmp_path / "fail-sync").touch()
        assert r.set("k2", "v2")  # dirty: the shutdown's sync must cover it
        # SIGINT: the same orderly shutdown as SIGTERM, which the harness
        # requires to exit 0
        assert srv.stop(signal.SIGINT) == 1
        assert "the last sync failed" in srv.log()
