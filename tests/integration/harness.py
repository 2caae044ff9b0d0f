"""
Integration-test harness for sluice: real daemon, real loopback upstream, real clients.

Pieces
  free_port()            a TCP port on 127.0.0.1 that nothing listens on (bind 0, close)
  Upstream               an asyncio HTTP/1.1 server in a background thread that records
                         every request it receives and answers by path (see below)
  Sluice                 one daemon process: writes its YAML, starts SLUICE_BIN -c FILE,
                         waits by polling connect(), stops with SIGTERM, scans stderr
                         for sanitizer reports
  simple_config()        the config dict of one upstream "api" behind route /api/
  to_yaml()              dict -> YAML text (a small emitter, no third-party module)
  http_request()         one request with http.client, returns a Response
  raw_request()          bytes on a raw socket, returns the parsed Response
  read_response()        parse one HTTP/1.1 response from a binary file object
  aio_request()          the asyncio client used for load and concurrency
  max_in_window()        the most arrivals inside any window of a given length

Upstream behaviours are chosen by the LAST path segment of the request target
(so they work whatever prefix sluice adds or strips), with arguments in the query:

  .../status/NNN          answer status NNN (JSON echo body, none for 204/304)
  .../slow?ms=N           wait N ms, then the JSON echo
  .../garbage             write bytes that are not HTTP, then close
  .../close               close the connection without answering
  .../stream?bytes=N      chunked response of N pattern bytes, written in 64 KiB pieces
                          (&piece=N to change the piece size, &delay_ms=N between pieces)
  .../big?bytes=N         Content-Length response of N pattern bytes
  .../headers             a response carrying hop-by-hop headers plus X-Normal: yes
  .../echo                200 with the raw request body as the response body
  .../raw?s=NAME          the bytes registered with upstream.script(NAME, ...), verbatim
  anything else           200 JSON {method, target, headers, body_len, body_sha256, conn_id}

Scripted raw answers, for responses that are not (or not quite) HTTP:

  upstream.script(NAME, *pieces, close=False, delay=0) -> "raw?s=NAME"
      A request whose last path segment is `raw` with ?s=NAME (any method, HEAD too) is
      answered by writing each piece (bytes) as it is, one write each, waiting `delay`
      seconds between two pieces; nothing is added (no status line, no length, no CRLF).
      Then the connection is closed (close=True), or it keeps serving further requests
      normally (close=False), whatever the request's Connection header said. The return
      value is the path tail to request: sluice.url("/api/" + upstream.script(...)).
      An unknown NAME is answered 500 and recorded in upstream.errors.

Raw bytes received: every byte the upstream reads is recorded per TCP connection before it
is parsed, so a test can check that nothing of a refused request arrived, or that a
forwarded request line is exactly the expected one:

  upstream.raw            {conn_id: bytes}, in connection order (conn_id as in Request);
                          plain TCP only (tlsutil.TlsUpstream records none)
  upstream.raw_received() every connection's bytes, concatenated in connection order
  upstream.wait_raw(b)    block until bytes b appear on some connection

The pattern is pattern_bytes(n): a fixed byte sequence with a long odd period, so a lost,
duplicated or reordered piece changes the sha256.

Every socket operation in this module carries a timeout: pytest's own timeouts are not
available, so nothing here may block forever.
"""

import asyncio
import collections
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SLUICE_BIN = os.environ.get("SLUICE_BIN", os.path.join(REPO, "build", "asan", "sluice"))

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                      "ERROR: UndefinedBehaviorSanitizer")

DEFAULT_TIMEOUT = 10.0


# --------------------------------------------------------------------------- ports

def free_port():
    """A port on 127.0.0.1 that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def down_url(path=""):
    """An upstream url on which nothing listens: connect gets ECONNREFUSED."""
    return "http://127.0.0.1:%d%s" % (free_port(), path)


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.01, what="condition"):
    """Poll pred() until it is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------- pattern

