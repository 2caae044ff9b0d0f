"""Operations: the admin listener (/metrics, /healthz, /status) and the access log.

/metrics is parsed with prometheus_client's own parser (Debian's python3-prometheus-client)
after a stricter check of the exposition format (HELP and TYPE once per family, families
not interleaved, histogram buckets cumulative), and every number is cross-checked with
what the test sent. The access log is read back line by line, in both formats.
"""

import datetime
import json
import os
import re
import signal
import socket
import time

import pytest

from prometheus_client.parser import text_string_to_metric_families

import harness


# --------------------------------------------------------------------------- helpers

def ops_config(upstream_url, admin_port, access_log=None, **kw):
    cfg = harness.simple_config(upstream_url, **kw)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    if access_log is not None:
        cfg["access_log"] = access_log
    return cfg


def start_ops(sluice_factory, upstream_url, access_log=None, **kw):
    """A daemon with an admin listener; returns (sluice, admin_port)."""
    admin_port = harness.free_port()
    s = sluice_factory(ops_config(upstream_url, admin_port, access_log, **kw))
    harness.wait_until(lambda: harness.port_accepts(admin_port), 5.0, what="admin listener")
    return s, admin_port


def admin(port, path, method="GET"):
    return harness.http_request(port, method, path)


def check_exposition(text):
    """Fail unless `text` is well-formed Prometheus text format 0.0.4 as sluice promises:
    each family has one HELP and one TYPE before its samples, and its samples are not
    interleaved with another family's."""
    types, helps, done = {}, {}, set()
    current = None
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        assert line.strip() == line and line, "blank or padded line: %r" % line
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, "HELP twice for %s" % name
            helps[name] = True
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types, "TYPE twice for %s" % name
            assert name in helps, "TYPE before HELP for %s" % name
            assert typ in ("counter", "gauge", "histogram", "summary"), line
            types[name] = typ
            if current is not None:
                done.add(current)
            current = name
            continue
        assert not line.startswith("#"), "unexpected comment: %r" % line
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        assert m, "bad sample line: %r" % line
        sample = m.group(1)
        fam = sample
        if types.get(current) == "histogram":
            fam = re.sub(r"_(bucket|sum|count)$", "", sample)
        elif types.get(current) == "summary":
            fam = re.sub(r"_(sum|count)$", "", sample)
        assert fam == current, "sample %s outside its family (current %s)" % (sample, current)
        assert fam not in done, "family %s interleaved" % fam
        float(m.group(3).replace("+Inf", "inf"))
    return types


def scrape(admin_port):
    """GET /metrics: checks the format; returns {(name, frozenset(labels)): value}."""
    r = admin(admin_port, "/metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/plain; version=0.0.4"), r.headers
    text = r.body.decode("utf-8")
    types = check_exposition(text)
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, "duplicate series %r" % (key,)
            samples[key] = s.value
    for name, typ in types.items():
        if typ == "histogram":
            check_histograms(samples, name)
    return samples


def check_histograms(samples, name):
    """Buckets cumulative and complete, +Inf == _count, for every label set."""
    counts = {k[1]: v for k, v in samples.items() if k[0] == name + "_count"}
    for labels, count in counts.items():
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items()
                          if k[0] == name + "_bucket"
                          and frozenset(x for x in k[1] if x[0] != "le") == labels))
        assert len(buckets) == 15, buckets
        values = [v for _, v in buckets]
        assert values == sorted(values), "buckets not cumulative: %r" % buckets
        assert buckets[-1][0] == float("inf") and buckets[-1][1] == count
        assert (name + "_sum", labels) in samples


