"""systemd integration: with NOTIFY_SOCKET set, the gateway reports readiness,
reloads and stopping (sd_notify), so a Type=notify unit knows its state; and
the shipped unit file names the commands the binary has."""

import os
import re
import signal
import socket
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import BIN, EchoServer, GatewayTestCase, definition, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NotifyTest(GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="tcpgate-notify-")
        self.addCleanup(self.tmp.cleanup)
        self.path = os.path.join(self.tmp.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(self.path)
        self.sock.settimeout(10)

    def expect(self, state):
        """Reads datagrams until one carries state (bounded)."""
        seen = []
        for _ in range(20):
            msg = self.sock.recv(4096).decode()
            seen.append(msg)
            if state in msg.split("\n"):
                return
        self.fail("no %s among %r" % (state, seen))

    def test_ready_reloading_stopping(self):
        echo = self.server(EchoServer)
        gw = self.gateway(env={"NOTIFY_SOCKET": self.path})
        gw.add(definition("svc", free_port(), echo.address))
        gw.start()
        self.expect("READY=1")
        gw.signal(signal.SIGHUP)
        self.expect("RELOADING=1")
        self.expect("READY=1")
        gw.wait_for_log(r"reload \(SIGHUP\)", timeout=10)
        gw.signal(signal.SIGTERM)
        self.expect("STOPPING=1")
        self.assertEqual(gw.wait(), 0)

    def test_abstract_socket(self):
        name = "tcpgate-notify-%d" % os.getpid()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind("\0" + name)
        sock.settimeout(10)
        echo = self.server(EchoServer)
        gw = self.gateway(env={"NOTIFY_SOCKET": "@" + name})
        gw.add(definition("svc", free_port(), echo.address))
        gw.start()
        self.assertIn("READY=1", sock.recv(4096).decode().split("\n"))
        self.assertEqual(gw.stop(), 0)


class UnitFileTest(unittest.TestCase):

    def test_unit_matches_the_binary(self):
        with open(os.path.join(ROOT, "gateway", "tcpgate.service")) as f:
            unit = f.read()
        self.assertIn("Type=notify", unit)
        self.assertRegex(unit, r"ExecReload=.*-HUP \$MAINPID")
        # Every flag the unit passes is one the binary documents.
        import subprocess
        help_text = subprocess.run([BIN, "--help"], capture_output=True, text=True,
                                   timeout=10).stdout
        exec_lines = "\n".join(l for l in unit.splitlines() if l.startswith("Exec"))
        for flag in set(re.findall(r"\s(--[a-z-]+)", exec_lines)):
            self.assertIn(flag, help_text, "the unit uses %s, which --help does not list" % flag)


if __name__ == "__main__":
    unittest.main(verbosity=2)
