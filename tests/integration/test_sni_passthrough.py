"""SNI passthrough: several tcp definitions on one port, told apart by the
server name in the client's ClientHello, which tcpgate reads without
terminating TLS. The upstreams are TLS servers with their own certificates;
the client's handshake is with them, end to end."""

import os
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import EchoServer, connect, definition, free_ports, recv_exact, wait_closed
from tlsutil import (BioClient, TLSNameServer, TLSTestCase, client_context, server_context,
                     tls_fetch)


def read_line(ssock, limit=256, timeout=10.0):
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while not buf.endswith(b"\n") and len(buf) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no line within %.1f s (got %r)" % (timeout, bytes(buf)))
        ssock.settimeout(left)
        chunk = ssock.recv(1)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class PassthroughTest(TLSTestCase):

    def setUp(self):
        self.up_a = self.server(TLSNameServer, "A", server_context(self.pki, "a"))
        self.up_b = self.server(TLSNameServer, "B", server_context(self.pki, "b"))

    def start_gateway(self, fallback=None):
        """Port 1: a.example.com and b.example.com only. Port 2 (when fallback
        is given): a.example.com and a definition without a domain."""
        gw = self.gateway()
        port, port2 = free_ports(2)
        gw.add(definition("pass-a", port, self.up_a.address, domain="a.example.com"))
        gw.add(definition("pass-b", port, self.up_b.address, domain="b.example.com"))
        if fallback is not None:
            gw.add(definition("fb-a", port2, self.up_a.address, domain="a.example.com"))
            gw.add(definition("fb-plain", port2, fallback.address, domain=""))
        gw.start()
        return gw, port, port2

    def exchange(self, port, sni, payload):
        """A verifying client (host name checked) talks to the upstream
        through the gateway: returns (upstream name, its certificate as DER)."""
        ctx = client_context(self.pki, check_hostname=True)
        raw = connect(port)
        self.addCleanup(raw.close)
        s = ctx.wrap_socket(raw, server_hostname=sni)
        der = s.getpeercert(binary_form=True)
        name = read_line(s).decode().strip()
        s.sendall(payload)
        self.assertEqual(recv_exact(s, len(payload), timeout=20.0), payload, "echo through %s" % sni)
        s.unwrap()  # close_notify both ways: the upstream saw the end
        s.close()
        return name, der

    def test_routes_by_sni_end_to_end(self):
        gw, port, _ = self.start_gateway()
        payload = os.urandom(64 * 1024)
        name, der = self.exchange(port, "a.example.com", payload)
        self.assertEqual(name, "A")
        self.assertEqual(der, self.pki.der("a"), "the certificate is not upstream A's")
        name, der = self.exchange(port, "b.example.com", payload)
        self.assertEqual(name, "B")
        self.assertEqual(der, self.pki.der("b"), "the certificate is not upstream B's")

        self.assertExitClean(gw)
        self.assertNoServerErrors(self.up_a, self.up_b)
        self.assertEqual(self.up_a.results.get(timeout=5)["sni"], "a.example.com")
        self.assertEqual(self.up_b.results.get(timeout=5)["sni"], "b.example.com")
        for api_id, sni in (("pass-a", "a.example.com"), ("pass-b", "b.example.com")):
            conns = gw.conns(api_id)
            self.assertEqual([(c["end"], c["sni"]) for c in conns], [("closed", sni)], conns)
            self.assertNotIn("tls", conns[0], "passthrough must not terminate TLS")
            # The bytes are TLS records: more than the payload each way.
            self.assertGreater(int(conns[0]["rx"]), len(payload))
            self.assertGreater(int(conns[0]["tx"]), len(payload))

    def test_client_hello_one_byte_at_a_time(self):
        gw, port, _ = self.start_gateway()
        sock = connect(port)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = BioClient(client_context(self.pki, check_hostname=True), sock, "b.example.com")
        hello = c.start()
        self.assertGreater(len(hello), 100)
        for i in range(len(hello)):
            sock.sendall(hello[i:i + 1])
            time.sleep(0.001)
        c.handshake()
        self.assertEqual(c.obj.getpeercert(binary_form=True), self.pki.der("b"))
        line = bytearray()
        while not line.endswith(b"\n") and len(line) < 64:
            line += c.recv(1)
        self.assertEqual(bytes(line), b"B\n")
        c.sendall(b"one byte at a time\n")
        self.assertEqual(c.recv_exact(19), b"one byte at a time\n")
        c.shutdown_write()
        self.assertEqual(c.recv_until_eof(), b"")
        sock.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(self.up_a, self.up_b)
        self.assertEqual(self.up_a.accepted, 0)
        self.assertEqual(self.up_b.results.get(timeout=5)["sni"], "b.example.com")
        conns = gw.conns("pass-b")
        self.assertEqual([c_["end"] for c_ in conns], ["closed"])
        # The ClientHello really came in pieces, over at least len(hello) ms.
        self.assertGreaterEqual(int(conns[0]["duration_ms"]), len(hello))

    def test_unknown_or_missing_name_is_closed(self):
        gw, port, _ = self.start_gateway()
        ctx = client_context(self.pki)
        for sni in ("c.example.com", None):
            with self.subTest(sni=sni):
                got = tls_fetch(port, ctx, sni, timeout=5)
                self.assertFalse(got.ok, got)
                self.assertEqual(got.data, b"")
        self.assertExitClean(gw)
        self.assertEqual((self.up_a.accepted, self.up_b.accepted), (0, 0))
        conns = gw.conns()
        self.assertEqual(sorted((c["end"], c["sni"]) for c in conns),
                         [("no_route", "-"), ("no_route", "c.example.com")], conns)
        ps = gw.port_stats(port)
        self.assertEqual((ps["sni_not_found"], ps["not_tls"]), (2, 0), ps)

    def test_not_tls(self):
        """Bytes that are not TLS go to the definition without a domain when
        there is one, and are closed (error=not_tls) when there is none. A
        handshake record that is not a ClientHello is a bad ClientHello."""
        echo = self.server(EchoServer)
        gw, port, port2 = self.start_gateway(fallback=echo)
        # With a fallback: a plain-text protocol reaches it.
        s = connect(port2)
        s.sendall(b"PING\r\n")
        self.assertEqual(recv_exact(s, 6, timeout=10), b"PING\r\n")
        s.close()
        # ... and TLS with a known name still goes by the name.
        name, der = self.exchange(port2, "a.example.com", b"hello A\n")
        self.assertEqual((name, der), ("A", self.pki.der("a")))
        # Without a fallback: closed.
        s = connect(port)
        s.sendall(b"PING\r\n")
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()
        # A handshake record that is not a ClientHello (a ServerHello type).
        s = connect(port)
        s.sendall(b"\x16\x03\x01\x00\x06\x02\x00\x00\x02\x03\x03")
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()

        self.assertExitClean(gw)
        self.assertEqual(echo.accepted, 1)
        self.assertEqual(self.up_a.accepted, 1)
        conns = gw.conns()
        self.assertEqual([c["end"] for c in gw.conns("fb-plain")], ["closed"])
        refused = [c for c in conns if c["port"] == str(port)]
        self.assertEqual(sorted((c["end"], c.get("error")) for c in refused),
                         [("bad_client_hello", None), ("no_route", "not_tls")], refused)
        ps = gw.port_stats(port)
        self.assertEqual((ps["not_tls"], ps["bad_client_hello"], ps["sni_not_found"]), (1, 1, 0),
                         ps)

    def test_client_hello_larger_than_the_cap(self):
        """tcpgate.client_hello_max bounds what is held while looking for the
        name: a larger ClientHello is closed as bad_client_hello, a normal one
        still routes."""
        # A usual ClientHello is 517 bytes on the wire (OpenSSL pads it).
        gw = self.gateway(config={"tcpgate": {"client_hello_max": 1024}})
        port = free_ports(1)[0]
        gw.add(definition("pass-a", port, self.up_a.address, domain="a.example.com"))
        gw.add(definition("pass-b", port, self.up_b.address, domain="b.example.com"))
        gw.start()
        sock = connect(port)
        self.addCleanup(sock.close)
        # 60 ALPN names make the ClientHello well over 1024 bytes.
        ctx = client_context(self.pki, alpn=["proto-%02d-xxxx" % i for i in range(60)])
        hello = BioClient(ctx, sock, "a.example.com").start()
        self.assertGreater(len(hello), 1100)
        try:
            sock.sendall(hello)
            closed = wait_closed(sock, 5.0)
        except (ConnectionResetError, BrokenPipeError):
            closed = "reset"  # judged from the record header, before the rest was sent
        self.assertIn(closed, ("eof", "reset"))
        sock.close()
        name, der = self.exchange(port, "a.example.com", b"small hello\n")
        self.assertEqual((name, der), ("A", self.pki.der("a")))
        self.assertExitClean(gw)
        self.assertEqual(self.up_a.accepted, 1)
        self.assertEqual(sorted(c["end"] for c in gw.conns()), ["bad_client_hello", "closed"])
        self.assertEqual(gw.port_stats(port)["bad_client_hello"], 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
