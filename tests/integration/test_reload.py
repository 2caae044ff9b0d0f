"""Live reload on SIGHUP, with the real daemon and real upstreams.

What a reload must do (proxy/reload.h): load and validate the whole new file, then apply
it all or nothing. Queued requests stay queued (an upstream kept by name keeps its queue
and its token balance, a new rate applies from the reload on), a removed upstream drains
its queue under its old settings, listeners are added, kept or closed to match, and an
invalid file leaves the old configuration serving with FILE:LINE:COL in the log.

Each reload here writes the new file atomically (write + rename), sends SIGHUP and waits
for the daemon to log the outcome ("reloaded", "reload failed" or "reload ignored"), so
no test guesses how long a reload takes. Timing assertions carry tolerances for a noisy
2-core machine running the ASan build.
"""

import asyncio
import io
import re
import signal
import socket
import statistics
import threading
import time


import harness


# --------------------------------------------------------------------------- helpers

def with_admin(cfg, admin_port):
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    return cfg


def metric(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, "no %s%r in /metrics" % (name, labels)
    return samples[key]


def refused(port):
    """True when a connect to port is refused (nothing listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return False
    except ConnectionRefusedError:
        return True


def gaps(times):
    ts = sorted(times)
    return [b - a for a, b in zip(ts, ts[1:])]


def targets(upstream):
    return [r.target for r in upstream.requests]


def assert_each_once(upstream, expected):
    got = harness.Counter(targets(upstream))
    twice = {t: n for t, n in got.items() if n > 1}
    assert not twice, "upstream got these more than once: %r" % twice
    missing = set(expected) - set(got)
    assert not missing, "upstream never got: %r" % sorted(missing)
    extra = set(got) - set(expected)
    assert not extra, "upstream got unexpected: %r" % sorted(extra)


def queue_on(port, paths, **kw):
    """One RawClient per path, each sent after the previous one was read by sluice, so the
    order they are queued in is the order given."""
    clients = []
    for p in paths:
        clients.append(harness.RawClient(port).send(p, **kw).wait_read())
    return clients


# --------------------------------------------------------------------------- valid reload

def test_valid_reload_under_traffic_changes_rate_and_loses_nothing(upstream, sluice_factory):
    """10 requests queued at 2/s; after two have gone, the file says 10/s and SIGHUP: every
    client gets 200, the upstream gets each once, and the gaps drop from 0.5 s to 0.1 s."""
    n = 10
    admin_port = harness.free_port()
    cfg = with_admin(harness.simple_config(upstream.url, rate="2/s", burst=1,
                                           max_wait="20s"), admin_port)
    s = sluice_factory(cfg)
    paths = ["/api/q/%d" % i for i in range(n)]
    clients = queue_on(s.port, paths)
    try:
        upstream.wait_for(2, timeout=5)
        faster = harness.simple_config(upstream.url, port=s.port, rate="10/s", burst=1,
                                       max_wait="20s")
        with_admin(faster, admin_port)
        t_hup = time.monotonic()
        line = harness.reload_ok(s, faster)
        t_done = time.monotonic()
        queued_at_reload = n - upstream.count
        assert queued_at_reload >= 5, \
            "test too slow: only %d still queued when the reload was applied" % queued_at_reload
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [r.status for r in rs] == [200] * n, rs
    assert all(r.json()["target"] == "/q/%d" % i for i, r in enumerate(rs)), \
        "a client got another client's answer"
    reqs = upstream.wait_for(n)
    assert_each_once(upstream, ["/q/%d" % i for i in range(n)])
    assert [r.target for r in reqs] == ["/q/%d" % i for i in range(n)], "FIFO order lost"
    assert "reloaded %s" % s.config_path in line

    before = [r.t for r in reqs if r.t < t_hup]
    after = [r.t for r in reqs if r.t > t_done]
    assert len(before) >= 2 and len(after) >= 4, (before, after, t_hup, t_done)
    assert min(gaps(before)) >= 0.4, "2/s before the reload: gaps %r" % gaps(before)
    assert statistics.median(gaps(after)) <= 0.2, "10/s after the reload: gaps %r" % gaps(after)
    harness.assert_rate(after, 10, 1, windows=(0.5, 1.0))
    # At 2/s the rest would have taken >= 3.5 s more.
    assert max(after) - t_done < 2.0, "gaps after the reload %r" % gaps(after)

    m = harness.scrape(admin_port)
    assert metric(m, "sluice_config_reloads_total", result="ok") == 2  # start-up + reload
    assert metric(m, "sluice_config_reloads_total", result="failed") == 0
    assert metric(m, "sluice_config_last_reload_success") == 1


# --------------------------------------------------------------------------- invalid reload

# Each file is wrong in one place, and would also change the rate to 100/s and (but for
# the bind case) add a listener on {newport}, so a half-applied reload would show.
BAD_SYNTAX = """\
listen:
  - address: 127.0.0.1:{port}
  - address: 127.0.0.1:{newport}
admin:
  address: 127.0.0.1:{admin}
upstreams:
  api:
    url: {url}
    limits: [{{ rate: 100/s, burst: 1 }}
    queue: {{ size: 100, max_wait: 10s }}
routes:
  - path_prefix: /api/
    strip_prefix: true
    upstream: api
"""

BAD_UNKNOWN_KEY = """\
listen:
  - address: 127.0.0.1:{port}
  - address: 127.0.0.1:{newport}
admin:
  address: 127.0.0.1:{admin}
upstreams:
  api:
    url: {url}
    limits:
      - {{ rate: 100/s, burst: 1 }}
    queue: {{ size: 100, max_wait: 10s, max_wiat: 20s }}
routes:
  - path_prefix: /api/
    strip_prefix: true
    upstream: api
"""

BAD_DANGLING = """\
listen:
  - address: 127.0.0.1:{port}
  - address: 127.0.0.1:{newport}
admin:
  address: 127.0.0.1:{admin}
upstreams:
  api:
    url: {url}
    limits:
      - {{ rate: 100/s, burst: 1 }}
routes:
  - path_prefix: /api/
    strip_prefix: true
    upstream: api
  - path_prefix: /new/
    upstream: apii
"""

# Valid for -t, fails only when applied: the second listener's port is taken.
BAD_BIND = """\
listen:
  - address: 127.0.0.1:{port}
  - address: 127.0.0.1:{busy}
admin:
  address: 127.0.0.1:{admin}
upstreams:
  api:
    url: {url}
    limits:
      - {{ rate: 100/s, burst: 1 }}
routes:
  - path_prefix: /api/
    strip_prefix: true
    upstream: api
"""

BAD_RELOADS = [
    # (name, file, expected "LINE:COL: text" after the file name)
    ("syntax", BAD_SYNTAX, r"10:5: did not find expected ',' or ']'"),
    ("unknown key", BAD_UNKNOWN_KEY, r"11:40: upstreams\.api\.queue\.max_wiat: unknown key"),
    ("dangling upstream", BAD_DANGLING, r"16:15: routes\[1\]\.upstream: no upstream named 'apii'"),
    ("port taken", BAD_BIND, r"3:5: listen 127\.0\.0\.1:\d+: cannot bind"),
]


def test_invalid_reloads_keep_the_old_config(upstream, sluice_factory):
    """Each bad file: "reload failed" with FILE:LINE:COL in the log, the failed-reload counter
    goes up by one, nothing of the file is applied (no new listener, still 5/s), and the
    old configuration keeps answering. A good file afterwards is applied."""
    admin_port = harness.free_port()
    cfg = with_admin(harness.simple_config(upstream.url, rate="5/s", burst=1), admin_port)
    s = sluice_factory(cfg)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    sent = 0
    try:
        for i, (name, text, expected) in enumerate(BAD_RELOADS):
            newport = harness.free_port()
            line = harness.reload(s, text.format(port=s.port, newport=newport, admin=admin_port,
                                         url=upstream.url, busy=busy.getsockname()[1]))
            assert "reload failed" in line, "%s: applied? %r" % (name, line)
            where = re.escape(s.config_path) + ":" + expected
            assert re.search(where, line), "%s: expected %r in %r" % (name, where, line)

            m = harness.scrape(admin_port)
            assert metric(m, "sluice_config_reloads_total", result="failed") == i + 1, name
            assert metric(m, "sluice_config_reloads_total", result="ok") == 1, name
            assert metric(m, "sluice_config_last_reload_success") == 0, name
            assert refused(newport), "%s: a listener of the failed file was opened" % name

            # Still the old config: 4 at once are answered, released at 5/s, not 100/s.
            k0 = upstream.count
            paths = ["/api/%d/%d" % (i, j) for j in range(4)]
            rs = harness.run_concurrent(s.port, paths)
            assert [r.status for r, _, _ in rs] == [200] * 4, (name, rs)
            sent += 4
            reqs = upstream.wait_for(k0 + 4)[k0:]
            span = max(r.t for r in reqs) - min(r.t for r in reqs)
            assert span >= 3 * 0.2 * 0.75, "%s: 4 requests in %.3fs: not 5/s" % (name, span)
            harness.assert_rate([r.t for r in reqs], 5, 1, windows=(0.5,))
    finally:
        busy.close()
    assert upstream.count == sent

    # A good file after the bad ones is applied, and the gauges say so.
    newport = harness.free_port()
    good = harness.simple_config(upstream.url, port=s.port, rate="5/s", burst=1)
    good["listen"].append({"address": "127.0.0.1:%d" % newport})
    harness.reload_ok(s, with_admin(good, admin_port))
    m = harness.scrape(admin_port)
    assert metric(m, "sluice_config_reloads_total", result="failed") == len(BAD_RELOADS)
    assert metric(m, "sluice_config_reloads_total", result="ok") == 2
    assert metric(m, "sluice_config_last_reload_success") == 1
    assert harness.http_request(newport, "GET", "/api/after").status == 200


# --------------------------------------------------------------------------- listeners

def test_listeners_added_removed_kept(upstream, sluice_factory):
    """Listeners A (kept) and B (removed), C added. B refuses new connections at once while
    the request in flight on it and those queued from it still get 200; a keep-alive
    connection on A carries on; C accepts."""
    pa, pb, pc = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = harness.simple_config(upstream.url, port=pa, rate="2/s", burst=2, max_wait="20s")
    cfg["listen"].append({"address": "127.0.0.1:%d" % pb})
    s = sluice_factory(cfg)
    harness.wait_until(lambda: harness.port_accepts(pb), 5, what="listener B")

    keep = harness.RawClient(pa).send("/api/a/0", close=False)
    assert keep.response().status == 200
    upstream.wait_for(1)
    # B: one in flight (takes the second token of the burst; the upstream answers after
    # 1.5 s), two queued behind it, due 0.5 s and 1 s later.
    on_b = queue_on(pb, ["/api/b/slow?ms=1500", "/api/b/1", "/api/b/2"])
    try:
        slow = upstream.wait_for(2)[1]
        assert slow.target == "/b/slow?ms=1500"
        new = harness.simple_config(upstream.url, port=pa, rate="2/s", burst=2, max_wait="20s")
        new["listen"].append({"address": "127.0.0.1:%d" % pc})
        harness.reload_ok(s, new)
        assert time.monotonic() - slow.t < 1.4, "test too slow: B's request was not in flight"
        assert upstream.count < 4, "test too slow: nothing was queued on B at the reload"
        assert refused(pb), "removed listener B still accepts"
        assert harness.port_accepts(pc), "new listener C does not accept"
        rs = harness.answers(on_b)
    finally:
        for c in on_b:
            c.close()
    assert [r.status for r in rs] == [200, 200, 200], rs
    assert refused(pb)
    try:
        keep.send("/api/a/1", close=False)
        assert keep.response().status == 200, "keep-alive connection on kept listener A"
    finally:
        keep.close()
    assert harness.http_request(pa, "GET", "/api/a/2").status == 200
    assert harness.http_request(pc, "GET", "/api/c/0").status == 200
    assert_each_once(upstream, ["/a/0", "/b/slow?ms=1500", "/b/1", "/b/2", "/a/1", "/a/2",
                                "/c/0"])
    assert "listener 127.0.0.1:%d removed by reload" % pb in s.stderr()


# --------------------------------------------------------------------------- upstreams

def two_upstreams(url_api, url_other, port, rate_api="2/s", with_api=True):
    cfg = harness.simple_config(url_api, port=port, rate=rate_api, burst=1, max_wait="20s")
    cfg["upstreams"]["other"] = dict(cfg["upstreams"]["api"], url=url_other,
                                     limits=[{"rate": "100/s", "burst": 10}])
    cfg["routes"].append({"path_prefix": "/other/", "strip_prefix": True, "upstream": "other"})
    if not with_api:
        del cfg["upstreams"]["api"]
        cfg["routes"] = [r for r in cfg["routes"] if r["upstream"] != "api"]
    return cfg


def test_removed_upstream_drains_its_queue_then_route_is_gone(make_upstream, sluice_factory):
    """Upstream api (2/s) holds queued requests when a reload removes it with its route:
    the queued ones are still answered 200, released at api's old 2/s; new requests to
    /api/ get 404 at once, even while api is draining; /other/ is unaffected."""
    up_api, up_other = make_upstream(), make_upstream()
    port = harness.free_port()
    s = sluice_factory(two_upstreams(up_api.url, up_other.url, port))
    n = 5
    clients = queue_on(port, ["/api/d/%d" % i for i in range(n)])
    try:
        harness.reload_ok(s, two_upstreams(up_api.url, up_other.url, port, with_api=False))
        assert up_api.count <= n - 2, "test too slow: api's queue had drained before the reload"
        r = harness.http_request(port, "GET", "/api/new")
        harness.assert_sluice_error(r, 404, "no_route")
        assert up_api.count < n, "test too slow: checked 404 after the drain"
        assert harness.http_request(port, "GET", "/other/x").status == 200
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [r.status for r in rs] == [200] * n, rs
    reqs = up_api.wait_for(n)
    assert [r.target for r in reqs] == ["/d/%d" % i for i in range(n)]
    times = [r.t for r in reqs]
    harness.assert_rate(times, 2, 1, windows=(1.0,))
    assert min(gaps(times)) >= 0.4, "drained at the old 2/s: gaps %r" % gaps(times)
    harness.assert_sluice_error(harness.http_request(port, "GET", "/api/later"), 404, "no_route")
    assert up_api.count == n
    harness.wait_until(lambda: "upstream api (removed by reload): drained, freed" in s.stderr(),
                       5, what="the removed upstream to be freed")


def test_kept_upstream_keeps_queue_order_and_token_balance(upstream, sluice_factory):
    """5 queued at 1/s; a reload changes only max_wait and keepalive: all 5 are answered,
    FIFO at the upstream, and still 1 s apart (the token spent before the reload is not
    given back)."""
    n = 5
    port = harness.free_port()
    s = sluice_factory(harness.simple_config(upstream.url, port=port, rate="1/s", burst=1,
                                             max_wait="10s", keepalive=32))
    paths = ["/api/k/%d" % i for i in range(n)]
    clients = queue_on(port, paths)
    try:
        harness.reload_ok(s, harness.simple_config(upstream.url, port=port, rate="1/s", burst=1,
                                           max_wait="30s", keepalive=4))
        assert upstream.count <= 1, "test too slow: a second request left before the reload"
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [r.status for r in rs] == [200] * n, rs
    reqs = upstream.wait_for(n)
    assert [r.target for r in reqs] == ["/k/%d" % i for i in range(n)], "not FIFO"
    g = gaps([r.t for r in reqs])
    assert min(g) >= 0.85, "1/s kept across the reload: gaps %r" % g
    assert_each_once(upstream, ["/k/%d" % i for i in range(n)])


def test_changed_url_sends_new_requests_to_new_server(make_upstream, sluice_factory):
    """The url of upstream api changes to another server: requests after the reload go
    there (idle pooled connections to the old server are not reused)."""
    old, new = make_upstream(), make_upstream()
    port = harness.free_port()
    s = sluice_factory(harness.simple_config(old.url, port=port))
    for i in range(3):
        assert harness.http_request(port, "GET", "/api/old/%d" % i).status == 200
    assert old.count == 3
    harness.reload_ok(s, harness.simple_config(new.url, port=port))
    for i in range(3):
        r = harness.http_request(port, "GET", "/api/new/%d" % i)
        assert r.status == 200, r
        assert r.json()["target"] == "/new/%d" % i
    assert targets(new) == ["/new/%d" % i for i in range(3)]
    assert old.count == 3, "old server got %r" % targets(old)[3:]
    assert new.requests[0].header("host") == new.hostport


# --------------------------------------------------------------------------- under load

def bench_config(url, port, admin_port, extra_port, variant):
    """Two valid configs to alternate. /api/ goes to "api", kept by name, whose rate
    (100/s or 25/s), burst, max_wait and keepalive change; /swap/ goes to "blue" in one
    and "green" in the other (10/s for ~20/s offered), so every reload retires an
    upstream that holds a queue; the second config also opens another listener."""
    cfg = harness.simple_config(url, port=port, rate="100/s" if variant == 0 else "25/s",
                                burst=10 if variant == 0 else 2,
                                max_wait="15s" if variant == 0 else "20s",
                                keepalive=32 if variant == 0 else 8, queue_size=2000)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    name = "blue" if variant == 0 else "green"
    cfg["upstreams"][name] = dict(cfg["upstreams"]["api"], limits=[{"rate": "10/s", "burst": 1}])
    cfg["routes"].append({"path_prefix": "/swap/", "strip_prefix": True, "upstream": name})
    if variant == 1:
        cfg["listen"].append({"address": "127.0.0.1:%d" % extra_port})
    return cfg


async def one_request(port, path, req_id, timeout):
    """One request on its own connection; returns (status, body json or None, error). The
    connection must carry exactly one response."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                                timeout)
        writer.write(harness.build_request("GET", path, "127.0.0.1:%d" % port,
                                           [("X-Req-Id", req_id)]))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        f = io.BytesIO(data)
        resp = harness.read_response(f)
        rest = f.read()
        if rest:
            return resp.status, None, "bytes after the response: %r" % rest[:200]
        return resp.status, resp.json() if resp.status == 200 else resp.body, None
    except Exception as e:
        return None, None, repr(e)
    finally:
        if writer is not None:
            writer.close()


def test_reloads_every_half_second_under_load(upstream, sluice_factory):
    """300 requests over ~5 s (2/3 to a kept upstream, 1/3 to one renamed on every reload)
    while SIGHUP alternates two valid configs every 0.5 s: every request is answered 200
    exactly once, with its own answer, and the upstream sees each id exactly once."""
    n, duration, max_open = 300, 5.0, 150
    port, admin_port, extra_port = harness.free_port(), harness.free_port(), harness.free_port()
    cfgs = [bench_config(upstream.url, port, admin_port, extra_port, v) for v in (0, 1)]
    s = sluice_factory(cfgs[0])

    stop = threading.Event()
    reload_lines, reload_errors = [], []

    def reloader():
        v = 0
        next_t = time.monotonic() + 0.5
        try:
            while not stop.is_set():
                delay = next_t - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                next_t += 0.5
                v ^= 1
                reload_lines.append(harness.reload(s, cfgs[v], timeout=5.0))
        except Exception as e:  # reported by the test thread
            reload_errors.append(e)

    def path(i):
        # Every 5th answer takes 100 ms, so requests are in flight at most reloads.
        return ("/swap" if i % 3 == 2 else "/api") + ("/bench/%d" % i) + \
            ("/slow?ms=100" if i % 5 == 0 else "")

    async def run():
        sem = asyncio.Semaphore(max_open)
        t0 = time.monotonic()

        async def go(i):
            await asyncio.sleep(max(0.0, t0 + i * duration / n - time.monotonic()))
            async with sem:
                return await one_request(port, path(i), "r%d" % i, 20.0)
        return await asyncio.gather(*(go(i) for i in range(n)))

    th = threading.Thread(target=reloader, name="reloader", daemon=True)
    th.start()
    try:
        results = asyncio.run(run())
    finally:
        stop.set()
        th.join(10)
    assert not reload_errors, reload_errors
    assert len(reload_lines) >= 6, "only %d reloads during the run" % len(reload_lines)
    assert all("reloaded " in line for line in reload_lines), \
        [line for line in reload_lines if "reloaded " not in line]

    bad = [(i, st, err) for i, (st, _, err) in enumerate(results) if st != 200]
    assert not bad, "%d of %d not 200, first: %r" % (len(bad), n, bad[:5])
    wrong = [i for i, (_, body, _) in enumerate(results)
             if body["target"] != path(i).replace("/api", "", 1).replace("/swap", "", 1)]
    assert not wrong, "answers given to the wrong client: %r" % wrong[:5]
    drained = [int(x) for x in re.findall(r"upstream (?:blue|green): removed by reload; "
                                         r"draining (\d+) queued", s.stderr())]
    assert len(drained) == len(reload_lines), drained
    assert max(drained) > 0, "no reload found a queue to retire: the run was too gentle"

    upstream.wait_for(n, timeout=10)
    ids = harness.Counter(r.header("x-req-id") for r in upstream.requests)
    assert sorted(ids) == sorted("r%d" % i for i in range(n)), "ids missing or unexpected"
    assert set(ids.values()) == {1}, "sent twice: %r" % {k: v for k, v in ids.items() if v > 1}
    assert upstream.count == n

    m = harness.scrape(admin_port)
    ok = sum(v for (name, labels), v in m.items()
             if name == "sluice_requests_total" and dict(labels).get("status") == "200")
    assert ok == n, "sluice_requests_total{status=200} is %r, sent %d" % (ok, n)
    assert metric(m, "sluice_config_reloads_total", result="ok") == 1 + len(reload_lines)
    assert metric(m, "sluice_config_reloads_total", result="failed") == 0

    assert s.stop() == 0, s.stderr()[-3000:]
    s.check_sanitizers()
    assert "reload failed" not in s.stderr()


# --------------------------------------------------------------------------- drain

def test_reload_while_draining_is_ignored_and_drain_exits_0(upstream, sluice_factory):
    """After two reloads (2/s -> 5/s -> 5/s with another max_wait), 6 queued, SIGTERM, then
    SIGHUP with a 100/s file: the reload is ignored and logged, the queue still drains at
    5/s (all 200), and the process exits 0."""
    n = 6
    port = harness.free_port()
    s = sluice_factory(harness.simple_config(upstream.url, port=port, rate="2/s", burst=1,
                                             drain_timeout="20s"))
    harness.reload_ok(s, harness.simple_config(upstream.url, port=port, rate="5/s", burst=1,
                                       drain_timeout="20s"))
    harness.reload_ok(s, harness.simple_config(upstream.url, port=port, rate="5/s", burst=1,
                                       max_wait="20s", drain_timeout="20s"))
    clients = queue_on(port, ["/api/t/%d" % i for i in range(n)])
    try:
        s.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: "draining" in s.stderr(), 5, what="drain to start")
        line = harness.reload(s, harness.simple_config(upstream.url, port=port, rate="100/s",
                                               burst=50, drain_timeout="20s"))
        assert "reload ignored" in line and "draining" in line, line
        assert upstream.count < n, "test too slow: drained before the reload was ignored"
        rs = harness.answers(clients)
    finally:
        for c in clients:
            c.close()
    assert [r.status for r in rs] == [200] * n, rs
    rc = s.wait(15)
    assert rc == 0, "exit code %r after drain\n%s" % (rc, s.stderr()[-3000:])
    reqs = upstream.wait_for(n)
    assert [r.target for r in reqs] == ["/t/%d" % i for i in range(n)]
    times = [r.t for r in reqs]
    harness.assert_rate(times, 5, 1, windows=(0.5, 1.0))
    assert max(times) - min(times) >= (n - 1) * 0.2 * 0.8, "not 5/s: gaps %r" % gaps(times)
    s.check_sanitizers()
