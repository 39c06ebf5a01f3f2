"""simdr-server durability end to end: kill -9 during a write load, restart,
and every acknowledged write is there (durability no, everysec, always);
expiry survives a restart; SIGTERM and SHUTDOWN stop cleanly with the data
synced."""
import shutil
import signal
import threading
import time

import pytest

from serverutil import Server


@pytest.mark.parametrize("mode", ["no", "everysec", "always"])
def test_kill9_under_write_load_keeps_acknowledged_writes(mode):
    s = Server("--durability", mode, keep_dir=True)
    s.start()
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        r = s.client()
        i = 0
        try:
            while not stop.is_set():
                key, val = "w%d:%d" % (w, i), "value-%d-%d" % (w, i) * 3
                if w == 0 and i % 5 == 3:  # pipelined SETs: one batch append
                    p = r.pipeline(transaction=False)
                    batch = {"%s:p%d" % (key, j): val for j in range(19)}
                    batch[key] = val
                    for bk, bv in batch.items():
                        p.set(bk, bv)
                    p.execute()
                    with lock:
                        acked.update((bk, bv.encode()) for bk, bv in batch.items())
                elif i % 5 == 4:
                    r.mset({key: val, key + ":m": val})
                    with lock:
                        acked[key + ":m"] = val.encode()
                else:
                    r.set(key, val)
                with lock:
                    acked[key] = val.encode()
                i += 1
        except Exception:
            pass  # the server was killed under us

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while len(acked) < 2000 and time.time() < deadline:
        time.sleep(0.05)
    s.kill9()
    stop.set()
    for t in threads:
        t.join()
    with lock:
        snapshot = dict(acked)
    assert len(snapshot) >= 100
    s.start()
    r = s.client()
    keys = list(snapshot)
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        assert r.mget(chunk) == [snapshot[k] for k in chunk]
    r.close()
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


def test_expiry_survives_restart():
    s = Server(keep_dir=True)
    s.start()
    r = s.client()
    r.set("forever", "v")
    r.set("later", "v", exat=4102444800)
    r.set("soon", "v", px=300)
    r.close()
    assert s.stop() == 0
    time.sleep(0.5)
    s.start()
    r = s.client()
    assert r.get("forever") == b"v" and r.ttl("forever") == -1
    assert r.expiretime("later") == 4102444800
    assert r.get("soon") is None
    r.close()
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


def test_sigterm_and_shutdown_are_clean():
    s = Server("--durability", "no", keep_dir=True)
    s.start()
    r = s.client()
    for i in range(100):
        r.set("k%d" % i, i)
    r.close()
    assert s.stop(signal.SIGTERM) == 0
    assert "ready to exit" in s.log()
    s.start()
    c = s.raw()
    assert c.call("DBSIZE") == b":100\r\n"
    c.send(b"*1\r\n$8\r\nSHUTDOWN\r\n")
    assert c.closed_by_peer()
    assert s.proc.wait(timeout=120) == 0
    s.proc = None
    s.start()
    assert s.raw().call("GET", "k99") == b"$2\r\n99\r\n"
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)