_PERIOD = 1000003  # prime, so no piece size lines up with it
_BLOCK = bytes(((i * 131) ^ (i >> 7)) & 0xFF for i in range(_PERIOD))
_DOUBLE = _BLOCK + _BLOCK


def pattern_slice(offset, n):
    """n pattern bytes starting at offset (n <= _PERIOD)."""
    o = offset % _PERIOD
    return _DOUBLE[o:o + n]


def pattern_chunks(total, piece):
    off = 0
    piece = min(piece, _PERIOD)
    while off < total:
        n = min(piece, total - off)
        yield pattern_slice(off, n)
        off += n


def pattern_bytes(n):
    return b"".join(pattern_chunks(n, _PERIOD))


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n, _PERIOD):
        h.update(c)
    return h.hexdigest()


# --------------------------------------------------------------------------- upstream

class Request:
    """One request as the upstream received it."""

    __slots__ = ("t", "method", "target", "version", "headers", "body", "conn_id")

    def __init__(self, t, method, target, version, headers, body, conn_id):
        self.t = t                # time.monotonic() when the head was complete
        self.method = method
        self.target = target      # path + query as sent by sluice
        self.version = version    # "HTTP/1.1"
        self.headers = headers    # [(name, value)] in order, names as sent
        self.body = body          # bytes
        self.conn_id = conn_id    # int, one per TCP connection

    @property
    def path(self):
        return urllib.parse.urlsplit(self.target).path

    def header(self, name, default=None):
        """The value of the first header called `name` (case-insensitive)."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_names(self):
        return [k.lower() for k, _ in self.headers]

    def __repr__(self):
        return "Request(%s %s conn=%d t=%.3f)" % (self.method, self.target, self.conn_id, self.t)


class _BadRequest(Exception):
    pass


class _RecordingReader(asyncio.StreamReader):
    """A StreamReader that hands every byte it is fed to record(cid, data) first."""

    def __init__(self, cid, record, **kw):
        super().__init__(**kw)
        self.cid = cid
        self._record_raw = record

    def feed_data(self, data):
        self._record_raw(self.cid, data)
        super().feed_data(data)


class Upstream:
    """A loopback HTTP/1.1 origin server in its own thread and event loop.

    upstream = Upstream().start();  upstream.url -> "http://127.0.0.1:PORT"
    upstream.requests       list of Request, in arrival order (a copy)
    upstream.wait_for(n)    block until n requests arrived (AssertionError on timeout)
    upstream.connections    how many TCP connections were accepted
    upstream.errors         exceptions raised while parsing what sluice sent
    upstream.raw            {conn_id: bytes received}, upstream.raw_received(), wait_raw()
    upstream.script(name, *pieces, close=False, delay=0)   a raw answer (module docstring)
    upstream.stop()
    """

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.port = None
        self._want_port = port
        self._reqs = []
        self._cond = threading.Condition()
        self._ids = 0
        self.connections = 0
        self.open_connections = 0
        self.errors = []
        self._loop = None
        self._server = None
        self._thread = None
        self._writers = set()
        self._raw = {}      # conn_id -> bytearray, written in the upstream thread
        self._scripts = {}  # name -> (pieces, close, delay)

    # ----- control from the test thread

    def start(self, timeout=DEFAULT_TIMEOUT):
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(loop.create_server(
                    self._protocol, self.host, self._want_port, reuse_address=True))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # pragma: no cover - reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise AssertionError("upstream did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout=5.0):
        if self._loop is None or self._thread is None:
            return

        async def shutdown():
            self._server.close()
            for w in list(self._writers):
                w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            fut.result(timeout)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def drop_connections(self, timeout=5.0):
        """Close every connection the upstream holds (as an origin's idle timeout would)
        and wait until they are closed."""
        def close_all():
            for w in list(self._writers):
                w.close()
        self._loop.call_soon_threadsafe(close_all)
        wait_until(lambda: self.open_connections == 0, timeout, what="upstream connections closed")

    @property
    def url(self):
        if self.port == 80:
            return "http://%s" % self.host
        return "http://%s:%d" % (self.host, self.port)

    @property
    def hostport(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def requests(self):
        with self._cond:
            return list(self._reqs)

    @property
    def count(self):
        with self._cond:
            return len(self._reqs)

    def times(self):
        return [r.t for r in self.requests]

    def wait_for(self, n, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._reqs) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream got %d requests, waited for %d"
                                         % (len(self._reqs), n))
                self._cond.wait(left)
            return list(self._reqs)

    def conn_ids(self):
        return [r.conn_id for r in self.requests]

    @property
    def raw(self):
        """{conn_id: bytes} of everything received on each connection (a copy)."""
        with self._cond:
            return {cid: bytes(b) for cid, b in sorted(self._raw.items())}

    def raw_received(self):
        """Every byte received, the connections concatenated in the order they opened."""
        return b"".join(self.raw.values())

    def wait_raw(self, needle, timeout=DEFAULT_TIMEOUT):
        """Block until bytes `needle` were received on one connection; returns its id."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for cid, b in sorted(self._raw.items()):
                    if needle in b:
                        return cid
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream never received %r" % needle[:200])
                self._cond.wait(left)

    def script(self, name, *pieces, close=False, delay=0):
        """Register a raw answer (see the module docstring); returns "raw?s=NAME"."""
        with self._cond:
            self._scripts[name] = (tuple(bytes(p) for p in pieces), close, delay)
        return "raw?" + urllib.parse.urlencode({"s": name})

    # ----- the server, in the upstream thread

    def _record(self, req):
        with self._cond:
            self._reqs.append(req)
            self._cond.notify_all()

    def _record_raw(self, cid, data):
        with self._cond:
            self._raw[cid] += data
            self._cond.notify_all()

    def _protocol(self):
        """A new connection (what asyncio.start_server does, with a recording reader):
        the connection id is given here, at accept, so bytes that arrive before _handle
        runs are recorded under it too."""
        self._ids += 1
        cid = self._ids
        with self._cond:
            self._raw[cid] = bytearray()
        reader = _RecordingReader(cid, self._record_raw, limit=1 << 20, loop=self._loop)
        return asyncio.StreamReaderProtocol(reader, self._handle, loop=self._loop)

    async def _handle(self, reader, writer):
        cid = getattr(reader, "cid", None)
        if cid is None:  # a subclass serving with asyncio.start_server (tlsutil): no raw
            self._ids += 1
            cid = self._ids
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    break
                t = time.monotonic()
                try:
                    req = await self._parse(head, reader, t, cid)
                except (_BadRequest, ValueError) as e:
                    self.errors.append("conn %d: %r in %r" % (cid, e, head[:200]))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self._record(req)
                keep = await self._respond(req, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as e:  # a harness bug: keep it visible
            self.errors.append("conn %d: %r" % (cid, e))
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    async def _parse(self, head, reader, t, cid):
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise _BadRequest("request line %r" % lines[0])
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or name != name.strip() or not name:
                raise _BadRequest("header line %r" % line)
            headers.append((name, value.strip()))
        te = [v for k, v in headers if k.lower() == "transfer-encoding"]
        cl = [v for k, v in headers if k.lower() == "content-length"]
        if te and cl:
            raise _BadRequest("both Transfer-Encoding and Content-Length")
        if len(cl) > 1:
            raise _BadRequest("two Content-Length")
        if te:
            if te[-1].split(",")[-1].strip().lower() != "chunked":
                raise _BadRequest("Transfer-Encoding %r" % te)
            body = await self._read_chunked(reader)
        elif cl:
            body = await reader.readexactly(int(cl[0]))
        else:
            body = b""
        return Request(t, method, target, version, headers, body, cid)

    @staticmethod
    async def _read_chunked(reader):
        out = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers
                    tl = await reader.readuntil(b"\r\n")
                    if tl == b"\r\n":
                        return bytes(out)
            out += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequest("chunk not followed by CRLF")

    @staticmethod
    def _wants_keepalive(req):
        conn = ",".join(req.header_all("connection")).lower()
        tokens = [x.strip() for x in conn.split(",")]
        if req.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    @staticmethod
    def _reason(code):
        try:
            return http.HTTPStatus(code).phrase
        except ValueError:
            return "Status"

    def _echo_json(self, req):
        return json.dumps({
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
            "body_len": len(req.body),
            "body_sha256": hashlib.sha256(req.body).hexdigest(),
            "conn_id": req.conn_id,
        }).encode()

    async def _send(self, writer, code, headers, body, keep):
        lines = ["HTTP/1.1 %d %s" % (code, self._reason(code))]
        lines += ["%s: %s" % kv for kv in headers]
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        if not keep:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()

    async def _respond(self, req, writer):
        """Answer req; return True to keep the connection for another request."""
        keep = self._wants_keepalive(req)
        split = urllib.parse.urlsplit(req.target)
        segs = split.path.split("/")
        last = segs[-1]
        q = dict(urllib.parse.parse_qsl(split.query))
        if len(segs) >= 2 and segs[-2] == "status" and last.isdigit():
            code = int(last)
            body = None if code in (204, 304) else self._echo_json(req)
            await self._send(writer, code, [("Content-Type", "application/json")], body, keep)
            return keep
        if last == "slow":
            await asyncio.sleep(int(q.get("ms", "1000")) / 1000.0)
            await self._send(writer, 200, [("Content-Type", "application/json")],
                             self._echo_json(req), keep)
            return keep
        if last == "garbage":
            writer.write(b"\x00\x01\x02 THIS IS NOT HTTP \xff\xfe\r\n\r\nnope\r\n\r\n")
            await writer.drain()
            return False
        if last == "close":
            return False
        if last == "stream":
            n = int(q.get("bytes", "1048576"))
            piece = int(q.get("piece", "65536"))
            delay = int(q.get("delay_ms", "0")) / 1000.0
            head = ("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    "Transfer-Encoding: chunked\r\n%s\r\n"
                    % ("" if keep else "Connection: close\r\n"))
            writer.write(head.encode())
            for c in pattern_chunks(n, piece):
                writer.write(b"%x\r\n" % len(c) + c + b"\r\n")
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep
        if last == "big":
            n = int(q.get("bytes", "1048576"))
            head = ("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Length: %d\r\n%s\r\n" % (n, "" if keep else "Connection: close\r\n"))
            writer.write(head.encode())
            for c in pattern_chunks(n, 65536):
                writer.write(c)
                await writer.drain()
            return keep
        if last == "headers":
            hdrs = [("Connection", "X-Foo, keep-alive"), ("X-Foo", "1"),
                    ("Keep-Alive", "timeout=5, max=100"), ("Proxy-Authenticate", "Basic realm=x"),
                    ("Proxy-Connection", "keep-alive"), ("Trailer", "X-Trail"),
                    ("Upgrade", "h2c"), ("TE", "trailers"), ("X-Normal", "yes")]
            lines = ["HTTP/1.1 200 OK"] + ["%s: %s" % kv for kv in hdrs]
            body = b"headers\n"
            lines.append("Content-Length: %d" % len(body))
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            return keep
        if last == "echo":
            await self._send(writer, 200, [("Content-Type", "application/octet-stream")],
                             req.body, keep)
            return keep
        if last == "raw":
            with self._cond:
                scripted = self._scripts.get(q.get("s"))
            if scripted is None:
                self.errors.append("conn %d: no script %r" % (req.conn_id, q.get("s")))
                await self._send(writer, 500, [], b"no such script\n", False)
                return False
            pieces, close, delay = scripted
            for i, piece in enumerate(pieces):
                if i and delay:
                    await asyncio.sleep(delay)
                writer.write(piece)
                await writer.drain()
            return not close
        await self._send(writer, 200, [("Content-Type", "application/json")],
                         self._echo_json(req), keep)
        return keep


# --------------------------------------------------------------------------- YAML

_PLAIN = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:\-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED and not s.endswith(":"):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 1))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v) if not isinstance(v, (dict, list))
                                         else ("{}" if isinstance(v, dict) else "[]")))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = to_yaml(item, indent + 1).split("\n")
                sub[0] = pad + "- " + sub[0].lstrip()
                out.extend(sub)
            else:
                out.append("%s- %s" % (pad, _scalar(item)))
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(out)


