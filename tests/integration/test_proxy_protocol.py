"""PROXY protocol, in and out, against real peers.

In: HAProxy 2.6 (`send-proxy`, `send-proxy-v2`, `proxy-v2-options crc32c`) in
front of tcpgate ports with "enable_proxy_protocol": true; the client's own
source port (its getsockname()) must be what tcpgate logs as the client.

Out: tcpgate's "send_proxy_protocol" (v1, v2, v2 with CRC32C) to HAProxy
(`accept-proxy`, a log-format with %ci:%cp) and to nginx's stream module
(`listen ... proxy_protocol`, $proxy_protocol_addr:$proxy_protocol_port in
the access log), and to Python upstreams that parse the header themselves
(tests/integration has its own parser and CRC-32C here, independent of the C).

Chains: client (TLS, SNI) -> HAProxy (send-proxy-v2) -> tcpgate (PROXY in, TLS
terminated with SNI routing, v2 out with AUTHORITY, ALPN, SSL, CRC32C) ->
Python upstream; and the same with SNI passthrough.

Bad peers: no header, untrusted source, a header too slow, malformed and
truncated headers, and 10,000 random-garbage connections while a good client
keeps working; proxy_protocol_optional.

HAProxy and nginx run as foreground processes with their own files in a
temporary folder, on 127.0.0.1 only; every wait is bounded and everything is
stopped by cleanups on failure.
"""

import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, EchoServer, GatewayTestCase, ThreadedServer, definition, free_ports,
                     is_refused, recv_exact, wait_closed)

try:
    import tlsutil
except ImportError:  # pragma: no cover - tlsutil is part of the suite
    tlsutil = None

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                      if os.path.exists("/usr/sbin/haproxy") else None)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"

GW_CONFIG = {"listen_address": HOST}
TRUST_LOCAL = {"proxy_protocol_trusted": ["127.0.0.1/32"]}

PRX_REJECT_COUNTERS = ("prx_not_hdr", "prx_bad_hdr", "prx_truncated", "prx_timeout",
                       "prx_untrusted")


# ---- a PROXY protocol parser of our own --------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_SSL = 0x01, 0x02, 0x03, 0x20
PP2_SUBTYPE_SSL_VERSION, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_CIPHER = 0x21, 0x22, 0x23


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


class PPError(Exception):
    pass


def parse_v1(line):
    """line: the header without its CRLF."""
    parts = line.decode("ascii").split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise PPError("not a v1 line: %r" % line)
    if parts[1] == "UNKNOWN":
        return {"version": 1, "command": "LOCAL", "family": "UNKNOWN", "src": None,
                "dst": None, "tlvs": {}, "ssl": None, "crc_ok": None, "raw": line + b"\r\n"}
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise PPError("bad v1 line: %r" % line)
    fam = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
    for a in parts[2:4]:
        socket.inet_pton(fam, a)
    return {"version": 1, "command": "PROXY", "family": parts[1],
            "src": (parts[2], int(parts[4])), "dst": (parts[3], int(parts[5])),
            "tlvs": {}, "ssl": None, "crc_ok": None, "raw": line + b"\r\n"}


def parse_v2(hdr):
    """hdr: the whole v2 header (16 + length bytes)."""
    if hdr[:12] != V2_SIG:
        raise PPError("no v2 signature")
    ver, cmd = hdr[12] >> 4, hdr[12] & 0x0F
    if ver != 2 or cmd not in (0, 1):
        raise PPError("v2 version/command 0x%02x" % hdr[12])
    length = struct.unpack("!H", hdr[14:16])[0]
    if len(hdr) != 16 + length:
        raise PPError("v2 length %d, have %d" % (length, len(hdr) - 16))
    fam = hdr[13]
    body = hdr[16:]
    info = {"version": 2, "command": "LOCAL" if cmd == 0 else "PROXY", "family": fam,
            "src": None, "dst": None, "tlvs": {}, "tlv_order": [], "ssl": None,
            "crc_ok": None, "raw": bytes(hdr)}
    if fam == 0x11:
        alen = 12
        if length < alen:
            raise PPError("v2 INET block cut")
        info["src"] = (socket.inet_ntop(socket.AF_INET, body[0:4]),
                       struct.unpack("!H", body[8:10])[0])
        info["dst"] = (socket.inet_ntop(socket.AF_INET, body[4:8]),
                       struct.unpack("!H", body[10:12])[0])
    elif fam == 0x21:
        alen = 36
        if length < alen:
            raise PPError("v2 INET6 block cut")
        info["src"] = (socket.inet_ntop(socket.AF_INET6, body[0:16]),
                       struct.unpack("!H", body[32:34])[0])
        info["dst"] = (socket.inet_ntop(socket.AF_INET6, body[16:32]),
                       struct.unpack("!H", body[34:36])[0])
    elif fam == 0x00:
        alen = 0
    else:
        raise PPError("v2 family 0x%02x" % fam)
    pos = alen
    crc_at = None
    while pos < len(body):
        if len(body) - pos < 3:
            raise PPError("v2 TLV header cut")
        t = body[pos]
        n = struct.unpack("!H", body[pos + 1:pos + 3])[0]
        if pos + 3 + n > len(body):
            raise PPError("v2 TLV 0x%02x runs past the header" % t)
        v = bytes(body[pos + 3:pos + 3 + n])
        if t in info["tlvs"]:
            raise PPError("v2 TLV 0x%02x twice" % t)
        info["tlvs"][t] = v
        info["tlv_order"].append(t)
        if t == PP2_TYPE_CRC32C:
            crc_at = 16 + pos + 3
        if t == PP2_TYPE_SSL:
            info["ssl"] = _parse_ssl(v)
        pos += 3 + n
    if crc_at is not None:
        zeroed = bytearray(hdr)
        zeroed[crc_at:crc_at + 4] = b"\0\0\0\0"
        info["crc_ok"] = crc32c(bytes(zeroed)) == struct.unpack("!I", hdr[crc_at:crc_at + 4])[0]
    return info


def _parse_ssl(v):
    if len(v) < 5:
        raise PPError("SSL TLV too short")
    ssl_info = {"client": v[0], "verify": struct.unpack("!I", v[1:5])[0], "subs": {}}
    pos = 5
    while pos < len(v):
        if len(v) - pos < 3:
            raise PPError("SSL sub-TLV header cut")
        t = v[pos]
        n = struct.unpack("!H", v[pos + 1:pos + 3])[0]
        if pos + 3 + n > len(v):
            raise PPError("SSL sub-TLV runs past")
        ssl_info["subs"][t] = v[pos + 3:pos + 3 + n]
        pos += 3 + n
    return ssl_info


