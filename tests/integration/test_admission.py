"""Admission: queue full, predicted deadline, deadline reached in the queue.

Every refusal is a 503 with Retry-After (integer seconds >= 1) and a Sluice-Reason, and
none of the refused requests reaches the upstream (checked against the recorder by a
unique query per request)."""

import time

import harness


def targets(upstream):
    return sorted(r.target for r in upstream.requests)


def test_queue_full(upstream, start_sluice):
    """queue.size 2 at 0.5/s: one released, two queued, the next three refused at once."""
    s = start_sluice(upstream.url, rate="0.5/s", burst=1, queue_size=2, max_wait="10s")
    first = harness.RawClient(s.port).send("/api/q?i=0")
    upstream.wait_for(1)
    queued = [harness.RawClient(s.port).send("/api/q?i=%d" % i) for i in (1, 2)]
    harness.wait_all_read(queued)
    answers = []
    try:
        for i in (3, 4, 5):
            with harness.RawClient(s.port) as c:
                c.send("/api/q?i=%d" % i)
                r = c.response()
                answers.append((r, time.monotonic() - c.t_sent))
        elapsed = time.monotonic() - upstream.requests[0].t
        assert elapsed < 1.6, "test too slow: the queue moved before the refusals were done"
        for r, took in answers:
            harness.assert_sluice_error(r, 503, "queue_full")
            harness.retry_after(r)
            assert took < 0.4, "queue_full should be answered at once, took %.3f" % took
        assert first.response().status == 200
    finally:
        for c in [first] + queued:
            c.close()
    assert targets(upstream) == ["/q?i=0"]


def test_queue_full_retry_after_is_honest(upstream, start_sluice):
    """At 0.2/s the head of a full queue waits ~5 s: Retry-After is at least a few seconds,
    not the bare minimum of 1."""
    s = start_sluice(upstream.url, rate="0.2/s", burst=1, queue_size=1, max_wait="20s")
    first = harness.RawClient(s.port).send("/api/h?i=0")
    upstream.wait_for(1)
    queued = harness.RawClient(s.port).send("/api/h?i=1").wait_read()
    try:
        r = harness.http_request(s.port, "GET", "/api/h?i=2")
        harness.assert_sluice_error(r, 503, "queue_full")
        ra = harness.retry_after(r)
        assert 3 <= ra <= 11, "head released in ~5 s, Retry-After %d" % ra
        assert first.response().status == 200
    finally:
        first.close()
        queued.close()
    assert targets(upstream) == ["/h?i=0"]


def test_predicted_deadline_refused_at_once(upstream, start_sluice):
    """rate 0.5/s, max_wait 2.5 s: after one release, position 1 waits ~2 s (admitted),
    positions 2.. would wait >= 4 s: 503 deadline at once, not after max_wait."""
    s = start_sluice(upstream.url, rate="0.5/s", burst=1, max_wait="2500ms", queue_size=100)
    first = harness.RawClient(s.port).send("/api/d?i=0")
    upstream.wait_for(1)
    admitted = harness.RawClient(s.port).send("/api/d?i=1").wait_read()
    answers = []
    try:
        for i in (2, 3, 4, 5):
            with harness.RawClient(s.port) as c:
                c.send("/api/d?i=%d" % i)
                r = c.response()
                answers.append((r, time.monotonic() - c.t_sent))
        elapsed = time.monotonic() - upstream.requests[0].t
        assert elapsed < 1.4, "test too slow: position 2 no longer predicted beyond max_wait"
        for r, took in answers:
            harness.assert_sluice_error(r, 503, "deadline")
            harness.retry_after(r)
            assert took < 0.5, "predicted deadline must be refused at once, took %.3f" % took
        assert first.response().status == 200
        r = admitted.response()
        assert r.status == 200, r
        assert 1400 <= harness.queue_wait_ms(r) <= 2600
    finally:
        first.close()
        admitted.close()
    assert targets(upstream) == ["/d?i=0", "/d?i=1"]


def test_deadline_reached_in_queue(upstream, start_sluice):
    """max_in_flight 1 held by a 2.5 s upstream request: the next one waits in the queue
    (tokens are plenty) until max_wait 1 s and gets 503 deadline at ~1 s."""
    s = start_sluice(upstream.url, rate="100/s", burst=10, max_in_flight=1, max_wait="1s",
                     response="10s")
    slow = harness.RawClient(s.port).send("/api/slow?ms=2500&i=0")
    upstream.wait_for(1)
    c = harness.RawClient(s.port)
    try:
        c.send("/api/x?i=1")
        r = c.response()
        took = time.monotonic() - c.t_sent
        harness.assert_sluice_error(r, 503, "deadline")
        harness.retry_after(r)
        assert 0.85 <= took <= 1.8, "deadline in queue should fire at ~1 s, took %.3f" % took
        assert slow.response().status == 200
    finally:
        c.close()
        slow.close()
    assert targets(upstream) == ["/slow?ms=2500&i=0"]


def test_max_in_flight_limits_concurrency(upstream, start_sluice):
    """max_in_flight 2 with 300 ms upstream answers: never more than two at the upstream,
    so six requests take ~0.9 s even though tokens are plenty."""
    s = start_sluice(upstream.url, rate="100/s", burst=20, max_in_flight=2, max_wait="10s")
    t0 = time.monotonic()
    results = harness.run_concurrent(s.port, ["/api/slow?ms=300&i=%d" % i for i in range(6)])
    took = time.monotonic() - t0
    assert all(r is not None and r.status == 200 for r, _, _ in results), results
    reqs = upstream.wait_for(6)
    starts = sorted(r.t for r in reqs)
    # at most two requests start inside any 300 ms window (minus jitter)
    assert harness.max_in_window(starts, 0.27) <= 2, starts
    assert took >= 0.85, "6 requests, 2 at a time, 300 ms each: took %.3f" % took


def test_refusals_when_queue_has_room_later(upstream, start_sluice):
    """After a queue_full refusal the queue recovers: once it drains, requests are
    admitted again (the refusal left no trace)."""
    s = start_sluice(upstream.url, rate="1/s", burst=1, queue_size=1, max_wait="10s")
    first = harness.RawClient(s.port).send("/api/r?i=0")
    upstream.wait_for(1)
    queued = harness.RawClient(s.port).send("/api/r?i=1").wait_read()
    try:
        r = harness.http_request(s.port, "GET", "/api/r?i=2")
        harness.assert_sluice_error(r, 503, "queue_full")
        assert first.response().status == 200
        assert queued.response().status == 200
    finally:
        first.close()
        queued.close()
    r = harness.http_request(s.port, "GET", "/api/r?i=3")
    assert r.status == 200, r
    assert targets(upstream) == ["/r?i=0", "/r?i=1", "/r?i=3"]
