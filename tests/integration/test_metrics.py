"""Prometheus metrics on the admin API (GET /metrics): each family moves when
the event it counts happens, by the amount expected, and each gauge reads
the condition while it holds and 0 once it has ended.

Per definition (Envoy's TCP proxy names): connections and bytes, flow control
and buffered bytes (plain and TLS relays), idle timeout, max duration,
upstream flush after a client failure, connect failures and timeouts, no
healthy target, closed on down, drain at shutdown, upstream TLS, connection
limits.
Per target: connections, connect failures and timeouts, the check states.
Per port: no route, client TLS handshakes, resumptions and failures by
reason, SNI not found, bad ClientHellos, PROXY headers accepted and rejected
by reason, the gateway's and the per-source connection limits.
Gateway: definitions, errors, ports, reloads, start time, access-log lines
dropped.

Each test drives several events against one gateway; waits are bounded and
values are read through Gateway.wait_metrics (counters are summed from the
workers when read, so a value may trail its event by a moment)."""

import json
import os
import select
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, MiB, BlackholeListener, BlastServer, EchoServer, GatewayTestCase,
                     NameServer, ThreadedServer, definition, free_port, free_ports, metric_key,
                     recv_exact, recv_until_eof, wait_closed)
from test_healthcheck import FakeRedis, check_entry, hc_definition
from tlsutil import (BioClient, TLSNameServer, TLSTestCase, client_context, server_context,
                     tls_fetch)


def A(name, api_id):
    """A per-definition sample."""
    return metric_key(name, api_id=api_id)


def T(name, api_id, target):
    """A per-target sample; target is the definition's label (tcp://h:p)."""
    return metric_key(name, api_id=api_id, target=target)


def P(name, port, reason=None):
    """A per-port sample."""
    if reason is None:
        return metric_key(name, port=str(port))
    return metric_key(name, port=str(port), reason=reason)


FAILURE_REASONS = ("protocol", "cipher", "client_certificate", "client_alert", "client_closed",
                   "timeout", "other")
PRX_REASONS = ("no_header", "bad_header", "truncated", "timeout", "untrusted")


def positive(v):
    return v is not None and v > 0


def at_least(n):
    return lambda v: v is not None and v >= n


# ---- peers --------------------------------------------------------------------------


class HeldReader(ThreadedServer):
    """An upstream that reads nothing until release is set. Meanwhile
    speak() makes it send a few bytes to its client. Once released it reads
    until it has `expect` bytes (then answers b"ok\\n" and reads on to EOF),
    or until EOF or a reset when expect is None. Puts (index, bytes read,
    "eof"|"reset"|"ok") in results."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = threading.Event()
        self.expect = None
        self._speak = threading.Event()

    def speak(self):
        self._speak.set()

    def handle(self, conn, index):
        deadline = time.monotonic() + self.HANDLER_DEADLINE
        spoke = False
        while not self.release.is_set():
            if self._speak.is_set() and not spoke:
                conn.sendall(b"s" * 100)
                spoke = True
            if self._stopping.wait(0.02) or time.monotonic() > deadline:
                return
        total = 0
        try:
            while self.expect is None or total < self.expect:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
            if self.expect is not None and total >= self.expect:
                conn.sendall(b"ok\n")
                self.results.put((index, total, "ok"))
                for _ in self.chunks(conn):
                    pass
                return
        except ConnectionResetError:
            self.results.put((index, total, "reset"))
            return
        self.results.put((index, total, "eof"))


def send_until_stuck(sock, limit=64 * MiB, timeout=15.0):
    """Sends from a non-blocking socket until the peer stops taking bytes for
    a while (0.4 s); returns how many bytes went."""
    sock.setblocking(False)
    block = os.urandom(1 << 16)
    sent = 0
    idle = 0
    deadline = time.monotonic() + timeout
    try:
        while sent < limit and time.monotonic() < deadline and idle < 20:
            try:
                sent += sock.send(block)
                idle = 0
            except BlockingIOError:
                idle += 1
                time.sleep(0.02)
    finally:
        sock.setblocking(True)
    return sent


def reset(sock):
    """Closes with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def finish(sock, timeout=10.0):
    """Half-closes, reads to EOF, closes: an orderly end."""
    sock.shutdown(socket.SHUT_WR)
    rest = recv_until_eof(sock, timeout=timeout)
    sock.close()
    return rest


# ---- per definition and per target -----------------------------------------------------


