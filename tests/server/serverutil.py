"""Helpers of the simdr-server tests: free loopback ports, starting and
stopping simdr-server and Debian's redis-server, and a raw RESP client that
returns each reply's exact bytes (for byte-for-byte comparisons)."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SERVER_BIN = os.environ.get("SIMDR_SERVER_BIN", "")
# Options every Server gets besides its own (ctest runs some suites a second
# time with "--threads 2 ..." here, so they cover the I/O threads too).
EXTRA_ARGS = os.environ.get("SIMDR_SERVER_EXTRA_ARGS", "").split()
# Generous: the test machine may be heavily loaded; nothing here is a timing assertion.
START_TIMEOUT = 60.0
IO_TIMEOUT = 120.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=START_TIMEOUT, log_path=None, log_from=0):
    """Waits until proc listens on port. A free port can be taken by another
    test's server between free_port() and the bind (ctest runs tests in
    parallel): a connection alone could then reach that other server while
    ours fails to bind, so with log_path (simdr-server's --logfile) the
    server's own "ready on port N" line decides (read from offset log_from:
    a restarted server appends to the same log), and with a connection the
    process must still be running a moment after it."""
    deadline = time.time() + timeout
    ready = "ready on port %d " % port
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        if log_path is not None:
            try:
                with open(log_path) as f:
                    f.seek(log_from)
                    if ready in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        time.sleep(0.2)
        if proc.poll() is None:
            return
    raise RuntimeError("server did not listen on port %d" % port)


class Server:
    """A simdr-server on a free port over its own data directory."""

    def __init__(self, *args, data_dir=None, port=None, keep_dir=False, env=None,
                 preexec_fn=None):
        self.env = env  # extra environment variables of the server process
        self.preexec_fn = preexec_fn  # run in the server's process before exec (limits)
        self.own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="simdr-server-test-")
        self.keep_dir = keep_dir
        self.args = list(args)
        self.port = port
        self.proc = None
        self.log_path = os.path.join(self.dir, "server.log")

    def start(self):
        for _ in range(5):
            port = self.port or free_port()
            try:
                log_from = os.path.getsize(self.log_path)
            except OSError:
                log_from = 0
            cmd = [SERVER_BIN, "--dir", self.dir, "--port", str(port), "--bind", "127.0.0.1",
                   "--logfile", self.log_path] + EXTRA_ARGS + self.args
            env = dict(os.environ, **self.env) if self.env else None
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=env, preexec_fn=self.preexec_fn)
            try:
                wait_port(port, self.proc, log_path=self.log_path, log_from=log_from)
                self.port = port
                return self
            except RuntimeError:
                self.proc.kill()
                self.proc.wait()
                if self.port:
                    raise
        raise RuntimeError("could not start simdr-server: %s" % self.log())

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        err = b""
        if self.proc:
            err = self.proc.stderr.read()
            self.proc.stdout.close()
            self.proc.stderr.close()
        self.proc = None
        # A clean stop must exit 0: this is also where sanitizer reports
        # (leaks at exit, ...) of a sanitizer build become test failures.
        if sig == signal.SIGTERM and rc is not None and rc != 0:
            raise AssertionError("simdr-server exited with %s:\n%s" % (rc, err.decode(errors="replace")))
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own_dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def client(self, **kw):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=IO_TIMEOUT, **kw)

    def raw(self):
        return RawClient(self.port)


class RedisServer:
    """Debian's redis-server with persistence off, for differential tests."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="redis-ref-")
        self.proc = None
        self.port = None

    def __enter__(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not installed")
        for _ in range(5):
            port = free_port()
            self.proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                 "--enable-debug-command", "yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(port, self.proc)
                self.port = port
                return self
            except RuntimeError:
                self.proc.kill()
                self.proc.wait()
        raise RuntimeError("could not start redis-server")

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def raw(self):
        return RawClient(self.port)


def wait_until(pred, what, timeout=IO_TIMEOUT):
    """Polls pred every 50 ms until it holds; fails naming what after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RawClient:
    """A socket speaking RESP by hand; replies come back as their exact bytes."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self, pos):
        while True:
            i = self.buf.find(b"\r\n", pos)
            if i >= 0:
                return i
            self._fill()

    def _need(self, n):
        while len(self.buf) < n:
            self._fill()

    def _reply_end(self, pos):
        """Index just past the reply starting at pos."""
        self._need(pos + 1)
        t = self.buf[pos:pos + 1]
        e = self._line(pos)
        if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
            return e + 2
        if t in (b"$", b"=", b"!"):
            n = int(self.buf[pos + 1:e])
            if n < 0:
                return e + 2
            self._need(e + 2 + n + 2)
            return e + 2 + n + 2
        if t in (b"*", b"~", b">", b"%", b"|"):
            n = int(self.buf[pos + 1:e])
            if t in (b"%", b"|"):
                n *= 2
            p = e + 2
            for _ in range(max(n, 0)):
                p = self._reply_end(p)
            return p
        raise ValueError("bad reply type %r in %r" % (t, self.buf[pos:pos + 80]))

    def read_reply(self):
        end = self._reply_end(0)
        r, self.buf = self.buf[:end], self.buf[end:]
        return r

    def call(self, *args):
        self.send(encode(*args))
        return self.read_reply()

    def closed_by_peer(self, timeout=IO_TIMEOUT):
        """True when the server closes the connection (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
