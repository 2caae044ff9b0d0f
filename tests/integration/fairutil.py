"""
Helpers for the fair-queuing and upstream-feedback tests (test_fairness.py).

  ScriptedUpstream   a harness.Upstream whose answers a test scripts per request: a function
                     (request, index) -> None (the harness's usual answer) or
                     (status, [(name, value)], body or None for the JSON echo). It records
                     when each scripted answer was written (`answers`).
  SrcClient          a harness.RawClient that connects from a chosen source address
                     (127.0.0.2 is a second "client machine" on loopback)
  wait_all_read()    like harness.wait_all_read, for clients of any loopback source address
  fair_config()      harness.simple_config plus fairness / feedback / retry and route keys
  ratelimit()        parse a RateLimit or RateLimit-Policy field: ("key", {"r": 4, "t": 1})
  keys_of()          the key ("k" query parameter, or a header) of each recorded request
"""

import re
import socket
import time
import urllib.parse

import harness


class ScriptedUpstream(harness.Upstream):
    """upstream = ScriptedUpstream(script).start(); script(req, index) is called in the
    upstream's thread for every request, index = 0, 1, ... in arrival order."""

    def __init__(self, script=None, **kw):
        super().__init__(**kw)
        self.script = script
        self._n = 0
        self.answers = []  # (index, monotonic time just before the write, status, target)

    async def _respond(self, req, writer):
        idx = self._n
        self._n += 1
        ans = self.script(req, idx) if self.script is not None else None
        if ans is None:
            return await super()._respond(req, writer)
        status, headers, body = ans
        keep = self._wants_keepalive(req)
        if body is None:
            body = self._echo_json(req)
        self.answers.append((idx, time.monotonic(), status, req.target))
        await self._send(writer, status, list(headers), body, keep)
        return keep


# --------------------------------------------------------------------------- clients

def _proc_addr(ip, port):
    """An IPv4 address:port as /proc/net/tcp writes it (address in host byte order)."""
    return "%s:%04X" % (socket.inet_aton(ip)[::-1].hex().upper(), port)


def _unread(text, sock, server_port):
    """Bytes sent on client socket `sock` that the server side has not read yet, from a
    /proc/net/tcp text (0 when its entry is gone: closed, so handled)."""
    src_ip, src_port = sock.getsockname()[:2]
    key = "%s %s " % (_proc_addr("127.0.0.1", server_port), _proc_addr(src_ip, src_port))
    i = text.find(key)
    if i < 0:
        return 0
    fields = text[i:text.find("\n", i)].split()
    return int(fields[3].split(":")[1], 16)


def server_has_read(sock, server_port):
    """harness.server_has_read for a client socket bound to any 127.x source address."""
    with open("/proc/net/tcp") as f:
        return _unread(f.read(), sock, server_port) == 0


def wait_all_read(clients, timeout=10.0):
    """Wait until sluice has read every client's request (one read of /proc/net/tcp per
    poll, however many clients)."""
    def done():
        with open("/proc/net/tcp") as f:
            text = f.read()
        return all(_unread(text, c.sock, c.port) == 0 for c in clients)
    harness.wait_until(done, timeout, interval=0.002,
                       what="sluice to read %d requests" % len(clients))
    return clients


class SrcClient(harness.RawClient):
    """A RawClient connecting from `src` (a loopback address) to sluice on 127.0.0.1."""

    def __init__(self, port, src="127.0.0.1", timeout=harness.DEFAULT_TIMEOUT):
        self.port = port
        self.src = src
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0))
        self.sock.settimeout(timeout)
        self._f = None
        self.t_sent = None

    def wait_read(self, timeout=5.0):
        wait_all_read([self], timeout)
        return self


def send_all(port, requests, src="127.0.0.1"):
    """Open one SrcClient per (path, headers) and send it; returns the clients (not yet
    known to be read: use wait_all_read)."""
    out = []
    for path, headers in requests:
        out.append(SrcClient(port, src).send(path, headers=headers))
    return out


def responses(clients):
    """Read every client's answer (in order), close them; returns the Responses."""
    out = []
    try:
        for c in clients:
            out.append(c.response())
    finally:
        harness.close_all(clients)
    return out


# --------------------------------------------------------------------------- config

def fair_config(upstream_url, *, fairness=None, feedback=None, retry=None, route=None,
                extra_routes=(), admin_port=None, **kw):
    """harness.simple_config with the fair-queuing sections added: `fairness`, `feedback`,
    `retry` go into upstream "api", `route` updates the /api/ route, `extra_routes` are
    more routes to upstream "api" (dicts, strip_prefix true unless they say otherwise)."""
    cfg = harness.simple_config(upstream_url, **kw)
    up = cfg["upstreams"]["api"]
    if fairness is not None:
        up["fairness"] = fairness
    if feedback is not None:
        up["feedback"] = feedback
    if retry is not None:
        up["retry"] = retry
    if route:
        cfg["routes"][0].update(route)
    for r in extra_routes:
        rr = {"strip_prefix": True, "upstream": "api"}
        rr.update(r)
        cfg["routes"].append(rr)
    if admin_port is not None:
        cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    return cfg


# --------------------------------------------------------------------------- parsing

_ITEM = re.compile(r'^"([^"]*)"((?:;[a-z]+=[0-9]+)*)$')


def ratelimit(value):
    """'"key";r=4;t=1' -> ("key", {"r": 4, "t": 1}); AssertionError when malformed."""
    assert value is not None, "no RateLimit field"
    m = _ITEM.match(value.strip())
    assert m, "malformed RateLimit field: %r" % value
    params = {}
    for p in m.group(2).split(";")[1:]:
        k, _, v = p.partition("=")
        params[k] = int(v)
    return m.group(1), params


def query_of(req):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req.target).query))


def tag(req, name="k"):
    """The query parameter `name` of a recorded upstream request."""
    return query_of(req).get(name)


def admin_get(admin_port, path):
    return harness.http_request(admin_port, "GET", path, timeout=5)


def metric_samples(admin_port):
    """/metrics as {(name, frozenset(labels.items())): float}."""
    r = admin_get(admin_port, "/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "bad exposition line %r" % line
        labels = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def metric_sum(samples, name, **labels):
    tot = 0.0
    for (n, ls), v in samples.items():
        if n == name and all((k, v2) in ls for k, v2 in labels.items()):
            tot += v
    return tot
