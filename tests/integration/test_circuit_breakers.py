"""Connection limits: per definition (max_connections), per target
(max_connections_per_target), per client address and gateway-wide. The
connection over a limit is closed at once and counted; the connections within
it go on unharmed, and a freed slot is usable again."""

import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (EchoServer, GatewayTestCase, NameServer, definition, free_port,
                     recv_exact, recv_until_eof, run_tool, wait_closed)


class CircuitBreakerTest(GatewayTestCase):

    def hold(self, port, n):
        """n echoing connections, each proven through with a round trip."""
        socks = []
        for i in range(n):
            s = self.connect(port)
            msg = b"hold-%d\n" % i
            s.sendall(msg)
            self.assertEqual(recv_exact(s, len(msg), timeout=10), msg)
            socks.append(s)
        return socks

    def assert_refused_at_once(self, port):
        s = self.connect(port)
        s.sendall(b"x")
        self.assertIn(wait_closed(s, timeout=5), ("eof", "reset"))
        s.close()

    def assert_works(self, s, msg=b"still-here\n"):
        s.sendall(msg)
        self.assertEqual(recv_exact(s, len(msg), timeout=10), msg)

    def wait_metric(self, gw, key, want, timeout=10.0):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = gw.metrics().get(key)
            if got == want:
                return
            time.sleep(0.05)
        self.fail("%s = %r, expected %r" % (key, got, want))

    def test_max_connections_per_definition(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("capped", port, echo.address, ext={"max_connections": 3}))
        gw.start()
        held = self.hold(port, 3)
        for _ in range(2):
            self.assert_refused_at_once(port)
        for s in held:
            self.assert_works(s)
        self.wait_metric(gw, 'tcpgate_downstream_cx_overflow{api_id="capped"}', 2)
        held.pop().close()
        self.wait_metric(gw, 'tcpgate_downstream_cx_active{api_id="capped"}', 2)
        held += self.hold(port, 1)  # the freed slot is usable again
        for s in held:
            s.close()
        gw.stop()
        ends = [c["end"] for c in gw.conns("capped")]
        self.assertEqual(ends.count("overflow"), 2, ends)

    def test_max_connections_per_target(self):
        a, b = self.server(EchoServer), self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("pt", port, targets=[a.address, b.address],
                          ext={"max_connections_per_target": 2}))
        gw.start()
        held = self.hold(port, 4)  # both targets full
        m = gw.metrics()
        for t in (a, b):
            key = 'tcpgate_target_cx_active{api_id="pt",target="tcp://%s"}' % t.address
            self.assertEqual(m[key], 2, key)
        self.assert_refused_at_once(port)
        self.wait_metric(gw, 'tcpgate_upstream_cx_overflow{api_id="pt"}', 1)
        for s in held:
            self.assert_works(s)
        held.pop(0).close()  # a slot frees on one target: the next goes there
        self.wait_metric(gw, 'tcpgate_downstream_cx_active{api_id="pt"}', 3)
        held += self.hold(port, 1)
        for s in held:
            s.close()

    def test_full_target_is_skipped(self):
        a, b = self.server(NameServer, "A"), self.server(NameServer, "B")
        gw = self.gateway()
        port = free_port()
        gw.add(definition("skip", port, targets=[a.address, b.address],
                          ext={"max_connections_per_target": 1}))
        gw.start()
        first = self.connect(port)
        name = recv_exact(first, 2, timeout=10)
        # While the first holds its target, every other connection goes to
        # the other one, whatever the round robin would have said.
        other = b"B\n" if name == b"A\n" else b"A\n"
        for _ in range(3):
            s = self.connect(port)
            self.assertEqual(recv_until_eof(s, timeout=10), other)
            s.close()
            self.wait_metric(gw, 'tcpgate_downstream_cx_active{api_id="skip"}', 1)
        first.close()

    def test_per_source_and_gateway_wide(self):
        echo = self.server(EchoServer)
        gw = self.gateway(config={"tcpgate": {"max_connections_per_source": 2,
                                              "max_connections": 3}})
        p1, p2 = free_port(), free_port()
        gw.add(definition("one", p1, echo.address))
        gw.add(definition("two", p2, echo.address))
        gw.start()
        held = self.hold(p1, 2)
        self.assert_refused_at_once(p2)  # the same address, whatever the port
        self.wait_metric(gw, 'tcpgate_downstream_source_cx_overflow{port="%d"}' % p2, 1)
        # Another source address has its own count, but the gateway-wide
        # maximum of 3 still holds.
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        other.bind(("127.0.0.2", 0))
        other.settimeout(10)
        other.connect(("127.0.0.1", p2))
        other.sendall(b"ok\n")
        self.assertEqual(recv_exact(other, 3, timeout=10), b"ok\n")
        third = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        third.bind(("127.0.0.3", 0))
        third.settimeout(10)
        third.connect(("127.0.0.1", p2))
        self.assertIn(wait_closed(third, timeout=5), ("eof", "reset"))
        self.wait_metric(gw, 'tcpgate_downstream_global_cx_overflow{port="%d"}' % p2, 1)
        for s in held + [other]:
            self.assert_works(s)
            s.close()
        third.close()
        # Everything freed: both limits admit again.
        self.wait_metric(gw, 'tcpgate_downstream_cx_active{api_id="one"}', 0)
        self.wait_metric(gw, 'tcpgate_downstream_cx_active{api_id="two"}', 0)
        for s in self.hold(p1, 2):
            s.close()

    def test_invalid_limits_are_rejected(self):
        gw = self.gateway()
        gw.add(definition("bad", free_port(), "127.0.0.1:1", ext={"max_connections": -1}))
        rc, out, err = run_tool("--check", "--apps", gw.apps)
        self.assertEqual(rc, 1)
        self.assertIn("bad.json: tcpgate.max_connections: must be between 0", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