def series(samples, name, **labels):
    """All samples called `name` whose labels include `labels`: {frozenset: value}."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= set(k[1])}


def value(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, "no %s%r in the exposition" % (name, labels)
    return samples[key]


def bucket(samples, name, upstream, le):
    return value(samples, name + "_bucket", upstream=upstream, le=le)


def requests_total(samples):
    """{(upstream, route, status, reason): count} of sluice_requests_total."""
    out = {}
    for labels, v in series(samples, "sluice_requests_total").items():
        d = dict(labels)
        out[(d["upstream"], d["route"], d["status"], d["reason"])] = v
    return out


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8")
    except FileNotFoundError:
        return []
    assert data == "" or data.endswith("\n"), "partial line in %s: %r" % (path, data[-200:])
    return data.splitlines()


def wait_lines(path, n, timeout=5.0):
    return harness.wait_until(lambda: len(read_lines(path)) >= n and read_lines(path), timeout,
                              what="%d lines in %s" % (n, path))


def json_lines(path, n):
    lines = wait_lines(path, n)
    assert len(lines) == n, lines
    return [json.loads(line) for line in lines]


TEXT_LINE = re.compile(
    r'(?P<client>\S+) - - \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'"(?P<method>\S+) (?P<target>\S+)" (?P<status>\d{3}) (?P<bytes>\d+) "-" '
    r'"(?P<ua>(?:[^"\\]|\\x[0-9a-f]{2})*)" req=(?P<req>\d+) route=(?P<route>\S+) '
    r'upstream=(?P<upstream>\S+) reason=(?P<reason>\S+) queue_ms=(?P<queue_ms>-|\d+) '
    r'upstream_ms=(?P<upstream_ms>-|\d+)$')


def unescape_text(s):
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), s)


def close_all(clients):
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- /metrics

def test_metrics_counts_match_what_was_sent(upstream, sluice_factory):
    """max_in_flight 1 held by a 1.5 s request, 2 queued behind it (queue.size 2), 2 more
    refused queue_full, 1 with no route, then 2 more OK: every counter, gauge and
    histogram says exactly that."""
    s, ap = start_ops(sluice_factory, upstream.url, rate="100/s", burst=5, max_in_flight=1,
                      queue_size=2, max_wait="10s")
    before = scrape(ap)
    assert requests_total(before) == {}
    assert value(before, "sluice_queue_wait_seconds_count", upstream="api") == 0
    assert value(before, "sluice_config_reloads_total", result="ok") == 1
    assert value(before, "sluice_config_reloads_total", result="failed") == 0
    assert abs(value(before, "sluice_config_last_reload_timestamp_seconds") - time.time()) < 60
    assert value(before, "sluice_draining") == 0

    slow = harness.RawClient(s.port).send("/api/slow?ms=1500")
    clients = [slow]
    try:
        upstream.wait_for(1)
        clients += [harness.RawClient(s.port).send("/api/q?i=%d" % i).wait_read() for i in (1, 2)]
        held = scrape(ap)
        assert value(held, "sluice_queue_depth", upstream="api") == 2
        assert value(held, "sluice_queue_capacity", upstream="api") == 2
        assert value(held, "sluice_in_flight", upstream="api") == 1
        assert value(held, "sluice_max_in_flight", upstream="api") == 1
        assert value(held, "sluice_client_connections") == 3
        tokens = value(held, "sluice_tokens_available", upstream="api", limit="100/s")
        assert 0 <= tokens <= 5
        for i in (3, 4):
            r = harness.http_request(s.port, "GET", "/api/full?i=%d" % i)
            harness.assert_sluice_error(r, 503, "queue_full")
        r = harness.http_request(s.port, "GET", "/nowhere")
        harness.assert_sluice_error(r, 404, "no_route")
        for c in clients:
            assert c.response().status == 200
    finally:
        close_all(clients)
    for i in (5, 6):
        assert harness.http_request(s.port, "GET", "/api/after?i=%d" % i).status == 200

    harness.wait_until(lambda: sum(requests_total(scrape(ap)).values()) == 8, 5.0,
                       what="8 requests counted")
    m = scrape(ap)
    assert requests_total(m) == {
        ("api", "/api/", "200", "ok"): 5,
        ("api", "/api/", "503", "queue_full"): 2,
        ("", "", "404", "no_route"): 1,
    }
    assert series(m, "sluice_rejections_total", upstream="api") == {
        frozenset({("upstream", "api"), ("reason", "queue_full")}): 2,
        frozenset({("upstream", "api"), ("reason", "deadline")}): 0,
        frozenset({("upstream", "api"), ("reason", "shutdown")}): 0,
        frozenset({("upstream", "api"), ("reason", "key_queue_full")}): 0,
    }
    # Queue wait: the five admitted ones; the two queued behind the slow one waited ~1.5 s.
    qw = "sluice_queue_wait_seconds"
    assert value(m, qw + "_count", upstream="api") == 5
    assert bucket(m, qw, "api", "1") == 3
    assert bucket(m, qw, "api", "+Inf") == 5
    assert bucket(m, qw, "api", "5") == 5
    assert 2.6 <= value(m, qw + "_sum", upstream="api") <= 8
    # Upstream latency: five answers, one of them ~1.5 s.
    ul = "sluice_upstream_latency_seconds"
    assert value(m, ul + "_count", upstream="api") == 5
    assert bucket(m, ul, "api", "1") == 4
    assert bucket(m, ul, "api", "5") == 5
    assert 1.4 <= value(m, ul + "_sum", upstream="api") <= 5
    assert value(m, "sluice_queue_depth", upstream="api") == 0
    assert value(m, "sluice_in_flight", upstream="api") == 0


def test_metrics_deadline_and_label_escaping(upstream, sluice_factory):
    """A predicted-deadline refusal is counted; a route whose prefix holds a quote and a
    backslash is escaped in its label (the parser gives the original back)."""
    weird = '/we"ird\\dir/'
    cfg_kw = dict(rate="1/s", burst=1, max_wait="1200ms", queue_size=100)
    admin_port = harness.free_port()
    cfg = ops_config(upstream.url, admin_port, **cfg_kw)
    cfg["routes"].append({"path_prefix": weird, "strip_prefix": True, "upstream": "api"})
    s = sluice_factory(cfg)
    harness.wait_until(lambda: harness.port_accepts(admin_port), 5.0, what="admin listener")
    first = harness.RawClient(s.port).send("/api/d?i=0")
    clients = [first]
    try:
        upstream.wait_for(1)
        clients.append(harness.RawClient(s.port).send("/api/d?i=1").wait_read())
        r = harness.http_request(s.port, "GET", "/api/d?i=2")
        harness.assert_sluice_error(r, 503, "deadline")
        for c in clients:
            assert c.response().status == 200
    finally:
        close_all(clients)
    r = harness.raw_request(s.port, harness.build_request("GET", weird + "x", "h"))
    assert r.status == 200, r
    harness.wait_until(lambda: sum(requests_total(scrape(admin_port)).values()) == 4, 5.0,
                       what="4 requests counted")
    m = scrape(admin_port)
    assert requests_total(m) == {
        ("api", "/api/", "200", "ok"): 2,
        ("api", "/api/", "503", "deadline"): 1,
        ("api", weird, "200", "ok"): 1,
    }
    assert value(m, "sluice_rejections_total", upstream="api", reason="deadline") == 1
    assert value(m, "sluice_queue_wait_seconds_count", upstream="api") == 3
    # the first went at once; the two others waited ~1 s for a token
    assert bucket(m, "sluice_queue_wait_seconds", "api", "0.5") == 1
    assert bucket(m, "sluice_queue_wait_seconds", "api", "2.5") == 3
    raw = admin(admin_port, "/metrics").body.decode()
    assert 'route="/we\\"ird\\\\dir/"' in raw


def test_tokens_label_per_limit(upstream, sluice_factory):
    """Each limit has its own series, labelled with its rate; same rates stay distinct."""
    limits = [{"rate": "0.5/s", "burst": 2}, {"rate": "5000/h", "burst": 3},
              {"rate": "100/m", "burst": 1}, {"rate": "100/m", "burst": 4}]
    s, ap = start_ops(sluice_factory, upstream.url, limits=limits)
    m = scrape(ap)
    got = {dict(k)["limit"]: v for k, v in series(m, "sluice_tokens_available",
                                                    upstream="api").items()}
    assert set(got) == {"0.5/s", "5000/h", "100/m", "100/m#4"}, got
    assert abs(got["0.5/s"] - 2) < 0.01 and abs(got["5000/h"] - 3) < 0.01
    assert abs(got["100/m#4"] - 4) < 0.01


# --------------------------------------------------------------------------- /healthz

def test_healthz_503_while_draining(upstream, sluice_factory):
    """/healthz says ok, then 503 draining after SIGTERM while the queue is released;
    /status and sluice_draining agree; a keep-alive client asking during the drain gets
    503 shutdown, counted with no upstream. The daemon still exits 0."""
    s, ap = start_ops(sluice_factory, upstream.url, rate="2/s", burst=1, max_wait="20s",
                      drain_timeout="20s")
    r = admin(ap, "/healthz")
    assert (r.status, r.body) == (200, b"ok\n"), r
    r = admin(ap, "/healthz", method="HEAD")
    assert r.status == 200 and r.body == b""
    keep = harness.RawClient(s.port).send("/api/k", close=False)
    clients = [keep]
    try:
        assert keep.response().status == 200
        clients += [harness.RawClient(s.port).send("/api/drain?i=%d" % i).wait_read()
                    for i in range(4)]
        s.send_signal(signal.SIGTERM)
        r = harness.wait_until(lambda: (lambda x: x if x.status == 503 else None)(
            admin(ap, "/healthz")), 3.0, what="/healthz 503")
        assert r.body == b"draining\n"
        assert admin(ap, "/status").json()["state"] == "draining"
        keep.send("/api/late", close=True)
        harness.assert_sluice_error(keep.response(), 503, "shutdown")
        m = scrape(ap)
        assert value(m, "sluice_draining") == 1
        assert value(m, "sluice_rejections_total", upstream="", reason="shutdown") == 1
        assert requests_total(m)[("", "", "503", "shutdown")] == 1
        assert value(m, "sluice_queue_depth", upstream="api") >= 1
        for c in clients[1:]:
            assert c.response().status == 200
    finally:
        close_all(clients)
    assert s.wait(10) == 0
    assert not harness.port_accepts(ap)


# --------------------------------------------------------------------------- /status

def test_status_json_while_queued(upstream, sluice_factory):
    s, ap = start_ops(sluice_factory, upstream.url, rate="0.5/s", burst=1, max_in_flight=4,
                      queue_size=10, max_wait="30s")
    assert harness.http_request(s.port, "GET", "/api/first").status == 200
    clients = [harness.RawClient(s.port).send("/api/q?i=%d" % i).wait_read() for i in range(3)]
    try:
        r = admin(ap, "/status")
        assert r.status == 200 and r.header("content-type") == "application/json", r
        st = r.json()
        assert st["state"] == "running"
        assert len(st["upstreams"]) == 1
        u = st["upstreams"][0]
        assert u["name"] == "api" and u["url"] == upstream.url
        assert len(u["limits"]) == 1
        lim = u["limits"][0]
        assert lim["rate_per_sec"] == 0.5 and lim["burst"] == 1
        assert 0 <= lim["tokens"] < 1
        assert u["queue_depth"] == 3 and u["queue_capacity"] == 10
        assert u["in_flight"] == 0 and u["max_in_flight"] == 4
        assert 0 < u["next_release_in_ms"] <= 2000, u
        want = {"admitted": 4, "released": 1, "refused_full": 0, "refused_late": 0,
                "expired": 0, "withdrawn": 0, "responses": 1, "failures": 0}
        assert {k: u["counters"][k] for k in want} == want, u["counters"]
    finally:
        close_all(clients)

    def drained():
        v = admin(ap, "/status").json()["upstreams"][0]
        return v if v["counters"]["withdrawn"] == 3 else None
    u = harness.wait_until(drained, 5.0, what="3 withdrawn")
    assert u["queue_depth"] == 0 and u["next_release_in_ms"] is None
    assert u["counters"]["released"] == 1
    m = scrape(ap)
    assert requests_total(m) == {("api", "/api/", "200", "ok"): 1,
                                 ("api", "/api/", "499", "client_closed"): 3}


def test_admin_paths_methods_and_connection_cap(upstream, sluice_factory):
    """Unknown paths 404, other methods 405; the admin listener answers while the proxy
    sits at client.max_connections, and its connections are not counted."""
    s, ap = start_ops(sluice_factory, upstream.url,
                      client={"max_connections": 2, "max_header_size": "8k",
                              "max_body_size": "1m", "timeout": "60s"})
    assert admin(ap, "/nope").status == 404
    assert admin(ap, "/").status == 200  # the dashboard
    assert admin(ap, "/metrics/x").status == 404
    r = admin(ap, "/metrics", method="POST")
    assert r.status == 405 and r.header("allow") == "GET, HEAD"
    r = admin(ap, "/metrics", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert admin(ap, "/healthz?verbose=1").status == 200
    held = [harness.connect(s.port) for _ in range(2)]
    try:
        harness.wait_until(lambda: value(scrape(ap), "sluice_client_connections") == 2, 5.0,
                           what="2 client connections counted")
        # the proxy has stopped accepting; the admin listener has not
        for _ in range(5):
            assert admin(ap, "/healthz").status == 200
        assert value(scrape(ap), "sluice_client_connections") == 2
    finally:
        for h in held:
            h.close()
    harness.wait_until(lambda: harness.http_request(s.port, "GET", "/api/x").status == 200,
                       5.0, what="proxy accepting again")


def test_admin_connection_cap_of_its_own(upstream, sluice_factory):
    """The admin listener holds at most 32 connections: with 32 open and idle, a 33rd
    waits unanswered (in the listen backlog) while the proxy keeps serving; once one of
    the 32 closes, it is answered."""
    s, ap = start_ops(sluice_factory, upstream.url)
    held = [harness.connect(ap) for _ in range(32)]
    extra = None
    try:
        # Each of the 32 counted: one request on each, the connection kept open.
        for h in held:
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert h.recv(4096).startswith(b"HTTP/1.1 200"), "a held admin connection"
        extra = harness.connect(ap)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        extra.settimeout(1.0)
        with pytest.raises(socket.timeout):
            extra.recv(4096)
        assert harness.http_request(s.port, "GET", "/api/x").status == 200
        held.pop().close()
        extra.settimeout(5.0)
        assert extra.recv(4096).startswith(b"HTTP/1.1 200"), "the 33rd once one closed"
    finally:
        for h in held:
            h.close()
        if extra is not None:
            extra.close()


def test_admin_bind_failure_fails_startup(upstream, sluice_factory):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        s = sluice_factory(ops_config(upstream.url, port), start=False)
        s.start(wait=False)
        assert s.wait(10) == 1
    err = s.stderr()
    assert "admin.address 127.0.0.1:%d: cannot bind" % port in err, err


# --------------------------------------------------------------------------- access log

def test_access_log_json(upstream, sluice_factory, tmp_path):
    path = str(tmp_path / "access.json")
    s, ap = start_ops(sluice_factory, upstream.url, {"path": path, "format": "json"},
                      rate="1/s", burst=1, queue_size=1, max_wait="10s")
    ua = 'ops "test" \\ agent'
    r1 = harness.http_request(s.port, "GET", "/api/a?x=1&y=%22", headers=[("User-Agent", ua)])
    assert r1.status == 200
    queued = harness.RawClient(s.port).send("/api/queued").wait_read()
    try:
        r3 = harness.http_request(s.port, "POST", "/api/full", body=b"abc")
        harness.assert_sluice_error(r3, 503, "queue_full")
        r4 = harness.http_request(s.port, "GET", "/nowhere")
        harness.assert_sluice_error(r4, 404, "no_route")
        r2 = queued.response()
        assert r2.status == 200
    finally:
        queued.close()
    wait_ms = harness.queue_wait_ms(r2)
    assert wait_ms >= 300
    lines = json_lines(path, 4)
    by_target = {e["target"]: e for e in lines}
    assert set(by_target) == {"/api/a?x=1&y=%22", "/api/queued", "/api/full", "/nowhere"}
    now = datetime.datetime.now(datetime.timezone.utc)
    for e in lines:
        assert list(e) == ["time", "req", "client", "method", "target", "status", "bytes",
                           "route", "upstream", "reason", "queue_ms", "upstream_ms",
                           "user_agent"]
        t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc)
        assert abs((now - t).total_seconds()) < 60
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
        assert e["client"] == "127.0.0.1"
    assert len({e["req"] for e in lines}) == 4
    a = by_target["/api/a?x=1&y=%22"]
    assert (a["method"], a["status"], a["reason"], a["route"], a["upstream"]) == \
        ("GET", 200, "ok", "/api/", "api")
    assert a["bytes"] == len(r1.body) and a["user_agent"] == ua
    assert 0 <= a["queue_ms"] < 200 and a["upstream_ms"] >= 0
    q = by_target["/api/queued"]
    assert (q["status"], q["reason"], q["bytes"]) == (200, "ok", len(r2.body))
    assert q["queue_ms"] >= 300 and abs(q["queue_ms"] - wait_ms) <= 2
    assert q["user_agent"] is None
    f = by_target["/api/full"]
    assert (f["method"], f["status"], f["reason"], f["upstream"]) == \
        ("POST", 503, "queue_full", "api")
    assert f["queue_ms"] is None and f["upstream_ms"] is None and f["bytes"] == len(r3.body)
    n = by_target["/nowhere"]
    assert (n["status"], n["reason"], n["route"], n["upstream"]) == (404, "no_route", None, None)


def test_access_log_text(upstream, sluice_factory, tmp_path):
    path = str(tmp_path / "access.log")
    s, ap = start_ops(sluice_factory, upstream.url, {"path": path, "format": "text"},
                      rate="2/s", burst=1, max_wait="10s")
    ua = 'curl/7 "quoted" back\\slash'
    r1 = harness.http_request(s.port, "GET", "/api/t?q=1", headers=[("User-Agent", ua)])
    r2 = harness.http_request(s.port, "DELETE", "/api/t2")
    r3 = harness.http_request(s.port, "GET", "/nowhere")
    assert (r1.status, r2.status, r3.status) == (200, 200, 404)
    lines = wait_lines(path, 3)
    assert len(lines) == 3, lines
    parsed = []
    for line in lines:
        m = TEXT_LINE.match(line)
        assert m, "access log line does not parse: %r" % line
        parsed.append(m.groupdict())
    a, b, c = parsed
    t = datetime.datetime.strptime(a["time"], "%d/%b/%Y:%H:%M:%S +0000").replace(
        tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) < 60
    assert (a["client"], a["method"], a["target"], a["status"]) == \
        ("127.0.0.1", "GET", "/api/t?q=1", "200")
    assert int(a["bytes"]) == len(r1.body)
    assert unescape_text(a["ua"]) == ua and '\\x22' in a["ua"]
    assert (a["route"], a["upstream"], a["reason"]) == ("/api/", "api", "ok")
    assert int(a["queue_ms"]) < 200 and a["upstream_ms"] != "-"
    # the second waited for the next token at 2/s
    assert (b["method"], b["status"], b["ua"]) == ("DELETE", "200", "-")
    assert int(b["queue_ms"]) >= 300
    assert (c["status"], c["reason"], c["route"], c["upstream"], c["queue_ms"],
            c["upstream_ms"]) == ("404", "no_route", "-", "-", "-", "-")
    assert int(b["req"]) > int(a["req"]) and int(c["req"]) > int(b["req"])


def test_access_log_reopen_on_sigusr1(upstream, sluice_factory, tmp_path):
    """logrotate: the file is renamed, lines keep going to it until SIGUSR1, after which
    they go to a new file at the configured path."""
    path = str(tmp_path / "access.log")
    s, ap = start_ops(sluice_factory, upstream.url, {"path": path, "format": "json"})
    assert harness.http_request(s.port, "GET", "/api/one").status == 200
    assert [e["target"] for e in json_lines(path, 1)] == ["/api/one"]
    os.rename(path, path + ".1")
    assert harness.http_request(s.port, "GET", "/api/two").status == 200
    assert [e["target"] for e in json_lines(path + ".1", 2)] == ["/api/one", "/api/two"]
    assert not os.path.exists(path)
    s.send_signal(signal.SIGUSR1)
    harness.wait_until(lambda: os.path.exists(path), 5.0, what="access log reopened")
    assert harness.http_request(s.port, "GET", "/api/three").status == 200
    assert [e["target"] for e in json_lines(path, 1)] == ["/api/three"]
    assert len(read_lines(path + ".1")) == 2
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644 & ~current_umask())
    assert "access log reopened" in s.stderr()
    assert s.alive()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_access_log_to_stderr(upstream, sluice_factory):
    # harness.to_yaml writes a bare '-' (a YAML sequence entry): quote it by hand.
    text = harness.to_yaml(ops_config(upstream.url, harness.free_port(),
                                      {"path": "STDERR", "format": "text"})) + "\n"
    text = text.replace("path: STDERR", 'path: "-"')
    assert 'path: "-"' in text
    s = sluice_factory(text)
    assert harness.http_request(s.port, "GET", "/api/err?x=1").status == 200
    harness.wait_until(lambda: '"GET /api/err?x=1" 200' in s.stderr(), 5.0,
                       what="access line on stderr")
    line = [x for x in s.stderr().splitlines() if '"GET /api/err?x=1"' in x][0]
    assert TEXT_LINE.match(line), line
    s.send_signal(signal.SIGUSR1)  # a no-op for stderr, and harmless
    assert harness.http_request(s.port, "GET", "/api/err?x=2").status == 200
    harness.wait_until(lambda: '"GET /api/err?x=2" 200' in s.stderr(), 5.0,
                       what="second access line on stderr")


def test_access_log_unopenable_fails_startup(upstream, sluice_factory, tmp_path):
    path = str(tmp_path / "no-such-dir" / "access.log")
    s = sluice_factory(ops_config(upstream.url, harness.free_port(),
                                  {"path": path, "format": "json"}), start=False)
    s.start(wait=False)
    assert s.wait(10) == 1
    err = s.stderr()
    assert "access_log.path: cannot open '%s'" % path in err, err
