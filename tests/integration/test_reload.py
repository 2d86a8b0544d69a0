"""Hot reload: the definitions change while the gateway serves, through
SIGHUP, a change in the definitions folder and GET /tyk/reload, and the
clients do not notice.

- Under load: thousands of short connections and 50 long streams run through
  50 reloads that edit a definition, add and remove a port, rotate a
  certificate and drop a broken file in. No connection fails, no byte is
  corrupted, every stream survives, the new certificate is served.
- A reload that cannot open a port fails as a whole: the other edits of the
  same reload do not take effect (neither in routing nor in the running
  health checks), and the old set keeps serving. A port that was taken at
  start is opened by a later reload once it is free.
- A removed port refuses new connections; its live connection goes on until
  it ends, or until the definition's drain timeout. The removed
  definition's health checks stop once its last connection has ended.
- Health state carries over a reload that leaves the check as it was.
- A burst of SIGHUPs makes far fewer reloads than signals; an editor's save
  makes one.

Every wait is bounded, every loop bounded in count and time, and everything
started is stopped, also when a test fails."""

import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, SANITIZE, EchoServer, GatewayTestCase, NameServer, ThreadedServer,
                     definition, free_ports, is_refused, recv_exact, recv_until_eof, wait_closed,
                     wait_for)
from tlsutil import Pki, client_context

# Slower under ASan: stretch the outer bounds (never the lower ones).
SLACK = 3.0 if SANITIZE else 1.0

LOCAL = {"listen_address": "127.0.0.1"}

RELOAD_LINE = re.compile(r" info\s+reload \(([^)]*)\): ")


# ---- helpers ----------------------------------------------------------------------------


def write_atomic(path, text, mode=None):
    """Writes a file the way a careful tool does: a temporary file beside it,
    whose name the folder watch ignores, then a rename over the old one. No
    reload can read half of it."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def put(gw, d, name=None):
    """Writes a definition into a running gateway's folder, atomically."""
    path = os.path.join(gw.apps, name or "%s.json" % d["api_id"])
    write_atomic(path, json.dumps(d, indent=2))
    return path


def apis(gw):
    """/tyk/apis as {api_id: entry}."""
    return {a["api_id"]: a for a in gw.admin_json("/tyk/apis")["apis"]}


def reload_info(gw):
    return gw.admin_json("/tyk/apis")["reload"]


def reload_counts(gw):
    m = gw.metrics()
    return (int(m['tcpgate_reloads_total{result="ok"}']),
            int(m['tcpgate_reloads_total{result="failed"}']))


def reload_lines(gw, trigger=None):
    """The log lines of successful reloads, of one trigger or all."""
    out = []
    for line in gw.log_lines():
        m = RELOAD_LINE.search(line)
        if m and (trigger is None or m.group(1) == trigger):
            out.append(line)
    return out


def settled_count(count, quiet=1.0, timeout=10.0):
    """Waits until count() has not changed for `quiet` seconds; returns it,
    or None if it still changed after timeout."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    return None


def wait_refused(port, timeout=5.0):
    """True once connects to port are refused 5 times in a row."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline and streak < 5:
        streak = streak + 1 if is_refused(port) else 0
        if streak == 0:
            time.sleep(0.05)
    return streak >= 5


def exchange(sock, msg, timeout=10.0):
    sock.sendall(msg)
    got = recv_exact(sock, len(msg), timeout=timeout)
    if got != msg:
        raise AssertionError("echo differs: sent %d bytes, got %d back" % (len(msg), len(got)))