def simple_config(upstream_url, port=None, *, rate="100/s", burst=1, limits=None,
                  max_in_flight=64, queue_size=1000, max_wait="10s", connect="2s",
                  response="10s", keepalive=32, preserve_host=False, path_prefix="/api/",
                  strip_prefix=True, route_host=None, client=None, drain_timeout="5s",
                  log_level="info"):
    """The config of one upstream "api" behind one route; returns a dict to adjust."""
    up = {
        "url": upstream_url,
        "limits": limits if limits is not None else [{"rate": rate, "burst": burst}],
        "max_in_flight": max_in_flight,
        "queue": {"size": queue_size, "max_wait": max_wait},
        "timeouts": {"connect": connect, "response": response},
        "keepalive": keepalive,
        "preserve_host": preserve_host,
    }
    route = {"path_prefix": path_prefix, "strip_prefix": strip_prefix, "upstream": "api"}
    if route_host:
        route["host"] = route_host
    cfg = {
        "listen": [{"address": "127.0.0.1:%d" % (port or free_port())}],
        "drain_timeout": drain_timeout,
        "log_level": log_level,
        "client": client or {"max_connections": 1024, "max_header_size": "8k",
                             "max_body_size": "1m", "timeout": "60s"},
        "upstreams": {"api": up},
        "routes": [route],
    }
    return cfg


