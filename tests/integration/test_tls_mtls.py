"""Client mTLS on a tls listener: clients without a certificate or with the
wrong one fail the handshake, allowed ones get through and are named in the
log; certificates allowed one by one, through their CA, or by id from the
certificate folder; a session from a definition without mTLS does not open
one with it."""

import os
import shutil
import ssl
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import free_port
from tlsutil import TLSTestCase, client_context, tls_fetch

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

# What a refused client certificate looks like from the client: an alert,
# during the handshake (TLS 1.2) or at the first read after it (TLS 1.3).
REFUSED = (r"ALERT_(CERTIFICATE_REQUIRED|UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|"
           r"HANDSHAKE_FAILURE|DECRYPT_ERROR)")


class MutualTLSTest(TLSTestCase):

    def mtls_def(self, api_id, port, target, allowed, cert="localhost", **extra):
        return self.tls_def(api_id, port, target, cert, use_mutual_tls_auth=True,
                            client_certificates=list(allowed), **extra)

    def attempt(self, port, cert, version, sni="localhost"):
        return self.fetch(port, sni, cert=cert, min_version=version, max_version=version)

    def assertRefused(self, got, what):
        self.assertFalse(got.ok, "%s was let through: %r" % (what, got))
        self.assertEqual(got.data, b"", what)
        self.assertRegex(got.error, REFUSED, what)

    def assertLetIn(self, got, what, service="secure"):
        self.assertTrue(got.ok, "%s: %r" % (what, got))
        self.assertEqual(got.text, service, what)

    def test_listed_client_certificate(self):
        """client_certificates lists one client certificate: only it gets in.
        A certificate the same CA signed is not enough."""
        svc = self.services("secure")
        gw = self.gateway()
        port = free_port()
        gw.add(self.mtls_def("secure", port, svc["secure"].address, [self.pki.cert("client")]))
        gw.start()
        for v in (V12, V13):
            with self.subTest(version=v.name):
                self.assertRefused(self.attempt(port, None, v), "no certificate")
                self.assertRefused(self.attempt(port, "wrong", v), "a self-signed certificate")
                self.assertRefused(self.attempt(port, "client2", v),
                                   "a certificate of the same CA, not listed")
                self.assertLetIn(self.attempt(port, "client", v), "the listed certificate")
        self.assertExitClean(gw)
        self.assertEqual(svc["secure"].accepted, 2)
        conns = gw.conns()
        ok = [c for c in conns if c["end"] == "closed"]
        self.assertEqual(len(ok), 2, conns)
        for c in ok:
            self.assertEqual(c.get("client_subject"), "/CN=client-alice", c)
        failed = [c for c in conns if c["end"] != "closed"]
        self.assertEqual([c["end"] for c in failed], ["handshake_failed"] * 6, conns)
        self.assertFalse(any("client_subject" in c for c in failed), failed)
        ps = gw.port_stats(port)
        self.assertEqual((ps["tls_handshakes"], ps["tls_handshake_failed"]), (2, 6), ps)

    def test_allowed_through_ca_bundle(self):
        svc = self.services("secure")
        gw = self.gateway()
        port = free_port()
        gw.add(self.mtls_def("secure", port, svc["secure"].address, [self.pki.cert("ca")]))
        gw.start()
        self.assertLetIn(self.attempt(port, "client", V13), "client-alice")
        self.assertLetIn(self.attempt(port, "client2", V13), "client-bob")
        self.assertLetIn(self.attempt(port, "client2", V12), "client-bob over TLS 1.2")
        self.assertRefused(self.attempt(port, "wrong", V13), "a self-signed certificate")
        self.assertRefused(self.attempt(port, None, V13), "no certificate")
        self.assertExitClean(gw)
        subjects = sorted(c.get("client_subject") for c in gw.conns("secure")
                          if c["end"] == "closed")
        self.assertEqual(subjects, ["/CN=client-alice", "/CN=client-bob", "/CN=client-bob"])
        self.assertEqual(gw.port_stats(port)["tls_handshake_failed"], 2)

    def test_certificates_by_id_from_certs_path(self):
        """The server certificate and the allowed CA are named by their ids,
        found in the gateway config's certs_path folder (the server key beside
        its certificate as STEM.key)."""
        folder = os.path.join(self.pki.dir, "store-%d" % os.getpid())
        os.mkdir(folder)
        self.addCleanup(shutil.rmtree, folder, True)
        for name in ("localhost", "ca"):
            shutil.copy(self.pki.cert(name), os.path.join(folder, name + ".pem"))
        shutil.copy(self.pki.key("localhost"), os.path.join(folder, "localhost.key"))
        os.chmod(os.path.join(folder, "localhost.key"), 0o600)

        svc = self.services("secure")
        gw = self.gateway(config={"certs_path": folder})
        port = free_port()
        gw.add(self.mtls_def("secure", port, svc["secure"].address,
                             [self.pki.cert_id("ca")],
                             certificates=[self.pki.cert_id("localhost")]))
        gw.start()
        got = self.attempt(port, "client", V13)
        self.assertLetIn(got, "client-alice")
        self.assertEqual(got.cert["subject"], ((("commonName", "localhost"),),))
        self.assertRefused(self.attempt(port, None, V13), "no certificate")
        self.assertExitClean(gw)
        self.assertEqual([c.get("client_subject") for c in gw.conns("secure")
                          if c["end"] == "closed"], ["/CN=client-alice"])
        self.assertFalse([l for l in gw.lines_at("error")], gw.log_tail())

    def test_session_of_open_definition_does_not_skip_mtls(self):
        """One port: example.com without mTLS, localhost with it. A session
        from example.com offered with SNI localhost must not resume: the full
        handshake asks for the client certificate. A session of an allowed
        client does resume."""
        svc = self.services("open", "secure")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("open", port, svc["open"].address, "example", domain="example.com"))
        gw.add(self.mtls_def("secure", port, svc["secure"].address, [self.pki.cert("client")],
                             domain="localhost"))
        gw.start()
        for v in (V12, V13):
            with self.subTest(version=v.name):
                ctx = client_context(self.pki, min_version=v, max_version=v)
                first = tls_fetch(port, ctx, "example.com")
                self.assertLetIn(first, "open without a certificate", "open")
                again = tls_fetch(port, ctx, "example.com", session=first.session)
                self.assertLetIn(again, "open, resumed", "open")
                self.assertTrue(again.reused, "the open definition's session did not resume")
                crossed = tls_fetch(port, ctx, "localhost", session=first.session)
                self.assertRefused(crossed, "the open definition's session on the mTLS one")
                self.assertFalse(crossed.reused)

                mctx = client_context(self.pki, cert="client", min_version=v, max_version=v)
                alice = tls_fetch(port, mctx, "localhost")
                self.assertLetIn(alice, "client-alice")
                back = tls_fetch(port, mctx, "localhost", session=alice.session)
                self.assertLetIn(back, "client-alice, resumed")
                self.assertTrue(back.reused, "client-alice's session did not resume")
        self.assertExitClean(gw)
        self.assertEqual(svc["secure"].accepted, 4)
        ps = gw.port_stats(port)
        self.assertEqual(ps["tls_resumed"], 4, ps)
        subjects = [c.get("client_subject") for c in gw.conns("secure") if c["end"] == "closed"]
        self.assertEqual(subjects, ["/CN=client-alice"] * 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
