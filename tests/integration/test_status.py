"""/status (the dashboard's data) agrees with /metrics under load (issue 12).

One upstream limited to 10/s with a queue of 100 gets 120 requests at once: 20 are
refused (queue_full) and 100 drain over ten seconds. While they drain, /status is read
between two scrapes of /metrics, so every number it shows must lie between the two
readings (counters grow, the queue only shrinks); the release rate must match the rate
the metrics' counters grow at. After the drain, the cumulative numbers must be equal, the
queue-wait percentiles must be the ones /metrics' histogram gives, and the per-second
history (?history=300) must add up to the totals.
"""

import threading
import time

import harness
from test_ops import admin, scrape, series, start_ops, value

RATE = 10
QUEUE = 100
OFFERED = 120


def status(ap, query=""):
    r = admin(ap, "/status" + query)
    assert r.status == 200, r
    return r.json()


def up(st, name="api"):
    for u in st["upstreams"]:
        if u["name"] == name:
            return u
    raise AssertionError("no upstream %s in /status" % name)


def total(samples, name, **labels):
    return sum(series(samples, name, **labels).values())


def answered_200(m):
    return total(m, "sluice_requests_total", upstream="api", status="200")


def quantile_ms(m, q):
    """The q-quantile of sluice_queue_wait_seconds{upstream=api} in ms, interpolated
    linearly within its bucket (the way /status computes it)."""
    cum = sorted(((float(dict(k)["le"]), v) for k, v in
                  series(m, "sluice_queue_wait_seconds_bucket", upstream="api").items()),
                 key=lambda x: x[0])
    count = cum[-1][1]
    want = q * count
    lower, prev = 0.0, 0.0
    for le, c in cum:
        n = c - prev
        upper = lower if le == float("inf") else le * 1000
        if n > 0 and prev + n >= want:
            return lower + (upper - lower) * ((want - prev) / n)
        prev, lower = c, upper
    return lower


