"""Health checks (uptime_tests.check_list): send/expect probes against scripted
peers, host states through fall and rise, and what the balancer and live
connections make of them.

Every peer is a small fake Redis on 127.0.0.1. A connection whose first line
is PING is a health check, numbered in arrival order; what the peer answers to
the n-th check is up to the test (`behaviour(n)`). A connection whose first
line is HELLO is gateway traffic: the peer names itself ("I am A") and then
echoes, so a test sees which backend a client landed on.

Timings are asserted only as generous bounds; every wait is bounded."""

import datetime
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, SANITIZE, GatewayTestCase, ThreadedServer, definition, free_port,
                     wait_closed)

# Slower under ASan: stretch the outer bounds (never the lower ones).
SLACK = 3.0 if SANITIZE else 1.0

PP2_SIG = bytes.fromhex("0d0a0d0a000d0a515549540a")

REDIS_CHECK = [
    {"name": "send", "message": "PING\r\n"},
    {"name": "expect", "message": "+PONG"},
    {"name": "send", "message": "INFO replication\r\n"},
    {"name": "expect", "message": "role:master"},
    {"name": "send", "message": "QUIT\r\n"},
]


def info_reply(role):
    body = ("# Replication\r\nrole:%s\r\nconnected_slaves:0\r\n"
            "master_replid:8c3a0f5e2b1d\r\nmaster_repl_offset:0\r\n" % role).encode()
    return b"$%d\r\n%s\r\n" % (len(body), body)


# ---- peers ------------------------------------------------------------------------------


class FakeRedis(ThreadedServer):
    """A fake Redis that tells checks from traffic (see the module docstring).

    behaviour(n) for the n-th check (0-based) returns one of:
      "master"     answers PING and INFO as a master (the check passes)
      "slave"      answers INFO as a replica, and keeps the connection open
      "slave-quit" answers INFO as a replica, then closes (a quick failure)
      "silent"     reads, never answers
      "split"      answers INFO as a master in 5-byte pieces, 25 ms apart
      ("slow", s)  waits s seconds before answering PING, then as a master
      "pong-close" answers PING, then closes (over TLS: without close_notify)
    A leading PROXY header (v1 or v2) is taken off and kept in self.headers.
    """

    def __init__(self, name, behaviour="master", **kw):
        super().__init__(**kw)
        self.name = name
        self.behaviour = behaviour if callable(behaviour) else (lambda n, b=behaviour: b)
        self.checks = []  # (n, monotonic time, behaviour)
        self.headers = []  # (kind "check"/"traffic", header bytes or None, peer port)
        self.traffic = 0
        self._n = 0

    def wrap(self, conn):
        return conn

    # reading

    def _fill(self, conn, buf):
        try:
            chunk = conn.recv(1 << 16)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return False
        except socket.timeout:
            return False
        if not chunk:
            return False
        buf += chunk
        return True

    def _line(self, conn, buf):
        """One line without its end, or None at EOF."""
        deadline = time.monotonic() + self.HANDLER_DEADLINE
        while b"\n" not in buf:
            if self._stopping.is_set() or time.monotonic() > deadline:
                return None
            if not self._fill(conn, buf):
                return None
        i = buf.index(b"\n")
        line = bytes(buf[:i]).rstrip(b"\r")
        del buf[:i + 1]
        return line

    def _exactly(self, conn, buf, n):
        while len(buf) < n:
            if self._stopping.is_set() or not self._fill(conn, buf):
                return False
        return True

    def _header(self, conn, buf):
        """Takes a PROXY header off the front of buf, if there is one."""
        if not self._exactly(conn, buf, 6):
            return None
        if bytes(buf[:6]) == PP2_SIG[:6]:
            if not self._exactly(conn, buf, 16):
                return None
            n = 16 + struct.unpack(">H", bytes(buf[14:16]))[0]
            if not self._exactly(conn, buf, n):
                return None
            hdr = bytes(buf[:n])
            del buf[:n]
            return hdr
        if bytes(buf[:6]) == b"PROXY ":
            while b"\r\n" not in buf:
                if not self._fill(conn, buf):
                    return None
            i = buf.index(b"\r\n") + 2
            hdr = bytes(buf[:i])
            del buf[:i]
            return hdr
        return None

    def _send(self, conn, data):
        try:
            conn.sendall(data)
            return True
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return False  # the check has its verdict and is gone

    # serving

    def handle(self, raw, index):
        conn = self.wrap(raw)
        if conn is None:
            return
        try:
            self.serve(conn)
        finally:
            if conn is not raw:
                conn.close()  # a TLS socket: closed without a close_notify

    def serve(self, conn):
        buf = bytearray()
        header = self._header(conn, buf)
        first = self._line(conn, buf)
        if first is None:
            return
        peer_port = conn.getpeername()[1]
        if first == b"HELLO":
            with self._lock:
                self.traffic += 1
                self.headers.append(("traffic", header, peer_port))
            self._send(conn, b"I am %s\n" % self.name.encode())
            while self._fill(conn, buf):  # echo until EOF
                data = bytes(buf)
                del buf[:]
                if not self._send(conn, data):
                    return
            return
        if first != b"PING":
            self.errors.append("unexpected first line %r" % first)
            return
        with self._lock:
            n = self._n
            self._n += 1
            b = self.behaviour(n)
            self.checks.append((n, time.monotonic(), b))
            self.headers.append(("check", header, peer_port))
        if b == "silent":
            while self._fill(conn, buf):
                del buf[:]
            return
        if isinstance(b, tuple) and b[0] == "slow":
            self._stopping.wait(b[1])
        if not self._send(conn, b"+PONG\r\n") or b == "pong-close":
            return
        while True:
            line = self._line(conn, buf)
            if line is None:
                return
            if line == b"INFO replication":
                role = "slave" if b in ("slave", "slave-quit") else "master"
                reply = info_reply(role)
                if b == "split":
                    for off in range(0, len(reply), 5):
                        if not self._send(conn, reply[off:off + 5]):
                            return
                        self._stopping.wait(0.025)
                elif not self._send(conn, reply):
                    return
                if b == "slave-quit":
                    return
            elif line == b"QUIT":
                self._send(conn, b"+OK\r\n")
                return
            else:
                self._send(conn, b"-ERR unknown command\r\n")

    def check_count(self):
        with self._lock:
            return self._n


