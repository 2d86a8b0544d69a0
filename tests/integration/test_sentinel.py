"""tcpgate's Sentinel mode against real redis-server and redis-sentinel on
loopback: one master, two replicas and three sentinels per test, started and
stopped by the test, every wait bounded.

The definitions under test (written like the README's):
  sentinel  tcpgate.sentinel with the three nodes as its allow-list and the
            usual send/expect checks (PING, INFO replication / role:master)
  checks    the same nodes with the checks alone (the check-only mode), in the
            same gateway, so the two modes meet the same failovers
  replicas  tcpgate.sentinel with role "replica" and no target list

  1. discovery: nothing is sent anywhere before the first verdict; writes reach
     the master;
  2. ten SENTINEL FAILOVERs: new connections reach the new master within 300 ms
     of the first +switch-master a subscriber of the test sees, held sessions on
     the old master end, and no connection of the sentinel mode reaches the old
     master while it still reports role:master (CLIENT LIST, by the connection's
     name); the check-only mode is measured alongside;
  3. missed events: subscriptions refused by an ACL, or killed; failovers are
     followed by polling;
  4. one sentinel hung (SIGSTOP), then all: traffic goes on to the last master,
     the dead sentinels show as down, logged once, and all recover after SIGCONT;
  5. split brain: the master hung with a session held through tcpgate while the
     sentinels fail over; the session ends at the switch, and the old master
     gets nothing once it answers again;
  6. a lying sentinel (a RESP server of the test's) that names a replica, an
     unlisted address, replies one byte at a time and then garbage;
  7. sentinels with a password: the right one works, a wrong one is logged once
     and retried slowly;
  8. role "replica": balanced over the replicas, following a failover;
  9. reload: an unrelated change keeps the sentinel connections, a new
     master_name replaces them.

Sentinel's own timers are shortened with SENTINEL DEBUG (info, publish and ask
periods of 250 ms), as in test_redis_failover.py.
"""

import re
import socket
import statistics
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import SANITIZE, GatewayTestCase, ThreadedServer, free_ports, wait_closed, wait_for
from redisutil import (RedisServer, RedisTestMixin, RespClient, RespError, Sentinel, info,
                       require_redis)

MASTER = "mymaster"
POLL = 0.5  # the definitions' poll_interval
TIMEOUT = 0.5  # the definitions' sentinel timeout
SWITCH_BOUND = 0.3  # the bound, from the first +switch-master
SLACK = 0.3 if SANITIZE else 0.0  # the sanitizer build is slower at everything
SENTINEL_DEBUG = ("info-period", "250", "publish-period", "250", "ask-period", "250")
# The check-only mode's bound: timeout + fall x (interval + timeout) with its
# 250 ms interval, 500 ms timeout and fall 2, and room for a loaded machine.
CHECK_BOUND = 2.0 + (6.0 if SANITIZE else 3.0)
T0 = time.monotonic()


def now_ms():
    return int((time.monotonic() - T0) * 1000)


def check(port):
    return {"url": "127.0.0.1:%d" % port, "timeout": "500ms",
            "commands": [{"name": "send", "message": "PING\r\n"},
                         {"name": "expect", "message": "+PONG"},
                         {"name": "send", "message": "INFO replication\r\n"},
                         {"name": "expect", "message": "role:master"},
                         {"name": "send", "message": "QUIT\r\n"}]}


def sentinel_cfg(sentinels, **kw):
    cfg = {"master_name": MASTER, "addrs": [s.address for s in sentinels],
           "timeout": "%dms" % (TIMEOUT * 1000), "poll_interval": "%dms" % (POLL * 1000)}
    cfg.update(kw)
    return cfg


def sentinel_def(api_id, port, sentinels, nodes=None, checks=True, ext=None, **kw):
    """A definition in Sentinel mode; nodes (RedisServers) are its allow-list."""
    d = {"api_id": api_id, "listen_port": port, "protocol": "tcp", "proxy": {},
         "tcpgate": {"connect_timeout": "3s", "sentinel": sentinel_cfg(sentinels, **kw)}}
    if nodes:
        d["proxy"]["target_list"] = [n.address for n in nodes]
        if checks:
            d["proxy"]["check_host_against_uptime_tests"] = True
            d["uptime_tests"] = {"check_list": [check(n.port) for n in nodes]}
            d["tcpgate"].update({"check_interval": "250ms", "check_fall": 2, "check_rise": 2})
    d["tcpgate"].update(ext or {})
    return d


def checks_def(api_id, port, nodes):
    """The check-only mode, as test_redis_failover.py runs it."""
    return {"api_id": api_id, "listen_port": port, "protocol": "tcp",
            "proxy": {"enable_load_balancing": True,
                      "target_list": [n.address for n in nodes],
                      "check_host_against_uptime_tests": True},
            "uptime_tests": {"check_list": [check(n.port) for n in nodes]},
            "tcpgate": {"check_interval": "250ms", "check_fall": 2, "check_rise": 2,
                        "on_marked_down": "close", "connect_timeout": "3s"}}


