"""The admin API (evhttp on control_api_hostname:control_api_port): /hello
and the status page without a secret, everything else behind
x-tyk-authorization when a secret is set; 404 and 405 as JSON; /tyk/apis
(definitions, targets, load errors), /tyk/health (check details),
/tyk/reload (a new definition serves; a failed reload keeps the running
set); a non-loopback address without a secret is refused at start; port 0
turns the API off."""

import http.client
import json
import os
import re
import socket
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, EchoServer, GatewayTestCase, definition, free_port, free_ports,
                     is_refused, recv_exact, recv_until_eof, run_tool)
from test_healthcheck import FakeRedis, hc_definition

SECRET = "s3cret-admin-key"
PROTECTED = ("/metrics", "/tyk/apis", "/tyk/apis/", "/tyk/health", "/tyk/reload",
             "/tyk/reload/")
DENIED = {"status": "error",
          "message": "Attempted administrative access with invalid or missing key!"}


def request(port, method, path, headers=None, host="127.0.0.1", body=None, timeout=10.0):
    """One request: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def listening_ports(pid):
    """The TCP ports a process listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def echo_once(port, data=b"through the gateway"):
    s = socket.create_connection((HOST, port), timeout=10)
    try:
        s.sendall(data)
        got = recv_exact(s, len(data))
        s.shutdown(socket.SHUT_WR)
        recv_until_eof(s)
        return got
    finally:
        s.close()