# --------------------------------------------------------------------------- daemon

def sanitizer_report(text):
    """The sanitizer lines found in text (empty list when clean)."""
    return [line for line in text.splitlines() if any(p in line for p in SANITIZER_PATTERNS)]


def sanitizer_excerpt(text, before=1500, after=10000):
    """The part of a stderr text around its first sanitizer report, for failure messages."""
    idx = min((text.find(p) for p in SANITIZER_PATTERNS if p in text), default=-1)
    if idx < 0:
        return text[-3000:]
    start = text.rfind("\n", 0, max(0, idx - before)) + 1
    return text[start:idx + after]


def sanitizer_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def scrape(admin_port):
    """GET /metrics on the admin port, read with prometheus_client: {(name,
    frozenset(labels)): value}. (test_ops.scrape also checks the exposition format.)"""
    r = http_request(admin_port, "GET", "/metrics", timeout=5)
    assert r.status == 200, r
    out = {}
    for fam in text_string_to_metric_families(r.body.decode("utf-8")):
        for smp in fam.samples:
            out[(smp.name, frozenset(smp.labels.items()))] = smp.value
    return out


def close_all(clients):
    for c in clients:
        try:
            c.close()
        except OSError:
            pass


def answers(clients):
    """The response of each RawClient, in order; every client closed."""
    try:
        return [c.response() for c in clients]
    finally:
        for c in clients:
            c.close()