def through(port, name=None, timeout=2.0):
    """One new connection through tcpgate: SETNAME, CONFIG GET port, SET. Returns
    (backend port, reply) or (None, error)."""
    try:
        with RespClient(port, timeout=timeout) as c:
            wire = b""
            if name is not None:
                wire += RespClient.encode("CLIENT", "SETNAME", name)
            wire += RespClient.encode("CONFIG", "GET", "port") + \
                RespClient.encode("SET", "k", name or "v")
            c.sock.sendall(wire)
            if name is not None:
                c.reply()
            p = c.reply()
            r = c.reply()
            if isinstance(p, RespError) or not isinstance(p, list):
                return None, p
            return int(p[1]), r
    except (OSError, ConnectionError) as e:
        return None, e


def role_of(port):
    try:
        with RespClient(port, timeout=1.0) as c:
            r = c.call("ROLE")
        return r[0].decode() if isinstance(r, list) else None
    except (OSError, ConnectionError):
        return None


# ---- watchers of the test ---------------------------------------------------------


class Loop(threading.Thread):
    """A daemon thread calling step() until stopped; errors are kept."""

    def __init__(self, period):
        super().__init__(daemon=True)
        self.period = period
        self.stopping = threading.Event()
        self.errors = []

    def run(self):
        deadline = time.monotonic() + 300
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
            self.stopping.wait(self.period)

    def stop(self):
        self.stopping.set()
        self.join(10)


class Roles(Loop):
    """Polls ROLE of every node; keeps (t, port, role) at each change."""

    def __init__(self, nodes):
        super().__init__(0.01)
        self.ports = [n.port for n in nodes]
        self.last = {}
        self.changes = []
        self.lock = threading.Lock()

    def step(self):
        for p in self.ports:
            r = role_of(p)
            if r is not None and self.last.get(p) != r:
                with self.lock:
                    self.last[p] = r
                    self.changes.append((time.monotonic(), p, r))

    def first(self, port, role, after):
        with self.lock:
            for t, p, r in self.changes:
                if p == port and r == role and t >= after:
                    return t
        return None


class Events(Loop):
    """Subscribed to +switch-master on every sentinel; keeps (t, sentinel, payload)."""

    def __init__(self, sentinels, channels=("+switch-master",)):
        super().__init__(0)
        self.clients = []
        for s in sentinels:
            c = s.client()
            c.send("SUBSCRIBE", *channels)
            for _ in channels:
                c.reply()
            c.sock.settimeout(0.05)
            self.clients.append((s, c))
        self.seen = []
        self.lock = threading.Lock()

    def step(self):
        for s, c in self.clients:
            try:
                msg = c.reply(deadline=time.monotonic() + 0.02)
            except (socket.timeout, OSError):
                continue
            if isinstance(msg, list) and msg and msg[0] == b"message":
                with self.lock:
                    self.seen.append((time.monotonic(), s.port, msg[2].decode()))

    def first(self, after):
        with self.lock:
            ts = [t for t, _, _ in self.seen if t >= after]
        return min(ts) if ts else None

    def stop(self):
        super().stop()
        for _, c in self.clients:
            c.close()


class Prober(Loop):
    """New connections through one gateway port, one after the other, each
    named <tag>-<ms since the test started> and kept open 50 ms, so that a
    sampler of CLIENT LIST sees it. Keeps (t_start, t_end, backend, reply)."""

    def __init__(self, port, tag):
        super().__init__(0.005)
        self.port = port
        self.tag = tag
        self.results = []
        self.lock = threading.Lock()

    def step(self):
        t0 = time.monotonic()
        name = "%s-%d" % (self.tag, now_ms())
        try:
            c = RespClient(self.port, timeout=3.0)
        except OSError as e:
            with self.lock:
                self.results.append((t0, time.monotonic(), None, e))
            return
        try:
            c.sock.sendall(RespClient.encode("CLIENT", "SETNAME", name) +
                           RespClient.encode("CONFIG", "GET", "port") +
                           RespClient.encode("SET", "k", name))
            c.reply()
            p = c.reply()
            r = c.reply()
            backend = int(p[1]) if isinstance(p, list) else None
            with self.lock:
                self.results.append((t0, time.monotonic(), backend, r))
            time.sleep(0.05)
        except (OSError, ConnectionError) as e:
            with self.lock:
                self.results.append((t0, time.monotonic(), None, e))
        finally:
            c.close()

    def since(self, t):
        with self.lock:
            return [r for r in self.results if r[0] >= t]


class ClientSampler(Loop):
    """CLIENT LIST of one node every 20 ms: every client named <tag>-<ms> seen,
    with the time it was seen."""

    def __init__(self, node, tags):
        super().__init__(0.02)
        self.node = node
        self.rx = re.compile(r"^(%s)-(\d+)$" % "|".join(map(re.escape, tags)))
        self.seen = {}
        self.lock = threading.Lock()

    def step(self):
        try:
            clients = self.node.clients()
        except (OSError, ConnectionError, RespError):
            return
        t = time.monotonic()
        for c in clients:
            m = self.rx.match(c.get("name", ""))
            if m:
                with self.lock:
                    self.seen.setdefault(c["name"], (t, m.group(1), int(m.group(2))))

    def started_after(self, tag, t):
        """Clients of tag whose connection started (by its name) after t."""
        after_ms = int((t - T0) * 1000)
        with self.lock:
            return sorted(n for n, (_, g, ms) in self.seen.items() if g == tag and ms >= after_ms)


# ---- a lying sentinel ---------------------------------------------------------------


