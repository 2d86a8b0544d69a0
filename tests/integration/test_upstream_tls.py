"""Upstream TLS: tls:// targets are verified (system store or
upstream_ca_file, host name checked, SNI sent), verification can be turned
off with a warning, a client certificate is presented when the upstream asks
(upstream_certificates), public keys can be pinned, tls:// targets are load
balanced, sessions are reused, and the client's ALPN is offered upstream.
The upstreams are real `openssl s_server`s (in -rev mode: each line comes back
reversed) or Python TLS servers."""

import os
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (MiB, NameServer, SinkServer, connect, definition, free_port, free_ports,
                     recv_exact, recv_until_eof, sha256)
from tlsutil import (BioClient, SServer, TLSNameServer, TLSSendThenDropServer, TLSTestCase,
                     client_context, server_context)

LINE = b"hello upstream\n"
REVERSED = b"maertspu olleh\n"


class UpstreamTLSTest(TLSTestCase):

    def sserver(self, cert="localhost", extra=()):
        s = SServer(self.pki, cert, extra)
        self.addCleanup(s.stop)
        return s.start()

    def up_def(self, api_id, port, target, ext=None, **extra):
        e = {"max_connect_attempts": 1}
        e.update(ext or {})
        return definition(api_id, port, target, ext=e, **extra)

    def with_ca(self, **ext):
        return dict(upstream_ca_file=self.pki.cert("ca"), **ext)

    def talk(self, port, line=LINE):
        """Sends a line, reads what comes back until EOF (after closing our
        side once the reply is in, or at once if the gateway closes)."""
        s = connect(port)
        try:
            s.sendall(line)
            buf = bytearray()
            deadline = time.monotonic() + 10
            while not buf.endswith(b"\n") and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(4096)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    return bytes(buf)
                buf += chunk
            try:
                s.shutdown(socket.SHUT_WR)
                buf += recv_until_eof(s, timeout=10)
            except OSError:
                pass
            return bytes(buf)
        finally:
            s.close()

    def conn_of(self, gw, api_id):
        conns = gw.conns(api_id)
        self.assertEqual(len(conns), 1, conns)
        return conns[0]

    def test_verification(self):
        """Without a CA the test CA's certificate fails verification against
        the system store; with upstream_ca_file it works; a certificate for
        another name fails the host name check; ssl_insecure_skip_verify
        works without a CA and is warned about when loading."""
        ok = self.sserver("localhost")
        other = self.sserver("example")  # a valid certificate for example.com
        gw = self.gateway()
        p = dict(zip(("system", "ca", "name", "insecure", "ip"), free_ports(5)))
        target = "tls://localhost:%d" % ok.port
        gw.add(self.up_def("system", p["system"], target))
        gw.add(self.up_def("ca", p["ca"], target, ext=self.with_ca()))
        # An IP literal is checked against the certificate's IP SAN (127.0.0.1).
        gw.add(self.up_def("ip", p["ip"], "tls://127.0.0.1:%d" % ok.port, ext=self.with_ca()))
        gw.add(self.up_def("name", p["name"], "tls://localhost:%d" % other.port,
                           ext=self.with_ca()))
        gw.add(self.up_def("insecure", p["insecure"], target,
                           proxy={"target_url": target,
                                  "transport": {"ssl_insecure_skip_verify": True}}))
        gw.start()
        warned = [l for l in gw.lines_at("warn")
                  if "insecure.json: proxy.transport.ssl_insecure_skip_verify" in l]
        self.assertEqual(len(warned), 1, gw.log_tail())
        self.assertFalse(any("system.json" in l or "/ca.json" in l for l in gw.lines_at("warn")))

        self.assertEqual(self.talk(p["system"]), b"")
        self.assertEqual(self.talk(p["ca"]), REVERSED)
        self.assertEqual(self.talk(p["name"]), b"")
        self.assertEqual(self.talk(p["insecure"]), REVERSED)
        self.assertEqual(self.talk(p["ip"]), REVERSED)
        self.assertExitClean(gw)

        failed = [l for l in gw.log_lines() if "api_id=system connect to" in l]
        self.assertEqual(len(failed), 1, gw.log_tail())
        self.assertIn("certificate verify failed", failed[0])
        self.assertEqual(self.conn_of(gw, "system")["end"], "connect_failed")
        self.assertEqual(gw.stats("system")["upstream_tls_failed"], 1)

        failed = [l for l in gw.log_lines() if "api_id=name connect to" in l]
        self.assertEqual(len(failed), 1, gw.log_tail())
        self.assertRegex(failed[0], r"certificate verify failed: .*hostname mismatch")
        self.assertEqual(self.conn_of(gw, "name")["end"], "connect_failed")
        self.assertEqual(gw.stats("name")["upstream_tls_failed"], 1)

        for api_id in ("ca", "insecure", "ip"):
            c = self.conn_of(gw, api_id)
            self.assertEqual(c["end"], "closed", c)
            self.assertTrue(c.get("upstream_tls", "").startswith("TLSv1.3/"), c)
            self.assertEqual(gw.stats(api_id)["upstream_tls_failed"], 0)
        # The gateway refused the server in the "system" handshake: three sessions.
        self.assertEqual(ok.connections(), 3, ok.output())

    def test_upstream_requires_client_certificate(self):
        """s_server -Verify 1 wants a client certificate: without
        upstream_certificates the client gets nothing; with one (by "*", by
        host, by host:port, the most specific winning) it works."""
        need = self.sserver("localhost", ["-Verify", "1", "-CAfile", self.pki.cert("ca")])
        need12 = self.sserver("localhost", ["-Verify", "1", "-CAfile", self.pki.cert("ca"),
                                            "-tls1_2"])
        gw = self.gateway()
        p = dict(zip(("none", "none12", "star", "hostport"), free_ports(4)))
        target = "tls://localhost:%d" % need.port
        gw.add(self.up_def("none", p["none"], target, ext=self.with_ca()))
        gw.add(self.up_def("none12", p["none12"], "tls://localhost:%d" % need12.port,
                           ext=self.with_ca()))
        gw.add(self.up_def("star", p["star"], target, ext=self.with_ca(),
                           upstream_certificates={"*": self.pki.full("client")}))
        gw.add(self.up_def("hostport", p["hostport"], target, ext=self.with_ca(),
                           upstream_certificates={
                               "*": self.pki.full("wrong"),
                               "localhost": self.pki.full("wrong"),
                               "localhost:%d" % need.port: self.pki.full("client2")}))
        gw.start()
        self.assertEqual(self.talk(p["none"]), b"")
        self.assertEqual(self.talk(p["none12"]), b"")
        self.assertEqual(self.talk(p["star"]), REVERSED)
        self.assertEqual(self.talk(p["hostport"]), REVERSED)
        self.assertExitClean(gw)

        out = need.output()
        self.assertIn("peer did not return a certificate", out)
        self.assertIn("CN = client-alice", out)
        self.assertIn("CN = client-bob", out)
        self.assertNotIn("CN = client-wrong", out)
        self.assertIn("peer did not return a certificate", need12.output())
        # TLS 1.3: the server judges the certificate after the client's
        # handshake is done, so the gateway may only learn it when relaying.
        self.assertIn(self.conn_of(gw, "none")["end"], ("connect_failed", "upstream_error"))
        # TLS 1.2: the handshake itself fails.
        self.assertEqual(self.conn_of(gw, "none12")["end"], "connect_failed")
        self.assertEqual(gw.stats("none12")["upstream_tls_failed"], 1)
        for api_id in ("star", "hostport"):
            self.assertEqual(self.conn_of(gw, api_id)["end"], "closed")

    def test_pinned_public_keys(self):
        up = self.sserver("localhost")
        gw = self.gateway()
        p = dict(zip(("spki", "id", "bad", "insecure-pin", "insecure-bad"), free_ports(5)))
        target = "tls://localhost:%d" % up.port
        gw.add(self.up_def("spki", p["spki"], target, ext=self.with_ca(),
                           pinned_public_keys={"*": self.pki.spki_pin("localhost")}))
        # A list: another key's pin, then this certificate's id.
        gw.add(self.up_def("id", p["id"], target, ext=self.with_ca(),
                           pinned_public_keys={"localhost": "%s, %s" % (
                               self.pki.spki_pin("example"), self.pki.cert_id("localhost"))}))
        gw.add(self.up_def("bad", p["bad"], target, ext=self.with_ca(),
                           pinned_public_keys={"*": self.pki.spki_pin("example")}))
        # Verification off: the pin is then what authenticates the upstream.
        insecure = {"target_url": target, "transport": {"ssl_insecure_skip_verify": True}}
        gw.add(self.up_def("insecure-pin", p["insecure-pin"], target, proxy=insecure,
                           pinned_public_keys={"*": self.pki.spki_pin("localhost")}))
        gw.add(self.up_def("insecure-bad", p["insecure-bad"], target, proxy=insecure,
                           pinned_public_keys={"*": self.pki.spki_pin("example")}))
        gw.start()
        self.assertEqual(self.talk(p["spki"]), REVERSED)
        self.assertEqual(self.talk(p["id"]), REVERSED)
        self.assertEqual(self.talk(p["bad"]), b"")
        self.assertEqual(self.talk(p["insecure-pin"]), REVERSED)
        self.assertEqual(self.talk(p["insecure-bad"]), b"")
        self.assertExitClean(gw)
        self.assertEqual(self.conn_of(gw, "insecure-pin")["end"], "closed")
        self.assertEqual(self.conn_of(gw, "insecure-bad")["end"], "connect_failed")
        self.assertEqual(gw.stats("insecure-bad")["upstream_pin_mismatch"], 1)
        self.assertEqual(self.conn_of(gw, "spki")["end"], "closed")
        self.assertEqual(self.conn_of(gw, "id")["end"], "closed")
        self.assertEqual(self.conn_of(gw, "bad")["end"], "connect_failed")
        self.assertTrue(any("api_id=bad" in l and "matches none of the pinned keys" in l
                            for l in gw.lines_at("warn")), gw.log_tail())
        self.assertEqual(gw.stats("bad")["upstream_pin_mismatch"], 1)
        self.assertEqual(gw.stats("spki")["upstream_pin_mismatch"], 0)

    def test_round_robin_over_tls_targets(self):
        ups = [self.server(TLSNameServer, n, server_context(self.pki, "localhost"))
               for n in ("one", "two")]
        gw = self.gateway()
        port = free_port()
        gw.add(definition("lb", port, targets=["tls://localhost:%d" % u.port for u in ups],
                          ext=self.with_ca()))
        gw.start()
        names = []
        for _ in range(6):
            s = connect(port)
            try:
                s.settimeout(10)
                line = bytearray()
                while not line.endswith(b"\n") and len(line) < 64:
                    chunk = s.recv(1)
                    if not chunk:
                        break
                    line += chunk
                names.append(line.decode().strip())
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(recv_until_eof(s, timeout=10), b"")
            finally:
                s.close()
        self.assertEqual(names, ["one", "two"] * 3)
        self.assertExitClean(gw)
        self.assertNoServerErrors(*ups)
        for u in ups:
            for _ in range(3):
                self.assertEqual(u.results.get(timeout=5)["sni"], "localhost")
        ends = [c["end"] for c in gw.conns("lb")]
        self.assertEqual(ends, ["closed"] * 6)
        self.assertEqual(gw.stats("lb")["upstream_cx_total"], 6)

    def test_upstream_that_does_not_speak_tls(self):
        """A tls:// target that never answers the handshake is given up after
        connect_timeout; one that answers in plain text fails at once."""
        silent = self.server(SinkServer)
        plain = self.server(NameServer, "plain text")
        gw = self.gateway()
        p = dict(zip(("silent", "plain"), free_ports(2)))
        gw.add(self.up_def("silent", p["silent"], "tls://%s" % silent.address,
                           ext=self.with_ca(connect_timeout="1s")))
        gw.add(self.up_def("plain", p["plain"], "tls://%s" % plain.address, ext=self.with_ca()))
        gw.start()
        t0 = time.monotonic()
        self.assertEqual(self.talk(p["silent"]), b"")
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 4.0)
        self.assertEqual(self.talk(p["plain"]), b"")
        self.assertExitClean(gw)
        self.assertEqual(self.conn_of(gw, "silent")["end"], "connect_failed")
        self.assertEqual(gw.stats("silent")["connect_timeout"], 1)
        self.assertEqual(self.conn_of(gw, "plain")["end"], "connect_failed")
        self.assertEqual(gw.stats("plain")["upstream_tls_failed"], 1)
        self.assertTrue(any("api_id=plain connect to" in l and "TLS" in l
                            for l in gw.log_lines()), gw.log_tail())

    def test_bulk_through_tls_upstream(self):
        """1 MiB each way from a plain client, and from a TLS client, to a TLS
        upstream that echoes."""
        up = self.server(TLSNameServer, "echo", server_context(self.pki, "localhost"))
        gw = self.gateway()
        plain_port, tls_port = free_ports(2)
        target = "tls://localhost:%d" % up.port
        gw.add(self.up_def("plain-in", plain_port, target, ext=self.with_ca()))
        gw.add(self.tls_def("tls-in", tls_port, target, "localhost", ext=self.with_ca()))
        gw.start()
        data = os.urandom(MiB)

        # Plain client.
        s = connect(plain_port, timeout=30)
        self.addCleanup(s.close)
        self.assertEqual(recv_exact(s, 5, timeout=10), b"echo\n")
        back = bulk_echo(s.dup(), lambda n: recv_exact(s, n, timeout=30), data)
        self.assertEqual(sha256(back), sha256(data))
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s, timeout=10), b"")
        s.close()

        # TLS client: TLS on both legs.
        sock = connect(tls_port, timeout=30)
        self.addCleanup(sock.close)
        c = BioClient(client_context(self.pki), sock, "localhost", timeout=30)
        c.handshake()
        self.assertEqual(c.recv_exact(5), b"echo\n")
        wire = c.encrypt(data)
        back = bulk_echo(sock.dup(), c.recv_exact, data, wire=wire)
        self.assertEqual(sha256(back), sha256(data))
        c.shutdown_write()
        self.assertEqual(c.recv_until_eof(), b"")
        sock.close()

        self.assertExitClean(gw)
        self.assertNoServerErrors(up)
        for api_id in ("plain-in", "tls-in"):
            c_ = self.conn_of(gw, api_id)
            self.assertEqual(c_["end"], "closed", c_)
            self.assertEqual((int(c_["rx"]), int(c_["tx"])), (MiB, MiB + 5), c_)
        echoed = sorted(up.results.get(timeout=5)["echoed"] for _ in range(2))
        self.assertEqual(echoed, [MiB, MiB])

    def test_upstream_closing_without_close_notify(self):
        """Many TLS servers end a response by closing the connection without a
        close_notify. tcpgate allows such "dirty" shutdowns: the client must
        get the whole response and an orderly end, even when it reads late."""
        payload = os.urandom(256 * 1024)
        up = self.server(TLSSendThenDropServer, payload, server_context(self.pki, "localhost"))
        gw = self.gateway()
        port = free_port()
        gw.add(self.up_def("dirty", port, "tls://localhost:%d" % up.port, ext=self.with_ca()))
        gw.start()
        s = connect(port, timeout=30)
        self.addCleanup(s.close)
        up.results.get(timeout=10)  # the upstream has sent everything and left
        time.sleep(0.3)  # the client reads late
        got = bytearray()
        error = None
        try:
            got += recv_until_eof(s, timeout=20)
        except OSError as e:
            error = e
        s.close()
        gw.wait_for_log(r" conn .*api_id=dirty ", timeout=5)
        self.assertExitClean(gw)
        c = self.conn_of(gw, "dirty")
        self.assertEqual((len(got), error), (len(payload), None),
                         "the client got %d of %d bytes, then %r; gateway: %s"
                         % (len(got), len(payload), error, c))
        self.assertEqual(sha256(bytes(got)), sha256(payload))
        self.assertEqual(c["end"], "closed", c)

    def test_session_reuse(self):
        up = self.sserver("localhost")
        gw = self.gateway(workers=1)
        port = free_port()
        gw.add(self.up_def("reuse", port, "tls://localhost:%d" % up.port, ext=self.with_ca()))
        gw.start()
        for _ in range(3):
            self.assertEqual(self.talk(port), REVERSED)
        self.assertExitClean(gw)
        st = gw.stats("reuse")
        self.assertGreaterEqual(st["upstream_tls_resumed"], 2, st)
        self.assertEqual(st["upstream_cx_total"], 3)
        self.assertEqual([c["end"] for c in gw.conns("reuse")], ["closed"] * 3)

    def test_client_alpn_is_offered_upstream(self):
        """A tls listener negotiates ALPN with the client and offers the result
        to its tls:// upstream."""
        up = self.server(TLSNameServer, "up",
                         server_context(self.pki, "localhost", alpn=["h2", "http/1.1"]))
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("alpn", port, "tls://localhost:%d" % up.port, "localhost",
                            ext=self.with_ca(alpn=["h2", "http/1.1"])))
        gw.start()
        seen = []
        for offer in (["h2"], ["http/1.1"], None):
            ctx = client_context(self.pki, alpn=offer)
            # The upstream echoes until the client closes: close after its name.
            got = tls_fetch_line(port, ctx, "localhost")
            self.assertEqual(got, ("up", offer[0] if offer else None))
            seen.append(up.results.get(timeout=5)["alpn"])
        self.assertEqual(seen, ["h2", "http/1.1", None])
        self.assertExitClean(gw)
        self.assertNoServerErrors(up)
        self.assertEqual(sorted(c.get("alpn", "-") for c in gw.conns("alpn")),
                         ["-", "h2", "http/1.1"])


def bulk_echo(send_sock, recv_exact_fn, data, wire=None):
    """Sends wire (default: data) from a thread on send_sock (a dup of the
    connection, so its timeout is its own) while reading len(data) bytes back."""
    errors = []

    def send():
        try:
            send_sock.settimeout(30)
            send_sock.sendall(data if wire is None else wire)
        except OSError as e:
            errors.append(e)
        finally:
            send_sock.close()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    back = recv_exact_fn(len(data))
    t.join(30)
    if t.is_alive() or errors:
        raise AssertionError("sending failed or hung: %r" % errors)
    return back


def tls_fetch_line(port, ctx, sni):
    """Handshakes, reads one line, closes with close_notify; returns (line,
    negotiated ALPN)."""
    raw = connect(port)
    s = None
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni)
        s.settimeout(10)
        line = bytearray()
        while not line.endswith(b"\n") and len(line) < 64:
            chunk = s.recv(1)
            if not chunk:
                break
            line += chunk
        alpn = s.selected_alpn_protocol()
        s.unwrap()
        return line.decode().strip(), alpn
    finally:
        (s or raw).close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
