"""Certificates: `tcpgate cert-id`, what --check says about certificate files
(a key that does not match, a missing file, a key readable by others, an
expired certificate), and every way a definition may name its certificate
(path with STEM.key or FILE.key beside it, inline PEM, id from certs_path,
the gateway's http_server_options.ssl_certificates)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import definition, free_port, free_ports, run_tool
from tlsutil import OPENSSL, TLSTestCase

PROBLEM = re.compile(r"^(?P<file>[^:]+): (?P<field>[^:]+): (?P<reason>.+)$")


def problems(stderr):
    """--check's lines as (file name, field, reason)."""
    out = []
    for line in stderr.splitlines():
        m = PROBLEM.match(line)
        if m:
            out.append((os.path.basename(m.group("file")), m.group("field"), m.group("reason")))
    return out


def der_sha256sum(path):
    """`openssl x509 -in path -outform DER | sha256sum`, as a user would run it."""
    p = subprocess.run("%s x509 -in '%s' -outform DER | sha256sum" % (OPENSSL, path), shell=True,
                       capture_output=True, timeout=20, check=True)
    return p.stdout.decode().split()[0]


class CertIdTest(TLSTestCase):

    @unittest.skipUnless(shutil.which("sha256sum"), "sha256sum is not installed")
    def test_cert_id_matches_openssl_der_sha256(self):
        for name in ("localhost", "ca", "wrong", "client"):
            with self.subTest(name=name):
                rc, out, err = run_tool("cert-id", self.pki.cert(name))
                self.assertEqual(rc, 0, err)
                self.assertEqual(out, der_sha256sum(self.pki.cert(name)) + "\n")
        # A file with the key, and one with a chain: the id of the first certificate.
        rc, out, err = run_tool("cert-id", self.pki.full("localhost"))
        self.assertEqual((rc, out.strip()), (0, self.pki.cert_id("localhost")), err)
        chain = os.path.join(self.pki.dir, "chain-%d.pem" % os.getpid())
        with open(chain, "w") as f:
            f.write(self.pki.pem("client") + self.pki.pem("ca"))
        self.addCleanup(os.unlink, chain)
        rc, out, err = run_tool("cert-id", chain)
        self.assertEqual((rc, out.strip()), (0, self.pki.cert_id("client")), err)

    def test_cert_id_of_missing_file(self):
        rc, out, err = run_tool("cert-id", "/nonexistent/tcpgate-it/none.pem")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertIn("cannot read", err)


class CheckTest(TLSTestCase):

    def folder(self):
        d = tempfile.mkdtemp(prefix="tcpgate-it-check-")
        self.addCleanup(shutil.rmtree, d, True)
        apps = os.path.join(d, "apps")
        os.mkdir(apps)
        return d, apps

    def copy(self, src, dst, mode):
        shutil.copy(src, dst)
        os.chmod(dst, mode)
        return dst

    def write_def(self, apps, api_id, port, cert_path):
        with open(os.path.join(apps, api_id + ".json"), "w") as f:
            json.dump(definition(api_id, port, "127.0.0.1:9", protocol="tls",
                                 certificates=[cert_path]), f)

    def test_errors(self):
        d, apps = self.folder()
        p = free_ports(3)
        self.write_def(apps, "good", p[0], self.pki.cert("localhost"))
        # A certificate whose key beside it (STEM.key) is another one's.
        mism = self.copy(self.pki.cert("localhost"), os.path.join(d, "mismatch.pem"), 0o644)
        self.copy(self.pki.key("example"), os.path.join(d, "mismatch.key"), 0o600)
        self.write_def(apps, "mismatch", p[1], mism)
        self.write_def(apps, "missing", p[2], os.path.join(d, "nowhere", "none.pem"))
        rc, out, err = run_tool("--check", "--apps", apps)
        self.assertEqual(rc, 1, "stdout: %s\nstderr: %s" % (out, err))
        got = problems(err)
        by_file = {f: (field, reason) for f, field, reason in got}
        self.assertEqual(sorted(by_file), ["mismatch.json", "missing.json"], err)
        field, reason = by_file["mismatch.json"]
        self.assertEqual(field, "certificates")
        self.assertIn(mism, reason)
        self.assertIn("does not match", reason)
        field, reason = by_file["missing.json"]
        self.assertEqual(field, "certificates")
        self.assertIn("none.pem", reason)
        self.assertIn("No such file", reason)
        self.assertIn("3 definitions, 1 servable", out)

    def test_warnings(self):
        """A private key others can read, and an expired certificate, are
        warned about; they are not errors (exit 0), and such a definition
        still serves."""
        self.pki.issue_expired("old", "old.example.com", ["DNS:old.example.com"])
        d, apps = self.folder()
        p = free_ports(3)
        open_cert = self.copy(self.pki.cert("localhost"), os.path.join(d, "open.pem"), 0o644)
        open_key = self.copy(self.pki.key("localhost"), os.path.join(d, "open.key"), 0o644)
        self.write_def(apps, "openkey", p[0], open_cert)
        # Key inside the certificate file, which others can read.
        combined = self.copy(self.pki.full("example"), os.path.join(d, "combined.pem"), 0o644)
        self.write_def(apps, "combined", p[1], combined)
        self.write_def(apps, "expired", p[2], self.pki.cert("old"))
        rc, out, err = run_tool("--check", "--apps", apps)
        self.assertEqual(rc, 0, "stdout: %s\nstderr: %s" % (out, err))
        got = problems(err)
        self.assertEqual(sorted(f for f, _, _ in got),
                         ["combined.json", "expired.json", "openkey.json"], err)
        for f, field, reason in got:
            self.assertEqual(field, "certificates", reason)
            self.assertTrue(reason.startswith("warning: "), reason)
        reasons = {f: r for f, _, r in got}
        self.assertIn(open_key, reasons["openkey.json"])
        self.assertIn("readable by others (mode 644)", reasons["openkey.json"])
        self.assertIn(combined, reasons["combined.json"])
        self.assertIn("readable by others", reasons["combined.json"])
        self.assertIn(self.pki.cert("old"), reasons["expired.json"])
        self.assertIn("expired", reasons["expired.json"])
        self.assertIn("3 definitions, 3 servable", out)

        # The gateway logs the same warnings and serves the expired certificate.
        svc = self.services("old")
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("expired", port, svc["old"].address, "old"))
        gw.start()
        self.assertTrue(any("expired.json: certificates:" in l and "expired" in l
                            for l in gw.lines_at("warn")), gw.log_tail())
        got = self.fetch(port, "old.example.com", verify=False)
        self.assertTrue(got.ok, got)
        self.assertEqual(got.text, "old")
        self.assertExitClean(gw)