# --------------------------------------------------------------------------- reload

RELOAD_OUTCOME = re.compile(r"reloaded |reload failed|reload ignored")


def write_config(s, cfg):
    """Replace s's config file atomically, so a reload never reads half a file."""
    text = to_yaml(cfg) + "\n" if isinstance(cfg, dict) else cfg
    tmp = s.config_path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, s.config_path)


def reload_outcomes(s):
    """The lines in which s said what it did with a SIGHUP, oldest first."""
    return [line for line in s.stderr().splitlines() if RELOAD_OUTCOME.search(line)]


def reload(s, cfg=None, timeout=5.0):
    """Write cfg (when given), send SIGHUP and wait until the daemon logs what it did with
    it; returns that log line. A daemon that dies meanwhile fails at once, with its
    sanitizer report when there is one."""
    if cfg is not None:
        write_config(s, cfg)
    before = len(reload_outcomes(s))
    s.send_signal(signal.SIGHUP)
    lines = wait_until(lambda: s.proc.poll() is not None or reload_outcomes(s)[before:],
                       timeout, interval=0.005,
                       what="the outcome of SIGHUP in %s's log" % s.name)
    if s.proc.poll() is not None:
        raise AssertionError("%s died during a reload:\n%s"
                             % (s.name, sanitizer_excerpt(s.stderr())))
    return lines[0]