class AdminAPITest(GatewayTestCase):

    def start(self, *defs, **kw):
        gw = self.gateway(**kw)
        for d in defs:
            gw.add(d)
        gw.start()
        return gw

    def test_secret(self):
        echo = self.server(EchoServer)
        gw = self.start(definition("one", free_port(), echo.address), config={"secret": SECRET})
        port = gw.admin_port

        # Open to anyone: liveness and the page.
        status, headers, body = request(port, "GET", "/hello")
        self.assertEqual(status, 200, body)
        hello = json.loads(body)
        self.assertEqual((hello["status"], hello["definitions"]), ("pass", 1))
        self.assertRegex(hello["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(request(port, "GET", "/hello?probe=1")[0], 200)
        status, headers, body = request(port, "GET", "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"), headers)
        self.assertIn(b"<html", body.lower())

        for path in PROTECTED:
            with self.subTest(path=path):
                for hdrs in ({}, {"x-tyk-authorization": "wrong"},
                             {"x-tyk-authorization": SECRET[:-1]},
                             {"x-tyk-authorization": SECRET + "x"},
                             {"x-tyk-authorization": ""},
                             {"authorization": SECRET}):
                    status, headers, body = request(port, "GET", path, hdrs)
                    self.assertEqual(status, 403, (hdrs, body))
                    self.assertEqual(headers.get("content-type"), "application/json")
                    self.assertEqual(json.loads(body), DENIED)
                status, headers, body = request(port, "GET", path,
                                                {"X-Tyk-Authorization": SECRET})
                self.assertEqual(status, 200, body)
                if path == "/metrics":
                    self.assertTrue(headers["content-type"].startswith("text/plain"), headers)
                    self.assertIn(b'tcpgate_downstream_cx_total{api_id="one"} 0', body)
                else:
                    self.assertEqual(headers.get("content-type"), "application/json")
                    json.loads(body)
        # Two reloads ran (the two reload paths with the secret), nothing else.
        apis = gw.admin_json("/tyk/apis", SECRET)
        self.assertEqual((apis["reload"]["ok"], apis["reload"]["failed"]), (2, 0))
        self.assertExitClean(gw)

    def test_not_found_and_methods(self):
        echo = self.server(EchoServer)
        gw = self.start(definition("one", free_port(), echo.address), config={"secret": SECRET})
        port = gw.admin_port
        auth = {"x-tyk-authorization": SECRET}
        for path in ("/nope", "/tyk", "/tyk/apiss", "/metrics/", "/tyk/health/x", "/hello/"):
            with self.subTest(path=path):
                for hdrs in ({}, auth):
                    status, headers, body = request(port, "GET", path, hdrs)
                    self.assertEqual(status, 404, body)
                    self.assertEqual(headers.get("content-type"), "application/json")
                    self.assertEqual(json.loads(body), {"status": "error",
                                                        "message": "not found"})
        for method in ("POST", "PUT", "DELETE"):
            for path in ("/tyk/reload", "/hello", "/metrics"):
                with self.subTest(method=method, path=path):
                    status, headers, body = request(port, method, path, auth, body=b"{}")
                    self.assertEqual(status, 405, body)
                    self.assertEqual(headers.get("allow"), "GET")
                    self.assertEqual(json.loads(body)["status"], "error")
        status, headers, _ = request(port, "HEAD", "/hello")
        self.assertEqual((status, headers.get("allow")), (405, "GET"))
        # None of these reloaded anything.
        self.assertEqual(gw.admin_json("/tyk/apis", SECRET)["reload"]["ok"], 0)
        # Every method reaches the API's own handler, not libevent's 501 page.
        for method in ("OPTIONS", "PATCH"):
            with self.subTest(method=method):
                status, headers, body = request(port, method, "/tyk/reload", auth)
                self.assertEqual(status, 405, body)
                self.assertEqual(headers.get("allow"), "GET")
                self.assertEqual(headers.get("content-type"), "application/json")
        self.assertExitClean(gw)

    def test_apis(self):
        echo = self.server(EchoServer)
        p1, p2, p3, dead = free_ports(4)
        gw = self.gateway(config={"secret": SECRET})
        gw.add(definition("alpha", p1, targets=[echo.address, "127.0.0.1:%d" % dead,
                                                echo.address], name="Alpha service"))
        gw.add(definition("beta", p2, echo.address, domain=""))
        # Loaded with a warning: a warning is listed, not an error.
        insecure = "tls://127.0.0.1:%d" % dead
        gw.add(definition("insecure", p3, insecure, proxy={
            "target_url": insecure, "transport": {"ssl_insecure_skip_verify": True}}))
        gw.add('{"api_id": "broken", "listen_port": ', name="broken.json")
        gw.add(definition("zero", 0, echo.address), name="zero.json")
        gw.start()
        self.assertEqual(echo_once(p1), b"through the gateway")
        apis = gw.admin_json("/tyk/apis", SECRET)
        self.assertEqual(apis, gw.admin_json("/tyk/apis/", SECRET))
        by_id = {a["api_id"]: a for a in apis["apis"]}
        self.assertEqual(sorted(by_id), ["alpha", "beta", "insecure"])
        alpha = by_id["alpha"]
        self.assertEqual((alpha["name"], alpha["listen_port"], alpha["protocol"],
                          alpha["file"]),
                         ("Alpha service", p1, "tcp", os.path.join(gw.apps, "alpha.json")))
        # A repeated entry (a weight) is one target.
        self.assertEqual([t["target"] for t in alpha["targets"]],
                         ["tcp://" + echo.address, "tcp://127.0.0.1:%d" % dead])
        for t in alpha["targets"]:
            self.assertEqual((t["state"], t["eligible"], t["check"]), ("unchecked", True, None))
        self.assertEqual(alpha["targets"][0]["cx_total"], 1)
        self.assertEqual(alpha["stats"]["cx_total"], 1)
        self.assertEqual(alpha["stats"]["rx_bytes"], len(b"through the gateway"))
        self.assertEqual(by_id["beta"]["targets"][0]["target"], "tcp://" + echo.address)
        self.assertEqual(by_id["beta"]["stats"]["cx_total"], 0)
        errors = {os.path.basename(e["file"]): e for e in apis["load_errors"]}
        self.assertEqual(sorted(errors), ["broken.json", "insecure.json", "zero.json"],
                         apis["load_errors"])
        self.assertEqual((errors["insecure.json"]["severity"], errors["insecure.json"]["field"]),
                         ("warning", "proxy.transport.ssl_insecure_skip_verify"))
        self.assertEqual(errors["zero.json"]["severity"], "error")
        self.assertEqual(errors["broken.json"]["severity"], "error")
        self.assertEqual(errors["broken.json"]["field"], "(json)")
        self.assertIn("invalid JSON at line 1", errors["broken.json"]["reason"])
        self.assertEqual(errors["zero.json"]["field"], "listen_port")
        self.assertEqual(errors["zero.json"]["file"], os.path.join(gw.apps, "zero.json"))
        self.assertEqual(apis["gateway"]["workers"], 2)
        self.assertEqual(apis["gateway"]["version"],
                         gw.admin_json("/hello")["version"])
        m = gw.metrics(SECRET)
        self.assertEqual((m["tcpgate_definitions"], m["tcpgate_definition_errors"]), (3, 2))
        self.assertEqual(apis["reload"], {"ok": 0, "failed": 0, "last_unix": 0, "last_ok": True,
                                          "last_trigger": "", "last_error": ""})
        self.assertExitClean(gw)

    def test_health(self):
        good = self.server(FakeRedis, "A", "master")
        bad = self.server(FakeRedis, "B", "slave-quit")
        port = free_port()
        gw = self.start(hc_definition("redis", port, [good, bad],
                                      ext={"check_interval": "200ms", "check_fall": 1}))
        gw.wait_for_log(r"target %s is UP" % re.escape(good.address), timeout=5)
        gw.wait_for_log(r"target %s is DOWN" % re.escape(bad.address), timeout=5)
        health = gw.admin_json("/tyk/health")
        by_target = {t["target"]: t for t in health["targets"]}
        self.assertEqual(sorted(by_target), sorted(["tcp://" + good.address,
                                                    "tcp://" + bad.address]))
        up = by_target["tcp://" + good.address]
        down = by_target["tcp://" + bad.address]
        self.assertEqual((up["api_id"], up["state"], up["eligible"], up["failures"],
                          up["transitions"]), ("redis", "up", True, 0, 1), up)
        self.assertGreaterEqual(up["checks"], 1)
        self.assertIsInstance(up["last_duration_ms"], int)
        self.assertEqual((down["api_id"], down["state"], down["eligible"], down["transitions"]),
                         ("redis", "down", False, 1), down)
        self.assertGreaterEqual(down["failures"], 1)
        self.assertEqual(down["checks"], down["failures"])
        self.assertIn('step 4 expect "role:master"', down["last_result"])
        # /tyk/apis has the same check under each target.
        apis = gw.admin_json("/tyk/apis")
        targets = {t["target"]: t for t in apis["apis"][0]["targets"]}
        self.assertEqual((targets["tcp://" + good.address]["state"],
                          targets["tcp://" + bad.address]["state"]), ("up", "down"))
        self.assertEqual(targets["tcp://" + bad.address]["check"]["state"], "down")
        self.assertFalse(targets["tcp://" + bad.address]["eligible"])
        self.assertExitClean(gw)
        self.assertNoServerErrors(good, bad)

    def test_reload(self):
        echo = self.server(EchoServer)
        p1, p2 = free_ports(2)
        gw = self.start(definition("first", p1, echo.address))
        self.assertTrue(is_refused(p2))
        gw.add(definition("second", p2, echo.address))
        status, headers, body = request(gw.admin_port, "GET", "/tyk/reload")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"status": "ok", "message": "reloaded"})
        self.assertEqual(echo_once(p2), b"through the gateway")
        self.assertEqual(echo_once(p1), b"through the gateway")
        self.assertEqual(gw.admin_json("/hello")["definitions"], 2)
        apis = gw.admin_json("/tyk/apis")
        self.assertEqual(sorted(a["api_id"] for a in apis["apis"]), ["first", "second"])
        self.assertGreaterEqual(apis["reload"]["ok"], 1)
        self.assertTrue(apis["reload"]["last_ok"])

        # A definition whose port another process holds: the reload fails
        # and says why; the running definitions keep serving.
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind((HOST, 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        gw.add(definition("third", taken, echo.address))
        status, headers, body = request(gw.admin_port, "GET", "/tyk/reload")
        self.assertEqual(status, 500, body)
        reply = json.loads(body)
        self.assertEqual(reply["status"], "error")
        self.assertIn("port %d: cannot listen" % taken, reply["message"])
        self.assertEqual(echo_once(p1), b"through the gateway")
        self.assertEqual(echo_once(p2), b"through the gateway")
        apis = gw.admin_json("/tyk/apis")
        self.assertEqual(sorted(a["api_id"] for a in apis["apis"]), ["first", "second"])
        self.assertFalse(apis["reload"]["last_ok"])
        self.assertEqual(apis["reload"]["last_error"], reply["message"])
        self.assertGreaterEqual(apis["reload"]["failed"], 1)
        self.assertTrue(any("the running definitions stay" in l for l in gw.lines_at("error")),
                        gw.log_tail())
        # Once the port is free, the same set loads.
        holder.close()
        status, _, body = request(gw.admin_port, "GET", "/tyk/reload")
        self.assertEqual(status, 200, body)
        self.assertEqual(echo_once(taken), b"through the gateway")
        self.assertTrue(gw.admin_json("/tyk/apis")["reload"]["last_ok"])
        self.assertExitClean(gw)
        self.assertEqual(gw.stats("first")["cx_total"], 2)
        self.assertNoServerErrors(echo)

    def test_non_loopback_without_secret_is_refused(self):
        echo = self.server(EchoServer)
        for host, shown in (("0.0.0.0", "0.0.0.0"), ("::", "::"), ("", "every address"),
                            ("192.0.2.1", "192.0.2.1")):
            for secret in (None, ""):
                with self.subTest(host=host, secret=secret):
                    config = {"control_api_hostname": host, "control_api_port": free_port()}
                    if secret is not None:
                        config["secret"] = secret
                    gw = self.gateway(config=config)
                    port = free_port()
                    gw.add(definition("one", port, echo.address))
                    rc, out, err = run_tool(*gw.command()[1:], timeout=10)
                    self.assertEqual(rc, 1, err)
                    self.assertIn("the admin API would listen on %s, which is not a loopback "
                                  "address, without a secret" % shown, err)
                    self.assertNotIn(" started: ", err)
                    self.assertNotIn("listening on", err)

    def test_ipv6_loopback(self):
        """::1 is a loopback address: taken without a secret, and the API
        answers there and only there."""
        echo = self.server(EchoServer)
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no IPv6 loopback")
        gw = self.start(definition("one", free_port(), echo.address),
                        config={"control_api_hostname": "::1"})
        status, _, body = request(gw.admin_port, "GET", "/hello", host="::1")
        self.assertEqual(status, 200, body)
        self.assertTrue(is_refused(gw.admin_port), "the API also listens on 127.0.0.1")
        self.assertExitClean(gw)

    def test_port_zero_disables_the_api(self):
        echo = self.server(EchoServer)
        port = free_port()
        gw = self.start(definition("one", port, echo.address), config={"control_api_port": 0})
        self.assertEqual(echo_once(port), b"through the gateway")
        self.assertEqual(listening_ports(gw.pid), {port})
        self.assertFalse(any("admin API on" in l for l in gw.log_lines()), gw.log_tail())
        self.assertExitClean(gw)

    def test_default_gateway_listens_where_configured(self):
        echo = self.server(EchoServer)
        port = free_port()
        gw = self.start(definition("one", port, echo.address))
        self.assertEqual(listening_ports(gw.pid), {port, gw.admin_port})
        self.assertTrue(any("admin API on 127.0.0.1:%d" % gw.admin_port in l
                            for l in gw.log_lines()), gw.log_tail())
        self.assertExitClean(gw)


if __name__ == "__main__":
    unittest.main(verbosity=2)
