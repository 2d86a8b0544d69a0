"""Definition loading: bad files are skipped and named, --check reports
problems as "file: field: reason", conflicts name both files."""

import json
import os
import re
import socket
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (EchoServer, GatewayTestCase, definition, free_port, free_ports,
                     recv_until_eof, run_tool, wait_closed)

PROBLEM = re.compile(r"^(?P<file>[^:]+): (?P<field>[^:]+): (?P<reason>.+)$")


def problems(stderr):
    """--check's problem lines as (file, field, reason)."""
    out = []
    for line in stderr.splitlines():
        m = PROBLEM.match(line)
        if m:
            out.append((m.group("file"), m.group("field"), m.group("reason")))
    return out


class DefinitionsTest(GatewayTestCase):

    def echo_roundtrip(self, port, data=b"hello through the gateway"):
        s = self.connect(port)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s, timeout=10), data)
        s.close()

    def error_lines(self, gw, file_name):
        return [l for l in gw.log_lines()
                if re.search(r" error\s", l) and "/" + file_name + ":" in l]

    def test_bad_definitions_skipped_good_one_serves(self):
        echo = self.server(EchoServer)
        gw = self.gateway()
        good_port = free_port()
        gw.add(definition("good", good_port, echo.address))
        gw.add('{"api_id": "broken", "listen_port": ', name="broken.json")
        gw.add(definition("zero", 0, echo.address), name="zero.json")
        gw.start()

        broken = self.error_lines(gw, "broken.json")
        self.assertEqual(len(broken), 1, gw.log_tail())
        self.assertIn("(json)", broken[0])
        self.assertIn("skipped", broken[0])
        zero = self.error_lines(gw, "zero.json")
        self.assertEqual(len(zero), 1, gw.log_tail())
        self.assertIn(": listen_port: ", zero[0])
        self.assertIn("skipped", zero[0])
        self.assertTrue(any("listening on" in l and ":%d " % good_port in l and "api_id=good" in l
                            for l in gw.log_lines()), gw.log_tail())

        self.echo_roundtrip(good_port)
        self.assertExitClean(gw)
        self.assertEqual([c["end"] for c in gw.conns("good")], ["closed"])
        self.assertEqual(gw.stats("good")["cx_total"], 1)
        # Skipped definitions are not served, so they have no stats.
        self.assertFalse(any("stats api_id=zero" in l or "stats api_id=broken" in l
                             for l in gw.log_lines()))

    def test_check_valid_folder(self):
        with tempfile.TemporaryDirectory(prefix="tcpgate-it-") as d:
            p1, p2 = free_ports(2)
            for api_id, port in (("one", p1), ("two", p2)):
                with open(os.path.join(d, api_id + ".json"), "w") as f:
                    json.dump(definition(api_id, port, "127.0.0.1:9"), f)
            rc, out, err = run_tool("--check", "--apps", d)
        self.assertEqual(rc, 0, "stdout: %s\nstderr: %s" % (out, err))
        self.assertEqual(problems(err), [])
        self.assertIn("2 definitions", out)
        self.assertIn("0 errors", out)

    def test_check_invalid_folder(self):
        with tempfile.TemporaryDirectory(prefix="tcpgate-it-") as d:
            good, other = free_ports(2)
            files = {
                "good.json": json.dumps(definition("good", good, "127.0.0.1:9")),
                "broken.json": '{"api_id": "broken", "listen_port": ',
                "zero.json": json.dumps(definition("zero", 0, "127.0.0.1:9")),
                "badidle.json": json.dumps(definition("badidle", other, "127.0.0.1:9",
                                                      ext={"idle_timeout": "soon"})),
            }
            for name, text in files.items():
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
            rc, out, err = run_tool("--check", "--apps", d)
        self.assertEqual(rc, 1, "stdout: %s\nstderr: %s" % (out, err))
        found = problems(err)
        by_file = {}
        for f, field, reason in found:
            by_file.setdefault(os.path.basename(f), []).append(field)
        self.assertIn("(json)", by_file.get("broken.json", []), err)
        self.assertIn("listen_port", by_file.get("zero.json", []), err)
        self.assertIn("tcpgate.idle_timeout", by_file.get("badidle.json", []), err)
        self.assertNotIn("good.json", by_file, err)
        # Every stderr line is a "file: field: reason" problem line.
        self.assertEqual(len(found), len(err.splitlines()), err)
        self.assertIn("3 errors", out)

    def conflict(self, domain):
        """Two definitions on one port (same domain, or both without)."""
        a = self.server(EchoServer)
        b = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        extra = {"domain": domain} if domain else {}
        first = gw.add(definition("first", port, a.address, **extra), name="a_first.json")
        later = gw.add(definition("later", port, b.address, **extra), name="b_later.json")
        gw.start()
        lines = self.error_lines(gw, "b_later.json")
        self.assertEqual(len(lines), 1, gw.log_tail())
        self.assertIn(": domain: ", lines[0])
        self.assertIn(first, lines[0], "the earlier file is not named")
        self.assertIn("skipped", lines[0])
        self.assertEqual(self.error_lines(gw, "a_first.json"), [])
        # The earlier definition serves the port.
        self.echo_roundtrip(port)
        self.assertExitClean(gw)
        self.assertEqual(len(gw.conns("first")), 1)
        self.assertEqual(gw.conns("later"), [])
        self.assertEqual(a.accepted, 1)
        self.assertEqual(b.accepted, 0)

        rc, out, err = run_tool("--check", "--apps", gw.apps)
        self.assertEqual(rc, 1, err)
        found = problems(err)
        self.assertEqual(len(found), 1, err)
        self.assertEqual(found[0][0], later)
        self.assertEqual(found[0][1], "domain")
        self.assertIn(first, found[0][2])

    def test_same_port_without_domain(self):
        self.conflict(None)

    def test_same_port_same_domain(self):
        self.conflict("api.example.com")

    def test_shared_port_without_fallback_closes_plain_text(self):
        """Two domains on one plain-TCP port and no definition without a
        domain: the port routes by the TLS server name, so a client that does
        not speak TLS is closed and counted, and reaches no upstream."""
        echo = self.server(EchoServer)
        gw = self.gateway()
        port = free_port()
        gw.add(definition("one", port, echo.address, domain="one.example"))
        gw.add(definition("two", port, echo.address, domain="two.example"))
        gw.start()
        s = self.connect(port)
        s.sendall(b"PING\r\n")
        self.assertIn(wait_closed(s, 5), ("eof", "reset"))
        s.close()
        gw.wait_for_log(r" conn .*end=no_route error=not_tls", timeout=5)
        self.assertExitClean(gw)
        self.assertEqual(echo.accepted, 0)
        self.assertTrue(any(re.search(r"stats port=%d .*not_tls=1" % port, l)
                            for l in gw.log_lines()), gw.log_tail())

    def test_invalid_gateway_config(self):
        gw = self.gateway(config='{"tcpgate": {"drain_timeout": "soon"}}')
        port = free_port()
        gw.add(definition("x", port, "127.0.0.1:9"))
        with self.assertRaises(AssertionError):
            gw.start(timeout=10)  # it exits instead of starting
        self.assertEqual(gw.wait(5), 1)
        self.assertTrue(any("gateway.json: tcpgate.drain_timeout: " in l
                            for l in gw.log_lines()), gw.log_tail())

    def test_version_and_help(self):
        rc, out, err = run_tool("--version")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^tcpgate \d+\.\d+\.\d+")
        rc, out, err = run_tool("--help")
        self.assertEqual(rc, 0, err)
        self.assertIn("usage: tcpgate", out)
        self.assertIn("--check", out)
        rc, out, err = run_tool("--no-such-option")
        self.assertNotEqual(rc, 0)
        self.assertIn("usage: tcpgate", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
