"""Graceful shutdown: after SIGTERM the gateway stops accepting, live
connections keep working until they finish or the drain timeout ends them,
and the process exits 0."""

import signal
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (EchoServer, GatewayTestCase, definition, free_port, is_refused,
                     recv_exact, wait_closed)


class ShutdownTest(GatewayTestCase):

    def setup_echo(self, config=None, ext=None, api_id="live"):
        echo = self.server(EchoServer)
        gw = self.gateway(config=config)
        port = free_port()
        gw.add(definition(api_id, port, echo.address, ext=ext))
        gw.start()
        return echo, gw, port

    def exchange(self, sock, msg):
        sock.sendall(msg)
        self.assertEqual(recv_exact(sock, len(msg), timeout=10), msg)

    def sigterm(self, gw):
        gw.signal(signal.SIGTERM)
        gw.wait_for_log(r"received SIGTERM", timeout=5)

    def wait_refused(self, port, timeout=5.0):
        """True once connects to port are refused (5 in a row)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline and streak < 5:
            streak = streak + 1 if is_refused(port) else 0
            if streak == 0:
                time.sleep(0.05)
        return streak >= 5

    def test_live_connection_survives_sigterm(self):
        echo, gw, port = self.setup_echo()
        sock = self.connect(port)
        self.exchange(sock, b"before the signal")

        self.sigterm(gw)
        # The live connection still relays, both ways, after the signal.
        self.exchange(sock, b"after the signal")
        self.exchange(sock, b"x" * 100000)
        # New connections are refused.
        self.assertTrue(self.wait_refused(port), "new connections still accepted after SIGTERM")
        # The gateway waits for the live connection (the drain timeout is 30 s).
        self.exchange(sock, b"still here")
        self.assertTrue(gw.running(), "gateway exited with a connection still live")

        # The client finishes: the gateway exits promptly with 0.
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(wait_closed(sock, 5), "eof")
        sock.close()
        t0 = time.monotonic()
        rc = gw.wait(timeout=10)
        self.assertEqual(rc, 0, gw.log_tail())
        self.assertLess(time.monotonic() - t0, 5, "exit not prompt after the last close")
        self.assertTrue(gw.log_lines()[-1].endswith(" stopped"), gw.log_tail())
        live = [c for c in gw.conns("live") if c["end"] == "closed"]
        self.assertTrue(live, gw.log_tail())
        self.assertEqual(gw.conns("live")[0]["rx"], str(len(b"before the signal") + 100000
                                                         + len(b"after the signal")
                                                         + len(b"still here")))
        st = gw.stats("live")
        self.assertEqual(st["cx_active"], 0)
        self.assertEqual(st["drained"], 0)
        self.assertNoServerErrors(echo)

    def drained_after(self, gw, port, api_id):
        """An idle live connection is closed by the drain timeout (1 s)."""
        sock = self.connect(port)
        self.exchange(sock, b"hello")
        t0 = time.monotonic()
        self.sigterm(gw)
        # Within the drain window it still works.
        self.exchange(sock, b"during the drain")
        how = wait_closed(sock, timeout=8)
        elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"), "connection not closed 8 s after SIGTERM")
        self.assertGreater(elapsed, 0.5, "closed at once, not after the drain timeout")
        self.assertLess(elapsed, 4, "closed only %.2f s after SIGTERM" % elapsed)
        sock.close()
        self.assertEqual(gw.wait(timeout=5), 0, gw.log_tail())
        self.assertEqual([c["end"] for c in gw.conns(api_id)], ["drain"])
        self.assertEqual(gw.stats(api_id)["drained"], 1)
        self.assertTrue(gw.log_lines()[-1].endswith(" stopped"), gw.log_tail())

    def test_gateway_drain_timeout(self):
        _, gw, port = self.setup_echo(config={"tcpgate": {"drain_timeout": "1s"}})
        self.drained_after(gw, port, "live")
        self.assertTrue(any("up to 1000 ms" in l for l in gw.log_lines()), gw.log_tail())

    def test_graceful_shutdown_timeout_duration(self):
        """Tyk's name for the drain timeout, in seconds."""
        _, gw, port = self.setup_echo(config={"graceful_shutdown_timeout_duration": 1})
        self.drained_after(gw, port, "live")

    def test_definition_drain_timeout_caps_gateway(self):
        """A definition's own drain_timeout is shorter than the gateway's 30 s."""
        _, gw, port = self.setup_echo(ext={"drain_timeout": "1s"})
        self.drained_after(gw, port, "live")

    def test_second_sigterm_closes_at_once(self):
        _, gw, port = self.setup_echo()
        sock = self.connect(port)
        self.exchange(sock, b"hello")
        self.sigterm(gw)
        self.exchange(sock, b"still relayed")
        gw.signal(signal.SIGTERM)
        self.assertIn(wait_closed(sock, 5), ("eof", "reset"),
                      "connection still open 5 s after a second SIGTERM")
        sock.close()
        self.assertEqual(gw.wait(timeout=5), 0, gw.log_tail())
        self.assertEqual([c["end"] for c in gw.conns("live")], ["drain"])

    def test_sigint_without_connections(self):
        _, gw, port = self.setup_echo()
        gw.signal(signal.SIGINT)
        self.assertEqual(gw.wait(timeout=5), 0, gw.log_tail())
        self.assertTrue(any("received SIGINT" in l for l in gw.log_lines()), gw.log_tail())
        self.assertEqual(gw.stats("live")["cx_total"], 0)
        self.assertTrue(is_refused(port))


if __name__ == "__main__":
    unittest.main(verbosity=2)
