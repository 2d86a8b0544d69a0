"""The status page (GET / on the admin port) as a browser shows it.

A real gateway serves two definitions: one whose only target passes its
health check and carries traffic, one whose only target is down. Debian's
headless Chromium loads the page, runs its script (which fetches /tyk/apis)
and hands back the DOM and a screenshot; the test reads them as a user would:
both APIs listed, the down target marked down and the other up, the byte
counts equal to what /tyk/apis reports, a load error shown, and strings from
definitions shown as text, never as markup.

Chromium is required: without it the test fails (scripts/deps.sh installs it).
CHROMIUM names another binary. With TCPGATE_ARTIFACTS=1 the screenshot is
also copied to tests/integration/artifacts/status_page.png (not committed).

Every wait is bounded; each Chromium run is its own process group, killed
whole when it outlives its time."""

import html.parser
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from harness import (HOST, SANITIZE, GatewayTestCase, ThreadedServer, definition, free_port,
                     free_ports, recv_until_eof, wait_closed)
from redisutil import RedisServer, Sentinel, require_redis

SLACK = 3.0 if SANITIZE else 1.0
HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "artifacts")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WINDOW = (1280, 900)
CHROMIUM_TIMEOUT = 60.0 * SLACK

# A name with markup in it: the page must show it as text.
HOSTILE_NAME = '<img src=x onerror="document.title=1">Orders & <b>co</b>'


def chromium_binary():
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override)
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ---- peers --------------------------------------------------------------------------------


class PongDoubler(ThreadedServer):
    """A connection whose first bytes are PING is a health check: it gets +PONG.
    Any other connection gets every chunk back twice, so a client's bytes out
    are twice its bytes in, and the page's "in" and "out" figures differ."""

    def handle(self, conn, index):
        first = True
        for chunk in self.chunks(conn):
            if first and chunk.startswith(b"PING"):
                conn.sendall(b"+PONG\r\n")
                self.drain(conn)
                return
            first = False
            conn.sendall(chunk + chunk)
        conn.shutdown(socket.SHUT_WR)


