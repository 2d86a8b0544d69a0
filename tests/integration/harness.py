"""Shared helpers for the tcpgate integration tests.

Everything here runs on 127.0.0.1 only. Peers (echo, sink, ...) are small
thread-per-connection servers; the gateway is the real binary started with
subprocess. Every wait is bounded in time, every loop in count or time, and
every object has a stop()/close() that the tests register with addCleanup so
nothing outlives a failing test.

Environment (set by tests/CMakeLists.txt):
  TCPGATE_BIN       path to the tcpgate binary
  TCPGATE_SANITIZE  "1"/"ON"/... when the binary is built with ASan/UBSan
"""

import errno
import hashlib
import json
import os
import queue
import re
import select
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

HOST = "127.0.0.1"

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))

BIN = os.environ.get("TCPGATE_BIN") or os.path.join(_REPO, "build", "tcpgate")


def _truthy(value):
    return (value or "").strip().lower() in ("1", "on", "true", "yes", "y")


SANITIZE = _truthy(os.environ.get("TCPGATE_SANITIZE"))

# Text that means a sanitizer reported something on the gateway's stderr.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

MiB = 1024 * 1024


def _raise_fd_limit(want=8192):
    """500 concurrent relays need ~1000 descriptors here and in the gateway
    (which inherits the limit); raise the soft limit if it is lower."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


_raise_fd_limit()


# ---- small socket helpers ---------------------------------------------------


# Ports already handed out by this process: the kernel may offer a port again
# once it is closed, and a "dead" target that turns out to be a gateway's own
# listening or admin port makes a test fail for nothing.
_HANDED_OUT = set()


def free_ports(n):
    """n distinct free ports, none handed out before by this process."""
    socks, ports = [], []
    try:
        for _ in range(n * 20):  # bounded: a port seen before is drawn again
            if len(ports) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)  # kept bound, so the next draw differs
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
        if len(ports) < n:
            raise RuntimeError("no %d fresh free ports" % n)
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    return free_ports(1)[0]


def connect(port, timeout=10.0):
    return socket.create_connection((HOST, port), timeout=timeout)


def recv_exact(sock, n, timeout=30.0):
    """Reads exactly n bytes; fewer only if the peer closes first."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %d of %d bytes" % (len(buf), n))
        sock.settimeout(left)
        chunk = sock.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock, timeout=30.0, limit=64 * MiB):
    """Reads until the peer's FIN; fails on timeout or more than limit bytes."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no EOF within %.1f s (%d bytes read)" % (timeout, len(buf)))
        sock.settimeout(left)
        chunk = sock.recv(1 << 16)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise AssertionError("more than %d bytes before EOF" % limit)


def wait_closed(sock, timeout):
    """Waits for the peer to close, discarding data. Returns "eof" or "reset",
    or "open" if nothing happened within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "open"
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            return "open"
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return "reset"
        if not chunk:
            return "eof"


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred until it returns something true; returns that. Fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not within %.1f s" % (what, timeout))
        time.sleep(interval)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---- peers --------------------------------------------------------------------


class ThreadedServer:
    """A listener on 127.0.0.1 with one thread per accepted connection.

    Subclasses implement handle(conn, index). Results for the test go into
    self.results (a queue). Exceptions in handlers are kept in self.errors
    unless the server is stopping.
    """

    HANDLER_TIMEOUT = 60.0  # per blocking socket operation in a handler
    HANDLER_DEADLINE = 180.0  # for a whole connection

    def __init__(self, backlog=1024):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.results = queue.Queue()
        self.errors = []
        self.accepted = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._conns = set()
        self._threads = set()
        self._stopping = threading.Event()
        self._acceptor = None

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="%s-accept" % type(self).__name__)
        self._acceptor.start()
        return self

    def _accept_loop(self):
        self.sock.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(self.HANDLER_TIMEOUT)
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    break
                index = self.accepted
                self.accepted += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self._conns.add(conn)
                t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
                self._threads.add(t)
            t.start()

    def _run(self, conn, index):
        try:
            self.handle(conn, index)
        except Exception as e:  # noqa: BLE001 - reported to the test
            if not self._stopping.is_set():
                with self._lock:
                    self.errors.append("connection %d: %r" % (index, e))
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
                self.active -= 1
            conn.close()

    def active_connections(self):
        with self._lock:
            return self.active

    def handle(self, conn, index):
        raise NotImplementedError

    def chunks(self, conn):
        """Yields what conn receives until EOF, bounded by HANDLER_DEADLINE
        and by stop()."""
        deadline = time.monotonic() + self.HANDLER_DEADLINE
        while not self._stopping.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("handler ran longer than %d s" % self.HANDLER_DEADLINE)
            chunk = conn.recv(1 << 16)
            if not chunk:
                return
            yield chunk

    def drain(self, conn):
        """Reads until EOF; returns (length, sha256 hex)."""
        h = hashlib.sha256()
        total = 0
        for chunk in self.chunks(conn):
            h.update(chunk)
            total += len(chunk)
        return total, h.hexdigest()

    def stop(self):
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class EchoServer(ThreadedServer):
    """Echoes everything; passes the client's FIN back once all is echoed.
    Puts (index, bytes_echoed) in results."""

    def handle(self, conn, index):
        total = 0
        for chunk in self.chunks(conn):
            conn.sendall(chunk)
            total += len(chunk)
        conn.shutdown(socket.SHUT_WR)
        self.results.put((index, total))


