"""Limits: memory stays bounded with a slow reader; idle_timeout and
max_connection_duration close connections and say so in the log."""

import os
import re
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (MiB, SANITIZE, BlastServer, EchoServer, GatewayTestCase, definition,
                     free_port, recv_exact, wait_closed)

# How much the gateway's RSS may grow while a client reads nothing and the
# upstream pushes 200 MiB, and then while the client reads it all. ASan's
# shadow memory and allocator inflate this.
RSS_GROWTH_LIMIT_KB = (96 if SANITIZE else 32) * 1024


def small_quarantine_env():
    """ASan keeps freed memory in a quarantine of 256 MB by default before
    reusing it, so relaying 200 MiB through short-lived buffers grows RSS by
    up to that much without any leak. A 16 MB quarantine keeps the figure
    meaningful (still catches use-after-free of recent buffers)."""
    if not SANITIZE:
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16"}


class RssSampler:
    """Samples the gateway's RSS every 50 ms in a thread; keeps the maximum."""

    def __init__(self, gw):
        self.gw = gw
        self.max_kb = gw.rss_kb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.max_kb = max(self.max_kb, self.gw.rss_kb())
            except (OSError, AssertionError):
                return

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(5)


class LimitsTest(GatewayTestCase):

    def test_slow_reader_memory_bounded(self):
        total = 200 * MiB
        blast = self.server(BlastServer, total)
        gw = self.gateway(env=small_quarantine_env())
        port = free_port()
        gw.add(definition("slow", port, blast.address))
        gw.start()

        baseline = gw.rss_kb()
        sampler = RssSampler(gw).start()
        self.addCleanup(sampler.stop)
        sock = self.connect(port, timeout=30)
        # Read nothing for a while: the upstream keeps pushing as fast as it can.
        time.sleep(3)
        stall_max = sampler.max_kb
        self.assertLess(stall_max - baseline, RSS_GROWTH_LIMIT_KB,
                        "RSS grew from %d kB to %d kB while the client read nothing"
                        % (baseline, stall_max))
        self.assertTrue(blast.results.empty(), "the upstream could send all 200 MiB "
                        "while the client read nothing: the gateway buffered it")

        # Now read everything.
        got = 0
        deadline = time.monotonic() + 120
        sock.settimeout(30)
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 18)
            if not chunk:
                break
            got += len(chunk)
        sampler.stop()
        self.assertEqual(got, total)
        self.assertLess(sampler.max_kb - baseline, RSS_GROWTH_LIMIT_KB,
                        "RSS grew from %d kB to %d kB while relaying 200 MiB"
                        % (baseline, sampler.max_kb))
        self.assertEqual(blast.results.get(timeout=10), (0, total))
        sock.close()
        self.assertExitClean(gw)
        self.assertNoServerErrors(blast)
        st = gw.stats("slow")
        self.assertEqual(st["tx_bytes"], total)
        self.assertGreater(st["upstream_paused_reading"], 0)
        self.assertEqual([c["end"] for c in gw.conns("slow")], ["closed"])

    def test_idle_timeout(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("idle", port, echo.address, ext={"idle_timeout": "1s"}))
        gw.start()
        sock = self.connect(port)
        sock.sendall(b"ping")
        sock.settimeout(10)
        self.assertEqual(sock.recv(16), b"ping")
        t0 = time.monotonic()
        how = wait_closed(sock, timeout=6)
        elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"), "idle connection still open after 6 s")
        self.assertLess(elapsed, 3.5, "idle connection closed only after %.2f s" % elapsed)
        gw.wait_for_log(r" conn .*api_id=idle .*end=idle_timeout", timeout=5)
        sock.close()
        self.assertExitClean(gw)
        st = gw.stats("idle")
        self.assertEqual(st["idle_timeout"], 1)
        self.assertEqual([c["end"] for c in gw.conns("idle")], ["idle_timeout"])

    def test_busy_connection_not_idle(self):
        """Traffic in either direction keeps a connection alive past idle_timeout."""
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("busy", port, echo.address, ext={"idle_timeout": "1s"}))
        gw.start()
        sock = self.connect(port)
        sock.settimeout(5)
        for i in range(12):  # ~2.4 s, more than twice the idle timeout
            msg = b"msg-%02d" % i
            sock.sendall(msg)
            self.assertEqual(sock.recv(64), msg)
            time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(wait_closed(sock, 5), "eof")
        sock.close()
        self.assertExitClean(gw)
        self.assertEqual([c["end"] for c in gw.conns("busy")], ["closed"])

    def test_max_connection_duration(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("maxdur", port, echo.address,
                          ext={"max_connection_duration": "1s", "idle_timeout": "10s"}))
        gw.start()
        sock = self.connect(port)
        sock.settimeout(5)
        t0 = time.monotonic()
        echoed = 0
        closed = None
        for i in range(60):  # at most ~6 s of traffic every 100 ms
            msg = b"tick-%02d" % i
            try:
                sock.sendall(msg)
                reply = sock.recv(64)
            except (ConnectionResetError, BrokenPipeError):
                closed = "reset"
                break
            if not reply:
                closed = "eof"
                break
            self.assertEqual(reply, msg)
            echoed += 1
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(closed, "busy connection still open after %.1f s" % elapsed)
        self.assertGreaterEqual(echoed, 3, "the connection worked before the limit")
        self.assertLess(elapsed, 4, "closed only after %.2f s" % elapsed)
        gw.wait_for_log(r" conn .*api_id=maxdur .*end=max_duration", timeout=5)
        sock.close()
        self.assertExitClean(gw)
        self.assertEqual(gw.stats("maxdur")["max_duration"], 1)
        self.assertEqual([c["end"] for c in gw.conns("maxdur")], ["max_duration"])

    def test_out_of_descriptors_keeps_serving(self):
        """With its descriptors used up, the gateway keeps relaying for the
        connections it has, logs the accept failure once per interval rather
        than once per attempt, and accepts the waiting clients once
        descriptors free up."""
        echo = self.server(EchoServer)
        gw = self.gateway(workers=1, max_fds=64)
        port = free_port()
        gw.add(definition("fds", port, echo.address))
        gw.start()
        first = []
        for i in range(40):  # 40 clients need 80 descriptors in the gateway
            first.append(self.connect(port))
        # Which call meets the limit first, the accept or the upstream socket,
        # depends on how many descriptors the process holds already.
        emfile = r"(accept|upstream socket) failed: Too many open files"
        gw.wait_for_log(emfile, timeout=10)
        served = []
        for sock in first:  # the ones accepted before the limit still relay
            sock.settimeout(0.5)
            try:
                sock.sendall(b"ping")
                if sock.recv(16) == b"ping":
                    served.append(sock)
            except (socket.timeout, OSError):
                pass
        self.assertGreater(len(served), 5, "no connection relays while out of descriptors")
        self.assertLess(len(served), 40, "the limit was never reached")
        waiting = [s for s in first if s not in served]
        for sock in served:
            sock.close()
        # The clients that waited in the backlog are accepted and served now.
        outcomes = []
        for sock in waiting:
            try:
                sock.sendall(b"late")
                outcomes.append(recv_exact(sock, 8, timeout=10))  # "ping" + "late"
            except (OSError, AssertionError) as e:
                outcomes.append(repr(e))
            sock.close()
        self.assertEqual(outcomes, [b"pinglate"] * len(waiting))
        late = self.connect(port)
        late.sendall(b"after")
        self.assertEqual(late.recv(16), b"after")
        late.close()
        self.assertExitClean(gw)
        reports = [l for l in gw.log_lines() if re.search(emfile, l)]
        self.assertGreaterEqual(len(reports), 1)
        self.assertLessEqual(len(reports), 4, "accept errors logged per attempt:\n" +
                             "\n".join(reports))


if __name__ == "__main__":
    unittest.main(verbosity=2)