class CertificateReferenceTest(TLSTestCase):

    def test_every_way_to_name_a_certificate(self):
        d = tempfile.mkdtemp(prefix="tcpgate-it-refs-")
        self.addCleanup(shutil.rmtree, d, True)
        store = os.path.join(d, "store")
        os.mkdir(store)
        shutil.copy(self.pki.cert("example"), os.path.join(store, "example.pem"))
        shutil.copy(self.pki.key("example"), os.path.join(store, "example.key"))
        os.chmod(os.path.join(store, "example.key"), 0o600)
        # FILE.key beside the certificate (a-cert.pem.key), not STEM.key.
        a_cert = os.path.join(d, "a-cert.pem")
        shutil.copy(self.pki.cert("a"), a_cert)
        shutil.copy(self.pki.key("a"), a_cert + ".key")
        os.chmod(a_cert + ".key", 0o600)

        svc = self.services("by-path", "file-key", "inline", "by-id", "gateway-default")
        gw = self.gateway(config={"certs_path": store,
                                  "http_server_options": {
                                      "ssl_certificates": [self.pki.full("fallback")]}})
        port = free_port()
        gw.add(self.tls_def("by-path", port, svc["by-path"].address, "localhost",
                            domain="localhost"))
        # "certificate": the name Tyk's docs use.
        gw.add(self.tls_def("file-key", port, svc["file-key"].address, None,
                            domain="a.example.com", certificate=[a_cert]))
        gw.add(self.tls_def("inline", port, svc["inline"].address, None, domain="b.example.com",
                            certificates=[self.pki.pem("b") + self.pki.key_pem("b")]))
        gw.add(self.tls_def("by-id", port, svc["by-id"].address, None,
                            domain="example.com", certificates=[self.pki.cert_id("example")]))
        gw.add(self.tls_def("gateway-default", port, svc["gateway-default"].address, None,
                            domain=""))
        gw.start()
        self.assertEqual(gw.lines_at("error"), [])
        cases = [("localhost", "by-path", "localhost"),
                 ("a.example.com", "file-key", "a.example.com"),
                 ("b.example.com", "inline", "b.example.com"),
                 ("example.com", "by-id", "example.com"),
                 ("other.test", "gateway-default", "fallback.test")]
        for sni, service, cn in cases:
            with self.subTest(sni=sni):
                got = self.fetch(port, sni)
                self.assertServed(got, service, cn, "SNI %s" % sni)
        self.assertExitClean(gw)
        self.assertEqual(gw.port_stats(port)["tls_handshakes"], len(cases))


if __name__ == "__main__":
    unittest.main(verbosity=2)
