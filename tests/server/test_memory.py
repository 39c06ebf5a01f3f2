"""simdr-server's resident memory after a bulk load: the store file is the
data's home and only the index is meant to stay in memory, so the file's
pages an index growth mapped in (it reads every entry's metadata) are
unmapped again at the next tick; what a later GET reads maps back, and every
value is served. Resident bytes of the store file's mapping come from the
"Rss:" lines of /proc/PID/smaps; the wait allows for a loaded machine and
is not a timing assertion."""
import os

from serverutil import Server, wait_until

KEYS = 200000
VALUE = b"v" * 100


def store_file_resident(pid, path):
    """Bytes of path's mappings resident in process pid."""
    total, inside = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = len(head) >= 6 and head[5] == path
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


def test_bulk_load_leaves_the_store_file_unmapped():
    with Server() as srv:
        c = srv.client()
        pipe = c.pipeline(transaction=False)
        for i in range(KEYS):
            pipe.set(b"key:%09d" % i, VALUE + b"%d" % i)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        path = os.path.realpath(os.path.join(srv.dir, "db-0.simdr"))
        size = os.path.getsize(path)
        assert size > KEYS * len(VALUE)
        pid = srv.proc.pid
        try:
            wait_until(lambda: store_file_resident(pid, path) * 4 <= size,
                       "the store file's pages to leave the server's resident memory")
        except AssertionError:
            raise AssertionError("%d of the store file's %d bytes still resident; server log:\n%s"
                                 % (store_file_resident(pid, path), size, srv.log()))
        # GETs map what they read back in (the measure sees them; a tick
        # measuring the file's garbage may unmap them once more meanwhile,
        # hence passes until they stay), and every value is right.
        def read_every_key():
            for start in range(0, KEYS, 5000):
                got = c.mget([b"key:%09d" % i for i in range(start, start + 5000)])
                for i, value in zip(range(start, start + 5000), got):
                    assert value == VALUE + b"%d" % i, "key %d: %r" % (i, value)
            return store_file_resident(pid, path) * 2 > size
        wait_until(read_every_key, "GETs to map the store file's pages back in (%d of %d "
                   "bytes resident before them)" % (store_file_resident(pid, path), size))