def _recv_n(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise PPError("EOF after %d bytes of a PROXY header" % len(buf))
        buf += chunk
    return bytes(buf)


def read_pp(conn):
    """Reads exactly one PROXY header (never a byte more, so a TLS handshake
    can follow on the same socket) and returns it parsed."""
    first = _recv_n(conn, 8)
    if first[:6] == b"PROXY ":
        line = bytearray(first)
        while not line.endswith(b"\r\n"):
            if len(line) >= 107:
                raise PPError("v1 line longer than 107 bytes: %r" % bytes(line))
            line += _recv_n(conn, 1)
        return parse_v1(bytes(line[:-2]))
    if first == V2_SIG[:8]:
        hdr = first + _recv_n(conn, 8)
        length = struct.unpack("!H", hdr[14:16])[0]
        return parse_v2(hdr + (_recv_n(conn, length) if length else b""))
    raise PPError("no PROXY header: %r" % first)


class PPServer(ThreadedServer):
    """An upstream that expects a PROXY header first. It puts the parsed
    header (a dict, with "index", or {"error": ...}) in results at once, then
    echoes what follows; with ctx it does a TLS handshake after the header,
    sends name + "\\n" (unless banner=False) and echoes inside TLS (recording
    the SNI it saw). greeting: bytes sent at accept, before reading anything."""

    def __init__(self, name="PP", ctx=None, banner=True, greeting=None, **kw):
        super().__init__(**kw)
        self.name = name
        self.ctx = ctx
        self.banner = banner
        self.greeting = greeting
        if ctx is not None:
            def on_sni(sslsock, server_name, _ctx):
                sslsock.sni_seen = server_name
                return None

            ctx.sni_callback = on_sni

    def handle(self, conn, index):
        conn.settimeout(20)
        if self.greeting is not None:
            conn.sendall(self.greeting)  # a server that speaks first
        try:
            info = read_pp(conn)
        except (PPError, UnicodeDecodeError, ValueError, OSError) as e:
            self.results.put({"index": index, "error": str(e)})
            return
        info["index"] = index
        if self.ctx is None:
            self.results.put(info)
            for chunk in self.chunks(conn):
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            return
        s = self.ctx.wrap_socket(conn, server_side=True)
        try:
            info["sni"] = getattr(s, "sni_seen", None)
            self.results.put(info)
            if self.banner:
                s.sendall(self.name.encode() + b"\n")
            deadline = time.monotonic() + 30
            while not self._stopping.is_set() and time.monotonic() < deadline:
                try:
                    chunk = s.recv(1 << 16)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                s.sendall(chunk)
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass
        finally:
            s.close()


# ---- HAProxy and nginx as foreground processes --------------------------------------


def listening(port):
    """True if something listens on 127.0.0.1:port (from /proc/net/tcp, so
    checking makes no connection that a proxy would pass on)."""
    want = "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


class _Proc:
    """A foreground server process with its files in a temporary folder."""

    name = "proc"

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="tcpgate-pp-%s-" % self.name)
        self.dir = self._tmp.name
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        self.proc = None
        self._files = []

    def _spawn(self, args, ports, timeout=10.0):
        out = open(self.out_path, "wb")
        err = open(self.err_path, "wb")
        self._files += [out, err]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not all(listening(p) for p in ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = self.diagnostics()
                self.stop()
                raise AssertionError("%s did not listen on %s:\n%s" % (self.name, ports, text))
            time.sleep(0.02)
        return self

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self):
        return "stdout:\n%s\nstderr:\n%s" % (self._read(self.out_path)[-4000:],
                                             self._read(self.err_path)[-4000:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: it and its workers
                except OSError:
                    pass
                self.proc.wait(5)

    def close(self):
        try:
            self.stop()
        finally:
            for f in self._files:
                f.close()
            self._files = []
            self._tmp.cleanup()


class HAProxy(_Proc):
    """haproxy -db -f cfg; its log ("log stdout format raw") is its stdout file."""

    name = "haproxy"
    HEAD = """\
global
    log stdout format raw local0
    maxconn 2000
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"""

    def __init__(self, body):
        super().__init__()
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(self.HEAD + body)

    def start(self, *ports):
        return self._spawn([HAPROXY, "-db", "-f", self.cfg], ports)

    def log_lines(self):
        return self._read(self.out_path).split("\n")[:-1]

    def wait_for_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [l for l in self.log_lines() if rx.search(l)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("haproxy logged nothing matching %r:\n%s"
                                     % (pattern, self.diagnostics()))
            time.sleep(0.02)


class Nginx(_Proc):
    """nginx -p dir -c conf -e error.log -g 'daemon off;' with the stream module."""

    name = "nginx"

    def __init__(self, stream_body):
        super().__init__()
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.access = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        with open(self.conf, "w") as f:
            f.write("load_module %s;\n"
                    "worker_processes 1;\n"
                    "error_log %s info;\n"
                    "pid %s;\n"
                    "events { worker_connections 128; }\n"
                    "stream {\n%s\n}\n"
                    % (NGINX_STREAM, self.error_log, os.path.join(self.dir, "nginx.pid"),
                       stream_body.replace("ACCESS_LOG", self.access)))

    def start(self, *ports):
        return self._spawn([NGINX, "-p", self.dir + "/", "-c", self.conf, "-e", self.error_log,
                            "-g", "daemon off;"], ports)

    def diagnostics(self):
        return super().diagnostics() + "\nerror.log:\n" + self._read(self.error_log)[-4000:]

    def wait_for_access(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [l for l in self._read(self.access).split("\n") if rx.search(l)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("nginx access log has nothing matching %r:\n%s\n%s"
                                     % (pattern, self._read(self.access), self.diagnostics()))
            time.sleep(0.02)


# ---- clients --------------------------------------------------------------------------


def exchange(port, payload, prefix=b"", timeout=15.0):
    """Connects, sends prefix + payload, reads the echo of payload, closes.
    Returns the client's own source port."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        src_port = s.getsockname()[1]
        s.sendall(prefix + payload)
        got = recv_exact(s, len(payload), timeout)
        if got != payload:
            raise AssertionError("echo differs: %d of %d bytes, equal prefix: %r"
                                 % (len(got), len(payload), payload.startswith(got)))
        s.shutdown(socket.SHUT_WR)
        rest = recv_exact(s, 1, timeout)
        if rest:
            raise AssertionError("more than the echo: %r" % rest)
        return src_port
    finally:
        s.close()


def v2_header(src, dst, sport, dport, local=False):
    """A plain v2 header over INET (or LOCAL)."""
    if local:
        return V2_SIG + b"\x20\x00\x00\x00"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


def pp_def(api_id, port, target, ext=None, inbound=True, **extra):
    """A definition; inbound: "enable_proxy_protocol" with 127.0.0.1 trusted
    (unless ext says otherwise)."""
    e = dict(TRUST_LOCAL) if inbound else {}
    e.update(ext or {})
    if inbound:
        extra["enable_proxy_protocol"] = True
    return definition(api_id, port, target, ext=e or None, **extra)


def require(binary, what):
    if binary is None:
        raise unittest.SkipTest("%s is not installed" % what)


class PPTestCase(GatewayTestCase):

    def gateway(self, **kw):
        kw.setdefault("config", dict(GW_CONFIG))
        return super().gateway(**kw)

    def haproxy(self, body, *ports):
        require(HAPROXY, "haproxy")
        h = HAProxy(body)
        self.addCleanup(h.close)
        return h.start(*ports)

    def nginx(self, body, *ports):
        require(NGINX, "nginx")
        if not os.path.exists(NGINX_STREAM):
            raise unittest.SkipTest("nginx's stream module is not installed")
        n = Nginx(body)
        self.addCleanup(n.close)
        return n.start(*ports)

    def conn_line(self, gw, client_port, timeout=10.0):
        """tcpgate's conn line for the client 127.0.0.1:client_port, as a dict."""
        gw.wait_for_log(r" conn client=127\.0\.0\.1:%d " % client_port, timeout=timeout)
        for c in gw.conns():
            if c.get("client") == "%s:%d" % (HOST, client_port):
                return c
        raise AssertionError("no conn line for client port %d" % client_port)

    def result(self, server, timeout=10.0):
        try:
            r = server.results.get(timeout=timeout)
        except Exception:
            raise AssertionError("%s: no result within %.1f s (accepted %d, errors %r)"
                                 % (type(server).__name__, timeout, server.accepted,
                                    server.errors))
        self.assertNotIn("error", r, "upstream could not read a PROXY header: %r" % r)
        return r

    def stop_and_stats(self, gw, port):
        self.assertExitClean(gw)
        return gw.port_stats(port)

    def assertCounters(self, stats, **want):
        """The prx_* counters named are as given, the others 0."""
        for name in ("prx_accepted",) + PRX_REJECT_COUNTERS:
            self.assertEqual(stats.get(name), want.get(name, 0),
                             "%s: %r" % (name, {k: v for k, v in stats.items()
                                                if k.startswith("prx_")}))


# ---- HAProxy in front of tcpgate ------------------------------------------------------


class HAProxyInFrontTest(PPTestCase):

    def test_haproxy_send_proxy_v1_v2_and_crc32c(self):
        """HAProxy with send-proxy, send-proxy-v2 and send-proxy-v2 with
        CRC32C and UNIQUE_ID TLVs: tcpgate logs the client's own address and
        port, and bytes flow both ways."""
        up = self.server(EchoServer)
        gw_port, fe1, fe2, fe3 = free_ports(4)
        gw = self.gateway()
        gw.add(pp_def("pp-in", gw_port, up.address))
        gw.start()
        self.haproxy(
            "listen v1\n    bind %s:%d\n    server gw %s:%d send-proxy\n"
            "listen v2\n    bind %s:%d\n    server gw %s:%d send-proxy-v2\n"
            "listen v2crc\n    bind %s:%d\n    unique-id-format %%{+X}o%%ci:%%cp_%%Ts\n"
            "    server gw %s:%d send-proxy-v2 proxy-v2-options crc32c,unique-id\n"
            % (HOST, fe1, HOST, gw_port, HOST, fe2, HOST, gw_port, HOST, fe3, HOST, gw_port),
            fe1, fe2, fe3)
        rng = random.Random(1)
        for fe, label in ((fe1, "send-proxy"), (fe2, "send-proxy-v2"), (fe3, "v2 crc32c")):
            with self.subTest(label):
                payload = rng.randbytes(200_000)
                client_port = exchange(fe, payload)
                c = self.conn_line(gw, client_port)
                self.assertEqual(c["api_id"], "pp-in", c)
                self.assertEqual(c["end"], "closed", c)
                self.assertEqual(int(c["rx"]), len(payload), c)
                self.assertEqual(int(c["tx"]), len(payload), c)
                self.assertEqual(c["target"], up.address, c)
        self.assertEqual(up.accepted, 3)
        stats = self.stop_and_stats(gw, gw_port)
        self.assertCounters(stats, prx_accepted=3)
        self.assertNoServerErrors(up)


# ---- tcpgate sending to HAProxy, nginx and Python ------------------------------------


class SendProxyTest(PPTestCase):

    def test_to_haproxy_accept_proxy(self):
        """v1, v2 and v2 with CRC32C from tcpgate: HAProxy's %ci:%cp is the
        client tcpgate saw, %fi:%fp the address it connected to."""
        up = self.server(EchoServer)
        hp_port, p1, p2, p3 = free_ports(4)
        hp = self.haproxy(
            "frontend fe\n    bind %s:%d accept-proxy\n"
            "    log-format \"PPLOG ci=%%ci:%%cp fi=%%fi:%%fp\"\n"
            "    default_backend be\n"
            "backend be\n    server echo %s\n" % (HOST, hp_port, up.address), hp_port)
        gw = self.gateway()
        hp_addr = "%s:%d" % (HOST, hp_port)
        gw.add(pp_def("out-v1", p1, hp_addr, inbound=False, ext={"send_proxy_protocol": "v1"}))
        gw.add(pp_def("out-v2", p2, hp_addr, inbound=False, ext={"send_proxy_protocol": "v2"}))
        gw.add(pp_def("out-v2c", p3, hp_addr, inbound=False,
                      ext={"send_proxy_protocol": "v2", "send_proxy_protocol_crc32c": True}))
        gw.start()
        for port, label in ((p1, "v1"), (p2, "v2"), (p3, "v2+crc32c")):
            with self.subTest(label):
                payload = os.urandom(50_000)
                client_port = exchange(port, payload)
                hp.wait_for_log(r"PPLOG ci=127\.0\.0\.1:%d fi=127\.0\.0\.1:%d$"
                                % (client_port, port))
                c = self.conn_line(gw, client_port)
                self.assertEqual(c["end"], "closed", c)
        self.assertEqual(up.accepted, 3)
        self.assertExitClean(gw)
        self.assertNoServerErrors(up)

    def test_to_nginx_stream(self):
        """v1 and v2 (with CRC32C) from tcpgate to nginx's stream module:
        $proxy_protocol_addr:$proxy_protocol_port is tcpgate's client."""
        up = self.server(EchoServer)
        ng_port, p1, p2 = free_ports(3)
        ng = self.nginx(
            "    log_format pp 'PPLOG pp=$proxy_protocol_addr:$proxy_protocol_port "
            "srv=$proxy_protocol_server_addr:$proxy_protocol_server_port';\n"
            "    access_log ACCESS_LOG pp;\n"
            "    server {\n        listen %s:%d proxy_protocol;\n"
            "        proxy_pass %s;\n    }\n" % (HOST, ng_port, up.address), ng_port)
        gw = self.gateway()
        ng_addr = "%s:%d" % (HOST, ng_port)
        gw.add(pp_def("ng-v1", p1, ng_addr, inbound=False, ext={"send_proxy_protocol": "v1"}))
        gw.add(pp_def("ng-v2", p2, ng_addr, inbound=False,
                      ext={"send_proxy_protocol": "v2", "send_proxy_protocol_crc32c": True}))
        gw.start()
        for port, label in ((p1, "v1"), (p2, "v2")):
            with self.subTest(label):
                payload = os.urandom(30_000)
                client_port = exchange(port, payload)
                ng.wait_for_access(r"PPLOG pp=127\.0\.0\.1:%d srv=127\.0\.0\.1:%d$"
                                   % (client_port, port))
        self.assertEqual(up.accepted, 2)
        self.assertExitClean(gw)
        self.assertNoServerErrors(up)

    def test_inbound_addresses_carried_out(self):
        """PROXY in and out on one port: the outbound header carries the
        inbound header's addresses (v1 TCP6 in -> v1 out, v2 in -> v2 out),
        and the connection's own when the inbound header was LOCAL or
        UNKNOWN. The header goes before the client's first bytes, which
        arrived in the same segment as its own header."""
        up = self.server(PPServer)
        p1, p2 = free_ports(2)
        # The largest header the protocol allows, which is above the default cap.
        gw = self.gateway(config=dict(GW_CONFIG, tcpgate={"proxy_header_max": 65551}))
        gw.add(pp_def("chain-v1", p1, up.address, ext={"send_proxy_protocol": "v1"}))
        gw.add(pp_def("chain-v2", p2, up.address,
                      ext={"send_proxy_protocol": "v2", "send_proxy_protocol_crc32c": True}))
        gw.start()
        payload = b"first bytes after the header\n" + os.urandom(5000)

        with self.subTest("v1 TCP6 in, v1 out"):
            exchange(p1, payload, b"PROXY TCP6 2001:db8::5 2001:db8::1 41000 443\r\n")
            r = self.result(up)
            self.assertEqual(r["raw"], b"PROXY TCP6 2001:db8::5 2001:db8::1 41000 443\r\n")
            gw.wait_for_log(r" conn client=\[2001:db8::5\]:41000 port=%d " % p1)

        with self.subTest("v2 in, v2 out"):
            exchange(p2, payload, v2_header("203.0.113.7", "198.51.100.2", 40001, 8443))
            r = self.result(up)
            self.assertEqual(r["version"], 2)
            self.assertEqual(r["command"], "PROXY")
            self.assertEqual(r["src"], ("203.0.113.7", 40001))
            self.assertEqual(r["dst"], ("198.51.100.2", 8443))
            self.assertIs(r["crc_ok"], True, r)
            self.assertNotIn(PP2_TYPE_AUTHORITY, r["tlvs"])  # no SNI on a plain port
            self.assertIsNone(r["ssl"])  # tcpgate did not terminate TLS
            gw.wait_for_log(r" conn client=203\.0\.113\.7:40001 port=%d " % p2)

        with self.subTest("v2 LOCAL in: the connection's own addresses"):
            client_port = exchange(p2, payload, v2_header(None, None, 0, 0, local=True))
            r = self.result(up)
            self.assertEqual(r["src"], (HOST, client_port))
            self.assertEqual(r["dst"], (HOST, p2))
            self.conn_line(gw, client_port)

        with self.subTest("v1 UNKNOWN in: the connection's own addresses"):
            client_port = exchange(p1, payload, b"PROXY UNKNOWN\r\n")
            r = self.result(up)
            self.assertEqual(r["raw"], b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n"
                             % (client_port, p1))
            self.conn_line(gw, client_port)

        with self.subTest("v1 in, one byte per segment"):
            s = self.connect(p1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in b"PROXY TCP4 192.0.2.77 192.0.2.1 1077 443\r\n":
                s.sendall(bytes([b]))
                time.sleep(0.003)
            s.sendall(payload)
            self.assertEqual(recv_exact(s, len(payload)), payload)
            s.close()
            r = self.result(up)
            self.assertEqual(r["raw"], b"PROXY TCP4 192.0.2.77 192.0.2.1 1077 443\r\n")

        with self.subTest("v2 in with 64 KiB of TLVs"):
            body = (socket.inet_aton("192.0.2.88") + socket.inet_aton("192.0.2.1")
                    + struct.pack("!HH", 1088, 443))
            body += b"\xe0" + struct.pack("!H", 65535 - 12 - 3) + b"t" * (65535 - 12 - 3)
            hdr = V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body
            exchange(p2, payload, hdr)
            r = self.result(up)
            self.assertEqual(r["src"], ("192.0.2.88", 1088))
            self.assertEqual(r["dst"], ("192.0.2.1", 443))
            self.assertNotIn(0xE0, r["tlvs"], "a custom TLV is not passed on")
            gw.wait_for_log(r" conn client=192\.0\.2\.88:1088 port=%d " % p2)

        self.assertEqual(up.accepted, 6)
        stats = self.stop_and_stats(gw, p1)
        self.assertCounters(stats, prx_accepted=3)
        self.assertCounters(gw.port_stats(p2), prx_accepted=3)
        self.assertNoServerErrors(up)

    def test_server_speaks_first(self):
        """An upstream that greets first (SMTP/MySQL style): the client sends
        nothing until it has the greeting, and the PROXY header is still the
        first thing the upstream reads."""
        up = self.server(PPServer, greeting=b"220 ready\r\n")
        p1, p2 = free_ports(2)
        gw = self.gateway()
        gw.add(pp_def("greet-v1", p1, up.address, inbound=False, ext={"send_proxy_protocol": "v1"}))
        gw.add(pp_def("greet-v2", p2, up.address, inbound=False, ext={"send_proxy_protocol": "v2"}))
        gw.start()
        for port in (p1, p2):
            with self.subTest(port=port):
                s = self.connect(port)
                client_port = s.getsockname()[1]
                self.assertEqual(recv_exact(s, 11, 10), b"220 ready\r\n")
                s.sendall(b"HELO x\r\n")
                self.assertEqual(recv_exact(s, 8, 10), b"HELO x\r\n")
                r = self.result(up)
                self.assertEqual(r["src"], (HOST, client_port))
                self.assertEqual(r["dst"], (HOST, port))
                s.close()
        self.assertExitClean(gw)
        self.assertNoServerErrors(up)


# ---- TLS: termination and passthrough behind HAProxy ---------------------------------


class TLSChainTest(PPTestCase):

    @classmethod
    def setUpClass(cls):
        if tlsutil is None:
            raise unittest.SkipTest("tlsutil.py is not available")
        tlsutil.require_openssl()
        cls.pki = tlsutil.Pki()
        cls.addClassCleanup(cls.pki.close)
        cls.pki.make_ca()
        cls.pki.issue("app", "app.example.com", ["DNS:app.example.com"])
        cls.pki.issue("other", "other.example.com", ["DNS:other.example.com"])
        cls.pki.issue("ip", "127.0.0.1", ["IP:127.0.0.1"])
        cls.pki.issue("client", "client-alice", client=True)

    def client_ctx(self, alpn=None, cert=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.cert("ca"))
        ctx.check_hostname = True
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if cert:
            ctx.load_cert_chain(self.pki.cert(cert), self.pki.key(cert))
        return ctx

    def server_ctx(self, name):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.cert(name), self.pki.key(name))
        return ctx

    def tls_session(self, port, sni, payload, alpn=None, expect_name=None, cert=None):
        """A verifying TLS client: returns (source port, version, cipher, alpn,
        first line) after an echo of payload."""
        raw = socket.create_connection((HOST, port), timeout=15)
        self.addCleanup(raw.close)
        src_port = raw.getsockname()[1]
        s = self.client_ctx(alpn, cert).wrap_socket(raw, server_hostname=sni)
        try:
            s.settimeout(15)
            cert = s.getpeercert()
            self.assertEqual(tlsutil.subject_cn(cert), sni)
            name = None
            if expect_name is not None:
                line = bytearray()
                while not line.endswith(b"\n") and len(line) < 100:
                    chunk = s.recv(1)
                    if not chunk:
                        break
                    line += chunk
                name = bytes(line).decode().strip()
                self.assertEqual(name, expect_name)
            s.sendall(payload)
            got = bytearray()
            deadline = time.monotonic() + 15
            while len(got) < len(payload) and time.monotonic() < deadline:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(bytes(got), payload, "echo through %s" % sni)
            info = (src_port, s.version(), s.cipher()[0], s.selected_alpn_protocol())
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass
            return info
        finally:
            s.close()

    def test_full_chain_tls_termination(self):
        """client (TLS, SNI) -> HAProxy send-proxy-v2 -> tcpgate (PROXY in, TLS
        terminated, SNI routing between two definitions, v2 out) -> a Python
        upstream that checks the client's address, AUTHORITY, ALPN, the SSL
        TLV and the CRC32C, then echoes."""
        up_app = self.server(PPServer, "APP")
        up_other = self.server(PPServer, "OTHER")
        gw_port, fe = free_ports(2)
        gw = self.gateway()
        gw.add(pp_def("app", gw_port, up_app.address, protocol="tls", domain="app.example.com",
                      certificates=[self.pki.cert("app")],
                      ext={"send_proxy_protocol": "v2", "send_proxy_protocol_crc32c": True,
                           "alpn": ["h2", "http/1.1"]}))
        gw.add(pp_def("other", gw_port, up_other.address, protocol="tls",
                      domain="other.example.com", certificates=[self.pki.cert("other")],
                      ext={"send_proxy_protocol": "v2"}))
        gw.start()
        self.haproxy("listen tls\n    bind %s:%d\n    server gw %s:%d send-proxy-v2\n"
                     % (HOST, fe, HOST, gw_port), fe)

        payload = os.urandom(100_000)
        src, version, cipher, alpn = self.tls_session(fe, "app.example.com", payload,
                                                      alpn=["h2"])
        self.assertEqual(alpn, "h2")
        r = self.result(up_app)
        self.assertEqual(r["version"], 2)
        self.assertEqual(r["command"], "PROXY")
        self.assertEqual(r["src"], (HOST, src), "the client's own source port")
        self.assertEqual(r["dst"], (HOST, fe), "the address the client connected to")
        self.assertEqual(r["tlvs"].get(PP2_TYPE_AUTHORITY), b"app.example.com")
        self.assertEqual(r["tlvs"].get(PP2_TYPE_ALPN), b"h2")
        self.assertIs(r["crc_ok"], True)
        self.assertIsNotNone(r["ssl"], "no SSL TLV: %r" % r)
        self.assertEqual(r["ssl"]["client"] & 0x01, 0x01, r["ssl"])
        self.assertEqual(r["ssl"]["client"] & 0x06, 0, "no client certificate was sent")
        self.assertEqual(r["ssl"]["verify"], 0)
        self.assertEqual(r["ssl"]["subs"].get(PP2_SUBTYPE_SSL_VERSION), version.encode())
        self.assertEqual(r["ssl"]["subs"].get(PP2_SUBTYPE_SSL_CIPHER), cipher.encode())
        self.assertNotIn(PP2_SUBTYPE_SSL_CN, r["ssl"]["subs"])
        c = self.conn_line(gw, src)
        self.assertEqual(c["api_id"], "app", c)
        self.assertEqual(c["sni"], "app.example.com", c)
        self.assertEqual(c.get("alpn"), "h2", c)
        self.assertEqual(c["end"], "closed", c)

        # The other name, on the same port: its own upstream and AUTHORITY.
        src2, _, _, _ = self.tls_session(fe, "other.example.com", b"other payload")
        r2 = self.result(up_other)
        self.assertEqual(r2["src"], (HOST, src2))
        self.assertEqual(r2["tlvs"].get(PP2_TYPE_AUTHORITY), b"other.example.com")
        self.assertNotIn(PP2_TYPE_ALPN, r2["tlvs"])
        self.assertNotIn(PP2_TYPE_CRC32C, r2["tlvs"])
        self.assertIsNotNone(r2["ssl"])
        self.assertEqual(self.conn_line(gw, src2)["api_id"], "other")

        self.assertEqual((up_app.accepted, up_other.accepted), (1, 1))
        stats = self.stop_and_stats(gw, gw_port)
        self.assertCounters(stats, prx_accepted=2)
        self.assertEqual(stats.get("tls_handshakes"), 2)
        self.assertNoServerErrors(up_app, up_other)

    def test_ssl_tlv_with_client_certificate(self):
        """mTLS on the terminating port: the v2 SSL TLV says a certificate
        was presented on this connection and verified, with its CN."""
        up = self.server(PPServer)
        (port,) = free_ports(1)
        gw = self.gateway()
        gw.add(pp_def("mtls", port, up.address, inbound=False, protocol="tls",
                      domain="app.example.com", certificates=[self.pki.cert("app")],
                      use_mutual_tls_auth=True, client_certificates=[self.pki.cert("client")],
                      ext={"send_proxy_protocol": "v2", "send_proxy_protocol_crc32c": True}))
        gw.start()
        src, version, cipher, _ = self.tls_session(port, "app.example.com", b"with a cert",
                                                   cert="client")
        r = self.result(up)
        self.assertEqual(r["src"], (HOST, src))
        self.assertEqual(r["dst"], (HOST, port))
        self.assertIs(r["crc_ok"], True)
        self.assertEqual(r["tlvs"].get(PP2_TYPE_AUTHORITY), b"app.example.com")
        self.assertIsNotNone(r["ssl"], r)
        self.assertEqual(r["ssl"]["client"] & 0x03, 0x03, "SSL and CERT_CONN: %r" % r["ssl"])
        self.assertEqual(r["ssl"]["verify"], 0)
        self.assertEqual(r["ssl"]["subs"].get(PP2_SUBTYPE_SSL_CN), b"client-alice")
        self.assertEqual(r["ssl"]["subs"].get(PP2_SUBTYPE_SSL_VERSION), version.encode())
        self.assertEqual(r["ssl"]["subs"].get(PP2_SUBTYPE_SSL_CIPHER), cipher.encode())
        self.assertExitClean(gw)

    def test_sni_passthrough_behind_haproxy(self):
        """Two tcp definitions with domains on one PROXY port; HAProxy
        send-proxy-v2 in front; the ClientHello after the header routes the
        connection to the right TLS upstream, end to end. With
        send_proxy_protocol v2 the upstream sees the client and the SNI as
        AUTHORITY, and no SSL TLV (tcpgate did not terminate TLS)."""
        up_app = self.server(PPServer, "APP", ctx=self.server_ctx("app"))
        up_other = self.server(PPServer, "OTHER", ctx=self.server_ctx("other"))
        gw_port, fe = free_ports(2)
        gw = self.gateway()
        gw.add(pp_def("pass-app", gw_port, up_app.address, domain="app.example.com",
                      ext={"send_proxy_protocol": "v2"}))
        gw.add(pp_def("pass-other", gw_port, up_other.address, domain="other.example.com",
                      ext={"send_proxy_protocol": "v2"}))
        gw.start()
        self.haproxy("listen pass\n    bind %s:%d\n    server gw %s:%d send-proxy-v2\n"
                     % (HOST, fe, HOST, gw_port), fe)
        for sni, name, up, api in (("other.example.com", "OTHER", up_other, "pass-other"),
                                   ("app.example.com", "APP", up_app, "pass-app")):
            with self.subTest(sni):
                src, _, _, _ = self.tls_session(fe, sni, os.urandom(20_000), expect_name=name)
                r = self.result(up)
                self.assertEqual(r["src"], (HOST, src))
                self.assertEqual(r["dst"], (HOST, fe))
                self.assertEqual(r["tlvs"].get(PP2_TYPE_AUTHORITY), sni.encode())
                self.assertIsNone(r["ssl"])
                self.assertEqual(r.get("sni"), sni, "the upstream's own handshake saw the SNI")
                c = self.conn_line(gw, src)
                self.assertEqual(c["api_id"], api, c)
                self.assertEqual(c["sni"], sni, c)
                self.assertEqual(c["end"], "closed", c)
        self.assertEqual((up_app.accepted, up_other.accepted), (1, 1))
        stats = self.stop_and_stats(gw, gw_port)
        self.assertCounters(stats, prx_accepted=2)
        self.assertNoServerErrors(up_app, up_other)

    def test_header_before_upstream_tls(self):
        """With a tls:// target the PROXY header goes first on the wire, in
        clear, and the TLS handshake follows (as HAProxy's `send-proxy ssl`
        and nginx's proxy_protocol with proxy_ssl do). Receivers: HAProxy
        `bind ... accept-proxy ssl crt`, and a Python upstream that reads
        the header and then does TLS."""
        up = self.server(EchoServer)
        hp_port, p1, p2, p3 = free_ports(4)
        py_up = self.server(PPServer, "PY", ctx=self.server_ctx("ip"), banner=False)
        hp = self.haproxy(
            "frontend fe\n    bind %s:%d accept-proxy ssl crt %s\n"
            "    log-format \"PPLOG ci=%%ci:%%cp fi=%%fi:%%fp\"\n"
            "    default_backend be\n"
            "backend be\n    server echo %s\n"
            % (HOST, hp_port, self.pki.full("ip"), up.address), hp_port)
        gw = self.gateway()
        ca = {"upstream_ca_file": self.pki.cert("ca")}
        gw.add(pp_def("tls-v1", p1, "tls://%s:%d" % (HOST, hp_port), inbound=False,
                      ext=dict(ca, send_proxy_protocol="v1")))
        gw.add(pp_def("tls-v2", p2, "tls://%s:%d" % (HOST, hp_port), inbound=False,
                      ext=dict(ca, send_proxy_protocol="v2")))
        gw.add(pp_def("tls-py", p3, "tls://%s:%d" % (HOST, py_up.port), inbound=False,
                      ext=dict(ca, send_proxy_protocol="v2")))
        gw.start()
        with self.subTest("python upstream: header, then TLS"):
            try:
                client_port = exchange(p3, b"over upstream TLS", timeout=8)
            except (OSError, AssertionError) as e:
                client_port = None
                failure = repr(e)
            r = py_up.results.get(timeout=10)
            self.assertNotIn("error", r, "the upstream did not get a PROXY header before TLS: %r"
                             "; tcpgate: %s" % (r, gw.log_tail(5)))
            self.assertIsNotNone(client_port, failure if client_port is None else "")
            self.assertEqual(r["src"], (HOST, client_port))
        for port, label in ((p1, "haproxy v1"), (p2, "haproxy v2")):
            with self.subTest(label):
                try:
                    client_port = exchange(port, os.urandom(10_000), timeout=8)
                except (OSError, AssertionError) as e:
                    self.fail("no echo through HAProxy accept-proxy ssl (%r)\ntcpgate:\n%s\n"
                              "haproxy:\n%s" % (e, gw.log_tail(6), hp.diagnostics()))
                hp.wait_for_log(r"PPLOG ci=127\.0\.0\.1:%d fi=127\.0\.0\.1:%d$"
                                % (client_port, port))
        self.assertExitClean(gw)

    def test_header_and_client_hello_in_one_segment(self):
        """A client (or proxy) that sends its PROXY header and its ClientHello
        in one write: the bytes after the header are the start of TLS, for a
        terminating port and for a passthrough port."""
        up_term = self.server(EchoServer)
        up_pass = self.server(PPServer, "PASS", ctx=self.server_ctx("other"), banner=False)
        p_term, p_pass = free_ports(2)
        gw = self.gateway()
        gw.add(pp_def("term", p_term, up_term.address, protocol="tls", domain="app.example.com",
                      certificates=[self.pki.cert("app")]))
        gw.add(pp_def("pass", p_pass, up_pass.address, domain="other.example.com",
                      ext={"send_proxy_protocol": "v1"}))
        gw.add(pp_def("pass-fallback", p_pass, up_term.address, domain=""))
        gw.start()
        for port, sni, src in ((p_term, "app.example.com", ("192.0.2.44", 44444)),
                               (p_pass, "other.example.com", ("192.0.2.55", 55555))):
            with self.subTest(sni):
                raw = self.connect(port)
                c = tlsutil.BioClient(self.client_ctx(), raw, sni)
                hello = c.start()
                header = b"PROXY TCP4 %s 127.0.0.1 %d %d\r\n" % (src[0].encode(), src[1], port)
                raw.sendall(header + hello)
                c.handshake()
                c.sendall(b"ping over TLS")
                self.assertEqual(c.recv_exact(13), b"ping over TLS")
                c.shutdown_write()
                raw.close()
                gw.wait_for_log(r" conn client=%s:%d port=%d .*sni=%s"
                                % (re.escape(src[0]), src[1], port, re.escape(sni)))
        r = self.result(up_pass)
        self.assertEqual(r["raw"], b"PROXY TCP4 192.0.2.55 127.0.0.1 55555 %d\r\n" % p_pass)
        self.assertEqual(r["sni"], "other.example.com")
        stats = self.stop_and_stats(gw, p_term)
        self.assertCounters(stats, prx_accepted=1)
        self.assertCounters(gw.port_stats(p_pass), prx_accepted=1)


# ---- bad peers ------------------------------------------------------------------------


class BadPeersTest(PPTestCase):

    def rejected(self, gw, client_port, error):
        c = self.conn_line(gw, client_port)
        self.assertEqual(c["end"], "proxy_rejected", c)
        self.assertEqual(c.get("error"), error, c)
        self.assertEqual(c["target"], "-", c)
        return c

    def start_required(self, ext=None):
        up = self.server(EchoServer)
        (port,) = free_ports(1)
        gw = self.gateway()
        gw.add(pp_def("req", port, up.address, ext=ext))
        gw.start()
        return gw, port, up

    def test_no_header_when_required(self):
        gw, port, up = self.start_required()
        s = self.connect(port)
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
        self.assertLess(time.monotonic() - t0, 2.0, "closed at the first byte, not by a timeout")
        self.rejected(gw, client_port, "no_proxy_header")
        self.assertEqual(up.accepted, 0, "nothing may reach the upstream")
        self.assertCounters(self.stop_and_stats(gw, port), prx_not_hdr=1)

    def test_header_over_the_cap(self):
        """A v2 header longer than tcpgate.proxy_header_max is refused as soon
        as that many bytes came, not at the timeout, and costs no more."""
        up = self.server(EchoServer)
        (port,) = free_ports(1)
        gw = self.gateway(config=dict(GW_CONFIG, tcpgate={"proxy_header_max": 256}))
        gw.add(pp_def("cap", port, up.address))
        gw.start()
        body = (socket.inet_aton("192.0.2.9") + socket.inet_aton("192.0.2.1")
                + struct.pack("!HH", 1009, 443))
        body += b"\xe0" + struct.pack("!H", 1000) + b"t" * 1000
        s = self.connect(port)
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        try:
            s.sendall(V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body)
        except OSError:
            pass  # refused before all of it was sent
        self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
        self.assertLess(time.monotonic() - t0, 2.0, "refused at the cap, not by the timeout")
        self.rejected(gw, client_port, "bad_proxy_header")
        self.assertEqual(up.accepted, 0)
        self.assertCounters(self.stop_and_stats(gw, port), prx_bad_hdr=1)

    def test_untrusted_source(self):
        gw, port, up = self.start_required(ext={"proxy_protocol_trusted": ["10.0.0.0/8"]})
        s = self.connect(port)
        client_port = s.getsockname()[1]
        try:
            s.sendall(b"PROXY TCP4 10.1.2.3 10.0.0.1 40000 %d\r\nhello" % port)
        except OSError:
            pass  # closed at accept already: fine
        self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
        # The header did not count: the log names the real source.
        self.rejected(gw, client_port, "untrusted_proxy_source")
        self.assertEqual(up.accepted, 0)
        self.assertCounters(self.stop_and_stats(gw, port), prx_untrusted=1)

    def test_slow_header_times_out(self):
        """A header that stalls, and one that trickles a byte at a time (each
        byte in time, the whole not): both closed at the 3 s deadline."""
        gw, port, up = self.start_required(ext={"proxy_protocol_timeout": "3s"})
        trickle = self.connect(port)
        trickle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        trickle_port = trickle.getsockname()[1]
        trickled = {"closed_at": None}

        def trickler(t_start):
            header = b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n"
            for i in range(len(header) - 2):  # never complete
                try:
                    trickle.sendall(header[i:i + 1])
                except OSError:
                    break
                if wait_closed(trickle, 0.3) != "open":
                    break
            trickled["closed_at"] = time.monotonic() - t_start

        s = self.connect(port)
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        tt = threading.Thread(target=trickler, args=(t0,), daemon=True)
        tt.start()
        s.sendall(b"PROXY TCP4 ")
        how = wait_closed(s, 8.0)
        took = time.monotonic() - t0
        tt.join(10)
        self.assertIsNotNone(trickled["closed_at"])
        self.assertLess(trickled["closed_at"], 4.5, "a trickled header outlived the timeout")
        self.assertGreaterEqual(trickled["closed_at"], 2.7)
        self.rejected(gw, trickle_port, "proxy_header_timeout")
        self.assertIn(how, ("eof", "reset"), "still open after 8 s")
        self.assertGreaterEqual(took, 2.7, "closed before the 3 s timeout")
        self.assertLess(took, 4.5, "closed long after the 3 s timeout")
        self.rejected(gw, client_port, "proxy_header_timeout")
        self.assertEqual(up.accepted, 0)
        self.assertCounters(self.stop_and_stats(gw, port), prx_timeout=2)

    def test_too_short_timeout_is_refused(self):
        """proxy_protocol_timeout below the spec's 3 s is a definition error."""
        up = self.server(EchoServer)
        port, port2 = free_ports(2)
        gw = self.gateway()
        gw.add(pp_def("short", port, up.address, ext={"proxy_protocol_timeout": "2s"}))
        gw.add(pp_def("fine", port2, up.address))
        gw.start()
        self.assertTrue(any("proxy_protocol_timeout" in l for l in gw.log_lines()),
                        gw.log_tail())
        self.assertTrue(is_refused(port), "the refused definition's port listens")
        self.assertFalse(is_refused(port2), "the valid definition's port does not listen")
        self.assertExitClean(gw)

    def test_malformed_and_truncated(self):
        gw, port, up = self.start_required()
        cases = [
            ("v1 port 65536", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\nhello", "bad_proxy_header"),
            ("v1 leading zero", b"PROXY TCP4 1.2.3.04 5.6.7.8 1 80\r\n", "bad_proxy_header"),
            ("v1 lone LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\nhello", "bad_proxy_header"),
            ("v1 too long", b"PROXY TCP4 " + b"1" * 120 + b"\r\n", "bad_proxy_header"),
            ("v2 version 3", V2_SIG + b"\x31\x11\x00\x0c" + b"\0" * 12, "bad_proxy_header"),
            ("v2 TLV overrun", V2_SIG + b"\x21\x11\x00\x10" + b"\1" * 12 + b"\x02\x00\x09x",
             "bad_proxy_header"),
        ]
        for label, data, error in cases:
            with self.subTest(label):
                s = self.connect(port)
                client_port = s.getsockname()[1]
                s.sendall(data)
                self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
                self.rejected(gw, client_port, error)
        truncated = [b"PROXY TCP4 1.2", b"P", V2_SIG[:5], V2_SIG + b"\x21\x11\x00\x0c\x01"]
        for data in truncated:
            with self.subTest(truncated=data):
                s = self.connect(port)
                client_port = s.getsockname()[1]
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
                self.rejected(gw, client_port, "proxy_header_truncated")
        self.assertEqual(up.accepted, 0)
        self.assertCounters(self.stop_and_stats(gw, port), prx_bad_hdr=len(cases),
                            prx_truncated=len(truncated))

    def test_reset_during_header(self):
        """A client that resets (RST) before its header is complete closed
        early, like one that sent a FIN: it is counted as prx_truncated, so
        the prx_* counters account for every connection."""
        gw, port, up = self.start_required()
        s = socket.create_connection((HOST, port), timeout=5)
        client_port = s.getsockname()[1]
        s.sendall(b"PROXY TCP4 1.2")
        time.sleep(0.2)  # the gateway has read the partial header
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        c = self.conn_line(gw, client_port)
        self.assertEqual(up.accepted, 0)
        stats = self.stop_and_stats(gw, port)
        self.assertEqual(sum(stats.get(k, 0) for k in PRX_REJECT_COUNTERS), 1,
                         "a connection reset during its PROXY header is in no prx_* counter; "
                         "conn line: %r; stats: %r" % (c, stats))
        self.assertCounters(stats, prx_truncated=1)

    def test_garbage_storm_with_good_client(self):
        """10,000 connections of 1-200 random bytes (50 at a time, a few of
        them broken headers) are all closed and counted by reason, none
        reaches the upstream, and a client through HAProxy send-proxy keeps
        working meanwhile."""
        total, concurrency = 10_000, 50
        up = self.server(EchoServer)
        gw_port, fe = free_ports(2)
        gw = self.gateway(log_level="info")
        gw.add(pp_def("storm", gw_port, up.address))
        gw.start()
        self.haproxy("listen good\n    bind %s:%d\n    server gw %s:%d send-proxy\n"
                     % (HOST, fe, HOST, gw_port), fe)

        rng = random.Random(20261125)
        whole = [b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n",
                 v2_header("192.0.2.1", "192.0.2.2", 1000, 2000)]
        payloads = []
        # What each must count as. Random bytes that already differ from both
        # signatures are no header; a prefix of one, then EOF, is truncated.
        # One in a hundred is a signature with a byte no header has (BAD),
        # one a v2 signature with version 3 (BAD), one a valid header cut
        # short (truncated), so every reason is counted under load.
        expect = {"prx_not_hdr": 0, "prx_truncated": 0, "prx_bad_hdr": 0}
        for i in range(total):
            n = rng.randint(1, 200)
            kind = i % 100
            if kind == 0:
                p = b"PROXY " + bytes([rng.randrange(0x00, 0x0A)]) + rng.randbytes(max(0, n - 7))
                expect["prx_bad_hdr"] += 1
            elif kind == 1:
                p = V2_SIG + b"\x31" + rng.randbytes(max(3, n - 13))
                expect["prx_bad_hdr"] += 1
            elif kind == 2:
                h = whole[rng.randrange(2)]
                p = h[:rng.randint(1, len(h) - 1)]
                expect["prx_truncated"] += 1
            else:
                p = rng.randbytes(n)
                prefix = any(p[:len(sig)] == sig[:len(p)] for sig in (b"PROXY ", V2_SIG))
                expect["prx_truncated" if prefix else "prx_not_hdr"] += 1
            payloads.append(p)

        lock = threading.Lock()
        outcome = {"closed": 0, "open": 0, "errors": []}
        next_index = iter(range(total))
        deadline = time.monotonic() + 60

        def garbage_worker():
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                try:
                    s = socket.create_connection((HOST, gw_port), timeout=10)
                except OSError as e:
                    with lock:
                        outcome["errors"].append("connect %d: %r" % (i, e))
                    continue
                try:
                    try:
                        s.sendall(payloads[i])
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass  # already closed by the gateway: it is checked below
                    how = wait_closed(s, 10.0)
                except OSError:
                    how = "reset"
                finally:
                    s.close()
                with lock:
                    outcome["closed" if how in ("eof", "reset") else "open"] += 1

        good = {"ok": 0, "errors": []}
        storm_over = threading.Event()

        def good_worker():
            grng = random.Random(7)
            while not storm_over.is_set() and time.monotonic() < deadline:
                try:
                    exchange(fe, grng.randbytes(4096), timeout=10)
                    good["ok"] += 1
                except (OSError, AssertionError) as e:
                    good["errors"].append(repr(e))
                storm_over.wait(0.02)

        gthread = threading.Thread(target=good_worker, daemon=True)
        gthread.start()
        workers = [threading.Thread(target=garbage_worker, daemon=True)
                   for _ in range(concurrency)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()) + 15)
        storm_over.set()
        gthread.join(20)
        took = time.monotonic() - t0
        self.assertFalse(any(w.is_alive() for w in workers) or gthread.is_alive(),
                         "client threads still running")
        made = outcome["closed"] + outcome["open"]
        self.assertEqual(outcome["errors"], [], "connects failed")
        self.assertEqual(made, total, "storm did not finish in time (%.1f s)" % took)
        self.assertEqual(outcome["open"], 0, "connections the gateway left open")
        self.assertEqual(good["errors"], [], "the good client failed during the storm")
        self.assertGreaterEqual(good["ok"], 3, "the good client barely ran")

        # Every storm connection has its line before the counters are read.
        gw.wait_for_log(r" end=proxy_rejected ", count=total, timeout=30)
        stats = self.stop_and_stats(gw, gw_port)
        sys.stderr.write("\n  storm: %d connections in %.1f s, good client %d exchanges; %s\n"
                         % (made, took, good["ok"], " ".join(
                             "%s=%d" % (k, v) for k, v in stats.items() if k.startswith("prx_"))))
        rejected = sum(stats.get(k, 0) for k in PRX_REJECT_COUNTERS)
        self.assertEqual(rejected, total, stats)
        self.assertCounters(stats, prx_accepted=good["ok"], **expect)
        self.assertEqual(up.accepted, good["ok"], "storm bytes reached the upstream")
        self.assertNoServerErrors(up)


# ---- proxy_protocol_optional ----------------------------------------------------------


class OptionalTest(PPTestCase):

    def test_optional_header(self):
        up = self.server(EchoServer)
        (port,) = free_ports(1)
        gw = self.gateway()
        gw.add(pp_def("opt", port, up.address, ext={"proxy_protocol_optional": True}))
        gw.start()
        self.assertTrue(any("proxy_protocol_optional" in l for l in gw.lines_at("warn")),
                        "no warning about proxy_protocol_optional:\n%s" % gw.log_tail())

        with self.subTest("no header: served as the connection's own address"):
            client_port = exchange(port, b"hello without a header")
            c = self.conn_line(gw, client_port)
            self.assertEqual(c["end"], "closed", c)
            self.assertEqual(c["api_id"], "opt", c)

        with self.subTest("v1 header: its address applies, the header is not relayed"):
            payload = b"hello with a header"
            exchange(port, payload, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 %d\r\n" % port)
            gw.wait_for_log(r" conn client=203\.0\.113\.7:40000 port=%d .* end=closed" % port)

        with self.subTest("v2 header"):
            exchange(port, b"v2 payload", v2_header("198.51.100.9", HOST, 50001, port))
            gw.wait_for_log(r" conn client=198\.51\.100\.9:50001 port=%d .* end=closed" % port)

        with self.subTest("a malformed header is still rejected"):
            s = self.connect(port)
            client_port = s.getsockname()[1]
            s.sendall(b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\nhello")
            self.assertIn(wait_closed(s, 4.0), ("eof", "reset"))
            c = self.conn_line(gw, client_port)
            self.assertEqual(c["end"], "proxy_rejected", c)
            self.assertEqual(c.get("error"), "bad_proxy_header", c)

        self.assertEqual(up.accepted, 3)
        self.assertCounters(self.stop_and_stats(gw, port), prx_accepted=2, prx_bad_hdr=1)
        self.assertNoServerErrors(up)


if __name__ == "__main__":
    unittest.main(verbosity=2)