class ConnectionMetricsTest(GatewayTestCase):

    def test_connections_bytes_idle_and_max_duration(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port, idle_port, dur_port = free_ports(3)
        gw.add(definition("echo", port, echo.address))
        gw.add(definition("idle", idle_port, echo.address, ext={"idle_timeout": "1s"}))
        gw.add(definition("maxdur", dur_port, echo.address,
                          ext={"max_connection_duration": "1s", "idle_timeout": "10s"}))
        gw.start()
        target = "tcp://" + echo.address
        m = gw.metrics()
        for api_id in ("echo", "idle", "maxdur"):
            self.assertEqual(m[A("downstream_cx_total", api_id)], 0)
            self.assertEqual(m[A("downstream_cx_active", api_id)], 0)

        # The two timeouts run while the echo connections are used.
        idle = self.connect(idle_port)
        idle.sendall(b"ping")
        self.assertEqual(recv_exact(idle, 4), b"ping")
        dur = self.connect(dur_port)  # idle_timeout 10 s: only the 1 s limit can end it
        dur.sendall(b"tick")
        self.assertEqual(recv_exact(dur, 4), b"tick")

        one = self.connect(port)
        one.sendall(b"a" * 1000)
        self.assertEqual(recv_exact(one, 1000), b"a" * 1000)
        two = self.connect(port)
        two.sendall(b"b" * 234)
        self.assertEqual(recv_exact(two, 234), b"b" * 234)
        gw.wait_metrics({
            A("downstream_cx_total", "echo"): 2,
            A("downstream_cx_active", "echo"): 2,
            A("upstream_cx_total", "echo"): 2,
            A("downstream_cx_rx_bytes_total", "echo"): 1234,
            A("downstream_cx_tx_bytes_total", "echo"): 1234,
            T("target_cx_total", "echo", target): 2,
            T("target_cx_active", "echo", target): 2,
        })
        self.assertEqual(finish(one), b"")
        gw.wait_metrics({A("downstream_cx_active", "echo"): 1,
                         T("target_cx_active", "echo", target): 1})
        two.sendall(b"c" * 66)
        self.assertEqual(recv_exact(two, 66), b"c" * 66)
        self.assertEqual(finish(two), b"")
        m = gw.wait_metrics({
            A("downstream_cx_active", "echo"): 0,
            T("target_cx_active", "echo", target): 0,
            A("downstream_cx_rx_bytes_total", "echo"): 1300,
            A("downstream_cx_tx_bytes_total", "echo"): 1300,
        })
        self.assertEqual(m[A("downstream_cx_total", "echo")], 2)
        self.assertEqual(m[T("target_cx_total", "echo", "tcp://" + echo.address)], 2)

        self.assertIn(wait_closed(idle, 6.0), ("eof", "reset"), "idle connection still open")
        self.assertIn(wait_closed(dur, 6.0), ("eof", "reset"), "max duration did not close")
        m = gw.wait_metrics({
            A("idle_timeout", "idle"): 1,
            A("max_downstream_connection_duration", "maxdur"): 1,
            A("downstream_cx_active", "idle"): 0,
            A("downstream_cx_active", "maxdur"): 0,
            T("target_cx_active", "idle", target): 0,
            T("target_cx_active", "maxdur", target): 0,
        })
        # Each counts its own event only.
        self.assertEqual(m[A("idle_timeout", "maxdur")], 0)
        self.assertEqual(m[A("max_downstream_connection_duration", "idle")], 0)
        self.assertEqual(m[A("idle_timeout", "echo")], 0)
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)

    def test_connect_failures(self):
        a = self.server(NameServer, "A")
        # One draw for every port: "dead" must not be the gateway's own
        # listening or admin port, as a second draw could make it.
        dead, dead2, port, port2, admin = free_ports(5)  # nobody listens on dead, dead2
        gw = self.gateway(config={"control_api_port": admin})
        dead_t, dead2_t = "127.0.0.1:%d" % dead, "127.0.0.1:%d" % dead2
        # The first connection's turn is the first entry: the dead one.
        gw.add(definition("failover", port, targets=[dead_t, a.address]))
        gw.add(definition("alldead", port2, targets=[dead2_t], ext={"max_connect_attempts": 2}))
        gw.start()
        s = self.connect(port)
        self.assertEqual(recv_until_eof(s), b"A\n")
        s.close()
        s = self.connect(port2)
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()
        m = gw.wait_metrics({
            A("upstream_cx_connect_fail", "failover"): 1,
            A("upstream_cx_total", "failover"): 1,
            A("downstream_cx_active", "failover"): 0,
            A("upstream_cx_connect_fail", "alldead"): 2,
            A("upstream_cx_none_healthy", "alldead"): 1,
            A("downstream_cx_active", "alldead"): 0,
        })
        self.assertEqual(m[T("target_connect_fail_total", "failover", "tcp://" + dead_t)], 1)
        self.assertEqual(m[T("target_connect_fail_total", "failover", "tcp://" + a.address)], 0)
        self.assertEqual(m[T("target_cx_total", "failover", "tcp://" + a.address)], 1)
        self.assertEqual(m[T("target_cx_total", "failover", "tcp://" + dead_t)], 0)
        self.assertEqual(m[A("upstream_cx_none_healthy", "failover")], 0)
        self.assertEqual(m[A("upstream_cx_connect_timeout", "failover")], 0)
        self.assertEqual(m[T("target_connect_fail_total", "alldead", "tcp://" + dead2_t)], 2)
        self.assertEqual(m[A("downstream_cx_total", "alldead")], 1)
        self.assertEqual(m[A("upstream_cx_total", "alldead")], 0)
        self.assertExitClean(gw)
        self.assertNoServerErrors(a)

    def test_connect_timeout(self):
        hole = BlackholeListener().start()
        self.addCleanup(hole.stop)
        a = self.server(NameServer, "A")
        gw = self.gateway()
        port, port2 = free_ports(2)
        ext = {"connect_timeout": "500ms", "max_connect_attempts": 1}
        gw.add(definition("cto", port, targets=[hole.address], ext=ext))
        gw.add(definition("ctonext", port2, targets=[hole.address, a.address],
                          ext=dict(ext, max_connect_attempts=2)))
        gw.start()
        s = self.connect(port)
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()
        s = self.connect(port2)
        self.assertEqual(recv_until_eof(s), b"A\n")
        s.close()
        hole_t = "tcp://" + hole.address
        m = gw.wait_metrics({
            A("upstream_cx_connect_timeout", "cto"): 1,
            A("upstream_cx_none_healthy", "cto"): 1,
            A("upstream_cx_connect_timeout", "ctonext"): 1,
            A("upstream_cx_total", "ctonext"): 1,
        })
        self.assertEqual(m[T("target_connect_timeout_total", "cto", hole_t)], 1)
        self.assertEqual(m[T("target_connect_timeout_total", "ctonext", hole_t)], 1)
        self.assertEqual(m[T("target_connect_timeout_total", "ctonext", "tcp://" + a.address)], 0)
        self.assertEqual(m[A("upstream_cx_connect_fail", "cto")], 0)
        self.assertEqual(m[T("target_connect_fail_total", "cto", hole_t)], 0)
        self.assertEqual(m[A("upstream_cx_none_healthy", "ctonext")], 0)
        self.assertExitClean(gw)

    def test_definition_and_target_limits(self):
        """max_connections and max_connections_per_target: the connection
        over the limit is closed at once and counted; the gauges count only
        the connections held."""
        echo = self.server(EchoServer)
        gw = self.gateway()
        port, tport = free_ports(2)
        gw.add(definition("capped", port, echo.address, ext={"max_connections": 1}))
        gw.add(definition("tcap", tport, echo.address, ext={"max_connections_per_target": 1}))
        gw.start()
        target = "tcp://" + echo.address
        held = []
        for p in (port, tport):
            s = self.connect(p)
            s.sendall(b"held")
            self.assertEqual(recv_exact(s, 4), b"held")
            held.append(s)
            over = self.connect(p)
            self.assertIn(wait_closed(over, 5.0), ("eof", "reset"), "over the limit, still open")
            over.close()
        m = gw.wait_metrics({A("downstream_cx_overflow", "capped"): 1,
                             A("upstream_cx_overflow", "tcap"): 1,
                             A("downstream_cx_active", "capped"): 1,
                             A("downstream_cx_active", "tcap"): 1})
        self.assertEqual(m[A("upstream_cx_overflow", "capped")], 0)
        self.assertEqual(m[A("downstream_cx_overflow", "tcap")], 0)
        self.assertEqual(m[T("target_cx_active", "tcap", target)], 1)
        self.assertEqual(m[T("target_cx_total", "tcap", target)], 1)
        self.assertEqual(m[A("upstream_cx_none_healthy", "tcap")], 0)
        # Once the held ones end, the next ones get in.
        for s in held:
            self.assertEqual(finish(s), b"")
        gw.wait_metrics({A("downstream_cx_active", "capped"): 0,
                         A("downstream_cx_active", "tcap"): 0})
        for p in (port, tport):
            s = self.connect(p)
            s.sendall(b"next")
            self.assertEqual(recv_exact(s, 4), b"next")
            self.assertEqual(finish(s), b"")
        m = gw.wait_metrics({A("downstream_cx_active", "capped"): 0,
                             A("downstream_cx_active", "tcap"): 0,
                             T("target_cx_total", "tcap", target): 2})
        self.assertEqual(m[A("downstream_cx_overflow", "capped")], 1)
        self.assertEqual(m[A("upstream_cx_overflow", "tcap")], 1)
        self.assertExitClean(gw)

    def test_gateway_and_source_limits(self):
        """tcpgate.max_connections (2) and max_connections_per_source (1),
        the source being the PROXY header's: counted on the port."""
        echo = self.server(EchoServer)
        gw = self.gateway(config={"listen_address": HOST, "tcpgate": {
            "max_connections": 2, "max_connections_per_source": 1}})
        port = free_port()
        gw.add(definition("pp", port, echo.address, enable_proxy_protocol=True,
                          ext={"proxy_protocol_trusted": ["127.0.0.1/32"]}))
        gw.start()

        def via(src):
            s = self.connect(port)
            s.sendall(b"PROXY TCP4 %s 192.0.2.100 40000 %d\r\nhey" % (src.encode(), port))
            return s

        first = via("192.0.2.1")
        self.assertEqual(recv_exact(first, 3), b"hey")
        same = via("192.0.2.1")  # the same source again: over its limit
        self.assertIn(wait_closed(same, 5.0), ("eof", "reset"))
        same.close()
        m = gw.wait_metrics({P("downstream_source_cx_overflow", port): 1})
        self.assertEqual(m[P("downstream_global_cx_overflow", port)], 0)
        second = via("192.0.2.2")
        self.assertEqual(recv_exact(second, 3), b"hey")
        third = self.connect(port)  # a third at once: over the gateway's 2
        self.assertIn(wait_closed(third, 5.0), ("eof", "reset"))
        third.close()
        m = gw.wait_metrics({P("downstream_global_cx_overflow", port): 1,
                             A("downstream_cx_active", "pp"): 2})
        self.assertEqual(m[P("downstream_source_cx_overflow", port)], 1)
        # The source and gateway overflows never reached the definition.
        self.assertEqual(m[A("downstream_cx_total", "pp")], 2)
        self.assertEqual(m[A("downstream_cx_overflow", "pp")], 0)
        for s in (first, second):
            self.assertEqual(finish(s), b"")
        gw.wait_metrics({A("downstream_cx_active", "pp"): 0})
        again = via("192.0.2.1")
        self.assertEqual(recv_exact(again, 3), b"hey")
        self.assertEqual(finish(again), b"")
        self.assertExitClean(gw)

    def test_upstream_flush_after_client_reset(self):
        """The client sends more than its upstream reads, then resets. What
        it had sent is still written upstream (upstream_flush_active is 1
        meanwhile), then the session ends. The plain relay learns of the
        reset when it next writes to the client, so the upstream says
        something first."""
        up = self.server(HeldReader)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("flush", port, up.address))
        gw.start()
        s = self.connect(port)
        sent = send_until_stuck(s)
        self.assertGreater(sent, 0)
        gw.wait_metrics({A("downstream_flow_control_paused_reading_total", "flush"): 1})
        reset(s)
        up.speak()
        m = gw.wait_metrics({A("upstream_flush_total", "flush"): 1,
                             A("upstream_flush_active", "flush"): 1})
        self.assertEqual(m[A("downstream_cx_active", "flush")], 1, "ended before the flush")
        up.release.set()
        gw.wait_metrics({A("upstream_flush_active", "flush"): 0,
                         A("downstream_cx_active", "flush"): 0,
                         A("upstream_flush_total", "flush"): 1,
                         A("downstream_cx_rx_bytes_buffered", "flush"): 0})
        up.results.get(timeout=10)
        gw.wait_for_log(r" conn .*api_id=flush .*end=client_error", timeout=5)
        self.assertExitClean(gw)

    def test_drain_at_shutdown(self):
        """After SIGTERM, the definition with a 1 s drain_timeout has its
        connection closed and counted while the other's (30 s) still runs,
        and the admin API still answers."""
        echo = self.server(EchoServer)
        gw = self.gateway()
        quick_port, slow_port = free_ports(2)
        gw.add(definition("quick", quick_port, echo.address, ext={"drain_timeout": "1s"}))
        gw.add(definition("slow", slow_port, echo.address))
        gw.start()
        quick = self.connect(quick_port)
        slow = self.connect(slow_port)
        for s in (quick, slow):
            s.sendall(b"hi")
            self.assertEqual(recv_exact(s, 2), b"hi")
        gw.wait_metrics({A("downstream_cx_active", "quick"): 1,
                         A("downstream_cx_active", "slow"): 1})
        gw.signal(signal.SIGTERM)
        gw.wait_for_log(r"received SIGTERM", timeout=5)
        self.assertIn(wait_closed(quick, 6.0), ("eof", "reset"))
        m = gw.wait_metrics({A("downstream_cx_drained", "quick"): 1,
                             A("downstream_cx_active", "quick"): 0})
        self.assertEqual(m[A("downstream_cx_drained", "slow")], 0)
        self.assertEqual(m[A("downstream_cx_active", "slow")], 1)
        # A reload asked for while shutting down is refused, and counted.
        status, _, body = gw.admin("/tyk/reload")
        self.assertEqual(status, 500, body)
        self.assertIn(b"shutting down", body)
        m = gw.metrics()
        self.assertEqual(m[metric_key("reloads_total", result="failed")], 1)
        self.assertEqual(m[metric_key("reload_last_success")], 0)
        slow.sendall(b"still")
        self.assertEqual(recv_exact(slow, 5), b"still")
        self.assertEqual(finish(slow), b"")
        self.assertEqual(gw.wait(timeout=10), 0, gw.log_tail())
        self.assertEqual(gw.stats("slow")["drained"], 0)


