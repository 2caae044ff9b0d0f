"""The daemon's life and its connections: SIGTERM drain, clients that leave while queued,
keep-alive toward clients and pooled keep-alive toward the upstream."""

import signal
import socket
import time

import harness


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_sigterm_idle_exits_0(upstream, start_sluice):
    s = start_sluice(upstream.url)
    assert harness.http_request(s.port, "GET", "/api/x").status == 200
    t0 = time.monotonic()
    rc = s.stop(timeout=10)
    assert rc == 0, s.stderr()[-2000:]
    assert time.monotonic() - t0 < 3.0, "an idle daemon should exit at once"
    assert refused(s.port)


def test_drain_releases_queue_at_rate(upstream, start_sluice):
    """10 queued at 5/s, then SIGTERM: the listener closes, the queued requests are still
    released at 5/s and answered 200, then the process exits 0."""
    n = 10
    s = start_sluice(upstream.url, rate="5/s", burst=1, max_wait="20s", drain_timeout="20s")
    clients = [harness.RawClient(s.port).send("/api/drain?i=%d" % i) for i in range(n)]
    harness.wait_all_read(clients)
    try:
        t_term = time.monotonic()
        s.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: refused(s.port), 3.0, what="listener to close after SIGTERM")
        t_refused = time.monotonic() - t_term
        got = upstream.count
        assert got < n, "test too slow: everything was released before the listener closed"
        for c in clients:
            r = c.response()
            assert r.status == 200, r
    finally:
        for c in clients:
            c.close()
    rc = s.wait(10)
    assert rc == 0, "exit code %r after drain" % rc
    reqs = upstream.wait_for(n)
    assert sorted(r.target for r in reqs) == sorted("/drain?i=%d" % i for i in range(n))
    times = [r.t for r in reqs]
    harness.assert_rate(times, 5, 1, windows=(0.5, 1.0))
    assert max(times) - min(times) >= 1.6, "9 intervals at 5/s span ~1.8 s"
    assert t_refused < 1.5


def test_drain_timeout_answers_rest_with_shutdown(upstream, start_sluice):
    """drain_timeout 1s with 12 queued at 2/s: a few are released, the rest get
    503 shutdown at ~1 s after SIGTERM, and the process exits 0."""
    n = 12
    s = start_sluice(upstream.url, rate="2/s", burst=1, max_wait="30s", drain_timeout="1s")
    # one at a time, so the queue order is known (FIFO is asserted below)
    clients = [harness.RawClient(s.port).send("/api/dt?i=%d" % i).wait_read()
               for i in range(n)]
    ok, shut = [], []
    try:
        t_term = time.monotonic()
        s.send_signal(signal.SIGTERM)
        for i, c in enumerate(clients):
            r = c.response()
            dt = time.monotonic() - t_term
            if r.status == 200:
                ok.append(i)
            else:
                harness.assert_sluice_error(r, 503, "shutdown")
                assert 0.8 <= dt <= 2.5, "shutdown answer %.3f s after SIGTERM, want ~1 s" % dt
                shut.append(i)
    finally:
        for c in clients:
            c.close()
    rc = s.wait(5)
    assert rc == 0, "exit code %r (None: still running 5 s after the drain timeout)" % rc
    assert time.monotonic() - t_term < 4.0
    assert 1 <= len(ok) <= 5, "released during the 1 s drain: %r" % ok
    assert len(shut) >= n - 5
    assert ok == list(range(len(ok))), "FIFO: the released ones are the first: %r" % ok
    assert sorted(r.target for r in upstream.requests) == sorted("/dt?i=%d" % i for i in ok)


def test_sigterm_waits_for_in_flight_request(upstream, start_sluice):
    """A request at the upstream when SIGTERM arrives is still answered."""
    s = start_sluice(upstream.url, drain_timeout="10s")
    with harness.RawClient(s.port) as c:
        c.send("/api/slow?ms=800")
        upstream.wait_for(1)
        s.send_signal(signal.SIGTERM)
        r = c.response()
        assert r.status == 200, r
    assert s.wait(5) == 0


def test_disconnect_while_queued(upstream, start_sluice):
    """rate 0.5/s burst 1: A goes at once; B, C, D queue; B and C hang up. They never reach
    the upstream and took no token: D arrives ~2 s after A, not ~6 s. (A slow rate leaves
    the test time to queue and hang up before the next token, even on a loaded machine.)"""
    s = start_sluice(upstream.url, rate="0.5/s", burst=1, max_wait="20s")
    a = harness.RawClient(s.port).send("/api/a")
    upstream.wait_for(1)
    b = harness.RawClient(s.port).send("/api/b")
    c = harness.RawClient(s.port).send("/api/c")
    harness.wait_all_read([b, c])
    d = harness.RawClient(s.port).send("/api/d").wait_read()  # queued behind B and C
    b.close()
    c.close()
    t_closed = time.monotonic()
    try:
        assert a.response().status == 200
        r = d.response()
        assert r.status == 200, r
    finally:
        a.close()
        d.close()
    reqs = upstream.requests
    assert t_closed - reqs[0].t < 1.6, "test too slow: B was due before it hung up"
    assert [q.target for q in reqs] == ["/a", "/d"], reqs
    gap = reqs[1].t - reqs[0].t
    assert 1.85 <= gap <= 2.8, "D arrived %.3f s after A; want ~2 (not ~6)" % gap


