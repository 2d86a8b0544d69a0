"""TLS helpers for the integration tests.

Pki: a throwaway certificate authority, server certificates, client
certificates and a self-signed "wrong" client certificate, all made at test
time with the openssl command-line tool in a temporary folder. No private key
is ever committed; the folder is removed by Pki.close().

Peers: TLSNameServer (a Python ssl server that says its name, records the SNI
and ALPN it saw and echoes), TLSSendThenDropServer (sends, then closes without
a close_notify), SServer (a real `openssl s_server` process).

Clients: client_context()/tls_fetch() (Python's ssl module over a socket),
BioClient (ssl.MemoryBIO over a raw socket, for byte-level control of the
handshake and for TLS half-close), s_client() (a real `openssl s_client`).

TLSTestCase: GatewayTestCase with the shared Pki, tls definitions, gateways
bound to 127.0.0.1 and assertions on what a TLS client got.

Everything here talks to 127.0.0.1 only, and every wait is bounded.
"""

import base64
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (HOST, GatewayTestCase, NameServer, ThreadedServer, definition, free_port,
                     recv_until_eof)

OPENSSL = shutil.which("openssl")


def require_openssl():
    if OPENSSL is None:
        raise unittest.SkipTest("the openssl command-line tool is not installed")


def openssl(*args, input=None, timeout=30.0, check=True, cwd=None):
    """Runs `openssl args...`; returns (rc, stdout, stderr) as text."""
    p = subprocess.run([OPENSSL] + [str(a) for a in args], input=input, capture_output=True,
                       timeout=timeout, cwd=cwd)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise AssertionError("openssl %s failed (%d):\n%s%s"
                             % (" ".join(map(str, args)), p.returncode, out, err))
    return p.returncode, out, err


# ---- certificates -------------------------------------------------------------

