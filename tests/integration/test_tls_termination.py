"""TLS termination: the SNI table on a shared port (Tyk's four cases, wildcard
and exact names, case), the certificate each name gets, protocol versions and
ciphers, session resumption across workers, ALPN, the handshake timeout,
garbage on a TLS port, and bytes and half-close through a terminated
connection."""

import os
import random
import socket
import ssl
import sys
import threading
import time
import unittest
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (MiB, BlastServer, EchoServer, HashReplyServer, connect, definition, free_port,
                     free_ports, sha256, wait_closed)
from tlsutil import (BioClient, TLSTestCase, client_context, s_client, s_client_session,
                     san_dns, tls_fetch)


class SniTableTest(TLSTestCase):
    """Tyk's table of what a client reaches on a port shared by tls definitions."""

    def test_a_fallback_alone_takes_everything(self):
        svc = self.services("svc-any")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("any", port, svc["svc-any"].address, "fallback", domain=""))
        gw.start()
        for sni in (None, "localhost", "example.com", "wrong"):
            got = self.fetch(port, sni)
            self.assertServed(got, "svc-any", "fallback.test", "SNI %r" % sni)
            self.assertEqual(san_dns(got.cert), ["fallback.test"])
        self.assertExitClean(gw)
        self.assertNoServerErrors(*svc.values())
        conns = gw.conns("any")
        self.assertEqual([c["end"] for c in conns], ["closed"] * 4, conns)
        self.assertEqual(sorted(c["sni"] for c in conns),
                         sorted(["-", "localhost", "example.com", "wrong"]))
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["sni_not_found"], ps["tls_handshake_failed"]),
                         (4, 0, 0), ps)

    def test_b_one_named_definition(self):
        svc = self.services("svc-local")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("local", port, svc["svc-local"].address, "localhost",
                            domain="localhost"))
        gw.start()

        got = self.fetch(port, "localhost")
        self.assertServed(got, "svc-local", "localhost", "SNI localhost")
        self.assertEqual(san_dns(got.cert), ["localhost"])
        # Another name: refused in the handshake with unrecognized_name.
        self.assertRefusedName(self.fetch(port, "example.com"), "SNI example.com")
        rc, out = s_client(port, "-servername", "example.com", "-CAfile", self.pki.cert("ca"))
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r"unrecognized name|alert number 112", out)
        # No name at all: the port's only definition.
        got = self.fetch(port, None)
        self.assertServed(got, "svc-local", "localhost", "no SNI")

        self.assertExitClean(gw)
        self.assertEqual(svc["svc-local"].accepted, 2)
        refused = [c for c in gw.conns() if c["end"] == "no_route"]
        self.assertEqual(len(refused), 2, gw.conns())
        for c in refused:
            self.assertEqual((c["api_id"], c["sni"], c["port"]), ("-", "example.com", str(port)))
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["sni_not_found"]), (2, 2), ps)

    def test_c_two_named_definitions(self):
        svc = self.services("svc-local", "svc-example")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("local", port, svc["svc-local"].address, "localhost",
                            domain="localhost"))
        gw.add(self.tls_def("example", port, svc["svc-example"].address, "example",
                            domain="example.com"))
        gw.start()
        # No name and no fallback: nothing to choose.
        self.assertRefusedName(self.fetch(port, None), "no SNI")
        self.assertServed(self.fetch(port, "localhost"), "svc-local", "localhost")
        self.assertServed(self.fetch(port, "example.com"), "svc-example", "example.com")
        self.assertRefusedName(self.fetch(port, "other.test"), "SNI other.test")
        self.assertExitClean(gw)
        self.assertNoServerErrors(*svc.values())
        self.assertEqual([c["end"] for c in gw.conns("local")], ["closed"])
        self.assertEqual([c["end"] for c in gw.conns("example")], ["closed"])
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["sni_not_found"]), (2, 2), ps)

    def test_d_fallback_and_named(self):
        svc = self.services("svc-any", "svc-example")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("any", port, svc["svc-any"].address, "fallback", domain=""))
        gw.add(self.tls_def("example", port, svc["svc-example"].address, "example",
                            domain="example.com"))
        gw.start()
        self.assertServed(self.fetch(port, "example.com"), "svc-example", "example.com")
        self.assertServed(self.fetch(port, "wrong"), "svc-any", "fallback.test", "SNI wrong")
        self.assertServed(self.fetch(port, None), "svc-any", "fallback.test", "no SNI")
        self.assertExitClean(gw)
        self.assertEqual(svc["svc-example"].accepted, 1)
        self.assertEqual(svc["svc-any"].accepted, 2)
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["sni_not_found"]), (3, 0), ps)

    def test_wildcard_exact_precedence_and_case(self):
        svc = self.services("svc-wild", "svc-a", "svc-b", "svc-any")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("wild", port, svc["svc-wild"].address, "wildcard",
                            domain="*.example.com"))
        gw.add(self.tls_def("exact-a", port, svc["svc-a"].address, "a", domain="a.example.com"))
        # A domain written in capitals still matches lowercase names.
        gw.add(self.tls_def("exact-b", port, svc["svc-b"].address, "b", domain="B.Example.COM"))
        gw.add(self.tls_def("any", port, svc["svc-any"].address, "fallback", domain=""))
        gw.start()
        cases = [
            ("a.example.com", "svc-a", "a.example.com"),  # exact beats the wildcard
            ("c.example.com", "svc-wild", "*.example.com"),
            ("b.example.com", "svc-b", "b.example.com"),
            ("x.y.example.com", "svc-any", "fallback.test"),  # the wildcard covers one label
            ("example.com", "svc-any", "fallback.test"),  # nor the bare domain
            # bytes: sent as they are (a str would be lowercased by IDNA encoding)
            (b"A.EXAMPLE.COM", "svc-a", "a.example.com"),
            (b"Zed.Example.Com", "svc-wild", "*.example.com"),
            (b"a.example.com.", "svc-a", "a.example.com"),  # a fully qualified name
        ]
        for sni, service, cn in cases:
            with self.subTest(sni=sni):
                self.assertServed(self.fetch(port, sni), service, cn, "SNI %r" % sni)
        # The same over a real openssl s_client, names in capitals.
        rc, out = s_client(port, "-servername", "C.EXAMPLE.COM", "-ign_eof")
        self.assertIn("svc-wild", out)
        self.assertRegex(out, r"subject=CN ?= ?\*\.example\.com")

        self.assertExitClean(gw)
        self.assertNoServerErrors(*svc.values())
        self.assertIn("A.EXAMPLE.COM", [c["sni"] for c in gw.conns("exact-a")])
        self.assertEqual(len(gw.conns("wild")), 3)
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["sni_not_found"]), (9, 0), ps)


