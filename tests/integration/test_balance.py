"""Load balancing over proxy.target_list: round robin, weights by repetition,
dead targets skipped, all-dead and connect-timeout handling."""

import collections
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (BlackholeListener, GatewayTestCase, NameServer, definition, free_port,
                     free_ports, recv_until_eof, wait_closed)


class BalanceTest(GatewayTestCase):

    def start_gateway(self, api_id, targets, ext=None, workers=2):
        gw = self.gateway(workers=workers)
        port = free_port()
        gw.add(definition(api_id, port, targets=targets, ext=ext))
        gw.start()
        return gw, port

    def names(self, port, count):
        """count sequential connections; the name each backend sent."""
        got = []
        for _ in range(count):
            s = self.connect(port, timeout=10)
            got.append(recv_until_eof(s, timeout=10).decode().strip())
            s.close()
        return got

    def test_round_robin_three_backends(self):
        backends = [self.server(NameServer, n) for n in ("A", "B", "C")]
        gw, port = self.start_gateway("rr", [b.address for b in backends])
        got = self.names(port, 30)
        self.assertEqual(collections.Counter(got), {"A": 10, "B": 10, "C": 10}, got)
        # Round robin: each window of three consecutive connections hits all three.
        for i in range(0, 30, 3):
            self.assertEqual(sorted(got[i:i + 3]), ["A", "B", "C"], got)
        self.assertExitClean(gw)
        self.assertNoServerErrors(*backends)
        st = gw.stats("rr")
        self.assertEqual(st["cx_total"], 30)
        self.assertEqual(st["upstream_cx_total"], 30)
        self.assertEqual(st["connect_fail"], 0)
        self.assertEqual({c["end"] for c in gw.conns("rr")}, {"closed"})

    def test_weighted_by_repetition(self):
        a = self.server(NameServer, "A")
        b = self.server(NameServer, "B")
        gw, port = self.start_gateway("weighted", [a.address, a.address, b.address])
        got = self.names(port, 30)
        self.assertEqual(collections.Counter(got), {"A": 20, "B": 10}, got)
        self.assertExitClean(gw)
        self.assertNoServerErrors(a, b)

    def test_dead_target_is_skipped(self):
        a = self.server(NameServer, "A")
        b = self.server(NameServer, "B")
        dead = free_port()  # nobody listens here
        gw, port = self.start_gateway(
            "skipdead", [a.address, "127.0.0.1:%d" % dead, b.address])
        got = self.names(port, 30)
        self.assertEqual(len(got), 30)
        self.assertEqual(set(got), {"A", "B"}, got)  # every connection was served
        # The dead target's turn moves on to its successor, B.
        self.assertEqual(got.count("A"), 10, got)
        self.assertEqual(got.count("B"), 20, got)
        self.assertExitClean(gw)
        self.assertNoServerErrors(a, b)
        st = gw.stats("skipdead")
        self.assertEqual(st["cx_total"], 30)
        self.assertEqual(st["upstream_cx_total"], 30)
        self.assertEqual(st["no_upstream"], 0)
        self.assertEqual(st["connect_fail"], 10)  # the dead one's turn, once per round
        conns = gw.conns("skipdead")
        self.assertEqual({c["end"] for c in conns}, {"closed"})
        self.assertEqual(sum(c["attempts"] == "2" for c in conns), 10)
        self.assertTrue(any("127.0.0.1:%d" % dead in l and "failed" in l
                            for l in gw.log_lines()), "no log line about the dead target")

    def test_all_targets_dead(self):
        d1, d2 = free_ports(2)
        gw, port = self.start_gateway(
            "alldead", ["127.0.0.1:%d" % d1, "127.0.0.1:%d" % d2], ext={"connect_timeout": "1s"})
        clients = 4
        for _ in range(clients):
            s = self.connect(port, timeout=10)
            t0 = time.monotonic()
            how = wait_closed(s, timeout=5)
            elapsed = time.monotonic() - t0
            self.assertIn(how, ("eof", "reset"), "client not closed within 5 s")
            self.assertLess(elapsed, 2.5, "client closed only after %.2f s" % elapsed)
            s.close()
        self.assertExitClean(gw)
        st = gw.stats("alldead")
        self.assertEqual(st["cx_total"], clients)
        self.assertEqual(st["no_upstream"], clients)
        self.assertGreater(st["connect_fail"], 0)
        self.assertEqual(st["upstream_cx_total"], 0)
        self.assertEqual(st["cx_active"], 0)
        ends = [c["end"] for c in gw.conns("alldead")]
        self.assertEqual(ends, ["connect_failed"] * clients)

    def test_connect_timeout_then_next_target(self):
        hole = BlackholeListener().start()
        self.addCleanup(hole.stop)
        a = self.server(NameServer, "A")
        ext = {"connect_timeout": "500ms", "max_connect_attempts": 2}
        gw, port = self.start_gateway("cto", [hole.address, a.address], ext=ext)
        # The first connection starts at the black hole, times out, then gets A.
        s = self.connect(port, timeout=15)
        self.assertEqual(recv_until_eof(s, timeout=10), b"A\n")
        s.close()
        self.assertExitClean(gw)
        st = gw.stats("cto")
        self.assertEqual(st["connect_timeout"], 1)
        self.assertEqual(st["upstream_cx_total"], 1)
        self.assertEqual(st["no_upstream"], 0)
        self.assertTrue(any(hole.address in l and "timed out" in l for l in gw.log_lines()),
                        "no 'timed out' line for %s" % hole.address)

    def test_connect_timeout_only_target(self):
        hole = BlackholeListener().start()
        self.addCleanup(hole.stop)
        ext = {"connect_timeout": "500ms", "max_connect_attempts": 1}
        gw, port = self.start_gateway("cto1", [hole.address], ext=ext)
        s = self.connect(port, timeout=10)
        how = wait_closed(s, timeout=5)
        self.assertIn(how, ("eof", "reset"), "client not closed within 5 s")
        s.close()
        self.assertExitClean(gw)
        st = gw.stats("cto1")
        self.assertEqual(st["connect_timeout"], 1)
        self.assertEqual(st["no_upstream"], 1)
        self.assertEqual([c["end"] for c in gw.conns("cto1")], ["connect_failed"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