def reload_ok(s, cfg=None, timeout=5.0):
    """reload(), which must be applied (`reloaded`)."""
    line = reload(s, cfg, timeout)
    assert "reloaded " in line, "valid reload not applied: %r\n%s" % (line, s.stderr()[-3000:])
    return line


class Sluice:
    """One sluice process.

    s = Sluice(workdir, cfg_dict_or_yaml_text).start()
    s.port, s.pid, s.url("/api/x"), s.stop() -> exit code, s.stderr(), s.check_sanitizers()
    """

    def __init__(self, workdir, config, name="sluice"):
        self.workdir = str(workdir)
        self.name = name
        self.config = config
        if isinstance(config, dict):
            self.port = int(config["listen"][0]["address"].rsplit(":", 1)[1])
            text = to_yaml(config) + "\n"
        else:
            m = re.search(r"address:\s*\"?[\w.\[\]:]*:(\d+)", config)
            self.port = int(m.group(1)) if m else None
            text = config
        self.config_path = os.path.join(self.workdir, name + ".yaml")
        with open(self.config_path, "w") as f:
            f.write(text)
        self.stderr_path = os.path.join(self.workdir, name + ".stderr")
        self.proc = None
        self.returncode = None
        self._stderr_f = None

    def start(self, timeout=DEFAULT_TIMEOUT, wait=True):
        assert os.access(SLUICE_BIN, os.X_OK), "sluice binary not found: %s" % SLUICE_BIN
        self._stderr_f = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([SLUICE_BIN, "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._stderr_f,
                                     stderr=self._stderr_f, env=sanitizer_env())
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("sluice exited with %s before listening:\n%s"
                                     % (self.proc.returncode, self.stderr()[-3000:]))
            if port_accepts(self.port, timeout=0.2):
                return
            if time.monotonic() >= deadline:
                raise AssertionError("sluice not listening on %d after %.0fs:\n%s"
                                     % (self.port, timeout, self.stderr()[-3000:]))
            time.sleep(0.01)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit code or None when still running."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=15.0, sig=signal.SIGTERM):
        """Send SIGTERM (once) and wait; returns the exit code. Kills after `timeout`
        and raises AssertionError so a daemon that ignores SIGTERM is seen."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._close()
                raise AssertionError("sluice did not exit within %.0fs of %s"
                                     % (timeout, signal.Signals(sig).name))
        self.returncode = self.proc.returncode
        self._close()
        return self.returncode

    def _close(self):
        if self._stderr_f:
            self._stderr_f.close()
            self._stderr_f = None

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def check_sanitizers(self):
        bad = sanitizer_report(self.stderr())
        if bad:
            raise AssertionError("sanitizer report in %s stderr (%s):\n%s"
                                 % (self.name, self.stderr_path,
                                    sanitizer_excerpt(self.stderr())))

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)


def run_cli(args, timeout=DEFAULT_TIMEOUT):
    """Run SLUICE_BIN with args; returns CompletedProcess (text). Fails on sanitizer output."""
    assert os.access(SLUICE_BIN, os.X_OK), "sluice binary not found: %s" % SLUICE_BIN
    p = subprocess.run([SLUICE_BIN] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=sanitizer_env())
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    bad = sanitizer_report(out + err)
    assert not bad, "sanitizer report running %s:\n%s" % (args, sanitizer_excerpt(err))
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


# --------------------------------------------------------------------------- clients

class Response:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)]
        self.body = body
        self.version = version

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_names(self):
        return [k.lower() for k, _ in self.headers]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d %s %r body=%r)" % (self.status, self.reason, self.headers,
                                               self.body[:200])


def http_request(port, method, path, headers=None, body=None, timeout=DEFAULT_TIMEOUT,
                 host=None):
    """One request with http.client on a fresh connection. `headers` is a list of pairs;
    Host is sent as `host` (default 127.0.0.1:port) unless headers carry one."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = list(headers or [])
        names = {k.lower() for k, _ in hdrs}
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if "host" not in names:
            conn.putheader("Host", host or "127.0.0.1:%d" % port)
        if body is not None and "content-length" not in names and \
                "transfer-encoding" not in names:
            conn.putheader("Content-Length", str(len(body)))
        for k, v in hdrs:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


def read_response(f, method="GET"):
    """Parse one response from binary file object f (a socket.makefile('rb'))."""
    line = f.readline(65537)
    if not line:
        raise ConnectionError("connection closed before a status line")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    while True:
        h = f.readline(65537)
        if not h:
            raise ConnectionError("connection closed inside the headers")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    resp = Response(status, reason, headers, b"", version)
    te = (resp.header("transfer-encoding") or "").lower()
    cl = resp.header("content-length")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return resp
    if "chunked" in te:
        out = bytearray()
        while True:
            sl = f.readline(1024)
            if not sl:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(sl.split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = f.read(size)
            if len(data) != size:
                raise ConnectionError("short chunk")
            out += data
            f.read(2)
        resp.body = bytes(out)
    elif cl is not None:
        n = int(cl)
        data = f.read(n)
        if len(data) != n:
            raise ConnectionError("short body: %d of %d" % (len(data), n))
        resp.body = data
    else:
        resp.body = f.read()
    return resp


def connect(port, timeout=DEFAULT_TIMEOUT):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def raw_request(port, data, timeout=DEFAULT_TIMEOUT, method="GET"):
    """Send raw bytes on a new connection and parse one response."""
    with connect(port, timeout) as s:
        s.sendall(data)
        with s.makefile("rb") as f:
            return read_response(f, method)


def build_request(method, path, host, headers=(), body=None, close=True):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    lines += ["%s: %s" % kv for kv in headers]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in headers):
        lines.append("Content-Length: %d" % len(body))
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_response_bytes(data, method="GET"):
    import io
    return read_response(io.BytesIO(data), method)


async def aio_request(port, path, method="GET", headers=(), body=None, timeout=DEFAULT_TIMEOUT):
    """One request on a new asyncio connection (Connection: close); returns
    (Response or None, exception or None, monotonic time the answer completed)."""
    writer = None
    try:
        async def go():
            nonlocal writer
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(build_request(method, path, "127.0.0.1:%d" % port, headers, body))
            await writer.drain()
            data = await reader.read()
            return parse_response_bytes(data, method)
        resp = await asyncio.wait_for(go(), timeout)
        return resp, None, time.monotonic()
    except Exception as e:
        return None, e, time.monotonic()
    finally:
        if writer is not None:
            writer.close()


def curl(args, timeout=DEFAULT_TIMEOUT):
    """Run curl -sS with args; returns CompletedProcess (bytes)."""
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout))] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5)


