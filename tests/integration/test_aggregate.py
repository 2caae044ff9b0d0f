"""Aggregate routes (issue 11): one client request fans out to several upstreams at once and
gets one JSON answer, each part a request of its own through its upstream's admission,
queue and limits.

Every test runs the real daemon against real loopback upstreams (harness.Upstream; the
default answer is a JSON echo of the request, and upstream.script(...) gives a fixed raw
answer). Each config has one aggregate route (/combo) and, for every upstream, a direct
route /direct/NAME/ so a test can build a backlog on an upstream or check that its
schedule was kept. No test sleeps to wait for a state: they wait on what the upstream
received, on sluice having read a request (harness.RawClient.wait_read), on /status or on
the log. Timing bounds carry tolerances for a noisy 2-core machine running the ASan build.
"""

import json
import re
import time
import urllib.parse

import harness
import test_ops


# --------------------------------------------------------------------------- helpers

ROUTE = "/combo"
TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
PART_HEADERS = ["host", "accept", "x-forwarded-for", "x-forwarded-proto"]


def up_conf(url, rate="100/s", burst=1, queue_size=1000, max_wait="30s", max_in_flight=64,
            connect="2s", response="10s"):
    """One upstream's config (as harness.simple_config writes it)."""
    return {
        "url": url,
        "limits": [{"rate": rate, "burst": burst}],
        "max_in_flight": max_in_flight,
        "queue": {"size": queue_size, "max_wait": max_wait},
        "timeouts": {"connect": connect, "response": response},
        "keepalive": 8,
    }


def yaml_key(name):
    """A part name as a YAML mapping key (harness.to_yaml writes keys as they are); a JSON
    string is a valid YAML double-quoted scalar."""
    return name if re.fullmatch(r"[A-Za-z0-9_]+", name) else json.dumps(name)


def agg_config(upstreams, parts, timeout="2s", max_part_size=None, methods=None,
               admin_port=None, access_log=None, port=None):
    """upstreams: {name: up_conf(...)}; parts: [(part name, upstream name, path)], in order.
    Route /combo is the aggregate; /direct/NAME/ goes to upstream NAME."""
    agg = {"timeout": timeout}
    if max_part_size is not None:
        agg["max_part_size"] = max_part_size
    agg["parts"] = {yaml_key(n): {"upstream": u, "path": p} for n, u, p in parts}
    route = {"path_prefix": ROUTE, "aggregate": agg}
    if methods is not None:
        route["methods"] = list(methods)
    routes = [route] + [{"path_prefix": "/direct/%s/" % n, "strip_prefix": True, "upstream": n}
                        for n in upstreams]
    cfg = {
        "listen": [{"address": "127.0.0.1:%d" % (port or harness.free_port())}],
        "drain_timeout": "5s",
        "log_level": "info",
        "client": {"max_connections": 1024, "max_header_size": "8k", "max_body_size": "1m",
                   "timeout": "60s"},
        "upstreams": upstreams,
        "routes": routes,
    }
    if admin_port is not None:
        cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    if access_log is not None:
        cfg["access_log"] = access_log
    return cfg


def start(sluice_factory, cfg):
    s = sluice_factory(cfg)
    if "admin" in cfg:
        port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
        harness.wait_until(lambda: harness.port_accepts(port), 5.0, what="admin listener")
    return s