_CA_CONF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/ca-index.txt
new_certs_dir = {dir}/ca-newcerts
serial = {dir}/ca-serial
default_md = sha256
policy = any_cn
unique_subject = no
copy_extensions = copy
[ any_cn ]
commonName = supplied
"""


class Pki:
    """Certificates in a temporary folder, by name:

    cert(name) -> NAME.pem (the certificate only), key(name) -> NAME.key
    (mode 0600, found by tcpgate as the STEM.key beside NAME.pem),
    full(name) -> NAME-full.pem (certificate then key, mode 0600).
    """

    def __init__(self):
        require_openssl()
        self._tmp = tempfile.TemporaryDirectory(prefix="tcpgate-pki-")
        self.dir = self._tmp.name
        self.subjects = {}

    def close(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def cert(self, name):
        return self.path(name + ".pem")

    def key(self, name):
        return self.path(name + ".key")

    def full(self, name):
        return self.path(name + "-full.pem")

    def pem(self, name):
        with open(self.cert(name)) as f:
            return f.read()

    def key_pem(self, name):
        with open(self.key(name)) as f:
            return f.read()

    def _finish(self, name, cn):
        os.chmod(self.key(name), 0o600)
        with open(self.full(name), "w") as f:
            f.write(self.pem(name) + self.key_pem(name))
        os.chmod(self.full(name), 0o600)
        self.subjects[name] = cn
        return self.cert(name)

    @staticmethod
    def _ext_args(sans, client, ca):
        if ca:
            return ["-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        args = ["-addext", "basicConstraints=critical,CA:FALSE",
                "-addext", "extendedKeyUsage=%s" % ("clientAuth" if client else "serverAuth")]
        if sans:
            args += ["-addext", "subjectAltName=" + ",".join(sans)]
        return args

    def make_ca(self, name="ca", cn="tcpgate test CA"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", self.key(name), "-out", self.cert(name), "-days", "2",
                "-subj", "/CN=" + cn, *self._ext_args((), False, True))
        return self._finish(name, cn)

    def self_signed(self, name, cn, sans=(), client=False):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", self.key(name), "-out", self.cert(name), "-days", "2",
                "-subj", "/CN=" + cn, *self._ext_args(sans, client, False))
        return self._finish(name, cn)

    def _csr(self, name, cn, sans, client):
        csr = self.path(name + ".csr")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", self.key(name), "-out", csr, "-subj", "/CN=" + cn,
                *self._ext_args(sans, client, False))
        return csr

    def issue(self, name, cn, sans=(), client=False, ca="ca"):
        """A certificate signed by the CA `ca`, valid from now for 2 days."""
        csr = self._csr(name, cn, sans, client)
        openssl("x509", "-req", "-in", csr, "-CA", self.cert(ca), "-CAkey", self.key(ca),
                "-CAcreateserial", "-CAserial", self.path(ca + ".srl"), "-copy_extensions",
                "copy", "-days", "2", "-sha256", "-out", self.cert(name))
        return self._finish(name, cn)

    def issue_expired(self, name, cn, sans=(), ca="ca"):
        """A certificate whose validity ended in 2020: OpenSSL 3.0's x509 and
        req refuse negative -days, so this goes through `openssl ca`, which
        takes explicit -startdate/-enddate."""
        csr = self._csr(name, cn, sans, False)
        conf = self.path("ca.cnf")
        if not os.path.exists(conf):
            os.mkdir(self.path("ca-newcerts"))
            open(self.path("ca-index.txt"), "w").close()
            with open(self.path("ca-serial"), "w") as f:
                f.write("1000\n")
            with open(conf, "w") as f:
                f.write(_CA_CONF.format(dir=self.dir))
        openssl("ca", "-batch", "-config", conf, "-cert", self.cert(ca), "-keyfile", self.key(ca),
                "-in", csr, "-out", self.cert(name), "-startdate", "20200101000000Z",
                "-enddate", "20200201000000Z", "-notext")
        return self._finish(name, cn)

    # fingerprints

    def der(self, name):
        with open(self.cert(name)) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def cert_id(self, name):
        """tcpgate's certificate id: lowercase hex SHA-256 of the DER, computed
        here with the openssl tool (x509 -outform DER | sha256)."""
        p = subprocess.run([OPENSSL, "x509", "-in", self.cert(name), "-outform", "DER"],
                           capture_output=True, timeout=20, check=True)
        return hashlib.sha256(p.stdout).hexdigest()

    def spki_pin(self, name):
        """"sha256//BASE64" of the certificate's SubjectPublicKeyInfo, the way
        curl documents it: x509 -pubkey | pkey -pubin -outform DER | sha256 | base64."""
        _, pub, _ = openssl("x509", "-in", self.cert(name), "-pubkey", "-noout")
        p = subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                           capture_output=True, timeout=20, check=True)
        return "sha256//" + base64.b64encode(hashlib.sha256(p.stdout).digest()).decode()


def standard_pki():
    """The certificates the TLS tests share:

    ca            the test CA
    localhost     CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    example       CN=example.com, SAN DNS:example.com
    wildcard      CN=*.example.com, SAN DNS:*.example.com
    a, b          CN=a.example.com / b.example.com (SAN the same)
    fallback      CN=fallback.test, SAN DNS:fallback.test
    client        CN=client-alice, clientAuth, signed by the CA
    client2       CN=client-bob, clientAuth, signed by the CA
    wrong         CN=client-wrong, clientAuth, self-signed
    """
    pki = Pki()
    try:
        pki.make_ca()
        pki.issue("localhost", "localhost", ["DNS:localhost", "IP:127.0.0.1"])
        pki.issue("example", "example.com", ["DNS:example.com"])
        pki.issue("wildcard", "*.example.com", ["DNS:*.example.com"])
        pki.issue("a", "a.example.com", ["DNS:a.example.com"])
        pki.issue("b", "b.example.com", ["DNS:b.example.com"])
        pki.issue("fallback", "fallback.test", ["DNS:fallback.test"])
        pki.issue("client", "client-alice", client=True)
        pki.issue("client2", "client-bob", client=True)
        pki.self_signed("wrong", "client-wrong", client=True)
    except BaseException:
        pki.close()
        raise
    return pki


def subject_cn(peercert):
    """The commonName of a getpeercert() dict."""
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def san_dns(peercert):
    return sorted(v for k, v in peercert.get("subjectAltName", ()) if k == "DNS")


# ---- Python ssl clients ---------------------------------------------------------


def client_context(pki=None, cert=None, min_version=None, max_version=None, alpn=None,
                   check_hostname=False, verify=True, ciphers=None):
    """A client SSLContext that trusts the test CA (so getpeercert() gives the
    subject and SANs); cert names a Pki client certificate to present."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.cert("ca"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(pki.cert(cert), pki.key(cert))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class Fetched:
    """What one TLS client connection saw."""

    def __init__(self):
        self.ok = False
        self.error = None  # str of the exception when not ok
        self.cert = None  # getpeercert() dict
        self.der = None  # the certificate as DER
        self.version = None
        self.cipher = None
        self.alpn = None
        self.data = b""
        self.session = None  # the ssl.SSLSession, to resume with
        self.reused = None

    @property
    def text(self):
        return self.data.decode("utf-8", "replace").strip()

    def __repr__(self):
        return "Fetched(ok=%r, error=%r, data=%r, version=%r, cn=%r)" % (
            self.ok, self.error, self.data, self.version,
            subject_cn(self.cert) if self.cert else None)