class LyingSentinel(ThreadedServer):
    """A RESP server that answers the Sentinel queries tcpgate asks with what
    the test sets: the master's address and epoch, no replicas. It can write
    its replies one byte at a time, or answer garbage."""

    def __init__(self, master, epoch=1):
        super().__init__()
        self.master = master
        self.epoch = epoch
        self.byte_by_byte = False
        self.garbage = False
        self.queries = 0

    @staticmethod
    def bulk_map(d):
        out = [b"*%d\r\n" % (2 * len(d))]
        for k, v in d.items():
            for x in (k, str(v)):
                x = x.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(x), x))
        return b"".join(out)

    def answer(self, args):
        cmd = [a.decode().lower() for a in args[:2]]
        if cmd[0] in ("auth", "client"):
            return b"+OK\r\n"
        if cmd[0] == "subscribe":
            return b"".join(b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:%d\r\n"
                            % (len(ch), ch, i + 1) for i, ch in enumerate(args[1:]))
        if cmd[0] == "ping":
            return b"+PONG\r\n"
        if cmd[:1] == ["sentinel"]:
            self.queries += 1
            if self.garbage:
                return b"%\x07\x07not resp at all\r\n"
            host, port = self.master
            what = args[1].decode().lower()
            if what == "get-master-addr-by-name":
                return RespClient.encode(host, str(port))
            if what == "master":
                return self.bulk_map({"name": MASTER, "ip": host, "port": port,
                                      "flags": "master", "config-epoch": self.epoch})
            if what == "replicas":
                return b"*0\r\n"
        return b"-ERR unknown command\r\n"

    def handle(self, conn, index):
        buf = b""
        for chunk in self.chunks(conn):
            buf += chunk
            while True:
                args, buf = self.parse(buf)
                if args is None:
                    break
                reply = self.answer(args)
                if self.byte_by_byte:
                    for i in range(len(reply)):
                        conn.sendall(reply[i:i + 1])
                        time.sleep(0.001)
                else:
                    conn.sendall(reply)

    @staticmethod
    def parse(buf):
        """One command (an array of bulk strings) from buf, or (None, buf)."""
        if not buf.startswith(b"*") or b"\r\n" not in buf:
            return None, buf
        head, rest = buf.split(b"\r\n", 1)
        n = int(head[1:])
        args = []
        for _ in range(n):
            if b"\r\n" not in rest:
                return None, buf
            h, rest2 = rest.split(b"\r\n", 1)
            ln = int(h[1:])
            if len(rest2) < ln + 2:
                return None, buf
            args.append(rest2[:ln])
            rest = rest2[ln + 2:]
        return args, rest


# ---- the tests ------------------------------------------------------------------------


