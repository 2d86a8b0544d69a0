#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, tests/fuzz/corpus/<target>/,
and their libFuzzer dictionaries, tests/fuzz/dict/<target>.dict.

The seeds come from what the unit tests already exercise: the string literals
of tests/unit/*.c (definitions, configs, PROXY lines, durations, targets, check
commands and answers), the fixtures of tests/fixtures/ and the example
definitions of apidefs/examples/. Binary inputs the unit tests assemble byte by
byte (PROXY v2 headers, ClientHellos split into records, check scripts) are
assembled here the same way.

Each seed is named seed-<sha1 prefix>. Running the script again rewrites the
seed-* files and leaves every other file alone, such as the inputs of fixed
findings (finding-*), which stay as regression cases. At most MAX_PER_TARGET
seeds are kept per target, spread evenly over what was found.

The dictionaries list the words a parser compares input against, which
mutations alone rarely hit: the field names the JSON parsers look up (taken
from their sources), PROXY keywords, duration units and target schemes.
"""
import hashlib
import pathlib
import re
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
DICTS = ROOT / "tests" / "fuzz" / "dict"
MAX_PER_TARGET = 40

# ---- C string literals -------------------------------------------------------------

_TOKEN = re.compile(
    r'//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[A-Za-z_]\w*|\S',
    re.S,
)
_ESC = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, '"': 34,
        "'": 39, "?": 63}


def c_unescape(body):
    """The bytes of one C string literal's body."""
    out = bytearray()
    i = 0
    raw = body.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        e = chr(raw[i + 1])
        if e == "x":
            j = i + 2
            while j < len(raw) and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 2:j], 16) & 0xFF)
            i = j
        elif e in "01234567":
            j = i + 1
            while j < len(raw) and j < i + 4 and chr(raw[j]) in "01234567":
                j += 1
            out.append(int(raw[i + 1:j], 8) & 0xFF)
            i = j
        else:
            out.append(_ESC.get(e, ord(e)))
            i += 2
    return bytes(out)


def c_string_groups(text):
    """Adjacent string literals of C source text (and object-like macros
    standing for one), concatenated as the compiler does:
    [(the few tokens before the group, bytes)]."""
    macros = {}
    for m in re.finditer(r'^#define\s+(\w+)\s+((?:"(?:[^"\\\n]|\\.)*"\s*)+)$', text, re.M):
        macros[m.group(1)] = b"".join(c_unescape(s[1:-1]) for s in
                                      re.findall(r'"(?:[^"\\\n]|\\.)*"', m.group(2)))
    text = re.sub(r"^#.*$", "", text, flags=re.M)
    toks = [t for t in _TOKEN.findall(text) if not t.startswith(("//", "/*"))]
    groups = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.startswith('"') or (t in macros and i + 1 < len(toks) and
                                 (toks[i + 1].startswith('"') or toks[i + 1] in macros)):
            start = i
            parts = []
            while i < len(toks) and (toks[i].startswith('"') or toks[i] in macros):
                parts.append(c_unescape(toks[i][1:-1]) if toks[i].startswith('"')
                             else macros[toks[i]])
                i += 1
            groups.append((toks[max(0, start - 8):start], b"".join(parts)))
        else:
            i += 1
    return groups


def unit_groups(name):
    return c_string_groups((UNIT / name).read_text(encoding="utf-8"))


def spread(items, n):
    """At most n of items, evenly spaced, order kept, duplicates dropped."""
    seen, uniq = set(), []
    for it in items:
        if it not in seen:
            seen.add(it)
            uniq.append(it)
    if len(uniq) <= n:
        return uniq
    return [uniq[i * len(uniq) // n] for i in range(n)]


def single_quoted_json(groups):
    """The JSON texts the unit tests write with single quotes."""
    out = []
    for _, b in groups:
        s = b.strip()
        if s.startswith(b"{"):
            out.append(s.replace(b"'", b'"'))
    return out


# ---- PROXY protocol -------------------------------------------------------------------

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def tlv(t, v):
    return struct.pack(">BH", t, len(v)) + v


def pp2(ver_cmd, fam, addr=b"", tlvs=b"", crc=False, tail=b""):
    body = addr + tlvs
    if crc:
        body += tlv(0x03, b"\0\0\0\0")
    hdr = PP2_SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(body)) + body
    if crc:
        hdr = hdr[:-4] + struct.pack(">I", crc32c(hdr))
    return hdr + tail


def pp2_seeds():
    v4 = bytes([192, 0, 2, 33, 198, 51, 100, 1]) + struct.pack(">HH", 51515, 6379)
    v6 = (bytes.fromhex("20010db8000000000000000000000001") +
          bytes.fromhex("20010db8000000010000000000000002") + struct.pack(">HH", 443, 8443))
    ssl = tlv(0x20, bytes([0x07, 0, 0, 0, 0]) + tlv(0x21, b"TLSv1.3") +
              tlv(0x22, b"client.example") + tlv(0x23, b"TLS_AES_128_GCM_SHA256"))
    return [
        pp2(0x20, 0x00),                                    # LOCAL
        pp2(0x20, 0x11, v4),                                # LOCAL with addresses
        pp2(0x21, 0x11, v4),                                # PROXY over TCP4
        pp2(0x21, 0x11, v4, tail=b"*1\r\n$4\r\nPING\r\n"),  # and a request after it
        pp2(0x21, 0x21, v6),                                # TCP6
        pp2(0x21, 0x00),                                    # UNSPEC
        pp2(0x21, 0x31, bytes(216)),                        # UNIX
        pp2(0x21, 0x12, v4),                                # datagrams
        pp2(0x21, 0x11, v4, tlv(0x01, b"h2") + tlv(0x02, b"db.example.com")),
        pp2(0x21, 0x11, v4, tlv(0x05, bytes(range(32))) + tlv(0x04, b"\0" * 8)),
        pp2(0x21, 0x11, v4, ssl),
        pp2(0x21, 0x11, v4, tlv(0x02, b"db.example.com"), crc=True),
        pp2(0x20, 0x00, crc=True),
        pp2(0x21, 0x11, v4, tlv(0xE0, b"custom") + tlv(0x30, b"netns") + tlv(0xE1, b"")),
        pp2(0x21, 0x11, v4[:8]),                            # shorter than the addresses
        pp2(0x21, 0x11, v4, b"\x01\x00\x05ab"),             # a TLV past the end
    ]


def proxyproto_seeds():
    lines = [b for _, b in unit_groups("test_gw_proxyproto.c")
             if b.startswith(b"PROXY")]
    return spread(lines, MAX_PER_TARGET - 16) + pp2_seeds()


# ---- ClientHello ----------------------------------------------------------------------


def split_records(rec, n):
    """One ClientHello record re-wrapped into n records."""
    body = rec[5:5 + (rec[3] << 8 | rec[4])]
    size = -(-len(body) // n)
    out = b""
    for i in range(0, len(body), size):
        chunk = body[i:i + size]
        out += rec[:3] + struct.pack(">H", len(chunk)) + chunk
    return out + rec[5 + len(body):]


def clienthello_seeds():
    fixtures = sorted((FIXTURES / "clienthello").glob("*.bin"))
    recs = [f.read_bytes() for f in fixtures]
    seeds = list(recs)
    for r in recs:
        seeds.append(split_records(r, 2))
    seeds.append(split_records(recs[0], 7))
    seeds.append(recs[0] + b"\x17\x03\x03\x00\x01x")     # bytes after the ClientHello
    seeds.append(recs[0][:len(recs[0]) // 2])           # cut short
    seeds.append(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    seeds.append(b"\x16\x03\x01\x00\x00")               # a record of length 0
    return seeds


# ---- definitions and configs ------------------------------------------------------------


def api_def_seeds():
    files = sorted((ROOT / "apidefs" / "examples").glob("*.json")) + [FIXTURES / "api_full.json"]
    seeds = [f.read_bytes() for f in files]
    found = (single_quoted_json(unit_groups("test_api_def.c")) +
             single_quoted_json(unit_groups("test_api_loader.c")))
    return seeds + spread(found, MAX_PER_TARGET - len(seeds))


def gw_config_seeds():
    seeds = [(FIXTURES / "gw_full.json").read_bytes()]
    found = single_quoted_json(unit_groups("test_gw_config.c"))
    return seeds + spread(found, MAX_PER_TARGET - 1)


# ---- check scripts ------------------------------------------------------------------------

KINDS = {"API_CMD_SEND": 0, "API_CMD_EXPECT": 1, "API_CMD_EXPECT_NOT": 2,
         "API_CMD_EXPECT_REGEX": 3, "API_CMD_EXPECT_NOT_REGEX": 4}


def hc_input(cmds, answer):
    """The fuzz target's layout: a count, then kind, length and message per
    command, then the answer."""
    out = bytes([len(cmds)])
    for kind, msg in cmds:
        out += bytes([kind, min(len(msg), 255)]) + msg[:255]
    return out + answer


def hc_script_seeds():
    text = (UNIT / "test_hc_script.c").read_text(encoding="utf-8")
    seeds = []
    # One test function at a time: its commands, then each answer it judges.
    for body in re.split(r"\nstatic void test_", text)[1:]:
        groups = c_string_groups(body)
        cmds, answers = [], []
        for before, b in groups:
            kind = next((KINDS[t] for t in reversed(before) if t in KINDS), None)
            if kind is not None and any(t in ("FX_ADD_STR", "ONE_STEP") for t in before):
                cmds.append((kind, b))
            elif any(t in ("judge_str", "JUDGE_BYTES") for t in before):
                answers.append(b)
        if not cmds:
            continue
        for a in (answers or [b""])[:4]:
            seeds.append(hc_input(cmds[:8], a))
    seeds.append(hc_input([(0, b"INFO replication\r\n"), (1, b"role:master"),
                           (4, b"role:(slave|replica)")],
                          b"$312\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"))
    return spread(seeds, MAX_PER_TARGET)


# ---- durations, targets and address blocks --------------------------------------------------

CIDRS = [b"10.0.0.0/8", b"127.0.0.1/32", b"192.168.1.1", b"0.0.0.0/0", b"::1/128", b"::1",
         b"fe80::/10", b"2001:db8::/32", b"::/0", b"::ffff:10.0.0.0/104", b"10.0.0.0/33",
         b"1.2.3.4/", b"1.2.3.4/024"]


def duration_target_seeds():
    found = []
    for name in ("test_api_duration.c", "test_api_target.c"):
        for before, b in unit_groups(name):
            # The second literal of a call is what an error must mention, not an input.
            needle = len(before) >= 2 and before[-1] == "," and before[-2].startswith('"')
            if 0 < len(b) <= 100 and b"%" not in b and b"\n" not in b and not needle:
                found.append(b)
    return spread(found, MAX_PER_TARGET - len(CIDRS)) + CIDRS


# ---- Sentinel replies and events ----------------------------------------------------------


def resp(x):
    """RESP2 bytes of a value: bytes/str bulk, int integer, None nil, list array."""
    if x is None:
        return b"*-1\r\n"
    if isinstance(x, int):
        return b":%d\r\n" % x
    if isinstance(x, list):
        return b"*%d\r\n" % len(x) + b"".join(resp(e) for e in x)
    if isinstance(x, str):
        x = x.encode()
    return b"$%d\r\n%s\r\n" % (len(x), x)


def flat(d):
    out = []
    for k, v in d.items():
        out += [k, str(v)]
    return out


def sentinel_answer(ip, port, epoch, flags="master", failover=None, replicas=()):
    m = {"name": "mymaster", "ip": ip, "port": port, "flags": flags, "config-epoch": epoch}
    if failover:
        m["failover-state"] = failover
    reps = [flat({"ip": rip, "port": rport, "flags": rflags, "master-link-status": link})
            for rip, rport, rflags, link in replicas]
    addr = [ip, str(port)] if ip is not None else None
    return resp(addr) + resp(flat(m)) + resp(reps)


def sentinel_seeds():
    reps = [("10.0.0.2", 6379, "slave", "ok"), ("10.0.0.3", 6379, "s_down,slave", "err")]
    one = sentinel_answer("10.0.0.1", 6379, 3, replicas=reps)
    promoting = sentinel_answer("10.0.0.1", 6379, 3, "master,failover_in_progress",
                                "wait_promotion", reps)
    promoted = sentinel_answer("10.0.0.2", 6379, 4, "master,failover_in_progress",
                               "reconf_slaves", reps)
    events = [b"+switch-master mymaster 10.0.0.1 6379 10.0.0.2 6380",
              b"+selected-slave slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379",
              b"+odown master mymaster 10.0.0.1 6379 #quorum 2/2",
              b"+role-change slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379 new "
              b"reported role is master", b"+tilt #tilt mode entered"]
    seeds = [b"\x00\x00" + one * 3, b"\x02\x03" + one + promoting + one,
             b"\x00\x03" + promoted + promoted + one, b"\x01\x00" + resp(None) + resp("x") * 2,
             b"\x00\x00" + resp(["master", 10, []]) + resp(["slave", "10.0.0.1", 6379,
                                                                "connected", 5]),
             b"\x00\x00" + resp(["message", "+switch-master", events[0][15:].decode()]),
             b"\x00\x00" + b"-ERR No such master with that name\r\n" + resp(None)]
    return seeds + [b"\x00\x00" + e for e in events]


# ---- dictionaries ------------------------------------------------------------------------

JSON_WORDS = [b"{", b"}", b"[", b"]", b":", b",", b'""', b"true", b"false", b"null", b"0", b"-1",
              b"1e999", b"\\u0000", b"\\n"]


def source_words(*names):
    """The identifier-like string literals of parser sources: the keys they read."""
    words = []
    for name in names:
        for _, b in c_string_groups((ROOT / name).read_text(encoding="utf-8")):
            if re.fullmatch(rb"[a-z_][a-z0-9_]*", b):
                words.append(b'"' + b + b'"')
    return words


DICT_WORDS = {
    "proxyproto": [b"PROXY ", b"TCP4", b"TCP6", b"UNKNOWN", b"\r\n", b"255.255.255.255",
                   b"::ffff:", b"65535", PP2_SIG, b"\x21\x11", b"\x20\x00"],
    "api_def": JSON_WORDS + source_words("apidefs/api_def.c", "apidefs/api_json.c") +
    [b'"tcp://"', b'"tls://"', b'"5s"', b'"1.3"', b"771"],
    "gw_config": JSON_WORDS + source_words("gateway/gw_config.c", "apidefs/api_json.c") +
    [b'"1m30s"', b'"1.2"', b"772"],
    "duration_target": [b"ns", b"us", b"\xc2\xb5s", b"ms", b"s", b"m", b"h", b".", b"tcp://",
                        b"tls://", b"[", b"]:", b"::ffff:", b"/", b"::"],
    "sentinel": [b"\r\n", b"*-1\r\n", b"$-1\r\n", b"*2\r\n", b"$9\r\n", b" @ ", b"ip", b"port",
                 b"flags", b"config-epoch", b"failover-state", b"master-link-status", b"ok",
                 b"master", b"slave", b"s_down", b"o_down", b"failover_in_progress",
                 b"disconnected", b"wait_promotion", b"reconf_slaves", b"message", b"subscribe",
                 b"pmessage", b"sentinel", b"+switch-master", b"+selected-slave",
                 b"+promoted-slave", b"+tilt", b"mymaster", b"127.0.0.1", b"6379"],
}


def dict_entry(word):
    """A dictionary line: the word quoted, with libFuzzer's escapes for a quote,
    a backslash and bytes outside printable ASCII."""
    out = ""
    for c in word:
        if c == 0x22 or c == 0x5C:
            out += "\\" + chr(c)
        elif 0x20 <= c < 0x7F:
            out += chr(c)
        else:
            out += "\\x%02x" % c
    return '"' + out + '"'


def write_dicts():
    DICTS.mkdir(parents=True, exist_ok=True)
    for target, words in DICT_WORDS.items():
        lines = [dict_entry(w) for w in spread(words, 400)]
        (DICTS / (target + ".dict")).write_text(
            "# Written by tests/fuzz/make-seeds.py: words the parser compares input with.\n" +
            "\n".join(lines) + "\n")


# ---- main ------------------------------------------------------------------------------------

TARGETS = {
    "proxyproto": proxyproto_seeds,
    "clienthello": clienthello_seeds,
    "api_def": api_def_seeds,
    "gw_config": gw_config_seeds,
    "hc_script": hc_script_seeds,
    "duration_target": duration_target_seeds,
    "sentinel": sentinel_seeds,
}


def main():
    for target, make in TARGETS.items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        seeds = spread(make(), MAX_PER_TARGET)
        for s in seeds:
            (d / ("seed-" + hashlib.sha1(s).hexdigest()[:16])).write_bytes(s)
        print(f"{target}: {len(seeds)} seeds", file=sys.stderr)
    write_dicts()


if __name__ == "__main__":
    main()
