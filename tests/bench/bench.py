#!/usr/bin/env python3
"""tcpgate's benchmark suite: tcpgate, HAProxy and nginx side by side.

    make bench
    python3 tests/bench/bench.py [--tcpgate build/tcpgate] [--quick] [--rounds N] [--only 1,5]

Environment: BENCH_QUICK=1 for a ~2-minute smoke run, BENCH_ROUNDS=N (default
3; 1 in quick mode), BENCH_ONLY=1,5 for a subset of the scenarios.

tcpgate (--workers 2), HAProxy (tcp mode, nbthread 2) and nginx (stream,
worker_processes 2) run with equivalent configurations against the same
backends, in the same run. For each scenario and each round the targets run
one after the other (direct, tcpgate, haproxy, nginx), the order rotating from
round to round. A figure is the median of the rounds, with the spread
(min-max) beside it.

  1 request/response  redis-benchmark PING_MBULK, 50 clients, pipelining 1 and 16
  2 bulk              iperf3, one stream and 8 streams (receiver Gbit/s)
  3 connection rate   redis-benchmark -k 0 PING: connect, one request, close
  4 idle memory       RSS growth per proxied connection, 10,000 held idle
  5 TLS               full and resumed handshakes/s (ECDSA P-256, RSA 2048),
                      bulk throughput through TLS termination
  6 scale             tcpgate only: 1,000 SNI definitions on one port against
                      one definition (handshakes/s, time to load)
  7 growth            proxy CPU time per MB relayed at 1 to 10,000 streams

Results: a table on stdout, tests/bench/results/latest.json and, with gnuplot,
tests/bench/results/latest.png. Nothing here is pass/fail: a missing tool or a
failing proxy is reported and its rows are left empty.
"""
import argparse
import csv
import json
import math
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
NETLOAD = os.path.join(HERE, "netload.py")
RESULTS = os.path.join(HERE, "results")
TARGETS = ("direct", "tcpgate", "haproxy", "nginx")
PROXIES = TARGETS[1:]
WORKERS = 2  # tcpgate --workers, HAProxy nbthread, nginx worker_processes
# Mozilla "intermediate" TLS 1.2 ciphers, tcpgate's default, given to all three.
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
SCALE_DEFS = 1000
SCALE_NAME = "d0500.example.com"
T0 = time.monotonic()


def log(msg):
    sys.stderr.write("[%6.1fs] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


class Skip(Exception):
    """The scenario (or row) cannot run here: a tool or a proxy is missing."""


class OutOfTime(Exception):
    """The scenario used up its time budget."""


class Params:
    def __init__(self, quick, rounds):
        self.quick = quick
        self.rounds = rounds
        if quick:
            self.rr_requests = {1: 30000, 16: 200000}
            self.iperf_seconds = 2
            self.cr_requests = 8000
            self.idle_conns = 2000
            self.stime_seconds = 2
            self.tls_bulk_bytes = 64 << 20
            self.scale_seconds = 2
            self.growth_levels = [1, 100, 1000]
            self.growth_bytes = 1 << 30
            self.growth_min_per_conn = 256 << 10
            self.budget = {1: 60, 2: 60, 3: 40, 4: 60, 5: 90, 6: 60, 7: 120}
        else:
            self.rr_requests = {1: 100000, 16: 600000}
            self.iperf_seconds = 5
            self.cr_requests = 20000
            self.idle_conns = 10000
            self.stime_seconds = 5
            self.tls_bulk_bytes = 256 << 20
            self.scale_seconds = 5
            self.growth_levels = [1, 100, 1000, 10000]
            self.growth_bytes = 3 << 30
            self.growth_min_per_conn = 512 << 10
            self.budget = {1: 150, 2: 220, 3: 100, 4: 150, 5: 330, 6: 150, 7: 400}
        # Over 3 rounds the budgets scale with the rounds asked for.
        scale = max(1.0, rounds / (1 if quick else 3))
        self.budget = {k: v * scale for k, v in self.budget.items()}

    def as_dict(self):
        return {k: v for k, v in vars(self).items()}


# ------------------------------------------------------------ processes

def nofile_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Procs:
    """Every process the suite starts, so that all of them are stopped."""

    def __init__(self):
        self.live = []

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        # Own session: a Ctrl-C reaches the suite only, which then stops
        # everything in order; killpg reaches nginx's workers too.
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.live.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p is None:
            return
        if p.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 2.0)):
                # tcpgate drains on the first SIGTERM and closes at the second
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        try:  # anything left in its group (nginx workers)
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p, grace=3.0)


def readline(p, timeout):
    """A line from p.stdout (text mode) within timeout, or None."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
        if r:
            line = p.stdout.readline()
            return line if line else None
        if p.poll() is not None:
            line = p.stdout.readline()
            return line if line else None


_used_ports = set()


def free_port():
    """A free 127.0.0.1 port below the ephemeral range where possible, so that
    no outgoing connection takes it between its choice and its use."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        if low > 12000:
            port = random.randrange(10000, low - 1)
        else:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        if port in _used_ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ports(ports, proc=None, timeout=15.0):
    end = time.monotonic() + timeout
    for port in ports:
        while not port_open(port):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("exited with status %s before port %d opened" %
                                   (proc.returncode, port))
            if time.monotonic() > end:
                raise RuntimeError("port %d did not open within %.0fs" % (port, timeout))
            time.sleep(0.02)


def tail(path, n=8):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
        except (OSError, ValueError):
            continue
    return out


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pids):
    """(user, system) CPU seconds of the processes, all threads included."""
    user = system = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
        except (OSError, ValueError):
            pass
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_times(pids))


def run(argv, timeout, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, start_new_session=True, **kw)


def first_line(argv, stream="stdout"):
    try:
        r = run(argv, 10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout if stream == "stdout" else r.stderr) or r.stdout or r.stderr
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[0] if lines else None


# -------------------------------------------------------------- proxies