def tls_fetch(port, ctx, sni=None, send=b"", timeout=10.0, close_notify=True, session=None):
    """Connects to port, handshakes with SNI `sni` (None: no SNI; bytes are
    sent as they are, with no IDNA lowercasing), sends `send`, reads to EOF,
    then closes like a well-behaved TLS client: its own close_notify first
    (close_notify=False: just the TCP close, as many clients do).
    Never raises for TLS or socket errors: they are returned in .error."""
    r = Fetched()
    raw = socket.create_connection((HOST, port), timeout=timeout)
    ssock = None
    try:
        ssock = ctx.wrap_socket(raw, server_hostname=sni, do_handshake_on_connect=False,
                                session=session)
        ssock.settimeout(timeout)
        ssock.do_handshake()
        r.cert = ssock.getpeercert()
        r.der = ssock.getpeercert(binary_form=True)
        r.version = ssock.version()
        r.cipher = ssock.cipher()[0]
        r.alpn = ssock.selected_alpn_protocol()
        if send:
            ssock.sendall(send)
        r.data = recv_until_eof(ssock, timeout, limit=1 << 20)
        r.ok = True
        r.reused = ssock.session_reused
        r.session = ssock.session  # after the data: TLS 1.3 tickets come after the handshake
        if close_notify:
            try:
                ssock.unwrap()
            except (ssl.SSLError, OSError):
                pass  # the peer may be gone already; the data was read
    except (ssl.SSLError, OSError) as e:
        r.error = "%s: %s" % (type(e).__name__, e)
    finally:
        (ssock or raw).close()
    return r