def json_answer(body, status="200 OK", ctype="application/json"):
    """A complete raw HTTP answer for upstream.script."""
    body = body if isinstance(body, bytes) else body.encode()
    return ("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, ctype, len(body))).encode() + body


def get(s, path, method="GET", headers=(), body=None, timeout=20.0):
    """One request on its own connection; returns (Response, seconds it took)."""
    t0 = time.monotonic()
    r = harness.http_request(s.port, method, path, headers=headers, body=body, timeout=timeout)
    return r, time.monotonic() - t0


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys in a JSON object: %r" % keys
    return dict(pairs)  # a dict keeps the order the keys were written in


def ordered(resp):
    """The answer's JSON object as [(key, value)] in the order written (no duplicate key at
    any depth), checking the Content-Type on the way."""
    assert resp.header("content-type") == "application/json", resp
    doc = json.loads(resp.body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    assert isinstance(doc, dict), "the answer is not a JSON object: %r" % resp.body[:200]
    return list(doc.items())


def body_of(resp):
    return dict(ordered(resp))


def agg_errors(resp):
    """Sluice-Aggregate-Errors as [(name, reason)] (decoded), None when absent. Checks the
    syntax: `token=token` items separated by ", ", non-token bytes %XX-encoded."""
    v = resp.header("sluice-aggregate-errors")
    if v is None:
        return None
    out = []
    for item in v.split(", "):
        name, sep, reason = item.partition("=")
        assert sep and TCHAR.fullmatch(name) and TCHAR.fullmatch(reason), \
            "malformed Sluice-Aggregate-Errors item %r in %r" % (item, v)
        for tok in (name, reason):
            assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", tok), "bad %%-escape in %r" % tok
        out.append((urllib.parse.unquote(name, errors="strict"),
                    urllib.parse.unquote(reason, errors="strict")))
    return out


def assert_complete(resp, names):
    assert resp.status == 200, resp
    assert resp.header("sluice-aggregate") == "complete", resp
    assert resp.header("sluice-aggregate-errors") is None, resp
    got = ordered(resp)
    assert [k for k, _ in got] == list(names), got
    assert all(v is not None for _, v in got), got
    return dict(got)


def assert_partial(resp, names, errors, status=200):
    """resp is a partial (or, with status 502, failed) answer whose failed parts are exactly
    `errors` ([(name, reason)] in configured order), null in the body."""
    assert resp.status == status, resp
    assert resp.header("sluice-aggregate") == "partial", resp
    assert agg_errors(resp) == errors, resp
    got = ordered(resp)
    assert [k for k, _ in got] == list(names), got
    failed = {n for n, _ in errors}
    for k, v in got:
        assert (v is None) == (k in failed), "part %r is %r (failed: %r)" % (k, v, failed)
    return dict(got)


def targets(upstream):
    return [r.target for r in upstream.requests]


def status_of(admin_port, name):
    st = harness.http_request(admin_port, "GET", "/status").json()
    return [u for u in st["upstreams"] if u["name"] == name][0]


def three(make_upstream):
    return make_upstream(), make_upstream(), make_upstream()


# --------------------------------------------------------------------------- complete

def test_complete_three_parts_exact_body_and_order(make_upstream, sluice_factory):
    """Three upstreams, three parts: 200 application/json whose body is exactly
    {"weather": <its JSON>, "news": <its JSON>, "stock": <its JSON>} in the configured
    order (not alphabetical, not arrival order), each part's JSON embedded as the value it
    is; Sluice-Aggregate: complete and no errors header. Each part is a GET of its path with
    the client's query appended ('&' after a path that has a query), carrying none of the
    client's headers: only Host (the upstream's), Accept: application/json and
    X-Forwarded-For/-Proto."""
    w, n, st = three(make_upstream)
    fixed = '{"temp": 21.5, "tags": ["a", "b"], "nested": {"x": null, "ok": true}, "n": -3}'
    news_tail = n.script("top", json_answer(fixed))
    cfg = agg_config({"weather": up_conf(w.url), "news": up_conf(n.url),
                      "stocks": up_conf(st.url)},
                     [("weather", "weather", "/v1/now"), ("news", "news", "/" + news_tail),
                      ("stock", "stocks", "/quote?s=ACME")])
    s = start(sluice_factory, cfg)
    r, took = get(s, ROUTE + "?city=Paris&x=%22", headers=[
        ("Cookie", "session=secret"), ("Authorization", "Bearer x"), ("X-Custom", "1"),
        ("User-Agent", "agg-test"), ("Accept", "text/html")])
    body = assert_complete(r, ["weather", "news", "stock"])
    assert r.header("content-length") == str(len(r.body)), r
    assert body["news"] == json.loads(fixed)
    (wr,), (nr,), (sr,) = w.requests, n.requests, st.requests
    assert wr.target == "/v1/now?city=Paris&x=%22"
    assert nr.target == "/raw?s=top&city=Paris&x=%22"
    assert sr.target == "/quote?s=ACME&city=Paris&x=%22"
    for up, req in ((w, wr), (n, nr), (st, sr)):
        assert req.method == "GET" and req.body == b"", req
        assert req.header_names() == PART_HEADERS, req.headers
        assert req.header("host") == up.hostport
        assert req.header("accept") == "application/json"
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("x-forwarded-proto") == "http"
    # the echoes embedded are the upstreams' own answers, value for value
    for key, req in (("weather", wr), ("stock", sr)):
        assert body[key] == {"method": "GET", "target": req.target,
                             "headers": [list(h) for h in req.headers], "body_len": 0,
                             "body_sha256": harness.pattern_sha256(0),
                             "conn_id": req.conn_id}, body[key]
    # the raw text keeps the configured order too (no re-sorting by a JSON library)
    text = r.body.decode()
    assert text.index('"weather"') < text.index('"news"') < text.index('"stock"'), text


# --------------------------------------------------------------------------- partial / failed

def test_partial_connect_notjson_404_and_timeout(make_upstream, sluice_factory):
    """Five parts: one fine, one on a closed port (upstream_connect), one answering 200
    text/plain (not_json), one 404 (status_404) and one that takes 8 s against an aggregate
    timeout of 1.5 s (deadline). The answer is 200 partial at ~1.5 s (not 8 s): the good
    part's JSON, null for each failed one, and Sluice-Aggregate-Errors naming each failure
    in the configured order. The slow part did reach its upstream (it was in flight, then
    cut)."""
    ok, text, missing, slow = (make_upstream() for _ in range(4))
    text_tail = text.script("t", json_answer("hello, not json\n", ctype="text/plain"))
    cfg = agg_config({"ok": up_conf(ok.url), "down": up_conf(harness.down_url()),
                      "text": up_conf(text.url), "missing": up_conf(missing.url),
                      "slow": up_conf(slow.url)},
                     [("good", "ok", "/v1/now"), ("connect", "down", "/x"),
                      ("notjson", "text", "/" + text_tail),
                      ("missing", "missing", "/status/404"),
                      ("slow", "slow", "/slow?ms=8000")],
                     timeout="1500ms")
    s = start(sluice_factory, cfg)
    r, took = get(s, ROUTE)
    names = ["good", "connect", "notjson", "missing", "slow"]
    body = assert_partial(r, names, [("connect", "upstream_connect"), ("notjson", "not_json"),
                                     ("missing", "status_404"), ("slow", "deadline")])
    assert body["good"]["target"] == "/v1/now"
    assert 1.4 <= took <= 2.5, "partial answer after %.2fs, the timeout is 1.5s" % took
    assert targets(slow) == ["/slow?ms=8000"], "the slow part never went out"
    assert targets(text) == ["/raw?s=t"] and targets(missing) == ["/status/404"]


def test_all_parts_failed_502_with_headers(make_upstream, sluice_factory):
    """Every part fails (closed port, 404, text/plain 200): 502 application/json, every
    part null in the body, Sluice-Aggregate: partial and the errors header naming each."""
    missing, text = make_upstream(), make_upstream()
    tail = text.script("t", json_answer("plain", ctype="text/plain"))
    cfg = agg_config({"down": up_conf(harness.down_url()), "missing": up_conf(missing.url),
                      "text": up_conf(text.url)},
                     [("a", "down", "/a"), ("b", "missing", "/status/404"),
                      ("c", "text", "/" + tail)])
    s = start(sluice_factory, cfg)
    r, _ = get(s, ROUTE)
    assert_partial(r, ["a", "b", "c"], [("a", "upstream_connect"), ("b", "status_404"),
                                        ("c", "not_json")], status=502)
    assert body_of(r) == {"a": None, "b": None, "c": None}


# --------------------------------------------------------------------------- concurrency

def test_parts_run_concurrently(make_upstream, sluice_factory):
    """Three parts of 600 ms each on three upstreams: complete in under 1 s (the slowest
    part's time, not the 1.8 s sum), and the three requests reached their upstreams within
    a few hundred ms of one another."""
    ups = three(make_upstream)
    cfg = agg_config({"u%d" % i: up_conf(u.url) for i, u in enumerate(ups)},
                     [("p%d" % i, "u%d" % i, "/slow?ms=600") for i in range(3)])
    s = start(sluice_factory, cfg)
    r, took = get(s, ROUTE)
    assert_complete(r, ["p0", "p1", "p2"])
    assert 0.55 <= took < 1.0, "three 600 ms parts took %.2fs" % took
    arrivals = [u.requests[0].t for u in ups]
    assert max(arrivals) - min(arrivals) < 0.3, arrivals


# --------------------------------------------------------------------------- rate limits

def test_per_part_rate_limits_two_aggregates(make_upstream, sluice_factory):
    """Three upstreams at 1/s (burst 1), two aggregates sent at once: both complete, the
    first at once and the second ~1 s after it (each of its parts waited for its
    upstream's next token); each upstream got exactly 2 requests, ~1 s apart."""
    ups = three(make_upstream)
    cfg = agg_config({"u%d" % i: up_conf(u.url, rate="1/s", burst=1)
                      for i, u in enumerate(ups)},
                     [("p%d" % i, "u%d" % i, "/item") for i in range(3)], timeout="5s")
    s = start(sluice_factory, cfg)
    t0 = time.monotonic()
    res = harness.run_concurrent(s.port, [ROUTE + "?c=1", ROUTE + "?c=2"], timeout=15)
    for resp, err, _ in res:
        assert err is None, err
        assert_complete(resp, ["p0", "p1", "p2"])
    done = sorted(t for _, _, t in res)
    assert done[0] - t0 < 0.8, "the first aggregate should not wait: %.2fs" % (done[0] - t0)
    assert 0.75 <= done[1] - done[0] <= 1.6, "second answer %.2fs after the first" % (
        done[1] - done[0])
    for u in ups:
        reqs = u.wait_for(2)
        assert len(u.requests) == 2, targets(u)
        assert sorted(r.target for r in reqs) == ["/item?c=1", "/item?c=2"]
        # >= 0.8, not 1.0: the first went on a new connection (its connect time counts),
        # the second on the pooled one
        assert reqs[1].t - reqs[0].t >= 0.8, "1/s upstream got two within %.2fs" % (
            reqs[1].t - reqs[0].t)
    # each aggregate's parts were embedded from its own requests
    for resp, _, _ in res:
        c = [v["target"] for v in body_of(resp).values()]
        assert len(set(c)) == 1 and c[0].startswith("/item?c="), c


# --------------------------------------------------------------------------- deadlines

def backlog(s, upstream, name, n, first_fresh=True):
    """Take name's token with one direct request (waits until it arrived), then queue n more
    behind it; returns the clients (the first one included)."""
    clients = []
    if first_fresh:
        clients.append(harness.RawClient(s.port).send("/direct/%s/b0" % name))
        upstream.wait_for(1)
    for i in range(1, n + 1):
        clients.append(harness.RawClient(s.port).send("/direct/%s/b%d" % (name, i)).wait_read())
    return clients


def test_predicted_deadline_fails_part_at_once(make_upstream, sluice_factory):
    """An upstream at 1/s with a backlog of 4 (one sent, three queued: the next slot is
    ~3 s away, past the aggregate's 2 s timeout). Its part fails at once with `deadline`:
    the partial answer comes well before the timeout, the other parts are there, the
    upstream never receives the part, and the failed part held no place: a direct request
    sent next is released one interval after the backlog, on schedule."""
    w, n, st = three(make_upstream)
    cfg = agg_config({"weather": up_conf(w.url), "news": up_conf(n.url, rate="1/s"),
                      "stocks": up_conf(st.url)},
                     [("weather", "weather", "/v1/now"), ("news", "news", "/top"),
                      ("stock", "stocks", "/quote")], timeout="2s")
    s = start(sluice_factory, cfg)
    clients = backlog(s, n, "news", 3)
    try:
        r, took = get(s, ROUTE)
        assert_partial(r, ["weather", "news", "stock"], [("news", "deadline")])
        assert took < 1.0, "predicted deadline answered after %.2fs (timeout 2s)" % took
        after = harness.RawClient(s.port).send("/direct/news/after").wait_read()
        clients.append(after)
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [x.status for x in rs] == [200] * 5, rs
    reqs = n.wait_for(5)
    assert [q.target for q in reqs] == ["/b0", "/b1", "/b2", "/b3", "/after"], reqs
    gap = reqs[4].t - reqs[3].t
    assert 0.7 <= gap <= 1.4, "the request after the failed part waited %.2fs more" % gap
    assert "/top" not in targets(n)


def test_deadline_withdraws_queued_part(make_upstream, sluice_factory):
    """A part admitted (its token is due within the timeout) but held in the queue by
    max_in_flight 1, the only slot taken by a 3.5 s request: at the aggregate's 1.5 s
    timeout it is withdrawn and the answer goes out partial (deadline) at ~1.5 s. Nothing
    of it is ever sent and it spent no token: right after the answer the bucket is full
    (the token due 1 s after the slow request was not taken for the part), /status counts
    it withdrawn, and once the slow request ends the next direct request goes at once."""
    w, n = make_upstream(), make_upstream()
    ap = harness.free_port()
    cfg = agg_config({"weather": up_conf(w.url),
                      "news": up_conf(n.url, rate="1/s", burst=1, max_in_flight=1)},
                     [("weather", "weather", "/v1/now"), ("news", "news", "/top")],
                     timeout="1500ms", admin_port=ap)
    s = start(sluice_factory, cfg)
    slow = harness.RawClient(s.port).send("/direct/news/slow?ms=3500")
    try:
        n.wait_for(1)
        r, took = get(s, ROUTE)
        news = status_of(ap, "news")
        assert_partial(r, ["weather", "news"], [("news", "deadline")])
        assert 1.4 <= took <= 2.3, "answer after %.2fs, the timeout is 1.5s" % took
        assert news["in_flight"] == 1, "test too slow: the slow request is over"
        assert news["queue_depth"] == 0, news
        assert news["counters"]["withdrawn"] == 1 and news["counters"]["released"] == 1, news
        assert news["limits"][0]["tokens"] >= 0.99, \
            "a token was taken for the withdrawn part: %r" % news["limits"]
        assert slow.response().status == 200
    finally:
        slow.close()
    r2, _ = get(s, "/direct/news/next")
    assert r2.status == 200 and harness.queue_wait_ms(r2) < 300, r2
    assert targets(n) == ["/slow?ms=3500", "/next"], targets(n)


# --------------------------------------------------------------------------- hang-up

def test_client_hangup_withdraws_queued_part(make_upstream, sluice_factory):
    """The client sends the aggregate and closes while its news part is queued behind a
    backlog at 1/s and its stock part is in flight (a 4 s answer). The news part is
    withdrawn (counted withdrawn, never sent, even past the time it would have been
    released), the stock part is cut (in_flight back to 0 long before its 4 s), and no
    token was spent: a direct request sent next is released on the part's slot, one
    interval after the backlog."""
    w, n, st = three(make_upstream)
    ap = harness.free_port()
    cfg = agg_config({"weather": up_conf(w.url), "news": up_conf(n.url, rate="1/s"),
                      "stocks": up_conf(st.url)},
                     [("weather", "weather", "/v1/now"), ("news", "news", "/top"),
                      ("stock", "stocks", "/slow?ms=4000")], timeout="10s", admin_port=ap)
    s = start(sluice_factory, cfg)
    clients = backlog(s, n, "news", 2)
    try:
        agg = harness.RawClient(s.port).send(ROUTE).wait_read()
        w.wait_for(1)
        st.wait_for(1)
        harness.wait_until(lambda: status_of(ap, "news")["counters"]["admitted"] == 4, 2.0,
                           what="the news part admitted behind the backlog")
        assert "/top" not in targets(n)
        assert status_of(ap, "stocks")["in_flight"] == 1
        t_close = time.monotonic()
        agg.close()
        harness.wait_until(lambda: status_of(ap, "news")["counters"]["withdrawn"] == 1, 2.0,
                           what="the news part withdrawn")
        harness.wait_until(lambda: status_of(ap, "stocks")["in_flight"] == 0, 2.0,
                           what="the stock part cut")
        assert time.monotonic() - t_close < 2.5, "taking the parts back took too long"
        after = harness.RawClient(s.port).send("/direct/news/after").wait_read()
        clients.append(after)
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [x.status for x in rs] == [200] * 4, rs
    reqs = n.wait_for(4)
    assert [q.target for q in reqs] == ["/b0", "/b1", "/b2", "/after"], reqs
    gap = reqs[3].t - reqs[2].t
    assert 0.7 <= gap <= 1.4, "the request after the withdrawn part: gap %.2fs" % gap
    assert 2.6 <= reqs[3].t - reqs[0].t <= 3.6, [q.t - reqs[0].t for q in reqs]
    assert "/top" not in targets(n)
    assert status_of(ap, "news")["counters"]["released"] == 4


def test_client_hangup_parts_counted_client_closed(make_upstream, sluice_factory, tmp_path):
    """When the client leaves, the aggregate and each part it took back (one queued, one in
    flight) are counted and logged as 499 client_closed, as the README says of every
    request whose client left; each part's log line names its aggregate."""
    w, n = make_upstream(), make_upstream()
    ap = harness.free_port()
    log = str(tmp_path / "access.json")
    cfg = agg_config({"weather": up_conf(w.url), "news": up_conf(n.url, rate="1/s")},
                     [("weather", "weather", "/slow?ms=4000"), ("news", "news", "/top")],
                     timeout="10s", admin_port=ap, access_log={"path": log, "format": "json"})
    s = start(sluice_factory, cfg)
    clients = backlog(s, n, "news", 0)
    try:
        agg = harness.RawClient(s.port).send(ROUTE).wait_read()
        w.wait_for(1)
        harness.wait_until(lambda: status_of(ap, "news")["counters"]["admitted"] == 2, 2.0,
                           what="the news part admitted")
        agg.close()
        harness.wait_until(lambda: status_of(ap, "news")["counters"]["withdrawn"] == 1, 2.0,
                           what="the news part withdrawn")
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [x.status for x in rs] == [200]
    lines = test_ops.json_lines(log, 4)
    (parent,) = [e for e in lines if e["target"] == ROUTE]
    parts = sorted((e for e in lines if e.get("parent") == parent["req"]),
                   key=lambda e: e["upstream"])
    assert (parent["status"], parent["reason"]) == (499, "client_closed"), parent
    assert [(e["upstream"], e["target"], e["status"], e["reason"]) for e in parts] == [
        ("news", "/top", 499, "client_closed"),
        ("weather", "/slow?ms=4000", 499, "client_closed")], parts
    m = test_ops.scrape(ap)
    got = {k: v for k, v in test_ops.requests_total(m).items() if k[1] == ROUTE}
    assert got == {("", ROUTE, "499", "client_closed"): 1,
                   ("news", ROUTE, "499", "client_closed"): 1,
                   ("weather", ROUTE, "499", "client_closed"): 1}, got


# --------------------------------------------------------------------------- reload

def test_reload_while_parts_queued(make_upstream, sluice_factory):
    """SIGHUP (a new file: news goes 1/s -> 2/s, weather's rate changes, the aggregate's
    timeout too) while the news part is queued behind a backlog: the answer still comes
    complete, the part reaching news once, after the reload; the backlog is answered
    too."""
    w, n, st = three(make_upstream)
    parts = [("weather", "weather", "/v1/now"), ("news", "news", "/top"),
             ("stock", "stocks", "/quote")]
    ups = {"weather": up_conf(w.url), "news": up_conf(n.url, rate="1/s"),
           "stocks": up_conf(st.url)}
    cfg = agg_config(ups, parts, timeout="8s")
    s = start(sluice_factory, cfg)
    clients = backlog(s, n, "news", 2)
    try:
        agg = harness.RawClient(s.port).send(ROUTE).wait_read()
        clients.append(agg)
        w.wait_for(1)
        st.wait_for(1)
        new = agg_config({"weather": up_conf(w.url, rate="50/s"),
                          "news": up_conf(n.url, rate="2/s"), "stocks": up_conf(st.url)},
                         parts, timeout="9s", port=s.port)
        harness.reload_ok(s, new)
        t_reloaded = time.monotonic()
        assert "/top" not in targets(n), "test too slow: the part left before the reload"
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [x.status for x in rs[:3]] == [200] * 3, rs
    assert_complete(rs[3], ["weather", "news", "stock"])
    top = [q for q in n.requests if q.target == "/top"]
    assert len(top) == 1 and top[0].t > t_reloaded - 0.05, targets(n)
    assert targets(n) == ["/b0", "/b1", "/b2", "/top"]
    assert len(w.requests) == 1 and len(st.requests) == 1


# --------------------------------------------------------------------------- bounds, names

def test_part_over_max_part_size_too_large(make_upstream, sluice_factory):
    """max_part_size 1k: a 4 KB JSON part fails too_large, one of exactly 1024 bytes is
    fine (the limit is inclusive), one of 1025 bytes fails too_large."""
    a, b, c = three(make_upstream)

    def sized(n):
        doc = '{"pad":"' + "x" * (n - 10) + '"}'
        assert len(doc) == n
        return doc

    ta = a.script("big", json_answer(sized(4096)))
    tb = b.script("exact", json_answer(sized(1024)))
    tc = c.script("over", json_answer(sized(1025)))
    cfg = agg_config({"a": up_conf(a.url), "b": up_conf(b.url), "c": up_conf(c.url)},
                     [("big", "a", "/" + ta), ("exact", "b", "/" + tb),
                      ("over", "c", "/" + tc)], max_part_size="1k")
    s = start(sluice_factory, cfg)
    r, _ = get(s, ROUTE)
    body = assert_partial(r, ["big", "exact", "over"], [("big", "too_large"),
                                                       ("over", "too_large")])
    assert body["exact"] == json.loads(sized(1024))


def test_part_names_needing_escapes(make_upstream, sluice_factory):
    """Part names with a quote and a backslash, non-ASCII letters, a snowman and a space,
    and '%', ',', '=': the body is valid UTF-8 JSON with exactly those keys in order; the
    failed ones appear in Sluice-Aggregate-Errors as tokens (%XX for every other byte) that
    decode back to the names."""
    a, b = make_upstream(), make_upstream()
    names = ['a"b\\c', "météo", "雪 ☃", "50%,x=y"]
    cfg = agg_config({"a": up_conf(a.url), "b": up_conf(b.url)},
                     [(names[0], "a", "/one"), (names[1], "a", "/two"),
                      (names[2], "b", "/status/404"), (names[3], "b", "/status/404")])
    s = start(sluice_factory, cfg)
    r, _ = get(s, ROUTE)
    body = assert_partial(r, names, [(names[2], "status_404"), (names[3], "status_404")])
    assert body[names[0]]["target"] == "/one" and body[names[1]]["target"] == "/two"
    raw = r.header("sluice-aggregate-errors")
    assert raw == "%E9%9B%AA%20%E2%98%83=status_404, 50%25%2Cx%3Dy=status_404", raw


# --------------------------------------------------------------------------- methods

def fixed_parts(ups):
    """Scripted fixed JSON answers (so two answers are byte for byte alike)."""
    return [("p%d" % i, "u%d" % i, "/" + u.script("f", json_answer('{"i": %d}' % i)))
            for i, u in enumerate(ups)]


def test_head_same_head_as_get_no_body(make_upstream, sluice_factory):
    """HEAD on an aggregate route: the parts are sent as GETs, the answer has the GET's
    status and headers (Content-Type, Sluice-Aggregate, Content-Length) and no body."""
    ups = three(make_upstream)
    cfg = agg_config({"u%d" % i: up_conf(u.url) for i, u in enumerate(ups)}, fixed_parts(ups))
    s = start(sluice_factory, cfg)
    g, _ = get(s, ROUTE)
    assert_complete(g, ["p0", "p1", "p2"])
    with harness.connect(s.port) as sock:
        sock.sendall(harness.build_request("HEAD", ROUTE, "127.0.0.1:%d" % s.port))
        with sock.makefile("rb") as f:
            h = harness.read_response(f, "HEAD")
            rest = f.read()
    assert h.status == g.status == 200

    def comparable(resp):
        return sorted((k.lower(), v) for k, v in resp.headers if k.lower() not in
                      ("date", "connection"))
    problems = []
    if rest != b"":
        problems.append("the HEAD answer carried %d bytes after its head: %r"
                        % (len(rest), rest[:200]))
    if comparable(h) != comparable(g):
        problems.append("HEAD headers %r differ from GET's %r" % (h.headers, g.headers))
    assert not problems, "\n".join(problems)
    for u in ups:
        assert [q.method for q in u.requests] == ["GET", "GET"], u.requests


def test_post_refused_405_by_default(make_upstream, sluice_factory):
    """Without `methods:` only GET and HEAD: POST, PUT, PATCH, DELETE and OPTIONS get 405
    method_not_allowed, with an Allow header naming what this route takes, and nothing
    reaches any upstream."""
    ups = three(make_upstream)
    cfg = agg_config({"u%d" % i: up_conf(u.url) for i, u in enumerate(ups)},
                     [("p%d" % i, "u%d" % i, "/echo") for i in range(3)])
    s = start(sluice_factory, cfg)
    for m in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        r, _ = get(s, ROUTE, method=m, body=b'{"q": 1}' if m != "OPTIONS" else None)
        harness.assert_sluice_error(r, 405, "method_not_allowed")
        allow = {x.strip() for x in (r.header("allow") or "").split(",")}
        assert allow == {"GET", "HEAD"}, "405 from %s: Allow %r" % (m, r.header("allow"))
    assert [u.count for u in ups] == [0, 0, 0]


def test_post_allowed_when_listed_body_reaches_every_part(make_upstream, sluice_factory):
    """`methods: [POST]`: a POST's body reaches every part (each a POST with that body,
    answered by /echo), so the answer embeds it three times; GET on that route is now
    405."""
    ups = three(make_upstream)
    cfg = agg_config({"u%d" % i: up_conf(u.url) for i, u in enumerate(ups)},
                     [("p%d" % i, "u%d" % i, "/echo") for i in range(3)], methods=["POST"])
    s = start(sluice_factory, cfg)
    payload = b'{"q": [1, 2, {"k": "v\\u00e9"}]}'
    r, _ = get(s, ROUTE, method="POST", body=payload,
               headers=[("Content-Type", "application/json")])
    body = assert_complete(r, ["p0", "p1", "p2"])
    assert body == {"p%d" % i: json.loads(payload) for i in range(3)}
    for u in ups:
        (q,) = u.requests
        assert q.method == "POST" and q.body == payload, q
        assert q.header("content-length") == str(len(payload))
    g, _ = get(s, ROUTE)
    harness.assert_sluice_error(g, 405, "method_not_allowed")
    assert [u.count for u in ups] == [1, 1, 1]


# --------------------------------------------------------------------------- metrics, log

def test_metrics_and_access_log_match_what_clients_saw(make_upstream, sluice_factory,
                                                         tmp_path):
    """Three aggregates whose parts answer what the client's query picks (each upstream has
    its own script under the same name): all fine (complete), mixed (partial) and all bad
    (502). sluice_aggregate_answers_total, sluice_aggregate_parts_total and the duration
    summary say exactly what the clients saw (exposition checked, part and reason labels
    exactly the names); each part is one sluice_requests_total sample under its upstream
    with route /combo. The JSON access log has one line per aggregate and one per part, each
    part's line with parent = its aggregate's req."""
    a, b, c = three(make_upstream)
    ok = json_answer('{"ok": 1}')
    for u in (a, b, c):
        u.script("ok", ok)
    a.script("mix", ok)
    b.script("mix", json_answer("plain", ctype="text/plain"))
    c.script("mix", json_answer("{}", status="404 Not Found"))
    a.script("bad", json_answer("{}", status="500 Internal Server Error"))
    b.script("bad", json_answer("plain", ctype="text/plain"))
    c.script("bad", json_answer("{}", status="404 Not Found"))
    ap = harness.free_port()
    log = str(tmp_path / "access.json")
    cfg = agg_config({"A": up_conf(a.url), "B": up_conf(b.url), "C": up_conf(c.url)},
                     [("a", "A", "/raw"), ("b", "B", "/raw"), ("c", "C", "/raw")],
                     admin_port=ap, access_log={"path": log, "format": "json"})
    s = start(sluice_factory, cfg)
    before = test_ops.scrape(ap)
    assert test_ops.series(before, "sluice_aggregate_parts_total") == {}
    st = harness.http_request(ap, "GET", "/status").json()
    assert st["aggregates"] == {ROUTE: {
        "answers": {"complete": 0, "partial": 0, "failed": 0}, "mean_ms": None,
        "parts": {"a": {}, "b": {}, "c": {}}}}, st["aggregates"]
    seen = {}
    for q in ("ok", "mix", "bad"):
        r, _ = get(s, ROUTE + "?s=" + q, headers=[("User-Agent", "agg/" + q)])
        seen[q] = r
    assert seen["ok"].status == 200 and seen["ok"].header("sluice-aggregate") == "complete"
    assert seen["mix"].status == 200 and seen["mix"].header("sluice-aggregate") == "partial"
    assert seen["bad"].status == 502

    # what the clients saw, as counters
    outcomes = harness.Counter()
    parts = harness.Counter()
    for r in seen.values():
        outcomes["failed" if r.status == 502 else
                 "complete" if r.header("sluice-aggregate") == "complete" else "partial"] += 1
        errs = dict(agg_errors(r) or [])
        for name in ("a", "b", "c"):
            parts[(name, errs.get(name, "ok"))] += 1
    assert parts == {("a", "ok"): 2, ("a", "status_500"): 1, ("b", "ok"): 1,
                     ("b", "not_json"): 2, ("c", "ok"): 1, ("c", "status_404"): 2}, parts

    raw = harness.http_request(ap, "GET", "/metrics").body
    assert b"\x00" not in raw, "NUL bytes in /metrics: %r" % [
        line for line in raw.split(b"\n") if b"\x00" in line]
    m = test_ops.scrape(ap)
    got_outcomes = {dict(k)["outcome"]: v for k, v in
                    test_ops.series(m, "sluice_aggregate_answers_total", route=ROUTE).items()}
    assert got_outcomes == {k: outcomes[k] for k in ("complete", "partial", "failed")}
    got_parts = {(dict(k)["part"], dict(k)["reason"]): v for k, v in
                 test_ops.series(m, "sluice_aggregate_parts_total", route=ROUTE).items()}
    assert got_parts == dict(parts), got_parts
    assert test_ops.value(m, "sluice_aggregate_duration_seconds_count", route=ROUTE) == 3
    assert 0 < test_ops.value(m, "sluice_aggregate_duration_seconds_sum", route=ROUTE) < 10
    # /status counts the same
    st = harness.http_request(ap, "GET", "/status").json()["aggregates"][ROUTE]
    assert st["answers"] == got_outcomes, st
    assert {(p, r): n for p, rs in st["parts"].items() for r, n in rs.items()} == dict(parts), st
    want_ms = test_ops.value(m, "sluice_aggregate_duration_seconds_sum", route=ROUTE) / 3 * 1000
    assert abs(st["mean_ms"] - want_ms) <= want_ms * 1e-3, (st, want_ms)
    per = harness.Counter()
    for (up, route, status, reason), v in test_ops.requests_total(m).items():
        assert route == ROUTE, (up, route)
        per[(up, status)] += v
    # each part under its upstream; each aggregate once, with no upstream (its reason
    # label is not checked: the 502 carries no Sluice-Reason to compare it with)
    assert per == {("A", "200"): 2, ("A", "500"): 1, ("B", "200"): 3, ("C", "200"): 1,
                   ("C", "404"): 2, ("", "200"): 2, ("", "502"): 1}, per

    lines = test_ops.json_lines(log, 12)
    aggs = [e for e in lines if "parent" not in e]
    assert [(e["target"], e["status"], e["route"], e["upstream"]) for e in
            sorted(aggs, key=lambda e: e["req"])] == [
        ("/combo?s=ok", 200, ROUTE, None), ("/combo?s=mix", 200, ROUTE, None),
        ("/combo?s=bad", 502, ROUTE, None)]
    for e in aggs:
        mine = sorted((x for x in lines if x.get("parent") == e["req"]),
                      key=lambda x: x["upstream"])
        q = e["target"].split("=")[1]
        assert [(x["upstream"], x["target"], x["method"], x["route"]) for x in mine] == \
            [(u, "/raw?s=" + q, "GET", ROUTE) for u in ("A", "B", "C")], mine
        assert all(x["user_agent"] == "agg/" + q for x in mine), mine
        assert e["user_agent"] == "agg/" + q
    assert len({e["req"] for e in lines}) == 12
