"""Durability always with --preallocate yes (the default): the stores append
into zeros written ahead of their last record, so a turn's fdatasync does not
commit a longer file. These tests check what a user can see of it: the store
file runs ahead of its records while the server writes durably, CONFIG SET
durability and CONFIG SET preallocate take the zeros away at once, a
shutdown cuts them, a kill -9 leaves them for the next start to cut, and no
acknowledged write is lost on the way."""
import os

from serverutil import Server


def db_file(server):
    return os.path.join(server.dir, "db-0.simdr")


def zeros_at_end(path, n=64 << 10):
    """True when the file ends with at least n zero bytes."""
    size = os.path.getsize(path)
    if size < n:
        return False
    with open(path, "rb") as f:
        f.seek(size - n)
        return f.read() == bytes(n)


def ends_with_record(path):
    """A store cut back to its records: its last 64 bytes are not all zero
    (they end with a record's metadata)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 64))
        return f.read().strip(b"\0") != b"" and os.path.getsize(path) < (1 << 20)


def write_keys(r, prefix, n):
    for i in range(n):
        assert r.set("%s-%d" % (prefix, i), "value-%d" % i)


def expect_keys(r, prefix, n):
    for i in range(n):
        assert r.get("%s-%d" % (prefix, i)) == b"value-%d" % i


def test_zeros_ahead_follow_the_configuration():
    with Server("--durability", "always") as s:
        r = s.client()
        assert r.config_get("preallocate") == {"preallocate": "yes"}
        write_keys(r, "a", 50)
        path = db_file(s)
        assert os.path.getsize(path) >= 1 << 20 and zeros_at_end(path)

        r.config_set("durability", "everysec")
        assert ends_with_record(path)
        write_keys(r, "b", 50)
        assert ends_with_record(path)

        r.config_set("durability", "always")
        write_keys(r, "c", 50)
        assert zeros_at_end(path)

        r.config_set("preallocate", "no")
        assert r.config_get("preallocate") == {"preallocate": "no"}
        assert ends_with_record(path)
        write_keys(r, "d", 50)
        assert ends_with_record(path)
        try:
            r.config_set("preallocate", "maybe")
            raise AssertionError("CONFIG SET preallocate maybe accepted")
        except Exception as e:  # redis.ResponseError
            assert "yes" in str(e) and "no" in str(e)
        r.config_set("preallocate", "yes")
        write_keys(r, "e", 50)
        assert zeros_at_end(path)
        for prefix in "abcde":
            expect_keys(r, prefix, 50)
        s.stop()
        assert ends_with_record(path)
        s.start()
        r = s.client()
        assert r.dbsize() == 250
        for prefix in "abcde":
            expect_keys(r, prefix, 50)


def test_kill9_with_zeros_ahead_loses_nothing():
    with Server("--durability", "always") as s:
        r = s.client()
        write_keys(r, "k", 300)
        path = db_file(s)
        assert zeros_at_end(path)
        s.kill9()
        assert zeros_at_end(path)
        s.start()
        r = s.client()
        assert r.dbsize() == 300
        expect_keys(r, "k", 300)
        # The log says what was cut: zeros, not a torn tail with an empty
        # "saved to" (it read as lost data).
        log = s.log()
        assert "bytes of zeros after the last entry" in log, log
        assert "torn tail" not in log, log
        # The next start cut the zeros; the store goes on appending.
        write_keys(r, "after", 10)
        expect_keys(r, "after", 10)


def test_preallocate_no_from_the_start():
    with Server("--durability", "always", "--preallocate", "no") as s:
        r = s.client()
        write_keys(r, "n", 50)
        assert ends_with_record(db_file(s))
        expect_keys(r, "n", 50)
