"""
Redis for the shared-budget tests: a real redis-server per test, a small RESP client,
a fleet of sluice daemons sharing one budget through it, and the measures the tests use.

Pieces
  RedisServer(workdir, unix=False, password=None)
                         one redis-server (Debian's), no persistence (--save '' and
                         --appendonly no), its own dir and log; on a free 127.0.0.1 port or,
                         with unix=True, on a unix socket only (--port 0)
      .start()           spawn and wait until it answers PING (AUTH first with a password)
      .kill()            SIGKILL (the data is gone: no persistence), wait for the exit
      .restart()         start again on the same port / socket path (a new run_id)
      .freeze() .thaw()  SIGSTOP / SIGCONT: connections stay up, no answers meanwhile
      .stop()            SIGTERM (SIGKILL after 5 s); called after the test in any case
      .address           what sluice's `shared.redis` takes: "127.0.0.1:PORT" | "unix:PATH"
      .call(*args)       one command on a fresh connection; returns the decoded reply
                         (RedisError for an error reply)
      .info(section)     INFO as {key: value}; .run_id; .commandstats() {cmd: calls}
      .lease_calls()     calls of the commands a lease can be asked with (EVALSHA, and
                         EVAL/FCALL should the implementation use those), from INFO
                         commandstats, which SCRIPT FLUSH does not reset
      .keys(pattern) .script_flush() .log()
  RedisClient(address, password=None)   the RESP client (stdlib, one socket, timeouts)
  Subscriber(server, channel)           SUBSCRIBE in a thread; .messages [(t, payload)]
  redis_factory (fixture)               make(unix=False, password=None) -> started server
  shared_config(...)                    a simple_config with a `shared:` section and the
                                        limit naming the budget
  Fleet(sluice_factory, upstream_url, redis, n, ...)
                                        n daemons sharing one budget, each with an admin
                                        listener: .daemons .ports .metrics(i) .status(i)
                                        .shared_value(i, name, **labels) .reload(i, cfg)
  loadgen (fixture)                     start(targets, t0) -> LoadRun: open-loop clients in
                                        a subprocess (loadgen.py), so the test process (and
                                        its upstream thread, whose arrival times are measured)
                                        does not share the GIL with the load
  shared_bound(rate, burst, window)     the promise: exact GCRA count + ceil(G / T)
  steady_rate(times, ...)               bench/rate_analyze.py's method: (n - 1) / span of
                                        the arrivals from 1 s after the first one on
  window_max(times, w, shrink)          harness.max_in_window with the window shrunk by
                                        `shrink` for the measuring side's own jitter

Every socket operation carries a timeout and every process started here is stopped after
the test, whatever happens.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
BUDGET = "api-budget"


# --------------------------------------------------------------------------- RESP

class RedisError(Exception):
    """An error reply (-ERR ..., -NOSCRIPT ..., -WRONGPASS ...)."""


def encode_command(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, (int, float)):
            b = str(a).encode()
        else:
            b = str(a).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        """One RESP2 reply: str for simple strings and bulk (utf-8, replaced), int, list,
        None; an error reply is returned as a RedisError instance (not raised), so that
        an element of an array can be one."""
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return self.exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.reply() for _ in range(n)]
        raise ConnectionError("not RESP: %r" % line[:100])


def _connect(address, timeout):
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(address[5:])
        except OSError:
            s.close()
            raise
        return s
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


class RedisClient:
    """One connection; call() sends a command and returns its reply (raises RedisError)."""

    def __init__(self, address, password=None, timeout=5.0):
        self.sock = _connect(address, timeout)
        self.reader = _Reader(self.sock)
        if password is not None:
            self.call("AUTH", password)

    def send(self, *args):
        self.sock.sendall(encode_command(args))

    def read(self):
        r = self.reader.reply()
        if isinstance(r, RedisError):
            raise r
        return r

    def call(self, *args):
        self.send(*args)
        return self.read()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def parse_info(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, _, v = line.partition(":")
        out[k] = v
    return out


# --------------------------------------------------------------------------- server

def _short_socket_dir():
    """sun_path holds 108 bytes: pytest's tmp_path can be longer, so sockets go in a
    short mkdtemp directory of their own (removed with the server)."""
    return tempfile.mkdtemp(prefix="sluice-redis-", dir="/tmp")


class RedisServer:
    LEASE_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")

    def __init__(self, workdir, unix=False, password=None, name="redis"):
        self.name = name
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.unix = unix
        self.password = password
        self.port = None
        self.sock_dir = _short_socket_dir() if unix else None
        self.socket_path = os.path.join(self.sock_dir, "redis.sock") if unix else None
        self.proc = None
        self.starts = 0
        self._log_f = None
        self.log_path = os.path.join(self.dir, "redis.log")

    # ----- life

    @property
    def address(self):
        if self.unix:
            return "unix:" + self.socket_path
        return "127.0.0.1:%d" % self.port

    def _argv(self):
        argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--databases", "16",
                "--loglevel", "notice", "--logfile", ""]
        if self.unix:
            argv += ["--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        else:
            argv += ["--port", str(self.port)]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def start(self, timeout=10.0):
        """Start (or restart, after kill()) on the same port / socket; wait for PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis already running"
        assert os.access(REDIS_SERVER, os.X_OK), \
            "redis-server not found (make deps installs Debian's redis-server)"
        first = self.starts == 0
        for attempt in range(5):
            if first and not self.unix and (self.port is None or attempt > 0):
                self.port = harness.free_port()
            if self._log_f is None:
                self._log_f = open(self.log_path, "ab")
            self._log_f.write(b"\n==== start %d: %s\n" % (self.starts + 1,
                                                         " ".join(self._argv()).encode()))
            self._log_f.flush()
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL,
                                         stdout=self._log_f, stderr=self._log_f)
            self.starts += 1
            if self._wait_ping(timeout):
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("redis-server up but not answering PING after %.0fs:\n%s"
                                     % (timeout, self.log()[-2000:]))
            # it exited: a port taken meanwhile (first start only) is worth another try
            if not first or self.unix or "Address already in use" not in self.log():
                break
        raise AssertionError("redis-server did not start (exit %s):\n%s"
                             % (self.proc.returncode, self.log()[-2000:]))

    def _wait_ping(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with RedisClient(self.address, self.password, timeout=1.0) as c:
                    if c.call("PING") == "PONG":
                        return True
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.01)
        return False

    def kill(self):
        """SIGKILL: the server and all it held are gone at once (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, timeout=10.0):
        self.kill()
        return self.start(timeout)

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_f is not None:
            self._log_f.close()
            self._log_f = None
        if self.sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # ----- commands

    def client(self, timeout=5.0):
        return RedisClient(self.address, self.password, timeout)

    def call(self, *args):
        with self.client() as c:
            return c.call(*args)

    def info(self, section="all"):
        return parse_info(self.call("INFO", section))

    @property
    def run_id(self):
        return self.info("server")["run_id"]

    def commandstats(self):
        """{command: calls} from INFO commandstats (cmdstat_evalsha:calls=12,...)."""
        out = {}
        for k, v in self.info("commandstats").items():
            if k.startswith("cmdstat_"):
                m = re.search(r"(?:^|,)calls=(\d+)", v)
                if m:
                    out[k[len("cmdstat_"):]] = int(m.group(1))
        return out

    def lease_calls(self):
        cs = self.commandstats()
        return sum(cs.get(c, 0) for c in self.LEASE_COMMANDS)

    def keys(self, pattern="*"):
        return sorted(self.call("KEYS", pattern))

    def script_flush(self):
        return self.call("SCRIPT", "FLUSH")


class Subscriber:
    """SUBSCRIBE to one channel on its own connection, in a thread; every message is kept
    with the monotonic time it was read: .messages [(t, payload)]."""

    def __init__(self, server, channel):
        self.channel = channel
        self.messages = []
        self._client = server.client(timeout=5.0)
        assert self._client.call("SUBSCRIBE", channel) == ["subscribe", channel, 1]
        # blocking reads (a timeout inside a reply would lose its place in it); close()
        # shuts the socket down, which ends the read
        self._client.sock.settimeout(None)
        self._thread = threading.Thread(target=self._run, name="redis-sub", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                r = self._client.reader.reply()
            except (OSError, ConnectionError):
                return
            if isinstance(r, list) and len(r) == 3 and r[0] == "message":
                self.messages.append((time.monotonic(), r[2]))

    def close(self):
        try:
            self._client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self._client.close()


@pytest.fixture
def redis_factory(tmp_path):
    made = []

    def make(unix=False, password=None):
        r = RedisServer(tmp_path, unix=unix, password=password, name="redis%d" % len(made))
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()


# --------------------------------------------------------------------------- sluice fleet

def budget_key(suffix, budget=BUDGET):
    return "{sluice:%s}:%s" % (budget, suffix)


def shared_config(upstream_url, redis_address, *, instance=None, budget=BUDGET, rate="30/s",
                  burst=1, admin_port=None, password_file=None, db=None, timeout=None,
                  horizon=None, max_wait="60s", queue_size=5000, drain_timeout="10s",
                  extra_shared=None, **kw):
    """simple_config with `shared:` (placed before upstreams) and the one limit naming the
    budget; an admin listener when admin_port is given."""
    base = harness.simple_config(upstream_url, limits=[{"rate": rate, "burst": burst,
                                                        "shared": budget}],
                                 max_wait=max_wait, queue_size=queue_size,
                                 drain_timeout=drain_timeout, **kw)
    shared = {"redis": redis_address}
    if password_file is not None:
        shared["password_file"] = str(password_file)
    if db is not None:
        shared["db"] = db
    if timeout is not None:
        shared["timeout"] = timeout
    if horizon is not None:
        shared["horizon"] = horizon
    if instance is not None:
        shared["instance"] = instance
    shared.update(extra_shared or {})
    cfg = {}
    for k, v in base.items():
        if k == "upstreams":
            cfg["shared"] = shared
            if admin_port is not None:
                cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
        cfg[k] = v
    return cfg


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def raw_samples(admin_port):
    """GET /metrics read line by line, as written (no type-dependent renaming): returns
    [(name, {labels}, value)]. For series whose names carry a suffix a parser reads by
    type (a counter family called ..._sum is renamed ..._sum_total by prometheus_client)."""
    r = harness.http_request(admin_port, "GET", "/metrics", timeout=5)
    assert r.status == 200, r
    out = []
    for line in r.body.decode("utf-8").splitlines():
        m = _SAMPLE_LINE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def pick_raw(samples, name, **labels):
    hits = [v for n, lab, v in samples if n == name and set(labels.items()) <= set(lab.items())]
    assert len(hits) == 1, "%d series %s%r in /metrics" % (len(hits), name, labels)
    return hits[0]


def pick(samples, name, **labels):
    """The one sample called `name` whose labels include `labels` (AssertionError if none
    or several)."""
    want = set(labels.items())
    hits = [(k, v) for k, v in samples.items() if k[0] == name and want <= set(k[1])]
    assert hits, "no %s%r in /metrics (sluice_shared_* present: %r)" % (
        name, labels, sorted({k[0] for k in samples if k[0].startswith("sluice_shared")}))
    assert len(hits) == 1, "several %s%r: %r" % (name, labels, hits)
    return hits[0][1]


class Fleet:
    """n sluice daemons (one upstream "api", route /api/) sharing one budget through one
    Redis, each with its own admin listener and instance name fleet-<i>."""

    def __init__(self, sluice_factory, upstream_url, redis, n=3, names=None, **kw):
        self.upstream_url = upstream_url
        self.redis = redis
        self.kw = kw
        self.names = names or ["fleet-%d" % i for i in range(n)]
        self.admin_ports = [harness.free_port() for _ in range(n)]
        self.configs = []
        self.daemons = []
        for i in range(n):
            cfg = self.config(i)
            self.configs.append(cfg)
            self.daemons.append(sluice_factory(cfg, name="sluice-%s" % self.names[i]))
        for p in self.admin_ports:
            harness.wait_until(lambda p=p: harness.port_accepts(p), 5.0, what="admin listener")

    def config(self, i, redis_address=None, **over):
        kw = dict(self.kw)
        kw.update(over)
        port = None
        if i < len(self.daemons):
            port = self.daemons[i].port
        return shared_config(self.upstream_url, redis_address or self.redis.address,
                             instance=kw.pop("instance", self.names[i]),
                             admin_port=self.admin_ports[i], port=port, **kw)

    def __len__(self):
        return len(self.daemons)

    @property
    def ports(self):
        return [s.port for s in self.daemons]

    def member(self, i, upstream="api"):
        return "%s/%s" % (self.names[i], upstream)

    def metrics(self, i):
        return harness.scrape(self.admin_ports[i])

    def shared_value(self, i, name, samples=None, **labels):
        samples = samples if samples is not None else self.metrics(i)
        return pick(samples, name, upstream="api", budget=BUDGET, **labels)

    def lease_results(self, i, samples=None):
        """{result: count} of sluice_shared_lease_calls_total for instance i."""
        samples = samples if samples is not None else self.metrics(i)
        out = {}
        for (name, labels), v in samples.items():
            d = dict(labels)
            if name == "sluice_shared_lease_calls_total" and d.get("budget") == BUDGET:
                out[d.get("result")] = v
        return out

    def mode(self, i, samples=None):
        """"redis" or "fallback", as sluice_shared_mode says (exactly one of them 1)."""
        samples = samples if samples is not None else self.metrics(i)
        on = [m for m in ("redis", "fallback")
              if self.shared_value(i, "sluice_shared_mode", samples, mode=m) == 1]
        assert len(on) == 1, "sluice_shared_mode of %s: %r" % (self.names[i], on)
        return on[0]

    def status(self, i):
        r = harness.http_request(self.admin_ports[i], "GET", "/status", timeout=5)
        assert r.status == 200, r
        return r.json()

    def shared_status(self, i):
        st = self.status(i)
        ups = [u for u in st["upstreams"] if u["name"] == "api"]
        assert ups and "shared" in ups[0], "no \"shared\" in /status: %r" % st
        entries = [e for e in ups[0]["shared"] if e.get("budget") == BUDGET]
        assert len(entries) == 1, "/status shared: %r" % ups[0]["shared"]
        return entries[0]

    def stderr(self, i):
        return self.daemons[i].stderr()

    def reload(self, i, cfg):
        self.configs[i] = cfg
        return harness.reload(self.daemons[i], cfg)


# --------------------------------------------------------------------------- load

class LoadRun:
    """A loadgen.py subprocess; wait() returns its results (list of dicts)."""

    def __init__(self, targets, t0, timeout, out):
        self.t0 = t0
        self.out = out
        args = [sys.executable, os.path.join(HERE, "loadgen.py"), "--out", out,
                "--t0", "%.6f" % t0, "--timeout", str(timeout)]
        for t in targets:
            args += ["--target", "%d,%g,%g,%s,%g" % (t["port"], t["rate"], t["duration"],
                                                    t["tag"], t.get("start", 0.0))]
        self.duration = max(t.get("start", 0.0) + t["duration"] for t in targets)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.results = None

    def wait(self, timeout):
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise AssertionError("the load generator was still running after %.0fs" % timeout)
        assert self.proc.returncode == 0, "loadgen exited %s:\n%s" % (
            self.proc.returncode, out.decode("utf-8", "replace")[-3000:])
        with open(self.out) as f:
            data = json.load(f)
        assert data["late_max_s"] < 0.25, \
            "the load generator ran %.3fs behind its schedule: the offered load is not what " \
            "the test says" % data["late_max_s"]
        self.results = data["results"]
        return self.results

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)


@pytest.fixture
def loadgen(tmp_path):
    """start(targets, t0=None, timeout=60) -> LoadRun. A target: {port, rate (req/s),
    duration (s), tag, start (s after t0, default 0)}; request j of a target is started at
    t0 + start + j / rate on a new connection: GET /api/load?tag=TAG&i=j."""
    runs = []

    def start(targets, t0=None, timeout=60):
        if t0 is None:
            t0 = time.monotonic() + 0.8
        out = os.path.join(str(tmp_path), "load%d.json" % len(runs))
        run = LoadRun(targets, t0, timeout, out)
        runs.append(run)
        return run

    yield start
    for r in runs:
        r.kill()


def failed(results):
    """The results that are not a 200 answer."""
    return [r for r in results if r["status"] != 200]


def assert_all_ok(results, what="request"):
    bad = failed(results)
    assert not bad, "%d of %d %ss not answered 200; first ones: %r" % (
        len(bad), len(results), what, bad[:5])


_TAG = re.compile(r"[?&]tag=([^&]+)")


def arrivals_by_tag(upstream):
    """{tag: [t]} of the load requests the upstream received."""
    out = {}
    for r in upstream.requests:
        m = _TAG.search(r.target)
        if m:
            out.setdefault(m.group(1), []).append(r.t)
    return out


# --------------------------------------------------------------------------- measures

def rate_per_s(rate):
    v, unit = rate.split("/")
    return float(v) / {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def grace_s(rate):
    """G = clamp(T/2, 1 ms, 20 ms)."""
    return min(max(0.5 / rate, 0.001), 0.020)


def shared_bound(rate, burst, window=1.0):
    """The most releases the fleet may make in any window of `window` seconds: what one
    exact GCRA (rate, burst) allows in a closed window, floor(rate * w) + burst, plus
    ceil(G / T) for the grace each slot may be released within."""
    exact = math.floor(rate * window + 1e-9) + burst
    return exact + math.ceil(grace_s(rate) * rate - 1e-9)


def window_max(times, window=1.0, shrink=0.02):
    """The most arrivals in any window [a, a + window - shrink): the shrink absorbs the
    measuring side's own jitter (the upstream's event loop timestamps a request when it
    reads it, not when sluice sent it)."""
    return harness.max_in_window(times, window - shrink)


def steady_rate(times, start_s=1.0, end=None):
    """(n - 1) / (last - first) over the arrivals from `start_s` after the first one to
    `end` (absolute; default: the last one); returns (rate, n, span)."""
    ts = sorted(times)
    lo = ts[0] + start_s
    sel = [t for t in ts if t >= lo and (end is None or t <= end)]
    if len(sel) < 2:
        return 0.0, len(sel), 0.0
    span = sel[-1] - sel[0]
    return (len(sel) - 1) / span, len(sel), span


def count_between(times, a, b):
    return sum(1 for t in times if a <= t < b)


def fmt_times(times, ref):
    return ["%.3f" % (t - ref) for t in sorted(times)]