class FlowControlMetricsTest(GatewayTestCase):
    """A slow upstream and a slow client on the plain relay: reading pauses
    and resumes as often in both counters, and the buffered-bytes gauges show
    what the gateway holds while a side is stalled and 0 once it caught up."""

    def test_plain_relay_both_directions(self):
        held = self.server(HeldReader)
        total = 16 * MiB
        blast = self.server(BlastServer, total)
        gw = self.gateway()
        rx_port, tx_port = free_ports(2)
        gw.add(definition("slowup", rx_port, held.address))
        gw.add(definition("slowcli", tx_port, blast.address))
        gw.start()

        # Client to a stalled upstream.
        s = self.connect(rx_port, timeout=30)
        sent = send_until_stuck(s)
        stalled = gw.wait_metrics({A("downstream_flow_control_paused_reading_total", "slowup"):
                                   at_least(1)})
        rx_held = stalled[A("downstream_cx_rx_bytes_buffered", "slowup")]
        held.expect = sent
        held.release.set()
        self.assertEqual(recv_exact(s, 3), b"ok\n")
        self.assertEqual(held.results.get(timeout=10)[1:], (sent, "ok"))
        # Caught up, connection still open.
        m = gw.wait_metrics({A("downstream_cx_rx_bytes_total", "slowup"): sent,
                             A("downstream_cx_active", "slowup"): 1})
        paused = m[A("downstream_flow_control_paused_reading_total", "slowup")]
        self.assertEqual(m[A("downstream_flow_control_resumed_reading_total", "slowup")], paused)
        rx_after = m[A("downstream_cx_rx_bytes_buffered", "slowup")]
        s.close()

        # Upstream to a client that does not read.
        c = self.connect(tx_port, timeout=30)
        stalled = gw.wait_metrics({A("upstream_flow_control_paused_reading_total", "slowcli"):
                                   at_least(1)}, timeout=10)
        tx_held = stalled[A("downstream_cx_tx_bytes_buffered", "slowcli")]
        got = recv_exact(c, total, timeout=60)
        self.assertEqual(len(got), total)
        m = gw.wait_metrics({A("downstream_cx_tx_bytes_total", "slowcli"): total})
        paused = m[A("upstream_flow_control_paused_reading_total", "slowcli")]
        self.assertEqual(m[A("upstream_flow_control_resumed_reading_total", "slowcli")], paused)
        self.assertEqual(m[A("downstream_cx_active", "slowcli")], 1)
        tx_after = m[A("downstream_cx_tx_bytes_buffered", "slowcli")]
        self.assertEqual(finish(c), b"")
        m = gw.wait_metrics({A("downstream_cx_active", "slowcli"): 0,
                             A("downstream_cx_active", "slowup"): 0})
        self.assertEqual(m[A("downstream_cx_rx_bytes_buffered", "slowup")], 0)
        self.assertEqual(m[A("downstream_cx_tx_bytes_buffered", "slowcli")], 0)

        # The plain relay reports what it holds after each step, so the
        # gauges read the stalled bytes, and 0 again once caught up.
        with self.subTest("buffered gauges while stalled"):
            self.assertGreater(rx_held, 0, "downstream_cx_rx_bytes_buffered while the upstream "
                               "read nothing and the client was paused")
            self.assertGreater(tx_held, 0, "downstream_cx_tx_bytes_buffered while the client "
                               "read nothing and the upstream was paused")
        with self.subTest("buffered gauges once caught up"):
            self.assertEqual((rx_after, tx_after), (0, 0))
        self.assertExitClean(gw)
        self.assertNoServerErrors(blast)