# --------------------------------------------------------------------------- timing

def max_in_window(times, window):
    """The largest number of times t_i inside any half-open window [a, a + window)."""
    ts = sorted(times)
    best = 0
    j = 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


def assert_rate(times, rate, burst, windows=(1.0,), slack=1, shrink=0.02):
    """No window of length w (shrunk by `shrink` s for timer jitter) holds more than
    rate * w + burst (+ slack) arrivals."""
    for w in windows:
        got = max_in_window(times, w - shrink)
        allowed = rate * w + burst + slack
        assert got <= allowed, ("%d arrivals inside a %.2fs window, at most %.1f allowed "
                                "(rate %g/s burst %g)" % (got, w - shrink, allowed, rate, burst))



# --------------------------------------------------------------------------- assertions

def assert_sluice_error(resp, status, reason=None):
    """resp is an error sluice produced: the status, Sluice-Reason (when given) and a
    short text body."""
    assert resp is not None, "no response"
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    if reason is not None:
        assert resp.header("sluice-reason") == reason, \
            "expected Sluice-Reason %s, got %r" % (reason, resp)
    assert 0 < len(resp.body) <= 1024, "error body should be short text: %r" % (resp,)
    text = resp.body.decode("utf-8")  # raises on binary
    assert text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text), text
    ctype = resp.header("content-type")
    assert ctype is None or ctype.lower().startswith("text/"), \
        "error Content-Type should be text: %r" % ctype