def test_status_agrees_with_metrics_under_load(upstream, sluice_factory):
    s, ap = start_ops(sluice_factory, upstream.url, rate="%d/s" % RATE, burst=1,
                      queue_size=QUEUE, max_in_flight=4, max_wait="60s",
                      limits=[{"rate": "%d/s" % RATE, "burst": 1}, {"rate": "5000/h", "burst": 5000}])
    results = []
    load = threading.Thread(target=lambda: results.extend(harness.run_concurrent(
        s.port, ["/api/load?i=%d" % i for i in range(OFFERED)], timeout=40)))
    load.start()
    try:
        harness.wait_until(lambda: up(status(ap))["refusals"]["queue_full"] > 0
                           and up(status(ap))["queue_depth"] > QUEUE // 2, 10,
                           what="the queue to fill and refusals to start")
        # All 120 arrived at once: once the queue stopped growing, it only shrinks.
        harness.wait_until(lambda: up(status(ap))["refusals"]["queue_full"]
                           + up(status(ap))["counters"]["admitted"] == OFFERED, 10,
                           what="every request admitted or refused")
        # The queue's 100 and the one or two released before it filled.
        admitted = up(status(ap))["counters"]["admitted"]
        assert QUEUE <= admitted <= QUEUE + 3, admitted

        # Sandwiches while it drains: m1 <= status <= m2 for what grows, the reverse for
        # the queue.
        sandwiches = 0
        first = None
        while True:
            m1 = scrape(ap)
            st = status(ap)
            m2 = scrape(ap)
            u = up(st)
            if first is None:
                first = (time.monotonic(), m1)
            d1 = value(m1, "sluice_queue_depth", upstream="api")
            d2 = value(m2, "sluice_queue_depth", upstream="api")
            assert d2 <= u["queue_depth"] <= d1, (d1, u["queue_depth"], d2)
            assert u["queue_capacity"] == value(m1, "sluice_queue_capacity", upstream="api") \
                == QUEUE
            assert u["max_in_flight"] == value(m1, "sluice_max_in_flight", upstream="api") == 4
            assert 0 <= u["in_flight"] <= 4
            w1 = value(m1, "sluice_queue_wait_seconds_count", upstream="api")
            w2 = value(m2, "sluice_queue_wait_seconds_count", upstream="api")
            assert w1 <= answered_200(m2)
            assert answered_200(m1) <= u["counters"]["responses"] <= answered_200(m2) + 4, \
                (answered_200(m1), u["counters"]["responses"], answered_200(m2))
            assert w1 <= u["counters"]["released"] <= w2 + 4
            qf = value(m1, "sluice_rejections_total", upstream="api", reason="queue_full")
            assert u["refusals"]["queue_full"] == qf == \
                value(m2, "sluice_rejections_total", upstream="api", reason="queue_full")
            # Limits: the same names as the metrics' `limit` label, and the tokens
            # between the two readings' (both below one while the queue waits).
            labels = [lim["label"] for lim in u["limits"]]
            assert labels == ["10/s", "5000/h"], labels
            for lim in u["limits"]:
                t1 = value(m1, "sluice_tokens_available", upstream="api", limit=lim["label"])
                t2 = value(m2, "sluice_tokens_available", upstream="api", limit=lim["label"])
                if lim["label"] == "10/s":
                    assert t1 < 1 and t2 < 1 and lim["tokens"] < 1, (t1, lim, t2)
            sandwiches += 1
            if u["queue_depth"] < 20:
                break
            time.sleep(0.5)
        assert sandwiches >= 5, "the queue drained before five readings"

        # The release rate over the dashboard's last ten seconds vs the metrics' counter
        # over the time since the first reading (both inside the drain).
        t0, m0 = first
        m = scrape(ap)
        st = status(ap)
        secs = time.monotonic() - t0
        metric_rate = (value(m, "sluice_queue_wait_seconds_count", upstream="api")
                       - value(m0, "sluice_queue_wait_seconds_count", upstream="api")) / secs
        u = up(st)
        assert RATE * 0.8 <= metric_rate <= RATE * 1.1, metric_rate
        assert abs(u["release_rate"] - metric_rate) <= 2, (u["release_rate"], metric_rate)
        assert u["answers_rate"]["2xx"] > RATE * 0.5, u["answers_rate"]
        assert u["refusals_rate"]["queue_full"] > 0 or secs > 9, u["refusals_rate"]
    finally:
        load.join(60)
    assert not load.is_alive()
    statuses = sorted(r.status for r, e, _ in results if r is not None)
    assert len(statuses) == OFFERED
    assert statuses.count(200) == admitted and statuses.count(503) == OFFERED - admitted, \
        statuses

    # After the drain and one more history tick: equal.
    time.sleep(1.5)
    m = scrape(ap)
    st = status(ap, "?history=300")
    u = up(st)
    assert u["queue_depth"] == 0 and value(m, "sluice_queue_depth", upstream="api") == 0
    assert u["counters"]["responses"] == answered_200(m) == admitted
    assert u["counters"]["released"] == \
        value(m, "sluice_queue_wait_seconds_count", upstream="api") == admitted
    assert u["refusals"]["queue_full"] == OFFERED - admitted == \
        value(m, "sluice_rejections_total", upstream="api", reason="queue_full")
    assert u["queue_wait_ms"]["count"] == admitted
    for q, key in ((0.5, "p50"), (0.99, "p99")):
        want = quantile_ms(m, q)
        got = u["queue_wait_ms"][key]
        assert abs(got - want) <= 0.01 + want * 0.001, (key, got, want)
    # The history: per-second values adding up to the totals, the queue it held.
    h = u["history"]
    assert h["interval_s"] == 1
    n = len(h["queue_depth"])
    assert n == len(h["released"]) == len(h["refused"]) and 10 <= n <= 300, h
    assert sum(h["released"]) == admitted, h["released"]
    assert sum(h["refused"]) == OFFERED - admitted, h["refused"]
    assert max(h["queue_depth"]) >= QUEUE * 0.8, h["queue_depth"]
    assert h["queue_depth"][-1] == 0
    assert max(h["released"]) <= RATE + 2, h["released"]
    # A shorter history is the newest part of the same series.
    short = up(status(ap, "?history=5"))["history"]
    assert len(short["released"]) == 5