class ProtocolTest(TLSTestCase):

    def test_versions(self):
        """TLS 1.2 is the default minimum; the definition a name picks brings
        its own range: tls_min_version "1.3" refuses a TLS 1.2-only client,
        tls_max_version "1.2" caps a TLS 1.3 client. All on one port."""
        svc = self.services("default", "strict", "capped")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("default", port, svc["default"].address, "localhost", domain=""))
        gw.add(self.tls_def("strict", port, svc["strict"].address, "example",
                            domain="example.com", ext={"tls_min_version": "1.3"}))
        gw.add(self.tls_def("capped", port, svc["capped"].address, "a", domain="a.example.com",
                            ext={"tls_max_version": "1.2"}))
        gw.start()

        for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            got = self.fetch(port, "localhost", min_version=v, max_version=v)
            self.assertServed(got, "default", "localhost", name)
            self.assertEqual(got.version, name)

        got = self.fetch(port, "example.com", max_version=ssl.TLSVersion.TLSv1_2)
        self.assertFalse(got.ok, "tls_min_version 1.3 let a TLS 1.2 client in: %r" % got)
        self.assertIn("PROTOCOL_VERSION", got.error)
        got = self.fetch(port, "example.com")
        self.assertServed(got, "strict", "example.com", "TLS 1.3 client, min 1.3")
        self.assertEqual(got.version, "TLSv1.3")

        got = self.fetch(port, "a.example.com")
        self.assertServed(got, "capped", "a.example.com", "TLS 1.3 client, max 1.2")
        self.assertEqual(got.version, "TLSv1.2", "tls_max_version 1.2 ignored")

        # TLS 1.1 to the default definition, if this OpenSSL lets a client offer it.
        old = self.old_protocol_attempt(port)

        self.assertExitClean(gw)
        versions = {c["api_id"]: sorted(c["tls"].split("/")[0] for c in gw.conns(c["api_id"]))
                    for c in gw.conns() if c["end"] == "closed"}
        self.assertEqual(versions, {"default": ["TLSv1.2", "TLSv1.3"], "strict": ["TLSv1.3"],
                                    "capped": ["TLSv1.2"]})
        failed = [c for c in gw.conns() if c["end"] != "closed"]
        self.assertEqual(sorted((c["end"], c["sni"]) for c in failed),
                         sorted([("handshake_failed", "example.com")]
                                + ([("handshake_failed", "localhost")] if old else [])), failed)
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["tls_handshake_failed"]),
                         (4, 2 if old else 1), ps)
        if old is None:
            self.skipTest("this OpenSSL cannot offer TLS 1.1 as a client; that subcase skipped")

    def old_protocol_attempt(self, port):
        """Tries TLS 1.1; None when the local client cannot even offer it,
        otherwise asserts the gateway refused it."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx = client_context(self.pki, min_version=ssl.TLSVersion.TLSv1_1,
                                     max_version=ssl.TLSVersion.TLSv1_1,
                                     ciphers="ALL:@SECLEVEL=0")
        except (ssl.SSLError, ValueError):
            return None
        got = tls_fetch(port, ctx, "localhost")
        if not got.ok and ("NO_PROTOCOLS_AVAILABLE" in got.error
                           or "NO_CIPHERS_AVAILABLE" in got.error):
            return None
        self.assertFalse(got.ok, "a TLS 1.1 client was served: %r" % got)
        self.assertRegex(got.error, r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION", got)
        return got

    def test_ciphers_of_the_definition_apply(self):
        """tls_ciphers restricts what the definition's listener negotiates, in
        TLS 1.2 (cipher names) and 1.3 (suite names)."""
        svc = self.services("svc")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("chacha", port, svc["svc"].address, "localhost", domain="localhost",
                            ext={"tls_ciphers": ["ECDHE-ECDSA-CHACHA20-POLY1305",
                                                 "TLS_CHACHA20_POLY1305_SHA256"]}))
        gw.add(self.tls_def("plain", port, svc["svc"].address, "example", domain="example.com"))
        gw.start()
        got12 = self.fetch(port, "localhost", max_version=ssl.TLSVersion.TLSv1_2)
        got13 = self.fetch(port, "localhost", min_version=ssl.TLSVersion.TLSv1_3)
        only_aes = self.fetch(port, "localhost", max_version=ssl.TLSVersion.TLSv1_2,
                              ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
        # The other definition on the port keeps the default list.
        other12 = self.fetch(port, "example.com", max_version=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertExitClean(gw)
        self.assertTrue(other12.ok, other12)
        self.assertEqual(other12.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertTrue(got12.ok and got13.ok, (got12, got13))
        self.assertEqual(got12.cipher, "ECDHE-ECDSA-CHACHA20-POLY1305",
                         "TLS 1.2 cipher ignores tls_ciphers")
        self.assertEqual(got13.cipher, "TLS_CHACHA20_POLY1305_SHA256",
                         "TLS 1.3 suite ignores tls_ciphers")
        self.assertFalse(only_aes.ok, "a cipher outside tls_ciphers was accepted: %r" % only_aes)

    def test_session_resumption_across_workers(self):
        """openssl s_client saves a session, then resumes it six times per
        version; with two workers the resumptions land on both, and every one
        says Reused. The port counts them."""
        svc = self.services("svc")
        gw = self.gateway(workers=2)
        port = free_port()
        gw.add(self.tls_def("resume", port, svc["svc"].address, "localhost", domain="localhost"))
        gw.start()
        base = ["-servername", "localhost", "-CAfile", self.pki.cert("ca"), "-ign_eof"]
        summary = {}
        for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            sess = os.path.join(gw.dir, "session%s.pem" % flag)
            rc, out = s_client(port, flag, "-sess_out", sess, *base)
            self.assertEqual(s_client_session(out), ("New", version), out)
            self.assertIn("svc", out)
            self.assertTrue(os.path.getsize(sess) > 0, "s_client saved no session")
            seen = []
            for _ in range(6):
                rc, out = s_client(port, flag, "-sess_in", sess, *base)
                self.assertIn("svc", out)
                self.assertIn("Verify return code: 0", out)
                seen.append(s_client_session(out))
            summary[version] = seen
            self.assertEqual(seen, [("Reused", version)] * 6, seen)
        self.assertExitClean(gw)
        ps = gw.port_stats(port)
        self.assertEqual(ps["tls_handshakes"], 14, ps)
        self.assertEqual(ps["tls_resumed"], 12, ps)
        self.assertEqual(svc["svc"].accepted, 14)

    def test_ticket_key_rotation(self):
        """With ticket_key_rotation "1s", a ticket issued before one rotation
        still resumes (the previous keys still decrypt); once its key has
        been rotated out (the current key and two previous ones are kept) it
        no longer does, and a full handshake follows."""
        svc = self.services("svc")
        gw = self.gateway(config={"tcpgate": {"ticket_key_rotation": "1s"}})
        port = free_port()
        gw.add(self.tls_def("rot", port, svc["svc"].address, "localhost"))
        gw.start()
        versions = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
        ctxs = [client_context(self.pki, min_version=v, max_version=v) for v in versions]
        t0 = time.monotonic()
        first = [tls_fetch(port, ctx, "localhost") for ctx in ctxs]
        for got in first:
            self.assertServed(got, "svc", "localhost")
            self.assertFalse(got.reused)
        time.sleep(max(0.0, t0 + 1.3 - time.monotonic()))
        soon = [tls_fetch(port, ctx, "localhost", session=got.session)
                for ctx, got in zip(ctxs, first)]
        self.assertEqual([g.reused for g in soon], [True, True],
                         "a ticket one rotation old did not resume")
        time.sleep(max(0.0, t0 + 4.6 - time.monotonic()))
        late = [tls_fetch(port, ctx, "localhost", session=got.session)
                for ctx, got in zip(ctxs, first)]
        for got in late:
            self.assertServed(got, "svc", "localhost", "after the key was rotated out")
        self.assertEqual([g.reused for g in late], [False, False],
                         "a ticket whose key was rotated out still resumed")
        self.assertExitClean(gw)
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["tls_resumed"]), (6, 2), ps)

    def test_alpn(self):
        svc = self.services("svc")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("alpn", port, svc["svc"].address, "localhost",
                            ext={"alpn": ["h2", "http/1.1"]}))
        gw.start()
        results = {}
        for offer in (("h2", "http/1.1"), ("http/1.1",), ("spdy/1",), None):
            got = self.fetch(port, "localhost", alpn=offer)
            self.assertServed(got, "svc", "localhost", "ALPN %r" % (offer,))
            results[offer] = got.alpn
        self.assertEqual(results, {("h2", "http/1.1"): "h2", ("http/1.1",): "http/1.1",
                                   ("spdy/1",): None, None: None})
        rc, out = s_client(port, "-servername", "localhost", "-alpn", "h2", "-ign_eof")
        self.assertIn("ALPN protocol: h2", out)
        self.assertExitClean(gw)
        alpns = [c.get("alpn") for c in gw.conns("alpn")]
        self.assertEqual(sorted(a or "-" for a in alpns), ["-", "-", "h2", "h2", "http/1.1"])


class RobustnessTest(TLSTestCase):

    def test_handshake_timeout(self):
        """A client that sends nothing, and one that stops inside its
        ClientHello, are closed after handshake_timeout; a good client at the
        same time is served."""
        svc = self.services("svc")
        gw = self.gateway(config={"tcpgate": {"handshake_timeout": "1s"}})
        port, peek_port = free_ports(2)
        gw.add(self.tls_def("slow", port, svc["svc"].address, "localhost"))
        # A passthrough port waits for the ClientHello under the same timeout.
        gw.add(definition("peek-a", peek_port, svc["svc"].address, domain="a.example.com"))
        gw.add(definition("peek-b", peek_port, svc["svc"].address, domain="b.example.com"))
        gw.start()
        t0 = time.monotonic()
        idle = self.connect(port)
        partial = self.connect(port)
        idle_peek = self.connect(peek_port)
        hello = BioClient(client_context(self.pki), partial, "localhost").start()
        partial.sendall(hello[:20])
        got = self.fetch(port, "localhost")
        self.assertServed(got, "svc", "localhost", "a good client while three stall")
        results = [wait_closed(s, 4.0) for s in (idle, partial, idle_peek)]
        elapsed = time.monotonic() - t0
        self.assertEqual([r in ("eof", "reset") for r in results], [True] * 3, results)
        self.assertLess(elapsed, 3.5)
        self.assertGreater(elapsed, 0.8)
        self.assertExitClean(gw)
        ends = sorted((c["port"] == str(port), c["end"]) for c in gw.conns())
        self.assertEqual(ends, [(False, "handshake_timeout"), (True, "closed"),
                                (True, "handshake_timeout"), (True, "handshake_timeout")])
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshake_timeout"], ps["tls_handshakes"]), (2, 1), ps)
        self.assertEqual(gw.port_stats(peek_port)["tls_handshake_timeout"], 1)

    def test_garbage_is_closed_and_counted(self):
        svc = self.services("svc")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("tls", port, svc["svc"].address, "localhost"))
        gw.start()
        rnd = random.Random(20261125)
        noise = bytearray(rnd.getrandbits(8) for _ in range(2048))
        noise[0:2] = b"\x42\x42"  # not a TLS record header (nor SSLv2)
        framed = bytearray(b"\x16\x03\x01\x01\x00") + bytes(rnd.getrandbits(8) for _ in range(256))
        payloads = [bytes(noise), bytes(framed), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"]
        for payload in payloads:
            s = connect(port)
            try:
                s.sendall(payload)
                self.assertIn(wait_closed(s, 5.0), ("eof", "reset"), payload[:16])
            finally:
                s.close()
        # Still serving.
        self.assertServed(self.fetch(port, "localhost"), "svc", "localhost", "after garbage")
        self.assertExitClean(gw)
        self.assertEqual(svc["svc"].accepted, 1)
        ends = sorted(c["end"] for c in gw.conns())
        self.assertEqual(ends, ["closed"] + ["handshake_failed"] * 3, gw.conns())
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshake_failed"], ps["tls_handshakes"]), (3, 1), ps)
        # The reason is one value of the key=value line (OpenSSL's reasons,
        # such as "wrong version number", have spaces).
        failed = [l for l in gw.log_lines() if " conn " in l and "end=handshake_failed" in l]
        self.assertEqual(len(failed), 3)
        for line in failed:
            self.assertRegex(line, r" error=\S+$", "the error value is cut at a space: " + line)


class BytesThroughTest(TLSTestCase):

    def bio_client(self, port, sni="localhost"):
        sock = self.connect(port, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = BioClient(client_context(self.pki), sock, sni, timeout=30)
        c.handshake()
        return c

    def test_1mib_each_way(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("bulk", port, echo.address, "localhost"))
        gw.start()
        data = os.urandom(MiB)
        c = self.bio_client(port)
        wire = c.encrypt(data)
        sender = c.sock.dup()
        self.addCleanup(sender.close)
        errors = []

        def send():
            try:
                sender.settimeout(30)
                sender.sendall(wire)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        back = c.recv_exact(len(data))
        t.join(30)
        self.assertFalse(t.is_alive(), "sending 1 MiB did not finish")
        self.assertEqual(errors, [])
        self.assertEqual(len(back), len(data))
        self.assertEqual(sha256(back), sha256(data))
        # close_notify and FIN: the echo server passes the EOF back.
        c.shutdown_write()
        self.assertEqual(c.recv_until_eof(), b"")
        c.sock.close()
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)
        conns = gw.conns("bulk")
        self.assertEqual(len(conns), 1, conns)
        self.assertEqual(conns[0]["end"], "closed")
        self.assertEqual((int(conns[0]["rx"]), int(conns[0]["tx"])), (MiB, MiB))
        self.assertTrue(conns[0]["tls"].startswith("TLSv1.3/"), conns[0])

    def test_slow_reader_backpressure(self):
        """The upstream sends 6 MiB as fast as it can; the TLS client starts
        reading only after a pause, so the gateway has to stop reading the
        upstream (bounded buffers) and resume later. Every byte arrives."""
        blast = self.server(BlastServer, 6 * MiB)
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("slow", port, blast.address, "localhost"))
        gw.start()
        c = self.bio_client(port)
        time.sleep(0.7)
        got = c.recv_until_eof()
        self.assertEqual(len(got), 6 * MiB)
        self.assertEqual(sha256(got), sha256(blast.block * 6))
        c.shutdown_write()
        c.sock.close()
        self.assertExitClean(gw)
        self.assertNoServerErrors(blast)
        conns = gw.conns("slow")
        self.assertEqual([(x["end"], x["tx"]) for x in conns], [("closed", str(6 * MiB))])
        st = gw.stats("slow")
        self.assertGreaterEqual(st["upstream_paused_reading"], 1, st)
        self.assertEqual(st["tx_bytes"], 6 * MiB)

    def test_many_clients_resuming_at_once(self):
        """40 TLS clients at once over two workers, half of them resuming the
        same session, each echoing 32 KiB."""
        echo = self.server(EchoServer)
        gw = self.gateway(workers=2)
        port = free_port()
        gw.add(self.tls_def("many", port, echo.address, "localhost"))
        gw.start()
        ctx = client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2)
        n = 40
        results = [None] * n
        seed = {}

        def one(i, session=None):
            raw = connect(port, timeout=30)
            try:
                s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
                s.settimeout(30)
                data = os.urandom(32 * 1024)
                s.sendall(data)
                back = bytearray()
                while len(back) < len(data):
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    back += chunk
                results[i] = (bytes(back) == data, s.session_reused)
                seed.setdefault("session", s.session)
                s.unwrap()
                s.close()
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = ("error", repr(e))
            finally:
                raw.close()

        one(0)
        self.assertEqual(results[0], (True, False))
        threads = [threading.Thread(target=one, args=(i, seed["session"] if i % 2 else None),
                                    daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running")
        expected = [(True, bool(i % 2)) for i in range(n)]
        self.assertEqual(results, expected)
        self.assertExitClean(gw)
        self.assertNoServerErrors(echo)
        self.assertEqual([c["end"] for c in gw.conns("many")], ["closed"] * (n + 1))
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["tls_resumed"]), (n + 1, n // 2), ps)

    def test_half_close_over_tls(self):
        """The client sends, then close_notify and its FIN, and keeps reading:
        the upstream sees the EOF, replies only then, and the reply still
        reaches the client."""
        srv = self.server(HashReplyServer)
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("half", port, srv.address, "localhost"))
        gw.start()
        data = os.urandom(300 * 1024 + 7)
        c = self.bio_client(port)
        c.sock.sendall(c.encrypt(data) + c.close_notify_bytes())
        c.sock.shutdown(socket.SHUT_WR)
        reply = c.recv_until_eof()
        self.assertEqual(reply, b"%d %s\n" % (len(data), sha256(data).encode()))
        c.sock.close()
        self.assertExitClean(gw)
        self.assertNoServerErrors(srv)
        conns = gw.conns("half")
        self.assertEqual([c_["end"] for c_ in conns], ["closed"], conns)
        self.assertEqual(int(conns[0]["rx"]), len(data))
        self.assertEqual(int(conns[0]["tx"]), len(reply))

    def test_client_close_without_close_notify_is_a_clean_end(self):
        """Many TLS clients (Python's ssl, browsers) just close the socket,
        without a close_notify of their own. tcpgate allows such "dirty"
        shutdowns (allow_dirty_shutdown), so a TCP FIN from the client is an
        end of its stream like any other:

        - after the reply (the gateway has already sent close_notify and
          FIN): the connection ended normally and the upstream sees an
          orderly EOF, not a reset;
        - as a half-close (request, then FIN, reply still to come): the FIN
          is passed on and the reply still reaches the client.
        """
        svc = self.services("svc")
        hasher = self.server(HashReplyServer)
        gw = self.gateway()
        port, half_port = free_ports(2)
        gw.add(self.tls_def("dirty", port, svc["svc"].address, "localhost"))
        gw.add(self.tls_def("dirty-half", half_port, hasher.address, "localhost"))
        gw.start()

        got = tls_fetch(port, client_context(self.pki), "localhost", close_notify=False)
        self.assertServed(got, "svc", "localhost")

        data = os.urandom(100 * 1024)
        c = self.bio_client(half_port)
        c.sock.sendall(c.encrypt(data))
        c.sock.shutdown(socket.SHUT_WR)  # no close_notify
        try:
            reply = c.recv_until_eof()
        except OSError as e:
            reply = repr(e).encode()
        c.sock.close()

        gw.wait_for_log(r" conn .*api_id=dirty-half ", timeout=5)
        self.assertExitClean(gw)
        with self.subTest("TCP close after the reply"):
            conns = gw.conns("dirty")
            self.assertEqual([x["end"] for x in conns], ["closed"],
                             "a client's TCP close after the gateway's close_notify: %s" % conns)
            self.assertNoServerErrors(*svc.values())
        with self.subTest("TCP half-close without close_notify"):
            conns = gw.conns("dirty-half")
            self.assertEqual(reply, b"%d %s\n" % (len(data), sha256(data).encode()),
                             "reply lost after a half-close without close_notify: %s" % conns)
            self.assertEqual([x["end"] for x in conns], ["closed"], conns)
            self.assertNoServerErrors(hasher)

if __name__ == "__main__":
    unittest.main(verbosity=2)