def retry_after(resp):
    """The Retry-After of resp as an int; asserts it is an integer >= 1."""
    v = resp.header("retry-after")
    assert v is not None, "no Retry-After in %r" % (resp,)
    assert re.fullmatch(r"[0-9]+", v), "Retry-After not integer seconds: %r" % v
    assert int(v) >= 1, "Retry-After < 1: %r" % v
    return int(v)


def queue_wait_ms(resp):
    v = resp.header("sluice-queue-wait")
    assert v is not None, "no Sluice-Queue-Wait in %r" % (resp,)
    assert re.fullmatch(r"[0-9]+", v), "Sluice-Queue-Wait not integer ms: %r" % v
    return int(v)


# --------------------------------------------------------------------------- raw clients

def server_has_read(sock, server_port):
    """True when the server side of the connection `sock` has read every byte sent on it
    (its receive queue in /proc/net/tcp is empty). sluice handles a request in the
    callback that reads it, so this is how a test knows a request is queued."""
    key = "0100007F:%04X 0100007F:%04X " % (server_port, sock.getsockname()[1])
    with open("/proc/net/tcp") as f:
        text = f.read()
    i = text.find(key)
    if i < 0:
        # the server side exists from the handshake on (even before accept), so no entry
        # means it is closed and gone: handled
        return True
    # "local remote st tx_queue:rx_queue": any state, since a server that answered and
    # closed has read it too
    fields = text[i:text.find("\n", i)].split()
    return int(fields[3].split(":")[1], 16) == 0


def wait_all_read(clients, timeout=5.0):
    """Wait until sluice has read the request of every RawClient in clients."""
    wait_until(lambda: all(server_has_read(c.sock, c.port) for c in clients), timeout,
               interval=0.002, what="sluice to read %d requests" % len(clients))
    return clients


class RawClient:
    """One client connection on a raw socket, for tests that need to know when a request
    was read, or to drop it at a chosen moment.

    c = RawClient(port).send(path)      c.wait_read()   c.response()   c.close()
    """

    def __init__(self, port, timeout=DEFAULT_TIMEOUT):
        self.port = port
        self.sock = connect(port, timeout)
        self._f = None
        self.t_sent = None

    def send(self, path, method="GET", headers=(), body=None, close=True):
        self.sendraw(build_request(method, path, "127.0.0.1:%d" % self.port, headers, body,
                                   close))
        return self

    def sendraw(self, data):
        self.t_sent = time.monotonic()
        self.sock.sendall(data)
        return self

    def wait_read(self, timeout=5.0):
        wait_until(lambda: server_has_read(self.sock, self.port), timeout, interval=0.002,
                   what="sluice to read the request")
        return self

    def response(self, method="GET"):
        if self._f is None:
            self._f = self.sock.makefile("rb")
        return read_response(self._f, method)

    def close(self):
        if self._f is not None:
            self._f.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def run_concurrent(port, requests, timeout=DEFAULT_TIMEOUT):
    """Send requests (a list of paths or (method, path, headers, body) tuples) at once,
    each on its own connection; returns [(Response or None, error, t_done)] in order."""
    async def main():
        coros = []
        for r in requests:
            if isinstance(r, str):
                r = ("GET", r, (), None)
            m, p, h, b = r
            coros.append(aio_request(port, p, m, h, b, timeout))
        return await asyncio.gather(*coros)
    return asyncio.run(main())


Counter = collections.Counter