class TlsFakeRedis(FakeRedis):
    """The same behind TLS; keeps the server name (SNI) each handshake sent."""

    def __init__(self, name, cert, key, **kw):
        super().__init__(name, **kw)
        self.sni = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)

        def on_sni(sslobj, server_name, ctx):
            with self._lock:
                self.sni.append(server_name)
            return None

        self.ctx.sni_callback = on_sni

    def wrap(self, conn):
        conn.settimeout(10)
        try:
            return self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self.errors.append("handshake: %r" % e)
            return None


# ---- helpers ------------------------------------------------------------------------------


def check_entry(address, commands=None, timeout="1s", **extra):
    e = {"url": address, "timeout": timeout, "commands": commands or REDIS_CHECK}
    e.update(extra)
    return e


def hc_definition(api_id, port, peers, checks=None, ext=None, gates=True, **extra):
    """A balanced definition over peers, one Redis check per peer by default."""
    targets = [p if isinstance(p, str) else p.address for p in peers]
    d = definition(api_id, port, targets=targets, ext=ext, **extra)
    d["proxy"]["check_host_against_uptime_tests"] = gates
    d["uptime_tests"] = {"check_list": checks if checks is not None
                         else [check_entry(t) for t in targets]}
    return d


def escaped(data):
    """data as the gateway's failure messages show it (printable ASCII here)."""
    out = data.decode("latin-1")
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\r", "\\r"), ("\n", "\\n"), ("\t", "\\t")):
        out = out.replace(a, b)
    return out


def log_time(line):
    """The timestamp of a log line, in seconds."""
    stamp = line.split(" ", 1)[0]
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def up_rx(api_id, target):
    return r"health: api_id=%s target %s is UP" % (re.escape(api_id), re.escape(target))


def down_rx(api_id, target):
    return r"health: api_id=%s target %s is DOWN" % (re.escape(api_id), re.escape(target))