class SinkServer(ThreadedServer):
    """Reads and discards until EOF; puts (index, length, sha256) in results."""

    def handle(self, conn, index):
        total, digest = self.drain(conn)
        self.results.put((index, total, digest))


class SendThenHalfCloseServer(ThreadedServer):
    """Sends payload, shuts its write side, then reads until EOF and puts
    (index, length, sha256) of what it received in results."""

    def __init__(self, payload, **kw):
        super().__init__(**kw)
        self.payload = payload

    def handle(self, conn, index):
        view = memoryview(self.payload)
        for off in range(0, len(view), MiB):
            conn.sendall(view[off:off + MiB])
        conn.shutdown(socket.SHUT_WR)
        total, digest = self.drain(conn)
        self.results.put((index, total, digest))


class HashReplyServer(ThreadedServer):
    """Reads until EOF, then replies b"<length> <sha256hex>\\n" and closes."""

    def handle(self, conn, index):
        total, digest = self.drain(conn)
        conn.sendall(b"%d %s\n" % (total, digest.encode()))
        self.results.put((index, total, digest))


class NameServer(ThreadedServer):
    """Sends its name and a newline on accept, then closes."""

    def __init__(self, name, **kw):
        super().__init__(**kw)
        self.name = name

    def handle(self, conn, index):
        conn.sendall(self.name.encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        # Wait for the other side to finish so the close is an orderly one.
        self.drain(conn)


class ResetServer(ThreadedServer):
    """Reads `after` bytes, then resets the connection (close with SO_LINGER 0)."""

    def __init__(self, after=1, **kw):
        super().__init__(**kw)
        self.after = after

    def handle(self, conn, index):
        got = 0
        for _ in range(self.after):
            chunk = conn.recv(self.after - got)
            if not chunk:
                break
            got += len(chunk)
            if got >= self.after:
                break
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.results.put((index, got))
        # _run closes the socket: with linger 0 that sends an RST.


class BlastServer(ThreadedServer):
    """Sends `total` bytes as fast as the peer takes them, then closes.
    Puts (index, bytes_sent) in results."""

    def __init__(self, total, chunk=MiB, **kw):
        super().__init__(**kw)
        self.total = total
        self.block = os.urandom(chunk)

    def handle(self, conn, index):
        sent = 0
        while sent < self.total and not self._stopping.is_set():
            n = min(len(self.block), self.total - sent)
            conn.sendall(self.block[:n])
            sent += n
        conn.shutdown(socket.SHUT_WR)
        self.results.put((index, sent))


class BlackholeListener:
    """A port whose connects neither succeed nor fail: a listener with backlog 0
    whose accept queue is kept full, so the kernel drops further SYNs. Used to
    make the gateway's upstream connect time out while staying on loopback.
    start() raises unittest.SkipTest if the kernel does not behave that way."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self._fillers = []

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def _probe(self, wait):
        """Starts a connect; True if it completed (or failed) within wait."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        self._fillers.append(s)
        s.connect_ex((HOST, self.port))
        _, w, _ = select.select([], [s], [], wait)
        return bool(w)

    def start(self):
        for _ in range(8):
            if not self._probe(0.3):
                return self  # this connect hangs: the queue is full
        self.stop()
        raise unittest.SkipTest("cannot make a loopback connect hang (accept queue not full)")

    def stop(self):
        for s in self._fillers:
            s.close()
        self._fillers = []
        self.sock.close()


# ---- the gateway --------------------------------------------------------------


def metric_key(name, **labels):
    """The key of one sample in Gateway.metrics(): 'tcpgate_NAME{k="v",...}',
    labels in the order given (the gateway's order: api_id, target; port,
    reason)."""
    if not labels:
        return "tcpgate_" + name
    return "tcpgate_%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))


def definition(api_id, port, target=None, targets=None, ext=None, **extra):
    """A Tyk classic TCP definition; targets (a list) enables load balancing."""
    proxy = {}
    if targets is not None:
        proxy["enable_load_balancing"] = True
        proxy["target_list"] = list(targets)
    else:
        proxy["target_url"] = target
    d = {"api_id": api_id, "name": api_id, "listen_port": port, "protocol": "tcp",
         "proxy": proxy}
    if ext:
        d["tcpgate"] = dict(ext)
    d.update(extra)
    return d


_KV = re.compile(r"(\w+)=(\S*)")


def _kv(text):
    return dict(_KV.findall(text))


class Gateway:
    """One tcpgate process with its own definitions folder.

    gw = Gateway(); gw.add(definition(...)); gw.start(); ...; rc = gw.stop()
    close() (registered as cleanup) kills the process if it still runs and
    removes the temporary folder.
    """

    def __init__(self, workers=2, config=None, log_level="info", extra_args=(), env=None,
                 max_fds=None):
        self.workers = workers
        self.max_fds = max_fds  # RLIMIT_NOFILE for the gateway process
        # Every gateway gets its own admin port: the default one (9696) would
        # be shared by the tests and by a gateway someone runs by hand.
        self.admin_port = None
        if config is None:
            config = {}
        if isinstance(config, dict) and "control_api_port" not in config:
            config = dict(config, control_api_port=free_port())
        if isinstance(config, dict):
            self.admin_port = config["control_api_port"]
        self.config = config
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.env = env
        self._tmp = tempfile.TemporaryDirectory(prefix="tcpgate-it-")
        self.dir = self._tmp.name
        self.apps = os.path.join(self.dir, "apps")
        os.mkdir(self.apps)
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.config_path = None
        self.proc = None
        self._files = []
        self._sanitizer_checked = False

    # definitions and config

    def add(self, definition_, name=None):
        """Writes a definition (dict, or raw text with a name) into the folder."""
        if isinstance(definition_, dict):
            text = json.dumps(definition_, indent=2)
            name = name or "%s.json" % definition_["api_id"]
        else:
            text = definition_
            if name is None:
                raise ValueError("raw definitions need a file name")
        path = os.path.join(self.apps, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def command(self):
        args = [BIN, "--apps", self.apps, "--log-level", self.log_level]
        if self.workers is not None:
            args += ["--workers", str(self.workers)]
        if self.config is not None:
            self.config_path = os.path.join(self.dir, "gateway.json")
            with open(self.config_path, "w") as f:
                f.write(json.dumps(self.config) if isinstance(self.config, dict) else self.config)
            args += ["--config", self.config_path]
        return args + self.extra_args

    # process

    def start(self, timeout=10.0):
        env = dict(os.environ)
        if SANITIZE:
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        if self.env:
            env.update(self.env)
        err = open(self.log_path, "ab")
        out = open(self.out_path, "wb")
        self._files += [err, out]
        preexec = None
        if self.max_fds is not None:
            import resource

            def preexec(n=self.max_fds):
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=err, env=env, preexec_fn=preexec)
        self.wait_for_log(r" started: ", timeout=timeout)
        return self

    def admin(self, path, secret=None, timeout=10.0):
        """GET on the admin API: (status, headers dict, body bytes)."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            headers = {"x-tyk-authorization": secret} if secret is not None else {}
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def admin_json(self, path, secret=None):
        status, _, body = self.admin(path, secret)
        if status != 200:
            raise AssertionError("GET %s: %d %s" % (path, status, body[:300]))
        return json.loads(body)

    def metrics(self, secret=None):
        """The Prometheus text as {name{labels}: value}."""
        status, _, body = self.admin("/metrics", secret)
        if status != 200:
            raise AssertionError("GET /metrics: %d %s" % (status, body[:300]))
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def wait_metrics(self, want, secret=None, timeout=5.0):
        """Polls /metrics until every key of want ({key: value}, or
        {key: predicate}) holds; returns the last metrics dict. Fails with
        the values that did not hold after timeout. Counters are summed from
        the workers when read, so a value may trail the event by a moment."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics(secret)
            bad = {}
            for key, expect in want.items():
                value = m.get(key)
                ok = expect(value) if callable(expect) else value == expect
                if not ok:
                    bad[key] = value
            if not bad:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("metrics after %.1f s: %r (wanted %r)"
                                     % (timeout, bad, {k: want[k] for k in bad}))
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout=10.0):
        """Waits for exit; returns the exit code. Fails (and kills) on timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("tcpgate did not exit within %.1f s; log:\n%s"
                                 % (timeout, self.log_tail()))
        self.check_sanitizers()
        return rc

    def stop(self, timeout=10.0):
        """SIGTERM, then waits (bounded) for exit; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self):
        """Cleanup: kills a still-running process, checks stderr, removes files."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            elif self.proc is not None and not self._sanitizer_checked:
                self.check_sanitizers()
        finally:
            for f in self._files:
                f.close()
            self._files = []
            self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_sanitizers(self):
        self._sanitizer_checked = True
        text = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise AssertionError("sanitizer report (%r) on tcpgate's stderr:\n%s"
                                     % (marker, text[-12000:]))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.proc.pid)

    # log

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        text = self.log()
        lines = text.split("\n")
        return lines[:-1]  # only complete lines

    def log_tail(self, n=60):
        return "\n".join(self.log_lines()[-n:])

    def wait_for_log(self, pattern, timeout=10.0, count=1):
        """Waits until `count` lines match the regex; returns the matching lines."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [l for l in self.log_lines() if rx.search(l)]
            if len(found) >= count:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                found = [l for l in self.log_lines() if rx.search(l)]
                if len(found) >= count:
                    return found
                raise AssertionError("tcpgate exited (code %s) before logging %r; log:\n%s"
                                     % (self.proc.returncode, pattern, self.log_tail()))
            if time.monotonic() >= deadline:
                raise AssertionError("no %d log line(s) matching %r within %.1f s; log:\n%s"
                                     % (count, pattern, timeout, self.log_tail()))
            time.sleep(0.02)

    def conns(self, api_id=None):
        """The per-connection lines as dicts (client, api_id, target, rx, tx, end, ...)."""
        out = []
        for line in self.log_lines():
            m = re.search(r" info\s+conn (client=.*)$", line)
            if m:
                d = _kv(m.group(1))
                if api_id is None or d.get("api_id") == api_id:
                    out.append(d)
        return out

    def stats(self, api_id):
        """The exit stats line of api_id as a dict of ints."""
        for line in self.log_lines():
            m = re.search(r" stats api_id=(\S+) (.*)$", line)
            if m and m.group(1) == api_id:
                return {k: int(v) for k, v in _kv(m.group(2)).items()}
        raise AssertionError("no stats line for api_id=%s; log:\n%s" % (api_id, self.log_tail()))

    def port_stats(self, port):
        """The exit stats line of a listening port as a dict of ints
        (no_route, tls_handshakes, tls_resumed, sni_not_found, ...)."""
        for line in self.log_lines():
            m = re.search(r" stats port=(\d+) (.*)$", line)
            if m and int(m.group(1)) == port:
                return {k: int(v) for k, v in _kv(m.group(2)).items()}
        raise AssertionError("no stats line for port=%d; log:\n%s" % (port, self.log_tail()))

    def lines_at(self, level):
        """The log lines of one level ("warn", "error", ...)."""
        rx = re.compile(r" %s\s" % re.escape(level))
        return [l for l in self.log_lines() if rx.search(l)]


