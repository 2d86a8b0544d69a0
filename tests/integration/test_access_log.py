"""The access log (tcpgate.access_log): one JSON object per line and per
connection, written when the connection ends, with the end reason, the
client (as a PROXY header gave it), the route, TLS details on both legs and
the bytes each way. SIGUSR1 reopens the file, for log rotation; "stderr"
writes the lines to standard error."""

import datetime
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (EchoServer, NameServer, definition, free_port, free_ports, recv_exact,
                     recv_until_eof, wait_closed)
from tlsutil import BioClient, TLSNameServer, TLSTestCase, client_context, server_context

FIELDS = {"time", "duration_ms", "client", "listen_port", "api_id", "sni", "tls_version",
          "tls_cipher", "alpn", "target", "upstream_tls_version", "upstream_tls_cipher",
          "attempts", "rx_bytes", "tx_bytes", "end", "error"}


def read_lines(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        return []
    assert text == "" or text.endswith("\n"), "a partial line at the end: %r" % text[-200:]
    return text.splitlines()


def parse_time(stamp):
    """The line's "time": UTC, milliseconds, a Z."""
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


class AccessLogTest(TLSTestCase):

    def access_gateway(self, path, **config):
        ext = dict(config.pop("tcpgate", {}), access_log=path)
        return self.gateway(config=dict(config, tcpgate=ext))

    def wait_lines(self, path, count, timeout=10.0):
        """The file's lines, once it has at least count (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = read_lines(path)
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    def by_client(self, entries, client):
        """The one line of the client "host:port"."""
        found = [e for e in entries if e["client"] == client]
        self.assertEqual(len(found), 1, "lines for client %s: %r" % (client, found))
        return found[0]

    def assertLine(self, entry, **want):
        got = {k: entry.get(k) for k in want}
        self.assertEqual(got, want, entry)

    def test_every_end_reason(self):
        path = os.path.join(self.make_dir(), "access.log")
        echo = self.server(EchoServer)
        hello = self.server(NameServer, "hello")
        up_tls = self.server(TLSNameServer, "up", server_context(self.pki, "localhost"))
        gw = self.access_gateway(path)
        (p_echo, p_name, p_idle, p_dur, p_dead, p_tls, p_pp, p_up, p_drain,
         dead) = free_ports(10)
        gw.add(definition("echo", p_echo, echo.address))
        gw.add(definition("name", p_name, hello.address))
        gw.add(definition("idle", p_idle, echo.address, ext={"idle_timeout": "1s"}))
        gw.add(definition("maxdur", p_dur, echo.address,
                          ext={"max_connection_duration": "1s", "idle_timeout": "10s"}))
        gw.add(definition("dead", p_dead, "127.0.0.1:%d" % dead,
                          ext={"max_connect_attempts": 1}))
        gw.add(self.tls_def("tls", p_tls, echo.address, "localhost", domain="localhost",
                            ext={"alpn": ["h2", "http/1.1"]}))
        gw.add(definition("pp", p_pp, echo.address, enable_proxy_protocol=True,
                          ext={"proxy_protocol_trusted": ["127.0.0.1/32"]}))
        gw.add(definition("uptls", p_up, "tls://127.0.0.1:%d" % up_tls.port,
                          ext={"upstream_ca_file": self.pki.cert("ca")}))
        gw.add(definition("drain", p_drain, echo.address, ext={"drain_timeout": "1s"}))
        t_start = time.time()
        gw.start()
        clients = {}

        # The timeouts run while the rest goes on.
        idle = self.connect(p_idle)
        idle.sendall(b"ping")
        self.assertEqual(recv_exact(idle, 4), b"ping")
        clients["idle"] = idle.getsockname()
        dur = self.connect(p_dur)
        clients["maxdur"] = dur.getsockname()

        # The client closes first; 1234 bytes each way.
        s = self.connect(p_echo)
        clients["echo"] = s.getsockname()
        s.sendall(os.urandom(1234))
        self.assertEqual(len(recv_exact(s, 1234)), 1234)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()

        # The upstream closes first: it says hello and shuts its side.
        s = self.connect(p_name)
        clients["name"] = s.getsockname()
        self.assertEqual(recv_until_eof(s), b"hello\n")
        s.close()

        # Nobody listens at the target.
        s = self.connect(p_dead)
        clients["dead"] = s.getsockname()
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()

        # TLS terminated, with ALPN; 300 bytes each way, then close_notify and FIN.
        sock = self.connect(p_tls)
        clients["tls"] = sock.getsockname()
        c = BioClient(client_context(self.pki, alpn=["h2"]), sock, "localhost")
        c.handshake()
        tls_version, tls_cipher = c.obj.version(), c.obj.cipher()[0]
        self.assertEqual(c.obj.selected_alpn_protocol(), "h2")
        c.sendall(b"t" * 300)
        self.assertEqual(c.recv_exact(300), b"t" * 300)
        c.shutdown_write()
        self.assertEqual(c.recv_until_eof(), b"")
        sock.close()

        # A name nobody serves (with bytes that have no place in a log line).
        sock = self.connect(p_tls)
        clients["no_route"] = sock.getsockname()
        c = BioClient(client_context(self.pki), sock, b'evil"na\\me.example.com')
        try:
            c.handshake()
            self.fail("a name no definition serves was accepted")
        except ssl.SSLError:
            pass
        sock.close()

        # Not TLS on the TLS port.
        s = self.connect(p_tls)
        clients["handshake"] = s.getsockname()
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()

        # A PROXY header accepted: the client is the header's source.
        s = self.connect(p_pp)
        s.sendall(b"PROXY TCP4 192.0.2.33 192.0.2.1 41000 %d\r\nproxied" % p_pp)
        self.assertEqual(recv_exact(s, 7), b"proxied")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()
        # An IPv6 source, in brackets.
        s = self.connect(p_pp)
        s.sendall(b"PROXY TCP6 2001:db8::7 2001:db8::1 41001 %d\r\nsix" % p_pp)
        self.assertEqual(recv_exact(s, 3), b"six")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()
        # ... and one refused: no header at all.
        s = self.connect(p_pp)
        clients["pp_rejected"] = s.getsockname()
        s.sendall(b"hello without a header\r\n")
        self.assertIn(wait_closed(s, 5.0), ("eof", "reset"))
        s.close()

        # TLS to the upstream.
        s = self.connect(p_up)
        clients["uptls"] = s.getsockname()
        self.assertEqual(recv_exact(s, 3), b"up\n")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()

        for sock in (idle, dur):
            self.assertIn(wait_closed(sock, 6.0), ("eof", "reset"))

        # Drain: a connection still open at SIGTERM is closed after 1 s.
        s = self.connect(p_drain)
        clients["drain"] = s.getsockname()
        s.sendall(b"drained")
        self.assertEqual(recv_exact(s, 7), b"drained")
        gw.signal(signal.SIGTERM)
        self.assertIn(wait_closed(s, 6.0), ("eof", "reset"))
        s.close()
        self.assertEqual(gw.wait(timeout=10), 0, gw.log_tail())
        t_end = time.time()

        lines = read_lines(path)
        entries = [json.loads(l) for l in lines]  # each line one JSON object
        self.assertEqual(len(entries), 13, lines)
        for e in entries:
            self.assertEqual(set(e), FIELDS, e)
            self.assertIsInstance(e["duration_ms"], int)
            self.assertGreaterEqual(e["duration_ms"], 0)
            self.assertTrue(t_start - 2 <= parse_time(e["time"]) <= t_end + 2, e)
        addr = lambda name: "%s:%d" % clients[name][:2]  # noqa: E731
        line = lambda name: self.by_client(entries, addr(name))  # noqa: E731
        plain_tls = dict(sni=None, tls_version=None, tls_cipher=None, alpn=None,
                         upstream_tls_version=None, upstream_tls_cipher=None)
        echo_t = "tcp://" + echo.address

        self.assertLine(line("echo"), api_id="echo", listen_port=p_echo, target=echo_t,
                        attempts=1, rx_bytes=1234, tx_bytes=1234, end="client_closed",
                        error=None, **plain_tls)
        self.assertLine(line("name"), api_id="name", listen_port=p_name,
                        target="tcp://" + hello.address, attempts=1, rx_bytes=0, tx_bytes=6,
                        end="upstream_closed", error=None, **plain_tls)
        self.assertLine(line("idle"), api_id="idle", target=echo_t, rx_bytes=4, tx_bytes=4,
                        end="idle_timeout", **plain_tls)
        self.assertGreaterEqual(line("idle")["duration_ms"], 1000)
        self.assertLine(line("maxdur"), api_id="maxdur", target=echo_t, rx_bytes=0, tx_bytes=0,
                        end="max_duration")
        self.assertGreaterEqual(line("maxdur")["duration_ms"], 1000)
        self.assertLine(line("dead"), api_id="dead", listen_port=p_dead,
                        target="tcp://127.0.0.1:%d" % dead, attempts=1, rx_bytes=0, tx_bytes=0,
                        end="connect_failed", **plain_tls)
        self.assertLine(line("tls"), api_id="tls", listen_port=p_tls, sni="localhost",
                        tls_version=tls_version, tls_cipher=tls_cipher, alpn="h2",
                        target=echo_t, attempts=1, rx_bytes=300, tx_bytes=300,
                        end="client_closed", upstream_tls_version=None, error=None)
        # The client's bytes that are no host-name character became "_".
        self.assertLine(line("no_route"), api_id=None, listen_port=p_tls,
                        sni="evil_na_me.example.com", tls_version=None, target=None, attempts=0,
                        rx_bytes=0, tx_bytes=0, end="no_route")
        self.assertLine(line("handshake"), api_id=None, listen_port=p_tls, sni=None,
                        tls_version=None, target=None, attempts=0, rx_bytes=0, tx_bytes=0,
                        end="handshake_failed", error="http_request")
        self.assertLine(self.by_client(entries, "192.0.2.33:41000"), api_id="pp",
                        listen_port=p_pp, target=echo_t, rx_bytes=7, tx_bytes=7,
                        end="client_closed", error=None)
        self.assertLine(self.by_client(entries, "[2001:db8::7]:41001"), api_id="pp",
                        rx_bytes=3, tx_bytes=3, end="client_closed")
        self.assertLine(line("pp_rejected"), api_id=None, listen_port=p_pp, target=None,
                        attempts=0, rx_bytes=0, tx_bytes=0, end="proxy_rejected",
                        error="no_proxy_header")
        up = line("uptls")
        self.assertLine(up, api_id="uptls", target="tls://127.0.0.1:%d" % up_tls.port,
                        tls_version=None, upstream_tls_version="TLSv1.3", rx_bytes=0,
                        tx_bytes=3, end="client_closed")
        self.assertTrue(up["upstream_tls_cipher"].startswith("TLS_"), up)
        self.assertLine(line("drain"), api_id="drain", target=echo_t, rx_bytes=7, tx_bytes=7,
                        end="drain")
        self.assertNoServerErrors(echo, hello, up_tls)

    def test_sigusr1_reopens_the_file(self):
        path = os.path.join(self.make_dir(), "access.log")
        echo = self.server(EchoServer)
        gw = self.access_gateway(path)
        port = free_port()
        gw.add(definition("echo", port, echo.address))
        gw.start()

        s = self.connect(port)
        first = "%s:%d" % s.getsockname()[:2]
        s.sendall(b"first")
        self.assertEqual(recv_exact(s, 5), b"first")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()
        self.assertEqual(len(self.wait_lines(path, 1)), 1)

        rotated = path + ".1"
        os.rename(path, rotated)
        gw.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(os.path.exists(path), "SIGUSR1 did not open a new file")

        s = self.connect(port)
        second = "%s:%d" % s.getsockname()[:2]
        s.sendall(b"second!")
        self.assertEqual(recv_exact(s, 7), b"second!")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()
        self.assertEqual(len(self.wait_lines(path, 1)), 1)
        self.assertExitClean(gw)
        old = [json.loads(l) for l in read_lines(rotated)]
        new = [json.loads(l) for l in read_lines(path)]
        self.assertEqual([(e["client"], e["rx_bytes"]) for e in old], [(first, 5)])
        self.assertEqual([(e["client"], e["rx_bytes"]) for e in new], [(second, 7)])

    def test_stderr(self):
        echo = self.server(EchoServer)
        gw = self.access_gateway("stderr")
        port = free_port()
        gw.add(definition("echo", port, echo.address))
        gw.start()
        s = self.connect(port)
        client = "%s:%d" % s.getsockname()[:2]
        s.sendall(b"to stderr")
        self.assertEqual(recv_exact(s, 9), b"to stderr")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")
        s.close()
        gw.wait_for_log(r'^\{"time":', timeout=5)
        # With no file to reopen, SIGUSR1 changes nothing (it does not stop
        # the gateway either).
        gw.signal(signal.SIGUSR1)
        s = self.connect(port)
        s.sendall(b"after")
        self.assertEqual(recv_exact(s, 5), b"after")
        s.close()
        gw.wait_for_log(r'^\{"time":', timeout=5, count=2)
        self.assertTrue(gw.running())
        self.assertExitClean(gw)
        entries = [json.loads(l) for l in gw.log_lines() if l.startswith("{")]
        self.assertEqual(len(entries), 2, entries)
        self.assertEqual(set(entries[0]), FIELDS)
        self.assertLine(entries[0], client=client, api_id="echo", listen_port=port, rx_bytes=9,
                        tx_bytes=9, end="client_closed")

    def test_overflow(self):
        """A connection over max_connections is closed at once; its line
        says overflow and names the limit."""
        path = os.path.join(self.make_dir(), "access.log")
        echo = self.server(EchoServer)
        gw = self.access_gateway(path)
        port = free_port()
        gw.add(definition("capped", port, echo.address, ext={"max_connections": 1}))
        gw.start()
        held = self.connect(port)
        held.sendall(b"in")
        self.assertEqual(recv_exact(held, 2), b"in")
        over = self.connect(port)
        client = "%s:%d" % over.getsockname()[:2]
        self.assertIn(wait_closed(over, 5.0), ("eof", "reset"))
        over.close()
        lines = self.wait_lines(path, 1)
        held.close()
        self.assertExitClean(gw)
        entry = json.loads(lines[0])
        self.assertLine(entry, client=client, api_id="capped", target=None, attempts=0,
                        rx_bytes=0, tx_bytes=0, end="overflow", error="max_connections")

    def test_long_api_id_still_gets_its_line(self):
        """Every connection gets its whole line, however long its api_id
        (nothing bounds its length when definitions load)."""
        path = os.path.join(self.make_dir(), "access.log")
        echo = self.server(EchoServer)
        gw = self.access_gateway(path)
        ids = {"s" * 1500: None, "l" * 2100: None}
        for api_id in ids:
            ids[api_id] = free_port()
            gw.add(definition(api_id, ids[api_id], echo.address), name="%s.json" % api_id[0])
        gw.start()
        for port in ids.values():
            s = self.connect(port)
            s.sendall(b"abc")
            self.assertEqual(recv_exact(s, 3), b"abc")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(s), b"")
            s.close()
        gw.wait_for_log(r" conn ", timeout=5, count=2)
        dropped = gw.metrics()["tcpgate_access_log_dropped_total"]
        self.assertExitClean(gw)
        entries = [json.loads(l) for l in read_lines(path)]
        got = sorted(len(e["api_id"]) for e in entries)
        self.assertEqual((got, dropped), ([1500, 2100], 0),
                         "lines for api_ids of these lengths, and lines dropped")

    def test_unwritable_path_is_refused(self):
        """A file that cannot be opened stops the start with the reason."""
        echo = self.server(EchoServer)
        gw = self.access_gateway(os.path.join(self.make_dir(), "no", "such", "dir", "a.log"))
        gw.add(definition("echo", free_port(), echo.address))
        with self.assertRaises(AssertionError):
            gw.start(timeout=10)
        self.assertEqual(gw.wait(timeout=10), 1)
        self.assertTrue(any("access log" in l and "No such file or directory" in l
                            for l in gw.lines_at("error")), gw.log_tail())

    def make_dir(self):
        tmp = tempfile.TemporaryDirectory(prefix="tcpgate-it-log-")
        self.addCleanup(tmp.cleanup)
        return tmp.name


if __name__ == "__main__":
    unittest.main(verbosity=2)
