"""Relay: bytes arrive intact in both directions, half-close works each way,
and many connections at once are kept apart."""

import hashlib
import os
import selectors
import socket
import struct
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (MiB, BlackholeListener, EchoServer, GatewayTestCase, HashReplyServer,
                     ResetServer, SendThenHalfCloseServer, definition, free_port, recv_exact,
                     recv_until_eof, sha256, wait_closed)


class RelayTest(GatewayTestCase):

    def start_gateway(self, api_id, target, **kw):
        gw = self.gateway(**kw)
        port = free_port()
        gw.add(definition(api_id, port, target))
        gw.start()
        return gw, port

    def test_8mib_each_way_concurrently(self):
        echo = self.server(EchoServer)
        gw, port = self.start_gateway("relay", echo.address)
        data = os.urandom(8 * MiB)
        sock = self.connect(port, timeout=60)

        got = {"n": 0, "h": hashlib.sha256(), "err": None}

        def reader():
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        return
                    got["n"] += len(chunk)
                    got["h"].update(chunk)
            except OSError as e:
                got["err"] = e

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        view = memoryview(data)
        for off in range(0, len(data), MiB):
            sock.sendall(view[off:off + MiB])
        sock.shutdown(socket.SHUT_WR)
        t.join(60)
        self.assertFalse(t.is_alive(), "reader still waiting for EOF after 60 s")
        self.assertIsNone(got["err"])
        self.assertEqual(got["n"], len(data))
        self.assertEqual(got["h"].hexdigest(), sha256(data))
        sock.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)
        conns = gw.conns("relay")
        self.assertEqual(len(conns), 1, conns)
        self.assertEqual(conns[0]["end"], "closed")
        self.assertEqual(int(conns[0]["rx"]), len(data))
        self.assertEqual(int(conns[0]["tx"]), len(data))
        self.assertEqual(conns[0]["target"], echo.address)
        st = gw.stats("relay")
        self.assertEqual(st["cx_total"], 1)
        self.assertEqual(st["cx_active"], 0)
        self.assertEqual(st["rx_bytes"], len(data))
        self.assertEqual(st["tx_bytes"], len(data))
        self.assertEqual(st["upstream_cx_total"], 1)

    def test_half_close_client_to_upstream(self):
        """The client sends and shuts its write side; the upstream replies only
        after that FIN, and the client still receives the whole reply."""
        srv = self.server(HashReplyServer)
        gw, port = self.start_gateway("hc1", srv.address)
        data = os.urandom(3 * MiB + 17)
        sock = self.connect(port, timeout=30)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(sock, timeout=30)
        self.assertEqual(reply, b"%d %s\n" % (len(data), sha256(data).encode()))
        sock.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(srv)
        conns = gw.conns("hc1")
        self.assertEqual([c["end"] for c in conns], ["closed"])
        self.assertEqual(int(conns[0]["rx"]), len(data))
        self.assertEqual(int(conns[0]["tx"]), len(reply))

    def test_half_close_upstream_to_client(self):
        """The upstream sends and shuts its write side first; the client gets
        all of it and the EOF, then keeps sending, and the upstream still
        receives everything the client sent."""
        down = os.urandom(2 * MiB + 5)
        srv = self.server(SendThenHalfCloseServer, down)
        gw, port = self.start_gateway("hc2", srv.address)
        sock = self.connect(port, timeout=30)
        received = recv_until_eof(sock, timeout=30)
        self.assertEqual(len(received), len(down))
        self.assertEqual(sha256(received), sha256(down))

        # After the upstream's FIN the client -> upstream direction stays open.
        up = os.urandom(2 * MiB + 11)
        sock.sendall(up)
        sock.shutdown(socket.SHUT_WR)
        _, n, digest = srv.results.get(timeout=30)
        self.assertEqual(n, len(up))
        self.assertEqual(digest, sha256(up))
        # Both sides are done: the gateway ends the connection.
        self.assertEqual(recv_until_eof(sock, timeout=10), b"")
        sock.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(srv)
        conns = gw.conns("hc2")
        self.assertEqual([c["end"] for c in conns], ["closed"])
        self.assertEqual(int(conns[0]["rx"]), len(up))
        self.assertEqual(int(conns[0]["tx"]), len(down))

    def test_data_and_fin_sent_while_connecting(self):
        """Bytes and the FIN a client sends before the upstream connect
        completes (here: the first target times out) are delivered."""
        hole = BlackholeListener().start()
        self.addCleanup(hole.stop)
        srv = self.server(HashReplyServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("early", port, targets=[hole.address, srv.address],
                          ext={"connect_timeout": "500ms", "max_connect_attempts": 2}))
        gw.start()
        data = os.urandom(100 * 1024)
        sock = self.connect(port, timeout=15)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(sock, timeout=15)
        self.assertEqual(reply, b"%d %s\n" % (len(data), sha256(data).encode()))
        sock.close()
        self.assertExitClean(gw)
        conns = gw.conns("early")
        self.assertEqual([(c["end"], c["attempts"]) for c in conns], [("closed", "2")])
        self.assertEqual(gw.stats("early")["connect_timeout"], 1)

    def test_client_reset(self):
        """A client reset ends the session, and the upstream side is reset too:
        the abort is passed on, not turned into a clean end of stream."""
        echo = self.server(EchoServer)
        gw, port = self.start_gateway("clireset", echo.address)
        sock = self.connect(port)
        sock.sendall(b"hello")
        self.assertEqual(recv_exact(sock, 5, timeout=10), b"hello")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        deadline = time.monotonic() + 10
        while not echo.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(echo.errors), 1, echo.errors)
        self.assertIn("ConnectionResetError", echo.errors[0])
        self.assertTrue(echo.results.empty(), "the upstream saw a clean end of stream")
        echo.errors.clear()
        gw.wait_for_log(r" conn .*api_id=clireset .*end=client_error", timeout=5)
        self.assertExitClean(gw)
        self.assertEqual(gw.stats("clireset")["cx_active"], 0)

    def test_upstream_reset(self):
        """An upstream reset closes the client's connection."""
        srv = self.server(ResetServer, 5)
        gw, port = self.start_gateway("upreset", srv.address)
        sock = self.connect(port)
        sock.sendall(b"hello")
        self.assertIn(wait_closed(sock, 5), ("eof", "reset"),
                      "client still open 5 s after the upstream reset")
        sock.close()
        self.assertEqual(srv.results.get(timeout=5), (0, 5))
        gw.wait_for_log(r" conn .*api_id=upreset .*end=upstream_error", timeout=5)
        self.assertExitClean(gw)
        self.assertEqual(gw.stats("upreset")["cx_active"], 0)

    def test_500_concurrent_connections(self):
        """500 connections open at once, each with its own payload, each gets
        exactly its own bytes back."""
        n = 500
        echo = self.server(EchoServer)
        gw, port = self.start_gateway("many", echo.address)
        payloads = [b"conn-%04d:" % i + os.urandom(3000 + i) for i in range(n)]
        received = [bytearray() for _ in range(n)]
        sent = [0] * n
        eof = [False] * n
        errors = []

        sel = selectors.DefaultSelector()
        socks = []
        self.addCleanup(sel.close)
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)

            def pump(deadline, done):
                """Runs the selector until done() or the deadline."""
                while not done():
                    if time.monotonic() > deadline:
                        return False
                    for key, ev in sel.select(timeout=0.5):
                        i = key.data
                        s = key.fileobj
                        if ev & selectors.EVENT_WRITE:
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                errors.append((i, os.strerror(err)))
                                sel.unregister(s)
                                continue
                            try:
                                sent[i] += s.send(payloads[i][sent[i]:sent[i] + 65536])
                            except BlockingIOError:
                                pass
                            if sent[i] == len(payloads[i]):
                                sel.modify(s, selectors.EVENT_READ, i)
                        if ev & selectors.EVENT_READ:
                            try:
                                chunk = s.recv(65536)
                            except BlockingIOError:
                                continue
                            except OSError as e:
                                errors.append((i, repr(e)))
                                sel.unregister(s)
                                continue
                            if not chunk:
                                eof[i] = True
                                sel.unregister(s)
                            else:
                                received[i] += chunk
                return True

            deadline = time.monotonic() + 30
            # Phase 1: every connection sends its payload and gets it all back,
            # while none has closed: all 500 are open through the gateway.
            ok = pump(deadline, lambda: errors or all(
                len(received[i]) >= len(payloads[i]) or eof[i] for i in range(n)))
            self.assertTrue(ok, "phase 1 timed out: %d of %d echoed" % (
                sum(len(received[i]) >= len(payloads[i]) for i in range(n)), n))
            self.assertEqual(errors, [])
            self.assertFalse(any(eof), "connections closed early: %s"
                             % [i for i in range(n) if eof[i]][:20])
            self.assertEqual(echo.active_connections(), n, "upstream connections open at once")

            # Phase 2: half-close all; each gets the echo server's FIN back.
            for s in socks:
                s.shutdown(socket.SHUT_WR)
            ok = pump(deadline, lambda: errors or all(eof))
            self.assertTrue(ok, "phase 2 timed out: %d of %d closed" % (sum(eof), n))
            self.assertEqual(errors, [])
            bad = [i for i in range(n) if bytes(received[i]) != payloads[i]]
            self.assertEqual(bad, [], "connections whose echo differs from their payload")
        finally:
            for s in socks:
                s.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)
        st = gw.stats("many")
        self.assertEqual(st["cx_total"], n)
        self.assertEqual(st["cx_active"], 0)
        self.assertEqual(st["rx_bytes"], sum(map(len, payloads)))
        self.assertEqual(st["tx_bytes"], sum(map(len, payloads)))
        ends = [c["end"] for c in gw.conns("many")]
        self.assertEqual(len(ends), n)
        self.assertEqual(set(ends), {"closed"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