def run_tool(*args, timeout=20.0):
    """Runs tcpgate with args to completion; returns (rc, stdout, stderr)."""
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    for marker in SANITIZER_MARKERS:
        if marker in err:
            raise AssertionError("sanitizer report (%r) from tcpgate %s:\n%s"
                                 % (marker, " ".join(args), err[-12000:]))
    return p.returncode, out, err


class GatewayTestCase(unittest.TestCase):
    """Base class: helpers that register their own cleanup."""

    def server(self, cls, *args, **kw):
        s = cls(*args, **kw)
        s.start()
        self.addCleanup(s.stop)
        return s

    def gateway(self, **kw):
        g = Gateway(**kw)
        self.addCleanup(g.close)
        return g

    def connect(self, port, timeout=10.0):
        s = connect(port, timeout)
        self.addCleanup(s.close)
        return s

    def assertNoServerErrors(self, *servers):
        for s in servers:
            self.assertEqual(s.errors, [], "%s reported errors" % type(s).__name__)

    def assertExitClean(self, gw, timeout=10.0):
        """SIGTERM; the gateway exits 0 and logs "stopped"."""
        rc = gw.stop(timeout)
        self.assertEqual(rc, 0, "exit code; log:\n%s" % gw.log_tail())
        self.assertTrue(any(re.search(r" info\s+stopped$", l) for l in gw.log_lines()),
                        "no 'stopped' line; log:\n%s" % gw.log_tail())
        return rc


def is_refused(port, timeout=2.0):
    """True if a connect to the port is refused, False if it is accepted."""
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return True
        raise
    s.close()
    return False