def test_many_disconnects_while_queued(upstream, start_sluice):
    """10 clients queue behind one release at 0.5/s and all hang up: none reaches the
    upstream, and the next request goes when the next token is due (~2 s after the
    first), not after the ten that left."""
    s = start_sluice(upstream.url, rate="0.5/s", burst=1, max_wait="30s")
    first = harness.RawClient(s.port).send("/api/first")
    upstream.wait_for(1)
    clients = [harness.RawClient(s.port).send("/api/gone?i=%d" % i) for i in range(10)]
    harness.wait_all_read(clients)
    for cl in clients:
        cl.close()
    t_closed = time.monotonic()
    try:
        assert first.response().status == 200
    finally:
        first.close()
    r = harness.http_request(s.port, "GET", "/api/next")
    assert r.status == 200, r
    reqs = upstream.requests
    assert t_closed - reqs[0].t < 1.6, "test too slow: a client was due before it hung up"
    assert [q.target for q in reqs] == ["/first", "/next"]
    gap = reqs[1].t - reqs[0].t
    assert 1.85 <= gap <= 2.8, "/next arrived %.3f s after /first, want ~2" % gap
    assert s.alive()


def test_upstream_keepalive_pool(upstream, start_sluice):
    """Sequential requests through sluice reuse a pooled upstream connection."""
    s = start_sluice(upstream.url, rate="200/s", burst=20)
    n = 20
    for i in range(n):
        r = harness.http_request(s.port, "GET", "/api/ka?i=%d" % i)
        assert r.status == 200, r
    ids = [q.conn_id for q in upstream.wait_for(n)]
    assert len(set(ids)) <= 2, "%d requests used %d upstream connections" % (n, len(set(ids)))
    assert upstream.connections <= 2


def test_client_keepalive(upstream, start_sluice):
    """Several requests on one client connection, each answered in turn."""
    s = start_sluice(upstream.url, rate="200/s", burst=20)
    with harness.RawClient(s.port) as c:
        for i in range(5):
            c.send("/api/ck?i=%d" % i, close=False)
            r = c.response()
            assert r.status == 200, r
            assert r.json()["target"] == "/ck?i=%d" % i
    assert upstream.count == 5


def test_pooled_connection_closed_by_upstream(upstream, start_sluice):
    """The upstream closes its idle keep-alive connection (as origins do on an idle
    timeout); the next request still succeeds on a new connection."""
    s = start_sluice(upstream.url)
    assert harness.http_request(s.port, "GET", "/api/one").status == 200
    upstream.wait_for(1)
    upstream.drop_connections()
    r = harness.http_request(s.port, "GET", "/api/two")
    assert r.status == 200, r
    reqs = upstream.wait_for(2)
    assert reqs[0].conn_id != reqs[1].conn_id


def test_concurrent_requests_use_several_connections_then_pool(upstream, start_sluice):
    """Ten slow requests at once run on parallel upstream connections; afterwards requests
    reuse the pooled ones (no new connection is opened)."""
    s = start_sluice(upstream.url, rate="1000/s", burst=100, keepalive=32)
    t0 = time.monotonic()
    results = harness.run_concurrent(s.port, ["/api/slow?ms=300&i=%d" % i for i in range(10)])
    took = time.monotonic() - t0
    assert all(r is not None and r.status == 200 for r, _, _ in results), results
    assert took < 1.2, "ten 300 ms requests should run in parallel, took %.3f s" % took
    opened = upstream.connections
    assert opened >= 10
    for i in range(5):
        assert harness.http_request(s.port, "GET", "/api/again?i=%d" % i).status == 200
    assert upstream.connections == opened, "pooled connections should be reused"


def test_client_hangs_up_mid_response(upstream, start_sluice):
    """A client that closes while a large response is being relayed: sluice drops that
    exchange cleanly (no sanitizer report at exit) and keeps serving."""
    s = start_sluice(upstream.url)
    for _ in range(8):
        with harness.RawClient(s.port) as c:
            c.send("/api/stream?bytes=%d" % (16 * 1024 * 1024))
            got = 0
            while got < 200000:
                data = c.sock.recv(65536)
                assert data, "closed early"
                got += len(data)
    r = harness.http_request(s.port, "GET", "/api/after")
    assert r.status == 200, r
    assert s.alive()


def test_client_hangs_up_while_in_flight(upstream, start_sluice):
    """A client that closes while its request is at a slow upstream: sluice stays up and
    serves the next request (the sanitizer check at exit covers the cleanup)."""
    s = start_sluice(upstream.url)
    with harness.RawClient(s.port) as c:
        c.send("/api/slow?ms=500")
        upstream.wait_for(1)
    r = harness.http_request(s.port, "GET", "/api/after")
    assert r.status == 200, r
    assert s.alive()
