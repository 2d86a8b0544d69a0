"""Real redis-server and redis-sentinel processes for the integration tests,
and a tiny RESP client.

Everything binds 127.0.0.1. Each process runs in its own temporary folder
with its own config file (sentinels rewrite theirs; servers get theirs
rewritten by sentinel's CONFIG REWRITE). Every wait is bounded; stop() is
safe to call twice and is what the tests register with addCleanup.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HOST = "127.0.0.1"

REDIS_SERVER = shutil.which("redis-server")
REDIS_SENTINEL = shutil.which("redis-sentinel")


def require_redis():
    """Skips the calling test when the Redis binaries are missing."""
    if REDIS_SERVER is None or REDIS_SENTINEL is None:
        raise unittest.SkipTest("redis-server / redis-sentinel not installed")


# ---- RESP -----------------------------------------------------------------------


class RespError(Exception):
    """An error reply ("-READONLY ...") from the server."""


class RespClient:
    """One connection speaking RESP2. call() sends a command as an array of
    bulk strings and returns the parsed reply: str for simple strings, int,
    bytes (or None) for bulk strings, list for arrays, and a RespError
    instance (returned, not raised) for error replies. Socket errors and EOF
    raise (ConnectionError, socket.timeout)."""

    def __init__(self, port, timeout=5.0, host=HOST, sock=None):
        self.sock = sock if sock is not None else socket.create_connection((host, port),
                                                                          timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no complete reply within %.1f s" % self.timeout)
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("EOF before a complete reply")
        self.buf += chunk

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill(deadline)

    def _exact(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return data

    def reply(self, deadline=None):
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        line = self._line(deadline)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n, deadline)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply(deadline) for _ in range(n)]
        raise ConnectionError("not RESP: %r" % line[:80])

    def call(self, *args):
        self.send(*args)
        return self.reply()

    def ok(self, *args):
        """call() that raises on an error reply."""
        r = self.call(*args)
        if isinstance(r, RespError):
            raise r
        return r


def info(client, section="replication"):
    """INFO <section> as a dict of its key:value lines."""
    text = client.ok("INFO", section)
    out = {}
    for line in text.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def role_of(port, timeout=2.0):
    """"master", "slave", or None when the server cannot be asked."""
    try:
        with RespClient(port, timeout=timeout) as c:
            return info(c).get("role")
    except (OSError, ConnectionError, RespError):
        return None


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns something truthy; returns it. Fails on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(interval)


# ---- processes -------------------------------------------------------------------


class _Proc:
    """A child process in its own folder, logging to a file there."""

    name = "proc"

    def __init__(self, port):
        self.port = port
        self._tmp = tempfile.TemporaryDirectory(prefix="tcpgate-%s-" % self.name)
        self.dir = self._tmp.name
        self.conf = os.path.join(self.dir, "%s.conf" % self.name)
        self.logfile = os.path.join(self.dir, "%s.log" % self.name)
        self.proc = None
        self.paused = False

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def command(self):
        raise NotImplementedError

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        self.paused = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("%s on port %d exited with %s; log:\n%s" % (
                    self.name, self.port, self.proc.returncode, self.log_tail()))
            try:
                with self.client(timeout=1.0) as c:
                    if c.call("PING") == "PONG":
                        return self
            except (OSError, ConnectionError, RespError):
                pass
            if time.monotonic() >= deadline:
                raise AssertionError("%s on port %d did not answer PING within %.1f s; log:\n%s"
                                     % (self.name, self.port, timeout, self.log_tail()))
            time.sleep(0.05)

    def client(self, timeout=5.0):
        return RespClient(self.port, timeout=timeout)

    def clients(self):
        """CLIENT LIST as a list of dicts."""
        with self.client() as c:
            text = c.ok("CLIENT", "LIST").decode()
        return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                for line in text.splitlines() if line]

    def pause(self):
        """SIGSTOP: the process hangs; its sockets stay open and connects
        still complete in the kernel."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.running() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self):
        """SIGKILL, and reaps the process."""
        if self.running():
            self.proc.kill()
            self.proc.wait(10)
        self.paused = False

    def stop(self, timeout=10.0):
        """SIGTERM (after SIGCONT if paused), then SIGKILL if needed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
                self.paused = False
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self):
        """Cleanup: stops the process and removes the folder."""
        try:
            self.stop()
        finally:
            self._tmp.cleanup()

    def log(self):
        text = ""
        for f in (self.logfile, os.path.join(self.dir, "stdout.log")):
            try:
                with open(f, "rb") as fh:
                    text += fh.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return text

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])


class RedisServer(_Proc):
    """redis-server on 127.0.0.1:port, without persistence. replicaof: a port."""

    name = "redis"

    def __init__(self, port, replicaof=None):
        super().__init__(port)
        lines = [
            "port %d" % port,
            "bind 127.0.0.1",
            "protected-mode no",
            "dir %s" % self.dir,
            "logfile %s" % self.logfile,
            "daemonize no",
            # Replication without a disk and without the 5 s diskless delay.
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            "repl-diskless-load disabled",
        ]
        if replicaof is not None:
            lines.append("replicaof %s %d" % (HOST, replicaof))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self):
        return [REDIS_SERVER, self.conf, "--save", "", "--appendonly", "no"]

    def role(self):
        return role_of(self.port)


class Sentinel(_Proc):
    """redis-sentinel on 127.0.0.1:port monitoring master_name at 127.0.0.1:master_port."""

    name = "sentinel"

    def __init__(self, port, master_name, master_port, quorum=2, down_after_ms=1000,
                 failover_timeout_ms=10000, parallel_syncs=1, extra=()):
        super().__init__(port)
        self.master_name = master_name
        self.password = None
        lines = [
            "port %d" % port,
            "bind 127.0.0.1",
            "protected-mode no",
            "dir %s" % self.dir,
            "logfile %s" % self.logfile,
            "daemonize no",
            "sentinel monitor %s %s %d %d" % (master_name, HOST, master_port, quorum),
            "sentinel down-after-milliseconds %s %d" % (master_name, down_after_ms),
            "sentinel failover-timeout %s %d" % (master_name, failover_timeout_ms),
            "sentinel parallel-syncs %s %d" % (master_name, parallel_syncs),
        ] + list(extra)
        for line in extra:
            if line.startswith("requirepass "):
                self.password = line.split(None, 1)[1]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self):
        return [REDIS_SENTINEL, self.conf]

    def client(self, timeout=5.0):
        c = RespClient(self.port, timeout=timeout)
        if self.password is not None:
            c.ok("AUTH", self.password)
        return c

    def master(self):
        """SENTINEL MASTER <name> as a dict of str."""
        with self.client() as c:
            r = c.ok("SENTINEL", "MASTER", self.master_name)
        return {r[i].decode(): r[i + 1].decode() for i in range(0, len(r), 2)}

    def replicas(self):
        with self.client() as c:
            r = c.ok("SENTINEL", "REPLICAS", self.master_name)
        return [{e[i].decode(): e[i + 1].decode() for i in range(0, len(e), 2)} for e in r]

    def master_port(self):
        """The port of the master this sentinel believes in, or None."""
        try:
            with self.client(timeout=2.0) as c:
                r = c.ok("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            return int(r[1]) if r else None
        except (OSError, ConnectionError, RespError):
            return None


# ---- test helpers ----------------------------------------------------------------


class RedisTestMixin:
    """For unittest.TestCase classes that run Redis processes: keep() registers
    a process's cleanup, and before it a dump of its log if the test failed;
    wait_link() waits for a replica's link to its master."""

    def keep(self, proc):
        self.addCleanup(proc.close)  # cleanups run last-in first-out:
        self.addCleanup(self.dump_if_failed, proc)  # the log is read first
        return proc

    def failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        bad = getattr(result, "failures", []) + getattr(result, "errors", [])
        return any(test is self for test, _ in bad)

    def dump_if_failed(self, proc):
        if not self.failed():
            return
        try:
            print("\n--- %s %s log (last lines) ---\n%s"
                  % (proc.name, proc.address, proc.log_tail(30)), flush=True)
        except (OSError, ValueError):
            pass  # a closed stdout must not keep the processes alive

    def wait_link(self, replica, master, timeout=15.0):
        """replica reports role:slave of master with its link up."""
        def up():
            try:
                with replica.client(timeout=2) as c:
                    i = info(c)
            except (OSError, ConnectionError, RespError):
                return False
            return (i.get("role") == "slave" and i.get("master_port") == str(master.port) and
                    i.get("master_link_status") == "up")
        wait_until(up, timeout, what="%s replicating from %s" % (replica.address, master.address))