# ---- a small DOM ----------------------------------------------------------------------------


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []  # Node or str

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.walk()

    def find_all(self, tag=None, **attrs):
        """Descendants with this tag and these attributes (data_x means data-x;
        a value of True only asks that the attribute be there)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk()
                if (tag is None or n.tag == tag)
                and all((k in n.attrs) if v is True else n.attrs.get(k) == v
                        for k, v in want.items())]

    def find(self, tag=None, **attrs):
        found = self.find_all(tag, **attrs)
        if len(found) != 1:
            raise AssertionError("expected one <%s %s>, found %d" % (tag, attrs, len(found)))
        return found[0]

    def classes(self):
        return (self.attrs.get("class") or "").split()


class DomBuilder(html.parser.HTMLParser):
    VOID = {"meta", "link", "input", "col", "br", "img", "hr", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_dom(text):
    b = DomBuilder()
    b.feed(text)
    b.close()
    return b.root


def png_size(data):
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        raise AssertionError("not a PNG: %r" % data[:16])
    return struct.unpack(">II", data[16:24])


# ---- the test -------------------------------------------------------------------------------


class StatusPageTest(GatewayTestCase):

    def setUp(self):
        self.chromium = chromium_binary()
        if self.chromium is None:
            self.fail("Chromium is needed to test the status page and was not found: install "
                      "Debian's chromium package (scripts/deps.sh does), or set CHROMIUM")
        self.tmp = tempfile.mkdtemp(prefix="tcpgate-page-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.runs = 0

    def browse(self, url, *args):
        """Runs headless Chromium on url; returns its stdout. The run gets its own
        profile and process group; the group is killed when the run ends or times out."""
        self.runs += 1
        profile = os.path.join(self.tmp, "profile-%d" % self.runs)
        log_path = os.path.join(self.tmp, "chromium-%d.log" % self.runs)
        cmd = [self.chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
               "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
               "--user-data-dir=" + profile, "--hide-scrollbars",
               "--window-size=%d,%d" % WINDOW, "--virtual-time-budget=5000"] + list(args) + [url]
        with open(log_path, "wb") as log:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                 start_new_session=True)
            try:
                out, _ = p.communicate(timeout=CHROMIUM_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill_group(p)
                p.communicate(timeout=10)
                raise AssertionError("chromium did not finish within %.0f s: %s"
                                     % (CHROMIUM_TIMEOUT, " ".join(cmd)))
            finally:
                self._kill_group(p)
        if p.returncode != 0:
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            raise AssertionError("chromium exited with %d: %s\n%s" % (p.returncode, " ".join(cmd),
                                                                      tail))
        return out.decode("utf-8", "replace")

    @staticmethod
    def _kill_group(p):
        """Kills what is left of a run (renderer, zygote, ...) by its process group."""
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def wait_for(self, what, probe, timeout):
        deadline = time.monotonic() + timeout * SLACK
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError("%s: not within %.1f s" % (what, timeout * SLACK))
            time.sleep(0.05)

    def apis(self, gw):
        return {a["api_id"]: a for a in gw.admin_json("/tyk/apis")["apis"]}

    def target_state(self, gw, api_id):
        targets = gw.admin_json("/tyk/health")["targets"]
        return [t["state"] for t in targets if t["api_id"] == api_id]

    # ---- the page with data ---------------------------------------------------------------

    def test_page_shows_apis_targets_and_counters(self):
        t0 = time.monotonic()
        peer = self.server(PongDoubler)
        dead = free_port()  # nothing listens here: its checks are refused
        up_port, down_port = free_port(), free_port()
        check = [{"name": "send", "message": "PING\r\n"}, {"name": "expect", "message": "+PONG"}]
        ext = {"check_interval": "200ms", "check_fall": 1, "check_rise": 1}

        up = definition("orders", up_port, targets=[peer.address], ext=ext, name=HOSTILE_NAME)
        up["proxy"]["check_host_against_uptime_tests"] = True
        up["uptime_tests"] = {"check_list": [{"url": peer.address, "timeout": "1s",
                                              "commands": check}]}
        down = definition("billing", down_port, targets=["%s:%d" % (HOST, dead)], ext=ext)
        down["proxy"]["check_host_against_uptime_tests"] = True
        down["uptime_tests"] = {"check_list": [{"url": "%s:%d" % (HOST, dead), "timeout": "1s",
                                                "commands": check}]}

        gw = self.gateway()  # no secret: the page can fetch at once
        gw.add(up)
        gw.add(down)
        gw.add('{"api_id": "broken", "listen_port": "x", "protocol": "tcp"}', name="broken.json")
        gw.start()
        self.wait_for("orders up", lambda: self.target_state(gw, "orders") == ["up"], 10)
        self.wait_for("billing down", lambda: self.target_state(gw, "billing") == ["down"], 10)

        # Traffic: three clients through "orders", one turned away by "billing".
        sizes = [50_000, 70_000, 100_003]
        for n in sizes:
            s = self.connect(up_port, timeout=20)
            s.sendall(b"DATA" + os.urandom(n - 4))
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(len(recv_until_eof(s, timeout=20 * SLACK)), 2 * n)
        s = self.connect(down_port, timeout=10)
        self.assertIn(wait_closed(s, 10 * SLACK), ("eof", "reset"))
        rx, tx = sum(sizes), 2 * sum(sizes)

        def settled():
            o, b = (self.apis(gw)[k]["stats"] for k in ("orders", "billing"))
            return ((o["cx_active"], o["rx_bytes"], o["tx_bytes"]) == (0, rx, tx)
                    and (b["cx_total"], b["cx_active"]) == (1, 0))

        self.wait_for("counters settled", settled, 10)

        url = "http://%s:%d/" % (HOST, gw.admin_port)
        dom_text = self.browse(url, "--dump-dom")
        shot = os.path.join(self.tmp, "status_page.png")
        self.browse(url, "--screenshot=" + shot)
        api = self.apis(gw)  # after both runs: what the page showed must still be it

        dom = parse_dom(dom_text)
        # The script ran and the fetch worked.
        self.assertNotIn("hidden", dom.find(id="content").attrs, "data section still hidden")
        self.assertIn("hidden", dom.find(id="error").attrs,
                      "error banner shown: %r" % dom.find(id="error").text())
        self.assertIn("hidden", dom.find(id="auth").attrs, "secret form shown without a secret")
        self.assertRegex(dom.find(id="updated").text(), r"^updated \d\d:\d\d:\d\d$")

        # Both APIs, each with its target row coloured by state.
        for api_id, state, target in (("orders", "up", "tcp://" + peer.address),
                                      ("billing", "down", "tcp://%s:%d" % (HOST, dead))):
            self.assertEqual(api[api_id]["targets"][0]["target"], target)
            body = dom.find("tbody", data_api=api_id)
            self.assertIn(api_id, body.find("tr", **{"class": "api-head"}).text())
            row = body.find("tr", data_target=target)
            self.assertEqual(row.attrs.get("data-state"), state)
            self.assertIn("state-" + state, row.classes())
            self.assertEqual(row.find("td", data_field="state").text(), state.upper())
            self.assertEqual(row.find("td", data_field="eligible").text(),
                             "yes" if state == "up" else "no")
            check = api[api_id]["targets"][0]["check"]
            self.assertEqual(row.find("td", data_field="last_result").text(), check["last_result"])
            self.assertEqual(row.find("td", data_field="transitions").text(),
                             "{:,}".format(check["transitions"]))
        self.assertEqual(dom.find("tr", data_target="tcp://%s:%d" % (HOST, dead))
                         .find("td", data_field="last_result").text()[:8], "connect:")

        # The totals rows show the very numbers of /tyk/apis, which are the traffic sent.
        self.assertEqual((api["orders"]["stats"]["rx_bytes"], api["orders"]["stats"]["tx_bytes"]),
                         (rx, tx))
        for api_id in ("orders", "billing"):
            total = dom.find("tbody", data_api=api_id).find("tr", **{"class": "total"})
            for field in ("rx_bytes", "tx_bytes", "cx_total", "cx_active", "connect_fail"):
                self.assertEqual(total.find("td", data_field=field).text(),
                                 "{:,}".format(api[api_id]["stats"][field]),
                                 "%s %s" % (api_id, field))
        self.assertEqual(dom.find("tbody", data_api="orders").find("tr", **{"class": "total"})
                         .find("td", data_field="rx_bytes").text(), "220,003")

        # The broken file is listed among the load errors.
        errors = dom.find(id="load-error-table").find_all("tr", data_severity="error")
        self.assertTrue(any("broken.json" in r.text() and "listen_port" in r.text()
                            for r in errors), [r.text() for r in errors])

        # Markup in a definition's name is shown as text and runs nothing.
        self.assertIn(HOSTILE_NAME, dom.find("tbody", data_api="orders").text())
        self.assertEqual(dom.find_all("img"), [])
        head = dom.find("tbody", data_api="orders").find("tr", **{"class": "api-head"})
        self.assertEqual([n.tag for n in head.walk()], ["th", "span"])
        self.assertEqual(dom.find("title").text(), "tcpgate status")
        self.assertNotIn("<b>co</b>", dom_text)

        # The traffic chart is an inline SVG with its two series.
        self.assertEqual(len(dom.find(id="chart").find_all("polyline")), 2)

        # The screenshot: a real PNG of the window, with more than a blank page in it.
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png_size(png), WINDOW)
        self.assertGreater(len(png), 20_000, "screenshot of %d bytes looks blank" % len(png))
        if os.environ.get("TCPGATE_ARTIFACTS", "").strip().lower() in ("1", "on", "true", "yes"):
            os.makedirs(ARTIFACTS, exist_ok=True)
            shutil.copyfile(shot, os.path.join(ARTIFACTS, "status_page.png"))

        self.assertExitClean(gw)
        self.assertNoServerErrors(peer)
        self.assertLess(time.monotonic() - t0, 120 * SLACK)

    # ---- the page with sentinels -----------------------------------------------------------

    def test_page_shows_what_the_sentinels_say(self):
        require_redis()
        node_port, spare_port, sentinel_port, listen = free_ports(4)
        node = RedisServer(node_port)
        self.addCleanup(node.close)
        node.start()
        sentinel = Sentinel(sentinel_port, "pagemaster", node_port, quorum=1)
        self.addCleanup(sentinel.close)
        sentinel.start()
        # Two listed targets: the master, and a port the sentinel never names.
        gw = self.gateway()
        gw.add({"api_id": "cache", "listen_port": listen, "protocol": "tcp",
                "proxy": {"target_list": [node.address, "%s:%d" % (HOST, spare_port)]},
                "tcpgate": {"sentinel": {"master_name": "pagemaster",
                                         "addrs": [sentinel.address]}}})
        gw.start()
        self.wait_for("the sentinel's verdict",
                      lambda: self.apis(gw)["cache"]["sentinel"]["state"] == "ok", 10)
        dom = parse_dom(self.browse("http://%s:%d/" % (HOST, gw.admin_port), "--dump-dom"))
        body = dom.find("tbody", data_api="cache")
        summary = body.find("td", data_field="sentinel-summary").text()
        self.assertIn("Sentinel pagemaster (master): ok", summary)
        self.assertIn("master %s" % node.address, summary)
        self.assertEqual(body.find("span", data_field="sentinels-up").text(), "sentinels up 1/1")
        named = body.find("tr", data_target="tcp://" + node.address)
        self.assertEqual(named.attrs.get("data-state"), "up")
        self.assertEqual(named.find("td", data_field="sentinel").text(), "master (1)")
        other = body.find("tr", data_target="tcp://%s:%d" % (HOST, spare_port))
        self.assertEqual(other.attrs.get("data-state"), "down")
        cell = other.find("td", data_field="sentinel")
        self.assertEqual(cell.text(), "not named")
        self.assertIn("the sentinels name %s" % node.address, cell.attrs.get("title"))
        self.assertExitClean(gw)

    # ---- the page with a secret -----------------------------------------------------------

    def test_secret_guards_the_data_and_the_page_asks_for_it(self):
        peer = self.server(PongDoubler)
        gw = self.gateway(config={"secret": "s3cret"})
        gw.add(definition("orders", free_port(), peer.address))
        gw.start()

        status, _, body = gw.admin("/tyk/apis")
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(body)["status"], "error")
        status, _, _ = gw.admin("/tyk/apis", secret="wrong")
        self.assertEqual(status, 403)
        status, _, body = gw.admin("/tyk/apis", secret="s3cret")
        self.assertEqual(status, 200)
        self.assertEqual([a["api_id"] for a in json.loads(body)["apis"]], ["orders"])

        # The page itself needs no secret; it holds no data and asks for the secret.
        status, headers, page = gw.admin("/")
        self.assertEqual(status, 200)
        self.assertIn("default-src 'self'", headers.get("Content-Security-Policy", ""))
        self.assertNotIn(b"orders", page)
        dom = parse_dom(self.browse("http://%s:%d/" % (HOST, gw.admin_port), "--dump-dom"))
        self.assertNotIn("hidden", dom.find(id="auth").attrs, "no secret form")
        self.assertIn("secret", dom.find(id="auth-message").text())
        self.assertIn("hidden", dom.find(id="content").attrs)
        self.assertEqual(dom.find_all(data_api=True), [])
        self.assertExitClean(gw)


if __name__ == "__main__":
    unittest.main(verbosity=2)
