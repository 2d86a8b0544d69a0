#!/usr/bin/env python3
"""Load generators and backends for tests/bench/bench.py (python3 stdlib only).

Every mode is a separate process so that each one has its own descriptor
budget (RLIMIT_NOFILE): a proxy holding 10,000 connections needs 20,000
descriptors, and so would a client and a backend in the same process.

  netload.py server                 backend: echo, discard (counted) and bulk
                                    ports; prints their numbers as JSON, then
                                    answers "stats" lines on stdin; exits on EOF
  netload.py hold PORT N            opens N connections, one round trip each,
                                    prints "ready ...", holds them until stdin
                                    gives a line or EOF, closes them all
  netload.py stream PORT N          opens N connections, prints "ready ...";
                                    on "go" writes --bytes on each of them at
                                    once, prints "sent ..."; on the next line
                                    closes them all
  netload.py tlsbulk PORT BYTES     one TLS connection, sends BYTES after an
                                    8-byte length, waits for the backend's ack
  netload.py handshakes PORT SECS   full (or --resume) TLS handshakes in a loop,
                                    with SNI (--servername); prints a count
"""
import argparse
import errno
import json
import os
import resource
import selectors
import socket
import ssl
import struct
import sys
import time

EV_R, EV_W = selectors.EVENT_READ, selectors.EVENT_WRITE


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- backend

def cmd_server(args):
    """Three listeners on 127.0.0.1, one selector loop.

    echo:    replies with what it reads (the idle-memory round trip)
    discard: reads and counts (the CPU-per-MB streams)
    bulk:    reads an 8-byte big-endian length, then that many bytes, then
             writes b"K" (the TLS bulk transfer; needs no half-close)
    """
    sel = selectors.DefaultSelector()
    ports = {}
    for mode in ("echo", "discard", "bulk"):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(4096)
        ls.setblocking(False)
        sel.register(ls, EV_R, ("listen", mode))
        ports[mode] = ls.getsockname()[1]
    sel.register(sys.stdin, EV_R, ("stdin", None))
    out(json.dumps(ports))

    buf = bytearray(1 << 20)
    view = memoryview(buf)
    stats = {"discard_bytes": 0, "conns": 0, "accepted": 0, "bulk_bytes": 0}

    def close(s):
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        stats["conns"] -= 1

    while True:
        for key, ev in sel.select():
            kind, st = key.data
            s = key.fileobj
            if kind == "listen":
                for _ in range(256):
                    try:
                        c, _a = s.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:  # EMFILE and the like: try later
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            break
                        raise
                    c.setblocking(False)
                    stats["conns"] += 1
                    stats["accepted"] += 1
                    if st == "bulk":
                        sel.register(c, EV_R, ("bulk", {"need": None, "hdr": b""}))
                    else:
                        sel.register(c, EV_R, (st, {"pending": b""}))
            elif kind == "stdin":
                line = sys.stdin.readline()
                if not line:
                    return 0
                if line.strip() == "stats":
                    out(json.dumps(stats))
            elif kind == "discard":
                try:
                    n = s.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    close(s)
                else:
                    stats["discard_bytes"] += n
            elif kind == "echo":
                if ev & EV_W and st["pending"]:
                    try:
                        k = s.send(st["pending"])
                        st["pending"] = st["pending"][k:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        close(s)
                        continue
                    if not st["pending"]:
                        sel.modify(s, EV_R, key.data)
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(s)
                    continue
                try:
                    k = s.send(data)
                except (BlockingIOError, InterruptedError):
                    k = 0
                except OSError:
                    close(s)
                    continue
                if k < len(data):
                    st["pending"] += data[k:]
                    sel.modify(s, EV_R | EV_W, key.data)
            elif kind == "bulk":
                try:
                    n = s.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    close(s)
                    continue
                data = view[:n]
                if st["need"] is None:
                    take = min(8 - len(st["hdr"]), n)
                    st["hdr"] += bytes(data[:take])
                    n -= take
                    if len(st["hdr"]) < 8:
                        continue
                    st["need"] = struct.unpack("!Q", st["hdr"])[0]
                st["need"] -= n
                stats["bulk_bytes"] += n
                if st["need"] <= 0:
                    try:
                        s.send(b"K")
                    except OSError:
                        close(s)
                        continue
                    st["need"], st["hdr"] = None, b""


# ------------------------------------------------------ many connections

def open_many(port, n, concurrency, deadline, first=None):
    """Opens n connections to 127.0.0.1:port, at most `concurrency` connects in
    flight. `first` is sent on each, and its echo awaited, before the
    connection counts as ready. Returns (ready sockets, failures)."""
    sel = selectors.DefaultSelector()
    ready, fails, started, inflight = [], 0, 0, 0
    while (started < n or inflight) and time.monotonic() < deadline:
        while started < n and inflight < concurrency:
            s = socket.socket()
            s.setblocking(False)
            started += 1
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                fails += 1
                continue
            sel.register(s, EV_W, {"state": "connect", "got": 0})
            inflight += 1
        for key, _ev in sel.select(timeout=0.2):
            s, st = key.fileobj, key.data
            if st["state"] == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sel.unregister(s)
                    s.close()
                    fails += 1
                    inflight -= 1
                    continue
                if first is None:
                    sel.unregister(s)
                    ready.append(s)
                    inflight -= 1
                    continue
                try:
                    s.send(first)
                except OSError:
                    sel.unregister(s)
                    s.close()
                    fails += 1
                    inflight -= 1
                    continue
                st["state"] = "echo"
                sel.modify(s, EV_R, st)
            else:
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    fails += 1
                    inflight -= 1
                    continue
                st["got"] += len(data)
                if st["got"] >= len(first):
                    sel.unregister(s)
                    ready.append(s)
                    inflight -= 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        fails += 1
    fails += n - started
    sel.close()
    return ready, fails


def wait_stdin(timeout):
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, EV_R)
    sel.select(timeout=timeout)
    sel.close()


