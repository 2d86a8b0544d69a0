"""Security defaults and options: dropping privileges after binding, refusing
private keys others may read, TLS defaults (TLS 1.2 at least, no RSA key
exchange, no renegotiation), and client payloads never in the logs."""

import os
import stat
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import EchoServer, definition, free_port, recv_exact
from tlsutil import OPENSSL, TLSTestCase, s_client, tls_fetch, client_context


def proc_ids(pid):
    """(real, effective, saved, fs) uids and gids, and the groups of a process."""
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = value.split()
    return ids


class PrivilegesTest(TLSTestCase):

    @unittest.skipUnless(os.geteuid() == 0, "changing user needs root")
    def test_drops_to_user_and_group_after_binding(self):
        echo = self.server(EchoServer)
        gw = self.gateway(config={"tcpgate": {"user": "nobody", "group": "nogroup"}})
        port = free_port()
        gw.add(definition("svc", port, echo.address))
        gw.start()
        gw.wait_for_log(r"running as uid 65534 gid 65534")
        ids = proc_ids(gw.pid)
        self.assertEqual(ids["Uid"], ["65534"] * 4, ids)
        self.assertEqual(ids["Gid"], ["65534"] * 4, ids)
        self.assertEqual(ids["Groups"], ["65534"], ids)
        s = self.connect(port)
        s.sendall(b"hello\n")
        self.assertEqual(recv_exact(s, 6, timeout=10), b"hello\n")
        s.close()
        self.assertEqual(gw.stop(), 0)

    def test_unknown_user_refuses_to_start(self):
        gw = self.gateway(config={"tcpgate": {"user": "no-such-user-tcpgate"}})
        gw.add(definition("svc", free_port(), "127.0.0.1:1"))
        with self.assertRaises(AssertionError):
            gw.start(timeout=5)
        self.assertEqual(gw.wait(), 1)
        self.assertTrue(any("no-such-user-tcpgate" in l for l in gw.log_lines()))


class KeyPermissionsTest(TLSTestCase):

    def loose_copy(self):
        """The localhost certificate with a key file others may read."""
        d = os.path.join(self.pki.dir, "loose")
        os.makedirs(d, exist_ok=True)
        cert = os.path.join(d, "loose.pem")
        key = os.path.join(d, "loose.key")
        with open(self.pki.cert("localhost")) as f, open(cert, "w") as out:
            out.write(f.read())
        with open(self.pki.key("localhost")) as f, open(key, "w") as out:
            out.write(f.read())
        os.chmod(key, 0o644)
        return cert

    def test_warning_by_default_error_when_strict(self):
        cert = self.loose_copy()
        for strict in (False, True):
            gw = self.gateway(config={"tcpgate": {"strict_key_permissions": strict}})
            port = free_port()
            gw.add(self.tls_def("loose", port, "127.0.0.1:1", None, certificates=[cert]))
            gw.start()
            lines = [l for l in gw.log_lines() if "readable by others" in l]
            self.assertTrue(lines, gw.log_tail())
            if strict:
                self.assertIn(" error ", lines[0])
                self.assertIn("skipped", lines[0])
                self.assertTrue(any("no definition to serve" in l for l in gw.log_lines()))
            else:
                self.assertIn(" warn ", lines[0])
                self.assertTrue(any("listening on 127.0.0.1:%d" % port in l
                                    for l in gw.log_lines()))
            gw.stop()


class TLSDefaultsTest(TLSTestCase):

    def start_tls(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(self.tls_def("svc", port, echo.address, "localhost"))
        gw.start()
        return gw, port

    def test_old_versions_and_rsa_key_exchange_refused(self):
        gw, port = self.start_tls()
        rc, out = s_client(port, "-tls1_1", "-servername", "localhost")
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("Cipher is", out.replace("Cipher is (NONE)", ""))
        # TLS 1.2 with only RSA key exchange on offer: no cipher in common.
        rc, out = s_client(port, "-tls1_2", "-cipher", "AES128-SHA:AES256-GCM-SHA384",
                           "-servername", "localhost")
        self.assertNotEqual(rc, 0, out)
        # ECDHE works, and forward secrecy is what TLS 1.2 gets.
        rc, out = s_client(port, "-tls1_2", "-servername", "localhost", stdin=b"")
        self.assertRegex(out, r"Cipher is ECDHE-", out)

    def test_renegotiation_refused(self):
        gw, port = self.start_tls()
        # s_client renegotiates when a line starting with R is typed.
        p = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2",
                            "-servername", "localhost"],
                           input=b"R\n", capture_output=True, timeout=15)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertIn("RENEGOTIATING", out)
        self.assertRegex(out, r"(?i)no renegotiation", out)

    def test_payloads_never_logged(self):
        echo = self.server(EchoServer)
        gw = self.gateway(log_level="debug")
        port = free_port()
        gw.add(definition("svc", port, echo.address))
        gw.start()
        marker = b"SECRET-PAYLOAD-7f3a9c"
        s = self.connect(port)
        s.sendall(marker)
        self.assertEqual(recv_exact(s, len(marker), timeout=10), marker)
        s.close()
        gw.stop()
        with open(gw.log_path, "rb") as f:
            self.assertNotIn(marker, f.read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