class BioClient:
    """A TLS client over a raw socket through ssl.MemoryBIO, so the test
    decides what goes on the wire and when.

        c = BioClient(ctx, sock, "a.example.com")
        hello = c.start()          # the ClientHello bytes, not yet sent
        ...send them any way...
        c.handshake()              # finishes the handshake over sock
    """

    def __init__(self, ctx, sock, server_hostname=None, timeout=10.0):
        self.sock = sock
        self.timeout = timeout
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=False,
                                server_hostname=server_hostname)
        self.eof = False

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)
        return len(data)

    def fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("TLS peer sent nothing for %.1f s" % self.timeout)
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 16)
        if chunk:
            self.incoming.write(chunk)
        else:
            self.eof = True
            self.incoming.write_eof()

    def start(self):
        """Runs the handshake until it needs the server; returns what the
        client has to send first (the ClientHello), without sending it."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def handshake(self):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                self.fill(deadline)

    def encrypt(self, data, record=16384):
        """The TLS records carrying data, as bytes to send."""
        view = memoryview(data)
        for off in range(0, len(view), record):
            self.obj.write(view[off:off + record])
        return self.outgoing.read()

    def sendall(self, data):
        self.sock.sendall(self.encrypt(data))

    def recv(self, n=1 << 16):
        """Up to n plaintext bytes; b"" at close_notify or TCP EOF."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLWantReadError:
                if self.eof:
                    return b""
                self.flush()
                self.fill(deadline)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.recv(min(1 << 16, n - len(buf)))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def recv_until_eof(self, limit=64 << 20, timeout=60.0):
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while len(buf) <= limit:
            if time.monotonic() > deadline:
                raise AssertionError("no EOF within %.1f s (%d bytes read)" % (timeout, len(buf)))
            chunk = self.recv()
            if not chunk:
                return bytes(buf)
            buf += chunk
        raise AssertionError("more than %d bytes before EOF" % limit)

    def close_notify_bytes(self):
        """Starts a TLS shutdown; returns the close_notify alert to send. The
        client can still read afterwards (a TLS half-close)."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not come: expected
        return self.outgoing.read()

    def shutdown_write(self):
        """close_notify, then the TCP FIN; reading stays possible."""
        self.sock.sendall(self.close_notify_bytes())
        self.sock.shutdown(socket.SHUT_WR)


# ---- peers --------------------------------------------------------------------------


def server_context(pki, name, alpn=None, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert(name), pki.key(name))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.cert(client_ca))
    return ctx


class TLSNameServer(ThreadedServer):
    """A TLS server with one certificate: after the handshake it sends its name
    and a newline, then echoes until the client closes. Puts a dict per
    connection in results: index, sni, alpn, version, echoed."""

    def __init__(self, name, ctx, **kw):
        super().__init__(**kw)
        self.name = name
        self.ctx = ctx

        def on_sni(sslsock, server_name, _ctx):
            sslsock.sni_seen = server_name  # None when the client sent none
            return None

        self.ctx.sni_callback = on_sni

    def handle(self, conn, index):
        conn.settimeout(30)
        s = self.ctx.wrap_socket(conn, server_side=True)
        try:
            info = {"index": index, "sni": getattr(s, "sni_seen", None),
                    "alpn": s.selected_alpn_protocol(), "version": s.version()}
            s.sendall(self.name.encode() + b"\n")
            total = 0
            deadline = time.monotonic() + self.HANDLER_DEADLINE
            while not self._stopping.is_set() and time.monotonic() < deadline:
                try:
                    chunk = s.recv(1 << 16)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                s.sendall(chunk)
                total += len(chunk)
            info["echoed"] = total
            self.results.put(info)
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass
        finally:
            s.close()


class TLSSendThenDropServer(ThreadedServer):
    """A TLS server that sends payload after the handshake, then closes the
    TCP connection without a close_notify, as many servers do. Puts index in
    results once done."""

    def __init__(self, payload, ctx, **kw):
        super().__init__(**kw)
        self.payload = payload
        self.ctx = ctx

    def handle(self, conn, index):
        conn.settimeout(30)
        s = self.ctx.wrap_socket(conn, server_side=True)
        s.sendall(self.payload)
        # Leave TLS without a word: detach and close the bare socket (the
        # handler's own close of conn is then a no-op on a closed descriptor).
        bare = socket.socket(fileno=s.detach())
        bare.close()
        self.results.put(index)


class SServer:
    """A real `openssl s_server` on 127.0.0.1 in -rev mode (each line comes back
    reversed), one connection at a time. Its output is collected; start()
    waits for its "ACCEPT" line."""

    def __init__(self, pki, cert, extra=()):
        require_openssl()
        self.port = free_port()
        self.args = [OPENSSL, "s_server", "-accept", "%s:%d" % (HOST, self.port),
                     "-cert", pki.cert(cert), "-key", pki.key(cert), "-rev"] + list(extra)
        self.proc = None
        self._lines = []
        self._lock = threading.Lock()
        self._readers = []

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            with self._lock:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        for stream in (self.proc.stdout, self.proc.stderr):
            t = threading.Thread(target=self._read, args=(stream,), daemon=True)
            t.start()
            self._readers.append(t)
        deadline = time.monotonic() + timeout
        while "ACCEPT" not in self.lines():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = "\n".join(self.lines())
                self.stop()
                raise AssertionError("openssl s_server did not start:\n%s" % out)
            time.sleep(0.02)
        return self

    def lines(self):
        with self._lock:
            return list(self._lines)

    def output(self):
        return "\n".join(self.lines())

    def connections(self):
        return sum(1 for l in self.lines() if l == "CONNECTION ESTABLISHED")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._readers:
            t.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


def s_client(port, *args, stdin=b"", timeout=15.0):
    """Runs `openssl s_client -connect 127.0.0.1:port args...` to completion
    with the given stdin; returns (rc, stdout + stderr)."""
    require_openssl()
    p = subprocess.run([OPENSSL, "s_client", "-connect", "%s:%d" % (HOST, port)] + list(args),
                       input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


_REUSED = re.compile(r"^(New|Reused), (TLSv1\.[0-3]|SSLv3), Cipher is (\S+)", re.M)


def s_client_session(output):
    """("New"|"Reused", version) from s_client's session summary line."""
    m = _REUSED.search(output)
    return (m.group(1), m.group(2)) if m else (None, None)