def cmd_hold(args):
    t0 = time.monotonic()
    ready, fails = open_many(args.port, args.n, args.concurrency, t0 + args.timeout,
                             first=b"x" * args.payload)
    out("ready ok=%d fail=%d secs=%.2f" % (len(ready), fails, time.monotonic() - t0))
    wait_stdin(args.hold)
    for s in ready:
        s.close()
    out("closed")
    return 0


def cmd_stream(args):
    """Opens N connections and says "ready"; on "go" writes exactly --bytes
    on each of them, all at once, and says "sent"; on the next line (or EOF)
    closes them all and says "closed"."""
    t0 = time.monotonic()
    ready, fails = open_many(args.port, args.n, args.concurrency, t0 + args.timeout)
    out("ready ok=%d fail=%d secs=%.2f" % (len(ready), fails, time.monotonic() - t0))
    if sys.stdin.readline().strip() != "go":
        for s in ready:
            s.close()
        return 0
    chunk = memoryview(b"\x5a" * args.chunk)
    sel = selectors.DefaultSelector()
    left = {}
    for s in ready:
        sel.register(s, EV_W)
        left[s] = args.bytes
    sent, errors, end = 0, 0, time.monotonic() + args.max_seconds
    while left and time.monotonic() < end:
        for key, _ev in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                k = s.send(chunk[: min(left[s], len(chunk))])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                k = -1
            if k < 0:
                errors += 1
            else:
                sent += k
                left[s] -= k
            if k < 0 or left[s] == 0:
                sel.unregister(s)
                del left[s]
    out("sent %d errors=%d unfinished=%d" % (sent, errors, len(left)))
    sys.stdin.readline()
    for s in ready:
        s.close()
    out("closed")
    return 0


# -------------------------------------------------------------------- TLS

def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def cmd_tlsbulk(args):
    ctx = client_ctx()
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    s = ctx.wrap_socket(raw, server_hostname=args.servername)
    chunk = memoryview(b"\xa5" * (1 << 20))
    t0 = time.monotonic()
    s.sendall(struct.pack("!Q", args.bytes))
    left = args.bytes
    while left > 0:
        k = s.send(chunk[: min(left, len(chunk))])
        left -= k
    ack = s.recv(1)
    secs = time.monotonic() - t0
    if ack != b"K":
        out(json.dumps({"error": "no ack from the backend"}))
        return 1
    out(json.dumps({"seconds": secs, "mb_per_s": args.bytes / 1e6 / secs,
                    "version": s.version(), "cipher": s.cipher()[0]}))
    s.close()
    return 0


def cmd_handshakes(args):
    ctx = client_ctx()
    count = resumed = fails = 0
    session = None
    t0 = time.monotonic()
    end = t0 + args.seconds
    while time.monotonic() < end:
        try:
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname=args.servername,
                                session=session if args.resume else None)
            if args.resume:
                if s.session_reused:
                    resumed += 1
                elif s.version() == "TLSv1.3":
                    # TLS 1.3 tickets come after the handshake: read them.
                    s.settimeout(0.05)
                    try:
                        s.recv(1)
                    except (socket.timeout, ssl.SSLError, OSError):
                        pass
                session = s.session
            count += 1
            s.close()
        except (OSError, ssl.SSLError):
            fails += 1
    secs = time.monotonic() - t0
    out(json.dumps({"count": count, "resumed": resumed, "fails": fails, "seconds": secs}))
    return 0


def main():
    raise_nofile()
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("server")
    h = sub.add_parser("hold")
    h.add_argument("port", type=int)
    h.add_argument("n", type=int)
    h.add_argument("--payload", type=int, default=32)
    h.add_argument("--concurrency", type=int, default=256)
    h.add_argument("--timeout", type=float, default=90)
    h.add_argument("--hold", type=float, default=300)
    st = sub.add_parser("stream")
    st.add_argument("port", type=int)
    st.add_argument("n", type=int)
    st.add_argument("--bytes", type=int, default=1 << 20, help="to send on each connection")
    st.add_argument("--chunk", type=int, default=65536)
    st.add_argument("--concurrency", type=int, default=256)
    st.add_argument("--timeout", type=float, default=90)
    st.add_argument("--max-seconds", type=float, default=300)
    tb = sub.add_parser("tlsbulk")
    tb.add_argument("port", type=int)
    tb.add_argument("bytes", type=int)
    tb.add_argument("--servername", default="bench.example.com")
    tb.add_argument("--timeout", type=float, default=60)
    hs = sub.add_parser("handshakes")
    hs.add_argument("port", type=int)
    hs.add_argument("seconds", type=float)
    hs.add_argument("--servername", default="bench.example.com")
    hs.add_argument("--resume", action="store_true")
    args = p.parse_args()
    fn = {"server": cmd_server, "hold": cmd_hold, "stream": cmd_stream,
          "tlsbulk": cmd_tlsbulk, "handshakes": cmd_handshakes}[args.cmd]
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