class Instance:
    """One proxy process serving a set of routes: (name, tls, target port),
    tls being None, "ec", "rsa" or a PEM path. "direct" runs nothing and its
    ports are the targets'."""

    def __init__(self, bench, kind, routes, tag, log_level="warn"):
        self.b, self.kind, self.routes, self.tag = bench, kind, routes, tag
        self.log_level = log_level
        self.proc = None
        self.dir = os.path.join(bench.work, "%s-%s" % (kind, tag))
        self.logpath = os.path.join(self.dir, "log")
        if kind == "direct":
            self.ports = {name: target for name, _tls, target in routes}
        else:
            self.ports = {name: free_port() for name, _tls, _t in routes}

    def pem(self, tls):
        return self.b.certs.get(tls, tls)

    def start(self):
        if self.kind == "direct":
            return self
        os.makedirs(self.dir, exist_ok=True)
        argv = getattr(self, "_argv_" + self.kind)()
        logf = open(self.logpath, "ab")
        try:
            self.proc = self.b.procs.spawn(argv, stdout=logf, stderr=logf)
        finally:
            logf.close()
        try:
            wait_ports(self.ports.values(), self.proc)
        except RuntimeError as e:
            msg = "%s did not start: %s; log: %s" % (self.kind, e, tail(self.logpath, 5))
            self.stop()
            raise RuntimeError(msg)
        return self

    def _argv_tcpgate(self):
        apps = os.path.join(self.dir, "apps")
        os.makedirs(apps, exist_ok=True)
        for name, tls, target in self.routes:
            d = {"api_id": name, "listen_port": self.ports[name],
                 "protocol": "tls" if tls else "tcp",
                 "proxy": {"target_url": "127.0.0.1:%d" % target}}
            if tls:
                d["certificates"] = [self.pem(tls)]
            with open(os.path.join(apps, name + ".json"), "w") as f:
                json.dump(d, f)
        gw = os.path.join(self.dir, "gateway.json")
        with open(gw, "w") as f:
            json.dump({"listen_address": "127.0.0.1", "control_api_port": 0}, f)
        return [self.b.tcpgate, "--config", gw, "--apps", apps, "--workers", str(WORKERS),
                "--log-level", self.log_level]

    def _argv_haproxy(self):
        maxconn = self.b.maxconn
        lines = ["global", "    nbthread %d" % WORKERS, "    maxconn %d" % maxconn,
                 "    ssl-default-bind-ciphers %s" % CIPHERS,
                 "    ssl-default-bind-options ssl-min-ver TLSv1.2",
                 "defaults", "    mode tcp", "    maxconn %d" % maxconn,
                 "    timeout connect 5s", "    timeout client 1h", "    timeout server 1h"]
        for name, tls, target in self.routes:
            bind = "    bind 127.0.0.1:%d" % self.ports[name]
            if tls:
                bind += " ssl crt %s" % self.pem(tls)
            lines += ["listen %s" % name, bind, "    server s1 127.0.0.1:%d" % target]
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ["haproxy", "-f", cfg, "-db"]

    def _argv_nginx(self):
        lines = []
        if os.path.exists(NGINX_STREAM_MODULE):
            lines.append("load_module %s;" % NGINX_STREAM_MODULE)
        lines += ["worker_processes %d;" % WORKERS,
                  "worker_rlimit_nofile %d;" % min(self.b.nofile, 2 * self.b.maxconn + 200),
                  "error_log %s/error.log warn;" % self.dir,
                  "pid %s/nginx.pid;" % self.dir,
                  "events { worker_connections %d; }" % min(self.b.nofile - 100,
                                                            2 * self.b.maxconn + 100),
                  "stream {",
                  "    proxy_connect_timeout 5s;",
                  "    proxy_timeout 1h;",
                  "    ssl_protocols TLSv1.2 TLSv1.3;",
                  "    ssl_ciphers %s;" % CIPHERS,
                  "    ssl_prefer_server_ciphers on;",
                  "    ssl_session_cache shared:bench:20m;"]
        for name, tls, target in self.routes:
            if tls:
                pem = self.pem(tls)
                lines += ["    server { listen 127.0.0.1:%d ssl reuseport;" % self.ports[name],
                          "        ssl_certificate %s; ssl_certificate_key %s;" % (pem, pem),
                          "        proxy_pass 127.0.0.1:%d; }" % target]
            else:
                lines += ["    server { listen 127.0.0.1:%d reuseport; proxy_pass 127.0.0.1:%d; }"
                          % (self.ports[name], target)]
        lines.append("}")
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ["nginx", "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log"),
                "-g", "daemon off;"]

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children(self.proc.pid)

    def rss_kib(self):
        return rss_kib(self.pids())

    def cpu_seconds(self):
        return cpu_seconds(self.pids())

    def cpu_times(self):
        return cpu_times(self.pids())

    def alive(self):
        return self.kind == "direct" or (self.proc is not None and self.proc.poll() is None)

    def stop(self):
        if self.proc is not None:
            self.b.procs.stop(self.proc)
            self.proc = None


# -------------------------------------------------------------- results

class Row:
    def __init__(self, scenario, key, label, unit, better, chart_label, targets):
        self.scenario, self.key, self.label = scenario, key, label
        self.unit, self.better, self.chart_label = unit, better, chart_label
        self.targets = targets
        self.values = {t: [] for t in targets}
        self.extra = {}

    def add(self, target, value):
        if value is not None:
            self.values[target].append(value)

    def stat(self, target):
        v = self.values.get(target) or []
        if not v:
            return None
        return statistics.median(v), min(v), max(v)

    def ratio(self, target):
        a, h = self.stat(target), self.stat("haproxy")
        if a is None or h is None or h[0] == 0:
            return None
        return a[0] / h[0]

    def as_dict(self):
        d = {"scenario": self.scenario, "key": self.key, "label": self.label,
             "unit": self.unit, "better": self.better, "values": self.values,
             "median": {}, "min": {}, "max": {}, "ratio_to_haproxy": {}}
        for t in self.targets:
            s = self.stat(t)
            if s:
                d["median"][t], d["min"][t], d["max"][t] = s
            r = self.ratio(t)
            if r is not None:
                d["ratio_to_haproxy"][t] = r
        if self.extra:
            d["extra"] = self.extra
        return d


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return "%.2fM" % (v / 1e6)
    if a >= 1e4:
        return "%.1fk" % (v / 1e3)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def cell(row, target):
    s = row.stat(target)
    if s is None:
        return "-"
    med, lo, hi = s
    if len(row.values[target]) == 1:
        return fmt(med)
    return "%s [%s-%s]" % (fmt(med), fmt(lo), fmt(hi))


# ---------------------------------------------------------------- suite