# ---- test base ------------------------------------------------------------------------

UNRECOGNIZED_NAME = "UNRECOGNIZED_NAME"  # in ssl.SSLError texts: TLSV1_UNRECOGNIZED_NAME


class TLSTestCase(GatewayTestCase):
    """Shared set-up: the test PKI and helpers for tls definitions."""

    @classmethod
    def setUpClass(cls):
        cls.pki = standard_pki()
        cls.addClassCleanup(cls.pki.close)

    def tls_def(self, api_id, port, target, cert, domain=None, ext=None, **extra):
        """A protocol "tls" definition serving the Pki certificate `cert`
        (None: no certificates field; certificates=[...] overrides)."""
        if cert is not None:
            extra.setdefault("certificates", [self.pki.cert(cert)])
        d = definition(api_id, port, target, ext=ext, protocol="tls", **extra)
        if domain is not None:
            d["domain"] = domain
        return d

    def gateway(self, **kw):
        """A gateway listening on 127.0.0.1 only (config as a dict merges)."""
        config = kw.get("config")
        if config is None or isinstance(config, dict):
            kw["config"] = dict({"listen_address": "127.0.0.1"}, **(config or {}))
        return super().gateway(**kw)

    def services(self, *names):
        return {n: self.server(NameServer, n) for n in names}

    def fetch(self, port, sni, **ctx_kw):
        return tls_fetch(port, client_context(self.pki, **ctx_kw), sni)

    def assertServed(self, got, service, cn, msg=""):
        """The handshake worked, the certificate's CN is cn, and the bytes came
        from the upstream named service."""
        self.assertTrue(got.ok, "%s: %r" % (msg, got))
        self.assertEqual(got.text, service, "%s: wrong upstream: %r" % (msg, got))
        self.assertEqual(subject_cn(got.cert), cn, "%s: wrong certificate: %r" % (msg, got.cert))

    def assertRefusedName(self, got, msg=""):
        self.assertFalse(got.ok, "%s: %r" % (msg, got))
        self.assertIn(UNRECOGNIZED_NAME, got.error, "%s: %r" % (msg, got))
        self.assertEqual(got.data, b"")