class SentinelTest(RedisTestMixin, GatewayTestCase):

    def setUp(self):
        require_redis()
        self.t_test = time.monotonic()

    def tearDown(self):
        print("  %s: %.1f s" % (self._testMethodName, time.monotonic() - self.t_test), flush=True)

    # ---- set-up ---------------------------------------------------------------------

    def loop(self, thread):
        thread.start()
        self.addCleanup(thread.stop)
        return thread

    def start_cluster(self, sentinel_extra=()):
        """A master and two replicas, linked, and three sentinels agreeing on them."""
        ports = free_ports(6)
        master = self.keep(RedisServer(ports[0]))
        master.start()
        replicas = [self.keep(RedisServer(p, replicaof=ports[0])) for p in ports[1:3]]
        for r in replicas:
            r.start()
        self.nodes = [master] + replicas
        for r in replicas:
            self.wait_link(r, master)
        self.sentinels = []
        for p in ports[3:]:
            s = self.keep(Sentinel(p, MASTER, master.port, quorum=2, down_after_ms=1000,
                                   failover_timeout_ms=10000, extra=sentinel_extra))
            s.start()
            with s.client() as c:
                c.ok("SENTINEL", "DEBUG", *SENTINEL_DEBUG)
            self.sentinels.append(s)
        self.wait_ready(master)
        return master, replicas

    def wait_ready(self, master, timeout=30.0, live=None):
        """Every sentinel (of live, default all) names master, knows the two
        others, and sees every other node as a linked replica."""
        others = {n.port for n in self.nodes if n is not master}

        def ready():
            for s in live or self.sentinels:
                try:
                    if s.master_port() != master.port:
                        return False
                    m = s.master()
                    if int(m["num-other-sentinels"]) != 2 or m["flags"] != "master":
                        return False
                    ok = {int(r["port"]) for r in s.replicas()
                          if r["flags"] == "slave" and r.get("master-link-status") == "ok"}
                    if not others <= ok:
                        return False
                except (OSError, ConnectionError, RespError, KeyError):
                    return False
            return True
        wait_for(ready, timeout, "sentinels agreeing on master %s" % master.address,
                 interval=0.05)

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def current_master(self):
        return self.node(self.sentinels[0].master_port())

    def start_gateway(self, *defs, workers=2):
        gw = self.gateway(workers=workers)
        for d in defs:
            gw.add(d)
        gw.start()
        self.gw = gw
        return gw

    def failover(self, sentinel, master, timeout=20.0, live=None):
        """SENTINEL FAILOVER, retried while sentinel is not ready for it."""
        self.wait_ready(master, live=live)
        deadline = time.monotonic() + timeout
        while True:
            with sentinel.client() as c:
                r = c.call("SENTINEL", "FAILOVER", MASTER)
            if r == "OK":
                return time.monotonic()
            if time.monotonic() > deadline:
                self.fail("SENTINEL FAILOVER: %r; log:\n%s" % (r, sentinel.log_tail()))
            time.sleep(0.1)

    def wait_new_master(self, old, timeout=20.0):
        """The node all three sentinels name once they have moved off old."""
        def moved():
            ports = {s.master_port() for s in self.sentinels}
            return len(ports) == 1 and old.port not in ports and None not in ports and ports
        ports = wait_for(moved, timeout, "sentinels moving off %s" % old.address)
        return self.node(ports.pop())

    def metric(self, name, **labels):
        key = "tcpgate_%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))
        return self.gw.metrics().get(key)

    def sentinel_lines(self, pattern):
        rx = re.compile(pattern)
        return [l for l in self.gw.log_lines() if " sentinel: " in l and rx.search(l)]

    def held(self, port, master, name):
        c = RespClient(port, timeout=5)
        self.addCleanup(c.close)
        self.assertEqual(c.ok("CLIENT", "SETNAME", name), "OK")
        self.assertEqual(int(c.ok("CONFIG", "GET", "port")[1]), master.port)
        c.sock.setblocking(False)
        return c

    # ---- 1. discovery --------------------------------------------------------------------

    def test_1_nothing_before_the_first_verdict_then_the_master(self):
        master, replicas = self.start_cluster()
        gw_port = free_ports(1)[0]
        # The sentinels hang: the gateway starts without a verdict.
        for s in self.sentinels:
            s.pause()
        self.start_gateway(sentinel_def("sentinel", gw_port, self.sentinels, self.nodes))
        waiting = []
        for i in range(5):
            c = RespClient(gw_port, timeout=10)
            self.addCleanup(c.close)
            c.send("CLIENT", "SETNAME", "early-%d" % i)
            waiting.append(c)
        time.sleep(1.0)
        for n in self.nodes:
            names = [c.get("name") for c in n.clients()]
            self.assertFalse([x for x in names if x.startswith("early")],
                             "%s got a connection before any verdict: %s" % (n.address, names))
        t_resume = time.monotonic()
        for s in self.sentinels:
            s.resume()
        # The waiting clients go on to the master once the verdict is in.
        for i, c in enumerate(waiting):
            self.assertEqual(c.reply(), "OK")
            self.assertEqual(int(c.ok("CONFIG", "GET", "port")[1]), master.port)
            self.assertEqual(c.ok("SET", "early", str(i)), "OK")
        print("\n  5 clients that came before the first verdict served %.2f s after the "
              "sentinels resumed" % (time.monotonic() - t_resume), flush=True)
        with master.client() as c:
            self.assertEqual(c.ok("GET", "early"), b"4")
        for r in replicas:
            self.assertFalse([c for c in r.clients() if c.get("name", "").startswith("early")])
        # Sequential connections: all on the master.
        got = {through(gw_port)[0] for _ in range(20)}
        self.assertEqual(got, {master.port})
        health = self.gw.admin_json("/tyk/health")
        sn = [x for x in health["sentinels"] if x["api_id"] == "sentinel"][0]
        self.assertEqual((sn["master"], sn["named_by"], sn["state"]),
                         (master.address, 3, "ok"))
        named = {t["target"]: t["sentinel"]["named"] for t in health["targets"]}
        self.assertEqual(named, {"tcp://" + n.address: n is master for n in self.nodes})
        self.assertEqual(self.metric("sentinel_named_by", api_id="sentinel"), 3)
        for c in waiting:
            c.close()
        self.assertExitClean(self.gw)

    # ---- 2. ten failovers ------------------------------------------------------------------

    def test_2_ten_failovers_follow_the_switch_and_never_feed_the_old_master(self):
        master, replicas = self.start_cluster()
        sn_port, ck_port = free_ports(2)
        gw = self.start_gateway(sentinel_def("sentinel", sn_port, self.sentinels, self.nodes),
                                checks_def("checks", ck_port, self.nodes))
        wait_for(lambda: through(sn_port)[0] == master.port and
                 through(ck_port)[0] == master.port, 15, "both modes on the master")
        roles = self.loop(Roles(self.nodes))
        events = self.loop(Events(self.sentinels))
        probes = {"sn": self.loop(Prober(sn_port, "sn")), "ck": self.loop(Prober(ck_port, "ck"))}
        rows = []
        for cycle in range(10):
            old = self.current_master()
            held = self.held(sn_port, old, "held-%d" % cycle)
            sampler = self.loop(ClientSampler(old, ("sn", "ck")))
            t_cmd = self.failover(self.sentinels[cycle % 3], old)
            new = self.wait_new_master(old)
            t_event = wait_for(lambda: events.first(t_cmd), 10, "a +switch-master event")
            promoted = wait_for(lambda: roles.first(new.port, "master", t_cmd), 10,
                                "%s promoted" % new.address)
            demoted = wait_for(lambda: roles.first(old.port, "slave", t_cmd), 20,
                               "%s demoted" % old.address)
            time.sleep(0.3)  # a few probes after the demotion too
            sampler.stop()
            held.sock.setblocking(True)
            how = wait_closed(held.sock, 1.0)
            held.close()
            row = {"cycle": cycle + 1, "old": old.port, "new": new.port,
                   "promote_ms": (promoted - t_cmd) * 1000,
                   "window_ms": (demoted - promoted) * 1000, "held": how}
            for tag, p in probes.items():
                results = p.since(t_cmd)
                on_new = [t1 for t0, t1, b, r in results if b == new.port and r == "OK"]
                stale = [(t0, t1) for t0, t1, b, r in results
                         if b == old.port and promoted <= t0 < demoted]
                row[tag] = {"first_write_s": (min(on_new) - promoted) if on_new else None,
                            "after_event_s": (min(on_new) - t_event) if on_new else None,
                            "stale": len(stale),
                            "clients_on_old": sampler.started_after(tag, promoted)}
                # After the first connection on the new master, none goes back.
                if on_new and tag == "sn":
                    back = [b for t0, t1, b, r in results if t0 > min(on_new) and b == old.port]
                    self.assertEqual(back, [], "cycle %d: back to the old master" % (cycle + 1))
            rows.append(row)
            sn = row["sn"]
            print("  cycle %d: %d -> %d  promoted +%.0f ms, double-master window %.0f ms; "
                  "sentinel mode: first write %.3f s after promotion (%.3f s after the first "
                  "+switch-master), %d on the old master; check-only: first write %s, %d on the "
                  "old master; held session: %s"
                  % (cycle + 1, old.port, new.port, row["promote_ms"], row["window_ms"],
                     sn["first_write_s"], sn["after_event_s"], sn["stale"],
                     "%.3f s" % row["ck"]["first_write_s"] if row["ck"]["first_write_s"] is not None
                     else "none", row["ck"]["stale"], how), flush=True)
            self.assertIsNotNone(sn["first_write_s"], "cycle %d: no write on the new master"
                                 % (cycle + 1))
            self.assertLessEqual(sn["after_event_s"], SWITCH_BOUND + SLACK,
                                 "cycle %d: the new master got its first connection late"
                                 % (cycle + 1))
            self.assertEqual(sn["stale"], 0, "cycle %d: sentinel mode fed the old master"
                             % (cycle + 1))
            self.assertEqual(sn["clients_on_old"], [],
                             "cycle %d: CLIENT LIST on the old master" % (cycle + 1))
            self.assertIn(how, ("eof", "reset"), "cycle %d: held session on the old master"
                          % (cycle + 1))
            # The check-only mode follows too, within its checks' bound
            # (timeout + fall x (interval + timeout), and some slack).
            self.assertIsNotNone(row["ck"]["first_write_s"], "cycle %d: check-only mode never "
                                 "wrote on the new master" % (cycle + 1))
            self.assertLessEqual(row["ck"]["first_write_s"], CHECK_BOUND,
                                 "cycle %d: check-only mode" % (cycle + 1))
            self.wait_link(old, new)
        for p in probes.values():
            p.stop()
        self.assertEqual(roles.errors + events.errors, [])
        sn_w = [r["sn"]["first_write_s"] for r in rows]
        ck_w = [r["ck"]["first_write_s"] for r in rows if r["ck"]["first_write_s"] is not None]
        print("  promotion -> first write on the new master, sentinel mode: min %.3f median "
              "%.3f max %.3f s" % (min(sn_w), statistics.median(sn_w), max(sn_w)))
        if ck_w:
            print("  promotion -> first write on the new master, check-only mode: min %.3f "
                  "median %.3f max %.3f s" % (min(ck_w), statistics.median(ck_w), max(ck_w)))
        print("  connections on the old master in its double-master windows (%.0f ms median): "
              "sentinel mode %d, check-only mode %d"
              % (statistics.median(r["window_ms"] for r in rows),
                 sum(r["sn"]["stale"] for r in rows), sum(r["ck"]["stale"] for r in rows)),
              flush=True)
        self.assertEqual(self.metric("sentinel_master_switches_total", api_id="sentinel"), 10)
        self.assertExitClean(gw, timeout=20)
        ends = {}
        for conn in gw.conns("sentinel"):
            ends[conn.get("end")] = ends.get(conn.get("end"), 0) + 1
        self.assertEqual(ends.get("upstream_down"), 10, ends)

    # ---- 3. missed events -------------------------------------------------------------------

    def follow(self, gw_port, old, t_from, bound, what):
        """Waits until new connections land on the sentinels' new master; the
        delay from t_from must stay within bound. Returns (new, delay)."""
        new = self.wait_new_master(old)
        t = wait_for(lambda: through(gw_port)[0] == new.port and time.monotonic(),
                     bound + 5, "%s: connections on the new master" % what, interval=0.01)
        delay = t - t_from
        self.assertLessEqual(delay, bound, "%s: followed after %.2f s" % (what, delay))
        return new, delay

    def quorum_moved(self, old):
        """When two sentinels first name another node than old."""
        def moved():
            ports = [s.master_port() for s in self.sentinels]
            return sum(1 for p in ports if p is not None and p != old.port) >= 2
        wait_for(moved, 20, "two sentinels off %s" % old.address, interval=0.01)
        return time.monotonic()

    def test_3_missed_events_are_made_up_for_by_polling(self):
        master, _ = self.start_cluster()
        for s in self.sentinels:  # a user that may not subscribe
            with s.client() as c:
                c.ok("ACL", "SETUSER", "poller", "on", ">pollpass", "allcommands", "allchannels",
                     "-subscribe", "-psubscribe")
        acl_port, kill_port = free_ports(2)
        self.start_gateway(
            sentinel_def("acl", acl_port, self.sentinels, self.nodes, checks=False,
                         username="poller", password="pollpass"),
            sentinel_def("killed", kill_port, self.sentinels, self.nodes, checks=False))
        wait_for(lambda: through(acl_port)[0] == master.port, 10, "acl definition on the master")
        self.gw.wait_for_log(r"api_id=acl mymaster: sentinel .* refuses SUBSCRIBE", count=3)
        refused = len(self.sentinel_lines(r"api_id=acl .*refuses SUBSCRIBE"))
        subscribed = [self.metric("sentinel_subscribed", api_id="acl", sentinel=s.address)
                      for s in self.sentinels]
        self.assertEqual(subscribed, [0, 0, 0])
        bound = POLL + TIMEOUT + 0.3 + SLACK
        # Refused by the ACL: polling alone.
        t_cmd = self.failover(self.sentinels[0], master)
        t_q = self.quorum_moved(master)
        new, d1 = self.follow(acl_port, master, t_q, bound, "ACL")
        print("\n  subscriptions refused: followed %.2f s after two sentinels named %s "
              "(poll %.1f s + timeout %.1f s)" % (d1, new.address, POLL, TIMEOUT), flush=True)
        self.wait_link(master, new)
        # The subscriptions killed by the sentinels, just before a failover.
        old = new
        self.wait_ready(old)
        for s in self.sentinels:
            with s.client() as c:
                c.ok("CLIENT", "KILL", "TYPE", "pubsub")
        t_cmd = self.failover(self.sentinels[1], old)
        t_q = self.quorum_moved(old)
        new, d2 = self.follow(kill_port, old, t_q, bound, "killed subscriptions")
        print("  subscriptions killed: followed %.2f s after two sentinels named %s"
              % (d2, new.address), flush=True)
        self.assertGreater(t_q, t_cmd)
        # One warning per sentinel for the refusal, not one per reconnect.
        self.assertEqual(len(self.sentinel_lines(r"api_id=acl .*refuses SUBSCRIBE")), refused)
        self.assertExitClean(self.gw)

    # ---- 4. sick sentinels ---------------------------------------------------------------

    def test_4_hung_sentinels_degrade_nothing(self):
        master, _ = self.start_cluster()
        gw_port = free_ports(1)[0]
        self.start_gateway(sentinel_def("sentinel", gw_port, self.sentinels, self.nodes))
        wait_for(lambda: through(gw_port)[0] == master.port, 10, "on the master")
        sick = self.sentinels[2]
        sick.pause()
        t = time.monotonic()
        self.gw.wait_metrics({'tcpgate_sentinel_up{api_id="sentinel",sentinel="%s"}'
                              % sick.address: 0}, timeout=TIMEOUT + POLL + 1 + SLACK)
        print("\n  one sentinel hung: shown down after %.2f s" % (time.monotonic() - t))
        # The other two still follow a failover (down-after is 1 s, so the hung
        # sentinel cannot vote; two are the quorum).
        self.failover(self.sentinels[0], master, live=self.sentinels[:2])
        new = self.wait_new_master_of(self.sentinels[:2], master)
        wait_for(lambda: through(gw_port)[0] == new.port, 5, "on the new master")
        self.wait_link(master, new)
        # All hung: traffic keeps flowing to the last master.
        for s in self.sentinels[:2]:
            s.pause()
        t_all = time.monotonic()
        got = []
        while time.monotonic() < t_all + 3.0:
            got.append(through(gw_port)[0])
            time.sleep(0.05)
        self.assertEqual(set(got), {new.port}, "connections while every sentinel hangs")
        health = self.gw.admin_json("/tyk/health")
        sn = health["sentinels"][0]
        self.assertEqual([x["up"] for x in sn["sentinels"]], [False, False, False])
        self.assertEqual(sn["master"], new.address)
        # Each sentinel's trouble is logged once, not at every reconnect.
        for s in self.sentinels:
            lines = self.sentinel_lines(r"sentinel %s: " % re.escape(s.address))
            self.assertEqual(len(lines), 1, "\n".join(lines))
        for s in self.sentinels:
            s.resume()
        self.gw.wait_metrics({'tcpgate_sentinel_up{api_id="sentinel",sentinel="%s"}'
                              % s.address: 1 for s in self.sentinels}, timeout=10)
        print("  all hung for %.1f s: %d connections, all on the master; all answer again"
              % (time.monotonic() - t_all, len(got)), flush=True)
        self.assertExitClean(self.gw)

    def wait_new_master_of(self, sentinels, old, timeout=20.0):
        def moved():
            ports = {s.master_port() for s in sentinels}
            return len(ports) == 1 and old.port not in ports and None not in ports and ports
        return self.node(wait_for(moved, timeout, "sentinels moving off old").pop())

    # ---- 5. split brain ---------------------------------------------------------------------

    def test_5_split_brain_the_old_master_loses_its_sessions_at_the_switch(self):
        master, _ = self.start_cluster()
        gw_port = free_ports(1)[0]
        # No checks: the sentinels' verdict alone ends the session.
        self.start_gateway(sentinel_def("sentinel", gw_port, self.sentinels, self.nodes,
                                        checks=False))
        wait_for(lambda: through(gw_port)[0] == master.port, 10, "on the master")
        events = self.loop(Events(self.sentinels))
        held = self.held(gw_port, master, "held")
        t_stop = time.monotonic()
        master.pause()
        held.sock.setblocking(True)
        how = wait_closed(held.sock, 30)
        t_closed = time.monotonic()
        self.assertIn(how, ("eof", "reset"), "the held session")
        # The test's own subscriber may record the event a moment after
        # tcpgate acted on it.
        t_event = wait_for(lambda: events.first(t_stop), 2,
                           "a +switch-master (the session ended %.2f s after the stop)"
                           % (t_closed - t_stop))
        self.assertTrue(master.paused)
        new = self.wait_new_master(master)
        print("\n  split brain: session held on the hung master ended %.3f s after the first "
              "+switch-master (%.1f s after the stop)" % (t_closed - t_event, t_closed - t_stop),
              flush=True)
        self.assertLessEqual(abs(t_closed - t_event), SWITCH_BOUND + SLACK)
        line = self.gw.wait_for_log(r"end=upstream_down", timeout=5)[0]
        self.assertIn("target=%s" % master.address, line)
        lines = self.gw.log_lines()
        switch = [i for i, l in enumerate(lines) if "sentinel: " in l and " -> " in l]
        self.assertTrue(switch and switch[0] < lines.index(line),
                        "the session ended before the switch")
        # Back from SIGSTOP it says role:master until sentinel converts it,
        # and gets no connection meanwhile.
        sampler = self.loop(ClientSampler(master, ("sn",)))
        prober = self.loop(Prober(gw_port, "sn"))
        t_cont = time.monotonic()
        master.resume()
        said_master = wait_for(lambda: role_of(master.port), 5, "the old master answering")
        wait_for(lambda: role_of(master.port) == "slave", 20, "the old master demoted")
        t_demoted = time.monotonic()
        prober.stop()
        sampler.stop()
        stale = [r for r in prober.since(t_cont) if r[2] == master.port]
        print("  resumed old master: said %s, demoted %.2f s later; %d connections through "
              "tcpgate meanwhile, %d on it" % (said_master, t_demoted - t_cont,
                                                len(prober.since(t_cont)), len(stale)),
              flush=True)
        self.assertEqual(said_master, "master")
        self.assertEqual(stale, [])
        self.assertEqual(sampler.started_after("sn", t_cont), [])
        self.assertEqual({r[2] for r in prober.since(t_cont)} - {None}, {new.port})
        self.assertExitClean(self.gw)

    # ---- 6. a lying sentinel ----------------------------------------------------------------

    def test_6_a_lying_sentinel_switches_nothing(self):
        master, replicas = self.start_cluster()
        liar = self.server(LyingSentinel, ("127.0.0.1", master.port), epoch=5)
        gw_port = free_ports(1)[0]
        d = sentinel_def("liar", gw_port, [], self.nodes, checks=False)
        d["tcpgate"]["sentinel"]["addrs"] = [liar.address]
        self.start_gateway(d)
        wait_for(lambda: through(gw_port)[0] == master.port, 10, "on the master")
        key = 'tcpgate_sentinel_role_verify_failures_total{api_id="liar"}'
        # It names a replica, at a newer epoch: ROLE says slave, and the
        # connections go on to the master.
        liar.master, liar.epoch = ("127.0.0.1", replicas[0].port), 6
        self.gw.wait_metrics({key: lambda v: v is not None and v >= 1}, timeout=5)
        got = [through(gw_port)[0] for _ in range(10)]
        self.assertEqual(set(got), {master.port}, got)
        lines = self.sentinel_lines(r"node %s: named as the master by the sentinels, but ROLE "
                                    r"says slave; not switching" % re.escape(replicas[0].address))
        self.assertEqual(len(lines), 1, lines)
        # An address that is not listed: refused before any connection to it.
        unlisted = free_ports(1)[0]
        liar.master, liar.epoch = ("127.0.0.1", unlisted), 7
        self.gw.wait_metrics({'tcpgate_sentinel_refused_total{api_id="liar",reason="unlisted"}':
                              lambda v: v is not None and v >= 1}, timeout=5)
        lines = self.sentinel_lines(r"refused 127\.0\.0\.1:%d" % unlisted)
        self.assertEqual(len(lines), 1, lines)
        # One byte at a time, honest again: read whole, and the master stays.
        liar.master, liar.epoch, liar.byte_by_byte = ("127.0.0.1", master.port), 7, True
        q = liar.queries
        wait_for(lambda: liar.queries >= q + 6, 10, "the liar asked twice more")
        wait_for(lambda: through(gw_port)[0] == master.port, 10, "on the master")
        # Garbage: counted as a protocol failure, the link closes, nothing else.
        liar.byte_by_byte, liar.garbage = False, True
        self.gw.wait_metrics({'tcpgate_sentinel_query_failures_total{api_id="liar",sentinel="%s",'
                              'reason="protocol"}' % liar.address:
                              lambda v: v is not None and v >= 1}, timeout=5)
        self.assertEqual(through(gw_port)[0], master.port)
        self.assertEqual(self.metric("sentinel_master_switches_total", api_id="liar"), 0)
        self.assertExitClean(self.gw)

    # ---- 7. passwords -----------------------------------------------------------------------

    def test_7_sentinel_passwords(self):
        master, _ = self.start_cluster()
        # A fourth sentinel that asks for a password, watching the same master
        # under a name of its own.
        port = free_ports(1)[0]
        guarded = self.keep(Sentinel(port, "guarded", master.port, quorum=1,
                                     extra=("requirepass s3cret",)))
        guarded.start()
        good, bad = free_ports(2)

        def d(api_id, listen, password):
            x = sentinel_def(api_id, listen, [guarded], self.nodes, checks=False,
                             password=password)
            x["tcpgate"]["sentinel"]["master_name"] = "guarded"
            return x
        self.start_gateway(d("good", good, "s3cret"), d("bad", bad, "wrong"))
        wait_for(lambda: through(good)[0] == master.port, 10, "the right password")
        with guarded.client() as c:
            before = int(info(c, "stats")["total_connections_received"])
        time.sleep(3.0)
        with guarded.client() as c:
            after = int(info(c, "stats")["total_connections_received"])
        lines = self.sentinel_lines(r"api_id=bad .*AUTH refused")
        print("\n  wrong password: %d log line(s), %d connections to the sentinel in 3 s"
              % (len(lines), after - before - 1), flush=True)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("WRONGPASS", lines[0])
        self.assertLessEqual(after - before, 10, "reconnects to a sentinel that refuses us")
        self.assertGreaterEqual(self.metric("sentinel_query_failures_total", api_id="bad",
                                            sentinel=guarded.address, reason="auth"), 1)
        p, err = through(bad, timeout=5)
        self.assertIsNone(p, "a definition with no verdict serves nothing")
        self.assertExitClean(self.gw)

    # ---- 8. role replica ---------------------------------------------------------------------

    def test_8_role_replica_balances_over_the_replicas(self):
        master, replicas = self.start_cluster()
        gw_port = free_ports(1)[0]
        self.start_gateway(sentinel_def("ro", gw_port, self.sentinels, role="replica"))
        want = {r.port for r in replicas}
        wait_for(lambda: {through(gw_port)[0] for _ in range(8)} == want, 10, "both replicas")
        got = [through(gw_port)[0] for _ in range(20)]
        self.assertEqual(set(got), want)
        self.assertGreaterEqual(min(got.count(p) for p in want), 5, got)
        held = {}
        for i in range(4):
            c = RespClient(gw_port, timeout=5)
            self.addCleanup(c.close)
            held.setdefault(int(c.ok("CONFIG", "GET", "port")[1]), []).append(c)
        self.failover(self.sentinels[0], master)
        new = self.wait_new_master(master)
        # The promoted one leaves: its sessions close, and it gets none.
        for c in held.get(new.port, []):
            c.sock.settimeout(5)
            self.assertIn(wait_closed(c.sock, 5), ("eof", "reset"))
        self.assertNotIn(new.port, {through(gw_port)[0] for _ in range(10)})
        # The old master joins once converted.
        self.wait_link(master, new)
        want = {n.port for n in self.nodes if n is not new}
        wait_for(lambda: {through(gw_port)[0] for _ in range(8)} == want, 15,
                 "the old master among the replicas")
        ro = [t for t in self.gw.admin_json("/tyk/apis")["apis"][0]["targets"]]
        print("\n  role replica after the failover: %s"
              % {t["target"]: t["sentinel"]["named"] for t in ro}, flush=True)
        self.assertExitClean(self.gw)

    # ---- 9. reload -------------------------------------------------------------------------

    def tcpgate_links(self):
        out = {}
        for s in self.sentinels:
            out[s.port] = sorted(c["id"] for c in s.clients()
                                 if c.get("name", "").startswith("tcpgate"))
        return out

    def test_9_reload_keeps_the_watcher_unless_it_changes(self):
        master, _ = self.start_cluster()
        gw_port = free_ports(1)[0]
        d = sentinel_def("sentinel", gw_port, self.sentinels, self.nodes)
        self.start_gateway(d)
        wait_for(lambda: through(gw_port)[0] == master.port, 10, "on the master")
        wait_for(lambda: all(len(v) == 2 for v in self.tcpgate_links().values()), 5,
                 "two links per sentinel")
        before = self.tcpgate_links()
        # An unrelated change: the definition's idle timeout, and a new file.
        d["tcpgate"]["idle_timeout"] = "10m"
        self.gw.add(d)
        self.gw.add({"api_id": "other", "listen_port": free_ports(1)[0], "protocol": "tcp",
                     "proxy": {"target_url": master.address}})
        n = len(self.gw.lines_at("info"))
        self.gw.signal(__import__("signal").SIGHUP)
        self.gw.wait_for_log(r"reload \(SIGHUP\): 2 definitions", timeout=10)
        self.assertEqual(self.tcpgate_links(), before, "links after an unrelated reload")
        self.assertEqual(through(gw_port)[0], master.port)
        self.assertFalse([l for l in self.gw.lines_at("info")[n:] if "master is" in l])
        # A new master_name: a new watcher, new links, the old ones closed.
        d["tcpgate"]["sentinel"]["master_name"] = "othermaster"
        self.gw.add(d)
        self.gw.signal(__import__("signal").SIGHUP)
        self.gw.wait_for_log(r"reload \(SIGHUP\)", timeout=10, count=2)

        def replaced():
            now = self.tcpgate_links()
            return all(len(now[p]) == 2 and not set(now[p]) & set(before[p]) for p in now)
        wait_for(replaced, 5, "links replaced")
        self.gw.wait_for_log(r"do not know master name \"othermaster\"", timeout=5)
        self.assertExitClean(self.gw)


if __name__ == "__main__":
    unittest.main(verbosity=2)