class HealthCheckTest(GatewayTestCase):

    def start(self, *defs, config=None, log_level="info", workers=2):
        gw = self.gateway(workers=workers, config=config, log_level=log_level)
        for d in defs:
            gw.add(d)
        gw.start()
        return gw

    def hello(self, port, timeout=10.0):
        """Connects as traffic; returns (backend name, socket)."""
        s = self.connect(port, timeout=timeout)
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
        line = buf.split(b"\n", 1)[0].decode()
        self.assertTrue(line.startswith("I am "), line)
        return line[5:], s

    def names(self, port, count):
        """count sequential clients; the backend each landed on."""
        got = []
        for _ in range(count):
            name, s = self.hello(port)
            s.close()
            got.append(name)
        return got

    def health_lines(self, gw, api_id, target, state):
        rx = re.compile((up_rx if state == "UP" else down_rx)(api_id, target))
        return [l for l in gw.log_lines() if rx.search(l)]

    def started_at(self, gw):
        return log_time(gw.wait_for_log(r" started: ")[0])

    # ---- answers ----------------------------------------------------------------------

    def test_correct_answer_up_and_used_wrong_answer_down(self):
        good = self.server(FakeRedis, "A", "master")
        bad = self.server(FakeRedis, "B", "slave")  # keeps the connection open
        port = free_port()
        checks = [check_entry(good.address, timeout="1s"),
                  check_entry(bad.address, timeout="500ms")]
        # check_fall unset: the gateway's failure_trigger_sample_size, 3.
        gw = self.start(hc_definition("hcans", port, [good, bad], checks=checks,
                                      ext={"check_interval": "200ms"}))
        up = gw.wait_for_log(up_rx("hcans", good.address), timeout=5 * SLACK)
        self.assertIn("first check passed; 1 passed check)", up[0])
        self.assertEqual(self.names(port, 6), ["A"] * 6)
        down = gw.wait_for_log(down_rx("hcans", bad.address), timeout=10 * SLACK)[0]
        self.assertGreaterEqual(bad.check_count(), 3)
        m = re.search(r"is DOWN after (\d+) failed checks: (.*)$", down)
        self.assertIsNotNone(m, down)
        self.assertEqual(m.group(1), "3")
        reason = m.group(2)
        # The step, what was expected, and what arrived, escaped.
        # At most 48 bytes of the answer are shown, and the cut is marked.
        shown = escaped(info_reply("slave")[:48])
        self.assertIn(r"\r\n# Replication\r\nrole:slave\r\n", shown)
        self.assertTrue(reason.startswith('step 4 expect "role:master": got "%s..." after '
                                          % shown), reason)
        self.assertNotIn("\r", reason)
        tail = re.search(r'" after (\d+\.\d)s$', reason)
        self.assertIsNotNone(tail, reason)
        # It waited for the rest of the step's time: role:master might still have come.
        self.assertGreaterEqual(float(tail.group(1)), 0.4)
        self.assertLessEqual(float(tail.group(1)), 0.5 + SLACK)
        self.assertEqual(self.health_lines(gw, "hcans", good.address, "DOWN"), [])
        self.assertEqual(len(self.health_lines(gw, "hcans", good.address, "UP")), 1)
        self.assertEqual(len(self.health_lines(gw, "hcans", bad.address, "DOWN")), 1)
        self.assertEqual(bad.traffic, 0)
        self.assertExitClean(gw)
        self.assertNoServerErrors(good, bad)

    def test_answer_split_over_many_writes(self):
        # The INFO reply comes in 5-byte pieces 25 ms apart ("role:master"
        # itself split over three writes): the expect keeps what arrived since
        # the previous step and passes once the text is complete.
        peer = self.server(FakeRedis, "A", "split")
        port = free_port()
        gw = self.start(hc_definition("hcsplit", port, [peer],
                                      checks=[check_entry(peer.address, timeout="3s")],
                                      ext={"check_interval": "10s", "check_fall": 1}))
        t0 = self.started_at(gw)
        up = gw.wait_for_log(up_rx("hcsplit", peer.address), timeout=5 * SLACK)[0]
        self.assertIn("first check passed", up)
        # It took the pieces' time (~0.15 s), not a timeout (3 s).
        self.assertGreater(log_time(up) - t0, 0.1)
        self.assertLess(log_time(up) - t0, 2.5)
        self.assertEqual(self.names(port, 1), ["A"])
        # Stop between rounds: the next one is 10 s away.
        deadline = time.monotonic() + 5
        while peer.active_connections() > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertExitClean(gw)
        self.assertEqual(peer.check_count(), 1)
        self.assertEqual(self.health_lines(gw, "hcsplit", peer.address, "DOWN"), [])
        self.assertFalse([l for l in gw.log_lines() if "check failed" in l])
        self.assertNoServerErrors(peer)

    def test_stop_while_a_check_is_running(self):
        # SIGTERM while a probe waits for its answer: the gateway exits at once
        # and cleanly (under ASan: nothing leaked, nothing used after free).
        silent = self.server(FakeRedis, "S", "silent")
        port = free_port()
        gw = self.start(hc_definition("hcstop", port, [silent],
                                      checks=[check_entry(silent.address, timeout="20s")],
                                      ext={"check_interval": "30s"}))
        deadline = time.monotonic() + 5 * SLACK
        while silent.check_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(silent.check_count(), 1)
        t0 = time.monotonic()
        self.assertExitClean(gw)
        self.assertLess(time.monotonic() - t0, 3 * SLACK)
        self.assertNoServerErrors(silent)

    def test_rounds_follow_the_interval(self):
        # The first round runs at once, and each next one check_interval later:
        # the second too, not two intervals after the first. (A persistent
        # timer that is also made active by hand gets its next run computed
        # from the timeout it would have had: 2 x interval.)
        peer = self.server(FakeRedis, "A", "master")
        port = free_port()
        gw = self.start(hc_definition("hcevery", port, [peer],
                                      ext={"check_interval": "500ms", "check_fall": 1}))
        t_start = time.monotonic()
        gw.wait_for_log(up_rx("hcevery", peer.address), timeout=5 * SLACK)
        deadline = time.monotonic() + 6 * SLACK
        while peer.check_count() < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertExitClean(gw)
        times = [t for _, t, _ in peer.checks]
        self.assertGreaterEqual(len(times), 4)
        self.assertLess(times[0] - t_start, 0.5 * SLACK)  # the first round: at once
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:4])]
        for g in gaps:
            self.assertGreater(g, 0.35, gaps)
        self.assertLess(gaps[0], 0.85, "the second round came %.2f s after the first, with "
                                       "check_interval 500ms; gaps: %s" % (gaps[0], gaps))
        for g in gaps[1:]:
            self.assertLess(g, 0.85, gaps)
        self.assertNoServerErrors(peer)

    def test_silent_peer_times_out_without_delaying_others(self):
        silent = self.server(FakeRedis, "S", "silent")
        good = self.server(FakeRedis, "A", "master")
        port = free_port()
        gw = self.start(hc_definition(
            "hcsilent", port, [silent, good],
            checks=[check_entry(silent.address, timeout="1s"),
                    check_entry(good.address, timeout="1s")],
            ext={"check_interval": "5s", "check_fall": 1}))
        t0 = self.started_at(gw)
        up = gw.wait_for_log(up_rx("hcsilent", good.address), timeout=5 * SLACK)[0]
        down = gw.wait_for_log(down_rx("hcsilent", silent.address), timeout=5 * SLACK)[0]
        self.assertRegex(down, r'is DOWN after 1 failed check: step 2 expect "\+PONG": '
                               r'got "" after (0\.9|1\.\d)s$')
        # The silent host's check held no one up: the good one's verdict came
        # long before the silent one's timeout.
        self.assertLess(log_time(up) - t0, 0.5 * SLACK)
        self.assertGreaterEqual(log_time(down) - t0, 0.9)
        self.assertLess(log_time(up), log_time(down) - 0.4)
        self.assertEqual(self.names(port, 1), ["A"])
        self.assertExitClean(gw)
        self.assertNoServerErrors(silent, good)

    def test_refused_connection(self):
        good = self.server(FakeRedis, "A", "master")
        dead = "127.0.0.1:%d" % free_port()  # nobody listens there
        port = free_port()
        gw = self.start(hc_definition("hcrefused", port, [good, dead],
                                      ext={"check_interval": "200ms", "check_fall": 2}))
        down = gw.wait_for_log(down_rx("hcrefused", dead), timeout=5 * SLACK)[0]
        self.assertRegex(down, r"is DOWN after 2 failed checks: connect: Connection refused$")
        self.assertEqual(self.names(port, 4), ["A"] * 4)
        self.assertExitClean(gw)
        st = gw.stats("hcrefused")
        self.assertEqual(st["connect_fail"], 0)  # the dead target was never tried
        self.assertNoServerErrors(good)

    def test_timeout_in_nanoseconds(self):
        silent = self.server(FakeRedis, "S", "silent")
        port = free_port()
        gw = self.start(hc_definition(
            "hcns", port, [silent],
            checks=[check_entry(silent.address, timeout=500000000)],  # Tyk's 0.5 s
            ext={"check_interval": "5s", "check_fall": 1}))
        t0 = self.started_at(gw)
        down = gw.wait_for_log(down_rx("hcns", silent.address), timeout=5 * SLACK)[0]
        self.assertRegex(down, r'step 2 expect "\+PONG": got "" after 0\.[4-7]s$')
        self.assertGreaterEqual(log_time(down) - t0, 0.4)
        self.assertLess(log_time(down) - t0, 0.5 + SLACK)
        self.assertExitClean(gw)
        self.assertNoServerErrors(silent)

    # ---- TLS and PROXY headers ----------------------------------------------------------

    def make_certs(self):
        """A CA and a server certificate for "localhost", made with openssl."""
        if shutil.which("openssl") is None:
            self.skipTest("no openssl command")
        d = tempfile.mkdtemp(prefix="tcpgate-hc-")
        self.addCleanup(shutil.rmtree, d, True)
        p = lambda name: os.path.join(d, name)  # noqa: E731
        with open(p("ext.cnf"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n"
                    "extendedKeyUsage=serverAuth\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        cmds = [
            ["openssl", "req", "-x509"] + ec + ["-keyout", p("ca.key"), "-out", p("ca.pem"),
             "-days", "2", "-subj", "/CN=tcpgate hc test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["openssl", "req"] + ec + ["-keyout", p("srv.key"), "-out", p("srv.csr"),
             "-subj", "/CN=localhost"],
            ["openssl", "x509", "-req", "-in", p("srv.csr"), "-CA", p("ca.pem"),
             "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p("srv.pem"), "-days", "2",
             "-extfile", p("ext.cnf")],
        ]
        for c in cmds:
            r = subprocess.run(c, capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr.decode("utf-8", "replace"))
        return p("ca.pem"), p("srv.pem"), p("srv.key")

    def test_tls_check_sends_sni(self):
        ca, cert, key = self.make_certs()
        peer = self.server(TlsFakeRedis, "T", cert, key)
        target = "tls://localhost:%d" % peer.port
        port = free_port()
        gw = self.start(hc_definition(
            "hctls", port, [target], checks=[check_entry(target, timeout="2s")],
            ext={"check_interval": "5s", "check_fall": 1, "upstream_ca_file": ca}))
        up = gw.wait_for_log(up_rx("hctls", "localhost:%d" % peer.port), timeout=5 * SLACK)
        self.assertIn("first check passed", up[0])
        self.assertGreaterEqual(peer.check_count(), 1)
        self.assertIn("localhost", peer.sni)
        self.assertEqual(set(peer.sni), {"localhost"})
        # Traffic goes through the same upstream TLS.
        self.assertEqual(self.names(port, 1), ["T"])
        self.assertExitClean(gw)
        self.assertEqual(self.health_lines(gw, "hctls", "localhost:%d" % peer.port, "DOWN"), [])
        self.assertNoServerErrors(peer)

    def test_tls_peer_closing_without_close_notify(self):
        # A peer that answers and then closes its TCP connection without a TLS
        # close_notify (as many servers, and Python, do) has closed the stream:
        # an expect_not over TLS must judge it like the same peer over plain
        # TCP - answered without "-ERR", then closed: passed.
        ca, cert, key = self.make_certs()
        tls_peer = self.server(TlsFakeRedis, "T", cert, key, behaviour="pong-close")
        tcp_peer = self.server(FakeRedis, "P", "pong-close")
        target = "tls://localhost:%d" % tls_peer.port
        cmds = [{"name": "send", "message": "PING\r\n"},
                {"name": "expect_not", "message": "-ERR"}]
        port = free_port()
        gw = self.start(hc_definition(
            "hcdirty", port, [target, tcp_peer.address],
            checks=[check_entry(target, cmds, timeout="2s"),
                    check_entry(tcp_peer.address, cmds, timeout="2s")],
            ext={"check_interval": "5s", "check_fall": 1, "upstream_ca_file": ca}))
        tls_name = "localhost:%d" % tls_peer.port
        gw.wait_for_log(up_rx("hcdirty", tcp_peer.address), timeout=5 * SLACK)
        gw.wait_for_log(r"health: api_id=hcdirty target %s is (UP|DOWN)" % re.escape(tls_name),
                        timeout=5 * SLACK)
        self.assertExitClean(gw)
        self.assertEqual(set(tls_peer.sni), {"localhost"})
        self.assertGreaterEqual(tls_peer.check_count(), 1)
        down = self.health_lines(gw, "hcdirty", tls_name, "DOWN")
        self.assertEqual(down, [], "the TLS check failed where the plain one passed")
        self.assertEqual(len(self.health_lines(gw, "hcdirty", tls_name, "UP")), 1)
        # Whatever happens, a reason never reads "(Success)".
        self.assertFalse([l for l in gw.log_lines() if "(Success)" in l])
        self.assertNoServerErrors(tls_peer, tcp_peer)

    def test_proxy_header_v2_local(self):
        peer = self.server(FakeRedis, "A", "master")
        port = free_port()
        gw = self.start(hc_definition(
            "hcpp2", port, [peer],
            checks=[check_entry(peer.address, enable_proxy_protocol=True)],
            ext={"check_interval": "5s", "check_fall": 1}))
        gw.wait_for_log(up_rx("hcpp2", peer.address), timeout=5 * SLACK)
        self.assertEqual(self.names(port, 1), ["A"])
        self.assertExitClean(gw)
        checks = [h for h in peer.headers if h[0] == "check"]
        self.assertGreaterEqual(len(checks), 1)
        for _, hdr, _ in checks:
            # Signature, version 2 / LOCAL, AF_UNSPEC, no address block; and
            # then the check's own bytes (the peer read PING right after it).
            self.assertEqual(hdr, PP2_SIG + b"\x20\x00\x00\x00")
        # The check's header is the check's: traffic carries none.
        self.assertEqual([h[1] for h in peer.headers if h[0] == "traffic"], [None])
        self.assertNoServerErrors(peer)

    def test_proxy_header_v1_real_addresses(self):
        peer = self.server(FakeRedis, "A", "master")
        port = free_port()
        gw = self.start(hc_definition(
            "hcpp1", port, [peer],
            checks=[check_entry(peer.address, enable_proxy_protocol=True)],
            ext={"check_interval": "5s", "check_fall": 1, "check_proxy_protocol": "v1"}))
        gw.wait_for_log(up_rx("hcpp1", peer.address), timeout=5 * SLACK)
        self.assertExitClean(gw)
        checks = [h for h in peer.headers if h[0] == "check"]
        self.assertGreaterEqual(len(checks), 1)
        for _, hdr, sport in checks:
            self.assertEqual(hdr, b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (sport, peer.port))
        self.assertNoServerErrors(peer)

    # ---- fall and rise ----------------------------------------------------------------

    def test_fall_and_rise_counting(self):
        # Check by check: two failures (stays UP), a pass, three failures
        # (DOWN), a pass (stays DOWN), a failure, two passes (UP again).
        script = ["master", "slave-quit", "slave-quit", "master",
                  "slave-quit", "slave-quit", "slave-quit",
                  "master", "slave-quit", "master", "master"]
        peer = self.server(FakeRedis, "A",
                           lambda n: script[n] if n < len(script) else "master")
        port = free_port()
        gw = self.start(hc_definition("hcfall", port, [peer],
                                      ext={"check_interval": "200ms", "check_fall": 3,
                                           "check_rise": 2}),
                        log_level="debug")
        ups = gw.wait_for_log(up_rx("hcfall", peer.address), timeout=15 * SLACK, count=2)
        self.assertGreaterEqual(peer.check_count(), len(script))
        time.sleep(0.5)  # a few more (passing) rounds: nothing changes
        self.assertExitClean(gw)
        self.assertIn("is UP (first check passed; 1 passed check)", ups[0])
        self.assertIn("is UP (2 passed checks)", ups[1])
        downs = self.health_lines(gw, "hcfall", peer.address, "DOWN")
        self.assertEqual(len(downs), 1, downs)
        self.assertIn("is DOWN after 3 failed checks: step 4 expect", downs[0])
        self.assertEqual(len(self.health_lines(gw, "hcfall", peer.address, "UP")), 2)
        # The failures that changed nothing, and the state each left the host in.
        failed = [re.search(r"check failed \((\d+) in a row, (\w+)\)", l).groups()
                  for l in gw.log_lines() if "hcfall" in l and "check failed" in l]
        self.assertEqual(failed, [("1", "UP"), ("2", "UP"), ("1", "UP"), ("2", "UP"),
                                  ("1", "DOWN")])
        order = [l for l in gw.log_lines()
                 if "hcfall" in l and ("is UP" in l or "is DOWN" in l)]
        self.assertEqual([("UP" if "is UP" in l else "DOWN") for l in order],
                         ["UP", "DOWN", "UP"])
        self.assertNoServerErrors(peer)

    # ---- the balancer -------------------------------------------------------------------

    def test_concurrent_clients_avoid_the_down_host(self):
        good = self.server(FakeRedis, "A", "master")
        bad = self.server(FakeRedis, "B", "slave-quit")
        port = free_port()
        gw = self.start(hc_definition("hcconc", port, [good, bad],
                                      ext={"check_interval": "200ms", "check_fall": 1}))
        gw.wait_for_log(up_rx("hcconc", good.address), timeout=5 * SLACK)
        gw.wait_for_log(down_rx("hcconc", bad.address), timeout=5 * SLACK)
        results, errors = [], []
        lock = threading.Lock()
        barrier = threading.Barrier(10, timeout=10)

        def client():
            try:
                barrier.wait()
                s = socket.create_connection((HOST, port), timeout=10)
                try:
                    s.sendall(b"HELLO\n")
                    s.settimeout(10)
                    data = b""
                    while b"\n" not in data:
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        data += chunk
                    with lock:
                        results.append(data.decode().strip())
                finally:
                    s.close()
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running")
        self.assertEqual(errors, [])
        self.assertEqual(results, ["I am A"] * 10)
        self.assertEqual(bad.traffic, 0)
        self.assertExitClean(gw)
        conns = gw.conns("hcconc")
        self.assertEqual(len(conns), 10)
        self.assertEqual({c["target"] for c in conns}, {good.address})
        self.assertEqual({c["attempts"] for c in conns}, {"1"})
        self.assertEqual(gw.stats("hcconc")["no_upstream"], 0)
        self.assertNoServerErrors(good, bad)

    def test_all_hosts_down_fails_fast(self):
        a = self.server(FakeRedis, "A", "slave-quit")
        b = self.server(FakeRedis, "B", "slave-quit")
        port = free_port()
        gw = self.start(hc_definition("hcalldown", port, [a, b],
                                      ext={"check_interval": "200ms", "check_fall": 1,
                                           "connect_timeout": "5s"}))
        gw.wait_for_log(down_rx("hcalldown", a.address), timeout=5 * SLACK)
        gw.wait_for_log(down_rx("hcalldown", b.address), timeout=5 * SLACK)
        s = self.connect(port)
        t0 = time.monotonic()
        s.sendall(b"HELLO\n")
        how = wait_closed(s, 5.0)
        took = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"))
        self.assertLess(took, 1.5 * SLACK)  # well under the 5 s connect timeout
        warn = gw.wait_for_log(r"api_id=hcalldown client=127\.0\.0\.1:\d+ no target may be "
                               r"picked", timeout=5)
        self.assertIn(" warn ", warn[0])
        self.assertExitClean(gw)
        conns = gw.conns("hcalldown")
        self.assertEqual(len(conns), 1)
        self.assertEqual(conns[0]["end"], "connect_failed")
        self.assertEqual(conns[0].get("error"), "no_healthy_target")
        self.assertEqual(conns[0]["target"], "-")
        st = gw.stats("hcalldown")
        self.assertEqual(st["no_upstream"], 1)
        self.assertEqual(st["connect_fail"], 0)
        self.assertEqual(a.traffic + b.traffic, 0)
        self.assertNoServerErrors(a, b)

    def test_startup_waits_for_a_first_verdict(self):
        # A is the master, but its first check answers only after ~1 s; B fails
        # its first check at once. A client arriving at start is held until A
        # passes, then sent to A: never closed, never sent to B.
        good = self.server(FakeRedis, "A", lambda n: ("slow", 1.0) if n == 0 else "master")
        bad = self.server(FakeRedis, "B", "slave-quit")
        port = free_port()
        gw = self.start(hc_definition(
            "hcwait", port, [bad, good],
            checks=[check_entry(bad.address, timeout="3s"),
                    check_entry(good.address, timeout="3s")],
            ext={"check_interval": "5s", "check_fall": 1, "connect_timeout": "5s"}))
        t0 = time.monotonic()
        name, s = self.hello(port, timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(name, "A")
        self.assertGreaterEqual(took, 0.6)  # held while A's check ran
        self.assertLess(took, 4.5)  # not the whole connect timeout
        up = gw.wait_for_log(up_rx("hcwait", good.address), timeout=5)[0]
        down = gw.wait_for_log(down_rx("hcwait", bad.address), timeout=5)[0]
        self.assertLess(log_time(down), log_time(up))  # B was known down first
        s.sendall(b"ping\n")
        self.assertEqual(s.recv(16), b"ping\n")
        s.close()
        self.assertExitClean(gw)
        conns = gw.conns("hcwait")
        self.assertEqual(len(conns), 1)
        self.assertEqual(conns[0]["target"], good.address)
        self.assertEqual(conns[0]["attempts"], "1")
        self.assertEqual(conns[0]["end"], "closed")
        self.assertEqual(bad.traffic, 0)
        self.assertEqual(gw.stats("hcwait")["no_upstream"], 0)
        self.assertNoServerErrors(good, bad)

    # ---- live connections -------------------------------------------------------------

    def test_on_marked_down_close_and_keep(self):
        failing = threading.Event()
        behaviour = lambda n: "slave-quit" if failing.is_set() else "master"  # noqa: E731
        pc = self.server(FakeRedis, "C", behaviour)
        pk = self.server(FakeRedis, "K", behaviour)
        port_c, port_k = free_port(), free_port()
        common = {"check_interval": "200ms", "check_fall": 1}
        gw = self.start(
            hc_definition("hcclose", port_c, [pc], ext=dict(common, on_marked_down="close")),
            hc_definition("hckeep", port_k, [pk], ext=dict(common)))  # default: keep
        gw.wait_for_log(up_rx("hcclose", pc.address), timeout=5 * SLACK)
        gw.wait_for_log(up_rx("hckeep", pk.address), timeout=5 * SLACK)
        name_c, sc = self.hello(port_c)
        name_k, sk = self.hello(port_k)
        self.assertEqual((name_c, name_k), ("C", "K"))
        for s in (sc, sk):
            s.sendall(b"one\n")
            self.assertEqual(s.recv(16), b"one\n")
        failing.set()
        gw.wait_for_log(down_rx("hcclose", pc.address), timeout=5 * SLACK)
        gw.wait_for_log(down_rx("hckeep", pk.address), timeout=5 * SLACK)
        # "close": the live connection to the host marked down ends.
        self.assertIn(wait_closed(sc, 3.0 * SLACK), ("eof", "reset"))
        # "keep": it carries on, for as long as its client likes.
        self.assertEqual(wait_closed(sk, 0.7), "open")
        sk.sendall(b"two\n")
        sk.settimeout(5)
        self.assertEqual(sk.recv(16), b"two\n")
        sk.close()
        self.assertExitClean(gw)
        cc = gw.conns("hcclose")
        self.assertEqual(len(cc), 1)
        self.assertEqual(cc[0]["end"], "upstream_down")
        self.assertEqual(cc[0].get("error"), "marked_down")
        ck = gw.conns("hckeep")
        self.assertEqual(len(ck), 1)
        self.assertEqual(ck[0]["end"], "closed")
        self.assertEqual(gw.stats("hcclose")["closed_on_down"], 1)
        self.assertEqual(gw.stats("hckeep")["closed_on_down"], 0)
        self.assertNoServerErrors(pc, pk)

    # ---- Tyk's layout ---------------------------------------------------------------------

    def test_tyk_docs_layout(self):
        good = self.server(FakeRedis, "A", "master")
        bad = self.server(FakeRedis, "B", "slave-quit")
        port = free_port()
        plain = [
            {"name": "send", "message": "PING\r\n"},
            {"name": "expect", "message": "+PONG"},
            {"name": "send", "message": "INFO replication\r\n"},
            {"name": "expect", "message": "role:master"},
            {"name": "send", "message": "QUIT\r\n"},
        ]
        # As Tyk's docs write it: the two switches at the top level, bare
        # host:port urls, no protocol, timeouts in nanoseconds, no "tcpgate".
        d = {
            "api_id": "hctyk", "name": "Redis", "listen_port": port, "protocol": "tcp",
            "enable_load_balancing": True,
            "check_host_against_uptime_tests": True,
            "proxy": {"target_list": [good.address, bad.address]},
            "uptime_tests": {"check_list": [
                {"url": good.address, "timeout": 1000000000, "commands": plain},
                {"url": bad.address, "timeout": 1000000000, "commands": plain},
            ]},
        }
        # The gateway's uptime_tests config gives the defaults: fall 1, every 1 s.
        gw = self.start(d, config={"uptime_tests": {"config": {
            "failure_trigger_sample_size": 1, "time_wait": 1}}})
        gw.wait_for_log(up_rx("hctyk", good.address), timeout=5 * SLACK)
        down = gw.wait_for_log(down_rx("hctyk", bad.address), timeout=5 * SLACK)[0]
        self.assertIn("is DOWN after 1 failed check: step 4 expect \"role:master\"", down)
        self.assertEqual(self.names(port, 6), ["A"] * 6)
        warns = [l for l in gw.log_lines() if re.search(r"Z warn\s", l)]
        self.assertTrue(any("proxy.enable_load_balancing" in l for l in warns), warns)
        self.assertTrue(any("proxy.check_host_against_uptime_tests" in l for l in warns), warns)
        self.assertExitClean(gw)
        self.assertEqual(bad.traffic, 0)
        self.assertNoServerErrors(good, bad)


if __name__ == "__main__":
    unittest.main(verbosity=2)