# ---- TLS ------------------------------------------------------------------------------


def raw_exchange(port, data, shut=False, timeout=5.0):
    """Sends bytes on a fresh connection and waits for the gateway to close it."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return wait_closed(s, timeout)
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    finally:
        s.close()


class TLSMetricsTest(TLSTestCase):

    def test_client_handshakes_by_outcome(self):
        """Completed, resumed and failed handshakes (every reason) on TLS
        ports, and the ClientHello outcomes on an SNI passthrough port."""
        svc = self.server(NameServer, "svc")
        gw = self.gateway(workers=1, config={"tcpgate": {"handshake_timeout": "1s"}})
        t, mt, v13, pk = free_ports(4)
        gw.add(self.tls_def("term", t, svc.address, "localhost", domain="localhost"))
        gw.add(self.tls_def("mtls", mt, svc.address, "localhost", use_mutual_tls_auth=True,
                            client_certificates=[self.pki.cert("client")]))
        gw.add(self.tls_def("v13", v13, svc.address, "localhost",
                            ext={"tls_min_version": "1.3"}))
        gw.add(definition("pass-a", pk, svc.address, domain="a.example.com"))
        gw.add(definition("pass-b", pk, svc.address, domain="b.example.com"))
        gw.start()
        # Two clients that say nothing: closed by the 1 s handshake timeout.
        silent_t = self.connect(t)
        silent_pk = self.connect(pk)

        ctx12 = client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2)
        first = tls_fetch(t, ctx12, "localhost")
        self.assertServed(first, "svc", "localhost")
        again = tls_fetch(t, ctx12, "localhost", session=first.session)
        self.assertServed(again, "svc", "localhost", "resumed")
        self.assertTrue(again.reused, "the session was not resumed")
        self.assertServed(self.fetch(t, None), "svc", "localhost", "no SNI")
        self.assertServed(self.fetch(mt, "localhost", cert="client"), "svc", "localhost", "mTLS")

        # No definition for the name: refused in the handshake.
        self.assertRefusedName(self.fetch(t, "other.example.com"))
        # protocol: not TLS at all.
        raw_exchange(t, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # cipher: a TLS 1.2 client offering only a suite the listener lacks.
        got = tls_fetch(t, client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2,
                                          ciphers="AES128-SHA"), "localhost")
        self.assertFalse(got.ok, got)
        # client_alert: the client does not trust the gateway's certificate.
        distrust = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        distrust.load_verify_locations(self.pki.cert("wrong"))
        got = tls_fetch(t, distrust, "localhost")
        self.assertFalse(got.ok, got)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", got.error)
        # client_closed: a FIN instead of a ClientHello.
        raw_exchange(t, b"", shut=True)
        # other: a ChangeCipherSpec record before any ClientHello.
        raw_exchange(t, b"\x14\x03\x03\x00\x01\x01")
        # client_certificate: no certificate where one is required.
        got = self.fetch(mt, "localhost")
        self.assertFalse(got.ok, got)
        # protocol: TLS 1.2 where the definition requires 1.3.
        got = self.fetch(v13, "localhost", max_version=ssl.TLSVersion.TLSv1_2)
        self.assertFalse(got.ok, got)
        self.assertIn("PROTOCOL_VERSION", got.error)

        # The passthrough port: a handshake record that is no ClientHello, a
        # plain-text protocol, and a ClientHello for a name nobody serves.
        self.assertIn(raw_exchange(pk, b"\x16\x03\x01\x00\x06\x02\x00\x00\x02\x03\x03"),
                      ("eof", "reset"))
        self.assertIn(raw_exchange(pk, b"PING\r\n"), ("eof", "reset"))
        sock = self.connect(pk)
        hello = BioClient(client_context(self.pki), sock, "c.example.com").start()
        sock.sendall(hello)
        self.assertIn(wait_closed(sock, 5.0), ("eof", "reset"))
        sock.close()

        self.assertIn(wait_closed(silent_t, 5.0), ("eof", "reset"))
        self.assertIn(wait_closed(silent_pk, 5.0), ("eof", "reset"))

        want = {P("tls_handshakes_total", t): 3, P("tls_resumed_total", t): 1,
                P("tls_sni_not_found_total", t): 1, P("downstream_cx_no_route", t): 1,
                P("tls_handshakes_total", mt): 1, P("tls_resumed_total", mt): 0,
                P("tls_handshakes_total", v13): 0,
                P("bad_client_hello_total", pk): 1, P("tls_sni_not_found_total", pk): 1,
                P("downstream_cx_no_route", pk): 2}
        expected = {t: {"protocol": 1, "cipher": 1, "client_alert": 1, "client_closed": 1,
                        "timeout": 1, "other": 1},
                    mt: {"client_certificate": 1},
                    v13: {"protocol": 1},
                    pk: {"timeout": 1}}
        for port, reasons in expected.items():
            for reason in FAILURE_REASONS:
                want[P("tls_handshake_failures_total", port, reason)] = reasons.get(reason, 0)
        m = gw.wait_metrics(want)
        # Handshake figures are for TLS ports only.
        self.assertNotIn(P("tls_handshakes_total", pk), m)
        self.assertEqual(m[A("downstream_cx_total", "term")], 3)
        self.assertEqual(m[A("downstream_cx_active", "term")], 0)
        for port in (t, mt, v13):
            self.assertEqual(m[P("bad_client_hello_total", port)], 0)
        self.assertExitClean(gw)

    def test_upstream_tls(self):
        """tls:// targets: sessions resumed, a server that does not speak TLS,
        and a key that matches no pin."""
        up = self.server(TLSNameServer, "up", server_context(self.pki, "localhost"))
        plain = self.server(NameServer, "plain text")
        gw = self.gateway(workers=1)  # one worker: one session cache
        ok_port, plain_port, pin_port = free_ports(3)
        ca = {"upstream_ca_file": self.pki.cert("ca"), "max_connect_attempts": 1}
        target = "tls://127.0.0.1:%d" % up.port
        gw.add(definition("upok", ok_port, target, ext=ca))
        gw.add(definition("upplain", plain_port, "tls://" + plain.address, ext=ca))
        gw.add(definition("uppin", pin_port, target, ext=ca,
                          pinned_public_keys={"*": self.pki.spki_pin("example")}))
        gw.start()
        for _ in range(3):
            s = self.connect(ok_port)
            self.assertEqual(recv_exact(s, 3), b"up\n")
            self.assertEqual(finish(s), b"")
        for p in (plain_port, pin_port):
            s = self.connect(p)
            self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
            s.close()
        m = gw.wait_metrics({
            A("upstream_cx_total", "upok"): 3,
            A("upstream_tls_resumed_total", "upok"): 2,
            A("upstream_tls_handshake_failures_total", "upplain"): 1,
            A("upstream_cx_none_healthy", "upplain"): 1,
            A("upstream_tls_pin_mismatch_total", "uppin"): 1,
            A("upstream_cx_none_healthy", "uppin"): 1,
        })
        self.assertEqual(m[A("upstream_tls_handshake_failures_total", "upok")], 0)
        self.assertEqual(m[A("upstream_tls_pin_mismatch_total", "upok")], 0)
        # A pin mismatch is counted as such, not as a failed handshake.
        self.assertEqual(m[A("upstream_tls_handshake_failures_total", "uppin")], 0)
        self.assertEqual(m[A("upstream_cx_connect_fail", "upplain")], 1)
        self.assertEqual(m[A("upstream_cx_connect_fail", "uppin")], 1)
        self.assertEqual(m[T("target_connect_fail_total", "uppin", target)], 1)
        self.assertEqual(m[T("target_cx_total", "upok", target)], 3)
        self.assertExitClean(gw)
        # The refused upstream (its key matched no pin) saw the gateway leave
        # without a close_notify; the three others ended cleanly.
        self.assertEqual(sorted(up.results.get(timeout=5)["echoed"] for _ in range(3)), [0] * 3)

    def test_flow_control_through_tls(self):
        """The same stalls through a TLS-terminated port (bufferevent relay)."""
        held = self.server(HeldReader)
        total = 8 * MiB
        blast = self.server(BlastServer, total)
        gw = self.gateway()
        rx_port, tx_port = free_ports(2)
        gw.add(self.tls_def("tlsup", rx_port, held.address, "localhost"))
        gw.add(self.tls_def("tlscli", tx_port, blast.address, "localhost"))
        gw.start()

        sock = self.connect(rx_port, timeout=30)
        c = BioClient(client_context(self.pki), sock, "localhost", timeout=30)
        c.handshake()
        # More than the kernel's buffers on both legs hold.
        payload = os.urandom(MiB) * 32
        wire = c.encrypt(payload)
        sender = sock.dup()
        self.addCleanup(sender.close)
        done = threading.Event()

        def send():
            try:
                sender.settimeout(60)
                sender.sendall(wire)
            except OSError:
                pass
            done.set()

        th = threading.Thread(target=send, daemon=True)
        th.start()
        m = gw.wait_metrics({A("downstream_flow_control_paused_reading_total", "tlsup"):
                             at_least(1),
                             A("downstream_cx_rx_bytes_buffered", "tlsup"): positive},
                            timeout=10)
        held.expect = len(payload)
        held.release.set()
        self.assertEqual(c.recv_exact(3), b"ok\n")
        th.join(30)
        self.assertTrue(done.is_set())
        m = gw.wait_metrics({A("downstream_cx_rx_bytes_total", "tlsup"): len(payload),
                             A("downstream_cx_rx_bytes_buffered", "tlsup"): 0,
                             A("downstream_cx_active", "tlsup"): 1})
        paused = m[A("downstream_flow_control_paused_reading_total", "tlsup")]
        self.assertEqual(m[A("downstream_flow_control_resumed_reading_total", "tlsup")], paused)
        sender.close()
        sock.close()

        sock = self.connect(tx_port, timeout=30)
        c = BioClient(client_context(self.pki), sock, "localhost", timeout=30)
        c.handshake()
        gw.wait_metrics({A("upstream_flow_control_paused_reading_total", "tlscli"): at_least(1),
                         A("downstream_cx_tx_bytes_buffered", "tlscli"): positive}, timeout=10)
        self.assertEqual(len(c.recv_exact(total)), total)
        m = gw.wait_metrics({A("downstream_cx_tx_bytes_total", "tlscli"): total,
                             A("downstream_cx_tx_bytes_buffered", "tlscli"): 0,
                             A("downstream_cx_active", "tlscli"): 1})
        paused = m[A("upstream_flow_control_paused_reading_total", "tlscli")]
        self.assertEqual(m[A("upstream_flow_control_resumed_reading_total", "tlscli")], paused)
        sock.close()
        gw.wait_metrics({A("downstream_cx_active", "tlscli"): 0,
                         A("downstream_cx_active", "tlsup"): 0})
        self.assertExitClean(gw)


# ---- PROXY protocol -------------------------------------------------------------------------


class ProxyProtocolMetricsTest(GatewayTestCase):

    def test_accepted_and_rejected_by_reason(self):
        echo = self.server(EchoServer)
        gw = self.gateway(config={"listen_address": HOST})
        port, uport = free_ports(2)
        gw.add(definition("pp", port, echo.address, enable_proxy_protocol=True,
                          ext={"proxy_protocol_trusted": ["127.0.0.1/32"],
                               "proxy_protocol_timeout": "3s"}))
        gw.add(definition("ppu", uport, echo.address, enable_proxy_protocol=True,
                          ext={"proxy_protocol_trusted": ["10.0.0.0/8"]}))
        gw.start()
        # Stops inside its header: closed at the 3 s deadline.
        slow = self.connect(port)
        slow.sendall(b"PROXY TCP4 ")

        s = self.connect(port)
        s.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 %d\r\nhello" % port)
        self.assertEqual(recv_exact(s, 5), b"hello")
        self.assertEqual(finish(s), b"")
        v2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton("192.0.2.9")
              + socket.inet_aton("192.0.2.2") + struct.pack("!HH", 40001, port))
        s = self.connect(port)
        s.sendall(v2 + b"world!")
        self.assertEqual(recv_exact(s, 6), b"world!")
        self.assertEqual(finish(s), b"")

        cases = [(b"GET / HTTP/1.0\r\n\r\n", False),  # no_header
                 (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", False),  # bad_header
                 (b"PROXY TCP4 1.2", True)]  # truncated
        for data, shut in cases:
            self.assertIn(raw_exchange(port, data, shut), ("eof", "reset"))
        self.assertIn(raw_exchange(uport, b"PROXY TCP4 10.1.2.3 10.0.0.1 4000 80\r\nx"),
                      ("eof", "reset"))
        self.assertIn(wait_closed(slow, 6.0), ("eof", "reset"))

        want = {P("proxy_protocol_accepted_total", port): 2,
                P("proxy_protocol_accepted_total", uport): 0}
        for reason in PRX_REASONS:
            want[P("proxy_protocol_rejected_total", port, reason)] = 0 if reason == "untrusted" \
                else 1
            want[P("proxy_protocol_rejected_total", uport, reason)] = 1 if reason == "untrusted" \
                else 0
        m = gw.wait_metrics(want)
        # Only the accepted ones reached a definition.
        self.assertEqual(m[A("downstream_cx_total", "pp")], 2)
        self.assertEqual(m[A("downstream_cx_rx_bytes_total", "pp")], 11)
        self.assertEqual(m[A("downstream_cx_total", "ppu")], 0)
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)


# ---- health checks --------------------------------------------------------------------------


class GatedRedis(FakeRedis):
    """A FakeRedis that holds every connection until gate is set."""

    def __init__(self, name, behaviour="master", **kw):
        super().__init__(name, behaviour, **kw)
        self.gate = threading.Event()

    def serve(self, conn):
        self.gate.wait(15)
        super().serve(conn)

    def failures_among(self, n):
        """How many of the first n checks were answered as failures."""
        with self._lock:
            return sum(1 for _, _, b in self.checks[:n] if b != "master")


class HealthMetricsTest(GatewayTestCase):

    def test_check_states_and_closed_on_down(self):
        failing = threading.Event()
        a = self.server(GatedRedis, "A", lambda n: "slave-quit" if failing.is_set() else "master")
        b = self.server(FakeRedis, "B", ("slow", 0.5))
        port, slow_port = free_ports(2)
        ext = {"check_interval": "200ms", "check_fall": 1, "check_rise": 1,
               "on_marked_down": "close", "connect_timeout": "5s"}
        gw = self.gateway()
        gw.add(hc_definition("hc", port, [a], checks=[check_entry(a.address, timeout="5s")],
                             ext=ext))
        gw.add(hc_definition("hcslow", slow_port, [b],
                             checks=[check_entry(b.address, timeout="3s")],
                             ext={"check_interval": "200ms"}))
        gw.start()
        ta, tb = "tcp://" + a.address, "tcp://" + b.address

        def check_counts(m):
            """checks_total lies between the checks the peer had finished
            answering and those it had started; failures are exact."""
            checks = m[T("target_checks_total", "hc", ta)]
            started = a.check_count()
            self.assertLessEqual(checks, started)
            self.assertEqual(m[T("target_check_failures_total", "hc", ta)],
                             a.failures_among(int(checks)))

        # A's first check is held: no verdict yet.
        m = gw.metrics()
        self.assertEqual(m[T("target_health", "hc", ta)], -1)
        self.assertEqual(m[T("target_eligible", "hc", ta)], 0)
        self.assertEqual(m[T("target_checks_total", "hc", ta)], 0)
        self.assertEqual(m[T("target_check_transitions_total", "hc", ta)], 0)
        # A client arriving now waits for a verdict: accepted, not yet connected.
        s = self.connect(port)
        s.sendall(b"HELLO\n")
        gw.wait_metrics({A("downstream_cx_active", "hc"): 1})
        m = gw.metrics()
        self.assertEqual(m[T("target_cx_active", "hc", ta)], 0)
        a.gate.set()
        self.assertEqual(recv_exact(s, 7), b"I am A\n")
        m = gw.wait_metrics({T("target_health", "hc", ta): 1, T("target_eligible", "hc", ta): 1,
                             T("target_cx_active", "hc", ta): 1,
                             T("target_cx_total", "hc", ta): 1})
        self.assertEqual(m[T("target_check_transitions_total", "hc", ta)], 1)  # unknown -> up
        self.assertEqual(m[T("target_check_failures_total", "hc", ta)], 0)
        self.assertGreaterEqual(m[T("target_checks_total", "hc", ta)], 1)
        check_counts(m)

        # A fails its checks: marked down, its live connection closed.
        failing.set()
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()
        m = gw.wait_metrics({T("target_health", "hc", ta): 0, T("target_eligible", "hc", ta): 0,
                             A("upstream_cx_closed_on_down", "hc"): 1,
                             T("target_cx_active", "hc", ta): 0,
                             A("downstream_cx_active", "hc"): 0})
        self.assertEqual(m[T("target_check_transitions_total", "hc", ta)], 2)
        self.assertGreaterEqual(m[T("target_check_failures_total", "hc", ta)], 1)
        check_counts(m)
        # No target may be picked now: the next client is closed at once.
        s = self.connect(port)
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()
        m = gw.wait_metrics({A("upstream_cx_none_healthy", "hc"): 1})
        self.assertEqual(m[A("upstream_cx_connect_fail", "hc")], 0)
        self.assertEqual(m[A("upstream_cx_closed_on_down", "hc")], 1)

        # Passing again: up after one check (check_rise 1).
        failing.clear()
        m = gw.wait_metrics({T("target_health", "hc", ta): 1, T("target_eligible", "hc", ta): 1,
                             T("target_check_transitions_total", "hc", ta): 3})
        check_counts(m)

        # B answers each check after 0.5 s: the last check's duration says so.
        m = gw.wait_metrics({T("target_health", "hcslow", tb): 1,
                             T("target_checks_total", "hcslow", tb): at_least(1)})
        self.assertGreaterEqual(m[T("target_check_duration_seconds", "hcslow", tb)], 0.45)
        self.assertExitClean(gw)
        self.assertNoServerErrors(a, b)

    def test_unchecked_targets_have_no_check_samples(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("plain", port, echo.address))
        gw.start()
        m = gw.metrics()
        target = "tcp://" + echo.address
        self.assertEqual(m[T("target_cx_total", "plain", target)], 0)
        for name in ("target_health", "target_eligible", "target_checks_total",
                     "target_check_failures_total", "target_check_transitions_total",
                     "target_check_duration_seconds"):
            self.assertNotIn(T(name, "plain", target), m)
        self.assertExitClean(gw)


# ---- the gateway ------------------------------------------------------------------------------


class GatewayMetricsTest(GatewayTestCase):

    def test_definitions_reloads_and_start_time(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        p1, p2, p3 = free_ports(3)
        gw.add(definition("one", p1, echo.address))
        gw.add(definition("two", p2, echo.address))
        gw.add('{"api_id": "broken", "listen_port": ', name="broken.json")
        t0 = time.time()
        gw.start()
        t1 = time.time()

        def watched(n):
            """Waits for the folder watch's n-th reload, after a change."""
            gw.wait_for_log(r"reload \(app_path changed\)", timeout=10, count=n)
        m = gw.metrics()
        self.assertEqual(m[metric_key("definitions")], 2)
        self.assertEqual(m[metric_key("listening_ports")], 2)
        self.assertEqual(m[metric_key("definition_errors")], 1)
        self.assertEqual(m[metric_key("reloads_total", result="ok")], 0)
        self.assertEqual(m[metric_key("reloads_total", result="failed")], 0)
        self.assertEqual(m[metric_key("reload_last_success")], 1)
        self.assertEqual(m[metric_key("reload_last_timestamp_seconds")], 0)
        self.assertEqual(m[metric_key("access_log_dropped_total")], 0)
        start = m[metric_key("start_time_seconds")]
        self.assertTrue(int(t0) - 1 <= start <= t1 + 1, (t0, start, t1))

        # A reload with nothing changed: one more, successful.
        before = time.time()
        self.assertEqual(gw.admin("/tyk/reload")[0], 200)
        m = gw.metrics()
        self.assertEqual(m[metric_key("reloads_total", result="ok")], 1)
        self.assertEqual(m[metric_key("reload_last_success")], 1)
        stamp = m[metric_key("reload_last_timestamp_seconds")]
        self.assertTrue(int(before) - 1 <= stamp <= time.time() + 1, (before, stamp))

        # A third definition, the broken file gone: the folder watch reloads.
        os.remove(os.path.join(gw.apps, "broken.json"))
        gw.add(definition("three", p3, echo.address))
        watched(1)
        m = gw.wait_metrics({metric_key("definitions"): 3, metric_key("listening_ports"): 3,
                             metric_key("definition_errors"): 0,
                             metric_key("reloads_total", result="ok"): 2})
        self.assertEqual(m[metric_key("reloads_total", result="failed")], 0)
        self.assertEqual(m[A("downstream_cx_total", "three")], 0)

        # A definition whose port someone else holds: the reload fails, and
        # so does the next one asked for; the running set stays.
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind((HOST, 0))
        holder.listen(1)
        gw.add(definition("taken", holder.getsockname()[1], echo.address))
        watched(2)
        m = gw.wait_metrics({metric_key("reloads_total", result="failed"): 1,
                             metric_key("reload_last_success"): 0})
        self.assertEqual(gw.admin("/tyk/reload")[0], 500)
        m = gw.metrics()
        self.assertEqual(m[metric_key("reloads_total", result="failed")], 2)
        self.assertEqual(m[metric_key("reloads_total", result="ok")], 2)
        self.assertEqual(m[metric_key("reload_last_success")], 0)
        self.assertEqual(m[metric_key("definitions")], 3)
        self.assertEqual(m[metric_key("listening_ports")], 3)
        # And back.
        os.remove(os.path.join(gw.apps, "taken.json"))
        watched(3)
        m = gw.wait_metrics({metric_key("reloads_total", result="ok"): 3,
                             metric_key("reload_last_success"): 1})
        self.assertEqual(m[metric_key("reloads_total", result="failed")], 2)
        # The counters of a definition outlive reloads.
        s = self.connect(p1)
        s.sendall(b"x")
        self.assertEqual(recv_exact(s, 1), b"x")
        self.assertEqual(finish(s), b"")
        gw.wait_metrics({A("downstream_cx_total", "one"): 1})
        self.assertEqual(gw.admin("/tyk/reload")[0], 200)
        m = gw.metrics()
        self.assertEqual(m[A("downstream_cx_total", "one")], 1)
        self.assertEqual(m[metric_key("reloads_total", result="ok")], 4)
        self.assertExitClean(gw)

    def test_label_values_are_escaped(self):
        """An api_id may hold any character JSON allows: in a label, a
        backslash, a double quote and a newline are escaped as the text
        format says, so every sample stays one line."""
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        odd = 'we"ird\\id\nline two'
        gw.add(definition(odd, port, echo.address), name="odd.json")
        gw.start()
        s = self.connect(port)
        s.sendall(b"x")
        self.assertEqual(recv_exact(s, 1), b"x")
        self.assertEqual(finish(s), b"")
        escaped = odd.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        key = 'tcpgate_downstream_cx_total{api_id="%s"}' % escaped
        gw.wait_metrics({key: 1})
        status, _, body = gw.admin("/metrics")
        sample = r"^(# (HELP|TYPE) tcpgate_\w+ .+|tcpgate_\w+(\{.*\})? -?[0-9.e+]+)$"
        for line in body.decode().splitlines():
            self.assertRegex(line, sample)
        self.assertExitClean(gw)

    def test_access_log_lines_dropped_when_the_writer_is_stuck(self):
        """The access log is a FIFO nobody reads: the writer blocks, its queue
        fills, further lines are dropped and counted, and connections are
        still served. Every connection is then either a line or a drop."""
        tmp = tempfile.TemporaryDirectory(prefix="tcpgate-it-fifo-")
        self.addCleanup(tmp.cleanup)
        fifo = os.path.join(tmp.name, "access.fifo")
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        echo = self.server(EchoServer)
        gw = self.gateway(config={"tcpgate": {"access_log": fifo}})
        port, dead_port = free_port(), free_port()
        # Long lines (an api_id of 1500 bytes) fill the 4 MiB queue sooner.
        long_id = "x" * 1500
        gw.add(definition(long_id, port, "127.0.0.1:%d" % dead_port,
                          ext={"max_connect_attempts": 1}), name="long.json")
        echo_port = free_port()
        gw.add(definition("echo", echo_port, echo.address))
        gw.start()
        dropped_key = metric_key("access_log_dropped_total")
        conns = 0
        dropped = 0
        for _ in range(40):  # up to 6000 connections, checked every 150
            for _ in range(150):
                s = socket.create_connection((HOST, port), timeout=5)
                try:
                    wait_closed(s, 5.0)
                finally:
                    s.close()
                conns += 1
            dropped = gw.metrics()[dropped_key]
            if dropped > 0:
                break
        self.assertGreater(dropped, 0, "no line dropped after %d connections" % conns)
        # Still serving.
        s = self.connect(echo_port)
        s.sendall(b"served")
        self.assertEqual(recv_exact(s, 6), b"served")
        self.assertEqual(finish(s), b"")
        conns += 1
        gw.wait_metrics({A("downstream_cx_total", long_id): conns - 1,
                         A("downstream_cx_active", "echo"): 0})
        dropped = gw.metrics()[dropped_key]

        # Read the FIFO to its end (the gateway closes it when it exits).
        data = bytearray()
        errors = []

        def drain():
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    r, _, _ = select.select([reader], [], [], 0.5)
                    if not r:
                        continue
                    chunk = os.read(reader, 1 << 16)
                    if not chunk:  # no writer left
                        if not gw.running():
                            return
                        time.sleep(0.05)
                    data.extend(chunk)
            except OSError as e:
                errors.append(e)

        th = threading.Thread(target=drain, daemon=True)
        th.start()
        self.assertExitClean(gw, timeout=30)
        th.join(30)
        self.assertFalse(th.is_alive())
        self.assertEqual(errors, [])
        lines = data.decode().splitlines()
        for line in lines:
            json.loads(line)  # whole lines only
        self.assertEqual(len(lines) + dropped, conns,
                         "%d lines + %d dropped for %d connections" % (len(lines), dropped, conns))


if __name__ == "__main__":
    unittest.main(verbosity=2)