def name_of(port, timeout=10.0):
    """Connects to a NameServer through the gateway; returns its name."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.shutdown(socket.SHUT_WR)
        return recv_until_eof(s, timeout).decode().strip()
    finally:
        s.close()


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


class Pattern:
    """One long connection's byte stream: SHAKE-128 blocks keyed by the
    connection and the block number, taken in order. The sender and the
    checker each hold one, so every byte that comes back is compared with
    the byte sent at the same offset."""

    BLOCK = 4096

    def __init__(self, key):
        self.key = key.encode()
        self._j = 0
        self._block = b""
        self._pos = 0

    def take(self, n):
        out = bytearray()
        while len(out) < n:
            if self._pos == len(self._block):
                self._block = hashlib.shake_128(b"%s/%d" % (self.key, self._j)).digest(self.BLOCK)
                self._j += 1
                self._pos = 0
            k = min(n - len(out), len(self._block) - self._pos)
            out += self._block[self._pos:self._pos + k]
            self._pos += k
        return bytes(out)


class Stream(threading.Thread):
    """A long connection through an echo service that streams both ways
    until stop is set: chunks of 1 to 4096 bytes go out continuously, with
    at most WINDOW bytes not yet echoed, and every byte that comes back is
    checked. At the end it takes back what is in flight and, on plain TCP,
    closes with a FIN and expects the echo's FIN back."""

    WINDOW = 16 * 1024

    def __init__(self, key, opener, stop, deadline, plain=True):
        super().__init__(daemon=True, name="stream-%s" % key)
        self.key = key
        self.opener = opener
        self.stop_event = stop
        self.deadline = deadline
        self.plain = plain
        self.tx = Pattern(key)
        self.rx = Pattern(key)
        self.rng = random.Random(key)
        self.sent = 0
        self.received = 0
        self.error = None
        self.finished = False
        self.connected = threading.Event()
        self.peer_der = None

    def _recv_some(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise AssertionError("closed by the gateway")
        want = self.rx.take(len(chunk))
        if chunk != want:
            i = next(k for k in range(len(chunk)) if chunk[k] != want[k])
            raise AssertionError("corrupted: byte %d differs" % (self.received + i))
        self.received += len(chunk)

    def run(self):
        self.sock = None
        try:
            self.sock = self.opener()
            self.sock.settimeout(10 * SLACK)
            if not self.plain:
                self.peer_der = self.sock.getpeercert(binary_form=True)
            self.connected.set()
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                n = self.rng.randint(1, 4096)
                self.sock.sendall(self.tx.take(n))
                self.sent += n
                while self.sent - self.received > self.WINDOW:
                    self._recv_some()
                self.stop_event.wait(0.02)
            while self.received < self.sent:
                self._recv_some()
            if self.plain:
                self.sock.shutdown(socket.SHUT_WR)
                rest = recv_until_eof(self.sock, 10 * SLACK)
                if rest:
                    raise AssertionError("%d bytes after the last echo" % len(rest))
            self.finished = True
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = "%s: %r after %d bytes sent, %d echoed" % (self.key, e, self.sent,
                                                                     self.received)
        finally:
            self.connected.set()
            if self.sock is not None:
                self.sock.close()


class CheckedService(ThreadedServer):
    """A service with a health check. A connection that starts with PING is a
    check: it is answered +PONG after `delay` seconds. One that starts with
    HELLO is traffic: it is answered "I am NAME" and then echoed. With
    tls_ctx it speaks TLS first; handshakes the client gives up on are
    counted in tls_refused."""

    def __init__(self, name, tls_ctx=None, **kw):
        super().__init__(**kw)
        self.name = name
        self.tls_ctx = tls_ctx
        self.delay = 0.0
        self.checks = 0
        self.tls_refused = 0

    def check_count(self):
        with self._lock:
            return self.checks

    def handle(self, raw, index):
        conn = raw
        if self.tls_ctx is not None:
            try:
                conn = self.tls_ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                with self._lock:
                    self.tls_refused += 1
                return
        try:
            self.serve(conn)
        finally:
            if conn is not raw:
                conn.close()

    def serve(self, conn):
        buf = b""
        while b"\n" not in buf:
            chunk = conn.recv(256)
            if not chunk:
                return
            buf += chunk
        first, _, rest = buf.partition(b"\n")
        if first.rstrip(b"\r") == b"PING":
            with self._lock:
                self.checks += 1
            self._stopping.wait(self.delay)
            conn.sendall(b"+PONG\r\n")
            self.drain(conn)
            return
        conn.sendall(b"I am %s\n" % self.name.encode() + rest)
        for chunk in self.chunks(conn):
            conn.sendall(chunk)
        if self.tls_ctx is None:
            conn.shutdown(socket.SHUT_WR)


PING_CHECK = [{"name": "send", "message": "PING\r\n"}, {"name": "expect", "message": "+PONG"}]


def checked_definition(api_id, port, target, check_url=None, timeout="2s", ext=None, **extra):
    """A definition whose one target is health checked (PING, +PONG) and
    picked only while its check passes."""
    d = definition(api_id, port, targets=[target], ext=ext, **extra)
    d["proxy"]["check_host_against_uptime_tests"] = True
    d["uptime_tests"] = {"check_list": [{"url": check_url or target, "timeout": timeout,
                                         "commands": PING_CHECK}]}
    return d


def hello(port, timeout=10.0):
    """Connects as traffic to a CheckedService; returns (its name, socket)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(b"HELLO\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no name within %.1f s" % timeout)
            s.settimeout(left)
            chunk = s.recv(256)
            if not chunk:
                raise AssertionError("closed before naming a backend (got %r)" % buf)
            buf += chunk
    except BaseException:
        s.close()
        raise
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("I am "):
        s.close()
        raise AssertionError("unexpected greeting %r" % line)
    return line[5:], s


# ---- the load test ----------------------------------------------------------------------


class ReloadUnderLoadTest(GatewayTestCase):

    MIN_SHORT = 2000  # short connections on the definitions that stay
    MAX_SHORT = 20000  # an upper bound on the loop, whatever happens
    STREAMS_PLAIN = 40
    STREAMS_TLS = 10
    RELOADS = 50
    SNI = "rot.example.com"

    def make_certs(self):
        """Three certificates for the same name, to rotate through."""
        pki = Pki()
        self.addCleanup(pki.close)
        pki.make_ca()
        for v in range(3):
            pki.issue("rot%d" % v, self.SNI, ["DNS:" + self.SNI])
        return pki

    def test_fifty_reloads_under_load(self):
        pki = self.make_certs()
        fps = [fingerprint(pki.der("rot%d" % v)) for v in range(3)]
        live_cert = pki.path("live.pem")  # outside the definitions folder

        def install(v):
            write_atomic(live_cert, pki.pem("rot%d" % v) + pki.key_pem("rot%d" % v), mode=0o600)

        install(0)
        echo = self.server(EchoServer)
        tcp_port, tls_port, extra_port = free_ports(3)
        gw = self.gateway(config=dict(LOCAL))
        state = {"stay": 0, "tls": 0, "cert": 0}

        def stay_def():
            v = state["stay"]
            return definition("stay", tcp_port, echo.address, name="stay v%d" % v,
                              ext={"idle_timeout": "1h" if v % 2 == 0 else "10m"})

        def tls_def():
            return definition("tls", tls_port, echo.address, protocol="tls", domain=self.SNI,
                              certificates=[live_cert], name="tls v%d" % state["tls"])

        extra_def = definition("extra", extra_port, echo.address)
        gw.add(stay_def())
        gw.add(tls_def())
        gw.start()
        ok0, failed0 = reload_counts(gw)

        ctx = client_context(pki)

        def open_plain(port):
            return socket.create_connection((HOST, port), timeout=10 * SLACK)

        def open_tls(port):
            raw = socket.create_connection((HOST, port), timeout=10 * SLACK)
            try:
                return ctx.wrap_socket(raw, server_hostname=self.SNI)
            except BaseException:
                raw.close()
                raise

        probes = {"n": 0}

        def served_fingerprint():
            probes["n"] += 1
            s = open_tls(tls_port)
            try:
                return fingerprint(s.getpeercert(binary_form=True))
            finally:
                s.close()

        self.assertEqual(served_fingerprint(), fps[0])

        # Long connections, all open before the first reload.
        hard_deadline = time.monotonic() + 150 * SLACK
        stop_streams = threading.Event()
        self.addCleanup(stop_streams.set)
        streams = [Stream("plain%d" % i, lambda: open_plain(tcp_port), stop_streams,
                          hard_deadline) for i in range(self.STREAMS_PLAIN)]
        streams += [Stream("tls%d" % i, lambda: open_tls(tls_port), stop_streams, hard_deadline,
                           plain=False) for i in range(self.STREAMS_TLS)]
        for s in streams:
            s.start()
        for s in streams:
            self.assertTrue(s.connected.wait(15 * SLACK), "%s did not connect" % s.key)
            self.assertIsNone(s.error)
        for s in streams[self.STREAMS_PLAIN:]:
            self.assertEqual(fingerprint(s.peer_der), fps[0])

        # Short connections: connect, send a unique payload, read the echo,
        # compare, close. One worker in four speaks TLS.
        lock = threading.Lock()
        shorts = {"tcp": 0, "tls": 0, "extra": 0, "n": 0}
        failures = []
        reloads_done = threading.Event()
        stop_shorts = threading.Event()

        def short_once(i, port, tls):
            payload = b"short %d %s\n" % (i, os.urandom(random.randint(1, 1500)))
            s = open_tls(port) if tls else open_plain(port)
            try:
                s.settimeout(10 * SLACK)
                s.sendall(payload)
                if tls:
                    got = recv_exact(s, len(payload), timeout=10 * SLACK)
                    fp = fingerprint(s.getpeercert(binary_form=True))
                    if fp not in fps:
                        raise AssertionError("unknown certificate %s" % fp)
                else:
                    s.shutdown(socket.SHUT_WR)
                    got = recv_until_eof(s, timeout=10 * SLACK)
                if got != payload:
                    raise AssertionError("echo differs (%d bytes sent, %d back)"
                                         % (len(payload), len(got)))
            finally:
                s.close()

        def short_worker(tls):
            kind = "tls" if tls else "tcp"
            while not stop_shorts.is_set() and time.monotonic() < hard_deadline:
                with lock:
                    if (reloads_done.is_set() and shorts["tcp"] + shorts["tls"] >= self.MIN_SHORT) \
                            or shorts["n"] >= self.MAX_SHORT:
                        return
                    i = shorts["n"]
                    shorts["n"] += 1
                try:
                    short_once(i, tls_port if tls else tcp_port, tls)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    with lock:
                        failures.append("%s connection %d: %r" % (kind, i, e))
                    continue
                with lock:
                    shorts[kind] += 1
                stop_shorts.wait(0.002)

        # The added port is used only while it is known to be there: the
        # test sets extra_on once a reload added it, and clears it (and
        # waits for the connection in progress) before the reload that
        # removes it.
        extra_on = threading.Event()
        extra_lock = threading.Lock()

        def extra_worker():
            i = 0
            while not stop_shorts.is_set() and time.monotonic() < hard_deadline:
                if not extra_on.wait(0.05):
                    continue
                with extra_lock:
                    if not extra_on.is_set():
                        continue
                    i += 1
                    try:
                        short_once(i, extra_port, False)
                    except Exception as e:  # noqa: BLE001 - reported by the test
                        with lock:
                            failures.append("extra connection %d: %r" % (i, e))
                        continue
                with lock:
                    shorts["extra"] += 1
                stop_shorts.wait(0.01)

        workers = [threading.Thread(target=short_worker, args=(tls,), daemon=True)
                   for tls in (False, False, False, True)]
        workers.append(threading.Thread(target=extra_worker, daemon=True))
        for t in workers:
            t.start()

        def stop_clients():
            stop_shorts.set()
            stop_streams.set()
            for t in workers + streams:
                t.join(20 * SLACK)

        self.addCleanup(stop_clients)  # runs before the gateway is stopped

        # The reloads. Each step changes something, asks for a reload one of
        # three ways, and waits until the reload counter moved and the change
        # shows.
        broken_path = os.path.join(gw.apps, "broken.json")
        extra_path = os.path.join(gw.apps, "extra.json")
        cycle = [("edit", "folder"), ("add", "admin"), ("rotate", "sighup"),
                 ("broken", "folder"), ("edit", "admin"), ("remove", "folder"),
                 ("edit", "sighup"), ("rotate", "admin"), ("fix", "sighup"),
                 ("rotate", "folder")]
        schedule = [cycle[i % len(cycle)] for i in range(self.RELOADS)]
        broken_seen = 0
        step_timeout = 15 * SLACK

        for step, (action, trigger) in enumerate(schedule):
            what = "step %d (%s by %s)" % (step, action, trigger)
            before = reload_info(gw)["ok"]
            if action == "edit":
                state["stay"] += 1
                put(gw, stay_def())
                want_name = "stay v%d" % state["stay"]
                effect = lambda n=want_name: apis(gw)["stay"]["name"] == n  # noqa: E731
            elif action == "add":
                put(gw, extra_def)
                effect = lambda: "extra" in apis(gw)  # noqa: E731
            elif action == "remove":
                extra_on.clear()
                with extra_lock:  # no connection to the port in progress
                    pass
                os.unlink(extra_path)
                effect = lambda: "extra" not in apis(gw)  # noqa: E731
            elif action == "rotate":
                state["cert"] = (state["cert"] + 1) % len(fps)
                install(state["cert"])
                if trigger == "folder":
                    # The certificate is outside the folder: its definition changes too.
                    state["tls"] += 1
                    put(gw, tls_def())
                effect = lambda v=state["cert"]: served_fingerprint() == fps[v]  # noqa: E731
            elif action == "broken":
                with open(broken_path, "w") as f:
                    f.write('{"api_id": "broken", "listen_port": ')

                def effect():
                    return any(e["file"].endswith("/broken.json")
                               for e in gw.admin_json("/tyk/apis")["load_errors"])
            elif action == "fix":
                os.unlink(broken_path)

                def effect():
                    return not any(e["file"].endswith("/broken.json")
                                   for e in gw.admin_json("/tyk/apis")["load_errors"])

            if trigger == "sighup":
                gw.signal(signal.SIGHUP)
            elif trigger == "admin":
                status, _, body = gw.admin("/tyk/reload")
                self.assertEqual(status, 200, "%s: %s" % (what, body))
                self.assertEqual(json.loads(body)["status"], "ok", what)
            wait_for(lambda: reload_info(gw)["ok"] > before, step_timeout,
                     "%s: no reload" % what)
            wait_for(effect, step_timeout, "%s: the change did not show" % what)

            if action == "add":
                short_once(-1, extra_port, False)  # the new port serves at once
                extra_on.set()
            elif action == "remove":
                self.assertTrue(wait_refused(extra_port, 5 * SLACK),
                                "%s: the removed port still accepts" % what)
            elif action == "broken":
                broken_seen += 1
                errs = [e for e in gw.admin_json("/tyk/apis")["load_errors"]
                        if e["file"].endswith("/broken.json")]
                self.assertEqual([(e["severity"], e["field"]) for e in errs],
                                 [("error", "(json)")], errs)
                self.assertIn("invalid JSON", errs[0]["reason"])
                self.assertEqual(sorted(apis(gw)),
                                 ["extra", "stay", "tls"] if extra_on.is_set() else ["stay", "tls"],
                                 what)

        # Every stream moves on after the last reload, then they all end.
        marks = {s.key: s.received for s in streams}
        reloads_done.set()
        for s in streams:
            wait_for(lambda s=s: s.received > marks[s.key] or s.error or not s.is_alive(),
                     15 * SLACK, "%s made no progress after the reloads" % s.key)
        for t in workers[:-1]:
            t.join(max(1.0, hard_deadline - time.monotonic()))
        stop_shorts.set()
        workers[-1].join(10)
        stop_streams.set()
        for s in streams:
            s.join(20 * SLACK)

        self.assertFalse([t.name for t in workers if t.is_alive()], "client threads still run")
        self.assertEqual(failures, [], "%d failed short connections" % len(failures))
        self.assertGreaterEqual(shorts["tcp"] + shorts["tls"], self.MIN_SHORT, shorts)
        self.assertGreater(shorts["tls"], 0, shorts)
        self.assertGreater(shorts["extra"], 0, shorts)
        self.assertEqual([s.error for s in streams if s.error], [])
        self.assertEqual([s.key for s in streams if not s.finished], [],
                         "streams that did not survive")
        for s in streams:
            self.assertGreater(s.received, marks[s.key], s.key)

        # The reloads: all succeeded, by every trigger, and the counters moved.
        ok, failed = reload_counts(gw)
        self.assertGreaterEqual(ok - ok0, self.RELOADS)
        self.assertEqual(failed, failed0)
        self.assertEqual(reload_info(gw)["ok"], ok)
        for trigger in ("SIGHUP", "app_path changed", "admin API"):
            self.assertTrue(reload_lines(gw, trigger), "no reload by %s" % trigger)
        self.assertEqual(broken_seen, schedule.count(("broken", "folder")))
        # The only errors logged are the broken file's.
        others = [l for l in gw.lines_at("error") if "broken.json" not in l]
        self.assertEqual(others, [])
        self.assertTrue(any("broken.json: (json): skipped: invalid JSON" in l
                            for l in gw.lines_at("error")), gw.log_tail())
        self.assertTrue(is_refused(extra_port))
        # The counters of the definitions that stayed went on across the reloads.
        wait_for(lambda: all(a["stats"]["cx_active"] == 0 for a in apis(gw).values()),
                 10 * SLACK, "connections still counted as active")
        listed = apis(gw)
        self.assertEqual(listed["stay"]["name"], "stay v%d" % state["stay"])
        self.assertEqual(listed["stay"]["stats"]["cx_total"], shorts["tcp"] + self.STREAMS_PLAIN)
        self.assertEqual(listed["tls"]["stats"]["cx_total"],
                         shorts["tls"] + self.STREAMS_TLS + probes["n"])

        self.assertExitClean(gw, timeout=20 * SLACK)
        self.assertNoServerErrors(echo)
        stay = gw.conns("stay")
        self.assertEqual(len(stay), shorts["tcp"] + self.STREAMS_PLAIN)
        self.assertEqual(sorted({c["end"] for c in stay}), ["closed"])
        self.assertEqual(len(gw.conns("extra")), shorts["extra"] + schedule.count(("add", "admin")))
        self.assertEqual(sorted({c["end"] for c in gw.conns("extra")}), ["closed"])
        tls = gw.conns("tls")
        self.assertEqual(len(tls), shorts["tls"] + self.STREAMS_TLS + probes["n"])
        self.assertEqual(sorted({c["end"] for c in tls}), ["closed"])


# ---- transactional reload, removed ports, health state, coalescing -------------------------


class ReloadTest(GatewayTestCase):

    def test_failed_reload_changes_nothing(self):
        """One reload edits a definition and adds another on a port some
        other process listens on: it fails as a whole, the edit does not take
        effect, and the old set keeps serving. Once the port is free, the
        same files load."""
        old = self.server(NameServer, "old")
        new = self.server(NameServer, "new")
        a_port, b_port, busy_port = free_ports(3)
        gw = self.gateway(config=dict(LOCAL))
        gw.add(definition("a", a_port, old.address, name="a v1"))
        gw.add(definition("b", b_port, old.address))
        gw.start()
        self.assertEqual(name_of(a_port), "old")
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(squatter.close)
        squatter.bind((HOST, busy_port))
        squatter.listen(8)
        ok0, failed0 = reload_counts(gw)

        put(gw, definition("a", a_port, new.address, name="a v2"))
        put(gw, definition("c", busy_port, new.address))
        status, _, body = gw.admin("/tyk/reload")
        self.assertEqual(status, 500, body)
        reply = json.loads(body)
        self.assertEqual(reply["status"], "error")
        self.assertIn("port %d" % busy_port, reply["message"])

        # The folder watch saw the same change; let its reload run (and fail) too.
        time.sleep(0.6)
        ok, failed = reload_counts(gw)
        self.assertEqual(ok, ok0, "a reload took effect with the port taken")
        self.assertGreaterEqual(failed, failed0 + 1)
        self.assertEqual(gw.metrics()["tcpgate_reload_last_success"], 0)
        info = reload_info(gw)
        self.assertFalse(info["last_ok"])
        self.assertIn("port %d" % busy_port, info["last_error"])
        self.assertTrue(any(re.search(r"reload \(admin API\) failed: port %d: cannot listen"
                                      % busy_port, l) for l in gw.lines_at("error")),
                        gw.log_tail())
        # The old set: a still goes to "old" under its old name, c is not there.
        listed = apis(gw)
        self.assertEqual(sorted(listed), ["a", "b"])
        self.assertEqual(listed["a"]["name"], "a v1")
        for _ in range(3):
            self.assertEqual(name_of(a_port), "old")
            self.assertEqual(name_of(b_port), "old")

        squatter.close()
        status, _, body = gw.admin("/tyk/reload")
        self.assertEqual(status, 200, body)
        listed = apis(gw)
        self.assertEqual(sorted(listed), ["a", "b", "c"])
        self.assertEqual(listed["a"]["name"], "a v2")
        self.assertEqual(name_of(a_port), "new")
        self.assertEqual(name_of(busy_port), "new")
        self.assertEqual(name_of(b_port), "old")
        ok, _ = reload_counts(gw)
        self.assertGreater(ok, ok0)
        self.assertExitClean(gw)
        self.assertNoServerErrors(old, new)

    def test_failed_reload_leaves_running_checks_alone(self):
        """A failed reload that would change a definition's upstream CA file
        changes nothing: the running checks still verify the upstream with
        the CA they had, so its target stays up and serves. Once the reload
        succeeds, the new CA (which did not sign the upstream) takes effect
        and the target goes down, which shows the edit matters."""
        pki = Pki()
        self.addCleanup(pki.close)
        pki.make_ca()
        pki.make_ca("ca2", "another test CA")
        pki.issue("upstream", HOST, ["IP:" + HOST])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert("upstream"), pki.key("upstream"))
        svc = self.server(CheckedService, "svc", tls_ctx=ctx)
        target = "tls://" + svc.address
        port, busy_port = free_ports(2)

        def tls_checked(ca):
            return checked_definition("t", port, target,
                                      ext={"check_interval": "200ms", "check_fall": 1,
                                           "upstream_ca_file": pki.cert(ca)})

        gw = self.gateway(config=dict(LOCAL))
        gw.add(tls_checked("ca"))
        gw.start()
        up = r"health: api_id=t target %s is UP" % re.escape(svc.address)
        gw.wait_for_log(up, timeout=10 * SLACK)
        name, s = hello(port)
        s.close()
        self.assertEqual(name, "svc")
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(squatter.close)
        squatter.bind((HOST, busy_port))
        squatter.listen(8)

        put(gw, tls_checked("ca2"))
        put(gw, definition("c", busy_port, svc.address))
        code, _, body = gw.admin("/tyk/reload")
        self.assertEqual(code, 500, body)
        # Five more check rounds, or the first check the upstream saw refused.
        base = svc.check_count()
        wait_for(lambda: svc.check_count() >= base + 5 or svc.tls_refused > 0, 10 * SLACK,
                 "five more checks")
        health = gw.admin_json("/tyk/health")["targets"]
        self.assertEqual(svc.tls_refused, 0,
                         "checks verify the upstream with the CA of a reload that failed: %s"
                         % health)
        self.assertEqual([(t["state"], t["eligible"]) for t in health], [("up", True)], health)
        self.assertFalse(any(re.search(r"health: api_id=t .* is DOWN", l) for l in gw.log_lines()),
                         gw.log_tail())
        name, s = hello(port)
        s.close()
        self.assertEqual(name, "svc")

        squatter.close()
        code, _, body = gw.admin("/tyk/reload")
        self.assertEqual(code, 200, body)
        gw.wait_for_log(r"health: api_id=t target %s is DOWN" % re.escape(svc.address),
                        timeout=10 * SLACK)
        self.assertExitClean(gw)

    def test_port_taken_at_start_is_opened_by_a_reload(self):
        """A port another process held when the gateway started is served
        after a reload once it is free: the reload opens every port of the
        new set that the gateway does not listen on."""
        one = self.server(NameServer, "one")
        a_port, b_port = free_ports(2)
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(squatter.close)
        squatter.bind((HOST, b_port))
        squatter.listen(8)
        gw = self.gateway(config=dict(LOCAL))
        gw.add(definition("a", a_port, one.address))
        gw.add(definition("b", b_port, one.address))
        gw.start()
        self.assertTrue(any("port %d: cannot listen" % b_port in l for l in gw.lines_at("error")),
                        gw.log_tail())
        self.assertEqual(name_of(a_port), "one")

        squatter.close()
        code, _, body = gw.admin("/tyk/reload")
        self.assertEqual(code, 200, body)
        self.assertEqual(sorted(apis(gw)), ["a", "b"])
        self.assertFalse(is_refused(b_port),
                         "port %d is free and listed as served, but nobody listens on it after "
                         "a successful reload; log:\n%s" % (b_port, gw.log_tail()))
        self.assertEqual(name_of(b_port), "one")
        self.assertEqual(name_of(a_port), "one")
        self.assertExitClean(gw)

    def test_removed_definition_checks_stop(self):
        """The health checks of a removed definition stop once the last
        connection that started on it has ended."""
        svc = self.server(CheckedService, "svc")
        keep_port, gone_port = free_ports(2)
        gw = self.gateway(config=dict(LOCAL))
        gw.add(definition("keep", keep_port, svc.address))
        gone_path = gw.add(checked_definition("gone", gone_port, svc.address,
                                              ext={"check_interval": "200ms"}))
        gw.start()
        gw.wait_for_log(r"health: api_id=gone target .* is UP", timeout=10 * SLACK)
        name, sock = hello(gone_port)
        self.addCleanup(sock.close)
        self.assertEqual(name, "svc")
        os.unlink(gone_path)
        gw.wait_for_log(r"reload: port %d is no longer served" % gone_port, timeout=10 * SLACK)
        # The connection lives on for a while after the reload, then ends.
        for i in range(10):
            exchange(sock, b"still here %d\n" % i)
            time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(wait_closed(sock, 10), "eof")
        sock.close()
        gw.wait_for_log(r" conn .* api_id=gone .* end=closed", timeout=10)
        self.assertEqual(gw.admin_json("/tyk/health")["targets"], [])
        self.assertIsNotNone(settled_count(svc.check_count, quiet=1.0, timeout=5 * SLACK),
                             "the removed definition's checks still run %.0f s after its last "
                             "connection ended (%d checks so far)"
                             % (5 * SLACK, svc.check_count()))
        self.assertExitClean(gw)

    def removed_port_setup(self, ext=None):
        echo = self.server(EchoServer)
        keep_port, gone_port = free_ports(2)
        gw = self.gateway(config=dict(LOCAL))
        gw.add(definition("keep", keep_port, echo.address))
        gone_path = gw.add(definition("gone", gone_port, echo.address, ext=ext))
        gw.start()
        sock = socket.create_connection((HOST, gone_port), timeout=10)
        self.addCleanup(sock.close)
        exchange(sock, b"before the reload")
        os.unlink(gone_path)
        gw.wait_for_log(r"reload: port %d is no longer served; its connections drain"
                        % gone_port, timeout=10 * SLACK)
        self.assertTrue(wait_refused(gone_port, 5 * SLACK),
                        "the removed port still accepts connections")
        self.assertNotIn("gone", apis(gw))
        return echo, gw, keep_port, sock

    def test_removed_port_connection_lives_on(self):
        """Without a drain timeout of its own, a live connection on a removed
        port works on until the client ends it; new ones are refused."""
        echo, gw, keep_port, sock = self.removed_port_setup()
        sent = len(b"before the reload")
        for i in range(10):
            msg = b"after the reload %d\n" % i
            exchange(sock, msg)
            sent += len(msg)
            time.sleep(0.1)
        big = os.urandom(200000)
        exchange(sock, big, timeout=20)
        sent += len(big)
        with socket.create_connection((HOST, keep_port), timeout=10) as other:
            exchange(other, b"the port that stays")
        self.assertTrue(is_refused(sock.getpeername()[1]))
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(wait_closed(sock, 10), "eof")
        sock.close()
        line = gw.wait_for_log(r" conn .* api_id=gone ", timeout=10)[0]
        self.assertIn(" end=closed", line)
        self.assertIn(" rx=%d " % sent, line)
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)

    def test_removed_port_drain_timeout(self):
        """With tcpgate.drain_timeout set short in the removed definition, its
        live connection is closed by the drain timeout."""
        echo, gw, keep_port, sock = self.removed_port_setup(ext={"drain_timeout": "1s"})
        self.assertIn(wait_closed(sock, 10 * SLACK), ("eof", "reset"),
                      "the removed port's connection outlived its drain timeout")
        line = gw.wait_for_log(r" conn .* api_id=gone ", timeout=10)[0]
        self.assertIn(" end=drain", line)
        with socket.create_connection((HOST, keep_port), timeout=10) as other:
            exchange(other, b"the port that stays")
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)

    def test_health_state_carries_over(self):
        """A reload that edits something unrelated keeps a check's state: the
        target is eligible at once and its check count goes on from where it
        was. To tell the two apart, the checks after the first few take
        seconds to answer: a check started anew would leave the target
        without a verdict for longer than a client's connect timeout."""
        svc = self.server(CheckedService, "svc")
        port = free_ports(1)[0]

        def hc_def(name, idle):
            return checked_definition("hc", port, svc.address, timeout="10s", name=name,
                                      ext={"check_interval": "200ms", "connect_timeout": "1s",
                                           "idle_timeout": idle})

        def status():
            targets = gw.admin_json("/tyk/health")["targets"]
            self.assertEqual(len(targets), 1, targets)
            return targets[0]

        gw = self.gateway(config=dict(LOCAL))
        gw.add(hc_def("checked v1", "1h"))
        gw.start()
        gw.wait_for_log(r"health: api_id=hc target %s is UP" % re.escape(svc.address),
                        timeout=10 * SLACK)
        wait_for(lambda: status()["checks"] >= 3, 10 * SLACK, "three checks")
        name, s = hello(port)
        s.close()
        self.assertEqual(name, "svc")

        svc.delay = 4.0  # checks from now on answer slowly, but pass
        before = status()
        self.assertEqual((before["state"], before["eligible"]), ("up", True), before)
        put(gw, hc_def("checked v2", "10m"))
        code, _, body = gw.admin("/tyk/reload")
        self.assertEqual(code, 200, body)
        self.assertEqual(apis(gw)["hc"]["name"], "checked v2")

        after = status()
        self.assertEqual((after["state"], after["eligible"]), ("up", True), after)
        self.assertGreaterEqual(after["checks"], before["checks"], (before, after))
        name, s = hello(port)
        s.close()
        self.assertEqual(name, "svc")
        # The count goes on from where it was.
        later = wait_for(lambda: (lambda st: st if st["checks"] > after["checks"] else None)(
            status()), 20 * SLACK, "another check")
        self.assertEqual((later["state"], later["eligible"]), ("up", True), later)
        self.assertGreater(later["checks"], before["checks"])
        ups = [l for l in gw.log_lines() if re.search(r"health: api_id=hc target .* is UP", l)]
        self.assertEqual(len(ups), 1, "\n".join(ups))
        conns = gw.conns("hc")
        self.assertEqual([c["end"] for c in conns], ["closed", "closed"])
        svc.delay = 0.0
        self.assertExitClean(gw)

    def test_sighup_burst_coalesces(self):
        """20 SIGHUPs in a burst make far fewer reloads, and the gateway
        serves on."""
        echo = self.server(EchoServer)
        port = free_ports(1)[0]
        gw = self.gateway(config=dict(LOCAL))
        gw.add(definition("live", port, echo.address))
        gw.start()
        with socket.create_connection((HOST, port), timeout=10) as before:
            exchange(before, b"before the signals")
            for _ in range(20):
                gw.signal(signal.SIGHUP)
            gw.wait_for_log(r"reload \(SIGHUP\)", timeout=10 * SLACK)
            n = settled_count(lambda: len(reload_lines(gw, "SIGHUP")))
            exchange(before, b"after the signals")
        self.assertIsNotNone(n, "reloads still coming")
        self.assertGreaterEqual(n, 1)
        self.assertLess(n, 20, "every SIGHUP made its own reload")
        self.assertEqual(len(reload_lines(gw)), n)
        self.assertTrue(gw.running())
        with socket.create_connection((HOST, port), timeout=10) as after:
            exchange(after, b"a new connection")
        self.assertEqual(reload_counts(gw), (n, 0))
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)

    def test_editor_save_reloads_once(self):
        """An editor's save makes one reload: first a temporary file renamed
        over the definition (with a swap file around it), then the original
        renamed to a backup and the definition written anew in pieces."""
        one = self.server(NameServer, "one")
        two = self.server(NameServer, "two")
        port = free_ports(1)[0]
        gw = self.gateway(config=dict(LOCAL))
        path = gw.add(definition("edit", port, one.address))
        gw.start()
        self.assertEqual(name_of(port), "one")

        # Temporary file, then rename over the definition.
        swap = os.path.join(gw.apps, ".edit.json.swp")
        with open(swap, "w") as f:
            f.write("swap")
        tmp = os.path.join(gw.apps, ".edit.json.tmp")
        text = json.dumps(definition("edit", port, two.address), indent=2)
        with open(tmp, "w") as f:
            for off in range(0, len(text), 40):
                f.write(text[off:off + 40])
                f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        os.unlink(swap)
        gw.wait_for_log(r"reload \(app_path changed\)", timeout=10 * SLACK)
        self.assertEqual(settled_count(lambda: len(reload_lines(gw))), 1)
        self.assertEqual(name_of(port), "two")

        # The original renamed to a backup, the definition written anew in
        # pieces, the backup removed.
        backup = path + "~"
        os.rename(path, backup)
        text = json.dumps(definition("edit", port, one.address), indent=2)
        with open(path, "w") as f:
            for off in range(0, len(text), 40):
                f.write(text[off:off + 40])
                f.flush()
        os.unlink(backup)
        gw.wait_for_log(r"reload \(app_path changed\)", timeout=10 * SLACK, count=2)
        self.assertEqual(settled_count(lambda: len(reload_lines(gw))), 2)
        self.assertEqual(name_of(port), "one")
        self.assertFalse(any("no longer served" in l for l in gw.log_lines()), gw.log_tail())
        self.assertEqual(gw.lines_at("error"), [])
        self.assertEqual(reload_counts(gw), (2, 0))
        self.assertExitClean(gw)
        self.assertNoServerErrors(one, two)


if __name__ == "__main__":
    unittest.main(verbosity=2)