class Bench:
    def __init__(self, args, params):
        self.args, self.p = args, params
        self.tcpgate = os.path.abspath(args.tcpgate)
        self.procs = Procs()
        self.work = tempfile.mkdtemp(prefix="tcpgate-bench-")
        self.nofile = nofile_limit()
        # A proxy holds two descriptors per proxied connection, plus its own.
        # No scenario needs more than 10,000, and larger limits would only
        # make HAProxy and nginx preallocate more.
        self.max_proxied = max(100, min(12000, (self.nofile - 200) // 2))
        self.maxconn = self.max_proxied + 50
        self.rows = []
        self.problems = []
        self.durations = {}
        self.certs = {}
        self.inst = {}
        self.tools = {}
        self.backend = None
        self.deadline = None

    # -- bookkeeping
    def problem(self, scenario, msg):
        self.problems.append({"scenario": scenario, "problem": msg})
        log("problem (scenario %s): %s" % (scenario, msg))

    def row(self, *a, targets=TARGETS):
        r = Row(*a, targets=targets)
        self.rows.append(r)
        return r

    def have(self, tool):
        if tool not in self.tools:
            self.tools[tool] = shutil.which(tool)
        return self.tools[tool] is not None

    def need(self, *tools):
        missing = [t for t in tools if not self.have(t)]
        if missing:
            raise Skip("%s not installed" % ", ".join(missing))

    def left(self):
        return self.deadline - time.monotonic()

    def check_time(self):
        if time.monotonic() > self.deadline:
            raise OutOfTime()

    def timeout(self, want):
        """A subprocess timeout: what it needs, but never far past the budget."""
        return max(5.0, min(want, self.left() + 30))

    def targets(self, with_direct=True):
        out = []
        for t in (TARGETS if with_direct else PROXIES):
            if t in self.inst and self.inst[t].alive():
                out.append(t)
        return out

    # -- setup
    def machine(self):
        model = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem = "?"
        try:
            with open("/proc/meminfo") as f:
                kb = int(f.readline().split()[1])
                mem = "%.1f GiB" % (kb / 1048576)
        except (OSError, ValueError, IndexError):
            pass
        try:
            load = " ".join("%.2f" % x for x in os.getloadavg())
        except OSError:
            load = "?"
        return {"cores": os.cpu_count(), "kernel": "%s %s" % (platform.system(), platform.release()),
                "cpu": model, "memory": mem, "nofile": self.nofile, "loadavg_at_start": load}

    def versions(self):
        v = {}
        if os.access(self.tcpgate, os.X_OK):
            v["tcpgate"] = first_line([self.tcpgate, "--version"])
            commit = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
            if commit:
                dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], 10)
                v["tcpgate"] += " (git %s%s)" % (commit, "+dirty" if dirty.stdout.strip() else "")
        for name, argv in (("haproxy", ["haproxy", "-v"]), ("nginx", ["nginx", "-v"]),
                           ("redis-server", ["redis-server", "--version"]),
                           ("redis-benchmark", ["redis-benchmark", "--version"]),
                           ("iperf3", ["iperf3", "--version"]),
                           ("openssl", ["openssl", "version"]),
                           ("gnuplot", ["gnuplot", "--version"])):
            if self.have(argv[0]):
                v[name] = first_line(argv)
            else:
                v[name] = None
        v["python3"] = "Python " + platform.python_version()
        return v

    def make_certs(self):
        if not self.have("openssl"):
            return
        d = os.path.join(self.work, "certs")
        os.makedirs(d, exist_ok=True)
        specs = {
            "ec": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                   "bench.example.com", "DNS:bench.example.com"),
            "rsa": (["-newkey", "rsa:2048"], "bench.example.com", "DNS:bench.example.com"),
            "wild": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                     "*.example.com", "DNS:*.example.com"),
        }
        for name, (key, cn, san) in specs.items():
            crt, keyf, pem = (os.path.join(d, name + ext) for ext in (".crt", ".key", ".pem"))
            r = run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=" + cn,
                     "-addext", "subjectAltName=" + san, "-keyout", keyf, "-out", crt] + key, 60)
            if r.returncode != 0:
                self.problem(0, "openssl req %s failed: %s" % (name, r.stderr.strip()[-200:]))
                continue
            with open(pem, "w") as f:
                f.write(open(crt).read() + open(keyf).read())
            os.chmod(pem, 0o600)
            self.certs[name] = pem

    def start_backends(self):
        self.ports = {}
        if self.have("redis-server"):
            port = free_port()
            self.redis = self.procs.spawn(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                 "--logfile", os.path.join(self.work, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ports([port], self.redis)
                self.ports["redis"] = port
            except RuntimeError as e:
                self.problem(0, "redis-server: %s" % e)
        else:
            self.problem(0, "redis-server not installed: scenarios 1, 3, 5 and 6 need it")
        if self.have("iperf3"):
            port = free_port()
            self.iperf = self.procs.spawn(["iperf3", "-s", "-p", str(port), "-B", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ports([port], self.iperf)
                self.ports["iperf"] = port
            except RuntimeError as e:
                self.problem(0, "iperf3 -s: %s" % e)
        self.backend = self.procs.spawn([sys.executable, NETLOAD, "server"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        line = readline(self.backend, 10)
        if not line:
            raise RuntimeError("the netload backend did not start")
        for k, v in json.loads(line).items():
            self.ports[k] = v

    def backend_stats(self):
        self.backend.stdin.write("stats\n")
        self.backend.stdin.flush()
        line = readline(self.backend, 10)
        if not line:
            raise RuntimeError("the netload backend does not answer")
        return json.loads(line)

    def main_routes(self):
        routes = []
        for name in ("redis", "iperf", "discard"):
            if name in self.ports:
                routes.append((name, None, self.ports[name]))
        if "redis" in self.ports:
            for c in ("ec", "rsa"):
                if c in self.certs:
                    routes.append(("tls_" + c, c, self.ports["redis"]))
        if "ec" in self.certs:
            routes.append(("tls_bulk", "ec", self.ports["bulk"]))
        return routes

    def start_proxies(self):
        routes = self.main_routes()
        self.inst["direct"] = Instance(self, "direct", [r for r in routes if not r[1]], "main")
        for kind in PROXIES:
            exe = self.tcpgate if kind == "tcpgate" else kind
            if kind == "tcpgate" and not os.access(self.tcpgate, os.X_OK):
                self.problem(0, "tcpgate binary %s not found: build it first" % self.tcpgate)
                continue
            if kind != "tcpgate" and not self.have(exe):
                self.problem(0, "%s not installed: its column stays empty" % kind)
                continue
            try:
                self.inst[kind] = Instance(self, kind, routes, "main").start()
            except RuntimeError as e:
                self.problem(0, str(e))

    def setup(self):
        log("work dir %s; RLIMIT_NOFILE %d" % (self.work, self.nofile))
        self.make_certs()
        self.start_backends()
        self.start_proxies()

    def teardown(self):
        for i in self.inst.values():
            i.stop()
        self.procs.stop_all()
        if self.args.keep:
            log("kept the work dir %s" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def rotate(seq, r):
    seq = list(seq)
    if not seq:
        return seq
    r %= len(seq)
    return seq[r:] + seq[:r]


# ------------------------------------------------------------ measuring

class CpuMeter:
    """The proxy's own CPU (utime + stime of all its processes and threads)
    over a block: with CpuMeter(b, target) as m: ...; m.add_per(row, units)
    adds microseconds per unit. Nothing for "direct", which runs no proxy."""

    def __init__(self, b, target):
        self.inst = b.inst.get(target) if target != "direct" else None
        self.target = target
        self.seconds = None

    def __enter__(self):
        self.c0 = self.inst.cpu_seconds() if self.inst else None
        return self

    def __exit__(self, *exc):
        if self.inst:
            self.seconds = self.inst.cpu_seconds() - self.c0
        return False

    def add_per(self, row, units):
        if self.seconds is not None and units:
            row.add(self.target, self.seconds * 1e6 / units)


def redis_bench(b, sid, port, n, pipeline=1, keepalive=True):
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(n),
            "-P", str(pipeline), "-t", "ping_mbulk", "--csv"]
    if not keepalive:
        argv += ["-k", "0"]
    try:
        r = run(argv, b.timeout(60 + n / 2000))
    except subprocess.TimeoutExpired:
        b.problem(sid, "redis-benchmark on port %d timed out" % port)
        return None
    res = parse_redis_benchmark(r.stdout, "PING_MBULK")
    if res is None:
        b.problem(sid, "redis-benchmark on port %d: no result (status %d): %s" %
                  (port, r.returncode, (r.stderr or r.stdout).strip()[-200:]))
    return res


def parse_redis_benchmark(text, test):
    """redis-benchmark's --csv ("test","rps","avg_latency_ms",...,"p99_latency_ms")
    or, failing that, its -q line ("TEST: N requests per second, p50=X msec")."""
    text = text.replace("\r", "\n")
    rows = list(csv.reader(l for l in text.splitlines() if l.startswith('"')))
    header = next((r for r in rows if r and r[0] == "test"), None)
    for r in rows:
        if r and r[0].upper() == test:
            d = dict(zip(header, r)) if header else {"rps": r[1]}
            try:
                out = {"rps": float(d["rps"])}
            except (KeyError, ValueError):
                continue
            for k in ("p50", "p99"):
                try:
                    out[k] = float(d["%s_latency_ms" % k])
                except (KeyError, ValueError):
                    out[k] = None
            return out
    m = None
    for m in re.finditer(re.escape(test) + r":\s*([\d.]+) requests per second(?:, p50=([\d.]+) msec)?",
                         text):
        pass
    if m:
        return {"rps": float(m.group(1)), "p50": float(m.group(2)) if m.group(2) else None,
                "p99": None}
    return None


def s1_request_response(b):
    b.need("redis-benchmark")
    if "redis" not in b.ports:
        raise Skip("no redis-server")
    rows = {}
    for p in (1, 16):
        rows[p] = (
            b.row(1, "s1.p%d.rps" % p, "PING_MBULK c50 P%d rate" % p, "req/s", "higher",
                  "S1 P%d req/s" % p),
            b.row(1, "s1.p%d.p50" % p, "PING_MBULK c50 P%d p50" % p, "ms", "lower",
                  "S1 P%d p50" % p),
            b.row(1, "s1.p%d.p99" % p, "PING_MBULK c50 P%d p99" % p, "ms", "lower",
                  "S1 P%d p99" % p),
            b.row(1, "s1.p%d.cpu" % p, "PING_MBULK c50 P%d proxy CPU per request" % p, "us/req",
                  "lower", "S1 P%d CPU/req" % p, targets=PROXIES))
    for rnd in range(b.p.rounds):
        for t in rotate(b.targets(), rnd):
            for p in (1, 16):
                b.check_time()
                n = b.p.rr_requests[p]
                with CpuMeter(b, t) as cpu:
                    res = redis_bench(b, 1, b.inst[t].ports["redis"], n, p)
                if res:
                    rows[p][0].add(t, res["rps"])
                    rows[p][1].add(t, res["p50"])
                    rows[p][2].add(t, res["p99"])
                    cpu.add_per(rows[p][3], n)
        log("scenario 1 round %d/%d done" % (rnd + 1, b.p.rounds))


def iperf(b, sid, port, seconds, streams):
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
    if streams > 1:
        argv += ["-P", str(streams)]
    for attempt in range(2):
        try:
            r = run(argv, b.timeout(seconds + 20))
        except subprocess.TimeoutExpired:
            b.problem(sid, "iperf3 on port %d timed out" % port)
            return None
        try:
            d = json.loads(r.stdout)
            return d["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError, TypeError):
            err = ""
            try:
                err = json.loads(r.stdout).get("error", "")
            except (ValueError, AttributeError):
                err = (r.stderr or r.stdout).strip()[-200:]
            if attempt == 0 and "busy" in err:
                time.sleep(1)
                continue
            b.problem(sid, "iperf3 -P %d on port %d: %s" % (streams, port, err or "no result"))
            return None


def s2_bulk(b):
    b.need("iperf3")
    if "iperf" not in b.ports:
        raise Skip("no iperf3 server")
    rows = {1: b.row(2, "s2.p1", "iperf3 1 stream", "Gbit/s", "higher", "S2 1 stream"),
            8: b.row(2, "s2.p8", "iperf3 8 streams", "Gbit/s", "higher", "S2 8 streams")}
    for rnd in range(b.p.rounds):
        for t in rotate(b.targets(), rnd):
            for streams in (1, 8):
                b.check_time()
                rows[streams].add(t, iperf(b, 2, b.inst[t].ports["iperf"], b.p.iperf_seconds, streams))
        log("scenario 2 round %d/%d done" % (rnd + 1, b.p.rounds))


def s3_connection_rate(b):
    b.need("redis-benchmark")
    if "redis" not in b.ports:
        raise Skip("no redis-server")
    row = b.row(3, "s3.cps", "new conn + PING + close, c50", "conn/s", "higher", "S3 conn/s")
    cpu_row = b.row(3, "s3.cpu", "new conn + PING + close: proxy CPU per connection", "us/conn",
                    "lower", "S3 CPU/conn", targets=PROXIES)
    for rnd in range(b.p.rounds):
        for t in rotate(b.targets(), rnd):
            b.check_time()
            with CpuMeter(b, t) as cpu:
                res = redis_bench(b, 3, b.inst[t].ports["redis"], b.p.cr_requests, 1,
                                  keepalive=False)
            if res:
                row.add(t, res["rps"])
                cpu.add_per(cpu_row, b.p.cr_requests)
        log("scenario 3 round %d/%d done" % (rnd + 1, b.p.rounds))


def warm_up(port, n=64):
    for _ in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"x" * 32)
                got = 0
                while got < 32:
                    d = s.recv(64)
                    if not d:
                        break
                    got += len(d)
        except OSError:
            pass


def s4_idle_memory(b):
    n = min(b.p.idle_conns, b.max_proxied)
    targets = b.targets(with_direct=False)
    if not targets:
        raise Skip("no proxy running")
    row = b.row(4, "s4.rss_per_conn", "idle RSS growth per conn (%d)" % n, "KiB/conn", "lower",
                "S4 idle KiB/conn", targets=PROXIES)
    row.extra = {"connections": n, "samples": []}
    if n < b.p.idle_conns:
        b.problem(4, "%d connections asked, %d held: a proxy holds 2 descriptors per "
                  "connection and RLIMIT_NOFILE is %d" % (b.p.idle_conns, n, b.nofile))
    for rnd in range(b.p.rounds):
        for t in rotate(targets, rnd):
            b.check_time()
            inst = client = None
            try:
                inst = Instance(b, t, [("echo", None, b.ports["echo"])], "idle%d" % rnd).start()
                port = inst.ports["echo"]
                warm_up(port)
                time.sleep(0.5)
                rss0 = inst.rss_kib()
                client = b.procs.spawn([sys.executable, NETLOAD, "hold", str(port), str(n)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       bufsize=1)
                line = readline(client, b.timeout(120))
                m = re.match(r"ready ok=(\d+) fail=(\d+) secs=([\d.]+)", line or "")
                if not m:
                    b.problem(4, "%s: the hold client did not report (%r)" % (t, line))
                    continue
                ok, fail, secs = int(m.group(1)), int(m.group(2)), float(m.group(3))
                time.sleep(1.0)
                rss1 = inst.rss_kib()
                if fail:
                    b.problem(4, "%s: %d of %d connections failed" % (t, fail, n))
                if ok:
                    row.add(t, (rss1 - rss0) / ok)
                row.extra["samples"].append({"target": t, "round": rnd, "rss_before_kib": rss0,
                                             "rss_held_kib": rss1, "held": ok, "failed": fail,
                                             "open_seconds": secs})
                client.stdin.write("done\n")
                client.stdin.flush()
                readline(client, 30)
            except RuntimeError as e:
                b.problem(4, "%s: %s" % (t, e))
            finally:
                b.procs.stop(client)
                if inst:
                    inst.stop()
        log("scenario 4 round %d/%d done" % (rnd + 1, b.p.rounds))


def s_time(b, port, mode, seconds, tls12, parallel=2):
    """openssl s_time clients in parallel; returns (handshakes/s summed, share
    of the connections that resumed, in -reuse mode)."""
    argv = ["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-" + mode,
            "-time", str(seconds)]
    if tls12:
        argv.append("-tls1_2")
    procs = []
    t0 = time.monotonic()
    try:
        for _ in range(parallel):
            procs.append(b.procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        return s_time_wait(procs, t0, seconds, parallel)
    finally:
        for p in procs:
            b.procs.stop(p, grace=1.0)


def s_time_wait(procs, t0, seconds, parallel):
    ends = [None] * parallel
    deadline = t0 + seconds + 30
    # s_time runs for 'seconds' to 'seconds'+1 (its clock is time(2)): time it here.
    bufs = [b""] * parallel

    def reader(i):
        bufs[i] = procs[i].stdout.read()

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(parallel)]
    for th in threads:
        th.start()
    while any(e is None for e in ends) and time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if ends[i] is None and p.poll() is not None:
                ends[i] = time.monotonic()
        time.sleep(0.005)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    for th in threads:
        th.join(2)
    rate, marks_r, marks_all = 0.0, 0, 0
    count = 0
    for i in range(parallel):
        text = bufs[i].decode(errors="replace")
        m = re.search(r"(\d+) connections in [\d.]+s", text)
        if not m or ends[i] is None:
            return None, None, text.strip()[-300:]
        rate += int(m.group(1)) / (ends[i] - t0)
        count += int(m.group(1))
        for line in text.splitlines():
            if line and set(line) <= {"r", "*"}:
                marks_r += line.count("r")
                marks_all += len(line)
    S_TIME_COUNT[0] = count
    return rate, (marks_r / marks_all if marks_all else None), None


# The connections the last s_time_wait counted (its callers keep their
# three-value answer).
S_TIME_COUNT = [0]


def tls_bulk(b, port, nbytes):
    try:
        r = run([sys.executable, NETLOAD, "tlsbulk", str(port), str(nbytes)], b.timeout(120))
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return None, "tlsbulk: %r" % e
    if "error" in d:
        return None, d["error"]
    return d, None


def s5_tls(b):
    b.need("openssl")
    targets = [t for t in b.targets(with_direct=False) if "tls_ec" in b.inst[t].ports]
    if not targets:
        raise Skip("no proxy with TLS ports (certificates or redis-server missing)")
    secs = b.p.stime_seconds
    names = {"ec": "ECDSA P-256", "rsa": "RSA 2048"}
    rows, cpu_rows = {}, {}
    for c in ("ec", "rsa"):
        rows[c] = (b.row(5, "s5.%s.full" % c, "%s full hs (TLS 1.3)" % names[c], "hs/s",
                         "higher", "S5 %s full" % names[c].split()[0], targets=PROXIES),
                   b.row(5, "s5.%s.resumed" % c, "%s resumed hs (TLS 1.2)" % names[c], "hs/s",
                         "higher", "S5 %s resumed" % names[c].split()[0], targets=PROXIES))
        cpu_rows[c] = (b.row(5, "s5.%s.full.cpu" % c, "%s full hs: proxy CPU per handshake"
                             % names[c], "us/hs", "lower", "S5 %s full CPU/hs"
                             % names[c].split()[0], targets=PROXIES),
                       b.row(5, "s5.%s.resumed.cpu" % c, "%s resumed hs: proxy CPU per handshake"
                             % names[c], "us/hs", "lower", "S5 %s resumed CPU/hs"
                             % names[c].split()[0], targets=PROXIES))
    bulk = b.row(5, "s5.bulk", "TLS bulk, %d MiB, 1 conn" % (b.p.tls_bulk_bytes >> 20), "MB/s",
                 "higher", "S5 TLS bulk MB/s", targets=PROXIES)
    bulk_cpu = b.row(5, "s5.bulk.cpu", "TLS bulk: proxy CPU per MB", "us/MB", "lower",
                     "S5 TLS bulk CPU/MB", targets=PROXIES)
    rows["ec"][1].extra["resumed_share"] = {}
    rows["rsa"][1].extra["resumed_share"] = {}
    bulk.extra["negotiated"] = {}
    for rnd in range(b.p.rounds):
        for t in rotate(targets, rnd):
            for c in ("ec", "rsa"):
                port = b.inst[t].ports.get("tls_" + c)
                if port is None:
                    continue
                for kind, mode, tls12 in ((0, "new", False), (1, "reuse", True)):
                    b.check_time()
                    with CpuMeter(b, t) as cpu:
                        rate, share, err = s_time(b, port, mode, secs, tls12)
                    if rate is None:
                        b.problem(5, "%s %s s_time -%s: %s" % (t, c, mode, err))
                        continue
                    rows[c][kind].add(t, rate)
                    cpu.add_per(cpu_rows[c][kind], S_TIME_COUNT[0])
                    if kind == 1:
                        rows[c][1].extra["resumed_share"].setdefault(t, []).append(share)
                        if share is not None and share < 0.9:
                            b.problem(5, "%s %s: only %.0f%% of s_time -reuse connections resumed"
                                      % (t, names[c], 100 * share))
            b.check_time()
            port = b.inst[t].ports.get("tls_bulk")
            if port:
                with CpuMeter(b, t) as cpu:
                    d, err = tls_bulk(b, port, b.p.tls_bulk_bytes)
                if d:
                    bulk.add(t, d["mb_per_s"])
                    cpu.add_per(bulk_cpu, b.p.tls_bulk_bytes / 1e6)
                    bulk.extra["negotiated"][t] = "%s %s" % (d["version"], d["cipher"])
                else:
                    b.problem(5, "%s TLS bulk: %s" % (t, err))
        log("scenario 5 round %d/%d done" % (rnd + 1, b.p.rounds))


def write_scale_apps(b, d, names, port, target):
    os.makedirs(d, exist_ok=True)
    for i, name in enumerate(names):
        defn = {"api_id": "d%04d" % (i + 1), "listen_port": port, "protocol": "tls",
                "domain": name, "certificates": [b.certs["wild"]],
                "proxy": {"target_url": "127.0.0.1:%d" % target}}
        with open(os.path.join(d, "d%04d.json" % (i + 1)), "w") as f:
            json.dump(defn, f)


def start_tcpgate_raw(b, apps, level, logpath):
    gw = os.path.join(os.path.dirname(apps), "gateway.json")
    with open(gw, "w") as f:
        json.dump({"listen_address": "127.0.0.1", "control_api_port": 0}, f)
    logf = open(logpath, "wb")
    try:
        return b.procs.spawn([b.tcpgate, "--config", gw, "--apps", apps, "--workers", str(WORKERS),
                              "--log-level", level], stdout=logf, stderr=logf)
    finally:
        logf.close()


def load_time(b, apps, logpath, timeout=60):
    """Seconds from the start of the process to its "started" log line."""
    t0 = time.monotonic()
    p = start_tcpgate_raw(b, apps, "info", logpath)
    try:
        while time.monotonic() - t0 < timeout:
            with open(logpath, "rb") as f:
                data = f.read()
            if b" started: " in data:
                return time.monotonic() - t0, data
            if p.poll() is not None:
                return None, data
            time.sleep(0.002)
        return None, b""
    finally:
        b.procs.stop(p)


def handshakes(b, port, seconds, servername, parallel=2):
    procs = [b.procs.spawn([sys.executable, NETLOAD, "handshakes", str(port), str(seconds),
                            "--servername", servername], stdout=subprocess.PIPE, text=True)
             for _ in range(parallel)]
    total, fails = 0.0, 0
    try:
        for p in procs:
            out, _ = p.communicate(timeout=b.timeout(seconds + 30))
            d = json.loads(out.strip().splitlines()[-1])
            total += d["count"] / d["seconds"]
            fails += d["fails"]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return None, "handshake client: %r" % e
    finally:
        for p in procs:
            b.procs.stop(p)
    return total, ("%d handshakes failed" % fails if fails else None)


def s6_scale(b):
    if "tcpgate" not in b.inst:
        raise Skip("tcpgate is not running")
    if "wild" not in b.certs or "redis" not in b.ports:
        raise Skip("needs openssl (certificates) and redis-server")
    sets = {}
    for ndefs in (1, SCALE_DEFS):
        names = [SCALE_NAME] if ndefs == 1 else ["d%04d.example.com" % (i + 1)
                                                 for i in range(ndefs)]
        d = os.path.join(b.work, "scale%d" % ndefs)
        port, load_port = free_port(), free_port()
        # the same definitions on another port, for the load-time starts while
        # the handshake instance runs
        write_scale_apps(b, os.path.join(d, "apps"), names, port, b.ports["redis"])
        write_scale_apps(b, os.path.join(d, "apps-load"), names, load_port, b.ports["redis"])
        sets[ndefs] = {"dir": d, "apps": os.path.join(d, "apps"), "port": port,
                       "apps_load": os.path.join(d, "apps-load")}
    hs = {n: b.row(6, "s6.hs.%d" % n, "tcpgate full hs, %d def%s (SNI)" % (n, "s" if n > 1 else ""),
                   "hs/s", "higher", None, targets=("tcpgate",)) for n in sets}
    lt = {n: b.row(6, "s6.load.%d" % n, "tcpgate time to load %d def%s" % (n, "s" if n > 1 else ""),
                   "ms", "lower", None, targets=("tcpgate",)) for n in sets}
    for n in sets:
        hs[n].extra = {"client": "netload.py handshakes x2 (Python ssl, TLS 1.3, ECDSA P-256 "
                                 "*.example.com), servername %s" % SCALE_NAME}
    running = {}
    try:
        for n, s in sets.items():
            p = start_tcpgate_raw(b, s["apps"], "warn", os.path.join(s["dir"], "warn.log"))
            running[n] = p
            wait_ports([s["port"]], p, timeout=60)
        for rnd in range(b.p.rounds):
            for n in rotate(sorted(sets), rnd):
                s = sets[n]
                b.check_time()
                secs, data = load_time(b, s["apps_load"], os.path.join(s["dir"], "info%d.log" % rnd))
                if secs is None:
                    b.problem(6, "%d definitions: no \"started\" line: %s" %
                              (n, data.decode(errors="replace")[-300:]))
                else:
                    lt[n].add("tcpgate", secs * 1000)
                    m = re.search(rb"started: \d+ workers, (\d+) definitions", data)
                    lt[n].extra["definitions_loaded"] = int(m.group(1)) if m else None
                b.check_time()
                rate, err = handshakes(b, s["port"], b.p.scale_seconds, SCALE_NAME)
                if err:
                    b.problem(6, "%d definitions: %s" % (n, err))
                hs[n].add("tcpgate", rate)
            log("scenario 6 round %d/%d done" % (rnd + 1, b.p.rounds))
    finally:
        for p in running.values():
            b.procs.stop(p)
    a, z = hs[1].stat("tcpgate"), hs[SCALE_DEFS].stat("tcpgate")
    if a and z:
        hs[SCALE_DEFS].extra["ratio_to_1_definition"] = z[0] / a[0]


def s7_growth(b):
    """Each connection carries a fixed amount; the proxy's CPU time is taken
    from when every connection is up (the sink holds them all) to when the
    sink has received every byte. Everything sent is relayed in between, so
    what a proxy buffers does not skew the figure, and connection setup and
    teardown stay out of it."""
    targets = [t for t in b.targets(with_direct=False) if "discard" in b.inst[t].ports]
    if not targets:
        raise Skip("no proxy running")
    levels = []
    for lvl in b.p.growth_levels:
        if lvl > b.max_proxied:
            b.problem(7, "%d streams asked, %d run: a proxy holds 2 descriptors per connection "
                      "and RLIMIT_NOFILE is %d" % (lvl, b.max_proxied, b.nofile))
            lvl = b.max_proxied
        levels.append(lvl)
    per_conn = {l: max(b.p.growth_bytes // l, b.p.growth_min_per_conn) for l in levels}
    cpu = {l: b.row(7, "s7.cpu.%d" % l, "CPU per MB relayed, %d stream%s" %
                    (l, "s" if l > 1 else ""), "us/MB", "lower", "S7 CPU/MB @%d" % l,
                    targets=PROXIES) for l in levels}
    rate = {l: b.row(7, "s7.rate.%d" % l, "relayed, %d stream%s" % (l, "s" if l > 1 else ""),
                     "MB/s", "higher", "S7 MB/s @%d" % l, targets=PROXIES) for l in levels}
    top = levels[-1]
    mem = b.row(7, "s7.rss.%d" % top, "peak RSS relaying, %d streams" % top, "MiB", "lower",
                "S7 peak RSS @%d" % top, targets=PROXIES)
    for l in levels:
        cpu[l].extra["bytes_per_connection"] = per_conn[l]
    for lvl in levels:
        total = lvl * per_conn[lvl]
        for rnd in range(b.p.rounds):
            for t in rotate(targets, rnd):
                b.check_time()
                inst = b.inst[t]
                client = None
                try:
                    tstart = time.monotonic()
                    base = b.backend_stats()["conns"]
                    client = b.procs.spawn([sys.executable, NETLOAD, "stream",
                                            str(inst.ports["discard"]), str(lvl),
                                            "--bytes", str(per_conn[lvl])],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True, bufsize=1)
                    line = readline(client, b.timeout(120))
                    m = re.match(r"ready ok=(\d+) fail=(\d+)", line or "")
                    if not m:
                        b.problem(7, "%s %d streams: the client did not report (%r)" %
                                  (t, lvl, line))
                        continue
                    ok = int(m.group(1))
                    if int(m.group(2)):
                        b.problem(7, "%s: %s of %d connections failed" % (t, m.group(2), lvl))
                    end = time.monotonic() + 30
                    while b.backend_stats()["conns"] - base < ok and time.monotonic() < end:
                        time.sleep(0.05)
                    want = ok * per_conn[lvl]
                    s0 = b.backend_stats()["discard_bytes"]
                    (u0, k0), t0 = inst.cpu_times(), time.monotonic()
                    client.stdin.write("go\n")
                    client.stdin.flush()
                    peak, got = 0, 0
                    end = t0 + b.timeout(60 + total / 100e6)
                    while time.monotonic() < end:
                        got = b.backend_stats()["discard_bytes"] - s0
                        if got >= want:
                            break
                        peak = max(peak, inst.rss_kib())
                        time.sleep(0.02)
                    (u1, k1), t1 = inst.cpu_times(), time.monotonic()
                    c0, c1 = u0 + k0, u1 + k1
                    cpu[lvl].extra.setdefault("system_share", {}).setdefault(t, []).append(
                        round((k1 - k0) / (c1 - c0), 3) if c1 > c0 else None)
                    peak = max(peak, inst.rss_kib())
                    if got < want:
                        b.problem(7, "%s %d streams: %d of %d bytes relayed before the timeout" %
                                  (t, lvl, got, want))
                    log("  %s %d stream(s): %.0f MB in %.2fs, %.2f CPU s, setup %.1fs" %
                        (t, lvl, got / 1e6, t1 - t0, c1 - c0, t0 - tstart))
                    if got > 0:
                        cpu[lvl].add(t, (c1 - c0) * 1e6 / (got / 1e6))
                        rate[lvl].add(t, got / 1e6 / (t1 - t0))
                    if lvl == top:
                        mem.add(t, peak / 1024)
                    client.stdin.write("close\n")
                    client.stdin.flush()
                    readline(client, 30)
                    readline(client, 30)
                finally:
                    b.procs.stop(client)
                # the next measurement starts from no connections
                end = time.monotonic() + 20
                while time.monotonic() < end and b.backend_stats()["conns"] > 0:
                    time.sleep(0.1)
            log("scenario 7: %d stream%s, round %d/%d done" % (lvl, "s" if lvl > 1 else "", rnd + 1,
                                                           b.p.rounds))


SCENARIOS = [
    (1, "request/response (redis-benchmark PING_MBULK)", s1_request_response),
    (2, "bulk (iperf3)", s2_bulk),
    (3, "connection rate (redis-benchmark -k 0)", s3_connection_rate),
    (4, "idle memory per connection", s4_idle_memory),
    (5, "TLS handshakes and bulk", s5_tls),
    (6, "scale: 1,000 SNI definitions (tcpgate only)", s6_scale),
    (7, "growth: CPU per MB at 1..10,000 streams", s7_growth),
]


# ------------------------------------------------------------- reporting

def print_table(b, machine, versions, out=sys.stdout):
    w = out.write
    w("\n")
    w("machine: %d cores, %s, %s, %s RAM, RLIMIT_NOFILE %d, load average at start %s\n" %
      (machine["cores"], machine["kernel"], machine["cpu"], machine["memory"], machine["nofile"],
       machine["loadavg_at_start"]))
    for k, v in versions.items():
        w("  %-16s %s\n" % (k, v or "not installed"))
    w("rounds: %d%s; tcpgate --workers %d, HAProxy nbthread %d, nginx worker_processes %d\n" %
      (b.p.rounds, " (quick)" if b.p.quick else "", WORKERS, WORKERS, WORKERS))
    w("cells: median [min-max] of the rounds; ratios are median / HAProxy's median\n\n")
    cols = ["direct", "tcpgate", "haproxy", "nginx"]
    widths = [36, 8, 6] + [21] * 4 + [8, 8]
    head = ["scenario / figure", "unit", "better"] + cols + ["tg/HA", "ngx/HA"]

    def line(cells):
        parts = []
        for i, c in enumerate(cells):
            parts.append(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]))
        return " ".join(parts).rstrip() + "\n"

    w(line(head))
    w(line(["-" * x for x in widths]))
    last = None
    for r in b.rows:
        if r.scenario != last:
            title = next(t for i, t, _f in SCENARIOS if i == r.scenario)
            w("%d %s\n" % (r.scenario, title))
            last = r.scenario
        cells = ["  " + r.label, r.unit, r.better]
        for t in cols:
            cells.append(cell(r, t) if t in r.targets else "")
        for t in ("tcpgate", "nginx"):
            x = r.ratio(t)
            cells.append("%.2fx" % x if x is not None else "-")
        w(line(cells))
        if "ratio_to_1_definition" in r.extra:
            w("  (1,000 definitions / 1 definition: %.2fx)\n" % r.extra["ratio_to_1_definition"])
    w("\n")


def chart(b, machine, png):
    if not b.have("gnuplot"):
        b.problem(0, "gnuplot not installed: no PNG chart (apt-get install gnuplot-nox)")
        return False
    panels = {"higher": [], "lower": []}
    lo, hi = {"higher": 1.0, "lower": 1.0}, {"higher": 1.0, "lower": 1.0}
    for r in b.rows:
        if r.chart_label is None or r.stat("haproxy") is None:
            continue
        vals = []
        for t in TARGETS:
            x = r.ratio(t) if t in r.targets else None
            vals.append("NaN" if x is None else "%.4f" % x)
        for v in vals:
            if v != "NaN":
                lo[r.better] = min(lo[r.better], float(v))
                hi[r.better] = max(hi[r.better], float(v))
        panels[r.better].append('"%s" %s' % (r.chart_label, " ".join(vals)))
    if not panels["higher"] and not panels["lower"]:
        b.problem(0, "no figure with a HAProxy value: no chart")
        return False
    gp = []
    term = "pngcairo size 1600,1100 font 'DejaVu Sans,10'"
    probe = run(["gnuplot", "-e", "set terminal pngcairo"], 10)
    if probe.returncode != 0 or "unknown" in probe.stderr.lower():
        term = "png size 1600,1100"
    title = ("tcpgate, HAProxy and nginx: median / HAProxy's median, %d round%s%s. "
             "%d cores, %s, %s" % (b.p.rounds, "s" if b.p.rounds > 1 else "",
                                   " (quick)" if b.p.quick else "", machine["cores"],
                                   machine["kernel"], machine["cpu"]))
    gp += ["set terminal %s" % term, "set output '%s'" % png,
           "set multiplot layout %d,1 title \"%s\"" %
           (len([k for k in panels if panels[k]]), title.replace('"', "'")),
           "set style data histograms", "set style histogram clustered gap 1",
           "set style fill solid 0.85 border -1", "set boxwidth 0.9",
           "set datafile missing 'NaN'", "set grid ytics", "set termoption noenhanced",
           "set logscale y 2", "set ytics ('1/8' 0.125, '1/4' 0.25, '1/2' 0.5, '1' 1, '2' 2, "
           "'4' 4, '8' 8, '16' 16, '32' 32, '64' 64)",
           "set xtics rotate by -25 scale 0 font ',9' nomirror", "set key top left horizontal",
           "set rmargin 9", "set bmargin 5",
           "set ylabel 'ratio to HAProxy (log scale)'"]
    for better, rows in panels.items():
        if not rows:
            continue
        dat = os.path.join(b.work, "chart-%s.dat" % better)
        with open(dat, "w") as f:
            f.write("\n".join(rows) + "\n")
        gp += ["set title '%s is better (%s)'" %
               (better, "rates, throughput" if better == "higher"
                else "latency, memory per connection, CPU per MB"),
               "set xrange [-0.6:%f]" % (len(rows) - 0.4),
               # log2 axis: bars start at the bottom; room above for labels and key
               "set yrange [%g:%g]" % (2 ** min(-1, math.floor(math.log2(lo[better]))),
                                       2 ** max(2, math.ceil(math.log2(hi[better] * 2.5)))),
               ("plot '%s' using 2:xtic(1) title 'direct' lc rgb '#b0b0b0', "
                "'' using 3 title 'tcpgate' lc rgb '#1f77b4', "
                "'' using 4 title 'HAProxy (=1)' lc rgb '#ff7f0e', "
                "'' using 5 title 'nginx' lc rgb '#2ca02c', "
                "1 with lines dt 2 lc rgb 'black' notitle") % dat
               + "".join(", '' using ($0%+.1f):%d:(sprintf('%%.2f', $%d)) with labels rotate by 90 "
                         "left offset 0,0.4 font ',7' notitle" % (off, col, col)
                         for off, col in ((-0.3, 2), (-0.1, 3), (0.3, 5)))]
    gp.append("unset multiplot")
    script = os.path.join(b.work, "chart.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    r = run(["gnuplot", script], 60)
    if r.returncode != 0:
        b.problem(0, "gnuplot failed: %s" % r.stderr.strip()[-300:])
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tcpgate", default=os.path.join(ROOT, "build", "tcpgate"))
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""))
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    args = ap.parse_args()
    rounds = args.rounds or int(os.environ.get("BENCH_ROUNDS") or (1 if args.quick else 3))
    params = Params(args.quick, max(1, rounds))
    only = {int(x) for x in re.split(r"[ ,]+", args.only.strip()) if x} if args.only.strip() else None

    def on_sigterm(_sig, _frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_sigterm)
    # even when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    b = Bench(args, params)
    started = time.time()
    machine = b.machine()
    versions = b.versions()
    log("machine: %d cores, %s, %s" % (machine["cores"], machine["kernel"], machine["cpu"]))
    interrupted = False
    try:
        b.setup()
        for sid, title, fn in SCENARIOS:
            if only and sid not in only:
                continue
            log("scenario %d: %s" % (sid, title))
            b.deadline = time.monotonic() + params.budget[sid]
            t = time.monotonic()
            try:
                fn(b)
            except Skip as e:
                b.problem(sid, "skipped: %s" % e)
            except OutOfTime:
                b.problem(sid, "its time budget (%.0fs) ran out; later rounds were cut" %
                          params.budget[sid])
            except KeyboardInterrupt:
                b.durations[sid] = time.monotonic() - t
                b.problem(sid, "interrupted: the scenario's rows are partial")
                raise
            except Exception as e:  # report it, go on with the next scenario
                b.problem(sid, "failed: %s" % e)
                traceback.print_exc()
            b.durations[sid] = time.monotonic() - t
            log("scenario %d took %.0fs" % (sid, b.durations[sid]))
            for t in PROXIES:  # a proxy that died is reported once
                i = b.inst.get(t)
                if i is not None and i.proc is not None and i.proc.poll() is not None:
                    b.problem(sid, "%s exited (status %s): %s" %
                              (t, i.proc.returncode, tail(i.logpath, 5)))
                    i.proc = None
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything, reporting what was measured")
    except Exception as e:
        b.problem(0, "setup failed: %s" % e)
        traceback.print_exc()
    finally:
        b.teardown()
    total = time.time() - started

    os.makedirs(args.results, exist_ok=True)
    jpath = os.path.join(args.results, "latest.json")
    png = os.path.join(args.results, "latest.png")
    b.work = tempfile.mkdtemp(prefix="tcpgate-bench-chart-")
    try:
        have_png = chart(b, machine, png)
    finally:
        shutil.rmtree(b.work, ignore_errors=True)
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "duration_seconds": round(total, 1), "interrupted": interrupted,
           "machine": machine, "versions": versions, "params": params.as_dict(),
           "workers": WORKERS, "scenario_seconds": {str(k): round(v, 1) for k, v in b.durations.items()},
           "rows": [r.as_dict() for r in b.rows], "problems": b.problems,
           "png": png if have_png else None}
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(b, machine, versions)
    if b.problems:
        print("problems:")
        for p in b.problems:
            print("  [%s] %s" % (p["scenario"] or "setup", p["problem"]))
        print()
    print("scenario durations: " + ", ".join("%d: %.0fs" % (k, v) for k, v in b.durations.items()))
    print("total: %.0fs%s" % (total, " (interrupted)" if interrupted else ""))
    print("json: %s" % jpath)
    print("png:  %s" % (png if have_png else "none (see problems)"))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
